/* stream.c — a connection detached from the server (http_detach): blocking
 * reads and writes of a streamed request's body and response, on the
 * caller's thread (see http.h and docs/http.md).
 *
 * The socket is made blocking with SO_RCVTIMEO/SO_SNDTIMEO as the inactivity
 * timeout, so each call is one system call per buffer in the common case.
 * Body bytes the server had already read come first.  For TLS the SSL object
 * keeps its session and switches from the server's memory BIOs to a small
 * BIO of our own over the socket: it serves the ciphertext the server had
 * received but the SSL object had not consumed, then reads the socket; it
 * writes with MSG_NOSIGNAL and records the socket's errno, so a failed
 * SSL_read/SSL_write says why.
 */
#include "http/http.h"
#include "http/http_internal.h"
#include "base/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#define IOBUF_SIZE (256 * 1024)    /* TLS sendfile staging */
#define TLS_READ_BUF (256 * 1024)  /* SSL read-ahead buffer */
#define SENDFILE_MAX (1u << 30)
#define CLOSE_DRAIN_MS 2000        /* see http_stream_close */
#define CLOSE_DRAIN_MAX (16u << 20)

/* A socket call's errno as our error: a timed-out blocking call reports
 * EAGAIN. */
static int sock_err(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
}

/* ---- the socket ------------------------------------------------------- */

static ssize_t sock_recv(struct http_stream *s, void *buf, size_t len)
{
	for (;;) {
		ssize_t r = recv(s->fd, buf, len, 0);
		if (r > 0)
			return r;
		if (r == 0) {
			s->sock_eof = true;
			return 0;
		}
		if (errno != EINTR)
			return s->io_err = sock_err();
	}
}

/* Some bytes (a partial send only when interrupted). */
static ssize_t sock_send(struct http_stream *s, const void *buf, size_t len)
{
	for (;;) {
		ssize_t r = send(s->fd, buf, len, MSG_NOSIGNAL);
		if (r >= 0)
			return r;
		if (errno != EINTR)
			return s->io_err = sock_err();
	}
}

/* ---- the TLS BIO ------------------------------------------------------ */

static int sbio_read(BIO *b, char *out, size_t n, size_t *got)
{
	struct http_stream *s = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	*got = 0;
	if (s->ct_off < s->ct_len) {
		size_t k = s->ct_len - s->ct_off;
		if (k > n)
			k = n;
		memcpy(out, s->ct + s->ct_off, k);
		s->ct_off += k;
		*got = k;
		return 1;
	}
	ssize_t r = sock_recv(s, out, n);
	if (r <= 0)
		return 0; /* EOF, or an error in s->io_err: no retry either way */
	*got = (size_t)r;
	return 1;
}

static int sbio_write(BIO *b, const char *in, size_t n, size_t *put)
{
	struct http_stream *s = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	ssize_t r = sock_send(s, in, n);
	if (r < 0) {
		*put = 0;
		return 0;
	}
	*put = (size_t)r;
	return 1;
}

static long sbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)num;
	(void)ptr;
	struct http_stream *s = BIO_get_data(b);
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_EOF:
		return s && s->sock_eof;
	default:
		return 0;
	}
}

static BIO_METHOD *sbio_method;
static pthread_once_t sbio_once = PTHREAD_ONCE_INIT;

static void sbio_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "http stream");
	if (m && BIO_meth_set_read_ex(m, sbio_read) && BIO_meth_set_write_ex(m, sbio_write) &&
	    BIO_meth_set_ctrl(m, sbio_ctrl))
		sbio_method = m;
	else
		BIO_meth_free(m);
}

/* An SSL call failed: our error for it, and whether the session is dead. */
static int ssl_fail(struct http_stream *s, int r)
{
	int e = SSL_get_error(s->ssl, r);
	ERR_clear_error();
	if (e == SSL_ERROR_ZERO_RETURN) /* close_notify: a clean end */
		return 0;
	s->failed = true;
	if (s->io_err)
		return s->io_err;
	return s->sock_eof ? -ECONNRESET : -EPROTO;
}

/* ---- setting up ------------------------------------------------------- */

