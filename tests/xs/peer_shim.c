/*
 * peer_shim.c - LD_PRELOAD library that runs Debian's Xen 4.17 xenstore
 * daemons (the C xenstored and the OCaml oxenstored) on a host with no Xen
 * hypervisor, so that their Unix socket can serve as the reference
 * ("peer") for cxapi's xenstored tests and benchmarks.
 *
 * What it fakes, and why:
 *  - libxenctrl: xc_interface_open/close succeed on a dummy handle;
 *    xc_domain_getinfo / xc_domain_getinfolist report every queried domain as
 *    running (so a domain introduced by a test is never reaped), and
 *    xc_map_foreign_range hands out a zeroed anonymous page (oxenstored's
 *    ring mapping on INTRODUCE).
 *  - libxengnttab: xengnttab_map_grant_ref likewise returns a zeroed page,
 *    which is how C xenstored maps an introduced domain's ring.  The rings
 *    never carry traffic: req_prod == req_cons == 0 forever.
 *  - libxenevtchn: the fd is the read end of a pipe nobody writes, so no
 *    event ever fires; binds hand out increasing port numbers.
 *  - C xenstored creates its node database only when it introduces dom0
 *    (dom0_init -> introduce_domain -> setup_structure); dom0_init reads
 *    /proc/xen/xsd_port and mmaps /proc/xen/xsd_kva, which we serve from
 *    memfds.
 *  - oxenstored raises RLIMIT_NOFILE to fs.nr_open, which needs
 *    CAP_SYS_RESOURCE; setrlimit(RLIMIT_NOFILE) is clamped to the current
 *    hard limit.
 *
 * Build: cc -O2 -shared -fPIC -o peer_shim.so peer_shim.c -ldl
 * Used by tests/xs/peer.sh and tests/integration/test_xenstored.py.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define PAGE 4096

struct handle {
	unsigned magic;
	int rfd, wfd;		/* event channel: pipe, nothing is ever written */
};

static struct handle xc_h = { 0x5843u, -1, -1 };
static struct handle gnt_h = { 0x474eu, -1, -1 };
static unsigned next_port = 16;

