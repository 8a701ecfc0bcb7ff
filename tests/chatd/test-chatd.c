/* hark-chatd over loopback: the daemon runs in this process on its own
 * thread and loop (port 0), driven by real TCP clients. Every wait is
 * bounded; every test ends with a clean shutdown (uv_loop_close == 0). */
#include "client.h"

static test_server ts;
static int port;

static void start_with(void (*tweak)(chat_options *o)) {
  memset(&ts, 0, sizeof ts);
  ts_options(&ts.opt);
  if (tweak != NULL)
    tweak(&ts.opt);
  port = ts_start(&ts);
}

static void start(void) { start_with(NULL); }

static void stop(void) {
  ts_stop(&ts);
  ck_assert_uint_eq(hark_live_count(NULL), 0);
}

START_TEST(registration_sends_welcome_isupport_and_no_motd) {
  start();
  client *c = cl_connect(port);
  cl_send(c, "CAP LS 302");
  cl_expect(c, "CAP * LS");
  cl_send(c, "NICK alice");
  cl_send(c, "USER alice 0 * :Alice A");
  /* CAP negotiation began: registration waits for its end */
  cl_send(c, "PING :before-end");
  cl_expect(c, "PONG test.hark :before-end");
  cl_send(c, "CAP END");
  cl_expect(c, ":test.hark 001 alice :Welcome");
  cl_expect(c, " 002 alice ");
  cl_expect(c, " 003 alice ");
  cl_expect(c, " 004 alice test.hark ");
  /* ISUPPORT over several 005s, at most 13 tokens each */
  char isupport[4096] = "";
  for (int i = 0; i < 3; i++) {
    const char *l = cl_expect(c, " 005 alice ");
    /* parameters before the trailing one: prefix, 005, nick, tokens */
    const char *end = strstr(l, " :");
    int words = 0;
    for (const char *p = l; p != NULL && p < end; p = strchr(p + 1, ' '))
      words++;
    ck_assert_int_le(words - 3, 13);
    strncat(isupport, l, sizeof isupport - strlen(isupport) - 1);
  }
  static const char *const want[] = {
      "CHANTYPES=#& ", "NICKLEN=30",
      "CHANNELLEN=50", "CASEMAPPING=rfc1459",
      "PREFIX=(ov)@+", "CHANMODES=Ibe,k,l,imnpst",
      "TARGMAX=",      "MONITOR=100",
      "STATUSMSG=@+",  "WHOX",
      "BOT=B",         "ELIST=CMNTU",
      "UTF8ONLY",      "CHANLIMIT=#:50,&:50 "};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    ck_assert_msg(strstr(isupport, want[i]) != NULL, "no %s in 005", want[i]);
  cl_expect(c, " 251 alice ");
  cl_expect(c, " 266 alice ");
  cl_expect(c, " 422 alice ");
  cl_send(c, "USER again 0 * :x");
  cl_expect(c, " 462 alice ");
  cl_close(c);
  stop();
}
END_TEST

static void with_motd(chat_options *o) {
  static char path[64];
  snprintf(path, sizeof path, "/tmp/chatd-motd-%d", (int)getpid());
  FILE *f = fopen(path, "w");
  fputs("line one\nline two\n", f);
  fclose(f);
  o->motd_path = path;
}

START_TEST(motd_comes_from_a_file) {
  start_with(with_motd);
  client *c = cl_connect(port);
  cl_send(c, "NICK m\r\nUSER m 0 * :m");
  cl_expect(c, " 375 m ");
  cl_expect(c, " 372 m :- line one");
  cl_expect(c, " 372 m :- line two");
  cl_expect(c, " 376 m ");
  cl_close(c);
  unlink(ts.opt.motd_path);
  stop();
}
END_TEST

