/* hark-chatd federation: the stream in. Each event of another node is
 * applied once, in the stream's order, through the operations of user.c
 * and channel.c that commands use; each field is one stream value, so no
 * byte of it can change what the event says. A jump in the events'
 * sequence (more missed than the stream keeps) is mended from a snapshot
 * of the network's state, and logged.
 *
 * Our own events are applied when they happen; read back, they only
 * close their "pending item". A remote event on an item (a membership, a
 * topic, a key, an operator status) with one of ours still in flight is
 * older than ours in the stream, and ours decides: it is skipped. So
 * every node ends in the state the stream's order gives. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fed.h"

#ifdef HARK_CHATD_REDIS

static void issue(fed_bridge *b);

/* ---- fields ---------------------------------------------------------- */

/* What another node says is checked again here: names by the rules every
 * node applies to its own users, other text stripped of control bytes. */
static void clean(char *dst, size_t cap, const char *src, bool spaces) {
  size_t i = 0;
  for (; src != NULL && src[i] != '\0' && i + 1 < cap; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[i] = c < 0x20 || c == 0x7f || (!spaces && c == ' ') ? '_' : (char)c;
  }
  dst[i] = '\0';
}

static int kind_of(const char *k) {
  for (int i = 0; i < FK_NKINDS; i++)
    if (strcmp(k, fed_kind_names[i]) == 0)
      return i;
  return -1;
}

static const char *str(const rreply *r) {
  return rreply_is(r, RREPLY_STRING) ? r->str : NULL;
}

/* An entry's fields into ev (borrowed from the reply). */
static bool parse(const rreply *fields, fed_ev *ev) {
  memset(ev, 0, sizeof *ev);
  ev->kind = -1;
  for (size_t i = 0; i + 1 < fields->elements; i += 2) {
    const char *k = str(fields->element[i]), *v = str(fields->element[i + 1]);
    if (k == NULL || v == NULL)
      return false;
    switch (k[0]) {
    case 'n':
      if (strcmp(k, "n") == 0)
        ev->n = strtoull(v, NULL, 10);
      else if (strcmp(k, "nick") == 0)
        ev->nick = v;
      else if (strcmp(k, "node") == 0)
        ev->node = v;
      break;
    case 'k':
      if (k[1] == '\0')
        ev->kind = kind_of(v);
      break;
    case 'o':
      if (k[1] == '\0')
        ev->o = v;
      else if (strcmp(k, "op") == 0)
        ev->v = v;
      break;
    case 'i':
      if (k[1] == '\0')
        ev->i = v;
      else if (strcmp(k, "inc") == 0)
        ev->inc = v;
      break;
    case 'u':
      if (k[1] == '\0')
        ev->u = v;
      else if (strcmp(k, "user") == 0)
        ev->user = v;
      break;
    case 't':
      if (k[1] == '\0')
        ev->t = v;
      break;
    case 'c':
      if (k[1] == '\0')
        ev->c = v;
      break;
    case 'm':
      if (k[1] == '\0')
        ev->m = v;
      break;
    case 'x':
      if (k[1] == '\0') {
        ev->x = v;
        ev->has_x = true;
      }
      break;
    case 'h':
      if (strcmp(k, "host") == 0)
        ev->host = v;
      break;
    case 'r':
      if (strcmp(k, "real") == 0)
        ev->real = v;
      break;
    case 'b':
      if (strcmp(k, "by") == 0)
        ev->by = v;
      break;
    case 'a':
      if (strcmp(k, "at") == 0)
        ev->at = v;
      else if (strcmp(k, "acct") == 0)
        ev->acct = v;
      else if (strcmp(k, "all") == 0)
        ev->nick = v; /* (UMODE: the modes now) */
      break;
    case 'g':
      if (k[1] == '\0')
        ev->g = v;
      break;
    case 's':
      if (k[1] == '\0')
        ev->s = v;
      break;
    case 'v':
      if (k[1] == '\0')
        ev->v = v;
      break;
    }
  }
  if (ev->o == NULL)
    ev->o = "";
  if (ev->i == NULL)
    ev->i = "";
  return ev->kind >= 0 && ev->n > 0;
}

