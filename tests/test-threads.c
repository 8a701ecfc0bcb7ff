/* Bounded multi-threaded stresses of objects, weak references and death
 * notifications. Iteration counts are fixed (no timing), small enough to
 * finish in seconds under ThreadSanitizer or valgrind. Worker threads never
 * call ck_assert (Check cannot report from them): they count what they saw
 * and the main thread asserts. */
#include "util.h"

#include <pthread.h>
#include <sched.h>

#define THREADS 4

static long start_blocks;

static void setup(void) {
  test_alloc_install();
  atomic_store(&test_finalized, 0);
  start_blocks = test_blocks();
}

static void teardown(void) { ck_assert_int_eq(test_blocks(), start_blocks); }

/* ---- rounds: every worker runs work(tid, round) between two barriers ----- */

static pthread_barrier_t round_start, round_end;
static _Atomic int stop_workers;
static void (*round_work)(int tid, int round);
static _Atomic int current_round;

static void *worker(void *arg) {
  int tid = (int)(intptr_t)arg;
  for (;;) {
    pthread_barrier_wait(&round_start);
    if (atomic_load(&stop_workers))
      return NULL;
    round_work(tid, atomic_load(&current_round));
    pthread_barrier_wait(&round_end);
  }
}

static void run_rounds(int rounds, void (*prepare)(int round),
                       void (*work)(int tid, int round),
                       void (*check)(int round)) {
  pthread_t t[THREADS];
  round_work = work;
  atomic_store(&stop_workers, 0);
  ck_assert_int_eq(pthread_barrier_init(&round_start, NULL, THREADS + 1), 0);
  ck_assert_int_eq(pthread_barrier_init(&round_end, NULL, THREADS + 1), 0);
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i),
                     0);
  for (int r = 0; r < rounds; r++) {
    atomic_store(&current_round, r);
    prepare(r);
    pthread_barrier_wait(&round_start);
    pthread_barrier_wait(&round_end);
    check(r);
  }
  atomic_store(&stop_workers, 1);
  pthread_barrier_wait(&round_start);
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  pthread_barrier_destroy(&round_start);
  pthread_barrier_destroy(&round_end);
}

/* Spins a little, differently per thread and round, to vary who wins. */
static void jitter(int tid, int round) {
  int n = (tid * 7 + round * 13) % 11;
  for (int i = 0; i < n; i++)
    sched_yield();
}

/* ---- a type that knows when it died -------------------------------------- */

typedef struct racer {
  hark_object base;
  _Atomic int dead;  /* set by a death notification */
  _Atomic int round; /* which round made it */
  hark_notify death;
} racer;

static _Atomic long racer_finalized;

static void racer_finalize(void *obj) {
  atomic_fetch_add(&racer_finalized, 1);
  test_free(obj);
}

static const hark_type racer_type = {"racer", sizeof(racer), racer_finalize, NULL};

static void racer_died(hark_notify *n, void *obj) {
  racer *r = obj;
  atomic_store(&r->dead, 1);
}

static racer *new_racer(int round) {
  racer *r = hark_new(&racer_type);
  ck_assert_ptr_nonnull(r);
  atomic_store(&r->round, round);
  ck_assert_int_eq(hark_notify_add(&r->death, r, racer_died), 0);
  return r;
}

static _Atomic long bad;   /* anything a worker saw that must not happen */
static _Atomic long seen;  /* successful upgrades */
static _Atomic long nulls; /* upgrades that found the object dead */

static void reset_counters(void) {
  atomic_store(&racer_finalized, 0);
  atomic_store(&bad, 0);
  atomic_store(&seen, 0);
  atomic_store(&nulls, 0);
}

/* ---- weak_get racing the last unref -------------------------------------- */

#define WEAK_ROUNDS 1500
#define GETS_PER_ROUND 6

static hark_weak shared_weak;
static racer *victim; /* thread 0's reference, dropped during the round */

static void weak_race_prepare(int round) {
  victim = new_racer(round);
  ck_assert_int_eq(hark_weak_set(&shared_weak, victim), 0);
}

static void weak_race_work(int tid, int round) {
  if (tid == 0) {
    jitter(tid, round);
    hark_unref(victim);
    return;
  }
  for (int i = 0; i < GETS_PER_ROUND; i++) {
    racer *g = hark_weak_get(&shared_weak);
    if (g == NULL) {
      atomic_fetch_add(&nulls, 1);
      continue;
    }
    /* a strong reference from weak_get is to a live object: its death
     * cannot have begun, and it stays alive while held */
    if (atomic_load(&g->dead) || atomic_load(&g->round) != round)
      atomic_fetch_add(&bad, 1);
    hark_ref(g);
    hark_unref(g);
    if (atomic_load(&g->dead))
      atomic_fetch_add(&bad, 1);
    atomic_fetch_add(&seen, 1);
    hark_unref(g);
    if (i % 2 == 0)
      sched_yield();
  }
}

