/* Leak tracker: live counts, snapshots, the diff table, HARK_DEBUG=leaks. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/wait.h>
#include <unistd.h>

static long start_blocks;

static void setup(void) {
  test_alloc_install();
  start_blocks = test_blocks();
}

static void teardown(void) { ck_assert_int_eq(test_blocks(), start_blocks); }

typedef struct widget {
  hark_object base;
  char payload[40];
} widget;

static const hark_type widget_type = {"widget", sizeof(widget), NULL, NULL};
static const hark_type gadget_type = {"gadget", sizeof(test_obj), NULL, NULL};
static const hark_type still_type = {"still", sizeof(test_obj), NULL, NULL};

static void *make(const hark_type *t) {
  void *o = hark_new(t);
  ck_assert_ptr_nonnull(o);
  return o;
}

/* Reads everything written to f. */
static char *slurp(FILE *f) {
  static char buf[8192];
  ck_assert_int_eq(fflush(f), 0);
  rewind(f);
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  return buf;
}

/* Finds the table row named name in text; returns 1 and its two numbers
 * (as printed, with their sign) or 0 if there is no such row. */
static int find_row(const char *text, const char *name, long *objects,
                    long *bytes) {
  const char *line = text;
  while (line != NULL && *line != '\0') {
    char first[64];
    long o, b;
    if (strncmp(line, "hark: ", 6) == 0) /* through the default log */
      line += 6;
    if (sscanf(line, "%63s %ld %ld", first, &o, &b) == 3 &&
        strcmp(first, name) == 0) {
      *objects = o;
      *bytes = b;
      return 1;
    }
    line = strchr(line, '\n');
    if (line != NULL)
      line++;
  }
  return 0;
}

/* ---- live counts --------------------------------------------------------- */

START_TEST(live_count_counts_objects_per_type) {
  size_t w0 = hark_live_count("widget");
  size_t g0 = hark_live_count("gadget");
  void *w[3], *g[2];
  for (int i = 0; i < 3; i++)
    w[i] = make(&widget_type);
  for (int i = 0; i < 2; i++)
    g[i] = make(&gadget_type);
  ck_assert_uint_eq(hark_live_count("widget"), w0 + 3);
  ck_assert_uint_eq(hark_live_count("gadget"), g0 + 2);
  hark_unref(w[1]);
  ck_assert_uint_eq(hark_live_count("widget"), w0 + 2);
  ck_assert_uint_eq(hark_live_count("gadget"), g0 + 2);
  hark_unref(w[0]);
  hark_unref(w[2]);
  hark_unref(g[0]);
  hark_unref(g[1]);
  ck_assert_uint_eq(hark_live_count("widget"), w0);
  ck_assert_uint_eq(hark_live_count("gadget"), g0);
}
END_TEST

START_TEST(live_count_of_null_counts_every_type) {
  size_t all0 = hark_live_count(NULL);
  void *a = make(&widget_type);
  void *b = make(&gadget_type);
  void *c = make(&test_obj_type);
  ck_assert_uint_eq(hark_live_count(NULL), all0 + 3);
  hark_unref(a);
  hark_unref(b);
  ck_assert_uint_eq(hark_live_count(NULL), all0 + 1);
  hark_unref(c);
  ck_assert_uint_eq(hark_live_count(NULL), all0);
}
END_TEST

START_TEST(live_count_of_an_unknown_type_is_zero) {
  void *a = make(&widget_type);
  ck_assert_uint_eq(hark_live_count("no such type"), 0);
  ck_assert_uint_eq(hark_live_count(""), 0);
  hark_unref(a);
}
END_TEST

START_TEST(live_count_counts_an_object_until_its_finalize) {
  size_t n0 = hark_live_count("widget");
  void *a = make(&widget_type);
  hark_ref(a);
  hark_unref(a);
  ck_assert_uint_eq(hark_live_count("widget"), n0 + 1);
  hark_unref(a);
  ck_assert_uint_eq(hark_live_count("widget"), n0);
}
END_TEST

