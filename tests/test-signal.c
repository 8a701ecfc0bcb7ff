/* The dispatcher: connect, disconnect, send, sender filtering, weak and
 * strong receivers, once, blocking, the reentrancy matrix, address reuse,
 * the leak guard, HARK_DEBUG=receivers and allocation failure.
 *
 * Written from the contract (DESIGN.md, issue 3) and include/hark.h alone.
 * Every test installs the counting allocator first and, unless it says
 * otherwise, ends by checking that no object and no block is left. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the call log ------------------------------------------------------ */

#define LOG_MAX 512
static int call_log[LOG_MAX];
static int call_n;

static void log_call(int id) {
  if (call_n < LOG_MAX)
    call_log[call_n] = id;
  call_n++;
}

static void log_reset(void) { call_n = 0; }

static void assert_calls_(const int *want, int n, int line) {
  char got[1024] = "";
  size_t used = 0;
  for (int i = 0; i < call_n && i < LOG_MAX && used < sizeof got - 16; i++)
    used += (size_t)snprintf(got + used, sizeof got - used, " %d", call_log[i]);
  int same = call_n == n;
  for (int i = 0; same && i < n; i++)
    same = call_log[i] == want[i];
  ck_assert_msg(same, "line %d: receivers called:%s (%d calls, %d expected)",
                line, got, call_n, n);
}

/* ASSERT_CALLS(1, 2, 3): the receivers with these ids ran, in this order,
 * since the last log_reset(). */
#define ASSERT_CALLS(...)                                                      \
  do {                                                                         \
    const int want_[] = {__VA_ARGS__};                                         \
    assert_calls_(want_, (int)(sizeof want_ / sizeof want_[0]), __LINE__);     \
  } while (0)
#define ASSERT_NO_CALLS() assert_calls_(NULL, 0, __LINE__)

static int log_count(int id) {
  int n = 0;
  for (int i = 0; i < call_n && i < LOG_MAX; i++)
    n += call_log[i] == id;
  return n;
}

/* ---- receiver objects that can act during their call ------------------- */

enum action {
  ACT_NONE,
  ACT_DISCONNECT_SELF,   /* hark_disconnect(sig, rx, self, conn_sender) */
  ACT_DISCONNECT_TARGET, /* hark_disconnect(sig, rx, target, conn_sender) */
  ACT_UNREF_TARGET,      /* drop the last reference to target */
  ACT_UNREF_SELF,        /* drop the last reference to self */
  ACT_UNREF_SENDER,      /* drop the last reference to the sender */
  ACT_UNREF_SIGNAL,      /* drop the last reference to the signal */
  ACT_CONNECT_TARGET,    /* hark_connect(sig, rx, target, conn_sender, 0) */
  ACT_SEND,              /* hark_send(sig, sender, args), one level deep */
};

typedef struct rx_obj {
  hark_object base;
  int id;
  int calls;
  int ret;      /* what the receiver returns */
  int action;   /* what it does during its first call */
  void *target; /* the object the action is about */
  void *conn_sender;
  int action_result;
  void *last_sender;
  void *last_args;
  int sender_id_seen;
} rx_obj;

static int rx_finalized;

static void rx_finalize(void *obj) {
  rx_finalized++;
  test_free(obj);
}

static const hark_type rx_type = {"rx_obj", sizeof(rx_obj), rx_finalize, NULL};

static hark_signal *g_sig;
static int g_depth;

static int rx(void *self, void *sender, void *args) {
  rx_obj *o = self;
  o->calls++;
  o->last_sender = sender;
  o->last_args = args;
  if (sender != NULL)
    o->sender_id_seen = ((test_obj *)sender)->id; /* must be readable */
  log_call(o->id);
  int action = o->action;
  o->action = ACT_NONE;
  switch (action) {
  case ACT_DISCONNECT_SELF:
    o->action_result = hark_disconnect(g_sig, rx, o, o->conn_sender);
    break;
  case ACT_DISCONNECT_TARGET:
    o->action_result = hark_disconnect(g_sig, rx, o->target, o->conn_sender);
    break;
  case ACT_UNREF_TARGET:
    hark_unref(o->target);
    break;
  case ACT_UNREF_SELF:
    hark_unref(o);
    /* a send in flight defers finalize: self is still ours to touch */
    o->action_result = 1;
    break;
  case ACT_UNREF_SENDER:
    hark_unref(sender);
    break;
  case ACT_UNREF_SIGNAL: {
    hark_signal *s = g_sig;
    g_sig = NULL;
    hark_unref(s);
    break;
  }
  case ACT_CONNECT_TARGET:
    o->action_result = hark_connect(g_sig, rx, o->target, o->conn_sender, 0);
    break;
  case ACT_SEND:
    if (g_depth == 0) {
      g_depth++;
      o->action_result = hark_send(g_sig, sender, args);
      g_depth--;
    }
    o->action = ACT_SEND; /* sends again on every outer call */
    break;
  default:
    break;
  }
  return o->ret;
}

/* Same self, another function: another identity. Logs id + 1000. */
static int rx_other(void *self, void *sender, void *args) {
  log_call(((rx_obj *)self)->id + 1000);
  return 0;
}

/* Plain-function receivers (self NULL). */
static int fn_a(void *self, void *sender, void *args) {
  log_call(901);
  return 0;
}
static int fn_b(void *self, void *sender, void *args) {
  log_call(902);
  return 0;
}
static int fn_c(void *self, void *sender, void *args) {
  log_call(903);
  return 0;
}

static rx_obj *rx_new(int id) {
  rx_obj *o = hark_new(&rx_type);
  ck_assert_ptr_nonnull(o);
  o->id = id;
  return o;
}

static test_obj *sender_new(int id) {
  test_obj *s = hark_new(&test_obj_type);
  ck_assert_ptr_nonnull(s);
  s->id = id;
  return s;
}

static void begin(void) {
  test_alloc_install();
  g_sig = hark_signal_new("test-signal");
  ck_assert_ptr_nonnull(g_sig);
}

static void end_signal(void) {
  hark_unref(g_sig);
  g_sig = NULL;
}

static void assert_all_released(void) {
  ck_assert_uint_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), 0);
}

/* ---- the signal object ------------------------------------------------- */

START_TEST(signal_new_copies_its_name_and_starts_empty) {
  test_alloc_install();
  char name[] = "clicked";
  hark_signal *s = hark_signal_new(name);
  ck_assert_ptr_nonnull(s);
  name[0] = 'X';
  ck_assert_str_eq(hark_signal_name(s), "clicked");
  ck_assert_uint_eq(hark_signal_receivers(s), 0);
  ck_assert(!hark_has_listeners(s, NULL));
  ck_assert_int_eq(hark_send(s, NULL, NULL), 0);
  hark_signal *u = hark_signal_new(NULL);
  ck_assert_ptr_nonnull(u);
  ck_assert_str_eq(hark_signal_name(u), "(unnamed)");
  ck_assert_uint_eq(hark_live_count(NULL), 2); /* signals are objects */
  hark_unref(s);
  hark_unref(u);
  ck_assert_uint_eq(hark_signal_receivers(NULL), 0);
  ck_assert_uint_eq(hark_signal_sweep(NULL), 0);
  assert_all_released();
}
END_TEST

/* ---- connect / disconnect ---------------------------------------------- */

START_TEST(send_calls_the_receiver_with_its_self_the_sender_and_the_args) {
  begin();
  rx_obj *a = rx_new(1);
  test_obj *s = sender_new(7);
  int args;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  ck_assert_int_eq(hark_send(g_sig, s, &args), 1);
  ck_assert_int_eq(a->calls, 1);
  ck_assert_ptr_eq(a->last_sender, s);
  ck_assert_ptr_eq(a->last_args, &args);
  ck_assert_int_eq(a->sender_id_seen, 7);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ck_assert_ptr_null(a->last_sender);
  ck_assert_ptr_null(a->last_args);
  hark_unref(a);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(send_calls_receivers_in_connection_order) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, NULL, HARK_STRONG), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 5);
  ASSERT_CALLS(2, 901, 1, 902, 3);
  /* the order survives removals and later connects */
  ck_assert_int_eq(hark_disconnect(g_sig, fn_a, NULL, NULL), 1);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 5);
  ASSERT_CALLS(2, 1, 902, 3, 901);
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(connect_of_the_same_identity_returns_eexist_and_changes_nothing) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), HARK_EEXIST);
  /* other flags do not make another identity, and change nothing */
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, HARK_STRONG), HARK_EEXIST);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, HARK_ONCE), HARK_EEXIST);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  /* another fn, self or sender is another identity */
  ck_assert_int_eq(hark_connect(g_sig, rx_other, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), HARK_EEXIST);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), HARK_EEXIST);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, s, 0), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 6);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 6);
  ASSERT_CALLS(1, 1001, 2, 1, 901, 901);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 4);
  ASSERT_CALLS(1, 1001, 2, 901);
  /* the refused HARK_STRONG did not take a reference; the refused
   * HARK_ONCE did not make it once */
  hark_unref(a);
  ck_assert_int_eq(rx_finalized, 1);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 2);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 2);
  ASSERT_CALLS(2, 901, 2, 901);
  hark_unref(b);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(connect_rejects_a_null_signal_a_null_fn_and_unknown_flags) {
  begin();
  rx_obj *a = rx_new(1);
  ck_assert_int_eq(hark_connect(NULL, rx, a, NULL, 0), HARK_EINVAL);
  ck_assert_int_eq(hark_connect(g_sig, NULL, a, NULL, 0), HARK_EINVAL);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 4u), HARK_EINVAL);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0x100u | HARK_STRONG),
                   HARK_EINVAL);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  hark_unref(a);
  ck_assert_int_eq(rx_finalized, 1); /* no reference was kept */
  end_signal();
  assert_all_released();
}
END_TEST

/* A dying object can still be named from its death notification. */
static int dying_self_result = 1, dying_sender_result = 1;

static void connect_dying(hark_notify *n, void *obj) {
  dying_self_result = hark_connect(g_sig, rx, obj, NULL, 0);
  dying_sender_result = hark_connect(g_sig, fn_a, NULL, obj, 0);
}

START_TEST(connect_with_a_dying_self_or_sender_returns_enoent) {
  begin();
  rx_obj *a = rx_new(1);
  hark_notify n;
  memset(&n, 0, sizeof n);
  ck_assert_int_eq(hark_notify_add(&n, a, connect_dying), 0);
  hark_unref(a);
  ck_assert_int_eq(dying_self_result, HARK_ENOENT);
  ck_assert_int_eq(dying_sender_result, HARK_ENOENT);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(disconnect_returns_one_then_zero_and_the_receiver_is_not_called) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, HARK_STRONG), 0);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, a, NULL), 1);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, a, NULL), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(2);
  /* a strong receiver's reference goes with its disconnection */
  hark_unref(b);
  ck_assert_int_eq(rx_finalized, 0);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, b, NULL), 1);
  ck_assert_int_eq(rx_finalized, 1);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 0);
  /* reconnecting after a disconnect works */
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(1);
  hark_unref(a);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(disconnect_matches_the_whole_identity) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, a, NULL), 0);
  ck_assert_int_eq(hark_disconnect(g_sig, rx_other, a, s), 0);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, b, s), 0);
  ck_assert_int_eq(hark_disconnect(g_sig, fn_a, NULL, s), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, a, s), 1);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  ck_assert_int_eq(hark_disconnect(NULL, rx, a, s), HARK_EINVAL);
  hark_unref(a);
  hark_unref(b);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(disconnect_of_a_dead_weak_receiver_removes_it) {
  begin();
  rx_obj *a = rx_new(1);
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, s, 0), 0);
  void *dead_self = a, *dead_sender = s;
  hark_unref(a);
  hark_unref(s);
  /* 1 if it was still there, 0 if already dropped: either way it goes */
  int r = hark_disconnect(g_sig, rx, dead_self, NULL);
  ck_assert(r == 0 || r == 1);
  r = hark_disconnect(g_sig, fn_a, NULL, dead_sender);
  ck_assert(r == 0 || r == 1);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- dispatch uids ----------------------------------------------------- */

