#!/usr/bin/env python3
"""hark-chatd under abuse, black box: memory bounded by --sendq-hard
whatever a command asks for, each kill counted once; targets limited and
duplicates delivered once; connections per address limited, with an
ERROR line before every refusal, including when descriptors run out; a
few kilobytes per idle client; and the daemon serving normally after
all of it. Run by make check; `test-abuse.py NAME...` runs some."""

import os
import re
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ircclient import (Client, Daemon, check, register, run,  # noqa: E402
                       sanitized, test)

ANY = None


def stats(c, key):
    c.send("STATS")
    # (60 s: under make -j2 check, or ASan, the daemon shares two cores with the
    # federation suites while it sheds 40 attackers' output)
    m = c.expect("249", timeout=60)
    v = re.search(r"\b%s (\d+)" % re.escape(key), m.params[-1])
    return int(v.group(1)) if v else None


def wait_stat(c, key, want, timeout=20):
    end = time.monotonic() + timeout
    while True:
        got = stats(c, key)
        if got == want or time.monotonic() > end:
            return got
        time.sleep(0.1)


def lives(d, nick="alive"):
    """A new client registers, joins and talks: the daemon still serves."""
    a = register(d.port, nick)
    b = register(d.port, nick + "2")
    for x in (a, b):
        x.send("JOIN #alive")
        x.expect("366")
    a.sync()
    b.send("PRIVMSG #alive :still here")
    a.expect("PRIVMSG", ["#alive", "still here"])
    a.close()
    b.close()


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard) if hard != resource.RLIM_INFINITY else n
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@test
def memory_stays_within_sendq_hard_whatever_a_command_asks():
    raise_nofile(4096)
    d = Daemon("--sendq-hard", "65536", "--max-chans-per-client", "0",
               "--flood-rate", "0")
    chans = ",".join("#c%d" % i for i in range(10))
    members = []
    for i in range(100):
        c = Client(d.port)
        c.send("NICK member%03d\r\nUSER m 0 * :m\r\nJOIN %s" % (i, chans))
        members.append(c)
    watch = register(d.port, "watch")
    watch.send("JOIN #c9")
    watch.expect("366")
    # every member in, as the watcher sees
    end = time.monotonic() + 30
    while time.monotonic() < end:
        watch.send("NAMES #c9")
        names = sum(len(m.params[-1].split()) for m in watch.sync()
                    if m.command == "353")
        if names == 101:
            break
        time.sleep(0.1)
    check(names == 101, "%d in #c9" % names)
    for c in members:  # they read nothing more from here on
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    time.sleep(0.5)
    before = d.rss_kb()
    # each attacker asks, without reading, for a few MB of NAMES (the old
    # daemon queued all of it: the sessions, once closing, kept taking)
    attackers = []
    for i in range(40):
        c = Client(d.port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.send("NICK att%02d\r\nUSER a 0 * :a" % i)
        attackers.append(c)
    time.sleep(0.5)
    # (the kernel takes a few MB per socket first: ask for more)
    burst = ("NAMES %s\r\n" % chans).encode() * 1500
    for c in attackers:
        c.sock.setblocking(False)  # (the server stops reading them)
        try:
            c.raw(burst)
        except OSError:
            pass  # full or closed already: that is the point
    kills = wait_stat(watch, "sendq-kills", 40)
    time.sleep(0.5)
    after = d.rss_kb()
    grew = after - before
    print("  rss %d -> %d KB (+%d) for 40 readers asking for ~%d KB each"
          % (before, after, grew, 1500 * 10 * 100 * 12 // 1024))
    check(kills == 40, "sendq-kills %s, want 40 (once each)" % kills)
    # 40 x 64 KB of queue at most, and the allocator's slack
    if sanitized():
        print("  (sanitizer build: RSS is the sanitizer's, not checked)")
    else:
        check(grew < 40 * 64 + 16 * 1024, "grew %d KB" % grew)
    for c in attackers:
        c.close()
    for c in members:
        c.close()
    lives(d)
    watch.close()
    d.stop()


@test
def connections_per_address_are_limited_with_an_error_line():
    d = Daemon()  # 3 per address, loopback (127.0.0.1) exempt
    ok = [Client(d.port, source="127.0.0.2") for _ in range(3)]
    for i, c in enumerate(ok):
        c.nick = "ok%d" % i
        c.send("NICK ok%d\r\nUSER o 0 * :o" % i)
        c.expect("001")
    extra = Client(d.port, source="127.0.0.2")
    m = extra.expect("ERROR")
    check(m.params == ["Closing Link: 127.0.0.2 (Too many connections from "
                       "your IP)"], m)
    check(extra.closed(), "the refused one stays open")
    ok[0].close()
    time.sleep(0.3)
    again = Client(d.port, source="127.0.0.2")  # room again
    again.send("NICK again\r\nUSER a 0 * :a")
    again.expect("001")
    # another address is counted on its own; the exempt one not at all
    mine = [register(d.port, "lo%d" % i) for i in range(8)]
    for c in ok[1:] + [again] + mine:
        c.close()
    d.stop()
    # nobody exempt, 2 per address: loopback too
    d = Daemon("--per-ip-exempt", "", "--max-per-ip", "2")
    a = [register(d.port, "x%d" % i) for i in range(2)]
    c = Client(d.port)
    m = c.expect("ERROR")
    check("Too many connections from your IP" in m.params[0], m)
    for x in a:
        x.close()
    d.stop()


@test
def a_full_server_says_so():
    d = Daemon("--max-clients", "3")
    a = [register(d.port, "f%d" % i) for i in range(3)]
    c = Client(d.port)
    m = c.expect("ERROR")
    check(m.params == ["Closing Link: 127.0.0.1 (Server is full)"], m)
    check(c.closed(), "still open")
    for x in a:
        x.close()
    time.sleep(0.5)
    lives(d, "after")
    d.stop()


def refusals(port, n):
    """Opens n connections; each either registers or hears ERROR, never a
    silent close. Returns (registered clients, refusals)."""
    ok, refused = [], 0
    for i in range(n):
        try:
            c = Client(port)
        except OSError as e:
            raise AssertionError("connect %d: %s" % (i, e))
        c.nick = "fd%d" % i
        c.send("NICK fd%d\r\nUSER f 0 * :f" % i)
        while True:
            line = None
            try:
                line = c.line(5)
            except Exception:
                pass
            check(line is not None, "connection %d dropped without ERROR: %s"
                  % (i, c.seen))
            if " 001 " in line:
                ok.append(c)
                break
            if line.startswith("ERROR :Closing Link"):
                check(c.closed(), "refused but open")
                refused += 1
                c.close()
                break
    return ok, refused


@test
def out_of_descriptors_every_refusal_says_error():
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    # no client limit: the descriptors run out first
    d = Daemon("--max-clients", "0", preexec=limit)
    ok, refused = refusals(d.port, 60)
    print("  %d served, %d refused with ERROR" % (len(ok), refused))
    check(refused > 0 and len(ok) > 20, "%d/%d" % (len(ok), refused))
    for c in ok:
        c.close()
    time.sleep(0.5)
    lives(d)
    d.stop()
    # a client limit above the descriptors: lowered at start, said so
    d = Daemon("--max-clients", "1000", preexec=limit)
    check("--max-clients lowered from 1000 to 24" in d.stderr(), d.stderr())
    ok, refused = refusals(d.port, 30)
    check(len(ok) == 24 and refused == 6, "%d/%d" % (len(ok), refused))
    for c in ok:
        c.close()
    d.stop()


@test
def an_idle_client_costs_a_few_kilobytes():
    raise_nofile(8192)
    d = Daemon("--max-clients", "0", "--flood-rate", "0")

    def connect(first, n):
        cs = []
        for i in range(first, first + n):
            c = Client(d.port)
            c.send("NICK idle%d\r\nUSER i 0 * :i" % i)
            cs.append(c)
        for c in cs:
            c.expect("422", timeout=20)
        return cs

    warm = connect(0, 200)
    time.sleep(0.5)
    before = d.rss_kb()
    n = 2000
    more = connect(200, n)
    time.sleep(0.5)
    after = d.rss_kb()
    per = (after - before) / n
    print("  rss %d -> %d KB: %.2f KB per idle registered client"
          % (before, after, per))
    if sanitized():
        print("  (sanitizer build: RSS is the sanitizer's, not checked)")
    else:
        check(per <= 4.0, "%.2f KB per idle client" % per)
    for c in warm + more:
        c.close()
    d.stop()


@test
def amplification_is_one_delivery_per_distinct_target():
    d = Daemon()
    a = register(d.port, "amp")
    b = register(d.port, "victim")
    b.send("JOIN #v")
    a.send("JOIN #v")
    a.expect("366")
    b.sync()
    a.send("PRIVMSG " + ",".join(["#v"] * 91) + " :x")
    a.sync()
    got = [m for m in b.sync() if m.command == "PRIVMSG"]
    check(len(got) == 1, "%d deliveries" % len(got))
    a.send("NAMES " + ",".join(["#v"] * 168))
    names = [m for m in a.sync() if m.command == "353"]
    check(len(names) == 1, "%d NAMES replies" % len(names))
    a.send("PRIVMSG victim,b1,b2,b3,b4,b5 :y")
    a.expect("407", ["amp", "b4", ANY])
    d.stop()


if __name__ == "__main__":
    run(sys.argv)
