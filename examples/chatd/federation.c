/* hark-chatd federation through Redis (see federation.h).
 *
 * Redis layout (names folded with the rfc1459 casemapping):
 *   hark:hb:NODE      heartbeat, SET PX lease, renewed every lease/3
 *   hark:nick:NICK    NODE, PX lease: the nick's claim (renewed likewise)
 *   hark:info:NICK    "nick user host realname", PX lease: for WHOIS
 *   hark:chans        set of the channels with members (LIST)
 *   hark:mem:CHAN     hash nick -> "NODE user host realname": members
 *   hark:ops:CHAN     set of operator nicks
 *   hark:meta:CHAN    hash key, topic, topic_by, topic_at
 *   hark:c:CHAN       pub/sub: the channel's events, one message each:
 *                     NODE \t seq \t kind \t nick \t a1 \t a2 \t a3 \t a4 \t line
 *   hark:n:NODE       pub/sub: the node's own channel: private messages to
 *                     its users, NODE \t kind \t target \t cmd \t mask \t text
 * Two connections: one for SUBSCRIBE, one for everything else; the node's
 * publishes all go through the latter, in order, so that each sender's
 * messages arrive in order everywhere. */
#include "chatd.h"

#ifdef HARK_CHATD_REDIS
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { SUB_NONE, SUB_SENT, SUB_ON, UNSUB_SENT };

typedef struct join_req join_req;

typedef struct fed_sub {
  struct fed_sub *next;
  int state;
  unsigned pending;  /* joins in flight */
  join_req *waiting; /* joins waiting for the subscription */
  char fold[CHATD_CHAN_MAX + 1];
} fed_sub;

typedef struct fed_bridge fed_bridge;

struct join_req {
  join_req *next;
  fed_bridge *b;
  fed_sub *sub;
  hark_weak who;
  char nick[CHATD_NICK_MAX + 1];
  char name[CHATD_CHAN_MAX + 1];
  char key[IRC_LINE_MAX + 1];
  bool has_key;
  unsigned hold; /* the session's input waits for the reply */
};

typedef struct nick_req {
  fed_bridge *b;
  hark_weak who;
  bool renew; /* a lease renewal; else a NICK, whose input waits */
  unsigned hold;
  char nick[CHATD_NICK_MAX + 1];
} nick_req;

/* The weak map's value for a live local channel: its remote members. */
typedef struct fed_chan {
  fed_member *m;
  size_t n, cap;
} fed_chan;

struct fed_bridge {
  hark_object base;
  chat_server *srv;
  char node[64], host[64];
  int port;
  unsigned lease;
  redisAsyncContext *cmd, *sub;
  bool cmd_up, sub_up, up, stopping, connecting;
  uv_timer_t tick, retry;
  uv_timer_t guard;                /* bounds the disconnect at shutdown */
  redisAsyncContext *lingering[2]; /* disconnecting at shutdown */
  unsigned backoff;
  uint64_t up_at;
  hark_weakmap *chans; /* chat_channel -> fed_chan */
  fed_sub *subs;
  struct {
    char node[64];
    unsigned long rseq, lseq;
  } last[32];
  unsigned nlast, lastnext;
  unsigned long long published, received, dropped, reconnects;
};

static const hark_type fed_bridge_type = {"fed_bridge", sizeof(fed_bridge),
                                          NULL, NULL};

/* ---- scripts ------------------------------------------------------------ */

static const char CLAIM[] =
    "local v=redis.call('get',KEYS[1]) "
    "if v==false or v==ARGV[1] then "
    "redis.call('set',KEYS[1],ARGV[1],'px',ARGV[2]) return 1 end return 0";
/* KEYS claim info; ARGV node */
static const char RELEASE[] =
    "if redis.call('get',KEYS[1])==ARGV[1] then "
    "return redis.call('del',KEYS[1],KEYS[2]) end return 0";
/* KEYS mem meta ops; ARGV nick value key name. Drops members of dead nodes,
 * checks the key, adds the member (operator if first), returns
 * {ok, op, meta, mem, ops}. */
static const char JOIN[] =
    "local m=redis.call('hgetall',KEYS[1]) "
    "for i=1,#m,2 do local n=string.match(m[i+1],'^(%S+)') "
    "if n==nil or redis.call('exists','hark:hb:'..n)==0 then "
    "redis.call('hdel',KEYS[1],m[i]) redis.call('srem',KEYS[3],m[i]) end end "
    "if redis.call('hlen',KEYS[1])==0 then redis.call('del',KEYS[2],KEYS[3]) "
    "end "
    "local k=redis.call('hget',KEYS[2],'key') "
    "if k and k~=ARGV[3] then return {0} end "
    "redis.call('sadd','hark:chans',string.sub(KEYS[1],10)) "
    "redis.call('hsetnx',KEYS[2],'name',ARGV[4]) "
    "local op=0 if redis.call('hlen',KEYS[1])==0 then op=1 "
    "redis.call('sadd',KEYS[3],ARGV[1]) end "
    "redis.call('hset',KEYS[1],ARGV[1],ARGV[2]) "
    "return {1,op,redis.call('hgetall',KEYS[2]),redis.call('hgetall',KEYS[1]),"
    "redis.call('smembers',KEYS[3])}";
/* KEYS mem meta ops; ARGV nick */
static const char PART[] =
    "redis.call('hdel',KEYS[1],ARGV[1]) redis.call('srem',KEYS[3],ARGV[1]) "
    "if redis.call('hlen',KEYS[1])==0 then redis.call('del',KEYS[2],KEYS[3]) "
    "redis.call('srem','hark:chans',string.sub(KEYS[1],10)) end return 0";
/* KEYS mem ops; ARGV old new value */
static const char RENAME[] =
    "redis.call('hdel',KEYS[1],ARGV[1]) "
    "redis.call('hset',KEYS[1],ARGV[2],ARGV[3]) "
    "if redis.call('srem',KEYS[2],ARGV[1])==1 then "
    "redis.call('sadd',KEYS[2],ARGV[2]) end return 0";

/* ---- helpers ------------------------------------------------------------- */

static fed_bridge *bridge_of(chat_server *srv) { return srv->fed; }

static void key_of(char *buf, size_t cap, const char *what, const char *name) {
  char f[CHATD_CHAN_MAX + 1];
  irc_fold(f, name, sizeof f);
  snprintf(buf, cap, "hark:%s:%s", what, f);
}

/* "NODE user host realname" */
static void member_value(chat_session *s, char *buf, size_t cap,
                         const char *node) {
  char real[64];
  snprintf(real, sizeof real, "%s", s->realname);
  for (char *p = real; *p; p++)
    if (*p == '\t')
      *p = ' ';
  snprintf(buf, cap, "%s %s %s %s", node, s->user[0] ? s->user : "~u",
           s->host, real);
}

static bool cmd_ok(fed_bridge *b) { return b->up && b->cmd != NULL; }

static void fire(fed_bridge *b, const char *fmt, ...) {
  if (!cmd_ok(b))
    return;
  va_list ap;
  va_start(ap, fmt);
  redisvAsyncCommand(b->cmd, NULL, NULL, fmt, ap);
  va_end(ap);
}

static void chan_keys(const char *name, char *mem, char *meta, char *ops,
                      size_t cap) {
  key_of(mem, cap, "mem", name);
  key_of(meta, cap, "meta", name);
  key_of(ops, cap, "ops", name);
}

/* ---- remote members ---------------------------------------------------- */

static void fed_chan_free(void *v) {
  fed_chan *fc = v;
  free(fc->m);
  free(fc);
}

static fed_chan *fc_get(fed_bridge *b, chat_channel *c, bool create) {
  fed_chan *fc = hark_weakmap_peek(b->chans, c);
  if (fc == NULL && create) {
    fc = calloc(1, sizeof *fc);
    if (fc != NULL && hark_weakmap_set(b->chans, c, fc) != 0) {
      free(fc);
      fc = NULL;
    }
  }
  return fc;
}

static fed_member *fc_find(fed_chan *fc, const char *nick) {
  for (size_t i = 0; fc != NULL && i < fc->n; i++)
    if (irc_casecmp(fc->m[i].nick, nick) == 0)
      return &fc->m[i];
  return NULL;
}

static fed_member *fc_put(fed_chan *fc, const char *nick) {
  fed_member *m = fc_find(fc, nick);
  if (m != NULL)
    return m;
  if (fc->n == fc->cap) {
    size_t ncap = fc->cap ? fc->cap * 2 : 8;
    fed_member *nm = realloc(fc->m, ncap * sizeof *nm);
    if (nm == NULL)
      return NULL;
    fc->m = nm;
    fc->cap = ncap;
  }
  m = &fc->m[fc->n++];
  memset(m, 0, sizeof *m);
  snprintf(m->nick, sizeof m->nick, "%s", nick);
  return m;
}

static bool fc_del(fed_chan *fc, const char *nick) {
  fed_member *m = fc_find(fc, nick);
  if (m == NULL)
    return false;
  *m = fc->m[--fc->n];
  return true;
}

