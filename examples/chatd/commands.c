/* The IRC commands that change something, one handler each: they check
 * the request and answer its errors, then call the operation of user.c
 * or channel.c that does it and emits it. No command knows who receives
 * what it emits: local sessions, and federation when it runs. The
 * read-only commands are in queries.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chatd.h"

/* Memory ran out for a command that changes what the client is in or is
 * called: nothing changed. ERR_UNAVAILRESOURCE is RFC 2812's reply to a
 * JOIN or NICK that cannot be done for now (ircu, IRCnet: channel and nick
 * delay); irssi retries a JOIN answered with it (channel-rejoin.c). The
 * reply itself is best effort: it needs memory too. */
static void unavailable(chat_session *s, const char *what) {
  log_warn("%s: out of memory: %s refused", s->u.nick[0] ? s->u.nick : "*",
           what);
  session_numeric(s, 437, "%s :Nick/channel is temporarily unavailable", what);
}

/* ---- up to date ---------------------------------------------------------- */

static void settled(chat_claim *cl, chat_user *who, bool ok) {
  chat_session *s = user_session(who);
  if (s != NULL && cl->held)
    session_unhold(s, cl->hold);
}

/* What another node did before this command reached us (a JOIN, a +k, a
 * new nick) may not be here yet: the receivers of sig_settle say when it
 * is (at once when alone). The line then runs again, once. */
bool command_settle(chat_session *s) {
  if (s->settled)
    return false; /* it waited once already */
  chat_claim *cl = NULL;
  if (claim_run(s->u.srv->sig_settle, &s->u, "", settled, &cl) != 0)
    return false; /* up to date, or no memory to wait: answer now */
  cl->hold = session_hold(s);
  cl->held = true;
  session_retry(s);
  return true;
}

/* ---- registration ----------------------------------------------------- */

static void welcome(chat_session *s) {
  chat_server *srv = s->u.srv;
  const chat_options *o = &srv->opt;
  if (!s->pass_ok) {
    session_numeric(s, 464, ":Password incorrect");
    server_schedule_close(srv, s, "Bad password");
    return;
  }
  char mask[IRC_LINE_MAX], date[64];
  user_mask(&s->u, mask, sizeof mask);
  /* 001 is what tells the client it is registered: without the memory to
   * send it the client is refused, as a connection without memory for its
   * session is (session.c), and may come back. The rest of the burst is
   * best effort, like any other reply. */
  chat_buf *w = chat_buf_printf(":%s 001 %s :Welcome to the hark IRC network "
                                "%s",
                                o->name, s->u.nick, mask);
  if (w == NULL || session_reserve(s, 1) != 0) {
    chat_buf_unref(w);
    log_warn("%s: out of memory: registration refused", s->u.nick);
    session_sendf(s, "ERROR :Closing Link: %s (Out of memory)", s->u.host);
    server_schedule_close(srv, s, "Out of memory");
    return;
  }
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
  user_register(&s->u, 0);
  log_info("%s registered from %s", s->u.nick, s->u.host);
}

static void cmd_pass(chat_session *s, irc_msg *m) {
  if (s->u.registered) {
    session_numeric(s, 462, ":You may not reregister");
    return;
  }
  const char *pw = s->u.srv->opt.password;
  s->pass_ok = pw == NULL || strcmp(m->params[0], pw) == 0;
  if (!s->pass_ok) {
    session_numeric(s, 464, ":Password incorrect");
    session_sendf(s, "ERROR :Closing Link: %s (Bad password)", s->u.host);
    server_schedule_close(s->u.srv, s, "Bad password");
  }
}

/* Someone else has nick here (a user of this node or of another). */
static bool taken(chat_session *s, const char *nick) {
  chat_user *other = user_find(s->u.srv, nick);
  hark_unref(other);
  return other != NULL && other != &s->u;
}

