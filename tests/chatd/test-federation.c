/* hark-chatd federation: a redis-server and three daemons as child
 * processes on loopback (free ports), blocking clients with bounded waits.
 * Every child is stopped by PID in the teardown (and dies with the test
 * process: PR_SET_PDEATHSIG). Skipped (77) without redis-server. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LEASE_MS 1500
#define NNODES 3

static const char *daemon_path(void) {
  const char *b = getenv("top_builddir");
  static char path[1024];
  snprintf(path, sizeof path, "%s/examples/chatd/hark-chatd", b ? b : ".");
  return path;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  socklen_t len = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &len);
  close(fd);
  return ntohs(sa.sin_port);
}

static int try_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* ---- children ------------------------------------------------------------ */

static pid_t spawn(char **argv, int *out_fd) {
  int p[2] = {-1, -1};
  if (out_fd != NULL)
    ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (out_fd != NULL) {
      dup2(p[1], 1);
      close(p[0]);
      close(p[1]);
    } else {
      int null = open("/dev/null", 1);
      dup2(null, 1);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  if (out_fd != NULL) {
    close(p[1]);
    *out_fd = p[0];
  }
  return pid;
}

static void stop_pid(pid_t *pid, int sig) {
  if (*pid <= 0)
    return;
  kill(*pid, sig);
  for (int i = 0; i < 500; i++) { /* 5 s, then SIGKILL */
    if (waitpid(*pid, NULL, WNOHANG) == *pid) {
      *pid = 0;
      return;
    }
    usleep(10000);
  }
  kill(*pid, SIGKILL);
  waitpid(*pid, NULL, 0);
  *pid = 0;
}

static int redis_port;
static pid_t redis_pid;
static pid_t node_pid[NNODES];
static int node_port[NNODES];

static void redis_start(void) {
  char port[16];
  snprintf(port, sizeof port, "%d", redis_port);
  char *argv[] = {"redis-server", "--port",       port,  "--bind",
                  "127.0.0.1",    "--save",       "",    "--appendonly",
                  "no",           "--loglevel",   "warning", NULL};
  redis_pid = spawn(argv, NULL);
  long long end = now_ms() + 5000;
  int fd;
  while ((fd = try_connect(redis_port)) < 0) {
    ck_assert_msg(now_ms() < end, "redis-server did not start");
    usleep(20000);
  }
  close(fd);
}

static void node_start(int i) {
  char redis[64], node[16], lease[16];
  snprintf(redis, sizeof redis, "127.0.0.1:%d", redis_port);
  snprintf(node, sizeof node, "n%d", i);
  snprintf(lease, sizeof lease, "%d", LEASE_MS);
  char *argv[] = {(char *)daemon_path(), "--listen", "127.0.0.1:0",
                  "--redis", redis, "--node-id", node, "--lease-ms", lease,
                  "--flood-rate", "0", "--log-level", "warn", NULL};
  int fd;
  node_pid[i] = spawn(argv, &fd);
  char buf[512];
  size_t len = 0;
  long long end = now_ms() + 5000;
  node_port[i] = 0;
  while (node_port[i] == 0 && now_ms() < end) {
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, 100) <= 0)
      continue;
    ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
    if (n <= 0)
      break;
    len += (size_t)n;
    buf[len] = '\0';
    const char *p = strstr(buf, "listening on 127.0.0.1:");
    if (p != NULL && strchr(p, '\n') != NULL)
      node_port[i] = atoi(p + strlen("listening on 127.0.0.1:"));
  }
  close(fd); /* the daemon prints nothing more on stdout */
  ck_assert_msg(node_port[i] > 0, "node %d did not start", i);
}

static void setup(void) {
  redis_port = free_port();
  redis_start();
  for (int i = 0; i < NNODES; i++)
    node_start(i);
}

static void teardown(void) {
  if (redis_pid > 0)
    kill(redis_pid, SIGCONT); /* test_shutdown_redis_hung stops it */
  for (int i = 0; i < NNODES; i++)
    stop_pid(&node_pid[i], SIGTERM);
  stop_pid(&redis_pid, SIGTERM);
}

