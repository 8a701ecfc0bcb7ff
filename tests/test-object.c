/* Objects: init, new, ref/unref, type, finalize, errors and the allocator. */
#include "util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static long start_blocks;

static void setup(void) {
  test_alloc_install();
  atomic_store(&test_finalized, 0);
  start_blocks = test_blocks();
}

/* Every test ends with the library holding no memory: no object, no
 * control block is left behind. */
static void teardown(void) { ck_assert_int_eq(test_blocks(), start_blocks); }

/* ---- a type whose finalize records the order of events ------------------- */

static char events[16];
static int nevents;

static void record(char e) {
  ck_assert_int_lt(nevents, (int)sizeof(events) - 1);
  events[nevents++] = e;
  events[nevents] = '\0';
}

static void recording_finalize(void *obj) {
  record('F');
  test_free(obj);
}

static const hark_type recording_type = {"recording", sizeof(test_obj),
                                         recording_finalize, NULL};

/* ---- a caller-owned object whose memory finalize does not release -------- */

typedef struct embedded {
  hark_object base;
  int finalized;
  void *seen;
} embedded;

static void embedded_finalize(void *obj) {
  embedded *e = obj;
  e->finalized++;
  e->seen = obj;
}

static const hark_type embedded_type = {"embedded", sizeof(embedded),
                                        embedded_finalize, NULL};

/* ---- normal use ---------------------------------------------------------- */

START_TEST(new_returns_a_zeroed_object_of_its_type) {
  test_obj *o = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(o);
  ck_assert_int_eq(o->id, 0);
  ck_assert_int_eq(o->calls, 0);
  ck_assert_ptr_eq(hark_object_type(o), &test_obj_type);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&test_finalized), 1);
}
END_TEST

START_TEST(new_with_null_type_returns_null) {
  long allocs = atomic_load(&test_allocs);
  ck_assert_ptr_null(hark_new(NULL));
  ck_assert_int_eq(atomic_load(&test_allocs), allocs);
}
END_TEST

START_TEST(new_with_size_smaller_than_header_still_makes_an_object) {
  static const hark_type tiny = {"tiny", 0, NULL, NULL};
  static const hark_type one = {"one", 1, NULL, NULL};
  void *a = hark_new(&tiny);
  void *b = hark_new(&one);
  ck_assert_ptr_nonnull(a);
  ck_assert_ptr_nonnull(b);
  ck_assert_ptr_eq(hark_object_type(a), &tiny);
  ck_assert_ptr_eq(hark_ref(a), a);
  hark_unref(a);
  hark_weak w = HARK_WEAK_INIT;
  ck_assert_int_eq(hark_weak_set(&w, b), 0);
  hark_unref(a);
  hark_unref(b);
  ck_assert_ptr_null(hark_weak_get(&w));
  hark_weak_clear(&w);
}
END_TEST

START_TEST(object_init_sets_up_caller_owned_memory) {
  embedded e;
  memset(&e, 0, sizeof(e));
  ck_assert_int_eq(hark_object_init(&e, &embedded_type), 0);
  ck_assert_ptr_eq(hark_object_type(&e), &embedded_type);
  ck_assert_ptr_eq(hark_ref(&e), &e);
  hark_unref(&e);
  ck_assert_int_eq(e.finalized, 0);
  hark_unref(&e);
  ck_assert_int_eq(e.finalized, 1);
  ck_assert_ptr_eq(e.seen, &e);
  /* no longer an object: it has no type */
  ck_assert_ptr_null(hark_object_type(&e));
}
END_TEST

START_TEST(object_init_with_null_finalize_frees_with_the_allocator) {
  static const hark_type plain = {"plain", sizeof(test_obj), NULL, NULL};
  long before = test_blocks();
  test_obj *o = test_malloc(sizeof(*o));
  ck_assert_ptr_nonnull(o);
  ck_assert_int_eq(hark_object_init(o, &plain), 0);
  ck_assert_int_gt(test_blocks(), before + 1);
  hark_unref(o);
  ck_assert_int_eq(test_blocks(), before);
}
END_TEST

