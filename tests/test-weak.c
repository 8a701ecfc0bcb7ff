/* Weak references and death notifications. */
#include "util.h"

static long start_blocks;

static void setup(void) {
  test_alloc_install();
  atomic_store(&test_finalized, 0);
  start_blocks = test_blocks();
}

/* Every test ends with the library holding no memory: weak references and
 * notifications cleaned up leave no control block behind. */
static void teardown(void) { ck_assert_int_eq(test_blocks(), start_blocks); }

static test_obj *new_obj(int id) {
  test_obj *o = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(o);
  o->id = id;
  return o;
}

/* ---- weak references ----------------------------------------------------- */

START_TEST(weak_init_points_at_nothing) {
  hark_weak w = HARK_WEAK_INIT;
  hark_weak z;
  memset(&z, 0, sizeof(z));
  ck_assert_ptr_null(hark_weak_get(&w));
  ck_assert_ptr_null(hark_weak_get(&z));
  hark_weak_clear(&w);
  hark_weak_clear(&z);
  ck_assert_int_eq(hark_weak_set(&z, NULL), 0);
  ck_assert_ptr_null(hark_weak_get(&z));
}
END_TEST

START_TEST(all_zero_weak_works_like_weak_init) {
  hark_weak z;
  memset(&z, 0, sizeof(z));
  test_obj *o = new_obj(1);
  ck_assert_int_eq(hark_weak_set(&z, o), 0);
  test_obj *g = hark_weak_get(&z);
  ck_assert_ptr_eq(g, o);
  hark_unref(g);
  hark_unref(o);
  ck_assert_ptr_null(hark_weak_get(&z));
  hark_weak_clear(&z);
}
END_TEST

START_TEST(weak_get_returns_a_new_strong_reference) {
  hark_weak w = HARK_WEAK_INIT;
  test_obj *o = new_obj(1);
  ck_assert_int_eq(hark_weak_set(&w, o), 0);
  test_obj *g = hark_weak_get(&w);
  ck_assert_ptr_eq(g, o);
  /* the reference from weak_get keeps it alive past the creator's */
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&test_finalized), 0);
  ck_assert_int_eq(g->id, 1);
  hark_unref(g);
  ck_assert_int_eq(atomic_load(&test_finalized), 1);
  hark_weak_clear(&w);
}
END_TEST

START_TEST(weak_does_not_keep_its_object_alive) {
  hark_weak w = HARK_WEAK_INIT;
  test_obj *o = new_obj(1);
  ck_assert_int_eq(hark_weak_set(&w, o), 0);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&test_finalized), 1);
  hark_weak_clear(&w);
}
END_TEST

START_TEST(weak_get_after_last_unref_returns_null) {
  hark_weak w = HARK_WEAK_INIT;
  test_obj *o = new_obj(1);
  ck_assert_int_eq(hark_weak_set(&w, o), 0);
  hark_ref(o);
  hark_unref(o);
  ck_assert_ptr_eq(hark_weak_get(&w), o);
  hark_unref(o); /* the reference weak_get returned */
  hark_unref(o); /* the last one */
  ck_assert_ptr_null(hark_weak_get(&w));
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_weak_clear(&w);
}
END_TEST

START_TEST(weak_outlives_object_memory_without_leak) {
  hark_weak w = HARK_WEAK_INIT;
  test_obj *o = new_obj(1);
  ck_assert_int_eq(hark_weak_set(&w, o), 0);
  long with_obj = test_blocks();
  hark_unref(o);
  /* the object's memory is gone, the small bookkeeping stays for w */
  ck_assert_int_lt(test_blocks(), with_obj);
  ck_assert_int_gt(test_blocks(), start_blocks);
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_weak_clear(&w);
  ck_assert_int_eq(test_blocks(), start_blocks);
}
END_TEST

START_TEST(weak_set_to_null_releases_the_old_target) {
  hark_weak w = HARK_WEAK_INIT;
  test_obj *o = new_obj(1);
  ck_assert_int_eq(hark_weak_set(&w, o), 0);
  hark_unref(o);
  ck_assert_int_eq(hark_weak_set(&w, NULL), 0);
  ck_assert_ptr_null(hark_weak_get(&w));
  ck_assert_int_eq(test_blocks(), start_blocks);
}
END_TEST

