/* hark-chatload: a fan-out load generator for IRC servers (any of them)
 * and for Redis pub/sub. N clients on one libuv loop join M channels; S
 * of them send K messages each, flat out or at a total rate; every
 * delivery's latency is measured from the send time carried in the text.
 * Reports delivered messages per second and latency p50/p99/max.
 * --ports spreads the clients over several servers of one network (e.g.
 * federated hark-chatd nodes) from the same process and loop, so the
 * totals and latencies are the whole network's. */
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BATCH 64
#define HIST_US 1000000 /* 1 µs buckets up to 1 s */
#define HIST_MS 600000  /* then 1 ms buckets up to 10 min, then overflow */
#define MAX_PORTS 64

typedef struct conn conn;

typedef struct load {
  uv_loop_t *loop;
  const char *host, *password;
  int ports[MAX_PORTS]; /* --ports: the clients are spread over them */
  int nports;
  long long port_delivered[MAX_PORTS];
  long long crossed; /* deliveries on another port than their sender's */
  int port_clients[MAX_PORTS];
  int nclients, nchannels, nsenders, messages;
  double rate;
  bool redis;
  unsigned timeout;
  conn *conns;
  int connecting, next_to_connect, ready, closed;
  int unheard; /* connections the server has not spoken on yet */
  long long expected, delivered, sent, total;
  uint64_t t_begin, t_start,
      t_last; /* uv_hrtime: launch, first send, last delivery */
  uint32_t *hist, *hist_ms;
  /* the same for deliveries on another port than their sender's: the
   * latency across nodes of a federated network */
  uint32_t *xhist, *xhist_ms;
  uint64_t xmax_ns;
  long long overflow;
  int next_sender;      /* --rate: round robin over the senders */
  double load_start[3]; /* uv_loadavg when the sending starts */
  bool trace, penalty_noted;
  uint64_t max_ns;
  uv_timer_t progress, pace, probe;
  /* The tool's own loop lag: how late a 1 ms timer fires while sending.
   * A delivery cannot be timestamped sooner than the loop gets to it, so
   * this is the floor under the latencies measured (the tool's work plus
   * the machine's other jobs; libuv's millisecond timers alone make it up
   * to 1 ms). */
  uint64_t probe_last, lag_max;
  uint32_t lag_hist[100001]; /* 10 µs buckets up to 1 s, then the last */
  long long lag_n;
  bool sending, done;
  int pid;
} load;

struct conn {
  uv_tcp_t tcp;
  uv_connect_t creq;
  load *ld;
  int id, chan;
  int port_ix; /* index in ld->ports */
  bool sender, ready, subscriber, closing, heard, registered;
  int sent, inflight;
  char in[65536];
  size_t inlen;
};

typedef struct wreq {
  uv_write_t req;
  conn *c;
  int count;
  char data[];
} wreq;

static int members_of(load *ld, int chan) {
  return ld->nclients / ld->nchannels + (chan < ld->nclients % ld->nchannels);
}

static void on_write(uv_write_t *req, int status);

static void write_raw(conn *c, const char *data, size_t len, int count) {
  wreq *w = malloc(sizeof *w + len);
  memcpy(w->data, data, len);
  w->c = c;
  w->count = count;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  c->inflight++;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    c->inflight--;
    free(w);
  }
}

static size_t format_msg(load *ld, conn *c, char *out, size_t cap) {
  char chan[32], payload[128];
  snprintf(chan, sizeof chan, "#load%d", c->chan);
  int n = snprintf(payload, sizeof payload, "t=%llu s=%d from=%d",
                   (unsigned long long)uv_hrtime(), c->sent, c->id);
  c->sent++;
  ld->sent++;
  if (ld->redis)
    return (size_t)snprintf(out, cap,
                            "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%d\r\n%s"
                            "\r\n",
                            strlen(chan), chan, n, payload);
  return (size_t)snprintf(out, cap, "PRIVMSG %s :%s\r\n", chan, payload);
}

/* Flat out: a batch per sender, the next when the last is written. */
static void send_batch(conn *c) {
  load *ld = c->ld;
  char buf[BATCH * 200];
  size_t len = 0;
  int k = 0;
  while (k < BATCH && c->sent < ld->messages) {
    len += format_msg(ld, c, buf + len, sizeof buf - len);
    k++;
  }
  if (k > 0)
    write_raw(c, buf, len, k);
}

static void on_write(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  conn *c = w->c;
  c->inflight--;
  int count = w->count;
  free(w);
  if (status == 0 && count > 0 && c->ld->rate <= 0 && !c->closing)
    send_batch(c);
}

