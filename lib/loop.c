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
#include <stdio.h>

/* ---- queued work ------------------------------------------------------ */

enum item_kind {
  ITEM_POST,   /* hark_post / hark_send_later: hark_send on the loop */
  ITEM_CALL,   /* hark__loop_queue_call: one loop-bound receiver */
  ITEM_TOKEN,  /* hark_token_done: a completion handed to the loop */
  ITEM_FINISH, /* an async send whose receivers all completed at once */
};

typedef struct item {
  struct item *next;
  enum item_kind kind;
  hark_signal *sig;        /* POST: strong */
  hark_receiver_fn fn;     /* CALL */
  hark__ctrl *self_ctrl;   /* CALL: weak, NULL for none */
  hark__ctrl *sender_ctrl; /* POST, CALL: weak, NULL for none */
  void *hold;              /* CALL: strong, or NULL; dropped with the item */
  void *args;
  void (*args_free)(void *args);
} item;

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

  pthread_mutex_t mu; /* guards what follows, up to the loop-thread part */
  bool closed;        /* written by the loop thread under mu */
  bool orphaned;      /* last reference dropped off the loop thread */
  item_list queue;    /* posts, queued calls, token completions */
  size_t count;       /* posts and calls in queue (tokens are free) */
  _Atomic size_t limit;

  /* loop thread only */
  item_list later;
  size_t later_count;
  async_send *sends; /* async sends not yet finished */
  bool sends_finished;
  unsigned long sweep_mark;

  _Atomic unsigned long long posted, delivered, dropped, rejected, swept;
};

static void release_hold(hark_loop *hl) {
  if (atomic_fetch_sub(&hl->holds, 1) == 1) {
    pthread_mutex_destroy(&hl->mu);
    hark__free(hl);
  }
}

bool hark__loop_is_current(hark_loop *hl) {
  uv_thread_t self = uv_thread_self();
  return hl != NULL && uv_thread_equal(&hl->thread, &self);
}

uv_loop_t *hark_loop_uv(hark_loop *hl) { return hl != NULL ? hl->uv : NULL; }

/* ---- running queued items -------------------------------------------- */

/* Releases what a post or call holds; args_free only when it still owns
 * args (a refused post leaves them to the caller). */
static void item_release(item *it, bool free_args) {
  hark_unref(it->sig);
  if (it->self_ctrl != NULL)
    hark__ctrl_weak_release(it->self_ctrl);
  if (it->sender_ctrl != NULL)
    hark__ctrl_weak_release(it->sender_ctrl);
  if (free_args && it->args_free != NULL)
    it->args_free(it->args);
  hark_unref(it->hold);
  hark__free(it);
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
  if (as->pending == 0 && as->returned && !hl->closed)
    send_finish(hl, as);
}

static void run_item(hark_loop *hl, item *it) {
  switch (it->kind) {
  case ITEM_TOKEN:
    token_complete(hl, HARK__CONTAINER_OF(it, hark_token, node));
    return;
  case ITEM_FINISH:
    if (!hl->closed)
      send_finish(hl, HARK__CONTAINER_OF(it, async_send, node));
    return;
  case ITEM_POST:
  case ITEM_CALL:
    break;
  }
  if (hl->closed) {
    atomic_fetch_add(&hl->dropped, 1);
    item_release(it, true);
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
    atomic_fetch_add(&hl->delivered, 1);
  } else {
    atomic_fetch_add(&hl->dropped, 1);
  }
  hark_unref(self);
  hark_unref(sender);
  item_release(it, true);
}

/* Runs a batch taken off a queue. A receiver may close the loop halfway:
 * run_item then drops the rest (hl stays valid: its memory waits for the
 * handles' close callbacks, which run later in uv_run). */
static void run_batch(hark_loop *hl, item *it) {
  while (it != NULL) {
    item *next = it->next;
    run_item(hl, it);
    it = next;
  }
}

static void sweep(hark_loop *hl) {
  unsigned long now = atomic_load(&hark__dead_receivers);
  if (now == hl->sweep_mark)
    return;
  hl->sweep_mark = now;
  atomic_fetch_add(&hl->swept, hark__signal_sweep_all());
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
  if (hl->closed)
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
  bool here = hark__loop_is_current(hl);
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
                                    loop_finalize};

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
  hl->closed = true;
  close_handles(hl);
  hark_unref(hl);
  return NULL;
}

void hark_loop_close(hark_loop *hl) {
  if (hl == NULL)
    return;
  if (!hark__loop_is_current(hl)) {
    fprintf(stderr, "hark: hark_loop_close called off the loop thread; "
                    "ignored\n");
    return;
  }
  if (hl->closed)
    return;

  /* closed is set under mu, so a post either got in before (and is
   * dropped below) or sees it and never calls uv_async_send on a handle
   * that uv_close may already have closed (libuv's close/send race).
   * Tokens not yet done are orphaned under tokens_mu at the same time:
   * hark_token_done then never reaches this loop again. */
  pthread_mutex_lock(&tokens_mu);
  pthread_mutex_lock(&hl->mu);
  hl->closed = true;
  item *batch = list_take(&hl->queue);
  hl->count = 0;
  pthread_mutex_unlock(&hl->mu);
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
      fprintf(stderr,
              "hark: hark_loop_close: a receiver of an asynchronous send of "
              "signal \"%s\" never completed its token (counted as failed)\n",
              hark_signal_name(as->sig));
    }
  }
  pthread_mutex_unlock(&tokens_mu);

  item *later = list_take(&hl->later);
  hl->later_count = 0;
  close_handles(hl);
  /* With closed set these drop posts and calls (args_free, counted) and
   * still run token completions. */
  run_batch(hl, batch);
  run_batch(hl, later);
}

