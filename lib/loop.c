/* libuv integration: sends posted from any thread and delivered on the
 * loop thread, deferred sends, loop-bound receiver calls, asynchronous
 * receivers, idle-time sweeping, and a close after which uv_loop_close
 * returns 0.
 *
 * Handles: one uv_async_t wakes the loop for the cross-thread queue (it
 * is ref'd: an attached hark keeps uv_run going until hark_loop_close);
 * a uv_check_t (unref'd) drains hark_send_later's queue and sweeps dead
 * receivers; a uv_idle_t runs only while deferred work is queued, so the
 * poll phase does not block with work waiting.
 *
 * The cross-thread queue takes no lock. A post claims a unit of the
 * loop's current block with one compare-and-swap, fills it, and pushes it
 * on a lock-free stack (Treiber's) with another; the loop thread takes
 * the whole stack with one exchange and reverses it, which gives the
 * posts back in the order their pushes took effect, so each posting
 * thread's posts arrive in the order it made them. A post of the same
 * signal, sender and args_free as the one it lands on joins that one's
 * run: it takes no reference and needs one 32-byte unit. The stack's head
 * also says whether the loop must be woken: only the push that finds it
 * idle calls uv_async_send, and while the loop thread drains, posts see
 * it busy and make no system call at all. */
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

/* ---- queued work ------------------------------------------------------ */

enum item_kind {
  ITEM_POST,   /* hark_post / hark_send_later: hark_send on the loop */
  ITEM_CALL,   /* dispatch_queue_call: one loop-bound receiver */
  ITEM_TOKEN,  /* hark_token_done: a completion handed to the loop */
  ITEM_FINISH, /* an async send whose receivers all completed at once */
};

typedef struct post post;

/* What every queued thing starts with; on its own (a UNIT) it is a post
 * that shares the signal, sender and args_free of the post it follows in
 * its batch, its run's owner (see push), which also holds the references
 * for the whole run. A flood of posts of one signal costs a UNIT each. */
typedef struct item {
  struct item *next;
  void *args; /* POST, CALL */
  union {
    post *owner;                   /* POST, !owns: its run's owner */
    void (*args_free)(void *args); /* CALL */
  };
  uint32_t slot; /* POST, CALL: its first unit in its block, or ITEM_OWN */
  uint8_t kind;  /* enum item_kind */
  bool owns;     /* POST: is a run's owner, a post (below) */
} item;

#define UNIT 32u
#define ITEM_OWN UINT32_MAX /* allocated on its own (hark_send_later) */

/* A post that owns a run: it holds the sig reference and the sender_ctrl
 * weak one for itself and the posts that share them. Two UNITs. */
struct post {
  item it;
  hark_signal *sig;        /* strong */
  hark__ctrl *sender_ctrl; /* weak, NULL for none */
  void (*args_free)(void *args);
  void *unused;
};

/* A loop-bound receiver's call. Two UNITs. */
typedef struct call {
  item it;
  hark_receiver_fn fn;
  hark__ctrl *self_ctrl;   /* weak, NULL for none */
  hark__ctrl *sender_ctrl; /* weak, NULL for none */
  void *hold;              /* strong, or NULL; dropped with the call */
} call;

_Static_assert(sizeof(item) == UNIT && sizeof(post) == 2 * UNIT &&
                   sizeof(call) == 2 * UNIT,
               "posts and calls in whole units");

static inline post *as_post(item *it) {
  return HARK__CONTAINER_OF(it, post, it);
}
static inline call *as_call(item *it) {
  return HARK__CONTAINER_OF(it, call, it);
}
static inline unsigned item_units(const item *it) {
  return it->kind == ITEM_CALL || it->owns ? 2 : 1;
}

/* Posts and calls are cut from blocks of SLAB_UNITS units instead of
 * being allocated one by one: one allocation per hundred posts or so. A
 * block belongs to its loop, not to a thread, so nothing stays with a
 * thread that stops posting or exits. refs counts the units not yet given
 * back: a unit is given back when its item has run or been dropped (by
 * the loop thread, a run of them at once), when a post that cut it gives
 * it up (by that thread), or, for units never cut, when the block stops
 * being cut from. The block goes with its last unit, on whichever thread
 * gives it back; while it drains a busy queue, the loop thread keeps the
 * last one it emptied for the next block to be cut (see spare). Beyond
 * the items queued or running, a loop holds at most the uncut rest of its
 * current block, and that spare while it drains; close lets both go. */
#define LINE 64u
#define SLAB_SIZE 4096u
#define SLAB_UNITS ((SLAB_SIZE - LINE) / UNIT) /* the header takes a line */
#define SLAB_ALIGN 256u                        /* for the cut word's low bits */

typedef struct slab {
  void *mem;             /* what hark__malloc returned */
  _Atomic unsigned refs; /* units not given back */
  char pad[LINE - sizeof(void *) - sizeof(unsigned)];
  item units[SLAB_UNITS];
} slab;