START_TEST(weak_reset_points_at_the_new_object) {
  hark_weak w = HARK_WEAK_INIT;
  long before_a = test_blocks();
  test_obj *a = new_obj(1);
  long cost = test_blocks() - before_a; /* what an unwatched object holds */
  test_obj *b = new_obj(2);
  ck_assert_int_eq(hark_weak_set(&w, a), 0);
  ck_assert_int_eq(hark_weak_set(&w, a), 0); /* same again */
  ck_assert_int_eq(hark_weak_set(&w, b), 0);
  test_obj *g = hark_weak_get(&w);
  ck_assert_ptr_eq(g, b);
  hark_unref(g);
  /* a is no longer watched: its death leaves nothing behind for w */
  long before = test_blocks();
  hark_unref(a);
  ck_assert_int_eq(atomic_load(&test_finalized), 1);
  ck_assert_int_eq(test_blocks(), before - cost);
  ck_assert_ptr_eq((g = hark_weak_get(&w)), b);
  hark_unref(g);
  hark_unref(b);
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_weak_clear(&w);
}
END_TEST

START_TEST(weak_set_with_null_weak_is_einval) {
  test_obj *o = new_obj(1);
  ck_assert_int_eq(hark_weak_set(NULL, o), HARK_EINVAL);
  ck_assert_int_eq(hark_weak_set(NULL, NULL), HARK_EINVAL);
  ck_assert_ptr_null(hark_weak_get(NULL));
  hark_weak_clear(NULL);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&test_finalized), 1);
}
END_TEST

START_TEST(weak_set_on_dead_object_is_enoent_and_clears) {
  kept k = {0};
  ck_assert_int_eq(hark_object_init(&k, &kept_type), 0);
  hark_unref(&k);
  ck_assert_int_eq(k.finalized, 1);
  test_obj *o = new_obj(1);
  hark_weak w = HARK_WEAK_INIT;
  ck_assert_int_eq(hark_weak_set(&w, o), 0);
  ck_assert_int_eq(hark_weak_set(&w, &k), HARK_ENOENT);
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_unref(o);
  hark_weak_clear(&w);
}
END_TEST

static int dying_set_result;

static void set_on_dying(hark_notify *n, void *obj) {
  hark_weak w = HARK_WEAK_INIT;
  dying_set_result = hark_weak_set(&w, obj);
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_weak_clear(&w);
}

START_TEST(weak_set_on_dying_object_is_enoent) {
  dying_set_result = 1;
  test_obj *o = new_obj(1);
  hark_notify n = {0};
  ck_assert_int_eq(hark_notify_add(&n, o, set_on_dying), 0);
  hark_unref(o);
  ck_assert_int_eq(dying_set_result, HARK_ENOENT);
}
END_TEST

START_TEST(weak_clear_twice_is_harmless) {
  hark_weak w = HARK_WEAK_INIT;
  test_obj *o = new_obj(1);
  ck_assert_int_eq(hark_weak_set(&w, o), 0);
  hark_weak_clear(&w);
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_weak_clear(&w);
  hark_unref(o);
}
END_TEST

START_TEST(many_weaks_to_one_object_all_see_its_death) {
  hark_weak w[8];
  memset(w, 0, sizeof(w));
  test_obj *o = new_obj(1);
  for (int i = 0; i < 8; i++)
    ck_assert_int_eq(hark_weak_set(&w[i], o), 0);
  hark_unref(o);
  for (int i = 0; i < 8; i++)
    ck_assert_ptr_null(hark_weak_get(&w[i]));
  for (int i = 0; i < 7; i++) {
    hark_weak_clear(&w[i]);
    ck_assert_int_gt(test_blocks(), start_blocks);
  }
  hark_weak_clear(&w[7]);
}
END_TEST

/* ---- death notifications ------------------------------------------------- */

static _Atomic int notify_runs;
static void *notify_last_obj;
static hark_notify *notify_last_node;

static void count_notify(hark_notify *n, void *obj) {
  atomic_fetch_add(&notify_runs, 1);
  notify_last_obj = obj;
  notify_last_node = n;
}

