/* An asynchronous Redis connection on libuv: see redis.h. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#ifdef HARK_CHATD_REDIS
#include "redis.h"

#include <hiredis/read.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

/* A timer that fires this late found the loop stalled (the process was
 * stopped, or swamped): the replies may be sitting unread in the socket,
 * so the sockets get one poll before a timeout is declared. */
#define STALL_MS 200

enum { ST_RESOLVING, ST_CONNECTING, ST_TLS, ST_AUTH, ST_READY, ST_DOWN };

/* What a reply answers: a command of the owner, or one of the handshake. */
enum { P_USER, P_AUTH, P_NAME, P_PING };

typedef struct pending {
  redis_cb cb;
  void *data;
  uint64_t sent_at, deadline;
  int kind;
} pending;

struct redis_conn {
  uv_loop_t *loop;
  char *host, *user, *password, *name;
  int port;
  chat_tls_ctx *tls_ctx;
  unsigned connect_ms, command_ms;
  redis_events ev;
  void *data;
  int state;
  bool freed;
  int open; /* handles and requests whose callbacks are still due */
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_prepare_t prepare;
  uv_check_t check;
  uv_getaddrinfo_t gai;
  uv_connect_t creq;
  bool tcp_inited, gai_active;
  uint64_t connect_deadline, timer_due;
  bool grace; /* a stalled loop's poll is being waited for */
  /* A failure found inside redis_connect, reported from the loop: the
   * owner has not got its pointer yet. */
  char early[300];
  bool early_config;
  chat_tls *tls;
  redisReader *reader;
  pending *q;
  size_t qhead, qcount, qcap;
  char *out;
  size_t outlen, outcap;
  uint64_t slowest;
  struct arena_block *arena;
  char rbuf[65536];
};

typedef struct write_req {
  uv_write_t req;
  redis_conn *c;
  char *buf;
} write_req;

/* ---- reply objects: hiredis's reader, our arena ---------------------- */

/* A reply's objects (a stream read is thousands) are cut from blocks that
 * go back in one step once its callback has run: no malloc per element.
 * The reader builds the next reply only when asked for it, so resetting
 * between replies never frees a part of one. */
typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  max_align_t data[];
} arena_block;

#define ARENA_BLOCK 65536

static void *arena_alloc(redis_conn *c, size_t n) {
  n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
  arena_block *b = c->arena;
  if (b == NULL || b->cap - b->used < n) {
    size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    arena_block *nb = chat_malloc(sizeof *nb + cap);
    if (nb == NULL)
      return NULL;
    nb->used = 0;
    nb->cap = cap;
    nb->next = b;
    c->arena = b = nb;
  }
  void *p = (char *)b->data + b->used;
  b->used += n;
  return p;
}

/* Keeps one block for the next reply; frees everything with all. */
static void arena_reset(redis_conn *c, bool all) {
  arena_block *b = c->arena;
  while (b != NULL && (all || b->next != NULL)) {
    arena_block *next = b->next;
    chat_free(b);
    b = next;
  }
  c->arena = b;
  if (b != NULL)
    b->used = 0;
}

static void reply_free(void *p) {} /* the arena's */

static rreply *reply_new(const redisReadTask *task, int type) {
  rreply *r = arena_alloc(task->privdata, sizeof *r);
  if (r == NULL)
    return NULL;
  memset(r, 0, sizeof *r);
  r->type = type;
  if (task->parent != NULL) { /* the reader leaves linking to us */
    rreply *parent = task->parent->obj;
    parent->element[task->idx] = r;
  }
  return r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len) {
  char *copy = arena_alloc(task->privdata, len + 1);
  rreply *r = copy != NULL ? reply_new(task, task->type) : NULL;
  if (r == NULL)
    return NULL;
  memcpy(copy, str, len);
  copy[len] = '\0';
  r->str = copy;
  r->len = len;
  return r;
}

