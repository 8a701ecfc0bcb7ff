#!/bin/bash
# bench-chat.sh: chat fan-out, hark-chatd against ngircd, inspircd and
# Redis pub/sub, driven by the same hark-chatload with the same clients,
# channels, message counts and rates (issue 5, cases of issue 7).
#
#   make bench-chat            (from the build directory)
#   BUILDDIR=_build bench/bench-chat.sh [--data FILE] [--quick]
#
# Each server is started on a free 127.0.0.1 port with a generated
# configuration in a temporary directory, flood control and penalties
# off, and stopped by its PID afterwards (also on failure or ^C). A
# server that is not installed is named and skipped (bench/install-peers.sh
# installs them). Every run is bounded by hark-chatload --timeout.
# Environment: BUILDDIR (where examples/chatd/ was built; default .),
# CHAT_TIMEOUT (seconds per run, default 30), SERVERS (which of
# "hark-chatd hark-base ngircd inspircd redis" to run), ROUNDS (how many
# times each case runs, servers alternating; default 1), and
# BASELINE=FILE or BASELINE_REV=REV: another hark-chatd ("hark-base") for
# the same cases in the same run, e.g. the daemon of an older revision
# (built by git archive into ${TMPDIR:-/tmp}/hark-chatd-REV, out of the
# tree, once). The last column is the server's CPU time (schedstat,
# from the first message to the last delivery) per delivered message.
set -u

BUILDDIR=${BUILDDIR:-.}
TIMEOUT=${CHAT_TIMEOUT:-30}
ROUNDS=${ROUNDS:-1}
srcdir=$(cd "$(dirname "$0")/.." && pwd)
data=
quick=no
while [ $# -gt 0 ]; do
  case $1 in
  --data) data=$2; shift 2 ;;
  --quick) quick=yes; shift ;;
  *) echo "usage: bench-chat.sh [--data FILE] [--quick]" >&2; exit 2 ;;
  esac
done

# A libtool wrapper runs the real program from .libs; either works.
CHATD=$BUILDDIR/examples/chatd/hark-chatd
LOAD=$BUILDDIR/examples/chatd/hark-chatload
for p in "$CHATD" "$LOAD"; do
  if [ ! -x "$p" ]; then
    echo "bench-chat.sh: no $p: build it first (make), or set BUILDDIR" >&2
    exit 2
  fi
done

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
      { echo "baseline build failed: $b/build.log" >&2; exit 1; }
  fi
fi

# 1,000 clients: each side needs more than 1,000 descriptors.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 2100 ]; then
  echo "bench-chat.sh: ulimit -n is $(ulimit -n): the 1,000-client case" \
    "may fail (needs ~2,100)" >&2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hark-bench-chat.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  pids=()
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p
  for _ in $(seq 100); do
    # below the ephemeral range (32768-): chatload's clients use those
    p=$((10000 + RANDOM % 20000))
    if port_free "$p"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
wait_listen() { # port pid (30 s: a loaded machine starts inspircd slowly)
  for _ in $(seq 300); do
    kill -0 "$2" 2>/dev/null || return 1
    port_free "$1" || return 0
    sleep 0.1
  done
  return 1
}
stop() { # pid
  kill "$1" 2>/dev/null
  for _ in $(seq 50); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  local rest=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
  pids=("${rest[@]}")
}

# ---- servers: start_NAME PORT DIR, in the background ($! is the PID) ---

start_hark() {
  "${HARK_BIN:-$CHATD}" --listen "127.0.0.1:$1" --name bench.hark --max-clients 0 \
    --max-channels 0 --max-chans-per-client 0 --flood-rate 0 \
    --sendq-hard 0 --sendq-soft 0 --ping-interval 0 --register-timeout 0 \
    --log-level error >"$2/log" 2>&1 &
}

