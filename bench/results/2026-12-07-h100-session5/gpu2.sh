#!/usr/bin/env bash
# Session 5, device call 2: table vs float32 decode in the tiles (launch cache cleared), MoE GEMV / tensor-core
# crossover, MoE prefill, gpt-oss-20b with the table decode in the grouped MoE, sanitizer on the MoE + matmul.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
P=bench/results/2026-12-07-h100-session5/probe_table_decode.py
F="warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 python3 $P --quick 2>&1 | grep -v -i warn
timeout 80 python3 $P --moe 2>&1 | grep -v -i warn
timeout 70 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider bench/bench_moe.py --benchmark-only -k "prefill or one_expert" --benchmark-columns=median 2>&1 | grep -i "median\|prefill\|one_expert\|passed\|TFLOP" | head -20
timeout 90 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --skip-baseline --json $OUT/gpt_oss.json 2>&1 | grep -v -i "$F" | grep -v "^ \{1,\}\"\|^[{}]" | tail -8
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 bench/sanitize.py 2>&1 | grep -v -i warn | tail -3; echo "sanitize rc ${PIPESTATUS[0]}"
