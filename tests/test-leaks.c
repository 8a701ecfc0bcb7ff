/* The leak finder (hark_leaks_find, hark_leaks_print) and the tracker's
 * tables: the two classic leaks of the design notes found with their
 * paths, decoys that are not leaks left alone, cycles of every size,
 * opaque types never reported, every allocation failing in turn, and the
 * finder running while other threads change the graph. */
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- traversable objects: each holds up to four others strongly ------- */

/* The fields are atomic: traverse reads them while other threads of the
 * program change them (the finder runs beside them), as hark.h asks of a
 * traverse function. */
typedef struct node {
  hark_object base;
  struct node *_Atomic to[4];
  void *_Atomic opaque; /* a strong reference the finder cannot see */
  _Atomic int n;
} node;

/* Drops what o holds. o itself may die on the way (a cycle collapsing):
 * everything is taken out of it first. */
static void node_unlink(node *o) {
  node *to[4];
  int n = atomic_exchange(&o->n, 0);
  for (int i = 0; i < n; i++)
    to[i] = atomic_exchange(&o->to[i], NULL);
  void *op = atomic_exchange(&o->opaque, NULL);
  for (int i = 0; i < n; i++)
    hark_unref(to[i]);
  hark_unref(op);
}

static void node_finalize(void *obj) {
  node_unlink(obj);
  test_free(obj);
}

static void node_traverse(void *obj, hark_visit_fn visit, void *arg) {
  node *o = obj;
  int n = atomic_load(&o->n);
  for (int i = 0; i < n && i < 4; i++) {
    node *to = atomic_load(&o->to[i]);
    if (to != NULL)
      visit(to, arg);
  }
}

static const hark_type parent_type = {"parent", sizeof(node), node_finalize,
                                      node_traverse};
static const hark_type child_type = {"child", sizeof(node), node_finalize,
                                     node_traverse};
static const hark_type holder_type = {"holder", sizeof(node), node_finalize,
                                      node_traverse};
/* the same layout, opaque: no traverse */
static const hark_type blob_type = {"blob", sizeof(node), node_finalize, NULL};
static const hark_type widget_type = {"widget", 32, NULL, NULL};

static node *mk(const hark_type *t) {
  node *o = hark_new(t);
  ck_assert_ptr_nonnull(o);
  return o;
}

/* from holds a new reference to to */
static void link_to(node *from, void *to) {
  int n = atomic_load(&from->n);
  ck_assert_int_lt(n, 4);
  atomic_store(&from->to[n], hark_ref(to));
  atomic_store(&from->n, n + 1); /* after the slot: traverse reads n first */
}

/* ---- weak-map values that may hold their key ----------------------------- */

typedef struct pin_value {
  void *held;     /* strong: the classic leak when it is the key */
  hark_weak back; /* weak: the right way */
} pin_value;

static void pin_free(void *v) {
  pin_value *p = v;
  hark_unref(p->held);
  hark_weak_clear(&p->back);
  test_free(p);
}

static void pin_traverse(void *v, hark_visit_fn visit, void *arg) {
  pin_value *p = v;
  if (p->held != NULL)
    visit(p->held, arg);
}

static pin_value *pin_new(void *strong, void *weak) {
  pin_value *p = test_calloc(1, sizeof *p);
  ck_assert_ptr_nonnull(p);
  p->held = hark_ref(strong);
  if (weak != NULL)
    ck_assert_int_eq(hark_weak_set(&p->back, weak), 0);
  return p;
}

static hark_weakmap *pin_map(void) {
  hark_weakmap_ops ops = {pin_free, NULL, pin_traverse};
  hark_weakmap *m = hark_weakmap_new_ops(&ops);
  ck_assert_ptr_nonnull(m);
  return m;
}

/* ---- collecting findings ------------------------------------------------- */

#define MAXF 16
typedef struct finding {
  hark_leak_kind kind;
  size_t n;
  void *path[8];
  hark_weakmap *map;
} finding;

static finding found[MAXF];
static int nfound;

static void collect(void *data, const hark_leak *leak) {
  (void)data;
  ck_assert_int_lt(nfound, MAXF);
  finding *f = &found[nfound++];
  f->kind = leak->kind;
  f->n = leak->n;
  f->map = leak->map;
  for (size_t i = 0; i < leak->n && i < 8; i++)
    f->path[i] = leak->path[i];
}

