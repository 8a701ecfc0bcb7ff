/* hark-chatd federation under faults: Redis restarted or stalled in the
 * middle of traffic, a node killed, a node restarted under the same id, a
 * nick taken on two nodes while Redis is away, a node away longer than
 * the stream keeps, Redis losing its data. Each test starts its own
 * redis-server (on a free port) and daemons (tests/chatd/fednet.h), with
 * short leases; every wait is bounded. Skipped (77) without
 * redis-server. */
#include "fednet.h"

static void teardown(void) {
  ck_assert_msg(net_stop() == 0, "a daemon did not stop cleanly");
}

/* ---- traffic: senders, receivers, and a check of what arrived -------- */

typedef struct traffic {
  client *snd[4];
  int nsnd;
  client *rcv[8];
  int nrcv;
  int sent[4]; /* per sender */
} traffic;

static void send_some(traffic *t, int n) {
  for (int k = 0; k < n; k++)
    for (int i = 0; i < t->nsnd; i++)
      cl_send(t->snd[i], "PRIVMSG #t :m %d %d", i, t->sent[i]++);
}

/* Every receiver gets every other sender's messages exactly once and in
 * each sender's order, within ms; no line of any receiver contains bad. */
static void check_all(traffic *t, int ms, const char *bad) {
  long long end = now_ms() + ms;
  for (int j = 0; j < t->nrcv; j++) {
    client *r = t->rcv[j];
    int next[4] = {0}, got = 0, want = 0, self = -1;
    for (int i = 0; i < t->nsnd; i++)
      if (t->snd[i] == r)
        self = i;
    for (int i = 0; i < t->nsnd; i++)
      want += i == self ? 0 : t->sent[i];
    while (got < want) {
      int left = (int)(end - now_ms());
      ck_assert_msg(left > 0 && cl_line(r, left) > 0,
                    "receiver %d: %d of %d messages (%d %d %d from each)", j,
                    got, want, next[0], next[1], next[2]);
      ck_assert_msg(bad == NULL || strstr(r->line, bad) == NULL,
                    "receiver %d: unexpected: %s", j, r->line);
      const char *m = strstr(r->line, "PRIVMSG #t :m ");
      if (m == NULL)
        continue;
      int si, k;
      ck_assert_int_eq(sscanf(m, "PRIVMSG #t :m %d %d", &si, &k), 2);
      ck_assert_msg(si != self, "receiver %d got its own line", j);
      ck_assert_msg(k == next[si], "receiver %d: sender %d: got %d, want %d", j,
                    si, k, next[si]);
      next[si]++;
      got++;
    }
  }
  for (int j = 0; j < t->nrcv; j++)
    cl_none(t->rcv[j], "PRIVMSG #t", 200); /* and nothing twice */
}

/* NAMES of chan is the same from a client of every node. */
static void same_names(client **c, int n, const char *chan, char *out,
                       size_t cap) {
  char first[1024], other[1024];
  names_of(c[0], chan, first, sizeof first);
  for (int i = 1; i < n; i++) {
    names_of(c[i], chan, other, sizeof other);
    ck_assert_msg(strcmp(first, other) == 0, "NAMES %s: \"%s\" vs \"%s\"", chan,
                  first, other);
  }
  snprintf(out, cap, "%s", first);
}

/* Two senders (nodes 0 and 1), receivers on every node, all in #t. */
static void traffic_start(traffic *t) {
  memset(t, 0, sizeof *t);
  const char *nick[] = {"s0", "s1", "r0", "r1", "r2"};
  int node[] = {0, 1, 0, 1, 2};
  client *c[5];
  for (int i = 0; i < 5; i++) {
    c[i] = cl_register(node[i], nick[i]);
    cl_join(c[i], "#t", NULL);
  }
  EXPECT(c[0], ":r2!"); /* every JOIN has gone around */
  EXPECT(c[1], ":r2!");
  t->snd[0] = c[0];
  t->snd[1] = c[1];
  t->nsnd = 2;
  for (int i = 0; i < 5; i++)
    t->rcv[t->nrcv++] = c[i];
}

static void traffic_end(traffic *t) {
  for (int i = 0; i < t->nrcv; i++)
    cl_free(t->rcv[i]);
}

/* ---- tests ------------------------------------------------------------ */

/* Redis (with its AOF) is restarted while two nodes send: no message is
 * lost, each sender's order holds on every node, NAMES agree after. */
