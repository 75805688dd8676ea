/* xsc.c — a pipelined xenstore client (xsc.h). */
#include "xenops/xsc.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xen/io/xs_wire.h>

#include "base/util.h"
#include "xenops/hv.h"
#include "xs/wire.h"

struct xsc {
	char *sock;
	int fd;         /* -1 after a failure: reconnected by the next batch */
	pthread_mutex_t lock;
	uint32_t req_id;
	struct buf in;  /* bytes received, from pos on not yet taken */
	size_t pos;
};

struct xsc *xsc_open(const char *sock)
{
	int fd = hv_connect_unix(sock, 0);
	if (fd < 0) {
		errno = -fd;
		return NULL;
	}
	struct xsc *c = util_calloc(1, sizeof(*c));
	c->sock = util_strdup(sock);
	c->fd = fd;
	pthread_mutex_init(&c->lock, NULL);
	buf_init(&c->in);
	return c;
}

void xsc_close(struct xsc *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c->sock);
	buf_free(&c->in);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void xsc_reset(struct xsc *c)
{
	pthread_mutex_lock(&c->lock);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->in.len = c->pos = 0;
	pthread_mutex_unlock(&c->lock);
}

void xsq_init(struct xsq *q, uint32_t tx)
{
	memset(q, 0, sizeof(*q));
	q->tx = tx;
	buf_init(&q->out);
}

void xsq_free(struct xsq *q)
{
	buf_free(&q->out);
	free(q->counts);
	q->counts = NULL;
	q->n = q->cap = 0;
}

void xsq_add(struct xsq *q, uint32_t type, bool counts, const char *a, const char *b,
	     size_t blen)
{
	char p[XS_PAYLOAD_MAX];
	size_t al = strlen(a) + 1, n = al + (b ? blen : 0);
	if (n > sizeof(p)) { /* xenstored would refuse it */
		if (counts && !q->err)
			q->err = -E2BIG;
		return;
	}
	memcpy(p, a, al);
	if (b)
		memcpy(p + al, b, blen);
	if (q->n == q->cap) {
		q->cap = q->cap ? 2 * q->cap : 32;
		q->counts = util_realloc(q->counts, (size_t)q->cap * sizeof(*q->counts));
	}
	q->counts[q->n++] = counts;
	xs_reply(&q->out, type, 0, q->tx, p, n); /* req_id set as it goes out */
}

void xsq_write(struct xsq *q, const char *path, const char *val, size_t len)
{
	/* a WRITE's value follows the path's NUL, without one of its own */
	xsq_add(q, XS_WRITE, true, path, val, len);
}

void xsq_perms(struct xsq *q, const char *path, const struct xs_permissions *p, unsigned n)
{
	char v[XS_PAYLOAD_MAX];
	size_t len = 0;
	for (unsigned i = 0; i < n && len + 16 < sizeof(v); i++) {
		char k = p[i].perms == XS_PERM_READ ? 'r' : p[i].perms == XS_PERM_WRITE ? 'w' :
			 p[i].perms == (XS_PERM_READ | XS_PERM_WRITE) ? 'b' : 'n';
		len += (size_t)snprintf(v + len, sizeof(v) - len, "%c%u", k, p[i].id) + 1;
	}
	xsq_add(q, XS_SET_PERMS, true, path, v, len);
}

