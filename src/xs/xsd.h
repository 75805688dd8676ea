/* xsd.h — the xenstored daemon's internals: connections, watches, domains,
 * the access trace.  Shared by main.c, conn.c, watch.c, domain.c, trace.c;
 * not a library interface.
 *
 * Everything here is guarded by xsd.lock.  Each connection has a thread of
 * its own that blocks in recv() and handles what arrives under the lock; the
 * libuv loop thread accepts connections, waits for sockets to drain that
 * could not take all their output, and handles signals (docs/xenstored.md).
 * A connection is transport-agnostic: it is fed bytes (xsd_conn_process) and
 * queues reply bytes in conn->out; the transport (today a Unix socket, later
 * a shared ring) drains conn->out when xsd_flush() asks it to.
 */
#ifndef CX_XS_XSD_H
#define CX_XS_XSD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "base/buf.h"
#include "xs/store.h"
#include "xs/wire.h"

#define XSD_DOMID_MAX 0x7FF0u   /* DOMID_FIRST_RESERVED */
#define XSD_DOMID_SELF 0x7FF0u
#define XSD_OUT_MAX (8u << 20)  /* pending output above which a connection
				 * is not read from and gets no watch events */

struct xsd_conn;
struct xsd_domain;
struct xsd_watch;

/* A transport under a connection. */
struct xsd_conn_ops {
	/* Try to send conn->out (from out_off); return at once, keeping what
	 * the peer cannot take yet for later. */
	void (*flush)(struct xsd_conn *c);
	/* Tear the transport down; xsd_conn_free follows once it is idle. */
	void (*close)(struct xsd_conn *c);
};

struct xsd_txn_ref {
	struct xs_txn *t;
	uint32_t id;
};

struct xsd_conn {
	const struct xsd_conn_ops *ops;
	uint32_t domid;
	bool priv;              /* dom0: the privileged socket */
	bool closing;
	bool dirty;             /* on the flush list */
	uint64_t serial;        /* for traces */
	struct xsd_domain *dom; /* NULL for dom0's socket */
	struct xsd_conn *next, *prev;     /* all connections */
	struct xsd_conn *dnext, *dprev;   /* the domain's connections */
	struct xsd_conn *flush_next;
	struct buf in;          /* unparsed input */
	size_t in_off;          /* parsed up to here */
	struct buf out;         /* queued output, sent up to out_off */
	size_t out_off;
	struct xsd_watch *watches; /* this connection's watches (list via cnext) */
	unsigned nwatches;
	struct xsd_txn_ref *txns;
	unsigned ntxns, txn_cap;
	/* transport (Unix socket) */
	int fd;
	pthread_cond_t drained; /* output fell below XSD_OUT_MAX / 2 */
	uv_poll_t wpoll;        /* loop thread: waits for the socket to drain */
	bool wpoll_init, wpoll_on;
	bool gone;              /* its thread has ended: free it */
	bool job_queued;
	struct xsd_conn *job_next;
};

/* A listening Unix socket: its accepts run on the loop thread. */
struct xsd_listener {
	int fd;
	struct xsd_domain *dom; /* NULL: dom0's socket */
	bool closed, started, job_queued;
	uv_poll_t poll;
	struct xsd_listener *job_next;
};

struct xsd_domain {
	uint32_t domid;
	uint64_t mfn;
	uint32_t port;
	char *sock_path;
	struct xsd_listener *listener;
	struct xsd_conn *conns; /* via dnext */
	unsigned nwatches;      /* over all its connections */
	unsigned ntxns;
};

struct xsd_special_perms {
	int n;
	struct xs_perm p[16];
};

struct xsd {
	pthread_mutex_t lock;   /* guards everything below */
	uv_loop_t *loop;
	uv_async_t wake;        /* jobs for the loop thread are queued */
	struct xs_store *store;
	struct xs_quota quota;
	char *sock_path;
	char *rundir;
	char *dump_path;
	bool verbose;
	struct xsd_listener *listener;
	struct xsd_conn *conns;
	uint64_t conn_serial;
	struct xsd_conn *flush_list;
	struct xsd_domain **domains; /* indexed by domid, XSD_DOMID_MAX */
	unsigned ndomains;
	struct xsd_special_perms intro_perms, release_perms;
	/* scratch buffers (reused, so the hot path does not allocate) */
	struct buf scratch;
	struct buf evbuf;
	FILE *trace;
	char *trace_path;
	uint64_t nreq;
};

extern struct xsd xsd;

/* conn.c */
struct xsd_conn *xsd_conn_new(const struct xsd_conn_ops *ops, uint32_t domid,
			      struct xsd_domain *dom);
/* Feed received bytes (already appended to c->in); processes every complete
 * request. */
void xsd_conn_process(struct xsd_conn *c);
/* Drop a connection: abort its transactions, remove its watches, close it. */
void xsd_conn_drop(struct xsd_conn *c, const char *why);
void xsd_conn_free(struct xsd_conn *c);
void xsd_conn_mark(struct xsd_conn *c); /* queue for flushing */
void xsd_flush(void);                  /* flush every marked connection */
/* Queue a packet. */
void xsd_conn_send(struct xsd_conn *c, uint32_t type, uint32_t req_id,
		   uint32_t tx_id, const void *p, size_t len);
/* Unix socket transport: listen on path (for dom, NULL = dom0); the loop
 * thread starts accepting.  NULL on failure (logged). */
void xsd_transport_init(void); /* on the loop thread, before uv_run */
struct xsd_listener *xsd_unix_listen(const char *path, struct xsd_domain *dom);
void xsd_listener_close(struct xsd_listener *l);

/* watch.c */
void xsd_watch_init(void);
int xsd_watch_add(struct xsd_conn *c, const char *path, const char *token,
		  bool relative);
int xsd_watch_remove(struct xsd_conn *c, const char *path, const char *token);
void xsd_watch_remove_all(struct xsd_conn *c);
/* The store's change callback. */
void xsd_watch_changed(void *opaque, const char *path, bool recursive);
/* Fire a special watch (@introduceDomain, @releaseDomain). */
void xsd_watch_fire_special(const char *name);
/* Send one event to c for a watch path as the client registered it. */
void xsd_watch_send_event(struct xsd_conn *c, const char *path, size_t plen,
			  const char *token);

/* domain.c */
int xsd_domain_introduce(uint32_t domid, uint64_t mfn, uint32_t port);
int xsd_domain_release(uint32_t domid);
struct xsd_domain *xsd_domain_get(uint32_t domid);
void xsd_domain_release_all(void);
int xsd_domains_save(const char *file);
void xsd_domains_restore(const char *file);
/* Permissions of the special watch names (NULL if not special). */
struct xsd_special_perms *xsd_special_perms(const char *name);
unsigned xsd_perm_for(uint32_t domid, const struct xs_perm *p, int n);

/* trace.c */
int xsd_trace_open(const char *path);
void xsd_trace_close(void);
void xsd_trace_io(const struct xsd_conn *c, bool out, const struct xs_hdr *h,
		  const char *payload);
void xsd_trace_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void xsd_trace_flush(void);

#endif
