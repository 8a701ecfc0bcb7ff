/* The weak-key map: Python's WeakKeyDictionary for hark objects.
 *
 * Written from the contract (DESIGN.md) and include/hark.h alone. Every
 * test installs the counting allocator first and ends by checking that
 * nothing is left: no live object, no allocated block. */
#include "util.h"

/* ---- values: plain ints whose release is recorded -------------------- */

static int freed_count;
static void *freed_log[64];

static void value_free_log(void *value) {
  if (freed_count < 64)
    freed_log[freed_count] = value;
  freed_count++;
}

static int value_was_freed(const void *value) {
  int n = 0;
  for (int i = 0; i < freed_count && i < 64; i++)
    n += freed_log[i] == value;
  return n;
}

static test_obj *key_new(int id) {
  test_obj *k = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(k);
  k->id = id;
  return k;
}

static void assert_all_released(void) {
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), 0);
}

/* ---- normal use -------------------------------------------------------- */

START_TEST(weakmap_new_is_empty) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  ck_assert_ptr_nonnull(m);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  test_obj *k = key_new(1);
  ck_assert_ptr_null(hark_weakmap_peek(m, k));
  ck_assert_int_eq(hark_weakmap_remove(m, k), 0);
  hark_weakmap_free(m);
  hark_unref(k);
  ck_assert_int_eq(freed_count, 0);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_set_then_get_returns_the_value) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  int v1, v2;
  test_obj *k1 = key_new(1), *k2 = key_new(2);
  ck_assert_int_eq(hark_weakmap_set(m, k1, &v1), 0);
  ck_assert_int_eq(hark_weakmap_set(m, k2, &v2), 0);
  ck_assert_ptr_eq(hark_weakmap_peek(m, k1), &v1);
  ck_assert_ptr_eq(hark_weakmap_peek(m, k2), &v2);
  ck_assert_uint_eq(hark_weakmap_size(m), 2);
  ck_assert_int_eq(freed_count, 0);
  hark_weakmap_free(m);
  ck_assert_int_eq(freed_count, 2);
  hark_unref(k1);
  hark_unref(k2);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_holds_many_keys) {
  test_alloc_install();
  enum { N = 1000 };
  static int vals[N];
  static test_obj *keys[N];
  hark_weakmap *m = hark_weakmap_new(NULL);
  for (int i = 0; i < N; i++) {
    keys[i] = key_new(i);
    ck_assert_int_eq(hark_weakmap_set(m, keys[i], &vals[i]), 0);
  }
  ck_assert_uint_eq(hark_weakmap_size(m), N);
  for (int i = 0; i < N; i++)
    ck_assert_ptr_eq(hark_weakmap_peek(m, keys[i]), &vals[i]);
  /* kill every other key */
  for (int i = 0; i < N; i += 2)
    hark_unref(keys[i]);
  ck_assert_uint_eq(hark_weakmap_size(m), N / 2);
  for (int i = 1; i < N; i += 2)
    ck_assert_ptr_eq(hark_weakmap_peek(m, keys[i]), &vals[i]);
  for (int i = 1; i < N; i += 2)
    ck_assert_int_eq(hark_weakmap_remove(m, keys[i]), 1);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  hark_weakmap_free(m);
  for (int i = 1; i < N; i += 2)
    hark_unref(keys[i]);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_remove_releases_the_value_and_returns_one_then_zero) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  int v;
  test_obj *k = key_new(1);
  ck_assert_int_eq(hark_weakmap_set(m, k, &v), 0);
  ck_assert_int_eq(hark_weakmap_remove(m, k), 1);
  ck_assert_int_eq(freed_count, 1);
  ck_assert_ptr_eq(freed_log[0], &v);
  ck_assert_ptr_null(hark_weakmap_peek(m, k));
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  ck_assert_int_eq(hark_weakmap_remove(m, k), 0);
  ck_assert_int_eq(freed_count, 1);
  /* the key is usable again */
  ck_assert_int_eq(hark_weakmap_set(m, k, &v), 0);
  ck_assert_ptr_eq(hark_weakmap_peek(m, k), &v);
  hark_unref(k);
  ck_assert_int_eq(freed_count, 2);
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_with_null_value_free_does_not_release_values) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(NULL);
  ck_assert_ptr_nonnull(m);
  int *v = test_malloc(sizeof *v);
  test_obj *k = key_new(1);
  ck_assert_int_eq(hark_weakmap_set(m, k, v), 0);
  ck_assert_int_eq(hark_weakmap_remove(m, k), 1);
  *v = 5; /* still ours */
  ck_assert_int_eq(hark_weakmap_set(m, k, v), 0);
  hark_unref(k);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  *v = 6;
  test_free(v);
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

