#!/bin/bash
# lib/ line and branch coverage of the whole test suite (issue 6).
# Configures an out-of-tree build with --enable-coverage (--coverage -O0),
# runs make check, and ends with one line:
#   lib/ coverage: lines X%, branches Y%
# Usage: .ci/coverage.sh [build-dir]   (default: _ci-coverage)
# Exit status: non-zero if a test failed or gcovr is missing. Needs gcovr
# (Debian package gcovr; installed here when run as root).
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

# Every test but test-symbols.sh, which rightly fails here: a --coverage
# libhark.so also exports libgcov's symbols.
tests=$(printf 'print-tests:\n\t@echo $(TESTS)\n' |
  make -s -f Makefile -f - print-tests | tr ' ' '\n' |
  grep -v -e '^$' -e 'test-symbols\.sh$' | tr '\n' ' ')
status=0
make -j"${JOBS:-2}" check TESTS="$tests" || status=1

# Per-file tables (lines, then branches), then the summary line.
# (the search path goes first: --txt and --json-summary take an optional
# output file name)
gcov_args=("$build" --root "$top" --filter "$top/lib/")
gcovr "${gcov_args[@]}" --txt
gcovr "${gcov_args[@]}" --branches --txt
summary=$(gcovr "${gcov_args[@]}" --json-summary |
  python3 -c 'import json,sys; d=json.load(sys.stdin)
print("lines %.1f%%, branches %.1f%%" % (d["line_percent"], d["branch_percent"]))')
echo "lib/ coverage: ${summary:-unknown}"
exit $status
