/* The operation-sequence interpreter of the model-based test, shared by
 * tests/test-model.c (fed by a PRNG) and, later, a libFuzzer harness (fed
 * by the fuzzer):
 *
 *   model_init();                              once, before any hark call
 *   int failed = model_run(bytes, n, &report); any bytes are valid input
 *
 * The bytes are read as operations of MODEL_OPSIZE bytes each (a short
 * last one is zero-padded): byte 0 picks the operation, the others its
 * arguments. Every operation is run against hark and against a small
 * reference model of the contract (DESIGN.md, include/hark.h) written
 * with arrays and linear scans; the first disagreement ends the run with
 * a message in report. With model_trace set, every operation, receiver
 * call and reentrant action is printed as it runs.
 *
 * What the model knows (the contract, precisely):
 *  - objects: strong counts as the sum of the references the model owns,
 *    the strong connections holding them, the sends pinning them (signal
 *    and sender) and the reference a send holds on a receiver's self for
 *    the call (dropped after it returns and its on_result ran); an object
 *    dies when that sum reaches zero, then and there: its death removes
 *    its weak-map entry (value freed by the time the last reference goes)
 *    and the connections it is the sender of (releasing their strong
 *    selves), and finalize runs once (checked between top-level
 *    operations);
 *  - a signal's death drops its connections and their strong selves;
 *  - connections: identity (fn, self, sender) or (uid, sender), EEXIST on
 *    a live duplicate; a connection whose weak self died is a "zombie":
 *    never called, never listening, dropped lazily, so disconnecting or
 *    blocking it with its own pointers may find it or not (both answers
 *    accepted); a new object at a dead one's address is never it;
 *  - sends: the receivers connected at the start, in connection order,
 *    any-sender ones always and sender-specific ones for their sender;
 *    skipped at their turn when disconnected, dead or blocked; HARK_ONCE
 *    disconnected just before its call; hark_send stops at the first
 *    non-zero result and returns HARK_ESTOPPED (hark_send_ex: how many
 *    were called and the value), else the number called;
 *    hark_send_robust calls all, reports each result to on_result right
 *    after the call and returns the number of failures; the send pins the
 *    signal and the sender until it returns.
 * Receivers are called in lockstep with the model: each call is checked
 * against the receiver the model expects next, then runs the action
 * scripted for its connection (disconnect itself or another, drop a
 * reference, connect, block, send again), on both sides. */
#ifndef HARK_TEST_MODEL_H
#define HARK_TEST_MODEL_H

#include "util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define MODEL_OPSIZE 8

typedef struct model_report {
  int failed;   /* 0 when hark and the model agreed throughout */
  size_t step;  /* the operation (0-based) that disagreed */
  size_t steps; /* operations run */
  long calls;   /* receiver calls */
  char msg[1024];
} model_report;

/* Print every operation to this stream (NULL: quiet). */
static FILE *model_trace;

enum {
  M_OBJS = 8,        /* object slots */
  M_SIGS = 2,        /* signal slots */
  M_WEAKS = 4,       /* hark_weak variables */
  M_FNS = 4,         /* receiver functions */
  M_UIDS = 3,        /* dispatch uids */
  M_MAXIDS = 4096,   /* objects per run */
  M_MAXCONNS = 8192, /* connections per run */
  M_LIVECAP = 40,    /* live connections per signal */
  M_MAXDEPTH = 3,    /* nested sends */
  M_BUDGET = 300     /* receiver calls per operation before sends stop */
};

#define M_LIVE 0x4c495645u
#define M_DEAD 0x44454144u
#define M_VMAGIC 0x56414c55u

typedef struct mobj {
  hark_object base;
  unsigned id;
  unsigned run;
  unsigned magic;
} mobj;

typedef struct morec {
  mobj *p;
  int refs;  /* owned + strong connections + pins */
  int owned; /* references the model holds */
  bool alive;
  int finalized;
  int slot;
  int map_tag; /* 0: no weak-map entry */
} morec;

typedef struct msrec {
  hark_signal *p;
  int refs, owned;
  bool alive;
} msrec;

typedef struct mconn {
  int sig, fn, uid; /* uid -1: identity (fn, self, sender) */
  unsigned self, sender;
  void *selfp, *senderp;
  unsigned flags;
  int blocks;
  bool removed;
  uint8_t act, param, rv;
} mconn;

typedef struct mframe {
  int sig;
  unsigned sender;
  void *senderp;
  bool robust;
  int *list, n, cur;
  int called, failed, ret;
  bool stopped;
  bool want_result; /* robust: on_result must come next */
  int want_fn, want_rv;
  void *want_self;
  unsigned held; /* the reference the send holds on the self it called,
                   dropped after the call (and its on_result) */
} mframe;

typedef struct mval {
  unsigned magic;
  int tag;
} mval;

static struct model {
  unsigned run;
  morec objs[M_MAXIDS];
  unsigned nids;
  unsigned slot[M_OBJS];
  msrec sig[M_SIGS];
  mconn conns[M_MAXCONNS];
  int nconns;
  hark_weak weak[M_WEAKS];
  unsigned weak_id[M_WEAKS];
  hark_weakmap *map;
  long vfree_expect, vfree_count;
  int next_tag;
  int depth;  /* sends in flight */
  int indent; /* for traces */
  long budget;
  long calls;
  int failed;
  size_t step;
  char msg[1024];
  long bad_finalize;
  long base_objs, base_sigs, base_all, base_blocks;
} M;

static const char *const M_UID[M_UIDS] = {"u0", "u1", "u2"};

/* ---- failures and tracing ------------------------------------------------ */

