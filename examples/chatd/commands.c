/* The command table, and the commands that act on channels and send
 * messages: one handler each, which checks the request and answers its
 * errors, then calls the operation of user.c, channel.c or chanmodes.c
 * that does it and emits it. No command knows who receives what it
 * emits: local sessions, and federation when it runs. The other commands
 * live in files by concern (cmd.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

/* Memory ran out for a command that changes what the client is in or is
 * called: nothing changed. ERR_UNAVAILRESOURCE is RFC 2812's reply to a
 * JOIN or NICK that cannot be done for now (ircu, IRCnet: channel and nick
 * delay); irssi retries a JOIN answered with it (channel-rejoin.c). The
 * reply itself is best effort: it needs memory too. */
void unavailable(chat_session *s, const char *what) {
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

/* ---- helpers ------------------------------------------------------------- */

size_t split_targets(chat_session *s, char *list, char **out, size_t max) {
  size_t n = 0;
  char *item;
  while ((item = irc_next_item(&list)) != NULL) {
    bool dup = false;
    for (size_t i = 0; i < n && !dup; i++)
      dup = irc_casecmp(out[i], item) == 0;
    if (dup)
      continue; /* one delivery per distinct target */
    if (n == max) {
      session_numeric(s, 407, "%s :Too many targets (at most %zu)", item, max);
      break;
    }
    out[n++] = item;
  }
  return n;
}

size_t join_targets_max(chat_server *srv) {
  unsigned m = srv->opt.max_chans_per_client;
  return m != 0 && m < 100 ? m : 100;
}

chat_channel *member_channel(chat_session *s, const char *name) {
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

bool require_op(chat_channel *c, chat_session *s) {
  chat_membership *me = user_membership(&s->u, c);
  if (me != NULL && me->op)
    return true;
  session_numeric(s, 482, "%s :You're not channel operator", c->name);
  return false;
}

/* ---- simple commands ---------------------------------------------------- */

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
  session_error_close(s, reason);
}

/* ---- channels --------------------------------------------------------- */

static bool part_one(chat_session *s, chat_channel *c, const char *reason) {
  if (channel_part(c, &s->u, reason, 0) == 0)
    return true;
  unavailable(s, c->name); /* still a member */
  return false;
}

/* Why s may not join c (a numeric and its text), or 0. An invitation
 * lets one in past +i, +k, +l and bans. */
static int join_refusal(chat_channel *c, chat_session *s, const char *key,
                        const char **why) {
  if (channel_take_invite(c, &s->u, false))
    return 0;
  if (channel_banned(c, &s->u)) {
    *why = "Cannot join channel (+b)";
    return 474;
  }
  if ((c->modes & CMODE_I) && !channel_masks_match(&c->invex, &s->u)) {
    *why = "Cannot join channel (+i)";
    return 473;
  }
  if (c->key != NULL && (key == NULL || strcmp(key, c->key) != 0)) {
    *why = "Cannot join channel (+k)";
    return 475;
  }
  if (c->limit != 0 && channel_count(c) >= c->limit) {
    *why = "Cannot join channel (+l)";
    return 471;
  }
  return 0;
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
  /* CHANLIMIT=#:N,&:N: the limit is per kind of channel */
  size_t same = 0;
  for (size_t i = 0; o->max_chans_per_client && i < s->u.nchans; i++)
    same += s->u.chans[i].chan->name[0] == name[0];
  if (o->max_chans_per_client && same >= o->max_chans_per_client) {
    session_numeric(s, 405, "%s :You have joined too many channels", name);
    hark_unref(c);
    return;
  }
  const char *why;
  int refusal;
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
  } else if ((refusal = join_refusal(c, s, key, &why)) != 0) {
    session_numeric(s, refusal, "%s :%s", c->name, why);
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
  channel_names(c, s, true);
  hark_unref(c);
}

static void cmd_join(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  char *list = (char *)m->params[0], *keys = NULL;
  if (strcmp(list, "0") == 0) {
    while (s->u.nchans > 0)
      if (!part_one(s, s->u.chans[s->u.nchans - 1].chan, "Left all channels"))
        break; /* out of memory: the rest stay joined, 437 said so */
    return;
  }
  if (m->nparams > 1)
    keys = (char *)m->params[1];
  /* keys go with the channels by position, duplicates or not */
  char *chans[128], *keyv[128];
  size_t n = 0, max = join_targets_max(s->u.srv);
  char *name;
  while ((name = irc_next_item(&list)) != NULL) {
    char *key = irc_next_item(&keys);
    bool dup = false;
    for (size_t i = 0; i < n && !dup; i++)
      dup = irc_casecmp(chans[i], name) == 0;
    if (dup)
      continue;
    if (n == max) {
      session_numeric(s, 407, "%s :Too many targets (at most %zu)", name, max);
      break;
    }
    chans[n] = name;
    keyv[n++] = key;
  }
  for (size_t i = 0; i < n && !session_muted(s); i++)
    join_one(s, chans[i], keyv[i]);
}

static void cmd_part(chat_session *s, irc_msg *m) {
  char *targets[128];
  const char *reason = m->nparams > 1 ? m->params[1] : NULL;
  size_t n = split_targets(s, (char *)m->params[0], targets,
                           join_targets_max(s->u.srv));
  for (size_t i = 0; i < n; i++) {
    chat_channel *c = member_channel(s, targets[i]);
    if (c != NULL)
      part_one(s, c, reason);
    hark_unref(c);
  }
}

static void kick_one(chat_session *s, const char *chan, const char *nick,
                     const char *reason) {
  chat_channel *c = member_channel(s, chan);
  if (c == NULL)
    return;
  if (require_op(c, s)) {
    chat_user *t = user_find(s->u.srv, nick);
    if (t == NULL)
      session_numeric(s, 401, "%s :No such nick/channel", nick);
    else if (!user_in_channel(t, c))
      session_numeric(s, 441, "%s %s :They aren't on that channel", t->nick,
                      c->name);
    else if (channel_kick(c, &s->u, t, reason, 0) != 0)
      unavailable(s, c->name);
    hark_unref(t);
  }
  hark_unref(c);
}

/* KICK #chan a,b (one channel, several users) or KICK #a,#b x,y (pairs). */
static void cmd_kick(chat_session *s, irc_msg *m) {
  if (command_settle(s))
    return;
  char *chans[CHATD_TARGETS_KICK + 1], *users[CHATD_TARGETS_KICK + 1];
  char *cl = (char *)m->params[0], *ul = (char *)m->params[1], *item;
  size_t nc = 0, nu = 0;
  while ((item = irc_next_item(&cl)) != NULL && nc <= CHATD_TARGETS_KICK)
    chans[nc++] = item;
  while ((item = irc_next_item(&ul)) != NULL && nu <= CHATD_TARGETS_KICK)
    users[nu++] = item;
  if (nc == 0 || nu == 0 || (nc > 1 && nc != nu)) {
    session_numeric(s, 461, "KICK :Not enough parameters");
    return;
  }
  if (nu > CHATD_TARGETS_KICK) {
    session_numeric(s, 407, "%s :Too many targets (at most %d)",
                    users[CHATD_TARGETS_KICK], CHATD_TARGETS_KICK);
    nu = CHATD_TARGETS_KICK;
  }
  const char *reason =
      m->nparams > 2 && m->params[2][0] ? m->params[2] : s->u.nick;
  for (size_t i = 0; i < nu && !session_muted(s); i++) {
    bool dup = false;
    for (size_t j = 0; j < i && !dup; j++)
      dup = irc_casecmp(users[j], users[i]) == 0 &&
            irc_casecmp(chans[nc > 1 ? j : 0], chans[nc > 1 ? i : 0]) == 0;
    if (!dup)
      kick_one(s, chans[nc > 1 ? i : 0], users[i], reason);
  }
}

static void cmd_invite(chat_session *s, irc_msg *m) {
  if (m->nparams == 0) { /* the channels s is invited to: not kept per user */
    session_numeric(s, 337, ":End of /INVITE list");
    return;
  }
  if (m->nparams < 2) {
    session_numeric(s, 461, "INVITE :Not enough parameters");
    return;
  }
  if (command_settle(s))
    return;
  chat_user *t = user_find(s->u.srv, m->params[0]);
  if (t == NULL || !t->registered) {
    session_numeric(s, 401, "%s :No such nick/channel", m->params[0]);
    hark_unref(t);
    return;
  }
  chat_channel *c = member_channel(s, m->params[1]);
  if (c == NULL) {
    hark_unref(t);
    return;
  }
  if ((c->modes & CMODE_I) && !require_op(c, s)) {
    /* 482 said it */
  } else if (user_in_channel(t, c)) {
    session_numeric(s, 443, "%s %s :is already on channel", t->nick, c->name);
  } else if (channel_invite(c, &s->u, t, 0) != 0) {
    unavailable(s, c->name);
  } else {
    session_numeric(s, 341, "%s %s", t->nick, c->name);
    if (t->away != NULL)
      session_numeric(s, 301, "%s :%s", t->nick, t->away);
  }
  hark_unref(c);
  hark_unref(t);
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
  } else if ((c->modes & CMODE_T) && !require_op(c, s)) {
    /* 482 said it */
  } else if (strncmp(c->topic, m->params[1], CHATD_TOPIC_MAX) == 0 &&
             strlen(m->params[1]) <= CHATD_TOPIC_MAX) {
    /* the same topic: nothing changes, nothing is said */
  } else if (channel_topic(c, &s->u, NULL, m->params[1], time(NULL), 0) != 0) {
    unavailable(s, c->name);
  }
  hark_unref(c);
}