static void reset_notify(void) {
  atomic_store(&notify_runs, 0);
  notify_last_obj = NULL;
  notify_last_node = NULL;
}

START_TEST(notify_add_rejects_null_arguments) {
  test_obj *o = new_obj(1);
  hark_notify n = {0};
  ck_assert_int_eq(hark_notify_add(NULL, o, count_notify), HARK_EINVAL);
  ck_assert_int_eq(hark_notify_add(&n, NULL, count_notify), HARK_EINVAL);
  ck_assert_int_eq(hark_notify_add(&n, o, NULL), HARK_EINVAL);
  /* nothing was registered */
  ck_assert_int_eq(hark_notify_remove(&n), 0);
  reset_notify();
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&notify_runs), 0);
}
END_TEST

START_TEST(notify_callback_runs_once_with_the_object) {
  reset_notify();
  test_obj *o = new_obj(5);
  hark_notify n = {0};
  int mine;
  n.data = &mine;
  ck_assert_int_eq(hark_notify_add(&n, o, count_notify), 0);
  hark_ref(o);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&notify_runs), 0);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&notify_runs), 1);
  ck_assert_ptr_eq(notify_last_obj, o);
  ck_assert_ptr_eq(notify_last_node, &n);
  ck_assert_ptr_eq(n.data, &mine);
  /* a node that has run is no longer registered */
  ck_assert_int_eq(hark_notify_remove(&n), 0);
}
END_TEST

START_TEST(notify_add_twice_is_ebusy) {
  test_obj *a = new_obj(1);
  test_obj *b = new_obj(2);
  hark_notify n = {0};
  ck_assert_int_eq(hark_notify_add(&n, a, count_notify), 0);
  ck_assert_int_eq(hark_notify_add(&n, a, count_notify), HARK_EBUSY);
  ck_assert_int_eq(hark_notify_add(&n, b, count_notify), HARK_EBUSY);
  reset_notify();
  hark_unref(b);
  ck_assert_int_eq(atomic_load(&notify_runs), 0);
  hark_unref(a);
  ck_assert_int_eq(atomic_load(&notify_runs), 1);
  ck_assert_ptr_eq(notify_last_obj, a);
}
END_TEST

START_TEST(notify_remove_returns_1_then_0) {
  reset_notify();
  test_obj *o = new_obj(1);
  hark_notify n = {0};
  ck_assert_int_eq(hark_notify_remove(&n), 0); /* never registered */
  ck_assert_int_eq(hark_notify_add(&n, o, count_notify), 0);
  ck_assert_int_eq(hark_notify_remove(&n), 1);
  ck_assert_int_eq(hark_notify_remove(&n), 0);
  ck_assert_int_eq(hark_notify_remove(NULL), 0);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&notify_runs), 0);
}
END_TEST

START_TEST(notify_node_is_reusable_after_remove_or_run) {
  reset_notify();
  test_obj *a = new_obj(1);
  test_obj *b = new_obj(2);
  hark_notify n = {0};
  ck_assert_int_eq(hark_notify_add(&n, a, count_notify), 0);
  ck_assert_int_eq(hark_notify_remove(&n), 1);
  ck_assert_int_eq(hark_notify_add(&n, a, count_notify), 0);
  hark_unref(a);
  ck_assert_int_eq(atomic_load(&notify_runs), 1);
  ck_assert_int_eq(hark_notify_add(&n, b, count_notify), 0);
  hark_unref(b);
  ck_assert_int_eq(atomic_load(&notify_runs), 2);
  ck_assert_ptr_eq(notify_last_obj, b);
}
END_TEST

START_TEST(notify_removed_from_one_object_of_many_runs_for_none) {
  reset_notify();
  test_obj *o = new_obj(1);
  hark_notify keep = {0}, drop = {0};
  ck_assert_int_eq(hark_notify_add(&keep, o, count_notify), 0);
  ck_assert_int_eq(hark_notify_add(&drop, o, count_notify), 0);
  ck_assert_int_eq(hark_notify_remove(&drop), 1);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&notify_runs), 1);
  ck_assert_ptr_eq(notify_last_node, &keep);
}
END_TEST

static int add_on_dying_result;

