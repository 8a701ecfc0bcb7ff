/* hark-chatd federation, when nothing goes wrong: a redis-server and
 * three daemons as child processes (tests/chatd/fednet.h), the commands
 * of users on different nodes seeing each other. Faults are in
 * test-fed-faults.c, forgery and Redis security in test-fed-security.c.
 * Skipped (77) without redis-server. */
#include "fednet.h"

#define SENDERS 3
#define RECEIVERS 3
#define PER_SENDER 300

static void setup(void) {
  net_init();
  net_redis();
  for (int i = 0; i < 3; i++)
    net_node(i);
}

static void teardown(void) {
  ck_assert_msg(net_stop() == 0, "a daemon did not stop cleanly");
}

/* LIST lines until 323: whether one names chan, with that count. */
static bool list_has(client *c, const char *chan, int users) {
  char want[128];
  snprintf(want, sizeof want, " %s %d :", chan, users);
  bool seen = false;
  for (;;) {
    ck_assert_msg(cl_line(c, 3000) > 0, "LIST did not end");
    if (strstr(c->line, " 323 ") != NULL)
      return seen;
    char name[128];
    snprintf(name, sizeof name, " %s ", chan);
    if (strstr(c->line, " 322 ") != NULL && strstr(c->line, name) != NULL) {
      ck_assert_msg(users < 0 || strstr(c->line, want) != NULL, "LIST: %s",
                    c->line);
      seen = true;
    }
  }
}

START_TEST(chat_reaches_every_node) {
  client *a = cl_register(0, "alice");
  client *b = cl_register(1, "bob");
  client *c = cl_register(2, "carol");
  cl_join(a, "#hark", NULL);
  cl_send(b, "JOIN #hark");
  EXPECT(b, "353 bob = #hark :");
  ck_assert_ptr_nonnull(strstr(b->line, "@alice"));
  EXPECT(a, ":bob!bob@127.0.0.1 JOIN #hark");
  cl_send(c, "JOIN #HARK");
  EXPECT(c, " 353 ");
  ck_assert_ptr_nonnull(strstr(c->line, "@alice"));
  ck_assert_ptr_nonnull(strstr(c->line, "bob"));
  EXPECT(a, ":carol!");
  EXPECT(b, ":carol!");
  cl_send(a, "PRIVMSG #hark :hello from node 0");
  EXPECT(b, ":alice!alice@127.0.0.1 PRIVMSG #hark :hello from node 0");
  EXPECT(c, "PRIVMSG #hark :hello from node 0");
  cl_send(c, "PRIVMSG #hark :and from node 2");
  EXPECT(a, ":carol!carol@127.0.0.1 PRIVMSG #hark :and from node 2");
  EXPECT(b, "and from node 2");
  cl_none(c, "and from node 2", 300); /* no echo to the sender */

  /* WHO and LIST count every node's members */
  cl_send(a, "WHO #hark");
  int who = 0;
  while (cl_line(a, 2000) > 0 && strstr(a->line, " 315 ") == NULL)
    who += strstr(a->line, " 352 ") != NULL;
  ck_assert_int_eq(who, 3);
  cl_send(b, "LIST");
  EXPECT(b, "322 bob #hark 3 :");

  /* nick change seen on every node, once */
  cl_send(b, "NICK bobby");
  EXPECT(b, ":bob!bob@127.0.0.1 NICK :bobby");
  EXPECT(a, ":bob!bob@127.0.0.1 NICK :bobby");
  EXPECT(c, ":bob!bob@127.0.0.1 NICK :bobby");
  cl_send(c, "NAMES #hark");
  EXPECT(c, " 353 ");
  ck_assert_ptr_nonnull(strstr(c->line, "bobby"));

  /* topic and key are the network's: set on node 0 */
  cl_send(a, "TOPIC #hark :federated");
  EXPECT(c, "TOPIC #hark :federated");
  cl_send(a, "MODE #hark +sk sesame"); /* secret: hidden from outsiders */
  EXPECT(a, "MODE #hark +sk sesame");
  /* other nodes apply each change as its own event: a line each */
  EXPECT(b, "MODE #hark +s");
  EXPECT(b, "MODE #hark +k sesame");
  EXPECT(c, "MODE #hark +s");
  EXPECT(c, "MODE #hark +k sesame");
  client *d = cl_register(1, "dave"); /* an outsider on node 1 */
  client *e = cl_register(2, "eve");  /* and on node 2 */
  cl_send(d, "JOIN #hark");
  EXPECT(d, " 475 dave #hark ");
  cl_send(d, "JOIN #hark wrong");
  EXPECT(d, " 475 ");
  cl_send(d, "PRIVMSG #hark :let me in");
  EXPECT(d, " 404 dave #hark ");
  cl_send(d, "NAMES #hark");
  EXPECT(d, " 366 ");
  ck_assert_ptr_null(strstr(d->line, "alice"));
  cl_send(e, "TOPIC #hark");
  EXPECT(e, " 442 ");
  cl_send(e, "JOIN #hark sesame");
  EXPECT(e, " 332 eve #hark :federated");
  EXPECT(e, " 366 ");
  EXPECT(a, ":eve!");
  /* the operator of node 0 gives +o to bobby on node 1 */
  cl_send(a, "MODE #hark +o bobby");
  EXPECT(c, "MODE #hark +o bobby");
  EXPECT(b, "MODE #hark +o bobby"); /* node 1 knows before bobby uses it */
  cl_send(b, "MODE #hark -k");
  EXPECT(a, "MODE #hark -k");
  cl_send(d, "JOIN #hark");
  EXPECT(d, " 366 ");
  cl_send(d, "PART #hark :bye");
  EXPECT(a, ":dave!dave@127.0.0.1 PART #hark :bye");
  cl_send(c, "QUIT :gone");
  EXPECT(a, ":carol!carol@127.0.0.1 QUIT :Quit: gone");
  EXPECT(b, "QUIT :Quit: gone");
  cl_free(a);
  cl_free(b);
  cl_free(c);
  cl_free(d);
  cl_free(e);
}
END_TEST

