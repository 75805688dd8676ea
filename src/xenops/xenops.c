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

#include "base/util.h"
#include "xenops/hv.h"
#include "xenops/xenops.h"

#define DOMID_MAX 0x7FF0u
#define STORE_MFN 0xFEFFFu   /* the store ring's frame, as the sim pretends */
#define STORE_PORT 1u
#define CONSOLE_PORT 2u
#define UNPLUG_TIMEOUT_S 10
#define SUSPEND_TIMEOUT_S 600

struct known {
	char uuid[40];
	bool reported;          /* its shutdown was reported */
};

static struct {
	const struct hv_ops *hv;
	struct xs_handle *xs;
	xenops_event_fn fn;
	void *ctx;
	pthread_t watcher;
	bool watcher_on, stopping;
	pthread_mutex_t lock;   /* known[], gen */
	pthread_cond_t changed;
	uint64_t gen;
	struct known *known[DOMID_MAX];
} X = { .lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER };

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

/* Read a key (NULL if absent); malloc'd. */
static char *rd(xs_transaction_t t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *rd(xs_transaction_t t, const char *fmt, ...)
{
	char p[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p, sizeof(p), fmt, ap);
	va_end(ap);
	unsigned len;
	return xs_read(X.xs, t, p, &len);
}

/* A transaction of writes; errors are collected and reported at the end. */
struct tx {
	xs_transaction_t t;
	bool bad;
};

static void wr(struct tx *t, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void wr(struct tx *t, const char *path, const char *fmt, ...)
{
	char v[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	if (!xs_write(X.xs, t->t, path, v, (unsigned)(n < (int)sizeof(v) ? n : (int)sizeof(v) - 1)))
		t->bad = true;
}

/* Create a node (empty unless it exists) with these permissions. */
static void mk(struct tx *t, const char *path, const struct xs_permissions *p, unsigned n)
{
	unsigned len;
	char *old = xs_read(X.xs, t->t, path, &len);
	if (!old && !xs_write(X.xs, t->t, path, "", 0))
		t->bad = true;
	free(old);
	if (!xs_set_permissions(X.xs, t->t, path, (struct xs_permissions *)p, n))
		t->bad = true;
}

#define PATHF(buf, ...) snprintf(buf, sizeof(buf), __VA_ARGS__)

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

/* The generic part of a device (libxl__device_generic_add): frontend and
 * backend directories with their permissions, and libxl's own record. */
static void dev_common(struct tx *t, const char *kind, uint32_t domid, int devid,
		       const char *fe_dir)
{
	char fe[256], be[256], p[320];
	if (fe_dir)
		snprintf(fe, sizeof(fe), "%s", fe_dir);
	else
		PATHF(fe, "/local/domain/%u/device/%s/%d", domid, kind, devid);
	be_path(be, sizeof(be), kind, domid, devid);
	struct xs_permissions feperm[2] = { { domid, XS_PERM_NONE }, { 0, XS_PERM_READ } };
	struct xs_permissions beperm[2] = { { 0, XS_PERM_NONE }, { domid, XS_PERM_READ } };
	mk(t, fe, feperm, 2);
	mk(t, be, beperm, 2);
	PATHF(p, "%s/backend", fe); wr(t, p, "%s", be);
	PATHF(p, "%s/backend-id", fe); wr(t, p, "0");
	PATHF(p, "%s/state", fe); wr(t, p, "%d", XenbusStateInitialising);
	PATHF(p, "%s/frontend", be); wr(t, p, "%s", fe);
	PATHF(p, "%s/frontend-id", be); wr(t, p, "%u", domid);
	PATHF(p, "%s/online", be); wr(t, p, "1");
	PATHF(p, "%s/state", be); wr(t, p, "%d", XenbusStateInitialising);
	PATHF(p, "/libxl/%u/device/%s/%d/frontend", domid, kind, devid); wr(t, p, "%s", fe);
	PATHF(p, "/libxl/%u/device/%s/%d/backend", domid, kind, devid); wr(t, p, "%s", be);
}

static void disk_tree(struct tx *t, uint32_t domid, const struct xenops_disk *d, int devid)
{
	char fe[256], be[256], p[320];
	PATHF(fe, "/local/domain/%u/device/vbd/%d", domid, devid);
	be_path(be, sizeof(be), "vbd", domid, devid);
	dev_common(t, "vbd", domid, devid, NULL);
	const char *dtype = d->cdrom ? "cdrom" : "disk";
	PATHF(p, "%s/virtual-device", fe); wr(t, p, "%d", devid);
	PATHF(p, "%s/device-type", fe); wr(t, p, "%s", dtype);
	PATHF(p, "%s/trusted", fe); wr(t, p, "1");
	PATHF(p, "%s/dev", be); wr(t, p, "%s", d->device);
	PATHF(p, "%s/type", be); wr(t, p, "phy");
	PATHF(p, "%s/params", be); wr(t, p, "%s", d->empty ? "" : d->path);
	PATHF(p, "%s/mode", be); wr(t, p, "%s", d->read_only || d->cdrom ? "r" : "w");
	PATHF(p, "%s/device-type", be); wr(t, p, "%s", dtype);
	PATHF(p, "%s/removable", be); wr(t, p, "%d", d->cdrom ? 1 : 0);
	PATHF(p, "%s/bootable", be); wr(t, p, "%d", d->bootable ? 1 : 0);
	PATHF(p, "%s/discard-enable", be); wr(t, p, "%d", d->read_only || d->cdrom ? 0 : 1);
	PATHF(p, "%s/script", be); wr(t, p, "/etc/xen/scripts/block");
	PATHF(p, "/libxl/%u/device/vbd/%d/params", domid, devid);
	wr(t, p, "%s", d->empty ? "" : d->path);
}

static void nic_tree(struct tx *t, uint32_t domid, const struct xenops_nic *n)
{
	char fe[256], be[256], p[320];
	PATHF(fe, "/local/domain/%u/device/vif/%d", domid, n->devid);
	be_path(be, sizeof(be), "vif", domid, n->devid);
	dev_common(t, "vif", domid, n->devid, NULL);
	PATHF(p, "%s/handle", fe); wr(t, p, "%d", n->devid);
	PATHF(p, "%s/mac", fe); wr(t, p, "%s", n->mac);
	PATHF(p, "%s/trusted", fe); wr(t, p, "1");
	PATHF(p, "%s/handle", be); wr(t, p, "%d", n->devid);
	PATHF(p, "%s/mac", be); wr(t, p, "%s", n->mac);
	PATHF(p, "%s/bridge", be); wr(t, p, "%s", n->bridge);
	PATHF(p, "%s/mtu", be); wr(t, p, "%u", n->mtu ? n->mtu : 1500);
	PATHF(p, "%s/type", be); wr(t, p, "vif");
	PATHF(p, "%s/script", be); wr(t, p, "/etc/xen/scripts/vif-bridge");
	PATHF(p, "/libxl/%u/device/vif/%d/mac", domid, n->devid); wr(t, p, "%s", n->mac);
}

/* What the hotplug script and the backend driver's probe write once the
 * backend directory exists: the device is ready for its frontend. */
static void backend_probe(struct tx *t, const char *kind, uint32_t domid, int devid,
			  const char *params)
{
	char be[256], p[320];
	be_path(be, sizeof(be), kind, domid, devid);
	PATHF(p, "%s/hotplug-status", be); wr(t, p, "connected");
	if (!strcmp(kind, "vbd")) {
		PATHF(p, "%s/physical-device", be); wr(t, p, "fe:%x", devid & 0xff);
		PATHF(p, "%s/physical-device-path", be); wr(t, p, "%s", params ? params : "");
		PATHF(p, "%s/feature-flush-cache", be); wr(t, p, "1");
		PATHF(p, "%s/feature-persistent", be); wr(t, p, "1");
		PATHF(p, "%s/max-ring-page-order", be); wr(t, p, "4");
	} else if (!strcmp(kind, "vif")) {
		PATHF(p, "%s/feature-sg", be); wr(t, p, "1");
		PATHF(p, "%s/feature-gso-tcpv4", be); wr(t, p, "1");
		PATHF(p, "%s/feature-gso-tcpv6", be); wr(t, p, "1");
		PATHF(p, "%s/feature-ipv6-csum-offload", be); wr(t, p, "1");
		PATHF(p, "%s/feature-rx-copy", be); wr(t, p, "1");
		PATHF(p, "%s/feature-rx-flip", be); wr(t, p, "0");
		PATHF(p, "%s/feature-multicast-control", be); wr(t, p, "1");
		PATHF(p, "%s/multi-queue-max-queues", be); wr(t, p, "2");
	}
	if (strcmp(kind, "console")) {
		PATHF(p, "%s/state", be); wr(t, p, "%d", XenbusStateInitWait);
	}
}

/* Run fill() in a transaction, retrying on EAGAIN. */
static int in_tx(void (*fill)(struct tx *t, void *arg), void *arg)
{
	for (int tries = 0; tries < 100; tries++) {
		struct tx t = { xs_transaction_start(X.xs), false };
		if (t.t == XBT_NULL)
			return -errno;
		fill(&t, arg);
		if (t.bad) {
			int e = errno;
			xs_transaction_end(X.xs, t.t, true);
			return -(e ? e : EIO);
		}
		if (xs_transaction_end(X.xs, t.t, false))
			return 0;
		if (errno != EAGAIN)
			return -errno;
	}
	return -EAGAIN;
}

/* ---- the backend drivers (run on the watcher thread) -------------------- */

/* A frontend's state changed: the backend's next step, as blkback/netback. */
static void backend_step(uint32_t domid, const char *kind, int devid)
{
	char be[256], p[320];
	be_path(be, sizeof(be), kind, domid, devid);
	char *fs = rd(XBT_NULL, "/local/domain/%u/device/%s/%d/state", domid, kind, devid);
	int fe = fs ? atoi(fs) : -1;
	free(fs);
	PATHF(p, "%s/state", be);
	char *bs = rd(XBT_NULL, "%s", p);
	if (!bs)
		return;
	int b = atoi(bs);
	free(bs);
	if ((fe == XenbusStateInitialised || fe == XenbusStateConnected) &&
	    b == XenbusStateInitWait) {
		if (!strcmp(kind, "vbd")) {
			char *params = rd(XBT_NULL, "%s/params", be);
			struct stat st;
			uint64_t sectors = params && *params && !stat(params, &st) ?
				(uint64_t)st.st_size / 512 : 0;
			char *mode = rd(XBT_NULL, "%s/mode", be);
			char *dt = rd(XBT_NULL, "%s/device-type", be);
			unsigned info = (mode && !strcmp(mode, "r") ? 4 : 0) |
					(dt && !strcmp(dt, "cdrom") ? 1 : 0);
			free(params);
			free(mode);
			free(dt);
			char v[32];
			PATHF(p, "%s/sectors", be);
			snprintf(v, sizeof(v), "%" PRIu64, sectors);
			xs_write(X.xs, XBT_NULL, p, v, (unsigned)strlen(v));
			PATHF(p, "%s/info", be);
			snprintf(v, sizeof(v), "%u", info);
			xs_write(X.xs, XBT_NULL, p, v, (unsigned)strlen(v));
			PATHF(p, "%s/sector-size", be);
			xs_write(X.xs, XBT_NULL, p, "512", 3);
			PATHF(p, "%s/physical-sector-size", be);
			xs_write(X.xs, XBT_NULL, p, "512", 3);
		}
		PATHF(p, "%s/state", be);
		xs_write(X.xs, XBT_NULL, p, "4", 1);
	} else if ((fe == XenbusStateClosing || fe == XenbusStateClosed) &&
		   b != XenbusStateClosed) {
		PATHF(p, "%s/state", be);
		if (fe == XenbusStateClosing && b != XenbusStateClosing)
			xs_write(X.xs, XBT_NULL, p, "5", 1);
		if (fe == XenbusStateClosed)
			xs_write(X.xs, XBT_NULL, p, "6", 1);
	}
}

/* @releaseDomain: find the domains that shut down and say so. */
static void release_domain_event(void)
{
	struct hv_info *v = NULL;
	int n = 0;
	if (X.hv->domain_list(&v, &n))
		return;
	for (int i = 0; i < n; i++) {
		if (v[i].state != XENOPS_SHUTDOWN && v[i].state != XENOPS_DYING)
			continue;
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

static void *watcher_main(void *arg)
{
	while (!X.stopping) {
		unsigned num;
		char **w = xs_read_watch(X.xs, &num);
		if (!w) {
			if (X.stopping)
				break;
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

static void watch_domain(uint32_t domid, bool on)
{
	char p[128], tok[32];
	PATHF(p, "/local/domain/%u/device", domid);
	snprintf(tok, sizeof(tok), "d%u", domid);
	on ? xs_watch(X.xs, p, tok) : xs_unwatch(X.xs, p, tok);
	PATHF(p, "/local/domain/%u/data/updated", domid);
	snprintf(tok, sizeof(tok), "g%u", domid);
	on ? xs_watch(X.xs, p, tok) : xs_unwatch(X.xs, p, tok);
}

/* ---- the domain's tree -------------------------------------------------- */

struct build {
	const struct xenops_vm *vm;
	uint32_t domid;
	const int *devids;
};

static void domain_tree(struct tx *t, void *arg)
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
	xs_rm(X.xs, t->t, dom);
	xs_rm(X.xs, t->t, vmp);
	xs_rm(X.xs, t->t, lx);
	/* libxl__domain_make */
	mk(t, dom, ro, 2);
	mk(t, vmp, ro, 2);
	mk(t, lx, no, 1);
	PATHF(p, "%s/device", lx); mk(t, p, no, 1);
	PATHF(p, "%s/vm", dom); wr(t, p, "%s", vmp);
	PATHF(p, "%s/name", dom); wr(t, p, "%s", vm->name);
	PATHF(p, "%s/name", vmp); wr(t, p, "%s", vm->name);
	PATHF(p, "%s/uuid", vmp); wr(t, p, "%s", vm->uuid);
	static const char *const ro_dirs[] = { "cpu", "memory", "device", "control" };
	for (unsigned i = 0; i < 4; i++) {
		PATHF(p, "%s/%s", dom, ro_dirs[i]);
		mk(t, p, ro, 2);
	}
	static const char *const rw_dirs[] = {
		"control/shutdown", "control/feature-poweroff", "control/feature-reboot",
		"control/feature-suspend", "control/sysrq", "data", "drivers", "feature", "attr",
		"error" };
	for (unsigned i = 0; i < sizeof(rw_dirs) / sizeof(*rw_dirs); i++) {
		PATHF(p, "%s/%s", dom, rw_dirs[i]);
		mk(t, p, rw, 1);
	}
	PATHF(p, "%s/control/platform-feature-multiprocessor-suspend", dom); wr(t, p, "1");
	PATHF(p, "%s/control/platform-feature-xs_reset_watches", dom); wr(t, p, "1");
	PATHF(p, "%s/type", lx);
	wr(t, p, "%s", vm->type == XENOPS_HVM ? "hvm" : vm->type == XENOPS_PVH ? "pvh" : "pv");
	/* libxl__build_post */
	uint64_t smax = vm->memory_static_max / 1024;
	uint64_t target = (vm->memory_target ? vm->memory_target : vm->memory_static_max) / 1024;
	PATHF(p, "%s/memory/static-max", dom); wr(t, p, "%" PRIu64, smax);
	PATHF(p, "%s/memory/target", dom); wr(t, p, "%" PRIu64, target);
	PATHF(p, "%s/memory/videoram", dom); wr(t, p, "-1");
	PATHF(p, "%s/domid", dom); wr(t, p, "%u", d);
	PATHF(p, "%s/store/port", dom); wr(t, p, "%u", STORE_PORT);
	PATHF(p, "%s/store/ring-ref", dom); wr(t, p, "%u", STORE_MFN);
	uint32_t at_start = vm->vcpus_at_startup ? vm->vcpus_at_startup : vm->vcpus_max;
	for (uint32_t i = 0; i < vm->vcpus_max; i++) {
		PATHF(p, "%s/cpu/%u/availability", dom, i);
		wr(t, p, "%s", i < at_start ? "online" : "offline");
	}
	PATHF(p, "%s/start_time", vmp); wr(t, p, "%.2f", util_now_f());
	/* the primary console (xenconsoled's) */
	char con[96];
	PATHF(con, "%s/console", dom);
	dev_common(t, "console", d, 0, con);
	PATHF(p, "%s/limit", con); wr(t, p, "1048576");
	PATHF(p, "%s/type", con); wr(t, p, "xenconsoled");
	PATHF(p, "%s/output", con); wr(t, p, "pty");
	PATHF(p, "%s/tty", con); wr(t, p, "%s", "");
	PATHF(p, "%s/port", con); wr(t, p, "%u", CONSOLE_PORT);
	PATHF(p, "%s/ring-ref", con); wr(t, p, "%u", STORE_MFN - 1);
	PATHF(p, "/local/domain/0/backend/console/%u/0/protocol", d); wr(t, p, "vt100");
	/* disks and NICs */
	for (int i = 0; i < vm->ndisks; i++)
		if (!vm->disks[i].empty || vm->type == XENOPS_HVM || vm->disks[i].cdrom)
			disk_tree(t, d, &vm->disks[i], b->devids[i]);
	for (int i = 0; i < vm->nnics; i++)
		nic_tree(t, d, &vm->nics[i]);
}

static void domain_probe(struct tx *t, void *arg)
{
	const struct build *b = arg;
	for (int i = 0; i < b->vm->ndisks; i++)
		if (!b->vm->disks[i].empty || b->vm->type == XENOPS_HVM || b->vm->disks[i].cdrom)
			backend_probe(t, "vbd", b->domid, b->devids[i], b->vm->disks[i].path);
	for (int i = 0; i < b->vm->nnics; i++)
		backend_probe(t, "vif", b->domid, b->vm->nics[i].devid, NULL);
	backend_probe(t, "console", b->domid, 0, NULL);
}

static void domain_rm(uint32_t domid, const char *uuid)
{
	char p[128];
	static const char *const kinds[] = { "vbd", "vif", "console" };
	for (unsigned i = 0; i < 3; i++) {
		PATHF(p, "/local/domain/0/backend/%s/%u", kinds[i], domid);
		xs_rm(X.xs, XBT_NULL, p);
	}
	PATHF(p, "/local/domain/%u", domid);
	xs_rm(X.xs, XBT_NULL, p);
	PATHF(p, "/libxl/%u", domid);
	xs_rm(X.xs, XBT_NULL, p);
	if (uuid && *uuid) {
		PATHF(p, "/vm/%s", uuid);
		xs_rm(X.xs, XBT_NULL, p);
	}
}

/* Destroy and forget a domain: hypervisor, xenstored, tree. */
static int domain_destroy(uint32_t domid, const char *uuid)
{
	int r = X.hv->domain_destroy(domid);
	watch_domain(domid, false);
	xs_release_domain(X.xs, domid);
	domain_rm(domid, uuid);
	known_del(domid);
	return r == -ESRCH ? 0 : r;
}

/* After create (or restore): tree, introduce, devices, unpause. */
static int domain_build(const struct xenops_vm *vm, uint32_t domid, bool paused,
			struct xerr *err)
{
	int devids[vm->ndisks + 1];
	for (int i = 0; i < vm->ndisks; i++) {
		devids[i] = vdev_number(vm->disks[i].device, vm->disks[i].userdevice);
		if (devids[i] < 0) {
			domain_destroy(domid, vm->uuid);
			xerr_set(err, "INVALID_DEVICE", 1, vm->disks[i].device);
			return -1;
		}
	}
	struct build b = { vm, domid, devids };
	known_add(domid, vm->uuid, false);
	int r = in_tx(domain_tree, &b);
	if (!r && !xs_introduce_domain(X.xs, domid, STORE_MFN, STORE_PORT))
		r = -errno;
	if (!r)
		r = in_tx(domain_probe, &b);
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

static int start_xenstored(const struct xenops_settings *s, const char *sock,
			   const char *rundir, struct xerr *err)
{
	int fd = hv_connect_unix(sock, 0);
	if (fd >= 0) { /* one is running: keep it (it holds running domains' trees) */
		close(fd);
		return 0;
	}
	if (!s->xenstored_bin || access(s->xenstored_bin, X_OK))
		return fail(err, "xenops: no xenstored to start (%s)",
			    s->xenstored_bin ? s->xenstored_bin : "unset");
	char log[PATH_MAX];
	snprintf(log, sizeof(log), "%s/xenstored.log", s->state_dir);
	char *argv[] = { (char *)s->xenstored_bin, "--socket", (char *)sock, "--rundir",
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
	if (start_xenstored(s, sock, rundir, err))
		return -1;
	/* libxenstore finds the daemon through XENSTORED_PATH only */
	setenv("XENSTORED_PATH", sock, 1);
	X.xs = xs_open(0);
	if (!X.xs)
		return fail(err, "xenops: cannot connect to xenstored at %s: %s", sock,
			    strerror(errno));
	X.hv = &hv_sim;
	const char *why = "";
	r = X.hv->open(s, &why);
	if (r) {
		xs_close(X.xs);
		X.xs = NULL;
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
			watch_domain(v[i].domid, true);
		}
		free(v);
	}
	X.stopping = false;
	if (!xs_watch(X.xs, "@releaseDomain", "rel") ||
	    pthread_create(&X.watcher, NULL, watcher_main, NULL)) {
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
		xs_watch(X.xs, "/local/domain/0", "stop");
		pthread_join(X.watcher, NULL);
		X.watcher_on = false;
	}
	if (X.xs)
		xs_close(X.xs);
	X.xs = NULL;
	if (X.hv)
		X.hv->close();
	X.hv = NULL;
	for (uint32_t i = 0; i < DOMID_MAX; i++)
		known_del(i);
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
	if (!xs_write(X.xs, XBT_NULL, p, req, (unsigned)strlen(req)))
		return fail(err, "xenops: cannot write %s: %s", p, strerror(errno));
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

struct plug {
	uint32_t domid;
	const struct xenops_disk *d;
	const struct xenops_nic *n;
	int devid;
};

static void plug_tree(struct tx *t, void *arg)
{
	struct plug *p = arg;
	if (p->d)
		disk_tree(t, p->domid, p->d, p->devid);
	else
		nic_tree(t, p->domid, p->n);
}

static void plug_probe(struct tx *t, void *arg)
{
	struct plug *p = arg;
	backend_probe(t, p->d ? "vbd" : "vif", p->domid, p->devid, p->d ? p->d->path : NULL);
}

static int dev_exists(const char *kind, uint32_t domid, int devid)
{
	char *v = rd(XBT_NULL, "/local/domain/0/backend/%s/%u/%d/state", kind, domid, devid);
	free(v);
	return v != NULL;
}

static int plug(struct plug *p, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!known_uuid(p->domid, NULL))
		return no_domain(err, p->domid);
	const char *kind = p->d ? "vbd" : "vif";
	if (dev_exists(kind, p->domid, p->devid)) {
		char id[16];
		snprintf(id, sizeof(id), "%d", p->devid);
		xerr_set(err, "DEVICE_ALREADY_EXISTS", 1, p->d ? p->d->device : id);
		return -1;
	}
	int r = in_tx(plug_tree, p);
	if (!r)
		r = in_tx(plug_probe, p);
	if (r)
		return fail(err, "xenops: plugging %s %d into domain %u: %s", kind, p->devid,
			    p->domid, strerror(-r));
	return 0;
}

int xenops_disk_plug(uint32_t domid, const struct xenops_disk *d, struct xerr *err)
{
	struct plug p = { domid, d, NULL, vdev_number(d->device, d->userdevice) };
	if (p.devid < 0) {
		xerr_set(err, "INVALID_DEVICE", 1, d->device);
		return -1;
	}
	return plug(&p, err);
}

int xenops_nic_plug(uint32_t domid, const struct xenops_nic *n, struct xerr *err)
{
	struct plug p = { domid, NULL, n, n->devid };
	return plug(&p, err);
}

struct unplug_wait {
	const char *kind;
	uint32_t domid;
	int devid;
};

static int unplug_check(void *arg)
{
	struct unplug_wait *w = arg;
	char *v = rd(XBT_NULL, "/local/domain/0/backend/%s/%u/%d/state", w->kind, w->domid,
		     w->devid);
	int st = v ? atoi(v) : XenbusStateClosed;
	free(v);
	return st == XenbusStateClosed;
}

/* libxl's device remove: the backend goes Closing; the frontend follows to
 * Closed and the backend after it (backend_step); then the dirs go. */
static int unplug(const char *kind, uint32_t domid, int devid, const char *name, bool force,
		  struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!dev_exists(kind, domid, devid)) {
		xerr_set(err, "DEVICE_ALREADY_DETACHED", 1, name);
		return -1;
	}
	char be[256], p[320];
	be_path(be, sizeof(be), kind, domid, devid);
	if (!force) {
		PATHF(p, "%s/online", be);
		xs_write(X.xs, XBT_NULL, p, "0", 1);
		PATHF(p, "%s/state", be);
		xs_write(X.xs, XBT_NULL, p, "5", 1);
		struct unplug_wait w = { kind, domid, devid };
		if (wait_for(unplug_check, &w, UNPLUG_TIMEOUT_S, NULL, NULL)) {
			xerr_set(err, "DEVICE_DETACH_TIMEOUT", 2, kind, name);
			return -1;
		}
	}
	xs_rm(X.xs, XBT_NULL, be);
	PATHF(p, "/local/domain/%u/device/%s/%d", domid, kind, devid);
	xs_rm(X.xs, XBT_NULL, p);
	PATHF(p, "/libxl/%u/device/%s/%d", domid, kind, devid);
	xs_rm(X.xs, XBT_NULL, p);
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
	char *dt = rd(XBT_NULL, "/local/domain/0/backend/vbd/%u/%d/device-type", domid, devid);
	bool cd = dt && !strcmp(dt, "cdrom");
	free(dt);
	if (!cd) {
		xerr_set(err, "VBD_NOT_REMOVABLE_MEDIA", 1, device);
		return -1;
	}
	char p[320];
	PATHF(p, "/local/domain/0/backend/vbd/%u/%d/params", domid, devid);
	if (!xs_write(X.xs, XBT_NULL, p, path, (unsigned)strlen(path)))
		return fail(err, "xenops: cannot write %s: %s", p, strerror(errno));
	PATHF(p, "/libxl/%u/device/vbd/%d/params", domid, devid);
	xs_write(X.xs, XBT_NULL, p, path, (unsigned)strlen(path));
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
	if (!xs_write(X.xs, XBT_NULL, p, val, (unsigned)strlen(val)))
		return fail(err, "xenops: cannot write %s: %s", p, strerror(errno));
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
	return fail(err, "xenops: trigger %s: not supported by the sim backend", trigger);
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
static void gather(char *out, size_t n, uint32_t domid, const char *const *keys,
		   const char *prefix)
{
	size_t len = strlen(out);
	for (int i = 0; keys[i]; i += 2) {
		char *v = rd(XBT_NULL, "/local/domain/%u/%s", domid, keys[i]);
		if (v && len < n)
			len += (size_t)snprintf(out + len, n - len, "%s%s=%s\n", prefix, keys[i + 1], v);
		free(v);
	}
	if (len >= n)
		out[n - 1] = 0;
}

int xenops_guest(uint32_t domid, struct xenops_guest *out, struct xerr *err)
{
	if (!X.hv)
		return not_ready(err);
	if (!known_uuid(domid, NULL))
		return no_domain(err, domid);
	memset(out, 0, sizeof(*out));
	char *upd = rd(XBT_NULL, "/local/domain/%u/data/updated", domid);
	out->present = upd != NULL; /* the original trusts data/ once this exists */
	free(upd);
	static const char *const os[] = {
		"data/os_name", "name", "data/os_uname", "uname", "data/os_distro", "distro",
		"data/os_majorver", "major", "data/os_minorver", "minor", "attr/os/spmajor",
		"spmajor", "attr/os/spminor", "spminor", NULL };
	static const char *const pv[] = {
		"attr/PVAddons/MajorVersion", "major", "attr/PVAddons/MinorVersion", "minor",
		"attr/PVAddons/MicroVersion", "micro", "attr/PVAddons/BuildVersion", "build",
		"attr/PVAddons/Application", "application", NULL };
	gather(out->os_version, sizeof(out->os_version), domid, os, "");
	gather(out->pv_drivers, sizeof(out->pv_drivers), domid, pv, "");
	/* attr/vif/<n>/ipv4/<i> and ipv6/<i>: "<n>/ipv4/<i>", and "<n>/ip" for
	 * the first IPv4 address */
	char p[128];
	PATHF(p, "/local/domain/%u/attr/vif", domid);
	unsigned nvif = 0;
	char **vifs = xs_directory(X.xs, XBT_NULL, p, &nvif);
	size_t len = 0, cap = sizeof(out->networks);
	for (unsigned i = 0; vifs && i < nvif; i++) {
		static const char *const fam[] = { "ipv4", "ipv6" };
		for (unsigned f = 0; f < 2; f++) {
			char q[192];
			PATHF(q, "%s/%s/%s", p, vifs[i], fam[f]);
			unsigned na = 0;
			char **as = xs_directory(X.xs, XBT_NULL, q, &na);
			for (unsigned a = 0; as && a < na; a++) {
				char *ip = rd(XBT_NULL, "%s/%s", q, as[a]);
				if (ip && len < cap && f == 0 && !strcmp(as[a], "0"))
					len += (size_t)snprintf(out->networks + len, cap - len,
								"%s/ip=%s\n", vifs[i], ip);
				if (ip && len < cap)
					len += (size_t)snprintf(out->networks + len, cap - len,
								"%s/%s/%s=%s\n", vifs[i], fam[f],
								as[a], ip);
				free(ip);
			}
			free(as);
		}
	}
	free(vifs);
	if (len >= cap)
		out->networks[cap - 1] = 0;
	char *mf = rd(XBT_NULL, "/local/domain/%u/data/meminfo_free", domid);
	char *mt = rd(XBT_NULL, "/local/domain/%u/data/meminfo_total", domid);
	out->memory_free = mf ? strtoull(mf, NULL, 10) * 1024 : 0;
	out->memory_total = mt ? strtoull(mt, NULL, 10) * 1024 : 0;
	free(mf);
	free(mt);
	char *fs = rd(XBT_NULL, "/local/domain/%u/control/feature-suspend", domid);
	char *fp = rd(XBT_NULL, "/local/domain/%u/control/feature-poweroff", domid);
	char *fsh = rd(XBT_NULL, "/local/domain/%u/control/feature-shutdown", domid);
	out->can_suspend = fs && !strcmp(fs, "1");
	out->feature_shutdown = (fp && !strcmp(fp, "1")) || (fsh && !strcmp(fsh, "1"));
	free(fs);
	free(fp);
	free(fsh);
	out->last_updated = util_now();
	return 0;
}
