/* Model-based random testing: random operation sequences run against hark
 * and against the reference model of tests/model.h, which must agree after
 * every step (receivers called and their order, every return value,
 * has_listeners, weak references, the weak-key map, which objects are
 * alive and finalized, live counts, and nothing left at the end).
 *
 *   ./tests/test-model                        CI: 200 seeds x 200 operations
 *   HARK_MODEL_SEEDS=100000 ./tests/test-model             the longer run
 *   HARK_SEED=<n> ./tests/test-model       replay seed n: shrink and print it
 *   HARK_MODEL_HEX=<hex> ./tests/test-model  run these bytes with a trace
 *
 * Also: HARK_MODEL_OPS (operations per seed, 200), HARK_MODEL_SEED0 (first
 * seed, 1), HARK_MODEL_TRACE=1 (trace a HARK_SEED run even if it passes),
 * HARK_TEST_SCALE (divides the number of seeds, for valgrind).
 *
 * A seed's operations are MODEL_OPSIZE bytes each from a splitmix64 stream,
 * so any sequence is valid input: a failing one is shrunk by removing
 * chunks of operations, then zeroing bytes, while it still fails (each
 * candidate runs in a forked child, so crashes shrink too), and printed
 * as a trace and as hex for HARK_MODEL_HEX or a fuzzer corpus. */
#include "model.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long env_long(const char *name, long def) {
  const char *e = getenv(name);
  return e != NULL && *e ? strtol(e, NULL, 0) : def;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void seed_bytes(uint64_t seed, uint8_t *b, size_t n) {
  uint64_t s = seed;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t x = splitmix(&s);
    for (size_t j = 0; j < 8 && i + j < n; j++)
      b[i + j] = (uint8_t)(x >> (8 * j));
  }
}

/* ---- the seed in progress, printed if the process dies ----------------- */

static volatile long current_seed = -1;
static volatile int in_child;

static void say_seed(void) {
  if (in_child || current_seed < 0)
    return;
  char buf[128];
  int n = snprintf(buf, sizeof buf,
                   "\nmodel: died during seed %ld: rerun with HARK_SEED=%ld "
                   "to shrink it\n",
                   current_seed, current_seed);
  if (write(2, buf, (size_t)n) < 0)
    return;
}

static void on_crash(int sig) {
  say_seed();
  signal(sig, SIG_DFL);
  raise(sig);
}

