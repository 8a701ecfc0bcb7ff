/* Weak-key map: an entry lives while its key object lives.
 *
 * Each entry registers a death notification on its key. The notification
 * and hark_weakmap_remove/free can race when the key dies on one thread
 * while another removes it; the rule that settles it: whoever unlinks the
 * entry from the map releases the value, and if the notification was
 * already on its way (hark_notify_remove returned 0) the notification frees
 * the entry's memory. Entries hold a reference on the map so that a late
 * notification can still take its lock after hark_weakmap_free. */
#include "internal.h"

#include <pthread.h>

typedef struct entry {
  hark_notify node; /* on the key's death */
  hark__ctrl *key;  /* identity; valid while the node is registered */
  void *value;
  hark_weakmap *map;
  struct entry *next; /* hash chain */
  bool detached;      /* unlinked, value released, by remove */
  bool orphan;        /* the map was freed: the notify releases all */
} entry;

struct hark_weakmap {
  pthread_mutex_t lock;
  struct hark_weakmap *reg_prev, *reg_next; /* the registry, under its lock */
  void (*value_free)(void *value);
  void *(*value_ref)(void *value);
  void (*value_traverse)(void *value, hark_visit_fn visit, void *arg);
  entry **buckets;
  size_t nbuckets; /* power of two, or 0 */
  size_t count;
  _Atomic long refs; /* the owner's plus one per entry */
};

/* Every live map, for the leak finder and the tracker. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static hark_weakmap *registry;
static _Atomic long live_maps, live_entries;

static void entry_free(entry *e) {
  hark__free(e);
  atomic_fetch_sub(&live_entries, 1);
}

static void map_unref(hark_weakmap *m) {
  if (atomic_fetch_sub(&m->refs, 1) == 1) {
    pthread_mutex_destroy(&m->lock);
    hark__free(m->buckets);
    hark__free(m);
  }
}

static entry **find_slot(hark_weakmap *m, const hark__ctrl *key) {
  if (m->nbuckets == 0)
    return NULL;
  entry **p = &m->buckets[hark__hash_ptr(key) & (m->nbuckets - 1)];
  while (*p != NULL && (*p)->key != key)
    p = &(*p)->next;
  return p;
}

static void unlink_entry(hark_weakmap *m, entry *e) {
  entry **p = find_slot(m, e->key);
  *p = e->next;
  m->count--;
}

static void release(hark_weakmap *m, void *value) {
  if (m->value_free != NULL && value != NULL)
    m->value_free(value);
}

static void key_died(hark_notify *n, void *obj) {
  (void)obj;
  entry *e = HARK__CONTAINER_OF(n, entry, node);
  hark_weakmap *m = e->map;
  pthread_mutex_lock(&m->lock);
  bool mine = !e->detached;
  if (mine && !e->orphan)
    unlink_entry(m, e);
  pthread_mutex_unlock(&m->lock);
  /* value_free runs unlocked: it may drop the last reference of another
   * key of this same map, whose notification takes the lock. */
  if (mine)
    release(m, e->value);
  entry_free(e);
  map_unref(m);
}

hark_weakmap *hark_weakmap_new_ops(const hark_weakmap_ops *ops) {
  hark_weakmap *m = hark__calloc(1, sizeof(*m));
  if (m == NULL)
    return NULL;
  if (pthread_mutex_init(&m->lock, NULL) != 0) {
    hark__free(m);
    return NULL;
  }
  if (ops != NULL) {
    m->value_free = ops->value_free;
    m->value_ref = ops->value_ref;
    m->value_traverse = ops->value_traverse;
  }
  atomic_init(&m->refs, 1);
  pthread_mutex_lock(&registry_lock);
  m->reg_next = registry;
  if (registry != NULL)
    registry->reg_prev = m;
  registry = m;
  atomic_fetch_add(&live_maps, 1);
  pthread_mutex_unlock(&registry_lock);
  return m;
}

hark_weakmap *hark_weakmap_new(void (*value_free)(void *value)) {
  hark_weakmap_ops ops = {value_free, NULL, NULL};
  return hark_weakmap_new_ops(&ops);
}

static int grow(hark_weakmap *m) {
  size_t n = m->nbuckets ? m->nbuckets * 2 : 8;
  entry **b = hark__calloc(n, sizeof(*b));
  if (b == NULL)
    return HARK_ENOMEM;
  for (size_t i = 0; i < m->nbuckets; i++) {
    entry *e = m->buckets[i];
    while (e != NULL) {
      entry *next = e->next;
      size_t j = hark__hash_ptr(e->key) & (n - 1);
      e->next = b[j];
      b[j] = e;
      e = next;
    }
  }
  hark__free(m->buckets);
  m->buckets = b;
  m->nbuckets = n;
  return 0;
}

int hark_weakmap_set(hark_weakmap *m, void *key, void *value) {
  if (m == NULL || key == NULL)
    return HARK_EINVAL;
  hark__ctrl *c = hark__ctrl_of(key);
  if (c == NULL || !hark__ctrl_alive(c))
    return HARK_ENOENT;
  entry *fresh = hark__calloc(1, sizeof(*fresh));
  if (fresh == NULL)
    return HARK_ENOMEM;
  void *old = NULL;
  bool replaced = false;
  int err = 0;
  pthread_mutex_lock(&m->lock);
  entry **p = find_slot(m, c);
  if (p != NULL && *p != NULL) {
    old = (*p)->value;
    (*p)->value = value;
    replaced = true;
  } else if (m->count + 1 > m->nbuckets && (err = grow(m)) != 0) {
    /* nothing changed */
  } else {
    fresh->key = c;
    fresh->value = value;
    fresh->map = m;
    err = hark_notify_add(&fresh->node, key, key_died);
    if (err == 0) {
      p = find_slot(m, c);
      *p = fresh;
      m->count++;
      atomic_fetch_add(&m->refs, 1);
      atomic_fetch_add(&live_entries, 1);
      fresh = NULL;
    }
  }
  pthread_mutex_unlock(&m->lock);
  hark__free(fresh);
  if (replaced && old != value)
    release(m, old);
  return err;
}