START_TEST(connect_uid_identity_is_the_uid_and_the_sender) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", rx, a, NULL, 0), 0);
  /* same uid, same sender: refused even with another fn or self */
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", rx, b, NULL, 0), HARK_EEXIST);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", fn_a, NULL, NULL, 0),
                   HARK_EEXIST);
  /* same uid, another sender; another uid: accepted */
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", rx, b, s, 0), 0);
  ck_assert_int_eq(hark_connect_uid(g_sig, "v", rx, b, NULL, 0), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 3);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 3);
  ASSERT_CALLS(1, 2, 2);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 2);
  ASSERT_CALLS(1, 2);
  hark_unref(a);
  hark_unref(b);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(connect_uid_rejects_a_null_or_empty_uid) {
  begin();
  ck_assert_int_eq(hark_connect_uid(g_sig, NULL, fn_a, NULL, NULL, 0),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_connect_uid(g_sig, "", fn_a, NULL, NULL, 0),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_connect_uid(NULL, "u", fn_a, NULL, NULL, 0),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", NULL, NULL, NULL, 0),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", fn_a, NULL, NULL, 8u),
                   HARK_EINVAL);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(connect_uid_copies_the_uid) {
  begin();
  char uid[] = "handler";
  ck_assert_int_eq(hark_connect_uid(g_sig, uid, fn_a, NULL, NULL, 0), 0);
  strcpy(uid, "changed");
  ck_assert_int_eq(hark_connect_uid(g_sig, "handler", fn_b, NULL, NULL, 0),
                   HARK_EEXIST);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, "changed", NULL), 0);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, "handler", NULL), 1);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(disconnect_uid_returns_one_then_zero) {
  begin();
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", fn_c, NULL, s, 0), 0);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, "u", NULL), 1);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, "u", NULL), 0);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, "nope", s), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(902, 903);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, "u", s), 1);
  ck_assert_int_eq(hark_disconnect_uid(NULL, "u", s), HARK_EINVAL);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, NULL, s), HARK_EINVAL);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  /* a uid connection is not found by its (fn, self, sender) */
  ck_assert_int_eq(hark_connect_uid(g_sig, "w", fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, "w", NULL), 1);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- sender filtering -------------------------------------------------- */

START_TEST(any_sender_receiver_is_called_for_every_send) {
  begin();
  test_obj *s1 = sender_new(1), *s2 = sender_new(2);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s1, NULL), 1);
  ck_assert_int_eq(hark_send(g_sig, s2, NULL), 1);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(901, 901, 901);
  hark_unref(s1);
  hark_unref(s2);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(sender_receiver_is_called_only_for_its_sender) {
  begin();
  test_obj *s1 = sender_new(1), *s2 = sender_new(2);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, s1, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s2, NULL), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 0);
  ASSERT_NO_CALLS();
  ck_assert_int_eq(hark_send(g_sig, s1, NULL), 1);
  ASSERT_CALLS(901);
  hark_unref(s1);
  hark_unref(s2);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(send_with_a_null_sender_calls_only_any_sender_receivers) {
  begin();
  test_obj *s1 = sender_new(1);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, s1, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_c, NULL, s1, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(902);
  hark_unref(s1);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(sender_and_any_sender_receivers_are_merged_in_connection_order) {
  begin();
  test_obj *s1 = sender_new(1), *s2 = sender_new(2);
  rx_obj *r[7];
  for (int i = 0; i < 7; i++)
    r[i] = rx_new(i);
  /* r0 any, r1 s1, r2 any, r3 s1, r4 s2 */
  ck_assert_int_eq(hark_connect(g_sig, rx, r[0], NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, r[1], s1, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, r[2], NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, r[3], s1, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, r[4], s2, 0), 0);
  for (int round = 0; round < 2; round++) { /* the second from the cache */
    log_reset();
    ck_assert_int_eq(hark_send(g_sig, s1, NULL), 4);
    ASSERT_CALLS(0, 1, 2, 3);
    log_reset();
    ck_assert_int_eq(hark_send(g_sig, s2, NULL), 3);
    ASSERT_CALLS(0, 2, 4);
    log_reset();
    ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 2);
    ASSERT_CALLS(0, 2);
  }
  /* an any-sender connect concerns every sender's list */
  ck_assert_int_eq(hark_connect(g_sig, rx, r[5], NULL, 0), 0);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s1, NULL), 5);
  ASSERT_CALLS(0, 1, 2, 3, 5);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s2, NULL), 4);
  ASSERT_CALLS(0, 2, 4, 5);
  /* a sender connect concerns that sender only */
  ck_assert_int_eq(hark_connect(g_sig, rx, r[6], s2, 0), 0);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s1, NULL), 5);
  ASSERT_CALLS(0, 1, 2, 3, 5);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s2, NULL), 5);
  ASSERT_CALLS(0, 2, 4, 5, 6);
  /* disconnects are seen by the next send */
  ck_assert_int_eq(hark_disconnect(g_sig, rx, r[1], s1), 1);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, r[2], NULL), 1);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s1, NULL), 3);
  ASSERT_CALLS(0, 3, 5);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s2, NULL), 4);
  ASSERT_CALLS(0, 4, 5, 6);
  for (int i = 0; i < 7; i++)
    hark_unref(r[i]);
  hark_unref(s1);
  hark_unref(s2);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- weak and strong receivers ----------------------------------------- */

START_TEST(signal_does_not_keep_a_weak_receiver_alive) {
  begin();
  rx_obj *a = rx_new(1);
  hark_weak w = HARK_WEAK_INIT;
  ck_assert_int_eq(hark_weak_set(&w, a), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, HARK_WEAK), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  hark_unref(a);
  ck_assert_ptr_null(hark_weak_get(&w));
  ck_assert_int_eq(rx_finalized, 1);
  hark_weak_clear(&w);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(weak_receiver_whose_self_died_is_not_called) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 2); /* builds any cache */
  hark_unref(a);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(2);
  hark_unref(b);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(dead_weak_receiver_is_dropped_by_sweep) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  hark_unref(a);
  size_t before = hark_signal_receivers(g_sig);
  ck_assert(before == 2 || before == 3); /* 3: not dropped yet */
  ck_assert_uint_eq(hark_signal_sweep(g_sig), before - 2);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 2);
  ck_assert_uint_eq(hark_signal_sweep(g_sig), 0);
  hark_unref(b);
  hark_signal_sweep(g_sig);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1); /* fn_a stays */
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(dead_weak_receiver_is_dropped_by_a_send) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, s, 0), 0);
  hark_unref(a);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  hark_unref(b);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  ASSERT_NO_CALLS();
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(plain_function_receiver_is_never_swept) {
  begin();
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_uint_eq(hark_signal_sweep(g_sig), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  end_signal();
  assert_all_released();
}
END_TEST

/* Seed scenario 1: the callback whose owner nobody keeps. Correct for a
 * weak receiver: it never runs (HARK_DEBUG=receivers makes it visible,
 * tested below). */
START_TEST(receiver_object_nobody_keeps_is_never_called) {
  begin();
  rx_obj *a = rx_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  hark_unref(a); /* nobody keeps it */
  ck_assert_int_eq(rx_finalized, 1);
  ck_assert(!hark_has_listeners(g_sig, NULL));
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 0);
  ASSERT_NO_CALLS();
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(strong_receiver_keeps_self_alive_until_disconnected) {
  begin();
  rx_obj *a = rx_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, HARK_STRONG), 0);
  hark_unref(a); /* only the signal holds it now */
  ck_assert_int_eq(rx_finalized, 0);
  ck_assert_uint_eq(hark_signal_sweep(g_sig), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(1);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, a, NULL), 1);
  ck_assert_int_eq(rx_finalized, 1);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(strong_receiver_is_released_when_the_signal_dies) {
  begin();
  rx_obj *a = rx_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, HARK_STRONG), 0);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", rx_other, a, NULL, HARK_STRONG),
                   0);
  hark_unref(a);
  ck_assert_int_eq(rx_finalized, 0);
  end_signal();
  ck_assert_int_eq(rx_finalized, 1);
  assert_all_released();
}
END_TEST

START_TEST(strong_receiver_for_a_sender_is_released_when_the_sender_dies) {
  begin();
  rx_obj *a = rx_new(1);
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, HARK_STRONG), 0);
  hark_unref(a);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 1);
  hark_unref(s); /* its connections go */
  hark_signal_sweep(g_sig);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  ck_assert_int_eq(rx_finalized, 1);
  end_signal();
  assert_all_released();
}
END_TEST

/* Regression: HARK_STRONG with a NULL self (a plain function) has nothing
 * to hold; releasing such a connection (disconnect, sender death, signal
 * death) dereferenced the missing self. */
START_TEST(strong_flag_with_a_null_self_is_released_safely) {
  begin();
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, HARK_STRONG), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, s, HARK_STRONG), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_c, NULL, NULL, HARK_STRONG), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 3);
  ck_assert_int_eq(hark_disconnect(g_sig, fn_a, NULL, NULL), 1);
  hark_unref(s); /* drops fn_b's connection */
  hark_signal_sweep(g_sig);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  end_signal(); /* drops fn_c's */
  assert_all_released();
}
END_TEST

/* ---- HARK_ONCE --------------------------------------------------------- */

START_TEST(once_receiver_is_called_only_once) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, HARK_ONCE), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 2);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 2);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(1, 2, 2);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, a, NULL), 0);
  /* it may be connected again, once more */
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, HARK_ONCE), 0);
  log_reset();
  hark_send(g_sig, NULL, NULL);
  hark_send(g_sig, NULL, NULL);
  ASSERT_CALLS(2, 1, 2);
  hark_unref(a);
  hark_unref(b);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(once_receiver_that_sends_recursively_is_not_called_again) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  a->action = ACT_SEND;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, HARK_ONCE), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 2);
  ASSERT_CALLS(1, 2, 2); /* outer a, inner b, outer b */
  ck_assert_int_eq(a->calls, 1);
  ck_assert_int_eq(a->action_result, 1); /* the inner send called b only */
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  hark_unref(a);
  hark_unref(b);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(
    once_receiver_called_by_a_recursive_send_is_skipped_by_the_outer_one) {
  begin();
  rx_obj *a = rx_new(1), *c = rx_new(3);
  a->action = ACT_SEND;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, NULL, HARK_ONCE), 0);
  /* outer: a -> inner: a (no deeper send), c; back in outer, c is gone */
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(1, 1, 3);
  ck_assert_int_eq(a->action_result, 2);
  ck_assert_int_eq(c->calls, 1);
  hark_unref(a);
  hark_unref(c);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(once_strong_receiver_releases_self_after_its_call) {
  begin();
  rx_obj *a = rx_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, HARK_ONCE | HARK_STRONG),
                   0);
  hark_unref(a);
  ck_assert_int_eq(rx_finalized, 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ck_assert_int_eq(rx_finalized, 1);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 0);
  ASSERT_CALLS(1);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- what a send returns ----------------------------------------------- */

