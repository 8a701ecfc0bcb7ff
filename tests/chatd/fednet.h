/* A federated hark-chatd network for tests: a redis-server and daemons as
 * child processes on loopback (free ports), each daemon's stderr in a
 * file the test can search, blocking IRC clients with bounded waits.
 * Every child is stopped by PID in the teardown and dies with the test
 * process (PR_SET_PDEATHSIG). A test program skips (77) without
 * redis-server. */
#ifndef CHATD_FEDNET_H
#define CHATD_FEDNET_H

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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_NODES 4

static inline const char *daemon_path(void) {
  const char *b = getenv("top_builddir");
  static char path[1024];
  snprintf(path, sizeof path, "%s/examples/chatd/hark-chatd", b ? b : ".");
  return path;
}

static inline long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int free_port(void) {
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

static inline int try_connect(int port) {
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

/* ---- children ---------------------------------------------------------- */

/* Runs argv with stdout to a pipe (*out_fd), else to err_path like stderr
 * (NULL: /dev/null): redis-server logs to stdout, and why it exited must be
 * in its log. */
static inline pid_t spawn(char **argv, int *out_fd, const char *err_path) {
  int p[2] = {-1, -1};
  if (out_fd != NULL)
    ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = open("/dev/null", O_WRONLY);
    int err =
        err_path ? open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0644) : null;
    if (err < 0)
      err = null;
    if (out_fd != NULL) {
      dup2(p[1], 1);
      close(p[0]);
      close(p[1]);
    } else {
      dup2(err, 1);
    }
    dup2(err, 2);
    execvp(argv[0], argv);
    _exit(127);
  }
  if (out_fd != NULL) {
    close(p[1]);
    *out_fd = p[0];
  }
  return pid;
}

/* Stops *pid with sig (SIGKILL after 5 s) and returns its wait status. */
static inline int stop_pid(pid_t *pid, int sig) {
  int status = 0;
  if (*pid <= 0)
    return 0;
  kill(*pid, SIGCONT); /* a stopped child cannot handle SIGTERM */
  kill(*pid, sig);
  for (int i = 0; i < 500; i++) { /* 5 s, then SIGKILL */
    if (waitpid(*pid, &status, WNOHANG) == *pid) {
      *pid = 0;
      return status;
    }
    usleep(10000);
  }
  kill(*pid, SIGKILL);
  waitpid(*pid, &status, 0);
  *pid = 0;
  return status;
}

/* The network: set the fields, then net_redis() and net_node(i). */
typedef struct net {
  char dir[128]; /* a temporary directory: logs, AOF, certificates */
  int redis_port;
  pid_t redis_pid;
  const char *redis_args[48]; /* more arguments to redis-server */
  int nredis_args;
  bool redis_plain_off; /* TLS only: redis_port is the tls-port */
  int lease_ms, timeout_ms;
  const char *node_args[16]; /* more arguments to every daemon */
  int nnode_args;
  pid_t pid[MAX_NODES];
  int port[MAX_NODES];
} net;

static net N;

static inline int net_stop(void);

/* Also when an assertion ends the test's process (Check exits it): no
 * child and no directory is left behind. */
static inline void net_atexit(void) { net_stop(); }

