/* The two classic leaks of reference counting, and what hark says. */
#include <hark.h>
#include <stdlib.h>

typedef struct node { hark_object base; void *ref; } node; /* ref: strong */

static void node_finalize(void *o) { hark_unref(((node *)o)->ref); free(o); }
static void node_traverse(void *o, hark_visit_fn visit, void *arg) {
  if (((node *)o)->ref != NULL)
    visit(((node *)o)->ref, arg);
}
static const hark_type parent_t = {"parent", sizeof(node), node_finalize, node_traverse};
static const hark_type child_t = {"child", sizeof(node), node_finalize, node_traverse};
static const hark_type widget_t = {"widget", sizeof(node), node_finalize, node_traverse};
static const hark_type view_t = {"view", sizeof(node), node_finalize, node_traverse};

/* the cache's values are hark objects: an entry holds its value */
static void value_is_object(void *v, hark_visit_fn visit, void *arg) { visit(v, arg); }

int main(void) {
  /* 1. a cache keyed by widget whose value holds the widget strongly */
  hark_weakmap_ops ops = {(void (*)(void *))hark_unref, NULL, value_is_object};
  hark_weakmap *cache = hark_weakmap_new_ops(&ops);
  node *w = hark_new(&widget_t), *v = hark_new(&view_t);
  v->ref = hark_ref(w);           /* should be a hark_weak */
  hark_weakmap_set(cache, w, v);  /* the cache takes v */
  hark_unref(w);                  /* done with it: yet it never goes */

  /* 2. a parent and a child holding each other */
  node *p = hark_new(&parent_t), *c = hark_new(&child_t);
  p->ref = hark_ref(c);
  c->ref = hark_ref(p);           /* the back pointer should be weak */
  hark_unref(p);
  hark_unref(c);

  size_t leaked = hark_leaks_print(stdout);

  hark_weakmap_free(cache);       /* the fixes, by hand: the value goes, */
  node *back = c->ref;            /* and with it the widget; the back */
  c->ref = NULL;                  /* pointer goes, and with it the pair */
  hark_unref(back);
  return leaked == 4 && hark_live_count(NULL) == 0 ? 0 : 1;
}