/* key is held by the caller, so its control block is its own: an entry
 * naming it is this key's, never a dead one's at the same address. */
static void *lookup(hark_weakmap *m, void *key, bool ref) {
  if (m == NULL || key == NULL || (ref && m->value_ref == NULL))
    return NULL;
  hark__ctrl *c = hark__ctrl_of(key);
  if (c == NULL)
    return NULL;
  void *v = NULL;
  pthread_mutex_lock(&m->lock);
  entry **p = find_slot(m, c);
  if (p != NULL && *p != NULL && (*p)->value != NULL)
    /* under the lock, so the value cannot be released meanwhile: its
     * release (remove, replace, key death) unlinks it under this lock */
    v = ref ? m->value_ref((*p)->value) : (*p)->value;
  pthread_mutex_unlock(&m->lock);
  return v;
}

void *hark_weakmap_get(hark_weakmap *m, void *key) {
  return lookup(m, key, true);
}

void *hark_weakmap_peek(hark_weakmap *m, void *key) {
  return lookup(m, key, false);
}

/* Unlinks e (lock held). Returns true if the caller now owns e's memory;
 * false if the key's notification is on its way and will free it. */
static bool detach(hark_weakmap *m, entry *e) {
  unlink_entry(m, e);
  if (hark_notify_remove(&e->node) == 1)
    return true;
  e->detached = true;
  return false;
}

int hark_weakmap_remove(hark_weakmap *m, void *key) {
  if (m == NULL || key == NULL)
    return HARK_EINVAL;
  hark__ctrl *c = hark__ctrl_of(key);
  if (c == NULL)
    return 0;
  pthread_mutex_lock(&m->lock);
  entry **p = find_slot(m, c);
  entry *e = p != NULL ? *p : NULL;
  void *value = NULL;
  bool own = false;
  if (e != NULL) {
    value = e->value;
    own = detach(m, e);
  }
  pthread_mutex_unlock(&m->lock);
  if (e == NULL)
    return 0;
  release(m, value);
  if (own) {
    entry_free(e);
    map_unref(m);
  }
  return 1;
}

size_t hark_weakmap_size(hark_weakmap *m) {
  if (m == NULL)
    return 0;
  size_t n = 0;
  pthread_mutex_lock(&m->lock);
  /* An entry whose key is dying on another thread is not a live key. */
  for (size_t i = 0; i < m->nbuckets; i++)
    for (entry *e = m->buckets[i]; e != NULL; e = e->next)
      n += hark__ctrl_alive(e->key);
  pthread_mutex_unlock(&m->lock);
  return n;
}

void hark_weakmap_free(hark_weakmap *m) {
  if (m == NULL)
    return;
  pthread_mutex_lock(&registry_lock);
  if (m->reg_prev != NULL)
    m->reg_prev->reg_next = m->reg_next;
  else
    registry = m->reg_next;
  if (m->reg_next != NULL)
    m->reg_next->reg_prev = m->reg_prev;
  atomic_fetch_sub(&live_maps, 1);
  pthread_mutex_unlock(&registry_lock);
  entry *owned = NULL; /* entries whose memory and value are ours */
  pthread_mutex_lock(&m->lock);
  for (size_t i = 0; i < m->nbuckets; i++) {
    entry *e = m->buckets[i];
    while (e != NULL) {
      entry *next = e->next;
      m->count--;
      if (hark_notify_remove(&e->node) == 1) {
        e->next = owned;
        owned = e;
      } else {
        /* The key is dying on another thread and its notification is on
         * its way: it releases the value and the entry. */
        e->orphan = true;
      }
      e = next;
    }
    m->buckets[i] = NULL;
  }
  pthread_mutex_unlock(&m->lock);
  while (owned != NULL) {
    entry *next = owned->next;
    release(m, owned->value);
    entry_free(owned);
    map_unref(m);
    owned = next;
  }
  map_unref(m);
}

/* ---- for the leak finder and the tracker --------------------------------- */

int hark__weakmaps_each(hark__entry_fn fn, void *ctx) {
  int r = 0;
  pthread_mutex_lock(&registry_lock); /* no map is freed meanwhile */
  for (hark_weakmap *m = registry; m != NULL && r == 0; m = m->reg_next) {
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nbuckets && r == 0; i++)
      for (entry *e = m->buckets[i]; e != NULL && r == 0; e = e->next)
        r = fn(ctx, m, e->key, e->value, m->value_traverse);
    pthread_mutex_unlock(&m->lock);
  }
  pthread_mutex_unlock(&registry_lock);
  return r;
}

void hark__weakmap_counts(long *maps, long *map_bytes, long *entries,
                          long *entry_bytes) {
  *maps = atomic_load(&live_maps);
  *map_bytes = *maps * (long)sizeof(hark_weakmap);
  *entries = atomic_load(&live_entries);
  *entry_bytes = *entries * (long)sizeof(entry);
}
