#!/bin/sh
# irssi, the client the README tells users to connect with, against
# hark-chatd on 127.0.0.1, port 0, with no terminal: irssi runs under
# script(1) with a private --home. Its config autoconnects and autojoins
# #hark; a small Perl script (irssi's own scripting) says a line and sets
# the topic once irssi has seen its own JOIN, and quits when the watcher
# asks it to. The watcher, a plain client (ircclient.py), checks what
# irssi sent: the JOIN, the PRIVMSG, the TOPIC, WHOIS of its USER line,
# and the QUIT with irssi's message; irssi's own log must show the
# watcher's line; and the daemon must then stop cleanly (status 0).
# A first round is plaintext; a second goes through --listen-tls (irssi's
# TLS against the daemon's OpenSSL memory BIOs, and WHOIS then says 671),
# when openssl(1) is installed and the daemon was built with OpenSSL.
#
# Event-driven, not timed: nothing waits for a fixed delay, so a loaded
# machine only makes it slower. Bounded: every wait has a deadline (30 s)
# and irssi runs under timeout(1). Skipped (77) without irssi, script(1)
# or python3.
set -u
skip() { echo "SKIP: $*"; exit 77; }
command -v irssi >/dev/null 2>&1 || skip "irssi is not installed (apt-get install irssi)"
command -v script >/dev/null 2>&1 || skip "script(1) is not installed (util-linux)"
command -v python3 >/dev/null 2>&1 || skip "python3 is not installed"
command -v timeout >/dev/null 2>&1 || skip "timeout(1) is not installed"
here=$(cd "$(dirname "$0")" && pwd)
builddir=${top_builddir:-.}
daemon=$builddir/examples/chatd/hark-chatd
[ -x "$daemon" ] || skip "$daemon not built"

