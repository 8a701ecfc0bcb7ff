/* Signals: Django's dispatcher with weak bound-method receivers.
 *
 * Layout. Connections are kept per sender in a bucket (plus one bucket for
 * the any-sender receivers), each a list in connection order; an identity
 * index finds a connection by (fn, self, sender) or (uid, sender) without
 * scanning. For each sender a list is cached: the array a send from that
 * sender walks, its own receivers merged with the any-sender ones in
 * connection order (the weak-key sender cache: an entry goes when its
 * sender dies). Writers work under the signal's mutex; sends take no lock.
 *
 * What a send reads and what keeps it alive:
 *  - the sender table (sig->senders) and the list it finds there: hazard
 *    pointers (reclaim.c); writers unlink and hark__retire() them;
 *  - the connections in the list: the list holds a reference on each, so
 *    a connection outlives every list that names it;
 *  - the receiver's object: alive while the send's hazard names it, or
 *    through a real reference on the checked path (object.c, kill_last());
 *  - the signal and the sender: the caller's references, plus the send's
 *    own for what receivers drop on this thread (hark__hazard, internal.h).
 * A send checks per receiver only one global epoch (walk()); once it
 * moves, the remaining receivers are checked one by one.
 *
 * Lock rules: nothing that may run user code (hark_unref, receivers) runs
 * under the signal's mutex; death notifications of senders take it, so
 * dropping a reference under it could deadlock. Reclaiming (hark__retire)
 * runs no user code and may happen under it. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bucket bucket;
typedef struct conn conn;

/* One receiver as a send sees it: what never changes for a connection is
 * copied here so that the send loop makes no dependent load for it. */
typedef struct rent {
  conn *c;
  hark_receiver_fn fn; /* NULL: always take the checked path (HARK_ONCE,
                          dispatched, or blocked when the list was built) */
  void *obj;           /* self's object */
} rent;

/* The receivers a send walks, immutable once published. It holds a
 * reference on each of its connections. */
typedef struct rlist {
  hark__retired retire;
  unsigned long gen; /* the any-sender generation it was built for */
  /* A value of hark__epoch at which every receiver in the list was seen
   * connected, unblocked and alive (~0: unknown). While the epoch still
   * holds it, a send needs no per-receiver check. */
  _Atomic unsigned long valid_at;
  size_t n;
  rent v[];
} rlist;

/* conn.slow: zero for a plain, connected, unblocked receiver */
#define C_REMOVED 1u
#define C_FIRED 2u
#define C_SLOW_ONCE 4u
#define C_SLOW_DISPATCH 8u
#define C_BLOCKED 16u
/* conn.flags bits beyond the public ones */
#define C_EXT 0x100u      /* allocated as conn_ext */
#define C_UID 0x200u      /* identity is (uid, sender) */
#define C_DISPATCH 0x400u /* runs where a dispatcher says (loop.c) */

/* 56 bytes: a 64-byte malloc chunk. */
struct conn {
  hark_receiver_fn fn;
  hark__ctrl *self; /* weakly held always; strongly too with HARK_STRONG */
  bucket *b;        /* while connected */
  conn *prev;       /* in the bucket's list while connected; after, the
                       chain of detached ones (release_chain) */
  conn *next;
  uint64_t seq;
  _Atomic uint16_t slow;
  uint16_t flags;
  _Atomic uint32_t refs; /* its bucket's while connected, one per list,
                            one per batch of a locked walk */
};

_Static_assert(sizeof(conn) <= 56, "a connection fits a 64-byte chunk");

/* How many times a connection is blocked, beside it: blocking is rare,
 * and a count in every connection would cost them all a bigger chunk.
 * Under the signal's lock; the connection's C_BLOCKED bit mirrors n > 0. */
typedef struct blocked {
  conn *c;
  uint64_t n; /* never wraps: hark_block refuses beyond UINT64_MAX */
} blocked;

typedef struct dbg {
  hark_notify n;
  _Atomic int refs; /* the connection's and the notification's */
  char name[];
} dbg;

typedef struct conn_ext {
  conn c;
  const hark__dispatch *disp;
  void *target; /* the dispatcher's object, held strongly */
  dbg *dbg;
  char uid[];
} conn_ext;

struct bucket {
  hark_notify node; /* the sender's death; unused in the any bucket */
  void *sender;     /* NULL for the any bucket */
  hark_signal *sig;
  conn *head, *tail;
  size_t count;
  size_t pos;  /* its slot in the current sender table */
  bool orphan; /* signal finalized while the sender's death was on its way */
};

/* Sender table: open addressing; key and list are read without the lock
 * (by sends), b only under it. */
typedef struct sslot {
  const void *_Atomic key; /* NULL empty, KEY_TOMB removed, else sender */
  rlist *_Atomic list;     /* NULL when stale */
  bucket *b;
} sslot;

#define KEY_TOMB ((const void *)1)

typedef struct stable {
  hark__retired retire;
  size_t mask;
  size_t used; /* live + tombstones */
  size_t live;
  sslot slot[];
} stable;

struct hark_signal {
  hark_object base;
  /* what every send reads, together */
  rlist *_Atomic any_cache; /* the any-sender list, NULL when stale */
  stable *_Atomic senders;
  _Atomic unsigned long any_gen;
  hark__ctrl *ctrl; /* for the registry: readable while linked */
  char *name;
  pthread_mutex_t lock;
  bucket any;
  conn **index; /* identity index, under the lock */
  size_t index_mask, index_used, index_live;
  uint64_t seq;
  _Atomic size_t count;
  _Atomic size_t max_receivers;
  bool warned;
  void *(*args_copy)(void *args);
  void (*args_free)(void *args);
  blocked *blocks; /* under the lock */
  size_t nblocks, capblocks;
  _Atomic long pins; /* the object's, plus late sender notifications */
  struct hark_signal *reg_prev, *reg_next;
};

static void lock(hark_signal *sig) { pthread_mutex_lock(&sig->lock); }
static void unlock(hark_signal *sig) { pthread_mutex_unlock(&sig->lock); }

static conn tomb_conn;
#define CTOMB (&tomb_conn)

/* ---- the registry of live signals, for idle sweeping ---------------- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static hark_signal *registry;

/* ---- hashing ----------------------------------------------------------- */

static size_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  while (*s)
    h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
  return hark__mix(h);
}

static void *conn_self(const conn *c) { return c->self ? c->self->obj : NULL; }

static conn_ext *ext(conn *c) { return (conn_ext *)c; }

static size_t id_hash(hark_receiver_fn fn, const void *self, const char *uid,
                      const void *sender) {
  if (uid != NULL)
    return hash_str(uid) ^ hark__hash_ptr(sender);
  uintptr_t f;
  memcpy(&f, &fn, sizeof(f) < sizeof(fn) ? sizeof(f) : sizeof(fn));
  return hark__mix(f ^ ((uintptr_t)self * 0x9e3779b97f4a7c15ULL) ^
                   ((uintptr_t)sender * 0xc2b2ae3d27d4eb4fULL));
}

static size_t conn_hash(conn *c) {
  return id_hash(c->fn, conn_self(c), (c->flags & C_UID) ? ext(c)->uid : NULL,
                 c->b->sender);
}

