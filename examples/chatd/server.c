/* The server: the listeners (plain and TLS) and what they admit, the
 * registries of nicks and channels, the daemon's signals, timeouts, the
 * write-out before the loop sleeps, and shutdown. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "chatd.h"
#include "federation.h" /* the one core file that knows it: it wires it */
#include "tls.h"

/* the files that own what the server holds */
void whowas_free(chat_server *srv);
int accounts_load(chat_server *srv, const char *path);
void accounts_free(chat_server *srv);
int monitor_start(chat_server *srv);
void monitors_free(chat_server *srv);

void chat_options_default(chat_options *o) {
  memset(o, 0, sizeof *o);
  snprintf(o->host, sizeof o->host, "127.0.0.1");
  o->port = 6667;
  o->tls_port = -1;
  snprintf(o->name, sizeof o->name, "irc.hark.local");
  o->max_clients = 10000;
  o->max_channels = 10000;
  o->max_chans_per_client = 50;
  o->max_per_ip = 3;
  o->max_per_ip_global = 10;
  snprintf(o->per_ip_exempt, sizeof o->per_ip_exempt, "127.0.0.1,::1");
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
  o->whowas_max = 500;
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
    if (s->tls != NULL && s->qcount > 0) /* TLS waits for its writes */
      server_mark_dirty(srv, s);
    if (!s->u.registered && o->register_timeout &&
        now - s->connected_at > o->register_timeout * 1000ull) {
      session_error_close(s, "Registration timeout");
    } else if (s->ping_at != 0 && o->ping_timeout &&
               now - s->ping_at > o->ping_timeout * 1000ull) {
      session_error_close(s, "Ping timeout");
    } else if (s->u.registered && s->ping_at == 0 && o->ping_interval &&
               now - s->active_at > o->ping_interval * 1000ull) {
      s->ping_at = now;
      session_sendf(s, "PING :%s", o->name);
    } else if (s->soft_since != 0 && o->sendq_soft_seconds &&
               now - s->soft_since > o->sendq_soft_seconds * 1000ull) {
      srv->sendq_kills++;
      s->over_hard = true; /* no more output: it is going */
      server_schedule_close(srv, s, "SendQ exceeded (soft limit)");
    }
  }
}

/* ---- connections per address ------------------------------------------- */

/* Each address with connections here (local) or users on other nodes
 * (remote, kept by a receiver of sig_user). */
typedef struct ipcount {
  struct ipcount *next;
  unsigned local, remote;
  char ip[64];
} ipcount;

struct chat_ipcount {
  ipcount *slots[1024];
};

static ipcount **ip_find(chat_server *srv, const char *ip) {
  size_t h = 5381;
  for (const char *p = ip; *p; p++)
    h = h * 33 + (unsigned char)*p;
  ipcount **pp = &srv->ips->slots[h % 1024];
  while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
    pp = &(*pp)->next;
  return pp;
}

/* delta to one of the counts of ip; the entry goes at zero. */
static bool ip_add(chat_server *srv, const char *ip, int local, int remote) {
  if (srv->ips == NULL)
    return false;
  ipcount **pp = ip_find(srv, ip), *e = *pp;
  if (e == NULL) {
    if (local < 0 || remote < 0 || (e = chat_calloc(1, sizeof *e)) == NULL)
      return false;
    snprintf(e->ip, sizeof e->ip, "%s", ip);
    *pp = e;
  }
  e->local = (unsigned)((int)e->local + local);
  e->remote = (unsigned)((int)e->remote + remote);
  if (e->local == 0 && e->remote == 0) {
    *pp = e->next;
    chat_free(e);
  }
  return true;
}

void server_forget_address(chat_server *srv, chat_session *s) {
  if (s->counted)
    ip_add(srv, s->u.host, -1, 0);
  s->counted = false;
}