static void mfail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mfail(const char *fmt, ...) {
  if (M.failed)
    return;
  M.failed = 1;
  va_list ap;
  va_start(ap, fmt);
  int k =
      snprintf(M.msg, sizeof M.msg, "op #%zu (depth %d): ", M.step, M.depth);
  vsnprintf(M.msg + k, sizeof M.msg - (size_t)k, fmt, ap);
  va_end(ap);
  if (model_trace != NULL)
    fprintf(model_trace, "  !! %s\n", M.msg);
}

static void tr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void tr(const char *fmt, ...) {
  if (model_trace == NULL)
    return;
  fprintf(model_trace, "%*s", 2 + 2 * M.indent, "");
  va_list ap;
  va_start(ap, fmt);
  vfprintf(model_trace, fmt, ap);
  va_end(ap);
  fputc('\n', model_trace);
}

/* Names for traces, from a small ring of buffers. */
static char m_names[16][24];
static unsigned m_name_i;
static const char *oname(unsigned id) {
  char *b = m_names[m_name_i++ % 16];
  if (id == 0)
    snprintf(b, 24, "*");
  else
    snprintf(b, 24, "o%d#%u", M.objs[id].slot, id);
  return b;
}
static const char *flname(unsigned f) {
  static const char *const n[] = {"WEAK", "STRONG", "ONCE", "STRONG|ONCE"};
  return f < 4 ? n[f] : "INVALID";
}
static const char *const M_ACTS[] = {"nothing", "disconnect-self", "disconnect",
                                     "unref",   "connect",         "send",
                                     "block"};
enum {
  A_NOTHING,
  A_DISC_SELF,
  A_DISC,
  A_UNREF,
  A_CONNECT,
  A_SEND,
  A_BLOCK,
  A_N
};

static int script_rv(uint8_t rv) {
  if ((rv & 7) != 7)
    return 0;
  int v = (rv >> 3) + 1;
  return (rv & 4) ? -v : v;
}

/* ---- objects ---------------------------------------------------------------
 */

static void mobj_finalize(void *obj) {
  mobj *o = obj;
  if (o->magic != M_LIVE)
    M.bad_finalize++;
  o->magic = M_DEAD;
  if (o->run == M.run && o->id > 0 && o->id < M_MAXIDS)
    M.objs[o->id].finalized++;
  test_free(obj);
}

static const hark_type mobj_type = {"model_obj", sizeof(mobj), mobj_finalize, NULL};

static void *optr(unsigned id) { return id ? (void *)M.objs[id].p : NULL; }

/* An object from a byte: 0 (NULL) for 8 and 9 (mod 10), else the live
 * object in that slot or the next one holding one, or 0 if none does. */
static unsigned pick_obj(unsigned b) {
  b %= 10;
  if (b >= M_OBJS)
    return 0;
  for (unsigned i = 0; i < M_OBJS; i++) {
    unsigned id = M.slot[(b + i) % M_OBJS];
    if (id && M.objs[id].alive)
      return id;
  }
  return 0;
}

/* A sender from a byte: half the time NULL, else one of four slots (or
 * the next live one), so that sender-specific receivers meet sends. */
static unsigned pick_sender(unsigned b) {
  return b % 4 < 2 ? 0 : pick_obj((b >> 2) % 4);
}

/* Connection flags from 3 bits: mostly weak, some strong, some once. */
static unsigned pick_flags(unsigned b) {
  static const unsigned f[8] = {
      0, 0, 0, 0, HARK_STRONG, HARK_STRONG, HARK_ONCE, HARK_STRONG | HARK_ONCE};
  return f[b & 7];
}

static bool self_alive(const mconn *c) {
  return c->self == 0 || M.objs[c->self].alive;
}

static void m_unref_obj(unsigned id);

static void m_remove_conn(int ci) {
  mconn *c = &M.conns[ci];
  c->removed = true;
  if ((c->flags & HARK_STRONG) && c->self)
    m_unref_obj(c->self);
}

static void m_die_obj(unsigned id) {
  morec *o = &M.objs[id];
  o->alive = false;
  if (o->map_tag) {
    o->map_tag = 0;
    M.vfree_expect++;
  }
  for (int i = 0; i < M.nconns; i++)
    if (!M.conns[i].removed && M.conns[i].sender == id)
      m_remove_conn(i);
}

static void m_unref_obj(unsigned id) {
  morec *o = &M.objs[id];
  if (o->refs <= 0) {
    mfail("model: %s has no reference to drop", oname(id));
    return;
  }
  if (--o->refs == 0)
    m_die_obj(id);
}

static void m_sig_finalize(int s) {
  for (int i = 0; i < M.nconns; i++)
    if (!M.conns[i].removed && M.conns[i].sig == s)
      m_remove_conn(i);
}

static void m_unref_sig(int s) {
  msrec *g = &M.sig[s];
  if (--g->refs == 0) {
    g->alive = false;
    m_sig_finalize(s);
  }
}

static void check_values(void) {
  if (M.vfree_count != M.vfree_expect)
    mfail("weak-map values freed: %ld, model expects %ld", M.vfree_count,
          M.vfree_expect);
}

/* ---- connections ------------------------------------------------------------
 */

static int live_conns(int s) {
  int n = 0;
  for (int i = 0; i < M.nconns; i++)
    n += !M.conns[i].removed && M.conns[i].sig == s && self_alive(&M.conns[i]);
  return n;
}

static int zombie_conns(int s) {
  int n = 0;
  for (int i = 0; i < M.nconns; i++)
    n += !M.conns[i].removed && M.conns[i].sig == s && !self_alive(&M.conns[i]);
  return n;
}

/* The connection with this identity, or -1. */
static int find_ident(int s, int fn, int uid, unsigned self, unsigned sender) {
  for (int i = 0; i < M.nconns; i++) {
    mconn *c = &M.conns[i];
    if (c->removed || c->sig != s || c->sender != sender || c->uid != uid)
      continue;
    if (uid >= 0 || (c->fn == fn && c->self == self))
      return i;
  }
  return -1;
}