void http_stream_set_timeout(struct http_stream *s, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int http_stream_setup(struct http_stream *s, unsigned timeout_ms)
{
	int fl = fcntl(s->fd, F_GETFL);
	if (fl < 0 || fcntl(s->fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		goto fail;
	http_stream_set_timeout(s, timeout_ms);
	if (s->ssl) {
		pthread_once(&sbio_once, sbio_init);
		BIO *b = sbio_method ? BIO_new(sbio_method) : NULL;
		if (!b) {
			errno = ENOMEM;
			goto fail;
		}
		BIO_set_data(b, s);
		BIO_set_init(b, 1);
		SSL_set_bio(s->ssl, b, b); /* frees the memory BIOs */
		/* Big reads: read ahead into a large buffer that is kept. */
		SSL_clear_mode(s->ssl, SSL_MODE_RELEASE_BUFFERS);
		SSL_set_default_read_buffer_len(s->ssl, TLS_READ_BUF);
		SSL_set_read_ahead(s->ssl, 1);
	}
	return 0;
fail:
	s->io_err = -errno;
	s->failed = true;
	return s->io_err;
}

int http_stream_fd(const struct http_stream *s)
{
	return s->fd;
}

/* ---- writing ---------------------------------------------------------- */

int http_stream_write(struct http_stream *s, const void *buf, size_t len)
{
	if (s->failed)
		return s->io_err ? s->io_err : -EIO;
	const char *p = buf;
	while (len > 0) {
		if (s->ssl) {
			size_t put = 0;
			int r = SSL_write_ex(s->ssl, p, len, &put);
			if (r <= 0) {
				int e = ssl_fail(s, r);
				return e < 0 ? e : -EPIPE; /* close_notify: no more writing */
			}
			p += put;
			len -= put;
		} else {
			ssize_t r = sock_send(s, p, len);
			if (r < 0)
				return (int)r;
			p += r;
			len -= (size_t)r;
		}
	}
	return 0;
}

int http_stream_respond_head(struct http_stream *s, int status, const char *content_type,
			     int64_t content_length, const char *extra_headers)
{
	struct buf h;
	buf_init(&h);
	http_build_head(&h, s->vminor, status, content_type, content_length, false, extra_headers,
			NULL);
	s->head_sent = true;
	s->expect_continue = false;
	int r = http_stream_write(s, h.p, h.len);
	buf_free(&h);
	return r;
}

int http_stream_respond_error(struct http_stream *s, int status, const char *reason)
{
	struct buf b;
	buf_init(&b);
	http_error_body(&b, status, reason);
	int r = http_stream_respond_head(s, status, "text/html", (int64_t)b.len, NULL);
	if (r == 0)
		r = http_stream_write(s, b.p, b.len);
	buf_free(&b);
	return r;
}

/* sendfile(2) has no MSG_NOSIGNAL: SIGPIPE is blocked on this thread around
 * it, and one raised meanwhile is taken off again. */
static int sendfile_plain(struct http_stream *s, int fd, uint64_t off, size_t len)
{
	sigset_t pipe_set, old;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	int rc = 0;
	while (len > 0) {
		off_t o = (off_t)off;
		ssize_t n = sendfile(s->fd, fd, &o, len > SENDFILE_MAX ? SENDFILE_MAX : len);
		if (n > 0) {
			off += (uint64_t)n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0) {
			rc = -EIO; /* the file is shorter */
			break;
		}
		if (errno == EINTR)
			continue;
		rc = sock_err();
		break;
	}
	if (rc == -EPIPE) {
		struct timespec zero = { 0, 0 };
		sigtimedwait(&pipe_set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

int http_stream_sendfile(struct http_stream *s, int fd, uint64_t off, size_t len)
{
	if (s->failed)
		return s->io_err ? s->io_err : -EIO;
	if (!s->ssl)
		return sendfile_plain(s, fd, off, len);
	if (!s->iobuf && !(s->iobuf = malloc(IOBUF_SIZE)))
		return -ENOMEM;
	while (len > 0) {
		ssize_t n = pread(fd, s->iobuf, len > IOBUF_SIZE ? IOBUF_SIZE : len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		int r = http_stream_write(s, s->iobuf, (size_t)n);
		if (r < 0)
			return r;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- reading ---------------------------------------------------------- */

ssize_t http_stream_read(struct http_stream *s, void *buf, size_t len)
{
	if (s->failed)
		return s->io_err ? s->io_err : -EIO;
	if (s->remaining == 0 || len == 0)
		return 0;
	if (s->remaining > 0 && (uint64_t)s->remaining < len)
		len = (size_t)s->remaining;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	ssize_t n;
	if (s->pre_len > 0) {
		s->expect_continue = false; /* the body is on its way already */
		n = (ssize_t)(s->pre_len < len ? s->pre_len : len);
		memcpy(buf, s->pre, (size_t)n);
		s->pre += n;
		s->pre_len -= (size_t)n;
	} else {
		if (s->expect_continue) {
			s->expect_continue = false;
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			int r = http_stream_write(s, cont, sizeof cont - 1);
			if (r < 0)
				return r;
		}
		if (s->ssl) {
			size_t got = 0;
			int r = SSL_read_ex(s->ssl, buf, len > INT_MAX ? INT_MAX : len, &got);
			if (r <= 0) {
				int e = ssl_fail(s, r);
				/* the peer closed without close_notify: the
				 * body ends there, as on a plain socket */
				return s->sock_eof && !s->io_err ? 0 : e;
			}
			n = (ssize_t)got;
		} else {
			n = sock_recv(s, buf, len);
			if (n <= 0)
				return n;
		}
	}
	if (s->remaining > 0)
		s->remaining -= n;
	return n;
}

/* ---- closing ---------------------------------------------------------- */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void http_stream_close(struct http_stream *s)
{
	if (!s)
		return;
	if (s->fd >= 0) {
		/* Do not wait long for a peer that does not read. */
		http_stream_set_timeout(s, CLOSE_DRAIN_MS);
		if (s->ssl && !s->failed && SSL_is_init_finished(s->ssl))
			SSL_shutdown(s->ssl); /* our close_notify; not waiting for theirs */
		ERR_clear_error();
		/* FIN after everything written; then read and drop what the
		 * peer still sends until it closes (briefly): closing with
		 * unread input would reset the connection and could destroy our
		 * answer before the peer reads it. */
		shutdown(s->fd, SHUT_WR);
		uint64_t end = now_ms() + CLOSE_DRAIN_MS;
		char sink[16384];
		size_t drained = 0;
		while (!s->sock_eof && drained < CLOSE_DRAIN_MAX) {
			uint64_t now = now_ms();
			if (now >= end)
				break;
			struct pollfd pf = { .fd = s->fd, .events = POLLIN };
			if (poll(&pf, 1, (int)(end - now)) <= 0)
				break;
			ssize_t r = recv(s->fd, sink, sizeof sink, MSG_DONTWAIT);
			if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
				break;
			if (r > 0)
				drained += (size_t)r;
		}
		close(s->fd);
	}
	SSL_free(s->ssl);
	free(s->ct);
	free(s->iobuf);
	if (s->conn)
		http_conn_release(s->conn);
	free(s);
}