/* "NODE user host realname" into m */
static void parse_value(fed_member *m, const char *v) {
  char node[64] = "", user[32] = "", host[64] = "";
  int off = 0;
  if (sscanf(v, "%63s %31s %63s %n", node, user, host, &off) >= 3) {
    snprintf(m->real, sizeof m->real, "%s", v + off);
  }
  snprintf(m->node, sizeof m->node, "%s", node);
  snprintf(m->user, sizeof m->user, "%s", user[0] ? user : "~u");
  snprintf(m->host, sizeof m->host, "%s", host[0] ? host : "remote");
}

fed_member *fed_members(chat_channel *c, size_t *n) {
  fed_bridge *b = bridge_of(c->srv);
  fed_chan *fc = b != NULL ? hark_weakmap_peek(b->chans, c) : NULL;
  *n = fc != NULL ? fc->n : 0;
  return fc != NULL ? fc->m : NULL;
}

fed_member *fed_member_find(chat_channel *c, const char *nick) {
  fed_bridge *b = bridge_of(c->srv);
  return b != NULL ? fc_find(hark_weakmap_peek(b->chans, c), nick) : NULL;
}

void fed_channel_load(chat_channel *c, const fed_join_state *st) {
  fed_bridge *b = bridge_of(c->srv);
  if (b == NULL || st == NULL)
    return;
  if (st->key != NULL && st->key[0] != '\0')
    channel_set_key(c, st->key);
  if (st->name != NULL && irc_casecmp(st->name, c->name) == 0)
    snprintf(c->name, sizeof c->name, "%s", st->name); /* the network's */
  if (st->topic != NULL && st->topic[0] != '\0') {
    snprintf(c->topic, sizeof c->topic, "%s", st->topic);
    snprintf(c->topic_by, sizeof c->topic_by, "%s",
             st->topic_by ? st->topic_by : "");
    c->topic_at = (time_t)st->topic_at;
  }
  fed_chan *fc = fc_get(b, c, true);
  for (size_t i = 0; fc != NULL && i < st->nmembers; i++) {
    fed_member *m = fc_put(fc, st->members[i].nick);
    if (m != NULL)
      *m = st->members[i];
  }
}

/* ---- publishing ---------------------------------------------------------- */

static void publish(fed_bridge *b, chat_channel *c, const char *kind,
                    unsigned long seq, const char *nick, const char *a1,
                    const char *a2, const char *a3, const char *a4,
                    const chat_buf *line) {
  if (!cmd_ok(b)) {
    b->dropped++;
    return;
  }
  char chan[CHATD_CHAN_MAX + 16];
  key_of(chan, sizeof chan, "c", c->name);
  char payload[IRC_LINE_MAX + 512];
  size_t ll = line->len >= 2 ? line->len - 2 : line->len; /* no CR LF */
  int n = snprintf(payload, sizeof payload, "%s\t%lu\t%s\t%s\t%s\t%s\t%s\t%s\t",
                   b->node, seq, kind, nick, a1, a2, a3, a4);
  if (n < 0 || (size_t)n + ll >= sizeof payload)
    return;
  memcpy(payload + n, line->data, ll);
  redisAsyncCommand(b->cmd, NULL, NULL, "PUBLISH %s %b", chan, payload,
                    (size_t)n + ll);
  b->published++;
}

/* The nick in a line's prefix ":nick!user@host ..." */
static void prefix_nick(const chat_buf *line, char *out, size_t cap) {
  const char *p = line->data[0] == ':' ? line->data + 1 : line->data;
  size_t n = strcspn(p, "! ");
  snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
}

static void sub_ensure(fed_bridge *b, const char *name);
static void apply_direct(fed_bridge *b, const char *data, size_t len);

/* ---- receivers: local events out to Redis ------------------------------- */

static int out_message(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  if (ev->origin == NULL || sender == NULL)
    return 0; /* came from Redis */
  publish(b, sender, "msg", 0, ev->origin->nick, "", "", "", "", ev->line);
  return 0;
}

static int out_join(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  chat_channel *c = sender;
  if (ev->origin == NULL || c == NULL)
    return 0;
  fc_get(b, c, true);
  sub_ensure(b, c->name);
  chat_session *s = ev->origin;
  chat_member *me = channel_member(c, s);
  bool op = me != NULL && me->op;
  char mem[256], meta[256], ops[256], val[256];
  chan_keys(c->name, mem, meta, ops, sizeof mem);
  member_value(s, val, sizeof val, b->node);
  fire(b, "HSET %s %s %s", mem, s->nick, val);
  fire(b, "SADD hark:chans %s", mem + 9);
  if (op)
    fire(b, "SADD %s %s", ops, s->nick);
  char real[64];
  snprintf(real, sizeof real, "%s", s->realname);
  for (char *p = real; *p; p++)
    if (*p == '\t')
      *p = ' ';
  publish(b, c, "join", 0, s->nick, op ? "1" : "0",
          s->user[0] ? s->user : "~u", s->host, real, ev->line);
  return 0;
}

static void out_leave(fed_bridge *b, chat_channel *c, chat_event *ev,
                      const char *kind) {
  char mem[256], meta[256], ops[256];
  chan_keys(c->name, mem, meta, ops, sizeof mem);
  if (cmd_ok(b))
    redisAsyncCommand(b->cmd, NULL, NULL, "EVAL %s 3 %s %s %s %s", PART, mem,
                      meta, ops, ev->origin->nick);
  publish(b, c, kind, ev->seq, ev->origin->nick, "", "", "", "", ev->line);
}

static int out_part(void *self, void *sender, void *args) {
  chat_event *ev = args;
  if (ev->origin != NULL && sender != NULL)
    out_leave(self, sender, ev, "part");
  return 0;
}

static int out_quit(void *self, void *sender, void *args) {
  chat_event *ev = args;
  if (ev->origin != NULL && sender != NULL)
    out_leave(self, sender, ev, "quit");
  return 0;
}

static int out_nick(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  chat_channel *c = sender;
  if (ev->origin == NULL || c == NULL)
    return 0;
  char old[CHATD_NICK_MAX + 1], mem[256], meta[256], ops[256], val[256];
  prefix_nick(ev->line, old, sizeof old);
  chan_keys(c->name, mem, meta, ops, sizeof mem);
  member_value(ev->origin, val, sizeof val, b->node);
  if (cmd_ok(b))
    redisAsyncCommand(b->cmd, NULL, NULL, "EVAL %s 2 %s %s %s %s %s", RENAME,
                      mem, ops, old, ev->origin->nick, val);
  publish(b, c, "nick", ev->seq, old, ev->origin->nick, "", "", "", ev->line);
  return 0;
}

static int out_topic(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  chat_channel *c = sender;
  if (ev->origin == NULL || c == NULL)
    return 0;
  char mem[256], meta[256], ops[256], at[32];
  chan_keys(c->name, mem, meta, ops, sizeof mem);
  snprintf(at, sizeof at, "%lld", (long long)c->topic_at);
  fire(b, "HSET %s topic %s topic_by %s topic_at %s", meta, c->topic,
       c->topic_by, at);
  publish(b, c, "topic", 0, ev->origin->nick, at, "", "", "", ev->line);
  return 0;
}

/* Parses ":mask MODE #chan +k key" into modes and arg. */
static bool parse_mode(const chat_buf *line, char *modes, size_t mcap,
                       char *arg, size_t acap) {
  char tmp[IRC_LINE_MAX + 1];
  size_t len = line->len >= 2 ? line->len - 2 : line->len;
  memcpy(tmp, line->data, len);
  tmp[len] = '\0';
  irc_msg m;
  if (irc_parse(tmp, len, &m) != 0 || m.nparams < 2)
    return false;
  snprintf(modes, mcap, "%s", m.params[1]);
  snprintf(arg, acap, "%s", m.nparams > 2 ? m.params[2] : "");
  return true;
}

static int out_mode(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  chat_channel *c = sender;
  if (ev->origin == NULL || c == NULL)
    return 0;
  char mem[256], meta[256], ops[256], modes[16], arg[IRC_LINE_MAX + 1];
  chan_keys(c->name, mem, meta, ops, sizeof mem);
  if (parse_mode(ev->line, modes, sizeof modes, arg, sizeof arg)) {
    if (strcmp(modes, "+k") == 0)
      fire(b, "HSET %s key %s", meta, arg);
    else if (strcmp(modes, "-k") == 0)
      fire(b, "HDEL %s key", meta);
    else if (strcmp(modes, "+o") == 0)
      fire(b, "SADD %s %s", ops, arg);
    else if (strcmp(modes, "-o") == 0)
      fire(b, "SREM %s %s", ops, arg);
  }
  publish(b, c, "mode", 0, ev->origin->nick, "", "", "", "", ev->line);
  return 0;
}

/* ---- Redis in: remote events into local sends ------------------------ */

