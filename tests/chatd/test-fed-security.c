/* hark-chatd federation against a hostile client and with a guarded
 * Redis: control bytes in USER, realname and NICK forge nothing on another
 * node; a Redis that requires AUTH (an ACL user limited to the network's
 * keys, as README documents) or TLS works with the options and fails
 * with a clear error without them. Skipped (77) without redis-server; the
 * TLS test is skipped without the openssl command. */
#include "fednet.h"

static void teardown(void) {
  ck_assert_msg(net_stop() == 0, "a daemon did not stop cleanly");
}

/* ---- forgery --------------------------------------------------------- */

static bool has_control(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return true;
  return false;
}

/* A client whose USER and realname hold TAB, CR, ^A and more, and who
 * then joins and talks: on another node every line it causes is exactly
 * the one expected, from its own prefix, and nothing reaches a keyed
 * channel it is not in. */
START_TEST(control_bytes_in_user_realname_and_nick_forge_nothing) {
  net_init();
  net_redis();
  for (int i = 0; i < 3; i++)
    net_node(i);
  client *v = cl_register(1, "victim");
  cl_join(v, "#x", NULL);
  cl_join(v, "#k", NULL);
  cl_send(v, "MODE #k +sk secret");
  EXPECT(v, "MODE #k +sk secret");
  client *m = cl_new(0);
  static const char reg[] =
      "NICK mal\r\n"
      "USER a\tb\x01\x02\rPRIVMSG\t#x\t:forged\tJOIN\t#k 0 * "
      ":Real\tname\x01\x7f\rJOIN #k\r\n";
  cl_raw(m, reg, sizeof reg - 1);
  EXPECT(m, " 001 mal ");
  cl_send(m, "NICK b\tad"); /* a control byte in a nick: 432 */
  EXPECT(m, " 432 mal ");
  static const char nul[] = "USER x\0\tJOIN #k 0 * :y\r\n"; /* cut at NUL */
  cl_raw(m, nul, sizeof nul - 1);
  EXPECT(m, " 461 mal USER ");
  cl_join(m, "#x", NULL);
  cl_send(m, "PRIVMSG #x :hello\tthere\r\nPRIVMSG victim :psst");
  /* on node 1: one JOIN, one channel message, one private message, all
   * from mal's own prefix */
  int joins = 0, msgs = 0, pms = 0;
  char prefix[128] = "";
  long long end = now_ms() + 3000;
  while (pms == 0 && now_ms() < end) {
    if (cl_line(v, (int)(end - now_ms())) <= 0)
      break;
    if (v->line[0] == ':' && strncmp(v->line + 1, "mal!", 4) == 0) {
      size_t n = strcspn(v->line, " ");
      snprintf(prefix, sizeof prefix, "%.*s", (int)n, v->line);
      ck_assert_msg(!has_control(prefix), "control bytes in %s", prefix);
      joins += strstr(v->line, " JOIN #x") != NULL;
      msgs += strstr(v->line, " PRIVMSG #x :hello\tthere") != NULL;
      pms += strstr(v->line, " PRIVMSG victim :psst") != NULL;
      ck_assert_msg(strstr(v->line, "#k") == NULL, "forged: %s", v->line);
    } else {
      ck_assert_msg(strstr(v->line, "mal") == NULL &&
                        strstr(v->line, "forged") == NULL,
                    "forged: %s", v->line);
    }
  }
  ck_assert_int_eq(joins, 1);
  ck_assert_int_eq(msgs, 1);
  ck_assert_int_eq(pms, 1);
  cl_none(v, "forged", 300);
  /* WHOIS and WHO on another node: one clean line each */
  cl_send(v, "WHOIS mal");
  EXPECT(v, " 311 victim mal ");
  ck_assert_msg(!has_control(v->line), "WHOIS: %s", v->line);
  ck_assert_ptr_nonnull(strstr(v->line, " :Real name  "));
  char names[256];
  names_of(v, "#k", names, sizeof names);
  ck_assert_str_eq(names, "@victim");
  client *o = cl_register(2, "other");
  names_of(o, "#k", names, sizeof names); /* secret: to members only */
  ck_assert_str_eq(names, "");
  cl_send(o, "WHO #x");
  int who = 0;
  while (cl_line(o, 3000) > 0 && strstr(o->line, " 315 ") == NULL) {
    ck_assert_msg(!has_control(o->line), "WHO: %s", o->line);
    who += strstr(o->line, " 352 ") != NULL;
  }
  ck_assert_int_eq(who, 2);
  cl_free(v);
  cl_free(m);
  cl_free(o);
}
END_TEST

