/* simguest.c — cxapi-simguest: the `sim` backend's hypervisor and all its
 * guests, in one process (docs/vm.md).
 *
 * The hypervisor half keeps the domain table (domids from 1 upwards as Xen
 * allocates them, memory charged against the host, vCPUs, pause, shutdown
 * reasons, cpu time) and answers the toolstack (src/xenops/sim.c) on a Unix
 * socket, one text line per request.  It lives outside xapi so that domains
 * survive a restart of xapi, as they survive one on a Xen host.
 *
 * The guest half plays every booted domain's kernel and guest agent: each
 * guest is a connection to xenstored through the domain's own socket
 * (<rundir>/domain/<domid>/socket), so it acts as that domain.  It answers
 * control/shutdown as Linux does (clears the key, then shuts down with that
 * reason), moves its device frontends through the XenbusState steps of
 * Linux's blkfront/netfront, follows memory/target as a balloon driver, and
 * writes what xe-guest-utilities writes under data/ and attr/.  When a
 * guest shuts down or crashes, the hypervisor half tells xenstored
 * (`domain-exc`, standing in for VIRQ_DOM_EXC), which fires @releaseDomain.
 *
 * One thread, one epoll loop; a guest costs a socket and a few hundred bytes.
 * Requests to xenstored are pipelined: xenstored answers a connection's
 * requests in order, so each connection keeps a FIFO of what it waits for.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <xen/io/xenbus.h>
#include <xen/io/xs_wire.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "xenops/hv.h" /* HV_SIM_VCPU_OVERHEAD_KIB */
#include "xs/wire.h"

#define DOMID_MAX 0x7FF0u

enum { ST_RUNNING, ST_PAUSED, ST_SHUTDOWN, ST_DYING }; /* = enum xenops_state */
static const char *const reasons[] = { "poweroff", "reboot", "suspend", "crash", "halt" };
enum { R_POWEROFF, R_REBOOT, R_SUSPEND, R_CRASH, R_HALT };

enum fdkind { FD_LISTEN, FD_CLIENT, FD_XS };

/* An intrusive list (circular, with a head): the sets the loop visits, so
 * that it never scans every domid. */
struct link {
	struct link *prev, *next; /* NULL: not in a list */
};

#define LINK_OF(l, type, member) ((type *)(void *)((char *)(l) - offsetof(type, member)))

static void link_init(struct link *head)
{
	head->prev = head->next = head;
}

static void link_add(struct link *head, struct link *l)
{
	if (l->next)
		return;
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

static void link_del(struct link *l)
{
	if (!l->next)
		return;
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->prev = l->next = NULL;
}

struct fdtag {
	enum fdkind kind;
};

struct dom;
typedef void (*xs_cb)(struct dom *d, const char *val, size_t len, int err, uint64_t arg);

struct pend {
	xs_cb cb;
	uint64_t arg;
};

/* a connection to xenstored: the privileged one, or a guest's */
struct xconn {
	struct fdtag tag;
	int fd;
	struct dom *d;          /* NULL: privileged */
	struct buf in, out;
	size_t out_off;
	uint32_t rid;
	struct pend *q;         /* FIFO of answers awaited */
	size_t qhead, qlen, qcap;
	bool want_out, reading;
	struct link unsent;     /* in g.unsent: requests queued, not yet sent */
	struct xconn *dead_next; /* closed: freed after the loop's batch */
};

enum { DEV_VBD, DEV_VIF };
static const char *const dev_kinds[] = { "vbd", "vif" };

struct dev {
	int kind;
	uint32_t devid;
	bool live;              /* watching its backend */
	bool reading;           /* its backend path is being read */
	char backend[160];
	int fe_state;
};

struct dom {
	uint32_t domid;
	char uuid[40];
	int state, reason;
	uint64_t mem_kib, max_kib;
	uint32_t vcpus_max, vcpus_online;
	double cpu_time, run_since;
	bool booted;
	bool f_ignore_shutdown, f_crash;
	double t_boot, t_down;  /* deadlines (monotonic seconds), 0: none */
	double reconnect_until; /* lost xenstored: t_boot retries the connect until then */
	int down_reason;
	bool closing;           /* shutting down: closing its devices (t_down: give up) */
	uint32_t next_port, next_gref; /* its event channels and grant refs */
	struct xconn *xc;
	struct dev *devs;
	int ndevs, devcap;
	struct link timer;      /* in g.timers: t_boot or t_down set */
	struct link down;       /* in g.down: shut down (what LIST down answers) */
};

struct client {
	struct fdtag tag;
	int fd;
	struct buf in, out;
};

static struct {
	int ep;
	char *dir, *xs_sock, *rundir;
	struct fdtag listen_tag;
	int lfd;
	uint64_t host_kib, dom0_kib;
	int boot_ms, shutdown_ms;
	char *faults;
	struct dom *doms[DOMID_MAX];
	uint32_t ndoms, next_domid;
	uint64_t charged_kib;   /* charge_kib() of every domain */
	struct link timers, down, unsent;
	struct xconn *priv;
	struct xconn *dead;
	volatile sig_atomic_t stop;
} g = { .host_kib = 16u << 20, .dom0_kib = 1u << 20, .next_domid = 1 };

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Set one of d's deadlines (t_boot, t_down) s seconds from now; timers_run
 * acts on it. */
static void timer_in(struct dom *d, double *deadline, double s)
{
	*deadline = now_mono() + s;
	link_add(&g.timers, &d->timer);
}

/* ---- xenstore client ---------------------------------------------------- */

/* Closed now, freed once the loop's current batch of events is done (one
 * of them may still name it). */
static void xc_close(struct xconn *c)
{
	if (!c || c->fd < 0)
		return;
	epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	link_del(&c->unsent);
	if (c->d)
		c->d->xc = NULL;
	c->d = NULL;
	if (c == g.priv)
		g.priv = NULL;
	c->dead_next = g.dead;
	g.dead = c;
}

static void txb_drop(const struct pend *pe);

static void xc_free_dead(void)
{
	while (g.dead) {
		struct xconn *c = g.dead;
		g.dead = c->dead_next;
		for (size_t i = 0; i < c->qlen; i++)
			txb_drop(&c->q[(c->qhead + i) % c->qcap]);
		buf_free(&c->in);
		buf_free(&c->out);
		free(c->q);
		free(c);
	}
}

static struct xconn *xc_open(const char *path, struct dom *d)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(a.sun_path))
		return NULL;
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return NULL;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	struct xconn *c = util_calloc(1, sizeof(*c));
	c->tag.kind = FD_XS;
	c->fd = fd;
	c->d = d;
	c->reading = true;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
	epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev);
	return c;
}