/* The pending item an event is about, or "". */
static void item_of(const fed_ev *ev, char *buf, size_t cap) {
  buf[0] = '\0';
  if (ev->c == NULL)
    return;
  switch (ev->kind) {
  case FK_JOIN:
  case FK_PART:
    fed_item(buf, cap, 'm', ev->c, ev->u);
    break;
  case FK_KICK:
    fed_item(buf, cap, 'm', ev->c, ev->t);
    break;
  case FK_TOPIC:
    fed_item(buf, cap, 't', ev->c, NULL);
    break;
  case FK_KEY:
    fed_item(buf, cap, 'k', ev->c, NULL);
    break;
  case FK_OP:
    fed_item(buf, cap, 'o', ev->c, ev->t);
    break;
  case FK_VOICE:
    fed_item(buf, cap, 'v', ev->c, ev->t);
    break;
  case FK_CMODE:
    fed_item(buf, cap, 'f', ev->c, ev->m);
    break;
  case FK_LIST: {
    char what[220];
    snprintf(what, sizeof what, "%s%s", ev->m ? ev->m : "", ev->x ? ev->x : "");
    fed_item(buf, cap, 'L', ev->c, what);
    break;
  }
  }
}

/* ---- users ------------------------------------------------------------ */

/* A user of ours holds a nick that the network gives to another node's
 * user (both took it while they could not see each other, and the other
 * reached Redis first): ours is renamed, and told once. */
static void collide(fed_bridge *b, chat_user *local) {
  char guest[CHATD_NICK_MAX + 1], old[CHATD_NICK_MAX + 1];
  snprintf(old, sizeof old, "%s", local->nick);
  for (int tries = 0; tries < 50; tries++) {
    snprintf(
        guest, sizeof guest, "Guest%u",
        (unsigned)((uv_hrtime() / 1000 + (unsigned)tries * 7919u) % 100000u));
    chat_user *o = user_find(b->srv, guest);
    hark_unref(o);
    if (o == NULL)
      break;
  }
  if (user_set_nick(local, guest, 0) == 0) {
    user_notice(local,
                "Your nick %s was taken on another server while the "
                "network was split: you are now %s",
                old, guest);
    log_warn("nick %s lost to another node: %s is now %s", old, old, guest);
  }
}

/* Makes nick free here for a user of another node. */
static void make_room(fed_bridge *b, const char *nick, const char *uid) {
  chat_user *o = names_get(&b->srv->nicks, nick);
  if (o != NULL && !o->remote)
    collide(b, o);
  else if (o != NULL && strcmp(o->uid, uid) != 0)
    log_warn("federation: %s claimed by two remote users (%s, %s)", nick,
             o->uid, uid);
  hark_unref(o);
}

static chat_user *introduce(fed_bridge *b, const char *uid, const char *node,
                            const char *nick, const char *user,
                            const char *host, const char *real) {
  if (!irc_valid_nick(nick, CHATD_NICK_MAX) || uid[0] == '\0') {
    log_warn("federation: a user with a bad nick from %s ignored", node);
    return NULL;
  }
  chat_user *known = fed_user(b, uid);
  if (known != NULL)
    return known;
  char cu[CHATD_USER_MAX + 1], ch[64], cr[64], cn[CHATD_NODE_MAX + 1];
  clean(cu, sizeof cu, user, false);
  clean(ch, sizeof ch, host, false);
  clean(cr, sizeof cr, real, true);
  clean(cn, sizeof cn, node, false);
  make_room(b, nick, uid);
  chat_user *u = user_new_remote(b->srv, uid, cn, nick, cu, ch, cr);
  if (u == NULL || fmap_put(&b->remote, uid, u, NULL) != 0) {
    if (u != NULL)
      user_quit(u, "out of memory", CHAT_FROM_NET);
    hark_unref(u);
    log_warn("federation: out of memory: user %s not known here", nick);
    return NULL;
  }
  if (names_put(&b->uids, uid, u) != 0)
    log_warn("federation: out of memory: %s not found by id", nick);
  user_register(u, CHAT_FROM_NET);
  return u;
}

static void rename_remote(fed_bridge *b, chat_user *u, const char *nick) {
  if (!irc_valid_nick(nick, CHATD_NICK_MAX) || strcmp(u->nick, nick) == 0)
    return;
  if (irc_casecmp(u->nick, nick) != 0)
    make_room(b, nick, u->uid);
  if (user_set_nick(u, nick, CHAT_FROM_NET) != 0)
    log_warn("federation: out of memory: %s not renamed %s", u->nick, nick);
}

static void quit_remote(fed_bridge *b, chat_user *u, const char *reason) {
  hark_ref(u);
  user_quit(u, reason, CHAT_FROM_NET);
  fed_forget(b, u);
  hark_unref(u);
}

typedef struct of_node {
  const char *node;
  chat_user **users;
  size_t n, cap;
} of_node;

