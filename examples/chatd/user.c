/* Users: what the network knows of everyone, local or not, and the
 * operations on a user that commands (for a local session) and federation
 * (for what another node did) share. Each operation changes the state,
 * then emits: per-channel sends for the local members' receivers, and one
 * send on sig_user or sig_private for whoever carries the event further. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chatd.h"

/* ---- remote users ------------------------------------------------------ */

static void user_finalize(void *obj) {
  chat_user *u = obj;
  /* Dropping the channels may end them: an empty channel dies here. */
  for (size_t i = 0; i < u->nchans; i++)
    hark_unref(u->chans[i]);
  chat_free(u->chans);
  chat_free(u);
}

const hark_type chat_user_type = {"chat_user", sizeof(chat_user),
                                  user_finalize, NULL};

chat_user *user_new_remote(chat_server *srv, const char *uid, const char *node,
                           const char *nick, const char *user, const char *host,
                           const char *realname) {
  chat_user *u = hark_new(&chat_user_type);
  if (u == NULL)
    return NULL;
  u->srv = srv;
  u->remote = true;
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

bool user_in_channel(chat_user *u, chat_channel *c) {
  for (size_t i = 0; i < u->nchans; i++)
    if (u->chans[i] == c)
      return true;
  return false;
}

static void emit_user(chat_user *u, int kind, const char *text,
                      unsigned flags) {
  chat_event ev = {0};
  ev.origin = u;
  ev.kind = kind;
  ev.text = text;
  ev.flags = flags;
  int r = hark_send(u->srv->sig_user, u, &ev);
  if (r < 0)
    log_warn("%s: user event %d not sent: %s", u->nick, kind, hark_strerror(r));
}

void user_register(chat_user *u, unsigned flags) {
  u->registered = true;
  emit_user(u, USER_REGISTERED, NULL, flags);
}

/* Sends ev on sig once per channel of u: receivers skip u and take one
 * copy each, however many channels they share with it. */
static void each_channel(chat_user *u, hark_signal *sig, chat_buf *line,
                         const char *text, unsigned flags) {
  unsigned long seq = ++u->srv->seq;
  for (size_t i = 0; i < u->nchans; i++) {
    chat_event ev = {0};
    ev.line = line;
    ev.origin = u;
    ev.chan = u->chans[i];
    ev.text = text;
    ev.seq = seq;
    ev.flags = flags;
    ev.skip_origin = true;
    int r = hark_send(sig, u->chans[i], &ev);
    if (r < 0)
      log_warn("%s: %s dropped: %s", u->chans[i]->name, hark_signal_name(sig),
               hark_strerror(r));
  }
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
  snprintf(u->nick, sizeof u->nick, "%s", nick);
  if (old[0] != '\0' && irc_casecmp(old, nick) != 0)
    names_del(&srv->nicks, old, u);
  if (u->registered) {
    if (s != NULL)
      session_send_buf(s, line); /* reserved: cannot fail */
    each_channel(u, srv->sig_nick, line, old, flags);
  }
  chat_buf_unref(line);
  /* before registration too: a claim of the old nick may go */
  emit_user(u, USER_NICK, old, flags);
  return 0;
}

void user_quit(chat_user *u, const char *reason, unsigned flags) {
  chat_server *srv = u->srv;
  if (u->registered && u->nchans > 0) {
    char mask[IRC_LINE_MAX];
    user_mask(u, mask, sizeof mask);
    chat_buf *line = chat_buf_printf(":%s QUIT :%s", mask, reason);
    if (line != NULL)
      each_channel(u, srv->sig_quit, line, reason, flags);
    else
      log_warn("%s: out of memory: QUIT line dropped", u->nick);
    chat_buf_unref(line);
  }
  /* Out of its channels now, not when the object goes: NAMES is right at
   * once, here as on the other nodes. */
  while (u->nchans > 0)
    channel_leave_quietly(u->chans[u->nchans - 1], u);
  emit_user(u, USER_QUIT, reason, flags);
  if (u->nick[0] != '\0')
    names_del(&srv->nicks, u->nick, u);
}

int user_say(chat_user *to, chat_user *from, const char *cmd, const char *text,
             unsigned flags) {
  chat_server *srv = to->srv;
  char prefix[IRC_LINE_MAX];
  chat_prefix(srv, from, prefix, sizeof prefix);
  chat_buf *line =
      chat_buf_printf(":%s %s %s :%s", prefix, cmd, to->nick, text);
  if (line == NULL)
    return HARK_ENOMEM;
  chat_event ev = {0};
  ev.line = line;
  ev.origin = from;
  ev.target = to;
  ev.what = cmd;
  ev.text = text;
  ev.flags = flags;
  int r = hark_send(srv->sig_private, to, &ev);
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
