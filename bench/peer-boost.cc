// peer-boost.cc: Boost.Signals2 as a bench-signal peer, thread-safe like
// hark (its default mutex). Two variants: "boost" connects plain slots
// (nothing tracks the receiver: the caller must disconnect before it
// dies), "boost-tracked" tracks each receiver's std::shared_ptr with
// slot.track_foreign (a dead receiver is skipped and dropped, Boost's
// answer to dangling callbacks). The filtered case uses a signal per
// sender, the library's natural form.
#include "peers.h"

#include <cstdio>
#include <memory>
#include <vector>

#include <boost/signals2.hpp>

namespace {

typedef boost::signals2::signal<void()> signal_t;

struct receiver {
  unsigned long calls = 0;
  void on() { calls++; }
};

struct state {
  bench_kind kind;
  bool tracked;
  size_t param;
  std::vector<std::shared_ptr<receiver>> r;
  std::vector<std::unique_ptr<signal_t>> sig;
  std::shared_ptr<receiver> extra = std::make_shared<receiver>();
};

boost::signals2::connection connect(state *s, signal_t &sig,
                                    const std::shared_ptr<receiver> &r) {
  if (!s->tracked) {
    receiver *raw = r.get();
    return sig.connect([raw] { raw->on(); });
  }
  receiver *raw = r.get();
  return sig.connect(signal_t::slot_type([raw] { raw->on(); })
                         .track_foreign(r));
}

int check_all(state *s, unsigned long want) {
  int bad = 0;
  for (size_t i = 0; i < s->r.size(); i++) {
    if (s->r[i]->calls != want && bad++ < 3)
      std::fprintf(stderr, "bench-signal: boost: receiver %zu called %lu "
                   "times, expected %lu\n", i, s->r[i]->calls, want);
    s->r[i]->calls = 0;
  }
  return bad;
}

void *setup_common(bench_kind kind, size_t param, bool tracked) {
  state *s = new state;
  s->kind = kind;
  s->tracked = tracked;
  s->param = param;
  size_t nsig = kind == BENCH_FILTERED ? param : 1;
  size_t nrcv = kind == BENCH_FILTERED ? param * BENCH_PER : param;
  for (size_t i = 0; i < nsig; i++)
    s->sig.emplace_back(new signal_t);
  for (size_t i = 0; i < nrcv; i++)
    s->r.push_back(std::make_shared<receiver>());
  for (size_t k = 0; k < nrcv / nsig; k++)
    for (size_t j = 0; j < nsig; j++)
      connect(s, *s->sig[j], s->r[j * (nrcv / nsig) + k]);
  return s;
}

void *setup_plain(bench_kind kind, size_t param) {
  return setup_common(kind, param, false);
}

void *setup_tracked(bench_kind kind, size_t param) {
  return setup_common(kind, param, true);
}

long run(void *p, long iters) {
  state *s = static_cast<state *>(p);
  switch (s->kind) {
  case BENCH_SEND: {
    signal_t &sig = *s->sig[0];
    for (long i = 0; i < iters; i++)
      sig();
    return iters * (long)s->param;
  }
  case BENCH_FILTERED:
    for (long i = 0; i < iters; i++)
      for (auto &sig : s->sig)
        (*sig)();
    return iters * (long)(s->param * BENCH_PER);
  case BENCH_CONNECT: {
    signal_t &sig = *s->sig[0];
    for (long i = 0; i < iters; i++)
      connect(s, sig, s->extra).disconnect();
    return iters;
  }
  }
  return -1;
}

int check(void *p, long iters) {
  state *s = static_cast<state *>(p);
  if (s->kind != BENCH_CONNECT)
    return check_all(s, (unsigned long)iters);
  (*s->sig[0])();
  int bad = check_all(s, 1) + (s->extra->calls != 0);
  bad += s->sig[0]->num_slots() != s->param;
  s->extra->calls = 0;
  return bad;
}

void teardown(void *p) { delete static_cast<state *>(p); }

} // namespace

extern "C" {
const bench_peer bench_peers_boost[] = {
    {"boost", setup_plain, run, check, teardown},
    {"boost-tracked", setup_tracked, run, check, teardown},
};
const int bench_npeers_boost = 2;
}
