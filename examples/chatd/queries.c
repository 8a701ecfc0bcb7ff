/* The commands that mostly read: NAMES, LIST, ISON, USERHOST, MOTD,
 * STATS, LUSERS, VERSION, TIME, INFO, ADMIN, HELP, LINKS; and AWAY and
 * SETNAME, which change what WHOIS shows. They answer from this node's
 * view of the network, which federation keeps whole (every user and
 * channel of every node). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

void server_isupport(chat_session *s); /* registration.c */
void clean_realname(char *dst, size_t cap, const char *src);

void send_motd(chat_session *s) {
  chat_server *srv = s->u.srv;
  if (srv->motd == NULL) {
    session_numeric(s, 422, ":MOTD File is missing");
    return;
  }
  session_numeric(s, 375, ":- %s Message of the day - ", srv->opt.name);
  char *p = srv->motd;
  while (*p && !session_muted(s)) {
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

void cmd_motd(chat_session *s, irc_msg *m) { send_motd(s); }

/* ---- NAMES ---------------------------------------------------------------- */

static void names_listed(void *obj, void *data) {
  chat_session *s = data;
  if (channel_listed(obj, &s->u) && !session_muted(s))
    channel_names(obj, s, false);
}

void cmd_names(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  if (m->nparams < 1 || m->params[0][0] == '\0') {
    names_foreach(&s->u.srv->chans, names_listed, s);
    session_numeric(s, 366, "* :End of /NAMES list.");
    return;
  }
  char whole[IRC_LINE_MAX];
  snprintf(whole, sizeof whole, "%s", m->params[0]);
  char *targets[CHATD_TARGETS_NAMES];
  size_t n =
      split_targets(s, (char *)m->params[0], targets, CHATD_TARGETS_NAMES);
  /* several channels: their 353s, then one 366 for the list */
  for (size_t i = 0; i < n && !session_muted(s); i++) {
    chat_channel *c = channel_find(s->u.srv, targets[i]);
    if (c != NULL && channel_visible(c, &s->u))
      channel_names(c, s, n == 1);
    else if (n == 1)
      session_numeric(s, 366, "%s :End of /NAMES list.", targets[i]);
    hark_unref(c);
  }
  if (n > 1)
    session_numeric(s, 366, "%s :End of /NAMES list.", whole);
}

/* ---- LIST (ELIST=CMNTU) ------------------------------------------------------ */

typedef struct list_query {
  chat_session *s;
  const char *want[16], *unwanted[16];
  size_t nwant, nunwanted;
  long more_than, less_than; /* users; -1: none */
  /* ELIST=CT, in minutes ago: created (C) or topic set (T) more than
   * (older) or less than (newer) that; -1: none */
  long c_older, c_newer, t_older, t_newer;
  time_t now;
} list_query;

/* Whether something done at `at` passes "more than `older` / less than
 * `newer` minutes ago" (compared in seconds: C<2 keeps a channel made 119
 * s ago, C>2 one made 121 s ago). */
static bool age_ok(time_t now, time_t at, long older, long newer) {
  double age = difftime(now, at);
  return (older < 0 || age > older * 60.0) && (newer < 0 || age < newer * 60.0);
}

static void list_one(void *obj, void *data) {
  chat_channel *c = obj;
  list_query *q = data;
  if (!channel_listed(c, &q->s->u) || session_muted(q->s))
    return;
  size_t users = channel_count(c);
  if ((q->more_than >= 0 && users <= (size_t)q->more_than) ||
      (q->less_than >= 0 && users >= (size_t)q->less_than))
    return;
  if (!age_ok(q->now, c->created, q->c_older, q->c_newer))
    return;
  if ((q->t_older >= 0 || q->t_newer >= 0) &&
      (c->topic[0] == '\0' ||
       !age_ok(q->now, c->topic_at, q->t_older, q->t_newer)))
    return; /* no topic: no topic time to match */
  bool ok = q->nwant == 0;
  for (size_t i = 0; i < q->nwant && !ok; i++)
    ok = irc_match(q->want[i], c->name);
  for (size_t i = 0; i < q->nunwanted && ok; i++)
    ok = !irc_match(q->unwanted[i], c->name);
  if (ok)
    session_numeric(q->s, 322, "%s %zu :%s", c->name, users, c->topic);
}

void cmd_list(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  list_query q = {s, {0}, {0}, 0, 0, -1, -1, -1, -1, -1, -1, time(NULL)};
  char *items = m->nparams > 0 ? (char *)m->params[0] : NULL, *item;
  while ((item = irc_next_item(&items)) != NULL) {
    /* C<n C>n T<n T>n (ELIST=CT), then <n >n (ELIST=U) */
    char *cmp = item[0] == 'C' || item[0] == 'T' ? item + 1 : item;
    if ((cmp[0] == '>' || cmp[0] == '<') && cmp[1] >= '0' && cmp[1] <= '9') {
      long v = strtol(cmp + 1, NULL, 10);
      long *at = item[0] == 'C'   ? (cmp[0] == '>' ? &q.c_older : &q.c_newer)
                 : item[0] == 'T' ? (cmp[0] == '>' ? &q.t_older : &q.t_newer)
                 : cmp[0] == '>'  ? &q.more_than
                                  : &q.less_than;
      *at = v;
    } else if (item[0] == '!' && q.nunwanted < 16) {
      q.unwanted[q.nunwanted++] = item + 1;
    } else if (q.nwant < 16) {
      q.want[q.nwant++] = item;
    }
  }
  session_numeric(s, 321, "Channel :Users  Name");
  if (q.nwant == 1 && strpbrk(q.want[0], "*?") == NULL) {
    chat_channel *c = channel_find(s->u.srv, q.want[0]);
    if (c != NULL)
      list_one(c, &q);
    hark_unref(c);
  } else {
    names_foreach(&s->u.srv->chans, list_one, &q);
  }
  session_numeric(s, 323, ":End of /LIST");
}

/* ---- ISON, USERHOST --------------------------------------------------------- */

void cmd_ison(chat_session *s, irc_msg *m) {
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

void cmd_userhost(chat_session *s, irc_msg *m) {
  char list[IRC_LINE_MAX] = "";
  size_t len = 0;
  for (int i = 0; i < m->nparams && i < 5; i++) {
    chat_user *t = user_find(s->u.srv, m->params[i]);
    if (t != NULL && t->registered && len < 400)
      len += (size_t)snprintf(
          list + len, sizeof list - len, "%s%s%s=%c%s@%s", len ? " " : "",
          t->nick, t->modes & UMODE_O ? "*" : "", t->away ? '-' : '+',
          t->user[0] ? t->user : "~u", t->host);
    hark_unref(t);
  }
  session_numeric(s, 302, ":%s", list);
}

/* ---- STATS, LUSERS ----------------------------------------------------------- */

void cmd_stats(chat_session *s, irc_msg *m) {
  char line[768];
  server_stats_line(s->u.srv, line, sizeof line);
  session_numeric(s, 249, ":%.400s", line);
  session_numeric(s, 219, "%s :End of /STATS report",
                  m->nparams > 0 ? m->params[0] : "*");
}

void send_lusers(chat_session *s) {
  chat_server *srv = s->u.srv;
  unsigned unknown =
      srv->nclients > srv->nlocal ? srv->nclients - srv->nlocal : 0;
  unsigned servers = srv->nnodes + 1;
  session_numeric(s, 251, ":There are %u users and %u invisible on %u servers",
                  srv->nusers - srv->ninvisible, srv->ninvisible, servers);
  session_numeric(s, 252, "%u :operator(s) online", srv->nopers);
  session_numeric(s, 253, "%u :unknown connection(s)", unknown);
  session_numeric(s, 254, "%zu :channels formed", names_count(&srv->chans));
  session_numeric(s, 255, ":I have %u clients and %u servers", srv->nlocal,
                  servers - 1);
  /* the counts are in the text only: the numbers as parameters are
   * optional, and "max" is the server's whole life */
  session_numeric(s, 265, ":Current local users %u, max %u", srv->nlocal,
                  srv->max_local);
  session_numeric(s, 266, ":Current global users %u, max %u", srv->nusers,
                  srv->max_global);
}

void cmd_lusers(chat_session *s, irc_msg *m) { send_lusers(s); }

/* ---- VERSION, TIME, INFO, ADMIN, LINKS ---------------------------------------- */

void cmd_version(chat_session *s, irc_msg *m) {
  session_numeric(s, 351, "%s %s :hark %d.%d.%d", CHATD_VERSION,
                  s->u.srv->opt.name, HARK_VERSION_MAJOR, HARK_VERSION_MINOR,
                  HARK_VERSION_PATCH);
  server_isupport(s);
}

void cmd_time(chat_session *s, irc_msg *m) {
  char when[64];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof when, "%A %B %d %Y -- %H:%M:%S +00:00", &tm);
  session_numeric(s, 391, "%s :%s", s->u.srv->opt.name, when);
}

static bool about_us(chat_session *s, irc_msg *m) {
  if (m->nparams < 1 || irc_match(m->params[0], s->u.srv->opt.name))
    return true;
  chat_user *u = user_find(s->u.srv, m->params[0]);
  hark_unref(u);
  if (u != NULL)
    return true;
  session_numeric(s, 402, "%s :No such server", m->params[0]);
  return false;
}

void cmd_info(chat_session *s, irc_msg *m) {
  static const char *const lines[] = {
      CHATD_VERSION ": an IRC server built on hark and libuv.",
      "Each session, channel and user of another node is a hark object;",
      "a channel message is one hark_send to its members' receivers.",
      "Several daemons form one network through a Redis stream.",
  };
  if (!about_us(s, m))
    return;
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
    session_numeric(s, 371, ":%s", lines[i]);
  session_numeric(s, 374, ":End of /INFO list");
}

void cmd_admin(chat_session *s, irc_msg *m) {
  if (!about_us(s, m))
    return;
  const char *name = s->u.srv->opt.name;
  session_numeric(s, 256, "%s :Administrative info", name);
  session_numeric(s, 257, ":%s, node %s", name, s->u.srv->node);
  session_numeric(s, 258, ":hark-chatd");
  session_numeric(s, 259, ":no contact address configured");
}

void cmd_links(chat_session *s, irc_msg *m) {
  /* the nodes of a federation are one server to clients */
  session_numeric(s, 365, "* :End of /LINKS list.");
}

/* ---- HELP --------------------------------------------------------------------- */

typedef struct help_topic {
  const char *name, *text;
} help_topic;

static const help_topic help[] = {
    {"*", "hark-chatd understands: ADMIN AWAY CAP HELP INFO INVITE ISON JOIN "
          "KICK KILL LINKS LIST LUSERS MODE MONITOR MOTD NAMES NICK NOTICE "
          "OPER PART PASS PING PRIVMSG QUIT SETNAME STATS TAGMSG TIME TOPIC "
          "USER USERHOST VERSION WALLOPS WHO WHOIS WHOWAS.\n"
          "HELP <command> tells more."},
    {"AWAY", "AWAY [:<message>]\nMarks you away (or back, without a message)."},
    {"INVITE", "INVITE <nick> <channel>\nLets <nick> join past +i, +k, +l."},
    {"JOIN", "JOIN <channel>[,<channel>...] [<key>[,<key>...]]\nJOIN 0 "
             "leaves every channel."},
    {"KICK", "KICK <channel> <nick>[,<nick>...] [:<reason>]"},
    {"LIST", "LIST [<channel or mask>[,...]] [>n] [<n] [C<m] [C>m] [T<m] "
             "[T>m]\n!mask excludes; C and T: created or topic set less or "
             "more than m minutes ago."},
    {"MODE", "MODE <channel> [+|-]<modes> [<arguments>]\nChannel modes: "
             "b e I k l i m n p s t o v; +b m:<mask> mutes. User modes: i w "
             "B (o by OPER)."},
    {"MONITOR", "MONITOR + <nicks> | - <nicks> | C | L | S"},
    {"NAMES", "NAMES [<channel>[,<channel>...]]"},
    {"NICK", "NICK <nickname>"},
    {"NOTICE", "NOTICE <target>[,<target>...] :<text>\nNo automatic reply."},
    {"OPER", "OPER <name> <password>"},
    {"PART", "PART <channel>[,<channel>...] [:<reason>]"},
    {"PRIVMSG", "PRIVMSG <target>[,<target>...] :<text>\nA target is a "
                "nick or a channel; @#channel reaches its operators."},
    {"QUIT", "QUIT [:<reason>]"},
    {"TOPIC", "TOPIC <channel> [:<topic>]"},
    {"WHO", "WHO <mask> [o][%fields,token]"},
    {"WHOIS", "WHOIS [<server>] <nick>[,<nick>...]"},
    {"WHOWAS", "WHOWAS <nick>[,<nick>...] [<count>]"},
};

void cmd_help(chat_session *s, irc_msg *m) {
  const char *subject = m->nparams > 0 ? m->params[0] : "*";
  const help_topic *t = NULL;
  for (size_t i = 0; i < sizeof help / sizeof help[0] && t == NULL; i++)
    if (irc_casecmp(help[i].name, subject) == 0)
      t = &help[i];
  if (t == NULL) {
    session_numeric(s, 524, "%s :No help available on this topic", subject);
    return;
  }
  const char *p = t->text;
  for (int num = 704; *p; num = 705) {
    size_t n = strcspn(p, "\n");
    session_numeric(s, num, "%s :%.*s", subject, (int)n, p);
    p += n + (p[n] == '\n');
  }
  session_numeric(s, 706, "%s :End of /HELP", subject);
}

/* ---- AWAY, SETNAME -------------------------------------------------------------- */

void cmd_away(chat_session *s, irc_msg *m) {
  if (m->nparams < 1 || m->params[0][0] == '\0') {
    if (user_set_away(&s->u, NULL, 0) != 0)
      unavailable(s, s->u.nick);
    else
      session_numeric(s, 305, ":You are no longer marked as being away");
    return;
  }
  char msg[CHATD_AWAY_MAX + 1];
  clean_realname(msg, sizeof msg, m->params[0]);
  if (user_set_away(&s->u, msg, 0) != 0)
    unavailable(s, s->u.nick);
  else
    session_numeric(s, 306, ":You have been marked as being away");
}

void cmd_setname(chat_session *s, irc_msg *m) {
  const char *real = m->params[0];
  if (real[0] == '\0' || strlen(real) > CHATD_REAL_MAX) {
    session_sendf(s, ":%s FAIL SETNAME INVALID_REALNAME :Realname is not valid",
                  s->u.srv->opt.name);
    return;
  }
  char clean[CHATD_REAL_MAX + 1];
  clean_realname(clean, sizeof clean, real);
  user_set_realname(&s->u, clean, 0);
}
