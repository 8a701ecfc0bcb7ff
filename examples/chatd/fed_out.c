/* hark-chatd federation: the receivers. Federation is one more receiver
 * of the daemon's signals, connected for every sender: what a local user
 * does becomes an event in the outbox (fed_link.c sends it to Redis).
 * What federation itself applies for other nodes carries CHAT_FROM_NET
 * and is not sent back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fed.h"

#ifdef HARK_CHATD_REDIS

/* ---- fmap -------------------------------------------------------------- */

struct fmap_entry {
  fmap_entry *next;
  void *value;
  char key[];
};

static size_t fhash(const char *s) {
  size_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

int fmap_init(fmap *m) {
  m->nslots = 64;
  m->count = 0;
  m->slots = chat_calloc(m->nslots, sizeof *m->slots);
  return m->slots != NULL ? 0 : HARK_ENOMEM;
}

void fmap_free(fmap *m, void (*value_free)(void *value)) {
  for (size_t i = 0; m->slots != NULL && i < m->nslots; i++) {
    fmap_entry *e = m->slots[i];
    while (e != NULL) {
      fmap_entry *next = e->next;
      if (value_free != NULL)
        value_free(e->value);
      chat_free(e);
      e = next;
    }
  }
  chat_free(m->slots);
  m->slots = NULL;
  m->count = 0;
}

static fmap_entry **ffind(fmap *m, const char *key) {
  fmap_entry **pp = &m->slots[fhash(key) & (m->nslots - 1)];
  while (*pp != NULL && strcmp((*pp)->key, key) != 0)
    pp = &(*pp)->next;
  return pp;
}

void *fmap_get(fmap *m, const char *key) {
  fmap_entry *e = *ffind(m, key);
  return e != NULL ? e->value : NULL;
}

static void fgrow(fmap *m) {
  size_t ns = m->nslots * 2;
  fmap_entry **slots = chat_calloc(ns, sizeof *slots);
  if (slots == NULL)
    return; /* longer chains, still right */
  for (size_t i = 0; i < m->nslots; i++)
    for (fmap_entry *e = m->slots[i], *next; e != NULL; e = next) {
      next = e->next;
      size_t h = fhash(e->key) & (ns - 1);
      e->next = slots[h];
      slots[h] = e;
    }
  chat_free(m->slots);
  m->slots = slots;
  m->nslots = ns;
}

int fmap_put(fmap *m, const char *key, void *value, void **old) {
  fmap_entry **pp = ffind(m, key);
  if (old != NULL)
    *old = *pp != NULL ? (*pp)->value : NULL;
  if (*pp == NULL) {
    size_t len = strlen(key);
    fmap_entry *e = chat_calloc(1, sizeof *e + len + 1);
    if (e == NULL)
      return HARK_ENOMEM;
    memcpy(e->key, key, len + 1);
    *pp = e;
    if (++m->count > m->nslots)
      fgrow(m);
    pp = ffind(m, key);
  }
  (*pp)->value = value;
  return 0;
}

void *fmap_del(fmap *m, const char *key) {
  fmap_entry **pp = ffind(m, key), *e = *pp;
  if (e == NULL)
    return NULL;
  void *v = e->value;
  *pp = e->next;
  chat_free(e);
  m->count--;
  return v;
}

void fmap_foreach(fmap *m, void (*fn)(const char *key, void *value, void *d),
                  void *d) {
  for (size_t i = 0; i < m->nslots; i++)
    for (fmap_entry *e = m->slots[i]; e != NULL; e = e->next)
      fn(e->key, e->value, d);
}

/* ---- users and items ------------------------------------------------- */

void fed_fold(char *buf, size_t cap, const char *name) {
  irc_fold(buf, name, cap);
}

chat_user *fed_user(fed_bridge *b, const char *uid) {
  if (uid == NULL || uid[0] == '\0')
    return NULL;
  chat_user *u = names_get(&b->uids, uid);
  hark_unref(u); /* borrowed: the remote map or a session holds it */
  return u;
}

void fed_forget(fed_bridge *b, chat_user *u) {
  names_del(&b->uids, u->uid, u);
  if (u->remote && fmap_get(&b->remote, u->uid) == u)
    hark_unref(fmap_del(&b->remote, u->uid));
}

void fed_item(char *buf, size_t cap, char what, const char *chan,
              const char *uid) {
  char f[CHATD_CHAN_MAX + 1];
  fed_fold(f, sizeof f, chan);
  snprintf(buf, cap, "%c %s %.220s", what, f, uid ? uid : "");
}

/* Counts of this node's events in flight per item: a remote event on an
 * item with ours in flight is older than ours in the stream's order, and
 * ours decides (see fed_in.c). */
void pending_add(fed_bridge *b, const char *item, int delta) {
  if (item[0] == '\0')
    return;
  uintptr_t n = (uintptr_t)fmap_get(&b->pending, item);
  if (delta < 0 && n <= (uintptr_t)-delta) {
    fmap_del(&b->pending, item);
    return;
  }
  if (fmap_put(&b->pending, item, (void *)(n + (uintptr_t)(intptr_t)delta),
               NULL) != 0)
    log_warn("federation: out of memory: item %s not tracked", item);
}

bool pending_has(fed_bridge *b, const char *item) {
  return fmap_get(&b->pending, item) != NULL;
}

/* ---- receivers --------------------------------------------------------- */

/* A user's modes as letters ("Biow" order), for the network's state. */
static void umode_letters(unsigned modes, char *buf, size_t cap) {
  size_t n = 0;
  if ((modes & UMODE_B) && n + 1 < cap)
    buf[n++] = 'B';
  if ((modes & UMODE_I) && n + 1 < cap)
    buf[n++] = 'i';
  if ((modes & UMODE_O) && n + 1 < cap)
    buf[n++] = 'o';
  if ((modes & UMODE_W) && n + 1 < cap)
    buf[n++] = 'w';
  buf[n] = '\0';
}

#define F(n, v) ((fed_field){(n), (v), SIZE_MAX})

/* Whether federation carries this event: ours, not applied for another
 * node, not muted (a resync rebuilding what a burst will say). */
static bool ours(fed_bridge *b, chat_event *ev) {
  return !(ev->flags & CHAT_FROM_NET) && !b->muted &&
         b->state != LINK_STOPPED &&
         (ev->chan == NULL || fed_carries(ev->chan->name));
}

static const char *uid_of(chat_user *u) { return u != NULL ? u->uid : ""; }

static int out_join(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  if (!ours(b, ev) || ev->origin == NULL || ev->origin->remote)
    return 0;
  char fold[CHATD_CHAN_MAX + 1], item[sizeof((fed_out *)0)->item];
  fed_fold(fold, sizeof fold, ev->chan->name);
  fed_item(item, sizeof item, 'm', ev->chan->name, ev->origin->uid);
  fed_field f[] = {F("u", ev->origin->uid), F("c", ev->chan->name),
                   F("op", ev->op ? "1" : "0"), F("_chan", fold)};
  out_push(b, FK_JOIN, f, 4, item, NULL, NULL, ev->origin);
  return 0;
}

static int out_part(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  if (!ours(b, ev) || ev->origin == NULL || ev->origin->remote)
    return 0;
  char fold[CHATD_CHAN_MAX + 1], item[sizeof((fed_out *)0)->item];
  fed_fold(fold, sizeof fold, ev->chan->name);
  fed_item(item, sizeof item, 'm', ev->chan->name, ev->origin->uid);
  fed_field f[] = {F("u", ev->origin->uid), F("c", ev->chan->name),
                   F("_chan", fold), F("x", ev->text)};
  out_push(b, FK_PART, f, ev->text != NULL ? 4 : 3, item, NULL, NULL,
           ev->origin);
  return 0;
}

static int out_kick(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  if (!ours(b, ev))
    return 0;
  char fold[CHATD_CHAN_MAX + 1], item[sizeof((fed_out *)0)->item];
  fed_fold(fold, sizeof fold, ev->chan->name);
  fed_item(item, sizeof item, 'm', ev->chan->name, ev->target->uid);
  fed_field f[] = {F("u", uid_of(ev->origin)), F("c", ev->chan->name),
                   F("t", ev->target->uid), F("x", ev->text), F("_chan", fold)};
  out_push(b, FK_KICK, f, 5, item, NULL, NULL, ev->origin);
  return 0;
}

static int out_topic(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  if (!ours(b, ev))
    return 0;
  chat_channel *c = ev->chan;
  char fold[CHATD_CHAN_MAX + 1], item[sizeof((fed_out *)0)->item], at[24];
  fed_fold(fold, sizeof fold, c->name);
  fed_item(item, sizeof item, 't', c->name, NULL);
  snprintf(at, sizeof at, "%lld", (long long)c->topic_at);
  fed_field f[] = {
      F("u", uid_of(ev->origin)), F("c", c->name), F("x", c->topic),
      F("by", c->topic_by),       F("at", at),     F("_chan", fold)};
  out_push(b, FK_TOPIC, f, 6, item, NULL, NULL, ev->origin);
  return 0;
}

/* One event per change: each is its own item (a key, an operator, a flag,
 * a mask), so that the stream's order decides each on its own. */
static void out_change(fed_bridge *b, chat_event *ev,
                       const chat_mode_change *m) {
  chat_channel *c = ev->chan;
  char fold[CHATD_CHAN_MAX + 1], item[sizeof((fed_out *)0)->item];
  char letter[2] = {m->mode, '\0'}, dir[2] = {m->dir, '\0'};
  const char *by = uid_of(ev->origin);
  fed_fold(fold, sizeof fold, c->name);
  switch (m->mode) {
  case 'k': {
    fed_item(item, sizeof item, 'k', c->name, NULL);
    fed_field f[] = {F("u", by), F("c", c->name), F("_chan", fold),
                     F("x", m->arg)};
    out_push(b, FK_KEY, f, m->dir == '+' ? 4 : 3, item, NULL, NULL, ev->origin);
    break;
  }
  case 'o':
  case 'v': {
    fed_item(item, sizeof item, m->mode, c->name, m->target->uid);
    fed_field f[] = {F("u", by), F("c", c->name), F("t", m->target->uid),
                     F("v", m->dir == '+' ? "1" : "0"), F("_chan", fold)};
    out_push(b, m->mode == 'o' ? FK_OP : FK_VOICE, f, 5, item, NULL, NULL,
             ev->origin);
    break;
  }
  case 'b':
  case 'e':
  case 'I': {
    char what[220];
    snprintf(what, sizeof what, "%c%s", m->mode, m->arg);
    fed_item(item, sizeof item, 'L', c->name, what);
    fed_field f[] = {F("u", by),  F("c", c->name), F("m", letter),
                     F("v", dir), F("x", m->arg),  F("_chan", fold),
                     F("by", "")};
    char setter[IRC_LINE_MAX];
    chat_prefix(b->srv, ev->origin, setter, sizeof setter);
    f[6].value = setter;
    out_push(b, FK_LIST, f, 7, item, NULL, NULL, ev->origin);
    break;
  }
  default: { /* imnpst l */
    fed_item(item, sizeof item, 'f', c->name, letter);
    fed_field f[] = {F("u", by),  F("c", c->name),  F("m", letter),
                     F("v", dir), F("_chan", fold), F("x", m->arg)};
    out_push(b, FK_CMODE, f, m->arg != NULL && m->dir == '+' ? 6 : 5, item,
             NULL, NULL, ev->origin);
  }
  }
}

static int out_mode(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  if (!ours(b, ev))
    return 0;
  for (size_t i = 0; i < ev->nmodes; i++)
    out_change(b, ev, &ev->modes[i]);
  return 0;
}

static int out_invite(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  if (!ours(b, ev) || ev->origin == NULL)
    return 0;
  fed_field f[] = {F("u", ev->origin->uid), F("t", ev->target->uid),
                   F("c", ev->chan->name)};
  out_push(b, FK_INVITE, f, 3, "", NULL, NULL, ev->origin);
  return 0;
}

static int out_message(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  if (!ours(b, ev) || ev->origin == NULL)
    return 0;
  char status[2] = {ev->status, '\0'};
  fed_field f[] = {F("u", ev->origin->uid),
                   F("c", ev->chan->name),
                   F("m", ev->what),
                   F("x", ev->text),
                   F("g", ev->client_tags ? ev->client_tags : ""),
                   F("s", status)};
  out_push(b, FK_MSG, f, 6, "", NULL, NULL, NULL);
  return 0;
}

static int out_private(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  /* a user here gets it from its own receiver */
  if (!ours(b, ev) || ev->origin == NULL || !ev->target->remote)
    return 0;
  fed_field f[] = {F("u", ev->origin->uid), F("t", ev->target->uid),
                   F("m", ev->what), F("x", ev->text),
                   F("g", ev->client_tags ? ev->client_tags : "")};
  out_push(b, FK_PM, f, 5, "", NULL, NULL, NULL);
  return 0;
}

/* An unregistered user's claim goes (it never reached the stream): in
 * the outbox, so that it is not forgotten while Redis is away. */
static void release(fed_bridge *b, const char *nick, const char *uid) {
  if (nick[0] == '\0')
    return;
  char fold[CHATD_NICK_MAX + 1];
  fed_fold(fold, sizeof fold, nick);
  fed_field f[] = {F("u", uid), F("_fold", fold)};
  out_push(b, FK_RELEASE, f, 2, "", NULL, NULL, NULL);
}

static int out_user(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_event *ev = args;
  chat_user *u = ev->origin;
  if (!ours(b, ev) || u == NULL || u->remote)
    return 0;
  char fold[CHATD_NICK_MAX + 1];
  fed_fold(fold, sizeof fold, u->nick);
  if (ev->kind == USER_REGISTERED) {
    if (names_put(&b->uids, u->uid, u) != 0)
      log_warn("federation: out of memory: %s unknown to the apply side",
               u->nick);
    fed_field f[] = {F("u", u->uid),         F("nick", u->nick),
                     F("user", u->user),     F("host", u->host),
                     F("real", u->realname), F("_fold", fold),
                     F("acct", u->account)};
    out_push(b, FK_INTRO, f, 7, "", u, u->nick, u);
  } else if (ev->kind == USER_NICK && u->registered) {
    fed_field f[] = {F("u", u->uid), F("nick", u->nick), F("_fold", fold)};
    out_push(b, FK_NICK, f, 3, "", u, u->nick, u);
  } else if (ev->kind == USER_NICK) {
    if (irc_casecmp(ev->text, u->nick) != 0)
      release(b, ev->text, u->uid);
  } else if (ev->kind == USER_QUIT && u->registered) {
    fed_field f[] = {F("u", u->uid), F("x", ev->text)};
    out_push(b, FK_QUIT, f, 2, "", NULL, NULL, NULL);
    names_del(&b->uids, u->uid, u);
  } else if (ev->kind == USER_QUIT) {
    release(b, u->nick, u->uid);
  } else if (!u->registered) {
    return 0;
  } else if (ev->kind == USER_AWAY) {
    fed_field f[] = {F("u", u->uid), F("x", ev->text)};
    out_push(b, FK_AWAY, f, ev->text != NULL ? 2 : 1, "", NULL, NULL, u);
  } else if (ev->kind == USER_MODE || ev->kind == USER_SETNAME ||
             ev->kind == USER_WALLOPS) {
    char modes[16];
    umode_letters(u->modes, modes, sizeof modes);
    fed_field f[] = {F("u", u->uid), F("x", ev->text), F("all", modes)};
    int kind = ev->kind == USER_MODE      ? FK_UMODE
               : ev->kind == USER_SETNAME ? FK_SETNAME
                                          : FK_WALLOPS;
    out_push(b, kind, f, kind == FK_UMODE ? 3 : 2, "", NULL, NULL, u);
  } else if (ev->kind == USER_KILLED && ev->target != NULL &&
             ev->target->remote) {
    fed_field f[] = {F("u", u->uid), F("t", ev->target->uid), F("x", ev->text)};
    out_push(b, FK_KILL, f, 3, "", NULL, NULL, u);
  }
  return 0;
}

/* ---- nick claims: the network decides ------------------------------- */

static void on_claim(void *data, const rreply *r) {
  claim_req *q = data;
  /* no answer (Redis lost meanwhile): granted here; the user's intro or
   * NICK event settles it with the network later */
  bool granted = !rreply_is(r, RREPLY_INTEGER) || r->integer != 0;
  claim_decide(q->claim, granted);
  /* granted but not taken after all (the user left, or took something
   * else meanwhile): the claim must not stay */
  chat_user *u = hark_weak_get(&q->who);
  if (granted && (u == NULL || irc_casecmp(u->nick, q->nick) != 0))
    release(q->b, q->nick, q->uid);
  hark_unref(u);
  hark_weak_clear(&q->who);
  chat_free(q);
}

static void claim_send(fed_bridge *b, claim_req *q) {
  char fold[CHATD_NICK_MAX + 1];
  fed_fold(fold, sizeof fold, q->nick);
  const char *argv[] = {"claim", fold, q->uid};
  if (fed_script(b, SCRIPT_MISC, 3, argv, NULL, on_claim, q) != 0)
    on_claim(q, NULL); /* cannot ask: granted here */
}

void out_unpark(fed_bridge *b, bool up) {
  claim_req *q = b->parked;
  b->parked = NULL;
  while (q != NULL) {
    claim_req *next = q->next;
    q->next = NULL;
    if (up)
      claim_send(b, q);
    else
      on_claim(q, NULL);
    q = next;
  }
}

static int out_claim(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  chat_claim *c = args;
  chat_user *u = sender;
  if (b->state == LINK_DOWN || b->state == LINK_STOPPED || b->stopping)
    return 0; /* Redis is away: decided here, granted */
  claim_req *q = chat_calloc(1, sizeof *q);
  if (q == NULL)
    return 0;
  q->b = b;
  q->claim = c;
  hark_weak_set(&q->who, u);
  snprintf(q->nick, sizeof q->nick, "%s", c->nick);
  snprintf(q->uid, sizeof q->uid, "%s", u->uid);
  claim_defer(c);
  if (b->state == LINK_UP) {
    claim_send(b, q);
  } else { /* coming up: asked once it is */
    q->next = b->parked;
    b->parked = q;
  }
  return 0;
}

static int out_settle(void *self, void *sender, void *args) {
  fed_bridge *b = self;
  if (b->state != LINK_DOWN && b->state != LINK_STOPPED && !b->stopping)
    in_settle(b, args);
  return 0; /* else: this node's view is all there is */
}

typedef struct out_binding {
  size_t off;
  hark_receiver_fn fn;
} out_binding;

static const out_binding outs[] = {
    {offsetof(chat_server, sig_message), out_message},
    {offsetof(chat_server, sig_join), out_join},
    {offsetof(chat_server, sig_part), out_part},
    {offsetof(chat_server, sig_kick), out_kick},
    {offsetof(chat_server, sig_topic), out_topic},
    {offsetof(chat_server, sig_mode), out_mode},
    {offsetof(chat_server, sig_private), out_private},
    {offsetof(chat_server, sig_user), out_user},
    {offsetof(chat_server, sig_invite), out_invite},
    {offsetof(chat_server, sig_claim), out_claim},
    {offsetof(chat_server, sig_settle), out_settle},
};
#define NOUTS (sizeof outs / sizeof outs[0])

static hark_signal *sig_at(chat_server *srv, size_t off) {
  return *(hark_signal **)((char *)srv + off);
}

/* The bridge is one more receiver, of every sender (NULL); the server
 * holds it, the signals hold it weakly. */
int out_connect(fed_bridge *b) {
  for (size_t i = 0; i < NOUTS; i++)
    if (hark_connect(sig_at(b->srv, outs[i].off), outs[i].fn, b, NULL,
                     HARK_WEAK) != 0) {
      out_disconnect(b);
      return HARK_ENOMEM;
    }
  return 0;
}

void out_disconnect(fed_bridge *b) {
  for (size_t i = 0; i < NOUTS; i++)
    hark_disconnect(sig_at(b->srv, outs[i].off), outs[i].fn, b, NULL);
}

/* ---- burst: everything of ours, for a network that has none of it ---- */

typedef struct burst_ctx {
  fed_bridge *b;
  fmap *known; /* folded channels the network already has */
} burst_ctx;

static void burst_channel(void *obj, void *data) {
  chat_channel *c = obj;
  burst_ctx *x = data;
  char fold[CHATD_CHAN_MAX + 1];
  if (!fed_carries(c->name))
    return;
  fed_fold(fold, sizeof fold, c->name);
  if (x->known != NULL && fmap_get(x->known, fold) != NULL)
    return; /* the network's topic and key hold (in_resync took them) */
  bool local = false;
  channel_count(c);
  for (size_t i = 0; i < c->nmembers && !local; i++) {
    chat_user *m = hark_weak_get(&c->members[i].who);
    local = m != NULL && !m->remote;
    hark_unref(m);
  }
  if (!local)
    return;
  chat_event ev = {0};
  ev.chan = c;
  if (c->topic[0] != '\0')
    out_topic(x->b, c, &ev);
  /* the modes as changes from a fresh channel's (+nt) */
  static const char flags[] = "imnpst";
  for (const char *f = flags; *f; f++) {
    unsigned bit = 1u << (f - flags); /* CMODE_I... in this order */
    bool on = (c->modes & bit) != 0, dflt = *f == 'n' || *f == 't';
    if (on != dflt) {
      chat_mode_change m = {on ? '+' : '-', *f, NULL, NULL};
      out_change(x->b, &ev, &m);
    }
  }
  char num[16];
  chat_mode_change key = {'+', 'k', c->key, NULL};
  if (c->key != NULL)
    out_change(x->b, &ev, &key);
  if (c->limit != 0) {
    snprintf(num, sizeof num, "%u", c->limit);
    chat_mode_change l = {'+', 'l', num, NULL};
    out_change(x->b, &ev, &l);
  }
  const chat_masks *lists[] = {&c->bans, &c->excepts, &c->invex};
  const char letters[] = "beI";
  for (size_t k = 0; k < 3; k++)
    for (size_t i = 0; i < lists[k]->n; i++) {
      chat_mode_change m = {'+', letters[k], lists[k]->v[i].mask, NULL};
      out_change(x->b, &ev, &m);
    }
}

void fed_burst(fed_bridge *b, fmap *known) {
  chat_server *srv = b->srv;
  for (chat_session *s = srv->sessions; s != NULL; s = s->next) {
    if (!s->u.registered || s->closing || s->closed)
      continue;
    chat_event ev = {0};
    ev.origin = &s->u;
    ev.kind = USER_REGISTERED;
    out_user(b, s, &ev);
    if (s->u.away != NULL) {
      ev.kind = USER_AWAY;
      ev.text = s->u.away;
      out_user(b, s, &ev);
    }
    if (s->u.modes != 0) {
      char modes[16] = "+";
      umode_letters(s->u.modes, modes + 1, sizeof modes - 1);
      ev.kind = USER_MODE;
      ev.text = modes;
      out_user(b, s, &ev);
    }
    for (size_t i = 0; i < s->u.nchans; i++) {
      chat_channel *c = s->u.chans[i].chan;
      if (!fed_carries(c->name))
        continue;
      chat_event j = {0};
      j.origin = &s->u;
      j.chan = c;
      j.op = s->u.chans[i].op;
      out_join(b, c, &j);
      if (s->u.chans[i].voice) {
        chat_mode_change v = {'+', 'v', NULL, &s->u};
        out_change(b, &j, &v);
      }
    }
  }
  burst_ctx x = {b, known};
  names_foreach(&srv->chans, burst_channel, &x);
}

#endif /* HARK_CHATD_REDIS */