static void on_pace(uv_timer_t *t) {
  load *ld = t->data;
  double secs = (double)(uv_hrtime() - ld->t_start) / 1e9;
  long long due = (long long)(secs * ld->rate);
  if (due > ld->total)
    due = ld->total;
  /* One message per due slot, each from the next sender in turn (not all
   * of sender 0's first): the rate is the total over all senders. */
  int n = ld->nclients + (ld->redis ? ld->nsenders : 0);
  for (int idle = 0; ld->sent < due && idle < n; idle++) {
    conn *c = &ld->conns[ld->next_sender];
    ld->next_sender = (ld->next_sender + 1) % n;
    if (!c->sender || c->sent >= ld->messages || c->closing)
      continue;
    char buf[256];
    size_t len = format_msg(ld, c, buf, sizeof buf);
    write_raw(c, buf, len, 0);
    idle = -1;
  }
  if (ld->sent >= ld->total)
    uv_timer_stop(t);
}

static void on_probe(uv_timer_t *t) {
  load *ld = t->data;
  uint64_t now = uv_hrtime();
  uint64_t gap = now - ld->probe_last, lag = gap > 1000000 ? gap - 1000000 : 0;
  ld->probe_last = now;
  uint64_t b = lag / 10000;
  ld->lag_hist[b < 100000 ? b : 100000]++;
  ld->lag_n++;
  if (lag > ld->lag_max)
    ld->lag_max = lag;
}

static double lag_pct(load *ld, double p) {
  long long want = (long long)(p * (double)ld->lag_n), acc = 0;
  if (want >= ld->lag_n)
    want = ld->lag_n - 1;
  for (int i = 0; i <= 100000; i++) {
    acc += ld->lag_hist[i];
    if (acc > want)
      return i * 10.0;
  }
  return (double)ld->lag_max / 1000.0;
}

static void start_sending(load *ld) {
  ld->sending = true;
  uv_loadavg(ld->load_start);
  ld->t_start = ld->probe_last = uv_hrtime();
  uv_timer_start(&ld->probe, on_probe, 1, 1);
  fprintf(stderr, "\nchatload: all %d ready, sending\n", ld->ready);
  if (ld->rate > 0) {
    uv_timer_start(&ld->pace, on_pace, 0, 1);
    return;
  }
  int n = ld->nclients + (ld->redis ? ld->nsenders : 0);
  for (int i = 0; i < n; i++)
    if (ld->conns[i].sender)
      send_batch(&ld->conns[i]);
}

static void finish(load *ld);
static void connect_more(load *ld);
static void heard(conn *c);

static void count(load *ld, uint32_t *hist, uint32_t *hist_ms, uint64_t lat) {
  uint64_t us = lat / 1000;
  if (us < HIST_US)
    hist[us]++;
  else if (us / 1000 < HIST_MS)
    hist_ms[us / 1000]++;
  else
    ld->overflow++;
}

static void record(conn *c, const char *t) {
  load *ld = c->ld;
  unsigned long long ts = strtoull(t, NULL, 10);
  uint64_t now = uv_hrtime();
  uint64_t lat = now > ts ? now - ts : 0;
  count(ld, ld->hist, ld->hist_ms, lat);
  if (lat > ld->max_ns)
    ld->max_ns = lat;
  ld->delivered++;
  ld->port_delivered[c->port_ix]++;
  if (ld->nports > 1) {
    const char *f = strstr(t, " from=");
    int from = f != NULL ? atoi(f + 6) : -1;
    int n = ld->nclients + (ld->redis ? ld->nsenders : 0);
    if (from >= 0 && from < n && ld->conns[from].port_ix != c->port_ix) {
      ld->crossed++;
      count(ld, ld->xhist, ld->xhist_ms, lat);
      if (lat > ld->xmax_ns)
        ld->xmax_ns = lat;
    }
  }
  ld->t_last = now;
  if (ld->delivered >= ld->expected)
    finish(ld);
}

static void became_ready(conn *c) {
  load *ld = c->ld;
  if (c->ready)
    return;
  c->ready = true;
  ld->ready++;
  ld->connecting--;
  int want = ld->nclients + (ld->redis ? ld->nsenders : 0);
  if (ld->ready == want)
    start_sending(ld);
  else
    connect_more(ld);
}

