#!/usr/bin/env python3
"""hark-chatd, command by command and mode by mode: the numerics and
their parameters as modern.ircdocs.horse and ircv3.net give them, seen by
real TCP clients against the daemon as a child process. Run by make check
(exit 77 when the daemon is not built); `test-irc.py NAME...` runs some."""

import atexit
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ircclient import (SERVER, Client, Daemon, Failure, accounts_file,  # noqa
                       check, register, run, test)

ANY = None
R = re.compile
TMP = tempfile.mkdtemp(prefix="chatd-irc-")
atexit.register(shutil.rmtree, TMP, True)
ACCOUNTS = None


def accounts():
    global ACCOUNTS
    if ACCOUNTS is None:
        ACCOUNTS = accounts_file(TMP, [("boss", "hunter2", True),
                                       ("alice", "wonderland", False)])
    return ACCOUNTS


class daemon:
    """with daemon(args...) as d: ... (stopped, and checked, at the end)"""

    def __init__(self, *args):
        self.args = args

    def __enter__(self):
        self.d = Daemon(*self.args)
        return self.d

    def __exit__(self, kind, value, tb):
        self.d.stop()
        return False


# ---- registration and CAP -----------------------------------------------


@test
def cap_negotiation_ls_req_ack_nak_list_end():
    with daemon("--accounts", accounts()) as d:
        c = Client(d.port)
        c.send("CAP LS")  # 3.1: no values, one line
        m = c.expect("CAP", ["*", "LS", ANY])
        check("=" not in m.params[2], "values in CAP LS 3.1: %s" % m)
        for cap in ("message-tags", "server-time", "echo-message", "batch",
                    "labeled-response", "multi-prefix", "away-notify",
                    "account-notify", "extended-join", "sasl", "cap-notify",
                    "setname", "invite-notify", "userhost-in-names"):
            check(cap in m.params[2].split(), "no %s in %s" % (cap, m))
        c.send("CAP LS 302")
        m = c.expect("CAP", ["*", "LS", ANY])
        check("sasl=PLAIN" in m.params[2].split(), "no sasl=PLAIN: %s" % m)
        c.send("CAP LIST")
        c.expect("CAP", ["*", "LIST", R("cap-notify|")])
        c.send("CAP REQ :foo multi-prefix")  # all or nothing
        c.expect("CAP", ["*", "NAK", "foo multi-prefix"])
        c.send("CAP REQ :multi-prefix server-time")
        c.expect("CAP", ["*", "ACK", "multi-prefix server-time"])
        c.send("CAP REQ :-server-time")
        c.expect("CAP", ["*", "ACK", "-server-time"])
        c.send("CAP LIST")
        m = c.expect("CAP", ["*", "LIST", ANY])
        check(set(m.params[2].split()) == {"cap-notify", "multi-prefix"}, m)
        c.send("CAP FROB")
        c.expect("410", ["*", "FROB", ANY])
        # registration waits for CAP END
        c.send("NICK capper")
        c.send("USER capper 0 * :Cap Per")
        got = c.sync()
        check(not any(x.command == "001" for x in got), "001 before CAP END")
        c.send("CAP END")
        c.expect("001", ["capper", ANY])
        c.close()


@test
def registration_edge_cases():
    with daemon("--password", "letmein") as d:
        c = Client(d.port)
        c.send("NICK a")
        c.send("USER u 0 * :")  # an empty realname is no parameter
        c.expect("461", ["a", "USER", ANY])
        c.send("NICK *")
        c.expect("432", ["a", "*", ANY])
        c.close()
        # a wrong password: told and closed once NICK and USER are in
        c = Client(d.port)
        c.send("PASS wrong")
        check(c.sync() == [], "an answer to PASS before registration")
        c.send("NICK b")
        c.send("USER b 0 * :B")
        c.expect("464", ["b", ANY])
        c.expect("ERROR", [R(r"Closing Link: 127\.0\.0\.1 \(Bad password\)")])
        check(c.closed(), "still open after a bad password")
        c = Client(d.port)
        c.send("PASS letmein")
        c.send("NICK good")
        c.send("USER good 0 * :Good")
        c.expect("001", ["good", ANY])
        c.send("USER again 0 * :x")
        c.expect("462", ["good", ANY])
        c.close()


@test
def isupport_and_welcome_burst():
    with daemon() as d:
        c = Client(d.port)
        c.send("NICK w")
        c.send("USER w 0 * :W")
        c.expect("001", ["w", R("Welcome .* w!w@127.0.0.1")])
        c.expect("002")
        c.expect("003")
        c.expect("004", ["w", SERVER, ANY, ANY, ANY, ANY])
        tokens = {}
        for _ in range(3):
            m = c.expect("005")
            check(len(m.params) <= 15, "more than 13 tokens: %s" % m)
            for t in m.params[1:-1]:
                k, _, v = t.partition("=")
                tokens[k] = v
        for k, v in (("PREFIX", "(ov)@+"), ("CHANTYPES", "#&"),
                     ("CHANMODES", "Ibe,k,l,imnpst"), ("CASEMAPPING", "rfc1459"),
                     ("STATUSMSG", "@+"), ("BOT", "B"), ("MONITOR", "100"),
                     ("ELIST", "CMNTU"), ("EXCEPTS", "e"), ("INVEX", "I"),
                     ("NICKLEN", "30"), ("TOPICLEN", "390"), ("KICKLEN", "255"),
                     ("AWAYLEN", "200"), ("KEYLEN", "32"), ("MODES", "20"),
                     ("CHANLIMIT", "#:50,&:50"), ("CHANNELLEN", "50")):
            check(tokens.get(k) == v, "005 %s=%s, want %s" % (k, tokens.get(k), v))
        targ = dict(x.split(":") for x in tokens["TARGMAX"].split(","))
        check(targ["PRIVMSG"] == "4" and targ["NAMES"] == "10", targ)
        check("WHOX" in tokens, "no WHOX")
        check("UTF8ONLY" in tokens, "no UTF8ONLY")
        check(tokens.get("EXTBAN") == ",m", "EXTBAN=%s" % tokens.get("EXTBAN"))
        for n in ("251", "252", "253", "254", "255", "265", "266", "422"):
            c.expect(n)
        c.send("VERSION")
        c.expect("351", ["w", R("hark-chatd-.*"), SERVER, ANY])
        c.expect("005")
        c.close()


