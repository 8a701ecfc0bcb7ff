/* hark-chatd federation: the link to Redis. Two connections (redis.c):
 * one for commands, one for the blocking XREAD. On each (re)connection:
 * the scripts are loaded, the node resumes its incarnation (or registers
 * a new one and takes a snapshot), the outbox goes out, and reading the
 * stream resumes where it stopped once the outbox is in.
 *
 * The outbox holds this node's events, numbered, until Redis has applied
 * them: while Redis is away local service goes on and nothing is lost;
 * an event resent after a lost reply is applied once (the EMIT script
 * remembers the last number applied per node).
 *
 * Liveness: a heartbeat every lease/4; a node judges others lost only
 * after a whole lease of prompt answers of its own, so that a stalled
 * Redis (or a stalled judge) makes nobody dead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fed.h"

#ifdef HARK_CHATD_REDIS

#define FED_OUTBOX_MAX 200000
#define FED_STOP_GUARD_MS 2000

const char *const fed_kind_names[FK_NKINDS] = {
    "intro",   "nick",  "quit",  "join",    "part", "kick",
    "topic",   "key",   "op",    "msg",     "pm",   "lost",
    "release", "away",  "umode", "setname", "kill", "wallops",
    "invite",  "cmode", "voice", "list"};

static const hark_type fed_bridge_type = {"fed_bridge", sizeof(fed_bridge),
                                          NULL, NULL};

static void link_connect(fed_bridge *b);
static void link_down(fed_bridge *b, const char *why, bool config);
static void out_send(fed_bridge *b, fed_out *e);

/* ---- scripts ----------------------------------------------------------- */

/* The arguments every call of script begins with, in RESP, made once per
 * incarnation: most events are one call, formatted from here on. */
static void make_heads(fed_bridge *b) {
  char logkey[96], retention[16], lease[16];
  snprintf(logkey, sizeof logkey, "%slog", b->prefix);
  snprintf(retention, sizeof retention, "%u", b->opt->redis_retention);
  snprintf(lease, sizeof lease, "%u", b->lease);
  for (int i = 0; i < NSCRIPTS; i++) {
    const char *head[9] = {"EVALSHA", b->sha[i], "1",       logkey, b->prefix,
                           b->node,   b->inc,    retention, lease};
    b->headlen[i] = redis_format_args(b->head[i], sizeof b->head[i], 9, head);
  }
  snprintf(b->head_inc, sizeof b->head_inc, "%s", b->inc);
}

int fed_script(fed_bridge *b, int script, int argc, const char **argv,
               const size_t *lens, redis_cb cb, void *data) {
  if (!b->cmd_ready)
    return HARK_EINVAL;
  if (strcmp(b->head_inc, b->inc) != 0 || b->headlen[script] == 0)
    make_heads(b);
  if (b->headlen[script] >= sizeof b->head[script])
    return HARK_EINVAL; /* (a prefix or node id too long for it) */
  size_t l[24];
  if (argc > 24)
    return HARK_EINVAL;
  for (int i = 0; i < argc; i++)
    l[i] = lens != NULL && lens[i] != SIZE_MAX ? lens[i] : strlen(argv[i]);
  return redis_send_head(b->cmd, 9, b->head[script], b->headlen[script], argc,
                         argv, l, cb, data);
}

/* ---- the outbox -------------------------------------------------------- */

/* The session whose output waited for e goes on. */
static void ungate(fed_out *e) {
  if (!e->gating)
    return;
  e->gating = false;
  chat_user *u = hark_weak_get(&e->gate);
  chat_session *s = user_session(u);
  if (s != NULL)
    session_ungate(s);
  hark_unref(u);
  hark_weak_clear(&e->gate);
}

static void out_free(fed_out *e) {
  ungate(e);
  hark_weak_clear(&e->who);
  chat_free(e);
}

