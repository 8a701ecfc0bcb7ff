/* bench-post: hark_post across threads (issues 4 and 16), against a
 * hand-written uv_async_t + mutex queue in the same run.
 *
 * Throughput: 1, 2 and 4 producer threads post --messages messages in
 * all to one loop thread, flat out; the loop thread runs the same
 * receiver function for each. Rounds alternate the sides; the table
 * shows medians of messages/s and, per producer count, the median and
 * the range of the per-round ratio hark / queue. Target: 1.5x.
 *
 * What each side does per message:
 *   hark        hark_post(loop, sig, NULL, args, NULL): validates, claims
 *               a 32-byte unit of the loop's current 4 KB block with one
 *               compare-and-swap (a block allocation per ~120 posts),
 *               pushes it on a lock-free stack with another, sharing the
 *               signal reference of the post it lands on (same signal,
 *               sender and args_free); uv_async_send only when the stack
 *               was idle (never while the loop is draining it). Bounded
 *               queue (the limit raised to the message count so that
 *               nothing is refused); a post that finds the loop more than
 *               4096 posts behind yields the processor once. The loop
 *               thread takes the whole stack with one exchange, reverses
 *               it and calls hark_send(sig, NULL, args) per item: the
 *               dispatcher finds the signal's one receiver and calls it.
 *   queue       the queue one would write instead (the target): malloc a
 *               node {next, args}, lock, append, unlock, uv_async_send on
 *               an empty-to-non-empty transition; the consumer takes the
 *               whole list under the lock and calls the receiver function
 *               directly (no dispatch), then free()s the node. Unbounded.
 *   queue+pool  the same queue recycling its nodes: taken from a free
 *               list under the same lock (malloc only when it is empty),
 *               a drained batch spliced back onto it under one lock
 *               (unbounded; freed at the end). No allocation at all once
 *               warm: the strongest hand-written baseline.
 *   queue+send  the queue, its consumer calling hark_send on a signal
 *               like hark's: splits hark_post's cost into the queue's and
 *               the dispatch's.
 *
 * Latency: one producer posts a message every --interval-us (the loop
 * asleep in between, as in a real program), each carrying its post time;
 * the receiver records the delay: median and p99.
 *
 * Every side checks that every message arrived once and in post order per
 * producer; a mismatch exits 1.
 *
 * Wall time on a shared machine is noisy (and where the scheduler puts
 * the threads matters: the queue is at its best with both on one core,
 * hark with them on two); for instruction counts, run one configuration
 * under callgrind (which serialises the threads but counts every
 * instruction), with N and 2N messages: (Ir(2N) - Ir(N)) / N is the cost
 * per message, setup cancelled out:
 *   valgrind --tool=callgrind bench-post --only hark|queue|pool|send
 *            --producers P --messages N --rounds 1
 *
 *   bench-post [--messages N] [--rounds R] [--samples S] [--interval-us U]
 *              [--data FILE] [--only SIDE --producers P]
 */
#include <hark.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_PRODUCERS 4
#define TARGET 1.5 /* hark / queue, issue 16 */

static void die(const char *what) {
  fprintf(stderr, "bench-post: %s\n", what);
  exit(1);
}

/* CPU time of the whole process (all threads), in ns. */
static uint64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) *
             1000000000u +
         ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) *
             1000u;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the receiver, shared by both sides --------------------------------- */

typedef struct rcv {
  hark_object base;
  long expected, received, bad;
  long next_seq[MAX_PRODUCERS]; /* per-producer order check */
  uint64_t t_done;
  /* latency mode: args point at a post time; delays go here */
  int latency;
  uint64_t *delays;
  long ndelays;
  void (*finish)(struct rcv *r); /* stops the loop */
  void *ctx;
} rcv;

static const hark_type rcv_type = {"bench-post-receiver", sizeof(rcv), NULL, NULL};

/* args: (producer << 40 | seq) + 1 in throughput mode, &post_time in
 * latency mode */
static int on_msg(void *self, void *sender, void *args) {
  rcv *r = self;
  (void)sender;
  if (r->latency) {
    r->delays[r->ndelays++] = now_ns() - *(const uint64_t *)args;
  } else {
    uintptr_t v = (uintptr_t)args - 1;
    unsigned p = (unsigned)(v >> 40);
    long seq = (long)(v & (((uintptr_t)1 << 40) - 1));
    if (p >= MAX_PRODUCERS || seq != r->next_seq[p])
      r->bad++;
    else
      r->next_seq[p]++;
  }
  if (++r->received == r->expected) {
    r->t_done = now_ns();
    r->finish(r);
  }
  return 0;
}

/* ---- the hand-written queue ------------------------------------------- */

