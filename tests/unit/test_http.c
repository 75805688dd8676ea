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

static void echo_handler(struct http_conn *c, struct http_req *req, void *opaque)
{
	atomic_fetch_add(&handler_calls, 1);
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
	uv_async_send(&stop_async);
	pthread_join(loop_thread, NULL);
	if (pending_fd >= 0)
		close(pending_fd);
	assert_int_equal(uv_loop_close(&loop), 0); /* every handle closed */
	unlink(cert_path);
	unlink(key_path);
	unlink(sock_path);
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
		cmocka_unit_test(test_pending_at_stop),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
