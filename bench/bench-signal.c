/* bench-signal: what a hark send, connect and connection cost, as ratios
 * to baselines measured in the same process (issue 3, "Performance"), side
 * by side with the peers configure found (issue 5): GObject signals,
 * libsigc++ 3 and Boost.Signals2 (bench/peer-*.c*, see bench/peers.h).
 *
 * Every case has a list of implementations ("impls"): the first is the
 * baseline (the raw loop over an array of function pointers, ideal
 * per-sender arrays, a signal holding only the matching receivers, or an
 * empty signal), the others are timed against it: hark, then the peers
 * (appended at start-up to the send, filtered and connect cases). The
 * baseline and hark call the same receiver function on the same receiver
 * objects; a peer's receivers are its own (a sigc::trackable, a GObject,
 * a shared_ptr'd object) with the same body, one increment. After every
 * batch each receiver must have been called exactly as often as
 * expected, else the program says so and exits 1.
 *
 * Timing: batches of a calibrated number of iterations (about --batch-ms
 * each), alternating between the impls, --batches of them (21); the table
 * shows medians. Machines shared with other work are noisy: read the
 * ratios, and bench/callgrind.sh for repeatable instruction counts.
 *
 *   bench-signal                      all cases, one table
 *   bench-signal --case send64        one case
 *   bench-signal --list               case names
 *   bench-signal --impls send64       the impls of a case (callgrind.sh)
 *   bench-signal --data FILE          also write "case N impl ns ratio"
 *                                     lines for bench/plot.sh
 *   bench-signal --case send64 --impl hark --iters 100000
 *       one run of fixed length without timing, for valgrind (prints the
 *       number of ops it made: callgrind.sh subtracts two such runs)
 */
#include <hark.h>

#include "peers.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__) && !defined(__clang__)
#define NOIPA __attribute__((noipa))
#else
#define NOIPA __attribute__((noinline))
#endif

/* ---- receivers, senders ------------------------------------------------ */

typedef struct rcv {
  hark_object base;
  unsigned long calls;
} rcv;

typedef struct sndr {
  hark_object base;
} sndr;

static const hark_type recv_type = {"bench-receiver", sizeof(rcv), NULL, NULL};
static const hark_type sndr_type = {"bench-sender", sizeof(sndr), NULL, NULL};

/* The receiver body every impl calls: one increment in its object. */
static NOIPA int on_call(void *self, void *sender, void *args) {
  (void)sender;
  (void)args;
  ((rcv *)self)->calls++;
  return 0;
}

static void die_oom(const char *what) {
  fprintf(stderr, "bench-signal: out of memory (%s)\n", what);
  exit(1);
}

static rcv **new_receivers(size_t n) {
  rcv **v = malloc(n * sizeof(*v));
  if (v == NULL)
    die_oom("receivers");
  for (size_t i = 0; i < n; i++)
    if ((v[i] = hark_new(&recv_type)) == NULL)
      die_oom("receiver");
  return v;
}

static void free_receivers(rcv **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    hark_unref(v[i]);
  free(v);
}

static sndr **new_senders(size_t n) {
  sndr **v = malloc(n * sizeof(*v));
  if (v == NULL)
    die_oom("senders");
  for (size_t i = 0; i < n; i++)
    if ((v[i] = hark_new(&sndr_type)) == NULL)
      die_oom("sender");
  return v;
}

static void free_senders(sndr **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    hark_unref(v[i]);
  free(v);
}

static hark_signal *new_signal(const char *name) {
  hark_signal *s = hark_signal_new(name);
  if (s == NULL)
    die_oom("signal");
  hark_signal_set_max_receivers(s, 0); /* big lists on purpose */
  return s;
}

static void must_connect(hark_signal *s, rcv *r, sndr *sender) {
  int err = hark_connect(s, on_call, r, sender, HARK_WEAK);
  if (err != 0) {
    fprintf(stderr, "bench-signal: hark_connect: %s\n", hark_strerror(err));
    exit(1);
  }
}

/* ---- the raw baseline ---------------------------------------------------- */

typedef struct raw_slot {
  hark_receiver_fn fn;
  void *self;
} raw_slot;

/* Same contract as a send: calls in order, stops at a non-zero return,
 * else returns how many it called. Not inlined, and the array is read
 * through a volatile pointer, so nothing is hoisted out of the loop. */
static NOIPA int raw_send(raw_slot *const volatile *vp, size_t n, void *sender,
                          void *args) {
  const raw_slot *v = *vp;
  int called = 0;
  for (size_t i = 0; i < n; i++) {
    int rv = v[i].fn(v[i].self, sender, args);
    if (rv != 0)
      return rv;
    called++;
  }
  return called;
}

static raw_slot *raw_array(rcv **r, size_t n) {
  raw_slot *v = malloc((n ? n : 1) * sizeof(*v));
  if (v == NULL)
    die_oom("raw array");
  for (size_t i = 0; i < n; i++) {
    v[i].fn = on_call;
    v[i].self = r[i];
  }
  return v;
}

/* ---- cases --------------------------------------------------------------- */

typedef struct impl {
  const char *name;
  /* Runs iters iterations; returns the ops made (receiver calls, or
   * connect+disconnect pairs), or -1 if a call returned a wrong value. */
  long (*run)(void *st, long iters);
  const bench_peer *peer; /* a peer: run and check are the peer's */
} impl;

#define MAX_IMPLS 10

