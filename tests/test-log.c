/* The log hook: everything the library has to say goes to the function
 * set with hark_set_log, and nothing to stderr (which each test checks is
 * left empty), or to stderr as a line "hark: ..." by default. */
#include "util.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

static const char *self_path;

/* ---- capturing --------------------------------------------------------- */

static char captured[16384];
static size_t ncaptured;
static int nmsgs[3];
static pthread_mutex_t cap_lock = PTHREAD_MUTEX_INITIALIZER;

static void capture(void *data, hark_log_level level, const char *msg) {
  pthread_mutex_lock(&cap_lock);
  if ((unsigned)level < 3)
    nmsgs[level]++;
  int n = snprintf(captured + ncaptured, sizeof captured - ncaptured,
                   "%s%d:%s\n", data != NULL ? (const char *)data : "",
                   (int)level, msg);
  if (n > 0 && ncaptured + (size_t)n < sizeof captured)
    ncaptured += (size_t)n;
  pthread_mutex_unlock(&cap_lock);
}

/* stderr goes to a file for the test; stderr_text() reads it back */
static char err_path[64];

static void setup(void) {
  test_alloc_install();
  ncaptured = 0;
  captured[0] = '\0';
  memset(nmsgs, 0, sizeof nmsgs);
  snprintf(err_path, sizeof err_path, "/tmp/hark-log-%d", (int)getpid());
  int fd = open(err_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  ck_assert_int_ge(fd, 0);
  fflush(stderr);
  ck_assert_int_ge(dup2(fd, 2), 0);
  close(fd);
  hark_set_log(capture, NULL);
}

static size_t stderr_size(void) {
  fflush(stderr);
  struct stat st;
  ck_assert_int_eq(stat(err_path, &st), 0);
  return (size_t)st.st_size;
}

static void teardown(void) {
  ck_assert_msg(stderr_size() == 0, "the library wrote to stderr");
  unlink(err_path);
  ck_assert_int_eq(test_blocks(), 0);
}

static int nothing(void *self, void *sender, void *args) { return 0; }
static int other(void *self, void *sender, void *args) { return 0; }

/* ---- each kind of message ------------------------------------------------ */

START_TEST(the_leak_guard_warning_goes_to_the_log_not_stderr) {
  hark_signal *sig = hark_signal_new("crowded");
  hark_signal_set_max_receivers(sig, 2);
  test_obj *o[3];
  for (int i = 0; i < 3; i++) {
    o[i] = hark_new(&test_obj_type);
    ck_assert_int_eq(hark_connect(sig, nothing, o[i], NULL, 0), 0);
  }
  ck_assert_int_eq(nmsgs[HARK_LOG_WARN], 1);
  ck_assert_msg(strstr(captured, "signal 'crowded' has 3 receivers") != NULL,
                "%s", captured);
  for (int i = 0; i < 3; i++)
    hark_unref(o[i]);
  hark_unref(sig);
}
END_TEST

static uv_loop_t uvl;
static hark_loop *hl;
static int close_result;

static void *close_elsewhere(void *arg) {
  close_result = hark_loop_close(arg);
  return NULL;
}

START_TEST(loop_close_off_the_loop_thread_fails_and_says_so_in_the_log) {
  ck_assert_int_eq(uv_loop_init(&uvl), 0);
  hl = hark_loop_new(&uvl);
  ck_assert_ptr_nonnull(hl);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, close_elsewhere, hl), 0);
  pthread_join(t, NULL);
  ck_assert_int_eq(close_result, HARK_EINVAL);
  ck_assert_int_eq(nmsgs[HARK_LOG_WARN], 1);
  ck_assert_msg(strstr(captured, "off the loop thread") != NULL, "%s",
                captured);
  ck_assert_int_eq(hark_loop_close(NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_loop_close(hl), 0); /* it was still open */
  ck_assert_int_eq(hark_loop_close(hl), 0); /* idempotent */
  ck_assert_int_eq(nmsgs[HARK_LOG_WARN], 1);
  hark_unref(hl);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
}
END_TEST

static hark_token *kept_token;
static int done_failures = -1;

