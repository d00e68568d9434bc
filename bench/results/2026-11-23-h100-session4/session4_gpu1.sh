#!/usr/bin/env bash
# Session 4, device call 1: where a batch-1 gpt-oss-20b decode step spends its kernel time now; large-M matmul probe.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1
timeout 200 python3 bench/gpt_oss_gpu.py --profile-only --preset gpt-oss-20b 2>&1 | grep -v -i "warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
timeout 200 python3 bench/results/2026-11-23-h100-session4/probe_dq.py 2>&1 | grep -v -i warn