@test
def motd_time_info_admin_help_links():
    path = os.path.join(TMP, "motd")
    with open(path, "w") as f:
        f.write("first line\nsecond line\n")
    with daemon("--motd", path) as d:
        c = Client(d.port)
        c.send("NICK m")
        c.send("USER m 0 * :M")
        c.expect("375", ["m", ANY])
        c.expect("372", ["m", "- first line"])
        c.expect("372", ["m", "- second line"])
        c.expect("376", ["m", ANY])
        c.send("TIME")
        c.expect("391", ["m", SERVER, ANY])
        c.send("INFO")
        c.expect("371", ["m", ANY])
        c.expect("374", ["m", ANY])
        c.send("INFO nowhere.example")
        c.expect("402", ["m", "nowhere.example", ANY])
        c.send("ADMIN")
        for n in ("256", "257", "258", "259"):
            c.expect(n)
        c.send("HELP")
        c.expect("704", ["m", "*", ANY])
        c.expect("706", ["m", "*", ANY])
        c.send("HELPOP privmsg")
        c.expect("704", ["m", "privmsg", ANY])
        c.expect("705", ["m", "privmsg", ANY])
        c.expect("706", ["m", "privmsg", ANY])
        c.send("HELP NOSUCHTHING")
        c.expect("524", ["m", "NOSUCHTHING", ANY])
        c.send("LINKS")
        c.expect("365", ["m", "*", ANY])
        c.close()


@test
def lines_that_are_not_utf8_are_refused():
    """UTF8ONLY (ircv3 utf8-only): a line with bytes that are not UTF-8
    gets FAIL <command> INVALID_UTF8 and does nothing; nobody is sent it."""
    with daemon() as d:
        a = register(d.port, "a", caps=("labeled-response", "batch"))
        b = register(d.port, "b")
        a.send("JOIN #u")
        b.send("JOIN #u")
        b.expect("366")
        a.sync()
        a.send(b"PRIVMSG b :hi\xaa")
        a.expect("FAIL", ["PRIVMSG", "INVALID_UTF8", ANY])
        a.send(b"PRIVMSG #u :caf\xc3")  # a sequence cut short
        a.expect("FAIL", ["PRIVMSG", "INVALID_UTF8", ANY])
        a.send(b"@label=q1 TOPIC #u :\xed\xa0\x80")  # a surrogate
        m = a.expect("FAIL", ["TOPIC", "INVALID_UTF8", ANY])
        check(m.tags.get("label") == "q1", "FAIL without its label: %s" % m)
        b.none("PRIVMSG")
        b.send("PRIVMSG #u :caf\u00e9 ok")
        a.expect("PRIVMSG", ["#u", "caf\u00e9 ok"])
        c = Client(d.port)  # before registration too
        c.send("NICK nu")
        c.send(b"USER u 0 * :i\xe8rc\xe9")
        c.expect("FAIL", ["USER", "INVALID_UTF8", ANY])
        c.send("USER u 0 * :ok")
        c.expect("001", ["nu", ANY])


@test
def ping_quit_and_unknown():
    with daemon() as d:
        c = register(d.port, "p")
        c.send("PING abc")
        c.expect("PONG", [SERVER, "abc"])
        c.send("PING")
        c.expect("409", ["p", ANY])
        c.send("FROBNICATE x")
        c.expect("421", ["p", "FROBNICATE", ANY])
        c.send("QUIT :bye now")
        c.expect("ERROR", [R(r"Closing Link: .*bye now.*")])
        check(c.closed(), "open after QUIT")


# ---- IRCv3 -------------------------------------------------------------


@test
def message_tags_server_time_and_echo():
    with daemon() as d:
        a = register(d.port, "alice", caps=["message-tags", "echo-message"])
        b = register(d.port, "bob", caps=["message-tags"])
        c = register(d.port, "carol")
        t = register(d.port, "tim", caps=["server-time"])
        for x in (a, b, c, t):
            x.send("JOIN #t")
            x.expect("366")
        a.sync()
        b.sync()
        c.sync()
        t.sync()
        a.send("@+draft/reply=abc;server=forged PRIVMSG #t :hi")
        echo = a.expect("PRIVMSG", ["#t", "hi"])
        got = b.expect("PRIVMSG", ["#t", "hi"])
        plain = c.expect("PRIVMSG", ["#t", "hi"])
        timed = t.expect("PRIVMSG", ["#t", "hi"])
        check(got.tags.get("+draft/reply") == "abc", got)
        check("server" not in got.tags, "a server tag relayed: %s" % got)
        check(got.tags.get("msgid") and got.tags["msgid"] == echo.tags.get("msgid"),
              "msgid: %s / %s" % (got, echo))
        check(plain.tags == {}, "tags to a plain client: %s" % plain)
        check(R(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z").fullmatch(
            timed.tags.get("time", "")), "server-time: %s" % timed)
        check("+draft/reply" not in timed.tags, timed)
        # TAGMSG: only to message-tags clients
        a.send("@+typing=active TAGMSG #t")
        a.expect("TAGMSG", ["#t"])
        m = b.expect("TAGMSG", ["#t"])
        check(m.tags.get("+typing") == "active", m)
        c.none()
        t.none()
        # private: echo with the same msgid
        a.send("@+x=1 PRIVMSG bob :psst")
        e = a.expect("PRIVMSG", ["bob", "psst"])
        m = b.expect("PRIVMSG", ["bob", "psst"])
        check(e.tags["msgid"] == m.tags["msgid"] and m.tags.get("+x") == "1", m)
        for x in (a, b, c, t):
            x.close()


