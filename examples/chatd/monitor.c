/* MONITOR (and extended-monitor): a client names nicks and hears when
 * they come and go, wherever on the network. The watchers of each nick
 * are in one table (folded nick -> sessions, held weakly); a receiver of
 * sig_user, connected for every user, looks the table up for each
 * registration, rename, quit, and (extended-monitor) AWAY and SETNAME. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

typedef struct watch {
  struct watch *next;
  hark_weak *who; /* sessions */
  size_t n;
  char nick[]; /* folded */
} watch;

struct chat_monitors {
  watch *slots[256];
};

static size_t slot_of(const char *folded) {
  size_t h = 5381;
  for (; *folded; folded++)
    h = h * 33 + (unsigned char)*folded;
  return h % 256;
}

static watch **find(chat_monitors *m, const char *folded) {
  watch **pp = &m->slots[slot_of(folded)];
  while (*pp != NULL && strcmp((*pp)->nick, folded) != 0)
    pp = &(*pp)->next;
  return pp;
}

static void watch_free(watch *w) {
  for (size_t i = 0; i < w->n; i++)
    hark_weak_clear(&w->who[i]);
  chat_free(w->who);
  chat_free(w);
}

void monitors_free(chat_server *srv) {
  chat_monitors *m = srv->monitors;
  if (m == NULL)
    return;
  for (size_t i = 0; i < 256; i++)
    while (m->slots[i] != NULL) {
      watch *w = m->slots[i];
      m->slots[i] = w->next;
      watch_free(w);
    }
  chat_free(m);
  srv->monitors = NULL;
}

/* s no longer watches folded (and entries of the dead go too). */
static void unwatch(chat_server *srv, const char *folded, chat_session *s) {
  if (srv->monitors == NULL)
    return;
  watch **pp = find(srv->monitors, folded), *w = *pp;
  if (w == NULL)
    return;
  size_t j = 0;
  for (size_t i = 0; i < w->n; i++) {
    void *who = hark_weak_get(&w->who[i]);
    hark_unref(who);
    if (who != NULL && who != s)
      w->who[j++] = w->who[i];
    else
      hark_weak_clear(&w->who[i]);
  }
  w->n = j;
  if (j == 0) {
    *pp = w->next;
    watch_free(w);
  }
}

static int watch_add(chat_server *srv, const char *folded, chat_session *s) {
  if (srv->monitors == NULL &&
      (srv->monitors = chat_calloc(1, sizeof *srv->monitors)) == NULL)
    return HARK_ENOMEM;
  watch **pp = find(srv->monitors, folded), *w = *pp;
  if (w == NULL) {
    size_t len = strlen(folded);
    w = chat_calloc(1, sizeof *w + len + 1);
    if (w == NULL)
      return HARK_ENOMEM;
    memcpy(w->nick, folded, len + 1);
    *pp = w;
  }
  hark_weak *nw = chat_realloc(w->who, (w->n + 1) * sizeof *nw);
  if (nw == NULL)
    return HARK_ENOMEM;
  w->who = nw;
  w->who[w->n] = (hark_weak)HARK_WEAK_INIT;
  hark_weak_set(&w->who[w->n++], s);
  return 0;
}

/* Ends everything s watches: it is leaving. */
void monitor_forget(chat_session *s) {
  for (size_t i = 0; i < s->nmon; i++) {
    unwatch(s->u.srv, s->mon[i], s);
    chat_free(s->mon[i]);
  }
  chat_free(s->mon);
  s->mon = NULL;
  s->nmon = 0;
}

/* ---- notifications --------------------------------------------------------- */

/* Calls fn for every live watcher of nick. */
static void each_watcher(chat_server *srv, const char *nick,
                         void (*fn)(chat_session *s, void *d), void *d) {
  if (srv->monitors == NULL || nick[0] == '\0')
    return;
  char folded[CHATD_NICK_MAX + 1];
  irc_fold(folded, nick, sizeof folded);
  watch *w = *find(srv->monitors, folded);
  for (size_t i = 0; w != NULL && i < w->n; i++) {
    chat_session *s = hark_weak_get(&w->who[i]);
    if (s != NULL && !s->closing && !s->closed && s->u.registered)
      fn(s, d);
    hark_unref(s);
  }
}

static void tell_online(chat_session *s, void *d) {
  session_numeric(s, 730, ":%s", (const char *)d);
}

static void tell_offline(chat_session *s, void *d) {
  session_numeric(s, 731, ":%s", (const char *)d);
}

typedef struct ext_line {
  chat_user *u;
  chat_buf *line;
  unsigned need;
} ext_line;

/* extended-monitor: AWAY and SETNAME, to watchers that asked for both and
 * did not hear it already as a peer in a channel. */
static void tell_ext(chat_session *s, void *d) {
  ext_line *x = d;
  if (!(s->caps & CAP_EXT_MONITOR) || !(s->caps & x->need) || &s->u == x->u)
    return;
  for (size_t i = 0; i < s->u.nchans; i++)
    if (user_in_channel(x->u, s->u.chans[i].chan))
      return;
  session_deliver(s, x->line);
}

