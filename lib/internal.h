/* What the layers of hark share. Nothing here is exported. */
#ifndef HARK_INTERNAL_H
#define HARK_INTERNAL_H

#include "hark.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Everything declared here is the library's own: the compiler may then
 * reach globals and functions directly, not through the GOT or PLT. */
#pragma GCC visibility push(hidden)

#define HARK__CONTAINER_OF(ptr, type, field)                                   \
  ((type *)((char *)(ptr)-offsetof(type, field)))

/* ThreadSanitizer (gcc) rejects atomic_thread_fence: a read-modify-write
 * of a thread's own word is a full barrier on the machine all the same. */
#if defined(__SANITIZE_THREAD__)
#define HARK__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HARK__TSAN 1
#endif
#endif

static inline void hark__full_fence(void) {
#ifdef HARK__TSAN
  static _Thread_local _Atomic int word;
  atomic_fetch_add(&word, 0);
#else
  atomic_thread_fence(memory_order_seq_cst);
#endif
}

#define HARK__LIKELY(x) __builtin_expect(!!(x), 1)
#define HARK__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A 64-bit finalizer (MurmurHash3's): spreads addresses and hashes over
 * every bit, for the open-addressing tables of signal.c, weakmap.c and
 * leaks.c. */
static inline size_t hark__mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return (size_t)x;
}

static inline size_t hark__hash_ptr(const void *p) {
  return hark__mix((uintptr_t)p);
}

/* ---- alloc.c -------------------------------------------------------- */
void *hark__malloc(size_t size);
void *hark__calloc(size_t count, size_t size);
void *hark__realloc(void *ptr, size_t size);
void hark__free(void *ptr);
char *hark__strdup(const char *s);

/* ---- the log hook (error.c) ------------------------------------------ */
/* Formats and hands a message to the log function. No hark lock may be
 * held: the function is the user's code. */