/* ---- errors ------------------------------------------------------------ */

START_TEST(weakmap_null_arguments_are_rejected_and_change_nothing) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  int v;
  test_obj *k = key_new(1);
  ck_assert_int_eq(hark_weakmap_set(NULL, k, &v), HARK_EINVAL);
  ck_assert_int_eq(hark_weakmap_set(m, NULL, &v), HARK_EINVAL);
  ck_assert_ptr_null(hark_weakmap_peek(NULL, k));
  ck_assert_ptr_null(hark_weakmap_peek(m, NULL));
  ck_assert_int_eq(hark_weakmap_remove(NULL, k), HARK_EINVAL);
  ck_assert_int_eq(hark_weakmap_remove(m, NULL), HARK_EINVAL);
  ck_assert_uint_eq(hark_weakmap_size(NULL), 0);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  hark_weakmap_free(NULL);          /* harmless no-op */
  ck_assert_int_eq(freed_count, 0); /* a failed set keeps the value ours */
  hark_weakmap_free(m);
  hark_unref(k);
  assert_all_released();
}
END_TEST

/* A key is "dying" from its last unref on: a death notification is the
 * one place a caller can still name it. */
static hark_weakmap *dying_map;
static int dying_value;
static int dying_set_result = 1;
static void *dying_get_result = &dying_value;

static void set_on_dying_key(hark_notify *n, void *obj) {
  dying_set_result = hark_weakmap_set(dying_map, obj, &dying_value);
  dying_get_result = hark_weakmap_peek(dying_map, obj);
}

START_TEST(weakmap_set_with_a_dying_key_returns_enoent) {
  test_alloc_install();
  dying_map = hark_weakmap_new(value_free_log);
  test_obj *k = key_new(1);
  hark_notify n;
  memset(&n, 0, sizeof n);
  ck_assert_int_eq(hark_notify_add(&n, k, set_on_dying_key), 0);
  hark_unref(k);
  ck_assert_int_eq(dying_set_result, HARK_ENOENT);
  ck_assert_ptr_null(dying_get_result);
  ck_assert_uint_eq(hark_weakmap_size(dying_map), 0);
  ck_assert_int_eq(freed_count, 0); /* the value stayed the caller's */
  hark_weakmap_free(dying_map);
  assert_all_released();
}
END_TEST

/* ---- replacement ------------------------------------------------------- */

static hark_weakmap *replace_map;
static test_obj *replace_key;
static void *seen_in_value_free;

static void value_free_peek(void *value) {
  value_free_log(value);
  /* the map may be used from value_free; the new value is already there
   * or not yet, but the call must not deadlock */
  seen_in_value_free = hark_weakmap_peek(replace_map, replace_key);
}

START_TEST(
    weakmap_set_of_an_existing_key_releases_the_old_value_before_returning) {
  test_alloc_install();
  replace_map = hark_weakmap_new(value_free_peek);
  int v1, v2;
  replace_key = key_new(1);
  ck_assert_int_eq(hark_weakmap_set(replace_map, replace_key, &v1), 0);
  ck_assert_int_eq(hark_weakmap_set(replace_map, replace_key, &v2), 0);
  ck_assert_int_eq(freed_count, 1);
  ck_assert_ptr_eq(freed_log[0], &v1);
  ck_assert_ptr_eq(hark_weakmap_peek(replace_map, replace_key), &v2);
  ck_assert_uint_eq(hark_weakmap_size(replace_map), 1);
  hark_unref(replace_key);
  ck_assert_int_eq(freed_count, 2);
  ck_assert_ptr_eq(freed_log[1], &v2);
  hark_weakmap_free(replace_map);
  ck_assert_int_eq(freed_count, 2);
  assert_all_released();
}
END_TEST

