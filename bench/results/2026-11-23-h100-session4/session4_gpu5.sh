#!/usr/bin/env bash
# Session 4, device call 5: the models with the fused decode attention (tuned), its GPU model tests; the kernel report.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
F="warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
timeout 60 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_triton_decode_attention.py 2>&1 | tail -1
timeout 120 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_gpt_oss.py -k "gpu or triton_decode_attention" 2>&1 | tail -1
timeout 230 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --preset gpt-oss-120b --skip-baseline --profile --json $OUT/gpt_oss.json 2>&1 | grep -v -i "$F" | grep -v "^ \{1,\}\"\|^[{}]" | grep -v "^ \{6,\}[0-9.]* us  *[12]x" | tail -40
timeout 170 python3 -m mxfp4.bench --quick --ops matmul --shapes 5760x2880,8192x8192,28672x8192 --m 1,16,4096 --json $OUT/bench.json --png $OUT/roofline.png --markdown $OUT/bench.md 2>&1 | grep -v -i "$F" | tail -30
