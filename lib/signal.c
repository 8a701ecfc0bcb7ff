/* Signals: Django's dispatcher with weak bound-method receivers.
 *
 * Layout. Connections are kept per sender in a bucket (plus one bucket for
 * the any-sender receivers), each a list in connection order; an identity
 * index finds a connection by (fn, self, sender) or (uid, sender) without
 * scanning. Each bucket caches the array a send from its sender walks: its
 * own receivers merged with the any-sender ones in connection order. The
 * sender table and the caches are read without a lock; writers (under the
 * signal's mutex) publish new arrays and retire old ones.
 *
 * Why a send needs no lock and no atomic read-modify-write per receiver:
 * everything a send may read (arrays, connections, buckets, receiver
 * objects that die meanwhile) is released through hark__retire(), which
 * waits until no send is in flight. A send checks each receiver's strong
 * count with a plain load; a receiver that dies after the check is still
 * in memory (its finalize waits), and one that died before is skipped.
 *
 * Lock rules: nothing that may run user code (hark_unref, value frees,
 * receivers) runs under the signal's mutex; death notifications of
 * senders take it, so dropping a reference under it could deadlock. */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct bucket bucket;
typedef struct conn conn;

/* One receiver as a send sees it: what never changes for a connection is
 * copied here so that the send loop makes no dependent load for it. */
typedef struct rent {
  conn *c;
  hark_receiver_fn fn; /* NULL: always take the slow path (HARK_ONCE,
                          loop-bound, or blocked when the list was built) */
  void *obj;           /* self's object */
} rent;

/* The receivers a send walks, immutable once published. */
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

/* conn.slow: zero for a plain, connected, unblocked receiver, so a send
 * tests one word per receiver; the block count lives in the high bits */
#define C_REMOVED 1u
#define C_FIRED 2u
#define C_SLOW_ONCE 4u
#define C_SLOW_LOOP 8u
#define C_BLOCK_ONE 256u
/* conn.flags bits beyond the public ones */
#define C_EXT 0x100u  /* allocated as conn_ext */
#define C_UID 0x200u  /* identity is (uid, sender) */
#define C_LOOP 0x400u /* bound to a hark loop */

struct conn {
  hark_receiver_fn fn;
  hark__ctrl *self; /* weakly held always; strongly too with HARK_STRONG */
  bucket *b;
  union {
    struct {
      conn *prev, *next;
    } l;                  /* in the bucket's list, while connected */
    hark__retired retire; /* after */
  } u;
  uint64_t seq;
  _Atomic uint32_t slow;
  uint32_t flags;
};

typedef struct dbg {
  hark_notify n;
  _Atomic int refs; /* the connection's and the notification's */
  char name[];
} dbg;

typedef struct conn_ext {
  conn c;
  hark_loop *loop;
  dbg *dbg;
  char uid[];
} conn_ext;

struct bucket {
  hark_notify node; /* the sender's death; unused in the any bucket */
  void *sender;     /* NULL for the any bucket */
  hark_signal *sig;
  conn *head, *tail;
  size_t count;
  rlist *_Atomic cache; /* NULL when stale */
  hark__retired retire;
  bool orphan; /* signal finalized while the sender's death was on its way */
};

/* Sender table: open addressing, readable without the lock. */
typedef struct stable {
  hark__retired retire;
  size_t mask;
  size_t used; /* live + tombstones */
  size_t live;
  bucket *_Atomic slot[];
} stable;

static bucket tomb_bucket;
#define TOMB (&tomb_bucket)

struct hark_signal {
  hark_object base;
  char *name;
  pthread_mutex_t lock;
  bucket any;
  stable *_Atomic senders;
  conn **index; /* identity index, under the lock */
  size_t index_mask, index_used, index_live;
  _Atomic unsigned long any_gen;
  uint64_t seq;
  _Atomic size_t count;
  _Atomic size_t max_receivers;
  bool warned;
  void *(*args_copy)(void *args);
  void (*args_free)(void *args);
  _Atomic long pins; /* the object's, plus late sender notifications */
  struct hark_signal *reg_prev, *reg_next;
};

/* Memory retired while the mutex is held is reclaimed after unlocking:
 * reclaiming may run finalizers, which may use this signal. */
static void lock(hark_signal *sig) {
  pthread_mutex_lock(&sig->lock);
  hark__hold();
}