static void *create_array(const redisReadTask *task, int n) {
  rreply **el =
      n > 0 ? arena_alloc(task->privdata, (size_t)n * sizeof *el) : NULL;
  if (n > 0 && el == NULL)
    return NULL;
  rreply *r = reply_new(task, RREPLY_ARRAY);
  if (r == NULL)
    return NULL;
  if (n > 0)
    memset(el, 0, (size_t)n * sizeof *el);
  r->element = el;
  r->elements = n > 0 ? (size_t)n : 0;
  return r;
}

static void *create_integer(const redisReadTask *task, long long v) {
  rreply *r = reply_new(task, RREPLY_INTEGER);
  if (r != NULL)
    r->integer = v;
  return r;
}

static void *create_nil(const redisReadTask *task) {
  return reply_new(task, RREPLY_NIL);
}

static redisReplyObjectFunctions reply_fns = {
    create_string, create_array, create_integer, create_nil, reply_free};

/* ---- life ----------------------------------------------------------- */

/* One of the handles or requests is done with c: the last frees it. */
static void unref_conn(redis_conn *c) {
  if (--c->open > 0)
    return;
  if (c->reader != NULL)
    redisReaderFree(c->reader);
  arena_reset(c, true);
  chat_free(c->q);
  chat_free(c->out);
  chat_free(c->host);
  chat_free(c->user);
  chat_free(c->password);
  chat_free(c->name);
  chat_free(c);
}

static void on_closed(uv_handle_t *h) { unref_conn(h->data); }

static pending pop(redis_conn *c) {
  pending p = c->q[c->qhead];
  c->qhead = (c->qhead + 1) % c->qcap;
  c->qcount--;
  return p;
}

/* The pending commands end without replies, in order. A callback may
 * send (refused: not ready) or free c (then the rest still end). */
static void fail_pending(redis_conn *c) {
  while (c->qcount > 0) {
    pending p = pop(c);
    if (p.kind == P_USER && p.cb != NULL)
      p.cb(p.data, NULL);
  }
}

static void close_handles(redis_conn *c) {
  if (c->gai_active)
    uv_cancel((uv_req_t *)&c->gai); /* its callback still comes */
  if (c->tcp_inited && !uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_closed);
  if (!uv_is_closing((uv_handle_t *)&c->timer))
    uv_close((uv_handle_t *)&c->timer, on_closed);
  if (!uv_is_closing((uv_handle_t *)&c->prepare))
    uv_close((uv_handle_t *)&c->prepare, on_closed);
  if (!uv_is_closing((uv_handle_t *)&c->check))
    uv_close((uv_handle_t *)&c->check, on_closed);
}

static void down(redis_conn *c, const char *why, bool config) {
  if (c->state == ST_DOWN || c->freed)
    return;
  c->state = ST_DOWN;
  tls_free(c->tls);
  c->tls = NULL;
  if (c->tcp_inited)
    uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_stop(&c->timer);
  uv_prepare_stop(&c->prepare);
  uv_check_stop(&c->check);
  fail_pending(c);
  if (!c->freed && c->ev.on_down != NULL)
    c->ev.on_down(c, c->data, why, config);
}

void redis_free(redis_conn *c) {
  if (c == NULL || c->freed)
    return;
  c->state = ST_DOWN;
  c->freed = true;
  tls_free(c->tls);
  c->tls = NULL;
  fail_pending(c);
  close_handles(c);
}

bool redis_ready(const redis_conn *c) {
  return c != NULL && !c->freed && c->state == ST_READY;
}

uint64_t redis_take_slowest(redis_conn *c) {
  uint64_t s = c->slowest;
  c->slowest = 0;
  return s;
}