START_TEST(send_returns_the_number_of_receivers_called) {
  begin();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_c, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 3);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(send_stops_at_the_first_non_zero_return_and_says_so) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3);
  b->ret = 7;
  c->ret = 9;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, NULL, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), HARK_ESTOPPED);
  ASSERT_CALLS(1, 2);
  log_reset();
  hark_send_result res;
  ck_assert_int_eq(hark_send_ex(g_sig, NULL, NULL, &res), HARK_ESTOPPED);
  ASSERT_CALLS(1, 2);
  ck_assert_int_eq(res.called, 2);
  ck_assert_int_eq(res.stop, 7);
  ck_assert_ptr_eq(res.stop_fn, rx);
  ck_assert_ptr_eq(res.stop_self, b);
  /* a receiver returning a hark error code, or a count, is still told
   * apart from hark's own errors and from a count of receivers */
  int values[] = {HARK_ENOMEM, HARK_EINVAL, HARK_ENOENT, HARK_EAGAIN,
                  HARK_EBUSY,  HARK_EEXIST, HARK_ERANGE, HARK_ECANCELED,
                  HARK_ESTOPPED, 1, 2, 3, -1};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    b->ret = values[i];
    log_reset();
    ck_assert_int_eq(hark_send(g_sig, NULL, NULL), HARK_ESTOPPED);
    ASSERT_CALLS(1, 2);
    log_reset();
    ck_assert_int_eq(hark_send_ex(g_sig, NULL, NULL, &res), HARK_ESTOPPED);
    ck_assert_int_eq(res.stop, values[i]);
    ck_assert_int_eq(res.called, 2);
  }
  /* none stops: the count, and the same in res */
  b->ret = 0;
  c->ret = 0;
  log_reset();
  ck_assert_int_eq(hark_send_ex(g_sig, NULL, NULL, &res), 3);
  ck_assert_int_eq(res.called, 3);
  ck_assert_int_eq(res.stop, 0);
  ck_assert_ptr_null(res.stop_fn);
  ck_assert_ptr_null(res.stop_self);
  ck_assert_int_eq(hark_send_ex(g_sig, NULL, NULL, NULL), 3);
  ck_assert_int_eq(hark_send_ex(NULL, NULL, NULL, &res), HARK_EINVAL);
  ck_assert_int_eq(res.called, 0);
  ck_assert_ptr_null(res.stop_fn);
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  end_signal();
  assert_all_released();
}
END_TEST

static int acc_stop_after = 1000;
static int acc_seen;
static int robust_log_n;
static struct {
  hark_receiver_fn fn;
  void *self;
  int result;
  void *data;
} robust_log[16];

static void on_result(void *data, hark_receiver_fn fn, void *self, int result) {
  if (robust_log_n < 16) {
    robust_log[robust_log_n].fn = fn;
    robust_log[robust_log_n].self = self;
    robust_log[robust_log_n].result = result;
    robust_log[robust_log_n].data = data;
  }
  robust_log_n++;
}

static int acc(void *data, hark_receiver_fn fn, void *self, int result) {
  on_result(data, fn, self, result);
  return ++acc_seen >= acc_stop_after;
}

START_TEST(send_rejects_a_null_signal) {
  test_alloc_install();
  ck_assert_int_eq(hark_send(NULL, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_send_robust(NULL, NULL, NULL, on_result, NULL),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_send_accumulate(NULL, NULL, NULL, acc, NULL),
                   HARK_EINVAL);
  ck_assert_int_eq(robust_log_n, 0);
  ck_assert(!hark_has_listeners(NULL, NULL));
  assert_all_released();
}
END_TEST

START_TEST(send_robust_calls_every_receiver_and_returns_the_failures) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3);
  b->ret = 7;
  c->ret = -1;
  int data;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, NULL, 0), 0);
  ck_assert_int_eq(hark_send_robust(g_sig, NULL, NULL, on_result, &data), 2);
  ASSERT_CALLS(1, 2, 901, 3);
  ck_assert_int_eq(robust_log_n, 4);
  ck_assert(robust_log[0].fn == rx && robust_log[0].self == a);
  ck_assert_int_eq(robust_log[0].result, 0);
  ck_assert(robust_log[1].fn == rx && robust_log[1].self == b);
  ck_assert_int_eq(robust_log[1].result, 7);
  ck_assert(robust_log[2].fn == fn_a && robust_log[2].self == NULL);
  ck_assert_int_eq(robust_log[2].result, 0);
  ck_assert(robust_log[3].fn == rx && robust_log[3].self == c);
  ck_assert_int_eq(robust_log[3].result, -1);
  for (int i = 0; i < 4; i++)
    ck_assert_ptr_eq(robust_log[i].data, &data);
  /* on_result may be NULL */
  log_reset();
  ck_assert_int_eq(hark_send_robust(g_sig, NULL, NULL, NULL, NULL), 2);
  ASSERT_CALLS(1, 2, 901, 3);
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(send_accumulate_stops_when_the_accumulator_says_so) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3);
  a->ret = 5; /* a non-zero return does not stop it: acc decides */
  int data;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, NULL, 0), 0);
  acc_stop_after = 2;
  ck_assert_int_eq(hark_send_accumulate(g_sig, NULL, NULL, acc, &data), 2);
  ASSERT_CALLS(1, 2);
  ck_assert_int_eq(robust_log_n, 2);
  ck_assert_int_eq(robust_log[0].result, 5);
  ck_assert_ptr_eq(robust_log[0].self, a);
  ck_assert_ptr_eq(robust_log[1].self, b);
  ck_assert_ptr_eq(robust_log[1].data, &data);
  /* an accumulator that never stops sees everyone */
  acc_stop_after = 1000;
  acc_seen = 0;
  robust_log_n = 0;
  log_reset();
  ck_assert_int_eq(hark_send_accumulate(g_sig, NULL, NULL, acc, &data), 3);
  ASSERT_CALLS(1, 2, 3);
  ck_assert_int_eq(robust_log_n, 3);
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- blocking ---------------------------------------------------------- */

START_TEST(blocked_receiver_is_skipped_until_unblocked_as_many_times) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_int_eq(hark_block(g_sig, rx, a, NULL), 0);
  ck_assert_int_eq(hark_block(g_sig, rx, a, NULL), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1); /* not counted */
  ASSERT_CALLS(2);
  ck_assert_int_eq(hark_unblock(g_sig, rx, a, NULL), 0);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(2);
  ck_assert_int_eq(hark_unblock(g_sig, rx, a, NULL), 0);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 2);
  ASSERT_CALLS(1, 2); /* back in its place */
  ck_assert_int_eq(hark_unblock(g_sig, rx, a, NULL), HARK_ERANGE);
  /* robust sends skip it too */
  ck_assert_int_eq(hark_block(g_sig, rx, b, NULL), 0);
  log_reset();
  ck_assert_int_eq(hark_send_robust(g_sig, NULL, NULL, on_result, NULL), 0);
  ASSERT_CALLS(1);
  ck_assert_int_eq(robust_log_n, 1);
  hark_unref(a);
  hark_unref(b);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(block_of_an_unknown_connection_returns_enoent) {
  begin();
  rx_obj *a = rx_new(1);
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_block(g_sig, rx, a, NULL), HARK_ENOENT);
  ck_assert_int_eq(hark_unblock(g_sig, rx, a, NULL), HARK_ENOENT);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_block(g_sig, rx, a, NULL), HARK_ENOENT);
  ck_assert_int_eq(hark_block(g_sig, rx_other, a, s), HARK_ENOENT);
  ck_assert_int_eq(hark_unblock(g_sig, rx, a, s), HARK_ERANGE);
  ck_assert_int_eq(hark_block(NULL, rx, a, s), HARK_EINVAL);
  ck_assert_int_eq(hark_unblock(NULL, rx, a, s), HARK_EINVAL);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 1);
  /* a disconnected, blocked connection is gone with its block count */
  ck_assert_int_eq(hark_block(g_sig, rx, a, s), 0);
  ck_assert_int_eq(hark_disconnect(g_sig, rx, a, s), 1);
  ck_assert_int_eq(hark_unblock(g_sig, rx, a, s), HARK_ENOENT);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 1);
  hark_unref(a);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(block_uid_and_unblock_uid_count_like_block) {
  begin();
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_block_uid(g_sig, "u", NULL), HARK_ENOENT);
  ck_assert_int_eq(hark_unblock_uid(g_sig, "u", NULL), HARK_ENOENT);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", fn_a, NULL, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, s, 0), 0);
  ck_assert_int_eq(hark_block_uid(g_sig, "u", NULL), HARK_ENOENT);
  ck_assert_int_eq(hark_block_uid(g_sig, "u", s), 0);
  ck_assert_int_eq(hark_block_uid(g_sig, "u", s), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 1);
  ASSERT_CALLS(902);
  ck_assert_int_eq(hark_unblock_uid(g_sig, "u", s), 0);
  ck_assert(hark_has_listeners(g_sig, s));
  ck_assert_int_eq(hark_unblock_uid(g_sig, "u", s), 0);
  ck_assert_int_eq(hark_unblock_uid(g_sig, "u", s), HARK_ERANGE);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(901, 902);
  ck_assert_int_eq(hark_block_uid(NULL, "u", s), HARK_EINVAL);
  ck_assert_int_eq(hark_block_uid(g_sig, NULL, s), HARK_EINVAL);
  ck_assert_int_eq(hark_unblock_uid(g_sig, NULL, s), HARK_EINVAL);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- has_listeners ----------------------------------------------------- */

START_TEST(has_listeners_follows_sender_filtering) {
  begin();
  test_obj *s1 = sender_new(1), *s2 = sender_new(2);
  ck_assert(!hark_has_listeners(g_sig, NULL));
  ck_assert(!hark_has_listeners(g_sig, s1));
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, s1, 0), 0);
  ck_assert(hark_has_listeners(g_sig, s1));
  ck_assert(!hark_has_listeners(g_sig, s2));
  ck_assert(!hark_has_listeners(g_sig, NULL));
  ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, NULL, 0), 0);
  ck_assert(hark_has_listeners(g_sig, s2));
  ck_assert(hark_has_listeners(g_sig, NULL));
  ck_assert_int_eq(hark_disconnect(g_sig, fn_b, NULL, NULL), 1);
  ck_assert(!hark_has_listeners(g_sig, s2));
  ck_assert(hark_has_listeners(g_sig, s1));
  hark_unref(s1);
  hark_unref(s2);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(has_listeners_ignores_dead_and_blocked_receivers) {
  begin();
  rx_obj *a = rx_new(1);
  test_obj *s = sender_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_block(g_sig, fn_a, NULL, NULL), 0);
  ck_assert(hark_has_listeners(g_sig, s));
  ck_assert(!hark_has_listeners(g_sig, NULL)); /* fn_a is blocked */
  hark_unref(a);                               /* dead, not swept */
  ck_assert(!hark_has_listeners(g_sig, s));
  ck_assert_int_eq(hark_unblock(g_sig, fn_a, NULL, NULL), 0);
  ck_assert(hark_has_listeners(g_sig, s));
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

