/* Channels: senders of the daemon's channel signals. A local member is in
 * a channel by having its receivers connected with the channel as sender,
 * weakly: when the member dies its receivers go by themselves. The member
 * list (local and remote users) is held weakly too, for NAMES and WHO;
 * members hold the channel strongly, so the channel dies with its last
 * member.
 *
 * The operations below are the only way a channel changes, for a command
 * and for federation alike: change, then one hark_send whose receivers
 * deliver (sessions) or carry the event on (federation). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chatd.h"

static void channel_finalize(void *obj) {
  chat_channel *c = obj;
  for (size_t i = 0; i < c->nmembers; i++)
    hark_weak_clear(&c->members[i].who);
  chat_free(c->members);
  chat_free(c->key);
  log_debug("channel %s gone", c->name);
  chat_free(c);
}

const hark_type chat_channel_type = {"chat_channel", sizeof(chat_channel),
                                     channel_finalize, NULL};

/* Runs as the channel dies (before hark_unref returns): the name is free
 * again at once, even if finalize is deferred behind a send in flight. */
static void on_channel_death(hark_notify *n, void *obj) {
  chat_channel *c = obj;
  names_del(&c->srv->chans, c->name, c);
}

chat_channel *channel_new(chat_server *srv, const char *name) {
  chat_channel *c = hark_new(&chat_channel_type);
  if (c == NULL)
    return NULL;
  c->srv = srv;
  snprintf(c->name, sizeof c->name, "%s", name);
  c->created = time(NULL);
  if (names_put(&srv->chans, name, c) != 0 ||
      hark_notify_add(&c->death, c, on_channel_death) != 0) {
    names_del(&srv->chans, name, c);
    hark_unref(c);
    return NULL;
  }
  return c;
}

chat_channel *channel_find(chat_server *srv, const char *name) {
  return names_get(&srv->chans, name);
}

/* ---- receivers: one per signal, all bound to a session ---------------- */

static int deliver(chat_session *s, chat_event *ev, bool skip_origin,
                   bool once) {
  if (s->closing || s->closed || ev->line == NULL ||
      (skip_origin && ev->origin == &s->u))
    return 0;
  if (once) { /* one QUIT or NICK per peer, however many channels shared */
    if (s->u.seen_seq == ev->seq)
      return 0;
    s->u.seen_seq = ev->seq;
  }
  session_send_buf(s, ev->line);
  return 0;
}

static int on_message(void *self, void *sender, void *args) {
  return deliver(self, args, true, false);
}
static int on_all(void *self, void *sender, void *args) {
  return deliver(self, args, false, false);
}
static int on_once(void *self, void *sender, void *args) {
  return deliver(self, args, true, true);
}

typedef struct binding {
  size_t sig_offset;
  hark_receiver_fn fn;
} binding;

/* JOIN, PART and KICK reach the member they are about too: a joiner is
 * connected before its JOIN, a leaver disconnected after its PART. */
static const binding bindings[] = {
    {offsetof(chat_server, sig_message), on_message},
    {offsetof(chat_server, sig_join), on_all},
    {offsetof(chat_server, sig_part), on_all},
    {offsetof(chat_server, sig_quit), on_once},
    {offsetof(chat_server, sig_nick), on_once},
    {offsetof(chat_server, sig_topic), on_all},
    {offsetof(chat_server, sig_mode), on_all},
    {offsetof(chat_server, sig_kick), on_all},
};
#define NBINDINGS (sizeof bindings / sizeof bindings[0])

static hark_signal *sig_of(chat_server *srv, const binding *b) {
  return *(hark_signal **)((char *)srv + b->sig_offset);
}

static int connect_session(chat_channel *c, chat_session *s) {
  for (size_t i = 0; i < NBINDINGS; i++) {
    int r = hark_connect(sig_of(c->srv, &bindings[i]), bindings[i].fn, s, c,
                         HARK_WEAK);
    if (r != 0) {
      while (i-- > 0)
        hark_disconnect(sig_of(c->srv, &bindings[i]), bindings[i].fn, s, c);
      return r;
    }
  }
  return 0;
}

