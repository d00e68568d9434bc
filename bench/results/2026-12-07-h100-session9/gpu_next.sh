#!/usr/bin/env bash
# For the next device session (~470 s worst case): what session 9 had no device time left for -- the fused-norm
# MoE test after its fix (the torch reference's MXFP4 weights had stayed on the GPU), compute-sanitizer over the
# fused-norm kernels, gpt-oss-120b with the fused norms, the MoE prefill benchmark.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
P="python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider"
timeout 40 $P tests/test_moe.py -k "fused_add_norm" 2>&1 | tail -2
timeout 100 compute-sanitizer --tool memcheck --print-limit 5 $P tests/test_moe.py tests/test_triton_dense_gemv.py -k "add_norm and (T1 or T5 or hopper or M1)" 2>&1 | grep -E "ERROR SUMMARY|passed|failed" | tail -3
timeout 170 python3 bench/gpt_oss_gpu.py --preset gpt-oss-120b --skip-baseline --json $OUT/gpt_oss_120b.json 2>&1 | tail -4
timeout 90 $P bench/bench_moe.py -k prefill --benchmark-only 2>&1 | tail -6
