#!/usr/bin/env bash
# Session 4, device call 2: fused decode attention + dequantize/cuBLAS large-M matmul compiled and sanitized; models.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
OUT=${OUT:-bench/out}; mkdir -p $OUT
F="warn\|online softmax\|split the reduction\|important use case\|softmax\.$"
timeout 170 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_triton_decode_attention.py tests/test_triton_matmul.py -k "dequant or gpt_oss_shapes or decode_attention" 2>&1 | tail -3
timeout 170 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_gpt_oss.py -k "gpu or triton" 2>&1 | tail -3
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 bench/sanitize.py 2>&1 | grep -v -i warn | tail -5; echo "sanitize rc ${PIPESTATUS[0]}"
timeout 240 python3 bench/gpt_oss_gpu.py --preset gpt-oss-20b --preset gpt-oss-120b --skip-baseline --profile --json $OUT/gpt_oss.json 2>&1 | grep -v -i "$F" | grep -v "^ \{1,\}\"\|^[{}]" | tail -75
