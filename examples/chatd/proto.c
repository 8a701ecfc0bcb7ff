/* IRC line parsing and formatting: see proto.h. */
#include "proto.h"

#include <stdio.h>
#include <string.h>

int irc_parse(char *line, size_t len, irc_msg *m) {
  char *p = line, *end = line + len;
  *end = '\0';
  memset(m, 0, sizeof *m);
  /* A NUL inside the line ends it: what follows cannot be shown anyway. */
  end = p + strlen(p);
  while (p < end && *p == ' ')
    p++;
  if (p < end && *p == '@') { /* IRCv3 tags: the caller reads them */
    m->tags = ++p;
    while (p < end && *p != ' ')
      p++;
    if (p < end)
      *p++ = '\0';
    while (p < end && *p == ' ')
      p++;
  }
  if (p < end && *p == ':') {
    m->prefix = ++p;
    while (p < end && *p != ' ')
      p++;
    if (p < end)
      *p++ = '\0';
    while (p < end && *p == ' ')
      p++;
  }
  if (p >= end)
    return -1;
  m->command = p;
  while (p < end && *p != ' ')
    p++;
  if (p < end)
    *p++ = '\0';
  for (char *c = (char *)m->command; *c; c++)
    if (*c >= 'a' && *c <= 'z')
      *c = (char)(*c - 'a' + 'A');
  while (p < end) {
    while (p < end && *p == ' ')
      p++;
    if (p >= end)
      break;
    if (*p == ':' || m->nparams == IRC_PARAMS_MAX - 1) {
      if (*p == ':')
        p++;
      m->params[m->nparams++] = p;
      break;
    }
    m->params[m->nparams++] = p;
    while (p < end && *p != ' ')
      p++;
    if (p < end)
      *p++ = '\0';
  }
  return 0;
}

int irc_next_line(const char *buf, size_t len, size_t *linelen,
                  size_t *consumed) {
  const char *nl = memchr(buf, '\n', len);
  if (nl == NULL)
    return 0;
  size_t n = (size_t)(nl - buf);
  *consumed = n + 1;
  if (n > 0 && buf[n - 1] == '\r')
    n--;
  *linelen = n;
  return 1;
}

int irc_tolower(int c) {
  if (c >= 'A' && c <= '^') /* A-Z [ \ ] ^ */
    return c + ('a' - 'A');
  return c;
}

int irc_casecmp(const char *a, const char *b) {
  for (;; a++, b++) {
    int x = irc_tolower((unsigned char)*a), y = irc_tolower((unsigned char)*b);
    if (x != y || x == 0)
      return x - y;
  }
}

void irc_fold(char *dst, const char *src, size_t cap) {
  size_t i = 0;
  if (cap == 0)
    return;
  for (; i + 1 < cap && src[i]; i++)
    dst[i] = (char)irc_tolower((unsigned char)src[i]);
  dst[i] = '\0';
}

static bool nick_special(int c) {
  return c == '[' || c == ']' || c == '\\' || c == '`' || c == '_' ||
         c == '^' || c == '{' || c == '|' || c == '}';
}

bool irc_valid_nick(const char *nick, size_t maxlen) {
  size_t n = strlen(nick);
  if (n == 0 || n > maxlen)
    return false;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)nick[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    bool ok = alpha || nick_special(c);
    if (i > 0)
      ok = ok || (c >= '0' && c <= '9') || c == '-';
    if (!ok)
      return false;
  }
  return true;
}

bool irc_valid_channel(const char *name, size_t maxlen) {
  size_t n = strlen(name);
  if (n < 2 || n > maxlen || !irc_is_channel(name))
    return false;
  for (size_t i = 1; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c == 7 || c == '\r' || c == '\n' || c == ' ' || c == ',' || c == ':' ||
        c < 32)
      return false;
  }
  return true;
}

size_t irc_vformat(char *buf, size_t cap, const char *fmt, va_list ap) {
  int n = vsnprintf(buf, cap, fmt, ap);
  size_t len = n < 0 ? 0 : (size_t)n;
  if (len > cap - 1)
    len = cap - 1;
  if (len > IRC_BODY_MAX) {
    len = IRC_BODY_MAX;
    /* Never cut inside a UTF-8 sequence: back up to its lead byte. */
    size_t k = len;
    while (k > 0 && ((unsigned char)buf[k] & 0xC0) == 0x80)
      k--;
    if (k > 0 && len - k < 4)
      len = k;
  }
  for (size_t i = 0; i < len; i++)
    if (buf[i] == '\r' || buf[i] == '\n' || buf[i] == '\0')
      buf[i] = ' ';
  buf[len++] = '\r';
  buf[len++] = '\n';
  buf[len] = '\0';
  return len;
}

size_t irc_format(char *buf, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t n = irc_vformat(buf, cap, fmt, ap);
  va_end(ap);
  return n;
}

char *irc_next_item(char **cursor) {
  char *p = *cursor;
  while (p != NULL && *p == ',')
    p++;
  if (p == NULL || *p == '\0') {
    *cursor = NULL;
    return NULL;
  }
  char *item = p;
  char *comma = strchr(p, ',');
  if (comma != NULL) {
    *comma = '\0';
    *cursor = comma + 1;
  } else {
    *cursor = NULL;
  }
  return item;
}

/* Iterative matching with one backtrack point (the last '*'): linear in
 * practice, at most len(mask) * len(str) steps, never recursive. */
bool irc_match(const char *mask, const char *str) {
  const char *star = NULL, *retry = NULL;
  for (;;) {
    if (*mask == '*') {
      while (*mask == '*')
        mask++;
      if (*mask == '\0')
        return true;
      star = mask;
      retry = str;
      continue;
    }
    if (*str == '\0')
      return *mask == '\0';
    if (*mask == '?' ||
        (*mask != '\0' && irc_tolower((unsigned char)*mask) ==
                              irc_tolower((unsigned char)*str))) {
      mask++;
      str++;
      continue;
    }
    if (star == NULL)
      return false;
    mask = star;
    str = ++retry;
  }
}

bool irc_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    unsigned c = *p++;
    if (c < 0x80)
      continue;
    int n;
    unsigned min;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      c &= 0x1F;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      c &= 0x0F;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      c &= 0x07;
      min = 0x10000;
    } else {
      return false;
    }
    if (end - p < n)
      return false;
    while (n-- > 0) {
      if ((*p & 0xC0) != 0x80)
        return false;
      c = (c << 6) | (*p++ & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
      return false;
  }
  return true;
}