dir=$(mktemp -d "${TMPDIR:-/tmp}/hark-irssi.XXXXXX") || exit 99
pid=; wpid=; ipid=
cleanup() {
  [ -n "$ipid" ] && kill "$ipid" 2>/dev/null
  [ -n "$wpid" ] && kill "$wpid" 2>/dev/null
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() {
  echo "FAIL: $*"
  for f in watch-plain.log irssi-plain.screen watch-tls.log irssi-tls.screen \
    daemon.err; do
    [ -s "$dir/$f" ] || continue
    echo "---- $f"
    # irssi's screen is a terminal stream: keep the text only
    sed 's/\x1b\[[0-9]*;[0-9]*H/\n/g; s/\x1b\[[0-9;?]*[A-Za-z]//g;
      s/\x1b[()][A-Z0-9]//g; s/\x1b[=>]//g' "$dir/$f" | tr -d '\r' |
      grep -v '^ *$' | tail -n 40
  done
  exit 1
}
wait_for() { # file pattern seconds [pid that must stay alive]
  i=0
  while [ $i -lt $(($3 * 10)) ]; do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    [ -z "${4:-}" ] || kill -0 "$4" 2>/dev/null || break
    sleep 0.1; i=$((i + 1))
  done
  fail "'$2' not in $(basename "$1") after $((i / 10)) s"
}

# ---- the daemon, with a TLS listener when it can have one
tls_args=
if command -v openssl >/dev/null 2>&1 &&
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1; then
  tls_args="--listen-tls 127.0.0.1:0 --cert $dir/cert.pem --key $dir/key.pem"
fi
start_daemon() {
  # shellcheck disable=SC2086 # tls_args is several words
  "$daemon" --listen 127.0.0.1:0 --name test.hark --log-level warn $tls_args \
    >"$dir/daemon.out" 2>"$dir/daemon.err" &
  pid=$!
  i=0
  while [ $i -lt 300 ] && ! grep -q "connect with" "$dir/daemon.out"; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1; i=$((i + 1))
  done
}
start_daemon
if [ -n "$tls_args" ] && grep -q "without OpenSSL" "$dir/daemon.err"; then
  wait "$pid"; pid=; tls_args=
  echo "note: hark-chatd was built without OpenSSL: no TLS round"
  start_daemon
fi
wait_for "$dir/daemon.out" "connect with" 30 "$pid"
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/daemon.out")
[ -n "$port" ] || fail "no port in: $(cat "$dir/daemon.out")"
tls_port=$(sed -n 's/.*listening for TLS on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/daemon.out")
[ -z "$tls_args" ] || [ -n "$tls_port" ] || fail "no TLS port in: $(cat "$dir/daemon.out")"

# ---- one round: irssi connects to the plain or the TLS port ($1)
round() {
  mode=$1
  if [ "$mode" = tls ]; then
    irc_port=$tls_port use_tls=yes
  else
    irc_port=$port use_tls=no
  fi

  # The watcher (on the plaintext port): in #hark first (so it is the
  # operator), makes the topic settable by anyone (-t: irssi is no
  # operator), says "ready", then follows irssi's session. It prints
  # "ok: ..." per step and "PASS" last.
  python3 - "$here" "$port" "$mode" >"$dir/watch-$mode.log" 2>&1 <<'EOF' &
import re, signal, sys
sys.path.insert(0, sys.argv[1])
from ircclient import Failure, check, register
port, mode = int(sys.argv[2]), sys.argv[3]
signal.alarm(120)
try:
    w = register(port, "watcher")
    w.send("JOIN #hark")
    w.expect("JOIN", ["#hark"], prefix="watcher!")
    w.send("MODE #hark -t")
    w.expect("MODE", ["#hark", "-t"])
    print("ready", flush=True)
    irssi = r"irssitest!~?irssitest@127\.0\.0\.1$"
    w.expect("JOIN", ["#hark"], prefix=irssi, timeout=30)
    print("ok: irssi joined #hark", flush=True)
    w.expect("PRIVMSG", ["#hark", "hello from irssi"], prefix=irssi, timeout=30)
    print("ok: irssi's line arrived", flush=True)
    w.expect("TOPIC", ["#hark", "a topic from irssi"], prefix=irssi, timeout=30)
    print("ok: irssi set the topic", flush=True)
    w.send("WHOIS irssitest")
    w.expect("311", ["watcher", "irssitest", re.compile("~?irssitest"),
                     "127.0.0.1", "*", "hark test via irssi"], timeout=30)
    whois = []
    while not whois or whois[-1].command != "318":
        m = w.msg(30)
        check(m is not None, "no end of WHOIS; last: %s" % w.seen[-6:])
        whois.append(m)
    secure = any(m.command == "671" for m in whois)
    check(secure == (mode == "tls"),
          "WHOIS says secure: %s, irssi came by %s" % (secure, mode))
    print("ok: WHOIS shows irssi's USER line%s"
          % (" and its TLS connection (671)" if secure else ""), flush=True)
    w.send("PRIVMSG #hark :irssitest: please quit")
    w.expect("QUIT", ["Quit: irssi says bye"], prefix=irssi, timeout=30)
    print("ok: irssi quit with its message", flush=True)
    w.send("QUIT :done")
    w.closed(30)
    print("PASS", flush=True)
except Failure as e:
    print("FAIL:", e, flush=True)
    sys.exit(1)
EOF
  wpid=$!
  wait_for "$dir/watch-$mode.log" "^ready" 30 "$wpid"

  # irssi's home: the server to autoconnect to, #hark to autojoin, and
  # the script that talks (loaded from scripts/autorun at start). irssi's
  # own flood queue (after a burst, one command per 2.2 s) is turned off:
  # it only made the test slower, and the daemon has its own flood
  # control. The certificate is self-signed: not verified.
  home=$dir/home-$mode
  mkdir -p "$home/scripts/autorun"
  cat >"$home/config" <<EOF
servers = (
  { address = "127.0.0.1"; port = "$irc_port"; chatnet = "hark";
    autoconnect = "yes"; use_tls = "$use_tls"; tls_verify = "no"; }
);
chatnets = { hark = { type = "IRC"; }; };
channels = ( { name = "#hark"; chatnet = "hark"; autojoin = "yes"; } );
settings = {
  core = { nick = "irssitest"; user_name = "irssitest";
    real_name = "hark test via irssi"; };
  "irc/core" = { cmd_queue_speed = "0"; cmds_max_at_once = "100"; };
  "fe-common/core" = { autolog = "yes";
    autolog_path = "$dir/log-$mode/\$tag/\$0.log"; };
};
EOF
  cat >"$home/scripts/autorun/hark-test.pl" <<'EOF'
use strict;
use warnings;
use Irssi;
our $VERSION = '1';
our %IRSSI = (name => 'hark-test', description => "hark-chatd's irssi test");
Irssi::signal_add('message join', sub {
  my ($server, $channel, $nick) = @_;
  return unless $nick eq $server->{nick} && lc($channel) eq '#hark';
  $server->command('msg #hark hello from irssi');
  $server->command('topic #hark a topic from irssi');
});
Irssi::signal_add('message public', sub {
  my ($server, $msg, $nick, $address, $target) = @_;
  return unless $msg eq "$server->{nick}: please quit";
  $server->command('quit irssi says bye');
});
EOF

  # script gives irssi a terminal; -e returns irssi's status. If the
  # watcher gives up, irssi is stopped at once (timeout relays the TERM).
  TERM=xterm timeout 60 script -qefc "irssi --home='$home'" /dev/null \
    </dev/null >"$dir/irssi-$mode.screen" 2>&1 &
  ipid=$!
  wait "$wpid"; wrc=$?; wpid=
  if [ $wrc -ne 0 ]; then
    kill "$ipid"; wait "$ipid"; ipid=
    fail "the watcher did not see irssi's session ($mode)"
  fi
  wait "$ipid"; irc=$?; ipid=
  [ $irc -eq 0 ] || fail "irssi exited with status $irc (124: timed out) ($mode)"
  # irssi's own log of #hark: it saw the watcher's request
  grep -q "watcher.*irssitest: please quit" "$dir/log-$mode/hark/#hark.log" \
    2>/dev/null || fail "irssi's log of #hark lacks the watcher's line ($mode)"
  grep -v '^ready$' "$dir/watch-$mode.log" | sed "s/^/$mode: /"
}

round plain
[ -z "$tls_args" ] || round tls

kill -TERM "$pid"; wait "$pid"; drc=$?; pid=
[ $drc -eq 0 ] || fail "hark-chatd exited with status $drc after SIGTERM"
echo "PASS: irssi $(irssi --version | cut -d' ' -f2) connected${tls_args:+ (plain, then TLS)}, joined, talked, set the topic and quit"
exit 0
