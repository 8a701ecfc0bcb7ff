#!/bin/sh
# A scripted session with a real IRC client from Debian (ii) against
# hark-chatd on 127.0.0.1, port 0. Skipped (77) when ii is not installed.
# Bounded: every wait has a deadline and the daemon is always stopped.
set -u
command -v ii >/dev/null 2>&1 || { echo "SKIP: ii is not installed (apt-get install ii)"; exit 77; }
builddir=${top_builddir:-.}
daemon=$builddir/examples/chatd/hark-chatd
[ -x "$daemon" ] || { echo "SKIP: $daemon not built"; exit 77; }
dir=$(mktemp -d)
pid=; iipid=
cleanup() {
  [ -n "$iipid" ] && kill "$iipid" 2>/dev/null
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid"
  rm -rf "$dir"
}
trap cleanup EXIT
"$daemon" --listen 127.0.0.1:0 --log-level warn >"$dir/out" 2>"$dir/err" &
pid=$!
wait_for() { # file pattern seconds
  i=0
  while [ $i -lt $(($3 * 10)) ]; do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1; i=$((i + 1))
  done
  echo "FAIL: '$2' not in $1 after $3s"; cat "$1" 2>/dev/null; exit 1
}
wait_for "$dir/out" "listening on" 5
port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$dir/out")
ii -s 127.0.0.1 -p "$port" -n iitester -i "$dir/irc" -f "ii test" &
iipid=$!
srv="$dir/irc/127.0.0.1"
i=0; while [ ! -p "$srv/in" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
wait_for "$srv/out" "Welcome" 5
echo "/j #iitest" >"$srv/in"
i=0; while [ ! -p "$srv/#iitest/in" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo "hello from ii" >"$srv/#iitest/in"
echo "/t a topic from ii" >"$srv/#iitest/in"
wait_for "$srv/#iitest/out" "hello from ii" 5
wait_for "$srv/#iitest/out" "a topic from ii" 5
echo "PASS: ii registered, joined, talked and set a topic"
exit 0