START_TEST(simultaneous_nick_claims_have_one_winner) {
  /* the same nick registered on two nodes at once: one wins */
  client *x = cl_new(0), *y = cl_new(1);
  cl_send(x, "NICK zed");
  cl_send(y, "NICK zed");
  cl_send(x, "USER x 0 * :x");
  cl_send(y, "USER y 0 * :y");
  int welcomed = 0, refused = 0;
  client *both[2] = {x, y};
  for (int i = 0; i < 2; i++) {
    ck_assert(cl_wait(both[i], "", 3000));
    if (strstr(both[i]->line, " 001 zed ") != NULL)
      welcomed++;
    else if (strstr(both[i]->line, " 433 * zed ") != NULL)
      refused++;
  }
  ck_assert_int_eq(welcomed, 1);
  ck_assert_int_eq(refused, 1);
  /* a nick in use elsewhere cannot be taken by NICK either, in any case */
  client *a = cl_register(2, "amy");
  cl_send(a, "NICK ZED");
  EXPECT(a, " 433 amy ZED ");
  /* the loser picks another one and goes on */
  client *loser = strstr(x->line, " 433 ") ? x : y;
  cl_send(loser, "NICK zed2");
  EXPECT(loser, " 001 zed2 ");
  /* a nick freed on one node is free on the others */
  client *winner = loser == x ? y : x;
  cl_send(winner, "QUIT");
  EXPECT(winner, "ERROR");
  /* (the release reaches Redis a moment after the ERROR reaches us) */
  bool renamed = false;
  for (int i = 0; i < 20 && !renamed; i++) {
    cl_send(a, "NICK zed");
    renamed = cl_wait(a, ":amy!amy@127.0.0.1 NICK :zed", 100);
  }
  ck_assert_msg(renamed, "zed was not freed: %s", a->line);
  cl_free(x);
  cl_free(y);
  cl_free(a);
}
END_TEST

