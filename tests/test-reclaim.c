/* The thread-safety contract of the core (include/hark.h, "Any thread"):
 * reclamation that never starves, finalize on the dropping thread, a
 * receiver's object held for its call, the idle sweep against signals
 * dying elsewhere, hark_weak shared by threads, sends that deliver without
 * memory, counted blocking that never wraps, and a thread-safe weak-map
 * read. Each scenario is made deterministic with barriers where it can
 * be; stresses are bounded in count (HARK_TEST_SCALE divides them).
 *
 * Each test runs in its own process (Check's fork mode): tests named
 * ..._with_fences set HARK_DEBUG=fences first, the path taken where the
 * kernel has no membarrier. */
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

static long start_blocks;

static void setup(void) {
  test_alloc_install();
  atomic_store(&test_finalized, 0);
  start_blocks = test_blocks();
}

static void teardown(void) {
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), start_blocks);
}

static void use_fences(void) { setenv("HARK_DEBUG", "fences", 1); }

/* ---- objects that know where they died ---------------------------------- */

typedef struct tobj {
  hark_object base;
  pthread_t dropper; /* the thread expected to finalize it */
  _Atomic int finalized;
  _Atomic int in_receiver;
  _Atomic int bad; /* finalized on another thread, or during a call */
} tobj;

static _Atomic long tobj_finalized, tobj_misplaced;
static pthread_mutex_t *app_lock; /* a lock finalize takes, if set */

static void tobj_finalize(void *obj) {
  tobj *o = obj;
  if (!pthread_equal(o->dropper, pthread_self()) ||
      atomic_load(&o->in_receiver) != 0)
    atomic_fetch_add(&tobj_misplaced, 1);
  if (app_lock != NULL) {
    /* an error-checking mutex: EDEADLK if this thread already holds it,
     * i.e. if finalize ran inside another thread's locked section */
    int r = pthread_mutex_lock(app_lock);
    if (r != 0)
      atomic_fetch_add(&tobj_misplaced, 1);
    else
      pthread_mutex_unlock(app_lock);
  }
  atomic_fetch_add(&tobj_finalized, 1);
  test_free(obj);
}

static const hark_type tobj_type = {"tobj", sizeof(tobj), tobj_finalize, NULL};

static tobj *tobj_new(void) {
  tobj *o = hark_new(&tobj_type);
  ck_assert_ptr_nonnull(o);
  o->dropper = pthread_self();
  return o;
}

static int count_calls(void *self, void *sender, void *args) {
  atomic_fetch_add((_Atomic long *)args, 1);
  return 0;
}

static int nothing(void *self, void *sender, void *args) { return 0; }

/* ---- senders that never stop ------------------------------------------- */

typedef struct spinner {
  hark_signal *sig;
  tobj *self[4];
  _Atomic long calls;
  _Atomic int stop;
  pthread_mutex_t *hold; /* held across each send, if set */
  long sends;
} spinner;

static void spinner_init(spinner *s, const char *name) {
  s->sig = hark_signal_new(name);
  ck_assert_ptr_nonnull(s->sig);
  for (int i = 0; i < 4; i++) {
    s->self[i] = tobj_new();
    ck_assert_int_eq(hark_connect(s->sig, count_calls, s->self[i], NULL,
                                  i == 3 ? HARK_STRONG : HARK_WEAK),
                     0);
  }
  atomic_store(&s->stop, 0);
  atomic_store(&s->calls, 0);
}

static void spinner_free(spinner *s) {
  for (int i = 0; i < 4; i++) {
    s->self[i]->dropper = pthread_self();
    hark_unref(s->self[i]);
  }
  hark_unref(s->sig);
}

static void *spin(void *arg) {
  spinner *s = arg;
  while (!atomic_load(&s->stop)) {
    if (s->hold != NULL)
      pthread_mutex_lock(s->hold);
    for (int i = 0; i < 64; i++)
      if (hark_send(s->sig, NULL, (void *)&s->calls) != 4)
        atomic_fetch_add(&tobj_misplaced, 1);
    s->sends += 64;
    if (s->hold != NULL) {
      pthread_mutex_unlock(s->hold);
      sched_yield(); /* mutexes are not fair: let a finalize in */
    }
  }
  return NULL;
}

/* Creates and drops n objects, some connected weakly to a signal nobody
 * sends on, some keys of a weak map: each must be finalized by the time
 * its hark_unref returns. */
static long churn_objects(long n, hark_signal *quiet, hark_weakmap *m) {
  long connected = 0, late = 0;
  for (long i = 0; i < n; i++) {
    tobj *o = tobj_new();
    if (i % 3 == 1) {
      ck_assert_int_eq(hark_connect(quiet, nothing, o, NULL, 0), 0);
      connected++;
    }
    if (i % 3 == 2)
      ck_assert_int_eq(hark_weakmap_set(m, o, test_malloc(8)), 0);
    long before = atomic_load(&tobj_finalized);
    hark_unref(o);
    late += atomic_load(&tobj_finalized) != before + 1;
  }
  ck_assert_int_eq(late, 0); /* each finalized before its unref returned */
  return connected;
}