static void collect(const char *key, void *value, void *d) {
  of_node *x = d;
  chat_user *u = value;
  if (x->node != NULL && strcmp(u->node, x->node) != 0)
    return;
  if (x->n == x->cap) {
    size_t ncap = x->cap ? x->cap * 2 : 16;
    chat_user **nu = chat_realloc(x->users, ncap * sizeof *nu);
    if (nu == NULL)
      return;
    x->users = nu;
    x->cap = ncap;
  }
  x->users[x->n++] = hark_ref(u);
}

/* In the order the users came: a uid's number grows with time. */
static int by_uid(const void *pa, const void *pb) {
  const chat_user *a = *(chat_user *const *)pa, *b = *(chat_user *const *)pb;
  const char *na = strrchr(a->uid, ':'), *nb = strrchr(b->uid, ':');
  unsigned long long x = na ? strtoull(na + 1, NULL, 10) : 0;
  unsigned long long y = nb ? strtoull(nb + 1, NULL, 10) : 0;
  return x < y ? -1 : x > y ? 1 : strcmp(a->uid, b->uid);
}

/* Everyone of node (NULL: every remote user) quits. */
static void node_lost(fed_bridge *b, const char *node, const char *why) {
  of_node x = {node, NULL, 0, 0};
  fmap_foreach(&b->remote, collect, &x);
  if (x.n > 1)
    qsort(x.users, x.n, sizeof *x.users, by_uid);
  char reason[160];
  snprintf(reason, sizeof reason, "Server %s %s", node ? node : "*", why);
  if (x.n > 0)
    log_warn("federation: node %s %s: its %zu users quit", node, why, x.n);
  for (size_t i = 0; i < x.n; i++) {
    quit_remote(b, x.users[i], reason);
    hark_unref(x.users[i]);
  }
  chat_free(x.users);
}

/* ---- events ----------------------------------------------------------- */

static chat_channel *channel_of(fed_bridge *b, const char *name, bool create) {
  if (!fed_carries(name))
    return NULL;
  chat_channel *c = channel_find(b->srv, name);
  if (c == NULL && create)
    c = channel_new(b->srv, name);
  return c;
}

static bool is_cmd(const char *m) {
  return m != NULL && (strcmp(m, "PRIVMSG") == 0 || strcmp(m, "NOTICE") == 0 ||
                       strcmp(m, "TAGMSG") == 0);
}

/* Client tags from another node: as a client would send them, or none. */
static const char *tags_ok(const char *g) {
  if (g == NULL || g[0] != '+' || strlen(g) >= CHATD_TAGS_MAX)
    return NULL;
  for (const char *p = g; *p; p++)
    if ((unsigned char)*p <= ' ')
      return NULL;
  return g;
}

/* A mode change of another node, checked as a command would. */
static void apply_mode(fed_bridge *b, const fed_ev *ev, chat_user *u,
                       chat_user *t) {
  chat_channel *c = channel_of(b, ev->c, false);
  if (c == NULL || ev->v == NULL)
    return;
  char dir = ev->v[0] == '1' || ev->v[0] == '+' ? '+' : '-';
  if (ev->kind == FK_VOICE) {
    if (t != NULL)
      channel_mode1(c, u, dir, 'v', NULL, t, CHAT_FROM_NET);
  } else if (ev->kind == FK_CMODE && ev->m != NULL && strlen(ev->m) == 1 &&
             strchr("imnpstl", ev->m[0]) != NULL) {
    if (ev->m[0] != 'l' || dir == '-' ||
        (ev->x != NULL && strtoul(ev->x, NULL, 10) > 0))
      channel_mode1(c, u, dir, ev->m[0], ev->x, NULL, CHAT_FROM_NET);
  } else if (ev->kind == FK_LIST && ev->m != NULL && strlen(ev->m) == 1 &&
             strchr("beI", ev->m[0]) != NULL && ev->x != NULL &&
             ev->x[0] != '\0' && strlen(ev->x) < 200 &&
             strpbrk(ev->x, " \r\n") == NULL) {
    channel_mode1(c, u, dir, ev->m[0], ev->x, NULL, CHAT_FROM_NET);
  }
  hark_unref(c);
}