START_TEST(commands_before_registration_get_451) {
  start();
  client *c = cl_connect(port);
  cl_send(c, "JOIN #a");
  cl_expect(c, " 451 * ");
  cl_send(c, "FROB");
  cl_expect(c, " 451 * ");
  cl_send(c, "USER x");
  cl_expect(c, " 461 * USER ");
  cl_send(c, "NICK");
  cl_expect(c, " 431 ");
  cl_send(c, "NICK 9bad");
  cl_expect(c, " 432 * 9bad ");
  cl_close(c);
  stop();
}
END_TEST

static void short_pings(chat_options *o) {
  o->ping_interval = 1;
  o->ping_timeout = 1;
}

START_TEST(ping_pong_both_ways_and_ping_timeout) {
  start_with(short_pings);
  client *c = cl_register(port, "p");
  cl_send(c, "PING :abc");
  cl_expect(c, ":test.hark PONG test.hark :abc");
  cl_send(c, "PING");
  cl_expect(c, " 409 p ");
  /* idle: the server pings; an answer keeps the client */
  cl_expect_ms(c, "PING :test.hark", 4000, __FILE__, __LINE__);
  cl_send(c, "PONG :test.hark");
  /* then no answer: ping timeout */
  cl_expect_ms(c, "PING :test.hark", 4000, __FILE__, __LINE__);
  cl_expect_ms(c, "Ping timeout", 4000, __FILE__, __LINE__);
  ck_assert_int_eq(cl_line(c, 3000), -1);
  cl_close(c);
  stop();
}
END_TEST

static void short_registration(chat_options *o) { o->register_timeout = 1; }

START_TEST(unregistered_clients_time_out) {
  start_with(short_registration);
  client *c = cl_connect(port);
  cl_expect_ms(c, "Registration timeout", 4000, __FILE__, __LINE__);
  ck_assert_int_eq(cl_line(c, 3000), -1);
  cl_close(c);
  stop();
}
END_TEST

static void with_password(chat_options *o) { o->password = "s3cret"; }

START_TEST(server_password_is_checked) {
  start_with(with_password);
  client *c = cl_connect(port);
  /* a wrong password is told, and the connection closed, once the client
   * has sent all it registers with */
  cl_send(c, "PASS wrong");
  cl_sync(c);
  cl_send(c, "NICK n\r\nUSER n 0 * :n");
  cl_expect(c, " 464 ");
  cl_expect(c, "ERROR :Closing Link: 127.0.0.1 (Bad password)");
  ck_assert_int_eq(cl_line(c, 3000), -1);
  cl_close(c);
  c = cl_connect(port);
  cl_send(c, "NICK n\r\nUSER n 0 * :n");
  cl_expect(c, " 464 ");
  cl_close(c);
  c = cl_connect(port);
  cl_send(c, "PASS s3cret\r\nNICK n\r\nUSER n 0 * :n");
  cl_expect(c, " 001 n ");
  cl_close(c);
  stop();
}
END_TEST