/* Scenario 1: two threads sending continuously on their own signals, each
 * send overlapping the other's, delay no finalization. */
static void two_senders_do_not_starve_finalization(void) {
  spinner a = {0}, b = {0};
  spinner_init(&a, "a");
  spinner_init(&b, "b");
  hark_signal *quiet = hark_signal_new("quiet");
  hark_weakmap *m = hark_weakmap_new(test_free);
  pthread_t ta, tb;
  ck_assert_int_eq(pthread_create(&ta, NULL, spin, &a), 0);
  ck_assert_int_eq(pthread_create(&tb, NULL, spin, &b), 0);
  while (atomic_load(&a.calls) == 0 || atomic_load(&b.calls) == 0)
    sched_yield();
  long n = test_scaled(100000);
  long connected = churn_objects(n, quiet, m);
  ck_assert_int_eq(atomic_load(&tobj_finalized), n);
  atomic_store(&a.stop, 1);
  atomic_store(&b.stop, 1);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  ck_assert_int_eq(atomic_load(&tobj_misplaced), 0);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  /* the dead receivers go by sweep (or by a new object at their address
   * connecting the same function): none is left behind */
  ck_assert_int_gt(connected, 0);
  hark_signal_sweep(quiet);
  ck_assert_uint_eq(hark_signal_receivers(quiet), 0);
  hark_weakmap_free(m);
  hark_unref(quiet);
  spinner_free(&a);
  spinner_free(&b);
}

START_TEST(objects_die_at_once_while_two_threads_send_on_their_own_signals) {
  two_senders_do_not_starve_finalization();
}
END_TEST

START_TEST(objects_die_at_once_while_two_threads_send_with_fences) {
  use_fences();
  two_senders_do_not_starve_finalization();
}
END_TEST

/* Scenario 1, the other schedule: a "started" signal whose receiver runs
 * for as long as the test does (a server's main loop). */
static _Atomic int forever_in, forever_go;

static int run_forever(void *self, void *sender, void *args) {
  if (args == NULL)
    return 0; /* the main thread's sends pass by */
  atomic_store(&forever_in, 1);
  while (!atomic_load(&forever_go))
    sched_yield();
  return 0;
}

static void *send_once(void *arg) {
  return (void *)(intptr_t)hark_send(arg, NULL, (void *)1);
}

/* Starts a thread whose send on sig stays in its receiver until
 * forever_go is set; returns once that thread is inside. */
static pthread_t start_send_forever(hark_signal *sig) {
  atomic_store(&forever_in, 0);
  atomic_store(&forever_go, 0);
  ck_assert_int_eq(hark_connect(sig, run_forever, NULL, NULL, 0), 0);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, send_once, sig), 0);
  while (!atomic_load(&forever_in))
    sched_yield();
  return t;
}

/* Retired memory waits in batches of at most 64 lists, each keeping its
 * connection: what stays pending is bounded, whatever the churn. */
#define PENDING_BOUND 150

/* Connects, sends (which builds a list) and disconnects n times; returns
 * the blocks then live. */
static long conn_churn(hark_signal *sig, long n, int expect) {
  tobj *o = tobj_new();
  for (long i = 0; i < n; i++) {
    ck_assert_int_eq(hark_connect(sig, nothing, o, NULL, 0), 0);
    ck_assert_int_eq(hark_send(sig, NULL, NULL), expect);
    ck_assert_int_eq(hark_disconnect(sig, nothing, o, NULL), 1);
  }
  hark_unref(o);
  return test_blocks();
}

START_TEST(objects_and_memory_go_while_a_receiver_runs_forever) {
  atomic_store(&forever_in, 0);
  atomic_store(&forever_go, 0);
  hark_signal *started = hark_signal_new("started");
  ck_assert_int_eq(hark_connect(started, run_forever, NULL, NULL, 0), 0);
  tobj *server = tobj_new();
  ck_assert_int_eq(hark_connect(started, nothing, server, NULL, 0), 0);
  hark_signal *quiet = hark_signal_new("quiet");
  hark_signal *busy = hark_signal_new("busy");
  hark_weakmap *m = hark_weakmap_new(test_free);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, send_once, started), 0);
  while (!atomic_load(&forever_in))
    sched_yield();

  long n = test_scaled(20000);
  churn_objects(n, quiet, m);
  ck_assert_int_eq(atomic_load(&tobj_finalized), n);
  /* Lists retired by connect/disconnect elsewhere are freed, not kept
   * until that receiver returns: memory stays flat however long. */
  long after_some = conn_churn(busy, 200, 1);
  long after_many = conn_churn(busy, test_scaled(20000), 1);
  ck_assert_int_le(after_many, after_some + PENDING_BOUND);

  atomic_store(&forever_go, 1);
  void *ret;
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 2);
  ck_assert_int_eq(atomic_load(&tobj_misplaced), 0);
  hark_weakmap_free(m);
  hark_unref(quiet);
  hark_unref(busy);
  hark_unref(started);
  hark_unref(server);
}
END_TEST

