/* Users: what the network knows of everyone, local or not, and the
 * operations on a user that commands (for a local session) and federation
 * (for what another node did) share. Each operation changes the state,
 * then emits: per-channel sends for the local members' receivers, and one
 * send on sig_user or sig_private for whoever carries the event further
 * (federation, MONITOR). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chatd.h"

void whowas_add(chat_server *srv, chat_user *u); /* who.c */

/* ---- remote users ------------------------------------------------------ */

static void user_finalize(void *obj) {
  chat_user *u = obj;
  /* Dropping the channels may end them: an empty channel dies here. */
  for (size_t i = 0; i < u->nchans; i++)
    hark_unref(u->chans[i].chan);
  chat_free(u->chans);
  chat_free(u->away);
  chat_free(u);
}

const hark_type chat_user_type = {"chat_user", sizeof(chat_user), user_finalize,
                                  NULL};

chat_user *user_new_remote(chat_server *srv, const char *uid, const char *node,
                           const char *nick, const char *user, const char *host,
                           const char *realname) {
  chat_user *u = hark_new(&chat_user_type);
  if (u == NULL)
    return NULL;
  u->srv = srv;
  u->remote = true;
  u->signon = time(NULL);
  snprintf(u->uid, sizeof u->uid, "%s", uid);
  snprintf(u->node, sizeof u->node, "%s", node);
  snprintf(u->nick, sizeof u->nick, "%s", nick);
  snprintf(u->user, sizeof u->user, "%s", user);
  snprintf(u->host, sizeof u->host, "%s", host);
  snprintf(u->realname, sizeof u->realname, "%s", realname);
  if (names_put(&srv->nicks, nick, u) != 0) {
    hark_unref(u);
    return NULL;
  }
  return u;
}

chat_user *user_find(chat_server *srv, const char *nick) {
  chat_user *u = names_get(&srv->nicks, nick);
  chat_session *s = user_session(u);
  if (s != NULL && (s->closing || s->closed)) {
    hark_unref(u);
    return NULL;
  }
  return u;
}

void user_mask(chat_user *u, char *buf, size_t cap) {
  snprintf(buf, cap, "%s!%s@%s", u->nick, u->user[0] ? u->user : "~u", u->host);
}

void chat_prefix(chat_server *srv, chat_user *u, char *buf, size_t cap) {
  if (u != NULL)
    user_mask(u, buf, cap);
  else
    snprintf(buf, cap, "%s", srv->opt.name);
}

chat_membership *user_membership(chat_user *u, chat_channel *c) {
  for (size_t i = 0; i < u->nchans; i++)
    if (u->chans[i].chan == c)
      return &u->chans[i];
  return NULL;
}

bool user_in_channel(chat_user *u, chat_channel *c) {
  return user_membership(u, c) != NULL;
}

const char *user_prefix(chat_user *u, chat_channel *c, bool all) {
  chat_membership *m = user_membership(u, c);
  if (m == NULL)
    return "";
  if (m->op && m->voice && all)
    return "@+";
  return m->op ? "@" : m->voice ? "+" : "";
}

static void emit_user(chat_user *u, int kind, const char *text,
                      chat_user *target, unsigned flags) {
  chat_event ev = {0};
  ev.origin = u;
  ev.kind = kind;
  ev.text = text;
  ev.target = target;
  ev.flags = flags;
  int r = hark_send(u->srv->sig_user, u, &ev);
  if (r < 0)
    log_warn("%s: user event %d not sent: %s", u->nick, kind, hark_strerror(r));
}

void user_register(chat_user *u, unsigned flags) {
  u->registered = true;
  emit_user(u, USER_REGISTERED, NULL, NULL, flags);
}

/* Sends ev on sig_peers once per channel of u: receivers skip u and take
 * one copy each, however many channels they share with it (and only if
 * they asked for need_cap, when set). */
static void each_channel(chat_user *u, chat_event *ev) {
  ev->seq = ++u->srv->seq;
  ev->origin = u;
  ev->skip_origin = true;
  for (size_t i = 0; i < u->nchans; i++) {
    chat_channel *c = u->chans[i].chan;
    ev->chan = c;
    int r = hark_send(u->srv->sig_peers, c, ev);
    if (r < 0)
      log_warn("%s: a line to peers dropped: %s", c->name, hark_strerror(r));
  }
}

/* A line about u to its peers (and to u itself, if it may hear it). */
static void tell_peers(chat_user *u, chat_buf *line, unsigned need_cap,
                       unsigned flags, bool self) {
  if (line == NULL) {
    log_warn("%s: out of memory: a line to peers dropped", u->nick);
    return;
  }
  chat_event ev = {0};
  ev.line = line;
  ev.need_cap = need_cap;
  ev.flags = flags;
  chat_session *s = user_session(u);
  if (self && s != NULL && (need_cap == 0 || (s->caps & need_cap))) {
    chat_buf *b =
        s->caps & CAP_TAGGED ? event_line(u->srv, &ev, s->caps) : line;
    session_send_buf(s, b);
  }
  each_channel(u, &ev);
  event_release(&ev);
  chat_buf_unref(line);
}

