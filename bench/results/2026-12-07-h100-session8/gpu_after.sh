#!/usr/bin/env bash
# After gpu_next.sh (written in session 8, never run): what no session has run since the session-6 kernels -- the
# matmul GEMV tests compiled, gpt-oss-120b with the fused norms, the kernel table + roofline (quantize / dequantize / matmul, for
# notebook 02), the MoE prefill benchmark.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
P="python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider"
timeout 120 $P tests/test_triton_matmul.py -k gemv 2>&1 | tail -2
timeout 170 python3 bench/gpt_oss_gpu.py --preset gpt-oss-120b --skip-baseline --json $OUT/gpt_oss_120b.json 2>&1 | tail -4
timeout 150 python3 -m mxfp4.bench --quick --ops quantize,dequantize,matmul --shapes 5760x2880,2880x2880,8192x8192,28672x8192 --m 1,16,4096 --json $OUT/bench.json --png $OUT/roofline.png 2>&1 | tee $OUT/bench.log | tail -30
timeout 90 $P bench/bench_moe.py -k prefill --benchmark-only 2>&1 | tail -6