static void handle_line(conn *c, char *line, size_t len) {
  load *ld = c->ld;
  line[len] = '\0';
  if (ld->trace)
    fprintf(stderr, "%d< %s\n", c->id, line);
  if (ld->redis) {
    if (strncmp(line, "t=", 2) == 0)
      record(c, line + 2);
    else if (strcmp(line, "subscribe") == 0)
      became_ready(c);
    else if (line[0] == '-')
      fprintf(stderr, "chatload: connection %d: %s\n", c->id, line);
    return;
  }
  const char *sp = strchr(line, ' ');
  if (strncmp(line, "PING", 4) == 0) {
    char pong[600];
    int n = snprintf(pong, sizeof pong, "PONG%s\r\n", line + 4);
    write_raw(c, pong, (size_t)n, 0);
    return;
  }
  if (sp == NULL)
    return;
  if (strncmp(sp, " PRIVMSG ", 9) == 0) {
    const char *t = strstr(sp, ":t=");
    if (t != NULL)
      record(c, t + 3);
  } else if (strncmp(sp, " 001 ", 5) == 0) {
    c->registered = true;
    char join[64];
    int n = snprintf(join, sizeof join, "JOIN #load%d\r\n", c->chan);
    write_raw(c, join, (size_t)n, 0);
  } else if (strncmp(sp, " 005 ", 5) == 0) {
    /* ngircd advertises its command penalties (1 s per command beyond a
     * few queued ones): they throttle a load test to a few lines/s per
     * client. ngircd >= 26: MaxPenaltyTime = 0 in [Limits] turns them
     * off. */
    if (!ld->penalty_noted && strstr(sp, " PENALTY") != NULL) {
      ld->penalty_noted = true;
      fprintf(stderr, "chatload: the server has command penalties "
                      "(ISUPPORT PENALTY; ngircd: MaxPenaltyTime = 0 in "
                      "[Limits] disables them): expect a throttled run\n");
    }
  } else if (strncmp(sp, " 366 ", 5) == 0) {
    became_ready(c);
  } else if (strncmp(sp, " 4", 2) == 0 && strncmp(sp, " 422 ", 5) != 0 &&
             (c->registered || strncmp(sp, " 451 ", 5) != 0)) {
    /* an error numeric (not 422, no MOTD, nor 451 for our early PING) */
    fprintf(stderr, "chatload: client %d: %s\n", c->id, line);
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  conn *c = h->data;
  buf->base = c->in + c->inlen;
  buf->len = sizeof c->in - c->inlen - 1;
}

static void on_closed(uv_handle_t *h) {
  conn *c = h->data;
  c->ld->closed++;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  if (nread < 0) {
    if (!c->closing && !c->ld->done)
      fprintf(stderr, "chatload: client %d: %s\n", c->id,
              uv_strerror((int)nread));
    if (!c->closing) {
      c->closing = true;
      uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
    if (!c->ld->done)
      heard(c); /* its slot goes to the next connection */
    return;
  }
  if (nread > 0 && !c->heard)
    heard(c);
  c->inlen += (size_t)nread;
  size_t off = 0;
  for (;;) {
    char *nl = memchr(c->in + off, '\n', c->inlen - off);
    if (nl == NULL)
      break;
    size_t len = (size_t)(nl - (c->in + off));
    if (len > 0 && c->in[off + len - 1] == '\r')
      len--;
    handle_line(c, c->in + off, len);
    off = (size_t)(nl - c->in) + 1;
    if (c->closing)
      return;
  }
  if (off == 0 && c->inlen >= sizeof c->in - 1)
    off = c->inlen; /* an absurd line: drop it */
  memmove(c->in, c->in + off, c->inlen - off);
  c->inlen -= off;
}

static void on_connect(uv_connect_t *req, int status) {
  conn *c = req->data;
  load *ld = c->ld;
  if (status < 0) {
    fprintf(stderr, "chatload: connect %s:%d: %s\n", ld->host,
            ld->ports[c->port_ix], uv_strerror(status));
    exit(1);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  char buf[512];
  int n;
  if (ld->redis) {
    if (!c->subscriber) {
      heard(c);
      became_ready(c);
      return;
    }
    char chan[32];
    snprintf(chan, sizeof chan, "#load%d", c->chan);
    n = snprintf(buf, sizeof buf, "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%s\r\n",
                 strlen(chan), chan);
    write_raw(c, buf, (size_t)n, 0);
    return;
  }
  n = 0;
  if (ld->password)
    n = snprintf(buf, sizeof buf, "PASS %s\r\n", ld->password);
  n += snprintf(buf + n, sizeof buf - (size_t)n,
                "NICK l%dx%d\r\nUSER load 0 * :hark-chatload\r\n"
                "PING :chatload\r\n",
                ld->pid % 100, c->id);
  write_raw(c, buf, (size_t)n, 0);
}

/* At most 128 connections being set up at once, and of those at most
 * UNHEARD_MAX that the server has not yet said anything on. A connect
 * completes on the SYN-ACK, before the server accept()s: when its accept
 * queue is full (ngircd listens with a backlog of 10) the kernel drops the
 * handshake's last ACK, and the connection looks open to us while the
 * server never sees it (with SYN cookies it keeps no state at all). The
 * first byte from the server proves the accept: registration ends with a
 * PING that every server answers at once (PONG, or 451 from one that
 * registers clients on a timer, as inspircd does once a second). Redis
 * publishers, which hear nothing, count as heard once connected. */
#define UNHEARD_MAX 8

static void heard(conn *c) {
  if (c->heard)
    return;
  c->heard = true;
  c->ld->unheard--;
  connect_more(c->ld);
}

static void connect_more(load *ld) {
  int want = ld->nclients + (ld->redis ? ld->nsenders : 0);
  while (ld->next_to_connect < want && ld->connecting < 128 &&
         ld->unheard < UNHEARD_MAX && !ld->done) {
    conn *c = &ld->conns[ld->next_to_connect++];
    struct sockaddr_storage ss;
    int port = ld->ports[c->port_ix];
    if (uv_ip4_addr(ld->host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(ld->host, port, (struct sockaddr_in6 *)&ss) != 0) {
      fprintf(stderr, "chatload: bad host %s\n", ld->host);
      exit(2);
    }
    uv_tcp_init(ld->loop, &c->tcp);
    c->tcp.data = c->creq.data = c;
    ld->connecting++;
    ld->unheard++;
    uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&ss, on_connect);
  }
}

static double pct_of(const uint32_t *hist, const uint32_t *hist_ms, long long n,
                     uint64_t max_ns, double p) {
  long long want = (long long)(p * (double)n), acc = 0;
  if (want >= n)
    want = n - 1;
  for (int i = 0; i < HIST_US; i++) {
    acc += hist[i];
    if (acc > want)
      return i;
  }
  for (int i = 0; i < HIST_MS; i++) {
    acc += hist_ms[i];
    if (acc > want)
      return (double)i * 1000.0;
  }
  return (double)max_ns / 1000.0;
}

static double pct(load *ld, double p) {
  return pct_of(ld->hist, ld->hist_ms, ld->delivered, ld->max_ns, p);
}

static void on_progress(uv_timer_t *t) {
  load *ld = t->data;
  double secs = ld->sending ? (double)(uv_hrtime() - ld->t_start) / 1e9 : 0;
  fprintf(stderr,
          "\rchatload: ready %d  sent %lld/%lld  delivered %lld/%lld  %.0f "
          "msg/s   ",
          ld->ready, ld->sent, ld->total, ld->delivered, ld->expected,
          secs > 0 ? (double)ld->delivered / secs : 0.0);
  if (ld->sending && secs > ld->timeout) {
    fprintf(stderr, "\nchatload: timed out after %us\n", ld->timeout);
    finish(ld);
  } else if (!ld->sending && ld->timeout &&
             (double)(uv_hrtime() - ld->t_begin) / 1e9 > ld->timeout) {
    /* from launch: uv_now() counts from an arbitrary epoch (boot) */
    fprintf(stderr, "\nchatload: only %d clients ready after %us\n", ld->ready,
            ld->timeout);
    finish(ld);
  }
}

static void finish(load *ld) {
  if (ld->done)
    return;
  ld->done = true;
  double secs = ld->delivered > 0 && ld->t_last > ld->t_start
                    ? (double)(ld->t_last - ld->t_start) / 1e9
                    : 0.0;
  fprintf(stderr, "\n");
  printf("%s %s:%d", ld->redis ? "redis" : "irc", ld->host, ld->ports[0]);
  for (int i = 1; i < ld->nports; i++)
    printf(",%d", ld->ports[i]);
  printf("  channels %d  clients %d  senders %d x %d messages%s\n",
         ld->nchannels, ld->nclients, ld->nsenders, ld->messages,
         ld->rate > 0 ? "" : " flat out");
  if (ld->nports > 1) {
    printf("per port (clients: delivered):");
    for (int i = 0; i < ld->nports; i++)
      printf("  %d %d: %lld", ld->ports[i], ld->port_clients[i],
             ld->port_delivered[i]);
    printf("\ncross-port deliveries %lld (%.0f%%)\n", ld->crossed,
           ld->delivered > 0
               ? 100.0 * (double)ld->crossed / (double)ld->delivered
               : 0.0);
  }
  if (ld->rate > 0)
    printf("rate %.0f msg/s sent\n", ld->rate);
  printf("delivered %lld/%lld in %.3fs: %.0f msg/s\n", ld->delivered,
         ld->expected, secs, secs > 0 ? (double)ld->delivered / secs : 0.0);
  if (ld->delivered > 0)
    printf("latency p50 %.0f us  p99 %.0f us  max %.0f us\n", pct(ld, 0.5),
           pct(ld, 0.99), (double)ld->max_ns / 1000.0);
  if (ld->crossed > 0)
    printf("cross-port latency p50 %.0f us  p99 %.0f us  max %.0f us\n",
           pct_of(ld->xhist, ld->xhist_ms, ld->crossed, ld->xmax_ns, 0.5),
           pct_of(ld->xhist, ld->xhist_ms, ld->crossed, ld->xmax_ns, 0.99),
           (double)ld->xmax_ns / 1000.0);
  if (ld->lag_n > 0)
    printf("tool loop lag (1 ms timer) p50 %.0f us  p99 %.0f us  max %.0f "
           "us\n",
           lag_pct(ld, 0.5), lag_pct(ld, 0.99), (double)ld->lag_max / 1000.0);
  /* Latency on a shared machine is mostly the other jobs': say how busy. */
  double la[3];
  uv_loadavg(la);
  printf("load average %.2f at start, %.2f at end (%u CPUs)\n",
         ld->load_start[0], la[0], uv_available_parallelism());
  fflush(stdout);
  uv_timer_stop(&ld->progress);
  uv_timer_stop(&ld->pace);
  uv_timer_stop(&ld->probe);
  uv_close((uv_handle_t *)&ld->progress, NULL);
  uv_close((uv_handle_t *)&ld->pace, NULL);
  uv_close((uv_handle_t *)&ld->probe, NULL);
  int n = ld->nclients + (ld->redis ? ld->nsenders : 0);
  for (int i = 0; i < ld->next_to_connect && i < n; i++) {
    conn *c = &ld->conns[i];
    if (!c->closing) {
      c->closing = true;
      uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
  }
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: hark-chatload [OPTION]...\n"
          "Fan-out load for an IRC server (or Redis pub/sub with --redis).\n"
          "  --host HOST       server address [127.0.0.1]\n"
          "  --port PORT       server port [6667; 6379 with --redis]\n"
          "  --ports P1,P2,..  several servers of one network on HOST (or\n"
          "                    --port repeated): each channel's members go\n"
          "                    round robin over the ports, senders too; one\n"
          "                    process and loop, totals for the whole network\n"
          "  --clients N       receiving clients [100]\n"
          "  --channels M      channels; client i joins #load(i%%M) [1]\n"
          "  --senders S       senders (0: every client) [10]\n"
          "  --messages K      messages per sender [1000]\n"
          "  --rate R          messages/s sent in total, round robin over the\n"
          "                    senders (0: flat out) [0]\n"
          "  --timeout SEC     give up after this [60]\n"
          "  --password PASS   IRC server password\n"
          "  --redis           SUBSCRIBE/PUBLISH against redis-server\n"
          "  --help            show this\n"
          "IRC: the senders are clients too and do not get their own "
          "messages;\nRedis: the senders are extra connections that "
          "PUBLISH.\n");
}

int main(int argc, char **argv) {
  static load state; /* big (the histogram pointer aside): not on the stack */
  load *ld = &state;
  ld->host = "127.0.0.1";
  ld->nclients = 100;
  ld->nchannels = 1;
  ld->nsenders = 10;
  ld->messages = 1000;
  ld->timeout = 60;
  static const struct option longs[] = {
      {"host", 1, NULL, 'h'},     {"port", 1, NULL, 'p'},
      {"ports", 1, NULL, 'L'},    {"clients", 1, NULL, 'n'},
      {"channels", 1, NULL, 'm'}, {"senders", 1, NULL, 's'},
      {"messages", 1, NULL, 'k'}, {"rate", 1, NULL, 'r'},
      {"timeout", 1, NULL, 't'},  {"password", 1, NULL, 'P'},
      {"redis", 0, NULL, 'R'},    {"help", 0, NULL, 'H'},
      {NULL, 0, NULL, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", longs, NULL)) != -1) {
    switch (o) {
    case 'h':
      ld->host = optarg;
      break;
    case 'p':
    case 'L':
      for (char *p = optarg, *end; *p != '\0'; p = end + (*end == ',')) {
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 65535 || (*end != ',' && *end != '\0') ||
            ld->nports == MAX_PORTS) {
          fprintf(stderr, "chatload: bad port list %s (at most %d)\n", optarg,
                  MAX_PORTS);
          return 2;
        }
        ld->ports[ld->nports++] = (int)v;
      }
      break;
    case 'n':
      ld->nclients = atoi(optarg);
      break;
    case 'm':
      ld->nchannels = atoi(optarg);
      break;
    case 's':
      ld->nsenders = atoi(optarg);
      break;
    case 'k':
      ld->messages = atoi(optarg);
      break;
    case 'r':
      ld->rate = atof(optarg);
      break;
    case 't':
      ld->timeout = (unsigned)atoi(optarg);
      break;
    case 'P':
      ld->password = optarg;
      break;
    case 'R':
      ld->redis = true;
      break;
    case 'H':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (ld->nports == 0)
    ld->ports[ld->nports++] = ld->redis ? 6379 : 6667;
  if (ld->nclients < 1 || ld->nchannels < 1 || ld->nchannels > ld->nclients ||
      ld->nsenders < 0 || ld->messages < 1) {
    usage(stderr);
    return 2;
  }
  if (ld->nsenders == 0 || (!ld->redis && ld->nsenders > ld->nclients))
    ld->nsenders = ld->nclients;
  signal(SIGPIPE, SIG_IGN);
  ld->pid = (int)uv_os_getpid();
  int nconns = ld->nclients + (ld->redis ? ld->nsenders : 0);
  ld->conns = calloc((size_t)nconns, sizeof *ld->conns);
  ld->hist = calloc(HIST_US, sizeof *ld->hist);
  ld->hist_ms = calloc(HIST_MS, sizeof *ld->hist_ms);
  ld->xhist = calloc(HIST_US, sizeof *ld->xhist);
  ld->xhist_ms = calloc(HIST_MS, sizeof *ld->xhist_ms);
  ld->trace = getenv("CHATLOAD_TRACE") != NULL;
  for (int i = 0; i < nconns; i++) {
    conn *c = &ld->conns[i];
    c->ld = ld;
    c->id = i;
    if (ld->redis) {
      c->subscriber = i < ld->nclients;
      /* publishers spread over the channels like IRC senders */
      c->chan = c->subscriber ? i % ld->nchannels
                              : (i - ld->nclients) % ld->nchannels;
      c->sender = !c->subscriber;
    } else {
      c->chan = i % ld->nchannels;
      c->sender = i < ld->nsenders;
    }
    /* The k-th member of channel c goes to port (k + c) % P: every channel
     * spans the ports (a plain i % P would put all of a channel on one
     * port whenever P divides M), senders included, and the clients are
     * balanced over the ports. */
    int k = ld->redis && !c->subscriber ? (i - ld->nclients) / ld->nchannels
                                        : i / ld->nchannels;
    c->port_ix = (k + c->chan) % ld->nports;
    if (!c->sender || !ld->redis)
      ld->port_clients[c->port_ix]++;
  }
  /* deliveries: every member but the sender (IRC), every subscriber (Redis) */
  for (int i = 0; i < nconns; i++)
    if (ld->conns[i].sender)
      ld->expected += (long long)ld->messages *
                      (members_of(ld, ld->conns[i].chan) - (ld->redis ? 0 : 1));
  ld->total = (long long)ld->nsenders * ld->messages;
  uv_loop_t loop;
  uv_loop_init(&loop);
  ld->loop = &loop;
  uv_timer_init(&loop, &ld->progress);
  uv_timer_init(&loop, &ld->pace);
  uv_timer_init(&loop, &ld->probe);
  ld->progress.data = ld->pace.data = ld->probe.data = ld;
  uv_timer_start(&ld->progress, on_progress, 1000, 1000);
  if (ld->expected == 0) {
    fprintf(stderr, "chatload: nothing would be delivered\n");
    return 2;
  }
  ld->t_begin = uv_hrtime();
  connect_more(ld);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  free(ld->conns);
  free(ld->hist);
  free(ld->hist_ms);
  free(ld->xhist);
  free(ld->xhist_ms);
  return ld->delivered >= ld->expected ? 0 : 1;
}
