/* Weak references. They see an object only through its control block's
 * weak interface (internal.h): acquire, release, upgrade, alive. */
#include "internal.h"

#include <sched.h>

/* ---- weak references --------------------------------------------------
 * Like GWeakRef, one hark_weak may be read and written from any threads
 * at once. Its word holds the control block's address with the low bit
 * as a lock: a get holds it only while it upgrades, and a set or clear
 * only while it swaps the address. So a get never reads a control block
 * whose weak count another thread's set has just dropped; the bit is
 * never held across user code, a free or another lock. */

#define WLOCK ((uintptr_t)1)

/* The one field, accessed atomically (with its own pointer type, so that
 * no alias of another type is made). */
static hark__ctrl **word(const hark_weak *w) {
  return &((hark_weak *)w)->hark_private_;
}

static uintptr_t bits(hark__ctrl *p) { return (uintptr_t)p; }

static uintptr_t wload(const hark_weak *w) {
  return bits(__atomic_load_n(word(w), __ATOMIC_ACQUIRE));
}

/* Takes the lock bit; returns the control block (or NULL) it guards. */
static hark__ctrl *wlock(const hark_weak *w) {
  hark__ctrl **p = word(w);
  hark__ctrl *v = __atomic_load_n(p, __ATOMIC_RELAXED);
  for (unsigned spins = 0;; spins++) {
    if (!(bits(v) & WLOCK)) {
      hark__ctrl *locked = (hark__ctrl *)(bits(v) | WLOCK);
      if (__atomic_compare_exchange_n(p, &v, locked, true, __ATOMIC_ACQUIRE,
                                      __ATOMIC_RELAXED))
        return v;
    } else {
      if (spins > 64)
        sched_yield(); /* the holder was preempted */
      v = __atomic_load_n(p, __ATOMIC_RELAXED);
    }
  }
}

static void wunlock(const hark_weak *w, hark__ctrl *c) {
  __atomic_store_n(word(w), c, __ATOMIC_RELEASE);
}

int hark_weak_set(hark_weak *w, void *obj) {
  if (w == NULL)
    return HARK_EINVAL;
  hark__ctrl *c = NULL;
  int err = 0;
  if (obj != NULL) {
    c = hark__ctrl_of(obj);
    if (c == NULL || !hark__ctrl_alive(c)) {
      c = NULL;
      err = HARK_ENOENT;
    } else {
      hark__ctrl_weak_acquire(c);
    }
  }
  hark__ctrl *old = wlock(w);
  wunlock(w, c);
  if (old != NULL)
    hark__ctrl_weak_release(old);
  return err;
}

void *hark_weak_get(const hark_weak *w) {
  if (w == NULL || wload(w) == 0)
    return NULL;
  hark__ctrl *c = wlock(w);
  void *obj = c != NULL ? hark__ctrl_upgrade(c) : NULL;
  wunlock(w, c);
  return obj;
}

void hark_weak_clear(hark_weak *w) {
  if (w == NULL || wload(w) == 0)
    return;
  hark__ctrl *old = wlock(w);
  wunlock(w, NULL);
  if (old != NULL)
    hark__ctrl_weak_release(old);
}