static void nick_apply(chat_session *s, const char *nick) {
  if (s->closing || s->closed || strcmp(nick, s->u.nick) == 0)
    return;
  if (taken(s, nick)) {
    session_numeric(s, 433, "%s :Nickname is already in use", nick);
    return;
  }
  if (user_set_nick(&s->u, nick, 0) != 0) {
    unavailable(s, nick);
    return;
  }
  if (!s->u.registered && s->u.user[0] != '\0')
    welcome(s);
}

/* The network's answer to a nick claim (at once when no receiver of
 * sig_claim needed time). */
static void nick_claimed(chat_claim *cl, chat_user *who, bool granted) {
  chat_session *s = user_session(who);
  if (s == NULL)
    return;
  if (!granted && !s->closing && !s->closed)
    session_numeric(s, 433, "%s :Nickname is already in use", cl->nick);
  else if (granted)
    nick_apply(s, cl->nick);
  if (cl->held) /* the lines after the NICK go on */
    session_unhold(s, cl->hold);
}

static void cmd_nick(chat_session *s, irc_msg *m) {
  chat_server *srv = s->u.srv;
  if (m->nparams < 1 || m->params[0][0] == '\0') {
    session_numeric(s, 431, ":No nickname given");
    return;
  }
  const char *nick = m->params[0];
  if (!irc_valid_nick(nick, srv->opt.nicklen)) {
    session_numeric(s, 432, "%s :Erroneous nickname", nick);
    return;
  }
  if (strcmp(nick, s->u.nick) == 0)
    return;
  if (taken(s, nick)) {
    if (!command_settle(s)) /* (it may have been freed meanwhile) */
      session_numeric(s, 433, "%s :Nickname is already in use", nick);
    return;
  }
  if (s->u.nick[0] != '\0' && irc_casecmp(s->u.nick, nick) == 0) {
    nick_apply(s, nick); /* a change of case: ours already */
    return;
  }
  /* Whoever else must agree (the network, when federated) answers now or
   * later; the session's next lines wait for the answer. */
  chat_claim *cl = NULL;
  int r = claim_run(srv->sig_claim, &s->u, nick, nick_claimed, &cl);
  if (r < 0) {
    unavailable(s, nick);
  } else if (r == 0) {
    cl->hold = session_hold(s);
    cl->held = true;
  }
}

/* RFC 2812's user: any octet but NUL, CR, LF, space and '@'; and not a
 * control character or '!' either, which would break a prefix or a
 * terminal. Such bytes become '_'. */
static void clean_username(char *dst, size_t cap, const char *src) {
  size_t i = 0;
  for (; src[i] != '\0' && i + 1 < cap; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[i] = c < 0x21 || c == 0x7f || c == '@' || c == '!' ? '_' : (char)c;
  }
  dst[i] = '\0';
}

/* A realname is free text, but a control character in it (TAB, CR, the
 * CTCP marker...) is shown as a space. */
static void clean_realname(char *dst, size_t cap, const char *src) {
  size_t i = 0;
  for (; src[i] != '\0' && i + 1 < cap; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
  }
  dst[i] = '\0';
}

static void cmd_user(chat_session *s, irc_msg *m) {
  if (s->u.registered) {
    session_numeric(s, 462, ":You may not reregister");
    return;
  }
  if (m->params[0][0] == '\0') {
    session_numeric(s, 461, "USER :Not enough parameters");
    return;
  }
  clean_username(s->u.user, sizeof s->u.user, m->params[0]);
  clean_realname(s->u.realname, sizeof s->u.realname, m->params[3]);
  if (s->u.nick[0] != '\0')
    welcome(s);
}

static void cmd_cap(chat_session *s, irc_msg *m) {
  /* No capabilities: an empty LS lets clients that ask carry on. */
  if (irc_casecmp(m->params[0], "LS") == 0)
    session_sendf(s, ":%s CAP * LS :", s->u.srv->opt.name);
  else if (irc_casecmp(m->params[0], "REQ") == 0 && m->nparams > 1)
    session_sendf(s, ":%s CAP * NAK :%s", s->u.srv->opt.name, m->params[1]);
}

