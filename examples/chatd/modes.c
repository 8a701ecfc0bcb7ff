/* MODE: channel modes (queries, lists, changes) and user modes. The
 * command checks who may and what is valid, answers each error once, and
 * hands the valid changes to channel_modes or user_set_modes, which apply
 * and emit them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

/* ---- channel modes ------------------------------------------------------ */

static void send_list(chat_session *s, chat_channel *c, char mode) {
  const chat_masks *l = mode == 'b'   ? &c->bans
                        : mode == 'e' ? &c->excepts
                                      : &c->invex;
  int item = mode == 'b' ? 367 : mode == 'e' ? 348 : 346;
  for (size_t i = 0; i < l->n && !session_muted(s); i++)
    session_numeric(s, item, "%s %s %s %lld", c->name, l->v[i].mask, l->v[i].by,
                    (long long)l->v[i].at);
  if (mode == 'b')
    session_numeric(s, 368, "%s :End of channel ban list", c->name);
  else if (mode == 'e')
    session_numeric(s, 349, "%s :End of channel exception list", c->name);
  else
    session_numeric(s, 347, "%s :End of channel invite list", c->name);
}

/* nick, nick!user, user@host... as nick!user@host, '*' for what is
 * missing (as InspIRCd shows them). */
static void canon_mask(const char *in, char *out, size_t cap) {
  if (strncmp(in, "m:", 2) == 0 && in[2] != '\0' && cap > 2) {
    memcpy(out, "m:", 2); /* the mute extban: the mask after it */
    canon_mask(in + 2, out + 2, cap - 2);
    return;
  }
  const char *bang = strchr(in, '!'), *at = strchr(in, '@');
  if (bang == NULL && at == NULL)
    snprintf(out, cap, "%s!*@*", in);
  else if (at == NULL)
    snprintf(out, cap, "%s@*", in);
  else if (bang == NULL || bang > at)
    snprintf(out, cap, "*!%s", in);
  else
    snprintf(out, cap, "%s", in);
}

/* A key: 1 to KEYLEN bytes, none of them a space, a comma or a control
 * byte, and not starting with ':'. */
static bool key_valid(const char *k) {
  size_t n = strlen(k);
  if (n == 0 || n > CHATD_KEY_MAX || k[0] == ':')
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)k[i];
    if (c <= ' ' || c == ',' || c == 0x7f)
      return false;
  }
  return true;
}

static bool limit_valid(const char *l) {
  char *end;
  if (l[0] < '0' || l[0] > '9')
    return false;
  unsigned long v = strtoul(l, &end, 10);
  return *end == '\0' && v > 0 && v <= 1000000000;
}

typedef struct parsed {
  chat_mode_change ch[CHATD_MODES_MAX * 2];
  char masks[CHATD_MODES_MAX][200];
  size_t n, nmasks;
  unsigned queried; /* lists asked for: 1 b, 2 e, 4 I */
} parsed;

static int list_bit(char m) { return m == 'b' ? 1 : m == 'e' ? 2 : 4; }

/* Reads the mode string and its arguments into p, answering 472 and 461
 * on the way. */
static void parse_modes(chat_session *s, irc_msg *m, parsed *p) {
  char dir = '+';
  int arg = 2;
  size_t withparam = 0;
  bool unknown_told = false;
  for (const char *q = m->params[1]; *q && p->n < CHATD_MODES_MAX * 2; q++) {
    char c = *q;
    if (c == '+' || c == '-') {
      dir = c;
      continue;
    }
    const char *a = NULL;
    bool takes =
        strchr("beIov", c) != NULL || (c == 'k') || (c == 'l' && dir == '+');
    if (strchr("beIklmnopstvi", c) == NULL) {
      if (!unknown_told)
        session_numeric(s, 472, "%c :is unknown mode char to me", c);
      unknown_told = true;
      continue;
    }
    if (takes) {
      if (arg < m->nparams)
        a = m->params[arg++];
      if (a == NULL && strchr("beI", c) != NULL) {
        p->queried |= (unsigned)list_bit(c);
        continue;
      }
      if (a == NULL && !(c == 'k' && dir == '-')) {
        session_numeric(s, 461, "MODE :Not enough parameters");
        continue;
      }
      if (++withparam > CHATD_MODES_MAX)
        break;
    }
    chat_mode_change *ch = &p->ch[p->n++];
    *ch = (chat_mode_change){dir, c, a, NULL};
  }
}