/* hark_has_listeners is Django's name for hark_has_receivers: both give
 * the same answer in every case. */
START_TEST(has_receivers_answers_as_has_listeners_does) {
  begin();
  test_obj *s1 = sender_new(1), *s2 = sender_new(2);
  ck_assert(!hark_has_receivers(NULL, NULL));
  ck_assert(!hark_has_receivers(g_sig, NULL));
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, s1, 0), 0);
  for (int round = 0; round < 3; round++) {
    void *senders[] = {NULL, s1, s2};
    for (int i = 0; i < 3; i++)
      ck_assert(hark_has_receivers(g_sig, senders[i]) ==
                hark_has_listeners(g_sig, senders[i]));
    if (round == 0)
      ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, NULL, 0), 0);
    else
      ck_assert_int_eq(hark_block(g_sig, fn_b, NULL, NULL), 0);
  }
  ck_assert(hark_has_receivers(g_sig, s1));
  ck_assert(!hark_has_receivers(g_sig, s2));
  hark_unref(s1);
  hark_unref(s2);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- sender lifetime --------------------------------------------------- */

START_TEST(signal_never_keeps_a_sender_alive) {
  begin();
  test_obj *s = sender_new(1);
  hark_weak w = HARK_WEAK_INIT;
  ck_assert_int_eq(hark_weak_set(&w, s), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, s, HARK_STRONG), 0);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", fn_c, NULL, s, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 3); /* caches its list */
  ck_assert(hark_has_listeners(g_sig, s));
  hark_unref(s);
  ck_assert_ptr_null(hark_weak_get(&w));
  ck_assert_int_eq(test_finalized, 1);
  hark_weak_clear(&w);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(sender_death_drops_its_connections) {
  begin();
  test_obj *s = sender_new(1), *t = sender_new(2);
  rx_obj *a = rx_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, s, 0), 0);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", fn_b, NULL, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_c, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, t, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 4);
  hark_unref(s);
  hark_signal_sweep(g_sig);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 2);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, t, NULL), 2);
  ASSERT_CALLS(903, 901);
  ck_assert_int_eq(a->calls, 1);
  hark_unref(a);
  hark_unref(t);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- the reentrancy matrix ---------------------------------------------
 * Loop tests: _i == 0 connects everything as any-sender receivers and
 * sends with NULL; _i == 1 connects everything for one sender and sends
 * from it (the sender cache's path). */

static test_obj *matrix_sender(int i) { return i ? sender_new(99) : NULL; }

START_TEST(receiver_disconnecting_itself_is_called_this_time_only) {
  begin();
  test_obj *s = matrix_sender(_i);
  rx_obj *a = rx_new(1), *b = rx_new(2);
  a->action = ACT_DISCONNECT_SELF;
  a->conn_sender = s;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, s, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(1, 2);
  ck_assert_int_eq(a->action_result, 1);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 1);
  ASSERT_CALLS(2);
  hark_unref(a);
  hark_unref(b);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(receiver_disconnecting_a_later_receiver_prevents_its_call) {
  begin();
  test_obj *s = matrix_sender(_i);
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3);
  a->action = ACT_DISCONNECT_TARGET;
  a->target = c;
  a->conn_sender = s;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, s, HARK_STRONG), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(1, 2);
  ck_assert_int_eq(a->action_result, 1);
  ck_assert_int_eq(c->calls, 0);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(1, 2);
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(receiver_killing_a_later_receiver_prevents_its_call) {
  begin();
  test_obj *s = matrix_sender(_i);
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3);
  a->action = ACT_UNREF_TARGET;
  a->target = c; /* our only reference to c goes to a */
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, s, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(1, 2);
  ck_assert_int_eq(rx_finalized, 1); /* c, once the send is over */
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(1, 2);
  hark_signal_sweep(g_sig);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 2);
  hark_unref(a);
  hark_unref(b);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(receiver_killing_itself_keeps_its_memory_until_it_returns) {
  begin();
  test_obj *s = matrix_sender(_i);
  rx_obj *a = rx_new(1), *b = rx_new(2);
  a->action = ACT_UNREF_SELF; /* our only reference goes to a itself */
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, s, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(1, 2);
  ck_assert_int_eq(rx_finalized, 1);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 1);
  ASSERT_CALLS(2);
  hark_unref(b);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

/* The send holds the sender for its duration: later receivers still run
 * and may read it; it dies when the send is over, with its connections. */
START_TEST(receiver_killing_the_sender_during_a_send_is_safe) {
  begin();
  test_obj *s = sender_new(5);
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3);
  a->action = ACT_UNREF_SENDER; /* our reference to s goes to a */
  ck_assert_int_eq(hark_connect(g_sig, rx, a, _i ? (void *)s : NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, NULL, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 3);
  ASSERT_CALLS(1, 2, 3);
  ck_assert_int_eq(b->sender_id_seen, 5);
  ck_assert_int_eq(c->sender_id_seen, 5);
  ck_assert_int_eq(test_finalized, 1);
  hark_signal_sweep(g_sig);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), _i ? 1 : 2);
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  end_signal();
  assert_all_released();
}
END_TEST

/* The send holds the signal for its duration, so nothing is freed under
 * it. Whether receivers after the killer still run is not part of the
 * contract and not asserted: only that the send finishes without touching
 * freed memory (sanitizers, valgrind) and that everything is released. */
START_TEST(receiver_killing_the_signal_during_a_send_is_safe) {
  begin();
  test_obj *s = matrix_sender(_i);
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3);
  b->action = ACT_UNREF_SIGNAL; /* our reference to the signal goes to b */
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, s, HARK_STRONG), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, s, HARK_STRONG), 0);
  int r = hark_send(g_sig, s, NULL);
  ck_assert_ptr_null(g_sig);
  ck_assert(r == 2 || r == 3);
  ck_assert_int_eq(a->calls, 1);
  ck_assert_int_eq(b->calls, 1);
  ck_assert_int_le(c->calls, 1);
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  hark_unref(s);
  ck_assert_int_eq(rx_finalized, 3);
  assert_all_released();
}
END_TEST

START_TEST(receiver_connecting_a_new_receiver_does_not_call_it_in_this_send) {
  begin();
  test_obj *s = matrix_sender(_i);
  rx_obj *a = rx_new(1), *b = rx_new(2), *n = rx_new(3);
  a->action = ACT_CONNECT_TARGET;
  a->target = n;
  a->conn_sender = s;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, s, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(1, 2);
  ck_assert_int_eq(a->action_result, 0);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 3);
  ASSERT_CALLS(1, 2, 3);
  hark_unref(a);
  hark_unref(b);
  hark_unref(n);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(receiver_sending_recursively_calls_every_receiver_in_order) {
  begin();
  test_obj *s = matrix_sender(_i);
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3);
  b->action = ACT_SEND;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, s, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 3);
  ASSERT_CALLS(1, 2, 1, 2, 3, 3);
  ck_assert_int_eq(b->action_result, 3);
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

/* A recursive send that disconnects a receiver the outer send has not
 * reached yet: the outer send must not call it. */
static rx_obj *nested_victim;
static int nested_disconnector(void *self, void *sender, void *args) {
  log_call(50);
  if (g_depth == 0) {
    g_depth++;
    hark_send(g_sig, sender, args);
    g_depth--;
  } else {
    hark_disconnect(g_sig, rx, nested_victim, sender);
  }
  return 0;
}

