/* The integration tests' side of hark-chatd: the daemon on its own thread
 * and loop (port 0), and blocking TCP clients with bounded waits. */
#ifndef CHATD_TEST_CLIENT_H
#define CHATD_TEST_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../util.h"
#include "chatd.h"

/* ---- the daemon on a thread ------------------------------------------- */

typedef struct test_server {
  chat_options opt;
  uv_loop_t loop;
  chat_server srv;
  uv_async_t stop;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int port;       /* 0 until listening, -1 on failure */
  int loop_close; /* uv_loop_close's result */
} test_server;

static void ts_on_stop(uv_async_t *a) {
  test_server *ts = a->data;
  server_stop(&ts->srv, "Server shutting down");
  uv_close((uv_handle_t *)&ts->stop, NULL);
}

static void *ts_main(void *arg) {
  test_server *ts = arg;
  uv_loop_init(&ts->loop);
  uv_async_init(&ts->loop, &ts->stop, ts_on_stop);
  ts->stop.data = ts;
  int r = server_start(&ts->srv, &ts->loop, &ts->opt);
  pthread_mutex_lock(&ts->mu);
  ts->port = r == 0 ? ts->srv.port : -1;
  pthread_cond_signal(&ts->cv);
  pthread_mutex_unlock(&ts->mu);
  if (r != 0)
    uv_close((uv_handle_t *)&ts->stop, NULL);
  uv_run(&ts->loop, UV_RUN_DEFAULT);
  server_free(&ts->srv);
  ts->loop_close = uv_loop_close(&ts->loop);
  return NULL;
}

/* Options for tests: everything on, short enough to observe. */
static inline void ts_options(chat_options *o) {
  chat_options_default(o);
  snprintf(o->host, sizeof o->host, "127.0.0.1");
  o->port = 0;
  snprintf(o->name, sizeof o->name, "test.hark");
  o->flood_rate = 0;
  o->log_level = LOG_WARN;
}

static inline int ts_start(test_server *ts) {
  signal(SIGPIPE, SIG_IGN);
  log_set_level((enum log_level)ts->opt.log_level);
  pthread_mutex_init(&ts->mu, NULL);
  pthread_cond_init(&ts->cv, NULL);
  ts->port = 0;
  ck_assert_int_eq(pthread_create(&ts->thread, NULL, ts_main, ts), 0);
  pthread_mutex_lock(&ts->mu);
  while (ts->port == 0)
    pthread_cond_wait(&ts->cv, &ts->mu);
  pthread_mutex_unlock(&ts->mu);
  ck_assert_int_gt(ts->port, 0);
  return ts->port;
}

/* Stops the daemon as SIGTERM would and checks the loop closed cleanly. */
static inline void ts_stop(test_server *ts) {
  uv_async_send(&ts->stop);
  pthread_join(ts->thread, NULL);
  ck_assert_int_eq(ts->loop_close, 0);
}

/* ---- clients ------------------------------------------------------------ */

typedef struct client {
  int fd;
  char buf[1 << 16];
  size_t len;
  char line[1024];
} client;

/* HARK_TEST_SCALE, as in tests/util.h: a value between 0 and 1 multiplies
 * the big counts (0.05 under valgrind), one above 1 divides them. */
static inline int scaled(int n) {
  const char *s = getenv("HARK_TEST_SCALE");
  double f = s ? strtod(s, NULL) : 1.0;
  if (f > 1.0)
    f = 1.0 / f;
  if (!(f > 0.0) || f > 1.0)
    f = 1.0;
  int v = (int)(n * f);
  return v < 2 ? 2 : v;
}

static inline client *cl_connect(int port) {
  client *c = calloc(1, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(c->fd, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return c;
}

static inline void cl_raw(client *c, const void *data, size_t n) {
  const char *p = data;
  while (n > 0) {
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    ck_assert_msg(w > 0, "send: %s", strerror(errno));
    p += w;
    n -= (size_t)w;
  }
}

static inline void cl_send(client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void cl_send(client *c, const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
  va_end(ap);
  memcpy(buf + n, "\r\n", 2);
  cl_raw(c, buf, (size_t)n + 2);
}

/* Reads the next line into c->line within ms; returns 1, 0 on timeout,
 * -1 when the server closed the connection. */
static inline int cl_line(client *c, int ms) {
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl != NULL) {
      size_t n = (size_t)(nl - c->buf) + 1;
      size_t k = n < sizeof c->line ? n : sizeof c->line - 1;
      memcpy(c->line, c->buf, k);
      c->line[k] = '\0';
      memmove(c->buf, c->buf + n, c->len - n);
      c->len -= n;
      return 1;
    }
    struct pollfd pfd = {c->fd, POLLIN, 0};
    if (poll(&pfd, 1, ms) <= 0)
      return 0;
    if (c->len == sizeof c->buf)
      c->len = 0; /* a line this long is a failure found elsewhere */
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (r <= 0)
      return -1;
    c->len += (size_t)r;
  }
}

/* Waits (at most ms) for a line containing want; fails the test if none. */
static inline const char *cl_expect_ms(client *c, const char *want, int ms,
                                       const char *file, int lineno) {
  for (;;) {
    int r = cl_line(c, ms);
    ck_assert_msg(r == 1, "%s:%d: waiting for '%s': %s", file, lineno, want,
                  r == 0 ? "timed out" : "connection closed");
    if (strstr(c->line, want) != NULL)
      return c->line;
  }
}
#define cl_expect(c, want) cl_expect_ms(c, want, 5000, __FILE__, __LINE__)

/* Reads for ms and fails if a line containing bad shows up. */
static inline void cl_expect_none(client *c, const char *bad, int ms) {
  while (cl_line(c, ms) == 1)
    ck_assert_msg(strstr(c->line, bad) == NULL, "unexpected line: %s",
                  c->line);
}

/* Round trip: every line the server sent before the PONG is consumed. */
static inline void cl_sync(client *c) {
  static int token;
  char want[32];
  snprintf(want, sizeof want, "sync%d", ++token);
  cl_send(c, "PING %s", want);
  cl_expect(c, want);
}

static inline client *cl_register(int port, const char *nick) {
  client *c = cl_connect(port);
  cl_send(c, "NICK %s", nick);
  cl_send(c, "USER %s 0 * :Test %s", nick, nick);
  cl_expect(c, " 001 ");
  cl_expect(c, " 422 ");
  return c;
}

static inline void cl_close(client *c) {
  if (c == NULL)
    return;
  close(c->fd);
  free(c);
}

/* Closes with a reset instead of a FIN: an abrupt disconnect. */
static inline void cl_reset(client *c) {
  struct linger l = {1, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  cl_close(c);
}

/* Waits until the server's STATS reply has "key value". */
static inline void cl_wait_stat(client *c, const char *key, long value,
                                int ms) {
  char want[64];
  snprintf(want, sizeof want, "%s %ld ", key, value);
  for (int waited = 0;; waited += 20) {
    cl_send(c, "STATS h");
    const char *l = cl_expect(c, " 249 ");
    if (strstr(l, want) != NULL)
      return;
    ck_assert_msg(waited < ms, "stats never reached '%s': %s", want, l);
    usleep(20000);
  }
}

#endif
