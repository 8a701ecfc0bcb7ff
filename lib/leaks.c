/* The leak finder: what keeps leaked objects alive, named with its path.
 *
 * CPython's algorithm (gc_collect_main), over the objects it can see:
 *  1. nodes: every live object whose type has a traverse function (they
 *     are indexed here as they are made), plus every weak-map key; the
 *     finder holds a strong reference to each for the time of the call,
 *     so none is freed under it;
 *  2. refs(n) = n's strong count, minus the finder's own reference, minus
 *     one per reference to n from a node: a traverse edge, or a weak-map
 *     value edge, which counts as held by the value's key (the value lives
 *     exactly as long as its key: an ephemeron);
 *  3. a node with refs > 0 is referenced from outside what the finder
 *     sees (a variable, an opaque object): a root; everything reachable
 *     from a root through edges is alive;
 *  4. the rest is garbage: kept alive only by itself. Its strongly
 *     connected components with a cycle are the findings (a cycle through
 *     a value edge is a pinned key); garbage outside them is held by them.
 * Opaque objects (no traverse) are never nodes unless they are keys, and
 * nothing they may hold is known: the finder can only under-report. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* ---- the index of traversable objects --------------------------------- */

static pthread_mutex_t index_lock = PTHREAD_MUTEX_INITIALIZER;
static hark__ctrl **traced;
static size_t ntraced, captraced;

int hark__leaks_track(hark__ctrl *c) {
  int err = 0;
  pthread_mutex_lock(&index_lock);
  if (ntraced == captraced) {
    size_t cap = captraced ? captraced * 2 : 64;
    hark__ctrl **n = hark__realloc(traced, cap * sizeof(*n));
    if (n == NULL)
      err = HARK_ENOMEM;
    else {
      traced = n;
      captraced = cap;
    }
  }
  if (err == 0) {
    c->traced = ntraced;
    traced[ntraced++] = c;
  }
  pthread_mutex_unlock(&index_lock);
  return err;
}

void hark__leaks_untrack(hark__ctrl *c) {
  pthread_mutex_lock(&index_lock);
  hark__ctrl *last = traced[--ntraced];
  traced[c->traced] = last;
  last->traced = c->traced;
  if (ntraced == 0) { /* no memory stays once every object has gone */
    hark__free(traced);
    traced = NULL;
    captraced = 0;
  }
  pthread_mutex_unlock(&index_lock);
}

/* ---- the graph ------------------------------------------------------------ */

#define NONE ((size_t)-1)

enum {
  N_TRAVERSE = 1u, /* its type has a traverse function */
  N_REACHED = 2u,  /* alive: reachable from a root */
  N_ONSTACK = 4u,  /* Tarjan */
  N_REPORTED = 8u,
};

typedef struct node {
  hark__ctrl *c;
  void *obj;
  long refs;
  size_t vedge; /* first value edge from this key, or NONE */
  unsigned flags;
} node;

typedef struct vedge {
  void *to; /* resolved to a node when the graph is complete */
  size_t to_node;
  size_t from; /* the key whose value holds to */
  size_t next;
  hark_weakmap *map;
} vedge;

/* A slot of the table from objects to nodes: the object is kept beside
 * its index, so that a probe touches only the table. */
typedef struct tslot {
  void *obj; /* NULL: empty */
  size_t node;
} tslot;

typedef struct graph {
  node *nodes;
  size_t n, cap;
  tslot *table; /* open addressing: obj -> node index */
  size_t tmask;
  vedge *vedges;
  size_t nv, capv;
  /* garbage adjacency (CSR) */
  size_t *adj_start, *adj;
  size_t nadj, capadj;
  /* Tarjan, per node, allocated only when there is garbage */
  size_t *tindex, *tlow, *comp;
  size_t ncomp;
  int err;
} graph;

static size_t lookup(const graph *g, const void *obj) {
  size_t i = hark__hash_ptr(obj) & g->tmask;
  for (;;) {
    const tslot *t = &g->table[i];
    if (t->obj == obj)
      return t->node;
    if (t->obj == NULL)
      return NONE;
    i = (i + 1) & g->tmask;
  }
}

