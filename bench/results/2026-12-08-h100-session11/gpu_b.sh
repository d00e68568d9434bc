#!/usr/bin/env bash
# Session 11 (written with no device lent; for the next one), second device call (~260 s): the split-K probe --
# the unrolled split reduction A/B (before: the tree; after: unroll.patch applied) and the policy sweep -- and
# gpt-oss-20b tok/s in both states, TMA down off / on.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1
D=bench/results/2026-12-08-h100-session11
timeout 70 python3 $D/probe_split.py before 16x1 2>&1 | grep -v -i warn | tee $OUT/probe_before.log
timeout 80 python3 $D/model_tps.py before 2>&1 | grep -v -i warn | tee -a $OUT/probe_before.log
patch -p1 < $D/unroll.patch >/dev/null
timeout 130 python3 $D/probe_split.py after 16x1,8x1,4x1,32x1,16x2,8x2 2>&1 | grep -v -i warn | tee $OUT/probe_after.log
timeout 80 python3 $D/model_tps.py after 2>&1 | grep -v -i warn | tee -a $OUT/probe_after.log
patch -p1 -R < $D/unroll.patch >/dev/null
