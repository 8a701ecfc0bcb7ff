/* WHO (with masks, the o flag and WHOX), WHOIS, and WHOWAS with its
 * bounded history of the users that left or changed nick, whichever node
 * they were on (the operations record them: user.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

static const char *server_of(chat_user *u) {
  return u->remote ? u->node : u->srv->opt.name;
}

static unsigned idle_of(chat_user *u) {
  chat_session *s = user_session(u);
  if (s == NULL)
    return 0;
  return (unsigned)((chat_now_ms(u->srv) - s->spoke_at) / 1000);
}

/* ---- WHO ------------------------------------------------------------------ */

typedef struct who_query {
  chat_session *s;
  const char *mask;
  bool opers_only;
  const char *fields; /* WHOX: the letters after '%', NULL: plain WHO */
  char token[8];
  unsigned count;
} who_query;

/* H or G, * for an operator, B for a bot, then the channel prefixes. */
static void who_flags(chat_user *u, chat_channel *c, bool multi, char *buf,
                      size_t cap) {
  snprintf(buf, cap, "%c%s%s%s", u->away ? 'G' : 'H',
           u->modes & UMODE_O ? "*" : "", u->modes & UMODE_B ? "B" : "",
           c != NULL ? user_prefix(u, c, multi) : "");
}

static void who_reply(who_query *q, chat_user *u, chat_channel *c) {
  chat_session *s = q->s;
  if (session_muted(s) || (q->opers_only && !(u->modes & UMODE_O)))
    return;
  q->count++;
  char flags[16];
  who_flags(u, c, s->caps & CAP_MULTI_PREFIX, flags, sizeof flags);
  const char *chan = c != NULL ? c->name : "*";
  const char *user = u->user[0] ? u->user : "~u";
  if (q->fields == NULL) {
    session_numeric(s, 352, "%s %s %s %s %s %s :%d %s", chan, user, u->host,
                    server_of(u), u->nick, flags, u->remote ? 1 : 0,
                    u->realname);
    return;
  }
  /* WHOX: the fields asked for, always in this order */
  static const char order[] = "tcuihsnfdlaor";
  char line[IRC_LINE_MAX];
  size_t n = 0;
  const char *last = NULL;
  for (const char *f = order; *f; f++) {
    if (strchr(q->fields, *f) == NULL)
      continue;
    char v[IRC_LINE_MAX];
    switch (*f) {
    case 't':
      snprintf(v, sizeof v, "%s", q->token[0] ? q->token : "0");
      break;
    case 'c':
      snprintf(v, sizeof v, "%s", chan);
      break;
    case 'u':
      snprintf(v, sizeof v, "%s", user);
      break;
    case 'i':
    case 'h':
      snprintf(v, sizeof v, "%s", u->host);
      break;
    case 's':
      snprintf(v, sizeof v, "%s", server_of(u));
      break;
    case 'n':
      snprintf(v, sizeof v, "%s", u->nick);
      break;
    case 'f':
      snprintf(v, sizeof v, "%s", flags);
      break;
    case 'd':
      snprintf(v, sizeof v, "%d", u->remote ? 1 : 0);
      break;
    case 'l':
      snprintf(v, sizeof v, "%u", idle_of(u));
      break;
    case 'a':
      snprintf(v, sizeof v, "%s", u->account[0] ? u->account : "0");
      break;
    case 'o':
      snprintf(v, sizeof v, "n/a");
      break;
    case 'r':
      snprintf(v, sizeof v, ":%s", u->realname);
      last = "r";
      break;
    }
    n += (size_t)snprintf(line + n, sizeof line - n, "%s%s", n ? " " : "", v);
    if (n >= sizeof line)
      n = sizeof line - 1;
  }
  (void)last;
  session_numeric(s, 354, "%s", line);
}

/* Whether s and u share a channel: +i hides u from masks, not from them. */
static bool shares_channel(chat_user *a, chat_user *b) {
  for (size_t i = 0; i < a->nchans; i++)
    if (user_in_channel(b, a->chans[i].chan))
      return true;
  return false;
}

static void who_match(void *obj, void *data) {
  chat_user *u = obj;
  who_query *q = data;
  if (!u->registered || q->count >= 1000)
    return;
  if ((u->modes & UMODE_I) && u != &q->s->u && !shares_channel(u, &q->s->u))
    return;
  if (irc_match(q->mask, u->nick) || irc_match(q->mask, u->host) ||
      irc_match(q->mask, u->realname))
    who_reply(q, u, NULL);
}