static bool conn_matches(conn *c, hark_receiver_fn fn, const void *self,
                         const char *uid, const void *sender) {
  if (c->b->sender != sender)
    return false;
  if (uid != NULL)
    return (c->flags & C_UID) && strcmp(ext(c)->uid, uid) == 0;
  return !(c->flags & C_UID) && c->fn == fn && conn_self(c) == self;
}

/* ---- identity index (under the lock) ---------------------------------- */

static conn **index_find(hark_signal *sig, hark_receiver_fn fn,
                         const void *self, const char *uid,
                         const void *sender) {
  if (sig->index == NULL)
    return NULL;
  size_t i = id_hash(fn, self, uid, sender) & sig->index_mask;
  for (;;) {
    conn *c = sig->index[i];
    if (c == NULL)
      return NULL;
    if (c != CTOMB && conn_matches(c, fn, self, uid, sender))
      return &sig->index[i];
    i = (i + 1) & sig->index_mask;
  }
}

/* Makes room for one more entry. A failure changes nothing visible. */
static int index_reserve(hark_signal *sig) {
  size_t cap = sig->index ? sig->index_mask + 1 : 0;
  if ((sig->index_used + 1) * 4 <= cap * 3)
    return 0;
  size_t ncap = 8;
  while (ncap * 3 < (sig->index_live + 1) * 4 * 2)
    ncap *= 2;
  conn **n = hark__calloc(ncap, sizeof(*n));
  if (n == NULL)
    return HARK_ENOMEM;
  for (size_t i = 0; i < cap; i++) {
    conn *c = sig->index[i];
    if (c == NULL || c == CTOMB)
      continue;
    size_t j = conn_hash(c) & (ncap - 1);
    while (n[j] != NULL)
      j = (j + 1) & (ncap - 1);
    n[j] = c;
  }
  hark__free(sig->index);
  sig->index = n;
  sig->index_mask = ncap - 1;
  sig->index_used = sig->index_live;
  return 0;
}

static void index_insert(hark_signal *sig, conn *c) {
  size_t i = conn_hash(c) & sig->index_mask;
  while (sig->index[i] != NULL && sig->index[i] != CTOMB)
    i = (i + 1) & sig->index_mask;
  if (sig->index[i] == NULL)
    sig->index_used++;
  sig->index[i] = c;
  sig->index_live++;
}

static void index_remove(hark_signal *sig, conn *c) {
  size_t i = conn_hash(c) & sig->index_mask;
  while (sig->index[i] != c)
    i = (i + 1) & sig->index_mask;
  sig->index[i] = CTOMB;
  sig->index_live--;
}

/* ---- connections and lists: memory --------------------------------------- */

static void dbg_unref(dbg *d) {
  if (atomic_fetch_sub(&d->refs, 1) == 1)
    hark__free(d);
}

static void dbg_died(hark_notify *n, void *obj) {
  dbg *d = HARK__CONTAINER_OF(n, dbg, n);
  const hark_type *t = hark_object_type(obj);
  hark__log(HARK_LOG_INFO,
            "receiver %p (%s) died while connected to signal '%s'", obj,
            t && t->name ? t->name : "(unnamed)", d->name);
  dbg_unref(d);
}

/* Runs no user code: may be called under a signal's mutex. */
static void conn_unref(conn *c) {
  if (atomic_fetch_sub(&c->refs, 1) != 1)
    return;
  if ((c->flags & C_EXT) && ext(c)->dbg != NULL) {
    dbg *d = ext(c)->dbg;
    if (hark_notify_remove(&d->n) == 1)
      dbg_unref(d);
    dbg_unref(d);
  }
  if (c->self != NULL)
    hark__ctrl_weak_release(c->self);
  hark__free(c);
}

static void rlist_free(void *item) {
  rlist *r = item;
  for (size_t i = 0; i < r->n; i++)
    conn_unref(r->v[i].c);
  hark__free(r);
}

static void retire_list(rlist *r) {
  if (r != NULL)
    hark__retire(&r->retire);
}

static void free_item(void *item) { hark__free(item); }

/* Connections detached under the lock wait in a chain until it is
 * released: then their strong references are dropped (user code may run)
 * and their bucket's reference goes. */
static void release_chain(conn *chain) {
  while (chain != NULL) {
    conn *next = chain->prev;
    if ((chain->flags & HARK_STRONG) && chain->self != NULL)
      hark__ctrl_unref(chain->self);
    if (chain->flags & C_DISPATCH)
      hark__unref(ext(chain)->target);
    conn_unref(chain);
    chain = next;
  }
}

/* ---- sender table (writes under the lock, reads lock-free) ------------- */

/* The slot of sender in t, or NULL. Any thread (t protected). */
static inline sslot *slot_find(stable *t, const void *sender) {
  size_t i = hark__hash_ptr(sender) & t->mask;
  for (;;) {
    const void *k = atomic_load_explicit(&t->slot[i].key, memory_order_acquire);
    if (k == sender)
      return &t->slot[i];
    if (k == NULL)
      return NULL;
    i = (i + 1) & t->mask;
  }
}

static bucket *bucket_find(hark_signal *sig, const void *sender) {
  stable *t = atomic_load_explicit(&sig->senders, memory_order_relaxed);
  sslot *s = t != NULL ? slot_find(t, sender) : NULL;
  return s != NULL ? s->b : NULL;
}

static int stable_reserve(hark_signal *sig) {
  stable *t = atomic_load(&sig->senders);
  size_t cap = t ? t->mask + 1 : 0;
  if (t != NULL && (t->used + 1) * 4 <= cap * 3)
    return 0;
  size_t live = t ? t->live : 0;
  size_t ncap = 8;
  while (ncap * 3 < (live + 1) * 4 * 2)
    ncap *= 2;
  stable *n = hark__calloc(1, sizeof(*n) + ncap * sizeof(n->slot[0]));
  if (n == NULL)
    return HARK_ENOMEM;
  n->mask = ncap - 1;
  n->retire.item = n;
  n->retire.fn = free_item;
  n->retire.bytes = sizeof(*n) + ncap * sizeof(n->slot[0]);
  for (size_t i = 0; i < cap; i++) {
    sslot *s = &t->slot[i];
    const void *k = atomic_load(&s->key);
    if (k == NULL || k == KEY_TOMB)
      continue;
    size_t j = hark__hash_ptr(k) & n->mask;
    while (atomic_load(&n->slot[j].key) != NULL)
      j = (j + 1) & n->mask;
    /* the lists move with their keys: a send that found one through the
     * old table sees the table change and looks again (lookup()) */
    atomic_init(&n->slot[j].list, atomic_load(&s->list));
    n->slot[j].b = s->b;
    s->b->pos = j;
    atomic_init(&n->slot[j].key, k);
  }
  n->used = n->live = live;
  atomic_store(&sig->senders, n);
  if (t != NULL)
    hark__retire(&t->retire);
  return 0;
}

