/* The model test's ideas across 4 threads, with invariants instead of an
 * exact model: threads connect, disconnect, send, send_robust, block,
 * unblock, drop references (the last ones too: kill), set, get and clear
 * weak references (some shared by all threads, with no lock around
 * them), and set, read (hark_weakmap_get, a new reference) and remove
 * entries of a shared weak-key map, on shared signals, with shared and
 * per-thread senders and receivers; receivers take a reference on their
 * own object and act reentrantly by a script chosen at connect time
 * (disconnect themselves or another, drop a reference, connect a new
 * receiver, block themselves, send again, upgrade a weak reference).
 *
 * Each thread's operations come from a PRNG seeded from HARK_SEED and the
 * thread's number: a failure prints the seed, and HARK_SEED=<n> replays
 * the same operations (the interleaving is the scheduler's). Without
 * HARK_SEED, HARK_MT_SEEDS runs (default 3) are made with seeds 1, 2...
 *
 * Invariants (violations are counted atomically, asserted after the join):
 *  - a receiver never runs on an object, nor is given a sender, whose
 *    finalize has run (objects live in a pool that is never freed, so a
 *    state word set to FINALIZED by finalize can be checked instead of
 *    reading freed memory);
 *  - every object is finalized exactly once, and none while one of its
 *    receivers runs;
 *  - a HARK_ONCE receiver is called at most once;
 *  - a receiver whose disconnect returned 1 before a send started is not
 *    called by that send (an epoch counter orders the two);
 *  - a blocked receiver is not called by its own thread's sends from its
 *    private sender (only that thread blocks it and sends from it);
 *  - hark_ref(self) works in every receiver;
 *  - each weak-map value is released exactly once, and a value read with
 *    hark_weakmap_get is never released while the reader holds it;
 *  - at the end, with everything dropped: no live object, no block.
 *
 * Bounded: HARK_MT_ITERS operations per thread (default 20000, divided by
 * HARK_TEST_SCALE); the same work under TSan, ASan or valgrind. */
#include "util.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { THREADS = 4, SLOTS = 16, SIGNALS = 3, MAX_DEPTH = 2 };
enum { ST_UNUSED, ST_ALIVE, ST_FINALIZED };
enum {
  A_NOTHING,
  A_DISC_SELF,
  A_DISC_OTHER,
  A_UNREF,
  A_CONNECT,
  A_BLOCK,
  A_SEND,
  A_WEAK,
  A_N
};

typedef struct mt_obj {
  hark_object base;
  _Atomic int state;
  _Atomic int finalized;
  _Atomic int running;
  _Atomic long calls;
  _Atomic long removed_epoch; /* when a disconnect of it returned 1 */
  _Atomic int blocked;        /* private receivers: blocked by its thread */
  int sig;                    /* its one connection: (mt_rx, self, sender) */
  void *conn_sender;
  unsigned flags;
  int act;
  unsigned param;
} mt_obj;

static mt_obj *pool;
static int pool_size;
static _Atomic int pool_used;
static _Atomic long violations, unexpected, calls, epoch;
static _Atomic long values_set, values_freed;
static int iterations = 20000;
static unsigned long seed;

static hark_signal *signals[SIGNALS];
static hark_weakmap *map;

