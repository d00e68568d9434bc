#!/usr/bin/env bash
# Session 10, first device call: the TMA-pipelined GEMV probe, then the fused-norm MoE test (fixed in session 9)
# compiled and compute-sanitizer over the fused-norm kernels.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
D=bench/results/2026-12-07-h100-session10
timeout 200 python3 $D/probe_tma.py 2>&1 | grep -v -i warn | tee $OUT/probe_tma.log
timeout 100 python3 $D/probe_tma_moe.py 2>&1 | grep -v -i warn | tee $OUT/probe_tma_moe.log
P="python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider"
timeout 60 $P tests/test_moe.py -k "fused_add_norm" 2>&1 | tail -2
timeout 120 compute-sanitizer --tool memcheck --print-limit 5 $P tests/test_moe.py tests/test_triton_dense_gemv.py -k "add_norm and (T1 or T5 or hopper or M1)" 2>&1 | grep -E "ERROR SUMMARY|passed|failed" | tail -3