static void stable_insert(hark_signal *sig, bucket *b) {
  stable *t = atomic_load(&sig->senders);
  size_t i = hark__hash_ptr(b->sender) & t->mask;
  const void *k;
  while ((k = atomic_load(&t->slot[i].key)) != NULL && k != KEY_TOMB)
    i = (i + 1) & t->mask;
  if (k == NULL)
    t->used++;
  t->live++;
  atomic_store(&t->slot[i].list, NULL);
  t->slot[i].b = b;
  b->pos = i;
  atomic_store_explicit(&t->slot[i].key, b->sender, memory_order_release);
}

static void stable_remove(hark_signal *sig, bucket *b) {
  stable *t = atomic_load(&sig->senders);
  sslot *s = &t->slot[b->pos];
  atomic_store(&s->key, KEY_TOMB);
  s->b = NULL;
  retire_list(atomic_exchange(&s->list, NULL));
  t->live--;
}

/* ---- changing connections (lock held) -------------------------------------- */

/* Lists, generations and counts change only under the lock: a load and
 * a store publish them, no read-modify-write needed (sends only read). */
static void bump(_Atomic size_t *x, size_t delta) {
  atomic_store_explicit(x,
                        atomic_load_explicit(x, memory_order_relaxed) + delta,
                        memory_order_relaxed);
}

static rlist *unpublish(rlist *_Atomic *where) {
  rlist *old = atomic_load_explicit(where, memory_order_relaxed);
  if (old != NULL)
    atomic_store_explicit(where, NULL, memory_order_release);
  return old;
}

static void invalidate(hark_signal *sig, bucket *b) {
  rlist *old;
  if (b == &sig->any) {
    old = unpublish(&sig->any_cache);
    /* release: a send that sees the new generation sees the old list
     * unpublished */
    atomic_store_explicit(
        &sig->any_gen,
        atomic_load_explicit(&sig->any_gen, memory_order_relaxed) + 1,
        memory_order_seq_cst);
  } else {
    old = unpublish(&atomic_load(&sig->senders)->slot[b->pos].list);
  }
  retire_list(old);
}

static blocked *find_blocked(hark_signal *sig, const conn *c) {
  for (size_t i = 0; i < sig->nblocks; i++)
    if (sig->blocks[i].c == c)
      return &sig->blocks[i];
  return NULL;
}

/* c goes: so does its count (lock held). */
static void unblock_all(hark_signal *sig, conn *c) {
  blocked *e = find_blocked(sig, c);
  if (e != NULL)
    *e = sig->blocks[--sig->nblocks];
  if (sig->nblocks == 0) {
    hark__free(sig->blocks);
    sig->blocks = NULL;
    sig->capblocks = 0;
  }
}

/* Unlinks c from its bucket and the index and chains it. */
static void detach(hark_signal *sig, conn *c, conn **chain, bool in_index) {
  bucket *b = c->b;
  atomic_fetch_or(&c->slow, C_REMOVED);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    b->head = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  else
    b->tail = c->prev;
  b->count--;
  bump(&sig->count, (size_t)-1);
  if (in_index)
    index_remove(sig, c);
  invalidate(sig, b);
  /* after the invalidation: a send that reads the new epoch before its
   * lookup finds the new list */
  atomic_fetch_add(&hark__epoch, 1);
  if (atomic_load(&c->slow) & C_BLOCKED)
    unblock_all(sig, c);
  c->prev = *chain; /* out of the list: prev chains it now */
  *chain = c;
}

/* Drops a sender bucket left empty. If its sender is dying on another
 * thread, its notification will come and drop it instead. */
static void maybe_drop_bucket(hark_signal *sig, bucket *b) {
  if (b == &sig->any || b->count > 0)
    return;
  if (hark_notify_remove(&b->node) == 1) {
    stable_remove(sig, b);
    hark__free(b); /* sends never read buckets */
  }
}

static bool conn_dead(const conn *c) {
  return c->self != NULL && !hark__ctrl_alive(c->self);
}

/* Detaches the dead receivers of b; returns how many. */
static size_t purge(hark_signal *sig, bucket *b, conn **chain) {
  size_t n = 0;
  conn *c = b->head;
  while (c != NULL) {
    conn *next = c->next;
    if (conn_dead(c)) {
      detach(sig, c, chain, true);
      n++;
    }
    c = next;
  }
  return n;
}

/* Finds the connection with this identity. One whose receiver has died
 * counts as gone: it is dropped here, so that a new object at a dead
 * receiver's address is never taken for it. */
static conn **find_live(hark_signal *sig, hark_receiver_fn fn, const void *self,
                        const char *uid, const void *sender, conn **chain) {
  conn **slot = index_find(sig, fn, self, uid, sender);
  if (slot != NULL && conn_dead(*slot)) {
    conn *old = *slot;
    bucket *b = old->b;
    detach(sig, old, chain, true);
    maybe_drop_bucket(sig, b);
    slot = NULL;
  }
  return slot;
}

static void unpin(hark_signal *sig) {
  if (atomic_fetch_sub(&sig->pins, 1) == 1) {
    pthread_mutex_destroy(&sig->lock);
    hark__free(sig->name);
    hark__free(sig);
  }
}

/* A sender died: its connections, its list and its bucket go. */
static void sender_died(hark_notify *n, void *obj) {
  (void)obj;
  bucket *b = HARK__CONTAINER_OF(n, bucket, node);
  hark_signal *sig = b->sig;
  conn *chain = NULL;
  lock(sig);
  if (b->orphan) {
    unlock(sig);
    hark__free(b);
    unpin(sig);
    return;
  }
  while (b->head != NULL)
    detach(sig, b->head, &chain, true);
  stable_remove(sig, b);
  unlock(sig);
  release_chain(chain);
  hark__free(b);
}

/* ---- the signal object ----------------------------------------------------- */

static void signal_finalize(void *obj) {
  hark_signal *sig = obj;
  pthread_mutex_lock(&registry_lock);
  if (sig->reg_prev != NULL)
    sig->reg_prev->reg_next = sig->reg_next;
  else
    registry = sig->reg_next;
  if (sig->reg_next != NULL)
    sig->reg_next->reg_prev = sig->reg_prev;
  pthread_mutex_unlock(&registry_lock);

  conn *chain = NULL;
  bucket *dead = NULL; /* buckets to free, chained through sender */
  lock(sig);
  while (sig->any.head != NULL)
    detach(sig, sig->any.head, &chain, false);
  stable *t = atomic_load(&sig->senders);
  for (size_t i = 0; t != NULL && i <= t->mask; i++) {
    bucket *b = t->slot[i].b;
    if (b == NULL)
      continue;
    while (b->head != NULL)
      detach(sig, b->head, &chain, false);
    retire_list(atomic_exchange(&t->slot[i].list, NULL));
    t->slot[i].b = NULL;
    if (hark_notify_remove(&b->node) == 1) {
      b->sender = dead;
      dead = b;
    } else {
      b->orphan = true;
      atomic_fetch_add(&sig->pins, 1);
    }
  }
  atomic_store(&sig->senders, NULL);
  if (t != NULL)
    hark__retire(&t->retire);
  retire_list(atomic_exchange(&sig->any_cache, NULL));
  hark__free(sig->index);
  sig->index = NULL;
  hark__free(sig->blocks);
  sig->blocks = NULL;
  sig->nblocks = sig->capblocks = 0;
  unlock(sig);

  release_chain(chain);
  while (dead != NULL) {
    bucket *next = dead->sender;
    hark__free(dead);
    dead = next;
  }
  /* what this signal's sends may still hold goes once they let go; what
   * nothing holds any more goes now (no memory stays behind a signal) */
  hark__reclaim();
  unpin(sig);
}

