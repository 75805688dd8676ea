/* test_http.c — the HTTP server over real sockets: a loop thread runs the
 * server with an echoing handler; the tests talk to it with blocking
 * sockets (and the OpenSSL client API for TLS). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "http/http.h"
#include "http/http_internal.h"
#include "base/buf.h"

/* ---- the server under test ------------------------------------------- */

static uv_loop_t loop;
static uv_async_t stop_async;
static pthread_t loop_thread;
static struct http_server *srv, *srv2; /* srv2: small limits */
static int port, tls_port, port2;
static int pending_fd = -1; /* a request left with the handler at stop */
static char tmpdir[256], sock_path[300], cert_path[300], key_path[300];
static atomic_int handler_calls;

struct delayed {
	uv_timer_t t;
	struct http_conn *c;
	char *text;
};

static void delayed_fire(uv_timer_t *t)
{
	struct delayed *d = (struct delayed *)t;
	struct buf b;
	buf_init(&b);
	buf_adds(&b, d->text);
	http_respond(d->c, 200, "text/plain", &b, NULL); /* the conn may be dead */
	free(d->text);
	uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

/* ---- streamed requests: handled on threads of their own --------------- */

static char big_path[300]; /* a file /stream/file sends from */

/* A checksum of a byte stream, the same however it is cut: 64-bit words
 * (little-endian) mixed in, a partial word carried between pieces. */
struct sum {
	uint64_t h, w, n;
};

static void sum_add(struct sum *s, const void *p, size_t len)
{
	const unsigned char *b = p;
	while (len > 0 && s->n % 8 != 0) {
		s->w |= (uint64_t)*b++ << (8 * (s->n % 8));
		len--;
		if (++s->n % 8 == 0) {
			s->h = (s->h ^ s->w) * 0x100000001b3ull;
			s->w = 0;
		}
	}
	for (; len >= 8; len -= 8, b += 8) {
		uint64_t w;
		memcpy(&w, b, 8);
		s->h = (s->h ^ w) * 0x100000001b3ull;
		s->n += 8;
	}
	while (len-- > 0)
		s->w |= (uint64_t)*b++ << (8 * (s->n++ % 8));
}

static uint64_t sum_end(const struct sum *s)
{
	return (s->h ^ s->w) * 0x100000001b3ull + s->n;
}

/* What the last stream thread did, for tests whose client is gone. */
static pthread_mutex_t st_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t st_cv = PTHREAD_COND_INITIALIZER;
static int st_done, st_live;
static char st_last[160];

/* Once no stream thread runs: how many have ended. */
static int stream_mark(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 20;
	pthread_mutex_lock(&st_mu);
	while (st_live > 0 && pthread_cond_timedwait(&st_cv, &st_mu, &ts) == 0)
		;
	int n = st_done;
	pthread_mutex_unlock(&st_mu);
	return n;
}

/* Wait for the stream thread that ends after mark; its record. */
static const char *stream_wait(int mark)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 20;
	pthread_mutex_lock(&st_mu);
	while (st_done <= mark && pthread_cond_timedwait(&st_cv, &st_mu, &ts) == 0)
		;
	bool ok = st_done > mark;
	pthread_mutex_unlock(&st_mu);
	if (!ok)
		return "(no stream ended)";
	print_message("stream: %s\n", st_last);
	return st_last;
}

struct stream_job {
	struct http_stream *st;
	struct http_req *req;
};

static void *stream_main(void *arg)
{
	struct stream_job *job = arg;
	struct http_stream *st = job->st;
	struct http_req *req = job->req;
	char rec[160], v[64];
	int64_t n = 0;
	ssize_t r = 0;
	if (strcmp(req->path, "/stream/echo") == 0 || strcmp(req->path, "/stream/stall") == 0) {
		if (strcmp(req->path, "/stream/stall") == 0)
			http_stream_set_timeout(st, 300);
		size_t bl = 1 << 20;
		char *b = malloc(bl);
		struct sum sm = { 0 };
		while ((r = http_stream_read(st, b, bl)) > 0) {
			sum_add(&sm, b, (size_t)r);
			n += r;
		}
		free(b);
		snprintf(rec, sizeof rec, "n=%lld end=%d sum=%016llx", (long long)n, (int)r,
			 (unsigned long long)sum_end(&sm));
		if (r == 0 && http_stream_respond_head(st, 200, "text/plain", (int64_t)strlen(rec),
						       "X-Stream: yes\r\n") == 0)
			r = http_stream_write(st, rec, strlen(rec));
		size_t l = strlen(rec);
		snprintf(rec + l, sizeof rec - l, " reply=%d", (int)r);
	} else if (strcmp(req->path, "/stream/file") == 0) {
		n = http_query_get(req->query, "n", v, sizeof v) > 0 ? atoll(v) : 0;
		int fd = open(big_path, O_RDONLY);
		int rc = http_stream_respond_head(st, 200, "application/octet-stream", n, NULL);
		if (rc == 0)
			rc = http_stream_sendfile(st, fd, 0, (size_t)n);
		close(fd);
		snprintf(rec, sizeof rec, "sent n=%lld rc=%d", (long long)n, rc);
	} else if (strcmp(req->path, "/stream/write") == 0) {
		/* no Content-Length: the body ends with the connection */
		int rc = http_stream_respond_head(st, 200, NULL, -1, NULL);
		for (int i = 0; i < 3 && rc == 0; i++)
			rc = http_stream_write(st, "chunk;", 6);
		snprintf(rec, sizeof rec, "wrote rc=%d fd=%d", rc, http_stream_fd(st) >= 0);
	} else {
		http_stream_respond_error(st, 404, req->path);
		snprintf(rec, sizeof rec, "404");
	}
	http_stream_close(st); /* req is gone now */
	free(job);
	pthread_mutex_lock(&st_mu);
	snprintf(st_last, sizeof st_last, "%s", rec);
	st_done++;
	st_live--;
	pthread_cond_broadcast(&st_cv);
	pthread_mutex_unlock(&st_mu);
	return NULL;
}

