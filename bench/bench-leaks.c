/* bench-leaks: what the leak finder costs on a big heap (issue 14's
 * target: a report over 10^6 live objects in under 1 s), and what the
 * objects of a traversable type pay for being indexed.
 *
 *   bench-leaks [--objects N] [--rounds R]
 *
 * Cases, each on N objects (default 10^6), timed over R rounds (default
 * 5; the table shows the median and the slowest):
 *   trees     N/2 parents each holding a child, all held by the program:
 *             no leak; every object examined, nothing reported
 *   leaked    the same, then 1% of the parents and children linked into
 *             parent-child cycles and dropped: 10^4 findings
 *   one-cycle N objects in one ring, dropped: one finding of N objects
 *             (the worst case for the cycle search)
 * plus the time to make and drop N objects of a traversable type against
 * an opaque one (the index). Every round checks the number of leaked
 * objects found; a wrong count exits 1. */
#include <hark.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct obj {
  hark_object base;
  struct obj *to;
} obj;

static void obj_finalize(void *p) {
  obj *o = p;
  obj *to = o->to;
  o->to = NULL;
  hark_unref(to);
  free(p);
}

static void obj_traverse(void *p, hark_visit_fn visit, void *arg) {
  obj *o = p;
  if (o->to != NULL)
    visit(o->to, arg);
}

static const hark_type trav_type = {"bench-node", sizeof(obj), obj_finalize,
                                    obj_traverse};
static const hark_type opaque_type = {"bench-opaque", sizeof(obj),
                                      obj_finalize, NULL};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static obj *mk(const hark_type *t) {
  obj *o = hark_new(t);
  if (o == NULL) {
    fprintf(stderr, "bench-leaks: out of memory\n");
    exit(1);
  }
  return o;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int bad;

/* Times hark_leaks_find over rounds; checks it finds want objects. */
static void time_find(const char *name, long n, int rounds, long want) {
  double t[64];
  for (int r = 0; r < rounds; r++) {
    double t0 = now();
    int got = hark_leaks_find(NULL, NULL);
    t[r] = now() - t0;
    if (got != want) {
      fprintf(stderr, "bench-leaks: %s: found %d leaked objects, expected %ld\n",
              name, got, want);
      bad = 1;
    }
  }
  qsort(t, (size_t)rounds, sizeof t[0], cmp);
  printf("%-10s %9ld objects %9ld leaked   median %7.3f s   max %7.3f s   "
         "%6.1f ns/object  %s\n",
         name, n, want, t[rounds / 2], t[rounds - 1], t[rounds / 2] * 1e9 / (double)n,
         t[rounds / 2] < 1.0 ? "(< 1 s: target met)" : "(target: < 1 s)");
}

int main(int argc, char **argv) {
  long n = 1000000;
  int rounds = 5;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--objects") == 0 && i + 1 < argc)
      n = atol(argv[++i]);
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench-leaks [--objects N] [--rounds R]\n");
      return 2;
    }
  }
  if (rounds < 1 || rounds > 64 || n < 4)
    return 2;
  printf("hark bench-leaks: hark_leaks_find over %ld live objects, %d rounds\n",
         n, rounds);

  /* the index: making and dropping objects of each kind */
  obj **v = malloc((size_t)n * sizeof(*v));
  if (v == NULL)
    return 1;
  /* a pass first, untimed, so that neither kind pays the first touch */
  for (long i = 0; i < n; i++)
    v[i] = mk(&opaque_type);
  for (long i = 0; i < n; i++)
    hark_unref(v[i]);
  for (int k = 0; k < 2; k++) {
    const hark_type *t = k == 0 ? &opaque_type : &trav_type;
    double t0 = now();
    for (long i = 0; i < n; i++)
      v[i] = mk(t);
    for (long i = 0; i < n; i++)
      hark_unref(v[i]);
    double dt = now() - t0;
    printf("new+unref  %-12s %7.1f ns per object\n",
           k == 0 ? "opaque" : "traversable", dt * 1e9 / (double)n);
  }

  /* trees: parents holding children, all held by the program */
  for (long i = 0; i < n; i += 2) {
    v[i] = mk(&trav_type);
    v[i + 1] = mk(&trav_type);
    v[i]->to = hark_ref(v[i + 1]);
  }
  time_find("trees", n, rounds, 0);

  /* leaked: 1% of the pairs become cycles the program lets go of */
  long leaked = 0;
  for (long i = 0; i < n; i += 200) {
    v[i + 1]->to = hark_ref(v[i]);
    hark_unref(v[i]);
    hark_unref(v[i + 1]);
    v[i] = v[i + 1] = NULL;
    leaked += 2;
  }
  time_find("leaked", n, rounds, leaked);
  for (long i = 0; i < n; i++)
    hark_unref(v[i]);
  /* (the leaked cycles stay: they are the point) */

  /* one ring of everything */
  for (long i = 0; i < n; i++)
    v[i] = mk(&trav_type);
  for (long i = 0; i < n; i++)
    v[i]->to = hark_ref(v[(i + 1) % n]);
  for (long i = 0; i < n; i++)
    hark_unref(v[i]);
  time_find("one-cycle", n + leaked, rounds, n + leaked);
  free(v);
  return bad;
}
