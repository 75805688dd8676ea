/* server.c — the HTTP/1.1 server on the libuv loop (see http.h and
 * docs/http.md).
 *
 * One struct http_conn per accepted socket.  Bytes are read straight into the
 * connection's buffer (for TLS: ciphertext into a shared scratch buffer, then
 * decrypted into the connection's buffer) and parsed in place by Debian's
 * http_parser: the callbacks only record offsets; when the head is complete
 * the names, values and URL are NUL-terminated where they lie, and the body
 * is NUL-terminated in place too (the byte it overwrites — the start of a
 * pipelined request — is saved and put back when the request is answered).
 * So a request costs no allocation.
 *
 * While a request is with the handler the connection reads nothing more;
 * bytes already read stay in the buffer and are parsed after the response
 * has been written, so pipelined requests are answered in order.
 *
 * Lifetime: a connection holds one reference for its libuv handles (dropped
 * when both the stream and the timer have been closed), one while a request
 * is with the handler (a detached stream inherits it), and a temporary one
 * while it is being processed.  The server holds one reference for its owner,
 * one per open listener handle and one per connection not detached, so a late
 * http_respond() after http_server_free() is still safe.  A detached
 * connection drops its server reference at once, so its last reference may
 * go on any thread (refs is atomic) without touching the server.
 */
#include "http/http.h"
#include "http/http_internal.h"
#include "base/buf.h"
#include "base/log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <http_parser.h>

#define DEF_MAX_HEAD (16u * 1024)
#define DEF_MAX_BODY (1024u * 1024)
#define DEF_HEAD_TIMEOUT 30000u
#define DEF_IDLE_TIMEOUT 300000u
#define DEF_MAX_CONNS 4096
#define READ_CHUNK 16384      /* free space offered to each read */
#define READ_KEEP (64 * 1024) /* idle buffers above this are released */
#define LINGER_MS 2000u       /* how long to drain a closing connection */
#define SCRATCH_SIZE (64 * 1024)
#define DEF_STREAM_TIMEOUT 300000u
#define NO_OFF UINT32_MAX     /* path "/" or query "" not in the buffer */

enum tkind { T_NONE = 0, T_HEAD, T_IDLE, T_WRITE, T_LINGER };

struct http_server {
	uv_loop_t *loop;
	struct http_config cfg; /* strings below are our copies */
	http_handler_fn fn;
	void *opaque;
	uv_tcp_t tcp, tls;
	uv_pipe_t unix_;
	bool tcp_on, tls_on, unix_on; /* handle initialised, to be closed */
	bool unix_bound;
	int tcp_port, tls_port;
	SSL_CTX *ssl_ctx;
	struct http_conn *conns; /* open connections */
	int nconns;
	int refs;
	bool stopping;
	char scratch[SCRATCH_SIZE]; /* TLS ciphertext in; drained bytes */
};

struct hspan {
	uint32_t name_off, name_len, val_off, val_len; /* offsets from rpos */
	bool has_val;
};

struct aux_write {
	uv_write_t req;
	struct http_conn *c;
	char *own; /* freed when done */
	bool is_response;
};

struct http_conn {
	union {
		uv_stream_t stream;
		uv_tcp_t tcp;
		uv_pipe_t pipe;
	} h;
	uv_timer_t timer;
	uv_shutdown_t shut;
	uv_write_t wreq;
	struct http_server *srv;
	struct http_conn *next, *prev;
	atomic_int refs;
	int open_handles;
	enum http_transport transport;
	bool fake;        /* no socket (fuzzing): replies are discarded */
	bool closing;     /* handles are being closed */
	bool close_after; /* close once the current response is out */
	bool lingering;   /* write side shut; draining input until EOF */
	bool reading;
	bool peer_eof;
	bool in_process;
	bool pending;     /* request is with the handler */
	bool writing;     /* response write in flight */
	bool in_request;  /* parsing a request */
	bool headers_done, msg_done, last_was_value, hdr_overflow;
	bool is_head, is_connect;
	bool streamed;    /* stream_body() took it: the body is not read */
	bool expect_continue; /* streamed, with Expect: 100-continue */
	bool rejected;    /* the server answered a protocol error */
	enum tkind tkind;
	uint64_t deadline;
	int err_status;

	/* plaintext input: [0, rpos) done, [rpos, ppos) the current
	 * request, [ppos, rlen) not parsed yet; rbuf[rlen] is spare */
	char *rbuf;
	size_t rlen, rcap, rpos, ppos;
	size_t head_end; /* end of the last head token seen */
	size_t body_off, body_len;
	size_t saved_at;
	char saved;
	bool saved_valid;

	http_parser parser;
	uint32_t url_off, url_len;
	uint32_t path_off, query_off; /* from rpos, or NO_OFF */
	int64_t clen;                 /* Content-Length, -1 if none */
	int nh;
	struct hspan hs[HTTP_MAX_HEADERS];
	struct http_req req;

	struct buf whead; /* response head, reused */
	struct buf wbody; /* body of the response being written */
	struct buf tout;  /* TLS ciphertext staging, reused */
	struct http_tls_sess tls;
};

static void conn_process(struct http_conn *c);
static void conn_close(struct http_conn *c);
static void response_done(struct http_conn *c);

/* ---- status lines ----------------------------------------------------- */

const char *http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	/* The original sends "500 Internal Error" (http-lib); clients only
	 * look at the code, and we keep the original's words. */
	case 500: return "Internal Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: break;
	}
	if (status >= 200 && status < 300)
		return "OK";
	if (status >= 400 && status < 500)
		return "Bad Request";
	return "Error";
}

/* ---- references ------------------------------------------------------- */

static void srv_unref(struct http_server *s)
{
	if (--s->refs > 0)
		return;
	SSL_CTX_free(s->ssl_ctx);
	free((char *)s->cfg.bind_addr);
	free((char *)s->cfg.unix_path);
	free((char *)s->cfg.cert_file);
	free((char *)s->cfg.key_file);
	free(s);
}