static void apply(fed_bridge *b, const fed_ev *ev) {
  char item[sizeof((fed_out *)0)->item];
  item_of(ev, item, sizeof item);
  if (strcmp(ev->o, b->node) == 0) {
    if (strcmp(ev->i, b->inc) == 0)
      pending_add(b, item, -1); /* ours, read back */
    return;
  }
  if (ev->kind == FK_LOST) {
    if (ev->node == NULL)
      return;
    if (strcmp(ev->node, b->node) == 0) {
      if (ev->inc != NULL && strcmp(ev->inc, b->inc) == 0)
        link_reset(b, "this node was declared lost: joining again");
      return;
    }
    node_lost(b, ev->node, ev->x ? ev->x : "lost");
    return;
  }
  if (item[0] != '\0' && pending_has(b, item))
    return; /* ours, later in the stream, decides */
  b->applied++;
  chat_user *u = fed_user(b, ev->u), *t = fed_user(b, ev->t);
  bool about_channel = ev->kind == FK_KICK || ev->kind == FK_TOPIC ||
                       ev->kind == FK_KEY || ev->kind == FK_OP ||
                       ev->kind == FK_VOICE || ev->kind == FK_CMODE ||
                       ev->kind == FK_LIST;
  if (u != NULL && !u->remote && !about_channel)
    return; /* only our node speaks for our users */
  chat_channel *c = NULL;
  switch (ev->kind) {
  case FK_INTRO:
    if (ev->u != NULL && ev->nick != NULL &&
        (u = introduce(b, ev->u, ev->o, ev->nick, ev->user, ev->host,
                       ev->real)) != NULL &&
        ev->acct != NULL && ev->acct[0] != '\0') {
      char acct[CHATD_ACCOUNT_MAX + 1];
      clean(acct, sizeof acct, ev->acct, false);
      snprintf(u->account, sizeof u->account, "%s", acct);
    }
    break;
  case FK_NICK:
    if (u != NULL && ev->nick != NULL)
      rename_remote(b, u, ev->nick);
    break;
  case FK_QUIT:
    if (u != NULL)
      quit_remote(b, u, ev->x ? ev->x : "");
    break;
  case FK_JOIN:
    if (u != NULL && (c = channel_of(b, ev->c, true)) != NULL &&
        channel_join(c, u, ev->v != NULL && ev->v[0] == '1', CHAT_FROM_NET))
      log_warn("federation: out of memory: a JOIN of %s lost", u->nick);
    break;
  case FK_PART:
    if (u != NULL && (c = channel_of(b, ev->c, false)) != NULL)
      channel_part(c, u, ev->has_x ? ev->x : NULL, CHAT_FROM_NET);
    break;
  case FK_KICK:
    if (t != NULL && (c = channel_of(b, ev->c, false)) != NULL)
      channel_kick(c, u, t, ev->x ? ev->x : "", CHAT_FROM_NET);
    break;
  case FK_TOPIC:
    if (ev->x != NULL && (c = channel_of(b, ev->c, false)) != NULL) {
      char by[CHATD_NICK_MAX + 1];
      clean(by, sizeof by, ev->by, false);
      channel_topic(c, u, by, ev->x, ev->at ? strtoll(ev->at, NULL, 10) : 0,
                    CHAT_FROM_NET);
    }
    break;
  case FK_KEY:
    if ((c = channel_of(b, ev->c, false)) != NULL) {
      bool ok = !ev->has_x || (ev->x[0] != '\0' && !strchr(ev->x, ' '));
      if (ok)
        channel_mode1(c, u, ev->has_x ? '+' : '-', 'k',
                      ev->has_x ? ev->x : NULL, NULL, CHAT_FROM_NET);
    }
    break;
  case FK_OP:
    if (t != NULL && ev->v != NULL && (c = channel_of(b, ev->c, false)) != NULL)
      channel_mode1(c, u, ev->v[0] == '1' ? '+' : '-', 'o', NULL, t,
                    CHAT_FROM_NET);
    break;
  case FK_MSG:
    if (u != NULL && is_cmd(ev->m) && ev->x != NULL &&
        (c = channel_of(b, ev->c, false)) != NULL)
      channel_say(
          c, u, ev->m, ev->x, tags_ok(ev->g),
          ev->s != NULL && (ev->s[0] == '@' || ev->s[0] == '+') ? ev->s[0] : 0,
          CHAT_FROM_NET);
    break;
  case FK_PM:
    if (u != NULL && t != NULL && !t->remote && is_cmd(ev->m) && ev->x)
      user_say(t, u, ev->m, ev->x, tags_ok(ev->g), CHAT_FROM_NET);
    break;
  case FK_AWAY:
    if (u != NULL) {
      char msg[CHATD_AWAY_MAX + 1];
      clean(msg, sizeof msg, ev->x, true);
      user_set_away(u, ev->has_x ? msg : NULL, CHAT_FROM_NET);
    }
    break;
  case FK_UMODE:
    if (u != NULL && ev->x != NULL)
      user_set_modes(u, ev->x, CHAT_FROM_NET);
    break;
  case FK_SETNAME:
    if (u != NULL && ev->x != NULL && ev->x[0] != '\0') {
      char real[CHATD_REAL_MAX + 1];
      clean(real, sizeof real, ev->x, true);
      user_set_realname(u, real, CHAT_FROM_NET);
    }
    break;
  case FK_KILL:
    if (t != NULL && !t->remote && ev->x != NULL) {
      char why[256];
      clean(why, sizeof why, ev->x, true);
      user_kill(t, u, why, CHAT_FROM_NET);
    }
    break;
  case FK_WALLOPS:
    if (u != NULL && ev->x != NULL) {
      char text[IRC_LINE_MAX];
      clean(text, sizeof text, ev->x, true);
      user_wallops(u, text, CHAT_FROM_NET);
    }
    break;
  case FK_INVITE:
    if (u != NULL && t != NULL && (c = channel_of(b, ev->c, false)) != NULL)
      channel_invite(c, u, t, CHAT_FROM_NET);
    break;
  case FK_VOICE:
  case FK_CMODE:
  case FK_LIST:
    apply_mode(b, ev, u, t);
    break;
  }
  hark_unref(c);
}

