/* What the layers of hark share. Nothing here is exported. */
#ifndef HARK_INTERNAL_H
#define HARK_INTERNAL_H

#include "hark.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define HARK__CONTAINER_OF(ptr, type, field)                                   \
  ((type *)((char *)(ptr)-offsetof(type, field)))

/* ---- alloc.c -------------------------------------------------------- */
void *hark__malloc(size_t size);
void *hark__calloc(size_t count, size_t size);
void *hark__realloc(void *ptr, size_t size);
void hark__free(void *ptr);
char *hark__strdup(const char *s);

/* ---- debug switches (tracker.c reads HARK_DEBUG once) --------------- */
#define HARK__DEBUG_LEAKS 1u
#define HARK__DEBUG_RECEIVERS 2u
unsigned hark__debug(void);

/* ---- deferred reclamation (object.c) -------------------------------
 * A send reads receiver arrays, connections and receiver objects without
 * taking a lock or a reference per receiver. What it may be reading is
 * never freed under it: memory unlinked by a writer, and objects that die,
 * are handed to hark__retire(), which runs their release function at once
 * if no send is in flight anywhere, else when the in-flight count next
 * drops to zero. Sends bracket their reads with hark__enter/hark__leave. */
typedef struct hark__retired {
  struct hark__retired *next;
  void (*fn)(struct hark__retired *r);
} hark__retired;

extern _Atomic long hark__inflight;
extern hark__retired *_Atomic hark__retired_list;
void hark__drain(void);

/* Inline: a send pays these once each, and a call through the PLT would
 * cost as much as the atomic itself. */
static inline void hark__enter(void) { atomic_fetch_add(&hark__inflight, 1); }
static inline void hark__leave(void) {
  if (atomic_fetch_sub(&hark__inflight, 1) == 1 &&
      atomic_load(&hark__retired_list) != NULL)
    hark__drain();
}
void hark__retire(hark__retired *r);
/* Bracket a library lock: reclaiming due meanwhile waits for unhold. */
void hark__hold(void);
void hark__unhold(void);

/* ---- objects (object.c) ---------------------------------------------- */
/* The control block: outlives the object's memory while weak references
 * (hark_weak, connections, notifications in flight) point at it. */
typedef struct hark__ctrl {
  _Atomic long strong; /* 0: dead, never upgrades again */
  _Atomic long weak;   /* +1 for the strong group until finalize */
  void *obj;           /* the object, valid while not finalized */
  const hark_type *type;
  hark_notify *notify_head; /* guarded by the ctrl's stripe lock */
  hark__retired retire;     /* deferred finalize */
  _Atomic unsigned flags;   /* HARK__CTRL_* */
  unsigned slot;            /* tracker slot */
} hark__ctrl;

#define HARK__CTRL_DYING 1u    /* death notifications have started */
#define HARK__CTRL_RECEIVER 2u /* was connected as a weak receiver */

static inline hark__ctrl *hark__ctrl_of(const void *obj) {
  return ((const hark_object *)obj)->hark_private_;
}
static inline bool hark__ctrl_alive(hark__ctrl *c) {
  return atomic_load(&c->strong) > 0;
}
/* Locks and returns the stripe lock guarding c's notification list. */
#include <pthread.h>
pthread_mutex_t *hark__ctrl_lock(const hark__ctrl *c);
void hark__ctrl_weak_acquire(hark__ctrl *c);
void hark__ctrl_weak_release(hark__ctrl *c);
/* Returns a new strong reference to c's object, or NULL if it died. */
void *hark__ctrl_upgrade(hark__ctrl *c);
/* The object's death: notifications, then (deferred) finalize. */
void hark__die(hark__ctrl *c);

/* Pins: a send keeps its signal and its sender alive without touching
 * their counts. It pins them on its thread; an unref of a pinned object
 * on this thread is owed to the outermost send that pinned it, and paid
 * when that send ends. The count never reaches zero meanwhile, so weak
 * references and hark_ref behave as if the send held a reference.
 * (Another thread cannot bring it to zero either: the caller of the send
 * holds a reference, as the contract requires.) */
#define HARK__PINS 16
typedef struct hark__pin {
  void *obj;
  unsigned owed;
} hark__pin;
extern _Thread_local hark__pin hark__pins[HARK__PINS]
    __attribute__((tls_model("initial-exec")));
extern _Thread_local unsigned hark__npins
    __attribute__((tls_model("initial-exec")));

/* If a send on this thread pinned obj, owes it this unref and says so. */
static inline bool hark__pin_owe(void *obj) {
  unsigned n = hark__npins;
  for (unsigned i = 0; i < n; i++) {
    if (hark__pins[i].obj == obj) {
      hark__pins[i].owed++;
      return true;
    }
  }
  return false;
}

/* hark_ref/hark_unref for objects the library knows to be alive. */
static inline void hark__ref(void *obj) {
  atomic_fetch_add(&hark__ctrl_of(obj)->strong, 1);
}
static inline void hark__unref(void *obj) {
  if (hark__npins != 0 && hark__pin_owe(obj))
    return;
  hark__ctrl *c = hark__ctrl_of(obj);
  if (atomic_fetch_sub(&c->strong, 1) == 1)
    hark__die(c);
}

/* Counts deaths of objects that had been connected as weak receivers:
 * the loop sweeps when it changes. */
extern _Atomic unsigned long hark__dead_receivers;

/* Moves whenever a receiver may have stopped being callable: a weak
 * receiver dies, or a connection of any signal is removed, blocked or
 * unblocked. A send that sees it unchanged since it started needs no
 * per-receiver check (see walk() in signal.c). Monotonic. */
extern _Atomic unsigned long hark__epoch;

/* ---- tracker.c -------------------------------------------------------- */
unsigned hark__tracker_add(const hark_type *type);
void hark__tracker_remove(unsigned slot);

/* ---- signal.c (for loop.c) ------------------------------------------ */
/* Depth of nested sends on this thread (0 outside any send). */
unsigned hark__send_depth(void);
/* Drops dead receivers of every live signal; returns how many. */
size_t hark__signal_sweep_all(void);

/* ---- loop.c (for signal.c) ------------------------------------------- */
/* True when the calling thread is hl's loop thread. */
bool hark__loop_is_current(hark_loop *hl);
/* Queues a call fn(self, sender, args) on hl's thread. self_ctrl and
 * sender_ctrl (either may be NULL) are checked alive before the call and
 * held weakly meanwhile; args_free(args) runs once afterwards or when the
 * call is dropped. hold, if not NULL, is a strong reference the queued
 * call takes over and drops after the call or when the call is dropped.
 * Returns 0, HARK_ENOMEM, HARK_EAGAIN, HARK_ECANCELED; on failure args
 * and hold stay the caller's. */
int hark__loop_queue_call(hark_loop *hl, hark_receiver_fn fn,
                          hark__ctrl *self_ctrl, hark__ctrl *sender_ctrl,
                          void *hold, void *args, void (*args_free)(void *));

#endif /* HARK_INTERNAL_H */