static int find(void) {
  nfound = 0;
  return hark_leaks_find(collect, NULL);
}

/* the printed report, as a string */
static char printed[8192];

static size_t print_report(void) {
  FILE *f = fmemopen(printed, sizeof printed, "w");
  ck_assert_ptr_nonnull(f);
  size_t n = hark_leaks_print(f);
  fclose(f);
  return n;
}

static void setup(void) { test_alloc_install(); }

static void teardown(void) {
  ck_assert_int_eq(find(), 0);
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), 0);
}

/* ---- the two classic leaks --------------------------------------------------- */

START_TEST(a_value_that_holds_its_key_pins_it_and_is_reported) {
  hark_weakmap *m = pin_map();
  void *w = hark_new(&widget_type);
  ck_assert_int_eq(hark_weakmap_set(m, w, pin_new(w, NULL)), 0);
  hark_unref(w); /* the program is done with it: it should go, and won't */
  ck_assert_uint_eq(hark_live_count("widget"), 1);

  ck_assert_int_eq(find(), 1);
  ck_assert_int_eq(nfound, 1);
  ck_assert_int_eq(found[0].kind, HARK_LEAK_PINNED_KEY);
  ck_assert_ptr_eq(found[0].map, m);
  ck_assert_uint_eq(found[0].n, 1);
  ck_assert_ptr_eq(found[0].path[0], w);

  ck_assert_uint_eq(print_report(), 1);
  char want[256];
  snprintf(want, sizeof want,
           "weak-map %p entry: key widget %p is pinned by its value "
           "(value -> widget)\n",
           (void *)m, w);
  ck_assert_str_eq(printed, want);
  hark_weakmap_free(m); /* releases the value, and with it the widget */
  ck_assert_uint_eq(hark_live_count("widget"), 0);
}
END_TEST

START_TEST(a_parent_child_cycle_is_reported_with_its_path) {
  node *p = mk(&parent_type), *c = mk(&child_type);
  link_to(p, c);
  link_to(c, p); /* the back pointer should have been weak */
  hark_unref(p);
  hark_unref(c);
  ck_assert_int_eq(find(), 2);
  ck_assert_int_eq(nfound, 1);
  ck_assert_int_eq(found[0].kind, HARK_LEAK_CYCLE);
  ck_assert_uint_eq(found[0].n, 2);
  ck_assert_ptr_null(found[0].map);
  /* each holds the next, the last the first */
  ck_assert(found[0].path[0] == (void *)p || found[0].path[0] == (void *)c);
  ck_assert_ptr_ne(found[0].path[0], found[0].path[1]);

  ck_assert_uint_eq(print_report(), 2);
  char want[256];
  node *a = found[0].path[0], *b = found[0].path[1];
  snprintf(want, sizeof want, "cycle of 2: %s %p -> %s %p -> %s %p\n",
           a == p ? "parent" : "child", (void *)a, b == p ? "parent" : "child",
           (void *)b, a == p ? "parent" : "child", (void *)a);
  ck_assert_str_eq(printed, want);
  node_unlink(p); /* breaking the cycle frees both */
  ck_assert_uint_eq(hark_live_count(NULL), 0);
}
END_TEST

START_TEST(both_classic_leaks_together_give_exactly_two_findings) {
  hark_weakmap *m = pin_map();
  void *w = hark_new(&widget_type);
  ck_assert_int_eq(hark_weakmap_set(m, w, pin_new(w, NULL)), 0);
  hark_unref(w);
  node *p = mk(&parent_type), *c = mk(&child_type);
  link_to(p, c);
  link_to(c, p);
  hark_unref(p);
  hark_unref(c);
  ck_assert_int_eq(find(), 3);
  ck_assert_int_eq(nfound, 2);
  int pinned = found[0].kind == HARK_LEAK_PINNED_KEY ? 0 : 1;
  ck_assert_int_eq(found[pinned].kind, HARK_LEAK_PINNED_KEY);
  ck_assert_int_eq(found[1 - pinned].kind, HARK_LEAK_CYCLE);
  node_unlink(p);
  hark_weakmap_free(m);
}
END_TEST

/* ---- cycles of every size -------------------------------------------------- */