typedef struct slot {
  mt_obj *strong;
  hark_weak weak;
} slot;
static slot slots[SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

static void violation(const char *what) {
  if (atomic_fetch_add(&violations, 1) < 5)
    fprintf(stderr, "model-mt: violation: %s (HARK_SEED=%lu replays it)\n",
            what, seed);
}

static void bad_result(const char *what, int r) {
  if (atomic_fetch_add(&unexpected, 1) < 5)
    fprintf(stderr, "model-mt: %s returned %d (HARK_SEED=%lu replays it)\n",
            what, r, seed);
}

static unsigned rnd(unsigned *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* ---- objects ------------------------------------------------------------ */

static void mt_finalize(void *obj) {
  mt_obj *o = obj;
  if (atomic_load(&o->running) != 0)
    violation("finalize while a receiver of the object runs");
  if (atomic_exchange(&o->state, ST_FINALIZED) != ST_ALIVE)
    violation("finalize of an object not alive");
  atomic_fetch_add(&o->finalized, 1);
}

static const hark_type mt_fin_type = {"mt_model_obj", sizeof(mt_obj),
                                      mt_finalize, NULL};

/* A new object from the pool (never freed before the end), or NULL when
 * the pool is used up. */
static mt_obj *obj_new(void) {
  int i = atomic_fetch_add(&pool_used, 1);
  if (i >= pool_size)
    return NULL;
  mt_obj *o = &pool[i];
  if (hark_object_init(o, &mt_fin_type) != 0) {
    violation("hark_object_init failed");
    return NULL;
  }
  atomic_store(&o->state, ST_ALIVE);
  return o;
}

static bool finalized(const void *p) {
  return p != NULL && atomic_load(&((mt_obj *)p)->state) == ST_FINALIZED;
}

/* ---- shared slots ---------------------------------------------------------
 */

/* A new reference to slot i's object: its strong one, else its weak one
 * upgraded (racing with the last unref on other threads), or NULL. */
static mt_obj *slot_get(unsigned i) {
  slot *s = &slots[i % SLOTS];
  pthread_mutex_lock(&slots_lock);
  mt_obj *o = s->strong ? hark_ref(s->strong) : hark_weak_get(&s->weak);
  pthread_mutex_unlock(&slots_lock);
  if (o != NULL && finalized(o))
    violation("weak_get returned a finalized object");
  return o;
}

/* Puts o (a reference given) in slot i, weakly too; the old strong
 * reference is dropped outside the lock. keep_weak: the weak reference
 * keeps pointing at the old object when o is NULL. */
static void slot_put(unsigned i, mt_obj *o, bool keep_weak) {
  slot *s = &slots[i % SLOTS];
  pthread_mutex_lock(&slots_lock);
  mt_obj *old = s->strong;
  s->strong = o;
  if (o != NULL || !keep_weak) {
    int r = hark_weak_set(&s->weak, o);
    if (r != 0)
      bad_result("hark_weak_set", r);
  }
  pthread_mutex_unlock(&slots_lock);
  hark_unref(old);
}

/* ---- receivers -------------------------------------------------------------
 */

typedef struct frame {
  long start_epoch;
  int depth;
  unsigned *rng;
  long *budget;           /* receiver calls left for this operation */
  mt_obj *private_sender; /* the sending thread's */
} frame;

enum { BUDGET = 48, MAX_RECEIVERS = 48 };

static int mt_rx(void *self, void *sender, void *args);

static int do_send(int s, void *sender, frame *outer, unsigned *rng,
                   bool robust);

/* Recently connected receivers, alive or not: the pool is never freed, so
 * a dead one's pointers still name its connection (hark_disconnect takes
 * the pointers used to connect). Without this, strong receivers dropped
 * from the slots would stay connected for good. */
enum { RECENT = 64 };
static mt_obj *_Atomic recent[RECENT];

static void disconnect_obj(mt_obj *o) {
  int r = hark_disconnect(signals[o->sig], mt_rx, o, o->conn_sender);
  if (r == 1)
    atomic_store(&o->removed_epoch, atomic_fetch_add(&epoch, 1) + 1);
  else if (r != 0)
    bad_result("hark_disconnect", r);
}

/* Connects a new receiver object and puts it in a slot (or drops it). */
static void connect_new(unsigned *rng, mt_obj *sender, bool in_slot) {
  unsigned x = rnd(rng);
  if (hark_signal_receivers(signals[x % SIGNALS]) >= MAX_RECEIVERS)
    return; /* strong receivers pile up otherwise */
  mt_obj *o = obj_new();
  if (o == NULL)
    return;
  static const unsigned fl[8] = {
      0, 0, 0, HARK_STRONG, HARK_STRONG, HARK_ONCE, HARK_ONCE | HARK_STRONG, 0};
  o->sig = (int)(x % SIGNALS);
  o->flags = fl[(x >> 2) & 7];
  o->act = (int)((x >> 5) % A_N);
  o->param = x >> 9;
  o->conn_sender = sender;
  int r = hark_connect(signals[o->sig], mt_rx, o, sender, o->flags);
  if (r != 0)
    bad_result("hark_connect", r);
  atomic_store(&recent[(x >> 20) % RECENT], o);
  if (in_slot)
    slot_put(x >> 12, o, (x >> 16) & 1);
  else
    hark_unref(o); /* strong ones live on; weak ones die at once */
}

static int mt_rx(void *self, void *sender, void *args) {
  frame *f = args;
  mt_obj *o = self;
  atomic_fetch_add(&calls, 1);
  if (finalized(sender))
    violation("receiver given a finalized sender");
  if (o == NULL)
    return 0;
  atomic_fetch_add(&o->running, 1);
  if (finalized(o))
    violation("receiver called on a finalized object");
  if (hark_ref(o) != o) /* the send's reference makes this always work */
    violation("hark_ref(self) failed in a receiver");
  long n = atomic_fetch_add(&o->calls, 1);
  if ((o->flags & HARK_ONCE) && n > 0)
    violation("HARK_ONCE receiver called twice");
  long e = atomic_load(&o->removed_epoch);
  if (e != 0 && e <= f->start_epoch)
    violation("receiver called by a send that started after its disconnect");
  if (atomic_load(&o->blocked))
    violation("blocked receiver called");
  unsigned *rng = f->rng;
  bool spent = --*f->budget <= 0;
  int rv = 0;
  switch (o->act) {
  case A_NOTHING:
    rv = (o->param & 7) == 7; /* a failing receiver */
    break;
  case A_DISC_SELF:
    disconnect_obj(o);
    break;
  case A_DISC_OTHER: {
    mt_obj *x = atomic_load(&recent[rnd(rng) % RECENT]);
    if (x != NULL)
      disconnect_obj(x);
    break;
  }
  case A_UNREF:             /* maybe the last reference to this very receiver */
    if (rnd(rng) % 16 == 0) /* receivers are many: keep the slots filled */
      slot_put(rnd(rng), NULL, rnd(rng) & 1);
    break;
  case A_CONNECT:
    if (!spent)
      connect_new(rng, (rnd(rng) & 1) ? NULL : sender, true);
    break;
  case A_BLOCK: {
    if (o->conn_sender != NULL && o->conn_sender == f->private_sender)
      break; /* private receivers are blocked by their thread only */
    int r = (o->param & 1)
                ? hark_block(signals[o->sig], mt_rx, o, o->conn_sender)
                : hark_unblock(signals[o->sig], mt_rx, o, o->conn_sender);
    if (r != 0 && r != HARK_ENOENT && r != HARK_ERANGE)
      bad_result("hark_block/unblock", r);
    break;
  }
  case A_SEND:
    if (f->depth < MAX_DEPTH && !spent)
      do_send((int)(rnd(rng) % SIGNALS), (rnd(rng) & 1) ? sender : NULL, f, rng,
              rnd(rng) & 1);
    break;
  case A_WEAK: {
    mt_obj *x = slot_get(rnd(rng));
    hark_unref(x);
    break;
  }
  }
  if (finalized(o))
    violation("receiver's object finalized during its call");
  atomic_fetch_sub(&o->running, 1);
  hark_unref(o); /* maybe the last one, if the send's is gone: not yet */
  return rv;
}

static int do_send(int s, void *sender, frame *outer, unsigned *rng,
                   bool robust) {
  frame f = {.start_epoch = atomic_load(&epoch),
             .depth = outer->depth + 1,
             .rng = rng,
             .budget = outer->budget,
             .private_sender = outer->private_sender};
  int r = robust ? hark_send_robust(signals[s], sender, &f, NULL, NULL)
                 : hark_send(signals[s], sender, &f);
  if (r < 0 && r != HARK_ESTOPPED) /* receivers may fail on purpose */
    bad_result("hark_send", r);
  return r;
}

/* ---- weak-map values
 * --------------------------------------------------------- */

typedef struct value {
  _Atomic int refs; /* the map's, plus one per reader */
  _Atomic int released;
} value;

static value *value_new(void) {
  value *v = calloc(1, sizeof *v);
  if (v != NULL)
    atomic_init(&v->refs, 1);
  return v;
}

static void value_unref(void *p) {
  value *x = p;
  if (atomic_load(&x->released))
    violation("weak-map value used after its release");
  if (atomic_fetch_sub(&x->refs, 1) == 1) {
    if (atomic_exchange(&x->released, 1) != 0)
      violation("weak-map value released twice");
    atomic_fetch_add(&values_freed, 1);
    free(x);
  }
}

static void *value_ref(void *p) {
  atomic_fetch_add(&((value *)p)->refs, 1);
  return p;
}

/* ---- weak references shared by every thread, without a lock ------------ */

enum { SHARED_WEAK = 4 };
static hark_weak shared_weak[SHARED_WEAK];

static void shared_weak_op(unsigned *rng) {
  hark_weak *w = &shared_weak[rnd(rng) % SHARED_WEAK];
  switch (rnd(rng) % 3) {
  case 0: {
    mt_obj *x = slot_get(rnd(rng));
    if (x != NULL) {
      int r = hark_weak_set(w, x);
      if (r != 0)
        bad_result("hark_weak_set (shared)", r);
      hark_unref(x);
    }
    break;
  }
  case 1: {
    mt_obj *x = hark_weak_get(w);
    if (x != NULL && finalized(x))
      violation("hark_weak_get (shared) returned a finalized object");
    hark_unref(x); /* may be the last reference */
    break;
  }
  case 2:
    hark_weak_clear(w);
    break;
  }
}

/* ---- the threads
 * -------------------------------------------------------------- */

typedef struct worker_arg {
  int id;
  mt_obj *sender;  /* private: only this thread sends from it */
  mt_obj *blocked; /* private receiver for sends from sender, on signal 0 */
} worker_arg;

static pthread_barrier_t start;

static void *worker(void *arg) {
  worker_arg *w = arg;
  pthread_barrier_wait(&start); /* all four at once */
  unsigned rng = (unsigned)(seed * 0x9e3779b97f4a7c15ULL >> 32) ^
                 (0x85ebca6bu * (unsigned)(w->id + 1));
  if (rng == 0)
    rng = 1;
  long budget;
  frame top = {.private_sender = w->sender, .rng = &rng, .budget = &budget};
  for (int it = 0; it < iterations; it++) {
    unsigned op = rnd(&rng) % 100;
    budget = BUDGET;
    top.depth = -1; /* do_send adds one */
    if (op < 18) {  /* connect a receiver for a shared, own or no sender */
      unsigned k = rnd(&rng) % 3;
      mt_obj *snd = k == 0 ? slot_get(rnd(&rng)) : NULL;
      connect_new(&rng, k == 1 ? w->sender : snd, rnd(&rng) % 4 != 0);
      hark_unref(snd);
    } else if (op < 24) { /* disconnect one, maybe dead */
      mt_obj *x = atomic_load(&recent[rnd(&rng) % RECENT]);
      if (x != NULL)
        disconnect_obj(x);
    } else if (op < 50) { /* send from a shared, own or no sender */
      unsigned k = rnd(&rng) % 3;
      mt_obj *snd = k == 0 ? slot_get(rnd(&rng)) : NULL;
      do_send((int)(rnd(&rng) % SIGNALS), k == 1 ? w->sender : snd, &top, &rng,
              rnd(&rng) % 3 == 0);
      hark_unref(snd);
    } else if (op < 58) { /* block the private receiver, send, unblock */
      mt_obj *b = w->blocked;
      int r = hark_block(signals[0], mt_rx, b, w->sender);
      if (r != 0)
        bad_result("hark_block (private)", r);
      atomic_store(&b->blocked, 1);
      do_send(0, w->sender, &top, &rng, rnd(&rng) & 1);
      atomic_store(&b->blocked, 0);
      r = hark_unblock(signals[0], mt_rx, b, w->sender);
      if (r != 0)
        bad_result("hark_unblock (private)", r);
    } else if (op < 64) { /* block or unblock a shared one */
      mt_obj *x = slot_get(rnd(&rng));
      if (x != NULL && x->conn_sender != NULL && x->conn_sender != w->sender) {
        int r = (rnd(&rng) & 1)
                    ? hark_block(signals[x->sig], mt_rx, x, x->conn_sender)
                    : hark_unblock(signals[x->sig], mt_rx, x, x->conn_sender);
        if (r != 0 && r != HARK_ENOENT && r != HARK_ERANGE)
          bad_result("hark_block/unblock", r);
      }
      hark_unref(x);
    } else if (op < 74) { /* drop a slot's reference */
      slot_put(rnd(&rng), NULL, rnd(&rng) & 1);
    } else if (op < 80) { /* a new object that only sends */
      mt_obj *o = obj_new();
      if (o != NULL)
        slot_put(rnd(&rng), o, false);
    } else if (op < 88) { /* weak-key map */
      mt_obj *k = slot_get(rnd(&rng));
      if (k != NULL) {
        unsigned how = rnd(&rng) % 3;
        if (how == 0) {
          value *v = value_new();
          int r = hark_weakmap_set(map, k, v);
          if (r == 0)
            atomic_fetch_add(&values_set, 1);
          else {
            bad_result("hark_weakmap_set", r);
            free(v);
          }
        } else if (how == 1) {
          int r = hark_weakmap_remove(map, k);
          if (r != 0 && r != 1)
            bad_result("hark_weakmap_remove", r);
        } else {
          value *v = hark_weakmap_get(map, k);
          if (v != NULL) {
            sched_yield(); /* others may remove or replace it meanwhile */
            value_unref(v);
          }
        }
        (void)hark_weakmap_size(map);
        hark_unref(k);
      }
    } else if (op < 94) { /* listeners, sweeping */
      int s = (int)(rnd(&rng) % SIGNALS);
      (void)hark_has_listeners(signals[s], (rnd(&rng) & 1) ? w->sender : NULL);
      (void)hark_signal_sweep(signals[s]);
    } else if (op < 97) {
      shared_weak_op(&rng);
    } else { /* a weak reference of one's own */
      hark_weak wk = HARK_WEAK_INIT;
      mt_obj *x = slot_get(rnd(&rng));
      if (x != NULL) {
        int r = hark_weak_set(&wk, x);
        if (r != 0)
          bad_result("hark_weak_set", r);
        hark_unref(x);
        hark_unref(hark_weak_get(&wk)); /* may race with the last unref */
        hark_weak_clear(&wk);
      }
    }
  }
  return NULL;
}

static void run_seed(void) {
  atomic_store(&pool_used, 0);
  atomic_store(&calls, 0);
  atomic_store(&values_set, 0);
  atomic_store(&values_freed, 0);
  memset(recent, 0, sizeof recent);
  /* each operation makes at most one object, each receiver call one,
   * and receiver calls are bounded by the work: a generous pool, and
   * creation simply stops if it runs out */
  pool_size = THREADS * iterations * 4 + 64;
  pool = calloc((size_t)pool_size, sizeof *pool);
  ck_assert_ptr_nonnull(pool);

  for (int i = 0; i < SIGNALS; i++) {
    signals[i] = hark_signal_new("mt-model");
    ck_assert_ptr_nonnull(signals[i]);
    hark_signal_set_max_receivers(signals[i], 0); /* dead ones pile up */
  }
  hark_weakmap_ops ops = {value_unref, value_ref, NULL};
  map = hark_weakmap_new_ops(&ops);
  ck_assert_ptr_nonnull(map);

  worker_arg args[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i].id = i;
    args[i].sender = obj_new();
    args[i].blocked = obj_new();
    ck_assert_ptr_nonnull(args[i].blocked);
    args[i].blocked->sig = 0;
    args[i].blocked->conn_sender = args[i].sender;
    ck_assert_int_eq(
        hark_connect(signals[0], mt_rx, args[i].blocked, args[i].sender, 0), 0);
  }
  pthread_t th[THREADS];
  ck_assert_int_eq(pthread_barrier_init(&start, NULL, THREADS), 0);
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(pthread_create(&th[i], NULL, worker, &args[i]), 0);
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(pthread_join(th[i], NULL), 0);
  pthread_barrier_destroy(&start);

  for (int i = 0; i < SLOTS; i++) {
    slot_put((unsigned)i, NULL, false);
  }
  for (int i = 0; i < SHARED_WEAK; i++)
    hark_weak_clear(&shared_weak[i]);
  for (int i = 0; i < THREADS; i++) {
    hark_unref(args[i].blocked);
    hark_unref(args[i].sender);
  }
  hark_weakmap_free(map);
  for (int i = 0; i < SIGNALS; i++)
    hark_unref(signals[i]);

  ck_assert_int_eq(atomic_load(&violations), 0);
  ck_assert_int_eq(atomic_load(&unexpected), 0);
  ck_assert_int_gt(atomic_load(&calls), 0);
  int made = atomic_load(&pool_used);
  if (made > pool_size)
    made = pool_size;
  for (int i = 0; i < made; i++) {
    ck_assert_msg(atomic_load(&pool[i].finalized) == 1,
                  "object %d finalized %d times", i,
                  atomic_load(&pool[i].finalized));
    ck_assert_int_eq(atomic_load(&pool[i].state), ST_FINALIZED);
  }
  ck_assert_int_eq(atomic_load(&values_freed), atomic_load(&values_set));
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), 0);
  printf("model-mt: seed %lu: %d threads x %d operations, %d objects, %ld "
         "receiver calls, %ld weak-map values\n",
         seed, THREADS, iterations, made, atomic_load(&calls),
         atomic_load(&values_set));
  free(pool);
}

START_TEST(four_threads_keep_every_invariant) {
  test_alloc_install();
  const char *env = getenv("HARK_MT_ITERS");
  iterations =
      env != NULL && atoi(env) > 0 ? atoi(env) : (int)test_scaled(iterations);
  const char *fixed = getenv("HARK_SEED");
  if (fixed != NULL) {
    seed = strtoul(fixed, NULL, 0);
    run_seed();
    return;
  }
  const char *n = getenv("HARK_MT_SEEDS");
  unsigned long seeds = n != NULL && atoi(n) > 0 ? (unsigned long)atoi(n) : 3;
  for (seed = 1; seed <= seeds; seed++)
    run_seed();
}
END_TEST

int main(void) {
  Suite *s = suite_create("model-mt");
  TCase *tc = tcase_create("model-mt");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, four_threads_keep_every_invariant);
  suite_add_tcase(s, tc);
  return test_run(s);
}