static void cmd_ping(chat_session *s, irc_msg *m) {
  if (m->nparams < 1) {
    session_numeric(s, 409, ":No origin specified");
    return;
  }
  session_sendf(s, ":%s PONG %s :%s", s->u.srv->opt.name, s->u.srv->opt.name,
                m->params[0]);
}

static void cmd_pong(chat_session *s, irc_msg *m) {}

static void cmd_quit(chat_session *s, irc_msg *m) {
  char reason[160];
  snprintf(reason, sizeof reason, "Quit: %s",
           m->nparams > 0 ? m->params[0] : "");
  session_sendf(s, "ERROR :Closing Link: %s (%s)", s->u.host, reason);
  server_schedule_close(s->u.srv, s, reason);
}

/* ---- channels --------------------------------------------------------- */

/* The channel named name that s may act on as a member: a new reference,
 * or NULL after 403 or 442. */
static chat_channel *member_channel(chat_session *s, const char *name) {
  chat_channel *c = channel_find(s->u.srv, name);
  if (c == NULL) {
    session_numeric(s, 403, "%s :No such channel", name);
  } else if (!user_in_channel(&s->u, c)) {
    session_numeric(s, 442, "%s :You're not on that channel", c->name);
    hark_unref(c);
    c = NULL;
  }
  return c;
}

static bool is_op(chat_channel *c, chat_session *s) {
  chat_member *me = channel_member(c, &s->u);
  if (me != NULL && me->op)
    return true;
  session_numeric(s, 482, "%s :You're not channel operator", c->name);
  return false;
}

static bool part_one(chat_session *s, chat_channel *c, const char *reason) {
  if (channel_part(c, &s->u, reason, 0) == 0)
    return true;
  unavailable(s, c->name); /* still a member */
  return false;
}

static void join_one(chat_session *s, const char *name, const char *key) {
  chat_server *srv = s->u.srv;
  const chat_options *o = &srv->opt;
  if (!irc_valid_channel(name, o->channellen)) {
    session_numeric(s, 403, "%s :No such channel", name);
    return;
  }
  chat_channel *c = channel_find(srv, name);
  if (c != NULL && user_in_channel(&s->u, c)) {
    hark_unref(c);
    return;
  }
  if (o->max_chans_per_client && s->u.nchans >= o->max_chans_per_client) {
    session_numeric(s, 405, "%s :You have joined too many channels", name);
    hark_unref(c);
    return;
  }
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
  } else if (c->key != NULL && (key == NULL || strcmp(key, c->key) != 0)) {
    session_numeric(s, 475, "%s :Cannot join channel (+k)", c->name);
    hark_unref(c);
    return;
  }
  /* The first member of the network is operator. The client learns it is
   * in from its JOIN line alone: if that cannot be done, nothing is, and
   * 437 says so (a fresh channel dies with our reference). */
  if (channel_join(c, &s->u, channel_count(c) == 0, 0) != 0) {
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
  hark_unref(c);
}

static void cmd_join(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  char *list = (char *)m->params[0], *keys = NULL;
  if (strcmp(list, "0") == 0) {
    while (s->u.nchans > 0)
      if (!part_one(s, s->u.chans[s->u.nchans - 1], "Left all channels"))
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
    chat_channel *c = member_channel(s, name);
    if (c != NULL)
      part_one(s, c, reason);
    hark_unref(c);
  }
}

