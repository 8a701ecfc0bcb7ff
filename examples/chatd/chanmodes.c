/* Channel modes, the operation: the flags (+imnpst), the key, the limit,
 * the operator and voice statuses and the mask lists (bans, exceptions,
 * invite exceptions). channel_modes applies what changes something and
 * emits it as MODE lines (sig_mode), for a command (modes.c) and for
 * federation alike; the checks (who may, what is valid) are the
 * command's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chatd.h"

static unsigned flag_of(char m) {
  switch (m) {
  case 'i':
    return CMODE_I;
  case 'm':
    return CMODE_M;
  case 'n':
    return CMODE_N;
  case 'p':
    return CMODE_P;
  case 's':
    return CMODE_S;
  case 't':
    return CMODE_T;
  }
  return 0;
}

/* ---- mask lists --------------------------------------------------------- */

void channel_masks_free(chat_masks *m) {
  for (size_t i = 0; i < m->n; i++) {
    chat_free(m->v[i].mask);
    chat_free(m->v[i].by);
  }
  chat_free(m->v);
  m->v = NULL;
  m->n = 0;
}

static chat_masks *list_of(chat_channel *c, char m) {
  return m == 'b' ? &c->bans : m == 'e' ? &c->excepts : &c->invex;
}

static ssize_t mask_index(const chat_masks *l, const char *mask) {
  for (size_t i = 0; i < l->n; i++)
    if (irc_casecmp(l->v[i].mask, mask) == 0)
      return (ssize_t)i;
  return -1;
}

/* 1 added, 0 there already or the list is full, HARK_ENOMEM. */
static int mask_add(chat_masks *l, const char *mask, const char *by) {
  if (mask_index(l, mask) >= 0 || l->n >= CHATD_LIST_MAX)
    return 0;
  chat_mask *nv = chat_realloc(l->v, (l->n + 1) * sizeof *nv);
  if (nv == NULL)
    return HARK_ENOMEM;
  l->v = nv;
  chat_mask *e = &l->v[l->n];
  e->mask = chat_strdup(mask);
  e->by = chat_strdup(by);
  e->at = time(NULL);
  if (e->mask == NULL || e->by == NULL) {
    chat_free(e->mask);
    chat_free(e->by);
    return HARK_ENOMEM;
  }
  l->n++;
  return 1;
}

static bool mask_del(chat_masks *l, const char *mask) {
  ssize_t i = mask_index(l, mask);
  if (i < 0)
    return false;
  chat_free(l->v[i].mask);
  chat_free(l->v[i].by);
  l->v[i] = l->v[--l->n];
  return true;
}

/* Whether an entry of list matches u: a plain mask, or with mute, also
 * an "m:mask" one (the mute extban, EXTBAN=,m). */
static bool masks_match(const chat_masks *list, chat_user *u, bool mute) {
  if (list->n == 0)
    return false;
  char who[IRC_LINE_MAX];
  user_mask(u, who, sizeof who);
  for (size_t i = 0; i < list->n; i++) {
    const char *mask = list->v[i].mask;
    if (strncmp(mask, "m:", 2) == 0) {
      if (mute && irc_match(mask + 2, who))
        return true;
    } else if (irc_match(mask, who)) {
      return true;
    }
  }
  return false;
}

bool channel_masks_match(const chat_masks *list, chat_user *u) {
  return masks_match(list, u, false);
}

bool channel_banned(chat_channel *c, chat_user *u) {
  return masks_match(&c->bans, u, false) && !masks_match(&c->excepts, u, false);
}

bool channel_muted(chat_channel *c, chat_user *u) {
  return masks_match(&c->bans, u, true) && !masks_match(&c->excepts, u, true);
}

void channel_mode_string(chat_channel *c, bool with_key, char *buf,
                         size_t cap) {
  static const char letters[] = "imnpst";
  size_t n = 0;
  buf[n++] = '+';
  for (const char *p = letters; *p; p++)
    if (c->modes & flag_of(*p))
      buf[n++] = *p;
  if (c->key != NULL)
    buf[n++] = 'k';
  if (c->limit)
    buf[n++] = 'l';
  buf[n] = '\0';
  if (c->key != NULL && with_key)
    n += (size_t)snprintf(buf + n, cap - n, " %s", c->key);
  if (c->limit && n < cap)
    snprintf(buf + n, cap - n, " %u", c->limit);
}

/* ---- applying ------------------------------------------------------------ */

/* Applies one change to c; false when it changes nothing (or cannot). The
 * argument shown in the MODE line goes to *shown (NULL: none). */
