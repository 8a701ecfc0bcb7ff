/* A bounded multi-threaded stress of the dispatcher: 4 threads connect,
 * disconnect, send, sweep and drop receivers, senders and signals shared
 * between them, for a fixed number of operations (no timing: the same
 * work under TSan, ASan or valgrind, only slower).
 *
 * Invariants, checked by every receiver call and every finalize:
 *  - a receiver never runs on an object whose finalize has run (finalize
 *    may be deferred while sends are in flight, so "dead" is allowed,
 *    "finalized" is not), nor concurrently with its finalize;
 *  - the sender a receiver is given is not finalized either;
 *  - at the end every object was finalized exactly once, no object is
 *    live and no allocated block is left.
 * Violations are counted atomically (Check's asserts are for the main
 * thread) and asserted once the threads are joined.
 *
 * HARK_MT_ITERS overrides the number of operations per thread. */
#include "util.h"

#include <pthread.h>
#include <stdint.h>

enum { THREADS = 4, SLOTS = 16, SIGNALS = 3 };
#define MAGIC_ALIVE 0x6c697665u
#define MAGIC_DEAD 0x64656164u

typedef struct mt_obj {
  hark_object base;
  int serial;
  _Atomic unsigned magic;
  _Atomic int running; /* receiver calls on this object in progress */
  void *conn_sender;   /* the sender it was connected with, if any */
  _Atomic long calls;
} mt_obj;

static _Atomic int *finalize_counts; /* by serial */
static int max_objects;
static _Atomic int next_serial;
static _Atomic long violations;
static _Atomic long receiver_calls;
static _Atomic long unexpected;
static int iterations = 5000;

static void violation(void) { atomic_fetch_add(&violations, 1); }

/* Each test starts from zero, also in Check's no-fork mode. */
static void mt_begin(void) {
  test_alloc_install();
  const char *env = getenv("HARK_MT_ITERS");
  if (env != NULL && atoi(env) > 0)
    iterations = atoi(env);
  atomic_store(&next_serial, 0);
  atomic_store(&violations, 0);
  atomic_store(&receiver_calls, 0);
  atomic_store(&unexpected, 0);
}

static void mt_finalize(void *obj) {
  mt_obj *o = obj;
  if (atomic_load(&o->running) != 0)
    violation(); /* finalize while one of its receivers runs */
  if (atomic_load(&o->magic) != MAGIC_ALIVE)
    violation();
  atomic_store(&o->magic, MAGIC_DEAD);
  atomic_fetch_add(&finalize_counts[o->serial], 1);
  test_free(obj);
}

static const hark_type mt_type = {"mt_obj", sizeof(mt_obj), mt_finalize, NULL};

static mt_obj *mt_new(void) {
  int serial = atomic_fetch_add(&next_serial, 1);
  if (serial >= max_objects) {
    violation(); /* the bound below is wrong */
    return NULL;
  }
  mt_obj *o = hark_new(&mt_type);
  if (o == NULL) {
    violation();
    return NULL;
  }
  o->serial = serial;
  atomic_store(&o->magic, MAGIC_ALIVE);
  return o;
}

static int alive(mt_obj *o) {
  return atomic_load(&o->magic) == MAGIC_ALIVE &&
         atomic_load(&finalize_counts[o->serial]) == 0;
}

/* The signal a send is about travels in args, so that a receiver can
 * disconnect itself from it. */
static int mt_rx(void *self, void *sender, void *args) {
  mt_obj *o = self;
  atomic_fetch_add(&receiver_calls, 1);
  if (sender != NULL && !alive(sender))
    violation();
  if (o == NULL)
    return 0;
  atomic_fetch_add(&o->running, 1);
  if (!alive(o))
    violation();
  long n = atomic_fetch_add(&o->calls, 1);
  if (n % 7 == 6 && args != NULL) {
    /* a receiver disconnecting itself while other threads send */
    int r = hark_disconnect(args, mt_rx, o, o->conn_sender);
    if (r != 0 && r != 1)
      atomic_fetch_add(&unexpected, 1);
  }
  if (!alive(o))
    violation();
  atomic_fetch_sub(&o->running, 1);
  return 0;
}