typedef struct bcase {
  const char *id;    /* for --case */
  const char *title; /* for the table */
  const char *unit;  /* what one op is */
  size_t param;      /* N, given to setup */
  void *(*setup)(size_t param);
  void (*teardown)(void *st);
  /* Checks every receiver's count against the iterations of the impl
   * just run (which), then resets the counts. 0 when right. */
  int (*check)(void *st, int which, long iters);
  impl impls[MAX_IMPLS]; /* [0] is the baseline */
  double target;         /* ratio (kind 'r') or ns per op (kind 'n') */
  char kind;             /* 'r', 'n', 'f' (ns and flat), '-' (none) */
  const char *target_text;
  int peers; /* 1 + enum bench_kind of the peers' version, 0: hark only */
  void *pst[MAX_IMPLS]; /* the peers' states while the case runs */
} bcase;

static int check_counts(rcv **r, size_t n, unsigned long want,
                        const char *what) {
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    if (r[i]->calls != want && bad++ < 3)
      fprintf(stderr, "bench-signal: %s: receiver %zu called %lu times, "
              "expected %lu\n", what, i, r[i]->calls, want);
    r[i]->calls = 0;
  }
  return bad;
}

/* -- send to N any-sender weak receivers: hark_send(sig, NULL, NULL) -- */

typedef struct send_st {
  size_t n;
  rcv **r;
  hark_signal *sig;
  raw_slot *raw;
  raw_slot *volatile rawp;
} send_st;

static void *send_setup(size_t n) {
  send_st *s = calloc(1, sizeof(*s));
  if (s == NULL)
    die_oom("state");
  s->n = n;
  s->r = new_receivers(n);
  s->sig = new_signal("bench-send");
  for (size_t i = 0; i < n; i++)
    must_connect(s->sig, s->r[i], NULL);
  s->raw = s->rawp = raw_array(s->r, n);
  return s;
}

static void send_teardown(void *p) {
  send_st *s = p;
  hark_unref(s->sig);
  free_receivers(s->r, s->n);
  free(s->raw);
  free(s);
}

static long send_raw(void *p, long iters) {
  send_st *s = p;
  long total = 0;
  for (long i = 0; i < iters; i++)
    total += raw_send(&s->rawp, s->n, NULL, NULL);
  return total == iters * (long)s->n ? total : -1;
}

static long send_hark(void *p, long iters) {
  send_st *s = p;
  long total = 0;
  for (long i = 0; i < iters; i++)
    total += hark_send(s->sig, NULL, NULL);
  return total == iters * (long)s->n ? total : -1;
}

static int send_check(void *p, int which, long iters) {
  send_st *s = p;
  (void)which;
  return check_counts(s->r, s->n, (unsigned long)iters, "send");
}

/* -- sender-filtered: S senders with K receivers each; one iteration
 * sends once from every sender (hark) or walks every per-sender array
 * (ideal: the sender's array is found by index, no lookup at all) -- */

typedef struct filt_st {
  size_t nsend, per;
  sndr **s;
  rcv **r; /* nsend * per, sender i owns r[i*per .. i*per+per-1] */
  hark_signal *sig;
  raw_slot *raw;
  raw_slot *volatile rawp;
} filt_st;

static void *filt_setup(size_t nsend) {
  filt_st *f = calloc(1, sizeof(*f));
  if (f == NULL)
    die_oom("state");
  f->nsend = nsend;
  f->per = 8;
  f->s = new_senders(nsend);
  f->r = new_receivers(nsend * f->per);
  f->sig = new_signal("bench-filtered");
  /* interleaved, as connections of many objects arrive in real programs */
  for (size_t k = 0; k < f->per; k++)
    for (size_t i = 0; i < nsend; i++)
      must_connect(f->sig, f->r[i * f->per + k], f->s[i]);
  f->raw = f->rawp = raw_array(f->r, nsend * f->per);
  return f;
}

static void filt_teardown(void *p) {
  filt_st *f = p;
  hark_unref(f->sig);
  free_senders(f->s, f->nsend);
  free_receivers(f->r, f->nsend * f->per);
  free(f->raw);
  free(f);
}

static long filt_raw(void *p, long iters) {
  filt_st *f = p;
  long total = 0;
  for (long i = 0; i < iters; i++)
    for (size_t j = 0; j < f->nsend; j++) {
      raw_slot *const volatile sub = f->rawp + j * f->per;
      total += raw_send(&sub, f->per, f->s[j], NULL);
    }
  return total == iters * (long)(f->nsend * f->per) ? total : -1;
}

static long filt_hark(void *p, long iters) {
  filt_st *f = p;
  long total = 0;
  for (long i = 0; i < iters; i++)
    for (size_t j = 0; j < f->nsend; j++)
      total += hark_send(f->sig, f->s[j], NULL);
  return total == iters * (long)(f->nsend * f->per) ? total : -1;
}

static int filt_check(void *p, int which, long iters) {
  filt_st *f = p;
  (void)which;
  return check_counts(f->r, f->nsend * f->per, (unsigned long)iters,
                      "filtered send");
}

/* -- 10^6 receivers over 10^5 senders (10 each): sends from one sender,
 * against a second signal on which only that sender's 10 receivers are
 * connected. Both call the same 10 objects; every other receiver of the
 * big signal must stay at 0 calls. -- */

typedef struct big_st {
  size_t nsend, per, hot;
  sndr **s;
  rcv **r;
  hark_signal *big, *small;
} big_st;

