/* watch.c — xenstore watches, indexed by path.
 *
 * Every watch sits in a hash table keyed by its (absolute) path.  A change of
 * /a/b/c looks up "/", "/a", "/a/b" and "/a/b/c" — as many lookups as the
 * path has components, whatever the number of watches or domains.  Only the
 * rm of a subtree also scans for watches below the removed node (4.17 fires
 * those too).
 *
 * Semantics of Xen 4.17 (xenstored_watch.c): an event goes to a connection
 * only if it may read the node or its parent; special names (@introduceDomain,
 * @releaseDomain) fire exactly, to connections their permissions allow (by
 * default dom0 only); a relative watch gets relative event paths; a watch
 * fires once when registered.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xen/io/xs_wire.h>

#include "base/log.h"
#include "base/util.h"
#include "xs/xsd.h"

struct xsd_watch {
	char *path;             /* absolute, or "@..." */
	size_t plen;
	char *token;
	size_t tlen;
	uint64_t hash;
	size_t rel_off;         /* chars to strip for a relative watch, else 0 */
	struct xsd_conn *c;
	struct xsd_watch *cnext, *cprev; /* the connection's watches */
	struct xsd_watch *hnext; /* hash chain */
};

static struct {
	struct xsd_watch **b;
	size_t nb;      /* power of two */
	size_t n;
	/* every watch on a path (not "@..."), sorted by path: the watches below
	 * a removed subtree "P" are the contiguous range prefixed "P/" */
	struct xsd_watch **sorted;
	size_t ns, nscap;
} wt;