typedef struct qnode {
  struct qnode *next;
  void *args;
} qnode;

typedef struct hq {
  uv_mutex_t mu;
  qnode *head, *tail;
  int pool;    /* queue+pool: recycle nodes through free */
  qnode *free; /* queue+pool: spare nodes, under mu */
  uv_async_t async;
  rcv *r;
  hark_signal *sig; /* queue+send: dispatch through it */
} hq;

static int hq_post(hq *q, void *args) {
  qnode *n = NULL;
  if (q->pool) { /* a spare node, taken under the lock */
    uv_mutex_lock(&q->mu);
    if ((n = q->free) != NULL)
      q->free = n->next;
    else
      uv_mutex_unlock(&q->mu);
  }
  if (n == NULL) { /* malloc outside the lock */
    if ((n = malloc(sizeof(*n))) == NULL)
      return -1;
    n->next = NULL;
    n->args = args;
    uv_mutex_lock(&q->mu);
  }
  n->next = NULL;
  n->args = args;
  int wake = q->head == NULL;
  if (q->tail != NULL)
    q->tail->next = n;
  else
    q->head = n;
  q->tail = n;
  uv_mutex_unlock(&q->mu);
  if (wake)
    uv_async_send(&q->async);
  return 0;
}

static void hq_drain(uv_async_t *a) {
  hq *q = a->data;
  uv_mutex_lock(&q->mu);
  qnode *n = q->head;
  q->head = q->tail = NULL;
  uv_mutex_unlock(&q->mu);
  qnode *first = n, *last = NULL;
  while (n != NULL) {
    qnode *next = n->next;
    if (q->sig != NULL)
      hark_send(q->sig, NULL, n->args);
    else
      on_msg(q->r, NULL, n->args);
    if (q->pool)
      last = n;
    else
      free(n);
    n = next;
  }
  if (last != NULL) { /* give the batch back in one go */
    uv_mutex_lock(&q->mu);
    last->next = q->free;
    q->free = first;
    uv_mutex_unlock(&q->mu);
  }
}

static void hq_finish(rcv *r) {
  uv_close((uv_handle_t *)&((hq *)r->ctx)->async, NULL);
}

/* ---- hark -------------------------------------------------------------- */

static void hark_finish(rcv *r) { hark_loop_close(r->ctx); }

/* ---- producers ---------------------------------------------------------- */

typedef struct side {
  int is_hark;
  hark_loop *hl;
  hark_signal *sig;
  hq *q;
} side;

typedef struct producer {
  pthread_t th;
  side *sd;
  unsigned id;
  long count;
  /* latency mode */
  int latency;
  uint64_t interval_ns;
  uint64_t *times;
  long retries;
} producer;

static void post_one(producer *p, void *args) {
  for (;;) {
    int err = p->sd->is_hark
                  ? hark_post(p->sd->hl, p->sd->sig, NULL, args, NULL)
                  : hq_post(p->sd->q, args);
    if (err == 0)
      return;
    if (err != HARK_EAGAIN)
      die("post failed");
    p->retries++;
    sched_yield();
  }
}

static void *produce(void *arg) {
  producer *p = arg;
  uint64_t next = now_ns();
  for (long i = 0; i < p->count; i++) {
    if (p->latency) {
      next += p->interval_ns;
      while (now_ns() < next) {
        struct timespec ts = {0, 20000};
        if (next - now_ns() > 60000)
          nanosleep(&ts, NULL);
      }
      p->times[i] = now_ns();
      post_one(p, &p->times[i]);
    } else {
      post_one(p, (void *)((((uintptr_t)p->id << 40) | (uintptr_t)i) + 1));
    }
  }
  return NULL;
}

enum { S_QUEUE, S_HARK, S_SEND, S_POOL, NSIDES };
static const char *const side_name[NSIDES] = {"queue", "hark", "queue+send",
                                              "queue+pool"};