/* Drops e, the head of the outbox (answered, or refused for good). */
static void out_pop(fed_bridge *b) {
  fed_out *e = b->out_head;
  b->out_head = e->next;
  if (b->out_head == NULL)
    b->out_tail = NULL;
  if (b->out_unsent == e)
    b->out_unsent = e->next;
  b->out_len--;
  out_free(e);
}

int out_push(fed_bridge *b, int kind, const fed_field *f, int nf,
             const char *item, chat_user *who, const char *nick,
             chat_user *actor) {
  bool state = kind != FK_MSG && kind != FK_PM && kind != FK_WALLOPS;
  if (b->out_len >= FED_OUTBOX_MAX && !state) {
    if (b->dropped++ == 0 || b->dropped % 10000 == 0)
      log_error("federation: outbox full (%zu events waiting for Redis): "
                "messages dropped (%llu so far)",
                b->out_len, b->dropped);
    return HARK_ENOMEM;
  }
  size_t bytes = 0;
  for (int i = 0; i < nf; i++)
    bytes += strlen(f[i].name) + 1 +
             (f[i].len == SIZE_MAX ? strlen(f[i].value) : f[i].len) + 1;
  size_t n = (size_t)nf * 2;
  fed_out *e =
      chat_calloc(1, sizeof *e + n * (sizeof(char *) + sizeof(size_t)) + bytes);
  if (e == NULL) {
    b->dropped++;
    log_warn("federation: out of memory: a %s event lost",
             fed_kind_names[kind]);
    return HARK_ENOMEM;
  }
  e->argv = (const char **)(void *)e->data;
  e->lens = (size_t *)(void *)(e->data + n * sizeof(char *));
  char *p = e->data + n * (sizeof(char *) + sizeof(size_t));
  for (int i = 0; i < nf; i++) {
    size_t nl = strlen(f[i].name);
    size_t vl = f[i].len == SIZE_MAX ? strlen(f[i].value) : f[i].len;
    memcpy(p, f[i].name, nl + 1);
    e->argv[2 * i] = p;
    e->lens[2 * i] = nl;
    p += nl + 1;
    memcpy(p, f[i].value, vl);
    p[vl] = '\0';
    e->argv[2 * i + 1] = p;
    e->lens[2 * i + 1] = vl;
    p += vl + 1;
  }
  e->nfields = nf;
  e->kind = kind;
  e->state = state;
  e->q = ++b->next_q;
  snprintf(e->item, sizeof e->item, "%s", item);
  pending_add(b, e->item, 1);
  if (who != NULL)
    hark_weak_set(&e->who, who);
  if (nick != NULL)
    snprintf(e->nick, sizeof e->nick, "%s", nick);
  chat_session *s = user_session(actor);
  if (s != NULL && state && kind != FK_QUIT && b->state != LINK_DOWN &&
      hark_weak_set(&e->gate, s) == 0) {
    e->gating = true;
    session_gate(s);
  }
  if (b->out_tail != NULL)
    b->out_tail->next = e;
  else
    b->out_head = e;
  b->out_tail = e;
  if (b->out_unsent == NULL)
    b->out_unsent = e;
  b->out_len++;
  if (b->state == LINK_UP)
    out_send(b, e);
  return 0;
}

/* The network gave a user of ours another nick than the one it asked for
 * (taken by a user of another node while the two could not see each
 * other): renamed, with the prefix of the nick it had, and told once. */
static void renamed(fed_bridge *b, fed_out *e, const char *guest) {
  chat_user *u = hark_weak_get(&e->who);
  if (u != NULL && !u->remote && irc_casecmp(u->nick, e->nick) == 0) {
    char old[CHATD_NICK_MAX + 1];
    snprintf(old, sizeof old, "%s", u->nick);
    chat_user *other = user_find(b->srv, guest);
    if (other == NULL && user_set_nick(u, guest, CHAT_FROM_NET) == 0) {
      user_notice(u,
                  "Your nick %s was taken on another server while the "
                  "network was split: you are now %s",
                  old, guest);
      log_warn("nick %s lost to another node: %s is now %s", old, old, guest);
    }
    hark_unref(other);
  }
  hark_unref(u);
}

