#!/usr/bin/env bash
# Session 10, third device call: the merged TMA GEMVs compiled (tests, compute-sanitizer), then timed against the
# register-load GEMVs (matmul M=1, MoE T=1 layer, gpt-oss-20b tok/s).
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session10
P="python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider"
timeout 120 $P tests/test_triton_matmul.py -k "gemv_tma or readable or (gpt_oss_shapes and 8192 and not 64x) or split_k" 2>&1 | tail -3 | tee $OUT/tests_matmul.log
timeout 80 $P tests/test_moe.py -k "gate_up_gemv or cuda_graph or (gpt_oss_sizes and hopper)" 2>&1 | tail -3 | tee $OUT/tests_moe.log
timeout 150 python3 $D/tma_ab.py 1 2>&1 | grep -v -i warn | tee $OUT/tma_ab.log
timeout 60 compute-sanitizer --tool memcheck --print-limit 5 $P tests/test_triton_matmul.py tests/test_moe.py -k "(gemv_tma and (17x50x200 or 1x17x63)) or (gate_up_gemv and tma)" 2>&1 | grep -E "ERROR SUMMARY|passed|failed" | tail -3 | tee $OUT/sanitizer.log