static const hark_type signal_type = {"hark_signal", sizeof(hark_signal),
                                      signal_finalize, NULL};

hark_signal *hark_signal_new(const char *name) {
  hark_signal *sig = hark__calloc(1, sizeof(*sig));
  if (sig == NULL)
    return NULL;
  sig->name = hark__strdup(name != NULL ? name : "(unnamed)");
  if (sig->name == NULL)
    goto fail;
  if (pthread_mutex_init(&sig->lock, NULL) != 0)
    goto fail;
  if (hark_object_init(sig, &signal_type) != 0) {
    pthread_mutex_destroy(&sig->lock);
    goto fail;
  }
  sig->ctrl = hark__ctrl_of(sig);
  sig->any.sig = sig;
  atomic_init(&sig->pins, 1);
  atomic_init(&sig->max_receivers, HARK_DEFAULT_MAX_RECEIVERS);
  pthread_mutex_lock(&registry_lock);
  sig->reg_next = registry;
  if (registry != NULL)
    registry->reg_prev = sig;
  registry = sig;
  pthread_mutex_unlock(&registry_lock);
  return sig;
fail:
  hark__free(sig->name);
  hark__free(sig);
  return NULL;
}

const char *hark_signal_name(const hark_signal *sig) {
  return sig != NULL ? sig->name : NULL;
}

int hark_signal_set_args_ops(hark_signal *sig, void *(*copy)(void *args),
                             void (*free_fn)(void *args)) {
  if (sig == NULL || (copy == NULL) != (free_fn == NULL))
    return HARK_EINVAL;
  lock(sig);
  sig->args_copy = copy;
  sig->args_free = free_fn;
  unlock(sig);
  return 0;
}

void hark_signal_set_max_receivers(hark_signal *sig, size_t max) {
  if (sig != NULL)
    atomic_store(&sig->max_receivers, max);
}

size_t hark_signal_receivers(hark_signal *sig) {
  return sig != NULL ? atomic_load(&sig->count) : 0;
}

/* ---- connect / disconnect ----------------------------------------------- */

static int do_connect(hark_signal *sig, const char *uid,
                      const hark__dispatch *disp, void *target,
                      hark_receiver_fn fn, void *self, void *sender,
                      unsigned flags) {
  if (sig == NULL || fn == NULL || (flags & ~(HARK_STRONG | HARK_ONCE)) ||
      (uid != NULL && uid[0] == '\0'))
    return HARK_EINVAL;
  hark__ctrl *sc = self ? hark__ctrl_of(self) : NULL;
  hark__ctrl *dc = sender ? hark__ctrl_of(sender) : NULL;
  if ((self && (sc == NULL || !hark__ctrl_alive(sc))) ||
      (sender && (dc == NULL || !hark__ctrl_alive(dc))))
    return HARK_ENOENT;

  if (self == NULL)
    flags &= ~HARK_STRONG; /* a plain function has nothing to hold */
  bool want_dbg = self != NULL && !(flags & HARK_STRONG) &&
                  (hark__debug() & HARK__DEBUG_RECEIVERS);
  size_t uidlen = uid ? strlen(uid) + 1 : 0;
  bool is_ext = uid != NULL || disp != NULL || want_dbg;
  conn *c = hark__calloc(1, is_ext ? sizeof(conn_ext) + uidlen : sizeof(conn));
  if (c == NULL)
    return HARK_ENOMEM;
  dbg *d = NULL;
  if (want_dbg) {
    size_t nl = strlen(sig->name) + 1;
    d = hark__calloc(1, sizeof(*d) + nl);
    if (d == NULL) {
      hark__free(c);
      return HARK_ENOMEM;
    }
    memcpy(d->name, sig->name, nl);
    atomic_init(&d->refs, 2);
  }
  c->fn = fn;
  c->flags = flags | (is_ext ? C_EXT : 0) | (uid ? C_UID : 0) |
             (disp ? C_DISPATCH : 0);
  atomic_init(&c->slow, ((flags & HARK_ONCE) ? C_SLOW_ONCE : 0) |
                            (disp ? C_SLOW_DISPATCH : 0));
  atomic_init(&c->refs, 1);
  if (is_ext) {
    ext(c)->disp = disp;
    ext(c)->target = target;
    ext(c)->dbg = d;
    if (uid)
      memcpy(ext(c)->uid, uid, uidlen);
  }

  conn *chain = NULL;
  bucket *fresh = NULL;
  int err = 0;
  size_t warn_count = 0, warn_max = 0;
  bool warn_any = false;
  lock(sig);
  conn **slot = find_live(sig, fn, self, uid, sender, &chain);
  if (slot != NULL) {
    err = HARK_EEXIST;
    goto out;
  }
  if ((err = index_reserve(sig)) != 0)
    goto out;
  bucket *b = &sig->any;
  if (sender != NULL) {
    b = bucket_find(sig, sender);
    if (b == NULL) {
      if ((err = stable_reserve(sig)) != 0)
        goto out;
      fresh = hark__calloc(1, sizeof(*fresh));
      if (fresh == NULL) {
        err = HARK_ENOMEM;
        goto out;
      }
      fresh->sender = sender;
      fresh->sig = sig;
      if ((err = hark_notify_add(&fresh->node, sender, sender_died)) != 0)
        goto out;
      stable_insert(sig, fresh);
      b = fresh;
      fresh = NULL;
    }
  }
  if (d != NULL && (err = hark_notify_add(&d->n, self, dbg_died)) != 0) {
    maybe_drop_bucket(sig, b);
    goto out;
  }
  /* committed: nothing below fails */
  c->b = b;
  c->seq = ++sig->seq;
  if (sc != NULL) {
    c->self = sc;
    hark__ctrl_weak_acquire(sc);
    /* before the caller lets go of self: see drop() in object.c */
    if (!(atomic_load_explicit(&sc->flags, memory_order_relaxed) &
          HARK__CTRL_RECEIVER))
      atomic_fetch_or(&sc->flags, HARK__CTRL_RECEIVER);
    if (flags & HARK_STRONG)
      hark_ref(self);
  }
  if (disp != NULL)
    hark_ref(target);
  c->prev = b->tail;
  c->next = NULL;
  if (b->tail != NULL)
    b->tail->next = c;
  else
    b->head = c;
  b->tail = c;
  b->count++;
  bump(&sig->count, 1);
  index_insert(sig, c);
  invalidate(sig, b);
  size_t max = atomic_load(&sig->max_receivers);
  if (max != 0 && b->count > max && !sig->warned) {
    sig->warned = true;
    warn_count = b->count;
    warn_any = b == &sig->any;
    warn_max = max;
  }
  c = NULL;
  d = NULL;
out:
  unlock(sig);
  /* the log function is the user's code: never under the lock */
  if (warn_count != 0)
    hark__log(HARK_LOG_WARN,
              "signal '%s' has %zu receivers for one %s (limit %zu): a "
              "leak? hark_signal_set_max_receivers() raises the limit",
              sig->name, warn_count, warn_any ? "any-sender list" : "sender",
              warn_max);
  release_chain(chain);
  hark__free(fresh);
  hark__free(d);
  hark__free(c);
  return err;
}

