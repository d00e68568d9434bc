#!/usr/bin/env bash
# Session 4, device calls 3 and 4: the decode attention's launch-shape sweep and its compiled tests (call 3: FMA loop; call 4: tensor-core dots).
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
timeout 100 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_triton_decode_attention.py 2>&1 | tail -2
timeout 300 python3 bench/tune.py decode-attention --json $OUT/tune_decode_attention.json 2>&1 | grep -v -i "warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
