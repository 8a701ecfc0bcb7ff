/* hark-chatd federation, inside: what fed_link.c (the Redis side: the
 * connections, registration, heartbeats, the outbox), fed_out.c (the
 * receivers: local events into the outbox) and fed_in.c (the stream:
 * remote events applied, snapshots) share. See federation.h for the
 * outside, fed_lua.c for the key layout and the scripts. */
#ifndef CHATD_FED_H
#define CHATD_FED_H

#include "chatd.h"
#include "federation.h"
#include "redis.h"

/* ---- a small string map (uids -> users, pending items -> counts) ---- */

typedef struct fmap_entry fmap_entry;
typedef struct fmap {
  fmap_entry **slots;
  size_t nslots, count;
} fmap;

int fmap_init(fmap *m);
void fmap_free(fmap *m, void (*value_free)(void *value));
void *fmap_get(fmap *m, const char *key);
/* Sets key's value (replacing it: *old gets the previous one or NULL).
 * Returns 0 or HARK_ENOMEM. */
int fmap_put(fmap *m, const char *key, void *value, void **old);
/* Removes key, returning its value (NULL if none). */
void *fmap_del(fmap *m, const char *key);
void fmap_foreach(fmap *m, void (*fn)(const char *key, void *value, void *d),
                  void *d);

/* ---- the outbox: this node's events, in order, until Redis has them -- */

/* Event kinds, as stream entries name them (k). */
enum fed_kind {
  FK_INTRO,
  FK_NICK,
  FK_QUIT,
  FK_JOIN,
  FK_PART,
  FK_KICK,
  FK_TOPIC,
  FK_KEY,
  FK_OP,
  FK_MSG,
  FK_PM,
  FK_LOST,
  FK_RELEASE, /* a claim given back: Redis only, not in the stream */
  FK_AWAY,
  FK_UMODE,
  FK_SETNAME,
  FK_KILL,
  FK_WALLOPS,
  FK_INVITE,
  FK_CMODE, /* a channel's flag (+imnpst) or limit */
  FK_VOICE,
  FK_LIST, /* a ban, exception or invite exception */
  FK_NKINDS
};
extern const char *const fed_kind_names[FK_NKINDS];

typedef struct fed_out {
  struct fed_out *next;
  uint64_t q; /* this node's sequence number: Redis applies it once */
  int kind;
  bool state; /* changes the network's state (not a message) */
  bool sent;  /* on the wire, its reply due */
  char item[CHATD_CHAN_MAX + 228]; /* pending item, or "" */
  hark_weak who;  /* INTRO, NICK: the user a rename would concern */
  hark_weak gate; /* the session whose output waits for this commit */
  bool gating;
  char nick[CHATD_NICK_MAX + 1]; /* INTRO, NICK: the nick asked for */
  int nfields;                   /* field/value pairs */
  const char **argv;
  size_t *lens;
  char data[];
} fed_out;

/* One field of an event: name and value (len bytes; SIZE_MAX: strlen). */
typedef struct fed_field {
  const char *name;
  const char *value;
  size_t len;
} fed_field;

/* ---- an event read from the stream ------------------------------------ */

typedef struct fed_ev {
  const char *id;
  uint64_t n;
  int kind;
  const char *o, *i; /* origin node and incarnation ("" for the network) */
  const char *u, *t, *c, *m, *x, *nick, *user, *host, *real, *by, *at, *v;
  const char *g, *s, *acct; /* client tags, STATUSMSG, account */
  const char *node, *inc;   /* LOST: the node, its incarnation */
  bool has_x;
} fed_ev;

/* A command waiting until this node has read the stream up to target. */
typedef struct fed_wait {
  struct fed_wait *next;
  struct fed_bridge *b;
  chat_claim *claim;
  uint64_t target; /* the stream's end when Redis answered */
  bool asked;      /* the question is out (else: parked until the link) */
  bool answered;   /* target is known */
  bool done;       /* claim decided: freed when its answer comes */
} fed_wait;

/* A nick claim out to Redis, or parked until the link is up. */
typedef struct claim_req {
  struct claim_req *next; /* parked */
  struct fed_bridge *b;
  chat_claim *claim;
  hark_weak who;
  char nick[CHATD_NICK_MAX + 1], uid[CHATD_UID_MAX + 1];
} claim_req;

/* ---- the bridge -------------------------------------------------------- */

enum { LINK_DOWN, LINK_CONNECTING, LINK_SYNCING, LINK_UP, LINK_STOPPED };

