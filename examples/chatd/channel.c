/* Channels: senders of the daemon's channel signals. A local member is in
 * a channel by having its receivers connected with the channel as sender,
 * weakly: when the member dies its receivers go by themselves. The member
 * list (local and remote users) is held weakly too, for NAMES and WHO;
 * members hold the channel strongly (with their status in it), so the
 * channel dies with its last member.
 *
 * The operations below are the only way a channel changes, for a command
 * and for federation alike: change, then one hark_send whose receivers
 * deliver (sessions) or carry the event on (federation). Modes are in
 * chanmodes.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chatd.h"

static void channel_finalize(void *obj) {
  chat_channel *c = obj;
  for (size_t i = 0; i < c->nmembers; i++)
    hark_weak_clear(&c->members[i].who);
  chat_free(c->members);
  for (size_t i = 0; i < c->ninvites; i++)
    hark_weak_clear(&c->invites[i]);
  chat_free(c->invites);
  channel_masks_free(&c->bans);
  channel_masks_free(&c->excepts);
  channel_masks_free(&c->invex);
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
  c->modes = CMODE_N | CMODE_T; /* as most networks start them */
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

/* A STATUSMSG reaches the members with at least that status. */
static bool status_ok(chat_session *s, chat_event *ev) {
  chat_membership *m = user_membership(&s->u, ev->chan);
  return m != NULL && (m->op || (ev->status == '+' && m->voice));
}