/* The list a long send walks stays; the ones retired beside it go, and it
 * goes too once the send lets go of it. */
START_TEST(a_long_send_delays_only_the_list_it_walks) {
  hark_signal *sig = hark_signal_new("sig");
  pthread_t t = start_send_forever(sig);
  /* every connect and disconnect retires the list the other thread may
   * be walking; only the one it does walk may stay */
  long after_some = conn_churn(sig, 200, 2);
  long after_many = conn_churn(sig, test_scaled(20000), 2);
  ck_assert_int_le(after_many, after_some + PENDING_BOUND);
  atomic_store(&forever_go, 1);
  pthread_join(t, NULL);
  hark_unref(sig); /* the last retired list goes with the signal */
}
END_TEST

/* Scenario 2: finalize runs on the thread that drops the last reference,
 * never inside another thread's send and its locks. The sender holds an
 * error-checking application lock across its sends, and every finalize
 * takes that lock: run on the sending thread, it would report EDEADLK. */
START_TEST(finalize_runs_on_the_dropping_thread_outside_other_threads_locks) {
  pthread_mutex_t lk;
  pthread_mutexattr_t at;
  pthread_mutexattr_init(&at);
  pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ERRORCHECK);
  pthread_mutex_init(&lk, &at);
  spinner a = {0};
  spinner_init(&a, "a");
  a.hold = &lk;
  app_lock = &lk;
  hark_signal *quiet = hark_signal_new("quiet");
  hark_weakmap *m = hark_weakmap_new(test_free);
  pthread_t ta;
  ck_assert_int_eq(pthread_create(&ta, NULL, spin, &a), 0);
  while (atomic_load(&a.calls) == 0)
    sched_yield();
  long n = test_scaled(20000);
  churn_objects(n, quiet, m);
  atomic_store(&a.stop, 1);
  pthread_join(ta, NULL);
  app_lock = NULL;
  ck_assert_int_eq(atomic_load(&tobj_finalized), n);
  ck_assert_int_eq(atomic_load(&tobj_misplaced), 0);
  hark_weakmap_free(m);
  hark_unref(quiet);
  spinner_free(&a);
  pthread_mutex_destroy(&lk);
  pthread_mutexattr_destroy(&at);
}
END_TEST

/* ---- Scenario 3: a receiver's object is held for its call -------------- */

typedef struct held_case {
  hark_signal *sig;
  tobj *self;
  pthread_barrier_t in, go;
  _Atomic int ref_ok, value_freed_inside;
  _Atomic long *value_frees;
} held_case;

static held_case *hc;
static _Atomic long hc_value_frees;

static void hc_value_free(void *v) {
  atomic_fetch_add(&hc_value_frees, 1);
  test_free(v);
}

static int held_receiver(void *self, void *sender, void *args) {
  tobj *o = self;
  if (args == NULL)
    return 0; /* the warm-up send */
  atomic_store(&o->in_receiver, 1);
  pthread_barrier_wait(&hc->in);
  pthread_barrier_wait(&hc->go); /* main dropped the last reference */
  /* the send's reference: hark_ref works, nothing has died */
  atomic_store(&hc->ref_ok, hark_ref(self) == self);
  hark_unref(self);
  atomic_store(&hc->value_freed_inside, (int)atomic_load(&hc_value_frees));
  o->dropper = pthread_self(); /* it dies here, after we return */
  atomic_store(&o->in_receiver, 0);
  return 0;
}

static void *send_held(void *arg) {
  return (void *)(intptr_t)hark_send(arg, NULL, (void *)1);
}

/* The main thread drops self's last reference (or disconnects a strong
 * receiver) while another thread is inside self's receiver. warm: send
 * once before, so that the call takes the fast path (a validated list)
 * rather than the checked one. */
