/* Weak references and death notifications. */
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

/* ---- death notifications ----------------------------------------------
 * A registered node is in its control block's list and its hark_ctrl_
 * names that block; a node being run or done has hark_ctrl_ NULL. The
 * node holds no reference: the block cannot go while the list is not
 * empty, because it goes only after death has emptied the list. */

static hark__ctrl *node_ctrl(const hark_notify *n) {
  return __atomic_load_n((hark__ctrl **)&n->hark_ctrl_, __ATOMIC_SEQ_CST);
}

static void node_set_ctrl(hark_notify *n, hark__ctrl *c) {
  __atomic_store_n((hark__ctrl **)&n->hark_ctrl_, c, __ATOMIC_SEQ_CST);
}

static void unlink_node(hark__ctrl *c, hark_notify *n) {
  if (n->hark_prev_ != NULL)
    n->hark_prev_->hark_next_ = n->hark_next_;
  else
    c->notify_head = n->hark_next_;
  if (n->hark_next_ != NULL)
    n->hark_next_->hark_prev_ = n->hark_prev_;
  n->hark_next_ = n->hark_prev_ = NULL;
  node_set_ctrl(n, NULL);
}

int hark_notify_add(hark_notify *n, void *obj, hark_notify_fn cb) {
  if (n == NULL || obj == NULL || cb == NULL)
    return HARK_EINVAL;
  hark__ctrl *c = hark__ctrl_of(obj);
  if (c == NULL)
    return HARK_ENOENT;
  if (node_ctrl(n) != NULL)
    return HARK_EBUSY;
  pthread_mutex_t *m = hark__ctrl_lock(c);
  if (!hark__ctrl_alive(c) || (atomic_load(&c->flags) & HARK__CTRL_DYING)) {
    pthread_mutex_unlock(m);
    return HARK_ENOENT;
  }
  n->hark_cb_ = cb;
  n->hark_prev_ = NULL;
  n->hark_next_ = c->notify_head;
  if (c->notify_head != NULL)
    c->notify_head->hark_prev_ = n;
  c->notify_head = n;
  node_set_ctrl(n, c);
  pthread_mutex_unlock(m);
  return 0;
}

int hark_notify_remove(hark_notify *n) {
  if (n == NULL)
    return 0;
  hark__ctrl *c = node_ctrl(n);
  if (c == NULL)
    return 0;
  pthread_mutex_t *m = hark__ctrl_lock(c);
  int removed = 0;
  /* Only a node still in c's list names c; then c is alive. */
  if (node_ctrl(n) == c) {
    unlink_node(c, n);
    removed = 1;
  }
  pthread_mutex_unlock(m);
  return removed;
}

/* Runs every notification of a dying object, newest first. Each callback
 * runs with no lock held: it may drop references, take its own locks, or
 * register and remove other nodes. */
void hark__notify_run_all(hark__ctrl *c) {
  pthread_mutex_t *m = hark__ctrl_lock(c);
  hark_notify *n;
  while ((n = c->notify_head) != NULL) {
    hark_notify_fn cb = n->hark_cb_;
    unlink_node(c, n);
    pthread_mutex_unlock(m);
    cb(n, c->obj);
    m = hark__ctrl_lock(c);
  }
  pthread_mutex_unlock(m);
}