static bool apply(chat_channel *c, chat_user *by, const chat_mode_change *m,
                  char *num, const char **shown) {
  bool add = m->dir == '+';
  *shown = NULL;
  unsigned bit = flag_of(m->mode);
  if (bit != 0) {
    if (((c->modes & bit) != 0) == add)
      return false;
    c->modes = add ? c->modes | bit : c->modes & ~bit;
    return true;
  }
  switch (m->mode) {
  case 'k': {
    if (add) {
      if (m->arg == NULL || (c->key != NULL && strcmp(c->key, m->arg) == 0))
        return false;
      char *k = chat_strdup(m->arg);
      if (k == NULL)
        return false;
      chat_free(c->key);
      c->key = k;
      *shown = m->arg; /* not c->key: a later +k in this line frees it */
      return true;
    }
    if (c->key == NULL)
      return false;
    chat_free(c->key);
    c->key = NULL;
    *shown = "*";
    return true;
  }
  case 'l': {
    unsigned long v = add && m->arg ? strtoul(m->arg, NULL, 10) : 0;
    if (add && (v == 0 || v > 1000000000))
      return false;
    if ((unsigned)v == c->limit)
      return false;
    c->limit = (unsigned)v;
    if (add) {
      snprintf(num, 16, "%u", c->limit);
      *shown = num;
    }
    return true;
  }
  case 'o':
  case 'v': {
    chat_membership *ms =
        m->target != NULL ? user_membership(m->target, c) : NULL;
    if (ms == NULL)
      return false;
    bool *flag = m->mode == 'o' ? &ms->op : &ms->voice;
    if (*flag == add)
      return false;
    *flag = add;
    *shown = m->target->nick;
    return true;
  }
  case 'b':
  case 'e':
  case 'I': {
    if (m->arg == NULL)
      return false;
    chat_masks *l = list_of(c, m->mode);
    char setter[IRC_LINE_MAX];
    chat_prefix(c->srv, by, setter, sizeof setter);
    if (add ? mask_add(l, m->arg, setter) != 1 : !mask_del(l, m->arg))
      return false;
    *shown = m->arg;
    return true;
  }
  }
  return false;
}

/* One MODE line for applied[0..n) (whose arguments are shown[]). */
static int emit_modes(chat_channel *c, chat_user *by, chat_mode_change *applied,
                      const char **shown, size_t n, unsigned flags) {
  char prefix[IRC_LINE_MAX], modes[64], args[IRC_LINE_MAX];
  size_t ml = 0, al = 0;
  char dir = 0;
  for (size_t i = 0; i < n && ml + 3 < sizeof modes; i++) {
    if (applied[i].dir != dir)
      modes[ml++] = dir = applied[i].dir;
    modes[ml++] = applied[i].mode;
    if (shown[i] != NULL && al < sizeof args)
      al += (size_t)snprintf(args + al, sizeof args - al, " %s", shown[i]);
  }
  modes[ml] = '\0';
  args[al < sizeof args ? al : sizeof args - 1] = '\0';
  chat_prefix(c->srv, by, prefix, sizeof prefix);
  chat_buf *line =
      chat_buf_printf(":%s MODE %s %s%s", prefix, c->name, modes, args);
  if (line == NULL)
    return HARK_ENOMEM;
  chat_event ev = {0};
  ev.line = line;
  ev.origin = by;
  ev.chan = c;
  ev.modes = applied;
  ev.nmodes = n;
  ev.flags = flags;
  int r = hark_send(c->srv->sig_mode, c, &ev);
  if (r < 0)
    log_warn("%s: MODE dropped: %s", c->name, hark_strerror(r));
  event_release(&ev);
  chat_buf_unref(line);
  return r < 0 ? r : 0;
}

/* A MODE line stays well under the line's length: its arguments (masks
 * can be long) are split over several lines when need be. */
#define LINE_ARGS_MAX 380

int channel_modes(chat_channel *c, chat_user *by, const chat_mode_change *ch,
                  size_t n, unsigned flags) {
  chat_mode_change applied[CHATD_MODES_MAX * 2];
  const char *shown[CHATD_MODES_MAX * 2];
  char nums[CHATD_MODES_MAX * 2][16];
  size_t k = 0, arglen = 0;
  int r = 0;
  hark_ref(c); /* (a mode change never ends a channel, but be sure) */
  for (size_t i = 0; i < n; i++) {
    if (k == sizeof applied / sizeof applied[0] ||
        arglen > LINE_ARGS_MAX) { /* this line is full: out it goes */
      r = emit_modes(c, by, applied, shown, k, flags);
      k = 0;
      arglen = 0;
    }
    if (!apply(c, by, &ch[i], nums[k], &shown[k]))
      continue;
    applied[k] = ch[i];
    if (ch[i].mode == 'l')
      applied[k].arg = shown[k]; /* the limit as it holds now */
    if (shown[k] != NULL)
      arglen += strlen(shown[k]) + 1;
    k++;
  }
  if (k > 0)
    r = emit_modes(c, by, applied, shown, k, flags);
  hark_unref(c);
  return r;
}

int channel_mode1(chat_channel *c, chat_user *by, char dir, char mode,
                  const char *arg, chat_user *target, unsigned flags) {
  chat_mode_change m = {dir, mode, arg, target};
  return channel_modes(c, by, &m, 1, flags);
}