static void object_held_for_its_call(unsigned flags, bool warm) {
  held_case c = {0};
  hc = &c;
  atomic_store(&hc_value_frees, 0);
  c.sig = hark_signal_new("held");
  c.self = tobj_new();
  pthread_barrier_init(&c.in, NULL, 2);
  pthread_barrier_init(&c.go, NULL, 2);
  hark_weakmap *m = hark_weakmap_new(hc_value_free);
  ck_assert_int_eq(hark_weakmap_set(m, c.self, test_malloc(8)), 0);
  hark_weak w = HARK_WEAK_INIT;
  ck_assert_int_eq(hark_weak_set(&w, c.self), 0);
  ck_assert_int_eq(hark_connect(c.sig, held_receiver, c.self, NULL, flags), 0);
  if (warm)
    ck_assert_int_eq(hark_send(c.sig, NULL, NULL), 1);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, send_held, c.sig), 0);
  pthread_barrier_wait(&c.in);
  if (flags & HARK_STRONG) {
    hark_unref(c.self); /* the connection holds the last one now */
    ck_assert_int_eq(hark_disconnect(c.sig, held_receiver, c.self, NULL), 1);
  } else {
    hark_unref(c.self);
  }
  /* the call's reference keeps it: not finalized, its entry there, and a
   * weak reference still upgrades */
  ck_assert_int_eq(atomic_load(&tobj_finalized), 0);
  ck_assert_uint_eq(hark_weakmap_size(m), 1);
  tobj *again = hark_weak_get(&w);
  ck_assert_ptr_eq(again, c.self);
  hark_unref(again);
  pthread_barrier_wait(&c.go);
  void *ret;
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 1);
  ck_assert_int_eq(atomic_load(&c.ref_ok), 1);
  ck_assert_int_eq(atomic_load(&c.value_freed_inside), 0);
  /* it died after the call, on the sending thread (tobj_finalize checks
   * the thread and that no call was running) */
  ck_assert_int_eq(atomic_load(&tobj_finalized), 1);
  ck_assert_int_eq(atomic_load(&tobj_misplaced), 0);
  ck_assert_int_eq(atomic_load(&hc_value_frees), 1);
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_weak_clear(&w);
  hark_weakmap_free(m);
  hark_unref(c.sig);
  pthread_barrier_destroy(&c.in);
  pthread_barrier_destroy(&c.go);
}

START_TEST(a_receiver_keeps_its_object_when_another_thread_drops_it) {
  object_held_for_its_call(HARK_WEAK, true);
}
END_TEST

START_TEST(a_receiver_keeps_its_object_on_its_first_send_too) {
  object_held_for_its_call(HARK_WEAK, false);
}
END_TEST

START_TEST(a_strong_receiver_keeps_its_object_when_disconnected_elsewhere) {
  object_held_for_its_call(HARK_STRONG, true);
}
END_TEST

START_TEST(a_receiver_keeps_its_object_with_fences) {
  use_fences();
  object_held_for_its_call(HARK_WEAK, true);
}
END_TEST

/* Many receiver objects dropped by one thread while another keeps
 * calling them: each dies once, never during its call, on the thread that
 * dropped it or, when it was being called, on the sending thread. */
typedef struct race_obj {
  hark_object base;
  _Atomic int running;
} race_obj;

static _Atomic long race_finalized, race_bad;

static void race_finalize(void *obj) {
  race_obj *o = obj;
  if (atomic_load(&o->running) != 0)
    atomic_fetch_add(&race_bad, 1);
  atomic_fetch_add(&race_finalized, 1);
  test_free(obj);
}

static const hark_type race_type = {"race_obj", sizeof(race_obj),
                                    race_finalize, NULL};

static int race_receiver(void *self, void *sender, void *args) {
  race_obj *o = self;
  atomic_fetch_add(&o->running, 1);
  if (hark_ref(o) != o)
    atomic_fetch_add(&race_bad, 1);
  for (volatile int i = 0; i < 50; i++) {
  }
  hark_unref(o);
  atomic_fetch_sub(&o->running, 1);
  return 0;
}

static void *race_sender(void *arg) {
  spinner *s = arg;
  while (!atomic_load(&s->stop))
    hark_send(s->sig, NULL, NULL);
  return NULL;
}

static void receivers_dropped_while_called(void) {
  spinner s = {0};
  s.sig = hark_signal_new("race");
  hark_signal_set_max_receivers(s.sig, 0); /* dead ones wait for a sweep */
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, race_sender, &s), 0);
  long n = test_scaled(20000);
  race_obj *live[8] = {0};
  bool strong[8] = {0};
  for (long i = 0; i < n + 8; i++) {
    int k = (int)(i % 8);
    if (live[k] != NULL) {
      /* a strong one goes by disconnect and unref, a weak one by the
       * unref: either may be the last while the other thread calls it */
      if (strong[k])
        ck_assert_int_eq(hark_disconnect(s.sig, race_receiver, live[k], NULL),
                         1);
      hark_unref(live[k]);
      live[k] = NULL;
    }
    if (i >= n)
      continue;
    race_obj *o = hark_new(&race_type);
    ck_assert_ptr_nonnull(o);
    strong[k] = i % 4 == 0;
    ck_assert_int_eq(hark_connect(s.sig, race_receiver, o, NULL,
                                  strong[k] ? HARK_STRONG : 0),
                     0);
    live[k] = o;
  }
  atomic_store(&s.stop, 1);
  pthread_join(t, NULL);
  hark_unref(s.sig);
  ck_assert_int_eq(atomic_load(&race_finalized), n);
  ck_assert_int_eq(atomic_load(&race_bad), 0);
}

START_TEST(receivers_dropped_while_another_thread_calls_them_die_once) {
  receivers_dropped_while_called();
}
END_TEST

START_TEST(receivers_dropped_while_called_die_once_with_fences) {
  use_fences();
  receivers_dropped_while_called();
}
END_TEST