@test
def tags_are_limited_to_4096_bytes():
    with daemon() as d:
        a = register(d.port, "alice", caps=["message-tags", "echo-message"])
        b = register(d.port, "bob", caps=["message-tags"])
        a.send("JOIN #l")
        b.send("JOIN #l")
        a.expect("366")
        b.expect("366")
        b.sync()
        ok = "@+big=%s TAGMSG #l" % ("a" * (4096 - 7))
        check(ok.index("TAGMSG") == 4096, "test line")
        a.send(ok)
        m = b.expect("TAGMSG", ["#l"])
        check(len(m.tags["+big"]) == 4089, "tag cut: %d" % len(m.tags["+big"]))
        a.sync()
        a.send("@+big=%s TAGMSG #l" % ("a" * (4096 - 6)))
        a.expect("417", ["alice", ANY])
        b.none()
        a.send("PRIVMSG #l :" + "x" * 600)  # tagless: 512 bytes
        a.expect("417", ["alice", ANY])
        b.none()
        a.send("PRIVMSG #l :still here")
        b.expect("PRIVMSG", ["#l", "still here"])


@test
def labeled_response_ack_single_and_batch():
    with daemon() as d:
        caps = ["labeled-response", "batch", "echo-message", "message-tags"]
        a = register(d.port, "alice", caps=caps)
        b = register(d.port, "bob")
        a.send("@label=one PING x")
        m = a.expect("PONG", [SERVER, "x"])
        check(m.tags.get("label") == "one", m)
        a.send("@label=two PONG x")
        m = a.expect("ACK")
        check(m.tags.get("label") == "two", m)
        a.send("@label=three NOSUCHCOMMAND")
        m = a.expect("421")
        check(m.tags.get("label") == "three", m)
        a.send("@label=four JOIN #lab")
        start = a.expect("BATCH", [R(r"\+[A-Za-z0-9-]+"), "labeled-response"])
        check(start.tags.get("label") == "four", start)
        ref = start.params[0][1:]
        inside = []
        while True:
            m = a.msg()
            check(m is not None, "batch never ended")
            if m.command == "BATCH":
                check(m.params == ["-" + ref], m)
                break
            check(m.tags.get("batch") == ref, "not in the batch: %s" % m)
            inside.append(m.command)
        check(inside[0] == "JOIN" and "353" in inside and "366" in inside, inside)
        # to another user: the echo is labeled, the delivery is not
        a.send("@label=five PRIVMSG bob :hey")
        m = a.expect("PRIVMSG", ["bob", "hey"])
        check(m.tags.get("label") == "five", m)
        m = b.expect("PRIVMSG", ["bob", "hey"])
        check("label" not in m.tags, m)
        a.close()
        b.close()


@test
def multi_prefix_userhost_in_names_and_whox():
    with daemon() as d:
        a = register(d.port, "alice", caps=["multi-prefix", "userhost-in-names"])
        a.send("JOIN #mp")
        a.expect("366")
        a.send("MODE #mp +v alice")
        a.expect("MODE", ["#mp", "+v", "alice"])
        a.send("NAMES #mp")
        a.expect("353", ["alice", "=", "#mp", "@+alice!alice@127.0.0.1"])
        a.expect("366", ["alice", "#mp", ANY])
        a.send("WHO #mp")
        a.expect("352", ["alice", "#mp", "alice", "127.0.0.1", SERVER, "alice",
                         "H@+", "0 Real alice"])
        a.expect("315", ["alice", "#mp", ANY])
        a.send("WHO alice %tcuhnfar,77")
        a.expect("354", ["alice", "77", "*", "alice", "127.0.0.1", "alice",
                         "H", "0", "Real alice"])
        a.close()


@test
def away_and_away_notify():
    with daemon() as d:
        a = register(d.port, "alice", caps=["away-notify"])
        b = register(d.port, "bob")
        a.send("JOIN #aw")
        a.expect("366")
        b.send("AWAY :out to lunch")
        b.expect("306", ["bob", ANY])
        b.send("JOIN #aw")  # who joins away says so
        a.expect("JOIN", ["#aw"], prefix="bob!")
        a.expect("AWAY", ["out to lunch"], prefix="bob!")
        a.send("PRIVMSG bob :there?")
        a.expect("301", ["alice", "bob", "out to lunch"])
        a.send("WHOIS bob")
        a.expect("301", ["alice", "bob", "out to lunch"])
        a.send("USERHOST bob alice")
        a.expect("302", ["alice", "bob=-bob@127.0.0.1 alice=+alice@127.0.0.1"])
        a.send("WHO bob")
        a.expect("352", ["alice", "*", "bob", ANY, SERVER, "bob", "G", ANY])
        b.send("AWAY")
        b.expect("305", ["bob", ANY])
        a.expect("AWAY", [], prefix="bob!")
        a.close()
        b.close()


@test
def sasl_plain_account_notify_and_extended_join():
    with daemon("--accounts", accounts()) as d:
        a = register(d.port, "watcher", caps=["extended-join", "account-notify"])
        a.send("JOIN #acc")
        a.expect("366")
        # a failed attempt, then a good one
        c = Client(d.port)
        c.send("CAP LS 302")
        c.send("CAP REQ :sasl")
        c.expect("CAP", ["*", "ACK", "sasl"])
        c.send("AUTHENTICATE PLAIN")
        c.expect("AUTHENTICATE", ["+"])
        import base64
        c.send("AUTHENTICATE " + base64.b64encode(b"\0alice\0wrong").decode())
        c.expect("904", ["*", ANY])
        c.send("AUTHENTICATE SCRAM-SHA-256")
        c.expect("908", ["*", "PLAIN", ANY])
        c.send("AUTHENTICATE PLAIN")
        c.expect("AUTHENTICATE", ["+"])
        c.send("AUTHENTICATE " + base64.b64encode(b"\0alice\0wonderland").decode())
        c.expect("900", ["*", R(r"\*!\*@127.0.0.1"), "alice", ANY])
        c.expect("903", ["*", ANY])
        c.send("NICK al")
        c.send("USER al 0 * :Alice Liddell")
        c.send("CAP END")
        c.expect("001")
        c.send("JOIN #acc")
        a.expect("JOIN", ["#acc", "alice", "Alice Liddell"], prefix="al!")
        a.send("WHOIS al")
        a.expect("330", ["watcher", "al", "alice", ANY])
        a.send("WHO al %na")
        a.expect("354", ["watcher", "al", "alice"])
        a.close()
        c.close()