static void conn_ref(struct http_conn *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

static void conn_unref(struct http_conn *c)
{
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	struct http_server *s = c->srv; /* NULL once detached */
	free(c->rbuf);
	buf_free(&c->whead);
	buf_free(&c->wbody);
	buf_free(&c->tout);
	http_tls_sess_free(&c->tls);
	free(c);
	if (s)
		srv_unref(s);
}

void http_conn_release(struct http_conn *c)
{
	conn_unref(c);
}

/* ---- timers ----------------------------------------------------------- */

/* Deadlines are kept in the connection; the timer is only re-armed when it
 * would fire too late, so the per-request cost is a clock read, not a heap
 * update (the timer fires, finds the deadline moved, and re-arms). */
static void on_timer(uv_timer_t *t);

static void set_deadline(struct http_conn *c, enum tkind k, uint64_t ms)
{
	c->tkind = k;
	c->deadline = uv_now(c->srv->loop) + ms;
	if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
		uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- writing ---------------------------------------------------------- */

static void buf_take(struct buf *dst, struct buf *src)
{
	*dst = *src;
	buf_init(src);
}

static void on_aux_written(uv_write_t *w, int status)
{
	struct aux_write *aw = (struct aux_write *)w;
	struct http_conn *c = aw->c;
	bool resp = aw->is_response;
	free(aw->own);
	free(aw);
	if (resp)
		c->writing = false;
	if (c->closing)
		return;
	if (status < 0) {
		log_debug("http: %s: write: %s", c->req.peer, uv_strerror(status));
		conn_close(c);
		return;
	}
	if (resp)
		response_done(c);
}

/* Write bufs (in order after anything queued).  own (malloc'd or NULL) is
 * freed when the bytes are out.  Returns 1 if written synchronously, 0 if
 * queued, -1 if the connection was closed. */
static int conn_write(struct http_conn *c, uv_buf_t *b, unsigned nb, char *own, bool is_response)
{
	size_t total = 0;
	for (unsigned i = 0; i < nb; i++)
		total += b[i].len;
	int r = uv_try_write(&c->h.stream, b, nb);
	if (r >= 0 && (size_t)r == total) {
		free(own);
		return 1;
	}
	if (r < 0 && r != UV_EAGAIN) {
		free(own);
		log_debug("http: %s: write: %s", c->req.peer, uv_strerror(r));
		conn_close(c);
		return -1;
	}
	size_t done = r > 0 ? (size_t)r : 0;
	while (nb > 0 && done >= b[0].len) {
		done -= b[0].len;
		b++;
		nb--;
	}
	if (nb > 0) {
		b[0].base += done;
		b[0].len -= done;
	}
	struct aux_write *aw = malloc(sizeof *aw);
	if (!aw) {
		free(own);
		conn_close(c);
		return -1;
	}
	aw->c = c;
	aw->own = own;
	aw->is_response = is_response;
	r = uv_write(&aw->req, &c->h.stream, b, nb, on_aux_written);
	if (r < 0) {
		free(own);
		free(aw);
		conn_close(c);
		return -1;
	}
	return 0;
}

/* Send the TLS session's pending ciphertext.  Same returns as conn_write. */
static int tls_flush(struct http_conn *c, bool is_response)
{
	size_t n = http_tls_sess_pending(&c->tls);
	if (n == 0)
		return 1;
	c->tout.len = 0;
	buf_reserve(&c->tout, n);
	c->tout.len = http_tls_sess_take(&c->tls, c->tout.p, n);
	uv_buf_t b = { .base = c->tout.p, .len = c->tout.len };
	int r = uv_try_write(&c->h.stream, &b, 1);
	if (r >= 0 && (size_t)r == c->tout.len)
		return 1;
	if (r < 0 && r != UV_EAGAIN) {
		log_debug("http: %s: write: %s", c->req.peer, uv_strerror(r));
		conn_close(c);
		return -1;
	}
	/* The staging buffer goes with the queued write. */
	struct buf own;
	buf_take(&own, &c->tout);
	b.base = own.p + (r > 0 ? r : 0);
	b.len = own.len - (r > 0 ? (size_t)r : 0);
	return conn_write(c, &b, 1, own.p, is_response);
}

static void on_resp_written(uv_write_t *w, int status)
{
	struct http_conn *c = w->data;
	c->writing = false;
	buf_free(&c->wbody);
	if (c->closing)
		return;
	if (status < 0) {
		log_debug("http: %s: write: %s", c->req.peer, uv_strerror(status));
		conn_close(c);
		return;
	}
	response_done(c);
}

/* Write the head in c->whead and the body (taken) as one write. */
static void send_response(struct http_conn *c, struct buf *body)
{
	if (c->fake) {
		buf_free(body);
		response_done(c);
		return;
	}
	if (c->transport == HT_TLS) {
		int bad = http_tls_sess_encrypt(&c->tls, c->whead.p, c->whead.len);
		if (!bad && body->len)
			bad = http_tls_sess_encrypt(&c->tls, body->p, body->len);
		buf_free(body);
		if (bad) {
			conn_close(c);
			return;
		}
		int r = tls_flush(c, true);
		if (r == 1)
			response_done(c);
		else if (r == 0) {
			c->writing = true;
			set_deadline(c, T_WRITE, c->srv->cfg.idle_timeout_ms);
		}
		return;
	}
	uv_buf_t b[2] = {
		{ .base = c->whead.p, .len = c->whead.len },
		{ .base = body->p, .len = body->len },
	};
	unsigned nb = body->len ? 2 : 1;
	size_t total = b[0].len + b[1].len;
	int r = uv_try_write(&c->h.stream, b, nb);
	if (r >= 0 && (size_t)r == total) {
		buf_free(body);
		response_done(c);
		return;
	}
	if (r < 0 && r != UV_EAGAIN) {
		buf_free(body);
		log_debug("http: %s: write: %s", c->req.peer, uv_strerror(r));
		conn_close(c);
		return;
	}
	size_t done = r > 0 ? (size_t)r : 0;
	uv_buf_t *bp = b;
	while (nb > 0 && done >= bp[0].len) {
		done -= bp[0].len;
		bp++;
		nb--;
	}
	bp[0].base += done;
	bp[0].len -= done;
	buf_take(&c->wbody, body);
	c->wreq.data = c;
	r = uv_write(&c->wreq, &c->h.stream, bp, nb, on_resp_written);
	if (r < 0) {
		buf_free(&c->wbody);
		conn_close(c);
		return;
	}
	c->writing = true;
	set_deadline(c, T_WRITE, c->srv->cfg.idle_timeout_ms);
}

/* Send a short fixed message (100 Continue) outside the response flow. */
static void send_aux(struct http_conn *c, const char *s)
{
	if (c->fake || c->closing)
		return;
	size_t n = strlen(s);
	if (c->transport == HT_TLS) {
		if (http_tls_sess_encrypt(&c->tls, s, n) < 0) {
			conn_close(c);
			return;
		}
		tls_flush(c, false);
		return;
	}
	uv_buf_t b = { .base = (char *)s, .len = n };
	conn_write(c, &b, 1, NULL, false);
}

/* ---- response heads --------------------------------------------------- */

static inline void put(struct buf *h, const char *s, size_t n)
{
	memcpy(h->p + h->len, s, n);
	h->len += n;
}
#define PUTS(h, lit) put((h), (lit), sizeof(lit) - 1)

static void put_num(struct buf *h, uint64_t v)
{
	char tmp[24];
	int i = sizeof tmp;
	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put(h, tmp + i, sizeof tmp - (size_t)i);
}

void http_build_head(struct buf *h, int vminor, int status, const char *ctype, int64_t clen,
		     bool ka, const char *extra, const char *allow_headers)
{
	if (status < 100 || status > 999)
		status = 500;
	const char *reason = http_reason(status);
	size_t rl = strlen(reason);
	size_t cl = ctype ? strlen(ctype) : 0;
	size_t el = extra ? strlen(extra) : 0;
	size_t al = allow_headers ? strlen(allow_headers) : 0;
	h->len = 0;
	buf_reserve(h, 256 + rl + cl + el + al);
	if (vminor == 0)
		PUTS(h, "HTTP/1.0 ");
	else
		PUTS(h, "HTTP/1.1 ");
	char code[3] = { (char)('0' + status / 100), (char)('0' + status / 10 % 10),
			 (char)('0' + status % 10) };
	put(h, code, 3);
	PUTS(h, " ");
	put(h, reason, rl);
	PUTS(h, "\r\n");
	if (cl) {
		PUTS(h, "content-type: ");
		put(h, ctype, cl);
		PUTS(h, "\r\n");
	}
	if (clen >= 0) {
		PUTS(h, "content-length: ");
		put_num(h, (uint64_t)clen);
		PUTS(h, "\r\n");
	}
	if (ka)
		PUTS(h, "connection: keep-alive\r\n");
	else
		PUTS(h, "connection: close\r\n");
	PUTS(h, "Access-Control-Allow-Origin: *\r\n");
	if (allow_headers) {
		PUTS(h, "Access-Control-Allow-Headers: ");
		put(h, allow_headers, al);
		PUTS(h, "\r\n");
	} else {
		PUTS(h, "Access-Control-Allow-Headers: X-Requested-With\r\n");
	}
	PUTS(h, "cache-control: no-cache, no-store\r\n");
	if (el) {
		put(h, extra, el);
		if (el < 2 || extra[el - 2] != '\r' || extra[el - 1] != '\n')
			PUTS(h, "\r\n");
	}
	PUTS(h, "\r\n");
}

/* ---- answering -------------------------------------------------------- */

static void restore_saved(struct http_conn *c)
{
	if (c->saved_valid) {
		c->rbuf[c->saved_at] = c->saved;
		c->saved_valid = false;
	}
}

static void respond_full(struct http_conn *c, int status, const char *ctype, struct buf *body,
			 const char *extra, const char *allow_headers)
{
	struct buf empty;
	buf_init(&empty);
	if (!body)
		body = &empty;
	if (!c || !c->pending) {
		/* no request to answer: a bug in the caller */
		buf_free(body);
		return;
	}
	c->pending = false;
	restore_saved(c);
	if (c->closing) {
		buf_free(body);
		conn_unref(c);
		return;
	}
	bool ka = c->req.keep_alive && !c->close_after && !c->srv->stopping && !c->is_connect;
	if (!ka)
		c->close_after = true;
	http_build_head(&c->whead, c->req.version_minor, status, ctype, (int64_t)body->len, ka,
			extra, allow_headers);
	if (c->is_head)
		buf_free(body);
	send_response(c, body);
	conn_unref(c); /* the request's reference */
}

void http_respond(struct http_conn *c, int status, const char *content_type,
		  struct buf *body, const char *extra_headers)
{
	respond_full(c, status, content_type, body, extra_headers, NULL);
}

static void html_escape(struct buf *b, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '<': buf_adds(b, "&lt;"); break;
		case '>': buf_adds(b, "&gt;"); break;
		case '&': buf_adds(b, "&amp;"); break;
		case '"': buf_adds(b, "&quot;"); break;
		default: buf_addc(b, *s); break;
		}
	}
}