/* ---- key death --------------------------------------------------------- */

START_TEST(weakmap_entry_goes_by_the_time_the_last_unref_of_its_key_returns) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  int v;
  test_obj *k = key_new(1);
  ck_assert_int_eq(hark_weakmap_set(m, k, &v), 0);
  hark_ref(k);
  hark_unref(k); /* not the last one */
  ck_assert_int_eq(freed_count, 0);
  ck_assert_uint_eq(hark_weakmap_size(m), 1);
  hark_unref(k); /* the last one */
  ck_assert_int_eq(freed_count, 1);
  ck_assert_ptr_eq(freed_log[0], &v);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  hark_weakmap_free(m);
  ck_assert_int_eq(freed_count, 1); /* not released twice */
  assert_all_released();
}
END_TEST

START_TEST(weakmap_size_counts_live_keys_only) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  int v[3];
  test_obj *k[3];
  for (int i = 0; i < 3; i++) {
    k[i] = key_new(i);
    ck_assert_int_eq(hark_weakmap_set(m, k[i], &v[i]), 0);
  }
  ck_assert_uint_eq(hark_weakmap_size(m), 3);
  hark_unref(k[1]);
  ck_assert_uint_eq(hark_weakmap_size(m), 2);
  ck_assert_int_eq(value_was_freed(&v[1]), 1);
  hark_unref(k[0]);
  ck_assert_uint_eq(hark_weakmap_size(m), 1);
  ck_assert_ptr_eq(hark_weakmap_peek(m, k[2]), &v[2]);
  hark_unref(k[2]);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  ck_assert_int_eq(freed_count, 3);
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_never_keeps_a_key_alive) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  int v;
  test_obj *k = key_new(1);
  hark_weak w = HARK_WEAK_INIT;
  ck_assert_int_eq(hark_weak_set(&w, k), 0);
  ck_assert_int_eq(hark_weakmap_set(m, k, &v), 0);
  ck_assert_uint_eq(hark_live_count("test_obj"), 1);
  hark_unref(k);
  ck_assert_ptr_null(hark_weak_get(&w));
  ck_assert_int_eq(test_finalized, 1);
  ck_assert_uint_eq(hark_live_count("test_obj"), 0);
  hark_weak_clear(&w);
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_key_in_two_maps_leaves_both_when_it_dies) {
  test_alloc_install();
  hark_weakmap *a = hark_weakmap_new(value_free_log);
  hark_weakmap *b = hark_weakmap_new(value_free_log);
  int va, vb;
  test_obj *k = key_new(1);
  ck_assert_int_eq(hark_weakmap_set(a, k, &va), 0);
  ck_assert_int_eq(hark_weakmap_set(b, k, &vb), 0);
  hark_unref(k);
  ck_assert_uint_eq(hark_weakmap_size(a), 0);
  ck_assert_uint_eq(hark_weakmap_size(b), 0);
  ck_assert_int_eq(value_was_freed(&va), 1);
  ck_assert_int_eq(value_was_freed(&vb), 1);
  hark_weakmap_free(a);
  hark_weakmap_free(b);
  assert_all_released();
}
END_TEST

/* An object that reuses a dead key's address is a new key: it must not
 * find the old entry. hark_new of the same type usually gets the freed
 * block back at once (not under AddressSanitizer's quarantine, where the
 * test still checks every candidate). */