START_TEST(
    receiver_disconnected_by_a_recursive_send_is_not_called_by_the_outer) {
  begin();
  test_obj *s = matrix_sender(_i);
  nested_victim = rx_new(3);
  ck_assert_int_eq(hark_connect(g_sig, nested_disconnector, NULL, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, nested_victim, s, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 1);
  ASSERT_CALLS(50, 50);
  ck_assert_int_eq(nested_victim->calls, 0);
  hark_unref(nested_victim);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

/* Everyone disconnects everyone, including itself, then reconnects. */
static rx_obj *churn[4];
static int churner(void *self, void *sender, void *args) {
  log_call(60);
  for (int i = 0; i < 4; i++)
    hark_disconnect(g_sig, rx, churn[i], sender);
  hark_disconnect(g_sig, churner, NULL, sender);
  for (int i = 0; i < 4; i++)
    hark_connect(g_sig, rx, churn[i], sender, 0);
  return 0;
}

START_TEST(receiver_disconnecting_and_reconnecting_everyone_is_safe) {
  begin();
  test_obj *s = matrix_sender(_i);
  for (int i = 0; i < 4; i++)
    churn[i] = rx_new(i + 1);
  ck_assert_int_eq(hark_connect(g_sig, rx, churn[0], s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, churner, NULL, s, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, churn[1], s, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 2);
  ASSERT_CALLS(1, 60); /* churn[1] was disconnected before its turn */
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 4);
  ASSERT_CALLS(1, 2, 3, 4);
  for (int i = 0; i < 4; i++)
    hark_unref(churn[i]);
  hark_unref(s);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- address reuse ----------------------------------------------------- */

static void *expected_sender;
static int expected_id;
static int wrong_sender;
static int own_calls;

static int rx_own_sender(void *self, void *sender, void *args) {
  own_calls++;
  if (sender != expected_sender || ((test_obj *)sender)->id != expected_id)
    wrong_sender++;
  return 0;
}

START_TEST(new_sender_at_a_freed_senders_address_inherits_no_receivers) {
  begin();
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  void *prev = NULL;
  int reused = 0;
  for (int i = 0; i < 5000; i++) {
    test_obj *s = sender_new(i);
    reused += (void *)s == prev;
    expected_sender = s;
    expected_id = i;
    own_calls = 0;
    /* a fresh sender has only the any-sender receiver, whatever its
     * address held before */
    ck_assert_int_eq(hark_send(g_sig, s, NULL), 1);
    ck_assert_int_eq(own_calls, 0);
    /* and connecting "the same" (fn, NULL, address) again is new */
    ck_assert_int_eq(hark_connect(g_sig, rx_own_sender, NULL, s, 0), 0);
    if (i % 2)
      ck_assert_int_eq(hark_connect_uid(g_sig, "own", fn_b, NULL, s, 0), 0);
    ck_assert_int_eq(hark_send(g_sig, s, NULL), i % 2 ? 3 : 2);
    ck_assert_int_eq(own_calls, 1);
    prev = s;
    hark_unref(s);
  }
  ck_assert_int_eq(wrong_sender, 0);
  (void)reused; /* 0 under a quarantining allocator */
  hark_signal_sweep(g_sig);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  end_signal();
  assert_all_released();
}
END_TEST

/* Regression: disconnect and block used to find a dead weak receiver, not
 * yet dropped, through a new object that reused its address. */
/* Sends nested deeper than a thread's pins fall back to references; a
 * receiver that drops the last outside reference to the sender and the
 * signal at the deepest level still leaves both alive, and callable, until
 * the outermost send returns. */
static test_obj *deep_sender;
static hark_weak deep_sender_w, deep_sig_w;
static int deep_depth, deep_max, deep_alive_after_drop;

static int deep_rx(void *self, void *sender, void *args) {
  int depth = ++deep_depth;
  if (depth < deep_max) {
    ck_assert_int_eq(hark_send(g_sig, sender, args), 1);
  } else {
    hark_unref(deep_sender); /* the last outside references */
    hark_unref(g_sig);
  }
  /* on the way back out, at every level, both are still alive */
  test_obj *s = hark_weak_get(&deep_sender_w);
  hark_signal *g = hark_weak_get(&deep_sig_w);
  deep_alive_after_drop += s != NULL && g != NULL;
  hark_unref(s);
  hark_unref(g);
  return 0;
}

START_TEST(nested_sends_deeper_than_the_pins_keep_sender_and_signal_alive) {
  begin();
  deep_sender = sender_new(1);
  deep_depth = 0;
  deep_max = 40; /* well past the pin stack */
  deep_alive_after_drop = 0;
  ck_assert_int_eq(hark_weak_set(&deep_sender_w, deep_sender), 0);
  ck_assert_int_eq(hark_weak_set(&deep_sig_w, g_sig), 0);
  ck_assert_int_eq(hark_connect(g_sig, deep_rx, NULL, deep_sender, 0), 0);
  hark_signal *sig = g_sig;
  ck_assert_int_eq(hark_send(sig, deep_sender, NULL), 1);
  ck_assert_int_eq(deep_depth, deep_max);
  ck_assert_int_eq(deep_alive_after_drop, deep_max);
  /* the outermost send paid the debts: both are gone now */
  ck_assert_ptr_null(hark_weak_get(&deep_sender_w));
  ck_assert_ptr_null(hark_weak_get(&deep_sig_w));
  hark_weak_clear(&deep_sender_w);
  hark_weak_clear(&deep_sig_w);
  g_sig = NULL;
  assert_all_released();
}
END_TEST

START_TEST(disconnect_and_block_never_find_a_dead_receiver_through_its_address) {
  begin();
  rx_obj *dead[16], *fresh[16];
  for (int i = 0; i < 16; i++) {
    dead[i] = rx_new(i);
    ck_assert_int_eq(hark_connect(g_sig, rx, dead[i], NULL, 0), 0);
  }
  void *addr[16];
  for (int i = 0; i < 16; i++) {
    addr[i] = dead[i];
    hark_unref(dead[i]); /* weak: the connections are still listed */
  }
  for (int i = 0; i < 16; i++)
    fresh[i] = rx_new(100 + i);
  for (int i = 0; i < 16; i++) {
    /* whether or not fresh[i] reuses a dead address, it has no
     * connection of its own */
    ck_assert_int_eq(hark_block(g_sig, rx, fresh[i], NULL), HARK_ENOENT);
    ck_assert_int_eq(hark_disconnect(g_sig, rx, fresh[i], NULL), 0);
  }
  /* and the dead ones count as gone, under their own pointers too */
  for (int i = 0; i < 16; i++)
    ck_assert_int_eq(hark_disconnect(g_sig, rx, addr[i], NULL), 0);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  for (int i = 0; i < 16; i++)
    hark_unref(fresh[i]);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(new_receiver_at_a_dead_receivers_address_is_a_new_connection) {
  begin();
  for (int i = 0; i < 2000; i++) {
    rx_obj *a = rx_new(i);
    log_reset();
    ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 0);
    ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
    ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
    ASSERT_CALLS(i);
    hark_unref(a); /* weak: dies with its connection still listed */
  }
  hark_signal_sweep(g_sig);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  end_signal();
  assert_all_released();
}
END_TEST

/* ---- stderr capture ---------------------------------------------------- */

static int saved_stderr = -1;
static int capture_fd = -1;
static char captured[16384];

static void capture_stderr(void) {
  char path[] = "/tmp/hark-test-stderr-XXXXXX";
  capture_fd = mkstemp(path);
  ck_assert_int_ge(capture_fd, 0);
  unlink(path);
  fflush(stderr);
  saved_stderr = dup(2);
  ck_assert_int_ge(saved_stderr, 0);
  ck_assert_int_ge(dup2(capture_fd, 2), 0);
}

/* What was written to stderr since capture_stderr(), NUL-terminated. */
static const char *captured_stderr(void) {
  fflush(stderr);
  ssize_t n = pread(capture_fd, captured, sizeof captured - 1, 0);
  captured[n > 0 ? n : 0] = '\0';
  return captured;
}

static void restore_stderr(void) {
  fflush(stderr);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  close(capture_fd);
}

static int count_substr(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
    n++;
  return n;
}

/* ---- leak guard -------------------------------------------------------- */

static rx_obj *guard_rx[300];

static void guard_connect(int from, int to, void *sender) {
  for (int i = from; i < to; i++) {
    if (guard_rx[i] == NULL)
      guard_rx[i] = rx_new(i);
    ck_assert_int_eq(hark_connect(g_sig, rx, guard_rx[i], sender, 0), 0);
  }
}

static void guard_end(void) {
  for (int i = 0; i < 300; i++)
    hark_unref(guard_rx[i]);
  end_signal();
}

START_TEST(leak_guard_warns_once_naming_the_signal_when_a_sender_exceeds_it) {
  test_alloc_install();
  g_sig = hark_signal_new("leaky-signal");
  test_obj *s = sender_new(1), *t = sender_new(2);
  hark_signal_set_max_receivers(g_sig, 3);
  capture_stderr();
  guard_connect(0, 3, s);
  ck_assert_int_eq(count_substr(captured_stderr(), "leaky-signal"), 0);
  guard_connect(3, 4, s);
  ck_assert_int_eq(count_substr(captured_stderr(), "leaky-signal"), 1);
  guard_connect(4, 8, s); /* once per signal */
  guard_connect(0, 8, t);
  guard_connect(0, 8, NULL);
  const char *out = captured_stderr();
  restore_stderr();
  ck_assert_msg(count_substr(out, "leaky-signal") == 1, "stderr was: %s", out);
  ck_assert_int_eq(hark_send(g_sig, s, NULL), 16);
  guard_end();
  hark_unref(s);
  hark_unref(t);
  assert_all_released();
}
END_TEST

START_TEST(leak_guard_counts_the_any_sender_list) {
  test_alloc_install();
  g_sig = hark_signal_new("leaky-any");
  hark_signal_set_max_receivers(g_sig, 3);
  capture_stderr();
  guard_connect(0, 3, NULL);
  ck_assert_int_eq(count_substr(captured_stderr(), "leaky-any"), 0);
  guard_connect(3, 4, NULL);
  const char *out = captured_stderr();
  restore_stderr();
  ck_assert_msg(count_substr(out, "leaky-any") == 1, "stderr was: %s", out);
  guard_end();
  assert_all_released();
}
END_TEST

START_TEST(leak_guard_counts_per_sender_not_in_total) {
  test_alloc_install();
  g_sig = hark_signal_new("leaky-per-sender");
  test_obj *s[3] = {sender_new(1), sender_new(2), sender_new(3)};
  hark_signal_set_max_receivers(g_sig, 3);
  capture_stderr();
  for (int i = 0; i < 3; i++)
    guard_connect(0, 3, s[i]);
  guard_connect(0, 3, NULL);
  const char *out = captured_stderr();
  restore_stderr();
  ck_assert_msg(count_substr(out, "leaky-per-sender") == 0, "stderr: %s", out);
  guard_end();
  for (int i = 0; i < 3; i++)
    hark_unref(s[i]);
  assert_all_released();
}
END_TEST

START_TEST(leak_guard_is_off_when_the_limit_is_zero) {
  test_alloc_install();
  g_sig = hark_signal_new("leaky-off");
  hark_signal_set_max_receivers(g_sig, 0);
  capture_stderr();
  guard_connect(0, 300, NULL);
  const char *out = captured_stderr();
  restore_stderr();
  ck_assert_msg(count_substr(out, "leaky-off") == 0, "stderr was: %s", out);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 300);
  guard_end();
  assert_all_released();
}
END_TEST

START_TEST(leak_guard_default_limit_is_hark_default_max_receivers) {
  test_alloc_install();
  g_sig = hark_signal_new("leaky-default");
  capture_stderr();
  guard_connect(0, HARK_DEFAULT_MAX_RECEIVERS, NULL);
  ck_assert_int_eq(count_substr(captured_stderr(), "leaky-default"), 0);
  guard_connect(HARK_DEFAULT_MAX_RECEIVERS, HARK_DEFAULT_MAX_RECEIVERS + 1,
                NULL);
  const char *out = captured_stderr();
  restore_stderr();
  ck_assert_msg(count_substr(out, "leaky-default") == 1, "stderr: %s", out);
  guard_end();
  assert_all_released();
}
END_TEST

/* ---- HARK_DEBUG=receivers ----------------------------------------------
 * HARK_DEBUG is read once, so it must be set before the process's first
 * hark call: the scenario runs in a child forked for it, which sets the
 * variable, points stderr at a file and reports through its exit status
 * (0: every check held). */

static int ghost_scenario(void) {
  test_alloc_install();
  hark_signal *sig = hark_signal_new("ghost-signal");
  if (sig == NULL)
    return 10;
  rx_obj *a = hark_new(&rx_type);
  if (a == NULL)
    return 11;
  a->id = 1;
  if (hark_connect(sig, rx, a, NULL, 0) != 0)
    return 12;
  hark_unref(a); /* a receiver object nobody keeps */
  if (rx_finalized != 1)
    return 13;
  if (hark_send(sig, NULL, NULL) != 0)
    return 14;
  if (call_n != 0)
    return 15; /* it ran */
  hark_signal_sweep(sig);
  hark_unref(sig);
  if (hark_live_count(NULL) != 0 || test_blocks() != 0)
    return 16;
  return 0;
}

static int run_in_child(const char *hark_debug, int (*body)(void), char *out,
                        size_t out_size) {
  char path[] = "/tmp/hark-test-child-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  unlink(path);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    if (hark_debug != NULL)
      setenv("HARK_DEBUG", hark_debug, 1);
    else
      unsetenv("HARK_DEBUG");
    dup2(fd, 2);
    int code = body();
    fflush(stderr);
    /* exit, not _exit: a coverage build writes the child's profile at
     * exit; stdio was flushed before the fork, so nothing is written twice */
    exit(code);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    ck_assert_int_eq(errno, EINTR);
  ssize_t n = pread(fd, out, out_size - 1, 0);
  out[n > 0 ? n : 0] = '\0';
  close(fd);
  ck_assert_msg(WIFEXITED(status), "child died (stderr: %s)", out);
  return WEXITSTATUS(status);
}

START_TEST(hark_debug_receivers_reports_a_receiver_nobody_keeps) {
  char out[8192];
  int code = run_in_child("receivers", ghost_scenario, out, sizeof out);
  ck_assert_msg(code == 0, "scenario check %d failed (stderr: %s)", code, out);
  ck_assert_msg(count_substr(out, "ghost-signal") >= 1,
                "no line names the signal; stderr was: \"%s\"", out);
}
END_TEST

START_TEST(without_hark_debug_a_receiver_nobody_keeps_is_silent) {
  char out[8192];
  int code = run_in_child(NULL, ghost_scenario, out, sizeof out);
  ck_assert_msg(code == 0, "scenario check %d failed (stderr: %s)", code, out);
  ck_assert_msg(count_substr(out, "ghost-signal") == 0, "stderr: %s", out);
}
END_TEST

/* ---- allocation failure ------------------------------------------------ */

/* After a failure the signal must still work: a new connect and a send. */
static void assert_still_usable(hark_signal *sig) {
  log_reset();
  int r = hark_connect(sig, fn_c, NULL, NULL, 0);
  ck_assert(r == 0 || r == HARK_EEXIST);
  ck_assert_int_ge(hark_send(sig, NULL, NULL), 1);
  ck_assert_int_eq(log_count(903), 1);
}

static int do_connect(hark_signal *sig, int uid, const char *name,
                      hark_receiver_fn fn, void *self, void *sender,
                      unsigned flags) {
  return uid ? hark_connect_uid(sig, name, fn, self, sender, flags)
             : hark_connect(sig, fn, self, sender, flags);
}

/* signal_new, then three connects (weak any-sender, strong for a sender,
 * once), each allowed to fail with HARK_ENOMEM and then change nothing. */
static int connect_scenario(void *arg) {
  int uid = *(int *)arg;
  int ok = 1, r;
  rx_obj *a = NULL, *b = NULL;
  test_obj *s = NULL;
  hark_signal *sig = hark_signal_new("oom");
  if (sig == NULL) {
    ck_assert(test_failure_met());
    return 0;
  }
  a = hark_new(&rx_type);
  b = hark_new(&rx_type);
  s = hark_new(&test_obj_type);
  if (a == NULL || b == NULL || s == NULL) {
    ck_assert(test_failure_met());
    ok = 0;
    goto out;
  }
  a->id = 1;
  b->id = 2;
  r = do_connect(sig, uid, "a", rx, a, NULL, 0);
  if (r == HARK_ENOMEM) {
    ck_assert_uint_eq(hark_signal_receivers(sig), 0);
    ck_assert(!hark_has_listeners(sig, NULL));
    ok = 0;
    assert_still_usable(sig);
    goto out;
  }
  ck_assert_int_eq(r, 0);
  r = do_connect(sig, uid, "b", rx, b, s, HARK_STRONG);
  if (r == HARK_ENOMEM) {
    ck_assert_uint_eq(hark_signal_receivers(sig), 1);
    ck_assert(hark_has_listeners(sig, NULL));
    ok = 0;
    assert_still_usable(sig);
    goto out;
  }
  ck_assert_int_eq(r, 0);
  r = do_connect(sig, uid, "c", fn_a, NULL, s, HARK_ONCE);
  if (r == HARK_ENOMEM) {
    ck_assert_uint_eq(hark_signal_receivers(sig), 2);
    ok = 0;
    assert_still_usable(sig);
    goto out;
  }
  ck_assert_int_eq(r, 0);
  ck_assert_uint_eq(hark_signal_receivers(sig), 3);
  if (test_failure_met())
    ok = 0; /* absorbed without a report: fine, keep going */
out:
  hark_unref(sig);
  hark_unref(a);
  hark_unref(b); /* a refused strong connect kept no reference */
  hark_unref(s);
  return ok;
}

static void oom_warm_up(void) {
  /* one-time globals must not count as a leak of the first run */
  hark_signal *sig = hark_signal_new("warm");
  test_obj *s = sender_new(1);
  rx_obj *a = rx_new(1);
  ck_assert_int_eq(hark_connect(sig, rx, a, s, 0), 0);
  ck_assert_int_eq(hark_connect_uid(sig, "u", fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send(sig, s, NULL), 2);
  ck_assert_int_eq(hark_send(sig, NULL, NULL), 1);
  hark_unref(a);
  hark_unref(s);
  hark_unref(sig);
  log_reset();
}

START_TEST(connect_reports_allocation_failure_at_every_point_and_stays_usable) {
  test_alloc_install();
  oom_warm_up();
  int uid = 0;
  int points = test_oom_loop(connect_scenario, &uid);
  ck_assert_int_gt(points, 0);
  assert_all_released();
}
END_TEST

START_TEST(
    connect_uid_reports_allocation_failure_at_every_point_and_stays_usable) {
  test_alloc_install();
  oom_warm_up();
  int uid = 1;
  int points = test_oom_loop(connect_scenario, &uid);
  ck_assert_int_gt(points, 0);
  assert_all_released();
}
END_TEST

static int signal_new_scenario(void *arg) {
  hark_signal *sig = hark_signal_new("a-signal-with-a-longer-name");
  if (sig == NULL) {
    ck_assert(test_failure_met());
    return 0;
  }
  ck_assert_str_eq(hark_signal_name(sig), "a-signal-with-a-longer-name");
  int done = !test_failure_met();
  hark_unref(sig);
  return done;
}

START_TEST(signal_new_reports_allocation_failure_at_every_point) {
  test_alloc_install();
  oom_warm_up();
  ck_assert_int_gt(test_oom_loop(signal_new_scenario, NULL), 0);
  assert_all_released();
}
END_TEST

/* A send must rebuild a sender's receiver list after a connect or a
 * disconnect that concerns it: that may fail with HARK_ENOMEM, calling no
 * receiver, and the next send must work. */
#define SEND_STEP(sender, ...)                                                 \
  do {                                                                         \
    log_reset();                                                               \
    const int want_[] = {__VA_ARGS__};                                         \
    int n_ = (int)(sizeof want_ / sizeof want_[0]);                            \
    r = hark_send(sig, sender, NULL);                                          \
    if (r == HARK_ENOMEM) {                                                    \
      ck_assert(test_failure_met());                                           \
      ASSERT_NO_CALLS();                                                       \
      ok = 0;                                                                  \
      r = hark_send(sig, sender, NULL); /* usable again */                     \
      ck_assert_int_eq(r, n_);                                                 \
      assert_calls_(want_, n_, __LINE__);                                      \
      goto out;                                                                \
    }                                                                          \
    ck_assert_int_eq(r, n_);                                                   \
    assert_calls_(want_, n_, __LINE__);                                        \
  } while (0)

#define CONNECT_STEP(call)                                                     \
  do {                                                                         \
    r = (call);                                                                \
    if (r == HARK_ENOMEM) {                                                    \
      ck_assert(test_failure_met());                                           \
      ok = 0;                                                                  \
      goto out;                                                                \
    }                                                                          \
    ck_assert_int_eq(r, 0);                                                    \
  } while (0)

static int send_scenario(void *arg) {
  int ok = 1, r;
  rx_obj *a = NULL, *b = NULL, *c = NULL;
  test_obj *s = NULL;
  hark_signal *sig = hark_signal_new("oom-send");
  if (sig == NULL) {
    ck_assert(test_failure_met());
    return 0;
  }
  a = hark_new(&rx_type);
  b = hark_new(&rx_type);
  c = hark_new(&rx_type);
  s = hark_new(&test_obj_type);
  if (a == NULL || b == NULL || c == NULL || s == NULL) {
    ck_assert(test_failure_met());
    ok = 0;
    goto out;
  }
  a->id = 1;
  b->id = 2;
  c->id = 3;
  CONNECT_STEP(hark_connect(sig, rx, a, NULL, 0));
  CONNECT_STEP(hark_connect(sig, rx, b, s, 0));
  SEND_STEP(s, 1, 2);
  SEND_STEP(NULL, 1);
  CONNECT_STEP(hark_connect(sig, rx, c, s, 0));
  SEND_STEP(s, 1, 2, 3);
  ck_assert_int_eq(hark_disconnect(sig, rx, a, NULL), 1);
  SEND_STEP(s, 2, 3);
  CONNECT_STEP(hark_connect_uid(sig, "u", fn_a, NULL, NULL, 0));
  SEND_STEP(s, 2, 3, 901);
  SEND_STEP(s, 2, 3, 901); /* a cache hit */
  if (test_failure_met())
    ok = 0;
out:
  hark_unref(a);
  hark_unref(b);
  hark_unref(c);
  hark_unref(s);
  hark_unref(sig);
  return ok;
}

START_TEST(send_after_a_connect_reports_allocation_failure_and_stays_usable) {
  test_alloc_install();
  oom_warm_up();
  ck_assert_int_gt(test_oom_loop(send_scenario, NULL), 0);
  assert_all_released();
}
END_TEST

/* ---- arguments, finalized objects, once, robust and accumulate ---------- */

static void *args_copy_fn(void *args) { return args; }
static void args_free_fn(void *args) { (void)args; }

START_TEST(accessors_and_calls_reject_null_and_half_set_arguments) {
  begin();
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_ptr_null(hark_signal_name(NULL));
  ck_assert_uint_eq(hark_signal_receivers(NULL), 0);
  hark_signal_set_max_receivers(NULL, 3); /* a no-op */
  ck_assert_int_eq(hark_signal_set_args_ops(NULL, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_signal_set_args_ops(g_sig, args_copy_fn, NULL),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_signal_set_args_ops(g_sig, NULL, args_free_fn),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_signal_set_args_ops(g_sig, NULL, NULL), 0);
  ck_assert_int_eq(hark_connect_loop(g_sig, NULL, fn_b, NULL, NULL, 0),
                   HARK_EINVAL);
  ck_assert_int_eq(hark_disconnect(NULL, fn_a, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_disconnect(g_sig, NULL, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_disconnect_uid(g_sig, "", NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_block(NULL, fn_a, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_block(g_sig, NULL, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_block_uid(g_sig, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_unblock_uid(g_sig, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_send_accumulate(g_sig, NULL, NULL, NULL, NULL),
                   HARK_EINVAL);
  ck_assert(!hark_has_listeners(NULL, NULL));
  ck_assert_uint_eq(hark_signal_sweep(NULL), 0);
  /* none of them changed anything */
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 1);
  log_reset();
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1);
  ASSERT_CALLS(901);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(connect_with_a_finalized_self_or_sender_returns_enoent) {
  begin();
  kept k;
  ck_assert_int_eq(hark_object_init(&k, &kept_type), 0);
  hark_unref(&k);
  ck_assert_int_eq(hark_connect(g_sig, rx, &k, NULL, 0), HARK_ENOENT);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, &k, 0), HARK_ENOENT);
  ck_assert_int_eq(hark_connect_uid(g_sig, "u", fn_a, NULL, &k, 0),
                   HARK_ENOENT);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 0);
  end_signal();
  assert_all_released();
}
END_TEST

START_TEST(robust_and_accumulate_skip_dead_blocked_and_spent_once_receivers) {
  begin();
  rx_obj *a = rx_new(1), *b = rx_new(2), *c = rx_new(3), *d = rx_new(4);
  d->ret = 6;
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, b, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, NULL, HARK_ONCE), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, d, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, HARK_ONCE), 0);
  ck_assert_int_eq(hark_block(g_sig, rx, b, NULL), 0);
  hark_unref(a); /* dead, not yet swept */
  robust_log_n = 0;
  log_reset();
  ck_assert_int_eq(hark_send_robust(g_sig, NULL, NULL, on_result, NULL), 1);
  ASSERT_CALLS(3, 4, 901);
  ck_assert_int_eq(robust_log_n, 3);
  ck_assert_ptr_eq(robust_log[2].self, NULL);         /* the plain function */
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 2); /* a purged, once gone */
  robust_log_n = 0;
  log_reset();
  ck_assert_int_eq(hark_send_robust(g_sig, NULL, NULL, on_result, NULL), 1);
  ASSERT_CALLS(4);
  /* the same mix for an accumulating send */
  rx_obj *e = rx_new(5);
  ck_assert_int_eq(hark_connect(g_sig, rx, e, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, rx, c, NULL, HARK_ONCE), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, HARK_ONCE), 0);
  hark_unref(e);
  acc_stop_after = 1000;
  acc_seen = 0;
  robust_log_n = 0;
  log_reset();
  int data;
  ck_assert_int_eq(hark_send_accumulate(g_sig, NULL, NULL, acc, &data), 3);
  ASSERT_CALLS(4, 3, 901);
  ck_assert_int_eq(robust_log_n, 3);
  log_reset();
  ck_assert_int_eq(hark_send_accumulate(g_sig, NULL, NULL, acc, &data), 1);
  ASSERT_CALLS(4);
  ck_assert_uint_eq(hark_signal_receivers(g_sig), 2);
  ck_assert_int_eq(hark_unblock(g_sig, rx, b, NULL), 0);
  log_reset();
  ck_assert_int_eq(hark_send_accumulate(g_sig, NULL, NULL, acc, &data), 2);
  ASSERT_CALLS(2, 4);
  hark_unref(b);
  hark_unref(c);
  hark_unref(d);
  end_signal();
  assert_all_released();
}
END_TEST

/* The first block of a connection makes a small record: when it cannot,
 * hark_block says so and nothing changes; later blocks need nothing. */
static rx_obj *oom_rx;

static int block_scenario(void *arg) {
  (void)arg;
  int r = hark_block(g_sig, rx, oom_rx, NULL);
  bool met = test_failure_met();
  test_fail_nth(0);
  log_reset();
  if (r == HARK_ENOMEM) {
    ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1); /* not blocked */
    ASSERT_CALLS(1);
    return 0;
  }
  ck_assert_int_eq(r, 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 0);
  ck_assert_int_eq(hark_unblock(g_sig, rx, oom_rx, NULL), 0);
  ck_assert_int_eq(hark_unblock(g_sig, rx, oom_rx, NULL), HARK_ERANGE);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1); /* a list, as before */
  return !met;
}