START_TEST(a_redis_restart_mid_traffic_loses_nothing) {
  net_init();
  redis_arg("--appendonly");
  redis_arg("yes");
  redis_arg("--appendfsync");
  redis_arg("always");
  net_redis();
  for (int i = 0; i < 3; i++)
    net_node(i);
  traffic t;
  traffic_start(&t);
  send_some(&t, 100);
  stop_pid(&N.redis_pid, SIGTERM);
  send_some(&t, 100); /* local delivery goes on; the rest waits */
  usleep(500000);
  net_redis();
  send_some(&t, 100);
  check_all(&t, 20000, " QUIT ");
  char names[1024];
  client *by_node[] = {t.rcv[2], t.rcv[3], t.rcv[4]};
  same_names(by_node, 3, "#t", names, sizeof names);
  ck_assert_str_eq(names, "@s0 r0 r1 r2 s1");
  traffic_end(&t);
}
END_TEST

/* Redis stops answering for 10 s (SIGSTOP) while two nodes send: the
 * connections time out and come back, no node is declared lost (nobody
 * sees a QUIT), no message is lost or duplicated, order holds. */
START_TEST(a_10_s_redis_stall_loses_nothing_and_kills_nobody) {
  net_init();
  net_redis();
  for (int i = 0; i < 3; i++)
    net_node(i);
  traffic t;
  traffic_start(&t);
  send_some(&t, 100);
  kill(N.redis_pid, SIGSTOP);
  send_some(&t, 50);
  usleep(5000000);
  send_some(&t, 50);
  usleep(5000000);
  kill(N.redis_pid, SIGCONT);
  send_some(&t, 100);
  check_all(&t, 20000, " QUIT ");
  /* two more leases: still nobody lost */
  for (int j = 0; j < t.nrcv; j++)
    cl_none(t.rcv[j], " QUIT ", j == 0 ? 2 * N.lease_ms : 10);
  char names[1024];
  client *by_node[] = {t.rcv[2], t.rcv[3], t.rcv[4]};
  same_names(by_node, 3, "#t", names, sizeof names);
  ck_assert_str_eq(names, "@s0 r0 r1 r2 s1");
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(node_log_count(i, "lost: no heartbeat"), 0);
  traffic_end(&t);
}
END_TEST

/* A node SIGKILLed: its users leave the others' channels within the
 * lease, one QUIT each however many channels, and their nicks are free. */
START_TEST(a_killed_node_s_users_leave_within_the_lease) {
  net_init();
  net_redis();
  for (int i = 0; i < 3; i++)
    net_node(i);
  client *a = cl_register(0, "ann");
  client *b = cl_register(1, "ben");
  client *k = cl_register(2, "kim");
  client *k2 = cl_register(2, "kit");
  cl_join(a, "#c", NULL);
  cl_join(b, "#c", NULL);
  cl_join(k, "#c", NULL);
  cl_join(k2, "#c", NULL);
  cl_join(k, "#d", NULL);
  cl_join(a, "#d", NULL);
  EXPECT(b, ":kit!");
  long long t0 = now_ms();
  kill(N.pid[2], SIGKILL);
  waitpid(N.pid[2], NULL, 0);
  N.pid[2] = 0;
  ck_assert(
      cl_wait(a, ":kim!kim@127.0.0.1 QUIT :Server n2 lost", N.lease_ms + 2000));
  long long took = now_ms() - t0;
  ck_assert_msg(took <= N.lease_ms + 1000, "node loss seen after %lld ms",
                took);
  EXPECT(b, ":kim!kim@127.0.0.1 QUIT :Server n2 lost");
  EXPECT(b, ":kit!kit@127.0.0.1 QUIT :Server n2 lost");
  cl_none(a, ":kim!", 300); /* once, though in two channels */
  char names[2][256];
  names_of(a, "#c", names[0], sizeof names[0]);
  names_of(b, "#c", names[1], sizeof names[1]);
  ck_assert_str_eq(names[0], "@ann ben");
  ck_assert_str_eq(names[1], names[0]);
  client *n = cl_register(1, "kim"); /* the nick is free */
  cl_free(n);
  cl_free(a);
  cl_free(b);
  cl_free(k);
  cl_free(k2);
}
END_TEST

/* A node killed and restarted at once under the same id: its previous
 * users leave at its return (not after the lease), its new ones may take
 * the same nicks, and no ghost stays, then or a lease later. */