void hark__log(hark_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- debug switches (tracker.c reads HARK_DEBUG once) --------------- */
#define HARK__DEBUG_LEAKS 1u
#define HARK__DEBUG_RECEIVERS 2u
#define HARK__DEBUG_FENCES 4u /* senders fence instead of membarrier */
unsigned hark__debug(void);

/* ---- objects (object.c) ---------------------------------------------- */
/* The control block: outlives the object's memory while weak references
 * (hark_weak, connections, queued calls) point at it. */
typedef struct hark__ctrl {
  _Atomic long strong; /* 0: dead, never upgrades again */
  _Atomic long weak;   /* +1 for the strong group until finalize */
  void *obj;           /* the object, valid while not finalized */
  const hark_type *type;
  hark_notify *notify_head;     /* guarded by the ctrl's stripe lock */
  _Atomic unsigned flags;       /* HARK__CTRL_* */
  unsigned slot;                /* tracker slot */
  struct hark__ctrl *owed_next; /* in a hazard's owed stack (reclaim.c) */
  size_t traced; /* its index among traversable objects (leaks.c) */
} hark__ctrl;

#define HARK__CTRL_DYING 1u    /* death notifications have started */
#define HARK__CTRL_RECEIVER 2u /* connected as a receiver: see kill_last() */

static inline hark__ctrl *hark__ctrl_of(const void *obj) {
  return ((const hark_object *)obj)->hark_private_;
}
static inline bool hark__ctrl_alive(hark__ctrl *c) {
  return atomic_load(&c->strong) > 0;
}
/* The weak interface (weak.c, and whatever holds an object weakly):
 * what a weak reference may do with a control block. */
void hark__ctrl_weak_acquire(hark__ctrl *c);
void hark__ctrl_weak_release(hark__ctrl *c);
/* Returns a new strong reference to c's object, or NULL if it died. */
void *hark__ctrl_upgrade(hark__ctrl *c);
/* Drops a strong reference through its control block. */
void hark__ctrl_unref(hark__ctrl *c);

/* ---- per-thread state and reclamation (reclaim.c) --------------------
 *
 * Every thread that sends has one record, in static thread-local storage
 * (no allocation), linked into a registry while the thread lives. A send
 * publishes in it, per nesting level, what it is reading right now:
 *
 *   tab   the sender table it is searching;
 *   list  the receiver list it is walking;
 *   obj   the receiver object whose function it is calling.
 *
 * These are hazard pointers. Memory that a writer unlinks (tables, lists)
 * is retired with hark__retire() and freed only once no record names it;
 * a record that names it is told (kick) and the thread frees it when its
 * walk ends. A thread inside a long receiver therefore delays only the
 * list it walks, never anything else.
 *
 * obj stands for a strong reference the send holds on the receiver's
 * object for the call, without touching the object's count: the thread
 * that would drop the last counted reference looks for it first (kill_last()
 * in object.c) and, if a send is calling that object, hands its reference
 * over to that send ("owed"), which drops it after the call, on the
 * sending thread. So an object's death never overlaps its own receiver.
 *
 * Ordering. A send stores a hazard and then reads the location it came
 * from (or the epoch) with no fence of its own; the thread that frees or
 * kills issues the fence for everyone with membarrier(2) (an asymmetric
 * fence: every running thread of the process executes a full barrier)
 * before it reads the records. Where membarrier is missing the senders
 * fence themselves (hark__fenced). With one registered thread no fence is
 * needed at all: a thread sees its own stores in order. */
#define HARK__LEVELS 8 /* nesting levels with hazards; deeper sends lock */

typedef struct hark__hazard {
  void *_Atomic tab;
  void *_Atomic list;
  void *_Atomic obj;
  hark__ctrl *_Atomic owed; /* a reference handed over for obj */
  /* this thread only; see below */
  void *sig, *sender;
} hark__hazard;

/* A send also keeps its signal and its sender alive without touching
 * their counts: it records them at its level (sig, sender above, valid
 * while the level is below depth), and a last unref on this thread of an
 * object a send of this thread holds is handed over to that send's level
 * like a receiver's (drop() in object.c), and paid when the send ends.
 * (Another thread cannot drop the last reference: the caller of a send
 * holds one, as the contract requires.) */
typedef struct hark__thr {
  /* this thread only */
  unsigned depth; /* nested sends */
  bool registered;
  /* read by other threads (under the registry lock), but sig/sender */
  hark__hazard hz[HARK__LEVELS];
  _Atomic int kick; /* a retired item waits for one of our hazards */
  struct hark__thr *next, *prev;
} hark__thr;

/* initial-exec: a send must not pay a __tls_get_addr call */
extern _Thread_local hark__thr hark__me
    __attribute__((tls_model("initial-exec")));

/* The senders fence after storing a hazard (no membarrier here). */
extern bool hark__fenced;

void hark__thr_register(hark__thr *me);

static inline hark__thr *hark__self(void) {
  hark__thr *me = &hark__me;
  if (HARK__UNLIKELY(!me->registered))
    hark__thr_register(me);
  return me;
}

/* Between storing a hazard and re-reading what it protects. */
static inline void hark__hazard_fence(void) {
  if (HARK__UNLIKELY(hark__fenced))
    hark__full_fence();
  else
    atomic_signal_fence(memory_order_seq_cst);
}

/* Something retired: freed by fn(item) once no hazard names item. */
typedef struct hark__retired {
  struct hark__retired *next;
  void *item;
  size_t bytes;
  void (*fn)(void *item);
} hark__retired;

void hark__retire(hark__retired *r);
/* Frees what no hazard names any longer (a thread kicked calls this). */
void hark__reclaim(void);

/* Kicked: an item retired while we named it waits for us. */
static inline void hark__check_kick(hark__thr *me) {
  if (HARK__UNLIKELY(atomic_load_explicit(&me->kick, memory_order_relaxed)))
    hark__reclaim();
}

/* Drops a reference handed over to this level's receiver call, if any
 * (the level's obj hazard must already be cleared). */
void hark__take_owed(hark__hazard *hz);
static inline void hark__settle(hark__hazard *hz) {
  if (HARK__UNLIKELY(atomic_load_explicit(&hz->owed, memory_order_relaxed) !=
                     NULL))
    hark__take_owed(hz);
}

/* kill_last() (object.c): a send on another thread is calling obj right
 * now; if so hands the caller's reference (c's last) over to it and
 * returns true. Takes the registry lock. */
bool hark__hand_over(hark__ctrl *c);

/* Moves whenever a receiver may have stopped being callable: a receiver
 * dies (twice: see kill_last()), or a connection of any signal is removed,
 * blocked or unblocked. A send that sees it unchanged since it started,
 * on a list validated at that value, needs no per-receiver check (see
 * walk() in signal.c). Monotonic. Written rarely, read by every send. */
extern _Atomic unsigned long hark__epoch;
/* Receivers whose death is being decided (kill_last() in object.c): while it
 * is not zero no list is marked valid. */
extern _Atomic unsigned long hark__killing;

/* Counts deaths of objects that had been connected as receivers: the
 * loop sweeps when it changes. */
extern _Atomic unsigned long hark__dead_receivers;

/* Hands c's last reference over to a send of this thread that holds c's
 * object (as signal, sender or receiver being called), if any. */
bool hark__hand_over_own(hark__thr *me, hark__ctrl *c);

/* hark_ref/hark_unref for objects the library knows to be alive. */
static inline void hark__ref(void *obj) {
  atomic_fetch_add(&hark__ctrl_of(obj)->strong, 1);
}
void hark__unref(void *obj);

/* ---- tracker.c -------------------------------------------------------- */
unsigned hark__tracker_add(const hark_type *type);
void hark__tracker_remove(unsigned slot);

/* ---- leaks.c ------------------------------------------------------------ */
/* Objects whose type has a traverse function are indexed, so that the leak
 * finder can examine them: at init (HARK_ENOMEM possible) and at death. */
int hark__leaks_track(hark__ctrl *c);
void hark__leaks_untrack(hark__ctrl *c);

/* ---- weakmap.c (for leaks.c and tracker.c) ------------------------------ */
/* Calls fn for each entry of every live map, under that map's lock (fn
 * must not call the map). Stops at fn's first non-zero return, and
 * returns it (0 after all entries). */
typedef int (*hark__entry_fn)(
    void *ctx, hark_weakmap *m, hark__ctrl *key, void *value,
    void (*value_traverse)(void *value, hark_visit_fn visit, void *arg));
int hark__weakmaps_each(hark__entry_fn fn, void *ctx);
/* Live maps and entries, and their bytes. */
void hark__weakmap_counts(long *maps, long *map_bytes, long *entries,
                          long *entry_bytes);

/* ---- signal.c (for loop.c) ------------------------------------------ */
/* Depth of nested sends on this thread (0 outside any send). */
static inline unsigned hark__send_depth(void) { return hark__me.depth; }
/* Drops dead receivers of every live signal; returns how many. */
size_t hark__signal_sweep_all(void);

/* ---- dispatchers (signal.c; loop.c provides one) ---------------------
 * A receiver may be bound to a dispatcher: an object (target) that says
 * where the receiver must run. The signal layer calls it directly when
 * is_current(target) is true, else hands the call to queue_call(target,
 * ...), which runs fn(self, sender, args) there later: self_ctrl and
 * sender_ctrl (either may be NULL) are checked alive before the call and
 * held weakly meanwhile; args_free(args) runs once afterwards or when the
 * call is dropped; hold, if not NULL, is a strong reference the queued
 * call takes over. queue_call returns 0, or a HARK_E* with args and hold
 * still the caller's. The signal layer knows nothing else of the target
 * (a hark loop): the layers depend one way, loop on signal. */
typedef struct hark__dispatch {
  bool (*is_current)(void *target);
  int (*queue_call)(void *target, hark_receiver_fn fn, hark__ctrl *self_ctrl,
                    hark__ctrl *sender_ctrl, void *hold, void *args,
                    void (*args_free)(void *));
} hark__dispatch;

/* hark_connect for a receiver bound to a dispatcher; target (a live hark
 * object) is held strongly by the connection. Returns as hark_connect. */
int hark__connect_dispatched(hark_signal *sig, const hark__dispatch *disp,
                             void *target, hark_receiver_fn fn, void *self,
                             void *sender, unsigned flags);

#pragma GCC visibility pop

#endif /* HARK_INTERNAL_H */
