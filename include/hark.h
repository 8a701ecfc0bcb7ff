/* hark: weak-receiver signals for libuv programs.
 *
 * One header to read to learn the library. Conventions used throughout:
 *
 *  - Functions that can fail return 0 (or a count) on success and a
 *    negative HARK_E* code on failure; a failed call changes nothing.
 *  - Ownership words (jansson's vocabulary): a *new* reference is the
 *    caller's to drop with hark_unref(); a *borrowed* one must not be
 *    dropped; a *stolen* argument is taken over by the callee.
 *  - Thread-safety is stated per function. "Any thread" means the call may
 *    run concurrently with any other hark call on the same objects, under
 *    any interleaving of any number of threads: no crash, no data race,
 *    no leak, and no unbounded delay (a thread sending forever, or a
 *    receiver that runs for the program's life, delays no other thread's
 *    finalization or reclamation).
 *  - Object lifetime: an object dies on the thread that drops its last
 *    strong reference, before that hark_unref returns, with no hark lock
 *    held. A send holds a reference on each receiver's object for the
 *    duration of that receiver's call (see hark_send), so the last
 *    reference may also go when such a call returns, on the sending
 *    thread. Nothing is ever finalized on a thread that did not drop it.
 */
#ifndef HARK_H
#define HARK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HARK_BUILDING) && defined(__GNUC__)
#define HARK_EXTERN __attribute__((visibility("default")))
#else
#define HARK_EXTERN
#endif

#define HARK_VERSION_MAJOR 0
#define HARK_VERSION_MINOR 1
#define HARK_VERSION_PATCH 0

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/* Error codes: negative, stable, and equal to the negated errno values of
 * Linux so that they read naturally next to libuv's. */
#define HARK_ENOENT (-2)
#define HARK_EAGAIN (-11)
#define HARK_ENOMEM (-12)
#define HARK_EBUSY (-16)
#define HARK_EEXIST (-17)
#define HARK_EINVAL (-22)
#define HARK_ERANGE (-34)
#define HARK_ECANCELED (-125)

/* Returns a static string naming err ("HARK_ENOMEM: out of memory"), or
 * "unknown error" for a value that is not a HARK_E* code. Any thread. */
HARK_EXTERN const char *hark_strerror(int err);

/* ------------------------------------------------------------------ */
/* Allocation                                                          */
/* ------------------------------------------------------------------ */

/* Replaces the functions through which every allocation of the library
 * goes (libuv's uv_replace_allocator). All four must be non-NULL, else
 * HARK_EINVAL and nothing changes. Call it before any other hark call,
 * from one thread: memory allocated by the previous functions is still
 * released with the new free_fn, so the pair must be compatible (tests
 * wrap malloc with a counting or failing shim). Returns 0. */
HARK_EXTERN int hark_replace_allocator(void *(*malloc_fn)(size_t),
                                       void *(*realloc_fn)(void *, size_t),
                                       void *(*calloc_fn)(size_t, size_t),
                                       void (*free_fn)(void *));

/* ------------------------------------------------------------------ */
/* Objects                                                             */
/* ------------------------------------------------------------------ */

/* The header of every hark object: embed it as the *first* member of
 * your struct, so that a pointer to your struct is a hark object. Its
 * content is private. */
typedef struct hark_object {
  struct hark__ctrl *hark_private_;
} hark_object;

typedef struct hark_type {
  const char *name;            /* shown by the tracker; borrowed, static */
  size_t size;                 /* bytes: what hark_new allocates */
  void (*finalize)(void *obj); /* NULL: hark frees obj with its allocator */
} hark_type;

/* Initialises the hark_object header at the start of caller-owned memory
 * with a strong count of 1. type is borrowed and must outlive the object.
 * When the count reaches zero, type->finalize(obj) releases the memory (it
 * may do so later, e.g. from a uv_close callback); with a NULL finalize,
 * hark releases obj with the allocator's free_fn, so use NULL only for
 * memory from that allocator.
 * Returns 0, HARK_EINVAL (obj or type NULL), HARK_ENOMEM. Any thread. */