static unsigned long local_seq(fed_bridge *b, const char *node,
                               unsigned long rseq) {
  for (unsigned i = 0; i < b->nlast; i++)
    if (strcmp(b->last[i].node, node) == 0) {
      if (b->last[i].rseq != rseq) {
        b->last[i].rseq = rseq;
        b->last[i].lseq = ++b->srv->seq;
      }
      return b->last[i].lseq;
    }
  unsigned i = b->nlast < 32 ? b->nlast++ : (b->lastnext++ % 32);
  snprintf(b->last[i].node, sizeof b->last[i].node, "%s", node);
  b->last[i].rseq = rseq;
  b->last[i].lseq = ++b->srv->seq;
  return b->last[i].lseq;
}

/* Splits a published payload in place into n tab-separated fields, the
 * last taking the rest of the line (which may hold tabs). False if there
 * are fewer fields. */
static bool split_tabs(char *buf, char **f, int n) {
  char *p = buf;
  for (int i = 0; i < n - 1; i++) {
    f[i] = p;
    p = strchr(p, '\t');
    if (p == NULL)
      return false;
    *p++ = '\0';
  }
  f[n - 1] = p;
  return true;
}

static void apply_remote(fed_bridge *b, const char *fold, const char *data,
                         size_t len) {
  char buf[IRC_LINE_MAX + 600];
  if (len >= sizeof buf)
    return;
  memcpy(buf, data, len);
  buf[len] = '\0';
  char *f[9];
  if (!split_tabs(buf, f, 9))
    return;
  const char *node = f[0], *kind = f[2], *nick = f[3];
  if (strcmp(node, b->node) == 0)
    return; /* our own echo */
  b->received++;
  chat_server *srv = b->srv;
  chat_channel *c = names_get(&srv->chans, fold);
  if (c == NULL)
    return;
  fed_chan *fc = fc_get(b, c, true);
  unsigned long rseq = strtoul(f[1], NULL, 10);
  chat_buf *line = chat_buf_printf("%s", f[8]);
  if (line == NULL || fc == NULL) {
    chat_buf_unref(line);
    hark_unref(c);
    return;
  }
  if (strcmp(kind, "msg") == 0) {
    channel_send(c, srv->sig_message, line, NULL, 0);
  } else if (strcmp(kind, "join") == 0) {
    fed_member *m = fc_find(fc, nick);
    bool known = m != NULL && strcmp(m->node, node) == 0;
    if (m == NULL)
      m = fc_put(fc, nick);
    if (m != NULL) {
      snprintf(m->node, sizeof m->node, "%s", node);
      m->op = strcmp(f[4], "1") == 0;
      snprintf(m->user, sizeof m->user, "%s", f[5]);
      snprintf(m->host, sizeof m->host, "%s", f[6]);
      snprintf(m->real, sizeof m->real, "%s", f[7]);
    }
    if (!known) /* a re-announce after a Redis outage is silent */
      channel_send(c, srv->sig_join, line, NULL, 0);
  } else if (strcmp(kind, "part") == 0) {
    fc_del(fc, nick);
    channel_send(c, srv->sig_part, line, NULL, 0);
  } else if (strcmp(kind, "quit") == 0) {
    if (fc_del(fc, nick))
      channel_send(c, srv->sig_quit, line, NULL, local_seq(b, node, rseq));
  } else if (strcmp(kind, "nick") == 0) {
    fed_member *m = fc_find(fc, nick);
    if (m != NULL)
      snprintf(m->nick, sizeof m->nick, "%s", f[4]);
    channel_send(c, srv->sig_nick, line, NULL, local_seq(b, node, rseq));
  } else if (strcmp(kind, "topic") == 0) {
    char modes[16], arg[IRC_LINE_MAX + 1];
    /* ":mask TOPIC #chan :text": the same parse as MODE's */
    if (parse_mode(line, modes, sizeof modes, arg, sizeof arg) || 1) {
      char tmp[IRC_LINE_MAX + 1];
      size_t l = line->len - 2;
      memcpy(tmp, line->data, l);
      tmp[l] = '\0';
      irc_msg m;
      if (irc_parse(tmp, l, &m) == 0 && m.nparams >= 2) {
        snprintf(c->topic, sizeof c->topic, "%s", m.params[1]);
        snprintf(c->topic_by, sizeof c->topic_by, "%s", nick);
        c->topic_at = (time_t)strtoll(f[4], NULL, 10);
      }
    }
    channel_send(c, srv->sig_topic, line, NULL, 0);
  } else if (strcmp(kind, "mode") == 0) {
    char modes[16], arg[IRC_LINE_MAX + 1];
    if (parse_mode(line, modes, sizeof modes, arg, sizeof arg)) {
      bool add = modes[0] == '+';
      if (modes[1] == 'k') {
        channel_set_key(c, add ? arg : NULL);
      } else if (modes[1] == 'o') {
        chat_session *t = names_get(&srv->nicks, arg);
        chat_member *tm = t != NULL ? channel_member(c, t) : NULL;
        fed_member *rm = fc_find(fc, arg);
        if (tm != NULL)
          tm->op = add;
        else if (rm != NULL)
          rm->op = add;
        hark_unref(t);
      }
    }
    channel_send(c, srv->sig_mode, line, NULL, 0);
  }
  chat_buf_unref(line);
  hark_unref(c);
}

/* ---- subscriptions ------------------------------------------------------ */

static void join_send(join_req *r);
static void join_fail_local(join_req *r);

static fed_sub *sub_find(fed_bridge *b, const char *fold) {
  for (fed_sub *s = b->subs; s != NULL; s = s->next)
    if (strcmp(s->fold, fold) == 0)
      return s;
  return NULL;
}

static fed_sub *sub_get(fed_bridge *b, const char *name) {
  char fold[CHATD_CHAN_MAX + 1];
  irc_fold(fold, name, sizeof fold);
  fed_sub *s = sub_find(b, fold);
  if (s == NULL) {
    s = calloc(1, sizeof *s);
    if (s == NULL)
      return NULL;
    memcpy(s->fold, fold, sizeof fold);
    s->next = b->subs;
    b->subs = s;
  }
  return s;
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *priv);

static void sub_send(fed_bridge *b, fed_sub *s, bool on) {
  if (!b->up || b->sub == NULL)
    return;
  char chan[CHATD_CHAN_MAX + 16];
  snprintf(chan, sizeof chan, "hark:c:%s", s->fold);
  if (on) {
    redisAsyncCommand(b->sub, on_sub_reply, b, "SUBSCRIBE %s", chan);
    s->state = SUB_SENT;
  } else {
    redisAsyncCommand(b->sub, on_sub_reply, b, "UNSUBSCRIBE %s", chan);
    s->state = UNSUB_SENT;
  }
}

static bool sub_wanted(fed_bridge *b, fed_sub *s) {
  if (s->pending > 0 || s->waiting != NULL)
    return true;
  chat_channel *c = names_get(&b->srv->chans, s->fold);
  hark_unref(c);
  return c != NULL;
}

static void sub_ensure(fed_bridge *b, const char *name) {
  fed_sub *s = sub_get(b, name);
  if (s != NULL && s->state == SUB_NONE)
    sub_send(b, s, true);
}

/* Unsubscribes from channels without local members (their channel object
 * has died), and forgets idle records. */
static void subs_reconcile(fed_bridge *b) {
  fed_sub **pp = &b->subs;
  while (*pp != NULL) {
    fed_sub *s = *pp;
    bool want = sub_wanted(b, s);
    if (!want && s->state == SUB_ON)
      sub_send(b, s, false);
    else if (want && s->state == SUB_NONE)
      sub_send(b, s, true);
    if (!want && s->state == SUB_NONE) {
      *pp = s->next;
      free(s);
      continue;
    }
    pp = &s->next;
  }
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *priv) {
  fed_bridge *b = priv;
  redisReply *reply = r;
  if (reply == NULL || b->sub != ac || reply->type != REDIS_REPLY_ARRAY ||
      reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_STRING)
    return;
  const char *what = reply->element[0]->str;
  const char *chan = reply->element[1]->str;
  if (strncmp(chan, "hark:n:", 7) == 0) {
    redisReply *m = reply->element[2];
    if (strcmp(what, "message") == 0 && m->type == REDIS_REPLY_STRING)
      apply_direct(b, m->str, m->len);
    return;
  }
  if (strncmp(chan, "hark:c:", 7) != 0)
    return;
  const char *fold = chan + 7;
  if (strcmp(what, "message") == 0) {
    redisReply *m = reply->element[2];
    if (m->type == REDIS_REPLY_STRING)
      apply_remote(b, fold, m->str, m->len);
    return;
  }
  fed_sub *s = sub_find(b, fold);
  if (s == NULL)
    return;
  if (strcmp(what, "subscribe") == 0) {
    s->state = SUB_ON;
    join_req *w = s->waiting;
    s->waiting = NULL;
    while (w != NULL) {
      join_req *next = w->next;
      w->next = NULL;
      join_send(w);
      w = next;
    }
  } else if (strcmp(what, "unsubscribe") == 0) {
    s->state = SUB_NONE;
    if (sub_wanted(b, s))
      sub_send(b, s, true);
  }
}