/* ---- timeouts --------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void arm(redis_conn *c) {
  if (c->freed || c->state == ST_DOWN)
    return;
  uint64_t due;
  if (c->state != ST_READY && c->state != ST_AUTH)
    due = c->connect_deadline;
  else if (c->qcount > 0)
    due = c->q[c->qhead].deadline;
  else {
    uv_timer_stop(&c->timer);
    return;
  }
  if (c->state == ST_AUTH && c->connect_deadline < due)
    due = c->connect_deadline;
  uint64_t now = uv_now(c->loop);
  c->timer_due = due;
  uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

static void on_timer(uv_timer_t *t) {
  redis_conn *c = t->data;
  if (c->early[0] != '\0') {
    down(c, c->early, c->early_config);
    return;
  }
  uint64_t now = uv_now(c->loop);
  if (now < c->timer_due) {
    arm(c);
    return;
  }
  if (!c->grace && now - c->timer_due > STALL_MS) {
    c->grace = true;
    uv_timer_start(&c->timer, on_timer, 1, 0);
    return;
  }
  c->grace = false;
  char why[128];
  if (c->state == ST_READY)
    snprintf(why, sizeof why, "no reply within %u ms", c->command_ms);
  else
    snprintf(why, sizeof why, "connection not ready within %u ms",
             c->connect_ms);
  down(c, why, false);
}

/* ---- writing ---------------------------------------------------------- */

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  redis_conn *c = w->c;
  chat_free(w->buf);
  chat_free(w);
  if (status < 0 && status != UV_ECANCELED) {
    char why[128];
    snprintf(why, sizeof why, "write: %s", uv_strerror(status));
    down(c, why, false);
  }
}

/* Everything queued, in one write: right after the I/O callbacks of an
 * iteration (check), so that a command a client's line caused is on its
 * way to Redis before that client's answer goes out (the server writes
 * its clients before the loop sleeps, in prepare); and before the loop
 * sleeps, for what timers and closings queued. */
static void flush(redis_conn *c) {
  uv_prepare_stop(&c->prepare);
  uv_check_stop(&c->check);
  if (c->outlen == 0 || c->freed || c->state == ST_DOWN)
    return;
  uv_buf_t b = uv_buf_init(c->out, (unsigned)c->outlen);
  int r;
  if (c->tls != NULL) {
    r = tls_write(c->tls, &b, 1);
    c->outlen = 0;
  } else {
    write_req *w = chat_malloc(sizeof *w);
    if (w == NULL) {
      r = UV_ENOMEM;
    } else {
      w->c = c;
      w->buf = c->out;
      r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
      if (r == 0) {
        c->out = NULL;
        c->outlen = c->outcap = 0;
      } else {
        chat_free(w);
      }
    }
  }
  if (r != 0) {
    char why[128];
    snprintf(why, sizeof why, "write: %s", uv_strerror(r));
    down(c, why, false);
  }
}

static void on_prepare(uv_prepare_t *p) { flush(p->data); }
static void on_check(uv_check_t *k) { flush(k->data); }

static bool out_reserve(redis_conn *c, size_t more) {
  if (c->outlen + more <= c->outcap)
    return true;
  size_t cap = c->outcap ? c->outcap : 4096;
  while (cap < c->outlen + more)
    cap *= 2;
  char *n = chat_realloc(c->out, cap);
  if (n == NULL)
    return false;
  c->out = n;
  c->outcap = cap;
  return true;
}

static size_t digits(size_t v) {
  size_t n = 1;
  while (v >= 10) {
    v /= 10;
    n++;
  }
  return n;
}

/* RESP: *argc, then $len and the bytes of each argument. Binary safe:
 * nothing in an argument can change the command's structure. head holds
 * the first nhead arguments already so written. */
static bool format(redis_conn *c, int nhead, const char *head, size_t hlen,
                   int argc, const char *const *argv, const size_t *lens) {
  size_t need = 3 + digits((size_t)(nhead + argc)) + hlen;
  for (int i = 0; i < argc; i++) {
    size_t l = lens ? lens[i] : strlen(argv[i]);
    need += 5 + digits(l) + l;
  }
  if (!out_reserve(c, need))
    return false;
  char *p = c->out + c->outlen;
  p += sprintf(p, "*%d\r\n", nhead + argc);
  memcpy(p, head, hlen);
  p += hlen;
  for (int i = 0; i < argc; i++) {
    size_t l = lens ? lens[i] : strlen(argv[i]);
    p += sprintf(p, "$%zu\r\n", l);
    memcpy(p, argv[i], l);
    p += l;
    *p++ = '\r';
    *p++ = '\n';
  }
  c->outlen = (size_t)(p - c->out);
  return true;
}

