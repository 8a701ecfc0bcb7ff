/* Reference-counted objects, their control blocks and death
 * notifications.
 *
 * An object dies on the thread that drops its last strong reference,
 * before that hark_unref returns: death notifications, then finalize,
 * with no hark lock held. The one exception is the reference a send holds
 * on a receiver's object while calling it: it is not counted (a send
 * publishes a hazard instead, see internal.h), so the thread that drops
 * the last *counted* reference first looks whether a send is calling the
 * object right now and, if so, hands its reference over to that send,
 * which drops it after the call, on its own thread (kill_last() below). */
#include "internal.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

_Atomic unsigned long hark__dead_receivers;
_Atomic unsigned long hark__epoch;
_Atomic unsigned long hark__killing;

/* Stripe locks guard the death-notification lists of control blocks. A
 * fixed array keeps control blocks small and the library free of
 * per-object locks; holders never call out while holding one. */
#define STRIPES 64
static pthread_mutex_t stripes[STRIPES] = {
#define L PTHREAD_MUTEX_INITIALIZER
    L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,
    L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,
    L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L
#undef L
};

static pthread_mutex_t *ctrl_lock(const hark__ctrl *c) {
  uintptr_t h = (uintptr_t)c;
  h ^= h >> 7;
  h ^= h >> 13;
  pthread_mutex_t *m = &stripes[h % STRIPES];
  pthread_mutex_lock(m);
  return m;
}

/* ---- control blocks -------------------------------------------------- */

void hark__ctrl_weak_acquire(hark__ctrl *c) { atomic_fetch_add(&c->weak, 1); }

void hark__ctrl_weak_release(hark__ctrl *c) {
  if (atomic_fetch_sub(&c->weak, 1) == 1)
    hark__free(c);
}

void *hark__ctrl_upgrade(hark__ctrl *c) {
  long s = atomic_load(&c->strong);
  while (s > 0) {
    if (atomic_compare_exchange_weak(&c->strong, &s, s + 1))
      return c->obj;
  }
  return NULL;
}

