#!/usr/bin/env bash
# Session 5, device call 6: the swept down-GEMV shape compiled (MoE decode tests) and gpt-oss-20b.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
F="warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
timeout 60 python3 -m pytest -q -x -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py -k "gemv or decode or gpt_oss" 2>&1 | tail -1
timeout 60 python3 bench/tune.py moe-crossover 2>&1 | grep -v -i warn | grep " 1 \| 8 " | head -8
timeout 80 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --skip-baseline --json $OUT/gpt_oss.json 2>&1 | grep -v -i "$F" | grep -v "^ \{1,\}\"\|^[{}]" | tail -2
