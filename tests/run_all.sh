#!/usr/bin/env bash
# Runs every test: the cmocka unit binaries given as arguments, then (unless --unit-only) the end-to-end
# suites over real HTTP against the sanitizer build. Ends with one "N passed, N failed" line.
set -u
cd "$(dirname "$0")/.."
unit_only=0
if [ "${1:-}" = "--unit-only" ]; then unit_only=1; shift; fi
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
passed=0; failed=0; broken=()
for bin in "$@"; do
  out=$("$bin" 2>&1); rc=$?
  echo "$out" | grep -E '^\[ *(PASSED|FAILED|  OK|RUN) *\]|ERROR|runtime error|Sanitizer' | grep -v '^\[ RUN' || true
  p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ $rc -ne 0 ] && [ "${f:-0}" = 0 ]; then failed=$((failed + 1)); broken+=("$bin"); echo "$out" | tail -30; fi
done
if [ $unit_only -eq 0 ]; then
  out=$(MEDSTREAM_BIN="$PWD/build/san/medstream" bash tests/e2e/run.sh 2>&1); rc=$?
  echo "$out"
  line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1)
  p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p'); f=$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ $rc -ne 0 ] && [ "${f:-0}" = 0 ]; then failed=$((failed + 1)); broken+=("tests/e2e"); fi
fi
[ ${#broken[@]} -gt 0 ] && echo "crashed or exited non-zero: ${broken[*]}"
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