static void finalize(hark__ctrl *c) {
  void *obj = c->obj;
  const hark_type *type = c->type;
  hark__tracker_remove(c->slot);
  if (type->traverse != NULL)
    hark__leaks_untrack(c);
  /* The object no longer points at its control block: a stale pointer
   * from the user now fails loudly instead of reaching freed memory. */
  ((hark_object *)obj)->hark_private_ = NULL;
  if (type->finalize != NULL)
    type->finalize(obj);
  else
    hark__free(obj);
  hark__ctrl_weak_release(c);
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
  pthread_mutex_t *m = ctrl_lock(c);
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
  pthread_mutex_t *m = ctrl_lock(c);
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
static void notify_run_all(hark__ctrl *c) {
  pthread_mutex_t *m = ctrl_lock(c);
  hark_notify *n;
  while ((n = c->notify_head) != NULL) {
    hark_notify_fn cb = n->hark_cb_;
    unlink_node(c, n);
    pthread_mutex_unlock(m);
    cb(n, c->obj);
    m = ctrl_lock(c);
  }
  pthread_mutex_unlock(m);
}

static void die(hark__ctrl *c) {
  unsigned flags = atomic_fetch_or(&c->flags, HARK__CTRL_DYING);
  if (flags & HARK__CTRL_RECEIVER)
    atomic_fetch_add(&hark__dead_receivers, 1);
  notify_run_all(c);
  finalize(c);
}

/* The last counted reference to an object that has been a receiver.
 *
 * A send calling it holds no count, only a hazard. So before the count
 * may reach zero: the epoch moves (a send that has not yet published its
 * hazard will see it and upgrade instead, racing fairly with the CAS
 * below), then hark__hand_over looks at every hazard after a barrier (a
 * send that did publish is seen, and takes our reference over).
 *
 * The epoch moves twice. A send may mark a receiver list valid at the
 * epoch it read (see walk() in signal.c) after checking each receiver;
 * one doing so between the first move and the CAS saw this object alive.
 * While hark__killing is not zero nothing is marked valid, and the second
 * move makes any such mark stale. */
static void kill_last(hark__ctrl *c) {
  for (;;) {
    long s = atomic_load(&c->strong);
    if (s > 1) {
      if (atomic_compare_exchange_weak(&c->strong, &s, s - 1))
        return;
      continue;
    }
    atomic_fetch_add(&hark__killing, 1);
    atomic_fetch_add(&hark__epoch, 1);
    if (hark__hand_over(c)) {
      atomic_fetch_sub(&hark__killing, 1);
      return;
    }
    long one = 1;
    bool dead = atomic_compare_exchange_strong(&c->strong, &one, 0);
    atomic_fetch_add(&hark__epoch, 1);
    atomic_fetch_sub(&hark__killing, 1);
    if (dead) {
      die(c);
      return;
    }
    /* a send upgraded it meanwhile: its reference is the last now, or
     * ours is not */
  }
}

static void dead_object(const char *what, const void *obj) {
  hark__log(HARK_LOG_ERROR, "%s on %p, which is not a live hark object", what,
            obj);
  abort();
}

/* Drops one counted reference. The last one is first offered to the sends
 * of this thread (one may hold the object as its signal, its sender or
 * the receiver it calls), then, for a receiver, to every thread's. The
 * count is read before the flags: the thread that connected obj set
 * HARK__CTRL_RECEIVER before it let go of its own reference, which our
 * acquiring load of the count sees. */
static void drop(hark__ctrl *c) {
  long s = atomic_load_explicit(&c->strong, memory_order_acquire);
  for (;;) {
    if (s > 1) {
      if (atomic_compare_exchange_weak(&c->strong, &s, s - 1))
        return;
      continue;
    }
    if (s <= 0)
      dead_object("hark_unref", c->obj);
    hark__thr *me = &hark__me;
    if (me->depth != 0 && hark__hand_over_own(me, c)) {
      /* the sends walking on check their receivers again, and meet the
       * reference on their way (hark__settle) */
      atomic_fetch_add(&hark__epoch, 1);
      return;
    }
    if (atomic_load(&c->flags) & HARK__CTRL_RECEIVER) {
      kill_last(c);
      return;
    }
    if (atomic_compare_exchange_strong(&c->strong, &s, 0)) {
      die(c);
      return;
    }
  }
}

void hark__unref(void *obj) { drop(hark__ctrl_of(obj)); }

void hark__ctrl_unref(hark__ctrl *c) { drop(c); }

int hark_object_init(void *obj, const hark_type *type) {
  if (obj == NULL || type == NULL)
    return HARK_EINVAL;
  hark__ctrl *c = hark__calloc(1, sizeof(*c));
  if (c == NULL)
    return HARK_ENOMEM;
  atomic_init(&c->strong, 1);
  atomic_init(&c->weak, 1);
  atomic_init(&c->flags, 0);
  c->obj = obj;
  c->type = type;
  c->slot = hark__tracker_add(type);
  ((hark_object *)obj)->hark_private_ = c;
  /* last: from here the leak finder may take a reference, and reach the
   * object through it */
  if (type->traverse != NULL && hark__leaks_track(c) != 0) {
    ((hark_object *)obj)->hark_private_ = NULL;
    hark__tracker_remove(c->slot);
    hark__free(c);
    return HARK_ENOMEM;
  }
  return 0;
}

void *hark_new(const hark_type *type) {
  if (type == NULL)
    return NULL;
  size_t size =
      type->size < sizeof(hark_object) ? sizeof(hark_object) : type->size;
  void *obj = hark__calloc(1, size);
  if (obj == NULL)
    return NULL;
  if (hark_object_init(obj, type) != 0) {
    hark__free(obj);
    return NULL;
  }
  return obj;
}

void *hark_ref(void *obj) {
  if (obj == NULL)
    return NULL;
  hark__ctrl *c = hark__ctrl_of(obj);
  if (c == NULL || atomic_fetch_add(&c->strong, 1) <= 0)
    dead_object("hark_ref", obj);
  return obj;
}

void hark_unref(void *obj) {
  if (obj == NULL)
    return;
  if (hark__ctrl_of(obj) == NULL)
    dead_object("hark_unref", obj);
  hark__unref(obj);
}

const hark_type *hark_object_type(const void *obj) {
  if (obj == NULL)
    return NULL;
  hark__ctrl *c = hark__ctrl_of(obj);
  return c != NULL ? c->type : NULL;
}
