/* Reference-counted objects, their control blocks, and the deferred
 * reclamation that lets sends run without a lock or a reference per
 * receiver. */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

_Atomic unsigned long hark__dead_receivers;
_Atomic unsigned long hark__epoch;
_Thread_local hark__pin hark__pins[HARK__PINS]
    __attribute__((tls_model("initial-exec")));
_Thread_local unsigned hark__npins __attribute__((tls_model("initial-exec")));

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

pthread_mutex_t *hark__ctrl_lock(const hark__ctrl *c) {
  uintptr_t h = (uintptr_t)c;
  h ^= h >> 7;
  h ^= h >> 13;
  pthread_mutex_t *m = &stripes[h % STRIPES];
  pthread_mutex_lock(m);
  return m;
}

/* ---- deferred reclamation ------------------------------------------ */

_Atomic long hark__inflight;
hark__retired *_Atomic hark__retired_list;
#define inflight hark__inflight
#define retired hark__retired_list

static void push_list(hark__retired *first, hark__retired *last) {
  hark__retired *head = atomic_load(&retired);
  do
    last->next = head;
  while (!atomic_compare_exchange_weak(&retired, &head, first));
}

/* Runs what was retired, but only while no send is in flight: an item
 * retired while a send that started before its unlinking was running may
 * still be in that send's hands. Seeing zero in-flight sends *after*
 * taking the list proves every such send has finished, since sends that
 * start later cannot reach unlinked memory. Otherwise the list goes back,
 * and the send that brings the count to zero drains it. */
void hark__drain(void) {
  for (;;) {
    hark__retired *list = atomic_exchange(&retired, NULL);
    if (list == NULL)
      return;
    if (atomic_load(&inflight) == 0) {
      while (list != NULL) {
        hark__retired *next = list->next;
        list->fn(list);
        list = next;
      }
      continue; /* finalizers may have retired more */
    }
    hark__retired *last = list;
    while (last->next != NULL)
      last = last->next;
    push_list(list, last);
    if (atomic_load(&inflight) != 0)
      return;
  }
}

/* While a thread holds a library lock, reclaiming (which may run user
 * finalizers) waits until it lets go. */
static _Thread_local unsigned held __attribute__((tls_model("initial-exec")));
static _Thread_local bool drain_due __attribute__((tls_model("initial-exec")));

void hark__hold(void) { held++; }

void hark__unhold(void) {
  if (--held == 0 && drain_due) {
    drain_due = false;
    hark__drain();
  }
}

void hark__retire(hark__retired *r) {
  if (atomic_load(&inflight) == 0) {
    r->fn(r);
    return;
  }
  r->next = NULL;
  push_list(r, r);
  /* the last send may have left between the check above and the push */
  if (atomic_load(&inflight) == 0) {
    if (held)
      drain_due = true;
    else
      hark__drain();
  }
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

static void finalize(hark__retired *r) {
  hark__ctrl *c = HARK__CONTAINER_OF(r, hark__ctrl, retire);
  void *obj = c->obj;
  const hark_type *type = c->type;
  hark__tracker_remove(c->slot);
  /* The object no longer points at its control block: a stale pointer
   * from the user now fails loudly instead of reaching freed memory. */
  ((hark_object *)obj)->hark_private_ = NULL;
  if (type->finalize != NULL)
    type->finalize(obj);
  else
    hark__free(obj);
  hark__ctrl_weak_release(c);
}

void hark__notify_run_all(hark__ctrl *c); /* weak.c */

void hark__die(hark__ctrl *c) {
  unsigned flags = atomic_fetch_or(&c->flags, HARK__CTRL_DYING);
  if (flags & HARK__CTRL_RECEIVER) {
    atomic_fetch_add(&hark__epoch, 1);
    atomic_fetch_add(&hark__dead_receivers, 1);
  }
  hark__notify_run_all(c);
  c->retire.fn = finalize;
  hark__retire(&c->retire);
}

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

static void dead_object(const char *what, const void *obj) {
  fprintf(stderr, "hark: %s on %p, which is not a live hark object\n", what,
          obj);
  abort();
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
  hark__ctrl *c = hark__ctrl_of(obj);
  if (c == NULL)
    dead_object("hark_unref", obj);
  if (hark__npins != 0 && hark__pin_owe(obj))
    return; /* a send on this thread holds it: paid when the send ends */
  long old = atomic_fetch_sub(&c->strong, 1);
  if (old == 1)
    hark__die(c);
  else if (old <= 0)
    dead_object("hark_unref", obj);
}

const hark_type *hark_object_type(const void *obj) {
  if (obj == NULL)
    return NULL;
  hark__ctrl *c = hark__ctrl_of(obj);
  return c != NULL ? c->type : NULL;
}