START_TEST(a_cycle_of_three_and_a_self_loop_are_found) {
  node *a = mk(&parent_type), *b = mk(&child_type), *c = mk(&holder_type);
  link_to(a, b);
  link_to(b, c);
  link_to(c, a);
  node *s = mk(&holder_type);
  link_to(s, s);
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  hark_unref(s);
  ck_assert_int_eq(find(), 4);
  ck_assert_int_eq(nfound, 2);
  finding *three = found[0].n == 3 ? &found[0] : &found[1];
  finding *one = found[0].n == 3 ? &found[1] : &found[0];
  ck_assert_uint_eq(three->n, 3);
  ck_assert_int_eq(three->kind, HARK_LEAK_CYCLE);
  /* in edge order: each element's successor is the one it links to */
  for (int i = 0; i < 3; i++) {
    node *x = three->path[i];
    ck_assert_ptr_eq(atomic_load(&x->to[0]), three->path[(i + 1) % 3]);
  }
  ck_assert_uint_eq(one->n, 1);
  ck_assert_ptr_eq(one->path[0], s);
  ck_assert_uint_eq(print_report(), 4);
  char want[128];
  snprintf(want, sizeof want, "cycle of 1: holder %p -> holder %p\n",
           (void *)s, (void *)s);
  ck_assert_msg(strstr(printed, want) != NULL, "%s", printed);
  node_unlink(a);
  node_unlink(s);
}
END_TEST

START_TEST(objects_only_a_cycle_holds_are_reported_as_held_by_it) {
  node *p = mk(&parent_type), *c = mk(&child_type);
  node *tail1 = mk(&holder_type), *tail2 = mk(&holder_type);
  link_to(p, c);
  link_to(c, p);
  link_to(c, tail1);
  link_to(tail1, tail2);
  hark_unref(p);
  hark_unref(c);
  hark_unref(tail1);
  hark_unref(tail2);
  ck_assert_int_eq(find(), 4);
  ck_assert_int_eq(nfound, 3);
  ck_assert_int_eq(found[0].kind, HARK_LEAK_CYCLE); /* cycles first */
  ck_assert_int_eq(found[1].kind, HARK_LEAK_HELD);
  ck_assert_int_eq(found[2].kind, HARK_LEAK_HELD);
  print_report();
  char want[128];
  snprintf(want, sizeof want, "held by a leak: holder %p\n", (void *)tail2);
  ck_assert_msg(strstr(printed, want) != NULL, "%s", printed);
  node_unlink(p);
}
END_TEST

START_TEST(a_pin_through_a_chain_is_reported_with_the_chain) {
  hark_weakmap *m = pin_map();
  void *w = hark_new(&widget_type);
  node *h = mk(&holder_type);
  link_to(h, w);                                          /* holder -> widget */
  ck_assert_int_eq(hark_weakmap_set(m, w, pin_new(h, NULL)), 0); /* value -> holder */
  hark_unref(h);
  hark_unref(w);
  ck_assert_int_eq(find(), 2);
  ck_assert_int_eq(nfound, 1);
  ck_assert_int_eq(found[0].kind, HARK_LEAK_PINNED_KEY);
  ck_assert_uint_eq(found[0].n, 2);
  ck_assert_ptr_eq(found[0].path[0], h);
  ck_assert_ptr_eq(found[0].path[1], w);
  print_report();
  char want[256];
  snprintf(want, sizeof want,
           "weak-map %p entry: key widget %p is pinned by its value "
           "(value -> holder %p -> widget)\n",
           (void *)m, w, (void *)h);
  ck_assert_str_eq(printed, want);
  hark_weakmap_free(m);
}
END_TEST

/* ---- decoys: not leaks ----------------------------------------------------- */

START_TEST(a_cycle_with_a_live_root_is_not_reported) {
  node *p = mk(&parent_type), *c = mk(&child_type);
  link_to(p, c);
  link_to(c, p);
  hark_unref(c); /* p is still the program's: a cycle, but reachable */
  ck_assert_int_eq(find(), 0);
  ck_assert_int_eq(nfound, 0);
  ck_assert_uint_eq(print_report(), 0);
  ck_assert_str_eq(printed, "no leaks found\n");
  /* a root further away: held by an object that holds the cycle */
  node *r = mk(&holder_type);
  link_to(r, c);
  hark_unref(p);
  ck_assert_int_eq(find(), 0);
  node_unlink(p);
  hark_unref(r);
}
END_TEST

