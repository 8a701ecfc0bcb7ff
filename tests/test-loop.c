/* The loop layer: posts across threads, deferred sends, loop-bound and
 * asynchronous receivers, idle sweeping, close, allocation failure. Every
 * test that makes a loop ends with uv_loop_close() == 0. No assertion
 * depends on timing: threads are joined, the loop is stepped. */
#include "util.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

/* ---- fixtures ---------------------------------------------------------- */

static uv_loop_t uvl;
static hark_loop *hl;
static uv_thread_t loop_thread;

static void loop_open(void) {
  test_alloc_install();
  ck_assert_int_eq(uv_loop_init(&uvl), 0);
  hl = hark_loop_new(&uvl);
  ck_assert_ptr_nonnull(hl);
  loop_thread = uv_thread_self();
}

/* Closes, drops, runs the loop dry: uv_loop_close must then succeed. */
static void loop_finish(void) {
  hark_loop_close(hl);
  hark_unref(hl);
  hl = NULL;
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
}

static void step(void) { uv_run(&uvl, UV_RUN_NOWAIT); }

static bool on_loop_thread(void) {
  uv_thread_t me = uv_thread_self();
  return uv_thread_equal(&me, &loop_thread);
}

static hark_loop_stats stats(void) {
  hark_loop_stats s;
  ck_assert_int_eq(hark_loop_get_stats(hl, &s), 0);
  return s;
}

/* The big counts, scaled by HARK_TEST_SCALE for slow runs (valgrind). */
static long scaled(long n) { return test_scaled(n); }

/* Payloads: a posting thread's number and its sequence number. */
typedef struct msg {
  int thread;
  long seq;
} msg;

static _Atomic long freed;
static _Atomic long received;
static _Atomic int off_thread_calls;

static msg *msg_new(int thread, long seq) {
  msg *m = malloc(sizeof(*m));
  ck_assert_ptr_nonnull(m);
  m->thread = thread;
  m->seq = seq;
  return m;
}

static void msg_free(void *p) {
  atomic_fetch_add(&freed, 1);
  free(p);
}

static int count_receiver(void *self, void *sender, void *args) {
  if (!on_loop_thread())
    atomic_fetch_add(&off_thread_calls, 1);
  atomic_fetch_add(&received, 1);
  return 0;
}

static void reset_counts(void) {
  atomic_store(&freed, 0);
  atomic_store(&received, 0);
  atomic_store(&off_thread_calls, 0);
}

/* ---- life cycle -------------------------------------------------------- */

