/* hark-chatd: an IRC server on libuv and hark. Options, then the loop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chatd.h"
#include "tls.h"

typedef struct option_doc {
  const char *name, *arg, *help;
} option_doc;

static const option_doc docs[] = {
    {"listen", "HOST:PORT", "address to listen on; port 0 picks one"},
    {"name", "NAME", "server name in numerics and PONG"},
    {"password", "PASS", "server password (PASS); none by default"},
    {"motd", "FILE", "message of the day; none: 422"},
    {"listen-tls", "HOST:PORT",
     "also listen for TLS clients (with --cert and --key); same network"},
    {"cert", "FILE", "the TLS listener's certificate chain (PEM)"},
    {"key", "FILE", "its private key (PEM)"},
    {"accounts", "FILE",
     "accounts for SASL PLAIN and OPER: lines \"name $6$hash [oper]\" "
     "(see --hash-password)"},
    {"hash-password", NULL,
     "read a password on stdin, print its crypt(3) SHA-512 hash, exit"},
    {"max-clients", "N", "most connected clients (0: no limit)"},
    {"max-channels", "N", "most channels on the server (0: no limit)"},
    {"max-chans-per-client", "N",
     "most '#' channels one client joins, and as many '&' (0: none)"},
    {"max-per-ip", "N", "connections from one address to this node (0: any)"},
    {"max-per-ip-global", "N",
     "connections from one address to the whole network (0: any)"},
    {"per-ip-exempt", "LIST",
     "addresses the two limits above skip, comma-separated (none: \"\")"},
    {"whowas", "N", "entries of the WHOWAS history"},
    {"nicklen", "N", "longest nick (at most 64)"},
    {"channellen", "N", "longest channel name (at most 200)"},
    {"register-timeout", "SEC", "time to register (0: none)"},
    {"ping-interval", "SEC", "idle time before the server PINGs (0: never)"},
    {"ping-timeout", "SEC", "time to answer that PING (0: none)"},
    {"sendq-hard", "BYTES", "output queued: disconnect at once (0: none)"},
    {"sendq-soft", "BYTES",
     "output queued for --sendq-soft-seconds: "
     "disconnect (0: none)"},
    {"sendq-soft-seconds", "SEC", "see --sendq-soft"},
    {"flood-rate", "LINES",
     "lines per second a client may send (0: no "
     "flood control)"},
    {"flood-burst", "LINES", "lines a client may send at once"},
    {"log-level", "LEVEL", "error, warn, info or debug"},
    {"redis", "HOST:PORT",
     "federate with the daemons sharing this "
     "redis-server (none: alone)"},
    {"node-id", "ID",
     "this daemon's name in the federation: letters, "
     "digits, '.', '-', '_' [default: host-pid]"},
    {"lease-ms", "MS",
     "a node without a heartbeat for this long is lost "
     "and its users quit (heartbeats: 4 per lease)"},
    {"redis-user", "USER", "AUTH as this ACL user (with --redis-password)"},
    {"redis-password", "PASS", "AUTH with this password"},
    {"redis-password-file", "FILE",
     "AUTH with the first line of FILE "
     "(kept out of ps)"},
    {"redis-tls", NULL, "speak TLS to Redis (its tls-port)"},
    {"redis-ca", "FILE",
     "CA certificates (PEM) that Redis's certificate "
     "must chain to [default: the system's]"},
    {"redis-cert", "FILE",
     "client certificate (PEM) for Redis, with "
     "--redis-key"},
    {"redis-key", "FILE", "its private key (PEM)"},
    {"redis-prefix", "NAME", "hash tag of the network's keys: {NAME}:..."},
    {"redis-retention", "N",
     "events the stream keeps (XADD MAXLEN): a node "
     "away longer resyncs from a snapshot"},
    {"redis-timeout-ms", "MS", "connect and command timeout on Redis"},
    {"help", NULL, "show this and exit"},
    {"version", NULL, "show the version and exit"},
};
#define NOPTS (sizeof docs / sizeof docs[0])

static void default_of(const chat_options *o, const char *name, char *buf,
                       size_t cap) {
  buf[0] = '\0';
#define D(opt, fmt, val)                                                       \
  if (strcmp(name, opt) == 0)                                                  \
  snprintf(buf, cap, fmt, val)
  D("listen", "%s", "127.0.0.1:6667");
  D("name", "%s", o->name);
  D("max-clients", "%u", o->max_clients);
  D("max-channels", "%u", o->max_channels);
  D("max-chans-per-client", "%u", o->max_chans_per_client);
  D("max-per-ip", "%u", o->max_per_ip);
  D("max-per-ip-global", "%u", o->max_per_ip_global);
  D("per-ip-exempt", "%s", o->per_ip_exempt);
  D("whowas", "%u", o->whowas_max);
  D("nicklen", "%u", o->nicklen);
  D("channellen", "%u", o->channellen);
  D("register-timeout", "%u", o->register_timeout);
  D("ping-interval", "%u", o->ping_interval);
  D("ping-timeout", "%u", o->ping_timeout);
  D("sendq-hard", "%zu", o->sendq_hard);
  D("sendq-soft", "%zu", o->sendq_soft);
  D("sendq-soft-seconds", "%u", o->sendq_soft_seconds);
  D("flood-rate", "%g", o->flood_rate);
  D("flood-burst", "%g", o->flood_burst);
  D("log-level", "%s", "info");
  D("lease-ms", "%u", o->lease_ms);
  D("redis-prefix", "%s", o->redis_prefix);
  D("redis-retention", "%u", o->redis_retention);
  D("redis-timeout-ms", "%u", o->redis_timeout_ms);
#undef D
}

static void usage(FILE *out) {
  chat_options o;
  chat_options_default(&o);
  fprintf(out, "usage: hark-chatd [OPTION]...\n"
               "An IRC server (RFC 1459 subset) built on hark and libuv.\n\n");
  for (size_t i = 0; i < NOPTS; i++) {
    char left[64], def[300];
    snprintf(left, sizeof left, "--%s%s%s", docs[i].name,
             docs[i].arg ? " " : "", docs[i].arg ? docs[i].arg : "");
    default_of(&o, docs[i].name, def, sizeof def);
    fprintf(out, "  %-32s %s%s%s%s\n", left, docs[i].help,
            def[0] ? " [default: " : "", def, def[0] ? "]" : "");
  }
  fprintf(out, "\nSIGUSR1 logs a stats line; SIGINT/SIGTERM shut down "
               "cleanly. HARK_DEBUG=leaks reports objects left at exit.\n");
}

int accounts_hash(const char *pass, char *out, size_t cap); /* oper.c */