START_TEST(every_sender_keeps_its_order_on_every_node) {
  client *s[SENDERS], *r[RECEIVERS];
  char nick[32];
  for (int i = 0; i < SENDERS; i++) {
    snprintf(nick, sizeof nick, "snd%d", i);
    s[i] = cl_register(i % 3, nick);
    cl_join(s[i], "#order", NULL);
  }
  for (int i = 0; i < RECEIVERS; i++) {
    snprintf(nick, sizeof nick, "rcv%d", i);
    r[i] = cl_register(i % 3, nick);
    cl_join(r[i], "#order", NULL);
  }
  usleep(200000); /* every JOIN has gone around */
  for (int k = 0; k < PER_SENDER; k++)
    for (int i = 0; i < SENDERS; i++)
      cl_send(s[i], "PRIVMSG #order :m %d %d", i, k);
  for (int j = 0; j < RECEIVERS; j++) {
    int next[SENDERS] = {0};
    int got = 0;
    long long end = now_ms() + 10000;
    while (got < SENDERS * PER_SENDER && now_ms() < end) {
      if (cl_line(r[j], (int)(end - now_ms())) <= 0)
        break;
      const char *m = strstr(r[j]->line, "PRIVMSG #order :m ");
      if (m == NULL)
        continue;
      int si, k;
      ck_assert_int_eq(sscanf(m, "PRIVMSG #order :m %d %d", &si, &k), 2);
      ck_assert_msg(k == next[si], "receiver %d: sender %d: got %d, want %d", j,
                    si, k, next[si]);
      next[si]++;
      got++;
    }
    ck_assert_int_eq(got, SENDERS * PER_SENDER);
    cl_none(r[j], "PRIVMSG #order", 200); /* and nothing twice */
  }
  for (int i = 0; i < SENDERS; i++)
    cl_free(s[i]);
  for (int i = 0; i < RECEIVERS; i++)
    cl_free(r[i]);
}
END_TEST

START_TEST(private_messages_whois_and_ison_cross_nodes) {
  client *a = cl_register(0, "amy");
  client *b = cl_register(1, "ben");
  cl_send(a, "PRIVMSG ben :hi ben");
  EXPECT(b, ":amy!amy@127.0.0.1 PRIVMSG ben :hi ben");
  cl_send(a, "NOTICE BEN :a notice");
  EXPECT(b, ":amy!amy@127.0.0.1 NOTICE ben :a notice");
  cl_send(b, "PRIVMSG amy,nobody :back");
  EXPECT(a, ":ben!ben@127.0.0.1 PRIVMSG amy :back");
  EXPECT(b, " 401 ben nobody :No such nick");
  cl_send(b, "NOTICE nobody :quiet");
  cl_none(b, " 401 ", 300);       /* NOTICE never gets an error */
  cl_none(a, "PRIVMSG ben", 100); /* no echo */

  /* one sender's private and channel messages keep their order */
  cl_join(a, "#pm", NULL);
  cl_join(b, "#pm", NULL);
  EXPECT(a, ":ben!");
  for (int k = 0; k < 200; k++)
    cl_send(a, "PRIVMSG %s :o %d", k % 2 ? "#pm" : "ben", k);
  for (int k = 0; k < 200; k++) {
    ck_assert_msg(cl_wait(b, " :o ", 3000), "message %d missing", k);
    int got = -1;
    sscanf(strstr(b->line, " :o ") + 4, "%d", &got);
    ck_assert_int_eq(got, k);
  }
  cl_none(b, " :o ", 200); /* and none twice */

  /* WHOIS and ISON see the other nodes' nicks */
  cl_send(a, "WHOIS ben");
  EXPECT(a, " 311 amy ben ben 127.0.0.1 * :Real ben");
  EXPECT(a, " 312 amy ben n1 :");
  EXPECT(a, " 318 amy ben ");
  cl_send(a, "WHOIS nobody");
  EXPECT(a, " 401 amy nobody ");
  EXPECT(a, " 318 amy nobody ");
  cl_send(a, "ISON amy nobody BEN");
  EXPECT(a, " 303 amy :");
  ck_assert_ptr_nonnull(strstr(a->line, ":amy ben"));
  ck_assert_ptr_null(strstr(a->line, "nobody"));
  /* a renamed user is found under the new nick, and the old one frees */
  cl_send(b, "NICK benny");
  EXPECT(b, "NICK :benny");
  cl_send(a, "PRIVMSG benny :renamed");
  EXPECT(b, ":amy!amy@127.0.0.1 PRIVMSG benny :renamed");
  bool gone = false;
  for (int i = 0; i < 20 && !gone; i++) {
    cl_send(a, "ISON ben benny");
    EXPECT(a, " 303 amy :");
    gone = strcmp(strstr(a->line, " 303 amy :") + 10, "benny") == 0;
    if (!gone)
      usleep(50000);
  }
  ck_assert_msg(gone, "ISON: %s", a->line);
  cl_send(a, "WHOIS benny");
  EXPECT(a, " 311 amy benny ben 127.0.0.1 * :Real ben");
  cl_free(a);
  cl_free(b);
}
END_TEST