static void add_on_dying(hark_notify *n, void *obj) {
  hark_notify *other = n->data;
  add_on_dying_result = hark_notify_add(other, obj, count_notify);
}

START_TEST(notify_add_on_dying_object_is_enoent) {
  reset_notify();
  add_on_dying_result = 1;
  test_obj *o = new_obj(1);
  hark_notify n = {0}, other = {0};
  n.data = &other;
  ck_assert_int_eq(hark_notify_add(&n, o, add_on_dying), 0);
  hark_unref(o);
  ck_assert_int_eq(add_on_dying_result, HARK_ENOENT);
  ck_assert_int_eq(atomic_load(&notify_runs), 0);
  ck_assert_int_eq(hark_notify_remove(&other), 0);
}
END_TEST

START_TEST(notify_add_on_dead_object_is_enoent) {
  kept k = {0};
  ck_assert_int_eq(hark_object_init(&k, &kept_type), 0);
  hark_unref(&k);
  hark_notify n = {0};
  ck_assert_int_eq(hark_notify_add(&n, &k, count_notify), HARK_ENOENT);
  ck_assert_int_eq(hark_notify_remove(&n), 0);
}
END_TEST

static _Atomic int freed_nodes;

static void free_own_node(hark_notify *n, void *obj) {
  ck_assert_ptr_eq(n->data, obj);
  test_free(n);
  atomic_fetch_add(&freed_nodes, 1);
}

START_TEST(notify_callback_may_free_its_node) {
  atomic_store(&freed_nodes, 0);
  test_obj *o = new_obj(1);
  for (int i = 0; i < 3; i++) {
    hark_notify *n = test_calloc(1, sizeof(*n));
    ck_assert_ptr_nonnull(n);
    n->data = o;
    ck_assert_int_eq(hark_notify_add(n, o, free_own_node), 0);
  }
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&freed_nodes), 3);
}
END_TEST

static void drop_other(hark_notify *n, void *obj) {
  atomic_fetch_add(&notify_runs, 1);
  hark_unref(n->data);
}

START_TEST(notify_callback_may_drop_other_references) {
  reset_notify();
  test_obj *a = new_obj(1);
  test_obj *b = new_obj(2);
  test_obj *c = new_obj(3);
  hark_weak wb = HARK_WEAK_INIT;
  ck_assert_int_eq(hark_weak_set(&wb, b), 0);
  /* a's death drops the last reference to b, whose death drops c's */
  hark_notify na = {0}, nb = {0}, nc = {0};
  na.data = b;
  nb.data = c;
  ck_assert_int_eq(hark_notify_add(&na, a, drop_other), 0);
  ck_assert_int_eq(hark_notify_add(&nb, b, drop_other), 0);
  ck_assert_int_eq(hark_notify_add(&nc, c, count_notify), 0);
  hark_unref(a);
  ck_assert_int_eq(atomic_load(&notify_runs), 3);
  ck_assert_ptr_eq(notify_last_obj, c);
  ck_assert_int_eq(atomic_load(&test_finalized), 3);
  ck_assert_ptr_null(hark_weak_get(&wb));
  hark_weak_clear(&wb);
}
END_TEST

static void self_drop_notify(hark_notify *n, void *obj) {
  /* drops the reference the node's owner held to a third object, which
   * in turn holds nothing: the library must not be holding a lock */
  test_obj *other = n->data;
  hark_weak w = HARK_WEAK_INIT;
  ck_assert_int_eq(hark_weak_set(&w, other), 0);
  hark_unref(other);
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_weak_clear(&w);
  atomic_fetch_add(&notify_runs, 1);
}

START_TEST(notify_callback_may_use_weak_references_of_other_objects) {
  reset_notify();
  test_obj *a = new_obj(1);
  test_obj *b = new_obj(2);
  hark_notify n = {0};
  n.data = b;
  ck_assert_int_eq(hark_notify_add(&n, a, self_drop_notify), 0);
  hark_unref(a);
  ck_assert_int_eq(atomic_load(&notify_runs), 1);
  ck_assert_int_eq(atomic_load(&test_finalized), 2);
}
END_TEST

/* One callback removes a sibling node of the same object (which then never
 * runs) and registers a node on another, live object. */
