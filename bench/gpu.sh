#!/usr/bin/env bash
# The GPU suite: one command for a CUDA machine with no network.
#   bash bench/gpu.sh [OUT_DIR]          (default OUT_DIR: bench/out)
# Stages (each can be skipped: SKIP_TESTS=1, SKIP_SANITIZER=1, SKIP_BENCH=1, SKIP_MODEL=1; each has a time limit,
# TESTS_TIMEOUT, SANITIZER_TIMEOUT, BENCH_TIMEOUT, MODEL_TIMEOUT, in seconds; TEST_FILES, BENCH_ARGS, MODEL_ARGS narrow them):
#   1. install the project (editable, no deps, no build isolation: the machine has torch/triton already)
#   2. the kernel test suite compiled (not interpreted) over every forced path, GPT-OSS shapes included
#   3. compute-sanitizer memcheck over one small run of each kernel (odd shapes, partial blocks)
#   4. benchmarks: python -m mxfp4.bench (ceilings, kernels, roofline), MoE and model benchmarks
# and prints one short table last. Logs land in OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-bench/out}}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-gpu}"
unset TRITON_INTERPRET
status=0
summary=()
note() { summary+=("$1"); echo "== $1"; }

python3 -m pip install -q --no-build-isolation --no-deps -e . >"$OUT_DIR/install.log" 2>&1 \
  || { cat "$OUT_DIR/install.log"; exit 1; }
python3 - <<'PY' | tee "$OUT_DIR/env.txt"
import torch, triton, sys
print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__)
print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
PY

if [ -z "${SKIP_TESTS:-}" ]; then
  # Kernel suites first (they gate everything else), then the rest of the tests.
  timeout "${TESTS_TIMEOUT:-3600}" python3 -m pytest -q -p no:cacheprovider ${TEST_FILES:-tests} --junitxml="$OUT_DIR/tests.xml" \
    2>&1 | tee "$OUT_DIR/tests.log" | tail -n 30
  rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || status=1
  note "tests: $(tail -n 1 "$OUT_DIR/tests.log")"
fi

if [ -z "${SKIP_SANITIZER:-}" ]; then
  if command -v compute-sanitizer >/dev/null; then
    timeout "${SANITIZER_TIMEOUT:-1200}" compute-sanitizer --tool memcheck --error-exitcode 9 python3 bench/sanitize.py >"$OUT_DIR/sanitizer.log" 2>&1
    rc=$?; [ "$rc" = 0 ] || status=1
    note "compute-sanitizer memcheck: rc=$rc, $(grep -c 'Invalid' "$OUT_DIR/sanitizer.log") invalid accesses; $(grep 'ERROR SUMMARY' "$OUT_DIR/sanitizer.log" | tail -n 1)"
  else
    note "compute-sanitizer: not installed"
  fi
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  timeout "${BENCH_TIMEOUT:-1800}" python3 -m mxfp4.bench ${BENCH_ARGS:-} --json "$OUT_DIR/bench.json" --png "$OUT_DIR/roofline.png" \
    2>&1 | tee "$OUT_DIR/bench.log" | tail -n 60
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  note "bench: table in $OUT_DIR/bench.log"
  timeout "${BENCH_TIMEOUT:-1800}" python3 -m pytest -q -p no:cacheprovider bench/bench_moe.py bench/bench_model.py --benchmark-only --benchmark-json="$OUT_DIR/bench_moe.json" \
    2>&1 | tee "$OUT_DIR/bench_moe.log" | tail -n 40
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  note "bench_moe: $(tail -n 1 "$OUT_DIR/bench_moe.log")"
fi

if [ -z "${SKIP_MODEL:-}" ]; then
  timeout "${MODEL_TIMEOUT:-1800}" python3 bench/gpt_oss_gpu.py ${MODEL_ARGS:---preset gpt-oss-20b --preset gpt-oss-120b} --json "$OUT_DIR/gpt_oss.json" \
    2>&1 | tee "$OUT_DIR/gpt_oss.log" | tail -n 8
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  note "gpt-oss: $(tail -n 2 "$OUT_DIR/gpt_oss.log" | tr '\n' ' ')"
fi

echo
echo "================ summary ================"
printf '%s\n' "${summary[@]}"
exit $status