/* ---- messages ----------------------------------------------------------- */

/* Whether a target of a message would get an error here: a channel that
 * does not exist, a nick nobody has. (A list is checked whole, before
 * anything is sent: the line may have to run again.) */
static bool any_error(chat_session *s, char **targets, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const char *t = targets[i];
    if ((t[0] == '@' || t[0] == '+') && irc_is_channel(t + 1))
      t++;
    if (irc_is_channel(t)) {
      chat_channel *c = channel_find(s->u.srv, t);
      bool err = c == NULL || !user_in_channel(&s->u, c);
      hark_unref(c);
      if (err)
        return true;
    } else {
      chat_user *to = user_find(s->u.srv, t);
      bool err = to == NULL || !to->registered;
      hark_unref(to);
      if (err)
        return true;
    }
  }
  return false;
}

/* Whether u may speak in c: +n keeps outsiders out, +m, bans and mutes
 * keep quiet whoever has no voice. */
static bool can_send(chat_channel *c, chat_user *u) {
  chat_membership *m = user_membership(u, c);
  if (m == NULL)
    return !(c->modes & (CMODE_N | CMODE_M)) && !channel_muted(c, u);
  if (m->op || m->voice)
    return true;
  return !(c->modes & CMODE_M) && !channel_muted(c, u);
}