/* A dead weak receiver not yet dropped must never be found by
 * disconnect/block through a new object that reuses its self's address
 * (DESIGN.md). That was a library bug; HARK_MODEL_STRICT_REUSE=0 still
 * tolerates it, for bisecting. The zombie at selfp, or -1. */
static int reuse_zombie(int s, int fn, int uid, void *selfp, unsigned sender) {
  static int strict = -1;
  if (strict < 0) {
    const char *e = getenv("HARK_MODEL_STRICT_REUSE");
    strict = e == NULL || atoi(e) > 0;
  }
  if (strict || uid >= 0 || selfp == NULL)
    return -1;
  for (int i = 0; i < M.nconns; i++) {
    mconn *c = &M.conns[i];
    if (!c->removed && c->sig == s && c->uid < 0 && c->fn == fn &&
        c->sender == sender && c->selfp == selfp && !self_alive(c))
      return i;
  }
  return -1;
}

/* The k-th connection of s (mod their number) that may be named by its
 * own pointers: a uid one, or one whose self is not finalized (a freed
 * address may already belong to another object). */
static int pick_conn(int s, unsigned k) {
  int n = 0;
  for (int pass = 0; pass < 2; pass++) {
    int j = 0;
    for (int i = 0; i < M.nconns; i++) {
      mconn *c = &M.conns[i];
      if (c->removed || c->sig != s)
        continue;
      if (c->uid < 0 && c->self && M.objs[c->self].finalized)
        continue;
      if (pass == 1 && j == (int)(k % (unsigned)n))
        return i;
      j++;
    }
    n = j;
    if (n == 0)
      return -1;
  }
  return -1;
}

static bool m_has_listeners(int s, unsigned sender) {
  for (int i = 0; i < M.nconns; i++) {
    mconn *c = &M.conns[i];
    if (!c->removed && c->sig == s && (c->sender == 0 || c->sender == sender) &&
        self_alive(c) && c->blocks == 0)
      return true;
  }
  return false;
}

static int rcv0(void *, void *, void *);
static int rcv1(void *, void *, void *);
static int rcv2(void *, void *, void *);
static int rcv3(void *, void *, void *);
static const hark_receiver_fn M_FN[M_FNS] = {rcv0, rcv1, rcv2, rcv3};

static void act_connect(int s, int fn, int uid, unsigned self, unsigned sender,
                        unsigned flags, uint8_t act, uint8_t param, uint8_t rv,
                        bool invalid) {
  msrec *g = &M.sig[s];
  if (!g->alive || live_conns(s) >= M_LIVECAP || M.nconns >= M_MAXCONNS)
    return;
  if (self == 0)
    flags &= ~HARK_STRONG; /* a plain function has nothing to hold */
  int exp = 0, zombie = -1;
  if (invalid) {
    exp = HARK_EINVAL;
  } else {
    int m = find_ident(s, fn, uid, self, sender);
    if (m >= 0 && self_alive(&M.conns[m]))
      exp = HARK_EEXIST;
    else
      zombie = m; /* replaced by the new connection */
  }
  unsigned hf = invalid ? flags | 8u : flags;
  int got = uid >= 0
                ? hark_connect_uid(g->p, M_UID[uid], M_FN[fn], optr(self),
                                   optr(sender), hf)
                : hark_connect(g->p, M_FN[fn], optr(self), optr(sender), hf);
  tr("connect%s s%d %s f%d self=%s sender=%s %s script=%s/%u rv=%d -> %d",
     uid >= 0 ? "_uid" : "", s, uid >= 0 ? M_UID[uid] : "", fn, oname(self),
     oname(sender), invalid ? "INVALID" : flname(flags), M_ACTS[act % A_N],
     param, script_rv(rv), got);
  if (got != exp) {
    mfail("connect%s s%d f%d self=%s sender=%s %s returned %d, model %d",
          uid >= 0 ? "_uid" : "", s, fn, oname(self), oname(sender),
          flname(flags), got, exp);
    return;
  }
  if (exp != 0)
    return;
  if (zombie >= 0)
    m_remove_conn(zombie);
  mconn *c = &M.conns[M.nconns++];
  *c = (mconn){.sig = s,
               .fn = fn,
               .uid = uid,
               .self = self,
               .sender = sender,
               .selfp = optr(self),
               .senderp = optr(sender),
               .flags = flags,
               .act = act,
               .param = param,
               .rv = rv};
  if ((flags & HARK_STRONG) && self)
    M.objs[self].refs++;
}

/* Disconnects by identity; a zombie may or may not still be found. */
static void act_disconnect(int s, int fn, int uid, unsigned self, void *selfp,
                           unsigned sender, void *senderp) {
  if (!M.sig[s].alive)
    return;
  hark_signal *sp = M.sig[s].p;
  int m = find_ident(s, fn, uid, self, sender);
  if (m < 0)
    m = reuse_zombie(s, fn, uid, selfp, sender);
  int got = uid >= 0 ? hark_disconnect_uid(sp, M_UID[uid], senderp)
                     : hark_disconnect(sp, M_FN[fn], selfp, senderp);
  tr("disconnect%s s%d %s f%d self=%s sender=%s -> %d", uid >= 0 ? "_uid" : "",
     s, uid >= 0 ? M_UID[uid] : "", fn, uid >= 0 ? "-" : oname(self),
     oname(sender), got);
  bool zombie = m >= 0 && !self_alive(&M.conns[m]);
  int exp = m >= 0 ? 1 : 0;
  if (zombie ? (got != 0 && got != 1) : got != exp) {
    mfail("disconnect%s s%d f%d self=%s sender=%s returned %d, model %d%s",
          uid >= 0 ? "_uid" : "", s, fn, oname(self), oname(sender), got, exp,
          zombie ? " (or 0: dead receiver)" : "");
    return;
  }
  if (m >= 0)
    m_remove_conn(m);
}