/* ---- clients ------------------------------------------------------------- */

typedef struct client {
  int fd;
  char buf[1 << 16];
  size_t len;
  char line[1024];
} client;

static client *cl_new(int node) {
  client *c = calloc(1, sizeof *c);
  c->fd = try_connect(node_port[node]);
  ck_assert_int_ge(c->fd, 0);
  return c;
}

static void cl_send(client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void cl_send(client *c, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
  va_end(ap);
  memcpy(buf + n, "\r\n", 2);
  ck_assert_int_eq(send(c->fd, buf, (size_t)n + 2, MSG_NOSIGNAL), n + 2);
}

/* Next line into c->line within ms: 1, 0 on timeout, -1 on close. */
static int cl_line(client *c, int ms) {
  long long end = now_ms() + ms;
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl != NULL) {
      size_t n = (size_t)(nl - c->buf) + 1;
      size_t l = n - 1;
      if (l > 0 && c->buf[l - 1] == '\r')
        l--;
      if (l >= sizeof c->line)
        l = sizeof c->line - 1;
      memcpy(c->line, c->buf, l);
      c->line[l] = '\0';
      memmove(c->buf, c->buf + n, c->len - n);
      c->len -= n;
      return 1;
    }
    long long left = end - now_ms();
    if (left <= 0)
      return 0;
    struct pollfd pf = {c->fd, POLLIN, 0};
    if (poll(&pf, 1, (int)left) <= 0)
      continue;
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (r <= 0)
      return -1;
    c->len += (size_t)r;
  }
}

/* Waits for a line containing what; true if seen within ms. */
static bool cl_wait(client *c, const char *what, int ms) {
  long long end = now_ms() + ms;
  while (now_ms() < end) {
    int r = cl_line(c, (int)(end - now_ms()));
    if (r < 0)
      return false;
    if (r > 0 && strstr(c->line, what) != NULL)
      return true;
  }
  return false;
}

#define EXPECT(c, what)                                                        \
  ck_assert_msg(cl_wait((c), (what), 3000), "expected \"%s\" (last: %s)",     \
                (what), (c)->line)

/* Nothing matching what arrives within ms. */
static void cl_none(client *c, const char *what, int ms) {
  long long end = now_ms() + ms;
  while (now_ms() < end) {
    int r = cl_line(c, (int)(end - now_ms()));
    if (r > 0)
      ck_assert_msg(strstr(c->line, what) == NULL, "unexpected: %s", c->line);
  }
}

static void cl_free(client *c) {
  if (c == NULL)
    return;
  close(c->fd);
  free(c);
}

static client *cl_register(int node, const char *nick) {
  client *c = cl_new(node);
  cl_send(c, "NICK %s", nick);
  cl_send(c, "USER %s 0 * :Real %s", nick, nick);
  EXPECT(c, " 001 ");
  return c;
}

static void cl_join(client *c, const char *chan, const char *key) {
  if (key != NULL)
    cl_send(c, "JOIN %s %s", chan, key);
  else
    cl_send(c, "JOIN %s", chan);
  EXPECT(c, " 366 ");
}

/* ---- tests ----------------------------------------------------------- */