START_TEST(object_init_rejects_null_arguments) {
  embedded e;
  memset(&e, 0x5a, sizeof(e));
  long allocs = atomic_load(&test_allocs);
  ck_assert_int_eq(hark_object_init(NULL, &embedded_type), HARK_EINVAL);
  ck_assert_int_eq(hark_object_init(&e, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_object_init(NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(atomic_load(&test_allocs), allocs);
  /* a failed call changes nothing */
  embedded pattern;
  memset(&pattern, 0x5a, sizeof(pattern));
  ck_assert_int_eq(memcmp(&e, &pattern, sizeof(e)), 0);
}
END_TEST

START_TEST(finalize_runs_exactly_once_after_the_last_unref) {
  test_obj *o = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(o);
  for (int i = 0; i < 3; i++)
    ck_assert_ptr_eq(hark_ref(o), o);
  for (int i = 0; i < 3; i++) {
    hark_unref(o);
    ck_assert_int_eq(atomic_load(&test_finalized), 0);
  }
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&test_finalized), 1);
}
END_TEST

/* finalize may keep the memory and release it later (as after uv_close):
 * the object is dead to hark at once, its memory stays the owner's. */
static test_obj *parked;

static void parking_finalize(void *obj) {
  atomic_fetch_add(&test_finalized, 1);
  parked = obj;
}

static const hark_type parking_type = {"parking", sizeof(test_obj),
                                       parking_finalize, NULL};

START_TEST(finalize_may_release_the_memory_later) {
  parked = NULL;
  size_t live = hark_live_count("parking");
  test_obj *o = hark_new(&parking_type);
  ck_assert_ptr_nonnull(o);
  o->id = 42;
  hark_weak w = HARK_WEAK_INIT;
  ck_assert_int_eq(hark_weak_set(&w, o), 0);
  ck_assert_uint_eq(hark_live_count("parking"), live + 1);
  hark_unref(o);
  ck_assert_int_eq(atomic_load(&test_finalized), 1);
  ck_assert_ptr_eq(parked, o);
  ck_assert_ptr_null(hark_weak_get(&w));
  ck_assert_uint_eq(hark_live_count("parking"), live);
  /* the memory is still the owner's to read, then to free */
  ck_assert_int_eq(parked->id, 42);
  hark_weak_clear(&w);
  test_free(parked);
}
END_TEST

START_TEST(ref_and_unref_of_null_are_no_ops) {
  long allocs = atomic_load(&test_allocs);
  ck_assert_ptr_null(hark_ref(NULL));
  hark_unref(NULL);
  ck_assert_ptr_null(hark_object_type(NULL));
  ck_assert_int_eq(atomic_load(&test_allocs), allocs);
}
END_TEST

/* ---- death notifications run before finalize ----------------------------- */

static hark_weak order_weak;

static void order_notify(hark_notify *n, void *obj) {
  test_obj *o = obj;
  /* the object is dead to weak references, but its memory is intact */
  ck_assert_ptr_null(hark_weak_get(&order_weak));
  ck_assert_int_eq(o->id, 7);
  ck_assert_ptr_eq(n->data, obj);
  record('N');
}

START_TEST(death_notifications_run_before_finalize) {
  nevents = 0;
  events[0] = '\0';
  test_obj *o = hark_new(&recording_type);
  ck_assert_ptr_nonnull(o);
  o->id = 7;
  hark_notify n1 = {0}, n2 = {0};
  n1.data = n2.data = o;
  ck_assert_int_eq(hark_weak_set(&order_weak, o), 0);
  ck_assert_int_eq(hark_notify_add(&n1, o, order_notify), 0);
  ck_assert_int_eq(hark_notify_add(&n2, o, order_notify), 0);
  hark_unref(o);
  ck_assert_str_eq(events, "NNF");
  hark_weak_clear(&order_weak);
}
END_TEST

/* ---- errors, allocator --------------------------------------------------- */

START_TEST(strerror_names_every_error_code) {
  static const struct {
    int err;
    const char *name;
  } codes[] = {
      {HARK_ENOENT, "HARK_ENOENT"}, {HARK_EAGAIN, "HARK_EAGAIN"},
      {HARK_ENOMEM, "HARK_ENOMEM"}, {HARK_EBUSY, "HARK_EBUSY"},
      {HARK_EEXIST, "HARK_EEXIST"}, {HARK_EINVAL, "HARK_EINVAL"},
      {HARK_ERANGE, "HARK_ERANGE"}, {HARK_ECANCELED, "HARK_ECANCELED"},
  };
  for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    const char *s = hark_strerror(codes[i].err);
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(strncmp(s, codes[i].name, strlen(codes[i].name)) == 0,
                  "hark_strerror(%d) = \"%s\"", codes[i].err, s);
    ck_assert_str_ne(s, "unknown error");
  }
}
END_TEST

START_TEST(strerror_of_an_unknown_code_says_unknown_error) {
  ck_assert_str_eq(hark_strerror(-9999), "unknown error");
  ck_assert_str_eq(hark_strerror(1), "unknown error");
  ck_assert_ptr_nonnull(hark_strerror(0));
  ck_assert_str_ne(hark_strerror(0), "unknown error");
}
END_TEST

