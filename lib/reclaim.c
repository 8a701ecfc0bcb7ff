/* Per-thread records, hazard pointers and the reclamation of hark's own
 * memory (see internal.h for the scheme).
 *
 * Why it is safe, in brief. A reader stores a hazard H = p and then
 * re-reads the location L it found p in; a writer first unlinks p from L
 * and only later, in hark__reclaim(), issues a barrier and reads every
 * hazard. membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) makes every other
 * running thread of the process execute a full memory barrier before it
 * returns, so for each reader one of two things holds: its store of H was
 * done before that barrier (the writer's scan sees it and keeps p), or its
 * re-read of L comes after it (it sees p unlinked and retries). p is freed
 * only when no hazard names it. The same argument, with the epoch as L,
 * covers a receiver object and its last reference (hark__hand_over).
 *
 * Progress. Nothing waits for a send. A retired item that a hazard names
 * stays on the pending list and the thread owning that hazard is kicked:
 * it calls hark__reclaim() when its walk ends. A thread that sends forever
 * delays only the one list it walks. */
#include "internal.h"

#include <linux/membarrier.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

_Thread_local hark__thr hark__me __attribute__((tls_model("initial-exec")));
bool hark__fenced;

/* ---- the registry of threads ---------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static hark__thr *threads;
static _Atomic unsigned nthreads;

static void thr_exit(void *arg);

static pthread_mutex_t pend_lock = PTHREAD_MUTEX_INITIALIZER; /* below */

/* fork() in a threaded program: the child has one thread, but the
 * registry still names the others' records (their hazards would hold
 * memory for ever) and a lock of ours might be held by one of them. The
 * locks are taken across the fork, and the child keeps only itself. */
static void fork_prepare(void) {
  pthread_mutex_lock(&reg_lock);
  pthread_mutex_lock(&pend_lock);
}

static void fork_parent(void) {
  pthread_mutex_unlock(&pend_lock);
  pthread_mutex_unlock(&reg_lock);
}

static void fork_child(void) {
  hark__thr *me = &hark__me;
  threads = NULL;
  atomic_store(&nthreads, 0);
  if (me->registered) {
    me->next = me->prev = NULL;
    threads = me;
    atomic_store(&nthreads, 1);
  }
  pthread_mutex_unlock(&pend_lock);
  pthread_mutex_unlock(&reg_lock);
}

static void init(void) {
  if (pthread_key_create(&exit_key, thr_exit) != 0 ||
      pthread_atfork(fork_prepare, fork_parent, fork_child) != 0) {
    hark__log(HARK_LOG_ERROR, "pthread_key_create or pthread_atfork failed");
    abort();
  }
  long mask = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if ((hark__debug() & HARK__DEBUG_FENCES) || mask < 0 ||
      !(mask & MEMBARRIER_CMD_PRIVATE_EXPEDITED) ||
      syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0,
              0) != 0)
    hark__fenced = true;
}

void hark__thr_register(hark__thr *me) {
  pthread_once(&init_once, init);
  pthread_mutex_lock(&reg_lock);
  me->prev = NULL;
  me->next = threads;
  if (threads != NULL)
    threads->prev = me;
  threads = me;
  atomic_fetch_add(&nthreads, 1);
  me->registered = true;
  pthread_mutex_unlock(&reg_lock);
  /* only to be told when the thread exits: the record is static TLS */
  pthread_setspecific(exit_key, me);
}

/* The thread is leaving: it is in no send, so its hazards are clear; the
 * registry lock keeps any thread that is reading them out of its memory
 * while it goes. What waited for it is freed now. */
static void thr_exit(void *arg) {
  hark__thr *me = arg;
  pthread_mutex_lock(&reg_lock);
  if (me->prev != NULL)
    me->prev->next = me->next;
  else
    threads = me->next;
  if (me->next != NULL)
    me->next->prev = me->prev;
  me->next = me->prev = NULL;
  atomic_fetch_sub(&nthreads, 1);
  me->registered = false;
  pthread_mutex_unlock(&reg_lock);
  for (unsigned i = 0; i < HARK__LEVELS; i++)
    hark__settle(&me->hz[i]);
  hark__reclaim();
}