static void act_block(int s, int fn, int uid, unsigned self, void *selfp,
                      unsigned sender, void *senderp, int delta) {
  if (!M.sig[s].alive)
    return;
  hark_signal *sp = M.sig[s].p;
  int m = find_ident(s, fn, uid, self, sender);
  if (m < 0)
    m = reuse_zombie(s, fn, uid, selfp, sender);
  int got;
  if (uid >= 0)
    got = delta > 0 ? hark_block_uid(sp, M_UID[uid], senderp)
                    : hark_unblock_uid(sp, M_UID[uid], senderp);
  else
    got = delta > 0 ? hark_block(sp, M_FN[fn], selfp, senderp)
                    : hark_unblock(sp, M_FN[fn], selfp, senderp);
  tr("%s%s s%d %s f%d self=%s sender=%s -> %d", delta > 0 ? "block" : "unblock",
     uid >= 0 ? "_uid" : "", s, uid >= 0 ? M_UID[uid] : "", fn,
     uid >= 0 ? "-" : oname(self), oname(sender), got);
  if (m >= 0 && !self_alive(&M.conns[m])) {
    if (got != 0 && got != HARK_ENOENT && got != HARK_ERANGE)
      mfail("%s of a dead receiver returned %d",
            delta > 0 ? "block" : "unblock", got);
    return;
  }
  int exp = m < 0                                 ? HARK_ENOENT
            : delta < 0 && M.conns[m].blocks == 0 ? HARK_ERANGE
                                                  : 0;
  if (got != exp) {
    mfail("%s%s s%d f%d self=%s sender=%s returned %d, model %d",
          delta > 0 ? "block" : "unblock", uid >= 0 ? "_uid" : "", s, fn,
          oname(self), oname(sender), got, exp);
    return;
  }
  if (exp == 0)
    M.conns[m].blocks += delta;
}

static void act_disconnect_conn(int ci) {
  mconn *c = &M.conns[ci];
  act_disconnect(c->sig, c->fn, c->uid, c->self, c->selfp, c->sender,
                 c->senderp);
}

static void act_block_conn(int ci, int delta) {
  mconn *c = &M.conns[ci];
  act_block(c->sig, c->fn, c->uid, c->self, c->selfp, c->sender, c->senderp,
            delta);
}

/* ---- sends ----------------------------------------------------------------
 */

/* The next receiver the send should call, applying HARK_ONCE; -1 if none.
 * With call, the send takes its reference on the receiver's self for the
 * call first (so a HARK_ONCE|HARK_STRONG self outlives its connection). */
static int model_next(mframe *f, bool call) {
  while (f->cur < f->n) {
    int ci = f->list[f->cur++];
    mconn *c = &M.conns[ci];
    if (c->removed || !self_alive(c) || c->blocks > 0)
      continue;
    if (call && c->self) {
      M.objs[c->self].refs++;
      f->held = c->self;
    }
    if (c->flags & HARK_ONCE)
      m_remove_conn(ci);
    return ci;
  }
  return -1;
}

/* The send drops the reference it held for the last call. */
static void settle(mframe *f) {
  unsigned id = f->held;
  f->held = 0;
  if (id)
    m_unref_obj(id);
}

static void on_result(void *data, hark_receiver_fn fn, void *self, int result) {
  mframe *f = data;
  if (M.failed)
    return;
  if (!f->want_result) {
    mfail("on_result(%d) without a receiver call before it", result);
    return;
  }
  f->want_result = false;
  if (fn != M_FN[f->want_fn] || self != f->want_self || result != f->want_rv)
    mfail("on_result(f?, %p, %d), model expects (f%d, %p, %d)", self, result,
          f->want_fn, f->want_self, f->want_rv);
  check_values();
  settle(f);
}

static void act_send(int s, unsigned sender, bool robust) {
  msrec *g = &M.sig[s];
  if (!g->alive || M.depth >= M_MAXDEPTH || M.budget <= 0)
    return;
  mframe f = {
      .sig = s, .sender = sender, .senderp = optr(sender), .robust = robust};
  f.list = malloc(sizeof(int) * (size_t)(M.nconns + 1));
  if (f.list == NULL) {
    mfail("out of memory in the model");
    return;
  }
  for (int i = 0; i < M.nconns; i++) {
    mconn *c = &M.conns[i];
    if (!c->removed && c->sig == s && (c->sender == 0 || c->sender == sender))
      f.list[f.n++] = i;
  }
  tr("%s s%d sender=%s {", robust ? "send_robust" : "send", s, oname(sender));
  g->refs++;
  if (sender)
    M.objs[sender].refs++;
  M.depth++;
  M.indent++;
  hark_send_result res = {-1, -1, NULL, NULL};
  int got = robust ? hark_send_robust(g->p, f.senderp, &f, on_result, &f)
                   : hark_send_ex(g->p, f.senderp, &f, &res);
  M.depth--;
  M.indent--;
  if (M.failed) {
    free(f.list);
    return;
  }
  settle(&f);
  if (f.want_result)
    mfail("on_result not called after f%d returned %d", f.want_fn, f.want_rv);
  int exp = f.stopped ? HARK_ESTOPPED : robust ? f.failed : f.called;
  if (!robust && (res.called != f.called || res.stop != (f.stopped ? f.ret : 0)))
    mfail("send s%d sender=%s reported %d called, stop %d; model %d, %d", s,
          oname(sender), res.called, res.stop, f.called,
          f.stopped ? f.ret : 0);
  if (!f.stopped) {
    int missed = model_next(&f, false);
    if (missed >= 0)
      mfail("s%d: receiver f%d self=%s sender=%s (connection #%d) not called",
            s, M.conns[missed].fn, oname(M.conns[missed].self),
            oname(M.conns[missed].sender), missed);
  }
  free(f.list);
  tr("} -> %d", got);
  if (got != exp)
    mfail("%s s%d sender=%s returned %d, model %d",
          robust ? "send_robust" : "send", s, oname(sender), got, exp);
  if (M.failed)
    return;
  if (sender)
    m_unref_obj(sender);
  m_unref_sig(s);
  check_values();
}