START_TEST(join_privmsg_notice_part_and_listings) {
  start();
  client *a = cl_register(port, "alice"), *b = cl_register(port, "bob");
  cl_send(a, "JOIN #one,#two");
  cl_expect(a, ":alice!alice@127.0.0.1 JOIN #one");
  cl_expect(a, " 353 alice = #one :@alice");
  cl_expect(a, " 366 alice #one ");
  cl_expect(a, "JOIN #two");
  cl_send(b, "JOIN #ONE");
  cl_expect(b, "JOIN #one");
  cl_expect(b, " 353 bob = #one :@alice bob");
  cl_expect(a, ":bob!bob@127.0.0.1 JOIN #one");
  cl_send(a, "PRIVMSG #one :hello, bob");
  cl_expect(b, ":alice!alice@127.0.0.1 PRIVMSG #one :hello, bob");
  cl_send(b, "NOTICE #one :notice this");
  cl_expect(a, ":bob!bob@127.0.0.1 NOTICE #one :notice this");
  cl_send(a, "PRIVMSG BOB :private");
  cl_expect(b, ":alice!alice@127.0.0.1 PRIVMSG bob :private");
  cl_send(a, "NOTICE bob :psst");
  cl_expect(b, "NOTICE bob :psst");
  /* the sender never gets its own message back */
  cl_sync(a);
  cl_send(b, "TOPIC #one");
  cl_expect(b, " 331 bob #one ");
  cl_send(b, "TOPIC #one :new topic");
  cl_expect(b, " 482 bob #one "); /* +t: channels start +nt */
  cl_send(a, "MODE #one -t");
  cl_expect(b, ":alice!alice@127.0.0.1 MODE #one -t");
  cl_send(b, "TOPIC #one :new topic");
  cl_expect(a, ":bob!bob@127.0.0.1 TOPIC #one :new topic");
  cl_expect(b, "TOPIC #one :new topic");
  cl_send(a, "TOPIC #one");
  cl_expect(a, " 332 alice #one :new topic");
  cl_send(a, "NAMES #one");
  cl_expect(a, " 353 alice = #one :");
  cl_expect(a, " 366 alice #one ");
  cl_send(a, "LIST");
  cl_expect(a, " 321 alice ");
  cl_expect(a, " 322 alice #");
  cl_expect(a, " 322 alice #");
  cl_expect(a, " 323 alice ");
  cl_send(a, "WHO #one");
  cl_expect(a, " 352 alice #one ");
  cl_expect(a, " 352 alice #one ");
  cl_expect(a, " 315 alice #one ");
  cl_send(b, "PART #one :later");
  cl_expect(a, ":bob!bob@127.0.0.1 PART #one :later");
  cl_expect(b, "PART #one :later");
  cl_send(b, "PART #one");
  cl_expect(b, " 442 bob #one ");
  cl_send(b, "PART #nowhere");
  cl_expect(b, " 403 bob #nowhere ");
  cl_send(b, "PRIVMSG #two :outside");
  cl_expect(b, " 404 bob #two ");
  cl_send(b, "PRIVMSG #nowhere :x");
  cl_expect(b, " 401 bob #nowhere ");
  cl_send(b, "PRIVMSG nobody :x");
  cl_expect(b, " 401 bob nobody ");
  cl_send(b, "PRIVMSG");
  cl_expect(b, " 411 bob ");
  cl_send(b, "PRIVMSG alice");
  cl_expect(b, " 412 bob ");
  cl_send(b, "PRIVMSG alice :");
  cl_expect(b, " 412 bob ");
  cl_send(b, "FROBNICATE");
  cl_expect(b, " 421 bob FROBNICATE ");
  cl_send(b, "JOIN");
  cl_expect(b, " 461 bob JOIN ");
  cl_send(b, "JOIN bad");
  cl_expect(b, " 403 bob bad ");
  cl_expect_none(a, "outside", 100);
  cl_close(a);
  cl_close(b);
  stop();
}
END_TEST

