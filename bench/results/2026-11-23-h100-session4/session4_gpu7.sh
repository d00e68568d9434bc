#!/usr/bin/env bash
# Session 4, device call 7 (last, ~5 min of budget): the prefill attention and CUDA-graph generate compiled; 20b again.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
F="warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
timeout 60 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_triton_prefill_attention.py 2>&1 | tail -2
timeout 90 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_gpt_oss.py -k gpu 2>&1 | tail -2
timeout 60 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --skip-baseline --json $OUT/gpt_oss.json 2>&1 | grep -v -i "$F" | grep -v "^ \{1,\}\"\|^[{}]" | tail -3
timeout 35 compute-sanitizer --tool memcheck --error-exitcode 9 python3 bench/sanitize.py --only-attention 2>&1 | grep -v -i warn | tail -3; echo "sanitize rc ${PIPESTATUS[0]}"
timeout 35 python3 bench/tune.py prefill-attention --json $OUT/tune_prefill_attention.json 2>&1 | grep -v -i "$F"