static bool exempt(chat_server *srv, const char *ip) {
  const char *p = srv->opt.per_ip_exempt;
  size_t n = strlen(ip);
  if (strncmp(ip, "::ffff:", 7) == 0) { /* a v4 address on a v6 socket */
    ip += 7;
    n -= 7;
  }
  while (*p) {
    size_t len = strcspn(p, ",");
    if (len == n && strncmp(p, ip, n) == 0)
      return true;
    p += len + (p[len] == ',');
  }
  return false;
}

/* The nodes with users, for LUSERS: delta users of node. */
static void node_count(chat_server *srv, const char *node, int delta) {
  unsigned i = 0;
  while (i < srv->nnodes && strcmp(srv->nodes[i].name, node) != 0 &&
         i + 1 < sizeof srv->nodes / sizeof srv->nodes[0])
    i++;
  if (i == srv->nnodes) {
    if (delta < 0)
      return;
    snprintf(srv->nodes[i].name, sizeof srv->nodes[i].name, "%s", node);
    srv->nodes[i].users = 0;
    srv->nnodes++;
  }
  srv->nodes[i].users = (unsigned)((int)srv->nodes[i].users + delta);
  if (srv->nodes[i].users == 0)
    srv->nodes[i] = srv->nodes[--srv->nnodes];
}

/* The counts LUSERS shows, kept as users come, change and go (a census
 * per registration would cost every client the whole network), and users
 * of other nodes against their address's global limit. */
static int on_user_event(void *self, void *sender, void *args) {
  chat_event *ev = args;
  chat_user *u = ev->origin;
  if (u == NULL)
    return 0;
  chat_server *srv = u->srv;
  int d = ev->kind == USER_REGISTERED              ? 1
          : ev->kind == USER_QUIT && u->registered ? -1
                                                   : 0;
  if (d != 0) {
    srv->nusers += (unsigned)d;
    if (u->remote) {
      ip_add(srv, u->host, 0, d);
      node_count(srv, u->node, d);
    } else {
      srv->nlocal += (unsigned)d;
    }
    if (d < 0) {
      srv->ninvisible -= (u->modes & UMODE_I) != 0;
      srv->nopers -= (u->modes & UMODE_O) != 0;
    }
    if (srv->nlocal > srv->max_local)
      srv->max_local = srv->nlocal;
    if (srv->nusers > srv->max_global)
      srv->max_global = srv->nusers;
  } else if (ev->kind == USER_MODE && ev->text != NULL && u->registered) {
    int dir = 1;
    for (const char *p = ev->text; *p; p++) {
      if (*p == '+' || *p == '-')
        dir = *p == '+' ? 1 : -1;
      else if (*p == 'i')
        srv->ninvisible += (unsigned)dir;
      else if (*p == 'o')
        srv->nopers += (unsigned)dir;
    }
  }
  return 0;
}

/* Why a connection from ip is refused, or NULL (then it is counted). */
static const char *admit(chat_server *srv, const char *ip) {
  const chat_options *o = &srv->opt;
  if (srv->stopping)
    return "Server shutting down";
  if (o->max_clients && srv->nclients >= o->max_clients)
    return "Server is full";
  if (exempt(srv, ip) || srv->ips == NULL)
    return NULL;
  ipcount *e = *ip_find(srv, ip);
  if (e != NULL && o->max_per_ip && e->local >= o->max_per_ip)
    return "Too many connections from your IP";
  if (e != NULL && o->max_per_ip_global &&
      e->local + e->remote >= o->max_per_ip_global)
    return "Too many connections from your IP (network)";
  return NULL;
}

/* ---- listeners ----------------------------------------------------------- */

struct chat_listener {
  chat_server *srv;
  uv_poll_t poll;
  uv_timer_t pause;
  int fd;
  chat_tls_ctx *tls; /* NULL: plaintext */
  int handles;
};

static void refuse_fd(int fd, const char *ip, const char *why) {
  char line[256];
  int n =
      snprintf(line, sizeof line, "ERROR :Closing Link: %s (%s)\r\n", ip, why);
  if (write(fd, line, (size_t)n) < 0) {
    /* the peer went already; nothing to tell */
  }
  close(fd);
}