start_ngircd() {
  cat >"$2/ngircd.conf" <<EOC
[Global]
	Name = bench.ngircd
	Info = hark bench
	Listen = 127.0.0.1
	Ports = $1
	MotdPhrase = bench
	PidFile = $2/ngircd.pid
[Limits]
	MaxConnections = 0
	MaxConnectionsIP = 0
	MaxJoins = 0
	MaxPenaltyTime = 0
	PingTimeout = 600
	PongTimeout = 600
[Options]
	DNS = no
	Ident = no
	PAM = no
EOC
  ngircd --nodaemon --config "$2/ngircd.conf" >"$2/log" 2>&1 &
}

start_inspircd() {
  cat >"$2/inspircd.conf" <<EOC
<config format="xml">
<server name="bench.inspircd" description="hark bench" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="$1" type="clients">
<pid file="$2/inspircd.pid">
<connect allow="*" timeout="60" pingfreq="600" threshold="1000000"
         commandrate="100000000" fakelag="no" hardsendq="67108864"
         softsendq="67108864" recvq="67108864" localmax="100000"
         globalmax="100000" maxchans="1000" limit="100000" useident="no"
         resolvehostnames="no">
<performance somaxconn="1024" softlimit="100000" netbuffersize="65536">
<limits maxchan="64" maxnick="30">
<channels users="1000">
<security hidesplits="yes" runasuser="" runasgroup="">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default"
     target="$2/inspircd.log">
EOC
  inspircd --nofork --runasroot --config "$2/inspircd.conf" >"$2/log" 2>&1 &
}

start_redis() {
  redis-server --bind 127.0.0.1 --port "$1" --save '' --appendonly no \
    --daemonize no --protected-mode no --maxclients 10000 \
    --client-output-buffer-limit 'pubsub 0 0 0' --dir "$2" \
    >"$2/log" 2>&1 &
}

have() { command -v "$1" >/dev/null 2>&1; }

# ---- cases (issue 7's Performance section) --------------------------------
#  name                clients channels senders messages rate
cases='1ch-100cl 100 1 10 1000 0
1ch-1000cl 1000 1 10 200 0
100ch-10cl 1000 100 0 20 0
paced-500/s 100 1 10 100 500'
if [ $quick = yes ]; then
  cases='1ch-100cl 100 1 10 200 0
1ch-1000cl 1000 1 10 50 0
100ch-10cl 1000 100 0 5 0'
fi

servers=${SERVERS:-hark-chatd ngircd inspircd redis}
if [ -n "$BASELINE" ] && [ -z "${SERVERS:-}" ]; then
  servers="hark-chatd hark-base ngircd inspircd redis"
fi
# pid -> its CPU time in ns: schedstat's, exact (utime+stime counts
# clock ticks, too coarse for runs of a few hundred ms)
cpu_ns() {
  if [ -r "/proc/$1/schedstat" ]; then
    awk '{ print $1 }' "/proc/$1/schedstat"
  else
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($14 + $15) * 1e9 / hz }' \
      "/proc/$1/stat" 2>/dev/null || echo 0
  fi
}
if [ -n "$data" ]; then
  echo "# server case delivered_msgs_per_s p50_us p99_us cpu_ns_per_delivery" >"$data"
fi

echo "hark bench-chat: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
printf '%-11s %-12s %14s %10s %10s %9s  %s\n' server case "delivered/s" "p50 us" \
  "p99 us" "CPU ns/d" "clients x channels, senders x messages"