/* ---- JOIN through Redis ------------------------------------------------- */

static void free_state(fed_join_state *st) {
  if (st == NULL)
    return;
  free(st->key);
  free(st->name);
  free(st->topic);
  free(st->topic_by);
  free(st->members);
}

static const char *hget(redisReply *h, const char *field) {
  if (h == NULL || h->type != REDIS_REPLY_ARRAY)
    return NULL;
  for (size_t i = 0; i + 1 < h->elements; i += 2)
    if (h->element[i]->type == REDIS_REPLY_STRING &&
        strcmp(h->element[i]->str, field) == 0 &&
        h->element[i + 1]->type == REDIS_REPLY_STRING)
      return h->element[i + 1]->str;
  return NULL;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static bool parse_join(fed_bridge *b, redisReply *r, fed_join_state *st) {
  memset(st, 0, sizeof *st);
  if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_INTEGER)
    return false;
  st->ok = r->element[0]->integer == 1;
  if (!st->ok)
    return true;
  if (r->elements < 5)
    return false;
  st->op = r->element[1]->integer == 1;
  redisReply *meta = r->element[2], *mem = r->element[3], *ops = r->element[4];
  st->key = dup_or_null(hget(meta, "key"));
  st->name = dup_or_null(hget(meta, "name"));
  st->topic = dup_or_null(hget(meta, "topic"));
  st->topic_by = dup_or_null(hget(meta, "topic_by"));
  const char *at = hget(meta, "topic_at");
  st->topic_at = at ? strtoll(at, NULL, 10) : 0;
  if (mem->type == REDIS_REPLY_ARRAY && mem->elements >= 2) {
    st->members = calloc(mem->elements / 2, sizeof *st->members);
    for (size_t i = 0; st->members && i + 1 < mem->elements; i += 2) {
      if (mem->element[i]->type != REDIS_REPLY_STRING ||
          mem->element[i + 1]->type != REDIS_REPLY_STRING)
        continue;
      fed_member *m = &st->members[st->nmembers];
      memset(m, 0, sizeof *m);
      snprintf(m->nick, sizeof m->nick, "%s", mem->element[i]->str);
      parse_value(m, mem->element[i + 1]->str);
      if (strcmp(m->node, b->node) == 0)
        continue; /* ours: the local member list has them */
      for (size_t j = 0; ops->type == REDIS_REPLY_ARRAY && j < ops->elements;
           j++)
        if (ops->element[j]->type == REDIS_REPLY_STRING &&
            strcmp(ops->element[j]->str, m->nick) == 0)
          m->op = true;
      st->nmembers++;
    }
  }
  return true;
}

static void join_done(join_req *r, redisReply *reply) {
  fed_bridge *b = r->b;
  fed_join_state st;
  bool have = parse_join(b, reply, &st);
  chat_session *s = hark_weak_get(&r->who);
  bool joined = false;
  if (s != NULL && !s->closing && !s->closed) {
    command_join_finish(s, r->name, r->has_key ? r->key : NULL,
                        have ? &st : NULL);
    chat_channel *c = names_get(&b->srv->chans, r->name);
    joined = c != NULL && session_in_channel(s, c);
    hark_unref(c);
  }
  /* Redis added the member under the nick it had when the JOIN went out.
   * Gone meanwhile, or not joined after all: undo. Renamed meanwhile (the
   * JOIN went out before the new nick's claim came back): the member is
   * there under its new nick (out_join), the old entry goes, unless
   * another member of ours has taken that nick since. */
  if (have && st.ok && cmd_ok(b) &&
      (!joined || strcmp(s->nick, r->nick) != 0)) {
    chat_channel *c = names_get(&b->srv->chans, r->name);
    chat_session *o = names_get(&b->srv->nicks, r->nick);
    bool taken = joined && o != NULL && o != s && c != NULL &&
                 session_in_channel(o, c);
    hark_unref(o);
    hark_unref(c);
    if (!taken) {
      char mem[256], meta[256], ops[256];
      chan_keys(r->name, mem, meta, ops, sizeof mem);
      redisAsyncCommand(b->cmd, NULL, NULL, "EVAL %s 3 %s %s %s %s", PART,
                        mem, meta, ops, r->nick);
    }
  }
  if (s != NULL) /* the lines after the JOIN go on */
    session_unhold(s, r->hold);
  hark_unref(s);
  if (have)
    free_state(&st);
  hark_weak_clear(&r->who);
  free(r);
}

static void on_join_reply(redisAsyncContext *ac, void *reply, void *priv) {
  join_req *r = priv;
  if (r->sub != NULL && r->sub->pending > 0)
    r->sub->pending--;
  join_done(r, reply);
}

static void join_send(join_req *r) {
  fed_bridge *b = r->b;
  chat_session *s = hark_weak_get(&r->who);
  if (s == NULL || !cmd_ok(b)) {
    hark_unref(s);
    join_fail_local(r);
    return;
  }
  char mem[256], meta[256], ops[256], val[256];
  chan_keys(r->name, mem, meta, ops, sizeof mem);
  member_value(s, val, sizeof val, b->node);
  snprintf(r->nick, sizeof r->nick, "%s", s->nick);
  hark_unref(s);
  if (redisAsyncCommand(b->cmd, on_join_reply, r,
                        "EVAL %s 3 %s %s %s %s %s %s %s", JOIN, mem, meta,
                        ops, r->nick, val, r->key, r->name) != REDIS_OK) {
    join_fail_local(r); /* a connection going down: no reply would come */
    return;
  }
  r->sub->pending++;
}

/* No Redis after all: the join goes on locally. */
static void join_fail_local(join_req *r) {
  r->sub = NULL;
  join_done(r, NULL);
}

bool fed_join(chat_session *s, const char *name, const char *key) {
  fed_bridge *b = bridge_of(s->srv);
  if (b == NULL || !b->up || b->sub == NULL)
    return false;
  fed_sub *sub = sub_get(b, name);
  join_req *r = calloc(1, sizeof *r);
  if (sub == NULL || r == NULL) {
    free(r);
    return false;
  }
  r->b = b;
  r->sub = sub;
  hark_weak_set(&r->who, s);
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->key, sizeof r->key, "%s", key ? key : "");
  r->has_key = key != NULL;
  r->hold = session_hold(s); /* join_done releases it */
  if (sub->state == SUB_ON) {
    join_send(r);
  } else {
    r->next = sub->waiting;
    sub->waiting = r;
    if (sub->state == SUB_NONE)
      sub_send(b, sub, true);
  }
  return true;
}

/* ---- nicks --------------------------------------------------------------- */

static void nick_collision(fed_bridge *b, chat_session *s) {
  char guest[CHATD_NICK_MAX + 1];
  session_numeric(s, 433, "%s :Nickname is already in use (on %s)", s->nick,
                  "another server");
  for (int tries = 0; tries < 20; tries++) {
    snprintf(guest, sizeof guest, "Guest%u", (unsigned)(rand() % 100000));
    chat_session *o = names_get(&b->srv->nicks, guest);
    hark_unref(o);
    if (o == NULL)
      break;
  }
  log_warn("nick %s lost to another node: now %s", s->nick, guest);
  command_nick_apply(s, guest);
}

static void on_claim_reply(redisAsyncContext *ac, void *r, void *priv) {
  nick_req *q = priv;
  redisReply *reply = r;
  fed_bridge *b = q->b;
  chat_session *s = hark_weak_get(&q->who);
  bool alive = s != NULL && !s->closing && !s->closed;
  bool won = reply == NULL || reply->type != REDIS_REPLY_INTEGER ||
             reply->integer == 1; /* no Redis: locally, re-claimed later */
  if (q->renew) {
    if (alive && !won && irc_casecmp(s->nick, q->nick) == 0)
      nick_collision(b, s);
  } else if (alive) {
    if (won)
      command_nick_apply(s, q->nick);
    else
      session_numeric(s, 433, "%s :Nickname is already in use", q->nick);
  } else if (won && reply != NULL) {
    /* gone while the claim was out: the nick is not left claimed */
    fed_nick_release(b->srv, q->nick);
  }
  if (s != NULL && !q->renew) /* the lines after the NICK go on */
    session_unhold(s, q->hold);
  hark_unref(s);
  hark_weak_clear(&q->who);
  free(q);
}

