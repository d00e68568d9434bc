#!/usr/bin/env bash
# Session 5, device call 5: the pair-major MoE down GEMV (word decode, slot-order combine by the last program)
# compiled, its launch-shape sweep, and gpt-oss-20b.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
F="warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
timeout 120 python3 -m pytest -q -x -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py -k "gemv or decode or gpt_oss or graph" 2>&1 | tail -2
timeout 150 python3 bench/tune.py moe-down --json $OUT/tune_moe_down.json 2>&1 | grep -v -i warn | tail -40
timeout 90 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --skip-baseline --json $OUT/gpt_oss.json 2>&1 | grep -v -i "$F" | grep -v "^ \{1,\}\"\|^[{}]" | tail -3
