/* A client connection: its input buffer, its output queue of shared
 * buffers written in writev batches before the loop sleeps, its output
 * limits and its flood bucket. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chatd.h"

/* ---- shared buffers --------------------------------------------------- */

chat_buf *chat_buf_new(const char *data, size_t len) {
  chat_buf *b = chat_malloc(sizeof *b + len + 1);
  if (b == NULL)
    return NULL;
  b->refs = 1;
  b->len = (unsigned)len;
  memcpy(b->data, data, len);
  b->data[len] = '\0';
  return b;
}

chat_buf *chat_buf_printf(const char *fmt, ...) {
  char line[IRC_LINE_MAX + 1];
  va_list ap;
  va_start(ap, fmt);
  size_t n = irc_vformat(line, sizeof line, fmt, ap);
  va_end(ap);
  return chat_buf_new(line, n);
}

void chat_buf_unref(chat_buf *b) {
  if (b != NULL && --b->refs == 0)
    chat_free(b);
}

/* ---- the object ------------------------------------------------------- */

static void session_finalize(void *obj) {
  chat_session *s = obj;
  for (size_t i = 0; i < s->qcount; i++)
    chat_buf_unref(s->q[(s->qhead + i) % s->qcap]);
  chat_free(s->q);
  /* Dropping the channels may end them: an empty channel dies here. */
  for (size_t i = 0; i < s->u.nchans; i++)
    hark_unref(s->u.chans[i]);
  chat_free(s->u.chans);
  chat_free(s); /* hark_new allocated it: see alloc.h */
}

const hark_type chat_session_type = {"chat_session", sizeof(chat_session),
                                     session_finalize, NULL};

/* Private messages to s: sent with s as sender, delivered by s. */
static int on_private(void *self, void *sender, void *args) {
  chat_session *s = self;
  chat_event *ev = args;
  if (s->u.registered && !s->closing && !s->closed)
    session_send_buf(s, ev->line);
  return 0;
}

int session_init(chat_session *s, chat_server *srv) {
  s->u.srv = srv;
  /* The network knows every user by this id (fed_*.c): unique across
   * this node's restarts, since next_id starts from the clock. */
  snprintf(s->u.uid, sizeof s->u.uid, "%s:%llu", srv->node,
           (unsigned long long)srv->next_id++);
  return hark_connect(srv->sig_private, on_private, s, s, HARK_WEAK) == 0
             ? 0
             : HARK_ENOMEM;
}

/* ---- output ----------------------------------------------------------- */

static void check_limits(chat_session *s) {
  chat_server *srv = s->u.srv;
  if (srv->opt.sendq_hard && s->qbytes > srv->opt.sendq_hard) {
    srv->sendq_kills++;
    server_schedule_close(srv, s, "SendQ exceeded");
    return;
  }
  if (srv->opt.sendq_soft && s->qbytes > srv->opt.sendq_soft) {
    if (s->soft_since == 0)
      s->soft_since = chat_now_ms(srv) | 1;
  } else {
    s->soft_since = 0;
  }
}

#define FLUSH_EARLY (32 * 1024)

static void flush_now(chat_session *s);

/* Makes room for n more buffers in s's queue without queueing any: a
 * command whose reply must reach its client (its JOIN, its NICK) reserves
 * it before it changes anything, and refuses the command if it cannot. */
int session_reserve(chat_session *s, size_t n) {
  if (s->qcap - s->qcount >= n)
    return 0;
  size_t ncap = s->qcap ? s->qcap : 16;
  while (ncap - s->qcount < n)
    ncap *= 2;
  chat_buf **nq = chat_malloc(ncap * sizeof *nq);
  if (nq == NULL)
    return HARK_ENOMEM;
  for (size_t i = 0; i < s->qcount; i++)
    nq[i] = s->q[(s->qhead + i) % s->qcap];
  chat_free(s->q);
  s->q = nq;
  s->qcap = ncap;
  s->qhead = 0;
  return 0;
}

/* A line this session cannot take (its buffer or a longer queue could not
 * be allocated) is dropped for this session alone: the session's state is
 * untouched by it, so it goes on. The replies whose loss would leave the
 * client believing something else than the server (001, its own JOIN,
 * NICK, PART) are made sure of beforehand, with session_reserve. */