START_TEST(list_names_and_who_show_the_network) {
  client *a = cl_register(0, "al");
  client *b = cl_register(1, "bea");
  client *c = cl_register(2, "cat");
  cl_join(b, "#far", NULL);
  cl_send(b, "TOPIC #far :far away");
  EXPECT(b, "TOPIC #far :far away");
  cl_join(c, "#Far", NULL);
  EXPECT(b, ":cat!");
  cl_join(b, "#sec", NULL);
  cl_send(b, "MODE #sec +sk hush");
  EXPECT(b, "MODE #sec +sk hush");
  cl_join(a, "#near", NULL);
  /* al, a member of nothing on nodes 1 and 2, sees the network */
  cl_send(a, "LIST");
  EXPECT(a, " 321 ");
  bool far = false, sec = false, near = false;
  for (;;) {
    ck_assert_msg(cl_line(a, 3000) > 0, "LIST did not end");
    if (strstr(a->line, " 323 ") != NULL)
      break;
    if (strstr(a->line, " 322 al #far 2 :far away") != NULL)
      far = true;
    if (strstr(a->line, "#sec") != NULL)
      sec = true;
    if (strstr(a->line, " 322 al #near 1 :") != NULL)
      near = true;
  }
  ck_assert(far);
  ck_assert(near);
  ck_assert_msg(!sec, "a secret channel listed to an outsider");
  cl_send(a, "LIST #FAR,#sec");
  ck_assert(list_has(a, "#far", 2));
  /* NAMES and WHO of a channel with no member here */
  cl_send(a, "NAMES #far");
  EXPECT(a, " 353 al = #far :");
  ck_assert(names_has(a->line, "bea"));
  ck_assert_ptr_nonnull(strstr(a->line, "@bea"));
  ck_assert(names_has(a->line, "cat"));
  EXPECT(a, " 366 al #far ");
  cl_send(a, "WHO #far");
  int who = 0;
  while (cl_line(a, 2000) > 0 && strstr(a->line, " 315 ") == NULL)
    who += strstr(a->line, " 352 al #far cat 127.0.0.1 n2 cat H") != NULL ||
           strstr(a->line, " 352 al #far bea 127.0.0.1 n1 bea H@") != NULL;
  ck_assert_int_eq(who, 2);
  cl_send(a, "NAMES #sec"); /* secret: nothing for an outsider */
  EXPECT(a, " 366 al #sec ");
  ck_assert_ptr_null(strstr(a->line, "bea"));
  cl_send(a, "NAMES #nowhere");
  EXPECT(a, " 366 al #nowhere ");
  /* a channel whose members have all left leaves the list */
  cl_send(b, "PART #far");
  cl_send(c, "PART #far");
  EXPECT(c, "PART #far");
  bool left = false;
  for (int i = 0; i < 20 && !left; i++) {
    cl_send(a, "LIST");
    left = !list_has(a, "#far", -1);
    if (!left)
      usleep(50000);
  }
  ck_assert(left);
  cl_free(a);
  cl_free(b);
  cl_free(c);
}
END_TEST