static void message(chat_session *s, irc_msg *m, const char *cmd) {
  chat_server *srv = s->u.srv;
  bool notice = strcmp(cmd, "NOTICE") == 0, tagmsg = cmd[0] == 'T';
  if (m->nparams < 1 || m->params[0][0] == '\0') {
    if (!notice)
      session_numeric(s, 411, ":No recipient given (%s)", cmd);
    return;
  }
  if (!tagmsg && (m->nparams < 2 || m->params[1][0] == '\0')) {
    if (!notice)
      session_numeric(s, 412, ":No text to send");
    return;
  }
  const char *text = tagmsg ? "" : m->params[1];
  char ctags[CHATD_TAGS_MAX];
  tags_client_only(m->tags, ctags, sizeof ctags);
  char *targets[CHATD_TARGETS_MSG];
  size_t n = split_targets(s, (char *)m->params[0], targets, CHATD_TARGETS_MSG);
  if (any_error(s, targets, n) && command_settle(s))
    return;
  s->spoke_at = chat_now_ms(srv);
  for (size_t i = 0; i < n && !session_muted(s); i++) {
    const char *t = targets[i];
    char status = 0;
    if ((t[0] == '@' || t[0] == '+') && irc_is_channel(t + 1))
      status = *t++;
    if (irc_is_channel(t)) {
      chat_channel *c = channel_find(srv, t);
      if (c == NULL) {
        if (!notice)
          session_numeric(s, 401, "%s :No such nick/channel", t);
        continue;
      }
      if (!can_send(c, &s->u)) {
        if (!notice)
          session_numeric(s, 404, "%s :Cannot send to channel", c->name);
      } else {
        channel_say(c, &s->u, cmd, text, ctags, status, 0);
      }
      hark_unref(c);
    } else {
      chat_user *to = user_find(srv, t);
      if (to == NULL || !to->registered) {
        if (!notice)
          session_numeric(s, 401, "%s :No such nick/channel", t);
      } else {
        user_say(to, &s->u, cmd, text, ctags, 0);
        if (!notice && !tagmsg && to->away != NULL)
          session_numeric(s, 301, "%s :%s", to->nick, to->away);
      }
      hark_unref(to);
    }
  }
}

static void cmd_privmsg(chat_session *s, irc_msg *m) {
  message(s, m, "PRIVMSG");
}