static void ip_of(const struct sockaddr_storage *ss, char *buf, size_t cap) {
  snprintf(buf, cap, "unknown");
  if (ss->ss_family == AF_INET6)
    uv_ip6_name((const struct sockaddr_in6 *)ss, buf, cap);
  else if (ss->ss_family == AF_INET)
    uv_ip4_name((const struct sockaddr_in *)ss, buf, cap);
}

static void on_readable(uv_poll_t *p, int status, int events);

static void on_pause_over(uv_timer_t *t) {
  chat_listener *l = t->data;
  if (!l->srv->stopping)
    uv_poll_start(&l->poll, UV_READABLE, on_readable);
}

/* Out of descriptors: the connection waiting is accepted on the reserve
 * one, told, and closed; if even that fails, accepting pauses 100 ms
 * (never a silent drop, never a busy loop). */
static bool out_of_fds(chat_listener *l) {
  chat_server *srv = l->srv;
  srv->refused++;
  if (srv->refused % 1000 == 1)
    log_error("accept: out of file descriptors (%u clients): refusing "
              "connections",
              srv->nclients);
  if (srv->reserve_fd >= 0) {
    close(srv->reserve_fd);
    srv->reserve_fd = -1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    if (fd >= 0) {
      char ip[64];
      ip_of(&ss, ip, sizeof ip);
      refuse_fd(fd, ip, "Server is full (out of file descriptors)");
    }
    srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
      return true;
  }
  uv_poll_stop(&l->poll);
  uv_timer_start(&l->pause, on_pause_over, 100, 0);
  return false;
}

static void on_readable(uv_poll_t *p, int status, int events) {
  chat_listener *l = p->data;
  chat_server *srv = l->srv;
  /* a bounded batch per wakeup: the loop serves the others meanwhile */
  for (int i = 0; i < 64 && !srv->stopping; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if ((errno == EMFILE || errno == ENFILE) && out_of_fds(l))
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EMFILE &&
          errno != ENFILE)
        log_warn("accept: %s", strerror(errno));
      return;
    }
    char ip[64];
    ip_of(&ss, ip, sizeof ip);
    const char *why = admit(srv, ip);
    if (why != NULL) {
      srv->refused++;
      log_debug("connection from %s refused: %s", ip, why);
      if (l->tls != NULL)
        session_accept_fd(srv, fd, l->tls, why);
      else
        refuse_fd(fd, ip, why);
      continue;
    }
    bool counted = !exempt(srv, ip) && ip_add(srv, ip, 1, 0);
    chat_session *s = session_accept_fd(srv, fd, l->tls, NULL);
    if (s != NULL)
      s->counted = counted;
    else if (counted)
      ip_add(srv, ip, -1, 0);
  }
}

static void on_listener_closed(uv_handle_t *h) {
  chat_listener *l = h->data;
  if (--l->handles == 0) {
    close(l->fd);
    tls_ctx_free(l->tls);
    chat_free(l);
  }
}

static void listener_close(chat_listener *l) {
  if (l == NULL || uv_is_closing((uv_handle_t *)&l->poll))
    return;
  uv_close((uv_handle_t *)&l->poll, on_listener_closed);
  uv_close((uv_handle_t *)&l->pause, on_listener_closed);
}

/* Listens on host:port; *bound gets the port. NULL (logged) on failure. */
static chat_listener *listen_on(chat_server *srv, const char *host, int port,
                                chat_tls_ctx *tls, int *bound) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  int r = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
  if (r != 0)
    r = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
  int fd = r == 0 ? socket(ss.ss_family,
                           SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
                  : -1;
  int one = 1;
  if (fd >= 0)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                          : sizeof(struct sockaddr_in);
  if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0 ||
      listen(fd, 511) != 0) {
    log_error("listen on %s:%d: %s", host, port,
              r != 0 ? "bad address" : strerror(errno));
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  *bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  chat_listener *l = chat_calloc(1, sizeof *l);
  if (l == NULL) {
    close(fd);
    return NULL;
  }
  l->srv = srv;
  l->fd = fd;
  l->tls = tls;
  uv_poll_init_socket(srv->loop, &l->poll, fd);
  uv_timer_init(srv->loop, &l->pause);
  l->poll.data = l->pause.data = l;
  l->handles = 2;
  uv_poll_start(&l->poll, UV_READABLE, on_readable);
  return l;
}