int session_send_buf(chat_session *s, chat_buf *b) {
  if (s->closed)
    return 0;
  if (b == NULL || (s->qcount == s->qcap && session_reserve(s, 1) != 0)) {
    s->u.srv->oom_drops++;
    log_warn("%s: out of memory: a line dropped",
             s->u.nick[0] ? s->u.nick : "*");
    return HARK_ENOMEM;
  }
  s->q[(s->qhead + s->qcount) % s->qcap] = chat_buf_ref(b);
  s->qcount++;
  s->qbytes += b->len;
  /* A big fan-out (a burst read from a fast sender) would otherwise pile
   * up until the loop sleeps: write early, it is only a syscall, and keeps
   * a healthy reader well under its limits. */
  if (s->qbytes >= FLUSH_EARLY && !s->writing)
    flush_now(s);
  else
    server_mark_dirty(s->u.srv, s);
  check_limits(s);
  return 0;
}

void session_sendf(chat_session *s, const char *fmt, ...) {
  char line[IRC_LINE_MAX + 1];
  va_list ap;
  va_start(ap, fmt);
  size_t n = irc_vformat(line, sizeof line, fmt, ap);
  va_end(ap);
  chat_buf *b = chat_buf_new(line, n);
  session_send_buf(s, b);
  chat_buf_unref(b);
}

void session_numeric(chat_session *s, int num, const char *fmt, ...) {
  char rest[IRC_LINE_MAX + 1];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rest, sizeof rest, fmt, ap);
  va_end(ap);
  session_sendf(s, ":%s %03d %s %s", s->u.srv->opt.name, num,
                s->u.nick[0] ? s->u.nick : "*", rest);
}

/* Drops n written bytes from the front of the queue. */
static void consume(chat_session *s, size_t n) {
  s->qbytes -= n;
  while (n > 0) {
    chat_buf *b = s->q[s->qhead];
    size_t left = b->len - s->qoff;
    if (n < left) {
      s->qoff += n;
      return;
    }
    n -= left;
    s->qoff = 0;
    chat_buf_unref(b);
    s->qhead = (s->qhead + 1) % s->qcap;
    s->qcount--;
  }
}

#define IOV_BATCH 256

static size_t gather(chat_session *s, uv_buf_t *iov, size_t *bytes) {
  size_t n = s->qcount < IOV_BATCH ? s->qcount : IOV_BATCH;
  *bytes = 0;
  for (size_t i = 0; i < n; i++) {
    chat_buf *b = s->q[(s->qhead + i) % s->qcap];
    size_t off = i == 0 ? s->qoff : 0;
    iov[i] = uv_buf_init(b->data + off, (unsigned)(b->len - off));
    *bytes += b->len - off;
  }
  return n;
}

static void on_write(uv_write_t *req, int status) {
  chat_session *s = req->data;
  s->writing = false;
  if (status < 0) {
    log_debug("%s: write: %s", s->u.nick, uv_strerror(status));
    if (!s->closed)
      server_schedule_close(s->u.srv, s, "Write error");
    consume(s, s->wbytes);
    return;
  }
  consume(s, s->wbytes);
  s->wbytes = 0;
  check_limits(s);
  if (s->qcount > 0)
    server_mark_dirty(s->u.srv, s);
}

static void flush_now(chat_session *s) {
  session_flush(s);
  if (s->qcount > 0)
    server_mark_dirty(s->u.srv, s);
}

void session_flush(chat_session *s) {
  uv_buf_t iov[IOV_BATCH];
  size_t bytes;
  if (s->writing || s->closed || s->gated > 0)
    return;
  while (s->qcount > 0) {
    size_t n = gather(s, iov, &bytes);
    int r = uv_try_write((uv_stream_t *)&s->tcp, iov, (unsigned)n);
    s->u.srv->bufs_out += n;
    if (r > 0) {
      s->u.srv->bytes_out += (unsigned)r;
      consume(s, (size_t)r);
      if ((size_t)r == bytes)
        continue;
      n = gather(s, iov, &bytes); /* the rest waits for writability */
    } else if (r != UV_EAGAIN) {
      server_schedule_close(s->u.srv, s, "Write error");
      return;
    }
    /* The socket is full: hand the rest to libuv, which writes it when the
     * peer reads. The buffers stay queued (and counted) until then. */
    s->wreq.data = s;
    s->wbytes = bytes;
    if (uv_write(&s->wreq, (uv_stream_t *)&s->tcp, iov, (unsigned)n,
                 on_write) == 0) {
      s->writing = true;
    } else {
      server_schedule_close(s->u.srv, s, "Write error");
    }
    return;
  }
  check_limits(s);
}

/* ---- input ------------------------------------------------------------ */

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  chat_session *s = h->data;
  buf->base = s->in + s->inlen;
  buf->len = sizeof s->in - s->inlen;
}