static void cmd_kick(chat_session *s, irc_msg *m) {
  if (m->nparams < 2) {
    session_numeric(s, 461, "KICK :Not enough parameters");
    return;
  }
  if (command_settle(s))
    return;
  chat_channel *c = member_channel(s, m->params[0]);
  if (c == NULL)
    return;
  if (!is_op(c, s)) {
    hark_unref(c);
    return;
  }
  const char *reason = m->nparams > 2 ? m->params[2] : s->u.nick;
  char *list = (char *)m->params[1], *nick;
  while ((nick = irc_next_item(&list)) != NULL) {
    chat_user *t = user_find(s->u.srv, nick);
    if (t == NULL || !user_in_channel(t, c))
      session_numeric(s, 441, "%s %s :They aren't on that channel",
                      t ? t->nick : nick, c->name);
    else if (channel_kick(c, &s->u, t, reason, 0) != 0)
      unavailable(s, c->name);
    hark_unref(t);
  }
  hark_unref(c);
}

/* Whether a target of a message would get an error here: a channel s is
 * not in, a nick nobody has. (A list is checked whole, before anything is
 * sent: the line may have to run again.) */
static bool any_error(chat_session *s, const char *targets) {
  char buf[IRC_LINE_MAX + 1], *list = buf, *t;
  snprintf(buf, sizeof buf, "%s", targets);
  bool err = false;
  while (!err && (t = irc_next_item(&list)) != NULL) {
    if (t[0] == '#') {
      chat_channel *c = channel_find(s->u.srv, t);
      err = c == NULL || !user_in_channel(&s->u, c);
      hark_unref(c);
    } else {
      chat_user *to = user_find(s->u.srv, t);
      err = to == NULL || !to->registered;
      hark_unref(to);
    }
  }
  return err;
}