_Static_assert(offsetof(slab, units) == LINE && sizeof(slab) == SLAB_SIZE,
               "a block's header on a line of its own");

/* The loop's current block, whether its units are prepaid (see claim),
 * and the index of its next free unit, in one word (a block is aligned on
 * SLAB_ALIGN, so these fit in the low bits): cutting is one
 * compare-and-swap, and no thread reads a block it has not cut a unit of
 * (a block all cut may already be gone). */
#define CUT_INDEX ((uintptr_t)0x7f)
#define CUT_PREPAID ((uintptr_t)0x80)
#define CUT_LOW ((uintptr_t)(SLAB_ALIGN - 1))
#define CUT_CLOSED ((uintptr_t)1) /* no block, and none will be made */

_Static_assert(SLAB_UNITS <= CUT_INDEX && (CUT_INDEX | CUT_PREPAID) == CUT_LOW,
               "the cut word's low bits");

static inline slab *cut_slab(uintptr_t w) { return (slab *)(w & ~CUT_LOW); }
static inline unsigned cut_index(uintptr_t w) {
  return (unsigned)(w & CUT_INDEX);
}

/* A block with all its units to give; NULL on ENOMEM. */
static slab *slab_new(void) {
  void *mem = hark__malloc(sizeof(slab) + SLAB_ALIGN - 1);
  if (mem == NULL)
    return NULL;
  slab *sl = (slab *)(((uintptr_t)mem + SLAB_ALIGN - 1) &
                      ~(uintptr_t)(SLAB_ALIGN - 1));
  sl->mem = mem;
  atomic_init(&sl->refs, SLAB_UNITS);
  return sl;
}

static void slab_free(slab *sl) {
  if (sl != NULL)
    hark__free(sl->mem);
}

static slab *slab_of(item *it) {
  return HARK__CONTAINER_OF(it - it->slot, slab, units[0]);
}

/* Gives n units of sl back; true when they were its last (the caller then
 * frees it or keeps it). Any thread. */
