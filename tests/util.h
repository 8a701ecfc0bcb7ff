/* Shared by the Check suites: a counting allocator that can fail the Nth
 * allocation, an allocation-failure loop, and the suite runner. */
#ifndef HARK_TEST_UTIL_H
#define HARK_TEST_UTIL_H

#include <check.h>
#include <hark.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Allocations made so far, blocks still live, and which allocation (1-based)
 * fails; 0 fails none. */
static _Atomic long test_allocs;
static _Atomic long test_live_blocks;
static _Atomic long test_fail_at;

static int test_should_fail(void) {
  long n = atomic_fetch_add(&test_allocs, 1) + 1;
  long f = atomic_load(&test_fail_at);
  return f != 0 && n == f;
}

static void *test_malloc(size_t n) {
  if (test_should_fail())
    return NULL;
  void *p = malloc(n);
  if (p != NULL)
    atomic_fetch_add(&test_live_blocks, 1);
  return p;
}

static void *test_calloc(size_t c, size_t n) {
  if (test_should_fail())
    return NULL;
  void *p = calloc(c, n);
  if (p != NULL)
    atomic_fetch_add(&test_live_blocks, 1);
  return p;
}

static void *test_realloc(void *old, size_t n) {
  if (test_should_fail())
    return NULL;
  void *p = realloc(old, n);
  if (p != NULL && old == NULL)
    atomic_fetch_add(&test_live_blocks, 1);
  return p;
}

static void test_free(void *p) {
  if (p != NULL)
    atomic_fetch_sub(&test_live_blocks, 1);
  free(p);
}

/* Installs the counting allocator; call first thing in a test (each Check
 * test runs in its own process, so nothing has been allocated yet). */
static inline void test_alloc_install(void) {
  ck_assert_int_eq(
      hark_replace_allocator(test_malloc, test_realloc, test_calloc, test_free),
      0);
}

static inline void test_fail_nth(long n) {
  atomic_store(&test_allocs, 0);
  atomic_store(&test_fail_at, n);
}

static inline long test_blocks(void) { return atomic_load(&test_live_blocks); }

/* Runs scenario with the 1st, 2nd, 3rd... allocation failing until a run
 * sees no failure. scenario returns 1 when it completed without meeting
 * a failure, 0 when it met one (and checked it was reported); after each
 * run every block must have been released. Returns how many failure
 * points were exercised. */
static inline int test_oom_loop(int (*scenario)(void *), void *arg) {
  for (long n = 1; n < 100000; n++) {
    long before = test_blocks();
    test_fail_nth(n);
    int done = scenario(arg);
    test_fail_nth(0);
    ck_assert_msg(test_blocks() == before,
                  "allocation %ld failing leaked %ld block(s)", n,
                  test_blocks() - before);
    if (done)
      return (int)n - 1;
  }
  ck_abort_msg("allocation-failure loop did not finish");
  return -1;
}

/* Runs one suite; the exit status is what Automake's driver reads. */
static inline int test_run(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* A small object type for tests, with a finalize that counts. */
typedef struct test_obj {
  hark_object base;
  int id;
  int calls;
} test_obj;

static _Atomic int test_finalized;

static void test_obj_finalize(void *obj) {
  atomic_fetch_add(&test_finalized, 1);
  test_free(obj); /* tests that use this type install the test allocator */
}

static const hark_type test_obj_type = {"test_obj", sizeof(test_obj),
                                        test_obj_finalize, NULL};

/* True when the allocation chosen by test_fail_nth() has been attempted
 * (and so failed): lets an allocation-failure scenario tell "met the
 * failure" from "completed", even when the library absorbed the failure
 * without reporting it. */
static inline int test_failure_met(void) {
  long f = atomic_load(&test_fail_at);
  return f != 0 && atomic_load(&test_allocs) >= f;
}

/* n scaled by HARK_TEST_SCALE, for slow runs (valgrind): a value above 1
 * divides (HARK_TEST_SCALE=20), one between 0 and 1 multiplies
 * (HARK_TEST_SCALE=0.05); the result is at least 1. */
static inline long test_scaled(long n) {
  const char *e = getenv("HARK_TEST_SCALE");
  double v = e != NULL ? strtod(e, NULL) : 1.0;
  double r = v > 1.0 ? (double)n / v : v > 0.0 ? (double)n * v : (double)n;
  return r < 1.0 ? 1 : (long)r;
}

/* Caller-owned memory whose finalize keeps it: after the last unref it can
 * still be named, as a stale pointer would be, but is no longer a hark
 * object. finalized counts the finalize calls. */
typedef struct kept {
  hark_object base;
  int finalized;
} kept;

static void kept_finalize(void *obj) { ((kept *)obj)->finalized++; }

static const hark_type kept_type = {"kept", sizeof(kept), kept_finalize, NULL};

#endif
