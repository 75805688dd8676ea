/* http.h — the HTTP/1.1 server on the libuv loop: TCP, TLS and a Unix socket.
 *
 * The server reads and parses request heads and bodies (Content-Length only;
 * chunked request bodies get 411/400), enforces limits on head size, body
 * size and time, and hands each complete request to one handler on the loop
 * thread.  The handler answers with http_respond(), either at once or later
 * (from the loop thread, e.g. in a uv_queue_work after-callback); requests on
 * one connection are answered in order, and a connection whose request is
 * pending reads nothing more.  Many connections are served concurrently.
 *
 * Streaming: a request the config's stream_body() claims is handed to the
 * handler as soon as its head is complete, without its body; the handler
 * takes the connection over with http_detach() and moves the bytes itself
 * with the blocking http_stream_*() calls, on a thread of its own.
 */
#ifndef CX_HTTP_H
#define CX_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
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
	int64_t content_length;  /* the Content-Length header; -1 when absent */
	bool streamed;           /* stream_body() said so: body is "", not read */
	enum http_transport transport;
	char peer[64];           /* "127.0.0.1:12345" or "unix" */
};

struct http_conn; /* opaque */

/* Called on the loop thread with a complete request.  req stays valid until
 * http_respond() for it is called (or, after http_detach(), until
 * http_stream_close()). */
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
	/* Called on the loop thread when a head is complete, before its body is
	 * read (method, path, query, headers, content_length, transport and
	 * peer are set; opaque is the handler's).  true: do not read or limit
	 * the body — the handler gets the request at once with streamed set,
	 * and either detaches (http_detach) or answers with http_respond*(),
	 * which then closes the connection.  NULL = never. */
	bool (*stream_body)(const struct http_req *req, void *opaque);
	unsigned stream_timeout_ms; /* detached streams: inactivity; default 300 s */
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

/* ---- streams: a detached connection --------------------------------- */

struct http_stream; /* opaque */

/* Take over the connection of a streamed request (req->streamed), on the loop
 * thread, from the handler or later.  The server stops watching the socket
 * and forgets the connection (no timeouts, not counted in max_conns); the
 * stream owns the socket, the TLS session and the body bytes already read.
 * c must not be used again; req stays valid until http_stream_close().
 * NULL if the connection cannot be detached (it was closed meanwhile, the
 * request is not streamed, or bytes the server queued are not out yet):
 * then answer with http_respond*() as usual. */
struct http_stream *http_detach(struct http_conn *c);

/* The calls below block; they may be made on any thread, by one thread at a
 * time (on a plain TCP or Unix connection, one reader and one writer thread
 * may run at once).  Errors are -errno; a peer that goes away gives 0 from a
 * read and -EPIPE/-ECONNRESET from a write (never SIGPIPE); no progress for
 * the inactivity timeout gives -ETIMEDOUT.  After an error only
 * http_stream_close() is useful. */

/* Read body bytes: never more than Content-Length in total (no
 * Content-Length: until the peer closes).  0 at the end of the body or when
 * the peer closed (count the bytes to tell a cut body from a complete one).
 * The first read answers "Expect: 100-continue" if no head was sent yet. */
ssize_t http_stream_read(struct http_stream *s, void *buf, size_t len);
/* Write all of buf: 0 or -errno. */
int http_stream_write(struct http_stream *s, const void *buf, size_t len);
/* Send len bytes of the file fd from offset off (sendfile(2) on plain
 * connections; TLS reads and encrypts).  0, -errno, or -EIO if the file ends
 * first. */
int http_stream_sendfile(struct http_stream *s, int fd, uint64_t off, size_t len);
/* Write the response head: status line (the request's HTTP version),
 * content-type (NULL = none), content-length (-1 = none: the body ends when
 * the connection closes), "connection: close", the CORS and cache headers of
 * http_respond(), then extra_headers ("Name: value\r\n..." or NULL).  The
 * connection always closes after the stream.  0 or -errno. */
int http_stream_respond_head(struct http_stream *s, int status, const char *content_type,
			     int64_t content_length, const char *extra_headers);
/* A head and a short HTML error page (like http_respond_error). */
int http_stream_respond_error(struct http_stream *s, int status, const char *reason);
/* Inactivity timeout for reads and writes; 0 = none. */
void http_stream_set_timeout(struct http_stream *s, unsigned ms);
int http_stream_fd(const struct http_stream *s);
/* Close cleanly (TLS close_notify, FIN, a short drain of unread input so the
 * peer sees our answer rather than a reset) and free; req becomes invalid.
 * NULL is accepted. */
void http_stream_close(struct http_stream *s);

const char *http_req_header(const struct http_req *r, const char *name); /* NULL */
/* Query parameter lookup (URL-decoded into out, NUL-terminated); returns the
 * length, -1 if absent, -2 if the value does not fit in outsz-1 bytes. */
int http_query_get(const char *query, const char *name, char *out, size_t outsz);

/* TLS: make a self-signed certificate (RSA 2048 or EC P-256) for the host
 * name into cert/key files if they do not exist.  0 or -errno. */
int http_tls_ensure_cert(const char *cert_file, const char *key_file, const char *cn);

#endif