/* Queue a request (in transaction tx, 0: none); cb (may be NULL) gets the
 * answer. */
static void xc_req_tx(struct xconn *c, uint32_t type, uint32_t tx, const void *p, size_t len,
		      xs_cb cb, uint64_t arg)
{
	if (!c)
		return;
	xs_reply(&c->out, type, ++c->rid, tx, p, len);
	if (c->fd >= 0) /* (a closed one is freed with what it queued) */
		link_add(&g.unsent, &c->unsent);
	if (c->qlen == c->qcap) {
		size_t ncap = c->qcap ? c->qcap * 2 : 8;
		struct pend *nq = util_calloc(ncap, sizeof(*nq));
		for (size_t i = 0; i < c->qlen; i++)
			nq[i] = c->q[(c->qhead + i) % c->qcap];
		free(c->q);
		c->q = nq;
		c->qcap = ncap;
		c->qhead = 0;
	}
	c->q[(c->qhead + c->qlen++) % c->qcap] = (struct pend){ cb, arg };
}

static void xc_req(struct xconn *c, uint32_t type, const void *p, size_t len, xs_cb cb,
		   uint64_t arg)
{
	xc_req_tx(c, type, 0, p, len, cb, arg);
}

static void xc_req2_tx(struct xconn *c, uint32_t type, uint32_t tx, const char *a, const char *b,
		       size_t blen, bool nul_b, xs_cb cb, uint64_t arg)
{
	char p[XS_PAYLOAD_MAX];
	size_t al = strlen(a) + 1;
	if (al + blen + 1 > sizeof(p))
		return;
	memcpy(p, a, al);
	memcpy(p + al, b, blen);
	size_t n = al + blen;
	if (nul_b)
		p[n++] = 0;
	xc_req_tx(c, type, tx, p, n, cb, arg);
}

static void xc_req2(struct xconn *c, uint32_t type, const char *a, const char *b, size_t blen,
		    bool nul_b, xs_cb cb, uint64_t arg)
{
	xc_req2_tx(c, type, 0, a, b, blen, nul_b, cb, arg);
}

static void xs_write(struct xconn *c, const char *path, const char *val)
{
	xc_req2(c, XS_WRITE, path, val, strlen(val), false, NULL, 0);
}