/* ---- commands waiting to be up to date -------------------------------- */

/* Lets go the waiters whose target has been read (all: every one). A
 * waiter whose question is out is freed by its answer (on_seq), which
 * always comes (NULL when the connection goes). */
static void release_waiters(fed_bridge *b, bool all) {
  fed_wait **pp = &b->waiters;
  while (*pp != NULL) {
    fed_wait *w = *pp;
    if (all || (w->answered && w->target <= b->last_n)) {
      *pp = w->next;
      chat_claim *c = w->claim;
      w->done = true;
      if (!w->asked || w->answered)
        chat_free(w);
      claim_decide(c, true);
      pp = &b->waiters; /* deciding may have changed the list */
    } else {
      pp = &w->next;
    }
  }
}

static void on_seq(void *data, const rreply *r) {
  fed_wait *w = data;
  w->answered = true;
  if (w->done) { /* let go already */
    chat_free(w);
    return;
  }
  if (r == NULL) /* the link is down: release_waiters(all) follows */
    return;
  w->target = rreply_is(r, RREPLY_STRING) ? strtoull(r->str, NULL, 10) : 0;
  release_waiters(w->b, false);
}

static void ask_seq(fed_bridge *b, fed_wait *w) {
  char key[96];
  snprintf(key, sizeof key, "%sseq", b->prefix);
  const char *argv[] = {"GET", key};
  w->asked = redis_send(b->cmd, 2, argv, NULL, 0, on_seq, w) == 0;
  if (!w->asked)
    w->answered = true; /* cannot ask: answered from what is here */
}

void in_settle(fed_bridge *b, chat_claim *c) {
  fed_wait *w = chat_calloc(1, sizeof *w);
  if (w == NULL)
    return; /* answered from what is here */
  w->b = b;
  w->claim = c;
  claim_defer(c);
  w->next = b->waiters;
  b->waiters = w;
  if (b->state == LINK_UP)
    ask_seq(b, w);
  release_waiters(b, false);
}

void in_unpark(fed_bridge *b) {
  for (fed_wait *w = b->waiters; w != NULL; w = w->next)
    if (!w->asked && !w->answered)
      ask_seq(b, w);
  release_waiters(b, false);
}

/* ---- reading ---------------------------------------------------------- */

static void on_snapshot(void *data, const rreply *r) {
  fed_bridge *b = data;
  if (r == NULL || !b->resyncing)
    return;
  b->resyncing = false;
  if (!in_resync(b, r, 1, false, NULL)) {
    link_reset(b, rreply_is(r, RREPLY_ERROR) ? r->str : "bad snapshot");
    return;
  }
  b->resyncs++;
  log_warn("federation: resynchronized from a snapshot; reading from %s",
           b->last_id);
  release_waiters(b, false);
  issue(b);
}

static void resync(fed_bridge *b, uint64_t got) {
  log_warn("federation: events %llu to %llu are gone (beyond the stream's "
           "retention of %u): resynchronizing from a snapshot",
           (unsigned long long)b->last_n + 1, (unsigned long long)got - 1,
           b->opt->redis_retention);
  b->resyncing = true;
  const char *argv[] = {"snapshot"};
  if (fed_script(b, SCRIPT_MISC, 1, argv, NULL, on_snapshot, b) != 0)
    link_reset(b, "cannot ask for a snapshot");
}