static bool stream_pick(const struct http_req *req, void *opaque)
{
	(void)opaque;
	return strncmp(req->path, "/stream/", 8) == 0;
}

static void stream_handler(struct http_conn *c, struct http_req *req)
{
	if (strcmp(req->path, "/stream/deny") == 0) { /* answered without detaching */
		http_respond_error(c, 403, "not you");
		return;
	}
	struct stream_job *job = calloc(1, sizeof *job);
	job->req = req;
	job->st = http_detach(c);
	if (!job->st) {
		free(job);
		http_respond_error(c, 503, "cannot detach");
		return;
	}
	pthread_mutex_lock(&st_mu);
	st_live++;
	pthread_mutex_unlock(&st_mu);
	pthread_t t;
	pthread_create(&t, NULL, stream_main, job);
	pthread_detach(t);
}

static void echo_handler(struct http_conn *c, struct http_req *req, void *opaque)
{
	atomic_fetch_add(&handler_calls, 1);
	if (req->streamed) {
		stream_handler(c, req);
		return;
	}
	struct buf b;
	buf_init(&b);
	char v[64];
	if (strcmp(req->path, "/delay") == 0) {
		int ms = http_query_get(req->query, "ms", v, sizeof v) > 0 ? atoi(v) : 10;
		struct delayed *d = calloc(1, sizeof *d);
		d->c = c;
		buf_printf(&b, "delayed %s", req->query);
		d->text = buf_steal(&b);
		uv_timer_init(&loop, &d->t);
		uv_timer_start(&d->t, delayed_fire, (uint64_t)ms, 0);
		return;
	}
	if (strcmp(req->path, "/error") == 0) {
		http_respond_error(c, 500, "it <broke>");
		return;
	}
	if (strcmp(req->path, "/big") == 0) {
		int n = http_query_get(req->query, "n", v, sizeof v) > 0 ? atoi(v) : 0;
		buf_reserve(&b, (size_t)n);
		for (int i = 0; i < n; i++)
			b.p[i] = (char)('a' + i % 26);
		b.len = (size_t)n;
		http_respond(c, 200, "application/octet-stream", &b, NULL);
		return;
	}
	const char *foo = http_req_header(req, "x-foo");
	buf_printf(&b, "%s %s ?%s v1.%d ka=%d t=%d foo=%s body[%zu]=", req->method, req->path,
		   req->query, req->version_minor, req->keep_alive, (int)req->transport,
		   foo ? foo : "-", req->body_len);
	buf_add(&b, req->body, req->body_len);
	http_respond(c, 200, "application/json", &b, "X-Echo: yes\r\n");
}

static void on_stop(uv_async_t *a)
{
	http_server_free(srv);
	http_server_free(srv2);
	srv = srv2 = NULL;
	uv_close((uv_handle_t *)a, NULL);
	/* the loop ends when delayed replies still due have gone out */
}

static void *loop_main(void *arg)
{
	(void)arg;
	uv_run(&loop, UV_RUN_DEFAULT);
	return NULL;
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/test_http.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(sock_path, sizeof sock_path, "%s/xapi.sock", tmpdir);
	snprintf(cert_path, sizeof cert_path, "%s/cert.pem", tmpdir);
	snprintf(key_path, sizeof key_path, "%s/key.pem", tmpdir);
	snprintf(big_path, sizeof big_path, "%s/big", tmpdir);
	/* a stale socket file from "an earlier run" must not stop us */
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strcpy(sa.sun_path, sock_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		return -1;
	close(fd);

	uv_loop_init(&loop);
	struct http_config cfg = {
		.bind_addr = "127.0.0.1",
		.http_port = -1,
		.https_port = -1,
		.unix_path = sock_path,
		.cert_file = cert_path,
		.key_file = key_path,
		.max_head = 4096,
		.max_body = 65536,
		.head_timeout_ms = 400,
		.idle_timeout_ms = 3000,
		.stream_body = stream_pick,
		.stream_timeout_ms = 5000,
	};
	srv = http_server_new(&loop, &cfg, echo_handler, NULL);
	if (!srv || http_server_start(srv) != 0)
		return -1;
	port = http_server_port(srv, HT_TCP);
	tls_port = http_server_port(srv, HT_TLS);
	if (port <= 0 || tls_port <= 0)
		return -1;
	struct http_config cfg2 = {
		.bind_addr = "127.0.0.1",
		.http_port = -1,
		.max_conns = 2,
		.idle_timeout_ms = 300,
	};
	srv2 = http_server_new(&loop, &cfg2, echo_handler, NULL);
	if (!srv2 || http_server_start(srv2) != 0)
		return -1;
	port2 = http_server_port(srv2, HT_TCP);
	uv_async_init(&loop, &stop_async, on_stop);
	pthread_create(&loop_thread, NULL, loop_main, NULL);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	stream_mark(); /* stream threads end */
	uv_async_send(&stop_async);
	pthread_join(loop_thread, NULL);
	if (pending_fd >= 0)
		close(pending_fd);
	assert_int_equal(uv_loop_close(&loop), 0); /* every handle closed */
	unlink(cert_path);
	unlink(key_path);
	unlink(sock_path);
	unlink(big_path);
	rmdir(tmpdir);
	return 0;
}

/* ---- client helpers --------------------------------------------------- */

static void set_timeout(int fd, int ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int tcp_connect_rcvbuf(int p, int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	if (rcvbuf) /* small: the server's writes then go async */
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)p) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	set_timeout(fd, 5000);
	return fd;
}

static int tcp_connect(int p)
{
	return tcp_connect_rcvbuf(p, 0);
}

static void send_str(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
		assert_true(w > 0);
		s += w;
		n -= (size_t)w;
	}
}