static uint32_t m_mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

/* Drops a reference the model owns; which: 0..7 a slot, 8 self, 9 the
 * signal being sent, 10 the sender. */
static void act_unref(unsigned which, unsigned self, int s, unsigned sender) {
  which %= 11;
  if (which == 9) {
    if (s < 0 || !M.sig[s].alive || M.sig[s].owned == 0)
      return;
    tr("unref s%d", s);
    M.sig[s].owned--;
    hark_unref(M.sig[s].p);
    m_unref_sig(s);
    check_values();
    return;
  }
  unsigned id = which < 8 ? pick_obj(which) : which == 8 ? self : sender;
  if (id == 0 || !M.objs[id].alive || M.objs[id].owned == 0)
    return;
  tr("unref %s", oname(id));
  M.objs[id].owned--;
  hark_unref(M.objs[id].p);
  m_unref_obj(id);
  check_values();
}

static void run_action(int ci, mframe *f) {
  mconn c = M.conns[ci];
  uint8_t p = c.param;
  switch (c.act % A_N) {
  case A_NOTHING:
    break;
  case A_DISC_SELF:
    act_disconnect(c.sig, c.fn, c.uid, c.self, c.selfp, c.sender, c.senderp);
    break;
  case A_DISC: {
    int o = pick_conn(p & 1, p >> 1);
    if (o >= 0 && M.sig[p & 1].alive)
      act_disconnect_conn(o);
    break;
  }
  case A_UNREF:
    act_unref(p, c.self, f->sig, f->sender);
    break;
  case A_CONNECT: {
    uint32_t x = m_mix(p * 0x9e3779b9u + (uint32_t)M.nconns);
    uint8_t act = (uint8_t)((x >> 16) % A_N);
    if (act == A_CONNECT)
      act = A_NOTHING;
    unsigned uid = (x >> 14) % 4;
    act_connect(x & 1, (x >> 1) & 3, uid < 3 ? (int)uid : -1,
                pick_obj((x >> 6) & 15), pick_sender((x >> 10) & 15),
                pick_flags(x >> 3), act, (uint8_t)(x >> 20), (uint8_t)(x >> 24),
                false);
    break;
  }
  case A_SEND:
    act_send(p & 1, pick_sender(p >> 2), (p >> 1) & 1);
    break;
  case A_BLOCK: {
    int o = pick_conn(p & 1, p >> 2);
    if (o >= 0 && M.sig[p & 1].alive)
      act_block_conn(o, (p & 2) ? -1 : 1);
    break;
  }
  }
}

static int rcv_common(int fn, void *self, void *sender, void *args) {
  mframe *f = args;
  M.calls++;
  M.budget--;
  if (M.failed)
    return 0;
  if (self != NULL && ((mobj *)self)->magic != M_LIVE) {
    mfail("f%d called on a finalized object %p", fn, self);
    return 0;
  }
  if (f->want_result) {
    mfail("on_result not called after f%d returned %d", f->want_fn, f->want_rv);
    return 0;
  }
  settle(f);
  int ci = model_next(f, true);
  if (ci < 0) {
    mfail("s%d: unexpected call of f%d self=%p sender=%p", f->sig, fn, self,
          sender);
    return 0;
  }
  mconn *c = &M.conns[ci];
  if (c->fn != fn || c->selfp != self || f->senderp != sender) {
    mfail("s%d: called f%d self=%p sender=%p, model expects f%d self=%s "
          "(%p) sender=%s (connection #%d)",
          f->sig, fn, self, sender, c->fn, oname(c->self), c->selfp,
          oname(f->sender), ci);
    return 0;
  }
  int rv = script_rv(c->rv);
  tr("call #%d f%d self=%s (%s, %s) -> %s/%u rv=%d", ci, fn, oname(c->self),
     c->sender ? "sender" : "any", flname(c->flags), M_ACTS[c->act % A_N],
     c->param, rv);
  M.indent++;
  run_action(ci, f);
  M.indent--;
  f->called++;
  if (f->robust) {
    if (rv != 0)
      f->failed++;
    f->want_result = true;
    f->want_fn = fn;
    f->want_self = self;
    f->want_rv = rv;
  } else if (rv != 0) {
    f->stopped = true;
    f->ret = rv;
  }
  return rv;
}

static int rcv0(void *self, void *sender, void *args) {
  return rcv_common(0, self, sender, args);
}
static int rcv1(void *self, void *sender, void *args) {
  return rcv_common(1, self, sender, args);
}
static int rcv2(void *self, void *sender, void *args) {
  return rcv_common(2, self, sender, args);
}
static int rcv3(void *self, void *sender, void *args) {
  return rcv_common(3, self, sender, args);
}

/* ---- weak-map values -------------------------------------------------------
 */

static void mval_free(void *v) {
  mval *x = v;
  if (x->magic != M_VMAGIC)
    mfail("weak-map value %p freed twice or never set", v);
  x->magic = 0;
  M.vfree_count++;
  free(x);
}