static void xs_writef(struct xconn *c, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void xs_writef(struct xconn *c, const char *path, const char *fmt, ...)
{
	char v[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	xs_write(c, path, v);
}

static void xs_read(struct xconn *c, const char *path, xs_cb cb, uint64_t arg)
{
	xc_req(c, XS_READ, path, strlen(path) + 1, cb, arg);
}

static void xs_watch(struct xconn *c, const char *path, const char *token)
{
	xc_req2(c, XS_WATCH, path, token, strlen(token), true, NULL, 0);
}

static void xs_unwatch(struct xconn *c, const char *path, const char *token)
{
	xc_req2(c, XS_UNWATCH, path, token, strlen(token), true, NULL, 0);
}

static void on_watch(struct dom *d, const char *path, const char *token);

/* Handle every complete packet received. */
static void xc_input(struct xconn *c)
{
	size_t off = 0;
	while (c->in.len - off >= XS_HDR_SIZE) {
		struct xs_hdr h;
		memcpy(&h, c->in.p + off, XS_HDR_SIZE);
		if (h.len > XS_PAYLOAD_MAX) {
			log_err("simguest: bad packet from xenstored");
			c->in.len = 0;
			return;
		}
		if (c->in.len - off < XS_HDR_SIZE + h.len)
			break;
		char p[XS_PAYLOAD_MAX + 1];
		memcpy(p, c->in.p + off + XS_HDR_SIZE, h.len);
		p[h.len] = 0;
		off += XS_HDR_SIZE + h.len;
		if (h.type == XS_WATCH_EVENT) {
			size_t l = strnlen(p, h.len);
			if (c->d && l < h.len)
				on_watch(c->d, p, p + l + 1);
			continue;
		}
		if (!c->qlen)
			continue;
		struct pend pe = c->q[c->qhead];
		c->qhead = (c->qhead + 1) % c->qcap;
		c->qlen--;
		int err = 0;
		if (h.type == XS_ERROR) {
			err = EIO;
			if (!strcmp(p, "ENOENT"))
				err = ENOENT;
			else if (!strcmp(p, "EACCES"))
				err = EACCES;
			else if (!strcmp(p, "EAGAIN"))
				err = EAGAIN;
			if (!pe.cb)
				log_warn("simguest: domain %u: a request failed: %s",
					 c->d ? c->d->domid : 0, p);
		}
		if (pe.cb && c->d)
			pe.cb(c->d, p, h.len, err, pe.arg);
		if (c->fd < 0) /* the callback closed it */
			return;
	}
	memmove(c->in.p, c->in.p + off, c->in.len - off);
	c->in.len -= off;
}

static void xc_flush(struct xconn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out.len)
		c->out.len = c->out_off = 0;
	bool want = c->out.len > 0;
	if (want != c->want_out) {
		c->want_out = want;
		struct epoll_event ev = { .events = (c->reading ? EPOLLIN : 0) | (want ? EPOLLOUT : 0),
					  .data.ptr = c };
		epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
	}
}

/* A paused domain does not run its kernel: its events wait in xenstored. */
static void xc_set_reading(struct xconn *c, bool on)
{
	if (!c || c->reading == on)
		return;
	c->reading = on;
	struct epoll_event ev = { .events = (on ? EPOLLIN : 0) | (c->want_out ? EPOLLOUT : 0),
				  .data.ptr = c };
	epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* ---- the hypervisor ----------------------------------------------------- */

static uint64_t charge_kib(const struct dom *d)
{
	return d->max_kib + (uint64_t)d->vcpus_max * HV_SIM_VCPU_OVERHEAD_KIB;
}

static uint64_t free_kib(void)
{
	uint64_t used = g.dom0_kib + g.charged_kib;
	return used >= g.host_kib ? 0 : g.host_kib - used;
}

static bool has_fault(const char *name, const char *uuid)
{
	if (!g.faults)
		return false;
	char want[128];
	snprintf(want, sizeof(want), "%s=%s", name, uuid);
	size_t n = strlen(want);
	for (const char *p = g.faults; (p = strstr(p, want)); p += n)
		if ((p == g.faults || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
			return true;
	return false;
}

static double cpu_time(const struct dom *d)
{
	/* a guest that idles: 1% of each online vCPU while it runs */
	double t = d->cpu_time;
	if (d->state == ST_RUNNING && d->run_since > 0)
		t += (now_mono() - d->run_since) * 0.01 * d->vcpus_online;
	return t;
}

static void stop_clock(struct dom *d)
{
	d->cpu_time = cpu_time(d);
	d->run_since = 0;
}

/* The domain stops running with a reason; xenstored is told (VIRQ_DOM_EXC). */
static void dom_shutdown(struct dom *d, int reason)
{
	if (d->state == ST_SHUTDOWN || d->state == ST_DYING)
		return;
	stop_clock(d);
	d->state = ST_SHUTDOWN;
	d->reason = reason;
	d->t_boot = d->t_down = 0;
	link_add(&g.down, &d->down);
	if (d->xc)
		xc_flush(d->xc); /* what it wrote before (the acknowledgement) */
	xc_close(d->xc);
	d->booted = false;
	if (!g.priv)
		g.priv = xc_open(g.xs_sock, NULL);
	char id[16];
	snprintf(id, sizeof(id), "%u", d->domid);
	xc_req2(g.priv, XS_CONTROL, "domain-exc", id, strlen(id), true, NULL, 0);
	log_info("simguest: domain %u (%s) shut down: %s", d->domid, d->uuid, reasons[reason]);
}

static void dom_free(struct dom *d)
{
	xc_close(d->xc);
	link_del(&d->timer);
	link_del(&d->down);
	g.charged_kib -= charge_kib(d);
	g.doms[d->domid] = NULL;
	g.ndoms--;
	free(d->devs);
	free(d);
}

static struct dom *dom_new(const char *uuid, uint64_t kib, uint32_t vcpus, int *err)
{
	struct dom tmp = { .max_kib = kib, .vcpus_max = vcpus };
	if (!vcpus || vcpus > 512 || !kib || strlen(uuid) >= sizeof(tmp.uuid)) {
		*err = EINVAL;
		return NULL;
	}
	if (charge_kib(&tmp) > free_kib()) {
		*err = ENOMEM;
		return NULL;
	}
	if (has_fault("start-fails", uuid)) {
		*err = EIO;
		return NULL;
	}
	if (g.ndoms >= DOMID_MAX - 2) {
		*err = ENOSPC;
		return NULL;
	}
	/* as Xen: the next free domid after the last one given, wrapping */
	uint32_t id = g.next_domid;
	while (g.doms[id] || id == 0)
		id = (id + 1) % DOMID_MAX;
	g.next_domid = (id + 1) % DOMID_MAX;
	struct dom *d = util_calloc(1, sizeof(*d));
	*d = tmp;
	d->domid = id;
	snprintf(d->uuid, sizeof(d->uuid), "%s", uuid);
	d->state = ST_PAUSED;
	d->mem_kib = kib;
	d->vcpus_online = vcpus;
	d->f_ignore_shutdown = has_fault("ignore-shutdown", uuid);
	d->f_crash = has_fault("crash", uuid);
	g.doms[id] = d;
	g.ndoms++;
	g.charged_kib += charge_kib(d);
	return d;
}

static void dom_unpause(struct dom *d)
{
	if (d->state != ST_PAUSED)
		return;
	d->state = ST_RUNNING;
	d->run_since = now_mono();
	if (!d->booted && !d->t_boot) {
		timer_in(d, &d->t_boot, g.boot_ms / 1000.0);
	}
	xc_set_reading(d->xc, true);
}

static void dom_pause(struct dom *d)
{
	if (d->state != ST_RUNNING)
		return;
	stop_clock(d);
	d->state = ST_PAUSED;
	xc_set_reading(d->xc, false);
}

/* ---- the guest ---------------------------------------------------------- */

static struct dev *dev_find(struct dom *d, int kind, uint32_t devid)
{
	for (int i = 0; i < d->ndevs; i++)
		if (d->devs[i].kind == kind && d->devs[i].devid == devid)
			return &d->devs[i];
	return NULL;
}

static uint64_t dev_arg(const struct dev *v)
{
	return ((uint64_t)v->kind << 32) | v->devid;
}

static struct dev *dev_of_arg(struct dom *d, uint64_t arg)
{
	return dev_find(d, (int)(arg >> 32), (uint32_t)arg);
}

static void dev_drop(struct dom *d, struct dev *v)
{
	/* keeps the order: a guest closes its devices in reverse probe order */
	size_t i = (size_t)(v - d->devs);
	memmove(v, v + 1, (size_t)(d->ndevs - 1 - (int)i) * sizeof(*v));
	d->ndevs--;
}

static void fe_path(const struct dev *v, const char *key, char *out, size_t n)
{
	snprintf(out, n, "device/%s/%u/%s", dev_kinds[v->kind], v->devid, key);
}

static void fe_write(struct dom *d, struct dev *v, const char *key, const char *val)
{
	char p[128];
	fe_path(v, key, p, sizeof(p));
	xs_write(d->xc, p, val);
}

/* ---- transactions (the kernel's xenbus_transaction_start/_end) ---------- */

/* Writes made in one transaction, retried on EAGAIN; done (may be NULL)
 * runs once it has committed. */
struct txb {
	void (*done)(struct dom *d, uint64_t arg);
	uint64_t done_arg;
	int n;
	char kv[16][2][96];
};

static void txb_started(struct dom *d, const char *val, size_t len, int err, uint64_t arg);

static void txb_ended(struct dom *d, const char *val, size_t len, int err, uint64_t arg)
{
	struct txb *b = (struct txb *)(uintptr_t)arg;
	if (err == EAGAIN) {
		xc_req(d->xc, XS_TRANSACTION_START, "", 1, txb_started, arg);
		return;
	}
	if (!err && b->done)
		b->done(d, b->done_arg);
	free(b);
}

static void txb_started(struct dom *d, const char *val, size_t len, int err, uint64_t arg)
{
	struct txb *b = (struct txb *)(uintptr_t)arg;
	if (err) {
		free(b);
		return;
	}
	uint32_t tx = (uint32_t)strtoul(val, NULL, 10);
	for (int i = 0; i < b->n; i++)
		xc_req2_tx(d->xc, XS_WRITE, tx, b->kv[i][0], b->kv[i][1], strlen(b->kv[i][1]), false,
			   NULL, 0);
	xc_req_tx(d->xc, XS_TRANSACTION_END, tx, "T", 2, txb_ended, arg);
}

/* A connection closed with a transaction in flight: free its batch. */
static void txb_drop(const struct pend *pe)
{
	if (pe->cb == txb_started || pe->cb == txb_ended)
		free((void *)(uintptr_t)pe->arg);
}

static struct txb *txb_new(void)
{
	return util_calloc(1, sizeof(struct txb));
}

static void txb_fe(struct txb *b, const struct dev *v, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void txb_fe(struct txb *b, const struct dev *v, const char *key, const char *fmt, ...)
{
	if (b->n >= 16)
		return;
	fe_path(v, key, b->kv[b->n][0], sizeof(b->kv[0][0]));
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b->kv[b->n][1], sizeof(b->kv[0][1]), fmt, ap);
	va_end(ap);
	b->n++;
}

static void txb_go(struct dom *d, struct txb *b)
{
	xc_req(d->xc, XS_TRANSACTION_START, "", 1, txb_started, (uint64_t)(uintptr_t)b);
}

/* xenbus_switch_state: the frontend's state, in a transaction of its own. */
static void fe_state_then(struct dom *d, struct dev *v, int st,
			  void (*done)(struct dom *d, uint64_t arg))
{
	struct txb *b = txb_new();
	txb_fe(b, v, "state", "%d", st);
	b->done = done;
	v->fe_state = st;
	txb_go(d, b);
}

static void fe_state(struct dom *d, struct dev *v, int st)
{
	fe_state_then(d, v, st, NULL);
}

static void agent_report(struct dom *d);
static void dom_shutdown(struct dom *d, int reason);

/* Power-off: Linux's device_shutdown closes each connected frontend, last
 * probed first (Closing, then Closed once the backend is Closing); the
 * domain shuts down when none is left (or when t_down passes). */
static void close_next(struct dom *d, uint64_t arg)
{
	if (!d->closing)
		return;
	for (int i = d->ndevs - 1; i >= 0; i--)
		if (d->devs[i].fe_state == XenbusStateConnected) {
			fe_state(d, &d->devs[i], XenbusStateClosing);
			return;
		}
	d->closing = false;
	dom_shutdown(d, d->down_reason);
}

/* The backend's state changed: the frontend's next step, as Linux's
 * blkfront/netfront. */
static void on_be_state(struct dom *d, const char *val, size_t len, int err, uint64_t arg)
{
	struct dev *v = dev_of_arg(d, arg);
	if (!v)
		return;
	int be = err ? XenbusStateClosed : atoi(val);
	if (err == ENOENT || (be == XenbusStateClosed && v->fe_state >= XenbusStateClosing)) {
		/* the device is gone (or done with) */
		char tok[32];
		snprintf(tok, sizeof(tok), "be%" PRIu64, arg);
		char p[200];
		snprintf(p, sizeof(p), "%s/state", v->backend);
		xs_unwatch(d->xc, p, tok);
		dev_drop(d, v);
		return;
	}
	struct txb *b;
	switch (be) {
	case XenbusStateInitWait:
		if (v->fe_state >= XenbusStateInitialised)
			break;
		if (v->kind == DEV_VBD) {
			/* blkfront: its ring, then Initialised */
			b = txb_new();
			txb_fe(b, v, "ring-ref", "%u", d->next_gref++);
			txb_fe(b, v, "event-channel", "%u", d->next_port++);
			txb_fe(b, v, "protocol", "x86_64-abi");
			txb_fe(b, v, "feature-persistent", "1");
			txb_go(d, b);
			fe_state(d, v, XenbusStateInitialised);
		} else {
			/* netfront: its rings and split event channels, then
			 * Connected at once (it skips Initialised) */
			fe_write(d, v, "xdp-headroom", "0");
			b = txb_new();
			txb_fe(b, v, "multi-queue-num-queues", "1");
			txb_fe(b, v, "tx-ring-ref", "%u", d->next_gref++);
			txb_fe(b, v, "rx-ring-ref", "%u", d->next_gref++);
			txb_fe(b, v, "event-channel-tx", "%u", d->next_port++);
			txb_fe(b, v, "event-channel-rx", "%u", d->next_port++);
			txb_fe(b, v, "request-rx-copy", "1");
			txb_fe(b, v, "feature-rx-notify", "1");
			txb_fe(b, v, "feature-sg", "1");
			txb_fe(b, v, "feature-gso-tcpv4", "1");
			txb_fe(b, v, "feature-gso-tcpv6", "1");
			txb_fe(b, v, "feature-ipv6-csum-offload", "1");
			txb_go(d, b);
			fe_state(d, v, XenbusStateConnected);
			agent_report(d); /* the NIC is up: its address */
		}
		break;
	case XenbusStateConnected:
		if (v->fe_state < XenbusStateConnected)
			fe_state(d, v, XenbusStateConnected);
		break;
	case XenbusStateClosing:
		/* we are closing (power-off): Closed, then the next device;
		 * the toolstack unplugs it: xenbus_frontend_closed */
		if (v->fe_state < XenbusStateClosed)
			fe_state_then(d, v, XenbusStateClosed,
				      v->fe_state == XenbusStateClosing ? close_next : NULL);
		break;
	default:
		break;
	}
}

static void on_backend_path(struct dom *d, const char *val, size_t len, int err, uint64_t arg)
{
	struct dev *v = dev_of_arg(d, arg);
	if (!v)
		return;
	v->reading = false;
	if (err || len >= sizeof(v->backend) - 8) {
		dev_drop(d, v); /* not (yet, or any more) a whole device */
		return;
	}
	memcpy(v->backend, val, len);
	v->backend[len] = 0;
	v->live = true;
	char p[200], tok[32];
	snprintf(p, sizeof(p), "%s/state", v->backend);
	snprintf(tok, sizeof(tok), "be%" PRIu64, arg);
	xs_watch(d->xc, p, tok); /* fires at once: on_watch reads the state */
}

static void on_device(struct dom *d, const char *path);

/* The devices of a kind (a DIRECTORY answer: names, each NUL-ended). */
static void on_device_list(struct dom *d, const char *val, size_t len, int err, uint64_t kind)
{
	for (size_t off = 0; !err && off < len; off += strlen(val + off) + 1) {
		char p[64];
		snprintf(p, sizeof(p), "device/%s/%s", dev_kinds[kind], val + off);
		on_device(d, p);
	}
}

/* Something under device/ changed: a device we do not know yet is new.  The
 * watch's first event (device/ itself) lists what is there already. */
static void on_device(struct dom *d, const char *path)
{
	char kind[8];
	unsigned devid;
	if (!strcmp(path, "device")) {
		xc_req(d->xc, XS_DIRECTORY, "device/vbd", sizeof("device/vbd"), on_device_list, DEV_VBD);
		xc_req(d->xc, XS_DIRECTORY, "device/vif", sizeof("device/vif"), on_device_list, DEV_VIF);
		return;
	}
	if (sscanf(path, "device/%7[a-z]/%u", kind, &devid) != 2)
		return;
	int k = !strcmp(kind, "vbd") ? DEV_VBD : !strcmp(kind, "vif") ? DEV_VIF : -1;
	if (k < 0 || dev_find(d, k, devid))
		return;
	if (d->ndevs == d->devcap) {
		d->devcap = d->devcap ? 2 * d->devcap : 4;
		d->devs = util_realloc(d->devs, (size_t)d->devcap * sizeof(*d->devs));
	}
	struct dev *v = &d->devs[d->ndevs++];
	*v = (struct dev){ .kind = k, .devid = devid, .reading = true,
			   .fe_state = XenbusStateInitialising };
	char p[128];
	fe_path(v, "backend", p, sizeof(p));
	xs_read(d->xc, p, on_backend_path, dev_arg(v));
}

/* Linux's shutdown_handler: in a transaction, read control/shutdown and,
 * for a request it knows, acknowledge it by writing "" (else abort); once
 * that has committed, shut down (power-off, reboot, halt: after closing the
 * devices) sim_shutdown_ms later. */
static void ctl_started(struct dom *d, const char *val, size_t len, int err, uint64_t arg);

/* The guest goes down by itself, for reason r, sim_shutdown_ms from now
 * (closing its devices first: timers_run). */
static void guest_going_down(struct dom *d, int r)
{
	if (d->t_down || d->closing)
		return;
	d->down_reason = r;
	timer_in(d, &d->t_down, g.shutdown_ms / 1000.0);
}

static void ctl_ended(struct dom *d, const char *val, size_t len, int err, uint64_t r)
{
	if (err == EAGAIN) {
		xc_req(d->xc, XS_TRANSACTION_START, "", 1, ctl_started, 0);
		return;
	}
	if (!err)
		guest_going_down(d, (int)r);
}

static void ctl_read(struct dom *d, const char *val, size_t len, int err, uint64_t tx)
{
	int r = -1;
	for (int i = 0; !err && i < 5; i++)
		if (!strcmp(val, reasons[i]))
			r = i;
	if (r < 0 || r == R_CRASH || d->t_down || d->closing) {
		/* nothing (new) to do; Linux ignores what it does not know */
		xc_req_tx(d->xc, XS_TRANSACTION_END, (uint32_t)tx, "F", 2, NULL, 0);
		return;
	}
	xc_req2_tx(d->xc, XS_WRITE, (uint32_t)tx, "control/shutdown", "", 0, false, NULL, 0);
	xc_req_tx(d->xc, XS_TRANSACTION_END, (uint32_t)tx, "T", 2, ctl_ended, (uint64_t)r);
}

static void ctl_started(struct dom *d, const char *val, size_t len, int err, uint64_t arg)
{
	if (err)
		return;
	uint32_t tx = (uint32_t)strtoul(val, NULL, 10);
	xc_req_tx(d->xc, XS_READ, tx, "control/shutdown", sizeof("control/shutdown"), ctl_read, tx);
}

static void on_sysrq(struct dom *d, const char *val, size_t len, int err, uint64_t arg)
{
	if (err || !len || d->f_ignore_shutdown)
		return;
	xs_write(d->xc, "control/sysrq", "");
	if (val[0] == 'c') /* sysrq-c: crash */
		dom_shutdown(d, R_CRASH);
}

static void on_memory_target(struct dom *d, const char *val, size_t len, int err, uint64_t arg)
{
	if (err || !len)
		return;
	uint64_t kib = strtoull(val, NULL, 10);
	if (kib && kib <= d->max_kib) /* the balloon driver follows the target */
		d->mem_kib = kib;
}

static void on_watch(struct dom *d, const char *path, const char *token)
{
	if (!strcmp(token, "ctl")) {
		if (!d->f_ignore_shutdown)
			xc_req(d->xc, XS_TRANSACTION_START, "", 1, ctl_started, 0);
	} else if (!strcmp(token, "sysrq"))
		xs_read(d->xc, "control/sysrq", on_sysrq, 0);
	else if (!strcmp(token, "mem"))
		xs_read(d->xc, "memory/target", on_memory_target, 0);
	else if (!strcmp(token, "dev"))
		on_device(d, path);
	else if (!strncmp(token, "be", 2))
		xs_read(d->xc, path, on_be_state, strtoull(token + 2, NULL, 10));
}

/* What xe-guest-utilities writes; data/updated last (the toolstack reads
 * the rest once it sees that). */
static void agent_report(struct dom *d)
{
	struct xconn *c = d->xc;
	xs_write(c, "attr/PVAddons/MajorVersion", "7");
	xs_write(c, "attr/PVAddons/MinorVersion", "30");
	xs_write(c, "attr/PVAddons/MicroVersion", "0");
	xs_write(c, "attr/PVAddons/BuildVersion", "1");
	xs_write(c, "attr/PVAddons/Application", "cxapi-simguest");
	xs_write(c, "data/os_name", "Debian GNU/Linux 12 (bookworm)");
	xs_write(c, "data/os_uname", "6.1.0-sim-amd64");
	xs_write(c, "data/os_distro", "debian");
	xs_write(c, "data/os_majorver", "12");
	xs_write(c, "data/os_minorver", "0");
	xs_writef(c, "data/meminfo_total", "%" PRIu64, d->mem_kib);
	xs_writef(c, "data/meminfo_free", "%" PRIu64, d->mem_kib * 3 / 4);
	for (int i = 0; i < d->ndevs; i++) {
		struct dev *v = &d->devs[i];
		if (v->kind != DEV_VIF || v->fe_state != XenbusStateConnected)
			continue;
		char p[64];
		snprintf(p, sizeof(p), "attr/vif/%u/ipv4/0", v->devid);
		xs_writef(c, p, "10.%u.%u.%u", v->devid, d->domid >> 8, d->domid & 255);
		snprintf(p, sizeof(p), "attr/vif/%u/ipv6/0", v->devid);
		xs_writef(c, p, "fd00::%x:%x", d->domid, v->devid);
	}
	xs_write(c, "data/updated", "1");
}

/* A booted guest lost xenstored (it restarted): it connects again once
 * the toolstack has introduced the domain again (at most 30 s, retried
 * every 100 ms), and then does what it did at boot; its devices are found
 * again and connect again (still Connected ones are taken as they are). */
static void guest_lost(struct dom *d)
{
	if (!d->booted || d->state == ST_SHUTDOWN || d->state == ST_DYING)
		return;
	d->booted = false;
	d->ndevs = 0;
	d->reconnect_until = now_mono() + 30;
	timer_in(d, &d->t_boot, 0.1);
}

/* The kernel has booted: connect as the domain and start serving. */
static void guest_boot(struct dom *d)
{
	d->t_boot = 0;
	char path[512];
	snprintf(path, sizeof(path), "%s/domain/%u/socket", g.rundir, d->domid);
	d->xc = xc_open(path, d);
	if (!d->xc && now_mono() < d->reconnect_until) {
		timer_in(d, &d->t_boot, 0.1);
		return;
	}
	d->reconnect_until = 0;
	if (!d->xc) {
		log_err("simguest: domain %u: cannot connect to %s: %s", d->domid, path,
			strerror(errno));
		dom_shutdown(d, R_CRASH);
		return;
	}
	d->booted = true;
	d->next_port = 3;  /* 1: the store's, 2: the console's */
	d->next_gref = 8;  /* the first ones Linux's grant table hands out */
	struct xconn *c = d->xc;
	/* the kernel: shutdown and sysrq handlers, balloon, xenbus */
	xs_write(c, "control/feature-poweroff", "1");
	xs_write(c, "control/feature-reboot", "1");
	xs_write(c, "control/feature-suspend", "1");
	xs_watch(c, "control/shutdown", "ctl");
	xs_watch(c, "control/sysrq", "sysrq");
	xs_watch(c, "memory/target", "mem");
	xs_watch(c, "device", "dev");
	/* the guest agent */
	agent_report(d);
	if (d->f_crash) {
		d->down_reason = R_CRASH;
		timer_in(d, &d->t_down, g.boot_ms / 1000.0);
	}
}

static double timers_run(void)
{
	double now = now_mono(), next = 0;
	for (struct link *l = g.timers.next, *ln; l != &g.timers; l = ln) {
		ln = l->next; /* d may leave the list, no other domain does */
		struct dom *d = LINK_OF(l, struct dom, timer);
		if (!d->t_boot && !d->t_down) {
			link_del(&d->timer);
			continue;
		}
		if (d->state != ST_RUNNING)
			continue;
		if (d->t_boot && d->t_boot <= now)
			guest_boot(d);
		if (d->t_down && d->t_down <= now) {
			int r = d->down_reason;
			if (d->closing || r == R_CRASH || r == R_SUSPEND) {
				d->closing = false;
				dom_shutdown(d, r); /* (closing: the backends did not answer) */
			} else {
				d->closing = true;
				d->t_down = now + 5;
				close_next(d, 0);
			}
		}
		double t = d->t_boot ? d->t_boot : d->t_down;
		if (t && (!next || t < next))
			next = t;
	}
	return next;
}

/* ---- the toolstack's requests --------------------------------------------- */

static void info_line(struct buf *o, const struct dom *d)
{
	buf_printf(o, "%u %s %d %d %" PRIu64 " %" PRIu64 " %u %u %.6f\n", d->domid, d->uuid,
		   d->state, d->reason, d->mem_kib, d->max_kib, d->vcpus_max, d->vcpus_online,
		   cpu_time(d));
}

static struct dom *dom_arg(const char *s)
{
	unsigned long id = strtoul(s, NULL, 10);
	return id && id < DOMID_MAX ? g.doms[id] : NULL;
}

/* One request line; the answer is "OK ...\n" or "ERR <errno> <text>\n". */
static void request(struct client *cl, char *line)
{
	struct buf *o = &cl->out;
	char *argv[12];
	int argc = 0;
	for (char *s = strtok(line, " "); s && argc < 12; s = strtok(NULL, " "))
		argv[argc++] = s;
	if (!argc)
		return buf_adds(o, "ERR 22 empty\n");
	const char *cmd = argv[0];
	struct dom *d = argc > 1 ? dom_arg(argv[1]) : NULL;
	int err;

	if (!strcmp(cmd, "CONFIG") && argc >= 5) {
		g.host_kib = strtoull(argv[1], NULL, 10);
		g.dom0_kib = strtoull(argv[2], NULL, 10);
		g.boot_ms = atoi(argv[3]);
		g.shutdown_ms = atoi(argv[4]);
		free(g.faults);
		g.faults = argc > 5 ? util_strdup(argv[5]) : NULL;
		return buf_adds(o, "OK\n");
	}
	if (!strcmp(cmd, "FREE")) {
		buf_printf(o, "OK %" PRIu64 " %" PRIu64 "\n", g.host_kib, free_kib());
		return;
	}
	if (!strcmp(cmd, "LIST") && argc == 2 && !strcmp(argv[1], "down")) {
		uint32_t n = 0;
		for (struct link *l = g.down.next; l != &g.down; l = l->next)
			n++;
		buf_printf(o, "OK %u\n", n);
		for (struct link *l = g.down.next; l != &g.down; l = l->next)
			info_line(o, LINK_OF(l, struct dom, down));
		return;
	}
	if (!strcmp(cmd, "LIST")) {
		buf_printf(o, "OK %u\n", g.ndoms);
		for (uint32_t i = 1; i < DOMID_MAX; i++)
			if (g.doms[i])
				info_line(o, g.doms[i]);
		return;
	}
	if ((!strcmp(cmd, "CREATE") && argc == 4) || (!strcmp(cmd, "RESTORE") && argc == 6)) {
		/* CREATE uuid kib vcpus; RESTORE uuid kib vcpus online cpu_time */
		d = dom_new(argv[1], strtoull(argv[2], NULL, 10), (uint32_t)atoi(argv[3]), &err);
		if (!d) {
			buf_printf(o, "ERR %d %" PRIu64 "\n", err, free_kib());
			return;
		}
		if (argc == 6) {
			uint32_t on = (uint32_t)atoi(argv[4]);
			d->vcpus_online = on && on <= d->vcpus_max ? on : d->vcpus_max;
			d->cpu_time = strtod(argv[5], NULL);
		}
		log_info("simguest: domain %u created for %s", d->domid, d->uuid);
		buf_printf(o, "OK %u\n", d->domid);
		return;
	}
	if (!d) {
		buf_printf(o, "ERR %d no such domain or request\n", argc > 1 ? ESRCH : EINVAL);
		return;
	}
	if (!strcmp(cmd, "INFO")) {
		buf_adds(o, "OK ");
		info_line(o, d);
	} else if (!strcmp(cmd, "PAUSE")) {
		dom_pause(d);
		buf_adds(o, "OK\n");
	} else if (!strcmp(cmd, "UNPAUSE")) {
		dom_unpause(d);
		buf_adds(o, "OK\n");
	} else if (!strcmp(cmd, "DESTROY")) {
		log_info("simguest: domain %u destroyed", d->domid);
		dom_free(d);
		buf_adds(o, "OK\n");
	} else if (!strcmp(cmd, "SHUTDOWN") && argc == 3) {
		int r = atoi(argv[2]);
		if (r < 0 || r > R_HALT)
			return buf_adds(o, "ERR 22 bad reason\n");
		dom_shutdown(d, r);
		buf_adds(o, "OK\n");
	} else if (!strcmp(cmd, "MAXMEM") && argc == 3) {
		uint64_t kib = strtoull(argv[2], NULL, 10);
		struct dom t = *d;
		t.max_kib = kib;
		if (charge_kib(&t) > charge_kib(d) && charge_kib(&t) - charge_kib(d) > free_kib()) {
			buf_printf(o, "ERR %d %" PRIu64 "\n", ENOMEM, free_kib());
			return;
		}
		g.charged_kib += charge_kib(&t) - charge_kib(d);
		d->max_kib = kib;
		if (d->mem_kib > kib)
			d->mem_kib = kib;
		buf_adds(o, "OK\n");
	} else if (!strcmp(cmd, "TRIGGER") && argc == 4) {
		/* XEN_DOMCTL_sendtrigger: an NMI for any guest (Linux logs it
		 * and carries on); the rest are HVM's (EINVAL for PV): the ACPI
		 * power button (acpid powers the guest off), the sleep button
		 * (nothing bound to it), reset (a reboot), INIT and S3 resume
		 * (nothing to see in the sim) */
		const char *t = argv[2];
		bool hvm = atoi(argv[3]) == 1;
		bool known = !strcmp(t, "nmi") || !strcmp(t, "power") || !strcmp(t, "sleep") ||
			     !strcmp(t, "reset") || !strcmp(t, "init") || !strcmp(t, "s3resume");
		if (!known || (!hvm && strcmp(t, "nmi")))
			return buf_adds(o, "ERR 22 trigger not supported for this domain\n");
		if (!strcmp(t, "power") && d->booted && !d->f_ignore_shutdown)
			guest_going_down(d, R_POWEROFF);
		else if (!strcmp(t, "reset"))
			dom_shutdown(d, R_REBOOT);
		buf_adds(o, "OK\n");
	} else if (!strcmp(cmd, "VCPUS") && argc == 3) {
		uint32_t n = (uint32_t)atoi(argv[2]);
		if (!n || n > d->vcpus_max)
			return buf_adds(o, "ERR 22 bad vcpu count\n");
		stop_clock(d);
		if (d->state == ST_RUNNING)
			d->run_since = now_mono();
		d->vcpus_online = n;
		buf_adds(o, "OK\n");
	} else {
		buf_adds(o, "ERR 22 bad request\n");
	}
}

static void client_close(struct client *cl)
{
	epoll_ctl(g.ep, EPOLL_CTL_DEL, cl->fd, NULL);
	close(cl->fd);
	buf_free(&cl->in);
	buf_free(&cl->out);
	free(cl);
}

static void client_input(struct client *cl)
{
	char tmp[4096];
	ssize_t n = recv(cl->fd, tmp, sizeof(tmp), 0);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		return client_close(cl);
	}
	buf_add(&cl->in, tmp, (size_t)n);
	char *start = cl->in.p, *nl;
	while ((nl = memchr(start, '\n', cl->in.len - (size_t)(start - cl->in.p)))) {
		*nl = 0;
		request(cl, start);
		start = nl + 1;
	}
	size_t rest = cl->in.len - (size_t)(start - cl->in.p);
	memmove(cl->in.p, start, rest);
	cl->in.len = rest;
	if (rest > 65536)
		return client_close(cl);
	/* answers are small and the client waits for each: a blocking send */
	size_t off = 0;
	while (off < cl->out.len) {
		ssize_t w = send(cl->fd, cl->out.p + off, cl->out.len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EAGAIN) {
			usleep(1000);
			continue;
		}
		if (w < 0)
			return client_close(cl);
		off += (size_t)w;
	}
	cl->out.len = 0;
}

/* ---- main --------------------------------------------------------------- */

static void on_signal(int sig)
{
	g.stop = 1;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(a.sun_path))
		return -1;
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	unlink(path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0)
		return -1;
	chmod(path, 0600);
	return fd;
}

static const char usage[] =
	"usage: cxapi-simguest --dir DIR --xenstored SOCKET --rundir DIR\n"
	"  the sim backend's hypervisor and guests; the toolstack talks to it on DIR/sim.sock\n";

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", 1, NULL, 'd' }, { "xenstored", 1, NULL, 's' },
		{ "rundir", 1, NULL, 'r' }, { "help", 0, NULL, 'h' }, { 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "d:s:r:h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': g.dir = optarg; break;
		case 's': g.xs_sock = optarg; break;
		case 'r': g.rundir = optarg; break;
		default: fputs(usage, c == 'h' ? stdout : stderr); return c == 'h' ? 0 : 2;
		}
	}
	if (!g.dir || !g.xs_sock || !g.rundir) {
		fputs(usage, stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	link_init(&g.timers);
	link_init(&g.down);
	link_init(&g.unsent);
	g.ep = epoll_create1(EPOLL_CLOEXEC);
	char path[512];
	snprintf(path, sizeof(path), "%s/sim.sock", g.dir);
	g.lfd = listen_unix(path);
	if (g.lfd < 0) {
		log_err("simguest: cannot listen on %s: %s", path, strerror(errno));
		return 1;
	}
	g.listen_tag.kind = FD_LISTEN;
	struct epoll_event lev = { .events = EPOLLIN, .data.ptr = &g.listen_tag };
	epoll_ctl(g.ep, EPOLL_CTL_ADD, g.lfd, &lev);
	g.priv = xc_open(g.xs_sock, NULL);
	if (!g.priv)
		log_warn("simguest: cannot connect to xenstored at %s yet", g.xs_sock);
	snprintf(path, sizeof(path), "%s/simguest.pid", g.dir);
	char pid[32];
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	util_write_file(path, pid, 0644);
	log_info("simguest: ready on %s/sim.sock", g.dir);

	while (!g.stop) {
		double next = timers_run();
		int timeout = -1;
		if (next) {
			double dt = next - now_mono();
			timeout = dt <= 0 ? 0 : (int)(dt * 1000) + 1;
		}
		while (g.unsent.next != &g.unsent) {
			struct xconn *x = LINK_OF(g.unsent.next, struct xconn, unsent);
			link_del(&x->unsent);
			xc_flush(x);
		}
		struct epoll_event evs[64];
		int n = epoll_wait(g.ep, evs, 64, timeout);
		for (int i = 0; i < n; i++) {
			struct fdtag *t = evs[i].data.ptr;
			if (t->kind == FD_LISTEN) {
				int fd = accept4(g.lfd, NULL, NULL, SOCK_CLOEXEC);
				if (fd < 0)
					continue;
				struct client *cl = util_calloc(1, sizeof(*cl));
				cl->tag.kind = FD_CLIENT;
				cl->fd = fd;
				struct epoll_event ev = { .events = EPOLLIN, .data.ptr = cl };
				epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev);
			} else if (t->kind == FD_CLIENT) {
				client_input((struct client *)t);
			} else {
				struct xconn *x = (struct xconn *)t;
				if (x->fd < 0)
					continue;
				if (evs[i].events & EPOLLOUT)
					xc_flush(x);
				if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
					continue;
				char tmp[65536];
				ssize_t r = recv(x->fd, tmp, sizeof(tmp), 0);
				if (r > 0) {
					buf_add(&x->in, tmp, (size_t)r);
					xc_input(x);
				} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
					/* xenstored released the domain or went away */
					if (x->d) {
						log_warn("simguest: domain %u lost xenstored",
							 x->d->domid);
						guest_lost(x->d);
					}
					xc_close(x);
				}
			}
		}
		xc_free_dead();
	}
	snprintf(path, sizeof(path), "%s/sim.sock", g.dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/simguest.pid", g.dir);
	unlink(path);
	log_info("simguest: stopped (its %u domains are gone)", g.ndoms);
	return 0;
}