void cmd_who(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  const char *mask = m->nparams > 0 ? m->params[0] : "*";
  who_query q = {s, mask, false, NULL, "", 0};
  if (strcmp(mask, "0") == 0)
    q.mask = "*";
  if (m->nparams > 1) {
    const char *o = m->params[1];
    const char *pct = strchr(o, '%');
    q.opers_only =
        strchr(o, 'o') != NULL && (pct == NULL || strchr(o, 'o') < pct);
    if (pct != NULL) {
      q.fields = pct + 1;
      const char *comma = strchr(pct, ',');
      if (comma != NULL)
        snprintf(q.token, sizeof q.token, "%.3s", comma + 1);
    }
  }
  if (irc_is_channel(mask)) {
    chat_channel *c = channel_find(s->u.srv, mask);
    if (c != NULL && channel_visible(c, &s->u)) {
      channel_count(c); /* (drops the dead) */
      for (size_t i = 0; i < c->nmembers; i++) {
        chat_user *u = hark_weak_get(&c->members[i].who);
        if (u == NULL)
          continue;
        /* +i hides a member from those outside the channel */
        if (!(u->modes & UMODE_I) || user_in_channel(&s->u, c))
          who_reply(&q, u, c);
        hark_unref(u);
      }
    }
    hark_unref(c);
  } else if (strpbrk(q.mask, "*?") == NULL) {
    chat_user *t = user_find(s->u.srv, q.mask);
    if (t != NULL && t->registered)
      who_reply(&q, t, NULL);
    hark_unref(t);
  } else {
    names_foreach(&s->u.srv->nicks, who_match, &q);
  }
  session_numeric(s, 315, "%s :End of WHO list.", mask);
}

/* ---- WHOIS ------------------------------------------------------------------ */

static void whois_channels(chat_session *s, chat_user *t) {
  char list[IRC_LINE_MAX];
  size_t len = 0;
  size_t room = IRC_BODY_MAX - strlen(s->u.srv->opt.name) - strlen(s->u.nick) -
                strlen(t->nick) - 16;
  bool multi = s->caps & CAP_MULTI_PREFIX;
  for (size_t i = 0; i < t->nchans; i++) {
    chat_channel *c = t->chans[i].chan;
    if (!channel_listed(c, &s->u))
      continue;
    const char *p = user_prefix(t, c, multi);
    if (len > 0 && len + strlen(p) + strlen(c->name) + 1 > room) {
      session_numeric(s, 319, "%s :%s", t->nick, list);
      len = 0;
    }
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s%s",
                            len ? " " : "", p, c->name);
  }
  if (len > 0)
    session_numeric(s, 319, "%s :%s", t->nick, list);
}

static void whois_one(chat_session *s, const char *nick) {
  chat_user *t = user_find(s->u.srv, nick);
  if (t == NULL || !t->registered) {
    session_numeric(s, 401, "%s :No such nick/channel", nick);
    hark_unref(t);
    return;
  }
  session_numeric(s, 311, "%s %s %s * :%s", t->nick,
                  t->user[0] ? t->user : "~u", t->host, t->realname);
  whois_channels(s, t);
  if (t->remote)
    session_numeric(s, 312, "%s %s :hark-chatd node %s", t->nick, t->node,
                    t->node);
  else
    session_numeric(s, 312, "%s %s :hark-chatd", t->nick, s->u.srv->opt.name);
  if (t->away != NULL)
    session_numeric(s, 301, "%s :%s", t->nick, t->away);
  if (t->modes & UMODE_O)
    session_numeric(s, 313, "%s :is an IRC operator", t->nick);
  if (t->modes & UMODE_B)
    session_numeric(s, 335, "%s :is a bot", t->nick);
  if (t->account[0] != '\0')
    session_numeric(s, 330, "%s %s :is logged in as", t->nick, t->account);
  chat_session *ts = user_session(t);
  if (ts != NULL && ts->tls != NULL)
    session_numeric(s, 671, "%s :is using a secure connection", t->nick);
  if (ts != NULL)
    session_numeric(s, 317, "%s %u %lld :seconds idle, signon time", t->nick,
                    idle_of(t), (long long)t->signon);
  hark_unref(t);
}

void cmd_whois(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  /* WHOIS [server] nick: the server is us (or a nick: the same) */
  char whole[IRC_LINE_MAX];
  snprintf(whole, sizeof whole, "%s", m->params[m->nparams > 1 ? 1 : 0]);
  char *targets[CHATD_TARGETS_WHOIS];
  size_t n = split_targets(s, (char *)m->params[m->nparams > 1 ? 1 : 0],
                           targets, CHATD_TARGETS_WHOIS);
  for (size_t i = 0; i < n && !session_muted(s); i++)
    whois_one(s, targets[i]);
  session_numeric(s, 318, "%s :End of /WHOIS list.", whole);
}

