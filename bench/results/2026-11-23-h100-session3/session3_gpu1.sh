#!/usr/bin/env bash
# Session 3, device call 1: the dense projection GEMV compiled (tests), its launch sweep, the 20b decode with it.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm --format=csv
echo "== tests"
timeout 170 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_triton_dense_gemv.py tests/test_gpt_oss.py -k "not save_pretrained and not transformers" 2>&1 | tail -4
timeout 100 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_triton_matmul.py -k "gemv or split" 2>&1 | tail -3
echo "== sweep"
timeout 170 python3 bench/tune.py dense-gemv --json $OUT/tune_dense.json 2>&1 | grep -v Warning | tail -52
echo "== model"
timeout 200 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --skip-baseline --profile --json $OUT/gpt20.json 2>&1 | grep -v Warning | tail -34
