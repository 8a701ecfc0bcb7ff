/* libFuzzer harness for hark-chatd's whole input path: one server (made
 * once, on an ephemeral loopback port it never accepts on) and, per input,
 * up to four sessions on socketpairs (examples/chatd/fuzz_seam.c) fed
 * arbitrary bytes through session_feed, the read path without the socket,
 * with the loop turning between reads as it does between socket reads.
 *
 * Input: byte 0 configures (bits 0-1: sessions - 1; bit 2: flood limit on;
 * bit 3: a server password "pw"; bit 4: tiny send queues; bit 5: small
 * channel and name limits); then chunks separated by 0xFE, each a byte
 * choosing the session and the bytes it reads.
 *
 * After every input all sessions are closed and the server must be empty
 * again: no session, channel, nick, receiver or live hark object left. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_seam.h"

#define CHECK(c)                                                             \
  do {                                                                       \
    if (!(c)) {                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      abort();                                                               \
    }                                                                        \
  } while (0)

#define NSESS_MAX 4
#define SEP 0xFE

static uv_loop_t loop;
static chat_server srv;
static chat_options base;
static size_t live_at_start; /* the server's own objects */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  log_set_level(LOG_ERROR);
  CHECK(uv_loop_init(&loop) == 0);
  chat_options_default(&base);
  snprintf(base.host, sizeof base.host, "127.0.0.1");
  base.port = 0;
  /* no clock in the outcome: nothing times out during an input */
  base.register_timeout = 0;
  base.ping_interval = 0;
  base.ping_timeout = 0;
  base.sendq_soft_seconds = 0;
  CHECK(server_start(&srv, &loop, &base) == 0);
  live_at_start = hark_live_count(NULL);
  return 0;
}

static void drain(int fd) {
  char buf[65536];
  while (read(fd, buf, sizeof buf) > 0)
    ;
}

static void turn(int *peer, int n) {
  uv_run(&loop, UV_RUN_NOWAIT);
  for (int i = 0; i < n; i++)
    if (peer[i] >= 0)
      drain(peer[i]);
}

static size_t live_receivers(void) {
  hark_signal *sigs[] = {srv.sig_message, srv.sig_join,    srv.sig_part,
                         srv.sig_quit,    srv.sig_peers,   srv.sig_topic,
                         srv.sig_mode,    srv.sig_kick,    srv.sig_private,
                         srv.sig_user,    srv.sig_invite,  srv.sig_claim,
                         srv.sig_settle};
  size_t n = 0;
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    hark_signal_sweep(sigs[i]);
    n += hark_signal_receivers(sigs[i]);
  }
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  uint8_t conf = data[0];
  int nsess = (conf & 3) + 1;
  srv.opt = base;
  if (conf & 4) {
    srv.opt.flood_rate = 2;
    srv.opt.flood_burst = 5;
  }
  if (conf & 8)
    srv.opt.password = "pw";
  if (conf & 16) {
    srv.opt.sendq_hard = 4096;
    srv.opt.sendq_soft = 1024;
  }
  if (conf & 32) {
    srv.opt.max_channels = 3;
    srv.opt.max_chans_per_client = 2;
    srv.opt.nicklen = 9;
    srv.opt.channellen = 10;
  }

  /* the server's own receivers (user events, MONITOR) stay; sessions'
   * must all go */
  size_t receivers_at_start = live_receivers();
  hark_weak sess[NSESS_MAX] = {0};
  int peer[NSESS_MAX];
  for (int i = 0; i < nsess; i++) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    char host[16];
    snprintf(host, sizeof host, "10.0.0.%d", i + 1);
    chat_session *s = fuzz_session_open(&srv, sv[0], host);
    CHECK(s != NULL);
    CHECK(hark_weak_set(&sess[i], s) == 0);
    peer[i] = sv[1];
  }

  size_t off = 1;
  while (off < size) {
    const uint8_t *sep = memchr(data + off, SEP, size - off);
    size_t end = sep ? (size_t)(sep - data) : size;
    if (end > off) {
      int who = data[off] % nsess;
      const char *p = (const char *)data + off + 1;
      size_t left = end - off - 1;
      chat_session *s = hark_weak_get(&sess[who]);
      /* a socket read returns at most the room left; then the loop turns */
      while (s != NULL && left > 0 && !s->closed) {
        size_t took = session_feed(s, p, left);
        if (took == 0)
          break; /* full and throttled: a socket would stop being read */
        p += took;
        left -= took;
        turn(peer, nsess);
      }
      hark_unref(s);
    }
    turn(peer, nsess);
    off = end + 1;
  }

  /* every client goes away */
  for (int i = 0; i < nsess; i++) {
    chat_session *s = hark_weak_get(&sess[i]);
    if (s != NULL)
      server_schedule_close(&srv, s, "Connection closed");
    hark_unref(s);
  }
  for (int spins = 0; srv.sessions != NULL; spins++) {
    CHECK(spins < 1000);
    turn(peer, nsess);
  }
  for (int i = 0; i < nsess; i++) {
    CHECK(hark_weak_get(&sess[i]) == NULL);
    hark_weak_clear(&sess[i]);
    close(peer[i]);
  }
  CHECK(srv.nclients == 0 && srv.dirty == NULL && srv.closing == NULL);
  CHECK(names_count(&srv.nicks) == 0);
  CHECK(names_count(&srv.chans) == 0);
  CHECK(hark_live_count("chat_session") == 0);
  CHECK(hark_live_count("chat_channel") == 0);
  CHECK(live_receivers() == receivers_at_start);
  CHECK(hark_live_count(NULL) == live_at_start);
  return 0;
}