START_TEST(a_rename_during_a_join_leaves_no_stale_member) {
  client *x = cl_register(0, "xa");
  cl_join(x, "#st", NULL);
  cl_send(x, "PART #st\r\nNICK xb\r\nJOIN #st");
  EXPECT(x, ":xa!xa@127.0.0.1 NICK :xb");
  EXPECT(x, " 366 xb #st ");
  client *y = cl_register(1, "yu");
  cl_send(y, "JOIN #st");
  EXPECT(y, " 353 yu = #st :");
  ck_assert_msg(names_has(y->line, "xb"), "NAMES: %s", y->line);
  ck_assert_msg(!names_has(y->line, "xa"), "stale member: %s", y->line);
  client *z = cl_register(2, "zo");
  cl_send(z, "NAMES #st");
  EXPECT(z, " 353 zo = #st :");
  ck_assert_msg(!names_has(z->line, "xa"), "stale member: %s", z->line);
  ck_assert(names_has(z->line, "xb"));
  ck_assert(names_has(z->line, "yu"));
  cl_free(x);
  cl_free(y);
  cl_free(z);
}
END_TEST

START_TEST(shutdown_with_redis_hung_is_bounded) {
  client *a = cl_register(0, "hal");
  cl_join(a, "#h", NULL);
  kill(N.redis_pid, SIGSTOP);
  cl_send(a, "PRIVMSG #h :into the void");
  usleep(100000);
  long long t0 = now_ms();
  kill(N.pid[0], SIGTERM);
  int status = -1;
  pid_t r = 0;
  while ((r = waitpid(N.pid[0], &status, WNOHANG)) == 0 && now_ms() - t0 < 6000)
    usleep(10000);
  long long took = now_ms() - t0;
  kill(N.redis_pid, SIGCONT);
  ck_assert_msg(r == N.pid[0], "the node hung at shutdown");
  N.pid[0] = 0;
  ck_assert_msg(took < 3500, "shutdown took %lld ms", took);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  cl_free(a);
}
END_TEST

START_TEST(pipelined_registration_runs_in_order) {
  client *b = cl_register(1, "pb");
  cl_join(b, "#pipe", NULL);
  client *a = cl_new(0);
  cl_send(a, "NICK pa\r\nUSER pa 0 * :Pipe A\r\nJOIN #pipe\r\n"
             "PRIVMSG #pipe :first words");
  cl_until(a, " 001 pa ", " 451 ", NULL);
  cl_until(a, ":pa!pa@127.0.0.1 JOIN #pipe", " 451 ", NULL);
  cl_until(a, " 366 pa #pipe ", " 404 ", NULL);
  EXPECT(b, ":pa!pa@127.0.0.1 JOIN #pipe");
  EXPECT(b, ":pa!pa@127.0.0.1 PRIVMSG #pipe :first words");

  /* ~40 KB behind a JOIN of a channel new to the network: more than the
   * 16 KB input buffer, all waiting for the JOIN's round trips */
  enum { NLINES = 2000 };
  size_t cap = 64 + (size_t)NLINES * 32, len = 0;
  char *buf = malloc(cap);
  len += (size_t)snprintf(buf + len, cap - len, "JOIN #flood\r\n");
  for (int k = 0; k < NLINES; k++)
    len += (size_t)snprintf(buf + len, cap - len, "PRIVMSG #pipe :f %d\r\n", k);
  cl_raw(a, buf, len);
  free(buf);
  cl_until(a, " 366 pa #flood ", " 404 ", NULL);
  for (int k = 0; k < NLINES; k++) {
    ck_assert_msg(cl_wait(b, "PRIVMSG #pipe :f ", 3000), "message %d", k);
    int got = -1;
    sscanf(strstr(b->line, ":f ") + 3, "%d", &got);
    ck_assert_int_eq(got, k);
  }
  cl_send(a, "PING :after");
  cl_until(a, "PONG", " 404 ", NULL);
  cl_free(a);
  cl_free(b);
}
END_TEST