static void table_put(graph *g, void *obj, size_t k) {
  size_t i = hark__hash_ptr(obj) & g->tmask;
  while (g->table[i].obj != NULL)
    i = (i + 1) & g->tmask;
  g->table[i] = (tslot){obj, k};
}

/* Sizes the table for at least want nodes (before any is inserted, or to
 * grow: then every node is inserted again). */
static int table_reserve(graph *g, size_t want) {
  size_t cap = 16;
  while (cap < want * 2)
    cap *= 2;
  if (g->table != NULL && cap <= g->tmask + 1)
    return 0;
  tslot *t = hark__calloc(cap, sizeof(*t));
  if (t == NULL)
    return HARK_ENOMEM;
  hark__free(g->table);
  g->table = t;
  g->tmask = cap - 1;
  for (size_t k = 0; k < g->n; k++)
    table_put(g, g->nodes[k].obj, k);
  return 0;
}

/* Adds c's object as a node, with a strong reference (it is not added if
 * it is dying). Returns its index, NONE if dying, or sets g->err. unique:
 * c cannot be a node already (the index holds each object once). */
static size_t add_node(graph *g, hark__ctrl *c, bool unique) {
  size_t k = unique ? NONE : lookup(g, c->obj);
  if (k != NONE)
    return k;
  if (g->n == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 256;
    node *n = hark__realloc(g->nodes, cap * sizeof(*n));
    if (n == NULL) {
      g->err = HARK_ENOMEM;
      return NONE;
    }
    g->nodes = n;
    g->cap = cap;
  }
  if ((g->n + 1) * 2 > g->tmask + 1 && table_reserve(g, g->n + 1) != 0) {
    g->err = HARK_ENOMEM;
    return NONE;
  }
  void *obj = hark__ctrl_upgrade(c);
  if (obj == NULL)
    return NONE;
  k = g->n++;
  g->nodes[k] =
      (node){c, obj, 0, NONE, c->type->traverse != NULL ? N_TRAVERSE : 0u};
  table_put(g, obj, k);
  return k;
}

/* 1a. The traversable objects, from the index. */
static int add_traced(graph *g) {
  for (;;) {
    pthread_mutex_lock(&index_lock);
    size_t want = ntraced;
    pthread_mutex_unlock(&index_lock);
    /* allocated outside the lock; objects made meanwhile may need more */
    if (want + 1 > g->cap) {
      node *n = hark__realloc(g->nodes, (want + 1) * sizeof(*n));
      if (n == NULL)
        return HARK_ENOMEM;
      g->nodes = n;
      g->cap = want + 1;
    }
    if (table_reserve(g, want + 1) != 0)
      return HARK_ENOMEM;
    pthread_mutex_lock(&index_lock);
    if (ntraced > g->cap) {
      pthread_mutex_unlock(&index_lock);
      continue;
    }
    for (size_t i = 0; i < ntraced; i++)
      add_node(g, traced[i], true); /* cannot fail: room was made */
    pthread_mutex_unlock(&index_lock);
    return 0;
  }
}

/* 1b. Weak-map keys and the edges of their values (under each map's
 * lock: the values cannot be released meanwhile). */
typedef struct vctx {
  graph *g;
  size_t key;
  hark_weakmap *map;
} vctx;

static void visit_value(void *obj, void *arg) {
  vctx *v = arg;
  graph *g = v->g;
  if (obj == NULL || g->err != 0)
    return;
  if (g->nv == g->capv) {
    size_t cap = g->capv ? g->capv * 2 : 64;
    vedge *n = hark__realloc(g->vedges, cap * sizeof(*n));
    if (n == NULL) {
      g->err = HARK_ENOMEM;
      return;
    }
    g->vedges = n;
    g->capv = cap;
  }
  node *k = &g->nodes[v->key];
  g->vedges[g->nv] = (vedge){obj, NONE, v->key, k->vedge, v->map};
  k->vedge = g->nv++;
}

static int add_entry(void *ctx, hark_weakmap *m, hark__ctrl *key, void *value,
                     void (*value_traverse)(void *, hark_visit_fn, void *)) {
  graph *g = ctx;
  size_t k = add_node(g, key, false);
  if (g->err != 0)
    return g->err;
  if (k == NONE || value == NULL || value_traverse == NULL)
    return 0;
  vctx v = {g, k, m};
  value_traverse(value, visit_value, &v);
  return g->err;
}