START_TEST(keys_and_no_outside_messages) {
  start();
  client *op = cl_register(port, "op"), *in = cl_register(port, "in"),
         *out = cl_register(port, "out");
  cl_send(op, "JOIN #vault");
  cl_expect(op, " 366 op #vault ");
  cl_send(op, "MODE #vault +k hunter2");
  cl_expect(op, ":op!op@127.0.0.1 MODE #vault +k hunter2");
  cl_send(out, "JOIN #vault");
  cl_expect(out, " 475 out #vault ");
  cl_send(out, "JOIN #vault wrong");
  cl_expect(out, " 475 out #vault ");
  cl_send(in, "JOIN #vault hunter2");
  cl_expect(in, " 366 in #vault ");
  cl_send(in, "MODE #vault -k");
  cl_expect(in, " 482 in #vault ");
  cl_send(out, "MODE #vault +k x");
  cl_expect(out, " 442 out #vault ");
  cl_send(out, "PRIVMSG #vault :let me in");
  cl_expect(out, " 404 out #vault ");
  cl_send(out, "NAMES #vault");
  const char *l = cl_expect(out, " 366 out #vault ");
  (void)l;
  cl_send(out, "TOPIC #vault"); /* a key hides nothing but the key */
  cl_expect(out, " 331 out #vault ");
  cl_send(op, "PRIVMSG #vault :secret words");
  cl_expect(in, "secret words");
  cl_send(op, "MODE #vault +o out");
  cl_expect(op, " 441 op out #vault ");
  cl_send(op, "MODE #vault +o ghost");
  cl_expect(op, " 401 op ghost ");
  cl_send(op, "MODE #vault +x");
  cl_expect(op, " 472 op x ");
  cl_send(op, "MODE #vault");
  cl_expect(op, " 324 op #vault +ntk hunter2");
  cl_send(out, "MODE #vault");
  cl_expect(out, " 324 out #vault +ntk");
  cl_send(op, "MODE #vault +o in");
  cl_expect(in, "MODE #vault +o in");
  cl_send(in, "MODE #vault -k");
  cl_expect(op, "MODE #vault -k");
  cl_send(out, "JOIN #vault");
  cl_expect(out, " 366 out #vault ");
  cl_send(op, "PRIVMSG #vault :now public");
  cl_expect(out, "now public");
  /* the outsider saw nothing before it joined */
  cl_close(op);
  cl_close(in);
  cl_close(out);
  stop();
}
END_TEST

START_TEST(outsider_never_sees_channel_traffic) {
  start();
  client *a = cl_register(port, "a"), *b = cl_register(port, "b"),
         *o = cl_register(port, "o");
  cl_send(a, "JOIN #k");
  cl_expect(a, " 366 ");
  cl_send(a, "MODE #k +sk key");
  cl_expect(a, "MODE #k +sk key");
  cl_send(b, "JOIN #k key");
  cl_expect(b, " 366 ");
  cl_send(o, "JOIN #k");
  cl_expect(o, " 475 ");
  for (int i = 0; i < 20; i++)
    cl_send(a, "PRIVMSG #k :m%d", i);
  cl_send(b, "TOPIC #k :t");
  cl_send(b, "NICK bb");
  bool nick = false, last = false;
  while (!(nick && last)) {
    ck_assert_int_eq(cl_line(b, 5000), 1);
    nick = nick || strstr(b->line, "NICK :bb") != NULL;
    last = last || strstr(b->line, "PRIVMSG #k :m19") != NULL;
  }
  cl_send(o, "LIST");
  cl_expect_none(o, "#k", 300);
  cl_close(a);
  cl_close(b);
  cl_close(o);
  stop();
}
END_TEST

START_TEST(nick_collisions_are_refused_case_insensitively) {
  start();
  client *a = cl_register(port, "Al[x]");
  client *b = cl_connect(port);
  cl_send(b, "NICK al{X}");
  cl_expect(b, " 433 * al{X} ");
  cl_send(b, "NICK bee");
  cl_send(b, "USER bee 0 * :b");
  cl_expect(b, " 001 bee ");
  cl_send(b, "NICK AL[X]");
  cl_expect(b, " 433 bee AL[X] ");
  cl_send(a, "NICK al[x]"); /* a case change of one's own nick is fine */
  cl_expect(a, "NICK :al[x]");
  cl_close(a);
  /* the nick is free again once its owner is gone */
  cl_sync(b);
  for (int i = 0; i < 100; i++) {
    cl_send(b, "NICK al[x]");
    if (cl_line(b, 2000) == 1 && strstr(b->line, "NICK :al[x]"))
      break;
    usleep(20000);
  }
  ck_assert_ptr_nonnull(strstr(b->line, "NICK :al[x]"));
  cl_close(b);
  stop();
}
END_TEST