START_TEST(weakmap_new_object_at_a_dead_keys_address_does_not_find_its_entry) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  int old_value, new_value;
  int reused = 0;
  for (int round = 0; round < 50; round++) {
    test_obj *k = key_new(1);
    /* an outstanding weak reference keeps the old key's bookkeeping alive
     * on odd rounds, so both layouts are exercised */
    hark_weak w = HARK_WEAK_INIT;
    if (round % 2)
      ck_assert_int_eq(hark_weak_set(&w, k), 0);
    ck_assert_int_eq(hark_weakmap_set(m, k, &old_value), 0);
    void *addr = k;
    hark_unref(k);
    ck_assert_uint_eq(hark_weakmap_size(m), 0);
    for (int i = 0; i < 1000; i++) {
      test_obj *n = key_new(2);
      ck_assert_ptr_null(hark_weakmap_peek(m, n));
      ck_assert_int_eq(hark_weakmap_remove(m, n), 0);
      if ((void *)n == addr) {
        reused++;
        ck_assert_int_eq(hark_weakmap_set(m, n, &new_value), 0);
        ck_assert_ptr_eq(hark_weakmap_peek(m, n), &new_value);
        ck_assert_uint_eq(hark_weakmap_size(m), 1);
        hark_unref(n);
        break;
      }
      hark_unref(n);
    }
    ck_assert_uint_eq(hark_weakmap_size(m), 0);
    ck_assert_ptr_null(hark_weak_get(&w));
    hark_weak_clear(&w);
  }
  (void)reused; /* 0 is possible under a quarantining allocator */
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

/* ---- value_free that drops references ---------------------------------- */

/* A value that owns a strong reference to some other object (never its
 * own key: that would pin the key, see the counter-example below). */
typedef struct holder {
  void *held;
} holder;

static int holders_freed;

static void holder_free(void *value) {
  holder *h = value;
  holders_freed++;
  hark_unref(h->held); /* may kill another key of the same map */
  test_free(h);
}

static holder *holder_new(void *held) {
  holder *h = test_malloc(sizeof *h);
  ck_assert_ptr_nonnull(h);
  h->held = hark_ref(held); /* a new strong reference, owned by h */
  return h;
}

START_TEST(weakmap_value_free_may_kill_another_key_of_the_same_map) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(holder_free);
  test_obj *k1 = key_new(1), *k2 = key_new(2), *k3 = key_new(3);
  /* m[k1] holds k2, m[k2] holds k3, m[k3] holds nothing */
  ck_assert_int_eq(hark_weakmap_set(m, k1, holder_new(k2)), 0);
  ck_assert_int_eq(hark_weakmap_set(m, k2, holder_new(k3)), 0);
  ck_assert_int_eq(hark_weakmap_set(m, k3, holder_new(NULL)), 0);
  ck_assert_uint_eq(hark_weakmap_size(m), 3);
  /* from now on only the values hold k2 and k3 */
  hark_unref(k2);
  hark_unref(k3);
  ck_assert_uint_eq(hark_live_count("test_obj"), 3);
  hark_unref(k1); /* k1 dies -> value frees k2 -> k2 dies -> ... k3 */
  ck_assert_int_eq(holders_freed, 3);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  ck_assert_uint_eq(hark_live_count("test_obj"), 0);
  ck_assert_int_eq(test_finalized, 3);
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_remove_whose_value_free_kills_another_key_removes_both) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(holder_free);
  test_obj *k1 = key_new(1), *k2 = key_new(2);
  ck_assert_int_eq(hark_weakmap_set(m, k1, holder_new(k2)), 0);
  ck_assert_int_eq(hark_weakmap_set(m, k2, holder_new(NULL)), 0);
  hark_unref(k2);
  ck_assert_int_eq(hark_weakmap_remove(m, k1), 1);
  ck_assert_int_eq(holders_freed, 2);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  ck_assert_uint_eq(hark_live_count("test_obj"), 1); /* k1 is still ours */
  hark_unref(k1);
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_replacement_whose_value_free_kills_another_key_removes_it) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(holder_free);
  test_obj *k1 = key_new(1), *k2 = key_new(2);
  ck_assert_int_eq(hark_weakmap_set(m, k1, holder_new(k2)), 0);
  ck_assert_int_eq(hark_weakmap_set(m, k2, holder_new(NULL)), 0);
  hark_unref(k2);
  holder *h = holder_new(NULL);
  ck_assert_int_eq(hark_weakmap_set(m, k1, h), 0);
  ck_assert_int_eq(holders_freed, 2);
  ck_assert_uint_eq(hark_weakmap_size(m), 1);
  ck_assert_ptr_eq(hark_weakmap_peek(m, k1), h);
  hark_unref(k1);
  ck_assert_int_eq(holders_freed, 3);
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_free_releases_every_value) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  int v[3];
  test_obj *k[3];
  for (int i = 0; i < 3; i++) {
    k[i] = key_new(i);
    ck_assert_int_eq(hark_weakmap_set(m, k[i], &v[i]), 0);
  }
  hark_weakmap_free(m);
  ck_assert_int_eq(freed_count, 3);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(value_was_freed(&v[i]), 1);
  /* the keys outlive the map: their death must not reach the freed map */
  ck_assert_int_eq(test_finalized, 0);
  for (int i = 0; i < 3; i++)
    hark_unref(k[i]);
  ck_assert_int_eq(freed_count, 3);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_free_whose_value_free_kills_another_key_releases_all) {
  test_alloc_install();
  hark_weakmap *m = hark_weakmap_new(holder_free);
  test_obj *k1 = key_new(1), *k2 = key_new(2);
  ck_assert_int_eq(hark_weakmap_set(m, k1, holder_new(k2)), 0);
  ck_assert_int_eq(hark_weakmap_set(m, k2, holder_new(NULL)), 0);
  hark_unref(k2);
  hark_weakmap_free(m);
  ck_assert_int_eq(holders_freed, 2);
  ck_assert_uint_eq(hark_live_count("test_obj"), 1);
  hark_unref(k1);
  assert_all_released();
}
END_TEST