static inline void net_init(void) {
  static bool registered;
  if (!registered) {
    registered = true;
    atexit(net_atexit);
  }
  memset(&N, 0, sizeof N);
  snprintf(N.dir, sizeof N.dir, "/tmp/hark-fed-%d-XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(N.dir));
  N.redis_port = free_port();
  N.lease_ms = 1500;
  N.timeout_ms = 1000;
}

static inline void redis_arg(const char *a) {
  ck_assert_int_lt(N.nredis_args, 48);
  N.redis_args[N.nredis_args++] = a;
}
static inline void node_arg(const char *a) {
  ck_assert_int_lt(N.nnode_args, 16);
  N.node_args[N.nnode_args++] = a;
}

/* Whether any daemon of the network has been started (and so knows
 * N.redis_port). */
static inline bool net_nodes_started(void) {
  for (int i = 0; i < MAX_NODES; i++)
    if (N.pid[i] > 0)
      return true;
  return false;
}

/* Starts redis-server on N.redis_port and waits until it accepts. The port
 * came from free_port(), which closes it again: until redis-server binds
 * it, any outgoing connection on this machine may take it as its own
 * ephemeral port, and redis-server then exits at once ("Address already in
 * use", in its log). Before any daemon was told the port, another one is
 * tried; a restart must keep the port the daemons know. */
static inline void net_redis(void) {
  char log[256];
  snprintf(log, sizeof log, "%s/redis.log", N.dir);
  for (int attempt = 1;; attempt++) {
    char port[16];
    snprintf(port, sizeof port, "%d", N.redis_port);
    char *argv[80];
    int n = 0;
    argv[n++] = "redis-server";
    argv[n++] = "--port";
    argv[n++] = N.redis_plain_off ? "0" : port;
    if (N.redis_plain_off) {
      argv[n++] = "--tls-port";
      argv[n++] = port;
    }
    char *base[] = {"--bind",     "127.0.0.1", "--save", "",
                    "--loglevel", "warning",   "--dir",  N.dir};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
      argv[n++] = base[i];
    for (int i = 0; i < N.nredis_args; i++)
      argv[n++] = (char *)N.redis_args[i];
    argv[n] = NULL;
    N.redis_pid = spawn(argv, NULL, log);
    long long end = now_ms() + 5000;
    int fd;
    bool exited = false;
    while ((fd = try_connect(N.redis_port)) < 0) {
      ck_assert_msg(now_ms() < end, "redis-server did not start");
      if (waitpid(N.redis_pid, NULL, WNOHANG) != 0) {
        exited = true;
        break;
      }
      usleep(20000);
    }
    if (!exited) {
      close(fd);
      return;
    }
    N.redis_pid = 0;
    ck_assert_msg(attempt < 5 && !net_nodes_started(),
                  "redis-server exited (see %s)", log);
    N.redis_port = free_port();
  }
}

static inline void net_node_with(int i, const char *const *extra, int nextra) {
  char redis[64], node[16], lease[16], timeout[16], err[256];
  snprintf(redis, sizeof redis, "127.0.0.1:%d", N.redis_port);
  snprintf(node, sizeof node, "n%d", i);
  snprintf(lease, sizeof lease, "%d", N.lease_ms);
  snprintf(timeout, sizeof timeout, "%d", N.timeout_ms);
  snprintf(err, sizeof err, "%s/n%d.log", N.dir, i);
  char *argv[64];
  int n = 0;
  char *base[] = {(char *)daemon_path(),
                  "--listen",
                  "127.0.0.1:0",
                  "--redis",
                  redis,
                  "--node-id",
                  node,
                  "--lease-ms",
                  lease,
                  "--redis-timeout-ms",
                  timeout,
                  "--flood-rate",
                  "0",
                  "--log-level",
                  "info"};
  for (size_t k = 0; k < sizeof base / sizeof base[0]; k++)
    argv[n++] = base[k];
  for (int k = 0; k < N.nnode_args; k++)
    argv[n++] = (char *)N.node_args[k];
  for (int k = 0; k < nextra; k++)
    argv[n++] = (char *)extra[k];
  argv[n] = NULL;
  int fd;
  N.pid[i] = spawn(argv, &fd, err);
  char buf[512];
  size_t len = 0;
  long long end = now_ms() + 5000;
  N.port[i] = 0;
  while (N.port[i] == 0 && now_ms() < end) {
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, 100) <= 0)
      continue;
    ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
    if (r <= 0)
      break;
    len += (size_t)r;
    buf[len] = '\0';
    const char *p = strstr(buf, "listening on 127.0.0.1:");
    if (p != NULL && strchr(p, '\n') != NULL)
      N.port[i] = atoi(p + strlen("listening on 127.0.0.1:"));
  }
  close(fd); /* the daemon prints nothing more on stdout */
  ck_assert_msg(N.port[i] > 0, "node %d did not start (see %s)", i, err);
}

static inline void net_node(int i) { net_node_with(i, NULL, 0); }

/* Whether node i's log has a line containing what, within ms. */
static inline bool node_log_has(int i, const char *what, int ms) {
  char path[256];
  snprintf(path, sizeof path, "%s/n%d.log", N.dir, i);
  long long end = now_ms() + ms;
  do {
    FILE *f = fopen(path, "r");
    char line[2048];
    bool found = false;
    while (f != NULL && !found && fgets(line, sizeof line, f) != NULL)
      found = strstr(line, what) != NULL;
    if (f != NULL)
      fclose(f);
    if (found)
      return true;
    usleep(20000);
  } while (now_ms() < end);
  return false;
}

/* How many lines of node i's log contain what. */
static inline int node_log_count(int i, const char *what) {
  char path[256], line[2048];
  snprintf(path, sizeof path, "%s/n%d.log", N.dir, i);
  FILE *f = fopen(path, "r");
  int n = 0;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    n += strstr(line, what) != NULL;
  if (f != NULL)
    fclose(f);
  return n;
}

/* Stops everything. Returns how many daemons did not stop cleanly on
 * SIGTERM (exit status 0: everything freed, uv_loop_close == 0; under
 * the sanitizers, no leak), each named on stderr. */
static inline int net_stop(void) {
  int unclean = 0;
  if (N.redis_pid > 0)
    kill(N.redis_pid, SIGCONT);
  for (int i = 0; i < MAX_NODES; i++) {
    if (N.pid[i] <= 0)
      continue;
    int st = stop_pid(&N.pid[i], SIGTERM);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "node %d did not stop cleanly (status %#x, see %s)\n",
              i, st, N.dir);
      unclean++;
    }
  }
  stop_pid(&N.redis_pid, SIGTERM);
  if (unclean == 0 && N.dir[0] != '\0' && getenv("HARK_KEEP_LOGS") == NULL) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", N.dir);
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", N.dir);
  }
  N.dir[0] = '\0';
  return unclean;
}