START_TEST(quit_and_nick_reach_each_peer_once) {
  start();
  client *a = cl_register(port, "a"), *b = cl_register(port, "b"),
         *c = cl_register(port, "c");
  cl_send(a, "JOIN #x,#y");
  cl_expect(a, " 366 a #y ");
  cl_send(b, "JOIN #x,#y");
  cl_expect(b, " 366 b #y ");
  cl_send(c, "JOIN #y");
  cl_expect(c, " 366 c #y ");
  cl_send(b, "NICK bee");
  cl_expect(b, ":b!b@127.0.0.1 NICK :bee");
  cl_expect(a, ":b!b@127.0.0.1 NICK :bee");
  cl_expect(c, ":b!b@127.0.0.1 NICK :bee");
  cl_send(b, "QUIT :gone fishing");
  cl_expect(b, "ERROR :Closing Link");
  cl_expect(a, ":bee!b@127.0.0.1 QUIT :Quit: gone fishing");
  cl_expect(c, ":bee!b@127.0.0.1 QUIT :Quit: gone fishing");
  /* exactly once each, though a shares two channels with b */
  cl_sync(a);
  cl_send(a, "NAMES #x");
  const char *l = cl_expect(a, " 353 a = #x :");
  ck_assert_ptr_null(strstr(l, "bee"));
  cl_close(a);
  cl_close(b);
  cl_close(c);
  stop();
}
END_TEST

START_TEST(quit_line_is_not_duplicated) {
  start();
  client *a = cl_register(port, "a"), *b = cl_register(port, "b");
  cl_send(a, "JOIN #x,#y,#z");
  cl_expect(a, " 366 a #z ");
  cl_send(b, "JOIN #x,#y,#z");
  cl_expect(b, " 366 b #z ");
  cl_send(b, "NICK b2");
  cl_send(b, "QUIT");
  int nicks = 0, quits = 0;
  cl_expect(b, "ERROR :Closing Link");
  while (cl_line(a, 300) == 1) {
    nicks += strstr(a->line, " NICK ") != NULL;
    quits += strstr(a->line, " QUIT ") != NULL;
  }
  ck_assert_int_eq(nicks, 1);
  ck_assert_int_eq(quits, 1);
  cl_close(a);
  cl_close(b);
  stop();
}
END_TEST

START_TEST(lines_over_512_bytes_are_refused_and_relays_capped) {
  start();
  client *a = cl_register(port, "a"), *b = cl_register(port, "b");
  cl_send(a, "JOIN #c");
  cl_expect(a, " 366 ");
  cl_send(b, "JOIN #c");
  cl_expect(b, " 366 ");
  char big[2048];
  memset(big, 'y', sizeof big);
  memcpy(big, "PRIVMSG #c :", 12);
  /* 600 bytes and 2 KB: too long, reported, dropped, connection kept */
  cl_raw(a, big, 600);
  cl_raw(a, "\r\n", 2);
  cl_expect(a, " 417 a ");
  cl_raw(a, big, sizeof big);
  cl_raw(a, "\r\n", 2);
  cl_expect(a, " 417 a ");
  /* 512 exactly is fine, and what b gets is at most 512 too */
  cl_raw(a, big, 510);
  cl_raw(a, "\r\n", 2);
  const char *l = cl_expect(b, "PRIVMSG #c :yyy");
  ck_assert_uint_le(strlen(l), 512);
  ck_assert(l[strlen(l) - 2] == '\r');
  cl_send(a, "PRIVMSG #c :still here");
  cl_expect(b, "still here");
  cl_close(a);
  cl_close(b);
  stop();
}
END_TEST

START_TEST(garbage_and_binary_never_break_the_server) {
  start();
  client *g = cl_connect(port), *a = cl_register(port, "a");
  unsigned seed = 7;
  char junk[4096];
  for (int round = 0; round < 50; round++) {
    for (size_t i = 0; i < sizeof junk; i++)
      junk[i] = (char)rand_r(&seed);
    send(g->fd, junk, sizeof junk, MSG_NOSIGNAL);
  }
  static const char odd[] = "\r\n\n  \r\n:only.prefix\r\nPRIVMSG\0x\r\n";
  cl_raw(a, odd, sizeof odd - 1);
  cl_send(a, ":pfx PING :ok");
  cl_expect(a, "PONG test.hark :ok");
  cl_close(g);
  cl_close(a);
  stop();
}
END_TEST