static int deliver(chat_session *s, chat_event *ev, bool skip_origin,
                   bool once) {
  if (s->closing || s->closed)
    return 0;
  bool self = ev->origin == &s->u;
  if (self && skip_origin && !(ev->echo && (s->caps & CAP_ECHO)))
    return 0;
  if (ev->need_cap != 0 && !(s->caps & ev->need_cap))
    return 0;
  if (ev->status != 0 && !self && !status_ok(s, ev))
    return 0;
  if (once) { /* one QUIT or NICK per peer, however many channels shared */
    if (s->u.seen_seq == ev->seq)
      return 0;
    s->u.seen_seq = ev->seq;
  }
  chat_buf *b =
      s->caps & CAP_TAGGED ? event_line(s->u.srv, ev, s->caps) : ev->line;
  if (b == NULL)
    return 0;
  /* What s itself did is a reply to its command (labeled-response). */
  if (self)
    session_send_buf(s, b);
  else
    session_deliver(s, b);
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
    {offsetof(chat_server, sig_peers), on_once},
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

static bool weak_is(hark_weak *w, chat_user *u) {
  void *who = hark_weak_get(w);
  hark_unref(who);
  return who == u;
}

static bool member_is(chat_member *m, chat_user *u) {
  return weak_is(&m->who, u);
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

bool channel_listed(chat_channel *c, chat_user *u) {
  return !(c->modes & (CMODE_S | CMODE_P)) || user_in_channel(u, c);
}

bool channel_visible(chat_channel *c, chat_user *u) {
  return channel_listed(c, u);
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
    chat_membership *nc = chat_realloc(u->chans, ncap * sizeof *nc);
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
    if (u->chans[i].chan == c) {
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
  event_release(ev);
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
  chat_buf *alt =
      chat_buf_printf(":%s JOIN %s %s :%s", mask, c->name,
                      u->account[0] ? u->account : "*", u->realname);
  chat_session *s = user_session(u);
  if (line == NULL || alt == NULL || reserve(c, u) != 0 ||
      (s != NULL && connect_session(c, s) != 0)) {
    chat_buf_unref(line);
    chat_buf_unref(alt);
    return HARK_ENOMEM;
  }
  channel_take_invite(c, u, true);
  chat_member *m = &c->members[c->nmembers++];
  hark_weak_set(&m->who, u);
  u->chans[u->nchans++] = (chat_membership){hark_ref(c), op, false};
  chat_event ev = {0};
  ev.line = line;
  ev.alt = alt;
  ev.origin = u;
  ev.op = op;
  ev.flags = flags;
  int r = emit(c, c->srv->sig_join, &ev);
  chat_buf_unref(line);
  chat_buf_unref(alt);
  if (r < 0) { /* nobody, here or on the network, saw it: undone */
    hark_ref(c);
    channel_leave_quietly(c, u);
    hark_unref(c);
    return r;
  }
  if (u->away != NULL) { /* away-notify: who joins away says so */
    chat_event aw = {0};
    aw.line = chat_buf_printf(":%s AWAY :%s", mask, u->away);
    aw.origin = u;
    aw.skip_origin = true;
    aw.need_cap = CAP_AWAY_NOTIFY;
    aw.seq = ++c->srv->seq;
    aw.flags = flags;
    if (aw.line != NULL)
      emit(c, c->srv->sig_peers, &aw);
    chat_buf_unref(aw.line);
  }
  return 0;
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
  chat_buf *line = chat_buf_printf(":%s KICK %s %s :%.*s", prefix, c->name,
                                   target->nick, CHATD_KICK_MAX, reason);
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
  chat_buf *line = chat_buf_printf(":%s TOPIC %s :%.*s", prefix, c->name,
                                   CHATD_TOPIC_MAX, topic);
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

int channel_say(chat_channel *c, chat_user *from, const char *cmd,
                const char *text, const char *tags, char status,
                unsigned flags) {
  char prefix[IRC_LINE_MAX];
  chat_prefix(c->srv, from, prefix, sizeof prefix);
  char target[CHATD_CHAN_MAX + 2];
  const char *to = c->name;
  if (status != 0) { /* STATUSMSG: @#chan, +#chan */
    snprintf(target, sizeof target, "%c%s", status, c->name);
    to = target;
  }
  bool tagmsg = strcmp(cmd, "TAGMSG") == 0;
  /* Formatted once; every member's queue shares this buffer. */
  chat_buf *line =
      tagmsg ? chat_buf_printf(":%s TAGMSG %s", prefix, to)
             : chat_buf_printf(":%s %s %s :%s", prefix, cmd, to, text);
  if (line == NULL)
    return HARK_ENOMEM;
  chat_event ev = {0};
  if (tagmsg)
    ev.bare = line;
  else
    ev.line = line;
  ev.origin = from;
  ev.what = cmd;
  ev.text = text;
  ev.flags = flags;
  ev.skip_origin = true;
  ev.echo = true;
  ev.status = status;
  ev.msgid = from != NULL;
  ev.client_tags = tags != NULL && tags[0] != '\0' ? tags : NULL;
  int r = emit(c, c->srv->sig_message, &ev);
  chat_buf_unref(line);
  return r;
}

/* ---- invitations -------------------------------------------------------- */

#define INVITES_MAX 64

bool channel_take_invite(chat_channel *c, chat_user *u, bool take) {
  for (size_t i = 0; i < c->ninvites; i++)
    if (weak_is(&c->invites[i], u)) {
      if (take) {
        hark_weak_clear(&c->invites[i]);
        c->invites[i] = c->invites[--c->ninvites];
        c->invites[c->ninvites] = (hark_weak)HARK_WEAK_INIT;
      }
      return true;
    }
  return false;
}

/* Remembers that u may join c; the oldest invitation goes beyond
 * INVITES_MAX, and those of users gone first. */
static int remember_invite(chat_channel *c, chat_user *u) {
  if (channel_take_invite(c, u, false))
    return 0;
  size_t j = 0;
  for (size_t i = 0; i < c->ninvites; i++) {
    void *who = hark_weak_get(&c->invites[i]);
    hark_unref(who);
    if (who != NULL)
      c->invites[j++] = c->invites[i];
    else
      hark_weak_clear(&c->invites[i]);
  }
  c->ninvites = j;
  if (c->ninvites == INVITES_MAX) {
    hark_weak_clear(&c->invites[0]);
    memmove(c->invites, c->invites + 1, --c->ninvites * sizeof *c->invites);
  }
  hark_weak *ni = chat_realloc(c->invites, (c->ninvites + 1) * sizeof *ni);
  if (ni == NULL)
    return HARK_ENOMEM;
  c->invites = ni;
  c->invites[c->ninvites] = (hark_weak)HARK_WEAK_INIT;
  hark_weak_set(&c->invites[c->ninvites++], u);
  return 0;
}

int channel_invite(chat_channel *c, chat_user *by, chat_user *target,
                   unsigned flags) {
  if (remember_invite(c, target) != 0)
    return HARK_ENOMEM;
  char prefix[IRC_LINE_MAX];
  chat_prefix(c->srv, by, prefix, sizeof prefix);
  chat_buf *line =
      chat_buf_printf(":%s INVITE %s %s", prefix, target->nick, c->name);
  if (line == NULL)
    return HARK_ENOMEM;
  chat_event ev = {0};
  ev.line = line;
  ev.origin = by;
  ev.target = target;
  ev.flags = flags;
  ev.chan = c;
  chat_session *ts = user_session(target);
  if (ts != NULL && !ts->closing && !ts->closed) {
    chat_buf *b =
        ts->caps & CAP_TAGGED ? event_line(c->srv, &ev, ts->caps) : line;
    session_deliver(ts, b);
  }
  /* invite-notify: the channel's operators that asked hear it too */
  ev.need_cap = CAP_INVITE_NOTIFY;
  ev.status = '@';
  ev.skip_origin = true;
  ev.seq = ++c->srv->seq;
  hark_send(c->srv->sig_peers, c, &ev);
  ev.need_cap = 0;
  ev.status = 0;
  /* and whoever carries it further (federation) */
  int r = emit(c, c->srv->sig_invite, &ev);
  chat_buf_unref(line);
  return r;
}

/* ---- listings --------------------------------------------------------- */

void channel_names(chat_channel *c, chat_session *s, bool end) {
  char list[IRC_LINE_MAX];
  size_t len = 0;
  bool multi = s->caps & CAP_MULTI_PREFIX;
  bool uhnames = s->caps & CAP_USERHOST_NAMES;
  const char *kind = c->modes & CMODE_S ? "@" : c->modes & CMODE_P ? "*" : "=";
  /* prefix ":server 353 nick = #chan :" must fit with the list */
  size_t room = IRC_BODY_MAX - strlen(s->u.srv->opt.name) - strlen(s->u.nick) -
                strlen(c->name) - 16;
  prune(c);
  for (size_t i = 0; i < c->nmembers && !session_muted(s); i++) {
    chat_user *m = hark_weak_get(&c->members[i].who);
    if (m == NULL)
      continue;
    char who[IRC_LINE_MAX];
    if (uhnames)
      user_mask(m, who, sizeof who);
    else
      snprintf(who, sizeof who, "%s", m->nick);
    const char *pfx = user_prefix(m, c, multi);
    size_t need = strlen(who) + strlen(pfx) + 1;
    if (len > 0 && len + need > room) {
      session_numeric(s, 353, "%s %s :%s", kind, c->name, list);
      len = 0;
    }
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s%s",
                            len ? " " : "", pfx, who);
    hark_unref(m);
  }
  if (len > 0)
    session_numeric(s, 353, "%s %s :%s", kind, c->name, list);
  if (end)
    session_numeric(s, 366, "%s :End of /NAMES list.", c->name);
}