int user_set_nick(chat_user *u, const char *nick, unsigned flags) {
  chat_server *srv = u->srv;
  if (strcmp(nick, u->nick) == 0)
    return 0;
  chat_session *s = user_session(u);
  char old[CHATD_NICK_MAX + 1], mask[IRC_LINE_MAX];
  memcpy(old, u->nick, sizeof old);
  user_mask(u, mask, sizeof mask);
  /* A registered client learns its new nick from this line alone: the
   * change is made only if the line can reach it. */
  chat_buf *line = NULL;
  if (u->registered &&
      ((line = chat_buf_printf(":%s NICK :%s", mask, nick)) == NULL ||
       (s != NULL && session_reserve(s, 1) != 0))) {
    chat_buf_unref(line);
    return HARK_ENOMEM;
  }
  if (names_put(&srv->nicks, nick, u) != 0) {
    chat_buf_unref(line);
    return HARK_ENOMEM;
  }
  if (u->registered && irc_casecmp(old, nick) != 0)
    whowas_add(srv, u);
  snprintf(u->nick, sizeof u->nick, "%s", nick);
  if (old[0] != '\0' && irc_casecmp(old, nick) != 0)
    names_del(&srv->nicks, old, u);
  if (u->registered) {
    chat_event ev = {0};
    ev.line = line;
    ev.text = old;
    ev.flags = flags;
    if (s != NULL) /* reserved: cannot fail */
      session_send_buf(s, s->caps & CAP_TAGGED ? event_line(srv, &ev, s->caps)
                                               : line);
    each_channel(u, &ev);
    event_release(&ev);
  }
  chat_buf_unref(line);
  /* before registration too: a claim of the old nick may go */
  emit_user(u, USER_NICK, old, NULL, flags);
  return 0;
}

void user_quit(chat_user *u, const char *reason, unsigned flags) {
  chat_server *srv = u->srv;
  if (u->registered && u->nchans > 0) {
    char mask[IRC_LINE_MAX];
    user_mask(u, mask, sizeof mask);
    tell_peers(u, chat_buf_printf(":%s QUIT :%s", mask, reason), 0, flags,
               false);
  }
  if (u->registered)
    whowas_add(srv, u);
  /* Out of its channels now, not when the object goes: NAMES is right at
   * once, here as on the other nodes. */
  while (u->nchans > 0)
    channel_leave_quietly(u->chans[u->nchans - 1].chan, u);
  emit_user(u, USER_QUIT, reason, NULL, flags);
  if (u->nick[0] != '\0')
    names_del(&srv->nicks, u->nick, u);
}

int user_say(chat_user *to, chat_user *from, const char *cmd, const char *text,
             const char *tags, unsigned flags) {
  chat_server *srv = to->srv;
  char prefix[IRC_LINE_MAX];
  chat_prefix(srv, from, prefix, sizeof prefix);
  bool tagmsg = strcmp(cmd, "TAGMSG") == 0;
  chat_buf *line =
      tagmsg ? chat_buf_printf(":%s TAGMSG %s", prefix, to->nick)
             : chat_buf_printf(":%s %s %s :%s", prefix, cmd, to->nick, text);
  if (line == NULL)
    return HARK_ENOMEM;
  chat_event ev = {0};
  if (tagmsg)
    ev.bare = line;
  else
    ev.line = line;
  ev.origin = from;
  ev.target = to;
  ev.what = cmd;
  ev.text = text;
  ev.flags = flags;
  ev.msgid = from != NULL;
  ev.client_tags = tags != NULL && tags[0] != '\0' ? tags : NULL;
  int r = hark_send(srv->sig_private, to, &ev);
  /* echo-message: the sender's copy, with the same tags (msgid) */
  chat_session *fs = user_session(from);
  if (!(flags & CHAT_FROM_NET) && fs != NULL && (fs->caps & CAP_ECHO)) {
    chat_buf *b = event_line(srv, &ev, fs->caps);
    if (b != NULL)
      session_send_buf(fs, b);
  }
  event_release(&ev);
  chat_buf_unref(line);
  return r < 0 ? r : 0;
}