START_TEST(pipelined_join_then_topic_finds_the_member) {
  client *a = cl_register(0, "ta");
  client *b = cl_register(1, "tb");
  cl_send(a, "JOIN #tp\r\nTOPIC #tp :set at once\r\nTOPIC #tp");
  cl_until(a, " 366 ta #tp ", " 442 ", NULL);
  cl_until(a, ":ta!ta@127.0.0.1 TOPIC #tp :set at once", " 442 ", NULL);
  cl_until(a, " 332 ta #tp :set at once", " 442 ", NULL);
  /* (node 0's writes to Redis may trail its replies to a: a WHOIS, in
   * order behind them on its connection, waits for them) */
  cl_send(a, "MODE #tp -t"); /* channels start +t: anyone may topic */
  cl_until(a, "MODE #tp -t", NULL, NULL);
  cl_send(a, "WHOIS tb");
  cl_until(a, " 318 ta tb ", NULL, NULL);
  /* b joins from another node and retopics at once */
  cl_send(b, "JOIN #tp\r\nTOPIC #tp :and again\r\nMODE #tp");
  cl_until(b, " 332 tb #tp :set at once", " 442 ", NULL);
  cl_until(b, ":tb!tb@127.0.0.1 TOPIC #tp :and again", " 442 ", NULL);
  cl_until(b, " 324 tb #tp ", " 442 ", NULL);
  EXPECT(a, ":tb!tb@127.0.0.1 TOPIC #tp :and again");
  /* several channels in one JOIN, then a message to each */
  cl_send(b, "JOIN #m1,#m2,#tp\r\nPRIVMSG #m1,#m2 :both\r\nPING :end");
  int joins = cl_until(b, "PONG", " 404 ", " 366 tb #m");
  ck_assert_int_eq(joins, 2);
  cl_free(a);
  cl_free(b);
}
END_TEST

START_TEST(a_client_gone_during_its_claim_frees_the_nick) {
  for (int i = 0; i < 5; i++) {
    char nick[16];
    snprintf(nick, sizeof nick, "gh%d", i);
    client *g = cl_new(0);
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "NICK %s\r\nUSER g 0 * :g\r\nJOIN #gh\r\nPRIVMSG #gh :x"
                     "\r\n",
                     nick);
    cl_raw(g, buf, (size_t)n);
    if (i % 2) /* now, or once the claim is (likely) out */
      usleep(2000);
    cl_free(g);
    long long t0 = now_ms();
    client *t = cl_new(1 + i % 2);
    bool got = false;
    while (!got && now_ms() - t0 < N.lease_ms) {
      /* in order: the PONG comes after the NICK's answer (433 or none) */
      cl_send(t, "NICK %s\r\nPING :probe", nick);
      got = cl_until(t, "PONG", NULL, " 433 ") == 0;
      if (!got)
        usleep(20000);
    }
    ck_assert_msg(got, "%s still taken after %lld ms", nick, now_ms() - t0);
    cl_send(t, "USER t 0 * :t");
    EXPECT(t, " 001 ");
    cl_free(t);
  }
  /* node 0 is alive and well */
  client *c = cl_register(0, "after");
  cl_join(c, "#gh", NULL);
  cl_free(c);
}
END_TEST

START_TEST(pipelined_lines_run_when_redis_is_lost) {
  client *a = cl_new(0);
  /* our own connection to Redis: scripts wait (CLIENT PAUSE WRITE), then
   * the nodes' command connections are closed under them */
  client *r = redis_client();
  cl_send(r, "CLIENT PAUSE 10000 WRITE");
  EXPECT(r, "+OK");
  cl_send(a, "NICK rl\r\nUSER rl 0 * :rl\r\nJOIN #rl\r\nTOPIC #rl :t\r\n"
             "PING :done");
  usleep(300000);
  cl_none(a, " 001 ", 100); /* the NICK is waiting for Redis */
  cl_send(r, "CLIENT KILL TYPE normal");
  EXPECT(r, ":");
  cl_send(r, "CLIENT UNPAUSE");
  EXPECT(r, "+OK");
  cl_until(a, " 001 rl ", " 451 ", NULL);
  cl_until(a, " 366 rl #rl ", " 451 ", NULL);
  cl_until(a, ":rl!rl@127.0.0.1 TOPIC #rl :t", " 442 ", NULL);
  cl_until(a, "PONG", " 442 ", NULL);
  cl_free(a);
  cl_free(r);
}
END_TEST

/* A message from outside a keyed channel is refused with 404 wherever the
 * channel's members are: the node of the sender knows the channel. */