static void on_xread(void *data, const rreply *r) {
  fed_bridge *b = data;
  b->xread_out = false;
  if (r == NULL || !b->reading || b->resyncing)
    return;
  if (rreply_is(r, RREPLY_ERROR)) {
    char why[300];
    snprintf(why, sizeof why, "XREAD: %s", r->str);
    link_reset(b, why);
    return;
  }
  const rreply *entries = rreply_at(rreply_at(r, 0), 1);
  for (size_t i = 0; entries != NULL && i < entries->elements; i++) {
    const rreply *e = entries->element[i];
    const char *id = str(rreply_at(e, 0));
    const rreply *fields = rreply_at(e, 1);
    fed_ev ev;
    if (id == NULL || fields == NULL || !parse(fields, &ev)) {
      log_warn("federation: a malformed stream entry skipped");
      continue;
    }
    if (ev.n != b->last_n + 1) {
      resync(b, ev.n);
      return;
    }
    snprintf(b->last_id, sizeof b->last_id, "%s", id);
    b->last_n = ev.n;
    apply(b, &ev);
    if (!b->reading) /* the link went down meanwhile */
      return;
  }
  release_waiters(b, false);
  issue(b);
}

static void issue(fed_bridge *b) {
  if (!b->reading || b->resyncing || b->xread_out || !b->rd_ready)
    return;
  char block[16], logkey[96];
  snprintf(block, sizeof block, "%u", b->block_ms);
  snprintf(logkey, sizeof logkey, "%slog", b->prefix);
  const char *argv[] = {"XREAD", "COUNT",   "1000", "BLOCK",
                        block,   "STREAMS", logkey, b->last_id};
  if (redis_send(b->rd, 8, argv, NULL, b->block_ms, on_xread, b) == 0)
    b->xread_out = true;
  else
    link_reset(b, "cannot read the stream");
}

void in_start(fed_bridge *b) {
  b->reading = true;
  issue(b);
}

void in_stop(fed_bridge *b) {
  b->reading = false;
  b->resyncing = false;
  release_waiters(b, true);
}

/* ---- snapshots ------------------------------------------------------- */

typedef struct chan_list {
  chat_channel **c;
  size_t n, cap;
} chan_list;

static void add_chan(void *obj, void *data) {
  chan_list *l = data;
  if (!fed_carries(((chat_channel *)obj)->name))
    return; /* '&': this server's alone */
  if (l->n == l->cap) {
    size_t ncap = l->cap ? l->cap * 2 : 16;
    chat_channel **nc = chat_realloc(l->c, ncap * sizeof *nc);
    if (nc == NULL)
      return;
    l->c = nc;
    l->cap = ncap;
  }
  l->c[l->n++] = hark_ref(obj);
}

/* Members of c that the network does not have (in: the snapshot's uids
 * of c, NULL for none) leave: another node's with a PART, ours (when not
 * fresh: their events were lost) with a KICK by the server. */
static void drop_absent(fed_bridge *b, chat_channel *c, fmap *in, bool fresh) {
  channel_count(c);
  size_t n = c->nmembers;
  chat_user **gone = n ? chat_calloc(n, sizeof *gone) : NULL;
  size_t k = 0;
  for (size_t i = 0; gone != NULL && i < n; i++) {
    chat_user *u = hark_weak_get(&c->members[i].who);
    if (u == NULL)
      continue;
    char item[sizeof((fed_out *)0)->item];
    fed_item(item, sizeof item, 'm', c->name, u->uid);
    if ((in != NULL && fmap_get(in, u->uid) != NULL) || pending_has(b, item) ||
        (!u->remote && fresh))
      hark_unref(u);
    else
      gone[k++] = u;
  }
  for (size_t i = 0; i < k; i++) {
    if (gone[i]->remote)
      channel_part(c, gone[i], "Network resync", CHAT_FROM_NET);
    else
      channel_kick(c, NULL, gone[i], "Network resync", CHAT_FROM_NET);
    hark_unref(gone[i]);
  }
  chat_free(gone);
}

/* The snapshot's flags, limit, voices and lists of c, where no change of
 * ours to them is on the way. */