static void disconnect_session(chat_channel *c, chat_session *s) {
  for (size_t i = 0; i < NBINDINGS; i++)
    hark_disconnect(sig_of(c->srv, &bindings[i]), bindings[i].fn, s, c);
}

/* ---- members ---------------------------------------------------------- */

static bool member_is(chat_member *m, chat_user *u) {
  void *who = hark_weak_get(&m->who);
  hark_unref(who);
  return who == u;
}

static void prune(chat_channel *c) {
  size_t j = 0;
  for (size_t i = 0; i < c->nmembers; i++) {
    void *who = hark_weak_get(&c->members[i].who);
    if (who != NULL) {
      hark_unref(who);
      if (i != j) {
        c->members[j] = c->members[i];
        c->members[i].who = (hark_weak)HARK_WEAK_INIT;
      }
      j++;
    } else {
      hark_weak_clear(&c->members[i].who);
    }
  }
  c->nmembers = j;
}

size_t channel_count(chat_channel *c) {
  prune(c);
  return c->nmembers;
}

chat_member *channel_member(chat_channel *c, chat_user *u) {
  for (size_t i = 0; i < c->nmembers; i++)
    if (member_is(&c->members[i], u))
      return &c->members[i];
  return NULL;
}

bool channel_visible(chat_channel *c, chat_user *u) {
  return c->key == NULL || user_in_channel(u, c);
}

/* Room for one more member in c and one more channel in u's list. */
static int reserve(chat_channel *c, chat_user *u) {
  if (c->nmembers == c->cap) {
    prune(c);
    if (c->nmembers == c->cap) {
      size_t ncap = c->cap ? c->cap * 2 : 8;
      chat_member *nm = chat_realloc(c->members, ncap * sizeof *nm);
      if (nm == NULL)
        return HARK_ENOMEM;
      memset(nm + c->cap, 0, (ncap - c->cap) * sizeof *nm);
      c->members = nm;
      c->cap = ncap;
    }
  }
  if (u->nchans == u->chans_cap) {
    size_t ncap = u->chans_cap ? u->chans_cap * 2 : 4;
    chat_channel **nc = chat_realloc(u->chans, ncap * sizeof *nc);
    if (nc == NULL)
      return HARK_ENOMEM;
    u->chans = nc;
    u->chans_cap = ncap;
  }
  return 0;
}

void channel_leave_quietly(chat_channel *c, chat_user *u) {
  chat_session *s = user_session(u);
  if (s != NULL)
    disconnect_session(c, s);
  for (size_t i = 0; i < c->nmembers; i++)
    if (member_is(&c->members[i], u)) {
      hark_weak_clear(&c->members[i].who);
      c->members[i] = c->members[--c->nmembers];
      c->members[c->nmembers].who = (hark_weak)HARK_WEAK_INIT;
      break;
    }
  for (size_t i = 0; i < u->nchans; i++)
    if (u->chans[i] == c) {
      u->chans[i] = u->chans[--u->nchans];
      hark_unref(c); /* the membership's reference: may end c */
      return;
    }
}

/* Sends ev on sig with c as sender; a send that fails calls nobody. */
static int emit(chat_channel *c, hark_signal *sig, chat_event *ev) {
  ev->chan = c;
  int r = hark_send(sig, c, ev);
  if (r < 0)
    log_warn("%s: %s dropped: %s", c->name, hark_signal_name(sig),
             hark_strerror(r));
  return r < 0 ? r : 0;
}

/* The line about u that u itself must get (its JOIN, its PART): made with
 * room in u's queue first, or the operation is refused. */
static chat_buf *line_for(chat_user *u, chat_buf *line) {
  chat_session *s = user_session(u);
  if (line != NULL && s != NULL && session_reserve(s, 1) != 0) {
    chat_buf_unref(line);
    return NULL;
  }
  return line;
}