static int takes_and_keeps(void *self, void *sender, void *args) {
  kept_token = hark_token_take();
  return 0;
}

static void on_done(void *data, int failures) { done_failures = failures; }

START_TEST(unfinished_asynchronous_receivers_at_close_go_to_the_log) {
  ck_assert_int_eq(uv_loop_init(&uvl), 0);
  hl = hark_loop_new(&uvl);
  hark_signal *sig = hark_signal_new("slow-work");
  ck_assert_int_eq(hark_connect(sig, takes_and_keeps, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, NULL), 0);
  ck_assert_ptr_nonnull(kept_token);
  ck_assert_int_eq(hark_loop_close(hl), 0);
  ck_assert_int_eq(nmsgs[HARK_LOG_WARN], 1);
  ck_assert_msg(strstr(captured, "\"slow-work\" never completed") != NULL,
                "%s", captured);
  hark_token_done(kept_token, 0); /* orphaned: freed, nothing else */
  hark_unref(sig);
  hark_unref(hl);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(done_failures, 1);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
}
END_TEST

/* A log function is the user's code: it may call hark (not hark_set_log),
 * even something that logs again. */
static void calls_hark(void *data, hark_log_level level, const char *msg) {
  capture(data, level, msg);
  hark_signal *s = hark_signal_new("from-the-log");
  hark_unref(s);
  if (strstr(msg, "first") != NULL) {
    hark_signal *t = hark_signal_new("second");
    hark_signal_set_max_receivers(t, 1);
    hark_connect(t, nothing, NULL, NULL, 0);
    hark_connect(t, other, NULL, NULL, 0); /* logs, from inside the log */
    hark_unref(t);
  }
}

START_TEST(a_log_function_may_call_hark_and_make_it_log_again) {
  hark_set_log(calls_hark, NULL);
  hark_signal *sig = hark_signal_new("first");
  hark_signal_set_max_receivers(sig, 1);
  test_obj *a = hark_new(&test_obj_type), *b = hark_new(&test_obj_type);
  ck_assert_int_eq(hark_connect(sig, nothing, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(sig, nothing, b, NULL, 0), 0);
  ck_assert_int_eq(nmsgs[HARK_LOG_WARN], 2); /* 'first', then 'second' */
  ck_assert_msg(strstr(captured, "'second'") != NULL, "%s", captured);
  hark_unref(a);
  hark_unref(b);
  hark_unref(sig);
  hark_set_log(capture, NULL);
}
END_TEST

/* The reports of HARK_DEBUG, and the error before an abort, come from a
 * child process: its stderr and its log lines are piped back. */
static void child_main(const char *mode) {
  if (strcmp(mode, "dead-ref") == 0) {
    kept *k = calloc(1, sizeof *k);
    hark_object_init(k, &kept_type);
    hark_unref(k); /* finalized; its memory is kept */
    hark_ref(k);   /* aborts, after saying why */
    _exit(3);
  }
  if (strcmp(mode, "debug") == 0) {
    hark_signal *sig = hark_signal_new("watched");
    test_obj *o = hark_new(&test_obj_type);
    hark_connect(sig, nothing, o, NULL, 0);
    hark_unref(o); /* HARK_DEBUG=receivers: it died while connected */
    (void)hark_new(&test_obj_type); /* HARK_DEBUG=leaks: left at exit */
    hark_unref(sig);
    exit(0); /* the exit report runs from atexit */
  }
  if (strcmp(mode, "default") == 0) {
    hark_set_log(NULL, NULL); /* back to stderr */
    hark_signal *sig = hark_signal_new("loud");
    hark_signal_set_max_receivers(sig, 1);
    hark_connect(sig, nothing, NULL, NULL, 0);
    hark_connect(sig, other, NULL, NULL, 0);
    test_obj *o = hark_new(&test_obj_type);
    hark_connect(sig, nothing, o, NULL, 0);
    hark_unref(o);
    hark_unref(sig);
    exit(0);
  }
  _exit(2);
}

/* A capture that writes each message to stdout at once (the child may
 * abort before any buffer is flushed). */
static void capture_to_stdout(void *data, hark_log_level level,
                              const char *msg) {
  (void)data;
  char line[600];
  int n = snprintf(line, sizeof line, "%d:%s\n", (int)level, msg);
  if (n > 0 && write(1, line, (size_t)n) < 0)
    _exit(4);
}

typedef struct child_out {
  char out[8192], err[8192];
  int status;
} child_out;

static void read_all(int fd, char *buf, size_t cap) {
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, cap - 1 - n);
    if (r <= 0)
      break;
    n += (size_t)r;
  }
  buf[n] = '\0';
}

