#!/usr/bin/env bash
# Session 9, for what device time is left (~200 s): the fused-norm MoE test after its fix (the torch reference's
# MXFP4 weights had stayed on the GPU), then gpt-oss-120b with the fused norms.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
P="python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider"
timeout 40 $P tests/test_moe.py -k "fused_add_norm" 2>&1 | tail -2
timeout 150 python3 bench/gpt_oss_gpu.py --preset gpt-oss-120b --skip-baseline --json $OUT/gpt_oss_120b.json 2>&1 | tail -4