/* false: not sent (no memory, or the connection is going down). */
static bool claim(fed_bridge *b, chat_session *s, const char *nick,
                  bool renew) {
  nick_req *q = calloc(1, sizeof *q);
  if (q == NULL)
    return false;
  q->b = b;
  q->renew = renew;
  hark_weak_set(&q->who, s);
  snprintf(q->nick, sizeof q->nick, "%s", nick);
  char key[256], lease[16];
  key_of(key, sizeof key, "nick", nick);
  snprintf(lease, sizeof lease, "%u", b->lease);
  if (redisAsyncCommand(b->cmd, on_claim_reply, q, "EVAL %s 1 %s %s %s",
                        CLAIM, key, b->node, lease) != REDIS_OK) {
    hark_weak_clear(&q->who);
    free(q);
    return false;
  }
  if (!renew)
    q->hold = session_hold(s); /* on_claim_reply releases it */
  return true;
}

bool fed_nick_claim(chat_session *s, const char *nick) {
  fed_bridge *b = bridge_of(s->srv);
  if (b == NULL || !cmd_ok(b))
    return false;
  if (s->nick[0] != '\0' && irc_casecmp(s->nick, nick) == 0)
    return false; /* a change of case: ours already */
  return claim(b, s, nick, false);
}

void fed_nick_release(chat_server *srv, const char *nick) {
  fed_bridge *b = bridge_of(srv);
  if (b == NULL || !cmd_ok(b) || nick[0] == '\0')
    return;
  chat_session *o = names_get(&srv->nicks, nick);
  hark_unref(o);
  if (o != NULL)
    return; /* another session of ours has it */
  char key[256], info[256];
  key_of(key, sizeof key, "nick", nick);
  key_of(info, sizeof info, "info", nick);
  redisAsyncCommand(b->cmd, NULL, NULL, "EVAL %s 2 %s %s %s", RELEASE, key,
                    info, b->node);
}

/* ---- users on other nodes: private messages, WHOIS, ISON ---------------- */

/* KEYS claim; ARGV our node, payload: publishes on the nick's node. In
 * the order of the node's other publishes (one connection, one script). */
static const char PM[] =
    "local n=redis.call('get',KEYS[1]) "
    "if n==false or n==ARGV[1] then return 0 end "
    "redis.call('publish','hark:n:'..n,ARGV[2]) return 1";
/* KEYS claim info: {node, info} */
static const char WHOIS[] =
    "return {redis.call('get',KEYS[1]) or '',redis.call('get',KEYS[2]) or ''}";
/* KEYS claim1..claimN info1..infoN; ARGV nick1..nickN: the nicks claimed */
static const char ISON[] =
    "local n=#ARGV local r={} for i=1,n do "
    "if redis.call('exists',KEYS[i])==1 then local nk=ARGV[i] "
    "local v=redis.call('get',KEYS[n+i]) "
    "if v then nk=string.match(v,'^(%S+)') or nk end r[#r+1]=nk end end "
    "return r";

/* A request that answers a session later. */
typedef struct ask_req {
  fed_bridge *b;
  hark_weak who;
  bool notice, who_list;
  char nick[CHATD_NICK_MAX + 1];
  char name[CHATD_CHAN_MAX + 1];
  char text[IRC_LINE_MAX + 1]; /* ISON's local list, LIST's filter */
  bool has_filter;
  /* A query (WHOIS, ISON, LIST, NAMES, WHO) holds the session's input
   * until its answer is out; a private message does not: its only reply
   * is a rare 401, and it goes in order with the sender's publishes. */
  bool held;
  unsigned hold;
} ask_req;

static ask_req *ask_new(fed_bridge *b, chat_session *s) {
  ask_req *q = calloc(1, sizeof *q);
  if (q == NULL)
    return NULL;
  q->b = b;
  hark_weak_set(&q->who, s);
  return q;
}

/* Sends a query whose answer the session's next lines wait for: q is
 * freed and false returned when it could not go out. */
static bool ask_send(ask_req *q, chat_session *s, redisCallbackFn *fn,
                     const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = redisvAsyncCommand(q->b->cmd, fn, q, fmt, ap);
  va_end(ap);
  if (r != REDIS_OK) {
    hark_weak_clear(&q->who);
    free(q);
    return false;
  }
  q->held = true;
  q->hold = session_hold(s);
  return true;
}

/* The asking session, if it is still there (new reference), and q freed;
 * its input goes on after what the caller answers now. */
static chat_session *ask_end(ask_req *q) {
  chat_session *s = hark_weak_get(&q->who);
  hark_weak_clear(&q->who);
  if (s != NULL && q->held)
    session_unhold(s, q->hold);
  if (s != NULL && (s->closing || s->closed || q->b->stopping)) {
    hark_unref(s);
    s = NULL;
  }
  return s;
}

static void on_pm_reply(redisAsyncContext *ac, void *r, void *priv) {
  ask_req *q = priv;
  redisReply *reply = r;
  chat_session *s = ask_end(q);
  /* no reply (Redis lost meanwhile): unknown, and no error claimed */
  if (s != NULL && !q->notice && reply != NULL &&
      reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)
    session_numeric(s, 401, "%s :No such nick/channel", q->nick);
  hark_unref(s);
  free(q);
}

bool fed_privmsg(chat_session *s, const char *target, const char *cmd,
                 const char *text, bool notice) {
  fed_bridge *b = bridge_of(s->srv);
  if (b == NULL || !cmd_ok(b))
    return false;
  ask_req *q = ask_new(b, s);
  if (q == NULL)
    return false;
  q->notice = notice;
  snprintf(q->nick, sizeof q->nick, "%s", target);
  char key[256], mask[IRC_LINE_MAX], payload[IRC_LINE_MAX * 2 + 256];
  key_of(key, sizeof key, "nick", target);
  session_mask(s, mask, sizeof mask);
  for (char *p = mask; *p; p++)
    if (*p == '\t')
      *p = '_';
  int n = snprintf(payload, sizeof payload, "%s\tpm\t%s\t%s\t%s\t%s",
                   b->node, target, cmd, mask, text);
  if (n < 0 || (size_t)n >= sizeof payload)
    n = (int)sizeof payload - 1;
  redisAsyncCommand(b->cmd, on_pm_reply, q, "EVAL %s 1 %s %s %b", PM, key,
                    b->node, payload, (size_t)n);
  b->published++;
  return true;
}

/* What arrives on hark:n:NODE: a private message to one of our users. */
static void apply_direct(fed_bridge *b, const char *data, size_t len) {
  char buf[IRC_LINE_MAX * 2 + 256];
  if (len >= sizeof buf)
    return;
  memcpy(buf, data, len);
  buf[len] = '\0';
  char *f[6];
  if (!split_tabs(buf, f, 6))
    return;
  if (strcmp(f[1], "pm") != 0)
    return;
  b->received++;
  chat_session *to = names_get(&b->srv->nicks, f[2]);
  if (to != NULL && to->registered && !to->closing && !to->closed)
    session_sendf(to, ":%s %s %s :%s", f[4], f[3], to->nick, f[5]);
  hark_unref(to);
}

static void on_whois_reply(redisAsyncContext *ac, void *r, void *priv) {
  ask_req *q = priv;
  redisReply *reply = r;
  chat_session *s = ask_end(q);
  if (s != NULL) {
    const char *node = NULL, *info = "";
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
        reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[0]->str[0] != '\0') {
      node = reply->element[0]->str;
      if (reply->element[1]->type == REDIS_REPLY_STRING)
        info = reply->element[1]->str;
    }
    if (node == NULL) {
      session_numeric(s, 401, "%s :No such nick/channel", q->nick);
    } else {
      char nick[65] = "", user[32] = "", host[64] = "";
      int off = 0;
      const char *real = "";
      if (sscanf(info, "%64s %31s %63s %n", nick, user, host, &off) >= 3)
        real = info + off;
      session_numeric(s, 311, "%s %s %s * :%s", nick[0] ? nick : q->nick,
                      user[0] ? user : "~u", host[0] ? host : "remote", real);
      session_numeric(s, 312, "%s %s :hark-chatd node %s",
                      nick[0] ? nick : q->nick, node, node);
    }
    session_numeric(s, 318, "%s :End of /WHOIS list.", q->nick);
  }
  hark_unref(s);
  free(q);
}

bool fed_whois(chat_session *s, const char *nick) {
  fed_bridge *b = bridge_of(s->srv);
  if (b == NULL || !cmd_ok(b))
    return false;
  ask_req *q = ask_new(b, s);
  if (q == NULL)
    return false;
  snprintf(q->nick, sizeof q->nick, "%s", nick);
  char key[256], info[256];
  key_of(key, sizeof key, "nick", nick);
  key_of(info, sizeof info, "info", nick);
  return ask_send(q, s, on_whois_reply, "EVAL %s 2 %s %s", WHOIS, key, info);
}

static void on_ison_reply(redisAsyncContext *ac, void *r, void *priv) {
  ask_req *q = priv;
  redisReply *reply = r;
  chat_session *s = ask_end(q);
  if (s != NULL) {
    size_t len = strlen(q->text);
    for (size_t i = 0; reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
                       i < reply->elements;
         i++) {
      redisReply *e = reply->element[i];
      if (e->type != REDIS_REPLY_STRING || len + e->len + 2 >= 400)
        continue;
      len += (size_t)snprintf(q->text + len, sizeof q->text - len, "%s%s",
                              len ? " " : "", e->str);
    }
    session_numeric(s, 303, ":%s", q->text);
  }
  hark_unref(s);
  free(q);
}