START_TEST(block_without_memory_for_its_record_fails_and_changes_nothing) {
  begin();
  oom_rx = rx_new(1);
  ck_assert_int_eq(hark_connect(g_sig, rx, oom_rx, NULL, 0), 0);
  ck_assert_int_eq(hark_send(g_sig, NULL, NULL), 1); /* a list, built */
  ck_assert_int_ge(test_oom_loop(block_scenario, NULL), 1);
  /* blocked already: more blocks need no memory */
  ck_assert_int_eq(hark_block(g_sig, rx, oom_rx, NULL), 0);
  test_fail_nth(1);
  ck_assert_int_eq(hark_block(g_sig, rx, oom_rx, NULL), 0);
  test_fail_nth(0);
  ck_assert_int_eq(hark_unblock(g_sig, rx, oom_rx, NULL), 0);
  ck_assert_int_eq(hark_unblock(g_sig, rx, oom_rx, NULL), 0);
  hark_unref(oom_rx);
  end_signal();
  assert_all_released();
}
END_TEST

/* hark_has_listeners must rebuild a stale list; without memory for it, it
 * answers from the connections themselves, with the same rules: dead and
 * blocked receivers do not count, sender filtering does. */
START_TEST(has_listeners_without_memory_for_the_list_answers_all_the_same) {
  begin();
  rx_obj *a = rx_new(1);
  test_obj *s1 = sender_new(1), *s2 = sender_new(2);
  ck_assert_int_eq(hark_connect(g_sig, rx, a, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_a, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(g_sig, fn_b, NULL, s1, 0), 0);
  ck_assert_int_eq(hark_block(g_sig, fn_a, NULL, NULL), 0);
  hark_unref(a); /* dead, not swept */
  long blocks = test_blocks();
  test_fail_nth(1);
  ck_assert(!hark_has_listeners(g_sig, NULL));
  ck_assert(test_failure_met());
  test_fail_nth(1);
  ck_assert(hark_has_listeners(g_sig, s1));
  ck_assert(test_failure_met());
  test_fail_nth(1);
  ck_assert(!hark_has_listeners(g_sig, s2));
  ck_assert(test_failure_met());
  test_fail_nth(0);
  ck_assert_int_eq(test_blocks(), blocks); /* nothing was built */
  ck_assert_int_eq(hark_unblock(g_sig, fn_a, NULL, NULL), 0);
  test_fail_nth(1);
  ck_assert(hark_has_listeners(g_sig, NULL));
  ck_assert(test_failure_met());
  test_fail_nth(1);
  ck_assert(hark_has_listeners(g_sig, s2));
  test_fail_nth(0);
  /* with memory, the same answers */
  ck_assert(hark_has_listeners(g_sig, NULL));
  ck_assert(hark_has_listeners(g_sig, s1));
  ck_assert(hark_has_listeners(g_sig, s2));
  ck_assert_int_eq(hark_block(g_sig, fn_a, NULL, NULL), 0);
  ck_assert(!hark_has_listeners(g_sig, s2));
  ck_assert(hark_has_listeners(g_sig, s1));
  hark_unref(s1);
  hark_unref(s2);
  end_signal();
  assert_all_released();
}
END_TEST

/* Sends from sender s and returns how many times fn_a (s's receiver) and
 * fn_b (the any-sender uids) ran; a send that meets the failure is
 * retried (the failure is spent). */
static void send_counting(hark_signal *sig, void *s, int *own, int *any) {
  log_reset();
  int r = hark_send(sig, s, NULL);
  if (r == HARK_ENOMEM) {
    ck_assert(test_failure_met());
    ASSERT_NO_CALLS();
    r = hark_send(sig, s, NULL);
  }
  ck_assert_int_ge(r, 0);
  *own = log_count(901);
  *any = log_count(902);
  ck_assert_int_eq(r, *own + *any);
}

#define GROW_N 24

/* Many senders (the sender table grows) and many connections (the
 * identity index grows), then disconnect/reconnect churn (tombstones make
 * both rehash): a failure anywhere is HARK_ENOMEM and changes nothing. */
static int growth_scenario(void *arg) {
  int ok = 1, own, any;
  test_obj *snd[GROW_N] = {NULL};
  hark_signal *sig = hark_signal_new("grow");
  if (sig == NULL) {
    ck_assert(test_failure_met());
    return 0;
  }
  for (int i = 0; i < GROW_N; i++) {
    snd[i] = hark_new(&test_obj_type);
    if (snd[i] == NULL) {
      ck_assert(test_failure_met());
      ok = 0;
      goto out;
    }
  }
  for (int i = 0; i < GROW_N; i++) {
    int r = hark_connect(sig, fn_a, NULL, snd[i], 0);
    if (r == HARK_ENOMEM) {
      ck_assert(test_failure_met());
      ck_assert_uint_eq(hark_signal_receivers(sig), 2 * (size_t)i);
      send_counting(sig, snd[i], &own, &any);
      ck_assert_int_eq(own, 0);
      ck_assert_int_eq(any, i);
      if (i > 0) {
        send_counting(sig, snd[i - 1], &own, &any);
        ck_assert_int_eq(own, 1);
      }
      ck_assert_int_eq(hark_connect(sig, fn_a, NULL, snd[i], 0), 0);
      send_counting(sig, snd[i], &own, &any);
      ck_assert_int_eq(own, 1);
      ok = 0;
      goto out;
    }
    ck_assert_int_eq(r, 0);
    char uid[16];
    snprintf(uid, sizeof uid, "any-%d", i);
    r = hark_connect_uid(sig, uid, fn_b, NULL, NULL, 0);
    if (r == HARK_ENOMEM) {
      ck_assert(test_failure_met());
      ck_assert_uint_eq(hark_signal_receivers(sig), 2 * (size_t)i + 1);
      send_counting(sig, NULL, &own, &any);
      ck_assert_int_eq(any, i);
      ck_assert_int_eq(hark_connect_uid(sig, uid, fn_b, NULL, NULL, 0), 0);
      send_counting(sig, NULL, &own, &any);
      ck_assert_int_eq(any, i + 1);
      ok = 0;
      goto out;
    }
    ck_assert_int_eq(r, 0);
  }
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < GROW_N; i += 2) {
      ck_assert_int_eq(hark_disconnect(sig, fn_a, NULL, snd[i]), 1);
      int r = hark_connect(sig, fn_a, NULL, snd[i], 0);
      if (r == HARK_ENOMEM) {
        ck_assert(test_failure_met());
        ck_assert_uint_eq(hark_signal_receivers(sig), 2 * GROW_N - 1);
        send_counting(sig, snd[i], &own, &any);
        ck_assert_int_eq(own, 0);
        ck_assert_int_eq(any, GROW_N);
        ok = 0;
        goto out;
      }
      ck_assert_int_eq(r, 0);
    }
  }
  for (int i = 0; i < GROW_N; i++) {
    send_counting(sig, snd[i], &own, &any);
    ck_assert_int_eq(own, 1);
    ck_assert_int_eq(any, GROW_N);
  }
  ck_assert_uint_eq(hark_signal_receivers(sig), 2 * GROW_N);
  if (test_failure_met())
    ok = 0;