void http_error_body(struct buf *b, int status, const char *reason)
{
	const char *r = http_reason(status);
	buf_printf(b, "<html><head><title>%d %s</title></head><body><h1>HTTP %d %s</h1>", status, r,
		   status, r);
	if (reason && *reason) {
		buf_adds(b, "<p>");
		html_escape(b, reason);
		buf_adds(b, "</p>");
	}
	buf_adds(b, "</body></html>");
}

void http_respond_error(struct http_conn *c, int status, const char *reason)
{
	struct buf b;
	buf_init(&b);
	http_error_body(&b, status, reason);
	if (c && c->pending)
		c->close_after = true;
	respond_full(c, status, "text/html", &b, NULL, NULL);
}

/* A protocol error found while reading: answer and close. */
static void reject(struct http_conn *c, int status)
{
	if (c->closing || c->close_after)
		return;
	log_debug("http: %s: rejecting request: %d %s", c->req.peer, status, http_reason(status));
	c->in_request = false;
	c->close_after = true;
	c->rejected = true;
	struct buf b;
	buf_init(&b);
	http_error_body(&b, status, NULL);
	int vminor = (c->parser.http_major == 1 && c->parser.http_minor == 0) ? 0 : 1;
	http_build_head(&c->whead, vminor, status, "text/html", (int64_t)b.len, false, NULL, NULL);
	send_response(c, &b);
}