START_TEST(a_node_restarted_with_its_id_leaves_no_ghosts) {
  net_init();
  N.lease_ms = 3000;
  net_redis();
  for (int i = 0; i < 3; i++)
    net_node(i);
  client *a = cl_register(0, "ari");
  client *b = cl_register(1, "bea");
  cl_join(a, "#g", NULL);
  cl_join(b, "#g", NULL);
  client *g1 = cl_register(2, "gus");
  client *g2 = cl_register(2, "gil");
  cl_join(g1, "#g", NULL);
  cl_join(g2, "#g", NULL);
  EXPECT(a, ":gil!");
  kill(N.pid[2], SIGKILL);
  waitpid(N.pid[2], NULL, 0);
  long long t0 = now_ms();
  net_node(2);
  EXPECT(a, ":gus!gus@127.0.0.1 QUIT :Server n2 restarted");
  EXPECT(a, ":gil!gil@127.0.0.1 QUIT :Server n2 restarted");
  ck_assert_msg(now_ms() - t0 < N.lease_ms, "ghosts left until the lease");
  EXPECT(b, ":gil!gil@127.0.0.1 QUIT :Server n2 restarted");
  client *g3 = cl_register(2, "gus"); /* the old one's nick is free */
  cl_join(g3, "#g", NULL);
  EXPECT(b, ":gus!gus@127.0.0.1 JOIN #g");
  char names[3][256];
  client *c[] = {a, b, g3};
  same_names(c, 3, "#g", names[0], sizeof names[0]);
  ck_assert_str_eq(names[0], "@ari bea gus");
  /* a lease later: the new node is alive, nothing changed */
  cl_none(a, " QUIT ", N.lease_ms + 500);
  names_of(b, "#g", names[1], sizeof names[1]);
  ck_assert_str_eq(names[1], names[0]);
  cl_free(a);
  cl_free(b);
  cl_free(g1);
  cl_free(g2);
  cl_free(g3);
}
END_TEST

/* Reads c for ms, counting NICK lines from zed and notices of a lost
 * nick; the NICK line's prefix must be zed's own (nick!user@host). */
static void count_rename(client *c, const char *user, int ms, int *nicks,
                         int *notices) {
  char prefix[64];
  snprintf(prefix, sizeof prefix, ":zed!%s@127.0.0.1 NICK :Guest", user);
  long long end = now_ms() + ms;
  while (now_ms() < end) {
    if (cl_line(c, (int)(end - now_ms())) <= 0)
      continue;
    if (strstr(c->line, " NICK :") != NULL) {
      ck_assert_msg(strncmp(c->line, prefix, strlen(prefix)) == 0,
                    "rename with the wrong prefix: %s", c->line);
      (*nicks)++;
    }
    if (strstr(c->line, " NOTICE ") != NULL && strstr(c->line, "taken"))
      (*notices)++;
  }
}

/* The same nick registered on two nodes while Redis is away: when it is
 * back, exactly one keeps it, the other is renamed (a NICK line with its
 * old prefix) and told once; every node agrees. */
START_TEST(a_nick_taken_twice_during_an_outage_has_one_owner) {
  net_init();
  redis_arg("--appendonly");
  redis_arg("yes");
  net_redis();
  for (int i = 0; i < 3; i++)
    net_node(i);
  client *w = cl_register(2, "watcher");
  cl_join(w, "#o", NULL);
  stop_pid(&N.redis_pid, SIGTERM);
  client *x = cl_new(0), *y = cl_new(1);
  cl_send(x, "NICK zed\r\nUSER xu 0 * :X");
  cl_send(y, "NICK zed\r\nUSER yu 0 * :Y");
  EXPECT(x, " 001 zed ");
  EXPECT(y, " 001 zed ");
  cl_join(x, "#o", NULL);
  cl_join(y, "#o", NULL);
  net_redis();
  int xn = 0, xt = 0, yn = 0, yt = 0;
  /* whoever is renamed hears it within a few seconds */
  count_rename(x, "xu", 4000, &xn, &xt);
  count_rename(y, "yu", 500, &yn, &yt);
  ck_assert_msg(xn + yn == 1, "renames: %d on node 0, %d on node 1", xn, yn);
  ck_assert_msg(xt == xn && yt == yn, "notices: %d and %d", xt, yt);
  const char *winner = xn == 0 ? "xu" : "yu";
  char who[64];
  snprintf(who, sizeof who, " 311 watcher zed %s ", winner);
  cl_send(w, "WHOIS zed");
  EXPECT(w, who);
  char names[1024];
  client *c[] = {w, x, y};
  same_names(c, 3, "#o", names, sizeof names);
  ck_assert_msg(strstr(names, "zed") && strstr(names, "Guest"), "NAMES: %s",
                names);
  cl_free(w);
  cl_free(x);
  cl_free(y);
}
END_TEST

/* A node stopped while more events than the stream keeps go by: back, it
 * sees the gap, says so in its log, and takes the network's state from a
 * snapshot (who joined and left, the topic) into its clients' view. */
