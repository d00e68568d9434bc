#!/usr/bin/env bash
# (At run time ec7485d's files were copies in this folder, removed after; git show gives the same bytes.)
# Ran on a tree with words_layout_variant.diff applied (git apply); the "before" half restores ec7485d.
# Session 6, device call 2: GEMVs with the activations loaded in the weight tile's layout (mx.word_block_sums, no
# shared-memory exchange) against the session-5 kernels in the same call; the MoE sweep with BLOCK_G = 32; tests.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session6
OUT=${OUT:-bench/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
mkdir -p /tmp/new; cp triton_kernels/{mx,matmul,moe_common}.py /tmp/new/
for f in mx matmul moe_common; do git show ec7485d:triton_kernels/$f.py > triton_kernels/$f.py; done
echo "== session-5 kernels"
timeout 90 python3 $D/probe_gemv.py --time 2>&1 | grep -v -i warn
timeout 90 python3 $D/probe_matmul_gemv.py 64,4,4 2>&1 | grep -v -i warn
cp /tmp/new/*.py triton_kernels/
echo "== new kernels"
timeout 90 python3 $D/probe_gemv.py --time 2>&1 | grep -v -i warn
timeout 150 python3 $D/probe_matmul_gemv.py 64,4,4 64,8,4 32,16,4 16,32,4 32,32,8 2>&1 | grep -v -i warn
echo "== sweep (new kernels)"; timeout 200 python3 bench/tune.py moe-decode --json $OUT/tune_moe_decode.json 2>&1 | grep -v -i warn | grep -v "^\s*$" | head -100
timeout 60 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_triton_matmul.py -k "table_decode_compiled or gemv" 2>&1 | tail -1
timeout 120 python3 -m pytest -q -x -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py 2>&1 | tail -3