/* ---- clients ------------------------------------------------------------- */

typedef struct client {
  int fd;
  char buf[1 << 16];
  size_t len;
  char line[2048];
} client;

static inline client *cl_port(int port) {
  client *c = calloc(1, sizeof *c);
  c->fd = try_connect(port);
  ck_assert_int_ge(c->fd, 0);
  return c;
}

static inline client *cl_new(int node) { return cl_port(N.port[node]); }

/* Sends n bytes, however many writes that takes. */
static inline void cl_raw(client *c, const char *data, size_t n) {
  while (n > 0) {
    ssize_t w = send(c->fd, data, n, MSG_NOSIGNAL);
    ck_assert_msg(w > 0, "send: %s", strerror(errno));
    data += w;
    n -= (size_t)w;
  }
}

static inline void cl_send(client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void cl_send(client *c, const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
  va_end(ap);
  memcpy(buf + n, "\r\n", 2);
  cl_raw(c, buf, (size_t)n + 2);
}

/* Next line into c->line within ms: 1, 0 on timeout, -1 on close. */
static inline int cl_line(client *c, int ms) {
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
static inline bool cl_wait(client *c, const char *what, int ms) {
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
  ck_assert_msg(cl_wait((c), (what), 3000), "expected \"%s\" (last: %s)",      \
                (what), (c)->line)

/* Nothing matching what arrives within ms. */
static inline void cl_none(client *c, const char *what, int ms) {
  long long end = now_ms() + ms;
  while (now_ms() < end) {
    int r = cl_line(c, (int)(end - now_ms()));
    if (r > 0)
      ck_assert_msg(strstr(c->line, what) == NULL, "unexpected: %s", c->line);
    if (r < 0)
      return;
  }
}

/* Reads c's lines until one contains until (fails after 3 s), failing on
 * any containing bad; returns how many contained count. */
static inline int cl_until(client *c, const char *until, const char *bad,
                           const char *count) {
  int n = 0;
  for (;;) {
    ck_assert_msg(cl_line(c, 3000) > 0, "waiting for \"%s\" (last: %s)", until,
                  c->line);
    ck_assert_msg(bad == NULL || strstr(c->line, bad) == NULL, "unexpected: %s",
                  c->line);
    if (count != NULL && strstr(c->line, count) != NULL)
      n++;
    if (strstr(c->line, until) != NULL)
      return n;
  }
}

static inline void cl_free(client *c) {
  if (c == NULL)
    return;
  close(c->fd);
  free(c);
}

static inline client *cl_register(int node, const char *nick) {
  client *c = cl_new(node);
  cl_send(c, "NICK %s", nick);
  cl_send(c, "USER %s 0 * :Real %s", nick, nick);
  EXPECT(c, " 001 ");
  return c;
}

static inline void cl_join(client *c, const char *chan, const char *key) {
  if (key != NULL)
    cl_send(c, "JOIN %s %s", chan, key);
  else
    cl_send(c, "JOIN %s", chan);
  EXPECT(c, " 366 ");
}

/* Whether a NAMES reply line lists nick (with or without @). */
static inline bool names_has(const char *line, const char *nick) {
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

static inline int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* c's NAMES of chan, sorted, operators with their '@', into out. */
static inline void names_of(client *c, const char *chan, char *out,
                            size_t cap) {
  char all[4096] = "";
  size_t len = 0;
  cl_send(c, "NAMES %s", chan);
  for (;;) {
    ck_assert_msg(cl_line(c, 3000) > 0, "NAMES %s did not end", chan);
    if (strstr(c->line, " 366 ") != NULL)
      break;
    if (strstr(c->line, " 353 ") == NULL)
      continue;
    const char *p = strstr(c->line + 1, " :");
    len += (size_t)snprintf(all + len, sizeof all - len, "%s ", p + 2);
  }
  char *words[256];
  int n = 0;
  for (char *w = strtok(all, " "); w != NULL && n < 256; w = strtok(NULL, " "))
    words[n++] = w;
  qsort(words, (size_t)n, sizeof *words, cmp_str);
  size_t o = 0;
  out[0] = '\0';
  for (int i = 0; i < n; i++)
    o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? " " : "", words[i]);
}

/* A raw connection to Redis (RESP typed by hand). */
static inline client *redis_client(void) {
  client *r = cl_port(N.redis_port);
  return r;
}

static inline bool have_redis(void) {
  return system("command -v redis-server >/dev/null 2>&1") == 0;
}

/* The common main of the federation test programs. */
static inline int fednet_main(Suite *s) {
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
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}

#endif
