#!/bin/sh
# hark-chatd federation benchmark: what a delivery costs a node, alone and
# federated, and how long a message takes from one node's client to
# another's. One hark-chatload, the same load in every case:
#   alone   one daemon, no Redis;
#   fed3    three federated daemons, the clients spread over them by
#           `hark-chatload --ports` (every channel has members on every
#           node, so two thirds of the deliveries cross Redis).
# For each daemon process the CPU time it used while messages flowed
# (utime+stime from /proc, from chatload's "sending" to its end) over the
# messages it delivered to its clients: ns of CPU per delivery, per node.
# Redis's CPU is shown beside. Latencies: all deliveries, and those that
# crossed nodes.
#
# Usage: federation-bench.sh [BUILDDIR]
#   env CLIENTS CHANNELS SENDERS MESSAGES RATE ROUNDS TIMEOUT
#   BASELINE=FILE       another hark-chatd to run the same cases with, in
#                       the same run (e.g. the pub/sub daemon of before);
#   BASELINE_REV=REV    build that one from this repository's REV (git
#                       archive into ${TMPDIR:-/tmp}/hark-chatd-REV, out
#                       of the tree; kept for the next run).
# Everything runs on 127.0.0.1; everything it starts is stopped by PID;
# every run is bounded (chatload --timeout, and timeout(1) around it).
set -u
builddir=${1:-${top_builddir:-.}}
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
daemon=$builddir/examples/chatd/hark-chatd
load=$builddir/examples/chatd/hark-chatload
CLIENTS=${CLIENTS:-300}
SENDERS=${SENDERS:-30}
MESSAGES=${MESSAGES:-600}
CHANNELS=${CHANNELS:-3}
RATE=${RATE:-2000} # total messages/s; 0: flat out
ROUNDS=${ROUNDS:-3}
TIMEOUT=${TIMEOUT:-60} # seconds per chatload run
command -v redis-server >/dev/null || { echo "SKIP: no redis-server"; exit 77; }
if [ ! -x "$daemon" ] || [ ! -x "$load" ]; then echo "SKIP: build first"; exit 77; fi
dir=$(mktemp -d)
pids= # everything running that we started
stop() { # pids...: stop these, and forget them
  for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
  for p in "$@"; do wait "$p" 2>/dev/null; done
  rest=
  for q in $pids; do
    keep=1
    for p in "$@"; do [ "$p" = "$q" ] && keep=0; done
    [ $keep = 1 ] && rest="$rest $q"
  done
  pids=$rest
}
cleanup() {
  # shellcheck disable=SC2086
  stop $pids
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the baseline daemon -------------------------------------------------
BASELINE=${BASELINE:-}
if [ -z "$BASELINE" ] && [ -n "${BASELINE_REV:-}" ]; then
  b=${TMPDIR:-/tmp}/hark-chatd-$BASELINE_REV
  BASELINE=$b/build/examples/chatd/hark-chatd
  if [ ! -x "$BASELINE" ]; then
    echo "building hark-chatd of $BASELINE_REV in $b (once)..."
    rm -rf "$b" && mkdir -p "$b/src" "$b/build" &&
      git -C "$srcdir" archive "$BASELINE_REV" | tar -x -C "$b/src" &&
      (cd "$b/src" && ./autogen.sh && cd "$b/build" &&
        "$b/src/configure" -q && make -j2 examples/chatd/hark-chatd) \
        >"$b/build.log" 2>&1 ||
      { echo "baseline build failed: $b/build.log"; exit 1; }
  fi
fi

free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}
wait_port() { # file -> prints the port the daemon printed
  i=0
  while [ $i -lt 200 ]; do
    p=$(sed -n 's/^hark-chatd listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$1")
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.05; i=$((i + 1))
  done
  return 1
}
start_node() { # bin name [args...]: sets PORT and NODE (not in a subshell:
  bin=$1; n=$2; shift 2 # the PID must reach $pids)
  : >"$dir/$n.out"
  "$bin" --listen 127.0.0.1:0 --flood-rate 0 --log-level warn \
    --max-clients 0 --sendq-hard 0 --sendq-soft 0 "$@" \
    >"$dir/$n.out" 2>"$dir/$n.err" &
  NODE=$!
  pids="$pids $NODE"
  PORT=$(wait_port "$dir/$n.out") || { echo "node $n did not start"; exit 1; }
}
ticks() { # pid -> utime+stime in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
hz=$(getconf CLK_TCK)

# run NAME PORTS PIDS...: chatload against PORTS; prints one line per
# node: name, CPU ms, deliveries, ns of CPU per delivery; then the
# latencies and Redis's CPU.
run_case() {
  name=$1 ports=$2; shift 2
  timeout $((TIMEOUT + 20)) "$load" --ports "$ports" --clients "$CLIENTS" \
    --senders "$SENDERS" --messages "$MESSAGES" --channels "$CHANNELS" \
    --rate "$RATE" --timeout "$TIMEOUT" >"$dir/$name.out" 2>"$dir/$name.err" &
  lpid=$!
  pids="$pids $lpid"
  i=0 # CPU from the first message on: connecting and joining are not it
  until grep -q "ready, sending" "$dir/$name.err" 2>/dev/null; do
    kill -0 "$lpid" 2>/dev/null || break
    sleep 0.01; i=$((i + 1))
    [ $i -lt 6000 ] || break
  done
  before=
  for p in "$@" $rpid; do before="$before $(ticks "$p")"; done
  wait "$lpid"
  rc=$?
  after=
  for p in "$@" $rpid; do after="$after $(ticks "$p")"; done
  stop "$lpid"
  [ $rc = 0 ] || { echo "$name: chatload exit $rc"; tail -3 "$dir/$name.err"; }
  awk -v name="$name" -v before="$before" -v after="$after" -v hz="$hz" \
      -v nodes=$# -v kind="$kind" -v sum="$dir/summary" '
    /^per port/ { for (i = 4; i <= NF; i++) if ($i ~ /^[0-9]+:$/) d[++k] = $(i+1) }
    /^delivered/ { split($2, t, "/"); total = t[1] }
    /^latency/ { p50 = $3; p99 = $6 }
    /^cross-port latency/ { x50 = $4; x99 = $7 }
    END {
      nb = split(before, b, " "); split(after, a, " ")
      if (k == 0) d[1] = total
      cpu = 0; del = 0
      for (i = 1; i <= nodes; i++) {
        ms = (a[i] - b[i]) * 1000 / hz
        printf "  %-9s node %d: %7.0f ms CPU, %9d deliveries, %6.0f ns/delivery\n",
          name, i, ms, d[i], d[i] ? ms * 1e6 / d[i] : 0
        cpu += ms; del += d[i]
      }
      rms = nb > nodes ? (a[nb] - b[nb]) * 1000 / hz : 0
      if (del > 0)
        printf "%s %s %.0f %.2f %.2f %.2f %.2f %.0f\n", kind, name,
          cpu * 1e6 / del, p50 / 1000, p99 / 1000,
          x50 != "" ? x50 / 1000 : p50 / 1000,
          x99 != "" ? x99 / 1000 : p99 / 1000, rms * 1e6 / del >> sum
      if (nb > nodes)
        printf "  %-9s redis:  %7.0f ms CPU\n", name, (a[nb] - b[nb]) * 1000 / hz
      printf "  %-9s latency p50 %.2f ms, p99 %.2f ms", name, p50 / 1000, p99 / 1000
      if (x50 != "")
        printf "; across nodes p50 %.2f ms, p99 %.2f ms", x50 / 1000, x99 / 1000
      printf "  (%d deliveries)\n", total
    }' "$dir/$name.out"
}

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
  --loglevel warning >"$dir/redis.out" 2>&1 &
rpid=$!
pids="$pids $rpid"
i=0
until redis-cli -p "$rport" ping >/dev/null 2>&1; do
  sleep 0.05; i=$((i + 1))
  [ $i -lt 100 ] || { echo "redis-server did not start"; exit 1; }
done

printf 'load: %s clients, %s channels, %s senders x %s messages, %s\n' \
  "$CLIENTS" "$CHANNELS" "$SENDERS" "$MESSAGES" \
  "$([ "$RATE" = 0 ] && echo "flat out" || echo "$RATE msg/s in total")"
printf '%s CPUs, load average %s\n' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
kinds="streams"
[ -n "$BASELINE" ] && kinds="streams baseline"
round=1
while [ $round -le "$ROUNDS" ]; do
  echo "-- round $round"
  for kind in $kinds; do
    bin=$daemon
    [ $kind = baseline ] && bin=$BASELINE
    echo "$kind: $bin"
    redis-cli -p "$rport" flushall >/dev/null # a fresh network each time
    saved=$rpid; rpid= # (alone: no Redis CPU)
    start_node "$bin" alone
    run_case alone "$PORT" "$NODE"
    stop "$NODE"
    rpid=$saved
    r="--redis 127.0.0.1:$rport"
    # shellcheck disable=SC2086
    start_node "$bin" a $r --node-id a; pa=$NODE; p0=$PORT
    # shellcheck disable=SC2086
    start_node "$bin" b $r --node-id b; pb=$NODE; p1=$PORT
    # shellcheck disable=SC2086
    start_node "$bin" c $r --node-id c; pc=$NODE; p2=$PORT
    run_case fed3 "$p0,$p1,$p2" "$pa" "$pb" "$pc"
    stop "$pa" "$pb" "$pc"
  done
  round=$((round + 1))
done

# Medians over the rounds: ns of CPU per delivery (per node: the nodes'
# CPU over their deliveries), latencies, Redis's ns per delivery.
echo
echo "medians of $ROUNDS rounds:"
printf '%-9s %-6s %14s %22s %22s %12s\n' daemon case "CPU ns/deliv" \
  "p50/p99 ms (all)" "p50/p99 ms (across)" "redis ns/d"
for kind in $kinds; do
  for c in alone fed3; do
    awk -v k=$kind -v c=$c '$1 == k && $2 == c' "$dir/summary" |
      sort -n -k3 >"$dir/m"
    n=$(wc -l <"$dir/m")
    [ "$n" -gt 0 ] || continue
    med() { sort -n -k"$1" "$dir/m" | awk -v f="$1" -v n="$n" \
      'NR == int((n + 1) / 2) { print $f }'; }
    printf '%-9s %-6s %14s %22s %22s %12s\n' "$kind" "$c" "$(med 3)" \
      "$(med 4) / $(med 5)" "$(med 6) / $(med 7)" "$(med 8)"
    echo "$kind $c $(med 3)" >>"$dir/medians"
  done
done
if [ -n "$BASELINE" ]; then
  awk '{ v[$1 " " $2] = $3 }
    END {
      if (v["baseline fed3"] > 0)
        printf "streams / baseline, CPU per delivery, 3 nodes: %.2fx\n",
          v["streams fed3"] / v["baseline fed3"]
      if (v["streams alone"] > 0)
        printf "3 nodes / 1 node, CPU per delivery: streams %.2fx, baseline %.2fx\n",
          v["streams fed3"] / v["streams alone"],
          v["baseline fed3"] / v["baseline alone"]
    }' "$dir/medians"
fi
