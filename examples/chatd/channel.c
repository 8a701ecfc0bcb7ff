/* Channels: senders of the daemon's signals. A member is in a channel by
 * having its receivers connected with the channel as sender, weakly: when
 * the member dies its receivers go by themselves. The member list is held
 * weakly too, for NAMES and WHO; members hold the channel strongly, so the
 * channel dies with its last member. */
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

/* ---- receivers: one per signal, all bound to a session ---------------- */

static int deliver(chat_session *s, chat_event *ev, bool skip_origin,
                   bool once) {
  if (s->closing || s->closed || (skip_origin && ev->origin == s))
    return 0;
  if (once) { /* one QUIT or NICK per peer, however many channels shared */
    if (s->seen_seq == ev->seq)
      return 0;
    s->seen_seq = ev->seq;
  }
  session_send_buf(s, ev->line);
  return 0;
}

static int on_message(void *self, void *sender, void *args) {
  return deliver(self, args, true, false);
}
static int on_join(void *self, void *sender, void *args) {
  return deliver(self, args, false, false);
}
static int on_part(void *self, void *sender, void *args) {
  return deliver(self, args, false, false);
}
static int on_quit(void *self, void *sender, void *args) {
  return deliver(self, args, true, true);
}
static int on_nick(void *self, void *sender, void *args) {
  return deliver(self, args, true, true);
}
static int on_topic(void *self, void *sender, void *args) {
  return deliver(self, args, false, false);
}
static int on_mode(void *self, void *sender, void *args) {
  return deliver(self, args, false, false);
}

typedef struct binding {
  size_t sig_offset;
  hark_receiver_fn fn;
} binding;

static const binding bindings[] = {
    {offsetof(chat_server, sig_message), on_message},
    {offsetof(chat_server, sig_join), on_join},
    {offsetof(chat_server, sig_part), on_part},
    {offsetof(chat_server, sig_quit), on_quit},
    {offsetof(chat_server, sig_nick), on_nick},
    {offsetof(chat_server, sig_topic), on_topic},
    {offsetof(chat_server, sig_mode), on_mode},
};
#define NBINDINGS (sizeof bindings / sizeof bindings[0])

static hark_signal *sig_of(chat_server *srv, const binding *b) {
  return *(hark_signal **)((char *)srv + b->sig_offset);
}

/* ---- members ---------------------------------------------------------- */

static bool member_is(chat_member *m, chat_session *s) {
  void *who = hark_weak_get(&m->who);
  hark_unref(who);
  return who == s;
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

chat_member *channel_member(chat_channel *c, chat_session *s) {
  for (size_t i = 0; i < c->nmembers; i++)
    if (member_is(&c->members[i], s))
      return &c->members[i];
  return NULL;
}

int channel_add(chat_channel *c, chat_session *s) {
  chat_server *srv = c->srv;
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
  size_t i;
  for (i = 0; i < NBINDINGS; i++) {
    int r = hark_connect(sig_of(srv, &bindings[i]), bindings[i].fn, s, c,
                         HARK_WEAK);
    if (r != 0) {
      while (i-- > 0)
        hark_disconnect(sig_of(srv, &bindings[i]), bindings[i].fn, s, c);
      return r;
    }
  }
  size_t remote;
  fed_members(c, &remote);
  /* the first to join (of the network, when federated) is operator */
  bool first = channel_count(c) == 0 && remote == 0;
  chat_member *m = &c->members[c->nmembers++];
  m->op = first;
  hark_weak_set(&m->who, s);
  return 0;
}

void channel_remove(chat_channel *c, chat_session *s) {
  for (size_t i = 0; i < NBINDINGS; i++)
    hark_disconnect(sig_of(c->srv, &bindings[i]), bindings[i].fn, s, c);
  for (size_t i = 0; i < c->nmembers; i++)
    if (member_is(&c->members[i], s)) {
      hark_weak_clear(&c->members[i].who);
      c->members[i] = c->members[--c->nmembers];
      c->members[c->nmembers].who = (hark_weak)HARK_WEAK_INIT;
      break;
    }
}

void channel_set_key(chat_channel *c, const char *key) {
  chat_free(c->key);
  c->key = key != NULL ? chat_strdup(key) : NULL;
}

int channel_send(chat_channel *c, hark_signal *sig, chat_buf *line,
                 chat_session *origin, unsigned long seq) {
  int r = HARK_ENOMEM;
  if (line != NULL) {
    chat_event ev = {line, origin, seq};
    r = hark_send(sig, c, &ev);
  }
  if (r < 0) /* every caller drops the line: say so */
    log_warn("%s: %s dropped: %s", c->name, hark_signal_name(sig),
             hark_strerror(r));
  return r;
}

/* ---- listings --------------------------------------------------------- */

void channel_names(chat_channel *c, chat_session *s) {
  char list[IRC_LINE_MAX];
  size_t len = 0;
  /* prefix ":server 353 nick = #chan :" must fit with the list */
  size_t room = IRC_BODY_MAX - strlen(s->srv->opt.name) - strlen(s->nick) -
                strlen(c->name) - 16;
  prune(c);
  for (size_t i = 0; i < c->nmembers; i++) {
    chat_session *m = hark_weak_get(&c->members[i].who);
    if (m == NULL)
      continue;
    size_t need = strlen(m->nick) + 2;
    if (len > 0 && len + need > room) {
      session_numeric(s, 353, "= %s :%s", c->name, list);
      len = 0;
    }
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s%s",
                            len ? " " : "", c->members[i].op ? "@" : "",
                            m->nick);
    hark_unref(m);
  }
  size_t nremote;
  fed_member *rm = fed_members(c, &nremote); /* members on other nodes */
  for (size_t i = 0; i < nremote; i++) {
    size_t need = strlen(rm[i].nick) + 2;
    if (len > 0 && len + need > room) {
      session_numeric(s, 353, "= %s :%s", c->name, list);
      len = 0;
    }
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s%s",
                            len ? " " : "", rm[i].op ? "@" : "", rm[i].nick);
  }
  if (len > 0)
    session_numeric(s, 353, "= %s :%s", c->name, list);
  session_numeric(s, 366, "%s :End of /NAMES list.", c->name);
}

void channel_who(chat_channel *c, chat_session *s) {
  prune(c);
  for (size_t i = 0; i < c->nmembers; i++) {
    chat_session *m = hark_weak_get(&c->members[i].who);
    if (m == NULL)
      continue;
    session_numeric(s, 352, "%s %s %s %s %s H%s :0 %s", c->name,
                    m->user[0] ? m->user : "~u", m->host, s->srv->opt.name,
                    m->nick, c->members[i].op ? "@" : "", m->realname);
    hark_unref(m);
  }
  size_t nremote;
  fed_member *rm = fed_members(c, &nremote);
  for (size_t i = 0; i < nremote; i++)
    session_numeric(s, 352, "%s %s %s %s %s H%s :1 %s", c->name, rm[i].user,
                    rm[i].host, rm[i].node, rm[i].nick, rm[i].op ? "@" : "",
                    rm[i].real);
  session_numeric(s, 315, "%s :End of WHO list.", c->name);
}
