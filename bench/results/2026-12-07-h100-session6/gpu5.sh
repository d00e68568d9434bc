#!/usr/bin/env bash
# (At run time ec7485d's files were copies in this folder, removed after; git show gives the same bytes.)
# Ran on a tree with prefetch_variant.diff applied (git apply); the "before" half restores ec7485d.
# Session 6, device call 5 (short): the MoE GEMVs with one step of weights prefetched vs ec7485d, same call.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session6
cp triton_kernels/moe_common.py /tmp/prefetch.py; git show ec7485d:triton_kernels/moe_common.py > triton_kernels/moe_common.py
echo "== ec7485d"; timeout 60 python3 $D/probe_gemv.py --time 2>&1 | grep -v -i warn
cp /tmp/prefetch.py triton_kernels/moe_common.py
echo "== prefetch"; timeout 60 python3 $D/probe_gemv.py --time 2>&1 | grep -v -i warn
timeout 60 python3 -m pytest -q -x -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py -k "gemv" 2>&1 | tail -1