/* max_clients connections need as many descriptors and some: raise the
 * soft limit if the hard one allows, else serve fewer clients. */
static void check_fd_limit(chat_options *o) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || o->max_clients == 0)
    return;
  rlim_t need = (rlim_t)o->max_clients + 64;
  if (rl.rlim_cur >= need)
    return;
  rlim_t want =
      rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
  rlim_t was = rl.rlim_cur;
  rl.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
    rl.rlim_cur = was;
  if (rl.rlim_cur >= need) {
    log_info("file descriptors: soft limit raised from %llu to %llu",
             (unsigned long long)was, (unsigned long long)rl.rlim_cur);
    return;
  }
  unsigned fit = rl.rlim_cur > 128 ? (unsigned)(rl.rlim_cur - 64)
                                   : (unsigned)(rl.rlim_cur / 2);
  log_warn("file descriptors: the limit is %llu (hard %llu): --max-clients "
           "lowered from %u to %u",
           (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
           o->max_clients, fit);
  o->max_clients = fit;
}

/* ---- stats, signals ------------------------------------------------------ */

void server_stats_line(chat_server *srv, char *buf, size_t cap) {
  size_t receivers = 0;
  hark_signal *sigs[] = {srv->sig_message, srv->sig_join,   srv->sig_part,
                         srv->sig_quit,    srv->sig_peers,  srv->sig_topic,
                         srv->sig_mode,    srv->sig_kick,   srv->sig_private,
                         srv->sig_user,    srv->sig_invite, srv->sig_claim,
                         srv->sig_settle};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    receivers += hark_signal_receivers(sigs[i]);
  snprintf(buf, cap,
           "clients %u channels %zu receivers %zu live-objects %zu "
           "sessions %zu channel-objects %zu lines-in %llu bytes-out %llu "
           "sendq-kills %llu oom-drops %llu flood-waits %llu refused %llu",
           srv->nclients, names_count(&srv->chans), receivers,
           hark_live_count(NULL), hark_live_count("chat_session"),
           hark_live_count("chat_channel"), srv->lines_in, srv->bytes_out,
           srv->sendq_kills, srv->oom_drops, srv->flood_waits, srv->refused);
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
  /* msgids: this node and this run, then a counter */
  uint64_t h = 1469598103934665603ull ^ srv->next_id;
  for (const char *p = srv->node; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ull;
  snprintf(srv->msgid_prefix, sizeof srv->msgid_prefix, "%08llx",
           (unsigned long long)(h & 0xffffffffull));
}

static hark_signal *make_signal(const char *name, const chat_options *o) {
  hark_signal *sig = hark_signal_new(name);
  /* A channel may have every client as member: warn only beyond that. */
  if (sig != NULL)
    hark_signal_set_max_receivers(sig, o->max_clients ? o->max_clients + 1 : 0);
  return sig;
}

static void free_handle(uv_handle_t *h) { chat_free(h); }

#define SIGNALS(srv)                                                           \
  {                                                                            \
    &(srv)->sig_message, &(srv)->sig_join, &(srv)->sig_part, &(srv)->sig_quit, \
        &(srv)->sig_peers, &(srv)->sig_topic, &(srv)->sig_mode,                \
        &(srv)->sig_kick, &(srv)->sig_private, &(srv)->sig_user,               \
        &(srv)->sig_invite, &(srv)->sig_claim, &(srv)->sig_settle              \
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
  check_fd_limit(&srv->opt);
  /* A descriptor kept for the moment they run out: closed to accept one
   * more connection, which is told why and closed, then opened again. */
  srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  /* libuv keeps one of its own, per loop, made with the first stream: made
   * now, so that every descriptor the server keeps is there from the
   * start, before any client counts. */
  uv_tcp_t *first = chat_malloc(sizeof *first);
  if (first != NULL) {
    uv_tcp_init(loop, first);
    uv_close((uv_handle_t *)first, free_handle);
  }
  if (opt->motd_path != NULL) {
    srv->motd = read_file(opt->motd_path);
    if (srv->motd == NULL)
      log_warn("motd %s: cannot read it, sending 422", opt->motd_path);
  }
  node_name(srv);
  srv->hl = hark_loop_new(loop);
  hark_signal **sigs[] = SIGNALS(srv);
  static const char *const sig_names[] = {
      "message", "join",    "part", "quit",   "peers", "topic", "mode",
      "kick",    "private", "user", "invite", "claim", "settle"};
  bool ok = srv->hl != NULL;
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    ok = (*sigs[i] = make_signal(sig_names[i], opt)) != NULL && ok;
  if (!ok || names_init(&srv->nicks) != 0 || names_init(&srv->chans) != 0 ||
      (srv->ips = chat_calloc(1, sizeof *srv->ips)) == NULL ||
      monitor_start(srv) < 0 ||
      hark_connect(srv->sig_user, on_user_event, NULL, NULL, 0) < 0) {
    log_error("out of memory");
    server_stop(srv, NULL); /* what was made must close, or uv_run waits */
    return UV_ENOMEM;
  }
  if (opt->accounts_path != NULL &&
      accounts_load(srv, opt->accounts_path) != 0) {
    server_stop(srv, NULL);
    return UV_EINVAL;
  }
  chat_tls_ctx *tls = NULL;
  if (opt->tls_port >= 0) {
    char err[400];
    tls = tls_ctx_server(opt->tls_cert, opt->tls_key, NULL, err, sizeof err);
    if (tls == NULL) {
      log_error("--listen-tls: %s", err);
      server_stop(srv, NULL);
      return UV_EINVAL;
    }
  }
  uv_signal_init(loop, &srv->sigint);
  uv_signal_init(loop, &srv->sigterm);
  uv_signal_init(loop, &srv->sigusr1);
  uv_timer_init(loop, &srv->tick);
  uv_prepare_init(loop, &srv->prepare);
  srv->sigint.data = srv->sigterm.data = srv;
  srv->sigusr1.data = srv->tick.data = srv->prepare.data = srv;
  srv->plain = listen_on(srv, opt->host, opt->port, NULL, &srv->port);
  if (srv->plain != NULL && tls != NULL &&
      (srv->tls = listen_on(srv, opt->tls_host, opt->tls_port, tls,
                            &srv->tls_port)) == NULL)
    tls_ctx_free(tls);
  else if (srv->plain == NULL)
    tls_ctx_free(tls);
  if (srv->plain == NULL || (tls != NULL && srv->tls == NULL)) {
    server_stop(srv, NULL);
    return UV_EADDRINUSE;
  }
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
  listener_close(srv->plain);
  listener_close(srv->tls);
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
  hark_signal **sigs[] = SIGNALS(srv);
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    hark_unref(*sigs[i]);
    *sigs[i] = NULL;
  }
  hark_unref(srv->hl);
  srv->hl = NULL;
  names_free(&srv->nicks);
  names_free(&srv->chans);
  whowas_free(srv);
  accounts_free(srv);
  monitors_free(srv);
  if (srv->ips != NULL)
    for (size_t i = 0; i < 1024; i++)
      while (srv->ips->slots[i] != NULL) {
        ipcount *e = srv->ips->slots[i];
        srv->ips->slots[i] = e->next;
        chat_free(e);
      }
  chat_free(srv->ips);
  srv->ips = NULL;
  chat_free(srv->motd);
  srv->motd = NULL;
  if (srv->reserve_fd >= 0)
    close(srv->reserve_fd);
  srv->reserve_fd = -1;
}