static void message(chat_session *s, irc_msg *m, const char *cmd, bool notice) {
  chat_server *srv = s->u.srv;
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
  if (any_error(s, m->params[0]) && command_settle(s))
    return;
  char *targets = (char *)m->params[0], *t;
  while ((t = irc_next_item(&targets)) != NULL) {
    if (t[0] == '#') {
      chat_channel *c = channel_find(srv, t);
      if (c == NULL) {
        if (!notice)
          session_numeric(s, 401, "%s :No such nick/channel", t);
        continue;
      }
      /* +n, always: only members may post, wherever they are */
      if (!user_in_channel(&s->u, c)) {
        if (!notice)
          session_numeric(s, 404, "%s :Cannot send to channel", c->name);
      } else {
        channel_say(c, &s->u, cmd, m->params[1], 0);
      }
      hark_unref(c);
    } else {
      chat_user *to = user_find(srv, t);
      if (to == NULL || !to->registered) {
        if (!notice)
          session_numeric(s, 401, "%s :No such nick/channel", t);
      } else {
        user_say(to, &s->u, cmd, m->params[1], 0);
      }
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

static void cmd_topic(chat_session *s, irc_msg *m) {
  if (m->nparams < 2 && command_settle(s))
    return;
  chat_channel *c = channel_find(s->u.srv, m->params[0]);
  if (c == NULL) {
    session_numeric(s, 403, "%s :No such channel", m->params[0]);
    return;
  }
  if (m->nparams < 2) {
    if (!channel_visible(c, &s->u))
      session_numeric(s, 442, "%s :You're not on that channel", c->name);
    else if (c->topic[0] == '\0')
      session_numeric(s, 331, "%s :No topic is set", c->name);
    else {
      session_numeric(s, 332, "%s :%s", c->name, c->topic);
      session_numeric(s, 333, "%s %s %lld", c->name, c->topic_by,
                      (long long)c->topic_at);
    }
  } else if (!user_in_channel(&s->u, c)) {
    session_numeric(s, 442, "%s :You're not on that channel", c->name);
  } else if (channel_topic(c, &s->u, NULL, m->params[1], time(NULL), 0) != 0) {
    unavailable(s, c->name);
  }
  hark_unref(c);
}

static void channel_mode(chat_session *s, chat_channel *c, irc_msg *m) {
  if (m->nparams < 2) {
    if (c->key != NULL && user_in_channel(&s->u, c))
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
  if (!user_in_channel(&s->u, c)) {
    session_numeric(s, 442, "%s :You're not on that channel", c->name);
    return;
  }
  if (!is_op(c, s))
    return;
  bool add = true;
  for (const char *p = modes; *p; p++) {
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
        if (channel_mode_key(c, &s->u, m->params[arg++], 0) != 0)
          unavailable(s, c->name);
      } else if (c->key != NULL) {
        if (arg < m->nparams)
          arg++;
        if (channel_mode_key(c, &s->u, NULL, 0) != 0)
          unavailable(s, c->name);
      }
      break;
    case 'o': {
      if (arg >= m->nparams) {
        session_numeric(s, 461, "MODE :Not enough parameters");
        break;
      }
      const char *nick = m->params[arg++];
      chat_user *t = user_find(s->u.srv, nick);
      if (t == NULL)
        session_numeric(s, 401, "%s :No such nick/channel", nick);
      else if (channel_member(c, t) == NULL)
        session_numeric(s, 441, "%s %s :They aren't on that channel", t->nick,
                        c->name);
      else if (channel_mode_op(c, &s->u, t, add, 0) != 0)
        unavailable(s, c->name);
      hark_unref(t);
      break;
    }
    default:
      session_numeric(s, 472, "%c :is unknown mode char to me", *p);
    }
  }
}

static void cmd_mode(chat_session *s, irc_msg *m) {
  const char *target = m->params[0];
  if (target[0] == '#' && command_settle(s))
    return;
  if (target[0] == '#') {
    chat_channel *c = channel_find(s->u.srv, target);
    if (c == NULL)
      session_numeric(s, 403, "%s :No such channel", target);
    else
      channel_mode(s, c, m);
    hark_unref(c);
    return;
  }
  if (irc_casecmp(target, s->u.nick) != 0) {
    chat_user *t = user_find(s->u.srv, target);
    if (t == NULL)
      session_numeric(s, 401, "%s :No such nick/channel", target);
    else
      session_numeric(s, 502, ":Can't change mode for other users");
    hark_unref(t);
    return;
  }
  session_numeric(s, 221, "+");
}

static const chat_command commands[] = {
    {"PRIVMSG", cmd_privmsg, 0, false}, {"NOTICE", cmd_notice, 0, false},
    {"PING", cmd_ping, 0, true},        {"PONG", cmd_pong, 0, true},
    {"JOIN", cmd_join, 1, false},       {"PART", cmd_part, 1, false},
    {"KICK", cmd_kick, 0, false},       {"NICK", cmd_nick, 0, true},
    {"USER", cmd_user, 4, true},        {"PASS", cmd_pass, 1, true},
    {"CAP", cmd_cap, 1, true},          {"QUIT", cmd_quit, 0, true},
    {"TOPIC", cmd_topic, 1, false},     {"MODE", cmd_mode, 1, false},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const chat_command *lookup(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(name, commands[i].name) == 0)
      return &commands[i];
  for (size_t i = 0; i < nquery_commands; i++)
    if (strcmp(name, query_commands[i].name) == 0)
      return &query_commands[i];
  return NULL;
}

void command_line(chat_session *s, char *line, size_t len) {
  irc_msg m;
  if (irc_parse(line, len, &m) != 0)
    return;
  const chat_command *c = lookup(m.command);
  if (c == NULL) {
    if (!s->u.registered)
      session_numeric(s, 451, ":You have not registered");
    else
      session_numeric(s, 421, "%.32s :Unknown command", m.command);
    return;
  }
  if (!s->u.registered && !c->before_registration) {
    session_numeric(s, 451, ":You have not registered");
    return;
  }
  if (m.nparams < c->min_params) {
    if (strcmp(c->name, "WHOIS") == 0)
      session_numeric(s, 431, ":No nickname given");
    else
      session_numeric(s, 461, "%s :Not enough parameters", c->name);
    return;
  }
  c->fn(s, &m);
}

void command_quit_broadcast(chat_session *s, const char *reason) {
  user_quit(&s->u, reason, 0);
}