static void *big_setup(size_t nsend) {
  big_st *b = calloc(1, sizeof(*b));
  if (b == NULL)
    die_oom("state");
  b->nsend = nsend;
  b->per = 10;
  b->hot = nsend / 2 + 17; /* some sender in the middle */
  if (b->hot >= nsend)
    b->hot = nsend - 1;
  b->s = new_senders(nsend);
  b->r = new_receivers(nsend * b->per);
  b->big = new_signal("bench-big");
  b->small = new_signal("bench-small");
  for (size_t k = 0; k < b->per; k++)
    for (size_t i = 0; i < nsend; i++)
      must_connect(b->big, b->r[i * b->per + k], b->s[i]);
  for (size_t k = 0; k < b->per; k++)
    must_connect(b->small, b->r[b->hot * b->per + k], b->s[b->hot]);
  return b;
}

static void big_teardown(void *p) {
  big_st *b = p;
  hark_unref(b->big);
  hark_unref(b->small);
  free_senders(b->s, b->nsend);
  free_receivers(b->r, b->nsend * b->per);
  free(b);
}

static long big_run(hark_signal *sig, big_st *b, long iters) {
  long total = 0;
  sndr *s = b->s[b->hot];
  for (long i = 0; i < iters; i++)
    total += hark_send(sig, s, NULL);
  return total == iters * (long)b->per ? total : -1;
}

static long big_small(void *p, long iters) {
  return big_run(((big_st *)p)->small, p, iters);
}

static long big_hark(void *p, long iters) {
  return big_run(((big_st *)p)->big, p, iters);
}

static int big_check(void *p, int which, long iters) {
  big_st *b = p;
  (void)which;
  int bad = 0;
  for (size_t i = 0; i < b->nsend * b->per; i++) {
    unsigned long want = i / b->per == b->hot ? (unsigned long)iters : 0;
    if (b->r[i]->calls != want && bad++ < 3)
      fprintf(stderr, "bench-signal: big: receiver %zu called %lu times, "
              "expected %lu\n", i, b->r[i]->calls, want);
    b->r[i]->calls = 0;
  }
  return bad;
}

/* -- connect+disconnect of one weak any-sender receiver on a signal that
 * already holds N receivers, against the same on an empty signal -- */

/* The pair cycles through SELVES receivers: the cost of finding one in
 * the identity index depends on where its hash lands, and one receiver
 * alone would measure that luck rather than the typical case. */
#define SELVES 16

typedef struct conn_st {
  size_t n;
  rcv **r;
  rcv *self[SELVES];
  hark_signal *full, *empty;
  long errors;
} conn_st;

static void *conn_setup(size_t n) {
  conn_st *c = calloc(1, sizeof(*c));
  if (c == NULL)
    die_oom("state");
  c->n = n;
  c->r = new_receivers(n);
  c->full = new_signal("bench-connect");
  c->empty = new_signal("bench-connect-empty");
  for (size_t i = 0; i < n; i++)
    must_connect(c->full, c->r[i], NULL);
  for (int i = 0; i < SELVES; i++)
    if ((c->self[i] = hark_new(&recv_type)) == NULL)
      die_oom("receiver");
  return c;
}

static void conn_teardown(void *p) {
  conn_st *c = p;
  hark_unref(c->full);
  hark_unref(c->empty);
  free_receivers(c->r, c->n);
  for (int i = 0; i < SELVES; i++)
    hark_unref(c->self[i]);
  free(c);
}

static long conn_run(hark_signal *sig, conn_st *c, long iters) {
  long bad = 0;
  for (long i = 0; i < iters; i++) {
    rcv *self = c->self[i % SELVES];
    bad += hark_connect(sig, on_call, self, NULL, HARK_WEAK) != 0;
    bad += hark_disconnect(sig, on_call, self, NULL) != 1;
  }
  return bad == 0 ? iters : -1;
}

static long conn_empty(void *p, long iters) {
  return conn_run(((conn_st *)p)->empty, p, iters);
}

static long conn_hark(void *p, long iters) {
  return conn_run(((conn_st *)p)->full, p, iters);
}

/* The pairs leave the signal as it was; a send still reaches all N. */
static int conn_check(void *p, int which, long iters) {
  conn_st *c = p;
  (void)which;
  (void)iters;
  int bad = 0;
  if (hark_signal_receivers(c->full) != c->n ||
      hark_signal_receivers(c->empty) != 0) {
    fprintf(stderr, "bench-signal: connect: signal holds %zu/%zu receivers, "
            "expected %zu/0\n", hark_signal_receivers(c->full),
            hark_signal_receivers(c->empty), c->n);
    bad++;
  }
  if (c->n <= 1000) { /* a send per batch is cheap enough at small N */
    if (hark_send(c->full, NULL, NULL) != (int)c->n ||
        hark_send(c->empty, NULL, NULL) != 0)
      bad++;
    bad += check_counts(c->r, c->n, 1, "connect");
  }
  for (int i = 0; i < SELVES; i++)
    bad += c->self[i]->calls != 0;
  return bad;
}

/* -- threads: T threads each sending on a signal of its own to a weak
 * receiver of its own, against one thread doing the same alone. ns/op is
 * the wall time per send of each thread: sends that share no memory scale
 * (ratio 1); a write to shared memory per send would serialize them. -- */

#define MT_MAX 8

/* Receivers on cache lines of their own, as the threads' own data would
 * be: the benchmark measures hark, not false sharing of the counters. */
typedef struct mt_rcv {
  hark_object base;
  unsigned long calls;
  char pad[176];
} mt_rcv;

static const hark_type mt_rcv_type = {"bench-mt-receiver", sizeof(mt_rcv),
                                      NULL, NULL};

static NOIPA int on_mt_call(void *self, void *sender, void *args) {
  (void)sender;
  (void)args;
  ((mt_rcv *)self)->calls++;
  return 0;
}

typedef struct mt_lane {
  hark_signal *sig;
  mt_rcv *r;
  long iters, result;
  char pad[64];
} mt_lane;