static void resync_modes(fed_bridge *b, chat_channel *c, const rreply *ch) {
  const char *modes = str(rreply_at(ch, 7)), *limit = str(rreply_at(ch, 8));
  const rreply *voices = rreply_at(ch, 9), *lists = rreply_at(ch, 10);
  char item[sizeof((fed_out *)0)->item], letter[2] = "";
  if (modes == NULL || limit == NULL || !rreply_is(voices, RREPLY_ARRAY) ||
      !rreply_is(lists, RREPLY_ARRAY))
    return;
  static const char flags[] = "imnpst";
  for (const char *f = flags; *f; f++) {
    letter[0] = *f;
    bool want = strchr(modes, *f) != NULL;
    bool have = (c->modes & (1u << (f - flags))) != 0;
    fed_item(item, sizeof item, 'f', c->name, letter);
    if (want != have && !pending_has(b, item))
      channel_mode1(c, NULL, want ? '+' : '-', *f, NULL, NULL, CHAT_FROM_NET);
  }
  unsigned lim = (unsigned)strtoul(limit, NULL, 10);
  fed_item(item, sizeof item, 'f', c->name, "l");
  if (lim != c->limit && !pending_has(b, item))
    channel_mode1(c, NULL, lim ? '+' : '-', 'l', lim ? limit : NULL, NULL,
                  CHAT_FROM_NET);
  fmap v;
  if (fmap_init(&v) == 0) {
    for (size_t i = 0; i + 1 < voices->elements; i += 2)
      if (str(voices->element[i]) != NULL)
        fmap_put(&v, str(voices->element[i]), (void *)1, NULL);
    channel_count(c);
    for (size_t i = 0; i < c->nmembers; i++) {
      chat_user *u = hark_weak_get(&c->members[i].who);
      chat_membership *m = u != NULL ? user_membership(u, c) : NULL;
      bool want = u != NULL && fmap_get(&v, u->uid) != NULL;
      if (m != NULL) {
        fed_item(item, sizeof item, 'v', c->name, u->uid);
        if (m->voice != want && !pending_has(b, item))
          channel_mode1(c, NULL, want ? '+' : '-', 'v', NULL, u, CHAT_FROM_NET);
      }
      hark_unref(u);
    }
    fmap_free(&v, NULL);
  }
  /* masks: the snapshot's ("<letter><mask>" -> setter) in, the others out */
  fmap l;
  if (fmap_init(&l) != 0)
    return;
  for (size_t i = 0; i + 1 < lists->elements; i += 2) {
    const char *k = str(lists->element[i]);
    if (k == NULL || k[0] == '\0' || strchr("beI", k[0]) == NULL)
      continue;
    fmap_put(&l, k, (void *)1, NULL);
    fed_item(item, sizeof item, 'L', c->name, k);
    if (!pending_has(b, item))
      channel_mode1(c, NULL, '+', k[0], k + 1, NULL, CHAT_FROM_NET);
  }
  chat_masks *mine[] = {&c->bans, &c->excepts, &c->invex};
  for (size_t k = 0; k < 3; k++)
    for (size_t i = mine[k]->n; i-- > 0;) {
      char key[220];
      snprintf(key, sizeof key, "%c%s", "beI"[k], mine[k] -> v[i].mask);
      fed_item(item, sizeof item, 'L', c->name, key);
      if (fmap_get(&l, key) == NULL && !pending_has(b, item))
        channel_mode1(c, NULL, '-', key[0], key + 1, NULL, CHAT_FROM_NET);
    }
  fmap_free(&l, NULL);
}

static void resync_channel(fed_bridge *b, const rreply *ch, bool fresh,
                           fmap *listed) {
  const char *name = str(rreply_at(ch, 0)), *key = str(rreply_at(ch, 1));
  const char *haskey = str(rreply_at(ch, 2)), *topic = str(rreply_at(ch, 3));
  const char *by = str(rreply_at(ch, 4)), *at = str(rreply_at(ch, 5));
  const rreply *mem = rreply_at(ch, 6);
  if (name == NULL || key == NULL || haskey == NULL || topic == NULL ||
      by == NULL || at == NULL || !rreply_is(mem, RREPLY_ARRAY))
    return;
  char fold[CHATD_CHAN_MAX + 1], item[sizeof((fed_out *)0)->item];
  fed_fold(fold, sizeof fold, name);
  fmap_put(listed, fold, (void *)1, NULL);
  chat_channel *c = channel_of(b, name, mem->elements > 0);
  if (c == NULL) /* (our reference keeps it across the changes below) */
    return;
  fmap in;
  bool have_in = fmap_init(&in) == 0;
  for (size_t i = 0; i + 1 < mem->elements; i += 2) {
    const char *uid = str(mem->element[i]), *op = str(mem->element[i + 1]);
    chat_user *u = fed_user(b, uid);
    if (u == NULL || op == NULL)
      continue;
    if (have_in)
      fmap_put(&in, uid, (void *)1, NULL);
    if (!u->remote && fresh)
      continue; /* the burst says ours */
    fed_item(item, sizeof item, 'm', name, uid);
    if (pending_has(b, item))
      continue;
    if (!user_in_channel(u, c)) {
      channel_join(c, u, op[0] == '1', CHAT_FROM_NET);
      continue;
    }
    chat_membership *m = user_membership(u, c);
    fed_item(item, sizeof item, 'o', name, uid);
    if (m != NULL && m->op != (op[0] == '1') && !pending_has(b, item))
      channel_mode1(c, NULL, op[0] == '1' ? '+' : '-', 'o', NULL, u,
                    CHAT_FROM_NET);
  }
  if (have_in) {
    drop_absent(b, c, &in, fresh);
    fmap_free(&in, NULL);
  }
  fed_item(item, sizeof item, 't', name, NULL);
  if (!pending_has(b, item) && strcmp(c->topic, topic) != 0)
    channel_topic(c, NULL, by, topic, strtoll(at, NULL, 10), CHAT_FROM_NET);
  fed_item(item, sizeof item, 'k', name, NULL);
  const char *want = haskey[0] == '1' ? key : NULL;
  bool same = want == NULL ? c->key == NULL
                           : c->key != NULL && strcmp(c->key, want) == 0;
  if (!pending_has(b, item) && !same)
    channel_mode1(c, NULL, want ? '+' : '-', 'k', want, NULL, CHAT_FROM_NET);
  resync_modes(b, c, ch);
  hark_unref(c);
}