static mval *mval_new(void) {
  mval *v = malloc(sizeof *v);
  if (v != NULL) {
    v->magic = M_VMAGIC;
    v->tag = ++M.next_tag;
  }
  return v;
}

/* ---- top-level operations ---------------------------------------------------
 */

enum {
  OP_NEW,
  OP_REF,
  OP_UNREF,
  OP_WEAK_SET,
  OP_WEAK_GET,
  OP_WEAK_CLEAR,
  OP_MAP_SET,
  OP_MAP_GET,
  OP_MAP_REMOVE,
  OP_CONNECT,
  OP_CONNECT_UID,
  OP_DISCONNECT,
  OP_DISCONNECT_UID,
  OP_BLOCK,
  OP_SEND,
  OP_SEND_ROBUST,
  OP_HAS_LISTENERS,
  OP_SIG_UNREF,
  OP_SIG_NEW,
  OP_SWEEP,
  OP_N
};
static const unsigned char M_WEIGHT[OP_N] = {
    [OP_NEW] = 14,           [OP_REF] = 4,           [OP_UNREF] = 6,
    [OP_WEAK_SET] = 3,       [OP_WEAK_GET] = 3,      [OP_WEAK_CLEAR] = 1,
    [OP_MAP_SET] = 4,        [OP_MAP_GET] = 2,       [OP_MAP_REMOVE] = 2,
    [OP_CONNECT] = 18,       [OP_CONNECT_UID] = 5,   [OP_DISCONNECT] = 6,
    [OP_DISCONNECT_UID] = 2, [OP_BLOCK] = 5,         [OP_SEND] = 16,
    [OP_SEND_ROBUST] = 7,    [OP_HAS_LISTENERS] = 2, [OP_SIG_UNREF] = 1,
    [OP_SIG_NEW] = 2,        [OP_SWEEP] = 2};

static int decode_op(uint8_t b) {
  unsigned total = 0;
  for (int i = 0; i < OP_N; i++)
    total += M_WEIGHT[i];
  unsigned x = b % total;
  for (int i = 0; i < OP_N; i++) {
    if (x < M_WEIGHT[i])
      return i;
    x -= M_WEIGHT[i];
  }
  return OP_N - 1;
}

static void op_weak_get(unsigned w, bool keep) {
  void *got = hark_weak_get(&M.weak[w]);
  unsigned id = M.weak_id[w];
  void *exp = id && M.objs[id].alive ? M.objs[id].p : NULL;
  tr("weak_get w%u -> %s", w, got ? oname(id) : "NULL");
  if (got != exp) {
    mfail("weak_get w%u returned %p, model %p (%s)", w, got, exp, oname(id));
    return;
  }
  if (got == NULL)
    return;
  if (keep) {
    M.objs[id].owned++;
    M.objs[id].refs++;
  } else {
    hark_unref(got);
  }
}

