/* A client connection: its input, its output queue of shared buffers
 * written in writev batches before the loop sleeps (through TLS for a
 * --listen-tls client), its output limits, its flood bucket, and the
 * labeled-response window of the command it runs. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chatd.h"
#include "tls.h"

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

static void drop_label(chat_session *s) {
  for (size_t i = 0; i < s->nlq; i++)
    chat_buf_unref(s->lq[i]);
  s->nlq = 0;
  chat_free(s->label);
  s->label = NULL;
}

static void session_finalize(void *obj) {
  chat_session *s = obj;
  for (size_t i = 0; i < s->qcount; i++)
    chat_buf_unref(s->q[(s->qhead + i) % s->qcap]);
  chat_free(s->q);
  drop_label(s);
  chat_free(s->lq);
  chat_free(s->in);
  chat_free(s->sasl_buf);
  for (size_t i = 0; i < s->nmon; i++)
    chat_free(s->mon[i]);
  chat_free(s->mon);
  chat_free(s->u.away);
  /* Dropping the channels may end them: an empty channel dies here. */
  for (size_t i = 0; i < s->u.nchans; i++)
    hark_unref(s->u.chans[i].chan);
  chat_free(s->u.chans);
  chat_free(s); /* hark_new allocated it: see alloc.h */
}

const hark_type chat_session_type = {"chat_session", sizeof(chat_session),
                                     session_finalize, NULL};

/* Private messages to s: sent with s as sender, delivered by s. */
static int on_private(void *self, void *sender, void *args) {
  chat_session *s = self;
  chat_event *ev = args;
  if (!s->u.registered || s->closing || s->closed)
    return 0;
  chat_buf *b =
      s->caps & CAP_TAGGED ? event_line(s->u.srv, ev, s->caps) : ev->line;
  if (b != NULL)
    session_deliver(s, b);
  return 0;
}

int session_init(chat_session *s, chat_server *srv) {
  s->u.srv = srv;
  /* The network knows every user by this id (fed_*.c): unique across
   * this node's restarts, since next_id starts from the clock. */
  snprintf(s->u.uid, sizeof s->u.uid, "%s:%llu", srv->node,
           (unsigned long long)srv->next_id++);
  s->u.signon = time(NULL);
  return hark_connect(srv->sig_private, on_private, s, s, HARK_WEAK) == 0
             ? 0
             : HARK_ENOMEM;
}

/* ---- output ----------------------------------------------------------- */

size_t session_pending(chat_session *s) {
  size_t n = s->qbytes;
  for (size_t i = 0; i < s->nlq; i++)
    n += s->lq[i]->len;
  if (s->tls != NULL && !s->closed)
    n += uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp);
  return n;
}

/* Over the hard limit, a session takes nothing more, from this line on,
 * even in the middle of a command's replies (a NAMES of many channels):
 * what it would queue is dropped, and it is closed once, counted once,
 * after the dispatch. */
