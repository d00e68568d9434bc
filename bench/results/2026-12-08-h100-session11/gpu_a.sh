#!/usr/bin/env bash
# Session 11 (written with no device lent; for the next one), first device call (~360 s): what session 10
# left (greedy GPU vs CPU with the TMA gate_up; the TMA kernels compiled after the two refactors), the new TMA down
# GEMV compiled, probed and under compute-sanitizer, and ncu on the decode kernels and quantize.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
D=bench/results/2026-12-08-h100-session11
P="python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider"
timeout 90 $P tests/test_gpt_oss.py -k gpu 2>&1 | tail -2 | tee $OUT/test_gpt_oss.log
timeout 100 $P tests/test_triton_matmul.py -k "gemv_tma or readable or split_k" 2>&1 | tail -2 | tee $OUT/tests_matmul.log
timeout 80 $P tests/test_moe.py -k "gate_up_gemv or down_combine_gemv or tma_down or cuda_graph or (gpt_oss_sizes and hopper)" 2>&1 | tail -2 | tee $OUT/tests_moe.log
timeout 90 python3 $D/probe_moe_tma.py 2>&1 | grep -v -i warn | tee $OUT/probe_moe_tma.log
timeout 100 ncu --section SpeedOfLight --section WarpStateStats --section Occupancy --section SchedulerStats \
  --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats \
  -k regex:"gemv|quantize_mxfp4" python3 $D/ncu_kernels.py > $OUT/ncu_full.log 2>&1
grep -E "^  [a-z_]+.*\(|Duration|DRAM Throughput|Compute \(SM\) Throughput|Issue Slots Busy|No Eligible|Active Warps Per|Eligible Warps Per|Warp Cycles Per Issued|Achieved Occupancy|Registers Per|Grid Size|Executed Ipc A|L2 Hit|Mem Busy" $OUT/ncu_full.log | head -90
timeout 60 compute-sanitizer --tool memcheck --print-limit 5 $P tests/test_moe.py -k "(down_combine_gemv and tma) or tma_down" 2>&1 | grep -E "ERROR SUMMARY|passed|failed" | tail -3 | tee $OUT/sanitizer.log