START_TEST(test_chat_across_nodes) {
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
  cl_send(a, "MODE #hark +k sesame");
  EXPECT(b, "MODE #hark +k sesame");
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

START_TEST(test_nick_collisions) {
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

START_TEST(test_node_killed) {
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
  kill(node_pid[2], SIGKILL);
  waitpid(node_pid[2], NULL, 0);
  node_pid[2] = 0;
  /* within the lease (plus scheduling slack): one QUIT per user */
  ck_assert(cl_wait(a, ":kim!kim@127.0.0.1 QUIT :Server n2 lost",
                    LEASE_MS + 1500));
  long long took = now_ms() - t0;
  ck_assert_msg(took <= LEASE_MS + 1000, "node loss seen after %lld ms",
                took);
  EXPECT(b, ":kim!kim@127.0.0.1 QUIT :Server n2 lost");
  EXPECT(b, ":kit!kit@127.0.0.1 QUIT :Server n2 lost");
  cl_none(a, ":kim!", 500); /* once, though in two channels */
  cl_send(b, "NAMES #c");
  EXPECT(b, " 353 ");
  ck_assert_ptr_null(strstr(b->line, "kim"));
  ck_assert_ptr_null(strstr(b->line, "kit"));
  /* their nicks expire with the lease */
  client *n = cl_register(1, "kim");
  cl_free(n);
  cl_free(a);
  cl_free(b);
  cl_free(k);
  cl_free(k2);
}
END_TEST

START_TEST(test_redis_restart) {
  client *a = cl_register(0, "ari");
  client *a2 = cl_register(0, "ava");
  client *b = cl_register(1, "bo");
  cl_join(a, "#r", NULL);
  cl_join(a2, "#r", NULL);
  cl_join(b, "#r", NULL);
  EXPECT(a, ":bo!");
  cl_send(b, "PRIVMSG #r :before");
  EXPECT(a, "PRIVMSG #r :before");
  stop_pid(&redis_pid, SIGTERM);
  usleep(200000);
  /* local traffic goes on */
  cl_send(a2, "PRIVMSG #r :during, locally");
  EXPECT(a, ":ava!ava@127.0.0.1 PRIVMSG #r :during, locally");
  client *l = cl_register(0, "lou"); /* registers and joins, locally */
  cl_join(l, "#local", NULL);
  cl_none(b, "during", 300); /* lost: Redis is gone */
  redis_start();
  /* the nodes reconnect (backoff) and resubscribe: chat resumes */
  long long end = now_ms() + 8000;
  bool through = false;
  int n = 0;
  while (!through && now_ms() < end) {
    cl_send(b, "PRIVMSG #r :after %d", n++);
    through = cl_wait(a, "PRIVMSG #r :after", 300);
  }
  ck_assert_msg(through, "chat did not resume after Redis came back");
  cl_send(a, "PRIVMSG #r :back");
  EXPECT(b, "PRIVMSG #r :back");
  /* nicks are claimed again: lou (registered during the outage) too */
  usleep(LEASE_MS * 1000 / 2);
  client *c = cl_new(2);
  cl_send(c, "NICK lou");
  EXPECT(c, " 433 * lou ");
  cl_send(c, "NICK ari");
  EXPECT(c, " 433 * ari ");
  /* the membership is back in Redis: a new node-2 member sees everyone */
  cl_send(c, "NICK cy");
  cl_send(c, "USER cy 0 * :cy");
  EXPECT(c, " 001 ");
  cl_send(c, "JOIN #r");
  EXPECT(c, " 353 ");
  ck_assert_ptr_nonnull(strstr(c->line, "ari"));
  ck_assert_ptr_nonnull(strstr(c->line, "ava"));
  ck_assert_ptr_nonnull(strstr(c->line, "bo"));
  cl_free(a);
  cl_free(a2);
  cl_free(b);
  cl_free(l);
  cl_free(c);
}
END_TEST

/* Senders on every node flat out; every receiver sees each sender's
 * messages exactly once and in order. */
#define SENDERS 3
#define RECEIVERS 3
#define PER_SENDER 300

START_TEST(test_order_per_sender) {
  client *s[SENDERS], *r[RECEIVERS];
  char nick[32];
  for (int i = 0; i < SENDERS; i++) {
    snprintf(nick, sizeof nick, "snd%d", i);
    s[i] = cl_register(i % NNODES, nick);
    cl_join(s[i], "#order", NULL);
  }
  for (int i = 0; i < RECEIVERS; i++) {
    snprintf(nick, sizeof nick, "rcv%d", i);
    r[i] = cl_register(i % NNODES, nick);
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
      ck_assert_msg(k == next[si], "receiver %d: sender %d: got %d, want %d",
                    j, si, k, next[si]);
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


/* Whether a NAMES reply line lists nick (with or without @). */
static bool names_has(const char *line, const char *nick) {
  const char *p = strstr(line, " :");
  if (p == NULL)
    return false;
  p += 2;
  size_t n = strlen(nick);
  while (*p) {
    if (*p == '@')
      p++;
    size_t w = strcspn(p, " ");
    if (w == n && strncmp(p, nick, n) == 0)
      return true;
    p += w;
    while (*p == ' ')
      p++;
  }
  return false;
}

START_TEST(test_private_across_nodes) {
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
  cl_none(b, " 401 ", 300); /* NOTICE never gets an error */
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

START_TEST(test_list_names_network) {
  client *a = cl_register(0, "al");
  client *b = cl_register(1, "bea");
  client *c = cl_register(2, "cat");
  cl_join(b, "#far", NULL);
  cl_send(b, "TOPIC #far :far away");
  EXPECT(b, "TOPIC #far :far away");
  cl_join(c, "#Far", NULL);
  EXPECT(b, ":cat!");
  cl_join(b, "#sec", NULL);
  cl_send(b, "MODE #sec +k hush");
  EXPECT(b, "MODE #sec +k hush");
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
  ck_assert_msg(!sec, "a keyed channel listed to an outsider");
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
  cl_send(a, "NAMES #sec"); /* keyed: nothing for an outsider */
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

/* PART, NICK and JOIN pipelined: the JOIN waits for the new nick's claim
 * (input runs in order), and the member is there under its new nick
 * only. */
START_TEST(test_rename_during_join) {
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

/* SIGTERM while Redis hangs (SIGSTOP): the node still stops, cleanly,
 * within its guard. */
START_TEST(test_shutdown_redis_hung) {
  client *a = cl_register(0, "hal");
  cl_join(a, "#h", NULL);
  kill(redis_pid, SIGSTOP);
  cl_send(a, "PRIVMSG #h :into the void");
  usleep(100000);
  long long t0 = now_ms();
  kill(node_pid[0], SIGTERM);
  int status = -1;
  pid_t r = 0;
  while ((r = waitpid(node_pid[0], &status, WNOHANG)) == 0 &&
         now_ms() - t0 < 6000)
    usleep(10000);
  long long took = now_ms() - t0;
  kill(redis_pid, SIGCONT);
  ck_assert_msg(r == node_pid[0], "the node hung at shutdown");
  node_pid[0] = 0;
  ck_assert_msg(took < 3500, "shutdown took %lld ms", took);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  cl_free(a);
}
END_TEST

/* ---- pipelined input: lines run in order across Redis round trips ----- */

/* Sends n bytes, however many writes that takes. */
static void cl_raw(client *c, const char *data, size_t n) {
  while (n > 0) {
    ssize_t w = send(c->fd, data, n, MSG_NOSIGNAL);
    ck_assert_msg(w > 0, "send: %s", strerror(errno));
    data += w;
    n -= (size_t)w;
  }
}

/* Reads c's lines until one contains until (fails after 3 s), failing on
 * any containing bad; returns how many contained count. */
static int cl_until(client *c, const char *until, const char *bad,
                    const char *count) {
  int n = 0;
  for (;;) {
    ck_assert_msg(cl_line(c, 3000) > 0, "waiting for \"%s\" (last: %s)",
                  until, c->line);
    ck_assert_msg(bad == NULL || strstr(c->line, bad) == NULL,
                  "unexpected: %s", c->line);
    if (count != NULL && strstr(c->line, count) != NULL)
      n++;
    if (strstr(c->line, until) != NULL)
      return n;
  }
}

/* NICK, USER, JOIN and PRIVMSG in one write: each waits for the one
 * before, NICK and JOIN for Redis; then a flood of lines past the input
 * buffer while the JOIN is out: the socket pushes back, nothing is lost,
 * everything in order. */
START_TEST(test_pipelined_registration) {
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
  enum { N = 2000 };
  size_t cap = 64 + (size_t)N * 32, len = 0;
  char *buf = malloc(cap);
  len += (size_t)snprintf(buf + len, cap - len, "JOIN #flood\r\n");
  for (int k = 0; k < N; k++)
    len += (size_t)snprintf(buf + len, cap - len, "PRIVMSG #pipe :f %d\r\n",
                            k);
  cl_raw(a, buf, len);
  free(buf);
  cl_until(a, " 366 pa #flood ", " 404 ", NULL);
  for (int k = 0; k < N; k++) {
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

/* JOIN then TOPIC at once: the TOPIC finds the member (no 442), on a
 * channel new to the network and on one with members elsewhere only. */
START_TEST(test_pipelined_join_topic) {
  client *a = cl_register(0, "ta");
  client *b = cl_register(1, "tb");
  cl_send(a, "JOIN #tp\r\nTOPIC #tp :set at once\r\nTOPIC #tp");
  cl_until(a, " 366 ta #tp ", " 442 ", NULL);
  cl_until(a, ":ta!ta@127.0.0.1 TOPIC #tp :set at once", " 442 ", NULL);
  cl_until(a, " 332 ta #tp :set at once", " 442 ", NULL);
  /* (node 0's writes to Redis may trail its replies to a: a WHOIS, in
   * order behind them on its connection, waits for them) */
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

/* A client gone while its NICK claim (and the lines after it) wait: no
 * crash, and the nick is free again at once, not after the lease. */
START_TEST(test_gone_during_claim) {
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
    while (!got && now_ms() - t0 < LEASE_MS) {
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

/* Redis dies (SIGKILL while stopped) with a pipelined registration
 * waiting for it: the node answers locally, in order. */
START_TEST(test_pipeline_redis_lost) {
  client *a = cl_new(0);
  /* our own connection to Redis: scripts wait (CLIENT PAUSE WRITE), then
   * the nodes' command connections are closed under them */
  client *r = calloc(1, sizeof *r);
  r->fd = try_connect(redis_port);
  ck_assert_int_ge(r->fd, 0);
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

/* Redis hangs (SIGSTOP) with a NICK out: the session's later lines run
 * after the hold timeout (5 s) rather than never. */
START_TEST(test_hold_timeout) {
  client *a = cl_new(0);
  kill(redis_pid, SIGSTOP);
  cl_send(a, "NICK ht\r\nPING :late");
  long long t0 = now_ms();
  ck_assert_msg(cl_wait(a, "PONG", 9000), "no PONG (last: %s)", a->line);
  long long took = now_ms() - t0;
  kill(redis_pid, SIGCONT);
  ck_assert_msg(took >= 4000, "PONG before the claim's reply: %lld ms", took);
  /* the late reply applies the NICK; the node goes on */
  cl_send(a, "USER ht 0 * :ht");
  EXPECT(a, " 001 ht ");
  cl_free(a);
}
END_TEST

static bool have_redis(void) {
  return system("command -v redis-server >/dev/null 2>&1") == 0;
}

int main(void) {
  if (!have_redis()) {
    printf("SKIP: redis-server is not installed "
           "(apt-get install redis-server)\n");
    return 77;
  }
  if (access(daemon_path(), X_OK) != 0) {
    printf("SKIP: %s not built\n", daemon_path());
    return 77;
  }
  signal(SIGPIPE, SIG_IGN);
  Suite *s = suite_create("federation");
  TCase *tc = tcase_create("three nodes");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_chat_across_nodes);
  tcase_add_test(tc, test_nick_collisions);
  tcase_add_test(tc, test_node_killed);
  tcase_add_test(tc, test_redis_restart);
  tcase_add_test(tc, test_order_per_sender);
  tcase_add_test(tc, test_private_across_nodes);
  tcase_add_test(tc, test_list_names_network);
  tcase_add_test(tc, test_rename_during_join);
  tcase_add_test(tc, test_shutdown_redis_hung);
  tcase_add_test(tc, test_pipelined_registration);
  tcase_add_test(tc, test_pipelined_join_topic);
  tcase_add_test(tc, test_gone_during_claim);
  tcase_add_test(tc, test_pipeline_redis_lost);
  tcase_add_test(tc, test_hold_timeout);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