static void on_emit(void *data, const rreply *r) {
  fed_bridge *b = data;
  if (r == NULL || b->out_head == NULL || !b->out_head->sent)
    return; /* the link went down: link_down resends */
  fed_out *e = b->out_head;
  b->out_inflight--;
  if (rreply_is(r, RREPLY_ERROR)) {
    if (strncmp(r->str, "NOSCRIPT", 8) == 0) {
      link_reset(b, "the scripts are gone (SCRIPT FLUSH?)");
      return;
    }
    log_error("federation: Redis refused a %s event: %s",
              fed_kind_names[e->kind], r->str);
    pending_add(b, e->item, -1);
  } else if (rreply_is(r, RREPLY_INTEGER) && r->integer < 0) {
    link_reset(b, "this node was declared lost: joining again");
    return;
  } else if (rreply_is(r, RREPLY_INTEGER) && r->integer > 0) {
    b->published++;
  } else if (rreply_is(r, RREPLY_ARRAY)) {
    b->published++;
    const rreply *guest = rreply_at(r, 1);
    if (rreply_is(guest, RREPLY_STRING) && guest->len > 0)
      renamed(b, e, guest->str);
  }
  bool barrier = e == b->barrier;
  out_pop(b);
  if (barrier) {
    b->barrier = NULL;
    in_start(b);
  }
}

static void out_send(fed_bridge *b, fed_out *e) {
  const char *a[24];
  size_t l[24];
  char q[24];
  snprintf(q, sizeof q, "%llu", (unsigned long long)e->q);
  a[0] = q;
  a[1] = fed_kind_names[e->kind];
  l[0] = strlen(q);
  l[1] = strlen(a[1]);
  for (int i = 0; i < 2 * e->nfields && i < 22; i++) {
    a[2 + i] = e->argv[i];
    l[2 + i] = e->lens[i];
  }
  if (fed_script(b, SCRIPT_EMIT, 2 + 2 * e->nfields, a, l, on_emit, b) != 0)
    return; /* not ready or no memory: it goes on the next flush */
  e->sent = true;
  b->out_inflight++;
  if (b->out_unsent == e)
    b->out_unsent = e->next;
}

void out_flush(fed_bridge *b) {
  while (b->state == LINK_UP && b->out_unsent != NULL) {
    fed_out *e = b->out_unsent;
    out_send(b, e);
    if (!e->sent)
      return;
  }
}

/* ---- registration -------------------------------------------------------- */

static void up(fed_bridge *b) {
  b->state = LINK_UP;
  b->healthy_since = uv_now(b->srv->loop);
  b->backoff = 100;
  b->last_error[0] = '\0';
  /* Reading waits for what this node did meanwhile: a nick taken twice
   * while Redis was away is settled by our events' answers before the
   * other node's events are read. */
  b->barrier = b->out_tail;
  out_flush(b);
  out_unpark(b, true);
  in_unpark(b);
  if (b->barrier == NULL)
    in_start(b);
}