bool fed_ison(chat_session *s, const char *local, char **missing, size_t n) {
  fed_bridge *b = bridge_of(s->srv);
  if (b == NULL || !cmd_ok(b) || n == 0 || n > 64)
    return false;
  ask_req *q = ask_new(b, s);
  size_t argc = 3 + 3 * n;
  const char **argv = calloc(argc, sizeof *argv);
  char(*keys)[256] = calloc(2 * n, sizeof *keys);
  char num[16];
  if (q == NULL || argv == NULL || keys == NULL) {
    if (q != NULL)
      hark_weak_clear(&q->who);
    free(q);
    free(argv);
    free(keys);
    return false;
  }
  snprintf(q->text, sizeof q->text, "%s", local);
  snprintf(num, sizeof num, "%zu", 2 * n);
  argv[0] = "EVAL";
  argv[1] = ISON;
  argv[2] = num;
  for (size_t i = 0; i < n; i++) {
    key_of(keys[i], sizeof keys[i], "nick", missing[i]);
    key_of(keys[n + i], sizeof keys[n + i], "info", missing[i]);
    argv[3 + i] = keys[i];
    argv[3 + n + i] = keys[n + i];
    argv[3 + 2 * n + i] = missing[i];
  }
  int r = redisAsyncCommandArgv(b->cmd, on_ison_reply, q, (int)argc, argv,
                                NULL);
  free(argv);
  free(keys);
  if (r != REDIS_OK) {
    hark_weak_clear(&q->who);
    free(q);
    return false;
  }
  q->held = true;
  q->hold = session_hold(s);
  return true;
}

void fed_user_info(chat_session *s) {
  fed_bridge *b = bridge_of(s->srv);
  if (b == NULL || !cmd_ok(b) || !s->registered || s->nick[0] == '\0')
    return;
  char key[256], val[256], real[64];
  key_of(key, sizeof key, "info", s->nick);
  snprintf(real, sizeof real, "%s", s->realname);
  snprintf(val, sizeof val, "%s %s %s %s", s->nick,
           s->user[0] ? s->user : "~u", s->host, real);
  fire(b, "SET %s %s PX %u", key, val, b->lease);
}

/* ---- channels without members here: LIST, NAMES, WHO --------------------- */

/* The channels with live members: {fold, name, users, topic, keyed} each;
 * a channel whose member hash is empty leaves the set. */
static const char LIST[] =
    "local out={} for _,f in ipairs(redis.call('smembers','hark:chans')) do "
    "local m=redis.call('hgetall','hark:mem:'..f) local live=0 "
    "for i=1,#m,2 do local n=string.match(m[i+1],'^(%S+)') "
    "if n and redis.call('exists','hark:hb:'..n)==1 then live=live+1 end end "
    "if #m==0 then redis.call('srem','hark:chans',f) "
    "elseif live>0 then "
    "local x=redis.call('hmget','hark:meta:'..f,'name','topic','key') "
    "local k=0 if x[3] then k=1 end "
    "out[#out+1]={f,x[1] or f,live,x[2] or '',k} end end return out";
/* KEYS mem meta ops: {keyed, name, {nick, value}..., ops} of live nodes */
static const char CHAN[] =
    "local m=redis.call('hgetall',KEYS[1]) local live={} "
    "for i=1,#m,2 do local n=string.match(m[i+1],'^(%S+)') "
    "if n and redis.call('exists','hark:hb:'..n)==1 then "
    "live[#live+1]=m[i] live[#live+1]=m[i+1] end end "
    "local x=redis.call('hmget',KEYS[2],'name','key') local k=0 "
    "if x[2] then k=1 end "
    "return {k,x[1] or '',live,redis.call('smembers',KEYS[3])}";

static void on_list_reply(redisAsyncContext *ac, void *r, void *priv) {
  ask_req *q = priv;
  redisReply *reply = r;
  chat_session *s = ask_end(q);
  if (s != NULL) {
    size_t n = 0;
    fed_chan_info *ci = NULL;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
        reply->elements > 0)
      ci = calloc(reply->elements, sizeof *ci);
    for (size_t i = 0; ci != NULL && i < reply->elements; i++) {
      redisReply *e = reply->element[i];
      if (e->type != REDIS_REPLY_ARRAY || e->elements < 5 ||
          e->element[0]->type != REDIS_REPLY_STRING ||
          e->element[1]->type != REDIS_REPLY_STRING ||
          e->element[2]->type != REDIS_REPLY_INTEGER)
        continue;
      chat_channel *c = names_get(&s->srv->chans, e->element[0]->str);
      hark_unref(c);
      if (c != NULL)
        continue; /* members here: listed from the local channel */
      snprintf(ci[n].name, sizeof ci[n].name, "%s", e->element[1]->str);
      ci[n].users = (size_t)e->element[2]->integer;
      if (e->element[3]->type == REDIS_REPLY_STRING)
        snprintf(ci[n].topic, sizeof ci[n].topic, "%s", e->element[3]->str);
      ci[n].keyed = e->element[4]->type == REDIS_REPLY_INTEGER &&
                    e->element[4]->integer == 1;
      n++;
    }
    command_list_finish(s, q->has_filter ? q->text : NULL, ci, n);
    free(ci);
  }
  hark_unref(s);
  free(q);
}

bool fed_list(chat_session *s, const char *filter) {
  fed_bridge *b = bridge_of(s->srv);
  if (b == NULL || !cmd_ok(b))
    return false;
  ask_req *q = ask_new(b, s);
  if (q == NULL)
    return false;
  q->has_filter = filter != NULL;
  snprintf(q->text, sizeof q->text, "%s", filter ? filter : "");
  return ask_send(q, s, on_list_reply, "EVAL %s 0", LIST);
}

static bool is_op(redisReply *ops, const char *nick) {
  for (size_t j = 0; ops->type == REDIS_REPLY_ARRAY && j < ops->elements; j++)
    if (ops->element[j]->type == REDIS_REPLY_STRING &&
        strcmp(ops->element[j]->str, nick) == 0)
      return true;
  return false;
}

static void on_chan_reply(redisAsyncContext *ac, void *r, void *priv) {
  ask_req *q = priv;
  redisReply *reply = r;
  chat_session *s = ask_end(q);
  if (s == NULL) {
    free(q);
    return;
  }
  const char *name = q->name;
  if (reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
      reply->elements == 4 && reply->element[0]->type == REDIS_REPLY_INTEGER &&
      reply->element[0]->integer == 0 &&
      reply->element[2]->type == REDIS_REPLY_ARRAY) {
    /* no key: an outsider may see it (+k channels show nothing) */
    if (reply->element[1]->type == REDIS_REPLY_STRING &&
        reply->element[1]->str[0] != '\0')
      name = reply->element[1]->str;
    redisReply *mem = reply->element[2], *ops = reply->element[3];
    char list[IRC_LINE_MAX];
    size_t len = 0;
    size_t room = IRC_BODY_MAX - strlen(s->srv->opt.name) - strlen(s->nick) -
                  strlen(name) - 16;
    for (size_t i = 0; i + 1 < mem->elements; i += 2) {
      if (mem->element[i]->type != REDIS_REPLY_STRING ||
          mem->element[i + 1]->type != REDIS_REPLY_STRING)
        continue;
      const char *nick = mem->element[i]->str;
      bool op = is_op(ops, nick);
      if (q->who_list) {
        fed_member m;
        memset(&m, 0, sizeof m);
        parse_value(&m, mem->element[i + 1]->str);
        session_numeric(s, 352, "%s %s %s %s %s H%s :1 %s", name, m.user,
                        m.host, m.node, nick, op ? "@" : "", m.real);
        continue;
      }
      size_t need = strlen(nick) + 2;
      if (len > 0 && len + need > room) {
        session_numeric(s, 353, "= %s :%s", name, list);
        len = 0;
      }
      len += (size_t)snprintf(list + len, sizeof list - len, "%s%s%s",
                              len ? " " : "", op ? "@" : "", nick);
    }
    if (len > 0)
      session_numeric(s, 353, "= %s :%s", name, list);
  }
  if (q->who_list)
    session_numeric(s, 315, "%s :End of WHO list.", name);
  else
    session_numeric(s, 366, "%s :End of /NAMES list.", name);
  hark_unref(s);
  free(q);
}

bool fed_names(chat_session *s, const char *name, bool who) {
  fed_bridge *b = bridge_of(s->srv);
  if (b == NULL || !cmd_ok(b) || !irc_valid_channel(name, CHATD_CHAN_MAX))
    return false;
  ask_req *q = ask_new(b, s);
  if (q == NULL)
    return false;
  q->who_list = who;
  snprintf(q->name, sizeof q->name, "%s", name);
  char mem[256], meta[256], ops[256];
  chan_keys(name, mem, meta, ops, sizeof mem);
  return ask_send(q, s, on_chan_reply, "EVAL %s 3 %s %s %s", CHAN, mem,
                  meta, ops);
}

