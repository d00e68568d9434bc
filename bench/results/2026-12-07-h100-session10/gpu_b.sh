#!/usr/bin/env bash
# Session 10, second device call: gpt-oss-120b with the fused norms, the MoE prefill benchmark.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1
P="python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider"
timeout 200 python3 bench/gpt_oss_gpu.py --preset gpt-oss-120b --skip-baseline --json $OUT/gpt_oss_120b.json 2>&1 | tail -6
timeout 150 $P bench/bench_moe.py -k prefill --benchmark-only 2>&1 | tail -8
