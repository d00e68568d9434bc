#!/usr/bin/env bash
# Session 3, device call 3: the MoE down GEMV back on the byte decode (tests, timing), then the models.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
timeout 100 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py -k "gemv or decode or gpt_oss" 2>&1 | tail -2
timeout 80 python3 bench/session3_quick.py --moe-only 2>&1 | grep -v -i warn
timeout 380 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --preset gpt-oss-120b --json $OUT/gpt_oss.json 2>&1 | grep -v -i "warn\|online softmax\|split the reduction\|important use case\|softmax\.$" | tail -6
