/* libuv integration: sends posted from any thread and delivered on the
 * loop thread, deferred sends, loop-bound receiver calls, asynchronous
 * receivers, idle-time sweeping, and a close after which uv_loop_close
 * returns 0.
 *
 * Handles: one uv_async_t wakes the loop for the cross-thread queue (it
 * is ref'd: an attached hark keeps uv_run going until hark_loop_close);
 * a uv_check_t (unref'd) drains hark_send_later's queue and sweeps dead
 * receivers; a uv_idle_t runs only while deferred work is queued, so the
 * poll phase does not block with work waiting. */
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>

/* ---- queued work ------------------------------------------------------ */

enum item_kind {
  ITEM_POST,   /* hark_post / hark_send_later: hark_send on the loop */
  ITEM_CALL,   /* dispatch_queue_call: one loop-bound receiver */
  ITEM_TOKEN,  /* hark_token_done: a completion handed to the loop */
  ITEM_FINISH, /* an async send whose receivers all completed at once */
};

/* One cache line: the loop thread reads one line per queued post. */
typedef struct item {
  struct item *next;
  union {
    hark_signal *sig;    /* POST: strong (see owns) */
    hark_receiver_fn fn; /* CALL */
  };
  hark__ctrl *sender_ctrl; /* POST, CALL: weak, NULL for none */
  void *args;
  void (*args_free)(void *args);
  hark__ctrl *self_ctrl; /* CALL: weak, NULL for none */
  void *hold;            /* CALL: strong, or NULL; dropped with the item */
  uint8_t kind;          /* enum item_kind */
  /* POST: holds the sig reference and the sender_ctrl weak one, for
   * itself and the posts right after it in the queue that share them
   * (!owns; see enqueue and run_batch) */
  bool owns;
  uint8_t slot; /* POST, CALL: its index in its block, or ITEM_OWN */
} item;

#define ITEM_OWN 0xff /* allocated on its own (hark_send_later) */

/* Posts and calls are cut from blocks of SLAB_ITEMS items instead of
 * being allocated one by one: one allocation per SLAB_ITEMS posts, and a
 * block is freed when the last of its items has been released. Items are
 * cut in order (under the loop's mu) and released in queue order (on the
 * loop thread), so blocks go in the order they came; beyond the items
 * queued or running, a loop holds at most the uncut rest of its current
 * block, which close lets go. Nothing stays once the queue is empty and
 * the loop closed. */
#define SLAB_ITEMS 64
#define LINE 64

typedef struct slab {
  /* Loop thread only, once the block's first item came through the
   * queue; the posting threads count what they cut in hl->slab_cut, so
   * that they never write the line the loop thread writes. */
  void *mem;         /* what hark__malloc returned */
  unsigned cap;      /* SLAB_ITEMS, or the final cut once close retired it */
  unsigned released; /* items given back */
  char pad[LINE - sizeof(void *) - 2 * sizeof(unsigned)];
  item items[SLAB_ITEMS]; /* each on a line of its own */
} slab;

_Static_assert(sizeof(item) <= LINE && LINE % sizeof(item) == 0 &&
                   offsetof(slab, items) == LINE,
               "an item per cache line");

/* A block, aligned on a cache line; NULL on ENOMEM. */
static slab *slab_new(void) {
  void *mem = hark__malloc(sizeof(slab) + LINE - 1);
  if (mem == NULL)
    return NULL;
  slab *sl = (slab *)(((uintptr_t)mem + LINE - 1) & ~(uintptr_t)(LINE - 1));
  sl->mem = mem;
  sl->cap = SLAB_ITEMS;
  sl->released = 0;
  return sl;
}

static slab *slab_of(item *it) {
  return HARK__CONTAINER_OF(it - it->slot, slab, items[0]);
}

/* Loop thread: gives an item's memory back. */
static void item_free(item *it) {
  if (it->slot == ITEM_OWN) {
    hark__free(it);
    return;
  }
  slab *sl = slab_of(it);
  if (++sl->released == sl->cap)
    hark__free(sl->mem);
}