START_TEST(a_node_away_beyond_retention_resynchronizes) {
  net_init();
  N.lease_ms = 20000; /* stopped, it must not be judged lost */
  node_arg("--redis-retention");
  node_arg("100");
  net_redis();
  for (int i = 0; i < 3; i++)
    net_node(i);
  client *a = cl_register(0, "al");
  client *b = cl_register(1, "bo");
  client *c = cl_register(2, "cy");
  cl_join(a, "#ret", NULL);
  cl_join(b, "#ret", NULL);
  cl_join(c, "#ret", NULL);
  cl_join(c, "&mine", NULL); /* node 2's own: the snapshot lacks it */
  EXPECT(a, ":cy!");
  EXPECT(b, ":cy!");
  kill(N.pid[2], SIGSTOP);
  for (int k = 0; k < 300; k++)
    cl_send(a, "PRIVMSG #ret :filler %d", k);
  cl_send(a, "TOPIC #ret :after the gap");
  EXPECT(a, "TOPIC #ret :after the gap");
  client *d = cl_register(1, "di");
  cl_join(d, "#ret", NULL);
  cl_send(b, "PART #ret :bye");
  EXPECT(b, "PART #ret");
  char names[2][256];
  names_of(a, "#ret", names[0], sizeof names[0]); /* (everything is in) */
  names_of(d, "#ret", names[1], sizeof names[1]);
  ck_assert_str_eq(names[0], "@al cy di");
  kill(N.pid[2], SIGCONT);
  ck_assert_msg(node_log_has(2, "resynchronizing from a snapshot", 5000),
                "node 2 did not see the gap");
  ck_assert(node_log_has(2, "resynchronized from a snapshot", 3000));
  EXPECT(c, ":di!di@127.0.0.1 JOIN #ret");
  names_of(c, "#ret", names[1], sizeof names[1]);
  ck_assert_str_eq(names[1], names[0]);
  cl_send(c, "TOPIC #ret");
  EXPECT(c, " 332 cy #ret :after the gap");
  names_of(c, "&mine", names[1], sizeof names[1]); /* not dropped */
  ck_assert_str_eq(names[1], "@cy");
  /* and it follows the stream again */
  cl_send(a, "PRIVMSG #ret :live again");
  EXPECT(c, ":al!al@127.0.0.1 PRIVMSG #ret :live again");
  cl_free(a);
  cl_free(b);
  cl_free(c);
  cl_free(d);
}
END_TEST

/* Redis restarted empty (no persistence): the nodes find themselves
 * unknown, join again with their users and channels, and the messages
 * sent meanwhile still arrive; NAMES agree. */
START_TEST(redis_losing_its_data_is_mended_by_the_nodes) {
  net_init();
  net_redis();
  for (int i = 0; i < 2; i++)
    net_node(i);
  client *a = cl_register(0, "ada");
  client *b = cl_register(1, "bob");
  cl_join(a, "#d", NULL);
  cl_join(b, "#d", NULL);
  EXPECT(a, ":bob!");
  stop_pid(&N.redis_pid, SIGTERM);
  for (int k = 0; k < 10; k++)
    cl_send(a, "PRIVMSG #d :during %d", k);
  usleep(300000);
  net_redis();
  for (int k = 0; k < 10; k++) {
    char want[64];
    snprintf(want, sizeof want, "PRIVMSG #d :during %d", k);
    ck_assert_msg(cl_wait(b, want, 10000), "missing: %s (last: %s)", want,
                  b->line);
  }
  ck_assert(node_log_has(0, "joined again", 3000));
  char names[256];
  client *c[] = {a, b};
  same_names(c, 2, "#d", names, sizeof names);
  ck_assert_str_eq(names, "@ada bob");
  cl_free(a);
  cl_free(b);
}
END_TEST

int main(void) {
  Suite *s = suite_create("federation faults");
  TCase *tc = tcase_create("faults");
  tcase_add_checked_fixture(tc, NULL, teardown);
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, a_redis_restart_mid_traffic_loses_nothing);
  tcase_add_test(tc, a_10_s_redis_stall_loses_nothing_and_kills_nobody);
  tcase_add_test(tc, a_killed_node_s_users_leave_within_the_lease);
  tcase_add_test(tc, a_node_restarted_with_its_id_leaves_no_ghosts);
  tcase_add_test(tc, a_nick_taken_twice_during_an_outage_has_one_owner);
  tcase_add_test(tc, a_node_away_beyond_retention_resynchronizes);
  tcase_add_test(tc, redis_losing_its_data_is_mended_by_the_nodes);
  suite_add_tcase(s, tc);
  return fednet_main(s);
}