/* One run; returns messages/s (latency mode: fills r->delays). */
static double run(int which, int nprod, long total, int latency,
                  uint64_t interval_ns, uint64_t *delays) {
  int with_send = which == S_SEND;
  int is_hark = which == S_HARK;
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    die("uv_loop_init");
  rcv *r = hark_new(&rcv_type);
  if (r == NULL)
    die("out of memory");
  r->expected = total;
  r->latency = latency;
  r->delays = delays;
  side sd = {is_hark, NULL, NULL, NULL};
  hq q;
  if (is_hark) {
    sd.hl = hark_loop_new(&loop);
    sd.sig = hark_signal_new("bench-post");
    if (sd.hl == NULL || sd.sig == NULL)
      die("out of memory");
    hark_loop_set_queue_limit(sd.hl, (size_t)total + 1);
    if (hark_connect(sd.sig, on_msg, r, NULL, HARK_WEAK) != 0)
      die("hark_connect");
    r->finish = hark_finish;
    r->ctx = sd.hl;
  } else {
    memset(&q, 0, sizeof(q));
    if (uv_mutex_init(&q.mu) != 0 || uv_async_init(&loop, &q.async, hq_drain))
      die("queue init");
    q.async.data = &q;
    q.r = r;
    q.pool = which == S_POOL;
    if (with_send) {
      if ((q.sig = hark_signal_new("bench-post-queue")) == NULL ||
          hark_connect(q.sig, on_msg, r, NULL, HARK_WEAK) != 0)
        die("out of memory");
    }
    sd.q = &q;
    r->finish = hq_finish;
    r->ctx = &q;
  }
  producer p[MAX_PRODUCERS];
  memset(p, 0, sizeof(p));
  uint64_t *times = NULL;
  if (latency && (times = malloc((size_t)total * sizeof(*times))) == NULL)
    die("out of memory");
  uint64_t t0 = now_ns();
  for (int i = 0; i < nprod; i++) {
    p[i].sd = &sd;
    p[i].id = (unsigned)i;
    p[i].count = total / nprod + (i < total % nprod);
    p[i].latency = latency;
    p[i].interval_ns = interval_ns;
    p[i].times = times;
    if (pthread_create(&p[i].th, NULL, produce, &p[i]) != 0)
      die("pthread_create");
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  for (int i = 0; i < nprod; i++)
    pthread_join(p[i].th, NULL);
  long want[MAX_PRODUCERS];
  for (int i = 0; i < MAX_PRODUCERS; i++)
    want[i] = i < nprod && !latency ? p[i].count : 0;
  int bad = r->received != total || r->bad != 0;
  for (int i = 0; i < MAX_PRODUCERS && !latency; i++)
    bad += r->next_seq[i] != want[i];
  if (bad) {
    fprintf(stderr,
            "bench-post: %s, %d producers: %ld of %ld messages, "
            "%ld out of order\n",
            side_name[which], nprod, r->received, total, r->bad);
    exit(1);
  }
  double rate = (double)total / ((double)(r->t_done - t0) / 1e9);
  if (is_hark) {
    hark_unref(sd.sig);
    hark_unref(sd.hl);
  } else {
    uv_mutex_destroy(&q.mu);
    hark_unref(q.sig);
    while (q.free != NULL) {
      qnode *n = q.free;
      q.free = n->next;
      free(n);
    }
  }
  hark_unref(r);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    die("uv_loop_close: handles left open");
  free(times);
  return rate;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return v[n / 2];
}

int main(int argc, char **argv) {
  long total = 200000, samples = 5000;
  int rounds = 7;
  double interval_us = 100;
  const char *data_path = NULL;
  int only = -1, only_prod = 1;
  for (int i = 1; i < argc; i += 2) { /* OPTION VALUE pairs */
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0) {
      printf("usage: bench-post [--messages N] [--rounds R] [--samples S] "
             "[--interval-us U] [--data FILE]\n"
             "       bench-post --only hark|queue|pool|send --producers P "
             "[--messages N] [--rounds R]\n");
      return 0;
    }
    if (v == NULL)
      die("option needs a value (see --help)");
    if (strcmp(a, "--messages") == 0)
      total = strtol(v, NULL, 10);
    else if (strcmp(a, "--rounds") == 0)
      rounds = atoi(v);
    else if (strcmp(a, "--samples") == 0)
      samples = strtol(v, NULL, 10);
    else if (strcmp(a, "--interval-us") == 0)
      interval_us = strtod(v, NULL);
    else if (strcmp(a, "--data") == 0)
      data_path = v;
    else if (strcmp(a, "--only") == 0)
      only = strcmp(v, "hark") == 0    ? S_HARK
             : strcmp(v, "queue") == 0 ? S_QUEUE
             : strcmp(v, "pool") == 0  ? S_POOL
             : strcmp(v, "send") == 0  ? S_SEND
                                      : (die("--only hark|queue|pool|send"), 0);
    else if (strcmp(a, "--producers") == 0)
      only_prod = atoi(v);
    else
      die("unknown option (see --help)");
  }
  if (total < MAX_PRODUCERS || rounds < 1 || rounds > 99 || samples < 100 ||
      interval_us <= 0)
    die("bad option value");
  if (only >= 0) {
    /* One configuration, one run per round: for callgrind, which counts
     * instructions whatever the machine does meanwhile. */
    if (only_prod < 1 || only_prod > MAX_PRODUCERS)
      die("--producers 1..4");
    for (int r = 0; r < rounds; r++) {
      uint64_t c0 = cpu_ns();
      double rate = run(only, only_prod, total, 0, 0, NULL);
      printf("%s, %d producers: %.0f msg/s, %.1f cpu ns/msg\n", side_name[only],
             only_prod, rate, (double)(cpu_ns() - c0) / (double)total);
    }
    return 0;
  }
  FILE *data = NULL;
  if (data_path != NULL && (data = fopen(data_path, "w")) == NULL) {
    fprintf(stderr, "bench-post: %s: %s\n", data_path, strerror(errno));
    return 2;
  }

  printf("hark bench-post: %ld messages per run, medians of %d rounds, the "
         "sides in turn\n"
         "  hark:       hark_post -> units of shared blocks, lock-free stack, "
         "a wakeup per idle stack -> hark_send -> receiver\n"
         "  queue:      malloc'd node, mutex, uv_async_send -> receiver "
         "called directly -> free (the target)\n"
         "  queue+pool: the same, nodes recycled through a free list under "
         "the mutex (no malloc once warm)\n"
         "  queue+send: the queue, hark_send -> receiver\n\n",
         total, rounds);
  printf("%-22s %11s %11s %6s %-11s %-4s %11s %6s %11s\n", "throughput msg/s",
         "hark", "queue", "ratio", "range", "met?", "queue+pool", "ratio",
         "queue+send");
  static const int prods[] = {1, 2, 4};
  int missed = 0;
  for (size_t k = 0; k < sizeof(prods) / sizeof(prods[0]); k++) {
    double v[NSIDES][99], ratio[99], ratio_pool[99];
    for (int r = 0; r < rounds; r++) {
      /* a different order each round, so no side always goes first */
      for (int i = 0; i < NSIDES; i++) {
        int which = (i + r) % NSIDES;
        v[which][r] = run(which, prods[k], total, 0, 0, NULL);
      }
      ratio[r] = v[S_HARK][r] / v[S_QUEUE][r];
      ratio_pool[r] = v[S_HARK][r] / v[S_POOL][r];
    }
    double m[NSIDES];
    for (int i = 0; i < NSIDES; i++)
      m[i] = median(v[i], rounds);
    double mr = median(ratio, rounds), mrp = median(ratio_pool, rounds);
    /* median sorted ratio[] in place */
    double lo = ratio[0], hi = ratio[rounds - 1];
    missed += mr < TARGET;
    char title[64], range[32];
    snprintf(title, sizeof(title), "hark_post, %d producer%s", prods[k],
             prods[k] > 1 ? "s" : "");
    snprintf(range, sizeof(range), "%.2f-%.2f", lo, hi);
    printf("%-22s %11.0f %11.0f %5.2fx %-11s %-4s %11.0f %5.2fx %11.0f\n",
           title, m[S_HARK], m[S_QUEUE], mr, range, mr >= TARGET ? "yes" : "NO",
           m[S_POOL], mrp, m[S_SEND]);
    fflush(stdout);
    if (data != NULL)
      fprintf(data, "throughput %d %.0f %.0f %.4f %.0f %.0f %.4f %.4f %.4f\n",
              prods[k], m[S_HARK], m[S_QUEUE], mr, m[S_SEND], m[S_POOL], mrp,
              lo, hi);
  }

  uint64_t *d = malloc((size_t)samples * sizeof(*d));
  if (d == NULL)
    die("out of memory");
  printf("\n%-26s %12s %12s   (%ld posts, one every %.0f us)\n",
         "post -> receiver latency", "p50 us", "p99 us", samples, interval_us);
  for (int is_hark = 1; is_hark >= 0; is_hark--) {
    run(is_hark ? S_HARK : S_QUEUE, 1, samples, 1,
        (uint64_t)(interval_us * 1000), d);
    qsort(d, (size_t)samples, sizeof(*d), cmp_u64);
    double p50 = (double)d[samples / 2] / 1e3;
    double p99 = (double)d[samples * 99 / 100] / 1e3;
    printf("%-26s %12.1f %12.1f\n", is_hark ? "hark_post" : "queue", p50, p99);
    if (data != NULL)
      fprintf(data, "latency %s %.2f %.2f\n", is_hark ? "hark" : "queue", p50,
              p99);
  }
  free(d);
  if (data != NULL)
    fclose(data);
  printf("\nratio: median over rounds of hark / the queue (or queue+pool) "
         "run in the same round; range: lowest and highest of those rounds."
         "\ntarget: hark >= %.1fx queue. %d target(s) missed; correctness "
         "ok\n",
         TARGET, missed);
  if (hark_live_count(NULL) != 0) {
    fprintf(stderr, "bench-post: %zu objects still live at exit\n",
            hark_live_count(NULL));
    return 1;
  }
  return 0;
}
