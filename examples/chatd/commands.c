/* The IRC commands hark-chatd understands, one handler each. Replies to
 * the sender are queued on its session; everything a channel sees is one
 * hark_send with the channel as sender. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chatd.h"

typedef void (*command_fn)(chat_session *s, irc_msg *m);

/* Memory ran out for a command that changes what the client is in or is
 * called: nothing changed. ERR_UNAVAILRESOURCE is RFC 2812's reply to a
 * JOIN or NICK that cannot be done for now (ircu, IRCnet: channel and nick
 * delay); irssi retries a JOIN answered with it (channel-rejoin.c). The
 * reply itself is best effort: it needs memory too. */
static void unavailable(chat_session *s, const char *what) {
  log_warn("%s: out of memory: %s refused", s->nick[0] ? s->nick : "*",
           what);
  session_numeric(s, 437, "%s :Nick/channel is temporarily unavailable",
                  what);
}

static chat_channel *find_channel(chat_server *srv, const char *name) {
  return names_get(&srv->chans, name); /* new reference or NULL */
}

static chat_session *find_nick(chat_server *srv, const char *nick) {
  chat_session *t = names_get(&srv->nicks, nick);
  if (t != NULL && (t->closing || t->closed)) {
    hark_unref(t);
    return NULL;
  }
  return t;
}

/* ---- registration ----------------------------------------------------- */