typedef struct item_list {
  item *head, *tail;
} item_list;

static void list_append(item_list *l, item *it) {
  it->next = NULL;
  if (l->tail != NULL)
    l->tail->next = it;
  else
    l->head = it;
  l->tail = it;
}

static item *list_take(item_list *l) {
  item *head = l->head;
  l->head = l->tail = NULL;
  return head;
}

/* ---- asynchronous sends ---------------------------------------------- */

typedef struct async_send async_send;

struct hark_token {
  item node;               /* ITEM_TOKEN, queued by hark_token_done */
  hark_token *prev, *next; /* in as->tokens; tokens_mu */
  async_send *as;          /* NULL once orphaned by close; tokens_mu */
  hark_loop *hl;           /* valid while as is not NULL */
  int result;
  bool done; /* tokens_mu */
};

struct async_send {
  item node;               /* ITEM_FINISH */
  async_send *prev, *next; /* in hl->sends; loop thread */
  async_send *outer;       /* enclosing async send on this thread */
  hark_loop *hl;
  hark_signal *sig; /* strong until on_done */
  void (*on_done)(void *data, int failures);
  void *data;
  hark_token *tokens; /* taken, completion not yet run; tokens_mu */
  unsigned depth;     /* send depth its receivers run at */
  int pending;        /* tokens taken, not yet completed */
  int orphaned;       /* of those, orphaned by hark_loop_close */
  int failures;
  bool taken;    /* the receiver running took a token */
  bool returned; /* hark_send_robust has returned */
};

/* The async send whose receivers this thread is running, if any. */
static _Thread_local async_send *current_send;

/* Guards every token's done/as fields and each send's token list. It is
 * global, not per loop, because hark_token_done may run after the loop's
 * memory is gone: under this lock it learns (tok->as == NULL) that close
 * has orphaned the token, before it would touch the loop. Lock order:
 * tokens_mu, then a loop's mu. */
static pthread_mutex_t tokens_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- the loop object -------------------------------------------------- */

#define H_ASYNC 1u
#define H_CHECK 2u
#define H_IDLE 4u

struct hark_loop {
  hark_object base;
  uv_loop_t *uv;
  uv_thread_t thread;
  uv_async_t async;
  uv_check_t check;
  uv_idle_t idle;
  unsigned handles; /* H_* initialised and not yet closed; loop thread */
  /* The reference group (1) plus one per handle until its close
   * callback: the memory goes when this reaches zero. */
  _Atomic int holds;

  /* The posting threads' part, away from the loop thread's (below). */
  char pad0[64];
  pthread_mutex_t mu; /* guards what follows, up to the loop-thread part */
  bool closed;        /* written by the loop thread under mu (see shut) */
  bool orphaned;      /* last reference dropped off the loop thread */
  item_list queue;    /* posts, queued calls, token completions */
  size_t count;       /* posts and calls in queue (tokens are free) */
  slab *slab;         /* the block posts are cut from, NULL for none */
  unsigned slab_cut;  /* items cut from it */
  unsigned long long posted, rejected; /* by enqueue */
  /* Posting threads between deciding to wake the loop (under mu, loop
   * not closed) and their uv_async_send returning (outside mu). Goes up
   * only under mu while !closed; close waits for it to reach zero. */
  _Atomic unsigned sending;
  _Atomic size_t limit;

  /* loop thread only */
  char pad1[64];
  /* closed, as the loop thread reads it: a read of closed itself would
   * pull in the line that every post writes. */
  bool shut;
  item_list later;
  size_t later_count;
  async_send *sends; /* async sends not yet finished */
  bool sends_finished;
  unsigned long sweep_mark;

  /* Written by the loop thread only (see bump), read by any thread. */
  _Atomic unsigned long long delivered, dropped, swept, later_posted,
      later_rejected;
};

/* Adds n to a counter that only the loop thread writes: a plain load and
 * store, not a locked read-modify-write. */