@test
def setname_and_invite_notify():
    with daemon() as d:
        a = register(d.port, "alice", caps=["setname", "invite-notify"])
        b = register(d.port, "bob", caps=["setname"])
        c = register(d.port, "carol")
        for x in (a, b, c):
            x.send("JOIN #sn")
            x.expect("366")
        b.send("SETNAME :Robert B")
        b.expect("SETNAME", ["Robert B"], prefix="bob!")
        a.expect("SETNAME", ["Robert B"], prefix="bob!")
        c.none("SETNAME")
        c.send("WHOIS bob")
        c.expect("311", ["carol", "bob", "bob", ANY, "*", "Robert B"])
        b.send("SETNAME :" + "x" * 100)
        b.expect("FAIL", ["SETNAME", "INVALID_REALNAME", ANY])
        d2 = register(d.port, "dave")
        a.send("INVITE dave #sn")
        a.expect("341", ["alice", "dave", "#sn"])
        d2.expect("INVITE", ["dave", "#sn"], prefix="alice!")
        # invite-notify reaches operators that asked; plain members nothing
        c.none("INVITE")
        for x in (a, b, c, d2):
            x.close()


@test
def monitor_and_extended_monitor():
    with daemon() as d:
        w = register(d.port, "watch", caps=["draft/extended-monitor", "away-notify"])
        w.send("MONITOR + bob,*!*@host")
        w.expect("731", ["watch", "*!*@host"])
        w.expect("731", ["watch", "bob"])
        b = register(d.port, "bob")
        w.expect("730", ["watch", "bob!bob@127.0.0.1"])
        b.send("AWAY :afk")
        w.expect("AWAY", ["afk"], prefix="bob!")
        w.send("MONITOR L")
        w.expect("732", ["watch", "bob"])
        w.expect("733", ["watch", ANY])
        w.send("MONITOR S")
        w.expect("730", ["watch", "bob!bob@127.0.0.1"])
        b.send("NICK robert")
        w.expect("731", ["watch", "bob"])
        b.send("NICK bob")
        w.expect("730", ["watch", "bob!bob@127.0.0.1"])
        b.send("QUIT")
        w.expect("731", ["watch", "bob"])
        w.send("MONITOR - bob")
        w.send("MONITOR C")
        w.send("MONITOR L")
        w.expect("733", ["watch", ANY])
        w.send("MONITOR + " + ",".join("n%d" % i for i in range(101)))
        w.expect("734", ["watch", "100", ANY, ANY])
        w.close()


# ---- channels and their modes -------------------------------------------


@test
def channel_flags_query_and_change():
    with daemon() as d:
        a = register(d.port, "op")
        b = register(d.port, "member")
        a.send("JOIN #f")
        a.expect("366")
        a.send("MODE #f")
        a.expect("324", ["op", "#f", "+nt"])
        a.expect("329", ["op", "#f", R(r"\d+")])
        a.send("MODE #f +imps-t")
        a.expect("MODE", ["#f", "+imps-t"], prefix="op!")
        a.send("MODE #f +i")  # nothing changes: nothing said
        a.none("MODE")
        a.send("MODE #f +Z")
        a.expect("472", ["op", "Z", ANY])
        b.send("MODE #f -i")
        b.expect("442", ["member", "#f", ANY])
        a.send("MODE #f -impsn+t")
        a.expect("MODE", ["#f", "-impsn+t"])
        b.send("JOIN #f")
        b.expect("366")
        b.send("MODE #f +m")
        b.expect("482", ["member", "#f", ANY])
        b.send("MODE #nosuch +m")
        b.expect("403", ["member", "#nosuch", ANY])
        a.close()
        b.close()


@test
def key_validation():
    with daemon() as d:
        a = register(d.port, "op")
        b = register(d.port, "out")
        a.send("JOIN #k")
        a.expect("366")
        a.send("MODE #k +k")
        a.expect("461", ["op", "MODE", ANY])
        for bad in ("has space", "a,b", "", "x" * 33):
            a.send("MODE #k +k :" + bad)
            a.expect("696", ["op", "#k", "k", "*", ANY])
        a.send("MODE #k +k sesame")
        a.expect("MODE", ["#k", "+k", "sesame"])
        b.send("JOIN #k")
        b.expect("475", ["out", "#k", ANY])
        b.send("JOIN #k wrong")
        b.expect("475", ["out", "#k", ANY])
        b.send("MODE #k")
        b.expect("324", ["out", "#k", "+ntk"])  # the key only to members
        a.send("MODE #k")
        a.expect("324", ["op", "#k", "+ntk", "sesame"])
        b.send("JOIN #k sesame")
        b.expect("JOIN", ["#k"])
        a.send("MODE #k -k")
        a.expect("MODE", ["#k", "-k", "*"])
        # two keys in one line: the second replaces the first, and the
        # line shows both (the first's text outlives its replacement)
        a.send("MODE #k +k+k first :second")
        a.expect("MODE", ["#k", "+kk", "first", "second"])
        a.send("MODE #k")
        a.expect("324", ["op", "#k", "+ntk", "second"])