/* CORS preflight, answered here as the original does. */
static void respond_options(struct http_conn *c)
{
	const char *acrh = http_req_header(&c->req, "access-control-request-headers");
	char allow[512];
	if (acrh && *acrh) {
		size_t n = 0;
		for (const char *p = acrh; *p && n < sizeof allow - 32; p++)
			allow[n++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? ' ' : *p;
		snprintf(allow + n, sizeof allow - n, ", X-Requested-With");
	} else {
		snprintf(allow, sizeof allow, "X-Requested-With");
	}
	respond_full(c, 200, NULL, NULL, "Access-Control-Allow-Methods: GET, POST, PUT, OPTIONS\r\n",
		     allow);
}

/* ---- detaching -------------------------------------------------------- */

struct http_stream *http_detach(struct http_conn *c)
{
	/* Bytes still queued in libuv (a 100 Continue, TLS handshake records
	 * to a peer that does not read) would be lost with its handle. */
	if (!c || !c->pending || !c->streamed || c->closing || c->fake || c->writing ||
	    uv_stream_get_write_queue_size(&c->h.stream) > 0)
		return NULL;
	uv_os_fd_t fd;
	if (uv_fileno((uv_handle_t *)&c->h, &fd) < 0)
		return NULL;
	struct http_stream *st = calloc(1, sizeof *st);
	if (!st)
		return NULL;
	/* Our own descriptor: libuv closes its one with the handle, the socket
	 * (same open file) lives on — no FIN, no reset. */
	st->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (st->fd < 0) {
		free(st);
		return NULL;
	}
	if (c->transport == HT_TLS &&
	    http_tls_sess_detach(&c->tls, &st->ssl, &st->ct, &st->ct_len) < 0) {
		close(st->fd);
		free(st);
		return NULL;
	}
	st->conn = c; /* with the request's reference */
	st->pre = c->rbuf + c->ppos;
	st->pre_len = c->rlen - c->ppos;
	st->remaining = c->clen;
	st->vminor = c->req.version_minor;
	st->expect_continue = c->expect_continue;
	c->pending = false;
	struct http_server *s = c->srv;
	unsigned timeout_ms = s->cfg.stream_timeout_ms;
	conn_close(c);
	c->srv = NULL;
	srv_unref(s);
	int r = http_stream_setup(st, timeout_ms);
	if (r < 0)
		log_warn("http: %s: cannot set up a stream: %s", c->req.peer, strerror(-r));
	return st; /* a failed setup makes every call fail: the caller closes */
}

/* ---- closing ---------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
	struct http_conn *c = h->data;
	if (--c->open_handles == 0)
		conn_unref(c);
}

static void conn_close(struct http_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->reading = false;
	struct http_server *s = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else if (s->conns == c)
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
	s->nconns--;
	if (!c->fake)
		uv_close((uv_handle_t *)&c->h, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *sr, int status)
{
	struct http_conn *c = sr->data;
	if (status < 0 && !c->closing)
		conn_close(c);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* After a final response: shut our side, drain what the client still sends
 * for a moment, then close — closing with unread input would reset the
 * connection and could destroy the response before the client reads it. */
static void conn_linger(struct http_conn *c)
{
	if (c->closing)
		return;
	if (c->fake || c->peer_eof) {
		conn_close(c);
		return;
	}
	c->lingering = true;
	if (c->transport == HT_TLS) {
		http_tls_sess_shutdown(&c->tls);
		if (tls_flush(c, false) < 0)
			return;
	}
	c->shut.data = c;
	if (uv_shutdown(&c->shut, &c->h.stream, on_shutdown) < 0) {
		conn_close(c);
		return;
	}
	if (!c->reading) {
		if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0) {
			conn_close(c);
			return;
		}
		c->reading = true;
	}
	unsigned ms = c->srv->cfg.head_timeout_ms < LINGER_MS ? c->srv->cfg.head_timeout_ms : LINGER_MS;
	set_deadline(c, T_LINGER, ms);
}

static void response_done(struct http_conn *c)
{
	c->writing = false;
	if (c->closing)
		return;
	if (c->close_after) {
		conn_linger(c);
		return;
	}
	if (!c->in_process)
		conn_process(c);
}

static void on_timer(uv_timer_t *t)
{
	struct http_conn *c = t->data;
	if (c->closing || c->tkind == T_NONE)
		return;
	uint64_t now = uv_now(c->srv->loop);
	if (now < c->deadline) {
		uv_timer_start(&c->timer, on_timer, c->deadline - now, 0);
		return;
	}
	enum tkind k = c->tkind;
	c->tkind = T_NONE;
	if (k == T_HEAD && c->in_request && c->rlen > c->rpos) {
		log_debug("http: %s: request not complete in time", c->req.peer);
		reject(c, 408);
		return;
	}
	conn_close(c);
}

/* ---- parsing ---------------------------------------------------------- */

static inline struct http_conn *pconn(http_parser *p)
{
	return p->data;
}

static void note_end(struct http_conn *c, const char *at, size_t len)
{
	size_t end = (size_t)(at - c->rbuf) + len;
	if (end > c->head_end)
		c->head_end = end;
}

static int cb_url(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = pconn(p);
	size_t off = (size_t)(at - c->rbuf) - c->rpos;
	if (c->url_len == 0)
		c->url_off = (uint32_t)off;
	c->url_len = (uint32_t)(off + len - c->url_off);
	note_end(c, at, len);
	return 0;
}

static int cb_hfield(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = pconn(p);
	size_t off = (size_t)(at - c->rbuf) - c->rpos;
	/* A name arrives in pieces only when a read ends inside it; then the
	 * pieces touch.  (An empty value may produce no value callback, so
	 * "last callback was a name" alone does not mean a continuation.) */
	if (c->nh == 0 || c->last_was_value ||
	    c->hs[c->nh - 1].name_off + c->hs[c->nh - 1].name_len != off) {
		if (c->nh == HTTP_MAX_HEADERS) {
			c->hdr_overflow = true;
			c->err_status = 431;
			return -1;
		}
		struct hspan *h = &c->hs[c->nh++];
		h->name_off = (uint32_t)off;
		h->name_len = 0;
		h->has_val = false;
		h->val_len = 0;
		c->last_was_value = false;
	}
	struct hspan *h = &c->hs[c->nh - 1];
	h->name_len = (uint32_t)(off + len - h->name_off);
	note_end(c, at, len);
	return 0;
}

static int cb_hvalue(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = pconn(p);
	if (c->nh == 0)
		return 0;
	size_t off = (size_t)(at - c->rbuf) - c->rpos;
	struct hspan *h = &c->hs[c->nh - 1];
	if (!c->last_was_value || !h->has_val) {
		h->val_off = (uint32_t)off;
		h->has_val = true;
		c->last_was_value = true;
	}
	h->val_len = (uint32_t)(off + len - h->val_off);
	note_end(c, at, len);
	return 0;
}

/* Split the (terminated) URL into path and query, in place, once per
 * request; their offsets are kept since the buffer may move. */