int hark_connect(hark_signal *sig, hark_receiver_fn fn, void *self,
                 void *sender, unsigned flags) {
  return do_connect(sig, NULL, NULL, NULL, fn, self, sender, flags);
}

int hark_connect_uid(hark_signal *sig, const char *uid, hark_receiver_fn fn,
                     void *self, void *sender, unsigned flags) {
  if (uid == NULL)
    return HARK_EINVAL;
  return do_connect(sig, uid, NULL, NULL, fn, self, sender, flags);
}

int hark__connect_dispatched(hark_signal *sig, const hark__dispatch *disp,
                             void *target, hark_receiver_fn fn, void *self,
                             void *sender, unsigned flags) {
  if (disp == NULL || target == NULL)
    return HARK_EINVAL;
  return do_connect(sig, NULL, disp, target, fn, self, sender, flags);
}

static int do_disconnect(hark_signal *sig, hark_receiver_fn fn, void *self,
                         const char *uid, void *sender) {
  if (sig == NULL || (uid == NULL && fn == NULL) ||
      (uid != NULL && uid[0] == '\0'))
    return HARK_EINVAL;
  conn *chain = NULL;
  lock(sig);
  conn **slot = find_live(sig, fn, self, uid, sender, &chain);
  if (slot != NULL) {
    conn *c = *slot;
    bucket *b = c->b;
    detach(sig, c, &chain, true);
    maybe_drop_bucket(sig, b);
  }
  unlock(sig);
  release_chain(chain);
  return slot != NULL;
}

int hark_disconnect(hark_signal *sig, hark_receiver_fn fn, void *self,
                    void *sender) {
  return do_disconnect(sig, fn, self, NULL, sender);
}

int hark_disconnect_uid(hark_signal *sig, const char *uid, void *sender) {
  if (uid == NULL)
    return HARK_EINVAL;
  return do_disconnect(sig, NULL, NULL, uid, sender);
}

static int do_block(hark_signal *sig, hark_receiver_fn fn, void *self,
                    const char *uid, void *sender, int delta) {
  if (sig == NULL || (uid == NULL && fn == NULL))
    return HARK_EINVAL;
  int err = 0;
  conn *chain = NULL;
  lock(sig);
  conn **slot = find_live(sig, fn, self, uid, sender, &chain);
  conn *c = slot != NULL ? *slot : NULL;
  blocked *e = c != NULL ? find_blocked(sig, c) : NULL;
  if (c == NULL) {
    err = HARK_ENOENT;
  } else if (delta < 0 ? e == NULL : e != NULL && e->n == UINT64_MAX) {
    err = HARK_ERANGE;
  } else if (e == NULL && sig->nblocks == sig->capblocks) {
    size_t cap = sig->capblocks ? sig->capblocks * 2 : 4;
    blocked *n = hark__realloc(sig->blocks, cap * sizeof(*n));
    if (n == NULL) {
      err = HARK_ENOMEM;
    } else {
      sig->blocks = n;
      sig->capblocks = cap;
    }
  }
  if (c != NULL && err == 0) {
    if (e == NULL) {
      e = &sig->blocks[sig->nblocks++];
      *e = (blocked){c, 0};
    }
    e->n += delta > 0 ? 1 : (uint64_t)-1;
    if (e->n == 0) {
      atomic_fetch_and(&c->slow, (uint16_t)~C_BLOCKED);
      unblock_all(sig, c);
    } else {
      atomic_fetch_or(&c->slow, C_BLOCKED);
    }
    /* lists mark blocked receivers for the checked path: rebuild them */
    invalidate(sig, c->b);
    atomic_fetch_add(&hark__epoch, 1);
  }
  unlock(sig);
  release_chain(chain);
  return err;
}

int hark_block(hark_signal *sig, hark_receiver_fn fn, void *self,
               void *sender) {
  return do_block(sig, fn, self, NULL, sender, 1);
}
int hark_unblock(hark_signal *sig, hark_receiver_fn fn, void *self,
                 void *sender) {
  return do_block(sig, fn, self, NULL, sender, -1);
}
int hark_block_uid(hark_signal *sig, const char *uid, void *sender) {
  return uid ? do_block(sig, NULL, NULL, uid, sender, 1) : HARK_EINVAL;
}
int hark_unblock_uid(hark_signal *sig, const char *uid, void *sender) {
  return uid ? do_block(sig, NULL, NULL, uid, sender, -1) : HARK_EINVAL;
}

/* ---- sweeping -------------------------------------------------------------- */

size_t hark_signal_sweep(hark_signal *sig) {
  if (sig == NULL)
    return 0;
  conn *chain = NULL;
  lock(sig);
  purge(sig, &sig->any, &chain);
  stable *t = atomic_load(&sig->senders);
  for (size_t i = 0; t != NULL && i <= t->mask; i++) {
    bucket *b = t->slot[i].b;
    if (b != NULL && purge(sig, b, &chain) > 0)
      maybe_drop_bucket(sig, b);
  }
  unlock(sig);
  size_t count = 0;
  for (conn *c = chain; c != NULL; c = c->prev)
    count++;
  release_chain(chain);
  return count;
}

/* Takes a strong reference to the first live signal from s on (registry
 * lock held). A signal is unlinked by its finalize, under the lock, before
 * its memory or its control block go; a dying one (count zero, finalize
 * on its way on another thread) is skipped. */
static hark_signal *next_live(hark_signal *s) {
  while (s != NULL && hark__ctrl_upgrade(s->ctrl) == NULL)
    s = s->reg_next;
  return s;
}

/* The registry lock is not held while a signal is swept: dropping a
 * connection may drop the last reference to a dispatcher's target (a
 * hark loop), whose queued posts hold signals, whose finalize takes the
 * registry lock. A reference keeps
 * the current signal in the registry instead. */
size_t hark__signal_sweep_all(void) {
  size_t n = 0;
  pthread_mutex_lock(&registry_lock);
  hark_signal *s = next_live(registry);
  pthread_mutex_unlock(&registry_lock);
  while (s != NULL) {
    n += hark_signal_sweep(s);
    pthread_mutex_lock(&registry_lock);
    hark_signal *next = next_live(s->reg_next);
    pthread_mutex_unlock(&registry_lock);
    hark_unref(s);
    s = next;
  }
  return n;
}

/* ---- finding the list a send walks ------------------------------------------ */

/* Publishes r in the hazard and checks that where it came from still
 * holds it (see reclaim.c). */
#define PROTECT(hz_field, r, from)                                             \
  (atomic_store_explicit(&(hz_field), (r), memory_order_release),              \
   hark__hazard_fence(),                                                       \
   atomic_load_explicit(&(from), memory_order_acquire) == (r))

/* The any-sender list, protected by hz->list; NULL when it must be built
 * (lookup_slow). */