@test
def limit_mode():
    with daemon() as d:
        a = register(d.port, "op")
        b = register(d.port, "b")
        c = register(d.port, "c")
        a.send("JOIN #l")
        a.expect("366")
        a.send("MODE #l +l")
        a.expect("461", ["op", "MODE", ANY])
        for bad in ("0", "-1", "abc", ""):
            a.send("MODE #l +l :" + bad)
            a.expect("696", ["op", "#l", "l", ANY, ANY])
        a.send("MODE #l +l 2")
        a.expect("MODE", ["#l", "+l", "2"])
        b.send("JOIN #l")
        b.expect("366")
        c.send("JOIN #l")
        c.expect("471", ["c", "#l", ANY])
        a.send("INVITE c #l")  # an invitation goes past the limit
        a.expect("341")
        c.send("JOIN #l")
        c.expect("366")
        a.send("MODE #l -l")
        a.expect("MODE", ["#l", "-l"])


@test
def moderated_no_external_and_voice():
    with daemon() as d:
        a = register(d.port, "op")
        b = register(d.port, "talker")
        o = register(d.port, "outsider")
        a.send("JOIN #m")
        a.expect("366")
        b.send("JOIN #m")
        b.expect("366")
        a.sync()
        o.send("PRIVMSG #m :from outside")
        o.expect("404", ["outsider", "#m", ANY])
        a.send("MODE #m -n")
        a.expect("MODE", ["#m", "-n"])
        o.send("PRIVMSG #m :now allowed")
        a.expect("PRIVMSG", ["#m", "now allowed"])
        a.send("MODE #m +m")
        a.expect("MODE", ["#m", "+m"])
        b.sync()
        b.send("PRIVMSG #m :quiet?")
        b.expect("404", ["talker", "#m", ANY])
        a.send("MODE #m +v talker")
        b.expect("MODE", ["#m", "+v", "talker"])
        b.send("PRIVMSG #m :voiced")
        a.expect("PRIVMSG", ["#m", "voiced"])
        a.send("MODE #m +v nobody")
        a.expect("401", ["op", "nobody", ANY])
        a.send("MODE #m +o outsider")
        a.expect("441", ["op", "outsider", "#m", ANY])


@test
def topic_lock():
    with daemon() as d:
        a = register(d.port, "op")
        b = register(d.port, "user")
        for x in (a, b):
            x.send("JOIN #tl")
            x.expect("366")
        b.send("TOPIC #tl :mine")
        b.expect("482", ["user", "#tl", ANY])
        a.send("TOPIC #tl :the topic")
        b.expect("TOPIC", ["#tl", "the topic"])
        a.send("TOPIC #tl :the topic")  # unchanged: not sent again
        b.none("TOPIC")
        b.send("TOPIC #tl")
        b.expect("332", ["user", "#tl", "the topic"])
        b.expect("333", ["user", "#tl", "op", R(r"\d+")])
        a.send("MODE #tl -t")
        b.expect("MODE", ["#tl", "-t"])
        b.send("TOPIC #tl :anyone")
        a.expect("TOPIC", ["#tl", "anyone"])


@test
def bans_exceptions_and_invite_exceptions():
    with daemon() as d:
        a = register(d.port, "op")
        b = register(d.port, "Bad", user="bad")
        a.send("JOIN #b")
        a.expect("366")
        a.send("MODE #b +b bad")
        a.expect("MODE", ["#b", "+b", "bad!*@*"])
        a.send("MODE #b +b")
        a.expect("367", ["op", "#b", "bad!*@*", R("op!op@127.0.0.1"), R(r"\d+")])
        a.expect("368", ["op", "#b", ANY])
        b.send("JOIN #b")
        b.expect("474", ["Bad", "#b", ANY])
        a.send("MODE #b +e *!bad@*")
        a.expect("MODE", ["#b", "+e", "*!bad@*"])
        a.send("MODE #b e")
        a.expect("348", ["op", "#b", "*!bad@*", ANY, ANY])
        a.expect("349", ["op", "#b", ANY])
        b.send("JOIN #b")
        b.expect("366")
        b.send("PART #b")
        a.expect("PART", ["#b"], prefix="Bad!")
        a.send("MODE #b -be+i bad!*@* *!bad@*")
        a.expect("MODE", ["#b", "-be+i", "bad!*@*", "*!bad@*"])
        b.send("JOIN #b")
        b.expect("473", ["Bad", "#b", ANY])
        a.send("MODE #b +I Bad!*@*")
        a.expect("MODE", ["#b", "+I", "Bad!*@*"])
        a.send("MODE #b +I")
        a.expect("346", ["op", "#b", "Bad!*@*", ANY, ANY])
        a.expect("347", ["op", "#b", ANY])
        b.send("JOIN #b")
        b.expect("366")
        # a banned member is quiet
        a.send("MODE #b +b bad!*@*")
        a.sync()
        b.send("PRIVMSG #b :can I?")
        b.expect("404", ["Bad", "#b", ANY])


@test
def mute_extban():
    """EXTBAN=,m: +b m:mask lets one join but not speak; +e m:mask or +v
    lift it; 367 lists it as set."""
    with daemon() as d:
        op = register(d.port, "op")
        q = register(d.port, "qux", user="evan")
        op.send("JOIN #m")
        op.expect("366")
        op.send("MODE #m +b m:qux")
        op.expect("MODE", ["#m", "+b", "m:qux!*@*"])
        q.send("JOIN #m")  # a mute is no ban
        q.expect("366", ["qux", "#m", ANY])
        q.send("MODE #m +b")
        q.expect("367", ["qux", "#m", "m:qux!*@*", "op!op@127.0.0.1", R(r"\d+")])
        q.expect("368")
        op.sync()
        q.send("PRIVMSG #m :hi")
        q.expect("404", ["qux", "#m", ANY])
        q.send("NOTICE #m :hi")
        op.none("NOTICE")
        op.send("PRIVMSG #m :ops speak")
        q.expect("PRIVMSG", ["#m", "ops speak"])
        op.send("MODE #m +e m:*!evan@*")
        op.expect("MODE", ["#m", "+e", "m:*!evan@*"])
        q.send("PRIVMSG #m :excepted")
        op.expect("PRIVMSG", ["#m", "excepted"])
        op.send("MODE #m -e+v m:*!evan@* qux")
        op.expect("MODE", ["#m", "-e+v", "m:*!evan@*", "qux"])
        q.send("PRIVMSG #m :voiced")
        op.expect("PRIVMSG", ["#m", "voiced"])
        op.send("MODE #m -v+b qux m:*@127.0.0.1")
        op.expect("MODE", ["#m", "-v+b", "qux", "m:*!*@127.0.0.1"])
        op.send("MODE #m -b m:qux!*@*")
        op.expect("MODE", ["#m", "-b", "m:qux!*@*"])
        q.send("PRIVMSG #m :still muted by host")
        q.expect("404", ["qux", "#m", ANY])
        op.send("MODE #m -b m:*!*@127.0.0.1")
        op.expect("MODE", ["#m", "-b", "m:*!*@127.0.0.1"])
        q.send("PRIVMSG #m :free")
        op.expect("PRIVMSG", ["#m", "free"])