static void split_url(struct http_conn *c)
{
	char *base = c->rbuf + c->rpos;
	char *url = base + c->url_off;
	char *path = url;
	char *query = NULL;
	/* absolute-form target: keep only the path */
	if (url[0] != '/' && !c->is_connect) {
		char *sl = strstr(url, "://");
		if (sl) {
			path = strchr(sl + 3, '/');
			if (!path) {
				char *q = strchr(sl + 3, '?');
				if (q) {
					*q = '\0';
					query = q + 1;
				}
			}
		}
	}
	char *q = path ? strchr(path, '?') : NULL;
	if (q) {
		*q = '\0';
		query = q + 1;
	}
	char *f = query ? strchr(query, '#') : NULL;
	if (f)
		*f = '\0';
	f = path ? strchr(path, '#') : NULL;
	if (f)
		*f = '\0';
	c->path_off = path ? (uint32_t)(path - base) : NO_OFF;
	c->query_off = query ? (uint32_t)(query - base) : NO_OFF;
}

/* Point the request's strings at the (already terminated) tokens. */
static void fill_req(struct http_conn *c)
{
	char *base = c->rbuf + c->rpos;
	struct http_req *r = &c->req;
	r->method = http_method_str((enum http_method)c->parser.method);
	r->version_minor = c->parser.http_major == 1 ? c->parser.http_minor : 0;
	r->nheaders = c->nh;
	for (int i = 0; i < c->nh; i++) {
		r->headers[i].name = base + c->hs[i].name_off;
		r->headers[i].value = c->hs[i].has_val ? base + c->hs[i].val_off : "";
	}
	r->path = c->path_off == NO_OFF ? "/" : base + c->path_off;
	r->query = c->query_off == NO_OFF ? "" : base + c->query_off;
	r->content_length = c->clen;
	r->streamed = c->streamed;
	r->body = "";
	r->body_len = 0;
	r->keep_alive = false;
}

static const char *hdr_get(struct http_conn *c, const char *name)
{
	char *base = c->rbuf + c->rpos;
	for (int i = 0; i < c->nh; i++)
		if (strcasecmp(base + c->hs[i].name_off, name) == 0)
			return c->hs[i].has_val ? base + c->hs[i].val_off : "";
	return NULL;
}

static int cb_headers_complete(http_parser *p)
{
	struct http_conn *c = pconn(p);
	struct http_server *s = c->srv;
	c->headers_done = true;
	if (c->head_end - c->rpos > s->cfg.max_head) {
		c->err_status = 431;
		return -1;
	}
	if (p->http_major != 1) {
		c->err_status = 505;
		return -1;
	}
	/* Terminate the tokens in place: the byte after each is a separator
	 * (' ', ':', CR or LF) the parser has consumed. */
	char *base = c->rbuf + c->rpos;
	base[c->url_off + c->url_len] = '\0';
	for (int i = 0; i < c->nh; i++) {
		struct hspan *h = &c->hs[i];
		base[h->name_off + h->name_len] = '\0';
		if (h->val_len == 0) /* its offset may be the next line's start */
			h->has_val = false;
		if (!h->has_val)
			continue;
		char *v = base + h->val_off;
		size_t n = h->val_len;
		for (size_t k = 0; k < n; k++) /* obsolete line folding */
			if (v[k] == '\r' || v[k] == '\n')
				v[k] = ' ';
		while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
			n--;
		while (n > 0 && (v[0] == ' ' || v[0] == '\t')) {
			v++;
			n--;
			h->val_off++;
		}
		base[h->val_off + n] = '\0';
		h->val_len = (uint32_t)n;
	}
	c->is_head = p->method == HTTP_HEAD;
	c->is_connect = p->method == HTTP_CONNECT;
	/* "We require a content-length": no chunked (or other) coding. */
	if (hdr_get(c, "transfer-encoding")) {
		c->err_status = 411;
		return -1;
	}
	bool has_len = hdr_get(c, "content-length") != NULL;
	if (has_len && p->content_length > INT64_MAX) {
		c->err_status = 400;
		return -1;
	}
	c->clen = has_len ? (int64_t)p->content_length : -1;
	split_url(c);
	const char *e = p->http_minor >= 1 ? hdr_get(c, "expect") : NULL;
	bool expect = e && strcasecmp(e, "100-continue") == 0;
	if (s->cfg.stream_body) {
		fill_req(c);
		if (s->cfg.stream_body(&c->req, s->opaque)) {
			/* The handler reads the body (the 100 Continue is its
			 * first read's); the parser stops after the head. */
			c->streamed = true;
			c->expect_continue = expect && c->clen != 0;
			return 1;
		}
	}
	if (!has_len && (p->method == HTTP_POST || p->method == HTTP_PUT)) {
		c->err_status = 411;
		return -1;
	}
	if (has_len && p->content_length > s->cfg.max_body) {
		c->err_status = 413;
		return -1;
	}
	if (expect && c->clen > 0)
		send_aux(c, "HTTP/1.1 100 Continue\r\n\r\n");
	return 0;
}

static int cb_body(http_parser *p, const char *at, size_t len)
{
	struct http_conn *c = pconn(p);
	size_t off = (size_t)(at - c->rbuf);
	if (c->body_len == 0)
		c->body_off = off;
	c->body_len = off + len - c->body_off;
	return 0;
}

static int cb_message_complete(http_parser *p)
{
	struct http_conn *c = pconn(p);
	c->msg_done = true;
	http_parser_pause(p, 1); /* stop at the end of this request */
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_url = cb_url,
	.on_header_field = cb_hfield,
	.on_header_value = cb_hvalue,
	.on_headers_complete = cb_headers_complete,
	.on_body = cb_body,
	.on_message_complete = cb_message_complete,
};

static void begin_request(struct http_conn *c)
{
	if (c->ppos > 0) { /* pipelined bytes move to the front */
		memmove(c->rbuf, c->rbuf + c->ppos, c->rlen - c->ppos);
		c->rlen -= c->ppos;
		c->ppos = 0;
	}
	c->rpos = 0;
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	c->in_request = true;
	c->headers_done = c->msg_done = c->last_was_value = c->hdr_overflow = false;
	c->is_head = c->is_connect = c->streamed = c->expect_continue = false;
	c->clen = -1;
	c->err_status = 0;
	c->nh = 0;
	c->url_off = c->url_len = 0;
	c->head_end = 0;
	c->body_off = c->body_len = 0;
}