static void unlock(hark_signal *sig) {
  pthread_mutex_unlock(&sig->lock);
  hark__unhold();
}

static conn tomb_conn;
#define CTOMB (&tomb_conn)

/* initial-exec: a send must not pay a __tls_get_addr call */
static _Thread_local unsigned send_depth
    __attribute__((tls_model("initial-exec")));

unsigned hark__send_depth(void) { return send_depth; }

/* ---- the registry of live signals, for idle sweeping ---------------- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static hark_signal *registry;

/* ---- hashing ----------------------------------------------------------- */

static size_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return (size_t)x;
}

static size_t hash_ptr(const void *p) { return mix((uintptr_t)p); }

static size_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  while (*s)
    h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
  return mix(h);
}

static void *conn_self(const conn *c) { return c->self ? c->self->obj : NULL; }

static conn_ext *ext(conn *c) { return (conn_ext *)c; }

static size_t id_hash(hark_receiver_fn fn, const void *self, const char *uid,
                      const void *sender) {
  if (uid != NULL)
    return hash_str(uid) ^ hash_ptr(sender);
  uintptr_t f;
  memcpy(&f, &fn, sizeof(f) < sizeof(fn) ? sizeof(f) : sizeof(fn));
  return mix(f ^ ((uintptr_t)self * 0x9e3779b97f4a7c15ULL) ^
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

/* ---- sender table (writes under the lock, reads lock-free) ------------- */

static void free_retired(hark__retired *r) { hark__free(r); }

static bucket *stable_find(stable *t, const void *sender) {
  if (t == NULL)
    return NULL;
  size_t i = hash_ptr(sender) & t->mask;
  for (;;) {
    bucket *b = atomic_load(&t->slot[i]);
    if (b == NULL)
      return NULL;
    if (b != TOMB && b->sender == sender)
      return b;
    i = (i + 1) & t->mask;
  }
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
  n->retire.fn = free_retired;
  for (size_t i = 0; i < cap; i++) {
    bucket *b = atomic_load(&t->slot[i]);
    if (b == NULL || b == TOMB)
      continue;
    size_t j = hash_ptr(b->sender) & n->mask;
    while (atomic_load(&n->slot[j]) != NULL)
      j = (j + 1) & n->mask;
    atomic_store(&n->slot[j], b);
  }
  n->used = n->live = live;
  atomic_store(&sig->senders, n);
  if (t != NULL)
    hark__retire(&t->retire);
  return 0;
}

static void stable_insert(hark_signal *sig, bucket *b) {
  stable *t = atomic_load(&sig->senders);
  size_t i = hash_ptr(b->sender) & t->mask;
  bucket *s;
  while ((s = atomic_load(&t->slot[i])) != NULL && s != TOMB)
    i = (i + 1) & t->mask;
  if (s == NULL)
    t->used++;
  t->live++;
  atomic_store(&t->slot[i], b);
}

static void stable_remove(hark_signal *sig, bucket *b) {
  stable *t = atomic_load(&sig->senders);
  size_t i = hash_ptr(b->sender) & t->mask;
  while (atomic_load(&t->slot[i]) != b)
    i = (i + 1) & t->mask;
  atomic_store(&t->slot[i], TOMB);
  t->live--;
}

/* ---- releasing ------------------------------------------------------------ */

static void dbg_unref(dbg *d) {
  if (atomic_fetch_sub(&d->refs, 1) == 1)
    hark__free(d);
}

static void dbg_died(hark_notify *n, void *obj) {
  dbg *d = HARK__CONTAINER_OF(n, dbg, n);
  const hark_type *t = hark_object_type(obj);
  fprintf(stderr,
          "hark: receiver %p (%s) died while connected to signal '%s'\n", obj,
          t && t->name ? t->name : "(unnamed)", d->name);
  dbg_unref(d);
}

/* Frees a connection once no send can hold it. */
static void conn_free(hark__retired *r) {
  conn *c = HARK__CONTAINER_OF(r, conn, u.retire);
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

static void bucket_free(hark__retired *r) {
  bucket *b = HARK__CONTAINER_OF(r, bucket, retire);
  rlist *l = atomic_load(&b->cache);
  if (l != NULL)
    hark__free(l);
  hark__free(b);
}

/* Connections detached under the lock wait in a chain (through
 * u.retire.next) until it is released: then their strong references are
 * dropped and their memory retired. */
static void release_chain(conn *chain) {
  while (chain != NULL) {
    conn *next = (conn *)chain->u.retire.next;
    if ((chain->flags & HARK_STRONG) && chain->self != NULL)
      hark_unref(chain->self->obj);
    if (chain->flags & C_LOOP)
      hark_unref(ext(chain)->loop);
    chain->u.retire.fn = conn_free;
    hark__retire(&chain->u.retire);
    chain = next;
  }
}

static void invalidate(hark_signal *sig, bucket *b) {
  rlist *old = atomic_exchange(&b->cache, NULL);
  if (old != NULL)
    hark__retire(&old->retire);
  if (b == &sig->any)
    atomic_fetch_add(&sig->any_gen, 1);
}

/* Unlinks c from its bucket and the index (lock held) and chains it. */
static void detach(hark_signal *sig, conn *c, conn **chain, bool in_index) {
  bucket *b = c->b;
  atomic_fetch_or(&c->slow, C_REMOVED);
  if (c->u.l.prev != NULL)
    c->u.l.prev->u.l.next = c->u.l.next;
  else
    b->head = c->u.l.next;
  if (c->u.l.next != NULL)
    c->u.l.next->u.l.prev = c->u.l.prev;
  else
    b->tail = c->u.l.prev;
  b->count--;
  atomic_fetch_sub(&sig->count, 1);
  if (in_index)
    index_remove(sig, c);
  invalidate(sig, b);
  /* after the invalidation: a send that reads the new epoch before its
   * lookup finds the new list */
  atomic_fetch_add(&hark__epoch, 1);
  c->u.retire.next = (hark__retired *)*chain;
  *chain = c;
}

/* Drops a sender bucket left empty (lock held). If its sender is dying
 * on another thread, its notification will come and drop it instead. */
static void maybe_drop_bucket(hark_signal *sig, bucket *b) {
  if (b == &sig->any || b->count > 0)
    return;
  if (hark_notify_remove(&b->node) == 1) {
    stable_remove(sig, b);
    b->retire.fn = bucket_free;
    hark__retire(&b->retire);
  }
}

static bool conn_dead(const conn *c) {
  return c->self != NULL && !hark__ctrl_alive(c->self);
}

/* Detaches the dead weak receivers of b (lock held); returns how many. */
static size_t purge(hark_signal *sig, bucket *b, conn **chain) {
  size_t n = 0;
  conn *c = b->head;
  while (c != NULL) {
    conn *next = c->u.l.next;
    if (conn_dead(c)) {
      detach(sig, c, chain, true);
      n++;
    }
    c = next;
  }
  return n;
}

/* Finds the connection with this identity (lock held). One whose weak
 * receiver has died counts as gone: it is dropped here, so that a new
 * object at a dead receiver's address is never taken for it. */
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

/* A sender died: its connections and its bucket go. */
static void sender_died(hark_notify *n, void *obj) {
  (void)obj;
  bucket *b = HARK__CONTAINER_OF(n, bucket, node);
  hark_signal *sig = b->sig;
  conn *chain = NULL;
  lock(sig);
  if (b->orphan) {
    unlock(sig);
    b->retire.fn = bucket_free;
    hark__retire(&b->retire);
    unpin(sig);
    return;
  }
  while (b->head != NULL)
    detach(sig, b->head, &chain, true);
  stable_remove(sig, b);
  unlock(sig);
  release_chain(chain);
  b->retire.fn = bucket_free;
  hark__retire(&b->retire);
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
  stable *t = atomic_exchange(&sig->senders, NULL);
  for (size_t i = 0; t != NULL && i <= t->mask; i++) {
    bucket *b = atomic_load(&t->slot[i]);
    if (b == NULL || b == TOMB)
      continue;
    while (b->head != NULL)
      detach(sig, b->head, &chain, false);
    if (hark_notify_remove(&b->node) == 1) {
      b->sender = dead;
      dead = b;
    } else {
      b->orphan = true;
      atomic_fetch_add(&sig->pins, 1);
    }
  }
  hark__free(sig->index);
  sig->index = NULL;
  rlist *any = atomic_exchange(&sig->any.cache, NULL);
  unlock(sig);

  release_chain(chain);
  while (dead != NULL) {
    bucket *next = dead->sender;
    dead->retire.fn = bucket_free;
    hark__retire(&dead->retire);
    dead = next;
  }
  if (any != NULL)
    hark__retire(&any->retire);
  if (t != NULL)
    hark__retire(&t->retire);
  unpin(sig);
}

static const hark_type signal_type = {"hark_signal", sizeof(hark_signal),
                                      signal_finalize};

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

static int do_connect(hark_signal *sig, const char *uid, hark_loop *loop,
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
  bool is_ext = uid != NULL || loop != NULL || want_dbg;
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
  c->flags =
      flags | (is_ext ? C_EXT : 0) | (uid ? C_UID : 0) | (loop ? C_LOOP : 0);
  atomic_init(&c->slow, ((flags & HARK_ONCE) ? C_SLOW_ONCE : 0) |
                            (loop ? C_SLOW_LOOP : 0));
  if (is_ext) {
    ext(c)->loop = loop;
    ext(c)->dbg = d;
    if (uid)
      memcpy(ext(c)->uid, uid, uidlen);
  }

  conn *chain = NULL;
  bucket *fresh = NULL;
  int err = 0;
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
    b = stable_find(atomic_load(&sig->senders), sender);
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
    if (flags & HARK_STRONG)
      hark_ref(self);
    else
      atomic_fetch_or(&sc->flags, HARK__CTRL_RECEIVER);
  }
  if (loop != NULL)
    hark_ref(loop);
  c->u.l.prev = b->tail;
  c->u.l.next = NULL;
  if (b->tail != NULL)
    b->tail->u.l.next = c;
  else
    b->head = c;
  b->tail = c;
  b->count++;
  atomic_fetch_add(&sig->count, 1);
  index_insert(sig, c);
  invalidate(sig, b);
  size_t max = atomic_load(&sig->max_receivers);
  if (max != 0 && b->count > max && !sig->warned) {
    sig->warned = true;
    fprintf(stderr,
            "hark: warning: signal '%s' has %zu receivers for one %s "
            "(limit %zu): a leak? hark_signal_set_max_receivers() raises "
            "the limit\n",
            sig->name, b->count, b == &sig->any ? "any-sender list" : "sender",
            max);
  }
  c = NULL;
  d = NULL;
out:
  unlock(sig);
  release_chain(chain);
  hark__free(fresh);
  hark__free(d);
  hark__free(c);
  return err;
}

int hark_connect(hark_signal *sig, hark_receiver_fn fn, void *self,
                 void *sender, unsigned flags) {
  return do_connect(sig, NULL, NULL, fn, self, sender, flags);
}

int hark_connect_uid(hark_signal *sig, const char *uid, hark_receiver_fn fn,
                     void *self, void *sender, unsigned flags) {
  if (uid == NULL)
    return HARK_EINVAL;
  return do_connect(sig, uid, NULL, fn, self, sender, flags);
}

int hark_connect_loop(hark_signal *sig, hark_loop *hl, hark_receiver_fn fn,
                      void *self, void *sender, unsigned flags) {
  if (hl == NULL)
    return HARK_EINVAL;
  return do_connect(sig, NULL, hl, fn, self, sender, flags);
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
  if (slot == NULL) {
    err = HARK_ENOENT;
  } else if (delta < 0 && atomic_load(&(*slot)->slow) < C_BLOCK_ONE) {
    err = HARK_ERANGE;
  } else {
    if (delta > 0)
      atomic_fetch_add(&(*slot)->slow, C_BLOCK_ONE);
    else
      atomic_fetch_sub(&(*slot)->slow, C_BLOCK_ONE);
    /* lists mark blocked receivers for the slow path: rebuild them */
    invalidate(sig, (*slot)->b);
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
    bucket *b = atomic_load(&t->slot[i]);
    if (b == NULL || b == TOMB)
      continue;
    if (purge(sig, b, &chain) > 0)
      maybe_drop_bucket(sig, b);
  }
  unlock(sig);
  size_t count = 0;
  for (conn *c = chain; c != NULL; c = (conn *)c->u.retire.next)
    count++;
  release_chain(chain);
  return count;
}

/* Takes a strong reference to the first live signal from s on (registry
 * lock held). */
static hark_signal *next_live(hark_signal *s) {
  while (s != NULL && hark__ctrl_upgrade(hark__ctrl_of(s)) == NULL)
    s = s->reg_next;
  return s;
}

/* The registry lock is not held while a signal is swept: dropping a
 * connection may drop the last reference to a loop, whose queued posts
 * hold signals, whose finalize takes the registry lock. A reference keeps
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

/* ---- sending --------------------------------------------------------------- */

/* The published list for a send from sender, or NULL if it must be built. */
static inline rlist *current_list(hark_signal *sig, const void *sender) {
  bucket *b = sender ? stable_find(atomic_load(&sig->senders), sender) : NULL;
  if (b == NULL) {
    return atomic_load(&sig->any.cache);
  }
  unsigned long gen = atomic_load(&sig->any_gen);
  rlist *r = atomic_load(&b->cache);
  return r != NULL && r->gen == gen ? r : NULL;
}

/* Builds and publishes the list of b (lock held). */
static int rebuild(hark_signal *sig, bucket *b, rlist **out) {
  bucket *any = &sig->any;
  size_t n = any->count + (b != any ? b->count : 0);
  rlist *r = hark__malloc(sizeof(*r) + n * sizeof(r->v[0]));
  if (r == NULL)
    return HARK_ENOMEM;
  r->retire.fn = free_retired;
  r->gen = atomic_load(&sig->any_gen);
  r->n = n;
  /* read before the checks below, like a validating send */
  unsigned long epoch = atomic_load(&hark__epoch);
  bool all_ok = true;
  conn *x = any->head, *y = b != any ? b->head : NULL;
  size_t i = 0;
  while (x != NULL || y != NULL) {
    conn *c;
    if (y == NULL || (x != NULL && x->seq < y->seq)) {
      c = x;
      x = x->u.l.next;
    } else {
      c = y;
      y = y->u.l.next;
    }
    r->v[i].c = c;
    r->v[i].fn = atomic_load(&c->slow) != 0 ? NULL : c->fn;
    r->v[i].obj = c->self ? c->self->obj : NULL;
    if (conn_dead(c))
      all_ok = false;
    i++;
  }
  atomic_init(&r->valid_at, all_ok ? epoch : ~0UL);
  rlist *old = atomic_exchange(&b->cache, r);
  if (old != NULL)
    hark__retire(&old->retire);
  *out = r;
  return 0;
}

/* The list is stale: rebuild it under the lock (out of line: rare). */
static __attribute__((noinline)) int
lookup_slow(hark_signal *sig, const void *sender, rlist **out) {
  rlist *r;
  int err = 0;
  lock(sig);
  r = current_list(sig, sender);
  if (r == NULL) {
    bucket *b = sender ? stable_find(atomic_load(&sig->senders), sender) : NULL;
    err = rebuild(sig, b ? b : &sig->any, &r);
  }
  unlock(sig);
  *out = r;
  return err;
}

static inline __attribute__((always_inline)) int
lookup(hark_signal *sig, const void *sender, rlist **out) {
  rlist *r = current_list(sig, sender);
  if (__builtin_expect(r != NULL, 1)) {
    *out = r;
    return 0;
  }
  return lookup_slow(sig, sender, out);
}

/* After a send met dead receivers: drop them from the buckets it used. */
static void purge_after_send(hark_signal *sig, const void *sender) {
  conn *chain = NULL;
  lock(sig);
  purge(sig, &sig->any, &chain);
  bucket *b = sender ? stable_find(atomic_load(&sig->senders), sender) : NULL;
  if (b != NULL && purge(sig, b, &chain) > 0)
    maybe_drop_bucket(sig, b);
  unlock(sig);
  release_chain(chain);
}

enum mode { M_SEND, M_ROBUST, M_ACC };

typedef struct emit_ctx {
  enum mode mode;
  void (*on_result)(void *data, hark_receiver_fn fn, void *self, int result);
  int (*acc)(void *data, hark_receiver_fn fn, void *self, int result);
  void *data;
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

/* A queued call of a loop-bound receiver from another thread. */
static int queue_call(hark_signal *sig, const rent *e, void *sender, void *hold,
                      void *args) {
  void *a = args;
  void (*afree)(void *) = NULL;
  if (sig->args_copy != NULL) {
    a = sig->args_copy(args);
    if (a == NULL)
      return HARK_ENOMEM;
    afree = sig->args_free;
  }
  int err = hark__loop_queue_call(ext(e->c)->loop, e->c->fn, e->c->self,
                                  sender ? hark__ctrl_of(sender) : NULL, hold,
                                  a, afree);
  if (err != 0 && afree != NULL)
    afree(a);
  return err;
}

enum { CALL, SKIP, QUEUED };

/* The uncommon receivers: blocked, removed, HARK_ONCE, loop-bound. */
static int slow_receiver(hark_signal *sig, const rent *e, uint32_t slow,
                         void *sender, void *args, bool *strong_after) {
  if (slow & ~(C_SLOW_ONCE | C_SLOW_LOOP))
    return SKIP; /* removed, fired or blocked */
  conn *c = e->c;
  if (slow & C_SLOW_ONCE) {
    if (atomic_fetch_or(&c->slow, C_FIRED) & C_FIRED)
      return SKIP;
    /* the connection holds self strongly until it goes: keep it alive
     * across the call */
    if (e->obj != NULL && (c->flags & HARK_STRONG)) {
      hark__ref(e->obj);
      *strong_after = true;
    }
    once_detach(sig, c);
  }
  if ((slow & C_SLOW_LOOP) && !hark__loop_is_current(ext(c)->loop)) {
    /* the reference keeping self alive across the call goes with the
     * queued call: the connection that held self strongly is gone */
    void *hold = *strong_after ? e->obj : NULL;
    int queued = queue_call(sig, e, sender, hold, args) == 0;
    if (*strong_after) {
      *strong_after = false;
      if (!queued)
        hark__unref(e->obj);
    }
    return queued ? QUEUED : SKIP;
  }
  return CALL;
}

/* The send loop, specialised per mode by the compiler. Returns the
 * result of the send; sets *saw_dead when it met a dead receiver.
 *
 * Fast path: while hark__epoch holds the value read before the lookup, and
 * the list was validated at that value, every receiver in it is
 * connected, unblocked and alive, or died concurrently on another thread
 * after this send started: its finalize then waits for the send, because
 * the in-flight count was raised before the epoch was read. Once the
 * epoch moves (a receiver of this send may have disconnected or killed
 * another), every remaining receiver is checked. */
/* A receiver that needs checking (see walk): returns SKIP, QUEUED, or CALL
 * after calling it, with its result in *rv. Kept out of line so that the
 * fast path stays small. */
static __attribute__((noinline)) int checked_call(hark_signal *sig,
                                                  const rent *e, void *sender,
                                                  void *args, bool *saw_dead,
                                                  int *rv) {
  if (e->c->self != NULL && !hark__ctrl_alive(e->c->self)) {
    *saw_dead = true;
    return SKIP;
  }
  bool strong_after = false;
  uint32_t slow = atomic_load_explicit(&e->c->slow, memory_order_acquire);
  if (slow != 0) {
    int how = slow_receiver(sig, e, slow, sender, args, &strong_after);
    if (how != CALL)
      return how;
  }
  *rv = e->c->fn(e->obj, sender, args);
  if (strong_after)
    hark__unref(e->obj);
  return CALL;
}

static inline __attribute__((always_inline)) int
walk(hark_signal *sig, const rlist *r, unsigned long epoch0, void *sender,
     void *args, const enum mode mode, const emit_ctx *ctx, bool *saw_dead) {
  const size_t n = r->n;
  const rent *v = r->v;
  int skipped = 0, failed = 0;
  const bool validating = atomic_load(&r->valid_at) != epoch0;
  /* an unvalidated list compares against a value the epoch never holds */
  const unsigned long fast_at = validating ? ~0UL : epoch0;
  size_t i;
  for (i = 0; i < n; i++) {
    const rent *e = &v[i];
    hark_receiver_fn fn = e->fn;
    int rv = 0;
    if (__builtin_expect(fn != NULL && atomic_load(&hark__epoch) == fast_at,
                         1)) {
      rv = fn(e->obj, sender, args);
    } else {
      int how = checked_call(sig, e, sender, args, saw_dead, &rv);
      if (how != CALL) {
        skipped += how == SKIP; /* a queued call counts as called */
        continue;
      }
      fn = e->c->fn;
    }
    if (mode == M_SEND) {
      if (rv != 0)
        return rv;
    } else if (mode == M_ROBUST) {
      if (rv != 0)
        failed++;
      if (ctx->on_result != NULL)
        ctx->on_result(ctx->data, fn, e->obj, rv);
    } else if (ctx->acc(ctx->data, fn, e->obj, rv) != 0) {
      i++;
      break;
    }
  }
  /* A complete walk that checked everyone and met no dead receiver
   * validates the list at the epoch read before it started. */
  if (validating && i == n && !*saw_dead)
    atomic_store(&((rlist *)r)->valid_at, epoch0);
  return mode == M_ROBUST ? failed : (int)i - skipped;
}

/* Inlined into each kind of send, so that mode is a constant. */
static inline __attribute__((always_inline)) int emit(hark_signal *sig,
                                                      void *sender, void *args,
                                                      const enum mode mode,
                                                      const emit_ctx *ctx) {
  if (sig == NULL)
    return HARK_EINVAL;
  /* The send keeps the signal and the sender alive for its duration: by
   * pins (see internal.h), or by references when sends nest too deep. */
  unsigned base = hark__npins;
  bool pinned = base + 2 <= HARK__PINS;
  if (pinned) {
    hark__pins[base] = (hark__pin){sig, 0};
    hark__pins[base + 1] = (hark__pin){sender, 0};
    hark__npins = base + 2;
  } else {
    hark__ref(sig);
    if (sender != NULL)
      hark__ref(sender);
  }
  hark__enter();
  send_depth++;
  /* before the lookup: see walk() */
  unsigned long epoch0 = atomic_load(&hark__epoch);
  rlist *r;
  bool saw_dead = false;
  int ret = lookup(sig, sender, &r);
  if (ret == 0) {
    ret = walk(sig, r, epoch0, sender, args, mode, ctx, &saw_dead);
  }
  send_depth--;
  if (saw_dead)
    purge_after_send(sig, sender);
  hark__leave();
  if (pinned) {
    /* pay what receivers dropped, in the order references would go;
     * an outer send that pinned the same object takes the debt over */
    unsigned owe_sender = hark__pins[base + 1].owed;
    unsigned owe_sig = hark__pins[base].owed;
    hark__npins = base;
    while (owe_sender-- > 0)
      hark__unref(sender);
    while (owe_sig-- > 0)
      hark__unref(sig);
  } else {
    if (sender != NULL)
      hark__unref(sender);
    hark__unref(sig);
  }
  return ret;
}

int hark_send(hark_signal *sig, void *sender, void *args) {
  emit_ctx ctx = {M_SEND, NULL, NULL, NULL};
  return emit(sig, sender, args, M_SEND, &ctx);
}

int hark_send_robust(hark_signal *sig, void *sender, void *args,
                     void (*on_result)(void *data, hark_receiver_fn fn,
                                       void *self, int result),
                     void *data) {
  emit_ctx ctx = {M_ROBUST, on_result, NULL, data};
  return emit(sig, sender, args, M_ROBUST, &ctx);
}

int hark_send_accumulate(hark_signal *sig, void *sender, void *args,
                         int (*acc)(void *data, hark_receiver_fn fn, void *self,
                                    int result),
                         void *data) {
  if (acc == NULL)
    return HARK_EINVAL;
  emit_ctx ctx = {M_ACC, NULL, acc, data};
  return emit(sig, sender, args, M_ACC, &ctx);
}

bool hark_has_listeners(hark_signal *sig, void *sender) {
  if (sig == NULL)
    return false;
  bool found = false;
  hark__enter();
  rlist *r;
  if (lookup(sig, sender, &r) == 0) {
    for (size_t i = 0; i < r->n && !found; i++) {
      conn *c = r->v[i].c;
      found = !(atomic_load(&c->slow) & ~(C_SLOW_ONCE | C_SLOW_LOOP)) &&
              !conn_dead(c);
    }
  } else {
    /* no memory for the list: answer from the buckets under the lock */
    lock(sig);
    bucket *b = sender ? stable_find(atomic_load(&sig->senders), sender) : NULL;
    for (int pass = 0; pass < 2 && !found; pass++) {
      bucket *x = pass == 0 ? &sig->any : b;
      for (conn *c = x ? x->head : NULL; c != NULL && !found; c = c->u.l.next)
        found = atomic_load(&c->slow) < C_BLOCK_ONE && !conn_dead(c);
    }
    unlock(sig);
  }
  hark__leave();
  return found;
}
