/* The fuzzer's seam into hark-chatd: see fuzz_seam.h. Mirrors
 * session_accept, without the listener. */
#include <stdio.h>

#include "fuzz_seam.h"

chat_session *fuzz_session_open(chat_server *srv, uv_os_sock_t fd,
                                const char *host) {
  chat_session *s = hark_new(&chat_session_type);
  if (s == NULL || session_init(s, srv) != 0) {
    hark_unref(s);
    return NULL;
  }
  uv_tcp_init(srv->loop, &s->tcp);
  uv_timer_init(srv->loop, &s->throttle);
  s->tcp.data = s->throttle.data = s;
  s->handles_open = 2;
  s->next = srv->sessions;
  if (s->next != NULL)
    s->next->prev = s;
  srv->sessions = s;
  srv->nclients++;
  snprintf(s->u.host, sizeof s->u.host, "%s", host);
  if (uv_tcp_open(&s->tcp, fd) != 0) {
    session_close_handles(s);
    return NULL;
  }
  uint64_t now = chat_now_ms(srv);
  s->connected_at = s->active_at = s->refill_at = now;
  s->tokens = srv->opt.flood_burst;
  s->pass_ok = srv->opt.password == NULL;
  return s;
}