static hark_notify sib_remover, sib_victim, sib_added;
static int sib_remove_result, sib_add_result;
static test_obj *sib_other;

static void remove_and_add(hark_notify *n, void *obj) {
  atomic_fetch_add(&notify_runs, 1);
  sib_remove_result = hark_notify_remove(&sib_victim);
  sib_add_result = hark_notify_add(&sib_added, sib_other, count_notify);
}

static void victim_notify(hark_notify *n, void *obj) {
  /* runs only if the remover ran after it: then remove must report 0 */
  atomic_fetch_add(&notify_runs, 100);
}

START_TEST(notify_callback_may_register_and_remove_other_nodes) {
  reset_notify();
  memset(&sib_remover, 0, sizeof(sib_remover));
  memset(&sib_victim, 0, sizeof(sib_victim));
  memset(&sib_added, 0, sizeof(sib_added));
  sib_remove_result = sib_add_result = -1;
  test_obj *o = new_obj(1);
  sib_other = new_obj(2);
  ck_assert_int_eq(hark_notify_add(&sib_victim, o, victim_notify), 0);
  ck_assert_int_eq(hark_notify_add(&sib_remover, o, remove_and_add), 0);
  hark_unref(o);
  ck_assert_int_eq(sib_add_result, 0);
  /* exactly one of: the victim was removed in time, or it ran first */
  if (sib_remove_result == 1)
    ck_assert_int_eq(atomic_load(&notify_runs), 1);
  else
    ck_assert_int_eq(atomic_load(&notify_runs), 101);
  notify_last_obj = NULL;
  hark_unref(sib_other);
  ck_assert_ptr_eq(notify_last_obj, sib_other);
  ck_assert_ptr_eq(notify_last_node, &sib_added);
}
END_TEST

/* The same, with both orders forced: the remover registered first and
 * last, so whichever order the library runs nodes in, one of the two
 * runs checks that a removed sibling does not run. */
START_TEST(notify_removed_by_a_sibling_callback_never_runs) {
  int removed_total = 0;
  for (int order = 0; order < 2; order++) {
    reset_notify();
    memset(&sib_remover, 0, sizeof(sib_remover));
    memset(&sib_victim, 0, sizeof(sib_victim));
    memset(&sib_added, 0, sizeof(sib_added));
    test_obj *o = new_obj(1);
    sib_other = new_obj(2);
    if (order == 0) {
      ck_assert_int_eq(hark_notify_add(&sib_victim, o, victim_notify), 0);
      ck_assert_int_eq(hark_notify_add(&sib_remover, o, remove_and_add), 0);
    } else {
      ck_assert_int_eq(hark_notify_add(&sib_remover, o, remove_and_add), 0);
      ck_assert_int_eq(hark_notify_add(&sib_victim, o, victim_notify), 0);
    }
    hark_unref(o);
    if (sib_remove_result == 1) {
      removed_total++;
      ck_assert_int_eq(atomic_load(&notify_runs), 1);
    } else {
      ck_assert_int_eq(sib_remove_result, 0);
      ck_assert_int_eq(atomic_load(&notify_runs), 101);
    }
    hark_unref(sib_other);
  }
  ck_assert_int_eq(removed_total, 1);
}
END_TEST

START_TEST(several_notifications_all_run) {
  reset_notify();
  enum { N = 16 };
  hark_notify n[N];
  memset(n, 0, sizeof(n));
  test_obj *o = new_obj(1);
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(hark_notify_add(&n[i], o, count_notify), 0);
  ck_assert_int_eq(hark_notify_remove(&n[3]), 1);
  ck_assert_int_eq(hark_notify_remove(&n[0]), 1);
  ck_assert_int_eq(hark_notify_remove(&n[N - 1]), 1);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&notify_runs), N - 3);
  for (int i = 0; i < N; i++)
    ck_assert_int_eq(hark_notify_remove(&n[i]), 0);
}
END_TEST

/* The reference-cycle trap: a child that holds its parent strongly keeps
 * both alive forever under reference counting; a weak back pointer lets
 * both go when the last outside reference does. */
