/* hark-chatd: the types the daemon's core files share. Every user (a
 * local session or a user of another node), every channel is a hark
 * object; channels are the senders of the daemon's channel signals, and a
 * session is in a channel by having its receivers connected (weakly) with
 * that channel as sender.
 *
 * The core's operations (user.c, channel.c) change state and *emit*: each
 * is one or more hark_sends that the receivers connected to the signal
 * deliver. Local sessions are such receivers; federation, when it runs,
 * is one more (server.c connects it; no core file knows it). Commands
 * check and answer, then call the same operations that federation calls
 * to apply what other nodes did. */
#ifndef CHATD_H
#define CHATD_H

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#include <hark.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "alloc.h"
#include "log.h"
#include "proto.h"

#define CHATD_VERSION "hark-chatd-0.3"
#define CHATD_NICK_MAX 64
#define CHATD_CHAN_MAX 200
#define CHATD_USER_MAX 31
#define CHATD_REAL_MAX 63
#define CHATD_NODE_MAX 63
#define CHATD_ACCOUNT_MAX 31
#define CHATD_UID_MAX (CHATD_NODE_MAX + 24)
#define CHATD_AWAY_MAX 200  /* AWAYLEN */
#define CHATD_TOPIC_MAX 390 /* TOPICLEN */
#define CHATD_KICK_MAX 255  /* KICKLEN */
#define CHATD_KEY_MAX 32    /* KEYLEN */
#define CHATD_LIST_MAX 100  /* MAXLIST: bans, exceptions, invite exceptions */
#define CHATD_MONITOR_MAX 100
#define CHATD_MODES_MAX 20 /* MODES: changes with a parameter per MODE */
/* TARGMAX: the most distinct targets one command acts on (407 beyond) */
#define CHATD_TARGETS_MSG 4
#define CHATD_TARGETS_NAMES 10
#define CHATD_TARGETS_WHOIS 4
#define CHATD_TARGETS_KICK 4
/* A line's tags (the '@', the tags and the space) and the rest, at most,
 * as message-tags has them: 4096 and 512 bytes with the CR LF. */
#define CHATD_TAGS_MAX 4096
#define CHATD_IN_LINE_MAX (CHATD_TAGS_MAX + IRC_LINE_MAX)
/* Input a session keeps while its lines wait (a hold, the flood bucket):
 * the socket pauses beyond it. Only a session with a partial line or
 * waiting lines has an input buffer at all. */
#define CHATD_IN_MAX 16384
/* How long a session's input waits for a command's network answer at most
 * (a nick claim to a Redis that hangs without closing): then it goes on. */
#define CHATD_HOLD_TIMEOUT_MS 5000

typedef struct chat_server chat_server;
typedef struct chat_user chat_user;
typedef struct chat_session chat_session;
typedef struct chat_channel chat_channel;

/* Every limit, with its default in server.c and its option in main.c. */
typedef struct chat_options {
  char host[64];
  int port;
  char name[64];
  const char *password;      /* NULL: none */
  const char *motd_path;     /* NULL: 422 */
  const char *accounts_path; /* NULL: no OPER, no SASL (oper.c) */
  /* the TLS listener (--listen-tls); tls_port -1: none */
  char tls_host[64];
  int tls_port;
  const char *tls_cert, *tls_key;
  unsigned max_clients;
  unsigned max_channels;
  unsigned max_chans_per_client;
  /* connections from one address: on this node, on the whole network */
  unsigned max_per_ip, max_per_ip_global;
  char per_ip_exempt[256]; /* comma list of addresses never limited */
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
  unsigned whowas_max; /* entries of the WHOWAS history */
  int log_level;
  /* federation (fed_*.c): redis_port 0 is off */
  char redis_host[256];
  int redis_port;
  char node_id[CHATD_NODE_MAX + 1]; /* "": host-pid */
  unsigned lease_ms;
  const char *redis_user, *redis_password; /* NULL: no AUTH */
  bool redis_tls;
  const char *redis_ca, *redis_cert, *redis_key; /* PEM files */
  char redis_prefix[64];                         /* the hash tag of every key */
  unsigned redis_retention;  /* stream entries kept (XADD MAXLEN) */
  unsigned redis_timeout_ms; /* connect and command timeout */
} chat_options;