/* ---- AUTH ------------------------------------------------------------- */

/* The ACL of README's "Running several daemons": the network's keys and
 * the commands the daemon and its scripts use, nothing else. */
static const char *const acl[] = {
    "--user",       "chatd",      "on",
    ">chatpw",      "~{hark}:*",  "resetchannels",
    "-@all",        "+ping",      "+client|setname",
    "+script|load", "+evalsha",   "+xread",
    "+get",         "+setnx",     "+xadd",
    "+xrevrange",   "+incr",      "+time",
    "+del",         "+exists",    "+hget",
    "+hset",        "+hdel",      "+hgetall",
    "+hkeys",       "+hmget",     "+hexists",
    "+hlen",        "+sadd",      "+srem",
    "+smembers",    "+sismember", NULL};

START_TEST(redis_with_auth_works_with_the_options_and_says_why_without) {
  net_init();
  redis_arg("--requirepass");
  redis_arg("adminpw");
  for (int i = 0; acl[i] != NULL; i++)
    redis_arg(acl[i]);
  net_redis();
  char pwfile[256];
  snprintf(pwfile, sizeof pwfile, "%s/pw", N.dir);
  FILE *f = fopen(pwfile, "w");
  fputs("chatpw\n", f);
  fclose(f);
  const char *user0[] = {"--redis-user", "chatd", "--redis-password", "chatpw"};
  const char *user1[] = {"--redis-user", "chatd", "--redis-password-file",
                         pwfile};
  const char *wrong[] = {"--redis-user", "chatd", "--redis-password", "nope"};
  net_node_with(0, user0, 4);
  net_node_with(1, user1, 4);
  net_node(2); /* no password */
  net_node_with(3, wrong, 4);
  client *a = cl_register(0, "ann");
  client *b = cl_register(1, "bob");
  cl_join(a, "#auth", NULL);
  cl_join(b, "#auth", NULL);
  EXPECT(a, ":bob!bob@127.0.0.1 JOIN #auth");
  cl_send(b, "PRIVMSG #auth :through the ACL");
  EXPECT(a, ":bob!bob@127.0.0.1 PRIVMSG #auth :through the ACL");
  ck_assert_msg(node_log_has(2, "NOAUTH", 3000), "node 2: no clear error");
  ck_assert(node_log_has(2, "the server wants a password", 100));
  ck_assert(node_log_has(2, "--redis-password", 100));
  ck_assert_msg(node_log_has(3, "authentication refused", 3000),
                "node 3: no clear error");
  /* and they are not in the network: alone, but serving */
  client *c = cl_register(2, "cid");
  cl_join(c, "#auth", NULL);
  cl_send(c, "PRIVMSG #auth :anyone?");
  cl_none(a, "anyone?", 500);
  cl_send(a, "ISON cid");
  EXPECT(a, " 303 ann :");
  ck_assert_str_eq(strstr(a->line, " :") + 2, "");
  cl_free(a);
  cl_free(b);
  cl_free(c);
}
END_TEST

/* ---- TLS -------------------------------------------------------------- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  return system(cmd);
}

/* A throwaway CA, Redis's certificate for 127.0.0.1, a client certificate
 * and another CA, in dir. False when openssl is missing. */
