/* TLS over a libuv stream: see tls.h. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "tls.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"

#ifdef HARK_CHATD_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct chat_tls_ctx {
  SSL_CTX *ssl;
  bool server;
};

struct chat_tls {
  SSL *ssl;
  BIO *in;  /* ciphertext from the peer: tls_feed writes it here */
  BIO *out; /* ciphertext for the peer: written to the stream */
  uv_stream_t *stream;
  chat_tls_cb cb;
  void *data;
  bool ready, failed;
  /* A callback may call tls_free: the memory goes when the outermost
   * call into this session returns, not under its feet. */
  unsigned busy;
  bool freed;
};

/* A write of ciphertext in flight: it owns its bytes and nothing of the
 * session, which may be gone by the time it completes. */
typedef struct tls_write_req {
  uv_write_t req;
  char bytes[];
} tls_write_req;

/* OpenSSL's allocations go through the daemon's allocator too (alloc.h),
 * when it lets us: only before its first allocation. */
static void *ossl_malloc(size_t n, const char *file, int line) {
  return chat_malloc(n);
}
static void *ossl_realloc(void *p, size_t n, const char *file, int line) {
  return chat_realloc(p, n);
}
static void ossl_free(void *p, const char *file, int line) { chat_free(p); }

static void tls_init(void) {
  static bool done;
  if (done)
    return;
  done = true;
  CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
  OPENSSL_init_ssl(0, NULL);
}

/* The last OpenSSL error (and the queue cleared), after prefix. */
static void ssl_error(char *err, size_t cap, const char *prefix) {
  unsigned long e = ERR_get_error();
  char msg[256] = "unknown error";
  if (e != 0)
    ERR_error_string_n(e, msg, sizeof msg);
  ERR_clear_error();
  snprintf(err, cap, "%s: %s", prefix, msg);
}

bool tls_available(void) { return true; }

static chat_tls_ctx *ctx_new(bool server, char *err, size_t cap) {
  tls_init();
  chat_tls_ctx *c = chat_calloc(1, sizeof *c);
  if (c == NULL) {
    snprintf(err, cap, "out of memory");
    return NULL;
  }
  c->server = server;
  c->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (c->ssl == NULL) {
    ssl_error(err, cap, "TLS context");
    chat_free(c);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION);
  /* Writes hand over whole buffers; the memory BIO takes any size. */
  SSL_CTX_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                               SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return c;
}