static inline __attribute__((always_inline)) rlist *
lookup_any(hark_signal *sig, hark__hazard *hz) {
  for (;;) {
    rlist *r = atomic_load_explicit(&sig->any_cache, memory_order_acquire);
    if (r == NULL || PROTECT(hz->list, r, sig->any_cache))
      return r;
  }
}

/* The list for a send from sender, protected by hz->list; NULL when it
 * must be built (lookup_slow). */
static __attribute__((noinline)) rlist *
lookup_sender(hark_signal *sig, const void *sender, hark__hazard *hz) {
again:;
  stable *t = atomic_load_explicit(&sig->senders, memory_order_acquire);
  if (t == NULL)
    return lookup_any(sig, hz);
  if (!PROTECT(hz->tab, (void *)t, sig->senders))
    goto again;
  sslot *s = slot_find(t, sender);
  if (s == NULL)
    return lookup_any(sig, hz); /* no receiver of its own */
  for (;;) {
    rlist *r = atomic_load_explicit(&s->list, memory_order_acquire);
    if (r == NULL)
      return NULL;
    if (PROTECT(hz->list, r, s->list)) {
      if (atomic_load_explicit(&sig->senders, memory_order_acquire) != t)
        goto again; /* it moved to a new table: that one is current */
      return r->gen == atomic_load_explicit(&sig->any_gen, memory_order_acquire)
                 ? r
                 : NULL;
    }
  }
}

static inline __attribute__((always_inline)) rlist *
lookup(hark_signal *sig, const void *sender, hark__hazard *hz) {
  return sender == NULL ? lookup_any(sig, hz) : lookup_sender(sig, sender, hz);
}

/* The next of two connection lists merged in connection order (the any
 * bucket's and a sender's), advancing the one it came from; NULL at the
 * end of both (lock held). */
static conn *next_in_order(conn **x, conn **y) {
  conn **from = *y == NULL || (*x != NULL && (*x)->seq < (*y)->seq) ? x : y;
  conn *c = *from;
  if (c != NULL)
    *from = c->next;
  return c;
}

/* Builds and publishes the list of b (lock held). */
static int rebuild(hark_signal *sig, bucket *b, rlist **out) {
  bucket *any = &sig->any;
  size_t n = any->count + (b != any ? b->count : 0);
  /* n entries and the sentinel (see walk) */
  rlist *r = hark__malloc(sizeof(*r) + (n + 1) * sizeof(r->v[0]));
  if (r == NULL)
    return HARK_ENOMEM;
  r->retire.item = r;
  r->retire.fn = rlist_free;
  r->retire.bytes = sizeof(*r) + (n + 1) * sizeof(r->v[0]);
  r->gen = atomic_load(&sig->any_gen);
  r->n = n;
  /* read before the checks below, like a validating send */
  unsigned long epoch = atomic_load(&hark__epoch);
  bool all_ok = true;
  conn *x = any->head, *y = b != any ? b->head : NULL;
  size_t i = 0;
  for (conn *c; (c = next_in_order(&x, &y)) != NULL;) {
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    r->v[i].c = c;
    r->v[i].fn = atomic_load(&c->slow) != 0 ? NULL : c->fn;
    r->v[i].obj = c->self ? c->self->obj : NULL;
    if (conn_dead(c))
      all_ok = false;
    i++;
  }
  /* (fenced: never valid, see walk()) */
  all_ok = all_ok && !hark__fenced && atomic_load(&hark__epoch) == epoch &&
           atomic_load(&hark__killing) == 0;
  r->v[n] = (rent){NULL, NULL, NULL}; /* the sentinel */
  atomic_init(&r->valid_at, all_ok ? epoch : ~0UL);
  rlist *old;
  if (b == any)
    old = atomic_exchange(&sig->any_cache, r);
  else
    old = atomic_exchange(&atomic_load(&sig->senders)->slot[b->pos].list, r);
  retire_list(old);
  *out = r;
  return 0;
}

/* The list is stale: rebuild it under the lock (out of line: rare). On
 * success it is protected by hz->list (stored under the lock: a writer
 * that retires it takes the lock after us). */
static __attribute__((noinline)) int lookup_slow(hark_signal *sig,
                                                 const void *sender,
                                                 hark__hazard *hz,
                                                 rlist **out) {
  int err = 0;
  lock(sig);
  bucket *b = sender ? bucket_find(sig, sender) : NULL;
  if (b == NULL)
    b = &sig->any;
  rlist *r;
  if (b == &sig->any) {
    r = atomic_load(&sig->any_cache);
  } else {
    r = atomic_load(&atomic_load(&sig->senders)->slot[b->pos].list);
    if (r != NULL && r->gen != atomic_load(&sig->any_gen))
      r = NULL;
  }
  if (r == NULL)
    err = rebuild(sig, b, &r);
  if (err == 0)
    atomic_store_explicit(&hz->list, r, memory_order_release);
  unlock(sig);
  *out = r;
  return err;
}

/* After a send met dead receivers: drop them from the buckets it used. */
static void purge_after_send(hark_signal *sig, const void *sender) {
  conn *chain = NULL;
  lock(sig);
  purge(sig, &sig->any, &chain);
  bucket *b = sender ? bucket_find(sig, sender) : NULL;
  if (b != NULL && purge(sig, b, &chain) > 0)
    maybe_drop_bucket(sig, b);
  unlock(sig);
  release_chain(chain);
}

/* ---- calling receivers ------------------------------------------------------- */

enum mode { M_SEND, M_ROBUST, M_ACC };

typedef struct emit_ctx {
  void (*on_result)(void *data, hark_receiver_fn fn, void *self, int result);
  int (*acc)(void *data, hark_receiver_fn fn, void *self, int result);
  void *data;
  bool saw_dead; /* met a dead receiver: purge after the send */
  /* M_SEND, written only when a receiver stops the send */
  hark_send_result stopped;
} emit_ctx;

/* Detaches a HARK_ONCE connection just before its call. */
static void once_detach(hark_signal *sig, conn *c) {
  conn *chain = NULL;
  lock(sig);
  if (!(atomic_load(&c->slow) & C_REMOVED)) {
    bucket *b = c->b;
    detach(sig, c, &chain, true);
    maybe_drop_bucket(sig, b);
  }
  unlock(sig);
  release_chain(chain);
}

/* A call of a dispatched receiver from a thread it does not run on. */
static int queue_call(hark_signal *sig, conn *c, void *sender, void *hold,
                      void *args) {
  void *a = args;
  void (*afree)(void *) = NULL;
  if (sig->args_copy != NULL) {
    a = sig->args_copy(args);
    if (a == NULL)
      return HARK_ENOMEM;
    afree = sig->args_free;
  }
  int err = ext(c)->disp->queue_call(ext(c)->target, c->fn, c->self,
                                     sender ? hark__ctrl_of(sender) : NULL,
                                     hold, a, afree);
  if (err != 0 && afree != NULL)
    afree(a);
  return err;
}

enum { CALL, SKIP, QUEUED };