/* ---- 2. and 3.: internal references, roots, reachability ----------------- */

static void visit_subtract(void *obj, void *arg) {
  graph *g = arg;
  size_t k = obj != NULL ? lookup(g, obj) : NONE;
  if (k != NONE)
    g->nodes[k].refs--;
}

typedef struct mark_ctx {
  graph *g;
  size_t *queue;
  size_t tail;
} mark_ctx;

static void mark(mark_ctx *m, size_t k) {
  node *n = &m->g->nodes[k];
  if (!(n->flags & N_REACHED)) {
    n->flags |= N_REACHED;
    m->queue[m->tail++] = k;
  }
}

static void visit_mark(void *obj, void *arg) {
  mark_ctx *m = arg;
  size_t k = obj != NULL ? lookup(m->g, obj) : NONE;
  if (k != NONE)
    mark(m, k);
}

/* Returns 0, or HARK_ENOMEM. Leaves the garbage unmarked. */
static int reach(graph *g) {
  for (size_t k = 0; k < g->n; k++)
    g->nodes[k].refs = atomic_load(&g->nodes[k].c->strong) - 1;
  for (size_t k = 0; k < g->n; k++) {
    node *n = &g->nodes[k];
    if (n->flags & N_TRAVERSE)
      n->c->type->traverse(n->obj, visit_subtract, g);
  }
  for (size_t e = 0; e < g->nv; e++)
    if (g->vedges[e].to_node != NONE)
      g->nodes[g->vedges[e].to_node].refs--;
  /* no node whose count is all explained: all are roots, none garbage */
  size_t unexplained = 0;
  for (size_t k = 0; k < g->n; k++)
    unexplained += g->nodes[k].refs == 0;
  if (unexplained == 0) {
    for (size_t k = 0; k < g->n; k++)
      g->nodes[k].flags |= N_REACHED;
    return 0;
  }
  mark_ctx m = {g, hark__malloc((g->n + 1) * sizeof(size_t)), 0};
  if (m.queue == NULL)
    return HARK_ENOMEM;
  for (size_t k = 0; k < g->n; k++)
    if (g->nodes[k].refs != 0) /* < 0: counts moved meanwhile; be safe */
      mark(&m, k);
  for (size_t head = 0; head < m.tail; head++) {
    node *n = &g->nodes[m.queue[head]];
    if (n->flags & N_TRAVERSE)
      n->c->type->traverse(n->obj, visit_mark, &m);
    for (size_t e = n->vedge; e != NONE; e = g->vedges[e].next)
      if (g->vedges[e].to_node != NONE)
        mark(&m, g->vedges[e].to_node);
  }
  hark__free(m.queue);
  return 0;
}

/* ---- 4. the garbage's cycles ------------------------------------------- */

/* The garbage edges out of each garbage node, traverse edges first, then
 * value edges (adj entries >= g->n encode value edge e as g->n + e). */
typedef struct adj_ctx {
  graph *g;
} adj_ctx;

static void push_adj(graph *g, size_t v) {
  if (g->err != 0)
    return;
  if (g->nadj == g->capadj) {
    size_t cap = g->capadj ? g->capadj * 2 : 256;
    size_t *n = hark__realloc(g->adj, cap * sizeof(*n));
    if (n == NULL) {
      g->err = HARK_ENOMEM;
      return;
    }
    g->adj = n;
    g->capadj = cap;
  }
  g->adj[g->nadj++] = v;
}

static void visit_adj(void *obj, void *arg) {
  graph *g = arg;
  size_t k = obj != NULL ? lookup(g, obj) : NONE;
  if (k != NONE && !(g->nodes[k].flags & N_REACHED))
    push_adj(g, k);
}

static int build_adj(graph *g) {
  g->adj_start = hark__malloc((g->n + 1) * sizeof(size_t));
  if (g->adj_start == NULL)
    return HARK_ENOMEM;
  for (size_t k = 0; k < g->n; k++) {
    g->adj_start[k] = g->nadj;
    node *n = &g->nodes[k];
    if (n->flags & N_REACHED)
      continue;
    if (n->flags & N_TRAVERSE)
      n->c->type->traverse(n->obj, visit_adj, g);
    for (size_t e = n->vedge; e != NONE; e = g->vedges[e].next) {
      size_t t = g->vedges[e].to_node;
      if (t != NONE && !(g->nodes[t].flags & N_REACHED))
        push_adj(g, g->n + e);
    }
    if (g->err != 0)
      return g->err;
  }
  g->adj_start[g->n] = g->nadj;
  return 0;
}

