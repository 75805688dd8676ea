/* xsc.h — a pipelined xenstore client (the domain manager's requests).
 *
 * Requests are queued in a batch (struct xsq) and go to xenstored in one
 * write; xenstored answers a connection's requests in order, and the
 * replies are read back in one go: a batch costs one round trip, where
 * libxenstore takes one per request.  A connection (struct xsc) is shared
 * by threads: a batch holds it from its write to its last reply.  Watches
 * stay on libxenstore's connection (xenops.c), so no watch event arrives
 * here.  Wire format: src/xs/wire.h.
 */
#ifndef CX_XENOPS_XSC_H
#define CX_XENOPS_XSC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <xenstore.h>

#include "base/buf.h"

struct xsc;

/* Connect to xenstored's Unix socket; NULL with errno set. */
struct xsc *xsc_open(const char *sock);
void xsc_close(struct xsc *c);
/* Drop the connection (xenstored restarted): the next batch reconnects. */
void xsc_reset(struct xsc *c);

/* A batch of requests, all in transaction tx (0: none). */
struct xsq {
	uint32_t tx;
	struct buf out;   /* the packets */
	int n;
	bool *counts;     /* per request: whether its error fails the batch */
	int cap;
	int err;          /* a request that could not be queued (-E2BIG) */
	int last_err;     /* after xsc_run: the last reply's error (-errno) or 0 */
};

void xsq_init(struct xsq *q, uint32_t tx);
void xsq_free(struct xsq *q);
/* Queue a request of type (XS_* of xs_wire.h) whose payload is a, NUL,
 * then b (blen bytes; b NULL: no NUL and nothing after a).  counts: an
 * error reply to it fails the batch (otherwise it is ignored, as for the
 * removal of what may not exist). */
void xsq_add(struct xsq *q, uint32_t type, bool counts, const char *a, const char *b,
	     size_t blen);
void xsq_write(struct xsq *q, const char *path, const char *val, size_t len);
void xsq_perms(struct xsq *q, const char *path, const struct xs_permissions *p, unsigned n);
void xsq_rm(struct xsq *q, const char *path);   /* an absent path is no error */

/* Send the batch and read its replies; the batch is then empty (same tx).
 * Returns 0, or the first counted request's error (-errno; -EIO/-EPIPE
 * when the connection failed).  last, if given, receives the payload of
 * the last reply (NUL-terminated; replaced). */
int xsc_run(struct xsc *c, struct xsq *q, struct buf *last);

/* The same, handing each reply to fn: request i's error (-errno or 0) and
 * payload (len bytes), valid during the call only. */
typedef void (*xsc_reply_fn)(void *ctx, int i, int err, const char *p, size_t len);
int xsc_run_each(struct xsc *c, struct xsq *q, xsc_reply_fn fn, void *ctx);

/* One request and its reply: xsq_add + xsc_run. */
int xsc_call(struct xsc *c, uint32_t tx, uint32_t type, const char *a, const char *b,
	     size_t blen, struct buf *reply);

/* A transaction's start (*tx: its id) and end (commit, or abort). */
int xsc_tx_start(struct xsc *c, uint32_t *tx);
int xsc_tx_end(struct xsc *c, uint32_t tx, bool abort);

#endif