START_TEST(types_sharing_a_name_are_counted_together) {
  static const hark_type twin_a = {"twin", 16, NULL, NULL};
  static const hark_type twin_b = {"twin", 24, NULL, NULL};
  void *a = make(&twin_a);
  void *b = make(&twin_b);
  void *b2 = make(&twin_b);
  ck_assert_uint_eq(hark_live_count("twin"), 3);
  hark_snapshot *s = hark_snapshot_take();
  ck_assert_ptr_nonnull(s);
  ck_assert_uint_eq(hark_snapshot_count(s, "twin"), 3);
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, NULL, s);
  long objects, bytes;
  const char *text = slurp(f);
  ck_assert_msg(find_row(text, "twin", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, 3);
  ck_assert_int_eq(bytes, 16 + 24 + 24);
  fclose(f);
  hark_snapshot_free(s);
  hark_unref(a);
  hark_unref(b);
  hark_unref(b2);
  ck_assert_uint_eq(hark_live_count("twin"), 0);
}
END_TEST

START_TEST(type_without_a_name_is_counted_as_unnamed) {
  static const hark_type anon = {NULL, sizeof(hark_object), NULL, NULL};
  size_t n0 = hark_live_count("(unnamed)");
  void *a = make(&anon);
  ck_assert_uint_eq(hark_live_count("(unnamed)"), n0 + 1);
  hark_unref(a);
  ck_assert_uint_eq(hark_live_count("(unnamed)"), n0);
}
END_TEST

/* More types than the tracker's table has slots are still counted, the
 * excess under one shared row. */
START_TEST(types_beyond_the_table_are_counted_as_other_types) {
  enum { N = 400 };
  static hark_type types[N];
  static char names[N][16];
  static void *objs[N];
  size_t all0 = hark_live_count(NULL);
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof(names[i]), "many-%d", i);
    types[i].name = names[i];
    types[i].size = sizeof(hark_object);
    objs[i] = make(&types[i]);
  }
  ck_assert_uint_eq(hark_live_count(NULL), all0 + N);
  size_t named = 0;
  for (int i = 0; i < N; i++)
    named += hark_live_count(names[i]);
  ck_assert_uint_eq(named + hark_live_count("(other types)"), N);
  ck_assert_uint_gt(hark_live_count("(other types)"), 0);
  for (int i = 0; i < N; i++)
    hark_unref(objs[i]);
  ck_assert_uint_eq(hark_live_count(NULL), all0);
  ck_assert_uint_eq(hark_live_count("(other types)"), 0);
}
END_TEST

/* A type must outlive its objects only: once they are gone its owner may
 * free it, and the tracker must not read it any more. */
START_TEST(live_count_does_not_read_a_type_freed_after_its_objects) {
  hark_type *t = malloc(sizeof(*t));
  ck_assert_ptr_nonnull(t);
  char *name = strdup("short-lived");
  ck_assert_ptr_nonnull(name);
  t->name = name;
  t->size = sizeof(hark_object);
  t->finalize = NULL;
  t->traverse = NULL; /* a type built field by field sets every field */
  void *o = make(t);
  ck_assert_uint_eq(hark_live_count("short-lived"), 1);
  hark_unref(o);
  free(name);
  free(t);
  /* ASan/valgrind catch a read of the freed type or name here */
  ck_assert_uint_eq(hark_live_count("short-lived"), 0);
  ck_assert_uint_eq(hark_live_count("widget"), 0);
  hark_snapshot *s = hark_snapshot_take();
  ck_assert_ptr_nonnull(s);
  ck_assert_uint_eq(hark_snapshot_count(s, "short-lived"), 0);
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, NULL, NULL);
  fclose(f);
  hark_snapshot_free(s);
}
END_TEST

/* ---- snapshots ----------------------------------------------------------- */

START_TEST(snapshot_counts_live_objects_per_type) {
  hark_snapshot *before = hark_snapshot_take();
  ck_assert_ptr_nonnull(before);
  void *a = make(&widget_type);
  void *b = make(&widget_type);
  void *c = make(&gadget_type);
  hark_snapshot *after = hark_snapshot_take();
  ck_assert_ptr_nonnull(after);
  ck_assert_uint_eq(hark_snapshot_count(after, "widget"),
                    hark_snapshot_count(before, "widget") + 2);
  ck_assert_uint_eq(hark_snapshot_count(after, "gadget"),
                    hark_snapshot_count(before, "gadget") + 1);
  ck_assert_uint_eq(hark_snapshot_count(after, NULL),
                    hark_snapshot_count(before, NULL) + 3);
  ck_assert_uint_eq(hark_snapshot_count(after, "no such type"), 0);
  /* a snapshot does not change when objects die later */
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  ck_assert_uint_eq(hark_snapshot_count(after, "widget"),
                    hark_snapshot_count(before, "widget") + 2);
  hark_snapshot_free(before);
  hark_snapshot_free(after);
}
END_TEST

