/* http_internal.h — pieces shared by server.c, tls.c, the unit test and the
 * fuzz target.  Not part of the module's contract (http.h). */
#ifndef CX_HTTP_INTERNAL_H
#define CX_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include "base/buf.h"
#include "http/http.h"

/* ---- TLS (tls.c) ------------------------------------------------------ */

/* A server context: TLS 1.2+, the certificate chain and key from PEM files
 * (key_file NULL = the key is in cert_file).  NULL on error (logged). */
SSL_CTX *http_tls_ctx_new(const char *cert_file, const char *key_file);

/* One TLS session over memory BIOs: ciphertext read from the socket goes in
 * with http_tls_sess_input(), plaintext comes out into a caller's growable
 * buffer; plaintext to send goes in with http_tls_sess_encrypt(), and the
 * ciphertext to write to the socket is collected with http_tls_sess_take(). */
struct http_tls_sess {
	SSL *ssl;
	BIO *rbio; /* network -> SSL */
	BIO *wbio; /* SSL -> network */
	bool failed;
	bool peer_closed; /* failed because the peer sent close_notify */
};

int http_tls_sess_init(struct http_tls_sess *t, SSL_CTX *ctx);
void http_tls_sess_free(struct http_tls_sess *t);
/* Feed ciphertext; decrypted bytes are appended at *buf+*len, growing *buf
 * (capacity *cap, always leaving one spare byte) but never beyond max bytes
 * in total.  0, or -1 on a fatal TLS error, a close_notify from the peer, or
 * overflow. */
int http_tls_sess_input(struct http_tls_sess *t, const char *ct, size_t n,
			char **buf, size_t *len, size_t *cap, size_t max);
/* Encrypt plaintext into the outgoing BIO.  0 or -1. */
int http_tls_sess_encrypt(struct http_tls_sess *t, const void *p, size_t n);
/* Bytes of ciphertext waiting to be written to the socket. */
size_t http_tls_sess_pending(const struct http_tls_sess *t);
/* Move up to n pending ciphertext bytes into dst; returns how many. */
size_t http_tls_sess_take(struct http_tls_sess *t, char *dst, size_t n);
/* Queue a close_notify alert (collect it with _take). */
void http_tls_sess_shutdown(struct http_tls_sess *t);
/* Take the SSL object out of the session (which is then empty), for a
 * detached stream: *ct (malloc'd, or NULL) gets the ciphertext received but
 * not yet consumed by the SSL object.  0, or -1 if the session failed (a
 * close_notify received is no failure here: the stream reads its end) or
 * ciphertext is still waiting to be sent. */
int http_tls_sess_detach(struct http_tls_sess *t, SSL **ssl, char **ct, size_t *ct_len);

/* ---- detached streams (stream.c) -------------------------------------- */

struct http_conn;

struct http_stream {
	int fd;                  /* blocking; SO_RCVTIMEO/SO_SNDTIMEO = timeout */
	SSL *ssl;                /* NULL: plain TCP or Unix */
	struct http_conn *conn;  /* keeps req (in its buffer) alive; released at close */
	const char *pre;         /* body bytes the server had read (plaintext) */
	size_t pre_len;
	char *ct;                /* TLS: ciphertext received before the detach */
	size_t ct_len, ct_off;
	int64_t remaining;       /* body bytes still to read; -1: until EOF */
	int vminor;              /* the request's HTTP/1.x */
	bool expect_continue;    /* answer 100-continue on the first read */
	bool head_sent;
	bool sock_eof;           /* the socket returned EOF */
	bool failed;             /* TLS: a fatal error; no close_notify */
	int io_err;              /* last socket error (-errno), for TLS errors */
	char *iobuf;             /* TLS sendfile staging */
};

/* Make the stream usable: fd blocking with timeouts; TLS over the socket
 * (serving s->ct first).  0 or -errno (s is then still to be freed with
 * http_stream_close). */
int http_stream_setup(struct http_stream *s, unsigned timeout_ms);
/* Drop the stream's reference to its connection (any thread). */
void http_conn_release(struct http_conn *c);

/* ---- response heads (server.c) ---------------------------------------- */

/* Build a response head into h (replacing its contents): status line,
 * content-type (NULL: none), content-length (clen < 0: none), connection,
 * CORS and cache headers, extra lines, the blank line. */
void http_build_head(struct buf *h, int vminor, int status, const char *ctype, int64_t clen,
		     bool keep_alive, const char *extra, const char *allow_headers);
/* Append the short HTML error page for status (reason escaped) to b. */
void http_error_body(struct buf *b, int status, const char *reason);

/* ---- request parsing without sockets (server.c) ----------------------- */

/* Feed the bytes through the same parsing path a TCP connection uses: the
 * data is delivered in pieces (sizes derived from the data), every complete
 * request goes to a handler that answers some requests at once and others
 * later, and all responses are discarded.  Used by fuzz/fuzz_http.c and the
 * unit test.  Returns the number of requests delivered to the handler, or -1
 * if the connection was closed with an error response. */
int http_fuzz_feed(const uint8_t *data, size_t len);

/* The reason phrase for a status code ("OK", "Not Found", ...). */
const char *http_reason(int status);

#endif
