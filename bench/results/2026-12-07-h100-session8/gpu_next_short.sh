#!/usr/bin/env bash
# The short form of gpu_next.sh, for little device time: the fused-norm and prefetch tests compiled, the model A/B
# (one round), the prefetch probe at T=1.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session8
nvidia-smi --query-gpu=name --format=csv,noheader
P="python3 -m pytest -q -rs -p no:logging -W ignore -p no:cacheprovider"
timeout 55 $P tests/test_moe.py tests/test_triton_dense_gemv.py -k "add_norm or route or prefetch" 2>&1 | tail -2
timeout 75 python3 $D/model_ab.py 4 1 2>&1 | tee $OUT/model_ab.log | grep -E "gpt-oss|Error|error" | head
timeout 50 python3 $D/probe_prefetch.py --quick 2>&1 | tee $OUT/probe_prefetch.log | grep -E "copy|MoE|matmul|Error|error" | head