static void deliver(struct http_conn *c)
{
	struct http_server *s = c->srv;
	c->in_request = false;
	fill_req(c);
	struct http_req *r = &c->req;
	if (c->body_len) {
		size_t end = c->body_off + c->body_len; /* <= rlen < rcap */
		c->saved_at = end;
		c->saved = c->rbuf[end];
		c->saved_valid = true;
		c->rbuf[end] = '\0';
		r->body = c->rbuf + c->body_off;
		r->body_len = c->body_len;
	} else {
		r->body = "";
		r->body_len = 0;
	}
	/* a streamed body is not ours to skip: that connection closes */
	r->keep_alive = http_should_keep_alive(&c->parser) && !c->is_connect && !c->streamed &&
			!s->stopping;
	c->pending = true;
	c->tkind = T_NONE; /* the handler may take as long as it needs */
	conn_ref(c);
	if (c->parser.method == HTTP_OPTIONS) {
		respond_options(c);
		return;
	}
	s->fn(c, r, s->opaque);
}

/* Reading goes on only while nothing is pending; the read is stopped lazily
 * here, at the end of processing, so a request answered at once costs no
 * epoll_ctl. */
static void update_io(struct http_conn *c)
{
	if (c->closing || c->lingering)
		return;
	bool want = !c->pending && !c->writing && !c->close_after && !c->peer_eof;
	if (want && !c->reading && !c->fake) {
		if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0) {
			conn_close(c);
			return;
		}
		c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
	}
	if (c->pending || c->writing || c->close_after)
		return;
	if (c->in_request) {
		if (c->tkind != T_HEAD)
			set_deadline(c, T_HEAD, c->srv->cfg.head_timeout_ms);
	} else if (c->tkind != T_IDLE) {
		set_deadline(c, T_IDLE, c->srv->cfg.idle_timeout_ms);
	}
}

static void conn_process(struct http_conn *c)
{
	if (c->in_process)
		return;
	c->in_process = true;
	conn_ref(c);
	struct http_server *s = c->srv;
	while (!c->closing && !c->close_after && !c->pending && !c->writing) {
		if (!c->in_request) {
			if (c->ppos == c->rlen) {
				c->rpos = c->ppos = c->rlen = 0;
				break;
			}
			begin_request(c);
		}
		if (c->ppos == c->rlen)
			break;
		size_t n = http_parser_execute(&c->parser, &parser_settings, c->rbuf + c->ppos,
					       c->rlen - c->ppos);
		c->ppos += n;
		enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
		if (c->msg_done) {
			if (e == HPE_PAUSED)
				http_parser_pause(&c->parser, 0);
			else if (e != HPE_OK) {
				reject(c, 400);
				break;
			}
			deliver(c);
			continue;
		}
		if (e != HPE_OK) {
			int st = c->err_status ? c->err_status : e == HPE_HEADER_OVERFLOW ? 431 : 400;
			if (c->err_status == 0)
				log_debug("http: %s: %s", c->req.peer, http_errno_description(e));
			reject(c, st);
			break;
		}
		if (!c->headers_done && c->ppos - c->rpos > s->cfg.max_head) {
			reject(c, 431);
			break;
		}
	}
	if (!c->closing && c->peer_eof && !c->pending && !c->writing && !c->close_after)
		conn_close(c); /* the client is gone and all it sent is answered */
	if (!c->closing && !c->in_request && !c->pending && !c->writing && c->rlen == 0 &&
	    c->rcap > READ_KEEP) {
		free(c->rbuf); /* a big request passed; do not keep its buffer */
		c->rbuf = NULL;
		c->rcap = 0;
	}
	update_io(c);
	c->in_process = false;
	conn_unref(c);
}

/* ---- reading ---------------------------------------------------------- */

static size_t conn_limit(const struct http_conn *c)
{
	return c->srv->cfg.max_head + c->srv->cfg.max_body + 2 * READ_CHUNK;
}

/* Make room for at least READ_CHUNK more bytes plus the spare byte.  false
 * if the buffer may not grow (never happens with a sane parser). */
static bool rbuf_room(struct http_conn *c)
{
	if (c->rcap - c->rlen >= READ_CHUNK + 1)
		return true;
	if (c->rlen - c->rpos > conn_limit(c))
		return false;
	size_t ncap = c->rcap ? c->rcap : READ_CHUNK;
	while (ncap - c->rlen < READ_CHUNK + 1)
		ncap *= 2;
	char *nb = realloc(c->rbuf, ncap);
	if (!nb)
		return false;
	c->rbuf = nb;
	c->rcap = ncap;
	return true;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct http_conn *c = h->data;
	if (c->lingering || c->transport == HT_TLS) {
		buf->base = c->srv->scratch;
		buf->len = sizeof c->srv->scratch;
		return;
	}
	if (!rbuf_room(c)) {
		buf->base = NULL;
		buf->len = 0; /* -> UV_ENOBUFS */
		return;
	}
	buf->base = c->rbuf + c->rlen;
	buf->len = c->rcap - c->rlen - 1;
}

static void conn_eof(struct http_conn *c)
{
	c->peer_eof = true;
	if (c->reading) {
		uv_read_stop(&c->h.stream);
		c->reading = false;
	}
	conn_process(c); /* answers complete requests, then closes */
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct http_conn *c = st->data;
	if (c->closing)
		return;
	if (nread == 0)
		return;
	if (c->lingering) {
		if (nread < 0)
			conn_close(c);
		return;
	}
	if (nread < 0) {
		if (nread != UV_EOF)
			log_debug("http: %s: read: %s", c->req.peer, uv_strerror((int)nread));
		if (nread == UV_EOF) {
			conn_eof(c);
			return;
		}
		conn_close(c);
		return;
	}
	if (c->transport == HT_TLS) {
		int r = http_tls_sess_input(&c->tls, buf->base, (size_t)nread, &c->rbuf, &c->rlen,
					    &c->rcap, c->rpos + conn_limit(c));
		if (tls_flush(c, false) < 0)
			return;
		if (r < 0) {
			/* close_notify or a TLS error: like EOF, answer complete
			 * requests already decrypted (their replies then fail on a
			 * broken session and close), drop a partial one */
			conn_eof(c);
			return;
		}
	} else {
		c->rlen += (size_t)nread;
	}
	conn_process(c);
}

/* ---- accepting -------------------------------------------------------- */

