#!/usr/bin/env bash
# Session 6, device call 1: what session 5 left unrun (strengthened table-decode test, the MoE suite with the
# finish_tile down GEMV, memcheck of the MoE kernels) and ncu profiles of the three GEMVs.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-07-h100-session6
OUT=${OUT:-bench/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
timeout 100 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_triton_matmul.py -k table_decode_compiled 2>&1 | tail -2
timeout 200 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py 2>&1 | tail -4
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 bench/sanitize.py --only-moe > $OUT/sanitizer_moe.log 2>&1; echo "sanitizer rc=$?"; grep "ERROR SUMMARY" $OUT/sanitizer_moe.log | tail -2
timeout 120 ncu --kernel-name regex:gemv --launch-skip 3 --launch-count 3 --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis --section SchedulerStats python3 $D/probe_gemv.py > $OUT/ncu_gemv.txt 2>&1; echo "ncu rc=$?"
grep -E "gemv_kernel|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Grid Size|Block Size|Stall|Issued Warp|No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth" $OUT/ncu_gemv.txt | head -120