@test
def invite_rules():
    with daemon() as d:
        a = register(d.port, "op")
        b = register(d.port, "guest")
        c = register(d.port, "member")
        a.send("JOIN #inv")
        a.expect("366")
        c.send("JOIN #inv")
        c.expect("366")
        a.send("MODE #inv +i")
        a.expect("MODE", ["#inv", "+i"])
        a.send("INVITE nobody #inv")
        a.expect("401", ["op", "nobody", ANY])
        b.send("INVITE member #inv")
        b.expect("442", ["guest", "#inv", ANY])
        c.send("INVITE guest #inv")  # +i: operators only
        c.expect("482", ["member", "#inv", ANY])
        a.send("INVITE member #inv")
        a.expect("443", ["op", "member", "#inv", ANY])
        b.send("JOIN #inv")
        b.expect("473", ["guest", "#inv", ANY])
        a.send("INVITE guest #inv")
        a.expect("341", ["op", "guest", "#inv"])
        b.expect("INVITE", ["guest", "#inv"], prefix="op!")
        c.none("INVITE")
        b.send("JOIN #inv")
        b.expect("366")
        b.send("PART #inv")
        b.send("JOIN #inv")  # used up
        b.expect("473", ["guest", "#inv", ANY])


@test
def kick_several_and_statusmsg():
    with daemon() as d:
        a = register(d.port, "op")
        u = [register(d.port, n) for n in ("u1", "u2", "u3")]
        for x in [a] + u:
            x.send("JOIN #ks")
            x.expect("366")
        a.send("MODE #ks +v u1")
        a.sync()
        u[2].sync()
        u[1].send("PRIVMSG +#ks :to voices and ops")
        a.expect("PRIVMSG", ["+#ks", "to voices and ops"])
        u[0].expect("PRIVMSG", ["+#ks", "to voices and ops"])
        u[1].send("PRIVMSG @#ks :ops only")
        a.expect("PRIVMSG", ["@#ks", "ops only"])
        u[2].none("PRIVMSG")
        a.send("KICK #ks u1,u2 :out")
        u[2].expect("KICK", ["#ks", "u1", "out"])
        u[2].expect("KICK", ["#ks", "u2", "out"])
        a.send("KICK #ks u3")
        u[2].expect("KICK", ["#ks", "u3", "op"])  # default reason: the kicker


@test
def names_list_and_secret_channels():
    with daemon() as d:
        a = register(d.port, "a")
        b = register(d.port, "b")
        a.send("JOIN #pub,#hid")
        a.expect("366", ["a", "#hid", ANY])
        a.send("MODE #hid +s")
        a.expect("MODE", ["#hid", "+s"])
        b.send("NAMES")
        b.expect("353", ["b", "=", "#pub", "@a"])
        b.expect("366", ["b", "*", ANY])
        b.send("NAMES #pub,#hid")
        b.expect("353", ["b", "=", "#pub", "@a"])
        b.expect("366", ["b", "#pub,#hid", ANY])
        a.send("NAMES #hid")
        a.expect("353", ["a", "@", "#hid", "@a"])
        b.send("LIST")
        b.expect("321")
        b.expect("322", ["b", "#pub", "1", ""])
        b.expect("323")
        b.send("JOIN #two,#three")
        b.expect("366", ["b", "#three", ANY])
        b.sync()
        a.send("JOIN #two")
        a.expect("366", ["a", "#two", ANY])  # (not NAMES #hid's)
        b.send("LIST >1")
        b.expect("322", ["b", "#two", "2", ""])
        b.expect("323")
        b.send("LIST #t*,!#three")
        b.expect("322", ["b", "#two", "2", ""])
        b.expect("323")
        b.send("NAMES " + ",".join("#n%d" % i for i in range(12)))
        b.expect("407", ["b", "#n10", ANY])


def listed(c, query):
    """The channels a LIST answers with, up to its 323."""
    c.send("LIST " + query)
    got = c.sync()
    check([m.command for m in got if m.command != "322"] == ["321", "323"],
          "LIST %s: %s" % (query, got))
    return {m.params[1] for m in got if m.command == "322"}


@test
def list_by_creation_and_topic_time():
    """ELIST=CT: C>n / C<n keep channels created more / less than n
    minutes ago, T>n / T<n by the topic's time; no topic, no T match."""
    with daemon() as d:
        a = register(d.port, "a")
        a.send("JOIN #old,#bare")
        a.expect("366", ["a", "#bare", ANY])
        a.send("TOPIC #old :set before")
        a.expect("TOPIC", ["#old", "set before"])
        time.sleep(1.2)  # #old and #bare are older than 0 minutes from here
        a.send("JOIN #new")
        a.expect("366", ["a", "#new", ANY])
        a.send("TOPIC #new :set now")
        a.expect("TOPIC", ["#new", "set now"])
        every = {"#old", "#bare", "#new"}
        check(listed(a, "C<1") == every, "C<1")
        check(listed(a, "C>1") == set(), "C>1")
        check(listed(a, "C<0") == set(), "C<0")
        check(listed(a, "C>0") == {"#old", "#bare"}, "C>0: %s" % listed(a, "C>0"))
        check(listed(a, "T<1") == {"#old", "#new"}, "T<1")
        check(listed(a, "T>0") == {"#old"}, "T>0: %s" % listed(a, "T>0"))
        check(listed(a, "T>5") == set(), "T>5")
        check(listed(a, "C<1,>0,#n*") == {"#new"}, "C with a mask")