/* ---- WHOWAS ----------------------------------------------------------------- */

typedef struct whowas_entry {
  char nick[CHATD_NICK_MAX + 1], user[CHATD_USER_MAX + 1],
      real[CHATD_REAL_MAX + 1], host[64], server[64];
  time_t at;
} whowas_entry;

/* Entries kept per nick: the history stays varied however often one nick
 * comes and goes. */
#define WHOWAS_PER_NICK 2

struct chat_whowas {
  whowas_entry *v; /* a ring: next is where the next one goes */
  size_t n, cap, next;
};

void whowas_add(chat_server *srv, chat_user *u) {
  size_t max = srv->opt.whowas_max;
  if (max == 0 || u->nick[0] == '\0')
    return;
  chat_whowas *w = srv->whowas;
  if (w == NULL && (w = srv->whowas = chat_calloc(1, sizeof *w)) == NULL)
    return;
  if (w->n == w->cap && w->cap < max) { /* grows to max, then wraps */
    size_t ncap = w->cap ? w->cap * 2 : 16;
    if (ncap > max)
      ncap = max;
    whowas_entry *nv = chat_realloc(w->v, ncap * sizeof *nv);
    if (nv == NULL)
      return;
    w->v = nv;
    w->cap = ncap;
  }
  if (w->cap == 0)
    return;
  /* the last WHOWAS_PER_NICK of a nick: an older one is forgotten */
  size_t same = 0;
  for (size_t k = 0; k < w->n; k++) {
    whowas_entry *o = &w->v[(w->next + w->cap - 1 - k) % w->cap];
    if (o->nick[0] != '\0' && irc_casecmp(o->nick, u->nick) == 0 &&
        ++same >= WHOWAS_PER_NICK)
      o->nick[0] = '\0';
  }
  whowas_entry *e = &w->v[w->next];
  snprintf(e->nick, sizeof e->nick, "%s", u->nick);
  snprintf(e->user, sizeof e->user, "%s", u->user[0] ? u->user : "~u");
  snprintf(e->real, sizeof e->real, "%s", u->realname);
  snprintf(e->host, sizeof e->host, "%s", u->host);
  snprintf(e->server, sizeof e->server, "%s", server_of(u));
  e->at = time(NULL);
  w->next = (w->next + 1) % w->cap;
  if (w->n < w->cap)
    w->n++;
}

void whowas_free(chat_server *srv) {
  if (srv->whowas != NULL)
    chat_free(srv->whowas->v);
  chat_free(srv->whowas);
  srv->whowas = NULL;
}

void cmd_whowas(chat_session *s, irc_msg *m) {
  if (m->nparams < 1 || m->params[0][0] == '\0') {
    session_numeric(s, 431, ":No nickname given");
    return;
  }
  char whole[IRC_LINE_MAX];
  snprintf(whole, sizeof whole, "%s", m->params[0]);
  char *targets[CHATD_TARGETS_WHOIS];
  size_t n =
      split_targets(s, (char *)m->params[0], targets, CHATD_TARGETS_WHOIS);
  long count = m->nparams > 1 ? strtol(m->params[1], NULL, 10) : 0;
  /* several nicks and no count: the newest entry of each, so that a list
   * of TARGMAX nicks asks for TARGMAX entries, not the whole history */
  if (n > 1 && m->nparams < 2)
    count = 1;
  long found[CHATD_TARGETS_WHOIS] = {0};
  chat_whowas *w = s->u.srv->whowas;
  /* newest first, whichever target each is for */
  for (size_t k = 0; w != NULL && k < w->n && !session_muted(s); k++) {
    whowas_entry *e = &w->v[(w->next + w->cap - 1 - k) % w->cap];
    for (size_t i = 0; i < n; i++) {
      if (e->nick[0] == '\0' || !irc_match(targets[i], e->nick) ||
          (count > 0 && found[i] >= count))
        continue;
      found[i]++;
      char when[64];
      struct tm tm;
      gmtime_r(&e->at, &tm);
      strftime(when, sizeof when, "%a %b %d %H:%M:%S %Y", &tm);
      session_numeric(s, 314, "%s %s %s * :%s", e->nick, e->user, e->host,
                      e->real);
      session_numeric(s, 312, "%s %s :%s", e->nick, e->server, when);
      break;
    }
  }
  for (size_t i = 0; i < n; i++)
    if (found[i] == 0)
      session_numeric(s, 406, "%s :There was no such nickname", targets[i]);
  session_numeric(s, 369, "%s :End of WHOWAS", whole);
}