/* True when no registered thread but the caller can hold a hazard. Read
 * after a full fence (or a locked instruction) by the caller: a thread
 * that registers later reads, after its registration, what the caller
 * wrote before. */
static bool alone(const hark__thr *me) {
  return atomic_load(&nthreads) <= (me->registered ? 1u : 0u);
}

/* The asymmetric barrier (see the top of this file). Registry lock held,
 * so the set of threads it must cover cannot grow meanwhile. */
static void barrier(const hark__thr *me) {
  if (alone(me))
    return;
  if (hark__fenced ||
      syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
    hark__full_fence();
}

/* ---- retiring and reclaiming ------------------------------------------ */

#define PENDING_ITEMS 64
#define PENDING_BYTES (1u << 20)

static hark__retired *pending;
static _Atomic size_t pend_items; /* read without the lock by retire */
static size_t pend_bytes;

static bool names(const hark__thr *t, const void *item) {
  for (unsigned i = 0; i < HARK__LEVELS; i++) {
    const hark__hazard *h = &t->hz[i];
    if (atomic_load_explicit(&h->list, memory_order_acquire) == item ||
        atomic_load_explicit(&h->tab, memory_order_acquire) == item)
      return true;
  }
  return false;
}

/* The thread whose hazard names item, or NULL (registry lock held). */
static hark__thr *namer(const void *item) {
  for (hark__thr *t = threads; t != NULL; t = t->next)
    if (names(t, item))
      return t;
  return NULL;
}

static void run_all(hark__retired *list) {
  while (list != NULL) {
    hark__retired *next = list->next;
    list->fn(list->item);
    list = next;
  }
}

static void put_back(hark__retired *list) {
  if (list == NULL)
    return;
  hark__retired *last = list;
  size_t n = 1, bytes = list->bytes;
  while (last->next != NULL) {
    last = last->next;
    n++;
    bytes += last->bytes;
  }
  pthread_mutex_lock(&pend_lock);
  last->next = pending;
  pending = list;
  atomic_fetch_add(&pend_items, n);
  pend_bytes += bytes;
  pthread_mutex_unlock(&pend_lock);
}

void hark__reclaim(void) {
  hark__thr *me = &hark__me;
  atomic_store_explicit(&me->kick, 0, memory_order_relaxed);
  pthread_mutex_lock(&pend_lock);
  hark__retired *list = pending;
  pending = NULL;
  atomic_store(&pend_items, 0);
  pend_bytes = 0;
  pthread_mutex_unlock(&pend_lock);
  if (list == NULL)
    return;

  hark__retired *dead = NULL, *kept = NULL;
  bool others_kept = false;
  pthread_mutex_lock(&reg_lock);
  barrier(me);
  while (list != NULL) {
    hark__retired *next = list->next;
    hark__thr *t = namer(list->item);
    if (t == NULL) {
      list->next = dead;
      dead = list;
    } else {
      atomic_store(&t->kick, 1);
      others_kept |= t != me;
      list->next = kept;
      kept = list;
    }
    list = next;
  }
  /* A namer may have let go and looked at its kick before we set it:
   * after a second barrier, what it let go is seen let go. */
  if (others_kept) {
    barrier(me);
    hark__retired **p = &kept;
    while (*p != NULL) {
      hark__retired *r = *p;
      if (namer(r->item) == NULL) {
        *p = r->next;
        r->next = dead;
        dead = r;
      } else {
        p = &r->next;
      }
    }
  }
  pthread_mutex_unlock(&reg_lock);
  run_all(dead);
  put_back(kept);
}

void hark__retire(hark__retired *r) {
  hark__thr *me = &hark__me;
  /* orders the caller's unlinking before the load in alone() */
  hark__full_fence();
  if (alone(me) && !names(me, r->item) &&
      atomic_load_explicit(&pend_items, memory_order_relaxed) == 0) {
    r->fn(r->item);
    return;
  }
  pthread_mutex_lock(&pend_lock);
  r->next = pending;
  pending = r;
  pend_bytes += r->bytes;
  bool full = atomic_fetch_add(&pend_items, 1) + 1 >= PENDING_ITEMS ||
              pend_bytes >= PENDING_BYTES;
  pthread_mutex_unlock(&pend_lock);
  if (full || alone(me))
    hark__reclaim();
}

/* ---- receiver objects: the reference a send holds for a call ---------- */

/* The owner takes its whole stack under the registry lock: a hand-over
 * in progress (which holds it) then sees the stack only grow, by the
 * owner's own pushes, never shrink under it, and may take its push back
 * without touching memory the owner has freed meanwhile. Rare: the stack
 * is empty unless something was handed over. */
void hark__take_owed(hark__hazard *hz) {
  pthread_mutex_lock(&reg_lock);
  hark__ctrl *c = atomic_exchange(&hz->owed, NULL);
  pthread_mutex_unlock(&reg_lock);
  while (c != NULL) {
    hark__ctrl *next = c->owed_next;
    hark__ctrl_unref(c);
    c = next;
  }
}

/* Pushes c on hz's owed stack. Two kinds of pushers: the owner itself
 * (hark__hand_over_own, no lock) and another thread's hand-over (under the
 * registry lock, one at a time). */
static void push_owed(hark__hazard *hz, hark__ctrl *c) {
  hark__ctrl *head = atomic_load(&hz->owed);
  do
    c->owed_next = head;
  while (!atomic_compare_exchange_weak(&hz->owed, &head, c));
}

/* Takes c, pushed by this hand-over, out of hz's stack again (registry
 * lock held: the owner cannot have taken it, see hark__take_owed). The
 * owner may have pushed on top meanwhile, and may still: only the head
 * moves under us, the links below it never do. */
static void take_back(hark__hazard *hz, hark__ctrl *c) {
  for (;;) {
    hark__ctrl *head = atomic_load(&hz->owed);
    if (head == c) {
      if (atomic_compare_exchange_strong(&hz->owed, &head, c->owed_next))
        return;
      continue;
    }
    hark__ctrl *p = head;
    while (p->owed_next != c)
      p = p->owed_next;
    p->owed_next = c->owed_next;
    return;
  }
}

/* Our own sends see our stores in order and run no code meanwhile: no
 * barrier, no lock. The outermost level that holds obj takes it, so that
 * it goes when the last of those sends lets go. */
bool hark__hand_over_own(hark__thr *me, hark__ctrl *c) {
  void *obj = c->obj;
  unsigned n = me->depth < HARK__LEVELS ? me->depth : HARK__LEVELS;
  for (unsigned i = 0; i < n; i++) {
    if (me->hz[i].sig == obj || me->hz[i].sender == obj ||
        atomic_load_explicit(&me->hz[i].obj, memory_order_relaxed) == obj) {
      push_owed(&me->hz[i], c);
      return true;
    }
  }
  return false;
}

bool hark__hand_over(hark__ctrl *c) {
  hark__thr *me = &hark__me;
  void *obj = c->obj;
  /* alone: only our own sends could be calling obj, and drop() has
   * already offered it to them */
  if (alone(me))
    return false;
  bool handed = false;
  pthread_mutex_lock(&reg_lock);
  barrier(me);
  for (hark__thr *t = threads; t != NULL && !handed; t = t->next) {
    for (unsigned i = 0; i < HARK__LEVELS && !handed; i++) {
      hark__hazard *hz = &t->hz[i];
      if (atomic_load_explicit(&hz->obj, memory_order_acquire) != obj)
        continue;
      if (t == me)
        continue; /* drop() offered it to our own sends already */
      push_owed(hz, c);
      /* The call may have ended and its owner looked at owed before our
       * push: after a barrier, either it still calls obj (and will find
       * the reference) or we see that it stopped and take ours back. */
      barrier(me);
      if (atomic_load_explicit(&hz->obj, memory_order_acquire) == obj)
        handed = true;
      else
        take_back(hz, c);
    }
  }
  pthread_mutex_unlock(&reg_lock);
  return handed;
}
