/* The server: the listener, the registries of nicks and channels, the
 * daemon's signals, timeouts, the write-out before the loop sleeps, and
 * shutdown. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "chatd.h"
#include "federation.h" /* the one core file that knows it: it wires it */

void chat_options_default(chat_options *o) {
  memset(o, 0, sizeof *o);
  snprintf(o->host, sizeof o->host, "127.0.0.1");
  o->port = 6667;
  snprintf(o->name, sizeof o->name, "irc.hark.local");
  o->max_clients = 10000;
  o->max_channels = 10000;
  o->max_chans_per_client = 50;
  o->nicklen = 30;
  o->channellen = 50;
  o->register_timeout = 30;
  o->ping_interval = 120;
  o->ping_timeout = 60;
  o->sendq_hard = 1024 * 1024;
  o->sendq_soft = 256 * 1024;
  o->sendq_soft_seconds = 10;
  o->flood_rate = 20;
  o->flood_burst = 100;
  o->log_level = LOG_INFO;
  o->lease_ms = 10000;
  snprintf(o->redis_prefix, sizeof o->redis_prefix, "hark");
  o->redis_retention = 100000;
  o->redis_timeout_ms = 3000;
}

void server_mark_dirty(chat_server *srv, chat_session *s) {
  if (s->dirty || s->closed)
    return;
  s->dirty = true;
  hark_ref(s);
  s->dirty_next = srv->dirty;
  srv->dirty = s;
}

void server_schedule_close(chat_server *srv, chat_session *s,
                           const char *reason) {
  if (s->closing || s->closed)
    return;
  s->closing = true;
  snprintf(s->quit_reason, sizeof s->quit_reason, "%s", reason);
  hark_ref(s);
  s->close_next = srv->closing;
  srv->closing = s;
}

/* Closing is never done in the middle of a fan-out (a receiver may find its
 * session over its output limit): it waits for this point, where nothing
 * is being iterated. A QUIT may push others over theirs, hence the loop. */
static void run_closings(chat_server *srv) {
  while (srv->closing != NULL) {
    chat_session *s = srv->closing;
    srv->closing = s->close_next;
    log_info("closing %s@%s: %s", s->u.nick[0] ? s->u.nick : "*", s->u.host,
             s->quit_reason);
    command_quit_broadcast(s, s->quit_reason);
    session_close_handles(s);
    hark_unref(s);
  }
}

static void run_writes(chat_server *srv) {
  while (srv->dirty != NULL) {
    chat_session *list = srv->dirty;
    srv->dirty = NULL;
    while (list != NULL) {
      chat_session *s = list;
      list = s->dirty_next;
      s->dirty = false;
      session_flush(s);
      hark_unref(s);
    }
    run_closings(srv);
  }
}

static void on_prepare(uv_prepare_t *p) {
  chat_server *srv = p->data;
  run_closings(srv);
  run_writes(srv);
}