HARK_EXTERN int hark_object_init(void *obj, const hark_type *type);

/* Allocates type->size zeroed bytes (at least sizeof(hark_object)) and
 * initialises them as an object of that type. Returns a new reference, or
 * NULL when type is NULL or memory runs out. Any thread. */
HARK_EXTERN void *hark_new(const hark_type *type);

/* Adds a strong reference to obj, which the caller must already hold a
 * reference to (taking one on an object that has died is a bug and
 * aborts). Returns obj; NULL is a harmless no-op returning NULL. Any
 * thread. */
HARK_EXTERN void *hark_ref(void *obj);

/* Drops a strong reference. On the last one the object dies, on this
 * thread, before hark_unref returns: weak references stop upgrading, its
 * death notifications run, then its type's finalize releases it; no hark
 * lock is held meanwhile, so finalize may take the caller's own locks,
 * call uv_close or any hark function. If a send on some thread is calling
 * one of obj's receivers at that moment, the reference that send holds
 * for the call is the last one: obj then dies when that call returns, on
 * the sending thread (never during the call). NULL is a harmless no-op.
 * Any thread. */
HARK_EXTERN void hark_unref(void *obj);

/* The object's type (borrowed), or NULL for NULL. Any thread. */
HARK_EXTERN const hark_type *hark_object_type(const void *obj);

/* ------------------------------------------------------------------ */
/* Weak references                                                     */
/* ------------------------------------------------------------------ */

/* A weak reference, held by value (like GLib's GWeakRef). Initialise with
 * HARK_WEAK_INIT; an all-zero hark_weak is the same. It never keeps its
 * object alive, and a hark_weak that has been set must be cleared (or set
 * to NULL) to release its small bookkeeping. Like GWeakRef, one hark_weak
 * may be got, set and cleared from any number of threads at once (the
 * three calls serialize on a lock bit inside it, held for a few
 * instructions); copying or freeing the hark_weak itself while another
 * thread uses it is the caller's race, as for any variable. */
typedef struct hark_weak {
  struct hark__ctrl *hark_private_;
} hark_weak;
/* clang-format off */
#define HARK_WEAK_INIT {NULL}
/* clang-format on */

/* Points w at obj (a live object the caller holds), or at nothing when obj
 * is NULL, releasing what w pointed at before. Returns 0, HARK_EINVAL (w
 * NULL), HARK_ENOENT (obj has already died; w is then cleared). Never
 * allocates. Any thread. */
HARK_EXTERN int hark_weak_set(hark_weak *w, void *obj);

/* Returns a new strong reference to w's object if it is still alive, else
 * NULL (also for NULL w). Race-free against a last hark_unref on another
 * thread: it never returns a dying object. Any thread. */
HARK_EXTERN void *hark_weak_get(const hark_weak *w);

/* Sets w to point at nothing. NULL is a harmless no-op. Any thread. */
HARK_EXTERN void hark_weak_clear(hark_weak *w);

/* ------------------------------------------------------------------ */
/* Death notifications                                                 */
/* ------------------------------------------------------------------ */

typedef struct hark_notify hark_notify;
typedef void (*hark_notify_fn)(hark_notify *n, void *obj);

/* A caller-owned registration of a callback that runs when an object dies
 * (like Python's weakref.finalize or g_object_weak_ref). Embed it in your
 * own struct or set data. Zero it before first use. */
struct hark_notify {
  void *data; /* yours */
  /* private */
  void *hark_ctrl_; /* accessed atomically */
  hark_notify *hark_next_;
  hark_notify *hark_prev_;
  hark_notify_fn hark_cb_;
};

