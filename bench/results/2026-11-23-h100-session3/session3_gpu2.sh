#!/usr/bin/env bash
# Session 3, device call 2: the word-decode GEMVs compiled (tests, memcheck) and timed.
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || exit 1
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
echo "== tests"
timeout 200 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_triton_matmul.py tests/test_triton_dense_gemv.py 2>&1 | tail -3
timeout 150 python3 -m pytest -q -p no:logging -W ignore -p no:cacheprovider tests/test_moe.py -k "gemv or decode or gpt_oss or graph" 2>&1 | tail -3
echo "== memcheck"
timeout 110 compute-sanitizer --tool memcheck --error-exitcode 9 python3 bench/sanitize.py > /tmp/san.log 2>&1; echo "sanitizer rc=$? $(grep -c Invalid /tmp/san.log) invalid; $(grep 'ERROR SUMMARY' /tmp/san.log | tail -1)"; grep "sanitize:" /tmp/san.log
echo "== quick"
timeout 130 python3 bench/session3_quick.py 2>&1 | grep -v -i warn
