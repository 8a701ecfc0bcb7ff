#!/bin/sh
# callgrind-post.sh: instructions per message of hark_post -> hark_send ->
# receiver and of the hand-written queues (bench-post's sides), repeatable
# where wall-clock times are not. valgrind runs the threads one at a time,
# so this counts work, not contention, cache misses or atomics' cost.
#
#   cd _build && ../bench/callgrind-post.sh      (or make bench-post-callgrind)
#
# Each side runs twice with P producers and N1, N2 messages; setup and
# teardown are the same in both, so Ir/msg = (Ir(N2) - Ir(N1)) / (N2 - N1).
# Environment: BENCH (default bench/bench-post), P (1), N1 (100000),
# N2 (200000), SIDES ("hark queue pool send").
set -eu

BENCH=${BENCH:-bench/bench-post}
if [ ! -x "$BENCH" ]; then
  echo "callgrind-post.sh: no $BENCH here: run it from the build directory" >&2
  exit 2
fi
RUN=
if head -c 2 "$BENCH" | grep -q '#!'; then
  LIBTOOL=${LIBTOOL:-$(dirname "$BENCH")/../libtool}
  RUN="$LIBTOOL --mode=execute"
fi
P=${P:-1}
N1=${N1:-100000}
N2=${N2:-200000}
SIDES=${SIDES:-hark queue pool send}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hark-callgrind-post.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

ir() { # side messages
  $RUN valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
    "$BENCH" --only "$1" --producers "$P" --messages "$2" --rounds 1 \
    >"$tmp/stdout" 2>"$tmp/stderr" || {
    echo "callgrind-post.sh: $1 failed:" >&2
    cat "$tmp/stderr" >&2
    exit 1
  }
  sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$tmp/cg.out"
}

printf '%-12s %10s   (%s producer(s), %s and %s messages)\n' side Ir/msg \
  "$P" "$N1" "$N2"
for s in $SIDES; do
  a=$(ir "$s" "$N1")
  b=$(ir "$s" "$N2")
  awk -v s="$s" -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" \
    'BEGIN { printf "%-12s %10.1f\n", s, (b - a) / (n2 - n1) }'
done