static void send_motd(chat_session *s) {
  chat_server *srv = s->srv;
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

static void welcome(chat_session *s) {
  chat_server *srv = s->srv;
  const chat_options *o = &srv->opt;
  if (!s->pass_ok) {
    session_numeric(s, 464, ":Password incorrect");
    server_schedule_close(srv, s, "Bad password");
    return;
  }
  char mask[IRC_LINE_MAX], date[64];
  session_mask(s, mask, sizeof mask);
  /* 001 is what tells the client it is registered: without the memory to
   * send it the client is refused, as a connection without memory for its
   * session is (session.c), and may come back. The rest of the burst is
   * best effort, like any other reply. */
  chat_buf *w = chat_buf_printf(":%s 001 %s :Welcome to the hark IRC network "
                                "%s",
                                o->name, s->nick, mask);
  if (w == NULL || session_reserve(s, 1) != 0) {
    chat_buf_unref(w);
    log_warn("%s: out of memory: registration refused", s->nick);
    session_sendf(s, "ERROR :Closing Link: %s (Out of memory)", s->host);
    server_schedule_close(srv, s, "Out of memory");
    return;
  }
  s->registered = true;
  struct tm tm;
  gmtime_r(&srv->started, &tm);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", &tm);
  session_send_buf(s, w); /* reserved: cannot fail */
  chat_buf_unref(w);
  session_numeric(s, 2, ":Your host is %s, running version %s", o->name,
                  CHATD_VERSION);
  session_numeric(s, 3, ":This server was created %s", date);
  session_numeric(s, 4, "%s %s o kno", o->name, CHATD_VERSION);
  session_numeric(s, 5,
                  "CHANTYPES=# PREFIX=(o)@ CHANMODES=,k,,n NICKLEN=%u "
                  "CHANNELLEN=%u CHANLIMIT=#:%u CASEMAPPING=rfc1459 "
                  "NETWORK=hark :are supported by this server",
                  o->nicklen, o->channellen, o->max_chans_per_client);
  send_motd(s);
  fed_user_info(s);
  log_info("%s registered from %s", s->nick, s->host);
}

static void cmd_pass(chat_session *s, irc_msg *m) {
  if (s->registered) {
    session_numeric(s, 462, ":You may not reregister");
    return;
  }
  const char *pw = s->srv->opt.password;
  s->pass_ok = pw == NULL || strcmp(m->params[0], pw) == 0;
  if (!s->pass_ok) {
    session_numeric(s, 464, ":Password incorrect");
    session_sendf(s, "ERROR :Closing Link: %s (Bad password)", s->host);
    server_schedule_close(s->srv, s, "Bad password");
  }
}

static void cmd_nick(chat_session *s, irc_msg *m) {
  chat_server *srv = s->srv;
  if (m->nparams < 1 || m->params[0][0] == '\0') {
    session_numeric(s, 431, ":No nickname given");
    return;
  }
  const char *nick = m->params[0];
  if (!irc_valid_nick(nick, srv->opt.nicklen)) {
    session_numeric(s, 432, "%s :Erroneous nickname", nick);
    return;
  }
  if (strcmp(nick, s->nick) == 0)
    return;
  chat_session *other = find_nick(srv, nick);
  hark_unref(other);
  if (other != NULL && other != s) {
    session_numeric(s, 433, "%s :Nickname is already in use", nick);
    return;
  }
  /* Federated: the nick is claimed network-wide first (asynchronously);
   * command_nick_apply follows, or 433. */
  if (fed_nick_claim(s, nick))
    return;
  command_nick_apply(s, nick);
}

void command_nick_apply(chat_session *s, const char *nick) {
  chat_server *srv = s->srv;
  if (s->closing || s->closed || strcmp(nick, s->nick) == 0)
    return;
  chat_session *other = find_nick(srv, nick);
  hark_unref(other);
  if (other != NULL && other != s) {
    session_numeric(s, 433, "%s :Nickname is already in use", nick);
    return;
  }
  char old[CHATD_NICK_MAX + 1], mask[IRC_LINE_MAX];
  memcpy(old, s->nick, sizeof old);
  session_mask(s, mask, sizeof mask);
  /* A registered client learns its new nick from this line alone: the
   * change is made only if the line can reach it. */
  chat_buf *line = NULL;
  if (s->registered &&
      ((line = chat_buf_printf(":%s NICK :%s", mask, nick)) == NULL ||
       session_reserve(s, 1) != 0)) {
    chat_buf_unref(line);
    unavailable(s, nick);
    return;
  }
  if (names_put(&srv->nicks, nick, s) != 0) {
    chat_buf_unref(line);
    unavailable(s, nick);
    return;
  }
  snprintf(s->nick, sizeof s->nick, "%s", nick);
  if (old[0] != '\0' && irc_casecmp(old, nick) != 0) {
    names_del(&srv->nicks, old, s);
    fed_nick_release(srv, old);
  }
  if (!s->registered) {
    if (s->user[0] != '\0')
      welcome(s);
    return;
  }
  /* One line for the session itself and, once each, for everyone sharing
   * a channel with it. */
  fed_user_info(s);
  session_send_buf(s, line); /* reserved: cannot fail */
  unsigned long seq = ++srv->seq;
  for (size_t i = 0; i < s->nchans; i++)
    channel_send(s->chans[i], srv->sig_nick, line, s, seq);
  chat_buf_unref(line);
}

static void cmd_user(chat_session *s, irc_msg *m) {
  if (s->registered) {
    session_numeric(s, 462, ":You may not reregister");
    return;
  }
  snprintf(s->user, sizeof s->user, "%s", m->params[0]);
  for (char *p = s->user; *p; p++)
    if (*p == '@' || *p == '!')
      *p = '_';
  snprintf(s->realname, sizeof s->realname, "%s", m->params[3]);
  if (s->nick[0] != '\0')
    welcome(s);
}

static void cmd_cap(chat_session *s, irc_msg *m) {
  /* No capabilities: an empty LS lets clients that ask carry on. */
  if (irc_casecmp(m->params[0], "LS") == 0)
    session_sendf(s, ":%s CAP * LS :", s->srv->opt.name);
  else if (irc_casecmp(m->params[0], "REQ") == 0 && m->nparams > 1)
    session_sendf(s, ":%s CAP * NAK :%s", s->srv->opt.name, m->params[1]);
}

static void cmd_ping(chat_session *s, irc_msg *m) {
  if (m->nparams < 1) {
    session_numeric(s, 409, ":No origin specified");
    return;
  }
  session_sendf(s, ":%s PONG %s :%s", s->srv->opt.name, s->srv->opt.name,
                m->params[0]);
}

static void cmd_pong(chat_session *s, irc_msg *m) {}

static void cmd_quit(chat_session *s, irc_msg *m) {
  char reason[160];
  snprintf(reason, sizeof reason, "Quit: %s",
           m->nparams > 0 ? m->params[0] : "");
  session_sendf(s, "ERROR :Closing Link: %s (%s)", s->host, reason);
  server_schedule_close(s->srv, s, reason);
}

/* ---- channels --------------------------------------------------------- */

/* Takes the caller's reference to c into s's list; false if no memory. */
static bool add_chan(chat_session *s, chat_channel *c) {
  if (s->nchans == s->chans_cap) {
    size_t ncap = s->chans_cap ? s->chans_cap * 2 : 4;
    chat_channel **nc = chat_realloc(s->chans, ncap * sizeof *nc);
    if (nc == NULL)
      return false;
    s->chans = nc;
    s->chans_cap = ncap;
  }
  s->chans[s->nchans++] = c;
  return true;
}

/* Takes c out of s's list, dropping the membership's reference (which may
 * end the channel). */
static void drop_chan(chat_session *s, chat_channel *c) {
  for (size_t i = 0; i < s->nchans; i++)
    if (s->chans[i] == c) {
      s->chans[i] = s->chans[--s->nchans];
      hark_unref(c);
      return;
    }
}

/* Like a JOIN, a PART is done only if its line reaches the members, the
 * client first (it learns it has left from it). Returns false, with 437,
 * when memory ran out: s is still a member. */
static bool part_one(chat_session *s, chat_channel *c, const char *reason) {
  char mask[IRC_LINE_MAX];
  session_mask(s, mask, sizeof mask);
  chat_buf *line = reason ? chat_buf_printf(":%s PART %s :%s", mask, c->name,
                                            reason)
                          : chat_buf_printf(":%s PART %s", mask, c->name);
  if (line == NULL || session_reserve(s, 1) != 0 ||
      channel_send(c, s->srv->sig_part, line, s, 0) < 0) {
    chat_buf_unref(line);
    unavailable(s, c->name);
    return false;
  }
  chat_buf_unref(line);
  channel_remove(c, s);
  drop_chan(s, c);
  return true;
}

static void join_one(chat_session *s, const char *name, const char *key) {
  chat_server *srv = s->srv;
  const chat_options *o = &srv->opt;
  if (!irc_valid_channel(name, o->channellen)) {
    session_numeric(s, 403, "%s :No such channel", name);
    return;
  }
  chat_channel *c = find_channel(srv, name);
  if (c != NULL && session_in_channel(s, c)) {
    hark_unref(c);
    return;
  }
  if (o->max_chans_per_client && s->nchans >= o->max_chans_per_client) {
    session_numeric(s, 405, "%s :You have joined too many channels", name);
    hark_unref(c);
    return;
  }
  bool local = c != NULL;
  hark_unref(c);
  /* A channel without members here: the network decides (key, operator,
   * topic, members), asynchronously; command_join_finish follows. */
  if (!local && fed_join(s, name, key))
    return;
  command_join_finish(s, name, key, NULL);
}

void command_join_finish(chat_session *s, const char *name, const char *key,
                         const fed_join_state *st) {
  chat_server *srv = s->srv;
  const chat_options *o = &srv->opt;
  if (s->closing || s->closed)
    return;
  chat_channel *c = find_channel(srv, name);
  if (c != NULL && session_in_channel(s, c)) {
    hark_unref(c);
    return;
  }
  if (st != NULL && !st->ok) {
    session_numeric(s, 475, "%s :Cannot join channel (+k)",
                    c != NULL ? c->name : name);
    hark_unref(c);
    return;
  }
  bool fresh = c == NULL;
  if (c == NULL) {
    if (o->max_channels && names_count(&srv->chans) >= o->max_channels) {
      session_numeric(s, 405, "%s :Too many channels on this server", name);
      return;
    }
    c = channel_new(srv, name);
    if (c == NULL) {
      unavailable(s, name);
      return;
    }
    fed_channel_load(c, st);
  } else if (c->key != NULL && (key == NULL || strcmp(key, c->key) != 0)) {
    session_numeric(s, 475, "%s :Cannot join channel (+k)", c->name);
    hark_unref(c);
    return;
  }
  /* The client learns it is in the channel from its JOIN line alone: the
   * line and room for it in the client's queue come first, and any
   * failure on the way undoes the join and answers 437 (a fresh channel
   * dies with our reference). */
  char mask[IRC_LINE_MAX];
  session_mask(s, mask, sizeof mask);
  chat_buf *line = chat_buf_printf(":%s JOIN %s", mask, c->name);
  if (line == NULL || session_reserve(s, 1) != 0 || channel_add(c, s) != 0) {
    chat_buf_unref(line);
    unavailable(s, c->name);
    hark_unref(c);
    return;
  }
  if (!add_chan(s, c)) {
    chat_buf_unref(line);
    channel_remove(c, s);
    unavailable(s, c->name);
    hark_unref(c);
    return;
  }
  if (st != NULL) { /* the network decided who is operator */
    chat_member *me = channel_member(c, s);
    if (me != NULL)
      me->op = fresh && st->op;
  }
  /* A send that fails calls no receiver: nobody, here or on the network,
   * saw the JOIN, and the join is undone. */
  int r = channel_send(c, srv->sig_join, line, s, 0);
  chat_buf_unref(line);
  if (r < 0) {
    hark_ref(c); /* for the reply: drop_chan may end the channel */
    channel_remove(c, s);
    drop_chan(s, c);
    unavailable(s, c->name);
    hark_unref(c);
    return;
  }
  if (c->topic[0] != '\0') {
    session_numeric(s, 332, "%s :%s", c->name, c->topic);
    session_numeric(s, 333, "%s %s %lld", c->name, c->topic_by,
                    (long long)c->topic_at);
  }
  channel_names(c, s);
}

static void cmd_join(chat_session *s, irc_msg *m) {
  char *list = (char *)m->params[0], *keys = NULL;
  if (strcmp(list, "0") == 0) {
    while (s->nchans > 0)
      if (!part_one(s, s->chans[s->nchans - 1], "Left all channels"))
        break; /* out of memory: the rest stay joined, 437 said so */
    return;
  }
  if (m->nparams > 1)
    keys = (char *)m->params[1];
  char *name;
  while ((name = irc_next_item(&list)) != NULL)
    join_one(s, name, irc_next_item(&keys));
}

static void cmd_part(chat_session *s, irc_msg *m) {
  char *list = (char *)m->params[0], *name;
  const char *reason = m->nparams > 1 ? m->params[1] : NULL;
  while ((name = irc_next_item(&list)) != NULL) {
    chat_channel *c = find_channel(s->srv, name);
    if (c == NULL)
      session_numeric(s, 403, "%s :No such channel", name);
    else if (!session_in_channel(s, c))
      session_numeric(s, 442, "%s :You're not on that channel", c->name);
    else
      part_one(s, c, reason);
    hark_unref(c);
  }
}

static void message(chat_session *s, irc_msg *m, const char *cmd,
                    bool notice) {
  chat_server *srv = s->srv;
  if (m->nparams < 1 || m->params[0][0] == '\0') {
    if (!notice)
      session_numeric(s, 411, ":No recipient given (%s)", cmd);
    return;
  }
  if (m->nparams < 2 || m->params[1][0] == '\0') {
    if (!notice)
      session_numeric(s, 412, ":No text to send");
    return;
  }
  char mask[IRC_LINE_MAX];
  session_mask(s, mask, sizeof mask);
  char *targets = (char *)m->params[0], *t;
  while ((t = irc_next_item(&targets)) != NULL) {
    if (t[0] == '#') {
      chat_channel *c = find_channel(srv, t);
      if (c == NULL) {
        if (!notice)
          session_numeric(s, 401, "%s :No such nick/channel", t);
        continue;
      }
      /* +n, always: only members may post, keyed channel or not */
      if (!session_in_channel(s, c)) {
        if (!notice)
          session_numeric(s, 404, "%s :Cannot send to channel", c->name);
        hark_unref(c);
        continue;
      }
      /* Formatted once; every member's queue shares this buffer. */
      chat_buf *line = chat_buf_printf(":%s %s %s :%s", mask, cmd, c->name,
                                       m->params[1]);
      channel_send(c, srv->sig_message, line, s, 0);
      chat_buf_unref(line);
      hark_unref(c);
    } else {
      chat_session *to = find_nick(srv, t);
      /* Not here: the nick's node delivers it, in this sender's order. */
      if (to == NULL && fed_privmsg(s, t, cmd, m->params[1], notice))
        continue;
      if (to == NULL || !to->registered) {
        if (!notice)
          session_numeric(s, 401, "%s :No such nick/channel", t);
        hark_unref(to);
        continue;
      }
      session_sendf(to, ":%s %s %s :%s", mask, cmd, to->nick, m->params[1]);
      hark_unref(to);
    }
  }
}

static void cmd_privmsg(chat_session *s, irc_msg *m) {
  message(s, m, "PRIVMSG", false);
}

static void cmd_notice(chat_session *s, irc_msg *m) {
  message(s, m, "NOTICE", true);
}

/* A keyed channel shows nothing to outsiders. */
static bool may_see(chat_session *s, chat_channel *c) {
  return c->key == NULL || session_in_channel(s, c);
}

static void cmd_names(chat_session *s, irc_msg *m) {
  if (m->nparams < 1) {
    session_numeric(s, 366, "* :End of /NAMES list.");
    return;
  }
  char *list = (char *)m->params[0], *name;
  while ((name = irc_next_item(&list)) != NULL) {
    chat_channel *c = find_channel(s->srv, name);
    if (c != NULL && may_see(s, c))
      channel_names(c, s);
    else if (c != NULL || !fed_names(s, name, false)) /* or the network's */
      session_numeric(s, 366, "%s :End of /NAMES list.", name);
    hark_unref(c);
  }
}

static void list_one(void *obj, void *data) {
  chat_channel *c = obj;
  chat_session *s = data;
  if (may_see(s, c))
  {
    size_t remote;
    fed_members(c, &remote);
    session_numeric(s, 322, "%s %zu :%s", c->name, channel_count(c) + remote,
                    c->topic);
  }
}

/* The channels of this node, then those of the network (remote: the
 * channels without members here; keyed ones are not shown to outsiders). */
void command_list_finish(chat_session *s, const char *filter,
                         const fed_chan_info *remote, size_t n) {
  session_numeric(s, 321, "Channel :Users  Name");
  if (filter != NULL) {
    char buf[IRC_LINE_MAX + 1];
    snprintf(buf, sizeof buf, "%s", filter);
    char *list = buf, *name;
    while ((name = irc_next_item(&list)) != NULL) {
      chat_channel *c = find_channel(s->srv, name);
      if (c != NULL)
        list_one(c, s);
      hark_unref(c);
      for (size_t i = 0; c == NULL && i < n; i++)
        if (!remote[i].keyed && irc_casecmp(remote[i].name, name) == 0)
          session_numeric(s, 322, "%s %zu :%s", remote[i].name,
                          remote[i].users, remote[i].topic);
    }
  } else {
    names_foreach(&s->srv->chans, list_one, s);
    for (size_t i = 0; i < n; i++)
      if (!remote[i].keyed)
        session_numeric(s, 322, "%s %zu :%s", remote[i].name, remote[i].users,
                        remote[i].topic);
  }
  session_numeric(s, 323, ":End of /LIST");
}

static void cmd_list(chat_session *s, irc_msg *m) {
  const char *filter = m->nparams > 0 ? m->params[0] : NULL;
  if (!fed_list(s, filter)) /* the network's channels follow */
    command_list_finish(s, filter, NULL, 0);
}

static void cmd_topic(chat_session *s, irc_msg *m) {
  chat_channel *c = find_channel(s->srv, m->params[0]);
  if (c == NULL) {
    session_numeric(s, 403, "%s :No such channel", m->params[0]);
    return;
  }
  if (m->nparams < 2) {
    if (!may_see(s, c))
      session_numeric(s, 442, "%s :You're not on that channel", c->name);
    else if (c->topic[0] == '\0')
      session_numeric(s, 331, "%s :No topic is set", c->name);
    else {
      session_numeric(s, 332, "%s :%s", c->name, c->topic);
      session_numeric(s, 333, "%s %s %lld", c->name, c->topic_by,
                      (long long)c->topic_at);
    }
  } else if (!session_in_channel(s, c)) {
    session_numeric(s, 442, "%s :You're not on that channel", c->name);
  } else {
    snprintf(c->topic, sizeof c->topic, "%s", m->params[1]);
    snprintf(c->topic_by, sizeof c->topic_by, "%s", s->nick);
    c->topic_at = time(NULL);
    char mask[IRC_LINE_MAX];
    session_mask(s, mask, sizeof mask);
    chat_buf *line =
        chat_buf_printf(":%s TOPIC %s :%s", mask, c->name, c->topic);
    channel_send(c, s->srv->sig_topic, line, s, 0);
    chat_buf_unref(line);
  }
  hark_unref(c);
}

static void who_nick(chat_session *s, const char *nick) {
  chat_session *t = find_nick(s->srv, nick);
  if (t != NULL && t->registered)
    session_numeric(s, 352, "* %s %s %s %s H :0 %s",
                    t->user[0] ? t->user : "~u", t->host, s->srv->opt.name,
                    t->nick, t->realname);
  hark_unref(t);
  session_numeric(s, 315, "%s :End of WHO list.", nick);
}

static void cmd_who(chat_session *s, irc_msg *m) {
  if (m->nparams < 1) {
    session_numeric(s, 315, "* :End of WHO list.");
    return;
  }
  const char *mask = m->params[0];
  if (mask[0] != '#') {
    who_nick(s, mask);
    return;
  }
  chat_channel *c = find_channel(s->srv, mask);
  if (c != NULL && may_see(s, c))
    channel_who(c, s);
  else if (c != NULL || !fed_names(s, mask, true)) /* or the network's */
    session_numeric(s, 315, "%s :End of WHO list.", mask);
  hark_unref(c);
}

static void channel_mode(chat_session *s, chat_channel *c, irc_msg *m) {
  if (m->nparams < 2) {
    if (c->key != NULL && session_in_channel(s, c))
      session_numeric(s, 324, "%s +kn %s", c->name, c->key);
    else if (c->key != NULL)
      session_numeric(s, 324, "%s +kn", c->name);
    else
      session_numeric(s, 324, "%s +n", c->name);
    session_numeric(s, 329, "%s %lld", c->name, (long long)c->created);
    return;
  }
  const char *modes = m->params[1];
  int arg = 2;
  if (strcmp(modes, "b") == 0 || strcmp(modes, "+b") == 0) {
    session_numeric(s, 368, "%s :End of channel ban list", c->name);
    return;
  }
  if (!session_in_channel(s, c)) {
    session_numeric(s, 442, "%s :You're not on that channel", c->name);
    return;
  }
  chat_member *me = channel_member(c, s);
  if (me == NULL || !me->op) {
    session_numeric(s, 482, "%s :You're not channel operator", c->name);
    return;
  }
  char mask[IRC_LINE_MAX];
  session_mask(s, mask, sizeof mask);
  bool add = true;
  for (const char *p = modes; *p; p++) {
    chat_buf *line = NULL;
    switch (*p) {
    case '+':
    case '-':
      add = *p == '+';
      break;
    case 'n':
      break; /* always on */
    case 'k':
      if (add) {
        if (arg >= m->nparams || m->params[arg][0] == '\0' ||
            strchr(m->params[arg], ' ') != NULL) {
          session_numeric(s, 461, "MODE :Not enough parameters");
          break;
        }
        channel_set_key(c, m->params[arg++]);
        line = chat_buf_printf(":%s MODE %s +k %s", mask, c->name, c->key);
      } else if (c->key != NULL) {
        if (arg < m->nparams)
          arg++;
        channel_set_key(c, NULL);
        line = chat_buf_printf(":%s MODE %s -k *", mask, c->name);
      }
      break;
    case 'o': {
      if (arg >= m->nparams) {
        session_numeric(s, 461, "MODE :Not enough parameters");
        break;
      }
      const char *nick = m->params[arg++];
      chat_session *t = find_nick(s->srv, nick);
      chat_member *tm = t != NULL ? channel_member(c, t) : NULL;
      fed_member *rm = t == NULL ? fed_member_find(c, nick) : NULL;
      if (rm != NULL) { /* a member on another node */
        rm->op = add;
        line = chat_buf_printf(":%s MODE %s %co %s", mask, c->name,
                               add ? '+' : '-', rm->nick);
      } else if (t == NULL)
        session_numeric(s, 401, "%s :No such nick/channel", nick);
      else if (tm == NULL)
        session_numeric(s, 441, "%s %s :They aren't on that channel",
                        t->nick, c->name);
      else {
        tm->op = add;
        line = chat_buf_printf(":%s MODE %s %co %s", mask, c->name,
                               add ? '+' : '-', t->nick);
      }
      hark_unref(t);
      break;
    }
    default:
      session_numeric(s, 472, "%c :is unknown mode char to me", *p);
    }
    if (line != NULL) {
      channel_send(c, s->srv->sig_mode, line, s, 0);
      chat_buf_unref(line);
    }
  }
}

static void cmd_mode(chat_session *s, irc_msg *m) {
  const char *target = m->params[0];
  if (target[0] == '#') {
    chat_channel *c = find_channel(s->srv, target);
    if (c == NULL)
      session_numeric(s, 403, "%s :No such channel", target);
    else
      channel_mode(s, c, m);
    hark_unref(c);
    return;
  }
  if (irc_casecmp(target, s->nick) != 0) {
    chat_session *t = find_nick(s->srv, target);
    if (t == NULL)
      session_numeric(s, 401, "%s :No such nick/channel", target);
    else
      session_numeric(s, 502, ":Can't change mode for other users");
    hark_unref(t);
    return;
  }
  session_numeric(s, 221, "+");
}

static void cmd_whois(chat_session *s, irc_msg *m) {
  const char *nick = m->params[m->nparams > 1 ? 1 : 0];
  chat_session *t = find_nick(s->srv, nick);
  if (t == NULL && fed_whois(s, nick)) /* on another node, or 401 */
    return;
  if (t == NULL || !t->registered) {
    session_numeric(s, 401, "%s :No such nick/channel", nick);
  } else {
    session_numeric(s, 311, "%s %s %s * :%s", t->nick,
                    t->user[0] ? t->user : "~u", t->host, t->realname);
    session_numeric(s, 312, "%s %s :hark-chatd", t->nick, s->srv->opt.name);
  }
  hark_unref(t);
  session_numeric(s, 318, "%s :End of /WHOIS list.", nick);
}

static void cmd_ison(chat_session *s, irc_msg *m) {
  char list[IRC_LINE_MAX] = "";
  size_t len = 0;
  char *missing[64]; /* not here: asked of the network */
  size_t nmissing = 0;
  for (int i = 0; i < m->nparams; i++) {
    char *items = (char *)m->params[i], *nick;
    while ((nick = strsep(&items, " ")) != NULL) {
      chat_session *t = *nick ? find_nick(s->srv, nick) : NULL;
      if (t != NULL && t->registered && len + strlen(t->nick) + 2 < 400)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
                                len ? " " : "", t->nick);
      else if (t == NULL && *nick && nmissing < 64 &&
               irc_valid_nick(nick, CHATD_NICK_MAX))
        missing[nmissing++] = nick;
      hark_unref(t);
    }
  }
  if (!fed_ison(s, list, missing, nmissing))
    session_numeric(s, 303, ":%s", list);
}