static bool make_certs(const char *d) {
  if (sh("command -v openssl >/dev/null 2>&1") != 0)
    return false;
  const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  int r = 0;
  r |= sh("cd %s && printf 'subjectAltName=IP:127.0.0.1\\n' >san.ext", d);
  r |= sh("cd %s && openssl req -x509 %s -keyout ca.key -out ca.crt -days 1 "
          "-subj '/CN=hark test CA' 2>/dev/null",
          d, ec);
  r |= sh("cd %s && openssl req -x509 %s -keyout other.key -out other.crt "
          "-days 1 -subj '/CN=another CA' 2>/dev/null",
          d, ec);
  for (int i = 0; i < 2; i++) {
    const char *n = i ? "client" : "redis";
    r |= sh("cd %s && openssl req %s -keyout %s.key -out %s.csr -subj "
            "'/CN=%s' 2>/dev/null && openssl x509 -req -in %s.csr -CA ca.crt "
            "-CAkey ca.key -CAcreateserial -out %s.crt -days 1 %s 2>/dev/null",
            d, ec, n, n, i ? "chatd" : "127.0.0.1", n, n,
            i ? "" : "-extfile san.ext");
  }
  return r == 0;
}

START_TEST(redis_with_tls_works_with_the_options_and_says_why_without) {
  net_init();
  if (!make_certs(N.dir)) {
    fprintf(stderr, "SKIP: no openssl command: TLS not tested\n");
    return;
  }
  static char cert[256], key[256], ca[256], ccert[256], ckey[256], other[256];
  snprintf(cert, sizeof cert, "%s/redis.crt", N.dir);
  snprintf(key, sizeof key, "%s/redis.key", N.dir);
  snprintf(ca, sizeof ca, "%s/ca.crt", N.dir);
  snprintf(ccert, sizeof ccert, "%s/client.crt", N.dir);
  snprintf(ckey, sizeof ckey, "%s/client.key", N.dir);
  snprintf(other, sizeof other, "%s/other.crt", N.dir);
  N.redis_plain_off = true;
  const char *tls[] = {
      "--tls-cert-file",    cert,   "--tls-key-file",     key,
      "--tls-ca-cert-file", ca,     "--tls-auth-clients", "yes",
      "--requirepass",      "tlspw"};
  for (size_t i = 0; i < sizeof tls / sizeof tls[0]; i++)
    redis_arg(tls[i]);
  net_redis();
  const char *good[] = {"--redis-tls", "--redis-ca",  ca,   "--redis-cert",
                        ccert,         "--redis-key", ckey, "--redis-password",
                        "tlspw"};
  const char *bad_ca[] = {
      "--redis-tls", "--redis-ca",  other, "--redis-cert",
      ccert,         "--redis-key", ckey,  "--redis-password",
      "tlspw"};
  const char *plain[] = {"--redis-password", "tlspw"};
  net_node_with(0, good, 9);
  net_node_with(1, good, 9);
  net_node_with(2, plain, 2);
  net_node_with(3, bad_ca, 9);
  client *a = cl_register(0, "tia");
  client *b = cl_register(1, "tom");
  cl_join(a, "#tls", NULL);
  cl_join(b, "#tls", NULL);
  EXPECT(a, ":tom!tom@127.0.0.1 JOIN #tls");
  cl_send(b, "PRIVMSG #tls :encrypted");
  EXPECT(a, ":tom!tom@127.0.0.1 PRIVMSG #tls :encrypted");
  ck_assert_msg(node_log_has(2, "--redis-tls", 5000),
                "node 2 (no TLS): no clear error");
  ck_assert_msg(node_log_has(3, "certificate verification failed", 5000),
                "node 3 (wrong CA): no clear error");
  client *c = cl_register(3, "eve");
  cl_join(c, "#tls", NULL);
  cl_send(c, "PRIVMSG #tls :let me in");
  cl_none(a, "let me in", 500);
  cl_free(a);
  cl_free(b);
  cl_free(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("federation security");
  TCase *tc = tcase_create("security");
  tcase_add_checked_fixture(tc, NULL, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, control_bytes_in_user_realname_and_nick_forge_nothing);
  tcase_add_test(tc,
                 redis_with_auth_works_with_the_options_and_says_why_without);
  tcase_add_test(tc,
                 redis_with_tls_works_with_the_options_and_says_why_without);
  suite_add_tcase(s, tc);
  return fednet_main(s);
}