static void check_limits(chat_session *s) {
  chat_server *srv = s->u.srv;
  /* (the common case, on every line queued: no label, no TLS) */
  size_t pending =
      s->nlq == 0 && s->tls == NULL ? s->qbytes : session_pending(s);
  if (srv->opt.sendq_hard && pending > srv->opt.sendq_hard) {
    if (!s->over_hard) {
      s->over_hard = true;
      srv->sendq_kills++;
      server_schedule_close(srv, s, "SendQ exceeded");
    }
    return;
  }
  if (srv->opt.sendq_soft && pending > srv->opt.sendq_soft) {
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

static void drop_line(chat_session *s) {
  s->u.srv->oom_drops++;
  log_warn("%s: out of memory: a line dropped", s->u.nick[0] ? s->u.nick : "*");
}

/* A line this session cannot take (its buffer or a longer queue could not
 * be allocated) is dropped for this session alone: the session's state is
 * untouched by it, so it goes on. The replies whose loss would leave the
 * client believing something else than the server (001, its own JOIN,
 * NICK, PART) are made sure of beforehand, with session_reserve. */
static int enqueue(chat_session *s, chat_buf *b) {
  if (s->closed || s->over_hard)
    return 0;
  if (b == NULL || (s->qcount == s->qcap && session_reserve(s, 1) != 0)) {
    drop_line(s);
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

int session_deliver(chat_session *s, chat_buf *b) { return enqueue(s, b); }

/* A reply to a labeled command waits in lq for the command's end. */
int session_send_buf(chat_session *s, chat_buf *b) {
  if (s->label == NULL)
    return enqueue(s, b);
  if (s->closed || s->over_hard)
    return 0;
  if (b == NULL) {
    drop_line(s);
    return HARK_ENOMEM;
  }
  if (s->nlq == s->lqcap) {
    size_t ncap = s->lqcap ? s->lqcap * 2 : 8;
    chat_buf **nl = chat_realloc(s->lq, ncap * sizeof *nl);
    if (nl == NULL) {
      drop_line(s);
      return HARK_ENOMEM;
    }
    s->lq = nl;
    s->lqcap = ncap;
  }
  s->lq[s->nlq++] = chat_buf_ref(b);
  check_limits(s);
  return 0;
}

void session_sendf(chat_session *s, const char *fmt, ...) {
  if (session_muted(s))
    return; /* not even formatted */
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
  if (session_muted(s))
    return;
  char rest[IRC_LINE_MAX + 1];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rest, sizeof rest, fmt, ap);
  va_end(ap);
  session_sendf(s, ":%s %03d %s %s", s->u.srv->opt.name, num,
                s->u.nick[0] ? s->u.nick : "*", rest);
}

void session_error_close(chat_session *s, const char *why) {
  session_sendf(s, "ERROR :Closing Link: %s (%s)", s->u.host, why);
  server_schedule_close(s->u.srv, s, why);
}

/* ---- labeled-response -------------------------------------------------- */

void session_label_begin(chat_session *s, const char *label) {
  drop_label(s);
  s->label = chat_strdup(label); /* NULL: unlabeled, as if not asked */
}

static void label_out(chat_session *s, chat_buf *b) {
  enqueue(s, b);
  chat_buf_unref(b);
}

/* The replies of the command, labeled: none is an ACK, one carries the
 * label, more are a labeled-response batch (a client without batch gets
 * the label on the first). Deliveries of other events never wait here:
 * they went out as they came. */
void session_label_end(chat_session *s) {
  char *label = s->label;
  if (label == NULL)
    return;
  s->label = NULL;
  char tag[96], id[24];
  snprintf(tag, sizeof tag, "label=%s", label);
  const char *name = s->u.srv->opt.name;
  if (s->retry) { /* it runs again, labeled again */
    for (size_t i = 0; i < s->nlq; i++)
      enqueue(s, s->lq[i]);
  } else if (s->nlq == 0) {
    label_out(s, chat_buf_printf("@%s :%s ACK", tag, name));
  } else if (s->nlq == 1 || !(s->caps & CAP_BATCH)) {
    label_out(s, tags_prepend(s->lq[0], tag));
    for (size_t i = 1; i < s->nlq; i++)
      enqueue(s, s->lq[i]);
  } else {
    snprintf(id, sizeof id, "L%llx", (unsigned long long)++s->u.srv->msgid_seq);
    label_out(s, chat_buf_printf("@%s :%s BATCH +%s labeled-response", tag,
                                 name, id));
    snprintf(tag, sizeof tag, "batch=%s", id);
    for (size_t i = 0; i < s->nlq; i++)
      label_out(s, tags_prepend(s->lq[i], tag));
    label_out(s, chat_buf_printf(":%s BATCH -%s", name, id));
  }
  for (size_t i = 0; i < s->nlq; i++)
    chat_buf_unref(s->lq[i]);
  s->nlq = 0;
  chat_free(label);
}

/* ---- writing ---------------------------------------------------------- */

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

/* TLS encrypts into its own writes: the ciphertext a slow reader has not
 * taken stays in libuv's queue, counted by session_pending; past this
 * much, the plaintext waits in ours (the server's tick tries again). */
#define TLS_WRITE_AHEAD (256 * 1024)

static void flush_tls(chat_session *s) {
  uv_buf_t iov[IOV_BATCH];
  size_t bytes;
  while (s->qcount > 0 && uv_stream_get_write_queue_size(
                              (uv_stream_t *)&s->tcp) < TLS_WRITE_AHEAD) {
    size_t n = gather(s, iov, &bytes);
    s->u.srv->bufs_out += n;
    if (tls_write(s->tls, iov, (unsigned)n) != 0) {
      server_schedule_close(s->u.srv, s, "Write error");
      return;
    }
    s->u.srv->bytes_out += bytes;
    consume(s, bytes);
  }
  check_limits(s);
}

void session_flush(chat_session *s) {
  uv_buf_t iov[IOV_BATCH];
  size_t bytes;
  if (s->writing || s->closed || s->gated > 0)
    return;
  if (s->tls != NULL) {
    if (s->tls_ready)
      flush_tls(s);
    return;
  }
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
static void on_throttle(uv_timer_t *t);

/* An idle session has no input buffer: it reads into the server's, and
 * keeps only what is left of a line after running the complete ones. */
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  chat_session *s = h->data;
  chat_server *srv = s->u.srv;
  if (s->in == NULL || s->tls != NULL) {
    /* TLS: ciphertext, handed to OpenSSL at once; no more than the
     * plaintext could fill */
    size_t room = s->in == NULL ? sizeof srv->rbuf : s->incap - s->inlen;
    *buf = uv_buf_init(srv->rbuf, (unsigned)(room ? room : 1));
    return;
  }
  if (s->incap - s->inlen < 2048 && s->incap < CHATD_IN_MAX) {
    size_t ncap = s->incap * 2 > CHATD_IN_MAX ? CHATD_IN_MAX : s->incap * 2;
    char *ni = chat_realloc(s->in, ncap);
    if (ni != NULL) {
      s->in = ni;
      s->incap = ncap;
    }
  }
  *buf = uv_buf_init(s->in + s->inlen, (unsigned)(s->incap - s->inlen));
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

/* Whether a line (len bytes, without its end) is too long: its tags at
 * most CHATD_TAGS_MAX bytes with the '@' and the space, the rest at most
 * IRC_LINE_MAX with the CR LF. */
static bool too_long(const char *line, size_t len) {
  size_t tags = 0;
  if (len > 0 && line[0] == '@') {
    const char *sp = memchr(line, ' ', len);
    tags = sp != NULL ? (size_t)(sp - line) + 1 : len;
    if (tags > CHATD_TAGS_MAX)
      return true;
  }
  return len - tags + 2 > IRC_LINE_MAX;
}

/* Runs the complete lines of buf[0..len) and returns the bytes it is done
 * with. Stops (pausing the socket) when the flood bucket is empty, and
 * after a command that waits for a reply (session_hold): the rest runs
 * when it is in. */
static size_t run_lines(chat_session *s, const char *buf, size_t len) {
  size_t off = 0, llen, used;
  while (!s->closing && !s->closed && s->held == 0) {
    if (!irc_next_line(buf + off, len - off, &llen, &used)) {
      if (s->discarding) {
        off = len;
      } else if (len - off > CHATD_IN_LINE_MAX) {
        /* No end in sight: drop what we have, then the rest of the line. */
        session_numeric(s, 417, ":Input line was too long");
        s->discarding = true;
        off = len;
      }
      break;
    }
    if (s->discarding) {
      s->discarding = false;
      off += used;
      continue;
    }
    if (too_long(buf + off, llen)) {
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
    char line[CHATD_IN_LINE_MAX + 1];
    memcpy(line, buf + off, llen);
    if (!s->settled)
      s->u.srv->lines_in++;
    s->active_at = chat_now_ms(s->u.srv);
    s->ping_at = 0;
    command_line(s, line, llen);
    if (s->retry) { /* waits, then runs again: not consumed */
      s->retry = false;
      s->settled = true;
      break;
    }
    s->settled = false;
    off += used;
  }
  return off;
}

/* The lines waiting in s->in; the buffer goes once it is empty. */
static void process_input(chat_session *s) {
  if (s->in == NULL)
    return;
  size_t off = run_lines(s, s->in, s->inlen);
  if (off > 0) {
    memmove(s->in, s->in + off, s->inlen - off);
    s->inlen -= off;
  }
  if (s->inlen == 0) {
    chat_free(s->in);
    s->in = NULL;
    s->incap = 0;
  }
}

/* Keeps data (what is left after the lines that could run) in s->in. */
static void keep_input(chat_session *s, const char *data, size_t n) {
  if (s->inlen + n > s->incap) {
    size_t ncap = s->incap ? s->incap : 1024;
    while (ncap < s->inlen + n && ncap < CHATD_IN_MAX)
      ncap *= 2;
    if (ncap > CHATD_IN_MAX)
      ncap = CHATD_IN_MAX;
    char *ni = ncap > s->incap ? chat_realloc(s->in, ncap) : s->in;
    if (ni == NULL) {
      log_warn("%s: out of memory for its input", s->u.host);
      session_error_close(s, "Out of memory");
      return;
    }
    s->in = ni;
    s->incap = ncap;
  }
  if (s->inlen + n > s->incap) { /* (TLS only: more than fits) */
    n = s->incap - s->inlen;
    s->discarding = true;
  }
  memcpy(s->in + s->inlen, data, n);
  s->inlen += n;
}

/* New bytes for s (read into the server's buffer, or TLS plaintext). */
static void take_input(chat_session *s, const char *data, size_t n) {
  if (s->in == NULL && !s->throttled) {
    size_t used = run_lines(s, data, n);
    data += used;
    n -= used;
  }
  if (n > 0 && !s->closing && !s->closed) {
    keep_input(s, data, n);
    if (!s->throttled && s->held == 0)
      process_input(s);
  }
}

static void pause_if_full(chat_session *s) {
  /* Lines waiting (a hold, the flood bucket) fill the buffer: no more
   * reading until they have run, and TCP pushes back on the client. */
  if (s->in != NULL && s->inlen == CHATD_IN_MAX && !s->closed && !s->in_full) {
    s->in_full = true;
    uv_read_stop((uv_stream_t *)&s->tcp);
  }
}

/* The throttle timer: the flood wait is over, or (at once) the holds are
 * off. Either way the waiting lines run and the socket reads again. */
static void on_throttle(uv_timer_t *t) {
  chat_session *s = t->data;
  s->throttled = false;
  if (s->closed)
    return;
  hark_ref(s);
  process_input(s);
  if (!s->throttled && !s->closed &&
      (s->in == NULL || s->inlen < CHATD_IN_MAX)) {
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

/* ---- reading ------------------------------------------------------------ */

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  chat_session *s = stream->data;
  if (nread < 0) {
    server_schedule_close(s->u.srv, s,
                          nread == UV_EOF ? "Connection closed"
                                          : uv_strerror((int)nread));
    return;
  }
  if (nread == 0)
    return;
  hark_ref(s); /* a command may schedule our end */
  if (s->tls != NULL) {
    tls_feed(s->tls, buf->base, (size_t)nread); /* on_tls_data runs */
  } else if (buf->base == s->u.srv->rbuf) {
    take_input(s, buf->base, (size_t)nread);
  } else {
    s->inlen += (size_t)nread;
    if (!s->throttled)
      process_input(s);
  }
  pause_if_full(s);
  hark_unref(s);
}

/* The read path without the socket (fuzz_seam.c): takes what fits, as one
 * read would, and returns how much that was. */
size_t session_feed(chat_session *s, const char *data, size_t len) {
  size_t room = s->in == NULL ? CHATD_IN_MAX : CHATD_IN_MAX - s->inlen;
  if (len > room)
    len = room;
  if (len == 0)
    return 0;
  memcpy(s->u.srv->rbuf, data, len);
  if (s->in == NULL) {
    uv_buf_t buf = uv_buf_init(s->u.srv->rbuf, (unsigned)len);
    on_read((uv_stream_t *)&s->tcp, (ssize_t)len, &buf);
  } else {
    hark_ref(s);
    keep_input(s, s->u.srv->rbuf, len);
    if (!s->throttled && s->held == 0)
      process_input(s);
    pause_if_full(s);
    hark_unref(s);
  }
  return len;
}

/* ---- TLS ------------------------------------------------------------------ */

static void on_tls_ready(void *data) {
  chat_session *s = data;
  s->tls_ready = true;
  if (s->refuse != NULL)
    session_error_close(s, s->refuse);
  if (s->qcount > 0)
    server_mark_dirty(s->u.srv, s);
}

static void on_tls_data(void *data, const char *buf, size_t len) {
  chat_session *s = data;
  if (!s->closing && !s->closed)
    take_input(s, buf, len);
}

static void on_tls_error(void *data, const char *why) {
  chat_session *s = data;
  log_debug("%s: %s", s->u.host, why);
  server_schedule_close(s->u.srv, s, "TLS error");
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
  server_forget_address(s->u.srv, s);
  /* Best effort: the last lines (ERROR) go out if the socket takes them. */
  uv_buf_t iov[IOV_BATCH];
  size_t bytes;
  if (s->over_hard && !s->writing && s->qoff == 0 && s->tls == NULL) {
    /* What it did not read is dropped; between two lines, it may still
     * hear why (if its socket has room at all). */
    char line[300];
    int n = snprintf(line, sizeof line, "ERROR :Closing Link: %s (%s)\r\n",
                     s->u.host, s->quit_reason);
    uv_buf_t b = uv_buf_init(line, (unsigned)n);
    uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
  } else if (!s->writing && s->qcount > 0) {
    size_t n = gather(s, iov, &bytes);
    int r = 0;
    if (s->tls == NULL)
      r = uv_try_write((uv_stream_t *)&s->tcp, iov, (unsigned)n);
    else if (s->tls_ready && tls_write(s->tls, iov, (unsigned)n) == 0)
      r = (int)bytes;
    if (r > 0)
      consume(s, (size_t)r);
  }
  tls_free(s->tls); /* its writes in flight finish before the close */
  s->tls = NULL;
  uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&s->throttle, on_handle_closed);
}

chat_session *session_accept_fd(chat_server *srv, int fd, void *tls_ctx,
                                const char *refuse) {
  chat_session *s = hark_new(&chat_session_type);
  if (s == NULL || session_init(s, srv) != 0) {
    hark_unref(s);
    static const char msg[] = "ERROR :Closing Link: (Out of memory)\r\n";
    log_error("accept: out of memory: connection refused");
    if (write(fd, msg, sizeof msg - 1) < 0) {
      /* nothing more to do: it is closed next */
    }
    close(fd);
    srv->refused++;
    return NULL;
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
  int r = uv_tcp_open(&s->tcp, fd);
  if (r != 0) {
    log_warn("accept: %s", uv_strerror(r));
    close(fd);
    session_close_handles(s);
    return NULL;
  }
  uv_tcp_nodelay(&s->tcp, 1);
  int sl = sizeof s->peer;
  strcpy(s->u.host, "unknown");
  if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&s->peer, &sl) == 0) {
    if (s->peer.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&s->peer, s->u.host, sizeof s->u.host);
    else
      uv_ip4_name((struct sockaddr_in *)&s->peer, s->u.host, sizeof s->u.host);
  }
  uint64_t now = chat_now_ms(srv);
  s->connected_at = s->active_at = s->refill_at = s->spoke_at = now;
  s->tokens = srv->opt.flood_burst;
  log_debug("connection from %s", s->u.host);
  if (tls_ctx != NULL) {
    static const chat_tls_cb cb = {on_tls_ready, on_tls_data, on_tls_error};
    s->tls = tls_start(tls_ctx, (uv_stream_t *)&s->tcp, true, NULL, &cb, s);
    if (s->tls == NULL) {
      session_close_handles(s);
      return NULL;
    }
  }
  /* A refused TLS client hears why once its handshake is done. */
  s->refuse = refuse;
  if (refuse != NULL && s->tls == NULL) {
    session_error_close(s, refuse);
    return NULL;
  }
  s->pass_ok = srv->opt.password == NULL;
  uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
  return refuse == NULL ? s : NULL;
}