typedef struct mt_st {
  size_t threads;
  mt_lane lane[MT_MAX];
  pthread_t tid[MT_MAX];
  pthread_barrier_t go, done;
  _Atomic int quit;
} mt_st;

static void mt_lane_run(mt_lane *l) {
  long total = 0;
  for (long i = 0; i < l->iters; i++)
    total += hark_send(l->sig, NULL, NULL);
  l->result = total;
}

typedef struct mt_arg {
  mt_st *m;
  size_t k;
} mt_arg;

static void *mt_worker(void *p) {
  mt_arg *a = p;
  mt_st *m = a->m;
  for (;;) {
    pthread_barrier_wait(&m->go);
    if (atomic_load(&m->quit))
      break;
    mt_lane_run(&m->lane[a->k]);
    pthread_barrier_wait(&m->done);
  }
  free(a);
  return NULL;
}

static void *mt_setup(size_t threads) {
  mt_st *m = calloc(1, sizeof(*m));
  if (m == NULL || threads < 1 || threads > MT_MAX)
    die_oom("state");
  m->threads = threads;
  for (size_t k = 0; k < threads; k++) {
    m->lane[k].sig = new_signal("bench-mt");
    if ((m->lane[k].r = hark_new(&mt_rcv_type)) == NULL)
      die_oom("receiver");
    if (hark_connect(m->lane[k].sig, on_mt_call, m->lane[k].r, NULL,
                     HARK_WEAK) != 0)
      die_oom("connect");
  }
  pthread_barrier_init(&m->go, NULL, (unsigned)threads);
  pthread_barrier_init(&m->done, NULL, (unsigned)threads);
  for (size_t k = 1; k < threads; k++) {
    mt_arg *a = malloc(sizeof(*a));
    if (a == NULL)
      die_oom("thread");
    a->m = m;
    a->k = k;
    if (pthread_create(&m->tid[k], NULL, mt_worker, a) != 0)
      die_oom("thread");
  }
  return m;
}

static void mt_teardown(void *p) {
  mt_st *m = p;
  atomic_store(&m->quit, 1);
  pthread_barrier_wait(&m->go);
  for (size_t k = 1; k < m->threads; k++)
    pthread_join(m->tid[k], NULL);
  pthread_barrier_destroy(&m->go);
  pthread_barrier_destroy(&m->done);
  for (size_t k = 0; k < m->threads; k++) {
    hark_unref(m->lane[k].sig);
    hark_unref(m->lane[k].r);
  }
  free(m);
}

static long mt_one(void *p, long iters) {
  mt_st *m = p;
  m->lane[0].iters = iters;
  mt_lane_run(&m->lane[0]);
  return m->lane[0].result == iters ? iters : -1;
}

static long mt_all(void *p, long iters) {
  mt_st *m = p;
  for (size_t k = 0; k < m->threads; k++)
    m->lane[k].iters = iters;
  pthread_barrier_wait(&m->go);
  mt_lane_run(&m->lane[0]);
  pthread_barrier_wait(&m->done);
  for (size_t k = 0; k < m->threads; k++)
    if (m->lane[k].result != iters)
      return -1;
  return iters;
}

static int mt_check(void *p, int which, long iters) {
  mt_st *m = p;
  int bad = 0;
  for (size_t k = 0; k < m->threads; k++) {
    unsigned long want = which == 0 && k > 0 ? 0 : (unsigned long)iters;
    if (m->lane[k].r->calls != want && bad++ < 3)
      fprintf(stderr, "bench-signal: threads: receiver %zu called %lu times, "
              "expected %lu\n", k, m->lane[k].r->calls, want);
    m->lane[k].r->calls = 0;
  }
  return bad;
}

#define IMPLS(base, basefn, harkfn)                                           \
  { {base, basefn, NULL}, {"hark", harkfn, NULL} }
#define SEND(id, title, n, target, kind, text)                                 \
  {id, title, "call", n, send_setup, send_teardown, send_check,                \
   IMPLS("raw", send_raw, send_hark), target, kind, text, 1 + BENCH_SEND,     \
   {NULL}}
#define SCALE(id, title, nsend)                                                \
  {id, title, "call", nsend, big_setup, big_teardown, big_check,               \
   IMPLS("small-sig", big_small, big_hark), 1.2, 'r', "<=1.2x small", 0,      \
   {NULL}}
#define THREADS(id, title, n, target, kind, text)                              \
  {id, title, "send", n, mt_setup, mt_teardown, mt_check,                      \
   IMPLS("1 thread", mt_one, mt_all), target, kind, text, 0, {NULL}}
#define CONN(id, title, n)                                                     \
  {id, title, "pair", n, conn_setup, conn_teardown, conn_check,                \
   IMPLS("N=0", conn_empty, conn_hark), 100, 'f', "<=100 ns, flat",           \
   1 + BENCH_CONNECT, {NULL}}