static bool take_token(chat_session *s) {
  chat_server *srv = s->u.srv;
  if (srv->opt.flood_rate <= 0)
    return true;
  uint64_t now = chat_now_ms(srv);
  s->tokens += (double)(now - s->refill_at) * srv->opt.flood_rate / 1000.0;
  if (s->tokens > srv->opt.flood_burst)
    s->tokens = srv->opt.flood_burst;
  s->refill_at = now;
  if (s->tokens < 1.0)
    return false;
  s->tokens -= 1.0;
  return true;
}

static void process_input(chat_session *s);

/* The throttle timer: the flood wait is over, or (at once) the holds are
 * off. Either way the waiting lines run and the socket reads again. */
static void on_throttle(uv_timer_t *t) {
  chat_session *s = t->data;
  s->throttled = false;
  if (s->closed)
    return;
  hark_ref(s);
  process_input(s);
  if (!s->throttled && !s->closed && s->inlen < sizeof s->in) {
    s->in_full = false;
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
  }
  hark_unref(s);
}

/* ---- holds: in-order input across asynchronous commands ---------------- */

unsigned session_hold(chat_session *s) {
  if (s->held++ == 0)
    s->held_at = chat_now_ms(s->u.srv);
  return s->hold_gen;
}

static void resume_soon(chat_session *s) {
  /* Throttled: the timer already runs and resumes when it fires. */
  if (s->closing || s->closed || s->throttled)
    return;
  uv_timer_start(&s->throttle, on_throttle, 0, 0);
}

void session_unhold(chat_session *s, unsigned token) {
  if (token != s->hold_gen || s->held == 0)
    return;
  if (--s->held == 0)
    resume_soon(s);
}

void session_retry(chat_session *s) { s->retry = true; }

void session_gate(chat_session *s) { s->gated++; }

void session_ungate(chat_session *s) {
  if (s->gated > 0 && --s->gated == 0 && s->qcount > 0)
    server_mark_dirty(s->u.srv, s);
}

void session_hold_check(chat_session *s, uint64_t now) {
  if (s->held == 0 || now - s->held_at < CHATD_HOLD_TIMEOUT_MS)
    return;
  log_warn("%s: no reply from the network for %u ms; going on",
           s->u.nick[0] ? s->u.nick : "*", (unsigned)(now - s->held_at));
  s->held = 0;
  s->hold_gen++; /* the late replies release nothing */
  resume_soon(s);
}

/* Runs the complete lines in the input buffer, stopping (and pausing the
 * socket) when the flood bucket is empty, and stopping after a command
 * that waits for a reply (session_hold): the rest runs when it is in. */
static void process_input(chat_session *s) {
  size_t off = 0, len, used;
  while (!s->closing && !s->closed && s->held == 0) {
    if (!irc_next_line(s->in + off, s->inlen - off, &len, &used)) {
      if (s->discarding) {
        off = s->inlen;
      } else if (s->inlen - off > IRC_LINE_MAX) {
        /* No end in sight: drop what we have, then the rest of the line. */
        session_numeric(s, 417, ":Input line was too long");
        s->discarding = true;
        off = s->inlen;
      }
      break;
    }
    if (s->discarding) {
      s->discarding = false;
      off += used;
      continue;
    }
    if (used > IRC_LINE_MAX) {
      session_numeric(s, 417, ":Input line was too long");
      off += used;
      continue;
    }
    if (!s->settled && !take_token(s)) { /* (a retried line paid) */
      s->throttled = true;
      s->u.srv->flood_waits++;
      uv_read_stop((uv_stream_t *)&s->tcp);
      double wait = (1.0 - s->tokens) * 1000.0 / s->u.srv->opt.flood_rate;
      uv_timer_start(&s->throttle, on_throttle, (uint64_t)wait + 1, 0);
      break;
    }
    char line[IRC_LINE_MAX + 1];
    memcpy(line, s->in + off, len);
    if (!s->settled)
      s->u.srv->lines_in++;
    s->active_at = chat_now_ms(s->u.srv);
    s->ping_at = 0;
    command_line(s, line, len);
    if (s->retry) { /* waits, then runs again: not consumed */
      s->retry = false;
      s->settled = true;
      break;
    }
    s->settled = false;
    off += used;
  }
  if (off > 0) {
    memmove(s->in, s->in + off, s->inlen - off);
    s->inlen -= off;
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  chat_session *s = stream->data;
  if (nread < 0) {
    server_schedule_close(s->u.srv, s,
                          nread == UV_EOF ? "Connection closed"
                                          : uv_strerror((int)nread));
    return;
  }
  s->inlen += (size_t)nread;
  hark_ref(s); /* a command may schedule our end */
  if (!s->throttled)
    process_input(s);
  /* Lines waiting (a hold, the flood bucket) fill the buffer: no more
   * reading until they have run, and TCP pushes back on the client. */
  if (s->inlen == sizeof s->in && !s->closed && !s->in_full) {
    s->in_full = true;
    uv_read_stop((uv_stream_t *)&s->tcp);
  }
  hark_unref(s);
}

/* The read path without the socket (fuzz_seam.c): takes what fits in the
 * input buffer, as one read would, and returns how much that was. */
size_t session_feed(chat_session *s, const char *data, size_t len) {
  size_t room = sizeof s->in - s->inlen;
  if (len > room)
    len = room;
  memcpy(s->in + s->inlen, data, len);
  uv_buf_t buf = uv_buf_init(s->in + s->inlen, (unsigned)len);
  on_read((uv_stream_t *)&s->tcp, (ssize_t)len, &buf);
  return len;
}

/* ---- life ------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  chat_session *s = h->data;
  if (--s->handles_open > 0)
    return;
  chat_server *srv = s->u.srv;
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    srv->sessions = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  srv->nclients--;
  log_debug("session %p gone (%u left)", (void *)s, srv->nclients);
  /* The server's reference: with it the session dies, and with the
   * session its receivers and, if it was the last member, its channels. */
  hark_unref(s);
}

