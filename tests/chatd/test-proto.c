/* hark-chatd's IRC line parser and formatter: pure functions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "../util.h"

static int parse(const char *text, irc_msg *m, char *buf) {
  size_t n = strlen(text);
  memcpy(buf, text, n + 1);
  return irc_parse(buf, n, m);
}

START_TEST(parse_reads_prefix_command_and_trailing) {
  char buf[600];
  irc_msg m;
  ck_assert_int_eq(parse(":nick!u@h privmsg #chan :hello world", &m, buf), 0);
  ck_assert_str_eq(m.prefix, "nick!u@h");
  ck_assert_str_eq(m.command, "PRIVMSG");
  ck_assert_int_eq(m.nparams, 2);
  ck_assert_str_eq(m.params[0], "#chan");
  ck_assert_str_eq(m.params[1], "hello world");
}
END_TEST

START_TEST(parse_handles_empty_trailing_and_extra_spaces) {
  char buf[600];
  irc_msg m;
  ck_assert_int_eq(parse("  TOPIC   #c   :", &m, buf), 0);
  ck_assert_str_eq(m.command, "TOPIC");
  ck_assert_int_eq(m.nparams, 2);
  ck_assert_str_eq(m.params[1], "");
  ck_assert_int_eq(parse("@tag=1 PING x", &m, buf), 0);
  ck_assert_str_eq(m.command, "PING");
  ck_assert_str_eq(m.params[0], "x");
}
END_TEST

START_TEST(parse_rejects_empty_and_prefix_only_lines) {
  char buf[600];
  irc_msg m;
  ck_assert_int_eq(parse("", &m, buf), -1);
  ck_assert_int_eq(parse("   ", &m, buf), -1);
  ck_assert_int_eq(parse(":prefix", &m, buf), -1);
  ck_assert_int_eq(parse(":prefix   ", &m, buf), -1);
}
END_TEST

START_TEST(parse_caps_params_at_fifteen) {
  char buf[600];
  irc_msg m;
  ck_assert_int_eq(
      parse("CMD 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", &m, buf), 0);
  ck_assert_int_eq(m.nparams, 15);
  ck_assert_str_eq(m.params[14], "15 16 17");
}
END_TEST

START_TEST(next_line_accepts_crlf_and_bare_lf) {
  size_t len, used;
  ck_assert_int_eq(irc_next_line("abc\r\ndef", 8, &len, &used), 1);
  ck_assert_uint_eq(len, 3);
  ck_assert_uint_eq(used, 5);
  ck_assert_int_eq(irc_next_line("abc\ndef", 7, &len, &used), 1);
  ck_assert_uint_eq(len, 3);
  ck_assert_uint_eq(used, 4);
  ck_assert_int_eq(irc_next_line("abc\r", 4, &len, &used), 0);
}
END_TEST

START_TEST(casemapping_is_rfc1459) {
  ck_assert_int_eq(irc_casecmp("Nick[a]", "nick{A}"), 0);
  ck_assert_int_eq(irc_casecmp("a\\b~", "A|B^"), 0);
  ck_assert_int_ne(irc_casecmp("abc", "abd"), 0);
  char f[16];
  irc_fold(f, "#HaRK[]", sizeof f);
  ck_assert_str_eq(f, "#hark{}");
}
END_TEST

START_TEST(nick_and_channel_validation) {
  ck_assert(irc_valid_nick("alice", 9));
  ck_assert(irc_valid_nick("[x]_`^{|}-1", 30));
  ck_assert(!irc_valid_nick("1abc", 9));
  ck_assert(!irc_valid_nick("-abc", 9));
  ck_assert(!irc_valid_nick("a b", 9));
  ck_assert(!irc_valid_nick("", 9));
  ck_assert(!irc_valid_nick("abcdefghij", 9));
  ck_assert(irc_valid_channel("#hark", 50));
  ck_assert(!irc_valid_channel("#", 50));
  ck_assert(!irc_valid_channel("hark", 50));
  ck_assert(!irc_valid_channel("#a,b", 50));
  ck_assert(!irc_valid_channel("#a\007b", 50));
  ck_assert(!irc_valid_channel("#abcdef", 5));
}
END_TEST

START_TEST(format_never_exceeds_512_bytes) {
  char big[2000], buf[IRC_LINE_MAX + 1];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  size_t n = irc_format(buf, sizeof buf, ":n!u@h PRIVMSG #c :%s", big);
  ck_assert_uint_eq(n, IRC_LINE_MAX);
  ck_assert_uint_eq(strlen(buf), IRC_LINE_MAX);
  ck_assert(buf[510] == '\r' && buf[511] == '\n');
}
END_TEST

START_TEST(format_does_not_cut_utf8_and_strips_newlines) {
  char big[600], buf[IRC_LINE_MAX + 1];
  memset(big, 'x', 509);
  memcpy(big + 509, "\xc3\xa9\xc3\xa9", 5); /* é straddles byte 510 */
  size_t n = irc_format(buf, sizeof buf, "%s", big);
  ck_assert_uint_eq(n, 511);
  ck_assert(buf[508] == 'x' && buf[509] == '\r');
  n = irc_format(buf, sizeof buf, "a%sb", "\r\nQUIT");
  ck_assert_str_eq(buf, "a  QUITb\r\n");
  ck_assert_uint_eq(n, 10);
}
END_TEST