static inline void bump(_Atomic unsigned long long *c, unsigned long long n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

static void release_hold(hark_loop *hl) {
  if (atomic_fetch_sub(&hl->holds, 1) == 1) {
    pthread_mutex_destroy(&hl->mu);
    hark__free(hl);
  }
}

static bool loop_is_current(hark_loop *hl) {
  uv_thread_t self = uv_thread_self();
  return hl != NULL && uv_thread_equal(&hl->thread, &self);
}

uv_loop_t *hark_loop_uv(hark_loop *hl) { return hl != NULL ? hl->uv : NULL; }

/* ---- running queued items -------------------------------------------- */

/* Loop thread: releases what a post or call holds of its own (a post's
 * references go in run_batch, as they may be shared), runs args_free,
 * gives the memory back. */
static void item_release(item *it) {
  if (it->kind == ITEM_CALL) {
    if (it->self_ctrl != NULL)
      hark__ctrl_weak_release(it->self_ctrl);
    if (it->sender_ctrl != NULL)
      hark__ctrl_weak_release(it->sender_ctrl);
    hark_unref(it->hold);
  }
  if (it->args_free != NULL)
    it->args_free(it->args);
  item_free(it);
}

/* Drops a run's references: its posts' signal and sender (weak). */
static void run_drop(hark_signal *sig, hark__ctrl *sender_ctrl) {
  if (sender_ctrl != NULL)
    hark__ctrl_weak_release(sender_ctrl);
  hark_unref(sig);
}

static void send_finish(hark_loop *hl, async_send *as) {
  if (as->prev != NULL)
    as->prev->next = as->next;
  else
    hl->sends = as->next;
  if (as->next != NULL)
    as->next->prev = as->prev;
  if (as->on_done != NULL)
    as->on_done(as->data, as->failures);
  hark_unref(as->sig);
  hark__free(as);
}

static void token_complete(hark_loop *hl, hark_token *tok) {
  async_send *as = tok->as;
  pthread_mutex_lock(&tokens_mu);
  if (tok->prev != NULL)
    tok->prev->next = tok->next;
  else
    as->tokens = tok->next;
  if (tok->next != NULL)
    tok->next->prev = tok->prev;
  pthread_mutex_unlock(&tokens_mu);
  if (tok->result != 0)
    as->failures++;
  as->pending--;
  hark__free(tok);
  /* After close, the close callback finishes every send. */
  if (as->pending == 0 && as->returned && !hl->shut)
    send_finish(hl, as);
}

static void run_item(hark_loop *hl, item *it) {
  switch (it->kind) {
  case ITEM_TOKEN:
    token_complete(hl, HARK__CONTAINER_OF(it, hark_token, node));
    return;
  case ITEM_FINISH:
    if (!hl->shut)
      send_finish(hl, HARK__CONTAINER_OF(it, async_send, node));
    return;
  case ITEM_POST:
  case ITEM_CALL:
    break;
  }
  if (hl->shut) {
    bump(&hl->dropped, 1);
    item_release(it);
    return;
  }
  void *sender = NULL, *self = NULL;
  bool live = true;
  if (it->sender_ctrl != NULL &&
      (sender = hark__ctrl_upgrade(it->sender_ctrl)) == NULL)
    live = false;
  if (live && it->self_ctrl != NULL &&
      (self = hark__ctrl_upgrade(it->self_ctrl)) == NULL)
    live = false;
  if (live) {
    if (it->kind == ITEM_POST)
      hark_send(it->sig, sender, it->args);
    else
      it->fn(self, sender, it->args);
    bump(&hl->delivered, 1);
  } else {
    bump(&hl->dropped, 1);
  }
  if (self != NULL)
    hark__unref(self);
  if (sender != NULL)
    hark__unref(sender);
  item_release(it);
}

/* Runs a batch taken off a queue, in order, without the lock. A receiver
 * may close the loop halfway: run_item then drops the rest (hl stays
 * valid: its memory waits for the handles' close callbacks, which run
 * later in uv_run).
 * Posts of one (signal, sender) queued back to back share one signal
 * reference and one weak sender reference, taken by the first of them
 * (owns) and dropped once the last of the run has gone. A run never spans
 * batches: a batch is a whole queue taken at once, and a post shares
 * only with the item before it in the same queue (enqueue). */
static void run_batch(hark_loop *hl, item *it) {
  hark_signal *run_sig = NULL;
  hark__ctrl *run_sender = NULL;
  while (it != NULL) {
    item *next = it->next;
    if (it->kind != ITEM_POST) {
      run_item(hl, it);
    } else {
      if (it->owns) {
        run_drop(run_sig, run_sender);
        run_sig = it->sig;
        run_sender = it->sender_ctrl;
      }
      /* run_item's work for a post, inline: the common case */
      void *sender = NULL;
      if (hl->shut ||
          (it->sender_ctrl != NULL &&
           (sender = hark__ctrl_upgrade(it->sender_ctrl)) == NULL)) {
        bump(&hl->dropped, 1);
      } else {
        hark_send(it->sig, sender, it->args);
        bump(&hl->delivered, 1);
        if (sender != NULL)
          hark__unref(sender);
      }
      if (it->args_free != NULL)
        it->args_free(it->args);
      item_free(it);
    }
    it = next;
  }
  run_drop(run_sig, run_sender);
}

static void sweep(hark_loop *hl) {
  unsigned long now = atomic_load(&hark__dead_receivers);
  if (now == hl->sweep_mark)
    return;
  hl->sweep_mark = now;
  bump(&hl->swept, hark__signal_sweep_all());
}

/* ---- libuv callbacks -------------------------------------------------- */

static void on_async(uv_async_t *handle) {
  hark_loop *hl = handle->data;
  pthread_mutex_lock(&hl->mu);
  item *batch = list_take(&hl->queue);
  hl->count = 0;
  bool orphaned = hl->orphaned;
  pthread_mutex_unlock(&hl->mu);
  if (orphaned)
    hark_loop_close(hl);
  run_batch(hl, batch);
}

static void on_check(uv_check_t *handle) {
  hark_loop *hl = handle->data;
  item *batch = list_take(&hl->later);
  hl->later_count = 0;
  run_batch(hl, batch);
  if (hl->shut)
    return;
  if (hl->later.head == NULL)
    uv_idle_stop(&hl->idle);
  sweep(hl);
}

static void on_idle(uv_idle_t *handle) { (void)handle; }

static void on_closed(uv_handle_t *handle) {
  hark_loop *hl = handle->data;
  /* Async sends still open at close end here, on the loop, after
   * hark_loop_close has returned: never inside hark_send_async. */
  if (!hl->sends_finished) {
    hl->sends_finished = true;
    while (hl->sends != NULL)
      send_finish(hl, hl->sends);
  }
  release_hold(hl);
}

static void close_handles(hark_loop *hl) {
  if (hl->handles & H_ASYNC)
    uv_close((uv_handle_t *)&hl->async, on_closed);
  if (hl->handles & H_CHECK)
    uv_close((uv_handle_t *)&hl->check, on_closed);
  if (hl->handles & H_IDLE)
    uv_close((uv_handle_t *)&hl->idle, on_closed);
  hl->handles = 0;
}

/* ---- life cycle ------------------------------------------------------- */

static void loop_finalize(void *obj) {
  hark_loop *hl = obj;
  bool here = loop_is_current(hl);
  pthread_mutex_lock(&hl->mu);
  bool closed = hl->closed;
  /* Dropped without hark_loop_close on another thread: only the loop
   * thread may close handles, so ask it to. */
  if (!closed && !here) {
    hl->orphaned = true;
    uv_async_send(&hl->async);
  }
  pthread_mutex_unlock(&hl->mu);
  if (!closed && here)
    hark_loop_close(hl);
  release_hold(hl);
}

static const hark_type loop_type = {"hark_loop", sizeof(hark_loop),
                                    loop_finalize, NULL};

static void add_handle(hark_loop *hl, uv_handle_t *h, unsigned bit) {
  h->data = hl;
  hl->handles |= bit;
  atomic_fetch_add(&hl->holds, 1);
}

hark_loop *hark_loop_new(uv_loop_t *loop) {
  if (loop == NULL)
    return NULL;
  hark_loop *hl = hark__calloc(1, sizeof(*hl));
  if (hl == NULL)
    return NULL;
  if (pthread_mutex_init(&hl->mu, NULL) != 0) {
    hark__free(hl);
    return NULL;
  }
  if (hark_object_init(hl, &loop_type) != 0) {
    pthread_mutex_destroy(&hl->mu);
    hark__free(hl);
    return NULL;
  }
  hl->uv = loop;
  hl->thread = uv_thread_self();
  atomic_init(&hl->holds, 1);
  atomic_init(&hl->limit, HARK_DEFAULT_QUEUE_LIMIT);
  hl->sweep_mark = atomic_load(&hark__dead_receivers);

  /* From here on a failure closes what was made; the close callbacks
   * free the memory when the caller next runs the loop. */
  if (uv_async_init(loop, &hl->async, on_async) != 0)
    goto fail;
  add_handle(hl, (uv_handle_t *)&hl->async, H_ASYNC);
  if (uv_check_init(loop, &hl->check) != 0)
    goto fail;
  add_handle(hl, (uv_handle_t *)&hl->check, H_CHECK);
  if (uv_idle_init(loop, &hl->idle) != 0)
    goto fail;
  add_handle(hl, (uv_handle_t *)&hl->idle, H_IDLE);
  if (uv_check_start(&hl->check, on_check) != 0)
    goto fail;
  uv_unref((uv_handle_t *)&hl->check);
  return hl;

fail:
  hl->closed = hl->shut = true;
  close_handles(hl);
  hark_unref(hl);
  return NULL;
}

int hark_loop_close(hark_loop *hl) {
  if (hl == NULL)
    return HARK_EINVAL;
  if (!loop_is_current(hl)) {
    hark__log(HARK_LOG_WARN,
              "hark_loop_close called off the loop thread; ignored");
    return HARK_EINVAL;
  }
  if (hl->shut)
    return 0;

  /* closed is set under mu, so a post either got in before (and is
   * dropped below) or sees it and is refused; one that got in may still
   * be on its way to uv_async_send: see the wait before close_handles.
   * Tokens not yet done are orphaned under tokens_mu at the same time:
   * hark_token_done then never reaches this loop again. */
  pthread_mutex_lock(&tokens_mu);
  pthread_mutex_lock(&hl->mu);
  hl->closed = hl->shut = true;
  item *batch = list_take(&hl->queue);
  hl->count = 0;
  /* No more items are cut: the current block goes once those cut from
   * it have been released (now, if they all have). */
  slab *sl = hl->slab;
  hl->slab = NULL;
  if (sl != NULL)
    sl->cap = hl->slab_cut;
  pthread_mutex_unlock(&hl->mu);
  if (sl != NULL && sl->released == sl->cap)
    hark__free(sl->mem);
  for (async_send *as = hl->sends; as != NULL; as = as->next) {
    hark_token *tok = as->tokens, *next;
    for (; tok != NULL; tok = next) {
      next = tok->next;
      if (tok->done)
        continue; /* its completion is queued: runs below */
      if (tok->prev != NULL)
        tok->prev->next = tok->next;
      else
        as->tokens = tok->next;
      if (tok->next != NULL)
        tok->next->prev = tok->prev;
      tok->as = NULL;
      as->pending--;
      as->failures++;
      as->orphaned++;
    }
  }
  pthread_mutex_unlock(&tokens_mu);
  /* reported outside the locks: the log function is the user's code */
  for (async_send *as = hl->sends; as != NULL; as = as->next)
    if (as->orphaned != 0)
      hark__log(HARK_LOG_WARN,
                "hark_loop_close: %d receiver(s) of an asynchronous send of "
                "signal \"%s\" never completed their token (counted as "
                "failed)",
                as->orphaned, hark_signal_name(as->sig));

  item *later = list_take(&hl->later);
  hl->later_count = 0;
  /* The close/uv_async_send race: a post that found the loop open calls
   * uv_async_send after leaving mu (enqueue). It counted itself in
   * sending under mu, before we set closed under mu, so the load below
   * sees it; its send happens before its decrement, which our acquire
   * load pairs with: no send touches the handle once uv_close has it,
   * nor the memory the close callbacks may free. Posts from now on see
   * closed under mu and never send. The wait spans at most a
   * uv_async_send, which never waits for this thread. */
  while (atomic_load_explicit(&hl->sending, memory_order_acquire) != 0)
    sched_yield();
  close_handles(hl);
  /* With closed set these drop posts and calls (args_free, counted) and
   * still run token completions. */
  run_batch(hl, batch);
  run_batch(hl, later);
  return 0;
}

/* ---- posting ---------------------------------------------------------- */

/* Queues a POST or a CALL: takes the references it holds if the loop
 * accepts it; else changes nothing. A new block, when needed, is
 * allocated outside mu. */
static inline __attribute__((always_inline)) int
enqueue(hark_loop *hl, enum item_kind kind, hark_signal *sig,
        hark_receiver_fn fn, hark__ctrl *self_ctrl, hark__ctrl *sender_ctrl,
        void *hold, void *args, void (*args_free)(void *)) {
  slab *fresh = NULL;
  pthread_mutex_lock(&hl->mu);
  for (;;) {
    if (hl->closed) {
      pthread_mutex_unlock(&hl->mu);
      if (fresh != NULL)
        hark__free(fresh->mem);
      return HARK_ECANCELED;
    }
    if (hl->count >= atomic_load_explicit(&hl->limit, memory_order_relaxed)) {
      hl->rejected++;
      pthread_mutex_unlock(&hl->mu);
      if (fresh != NULL)
        hark__free(fresh->mem);
      return HARK_EAGAIN;
    }
    if (hl->slab != NULL)
      break;
    if (fresh != NULL) {
      hl->slab = fresh;
      hl->slab_cut = 0;
      fresh = NULL;
      break;
    }
    pthread_mutex_unlock(&hl->mu);
    if ((fresh = slab_new()) == NULL)
      return HARK_ENOMEM;
    pthread_mutex_lock(&hl->mu); /* and check again: things moved */
  }
  slab *sl = hl->slab;
  item *it = &sl->items[hl->slab_cut];
  it->slot = (uint8_t)hl->slab_cut;
  if (++hl->slab_cut == SLAB_ITEMS)
    hl->slab = NULL;
  it->kind = (uint8_t)kind;
  if (kind == ITEM_POST)
    it->sig = sig;
  else
    it->fn = fn;
  it->self_ctrl = self_ctrl;
  it->sender_ctrl = sender_ctrl;
  it->hold = hold;
  it->args = args;
  it->args_free = args_free;
  item *tail = hl->queue.tail;
  if (kind == ITEM_CALL) {
    it->owns = true;
    if (self_ctrl != NULL)
      hark__ctrl_weak_acquire(self_ctrl);
    if (sender_ctrl != NULL)
      hark__ctrl_weak_acquire(sender_ctrl);
  } else if (tail != NULL && tail->kind == ITEM_POST && tail->sig == sig &&
             tail->sender_ctrl == sender_ctrl) {
    it->owns = false; /* shares the references of the run it extends */
  } else {
    it->owns = true;
    hark__ref(sig);
    if (sender_ctrl != NULL)
      hark__ctrl_weak_acquire(sender_ctrl);
  }
  /* One wakeup per empty-to-non-empty transition: the drain takes the
   * whole queue, so a non-empty queue already has a wakeup pending, or
   * on its way from the post that made it non-empty. */
  bool wake = tail == NULL;
  list_append(&hl->queue, it);
  hl->count++;
  hl->posted++;
  if (wake)
    atomic_fetch_add_explicit(&hl->sending, 1, memory_order_relaxed);
  pthread_mutex_unlock(&hl->mu);
  if (fresh != NULL)
    hark__free(fresh->mem); /* another post installed a block meanwhile */
  /* Outside mu, so that other posts do not wait for the syscall; close
   * waits for sending to drop to zero before uv_close (see there). */
  if (wake) {
    uv_async_send(&hl->async);
    atomic_fetch_sub_explicit(&hl->sending, 1, memory_order_release);
  }
  return 0;
}

static int sender_ctrl_of(void *sender, hark__ctrl **out) {
  *out = NULL;
  if (sender == NULL)
    return 0;
  *out = hark__ctrl_of(sender);
  return *out != NULL ? 0 : HARK_EINVAL;
}

int hark_post(hark_loop *hl, hark_signal *sig, void *sender, void *args,
              void (*args_free)(void *args)) {
  hark__ctrl *sc;
  if (hl == NULL || sig == NULL || sender_ctrl_of(sender, &sc) != 0)
    return HARK_EINVAL;
  return enqueue(hl, ITEM_POST, sig, NULL, NULL, sc, NULL, args, args_free);
}

/* The loop as a dispatcher of the receivers bound to it (see internal.h):
 * a call from the loop thread runs at once, one from another thread is
 * queued like a post. */
static bool dispatch_is_current(void *target) {
  return loop_is_current(target);
}

static int dispatch_queue_call(void *target, hark_receiver_fn fn,
                               hark__ctrl *self_ctrl, hark__ctrl *sender_ctrl,
                               void *hold, void *args,
                               void (*args_free)(void *)) {
  /* on failure, hold stays the caller's */
  return enqueue(target, ITEM_CALL, NULL, fn, self_ctrl, sender_ctrl, hold,
                 args, args_free);
}

static const hark__dispatch loop_dispatch = {dispatch_is_current,
                                             dispatch_queue_call};

int hark_connect_loop(hark_signal *sig, hark_loop *hl, hark_receiver_fn fn,
                      void *self, void *sender, unsigned flags) {
  if (hl == NULL)
    return HARK_EINVAL;
  return hark__connect_dispatched(sig, &loop_dispatch, hl, fn, self, sender,
                                  flags);
}

static void later_append(hark_loop *hl, item *it) {
  list_append(&hl->later, it);
  if (!uv_is_active((uv_handle_t *)&hl->idle))
    uv_idle_start(&hl->idle, on_idle);
}

int hark_send_later(hark_loop *hl, hark_signal *sig, void *sender, void *args,
                    void (*args_free)(void *args)) {
  hark__ctrl *sc;
  if (hl == NULL || sig == NULL || !loop_is_current(hl) ||
      sender_ctrl_of(sender, &sc) != 0)
    return HARK_EINVAL;
  if (hl->shut)
    return HARK_ECANCELED;
  if (hl->later_count >= atomic_load(&hl->limit)) {
    bump(&hl->later_rejected, 1);
    return HARK_EAGAIN;
  }
  item *it = hark__malloc(sizeof(*it));
  if (it == NULL)
    return HARK_ENOMEM;
  *it = (item){.kind = ITEM_POST,
               .owns = true,
               .slot = ITEM_OWN,
               .sig = hark_ref(sig),
               .sender_ctrl = sc,
               .args = args,
               .args_free = args_free};
  if (sc != NULL)
    hark__ctrl_weak_acquire(sc);
  later_append(hl, it);
  hl->later_count++;
  bump(&hl->later_posted, 1);
  return 0;
}

int hark_loop_set_queue_limit(hark_loop *hl, size_t limit) {
  if (hl == NULL || limit == 0)
    return HARK_EINVAL;
  atomic_store(&hl->limit, limit);
  return 0;
}

int hark_loop_get_stats(hark_loop *hl, hark_loop_stats *out) {
  if (hl == NULL || out == NULL)
    return HARK_EINVAL;
  pthread_mutex_lock(&hl->mu);
  out->posted = hl->posted;
  out->rejected = hl->rejected;
  pthread_mutex_unlock(&hl->mu);
  out->posted += atomic_load(&hl->later_posted);
  out->rejected += atomic_load(&hl->later_rejected);
  out->delivered = atomic_load(&hl->delivered);
  out->dropped = atomic_load(&hl->dropped);
  out->swept = atomic_load(&hl->swept);
  return 0;
}

/* ---- asynchronous receivers ------------------------------------------ */

hark_token *hark_token_take(void) {
  async_send *as = current_send;
  /* Only a receiver of the async send itself gets a token, not one
   * reached through a plain send nested inside it. */
  if (as == NULL || as->taken || as->hl->shut ||
      hark__send_depth() != as->depth)
    return NULL;
  hark_token *tok = hark__calloc(1, sizeof(*tok));
  if (tok == NULL)
    return NULL; /* the receiver completes with its return value */
  tok->node.kind = ITEM_TOKEN;
  tok->as = as;
  tok->hl = as->hl;
  pthread_mutex_lock(&tokens_mu);
  tok->next = as->tokens;
  if (as->tokens != NULL)
    as->tokens->prev = tok;
  as->tokens = tok;
  pthread_mutex_unlock(&tokens_mu);
  as->pending++;
  as->taken = true;
  return tok;
}

void hark_token_done(hark_token *tok, int result) {
  if (tok == NULL)
    return;
  pthread_mutex_lock(&tokens_mu);
  tok->done = true;
  if (tok->as == NULL) {
    /* Orphaned by hark_loop_close: its send has been reported, and the
     * loop may be gone. */
    pthread_mutex_unlock(&tokens_mu);
    hark__free(tok);
    return;
  }
  tok->result = result;
  /* Not orphaned, so the loop is not closed (close orphans under
   * tokens_mu): the completion is queued past the limit, since it
   * cannot fail. */
  hark_loop *hl = tok->hl;
  pthread_mutex_lock(&hl->mu);
  bool wake = hl->queue.head == NULL;
  list_append(&hl->queue, &tok->node);
  if (wake)
    uv_async_send(&hl->async);
  pthread_mutex_unlock(&hl->mu);
  pthread_mutex_unlock(&tokens_mu);
}

static void on_result(void *data, hark_receiver_fn fn, void *self, int result) {
  async_send *as = data;
  (void)fn;
  (void)self;
  if (as->taken)
    as->taken = false; /* completes through its token */
  else if (result != 0)
    as->failures++;
}

int hark_send_async(hark_loop *hl, hark_signal *sig, void *sender, void *args,
                    void (*on_done)(void *data, int failures), void *data) {
  if (hl == NULL || sig == NULL || !loop_is_current(hl))
    return HARK_EINVAL;
  if (hl->shut)
    return HARK_ECANCELED;
  async_send *as = hark__calloc(1, sizeof(*as));
  if (as == NULL)
    return HARK_ENOMEM;
  as->node.kind = ITEM_FINISH;
  as->hl = hl;
  as->sig = hark_ref(sig);
  as->on_done = on_done;
  as->data = data;
  as->depth = hark__send_depth() + 1;
  as->next = hl->sends;
  if (hl->sends != NULL)
    hl->sends->prev = as;
  hl->sends = as;

  as->outer = current_send;
  current_send = as;
  int r = hark_send_robust(sig, sender, args, on_result, as);
  current_send = as->outer;

  if (r < 0 && as->pending == 0 && !hl->shut) {
    /* No receiver ran (HARK_ENOMEM, HARK_EINVAL): nothing to finish. */
    as->on_done = NULL;
    send_finish(hl, as);
    return r;
  }
  as->returned = true;
  /* on_done never runs inside this call: with nothing pending it waits
   * for the next iteration; after a close inside a receiver, for the
   * close callbacks. */
  if (!hl->shut && as->pending == 0)
    later_append(hl, &as->node);
  return 0;
}
