/* xenops.c — the domain manager (libxl's part; docs/vm.md).
 *
 * It starts our xenstored (or reconnects to a running one: domains outlive
 * xapi), talks to it through libxenstore, writes each domain's tree as
 * libxl 4.17 does, introduces and releases domains, plays dom0's backend
 * drivers and hotplug scripts for the sim (blkback, netback: backend states
 * InitWait → Connected → Closed following the frontend), and learns what
 * guests do from xenstore: @releaseDomain (then getinfo from the
 * hypervisor backend), device states, data/updated.
 *
 * Threads: callers (xapi's workers) call in and may block; one watcher
 * thread reads watch events, drives the backends and calls the event
 * callback.  A mutex guards the table of known domains; the condition
 * `changed` is broadcast after every watch event, so waiters (clean
 * shutdown, unplug) re-check what they wait for.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xenstore.h>
#include <xen/io/xenbus.h>
#include <xen/io/xs_wire.h>

#include "base/log.h"
#include "base/util.h"
#include "xenops/hv.h"
#include "xenops/xenops.h"
#include "xenops/xsc.h"

#define DOMID_MAX 0x7FF0u
#define STORE_MFN 0xFEFFFu   /* the store ring's frame, as the sim pretends */
#define STORE_PORT 1u
#define CONSOLE_PORT 2u
#define CONSOLE_GFN (STORE_MFN + 1u) /* the console ring: the page after the store's */
#define UNPLUG_TIMEOUT_S 10
#define SUSPEND_TIMEOUT_S 600

struct known {
	char uuid[40];
	bool reported;          /* its shutdown was reported */
};

static struct {
	const struct hv_ops *hv;
	struct xs_handle *xs;   /* libxenstore: watches; replaced under xs_lock */
	pthread_rwlock_t xs_lock;
	char *sock, *rundir, *xenstored_bin, *state_dir; /* to reconnect, or restart it */
	struct xsc *xsc;        /* our pipelined client: everything else */
	xenops_event_fn fn;
	void *ctx;
	pthread_t watcher;
	bool watcher_on, stopping;
	pthread_mutex_t lock;   /* known[], gen */
	pthread_cond_t changed;
	uint64_t gen;
	struct known *known[DOMID_MAX];
} X = { .lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER,
	.xs_lock = PTHREAD_RWLOCK_INITIALIZER };

static const char *const reason_names[] = { "poweroff", "reboot", "suspend", "crash", "halt" };

/* ---- errors and small helpers ------------------------------------------- */