/* Registers n so that cb(n, obj) runs once when obj dies. obj is a live
 * object the caller holds; n is borrowed and must stay valid until cb has
 * run or hark_notify_remove() returned 1. Never allocates.
 * cb runs on whichever thread drops the last reference, possibly inside
 * any hark call (a send, a weak-map operation); obj's memory is still
 * valid but it must not be revived (no hark_ref). cb may call any hark
 * function, free n, and drop references, but must not take a lock that
 * the code dropping the reference may hold.
 * Returns 0, HARK_EINVAL (NULL argument), HARK_EBUSY (n is registered),
 * HARK_ENOENT (obj is already dying). Any thread. */
HARK_EXTERN int hark_notify_add(hark_notify *n, void *obj, hark_notify_fn cb);

/* Unregisters n. Returns 1 if it was registered and its callback will not
 * run; 0 if it was not registered, has run, or is running on another
 * thread right now (it does not wait for it). Any thread. */
HARK_EXTERN int hark_notify_remove(hark_notify *n);

/* ------------------------------------------------------------------ */
/* Weak-key map                                                        */
/* ------------------------------------------------------------------ */

/* A map from hark objects to values (Python's WeakKeyDictionary). An
 * entry lives while its key object lives; when the key dies the entry
 * goes and value_free(value) runs, by the time the key's last hark_unref
 * returns. The map never keeps a key alive; a value that must reach its
 * key should hold a hark_weak to it, or the key never dies. Keys are
 * matched by object identity, never by address alone: an object that
 * reuses a dead key's address is a new key.
 * All functions may be called from any thread (hark_weakmap_peek's result
 * excepted, see there); value_free runs with no lock of the map held, so
 * it may use the map and drop references. */
typedef struct hark_weakmap hark_weakmap;

/* Called with each hark object a value holds a strong reference to (see
 * hark_weakmap_ops.value_traverse and hark_type.traverse). */
typedef void (*hark_visit_fn)(void *obj, void *arg);

/* How a map treats its values; every member may be NULL. */
typedef struct hark_weakmap_ops {
  /* Releases a value the map owns (on removal, replacement, key death or
   * map free). NULL: the map never releases values. */
  void (*value_free)(void *value);
  /* Returns a new reference to value, for hark_weakmap_get (e.g. an
   * increment of the value's own count). Runs under the map's lock: it
   * must not call the map. NULL: hark_weakmap_get is not available. */
  void *(*value_ref)(void *value);
  /* Reports each hark object the value holds a strong reference to, with
   * visit(obj, arg), for the leak finder. NULL: the value's references
   * are unknown. */
  void (*value_traverse)(void *value, hark_visit_fn visit, void *arg);
} hark_weakmap_ops;

/* Returns a new empty map, or NULL when memory runs out. value_free may be
 * NULL (values are then not released by the map). Same as
 * hark_weakmap_new_ops with only value_free set. */
HARK_EXTERN hark_weakmap *hark_weakmap_new(void (*value_free)(void *value));

/* Returns a new empty map whose values are handled by ops (copied; NULL is
 * no ops), or NULL when memory runs out. */
HARK_EXTERN hark_weakmap *hark_weakmap_new_ops(const hark_weakmap_ops *ops);

/* Frees the map, releasing every remaining value with value_free. NULL is
 * a harmless no-op. No other thread may use the map during or after. */
HARK_EXTERN void hark_weakmap_free(hark_weakmap *m);

/* Maps key (a live object the caller holds) to value. The map steals
 * value: it releases it with value_free on removal, replacement, key
 * death or map free. A replaced value is released before this returns.
 * Returns 0, HARK_EINVAL (m or key NULL), HARK_ENOENT (key already dying),
 * HARK_ENOMEM (value then stays the caller's and the map is unchanged). */
HARK_EXTERN int hark_weakmap_set(hark_weakmap *m, void *key, void *value);

/* Returns a new reference to key's value, made by the map's value_ref
 * while the entry cannot go (under the map's lock): the caller releases it
 * as its value type says. NULL if key has no entry, if m or key is NULL,
 * or if the map was made without value_ref. key is a live object the
 * caller holds. Any thread, concurrently with any change of the map. */
