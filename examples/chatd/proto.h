/* IRC line parsing and formatting for hark-chatd: pure functions, no I/O,
 * no allocation, so that they can be unit-tested and fuzzed alone. */
#ifndef CHATD_PROTO_H
#define CHATD_PROTO_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

/* RFC 1459: a line is at most 512 bytes including the CR LF. */
#define IRC_LINE_MAX 512
#define IRC_BODY_MAX (IRC_LINE_MAX - 2)
#define IRC_PARAMS_MAX 15

/* One parsed line. Every pointer points into the buffer given to
 * irc_parse (borrowed from it), NUL-terminated in place. */
typedef struct irc_msg {
  const char *tags;   /* the tags without the '@', NULL when absent */
  const char *prefix; /* NULL when absent */
  const char *command;
  const char *params[IRC_PARAMS_MAX];
  int nparams;
} irc_msg;

/* Parses line (len bytes without CR LF, modified in place: separators
 * become NULs; line[len] must be writable) into m. Tags (@...) are
 * left for the caller (m->tags). Returns 0, or -1 for an empty or
 * command-less line. */
int irc_parse(char *line, size_t len, irc_msg *m);

/* Finds the next line in buf[0..len): on success returns 1, sets *linelen
 * to the line's length without its LF or CR LF, and *consumed to the bytes
 * to drop including the terminator. Returns 0 when no full line is there. */
int irc_next_line(const char *buf, size_t len, size_t *linelen,
                  size_t *consumed);

/* The rfc1459 casemapping: ASCII letters plus []\~ <-> {}|^. */
int irc_tolower(int c);
int irc_casecmp(const char *a, const char *b);
/* Writes the folded name into dst (cap bytes incl. NUL, truncating). */
void irc_fold(char *dst, const char *src, size_t cap);

/* Nick: a letter or one of []\`_^{|} first, then those, digits or '-';
 * 1..maxlen bytes. */
bool irc_valid_nick(const char *nick, size_t maxlen);
/* Channel: '#' or '&' then 1..maxlen-1 bytes, none of NUL BEL CR LF SP ','
 * ':'. */
bool irc_valid_channel(const char *name, size_t maxlen);

/* Whether a target names a channel (CHANTYPES=#&): '#' channels are the
 * network's, '&' channels this server's own, never federated. */
static inline bool irc_is_channel(const char *name) {
  return name[0] == '#' || name[0] == '&';
}
static inline bool irc_local_channel(const char *name) {
  return name[0] == '&';
}

/* Formats a line into buf (cap >= IRC_LINE_MAX + 1): the printf result cut
 * to IRC_BODY_MAX bytes (never in the middle of a UTF-8 sequence), with any
 * CR, LF or NUL in it replaced by a space, then CR LF and a NUL. Returns
 * the length including CR LF. */
size_t irc_format(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
size_t irc_vformat(char *buf, size_t cap, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Whether str matches mask: '*' any run, '?' one byte, rfc1459 case
 * folded. Bounded work whatever the pattern. */
bool irc_match(const char *mask, const char *str);

/* Whether s is valid UTF-8 (no overlongs, no surrogates). */
bool irc_utf8_valid(const char *s, size_t len);

/* Splits a comma list in place: returns the next item (NUL-terminated) and
 * advances *cursor, or NULL at the end. */
char *irc_next_item(char **cursor);

#endif
