#!/usr/bin/env bash
# Session 7, device call 1: what session 6 left unrun (the GEMV refactor compiled), the PDL change compiled
# (chains with / without PDL bit-identical), then PDL on / off timings and the BLOCK_N = 4 down GEMV sweep.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session7
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
P="python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider"
timeout 130 $P tests/test_moe.py -k "gemv or decode or programmatic or graph" tests/test_triton_dense_gemv.py tests/test_triton_decode_attention.py 2>&1 | tail -3
timeout 50 $P tests/test_triton_matmul.py -k gemv 2>&1 | tail -2
timeout 50 $P tests/test_gpt_oss.py -k gpu 2>&1 | tail -2
timeout 330 python3 $D/pdl_ab.py --moe --sweep --model 2>&1 | tee $OUT/pdl_ab.log | grep -E "MoE|GEMV|gpt-oss|Error|error" | head -30