/* A reader over a plain fd or an SSL session. */
struct conn {
	int fd;
	SSL *ssl;
	char buf[1 << 24];
	size_t len;
};

static ssize_t conn_recv(struct conn *c, char *p, size_t n)
{
	if (c->ssl) {
		int r = SSL_read(c->ssl, p, (int)n);
		return r > 0 ? r : 0;
	}
	ssize_t r = recv(c->fd, p, n, 0);
	return r;
}

struct resp {
	int status;
	char head[4096];
	char *body;
	size_t body_len;
};

/* Read one response; returns false on EOF/timeout before a full one. */
static bool read_resp(struct conn *c, struct resp *r)
{
	char *end;
	for (;;) {
		c->buf[c->len] = '\0';
		end = strstr(c->buf, "\r\n\r\n");
		if (end)
			break;
		ssize_t n = conn_recv(c, c->buf + c->len, sizeof c->buf - 1 - c->len);
		if (n <= 0)
			return false;
		c->len += (size_t)n;
	}
	size_t hl = (size_t)(end - c->buf) + 4;
	assert_true(hl < sizeof r->head);
	memcpy(r->head, c->buf, hl);
	r->head[hl] = '\0';
	r->status = atoi(r->head + 9);
	char *cl = strcasestr(r->head, "\r\ncontent-length:");
	assert_non_null(cl);
	size_t blen = strtoul(cl + 17, NULL, 10);
	bool head_req = r->body_len == (size_t)-1;
	if (head_req)
		blen = 0;
	while (c->len < hl + blen) {
		ssize_t n = conn_recv(c, c->buf + c->len, sizeof c->buf - 1 - c->len);
		if (n <= 0)
			return false;
		c->len += (size_t)n;
	}
	free(r->body);
	r->body = malloc(blen + 1);
	memcpy(r->body, c->buf + hl, blen);
	r->body[blen] = '\0';
	r->body_len = blen;
	memmove(c->buf, c->buf + hl + blen, c->len - hl - blen);
	c->len -= hl + blen;
	return true;
}

static bool at_eof(struct conn *c)
{
	char x;
	if (c->len)
		return false;
	return conn_recv(c, &x, 1) == 0;
}

static struct conn *conn_tcp(void)
{
	struct conn *c = calloc(1, sizeof *c);
	c->fd = tcp_connect(port);
	return c;
}

static void conn_free(struct conn *c)
{
	if (c->ssl)
		SSL_free(c->ssl);
	close(c->fd);
	free(c);
}

static void resp_clear(struct resp *r)
{
	free(r->body);
	memset(r, 0, sizeof *r);
}

static bool has_header(const struct resp *r, const char *line)
{
	return strcasestr(r->head, line) != NULL;
}

/* ---- tests ------------------------------------------------------------ */

static void test_keepalive(void **state)
{
	(void)state;
	struct conn *c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "GET /one?x=1 HTTP/1.1\r\nHost: a\r\nX-Foo:  bar  \r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.head, "HTTP/1.1 200 OK\r\n"));
	assert_true(has_header(&r, "\r\ncontent-type: application/json\r\n"));
	assert_true(has_header(&r, "\r\nconnection: keep-alive\r\n"));
	assert_true(has_header(&r, "\r\nAccess-Control-Allow-Origin: *\r\n"));
	assert_true(has_header(&r, "\r\nAccess-Control-Allow-Headers: X-Requested-With\r\n"));
	assert_true(has_header(&r, "\r\ncache-control: no-cache, no-store\r\n"));
	assert_true(has_header(&r, "\r\nX-Echo: yes\r\n"));
	assert_string_equal(r.body, "GET /one ?x=1 v1.1 ka=1 t=0 foo=bar body[0]=");
	send_str(c->fd, "POST /two HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "POST /two ? v1.1 ka=1 t=0 foo=- body[5]=hello");
	resp_clear(&r);
	conn_free(c);
}

static void test_pipelining(void **state)
{
	(void)state;
	struct conn *c = conn_tcp();
	struct resp r = { 0 };
	/* the first is answered late; the others must wait their turn */
	send_str(c->fd, "GET /delay?ms=150 HTTP/1.1\r\n\r\n"
			"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
			"GET /delay?ms=1 HTTP/1.1\r\n\r\n"
			"GET /c HTTP/1.1\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "delayed ms=150");
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "POST /b ? v1.1 ka=1 t=0 foo=- body[3]=xyz");
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "delayed ms=1");
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "GET /c ? v1.1 ka=1 t=0 foo=- body[0]=");
	resp_clear(&r);
	conn_free(c);
}

static void test_pipelining_bytewise(void **state)
{
	(void)state;
	/* the same stream, one byte per packet */
	const char *req = "POST /p HTTP/1.1\r\nContent-Length: 2\r\nX-Foo: z\r\n\r\nab"
			  "GET /q?k=v HTTP/1.1\r\n\r\n";
	struct conn *c = conn_tcp();
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	for (const char *p = req; *p; p++) {
		char s[2] = { *p, 0 };
		send_str(c->fd, s);
		if ((p - req) % 7 == 0)
			usleep(1000);
	}
	struct resp r = { 0 };
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "POST /p ? v1.1 ka=1 t=0 foo=z body[2]=ab");
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "GET /q ?k=v v1.1 ka=1 t=0 foo=- body[0]=");
	resp_clear(&r);
	conn_free(c);
}