/* ---- Scenario 4: the idle sweep against signals dying elsewhere -------- */

static uv_loop_t uvl;
static _Atomic int makers_done;

static void *signal_maker(void *arg) {
  long n = *(long *)arg;
  for (long i = 0; i < n; i++) {
    hark_signal *s = hark_signal_new("ephemeral");
    tobj *o = tobj_new();
    hark_connect(s, nothing, o, NULL, 0);
    hark_unref(o); /* a dead receiver: the loop has something to sweep */
    hark_send(s, NULL, NULL);
    hark_unref(s);
  }
  atomic_fetch_add(&makers_done, 1);
  return NULL;
}

static hark_loop *sweep_hl;
static hark_signal *sweep_sig;
static tobj *sweep_victim;

/* Each iteration a weak receiver dies, so each check phase sweeps. */
static void on_idle(uv_idle_t *h) {
  if (sweep_victim != NULL) {
    sweep_victim->dropper = pthread_self();
    hark_unref(sweep_victim);
  }
  sweep_victim = tobj_new();
  ck_assert_int_eq(hark_connect(sweep_sig, nothing, sweep_victim, NULL, 0), 0);
  if (atomic_load(&makers_done) == 2) {
    uv_idle_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    hark_loop_close(sweep_hl);
  }
}

START_TEST(idle_sweep_survives_signals_dying_on_other_threads) {
  ck_assert_int_eq(uv_loop_init(&uvl), 0);
  sweep_hl = hark_loop_new(&uvl);
  ck_assert_ptr_nonnull(sweep_hl);
  sweep_sig = hark_signal_new("victims");
  atomic_store(&makers_done, 0);
  uv_idle_t idle;
  uv_idle_init(&uvl, &idle);
  uv_idle_start(&idle, on_idle);
  long n = test_scaled(20000);
  pthread_t t1, t2;
  ck_assert_int_eq(pthread_create(&t1, NULL, signal_maker, &n), 0);
  ck_assert_int_eq(pthread_create(&t2, NULL, signal_maker, &n), 0);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);
  hark_loop_stats st;
  ck_assert_int_eq(hark_loop_get_stats(sweep_hl, &st), 0);
  ck_assert_uint_gt(st.swept, 0);
  sweep_victim->dropper = pthread_self();
  hark_unref(sweep_victim);
  hark_unref(sweep_sig);
  hark_unref(sweep_hl);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
  ck_assert_int_eq(atomic_load(&tobj_misplaced), 0);
}
END_TEST

/* ---- Scenario 5: one hark_weak, three threads --------------------------- */

typedef struct wobj {
  hark_object base;
  unsigned magic;
} wobj;

#define WMAGIC 0x77ea4u

static void wobj_finalize(void *obj) {
  ((wobj *)obj)->magic = 0;
  test_free(obj);
}

static const hark_type wobj_type = {"wobj", sizeof(wobj), wobj_finalize, NULL};

static hark_weak shared_weak;
static wobj *keeper;
static _Atomic int weak_stop;
static _Atomic long weak_bad, weak_hits, weak_gets;

static void *weak_getter(void *arg) {
  while (!atomic_load(&weak_stop)) {
    wobj *o = hark_weak_get(&shared_weak);
    atomic_fetch_add(&weak_gets, 1);
    if (o != NULL) {
      if (o->magic != WMAGIC)
        atomic_fetch_add(&weak_bad, 1);
      atomic_fetch_add(&weak_hits, 1);
      hark_unref(o);
    }
  }
  return arg;
}

static void *weak_setter(void *arg) {
  long n = *(long *)arg;
  for (long i = 0; i < n; i++) {
    wobj *o = hark_new(&wobj_type);
    o->magic = WMAGIC;
    int r = hark_weak_set(&shared_weak, o);
    if (r != 0)
      atomic_fetch_add(&weak_bad, 1);
    hark_unref(o); /* shared_weak now names a dead object */
  }
  return NULL;
}

static void *weak_clearer(void *arg) {
  long n = *(long *)arg;
  for (long i = 0; i < n; i++) {
    if (i & 1)
      hark_weak_clear(&shared_weak);
    else if (hark_weak_set(&shared_weak, keeper) != 0)
      atomic_fetch_add(&weak_bad, 1);
  }
  return NULL;
}

static void one_weak_three_threads(void) {
  keeper = hark_new(&wobj_type);
  keeper->magic = WMAGIC;
  long n = test_scaled(200000);
  pthread_t g1, g2, s, c;
  ck_assert_int_eq(pthread_create(&g1, NULL, weak_getter, NULL), 0);
  ck_assert_int_eq(pthread_create(&g2, NULL, weak_getter, NULL), 0);
  ck_assert_int_eq(pthread_create(&s, NULL, weak_setter, &n), 0);
  ck_assert_int_eq(pthread_create(&c, NULL, weak_clearer, &n), 0);
  pthread_join(s, NULL);
  pthread_join(c, NULL);
  atomic_store(&weak_stop, 1);
  pthread_join(g1, NULL);
  pthread_join(g2, NULL);
  ck_assert_int_eq(atomic_load(&weak_bad), 0);
  ck_assert_int_gt(atomic_load(&weak_gets), 0); /* (hits: the scheduler's) */
  ck_assert_int_eq(hark_weak_set(&shared_weak, keeper), 0);
  wobj *k = hark_weak_get(&shared_weak);
  ck_assert_ptr_eq(k, keeper);
  hark_unref(k);
  hark_weak_clear(&shared_weak);
  hark_unref(keeper);
}

