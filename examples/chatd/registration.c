/* Registration: PASS, NICK, USER and CAP negotiation, then the welcome
 * burst (001-005, LUSERS, MOTD). A client that began CAP negotiation is
 * registered only after its CAP END; a wrong password is told, and the
 * connection closed, once registration would complete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

/* ---- ISUPPORT -------------------------------------------------------------- */

void server_isupport(chat_session *s) {
  const chat_options *o = &s->u.srv->opt;
  size_t jmax = join_targets_max(s->u.srv);
  char chanlimit[32] = "";
  if (o->max_chans_per_client)
    snprintf(chanlimit, sizeof chanlimit, "%u", o->max_chans_per_client);
  /* 13 tokens per line at most: a line has 15 parameters */
  session_numeric(s, 5,
                  "AWAYLEN=%d BOT=B CASEMAPPING=rfc1459 CHANLIMIT=#:%s,&:%s "
                  "CHANMODES=Ibe,k,l,imnpst CHANNELLEN=%u CHANTYPES=#& "
                  "ELIST=CMNTU EXCEPTS=e HOSTLEN=63 INVEX=I KEYLEN=%d "
                  "KICKLEN=%d :are supported by this server",
                  CHATD_AWAY_MAX, chanlimit, chanlimit, o->channellen,
                  CHATD_KEY_MAX, CHATD_KICK_MAX);
  session_numeric(s, 5,
                  "LINELEN=%d MAXLIST=bIe:%d MAXTARGETS=%d MODES=%d "
                  "MONITOR=%d NETWORK=hark NICKLEN=%u PREFIX=(ov)@+ SAFELIST "
                  "STATUSMSG=@+ TOPICLEN=%d USERLEN=%d "
                  ":are supported by this server",
                  IRC_LINE_MAX, CHATD_LIST_MAX, CHATD_TARGETS_MSG,
                  CHATD_MODES_MAX, CHATD_MONITOR_MAX, o->nicklen,
                  CHATD_TOPIC_MAX, CHATD_USER_MAX);
  session_numeric(s, 5,
                  "TARGMAX=JOIN:%zu,KICK:%d,LIST:,MONITOR:%d,NAMES:%d,"
                  "NOTICE:%d,PART:%zu,PRIVMSG:%d,TAGMSG:%d,WHOIS:%d,WHOWAS:%d "
                  "EXTBAN=,m UTF8ONLY WHOX :are supported by this server",
                  jmax, CHATD_TARGETS_KICK, CHATD_MONITOR_MAX,
                  CHATD_TARGETS_NAMES, CHATD_TARGETS_MSG, jmax,
                  CHATD_TARGETS_MSG, CHATD_TARGETS_MSG, CHATD_TARGETS_WHOIS,
                  CHATD_TARGETS_WHOIS);
}

/* ---- the welcome ----------------------------------------------------------- */

