/* Leak tracker: live objects per type, snapshots and their diff (in the
 * spirit of pympler's tracker), and the HARK_DEBUG switches.
 *
 * Counts live in a fixed table of slots keyed by type: creating an object
 * takes no lock and allocates nothing, and the table is a one-time global,
 * so the library holds no memory once every object is gone. */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 256
#define OVERFLOW SLOTS /* types beyond SLOTS are counted together */

static struct slot {
  const hark_type *_Atomic type;
  _Atomic long live;
  _Atomic long bytes;
} slots[SLOTS + 1];

static const hark_type overflow_type = {"(other types)", 0, NULL, NULL};

/* ---- HARK_DEBUG -------------------------------------------------------- */

static pthread_once_t debug_once = PTHREAD_ONCE_INIT;
static unsigned debug_flags;

static const char *type_name(const hark_type *t) {
  return t->name != NULL ? t->name : "(unnamed)";
}

static void print_table(void (*line)(void *ctx, const char *s), void *ctx,
                        const hark_snapshot *before,
                        const hark_snapshot *after);

static void log_line(void *ctx, const char *s) {
  (void)ctx;
  hark__log(HARK_LOG_INFO, "%s", s);
}

size_t hark__leaks_report(void (*line)(void *ctx, const char *s), void *ctx);

static void print_leaks(void) {
  size_t total = hark_live_count(NULL);
  if (total == 0) {
    hark__log(HARK_LOG_INFO, "no live objects at exit");
    return;
  }
  hark__log(HARK_LOG_INFO, "%zu live object%s at exit:", total,
            total == 1 ? "" : "s");
  print_table(log_line, NULL, NULL, NULL);
  hark__leaks_report(log_line, NULL);
}

static void debug_init(void) {
  const char *env = getenv("HARK_DEBUG");
  if (env == NULL)
    return;
  const char *p = env;
  while (*p != '\0') {
    size_t n = strcspn(p, ",");
    if ((n == 5 && strncmp(p, "leaks", 5) == 0) ||
        (n == 3 && strncmp(p, "all", 3) == 0))
      debug_flags |= HARK__DEBUG_LEAKS;
    if ((n == 9 && strncmp(p, "receivers", 9) == 0) ||
        (n == 3 && strncmp(p, "all", 3) == 0))
      debug_flags |= HARK__DEBUG_RECEIVERS;
    /* not part of "all": senders fence instead of relying on membarrier,
     * the path taken where the kernel lacks it (for tests) */
    if (n == 6 && strncmp(p, "fences", 6) == 0)
      debug_flags |= HARK__DEBUG_FENCES;
    p += n;
    if (*p == ',')
      p++;
  }
  if (debug_flags & HARK__DEBUG_LEAKS)
    atexit(print_leaks);
}

unsigned hark__debug(void) {
  pthread_once(&debug_once, debug_init);
  return debug_flags;
}

/* ---- counting ------------------------------------------------------------ */

unsigned hark__tracker_add(const hark_type *type) {
  hark__debug(); /* arms the exit report before the first object lives */
  uintptr_t h = (uintptr_t)type;
  h = (h >> 4) ^ (h >> 12);
  unsigned idx = OVERFLOW;
  for (unsigned i = 0; i < SLOTS; i++) {
    unsigned s = (unsigned)((h + i) % SLOTS);
    const hark_type *t = atomic_load(&slots[s].type);
    if (t == NULL) {
      const hark_type *expect = NULL;
      if (atomic_compare_exchange_strong(&slots[s].type, &expect, type) ||
          expect == type) {
        idx = s;
        break;
      }
      continue;
    }
    if (t == type) {
      idx = s;
      break;
    }
  }
  if (idx == OVERFLOW)
    atomic_store(&slots[OVERFLOW].type, &overflow_type);
  atomic_fetch_add(&slots[idx].live, 1);
  atomic_fetch_add(&slots[idx].bytes, (long)type->size);
  return idx;
}

void hark__tracker_remove(unsigned slot) {
  /* bytes were added per object of the slot's type; the overflow slot
   * mixes types, so bytes are subtracted by the average, which is exact
   * when every object of every overflow type has gone */
  long live = atomic_fetch_sub(&slots[slot].live, 1);
  const hark_type *t = atomic_load(&slots[slot].type);
  if (slot != OVERFLOW)
    atomic_fetch_sub(&slots[slot].bytes, (long)t->size);
  else if (live == 1)
    atomic_store(&slots[slot].bytes, 0);
}

size_t hark_live_count(const char *name) {
  long n = 0;
  for (unsigned i = 0; i <= SLOTS; i++) {
    const hark_type *t = atomic_load(&slots[i].type);
    if (t == NULL)
      continue;
    /* A slot keeps its type pointer for good, but a type need only
     * outlive its objects: read it only while the slot has live ones. */
    long live = atomic_load(&slots[i].live);
    if (live > 0 && (name == NULL || strcmp(type_name(t), name) == 0))
      n += live;
  }
  return n > 0 ? (size_t)n : 0;
}

/* ---- snapshots ------------------------------------------------------------ */

