/* The fuzzer's seam into hark-chatd: sessions without an accepted
 * connection, fed their input directly. Not part of the daemon's build. */
#ifndef CHATD_FUZZ_SEAM_H
#define CHATD_FUZZ_SEAM_H

#include "chatd.h"

/* A new session of srv on fd, an already connected stream socket (one end
 * of a socketpair; the caller reads and discards the other end), set up
 * as session_accept does, host shown as host. Returns the session, whose
 * only strong reference is the server's (it ends when the session
 * closes), or NULL when memory runs out. */
chat_session *fuzz_session_open(chat_server *srv, uv_os_sock_t fd,
                                const char *host);

/* session.c: feeds bytes as one read of s's socket would; returns the
 * bytes taken (at most the room left in its input buffer). */
size_t session_feed(chat_session *s, const char *data, size_t len);

#endif