@test
def local_ampersand_channels():
    """CHANTYPES=#&: a '&' channel works as a '#' one (modes, messages,
    NAMES, WHO, CHANNELLEN), with its own CHANLIMIT count."""
    with daemon("--max-chans-per-client", "2") as d:
        a = register(d.port, "a")
        b = register(d.port, "b")
        a.send("JOIN &here")
        a.expect("JOIN", ["&here"])
        a.expect("353", ["a", "=", "&here", "@a"])
        a.expect("366", ["a", "&here", ANY])
        b.send("JOIN &here")
        b.expect("366", ["b", "&here", ANY])
        a.expect("JOIN", ["&here"], prefix=R("b!"))
        b.send("PRIVMSG &here :local")
        a.expect("PRIVMSG", ["&here", "local"])
        a.send("MODE &here +m")
        a.expect("MODE", ["&here", "+m"])
        b.send("PRIVMSG &here :muted")
        b.expect("404", ["b", "&here", ANY])
        a.send("MODE &here")
        a.expect("324", ["a", "&here", "+mnt"])
        b.send("WHO &here")
        b.expect("352", ["b", "&here", ANY, ANY, SERVER, "a", "H@", ANY])
        b.expect("352", ["b", "&here", ANY, ANY, SERVER, "b", "H", ANY])
        b.expect("315", ["b", "&here", ANY])
        b.send("JOIN #one,#two")  # a limit per kind (#:2,&:2)
        b.expect("366", ["b", "#two", ANY])
        b.send("JOIN #three")
        b.expect("405", ["b", "#three", ANY])
        b.send("JOIN &two")
        b.expect("366", ["b", "&two", ANY])
        b.send("JOIN &three")
        b.expect("405", ["b", "&three", ANY])
        a.send("JOIN &" + "x" * 49)  # CHANNELLEN=50 counts the '&'
        a.expect("366", ["a", "&" + "x" * 49, ANY])
        a.send("JOIN &" + "y" * 50)
        a.expect("403", ["a", "&" + "y" * 50, ANY])
        a.send("JOIN &")
        a.expect("403", ["a", "&", ANY])


# ---- users ---------------------------------------------------------------


@test
def who_whois_and_invisible():
    with daemon() as d:
        a = register(d.port, "alice", real="Alice A")
        b = register(d.port, "bobby")
        a.send("MODE alice +i")
        a.expect("MODE", ["alice", "+i"])
        a.send("MODE alice")
        a.expect("221", ["alice", "+i"])
        b.send("WHO ali*")  # +i hides from masks...
        b.expect("315", ["bobby", "ali*", ANY])
        b.send("WHO alice")  # ...not from the nick itself
        b.expect("352", ["bobby", "*", "alice", "127.0.0.1", SERVER, "alice",
                         "H", "0 Alice A"])
        b.expect("315", ["bobby", "alice", ANY])
        b.send("MODE alice -i")
        b.expect("502", ["bobby", ANY])
        a.send("JOIN #w")
        a.expect("366")
        b.send("WHOIS alice")
        b.expect("311", ["bobby", "alice", "alice", "127.0.0.1", "*", "Alice A"])
        b.expect("319", ["bobby", "alice", "@#w"])
        b.expect("312", ["bobby", "alice", SERVER, ANY])
        b.expect("317", ["bobby", "alice", R(r"\d+"), R(r"\d+"), ANY])
        b.expect("318", ["bobby", "alice", ANY])
        b.send("WHOIS nobody")
        b.expect("401", ["bobby", "nobody", ANY])
        b.expect("318", ["bobby", "nobody", ANY])
        a.send("MODE alice +B")
        a.expect("MODE", ["alice", "+B"])
        b.send("WHOIS alice")
        b.expect("335", ["bobby", "alice", ANY])
        b.send("MODE alice +x")
        b.expect("502")
        a.send("MODE alice +x")
        a.expect("501", ["alice", ANY])


@test
def whowas_history():
    with daemon("--whowas", "50") as d:
        a = register(d.port, "asker")
        for ident in ("one", "two", "three"):
            c = register(d.port, "gone", user=ident)
            c.send("QUIT")
            check(c.closed(), "QUIT did not close")
        a.sync()
        a.send("WHOWAS gone")
        a.expect("314", ["asker", "gone", "three", "127.0.0.1", "*", "Real gone"])
        a.expect("312", ["asker", "gone", SERVER, ANY])
        a.expect("314", ["asker", "gone", "two", ANY, "*", ANY])
        a.send("WHOWAS gone 1")
        a.expect("314", ["asker", "gone", "three", ANY, "*", ANY])
        a.expect("312")
        a.expect("369", ["asker", "gone", ANY])
        a.send("WHOWAS never")
        a.expect("406", ["asker", "never", ANY])
        a.expect("369", ["asker", "never", ANY])
        c = register(d.port, "other", user="four")
        c.send("QUIT")
        check(c.closed(), "QUIT did not close")
        a.sync()
        # several nicks: the newest entry of each, newest first, then
        # 406 for a nick without history, and one 369 for the list
        a.send("WHOWAS gone,never,other")
        got = a.sync()
        check([(m.command, m.params[1]) for m in got] ==
              [("314", "other"), ("312", "other"), ("314", "gone"),
               ("312", "gone"), ("406", "never"), ("369", "gone,never,other")],
              "WHOWAS list: %s" % got)
        check(got[2].params[2] == "three", "not the newest of gone: %s" % got)
        a.send("WHOWAS gone,other 2")
        got = [(m.command, m.params[1]) for m in a.sync() if m.command == "314"]
        check(got == [("314", "other"), ("314", "gone"), ("314", "gone")],
              "WHOWAS list with a count: %s" % got)
        a.send("WHOWAS gone -1")
        got = [m.params[2] for m in a.sync() if m.command == "314"]
        check(got == ["three", "two"], "a negative count is no count: %s" % got)
        a.send("WHOWAS")
        a.expect("431", ["asker", ANY])