static size_t adj_target(const graph *g, size_t a) {
  return a < g->n ? a : g->vedges[a - g->n].to_node;
}

/* Tarjan's strongly connected components, iteratively (the garbage may be
 * a chain of a million objects). Sets comp on every garbage node. */
static int tarjan(graph *g) {
  size_t *stack = hark__malloc((g->n + 1) * sizeof(size_t));
  size_t *calls = hark__malloc((g->n + 1) * 2 * sizeof(size_t));
  g->tindex = hark__malloc((g->n + 1) * sizeof(size_t));
  g->tlow = hark__malloc((g->n + 1) * sizeof(size_t));
  g->comp = hark__malloc((g->n + 1) * sizeof(size_t));
  if (stack == NULL || calls == NULL || g->tindex == NULL || g->tlow == NULL ||
      g->comp == NULL) {
    hark__free(stack);
    hark__free(calls);
    return HARK_ENOMEM; /* the rest goes with the graph */
  }
  memset(g->tindex, 0xff, (g->n + 1) * sizeof(size_t));
  memset(g->comp, 0xff, (g->n + 1) * sizeof(size_t));
  size_t *const idx = g->tindex, *const low = g->tlow;
  size_t sp = 0, next_index = 0, ncomp = 0;
  for (size_t root = 0; root < g->n; root++) {
    if ((g->nodes[root].flags & N_REACHED) || idx[root] != NONE)
      continue;
    size_t cp = 0;
    calls[cp++] = root;
    calls[cp++] = g->adj_start[root];
    idx[root] = low[root] = next_index++;
    stack[sp++] = root;
    g->nodes[root].flags |= N_ONSTACK;
    while (cp > 0) {
      size_t v = calls[cp - 2];
      size_t *pos = &calls[cp - 1];
      if (*pos < g->adj_start[v + 1]) {
        size_t w = adj_target(g, g->adj[(*pos)++]);
        node *nw = &g->nodes[w];
        if (idx[w] == NONE) {
          idx[w] = low[w] = next_index++;
          stack[sp++] = w;
          nw->flags |= N_ONSTACK;
          calls[cp++] = w;
          calls[cp++] = g->adj_start[w];
        } else if ((nw->flags & N_ONSTACK) && idx[w] < low[v]) {
          low[v] = idx[w];
        }
        continue;
      }
      cp -= 2;
      if (cp > 0) {
        size_t parent = calls[cp - 2];
        if (low[v] < low[parent])
          low[parent] = low[v];
      }
      if (low[v] == idx[v]) {
        size_t w;
        do {
          w = stack[--sp];
          g->nodes[w].flags &= ~(unsigned)N_ONSTACK;
          g->comp[w] = ncomp;
        } while (w != v);
        ncomp++;
      }
    }
  }
  g->ncomp = ncomp;
  hark__free(stack);
  hark__free(calls);
  return 0;
}

/* ---- reporting --------------------------------------------------------------- */

typedef struct report {
  graph *g;
  hark_leak_fn fn;
  void *data;
  void **path;     /* 2n + 2 objects: a path, and scratch after it */
  size_t *prev;    /* breadth-first search: the node it came from */
  size_t *prevadj; /* ...and by which adj entry */
  size_t *queue;
  size_t *comp_size;
  long leaked;
} report;

/* A shortest cycle through s within its component: a breadth-first
 * search from s back to s. Fills r->path (objects in edge order, s
 * first), returns its length; *via_value is the first value edge on it,
 * else NONE. */
