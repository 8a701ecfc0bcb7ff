/* hark-chatd federation: several daemons, one chat network, through a
 * Redis stream. The only header of federation that the rest of the daemon
 * sees, and only server.c includes it: federation connects itself to the
 * daemon's signals as one more receiver, and applies what other nodes did
 * through the same operations commands use (user.c, channel.c).
 * Built with ./configure --with-redis (on when hiredis is found); without
 * it these are no-ops and the daemon works alone. */
#ifndef CHATD_FEDERATION_H
#define CHATD_FEDERATION_H

#include <stddef.h>

typedef struct chat_server chat_server;

#ifdef HARK_CHATD_REDIS
/* Starts federating when opt.redis_port is set (connecting, retrying with
 * backoff; local service never waits for it). 0, or -1 (logged) for a
 * configuration that cannot work (TLS files, out of memory). */
int fed_start(chat_server *srv);
/* Publishes what is left (bounded by a guard), leaves the network, closes
 * the connections. After the sessions' QUITs. */
void fed_stop(chat_server *srv);
/* After uv_run has returned. */
void fed_free(chat_server *srv);
/* Appends " node ... redis ..." counters to a STATS line. */
void fed_stats(chat_server *srv, char *buf, size_t cap);
#else
static inline int fed_start(chat_server *srv) { return 0; }
static inline void fed_stop(chat_server *srv) {}
static inline void fed_free(chat_server *srv) {}
static inline void fed_stats(chat_server *srv, char *buf, size_t cap) {
  if (cap)
    buf[0] = '\0';
}
#endif

#endif