void session_close_handles(chat_session *s) {
  if (s->closed)
    return;
  s->closed = true;
  /* Best effort: the last lines (ERROR) go out if the socket takes them. */
  uv_buf_t iov[IOV_BATCH];
  size_t bytes;
  if (!s->writing && s->qcount > 0) {
    size_t n = gather(s, iov, &bytes);
    int r = uv_try_write((uv_stream_t *)&s->tcp, iov, (unsigned)n);
    if (r > 0)
      consume(s, (size_t)r);
  }
  uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&s->throttle, on_handle_closed);
}

/* A connection there is no memory for is accepted into this handle, told
 * and closed at once: left pending, it would stop libuv listening for good
 * (it waits for the connection callback to accept). One at a time; another
 * refusal while this one closes waits for its close callback. */
static uv_tcp_t refused;
static bool refusing;
static chat_server *refuse_next;

static void on_refused_closed(uv_handle_t *h) {
  chat_server *srv = refuse_next;
  refusing = false;
  refuse_next = NULL;
  if (srv != NULL && !srv->stopping)
    session_accept(srv);
}

static void refuse(chat_server *srv) {
  static const char msg[] = "ERROR :Closing Link: (Out of memory)\r\n";
  if (refusing) {
    refuse_next = srv;
    return;
  }
  uv_tcp_init(srv->loop, &refused);
  if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&refused) == 0) {
    uv_buf_t b = uv_buf_init((char *)msg, sizeof msg - 1);
    uv_try_write((uv_stream_t *)&refused, &b, 1);
  }
  refusing = true;
  uv_close((uv_handle_t *)&refused, on_refused_closed);
}

void session_accept(chat_server *srv) {
  chat_session *s = hark_new(&chat_session_type);
  if (s == NULL || session_init(s, srv) != 0) {
    hark_unref(s);
    log_error("accept: out of memory: connection refused");
    refuse(srv);
    return;
  }
  uv_tcp_init(srv->loop, &s->tcp);
  uv_timer_init(srv->loop, &s->throttle);
  s->tcp.data = s->throttle.data = s;
  s->handles_open = 2;
  s->next = srv->sessions;
  if (s->next != NULL)
    s->next->prev = s;
  srv->sessions = s;
  srv->nclients++;
  int r = uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&s->tcp);
  if (r != 0) {
    log_warn("accept: %s", uv_strerror(r));
    session_close_handles(s);
    return;
  }
  uv_tcp_nodelay(&s->tcp, 1);
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  strcpy(s->u.host, "unknown");
  if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&ss, s->u.host, sizeof s->u.host);
    else
      uv_ip4_name((struct sockaddr_in *)&ss, s->u.host, sizeof s->u.host);
  }
  uint64_t now = chat_now_ms(srv);
  s->connected_at = s->active_at = s->refill_at = now;
  s->tokens = srv->opt.flood_burst;
  s->pass_ok = srv->opt.password == NULL;
  log_debug("connection from %s", s->u.host);
  if (srv->opt.max_clients && srv->nclients > srv->opt.max_clients) {
    session_sendf(s, "ERROR :Closing Link: %s (Server is full)", s->u.host);
    session_close_handles(s);
    return;
  }
  uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
}
