/* Allocation failure in the foundation: each scenario runs with its 1st,
 * 2nd, 3rd... allocation failing until none fails. Every failure must be
 * reported (HARK_ENOMEM or NULL), change nothing, leak nothing, and leave
 * the library usable. */
#include "util.h"

static long start_blocks;
static size_t start_live;

static void setup(void) {
  test_alloc_install();
  atomic_store(&test_finalized, 0);
  start_blocks = test_blocks();
  start_live = hark_live_count(NULL);
}

/* After every scenario: no block and no object left, and the library
 * still works. */
static void teardown(void) {
  ck_assert_int_eq(test_blocks(), start_blocks);
  ck_assert_uint_eq(hark_live_count(NULL), start_live);
  test_obj *o = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(o);
  ck_assert_uint_eq(hark_live_count("test_obj"), 1);
  hark_unref(o);
  ck_assert_int_eq(test_blocks(), start_blocks);
}

/* True when the allocation chosen to fail has been attempted. */
static int failure_met(void) {
  long f = atomic_load(&test_fail_at);
  return f != 0 && atomic_load(&test_allocs) >= f;
}

/* ---- hark_new ------------------------------------------------------------ */

static int new_scenario(void *arg) {
  size_t live = hark_live_count("test_obj");
  test_obj *o = hark_new(&test_obj_type);
  if (o == NULL) {
    ck_assert_msg(failure_met(), "hark_new failed with memory to spare");
    ck_assert_uint_eq(hark_live_count("test_obj"), live);
    return 0;
  }
  ck_assert_uint_eq(hark_live_count("test_obj"), live + 1);
  ck_assert_int_eq(o->id, 0);
  hark_unref(o);
  /* a failure met must have been reported, not absorbed */
  ck_assert(!failure_met());
  return 1;
}

START_TEST(new_reports_every_allocation_failure_as_null) {
  ck_assert_int_gt(test_oom_loop(new_scenario, NULL), 0);
  ck_assert_int_eq(atomic_load(&test_finalized), 1);
}
END_TEST

/* ---- hark_object_init ---------------------------------------------------- */

static int init_scenario(void *arg) {
  kept k, pattern;
  memset(&k, 0xa5, sizeof(k));
  memset(&pattern, 0xa5, sizeof(pattern));
  int err = hark_object_init(&k, &kept_type);
  if (err != 0) {
    ck_assert_int_eq(err, HARK_ENOMEM);
    ck_assert(failure_met());
    /* a failed call changes nothing */
    ck_assert_int_eq(memcmp(&k, &pattern, sizeof(k)), 0);
    ck_assert_uint_eq(hark_live_count("kept"), 0);
    return 0;
  }
  k.finalized = 0;
  ck_assert_uint_eq(hark_live_count("kept"), 1);
  hark_unref(&k);
  ck_assert_int_eq(k.finalized, 1);
  /* a failure met must have been reported, not absorbed */
  ck_assert(!failure_met());
  return 1;
}

START_TEST(object_init_reports_every_allocation_failure_as_enomem) {
  ck_assert_int_gt(test_oom_loop(init_scenario, NULL), 0);
}
END_TEST

/* ---- hark_snapshot_take -------------------------------------------------- */

static int snapshot_scenario(void *arg) {
  test_obj *o = arg;
  hark_snapshot *s = hark_snapshot_take();
  if (s == NULL) {
    ck_assert(failure_met());
    return 0;
  }
  ck_assert_uint_eq(hark_snapshot_count(s, "test_obj"), 1);
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, NULL, s);
  fclose(f);
  hark_snapshot_free(s);
  ck_assert_int_eq(o->id, 9);
  /* a failure met must have been reported, not absorbed */
  ck_assert(!failure_met());
  return 1;
}

START_TEST(snapshot_take_reports_every_allocation_failure_as_null) {
  test_obj *o = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(o);
  o->id = 9;
  ck_assert_int_gt(test_oom_loop(snapshot_scenario, o), 0);
  hark_unref(o);
}
END_TEST

