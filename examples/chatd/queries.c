/* The IRC commands that only read: NAMES, LIST, WHO, WHOIS, ISON, MOTD,
 * STATS, LUSERS, AWAY. They answer from this node's view of the network,
 * which federation keeps whole (every user and channel of every node), so
 * none waits for anything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chatd.h"

void send_motd(chat_session *s) {
  chat_server *srv = s->u.srv;
  if (srv->motd == NULL) {
    session_numeric(s, 422, ":MOTD File is missing");
    return;
  }
  session_numeric(s, 375, ":- %s Message of the day - ", srv->opt.name);
  char *p = srv->motd;
  while (*p) {
    size_t n = strcspn(p, "\r\n");
    session_numeric(s, 372, ":- %.*s", (int)n, p);
    p += n;
    if (*p == '\r')
      p++;
    if (*p == '\n')
      p++;
  }
  session_numeric(s, 376, ":End of /MOTD command.");
}

static void cmd_names(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  if (m->nparams < 1) {
    session_numeric(s, 366, "* :End of /NAMES list.");
    return;
  }
  char *list = (char *)m->params[0], *name;
  while ((name = irc_next_item(&list)) != NULL) {
    chat_channel *c = channel_find(s->u.srv, name);
    if (c != NULL && channel_visible(c, &s->u))
      channel_names(c, s);
    else
      session_numeric(s, 366, "%s :End of /NAMES list.", name);
    hark_unref(c);
  }
}

static void list_one(void *obj, void *data) {
  chat_channel *c = obj;
  chat_session *s = data;
  if (channel_visible(c, &s->u))
    session_numeric(s, 322, "%s %zu :%s", c->name, channel_count(c), c->topic);
}

static void cmd_list(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  session_numeric(s, 321, "Channel :Users  Name");
  if (m->nparams > 0) {
    char *list = (char *)m->params[0], *name;
    while ((name = irc_next_item(&list)) != NULL) {
      chat_channel *c = channel_find(s->u.srv, name);
      if (c != NULL)
        list_one(c, s);
      hark_unref(c);
    }
  } else {
    names_foreach(&s->u.srv->chans, list_one, s);
  }
  session_numeric(s, 323, ":End of /LIST");
}

static const char *server_of(chat_user *u) {
  return u->remote ? u->node : u->srv->opt.name;
}

static void cmd_who(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  if (m->nparams < 1) {
    session_numeric(s, 315, "* :End of WHO list.");
    return;
  }
  const char *mask = m->params[0];
  if (mask[0] == '#') {
    chat_channel *c = channel_find(s->u.srv, mask);
    if (c != NULL && channel_visible(c, &s->u))
      channel_who(c, s);
    else
      session_numeric(s, 315, "%s :End of WHO list.", mask);
    hark_unref(c);
    return;
  }
  chat_user *t = user_find(s->u.srv, mask);
  if (t != NULL && t->registered)
    session_numeric(s, 352, "* %s %s %s %s H :%d %s",
                    t->user[0] ? t->user : "~u", t->host, server_of(t), t->nick,
                    t->remote ? 1 : 0, t->realname);
  hark_unref(t);
  session_numeric(s, 315, "%s :End of WHO list.", mask);
}

static void cmd_whois(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  const char *nick = m->params[m->nparams > 1 ? 1 : 0];
  chat_user *t = user_find(s->u.srv, nick);
  if (t == NULL || !t->registered) {
    session_numeric(s, 401, "%s :No such nick/channel", nick);
  } else {
    session_numeric(s, 311, "%s %s %s * :%s", t->nick,
                    t->user[0] ? t->user : "~u", t->host, t->realname);
    if (t->remote)
      session_numeric(s, 312, "%s %s :hark-chatd node %s", t->nick, t->node,
                      t->node);
    else
      session_numeric(s, 312, "%s %s :hark-chatd", t->nick, s->u.srv->opt.name);
  }
  hark_unref(t);
  session_numeric(s, 318, "%s :End of /WHOIS list.", nick);
}

static void cmd_ison(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  char list[IRC_LINE_MAX] = "";
  size_t len = 0;
  for (int i = 0; i < m->nparams; i++) {
    char *items = (char *)m->params[i], *nick;
    while ((nick = strsep(&items, " ")) != NULL) {
      chat_user *t = *nick ? user_find(s->u.srv, nick) : NULL;
      if (t != NULL && t->registered && len + strlen(t->nick) + 2 < 400)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
                                len ? " " : "", t->nick);
      hark_unref(t);
    }
  }
  session_numeric(s, 303, ":%s", list);
}

static void cmd_motd(chat_session *s, irc_msg *m) { send_motd(s); }

static void cmd_stats(chat_session *s, irc_msg *m) {
  char line[512];
  server_stats_line(s->u.srv, line, sizeof line);
  session_numeric(s, 249, ":%s", line);
  session_numeric(s, 219, "%s :End of /STATS report",
                  m->nparams > 0 ? m->params[0] : "*");
}

typedef struct census {
  size_t users;
  const char *nodes[64];
  size_t nnodes;
} census;

static void count_user(void *obj, void *data) {
  chat_user *u = obj;
  census *x = data;
  if (!u->registered)
    return;
  x->users++;
  const char *node = u->remote ? u->node : "";
  for (size_t i = 0; i < x->nnodes; i++)
    if (strcmp(x->nodes[i], node) == 0)
      return;
  if (x->nnodes < 64)
    x->nodes[x->nnodes++] = node; /* borrowed: the users live meanwhile */
}

static void cmd_lusers(chat_session *s, irc_msg *m) {
  census x = {0, {""}, 1};
  names_foreach(&s->u.srv->nicks, count_user, &x);
  session_numeric(s, 251,
                  ":There are %zu users and 0 invisible on %zu "
                  "servers",
                  x.users, x.nnodes);
  session_numeric(s, 254, "%zu :channels formed",
                  names_count(&s->u.srv->chans));
}

static void cmd_away(chat_session *s, irc_msg *m) {
  session_numeric(s, 305, ":You are no longer marked as being away");
}

const chat_command query_commands[] = {
    {"NAMES", cmd_names, 0, false}, {"LIST", cmd_list, 0, false},
    {"WHO", cmd_who, 0, false},     {"WHOIS", cmd_whois, 1, false},
    {"ISON", cmd_ison, 1, false},   {"MOTD", cmd_motd, 0, false},
    {"STATS", cmd_stats, 0, false}, {"LUSERS", cmd_lusers, 0, false},
    {"AWAY", cmd_away, 0, false},
};
const size_t nquery_commands = sizeof query_commands / sizeof query_commands[0];