typedef struct fed_bridge {
  hark_object base;
  chat_server *srv;
  const chat_options *opt;
  char node[CHATD_NODE_MAX + 1];
  char prefix[80]; /* "{tag}:" */
  char inc[24];    /* this incarnation, "" before the first */
  unsigned lease, timeout, block_ms, beat_ms;
  chat_tls_ctx *tls;
  redis_conn *cmd, *rd; /* commands; the blocking XREAD */
  bool cmd_ready, rd_ready;
  int state;
  char sha[4][41]; /* the scripts, by fed_lua.c's index */
  /* "EVALSHA sha 1 key prefix node inc retention lease" of each script,
   * in RESP, for inc (rebuilt when the incarnation or a sha changes) */
  char head[4][512];
  size_t headlen[4];
  char head_inc[24];
  unsigned scripts_loaded;
  /* the stream */
  char last_id[48];
  uint64_t last_n;
  char epoch[32]; /* of the stream last_id belongs to */
  bool reading, resyncing, xread_out;
  fed_wait *waiters;
  claim_req *parked; /* claims made while the link was coming up */
  /* the outbox */
  fed_out *out_head, *out_tail, *out_unsent;
  size_t out_len, out_inflight;
  uint64_t next_q;
  fed_out *barrier; /* reading starts when this one is acknowledged */
  /* users: uid -> chat_user (remote ones strongly, ours weakly) */
  fmap remote;  /* uid -> chat_user*, strong */
  names uids;   /* uid -> chat_user, weak: everyone's */
  fmap pending; /* item -> count of our events in flight */
  /* liveness */
  uv_timer_t beat, retry, guard;
  uint64_t healthy_since, beat_sent_at, last_tick;
  bool beat_out;
  unsigned backoff;
  char last_error[300];
  bool stopping, bye_sent;
  bool muted; /* a fresh resync: what it changes, the burst will say */
  unsigned long long published, applied, dropped, reconnects, resyncs, judged;
} fed_bridge;

/* fed_link.c */
void link_reset(fed_bridge *b, const char *why);
/* Queues an event of this node (fields borrowed, copied). The outbox
 * keeps it until Redis has applied it. who: the user whose nick the
 * answer may change (INTRO, NICK). actor: the user who did it; when it is
 * a session here, its output waits until Redis has the event (while
 * Redis is reachable), so that what it tells its client has happened for
 * the whole network. Returns 0 or HARK_ENOMEM. */
int out_push(fed_bridge *b, int kind, const fed_field *f, int nf,
             const char *item, chat_user *who, const char *nick,
             chat_user *actor);
void out_flush(fed_bridge *b);
/* Runs a script on the command connection (argv after EVALSHA sha 0). */
int fed_script(fed_bridge *b, int script, int argc, const char **argv,
               const size_t *lens, redis_cb cb, void *data);

/* fed_out.c */
int out_connect(fed_bridge *b);
void out_disconnect(fed_bridge *b);
/* The pending item key of an event: "m <chan> <uid>" and so on. */
void fed_item(char *buf, size_t cap, char what, const char *chan,
              const char *uid);
void pending_add(fed_bridge *b, const char *item, int delta);
bool pending_has(fed_bridge *b, const char *item);
/* Every local registered user, and their channels, as events (a node new
 * to the network, or back after being declared lost). */
void fed_burst(fed_bridge *b, fmap *snapshot_chans);
/* The folded form of a nick or channel (rfc1459) into buf. */
void fed_fold(char *buf, size_t cap, const char *name);
/* Whether the network carries a channel: a '#' channel; '&' ones stay on
 * their server (neither sent nor taken, nor dropped by a resync). */
static inline bool fed_carries(const char *chan) {
  return chan != NULL && !irc_local_channel(chan) &&
         irc_valid_channel(chan, CHATD_CHAN_MAX);
}
chat_user *fed_user(fed_bridge *b, const char *uid); /* borrowed or NULL */
void fed_forget(fed_bridge *b, chat_user *u);
/* The link is up: the parked claims go out; down: they are granted. */
void out_unpark(fed_bridge *b, bool up);

/* fed_in.c */
void in_start(fed_bridge *b); /* reading from last_id */
void in_stop(fed_bridge *b);  /* (the waiters are let go) */
/* sig_settle: c waits until the stream has been read up to its end as
 * Redis has it now. */
void in_settle(fed_bridge *b, chat_claim *c);
void in_unpark(fed_bridge *b); /* the link is up: the parked ones ask */
/* A snapshot reply (the scripts' {.., lastid, n, users, chans} from index
 * at): the network's state replaces this node's view of it. fresh: a new
 * incarnation (our own users are burst, not judged). known (may be NULL)
 * gets the folded names of the network's channels. False: a bad reply. */
bool in_resync(fed_bridge *b, const rreply *r, size_t at, bool fresh,
               fmap *known);

/* fed_lua.c */
enum { SCRIPT_EMIT, SCRIPT_REGISTER, SCRIPT_BEAT, SCRIPT_MISC, NSCRIPTS };
extern const char *const fed_scripts[NSCRIPTS];

#endif