/* ---- a sequence: new, weak_set, notify, unref ---------------------------- */

static _Atomic int seq_notified;

static void seq_notify(hark_notify *n, void *obj) {
  atomic_fetch_add(&seq_notified, 1);
}

/* Makes three objects, links them with weak references and notifications,
 * and drops them; on a failure, undoes what it did so far. */
static int sequence_scenario(void *arg) {
  enum { N = 3 };
  test_obj *o[N] = {NULL, NULL, NULL};
  hark_weak w[N];
  hark_notify n[N];
  memset(w, 0, sizeof(w));
  memset(n, 0, sizeof(n));
  atomic_store(&seq_notified, 0);
  size_t live = hark_live_count("test_obj");
  int made = 0;
  for (; made < N; made++) {
    o[made] = hark_new(&test_obj_type);
    if (o[made] == NULL)
      break;
    o[made]->id = made + 1;
    ck_assert_int_eq(hark_weak_set(&w[made], o[made]), 0);
    ck_assert_int_eq(hark_notify_add(&n[made], o[made], seq_notify), 0);
  }
  if (made < N) {
    ck_assert(failure_met());
    ck_assert_uint_eq(hark_live_count("test_obj"), live + (size_t)made);
    /* the objects made so far are whole and usable */
    for (int i = 0; i < made; i++) {
      test_obj *g = hark_weak_get(&w[i]);
      ck_assert_ptr_eq(g, o[i]);
      ck_assert_int_eq(g->id, i + 1);
      hark_unref(g);
    }
    ck_assert_int_eq(hark_notify_remove(&n[0]), made > 0 ? 1 : 0);
  }
  for (int i = 0; i < made; i++)
    hark_unref(o[i]);
  for (int i = 0; i < N; i++) {
    ck_assert_ptr_null(hark_weak_get(&w[i]));
    hark_weak_clear(&w[i]);
  }
  ck_assert_uint_eq(hark_live_count("test_obj"), live);
  if (made < N) {
    ck_assert_int_eq(atomic_load(&seq_notified), made > 0 ? made - 1 : 0);
    return 0;
  }
  ck_assert_int_eq(atomic_load(&seq_notified), N);
  /* a failure met must have been reported, not absorbed */
  ck_assert(!failure_met());
  return 1;
}

START_TEST(sequence_of_new_weak_notify_unref_survives_every_failure) {
  ck_assert_int_gt(test_oom_loop(sequence_scenario, NULL), 2);
}
END_TEST

/* ---- what never allocates ------------------------------------------------ */

START_TEST(weak_references_and_notifications_never_allocate) {
  test_obj *o = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(o);
  hark_weak w = HARK_WEAK_INIT;
  hark_notify n = {0};
  /* make the very next allocation fail: none may be attempted */
  test_fail_nth(1);
  ck_assert_int_eq(hark_weak_set(&w, o), 0);
  ck_assert_int_eq(hark_notify_add(&n, o, seq_notify), 0);
  test_obj *g = hark_weak_get(&w);
  ck_assert_ptr_eq(g, o);
  hark_unref(g);
  ck_assert_int_eq(hark_notify_remove(&n), 1);
  ck_assert_int_eq(hark_notify_add(&n, o, seq_notify), 0);
  atomic_store(&seq_notified, 0);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&seq_notified), 1);
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_weak_clear(&w);
  ck_assert_int_eq(atomic_load(&test_allocs), 0);
  test_fail_nth(0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("oom");
  TCase *tc = tcase_create("oom");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, new_reports_every_allocation_failure_as_null);
  tcase_add_test(tc, object_init_reports_every_allocation_failure_as_enomem);
  tcase_add_test(tc, snapshot_take_reports_every_allocation_failure_as_null);
  tcase_add_test(tc, sequence_of_new_weak_notify_unref_survives_every_failure);
  tcase_add_test(tc, weak_references_and_notifications_never_allocate);
  suite_add_tcase(s, tc);
  return test_run(s);
}