static void small_sendq(chat_options *o) {
  o->sendq_hard = 128 * 1024;
  o->sendq_soft = 0;
}

START_TEST(slow_reader_is_dropped_while_others_keep_up) {
  start_with(small_sendq);
  client *slow = cl_connect(port);
  int small = 4096;
  setsockopt(slow->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  cl_send(slow, "NICK slow\r\nUSER s 0 * :s\r\nJOIN #flood");
  client *fast = cl_register(port, "fast"), *src = cl_register(port, "src");
  cl_send(fast, "JOIN #flood");
  cl_expect(fast, " 366 ");
  cl_send(src, "JOIN #flood");
  cl_expect(src, " 366 ");
  char text[400];
  memset(text, 'z', sizeof text - 1);
  text[sizeof text - 1] = '\0';
  /* enough to fill the kernel's buffers (4 MB on loopback) and the queue */
  int n = 20000, got = 0, quit = 0;
#define TAKE(c)                                                                \
  (got += strstr((c)->line, "PRIVMSG #flood") != NULL,                         \
   quit += strstr((c)->line, "slow!s@127.0.0.1 QUIT :SendQ exceeded") != NULL)
  for (int i = 0; i < n; i++) {
    cl_send(src, "PRIVMSG #flood :%d %s", i, text);
    while (cl_line(fast, 0) == 1)
      TAKE(fast);
  }
  while ((got < n || !quit) && cl_line(fast, 5000) == 1)
    TAKE(fast);
#undef TAKE
  ck_assert_int_eq(got, n);
  ck_assert_int_eq(quit, 1);
  cl_wait_stat(fast, "sendq-kills", 1, 5000);
  cl_close(slow);
  cl_close(fast);
  cl_close(src);
  stop();
}
END_TEST

START_TEST(abrupt_disconnects_mid_broadcast) {
  start();
  int n = scaled(60);
  client **cs = calloc((size_t)n, sizeof *cs);
  for (int i = 0; i < n; i++) {
    char nick[16];
    snprintf(nick, sizeof nick, "u%d", i);
    cs[i] = cl_register(port, nick);
    cl_send(cs[i], "JOIN #storm");
    cl_expect(cs[i], " 366 ");
  }
  client *src = cl_register(port, "src");
  cl_send(src, "JOIN #storm");
  cl_expect(src, " 366 ");
  for (int i = 0; i < 300; i++) {
    cl_send(src, "PRIVMSG #storm :burst %d", i);
    if (i % 10 == 0 && i / 10 < n / 2)
      cl_reset(cs[i / 10]), cs[i / 10] = NULL; /* one in every ten */
  }
  /* the survivors get everything */
  for (int i = n / 2; i < n; i++)
    cl_expect(cs[i], "PRIVMSG #storm :burst 299");
  cl_wait_stat(src, "clients", n - n / 2 + 1, 5000);
  for (int i = 0; i < n; i++)
    cl_close(cs[i]);
  free(cs);
  cl_close(src);
  stop();
}
END_TEST

START_TEST(churn_of_clients_leaves_no_objects_behind) {
  start();
  size_t base = hark_live_count(NULL);
  client *watch = cl_register(port, "watch");
  cl_send(watch, "JOIN #lobby");
  cl_expect(watch, " 366 ");
  int total = scaled(1000), wave = 100 < total ? 100 : total;
  client **cs = calloc((size_t)wave, sizeof *cs);
  for (int done = 0; done < total; done += wave) {
    for (int i = 0; i < wave; i++) {
      char nick[16];
      snprintf(nick, sizeof nick, "c%d", done + i);
      cs[i] = cl_connect(port);
      cl_send(cs[i], "NICK %s\r\nUSER x 0 * :x\r\nJOIN #lobby,#room%d", nick,
              i % 7);
    }
    for (int i = 0; i < wave; i++) {
      cl_expect(cs[i], " 366 ");
      cl_expect(cs[i], " 366 ");
      if (i % 3 == 0)
        cl_send(cs[i], "PRIVMSG #lobby :hi from %d", i);
    }
    for (int i = 0; i < wave; i++) {
      if (i % 3 == 0)
        cl_send(cs[i], "QUIT :bye");
      else if (i % 3 == 1)
        cl_send(cs[i], "PART #lobby");
      if (i % 3 == 2)
        cl_reset(cs[i]);
      else
        cl_close(cs[i]);
    }
  }
  free(cs);
  cl_wait_stat(watch, "clients", 1, 20000);
  cl_wait_stat(watch, "channels", 1, 5000);
  /* one session and one channel left besides the daemon's own objects */
  for (int i = 0; i < 250 && hark_live_count(NULL) != base + 2; i++)
    usleep(20000);
  ck_assert_uint_eq(hark_live_count("chat_session"), 1);
  ck_assert_uint_eq(hark_live_count("chat_channel"), 1);
  ck_assert_uint_eq(hark_live_count(NULL), base + 2);
  cl_close(watch);
  client *last = cl_register(port, "last");
  cl_wait_stat(last, "channels", 0, 5000);
  cl_close(last);
  stop();
}
END_TEST

START_TEST(shutdown_tells_clients_and_frees_everything) {
  start();
  client *a = cl_register(port, "a"), *b = cl_register(port, "b");
  cl_send(a, "JOIN #x");
  cl_expect(a, " 366 ");
  cl_send(b, "JOIN #x");
  cl_expect(b, " 366 ");
  ck_assert_uint_eq(hark_live_count("chat_session"), 2);
  ts_stop(&ts);
  cl_expect(a, "ERROR :Closing Link: 127.0.0.1 (Server shutting down)");
  cl_expect(b, "ERROR :Closing Link");
  ck_assert_int_eq(cl_line(a, 2000), -1);
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  cl_close(a);
  cl_close(b);
}
END_TEST

static void flood(chat_options *o) {
  o->flood_rate = 20;
  o->flood_burst = 5;
}

START_TEST(flood_control_slows_a_client_down) {
  start_with(flood);
  client *a = cl_register(port, "a"); /* registration took 2 tokens */
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < 23; i++)
    cl_send(a, "PING :f%d", i);
  cl_expect(a, ":f22");
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  ck_assert_msg(secs > 0.8 && secs < 3, "took %.2fs", secs);
  cl_close(a);
  stop();
}
END_TEST