/* ---- node loss ----------------------------------------------------------- */

typedef struct lost_ctx {
  fed_bridge *b;
  const char *node;
  char reason[128];
  /* nicks already given a QUIT sequence number */
  struct {
    char nick[65];
    unsigned long seq;
  } *seen;
  size_t nseen, capseen;
} lost_ctx;

static unsigned long lost_seq(lost_ctx *x, const char *nick) {
  for (size_t i = 0; i < x->nseen; i++)
    if (irc_casecmp(x->seen[i].nick, nick) == 0)
      return x->seen[i].seq;
  if (x->nseen == x->capseen) {
    size_t ncap = x->capseen ? x->capseen * 2 : 16;
    void *n = realloc(x->seen, ncap * sizeof *x->seen);
    if (n == NULL)
      return ++x->b->srv->seq;
    x->seen = n;
    x->capseen = ncap;
  }
  snprintf(x->seen[x->nseen].nick, sizeof x->seen[0].nick, "%s", nick);
  return x->seen[x->nseen++].seq = ++x->b->srv->seq;
}

static void lost_in_channel(void *obj, void *data) {
  chat_channel *c = obj;
  lost_ctx *x = data;
  fed_bridge *b = x->b;
  fed_chan *fc = hark_weakmap_peek(b->chans, c);
  if (fc == NULL)
    return;
  char mem[256], meta[256], ops[256];
  chan_keys(c->name, mem, meta, ops, sizeof mem);
  size_t i = 0;
  while (i < fc->n) {
    if (strcmp(fc->m[i].node, x->node) != 0) {
      i++;
      continue;
    }
    fed_member m = fc->m[i];
    fc->m[i] = fc->m[--fc->n];
    chat_buf *line = chat_buf_printf(":%s!%s@%s QUIT :%s", m.nick, m.user,
                                     m.host, x->reason);
    channel_send(c, b->srv->sig_quit, line, NULL, lost_seq(x, m.nick));
    chat_buf_unref(line);
    if (cmd_ok(b))
      redisAsyncCommand(b->cmd, NULL, NULL, "EVAL %s 3 %s %s %s %s", PART, mem,
                        meta, ops, m.nick);
    fc = hark_weakmap_peek(b->chans, c); /* still there: c is held */
    if (fc == NULL)
      return;
  }
}

static void node_lost(fed_bridge *b, const char *node) {
  lost_ctx x = {b, node, "", NULL, 0, 0};
  snprintf(x.reason, sizeof x.reason, "Server %s lost", node);
  log_warn("node %s lost: its users quit", node);
  names_foreach(&b->srv->chans, lost_in_channel, &x);
  free(x.seen);
}

static void on_hb_reply(redisAsyncContext *ac, void *r, void *priv) {
  char *node = priv;
  redisReply *reply = r;
  fed_bridge *b = ac->data;
  if (reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
      reply->integer == 0 && b != NULL && b->up)
    node_lost(b, node);
  free(node);
}

typedef struct scan_ctx {
  fed_bridge *b;
  char (*nodes)[64];
  size_t n, cap;
} scan_ctx;

static void scan_channel(void *obj, void *data) {
  scan_ctx *x = data;
  fed_chan *fc = hark_weakmap_peek(x->b->chans, obj);
  for (size_t i = 0; fc != NULL && i < fc->n; i++) {
    size_t j;
    for (j = 0; j < x->n; j++)
      if (strcmp(x->nodes[j], fc->m[i].node) == 0)
        break;
    if (j < x->n)
      continue;
    if (x->n == x->cap) {
      size_t ncap = x->cap ? x->cap * 2 : 8;
      void *nn = realloc(x->nodes, ncap * sizeof *x->nodes);
      if (nn == NULL)
        return;
      x->nodes = nn;
      x->cap = ncap;
    }
    memcpy(x->nodes[x->n++], fc->m[i].node, 64);
  }
}

static void scan_nodes(fed_bridge *b) {
  scan_ctx x = {b, NULL, 0, 0};
  names_foreach(&b->srv->chans, scan_channel, &x);
  for (size_t i = 0; i < x.n; i++) {
    char *node = strdup(x.nodes[i]);
    if (node != NULL)
      redisAsyncCommand(b->cmd, on_hb_reply, node, "EXISTS hark:hb:%s",
                        node);
  }
  free(x.nodes);
}

/* ---- the link ------------------------------------------------------------ */

static void heartbeat(fed_bridge *b) {
  /* renewed every lease/3 and lasting 2/3 of it: a dead node is seen by
   * the scan (also every lease/3) within the lease */
  fire(b, "SET hark:hb:%s %s PX %u", b->node, b->node, b->lease * 2 / 3);
}

static void renew_all(fed_bridge *b) {
  for (chat_session *s = b->srv->sessions; s != NULL; s = s->next)
    if (!s->closing && !s->closed && s->nick[0] != '\0') {
      claim(b, s, s->nick, true);
      fed_user_info(s);
    }
}

/* After a (re)connection: this node's members, ops, keys and topics back
 * into Redis, announced again (peers that dropped them see a JOIN, the
 * others nothing). */
static void readd_channel(void *obj, void *data) {
  chat_channel *c = obj;
  fed_bridge *b = data;
  char mem[256], meta[256], ops[256], val[256], mask[IRC_LINE_MAX];
  chan_keys(c->name, mem, meta, ops, sizeof mem);
  fc_get(b, c, true);
  fire(b, "SADD hark:chans %s", mem + 9);
  fire(b, "HSETNX %s name %s", meta, c->name);
  if (c->key != NULL)
    fire(b, "HSETNX %s key %s", meta, c->key);
  if (c->topic[0] != '\0')
    fire(b, "HSETNX %s topic %s", meta, c->topic);
  channel_count(c);
  for (size_t i = 0; i < c->nmembers; i++) {
    chat_session *s = hark_weak_get(&c->members[i].who);
    if (s == NULL)
      continue;
    member_value(s, val, sizeof val, b->node);
    fire(b, "HSET %s %s %s", mem, s->nick, val);
    if (c->members[i].op)
      fire(b, "SADD %s %s", ops, s->nick);
    session_mask(s, mask, sizeof mask);
    chat_buf *line = chat_buf_printf(":%s JOIN %s", mask, c->name);
    if (line != NULL) {
      char real[64];
      snprintf(real, sizeof real, "%s", s->realname);
      publish(b, c, "join", 0, s->nick, c->members[i].op ? "1" : "0",
              s->user[0] ? s->user : "~u", s->host, real, line);
      chat_buf_unref(line);
    }
    hark_unref(s);
  }
  sub_ensure(b, c->name);
}

static void link_up(fed_bridge *b) {
  b->up = true;
  b->connecting = false;
  uv_timer_stop(&b->retry);
  b->up_at = uv_now(b->srv->loop);
  b->backoff = 100;
  log_info("redis %s:%d: connected as node %s", b->host, b->port, b->node);
  heartbeat(b);
  renew_all(b);
  redisAsyncCommand(b->sub, on_sub_reply, b, "SUBSCRIBE hark:n:%s", b->node);
  names_foreach(&b->srv->chans, readd_channel, b);
  subs_reconcile(b);
}

static void on_retry(uv_timer_t *t);
static void drop_ctx(redisAsyncContext *ac);

static void link_down(fed_bridge *b, const char *why) {
  if (b->up)
    log_warn("redis %s:%d: lost (%s); serving local traffic, reconnecting",
             b->host, b->port, why);
  b->up = false;
  b->connecting = false;
  b->cmd_up = b->sub_up = false;
  redisAsyncContext *cmd = b->cmd, *sub = b->sub;
  b->cmd = b->sub = NULL;
  drop_ctx(cmd);
  drop_ctx(sub);
  /* Joins waiting for a subscription go on locally. */
  for (fed_sub *s = b->subs; s != NULL; s = s->next) {
    s->state = SUB_NONE;
    join_req *w = s->waiting;
    s->waiting = NULL;
    while (w != NULL) {
      join_req *next = w->next;
      join_fail_local(w);
      w = next;
    }
  }
  if (!b->stopping) {
    uv_timer_start(&b->retry, on_retry, b->backoff, 0);
    unsigned cap = b->lease / 2 < 2000 ? b->lease / 2 : 2000;
    b->backoff = b->backoff * 2 > cap ? cap : b->backoff * 2;
  }
}