START_TEST(comma_lists_split_in_place) {
  char list[] = "#a,,#b,#c";
  char *cur = list, *it;
  const char *want[] = {"#a", "#b", "#c"};
  int i = 0;
  while ((it = irc_next_item(&cur)) != NULL)
    ck_assert_str_eq(it, want[i++]);
  ck_assert_int_eq(i, 3);
  cur = NULL;
  ck_assert_ptr_null(irc_next_item(&cur));
}
END_TEST

/* A small fuzz: random bytes never crash the parser or the splitter, and
 * every parsed pointer stays inside the buffer. */
START_TEST(random_lines_never_break_the_parser) {
  unsigned seed = 12345;
  char buf[IRC_LINE_MAX + 1];
  for (int round = 0; round < 20000; round++) {
    size_t n = (size_t)(rand_r(&seed) % IRC_LINE_MAX);
    for (size_t i = 0; i < n; i++) {
      int r = rand_r(&seed) % 8;
      buf[i] = r == 0 ? ' ' : r == 1 ? ':' : r == 2 ? '\0'
                                                      : (char)rand_r(&seed);
    }
    irc_msg m;
    size_t len, used;
    irc_next_line(buf, n, &len, &used);
    if (irc_parse(buf, n, &m) == 0) {
      ck_assert(m.command >= buf && m.command <= buf + n);
      ck_assert_int_le(m.nparams, IRC_PARAMS_MAX);
      for (int i = 0; i < m.nparams; i++)
        ck_assert(m.params[i] >= buf && m.params[i] <= buf + n);
    }
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("chatd-proto");
  TCase *tc = tcase_create("proto");
  tcase_add_test(tc, parse_reads_prefix_command_and_trailing);
  tcase_add_test(tc, parse_handles_empty_trailing_and_extra_spaces);
  tcase_add_test(tc, parse_rejects_empty_and_prefix_only_lines);
  tcase_add_test(tc, parse_caps_params_at_fifteen);
  tcase_add_test(tc, next_line_accepts_crlf_and_bare_lf);
  tcase_add_test(tc, casemapping_is_rfc1459);
  tcase_add_test(tc, nick_and_channel_validation);
  tcase_add_test(tc, format_never_exceeds_512_bytes);
  tcase_add_test(tc, format_does_not_cut_utf8_and_strips_newlines);
  tcase_add_test(tc, comma_lists_split_in_place);
  tcase_add_test(tc, random_lines_never_break_the_parser);
  suite_add_tcase(s, tc);
  return test_run(s);
}