static void on_register(void *data, const rreply *r) {
  fed_bridge *b = data;
  if (r == NULL)
    return;
  const rreply *inc = rreply_at(r, 0);
  if (!rreply_is(inc, RREPLY_STRING)) {
    link_down(b, rreply_is(r, RREPLY_ERROR) ? r->str : "bad REGISTER reply",
              rreply_is(r, RREPLY_ERROR));
    return;
  }
  bool first = b->inc[0] == '\0';
  snprintf(b->inc, sizeof b->inc, "%s", inc->str);
  /* A new incarnation: the network has none of our state. The burst says
   * it now; the state events still waiting are that state's history and
   * go, the messages stay (renumbered behind the burst). */
  fed_out *keep = NULL, **kt = &keep;
  for (fed_out *e = b->out_head, *next; e != NULL; e = next) {
    next = e->next;
    if (e->state) {
      out_free(e);
    } else {
      e->next = NULL;
      e->sent = false;
      *kt = e;
      kt = &e->next;
    }
  }
  b->out_head = b->out_tail = b->out_unsent = NULL;
  b->out_len = 0;
  b->out_inflight = 0;
  fmap_free(&b->pending, NULL);
  fmap known;
  if (fmap_init(&b->pending) != 0 || fmap_init(&known) != 0) {
    log_error("federation: out of memory");
    return;
  }
  char old_id[sizeof b->last_id];
  uint64_t old_n = b->last_n;
  snprintf(old_id, sizeof old_id, "%s", b->last_id);
  b->muted = true;
  bool ok = in_resync(b, r, 1, true, &known);
  b->muted = false;
  /* Back after being away (not a first start): what others did since our
   * last read is still in the stream, messages too; read it from there
   * (a jump in the sequence still sends us to a snapshot). A Redis that
   * lost its data began another stream: read all of that one. */
  const rreply *epoch = rreply_at(r, 5);
  bool same =
      rreply_is(epoch, RREPLY_STRING) && strcmp(epoch->str, b->epoch) == 0;
  if (ok && !first) {
    snprintf(b->last_id, sizeof b->last_id, "%s", same ? old_id : "0-0");
    b->last_n = same ? old_n : 0;
  }
  if (rreply_is(epoch, RREPLY_STRING))
    snprintf(b->epoch, sizeof b->epoch, "%s", epoch->str);
  if (!ok) {
    fmap_free(&known, NULL);
    link_down(b, "bad snapshot", false);
    return;
  }
  fed_burst(b, &known);
  fmap_free(&known, NULL);
  for (fed_out *e = keep, *next; e != NULL; e = next) {
    next = e->next;
    e->next = NULL;
    e->q = ++b->next_q;
    if (b->out_tail != NULL)
      b->out_tail->next = e;
    else
      b->out_head = e;
    b->out_tail = e;
    if (b->out_unsent == NULL)
      b->out_unsent = e;
    b->out_len++;
  }
  log_info("federation: %s as node %s (incarnation %s) at %s",
           first ? "joined the network" : "joined again", b->node, b->inc,
           b->last_id);
  up(b);
}

static void do_register(fed_bridge *b) {
  if (fed_script(b, SCRIPT_REGISTER, 0, NULL, NULL, on_register, b) != 0)
    link_down(b, "out of memory", false);
}

static void on_resume(void *data, const rreply *r) {
  fed_bridge *b = data;
  if (r == NULL)
    return;
  const rreply *st = rreply_at(r, 0);
  if (!rreply_is(st, RREPLY_INTEGER)) {
    link_down(b, rreply_is(r, RREPLY_ERROR) ? r->str : "bad BEAT reply",
              rreply_is(r, RREPLY_ERROR));
    return;
  }
  if (st->integer == 0) { /* declared lost while away, or Redis lost it */
    log_warn("federation: node %s unknown to Redis: joining again", b->node);
    do_register(b);
    return;
  }
  log_info("federation: back as node %s (incarnation %s); reading from %s",
           b->node, b->inc, b->last_id);
  up(b);
}

static void sync_link(fed_bridge *b) {
  b->state = LINK_SYNCING;
  if (b->inc[0] == '\0') {
    do_register(b);
    return;
  }
  const char *argv[] = {"0"};
  if (fed_script(b, SCRIPT_BEAT, 1, argv, NULL, on_resume, b) != 0)
    link_down(b, "out of memory", false);
}

/* ---- connections --------------------------------------------------------- */

static void on_loaded(void *data, const rreply *r) {
  fed_bridge *b = data;
  if (r == NULL)
    return;
  if (!rreply_is(r, RREPLY_STRING) || r->len != 40) {
    char why[300];
    snprintf(why, sizeof why, "SCRIPT LOAD: %s",
             rreply_is(r, RREPLY_ERROR) ? r->str : "bad reply");
    link_down(b, why, true);
    return;
  }
  memcpy(b->sha[b->scripts_loaded++], r->str, 41);
  b->head_inc[0] = '\x01'; /* the heads name the shas: made again */
  if (b->scripts_loaded == NSCRIPTS && b->rd_ready)
    sync_link(b);
}

