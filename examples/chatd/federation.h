/* hark-chatd federation: several daemons, one chat network, through Redis
 * pub/sub (hiredis and its libuv adapter). The bridge is one more receiver
 * of the daemon's signals (connected with sender NULL: every channel); it
 * publishes what local sessions do and turns what arrives from Redis into
 * hark_sends on the local channel objects. Built with ./configure
 * --with-redis (on when hiredis is found); without it every hook below is a
 * no-op and the daemon works alone. */
#ifndef CHATD_FEDERATION_H
#define CHATD_FEDERATION_H

#include <stdbool.h>
#include <stddef.h>

typedef struct chat_server chat_server;
typedef struct chat_session chat_session;
typedef struct chat_channel chat_channel;

/* A member on another node, as NAMES and WHO show it. */
typedef struct fed_member {
  char nick[65], node[64], user[32], host[64], real[64];
  bool op;
} fed_member;

/* A channel of the network, as LIST shows it. */
typedef struct fed_chan_info {
  char name[201], topic[512];
  size_t users;
  bool keyed;
} fed_chan_info;

/* What the network says about a channel a session is joining. */
typedef struct fed_join_state {
  bool ok;  /* false: bad key (475) */
  bool op;  /* first member of the network: operator */
  char *key, *name, *topic, *topic_by;
  long long topic_at;
  fed_member *members; /* the other nodes' members */
  size_t nmembers;
} fed_join_state;

#ifdef HARK_CHATD_REDIS
/* Connects to opt.redis_host:redis_port (reconnecting with backoff). 0 or
 * -1 (logged). Does nothing without --redis. */
int fed_start(chat_server *srv);
/* Releases this node's nicks and heartbeat, closes the connections. */
void fed_stop(chat_server *srv);
void fed_free(chat_server *srv);
/* true: the claim went to Redis and command_nick_apply (or 433) follows. */
bool fed_nick_claim(chat_session *s, const char *nick);
void fed_nick_release(chat_server *srv, const char *nick);
/* true: the join went to Redis and command_join_finish follows. */
bool fed_join(chat_session *s, const char *name, const char *key);
/* Members of c on other nodes (NULL, 0 without federation). */
fed_member *fed_members(chat_channel *c, size_t *n);
fed_member *fed_member_find(chat_channel *c, const char *nick);
/* A channel new on this node takes the network's key, topic, members. */
void fed_channel_load(chat_channel *c, const fed_join_state *st);
void fed_stats(chat_server *srv, char *buf, size_t cap);
/* PRIVMSG/NOTICE to a nick not on this node: true when it went to Redis,
 * which delivers it on the nick's node (or 401 follows, not for NOTICE). */
bool fed_privmsg(chat_session *s, const char *target, const char *cmd,
                 const char *text, bool notice);
/* WHOIS of a nick not on this node: true when the replies follow. */
bool fed_whois(chat_session *s, const char *nick);
/* ISON: local is the 303 list found here; missing the nicks not found.
 * true when the 303 follows. */
bool fed_ison(chat_session *s, const char *local, char **missing, size_t n);
/* LIST: true when command_list_finish follows with the network's
 * channels. filter: the LIST argument or NULL. */
bool fed_list(chat_session *s, const char *filter);
/* NAMES (who false) or WHO of a channel without members here: true when
 * the replies follow. */
bool fed_names(chat_session *s, const char *name, bool who);
/* The session's user, host and realname, for WHOIS on other nodes. */
void fed_user_info(chat_session *s);
#else
static inline int fed_start(chat_server *srv) { return 0; }
static inline void fed_stop(chat_server *srv) {}
static inline void fed_free(chat_server *srv) {}
static inline bool fed_nick_claim(chat_session *s, const char *nick) {
  return false;
}
static inline void fed_nick_release(chat_server *srv, const char *nick) {}
static inline bool fed_join(chat_session *s, const char *name,
                            const char *key) {
  return false;
}
static inline fed_member *fed_members(chat_channel *c, size_t *n) {
  *n = 0;
  return NULL;
}
static inline fed_member *fed_member_find(chat_channel *c, const char *nick) {
  return NULL;
}
static inline void fed_channel_load(chat_channel *c,
                                    const fed_join_state *st) {}
static inline void fed_stats(chat_server *srv, char *buf, size_t cap) {
  if (cap)
    buf[0] = '\0';
}
static inline bool fed_privmsg(chat_session *s, const char *target,
                               const char *cmd, const char *text,
                               bool notice) {
  return false;
}
static inline bool fed_whois(chat_session *s, const char *nick) {
  return false;
}
static inline bool fed_ison(chat_session *s, const char *local,
                            char **missing, size_t n) {
  return false;
}
static inline bool fed_list(chat_session *s, const char *filter) {
  return false;
}
static inline bool fed_names(chat_session *s, const char *name, bool who) {
  return false;
}
static inline void fed_user_info(chat_session *s) {}
#endif

/* In commands.c: the second halves of NICK, JOIN and LIST. */
void command_nick_apply(chat_session *s, const char *nick);
void command_list_finish(chat_session *s, const char *filter,
                         const fed_chan_info *remote, size_t n);
void command_join_finish(chat_session *s, const char *name, const char *key,
                         const fed_join_state *st);

#endif