HARK_EXTERN void *hark_weakmap_get(hark_weakmap *m, void *key);

/* Returns key's value, borrowed, or NULL: it stays valid only until the
 * entry is removed or replaced, or its key dies, which another thread may
 * do at any moment. Use it where one thread owns the map's changes and
 * the key's references (e.g. everything happens on one loop thread);
 * elsewhere use hark_weakmap_get. */
HARK_EXTERN void *hark_weakmap_peek(hark_weakmap *m, void *key);

/* Removes key's entry, releasing its value. Returns 1 if there was one,
 * 0 if not, HARK_EINVAL for a NULL map or key. */
HARK_EXTERN int hark_weakmap_remove(hark_weakmap *m, void *key);

/* Number of entries, i.e. of live keys. 0 for NULL. */
HARK_EXTERN size_t hark_weakmap_size(hark_weakmap *m);

/* ------------------------------------------------------------------ */
/* Signals                                                             */
/* ------------------------------------------------------------------ */

/* A signal is a hark object: hark_unref() drops it. */
typedef struct hark_signal hark_signal;
typedef struct hark_loop hark_loop;

/* A receiver: self is the object it is bound to (NULL for a plain
 * function), sender the object that sent (NULL for an any-sender send),
 * args the send's argument, borrowed for the call. Return 0 for success;
 * non-zero stops hark_send and is returned by it. */
typedef int (*hark_receiver_fn)(void *self, void *sender, void *args);

/* Connection flags. */
#define HARK_WEAK 0u   /* default: self is held weakly */
#define HARK_STRONG 1u /* the signal holds a strong reference to self */
#define HARK_ONCE 2u   /* disconnected just before its first call */

/* Returns a new signal named name (copied; NULL allowed, shown as
 * "(unnamed)"), a new reference, or NULL when memory runs out. */
HARK_EXTERN hark_signal *hark_signal_new(const char *name);

/* The signal's name, borrowed for the signal's life. */
HARK_EXTERN const char *hark_signal_name(const hark_signal *sig);

/* Connects receiver fn bound to self (NULL or a live hark object) for
 * sends from sender (NULL: every send; else a live hark object, which the
 * signal never keeps alive: the connection goes when the sender dies).
 * self is held weakly unless flags has HARK_STRONG: a receiver whose self
 * dies is never called again and is dropped by itself (lazily: at the next
 * send or sweep that meets it). The identity of a connection is
 * (fn, self, sender). Receivers run in connection order.
 * Returns 0, HARK_EEXIST (same identity connected; nothing changes),
 * HARK_EINVAL (sig or fn NULL, unknown flag), HARK_ENOENT (self or sender
 * already dying), HARK_ENOMEM. Any thread, also from inside a receiver
 * (a receiver connected during a send is not called by that send). */
HARK_EXTERN int hark_connect(hark_signal *sig, hark_receiver_fn fn, void *self,
                             void *sender, unsigned flags);

/* Like hark_connect, with the identity (uid, sender) instead: connecting
 * the same uid again for the same sender is HARK_EEXIST even with another
 * fn or self (Django's dispatch_uid). uid is copied; NULL or "" is
 * HARK_EINVAL. */
HARK_EXTERN int hark_connect_uid(hark_signal *sig, const char *uid,
                                 hark_receiver_fn fn, void *self, void *sender,
                                 unsigned flags);

/* Like hark_connect, but the receiver always runs on hl's loop thread
 * (Qt's queued connection): a send from that thread calls it directly; a
 * send from another thread queues the call (see hark_signal_set_args_ops
 * for the argument's lifetime) and counts it as called. A queued call is
 * skipped if self or sender dies before it runs. hl is held strongly by
 * the connection. Returns as hark_connect. */
HARK_EXTERN int hark_connect_loop(hark_signal *sig, hark_loop *hl,
                                  hark_receiver_fn fn, void *self, void *sender,
                                  unsigned flags);