static void on_ready(redis_conn *c, void *data) {
  fed_bridge *b = data;
  if (c == b->cmd) {
    b->cmd_ready = true;
    for (int i = 0; i < NSCRIPTS; i++) {
      const char *argv[] = {"SCRIPT", "LOAD", fed_scripts[i]};
      if (redis_send(c, 3, argv, NULL, 0, on_loaded, b) != 0) {
        link_down(b, "out of memory", false);
        return;
      }
    }
  } else if (c == b->rd) {
    b->rd_ready = true;
    if (b->scripts_loaded == NSCRIPTS)
      sync_link(b);
  }
}

static void on_conn_down(redis_conn *c, void *data, const char *why,
                         bool config) {
  fed_bridge *b = data;
  if (c == b->cmd || c == b->rd)
    link_down(b, why, config);
}

static const redis_events conn_events = {on_ready, on_conn_down};

static void on_retry(uv_timer_t *t) { link_connect(t->data); }

static void link_down(fed_bridge *b, const char *why, bool config) {
  redis_conn *cmd = b->cmd, *rd = b->rd;
  b->cmd = b->rd = NULL;
  bool was_up = b->state == LINK_UP || b->state == LINK_SYNCING;
  if (b->state != LINK_STOPPED) {
    const char *o = b->opt->redis_host;
    int port = b->opt->redis_port;
    bool repeat = strcmp(b->last_error, why) == 0;
    if (config && !repeat)
      log_error("redis %s:%d: %s (check --redis-user, --redis-password, "
                "--redis-tls, --redis-ca); retrying",
                o, port, why);
    else if (was_up)
      log_warn("redis %s:%d: lost (%s); serving local traffic, reconnecting", o,
               port, why);
    else if (!repeat)
      log_warn("redis %s:%d: %s; retrying", o, port, why);
    else
      log_debug("redis %s:%d: %s", o, port, why);
    snprintf(b->last_error, sizeof b->last_error, "%s", why);
    b->state = LINK_DOWN;
  }
  b->cmd_ready = b->rd_ready = false;
  b->scripts_loaded = 0;
  b->beat_out = false;
  b->barrier = NULL;
  b->healthy_since = 0;
  in_stop(b);
  /* The pending commands end here, without replies: claims are granted
   * locally, events wait in the outbox to be sent again. */
  redis_free(cmd);
  redis_free(rd);
  for (fed_out *e = b->out_head; e != NULL; e = e->next) {
    e->sent = false;
    ungate(e); /* Redis is away: what we did stands here */
  }
  b->out_unsent = b->out_head;
  out_unpark(b, false);
  b->out_inflight = 0;
  if (b->stopping && b->state != LINK_STOPPED) { /* lost while saying bye */
    b->state = LINK_STOPPED;
    uv_timer_stop(&b->guard);
    if (b->guard.loop != NULL && !uv_is_closing((uv_handle_t *)&b->guard))
      uv_close((uv_handle_t *)&b->guard, NULL);
  }
  if (b->state != LINK_STOPPED && !b->stopping &&
      !uv_is_active((uv_handle_t *)&b->retry)) {
    uv_timer_start(&b->retry, on_retry, b->backoff, 0);
    unsigned cap = b->lease / 4 < 2000 ? b->lease / 4 : 2000;
    b->backoff = b->backoff * 2 > cap ? cap : b->backoff * 2;
  }
}

void link_reset(fed_bridge *b, const char *why) {
  link_down(b, why, false);
  if (b->state == LINK_DOWN) {
    b->backoff = 100;
    uv_timer_start(&b->retry, on_retry, 0, 0);
  }
}

