#!/usr/bin/env bash
# Session 7, device call 2: the two fused add + RMSNorms (router, q/k/v GEMV) and PDL, compiled; the model A/B.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session7
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
P="python3 -m pytest -q -rs -p no:logging -W ignore -p no:cacheprovider"
timeout 70 $P tests/test_moe.py -k "fused_add_norm or route or programmatic" tests/test_triton_dense_gemv.py 2>&1 | tail -4
timeout 60 $P tests/test_gpt_oss.py -k gpu 2>&1 | tail -2
timeout 150 python3 $D/pdl_ab.py --model 2>&1 | tee $OUT/model_ab.log | grep -E "gpt-oss|Error|error" | head