void chat_options_default(chat_options *o);

/* Operation flags: FROM_NET marks what federation applies for another
 * node (or the network decided): it is not published again. */
#define CHAT_FROM_NET 1u

/* ---- client capabilities (cap.c) ---------------------------------------- */

enum {
  CAP_MULTI_PREFIX = 1u << 0,
  CAP_ECHO = 1u << 1,
  CAP_SERVER_TIME = 1u << 2,
  CAP_MESSAGE_TAGS = 1u << 3,
  CAP_AWAY_NOTIFY = 1u << 4,
  CAP_ACCOUNT_NOTIFY = 1u << 5,
  CAP_EXTENDED_JOIN = 1u << 6,
  CAP_BATCH = 1u << 7,
  CAP_LABELED = 1u << 8,
  CAP_CAP_NOTIFY = 1u << 9,
  CAP_SASL = 1u << 10,
  CAP_SETNAME = 1u << 11,
  CAP_INVITE_NOTIFY = 1u << 12,
  CAP_USERHOST_NAMES = 1u << 13,
  CAP_EXT_MONITOR = 1u << 14,
};
/* The capabilities that change how an event's line looks (tags.c). */
#define CAP_TAGGED (CAP_SERVER_TIME | CAP_MESSAGE_TAGS | CAP_EXTENDED_JOIN)

/* ---- user and channel modes --------------------------------------------- */

enum {
  UMODE_I = 1u << 0, /* invisible */
  UMODE_W = 1u << 1, /* wallops */
  UMODE_O = 1u << 2, /* IRC operator */
  UMODE_B = 1u << 3, /* bot */
};

enum {
  CMODE_I = 1u << 0, /* invite only */
  CMODE_M = 1u << 1, /* moderated */
  CMODE_N = 1u << 2, /* no messages from outside */
  CMODE_P = 1u << 3, /* private: like secret here */
  CMODE_S = 1u << 4, /* secret */
  CMODE_T = 1u << 5, /* topic by operators */
};

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

/* What happened, for the receivers of the daemon's signals: the line
 * local members see, and the same event as fields for receivers that
 * carry it elsewhere (federation) and must not parse the line. */
enum chat_user_event {
  USER_REGISTERED,
  USER_NICK,
  USER_QUIT,
  USER_AWAY,    /* text: the message, NULL: back */
  USER_MODE,    /* text: "+i", "-w"... (what changed) */
  USER_SETNAME, /* text: the new realname */
  USER_KILLED,  /* target: who; text: the reason (the killer's session
                   ends it where it is local) */
  USER_WALLOPS, /* text: the message */
};

typedef struct chat_mode_change chat_mode_change;

typedef struct chat_event {
  chat_buf *line;     /* NULL for user-level events (sig_user) */
  chat_buf *alt;      /* extended-join's JOIN line, or NULL */
  chat_buf *bare;     /* TAGMSG: the line for message-tags clients only */
  chat_user *origin;  /* who did it; NULL: the server */
  chat_channel *chan; /* the channel, for channel signals */
  chat_user *target;  /* KICK, MODE o, INVITE, a private message: whom */
  const char *what;   /* PRIVMSG/NOTICE/TAGMSG */
  const char *text;   /* message, reason, topic, key; old nick (NICK) */
  const chat_mode_change *modes; /* MODE: what changed */
  size_t nmodes;
  unsigned long seq; /* de-duplicates QUIT/NICK across channels */
  unsigned flags;    /* CHAT_FROM_NET */
  unsigned need_cap; /* sig_peers: only to sessions with one of these */
  int kind;          /* sig_user: enum chat_user_event */
  char status;       /* STATUSMSG: '@' or '+' (only those members), or 0 */
  bool op;           /* JOIN: as channel operator */
  bool skip_origin;  /* the origin has its own copy (or none) */
  bool echo;         /* ... unless it asked for echo-message */
  /* tags (tags.c): what the tagged forms of the line carry, and those
   * forms, made for the first receiver that wants each */
  const char *client_tags; /* "+a=b;+c", or NULL */
  bool msgid;              /* a message: msgid for message-tags clients */
  char id[32];
  struct timespec at;
  unsigned made; /* a variant was made */
  chat_buf *variant[8];
} chat_event;

