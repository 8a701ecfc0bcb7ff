"""The Python side of hark-chatd's black-box tests: the daemon as a child
process on 127.0.0.1 (port 0), blocking IRC clients with bounded waits,
and a small runner. Standard library only.

Every wait has a deadline; every daemon is stopped by its PID (SIGTERM,
then SIGKILL) and must exit cleanly (status 0)."""

import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

BUILDDIR = os.environ.get("top_builddir", ".")
DAEMON = os.path.join(BUILDDIR, "examples", "chatd", "hark-chatd")
SERVER = "test.hark"


def sanitized():
    """True when the daemon is built with a sanitizer: its RSS then holds
    shadow memory, redzones and a quarantine of freed blocks, and says
    nothing about the daemon's own use."""
    for path in (os.path.join(os.path.dirname(DAEMON), ".libs",
                              os.path.basename(DAEMON)), DAEMON):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if b"__asan_init" in data or b"__tsan_init" in data:
            return True
    return False


def readable(fd, timeout):
    """Whether fd (a file descriptor or a socket) has something to read
    within timeout seconds (poll: descriptors beyond 1024 too)."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(max(timeout, 0) * 1000))


def skip(why):
    print("SKIP: " + why)
    sys.exit(77)


# ---- messages ------------------------------------------------------------


class Message:
    def __init__(self, raw):
        self.raw = raw
        self.tags = {}
        rest = raw
        if rest.startswith("@"):
            tags, _, rest = rest[1:].partition(" ")
            for t in tags.split(";"):
                k, eq, v = t.partition("=")
                self.tags[k] = v if eq else None
        self.prefix = None
        if rest.startswith(":"):
            self.prefix, _, rest = rest[1:].partition(" ")
        self.params = []
        rest = rest.lstrip(" ")
        cmd, _, rest = rest.partition(" ")
        self.command = cmd.upper()
        while rest:
            rest = rest.lstrip(" ")
            if rest.startswith(":"):
                self.params.append(rest[1:])
                break
            p, _, rest = rest.partition(" ")
            if p:
                self.params.append(p)

    @property
    def nick(self):
        return (self.prefix or "").split("!")[0]

    def matches(self, command, params=None, prefix=None):
        if self.command != command:
            return False
        if prefix is not None and not re.match(prefix, self.prefix or ""):
            return False
        if params is None:
            return True
        if len(params) != len(self.params):
            return False
        for want, got in zip(params, self.params):
            if want is None:
                continue
            if isinstance(want, re.Pattern):
                if not want.fullmatch(got):
                    return False
            elif want != got:
                return False
        return True

    def __repr__(self):
        return self.raw


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


# ---- clients -------------------------------------------------------------


class Client:
    _token = 0

    def __init__(self, port, source="127.0.0.1", tls=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock)
        self.buf = b""
        self.seen = []  # everything read, for failure messages
        self.eof = False
        self.nick = None

    def send(self, line):
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def raw(self, data):
        self.sock.sendall(data)

    def line(self, timeout=3.0):
        """The next line (str), or None on timeout; raises Failure at EOF."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                raise Failure("connection closed; last lines: %s" % self.seen[-5:])
            left = end - time.monotonic()
            if left <= 0:
                return None
            if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
                if not readable(self.sock, left):
                    return None
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.eof = True
                continue
            self.buf += data
        raw, _, self.buf = self.buf.partition(b"\n")
        text = raw.rstrip(b"\r").decode("utf-8", "replace")
        self.seen.append(text)
        return text

    def msg(self, timeout=3.0):
        t = self.line(timeout)
        return Message(t) if t is not None else None

    def expect(self, command, params=None, prefix=None, timeout=3.0):
        """Reads until a message matches; fails on timeout or EOF."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            m = self.msg(max(left, 0.01)) if left > 0 else None
            if m is None:
                raise Failure(
                    "%s: no %s %s; last lines: %s"
                    % (self.nick, command, params or "", self.seen[-6:])
                )
            if m.matches(command, params, prefix):
                return m

    def sync(self, timeout=3.0):
        """Everything the server sent before the PONG to a fresh PING."""
        Client._token += 1
        tok = "sync%d" % Client._token
        self.send("PING " + tok)
        got = []
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            m = self.msg(left) if left > 0 else None
            if m is None:
                raise Failure("%s: no PONG %s; last: %s" % (self.nick, tok, self.seen[-6:]))
            if m.command == "PONG" and m.params[-1] == tok:
                return got
            got.append(m)

    def none(self, command=None):
        """Nothing (or no such command) arrives before a PING's PONG."""
        got = self.sync()
        bad = [m for m in got if command is None or m.command == command]
        check(not bad, "%s: unexpected %s" % (self.nick, bad))

    def closed(self, timeout=3.0):
        """True once the server has closed (reading what is left)."""
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                if self.line(end - time.monotonic()) is None:
                    return False
        except Failure:
            return True
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def register(port, nick, caps=(), user=None, real=None, sasl=None, **kw):
    """A registered client; caps are requested first (CAP LS 302)."""
    c = Client(port, **kw)
    c.nick = nick
    if caps or sasl:
        c.send("CAP LS 302")
        c.expect("CAP", [None, "LS", None])
        req = list(caps) + (["sasl"] if sasl else [])
        c.send("CAP REQ :" + " ".join(req))
        c.expect("CAP", [None, "ACK", " ".join(req)])
        if sasl:
            import base64

            blob = base64.b64encode(("\0%s\0%s" % sasl).encode()).decode()
            c.send("AUTHENTICATE PLAIN")
            c.expect("AUTHENTICATE", ["+"])
            c.send("AUTHENTICATE " + blob)
            c.expect("903")
    c.send("NICK " + nick)
    c.send("USER %s 0 * :%s" % (user or nick, real or "Real " + nick))
    if caps or sasl:
        c.send("CAP END")
    c.expect("001", [nick, None])
    c.expect("422")  # no MOTD unless the test gives one
    c.sync()
    return c