size_t redis_format_args(char *buf, size_t cap, int argc,
                         const char *const *argv) {
  size_t n = 0;
  for (int i = 0; i < argc; i++) {
    size_t l = strlen(argv[i]);
    int k =
        snprintf(buf + n, n < cap ? cap - n : 0, "$%zu\r\n%s\r\n", l, argv[i]);
    n += k > 0 ? (size_t)k : 0;
  }
  return n;
}

static int queue(redis_conn *c, int nhead, const char *head, size_t hlen,
                 int argc, const char *const *argv, const size_t *lens,
                 unsigned extra_ms, int kind, redis_cb cb, void *data) {
  if (c->qcount == c->qcap) {
    size_t ncap = c->qcap ? c->qcap * 2 : 64;
    pending *nq = chat_malloc(ncap * sizeof *nq);
    if (nq == NULL)
      return UV_ENOMEM;
    for (size_t i = 0; i < c->qcount; i++)
      nq[i] = c->q[(c->qhead + i) % c->qcap];
    chat_free(c->q);
    c->q = nq;
    c->qcap = ncap;
    c->qhead = 0;
  }
  size_t mark = c->outlen;
  if (!format(c, nhead, head, hlen, argc, argv, lens)) {
    c->outlen = mark;
    return UV_ENOMEM;
  }
  uint64_t now = uv_now(c->loop);
  pending *p = &c->q[(c->qhead + c->qcount++) % c->qcap];
  *p = (pending){cb, data, now, now + c->command_ms + extra_ms, kind};
  if (c->qcount == 1)
    arm(c);
  uv_prepare_start(&c->prepare, on_prepare);
  uv_check_start(&c->check, on_check);
  return 0;
}

int redis_send(redis_conn *c, int argc, const char *const *argv,
               const size_t *lens, unsigned extra_ms, redis_cb cb, void *data) {
  if (!redis_ready(c))
    return UV_ENOTCONN;
  return queue(c, 0, "", 0, argc, argv, lens, extra_ms, P_USER, cb, data);
}

int redis_send_head(redis_conn *c, int nhead, const char *head, size_t hlen,
                    int argc, const char *const *argv, const size_t *lens,
                    redis_cb cb, void *data) {
  if (!redis_ready(c))
    return UV_ENOTCONN;
  return queue(c, nhead, head, hlen, argc, argv, lens, 0, P_USER, cb, data);
}

/* ---- reading ---------------------------------------------------------- */

static void handshake_reply(redis_conn *c, int kind, const rreply *r) {
  char why[300];
  if (kind == P_AUTH && !rreply_is(r, RREPLY_STATUS)) {
    snprintf(why, sizeof why, "authentication refused: %s",
             rreply_is(r, RREPLY_ERROR) ? r->str : "unexpected reply");
    down(c, why, true);
  } else if (kind == P_PING && !rreply_is(r, RREPLY_STATUS)) {
    bool noauth =
        rreply_is(r, RREPLY_ERROR) && strncmp(r->str, "NOAUTH", 6) == 0;
    snprintf(why, sizeof why, "%s%s",
             rreply_is(r, RREPLY_ERROR) ? r->str : "unexpected reply",
             noauth ? " (the server wants a password)" : "");
    down(c, why, noauth);
  } else if (kind == P_PING) {
    c->state = ST_READY;
    arm(c);
    if (c->ev.on_ready != NULL)
      c->ev.on_ready(c, c->data);
  }
  /* P_NAME: a refused CLIENT SETNAME (an ACL without it) is no matter */
}