void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static void catch_crashes(void) {
  int sigs[] = {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    signal(sigs[i], on_crash);
  if (__sanitizer_set_death_callback != NULL)
    __sanitizer_set_death_callback(say_seed);
}

/* ---- running in a child, shrinking --------------------------------------- */

static long forks;

/* Runs b in a forked child; true if it disagreed with the model or died. */
static bool fails_forked(const uint8_t *b, size_t n, bool trace) {
  fflush(stdout);
  fflush(stderr);
  forks++;
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    in_child = 1;
    model_trace = trace ? stderr : NULL;
    model_report r;
    int failed = model_run(b, n, &r);
    if (trace)
      fprintf(stderr, failed ? "  FAILED: %s\n" : "  (passed)\n", r.msg);
    fflush(stderr);
    _exit(failed ? 1 : 0); /* no leak report for a run that failed */
  }
  int st;
  while (waitpid(pid, &st, 0) < 0)
    ;
  return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Delta debugging over whole operations, then over single bytes. */
static size_t shrink(uint8_t *b, size_t n) {
  size_t ops = n / MODEL_OPSIZE;
  uint8_t *t = malloc(n);
  ck_assert_ptr_nonnull(t);
  for (size_t chunk = ops / 2; chunk >= 1; chunk /= 2) {
    bool progress;
    do {
      progress = false;
      for (size_t i = 0; i + chunk <= ops && forks < 20000;) {
        size_t keep = ops - chunk;
        memcpy(t, b, i * MODEL_OPSIZE);
        memcpy(t + i * MODEL_OPSIZE, b + (i + chunk) * MODEL_OPSIZE,
               (ops - i - chunk) * MODEL_OPSIZE);
        if (keep > 0 && fails_forked(t, keep * MODEL_OPSIZE, false)) {
          memcpy(b, t, keep * MODEL_OPSIZE);
          ops = keep;
          progress = true;
        } else {
          i += chunk;
        }
      }
    } while (progress && chunk == 1);
  }
  for (size_t i = 0; i < ops * MODEL_OPSIZE && forks < 20000; i++) {
    if (i % MODEL_OPSIZE == 0 || b[i] == 0)
      continue; /* the operation itself stays */
    uint8_t old = b[i];
    b[i] = 0;
    if (!fails_forked(b, ops * MODEL_OPSIZE, false))
      b[i] = old;
  }
  free(t);
  return ops * MODEL_OPSIZE;
}

static void print_hex(const uint8_t *b, size_t n) {
  fprintf(stderr, "model: HARK_MODEL_HEX=");
  for (size_t i = 0; i < n; i++)
    fprintf(stderr, "%02x", b[i]);
  fprintf(stderr, "\n");
}

/* Shrinks a failing sequence and prints it. */
static void report_failure(const char *what, uint8_t *b, size_t n) {
  fprintf(stderr, "model: %s failed\n", what);
  size_t m = shrink(b, n);
  fprintf(stderr, "model: shrunk from %zu to %zu operations (%ld runs):\n",
          n / MODEL_OPSIZE, m / MODEL_OPSIZE, forks);
  fails_forked(b, m, true);
  print_hex(b, m);
}

/* ---- the tests -------------------------------------------------------------
 */

START_TEST(random_sequences_agree_with_the_model) {
  model_init();
  catch_crashes();
  long ops = env_long("HARK_MODEL_OPS", 200);
  long seed0 = env_long("HARK_MODEL_SEED0", 1);
  long seeds = env_long("HARK_MODEL_SEEDS", test_scaled(200));
  long only = env_long("HARK_SEED", -1);
  ck_assert_int_gt(ops, 0);
  size_t n = (size_t)ops * MODEL_OPSIZE;
  uint8_t *b = malloc(n);
  ck_assert_ptr_nonnull(b);

  if (only >= 0) { /* replay one seed, in a child: crashes shrink too */
    seed_bytes((uint64_t)only, b, n);
    char what[64];
    snprintf(what, sizeof what, "seed %ld", only);
    if (fails_forked(b, n, false)) {
      report_failure(what, b, n);
      ck_abort_msg("model: %s disagrees with hark (shrunk trace above)", what);
    }
    if (env_long("HARK_MODEL_TRACE", 0))
      fails_forked(b, n, true);
    printf("model: %s passes\n", what);
    free(b);
    return;
  }

  long calls = 0, steps = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long k = 0; k < seeds; k++) {
    long seed = seed0 + k;
    current_seed = seed;
    seed_bytes((uint64_t)seed, b, n);
    model_report r;
    if (model_run(b, n, &r)) {
      fprintf(stderr, "model: seed %ld: %s\n", seed, r.msg);
      char what[64];
      snprintf(what, sizeof what, "seed %ld", seed);
      report_failure(what, b, n);
      ck_abort_msg("model: seed %ld disagrees with hark: %s (HARK_SEED=%ld "
                   "replays it)",
                   seed, r.msg, seed);
    }
    calls += r.calls;
    steps += (long)r.steps;
  }
  current_seed = -1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("model: %ld seeds x %ld operations, %ld receiver calls, %.2f s\n",
         seeds, ops, calls,
         (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  ck_assert_int_eq(steps, seeds * ops);
  ck_assert_int_gt(calls, 0);
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), 0);
  free(b);
}
END_TEST

static int hexval(int c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* HARK_MODEL_HEX: a given byte sequence, e.g. from a shrunk failure. */
START_TEST(given_bytes_agree_with_the_model) {
  const char *hex = getenv("HARK_MODEL_HEX");
  if (hex == NULL || *hex == '\0')
    return;
  model_init();
  size_t n = strlen(hex) / 2;
  uint8_t *b = malloc(n + 1);
  ck_assert_ptr_nonnull(b);
  for (size_t i = 0; i < n; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    ck_assert_msg(hi >= 0 && lo >= 0, "HARK_MODEL_HEX: not hex");
    b[i] = (uint8_t)(hi << 4 | lo);
  }
  bool failed = fails_forked(b, n, true);
  free(b);
  ck_assert_msg(!failed, "model: HARK_MODEL_HEX disagrees with hark");
}
END_TEST

/* Arbitrary bytes in operation-sized pieces with every byte value: the
 * interpreter accepts any input (what a fuzzer will feed it). */
START_TEST(short_and_odd_inputs_are_valid) {
  model_init();
  uint8_t b[3 * MODEL_OPSIZE + 5];
  model_report r;
  ck_assert_int_eq(model_run(b, 0, &r), 0);
  for (int v = 0; v < 256; v++) {
    memset(b, v, sizeof b);
    ck_assert_msg(model_run(b, sizeof b, &r) == 0, "bytes %02x: %s", v, r.msg);
    ck_assert_msg(model_run(b, (size_t)v % sizeof b, &r) == 0, "%d bytes: %s",
                  v % (int)sizeof b, r.msg);
  }
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("model");
  TCase *tc = tcase_create("model");
  tcase_set_timeout(tc, 1200);
  tcase_add_test(tc, short_and_odd_inputs_are_valid);
  tcase_add_test(tc, random_sequences_agree_with_the_model);
  tcase_add_test(tc, given_bytes_agree_with_the_model);
  suite_add_tcase(s, tc);
  return test_run(s);
}