/* Removes the connection (fn, self, sender). self and sender are compared
 * by identity (the pointers used to connect). A connection whose weak
 * receiver has died counts as already gone (it was dropped by itself), so
 * a new object at a dead receiver's address is never mistaken for it.
 * Returns 1 if removed, 0 if there was none, HARK_EINVAL.
 * Any thread, also from inside a receiver: a receiver disconnected before
 * its turn in a running send is not called. */
HARK_EXTERN int hark_disconnect(hark_signal *sig, hark_receiver_fn fn,
                                void *self, void *sender);

/* Removes the connection (uid, sender). Returns 1, 0 or HARK_EINVAL. */
HARK_EXTERN int hark_disconnect_uid(hark_signal *sig, const char *uid,
                                    void *sender);

/* Blocks the connection (fn, self, sender): it is skipped by sends until
 * unblocked as many times as blocked (GLib's counted blocking; the count
 * has 64 bits and never wraps). Returns 0, HARK_ENOENT (no such
 * connection), HARK_EINVAL, HARK_ERANGE (unblock of a connection that is
 * not blocked, or a block beyond 2^64 - 1). Any thread. */
HARK_EXTERN int hark_block(hark_signal *sig, hark_receiver_fn fn, void *self,
                           void *sender);
HARK_EXTERN int hark_unblock(hark_signal *sig, hark_receiver_fn fn, void *self,
                             void *sender);
HARK_EXTERN int hark_block_uid(hark_signal *sig, const char *uid, void *sender);
HARK_EXTERN int hark_unblock_uid(hark_signal *sig, const char *uid,
                                 void *sender);

/* True if a send from sender would call at least one live, unblocked
 * receiver (Django's has_listeners). Any thread. */
HARK_EXTERN bool hark_has_listeners(hark_signal *sig, void *sender);

/* Calls, in connection order, every live unblocked receiver connected for
 * sender and every any-sender one (only the latter when sender is NULL).
 * sig and sender (when not NULL) are objects the caller holds references
 * to until the call returns (another thread must not drop them); args is
 * borrowed. A receiver on this thread may drop any reference, the last
 * one included: the send keeps sig and sender alive until it returns.
 * For each receiver's call the send holds a strong reference on its self
 * (a weak receiver is upgraded for the call, or skipped if it has died):
 * hark_ref(self) always works inside a receiver, and self's death, if
 * another thread drops its last reference meanwhile, comes after the call
 * returns, on this thread.
 * Stops at the first receiver returning non-zero and returns that value
 * (Django's exception propagation); else returns how many receivers it
 * called. Fails only with HARK_EINVAL (sig NULL): when memory runs out
 * for its receiver list, the send walks the connections under the
 * signal's lock in batches instead (slower, same result).
 * Any thread; receivers run on the calling thread (loop-bound ones
 * excepted) and may connect, disconnect, send, and drop any reference,
 * including the last one to the signal, the sender or themselves. A send
 * writes no memory shared with sends on other signals. */
HARK_EXTERN int hark_send(hark_signal *sig, void *sender, void *args);

/* Like hark_send, but calls every receiver whatever they return, reports
 * each result to on_result (may be NULL) right after the call, and
 * returns the number of receivers that returned non-zero (or a negative
 * HARK_E* as hark_send). */
HARK_EXTERN int hark_send_robust(hark_signal *sig, void *sender, void *args,
                                 void (*on_result)(void *data,
                                                   hark_receiver_fn fn,
                                                   void *self, int result),
                                 void *data);

/* The accumulator form (GLib's accumulators): like hark_send_robust, but
 * acc decides after each receiver whether the emission goes on: a
 * non-zero return from acc stops it. Returns the number of receivers
 * called, or a negative HARK_E* as hark_send. */