START_TEST(a_value_holding_only_a_weak_reference_back_is_not_reported) {
  hark_weakmap *m = pin_map();
  void *w = hark_new(&widget_type);
  void *other = hark_new(&widget_type);
  pin_value *v = pin_new(other, w); /* strong to another, weak to its key */
  ck_assert_int_eq(hark_weakmap_set(m, w, v), 0);
  ck_assert_int_eq(find(), 0);
  hark_unref(other); /* held by the value: fine, it goes with the entry */
  ck_assert_int_eq(find(), 0);
  hark_unref(w); /* the key goes, its entry too, and the other widget */
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  ck_assert_uint_eq(hark_live_count("widget"), 0);
  hark_weakmap_free(m);
}
END_TEST

START_TEST(objects_of_opaque_types_are_never_reported) {
  /* a cycle the finder cannot see */
  node *a = mk(&blob_type), *b = mk(&blob_type);
  link_to(a, b);
  link_to(b, a);
  hark_unref(a);
  hark_unref(b);
  ck_assert_int_eq(find(), 0);
  /* an opaque object holding a traversable cycle's member: the cycle
   * counts as reachable from outside */
  node *p = mk(&parent_type), *c = mk(&child_type), *x = mk(&blob_type);
  link_to(p, c);
  link_to(c, p);
  link_to(x, p);
  hark_unref(p);
  hark_unref(c);
  ck_assert_int_eq(find(), 0);
  hark_unref(x); /* now the cycle is alone */
  ck_assert_int_eq(find(), 2);
  /* an opaque object held only by a leaked cycle is not reported */
  node *y = mk(&blob_type);
  atomic_store(&c->opaque, hark_ref(y));
  hark_unref(y);
  ck_assert_int_eq(find(), 2);
  ck_assert_int_eq(nfound, 1);
  node_unlink(a);
  node_unlink(p);
}
END_TEST

START_TEST(a_value_without_value_traverse_is_never_reported) {
  hark_weakmap_ops ops = {pin_free, NULL, NULL};
  hark_weakmap *m = hark_weakmap_new_ops(&ops);
  void *w = hark_new(&widget_type);
  ck_assert_int_eq(hark_weakmap_set(m, w, pin_new(w, NULL)), 0);
  hark_unref(w);
  ck_assert_int_eq(find(), 0); /* it leaks, but nobody said how */
  hark_weakmap_free(m);
}
END_TEST

START_TEST(leaks_print_says_none_and_null_is_stdout) {
  ck_assert_uint_eq(print_report(), 0);
  ck_assert_str_eq(printed, "no leaks found\n");
  fflush(stdout);
  ck_assert_uint_eq(hark_leaks_print(NULL), 0);
  ck_assert_int_eq(hark_leaks_find(NULL, NULL), 0);
  node *s = mk(&holder_type);
  link_to(s, s);
  hark_unref(s);
  ck_assert_int_eq(hark_leaks_find(NULL, NULL), 1);
  node_unlink(s);
}
END_TEST

/* ---- allocation failure ---------------------------------------------------- */

static int oom_scenario(void *arg) {
  (void)arg;
  nfound = 0;
  int n = hark_leaks_find(collect, NULL);
  bool met = test_failure_met();
  test_fail_nth(0);
  if (n == HARK_ENOMEM) {
    ck_assert_int_eq(nfound, 0); /* nothing half-reported */
    return 0;
  }
  ck_assert_int_eq(n, 4); /* the widget, the parent, the child, the holder */
  ck_assert_int_eq(nfound, 3);
  return !met;
}

START_TEST(every_allocation_of_the_finder_failing_returns_an_error_and_leaks_nothing) {
  hark_weakmap *m = pin_map();
  void *w = hark_new(&widget_type);
  ck_assert_int_eq(hark_weakmap_set(m, w, pin_new(w, NULL)), 0);
  hark_unref(w);
  node *p = mk(&parent_type), *c = mk(&child_type), *t = mk(&holder_type);
  link_to(p, c);
  link_to(c, p);
  link_to(c, t);
  hark_unref(p);
  hark_unref(c);
  hark_unref(t);
  node *live = mk(&holder_type); /* not a leak */
  int points = test_oom_loop(oom_scenario, NULL);
  ck_assert_int_ge(points, 5);
  hark_unref(live);
  node_unlink(p);
  hark_weakmap_free(m);
}
END_TEST

/* ---- while other threads go on --------------------------------------------- */

static _Atomic int churn_stop;