static void weak_race_check(int round) {
  ck_assert_int_eq(atomic_load(&racer_finalized), round + 1);
  ck_assert_ptr_null(hark_weak_get(&shared_weak));
  hark_weak_clear(&shared_weak);
}

START_TEST(weak_get_racing_the_last_unref_returns_a_live_object_or_null) {
  reset_counters();
  run_rounds(WEAK_ROUNDS, weak_race_prepare, weak_race_work, weak_race_check);
  ck_assert_int_eq(atomic_load(&bad), 0);
  ck_assert_int_eq(atomic_load(&racer_finalized), WEAK_ROUNDS);
  ck_assert_int_eq(atomic_load(&seen) + atomic_load(&nulls),
                   (long)WEAK_ROUNDS * (THREADS - 1) * GETS_PER_ROUND);
  ck_assert_uint_eq(hark_live_count("racer"), 0);
}
END_TEST

/* ---- concurrent ref/unref ------------------------------------------------ */

#define REF_ITERATIONS 20000

static racer *shared_obj;

static void *ref_unref_thread(void *arg) {
  hark_weak w = HARK_WEAK_INIT;
  if (hark_weak_set(&w, shared_obj) != 0)
    atomic_fetch_add(&bad, 1);
  for (int i = 0; i < REF_ITERATIONS; i++) {
    hark_ref(shared_obj);
    hark_ref(shared_obj);
    hark_unref(shared_obj);
    racer *g = hark_weak_get(&w);
    if (g != shared_obj)
      atomic_fetch_add(&bad, 1);
    hark_unref(g);
    hark_unref(shared_obj);
  }
  hark_weak_clear(&w);
  return NULL;
}

START_TEST(concurrent_ref_and_unref_keep_the_count_exact) {
  reset_counters();
  shared_obj = new_racer(0);
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, ref_unref_thread, NULL), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  ck_assert_int_eq(atomic_load(&bad), 0);
  /* every thread's references are gone; the creator's one remains */
  ck_assert_int_eq(atomic_load(&racer_finalized), 0);
  ck_assert_int_eq(atomic_load(&shared_obj->dead), 0);
  hark_unref(shared_obj);
  ck_assert_int_eq(atomic_load(&racer_finalized), 1);
}
END_TEST

/* ---- the last unref from any of several threads -------------------------- */

#define LAST_ROUNDS 1500

static racer *last_obj;
static hark_weak last_weak[THREADS];

static void last_prepare(int round) {
  last_obj = new_racer(round);
  for (int i = 1; i < THREADS; i++)
    hark_ref(last_obj); /* one reference per worker */
}

static void last_work(int tid, int round) {
  racer *o = last_obj;
  if (hark_weak_set(&last_weak[tid], o) != 0)
    atomic_fetch_add(&bad, 1);
  jitter(tid, round);
  hark_unref(o);
  /* the object may be dying on another thread right now */
  racer *g = hark_weak_get(&last_weak[tid]);
  if (g != NULL) {
    if (atomic_load(&g->dead))
      atomic_fetch_add(&bad, 1);
    hark_unref(g);
  }
  hark_weak_clear(&last_weak[tid]);
}

static void last_check(int round) {
  ck_assert_int_eq(atomic_load(&racer_finalized), round + 1);
}

START_TEST(last_unref_on_any_thread_finalizes_exactly_once) {
  reset_counters();
  run_rounds(LAST_ROUNDS, last_prepare, last_work, last_check);
  ck_assert_int_eq(atomic_load(&bad), 0);
  ck_assert_int_eq(atomic_load(&racer_finalized), LAST_ROUNDS);
}
END_TEST

/* ---- notify add/remove racing death -------------------------------------- */

#define NOTIFY_ROUNDS 1500

static racer *notify_obj;
static hark_notify nodes[THREADS];
static _Atomic int node_runs[THREADS];
static int node_removed[THREADS];

static void node_died(hark_notify *n, void *obj) {
  int tid = (int)(n - nodes);
  if (obj != notify_obj)
    atomic_fetch_add(&bad, 1);
  atomic_fetch_add(&node_runs[tid], 1);
}

static void notify_prepare(int round) {
  notify_obj = new_racer(round);
  for (int i = 1; i < THREADS; i++)
    hark_ref(notify_obj);
  for (int i = 0; i < THREADS; i++) {
    atomic_store(&node_runs[i], 0);
    node_removed[i] = -1;
  }
}