START_TEST(one_weak_reference_is_got_set_and_cleared_by_threads_at_once) {
  one_weak_three_threads();
}
END_TEST

/* ---- Scenario 7: smaller defects on the same path ---------------------- */

typedef struct order_rec {
  int seen[8];
  int n;
} order_rec;

static int rec_a(void *self, void *sender, void *args) {
  order_rec *r = args;
  r->seen[r->n++] = 1;
  return 0;
}
static int rec_b(void *self, void *sender, void *args) {
  order_rec *r = args;
  r->seen[r->n++] = 2;
  return 0;
}
static int rec_c(void *self, void *sender, void *args) {
  order_rec *r = args;
  r->seen[r->n++] = 3;
  return 0;
}

/* Every allocation a send makes fails in turn: the send still calls every
 * receiver, in order, and returns how many it called. */
static hark_signal *oom_sig;
static tobj *oom_sender;

static int oom_send_scenario(void *arg) {
  (void)arg;
  /* a change that allocates nothing: the next send must build its list
   * again */
  long fail_at = atomic_load(&test_fail_at);
  test_fail_nth(0);
  ck_assert_int_eq(hark_block(oom_sig, rec_b, NULL, oom_sender), 0);
  ck_assert_int_eq(hark_unblock(oom_sig, rec_b, NULL, oom_sender), 0);
  test_fail_nth(fail_at);
  order_rec r = {{0}, 0};
  int got = hark_send(oom_sig, oom_sender, &r);
  bool met = test_failure_met();
  test_fail_nth(0);
  ck_assert_int_eq(got, 3);
  ck_assert_int_eq(r.n, 3);
  ck_assert_int_eq(r.seen[0], 1);
  ck_assert_int_eq(r.seen[1], 2);
  ck_assert_int_eq(r.seen[2], 3);
  /* leave a list built, as it was when the scenario started */
  ck_assert_int_eq(hark_send(oom_sig, oom_sender, &r), 3);
  return !met;
}

