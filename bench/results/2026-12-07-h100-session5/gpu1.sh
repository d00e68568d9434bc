#!/usr/bin/env bash
# Session 5, device call 1: the table decode compiled (matmul + MoE tests) and the small-M / MoE decode probes.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
P=bench/results/2026-12-07-h100-session5/probe_table_decode.py
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 $P 2>&1 | grep -v -i warn
timeout 90 python3 $P --moe 2>&1 | grep -v -i warn
timeout 150 python3 -m pytest -q -x -p no:logging -W ignore -p no:cacheprovider tests/test_triton_matmul.py 2>&1 | tail -6
timeout 150 python3 -m pytest -q -x -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py 2>&1 | tail -6