static void cmd_motd(chat_session *s, irc_msg *m) { send_motd(s); }

static void cmd_stats(chat_session *s, irc_msg *m) {
  char line[384];
  server_stats_line(s->srv, line, sizeof line);
  session_numeric(s, 249, ":%s", line);
  session_numeric(s, 219, "%s :End of /STATS report",
                  m->nparams > 0 ? m->params[0] : "*");
}

static void cmd_lusers(chat_session *s, irc_msg *m) {
  session_numeric(s, 251, ":There are %u users and 0 invisible on 1 servers",
                  s->srv->nclients);
  session_numeric(s, 254, "%zu :channels formed",
                  names_count(&s->srv->chans));
}

static void cmd_away(chat_session *s, irc_msg *m) {
  session_numeric(s, 305, ":You are no longer marked as being away");
}

typedef struct command {
  const char *name;
  command_fn fn;
  int min_params;
  bool before_registration;
} command;

static const command commands[] = {
    {"PRIVMSG", cmd_privmsg, 0, false},
    {"NOTICE", cmd_notice, 0, false},
    {"PING", cmd_ping, 0, true},
    {"PONG", cmd_pong, 0, true},
    {"JOIN", cmd_join, 1, false},
    {"PART", cmd_part, 1, false},
    {"NICK", cmd_nick, 0, true},
    {"USER", cmd_user, 4, true},
    {"PASS", cmd_pass, 1, true},
    {"CAP", cmd_cap, 1, true},
    {"QUIT", cmd_quit, 0, true},
    {"NAMES", cmd_names, 0, false},
    {"LIST", cmd_list, 0, false},
    {"TOPIC", cmd_topic, 1, false},
    {"WHO", cmd_who, 0, false},
    {"MODE", cmd_mode, 1, false},
    {"WHOIS", cmd_whois, 1, false},
    {"ISON", cmd_ison, 1, false},
    {"MOTD", cmd_motd, 0, false},
    {"STATS", cmd_stats, 0, false},
    {"LUSERS", cmd_lusers, 0, false},
    {"AWAY", cmd_away, 0, false},
};