static int fail(struct xerr *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct xerr *err, const char *fmt, ...)
{
	char m[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	xerr_set(err, "INTERNAL_ERROR", 1, m);
	return -1;
}

static int hv_fail(struct xerr *err, uint32_t domid, const char *what, int r)
{
	if (r == -ESRCH)
		return fail(err, "xenops: %s: domain %u does not exist", what, domid);
	if (r == -EPIPE)
		return fail(err, "xenops: %s: the hypervisor backend is gone", what);
	return fail(err, "xenops: %s (domain %u): %s", what, domid, strerror(-r));
}

static bool known_uuid(uint32_t domid, char uuid[40])
{
	pthread_mutex_lock(&X.lock);
	struct known *k = domid < DOMID_MAX ? X.known[domid] : NULL;
	if (k && uuid)
		memcpy(uuid, k->uuid, 40);
	pthread_mutex_unlock(&X.lock);
	return k != NULL;
}

static void known_add(uint32_t domid, const char *uuid, bool reported)
{
	struct known *k = util_calloc(1, sizeof(*k));
	snprintf(k->uuid, sizeof(k->uuid), "%s", uuid);
	k->reported = reported;
	pthread_mutex_lock(&X.lock);
	free(X.known[domid]);
	X.known[domid] = k;
	pthread_mutex_unlock(&X.lock);
}

static void known_del(uint32_t domid)
{
	pthread_mutex_lock(&X.lock);
	free(X.known[domid]);
	X.known[domid] = NULL;
	pthread_mutex_unlock(&X.lock);
}

/* A transaction's requests, queued and sent in batches (xsc.h); the first
 * error is kept and fails the transaction at its end. */
struct tx {
	struct xsq q;
	int err;
};

/* Read a key (NULL if absent); malloc'd.  In a transaction, the read goes
 * out with the requests queued before it. */
static char *rd(struct tx *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *rd(struct tx *t, const char *fmt, ...)
{
	char p[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p, sizeof(p), fmt, ap);
	va_end(ap);
	struct xsq one, *q = t ? &t->q : &one;
	if (!t)
		xsq_init(&one, 0);
	xsq_add(q, XS_READ, false, p, NULL, 0);
	struct buf v;
	buf_init(&v);
	int r = xsc_run(X.xsc, q, &v);
	if (t && r && !t->err)
		t->err = r;
	if (!t)
		xsq_free(&one);
	if (r || q->last_err) {
		buf_free(&v);
		return NULL;
	}
	return buf_steal(&v);
}

/* The names in a directory (NULL if absent): one malloc'd block, as
 * libxenstore's xs_directory. */
static char **ls(const char *path, unsigned *n)
{
	struct buf v;
	buf_init(&v);
	*n = 0;
	if (xsc_call(X.xsc, 0, XS_DIRECTORY, path, NULL, 0, &v)) {
		buf_free(&v);
		return NULL;
	}
	for (size_t i = 0; i < v.len; i++)
		*n += !v.p[i];
	char **d = util_malloc((*n + 1) * sizeof(char *) + v.len);
	char *names = (char *)(d + *n + 1);
	memcpy(names, v.p, v.len);
	for (unsigned i = 0, off = 0; i < *n; i++) {
		d[i] = names + off;
		off += (unsigned)strlen(names + off) + 1;
	}
	d[*n] = NULL;
	buf_free(&v);
	return d;
}

static void wr(struct tx *t, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void wr(struct tx *t, const char *path, const char *fmt, ...)
{
	char v[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	xsq_write(&t->q, path, v, (size_t)(n < (int)sizeof(v) ? n : (int)sizeof(v) - 1));
}

/* Create a node with these permissions (libxl: write "" then set_perms). */
static void mkp(struct tx *t, const char *path, const struct xs_permissions *p, unsigned n)
{
	xsq_write(&t->q, path, "", 0);
	xsq_perms(&t->q, path, p, n);
}

/* Create a node whose permissions are its parent's (libxl sets them
 * explicitly; xenstored gives a node dom0 creates its parent's, so the
 * set_perms would change nothing: one request saved). */
static void mk(struct tx *t, const char *path)
{
	xsq_write(&t->q, path, "", 0);
}

static void setp(struct tx *t, const char *path, const struct xs_permissions *p, unsigned n)
{
	xsq_perms(&t->q, path, p, n);
}

#define PATHF(buf, ...) snprintf(buf, sizeof(buf), __VA_ARGS__)

/* A write outside a transaction (hotplug scripts, backend probes), queued
 * on q; flush() sends what is queued. */
static void xw(struct xsq *q, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void xw(struct xsq *q, const char *path, const char *fmt, ...)
{
	char v[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	xsq_write(q, path, v, (size_t)(n < (int)sizeof(v) ? n : (int)sizeof(v) - 1));
}

static int flush(struct xsq *q)
{
	return xsc_run(X.xsc, q, NULL);
}

/* One write, or one removal, outside a transaction. */
static int put(const char *path, const char *val)
{
	return xsc_call(X.xsc, 0, XS_WRITE, path, val, strlen(val), NULL);
}

static void del(const char *path)
{
	struct xsq q;
	xsq_init(&q, 0);
	xsq_rm(&q, path);
	flush(&q);
	xsq_free(&q);
}

/* Run fill() in a transaction, retrying on EAGAIN.  The domain manager's
 * transactions are serialised by tx_lock, held across the whole retry loop:
 * they create and remove children of the same parents (/local/domain, /vm,
 * /libxl, /local/domain/0/backend/<kind>), and xenstored fails all but the
 * first of concurrent transactions that change a parent's child list
 * (EAGAIN), so parallel builds redid their work O(k^2) times.  xapi is the
 * only writer of those parents; the one libxenstore connection serialises
 * the requests anyway, so the lock costs no concurrency.  (The guests'
 * transactions, on their own connections, may still conflict: retried.) */
static pthread_mutex_t tx_lock = PTHREAD_MUTEX_INITIALIZER;

static int in_tx_locked(void (*fill)(struct tx *t, void *arg), void *arg)
{
	for (int tries = 0; tries < 100; tries++) {
		uint32_t id;
		int r = xsc_tx_start(X.xsc, &id);
		if (r)
			return r;
		struct tx t = { .err = 0 };
		xsq_init(&t.q, id);
		fill(&t, arg);
		if (t.err) {
			xsq_free(&t.q);
			xsc_tx_end(X.xsc, id, true);
			return t.err;
		}
		/* the commit goes out with the writes: one round trip.  A write
		 * that failed is then committed without it, and its error is
		 * returned (a domain build that gets one destroys the domain). */
		xsq_add(&t.q, XS_TRANSACTION_END, true, "T", NULL, 0);
		r = flush(&t.q);
		xsq_free(&t.q);
		if (r != -EAGAIN)
			return r;
	}
	return -EAGAIN;
}

static int in_tx(void (*fill)(struct tx *t, void *arg), void *arg)
{
	pthread_mutex_lock(&tx_lock);
	int r = in_tx_locked(fill, arg);
	pthread_mutex_unlock(&tx_lock);
	return r;
}

/* Keys written under dir in one transaction: kv is n strings, key, value,
 * ... (a NULL value skips the key).  A device's backend writes nothing once
 * the device is gone (it reads its state first, as xenbus_switch_state):
 * the watcher thread may step a device that a destroy is removing. */
struct kvs {
	const char *dir;
	const char *const *kv;
	int n;
};

static void kvs_fill(struct tx *t, void *arg)
{
	const struct kvs *k = arg;
	char p[320];
	char *st = rd(t, "%s/state", k->dir);
	free(st);
	if (!st)
		return;
	for (int i = 0; i + 1 < k->n; i += 2) {
		if (!k->kv[i + 1])
			continue;
		PATHF(p, "%s/%s", k->dir, k->kv[i]);
		wr(t, p, "%s", k->kv[i + 1]);
	}
}

static int tx_keys(const char *dir, const char *const *kv, int n)
{
	struct kvs k = { dir, kv, n };
	return in_tx(kvs_fill, &k);
}

/* xenbus_switch_state: a device's state, in a transaction of its own. */
static int tx_state(const char *dir, int st)
{
	char v[4];
	snprintf(v, sizeof(v), "%d", st);
	const char *kv[] = { "state", v };
	return tx_keys(dir, kv, 2);
}

/* libxl__xs_path_cleanup: remove path, then each parent left empty. */
static void path_cleanup(struct tx *t, const char *path)
{
	char p[320];
	snprintf(p, sizeof(p), "%s", path);
	xsq_rm(&t->q, p);
	for (char *s; (s = strrchr(p, '/')) && s != p;) {
		*s = 0;
		struct buf d;
		buf_init(&d);
		xsq_add(&t->q, XS_DIRECTORY, false, p, NULL, 0);
		int r = xsc_run(X.xsc, &t->q, &d);
		bool empty = !r && !t->q.last_err && !d.len;
		buf_free(&d);
		if (r && !t->err)
			t->err = r;
		if (!empty)
			break;
		xsq_rm(&t->q, p);
	}
}

/* Run-time values the sim cannot have for real, made plausible: the loop
 * device the `block` hotplug script sets up for a disk (/dev/loopN, 7:N)
 * and the pty xenconsoled opens for a console (/dev/pts/N).  Both are the
 * lowest free number, as Linux gives them, and are freed at unplug and
 * destroy.  (Not rebuilt after a restart of xapi: a later device may then
 * get a number in use, which nothing depends on.) */
#define NIDX 4096
static struct {
	pthread_mutex_t lock;
	uint8_t loop[NIDX / 8], pts[NIDX / 8];
} I = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int idx_get(uint8_t *set)
{
	pthread_mutex_lock(&I.lock);
	int i = 0;
	while (i < NIDX - 1 && (set[i / 8] & (1u << (i % 8))))
		i++;
	set[i / 8] |= (uint8_t)(1u << (i % 8));
	pthread_mutex_unlock(&I.lock);
	return i;
}

/* Free the number at the end of the value of key (e.g. "/dev/loop3"). */
static void idx_put(uint8_t *set, const char *key)
{
	char *v = rd(NULL, "%s", key);
	const char *s = v ? v + strlen(v) : NULL;
	while (s && s > v && s[-1] >= '0' && s[-1] <= '9')
		s--;
	if (s && *s) {
		int i = atoi(s);
		pthread_mutex_lock(&I.lock);
		if (i >= 0 && i < NIDX)
			set[i / 8] &= (uint8_t)~(1u << (i % 8));
		pthread_mutex_unlock(&I.lock);
	}
	free(v);
}

/* ---- devices ------------------------------------------------------------ */

/* The Xen virtual device number of a guest disk name (xvda, hda, sda). */
static int vdev_number(const char *name, int userdevice)
{
	int idx = -1;
	if (!strncmp(name, "xvd", 3) && name[3] >= 'a' && name[3] <= 'z' && !name[4])
		idx = name[3] - 'a';
	else if ((!strncmp(name, "hd", 2) || !strncmp(name, "sd", 2)) && name[2] >= 'a' &&
		 name[2] <= 'z' && !name[3]) {
		int i = name[2] - 'a';
		if (name[0] == 's')
			return (8 << 8) | (i << 4);
		static const int hd_major[] = { 3, 3, 22, 22 };
		if (i < 4)
			return (hd_major[i] << 8) | ((i & 1) << 6);
		return -1;
	} else if (!*name && userdevice >= 0 && userdevice < 26)
		idx = userdevice;
	if (idx < 0)
		return -1;
	return idx < 16 ? (202 << 8) | (idx << 4) : (1 << 28) | (idx << 8);
}

static const char *be_path(char *buf, size_t n, const char *kind, uint32_t domid, int devid)
{
	snprintf(buf, n, "/local/domain/0/backend/%s/%u/%d", kind, domid, devid);
	return buf;
}

/* A device's three directories: the frontend (the guest's), the backend
 * (dom0's) and libxl's record of what it wrote into the backend. */
struct devp {
	char fe[256], be[256], lx[256];
};

static void dev_paths(struct devp *p, const char *kind, uint32_t domid, int devid)
{
	if (!strcmp(kind, "console") && devid == 0)
		PATHF(p->fe, "/local/domain/%u/console", domid);
	else
		PATHF(p->fe, "/local/domain/%u/device/%s/%d", domid, kind, devid);
	be_path(p->be, sizeof(p->be), kind, domid, devid);
	PATHF(p->lx, "/libxl/%u/device/%s/%d", domid, kind, devid);
}

/* A backend key, also recorded under /libxl/<domid>/device (libxl keeps a
 * copy of what it wrote into the backend at creation; it is never updated). */
static void bw(struct tx *t, const struct devp *d, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void bw(struct tx *t, const struct devp *d, const char *key, const char *fmt, ...)
{
	char v[4096], p[320];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	PATHF(p, "%s/%s", d->be, key);
	wr(t, p, "%s", v);
	PATHF(p, "%s/%s", d->lx, key);
	wr(t, p, "%s", v);
}

/* libxl__device_generic_add: the frontend dir (owned by the guest, dom0 may
 * read), the backend dir (dom0's, the guest may read), both Initialising,
 * and libxl's record.  The kind's own keys follow (disk_add, ...). */
static void dev_generic(struct tx *t, const struct devp *d, uint32_t domid)
{
	struct xs_permissions feperm[2] = { { domid, XS_PERM_NONE }, { 0, XS_PERM_READ } };
	struct xs_permissions beperm[2] = { { 0, XS_PERM_NONE }, { domid, XS_PERM_READ } };
	char p[320];
	PATHF(p, "%s/frontend", d->lx); wr(t, p, "%s", d->fe);
	PATHF(p, "%s/backend", d->lx); wr(t, p, "%s", d->be);
	mkp(t, d->fe, feperm, 2);
	PATHF(p, "%s/backend", d->fe); wr(t, p, "%s", d->be);
	PATHF(p, "%s/backend-id", d->fe); wr(t, p, "0");
	PATHF(p, "%s/state", d->fe); wr(t, p, "%d", XenbusStateInitialising);
	mkp(t, d->be, beperm, 2);
	PATHF(p, "%s/frontend", d->be); wr(t, p, "%s", d->fe);
}

struct devadd {
	uint32_t domid;
	int devid;
	const struct xenops_disk *disk;
	const struct xenops_nic *nic;
	struct devp p;
};

/* libxl__device_disk_add (phy: blkback on the block script's loop device) */
static void disk_fill(struct tx *t, void *arg)
{
	struct devadd *a = arg;
	const struct xenops_disk *dk = a->disk;
	struct devp *d = &a->p;
	char p[320];
	dev_generic(t, d, a->domid);
	const char *dtype = dk->cdrom ? "cdrom" : "disk";
	bool ro = dk->read_only || dk->cdrom;
	bw(t, d, "params", "%s", dk->empty ? "" : dk->path);
	bw(t, d, "script", "/etc/xen/scripts/block");
	bw(t, d, "frontend-id", "%u", a->domid);
	bw(t, d, "online", "1");
	bw(t, d, "removable", "%d", dk->cdrom ? 1 : 0);
	bw(t, d, "bootable", "%d", dk->bootable ? 1 : 0);
	bw(t, d, "state", "%d", XenbusStateInitialising);
	bw(t, d, "dev", "%s", dk->device);
	bw(t, d, "type", "phy");
	bw(t, d, "mode", "%s", ro ? "r" : "w");
	bw(t, d, "device-type", "%s", dtype);
	bw(t, d, "discard-enable", "%d", ro ? 0 : 1);
	bw(t, d, "specification", "xen");
	PATHF(p, "%s/virtual-device", d->fe); wr(t, p, "%d", a->devid);
	PATHF(p, "%s/device-type", d->fe); wr(t, p, "%s", dtype);
	PATHF(p, "%s/trusted", d->fe); wr(t, p, "1");
	PATHF(p, "%s/protocol", d->fe); wr(t, p, "x86_64-abi");
}

/* libxl__device_nic_add */
static void nic_fill(struct tx *t, void *arg)
{
	struct devadd *a = arg;
	const struct xenops_nic *n = a->nic;
	struct devp *d = &a->p;
	char p[320];
	struct xs_permissions ro[2] = { { 0, XS_PERM_NONE }, { a->domid, XS_PERM_READ } };
	dev_generic(t, d, a->domid);
	PATHF(p, "%s/handle", d->fe); wr(t, p, "%d", n->devid);
	PATHF(p, "%s/mac", d->fe); wr(t, p, "%s", n->mac);
	PATHF(p, "%s/trusted", d->fe); wr(t, p, "1");
	PATHF(p, "%s/mtu", d->fe); wr(t, p, "%u", n->mtu ? n->mtu : 1500);
	setp(t, p, ro, 2);
	bw(t, d, "frontend-id", "%u", a->domid);
	bw(t, d, "online", "1");
	bw(t, d, "state", "%d", XenbusStateInitialising);
	bw(t, d, "script", "/etc/xen/scripts/vif-bridge");
	bw(t, d, "mac", "%s", n->mac);
	bw(t, d, "bridge", "%s", n->bridge);
	bw(t, d, "handle", "%d", n->devid);
	bw(t, d, "type", "vif");
	bw(t, d, "hotplug-status", "%s", "");
}

/* The primary PV console (libxl__device_console_add): the frontend is
 * /local/domain/<d>/console, owned by dom0; xenconsoled serves it and does
 * not run the xenbus protocol, so both states stay Initialising/absent. */
static void console_fill(struct tx *t, void *arg)
{
	struct devadd *a = arg;
	struct devp *d = &a->p;
	uint32_t dom = a->domid;
	struct xs_permissions be_id[2] = { { dom, XS_PERM_NONE }, { 0, XS_PERM_READ } };
	struct xs_permissions beperm[2] = { { 0, XS_PERM_NONE }, { dom, XS_PERM_READ } };
	char p[320];
	PATHF(p, "%s/frontend", d->lx); wr(t, p, "%s", d->fe);
	PATHF(p, "%s/backend", d->lx); wr(t, p, "%s", d->be);
	xsq_rm(&t->q, d->fe);
	mk(t, d->fe); /* /local/domain/<dom>'s: ro */
	PATHF(p, "%s/backend", d->fe); wr(t, p, "%s", d->be);
	PATHF(p, "%s/backend-id", d->fe); wr(t, p, "0"); setp(t, p, be_id, 2);
	PATHF(p, "%s/limit", d->fe); wr(t, p, "1048576");
	PATHF(p, "%s/type", d->fe); wr(t, p, "xenconsoled");
	PATHF(p, "%s/output", d->fe); wr(t, p, "pty");
	PATHF(p, "%s/tty", d->fe); wr(t, p, "%s", "");
	PATHF(p, "%s/port", d->fe); wr(t, p, "%u", CONSOLE_PORT);
	PATHF(p, "%s/ring-ref", d->fe); wr(t, p, "%u", CONSOLE_GFN);
	mkp(t, d->be, beperm, 2);
	PATHF(p, "%s/frontend", d->be); wr(t, p, "%s", d->fe);
	bw(t, d, "frontend-id", "%u", dom);
	bw(t, d, "online", "1");
	bw(t, d, "state", "%d", XenbusStateInitialising);
	bw(t, d, "protocol", "vt100");
}

/* After libxl's transaction, what dom0 does for the new backend: the
 * backend driver's probe (blkback/netback: features, then InitWait), the
 * hotplug script (block: the loop device; vif-bridge: the MTU), and for
 * the console xenconsoled (its pty). */
static void backend_probe(const char *kind, const struct devadd *a)
{
	const struct devp *d = &a->p;
	char p[320];
	struct xsq q;
	xsq_init(&q, 0);
	if (!strcmp(kind, "vbd")) {
		PATHF(p, "%s/feature-max-indirect-segments", d->be); xw(&q, p, "256");
		PATHF(p, "%s/multi-queue-max-queues", d->be); xw(&q, p, "1");
		PATHF(p, "%s/max-ring-page-order", d->be); xw(&q, p, "4");
		flush(&q);
		tx_state(d->be, XenbusStateInitWait);
		if (!a->disk->empty && a->disk->path[0]) {
			int loop = idx_get(I.loop);
			PATHF(p, "%s/node", d->be); xw(&q, p, "/dev/loop%d", loop);
			PATHF(p, "%s/physical-device", d->be); xw(&q, p, "7:%x", loop);
			PATHF(p, "%s/physical-device-path", d->be); xw(&q, p, "/dev/loop%d", loop);
		}
		PATHF(p, "%s/hotplug-status", d->be); xw(&q, p, "connected");
	} else if (!strcmp(kind, "vif")) {
		static const char *const feat[] = {
			"feature-sg", "1", "feature-gso-tcpv4", "1", "feature-gso-tcpv6", "1",
			"feature-ipv6-csum-offload", "1", "feature-rx-copy", "1",
			"feature-xdp-headroom", "1", "feature-rx-flip", "0",
			"feature-multicast-control", "1", "feature-dynamic-multicast-control", "1" };
		tx_keys(d->be, feat, sizeof(feat) / sizeof(*feat));
		PATHF(p, "%s/feature-split-event-channels", d->be); xw(&q, p, "1");
		PATHF(p, "%s/multi-queue-max-queues", d->be); xw(&q, p, "1");
		PATHF(p, "%s/feature-ctrl-ring", d->be); xw(&q, p, "1");
		flush(&q);
		tx_state(d->be, XenbusStateInitWait);
		PATHF(p, "%s/mtu", d->fe); xw(&q, p, "%u", a->nic->mtu ? a->nic->mtu : 1500);
		PATHF(p, "%s/hotplug-status", d->be); xw(&q, p, "connected");
	} else {
		PATHF(p, "%s/tty", d->fe); xw(&q, p, "/dev/pts/%d", idx_get(I.pts));
	}
	flush(&q);
	xsq_free(&q);
}

/* Add a device: libxl's transaction, then the backend's probe and hotplug. */
static int device_add(uint32_t domid, const struct xenops_disk *disk, const struct xenops_nic *nic,
		      int devid)
{
	struct devadd a = { domid, devid, disk, nic };
	const char *kind = disk ? "vbd" : nic ? "vif" : "console";
	dev_paths(&a.p, kind, domid, devid);
	int r = in_tx(disk ? disk_fill : nic ? nic_fill : console_fill, &a);
	if (!r)
		backend_probe(kind, &a);
	return r;
}

/* libxl__device_destroy: the frontend, libxl's record and the backend go,
 * with the parents they leave empty (vif: netback drops hotplug-status
 * when the device goes offline, before). */
static void dev_destroy_fill(struct tx *t, void *arg)
{
	const struct devp *d = arg;
	path_cleanup(t, d->fe);
	path_cleanup(t, d->lx);
	path_cleanup(t, d->be);
}

/* libxl's first step of removing a device: the frontend goes and the
 * backend is set offline, in one transaction. */
static void dev_offline_fill(struct tx *t, void *arg)
{
	const struct devp *d = arg;
	char p[320];
	path_cleanup(t, d->fe);
	PATHF(p, "%s/online", d->be);
	wr(t, p, "0");
}

/* What a device's removal frees: its loop device, its pty. */
static void dev_release(const char *kind, const struct devp *d)
{
	char p[320];
	if (!strcmp(kind, "vbd")) {
		PATHF(p, "%s/node", d->be);
		idx_put(I.loop, p);
	} else if (!strcmp(kind, "console")) {
		PATHF(p, "%s/tty", d->fe);
		idx_put(I.pts, p);
	}
}

/* ---- the backend drivers (run on the watcher thread) -------------------- */

/* A frontend's state changed: the backend's next step, as blkback/netback
 * (each state change in a transaction of its own, as xenbus_switch_state). */
static void backend_step(uint32_t domid, const char *kind, int devid)
{
	char be[256], p[320];
	be_path(be, sizeof(be), kind, domid, devid);
	char *fs = rd(NULL, "/local/domain/%u/device/%s/%d/state", domid, kind, devid);
	int fe = fs ? atoi(fs) : -1;
	free(fs);
	PATHF(p, "%s/state", be);
	char *bs = rd(NULL, "%s", p);
	if (!bs)
		return;
	int b = atoi(bs);
	free(bs);
	if ((fe == XenbusStateInitialised || fe == XenbusStateConnected) &&
	    b == XenbusStateInitWait) {
		if (!strcmp(kind, "vbd")) {
			/* blkback's connect: what the frontend needs to know */
			char *params = rd(NULL, "%s/params", be);
			struct stat st;
			uint64_t sectors = params && *params && !stat(params, &st) ?
				(uint64_t)st.st_size / 512 : 0;
			char *mode = rd(NULL, "%s/mode", be);
			char *dt = rd(NULL, "%s/device-type", be);
			char *de = rd(NULL, "%s/discard-enable", be);
			unsigned info = (mode && !strcmp(mode, "r") ? 4 : 0) |
					(dt && !strcmp(dt, "cdrom") ? 1 : 0);
			bool discard = de && !strcmp(de, "1");
			free(params);
			free(mode);
			free(dt);
			free(de);
			char sec[32], inf[16];
			snprintf(sec, sizeof(sec), "%" PRIu64, sectors);
			snprintf(inf, sizeof(inf), "%u", info);
			const char *kv[] = {
				"feature-flush-cache", "1",
				"discard-granularity", discard ? "4096" : NULL,
				"discard-alignment", discard ? "0" : NULL,
				"discard-secure", discard ? "0" : NULL,
				"feature-discard", discard ? "1" : NULL,
				"feature-barrier", "1", "feature-persistent", "1",
				"sectors", sec, "info", inf, "sector-size", "512",
				"physical-sector-size", "512" };
			tx_keys(be, kv, sizeof(kv) / sizeof(*kv));
		}
		tx_state(be, XenbusStateConnected);
	} else if ((fe == XenbusStateClosing || fe == XenbusStateClosed) &&
		   b != XenbusStateClosed) {
		if (fe == XenbusStateClosing && b != XenbusStateClosing)
			tx_state(be, XenbusStateClosing);
		if (fe == XenbusStateClosed)
			tx_state(be, XenbusStateClosed);
	}
}

/* @releaseDomain: find the domains that shut down and say so. */
static void release_domain_event(void)
{
	struct hv_info *v = NULL;
	int n = 0;
	if (X.hv->domain_list_down(&v, &n))
		return;
	for (int i = 0; i < n; i++) {
		bool report = false;
		pthread_mutex_lock(&X.lock);
		struct known *k = v[i].domid < DOMID_MAX ? X.known[v[i].domid] : NULL;
		if (k && !k->reported)
			report = k->reported = true;
		pthread_mutex_unlock(&X.lock);
		if (report && X.fn)
			X.fn(X.ctx, XENOPS_EV_DOMAIN, v[i].uuid, v[i].domid);
	}
	free(v);
}

static bool watch_all(void);
static void dom0_keys(void);
static int start_xenstored(const char *bin, const char *state_dir, const char *sock,
			   const char *rundir, struct xerr *err);

/* Whether libxenstore's connection still works (a watch read failed). */
static bool store_alive(void)
{
	unsigned n = 0;
	char **d = xs_directory(X.xs, XBT_NULL, "/", &n);
	free(d);
	return d != NULL;
}

/* xenstored went away (restarted, or died): connect to it again, starting
 * it if it is not back within 2 s, and watch again; then the API layer
 * rewrites the running domains' trees (XENOPS_EV_STORE, xenops_rewrite),
 * which a restart without its dump lost. */
static void store_reconnect(void)
{
	log_warn("xenops: lost xenstored; reconnecting");
	struct xs_handle *h = NULL;
	for (int tries = 0; !X.stopping && !h; tries++) {
		if (tries == 20) {
			struct xerr e = {0};
			if (start_xenstored(X.xenstored_bin, X.state_dir, X.sock, X.rundir, &e))
				log_warn("%s", e.n ? e.params[0] : e.code);
			xerr_clear(&e);
		}
		int fd = hv_connect_unix(X.sock, 0);
		if (fd >= 0) {
			close(fd);
			h = xs_open(0);
		}
		if (!h) {
			struct timespec ts = { 0, 100 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
	}
	if (!h)
		return;
	pthread_rwlock_wrlock(&X.xs_lock);
	xs_close(X.xs);
	X.xs = h;
	pthread_rwlock_unlock(&X.xs_lock);
	xsc_reset(X.xsc);
	dom0_keys();
	watch_all();
	log_info("xenops: reconnected to xenstored");
	if (X.fn)
		X.fn(X.ctx, XENOPS_EV_STORE, "", 0);
	release_domain_event(); /* domains that went down meanwhile */
}

static void *watcher_main(void *arg)
{
	while (!X.stopping) {
		unsigned num;
		char **w = xs_read_watch(X.xs, &num);
		if (!w) {
			if (X.stopping)
				break;
			if (!store_alive()) {
				store_reconnect();
				continue;
			}
			struct timespec ts = { 0, 100 * 1000 * 1000 };
			nanosleep(&ts, NULL);
			continue;
		}
		const char *path = w[XS_WATCH_PATH], *tok = w[XS_WATCH_TOKEN];
		uint32_t domid = (uint32_t)strtoul(tok + 1, NULL, 10);
		char uuid[40];
		if (!strcmp(tok, "rel")) {
			release_domain_event();
		} else if (tok[0] == 'd' && domid && domid < DOMID_MAX) {
			char kind[16];
			int devid;
			char tail[32];
			char pre[64];
			int pl = snprintf(pre, sizeof(pre), "/local/domain/%u/device/", domid);
			if (!strncmp(path, pre, (size_t)pl) &&
			    sscanf(path + pl, "%15[a-z]/%d/%31s", kind, &devid, tail) == 3 &&
			    !strcmp(tail, "state"))
				backend_step(domid, kind, devid);
			if (X.fn && known_uuid(domid, uuid) && !strcmp(tail, "state"))
				X.fn(X.ctx, XENOPS_EV_DEVICE, uuid, domid);
		} else if (tok[0] == 'g' && domid && known_uuid(domid, uuid)) {
			if (X.fn)
				X.fn(X.ctx, XENOPS_EV_GUEST, uuid, domid);
		}
		free(w);
		pthread_mutex_lock(&X.lock);
		X.gen++;
		pthread_cond_broadcast(&X.changed);
		pthread_mutex_unlock(&X.lock);
	}
	return NULL;
}

/* Wait until check() is true, the deadline passes (-ETIMEDOUT) or cancel
 * says stop (-ECANCELED).  check returns 1 done, 0 not yet, <0 an error. */
static int wait_for(int (*check)(void *), void *arg, double timeout_s,
		    int (*cancel)(void *ctx), void *cctx)
{
	double end = util_now_f() + timeout_s;
	for (;;) {
		pthread_mutex_lock(&X.lock);
		uint64_t gen = X.gen;
		pthread_mutex_unlock(&X.lock);
		int r = check(arg);
		if (r)
			return r < 0 ? r : 0;
		if (cancel && cancel(cctx))
			return -ECANCELED;
		double now = util_now_f();
		if (now >= end)
			return -ETIMEDOUT;
		/* a watch event, or 100 ms (the cancel check, and any event lost) */
		double until = now + 0.1 < end ? now + 0.1 : end;
		struct timespec ts = { (time_t)until, (long)((until - (time_t)until) * 1e9) };
		pthread_mutex_lock(&X.lock);
		while (X.gen == gen &&
		       pthread_cond_timedwait(&X.changed, &X.lock, &ts) != ETIMEDOUT)
			;
		pthread_mutex_unlock(&X.lock);
	}
}

static void xs_watch_set(const char *path, const char *tok, bool on)
{
	pthread_rwlock_rdlock(&X.xs_lock);
	on ? xs_watch(X.xs, path, tok) : xs_unwatch(X.xs, path, tok);
	pthread_rwlock_unlock(&X.xs_lock);
}

static void watch_domain(uint32_t domid, bool on)
{
	char p[128], tok[32];
	PATHF(p, "/local/domain/%u/device", domid);
	snprintf(tok, sizeof(tok), "d%u", domid);
	xs_watch_set(p, tok, on);
	PATHF(p, "/local/domain/%u/data/updated", domid);
	snprintf(tok, sizeof(tok), "g%u", domid);
	xs_watch_set(p, tok, on);
}

/* @releaseDomain and every known domain's keys (at start, and after
 * reconnecting to xenstored).  Whether @releaseDomain is watched. */
static bool watch_all(void)
{
	for (uint32_t d = 1; d < DOMID_MAX; d++)
		if (known_uuid(d, NULL))
			watch_domain(d, true);
	pthread_rwlock_rdlock(&X.xs_lock);
	bool ok = xs_watch(X.xs, "@releaseDomain", "rel");
	pthread_rwlock_unlock(&X.xs_lock);
	return ok;
}

/* ---- the domain's tree -------------------------------------------------- */

struct build {
	const struct xenops_vm *vm;
	uint32_t domid;
	const int *devids;
};

/* libxl__domain_make: the domain's directories and their permissions. */
static void domain_make(struct tx *t, void *arg)
{
	const struct build *b = arg;
	const struct xenops_vm *vm = b->vm;
	uint32_t d = b->domid;
	char dom[64], vmp[64], lx[64], p[320];
	PATHF(dom, "/local/domain/%u", d);
	PATHF(vmp, "/vm/%s", vm->uuid);
	PATHF(lx, "/libxl/%u", d);
	struct xs_permissions ro[2] = { { 0, XS_PERM_NONE }, { d, XS_PERM_READ } };
	struct xs_permissions rw[1] = { { d, XS_PERM_NONE } };
	struct xs_permissions no[1] = { { 0, XS_PERM_NONE } };
	xsq_rm(&t->q, dom);
	mkp(t, dom, ro, 2);
	xsq_rm(&t->q, vmp);
	mkp(t, vmp, ro, 2);
	xsq_rm(&t->q, lx);
	mkp(t, lx, no, 1);
	PATHF(p, "%s/device", lx); mk(t, p); /* lx's: no */
	PATHF(p, "%s/vm", dom); wr(t, p, "%s", vmp);
	PATHF(p, "%s/name", dom); wr(t, p, "%s", vm->name);
	PATHF(p, "%s/name", vmp); wr(t, p, "%s", vm->name);
	static const char *const ro_dirs[] = { "cpu", "memory", "device" };
	for (unsigned i = 0; i < 3; i++) {
		PATHF(p, "%s/%s", dom, ro_dirs[i]);
		mk(t, p); /* dom's: ro */
	}
	PATHF(p, "%s/device/suspend/event-channel", dom); mkp(t, p, rw, 1);
	PATHF(p, "%s/control", dom); mk(t, p); /* dom's: ro */
	static const char *const rw_dirs[] = {
		"control/shutdown", "control/feature-poweroff", "control/feature-reboot",
		"control/feature-suspend", "control/sysrq", "data", "drivers", "feature", "attr",
		"error" };
	for (unsigned i = 0; i < sizeof(rw_dirs) / sizeof(*rw_dirs); i++) {
		PATHF(p, "%s/%s", dom, rw_dirs[i]);
		mkp(t, p, rw, 1);
	}
	PATHF(p, "%s/uuid", vmp); wr(t, p, "%s", vm->uuid);
	PATHF(p, "%s/control/platform-feature-multiprocessor-suspend", dom); wr(t, p, "1");
	PATHF(p, "%s/control/platform-feature-xs_reset_watches", dom); wr(t, p, "1");
	PATHF(p, "%s/type", lx);
	wr(t, p, "%s", vm->type == XENOPS_HVM ? "hvm" : vm->type == XENOPS_PVH ? "pvh" : "pv");
}

/* libxl__build_post: memory, the store's ring and port, vCPUs, the image. */
static void build_post(struct tx *t, void *arg)
{
	const struct build *b = arg;
	const struct xenops_vm *vm = b->vm;
	uint32_t d = b->domid;
	char dom[64], vmp[64], p[320];
	PATHF(dom, "/local/domain/%u", d);
	PATHF(vmp, "/vm/%s", vm->uuid);
	uint64_t smax = vm->memory_static_max / 1024;
	uint64_t target = (vm->memory_target ? vm->memory_target : vm->memory_static_max) / 1024;
	PATHF(p, "%s/memory/static-max", dom); wr(t, p, "%" PRIu64, smax);
	PATHF(p, "%s/memory/target", dom); wr(t, p, "%" PRIu64, target);
	PATHF(p, "%s/memory/videoram", dom); wr(t, p, "0");
	PATHF(p, "%s/domid", dom); wr(t, p, "%u", d);
	PATHF(p, "%s/store/port", dom); wr(t, p, "%u", STORE_PORT);
	PATHF(p, "%s/store/ring-ref", dom); wr(t, p, "%u", STORE_MFN);
	uint32_t at_start = vm->vcpus_at_startup ? vm->vcpus_at_startup : vm->vcpus_max;
	for (uint32_t i = 0; i < vm->vcpus_max; i++) {
		PATHF(p, "%s/cpu/%u/availability", dom, i);
		wr(t, p, "%s", i < at_start ? "online" : "offline");
	}
	PATHF(p, "%s/image/ostype", vmp); wr(t, p, "%s", vm->type == XENOPS_HVM ? "hvm" : "linux");
	if (vm->pv_kernel) {
		PATHF(p, "%s/image/kernel", vmp); wr(t, p, "%s", vm->pv_kernel);
	}
	PATHF(p, "%s/start_time", vmp); wr(t, p, "%.2f", util_now_f());
	if (vm->pv_ramdisk) {
		PATHF(p, "%s/image/ramdisk", vmp); wr(t, p, "%s", vm->pv_ramdisk);
	}
	if (vm->pv_args) {
		PATHF(p, "%s/image/cmdline", vmp); wr(t, p, "%s", vm->pv_args);
	}
}

/* libxl's domain_make transaction, its dm-version write and its build_post
 * transaction, in that order, as one transaction: the same writes in the
 * same order, two requests (a transaction's end and the next's start)
 * fewer, and no window in which the tree is half written. */
static void domain_tree(struct tx *t, void *arg)
{
	const struct build *b = arg;
	char p[64];
	domain_make(t, arg);
	PATHF(p, "/libxl/%u/dm-version", b->domid);
	wr(t, p, "qemu_xen");
	build_post(t, arg);
}

static bool disk_plugged(const struct xenops_vm *vm, int i)
{
	return !vm->disks[i].empty || vm->type == XENOPS_HVM || vm->disks[i].cdrom;
}

struct rmdev {
	char kind[16];
	struct devp p;
};

/* libxl__devices_destroy, as the xl daemon runs it after the guest is
 * gone: each device (in libxl's record's order: vbd, console, vif) loses
 * its frontend and goes offline; the console is removed at once; then
 * the devices whose hotplug script has finished (vif-bridge before block)
 * are destroyed. */
static void devices_destroy(uint32_t domid)
{
	char lxd[64], p[320];
	PATHF(lxd, "/libxl/%u/device", domid);
	unsigned nk = 0;
	char **kinds = ls(lxd, &nk);
	struct rmdev *v = NULL;
	size_t nv = 0;
	for (unsigned k = 0; kinds && k < nk; k++) {
		PATHF(p, "%s/%s", lxd, kinds[k]);
		unsigned ni = 0;
		char **ids = ls(p, &ni);
		for (unsigned i = 0; ids && i < ni; i++) {
			v = util_realloc(v, (nv + 1) * sizeof(*v));
			struct rmdev *r = &v[nv++];
			snprintf(r->kind, sizeof(r->kind), "%s", kinds[k]);
			dev_paths(&r->p, r->kind, domid, atoi(ids[i]));
			char *fe = rd(NULL, "%s/frontend", r->p.lx);
			char *be = rd(NULL, "%s/backend", r->p.lx);
			if (fe && *fe)
				PATHF(r->p.fe, "%s", fe);
			if (be && *be)
				PATHF(r->p.be, "%s", be);
			free(fe);
			free(be);
		}
		free(ids);
	}
	free(kinds);
	for (size_t i = 0; i < nv; i++) {
		dev_release(v[i].kind, &v[i].p);
		if (!strcmp(v[i].kind, "console")) {
			in_tx(dev_destroy_fill, &v[i].p);
			continue;
		}
		in_tx(dev_offline_fill, &v[i].p);
		if (!strcmp(v[i].kind, "vif")) {
			PATHF(p, "%s/hotplug-status", v[i].p.be);
			del(p);
		}
	}
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < nv; i++)
			if (strcmp(v[i].kind, "console") && !strcmp(v[i].kind, "vif") == !pass)
				in_tx(dev_destroy_fill, &v[i].p);
	free(v);
}

/* Destroy and forget a domain, as libxl__destroy_domid: pause it, its
 * devices, the domain, then /vm/<uuid>, /local/domain/<d>, /libxl/<d>. */
static int domain_destroy(uint32_t domid, const char *uuid)
{
	char p[128];
	watch_domain(domid, false);
	X.hv->domain_pause(domid);
	devices_destroy(domid);
	int r = X.hv->domain_destroy(domid);
	struct xsq q;
	xsq_init(&q, 0);
	PATHF(p, "%u", domid);
	xsq_add(&q, XS_RELEASE, false, p, NULL, 0);
	if (uuid && *uuid) {
		PATHF(p, "/vm/%s", uuid);
		xsq_rm(&q, p);
	}
	PATHF(p, "/local/domain/%u", domid);
	xsq_rm(&q, p);
	PATHF(p, "/libxl/%u", domid);
	xsq_rm(&q, p);
	/* libxl also removes an HVM guest's hvmloader dir (gone with the
	 * domain's by now: ENOENT, as on a real host) */
	PATHF(p, "/local/domain/%u/hvmloader", domid);
	xsq_rm(&q, p);
	flush(&q);
	xsq_free(&q);
	known_del(domid);
	return r == -ESRCH ? 0 : r;
}

/* XS_INTRODUCE: xenstored connects the domain's store ring. */
static int introduce(uint32_t domid)
{
	char id[16], rest[48];
	snprintf(id, sizeof(id), "%u", domid);
	int n = snprintf(rest, sizeof(rest), "%lu%c%u", (unsigned long)STORE_MFN, 0, STORE_PORT);
	return xsc_call(X.xsc, 0, XS_INTRODUCE, id, rest, (size_t)n + 1, NULL);
}

/* The device numbers of vm's disks (xvda: 51712, ...); -1 with err set
 * (INVALID_DEVICE) for a name that has none. */
static int disk_devids(const struct xenops_vm *vm, int *devids, struct xerr *err)
{
	for (int i = 0; i < vm->ndisks; i++) {
		devids[i] = vdev_number(vm->disks[i].device, vm->disks[i].userdevice);
		if (devids[i] < 0) {
			xerr_set(err, "INVALID_DEVICE", 1, vm->disks[i].device);
			return -1;
		}
	}
	return 0;
}

/* As libxl's domain create after the hypervisor's part: the tree,
 * introduce, the devices one by one (disks, the console, NICs; each with
 * its backend probe and hotplug script). */
static int tree_write(const struct xenops_vm *vm, uint32_t domid, const int *devids)
{
	struct build b = { vm, domid, devids };
	int r = in_tx(domain_tree, &b);
	if (!r)
		r = introduce(domid);
	for (int i = 0; !r && i < vm->ndisks; i++)
		if (disk_plugged(vm, i))
			r = device_add(domid, &vm->disks[i], NULL, devids[i]);
	if (!r)
		r = device_add(domid, NULL, NULL, 0);
	for (int i = 0; !r && i < vm->nnics; i++)
		r = device_add(domid, NULL, &vm->nics[i], vm->nics[i].devid);
	return r;
}

/* After create (or restore): the tree and devices, then unpause. */
static int domain_build(const struct xenops_vm *vm, uint32_t domid, bool paused,
			struct xerr *err)
{
	int devids[vm->ndisks + 1];
	if (disk_devids(vm, devids, err)) {
		domain_destroy(domid, vm->uuid);
		return -1;
	}
	known_add(domid, vm->uuid, false);
	int r = tree_write(vm, domid, devids);
	if (!r)
		watch_domain(domid, true);
	if (!r && !paused)
		r = X.hv->domain_unpause(domid);
	if (r) {
		domain_destroy(domid, vm->uuid);
		return fail(err, "xenops: building domain %u of VM %s: %s", domid, vm->uuid,
			    strerror(-r));
	}
	return 0;
}

/* ---- the interface ------------------------------------------------------ */

static int start_xenstored(const char *bin, const char *state_dir, const char *sock,
			   const char *rundir, struct xerr *err)
{
	int fd = hv_connect_unix(sock, 0);
	if (fd >= 0) { /* one is running: keep it (it holds running domains' trees) */
		close(fd);
		return 0;
	}
	if (!bin || access(bin, X_OK))
		return fail(err, "xenops: no xenstored to start (%s)", bin ? bin : "unset");
	char log[PATH_MAX];
	snprintf(log, sizeof(log), "%s/xenstored.log", state_dir);
	char *argv[] = { (char *)bin, "--socket", (char *)sock, "--rundir",
			 (char *)rundir, NULL };
	char pidf[PATH_MAX + 32];
	snprintf(pidf, sizeof(pidf), "%s/xenstored.pid", rundir);
	int r = hv_spawn_daemon(argv, log, pidf);
	if (r)
		return fail(err, "xenops: cannot start xenstored: %s", strerror(-r));
	fd = hv_connect_unix(sock, 5000);
	if (fd < 0)
		return fail(err, "xenops: xenstored did not come up (see %s)", log);
	close(fd);
	return 0;
}

/* What a real dom0 has written before any guest: its kernel's
 * control/feature-* (Linux's shutdown handler) and xen-init-dom0's pool
 * name.  Only if absent: a running xenstored keeps them. */
static void dom0_keys(void)
{
	static const char *const kv[] = {
		"/local/domain/0/control/feature-poweroff", "1",
		"/local/domain/0/control/feature-reboot", "1",
		"/local/domain/0/control/feature-suspend", "1",
		"/local/pool/0/name", "Pool-0" };
	for (unsigned i = 0; i < sizeof(kv) / sizeof(*kv); i += 2) {
		char *v = rd(NULL, "%s", kv[i]);
		if (!v)
			put(kv[i], kv[i + 1]);
		free(v);
	}
}

int xenops_init(const struct xenops_settings *s, xenops_event_fn fn, void *ctx, struct xerr *err)
{
	if (!s->backend || strcmp(s->backend, "sim"))
		return fail(err, "xenops: backend %s is not supported", s->backend ? s->backend : "");
	if (!s->state_dir)
		return fail(err, "xenops: no state directory");
	char rundir[PATH_MAX], sock[PATH_MAX + 16];
	snprintf(rundir, sizeof(rundir), "%s/xs", s->state_dir);
	snprintf(sock, sizeof(sock), "%s/socket", rundir);
	int r = util_mkdir_p(rundir, 0755);
	if (r)
		return fail(err, "xenops: cannot create %s: %s", rundir, strerror(-r));
	if (start_xenstored(s->xenstored_bin, s->state_dir, sock, rundir, err))
		return -1;
	free(X.sock), free(X.rundir), free(X.xenstored_bin), free(X.state_dir);
	X.sock = util_strdup(sock);
	X.rundir = util_strdup(rundir);
	X.xenstored_bin = s->xenstored_bin ? util_strdup(s->xenstored_bin) : NULL;
	X.state_dir = util_strdup(s->state_dir);
	/* libxenstore finds the daemon through XENSTORED_PATH only */
	setenv("XENSTORED_PATH", sock, 1);
	X.xs = xs_open(0);
	X.xsc = X.xs ? xsc_open(sock) : NULL;
	if (!X.xsc) {
		int e = errno;
		if (X.xs)
			xs_close(X.xs);
		X.xs = NULL;
		return fail(err, "xenops: cannot connect to xenstored at %s: %s", sock,
			    strerror(e));
	}
	dom0_keys();
	X.hv = &hv_sim;
	const char *why = "";
	r = X.hv->open(s, &why);
	if (r) {
		xs_close(X.xs);
		X.xs = NULL;
		xsc_close(X.xsc);
		X.xsc = NULL;
		return fail(err, "xenops: %s: %s", why, strerror(-r));
	}
	X.fn = fn;
	X.ctx = ctx;
	/* the domains already running (xapi restarted): known, watched */
	struct hv_info *v = NULL;
	int n = 0;
	if (!X.hv->domain_list(&v, &n)) {
		for (int i = 0; i < n; i++) {
			bool down = v[i].state == XENOPS_SHUTDOWN || v[i].state == XENOPS_DYING;
			known_add(v[i].domid, v[i].uuid, down);
		}
		free(v);
	}
	X.stopping = false;
	if (!watch_all() || pthread_create(&X.watcher, NULL, watcher_main, NULL)) {
		xenops_shutdown();
		return fail(err, "xenops: cannot watch @releaseDomain");
	}
	X.watcher_on = true;
	return 0;
}

void xenops_shutdown(void)
{
	if (X.watcher_on) {
		X.stopping = true;
		/* a new watch fires at once: it wakes the watcher to see stopping */
		xs_watch_set("/local/domain/0", "stop", true);
		pthread_join(X.watcher, NULL);
		X.watcher_on = false;
	}
	if (X.xs)
		xs_close(X.xs);
	X.xs = NULL;
	xsc_close(X.xsc);
	X.xsc = NULL;
	if (X.hv)
		X.hv->close();
	X.hv = NULL;
	for (uint32_t i = 0; i < DOMID_MAX; i++)
		known_del(i);
	free(X.sock), free(X.rundir), free(X.xenstored_bin), free(X.state_dir);
	X.sock = X.rundir = X.xenstored_bin = X.state_dir = NULL;
}

static int not_ready(struct xerr *err)
{
	return fail(err, "xenops: not initialised");
}

static int no_domain(struct xerr *err, uint32_t domid)
{
	return fail(err, "xenops: domain %u does not exist", domid);
}

int xenops_start(const struct xenops_vm *vm, bool paused, uint32_t *domid, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!vm->vcpus_max || !vm->memory_static_max)
		return fail(err, "xenops: VM %s has no memory or no vCPUs", vm->uuid);
	uint64_t kib = vm->memory_static_max / 1024;
	int r = X.hv->domain_create(vm->uuid, kib, vm->vcpus_max, domid);
	if (r == -ENOMEM) {
		uint64_t total = 0, avail = 0;
		X.hv->host_memory(&total, &avail);
		char need[32], have[32];
		snprintf(need, sizeof(need), "%" PRIu64,
			 vm->memory_static_max + (uint64_t)vm->vcpus_max * HV_SIM_VCPU_OVERHEAD_KIB * 1024);
		snprintf(have, sizeof(have), "%" PRIu64, avail);
		xerr_set(err, "HOST_NOT_ENOUGH_FREE_MEMORY", 2, need, have);
		return -1;
	}
	if (r == -EIO)
		return fail(err, "xenops: the hypervisor could not build a domain for VM %s",
			    vm->uuid);
	if (r)
		return hv_fail(err, 0, "domain create", r);
	return domain_build(vm, *domid, paused, err);
}

int xenops_rewrite(const struct xenops_vm *vm, uint32_t domid, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!known_uuid(domid, NULL))
		return no_domain(err, domid);
	char *there = rd(NULL, "/local/domain/%u/domid", domid);
	free(there);
	if (there) /* a restart that kept its store */
		return 0;
	int devids[vm->ndisks + 1];
	if (disk_devids(vm, devids, err))
		return -1;
	int r = tree_write(vm, domid, devids);
	return r ? fail(err, "xenops: rewriting the tree of domain %u: %s", domid, strerror(-r)) : 0;
}

struct shut_wait {
	uint32_t domid;
	enum xenops_reason why;
};

static int shut_check(void *arg)
{
	struct shut_wait *w = arg;
	struct hv_info i;
	int r = X.hv->domain_getinfo(w->domid, &i);
	if (r)
		return r;
	if (i.state != XENOPS_SHUTDOWN && i.state != XENOPS_DYING)
		return 0;
	return i.reason == w->why ? 1 : -EINTR; /* another reason: crashed meanwhile */
}

int xenops_clean_shutdown(uint32_t domid, enum xenops_reason why, int timeout_s,
			  int (*cancel)(void *ctx), void *cctx, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	char uuid[40] = "";
	known_uuid(domid, uuid);
	struct hv_info i;
	int r = X.hv->domain_getinfo(domid, &i);
	if (r)
		return hv_fail(err, domid, "clean shutdown", r);
	if (why == XENOPS_CRASH || (unsigned)why > XENOPS_HALT)
		return fail(err, "xenops: no clean shutdown with reason %d", (int)why);
	char p[128];
	PATHF(p, "/local/domain/%u/control/shutdown", domid);
	const char *req = reason_names[why];
	if ((r = put(p, req)))
		return fail(err, "xenops: cannot write %s: %s", p, strerror(-r));
	struct shut_wait w = { domid, why };
	r = wait_for(shut_check, &w, timeout_s, cancel, cctx);
	if (r == -ETIMEDOUT) {
		char t[16];
		snprintf(t, sizeof(t), "%d", timeout_s);
		xerr_set(err, "VM_SHUTDOWN_TIMEOUT", 2, uuid, t);
		return -1;
	}
	if (r == -ECANCELED) {
		xerr_set(err, "TASK_CANCELLED", 0);
		return -1;
	}
	if (r == -EINTR)
		return fail(err, "xenops: domain %u shut down for another reason than %s", domid,
			    req);
	if (r)
		return hv_fail(err, domid, "clean shutdown", r);
	return 0;
}

int xenops_destroy(uint32_t domid, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	char uuid[40] = "";
	struct hv_info i;
	if (!X.hv->domain_getinfo(domid, &i))
		memcpy(uuid, i.uuid, sizeof(uuid));
	else if (!known_uuid(domid, uuid))
		return no_domain(err, domid);
	int r = domain_destroy(domid, uuid);
	return r ? hv_fail(err, domid, "destroy", r) : 0;
}

int xenops_pause(uint32_t domid, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	int r = X.hv->domain_pause(domid);
	return r ? hv_fail(err, domid, "pause", r) : 0;
}

int xenops_unpause(uint32_t domid, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	int r = X.hv->domain_unpause(domid);
	return r ? hv_fail(err, domid, "unpause", r) : 0;
}

int xenops_suspend(uint32_t domid, int fd, struct xerr *err)
{
	if (xenops_clean_shutdown(domid, XENOPS_SUSPEND, SUSPEND_TIMEOUT_S, NULL, NULL, err))
		return -1;
	int r = X.hv->suspend_write(domid, fd);
	if (r)
		return hv_fail(err, domid, "writing the suspend image", r);
	return xenops_destroy(domid, err);
}

int xenops_resume(const struct xenops_vm *vm, int fd, bool paused, uint32_t *domid,
		  struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	int r = X.hv->resume_read(fd, vm->uuid, domid);
	if (r == -ENOMEM) {
		uint64_t total = 0, avail = 0;
		X.hv->host_memory(&total, &avail);
		char need[32], have[32];
		snprintf(need, sizeof(need), "%" PRIu64, vm->memory_static_max);
		snprintf(have, sizeof(have), "%" PRIu64, avail);
		xerr_set(err, "HOST_NOT_ENOUGH_FREE_MEMORY", 2, need, have);
		return -1;
	}
	if (r == -EINVAL)
		return fail(err, "xenops: the suspend image of VM %s is not valid", vm->uuid);
	if (r)
		return hv_fail(err, 0, "restoring the suspend image", r);
	return domain_build(vm, *domid, paused, err);
}

/* ---- devices of a running domain ---------------------------------------- */

static int dev_exists(const char *kind, uint32_t domid, int devid)
{
	char *v = rd(NULL, "/local/domain/0/backend/%s/%u/%d/state", kind, domid, devid);
	free(v);
	return v != NULL;
}

static int plug(uint32_t domid, const struct xenops_disk *d, const struct xenops_nic *n,
		int devid, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!known_uuid(domid, NULL))
		return no_domain(err, domid);
	const char *kind = d ? "vbd" : "vif";
	if (dev_exists(kind, domid, devid)) {
		char id[16];
		snprintf(id, sizeof(id), "%d", devid);
		xerr_set(err, "DEVICE_ALREADY_EXISTS", 1, d ? d->device : id);
		return -1;
	}
	int r = device_add(domid, d, n, devid);
	if (r)
		return fail(err, "xenops: plugging %s %d into domain %u: %s", kind, devid, domid,
			    strerror(-r));
	return 0;
}

int xenops_disk_plug(uint32_t domid, const struct xenops_disk *d, struct xerr *err)
{
	int devid = vdev_number(d->device, d->userdevice);
	if (devid < 0) {
		xerr_set(err, "INVALID_DEVICE", 1, d->device);
		return -1;
	}
	return plug(domid, d, NULL, devid, err);
}

int xenops_nic_plug(uint32_t domid, const struct xenops_nic *n, struct xerr *err)
{
	return plug(domid, NULL, n, n->devid, err);
}

struct unplug_wait {
	const char *kind;
	uint32_t domid;
	int devid;
};

static int unplug_check(void *arg)
{
	struct unplug_wait *w = arg;
	char *v = rd(NULL, "/local/domain/0/backend/%s/%u/%d/state", w->kind, w->domid,
		     w->devid);
	int st = v ? atoi(v) : XenbusStateClosed;
	free(v);
	return st == XenbusStateClosed;
}

static void closing_fill(struct tx *t, void *arg)
{
	const struct devp *d = arg;
	char p[320];
	PATHF(p, "%s/online", d->be); wr(t, p, "0");
	PATHF(p, "%s/state", d->be); wr(t, p, "%d", XenbusStateClosing);
}

/* libxl's device remove: the backend goes offline and Closing; the
 * frontend follows to Closed and the backend after it (backend_step); then
 * the dirs go (libxl__device_destroy). */
static int unplug(const char *kind, uint32_t domid, int devid, const char *name, bool force,
		  struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!dev_exists(kind, domid, devid)) {
		xerr_set(err, "DEVICE_ALREADY_DETACHED", 1, name);
		return -1;
	}
	struct devp d;
	dev_paths(&d, kind, domid, devid);
	if (!force) {
		in_tx(closing_fill, &d);
		struct unplug_wait w = { kind, domid, devid };
		if (wait_for(unplug_check, &w, UNPLUG_TIMEOUT_S, NULL, NULL)) {
			xerr_set(err, "DEVICE_DETACH_TIMEOUT", 2, kind, name);
			return -1;
		}
	}
	dev_release(kind, &d);
	if (!strcmp(kind, "vif")) {
		char p[320];
		PATHF(p, "%s/hotplug-status", d.be);
		del(p);
	}
	in_tx(dev_destroy_fill, &d);
	return 0;
}

int xenops_disk_unplug(uint32_t domid, const char *device, bool force, struct xerr *err)
{
	int devid = vdev_number(device, -1);
	if (devid < 0) {
		xerr_set(err, "INVALID_DEVICE", 1, device);
		return -1;
	}
	return unplug("vbd", domid, devid, device, force, err);
}

int xenops_nic_unplug(uint32_t domid, int devid, bool force, struct xerr *err)
{
	char name[16];
	snprintf(name, sizeof(name), "%d", devid);
	return unplug("vif", domid, devid, name, force, err);
}

/* A CD's medium is the backend's params (as libxl_cdrom_insert). */
static int cd_set(uint32_t domid, const char *device, const char *path, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	int devid = vdev_number(device, -1);
	if (devid < 0) {
		xerr_set(err, "INVALID_DEVICE", 1, device);
		return -1;
	}
	char *dt = rd(NULL, "/local/domain/0/backend/vbd/%u/%d/device-type", domid, devid);
	bool cd = dt && !strcmp(dt, "cdrom");
	free(dt);
	if (!cd) {
		xerr_set(err, "VBD_NOT_REMOVABLE_MEDIA", 1, device);
		return -1;
	}
	char p[320];
	PATHF(p, "/local/domain/0/backend/vbd/%u/%d/params", domid, devid);
	int r = put(p, path);
	if (r)
		return fail(err, "xenops: cannot write %s: %s", p, strerror(-r));
	PATHF(p, "/libxl/%u/device/vbd/%d/params", domid, devid);
	put(p, path);
	return 0;
}

int xenops_cd_insert(uint32_t domid, const char *device, const char *path, struct xerr *err)
{
	return cd_set(domid, device, path, err);
}

int xenops_cd_eject(uint32_t domid, const char *device, struct xerr *err)
{
	return cd_set(domid, device, "", err);
}

/* ---- live settings -------------------------------------------------------- */

static int write_key(uint32_t domid, const char *key, const char *val, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!known_uuid(domid, NULL))
		return no_domain(err, domid);
	char p[256];
	PATHF(p, "/local/domain/%u/%s", domid, key);
	int r = put(p, val);
	if (r)
		return fail(err, "xenops: cannot write %s: %s", p, strerror(-r));
	return 0;
}

int xenops_get_memory_target(uint32_t domid, uint64_t *bytes, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	char *v = rd(NULL, "/local/domain/%u/memory/target", domid);
	if (!v)
		return no_domain(err, domid);
	*bytes = strtoull(v, NULL, 10) * 1024;
	free(v);
	return 0;
}

int xenops_set_memory_target(uint32_t domid, uint64_t bytes, struct xerr *err)
{
	char v[32];
	snprintf(v, sizeof(v), "%" PRIu64, bytes / 1024);
	return write_key(domid, "memory/target", v, err);
}

int xenops_set_vcpus(uint32_t domid, uint32_t n, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	struct hv_info i;
	int r = X.hv->domain_getinfo(domid, &i);
	if (r)
		return hv_fail(err, domid, "set vCPUs", r);
	if (!n || n > i.vcpus_max) {
		char v[16];
		snprintf(v, sizeof(v), "%u", n);
		xerr_set(err, "INVALID_VALUE", 2, "VCPUs", v);
		return -1;
	}
	for (uint32_t c = 0; c < i.vcpus_max; c++) {
		char k[64];
		snprintf(k, sizeof(k), "cpu/%u/availability", c);
		if (write_key(domid, k, c < n ? "online" : "offline", err))
			return -1;
	}
	r = X.hv->domain_set_vcpus(domid, n);
	return r ? hv_fail(err, domid, "set vCPUs", r) : 0;
}

int xenops_sysrq(uint32_t domid, char key, struct xerr *err)
{
	char v[2] = { key, 0 };
	return write_key(domid, "control/sysrq", v, err);
}

int xenops_trigger(uint32_t domid, const char *trigger, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!known_uuid(domid, NULL))
		return no_domain(err, domid);
	char *type = rd(NULL, "/libxl/%u/type", domid);
	bool hvm = type && !strcmp(type, "hvm");
	free(type);
	int r = X.hv->domain_trigger(domid, trigger, hvm);
	if (r == -EINVAL)
		return fail(err, "xenops: trigger %s: not supported for domain %u (%s guest)",
			    trigger, domid, hvm ? "HVM" : "PV");
	return r ? hv_fail(err, domid, "trigger", r) : 0;
}

/* ---- reports -------------------------------------------------------------- */

uint64_t xenops_host_free_memory(void)
{
	uint64_t total = 0, avail = 0;
	if (X.hv)
		X.hv->host_memory(&total, &avail);
	return avail;
}

static void to_dominfo(const struct hv_info *i, struct xenops_dominfo *o)
{
	memset(o, 0, sizeof(*o));
	o->domid = i->domid;
	memcpy(o->uuid, i->uuid, sizeof(o->uuid));
	o->state = i->state;
	o->reason = i->reason;
	o->memory_actual = i->mem_kib * 1024;
	o->vcpus_online = i->vcpus_online;
	o->cpu_time = i->cpu_time;
}

int xenops_list(struct xenops_dominfo **out, int *n, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	struct hv_info *v;
	int r = X.hv->domain_list(&v, n);
	if (r)
		return hv_fail(err, 0, "list", r);
	*out = util_calloc((size_t)*n + 1, sizeof(**out));
	for (int i = 0; i < *n; i++)
		to_dominfo(&v[i], &(*out)[i]);
	free(v);
	return 0;
}

int xenops_info(uint32_t domid, struct xenops_dominfo *out, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	struct hv_info i;
	int r = X.hv->domain_getinfo(domid, &i);
	if (r)
		return hv_fail(err, domid, "info", r);
	to_dominfo(&i, out);
	return 0;
}

/* Append "<prefix><key>=<value>\n" for each listed key that exists. */
/* Many reads or directory listings in one round trip: val is the value
 * (a listing: the names, each NUL-terminated, len bytes), NULL if absent;
 * malloc'd. */
struct get {
	char path[192];
	bool dir;
	char *val;
	size_t len;
};

static void got(void *ctx, int i, int err, const char *p, size_t len)
{
	struct get *g = (struct get *)ctx + i;
	if (err)
		return;
	g->val = util_malloc(len + 1);
	memcpy(g->val, p, len);
	g->val[len] = 0;
	g->len = len;
}

static void get_many(struct get *g, int n)
{
	struct xsq q;
	xsq_init(&q, 0);
	for (int i = 0; i < n; i++)
		xsq_add(&q, g[i].dir ? XS_DIRECTORY : XS_READ, false, g[i].path, NULL, 0);
	if (xsc_run_each(X.xsc, &q, got, g))
		for (int i = 0; i < n; i++) { /* a failed batch: nothing is known */
			free(g[i].val);
			g[i].val = NULL;
		}
	xsq_free(&q);
}

/* Each name of a listing read by get_many, nm pointing at it. */
#define EACH_NAME(nm, g) \
	for (const char *nm = (g)->val; nm && nm < (g)->val + (g)->len; nm += strlen(nm) + 1)

static int names_n(const struct get *g)
{
	int n = 0;
	EACH_NAME(nm, g)
		n++;
	return n;
}

static void gets_free(struct get *g, int n)
{
	for (int i = 0; i < n; i++)
		free(g[i].val);
	free(g);
}

/* "name=value\n" lines of the keys (key, name pairs) that have values. */
static void gather(char *out, size_t n, const char *const *keys, const struct get *g)
{
	size_t len = strlen(out);
	for (int i = 0; keys[i]; i += 2, g++)
		if (g->val && len < n)
			len += (size_t)snprintf(out + len, n - len, "%s=%s\n", keys[i + 1], g->val);
	if (len >= n)
		out[n - 1] = 0;
}

static bool is1(const struct get *g)
{
	return g->val && !strcmp(g->val, "1");
}

/* The guest agent's report, read in three round trips: the keys and the
 * attr/vif listing; each NIC's address listings; the addresses. */
int xenops_guest(uint32_t domid, struct xenops_guest *out, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!known_uuid(domid, NULL))
		return no_domain(err, domid);
	memset(out, 0, sizeof(*out));
	static const char *const os[] = {
		"data/os_name", "name", "data/os_uname", "uname", "data/os_distro", "distro",
		"data/os_majorver", "major", "data/os_minorver", "minor", "attr/os/spmajor",
		"spmajor", "attr/os/spminor", "spminor", NULL };
	static const char *const pv[] = {
		"attr/PVAddons/MajorVersion", "major", "attr/PVAddons/MinorVersion", "minor",
		"attr/PVAddons/MicroVersion", "micro", "attr/PVAddons/BuildVersion", "build",
		"attr/PVAddons/Application", "application", NULL };
	static const char *const more[] = {
		"data/updated", "data/meminfo_free", "data/meminfo_total",
		"control/feature-suspend", "control/feature-poweroff", "control/feature-shutdown",
		"attr/vif", NULL };
	enum { NOS = 7, NPV = 5, UPD = NOS + NPV, MFREE, MTOTAL, FSUSP, FPOFF, FSHUT, VIFS, NKEYS };
	struct get *g = util_calloc(NKEYS, sizeof(*g));
	for (int i = 0; i < NKEYS; i++) {
		const char *k = i < NOS ? os[2 * i] : i < UPD ? pv[2 * (i - NOS)] : more[i - UPD];
		PATHF(g[i].path, "/local/domain/%u/%s", domid, k);
		g[i].dir = i == VIFS;
	}
	get_many(g, NKEYS);
	out->present = g[UPD].val != NULL; /* the original trusts data/ once this exists */
	gather(out->os_version, sizeof(out->os_version), os, g);
	gather(out->pv_drivers, sizeof(out->pv_drivers), pv, g + NOS);
	out->memory_free = g[MFREE].val ? strtoull(g[MFREE].val, NULL, 10) * 1024 : 0;
	out->memory_total = g[MTOTAL].val ? strtoull(g[MTOTAL].val, NULL, 10) * 1024 : 0;
	out->can_suspend = is1(&g[FSUSP]);
	out->feature_shutdown = is1(&g[FPOFF]) || is1(&g[FSHUT]);
	/* attr/vif/<n>/ipv4/<i> and ipv6/<i>: "<n>/ipv4/<i>", and "<n>/ip" for
	 * the first IPv4 address */
	static const char *const fam[] = { "ipv4", "ipv6" };
	int nl = 2 * names_n(&g[VIFS]);
	struct get *l = util_calloc((size_t)nl + 1, sizeof(*l));
	int k = 0;
	EACH_NAME(n, &g[VIFS])
		for (int f = 0; f < 2; f++, k++) {
			PATHF(l[k].path, "%.100s/%.40s/%s", g[VIFS].path, n, fam[f]);
			l[k].dir = true;
		}
	get_many(l, nl);
	int na = 0;
	for (int i = 0; i < nl; i++)
		na += names_n(&l[i]);
	struct get *a = util_calloc((size_t)na + 1, sizeof(*a));
	k = 0;
	for (int i = 0; i < nl; i++)
		EACH_NAME(idx, &l[i])
			PATHF(a[k++].path, "%.150s/%.40s", l[i].path, idx);
	get_many(a, na);
	size_t len = 0, cap = sizeof(out->networks);
	const char *vif = g[VIFS].val;
	k = 0;
	for (int i = 0; i < nl; i++) {
		if (i && i % 2 == 0)
			vif += strlen(vif) + 1;
		EACH_NAME(idx, &l[i]) {
			const char *ip = a[k++].val;
			if (ip && len < cap && i % 2 == 0 && !strcmp(idx, "0"))
				len += (size_t)snprintf(out->networks + len, cap - len, "%s/ip=%s\n",
							vif, ip);
			if (ip && len < cap)
				len += (size_t)snprintf(out->networks + len, cap - len, "%s/%s/%s=%s\n",
							vif, fam[i % 2], idx, ip);
		}
	}
	if (len >= cap)
		out->networks[cap - 1] = 0;
	gets_free(a, na);
	gets_free(l, nl);
	gets_free(g, NKEYS);
	out->last_updated = util_now();
	return 0;
}