static size_t find_cycle(report *r, size_t s, size_t *via_value) {
  graph *g = r->g;
  size_t comp = g->comp[s];
  size_t head = 0, tail = 0, end = NONE, end_adj = NONE;
  r->queue[tail++] = s;
  r->prev[s] = s;
  while (head < tail && end == NONE) {
    size_t v = r->queue[head++];
    for (size_t a = g->adj_start[v]; a < g->adj_start[v + 1]; a++) {
      size_t w = adj_target(g, g->adj[a]);
      if (g->comp[w] != comp)
        continue;
      if (w == s) {
        end = v;
        end_adj = a;
        break;
      }
      if (r->prev[w] == NONE) {
        r->prev[w] = v;
        r->prevadj[w] = a;
        r->queue[tail++] = w;
      }
    }
  }
  /* back from end to s, then reversed into edge order */
  size_t n = 0;
  *via_value = g->adj[end_adj] >= g->n ? g->adj[end_adj] - g->n : NONE;
  for (size_t v = end; v != s; v = r->prev[v]) {
    r->path[n++] = g->nodes[v].obj;
    size_t a = g->adj[r->prevadj[v]];
    if (a >= g->n)
      *via_value = a - g->n;
  }
  r->path[n++] = g->nodes[s].obj;
  for (size_t i = 0; i < n / 2; i++) {
    void *t = r->path[i];
    r->path[i] = r->path[n - 1 - i];
    r->path[n - 1 - i] = t;
  }
  for (size_t i = 0; i < tail; i++)
    r->prev[r->queue[i]] = NONE;
  return n;
}

static bool self_edge(const graph *g, size_t k) {
  for (size_t a = g->adj_start[k]; a < g->adj_start[k + 1]; a++)
    if (adj_target(g, g->adj[a]) == k)
      return true;
  return false;
}

static void report_components(report *r) {
  graph *g = r->g;
  for (size_t k = 0; k < g->n; k++)
    if (!(g->nodes[k].flags & N_REACHED))
      r->comp_size[g->comp[k]]++;
  /* one finding per component with a cycle, met at its first node;
   * comp_size then marks it done (0) or without a cycle (NONE) */
  for (size_t s = 0; s < g->n; s++) {
    node *ns = &g->nodes[s];
    if (ns->flags & N_REACHED)
      continue;
    size_t *size = &r->comp_size[g->comp[s]];
    if (*size == 0 || *size == NONE)
      continue;
    if (*size == 1 && !self_edge(g, s)) {
      *size = NONE;
      continue;
    }
    r->leaked += (long)*size;
    *size = 0;
    size_t via;
    size_t n = find_cycle(r, s, &via);
    hark_leak leak = {HARK_LEAK_CYCLE, n, r->path, NULL};
    if (via != NONE) {
      /* from the value's first object to its key, which ends the path */
      void *kobj = g->nodes[g->vedges[via].from].obj;
      size_t at = 0;
      while (at < n && r->path[at] != kobj)
        at++;
      void **rot = r->path + n + 1;
      for (size_t i = 0; i < n; i++)
        rot[i] = r->path[(at + 1 + i) % n];
      memcpy(r->path, rot, n * sizeof(void *));
      leak.kind = HARK_LEAK_PINNED_KEY;
      leak.map = g->vedges[via].map;
    }
    r->fn(r->data, &leak);
  }
  /* what the findings alone hold (opaque objects: only as keys, above) */
  for (size_t k = 0; k < g->n; k++) {
    node *nk = &g->nodes[k];
    if ((nk->flags & N_REACHED) || !(nk->flags & N_TRAVERSE) ||
        r->comp_size[g->comp[k]] != NONE)
      continue;
    r->leaked++;
    r->path[0] = nk->obj;
    hark_leak leak = {HARK_LEAK_HELD, 1, r->path, NULL};
    r->fn(r->data, &leak);
  }
}

static void graph_release(graph *g) {
  for (size_t k = 0; k < g->n; k++)
    hark__ctrl_unref(g->nodes[k].c);
  hark__free(g->nodes);
  hark__free(g->table);
  hark__free(g->vedges);
  hark__free(g->adj_start);
  hark__free(g->adj);
  hark__free(g->tindex);
  hark__free(g->tlow);
  hark__free(g->comp);
}

static void ignore(void *data, const hark_leak *leak) {
  (void)data;
  (void)leak;
}