static void cmd_notice(chat_session *s, irc_msg *m) { message(s, m, "NOTICE"); }

static void cmd_tagmsg(chat_session *s, irc_msg *m) { message(s, m, "TAGMSG"); }

/* ---- the table ------------------------------------------------------------ */

typedef struct chat_command {
  const char *name;
  command_fn fn;
  int min_params;
  bool before_registration;
} chat_command;

/* The commands most clients send most come first. */
static const chat_command commands[] = {
    {"PRIVMSG", cmd_privmsg, 0, false},
    {"NOTICE", cmd_notice, 0, false},
    {"PING", cmd_ping, 0, true},
    {"PONG", cmd_pong, 0, true},
    {"TAGMSG", cmd_tagmsg, 0, false},
    {"JOIN", cmd_join, 1, false},
    {"PART", cmd_part, 1, false},
    {"MODE", cmd_mode, 1, false},
    {"WHO", cmd_who, 0, false},
    {"WHOIS", cmd_whois, 1, false},
    {"NICK", cmd_nick, 0, true},
    {"USER", cmd_user, 4, true},
    {"PASS", cmd_pass, 1, true},
    {"CAP", cmd_cap, 1, true},
    {"AUTHENTICATE", cmd_authenticate, 1, true},
    {"QUIT", cmd_quit, 0, true},
    {"TOPIC", cmd_topic, 1, false},
    {"KICK", cmd_kick, 2, false},
    {"INVITE", cmd_invite, 0, false},
    {"AWAY", cmd_away, 0, false},
    {"NAMES", cmd_names, 0, false},
    {"LIST", cmd_list, 0, false},
    {"ISON", cmd_ison, 1, false},
    {"USERHOST", cmd_userhost, 1, false},
    {"WHOWAS", cmd_whowas, 0, false},
    {"MONITOR", cmd_monitor, 1, false},
    {"SETNAME", cmd_setname, 1, false},
    {"MOTD", cmd_motd, 0, false},
    {"LUSERS", cmd_lusers, 0, false},
    {"VERSION", cmd_version, 0, false},
    {"TIME", cmd_time, 0, false},
    {"INFO", cmd_info, 0, false},
    {"ADMIN", cmd_admin, 0, false},
    {"HELP", cmd_help, 0, false},
    {"HELPOP", cmd_help, 0, false},
    {"LINKS", cmd_links, 0, false},
    {"STATS", cmd_stats, 0, false},
    {"OPER", cmd_oper, 2, false},
    {"KILL", cmd_kill, 1, false},
    {"WALLOPS", cmd_wallops, 1, false},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const chat_command *lookup(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(name, commands[i].name) == 0)
      return &commands[i];
  return NULL;
}

static void dispatch(chat_session *s, irc_msg *m) {
  const chat_command *c = lookup(m->command);
  if (c == NULL) {
    if (!s->u.registered)
      session_numeric(s, 451, ":You have not registered");
    else
      session_numeric(s, 421, "%.32s :Unknown command", m->command);
    return;
  }
  if (!s->u.registered && !c->before_registration) {
    session_numeric(s, 451, ":You have not registered");
    return;
  }
  if (m->nparams < c->min_params) {
    if (c->fn == cmd_whois)
      session_numeric(s, 431, ":No nickname given");
    else
      session_numeric(s, 461, "%s :Not enough parameters", c->name);
    return;
  }
  c->fn(s, m);
}

void command_line(chat_session *s, char *line, size_t len) {
  irc_msg m;
  bool utf8 = irc_utf8_valid(line, len); /* (irc_parse cuts the line up) */
  if (irc_parse(line, len, &m) != 0)
    return;
  char label[72];
  bool labeled = m.tags != NULL && (s->caps & CAP_LABELED) &&
                 tags_get(m.tags, "label", label, sizeof label) &&
                 label[0] != '\0';
  if (labeled)
    session_label_begin(s, label);
  /* UTF8ONLY: a line that is not UTF-8 is refused whole, so no client is
   * ever sent bytes it cannot decode (ircv3 utf8-only) */
  if (utf8)
    dispatch(s, &m);
  else
    session_sendf(s, ":%s FAIL %s INVALID_UTF8 :Message rejected: not UTF-8",
                  s->u.srv->opt.name,
                  irc_utf8_valid(m.command, strlen(m.command)) ? m.command
                                                               : "*");
  if (labeled)
    session_label_end(s);
}

void command_quit_broadcast(chat_session *s, const char *reason) {
  user_quit(&s->u, reason, 0);
}