/* The line of ev for a session with caps: a borrowed buffer, or NULL when
 * that session gets nothing (a TAGMSG without message-tags). */
chat_buf *event_line(chat_server *srv, chat_event *ev, unsigned caps);
/* Drops the forms the receivers made. After every send of ev. */
void event_release(chat_event *ev);
/* The client-only tags (+name[=value]) of a line's tags, into buf (at most
 * cap bytes), "" when none. */
void tags_client_only(const char *tags, char *buf, size_t cap);
/* The value of tag name in tags (escaped as sent) into buf; false: none. */
bool tags_get(const char *tags, const char *name, char *buf, size_t cap);
/* A copy of line b with tag ("name=value") first among its tags. NULL
 * when memory runs out. */
chat_buf *tags_prepend(const chat_buf *b, const char *tag);

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

typedef struct chat_listener chat_listener;
typedef struct chat_whowas chat_whowas;
typedef struct chat_accounts chat_accounts;
typedef struct chat_monitors chat_monitors;
typedef struct chat_ipcount chat_ipcount;

struct chat_server {
  uv_loop_t *loop;
  hark_loop *hl;
  chat_options opt;
  chat_listener *plain, *tls; /* server.c */
  uv_signal_t sigint, sigterm, sigusr1;
  uv_timer_t tick;
  uv_prepare_t prepare;
  int port, tls_port; /* bound */
  /* The channel signals, sent with a channel as sender: */
  hark_signal *sig_message, *sig_join, *sig_part, *sig_quit, *sig_peers,
      *sig_topic, *sig_mode, *sig_kick;
  /* sig_private: sent with the recipient as sender; sig_user: a user
   * registered, renamed, quit, went away... (once each, with the user as
   * sender); sig_invite: an invitation (the channel as sender);
   * sig_claim: may this user take this nick; sig_settle: may this user's
   * command read the network's state now, or must this node first see
   * what other nodes did before it (args of both: chat_claim). */
  hark_signal *sig_private, *sig_user, *sig_invite, *sig_claim, *sig_settle;
  names nicks, chans;
  chat_session *sessions; /* the server's strong reference to each */
  unsigned nclients;
  unsigned max_local, max_global; /* most users seen at once */
  /* users of the network, kept by a receiver of sig_user (server.c) */
  unsigned nusers, nlocal, ninvisible, nopers;
  struct {
    char name[CHATD_NODE_MAX + 1];
    unsigned users;
  } nodes[16]; /* other nodes with users (more share the last) */
  unsigned nnodes;
  chat_session *dirty;   /* sessions with output to write */
  chat_session *closing; /* sessions to close before the loop sleeps */
  unsigned long seq;
  uint64_t next_id;              /* of the next user: unique across restarts */
  uint64_t msgid_seq;            /* msgid tags */
  char msgid_prefix[16];         /* this run's: msgids never repeat */
  char node[CHATD_NODE_MAX + 1]; /* this daemon's name in the network */
  bool stopping;
  time_t started;
  char *motd;
  chat_whowas *whowas;     /* who.c */
  chat_accounts *accounts; /* oper.c */
  chat_monitors *monitors; /* monitor.c */
  chat_ipcount *ips;       /* server.c: connections per address */
  int reserve_fd;          /* server.c: kept for when descriptors run out */
  unsigned long long lines_in, bufs_out, bytes_out, sendq_kills, flood_waits;
  unsigned long long oom_drops; /* lines a session could not take */
  unsigned long long refused;   /* connections refused (limits, fds) */
  struct fed_bridge *fed;       /* federation, when on (server.c) */
  /* reading: every idle session reads into this, and keeps only what is
   * left of a line (session.c) */
  char rbuf[CHATD_IN_MAX];
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
/* s's connection is gone: its address counts one less. */
void server_forget_address(chat_server *srv, chat_session *s);
/* The server's 005 lines to s. */
void server_isupport(chat_session *s);

/* ---- users (user.c) ------------------------------------------------------ */

/* A user's place in a channel: the user holds the channel (strongly) and
 * its status there. */
typedef struct chat_membership {
  chat_channel *chan;
  bool op, voice;
} chat_membership;

/* A user of the network. A local one is a chat_session (whose first
 * member this is); a remote one is held by federation. Either holds its
 * channels strongly; channels and registries hold users weakly. */
struct chat_user {
  hark_object base;
  chat_server *srv;
  bool remote;     /* a user of another node (no connection here) */
  bool registered; /* NICK and USER done: known to the network */
  unsigned modes;  /* UMODE_* */
  char nick[CHATD_NICK_MAX + 1], user[CHATD_USER_MAX + 1],
      realname[CHATD_REAL_MAX + 1], host[64];
  char account[CHATD_ACCOUNT_MAX + 1]; /* "": not logged in */
  char *away;                          /* NULL: here */
  char uid[CHATD_UID_MAX + 1];         /* network-wide: "node:number" */
  char node[CHATD_NODE_MAX + 1];       /* remote: its node */
  chat_membership *chans;
  size_t nchans, chans_cap;
  unsigned long seen_seq;
  time_t signon;
};

extern const hark_type chat_user_type; /* remote users */

static inline chat_session *user_session(chat_user *u) {
  return u != NULL && !u->remote ? (chat_session *)u : NULL;
}

/* A new remote user (new reference), registered under nick (which must be
 * free here), or NULL when memory runs out. */
chat_user *user_new_remote(chat_server *srv, const char *uid, const char *node,
                           const char *nick, const char *user, const char *host,
                           const char *realname);
/* The user called nick, a new reference, or NULL (closing sessions are
 * nobody). */
chat_user *user_find(chat_server *srv, const char *nick);
void user_mask(chat_user *u, char *buf, size_t cap); /* nick!user@host */
bool user_in_channel(chat_user *u, chat_channel *c);
/* u's membership of c, or NULL. */
chat_membership *user_membership(chat_user *u, chat_channel *c);
/* "@+", "@", "+" or "" for u in c; all of them with multi-prefix. */
const char *user_prefix(chat_user *u, chat_channel *c, bool all);
/* u is registered: the network learns it (sig_user). */
void user_register(chat_user *u, unsigned flags);
/* Renames u (the nick must be free here): the registry, NICK lines to u
 * and, once each, to everyone sharing a channel, sig_user. Returns 0 or
 * HARK_ENOMEM (nothing changed). */
int user_set_nick(chat_user *u, const char *nick, unsigned flags);
/* u leaves the network: QUIT lines once to everyone sharing a channel,
 * its channels left, its nick freed, sig_user. */
void user_quit(chat_user *u, const char *reason, unsigned flags);
/* A private PRIVMSG/NOTICE/TAGMSG (cmd) from from (NULL: the server) to
 * to: one send of sig_private, to's receivers deliver it; from hears its
 * echo if it asked for echo-message. tags: client-only tags or NULL. */
int user_say(chat_user *to, chat_user *from, const char *cmd, const char *text,
             const char *tags, unsigned flags);
/* A server NOTICE to u if u is a session here. */
void user_notice(chat_user *u, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* u goes away (msg) or comes back (NULL): away-notify peers, sig_user.
 * Returns 0 or HARK_ENOMEM. */
int user_set_away(chat_user *u, const char *msg, unsigned flags);
/* Applies mode changes ("+iw-B": only those that change) to u: the MODE
 * line to u, sig_user. Returns 0 or HARK_ENOMEM. */
int user_set_modes(chat_user *u, const char *changes, unsigned flags);
/* A new realname: SETNAME to u and its setname peers, sig_user. */
int user_set_realname(chat_user *u, const char *real, unsigned flags);
/* u logs in as account ("": out): account-notify peers. */
void user_set_account(chat_user *u, const char *account, unsigned flags);
/* by (an operator) kills target: sig_user; the node of target ends it. */
void user_kill(chat_user *target, chat_user *by, const char *reason,
               unsigned flags);
/* A WALLOPS from from to every +w user, here and elsewhere. */
void user_wallops(chat_user *from, const char *text, unsigned flags);

/* A question to the receivers of sig (sig_claim: may who take nick;
 * sig_settle, nick "": is this node's view of the network up to date for
 * who's command): a receiver that needs time calls claim_defer in the
 * send, and claim_decide once later. done runs once, when every deferral
 * is decided (at once when none). */
typedef struct chat_claim chat_claim;
struct chat_claim {
  hark_weak who; /* the claiming user */
  char nick[CHATD_NICK_MAX + 1];
  unsigned deferred;
  bool refused;
  void (*done)(chat_claim *c, chat_user *who, bool granted); /* who: NULL
                                                               if gone */
  unsigned hold; /* the claimer's session_hold token, if held */
  bool held;
};
/* Sends sig with u as sender. Returns 1 when decided at once (done has
 * run), 0 when done comes later (*out is the question, for its hold),
 * HARK_ENOMEM (done never runs). */
int claim_run(hark_signal *sig, chat_user *u, const char *nick,
              void (*done)(chat_claim *c, chat_user *who, bool granted),
              chat_claim **out);
void claim_defer(chat_claim *c);
void claim_decide(chat_claim *c, bool granted);

/* ---- sessions (session.c) ---------------------------------------------- */

struct chat_tls;

struct chat_session {
  chat_user u; /* first: a session is a user and a hark object */
  uv_tcp_t tcp;
  uv_timer_t throttle;
  struct chat_tls *tls; /* a TLS client (--listen-tls), or NULL */
  int handles_open;
  chat_session *prev, *next; /* srv->sessions */
  chat_session *dirty_next;  /* srv->dirty */
  chat_session *close_next;  /* srv->closing */
  bool dirty, closing, closed, pass_ok, throttled, discarding;
  /* retry: the line being run waits (session_retry) and runs again;
   * settled: the line being run already waited once */
  bool retry, settled;
  bool over_hard; /* over --sendq-hard: no more output, closing */
  bool counted;   /* counted in the server's per-address table */
  bool cap_wait;  /* CAP negotiation started: registration waits */
  bool cap_302;   /* CAP LS 302: values and cap-notify */
  bool tls_ready; /* TLS handshake done */
  unsigned caps;  /* CAP_* */
  unsigned gated; /* output waits for this many commits (session_gate) */
  char quit_reason[200];
  /* input: only what is left of a line after a read, or lines waiting
   * (allocated then, up to CHATD_IN_MAX; freed once empty) */
  char *in;
  size_t inlen, incap;
  /* Commands waiting for the network (a nick claim): while any is,
   * further lines stay in `in` (the socket pauses when it is full) and
   * run, in order, once the answers are in. hold_gen tells a late answer
   * from a current one after a hold timed out. */
  unsigned held, hold_gen;
  uint64_t held_at; /* ms, when the first of them went out */
  bool in_full;     /* reading paused: `in` is full of waiting lines */
  /* output: a ring of shared buffers, qoff bytes of the first written */
  chat_buf **q;
  size_t qhead, qcount, qcap, qoff, qbytes;
  size_t wbufs;  /* buffers (from qhead) in the write in flight */
  size_t wbytes; /* their bytes, less qoff */
  bool writing;
  uv_write_t wreq;
  uint64_t soft_since; /* ms when the soft limit was first exceeded, 0 */
  double tokens;
  uint64_t refill_at; /* ms */
  uint64_t active_at, ping_at, connected_at;
  uint64_t spoke_at; /* ms: last message (WHOIS idle) */
  /* labeled-response: the label of the command being run, and the
   * replies it made so far (sent, labeled, when it ends) */
  char *label;
  chat_buf **lq;
  size_t nlq, lqcap;
  /* SASL (oper.c): the PLAIN exchange in progress */
  char *sasl_buf;
  bool sasl_plain;
  /* MONITOR (monitor.c): the folded nicks s watches */
  char **mon;
  size_t nmon;
  struct sockaddr_storage peer;
  const char *refuse; /* a refused TLS client: why, once it can hear it */
};

extern const hark_type chat_session_type;

/* Takes a connection fd (already accepted) into a new session; tls_ctx:
 * a TLS listener's. refuse: the session only hears this ERROR and ends
 * (after its TLS handshake). Closes fd itself when it cannot. Returns the
 * session (borrowed), or NULL when it could not be made or was refused. */
chat_session *session_accept_fd(chat_server *srv, int fd, void *tls_ctx,
                                const char *refuse);
/* Sets up a new session object of srv (ids, the private-message
 * receiver, the server's list): 0 or HARK_ENOMEM. */
int session_init(chat_session *s, chat_server *srv);
/* Appends b (borrowed; the queue takes its own count) to s's output as a
 * reply to s's own command (labeled, when the command was). Returns 0, or
 * HARK_ENOMEM when b is NULL or the queue could not grow: the line is
 * dropped for s alone (counted in oom-drops), s goes on. A session over
 * its hard limit takes nothing more. */
int session_send_buf(chat_session *s, chat_buf *b);
/* Appends b as an event s hears (never labeled). */
int session_deliver(chat_session *s, chat_buf *b);
/* Makes room for n more lines in s's queue (the next n session_send_buf of
 * existing buffers cannot fail). Returns 0 or HARK_ENOMEM. */
int session_reserve(chat_session *s, size_t n);
void session_sendf(chat_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A numeric reply: ":server NNN nick " + the formatted rest. */
void session_numeric(chat_session *s, int num, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Whether s takes no more output (over its hard limit, or closing): a
 * command that loops stops producing. */
static inline bool session_muted(chat_session *s) {
  return s->over_hard || s->closing || s->closed;
}
/* The labeled-response window of one command. */
void session_label_begin(chat_session *s, const char *label);
void session_label_end(chat_session *s);
/* Writes what is queued (writev); called before the loop sleeps. */
void session_flush(chat_session *s);
/* Closes the handles; the server's reference goes when they have closed. */
void session_close_handles(chat_session *s);
/* A command of s now waits for an asynchronous answer: s's further input
 * lines wait for it. Returns the token session_unhold takes. */
unsigned session_hold(chat_session *s);
/* That answer came: once nothing else is held, the waiting lines run, in
 * order, from the loop (never inside the caller). A token from before a
 * timeout does nothing. */
void session_unhold(chat_session *s, unsigned token);
/* The line being run is not done: it runs again, first, once the holds
 * are off. */
void session_retry(chat_session *s);
/* What s did must be committed elsewhere (the network has it) before s
 * hears more: its output waits until as many session_ungate. */
void session_gate(chat_session *s);
void session_ungate(chat_session *s);
/* From the server's tick: a hold older than CHATD_HOLD_TIMEOUT_MS ends. */
void session_hold_check(chat_session *s, uint64_t now);
/* Output queued for s and not yet written, TLS included. */
size_t session_pending(chat_session *s);
/* s ends with an ERROR line saying why. */
void session_error_close(chat_session *s, const char *why);

/* ---- channels (channel.c, modes.c) ----------------------------------------- */

typedef struct chat_member {
  hark_weak who; /* a chat_user; its status is in its membership */
} chat_member;

/* A ban, exception or invite exception. */
typedef struct chat_mask {
  char *mask, *by;
  time_t at;
} chat_mask;

typedef struct chat_masks {
  chat_mask *v;
  size_t n;
} chat_masks;

/* One change of a channel's modes. */
struct chat_mode_change {
  char dir;          /* '+' or '-' */
  char mode;         /* the letter */
  const char *arg;   /* key, limit, mask; NULL */
  chat_user *target; /* o, v */
};

struct chat_channel {
  hark_object base;
  chat_server *srv;
  hark_notify death; /* takes the name out of the registry */
  char name[CHATD_CHAN_MAX + 1];
  char *key;
  unsigned modes; /* CMODE_* */
  unsigned limit; /* +l, 0: none */
  chat_masks bans, excepts, invex;
  hark_weak *invites; /* users invited (weak), used on JOIN */
  size_t ninvites;
  char topic[CHATD_TOPIC_MAX + 1];
  char topic_by[CHATD_NICK_MAX + CHATD_USER_MAX + 66];
  time_t topic_at, created;
  chat_member *members; /* weak: members keep the channel, not back */
  size_t nmembers, cap;
};

extern const hark_type chat_channel_type;

/* Returns a new reference to a new channel registered under name, or NULL
 * when memory runs out. */
chat_channel *channel_new(chat_server *srv, const char *name);
/* The channel called name, a new reference, or NULL. */
chat_channel *channel_find(chat_server *srv, const char *name);
/* Live members (local and remote), after dropping the dead. */
size_t channel_count(chat_channel *c);
/* u joins c (operator if op): JOIN to every member, u included. Returns 0
 * or HARK_ENOMEM (nothing changed). */
int channel_join(chat_channel *c, chat_user *u, bool op, unsigned flags);
/* u leaves c, reason may be NULL: PART to every member, u included. */
int channel_part(chat_channel *c, chat_user *u, const char *reason,
                 unsigned flags);
/* by (NULL: the server) puts target out of c: KICK to every member. */
int channel_kick(chat_channel *c, chat_user *by, chat_user *target,
                 const char *reason, unsigned flags);
/* by (NULL: the server, shown as by_nick) sets the topic at time at. */
int channel_topic(chat_channel *c, chat_user *by, const char *by_nick,
                  const char *topic, time_t at, unsigned flags);
/* by (NULL: the server) changes c's modes: those of the n changes that
 * change something are applied, in one MODE line to every member (and
 * one sig_mode send). Returns 0 or HARK_ENOMEM. */
int channel_modes(chat_channel *c, chat_user *by, const chat_mode_change *ch,
                  size_t n, unsigned flags);
/* The same for one change. */
int channel_mode1(chat_channel *c, chat_user *by, char dir, char mode,
                  const char *arg, chat_user *target, unsigned flags);
/* by invites target into c: the INVITE line to target (and to the
 * operators that asked for invite-notify), target may then join. */
int channel_invite(chat_channel *c, chat_user *by, chat_user *target,
                   unsigned flags);
/* Whether u was invited into c (and takes the invitation: used up). */
bool channel_take_invite(chat_channel *c, chat_user *u, bool take);
/* A PRIVMSG/NOTICE/TAGMSG (cmd) from from to the channel's members but
 * from; status '@'/'+': to those members only. */
int channel_say(chat_channel *c, chat_user *from, const char *cmd,
                const char *text, const char *tags, char status,
                unsigned flags);
/* u is out of c, with no line (its QUIT said it, or a resync): the
 * membership, u's receivers, u's reference to c (which may end c). */
void channel_leave_quietly(chat_channel *c, chat_user *u);
/* Sends the NAMES replies (353, and 366 when end) for c to s. */
void channel_names(chat_channel *c, chat_session *s, bool end);
/* Whether c is listed to u (not secret, or u is in it). */
bool channel_listed(chat_channel *c, chat_user *u);
/* The prefix of a line from u, or from the server when u is NULL. */
void chat_prefix(chat_server *srv, chat_user *u, char *buf, size_t cap);
/* u's nick!user@host matches a mask of list. */
bool channel_masks_match(const chat_masks *list, chat_user *u);
/* u may not join / speak in c because of its bans (and no exception). */
bool channel_banned(chat_channel *c, chat_user *u);
/* u may not speak in c: a ban or a mute ("m:mask"), and no exception
 * (plain or "m:") for it. */
bool channel_muted(chat_channel *c, chat_user *u);
/* "+ntk key" (the key for members) into buf. */
void channel_mode_string(chat_channel *c, bool with_key, char *buf, size_t cap);
/* Frees the lists of c. */
void channel_masks_free(chat_masks *m);

/* ---- commands (commands.c and the files it names) ----------------------- */

/* Handles one input line of s. */
void command_line(chat_session *s, char *line, size_t len);
/* s is leaving: its QUIT to the network. */
void command_quit_broadcast(chat_session *s, const char *reason);
/* For a command whose answer reads the network's state: true when the
 * line must wait (it runs again once this node is up to date), false to
 * go on now. */
bool command_settle(chat_session *s);
/* A channel s can see into: not secret, or s is in it. */
bool channel_visible(chat_channel *c, chat_user *u);
void send_motd(chat_session *s);

static inline uint64_t chat_now_ms(chat_server *srv) {
  return uv_now(srv->loop);
}

#endif