HARK_EXTERN int hark_send_accumulate(hark_signal *sig, void *sender, void *args,
                                     int (*acc)(void *data, hark_receiver_fn fn,
                                                void *self, int result),
                                     void *data);

/* How queued (loop-bound, cross-thread) calls carry args: copy(args)
 * makes the value a queued call receives and free releases it after the
 * call (or when the call is dropped). Without ops args is passed as is
 * and must outlive the queued calls. Returns 0 or HARK_EINVAL (copy and
 * free must both be set or both NULL). Call before sends start. */
HARK_EXTERN int hark_signal_set_args_ops(hark_signal *sig,
                                         void *(*copy)(void *args),
                                         void (*free_fn)(void *args));

/* Leak guard (Node's setMaxListeners): when one sender (or the any-sender
 * list) gathers more than max receivers, one warning naming the signal is
 * printed to stderr, once per signal. 0 turns it off; the default is
 * HARK_DEFAULT_MAX_RECEIVERS. Any thread. */
#define HARK_DEFAULT_MAX_RECEIVERS 100
HARK_EXTERN void hark_signal_set_max_receivers(hark_signal *sig, size_t max);

/* Number of connections the signal holds, including dead weak receivers
 * not yet dropped. 0 for NULL. Any thread. */
HARK_EXTERN size_t hark_signal_receivers(hark_signal *sig);

/* Drops the connections whose weak receiver has died and returns how many
 * it dropped. The loop layer calls this in idle time for every signal;
 * call it yourself in programs without a hark loop. Any thread. */
HARK_EXTERN size_t hark_signal_sweep(hark_signal *sig);

/* ------------------------------------------------------------------ */
/* Event loop (libuv)                                                  */
/* ------------------------------------------------------------------ */

/* Attaches hark to loop, whose thread (the loop thread) is the calling
 * thread. Returns a new reference (a hark loop is a hark object), or NULL
 * when memory runs out or a libuv handle cannot be made. loop is
 * borrowed and must outlive hark_loop_close's handles closing.
 * While attached, hark keeps uv_run running (other threads may post) until
 * hark_loop_close(); dropping the last reference without closing closes
 * it. Dead weak receivers are swept after each loop iteration in which a
 * receiver died (an idle loop asleep in poll sweeps when it next wakes). */
HARK_EXTERN hark_loop *hark_loop_new(uv_loop_t *loop);

/* The uv loop hl was made for (borrowed). Any thread. */
HARK_EXTERN uv_loop_t *hark_loop_uv(hark_loop *hl);

/* Closes hl: pending posts are dropped (their args_free runs), later posts
 * fail with HARK_ECANCELED, asynchronous receivers that never completed
 * are reported on stderr, and hark's handles are closed, so that uv_run
 * finishes and uv_loop_close returns 0. Idempotent. Loop thread only, also
 * from inside a receiver (called from another thread it prints a warning
 * and does nothing). The memory goes with the last reference, after the
 * handles have closed. */
HARK_EXTERN void hark_loop_close(hark_loop *hl);

/* Queues a send of sig from sender with args to run on hl's loop thread,
 * in post order per posting thread. sig is held strongly and sender
 * weakly while queued (a post whose sender died is dropped and counted).
 * On success args_free(args) runs exactly once (if not NULL), whether the
 * send happened or not. Returns 0, HARK_EAGAIN (queue full; args stays
 * the caller's), HARK_ECANCELED (hl closed), HARK_EINVAL, HARK_ENOMEM.
 * Any thread. */
HARK_EXTERN int hark_post(hark_loop *hl, hark_signal *sig, void *sender,
                          void *args, void (*args_free)(void *args));

/* Like hark_post, from the loop thread only (else HARK_EINVAL): the send
 * runs on the next loop iteration (Node's setImmediate), never before this
 * returns. Its queue is bounded separately, by the same limit. */
HARK_EXTERN int hark_send_later(hark_loop *hl, hark_signal *sig, void *sender,
                                void *args, void (*args_free)(void *args));

