#!/bin/sh
# hark-chatd federation benchmark: one hark-chatload, the same load
# (clients, channels, senders, messages, rate) in every case, against
#   alone   one daemon, no Redis;
#   fed1    one daemon federated (every message also goes through Redis);
#   fed3    three federated daemons, the clients spread over them by
#           `hark-chatload --ports`: every channel has members on every
#           node, so most deliveries cross Redis.
# One chatload process and loop per case, so delivered msgs/s and the
# latencies are the whole network's. Each case starts its daemons, runs,
# and stops them; ROUNDS repeats the three cases in turn.
# Usage: federation-bench.sh [BUILDDIR]
# (env: CLIENTS SENDERS MESSAGES CHANNELS RATE ROUNDS TIMEOUT)
# Everything runs on 127.0.0.1; everything it starts is stopped by PID;
# every run is bounded (chatload --timeout, and timeout(1) around it).
set -u
builddir=${1:-${top_builddir:-.}}
daemon=$builddir/examples/chatd/hark-chatd
load=$builddir/examples/chatd/hark-chatload
CLIENTS=${CLIENTS:-300}
SENDERS=${SENDERS:-30}
MESSAGES=${MESSAGES:-1000}
CHANNELS=${CHANNELS:-3}
RATE=${RATE:-0} # total messages/s; 0: flat out
ROUNDS=${ROUNDS:-1}
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

free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}
wait_port() { # file -> prints the port the daemon printed
  i=0
  while [ $i -lt 100 ]; do
    p=$(sed -n 's/^hark-chatd listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$1")
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.05; i=$((i + 1))
  done
  return 1
}
start_node() { # name [redis args...]: sets PORT and NODE (not in a
  n=$1; shift  # subshell: the PID must reach $pids)
  : >"$dir/$n.out" # now: no stale port from an earlier round
  "$daemon" --listen 127.0.0.1:0 --flood-rate 0 --log-level warn \
    --max-clients 0 "$@" >"$dir/$n.out" 2>"$dir/$n.err" &
  NODE=$!
  pids="$pids $NODE"
  PORT=$(wait_port "$dir/$n.out") || { echo "node $n did not start"; exit 1; }
}
run_case() { # name ports -> the report in $dir/NAME.ROUND, a summary line
  # in the background: a signal runs the trap at once, not after chatload
  timeout $((TIMEOUT + 20)) "$load" --ports "$2" --clients "$CLIENTS" \
    --senders "$SENDERS" --messages "$MESSAGES" --channels "$CHANNELS" \
    --rate "$RATE" --timeout "$TIMEOUT" >"$dir/$1.$round" 2>"$dir/$1.err" &
  lpid=$!
  pids="$pids $lpid"
  wait "$lpid"
  rc=$?
  stop "$lpid"
  awk -v name="$1" -v rc=$rc '
    /^delivered/ { split($2, d, "/"); got = d[1]; want = d[2]; rate = $(NF-1) }
    /^latency/ { p50 = $3; p99 = $6 }
    /^cross-port/ { x = "   cross-node " $4 }
    /^load average/ { la = $3 " -> " $6 }
    END { printf "%-6s %9s %17s %8.2f %8.2f   %s%s%s\n", name, rate,
          got "/" want, p50 / 1000, p99 / 1000, la, x,
          rc ? "   (chatload exit " rc ")" : "" }' "$dir/$1.$round"
  [ $rc = 0 ] || sed 's/.*\r//' "$dir/$1.err" | grep -v '^$' | tail -3
}

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
  --loglevel warning >"$dir/redis.out" 2>&1 &
pids="$pids $!"
i=0
until redis-cli -p "$rport" ping >/dev/null 2>&1; do
  sleep 0.05; i=$((i + 1))
  [ $i -lt 100 ] || { echo "redis-server did not start"; exit 1; }
done

printf 'load: %s clients, %s channels, %s senders x %s messages, %s\n' \
  "$CLIENTS" "$CHANNELS" "$SENDERS" "$MESSAGES" \
  "$([ "$RATE" = 0 ] && echo "flat out" || echo "$RATE msg/s in total")"
printf '%s CPUs, load average %s\n' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
round=1
while [ $round -le "$ROUNDS" ]; do
  echo "-- round $round"
  echo "case       msg/s         delivered   p50 ms   p99 ms   load average"
  start_node alone
  run_case alone "$PORT"
  stop "$NODE"
  start_node fed1 --redis "127.0.0.1:$rport" --node-id fed1
  run_case fed1 "$PORT"
  stop "$NODE"
  start_node a --redis "127.0.0.1:$rport" --node-id a; pa=$NODE; p0=$PORT
  start_node b --redis "127.0.0.1:$rport" --node-id b; pb=$NODE; p1=$PORT
  start_node c --redis "127.0.0.1:$rport" --node-id c; pc=$NODE; p2=$PORT
  run_case fed3 "$p0,$p1,$p2"
  stop "$pa" "$pb" "$pc"
  round=$((round + 1))
done
