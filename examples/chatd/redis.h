/* An asynchronous Redis connection on libuv for hark-chatd: TCP or TLS
 * (tls.h), AUTH, a connect timeout and a per-command timeout, commands
 * pipelined and written once per loop iteration, replies parsed by
 * hiredis's reply reader into trees allocated with chat_malloc. It
 * replaces hiredis's own async context and libuv adapter (0.14 has no TLS
 * and ignores socket errors).
 *
 * One owner per connection. Every command gets exactly one callback: its
 * reply, or NULL when there will be none (the connection failed, timed
 * out, or was freed). Callbacks run on the loop thread. */
#ifndef CHATD_REDIS_H
#define CHATD_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "tls.h"

/* The reply types, as RESP2 and hiredis name them. */
enum {
  RREPLY_STRING = 1,
  RREPLY_ARRAY = 2,
  RREPLY_INTEGER = 3,
  RREPLY_NIL = 4,
  RREPLY_STATUS = 5,
  RREPLY_ERROR = 6
};

typedef struct rreply {
  int type;
  long long integer;
  size_t len; /* STRING, STATUS, ERROR: str[len] is a NUL */
  char *str;
  size_t elements; /* ARRAY */
  struct rreply **element;
} rreply;

typedef struct redis_conf {
  const char *host; /* an address or a name (resolved) */
  int port;
  const char *user;            /* NULL: AUTH with the password alone */
  const char *password;        /* NULL: no AUTH */
  chat_tls_ctx *tls;           /* NULL: plain TCP */
  unsigned connect_timeout_ms; /* TCP, TLS and AUTH */
  unsigned command_timeout_ms; /* from a command's write to its reply */
  const char *name;            /* CLIENT SETNAME, or NULL */
} redis_conf;

typedef struct redis_conn redis_conn;

/* A command's reply, borrowed for the call; NULL: none will come. */
typedef void (*redis_cb)(void *data, const rreply *reply);

typedef struct redis_events {
  /* Connected, authenticated, and answering: commands may go. */
  void (*on_ready)(redis_conn *c, void *data);
  /* The connection is over: every pending command has had its NULL
   * callback. config is true when retrying the same way cannot help
   * (authentication refused, TLS verification failed, no TLS there). The
   * owner calls redis_free (from here too). */
  void (*on_down)(redis_conn *c, void *data, const char *why, bool config);
} redis_events;

/* Starts connecting (the conf's strings are copied). Returns NULL when
 * memory runs out; every other failure comes through on_down. */
redis_conn *redis_connect(uv_loop_t *loop, const redis_conf *conf,
                          const redis_events *ev, void *data);
/* Queues a command of argc arguments (lens[i] bytes each; lens NULL: NUL
 * terminated). extra_ms is added to the command timeout (a blocking
 * command's own wait). Returns 0, UV_ENOTCONN (not ready, or down: cb is
 * not called) or UV_ENOMEM (nothing queued). */
int redis_send(redis_conn *c, int argc, const char *const *argv,
               const size_t *lens, unsigned extra_ms, redis_cb cb, void *data);
/* Like redis_send, the command's first nhead arguments being head, hlen
 * bytes already in RESP (redis_format_args), for a prefix sent often. */
int redis_send_head(redis_conn *c, int nhead, const char *head, size_t hlen,
                    int argc, const char *const *argv, const size_t *lens,
                    redis_cb cb, void *data);
/* Writes argv's arguments in RESP into buf (cap bytes) and returns the
 * length they need (more than cap: cut, call again bigger). */
size_t redis_format_args(char *buf, size_t cap, int argc,
                         const char *const *argv);
/* Whether commands may be sent. */
bool redis_ready(const redis_conn *c);
/* Round-trip figures: the slowest reply since the last call (ms). */
uint64_t redis_take_slowest(redis_conn *c);
/* Closes the connection: the pending commands' callbacks run with NULL
 * before it returns, on_down never. NULL is a harmless no-op. The
 * memory goes once the handles have closed. */
void redis_free(redis_conn *c);

/* Small helpers for replies. */
static inline bool rreply_is(const rreply *r, int type) {
  return r != NULL && r->type == type;
}
/* Element i of an array, or NULL. */
static inline const rreply *rreply_at(const rreply *r, size_t i) {
  return rreply_is(r, RREPLY_ARRAY) && i < r->elements ? r->element[i] : NULL;
}

#endif