static void tiny_limits(chat_options *o) {
  o->max_clients = 2;
  o->max_chans_per_client = 1;
  o->max_channels = 1;
}

START_TEST(client_and_channel_limits_hold) {
  start_with(tiny_limits);
  client *a = cl_register(port, "a"), *b = cl_register(port, "b");
  client *c = cl_connect(port);
  cl_expect(c, "Server is full");
  cl_send(a, "JOIN #one");
  cl_expect(a, " 366 ");
  cl_send(a, "JOIN #two");
  cl_expect(a, " 405 a #two ");
  cl_send(b, "JOIN #two");
  cl_expect(b, " 405 b #two ");
  cl_close(a);
  cl_close(b);
  cl_close(c);
  stop();
}
END_TEST

START_TEST(kick_is_for_operators_and_reaches_every_member) {
  start();
  client *op = cl_register(port, "op"), *v = cl_register(port, "v");
  client *w = cl_register(port, "w");
  cl_send(op, "JOIN #k");
  cl_expect(op, " 366 ");
  cl_send(v, "JOIN #k");
  cl_expect(v, " 366 ");
  cl_send(w, "JOIN #k");
  cl_expect(w, " 366 ");
  cl_send(v, "KICK #k w");
  cl_expect(v, " 482 v #k :You're not channel operator");
  cl_send(op, "KICK #k");
  cl_expect(op, " 461 op KICK :Not enough parameters");
  cl_send(op, "KICK #none v");
  cl_expect(op, " 403 op #none ");
  cl_send(op, "KICK #k ghost");
  cl_expect(op, " 401 op ghost ");
  cl_send(op, "KICK #k op2");
  cl_expect(op, " 401 op op2 ");
  cl_send(op, "KICK #k v,w :enough");
  cl_expect(w, ":op!op@127.0.0.1 KICK #k v :enough");
  cl_expect(w, ":op!op@127.0.0.1 KICK #k w :enough");
  cl_expect(v, ":op!op@127.0.0.1 KICK #k v :enough");
  cl_expect(op, ":op!op@127.0.0.1 KICK #k w :enough");
  cl_send(v, "KICK #k op");
  cl_expect(v, " 442 v #k ");
  cl_send(v, "PRIVMSG #k :back?");
  cl_expect(v, " 404 v #k ");
  cl_send(op, "NAMES #k");
  cl_expect(op, " 353 op = #k :@op");
  cl_close(op);
  cl_close(v);
  cl_close(w);
  stop();
}
END_TEST