/* Calls c with every check: removed, blocked, HARK_ONCE, dispatched, and
 * its object upgraded to a real reference for the call (the send's
 * reference, see internal.h). Returns SKIP, QUEUED, or CALL with the
 * receiver's result in *rv and the reference in *held, which the caller
 * drops after it has reported the result, on this thread. */
static int call_checked(hark_signal *sig, conn *c, void *sender, void *args,
                        emit_ctx *ctx, int *rv, void **held) {
  uint32_t slow = atomic_load_explicit(&c->slow, memory_order_acquire);
  if (slow & (C_REMOVED | C_FIRED | C_BLOCKED))
    return SKIP;
  void *self = NULL;
  if (c->self != NULL && (self = hark__ctrl_upgrade(c->self)) == NULL) {
    ctx->saw_dead = true;
    return SKIP;
  }
  if (slow & C_SLOW_ONCE) {
    if (atomic_fetch_or(&c->slow, C_FIRED) & C_FIRED) {
      if (self != NULL)
        hark__unref(self);
      return SKIP;
    }
    once_detach(sig, c);
  }
  if ((slow & C_SLOW_DISPATCH) && !ext(c)->disp->is_current(ext(c)->target)) {
    /* the queued call keeps self alive only where no connection does any
     * more (HARK_ONCE|HARK_STRONG); else it holds self weakly */
    bool hold =
        self != NULL && (slow & C_SLOW_ONCE) && (c->flags & HARK_STRONG);
    int err = queue_call(sig, c, sender, hold ? self : NULL, args);
    if (self != NULL && !(hold && err == 0))
      hark__unref(self);
    return err == 0 ? QUEUED : SKIP;
  }
  *rv = c->fn(self, sender, args);
  *held = self;
  return CALL;
}

/* A receiver that needs checking (see walk): out of line, so that the
 * fast path stays small. The hazard's object is let go first, and any
 * reference handed over for it meanwhile dropped. Returns the outcome in
 * the high half and the receiver's result in the low half (a result
 * passed through memory would cost the fast path a spill). */
static __attribute__((noinline)) uint64_t
checked(hark_signal *sig, const rent *e, hark__hazard *hz, void *sender,
        void *args, emit_ctx *ctx, void **held) {
  atomic_store_explicit(&hz->obj, NULL, memory_order_release);
  hark__settle(hz);
  int rv = 0;
  int how = call_checked(sig, e->c, sender, args, ctx, &rv, held);
  return (uint64_t)(uint32_t)how << 32 | (uint32_t)rv;
}

/* What a send does with a receiver's result: returns true to stop. */
static inline __attribute__((always_inline)) bool
result(const enum mode mode, emit_ctx *ctx, hark_receiver_fn fn, void *obj,
       int rv, int *failed, int *stop) {
  if (mode == M_SEND) {
    if (rv != 0) {
      *stop = rv;
      ctx->stopped.stop = rv;
      ctx->stopped.stop_fn = fn;
      ctx->stopped.stop_self = obj;
      return true;
    }
  } else if (mode == M_ROBUST) {
    if (rv != 0)
      (*failed)++;
    if (ctx->on_result != NULL)
      ctx->on_result(ctx->data, fn, obj, rv);
  } else if (ctx->acc(ctx->data, fn, obj, rv) != 0) {
    return true;
  }
  return false;
}

/* The send loop, specialised per mode by the compiler.
 *
 * Fast path: the hazard names the receiver's object (the send's reference
 * for the call), then the epoch is compared with the value read before the
 * lookup. While it holds, and the list was validated at that value, every
 * receiver in it is connected, unblocked and alive: a receiver that dies
 * on another thread moves the epoch first and then either sees our hazard
 * (and hands its reference to us) or is seen by our epoch load (object.c,
 * kill_last()). Once the epoch moves, every remaining receiver is checked. */
static inline __attribute__((always_inline)) int
walk(hark_signal *sig, const rlist *r, unsigned long epoch0, hark__hazard *hz,
     void *sender, void *args, const enum mode mode, emit_ctx *ctx) {
  /* The list ends with a sentinel, {NULL, NULL, NULL}: the loop meets
   * it on its way to the checked path (fn NULL), so it needs no end
   * pointer, which would not fit in the registers beside the call's
   * arguments and be read from the stack at every receiver. */
  const rent *e = r->v;
  int skipped = 0, failed = 0, stop = 0;
  const bool validating =
      atomic_load_explicit(&r->valid_at, memory_order_acquire) != epoch0;
  /* An unvalidated list compares against a value the epoch never holds.
   * Without membarrier (hark__fenced) no list is ever valid (see the end of
   * this function and rebuild()): a hazard on the receiver would need a
   * fence per call, so every call takes a real reference instead (the
   * checked path), correct with no fence at all. */
  const unsigned long fast_at = validating ? ~0UL : epoch0;
  for (;; e++) {
    hark_receiver_fn fn = e->fn;
    if (HARK__LIKELY(fn != NULL)) {
      atomic_store_explicit(&hz->obj, e->obj, memory_order_release);
      atomic_signal_fence(memory_order_seq_cst);
      if (HARK__LIKELY(atomic_load_explicit(&hark__epoch,
                                            memory_order_acquire) == fast_at)) {
        int rv = fn(e->obj, sender, args);
        if (mode == M_SEND) {
          if (HARK__UNLIKELY(rv != 0)) {
            result(mode, ctx, fn, e->obj, rv, &failed, &stop);
            e++;
            break;
          }
        } else if (result(mode, ctx, fn, e->obj, rv, &failed, &stop)) {
          e++;
          break;
        }
        continue;
      }
    } else if (e->c == NULL) {
      break; /* the sentinel */
    }
    void *held = NULL;
    uint64_t x = checked(sig, e, hz, sender, args, ctx, &held);
    int how = (int)(x >> 32), rv = (int)(uint32_t)x;
    if (how != CALL) {
      skipped += how == SKIP; /* a queued call counts as called */
      continue;
    }
    bool stopped = result(mode, ctx, e->c->fn, e->obj, rv, &failed, &stop);
    if (held != NULL)
      hark__unref(held);
    if (stopped) {
      e++;
      break;
    }
  }
  atomic_store_explicit(&hz->obj, NULL, memory_order_release);
  /* A complete walk that checked everyone and met no dead receiver
   * validates the list at the epoch read before it started, unless a
   * death was being decided meanwhile (object.c, kill_last()). */
  if (HARK__UNLIKELY(validating) && e == r->v + r->n && !ctx->saw_dead &&
      !hark__fenced && atomic_load(&hark__epoch) == epoch0 &&
      atomic_load(&hark__killing) == 0)
    atomic_store_explicit(&((rlist *)r)->valid_at, epoch0,
                          memory_order_release);
  int called = (int)(e - r->v) - skipped;
  if (mode == M_SEND && HARK__UNLIKELY(stop != 0)) {
    ctx->stopped.called = called;
    return HARK_ESTOPPED;
  }
  return mode == M_ROBUST ? failed : called;
}

/* The send without a list: when the list cannot be built (no memory) or
 * sends nest deeper than the hazards reach. Connections are taken a batch
 * at a time under the lock, each with a reference, and called after it is
 * released, in connection order; none connected after the send started
 * is called. Slower, but it delivers. */
