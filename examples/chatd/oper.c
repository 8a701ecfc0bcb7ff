/* Accounts: one file (--accounts FILE) of "name hash [oper]" lines, the
 * hash a crypt(3) string ($6$ SHA-512, $y$ yescrypt...). SASL PLAIN logs
 * a client in against it; OPER makes an "oper" account an IRC operator,
 * who may KILL and WALLOPS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

#ifdef HARK_CHATD_CRYPT
#include <crypt.h>
#endif

typedef struct account {
  char name[CHATD_ACCOUNT_MAX + 1];
  char *hash;
  bool oper;
} account;

struct chat_accounts {
  account *v;
  size_t n;
};

bool accounts_loaded(chat_server *srv) {
  return srv->accounts != NULL && srv->accounts->n > 0;
}

void accounts_free(chat_server *srv) {
  chat_accounts *a = srv->accounts;
  if (a == NULL)
    return;
  for (size_t i = 0; i < a->n; i++)
    chat_free(a->v[i].hash);
  chat_free(a->v);
  chat_free(a);
  srv->accounts = NULL;
}

/* Reads the accounts file: 0, or -1 (logged) when it cannot be used. */
int accounts_load(chat_server *srv, const char *path) {
#ifndef HARK_CHATD_CRYPT
  log_error("accounts %s: built without crypt(3) (libcrypt-dev)", path);
  return -1;
#else
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    log_error("accounts %s: cannot read it", path);
    return -1;
  }
  chat_accounts *a = chat_calloc(1, sizeof *a);
  char line[1024];
  int lineno = 0, r = 0;
  while (a != NULL && r == 0 && fgets(line, sizeof line, f) != NULL) {
    lineno++;
    char *save, *name = strtok_r(line, " \t\r\n", &save);
    if (name == NULL || name[0] == '#')
      continue;
    char *hash = strtok_r(NULL, " \t\r\n", &save);
    char *flag = strtok_r(NULL, " \t\r\n", &save);
    if (hash == NULL || hash[0] != '$' || strlen(name) > CHATD_ACCOUNT_MAX ||
        (flag != NULL && strcmp(flag, "oper") != 0)) {
      log_error("accounts %s:%d: want \"name $hash$... [oper]\"", path, lineno);
      r = -1;
      break;
    }
    account *nv = chat_realloc(a->v, (a->n + 1) * sizeof *nv);
    char *h = chat_strdup(hash);
    if (nv == NULL || h == NULL) {
      chat_free(h);
      if (nv != NULL)
        a->v = nv;
      r = -1;
      break;
    }
    a->v = nv;
    snprintf(a->v[a->n].name, sizeof a->v[a->n].name, "%s", name);
    a->v[a->n].hash = h;
    a->v[a->n].oper = flag != NULL;
    a->n++;
  }
  fclose(f);
  srv->accounts = a;
  if (a == NULL || r != 0) {
    accounts_free(srv);
    return -1;
  }
  log_info("accounts %s: %zu loaded", path, a->n);
  return 0;
#endif
}

/* The account name if pass is its password (and it is an operator when
 * need_oper), else NULL. */
static const account *check(chat_server *srv, const char *name,
                            const char *pass, bool need_oper) {
#ifdef HARK_CHATD_CRYPT
  chat_accounts *a = srv->accounts;
  for (size_t i = 0; a != NULL && i < a->n; i++) {
    if (strcmp(a->v[i].name, name) != 0)
      continue;
    if (need_oper && !a->v[i].oper)
      return NULL;
    struct crypt_data *cd = chat_calloc(1, sizeof *cd);
    if (cd == NULL)
      return NULL;
    const char *h = crypt_r(pass, a->v[i].hash, cd);
    /* compare all of it, whatever differs first */
    size_t n = strlen(a->v[i].hash);
    unsigned diff = h == NULL || strlen(h) != n;
    for (size_t k = 0; h != NULL && k < n && h[k]; k++)
      diff |= (unsigned)(h[k] ^ a->v[i].hash[k]);
    chat_free(cd);
    return diff == 0 ? &a->v[i] : NULL;
  }
#endif
  return NULL;
}

int accounts_hash(const char *pass, char *out, size_t cap) {
#ifdef HARK_CHATD_CRYPT
  char salt[CRYPT_GENSALT_OUTPUT_SIZE], rnd[16];
  struct crypt_data cd;
  memset(&cd, 0, sizeof cd);
  FILE *f = fopen("/dev/urandom", "rb");
  bool got = f != NULL && fread(rnd, 1, sizeof rnd, f) == sizeof rnd;
  if (f != NULL)
    fclose(f);
  if (!got ||
      crypt_gensalt_rn("$6$", 0, rnd, sizeof rnd, salt, sizeof salt) == NULL)
    return -1;
  const char *h = crypt_r(pass, salt, &cd);
  if (h == NULL || h[0] != '$')
    return -1;
  snprintf(out, cap, "%s", h);
  return 0;
#else
  return -1;
#endif
}

/* ---- OPER, KILL, WALLOPS --------------------------------------------------- */