static void *churn(void *arg) {
  hark_weakmap *m = arg;
  while (!atomic_load(&churn_stop)) {
    /* a cycle that lives a little and is then broken, a pinned entry
     * that is then removed, objects that die at once */
    node *a = mk(&parent_type), *b = mk(&child_type);
    link_to(a, b);
    link_to(b, a);
    void *w = hark_new(&widget_type);
    hark_weakmap_set(m, w, pin_new(w, NULL));
    hark_unref(b);
    node_unlink(a);
    hark_unref(a);
    hark_weakmap_remove(m, w);
    hark_unref(w);
  }
  return NULL;
}

START_TEST(the_finder_runs_while_other_threads_change_the_graph) {
  hark_weakmap *m = pin_map();
  atomic_store(&churn_stop, 0);
  pthread_t t[2];
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, churn, m), 0);
  long runs = test_scaled(300);
  for (long i = 0; i < runs; i++) {
    int n = hark_leaks_find(NULL, NULL);
    ck_assert_int_ge(n, 0); /* passing states may show: never a crash */
  }
  atomic_store(&churn_stop, 1);
  for (int i = 0; i < 2; i++)
    pthread_join(t[i], NULL);
  ck_assert_int_eq(find(), 0); /* quiet again: exact */
  hark_weakmap_free(m);
}
END_TEST

/* ---- the tracker's tables --------------------------------------------------- */

static char table[4096];

static void print_diff(const hark_snapshot *before, const hark_snapshot *after) {
  FILE *f = fmemopen(table, sizeof table, "w");
  ck_assert_ptr_nonnull(f);
  hark_snapshot_print_diff(f, before, after);
  fclose(f);
}

START_TEST(a_single_snapshot_prints_plain_counts_and_a_diff_signed_deltas) {
  hark_snapshot *before = hark_snapshot_take();
  void *w[3];
  for (int i = 0; i < 3; i++)
    w[i] = hark_new(&widget_type);
  hark_snapshot *after = hark_snapshot_take();
  char want[128];
  print_diff(NULL, after);
  snprintf(want, sizeof want, "%-32s %10d %12d\n", "widget", 3, 96);
  ck_assert_msg(strstr(table, want) != NULL, "%s", table);
  ck_assert_msg(strchr(table, '+') == NULL, "%s", table);
  print_diff(before, after);
  snprintf(want, sizeof want, "%-32s %+10d %+12d\n", "widget", 3, 96);
  ck_assert_msg(strstr(table, want) != NULL, "%s", table);
  print_diff(after, before);
  ck_assert_msg(strstr(table, "-3") != NULL, "%s", table);
  for (int i = 0; i < 3; i++)
    hark_unref(w[i]);
  hark_snapshot_free(before);
  hark_snapshot_free(after);
}
END_TEST

START_TEST(rows_are_ordered_by_count_then_type_name) {
  static const hark_type bee = {"bee", 8, NULL, NULL};
  static const hark_type ant = {"ant", 8, NULL, NULL};
  static const hark_type cat = {"cat", 8, NULL, NULL};
  void *o[6];
  o[0] = hark_new(&bee);
  o[1] = hark_new(&cat);
  o[2] = hark_new(&cat);
  o[3] = hark_new(&ant);
  o[4] = hark_new(&cat);
  o[5] = hark_new(&bee);
  hark_snapshot *s = hark_snapshot_take();
  print_diff(NULL, s);
  char *c = strstr(table, "\ncat "), *a = strstr(table, "\nant "),
       *b = strstr(table, "\nbee ");
  ck_assert_msg(c != NULL && a != NULL && b != NULL, "%s", table);
  ck_assert_msg(c < b && b < a, "%s", table); /* 3 cats, 2 bees, 1 ant */
  for (int i = 0; i < 6; i++)
    hark_unref(o[i]);
  hark_snapshot_free(s);
}
END_TEST