static void welcome(chat_session *s) {
  chat_server *srv = s->u.srv;
  const chat_options *o = &srv->opt;
  if (!s->pass_ok) {
    session_numeric(s, 464, ":Password incorrect");
    session_error_close(s, "Bad password");
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
    session_error_close(s, "Out of memory");
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
  session_numeric(s, 4, "%s %s Biow Ibeiklmnopstv Ibeklov", o->name,
                  CHATD_VERSION);
  server_isupport(s);
  user_register(&s->u, 0);
  send_lusers(s);
  send_motd(s);
  log_info("%s registered from %s", s->u.nick, s->u.host);
}

void registration_try(chat_session *s) {
  if (s->u.registered || s->closing || s->closed || s->u.nick[0] == '\0' ||
      s->u.user[0] == '\0' || s->cap_wait)
    return;
  welcome(s);
}

/* ---- PASS, NICK, USER -------------------------------------------------- */

void cmd_pass(chat_session *s, irc_msg *m) {
  if (s->u.registered) {
    session_numeric(s, 462, ":You may not reregister");
    return;
  }
  const char *pw = s->u.srv->opt.password;
  /* checked when registration completes: the client hears 464 then */
  s->pass_ok = pw == NULL || strcmp(m->params[0], pw) == 0;
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
  registration_try(s);
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

void cmd_nick(chat_session *s, irc_msg *m) {
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
void clean_realname(char *dst, size_t cap, const char *src) {
  size_t i = 0;
  for (; src[i] != '\0' && i + 1 < cap; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
  }
  /* never cut inside a UTF-8 sequence */
  if (src[i] != '\0')
    while (i > 0 && ((unsigned char)dst[i] & 0xC0) == 0x80)
      i--;
  dst[i] = '\0';
}

void cmd_user(chat_session *s, irc_msg *m) {
  if (s->u.registered) {
    session_numeric(s, 462, ":You may not reregister");
    return;
  }
  /* an empty username or realname is no parameter (Modern) */
  if (m->params[0][0] == '\0' || m->params[3][0] == '\0') {
    session_numeric(s, 461, "USER :Not enough parameters");
    return;
  }
  clean_username(s->u.user, sizeof s->u.user, m->params[0]);
  clean_realname(s->u.realname, sizeof s->u.realname, m->params[3]);
  registration_try(s);
}

/* ---- CAP ------------------------------------------------------------------ */

typedef struct cap_def {
  const char *name;
  unsigned bit;
} cap_def;

static const cap_def caps[] = {
    {"account-notify", CAP_ACCOUNT_NOTIFY},
    {"away-notify", CAP_AWAY_NOTIFY},
    {"batch", CAP_BATCH},
    {"cap-notify", CAP_CAP_NOTIFY},
    {"draft/extended-monitor", CAP_EXT_MONITOR},
    {"echo-message", CAP_ECHO},
    {"extended-join", CAP_EXTENDED_JOIN},
    {"extended-monitor", CAP_EXT_MONITOR},
    {"invite-notify", CAP_INVITE_NOTIFY},
    {"labeled-response", CAP_LABELED},
    {"message-tags", CAP_MESSAGE_TAGS},
    {"multi-prefix", CAP_MULTI_PREFIX},
    {"sasl", CAP_SASL},
    {"server-time", CAP_SERVER_TIME},
    {"setname", CAP_SETNAME},
    {"userhost-in-names", CAP_USERHOST_NAMES},
};
#define NCAPS (sizeof caps / sizeof caps[0])

static const cap_def *cap_find(chat_server *srv, const char *name, size_t len) {
  for (size_t i = 0; i < NCAPS; i++)
    if (strlen(caps[i].name) == len && strncmp(caps[i].name, name, len) == 0)
      return caps[i].bit == CAP_SASL && !accounts_loaded(srv) ? NULL : &caps[i];
  return NULL;
}

static void cap_ls(chat_session *s, bool values) {
  char list[IRC_LINE_MAX];
  size_t n = 0;
  for (size_t i = 0; i < NCAPS; i++) {
    if (caps[i].bit == CAP_SASL && !accounts_loaded(s->u.srv))
      continue;
    n += (size_t)snprintf(list + n, sizeof list - n, "%s%s%s", n ? " " : "",
                          caps[i].name,
                          values && caps[i].bit == CAP_SASL ? "=PLAIN" : "");
  }
  session_sendf(s, ":%s CAP %s LS :%s", s->u.srv->opt.name,
                s->u.nick[0] ? s->u.nick : "*", list);
}

static void cap_list(chat_session *s) {
  char list[IRC_LINE_MAX];
  size_t n = 0;
  unsigned shown = 0;
  list[0] = '\0';
  for (size_t i = 0; i < NCAPS; i++) {
    if (!(s->caps & caps[i].bit) || (shown & caps[i].bit))
      continue;
    shown |= caps[i].bit;
    n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? " " : "",
                          caps[i].name);
  }
  session_sendf(s, ":%s CAP %s LIST :%s", s->u.srv->opt.name,
                s->u.nick[0] ? s->u.nick : "*", list);
}

/* All or nothing: "-name" takes one away. */
static void cap_req(chat_session *s, const char *req) {
  unsigned add = 0, del = 0;
  bool ok = true;
  const char *p = req;
  while (ok && *p) {
    while (*p == ' ')
      p++;
    if (*p == '\0')
      break;
    bool minus = *p == '-';
    if (minus)
      p++;
    size_t len = strcspn(p, " ");
    const cap_def *c = cap_find(s->u.srv, p, len);
    if (c == NULL || (minus && c->bit == CAP_CAP_NOTIFY && s->cap_302))
      ok = false;
    else if (minus)
      del |= c->bit;
    else
      add |= c->bit;
    p += len;
  }
  const char *name = s->u.srv->opt.name, *nick = s->u.nick[0] ? s->u.nick : "*";
  if (!ok) {
    session_sendf(s, ":%s CAP %s NAK :%.100s", name, nick, req);
    return;
  }
  s->caps = (s->caps | add) & ~del;
  session_sendf(s, ":%s CAP %s ACK :%s", name, nick, req);
}

void cmd_cap(chat_session *s, irc_msg *m) {
  const char *sub = m->params[0];
  if (irc_casecmp(sub, "LS") == 0) {
    if (!s->u.registered)
      s->cap_wait = true;
    if (m->nparams > 1 && atoi(m->params[1]) >= 302) {
      s->cap_302 = true;
      s->caps |= CAP_CAP_NOTIFY; /* implied by 302 */
    }
    cap_ls(s, s->cap_302);
  } else if (irc_casecmp(sub, "LIST") == 0) {
    cap_list(s);
  } else if (irc_casecmp(sub, "REQ") == 0) {
    if (!s->u.registered)
      s->cap_wait = true;
    cap_req(s, m->nparams > 1 ? m->params[1] : "");
  } else if (irc_casecmp(sub, "END") == 0) {
    s->cap_wait = false;
    registration_try(s);
  } else {
    session_numeric(s, 410, "%.32s :Invalid CAP command", sub);
  }
}