void cmd_oper(chat_session *s, irc_msg *m) {
  if (!accounts_loaded(s->u.srv)) {
    session_numeric(s, 491, ":No O-lines for your host");
    return;
  }
  if (check(s->u.srv, m->params[0], m->params[1], true) == NULL) {
    log_warn("%s@%s: failed OPER as %s", s->u.nick, s->u.host, m->params[0]);
    session_numeric(s, 464, ":Password incorrect");
    return;
  }
  log_info("%s@%s is now an operator (%s)", s->u.nick, s->u.host, m->params[0]);
  session_numeric(s, 381, ":You are now an IRC operator");
  user_set_modes(&s->u, "+o", 0);
}

static bool need_oper(chat_session *s) {
  if (s->u.modes & UMODE_O)
    return true;
  session_numeric(s, 481, ":Permission Denied- You're not an IRC operator");
  return false;
}

void cmd_kill(chat_session *s, irc_msg *m) {
  if (!need_oper(s))
    return;
  chat_user *t = user_find(s->u.srv, m->params[0]);
  if (t == NULL || !t->registered)
    session_numeric(s, 401, "%s :No such nick/channel", m->params[0]);
  else
    user_kill(t, &s->u,
              m->nparams > 1 && m->params[1][0] ? m->params[1] : "No reason",
              0);
  hark_unref(t);
}

void cmd_wallops(chat_session *s, irc_msg *m) {
  if (need_oper(s))
    user_wallops(&s->u, m->params[0], 0);
}

/* ---- SASL PLAIN ------------------------------------------------------------ */

#define SASL_MAX 1200

static int b64val(int c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes base64 into out (cap bytes); the length, or -1. */
static long b64decode(const char *in, char *out, size_t cap) {
  size_t n = 0;
  unsigned acc = 0;
  int bits = 0;
  for (; *in && *in != '='; in++) {
    int v = b64val((unsigned char)*in);
    if (v < 0)
      return -1;
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n == cap)
        return -1;
      out[n++] = (char)((acc >> bits) & 0xFF);
    }
  }
  return (long)n;
}

static void sasl_reset(chat_session *s) {
  chat_free(s->sasl_buf);
  s->sasl_buf = NULL;
  s->sasl_plain = false;
}

static void sasl_fail(chat_session *s) {
  sasl_reset(s);
  session_numeric(s, 904, ":SASL authentication failed");
}

/* authzid \0 authcid \0 password */
static void sasl_finish(chat_session *s) {
  char raw[SASL_MAX];
  long n = b64decode(s->sasl_buf ? s->sasl_buf : "", raw, sizeof raw - 1);
  if (n < 0) {
    sasl_fail(s);
    return;
  }
  raw[n] = '\0';
  const char *authz = raw, *authc = memchr(raw, '\0', (size_t)n);
  const char *pass =
      authc ? memchr(authc + 1, '\0', (size_t)(raw + n - authc - 1)) : NULL;
  if (authc == NULL || pass == NULL) {
    sasl_fail(s);
    return;
  }
  authc++;
  pass++;
  const account *a = check(s->u.srv, authc, pass, false);
  if (a == NULL || (authz[0] != '\0' && strcmp(authz, authc) != 0)) {
    log_warn("%s: failed SASL as %s", s->u.host, authc);
    sasl_fail(s);
    return;
  }
  sasl_reset(s);
  user_set_account(&s->u, a->name, 0);
  char mask[IRC_LINE_MAX];
  snprintf(mask, sizeof mask, "%s!%s@%s", s->u.nick[0] ? s->u.nick : "*",
           s->u.user[0] ? s->u.user : "*", s->u.host);
  session_numeric(s, 900, "%s %s :You are now logged in as %s", mask, a->name,
                  a->name);
  session_numeric(s, 903, ":SASL authentication successful");
}

void cmd_authenticate(chat_session *s, irc_msg *m) {
  const char *arg = m->params[0];
  if (!(s->caps & CAP_SASL) || !accounts_loaded(s->u.srv)) {
    session_numeric(s, 904, ":SASL authentication failed");
    return;
  }
  if (strcmp(arg, "*") == 0) {
    sasl_reset(s);
    session_numeric(s, 906, ":SASL authentication aborted");
    return;
  }
  if (!s->sasl_plain) {
    if (s->u.account[0] != '\0') {
      session_numeric(s, 907, ":You have already authenticated using SASL");
    } else if (irc_casecmp(arg, "PLAIN") != 0) {
      session_numeric(s, 908, "PLAIN :are available SASL mechanisms");
      session_numeric(s, 904, ":SASL authentication failed");
    } else {
      s->sasl_plain = true;
      session_sendf(s, "AUTHENTICATE +");
    }
    return;
  }
  /* chunks of 400 bytes; a shorter one (or "+") ends the message */
  size_t have = s->sasl_buf ? strlen(s->sasl_buf) : 0, add = strlen(arg);
  if (strcmp(arg, "+") == 0)
    add = 0;
  if (have + add >= SASL_MAX) {
    sasl_reset(s);
    session_numeric(s, 905, ":SASL message too long");
    return;
  }
  char *nb = chat_realloc(s->sasl_buf, have + add + 1);
  if (nb == NULL) {
    sasl_fail(s);
    return;
  }
  memcpy(nb + have, arg, add);
  nb[have + add] = '\0';
  s->sasl_buf = nb;
  if (add < 400)
    sasl_finish(s);
}