static bool slab_put(slab *sl, unsigned n) {
  return atomic_fetch_sub_explicit(&sl->refs, n, memory_order_acq_rel) == n;
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

/* The stack's head (hl->head) is an item, or one of these. A chain of
 * items ends in the value the first of them was pushed on (IDLE or BUSY). */
#define Q_IDLE ((item *)0)   /* empty, loop not draining: a push wakes it */
#define Q_BUSY ((item *)1)   /* empty, loop draining: it will look again */
#define Q_CLOSED ((item *)2) /* closed: pushes are refused */

static inline bool is_item(const item *p) { return (uintptr_t)p > 2; }

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
 * has orphaned the token, before it would touch the loop. It is the only
 * lock of this file. */
static pthread_mutex_t tokens_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- the loop object -------------------------------------------------- */

#define H_ASYNC 1u
#define H_CHECK 2u
#define H_IDLE 4u

struct hark_loop {
  hark_object base;
  void *mem; /* what hark__malloc returned (hl is aligned on a line) */
  uv_loop_t *uv;
  uv_thread_t thread;
  uv_async_t async;
  uv_check_t check;
  uv_idle_t idle;
  unsigned handles; /* H_* initialised and not yet closed; loop thread */
  /* The reference group (1) plus one per handle until its close
   * callback: the memory goes when this reaches zero. */
  _Atomic int holds;
  _Atomic bool orphaned; /* last reference dropped off the loop thread */

  /* What every post reads and writes: one line, which a post brings to
   * its core once for all its atomic operations. */
  _Alignas(LINE) item *_Atomic head; /* the stack of queued items */
  _Atomic uintptr_t cut;             /* current block | next slot */
  _Atomic size_t count;              /* posts and calls in the stack */
  _Atomic size_t limit;
  /* Threads between pushing on an idle stack and their uv_async_send
   * returning; close waits for it to reach zero (see hark_loop_close). */
  _Atomic unsigned sending;
  _Atomic unsigned long long rejected; /* HARK_EAGAIN answers */
  /* An emptied block the loop thread keeps for the next one to be cut
   * while it drains a busy queue, so that a flood of posts allocates
   * nothing; it lets it go when the queue runs dry, and at close. */
  slab *_Atomic spare;

  /* loop thread only */
  _Alignas(LINE) bool shut; /* closed */
  item_list later;
  size_t later_count;
  async_send *sends; /* async sends not yet finished */
  bool sends_finished;
  unsigned long sweep_mark;

  /* Written by the loop thread only (see bump), read by any thread. */
  _Atomic unsigned long long taken, delivered, dropped, swept, later_posted,
      later_rejected;
};

/* Adds n to a counter that only the loop thread writes: a plain load and
 * store, not a locked read-modify-write. */
static inline void bump(_Atomic unsigned long long *c, unsigned long long n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

static void release_hold(hark_loop *hl) {
  if (atomic_fetch_sub(&hl->holds, 1) == 1)
    hark__free(hl->mem);
}

static bool loop_is_current(hark_loop *hl) {
  uv_thread_t self = uv_thread_self();
  return hl != NULL && uv_thread_equal(&hl->thread, &self);
}

uv_loop_t *hark_loop_uv(hark_loop *hl) { return hl != NULL ? hl->uv : NULL; }

/* ---- running queued items -------------------------------------------- */

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

/* What a batch holds and gives back in runs: the run of posts being run
 * (its owner holds the references; see push), and the units of the block
 * its items are cut from, given back in one step per block rather than
 * one per item, so that the loop thread writes the block's line once. */
typedef struct batch_refs {
  post *run;
  slab *sl;
  unsigned nsl;
} batch_refs;

/* Ends the current run of posts: drops its signal and sender. */
static void refs_end_run(batch_refs *r) {
  post *p = r->run;
  if (p == NULL)
    return;
  r->run = NULL;
  if (p->sender_ctrl != NULL)
    hark__ctrl_weak_release(p->sender_ctrl);
  hark__unref(p->sig);
}

/* Loop thread: gives n units of sl back. A block emptied while the loop
 * is open becomes the spare (the one it replaces goes). */
static void slab_put_loop(hark_loop *hl, slab *sl, unsigned n) {
  if (!slab_put(sl, n))
    return;
  if (hl->shut)
    slab_free(sl);
  else
    slab_free(atomic_exchange_explicit(&hl->spare, sl, memory_order_acq_rel));
}

static void refs_flush(hark_loop *hl, batch_refs *r) {
  if (r->nsl != 0)
    slab_put_loop(hl, r->sl, r->nsl);
  r->nsl = 0;
}

/* The item's memory. A run's owner is given back with its run (it holds
 * the run's fields); anything else once it has run. */
static inline void refs_add_units(hark_loop *hl, batch_refs *r, item *it) {
  if (it->slot == ITEM_OWN) {
    hark__free(it);
    return;
  }
  slab *sl = slab_of(it);
  if (sl != r->sl) {
    refs_flush(hl, r);
    r->sl = sl;
  }
  r->nsl += item_units(it);
}

/* A loop-bound receiver's call: its references are its own. */
static void run_call(hark_loop *hl, call *c) {
  void *sender = NULL, *self = NULL;
  bool live = !hl->shut;
  if (live && c->sender_ctrl != NULL &&
      (sender = hark__ctrl_upgrade(c->sender_ctrl)) == NULL)
    live = false;
  if (live && c->self_ctrl != NULL &&
      (self = hark__ctrl_upgrade(c->self_ctrl)) == NULL)
    live = false;
  if (live) {
    c->fn(self, sender, c->it.args);
    bump(&hl->delivered, 1);
  } else {
    bump(&hl->dropped, 1);
  }
  if (self != NULL)
    hark__unref(self);
  if (sender != NULL)
    hark__unref(sender);
  if (c->self_ctrl != NULL)
    hark__ctrl_weak_release(c->self_ctrl);
  if (c->sender_ctrl != NULL)
    hark__ctrl_weak_release(c->sender_ctrl);
  hark_unref(c->hold);
  if (c->it.args_free != NULL)
    c->it.args_free(c->it.args);
}

/* Runs a batch (a NULL-terminated chain, in order), without any lock. A
 * receiver may close the loop halfway: the rest is then dropped (hl stays
 * valid: its memory waits for the handles' close callbacks, which run
 * later in uv_run). A run of posts never spans batches: a post shares
 * only with the item right below it on the stack, which the same exchange
 * takes (see push), so its owner comes right before it here. */
static void run_batch(hark_loop *hl, item *it) {
  batch_refs r = {0};
  while (it != NULL) {
    item *next = it->next;
    switch (it->kind) {
    case ITEM_TOKEN:
      token_complete(hl, HARK__CONTAINER_OF(it, hark_token, node));
      break;
    case ITEM_FINISH:
      if (!hl->shut)
        send_finish(hl, HARK__CONTAINER_OF(it, async_send, node));
      break;
    case ITEM_CALL:
      run_call(hl, as_call(it));
      refs_add_units(hl, &r, it);
      break;
    case ITEM_POST: {
      if (it->owns) {
        /* an owner starts a run: the previous one has gone */
        post *prev = r.run;
        refs_end_run(&r);
        if (prev != NULL)
          refs_add_units(hl, &r, &prev->it);
        r.run = as_post(it);
      }
      post *p = r.run; /* it->owns, or it->owner == r.run (see push) */
      void *sender = NULL;
      if (hl->shut || (p->sender_ctrl != NULL &&
                       (sender = hark__ctrl_upgrade(p->sender_ctrl)) == NULL)) {
        bump(&hl->dropped, 1);
      } else {
        hark_send(p->sig, sender, it->args);
        bump(&hl->delivered, 1);
        if (sender != NULL)
          hark__unref(sender);
      }
      if (p->args_free != NULL)
        p->args_free(it->args);
      if (!it->owns)
        refs_add_units(hl, &r, it);
      break;
    }
    }
    it = next;
  }
  post *last = r.run;
  refs_end_run(&r);
  if (last != NULL)
    refs_add_units(hl, &r, &last->it);
  refs_flush(hl, &r);
}

/* Loop thread: turns a chain taken off the stack (newest first) into a
 * batch in push order, and counts its posts and calls out of the queue. */
static item *take(hark_loop *hl, item *top, size_t *taken) {
  item *batch = NULL;
  size_t n = 0;
  while (is_item(top)) {
    /* The walk waits on each load, and each line was last written on
     * the posting thread's core. Newest first, the items are mostly the
     * units below in the same block: fetch those lines well ahead. */
    __builtin_prefetch((char *)top - 16 * LINE, 1);
    item *next = top->next;
    top->next = batch;
    batch = top;
    n += top->kind <= ITEM_CALL;
    top = next;
  }
  if (n != 0) {
    atomic_fetch_sub_explicit(&hl->count, n, memory_order_relaxed);
    bump(&hl->taken, n);
  }
  *taken = n;
  return batch;
}

static void sweep(hark_loop *hl) {
  unsigned long now = atomic_load(&hark__dead_receivers);
  if (now == hl->sweep_mark)
    return;
  hl->sweep_mark = now;
  bump(&hl->swept, hark__signal_sweep_all());
}

/* ---- libuv callbacks -------------------------------------------------- */

/* How long one on_async may keep draining while posts keep coming, before
 * it lets the rest of the loop run (it then wakes itself to go on). */
#define DRAIN_NS 1000000u

/* In a flood (a round of at least FLOOD posts), an empty stack is watched
 * for up to FLOOD_NS, yielding the processor, before the loop sleeps. On
 * a core the posting thread shares, sleeping costs a round trip for every
 * batch (the posting thread's eventfd write, which the woken loop thread
 * may preempt halfway, spinning in libuv until it finishes; epoll; the
 * read): yielding hands the core over and takes it back without them. */
#define FLOOD 256
#define FLOOD_NS 50000u

/* Drains the stack: takes it whole and marks it BUSY, so that posts made
 * meanwhile push without waking the loop; runs the batch; looks again,
 * and leaves only once it has turned BUSY back to IDLE, so that a post
 * never lands on a stack that nobody will look at. */
static void on_async(uv_async_t *handle) {
  hark_loop *hl = handle->data;
  if (atomic_load_explicit(&hl->orphaned, memory_order_acquire)) {
    hark_loop_close(hl);
    return;
  }
  uint64_t start = uv_hrtime();
  for (;;) {
    item *top =
        atomic_exchange_explicit(&hl->head, Q_BUSY, memory_order_acquire);
    size_t n = 0;
    if (is_item(top))
      run_batch(hl, take(hl, top, &n));
    if (hl->shut)
      return; /* a receiver closed the loop: the stack is closed too */
    if (n >= FLOOD) {
      uint64_t until = uv_hrtime() + FLOOD_NS;
      while (atomic_load_explicit(&hl->head, memory_order_relaxed) == Q_BUSY &&
             uv_hrtime() < until)
        sched_yield();
    }
    item *busy = Q_BUSY;
    if (atomic_compare_exchange_strong_explicit(&hl->head, &busy, Q_IDLE,
                                                memory_order_relaxed,
                                                memory_order_relaxed)) {
      /* dry: no block kept beyond the current one */
      if (atomic_load_explicit(&hl->spare, memory_order_relaxed) != NULL)
        slab_free(
            atomic_exchange_explicit(&hl->spare, NULL, memory_order_acq_rel));
      return;
    }
    if (uv_hrtime() - start > DRAIN_NS) {
      /* More has come, but the other handles get their turn first: the
       * stack stays non-empty (posts still make no call), and this
       * wakeup brings us back. */
      uv_async_send(handle);
      return;
    }
  }
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

/* Wakes the loop from a thread that pushed nothing (see loop_finalize),
 * unless it is closed. Counted in sending like a push on an idle stack,
 * for the same race with close (see hark_loop_close). */
static void wake(hark_loop *hl) {
  atomic_fetch_add_explicit(&hl->sending, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&hl->head, memory_order_seq_cst) != Q_CLOSED)
    uv_async_send(&hl->async);
  atomic_fetch_sub_explicit(&hl->sending, 1, memory_order_release);
}

/* ---- life cycle ------------------------------------------------------- */

static void retire_rest(hark_loop *hl, uintptr_t w); /* posting */

static void loop_finalize(void *obj) {
  hark_loop *hl = obj;
  if (!loop_is_current(hl)) {
    /* Dropped without hark_loop_close on another thread: only the loop
     * thread may close handles, so ask it to. */
    atomic_store_explicit(&hl->orphaned, true, memory_order_release);
    wake(hl);
  } else if (!hl->shut) {
    hark_loop_close(hl);
  }
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
  /* aligned on a line, for the posting line's sake */
  void *mem = hark__malloc(sizeof(hark_loop) + LINE - 1);
  if (mem == NULL)
    return NULL;
  hark_loop *hl =
      (hark_loop *)(((uintptr_t)mem + LINE - 1) & ~(uintptr_t)(LINE - 1));
  memset(hl, 0, sizeof(*hl));
  hl->mem = mem;
  if (hark_object_init(hl, &loop_type) != 0) {
    hark__free(mem);
    return NULL;
  }
  hl->uv = loop;
  hl->thread = uv_thread_self();
  atomic_init(&hl->holds, 1);
  atomic_init(&hl->head, Q_IDLE);
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
  atomic_store(&hl->head, Q_CLOSED);
  atomic_store(&hl->cut, CUT_CLOSED);
  hl->shut = true;
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

  /* The stack turns CLOSED in one exchange: a push either took effect
   * before (its item is in top, dropped below) or fails and is refused.
   * Tokens not yet done are orphaned under tokens_mu at the same time:
   * hark_token_done then never reaches this loop again (and one that
   * got tokens_mu first has pushed its completion, in top). */
  pthread_mutex_lock(&tokens_mu);
  item *top =
      atomic_exchange_explicit(&hl->head, Q_CLOSED, memory_order_seq_cst);
  hl->shut = true;
  /* No more units are cut: the current block goes once those cut from it
   * have been given back (now, if they all have), with the count its
   * uncut units had prepaid; the spare goes now (a post that took it
   * frees it when it finds the cut word closed). */
  retire_rest(
      hl, atomic_exchange_explicit(&hl->cut, CUT_CLOSED, memory_order_acq_rel));
  slab_free(atomic_exchange_explicit(&hl->spare, NULL, memory_order_acq_rel));
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
  /* The close/uv_async_send race (libuv: no uv_async_send once uv_close
   * has the handle). A push on an idle stack calls uv_async_send after
   * its push took effect; before pushing it counted itself in sending
   * (sequentially consistent, like its push, our exchange above and the
   * load below). So either its push came before our exchange in that
   * order, and the load below sees its count until its send has
   * returned (its release decrement pairs with our acquire load), or it
   * came after, and the push found CLOSED and sends nothing. Hence no
   * send touches the handle once uv_close has it, nor the memory that
   * the close callbacks may free. The wait spans at most a uv_async_send,
   * which never waits for this thread. */
  while (atomic_load_explicit(&hl->sending, memory_order_seq_cst) != 0)
    sched_yield();
  close_handles(hl);
  /* With shut set these drop posts and calls (args_free, counted) and
   * still run token completions. */
  size_t n;
  run_batch(hl, take(hl, top, &n));
  run_batch(hl, later);
  return 0;
}

/* ---- posting ---------------------------------------------------------- */

/* The bound. count goes up before a push and down when the loop takes the
 * stack, so that the stack never holds more posts and calls than count,
 * nor count more than the limit. Far from the limit, a block's units are
 * counted in when it is installed (prepaid: one post per unit, and what a
 * two-unit item or an unused unit did not use is given back), so that a
 * post costs no atomic operation on count; near the limit, each post
 * counts itself in, so that the bound is exact. */

static void uncount(hark_loop *hl, size_t n) {
  if (n != 0)
    atomic_fetch_sub_explicit(&hl->count, n, memory_order_relaxed);
}

/* Counts one post in, within the bound; false (counted as rejected) when
 * the queue is full. */
static bool count_one(hark_loop *hl) {
  if (atomic_fetch_add_explicit(&hl->count, 1, memory_order_relaxed) <
      atomic_load_explicit(&hl->limit, memory_order_relaxed))
    return true;
  uncount(hl, 1);
  atomic_fetch_add_explicit(&hl->rejected, 1, memory_order_relaxed);
  return false;
}

/* Counts a whole block's units in at once if they fit in the bound. */
static bool count_block(hark_loop *hl) {
  size_t limit = atomic_load_explicit(&hl->limit, memory_order_relaxed);
  if (atomic_load_explicit(&hl->count, memory_order_relaxed) + SLAB_UNITS >
      limit)
    return false;
  if (atomic_fetch_add_explicit(&hl->count, SLAB_UNITS, memory_order_relaxed) +
          SLAB_UNITS <=
      limit)
    return true;
  uncount(hl, SLAB_UNITS);
  return false;
}

/* A block for the cut word: the loop's spare if it has one, else a new
 * one; NULL on ENOMEM. */
static slab *slab_get(hark_loop *hl) {
  slab *sl = NULL;
  if (atomic_load_explicit(&hl->spare, memory_order_relaxed) != NULL)
    sl = atomic_exchange_explicit(&hl->spare, NULL, memory_order_acq_rel);
  if (sl == NULL)
    return slab_new();
  atomic_store_explicit(&sl->refs, SLAB_UNITS, memory_order_relaxed);
  return sl;
}

/* Gives back what a block no longer cut from did not use: its units, and
 * their prepaid count. The units keep the block alive until then. */
static void retire_rest(hark_loop *hl, uintptr_t w) {
  slab *sl = cut_slab(w);
  unsigned rest = SLAB_UNITS - cut_index(w);
  if (sl == NULL || rest == 0)
    return;
  if (w & CUT_PREPAID)
    uncount(hl, rest);
  if (slab_put(sl, rest))
    slab_free(sl);
}

/* Claims n (1 or 2) consecutive units for one post or call, counted in
 * within the bound. Returns 0, HARK_EAGAIN (full), HARK_ECANCELED
 * (closed) or HARK_ENOMEM, having changed nothing on failure. On success
 * *after is the cut word as this claim left it (see extend).
 *
 * Units are one compare-and-swap on the cut word while its block lasts;
 * else a new block, found without any lock (a thread that loses the race
 * to install one frees its own). */
static __attribute__((noinline)) int claim_slow(hark_loop *hl, unsigned n,
                                                item **out, uintptr_t *after) {
  slab *fresh = NULL;
  bool counted = false;
  int err;
  uintptr_t w = atomic_load_explicit(&hl->cut, memory_order_acquire);
  for (;;) {
    if (w == CUT_CLOSED) {
      err = HARK_ECANCELED;
      break;
    }
    slab *sl = cut_slab(w);
    unsigned i = cut_index(w);
    bool prepaid = (w & CUT_PREPAID) != 0;
    if (sl != NULL && i + n <= SLAB_UNITS) {
      if (!prepaid && !counted) {
        if (!count_one(hl)) {
          err = HARK_EAGAIN;
          break;
        }
        counted = true;
      }
      /* The units are ours once the swap succeeds: only then is sl read. */
      if (atomic_compare_exchange_weak_explicit(&hl->cut, &w, w + n,
                                                memory_order_acquire,
                                                memory_order_acquire)) {
        if (prepaid)
          uncount(hl, counted + n - 1);
        slab_free(fresh);
        *after = w + n;
        *out = &sl->units[i];
        (*out)->slot = i;
        return 0;
      }
      continue;
    }
    /* No block yet, or not enough left in this one, which may be gone
     * already if all cut: the swap below compares the word, it does not
     * read the block. */
    if (fresh == NULL && (fresh = slab_get(hl)) == NULL) {
      err = HARK_ENOMEM;
      break;
    }
    bool fresh_prepaid = count_block(hl);
    if (!fresh_prepaid && !counted) {
      if (!count_one(hl)) {
        err = HARK_EAGAIN;
        break;
      }
      counted = true;
    }
    uintptr_t nw = (uintptr_t)fresh | (fresh_prepaid ? CUT_PREPAID : 0) | n;
    if (atomic_compare_exchange_weak_explicit(
            &hl->cut, &w, nw, memory_order_acq_rel, memory_order_acquire)) {
      retire_rest(hl, w);
      if (fresh_prepaid)
        uncount(hl, counted + n - 1);
      *after = nw;
      *out = &fresh->units[0];
      (*out)->slot = 0;
      return 0;
    }
    if (fresh_prepaid)
      uncount(hl, SLAB_UNITS);
  }
  if (counted)
    uncount(hl, 1);
  slab_free(fresh);
  return err;
}

/* The common case inline: a prepaid block with room. */
static inline __attribute__((always_inline)) int
claim(hark_loop *hl, unsigned n, item **out, uintptr_t *after) {
  uintptr_t w = atomic_load_explicit(&hl->cut, memory_order_acquire);
  /* prepaid implies a block (CUT_CLOSED and "none yet" are not) */
  if ((w & CUT_PREPAID) && cut_index(w) + n <= SLAB_UNITS &&
      atomic_compare_exchange_weak_explicit(
          &hl->cut, &w, w + n, memory_order_acquire, memory_order_relaxed)) {
    if (n > 1)
      uncount(hl, n - 1);
    unsigned i = cut_index(w);
    *after = w + n;
    *out = &cut_slab(w)->units[i];
    (*out)->slot = i;
    return 0;
  }
  return claim_slow(hl, n, out, after);
}

/* Grows a one-unit claim that left the cut word at after into a two-unit
 * one, if no one has cut since; false if someone has. */
static bool extend(hark_loop *hl, uintptr_t after) {
  if (cut_index(after) >= SLAB_UNITS ||
      !atomic_compare_exchange_strong_explicit(&hl->cut, &after, after + 1,
                                               memory_order_relaxed,
                                               memory_order_relaxed))
    return false;
  if (after & CUT_PREPAID)
    uncount(hl, 1); /* a post counts once */
  return true;
}

/* Gives back the n units of an item never pushed, and its count. */
static void unclaim(hark_loop *hl, item *it, unsigned n) {
  slab *sl = slab_of(it);
  if (slab_put(sl, n))
    slab_free(sl);
  uncount(hl, 1);
}

/* A post being pushed: its fields until it knows where it lands. */
typedef struct post_req {
  hark_signal *sig;
  hark__ctrl *sender_ctrl;
  void (*args_free)(void *args);
  uintptr_t after; /* the cut word after its first unit was claimed */
  bool owns;       /* has become a run's owner (two units, references) */
} post_req;

/* The run a post landing on old can join, or NULL: old is a post of the
 * same signal, sender and args_free, cut from the same block as it. That
 * last condition makes the look safe and the answer true. Safe: it holds
 * units of that block, unpushed, so the block is not freed; a run's owner
 * is in its block too (each of its posts is in the block of the one it
 * landed on); and a pushed item does not change but for next. True: a
 * unit is pushed once in its block's life, so if the push finds old still
 * on top, old was never taken, and the exchange that takes old takes this
 * post with it, right after it. */
static inline post *joinable(const item *old, const item *it,
                             const post_req *r) {
  const item *first = it - it->slot;
  if ((uintptr_t)old - (uintptr_t)first >= SLAB_UNITS * sizeof(item) ||
      old->kind != ITEM_POST)
    return NULL;
  post *run = old->owns ? as_post((item *)old) : old->owner;
  return run->sig == r->sig && run->sender_ctrl == r->sender_ctrl &&
                 run->args_free == r->args_free
             ? run
             : NULL;
}

/* Makes a post that cannot join the run it lands on the owner of a new
 * one: two units (the next one if still uncut, else two new ones) and
 * its own references. Returns 0 or claim's error (the post then gave its
 * unit back). */
static int become_owner(hark_loop *hl, item **itp, post_req *r) {
  item *it = *itp;
  if (!extend(hl, r->after)) {
    void *args = it->args;
    unclaim(hl, it, 1);
    int err = claim(hl, 2, &it, &r->after);
    if (err != 0)
      return err;
    it->kind = ITEM_POST;
    it->args = args;
    *itp = it;
  }
  post *p = as_post(it);
  p->sig = r->sig;
  p->sender_ctrl = r->sender_ctrl;
  p->args_free = r->args_free;
  it->owns = r->owns = true;
  hark__ref(r->sig);
  if (r->sender_ctrl != NULL)
    hark__ctrl_weak_acquire(r->sender_ctrl);
  return 0;
}

/* Pushes *itp on hl's stack and wakes the loop if the stack was idle.
 * With r, *itp is a post of one unit that joins the run it lands on or
 * becomes an owner (and may move: *itp is updated); other items come
 * ready. Returns 0; HARK_ECANCELED if the loop is closed (nothing pushed,
 * the item still the caller's); or, for a post, an error of claim (its
 * units given back). */
static inline __attribute__((always_inline)) int push(hark_loop *hl, item **itp,
                                                      post_req *r) {
  item *it = *itp;
  item *old = atomic_load_explicit(&hl->head, memory_order_acquire);
  bool counted = false;
  int err = 0;
  for (;;) {
    if (old == Q_CLOSED) {
      err = HARK_ECANCELED;
      break;
    }
    if (old == Q_IDLE && !counted) {
      /* This push may be the one that must wake the loop: count it in
       * sending first, then look again (see hark_loop_close). */
      atomic_fetch_add_explicit(&hl->sending, 1, memory_order_seq_cst);
      counted = true;
      old = atomic_load_explicit(&hl->head, memory_order_seq_cst);
      continue;
    }
    if (r != NULL && !r->owns) {
      post *run = is_item(old) ? joinable(old, it, r) : NULL;
      if (run != NULL) {
        it->owns = false;
        it->owner = run;
      } else if ((err = become_owner(hl, &it, r)) != 0) {
        it = NULL;
        break;
      }
    }
    it->next = old;
    if (atomic_compare_exchange_weak_explicit(
            &hl->head, &old, it, memory_order_seq_cst, memory_order_acquire))
      break;
  }
  /* One wakeup per idle-to-non-empty transition: a non-empty stack has
   * a wakeup on its way (from the push that found it idle), and a BUSY
   * one is being drained by a loop that will look again. */
  if (err == 0 && old == Q_IDLE)
    uv_async_send(&hl->async);
  if (counted)
    atomic_fetch_sub_explicit(&hl->sending, 1, memory_order_release);
  *itp = it;
  return err;
}

/* Flow control, short of the limit: a post that finds the loop more than
 * BEHIND posts behind yields the processor once, after queuing. On a busy
 * machine (more runnable threads than processors) this lets the loop
 * thread run and catch up, where the queue would otherwise grow for the
 * posting thread's whole time slice: a queue of hundreds of thousands of
 * posts is memory gone cold, and fresh pages to fault in. On an idle
 * machine it costs one system call now and then. The loop's own posts
 * never yield: it cannot drain while it posts. */
#define BEHIND 4096

static void behind(hark_loop *hl) {
  if (atomic_load_explicit(&hl->count, memory_order_relaxed) >
          BEHIND + SLAB_UNITS /* what a prepaid block may add */
      && !loop_is_current(hl))
    sched_yield();
}

static int post_enqueue(hark_loop *hl, hark_signal *sig,
                        hark__ctrl *sender_ctrl, void *args,
                        void (*args_free)(void *)) {
  if (atomic_load_explicit(&hl->head, memory_order_relaxed) == Q_CLOSED)
    return HARK_ECANCELED;
  post_req r = {sig, sender_ctrl, args_free, 0, false};
  item *it;
  int err = claim(hl, 1, &it, &r.after);
  if (err != 0)
    return err;
  it->kind = ITEM_POST;
  it->owns = false;
  it->args = args;
  err = push(hl, &it, &r);
  if (err == 0) {
    behind(hl);
    return 0;
  }
  if (err == HARK_ECANCELED && it != NULL) {
    /* Closed meanwhile: undo. The caller holds sig and sender, so
     * neither goes here. */
    if (r.owns) {
      if (sender_ctrl != NULL)
        hark__ctrl_weak_release(sender_ctrl);
      hark__unref(sig);
    }
    unclaim(hl, it, r.owns ? 2 : 1);
  }
  return err;
}

static int call_enqueue(hark_loop *hl, hark_receiver_fn fn,
                        hark__ctrl *self_ctrl, hark__ctrl *sender_ctrl,
                        void *hold, void *args, void (*args_free)(void *)) {
  if (atomic_load_explicit(&hl->head, memory_order_relaxed) == Q_CLOSED)
    return HARK_ECANCELED;
  item *it;
  uintptr_t after;
  int err = claim(hl, 2, &it, &after);
  if (err != 0)
    return err;
  it->kind = ITEM_CALL;
  it->args = args;
  it->args_free = args_free;
  call *c = as_call(it);
  c->fn = fn;
  c->self_ctrl = self_ctrl;
  c->sender_ctrl = sender_ctrl;
  c->hold = hold;
  if (self_ctrl != NULL)
    hark__ctrl_weak_acquire(self_ctrl);
  if (sender_ctrl != NULL)
    hark__ctrl_weak_acquire(sender_ctrl);
  err = push(hl, &it, NULL);
  if (err != 0) {
    /* closed meanwhile: the caller's self and sender are alive, so these
     * are not the last references */
    if (self_ctrl != NULL)
      hark__ctrl_weak_release(self_ctrl);
    if (sender_ctrl != NULL)
      hark__ctrl_weak_release(sender_ctrl);
    unclaim(hl, it, 2);
  }
  return err;
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
  return post_enqueue(hl, sig, sc, args, args_free);
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
  return call_enqueue(target, fn, self_ctrl, sender_ctrl, hold, args,
                      args_free);
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
  post *p = hark__malloc(sizeof(*p));
  if (p == NULL)
    return HARK_ENOMEM;
  *p = (post){
      .it = {.kind = ITEM_POST, .slot = ITEM_OWN, .owns = true, .args = args},
      .sig = hark_ref(sig),
      .sender_ctrl = sc,
      .args_free = args_free};
  if (sc != NULL)
    hark__ctrl_weak_acquire(sc);
  later_append(hl, &p->it);
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

/* posted is what the loop took plus what is queued (count, less what the
 * current block prepaid for its uncut units): exact whenever no post is
 * under way. */
int hark_loop_get_stats(hark_loop *hl, hark_loop_stats *out) {
  if (hl == NULL || out == NULL)
    return HARK_EINVAL;
  uintptr_t cut = atomic_load(&hl->cut);
  size_t prepaid = cut != CUT_CLOSED && (cut & CUT_PREPAID)
                       ? SLAB_UNITS - cut_index(cut)
                       : 0;
  out->posted = atomic_load(&hl->taken) + atomic_load(&hl->count) - prepaid +
                atomic_load(&hl->later_posted);
  out->rejected = atomic_load(&hl->rejected) + atomic_load(&hl->later_rejected);
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
   * tokens_mu, where it closes the stack): the completion is pushed past
   * the limit and the push cannot be refused. */
  item *it = &tok->node;
  push(tok->hl, &it, NULL);
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