static void test_http10_close(void **state)
{
	(void)state;
	struct conn *c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "GET /old HTTP/1.0\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_non_null(strstr(r.head, "HTTP/1.0 200 OK\r\n"));
	assert_true(has_header(&r, "\r\nconnection: close\r\n"));
	assert_string_equal(r.body, "GET /old ? v1.0 ka=0 t=0 foo=- body[0]=");
	assert_true(at_eof(c));
	conn_free(c);

	c = conn_tcp();
	send_str(c->fd, "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_non_null(strstr(r.head, "HTTP/1.1 200 OK\r\n"));
	assert_true(has_header(&r, "\r\nconnection: close\r\n"));
	assert_true(at_eof(c));
	conn_free(c);

	/* 1.0 with keep-alive asked for stays open */
	c = conn_tcp();
	send_str(c->fd, "GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_true(has_header(&r, "\r\nconnection: keep-alive\r\n"));
	send_str(c->fd, "GET /k2 HTTP/1.0\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_true(has_header(&r, "\r\nconnection: close\r\n"));
	assert_true(at_eof(c));
	resp_clear(&r);
	conn_free(c);
}

static void expect_reject(const char *req, int status)
{
	struct conn *c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, req);
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, status);
	assert_true(has_header(&r, "\r\nconnection: close\r\n"));
	assert_true(has_header(&r, "\r\ncontent-type: text/html\r\n"));
	assert_true(at_eof(c));
	resp_clear(&r);
	conn_free(c);
}

static void test_411(void **state)
{
	(void)state;
	int before = atomic_load(&handler_calls);
	expect_reject("POST / HTTP/1.1\r\nHost: x\r\n\r\n", 411);
	expect_reject("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411);
	assert_int_equal(atomic_load(&handler_calls), before);
}

static void test_413(void **state)
{
	(void)state;
	expect_reject("POST / HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n", 413);
	/* with a body already streaming in: the reply still arrives */
	struct conn *c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "POST / HTTP/1.1\r\nContent-Length: 200000\r\n\r\n");
	char chunk[8192];
	memset(chunk, 'x', sizeof chunk);
	for (int i = 0; i < 8; i++)
		send(c->fd, chunk, sizeof chunk, MSG_NOSIGNAL);
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 413);
	resp_clear(&r);
	conn_free(c);
}

static void test_431(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 100; i++)
		buf_printf(&b, "X-Header-%d: %060d\r\n", i, i);
	buf_adds(&b, "\r\n");
	expect_reject(b.p, 431);
	buf_free(&b);
	/* too many headers, each small */
	buf_init(&b);
	buf_adds(&b, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < HTTP_MAX_HEADERS + 1; i++)
		buf_printf(&b, "h%d: v\r\n", i);
	buf_adds(&b, "\r\n");
	expect_reject(b.p, 431);
	buf_free(&b);
	/* a huge URL counts too */
	buf_init(&b);
	buf_adds(&b, "GET /");
	for (int i = 0; i < 5000; i++)
		buf_addc(&b, 'a');
	buf_adds(&b, " HTTP/1.1\r\n\r\n");
	expect_reject(b.p, 431);
	buf_free(&b);
}

static void test_400(void **state)
{
	(void)state;
	expect_reject("this is not http\r\n\r\n", 400);
	expect_reject("GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400);
	expect_reject("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400);
	expect_reject("GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400);
	expect_reject("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400); /* TLS on plain */
}

static void test_408(void **state)
{
	(void)state;
	struct conn *c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "GET / HTTP/1.1\r\nHost: slo");
	assert_true(read_resp(c, &r)); /* head_timeout is 400 ms */
	assert_int_equal(r.status, 408);
	assert_true(at_eof(c));
	conn_free(c);
	/* head done, body too slow */
	c = conn_tcp();
	send_str(c->fd, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 408);
	conn_free(c);
	/* a connection that sends nothing is closed silently */
	c = conn_tcp();
	assert_true(at_eof(c));
	resp_clear(&r);
	conn_free(c);
}

static void test_vanish(void **state)
{
	(void)state;
	/* mid-head, mid-body, while the handler works, mid-response */
	struct conn *c = conn_tcp();
	send_str(c->fd, "GET / HTTP/1.1\r\nHo");
	conn_free(c);
	c = conn_tcp();
	send_str(c->fd, "POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n0123456789");
	conn_free(c);
	c = conn_tcp();
	send_str(c->fd, "GET /delay?ms=100 HTTP/1.1\r\n\r\n");
	usleep(20000);
	conn_free(c);
	c = conn_tcp();
	send_str(c->fd, "GET /big?n=1000000 HTTP/1.1\r\n\r\n");
	char x[100];
	assert_true(recv(c->fd, x, sizeof x, 0) > 0);
	conn_free(c);
	usleep(200000); /* the delayed reply goes to a dead connection */
	/* the server still serves */
	c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "GET /after HTTP/1.1\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	resp_clear(&r);
	conn_free(c);
}

static void test_big_response(void **state)
{
	(void)state;
	struct conn *c = calloc(1, sizeof *c);
	c->fd = tcp_connect_rcvbuf(port, 4096);
	struct resp r = { 0 };
	send_str(c->fd, "GET /big?n=8000000 HTTP/1.1\r\n\r\nGET /big?n=3 HTTP/1.1\r\n\r\n");
	usleep(100000); /* let the server's socket buffer fill: async write */
	assert_true(read_resp(c, &r));
	assert_int_equal(r.body_len, 8000000);
	assert_int_equal(r.body[7999999], 'a' + 7999999 % 26);
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "abc");
	resp_clear(&r);
	conn_free(c);
}

static void test_error_and_head(void **state)
{
	(void)state;
	struct conn *c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "GET /error HTTP/1.1\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 500);
	assert_non_null(strstr(r.head, "HTTP/1.1 500 Internal Error\r\n"));
	assert_non_null(strstr(r.body, "it &lt;broke&gt;"));
	assert_true(has_header(&r, "\r\nconnection: close\r\n"));
	assert_true(at_eof(c));
	conn_free(c);

	c = conn_tcp();
	send_str(c->fd, "HEAD /h HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\n");
	r.body_len = (size_t)-1; /* no body follows */
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 0);
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "GET /g ? v1.1 ka=1 t=0 foo=- body[0]=");
	resp_clear(&r);
	conn_free(c);
}