# ---- the daemon ------------------------------------------------------------


class Daemon:
    def __init__(self, *args, env=None, preexec=None, expect_fail=False):
        if not os.access(DAEMON, os.X_OK):
            skip("%s not built" % DAEMON)
        self.args = [DAEMON, "--listen", "127.0.0.1:0", "--name", SERVER,
                     "--log-level", "warn"] + list(args)
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=self.err,
            env=env, preexec_fn=preexec)
        self.port = None
        self.tls_port = None
        end = time.monotonic() + 10
        out = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < end and b"connect with" not in out:
            if not readable(fd, 0.2):
                if self.proc.poll() is not None:
                    break
                continue
            data = os.read(fd, 4096)
            if not data:
                break
            out += data
        text = out.decode()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)\n", text)
        if m:
            self.port = int(m.group(1))
        m = re.search(r"TLS on 127\.0\.0\.1:(\d+)", text)
        if m:
            self.tls_port = int(m.group(1))
        if self.port is None and not expect_fail:
            self.proc.kill()
            self.proc.wait()
            raise Failure("daemon did not start: %s" % self.stderr())

    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise Failure("daemon did not stop in 10 s")
        self.proc.stdout.close()
        rc = self.proc.returncode
        check(rc == 0, "daemon exited with %s: %s" % (rc, self.stderr()[-2000:]))


# ---- the runner -----------------------------------------------------------

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def run(argv):
    only = argv[1:]
    failed = 0
    for fn in TESTS:
        if only and fn.__name__ not in only:
            continue
        signal.alarm(120)  # no test runs longer
        t0 = time.monotonic()
        try:
            fn()
            print("PASS %s (%.1f s)" % (fn.__name__, time.monotonic() - t0))
        except Exception as e:  # Failure, or a broken test
            failed += 1
            print("FAIL %s: %s" % (fn.__name__, e))
            if not isinstance(e, Failure):
                traceback.print_exc()
        finally:
            signal.alarm(0)
        sys.stdout.flush()
    print("%d of %d failed" % (failed, len(TESTS)) if failed else "all passed")
    sys.exit(1 if failed else 0)


def _on_alarm(signum, frame):
    raise Failure("timed out (120 s)")


signal.signal(signal.SIGALRM, _on_alarm)


def accounts_file(dirpath, entries):
    """Writes an accounts file of (name, password, oper) entries."""
    lines = []
    for name, password, oper in entries:
        h = subprocess.run([DAEMON, "--hash-password"], input=password.encode(),
                           stdout=subprocess.PIPE, check=True).stdout.decode().strip()
        lines.append("%s %s%s" % (name, h, " oper" if oper else ""))
    path = os.path.join(dirpath, "accounts")
    with open(path, "w") as f:
        f.write("# name hash [oper]\n" + "\n".join(lines) + "\n")
    return path