int hark_leaks_find(hark_leak_fn fn, void *data) {
  if (fn == NULL)
    fn = ignore;
  graph g;
  memset(&g, 0, sizeof g);
  report r = {&g, fn, data, NULL, NULL, NULL, NULL, NULL, 0};
  int err = add_traced(&g);
  if (err == 0)
    err = hark__weakmaps_each(add_entry, &g);
  if (err == 0) {
    for (size_t e = 0; e < g.nv; e++)
      g.vedges[e].to_node = lookup(&g, g.vedges[e].to);
    err = reach(&g);
  }
  size_t garbage = 0;
  for (size_t k = 0; err == 0 && k < g.n; k++)
    garbage += !(g.nodes[k].flags & N_REACHED);
  if (err == 0 && garbage > 0) {
    err = build_adj(&g);
    if (err == 0)
      err = tarjan(&g);
    if (err == 0) {
      r.path = hark__malloc((2 * g.n + 2) * sizeof(void *));
      r.prev = hark__malloc((g.n + 1) * sizeof(size_t));
      r.prevadj = hark__malloc((g.n + 1) * sizeof(size_t));
      r.queue = hark__malloc((g.n + 1) * sizeof(size_t));
      r.comp_size = hark__calloc(g.ncomp + 1, sizeof(size_t));
      if (r.path == NULL || r.prev == NULL || r.prevadj == NULL ||
          r.queue == NULL || r.comp_size == NULL)
        err = HARK_ENOMEM;
      else
        memset(r.prev, 0xff, (g.n + 1) * sizeof(size_t));
    }
    if (err == 0)
      report_components(&r);
  }
  hark__free(r.path);
  hark__free(r.prev);
  hark__free(r.prevadj);
  hark__free(r.queue);
  hark__free(r.comp_size);
  graph_release(&g); /* may finalize what lost its last reference meanwhile */
  return err != 0 ? err : (int)r.leaked;
}

/* ---- printing -------------------------------------------------------------- */

static const char *tname(const void *obj) {
  const hark_type *t = hark_object_type(obj);
  return t != NULL && t->name != NULL ? t->name : "(unnamed)";
}

typedef struct line_out {
  void (*line)(void *ctx, const char *s);
  void *ctx;
  size_t findings;
} line_out;

static void print_leak(void *data, const hark_leak *leak) {
  line_out *o = data;
  char buf[1024];
  size_t len = 0;
#define ADD(...)                                                               \
  do {                                                                         \
    int n_ = snprintf(buf + len, sizeof buf - len, __VA_ARGS__);               \
    if (n_ > 0)                                                                \
      len = len + (size_t)n_ < sizeof buf ? len + (size_t)n_ : sizeof buf - 1; \
  } while (0)
  if (leak->kind == HARK_LEAK_CYCLE) {
    ADD("cycle of %zu:", leak->n);
    for (size_t i = 0; i <= leak->n; i++)
      ADD("%s %s %p", i == 0 ? "" : " ->", tname(leak->path[i % leak->n]),
          leak->path[i % leak->n]);
  } else if (leak->kind == HARK_LEAK_PINNED_KEY) {
    void *key = leak->path[leak->n - 1];
    ADD("weak-map %p entry: key %s %p is pinned by its value (value",
        (void *)leak->map, tname(key), key);
    for (size_t i = 0; i + 1 < leak->n; i++)
      ADD(" -> %s %p", tname(leak->path[i]), leak->path[i]);
    ADD(" -> %s)", tname(key));
  } else {
    ADD("held by a leak: %s %p", tname(leak->path[0]), leak->path[0]);
  }
#undef ADD
  o->findings++;
  o->line(o->ctx, buf);
}

/* The report, one line at a time to line(ctx, s) (tracker.c uses it for
 * the exit report). Returns as hark_leaks_print. */
size_t hark__leaks_report(void (*line)(void *ctx, const char *s), void *ctx) {
  line_out o = {line, ctx, 0};
  int n = hark_leaks_find(print_leak, &o);
  if (n < 0) {
    char buf[128];
    snprintf(buf, sizeof buf, "leak report failed: %s", hark_strerror(n));
    line(ctx, buf);
    return (size_t)-1;
  }
  if (o.findings == 0)
    line(ctx, "no leaks found");
  return (size_t)n;
}

static void file_line(void *ctx, const char *s) {
  fputs(s, ctx);
  fputc('\n', ctx);
}

size_t hark_leaks_print(FILE *out) {
  return hark__leaks_report(file_line, out != NULL ? out : stdout);
}