START_TEST(a_send_delivers_when_its_receiver_list_cannot_be_built) {
  oom_sig = hark_signal_new("oom");
  oom_sender = tobj_new();
  ck_assert_int_eq(hark_connect(oom_sig, rec_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(oom_sig, rec_b, NULL, oom_sender, 0), 0);
  ck_assert_int_eq(hark_connect(oom_sig, rec_c, NULL, NULL, 0), 0);
  /* the list's allocation fails: delivered all the same */
  order_rec r = {{0}, 0};
  test_fail_nth(1);
  ck_assert_int_eq(hark_send(oom_sig, oom_sender, &r), 3);
  ck_assert_int_eq(hark_send_robust(oom_sig, oom_sender, &r, NULL, NULL), 0);
  test_fail_nth(0);
  ck_assert_int_eq(r.n, 6);
  ck_assert_int_ge(test_oom_loop(oom_send_scenario, NULL), 1);
  r.n = 0;
  hark_unref(oom_sig);
  hark_unref(oom_sender);
}
END_TEST

static _Atomic long deep_calls;
static hark_signal *deep_sig;
static tobj *deep_victim;

static int deep_receiver(void *self, void *sender, void *args) {
  long depth = (long)(intptr_t)args;
  atomic_fetch_add(&deep_calls, 1);
  if (depth == 12 && deep_victim != NULL) {
    /* deeper than the hazards reach: drop an object called further up */
    deep_victim->dropper = pthread_self();
    hark_unref(deep_victim);
    deep_victim = NULL;
  }
  if (depth < 20)
    hark_send(deep_sig, NULL, (void *)(intptr_t)(depth + 1));
  return 0;
}

START_TEST(sends_nested_deeper_than_the_hazards_reach_still_deliver) {
  deep_sig = hark_signal_new("deep");
  deep_victim = tobj_new();
  ck_assert_int_eq(hark_connect(deep_sig, deep_receiver, deep_victim, NULL, 0),
                   0);
  atomic_store(&deep_calls, 0);
  ck_assert_int_eq(hark_send(deep_sig, NULL, (void *)(intptr_t)1), 1);
  /* the calls in progress hold the victim: every depth calls it, and it
   * dies when the outermost call returns */
  ck_assert_int_eq(atomic_load(&deep_calls), 20);
  ck_assert_int_eq(atomic_load(&tobj_finalized), 1);
  ck_assert_int_eq(atomic_load(&tobj_misplaced), 0);
  hark_unref(deep_sig);
}
END_TEST

START_TEST(blocking_two_to_the_24_times_never_lets_the_receiver_run) {
  hark_signal *sig = hark_signal_new("blocked");
  _Atomic long calls = 0;
  ck_assert_int_eq(hark_connect(sig, count_calls, NULL, NULL, 0), 0);
  long n = test_scaled(1L << 24) + 1; /* 2^24 + 1 unless slowed down */
  long bad = 0; /* counted, not asserted: an assertion costs a syscall */
  for (long i = 0; i < n; i++)
    bad += hark_block(sig, count_calls, NULL, NULL) != 0;
  ck_assert_int_eq(bad, 0);
  ck_assert_int_eq(hark_send(sig, NULL, &calls), 0);
  ck_assert_int_eq(atomic_load(&calls), 0);
  for (long i = 0; i < n - 1; i++)
    bad += hark_unblock(sig, count_calls, NULL, NULL) != 0;
  ck_assert_int_eq(bad, 0);
  ck_assert_int_eq(hark_send(sig, NULL, &calls), 0); /* still once */
  ck_assert_int_eq(hark_unblock(sig, count_calls, NULL, NULL), 0);
  ck_assert_int_eq(hark_send(sig, NULL, &calls), 1);
  ck_assert_int_eq(hark_unblock(sig, count_calls, NULL, NULL), HARK_ERANGE);
  ck_assert_int_eq(atomic_load(&calls), 1);
  hark_unref(sig);
}
END_TEST

/* A weak map read from threads that replace, remove and kill its keys:
 * hark_weakmap_get's reference outlives all of it. */
typedef struct rval {
  _Atomic int refs;
  unsigned magic;
} rval;

#define RMAGIC 0x7a1eu
static _Atomic long rval_live, rval_bad;

static rval *rval_new(void) {
  rval *v = test_malloc(sizeof *v);
  atomic_init(&v->refs, 1);
  v->magic = RMAGIC;
  atomic_fetch_add(&rval_live, 1);
  return v;
}

static void rval_unref(void *p) {
  rval *v = p;
  if (v->magic != RMAGIC)
    atomic_fetch_add(&rval_bad, 1);
  if (atomic_fetch_sub(&v->refs, 1) == 1) {
    v->magic = 0;
    atomic_fetch_sub(&rval_live, 1);
    test_free(v);
  }
}

static void *rval_ref(void *p) {
  atomic_fetch_add(&((rval *)p)->refs, 1);
  return p;
}

static hark_weakmap *rmap;
static hark_weak rkeys[4];
static _Atomic int rstop;

static void *map_reader(void *arg) {
  unsigned x = 1;
  while (!atomic_load(&rstop)) {
    x = x * 1103515245u + 12345u;
    test_obj *k = hark_weak_get(&rkeys[(x >> 16) % 4]);
    if (k == NULL)
      continue;
    rval *v = hark_weakmap_get(rmap, k);
    if (v != NULL) {
      sched_yield(); /* let the writer release it meanwhile */
      if (v->magic != RMAGIC)
        atomic_fetch_add(&rval_bad, 1);
      rval_unref(v);
    }
    hark_unref(k); /* maybe the last reference */
  }
  return arg;
}

START_TEST(weakmap_get_returns_a_reference_that_outlives_concurrent_changes) {
  hark_weakmap_ops ops = {rval_unref, rval_ref, NULL};
  rmap = hark_weakmap_new_ops(&ops);
  ck_assert_ptr_nonnull(rmap);
  pthread_t r1, r2;
  ck_assert_int_eq(pthread_create(&r1, NULL, map_reader, NULL), 0);
  ck_assert_int_eq(pthread_create(&r2, NULL, map_reader, NULL), 0);
  long n = test_scaled(50000);
  test_obj *keys[4] = {0};
  for (long i = 0; i < n; i++) {
    int k = (int)(i % 4);
    switch ((i / 4) % 3) {
    case 0: /* a new key (the old one dies) */
      hark_unref(keys[k]);
      keys[k] = hark_new(&test_obj_type);
      hark_weak_set(&rkeys[k], keys[k]);
      ck_assert_int_eq(hark_weakmap_set(rmap, keys[k], rval_new()), 0);
      break;
    case 1: /* replace */
      ck_assert_int_eq(hark_weakmap_set(rmap, keys[k], rval_new()), 0);
      break;
    case 2:
      ck_assert_int_eq(hark_weakmap_remove(rmap, keys[k]), 1);
      break;
    }
  }
  atomic_store(&rstop, 1);
  pthread_join(r1, NULL);
  pthread_join(r2, NULL);
  for (int k = 0; k < 4; k++) {
    hark_weak_clear(&rkeys[k]);
    hark_unref(keys[k]);
  }
  ck_assert_uint_eq(hark_weakmap_size(rmap), 0);
  hark_weakmap_free(rmap);
  ck_assert_int_eq(atomic_load(&rval_bad), 0);
  ck_assert_int_eq(atomic_load(&rval_live), 0);
}
END_TEST

START_TEST(weakmap_get_without_value_ref_returns_null_and_peek_borrows) {
  hark_weakmap *m = hark_weakmap_new(NULL);
  tobj *k = tobj_new();
  static int v;
  ck_assert_int_eq(hark_weakmap_set(m, k, &v), 0);
  ck_assert_ptr_null(hark_weakmap_get(m, k));
  ck_assert_ptr_eq(hark_weakmap_peek(m, k), &v);
  ck_assert_ptr_null(hark_weakmap_peek(NULL, k));
  ck_assert_ptr_null(hark_weakmap_peek(m, NULL));
  ck_assert_ptr_null(hark_weakmap_get(NULL, k));
  ck_assert_ptr_null(hark_weakmap_get(m, NULL));
  hark_weakmap_ops ops = {NULL, rval_ref, NULL};
  hark_weakmap *m2 = hark_weakmap_new_ops(&ops);
  rval *rv = rval_new();
  ck_assert_int_eq(hark_weakmap_set(m2, k, rv), 0);
  ck_assert_ptr_eq(hark_weakmap_get(m2, k), rv);
  ck_assert_int_eq(atomic_load(&rv->refs), 2);
  rval_unref(rv);
  hark_unref(k); /* both entries go: m2 has no value_free, rv is ours */
  ck_assert_uint_eq(hark_weakmap_size(m2), 0);
  ck_assert_int_eq(atomic_load(&rv->refs), 1);
  rval_unref(rv);
  hark_weakmap *m3 = hark_weakmap_new_ops(NULL);
  ck_assert_ptr_nonnull(m3);
  hark_weakmap_free(m3);
  hark_weakmap_free(m2);
  hark_weakmap_free(m);
}
END_TEST

/* fork() while another thread sends: the child has one thread, and hark
 * in it must neither wait for the vanished one's locks nor keep memory
 * for its hazards. */
START_TEST(a_child_forked_while_another_thread_sends_reclaims_alone) {
  hark_signal *sig = hark_signal_new("sig");
  pthread_t t = start_send_forever(sig);
  fflush(stdout);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    /* the other thread is gone here, in the middle of its send */
    long before = test_blocks();
    hark_signal *mine = hark_signal_new("child");
    tobj *o = tobj_new();
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
      bad += hark_connect(mine, nothing, o, NULL, 0) != 0;
      bad += hark_send(mine, NULL, NULL) != 1;
      bad += hark_disconnect(mine, nothing, o, NULL) != 1;
    }
    hark_unref(o);
    hark_unref(mine);
    /* alone: everything retired went at once */
    _exit(bad == 0 && test_blocks() == before ? 0 : 1);
  }
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "child status %#x", status);
  atomic_store(&forever_go, 1);
  pthread_join(t, NULL);
  hark_unref(sig);
}
END_TEST

