/* peer-gobject.c: GObject signals as a bench-signal peer. Two variants:
 * "gobject" connects with g_signal_connect (user data: a plain counter;
 * nothing tracks the receiver), "gobject-object" connects with
 * g_signal_connect_object, whose receiver is a GObject (its finalization
 * disconnects the handler, GObject's answer to dangling callbacks). The
 * filtered case uses a GObject instance per sender, each with its own
 * handlers, the library's natural form. The signal has no arguments and
 * no class closure (G_SIGNAL_RUN_LAST, no accumulator). */
#include "peers.h"

#include <glib-object.h>
#include <stdio.h>

/* the sender (emitter) and receiver types */
typedef struct bench_gsender {
  GObject parent;
} BenchGSender;
typedef struct bench_gsender_class {
  GObjectClass parent;
} BenchGSenderClass;

typedef struct bench_greceiver {
  GObject parent;
  unsigned long calls;
} BenchGReceiver;
typedef struct bench_greceiver_class {
  GObjectClass parent;
} BenchGReceiverClass;

static GType bench_gsender_get_type(void);
static GType bench_greceiver_get_type(void);
G_DEFINE_TYPE(BenchGSender, bench_gsender, G_TYPE_OBJECT)
G_DEFINE_TYPE(BenchGReceiver, bench_greceiver, G_TYPE_OBJECT)

static guint ping_id;

static void bench_gsender_class_init(BenchGSenderClass *klass) {
  ping_id = g_signal_new("ping", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST,
                         0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}
static void bench_gsender_init(BenchGSender *self) { (void)self; }
static void bench_greceiver_class_init(BenchGReceiverClass *klass) {
  (void)klass;
}
static void bench_greceiver_init(BenchGReceiver *self) { self->calls = 0; }

/* g_signal_connect: user data is the receiver (any memory) */
static void on_ping(GObject *sender, gpointer data) {
  (void)sender;
  ((BenchGReceiver *)data)->calls++;
}

typedef struct gstate {
  enum bench_kind kind;
  int tracked; /* g_signal_connect_object */
  size_t param, nsend, nrcv;
  BenchGSender **s;
  BenchGReceiver **r;
  BenchGReceiver *extra;
} gstate;

static gulong gconnect(gstate *g, BenchGSender *s, BenchGReceiver *r) {
  if (g->tracked)
    return g_signal_connect_object(s, "ping", G_CALLBACK(on_ping), r, 0);
  return g_signal_connect(s, "ping", G_CALLBACK(on_ping), r);
}

static void *setup_common(enum bench_kind kind, size_t param, int tracked) {
  gstate *g = g_new0(gstate, 1);
  g->kind = kind;
  g->tracked = tracked;
  g->param = param;
  g->nsend = kind == BENCH_FILTERED ? param : 1;
  g->nrcv = kind == BENCH_FILTERED ? param * BENCH_PER : param;
  g->s = g_new0(BenchGSender *, g->nsend);
  g->r = g_new0(BenchGReceiver *, g->nrcv ? g->nrcv : 1);
  for (size_t i = 0; i < g->nsend; i++)
    g->s[i] = g_object_new(bench_gsender_get_type(), NULL);
  for (size_t i = 0; i < g->nrcv; i++)
    g->r[i] = g_object_new(bench_greceiver_get_type(), NULL);
  g->extra = g_object_new(bench_greceiver_get_type(), NULL);
  size_t per = g->nrcv / g->nsend;
  for (size_t k = 0; k < per; k++)
    for (size_t j = 0; j < g->nsend; j++)
      gconnect(g, g->s[j], g->r[j * per + k]);
  return g;
}

static void *setup_plain(enum bench_kind kind, size_t param) {
  return setup_common(kind, param, 0);
}

static void *setup_tracked(enum bench_kind kind, size_t param) {
  return setup_common(kind, param, 1);
}

static long run(void *p, long iters) {
  gstate *g = p;
  switch (g->kind) {
  case BENCH_SEND:
    for (long i = 0; i < iters; i++)
      g_signal_emit(g->s[0], ping_id, 0);
    return iters * (long)g->param;
  case BENCH_FILTERED:
    for (long i = 0; i < iters; i++)
      for (size_t j = 0; j < g->nsend; j++)
        g_signal_emit(g->s[j], ping_id, 0);
    return iters * (long)g->nrcv;
  case BENCH_CONNECT:
    for (long i = 0; i < iters; i++)
      g_signal_handler_disconnect(g->s[0], gconnect(g, g->s[0], g->extra));
    return iters;
  }
  return -1;
}

static int check_all(gstate *g, unsigned long want) {
  int bad = 0;
  for (size_t i = 0; i < g->nrcv; i++) {
    if (g->r[i]->calls != want && bad++ < 3)
      fprintf(stderr, "bench-signal: gobject: receiver %zu called %lu "
              "times, expected %lu\n", i, g->r[i]->calls, want);
    g->r[i]->calls = 0;
  }
  return bad;
}

static int check(void *p, long iters) {
  gstate *g = p;
  if (g->kind != BENCH_CONNECT)
    return check_all(g, (unsigned long)iters);
  g_signal_emit(g->s[0], ping_id, 0);
  int bad = check_all(g, 1) + (g->extra->calls != 0);
  g->extra->calls = 0;
  return bad;
}

static void teardown(void *p) {
  gstate *g = p;
  for (size_t i = 0; i < g->nsend; i++)
    g_object_unref(g->s[i]);
  for (size_t i = 0; i < g->nrcv; i++)
    g_object_unref(g->r[i]);
  g_object_unref(g->extra);
  g_free(g->s);
  g_free(g->r);
  g_free(g);
}

const bench_peer bench_peers_gobject[] = {
    {"gobject", setup_plain, run, check, teardown},
    {"gobject-object", setup_tracked, run, check, teardown},
};
const int bench_npeers_gobject = 2;
