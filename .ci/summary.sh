#!/bin/sh
# Counts Check tests across build directories: Automake's driver keeps
# Check's own "Checks: N, Failures: F, Errors: E" lines in the logs. A test
# program that died before Check could summarise counts as one failure.
# Usage: summary.sh BUILD_DIR...   Prints "P F" (passed failed).
passed=0
failed=0
for dir in "$@"; do
  # every test log, in subdirectories too (tests/chatd/...)
  for log in $(find "$dir/tests" -name '*.log' 2>/dev/null | sort); do
    [ -f "$log" ] || continue
    case "$log" in */test-suite.log) continue ;; esac
    line=$(grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1)
    if [ -n "$line" ]; then
      n=$(printf '%s\n' "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
      f=$(printf '%s\n' "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
      e=$(printf '%s\n' "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
      passed=$((passed + n - f - e))
      failed=$((failed + f + e))
    else
      trs="${log%.log}.trs"
      if [ -f "$trs" ] && grep -q -E '^:test-result: (FAIL|ERROR)' "$trs"; then
        failed=$((failed + 1))
      fi
    fi
  done
done
echo "$passed $failed"