static void process(redis_conn *c) {
  while (!c->freed && c->state != ST_DOWN) {
    void *obj = NULL;
    if (redisReaderGetReply(c->reader, &obj) != REDIS_OK) {
      char why[160];
      snprintf(why, sizeof why, "protocol: %s", c->reader->errstr);
      down(c, why, false);
      return;
    }
    if (obj == NULL)
      return;
    if (c->qcount == 0) {
      down(c, "a reply to no command", false);
      return;
    }
    pending p = pop(c);
    uint64_t took = uv_now(c->loop) - p.sent_at;
    if (took > c->slowest)
      c->slowest = took;
    c->grace = false;
    arm(c);
    if (p.kind == P_USER) {
      if (p.cb != NULL)
        p.cb(p.data, obj);
    } else {
      handshake_reply(c, p.kind, obj);
    }
    if (!c->freed) /* (freed: the arena goes with c) */
      arena_reset(c, false);
  }
}

static void take(redis_conn *c, const char *buf, size_t n) {
  if (redisReaderFeed(c->reader, buf, n) != REDIS_OK) {
    down(c, "out of memory", false);
    return;
  }
  process(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  redis_conn *c = h->data;
  *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  redis_conn *c = s->data;
  if (n < 0) {
    /* Closed before the handshake is through: a plain client on a TLS
     * port is hung up on, or reset, at its first bytes. */
    bool early = c->state != ST_READY;
    char why[200];
    snprintf(why, sizeof why, "%s%s%s",
             n == UV_EOF ? "closed by the server" : uv_strerror((int)n),
             early ? " during the handshake" : "",
             early && c->tls_ctx == NULL ? " (a TLS port? see --redis-tls)"
                                         : "");
    down(c, why, early && c->tls_ctx == NULL);
    return;
  }
  if (n == 0)
    return;
  if (c->tls != NULL)
    tls_feed(c->tls, buf->base, (size_t)n);
  else
    take(c, buf->base, (size_t)n);
}

/* ---- connecting ------------------------------------------------------- */

static void start_handshake(redis_conn *c) {
  c->state = ST_AUTH;
  int r = 0;
  if (c->password != NULL) {
    const char *argv[3] = {"AUTH", c->user ? c->user : c->password,
                           c->password};
    r = queue(c, 0, "", 0, c->user ? 3 : 2, argv, NULL, 0, P_AUTH, NULL, NULL);
  }
  if (r == 0 && c->name != NULL) {
    const char *argv[3] = {"CLIENT", "SETNAME", c->name};
    r = queue(c, 0, "", 0, 3, argv, NULL, 0, P_NAME, NULL, NULL);
  }
  if (r == 0) {
    const char *argv[1] = {"PING"};
    r = queue(c, 0, "", 0, 1, argv, NULL, 0, P_PING, NULL, NULL);
  }
  if (r != 0)
    down(c, "out of memory", false);
}

static void tls_ready(void *data) { start_handshake(data); }

static void tls_data(void *data, const char *buf, size_t n) {
  take(data, buf, n);
}

static void tls_error(void *data, const char *why) {
  redis_conn *c = data;
  /* During the handshake, a failure is the configuration's (no TLS on
   * that port, a certificate that does not verify). */
  char msg[480];
  snprintf(msg, sizeof msg, "%s%s", why,
           c->state == ST_TLS ? " (is that port TLS, and --redis-ca right?)"
                              : "");
  down(c, msg, c->state == ST_TLS);
}

static const chat_tls_cb tls_cbs = {tls_ready, tls_data, tls_error};

static void on_connect(uv_connect_t *req, int status) {
  redis_conn *c = req->data;
  if (c->freed || c->state == ST_DOWN) {
    unref_conn(c);
    return;
  }
  unref_conn(c); /* the handles still hold it */
  if (status < 0) {
    char why[128];
    snprintf(why, sizeof why, "connect: %s", uv_strerror(status));
    down(c, why, false);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (c->tls_ctx == NULL) {
    start_handshake(c);
    return;
  }
  c->state = ST_TLS;
  c->tls = tls_start(c->tls_ctx, (uv_stream_t *)&c->tcp, false, c->host,
                     &tls_cbs, c);
  if (c->tls == NULL)
    down(c, "out of memory", false);
}

static void fail_soon(redis_conn *c, const char *why, bool config) {
  snprintf(c->early, sizeof c->early, "%s", why);
  c->early_config = config;
  uv_timer_start(&c->timer, on_timer, 0, 0);
}

static void start_connect(redis_conn *c, const struct sockaddr *sa) {
  c->state = ST_CONNECTING;
  c->creq.data = c;
  int r = uv_tcp_connect(&c->creq, &c->tcp, sa, on_connect);
  if (r != 0) {
    char why[128];
    snprintf(why, sizeof why, "connect: %s", uv_strerror(r));
    fail_soon(c, why, false);
    return;
  }
  c->open++;
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  redis_conn *c = req->data;
  c->gai_active = false;
  if (c->freed || c->state == ST_DOWN) {
    uv_freeaddrinfo(res);
    unref_conn(c);
    return;
  }
  unref_conn(c);
  if (status < 0 || res == NULL) {
    char why[300];
    snprintf(why, sizeof why, "cannot resolve %s: %s", c->host,
             uv_strerror(status));
    uv_freeaddrinfo(res);
    down(c, why, true);
    return;
  }
  start_connect(c, res->ai_addr);
  uv_freeaddrinfo(res);
}

static char *dup_or_null(const char *s, bool *ok) {
  if (s == NULL)
    return NULL;
  char *d = chat_strdup(s);
  if (d == NULL)
    *ok = false;
  return d;
}

redis_conn *redis_connect(uv_loop_t *loop, const redis_conf *conf,
                          const redis_events *ev, void *data) {
  redis_conn *c = chat_calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  bool ok = true;
  c->host = dup_or_null(conf->host, &ok);
  c->user = dup_or_null(conf->user, &ok);
  c->password = dup_or_null(conf->password, &ok);
  c->name = dup_or_null(conf->name, &ok);
  c->reader = ok ? redisReaderCreateWithFunctions(&reply_fns) : NULL;
  /* (not redisReaderSetPrivdata: the macro casts the pointer to int,
   * which clang's -Werror refuses) */
  if (c->reader != NULL)
    c->reader->privdata = c;
  if (!ok || c->reader == NULL) {
    if (c->reader != NULL)
      redisReaderFree(c->reader);
    chat_free(c->host);
    chat_free(c->user);
    chat_free(c->password);
    chat_free(c->name);
    chat_free(c);
    return NULL;
  }
  c->loop = loop;
  c->port = conf->port;
  c->tls_ctx = conf->tls;
  c->connect_ms = conf->connect_timeout_ms ? conf->connect_timeout_ms : 5000;
  c->command_ms = conf->command_timeout_ms ? conf->command_timeout_ms : 5000;
  c->ev = *ev;
  c->data = data;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  uv_prepare_init(loop, &c->prepare);
  uv_check_init(loop, &c->check);
  c->tcp.data = c->timer.data = c->prepare.data = c->check.data = c;
  c->tcp_inited = true;
  c->open = 4;
  c->state = ST_RESOLVING;
  c->connect_deadline = uv_now(loop) + c->connect_ms;
  arm(c);
  struct sockaddr_storage ss;
  if (uv_ip4_addr(c->host, c->port, (struct sockaddr_in *)&ss) == 0 ||
      uv_ip6_addr(c->host, c->port, (struct sockaddr_in6 *)&ss) == 0) {
    start_connect(c, (struct sockaddr *)&ss);
    return c;
  }
  char port[16];
  snprintf(port, sizeof port, "%d", c->port);
  struct addrinfo hints = {0};
  hints.ai_socktype = SOCK_STREAM;
  c->gai.data = c;
  int r = uv_getaddrinfo(loop, &c->gai, on_resolved, c->host, port, &hints);
  if (r != 0) {
    char why[300];
    snprintf(why, sizeof why, "cannot resolve %s: %s", c->host, uv_strerror(r));
    fail_soon(c, why, true);
    return c;
  }
  c->gai_active = true;
  c->open++;
  return c;
}

#endif /* HARK_CHATD_REDIS */