/* ---- posting ---------------------------------------------------------- */

static int enqueue(hark_loop *hl, item *it) {
  pthread_mutex_lock(&hl->mu);
  if (hl->closed) {
    pthread_mutex_unlock(&hl->mu);
    return HARK_ECANCELED;
  }
  if (hl->count >= atomic_load(&hl->limit)) {
    atomic_fetch_add(&hl->rejected, 1);
    pthread_mutex_unlock(&hl->mu);
    return HARK_EAGAIN;
  }
  /* One wakeup per empty-to-non-empty transition: the drain takes the
   * whole queue, so a non-empty queue already has a wakeup pending. */
  bool wake = hl->queue.head == NULL;
  list_append(&hl->queue, it);
  hl->count++;
  atomic_fetch_add(&hl->posted, 1);
  if (wake)
    uv_async_send(&hl->async);
  pthread_mutex_unlock(&hl->mu);
  return 0;
}

static item *item_new(enum item_kind kind, hark_signal *sig,
                      hark__ctrl *self_ctrl, hark__ctrl *sender_ctrl,
                      void *args, void (*args_free)(void *)) {
  item *it = hark__calloc(1, sizeof(*it));
  if (it == NULL)
    return NULL;
  it->kind = kind;
  it->sig = hark_ref(sig);
  it->self_ctrl = self_ctrl;
  it->sender_ctrl = sender_ctrl;
  if (self_ctrl != NULL)
    hark__ctrl_weak_acquire(self_ctrl);
  if (sender_ctrl != NULL)
    hark__ctrl_weak_acquire(sender_ctrl);
  it->args = args;
  it->args_free = args_free;
  return it;
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
  item *it = item_new(ITEM_POST, sig, NULL, sc, args, args_free);
  if (it == NULL)
    return HARK_ENOMEM;
  int err = enqueue(hl, it);
  if (err != 0)
    item_release(it, false);
  return err;
}

int hark__loop_queue_call(hark_loop *hl, hark_receiver_fn fn,
                          hark__ctrl *self_ctrl, hark__ctrl *sender_ctrl,
                          void *hold, void *args, void (*args_free)(void *)) {
  if (hl == NULL || fn == NULL)
    return HARK_EINVAL;
  item *it = item_new(ITEM_CALL, NULL, self_ctrl, sender_ctrl, args, args_free);
  if (it == NULL)
    return HARK_ENOMEM;
  it->fn = fn;
  it->hold = hold;
  int err = enqueue(hl, it);
  if (err != 0) {
    it->hold = NULL; /* stays the caller's */
    item_release(it, false);
  }
  return err;
}

static void later_append(hark_loop *hl, item *it) {
  list_append(&hl->later, it);
  if (!uv_is_active((uv_handle_t *)&hl->idle))
    uv_idle_start(&hl->idle, on_idle);
}

int hark_send_later(hark_loop *hl, hark_signal *sig, void *sender, void *args,
                    void (*args_free)(void *args)) {
  hark__ctrl *sc;
  if (hl == NULL || sig == NULL || !hark__loop_is_current(hl) ||
      sender_ctrl_of(sender, &sc) != 0)
    return HARK_EINVAL;
  if (hl->closed)
    return HARK_ECANCELED;
  if (hl->later_count >= atomic_load(&hl->limit)) {
    atomic_fetch_add(&hl->rejected, 1);
    return HARK_EAGAIN;
  }
  item *it = item_new(ITEM_POST, sig, NULL, sc, args, args_free);
  if (it == NULL)
    return HARK_ENOMEM;
  later_append(hl, it);
  hl->later_count++;
  atomic_fetch_add(&hl->posted, 1);
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
  out->posted = atomic_load(&hl->posted);
  out->delivered = atomic_load(&hl->delivered);
  out->dropped = atomic_load(&hl->dropped);
  out->rejected = atomic_load(&hl->rejected);
  out->swept = atomic_load(&hl->swept);
  return 0;
}

/* ---- asynchronous receivers ------------------------------------------ */

hark_token *hark_token_take(void) {
  async_send *as = current_send;
  /* Only a receiver of the async send itself gets a token, not one
   * reached through a plain send nested inside it. */
  if (as == NULL || as->taken || as->hl->closed ||
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
  if (hl == NULL || sig == NULL || !hark__loop_is_current(hl))
    return HARK_EINVAL;
  if (hl->closed)
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

  if (r < 0 && as->pending == 0 && !hl->closed) {
    /* No receiver ran (HARK_ENOMEM, HARK_EINVAL): nothing to finish. */
    as->on_done = NULL;
    send_finish(hl, as);
    return r;
  }
  as->returned = true;
  /* on_done never runs inside this call: with nothing pending it waits
   * for the next iteration; after a close inside a receiver, for the
   * close callbacks. */
  if (!hl->closed && as->pending == 0)
    later_append(hl, &as->node);
  return 0;
}