START_TEST(an_outsider_gets_404_from_a_keyed_channel_on_any_node) {
  client *a = cl_register(0, "keeper");
  cl_join(a, "#vault", NULL);
  cl_send(a, "MODE #vault +k secret");
  EXPECT(a, "MODE #vault +k secret");
  client *o = cl_register(2, "outsider"); /* nobody of #vault on node 2 */
  cl_send(o, "PRIVMSG #vault :let me in");
  EXPECT(o, " 404 outsider #vault ");
  cl_send(o, "PRIVMSG #nowhere :hello");
  EXPECT(o, " 401 outsider #nowhere ");
  cl_send(o, "JOIN #vault");
  EXPECT(o, " 475 outsider #vault ");
  cl_send(o, "JOIN #vault secret");
  EXPECT(o, " 366 outsider #vault ");
  EXPECT(a, ":outsider!outsider@127.0.0.1 JOIN #vault");
  cl_free(a);
  cl_free(o);
}
END_TEST

/* A '&' channel is its server's own: the same name on two nodes is two
 * channels, and nothing said in one reaches the other. */
START_TEST(ampersand_channels_stay_on_their_node) {
  client *a = cl_register(0, "anna");
  client *b = cl_register(1, "bert");
  cl_join(a, "&loc", NULL);
  cl_send(b, "JOIN &loc");
  EXPECT(b, " 353 bert = &loc :@bert");
  cl_none(a, "JOIN &loc", 300);
  cl_send(a, "PRIVMSG &loc :node 0 only");
  cl_send(b, "PRIVMSG &loc :node 1 only");
  cl_none(a, "node 1 only", 300);
  cl_none(b, "node 0 only", 300);
  cl_send(a, "TOPIC &loc :here");
  EXPECT(a, "TOPIC &loc :here");
  cl_send(b, "LIST &loc");
  ck_assert(list_has(b, "&loc", 1));
  cl_send(b, "TOPIC &loc");
  EXPECT(b, " 331 bert &loc ");
  cl_free(a);
  cl_free(b);
}
END_TEST

/* A mute (+b m:mask) set on one node keeps its member quiet on another,
 * who still joins; its removal frees it there too. */
START_TEST(a_mute_set_on_one_node_holds_on_another) {
  client *o = cl_register(0, "chanop");
  client *q = cl_register(1, "quiet");
  cl_join(o, "#mu", NULL);
  cl_send(o, "MODE #mu +b m:quiet");
  EXPECT(o, "MODE #mu +b m:quiet!*@*");
  cl_send(q, "JOIN #mu");
  EXPECT(q, " 366 quiet #mu ");
  EXPECT(o, ":quiet!quiet@127.0.0.1 JOIN #mu");
  cl_send(q, "MODE #mu +b"); /* node 1 has it (it came before the JOIN) */
  EXPECT(q, " 367 quiet #mu m:quiet!*@* ");
  cl_send(q, "PRIVMSG #mu :can you hear me");
  EXPECT(q, " 404 quiet #mu ");
  cl_none(o, "can you hear me", 300);
  cl_send(o, "MODE #mu -b m:quiet!*@*");
  EXPECT(q, "MODE #mu -b m:quiet!*@*");
  cl_send(q, "PRIVMSG #mu :now you can");
  EXPECT(o, ":quiet!quiet@127.0.0.1 PRIVMSG #mu :now you can");
  cl_free(o);
  cl_free(q);
}
END_TEST

/* KICK by an operator reaches every member on every node; the numerics of
 * a KICK that cannot be done. */