static int on_user(void *self, void *sender, void *args) {
  chat_event *ev = args;
  chat_user *u = ev->origin;
  chat_server *srv = u->srv;
  if (srv->monitors == NULL || !u->registered)
    return 0;
  char mask[IRC_LINE_MAX];
  user_mask(u, mask, sizeof mask);
  switch (ev->kind) {
  case USER_REGISTERED:
    each_watcher(srv, u->nick, tell_online, mask);
    break;
  case USER_NICK:
    if (irc_casecmp(ev->text, u->nick) != 0) {
      each_watcher(srv, ev->text, tell_offline, (void *)ev->text);
      each_watcher(srv, u->nick, tell_online, mask);
    }
    break;
  case USER_QUIT:
    each_watcher(srv, u->nick, tell_offline, u->nick);
    break;
  case USER_AWAY:
  case USER_SETNAME: {
    ext_line x = {u, NULL,
                  ev->kind == USER_AWAY ? CAP_AWAY_NOTIFY : CAP_SETNAME};
    if (ev->kind == USER_SETNAME)
      x.line = chat_buf_printf(":%s SETNAME :%s", mask, u->realname);
    else if (ev->text != NULL)
      x.line = chat_buf_printf(":%s AWAY :%s", mask, ev->text);
    else
      x.line = chat_buf_printf(":%s AWAY", mask);
    if (x.line != NULL)
      each_watcher(srv, u->nick, tell_ext, &x);
    chat_buf_unref(x.line);
    break;
  }
  }
  return 0;
}

int monitor_start(chat_server *srv) {
  return hark_connect(srv->sig_user, on_user, NULL, NULL, HARK_STRONG);
}

/* ---- MONITOR ------------------------------------------------------------------ */

static bool watching(chat_session *s, const char *folded) {
  for (size_t i = 0; i < s->nmon; i++)
    if (strcmp(s->mon[i], folded) == 0)
      return true;
  return false;
}

/* Appends item to a comma list, sending num first when it would not fit. */
static void add_item(chat_session *s, int num, char *list, size_t *len,
                     const char *item) {
  if (*len > 0 && *len + strlen(item) + 1 > 400) {
    session_numeric(s, num, ":%s", list);
    *len = 0;
  }
  *len += (size_t)snprintf(list + *len, IRC_LINE_MAX - *len, "%s%s",
                           *len ? "," : "", item);
}

static void status_of(chat_session *s, char **nicks, size_t n) {
  char on[IRC_LINE_MAX], off[IRC_LINE_MAX];
  size_t lon = 0, loff = 0;
  for (size_t i = 0; i < n; i++) {
    chat_user *u = user_find(s->u.srv, nicks[i]);
    if (u != NULL && u->registered) {
      char mask[IRC_LINE_MAX];
      user_mask(u, mask, sizeof mask);
      add_item(s, 730, on, &lon, mask);
    } else {
      add_item(s, 731, off, &loff, nicks[i]);
    }
    hark_unref(u);
  }
  if (lon > 0)
    session_numeric(s, 730, ":%s", on);
  if (loff > 0)
    session_numeric(s, 731, ":%s", off);
}

static void monitor_add(chat_session *s, char *list) {
  char *added[CHATD_MONITOR_MAX], *item;
  size_t n = 0;
  while ((item = irc_next_item(&list)) != NULL) {
    char folded[CHATD_NICK_MAX + 1];
    if (!irc_valid_nick(item, CHATD_NICK_MAX)) { /* masks are not nicks */
      session_numeric(s, 731, ":%s", item);
      continue;
    }
    irc_fold(folded, item, sizeof folded);
    if (watching(s, folded))
      continue;
    if (s->nmon >= CHATD_MONITOR_MAX) {
      session_numeric(s, 734, "%d %s :Monitor list is full", CHATD_MONITOR_MAX,
                      item);
      break;
    }
    char **nm = chat_realloc(s->mon, (s->nmon + 1) * sizeof *nm);
    char *copy = chat_strdup(folded);
    if (nm == NULL || copy == NULL || watch_add(s->u.srv, folded, s) != 0) {
      if (nm != NULL)
        s->mon = nm;
      chat_free(copy);
      unavailable(s, item);
      break;
    }
    s->mon = nm;
    s->mon[s->nmon++] = copy;
    added[n++] = item;
  }
  status_of(s, added, n);
}

static void monitor_del(chat_session *s, char *list) {
  char *item;
  while ((item = irc_next_item(&list)) != NULL) {
    char folded[CHATD_NICK_MAX + 1];
    irc_fold(folded, item, sizeof folded);
    for (size_t i = 0; i < s->nmon; i++)
      if (strcmp(s->mon[i], folded) == 0) {
        unwatch(s->u.srv, folded, s);
        chat_free(s->mon[i]);
        s->mon[i] = s->mon[--s->nmon];
        break;
      }
  }
}

void cmd_monitor(chat_session *s, irc_msg *m) {
  char op = m->params[0][0];
  if ((op == '+' || op == '-') && m->nparams < 2) {
    session_numeric(s, 461, "MONITOR :Not enough parameters");
    return;
  }
  if (op == '+') {
    monitor_add(s, (char *)m->params[1]);
  } else if (op == '-') {
    monitor_del(s, (char *)m->params[1]);
  } else if (op == 'C' || op == 'c') {
    monitor_forget(s);
  } else if (op == 'L' || op == 'l') {
    char list[IRC_LINE_MAX];
    size_t len = 0;
    for (size_t i = 0; i < s->nmon; i++)
      add_item(s, 732, list, &len, s->mon[i]);
    if (len > 0)
      session_numeric(s, 732, ":%s", list);
    session_numeric(s, 733, ":End of MONITOR list");
  } else if (op == 'S' || op == 's') {
    status_of(s, s->mon, s->nmon);
  } else {
    session_numeric(s, 421, "MONITOR :Unknown MONITOR subcommand");
  }
}