static void link_connect(fed_bridge *b) {
  if (b->stopping || b->state == LINK_STOPPED)
    return;
  const chat_options *o = b->opt;
  char name[CHATD_NODE_MAX + 16];
  snprintf(name, sizeof name, "hark-chatd:%s", b->node);
  redis_conf conf = {o->redis_host,     o->redis_port, o->redis_user,
                     o->redis_password, b->tls,        b->timeout,
                     b->timeout,        name};
  b->state = LINK_CONNECTING;
  b->reconnects++;
  b->cmd = redis_connect(b->srv->loop, &conf, &conn_events, b);
  b->rd = redis_connect(b->srv->loop, &conf, &conn_events, b);
  if (b->cmd == NULL || b->rd == NULL)
    link_down(b, "out of memory", false);
}

/* ---- liveness ------------------------------------------------------------ */

static void on_beat(void *data, const rreply *r) {
  fed_bridge *b = data;
  b->beat_out = false;
  if (r == NULL)
    return;
  uint64_t now = uv_now(b->srv->loop);
  if (now - b->beat_sent_at > b->lease / 4)
    b->healthy_since = now; /* slow answers: no judging for a lease */
  const rreply *st = rreply_at(r, 0);
  if (!rreply_is(st, RREPLY_INTEGER)) {
    log_warn("federation: heartbeat: %s",
             rreply_is(r, RREPLY_ERROR) ? r->str : "bad reply");
    return;
  }
  if (st->integer == 0) {
    link_reset(b, "this node was declared lost: joining again");
    return;
  }
  for (size_t i = 1; i < r->elements; i++)
    if (rreply_is(r->element[i], RREPLY_STRING)) {
      b->judged++;
      log_warn("federation: node %s lost: no heartbeat for %u ms",
               r->element[i]->str, b->lease);
    }
}

static void on_beat_tick(uv_timer_t *t) {
  fed_bridge *b = t->data;
  uint64_t now = uv_now(b->srv->loop);
  /* This loop itself stalled (stopped, swamped): what it would see now is
   * stale, so it judges nobody for a lease. */
  if (b->last_tick != 0 && now - b->last_tick > b->beat_ms + b->lease / 4)
    b->healthy_since = now;
  b->last_tick = now;
  if (b->state != LINK_UP)
    return;
  if (b->beat_out) { /* the last one is still out: Redis is slow */
    b->healthy_since = now;
    return;
  }
  bool judge = b->healthy_since != 0 && now - b->healthy_since >= b->lease;
  const char *argv[] = {judge ? "1" : "0"};
  if (fed_script(b, SCRIPT_BEAT, 1, argv, NULL, on_beat, b) == 0) {
    b->beat_out = true;
    b->beat_sent_at = now;
  }
}

/* ---- life ------------------------------------------------------------------ */

int fed_start(chat_server *srv) {
  const chat_options *o = &srv->opt;
  if (o->redis_port == 0)
    return 0;
  chat_tls_ctx *tls = NULL;
  if (o->redis_tls) {
    char err[400];
    tls = tls_ctx_client(o->redis_ca, o->redis_cert, o->redis_key, err,
                         sizeof err);
    if (tls == NULL) {
      log_error("federation: TLS: %s", err);
      return -1;
    }
  }
  fed_bridge *b = hark_new(&fed_bridge_type);
  if (b == NULL) {
    tls_ctx_free(tls);
    return -1;
  }
  b->srv = srv;
  b->opt = &srv->opt;
  b->tls = tls;
  snprintf(b->node, sizeof b->node, "%s", srv->node);
  snprintf(b->prefix, sizeof b->prefix, "{%s}:", o->redis_prefix);
  b->lease = o->lease_ms ? o->lease_ms : 10000;
  b->timeout = o->redis_timeout_ms ? o->redis_timeout_ms : 3000;
  b->beat_ms = b->lease / 4 ? b->lease / 4 : 1;
  b->block_ms = b->lease / 2 < 1000 ? b->lease / 2 : 1000;
  b->backoff = 100;
  snprintf(b->last_id, sizeof b->last_id, "0-0");
  bool ok = fmap_init(&b->remote) == 0 && fmap_init(&b->pending) == 0 &&
            names_init(&b->uids) == 0 && out_connect(b) == 0;
  if (!ok) {
    fmap_free(&b->remote, NULL);
    fmap_free(&b->pending, NULL);
    names_free(&b->uids);
    tls_ctx_free(tls);
    hark_unref(b);
    return -1;
  }
  uv_timer_init(srv->loop, &b->beat);
  uv_timer_init(srv->loop, &b->retry);
  uv_timer_init(srv->loop, &b->guard);
  b->beat.data = b->retry.data = b->guard.data = b;
  uv_timer_start(&b->beat, on_beat_tick, b->beat_ms, b->beat_ms);
  srv->fed = b;
  log_info("federation: node %s, redis %s:%d%s%s, lease %u ms, retention "
           "%u events",
           b->node, o->redis_host, o->redis_port, tls ? " (TLS)" : "",
           o->redis_password ? " (AUTH)" : "", b->lease, o->redis_retention);
  link_connect(b);
  return 0;
}

