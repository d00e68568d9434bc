#!/usr/bin/env bash
# Session 5, device call 4: the MoE suite compiled with the new GEMV / tiles dispatch, gpt_oss -k gpu, 20b timings.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
F="warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
timeout 170 python3 -m pytest -q -x -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py 2>&1 | tail -2
timeout 100 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_gpt_oss.py -k gpu 2>&1 | tail -2
timeout 100 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --skip-baseline --json $OUT/gpt_oss.json 2>&1 | grep -v -i "$F" | grep -v "^ \{1,\}\"\|^[{}]" | tail -3
