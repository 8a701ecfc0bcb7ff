#!/bin/sh
# hark-chatd federation benchmark: the same hark-chatload fan-out against
#   1. one daemon alone (no Redis),
#   2. one daemon federated (every message also goes through Redis),
#   3. three federated daemons, the load spread over them: one chatload per
#      node, each with a third of the clients and senders, on the same
#      channels, all started at once.
# In 3 each chatload also receives the other nodes' senders (that is the
# point: cross-node delivery), so it stops once it has counted its own
# expected total; the line "spread total" adds the three rates.
# Usage: federation-bench.sh [BUILDDIR] (env: CLIENTS SENDERS MESSAGES
# CHANNELS RATE). Everything it starts is stopped by PID; every run is bounded.
set -u
builddir=${1:-${top_builddir:-.}}
daemon=$builddir/examples/chatd/hark-chatd
load=$builddir/examples/chatd/hark-chatload
CLIENTS=${CLIENTS:-300}
SENDERS=${SENDERS:-30}
MESSAGES=${MESSAGES:-200}
CHANNELS=${CHANNELS:-3}
RATE=${RATE:-0} # total messages/s; 0: flat out
command -v redis-server >/dev/null || { echo "SKIP: no redis-server"; exit 77; }
[ -x "$daemon" ] && [ -x "$load" ] || { echo "SKIP: build first"; exit 77; }
dir=$(mktemp -d)
pids=
cleanup() {
  for p in $pids; do kill -TERM "$p" 2>/dev/null; done
  for p in $pids; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

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
start_node() { # name [redis args...]: sets PORT (not in a subshell: the
  n=$1; shift  # PID must reach $pids)
  : >"$dir/$n.out"
  "$daemon" --listen 127.0.0.1:0 --flood-rate 0 --log-level warn \
    --max-clients 0 "$@" >"$dir/$n.out" 2>"$dir/$n.err" &
  pids="$pids $!"
  PORT=$(wait_port "$dir/$n.out") || { echo "node $n did not start"; exit 1; }
}
run_load() { # port clients senders [rate] -> chatload's report
  timeout 120 "$load" --port "$1" --clients "$2" --senders "$3" \
    --messages "$MESSAGES" --channels "$CHANNELS" --rate "${4:-$RATE}" \
    --timeout 100 2>/dev/null
}

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
  --loglevel warning >/dev/null &
pids="$pids $!"
sleep 0.3

echo "load: $CLIENTS clients, $SENDERS senders x $MESSAGES messages, $CHANNELS channels"
start_node alone
echo "== 1 node, no Redis"; run_load "$PORT" "$CLIENTS" "$SENDERS"
start_node solo --redis "127.0.0.1:$rport" --node-id solo
echo "== 1 node, federated"; run_load "$PORT" "$CLIENTS" "$SENDERS"
start_node a --redis "127.0.0.1:$rport" --node-id a; p0=$PORT
start_node b --redis "127.0.0.1:$rport" --node-id b; p1=$PORT
start_node c --redis "127.0.0.1:$rport" --node-id c; p2=$PORT
echo "== 3 nodes, load spread"
c3=$((CLIENTS / 3)); s3=$((SENDERS / 3))
for p in $p0 $p1 $p2; do
  run_load "$p" "$c3" "$s3" $((RATE / 3)) >"$dir/spread.$p" &
done
wait_all=0
for p in $p0 $p1 $p2; do
  while [ ! -s "$dir/spread.$p" ] && [ $wait_all -lt 1200 ]; do
    sleep 0.1; wait_all=$((wait_all + 1))
  done
done
sleep 0.5
for p in $p0 $p1 $p2; do echo "-- node on port $p"; cat "$dir/spread.$p"; done
cat "$dir"/spread.* | awk '/^delivered/ { for (i = 1; i < NF; i++) if ($(i+1) == "msg/s") s += $i }
  END { printf "spread total: %.0f msg/s delivered\n", s }'