static void *zero_page(void)
{
	void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* ---- libxenctrl ---- */
void *xc_interface_open(void *logger, void *dombuild_logger, unsigned open_flags)
{
	(void)logger; (void)dombuild_logger; (void)open_flags;
	return &xc_h;
}

int xc_interface_close(void *xch) { (void)xch; return 0; }

/*
 * xc_dominfo_t / xc_domaininfo_t begin with the domid (uint32_t domid in
 * xc_dominfo_t; domid_t in xen_domctl_getdomaininfo).  We answer "this domain
 * exists" for exactly the one asked for, leaving every flag zero (not dying,
 * not shutdown), so daemons keep the domains tests introduce.  Sizes are
 * generous upper bounds of the 4.17 structures.
 */
int xc_domain_getinfo(void *xch, uint32_t first_domid, unsigned max_doms, void *info)
{
	(void)xch;
	if (!max_doms || !info)
		return 0;
	memset(info, 0, 96);
	*(uint32_t *)info = first_domid;
	return 1;
}

int xc_domain_getinfolist(void *xch, uint32_t first_domain, unsigned max_domains, void *info)
{
	(void)xch;
	if (!max_domains || !info)
		return 0;
	memset(info, 0, 96);
	*(uint16_t *)info = (uint16_t)first_domain;
	return 1;
}

void *xc_map_foreign_range(void *xch, uint32_t dom, int size, int prot, unsigned long mfn)
{
	(void)xch; (void)dom; (void)size; (void)prot; (void)mfn;
	return zero_page();
}

/* ---- libxengnttab ---- */
void *xengnttab_open(void *logger, unsigned open_flags) { (void)logger; (void)open_flags; return &gnt_h; }
int xengnttab_close(void *xgt) { (void)xgt; return 0; }
int xengnttab_set_max_grants(void *xgt, uint32_t count) { (void)xgt; (void)count; return 0; }

void *xengnttab_map_grant_ref(void *xgt, uint32_t domid, uint32_t ref, int prot)
{
	(void)xgt; (void)domid; (void)ref; (void)prot;
	return zero_page();
}

int xengnttab_unmap(void *xgt, void *start_address, uint32_t count)
{
	(void)xgt;
	if (start_address)
		munmap(start_address, (size_t)count * PAGE);
	return 0;
}

/* ---- libxenevtchn ---- */
static void *evtchn_new(int fd)
{
	struct handle *h = calloc(1, sizeof(*h));
	int p[2];

	if (!h)
		return NULL;
	h->magic = 0x4556u;
	if (fd >= 0) {
		h->rfd = fd;
		h->wfd = -1;
		return h;
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		free(h);
		return NULL;
	}
	h->rfd = p[0];
	h->wfd = p[1];
	return h;
}

void *xenevtchn_open(void *logger, unsigned open_flags) { (void)logger; (void)open_flags; return evtchn_new(-1); }
void *xenevtchn_fdopen(void *logger, int fd, unsigned open_flags) { (void)logger; (void)open_flags; return evtchn_new(fd); }

int xenevtchn_close(void *xce)
{
	struct handle *h = xce;

	if (!h)
		return 0;
	if (h->rfd >= 0)
		close(h->rfd);
	if (h->wfd >= 0)
		close(h->wfd);
	free(h);
	return 0;
}

int xenevtchn_fd(void *xce) { return ((struct handle *)xce)->rfd; }
int xenevtchn_bind_virq(void *xce, unsigned virq) { (void)xce; (void)virq; return (int)next_port++; }
int xenevtchn_bind_interdomain(void *xce, uint32_t domid, unsigned remote_port)
{
	(void)xce; (void)domid; (void)remote_port;
	return (int)next_port++;
}
int xenevtchn_bind_unbound_port(void *xce, uint32_t domid) { (void)xce; (void)domid; return (int)next_port++; }
int xenevtchn_notify(void *xce, unsigned port) { (void)xce; (void)port; return 0; }
int xenevtchn_unbind(void *xce, unsigned port) { (void)xce; (void)port; return 0; }
int xenevtchn_pending(void *xce) { (void)xce; errno = EAGAIN; return -1; }
int xenevtchn_unmask(void *xce, unsigned port) { (void)xce; (void)port; return 0; }

/* ---- /proc/xen/xsd_{port,kva} for C xenstored's dom0_init() ---- */
static int proc_xen(const char *path)
{
	int fd;

	if (!strcmp(path, "/proc/xen/xsd_port")) {
		fd = memfd_create("xsd_port", MFD_CLOEXEC);
		if (fd < 0)
			return -1;
		if (write(fd, "1\n", 2) != 2) {
			close(fd);
			return -1;
		}
		lseek(fd, 0, SEEK_SET);
		return fd;
	}
	if (!strcmp(path, "/proc/xen/xsd_kva")) {
		fd = memfd_create("xsd_kva", MFD_CLOEXEC);
		if (fd >= 0 && ftruncate(fd, PAGE) < 0) {
			close(fd);
			return -1;
		}
		return fd;
	}
	return -2;		/* not ours */
}

typedef int (*open_fn)(const char *, int, ...);

static int open_common(const char *sym, open_fn *real, const char *path, int flags, va_list ap)
{
	mode_t mode = 0;
	int fd = path ? proc_xen(path) : -2;

	if (fd != -2)
		return fd;
	if (flags & (O_CREAT | O_TMPFILE))
		mode = (mode_t)va_arg(ap, int);
	if (!*real)
		*real = (open_fn)dlsym(RTLD_NEXT, sym);
	return (*real)(path, flags, mode);
}

int open(const char *path, int flags, ...)
{
	static open_fn real;
	va_list ap;
	int r;

	va_start(ap, flags);
	r = open_common("open", &real, path, flags, ap);
	va_end(ap);
	return r;
}

int open64(const char *path, int flags, ...)
{
	static open_fn real;
	va_list ap;
	int r;

	va_start(ap, flags);
	r = open_common("open64", &real, path, flags, ap);
	va_end(ap);
	return r;
}

/* ---- oxenstored: setrlimit(RLIMIT_NOFILE, nr_open) ---- */
int setrlimit(__rlimit_resource_t resource, const struct rlimit *rlim)
{
	static int (*real)(__rlimit_resource_t, const struct rlimit *);
	struct rlimit cur, want;

	if (!real)
		real = (int (*)(__rlimit_resource_t, const struct rlimit *))dlsym(RTLD_NEXT, "setrlimit");
	if (resource == RLIMIT_NOFILE && getrlimit(RLIMIT_NOFILE, &cur) == 0 &&
	    rlim->rlim_max > cur.rlim_max) {
		want = *rlim;
		want.rlim_max = cur.rlim_max;
		if (want.rlim_cur > want.rlim_max)
			want.rlim_cur = want.rlim_max;
		return real(resource, &want);
	}
	return real(resource, rlim);
}