/* --hash-password: a line on stdin, its hash on stdout. */
static int hash_password(void) {
  char pw[512], hash[256];
  if (isatty(0))
    fprintf(stderr, "password: ");
  if (fgets(pw, sizeof pw, stdin) == NULL)
    return 2;
  pw[strcspn(pw, "\r\n")] = '\0';
  if (accounts_hash(pw, hash, sizeof hash) != 0) {
    fprintf(stderr, "hark-chatd: cannot hash (built without libcrypt?)\n");
    return 1;
  }
  printf("%s\n", hash);
  return 0;
}

/* --redis-password-file: its first line, without the line end. */
static char secret[512];

static int read_secret(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL || fgets(secret, sizeof secret, f) == NULL) {
    fprintf(stderr, "hark-chatd: --redis-password-file %s: cannot read it\n",
            path);
    if (f != NULL)
      fclose(f);
    return -1;
  }
  fclose(f);
  secret[strcspn(secret, "\r\n")] = '\0';
  return 0;
}

static int parse_uint(const char *s, unsigned long long *out) {
  char *end;
  if (s[0] == '-')
    return -1;
  *out = strtoull(s, &end, 10);
  return (*end == '\0' && end != s) ? 0 : -1;
}

static int parse_options(int argc, char **argv, chat_options *o) {
  struct option longs[NOPTS + 1];
  for (size_t i = 0; i < NOPTS; i++)
    longs[i] = (struct option){docs[i].name,
                               docs[i].arg ? required_argument : no_argument,
                               NULL, (int)i + 256};
  longs[NOPTS] = (struct option){NULL, 0, NULL, 0};
  int c;
  while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
    if (c == 'h') {
      usage(stdout);
      exit(0);
    }
    if (c < 256) {
      usage(stderr);
      return -1;
    }
    const char *name = docs[c - 256].name;
    unsigned long long v = 0;
    bool numeric = strcmp(name, "listen") && strcmp(name, "name") &&
                   strcmp(name, "password") && strcmp(name, "motd") &&
                   strcmp(name, "listen-tls") && strcmp(name, "cert") &&
                   strcmp(name, "key") && strcmp(name, "accounts") &&
                   strcmp(name, "hash-password") &&
                   strcmp(name, "per-ip-exempt") && strcmp(name, "log-level") &&
                   strcmp(name, "help") && strcmp(name, "version") &&
                   strcmp(name, "flood-rate") && strcmp(name, "flood-burst") &&
                   strcmp(name, "redis") && strcmp(name, "node-id") &&
                   strncmp(name, "redis-", 6);
    if (!strcmp(name, "redis-retention") || !strcmp(name, "redis-timeout-ms"))
      numeric = true;
    if (numeric && parse_uint(optarg, &v) != 0) {
      fprintf(stderr, "hark-chatd: --%s wants a number, not '%s'\n", name,
              optarg);
      return -1;
    }
    if (!strcmp(name, "help")) {
      usage(stdout);
      exit(0);
    } else if (!strcmp(name, "version")) {
      printf("%s (hark %d.%d.%d)\n", CHATD_VERSION, HARK_VERSION_MAJOR,
             HARK_VERSION_MINOR, HARK_VERSION_PATCH);
      exit(0);
    } else if (!strcmp(name, "hash-password")) {
      exit(hash_password());
    } else if (!strcmp(name, "listen") || !strcmp(name, "listen-tls")) {
      bool tls = name[6] == '-';
      char *host = tls ? o->tls_host : o->host;
      const char *colon = strrchr(optarg, ':');
      unsigned long long port;
      if (colon == NULL || parse_uint(colon + 1, &port) != 0 || port > 65535 ||
          (size_t)(colon - optarg) >= sizeof o->host) {
        fprintf(stderr, "hark-chatd: --%s wants HOST:PORT\n", name);
        return -1;
      }
      const char *h = optarg;
      size_t hl = (size_t)(colon - optarg);
      if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
      }
      snprintf(host, sizeof o->host, "%.*s", (int)hl, h);
      if (tls)
        o->tls_port = (int)port;
      else
        o->port = (int)port;
    } else if (!strcmp(name, "cert")) {
      o->tls_cert = optarg;
    } else if (!strcmp(name, "key")) {
      o->tls_key = optarg;
    } else if (!strcmp(name, "accounts")) {
      o->accounts_path = optarg;
    } else if (!strcmp(name, "per-ip-exempt")) {
      if (strlen(optarg) >= sizeof o->per_ip_exempt) {
        fprintf(stderr, "hark-chatd: --per-ip-exempt: too long\n");
        return -1;
      }
      snprintf(o->per_ip_exempt, sizeof o->per_ip_exempt, "%s", optarg);
    } else if (!strcmp(name, "max-per-ip")) {
      o->max_per_ip = (unsigned)v;
    } else if (!strcmp(name, "max-per-ip-global")) {
      o->max_per_ip_global = (unsigned)v;
    } else if (!strcmp(name, "whowas")) {
      o->whowas_max = v > 100000 ? 100000 : (unsigned)v;
    } else if (!strcmp(name, "redis")) {
#ifndef HARK_CHATD_REDIS
      fprintf(stderr, "hark-chatd: built without Redis (hiredis): "
                      "--redis is not available\n");
      return -1;
#endif
      const char *colon = strrchr(optarg, ':');
      unsigned long long port;
      if (colon == NULL || parse_uint(colon + 1, &port) != 0 || port == 0 ||
          port > 65535 || (size_t)(colon - optarg) >= sizeof o->redis_host) {
        fprintf(stderr, "hark-chatd: --redis wants HOST:PORT\n");
        return -1;
      }
      snprintf(o->redis_host, sizeof o->redis_host, "%.*s",
               (int)(colon - optarg), optarg);
      o->redis_port = (int)port;
    } else if (!strcmp(name, "node-id")) {
      if (strlen(optarg) >= sizeof o->node_id || optarg[0] == '\0' ||
          strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         "0123456789.-_") != strlen(optarg)) {
        fprintf(stderr, "hark-chatd: bad --node-id (letters, digits, '.', "
                        "'-', '_')\n");
        return -1;
      }
      snprintf(o->node_id, sizeof o->node_id, "%s", optarg);
    } else if (!strcmp(name, "redis-user")) {
      o->redis_user = optarg;
    } else if (!strcmp(name, "redis-password")) {
      o->redis_password = optarg;
    } else if (!strcmp(name, "redis-password-file")) {
      if (read_secret(optarg) != 0)
        return -1;
      o->redis_password = secret;
    } else if (!strcmp(name, "redis-tls")) {
      o->redis_tls = true;
    } else if (!strcmp(name, "redis-ca")) {
      o->redis_ca = optarg;
    } else if (!strcmp(name, "redis-cert")) {
      o->redis_cert = optarg;
    } else if (!strcmp(name, "redis-key")) {
      o->redis_key = optarg;
    } else if (!strcmp(name, "redis-prefix")) {
      if (strlen(optarg) >= sizeof o->redis_prefix || optarg[0] == '\0' ||
          strpbrk(optarg, "{}") != NULL) {
        fprintf(stderr, "hark-chatd: bad --redis-prefix (no braces)\n");
        return -1;
      }
      snprintf(o->redis_prefix, sizeof o->redis_prefix, "%s", optarg);
    } else if (!strcmp(name, "redis-retention")) {
      o->redis_retention = v < 100         ? 100
                           : v > 100000000 ? 100000000
                                           : (unsigned)v;
    } else if (!strcmp(name, "redis-timeout-ms")) {
      o->redis_timeout_ms = v < 100 ? 100 : v > 600000 ? 600000 : (unsigned)v;
    } else if (!strcmp(name, "lease-ms")) {
      o->lease_ms = v < 300 ? 300 : (unsigned)v;
    } else if (!strcmp(name, "name")) {
      if (strlen(optarg) >= sizeof o->name || strchr(optarg, ' ')) {
        fprintf(stderr, "hark-chatd: bad --name\n");
        return -1;
      }
      snprintf(o->name, sizeof o->name, "%s", optarg);
    } else if (!strcmp(name, "password")) {
      o->password = optarg;
    } else if (!strcmp(name, "motd")) {
      o->motd_path = optarg;
    } else if (!strcmp(name, "log-level")) {
      int l = log_parse_level(optarg);
      if (l < 0) {
        fprintf(stderr, "hark-chatd: unknown log level '%s'\n", optarg);
        return -1;
      }
      o->log_level = l;
    } else if (!strcmp(name, "flood-rate") || !strcmp(name, "flood-burst")) {
      char *end;
      double d = strtod(optarg, &end);
      if (*end != '\0' || d < 0) {
        fprintf(stderr, "hark-chatd: --%s wants a number\n", name);
        return -1;
      }
      if (name[6] == 'r')
        o->flood_rate = d;
      else
        o->flood_burst = d < 1 ? 1 : d;
    } else if (!strcmp(name, "max-clients")) {
      o->max_clients = (unsigned)v;
    } else if (!strcmp(name, "max-channels")) {
      o->max_channels = (unsigned)v;
    } else if (!strcmp(name, "max-chans-per-client")) {
      o->max_chans_per_client = (unsigned)v;
    } else if (!strcmp(name, "nicklen")) {
      o->nicklen = v < 1 ? 1 : (unsigned)v;
    } else if (!strcmp(name, "channellen")) {
      o->channellen = v < 2 ? 2 : (unsigned)v;
    } else if (!strcmp(name, "register-timeout")) {
      o->register_timeout = (unsigned)v;
    } else if (!strcmp(name, "ping-interval")) {
      o->ping_interval = (unsigned)v;
    } else if (!strcmp(name, "ping-timeout")) {
      o->ping_timeout = (unsigned)v;
    } else if (!strcmp(name, "sendq-hard")) {
      o->sendq_hard = (size_t)v;
    } else if (!strcmp(name, "sendq-soft")) {
      o->sendq_soft = (size_t)v;
    } else if (!strcmp(name, "sendq-soft-seconds")) {
      o->sendq_soft_seconds = (unsigned)v;
    }
  }
  if (o->redis_port == 0 &&
      (o->redis_user || o->redis_password || o->redis_tls || o->redis_ca)) {
    fprintf(stderr, "hark-chatd: --redis-* options need --redis\n");
    return -1;
  }
  if ((o->redis_ca || o->redis_cert || o->redis_key) && !o->redis_tls) {
    fprintf(stderr, "hark-chatd: --redis-ca/--redis-cert/--redis-key need "
                    "--redis-tls\n");
    return -1;
  }
  if (o->redis_user && !o->redis_password) {
    fprintf(stderr, "hark-chatd: --redis-user needs --redis-password (or "
                    "--redis-password-file)\n");
    return -1;
  }
  if (o->tls_port >= 0 && (o->tls_cert == NULL || o->tls_key == NULL)) {
    fprintf(stderr, "hark-chatd: --listen-tls needs --cert and --key\n");
    return -1;
  }
  if ((o->redis_tls || o->tls_port >= 0) && !tls_available()) {
    fprintf(stderr, "hark-chatd: built without OpenSSL: TLS is not "
                    "available (./configure --with-openssl)\n");
    return -1;
  }
  if (o->redis_tls && !tls_available()) {
    fprintf(stderr, "hark-chatd: built without OpenSSL: --redis-tls is not "
                    "available (./configure --with-openssl)\n");
    return -1;
  }
  if (optind < argc) {
    fprintf(stderr, "hark-chatd: unexpected argument '%s'\n", argv[optind]);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  chat_options opt;
  chat_options_default(&opt);
  if (parse_options(argc, argv, &opt) != 0)
    return 2;
  log_set_level((enum log_level)opt.log_level);
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t loop;
  uv_loop_init(&loop);
  chat_server srv;
  int r = server_start(&srv, &loop, &opt);
  if (r == 0) {
    const char *h = srv.opt.host;
    log_info("listening on %s:%d", h, srv.port);
    if (srv.tls != NULL) {
      log_info("listening for TLS on %s:%d", srv.opt.tls_host, srv.tls_port);
      printf("hark-chatd listening for TLS on %s:%d\n", srv.opt.tls_host,
             srv.tls_port);
    }
    printf("hark-chatd listening on %s:%d\n"
           "connect with: irssi -c %s -p %d   (or: nc %s %d, then type "
           "NICK me / USER me 0 * :Me / JOIN #hark)\n",
           h, srv.port, h, srv.port, h, srv.port);
    fflush(stdout);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  server_free(&srv);
  int lr = uv_loop_close(&loop);
  if (lr != 0)
    log_error("uv_loop_close: %s", uv_strerror(lr));
  else
    log_info("stopped cleanly");
  return r != 0 || lr != 0 ? 1 : 0;
}