START_TEST(new_loop_closes_so_that_uv_loop_close_returns_zero) {
  loop_open();
  ck_assert_ptr_eq(hark_loop_uv(hl), &uvl);
  ck_assert_int_eq(hark_live_count("hark_loop"), 1);
  loop_finish();
  ck_assert_int_eq(hark_live_count("hark_loop"), 0);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(close_is_idempotent_and_memory_waits_for_the_handles) {
  loop_open();
  hark_loop_close(hl);
  hark_loop_close(hl);
  hark_unref(hl); /* last reference before the close callbacks ran */
  hl = NULL;
  ck_assert_int_gt(test_blocks(), 0);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(dropping_the_last_reference_without_close_closes_the_loop) {
  loop_open();
  hark_unref(hl);
  hl = NULL;
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

static void *unref_thread(void *arg) {
  hark_unref(arg);
  return NULL;
}

START_TEST(dropping_the_last_reference_on_another_thread_closes_the_loop) {
  loop_open();
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, unref_thread, hl), 0);
  hl = NULL;
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  pthread_join(t, NULL);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(bad_arguments_are_einval) {
  loop_open();
  hark_signal *sig = hark_signal_new("sig");
  hark_loop_stats s;
  ck_assert_ptr_null(hark_loop_new(NULL));
  ck_assert_ptr_null(hark_loop_uv(NULL));
  ck_assert_int_eq(hark_loop_get_stats(NULL, &s), HARK_EINVAL);
  ck_assert_int_eq(hark_loop_get_stats(hl, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_loop_set_queue_limit(hl, 0), HARK_EINVAL);
  ck_assert_int_eq(hark_loop_set_queue_limit(NULL, 1), HARK_EINVAL);
  ck_assert_int_eq(hark_post(NULL, sig, NULL, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_post(hl, NULL, NULL, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_send_later(hl, NULL, NULL, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_send_async(hl, NULL, NULL, NULL, NULL, NULL),
                   HARK_EINVAL);
  hark_loop_close(NULL);
  hark_token_done(NULL, 0);
  ck_assert_ptr_null(hark_token_take());
  s = stats();
  ck_assert_uint_eq(s.posted + s.delivered + s.dropped + s.rejected, 0);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- posts ------------------------------------------------------------- */

START_TEST(post_from_the_loop_thread_is_delivered_later_not_synchronously) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("sig");
  ck_assert_int_eq(hark_connect(sig, count_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_post(hl, sig, NULL, msg_new(0, 0), msg_free), 0);
  ck_assert_int_eq(received, 0);
  ck_assert_int_eq(freed, 0);
  step();
  ck_assert_int_eq(received, 1);
  ck_assert_int_eq(freed, 1);
  hark_loop_stats s = stats();
  ck_assert_uint_eq(s.posted, 1);
  ck_assert_uint_eq(s.delivered, 1);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* Four producers: every post delivered once, on the loop thread, in each
 * producer's order, with its payload intact. */
#define PRODUCERS 4
static long per_thread;
static long next_seq[PRODUCERS];
static hark_signal *flood_sig;
static _Atomic long eagain_retries;

static int flood_receiver(void *self, void *sender, void *args) {
  msg *m = args;
  if (!on_loop_thread())
    atomic_fetch_add(&off_thread_calls, 1);
  ck_assert_int_ge(m->thread, 0);
  ck_assert_int_lt(m->thread, PRODUCERS);
  ck_assert_int_eq(m->seq, next_seq[m->thread]);
  next_seq[m->thread]++;
  if (atomic_fetch_add(&received, 1) + 1 == per_thread * PRODUCERS)
    hark_loop_close(hl);
  return 0;
}

static void *producer(void *arg) {
  int id = (int)(intptr_t)arg;
  for (long i = 0; i < per_thread; i++) {
    msg *m = msg_new(id, i);
    int err;
    while ((err = hark_post(hl, flood_sig, NULL, m, msg_free)) == HARK_EAGAIN) {
      atomic_fetch_add(&eagain_retries, 1);
      sched_yield();
    }
    ck_assert_int_eq(err, 0);
  }
  return NULL;
}

START_TEST(posts_from_four_threads_all_arrive_once_in_order_on_the_loop) {
  loop_open();
  reset_counts();
  per_thread = scaled(100000);
  flood_sig = hark_signal_new("flood");
  ck_assert_int_eq(hark_connect(flood_sig, flood_receiver, NULL, NULL, 0), 0);
  pthread_t t[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, producer, (void *)(intptr_t)i),
                     0);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  for (int i = 0; i < PRODUCERS; i++)
    pthread_join(t[i], NULL);
  long total = per_thread * PRODUCERS;
  ck_assert_int_eq(received, total);
  ck_assert_int_eq(freed, total);
  ck_assert_int_eq(off_thread_calls, 0);
  for (int i = 0; i < PRODUCERS; i++)
    ck_assert_int_eq(next_seq[i], per_thread);
  hark_loop_stats s = stats();
  ck_assert_uint_eq(s.posted, total);
  ck_assert_uint_eq(s.delivered, total);
  ck_assert_uint_eq(s.dropped, 0);
  ck_assert_uint_eq(s.rejected, eagain_retries);
  hark_unref(flood_sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* Producers post until told HARK_ECANCELED while the loop closes after
 * some deliveries: every accepted post is delivered or dropped, and its
 * args freed exactly once. */
static _Atomic long accepted;

static int closing_receiver(void *self, void *sender, void *args) {
  if (atomic_fetch_add(&received, 1) + 1 == scaled(2000))
    hark_loop_close(hl);
  return 0;
}

static void *racing_producer(void *arg) {
  for (long i = 0;; i++) {
    msg *m = msg_new((int)(intptr_t)arg, i);
    int err = hark_post(hl, flood_sig, NULL, m, msg_free);
    if (err == 0) {
      atomic_fetch_add(&accepted, 1);
      continue;
    }
    free(m); /* refused: still ours */
    if (err == HARK_ECANCELED)
      return NULL;
    ck_assert_int_eq(err, HARK_EAGAIN);
    sched_yield();
  }
}

START_TEST(posts_racing_close_are_delivered_or_dropped_never_lost) {
  loop_open();
  reset_counts();
  ck_assert_int_eq(hark_loop_set_queue_limit(hl, 64), 0);
  flood_sig = hark_signal_new("race");
  ck_assert_int_eq(hark_connect(flood_sig, closing_receiver, NULL, NULL, 0), 0);
  pthread_t t[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++)
    ck_assert_int_eq(
        pthread_create(&t[i], NULL, racing_producer, (void *)(intptr_t)i), 0);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  for (int i = 0; i < PRODUCERS; i++)
    pthread_join(t[i], NULL);
  hark_loop_stats s = stats();
  ck_assert_int_eq(freed, accepted);
  ck_assert_uint_eq(s.posted, accepted);
  ck_assert_uint_eq(s.delivered + s.dropped, accepted);
  ck_assert_uint_eq(s.delivered, received);
  ck_assert_int_eq(hark_post(hl, flood_sig, NULL, NULL, NULL), HARK_ECANCELED);
  hark_unref(flood_sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(post_whose_sender_dies_while_queued_is_dropped_and_counted) {
  loop_open();
  reset_counts();
  atomic_store(&test_finalized, 0);
  hark_signal *sig = hark_signal_new("sig");
  test_obj *sender = hark_new(&test_obj_type);
  ck_assert_int_eq(hark_connect(sig, count_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_post(hl, sig, sender, msg_new(0, 0), msg_free), 0);
  ck_assert_int_eq(hark_post(hl, sig, NULL, msg_new(0, 1), msg_free), 0);
  hark_unref(sender); /* the queue holds it weakly: it dies now */
  ck_assert_int_eq(test_finalized, 1);
  step();
  ck_assert_int_eq(received, 1);
  ck_assert_int_eq(freed, 2);
  hark_loop_stats s = stats();
  ck_assert_uint_eq(s.dropped, 1);
  ck_assert_uint_eq(s.delivered, 1);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(post_holds_the_signal_until_delivery) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("sig");
  ck_assert_int_eq(hark_connect(sig, count_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_post(hl, sig, NULL, msg_new(0, 0), msg_free), 0);
  hark_unref(sig);
  ck_assert_int_eq(hark_live_count("hark_signal"), 1); /* the post's */
  step();
  ck_assert_int_eq(received, 1);
  ck_assert_int_eq(freed, 1);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- the post path's memory, shared references, wakeups ---------------- */

/* Which (signal, message) the receivers saw, in order. */
static int seen_sig[1024];
static long seen_seq[1024];
static int nseen;

static int tag_receiver_0(void *self, void *sender, void *args) {
  seen_sig[nseen] = 0;
  seen_seq[nseen++] = ((msg *)args)->seq;
  return 0;
}

static int tag_receiver_1(void *self, void *sender, void *args) {
  seen_sig[nseen] = 1;
  seen_seq[nseen++] = ((msg *)args)->seq;
  return 0;
}

/* Posts cut from blocks of items: many more than a block, over several
 * drains, all arrive in order, and the blocks go back as they empty (the
 * loop keeps at most one partly used block), not at close. */
START_TEST(posts_over_many_blocks_arrive_in_order_and_their_memory_goes_back) {
  loop_open();
  reset_counts();
  nseen = 0;
  hark_signal *sig = hark_signal_new("blocks");
  ck_assert_int_eq(hark_connect(sig, tag_receiver_0, NULL, NULL, 0), 0);
  /* a first send builds the signal's lookup cache: not the queue's */
  ck_assert_int_eq(hark_send(sig, NULL, &(msg){0, -1}), 1);
  nseen = 0;
  long base = test_blocks();
  long seq = 0;
  for (int round = 0; round < 5; round++) {
    for (int i = 0; i < 150; i++, seq++)
      ck_assert_int_eq(hark_post(hl, sig, NULL, msg_new(0, seq), msg_free), 0);
    ck_assert_int_gt(test_blocks(), base); /* the queued posts' */
    step();
    ck_assert_int_eq(nseen, seq);
    /* Of the blocks, only the one being cut from (not used up yet) may
     * stay once its posts have run. */
    ck_assert_int_le(test_blocks(), base + 1);
  }
  for (long i = 0; i < seq; i++) {
    ck_assert_int_eq(seen_sig[i], 0);
    ck_assert_int_eq(seen_seq[i], i);
  }
  ck_assert_int_eq(freed, seq);
  hark_loop_stats st = stats();
  ck_assert_uint_eq(st.posted, seq);
  ck_assert_uint_eq(st.delivered, seq);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* Posts of one (signal, sender) queued back to back share one reference to
 * the signal and one weak reference to the sender: interleaved signals
 * and senders still arrive in post order, each signal lives exactly until
 * its last queued post has run, and a run whose sender died is dropped
 * post by post and counted. */
START_TEST(runs_of_one_signal_and_sender_keep_order_and_lifetimes) {
  loop_open();
  reset_counts();
  nseen = 0;
  atomic_store(&test_finalized, 0);
  hark_signal *a = hark_signal_new("run-a");
  hark_signal *b = hark_signal_new("run-b");
  ck_assert_int_eq(hark_connect(a, tag_receiver_0, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(b, tag_receiver_1, NULL, NULL, 0), 0);
  test_obj *s1 = hark_new(&test_obj_type);
  test_obj *s2 = hark_new(&test_obj_type);
  /* a a b b a(s1) a(s1) a(s2) a(s2) a a: runs of 2 */
  static const int sig_of[10] = {0, 0, 1, 1, 0, 0, 0, 0, 0, 0};
  void *sender_of[10] = {NULL, NULL, NULL, NULL, s1, s1, s2, s2, NULL, NULL};
  for (int i = 0; i < 10; i++)
    ck_assert_int_eq(
        hark_post(hl, sig_of[i] ? b : a, sender_of[i], msg_new(0, i), msg_free),
        0);
  hark_unref(b); /* only its queued posts hold it now */
  ck_assert_int_eq(hark_live_count("hark_signal"), 2);
  hark_unref(s2); /* its two posts are dropped */
  ck_assert_int_eq(test_finalized, 1);
  step();
  ck_assert_int_eq(hark_live_count("hark_signal"), 1); /* b went */
  ck_assert_int_eq(nseen, 8);
  static const long want[8] = {0, 1, 2, 3, 4, 5, 8, 9};
  for (int i = 0; i < 8; i++) {
    ck_assert_int_eq(seen_seq[i], want[i]);
    ck_assert_int_eq(seen_sig[i], sig_of[want[i]]);
  }
  ck_assert_int_eq(freed, 10);
  hark_loop_stats st = stats();
  ck_assert_uint_eq(st.delivered, 8);
  ck_assert_uint_eq(st.dropped, 2);

  /* A run does not reach across drains: a post of a, drained, then
   * another, after the caller let a go: it is held until it has run. */
  ck_assert_int_eq(hark_post(hl, a, NULL, msg_new(0, 10), msg_free), 0);
  step();
  ck_assert_int_eq(hark_post(hl, a, NULL, msg_new(0, 11), msg_free), 0);
  hark_unref(a);
  ck_assert_int_eq(hark_live_count("hark_signal"), 1);
  step();
  ck_assert_int_eq(hark_live_count("hark_signal"), 0);
  ck_assert_int_eq(nseen, 10);
  ck_assert_int_eq(seen_seq[9], 11);
  hark_unref(s1);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* A run cut short by a close inside one of its receivers: the rest is
 * dropped, its shared references are still released once, and the block
 * the loop was cutting from goes with the last item. */
static int close_on_third(void *self, void *sender, void *args) {
  if (atomic_fetch_add(&received, 1) + 1 == 3)
    hark_loop_close(hl);
  return 0;
}

START_TEST(close_inside_a_run_releases_its_shared_references_once) {
  loop_open();
  reset_counts();
  atomic_store(&test_finalized, 0);
  hark_signal *sig = hark_signal_new("run-close");
  ck_assert_int_eq(hark_connect(sig, close_on_third, NULL, NULL, 0), 0);
  test_obj *sender = hark_new(&test_obj_type);
  for (int i = 0; i < 10; i++)
    ck_assert_int_eq(hark_post(hl, sig, sender, msg_new(0, i), msg_free), 0);
  hark_unref(sig);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(received, 3);
  ck_assert_int_eq(freed, 10);
  hark_loop_stats st = stats();
  ck_assert_uint_eq(st.delivered, 3);
  ck_assert_uint_eq(st.dropped, 7);
  ck_assert_int_eq(hark_live_count("hark_signal"), 0);
  hark_unref(sender);
  ck_assert_int_eq(test_finalized, 1);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* Posts that find the queue empty wake the loop after leaving the queue's
 * lock; the loop closes meanwhile, over and over: close waits for a wakeup
 * in flight before closing the handle (run under ASan and TSan). */
static _Atomic bool wake_stop;

static int close_soon(void *self, void *sender, void *args) {
  if (atomic_fetch_add(&received, 1) + 1 == 50)
    hark_loop_close(hl);
  return 0;
}

static void *waking_producer(void *arg) {
  for (long i = 0; !atomic_load(&wake_stop); i++) {
    msg *m = msg_new((int)(intptr_t)arg, i);
    int err = hark_post(hl, flood_sig, NULL, m, msg_free);
    if (err == 0) {
      atomic_fetch_add(&accepted, 1);
      sched_yield(); /* let the loop drain: the next post wakes it again */
      continue;
    }
    free(m);
    if (err == HARK_ECANCELED)
      return NULL;
    ck_assert_int_eq(err, HARK_EAGAIN);
  }
  return NULL;
}

START_TEST(close_racing_wakeups_from_other_threads) {
  test_alloc_install();
  for (int round = 0; round < scaled(30); round++) {
    ck_assert_int_eq(uv_loop_init(&uvl), 0);
    hl = hark_loop_new(&uvl);
    ck_assert_ptr_nonnull(hl);
    loop_thread = uv_thread_self();
    reset_counts();
    atomic_store(&accepted, 0);
    atomic_store(&wake_stop, false);
    flood_sig = hark_signal_new("wakeups");
    ck_assert_int_eq(hark_connect(flood_sig, close_soon, NULL, NULL, 0), 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
      ck_assert_int_eq(
          pthread_create(&t[i], NULL, waking_producer, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
    atomic_store(&wake_stop, true);
    for (int i = 0; i < 2; i++)
      pthread_join(t[i], NULL);
    hark_loop_stats st = stats();
    ck_assert_int_eq(freed, accepted);
    ck_assert_uint_eq(st.delivered + st.dropped, accepted);
    hark_unref(flood_sig);
    hark_unref(hl);
    hl = NULL;
    ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
    ck_assert_int_eq(uv_loop_close(&uvl), 0);
  }
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(full_queue_answers_eagain_keeps_args_with_caller_and_recovers) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("sig");
  ck_assert_int_eq(hark_connect(sig, count_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_loop_set_queue_limit(hl, 3), 0);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(hark_post(hl, sig, NULL, msg_new(0, i), msg_free), 0);
  msg *extra = msg_new(0, 3);
  ck_assert_int_eq(hark_post(hl, sig, NULL, extra, msg_free), HARK_EAGAIN);
  ck_assert_int_eq(freed, 0);
  ck_assert_uint_eq(stats().rejected, 1);
  step();
  ck_assert_int_eq(received, 3);
  ck_assert_int_eq(hark_post(hl, sig, NULL, extra, msg_free), 0);
  step();
  ck_assert_int_eq(received, 4);
  ck_assert_int_eq(freed, 4);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(post_after_close_is_canceled_and_args_stay_with_caller) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("sig");
  hark_loop_close(hl);
  ck_assert_int_eq(hark_post(hl, sig, NULL, NULL, msg_free), HARK_ECANCELED);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, NULL, msg_free),
                   HARK_ECANCELED);
  ck_assert_int_eq(freed, 0);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(close_drops_pending_posts_and_frees_their_args) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("sig");
  ck_assert_int_eq(hark_connect(sig, count_receiver, NULL, NULL, 0), 0);
  for (int i = 0; i < 5; i++)
    ck_assert_int_eq(hark_post(hl, sig, NULL, msg_new(0, i), msg_free), 0);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, msg_new(0, 5), msg_free), 0);
  hark_loop_close(hl);
  ck_assert_int_eq(freed, 6);
  ck_assert_int_eq(received, 0);
  ck_assert_uint_eq(stats().dropped, 6);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

static int close_in_receiver(void *self, void *sender, void *args) {
  atomic_fetch_add(&received, 1);
  hark_loop_close(hl);
  hark_loop_close(hl);
  return 0;
}

START_TEST(close_from_inside_a_receiver_drops_the_rest_of_the_batch) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("sig");
  ck_assert_int_eq(hark_connect(sig, close_in_receiver, NULL, NULL, 0), 0);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(hark_post(hl, sig, NULL, msg_new(0, i), msg_free), 0);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(received, 1);
  ck_assert_int_eq(freed, 3);
  hark_loop_stats s = stats();
  ck_assert_uint_eq(s.delivered, 1);
  ck_assert_uint_eq(s.dropped, 2);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- the lock-free post path: races, bound, flow -------------------------
 * Posts claim units of the loop's current block and push themselves on a
 * lock-free stack; a post of the same signal, sender and args_free as the
 * one it lands on shares that one's references (a run). These tests start
 * their threads together at a barrier so that the races happen. */

#define MIXERS 8
static pthread_barrier_t mix_start;
static hark_signal *mix_sig[2];
static test_obj *mix_sender[2];
static long mix_next[MIXERS];
static _Atomic long mix_freed_by[2];
static _Atomic long mix_bad;

/* Which of the two args_free functions frees a message is part of it:
 * a post that joined the wrong run would be freed by the other one. */
typedef struct mix_msg {
  int thread;
  long seq;
  int sig, sender, freer;
} mix_msg;

static void mix_free(mix_msg *m, int freer) {
  if (m->freer != freer)
    atomic_fetch_add(&mix_bad, 1);
  atomic_fetch_add(&mix_freed_by[freer], 1);
  free(m);
}
static void mix_free_0(void *p) { mix_free(p, 0); }
static void mix_free_1(void *p) { mix_free(p, 1); }

static int mix_receiver(void *self, void *sender, void *args) {
  mix_msg *m = args;
  int which = (int)(intptr_t)self; /* connected with the signal's number */
  if (!on_loop_thread() || m->sig != which || m->thread < 0 ||
      m->thread >= MIXERS || m->seq != mix_next[m->thread] ||
      (m->sender < 2 ? sender != mix_sender[m->sender] : sender != NULL))
    atomic_fetch_add(&mix_bad, 1);
  mix_next[m->thread] = m->seq + 1;
  atomic_fetch_add(&received, 1);
  return 0;
}

static int mix_receiver_0(void *self, void *sender, void *args) {
  return mix_receiver((void *)0, sender, args);
}
static int mix_receiver_1(void *self, void *sender, void *args) {
  return mix_receiver((void *)1, sender, args);
}

/* Message i of a thread: runs of 1 to 4 posts of one (signal, sender,
 * args_free), changing in a pattern that differs per thread. */
static mix_msg *mix_new(int thread, long i) {
  mix_msg *m = malloc(sizeof(*m));
  ck_assert_ptr_nonnull(m);
  long run = (i + thread) / (1 + (i + thread) % 4);
  *m = (mix_msg){thread, i, (int)(run & 1), (int)((run >> 1) % 3),
                 (int)((run >> 2) & 1)};
  return m;
}

static int mix_post(mix_msg *m) {
  return hark_post(hl, mix_sig[m->sig],
                   m->sender < 2 ? mix_sender[m->sender] : NULL, m,
                   m->freer ? mix_free_1 : mix_free_0);
}

static void *mix_producer(void *arg) {
  int id = (int)(intptr_t)arg;
  pthread_barrier_wait(&mix_start);
  for (long i = 0; i < per_thread; i++) {
    mix_msg *m = mix_new(id, i);
    int err;
    while ((err = mix_post(m)) == HARK_EAGAIN) {
      atomic_fetch_add(&eagain_retries, 1);
      sched_yield();
    }
    ck_assert_int_eq(err, 0);
  }
  return NULL;
}

static void mix_open(void) {
  loop_open();
  reset_counts();
  atomic_store(&mix_bad, 0);
  atomic_store(&mix_freed_by[0], 0);
  atomic_store(&mix_freed_by[1], 0);
  atomic_store(&eagain_retries, 0);
  memset(mix_next, 0, sizeof(mix_next));
  mix_sig[0] = hark_signal_new("mix-0");
  mix_sig[1] = hark_signal_new("mix-1");
  ck_assert_int_eq(hark_connect(mix_sig[0], mix_receiver_0, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(mix_sig[1], mix_receiver_1, NULL, NULL, 0), 0);
  mix_sender[0] = hark_new(&test_obj_type);
  mix_sender[1] = hark_new(&test_obj_type);
}

static void mix_close(void) {
  hark_unref(mix_sig[0]);
  hark_unref(mix_sig[1]);
  hark_unref(mix_sender[0]);
  hark_unref(mix_sender[1]);
  loop_finish();
  ck_assert_int_eq(hark_live_count(NULL), 0);
  ck_assert_int_eq(test_blocks(), 0);
}

/* Eight threads, started together, post runs of two signals, three
 * senders and two args_free functions: every post arrives once, on the
 * loop thread, in its thread's order, with its own signal, sender and
 * args_free (a post sharing the wrong run's references would not). */
START_TEST(posts_of_mixed_runs_from_eight_threads_keep_order_and_identity) {
  mix_open();
  per_thread = scaled(40000);
  /* small enough that the producers meet the bound too */
  ck_assert_int_eq(hark_loop_set_queue_limit(hl, 3000), 0);
  ck_assert_int_eq(pthread_barrier_init(&mix_start, NULL, MIXERS), 0);
  pthread_t t[MIXERS];
  for (int i = 0; i < MIXERS; i++)
    ck_assert_int_eq(
        pthread_create(&t[i], NULL, mix_producer, (void *)(intptr_t)i), 0);
  long total = per_thread * MIXERS;
  while (atomic_load(&received) < total)
    uv_run(&uvl, UV_RUN_ONCE);
  for (int i = 0; i < MIXERS; i++)
    pthread_join(t[i], NULL);
  pthread_barrier_destroy(&mix_start);
  ck_assert_int_eq(mix_bad, 0);
  ck_assert_int_eq(received, total);
  ck_assert_int_eq(mix_freed_by[0] + mix_freed_by[1], total);
  for (int i = 0; i < MIXERS; i++)
    ck_assert_int_eq(mix_next[i], per_thread);
  hark_loop_stats s = stats();
  ck_assert_uint_eq(s.posted, total);
  ck_assert_uint_eq(s.delivered, total);
  ck_assert_uint_eq(s.dropped, 0);
  ck_assert_uint_eq(s.rejected, eagain_retries);
  mix_close();
}
END_TEST

/* Posts from one thread that alternate args_free on one signal: each is
 * freed by its own function, each run holds the signal until it has run. */
START_TEST(args_free_is_part_of_a_run) {
  mix_open();
  for (long i = 0; i < 300; i++) {
    mix_msg *m = malloc(sizeof(*m));
    *m = (mix_msg){0, i, 0, 2, (int)((i / 3) & 1)};
    ck_assert_int_eq(mix_post(m), 0);
  }
  step();
  ck_assert_int_eq(mix_bad, 0);
  ck_assert_int_eq(received, 300);
  ck_assert_int_eq(mix_freed_by[0], 150);
  ck_assert_int_eq(mix_freed_by[1], 150);
  mix_close();
}
END_TEST

/* The bound, with producers racing for its last places: the queue never
 * holds more than the limit, and none of its places is lost (the loop
 * thread can fill it up to exactly the limit afterwards). The limit is a
 * few blocks, so that posts count themselves in block by block first and
 * one by one near it. */
static _Atomic long bound_accepted;

static void *bound_producer(void *arg) {
  int id = (int)(intptr_t)arg;
  pthread_barrier_wait(&mix_start);
  for (long i = 0;; i++) {
    mix_msg *m = mix_new(id, i);
    int err = mix_post(m);
    if (err != 0) {
      free(m);
      ck_assert_int_eq(err, HARK_EAGAIN);
      return NULL;
    }
    atomic_fetch_add(&bound_accepted, 1);
  }
}

START_TEST(racing_producers_never_cross_the_bound_nor_lose_a_place) {
  mix_open();
  const long limit = 1000;
  for (int round = 0; round < scaled(20); round++) {
    atomic_store(&bound_accepted, 0);
    ck_assert_int_eq(hark_loop_set_queue_limit(hl, (size_t)limit), 0);
    ck_assert_int_eq(pthread_barrier_init(&mix_start, NULL, 4), 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
      ck_assert_int_eq(
          pthread_create(&t[i], NULL, bound_producer, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++)
      pthread_join(t[i], NULL);
    pthread_barrier_destroy(&mix_start);
    ck_assert_int_le(bound_accepted, limit);
    /* top up from here: exactly to the limit */
    for (long i = 0;; i++) {
      mix_msg *m = malloc(sizeof(*m));
      *m = (mix_msg){4, i, (int)(i & 1), 2, 0};
      int err = mix_post(m);
      if (err != 0) {
        free(m);
        ck_assert_int_eq(err, HARK_EAGAIN);
        break;
      }
      atomic_fetch_add(&bound_accepted, 1);
    }
    ck_assert_int_eq(bound_accepted, limit);
    hark_loop_stats s = stats();
    ck_assert_uint_eq(s.posted, (unsigned long long)limit * (round + 1));
    /* every thread's numbering starts again each round */
    memset(mix_next, 0, sizeof(mix_next));
    step();
    ck_assert_int_eq(received, limit * (round + 1));
  }
  ck_assert_int_eq(mix_bad, 0);
  ck_assert_int_eq(mix_freed_by[0] + mix_freed_by[1], received);
  mix_close();
}
END_TEST

/* Close while posts are in flight, over and over: threads released
 * together post until the loop is closed under them; each post is
 * delivered, dropped at close, or refused with its args left to its
 * caller; none is lost or freed twice, nothing stays. */
static _Atomic long race_accepted;

static void *closing_race_producer(void *arg) {
  int id = (int)(intptr_t)arg;
  pthread_barrier_wait(&mix_start);
  for (long i = 0;;) {
    mix_msg *m = mix_new(id, i);
    int err = mix_post(m);
    if (err == 0) {
      atomic_fetch_add(&race_accepted, 1);
      i++;
      continue;
    }
    free(m);
    if (err == HARK_ECANCELED)
      return NULL;
    ck_assert_int_eq(err, HARK_EAGAIN); /* the same one again */
    sched_yield();
  }
}

START_TEST(close_while_threads_post_loses_nothing_and_keeps_nothing) {
  test_alloc_install();
  for (int round = 0; round < scaled(40); round++) {
    mix_open();
    atomic_store(&race_accepted, 0);
    ck_assert_int_eq(hark_loop_set_queue_limit(hl, 500), 0);
    ck_assert_int_eq(pthread_barrier_init(&mix_start, NULL, 5), 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
      ck_assert_int_eq(pthread_create(&t[i], NULL, closing_race_producer,
                                      (void *)(intptr_t)i),
                       0);
    pthread_barrier_wait(&mix_start);
    for (int i = 0; i < round % 4; i++)
      uv_run(&uvl, UV_RUN_NOWAIT); /* a few drains first, or none */
    hark_loop_close(hl);
    for (int i = 0; i < 4; i++)
      pthread_join(t[i], NULL);
    pthread_barrier_destroy(&mix_start);
    hark_loop_stats s = stats();
    ck_assert_int_eq(mix_freed_by[0] + mix_freed_by[1], race_accepted);
    ck_assert_uint_eq(s.posted, race_accepted);
    ck_assert_uint_eq(s.delivered + s.dropped, race_accepted);
    ck_assert_int_eq(mix_bad, 0);
    mix_close();
  }
}
END_TEST

/* A thread posting far ahead of a loop that is not running (the flow
 * control path: it yields now and then) still queues every post, in
 * order, and the loop drains them all. */
static void *far_producer(void *arg) {
  for (long i = 0; i < per_thread; i++) {
    mix_msg *m = malloc(sizeof(*m));
    *m = (mix_msg){0, i, 0, 2, 0};
    ck_assert_int_eq(mix_post(m), 0);
  }
  return NULL;
}

START_TEST(thread_posting_far_ahead_of_the_loop_queues_everything) {
  mix_open();
  per_thread = 5 * 4096;
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, far_producer, NULL), 0);
  pthread_join(t, NULL);
  ck_assert_uint_eq(stats().posted, per_thread);
  step();
  ck_assert_int_eq(received, per_thread);
  ck_assert_int_eq(mix_bad, 0);
  mix_close();
}
END_TEST

/* A flood of posts that never lets the queue run dry does not keep the
 * loop in one callback: a timer still fires (and stops the flood). */
static _Atomic bool flood_stop;

static void *flooder(void *arg) {
  for (long i = 0; !atomic_load(&flood_stop); i++) {
    mix_msg *m = malloc(sizeof(*m));
    *m = (mix_msg){1, i, 0, 2, 0};
    if (mix_post(m) != 0) {
      free(m);
      sched_yield();
    }
  }
  return NULL;
}

static void stop_flood(uv_timer_t *t) {
  atomic_store(&flood_stop, true);
  uv_close((uv_handle_t *)t, NULL);
}

START_TEST(flood_of_posts_lets_the_other_handles_run) {
  mix_open();
  atomic_store(&flood_stop, false);
  uv_timer_t timer;
  ck_assert_int_eq(uv_timer_init(&uvl, &timer), 0);
  ck_assert_int_eq(uv_timer_start(&timer, stop_flood, 20, 0), 0);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, flooder, NULL), 0);
  while (!atomic_load(&flood_stop))
    uv_run(&uvl, UV_RUN_ONCE);
  pthread_join(t, NULL);
  step();
  ck_assert_int_eq(mix_bad, 0);
  ck_assert_uint_eq(stats().delivered, received);
  mix_close();
}
END_TEST

/* ---- hark_send_later ----------------------------------------------------- */

static int order[8];
static int norder;

static int order_receiver(void *self, void *sender, void *args) {
  order[norder++] = ((msg *)args)->thread;
  return 0;
}

START_TEST(send_later_runs_in_order_on_the_next_iteration_not_before) {
  loop_open();
  reset_counts();
  norder = 0;
  hark_signal *sig = hark_signal_new("later");
  ck_assert_int_eq(hark_connect(sig, order_receiver, NULL, NULL, 0), 0);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(hark_send_later(hl, sig, NULL, msg_new(i, 0), msg_free),
                     0);
  ck_assert_int_eq(norder, 0);
  /* UV_RUN_ONCE would block in poll were the idle handle not active
   * while deferred work waits. */
  uv_run(&uvl, UV_RUN_ONCE);
  ck_assert_int_eq(norder, 3);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(order[i], i);
  ck_assert_int_eq(freed, 3);
  ck_assert_uint_eq(stats().delivered, 3);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

static hark_signal *later_sig;

static int chaining_receiver(void *self, void *sender, void *args) {
  atomic_fetch_add(&received, 1);
  if (received < 3)
    ck_assert_int_eq(hark_send_later(hl, later_sig, NULL, NULL, NULL), 0);
  return 0;
}

START_TEST(send_later_from_a_deferred_receiver_waits_for_the_next_iteration) {
  loop_open();
  reset_counts();
  later_sig = hark_signal_new("chain");
  ck_assert_int_eq(hark_connect(later_sig, chaining_receiver, NULL, NULL, 0),
                   0);
  ck_assert_int_eq(hark_send_later(hl, later_sig, NULL, NULL, NULL), 0);
  for (int i = 1; i <= 3; i++) {
    uv_run(&uvl, UV_RUN_ONCE);
    ck_assert_int_eq(received, i);
  }
  step();
  ck_assert_int_eq(received, 3);
  hark_unref(later_sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

static void *send_later_thread(void *arg) {
  return (void *)(intptr_t)hark_send_later(hl, arg, NULL, NULL, NULL);
}

START_TEST(send_later_off_the_loop_thread_is_einval) {
  loop_open();
  hark_signal *sig = hark_signal_new("sig");
  pthread_t t;
  void *ret;
  ck_assert_int_eq(pthread_create(&t, NULL, send_later_thread, sig), 0);
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, HARK_EINVAL);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(send_later_queue_is_bounded_too) {
  loop_open();
  hark_signal *sig = hark_signal_new("sig");
  ck_assert_int_eq(hark_loop_set_queue_limit(hl, 2), 0);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, NULL, NULL), 0);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, NULL, NULL), 0);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, NULL, NULL), HARK_EAGAIN);
  uv_run(&uvl, UV_RUN_ONCE);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, NULL, NULL), 0);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- loop-bound receivers ----------------------------------------------- */

static void *copy_msg(void *args) {
  msg *m = args;
  return msg_new(m->thread, m->seq);
}

static void *send_thread(void *arg) {
  msg m = {7, 42};
  return (void *)(intptr_t)hark_send(arg, NULL, &m);
}

static int bound_receiver(void *self, void *sender, void *args) {
  if (!on_loop_thread())
    atomic_fetch_add(&off_thread_calls, 1);
  ck_assert_int_eq(((msg *)args)->seq, 42);
  if (self != NULL)
    ((test_obj *)self)->calls++;
  atomic_fetch_add(&received, 1);
  return 0;
}

START_TEST(loop_bound_receiver_runs_on_the_loop_thread_for_a_send_elsewhere) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("bound");
  ck_assert_int_eq(hark_signal_set_args_ops(sig, copy_msg, msg_free), 0);
  test_obj *self = hark_new(&test_obj_type);
  ck_assert_int_eq(hark_connect_loop(sig, hl, bound_receiver, self, NULL, 0),
                   0);
  pthread_t t;
  void *ret;
  ck_assert_int_eq(pthread_create(&t, NULL, send_thread, sig), 0);
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 1); /* counted as called */
  ck_assert_int_eq(received, 0);
  step();
  ck_assert_int_eq(received, 1);
  ck_assert_int_eq(self->calls, 1);
  ck_assert_int_eq(off_thread_calls, 0);
  ck_assert_int_eq(freed, 1); /* the copy */
  hark_unref(self);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(loop_bound_receiver_is_called_directly_from_the_loop_thread) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("bound");
  ck_assert_int_eq(hark_signal_set_args_ops(sig, copy_msg, msg_free), 0);
  ck_assert_int_eq(hark_connect_loop(sig, hl, bound_receiver, NULL, NULL, 0),
                   0);
  msg m = {7, 42};
  ck_assert_int_eq(hark_send(sig, NULL, &m), 1);
  ck_assert_int_eq(received, 1);
  ck_assert_int_eq(freed, 0); /* no copy was made */
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(queued_loop_bound_call_is_skipped_when_its_receiver_dies) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("bound");
  ck_assert_int_eq(hark_signal_set_args_ops(sig, copy_msg, msg_free), 0);
  test_obj *self = hark_new(&test_obj_type);
  ck_assert_int_eq(hark_connect_loop(sig, hl, bound_receiver, self, NULL, 0),
                   0);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, send_thread, sig), 0);
  pthread_join(t, NULL);
  hark_unref(self);
  step();
  ck_assert_int_eq(received, 0);
  ck_assert_int_eq(freed, 1);
  ck_assert_uint_eq(stats().dropped, 1);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- asynchronous receivers --------------------------------------------- */

static hark_token *tokens[8];
static int ntokens;
static int done_calls;
static int done_failures;

static void on_done(void *data, int failures) {
  ck_assert(on_loop_thread());
  ck_assert_ptr_eq(data, &done_calls);
  done_calls++;
  done_failures = failures;
}

static int async_receiver(void *self, void *sender, void *args) {
  hark_token *tok = hark_token_take();
  ck_assert_ptr_nonnull(tok);
  tokens[ntokens++] = tok;
  return 1; /* ignored: the token decides */
}

static int plain_receiver(void *self, void *sender, void *args) { return 0; }

static int failing_receiver(void *self, void *sender, void *args) { return 5; }

static void reset_async(void) {
  ntokens = 0;
  done_calls = 0;
  done_failures = -1;
}

typedef struct completion {
  hark_token *tok;
  int result;
} completion;

static void *complete_thread(void *arg) {
  completion *c = arg;
  hark_token_done(c->tok, c->result);
  return NULL;
}

static void complete_on_thread(hark_token *tok, int result) {
  completion c = {tok, result};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, complete_thread, &c), 0);
  pthread_join(t, NULL);
}

static int double_take_receiver(void *self, void *sender, void *args) {
  hark_token *tok = hark_token_take();
  ck_assert_ptr_nonnull(tok);
  ck_assert_ptr_null(hark_token_take());
  tokens[ntokens++] = tok;
  return 0;
}

START_TEST(async_receivers_completing_out_of_order_on_other_threads) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("async");
  ck_assert_int_eq(hark_connect(sig, async_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(sig, failing_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(sig, double_take_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(sig, plain_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   0);
  ck_assert_int_eq(ntokens, 2);
  step();
  ck_assert_int_eq(done_calls, 0);
  complete_on_thread(tokens[1], 3); /* the second first, failing */
  step();
  ck_assert_int_eq(done_calls, 0);
  complete_on_thread(tokens[0], 0);
  step();
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 2); /* failing_receiver and token 2 */
  step();
  ck_assert_int_eq(done_calls, 1);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(async_send_without_tokens_calls_on_done_later_not_synchronously) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("async");
  ck_assert_int_eq(hark_connect(sig, failing_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(sig, count_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   0);
  ck_assert_int_eq(done_calls, 0);
  hark_unref(sig); /* held until on_done */
  uv_run(&uvl, UV_RUN_ONCE);
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 1);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(token_completed_on_the_loop_thread_inside_the_receiver) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("async");
  ck_assert_int_eq(hark_connect(sig, async_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   0);
  hark_token_done(tokens[0], 0);
  ck_assert_int_eq(done_calls, 0);
  step();
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 0);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

static hark_signal *inner_sig;
static int inner_token_seen;

static int inner_receiver(void *self, void *sender, void *args) {
  if (hark_token_take() != NULL)
    inner_token_seen++;
  return 0;
}

static int outer_receiver(void *self, void *sender, void *args) {
  hark_send(inner_sig, NULL, NULL);
  return 0;
}

START_TEST(receiver_of_a_plain_send_nested_in_an_async_send_gets_no_token) {
  loop_open();
  reset_async();
  inner_token_seen = 0;
  hark_signal *sig = hark_signal_new("outer");
  inner_sig = hark_signal_new("inner");
  ck_assert_int_eq(hark_connect(sig, outer_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(inner_sig, inner_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   0);
  ck_assert_int_eq(inner_token_seen, 0);
  hark_send(inner_sig, NULL, NULL); /* outside any async send */
  ck_assert_int_eq(inner_token_seen, 0);
  step();
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 0);
  hark_unref(inner_sig);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* Completion from libuv's own thread pool: each receiver queues work
 * whose work_cb completes the token; on_done closes the loop. */
static void work_cb(uv_work_t *req) { hark_token_done(req->data, 0); }

static void after_work_cb(uv_work_t *req, int status) { free(req); }

static int pool_receiver(void *self, void *sender, void *args) {
  uv_work_t *req = malloc(sizeof(*req));
  req->data = hark_token_take();
  ck_assert_ptr_nonnull(req->data);
  ck_assert_int_eq(uv_queue_work(&uvl, req, work_cb, after_work_cb), 0);
  return 0;
}

static void on_done_close(void *data, int failures) {
  done_calls++;
  done_failures = failures;
  hark_loop_close(hl);
}

START_TEST(async_receivers_completed_from_the_uv_thread_pool) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("pool");
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(hark_connect_uid(sig, (char[]){(char)('a' + i), 0},
                                      pool_receiver, NULL, NULL, 0),
                     0);
  ck_assert_int_eq(
      hark_send_async(hl, sig, NULL, NULL, on_done_close, &done_calls), 0);
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 0);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(never_completed_async_receiver_is_reported_at_close) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("lonely-signal");
  ck_assert_int_eq(hark_connect(sig, async_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   0);
  hark_unref(sig);

  fflush(stderr);
  int saved = dup(2);
  FILE *err = tmpfile();
  ck_assert_ptr_nonnull(err);
  dup2(fileno(err), 2);
  hark_loop_close(hl);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  char buf[512] = {0};
  rewind(err);
  size_t n = fread(buf, 1, sizeof(buf) - 1, err);
  fclose(err);
  ck_assert_msg(n > 0 && strstr(buf, "lonely-signal") != NULL,
                "no report naming the signal: \"%s\"", buf);

  ck_assert_int_eq(done_calls, 0); /* from the close callbacks */
  hark_unref(hl);
  hl = NULL;
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 1);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
  /* completing after the loop is gone only frees the token */
  complete_on_thread(tokens[0], 0);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

static int closing_async_receiver(void *self, void *sender, void *args) {
  tokens[ntokens++] = hark_token_take();
  hark_loop_close(hl);
  ck_assert_ptr_null(hark_token_take());
  return 0;
}

START_TEST(close_inside_an_async_receiver_finishes_the_send_after_return) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("async");
  ck_assert_int_eq(hark_connect(sig, closing_async_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(sig, plain_receiver, NULL, NULL, 0), 0);
  fflush(stderr);
  int saved = dup(2);
  int devnull = open("/dev/null", O_WRONLY);
  dup2(devnull, 2);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   0);
  dup2(saved, 2);
  close(saved);
  close(devnull);
  ck_assert_int_eq(done_calls, 0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   HARK_ECANCELED);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 1);
  hark_token_done(tokens[0], 0);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

static void *send_async_thread(void *arg) {
  return (void *)(intptr_t)hark_send_async(hl, arg, NULL, NULL, NULL, NULL);
}

START_TEST(send_async_off_the_loop_thread_is_einval) {
  loop_open();
  hark_signal *sig = hark_signal_new("sig");
  pthread_t t;
  void *ret;
  ck_assert_int_eq(pthread_create(&t, NULL, send_async_thread, sig), 0);
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, HARK_EINVAL);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- housekeeping -------------------------------------------------------- */

START_TEST(dead_weak_receivers_are_swept_in_idle_time_without_a_send) {
  loop_open();
  hark_signal *sig = hark_signal_new("idle");
  test_obj *self = hark_new(&test_obj_type);
  ck_assert_int_eq(hark_connect(sig, count_receiver, self, NULL, HARK_WEAK), 0);
  ck_assert_uint_eq(hark_signal_receivers(sig), 1);
  step();
  ck_assert_uint_eq(stats().swept, 0);
  hark_unref(self);
  ck_assert_uint_eq(hark_signal_receivers(sig), 1); /* lazily */
  step();
  ck_assert_uint_eq(hark_signal_receivers(sig), 0);
  ck_assert_uint_eq(stats().swept, 1);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- allocation failure ------------------------------------------------- */

static bool failure_met(void) {
  long f = atomic_load(&test_fail_at);
  return f != 0 && atomic_load(&test_allocs) >= f;
}

static void oom_loop_finish(uv_loop_t *loop, hark_loop *l) {
  if (l != NULL) {
    hark_loop_close(l);
    hark_unref(l);
  }
  ck_assert_int_eq(uv_run(loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(loop), 0);
}

static int new_scenario(void *arg) {
  uv_loop_t loop;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  hark_loop *l = hark_loop_new(&loop);
  ck_assert(l != NULL || failure_met());
  oom_loop_finish(&loop, l);
  return l != NULL;
}

START_TEST(loop_new_fails_cleanly_at_every_allocation) {
  test_alloc_install();
  ck_assert_int_ge(test_oom_loop(new_scenario, NULL), 1);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* A signal, a loop, two posts (one delivered, one left for close to
 * drop) and a deferred send; any step may meet the failure. */
static int post_scenario(void *arg) {
  reset_counts();
  uv_loop_t loop;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  hark_loop *l = hark_loop_new(&loop);
  hark_signal *sig = hark_signal_new("oom");
  long posted = 0;
  if (l == NULL || sig == NULL)
    goto out;
  int err = hark_connect(sig, count_receiver, NULL, NULL, 0);
  if (err != 0) {
    ck_assert_int_eq(err, HARK_ENOMEM);
    goto out;
  }
  for (int i = 0; i < 3; i++) {
    msg *m = msg_new(0, i);
    err = i == 2 ? hark_send_later(l, sig, NULL, m, msg_free)
                 : hark_post(l, sig, NULL, m, msg_free);
    if (err != 0) {
      ck_assert_int_eq(err, HARK_ENOMEM);
      free(m);
    } else {
      posted++;
    }
    if (i == 0)
      uv_run(&loop, UV_RUN_NOWAIT);
  }
out:
  oom_loop_finish(&loop, l);
  ck_assert_int_eq(freed, posted);
  hark_unref(sig);
  bool met = failure_met();
  ck_assert(met || (l != NULL && sig != NULL && posted == 3));
  return !met;
}

START_TEST(post_and_close_fail_cleanly_at_every_allocation) {
  test_alloc_install();
  ck_assert_int_ge(test_oom_loop(post_scenario, NULL), 3);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* Runs of posts of two signals from another thread, so that posts cut
 * units, start runs and join them, and move when the unit after theirs
 * is taken: any allocation may fail. A post that fails changes nothing
 * (its args stay the caller's); the others arrive in order. */
typedef struct runs_oom {
  hark_loop *l;
  hark_signal *sig[2];
  long accepted, refused;
} runs_oom;

static int runs_oom_receiver(void *self, void *sender, void *args) {
  atomic_fetch_add(&received, 1);
  return 0;
}

static void *runs_oom_thread(void *arg) {
  runs_oom *o = arg;
  for (int i = 0; i < 600; i++) {
    msg *m = msg_new(0, i);
    int err = hark_post(o->l, o->sig[(i / 3) & 1], NULL, m, msg_free);
    if (err == 0) {
      o->accepted++;
    } else {
      ck_assert_int_eq(err, HARK_ENOMEM);
      free(m);
      o->refused++;
    }
  }
  return NULL;
}

static int runs_scenario(void *arg) {
  reset_counts();
  uv_loop_t loop;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  runs_oom o = {hark_loop_new(&loop), {NULL, NULL}, 0, 0};
  o.sig[0] = hark_signal_new("oom-run-0");
  o.sig[1] = hark_signal_new("oom-run-1");
  if (o.l == NULL || o.sig[0] == NULL || o.sig[1] == NULL)
    goto out;
  if (hark_connect(o.sig[0], runs_oom_receiver, NULL, NULL, 0) != 0 ||
      hark_connect(o.sig[1], runs_oom_receiver, NULL, NULL, 0) != 0)
    goto out;
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, runs_oom_thread, &o), 0);
  pthread_join(t, NULL);
  ck_assert(o.refused == 0 || failure_met());
  uv_run(&loop, UV_RUN_NOWAIT);
  /* a send itself may meet the failure (its lookup cache): the receiver
   * is not called, the post is still done with */
  ck_assert(received == o.accepted || failure_met());
  ck_assert_int_eq(freed, o.accepted);
  hark_loop_stats s;
  ck_assert_int_eq(hark_loop_get_stats(o.l, &s), 0);
  ck_assert_uint_eq(s.posted, o.accepted);
out:
  oom_loop_finish(&loop, o.l);
  hark_unref(o.sig[0]);
  hark_unref(o.sig[1]);
  bool met = failure_met();
  ck_assert(met || o.accepted == 600);
  return !met;
}

START_TEST(runs_of_posts_fail_cleanly_at_every_allocation) {
  test_alloc_install();
  ck_assert_int_ge(test_oom_loop(runs_scenario, NULL), 5);
  ck_assert_int_eq(test_blocks(), 0);
  ck_assert_uint_eq(hark_live_count(NULL), 0);
}
END_TEST

static int async_scenario(void *arg) {
  reset_async();
  uv_loop_t loop;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  hark_loop *l = hark_loop_new(&loop);
  hark_signal *sig = hark_signal_new("oom-async");
  if (l == NULL || sig == NULL)
    goto out;
  if (hark_connect(sig, failing_receiver, NULL, NULL, 0) != 0)
    goto out;
  int err = hark_send_async(l, sig, NULL, NULL, on_done, &done_calls);
  if (err != 0)
    ck_assert_int_eq(err, HARK_ENOMEM);
  uv_run(&loop, UV_RUN_NOWAIT);
  ck_assert_int_eq(done_calls, err == 0);
out:
  oom_loop_finish(&loop, l);
  hark_unref(sig);
  return !failure_met();
}

START_TEST(send_async_fails_cleanly_at_every_allocation) {
  test_alloc_install();
  loop_thread = uv_thread_self();
  ck_assert_int_ge(test_oom_loop(async_scenario, NULL), 1);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- more loop-bound receivers --------------------------------------------
 */

/* A HARK_ONCE | HARK_STRONG loop-bound receiver whose self only the
 * connection keeps: a send from another thread queues its one call and
 * counts it as called, so the call must run on the loop even though the
 * connection (and with it the strong reference) went at the send. */
START_TEST(once_strong_loop_bound_receiver_sent_elsewhere_is_called_once) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("bound-once");
  ck_assert_int_eq(hark_signal_set_args_ops(sig, copy_msg, msg_free), 0);
  test_obj *self = hark_new(&test_obj_type);
  ck_assert_int_eq(hark_connect_loop(sig, hl, bound_receiver, self, NULL,
                                     HARK_STRONG | HARK_ONCE),
                   0);
  hark_unref(self); /* the connection keeps it */
  ck_assert_uint_eq(hark_live_count("test_obj"), 1);
  pthread_t t;
  void *ret;
  ck_assert_int_eq(pthread_create(&t, NULL, send_thread, sig), 0);
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 1);          /* counted as called */
  ck_assert_uint_eq(hark_signal_receivers(sig), 0); /* once: gone */
  step();
  ck_assert_int_eq(received, 1);
  ck_assert_int_eq(off_thread_calls, 0);
  ck_assert_int_eq(freed, 1);
  ck_assert_uint_eq(stats().dropped, 0);
  /* once called, nothing holds self any more */
  ck_assert_uint_eq(hark_live_count("test_obj"), 0);
  /* a second send calls nothing */
  ck_assert_int_eq(pthread_create(&t, NULL, send_thread, sig), 0);
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 0);
  step();
  ck_assert_int_eq(received, 1);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* Without args ops a queued call gets the sender's args pointer as is. */
static msg shared_msg = {7, 42};

static void *send_shared_thread(void *arg) {
  return (void *)(intptr_t)hark_send(arg, NULL, &shared_msg);
}

static void *seen_args;

static int args_receiver(void *self, void *sender, void *args) {
  seen_args = args;
  atomic_fetch_add(&received, 1);
  return 0;
}

START_TEST(loop_bound_call_without_args_ops_passes_the_args_pointer) {
  loop_open();
  reset_counts();
  seen_args = NULL;
  hark_signal *sig = hark_signal_new("bound-raw");
  ck_assert_int_eq(hark_connect_loop(sig, hl, args_receiver, NULL, NULL, 0), 0);
  pthread_t t;
  void *ret;
  ck_assert_int_eq(pthread_create(&t, NULL, send_shared_thread, sig), 0);
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 1);
  step();
  ck_assert_int_eq(received, 1);
  ck_assert_ptr_eq(seen_args, &shared_msg);
  ck_assert_int_eq(freed, 0);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* A queued call the loop refuses (full queue, closed loop) is not counted
 * as called, and the copy of its args is freed at once. */
START_TEST(loop_bound_call_refused_by_a_full_or_closed_loop_is_not_counted) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("bound-full");
  ck_assert_int_eq(hark_signal_set_args_ops(sig, copy_msg, msg_free), 0);
  ck_assert_int_eq(hark_connect_loop(sig, hl, bound_receiver, NULL, NULL, 0),
                   0);
  ck_assert_int_eq(hark_loop_set_queue_limit(hl, 1), 0);
  pthread_t t;
  void *ret;
  ck_assert_int_eq(pthread_create(&t, NULL, send_thread, sig), 0);
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 1);
  ck_assert_int_eq(pthread_create(&t, NULL, send_thread, sig), 0);
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 0); /* refused: not called */
  ck_assert_int_eq(freed, 1);              /* its copy, freed at once */
  ck_assert_uint_eq(stats().rejected, 1);
  step();
  ck_assert_int_eq(received, 1);
  ck_assert_int_eq(freed, 2);
  hark_loop_close(hl);
  ck_assert_int_eq(pthread_create(&t, NULL, send_thread, sig), 0);
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 0); /* canceled: not called */
  ck_assert_int_eq(freed, 3);
  ck_assert_int_eq(received, 1);
  hark_unref(sig); /* the connection still holds the loop */
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- more life cycle ---------------------------------------------------- */

static void *close_thread(void *arg) {
  hark_loop_close(arg);
  return NULL;
}

START_TEST(close_off_the_loop_thread_is_ignored) {
  loop_open();
  reset_counts();
  hark_signal *sig = hark_signal_new("sig");
  ck_assert_int_eq(hark_connect(sig, count_receiver, NULL, NULL, 0), 0);
  fflush(stderr);
  int saved = dup(2);
  FILE *err = tmpfile();
  ck_assert_ptr_nonnull(err);
  dup2(fileno(err), 2);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, close_thread, hl), 0);
  pthread_join(t, NULL);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  char buf[512] = {0};
  rewind(err);
  size_t n = fread(buf, 1, sizeof(buf) - 1, err);
  fclose(err);
  ck_assert_msg(n > 0 && strstr(buf, "off the loop thread") != NULL,
                "no warning: \"%s\"", buf);
  /* still open: a post is accepted and delivered */
  ck_assert_int_eq(hark_post(hl, sig, NULL, msg_new(0, 0), msg_free), 0);
  step();
  ck_assert_int_eq(received, 1);
  ck_assert_int_eq(freed, 1);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(post_and_send_later_from_a_finalized_sender_are_einval) {
  loop_open();
  hark_signal *sig = hark_signal_new("sig");
  kept k;
  ck_assert_int_eq(hark_object_init(&k, &kept_type), 0);
  hark_unref(&k);
  ck_assert_int_eq(hark_post(hl, sig, &k, NULL, NULL), HARK_EINVAL);
  ck_assert_int_eq(hark_send_later(hl, sig, &k, NULL, NULL), HARK_EINVAL);
  hark_loop_stats s = stats();
  ck_assert_uint_eq(s.posted + s.rejected, 0);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- more deferred work ------------------------------------------------- */

static int later_calls;

static int closing_later_receiver(void *self, void *sender, void *args) {
  later_calls++;
  hark_loop_close(hl);
  return 0;
}

START_TEST(deferred_receiver_closing_the_loop_drops_the_rest) {
  loop_open();
  reset_counts();
  later_calls = 0;
  hark_signal *sig = hark_signal_new("later-close");
  ck_assert_int_eq(hark_connect(sig, closing_later_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, msg_new(0, 1), msg_free), 0);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, msg_new(0, 2), msg_free), 0);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, msg_new(0, 3), msg_free), 0);
  step();
  ck_assert_int_eq(later_calls, 1);
  ck_assert_int_eq(freed, 3);
  hark_loop_stats s = stats();
  ck_assert_uint_eq(s.delivered, 1);
  ck_assert_uint_eq(s.dropped, 2);
  ck_assert_int_eq(hark_send_later(hl, sig, NULL, NULL, NULL), HARK_ECANCELED);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(later_calls, 1);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- more asynchronous receivers ---------------------------------------- */

START_TEST(async_sends_pending_together_finish_in_any_order) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("async-many");
  ck_assert_int_eq(hark_connect(sig, async_receiver, NULL, NULL, 0), 0);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                     0);
  ck_assert_int_eq(ntokens, 3);
  step();
  ck_assert_int_eq(done_calls, 0);
  complete_on_thread(tokens[1], 0); /* the middle one first */
  step();
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 0);
  complete_on_thread(tokens[2], 7); /* the newest */
  step();
  ck_assert_int_eq(done_calls, 2);
  ck_assert_int_eq(done_failures, 1);
  complete_on_thread(tokens[0], 0);
  step();
  ck_assert_int_eq(done_calls, 3);
  ck_assert_int_eq(done_failures, 0);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* Close with three tokens out: the one completed (its completion queued,
 * not yet run) counts by its result, the two never completed as failed. */
START_TEST(close_runs_queued_completions_and_fails_the_tokens_still_out) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("async-close");
  ck_assert_int_eq(hark_connect_uid(sig, "t0", async_receiver, NULL, NULL, 0),
                   0);
  ck_assert_int_eq(hark_connect_uid(sig, "t1", async_receiver, NULL, NULL, 0),
                   0);
  ck_assert_int_eq(hark_connect_uid(sig, "t2", async_receiver, NULL, NULL, 0),
                   0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   0);
  ck_assert_int_eq(ntokens, 3);
  complete_on_thread(tokens[2], 0); /* queued; the loop has not run it */
  fflush(stderr);
  int saved = dup(2);
  int devnull = open("/dev/null", O_WRONLY);
  dup2(devnull, 2);
  hark_loop_close(hl);
  dup2(saved, 2);
  close(saved);
  close(devnull);
  ck_assert_int_eq(done_calls, 0); /* from the close callbacks */
  hark_unref(hl);
  hl = NULL;
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 2);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
  complete_on_thread(tokens[0], 0); /* orphaned: only freed */
  complete_on_thread(tokens[1], 0);
  hark_unref(sig);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

START_TEST(close_before_an_async_sends_deferred_finish_reports_it_once) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("async-finish");
  ck_assert_int_eq(hark_connect(sig, failing_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   0);
  hark_loop_close(hl); /* its on_done was waiting for the next iteration */
  ck_assert_int_eq(done_calls, 0);
  hark_unref(hl);
  hl = NULL;
  ck_assert_int_eq(uv_run(&uvl, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 1);
  ck_assert_int_eq(uv_loop_close(&uvl), 0);
  hark_unref(sig);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

static int plain_closing_receiver(void *self, void *sender, void *args) {
  hark_loop_close(hl);
  return 0;
}

static int late_taker(void *self, void *sender, void *args) {
  ck_assert_ptr_null(hark_token_take()); /* the loop is closed */
  return 3;
}

START_TEST(no_token_once_an_earlier_receiver_closed_the_loop) {
  loop_open();
  reset_async();
  hark_signal *sig = hark_signal_new("async-late");
  ck_assert_int_eq(hark_connect(sig, plain_closing_receiver, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_connect(sig, late_taker, NULL, NULL, 0), 0);
  ck_assert_int_eq(hark_send_async(hl, sig, NULL, NULL, on_done, &done_calls),
                   0);
  ck_assert_int_eq(done_calls, 0);
  hark_unref(sig);
  loop_finish();
  ck_assert_int_eq(done_calls, 1);
  ck_assert_int_eq(done_failures, 1); /* late_taker's return value */
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- sweeping while a signal is being finalized elsewhere --------------- */

static _Atomic int blocker_in, blocker_go;

static int blocker(void *self, void *sender, void *args) {
  atomic_store(&blocker_in, 1);
  while (!atomic_load(&blocker_go))
    sched_yield();
  return 0;
}

static void *blocked_send_thread(void *arg) {
  return (void *)(intptr_t)hark_send(arg, NULL, NULL);
}

/* A send in flight on another thread, even one that never ends, delays
 * nothing: a signal whose last reference goes meanwhile is finalized at
 * once, on this thread, and the idle sweep still sweeps the others. */
START_TEST(idle_sweep_and_finalize_go_on_while_a_send_blocks_elsewhere) {
  loop_open();
  atomic_store(&blocker_in, 0);
  atomic_store(&blocker_go, 0);
  hark_signal *busy = hark_signal_new("busy");
  hark_signal *live = hark_signal_new("live");
  hark_signal *dying = hark_signal_new("dying");
  ck_assert_int_eq(hark_connect(busy, blocker, NULL, NULL, 0), 0);
  test_obj *self = hark_new(&test_obj_type);
  ck_assert_int_eq(hark_connect(live, count_receiver, self, NULL, 0), 0);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, blocked_send_thread, busy), 0);
  while (!atomic_load(&blocker_in))
    sched_yield();
  hark_unref(dying);
  ck_assert_uint_eq(hark_live_count("hark_signal"), 2);
  hark_unref(self);
  ck_assert_uint_eq(hark_live_count("test_obj"), 0);
  step();
  ck_assert_uint_eq(stats().swept, 1);
  ck_assert_uint_eq(hark_signal_receivers(live), 0);
  atomic_store(&blocker_go, 1);
  void *ret;
  pthread_join(t, &ret);
  ck_assert_int_eq((int)(intptr_t)ret, 1);
  ck_assert_uint_eq(hark_live_count("hark_signal"), 2);
  hark_unref(busy);
  hark_unref(live);
  loop_finish();
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

/* ---- more allocation failure --------------------------------------------- */

/* hark_token_take under allocation failure: NULL, and the receiver then
 * completes with its return value. */
static int maybe_async_receiver(void *self, void *sender, void *args) {
  hark_token *tok = hark_token_take();
  if (tok == NULL) {
    ck_assert(failure_met());
    return 4; /* completes now, failed */
  }
  tokens[ntokens++] = tok;
  return 0;
}

static int token_scenario(void *arg) {
  reset_async();
  uv_loop_t loop;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  hark_loop *l = hark_loop_new(&loop);
  hark_signal *sig = hark_signal_new("oom-token");
  int err = 0;
  if (l == NULL || sig == NULL)
    goto out;
  if (hark_connect(sig, maybe_async_receiver, NULL, NULL, 0) != 0 ||
      hark_connect(sig, plain_receiver, NULL, NULL, 0) != 0)
    goto out;
  err = hark_send_async(l, sig, NULL, NULL, on_done, &done_calls);
  if (err != 0) {
    ck_assert_int_eq(err, HARK_ENOMEM);
    ck_assert_int_eq(ntokens, 0);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  if (ntokens == 1) {
    ck_assert_int_eq(done_calls, 0);
    complete_on_thread(tokens[0], 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    ck_assert_int_eq(done_calls, 1);
    ck_assert_int_eq(done_failures, 0);
  } else if (err == 0) {
    ck_assert_int_eq(done_calls, 1);
    ck_assert_int_eq(done_failures, 1);
  } else {
    ck_assert_int_eq(done_calls, 0);
  }
out:
  oom_loop_finish(&loop, l);
  hark_unref(sig);
  bool met = failure_met();
  ck_assert(met || ntokens == 1);
  return !met;
}

START_TEST(token_take_fails_cleanly_at_every_allocation) {
  test_alloc_install();
  loop_thread = uv_thread_self();
  ck_assert_int_ge(test_oom_loop(token_scenario, NULL), 4);
  ck_assert_int_eq(test_blocks(), 0);
}
END_TEST

typedef struct oom_send {
  hark_signal *sig;
  int result;
} oom_send;

static void *oom_send_thread(void *arg) {
  oom_send *o = arg;
  msg m = {7, 42};
  o->result = hark_send(o->sig, NULL, &m);
  return NULL;
}

/* hark_connect_loop, then a send from another thread whose queued call
 * may meet the failure: the connect changes nothing, the send reports
 * HARK_ENOMEM or skips the call (not counted, its args copy freed). */
static int bound_scenario(void *arg) {
  reset_counts();
  uv_loop_t loop;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  hark_loop *l = hark_loop_new(&loop);
  hark_signal *sig = hark_signal_new("oom-bound");
  test_obj *self = hark_new(&test_obj_type);
  oom_send o = {sig, -1};
  if (l == NULL || sig == NULL || self == NULL)
    goto out;
  ck_assert_int_eq(hark_signal_set_args_ops(sig, copy_msg, msg_free), 0);
  int err = hark_connect_loop(sig, l, bound_receiver, self, NULL, 0);
  if (err != 0) {
    ck_assert_int_eq(err, HARK_ENOMEM);
    ck_assert_uint_eq(hark_signal_receivers(sig), 0);
    goto out;
  }
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, oom_send_thread, &o), 0);
  pthread_join(t, NULL);
  ck_assert(o.result == HARK_ENOMEM || o.result == 0 || o.result == 1);
  if (o.result != 1)
    ck_assert(failure_met());
  uv_run(&loop, UV_RUN_NOWAIT);
  ck_assert_int_eq(received, o.result == 1);
  ck_assert_int_eq(self->calls, o.result == 1);
  ck_assert_int_eq(freed, o.result != HARK_ENOMEM);
out:
  oom_loop_finish(&loop, l);
  hark_unref(self);
  hark_unref(sig);
  bool met = failure_met();
  ck_assert(met || o.result == 1);
  return !met;
}

START_TEST(connect_loop_and_queued_calls_fail_cleanly_at_every_allocation) {
  test_alloc_install();
  loop_thread = uv_thread_self();
  ck_assert_int_ge(test_oom_loop(bound_scenario, NULL), 5);
  ck_assert_int_eq(test_blocks(), 0);
  ck_assert_uint_eq(hark_live_count(NULL), 0);
}
END_TEST

/* ---- the suite ------------------------------------------------------------
 */

int main(void) {
  Suite *s = suite_create("loop");
  TCase *tc = tcase_create("life");
  tcase_add_test(tc, new_loop_closes_so_that_uv_loop_close_returns_zero);
  tcase_add_test(tc, close_is_idempotent_and_memory_waits_for_the_handles);
  tcase_add_test(tc, dropping_the_last_reference_without_close_closes_the_loop);
  tcase_add_test(tc,
                 dropping_the_last_reference_on_another_thread_closes_the_loop);
  tcase_add_test(tc, bad_arguments_are_einval);
  tcase_add_test(tc, close_off_the_loop_thread_is_ignored);
  tcase_add_test(tc, post_and_send_later_from_a_finalized_sender_are_einval);
  suite_add_tcase(s, tc);

  tc = tcase_create("post");
  tcase_add_test(
      tc, post_from_the_loop_thread_is_delivered_later_not_synchronously);
  tcase_add_test(tc,
                 posts_from_four_threads_all_arrive_once_in_order_on_the_loop);
  tcase_add_test(tc, posts_racing_close_are_delivered_or_dropped_never_lost);
  tcase_add_test(tc,
                 post_whose_sender_dies_while_queued_is_dropped_and_counted);
  tcase_add_test(tc, post_holds_the_signal_until_delivery);
  tcase_add_test(
      tc, posts_over_many_blocks_arrive_in_order_and_their_memory_goes_back);
  tcase_add_test(tc, runs_of_one_signal_and_sender_keep_order_and_lifetimes);
  tcase_add_test(tc, close_inside_a_run_releases_its_shared_references_once);
  tcase_add_test(tc, close_racing_wakeups_from_other_threads);
  tcase_add_test(tc,
                 full_queue_answers_eagain_keeps_args_with_caller_and_recovers);
  tcase_add_test(tc, post_after_close_is_canceled_and_args_stay_with_caller);
  tcase_add_test(tc, close_drops_pending_posts_and_frees_their_args);
  tcase_add_test(tc, close_from_inside_a_receiver_drops_the_rest_of_the_batch);
  suite_add_tcase(s, tc);

  tc = tcase_create("races");
  tcase_set_timeout(tc, 60);
  tcase_add_test(
      tc, posts_of_mixed_runs_from_eight_threads_keep_order_and_identity);
  tcase_add_test(tc, args_free_is_part_of_a_run);
  tcase_add_test(tc, racing_producers_never_cross_the_bound_nor_lose_a_place);
  tcase_add_test(tc, close_while_threads_post_loses_nothing_and_keeps_nothing);
  tcase_add_test(tc, thread_posting_far_ahead_of_the_loop_queues_everything);
  tcase_add_test(tc, flood_of_posts_lets_the_other_handles_run);
  suite_add_tcase(s, tc);

  tc = tcase_create("later");
  tcase_add_test(tc, send_later_runs_in_order_on_the_next_iteration_not_before);
  tcase_add_test(
      tc, send_later_from_a_deferred_receiver_waits_for_the_next_iteration);
  tcase_add_test(tc, send_later_off_the_loop_thread_is_einval);
  tcase_add_test(tc, send_later_queue_is_bounded_too);
  tcase_add_test(tc, deferred_receiver_closing_the_loop_drops_the_rest);
  suite_add_tcase(s, tc);

  tc = tcase_create("bound");
  tcase_add_test(
      tc, loop_bound_receiver_runs_on_the_loop_thread_for_a_send_elsewhere);
  tcase_add_test(tc,
                 loop_bound_receiver_is_called_directly_from_the_loop_thread);
  tcase_add_test(tc, queued_loop_bound_call_is_skipped_when_its_receiver_dies);
  tcase_add_test(tc,
                 once_strong_loop_bound_receiver_sent_elsewhere_is_called_once);
  tcase_add_test(tc, loop_bound_call_without_args_ops_passes_the_args_pointer);
  tcase_add_test(
      tc, loop_bound_call_refused_by_a_full_or_closed_loop_is_not_counted);
  suite_add_tcase(s, tc);

  tc = tcase_create("async");
  tcase_add_test(tc, async_receivers_completing_out_of_order_on_other_threads);
  tcase_add_test(
      tc, async_send_without_tokens_calls_on_done_later_not_synchronously);
  tcase_add_test(tc, token_completed_on_the_loop_thread_inside_the_receiver);
  tcase_add_test(
      tc, receiver_of_a_plain_send_nested_in_an_async_send_gets_no_token);
  tcase_add_test(tc, async_receivers_completed_from_the_uv_thread_pool);
  tcase_add_test(tc, never_completed_async_receiver_is_reported_at_close);
  tcase_add_test(tc,
                 close_inside_an_async_receiver_finishes_the_send_after_return);
  tcase_add_test(tc, send_async_off_the_loop_thread_is_einval);
  tcase_add_test(tc, async_sends_pending_together_finish_in_any_order);
  tcase_add_test(tc,
                 close_runs_queued_completions_and_fails_the_tokens_still_out);
  tcase_add_test(tc,
                 close_before_an_async_sends_deferred_finish_reports_it_once);
  tcase_add_test(tc, no_token_once_an_earlier_receiver_closed_the_loop);
  suite_add_tcase(s, tc);

  tc = tcase_create("housekeeping");
  tcase_add_test(tc, dead_weak_receivers_are_swept_in_idle_time_without_a_send);
  tcase_add_test(tc, idle_sweep_and_finalize_go_on_while_a_send_blocks_elsewhere);
  suite_add_tcase(s, tc);

  tc = tcase_create("oom");
  tcase_add_test(tc, loop_new_fails_cleanly_at_every_allocation);
  tcase_add_test(tc, post_and_close_fail_cleanly_at_every_allocation);
  tcase_add_test(tc, runs_of_posts_fail_cleanly_at_every_allocation);
  tcase_add_test(tc, send_async_fails_cleanly_at_every_allocation);
  tcase_add_test(tc, token_take_fails_cleanly_at_every_allocation);
  tcase_add_test(
      tc, connect_loop_and_queued_calls_fail_cleanly_at_every_allocation);
  suite_add_tcase(s, tc);
  return test_run(s);
}