static void notify_work(int tid, int round) {
  racer *o = notify_obj;
  /* while the thread holds its reference, add must succeed and an
   * immediate remove must find the node */
  if (hark_notify_add(&nodes[tid], o, node_died) != 0)
    atomic_fetch_add(&bad, 1);
  if ((tid + round) % 3 == 0) {
    if (hark_notify_remove(&nodes[tid]) != 1)
      atomic_fetch_add(&bad, 1);
    if (hark_notify_add(&nodes[tid], o, node_died) != 0)
      atomic_fetch_add(&bad, 1);
  }
  jitter(tid, round);
  hark_unref(o);
  /* now the removal races the death on whichever thread drops the last
   * reference: exactly one of "removed" and "ran" must happen */
  if ((tid + round) % 2 == 0)
    node_removed[tid] = hark_notify_remove(&nodes[tid]);
  else
    node_removed[tid] = 0;
}

static void notify_check(int round) {
  ck_assert_int_eq(atomic_load(&racer_finalized), round + 1);
  for (int i = 0; i < THREADS; i++) {
    ck_assert_int_ge(node_removed[i], 0);
    ck_assert_msg(node_removed[i] + atomic_load(&node_runs[i]) == 1,
                  "round %d node %d: removed %d, ran %d", round, i,
                  node_removed[i], atomic_load(&node_runs[i]));
    /* done either way: a further remove finds nothing */
    ck_assert_int_eq(hark_notify_remove(&nodes[i]), 0);
  }
}

START_TEST(notify_remove_racing_death_either_removes_or_runs_once) {
  reset_counters();
  memset(nodes, 0, sizeof(nodes));
  run_rounds(NOTIFY_ROUNDS, notify_prepare, notify_work, notify_check);
  ck_assert_int_eq(atomic_load(&bad), 0);
  ck_assert_int_eq(atomic_load(&racer_finalized), NOTIFY_ROUNDS);
}
END_TEST

/* ---- many objects, many threads: nothing lost, nothing twice ------------- */

#define CHURN_OBJECTS 64
#define CHURN_ROUNDS 300

static racer *churn[CHURN_OBJECTS];
static hark_weak churn_weak[CHURN_OBJECTS];

static void churn_prepare(int round) {
  for (int i = 0; i < CHURN_OBJECTS; i++) {
    churn[i] = new_racer(round);
    ck_assert_int_eq(hark_weak_set(&churn_weak[i], churn[i]), 0);
  }
}

/* Each object's only reference is dropped by one thread while the other
 * threads upgrade its weak reference and pass the result around. */
static void churn_work(int tid, int round) {
  for (int k = 0; k < CHURN_OBJECTS; k++) {
    int i = (k * 5 + tid * 17 + round) % CHURN_OBJECTS;
    if (i % THREADS == tid) {
      hark_unref(churn[i]);
      continue;
    }
    racer *g = hark_weak_get(&churn_weak[i]);
    if (g == NULL) {
      atomic_fetch_add(&nulls, 1);
      continue;
    }
    if (atomic_load(&g->dead))
      atomic_fetch_add(&bad, 1);
    hark_weak w = HARK_WEAK_INIT;
    if (hark_weak_set(&w, g) != 0)
      atomic_fetch_add(&bad, 1);
    hark_unref(g);
    racer *again = hark_weak_get(&w);
    if (again != NULL && atomic_load(&again->dead))
      atomic_fetch_add(&bad, 1);
    hark_unref(again);
    hark_weak_clear(&w);
    atomic_fetch_add(&seen, 1);
  }
}

static void churn_check(int round) {
  ck_assert_int_eq(atomic_load(&racer_finalized),
                   (long)(round + 1) * CHURN_OBJECTS);
  for (int i = 0; i < CHURN_OBJECTS; i++) {
    ck_assert_ptr_null(hark_weak_get(&churn_weak[i]));
    hark_weak_clear(&churn_weak[i]);
  }
}

START_TEST(weak_references_of_many_dying_objects_free_every_control_block) {
  reset_counters();
  run_rounds(CHURN_ROUNDS, churn_prepare, churn_work, churn_check);
  ck_assert_int_eq(atomic_load(&bad), 0);
  ck_assert_int_eq(atomic_load(&racer_finalized),
                   (long)CHURN_ROUNDS * CHURN_OBJECTS);
  ck_assert_uint_eq(hark_live_count("racer"), 0);
  /* the teardown checks that every block went */
}
END_TEST

int main(void) {
  Suite *s = suite_create("threads");
  TCase *tc = tcase_create("threads");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc,
                 weak_get_racing_the_last_unref_returns_a_live_object_or_null);
  tcase_add_test(tc, concurrent_ref_and_unref_keep_the_count_exact);
  tcase_add_test(tc, last_unref_on_any_thread_finalizes_exactly_once);
  tcase_add_test(tc, notify_remove_racing_death_either_removes_or_runs_once);
  tcase_add_test(
      tc, weak_references_of_many_dying_objects_free_every_control_block);
  suite_add_tcase(s, tc);
  return test_run(s);
}
