/* domain.c — introduced domains.
 *
 * INTRODUCE(domid, mfn, evtchn) records the domain and opens its own Unix
 * socket, <rundir>/domain/<domid>/socket: a process connecting there talks as
 * that domain (unprivileged; permissions and quotas apply).  This stands in
 * for the shared ring of a real guest, which the real Xen backend will add
 * as another transport under the same connection code.  RELEASE closes the
 * socket and its connections and fires @releaseDomain.
 *
 * The special watch names' permissions (set with SET_PERMS "@...") live here
 * too, as in 4.17's xenstored_domain.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "xs/xsd.h"

#define XS_PERM_OWNER 4u

unsigned xsd_perm_for(uint32_t domid, const struct xs_perm *p, int n)
{
	if (domid == 0 || n < 1 || p[0].domid == domid)
		return XS_PERM_BOTH | XS_PERM_OWNER;
	for (int i = 1; i < n; i++)
		if (p[i].domid == domid)
			return p[i].perm;
	return p[0].perm;
}

struct xsd_special_perms *xsd_special_perms(const char *name)
{
	if (!strcmp(name, "@introduceDomain"))
		return &xsd.intro_perms;
	if (!strcmp(name, "@releaseDomain"))
		return &xsd.release_perms;
	return NULL;
}

struct xsd_domain *xsd_domain_get(uint32_t domid)
{
	if (domid >= XSD_DOMID_MAX || !xsd.domains)
		return NULL;
	return xsd.domains[domid];
}

int xsd_domain_introduce(uint32_t domid, uint64_t mfn, uint32_t port)
{
	if (domid == 0)
		return 0; /* dom0 is always there: its socket */
	if (domid >= XSD_DOMID_MAX)
		return -EINVAL;
	if (!xsd.domains)
		xsd.domains = util_calloc(XSD_DOMID_MAX, sizeof(*xsd.domains));
	struct xsd_domain *d = xsd.domains[domid];
	if (d) {
		/* 4.17: re-introduction only rebinds the event channel */
		d->port = port;
		return 0;
	}
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/domain/%u", xsd.rundir, domid);
	int r = util_mkdir_p(dir, 0755);
	if (r < 0) {
		log_err("xenstored: cannot create %s: %s", dir, strerror(-r));
		return -EIO;
	}
	d = util_calloc(1, sizeof(*d));
	d->domid = domid;
	d->mfn = mfn;
	d->port = port;
	size_t n = strlen(dir) + 8;
	d->sock_path = util_malloc(n);
	snprintf(d->sock_path, n, "%s/socket", dir);
	d->listener = xsd_unix_listen(d->sock_path, d);
	if (!d->listener) {
		free(d->sock_path);
		free(d);
		return -EIO;
	}
	xsd.domains[domid] = d;
	xsd.ndomains++;
	xsd_watch_fire_special("@introduceDomain");
	return 0;
}

static void domain_close(struct xsd_domain *d, bool fire)
{
	while (d->conns)
		xsd_conn_drop(d->conns, "domain released");
	xsd.domains[d->domid] = NULL;
	xsd.ndomains--;
	unlink(d->sock_path);
	char *slash = strrchr(d->sock_path, '/');
	if (slash) {
		*slash = 0;
		rmdir(d->sock_path);
		*slash = '/';
	}
	xs_store_domain_gone(xsd.store, d->domid);
	if (fire)
		xsd_watch_fire_special("@releaseDomain");
	xsd_listener_close(d->listener);
	free(d->sock_path);
	free(d);
}

int xsd_domain_release(uint32_t domid)
{
	struct xsd_domain *d = xsd_domain_get(domid);
	if (!d)
		return -ENOENT;
	domain_close(d, true);
	return 0;
}

void xsd_domain_release_all(void)
{
	if (!xsd.domains)
		return;
	for (uint32_t i = 1; i < XSD_DOMID_MAX; i++)
		if (xsd.domains[i])
			domain_close(xsd.domains[i], false);
}

/* The introduced domains beside the store dump ("domid mfn port" lines), so
 * their sockets come back after a clean restart. */
int xsd_domains_save(const char *file)
{
	FILE *f = fopen(file, "w");
	if (!f)
		return -errno;
	if (xsd.domains)
		for (uint32_t i = 1; i < XSD_DOMID_MAX; i++) {
			struct xsd_domain *d = xsd.domains[i];
			if (d)
				fprintf(f, "%u %llu %u\n", d->domid,
					(unsigned long long)d->mfn, d->port);
		}
	int r = fclose(f) ? -errno : 0;
	return r;
}

void xsd_domains_restore(const char *file)
{
	FILE *f = fopen(file, "r");
	if (!f)
		return;
	unsigned domid, port;
	unsigned long long mfn;
	while (fscanf(f, "%u %llu %u", &domid, &mfn, &port) == 3)
		if (domid && domid < XSD_DOMID_MAX)
			xsd_domain_introduce(domid, mfn, port);
	fclose(f);
	unlink(file);
}