int channel_join(chat_channel *c, chat_user *u, bool op, unsigned flags) {
  if (user_in_channel(u, c))
    return 0;
  char mask[IRC_LINE_MAX];
  user_mask(u, mask, sizeof mask);
  chat_buf *line = line_for(u, chat_buf_printf(":%s JOIN %s", mask, c->name));
  chat_session *s = user_session(u);
  if (line == NULL || reserve(c, u) != 0 ||
      (s != NULL && connect_session(c, s) != 0)) {
    chat_buf_unref(line);
    return HARK_ENOMEM;
  }
  chat_member *m = &c->members[c->nmembers++];
  m->op = op;
  hark_weak_set(&m->who, u);
  u->chans[u->nchans++] = hark_ref(c);
  chat_event ev = {0};
  ev.line = line;
  ev.origin = u;
  ev.op = op;
  ev.flags = flags;
  int r = emit(c, c->srv->sig_join, &ev);
  chat_buf_unref(line);
  if (r < 0) { /* nobody, here or on the network, saw it: undone */
    hark_ref(c);
    channel_leave_quietly(c, u);
    hark_unref(c);
  }
  return r;
}

int channel_part(chat_channel *c, chat_user *u, const char *reason,
                 unsigned flags) {
  if (!user_in_channel(u, c))
    return 0;
  char mask[IRC_LINE_MAX];
  user_mask(u, mask, sizeof mask);
  chat_buf *line = line_for(
      u, reason ? chat_buf_printf(":%s PART %s :%s", mask, c->name, reason)
                : chat_buf_printf(":%s PART %s", mask, c->name));
  if (line == NULL)
    return HARK_ENOMEM;
  chat_event ev = {0};
  ev.line = line;
  ev.origin = u;
  ev.text = reason;
  ev.flags = flags;
  hark_ref(c);
  int r = emit(c, c->srv->sig_part, &ev);
  chat_buf_unref(line);
  if (r == 0)
    channel_leave_quietly(c, u);
  hark_unref(c);
  return r;
}

int channel_kick(chat_channel *c, chat_user *by, chat_user *target,
                 const char *reason, unsigned flags) {
  if (!user_in_channel(target, c))
    return 0;
  char prefix[IRC_LINE_MAX];
  chat_prefix(c->srv, by, prefix, sizeof prefix);
  chat_buf *line = chat_buf_printf(":%s KICK %s %s :%s", prefix, c->name,
                                   target->nick, reason);
  if (line == NULL)
    return HARK_ENOMEM;
  chat_event ev = {0};
  ev.line = line;
  ev.origin = by;
  ev.target = target;
  ev.text = reason;
  ev.flags = flags;
  hark_ref(c);
  int r = emit(c, c->srv->sig_kick, &ev);
  chat_buf_unref(line);
  if (r == 0)
    channel_leave_quietly(c, target);
  hark_unref(c);
  return r;
}

int channel_topic(chat_channel *c, chat_user *by, const char *by_nick,
                  const char *topic, time_t at, unsigned flags) {
  char prefix[IRC_LINE_MAX];
  chat_prefix(c->srv, by, prefix, sizeof prefix);
  chat_buf *line = chat_buf_printf(":%s TOPIC %s :%s", prefix, c->name, topic);
  if (line == NULL)
    return HARK_ENOMEM;
  snprintf(c->topic, sizeof c->topic, "%s", topic);
  snprintf(c->topic_by, sizeof c->topic_by, "%s",
           by != NULL ? by->nick : by_nick);
  c->topic_at = at;
  chat_event ev = {0};
  ev.line = line;
  ev.origin = by;
  ev.text = c->topic;
  ev.flags = flags;
  int r = emit(c, c->srv->sig_topic, &ev);
  chat_buf_unref(line);
  return r;
}

