/* TLS over a libuv stream, as a client or as a server, for hark-chatd.
 * OpenSSL runs on memory BIOs: the caller keeps reading its own socket
 * and feeds what arrives (ciphertext) to tls_feed; what OpenSSL has to
 * send (handshake records, encrypted data) is written to the stream here,
 * with uv_write. So one module serves any libuv stream, whoever owns its
 * read loop: the Redis connection (redis.c) today, a client listener
 * (--listen-tls) later.
 *
 * Built with ./configure --with-openssl (on when OpenSSL is found);
 * without it tls_available() is false and the constructors fail. */
#ifndef CHATD_TLS_H
#define CHATD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct chat_tls_ctx chat_tls_ctx;
typedef struct chat_tls chat_tls;

typedef struct chat_tls_cb {
  /* The handshake is over (and the peer verified): tls_write may run. */
  void (*on_ready)(void *data);
  /* Decrypted bytes, borrowed for the call. */
  void (*on_data)(void *data, const char *buf, size_t len);
  /* The session failed (handshake, verification, a bad record, the peer's
   * close_notify): why says it in words. Nothing more is called after
   * it; the caller closes its stream and calls tls_free. */
  void (*on_error)(void *data, const char *why);
} chat_tls_cb;

/* Whether the daemon was built with TLS. */
bool tls_available(void);

/* A client context: peers are verified against the CA certificates in ca
 * (a PEM file; NULL: the system's default store). cert and key (PEM files,
 * both or neither) are a client certificate to present. Returns NULL with
 * a message in err on failure. */
chat_tls_ctx *tls_ctx_client(const char *ca, const char *cert, const char *key,
                             char *err, size_t cap);
/* A server context presenting cert/key; with client_ca, clients must
 * present a certificate signed by it. Returns NULL with err on failure. */
chat_tls_ctx *tls_ctx_server(const char *cert, const char *key,
                             const char *client_ca, char *err, size_t cap);
/* NULL is a harmless no-op. Sessions made from ctx keep it alive. */
void tls_ctx_free(chat_tls_ctx *ctx);

/* Starts TLS on stream, a connected stream that outlives the session (the
 * caller closes it after tls_free). server selects the side; a client
 * sends its hello at once and checks that the peer's certificate names
 * name (a host name or an IP address; NULL: no name check). Returns NULL
 * when memory runs out. */
chat_tls *tls_start(chat_tls_ctx *ctx, uv_stream_t *stream, bool server,
                    const char *name, const chat_tls_cb *cb, void *data);
/* Hands n ciphertext bytes read from the stream to the session; calls
 * back (on_ready, on_data, on_error) before it returns. */
void tls_feed(chat_tls *t, const char *buf, size_t n);
/* Encrypts and writes the bytes of bufs. Returns 0, or a negative libuv
 * error (UV_ENOTCONN before on_ready or after on_error, UV_ENOMEM). */
int tls_write(chat_tls *t, const uv_buf_t *bufs, unsigned nbufs);
/* Ends the session: no callback runs after this returns (also called
 * from inside one). Writes in flight finish on their own. NULL is a
 * harmless no-op. */
void tls_free(chat_tls *t);

#endif