static void on_connect(const redisAsyncContext *ac, int status) {
  fed_bridge *b = ac->data;
  if (ac != b->cmd && ac != b->sub)
    return; /* given up on already */
  if (status != REDIS_OK) {
    log_debug("redis %s:%d: %s", b->host, b->port, ac->errstr);
    if (ac == b->cmd)
      b->cmd = NULL; /* hiredis frees it */
    else
      b->sub = NULL;
    link_down(b, ac->errstr);
    return;
  }
  if (ac == b->cmd)
    b->cmd_up = true;
  else
    b->sub_up = true;
  if (b->cmd_up && b->sub_up)
    link_up(b);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  fed_bridge *b = ac->data;
  if (b->stopping) {
    for (int i = 0; i < 2; i++)
      if (b->lingering[i] == ac)
        b->lingering[i] = NULL;
    if (b->lingering[0] == NULL && b->lingering[1] == NULL &&
        b->guard.loop != NULL && !uv_is_closing((uv_handle_t *)&b->guard))
      uv_close((uv_handle_t *)&b->guard, NULL);
    return;
  }
  if (ac != b->cmd && ac != b->sub)
    return;
  if (ac == b->cmd)
    b->cmd = NULL;
  else
    b->sub = NULL;
  link_down(b, status == REDIS_OK ? "closed" : ac->errstr);
}

static redisAsyncContext *connect_one(fed_bridge *b) {
  redisAsyncContext *ac = redisAsyncConnect(b->host, b->port);
  if (ac == NULL)
    return NULL;
  if (ac->err) {
    log_debug("redis: %s", ac->errstr);
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = b;
  if (redisLibuvAttach(ac, b->srv->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    return NULL;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  return ac;
}

static void drop_ctx(redisAsyncContext *ac) {
  if (ac == NULL)
    return;
  if (ac->c.flags & REDIS_CONNECTED)
    redisAsyncDisconnect(ac);
  else
    redisAsyncFree(ac);
}

/* Reconnects, and gives up on a connection attempt that has not finished
 * within the deadline: hiredis 0.14's libuv adapter drops the poll error
 * of a refused connection, which would otherwise never finish. */
static void on_retry(uv_timer_t *t) {
  fed_bridge *b = t->data;
  if (b->stopping)
    return;
  if (b->connecting) {
    b->connecting = false;
    if (b->up)
      return;
    log_debug("redis %s:%d: connection attempt timed out", b->host, b->port);
    redisAsyncContext *cmd = b->cmd, *sub = b->sub;
    b->cmd = b->sub = NULL;
    b->cmd_up = b->sub_up = false;
    drop_ctx(cmd);
    drop_ctx(sub);
    link_down(b, "connect timeout");
    return;
  }
  if (b->cmd != NULL || b->sub != NULL)
    return;
  b->reconnects++;
  log_debug("redis %s:%d: reconnecting", b->host, b->port);
  b->cmd = connect_one(b);
  b->sub = connect_one(b);
  if (b->cmd == NULL || b->sub == NULL) {
    link_down(b, "connect");
    return;
  }
  b->connecting = true;
  uv_timer_start(&b->retry, on_retry, 1000, 0);
}

static void on_tick(uv_timer_t *t) {
  fed_bridge *b = t->data;
  if (!cmd_ok(b))
    return;
  heartbeat(b);
  renew_all(b);
  subs_reconcile(b);
  /* After a reconnection, peers get a lease to come back first. */
  if (uv_now(b->srv->loop) - b->up_at >= b->lease)
    scan_nodes(b);
}

/* ---- life ---------------------------------------------------------------- */

typedef struct out_binding {
  size_t off;
  hark_receiver_fn fn;
} out_binding;

static const out_binding outs[] = {
    {offsetof(chat_server, sig_message), out_message},
    {offsetof(chat_server, sig_join), out_join},
    {offsetof(chat_server, sig_part), out_part},
    {offsetof(chat_server, sig_quit), out_quit},
    {offsetof(chat_server, sig_nick), out_nick},
    {offsetof(chat_server, sig_topic), out_topic},
    {offsetof(chat_server, sig_mode), out_mode},
};

int fed_start(chat_server *srv) {
  const chat_options *o = &srv->opt;
  if (o->redis_port == 0)
    return 0;
  fed_bridge *b = hark_new(&fed_bridge_type);
  if (b == NULL || (b->chans = hark_weakmap_new(fed_chan_free)) == NULL) {
    hark_unref(b);
    return -1;
  }
  b->srv = srv;
  snprintf(b->host, sizeof b->host, "%s", o->redis_host);
  b->port = o->redis_port;
  b->lease = o->lease_ms ? o->lease_ms : 10000;
  if (o->node_id[0] != '\0') {
    snprintf(b->node, sizeof b->node, "%s", o->node_id);
  } else {
    char h[48] = "node";
    gethostname(h, sizeof h);
    h[sizeof h - 1] = '\0';
    snprintf(b->node, sizeof b->node, "%s-%d", h, (int)getpid());
  }
  for (char *p = b->node; *p; p++) /* one token in every field */
    if (*p == ' ' || *p == '\t' || *p == ':')
      *p = '_';
  srand((unsigned)getpid() ^ (unsigned)uv_hrtime());
  b->backoff = 100;
  /* The bridge is one more receiver, of every channel (sender NULL); the
   * server holds it, the signals hold it weakly. */
  for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
    hark_signal *sig = *(hark_signal **)((char *)srv + outs[i].off);
    if (hark_connect(sig, outs[i].fn, b, NULL, HARK_WEAK) != 0) {
      hark_weakmap_free(b->chans);
      hark_unref(b);
      return -1;
    }
  }
  uv_timer_init(srv->loop, &b->tick);
  uv_timer_init(srv->loop, &b->retry);
  uv_timer_init(srv->loop, &b->guard);
  b->tick.data = b->retry.data = b->guard.data = b;
  unsigned period = b->lease / 3 ? b->lease / 3 : 1;
  uv_timer_start(&b->tick, on_tick, period, period);
  srv->fed = b;
  on_retry(&b->retry);
  log_info("federation: node %s, redis %s:%d, lease %u ms", b->node, b->host,
           b->port, b->lease);
  return 0;
}

/* A Redis that stops answering would hold the disconnect (it waits for
 * the replies) and the loop forever: after the guard, the connections
 * are freed as they are. */
static void on_guard(uv_timer_t *t) {
  fed_bridge *b = t->data;
  for (int i = 0; i < 2; i++) {
    redisAsyncContext *ac = b->lingering[i];
    b->lingering[i] = NULL;
    if (ac != NULL) {
      log_warn("redis %s:%d: no answer at shutdown; closing anyway", b->host,
               b->port);
      redisAsyncFree(ac);
    }
  }
  if (!uv_is_closing((uv_handle_t *)&b->guard))
    uv_close((uv_handle_t *)&b->guard, NULL);
}

#define FED_STOP_GUARD_MS 2000

void fed_stop(chat_server *srv) {
  fed_bridge *b = bridge_of(srv);
  if (b == NULL || b->stopping)
    return;
  if (cmd_ok(b))
    redisAsyncCommand(b->cmd, NULL, NULL, "DEL hark:hb:%s", b->node);
  b->stopping = true;
  /* Joins still waiting for their subscription end here (their sessions
   * are closed by now), not leaked with the records fed_free drops. */
  for (fed_sub *s = b->subs; s != NULL; s = s->next) {
    join_req *w = s->waiting;
    s->waiting = NULL;
    while (w != NULL) {
      join_req *next = w->next;
      join_fail_local(w);
      w = next;
    }
  }
  redisAsyncContext *ctx[2] = {b->cmd, b->sub};
  b->cmd = b->sub = NULL;
  b->up = false;
  for (int i = 0; i < 2; i++)
    if (ctx[i] != NULL && (ctx[i]->c.flags & REDIS_CONNECTED))
      b->lingering[i] = ctx[i];
  for (int i = 0; i < 2; i++)
    drop_ctx(ctx[i]); /* may call on_disconnect at once */
  if (b->lingering[0] != NULL || b->lingering[1] != NULL)
    uv_timer_start(&b->guard, on_guard, FED_STOP_GUARD_MS, 0);
  else if (!uv_is_closing((uv_handle_t *)&b->guard))
    uv_close((uv_handle_t *)&b->guard, NULL);
  uv_close((uv_handle_t *)&b->tick, NULL);
  uv_timer_stop(&b->retry);
  uv_close((uv_handle_t *)&b->retry, NULL);
}

void fed_free(chat_server *srv) {
  fed_bridge *b = bridge_of(srv);
  if (b == NULL)
    return;
  srv->fed = NULL;
  hark_weakmap_free(b->chans);
  while (b->subs != NULL) {
    fed_sub *s = b->subs;
    b->subs = s->next;
    free(s);
  }
  hark_unref(b);
}

void fed_stats(chat_server *srv, char *buf, size_t cap) {
  fed_bridge *b = bridge_of(srv);
  if (b == NULL) {
    if (cap)
      buf[0] = '\0';
    return;
  }
  snprintf(buf, cap,
           " node %s redis %s published %llu received %llu dropped %llu "
           "reconnects %llu",
           b->node, b->up ? "up" : "down", b->published, b->received,
           b->dropped, b->reconnects);
}

#endif /* HARK_CHATD_REDIS */