static bcase cases[] = {
    SEND("send1", "send, N=1 (ns per send)", 1, 12, 'n', "<=12 ns"),
    SEND("send8", "send, N=8", 8, 0, '-', "-"),
    SEND("send64", "send, N=64", 64, 1.2, 'r', "<=1.2x raw"),
    SEND("send512", "send, N=512", 512, 0, '-', "-"),
    {"filtered", "filtered, 512 rcv / 64 senders", "call", 64, filt_setup,
     filt_teardown, filt_check, IMPLS("ideal", filt_raw, filt_hark), 1.5, 'r',
     "<=1.5x ideal", 1 + BENCH_FILTERED, {NULL}},
    /* the scaling case: 10 receivers per sender, ever more senders */
    SCALE("scale100", "scaling, 1e2 rcv / 10 senders", 10),
    SCALE("scale1k", "scaling, 1e3 rcv / 1e2 senders", 100),
    SCALE("scale10k", "scaling, 1e4 rcv / 1e3 senders", 1000),
    SCALE("scale100k", "scaling, 1e5 rcv / 1e4 senders", 10000),
    SCALE("big", "scaling, 1e6 rcv / 1e5 senders", 100000),
    CONN("connect0", "connect+disconnect, N=0", 0),
    CONN("connect1k", "connect+disconnect, N=1000", 1000),
    CONN("connect100k", "connect+disconnect, N=100000", 100000),
    THREADS("threads2", "2 threads, own signals (ns/send)", 2, 1.3, 'r',
            "<=1.3x 1 thread"),
    THREADS("threads4", "4 threads, own signals (ns/send)", 4, 0, '-', "-"),
    THREADS("threads8", "8 threads, own signals (ns/send)", 8, 0, '-', "-"),
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* "flat": within this factor of the empty signal (noise allowance) */
#define FLAT_RATIO 1.5

/* ---- timing ---------------------------------------------------------------- */

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int failures;

static int nimpls(const bcase *c) {
  int n = 0;
  while (n < MAX_IMPLS && c->impls[n].run != NULL)
    n++;
  return n;
}

/* ---- peers ------------------------------------------------------------ */

typedef struct peer_lib {
  const char *lib, *pkg; /* library, Debian package */
  const bench_peer *v;   /* variants; NULL: not found by configure */
  int n;
} peer_lib;

static peer_lib libs[] = {
    {"GObject", "libglib2.0-dev", NULL, 0},
    {"libsigc++ 3", "libsigc++-3.0-dev", NULL, 0},
    {"Boost.Signals2", "libboost-dev", NULL, 0},
};
#define NLIBS (sizeof(libs) / sizeof(libs[0]))

/* Appends every peer variant found to the cases that have a peer form. */
static void add_peers(bcase *cs, size_t ncases) {
#ifdef BENCH_HAVE_GOBJECT
  libs[0].v = bench_peers_gobject;
  libs[0].n = bench_npeers_gobject;
#endif
#ifdef BENCH_HAVE_SIGCXX
  libs[1].v = bench_peers_sigc;
  libs[1].n = bench_npeers_sigc;
#endif
#ifdef BENCH_HAVE_BOOST
  libs[2].v = bench_peers_boost;
  libs[2].n = bench_npeers_boost;
#endif
  for (size_t k = 0; k < ncases; k++) {
    int ni = 0;
    while (ni < MAX_IMPLS && cs[k].impls[ni].run != NULL)
      ni++;
    if (cs[k].peers == 0)
      continue;
    for (size_t l = 0; l < NLIBS; l++)
      for (int v = 0; v < libs[l].n && ni < MAX_IMPLS; v++) {
        const bench_peer *p = &libs[l].v[v];
        cs[k].impls[ni].name = p->name;
        cs[k].impls[ni].run = p->run;
        cs[k].impls[ni].peer = p;
        ni++;
      }
  }
}

/* Sets up the case and its peers (only: just that impl's peer, or all
 * when -1). */
static void *case_setup(bcase *c, int only) {
  void *st = c->setup(c->param);
  for (int i = 0; i < MAX_IMPLS && c->impls[i].run != NULL; i++) {
    const bench_peer *p = c->impls[i].peer;
    if (p != NULL && (only < 0 || only == i) &&
        (c->pst[i] = p->setup((enum bench_kind)(c->peers - 1), c->param)) ==
            NULL)
      die_oom(p->name);
  }
  return st;
}

static void case_teardown(bcase *c, void *st) {
  for (int i = 0; i < MAX_IMPLS && c->impls[i].run != NULL; i++)
    if (c->impls[i].peer != NULL && c->pst[i] != NULL) {
      c->impls[i].peer->teardown(c->pst[i]);
      c->pst[i] = NULL;
    }
  c->teardown(st);
}

/* receivers in the case (the plots' x axis) */
static size_t case_n(const bcase *c) {
  if (c->peers == 1 + BENCH_FILTERED)
    return c->param * BENCH_PER;
  if (c->setup == mt_setup)
    return c->param; /* threads */
  if (c->peers == 0)
    return c->param * 10; /* the scaling cases: 10 per sender */
  return c->param;
}

static long impl_run(bcase *c, void *st, int i, long iters) {
  const bench_peer *p = c->impls[i].peer;
  return p != NULL ? p->run(c->pst[i], iters) : c->impls[i].run(st, iters);
}

static int impl_check(bcase *c, void *st, int i, long iters) {
  const bench_peer *p = c->impls[i].peer;
  return p != NULL ? p->check(c->pst[i], iters) : c->check(st, i, iters);
}

/* Runs iters iterations and checks the receivers' calls: the run's ns
 * (and its op count in *ops), or -1 after reporting a failure. */
static double timed_run(bcase *c, void *st, int which, long iters,
                        long *ops) {
  double t0 = now_ns();
  *ops = impl_run(c, st, which, iters);
  double t = now_ns() - t0;
  if (*ops <= 0 || impl_check(c, st, which, iters) != 0) {
    fprintf(stderr, "bench-signal: %s/%s: wrong calls or results\n", c->id,
            c->impls[which].name);
    failures++;
    return -1;
  }
  return t;
}

/* One batch: ns per op, or -1 after reporting a failure. */
static double batch(bcase *c, void *st, int which, long iters) {
  long ops;
  double t = timed_run(c, st, which, iters, &ops);
  return t < 0 ? -1 : t / (double)ops;
}

/* Scales iters so that a run that took t ns lasts batch_ns. */
static long scaled(long iters, double t, double batch_ns) {
  long n = (long)((double)iters * (batch_ns / (t > 1 ? t : 1)));
  return n > 0 ? n : 1;
}

/* The iterations of one batch (about batch_ns), or -1 after a failure.
 * A first guess grows the count until a run takes an eighth of a batch;
 * one stall in it (a threads case's worker woken for the first time, the
 * other core busy for a moment) would leave batches so short that they
 * time the barriers, not hark: so the guess is then run three times and
 * rescaled from the fastest run until a batch really lasts batch_ns. */
static long calibrate(bcase *c, void *st, int which, double batch_ns) {
  long iters = 1, ops;
  for (;;) {
    double t = timed_run(c, st, which, iters, &ops);
    if (t < 0)
      return -1;
    if (t >= batch_ns / 8 || iters >= (1L << 40)) {
      iters = scaled(iters, t, batch_ns);
      break;
    }
    iters *= 4;
  }
  for (int round = 0; round < 8 && iters < (1L << 40); round++) {
    double fastest = 0;
    for (int r = 0; r < 3; r++) {
      double t = timed_run(c, st, which, iters, &ops);
      if (t < 0)
        return -1;
      if (r == 0 || t < fastest)
        fastest = t;
    }
    if (fastest >= batch_ns / 2)
      break;
    long n = scaled(iters, fastest, batch_ns);
    iters = n > iters ? n : iters + 1;
  }
  return iters;
}

typedef struct result {
  double ns[MAX_IMPLS];    /* median ns per op */
  double ratio[MAX_IMPLS]; /* median over batches of impl / baseline */
} result;

static int time_case(bcase *c, int nbatches, double batch_ns, result *res) {
  void *st = case_setup(c, -1);
  int ni = nimpls(c);
  long iters[MAX_IMPLS];
  double *samples = malloc((size_t)nbatches * ni * sizeof(double));
  if (samples == NULL)
    die_oom("samples");
  int ok = 1;
  for (int i = 0; i < ni && ok; i++)
    ok = (iters[i] = calibrate(c, st, i, batch_ns)) > 0;
  for (int b = 0; b < nbatches && ok; b++)
    for (int k = 0; k < ni && ok; k++) {
      int i = (b + k) % ni; /* alternate which impl goes first */
      double v = batch(c, st, i, iters[i]);
      ok = v >= 0;
      samples[i * nbatches + b] = v;
    }
  /* Ratios pair each batch with the baseline batch run next to it, so a
   * burst of load from other processes hits both sides of a pair. */
  double *pr = malloc((size_t)nbatches * sizeof(double));
  if (pr == NULL)
    die_oom("samples");
  for (int i = 1; i < ni && ok; i++) {
    for (int b = 0; b < nbatches; b++)
      pr[b] = samples[i * nbatches + b] / samples[b];
    qsort(pr, (size_t)nbatches, sizeof(double), cmp_double);
    res->ratio[i] = pr[nbatches / 2];
  }
  free(pr);
  if (ok)
    for (int i = 0; i < ni; i++) {
      qsort(samples + i * nbatches, (size_t)nbatches, sizeof(double),
            cmp_double);
      res->ns[i] = samples[i * nbatches + nbatches / 2];
    }
  free(samples);
  case_teardown(c, st);
  /* give the next case the heap a fresh program would have: after the
   * million-receiver cases, malloc's fragmented free lists otherwise
   * slow every later allocation, baseline and hark alike */
  malloc_trim(0);
  return ok ? 0 : -1;
}

/* ---- memory per connection --------------------------------------------- */

/* A counting allocator: while counting is on, each block's requested
 * size is remembered in a side table (malloc'd directly, not counted),
 * so that live requested bytes and live malloc footprint (usable size
 * plus glibc's 8-byte chunk header) can be summed. Off, it costs one
 * load and branch per call. */
#define MAP_BITS 20
typedef struct mslot {
  void *p;
  size_t n;
} mslot;
static mslot *map;
static size_t map_live;
static int counting;
static long long live_req, live_foot;
#define MAP_TOMB ((void *)1)

static size_t footprint(void *p) { return malloc_usable_size(p) + 8; }

static size_t map_hash(void *p) {
  uint64_t x = (uintptr_t)p;
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 32;
  return (size_t)x & ((1u << MAP_BITS) - 1);
}

static void map_add(void *p, size_t n) {
  if (p == NULL)
    return;
  size_t i = map_hash(p);
  while (map[i].p != NULL && map[i].p != MAP_TOMB)
    i = (i + 1) & ((1u << MAP_BITS) - 1);
  map[i].p = p;
  map[i].n = n;
  map_live++;
  live_req += (long long)n;
  live_foot += (long long)footprint(p);
  if (map_live > (1u << MAP_BITS) / 2) {
    fprintf(stderr, "bench-signal: counting allocator table full\n");
    exit(1);
  }
}

static void map_del(void *p) {
  if (p == NULL || map_live == 0)
    return;
  size_t i = map_hash(p);
  while (map[i].p != NULL) {
    if (map[i].p == p) {
      live_req -= (long long)map[i].n;
      live_foot -= (long long)footprint(p);
      map[i].p = MAP_TOMB;
      map_live--;
      return;
    }
    i = (i + 1) & ((1u << MAP_BITS) - 1);
  }
}

static void *c_malloc(size_t n) {
  void *p = malloc(n);
  if (counting)
    map_add(p, n);
  return p;
}

static void *c_calloc(size_t k, size_t n) {
  void *p = calloc(k, n);
  if (counting)
    map_add(p, k * n);
  return p;
}

static void *c_realloc(void *old, size_t n) {
  if (map_live)
    map_del(old);
  void *p = realloc(old, n);
  if (counting)
    map_add(p, n);
  return p;
}

static void c_free(void *p) {
  if (map_live)
    map_del(p);
  free(p);
}

typedef struct memres {
  double req, foot;
} memres;

/* Bytes the library holds per connection for m receivers over nsend
 * senders (0: any-sender), after one send from each sender has built the
 * cached lists. Objects are made before counting starts: their own
 * memory is theirs, not the connections'. */
static int measure_memory(size_t m, size_t nsend, memres *out) {
  rcv **r = new_receivers(m);
  sndr **s = nsend ? new_senders(nsend) : NULL;
  hark_signal *sig = new_signal("bench-memory");
  if (map == NULL && (map = calloc((size_t)1 << MAP_BITS, sizeof(*map))) ==
                         NULL)
    die_oom("allocator table");
  long long req0 = live_req, foot0 = live_foot;
  counting = 1;
  for (size_t i = 0; i < m; i++)
    must_connect(sig, r[i], nsend ? s[i % nsend] : NULL);
  int bad = 0;
  if (nsend == 0) {
    bad += hark_send(sig, NULL, NULL) != (int)m;
  } else {
    for (size_t j = 0; j < nsend; j++)
      bad += hark_send(sig, s[j], NULL) != (int)(m / nsend);
  }
  counting = 0;
  out->req = (double)(live_req - req0) / (double)m;
  out->foot = (double)(live_foot - foot0) / (double)m;
  bad += check_counts(r, m, 1, "memory");
  hark_unref(sig);
  if (s != NULL)
    free_senders(s, nsend);
  free_receivers(r, m);
  if (bad) {
    fprintf(stderr, "bench-signal: memory: wrong calls\n");
    failures++;
  }
  return bad ? -1 : 0;
}

/* ---- main -------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: bench-signal [--case ID] [--batches K] [--batch-ms MS]\n"
          "       bench-signal --case ID --impl NAME --iters N   (valgrind)\n"
          "       bench-signal --list | --impls ID\n"
          "       bench-signal --data FILE   (also writes the plot data)\n");
}

static bcase *find_case(const char *id) {
  for (size_t i = 0; i < NCASES; i++)
    if (strcmp(cases[i].id, id) == 0)
      return &cases[i];
  return NULL;
}

/* One fixed run, untimed: a warm-up iteration (builds caches), then iters. */
static int single_run(bcase *c, const char *impl_name, long iters) {
  int ni = nimpls(c), which = -1;
  for (int i = 0; i < ni; i++)
    if (strcmp(c->impls[i].name, impl_name) == 0)
      which = i;
  if (which < 0) {
    fprintf(stderr, "bench-signal: case %s has no impl %s (has:", c->id,
            impl_name);
    for (int i = 0; i < ni; i++)
      fprintf(stderr, " %s", c->impls[i].name);
    fprintf(stderr, ")\n");
    return 2;
  }
  void *st = case_setup(c, which);
  long ops = impl_run(c, st, which, 1);
  int bad = ops <= 0 || impl_check(c, st, which, 1) != 0;
  long ops2 = bad ? -1 : impl_run(c, st, which, iters);
  bad = bad || ops2 <= 0 || impl_check(c, st, which, iters) != 0;
  case_teardown(c, st);
  if (bad) {
    fprintf(stderr, "bench-signal: %s/%s: wrong calls or results\n", c->id,
            impl_name);
    return 1;
  }
  printf("case=%s impl=%s iters=%ld ops=%ld unit=%s\n", c->id, impl_name,
         iters, ops + ops2, c->unit);
  return 0;
}

int main(int argc, char **argv) {
  const char *only = NULL, *impl_name = NULL, *data_path = NULL;
  long iters = 0;
  int nbatches = 21;
  double batch_ms = 2;
  add_peers(cases, NCASES);
  for (int i = 1; i < argc; i += 2) { /* OPTION VALUE pairs */
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--list") == 0) {
      for (size_t k = 0; k < NCASES; k++)
        printf("%s\n", cases[k].id);
      printf("memory\n");
      return 0;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (v == NULL) {
      usage(stderr);
      return 2;
    } else if (strcmp(a, "--impls") == 0) {
      bcase *c = find_case(v);
      if (c == NULL) {
        fprintf(stderr, "bench-signal: no case %s (see --list)\n", v);
        return 2;
      }
      for (int k = 0; k < nimpls(c); k++)
        printf("%s\n", c->impls[k].name);
      return 0;
    } else if (strcmp(a, "--data") == 0) {
      data_path = v;
    } else if (strcmp(a, "--case") == 0) {
      only = v;
    } else if (strcmp(a, "--impl") == 0) {
      impl_name = v;
    } else if (strcmp(a, "--iters") == 0) {
      iters = strtol(v, NULL, 10);
    } else if (strcmp(a, "--batches") == 0) {
      nbatches = atoi(v);
    } else if (strcmp(a, "--batch-ms") == 0) {
      batch_ms = strtod(v, NULL);
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (nbatches < 1 || batch_ms <= 0 || (iters > 0) != (impl_name != NULL) ||
      (iters > 0 && only == NULL)) {
    usage(stderr);
    return 2;
  }
  if (only != NULL && strcmp(only, "memory") != 0 && find_case(only) == NULL) {
    fprintf(stderr, "bench-signal: no case %s (see --list)\n", only);
    return 2;
  }
  /* before any other hark call: every allocation goes through it */
  hark_replace_allocator(c_malloc, c_realloc, c_calloc, c_free);

  if (iters > 0)
    return single_run(find_case(only), impl_name, iters);

  FILE *data = NULL;
  if (data_path != NULL && (data = fopen(data_path, "w")) == NULL) {
    fprintf(stderr, "bench-signal: %s: %s\n", data_path, strerror(errno));
    return 2;
  }
  if (data != NULL)
    fprintf(data, "# case N impl ns_per_op ratio_to_baseline\n");

  printf("hark bench-signal: medians of %d batches of ~%.0f ms, alternating "
         "with the baseline\n", nbatches, batch_ms);
  printf("peers:");
  for (size_t l = 0; l < NLIBS; l++)
    printf("%s %s %s", l ? "," : "", libs[l].lib,
           libs[l].v != NULL ? "found" : "skipped (not installed)");
  printf("\n\n");
  printf("%-33s %-14s %10s %10s %-9s %8s  %-15s %s\n", "case", "impl",
         "ns/op", "base ns", "base", "ratio", "target", "met?");
  int missed = 0;
  for (size_t k = 0; k < NCASES; k++) {
    bcase *c = &cases[k];
    if (only != NULL && strcmp(only, c->id) != 0)
      continue;
    /* more sending threads than cores measures the scheduler, not hark */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (c->setup == mt_setup && (long)c->param > cores) {
      printf("%-33s skipped (needs %zu cores, this machine has %ld)\n",
             c->title, c->param, cores);
      continue;
    }
    result res;
    if (time_case(c, nbatches, batch_ms * 1e6, &res) != 0) {
      printf("%-33s FAILED (receivers not called as expected)\n", c->title);
      continue;
    }
    if (data != NULL)
      fprintf(data, "%s %zu %s %.4f 1\n", c->id,
              case_n(c),
              c->impls[0].name, res.ns[0]);
    for (int i = 1; i < nimpls(c); i++) {
      double ratio = res.ratio[i];
      const char *met = "-";
      if (i == 1 && c->kind == 'r')
        met = ratio <= c->target ? "yes" : "NO";
      else if (i == 1 && c->kind == 'n')
        met = res.ns[i] <= c->target ? "yes" : "NO";
      else if (i == 1 && c->kind == 'f')
        met = res.ns[i] <= c->target && ratio <= FLAT_RATIO ? "yes" : "NO";
      missed += strcmp(met, "NO") == 0;
      printf("%-33s %-14s %10.2f %10.2f %-9s %7.2fx  %-15s %s\n",
             i == 1 ? c->title : "", c->impls[i].name, res.ns[i], res.ns[0],
             c->impls[0].name, ratio, i == 1 ? c->target_text : "", met);
      if (data != NULL)
        fprintf(data, "%s %zu %s %.4f %.4f\n", c->id,
                case_n(c),
                c->impls[i].name, res.ns[i], ratio);
      fflush(stdout);
    }
    if (c->peers != 0)
      for (size_t l = 0; l < NLIBS; l++)
        if (libs[l].v == NULL)
          printf("%-33s %-14s skipped (not installed: %s)\n", "",
                 libs[l].lib, libs[l].pkg);
  }
  if (data != NULL && fclose(data) != 0) {
    fprintf(stderr, "bench-signal: %s: %s\n", data_path, strerror(errno));
    failures++;
  }
  if (only == NULL || strcmp(only, "memory") == 0) {
    static const struct {
      const char *title;
      size_t m, nsend;
    } mem[] = {{"bytes/conn, 1000 any-sender", 1000, 0},
               {"bytes/conn, 1000 over 100 senders", 1000, 100}};
    for (size_t k = 0; k < sizeof(mem) / sizeof(mem[0]); k++) {
      memres mr;
      if (measure_memory(mem[k].m, mem[k].nsend, &mr) != 0) {
        printf("%-33s FAILED\n", mem[k].title);
        continue;
      }
      const char *met = mr.foot <= 64 ? "yes" : "NO";
      missed += strcmp(met, "NO") == 0;
      printf("%-33s %-14s %8.1f B %8.1f B %-9s %8s  %-15s %s\n",
             mem[k].title, "hark",
             mr.foot, mr.req, "requested", "-", "<=64 B (malloc)", met);
    }
  }
  printf("\nratio: median over batches of the impl / the baseline batch run "
         "in the same round.\n");
  printf("peers: gobject = g_signal_connect, gobject-object = "
         "g_signal_connect_object (GObject\nreceivers), sigc++ = "
         "sigc::trackable receivers, boost = plain slots, boost-tracked =\n"
         "slot.track_foreign(shared_ptr); filtered: a GObject instance or a "
         "signal per sender.\nTargets are hark's (issue 3); met? is for "
         "hark only.\n");
  printf("base: raw = loop over an array of {fn, self} calling the same "
         "receiver; ideal = per-sender\narrays found by index; small-sig = "
         "a signal holding only the matching receivers; N=0 = the\nsame "
         "pair on an empty signal (flat: ratio <= %.1f). bytes/conn: malloc "
         "footprint (usable\nsize + 8 B header) in the hark column, the sum "
         "of requested sizes in the base column.\n", FLAT_RATIO);
  printf("%d target(s) missed; correctness %s\n", missed,
         failures ? "FAILED" : "ok");
  if (failures)
    return 1;
  if (hark_live_count(NULL) != 0) {
    fprintf(stderr, "bench-signal: %zu objects still live at exit\n",
            hark_live_count(NULL));
    return 1;
  }
  return 0;
}