out:
  for (int i = 0; i < GROW_N; i++)
    hark_unref(snd[i]);
  hark_unref(sig);
  return ok;
}

START_TEST(
    table_and_index_growth_report_allocation_failure_and_change_nothing) {
  test_alloc_install();
  oom_warm_up();
  ck_assert_int_gt(test_oom_loop(growth_scenario, NULL), 2 * GROW_N);
  assert_all_released();
}
END_TEST

/* HARK_DEBUG=receivers adds an allocation to a weak connect: every
 * allocation point of it fails cleanly too, and the report comes for a
 * receiver that dies connected, never for one disconnected first. */
static int debug_oom_scenario(void) {
  test_alloc_install();
  long base = test_blocks();
  size_t live = hark_live_count(NULL);
  int reports = 0;
  for (long n = 1; n < 1000; n++) {
    test_fail_nth(n);
    hark_signal *sig = hark_signal_new("dbg-oom");
    rx_obj *a = hark_new(&rx_type), *b = hark_new(&rx_type);
    int done = 0;
    if (sig != NULL && a != NULL && b != NULL) {
      int r = hark_connect(sig, rx, a, NULL, 0);
      if (r == HARK_ENOMEM) {
        if (!test_failure_met() || hark_signal_receivers(sig) != 0)
          return 30;
        if (hark_connect(sig, rx, a, NULL, 0) != 0) /* usable again */
          return 31;
      } else if (r != 0) {
        return 32;
      }
      r = hark_connect(sig, rx, b, NULL, 0);
      if (r == HARK_ENOMEM) {
        if (!test_failure_met() || hark_signal_receivers(sig) != 1)
          return 33;
      } else if (r != 0) {
        return 34;
      } else if (hark_disconnect(sig, rx, b, NULL) != 1) {
        return 35;
      }
      done = !test_failure_met();
      reports++; /* a dies connected */
    } else if (!test_failure_met()) {
      return 36;
    }
    test_fail_nth(0);
    hark_unref(b); /* never reported: not connected */
    hark_unref(a);
    if (sig != NULL)
      hark_signal_sweep(sig);
    hark_unref(sig);
    if (test_blocks() != base || hark_live_count(NULL) != live)
      return 37;
    if (done) {
      fprintf(stderr, "expected reports: %d\n", reports);
      return n > 4 ? 0 : 38;
    }
  }
  return 39;
}