START_TEST(snapshot_functions_accept_null) {
  ck_assert_uint_eq(hark_snapshot_count(NULL, NULL), 0);
  ck_assert_uint_eq(hark_snapshot_count(NULL, "widget"), 0);
  hark_snapshot_free(NULL);
}
END_TEST

START_TEST(print_diff_shows_header_rows_and_total) {
  void *keep = make(&still_type); /* alive in both: not shown */
  hark_snapshot *before = hark_snapshot_take();
  ck_assert_ptr_nonnull(before);
  void *w1 = make(&widget_type);
  void *w2 = make(&widget_type);
  void *g = make(&gadget_type);
  hark_snapshot *after = hark_snapshot_take();
  ck_assert_ptr_nonnull(after);
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, before, after);
  const char *text = slurp(f);

  char h1[16], h2[16], h3[16];
  ck_assert_int_eq(sscanf(text, "%15s %15s %15s", h1, h2, h3), 3);
  ck_assert_str_eq(h1, "type");
  ck_assert_str_eq(h2, "objects");
  ck_assert_str_eq(h3, "bytes");

  long objects, bytes;
  ck_assert_msg(find_row(text, "widget", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, 2);
  ck_assert_int_eq(bytes, 2 * (long)sizeof(widget));
  ck_assert_ptr_nonnull(strstr(text, "+2"));
  ck_assert_msg(find_row(text, "gadget", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, 1);
  ck_assert_int_eq(bytes, (long)sizeof(test_obj));
  ck_assert_msg(find_row(text, "(total)", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, 3);
  ck_assert_int_eq(bytes, 2 * (long)sizeof(widget) + (long)sizeof(test_obj));
  ck_assert_msg(!find_row(text, "still", &objects, &bytes), "%s", text);

  fclose(f);
  hark_snapshot_free(before);
  hark_snapshot_free(after);
  hark_unref(w1);
  hark_unref(w2);
  hark_unref(g);
  hark_unref(keep);
}
END_TEST

START_TEST(print_diff_shows_freed_objects_as_negative) {
  void *w1 = make(&widget_type);
  void *w2 = make(&widget_type);
  hark_snapshot *before = hark_snapshot_take();
  ck_assert_ptr_nonnull(before);
  hark_unref(w1);
  hark_unref(w2);
  void *g = make(&gadget_type);
  hark_snapshot *after = hark_snapshot_take();
  ck_assert_ptr_nonnull(after);
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, before, after);
  const char *text = slurp(f);
  long objects, bytes;
  ck_assert_msg(find_row(text, "widget", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, -2);
  ck_assert_int_eq(bytes, -2 * (long)sizeof(widget));
  ck_assert_msg(find_row(text, "gadget", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, 1);
  ck_assert_msg(find_row(text, "(total)", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, -1);
  ck_assert_int_eq(bytes, (long)sizeof(test_obj) - 2 * (long)sizeof(widget));
  fclose(f);
  hark_snapshot_free(before);
  hark_snapshot_free(after);
  hark_unref(g);
}
END_TEST

/* Two types share a name: the same number of objects, of different sizes,
 * is still a change the table shows. */
static const hark_type morph_small = {"morph", 16, NULL, NULL};
static const hark_type morph_big = {"morph", 48, NULL, NULL};

START_TEST(print_diff_shows_a_row_whose_count_is_unchanged_but_bytes_are_not) {
  void *small = make(&morph_small);
  hark_snapshot *before = hark_snapshot_take();
  ck_assert_ptr_nonnull(before);
  hark_unref(small);
  void *big = make(&morph_big);
  hark_snapshot *after = hark_snapshot_take();
  ck_assert_ptr_nonnull(after);
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, before, after);
  const char *text = slurp(f);
  long objects, bytes;
  ck_assert_msg(find_row(text, "morph", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, 0);
  ck_assert_int_eq(bytes, 32);
  ck_assert_msg(find_row(text, "(total)", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, 0);
  ck_assert_int_eq(bytes, 32);
  fclose(f);
  hark_snapshot_free(before);
  hark_snapshot_free(after);
  hark_unref(big);
}
END_TEST

START_TEST(print_diff_of_equal_snapshots_shows_only_a_zero_total) {
  void *w = make(&widget_type);
  hark_snapshot *a = hark_snapshot_take();
  hark_snapshot *b = hark_snapshot_take();
  ck_assert_ptr_nonnull(a);
  ck_assert_ptr_nonnull(b);
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, a, b);
  const char *text = slurp(f);
  long objects, bytes;
  ck_assert_msg(!find_row(text, "widget", &objects, &bytes), "%s", text);
  ck_assert_msg(find_row(text, "(total)", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, 0);
  ck_assert_int_eq(bytes, 0);
  fclose(f);
  hark_snapshot_free(a);
  hark_snapshot_free(b);
  hark_unref(w);
}
END_TEST

START_TEST(print_diff_with_null_snapshots_counts_them_as_empty) {
  void *w = make(&widget_type);
  hark_snapshot *s = hark_snapshot_take();
  ck_assert_ptr_nonnull(s);
  long objects, bytes;

  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, NULL, s);
  const char *text = slurp(f);
  ck_assert_msg(find_row(text, "widget", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, (long)hark_snapshot_count(s, "widget"));
  fclose(f);

  f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, s, NULL);
  text = slurp(f);
  ck_assert_msg(find_row(text, "widget", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, -(long)hark_snapshot_count(s, "widget"));
  fclose(f);

  /* both NULL: the live objects now (what the exit report prints) */
  f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, NULL, NULL);
  text = slurp(f);
  ck_assert_msg(find_row(text, "widget", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, (long)hark_live_count("widget"));
  ck_assert_int_eq(bytes,
                   (long)hark_live_count("widget") * (long)sizeof(widget));
  fclose(f);

  hark_snapshot_free(s);
  hark_unref(w);
}
END_TEST

START_TEST(print_diff_to_null_out_writes_to_stdout) {
  void *w = make(&widget_type);
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  fflush(stdout);
  int saved = dup(1);
  ck_assert_int_ge(saved, 0);
  ck_assert_int_ge(dup2(fileno(f), 1), 0);
  hark_snapshot_print_diff(NULL, NULL, NULL);
  fflush(stdout);
  ck_assert_int_ge(dup2(saved, 1), 0);
  close(saved);
  /* the fd and f share an offset: read from the start */
  const char *text = slurp(f);
  long objects, bytes;
  ck_assert_msg(find_row(text, "widget", &objects, &bytes), "%s", text);
  ck_assert_int_eq(objects, 1);
  fclose(f);
  hark_unref(w);
}
END_TEST

/* ---- HARK_DEBUG=leaks -------------------------------------------------------
 * HARK_DEBUG is read once per process, so each case runs this very
 * program again (exec, not just fork: the parent may have read it
 * already) with the child mode in argv and stderr captured. */

static const hark_type leaky_type = {"leaky_widget", 24, NULL, NULL};

static int leak_child(const char *mode) {
  if (strcmp(mode, "two-leaks") == 0) {
    void *a = hark_new(&leaky_type);
    void *b = hark_new(&leaky_type);
    void *c = hark_new(&gadget_type);
    hark_unref(c);
    return a != NULL && b != NULL ? 0 : 1;
  }
  if (strcmp(mode, "one-leak") == 0)
    return hark_new(&leaky_type) != NULL ? 0 : 1;
  if (strcmp(mode, "no-leaks") == 0) {
    void *a = hark_new(&leaky_type);
    hark_unref(a);
    return a != NULL ? 0 : 1;
  }
  return 2;
}

static char self_path[PATH_MAX];

/* Runs this program as a child in mode with HARK_DEBUG=debug (NULL:
 * unset); returns its stderr and checks that it exited with status 0. */
static char *run_leak_child(const char *mode, const char *debug) {
  static char out[8192];
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    if (debug != NULL)
      setenv("HARK_DEBUG", debug, 1);
    else
      unsetenv("HARK_DEBUG");
    /* the child leaks on purpose: LeakSanitizer must not turn that into a
     * failure or add its own report */
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    execl(self_path, self_path, "--leak-child", mode, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fds[0], out + n, sizeof(out) - 1 - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    n += (size_t)r;
  }
  out[n] = '\0';
  close(fds[0]);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "child status %#x, stderr:\n%s", status, out);
  return out;
}

START_TEST(debug_leaks_prints_live_objects_at_exit) {
  const char *err = run_leak_child("two-leaks", "leaks");
  ck_assert_msg(strstr(err, "2 live objects at exit") != NULL, "%s", err);
  long objects, bytes;
  ck_assert_msg(find_row(err, "leaky_widget", &objects, &bytes), "%s", err);
  ck_assert_int_eq(objects, 2);
  ck_assert_int_eq(bytes, 48);
  ck_assert_msg(!find_row(err, "gadget", &objects, &bytes), "%s", err);
}
END_TEST

START_TEST(debug_leaks_counts_a_single_live_object_in_the_singular) {
  const char *err = run_leak_child("one-leak", "leaks");
  ck_assert_msg(strstr(err, "1 live object at exit") != NULL, "%s", err);
  long objects, bytes;
  ck_assert_msg(find_row(err, "leaky_widget", &objects, &bytes), "%s", err);
  ck_assert_int_eq(objects, 1);
  ck_assert_int_eq(bytes, 24);
}
END_TEST

START_TEST(debug_leaks_says_no_live_objects_when_none_are_left) {
  const char *err = run_leak_child("no-leaks", "leaks");
  ck_assert_msg(strstr(err, "no live objects") != NULL, "%s", err);
  ck_assert_msg(strstr(err, "leaky_widget") == NULL, "%s", err);
}
END_TEST

START_TEST(debug_leaks_is_read_from_a_comma_separated_list) {
  const char *err = run_leak_child("two-leaks", "receivers,leaks");
  ck_assert_msg(strstr(err, "leaky_widget") != NULL, "%s", err);
  err = run_leak_child("two-leaks", "all");
  ck_assert_msg(strstr(err, "leaky_widget") != NULL, "%s", err);
}
END_TEST

START_TEST(no_leak_report_without_debug_leaks) {
  const char *err = run_leak_child("two-leaks", NULL);
  ck_assert_msg(strstr(err, "leaky_widget") == NULL, "%s", err);
  err = run_leak_child("two-leaks", "receivers,leakss,xleaks");
  ck_assert_msg(strstr(err, "leaky_widget") == NULL, "%s", err);
}
END_TEST

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--leak-child") == 0)
    return leak_child(argv[2]);
  ssize_t n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
  if (n <= 0)
    return EXIT_FAILURE;
  self_path[n] = '\0';

  Suite *s = suite_create("tracker");
  TCase *tc = tcase_create("live");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, live_count_counts_objects_per_type);
  tcase_add_test(tc, live_count_of_null_counts_every_type);
  tcase_add_test(tc, live_count_of_an_unknown_type_is_zero);
  tcase_add_test(tc, live_count_counts_an_object_until_its_finalize);
  tcase_add_test(tc, types_sharing_a_name_are_counted_together);
  tcase_add_test(tc, type_without_a_name_is_counted_as_unnamed);
  tcase_add_test(tc, live_count_does_not_read_a_type_freed_after_its_objects);
  tcase_add_test(
      tc, print_diff_shows_a_row_whose_count_is_unchanged_but_bytes_are_not);
  /* last: fills the table, later new types share the overflow row */
  tcase_add_test(tc, types_beyond_the_table_are_counted_as_other_types);
  suite_add_tcase(s, tc);

  tc = tcase_create("snapshot");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, snapshot_counts_live_objects_per_type);
  tcase_add_test(tc, snapshot_functions_accept_null);
  tcase_add_test(tc, print_diff_shows_header_rows_and_total);
  tcase_add_test(tc, print_diff_shows_freed_objects_as_negative);
  tcase_add_test(tc, print_diff_of_equal_snapshots_shows_only_a_zero_total);
  tcase_add_test(tc, print_diff_with_null_snapshots_counts_them_as_empty);
  tcase_add_test(tc, print_diff_to_null_out_writes_to_stdout);
  suite_add_tcase(s, tc);

  tc = tcase_create("debug");
  tcase_add_test(tc, debug_leaks_prints_live_objects_at_exit);
  tcase_add_test(tc, debug_leaks_says_no_live_objects_when_none_are_left);
  tcase_add_test(tc, debug_leaks_counts_a_single_live_object_in_the_singular);
  tcase_add_test(tc, debug_leaks_is_read_from_a_comma_separated_list);
  tcase_add_test(tc, no_leak_report_without_debug_leaks);
  suite_add_tcase(s, tc);
  return test_run(s);
}