void command_line(chat_session *s, char *line, size_t len) {
  irc_msg m;
  if (irc_parse(line, len, &m) != 0)
    return;
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    const command *c = &commands[i];
    if (strcmp(m.command, c->name) != 0)
      continue;
    if (!s->registered && !c->before_registration) {
      session_numeric(s, 451, ":You have not registered");
      return;
    }
    if (m.nparams < c->min_params) {
      if (c->fn == cmd_whois)
        session_numeric(s, 431, ":No nickname given");
      else
        session_numeric(s, 461, "%s :Not enough parameters", c->name);
      return;
    }
    c->fn(s, &m);
    return;
  }
  if (!s->registered)
    session_numeric(s, 451, ":You have not registered");
  else
    session_numeric(s, 421, "%.32s :Unknown command", m.command);
}

void command_quit_broadcast(chat_session *s, const char *reason) {
  chat_server *srv = s->srv;
  if (s->registered && s->nchans > 0) {
    char mask[IRC_LINE_MAX];
    session_mask(s, mask, sizeof mask);
    chat_buf *line = chat_buf_printf(":%s QUIT :%s", mask, reason);
    unsigned long seq = ++srv->seq;
    for (size_t i = 0; i < s->nchans; i++)
      channel_send(s->chans[i], srv->sig_quit, line, s, seq);
    chat_buf_unref(line);
  }
  if (s->nick[0] != '\0') {
    names_del(&srv->nicks, s->nick, s);
    fed_nick_release(srv, s->nick);
  }
}
