#!/usr/bin/env bash
# Session 4, device call 6: the models again with the prefill timed as a median of 5 runs after a warm-up
# (bench/gpt_oss_gpu.py timed a single prefill call before: 12 363 and 10 004 tok/s in calls 2 and 5 of this session).
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/out}; mkdir -p $OUT
F="warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
timeout 280 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --preset gpt-oss-120b --skip-baseline --json $OUT/gpt_oss.json 2>&1 | grep -v -i "$F" | grep -v "^ \{1,\}\"\|^[{}]" | tail -6