static void run_child(const char *mode, const char *debug, child_out *co) {
  int out[2], err[2];
  ck_assert_int_eq(pipe(out), 0);
  ck_assert_int_eq(pipe(err), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]);
    close(err[0]);
    if (debug != NULL)
      setenv("HARK_DEBUG", debug, 1);
    else
      unsetenv("HARK_DEBUG");
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1); /* leaks on purpose */
    execl(self_path, self_path, "--child", mode, (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  read_all(out[0], co->out, sizeof co->out);
  read_all(err[0], co->err, sizeof co->err);
  close(out[0]);
  close(err[0]);
  ck_assert_int_eq(waitpid(pid, &co->status, 0), pid);
}

START_TEST(the_dead_object_error_goes_to_the_log_before_the_abort) {
  child_out co;
  run_child("dead-ref", NULL, &co);
  ck_assert_msg(WIFSIGNALED(co.status) && WTERMSIG(co.status) == SIGABRT,
                "status %#x", co.status);
  ck_assert_msg(strstr(co.out, "0:hark_ref on ") != NULL &&
                    strstr(co.out, "not a live hark object") != NULL,
                "%s", co.out);
  ck_assert_msg(co.err[0] == '\0', "stderr: %s", co.err);
}
END_TEST

START_TEST(the_debug_reports_go_to_the_log_not_stderr) {
  child_out co;
  run_child("debug", "receivers,leaks", &co);
  ck_assert_msg(WIFEXITED(co.status) && WEXITSTATUS(co.status) == 0,
                "status %#x", co.status);
  ck_assert_msg(strstr(co.out, "2:receiver ") != NULL &&
                    strstr(co.out, "died while connected to signal "
                                   "'watched'") != NULL,
                "%s", co.out);
  ck_assert_msg(strstr(co.out, "2:1 live object at exit") != NULL, "%s",
                co.out);
  ck_assert_msg(strstr(co.out, "test_obj") != NULL, "%s", co.out);
  ck_assert_msg(co.err[0] == '\0', "stderr: %s", co.err);
}
END_TEST

START_TEST(without_a_hook_messages_are_lines_on_stderr) {
  child_out co;
  run_child("default", "receivers", &co);
  ck_assert_msg(WIFEXITED(co.status) && WEXITSTATUS(co.status) == 0,
                "status %#x", co.status);
  ck_assert_msg(strstr(co.err, "hark: warning: signal 'loud' has 2 "
                               "receivers") != NULL,
                "%s", co.err);
  ck_assert_msg(strstr(co.err, "hark: receiver ") != NULL, "%s", co.err);
  ck_assert_msg(co.out[0] == '\0', "stdout: %s", co.out);
}
END_TEST

int main(int argc, char **argv) {
  self_path = argv[0];
  if (argc == 3 && strcmp(argv[1], "--child") == 0) {
    hark_set_log(capture_to_stdout, NULL);
    child_main(argv[2]);
  }
  Suite *s = suite_create("log");
  TCase *tc = tcase_create("hook");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, the_leak_guard_warning_goes_to_the_log_not_stderr);
  tcase_add_test(tc,
                 loop_close_off_the_loop_thread_fails_and_says_so_in_the_log);
  tcase_add_test(tc, unfinished_asynchronous_receivers_at_close_go_to_the_log);
  tcase_add_test(tc, a_log_function_may_call_hark_and_make_it_log_again);
  tcase_add_test(tc, the_dead_object_error_goes_to_the_log_before_the_abort);
  tcase_add_test(tc, the_debug_reports_go_to_the_log_not_stderr);
  tcase_add_test(tc, without_a_hook_messages_are_lines_on_stderr);
  suite_add_tcase(s, tc);
  return test_run(s);
}