static int mt_plain(void *self, void *sender, void *args) {
  atomic_fetch_add(&receiver_calls, 1);
  if (sender != NULL && !alive(sender))
    violation();
  return 0;
}

/* ---- shared slots, each holding one strong reference ------------------- */

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static mt_obj *receivers[SLOTS];
static mt_obj *senders[SLOTS];
static hark_signal *signals[SIGNALS];

/* A new reference to what slot holds, or NULL. */
static void *slot_get(void **slot) {
  pthread_mutex_lock(&slots_lock);
  void *p = hark_ref(*slot);
  pthread_mutex_unlock(&slots_lock);
  return p;
}

/* Puts obj (a reference the caller gives) in slot and drops what was there,
 * outside the lock: the last unref may run finalizers and death
 * notifications. */
static void slot_put(void **slot, void *obj) {
  pthread_mutex_lock(&slots_lock);
  void *old = *slot;
  *slot = obj;
  pthread_mutex_unlock(&slots_lock);
  hark_unref(old);
}

static unsigned next_rand(unsigned *state) {
  *state = *state * 1103515245u + 12345u;
  return (*state >> 8) & 0xffffffu;
}

static void *worker(void *arg) {
  unsigned rng = (unsigned)(uintptr_t)arg * 2654435761u + 1u;
  for (int it = 0; it < iterations; it++) {
    unsigned op = next_rand(&rng) % 100;
    hark_signal *sig = slot_get((void **)&signals[next_rand(&rng) % SIGNALS]);
    mt_obj *snd = next_rand(&rng) % 3
                      ? slot_get((void **)&senders[next_rand(&rng) % SLOTS])
                      : NULL;
    if (op < 22) { /* connect a new receiver object */
      mt_obj *o = mt_new();
      if (o != NULL) {
        unsigned f = next_rand(&rng) % 8;
        unsigned flags = f == 0 ? HARK_STRONG : f == 1 ? HARK_ONCE : 0;
        o->conn_sender = snd;
        int r = hark_connect(sig, mt_rx, o, snd, flags);
        if (r != 0)
          atomic_fetch_add(&unexpected, 1);
        slot_put((void **)&receivers[next_rand(&rng) % SLOTS], o);
      }
    } else if (op < 26) { /* a plain function, maybe already connected */
      int r = hark_connect(sig, mt_plain, NULL, snd, 0);
      if (r != 0 && r != HARK_EEXIST)
        atomic_fetch_add(&unexpected, 1);
      if (next_rand(&rng) % 2) {
        r = hark_disconnect(sig, mt_plain, NULL, snd);
        if (r != 0 && r != 1)
          atomic_fetch_add(&unexpected, 1);
      }
    } else if (op < 34) { /* disconnect some receiver */
      mt_obj *o = slot_get((void **)&receivers[next_rand(&rng) % SLOTS]);
      if (o != NULL) {
        int r = hark_disconnect(sig, mt_rx, o, o->conn_sender);
        if (r != 0 && r != 1)
          atomic_fetch_add(&unexpected, 1);
        hark_unref(o);
      }
    } else if (op < 70) { /* send */
      int r = op % 4 ? hark_send(sig, snd, sig)
                     : hark_send_robust(sig, snd, sig, NULL, NULL);
      if (r < 0)
        atomic_fetch_add(&unexpected, 1);
    } else if (op < 82) { /* drop a receiver */
      slot_put((void **)&receivers[next_rand(&rng) % SLOTS], NULL);
    } else if (op < 90) { /* replace a sender */
      slot_put((void **)&senders[next_rand(&rng) % SLOTS], mt_new());
    } else if (op < 97) {
      hark_signal_sweep(sig);
      (void)hark_has_listeners(sig, snd);
      (void)hark_signal_receivers(sig);
    } else { /* replace a signal: sends in flight keep the old one */
      hark_signal *n = hark_signal_new("mt");
      hark_signal_set_max_receivers(n, 0);
      slot_put((void **)&signals[next_rand(&rng) % SIGNALS], n);
    }
    hark_unref(snd);
    hark_unref(sig);
  }
  return NULL;
}