START_TEST(hark_debug_receivers_connect_fails_cleanly_at_every_allocation) {
  char out[32768];
  int code = run_in_child("receivers", debug_oom_scenario, out, sizeof out);
  ck_assert_msg(code == 0, "scenario check %d failed (stderr: %s)", code, out);
  const char *e = strstr(out, "expected reports: ");
  ck_assert_ptr_nonnull(e);
  int want = atoi(e + strlen("expected reports: "));
  ck_assert_int_gt(want, 0);
  ck_assert_int_eq(
      count_substr(out, "died while connected to signal 'dbg-oom'"), want);
  ck_assert_int_eq(count_substr(out, "(rx_obj)"), want);
}
END_TEST

/* ---- everything released ----------------------------------------------- */

START_TEST(everything_is_released_once_all_objects_and_signals_are_dropped) {
  test_alloc_install();
  hark_signal *sigs[3];
  test_obj *senders[8];
  rx_obj *rxs[16];
  for (int i = 0; i < 3; i++)
    sigs[i] = hark_signal_new("many");
  for (int i = 0; i < 8; i++)
    senders[i] = sender_new(i);
  for (int i = 0; i < 16; i++)
    rxs[i] = rx_new(i);
  for (int k = 0; k < 3; k++) {
    for (int i = 0; i < 16; i++) {
      void *snd = i % 3 ? senders[(i + k) % 8] : NULL;
      unsigned flags =
          (i % 4 == 1 ? HARK_STRONG : 0) | (i % 5 == 2 ? HARK_ONCE : 0);
      ck_assert_int_eq(hark_connect(sigs[k], rx, rxs[i], snd, flags), 0);
      int r = hark_connect_uid(sigs[k], "uid", fn_a, rxs[i], snd, 0);
      ck_assert(r == 0 || r == HARK_EEXIST); /* one per (uid, sender) */
    }
    ck_assert_int_eq(hark_block(sigs[k], rx, rxs[4], senders[(4 + k) % 8]), 0);
  }
  for (int round = 0; round < 3; round++)
    for (int k = 0; k < 3; k++)
      for (int i = 0; i < 8; i++)
        ck_assert_int_ge(hark_send(sigs[k], senders[i], NULL), 0);
  /* drop in a mixed order: some senders, some receivers, a signal, ... */
  for (int i = 0; i < 8; i += 2)
    hark_unref(senders[i]);
  for (int i = 0; i < 16; i += 3)
    hark_unref(rxs[i]);
  hark_unref(sigs[1]);
  for (int k = 0; k < 3; k += 2)
    for (int i = 1; i < 8; i += 2)
      ck_assert_int_ge(hark_send(sigs[k], senders[i], NULL), 0);
  for (int i = 1; i < 8; i += 2)
    hark_unref(senders[i]);
  for (int i = 0; i < 16; i++)
    if (i % 3)
      hark_unref(rxs[i]);
  hark_unref(sigs[0]);
  hark_unref(sigs[2]);
  assert_all_released();
}
END_TEST

/* ---- suite ------------------------------------------------------------- */

static Suite *signal_suite(void) {
  Suite *s = suite_create("signal");
  TCase *tc = tcase_create("connect");
  tcase_add_test(tc, signal_new_copies_its_name_and_starts_empty);
  tcase_add_test(tc,
                 send_calls_the_receiver_with_its_self_the_sender_and_the_args);
  tcase_add_test(tc, send_calls_receivers_in_connection_order);
  tcase_add_test(
      tc, connect_of_the_same_identity_returns_eexist_and_changes_nothing);
  tcase_add_test(tc, connect_rejects_a_null_signal_a_null_fn_and_unknown_flags);
  tcase_add_test(tc, connect_with_a_dying_self_or_sender_returns_enoent);
  tcase_add_test(
      tc, disconnect_returns_one_then_zero_and_the_receiver_is_not_called);
  tcase_add_test(tc, disconnect_matches_the_whole_identity);
  tcase_add_test(tc, disconnect_of_a_dead_weak_receiver_removes_it);
  tcase_add_test(tc, connect_uid_identity_is_the_uid_and_the_sender);
  tcase_add_test(tc, connect_uid_rejects_a_null_or_empty_uid);
  tcase_add_test(tc, connect_uid_copies_the_uid);
  tcase_add_test(tc, disconnect_uid_returns_one_then_zero);
  tcase_add_test(tc, accessors_and_calls_reject_null_and_half_set_arguments);
  tcase_add_test(tc, connect_with_a_finalized_self_or_sender_returns_enoent);
  suite_add_tcase(s, tc);

  tc = tcase_create("filtering");
  tcase_add_test(tc, any_sender_receiver_is_called_for_every_send);
  tcase_add_test(tc, sender_receiver_is_called_only_for_its_sender);
  tcase_add_test(tc, send_with_a_null_sender_calls_only_any_sender_receivers);
  tcase_add_test(
      tc, sender_and_any_sender_receivers_are_merged_in_connection_order);
  tcase_add_test(tc, has_listeners_follows_sender_filtering);
  tcase_add_test(tc, has_listeners_ignores_dead_and_blocked_receivers);
  tcase_add_test(tc, has_receivers_answers_as_has_listeners_does);
  tcase_add_test(tc, block_without_memory_for_its_record_fails_and_changes_nothing);
  suite_add_tcase(s, tc);

  tc = tcase_create("lifetime");
  tcase_add_test(tc, signal_does_not_keep_a_weak_receiver_alive);
  tcase_add_test(tc, weak_receiver_whose_self_died_is_not_called);
  tcase_add_test(tc, dead_weak_receiver_is_dropped_by_sweep);
  tcase_add_test(tc, dead_weak_receiver_is_dropped_by_a_send);
  tcase_add_test(tc, plain_function_receiver_is_never_swept);
  tcase_add_test(tc, receiver_object_nobody_keeps_is_never_called);
  tcase_add_test(tc, strong_receiver_keeps_self_alive_until_disconnected);
  tcase_add_test(tc, strong_receiver_is_released_when_the_signal_dies);
  tcase_add_test(tc,
                 strong_receiver_for_a_sender_is_released_when_the_sender_dies);
  tcase_add_test(tc, strong_flag_with_a_null_self_is_released_safely);
  tcase_add_test(tc, signal_never_keeps_a_sender_alive);
  tcase_add_test(tc, sender_death_drops_its_connections);
  tcase_add_test(tc,
                 new_sender_at_a_freed_senders_address_inherits_no_receivers);
  tcase_add_test(tc,
                 new_receiver_at_a_dead_receivers_address_is_a_new_connection);
  tcase_add_test(
      tc, disconnect_and_block_never_find_a_dead_receiver_through_its_address);
  tcase_add_test(tc,
                 nested_sends_deeper_than_the_pins_keep_sender_and_signal_alive);
  tcase_add_test(
      tc, everything_is_released_once_all_objects_and_signals_are_dropped);
  suite_add_tcase(s, tc);

  tc = tcase_create("send");
  tcase_add_test(tc, once_receiver_is_called_only_once);
  tcase_add_test(tc, once_receiver_that_sends_recursively_is_not_called_again);
  tcase_add_test(
      tc, once_receiver_called_by_a_recursive_send_is_skipped_by_the_outer_one);
  tcase_add_test(tc, once_strong_receiver_releases_self_after_its_call);
  tcase_add_test(tc, send_returns_the_number_of_receivers_called);
  tcase_add_test(tc, send_stops_at_the_first_non_zero_return_and_says_so);
  tcase_add_test(tc, send_rejects_a_null_signal);
  tcase_add_test(tc, send_robust_calls_every_receiver_and_returns_the_failures);
  tcase_add_test(
      tc, robust_and_accumulate_skip_dead_blocked_and_spent_once_receivers);
  tcase_add_test(tc, send_accumulate_stops_when_the_accumulator_says_so);
  tcase_add_test(tc, blocked_receiver_is_skipped_until_unblocked_as_many_times);
  tcase_add_test(tc, block_of_an_unknown_connection_returns_enoent);
  tcase_add_test(tc, block_uid_and_unblock_uid_count_like_block);
  suite_add_tcase(s, tc);

  tc = tcase_create("reentrancy");
  tcase_add_loop_test(
      tc, receiver_disconnecting_itself_is_called_this_time_only, 0, 2);
  tcase_add_loop_test(
      tc, receiver_disconnecting_a_later_receiver_prevents_its_call, 0, 2);
  tcase_add_loop_test(tc, receiver_killing_a_later_receiver_prevents_its_call,
                      0, 2);
  tcase_add_loop_test(
      tc, receiver_killing_itself_keeps_its_memory_until_it_returns, 0, 2);
  tcase_add_loop_test(tc, receiver_killing_the_sender_during_a_send_is_safe, 0,
                      2);
  tcase_add_loop_test(tc, receiver_killing_the_signal_during_a_send_is_safe, 0,
                      2);
  tcase_add_loop_test(
      tc, receiver_connecting_a_new_receiver_does_not_call_it_in_this_send, 0,
      2);
  tcase_add_loop_test(
      tc, receiver_sending_recursively_calls_every_receiver_in_order, 0, 2);
  tcase_add_loop_test(
      tc, receiver_disconnected_by_a_recursive_send_is_not_called_by_the_outer,
      0, 2);
  tcase_add_loop_test(
      tc, receiver_disconnecting_and_reconnecting_everyone_is_safe, 0, 2);
  suite_add_tcase(s, tc);

  tc = tcase_create("diagnostics");
  tcase_add_test(
      tc, leak_guard_warns_once_naming_the_signal_when_a_sender_exceeds_it);
  tcase_add_test(tc, leak_guard_counts_the_any_sender_list);
  tcase_add_test(tc, leak_guard_counts_per_sender_not_in_total);
  tcase_add_test(tc, leak_guard_is_off_when_the_limit_is_zero);
  tcase_add_test(tc, leak_guard_default_limit_is_hark_default_max_receivers);
  tcase_add_test(tc, hark_debug_receivers_reports_a_receiver_nobody_keeps);
  tcase_add_test(tc, without_hark_debug_a_receiver_nobody_keeps_is_silent);
  suite_add_tcase(s, tc);

  tc = tcase_create("oom");
  tcase_add_test(
      tc, connect_reports_allocation_failure_at_every_point_and_stays_usable);
  tcase_add_test(
      tc,
      connect_uid_reports_allocation_failure_at_every_point_and_stays_usable);
  tcase_add_test(tc, signal_new_reports_allocation_failure_at_every_point);
  tcase_add_test(
      tc, send_after_a_connect_reports_allocation_failure_and_stays_usable);
  tcase_add_test(
      tc, has_listeners_without_memory_for_the_list_answers_all_the_same);
  tcase_add_test(
      tc, table_and_index_growth_report_allocation_failure_and_change_nothing);
  tcase_add_test(
      tc, hark_debug_receivers_connect_fails_cleanly_at_every_allocation);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run(signal_suite()); }