bool in_resync(fed_bridge *b, const rreply *r, size_t at, bool fresh,
               fmap *known) {
  const char *lastid = str(rreply_at(r, at));
  const rreply *n = rreply_at(r, at + 1), *users = rreply_at(r, at + 2),
               *chans = rreply_at(r, at + 3);
  if (lastid == NULL || !rreply_is(n, RREPLY_INTEGER) ||
      !rreply_is(users, RREPLY_ARRAY) || !rreply_is(chans, RREPLY_ARRAY))
    return false;
  fmap seen;
  if (fmap_init(&seen) != 0)
    return false;
  for (size_t i = 0; i + 9 < users->elements; i += 10) {
    const char *uid = str(users->element[i]);
    if (uid != NULL)
      fmap_put(&seen, uid, (void *)1, NULL);
  }
  /* users of other nodes the network no longer has */
  of_node all = {NULL, NULL, 0, 0};
  fmap_foreach(&b->remote, collect, &all);
  for (size_t i = 0; i < all.n; i++) {
    if (fmap_get(&seen, all.users[i]->uid) == NULL)
      quit_remote(b, all.users[i], "Network resync");
    hark_unref(all.users[i]);
  }
  chat_free(all.users);
  fmap_free(&seen, NULL);
  /* and those it has */
  for (size_t i = 0; i + 9 < users->elements; i += 10) {
    const char *f[9];
    for (int j = 0; j < 9; j++)
      f[j] = str(users->element[i + (size_t)j]);
    const rreply *away = users->element[i + 9];
    if (f[0] == NULL || f[1] == NULL || f[2] == NULL ||
        strcmp(f[1], b->node) == 0)
      continue;
    chat_user *u = fed_user(b, f[0]);
    if (u == NULL)
      u = introduce(b, f[0], f[1], f[2], f[3], f[4], f[5]);
    else if (u->remote)
      rename_remote(b, u, f[2]);
    if (u == NULL || !u->remote)
      continue;
    /* away, modes, account as the network has them */
    bool is_away = rreply_is(away, RREPLY_INTEGER) && away->integer == 1;
    char clean_away[CHATD_AWAY_MAX + 1];
    clean(clean_away, sizeof clean_away, f[6], true);
    if (is_away != (u->away != NULL) ||
        (is_away && strcmp(u->away, clean_away) != 0))
      user_set_away(u, is_away ? clean_away : NULL, CHAT_FROM_NET);
    if (f[7] != NULL) {
      char want[24];
      snprintf(want, sizeof want, "-Biow+%.16s", f[7]);
      user_set_modes(u, want, CHAT_FROM_NET);
    }
    if (f[8] != NULL)
      clean(u->account, sizeof u->account, f[8], false);
  }
  fmap listed;
  if (fmap_init(&listed) != 0)
    return false;
  for (size_t i = 0; i < chans->elements; i++)
    resync_channel(b, chans->element[i], fresh, &listed);
  /* channels the network does not have at all */
  chan_list local = {0};
  names_foreach(&b->srv->chans, add_chan, &local);
  for (size_t i = 0; i < local.n; i++) {
    char fold[CHATD_CHAN_MAX + 1];
    fed_fold(fold, sizeof fold, local.c[i]->name);
    if (fmap_get(&listed, fold) == NULL)
      drop_absent(b, local.c[i], NULL, fresh);
    else if (known != NULL)
      fmap_put(known, fold, (void *)1, NULL);
    hark_unref(local.c[i]);
  }
  chat_free(local.c);
  fmap_free(&listed, NULL);
  snprintf(b->last_id, sizeof b->last_id, "%s", lastid);
  b->last_n = (uint64_t)n->integer;
  return true;
}

#endif /* HARK_CHATD_REDIS */