static void model_op(const uint8_t *b) {
  M.budget = M_BUDGET;
  int s = b[1] & 1;
  switch (decode_op(b[0])) {
  case OP_NEW: {
    unsigned k = b[1] % M_OBJS;
    if (M.slot[k] != 0 || M.nids + 1 >= M_MAXIDS)
      break;
    mobj *o = hark_new(&mobj_type);
    if (o == NULL) {
      mfail("hark_new failed");
      break;
    }
    unsigned id = ++M.nids;
    o->id = id;
    o->run = M.run;
    o->magic = M_LIVE;
    M.objs[id] =
        (morec){.p = o, .refs = 1, .owned = 1, .alive = true, .slot = (int)k};
    M.slot[k] = id;
    tr("new %s", oname(id));
    break;
  }
  case OP_REF: {
    unsigned id = pick_obj(b[2]);
    if (id == 0 || M.objs[id].owned == 0)
      break;
    if (hark_ref(M.objs[id].p) != M.objs[id].p)
      mfail("hark_ref did not return its argument");
    M.objs[id].owned++;
    M.objs[id].refs++;
    tr("ref %s", oname(id));
    break;
  }
  case OP_UNREF:
    act_unref(b[2] % 8, 0, -1, 0);
    break;
  case OP_WEAK_SET: {
    unsigned w = b[1] % M_WEAKS, id = pick_obj(b[2]);
    int got = hark_weak_set(&M.weak[w], optr(id));
    tr("weak_set w%u %s -> %d", w, oname(id), got);
    if (got != 0)
      mfail("weak_set w%u %s returned %d", w, oname(id), got);
    M.weak_id[w] = id;
    break;
  }
  case OP_WEAK_GET:
    op_weak_get(b[1] % M_WEAKS, b[2] & 1);
    break;
  case OP_WEAK_CLEAR: {
    unsigned w = b[1] % M_WEAKS;
    hark_weak_clear(&M.weak[w]);
    M.weak_id[w] = 0;
    tr("weak_clear w%u", w);
    break;
  }
  case OP_MAP_SET: {
    unsigned id = pick_obj(b[2]);
    mval *v = mval_new();
    if (v == NULL)
      break;
    int got = hark_weakmap_set(M.map, optr(id), v);
    tr("map_set %s = v%d -> %d", oname(id), v->tag, got);
    int exp = id ? 0 : HARK_EINVAL;
    if (got != exp) {
      mfail("weakmap_set %s returned %d, model %d", oname(id), got, exp);
      break;
    }
    if (id == 0) {
      free(v);
      break;
    }
    if (M.objs[id].map_tag)
      M.vfree_expect++; /* the replaced value goes before set returns */
    M.objs[id].map_tag = v->tag;
    check_values();
    break;
  }
  case OP_MAP_GET: {
    unsigned id = pick_obj(b[2]);
    mval *v = hark_weakmap_peek(M.map, optr(id));
    int tag = id ? M.objs[id].map_tag : 0;
    tr("map_get %s -> v%d", oname(id), v ? v->tag : 0);
    if ((v ? v->tag : 0) != tag)
      mfail("weakmap_get %s gave value %d, model %d", oname(id), v ? v->tag : 0,
            tag);
    break;
  }
  case OP_MAP_REMOVE: {
    unsigned id = pick_obj(b[2]);
    int got = hark_weakmap_remove(M.map, optr(id));
    int exp = id == 0 ? HARK_EINVAL : M.objs[id].map_tag != 0;
    tr("map_remove %s -> %d", oname(id), got);
    if (got != exp) {
      mfail("weakmap_remove %s returned %d, model %d", oname(id), got, exp);
      break;
    }
    if (exp == 1) {
      M.objs[id].map_tag = 0;
      M.vfree_expect++;
    }
    check_values();
    break;
  }
  case OP_CONNECT:
  case OP_CONNECT_UID: {
    bool uid = decode_op(b[0]) == OP_CONNECT_UID;
    act_connect(s, (b[1] >> 1) & 3, uid ? (int)(b[1] >> 6) % M_UIDS : -1,
                pick_obj(b[2]), pick_sender(b[3]), pick_flags(b[1] >> 3), b[4],
                b[5], b[6], (b[7] & 0xf0) == 0xf0);
    break;
  }
  case OP_DISCONNECT:
  case OP_DISCONNECT_UID: {
    bool uid = decode_op(b[0]) == OP_DISCONNECT_UID;
    if (b[1] & 2) { /* a connection that exists */
      int ci = pick_conn(s, b[2]);
      if (ci >= 0)
        act_disconnect_conn(ci);
    } else if (uid) {
      unsigned sender = pick_sender(b[3]);
      act_disconnect(s, 0, (b[1] >> 5) % M_UIDS, 0, NULL, sender, optr(sender));
    } else {
      unsigned self = pick_obj(b[2]), sender = pick_sender(b[3]);
      act_disconnect(s, (b[1] >> 2) & 3, -1, self, optr(self), sender,
                     optr(sender));
    }
    break;
  }
  case OP_BLOCK: {
    int delta = (b[1] & 4) ? -1 : 1;
    if (b[1] & 2) {
      int ci = pick_conn(s, b[2]);
      if (ci >= 0)
        act_block_conn(ci, delta);
    } else {
      unsigned self = pick_obj(b[2]), sender = pick_sender(b[3]);
      int uid = (b[4] & 3) == 3 ? (int)(b[4] >> 2) % M_UIDS : -1;
      act_block(s, (b[1] >> 3) & 3, uid, self, optr(self), sender, optr(sender),
                delta);
    }
    break;
  }
  case OP_SEND:
  case OP_SEND_ROBUST:
    act_send(s, pick_sender(b[2]), decode_op(b[0]) == OP_SEND_ROBUST);
    break;
  case OP_HAS_LISTENERS: {
    if (!M.sig[s].alive)
      break;
    unsigned sender = pick_sender(b[2]);
    bool got = hark_has_listeners(M.sig[s].p, optr(sender));
    tr("has_listeners s%d %s -> %d", s, oname(sender), got);
    if (got != m_has_listeners(s, sender))
      mfail("has_listeners s%d %s returned %d", s, oname(sender), got);
    break;
  }
  case OP_SIG_UNREF: /* rare: it drops every connection of the signal */
    if (M.sig[s].alive && M.sig[s].owned > 0 && (b[2] & 3) == 0)
      act_unref(9, 0, s, 0);
    break;
  case OP_SIG_NEW:
    if (M.sig[s].p == NULL) {
      M.sig[s] = (msrec){.p = hark_signal_new(s ? "s1" : "s0"),
                         .refs = 1,
                         .owned = 1,
                         .alive = true};
      if (M.sig[s].p == NULL)
        mfail("hark_signal_new failed");
      tr("signal_new s%d", s);
    }
    break;
  case OP_SWEEP: {
    if (!M.sig[s].alive)
      break;
    size_t got = hark_signal_sweep(M.sig[s].p);
    int z = zombie_conns(s);
    tr("sweep s%d -> %zu", s, got);
    if (got > (size_t)z)
      mfail("sweep s%d dropped %zu, model has %d dead receivers", s, got, z);
    for (int i = 0; i < M.nconns; i++)
      if (!M.conns[i].removed && M.conns[i].sig == s &&
          !self_alive(&M.conns[i]))
        m_remove_conn(i);
    size_t n = hark_signal_receivers(M.sig[s].p);
    if (n != (size_t)live_conns(s))
      mfail("after sweep s%d has %zu receivers, model %d", s, n, live_conns(s));
    break;
  }
  }
}

/* Between top-level operations, no send is in flight: everything that
 * died is finalized and every observable agrees with the model. */
