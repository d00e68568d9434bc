#!/usr/bin/env bash
# Session 11 (for the next device session), third device call (~300 s): the kernel table and roofline (quantize, dequantize, matmul M=1/16 with
# the TMA schedule) for notebook 02.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1
timeout 420 python3 -m mxfp4.bench --quick --ops quantize,dequantize,matmul --shapes 5760x2880,2880x2880,8192x8192,28672x8192 \
  --m 1,16,4096 --json $OUT/bench.json --png $OUT/roofline.png 2>&1 | tail -30 | tee $OUT/bench.log