START_TEST(replace_allocator_routes_every_allocation_through_it) {
  long allocs = atomic_load(&test_allocs);
  long blocks = test_blocks();
  test_obj *o = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(o);
  ck_assert_int_gt(atomic_load(&test_allocs), allocs);
  ck_assert_int_gt(test_blocks(), blocks);
  hark_unref(o);
  ck_assert_int_eq(test_blocks(), blocks);
}
END_TEST

START_TEST(replace_allocator_with_a_null_function_changes_nothing) {
  ck_assert_int_eq(hark_replace_allocator(NULL, realloc, calloc, free),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_replace_allocator(malloc, NULL, calloc, free),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_replace_allocator(malloc, realloc, NULL, free),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_replace_allocator(malloc, realloc, calloc, NULL),
                   HARK_EINVAL);
  /* the counting allocator is still the one in use */
  long allocs = atomic_load(&test_allocs);
  test_obj *o = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(o);
  ck_assert_int_gt(atomic_load(&test_allocs), allocs);
  hark_unref(o);
}
END_TEST

START_TEST(new_reports_allocation_failure_as_null) {
  size_t live = hark_live_count(NULL);
  test_fail_nth(1);
  ck_assert_ptr_null(hark_new(&test_obj_type));
  test_fail_nth(0);
  ck_assert_uint_eq(hark_live_count(NULL), live);
  ck_assert_int_eq(test_blocks(), start_blocks);
}
END_TEST

START_TEST(object_init_reports_allocation_failure_and_changes_nothing) {
  embedded e;
  memset(&e, 0x5a, sizeof(e));
  embedded pattern;
  memset(&pattern, 0x5a, sizeof(pattern));
  test_fail_nth(1);
  ck_assert_int_eq(hark_object_init(&e, &embedded_type), HARK_ENOMEM);
  test_fail_nth(0);
  ck_assert_int_eq(memcmp(&e, &pattern, sizeof(e)), 0);
  /* and it works once memory is back */
  memset(&e, 0, sizeof(e));
  ck_assert_int_eq(hark_object_init(&e, &embedded_type), 0);
  hark_unref(&e);
  ck_assert_int_eq(e.finalized, 1);
}
END_TEST

/* ---- misuse aborts --------------------------------------------------------
 * Each runs in a child of its own (whatever Check's fork mode), on an
 * object whose finalize keeps its memory, so the misuse reads no freed
 * memory and the abort is the library's own, also under ASan/valgrind. */

static embedded dead_obj;

static void make_dead_obj(void) {
  memset(&dead_obj, 0, sizeof(dead_obj));
  ck_assert_int_eq(hark_object_init(&dead_obj, &embedded_type), 0);
  hark_unref(&dead_obj);
  ck_assert_int_eq(dead_obj.finalized, 1);
}

static int child_status(void (*fn)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0)
      dup2(fd, 2);
    fn();
    _exit(0);
  }
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  return status;
}

static void ref_dead(void) { hark_ref(&dead_obj); }
static void unref_dead(void) { hark_unref(&dead_obj); }

START_TEST(ref_on_a_dead_object_aborts) {
  make_dead_obj();
  int status = child_status(ref_dead);
  ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                "child status %#x", status);
}
END_TEST

START_TEST(unref_on_a_dead_object_aborts) {
  make_dead_obj();
  int status = child_status(unref_dead);
  ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                "child status %#x", status);
}
END_TEST

int main(void) {
  Suite *s = suite_create("object");
  TCase *tc = tcase_create("object");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, new_returns_a_zeroed_object_of_its_type);
  tcase_add_test(tc, new_with_null_type_returns_null);
  tcase_add_test(tc, new_with_size_smaller_than_header_still_makes_an_object);
  tcase_add_test(tc, object_init_sets_up_caller_owned_memory);
  tcase_add_test(tc, object_init_with_null_finalize_frees_with_the_allocator);
  tcase_add_test(tc, object_init_rejects_null_arguments);
  tcase_add_test(tc, finalize_runs_exactly_once_after_the_last_unref);
  tcase_add_test(tc, finalize_may_release_the_memory_later);
  tcase_add_test(tc, ref_and_unref_of_null_are_no_ops);
  tcase_add_test(tc, death_notifications_run_before_finalize);
  tcase_add_test(tc, strerror_names_every_error_code);
  tcase_add_test(tc, strerror_of_an_unknown_code_says_unknown_error);
  tcase_add_test(tc, replace_allocator_routes_every_allocation_through_it);
  tcase_add_test(tc, replace_allocator_with_a_null_function_changes_nothing);
  tcase_add_test(tc, new_reports_allocation_failure_as_null);
  tcase_add_test(tc,
                 object_init_reports_allocation_failure_and_changes_nothing);
  tcase_add_test(tc, ref_on_a_dead_object_aborts);
  tcase_add_test(tc, unref_on_a_dead_object_aborts);
  suite_add_tcase(s, tc);
  return test_run(s);
}