/* first index whose path is >= key (by bytes; a prefix sorts first) */
static size_t sorted_lower(const char *key, size_t klen)
{
	size_t lo = 0, hi = wt.ns;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct xsd_watch *w = wt.sorted[mid];
		size_t m = w->plen < klen ? w->plen : klen;
		int c = memcmp(w->path, key, m);
		if (c < 0 || (c == 0 && w->plen < klen))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void sorted_add(struct xsd_watch *w)
{
	if (w->path[0] != '/')
		return;
	if (wt.ns == wt.nscap) {
		wt.nscap = wt.nscap ? wt.nscap * 2 : 256;
		wt.sorted = util_realloc(wt.sorted, wt.nscap * sizeof(*wt.sorted));
	}
	size_t i = sorted_lower(w->path, w->plen);
	memmove(&wt.sorted[i + 1], &wt.sorted[i], (wt.ns - i) * sizeof(*wt.sorted));
	wt.sorted[i] = w;
	wt.ns++;
}

static void sorted_remove(struct xsd_watch *w)
{
	if (w->path[0] != '/')
		return;
	for (size_t i = sorted_lower(w->path, w->plen); i < wt.ns; i++) {
		if (wt.sorted[i] == w) {
			memmove(&wt.sorted[i], &wt.sorted[i + 1], (wt.ns - i - 1) * sizeof(*wt.sorted));
			wt.ns--;
			return;
		}
		if (wt.sorted[i]->plen != w->plen || memcmp(wt.sorted[i]->path, w->path, w->plen))
			return;
	}
}

static inline uint64_t fnv_step(uint64_t h, unsigned char ch)
{
	return (h ^ ch) * 0x100000001b3ULL;
}
#define FNV_INIT 0xcbf29ce484222325ULL

static uint64_t hash_str(const char *p, size_t n)
{
	uint64_t h = FNV_INIT;
	for (size_t i = 0; i < n; i++)
		h = fnv_step(h, (unsigned char)p[i]);
	return h;
}

void xsd_watch_init(void)
{
	wt.nb = 256;
	wt.b = util_calloc(wt.nb, sizeof(*wt.b));
	wt.n = 0;
}

static void rehash(size_t nb)
{
	struct xsd_watch **nbk = util_calloc(nb, sizeof(*nbk));
	for (size_t i = 0; i < wt.nb; i++) {
		struct xsd_watch *w = wt.b[i], *nx;
		for (; w; w = nx) {
			nx = w->hnext;
			size_t k = w->hash & (nb - 1);
			w->hnext = nbk[k];
			nbk[k] = w;
		}
	}
	free(wt.b);
	wt.b = nbk;
	wt.nb = nb;
}

void xsd_watch_send_event(struct xsd_conn *c, const char *path, size_t plen,
			  const char *token)
{
	size_t tlen = strlen(token);
	size_t len = plen + 1 + tlen + 1;
	if (len > XS_PAYLOAD_MAX || c->closing)
		return; /* 4.17 does not send over-long events */
	if (c->out.len - c->out_off > XSD_OUT_MAX) {
		log_warn("xenstored: connection %lu (domid %u) does not read; watch event dropped",
			 (unsigned long)c->serial, c->domid);
		return;
	}
	struct xs_hdr h = { XS_WATCH_EVENT, 0, 0, (uint32_t)len };
	struct buf *o = &c->out;
	buf_reserve(o, XS_HDR_SIZE + len);
	char *p = o->p + o->len;
	memcpy(p, &h, XS_HDR_SIZE);
	memcpy(p + XS_HDR_SIZE, path, plen);
	p[XS_HDR_SIZE + plen] = 0;
	memcpy(p + XS_HDR_SIZE + plen + 1, token, tlen + 1);
	o->len += XS_HDR_SIZE + len;
	o->p[o->len] = 0;
	if (xsd.trace)
		xsd_trace_io(c, true, &h, p + XS_HDR_SIZE);
	xsd_conn_mark(c);
}

/* c's watch on path with token, found through the hash table (a
 * connection may hold thousands: xapi's, two a domain) */
static struct xsd_watch *find_watch(struct xsd_conn *c, const char *path, size_t plen,
				    const char *token)
{
	uint64_t h = hash_str(path, plen);
	for (struct xsd_watch *w = wt.b[h & (wt.nb - 1)]; w; w = w->hnext)
		if (w->c == c && w->hash == h && w->plen == plen && !memcmp(w->path, path, plen) &&
		    !strcmp(w->token, token))
			return w;
	return NULL;
}

int xsd_watch_add(struct xsd_conn *c, const char *path, const char *token,
		  bool relative)
{
	size_t plen = strlen(path);
	if (find_watch(c, path, plen, token))
		return -EEXIST;
	/* 4.17: "domain_watch(conn) > quota" (dom0's socket is not counted) */
	if (c->dom && xsd.quota.max_watches && c->dom->nwatches > xsd.quota.max_watches)
		return -E2BIG;
	struct xsd_watch *w = util_malloc(sizeof(*w));
	w->plen = plen;
	w->tlen = strlen(token);
	w->path = util_malloc(plen + 1 + w->tlen + 1);
	memcpy(w->path, path, plen + 1);
	w->token = w->path + plen + 1;
	memcpy(w->token, token, w->tlen + 1);
	w->hash = hash_str(path, plen);
	w->rel_off = 0;
	if (relative) {
		/* "/local/domain/<id>" and the '/' after it */
		char pre[40];
		int k = snprintf(pre, sizeof(pre), "/local/domain/%u", c->domid);
		w->rel_off = (size_t)k;
	}
	w->c = c;
	w->cnext = c->watches;
	w->cprev = NULL;
	if (c->watches)
		c->watches->cprev = w;
	c->watches = w;
	c->nwatches++;
	if (c->dom)
		c->dom->nwatches++;
	size_t k = w->hash & (wt.nb - 1);
	w->hnext = wt.b[k];
	wt.b[k] = w;
	sorted_add(w);
	/* at most one watch per two buckets: a change looks up every ancestor
	 * of its path, nearly all of them watched by no one, and an empty
	 * bucket answers from the bucket array without touching a watch (with
	 * 2,000 guest watches at two per bucket, walking those chains was the
	 * largest extra cost of a VM transaction next to 1,000 domains) */
	if (++wt.n > wt.nb / 2)
		rehash(wt.nb * 4);
	return 0;
}

static void unlink_hash(struct xsd_watch *w)
{
	struct xsd_watch **pp = &wt.b[w->hash & (wt.nb - 1)];
	for (; *pp; pp = &(*pp)->hnext)
		if (*pp == w) {
			*pp = w->hnext;
			wt.n--;
			sorted_remove(w);
			return;
		}
}

static void watch_free(struct xsd_conn *c, struct xsd_watch *w)
{
	unlink_hash(w);
	c->nwatches--;
	if (c->dom && c->dom->nwatches)
		c->dom->nwatches--;
	free(w->path);
	free(w);
}

int xsd_watch_remove(struct xsd_conn *c, const char *path, const char *token)
{
	struct xsd_watch *w = find_watch(c, path, strlen(path), token);
	if (!w)
		return -ENOENT;
	if (w->cprev)
		w->cprev->cnext = w->cnext;
	else
		c->watches = w->cnext;
	if (w->cnext)
		w->cnext->cprev = w->cprev;
	watch_free(c, w);
	return 0;
}

void xsd_watch_remove_all(struct xsd_conn *c)
{
	while (c->watches) {
		struct xsd_watch *w = c->watches;
		c->watches = w->cnext;
		watch_free(c, w);
	}
}

/* 4.17's watch_permitted: the node or its parent readable (on the current
 * tree: a removed node is judged by its parent). */
static bool permitted(struct xsd_conn *c, const char *path, size_t plen)
{
	if (c->priv)
		return true;
	if (xs_can(xsd.store, c->domid, path, XS_PERM_READ))
		return true;
	if (plen <= 1)
		return false;
	char parent[XS_PAYLOAD_MAX + 64];
	const char *slash = memrchr(path, '/', plen);
	size_t n = slash && slash != path ? (size_t)(slash - path) : 1;
	if (n >= sizeof(parent))
		return false;
	memcpy(parent, path, n);
	parent[n] = 0;
	return xs_can(xsd.store, c->domid, parent, XS_PERM_READ);
}

static void fire(struct xsd_watch *w, const char *path, size_t plen)
{
	struct xsd_conn *c = w->c;
	if (c->closing || !permitted(c, path, plen))
		return;
	if (w->rel_off) {
		path += w->rel_off;
		plen -= w->rel_off;
		if (plen && *path == '/')
			path++, plen--;
	}
	xsd_watch_send_event(c, path, plen, w->token);
}

/* Watches registered on exactly key[0..klen) fire with path. */
static void fire_key(const char *key, size_t klen, uint64_t h,
		     const char *path, size_t plen)
{
	for (struct xsd_watch *w = wt.b[h & (wt.nb - 1)]; w; w = w->hnext)
		if (w->hash == h && w->plen == klen && !memcmp(w->path, key, klen))
			fire(w, path, plen);
}

void xsd_watch_changed(void *opaque, const char *path, bool recursive)
{
	(void)opaque;
	if (!wt.n)
		return;
	size_t n = strlen(path);
	/* the path and every ancestor: "/", "/a", "/a/b" ... */
	uint64_t h = FNV_INIT;
	for (size_t i = 0; i < n; i++) {
		h = fnv_step(h, (unsigned char)path[i]);
		size_t l = i + 1;
		if (l == 1 || l == n || path[l] == '/')
			fire_key(path, l, h, path, n);
	}
	if (!recursive)
		return;
	/* rm of a subtree: the watches below it fire too, with their path */
	char pre[XS_PAYLOAD_MAX + 2];
	size_t pl = n;
	if (n >= sizeof(pre) - 1)
		return;
	memcpy(pre, path, n);
	if (n > 1)
		pre[pl++] = '/';
	for (size_t i = sorted_lower(pre, pl); i < wt.ns; i++) {
		struct xsd_watch *w = wt.sorted[i];
		if (w->plen < pl || memcmp(w->path, pre, pl))
			break;
		if (w->plen > n) /* "/" itself fired with the ancestors */
			fire(w, w->path, w->plen);
	}
}

void xsd_watch_fire_special(const char *name)
{
	size_t n = strlen(name);
	uint64_t h = hash_str(name, n);
	struct xsd_special_perms *sp = xsd_special_perms(name);
	for (struct xsd_watch *w = wt.b[h & (wt.nb - 1)]; w; w = w->hnext) {
		if (w->hash != h || w->plen != n || memcmp(w->path, name, n))
			continue;
		struct xsd_conn *c = w->c;
		if (c->closing)
			continue;
		if (!c->priv && (!sp || !(xsd_perm_for(c->domid, sp->p, sp->n) & XS_PERM_READ)))
			continue;
		xsd_watch_send_event(c, name, n, w->token);
	}
}