/* Sets the bound of hl's post queue, which also carries the cross-thread
 * calls of loop-bound receivers, and of its hark_send_later queue (default
 * HARK_DEFAULT_QUEUE_LIMIT; must be > 0). Token completions are never
 * refused. Returns 0 or HARK_EINVAL. Any thread. */
#define HARK_DEFAULT_QUEUE_LIMIT 65536
HARK_EXTERN int hark_loop_set_queue_limit(hark_loop *hl, size_t limit);

typedef struct hark_loop_stats {
  unsigned long long posted;    /* accepted by hark_post/hark_send_later */
  unsigned long long delivered; /* sends performed on the loop */
  unsigned long long dropped;   /* sender died while queued, or closed */
  unsigned long long rejected;  /* HARK_EAGAIN answers */
  unsigned long long swept;     /* dead receivers dropped in idle time */
} hark_loop_stats;

/* Copies hl's counters into out. Returns 0 or HARK_EINVAL. Any thread. */
HARK_EXTERN int hark_loop_get_stats(hark_loop *hl, hark_loop_stats *out);

/* Asynchronous receivers. Inside a receiver called by hark_send_async, a
 * receiver that finishes later (after its own I/O) calls hark_token_take()
 * and later hark_token_done(token, result) exactly once; its return value
 * is then ignored. A receiver that takes no token completes with its
 * return value. Outside an asynchronous send, or when memory runs out,
 * hark_token_take() returns NULL (the receiver then completes with its
 * return value). */
typedef struct hark_token hark_token;
HARK_EXTERN hark_token *hark_token_take(void);

/* Completes a token; result non-zero counts as a failure. Any thread: the
 * completion is handed to the loop thread. NULL is a harmless no-op. */
HARK_EXTERN void hark_token_done(hark_token *tok, int result);

/* Sends on the loop thread (which must be the caller's, else HARK_EINVAL)
 * and calls
 * on_done(data, failures) on the loop thread once every receiver has
 * completed, never before this returns. args is borrowed until on_done.
 * A receiver that has not completed by hark_loop_close is reported on
 * stderr and counted as a failure. Returns 0, HARK_EINVAL, HARK_ENOMEM,
 * HARK_ECANCELED (hl closed). */
HARK_EXTERN int hark_send_async(hark_loop *hl, hark_signal *sig, void *sender,
                                void *args,
                                void (*on_done)(void *data, int failures),
                                void *data);

/* ------------------------------------------------------------------ */
/* Leak tracker                                                        */
/* ------------------------------------------------------------------ */

/* Number of live (not yet finalized) objects whose type is named
 * type_name; all live objects for NULL. Any thread. */
HARK_EXTERN size_t hark_live_count(const char *type_name);

typedef struct hark_snapshot hark_snapshot;

/* Returns a snapshot of live objects and bytes per type name (caller frees
 * it with hark_snapshot_free), or NULL when memory runs out. Any thread. */
HARK_EXTERN hark_snapshot *hark_snapshot_take(void);

/* Live objects of type_name in s (all types for NULL); 0 for NULL s. */
HARK_EXTERN size_t hark_snapshot_count(const hark_snapshot *s,
                                       const char *type_name);

/* Prints a table of the types whose counts differ between before and
 * after, like pympler's tracker: type, +/- objects, +/- bytes. NULL out is
 * stdout; a NULL snapshot counts as empty. */
HARK_EXTERN void hark_snapshot_print_diff(FILE *out,
                                          const hark_snapshot *before,
                                          const hark_snapshot *after);

/* Frees s. NULL is a harmless no-op. */
HARK_EXTERN void hark_snapshot_free(hark_snapshot *s);

/* The environment variable HARK_DEBUG (read once, comma-separated):
 *   leaks      at exit, print the live objects per type to stderr;
 *   receivers  print when a weakly connected receiver dies while still
 *              connected, naming the signal. */

#ifdef __cplusplus
}
#endif
#endif /* HARK_H */
