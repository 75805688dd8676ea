/* http.h — the HTTP/1.1 server on the libuv loop: TCP, TLS and a Unix socket.
 *
 * The server reads and parses request heads and bodies (Content-Length only;
 * chunked request bodies get 411/400), enforces limits on head size, body
 * size and time, and hands each complete request to one handler on the loop
 * thread.  The handler answers with http_respond(), either at once or later
 * (from the loop thread, e.g. in a uv_queue_work after-callback); requests on
 * one connection are answered in order, and a connection whose request is
 * pending reads nothing more.  Many connections are served concurrently.
 */
#ifndef CX_HTTP_H
#define CX_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>
#include "base/buf.h"

enum http_transport { HT_TCP = 0, HT_TLS, HT_UNIX };

struct http_header {
	const char *name;  /* as sent; compare case-insensitively */
	const char *value;
};

#define HTTP_MAX_HEADERS 64

struct http_req {
	const char *method;      /* "GET", "POST", ... */
	const char *path;        /* without the query */
	const char *query;       /* after '?', or "" */
	int version_minor;       /* HTTP/1.<n> */
	bool keep_alive;         /* after Connection header and version */
	int nheaders;
	struct http_header headers[HTTP_MAX_HEADERS];
	const char *body;        /* NUL-terminated (in the connection's buffer) */
	size_t body_len;
	enum http_transport transport;
	char peer[64];           /* "127.0.0.1:12345" or "unix" */
};

struct http_conn; /* opaque */

/* Called on the loop thread with a complete request.  req stays valid until
 * http_respond() for it is called. */
typedef void (*http_handler_fn)(struct http_conn *c, struct http_req *req, void *opaque);

struct http_config {
	const char *bind_addr;    /* "127.0.0.1"; NULL/"" = all addresses */
	int http_port;            /* 0 = none; -1 = pick a free port */
	int https_port;           /* 0 = none */
	const char *unix_path;    /* NULL = none */
	const char *cert_file;    /* PEM cert+key; made (self-signed) if missing */
	const char *key_file;
	size_t max_head;          /* bytes; default 16 KiB */
	size_t max_body;          /* bytes; default 1 MiB */
	unsigned head_timeout_ms; /* whole head+body must arrive in this time; default 30 s */
	unsigned idle_timeout_ms; /* keep-alive idle close; default 300 s */
	int max_conns;            /* default 4096 */
	unsigned unix_mode;       /* permissions of the Unix socket; 0 = 0600 */
};

struct http_server;

struct http_server *http_server_new(uv_loop_t *loop, const struct http_config *cfg,
				    http_handler_fn fn, void *opaque);
/* Bind and listen on all configured endpoints.  0 or -errno (logged). */
int http_server_start(struct http_server *s);
int http_server_port(const struct http_server *s, enum http_transport t); /* actual port */
void http_server_stop(struct http_server *s); /* close listeners and connections */
void http_server_free(struct http_server *s);

/* Answer the pending request of c.  body is taken (freed by the server).
 * extra_headers: NULL or "Name: value\r\n..." lines.  Adds Content-Length,
 * Connection (keep-alive/close per request), and the CORS and cache headers
 * the original sends on RPC replies. */
void http_respond(struct http_conn *c, int status, const char *content_type,
		  struct buf *body, const char *extra_headers);
/* A short HTML error page with the given status; closes the connection. */
void http_respond_error(struct http_conn *c, int status, const char *reason);

const char *http_req_header(const struct http_req *r, const char *name); /* NULL */
/* Query parameter lookup (URL-decoded into out, NUL-terminated); returns the
 * length, -1 if absent, -2 if the value does not fit in outsz-1 bytes. */
int http_query_get(const char *query, const char *name, char *out, size_t outsz);

/* TLS: make a self-signed certificate (RSA 2048 or EC P-256) for the host
 * name into cert/key files if they do not exist.  0 or -errno. */
int http_tls_ensure_cert(const char *cert_file, const char *key_file, const char *cn);

#endif