static void close_if_open(uv_handle_t *h) {
  if (h->loop != NULL && !uv_is_closing(h))
    uv_close(h, NULL);
}

static void finish_stop(fed_bridge *b) {
  if (b->state == LINK_STOPPED)
    return;
  b->state = LINK_STOPPED;
  link_down(b, "stopped", false);
  close_if_open((uv_handle_t *)&b->guard);
}

static void on_bye(void *data, const rreply *r) {
  if (r != NULL)
    finish_stop(data);
}

/* A Redis that stops answering would hold the shutdown forever: after
 * the guard, the connections close as they are. */
static void on_guard(uv_timer_t *t) {
  fed_bridge *b = t->data;
  log_warn("redis %s:%d: no answer at shutdown; closing anyway",
           b->opt->redis_host, b->opt->redis_port);
  finish_stop(b);
}

void fed_stop(chat_server *srv) {
  fed_bridge *b = srv->fed;
  if (b == NULL || b->stopping)
    return;
  b->stopping = true;
  in_stop(b);
  close_if_open((uv_handle_t *)&b->beat);
  uv_timer_stop(&b->retry);
  close_if_open((uv_handle_t *)&b->retry);
  /* The QUITs of the sessions, then this node's goodbye: the others see
   * its users leave at once, not after the lease. */
  const char *argv[] = {"bye"};
  if (b->state == LINK_UP &&
      fed_script(b, SCRIPT_MISC, 1, argv, NULL, on_bye, b) == 0) {
    uv_timer_start(&b->guard, on_guard, FED_STOP_GUARD_MS, 0);
    return;
  }
  finish_stop(b);
}

static void unref_user(void *u) { hark_unref(u); }

void fed_free(chat_server *srv) {
  fed_bridge *b = srv->fed;
  if (b == NULL)
    return;
  srv->fed = NULL;
  while (b->out_head != NULL)
    out_pop(b);
  names_free(&b->uids);
  fmap_free(&b->pending, NULL);
  /* remote users: their channels go with them */
  fmap_free(&b->remote, unref_user);
  tls_ctx_free(b->tls);
  hark_unref(b);
}

void fed_stats(chat_server *srv, char *buf, size_t cap) {
  fed_bridge *b = srv->fed;
  if (b == NULL) {
    if (cap)
      buf[0] = '\0';
    return;
  }
  snprintf(buf, cap,
           " node %s incarnation %s redis %s published %llu applied %llu "
           "outbox %zu dropped %llu reconnects %llu resyncs %llu judged "
           "%llu remote-users %zu",
           b->node, b->inc[0] ? b->inc : "-",
           b->state == LINK_UP ? "up" : "down", b->published, b->applied,
           b->out_len, b->dropped, b->reconnects, b->resyncs, b->judged,
           b->remote.count);
}

#endif /* HARK_CHATD_REDIS */