failed=0
round=1
while [ $round -le "$ROUNDS" ]; do
[ "$ROUNDS" -gt 1 ] && echo "-- round $round"
for srv in $servers; do
  HARK_BIN=
  case $srv in
  hark-chatd) bin=$CHATD start=start_hark ;;
  hark-base) bin=$BASELINE start=start_hark HARK_BIN=$BASELINE ;;
  ngircd) bin=ngircd start=start_ngircd ;;
  inspircd) bin=inspircd start=start_inspircd ;;
  redis) bin=redis-server start=start_redis ;;
  esac
  if ! have "$bin"; then
    printf '%-11s skipped (not installed: %s)\n' "$srv" "$bin"
    continue
  fi
  while read -r name clients channels senders messages rate; do
    # one fresh server per case: no state carried over
    dir="$tmp/$srv-$name"
    dir=${dir//\//_}
    dir="$tmp/$(basename "$dir")"
    mkdir -p "$dir"
    port=$(pick_port) || { echo "bench-chat.sh: no free port" >&2; exit 1; }
    $start "$port" "$dir"
    pid=$!
    pids+=("$pid")
    if ! wait_listen "$port" "$pid"; then
      printf '%-11s %-12s FAILED to start (see below)\n' "$srv" "$name"
      tail -n 5 "$dir"/*log* >&2
      stop "$pid"
      failed=$((failed + 1))
      continue
    fi
    extra=
    [ $srv = redis ] && extra=--redis
    "$LOAD" $extra --port "$port" --clients "$clients" \
      --channels "$channels" --senders "$senders" --messages "$messages" \
      --rate "$rate" --timeout "$TIMEOUT" >"$dir/out" 2>"$dir/err" &
    lpid=$!
    pids+=("$lpid")
    i=0 # the server's CPU from the first message on, not the joins
    until grep -q "ready, sending" "$dir/err" 2>/dev/null; do
      kill -0 "$lpid" 2>/dev/null || break
      sleep 0.01
      i=$((i + 1))
      [ $i -lt 6000 ] || break
    done
    t0=$(cpu_ns "$pid")
    wait "$lpid"
    rc=$?
    t1=$(cpu_ns "$pid")
    rest=()
    for p in "${pids[@]}"; do [ "$p" = "$lpid" ] || rest+=("$p"); done
    pids=("${rest[@]}")
    stop "$pid"
    rps=$(sed -n 's/^delivered .*: \([0-9]*\) msg\/s$/\1/p' "$dir/out")
    got=$(sed -n 's/^delivered \([0-9]*\/[0-9]*\) .*/\1/p' "$dir/out")
    p50=$(sed -n 's/^latency p50 \([0-9]*\) us.*/\1/p' "$dir/out")
    p99=$(sed -n 's/^latency .* p99 \([0-9]*\) us.*/\1/p' "$dir/out")
    ndel=${got%%/*}
    cpu=$(awk -v a="$t0" -v b="$t1" -v n="${ndel:-0}" \
      'BEGIN { if (n > 0) printf "%.0f", (b - a) / n; else print "-" }')
    what="$clients x $channels, $([ "$senders" = 0 ] && echo all ||
      echo "$senders") x $messages"
    [ "$rate" != 0 ] && what="$what at $rate msg/s"
    if [ $rc -ne 0 ]; then
      printf '%-11s %-12s %14s %10s %10s  %s: INCOMPLETE (%s delivered)\n' \
        "$srv" "$name" "${rps:--}" "${p50:--}" "${p99:--}" "$what" "${got:-0}"
      grep -v '^\s*$' "$dir/err" | tr '\r' '\n' | grep -v '^chatload: ready' |
        tail -3 >&2
      failed=$((failed + 1))
      continue
    fi
    printf '%-11s %-12s %14s %10s %10s %9s  %s\n' "$srv" "$name" "$rps" "$p50" \
      "$p99" "$cpu" "$what"
    if [ -n "$data" ]; then
      echo "$srv $name $rps $p50 $p99 $cpu" >>"$data"
    fi
  done <<<"$cases"
done
round=$((round + 1))
done
echo
echo "delivered/s: messages delivered to clients per second, first send to"
echo "last delivery, one hark-chatload process on the same machine; p50/p99:"
echo "send-to-delivery latency. IRC senders are members too (they do not get"
echo "their own lines); Redis senders are extra PUBLISH connections."
[ $failed -eq 0 ] || { echo "bench-chat.sh: $failed run(s) failed" >&2; exit 1; }
