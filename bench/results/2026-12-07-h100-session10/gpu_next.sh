#!/usr/bin/env bash
# For the next device session (~400 s): what session 10 had no device time left for, with the TMA GEMVs merged --
# greedy generation on the GPU against the CPU path (the MoE gate_up now sums in another order), the kernel table
# and roofline (matmul M=1 with the TMA schedule), the MoE decode launch shapes with TMA at T=2 (8 pairs), and an
# ncu look at the TMA GEMV at 8192^2 (is it issue-bound now?).
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
P="python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider"
timeout 90 $P tests/test_gpt_oss.py -k gpu 2>&1 | tail -2 | tee $OUT/test_gpt_oss.log
timeout 200 python3 -m mxfp4.bench --quick --ops matmul --shapes 5760x2880,2880x2880,8192x8192,28672x8192 --m 1,16 \
  --json $OUT/bench.json --png $OUT/roofline.png 2>&1 | tail -25 | tee $OUT/bench.log
timeout 90 ncu --section SpeedOfLight --section WarpStateStats --section Occupancy -k regex:gemv_tma -c 1 python3 -c "
import torch, mxfp4
w = mxfp4.quantize(torch.randn(8192, 8192, device='cuda'))
a = torch.randn(1, 8192, device='cuda').to(torch.bfloat16)
for _ in range(3): mxfp4.matmul(a, w, backend='hopper')
torch.cuda.synchronize()" 2>&1 | grep -E "Throughput|Stall|Occupancy|Issue|Duration" | head -30 | tee $OUT/ncu.log