int main(void) {
  Suite *s = suite_create("reclaim");
  TCase *tc = tcase_create("contract");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, objects_die_at_once_while_two_threads_send_on_their_own_signals);
  tcase_add_test(tc, objects_die_at_once_while_two_threads_send_with_fences);
  tcase_add_test(tc, objects_and_memory_go_while_a_receiver_runs_forever);
  tcase_add_test(tc, a_long_send_delays_only_the_list_it_walks);
  tcase_add_test(tc, a_child_forked_while_another_thread_sends_reclaims_alone);
  tcase_add_test(tc, finalize_runs_on_the_dropping_thread_outside_other_threads_locks);
  tcase_add_test(tc, a_receiver_keeps_its_object_when_another_thread_drops_it);
  tcase_add_test(tc, a_receiver_keeps_its_object_on_its_first_send_too);
  tcase_add_test(tc, a_strong_receiver_keeps_its_object_when_disconnected_elsewhere);
  tcase_add_test(tc, a_receiver_keeps_its_object_with_fences);
  tcase_add_test(tc, receivers_dropped_while_another_thread_calls_them_die_once);
  tcase_add_test(tc, receivers_dropped_while_called_die_once_with_fences);
  tcase_add_test(tc, idle_sweep_survives_signals_dying_on_other_threads);
  tcase_add_test(tc, one_weak_reference_is_got_set_and_cleared_by_threads_at_once);
  tcase_add_test(tc, a_send_delivers_when_its_receiver_list_cannot_be_built);
  tcase_add_test(tc, sends_nested_deeper_than_the_hazards_reach_still_deliver);
  tcase_add_test(tc, blocking_two_to_the_24_times_never_lets_the_receiver_run);
  tcase_add_test(tc, weakmap_get_returns_a_reference_that_outlives_concurrent_changes);
  tcase_add_test(tc, weakmap_get_without_value_ref_returns_null_and_peek_borrows);
  suite_add_tcase(s, tc);
  return test_run(s);
}