/* Checks each change; the valid ones stay in p (users and masks found). */
static size_t validate(chat_session *s, chat_channel *c, parsed *p) {
  size_t k = 0;
  for (size_t i = 0; i < p->n; i++) {
    chat_mode_change ch = p->ch[i];
    if (ch.mode == 'k' && ch.dir == '+' && !key_valid(ch.arg)) {
      session_numeric(s, 696,
                      "%s k * :Invalid key: no spaces, commas or "
                      "control characters, at most %d bytes",
                      c->name, CHATD_KEY_MAX);
      continue;
    }
    if (ch.mode == 'l' && ch.dir == '+' && !limit_valid(ch.arg)) {
      session_numeric(s, 696, "%s l %s :Invalid limit: a positive number",
                      c->name, ch.arg[0] ? ch.arg : "*");
      continue;
    }
    if (ch.mode == 'o' || ch.mode == 'v') {
      chat_user *t = user_find(s->u.srv, ch.arg);
      if (t == NULL || !t->registered) {
        session_numeric(s, 401, "%s :No such nick/channel", ch.arg);
        hark_unref(t);
        continue;
      }
      if (!user_in_channel(t, c)) {
        session_numeric(s, 441, "%s %s :They aren't on that channel", t->nick,
                        c->name);
        hark_unref(t);
        continue;
      }
      ch.target = t; /* the reference goes after the change */
    }
    if (strchr("beI", ch.mode) != NULL) {
      if (p->nmasks == CHATD_MODES_MAX || ch.arg[0] == '\0' ||
          strchr(ch.arg, ' ') != NULL)
        continue;
      canon_mask(ch.arg, p->masks[p->nmasks], sizeof p->masks[0]);
      ch.arg = p->masks[p->nmasks++];
    }
    p->ch[k++] = ch;
  }
  return k;
}

static void channel_mode(chat_session *s, chat_channel *c, irc_msg *m) {
  if (m->nparams < 2) {
    char modes[IRC_LINE_MAX];
    channel_mode_string(c, user_in_channel(&s->u, c), modes, sizeof modes);
    session_numeric(s, 324, "%s %s", c->name, modes);
    session_numeric(s, 329, "%s %lld", c->name, (long long)c->created);
    return;
  }
  parsed *p = chat_calloc(1, sizeof *p);
  if (p == NULL) {
    unavailable(s, c->name);
    return;
  }
  parse_modes(s, m, p);
  if (p->queried & 1)
    send_list(s, c, 'b');
  if (p->queried & 2)
    send_list(s, c, 'e');
  if (p->queried & 4)
    send_list(s, c, 'I');
  if (p->n > 0) {
    if (!user_in_channel(&s->u, c))
      session_numeric(s, 442, "%s :You're not on that channel", c->name);
    else if (require_op(c, s)) {
      size_t k = validate(s, c, p);
      if (k > 0 && channel_modes(c, &s->u, p->ch, k, 0) != 0)
        unavailable(s, c->name);
      for (size_t i = 0; i < k; i++)
        hark_unref(p->ch[i].target);
    }
  }
  chat_free(p);
}

/* ---- user modes --------------------------------------------------------- */

static void user_mode(chat_session *s, irc_msg *m) {
  chat_user *u = &s->u;
  if (m->nparams < 2) {
    char modes[16] = "+";
    size_t n = 1;
    if (u->modes & UMODE_B)
      modes[n++] = 'B';
    if (u->modes & UMODE_I)
      modes[n++] = 'i';
    if (u->modes & UMODE_O)
      modes[n++] = 'o';
    if (u->modes & UMODE_W)
      modes[n++] = 'w';
    modes[n] = '\0';
    session_numeric(s, 221, "%s", modes);
    return;
  }
  char ok[64];
  size_t n = 0;
  char dir = '+';
  bool told = false;
  for (const char *q = m->params[1]; *q && n + 2 < sizeof ok; q++) {
    if (*q == '+' || *q == '-') {
      dir = *q;
      ok[n++] = dir;
    } else if (*q == 'i' || *q == 'w' || *q == 'B' ||
               (*q == 'o' && dir == '-')) {
      ok[n++] = *q; /* +o only comes from OPER */
    } else if (*q != 'o' && !told) {
      session_numeric(s, 501, ":Unknown MODE flag");
      told = true;
    }
  }
  ok[n] = '\0';
  if (user_set_modes(u, ok, 0) != 0)
    unavailable(s, u->nick);
}

void cmd_mode(chat_session *s, irc_msg *m) {
  const char *target = m->params[0];
  if (irc_is_channel(target)) {
    if (command_settle(s))
      return;
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
  user_mode(s, m);
}