static void test_expect_continue(void **state)
{
	(void)state;
	struct conn *c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "POST /e HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
	char buf[64] = { 0 };
	ssize_t n = recv(c->fd, buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
	send_str(c->fd, "data");
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "POST /e ? v1.1 ka=1 t=0 foo=- body[4]=data");
	resp_clear(&r);
	conn_free(c);
}

static void test_options(void **state)
{
	(void)state;
	int before = atomic_load(&handler_calls);
	struct conn *c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "OPTIONS /jsonrpc HTTP/1.1\r\nOrigin: http://x\r\n"
			"Access-Control-Request-Method: POST\r\n"
			"Access-Control-Request-Headers: content-type\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 0);
	assert_true(has_header(&r, "\r\nAccess-Control-Allow-Origin: *\r\n"));
	assert_true(has_header(&r, "\r\nAccess-Control-Allow-Headers: content-type, X-Requested-With\r\n"));
	assert_true(has_header(&r, "\r\nconnection: keep-alive\r\n"));
	assert_int_equal(atomic_load(&handler_calls), before);
	resp_clear(&r);
	conn_free(c);
}

static void test_unix(void **state)
{
	(void)state;
	struct stat st;
	assert_int_equal(stat(sock_path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	struct conn *c = calloc(1, sizeof *c);
	c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strcpy(sa.sun_path, sock_path);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
	set_timeout(c->fd, 5000);
	struct resp r = { 0 };
	send_str(c->fd, "POST /u HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /v HTTP/1.1\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "POST /u ? v1.1 ka=1 t=2 foo=- body[2]=hi");
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "GET /v ? v1.1 ka=1 t=2 foo=- body[0]=");
	resp_clear(&r);
	conn_free(c);
}

static struct conn *conn_tls_rcvbuf(int rcvbuf)
{
	static SSL_CTX *ctx;
	if (!ctx) {
		ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_load_verify_locations(ctx, cert_path, NULL);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	struct conn *c = calloc(1, sizeof *c);
	c->fd = tcp_connect_rcvbuf(tls_port, rcvbuf);
	c->ssl = SSL_new(ctx);
	SSL_set_fd(c->ssl, c->fd);
	SSL_set1_host(c->ssl, "127.0.0.1"); /* the SAN has IP:127.0.0.1 */
	int r = SSL_connect(c->ssl);
	if (r != 1)
		ERR_print_errors_fp(stderr);
	assert_int_equal(r, 1);
	assert_int_equal(SSL_get_verify_result(c->ssl), X509_V_OK);
	return c;
}

static struct conn *conn_tls(void)
{
	return conn_tls_rcvbuf(0);
}

static void ssl_send(struct conn *c, const char *s)
{
	assert_int_equal(SSL_write(c->ssl, s, (int)strlen(s)), (int)strlen(s));
}

static void test_tls(void **state)
{
	(void)state;
	struct stat st;
	assert_int_equal(stat(key_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	struct conn *c = conn_tls();
	struct resp r = { 0 };
	ssl_send(c, "GET /s?a=b HTTP/1.1\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "GET /s ?a=b v1.1 ka=1 t=1 foo=- body[0]=");
	ssl_send(c, "POST /t HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /big?n=700000 HTTP/1.1\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "POST /t ? v1.1 ka=1 t=1 foo=- body[3]=abc");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.body_len, 700000);
	ssl_send(c, "GET /bye HTTP/1.1\r\nConnection: close\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_true(has_header(&r, "\r\nconnection: close\r\n"));
	assert_true(at_eof(c));
	resp_clear(&r);
	conn_free(c);

	/* a slow reader: the ciphertext is written in pieces, in order */
	c = conn_tls_rcvbuf(4096);
	ssl_send(c, "GET /big?n=8000000 HTTP/1.1\r\n\r\nGET /big?n=5 HTTP/1.1\r\n\r\n");
	usleep(100000);
	assert_true(read_resp(c, &r));
	assert_int_equal(r.body_len, 8000000);
	assert_int_equal(r.body[7999999], 'a' + 7999999 % 26);
	assert_true(read_resp(c, &r));
	assert_string_equal(r.body, "abcde");
	conn_free(c);

	/* a TLS client that goes away mid-request, and plain HTTP on TLS */
	c = conn_tls();
	ssl_send(c, "POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\nabc");
	conn_free(c);
	c = calloc(1, sizeof *c);
	c->fd = tcp_connect(tls_port);
	send_str(c->fd, "GET / HTTP/1.1\r\n\r\n");
	assert_true(at_eof(c));
	conn_free(c);
	/* the server still serves TLS */
	c = conn_tls();
	ssl_send(c, "GET /again HTTP/1.1\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	resp_clear(&r);
	conn_free(c);
}

static void test_query(void **state)
{
	(void)state;
	char out[32];
	assert_int_equal(http_query_get("a=1&b=two&c", "b", out, sizeof out), 3);
	assert_string_equal(out, "two");
	assert_int_equal(http_query_get("a=1&b=two&c", "c", out, sizeof out), 0);
	assert_string_equal(out, "");
	assert_int_equal(http_query_get("a=1&b=two", "d", out, sizeof out), -1);
	assert_int_equal(http_query_get("", "a", out, sizeof out), -1);
	assert_int_equal(http_query_get("x=a%20b+c%2Bd%zz%4", "x", out, sizeof out), 12);
	assert_string_equal(out, "a b c+d%zz%4");
	assert_int_equal(http_query_get("s%5Fid=OpaqueRef%3A12", "s_id", out, sizeof out), 12);
	assert_string_equal(out, "OpaqueRef:12");
	assert_int_equal(http_query_get("ab=1&a=2", "a", out, sizeof out), 1);
	assert_string_equal(out, "2");
	assert_int_equal(http_query_get("a=123456", "a", out, 4), -2);
	assert_int_equal(http_query_get("a=123", "a", out, 4), 3);
	assert_int_equal(http_query_get("=x&&a=%00z", "a", out, sizeof out), 2);
	assert_int_equal(out[0], 0);
	assert_int_equal(out[1], 'z');
}

static void test_feed(void **state)
{
	(void)state;
	const char *two = "GET /a HTTP/1.1\r\n\r\nPOST /b?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
	assert_int_equal(http_fuzz_feed((const uint8_t *)two, strlen(two)), 2);
	const char *six = "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"
			  "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
	/* the fifth is answered with an error page, which closes */
	assert_int_equal(http_fuzz_feed((const uint8_t *)six, strlen(six)), 5);
	/* a streamed request answered without a detach: it closes */
	const char *st = "GET /a HTTP/1.1\r\n\r\nPUT /s HTTP/1.1\r\nContent-Length: 99\r\n\r\nGET /b "
			 "HTTP/1.1\r\n\r\n";
	assert_int_equal(http_fuzz_feed((const uint8_t *)st, strlen(st)), 2);
	const char *bad = "GET / HTTP/1.1\r\n\r\nBLAH\r\n\r\n";
	assert_int_equal(http_fuzz_feed((const uint8_t *)bad, strlen(bad)), -1);
	assert_int_equal(http_fuzz_feed((const uint8_t *)"", 0), 0);
}

static void test_cert_made(void **state)
{
	(void)state;
	char c2[320], k2[320];
	snprintf(c2, sizeof c2, "%s/one.pem", tmpdir);
	assert_int_equal(http_tls_ensure_cert(c2, NULL, "host.example"), 0);
	struct stat st;
	assert_int_equal(stat(c2, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	SSL_CTX *ctx = http_tls_ctx_new(c2, NULL);
	assert_non_null(ctx);
	X509 *x = SSL_CTX_get0_certificate(ctx);
	assert_int_equal(X509_check_host(x, "host.example", 0, 0, NULL), 1);
	assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
	SSL_CTX_free(ctx);
	/* existing files are left alone */
	struct stat st2;
	assert_int_equal(http_tls_ensure_cert(c2, NULL, "other"), 0);
	assert_int_equal(stat(c2, &st2), 0);
	assert_int_equal(st.st_ino, st2.st_ino);
	unlink(c2);
	snprintf(k2, sizeof k2, "%s/nodir/key.pem", tmpdir);
	assert_true(http_tls_ensure_cert(c2, k2, "h") < 0);
}

static void test_max_conns_idle(void **state)
{
	(void)state;
	struct conn *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b), *c = calloc(1, sizeof *c);
	struct resp r = { 0 };
	a->fd = tcp_connect(port2);
	b->fd = tcp_connect(port2);
	send_str(a->fd, "GET /a HTTP/1.1\r\n\r\n");
	assert_true(read_resp(a, &r));
	send_str(b->fd, "GET /b HTTP/1.1\r\n\r\n");
	assert_true(read_resp(b, &r));
	c->fd = tcp_connect(port2); /* the third is accepted and closed */
	assert_true(at_eof(c));
	conn_free(c);
	/* idle keep-alive connections close after idle_timeout_ms (300) */
	usleep(600000);
	assert_true(at_eof(a));
	assert_true(at_eof(b));
	conn_free(a);
	conn_free(b);
	c = calloc(1, sizeof *c);
	c->fd = tcp_connect(port2);
	send_str(c->fd, "GET /c HTTP/1.1\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	resp_clear(&r);
	conn_free(c);
}

/* ---- streams ---------------------------------------------------------- */

static void conn_send(struct conn *c, const void *p, size_t n)
{
	if (c->ssl) {
		size_t put = 0;
		assert_int_equal(SSL_write_ex(c->ssl, p, n, &put), 1);
		assert_int_equal(put, n);
	} else {
		const char *q = p;
		while (n) {
			ssize_t w = send(c->fd, q, n, MSG_NOSIGNAL);
			assert_true(w > 0);
			q += w;
			n -= (size_t)w;
		}
	}
}

static char *pattern(size_t n)
{
	char *b = malloc(n);
	for (size_t i = 0; i < n; i++)
		b[i] = (char)(i * 7 + i / 4093);
	return b;
}

static void expect_echo_reply(struct conn *c, size_t n, const char *body, size_t body_len)
{
	struct sum sm = { 0 };
	sum_add(&sm, body, body_len);
	char want[128];
	snprintf(want, sizeof want, "n=%zu end=0 sum=%016llx", n, (unsigned long long)sum_end(&sm));
	struct resp r = { 0 };
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.head, "HTTP/1.1 200 OK\r\n"));
	assert_true(has_header(&r, "\r\nconnection: close\r\n"));
	assert_true(has_header(&r, "\r\nAccess-Control-Allow-Origin: *\r\n"));
	assert_true(has_header(&r, "\r\ncache-control: no-cache, no-store\r\n"));
	assert_true(has_header(&r, "\r\nX-Stream: yes\r\n"));
	assert_string_equal(r.body, want);
	assert_true(at_eof(c));
	resp_clear(&r);
}

/* A body of exactly Content-Length: the first bytes in the head's packet
 * (read by the server before the detach), the rest in pieces, then bytes
 * of a next request that must not be taken as body. */
static void stream_echo_on(struct conn *c, size_t total, size_t first)
{
	char *body = pattern(total);
	struct buf b;
	buf_init(&b);
	buf_printf(&b, "PUT /stream/echo?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
		   total);
	buf_add(&b, body, first);
	conn_send(c, b.p, b.len);
	for (size_t off = first; off < total; off += 65536)
		conn_send(c, body + off, total - off < 65536 ? total - off : 65536);
	const char *next = "GET /next HTTP/1.1\r\n\r\n";
	conn_send(c, next, strlen(next));
	expect_echo_reply(c, total, body, total);
	buf_free(&b);
	free(body);
}

static struct conn *conn_unix(void)
{
	struct conn *c = calloc(1, sizeof *c);
	c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strcpy(sa.sun_path, sock_path);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
	set_timeout(c->fd, 5000);
	return c;
}

static struct conn *conn_tls(void);

static void test_stream_echo(void **state)
{
	(void)state;
	struct conn *c = conn_tcp();
	stream_echo_on(c, 3000000, 1000);
	conn_free(c);
	c = conn_unix();
	stream_echo_on(c, 1000001, 0);
	conn_free(c);
	c = conn_tls();
	stream_echo_on(c, 2000003, 5000);
	conn_free(c);
	c = conn_tcp(); /* a body that came whole with the head */
	stream_echo_on(c, 3, 3);
	conn_free(c);
	c = conn_tcp(); /* no body at all */
	send_str(c->fd, "GET /stream/echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	expect_echo_reply(c, 0, "", 0);
	conn_free(c);
}

static void test_stream_expect(void **state)
{
	(void)state;
	/* 100 Continue comes with the handler's first read */
	struct conn *c = conn_tcp();
	send_str(c->fd, "PUT /stream/echo HTTP/1.1\r\nContent-Length: 5\r\n"
			"Expect: 100-continue\r\n\r\n");
	char buf[64] = { 0 };
	assert_int_equal(recv(c->fd, buf, 25, MSG_WAITALL), 25);
	assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
	send_str(c->fd, "hello");
	expect_echo_reply(c, 5, "hello", 5);
	conn_free(c);
	/* a streamed request answered without detaching: no 100, the
	 * connection closes, the body is never read */
	int before = stream_mark();
	c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "PUT /stream/deny HTTP/1.1\r\nContent-Length: 100000000\r\n"
			"Expect: 100-continue\r\n\r\nsome");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 403);
	assert_true(has_header(&r, "\r\nconnection: close\r\n"));
	assert_true(at_eof(c));
	assert_int_equal(stream_mark(), before);
	resp_clear(&r);
	conn_free(c);
	/* chunked request bodies are refused as for any request */
	expect_reject("PUT /stream/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411);
}

/* Clients that close: the body is cut short, or of unknown length (Xen
 * Orchestra sends Content-Length: 1 PiB and closes after the data). */
static void test_stream_eof(void **state)
{
	(void)state;
	/* cut short: the reader sees the end after the 10 bytes */
	int mark = stream_mark();
	struct conn *c = conn_tcp();
	send_str(c->fd, "PUT /stream/echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n0123456789");
	conn_free(c);
	assert_non_null(strstr(stream_wait(mark), "n=10 end=0 "));
	mark = stream_mark();
	c = conn_tls();
	ssl_send(c, "PUT /stream/echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n0123456789");
	shutdown(c->fd, SHUT_WR); /* a FIN, no close_notify (closing with the
				   * unread session tickets would send a reset) */
	assert_non_null(strstr(stream_wait(mark), "n=10 end=0 "));
	conn_free(c);

	/* 1 PiB announced, 1 MiB sent, then our side closed: a full answer */
	const size_t n = 1 << 20;
	char *body = pattern(n);
	const char *head = "PUT /stream/echo HTTP/1.1\r\nContent-Length: 1125899906842624\r\n\r\n";
	c = conn_tcp();
	send_str(c->fd, head);
	conn_send(c, body, n);
	shutdown(c->fd, SHUT_WR);
	expect_echo_reply(c, n, body, n);
	conn_free(c);
	/* a little, then close_notify at once (maybe read with the head) */
	c = conn_tls();
	ssl_send(c, "PUT /stream/echo HTTP/1.1\r\nContent-Length: 1125899906842624\r\n\r\nabc");
	assert_true(SSL_shutdown(c->ssl) >= 0);
	expect_echo_reply(c, 3, "abc", 3);
	conn_free(c);
	/* the same over TLS, ended with a close_notify */
	c = conn_tls();
	ssl_send(c, head);
	conn_send(c, body, n);
	assert_true(SSL_shutdown(c->ssl) >= 0);
	expect_echo_reply(c, n, body, n);
	conn_free(c);
	free(body);

	/* no Content-Length in the response: the body ends at the close */
	c = conn_tcp();
	send_str(c->fd, "GET /stream/write HTTP/1.1\r\n\r\n");
	size_t len = 0;
	ssize_t k;
	while ((k = recv(c->fd, c->buf + len, 4096, 0)) > 0)
		len += (size_t)k;
	c->buf[len] = '\0';
	assert_non_null(strstr(c->buf, "HTTP/1.1 200 OK\r\n"));
	assert_null(strcasestr(c->buf, "content-length"));
	assert_non_null(strstr(c->buf, "\r\nconnection: close\r\n"));
	assert_non_null(strstr(c->buf, "\r\n\r\nchunk;chunk;chunk;"));
	assert_int_equal(strlen(strstr(c->buf, "\r\n\r\n")), 4 + 18);
	conn_free(c);
}

/* A client that stalls: the reader times out, and the loop serves others
 * meanwhile. */
static void test_stream_stall(void **state)
{
	(void)state;
	int mark = stream_mark();
	struct conn *c = conn_tcp();
	send_str(c->fd, "PUT /stream/stall HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789");
	struct conn *d = conn_tcp();
	struct resp r = { 0 };
	send_str(d->fd, "GET /meanwhile HTTP/1.1\r\n\r\n");
	assert_true(read_resp(d, &r));
	assert_int_equal(r.status, 200);
	conn_free(d);
	char want[32];
	snprintf(want, sizeof want, "n=10 end=%d ", -ETIMEDOUT);
	assert_non_null(strstr(stream_wait(mark), want));
	assert_true(at_eof(c));
	resp_clear(&r);
	conn_free(c);
}

/* 1 GiB (sparse, with data at both ends and in the middle) for /stream/file */
static void make_big(void)
{
	static bool made;
	if (made)
		return;
	int fd = open(big_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	assert_true(fd >= 0);
	char *p = pattern(1 << 20);
	const off_t at[] = { 0, 512ll << 20, (1ll << 30) - (1 << 20) };
	for (int i = 0; i < 3; i++)
		assert_int_equal(pwrite(fd, p, 1 << 20, at[i]), 1 << 20);
	close(fd);
	free(p);
	made = true;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* curl as the real client: a 1 GiB export by sendfile checked byte for byte,
 * the same over TLS and the Unix socket (smaller), a 1 GiB import. */
static void test_stream_curl(void **state)
{
	(void)state;
	make_big();
	const size_t g = 1u << 30, m = 64u << 20;
	double t = now_s();
	assert_int_equal(run("curl -sS --max-time 60 'http://127.0.0.1:%d/stream/file?n=%zu' | cmp - %s",
			     port, g, big_path), 0);
	double t2 = now_s();
	assert_int_equal(run("curl -sS --max-time 60 -o /dev/null 'http://127.0.0.1:%d/stream/file?n=%zu'",
			     port, g), 0);
	double t3 = now_s();
	print_message("export 1 GiB: %.0f MB/s into cmp, %.0f MB/s into /dev/null\n",
		      g / 1e6 / (t2 - t), g / 1e6 / (t3 - t2));
	assert_int_equal(run("curl -sS -k --max-time 60 'https://127.0.0.1:%d/stream/file?n=%zu' | cmp -n %zu - %s",
			     tls_port, m, m, big_path), 0);
	assert_int_equal(run("curl -sS --max-time 60 --unix-socket %s 'http://x/stream/file?n=%zu' | cmp -n %zu - %s",
			     sock_path, m, m, big_path), 0);

	/* import: curl -T sends Content-Length and Expect: 100-continue */
	int fd = open(big_path, O_RDONLY);
	struct sum sm = { 0 };
	char *b = malloc(1 << 20);
	ssize_t k;
	while ((k = read(fd, b, 1 << 20)) > 0)
		sum_add(&sm, b, (size_t)k);
	close(fd);
	free(b);
	char out[320];
	snprintf(out, sizeof out, "%s.out", big_path);
	t = now_s();
	assert_int_equal(run("curl -sS --max-time 60 -T %s -o %s 'http://127.0.0.1:%d/stream/echo'",
			     big_path, out, port), 0);
	t2 = now_s();
	print_message("import 1 GiB: %.0f MB/s\n", g / 1e6 / (t2 - t));
	FILE *f = fopen(out, "r");
	assert_non_null(f);
	char got[128] = { 0 }, want[128];
	assert_non_null(fgets(got, sizeof got, f));
	fclose(f);
	unlink(out);
	snprintf(want, sizeof want, "n=%zu end=0 sum=%016llx", g, (unsigned long long)sum_end(&sm));
	assert_string_equal(got, want);
}

/* Clients that vanish mid-stream: errors, never a crash or SIGPIPE (this
 * process does not ignore SIGPIPE). */
static void test_stream_vanish(void **state)
{
	(void)state;
	make_big();
	int mark = stream_mark();
	struct conn *c = calloc(1, sizeof *c);
	c->fd = tcp_connect_rcvbuf(port, 4096);
	send_str(c->fd, "GET /stream/file?n=268435456 HTTP/1.1\r\n\r\n");
	char x[100];
	assert_true(recv(c->fd, x, sizeof x, 0) > 0);
	struct linger lg = { .l_onoff = 1, .l_linger = 0 }; /* reset */
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	conn_free(c);
	const char *rec = stream_wait(mark);
	assert_non_null(strstr(rec, "sent n=268435456 rc=-"));

	/* over TLS */
	mark = stream_mark();
	c = conn_tls_rcvbuf(4096);
	ssl_send(c, "GET /stream/file?n=268435456 HTTP/1.1\r\n\r\n");
	assert_true(SSL_read(c->ssl, x, sizeof x) > 0);
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	conn_free(c);
	rec = stream_wait(mark);
	assert_non_null(strstr(rec, "sent n=268435456 rc=-"));

	/* mid-upload, with a reset */
	mark = stream_mark();
	c = conn_tcp();
	send_str(c->fd, "PUT /stream/echo HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n");
	char *body = pattern(100000);
	conn_send(c, body, 100000);
	free(body);
	usleep(20000);
	setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	conn_free(c);
	rec = stream_wait(mark);
	assert_true(strstr(rec, "n=100000 end=0 ") || strstr(rec, " end=-104 "));

	/* the server still serves */
	c = conn_tcp();
	struct resp r = { 0 };
	send_str(c->fd, "GET /after HTTP/1.1\r\n\r\n");
	assert_true(read_resp(c, &r));
	assert_int_equal(r.status, 200);
	resp_clear(&r);
	conn_free(c);
}

/* Last: leave a request with the handler; the server is stopped and freed
 * before the handler answers (see group_teardown and ASan). */
static void test_pending_at_stop(void **state)
{
	(void)state;
	pending_fd = tcp_connect(port);
	send_str(pending_fd, "GET /delay?ms=300 HTTP/1.1\r\n\r\n");
	usleep(50000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_feed),
		cmocka_unit_test(test_cert_made),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_pipelining),
		cmocka_unit_test(test_pipelining_bytewise),
		cmocka_unit_test(test_http10_close),
		cmocka_unit_test(test_411),
		cmocka_unit_test(test_413),
		cmocka_unit_test(test_431),
		cmocka_unit_test(test_400),
		cmocka_unit_test(test_408),
		cmocka_unit_test(test_vanish),
		cmocka_unit_test(test_big_response),
		cmocka_unit_test(test_error_and_head),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_options),
		cmocka_unit_test(test_unix),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_max_conns_idle),
		cmocka_unit_test(test_stream_echo),
		cmocka_unit_test(test_stream_expect),
		cmocka_unit_test(test_stream_eof),
		cmocka_unit_test(test_stream_stall),
		cmocka_unit_test(test_stream_vanish),
		cmocka_unit_test(test_stream_curl),
		cmocka_unit_test(test_pending_at_stop),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