static void on_tick(uv_timer_t *t) {
  chat_server *srv = t->data;
  const chat_options *o = &srv->opt;
  uint64_t now = chat_now_ms(srv);
  for (chat_session *s = srv->sessions; s != NULL; s = s->next) {
    if (s->closing || s->closed)
      continue;
    session_hold_check(s, now);
    if (!s->u.registered && o->register_timeout &&
        now - s->connected_at > o->register_timeout * 1000ull) {
      session_sendf(s, "ERROR :Closing Link: %s (Registration timeout)",
                    s->u.host);
      server_schedule_close(srv, s, "Registration timeout");
    } else if (s->ping_at != 0 && o->ping_timeout &&
               now - s->ping_at > o->ping_timeout * 1000ull) {
      session_sendf(s, "ERROR :Closing Link: %s (Ping timeout)", s->u.host);
      server_schedule_close(srv, s, "Ping timeout");
    } else if (s->u.registered && s->ping_at == 0 && o->ping_interval &&
               now - s->active_at > o->ping_interval * 1000ull) {
      s->ping_at = now;
      session_sendf(s, "PING :%s", o->name);
    } else if (s->soft_since != 0 && o->sendq_soft_seconds &&
               now - s->soft_since > o->sendq_soft_seconds * 1000ull) {
      srv->sendq_kills++;
      server_schedule_close(srv, s, "SendQ exceeded (soft limit)");
    }
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  chat_server *srv = listener->data;
  if (status < 0) {
    log_warn("listen: %s", uv_strerror(status));
    return;
  }
  session_accept(srv);
}

void server_stats_line(chat_server *srv, char *buf, size_t cap) {
  size_t receivers = 0;
  hark_signal *sigs[] = {srv->sig_message, srv->sig_join,  srv->sig_part,
                         srv->sig_quit,    srv->sig_nick,  srv->sig_topic,
                         srv->sig_mode,    srv->sig_kick,  srv->sig_private,
                         srv->sig_user,    srv->sig_claim, srv->sig_settle};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    receivers += hark_signal_receivers(sigs[i]);
  snprintf(buf, cap,
           "clients %u channels %zu receivers %zu live-objects %zu "
           "sessions %zu channel-objects %zu lines-in %llu bytes-out %llu "
           "sendq-kills %llu oom-drops %llu flood-waits %llu",
           srv->nclients, names_count(&srv->chans), receivers,
           hark_live_count(NULL), hark_live_count("chat_session"),
           hark_live_count("chat_channel"), srv->lines_in, srv->bytes_out,
           srv->sendq_kills, srv->oom_drops, srv->flood_waits);
  size_t used = strlen(buf);
  if (used < cap)
    fed_stats(srv, buf + used, cap - used);
}

static void on_signal(uv_signal_t *h, int signum) {
  chat_server *srv = h->data;
  if (signum == SIGUSR1) {
    char line[768];
    server_stats_line(srv, line, sizeof line);
    log_info("stats: %s", line);
    return;
  }
  log_info("%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
  server_stop(srv, "Server shutting down");
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  char *buf = chat_malloc(65536);
  size_t n = buf ? fread(buf, 1, 65535, f) : 0;
  fclose(f);
  if (buf != NULL)
    buf[n] = '\0';
  return buf;
}

/* This daemon's name in the network (--node-id, or host-pid), and where
 * its users' numbers start: the clock, so that a restarted node never
 * hands out an id its previous run used. */
static void node_name(chat_server *srv) {
  if (srv->opt.node_id[0] != '\0') {
    snprintf(srv->node, sizeof srv->node, "%s", srv->opt.node_id);
  } else {
    char h[48] = "node";
    gethostname(h, sizeof h);
    h[sizeof h - 1] = '\0';
    snprintf(srv->node, sizeof srv->node, "%s-%d", h, (int)getpid());
  }
  for (char *p = srv->node; *p; p++) /* one plain token everywhere */
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_'))
      *p = '_';
  struct timeval tv;
  gettimeofday(&tv, NULL);
  srv->next_id = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

static hark_signal *make_signal(const char *name, const chat_options *o) {
  hark_signal *sig = hark_signal_new(name);
  /* A channel may have every client as member: warn only beyond that. */
  if (sig != NULL)
    hark_signal_set_max_receivers(sig, o->max_clients ? o->max_clients + 1 : 0);
  return sig;
}

int server_start(chat_server *srv, uv_loop_t *loop, const chat_options *opt) {
  memset(srv, 0, sizeof *srv);
  srv->loop = loop;
  srv->opt = *opt;
  srv->started = time(NULL);
  if (opt->nicklen > CHATD_NICK_MAX)
    srv->opt.nicklen = CHATD_NICK_MAX;
  if (opt->channellen > CHATD_CHAN_MAX)
    srv->opt.channellen = CHATD_CHAN_MAX;
  if (opt->motd_path != NULL) {
    srv->motd = read_file(opt->motd_path);
    if (srv->motd == NULL)
      log_warn("motd %s: cannot read it, sending 422", opt->motd_path);
  }
  node_name(srv);
  srv->hl = hark_loop_new(loop);
  hark_signal **sigs[] = {&srv->sig_message, &srv->sig_join,  &srv->sig_part,
                          &srv->sig_quit,    &srv->sig_nick,  &srv->sig_topic,
                          &srv->sig_mode,    &srv->sig_kick,  &srv->sig_private,
                          &srv->sig_user,    &srv->sig_claim, &srv->sig_settle};
  static const char *const sig_names[] = {
      "message", "join", "part",    "quit", "nick",  "topic",
      "mode",    "kick", "private", "user", "claim", "settle"};
  bool ok = srv->hl != NULL;
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    ok = (*sigs[i] = make_signal(sig_names[i], opt)) != NULL && ok;
  if (!ok || names_init(&srv->nicks) != 0 || names_init(&srv->chans) != 0) {
    log_error("out of memory");
    return UV_ENOMEM;
  }
  uv_tcp_init(loop, &srv->listener);
  uv_signal_init(loop, &srv->sigint);
  uv_signal_init(loop, &srv->sigterm);
  uv_signal_init(loop, &srv->sigusr1);
  uv_timer_init(loop, &srv->tick);
  uv_prepare_init(loop, &srv->prepare);
  srv->listener.data = srv->sigint.data = srv->sigterm.data = srv;
  srv->sigusr1.data = srv->tick.data = srv->prepare.data = srv;

  struct sockaddr_storage ss;
  int r = uv_ip4_addr(opt->host, opt->port, (struct sockaddr_in *)&ss);
  if (r != 0)
    r = uv_ip6_addr(opt->host, opt->port, (struct sockaddr_in6 *)&ss);
  if (r == 0)
    r = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
  if (r != 0) {
    log_error("listen on %s:%d: %s", opt->host, opt->port, uv_strerror(r));
    server_stop(srv, NULL);
    return r;
  }
  int len = sizeof ss;
  uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
  srv->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  uv_signal_start(&srv->sigint, on_signal, SIGINT);
  uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
  uv_signal_start(&srv->sigusr1, on_signal, SIGUSR1);
  uv_timer_start(&srv->tick, on_tick, 1000, 1000);
  uv_prepare_start(&srv->prepare, on_prepare);
  if (fed_start(srv) != 0) {
    log_error("federation: cannot start");
    server_stop(srv, NULL);
    return UV_ENOMEM;
  }
  return 0;
}

static void close_if_open(uv_handle_t *h) {
  if (h->loop != NULL && !uv_is_closing(h))
    uv_close(h, NULL);
}

void server_stop(chat_server *srv, const char *why) {
  if (srv->stopping)
    return;
  srv->stopping = true;
  for (chat_session *s = srv->sessions; s != NULL; s = s->next) {
    if (why != NULL && !s->closed)
      session_sendf(s, "ERROR :Closing Link: %s (%s)", s->u.host, why);
    if (!s->closing)
      server_schedule_close(srv, s, why ? why : "Server shutting down");
  }
  run_closings(srv);
  fed_stop(srv);               /* after the QUITs went out */
  while (srv->dirty != NULL) { /* their closing writes were best effort */
    chat_session *s = srv->dirty;
    srv->dirty = s->dirty_next;
    s->dirty = false;
    hark_unref(s);
  }
  close_if_open((uv_handle_t *)&srv->listener);
  close_if_open((uv_handle_t *)&srv->sigint);
  close_if_open((uv_handle_t *)&srv->sigterm);
  close_if_open((uv_handle_t *)&srv->sigusr1);
  close_if_open((uv_handle_t *)&srv->tick);
  close_if_open((uv_handle_t *)&srv->prepare);
  if (srv->hl != NULL)
    hark_loop_close(srv->hl);
}

void server_free(chat_server *srv) {
  fed_free(srv);
  hark_signal **sigs[] = {&srv->sig_message, &srv->sig_join,  &srv->sig_part,
                          &srv->sig_quit,    &srv->sig_nick,  &srv->sig_topic,
                          &srv->sig_mode,    &srv->sig_kick,  &srv->sig_private,
                          &srv->sig_user,    &srv->sig_claim, &srv->sig_settle};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    hark_unref(*sigs[i]);
    *sigs[i] = NULL;
  }
  hark_unref(srv->hl);
  srv->hl = NULL;
  names_free(&srv->nicks);
  names_free(&srv->chans);
  chat_free(srv->motd);
  srv->motd = NULL;
}
