// peer-sigc.cc: libsigc++ 3 as a bench-signal peer. Receivers derive
// from sigc::trackable (a receiver's destruction disconnects its slots,
// sigc++'s answer to dangling callbacks); the filtered case uses a signal
// per sender, the library's natural form. Single-threaded by design.
#include "peers.h"

#include <cstdio>
#include <memory>
#include <vector>

#include <sigc++/sigc++.h>

namespace {

struct receiver : public sigc::trackable {
  unsigned long calls = 0;
  void on() { calls++; }
};

struct state {
  bench_kind kind;
  size_t param;
  std::vector<std::unique_ptr<receiver>> r;
  std::vector<std::unique_ptr<sigc::signal<void()>>> sig;
  receiver extra; // connected and disconnected by BENCH_CONNECT
};

int check_all(state *s, unsigned long want) {
  int bad = 0;
  for (size_t i = 0; i < s->r.size(); i++) {
    if (s->r[i]->calls != want && bad++ < 3)
      std::fprintf(stderr, "bench-signal: sigc++: receiver %zu called %lu "
                   "times, expected %lu\n", i, s->r[i]->calls, want);
    s->r[i]->calls = 0;
  }
  return bad;
}

void *setup(bench_kind kind, size_t param) {
  state *s = new state;
  s->kind = kind;
  s->param = param;
  size_t nsig = kind == BENCH_FILTERED ? param : 1;
  size_t nrcv = kind == BENCH_FILTERED ? param * BENCH_PER : param;
  for (size_t i = 0; i < nsig; i++)
    s->sig.emplace_back(new sigc::signal<void()>);
  for (size_t i = 0; i < nrcv; i++)
    s->r.emplace_back(new receiver);
  // interleaved over the senders, as in hark's setup
  for (size_t k = 0; k < nrcv / nsig; k++)
    for (size_t j = 0; j < nsig; j++)
      s->sig[j]->connect(
          sigc::mem_fun(*s->r[j * (nrcv / nsig) + k], &receiver::on));
  return s;
}

long run(void *p, long iters) {
  state *s = static_cast<state *>(p);
  switch (s->kind) {
  case BENCH_SEND: {
    sigc::signal<void()> &sig = *s->sig[0];
    for (long i = 0; i < iters; i++)
      sig.emit();
    return iters * (long)s->param;
  }
  case BENCH_FILTERED:
    for (long i = 0; i < iters; i++)
      for (auto &sig : s->sig)
        sig->emit();
    return iters * (long)(s->param * BENCH_PER);
  case BENCH_CONNECT: {
    sigc::signal<void()> &sig = *s->sig[0];
    for (long i = 0; i < iters; i++) {
      sigc::connection c = sig.connect(sigc::mem_fun(s->extra, &receiver::on));
      c.disconnect();
    }
    return iters;
  }
  }
  return -1;
}

int check(void *p, long iters) {
  state *s = static_cast<state *>(p);
  if (s->kind != BENCH_CONNECT)
    return check_all(s, (unsigned long)iters);
  s->sig[0]->emit();
  int bad = check_all(s, 1) + (s->extra.calls != 0);
  s->extra.calls = 0;
  return bad;
}

void teardown(void *p) { delete static_cast<state *>(p); }

} // namespace

extern "C" {
const bench_peer bench_peers_sigc[] = {
    {"sigc++", setup, run, check, teardown},
};
const int bench_npeers_sigc = 1;
}
