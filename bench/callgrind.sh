#!/bin/sh
# callgrind.sh: instructions per op of hark, of each peer bench-signal was
# built with (GObject, libsigc++, Boost.Signals2) and of each case's
# baseline, repeatable where wall-clock times are not (shared machines).
#
#   cd _build && ../bench/callgrind.sh [case ...]     (or make bench-callgrind)
#
# Each (case, impl) runs twice under valgrind --tool=callgrind with N1 and
# N2 iterations; setup, warm-up and teardown are identical in both runs, so
#   instructions/op = (Ir(N2) - Ir(N1)) / (ops(N2) - ops(N1)).
# Environment: BENCH (the program, default bench/bench-signal in the
# current build directory), N1, N2 (iterations; defaults per case below),
# IMPLS (space-separated impls to measure; default: all of the case's).
set -eu

BENCH=${BENCH:-bench/bench-signal}
if [ ! -x "$BENCH" ]; then
  echo "callgrind.sh: no $BENCH here: run it from the build directory" >&2
  echo "  (make bench/bench-signal first), or set BENCH" >&2
  exit 2
fi
# A libtool wrapper script runs the real program through libtool.
RUN=
if head -c 2 "$BENCH" | grep -q '#!'; then
  LIBTOOL=${LIBTOOL:-$(dirname "$BENCH")/../libtool}
  RUN="$LIBTOOL --mode=execute"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hark-callgrind.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

# prints "<Ir> <ops>" for one run
run() { # case impl iters
  out="$tmp/cg.out"
  $RUN valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$BENCH" --case "$1" --impl "$2" --iters "$3" >"$tmp/stdout" \
    2>"$tmp/stderr" || {
    echo "callgrind.sh: $1/$2 failed:" >&2
    cat "$tmp/stderr" >&2
    exit 1
  }
  ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out")
  ops=$(sed -n 's/.*ops=\([0-9]*\).*/\1/p' "$tmp/stdout")
  echo "$ir $ops"
}

per_op() { # case impl n1 n2
  set -- "$1" "$2" "$3" "$4" $(run "$1" "$2" "$3") $(run "$1" "$2" "$4")
  awk -v i1="$5" -v o1="$6" -v i2="$7" -v o2="$8" \
    'BEGIN { printf "%.2f", (i2 - i1) / (o2 - o1) }'
}

# case  baseline-impl  N1  N2  unit
cases='send1 raw 20000 120000 call
send8 raw 5000 30000 call
send64 raw 1000 5000 call
send512 raw 100 600 call
filtered ideal 100 600 call
big small-sig 20000 120000 call
connect0 N=0 2000 12000 pair
connect1k N=0 2000 12000 pair
connect100k N=0 2000 12000 pair'

printf '%-12s %-5s %-15s %12s %12s %-10s %9s\n' case unit impl "Ir/op" \
  "base Ir/op" base ratio
echo "$cases" | while read -r c base n1 n2 unit; do
  if [ $# -gt 0 ]; then
    want=no
    for a in "$@"; do [ "$a" = "$c" ] && want=yes; done
    [ $want = yes ] || continue
  fi
  n1=${N1:-$n1}
  n2=${N2:-$n2}
  b=$(per_op "$c" "$base" "$n1" "$n2")
  impls=${IMPLS:-$($RUN "$BENCH" --impls "$c" | grep -vx "$base")}
  for i in $impls; do
    "$BENCH" --impls "$c" | grep -qx "$i" || continue
    h=$(per_op "$c" "$i" "$n1" "$n2")
    r=$(awk -v h="$h" -v b="$b" 'BEGIN { printf "%.2f", h / b }')
    printf '%-12s %-5s %-15s %12s %12s %-10s %8sx\n' "$c" "$unit" "$i" "$h" \
      "$b" "$base" "$r"
  done
done