START_TEST(weak_maps_and_their_entries_appear_in_the_tables) {
  hark_snapshot *before = hark_snapshot_take();
  hark_weakmap *m = hark_weakmap_new(NULL);
  void *k[2] = {hark_new(&widget_type), hark_new(&widget_type)};
  static int v;
  ck_assert_int_eq(hark_weakmap_set(m, k[0], &v), 0);
  ck_assert_int_eq(hark_weakmap_set(m, k[1], &v), 0);
  hark_snapshot *after = hark_snapshot_take();
  ck_assert_uint_eq(hark_snapshot_count(after, "hark_weakmap"), 1);
  ck_assert_uint_eq(hark_snapshot_count(after, "hark_weakmap entry"), 2);
  /* they are not hark objects: the all-types count leaves them out */
  ck_assert_uint_eq(hark_snapshot_count(after, NULL) -
                        hark_snapshot_count(before, NULL),
                    2);
  print_diff(before, after);
  ck_assert_msg(strstr(table, "hark_weakmap entry") != NULL, "%s", table);
  ck_assert_msg(strstr(table, "\nhark_weakmap ") != NULL, "%s", table);
  hark_unref(k[0]);
  hark_unref(k[1]);
  hark_weakmap_free(m);
  hark_snapshot *gone = hark_snapshot_take();
  ck_assert_uint_eq(hark_snapshot_count(gone, "hark_weakmap"), 0);
  ck_assert_uint_eq(hark_snapshot_count(gone, "hark_weakmap entry"), 0);
  hark_snapshot_free(before);
  hark_snapshot_free(after);
  hark_snapshot_free(gone);
}
END_TEST

/* ---- HARK_DEBUG=leaks reports the leaks at exit ------------------------------ */

static const char *self_path;

static void capture_to_stdout(void *data, hark_log_level level,
                              const char *msg) {
  (void)data;
  (void)level;
  printf("%s\n", msg);
}

static void link_to_raw(node *from, void *to) {
  int n = atomic_load(&from->n);
  atomic_store(&from->to[n], hark_ref(to));
  atomic_store(&from->n, n + 1);
}

/* Not a Check test: no check macros here. */
static int leak_child(void) {
  hark_set_log(capture_to_stdout, NULL);
  node *p = hark_new(&parent_type), *c = hark_new(&child_type);
  if (p == NULL || c == NULL)
    return 1;
  link_to_raw(p, c);
  link_to_raw(c, p);
  hark_unref(p);
  hark_unref(c);
  return 0; /* exit: the report runs */
}

START_TEST(debug_leaks_reports_the_leaks_at_exit) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    setenv("HARK_DEBUG", "leaks", 1);
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
    execl(self_path, self_path, "--leak-child", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  char out[4096];
  size_t n = 0;
  ssize_t r;
  while ((r = read(fds[0], out + n, sizeof out - 1 - n)) > 0)
    n += (size_t)r;
  out[n] = '\0';
  close(fds[0]);
  int status;
  waitpid(pid, &status, 0);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s", out);
  ck_assert_msg(strstr(out, "2 live objects at exit") != NULL, "%s", out);
  ck_assert_msg(strstr(out, "cycle of 2: ") != NULL, "%s", out);
}
END_TEST

int main(int argc, char **argv) {
  self_path = argv[0];
  if (argc == 2 && strcmp(argv[1], "--leak-child") == 0)
    return leak_child();
  Suite *s = suite_create("leaks");
  TCase *tc = tcase_create("finder");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, a_value_that_holds_its_key_pins_it_and_is_reported);
  tcase_add_test(tc, a_parent_child_cycle_is_reported_with_its_path);
  tcase_add_test(tc, both_classic_leaks_together_give_exactly_two_findings);
  tcase_add_test(tc, a_cycle_of_three_and_a_self_loop_are_found);
  tcase_add_test(tc, objects_only_a_cycle_holds_are_reported_as_held_by_it);
  tcase_add_test(tc, a_pin_through_a_chain_is_reported_with_the_chain);
  tcase_add_test(tc, a_cycle_with_a_live_root_is_not_reported);
  tcase_add_test(tc, a_value_holding_only_a_weak_reference_back_is_not_reported);
  tcase_add_test(tc, objects_of_opaque_types_are_never_reported);
  tcase_add_test(tc, a_value_without_value_traverse_is_never_reported);
  tcase_add_test(tc, leaks_print_says_none_and_null_is_stdout);
  tcase_add_test(
      tc, every_allocation_of_the_finder_failing_returns_an_error_and_leaks_nothing);
  tcase_add_test(tc, the_finder_runs_while_other_threads_change_the_graph);
  tcase_add_test(tc, a_single_snapshot_prints_plain_counts_and_a_diff_signed_deltas);
  tcase_add_test(tc, rows_are_ordered_by_count_then_type_name);
  tcase_add_test(tc, weak_maps_and_their_entries_appear_in_the_tables);
  tcase_add_test(tc, debug_leaks_reports_the_leaks_at_exit);
  suite_add_tcase(s, tc);
  return test_run(s);
}