static void model_check(uint8_t b7) {
  if (M.failed)
    return;
  check_values();
  size_t keys = 0;
  for (unsigned id = 1; id <= M.nids; id++)
    keys += M.objs[id].alive && M.objs[id].map_tag;
  if (hark_weakmap_size(M.map) != keys)
    mfail("weakmap_size %zu, model %zu", hark_weakmap_size(M.map), keys);
  long objs = 0, sigs = 0;
  if (M.bad_finalize)
    mfail("an object was finalized twice");
  for (unsigned k = 0; k < M_OBJS; k++) {
    unsigned id = M.slot[k];
    if (id == 0)
      continue;
    morec *o = &M.objs[id];
    if (o->alive) {
      objs++;
      if (o->finalized)
        mfail("%s finalized while the model holds it alive (refs %d)",
              oname(id), o->refs);
      mval *v = hark_weakmap_peek(M.map, o->p);
      if ((v ? v->tag : 0) != o->map_tag)
        mfail("weakmap_get %s gave value %d, model %d", oname(id),
              v ? v->tag : 0, o->map_tag);
    } else {
      if (o->finalized != 1)
        mfail("%s is dead in the model but finalized %d times", oname(id),
              o->finalized);
      M.slot[k] = 0;
    }
  }
  for (int s = 0; s < M_SIGS; s++) {
    if (M.sig[s].alive)
      sigs++;
    else
      M.sig[s].p = NULL;
  }
  long lo = (long)hark_live_count("model_obj") - M.base_objs;
  long ls = (long)hark_live_count("hark_signal") - M.base_sigs;
  if (lo != objs || ls != sigs)
    mfail("live objects %ld, signals %ld; model %ld, %ld", lo, ls, objs, sigs);
  for (unsigned w = 0; w < M_WEAKS && !M.failed; w++) {
    void *got = hark_weak_get(&M.weak[w]);
    unsigned id = M.weak_id[w];
    void *exp = id && M.objs[id].alive ? M.objs[id].p : NULL;
    if (got != exp)
      mfail("weak_get w%u returned %p, model %p (%s)", w, got, exp, oname(id));
    hark_unref(got);
  }
  for (int s = 0; s < M_SIGS && !M.failed; s++) {
    if (!M.sig[s].alive)
      continue;
    size_t n = hark_signal_receivers(M.sig[s].p);
    int live = live_conns(s), z = zombie_conns(s);
    if (n < (size_t)live || n > (size_t)(live + z))
      mfail("s%d has %zu receivers, model %d live and %d dead", s, n, live, z);
    if (!(b7 & 1))
      continue; /* checking listeners rebuilds caches: not every time */
    for (unsigned k = 0; k <= M_OBJS; k++) {
      unsigned id = k < M_OBJS ? pick_obj(k) : 0;
      if (k < M_OBJS && id == 0)
        continue;
      bool got = hark_has_listeners(M.sig[s].p, optr(id));
      if (got != m_has_listeners(s, id))
        mfail("has_listeners s%d %s returned %d", s, oname(id), got);
    }
  }
}

/* Drops everything and checks that nothing is left. */
static void model_teardown(void) {
  tr("teardown");
  for (unsigned w = 0; w < M_WEAKS; w++)
    hark_weak_clear(&M.weak[w]);
  for (unsigned id = 1; id <= M.nids; id++)
    if (M.objs[id].alive && M.objs[id].map_tag)
      M.vfree_expect++;
  hark_weakmap_free(M.map);
  M.map = NULL;
  check_values();
  for (unsigned id = 1; id <= M.nids && !M.failed; id++)
    while (M.objs[id].alive && M.objs[id].owned > 0) {
      M.objs[id].owned--;
      hark_unref(M.objs[id].p);
      m_unref_obj(id);
    }
  for (int s = 0; s < M_SIGS; s++)
    if (M.sig[s].alive && M.sig[s].owned > 0) {
      M.sig[s].owned--;
      hark_unref(M.sig[s].p);
      m_unref_sig(s);
    }
  if (M.failed)
    return;
  for (unsigned id = 1; id <= M.nids; id++)
    if (M.objs[id].alive || M.objs[id].finalized != 1)
      mfail("at the end %s: alive %d (refs %d), finalized %d", oname(id),
            M.objs[id].alive, M.objs[id].refs, M.objs[id].finalized);
  if (M.sig[0].alive || M.sig[1].alive)
    mfail("a signal outlived the end");
  if ((long)hark_live_count(NULL) != M.base_all)
    mfail("%ld objects left at the end",
          (long)hark_live_count(NULL) - M.base_all);
  if (test_blocks() != M.base_blocks)
    mfail("%ld blocks left at the end", test_blocks() - M.base_blocks);
}

/* Installs the counting allocator: call once before any other hark call. */
static inline void model_init(void) { test_alloc_install(); }

/* Runs the operations in ops[0..n) against hark and the model. Returns 0
 * when they agreed throughout, else 1 with the details in *out (may be
 * NULL). After a disagreement nothing is released: the run's objects
 * leak, since the model no longer knows what hark holds. */
static inline int model_run(const uint8_t *ops, size_t n, model_report *out) {
  unsigned run = M.run + 1;
  memset(&M, 0, sizeof M);
  M.run = run;
  M.base_objs = (long)hark_live_count("model_obj");
  M.base_sigs = (long)hark_live_count("hark_signal");
  M.base_all = (long)hark_live_count(NULL);
  M.base_blocks = test_blocks();
  M.map = hark_weakmap_new(mval_free);
  for (int s = 0; s < M_SIGS; s++)
    M.sig[s] = (msrec){.p = hark_signal_new(s ? "s1" : "s0"),
                       .refs = 1,
                       .owned = 1,
                       .alive = true};
  if (M.map == NULL || M.sig[0].p == NULL || M.sig[1].p == NULL)
    mfail("setup failed");
  size_t nops = (n + MODEL_OPSIZE - 1) / MODEL_OPSIZE, i = 0;
  for (; i < nops && !M.failed; i++) {
    uint8_t b[MODEL_OPSIZE] = {0};
    size_t len = n - i * MODEL_OPSIZE;
    memcpy(b, ops + i * MODEL_OPSIZE, len < MODEL_OPSIZE ? len : MODEL_OPSIZE);
    M.step = i;
    if (model_trace != NULL)
      fprintf(model_trace, "#%zu\n", i);
    model_op(b);
    model_check(b[7]);
  }
  if (!M.failed) {
    M.step = i;
    model_teardown();
  }
  if (out != NULL) {
    out->failed = M.failed;
    out->step = M.step;
    out->steps = i;
    out->calls = M.calls;
    memcpy(out->msg, M.msg, sizeof out->msg);
  }
  return M.failed;
}

#endif