/* ---- seed scenario: the registry ---------------------------------------
 * A registry keeps one "adaptor" per "axes" alive for as long as the axes
 * lives (the librosa waveshow fix). The adaptor reaches its axes through a
 * hark_weak only: the map is keyed weakly by the axes, so a strong
 * reference from the value back to the key would be the only thing keeping
 * the key alive, and it would never die. */

typedef struct axes {
  hark_object base;
  int draws;
} axes;

typedef struct adaptor {
  hark_object base;
  hark_weak axes;    /* weak: a strong one would pin the key */
  void *strong_axes; /* the counter-example only */
} adaptor;

static int axes_finalized, adaptors_finalized;

static void axes_finalize(void *obj) {
  axes_finalized++;
  test_free(obj);
}

static void adaptor_finalize(void *obj) {
  adaptor *a = obj;
  adaptors_finalized++;
  hark_weak_clear(&a->axes);
  hark_unref(a->strong_axes);
  test_free(obj);
}

static const hark_type axes_type = {"axes", sizeof(axes), axes_finalize, NULL};
static const hark_type adaptor_type = {"adaptor", sizeof(adaptor),
                                       adaptor_finalize, NULL};

/* The adaptor's work: draw on its axes if it still exists. */
static int adaptor_draw(adaptor *a) {
  axes *ax = hark_weak_get(&a->axes);
  if (ax == NULL)
    return HARK_ENOENT;
  ax->draws++;
  hark_unref(ax);
  return 0;
}

static void registry_value_free(void *value) { hark_unref(value); }

START_TEST(
    registry_keeps_the_adaptor_while_the_axes_lives_and_frees_all_after) {
  test_alloc_install();
  hark_weakmap *registry = hark_weakmap_new(registry_value_free);
  axes *ax = hark_new(&axes_type);
  adaptor *ad = hark_new(&adaptor_type);
  ck_assert_ptr_nonnull(ax);
  ck_assert_ptr_nonnull(ad);
  ck_assert_int_eq(hark_weak_set(&ad->axes, ax), 0);
  ck_assert_int_eq(hark_weakmap_set(registry, ax, ad), 0); /* steals ad */

  /* nobody but the registry holds the adaptor, and it works */
  adaptor *found = hark_weakmap_peek(registry, ax);
  ck_assert_ptr_eq(found, ad);
  ck_assert_int_eq(adaptor_draw(found), 0);
  ck_assert_int_eq(adaptor_draw(found), 0);
  ck_assert_int_eq(ax->draws, 2);
  ck_assert_uint_eq(hark_live_count("adaptor"), 1);
  ck_assert_uint_eq(hark_live_count("axes"), 1);

  hark_unref(ax); /* the user drops the axes */
  ck_assert_uint_eq(hark_weakmap_size(registry), 0);
  ck_assert_int_eq(axes_finalized, 1);
  ck_assert_int_eq(adaptors_finalized, 1);
  ck_assert_uint_eq(hark_live_count("axes"), 0);
  ck_assert_uint_eq(hark_live_count("adaptor"), 0);
  hark_weakmap_free(registry);
  assert_all_released();
}
END_TEST