void xsq_rm(struct xsq *q, const char *path)
{
	xsq_add(q, XS_RM, false, path, NULL, 0);
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* The next reply packet: its header, and its payload at c->in.p + *at. */
static int next_reply(struct xsc *c, struct xs_hdr *h, size_t *at)
{
	for (;;) {
		size_t have = c->in.len - c->pos;
		if (have >= XS_HDR_SIZE) {
			memcpy(h, c->in.p + c->pos, XS_HDR_SIZE);
			if (h->len > XS_PAYLOAD_MAX)
				return -EIO;
			if (have >= XS_HDR_SIZE + h->len) {
				*at = c->pos + XS_HDR_SIZE;
				c->pos += XS_HDR_SIZE + h->len;
				return 0;
			}
		}
		if (c->pos) { /* keep what is left at the front */
			memmove(c->in.p, c->in.p + c->pos, have);
			c->in.len = have;
			c->pos = 0;
		}
		buf_reserve(&c->in, 64 * 1024);
		ssize_t k = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EPIPE;
		c->in.len += (size_t)k;
	}
}

/* Send q on c's connection (connecting first if it has none) and read its
 * replies.  *got: how many replies were read.  Called with c->lock held. */
static int exchange(struct xsc *c, struct xsq *q, xsc_reply_fn fn, void *ctx, int *err, int *got)
{
	*got = 0;
	if (c->fd < 0 && (c->fd = hv_connect_unix(c->sock, 0)) < 0) {
		int e = c->fd;
		c->fd = -1;
		return e;
	}
	uint32_t first = c->req_id;
	for (size_t off = 0; off < q->out.len;) {
		struct xs_hdr h;
		memcpy(&h, q->out.p + off, XS_HDR_SIZE);
		h.req_id = c->req_id++;
		memcpy(q->out.p + off, &h, XS_HDR_SIZE);
		off += XS_HDR_SIZE + h.len;
	}
	int r = send_all(c->fd, q->out.p, q->out.len);
	for (int i = 0; !r && i < q->n; i++) {
		struct xs_hdr h;
		size_t at = 0;
		if ((r = next_reply(c, &h, &at)))
			break;
		if (h.req_id != first + (uint32_t)i) {
			r = -EIO;
			break;
		}
		(*got)++;
		int e = 0;
		if (h.type == XS_ERROR) {
			char name[16];
			snprintf(name, sizeof(name), "%.*s", (int)h.len, c->in.p + at);
			e = -xs_errno_value(name);
		}
		if (e && q->counts[i] && !*err)
			*err = e;
		if (i == q->n - 1)
			q->last_err = e;
		if (fn)
			fn(ctx, i, e, c->in.p + at, h.len);
	}
	if (r) { /* the replies are out of step: start again on a new connection */
		close(c->fd);
		c->fd = -1;
		c->in.len = c->pos = 0;
	}
	return r;
}

int xsc_run_each(struct xsc *c, struct xsq *q, xsc_reply_fn fn, void *ctx)
{
	int err = q->err;
	q->err = 0;
	q->last_err = 0;
	if (!q->n)
		return err;
	pthread_mutex_lock(&c->lock);
	int got;
	int r = exchange(c, q, fn, ctx, &err, &got);
	/* the connection was dead before this batch (xenstored restarted and
	 * the watcher has not noticed yet): nothing of it was done, so outside
	 * a transaction (whose id died with it) it goes again on a new one */
	if (r && !got && !q->tx)
		r = exchange(c, q, fn, ctx, &err, &got);
	pthread_mutex_unlock(&c->lock);
	q->out.len = 0;
	q->n = 0;
	return r ? r : err;
}

struct last {
	struct buf *b;
	int n;
};

static void keep_last(void *ctx, int i, int err, const char *p, size_t len)
{
	struct last *l = ctx;
	if (i != l->n - 1)
		return;
	l->b->len = 0;
	buf_add(l->b, p, len);
	buf_reserve(l->b, 1);
	l->b->p[l->b->len] = 0;
}

int xsc_run(struct xsc *c, struct xsq *q, struct buf *last)
{
	struct last l = { last, q->n };
	return xsc_run_each(c, q, last ? keep_last : NULL, &l);
}

int xsc_call(struct xsc *c, uint32_t tx, uint32_t type, const char *a, const char *b,
	     size_t blen, struct buf *reply)
{
	struct xsq q;
	xsq_init(&q, tx);
	xsq_add(&q, type, true, a, b, blen);
	int r = xsc_run(c, &q, reply);
	xsq_free(&q);
	return r;
}

int xsc_tx_start(struct xsc *c, uint32_t *tx)
{
	struct buf id;
	buf_init(&id);
	int r = xsc_call(c, 0, XS_TRANSACTION_START, "", NULL, 0, &id);
	if (!r)
		*tx = (uint32_t)strtoul(id.p, NULL, 10);
	buf_free(&id);
	return r;
}

int xsc_tx_end(struct xsc *c, uint32_t tx, bool abort)
{
	return xsc_call(c, tx, XS_TRANSACTION_END, abort ? "F" : "T", NULL, 0, NULL);
}