int channel_mode_key(chat_channel *c, chat_user *by, const char *key,
                     unsigned flags) {
  char *copy = NULL;
  if (key != NULL && (copy = chat_strdup(key)) == NULL)
    return HARK_ENOMEM;
  char prefix[IRC_LINE_MAX];
  chat_prefix(c->srv, by, prefix, sizeof prefix);
  chat_buf *line =
      key ? chat_buf_printf(":%s MODE %s +k %s", prefix, c->name, key)
          : chat_buf_printf(":%s MODE %s -k *", prefix, c->name);
  if (line == NULL) {
    chat_free(copy);
    return HARK_ENOMEM;
  }
  chat_free(c->key);
  c->key = copy;
  chat_event ev = {0};
  ev.line = line;
  ev.origin = by;
  ev.what = key ? "+k" : "-k";
  ev.text = c->key;
  ev.flags = flags;
  int r = emit(c, c->srv->sig_mode, &ev);
  chat_buf_unref(line);
  return r;
}

int channel_mode_op(chat_channel *c, chat_user *by, chat_user *target, bool op,
                    unsigned flags) {
  chat_member *m = channel_member(c, target);
  if (m == NULL)
    return 0;
  char prefix[IRC_LINE_MAX];
  chat_prefix(c->srv, by, prefix, sizeof prefix);
  chat_buf *line = chat_buf_printf(":%s MODE %s %co %s", prefix, c->name,
                                   op ? '+' : '-', target->nick);
  if (line == NULL)
    return HARK_ENOMEM;
  m->op = op;
  chat_event ev = {0};
  ev.line = line;
  ev.origin = by;
  ev.target = target;
  ev.what = op ? "+o" : "-o";
  ev.op = op;
  ev.flags = flags;
  int r = emit(c, c->srv->sig_mode, &ev);
  chat_buf_unref(line);
  return r;
}

int channel_say(chat_channel *c, chat_user *from, const char *cmd,
                const char *text, unsigned flags) {
  char prefix[IRC_LINE_MAX];
  chat_prefix(c->srv, from, prefix, sizeof prefix);
  /* Formatted once; every member's queue shares this buffer. */
  chat_buf *line = chat_buf_printf(":%s %s %s :%s", prefix, cmd, c->name, text);
  if (line == NULL)
    return HARK_ENOMEM;
  chat_event ev = {0};
  ev.line = line;
  ev.origin = from;
  ev.what = cmd;
  ev.text = text;
  ev.flags = flags;
  ev.skip_origin = true;
  int r = emit(c, c->srv->sig_message, &ev);
  chat_buf_unref(line);
  return r;
}

/* ---- listings --------------------------------------------------------- */

void channel_names(chat_channel *c, chat_session *s) {
  char list[IRC_LINE_MAX];
  size_t len = 0;
  /* prefix ":server 353 nick = #chan :" must fit with the list */
  size_t room = IRC_BODY_MAX - strlen(s->u.srv->opt.name) - strlen(s->u.nick) -
                strlen(c->name) - 16;
  prune(c);
  for (size_t i = 0; i < c->nmembers; i++) {
    chat_user *m = hark_weak_get(&c->members[i].who);
    if (m == NULL)
      continue;
    size_t need = strlen(m->nick) + 2;
    if (len > 0 && len + need > room) {
      session_numeric(s, 353, "= %s :%s", c->name, list);
      len = 0;
    }
    len +=
        (size_t)snprintf(list + len, sizeof list - len, "%s%s%s",
                         len ? " " : "", c->members[i].op ? "@" : "", m->nick);
    hark_unref(m);
  }
  if (len > 0)
    session_numeric(s, 353, "= %s :%s", c->name, list);
  session_numeric(s, 366, "%s :End of /NAMES list.", c->name);
}

void channel_who(chat_channel *c, chat_session *s) {
  prune(c);
  for (size_t i = 0; i < c->nmembers; i++) {
    chat_user *m = hark_weak_get(&c->members[i].who);
    if (m == NULL)
      continue;
    /* hops: 0 here, 1 on another node (shown as the server) */
    session_numeric(s, 352, "%s %s %s %s %s H%s :%d %s", c->name,
                    m->user[0] ? m->user : "~u", m->host,
                    m->remote ? m->node : s->u.srv->opt.name, m->nick,
                    c->members[i].op ? "@" : "", m->remote ? 1 : 0,
                    m->realname);
    hark_unref(m);
  }
  session_numeric(s, 315, "%s :End of WHO list.", c->name);
}