void user_notice(chat_user *u, const char *fmt, ...) {
  chat_session *s = user_session(u);
  if (s == NULL || s->closing || s->closed)
    return;
  char text[IRC_LINE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  session_sendf(s, ":%s NOTICE %s :%s", u->srv->opt.name,
                u->nick[0] ? u->nick : "*", text);
}

int user_set_away(chat_user *u, const char *msg, unsigned flags) {
  char *copy = NULL;
  if (msg != NULL && (copy = chat_strdup(msg)) == NULL)
    return HARK_ENOMEM;
  if (msg == NULL && u->away == NULL) {
    return 0;
  }
  chat_free(u->away);
  u->away = copy;
  if (u->registered) {
    char mask[IRC_LINE_MAX];
    user_mask(u, mask, sizeof mask);
    tell_peers(u,
               msg ? chat_buf_printf(":%s AWAY :%s", mask, msg)
                   : chat_buf_printf(":%s AWAY", mask),
               CAP_AWAY_NOTIFY, flags, false);
  }
  emit_user(u, USER_AWAY, u->away, NULL, flags);
  return 0;
}

static unsigned umode_bit(char m) {
  switch (m) {
  case 'i':
    return UMODE_I;
  case 'w':
    return UMODE_W;
  case 'o':
    return UMODE_O;
  case 'B':
    return UMODE_B;
  }
  return 0;
}

int user_set_modes(chat_user *u, const char *changes, unsigned flags) {
  char applied[32];
  size_t n = 0;
  char dir = '+', last = 0;
  for (const char *p = changes; *p && n + 3 < sizeof applied; p++) {
    if (*p == '+' || *p == '-') {
      dir = *p;
      continue;
    }
    unsigned bit = umode_bit(*p);
    if (bit == 0 || ((u->modes & bit) != 0) == (dir == '+'))
      continue;
    if (dir == '+')
      u->modes |= bit;
    else
      u->modes &= ~bit;
    if (last != dir)
      applied[n++] = last = dir;
    applied[n++] = *p;
  }
  applied[n] = '\0';
  if (n == 0)
    return 0;
  chat_session *s = user_session(u);
  if (s != NULL && u->registered) {
    char mask[IRC_LINE_MAX];
    user_mask(u, mask, sizeof mask);
    session_sendf(s, ":%s MODE %s :%s", mask, u->nick, applied);
  }
  emit_user(u, USER_MODE, applied, NULL, flags);
  return 0;
}

int user_set_realname(chat_user *u, const char *real, unsigned flags) {
  snprintf(u->realname, sizeof u->realname, "%s", real);
  if (u->registered) {
    char mask[IRC_LINE_MAX];
    user_mask(u, mask, sizeof mask);
    tell_peers(u, chat_buf_printf(":%s SETNAME :%s", mask, u->realname),
               CAP_SETNAME, flags, true);
  }
  emit_user(u, USER_SETNAME, u->realname, NULL, flags);
  return 0;
}

void user_set_account(chat_user *u, const char *account, unsigned flags) {
  snprintf(u->account, sizeof u->account, "%s", account);
  if (u->registered) {
    char mask[IRC_LINE_MAX];
    user_mask(u, mask, sizeof mask);
    tell_peers(
        u, chat_buf_printf(":%s ACCOUNT %s", mask, account[0] ? account : "*"),
        CAP_ACCOUNT_NOTIFY, flags, false);
  }
}

void user_kill(chat_user *target, chat_user *by, const char *reason,
               unsigned flags) {
  chat_session *s = user_session(target);
  if (s != NULL && !s->closing && !s->closed) {
    char why[300], prefix[IRC_LINE_MAX];
    chat_prefix(target->srv, by, prefix, sizeof prefix);
    snprintf(why, sizeof why, "Killed (%s (%s))",
             by != NULL ? by->nick : target->srv->opt.name, reason);
    session_sendf(s, ":%s KILL %s :%s", prefix, target->nick, reason);
    session_error_close(s, why);
  }
  /* the killer's node tells the network; the target's node ends it */
  emit_user(by != NULL ? by : target, USER_KILLED, reason, target, flags);
}

void user_wallops(chat_user *from, const char *text, unsigned flags) {
  chat_server *srv = from->srv;
  char mask[IRC_LINE_MAX];
  user_mask(from, mask, sizeof mask);
  chat_buf *line = chat_buf_printf(":%s WALLOPS :%s", mask, text);
  if (line == NULL)
    return;
  for (chat_session *s = srv->sessions; s != NULL; s = s->next)
    if ((s->u.modes & UMODE_W) && s->u.registered && !s->closing && !s->closed)
      session_deliver(s, line);
  chat_buf_unref(line);
  emit_user(from, USER_WALLOPS, text, NULL, flags);
}

/* ---- questions to the network: nick claims, settling ------------------ */

static void claim_finish(chat_claim *c) {
  chat_user *who = hark_weak_get(&c->who);
  c->done(c, who, !c->refused);
  hark_unref(who);
  hark_weak_clear(&c->who);
  chat_free(c);
}

int claim_run(hark_signal *sig, chat_user *u, const char *nick,
              void (*done)(chat_claim *c, chat_user *who, bool granted),
              chat_claim **out) {
  chat_claim *c = chat_calloc(1, sizeof *c);
  if (c == NULL)
    return HARK_ENOMEM;
  hark_weak_set(&c->who, u);
  snprintf(c->nick, sizeof c->nick, "%s", nick);
  c->done = done;
  /* The send holds one deferral itself: a receiver that decides inside
   * the send cannot finish the claim under it. */
  c->deferred = 1;
  int r = hark_send(sig, u, c);
  if (r < 0 && c->deferred == 1) {
    hark_weak_clear(&c->who);
    chat_free(c);
    return HARK_ENOMEM;
  }
  if (--c->deferred == 0) {
    claim_finish(c);
    return 1;
  }
  *out = c;
  return 0;
}

void claim_defer(chat_claim *c) { c->deferred++; }

void claim_decide(chat_claim *c, bool granted) {
  if (!granted)
    c->refused = true;
  if (--c->deferred == 0)
    claim_finish(c);
}
