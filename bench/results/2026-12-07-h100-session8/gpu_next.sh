#!/usr/bin/env bash
# For the next device session (no request of session 8 got a machine): session 7's fused add + RMSNorms and
# session 8's L2 prefetch compiled (neither ever ran on a GPU), the model on the GPU against the CPU path, the
# prefetch probe (MoE GEMVs, matmul GEMV), then fused / fused+prefetch / +dense prefetch / unfused tok/s.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session8
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
P="python3 -m pytest -q -rs -p no:logging -W ignore -p no:cacheprovider"
timeout 100 $P tests/test_moe.py tests/test_triton_dense_gemv.py tests/test_triton_matmul.py -k "add_norm or route or prefetch" 2>&1 | tail -3
timeout 100 $P tests/test_gpt_oss.py -k gpu 2>&1 | tail -2
timeout 140 python3 $D/probe_prefetch.py 2>&1 | tee $OUT/probe_prefetch.log | grep -E "copy|MoE|matmul|Error|error" | head -20
timeout 120 python3 $D/model_ab.py 4 2>&1 | tee $OUT/model_ab.log | grep -E "gpt-oss|Error|error" | head