struct row {
  const char *name;
  long count;
  long bytes;
  bool object; /* a hark object's type, not a weak map's row */
};

#define MAP_ROWS 2 /* "hark_weakmap" and "hark_weakmap entry" */
#define ROWS (SLOTS + 1 + MAP_ROWS)

struct hark_snapshot {
  size_t n;
  struct row rows[];
};

/* Adds (name, count, bytes) to rows, merging types that share a name. */
static size_t add_row(struct row *rows, size_t n, const char *name, long count,
                      long bytes, bool object) {
  for (size_t i = 0; i < n; i++) {
    if (strcmp(rows[i].name, name) == 0 && rows[i].object == object) {
      rows[i].count += count;
      rows[i].bytes += bytes;
      return n;
    }
  }
  rows[n] = (struct row){name, count, bytes, object};
  return n + 1;
}

static size_t fill_live(struct row *rows) {
  size_t n = 0;
  for (unsigned i = 0; i <= SLOTS; i++) {
    const hark_type *t = atomic_load(&slots[i].type);
    if (t == NULL)
      continue;
    long c = atomic_load(&slots[i].live);
    if (c > 0)
      n = add_row(rows, n, type_name(t), c, atomic_load(&slots[i].bytes), true);
  }
  long maps, map_bytes, entries, entry_bytes;
  hark__weakmap_counts(&maps, &map_bytes, &entries, &entry_bytes);
  if (maps > 0)
    n = add_row(rows, n, "hark_weakmap", maps, map_bytes, false);
  if (entries > 0)
    n = add_row(rows, n, "hark_weakmap entry", entries, entry_bytes, false);
  return n;
}

hark_snapshot *hark_snapshot_take(void) {
  hark_snapshot *s = hark__malloc(sizeof(*s) + ROWS * sizeof(struct row));
  if (s == NULL)
    return NULL;
  s->n = fill_live(s->rows);
  return s;
}

size_t hark_snapshot_count(const hark_snapshot *s, const char *name) {
  if (s == NULL)
    return 0;
  long n = 0;
  for (size_t i = 0; i < s->n; i++)
    if (name == NULL ? s->rows[i].object : strcmp(s->rows[i].name, name) == 0)
      n += s->rows[i].count;
  return (size_t)n;
}

void hark_snapshot_free(hark_snapshot *s) { hark__free(s); }

static void file_line(void *ctx, const char *s) {
  fputs(s, ctx);
  fputc('\n', ctx);
}

void hark_snapshot_print_diff(FILE *out, const hark_snapshot *before,
                              const hark_snapshot *after) {
  print_table(file_line, out != NULL ? out : stdout, before, after);
}

/* Largest change first, then by name: tables read the same every run. */
static int cmp_rows(const void *pa, const void *pb) {
  const struct row *a = pa, *b = pb;
  long x = a->count < 0 ? -a->count : a->count;
  long y = b->count < 0 ? -b->count : b->count;
  if (x != y)
    return x > y ? -1 : 1;
  int c = strcmp(a->name, b->name);
  return c != 0 ? c : (int)b->object - (int)a->object;
}

/* Hands the table to line(ctx, s), one line at a time: signed deltas when
 * there is a before, plain counts when not. With both snapshots NULL it is
 * the live objects now (the exit report), read from the counters: no
 * memory needed. The total counts hark objects (not weak maps' rows). */
static void print_table(void (*line)(void *ctx, const char *s), void *ctx,
                        const hark_snapshot *before,
                        const hark_snapshot *after) {
  char buf[128];
  struct row live[ROWS];
  struct row diff[2 * ROWS];
  size_t nlive = 0, n = 0;
  const struct row *a = NULL, *b = NULL;
  size_t na = 0, nb = 0;
  if (before == NULL && after == NULL) {
    nlive = fill_live(live);
    a = live;
    na = nlive;
  } else {
    if (after != NULL) {
      a = after->rows;
      na = after->n;
    }
    if (before != NULL) {
      b = before->rows;
      nb = before->n;
    }
  }
  for (size_t i = 0; i < na; i++)
    n = add_row(diff, n, a[i].name, a[i].count, a[i].bytes, a[i].object);
  for (size_t i = 0; i < nb; i++)
    n = add_row(diff, n, b[i].name, -b[i].count, -b[i].bytes, b[i].object);
  qsort(diff, n, sizeof(diff[0]), cmp_rows);
  const char *fmt = b != NULL ? "%-32s %+10ld %+12ld" : "%-32s %10ld %12ld";
  snprintf(buf, sizeof buf, "%-32s %10s %12s", "type", "objects", "bytes");
  line(ctx, buf);
  long tc = 0, tb = 0;
  for (size_t i = 0; i < n; i++) {
    if (diff[i].count == 0 && diff[i].bytes == 0)
      continue;
    snprintf(buf, sizeof buf, fmt, diff[i].name, diff[i].count, diff[i].bytes);
    line(ctx, buf);
    if (diff[i].object) {
      tc += diff[i].count;
      tb += diff[i].bytes;
    }
  }
  snprintf(buf, sizeof buf, fmt, "(total)", tc, tb);
  line(ctx, buf);
}