@test
def lusers_counts():
    with daemon() as d:
        a = register(d.port, "a")
        b = register(d.port, "b")
        b.send("MODE b +i")
        u = Client(d.port)
        u.send("NICK unreg")
        u.sync()
        a.sync()
        a.send("LUSERS")
        a.expect("251", ["a", "There are 1 users and 1 invisible on 1 servers"])
        a.expect("252", ["a", "0", ANY])
        a.expect("253", ["a", "1", ANY])
        a.expect("254", ["a", "0", ANY])
        a.expect("255", ["a", "I have 2 clients and 0 servers"])
        a.expect("265", ["a", "Current local users 2, max 2"])
        a.expect("266", ["a", "Current global users 2, max 2"])


@test
def oper_kill_wallops():
    with daemon("--accounts", accounts()) as d:
        o = register(d.port, "ircop")
        v = register(d.port, "victim")
        w = register(d.port, "wall")
        n = register(d.port, "nowall")
        o.send("OPER boss wrong")
        o.expect("464", ["ircop", ANY])
        o.send("OPER alice wonderland")  # an account, not an operator
        o.expect("464", ["ircop", ANY])
        o.send("KILL victim :no")
        o.expect("481", ["ircop", ANY])
        o.send("WALLOPS :nope")
        o.expect("481", ["ircop", ANY])
        o.send("OPER boss hunter2")
        o.expect("381", ["ircop", ANY])
        o.expect("MODE", ["ircop", "+o"])
        w.send("MODE wall +w")
        w.expect("MODE", ["wall", "+w"])
        o.send("WALLOPS :hear ye")
        w.expect("WALLOPS", ["hear ye"], prefix="ircop!")
        n.none("WALLOPS")
        v.send("JOIN #kv")
        n.send("JOIN #kv")
        n.expect("366")
        o.send("WHOIS ircop")
        o.expect("313", ["ircop", "ircop", ANY])
        o.send("LUSERS")
        o.expect("252", ["ircop", "1", ANY])
        o.send("KILL nobody")
        o.expect("401", ["ircop", "nobody", ANY])
        o.send("KILL victim :spamming")
        v.expect("KILL", ["victim", "spamming"])
        v.expect("ERROR", [R(r".*Killed \(ircop \(spamming\)\).*")])
        check(v.closed(), "a killed client stays")
        n.expect("QUIT", [R(r"Killed \(ircop \(spamming\)\)")], prefix="victim!")
        o.send("MODE ircop -o")
        o.expect("MODE", ["ircop", "-o"])
        o.send("MODE ircop +o")  # only OPER gives it
        o.none("MODE")


@test
def targets_are_limited_and_deduplicated():
    with daemon() as d:
        a = register(d.port, "a")
        b = register(d.port, "b")
        for x in (a, b):
            x.send("JOIN #d")
            x.expect("366")
        b.sync()
        a.send("PRIVMSG " + ",".join(["#d"] * 91) + " :once")
        b.expect("PRIVMSG", ["#d", "once"])
        b.none("PRIVMSG")
        a.send("PRIVMSG #d,b,B,#D :twice")  # two distinct targets
        a.sync()
        got = b.sync()
        check(len([m for m in got if m.command == "PRIVMSG"]) == 2, got)
        a.send("PRIVMSG #d,b,x1,x2,x3,x4 :many")
        a.expect("407", ["a", "x3", ANY])  # (told before the others run)
        a.expect("401", ["a", "x1", ANY])
        a.expect("401", ["a", "x2", ANY])
        a.send("JOIN " + ",".join(["#s"] * 150))
        a.expect("366", ["a", "#s", ANY])
        a.none("JOIN")


@test
def tls_listener_serves_the_same_network():
    cert = os.path.join(TMP, "cert.pem")
    key = os.path.join(TMP, "key.pem")
    import subprocess
    if subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                       "-days", "1", "-subj", "/CN=test.hark", "-keyout", key,
                       "-out", cert], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        print("  (no openssl: TLS not tested)")
        return
    with daemon("--listen-tls", "127.0.0.1:0", "--cert", cert, "--key", key) as d:
        check(d.tls_port, "no TLS port printed")
        s = register(d.tls_port, "secure", tls=True)
        p = register(d.port, "plain")
        for x in (s, p):
            x.send("JOIN #both")
            x.expect("366")
        s.sync()
        p.send("PRIVMSG #both :hello over TLS")
        s.expect("PRIVMSG", ["#both", "hello over TLS"])
        s.send("PRIVMSG #both :" + "y" * 400)
        p.expect("PRIVMSG", ["#both", "y" * 400])
        p.send("WHOIS secure")
        p.expect("671", ["plain", "secure", ANY])
        s.send("QUIT :tls bye")
        p.expect("QUIT", [R(".*tls bye")], prefix="secure!")


@test
def a_daemon_that_cannot_start_says_why_and_exits_1():
    bad = os.path.join(TMP, "bad-accounts")
    with open(bad, "w") as f:
        f.write("boss not-a-hash\n")
    cases = [("--accounts", bad),
             ("--listen-tls", "127.0.0.1:0", "--cert", os.path.join(TMP, "none"),
              "--key", os.path.join(TMP, "none"))]
    for args in cases:
        d = Daemon(*args, expect_fail=True)
        try:
            code = d.proc.wait(10)  # it used to wait for a signal for ever
        except Exception:
            d.proc.kill()
            d.proc.wait()
            raise Failure("%s: still running after 10 s" % (args,))
        check(code == 1, "%s: exit status %s" % (args, code))
        check(d.port is None, "%s: it listened" % (args,))
        check("error" in d.stderr(), "%s: no reason given" % (args,))


if __name__ == "__main__":
    run(sys.argv)
