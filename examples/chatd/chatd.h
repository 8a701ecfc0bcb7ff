/* hark-chatd: the types the daemon's files share. Every session and every
 * channel is a hark object; channels are the senders of the daemon's
 * signals, and a session is in a channel by having its receivers
 * connected (weakly) with that channel as sender. */
#ifndef CHATD_H
#define CHATD_H

#ifdef HAVE_CONFIG_H
#include <config.h> /* HARK_CHATD_REDIS */
#endif
#include <hark.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "alloc.h"
#include "log.h"
#include "proto.h"
#include "federation.h"

#define CHATD_VERSION "hark-chatd-0.1"
#define CHATD_NICK_MAX 64
#define CHATD_CHAN_MAX 200
/* How long a session's input waits for a command's Redis reply at most
 * (a Redis that hangs without closing the connection): then it goes on. */
#define CHATD_HOLD_TIMEOUT_MS 5000

typedef struct chat_server chat_server;
typedef struct chat_session chat_session;
typedef struct chat_channel chat_channel;

/* Every limit, with its default in main.c's option table. */
typedef struct chat_options {
  char host[64];
  int port;
  char name[64];
  const char *password; /* NULL: none */
  const char *motd_path; /* NULL: 422 */
  unsigned max_clients;
  unsigned max_channels;
  unsigned max_chans_per_client;
  unsigned nicklen;
  unsigned channellen;
  unsigned register_timeout; /* seconds */
  unsigned ping_interval;    /* idle seconds before the server PINGs */
  unsigned ping_timeout;     /* seconds to answer it */
  size_t sendq_hard;         /* bytes queued: disconnect at once */
  size_t sendq_soft;         /* bytes queued for longer than... */
  unsigned sendq_soft_seconds;
  double flood_rate; /* lines per second; 0 disables */
  double flood_burst;
  int log_level;
  /* federation (federation.c): redis_port 0 is off */
  char redis_host[64];
  int redis_port;
  char node_id[64]; /* "" : host-pid */
  unsigned lease_ms;
} chat_options;

void chat_options_default(chat_options *o);

/* ---- shared output buffers -------------------------------------------- */

/* One formatted line (or a few), shared by every queue it was appended to:
 * a broadcast formats once and each recipient holds a count. Loop thread
 * only, hence a plain counter. */
typedef struct chat_buf {
  unsigned refs;
  unsigned len;
  char data[];
} chat_buf;

chat_buf *chat_buf_new(const char *data, size_t len); /* refs = 1 */
chat_buf *chat_buf_printf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static inline chat_buf *chat_buf_ref(chat_buf *b) {
  b->refs++;
  return b;
}
void chat_buf_unref(chat_buf *b);

/* The args of every send on the daemon's signals. */
typedef struct chat_event {
  chat_buf *line;
  chat_session *origin; /* skipped where the command says so */
  unsigned long seq;    /* de-duplicates QUIT/NICK across channels */
} chat_event;

/* ---- name registries (rfc1459-folded name -> hark_weak) -------------- */

typedef struct names_entry names_entry;
typedef struct names {
  names_entry **slots;
  size_t nslots, count;
} names;

int names_init(names *n);
void names_free(names *n);
void *names_get(names *n, const char *name); /* new reference or NULL */
int names_put(names *n, const char *name, void *obj); /* 0, -1 on ENOMEM */
/* Removes name's entry if it points at obj or at nothing alive. */
void names_del(names *n, const char *name, void *obj);
size_t names_count(const names *n);
/* Calls fn for every live object (a new reference the callee borrows). */
void names_foreach(names *n, void (*fn)(void *obj, void *data), void *data);

/* ---- the server ------------------------------------------------------- */

struct chat_server {
  uv_loop_t *loop;
  hark_loop *hl;
  chat_options opt;
  uv_tcp_t listener;
  uv_signal_t sigint, sigterm, sigusr1;
  uv_timer_t tick;
  uv_prepare_t prepare;
  int port; /* bound */
  /* the daemon's signals: every one is sent with a channel as sender */
  hark_signal *sig_message, *sig_join, *sig_part, *sig_quit, *sig_nick,
      *sig_topic, *sig_mode;
  names nicks, chans;
  chat_session *sessions; /* the server's strong reference to each */
  unsigned nclients;
  chat_session *dirty;   /* sessions with output to write */
  chat_session *closing; /* sessions to close before the loop sleeps */
  unsigned long seq;
  bool stopping;
  time_t started;
  char *motd;
  unsigned long long lines_in, bufs_out, bytes_out, sendq_kills, flood_waits;
  unsigned long long oom_drops; /* lines a session could not take */
  struct fed_bridge *fed; /* NULL: not federated */
  void (*on_stopped)(chat_server *srv, void *data); /* tests */
  void *on_stopped_data;
};

/* Sets up srv on loop and starts listening. Returns 0 or a libuv error
 * (logged). */
int server_start(chat_server *srv, uv_loop_t *loop, const chat_options *opt);
/* Tells every client, closes every handle and the hark loop; uv_run then
 * finishes. Idempotent. Loop thread only. */
void server_stop(chat_server *srv, const char *why);
/* After uv_run has returned: drops the signals and registries. */
void server_free(chat_server *srv);
void server_stats_line(chat_server *srv, char *buf, size_t cap);
/* Queues s for closing once the current dispatch is over. */
void server_schedule_close(chat_server *srv, chat_session *s,
                           const char *reason);
