#!/usr/bin/env bash
# For the next device session (session 7 ran out of device time before any of this ran): the fused add + RMSNorms
# compiled, the model on the GPU against the CPU path, the fused / unfused A/B, the standard model benchmark.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session7
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
P="python3 -m pytest -q -rs -p no:logging -W ignore -p no:cacheprovider"
timeout 90 $P tests/test_moe.py tests/test_triton_dense_gemv.py -k "add_norm or route" 2>&1 | tail -3
timeout 120 $P tests/test_gpt_oss.py -k gpu 2>&1 | tail -2
timeout 150 python3 $D/norm_ab.py 2>&1 | tee $OUT/norm_ab.log | grep -E "gpt-oss|Error|error" | head
timeout 200 python3 bench/gpt_oss_gpu.py --skip-baseline --json $OUT/gpt_oss_20b.json 2>&1 | tail -3
