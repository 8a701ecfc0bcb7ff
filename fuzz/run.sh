#!/bin/sh
# Runs each libFuzzer harness for SECONDS on its committed corpus, one at a
# time; fails on the first crash, leak or broken check (the reproducer is
# left in fuzz/artifacts/). New inputs go to fuzz/work/NAME, never into the
# committed corpus; to grow it, minimise them by hand:
#   fuzz/fuzz-NAME -merge=1 SRCDIR/fuzz/corpus/NAME fuzz/work/NAME
#
#   fuzz/run.sh SECONDS [NAME...]      (from the build directory, after
#                                      `make fuzz`; NAME: parser session model)
# FUZZ_BUILD: where the fuzz/ binaries are (default: .).
set -eu
secs=${1:?usage: fuzz/run.sh SECONDS [NAME...]}
shift
src=$(cd "$(dirname "$0")" && pwd)
build=${FUZZ_BUILD:-.}
names=${*:-parser session model}
mkdir -p "$build/fuzz/artifacts"
status=0
for name in $names; do
  bin=$build/fuzz/fuzz-$name
  if [ ! -x "$bin" ]; then
    echo "fuzz-$name: not built (make fuzz)" >&2
    status=1
    continue
  fi
  work=$build/fuzz/work/$name
  mkdir -p "$work"
  dict=
  [ -f "$src/$name.dict" ] && dict=-dict=$src/$name.dict
  [ "$name" != model ] && [ -f "$src/irc.dict" ] && dict=-dict=$src/irc.dict
  echo "== fuzz-$name: ${secs}s"
  log=$build/fuzz/work/$name.log
  if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$build/fuzz/artifacts/$name-" \
      $dict "$work" "$src/corpus/$name" >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" |
      sed "s/^/fuzz-$name /"
  else
    tail -n 60 "$log" >&2
    echo "fuzz-$name: FAILED (log: $log; reproducer in $build/fuzz/artifacts/)" >&2
    status=1
  fi
done
exit $status