START_TEST(kick_reaches_every_node_and_checks_its_rights) {
  client *op = cl_register(0, "chief");
  client *v = cl_register(1, "victim");
  client *w = cl_register(2, "witness");
  client *x = cl_register(2, "outside");
  cl_join(op, "#k", NULL);
  cl_join(v, "#k", NULL);
  cl_join(w, "#k", NULL);
  EXPECT(op, ":witness!");
  cl_send(v, "KICK #k witness :no");
  EXPECT(v, " 482 victim #k :You're not channel operator");
  cl_send(x, "KICK #k victim");
  EXPECT(x, " 442 outside #k ");
  cl_send(op, "KICK #k outside");
  EXPECT(op, " 441 chief outside #k ");
  cl_send(op, "KICK #k nobody");
  EXPECT(op, " 401 chief nobody ");
  cl_send(op, "KICK #nothere victim");
  EXPECT(op, " 403 chief #nothere ");
  cl_send(op, "KICK #k");
  EXPECT(op, " 461 chief KICK ");
  cl_send(op, "KICK #k victim :behave");
  EXPECT(op, ":chief!chief@127.0.0.1 KICK #k victim :behave");
  EXPECT(v, ":chief!chief@127.0.0.1 KICK #k victim :behave");
  EXPECT(w, ":chief!chief@127.0.0.1 KICK #k victim :behave");
  /* out of the channel everywhere */
  cl_send(v, "PRIVMSG #k :still here?");
  EXPECT(v, " 404 victim #k ");
  char names[3][512];
  names_of(op, "#k", names[0], sizeof names[0]);
  names_of(v, "#k", names[1], sizeof names[1]);
  names_of(w, "#k", names[2], sizeof names[2]);
  ck_assert_str_eq(names[0], "@chief witness");
  ck_assert_str_eq(names[1], names[0]);
  ck_assert_str_eq(names[2], names[0]);
  /* and may come back */
  cl_join(v, "#k", NULL);
  EXPECT(w, ":victim!victim@127.0.0.1 JOIN #k");
  /* a kick without a reason gives the kicker's nick */
  cl_send(op, "KICK #k victim");
  EXPECT(w, "KICK #k victim :chief");
  cl_free(op);
  cl_free(v);
  cl_free(w);
  cl_free(x);
}
END_TEST

/* Redis hangs (SIGSTOP) with a NICK out: the claim times out with the
 * command (--redis-timeout-ms), is granted locally, and the session's
 * later lines run; when Redis is back the network settles it. */
START_TEST(a_nick_claim_goes_on_when_redis_hangs) {
  client *a = cl_new(0);
  kill(N.redis_pid, SIGSTOP);
  long long t0 = now_ms();
  cl_send(a, "NICK ht\r\nPING :late");
  ck_assert_msg(cl_wait(a, "PONG", 6000), "no PONG (last: %s)", a->line);
  long long took = now_ms() - t0;
  kill(N.redis_pid, SIGCONT);
  ck_assert_msg(took >= N.timeout_ms - 200 && took < N.timeout_ms + 3000,
                "PONG after %lld ms", took);
  cl_send(a, "USER ht 0 * :ht");
  EXPECT(a, " 001 ht ");
  /* the network knows ht once node 0 is back */
  client *b = cl_register(1, "bee");
  bool seen = false;
  for (int i = 0; i < 50 && !seen; i++) {
    cl_send(b, "ISON ht");
    EXPECT(b, " 303 bee :");
    seen = strstr(b->line, ":ht") != NULL;
    if (!seen)
      usleep(100000);
  }
  ck_assert_msg(seen, "ht unknown on node 1: %s", b->line);
  cl_free(a);
  cl_free(b);
}
END_TEST

int main(void) {
  Suite *s = suite_create("federation");
  TCase *tc = tcase_create("three nodes");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, chat_reaches_every_node);
  tcase_add_test(tc, simultaneous_nick_claims_have_one_winner);
  tcase_add_test(tc, every_sender_keeps_its_order_on_every_node);
  tcase_add_test(tc, private_messages_whois_and_ison_cross_nodes);
  tcase_add_test(tc, list_names_and_who_show_the_network);
  tcase_add_test(tc, a_rename_during_a_join_leaves_no_stale_member);
  tcase_add_test(tc, shutdown_with_redis_hung_is_bounded);
  tcase_add_test(tc, pipelined_registration_runs_in_order);
  tcase_add_test(tc, pipelined_join_then_topic_finds_the_member);
  tcase_add_test(tc, a_client_gone_during_its_claim_frees_the_nick);
  tcase_add_test(tc, pipelined_lines_run_when_redis_is_lost);
  tcase_add_test(tc, an_outsider_gets_404_from_a_keyed_channel_on_any_node);
  tcase_add_test(tc, ampersand_channels_stay_on_their_node);
  tcase_add_test(tc, a_mute_set_on_one_node_holds_on_another);
  tcase_add_test(tc, kick_reaches_every_node_and_checks_its_rights);
  tcase_add_test(tc, a_nick_claim_goes_on_when_redis_hangs);
  suite_add_tcase(s, tc);
  return fednet_main(s);
}