static struct http_conn *conn_new(struct http_server *s, enum http_transport t, bool fake)
{
	struct http_conn *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->srv = s;
	s->refs++;
	c->refs = 1;
	c->transport = t;
	c->fake = fake;
	c->req.transport = t;
	snprintf(c->req.peer, sizeof c->req.peer, "%s", t == HT_UNIX ? "unix" : "?");
	buf_init(&c->whead);
	buf_init(&c->wbody);
	buf_init(&c->tout);
	uv_timer_init(s->loop, &c->timer);
	c->timer.data = c;
	c->open_handles = 1;
	if (!fake) {
		if (t == HT_UNIX)
			uv_pipe_init(s->loop, &c->h.pipe, 0);
		else
			uv_tcp_init(s->loop, &c->h.tcp);
		c->h.stream.data = c;
		c->open_handles = 2;
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	return c;
}

static void format_peer(struct http_conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof ss;
	if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) != 0)
		return;
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		uv_ip4_name(a, ip, sizeof ip);
		port = ntohs(a->sin_port);
		snprintf(c->req.peer, sizeof c->req.peer, "%s:%d", ip, port);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		uv_ip6_name(a, ip, sizeof ip);
		port = ntohs(a->sin6_port);
		if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.'))
			snprintf(c->req.peer, sizeof c->req.peer, "%s:%d", ip + 7, port);
		else
			snprintf(c->req.peer, sizeof c->req.peer, "[%s]:%d", ip, port);
	}
}

static void on_connection(uv_stream_t *ls, int status)
{
	struct http_server *s = ls->data;
	if (status < 0) {
		log_warn("http: accept: %s", uv_strerror(status));
		return;
	}
	enum http_transport t = ls == (uv_stream_t *)&s->tls ? HT_TLS
				: ls == (uv_stream_t *)&s->unix_ ? HT_UNIX : HT_TCP;
	struct http_conn *c = conn_new(s, t, false);
	if (!c)
		return;
	int r = uv_accept(ls, &c->h.stream);
	if (r < 0) {
		log_warn("http: accept: %s", uv_strerror(r));
		conn_close(c);
		return;
	}
	if (t != HT_UNIX) {
		uv_tcp_nodelay(&c->h.tcp, 1);
		format_peer(c);
	}
	if (s->stopping) {
		conn_close(c);
		return;
	}
	if (s->nconns > s->cfg.max_conns) {
		log_warn("http: %s: too many connections (%d), closing", c->req.peer, s->cfg.max_conns);
		conn_close(c);
		return;
	}
	if (t == HT_TLS && http_tls_sess_init(&c->tls, s->ssl_ctx) < 0) {
		log_warn("http: %s: cannot start a TLS session", c->req.peer);
		conn_close(c);
		return;
	}
	set_deadline(c, T_HEAD, s->cfg.head_timeout_ms);
	update_io(c);
}

/* ---- the server ------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
	return s && *s ? strdup(s) : NULL;
}

struct http_server *http_server_new(uv_loop_t *loop, const struct http_config *cfg,
				    http_handler_fn fn, void *opaque)
{
	struct http_server *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->loop = loop;
	s->fn = fn;
	s->opaque = opaque;
	s->refs = 1;
	if (cfg)
		s->cfg = *cfg;
	s->cfg.bind_addr = dup_or_null(s->cfg.bind_addr);
	s->cfg.unix_path = dup_or_null(s->cfg.unix_path);
	s->cfg.cert_file = dup_or_null(s->cfg.cert_file);
	s->cfg.key_file = dup_or_null(s->cfg.key_file);
	if (!s->cfg.max_head)
		s->cfg.max_head = DEF_MAX_HEAD;
	if (s->cfg.max_head > UINT32_MAX / 2)
		s->cfg.max_head = UINT32_MAX / 2;
	if (!s->cfg.max_body)
		s->cfg.max_body = DEF_MAX_BODY;
	if (!s->cfg.head_timeout_ms)
		s->cfg.head_timeout_ms = DEF_HEAD_TIMEOUT;
	if (!s->cfg.idle_timeout_ms)
		s->cfg.idle_timeout_ms = DEF_IDLE_TIMEOUT;
	if (s->cfg.max_conns <= 0)
		s->cfg.max_conns = DEF_MAX_CONNS;
	if (!s->cfg.stream_timeout_ms)
		s->cfg.stream_timeout_ms = DEF_STREAM_TIMEOUT;
	if (!s->cfg.unix_mode)
		s->cfg.unix_mode = 0600;
	return s;
}

static void on_listener_closed(uv_handle_t *h)
{
	srv_unref(h->data);
}

static bool have_ipv6(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static int listen_tcp(struct http_server *s, uv_tcp_t *h, bool *on, int port, int *actual,
		      const char *what)
{
	const char *addr = s->cfg.bind_addr;
	if (!addr)
		addr = have_ipv6() ? "::" : "0.0.0.0";
	if (port < 0)
		port = 0;
	struct sockaddr_storage ss;
	int r;
	if (uv_ip4_addr(addr, port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&ss) != 0) {
		log_err("http: %s: bad bind address '%s' (a numeric IPv4/IPv6 address)", what, addr);
		return -EINVAL;
	}
	uv_tcp_init(s->loop, h);
	h->data = s;
	s->refs++;
	*on = true;
	/* libuv sets SO_REUSEADDR on bind. */
	r = uv_tcp_bind(h, (struct sockaddr *)&ss, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)h, 511, on_connection);
	if (r < 0) {
		log_err("http: %s: cannot listen on %s port %d: %s", what, addr, port, uv_strerror(r));
		return r;
	}
	int len = sizeof ss;
	if (uv_tcp_getsockname(h, (struct sockaddr *)&ss, &len) == 0)
		*actual = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							 : ((struct sockaddr_in *)&ss)->sin_port);
	log_info("http: %s listening on %s port %d", what, addr, *actual);
	return 0;
}

static int listen_unix(struct http_server *s)
{
	const char *path = s->cfg.unix_path;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path) {
		log_err("http: unix socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_err("http: %s exists and is not a socket", path);
			return -EEXIST;
		}
		unlink(path); /* stale socket from an earlier run */
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* On Linux the socket inode's mode becomes the file's mode at bind:
	 * the file never exists with wider permissions. */
	fchmod(fd, s->cfg.unix_mode & 0777);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = -errno;
		log_err("http: cannot bind %s: %s", path, strerror(-e));
		close(fd);
		return e;
	}
	s->unix_bound = true;
	chmod(path, s->cfg.unix_mode & 07777); /* exactly, whatever the umask */
	uv_pipe_init(s->loop, &s->unix_, 0);
	s->unix_.data = s;
	s->refs++;
	s->unix_on = true;
	int r = uv_pipe_open(&s->unix_, fd);
	if (r < 0) {
		close(fd);
		return r;
	}
	r = uv_listen((uv_stream_t *)&s->unix_, 511, on_connection);
	if (r < 0) {
		log_err("http: cannot listen on %s: %s", path, uv_strerror(r));
		return r;
	}
	log_info("http: listening on unix socket %s", path);
	return 0;
}