void server_mark_dirty(chat_server *srv, chat_session *s);

/* ---- sessions --------------------------------------------------------- */

struct chat_session {
  hark_object base;
  chat_server *srv;
  uv_tcp_t tcp;
  uv_timer_t throttle;
  int handles_open;
  chat_session *prev, *next;       /* srv->sessions */
  chat_session *dirty_next;        /* srv->dirty */
  chat_session *close_next;        /* srv->closing */
  bool dirty, closing, closed, registered, pass_ok, throttled, discarding;
  char nick[CHATD_NICK_MAX + 1], user[32], realname[64], host[64];
  char quit_reason[200];
  /* input: at most one line plus what came with it */
  char in[16384];
  size_t inlen;
  /* Commands waiting for Redis (federation: NICK, JOIN, queries): while
   * any is, further lines stay in `in` (the socket pauses when it is full)
   * and run, in order, once the replies are in. hold_gen tells a late
   * reply from a current one after a hold timed out. */
  unsigned held, hold_gen;
  uint64_t held_at; /* ms, when the first of them went out */
  bool in_full;     /* reading paused: `in` is full of waiting lines */
  /* output: a ring of shared buffers, qoff bytes of the first written */
  chat_buf **q;
  size_t qhead, qcount, qcap, qoff, qbytes;
  size_t wbufs;          /* buffers (from qhead) in the write in flight */
  size_t wbytes;         /* their bytes, less qoff */
  bool writing;
  uv_write_t wreq;
  uint64_t soft_since; /* ms when the soft limit was first exceeded, 0 */
  double tokens;
  uint64_t refill_at; /* ms */
  uint64_t active_at, ping_at, connected_at;
  chat_channel **chans; /* strong references: a member keeps it alive */
  size_t nchans, chans_cap;
  unsigned long seen_seq;
};

extern const hark_type chat_session_type;

/* Accepts a connection on the listener into a new session. */
void session_accept(chat_server *srv);
/* Appends b (borrowed; the queue takes its own count) to s's output.
 * Returns 0, or HARK_ENOMEM when b is NULL or the queue could not grow:
 * the line is dropped for s alone (counted in oom-drops), s goes on. */
int session_send_buf(chat_session *s, chat_buf *b);
/* Makes room for n more lines in s's queue (the next n session_send_buf of
 * existing buffers cannot fail). Returns 0 or HARK_ENOMEM. */
int session_reserve(chat_session *s, size_t n);
void session_sendf(chat_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A numeric reply: ":server NNN nick " + the formatted rest. */
void session_numeric(chat_session *s, int num, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes what is queued (writev); called before the loop sleeps. */
void session_flush(chat_session *s);
/* Closes the handles; the server's reference goes when they have closed. */
void session_close_handles(chat_session *s);
bool session_in_channel(chat_session *s, chat_channel *c);
/* A command of s now waits for an asynchronous reply: s's further input
 * lines wait for it. Returns the token session_unhold takes. */
unsigned session_hold(chat_session *s);
/* That reply came (or failed, or will never come): once nothing else is
 * held, the waiting lines run, in order, from the loop (never inside the
 * caller, a Redis callback). A token from before a timeout does nothing. */
void session_unhold(chat_session *s, unsigned token);
/* From the server's tick: a hold older than CHATD_HOLD_TIMEOUT_MS ends. */
void session_hold_check(chat_session *s, uint64_t now);
void session_mask(chat_session *s, char *buf, size_t cap); /* nick!user@host */

/* ---- channels --------------------------------------------------------- */

typedef struct chat_member {
  hark_weak who;
  bool op;
} chat_member;

struct chat_channel {
  hark_object base;
  chat_server *srv;
  hark_notify death; /* takes the name out of the registry */
  char name[CHATD_CHAN_MAX + 1];
  char *key;
  char topic[IRC_LINE_MAX];
  char topic_by[CHATD_NICK_MAX + 1];
  time_t topic_at, created;
  chat_member *members; /* weak: members keep the channel, not back */
  size_t nmembers, cap;
};

extern const hark_type chat_channel_type;

/* Returns a new reference to a new channel registered under name, or NULL
 * when memory runs out. */
chat_channel *channel_new(chat_server *srv, const char *name);
/* Adds s as a member (op if first) and connects its receivers. */
int channel_add(chat_channel *c, chat_session *s);
/* Disconnects s's receivers and drops it from the member list. */
void channel_remove(chat_channel *c, chat_session *s);
/* Live members, after dropping the dead. */
size_t channel_count(chat_channel *c);
chat_member *channel_member(chat_channel *c, chat_session *s);
void channel_set_key(chat_channel *c, const char *key);
/* Broadcasts line on sig with c as sender. */
int channel_send(chat_channel *c, hark_signal *sig, chat_buf *line,
                 chat_session *origin, unsigned long seq);
/* Sends the NAMES replies (353, 366) for c to s. */
void channel_names(chat_channel *c, chat_session *s);
void channel_who(chat_channel *c, chat_session *s);

/* ---- commands --------------------------------------------------------- */

/* Handles one input line of s. */
void command_line(chat_session *s, char *line, size_t len);
/* Broadcasts s's QUIT to its channels and frees its nick. */
void command_quit_broadcast(chat_session *s, const char *reason);

static inline uint64_t chat_now_ms(chat_server *srv) {
  return uv_now(srv->loop);
}

#endif
