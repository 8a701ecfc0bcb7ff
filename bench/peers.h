/* peers.h: the benchmark's peers (other dispatchers), each in its own
 * translation unit (C++ for libsigc++ and Boost.Signals2), linked into
 * bench-signal only when configure found it.
 *
 * A peer variant makes its own signal(s) and receivers for one case kind;
 * every receiver body is one increment of the receiver's own counter,
 * like hark's, and check() verifies every counter after a batch. */
#ifndef HARK_BENCH_PEERS_H
#define HARK_BENCH_PEERS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum bench_kind {
  BENCH_SEND,     /* param receivers on one signal; one op = one call */
  BENCH_FILTERED, /* param senders with BENCH_PER receivers each, in each
                     peer's natural form (an instance or a signal per
                     sender); one iteration emits once per sender */
  BENCH_CONNECT,  /* connect+disconnect of one more receiver on a signal
                     holding param receivers; one op = one pair */
};
#define BENCH_PER 8

typedef struct bench_peer {
  const char *name; /* row name, e.g. "boost-tracked" */
  /* NULL if the kind is not supported (the row is left out) */
  void *(*setup)(enum bench_kind kind, size_t param);
  long (*run)(void *st, long iters); /* ops made */
  /* 0 if every receiver was called as often as iters iterations of run
   * (BENCH_CONNECT: the signal still reaches exactly its param receivers,
   * checked with one emission); resets the counters */
  int (*check)(void *st, long iters);
  void (*teardown)(void *st);
} bench_peer;

/* Each library: its variants, with the count. */
extern const bench_peer bench_peers_gobject[];
extern const int bench_npeers_gobject;
extern const bench_peer bench_peers_sigc[];
extern const int bench_npeers_sigc;
extern const bench_peer bench_peers_boost[];
extern const int bench_npeers_boost;

#ifdef __cplusplus
}
#endif

#endif