int http_server_start(struct http_server *s)
{
	int r = 0;
	if (s->cfg.http_port != 0) {
		r = listen_tcp(s, &s->tcp, &s->tcp_on, s->cfg.http_port, &s->tcp_port, "http");
		if (r < 0)
			goto fail;
	}
	if (s->cfg.https_port != 0) {
		char host[256] = "localhost";
		if (gethostname(host, sizeof host) != 0)
			snprintf(host, sizeof host, "localhost");
		host[sizeof host - 1] = '\0';
		r = http_tls_ensure_cert(s->cfg.cert_file, s->cfg.key_file, host);
		if (r < 0) {
			log_err("http: certificate %s: %s", s->cfg.cert_file ? s->cfg.cert_file : "(none)",
				strerror(-r));
			goto fail;
		}
		s->ssl_ctx = http_tls_ctx_new(s->cfg.cert_file, s->cfg.key_file);
		if (!s->ssl_ctx) {
			r = -EINVAL;
			goto fail;
		}
		r = listen_tcp(s, &s->tls, &s->tls_on, s->cfg.https_port, &s->tls_port, "https");
		if (r < 0)
			goto fail;
	}
	if (s->cfg.unix_path) {
		r = listen_unix(s);
		if (r < 0)
			goto fail;
	}
	return 0;
fail:
	http_server_stop(s);
	s->stopping = false;
	return r;
}

int http_server_port(const struct http_server *s, enum http_transport t)
{
	switch (t) {
	case HT_TCP: return s->tcp_port;
	case HT_TLS: return s->tls_port;
	default: return 0;
	}
}

void http_server_stop(struct http_server *s)
{
	if (!s)
		return;
	s->stopping = true;
	if (s->tcp_on) {
		uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
		s->tcp_on = false;
	}
	if (s->tls_on) {
		uv_close((uv_handle_t *)&s->tls, on_listener_closed);
		s->tls_on = false;
	}
	if (s->unix_on) {
		uv_close((uv_handle_t *)&s->unix_, on_listener_closed);
		s->unix_on = false;
	}
	if (s->unix_bound) {
		unlink(s->cfg.unix_path);
		s->unix_bound = false;
	}
	while (s->conns)
		conn_close(s->conns);
}

void http_server_free(struct http_server *s)
{
	if (!s)
		return;
	http_server_stop(s);
	srv_unref(s);
}

/* ---- parsing without sockets (fuzzing, tests) ------------------------- */

struct fuzz_state {
	int delivered;
	struct http_conn *held;
};

static bool fuzz_stream(const struct http_req *req, void *opaque)
{
	(void)opaque;
	return req->path[0] == '/' && req->path[1] == 's';
}

static void fuzz_handler(struct http_conn *c, struct http_req *req, void *opaque)
{
	struct fuzz_state *fs = opaque;
	fs->delivered++;
	if (req->streamed) { /* no socket to detach: answered, and closes */
		assert(!http_detach(c) && req->body_len == 0);
		http_respond_error(c, 404, req->path);
		return;
	}
	char out[256];
	/* exercise the helpers on what the parser produced */
	(void)http_req_header(req, "content-type");
	(void)http_query_get(req->query, "session_id", out, sizeof out);
	(void)http_query_get(req->query, "a", out, 4);
	size_t n = strlen(req->path) + strlen(req->method);
	for (int i = 0; i < req->nheaders; i++)
		n += strlen(req->headers[i].name) + strlen(req->headers[i].value);
	assert(req->body[req->body_len] == '\0');
	struct buf b;
	buf_init(&b);
	buf_add(&b, req->body, req->body_len);
	buf_printf(&b, "%zu", n);
	if (fs->delivered % 3 == 0) {
		fs->held = c; /* answer later, as a worker would */
		buf_free(&b);
		return;
	}
	if (fs->delivered % 5 == 0) {
		buf_free(&b);
		http_respond_error(c, 500, req->path);
	} else
		http_respond(c, 200, "text/plain", &b, "X-Test: 1\r\n");
}

int http_fuzz_feed(const uint8_t *data, size_t len)
{
	static uv_loop_t loop;
	static bool init;
	if (!init) {
		uv_loop_init(&loop);
		init = true;
	}
	struct fuzz_state fs = { 0 };
	struct http_config cfg = { .max_head = 2048, .max_body = 8192, .stream_body = fuzz_stream };
	struct http_server *s = http_server_new(&loop, &cfg, fuzz_handler, &fs);
	struct http_conn *c = conn_new(s, HT_TCP, true);
	conn_ref(c); /* keep it to look at after it closes */
	set_deadline(c, T_HEAD, s->cfg.head_timeout_ms);
	size_t pos = 0;
	unsigned seed = len ? data[0] : 0;
	while (pos < len && !c->closing) {
		if (fs.held) {
			struct buf b;
			buf_init(&b);
			buf_adds(&b, "later");
			struct http_conn *h = fs.held;
			fs.held = NULL;
			http_respond(h, 200, "text/plain", &b, NULL);
			continue;
		}
		if (c->closing || c->pending || c->writing || c->close_after)
			break;
		seed = seed * 1103515245u + 12345u;
		size_t chunk = 1 + (seed >> 16) % 97;
		if (chunk > len - pos)
			chunk = len - pos;
		if (!rbuf_room(c))
			break;
		size_t room = c->rcap - c->rlen - 1;
		if (chunk > room)
			chunk = room;
		memcpy(c->rbuf + c->rlen, data + pos, chunk);
		c->rlen += chunk;
		pos += chunk;
		conn_process(c);
	}
	if (fs.held) {
		struct http_conn *h = fs.held;
		fs.held = NULL;
		if (!c->closing && (seed & 1))
			conn_eof(c); /* the client goes while the handler works */
		http_respond(h, 204, NULL, NULL, NULL);
	}
	if (!c->closing)
		conn_eof(c);
	while (fs.held) { /* the EOF let pipelined requests through */
		struct http_conn *h = fs.held;
		fs.held = NULL;
		http_respond(h, 200, NULL, NULL, NULL);
	}
	bool errored = c->rejected;
	conn_unref(c);
	http_server_free(s);
	uv_run(&loop, UV_RUN_NOWAIT); /* close callbacks free everything */
	return errored ? -1 : fs.delivered;
}
