/* libFuzzer harness for hark-chatd's IRC line parser and formatter
 * (examples/chatd/proto.c): the input is a byte stream split into lines as
 * a session does; each line is parsed, its fields checked, and formatted
 * back. Aborts on any broken invariant. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define CHECK(c)                                                             \
  do {                                                                       \
    if (!(c)) {                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      abort();                                                               \
    }                                                                        \
  } while (0)

static int inside(const char *p, const char *buf, size_t len) {
  return p >= buf && p <= buf + len;
}

static void check_word(const char *w) {
  CHECK(w[0] != '\0');
  CHECK(strchr(w, ' ') == NULL);
}

static void check_format(const char *body) {
  char out[IRC_LINE_MAX + 1];
  size_t n = irc_format(out, sizeof out, "%s", body);
  CHECK(n >= 2 && n <= IRC_LINE_MAX);
  CHECK(out[n - 2] == '\r' && out[n - 1] == '\n' && out[n] == '\0');
  for (size_t i = 0; i + 2 < n; i++)
    CHECK(out[i] != '\r' && out[i] != '\n' && out[i] != '\0');
  size_t want = strlen(body);
  if (want <= IRC_BODY_MAX)
    CHECK(n == want + 2);
  else /* never more than a 3-byte UTF-8 tail given up */
    CHECK(n - 2 + 3 >= IRC_BODY_MAX);
  /* what we send parses back as one line */
  size_t linelen, used;
  CHECK(irc_next_line(out, n, &linelen, &used) == 1);
  CHECK(used == n && linelen == n - 2);
}

static void one_line(const char *data, size_t len) {
  /* exactly len + 1 bytes: the parser may write line[len] only */
  char *line = malloc(len + 1);
  CHECK(line != NULL);
  memcpy(line, data, len);
  irc_msg m;
  int r = irc_parse(line, len, &m);
  CHECK(r == 0 || r == -1);
  if (r == 0) {
    CHECK(m.command != NULL && inside(m.command, line, len));
    check_word(m.command);
    for (const char *c = m.command; *c; c++)
      CHECK(!(*c >= 'a' && *c <= 'z'));
    if (m.prefix != NULL) {
      CHECK(inside(m.prefix, line, len));
      CHECK(strchr(m.prefix, ' ') == NULL);
    }
    CHECK(m.nparams >= 0 && m.nparams <= IRC_PARAMS_MAX);
    for (int i = 0; i < m.nparams; i++) {
      CHECK(m.params[i] != NULL && inside(m.params[i], line, len));
      if (i + 1 < m.nparams)
        check_word(m.params[i]);
    }
    for (int i = m.nparams; i < IRC_PARAMS_MAX; i++)
      CHECK(m.params[i] == NULL);
    /* what the commands do with a parameter */
    for (int i = 0; i < m.nparams; i++) {
      char folded[64];
      irc_fold(folded, m.params[i], sizeof folded);
      CHECK(strlen(folded) < sizeof folded);
      CHECK(irc_casecmp(m.params[i], m.params[i]) == 0);
      if (strlen(m.params[i]) < sizeof folded)
        CHECK(irc_casecmp(folded, m.params[i]) == 0);
      bool nick = irc_valid_nick(m.params[i], 30);
      if (nick)
        CHECK(strlen(m.params[i]) <= 30 && strchr(m.params[i], ' ') == NULL);
      bool chan = irc_valid_channel(m.params[i], 50);
      if (chan)
        CHECK(irc_is_channel(m.params[i]) &&
              strpbrk(m.params[i], " ,:") == NULL);
      size_t plen = strlen(m.params[i]);
      char *copy = malloc(plen + 1);
      CHECK(copy != NULL);
      memcpy(copy, m.params[i], plen + 1);
      char *cursor = copy, *item;
      size_t items = 0;
      while ((item = irc_next_item(&cursor)) != NULL) {
        CHECK(item >= copy && item < copy + plen);
        CHECK(item[0] != '\0' && strchr(item, ',') == NULL);
        CHECK(++items <= plen);
      }
      free(copy);
      check_format(m.params[i]);
    }
  }
  free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *buf = (const char *)data;
  size_t off = 0, len, used;
  while (irc_next_line(buf + off, size - off, &len, &used)) {
    CHECK(used >= 1 && used <= size - off && len < used);
    CHECK(buf[off + used - 1] == '\n');
    if (len <= IRC_LINE_MAX)
      one_line(buf + off, len);
    off += used;
  }
  if (off < size && size - off <= IRC_LINE_MAX) /* the unterminated tail */
    one_line(buf + off, size - off);
  /* the formatter on raw bytes, over-long and with embedded NULs */
  char *raw = malloc(size + 1);
  CHECK(raw != NULL);
  memcpy(raw, data, size);
  raw[size] = '\0';
  check_format(raw);
  free(raw);
  return 0;
}