/* Counter-example, documented by assertion: an adaptor holding a strong
 * reference to its axes pins it. Dropping the user's reference frees
 * nothing; the entry, the adaptor and the axes stay until someone removes
 * the entry by hand. This is the leak the weak back reference avoids. */
START_TEST(registry_value_holding_a_strong_ref_pins_its_key_until_removed) {
  test_alloc_install();
  hark_weakmap *registry = hark_weakmap_new(registry_value_free);
  axes *ax = hark_new(&axes_type);
  adaptor *ad = hark_new(&adaptor_type);
  ad->strong_axes = hark_ref(ax);
  ck_assert_int_eq(hark_weakmap_set(registry, ax, ad), 0);
  hark_unref(ax); /* the user drops the axes: nothing happens */
  ck_assert_uint_eq(hark_weakmap_size(registry), 1);
  ck_assert_int_eq(axes_finalized, 0);
  ck_assert_int_eq(adaptors_finalized, 0);
  ck_assert_uint_eq(hark_live_count("axes"), 1);
  /* the only way out: remove the entry explicitly */
  ck_assert_int_eq(hark_weakmap_remove(registry, ax), 1);
  ck_assert_int_eq(adaptors_finalized, 1);
  ck_assert_int_eq(axes_finalized, 1);
  hark_weakmap_free(registry);
  assert_all_released();
}
END_TEST

/* ---- allocation failure ------------------------------------------------ */

static int oom_values_freed;
static void oom_value_free(void *value) { oom_values_freed++; }

/* Builds a map with one entry, then sets a second key and replaces the
 * first one's value, every step allowed to fail with HARK_ENOMEM; a failed
 * step must leave the map as it was and the value the caller's. */
static int weakmap_set_scenario(void *arg) {
  static int v0, v1, v2;
  int ok = 1;
  oom_values_freed = 0;
  hark_weakmap *m = hark_weakmap_new(oom_value_free);
  if (m == NULL) {
    ck_assert(test_failure_met());
    return 0;
  }
  test_obj *k0 = hark_new(&test_obj_type);
  test_obj *k1 = hark_new(&test_obj_type);
  if (k0 == NULL || k1 == NULL) {
    ck_assert(test_failure_met());
    ok = 0;
    goto out;
  }
  int r = hark_weakmap_set(m, k0, &v0);
  if (r == HARK_ENOMEM) {
    ck_assert_uint_eq(hark_weakmap_size(m), 0);
    ck_assert_ptr_null(hark_weakmap_peek(m, k0));
    ck_assert_int_eq(oom_values_freed, 0);
    ok = 0;
    goto out;
  }
  ck_assert_int_eq(r, 0);
  r = hark_weakmap_set(m, k1, &v1);
  if (r == HARK_ENOMEM) {
    ck_assert_uint_eq(hark_weakmap_size(m), 1);
    ck_assert_ptr_null(hark_weakmap_peek(m, k1));
    ck_assert_ptr_eq(hark_weakmap_peek(m, k0), &v0);
    ck_assert_int_eq(oom_values_freed, 0);
    ok = 0;
    /* the map is still usable */
    ck_assert_int_eq(hark_weakmap_set(m, k1, &v1), 0);
    ck_assert_ptr_eq(hark_weakmap_peek(m, k1), &v1);
    goto out;
  }
  ck_assert_int_eq(r, 0);
  r = hark_weakmap_set(m, k0, &v2);
  if (r == HARK_ENOMEM) {
    ck_assert_ptr_eq(hark_weakmap_peek(m, k0), &v0);
    ck_assert_uint_eq(hark_weakmap_size(m), 2);
    ck_assert_int_eq(oom_values_freed, 0);
    ok = 0;
    goto out;
  }
  ck_assert_int_eq(r, 0);
  ck_assert_int_eq(oom_values_freed, 1);
  ck_assert_ptr_eq(hark_weakmap_peek(m, k0), &v2);
  if (test_failure_met())
    ok = 0; /* a failure was absorbed silently: fine, but not done */
out:
  hark_unref(k1);
  hark_weakmap_free(m);
  hark_unref(k0);
  return ok;
}