/* RFC 2812's user has no NUL, CR, LF, space or '@'; nor, here, any other
 * control byte or '!': they become '_'. A realname's control bytes (TAB,
 * CR, the CTCP marker) become spaces. The prefix others see is clean. */
START_TEST(user_and_realname_lose_their_control_bytes) {
  start();
  client *a = cl_register(port, "seer");
  cl_send(a, "JOIN #c");
  cl_expect(a, " 366 ");
  client *m = cl_connect(port);
  static const char reg[] = "NICK m\r\nUSER u\tv\x01w!x@y\rz 0 * :Real\tN"
                            "\x01"
                            "ame\r\n";
  cl_raw(m, reg, sizeof reg - 1);
  cl_expect(m, " 001 m ");
  cl_send(m, "JOIN #c");
  cl_expect(a, ":m!u_v_w_x_y_z@127.0.0.1 JOIN #c");
  cl_send(a, "WHOIS m");
  cl_expect(a, " 311 seer m u_v_w_x_y_z 127.0.0.1 * :Real N ame");
  cl_send(m, "NICK b\tad");
  cl_expect(m, " 432 m ");
  cl_close(a);
  cl_close(m);
  stop();
}
END_TEST

int main(void) {
  Suite *s = suite_create("chatd");
  TCase *tc = tcase_create("daemon");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, registration_sends_welcome_isupport_and_no_motd);
  tcase_add_test(tc, motd_comes_from_a_file);
  tcase_add_test(tc, commands_before_registration_get_451);
  tcase_add_test(tc, ping_pong_both_ways_and_ping_timeout);
  tcase_add_test(tc, unregistered_clients_time_out);
  tcase_add_test(tc, server_password_is_checked);
  tcase_add_test(tc, join_privmsg_notice_part_and_listings);
  tcase_add_test(tc, keys_and_no_outside_messages);
  tcase_add_test(tc, outsider_never_sees_channel_traffic);
  tcase_add_test(tc, nick_collisions_are_refused_case_insensitively);
  tcase_add_test(tc, quit_and_nick_reach_each_peer_once);
  tcase_add_test(tc, quit_line_is_not_duplicated);
  tcase_add_test(tc, lines_over_512_bytes_are_refused_and_relays_capped);
  tcase_add_test(tc, garbage_and_binary_never_break_the_server);
  tcase_add_test(tc, slow_reader_is_dropped_while_others_keep_up);
  tcase_add_test(tc, abrupt_disconnects_mid_broadcast);
  tcase_add_test(tc, churn_of_clients_leaves_no_objects_behind);
  tcase_add_test(tc, shutdown_tells_clients_and_frees_everything);
  tcase_add_test(tc, flood_control_slows_a_client_down);
  tcase_add_test(tc, client_and_channel_limits_hold);
  tcase_add_test(tc, kick_is_for_operators_and_reaches_every_member);
  tcase_add_test(tc, user_and_realname_lose_their_control_bytes);
  suite_add_tcase(s, tc);
  return test_run(s);
}