#define BATCH 32

static int walk_locked(hark_signal *sig, void *sender, void *args,
                       const enum mode mode, emit_ctx *ctx) {
  conn *batch[BATCH];
  uint64_t last = 0, limit = 0;
  int called = 0, failed = 0, stop = 0;
  bool first = true, stopped = false;
  while (!stopped) {
    size_t n = 0;
    lock(sig);
    if (first) {
      limit = sig->seq;
      first = false;
    }
    bucket *b = sender ? bucket_find(sig, sender) : NULL;
    conn *x = sig->any.head, *y = b != NULL ? b->head : NULL;
    for (conn *c; n < BATCH && (c = next_in_order(&x, &y)) != NULL;) {
      if (c->seq <= last)
        continue;
      if (c->seq > limit)
        break;
      atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
      batch[n++] = c;
    }
    unlock(sig);
    if (n == 0)
      break;
    last = batch[n - 1]->seq;
    for (size_t i = 0; i < n; i++) {
      conn *c = batch[i];
      int rv = 0;
      if (!stopped) {
        void *held = NULL;
        int how = call_checked(sig, c, sender, args, ctx, &rv, &held);
        if (how == QUEUED)
          called++;
        else if (how == CALL) {
          called++;
          stopped = result(mode, ctx, c->fn, conn_self(c), rv, &failed, &stop);
          if (held != NULL)
            hark__unref(held);
        }
      }
      conn_unref(c);
    }
  }
  if (mode == M_SEND && stop != 0) {
    ctx->stopped.called = called;
    return HARK_ESTOPPED;
  }
  return mode == M_ROBUST ? failed : called;
}

/* Inlined into each kind of send, so that mode is a constant. */
static inline __attribute__((always_inline)) int emit(hark_signal *sig,
                                                      void *sender, void *args,
                                                      const enum mode mode,
                                                      emit_ctx *ctx) {
  if (sig == NULL)
    return HARK_EINVAL;
  hark__thr *me = hark__self();
  /* one computation of the record's address, kept in a register, rather
   * than one per access to it */
  __asm__("" : "+r"(me));
  const unsigned level = me->depth;
  int ret;
  if (HARK__LIKELY(level < HARK__LEVELS)) {
    /* The send keeps the signal and the sender alive for its duration:
     * a last unref of either on this thread is handed to this level
     * (object.c, drop()) and paid below. */
    hark__hazard *hz = &me->hz[level];
    hz->sig = sig;
    hz->sender = sender;
    me->depth = level + 1;
    /* before the lookup: see walk() */
    unsigned long epoch0 =
        atomic_load_explicit(&hark__epoch, memory_order_acquire);
    rlist *r = lookup(sig, sender, hz);
    if (HARK__UNLIKELY(r == NULL) && lookup_slow(sig, sender, hz, &r) != 0)
      r = NULL;
    if (HARK__LIKELY(r != NULL)) {
      ret = walk(sig, r, epoch0, hz, sender, args, mode, ctx);
    } else {
      ret = walk_locked(sig, sender, args, mode, ctx);
    }
    atomic_store_explicit(&hz->list, NULL, memory_order_release);
    if (sender != NULL)
      atomic_store_explicit(&hz->tab, NULL, memory_order_release);
    /* still holding sig and sender: dropping the dead may run finalizers */
    if (HARK__UNLIKELY(ctx->saw_dead))
      purge_after_send(sig, sender);
    me->depth = level;
    /* what receivers dropped of sig, sender or themselves, last */
    hark__settle(hz);
  } else {
    /* deeper than the levels reach: real references */
    hark__ref(sig);
    if (sender != NULL)
      hark__ref(sender);
    me->depth = level + 1;
    ret = walk_locked(sig, sender, args, mode, ctx);
    me->depth = level;
    if (HARK__UNLIKELY(ctx->saw_dead))
      purge_after_send(sig, sender);
    if (sender != NULL)
      hark__unref(sender);
    hark__unref(sig);
  }
  hark__check_kick(me);
  return ret;
}

int hark_send(hark_signal *sig, void *sender, void *args) {
  emit_ctx ctx; /* a plain send reads only saw_dead */
  ctx.saw_dead = false;
  return emit(sig, sender, args, M_SEND, &ctx);
}

int hark_send_ex(hark_signal *sig, void *sender, void *args,
                 hark_send_result *res) {
  emit_ctx ctx;
  ctx.saw_dead = false;
  int r = emit(sig, sender, args, M_SEND, &ctx);
  if (res != NULL) {
    if (r == HARK_ESTOPPED)
      *res = ctx.stopped;
    else
      *res = (hark_send_result){r >= 0 ? r : 0, 0, NULL, NULL};
  }
  return r;
}

int hark_send_robust(hark_signal *sig, void *sender, void *args,
                     void (*on_result)(void *data, hark_receiver_fn fn,
                                       void *self, int result),
                     void *data) {
  emit_ctx ctx = {on_result, NULL, data, false, {0, 0, NULL, NULL}};
  return emit(sig, sender, args, M_ROBUST, &ctx);
}

int hark_send_accumulate(hark_signal *sig, void *sender, void *args,
                         int (*acc)(void *data, hark_receiver_fn fn, void *self,
                                    int result),
                         void *data) {
  if (acc == NULL)
    return HARK_EINVAL;
  emit_ctx ctx = {NULL, acc, data, false, {0, 0, NULL, NULL}};
  return emit(sig, sender, args, M_ACC, &ctx);
}

static bool conn_callable(conn *c) {
  return !(atomic_load(&c->slow) & (C_REMOVED | C_FIRED | C_BLOCKED)) &&
         !conn_dead(c);
}

bool hark_has_listeners(hark_signal *sig, void *sender) {
  return hark_has_receivers(sig, sender);
}

bool hark_has_receivers(hark_signal *sig, void *sender) {
  if (sig == NULL)
    return false;
  hark__thr *me = hark__self();
  const unsigned level = me->depth;
  bool found = false;
  rlist *r = NULL;
  if (level < HARK__LEVELS) {
    hark__hazard *hz = &me->hz[level];
    hz->sig = hz->sender = NULL;
    me->depth++; /* the level is ours while the hazards name something */
    r = lookup(sig, sender, hz);
    if (r == NULL && lookup_slow(sig, sender, hz, &r) != 0)
      r = NULL;
    for (size_t i = 0; r != NULL && i < r->n && !found; i++)
      found = conn_callable(r->v[i].c);
    atomic_store_explicit(&hz->list, NULL, memory_order_release);
    atomic_store_explicit(&hz->tab, NULL, memory_order_release);
    me->depth--;
    hark__check_kick(me);
  }
  if (r == NULL) {
    /* no memory for the list, or nested too deep: ask the buckets */
    lock(sig);
    bucket *b = sender ? bucket_find(sig, sender) : NULL;
    for (int pass = 0; pass < 2 && !found; pass++) {
      bucket *x = pass == 0 ? &sig->any : b;
      for (conn *c = x ? x->head : NULL; c != NULL && !found; c = c->next)
        found = conn_callable(c);
    }
    unlock(sig);
  }
  return found;
}