START_TEST(
    weakmap_set_reports_allocation_failure_at_every_point_and_leaks_nothing) {
  test_alloc_install();
  /* warm up one-time globals so that they do not count as a leak */
  test_obj *w = key_new(0);
  hark_weakmap *m = hark_weakmap_new(NULL);
  ck_assert_int_eq(hark_weakmap_set(m, w, NULL), 0);
  hark_unref(w);
  hark_weakmap_free(m);
  int points = test_oom_loop(weakmap_set_scenario, NULL);
  ck_assert_int_gt(points, 0);
  assert_all_released();
}
END_TEST

/* ---- keys that are no longer objects, values that are the same --------- */

START_TEST(weakmap_with_a_finalized_key_finds_nothing_and_stores_nothing) {
  test_alloc_install();
  freed_count = 0;
  static int v;
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  kept k;
  ck_assert_int_eq(hark_object_init(&k, &kept_type), 0);
  ck_assert_int_eq(hark_weakmap_set(m, &k, &v), 0);
  hark_unref(&k); /* the entry goes with it */
  ck_assert_int_eq(value_was_freed(&v), 1);
  ck_assert_int_eq(hark_weakmap_set(m, &k, &v), HARK_ENOENT);
  ck_assert_ptr_null(hark_weakmap_peek(m, &k));
  ck_assert_int_eq(hark_weakmap_remove(m, &k), 0);
  ck_assert_uint_eq(hark_weakmap_size(m), 0);
  ck_assert_int_eq(freed_count, 1); /* the refused value stays ours */
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

START_TEST(weakmap_setting_the_same_value_again_keeps_it_and_null_is_no_value) {
  test_alloc_install();
  freed_count = 0;
  static int v;
  hark_weakmap *m = hark_weakmap_new(value_free_log);
  test_obj *k = key_new(1), *k2 = key_new(2);
  ck_assert_int_eq(hark_weakmap_set(m, k, &v), 0);
  ck_assert_int_eq(hark_weakmap_set(m, k, &v), 0); /* same value: kept */
  ck_assert_int_eq(freed_count, 0);
  ck_assert_ptr_eq(hark_weakmap_peek(m, k), &v);
  ck_assert_int_eq(hark_weakmap_set(m, k2, NULL), 0);
  ck_assert_uint_eq(hark_weakmap_size(m), 2);
  ck_assert_int_eq(hark_weakmap_remove(m, k2), 1); /* NULL is not freed */
  ck_assert_int_eq(freed_count, 0);
  ck_assert_int_eq(hark_weakmap_set(m, k2, NULL), 0);
  hark_unref(k2);
  ck_assert_int_eq(freed_count, 0);
  ck_assert_uint_eq(hark_weakmap_size(m), 1);
  hark_unref(k);
  ck_assert_int_eq(freed_count, 1);
  ck_assert_int_eq(value_was_freed(&v), 1);
  hark_weakmap_free(m);
  assert_all_released();
}
END_TEST

/* Many keys: the table grows several times; a failure to grow (or to add
 * the entry) is HARK_ENOMEM and leaves every earlier entry in place. */
#define WM_N 40
static int growth_values[WM_N];

static int weakmap_growth_scenario(void *arg) {
  int ok = 1;
  test_obj *k[WM_N] = {NULL};
  oom_values_freed = 0;
  hark_weakmap *m = hark_weakmap_new(oom_value_free);
  if (m == NULL) {
    ck_assert(test_failure_met());
    return 0;
  }
  for (int i = 0; i < WM_N; i++) {
    k[i] = hark_new(&test_obj_type);
    if (k[i] == NULL) {
      ck_assert(test_failure_met());
      ok = 0;
      goto out;
    }
  }
  for (int i = 0; i < WM_N; i++) {
    int r = hark_weakmap_set(m, k[i], &growth_values[i]);
    if (r == HARK_ENOMEM) {
      ck_assert(test_failure_met());
      ck_assert_uint_eq(hark_weakmap_size(m), (size_t)i);
      ck_assert_ptr_null(hark_weakmap_peek(m, k[i]));
      for (int j = 0; j < i; j++)
        ck_assert_ptr_eq(hark_weakmap_peek(m, k[j]), &growth_values[j]);
      ck_assert_int_eq(oom_values_freed, 0);
      ck_assert_int_eq(hark_weakmap_set(m, k[i], &growth_values[i]), 0);
      ck_assert_uint_eq(hark_weakmap_size(m), (size_t)i + 1);
      ok = 0;
      goto out;
    }
    ck_assert_int_eq(r, 0);
  }
  for (int j = 0; j < WM_N; j++)
    ck_assert_ptr_eq(hark_weakmap_peek(m, k[j]), &growth_values[j]);
  if (test_failure_met())
    ok = 0;
out:
  for (int i = 0; i < WM_N; i += 2) /* half by their keys' death */
    hark_unref(k[i]);
  hark_weakmap_free(m);
  for (int i = 1; i < WM_N; i += 2)
    hark_unref(k[i]);
  return ok;
}

START_TEST(weakmap_growth_reports_allocation_failure_and_keeps_every_entry) {
  test_alloc_install();
  ck_assert_int_gt(test_oom_loop(weakmap_growth_scenario, NULL), WM_N);
  assert_all_released();
}
END_TEST

/* ---- suite ------------------------------------------------------------- */

static Suite *weakmap_suite(void) {
  Suite *s = suite_create("weakmap");
  TCase *tc = tcase_create("use");
  tcase_add_test(tc, weakmap_new_is_empty);
  tcase_add_test(tc, weakmap_set_then_get_returns_the_value);
  tcase_add_test(tc, weakmap_holds_many_keys);
  tcase_add_test(tc,
                 weakmap_remove_releases_the_value_and_returns_one_then_zero);
  tcase_add_test(tc, weakmap_with_null_value_free_does_not_release_values);
  tcase_add_test(
      tc,
      weakmap_set_of_an_existing_key_releases_the_old_value_before_returning);
  suite_add_tcase(s, tc);

  tc = tcase_create("errors");
  tcase_add_test(tc, weakmap_null_arguments_are_rejected_and_change_nothing);
  tcase_add_test(tc, weakmap_set_with_a_dying_key_returns_enoent);
  tcase_add_test(
      tc,
      weakmap_set_reports_allocation_failure_at_every_point_and_leaks_nothing);
  tcase_add_test(tc,
                 weakmap_with_a_finalized_key_finds_nothing_and_stores_nothing);
  tcase_add_test(
      tc, weakmap_setting_the_same_value_again_keeps_it_and_null_is_no_value);
  tcase_add_test(
      tc, weakmap_growth_reports_allocation_failure_and_keeps_every_entry);
  suite_add_tcase(s, tc);

  tc = tcase_create("lifetime");
  tcase_add_test(
      tc, weakmap_entry_goes_by_the_time_the_last_unref_of_its_key_returns);
  tcase_add_test(tc, weakmap_size_counts_live_keys_only);
  tcase_add_test(tc, weakmap_never_keeps_a_key_alive);
  tcase_add_test(tc, weakmap_key_in_two_maps_leaves_both_when_it_dies);
  tcase_add_test(
      tc, weakmap_new_object_at_a_dead_keys_address_does_not_find_its_entry);
  tcase_add_test(tc, weakmap_value_free_may_kill_another_key_of_the_same_map);
  tcase_add_test(
      tc, weakmap_remove_whose_value_free_kills_another_key_removes_both);
  tcase_add_test(
      tc, weakmap_replacement_whose_value_free_kills_another_key_removes_it);
  tcase_add_test(tc, weakmap_free_releases_every_value);
  tcase_add_test(tc,
                 weakmap_free_whose_value_free_kills_another_key_releases_all);
  suite_add_tcase(s, tc);

  tc = tcase_create("registry");
  tcase_add_test(
      tc, registry_keeps_the_adaptor_while_the_axes_lives_and_frees_all_after);
  tcase_add_test(
      tc, registry_value_holding_a_strong_ref_pins_its_key_until_removed);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run(weakmap_suite()); }