typedef struct node {
  hark_object base;
  struct node *child;  /* strong: the parent owns the child */
  struct node *parent; /* strong back pointer: the trap */
  hark_weak parent_w;  /* weak back pointer: the fix */
} node;

static void node_finalize(void *obj) {
  node *n = obj;
  hark_weak_clear(&n->parent_w);
  hark_unref(n->child);
  hark_unref(n->parent);
  test_free(n);
}

static const hark_type node_type = {"cycle_node", sizeof(node),
                                     node_finalize, NULL};

START_TEST(weak_back_pointer_breaks_a_parent_child_cycle) {
  test_alloc_install();
  node *parent = hark_new(&node_type);
  node *child = hark_new(&node_type);
  ck_assert_ptr_nonnull(parent);
  ck_assert_ptr_nonnull(child);
  parent->child = child; /* the parent's reference */
  ck_assert_int_eq(hark_weak_set(&child->parent_w, parent), 0);
  node *p = hark_weak_get(&child->parent_w);
  ck_assert_ptr_eq(p, parent);
  hark_unref(p);
  hark_unref(parent); /* the last outside reference */
  ck_assert_uint_eq(hark_live_count("cycle_node"), 0);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(strong_back_pointer_keeps_a_cycle_alive_until_broken) {
  test_alloc_install();
  node *parent = hark_new(&node_type);
  node *child = hark_new(&node_type);
  parent->child = child;
  child->parent = hark_ref(parent); /* the trap */
  hark_unref(parent);
  ck_assert_uint_eq(hark_live_count("cycle_node"), 2); /* leaked */
  node *back = child->parent;        /* break the cycle by hand */
  child->parent = NULL;
  hark_unref(back);
  ck_assert_uint_eq(hark_live_count("cycle_node"), 0);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

int main(void) {
  
Suite *s = suite_create("weak");
  TCase *tc = tcase_create("weak");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, weak_init_points_at_nothing);
  tcase_add_test(tc, all_zero_weak_works_like_weak_init);
  tcase_add_test(tc, weak_get_returns_a_new_strong_reference);
  tcase_add_test(tc, weak_does_not_keep_its_object_alive);
  tcase_add_test(tc, weak_get_after_last_unref_returns_null);
  tcase_add_test(tc, weak_outlives_object_memory_without_leak);
  tcase_add_test(tc, weak_set_to_null_releases_the_old_target);
  tcase_add_test(tc, weak_reset_points_at_the_new_object);
  tcase_add_test(tc, weak_set_with_null_weak_is_einval);
  tcase_add_test(tc, weak_set_on_dead_object_is_enoent_and_clears);
  tcase_add_test(tc, weak_set_on_dying_object_is_enoent);
  tcase_add_test(tc, weak_clear_twice_is_harmless);
  tcase_add_test(tc, many_weaks_to_one_object_all_see_its_death);
  suite_add_tcase(s, tc);

  tc = tcase_create("notify");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, notify_add_rejects_null_arguments);
  tcase_add_test(tc, notify_callback_runs_once_with_the_object);
  tcase_add_test(tc, notify_add_twice_is_ebusy);
  tcase_add_test(tc, notify_remove_returns_1_then_0);
  tcase_add_test(tc, notify_node_is_reusable_after_remove_or_run);
  tcase_add_test(tc, notify_removed_from_one_object_of_many_runs_for_none);
  tcase_add_test(tc, notify_add_on_dying_object_is_enoent);
  tcase_add_test(tc, notify_add_on_dead_object_is_enoent);
  tcase_add_test(tc, notify_callback_may_free_its_node);
  tcase_add_test(tc, notify_callback_may_drop_other_references);
  tcase_add_test(tc, notify_callback_may_use_weak_references_of_other_objects);
  tcase_add_test(tc, notify_callback_may_register_and_remove_other_nodes);
  tcase_add_test(tc, notify_removed_by_a_sibling_callback_never_runs);
  tcase_add_test(tc, several_notifications_all_run);
  tcase_add_test(tc, weak_back_pointer_breaks_a_parent_child_cycle);
  tcase_add_test(tc, strong_back_pointer_keeps_a_cycle_alive_until_broken);
  suite_add_tcase(s, tc);
  return test_run(s);
}
