#!/bin/bash
# lib/ line and branch coverage of the whole test suite (issue 6).
# Configures an out-of-tree build with --enable-coverage (--coverage -O0),
# runs the whole make check (the symbol and man page tests included), and
# ends with one line:
#   lib/ coverage: lines X%, branches Y% (goal: lines >= L%, branches >= B%)
# Usage: .ci/coverage.sh [build-dir]   (default: _ci-coverage)
# The goal is HARK_COVERAGE_LINES (default 95) and HARK_COVERAGE_BRANCHES
# (default 85), in percent of lib/.
# Exit status: non-zero if a test failed, coverage is below the goal, or
# gcovr is missing. Needs gcovr (Debian package gcovr; installed here when
# run as root).
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
build=${1:-$top/_ci-coverage}
case $build in /*) ;; *) build=$top/$build ;; esac

if ! command -v gcovr >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o DPkg::Lock::Timeout=120 gcovr >/dev/null
fi
command -v gcovr >/dev/null 2>&1 || { echo "coverage: gcovr not found"; exit 2; }

rm -rf "$build"
mkdir -p "$build"
cd "$build" || exit 2
"$top/configure" -q --enable-coverage || { echo "coverage: configure failed"; exit 2; }

status=0
make -j"${JOBS:-2}" check || status=1

# Per-file tables (lines, then branches), then the summary line.
# (the search path goes first: --txt and --json-summary take an optional
# output file name)
gcov_args=("$build" --root "$top" --filter "$top/lib/")
gcovr "${gcov_args[@]}" --txt
gcovr "${gcov_args[@]}" --branches --txt
# What was measured, against the goal; below the goal fails the step.
goal_lines=${HARK_COVERAGE_LINES:-95}
goal_branches=${HARK_COVERAGE_BRANCHES:-85}
gcovr "${gcov_args[@]}" --json-summary |
  python3 -c 'import json,sys
d = json.load(sys.stdin)
lines, branches = d["line_percent"], d["branch_percent"]
goal_lines, goal_branches = float(sys.argv[1]), float(sys.argv[2])
print("lib/ coverage: lines %.1f%%, branches %.1f%% (goal: lines >= %g%%, branches >= %g%%)"
      % (lines, branches, goal_lines, goal_branches))
sys.exit(0 if lines >= goal_lines and branches >= goal_branches else 1)' \
    "$goal_lines" "$goal_branches" || {
  echo "coverage: below the goal (or not measured)"; status=1; }
exit $status