static bool load_pair(chat_tls_ctx *c, const char *cert, const char *key,
                      char *err, size_t cap) {
  char what[600];
  if (SSL_CTX_use_certificate_chain_file(c->ssl, cert) != 1) {
    snprintf(what, sizeof what, "certificate %s", cert);
    ssl_error(err, cap, what);
    return false;
  }
  if (SSL_CTX_use_PrivateKey_file(c->ssl, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(c->ssl) != 1) {
    snprintf(what, sizeof what, "private key %s", key);
    ssl_error(err, cap, what);
    return false;
  }
  return true;
}

chat_tls_ctx *tls_ctx_client(const char *ca, const char *cert, const char *key,
                             char *err, size_t cap) {
  if ((cert == NULL) != (key == NULL)) {
    snprintf(err, cap, "a client certificate needs its key, and back");
    return NULL;
  }
  chat_tls_ctx *c = ctx_new(false, err, cap);
  if (c == NULL)
    return NULL;
  int ok = ca != NULL ? SSL_CTX_load_verify_locations(c->ssl, ca, NULL)
                      : SSL_CTX_set_default_verify_paths(c->ssl);
  if (ok != 1) {
    char what[600];
    snprintf(what, sizeof what, "CA certificates %s", ca ? ca : "(system)");
    ssl_error(err, cap, what);
    tls_ctx_free(c);
    return NULL;
  }
  SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
  if (cert != NULL && !load_pair(c, cert, key, err, cap)) {
    tls_ctx_free(c);
    return NULL;
  }
  return c;
}

chat_tls_ctx *tls_ctx_server(const char *cert, const char *key,
                             const char *client_ca, char *err, size_t cap) {
  chat_tls_ctx *c = ctx_new(true, err, cap);
  if (c == NULL)
    return NULL;
  if (!load_pair(c, cert, key, err, cap)) {
    tls_ctx_free(c);
    return NULL;
  }
  if (client_ca != NULL) {
    if (SSL_CTX_load_verify_locations(c->ssl, client_ca, NULL) != 1) {
      ssl_error(err, cap, "client CA certificates");
      tls_ctx_free(c);
      return NULL;
    }
    SSL_CTX_set_verify(c->ssl,
                       SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  return c;
}

void tls_ctx_free(chat_tls_ctx *c) {
  if (c == NULL)
    return;
  SSL_CTX_free(c->ssl); /* sessions hold their own reference */
  chat_free(c);
}

/* ---- a session ------------------------------------------------------- */

static void on_written(uv_write_t *req, int status) {
  /* An error shows on the read side too (EOF, reset): the owner of the
   * stream learns it there. */
  chat_free(req);
}

/* Writes what OpenSSL has produced. False when it could not be written
 * (out of memory, or the stream refused it). */
static bool flush_out(chat_tls *t) {
  size_t n;
  while ((n = BIO_ctrl_pending(t->out)) > 0) {
    tls_write_req *w = chat_malloc(sizeof *w + n);
    if (w == NULL)
      return false;
    int got = BIO_read(t->out, w->bytes, (int)n);
    if (got <= 0) {
      chat_free(w);
      return false;
    }
    uv_buf_t b = uv_buf_init(w->bytes, (unsigned)got);
    if (uv_write(&w->req, t->stream, &b, 1, on_written) != 0) {
      chat_free(w);
      return false;
    }
  }
  return true;
}

static void fail(chat_tls *t, const char *why) {
  if (t->failed)
    return;
  t->failed = true;
  if (!t->freed && t->cb.on_error != NULL)
    t->cb.on_error(t->data, why);
}

/* Why an SSL call returned r, in words; false when it only waits for
 * more bytes. */
static bool ssl_failed(chat_tls *t, int r, char *why, size_t cap) {
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return false;
  if (e == SSL_ERROR_ZERO_RETURN) {
    snprintf(why, cap, "TLS: the peer closed the session");
    return true;
  }
  long v = SSL_get_verify_result(t->ssl);
  if (!t->ready && v != X509_V_OK) {
    snprintf(why, cap, "TLS: certificate verification failed: %s",
             X509_verify_cert_error_string(v));
    ERR_clear_error();
    return true;
  }
  ssl_error(why, cap, t->ready ? "TLS" : "TLS handshake");
  return true;
}

/* Runs the handshake or reads what has arrived, as far as it goes. */
static void pump(chat_tls *t) {
  char why[400];
  if (!t->ready) {
    int r = SSL_do_handshake(t->ssl);
    bool flushed = flush_out(t);
    if (r != 1) {
      if (ssl_failed(t, r, why, sizeof why))
        fail(t, why);
      else if (!flushed)
        fail(t, "TLS: cannot write the handshake");
      return;
    }
    if (!flushed) {
      fail(t, "TLS: cannot write the handshake");
      return;
    }
    t->ready = true;
    if (t->cb.on_ready != NULL)
      t->cb.on_ready(t->data);
  }
  char buf[16384];
  while (!t->freed && !t->failed) {
    int r = SSL_read(t->ssl, buf, sizeof buf);
    if (r > 0) {
      t->cb.on_data(t->data, buf, (size_t)r);
      continue;
    }
    /* A read may produce records to send (a key update, an alert). */
    flush_out(t);
    if (ssl_failed(t, r, why, sizeof why))
      fail(t, why);
    return;
  }
}

static void release(chat_tls *t) {
  if (--t->busy == 0 && t->freed) {
    SSL_free(t->ssl); /* frees both BIOs */
    chat_free(t);
  }
}

chat_tls *tls_start(chat_tls_ctx *ctx, uv_stream_t *stream, bool server,
                    const char *name, const chat_tls_cb *cb, void *data) {
  chat_tls *t = chat_calloc(1, sizeof *t);
  if (t == NULL)
    return NULL;
  t->ssl = SSL_new(ctx->ssl);
  t->in = BIO_new(BIO_s_mem());
  t->out = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->in == NULL || t->out == NULL) {
    BIO_free(t->in);
    BIO_free(t->out);
    SSL_free(t->ssl);
    chat_free(t);
    return NULL;
  }
  BIO_set_mem_eof_return(t->in, -1); /* empty means "wait", not EOF */
  SSL_set_bio(t->ssl, t->in, t->out);
  t->stream = stream;
  t->cb = *cb;
  t->data = data;
  if (server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (name != NULL) {
      /* An address is checked against the certificate's IP names; a host
       * name against its DNS names, and sent as SNI. */
      unsigned char ip[16];
      bool is_ip = uv_inet_pton(AF_INET, name, ip) == 0 ||
                   uv_inet_pton(AF_INET6, name, ip) == 0;
      X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
      if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(p, name);
      } else {
        SSL_set_tlsext_host_name(t->ssl, name);
        SSL_set1_host(t->ssl, name);
      }
    }
  }
  t->busy = 1;
  if (!server)
    pump(t); /* the client hello */
  release(t);
  return t;
}

void tls_feed(chat_tls *t, const char *buf, size_t n) {
  if (t->freed || t->failed)
    return;
  t->busy++;
  if (BIO_write(t->in, buf, (int)n) != (int)n)
    fail(t, "TLS: out of memory");
  else
    pump(t);
  release(t);
}

int tls_write(chat_tls *t, const uv_buf_t *bufs, unsigned nbufs) {
  if (!t->ready || t->failed || t->freed)
    return UV_ENOTCONN;
  for (unsigned i = 0; i < nbufs; i++) {
    size_t off = 0;
    while (off < bufs[i].len) {
      size_t left = bufs[i].len - off;
      int chunk = left > (1u << 30) ? 1 << 30 : (int)left;
      int r = SSL_write(t->ssl, bufs[i].base + off, chunk);
      if (r <= 0) {
        ERR_clear_error();
        return UV_ENOMEM; /* memory BIOs only fail for want of memory */
      }
      off += (size_t)r;
    }
  }
  return flush_out(t) ? 0 : UV_ENOMEM;
}

void tls_free(chat_tls *t) {
  if (t == NULL || t->freed)
    return;
  t->freed = true;
  t->busy++;
  release(t);
}

#else /* !HARK_CHATD_TLS */

bool tls_available(void) { return false; }

chat_tls_ctx *tls_ctx_client(const char *ca, const char *cert, const char *key,
                             char *err, size_t cap) {
  snprintf(err, cap, "built without OpenSSL (./configure --with-openssl)");
  return NULL;
}

chat_tls_ctx *tls_ctx_server(const char *cert, const char *key,
                             const char *client_ca, char *err, size_t cap) {
  snprintf(err, cap, "built without OpenSSL (./configure --with-openssl)");
  return NULL;
}

void tls_ctx_free(chat_tls_ctx *ctx) {}

chat_tls *tls_start(chat_tls_ctx *ctx, uv_stream_t *stream, bool server,
                    const char *name, const chat_tls_cb *cb, void *data) {
  return NULL;
}

void tls_feed(chat_tls *t, const char *buf, size_t n) {}

int tls_write(chat_tls *t, const uv_buf_t *bufs, unsigned nbufs) {
  return UV_ENOTSUP;
}

void tls_free(chat_tls *t) {}

#endif
