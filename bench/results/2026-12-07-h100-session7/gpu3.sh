#!/usr/bin/env bash
# Session 7, device call 3 (what was left of the budget): the fused add + RMSNorms compiled, the model A/B.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session7
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 40 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py tests/test_triton_dense_gemv.py -k "add_norm or programmatic" 2>&1 | tail -2
timeout 120 python3 $D/pdl_ab.py --model 2>&1 | tee $OUT/model_ab.log | grep -E "gpt-oss|Error|error" | head