START_TEST(concurrent_connect_disconnect_send_and_unref_keep_every_invariant) {
  mt_begin();
  /* every operation creates at most one object */
  max_objects = THREADS * iterations + 2 * SLOTS + 16;
  finalize_counts = calloc((size_t)max_objects, sizeof *finalize_counts);
  ck_assert_ptr_nonnull(finalize_counts);

  for (int i = 0; i < SIGNALS; i++) {
    signals[i] = hark_signal_new("mt");
    ck_assert_ptr_nonnull(signals[i]);
    hark_signal_set_max_receivers(signals[i], 0); /* dead ones pile up */
  }
  for (int i = 0; i < SLOTS; i++)
    senders[i] = mt_new();

  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(
        pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i + 1)), 0);
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(pthread_join(th[i], NULL), 0);

  for (int i = 0; i < SLOTS; i++) {
    slot_put((void **)&receivers[i], NULL);
    slot_put((void **)&senders[i], NULL);
  }
  for (int i = 0; i < SIGNALS; i++)
    slot_put((void **)&signals[i], NULL);

  ck_assert_int_eq(atomic_load(&violations), 0);
  ck_assert_int_eq(atomic_load(&unexpected), 0);
  ck_assert_int_gt(atomic_load(&receiver_calls), 0);
  int made = atomic_load(&next_serial);
  for (int i = 0; i < made; i++)
    ck_assert_msg(atomic_load(&finalize_counts[i]) == 1,
                  "object %d finalized %d times", i,
                  atomic_load(&finalize_counts[i]));
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), 0);
  free(finalize_counts);
}
END_TEST

/* Senders and receivers dying on one thread while two others send to them
 * all the time: the narrowest window for a receiver to run on an object
 * being finalized. */
static hark_signal *hot_sig;
static mt_obj *hot_sender;
static _Atomic int hot_done;

static void *hot_sender_thread(void *arg) {
  while (!atomic_load(&hot_done)) {
    if (hark_send(hot_sig, hot_sender, hot_sig) < 0)
      atomic_fetch_add(&unexpected, 1);
    if (hark_send(hot_sig, NULL, hot_sig) < 0)
      atomic_fetch_add(&unexpected, 1);
  }
  return NULL;
}

START_TEST(
    receivers_dying_while_other_threads_send_are_never_called_finalized) {
  mt_begin();
  max_objects = 3 * iterations + 16;
  finalize_counts = calloc((size_t)max_objects, sizeof *finalize_counts);
  ck_assert_ptr_nonnull(finalize_counts);
  hot_sig = hark_signal_new("hot");
  hark_signal_set_max_receivers(hot_sig, 0); /* dead ones pile up */
  hot_sender = mt_new();

  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(pthread_create(&th[i], NULL, hot_sender_thread, NULL), 0);
  mt_obj *keep[8] = {0};
  for (int it = 0; it < iterations; it++) {
    mt_obj *o = mt_new();
    ck_assert_ptr_nonnull(o);
    o->conn_sender = it % 2 ? hot_sender : NULL;
    ck_assert_int_eq(hark_connect(hot_sig, mt_rx, o, o->conn_sender, 0), 0);
    /* keep a few alive for a while, drop the rest at once */
    hark_unref(keep[it % 8]);
    keep[it % 8] = o;
    if (it % 3 == 0) {
      hark_unref(keep[it % 8]);
      keep[it % 8] = NULL;
    }
  }
  atomic_store(&hot_done, 1);
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < 8; i++)
    hark_unref(keep[i]);
  hark_unref(hot_sender);
  hark_unref(hot_sig);

  ck_assert_int_eq(atomic_load(&violations), 0);
  ck_assert_int_eq(atomic_load(&unexpected), 0);
  int made = atomic_load(&next_serial);
  for (int i = 0; i < made; i++)
    ck_assert_msg(atomic_load(&finalize_counts[i]) == 1,
                  "object %d finalized %d times", i,
                  atomic_load(&finalize_counts[i]));
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), 0);
  free(finalize_counts);
}
END_TEST

int main(void) {
  Suite *s = suite_create("signal-mt");
  TCase *tc = tcase_create("stress");
  tcase_set_timeout(tc, 300);
  tcase_add_test(
      tc, concurrent_connect_disconnect_send_and_unref_keep_every_invariant);
  tcase_add_test(
      tc, receivers_dying_while_other_threads_send_are_never_called_finalized);
  suite_add_tcase(s, tc);
  return test_run(s);
}
