/* conn.c — xenstored connections: request framing and dispatch (Xen 4.17
 * semantics), reply queuing, and the Unix socket transport (a thread per
 * connection, accepts and slow peers on the libuv loop).
 *
 * Speed: a wakeup does one recv() into the connection's input buffer, every
 * complete request in it is handled in order, every reply and watch event is
 * appended to the connections' output buffers, and each touched connection is
 * flushed once (a non-blocking send; the loop sends what is left).  Paths are
 * canonicalised into a stack buffer and values read into a reused scratch
 * buffer, so a request does not allocate once the buffers have grown.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <xen/io/xs_wire.h>

#include "base/log.h"
#include "base/util.h"
#include "xs/xsd.h"

#define PATH_BUF (XS_PAYLOAD_MAX + 64)

struct xsd xsd;

/* ---- queuing ---------------------------------------------------------- */

void xsd_conn_mark(struct xsd_conn *c)
{
	if (c->dirty || c->closing)
		return;
	c->dirty = true;
	c->flush_next = xsd.flush_list;
	xsd.flush_list = c;
}

void xsd_flush(void)
{
	while (xsd.flush_list) {
		struct xsd_conn *c = xsd.flush_list;
		xsd.flush_list = c->flush_next;
		c->dirty = false;
		if (!c->closing && c->out.len)
			c->ops->flush(c);
	}
	xsd_trace_flush();
}

void xsd_conn_send(struct xsd_conn *c, uint32_t type, uint32_t req_id,
		   uint32_t tx_id, const void *p, size_t len)
{
	struct xs_hdr h = { type, req_id, tx_id, (uint32_t)len };
	if (xsd.trace)
		xsd_trace_io(c, true, &h, p);
	xs_reply(&c->out, type, req_id, tx_id, p, len);
	xsd_conn_mark(c);
}

static void reply(struct xsd_conn *c, const struct xs_hdr *req, const void *p,
		  size_t len)
{
	if (len > XS_PAYLOAD_MAX) {
		/* as 4.17's send_reply: too big for one packet */
		const char *e = "E2BIG";
		xsd_conn_send(c, XS_ERROR, req->req_id, req->tx_id, e, 6);
		return;
	}
	xsd_conn_send(c, req->type, req->req_id, req->tx_id, p, len);
}

static void reply_err(struct xsd_conn *c, const struct xs_hdr *req, int err)
{
	const char *n = xs_errno_name(err);
	xsd_conn_send(c, XS_ERROR, req->req_id, req->tx_id, n, strlen(n) + 1);
}

static void reply_ok(struct xsd_conn *c, const struct xs_hdr *req)
{
	reply(c, req, "OK", 3);
}

/* ---- paths ------------------------------------------------------------ */

static bool valid_chars(const char *p, size_t n)
{
	static bool ok[256];
	if (!ok['/']) {
		for (const char *s = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@"; *s; s++)
			ok[(unsigned char)*s] = true;
	}
	for (size_t i = 0; i < n; i++)
		if (!ok[(unsigned char)p[i]])
			return false;
	return true;
}

/* 4.17's is_valid_nodename: absolute, no trailing or double '/', allowed
 * characters, and at most path-max characters below /local/domain/<id>/. */
bool xsd_path_valid(const char *p, size_t n)
{
	if (n == 0 || p[0] != '/')
		return false;
	if (n > 1 && p[n - 1] == '/')
		return false;
	if (memmem(p, n, "//", 2))
		return false;
	size_t local_off = 0;
	if (n > 14 && memcmp(p, "/local/domain/", 14) == 0) {
		size_t i = 14, d = 0;
		while (i < n && d < 5 && p[i] >= '0' && p[i] <= '9')
			i++, d++;
		if (d > 0 && i < n && p[i] == '/')
			local_off = i + 1;
	}
	if (n > local_off + xsd.quota.max_path)
		return false;
	return valid_chars(p, n);
}

/* Make arg absolute (relative to /local/domain/<domid>) into out. */
static int canon(const struct xsd_conn *c, const char *arg, size_t alen,
		 char *out, size_t *olen)
{
	size_t n;
	if (arg[0] == '@')
		return -EINVAL; /* 4.17 leaves "@..." as is: not a node name */
	if (arg[0] == '/') {
		if (alen >= PATH_BUF)
			return -EINVAL;
		memcpy(out, arg, alen + 1);
		n = alen;
	} else {
		int k = snprintf(out, PATH_BUF, "/local/domain/%u/", c->domid);
		if ((size_t)k + alen >= PATH_BUF)
			return -EINVAL;
		memcpy(out + k, arg, alen + 1);
		n = (size_t)k + alen;
	}
	if (!xsd_path_valid(out, n))
		return -EINVAL;
	*olen = n;
	return 0;
}

/* ---- transactions of a connection ------------------------------------- */

static struct xs_txn *txn_find(struct xsd_conn *c, uint32_t id, unsigned *idx)
{
	for (unsigned i = 0; i < c->ntxns; i++)
		if (c->txns[i].id == id) {
			if (idx)
				*idx = i;
			return c->txns[i].t;
		}
	return NULL;
}

static void txn_forget(struct xsd_conn *c, unsigned i)
{
	c->txns[i] = c->txns[--c->ntxns];
	if (c->dom && c->dom->ntxns)
		c->dom->ntxns--;
}

static void txn_abort_all(struct xsd_conn *c)
{
	while (c->ntxns) {
		struct xs_txn *t = c->txns[c->ntxns - 1].t;
		txn_forget(c, c->ntxns - 1);
		xs_txn_end(xsd.store, t, false);
	}
}

/* ---- handlers ---------------------------------------------------------- */

static unsigned parse_uint(const char *s)
{
	/* atoi, as 4.17 does */
	return (unsigned)atoi(s);
}

/* READ and DIRECTORY: the store fills the scratch buffer, which is the reply. */
typedef int (*store_get_fn)(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
			    struct buf *out);

static void do_get(struct xsd_conn *c, struct xs_txn *t, const struct xs_msg *m,
		   const char *path, store_get_fn get)
{
	xsd.scratch.len = 0;
	int r = get(xsd.store, t, c->domid, path, &xsd.scratch);
	if (r < 0)
		return reply_err(c, &m->h, -r);
	reply(c, &m->h, xsd.scratch.p, xsd.scratch.len);
}

/* 4.17: "<generation>\0" then as many whole child names from offset as fit,
 * and a final extra NUL when the list ends in this part. */
static void do_directory_part(struct xsd_conn *c, struct xs_txn *t,
			      const struct xs_msg *m, const char *path)
{
	xsd.scratch.len = 0;
	int r = xs_directory(xsd.store, t, c->domid, path, &xsd.scratch);
	if (r < 0)
		return reply_err(c, &m->h, -r);
	unsigned off = parse_uint(m->args[1]);
	char gen[32];
	size_t genlen = (size_t)snprintf(gen, sizeof(gen), "%" PRIu64,
					 xs_node_gen(xsd.store, t, path)) + 1;
	const char *kids = xsd.scratch.p;
	size_t klen = xsd.scratch.len;
	char part[XS_PAYLOAD_MAX + 1];
	memcpy(part, gen, genlen);
	if (off >= klen) {
		part[genlen] = 0;
		return reply(c, &m->h, part, genlen + 1);
	}
	size_t len = 0, maxlen = XS_PAYLOAD_MAX - genlen - 1;
	const char *child = kids + off;
	while (len + strlen(child) < maxlen) {
		len += strlen(child) + 1;
		child += strlen(child) + 1;
		if (off + len >= klen)
			break;
	}
	memcpy(part + genlen, kids + off, len);
	if (off + len >= klen) {
		part[genlen + len] = 0;
		len++;
	}
	reply(c, &m->h, part, genlen + len);
}

static void do_get_perms(struct xsd_conn *c, struct xs_txn *t,
			 const struct xs_msg *m, const char *path)
{
	struct xs_perm *p = NULL;
	int n = 0;
	int r = xs_get_perms(xsd.store, t, c->domid, path, &p, &n);
	if (r < 0)
		return reply_err(c, &m->h, -r);
	struct buf *b = &xsd.scratch;
	b->len = 0;
	static const char letters[] = "nrwb";
	for (int i = 0; i < n; i++)
		buf_printf(b, "%c%u%c", letters[p[i].perm & 3], p[i].domid, 0);
	free(p);
	reply(c, &m->h, b->p, b->len);
}

/* Parse "r1\0b2\0..." (n strings) as xs_strings_to_perms does. */
static int parse_perms(const char *s, size_t len, struct xs_perm *out, int max,
		       int *n)
{
	const char *end = s + len;
	int k = 0;
	while (s < end) {
		const char *nul = memchr(s, 0, (size_t)(end - s));
		if (!nul)
			break;
		if (k >= max)
			return -ENOSPC;
		switch (*s) {
		case 'r': out[k].perm = XS_PERM_READ; break;
		case 'w': out[k].perm = XS_PERM_WRITE; break;
		case 'b': out[k].perm = XS_PERM_BOTH; break;
		case 'n': out[k].perm = XS_PERM_NONE; break;
		default: return -EINVAL;
		}
		char *e;
		if (!s[1])
			return -EINVAL;
		errno = 0;
		long v = strtol(s + 1, &e, 0);
		if (*e || v < 0 || v > UINT32_MAX)
			return -EINVAL;
		out[k].domid = (uint32_t)v;
		k++;
		s = nul + 1;
	}
	*n = k;
	return 0;
}

#define PERMS_MAX 1024

static void do_set_perms(struct xsd_conn *c, struct xs_txn *t,
			 const struct xs_msg *m)
{
	static struct xs_perm perms[PERMS_MAX];
	int n = 0, r;
	r = parse_perms(m->value, m->value_len, perms, PERMS_MAX, &n);
	if (r < 0)
		return reply_err(c, &m->h, r == -ENOSPC ? E2BIG : EINVAL);
	if (n < 1)
		return reply_err(c, &m->h, EINVAL);
	if (!c->priv && xsd.quota.max_perms && (uint32_t)n > xsd.quota.max_perms)
		return reply_err(c, &m->h, ENOSPC);
	if (m->args[0][0] == '@') {
		struct xsd_special_perms *sp = xsd_special_perms(m->args[0]);
		if (!sp)
			return reply_err(c, &m->h, EINVAL);
		if ((xsd_perm_for(c->domid, sp->p, sp->n) & 6) != 6)
			return reply_err(c, &m->h, EACCES);
		if (n > (int)(sizeof(sp->p) / sizeof(sp->p[0])))
			return reply_err(c, &m->h, ENOSPC);
		memcpy(sp->p, perms, sizeof(perms[0]) * (size_t)n);
		sp->n = n;
		return reply_ok(c, &m->h);
	}
	char path[PATH_BUF];
	size_t plen;
	if (canon(c, m->args[0], m->arglen[0], path, &plen) < 0)
		return reply_err(c, &m->h, EINVAL);
	r = xs_set_perms(xsd.store, t, c->domid, path, perms, n);
	if (r < 0)
		return reply_err(c, &m->h, -r);
	reply_ok(c, &m->h);
}

static void do_watch(struct xsd_conn *c, const struct xs_msg *m)
{
	const char *arg = m->args[0], *token = m->args[1];
	char path[PATH_BUF];
	size_t plen;
	bool relative = false;
	if (arg[0] == '@') {
		if (m->arglen[0] > 2048)
			return reply_err(c, &m->h, EINVAL);
		memcpy(path, arg, m->arglen[0] + 1);
	} else {
		relative = arg[0] != '/';
		if (canon(c, arg, m->arglen[0], path, &plen) < 0)
			return reply_err(c, &m->h, EINVAL);
	}
	int r = xsd_watch_add(c, path, token, relative);
	if (r < 0)
		return reply_err(c, &m->h, -r);
	reply_ok(c, &m->h);
	/* fire once up front, with the path as the client gave it */
	xsd_watch_send_event(c, arg, m->arglen[0], token);
}

static void do_unwatch(struct xsd_conn *c, const struct xs_msg *m)
{
	const char *arg = m->args[0];
	char path[PATH_BUF];
	if (arg[0] == '/' || arg[0] == '@') {
		if (m->arglen[0] >= PATH_BUF)
			return reply_err(c, &m->h, ENOENT);
		memcpy(path, arg, m->arglen[0] + 1);
	} else {
		int k = snprintf(path, sizeof(path), "/local/domain/%u/", c->domid);
		if ((size_t)k + m->arglen[0] >= sizeof(path))
			return reply_err(c, &m->h, ENOENT);
		memcpy(path + k, arg, m->arglen[0] + 1);
	}
	int r = xsd_watch_remove(c, path, m->args[1]);
	if (r < 0)
		return reply_err(c, &m->h, -r);
	reply_ok(c, &m->h);
}

static void do_txn_start(struct xsd_conn *c, struct xs_txn *t,
			 const struct xs_msg *m)
{
	if (t)
		return reply_err(c, &m->h, EBUSY);
	if (!c->priv && xsd.quota.max_transactions &&
	    c->ntxns > xsd.quota.max_transactions)
		return reply_err(c, &m->h, ENOSPC);
	struct xs_txn *nt;
	int r = xs_txn_start(xsd.store, c->domid, &nt);
	if (r < 0)
		return reply_err(c, &m->h, -r);
	if (c->ntxns == c->txn_cap) {
		c->txn_cap = c->txn_cap ? c->txn_cap * 2 : 4;
		c->txns = util_realloc(c->txns, c->txn_cap * sizeof(*c->txns));
	}
	uint32_t id = xs_txn_id(nt);
	c->txns[c->ntxns++] = (struct xsd_txn_ref){ nt, id };
	if (c->dom)
		c->dom->ntxns++;
	char s[16];
	int k = snprintf(s, sizeof(s), "%u", id);
	reply(c, &m->h, s, (size_t)k + 1);
}

static void do_txn_end(struct xsd_conn *c, struct xs_txn *t, const struct xs_msg *m)
{
	const char *a = m->args[0];
	bool commit;
	if (!strcmp(a, "T"))
		commit = true;
	else if (!strcmp(a, "F"))
		commit = false;
	else
		return reply_err(c, &m->h, EINVAL);
	if (!t)
		return reply_err(c, &m->h, ENOENT);
	unsigned idx = 0;
	txn_find(c, m->h.tx_id, &idx);
	txn_forget(c, idx);
	int r = xs_txn_end(xsd.store, t, commit);
	if (r < 0)
		return reply_err(c, &m->h, -r);
	reply_ok(c, &m->h);
}

/* CONTROL (alias DEBUG) */
struct qent {
	const char *name;
	uint32_t *val;
	const char *descr;
};

static void control_quota_show(struct xsd_conn *c, const struct xs_msg *m)
{
	const struct qent q[] = {
		{ "nodes", &xsd.quota.max_nodes, "Nodes per domain" },
		{ "watches", &xsd.quota.max_watches, "Watches per domain" },
		{ "transactions", &xsd.quota.max_transactions, "Transactions per domain" },
		{ "node-size", &xsd.quota.max_node_size, "Max. size of a node" },
		{ "path-max", &xsd.quota.max_path, "Max. length of a node path" },
		{ "permissions", &xsd.quota.max_perms, "Max. number of permissions per node" },
		{ NULL, NULL, NULL }
	};
	struct buf *b = &xsd.scratch;
	b->len = 0;
	buf_adds(b, "Quota settings:\n");
	for (int i = 0; q[i].name; i++)
		buf_printf(b, "%-17s: %8u %s\n", q[i].name, *q[i].val, q[i].descr);
	reply(c, &m->h, b->p, b->len + 1);
}

static uint32_t *quota_by_name(const char *n)
{
	if (!strcmp(n, "nodes")) return &xsd.quota.max_nodes;
	if (!strcmp(n, "watches")) return &xsd.quota.max_watches;
	if (!strcmp(n, "transactions")) return &xsd.quota.max_transactions;
	if (!strcmp(n, "node-size")) return &xsd.quota.max_node_size;
	if (!strcmp(n, "path-max")) return &xsd.quota.max_path;
	if (!strcmp(n, "permissions")) return &xsd.quota.max_perms;
	return NULL;
}

void xsd_quota_changed(void); /* main.c */

static const char control_help[] =
	"check\t\n"
	"log\ton|off\n"
	"logfile\t<file>\n"
	"memreport\t[<file>]\n"
	"print\t<string>\n"
	"quota\t[set <name> <val>|<domid>]\n"
	"quota-soft\t[set <name> <val>]\n"
	"domain-socket\t<domid>\n"
	"domain-exc\t<domid>\n"
	"help\t\n";

static void do_control(struct xsd_conn *c, const struct xs_msg *m)
{
	const char *argv[XS_MAX_ARGS] = { "" };
	int argc = 0;
	/* all strings of the payload (at most XS_MAX_ARGS) */
	const char *p = m->value, *end = m->value + m->value_len;
	int total = 0;
	while (p < end) {
		const char *nul = memchr(p, 0, (size_t)(end - p));
		if (!nul)
			break;
		if (argc < XS_MAX_ARGS)
			argv[argc++] = p;
		total++;
		p = nul + 1;
	}
	const char *cmd = argv[0];
	int n = total - 1;
	const char **v = argv + 1;
	struct buf *b = &xsd.scratch;
	b->len = 0;

	if (!strcmp(cmd, "check")) {
		if (n)
			return reply_err(c, &m->h, EINVAL);
		return reply_ok(c, &m->h);
	} else if (!strcmp(cmd, "log")) {
		if (n != 1)
			return reply_err(c, &m->h, EINVAL);
		if (!strcmp(v[0], "on")) {
			if (xsd.trace_path && !xsd.trace)
				xsd_trace_open(xsd.trace_path);
		} else if (!strcmp(v[0], "off")) {
			xsd_trace_close();
		} else
			return reply_err(c, &m->h, EINVAL);
		return reply_ok(c, &m->h);
	} else if (!strcmp(cmd, "logfile")) {
		if (n != 1)
			return reply_err(c, &m->h, EINVAL);
		xsd_trace_close();
		free(xsd.trace_path);
		xsd.trace_path = util_strdup(v[0]);
		if (xsd_trace_open(xsd.trace_path) < 0)
			return reply_err(c, &m->h, EIO);
		return reply_ok(c, &m->h);
	} else if (!strcmp(cmd, "memreport")) {
		if (n > 1)
			return reply_err(c, &m->h, EINVAL);
		unsigned nc = 0, nw = 0;
		for (struct xsd_conn *i = xsd.conns; i; i = i->next) {
			nc++;
			nw += i->nwatches;
		}
		buf_printf(b, "nodes: %u\nconnections: %u\nwatches: %u\ndomains: %u\n",
			   xs_store_nodes(xsd.store), nc, nw, xsd.ndomains);
		if (n == 1) {
			FILE *f = fopen(v[0], "w");
			if (!f)
				return reply_err(c, &m->h, EIO);
			fwrite(b->p, 1, b->len, f);
			fclose(f);
		} else {
			log_info("memreport: %s", b->p);
		}
		return reply_ok(c, &m->h);
	} else if (!strcmp(cmd, "print")) {
		if (n != 1)
			return reply_err(c, &m->h, EINVAL);
		log_info("control: %s", v[0]);
		return reply_ok(c, &m->h);
	} else if (!strcmp(cmd, "quota")) {
		if (n == 0)
			return control_quota_show(c, m);
		if (!strcmp(v[0], "set")) {
			if (n != 3)
				return reply_err(c, &m->h, EINVAL);
			int val = atoi(v[2]);
			uint32_t *q = quota_by_name(v[1]);
			if (val < 1 || !q)
				return reply_err(c, &m->h, EINVAL);
			*q = (uint32_t)val;
			xsd_quota_changed();
			return reply_ok(c, &m->h);
		}
		if (n != 1)
			return reply_err(c, &m->h, EINVAL);
		uint32_t domid = parse_uint(v[0]);
		struct xsd_domain *d = domid ? xsd_domain_get(domid) : NULL;
		if (domid && !d)
			return reply_err(c, &m->h, ENOENT);
		unsigned nw = 0, nt = 0;
		if (d) {
			nw = d->nwatches;
			nt = d->ntxns;
		}
		buf_printf(b, "Domain %u:\n", domid);
		buf_printf(b, "%-16s: %8u\n", "nodes", xs_store_dom_nodes(xsd.store, domid));
		buf_printf(b, "%-16s: %8u\n", "watches", nw);
		buf_printf(b, "%-16s: %8u\n", "transactions", nt);
		buf_printf(b, "%-16s: %8u\n", "outstanding", 0u);
		return reply(c, &m->h, b->p, b->len + 1);
	} else if (!strcmp(cmd, "quota-soft")) {
		if (n == 0) {
			buf_adds(b, "Quota settings:\n");
			return reply(c, &m->h, b->p, b->len + 1);
		}
		return reply_err(c, &m->h, EINVAL);
	} else if (!strcmp(cmd, "domain-socket")) {
		if (n != 1)
			return reply_err(c, &m->h, EINVAL);
		struct xsd_domain *d = xsd_domain_get(parse_uint(v[0]));
		if (!d)
			return reply_err(c, &m->h, ENOENT);
		return reply(c, &m->h, d->sock_path, strlen(d->sock_path) + 1);
	} else if (!strcmp(cmd, "domain-exc")) {
		/* What VIRQ_DOM_EXC does in Xen: the hypervisor says a domain
		 * shut down or is dying, and watchers of @releaseDomain look.  A
		 * simulated hypervisor has no virq, so it says so here. */
		if (n != 1)
			return reply_err(c, &m->h, EINVAL);
		if (!xsd_domain_get(parse_uint(v[0])))
			return reply_err(c, &m->h, ENOENT);
		xsd_watch_fire_special("@releaseDomain");
		return reply_ok(c, &m->h);
	} else if (!strcmp(cmd, "help")) {
		if (n)
			return reply_err(c, &m->h, EINVAL);
		return reply(c, &m->h, control_help, sizeof(control_help));
	}
	reply_err(c, &m->h, EINVAL);
}

static bool domain_connected(uint32_t domid)
{
	return domid == 0 || xsd_domain_get(domid) != NULL;
}

static void handle(struct xsd_conn *c, const struct xs_hdr *h, const char *payload)
{
	struct xs_msg m;
	xsd.nreq++;
	if (xsd.trace)
		xsd_trace_io(c, false, h, payload);
	int dr = xs_msg_decode(h, payload, &m);
	if (dr == -ENOSYS)
		return reply_err(c, h, ENOSYS);

	switch (h->type) {
	case XS_CONTROL: case XS_INTRODUCE: case XS_RELEASE:
	case XS_IS_DOMAIN_INTRODUCED: case XS_RESUME: case XS_SET_TARGET:
		if (!c->priv)
			return reply_err(c, h, EACCES);
		break;
	default:
		break;
	}
	struct xs_txn *t = NULL;
	if (h->tx_id && h->type != XS_WATCH && h->type != XS_UNWATCH) {
		t = txn_find(c, h->tx_id, NULL);
		if (!t)
			return reply_err(c, h, ENOENT);
	}
	if (dr < 0)
		return reply_err(c, h, -dr);

	char path[PATH_BUF];
	size_t plen;
	int r;
	switch (h->type) {
	case XS_READ: case XS_WRITE: case XS_MKDIR: case XS_RM:
	case XS_DIRECTORY: case XS_DIRECTORY_PART: case XS_GET_PERMS:
		if (canon(c, m.args[0], m.arglen[0], path, &plen) < 0)
			return reply_err(c, h, EINVAL);
		break;
	default:
		break;
	}

	switch (h->type) {
	case XS_READ:
		return do_get(c, t, &m, path, xs_read);
	case XS_WRITE:
		r = xs_write(xsd.store, t, c->domid, path, m.value, m.value_len);
		return r < 0 ? reply_err(c, h, -r) : reply_ok(c, h);
	case XS_MKDIR:
		r = xs_mkdir(xsd.store, t, c->domid, path);
		return r < 0 ? reply_err(c, h, -r) : reply_ok(c, h);
	case XS_RM:
		if (!strcmp(path, "/"))
			return reply_err(c, h, EINVAL);
		r = xs_rm(xsd.store, t, c->domid, path);
		return r < 0 ? reply_err(c, h, -r) : reply_ok(c, h);
	case XS_DIRECTORY:
		return do_get(c, t, &m, path, xs_directory);
	case XS_DIRECTORY_PART:
		return do_directory_part(c, t, &m, path);
	case XS_GET_PERMS:
		return do_get_perms(c, t, &m, path);
	case XS_SET_PERMS:
		return do_set_perms(c, t, &m);
	case XS_WATCH:
		return do_watch(c, &m);
	case XS_UNWATCH:
		return do_unwatch(c, &m);
	case XS_TRANSACTION_START:
		return do_txn_start(c, t, &m);
	case XS_TRANSACTION_END:
		return do_txn_end(c, t, &m);
	case XS_INTRODUCE: {
		int domid = atoi(m.args[0]);
		int port = atoi(m.args[2]);
		if (port <= 0 || domid < 0 || (uint32_t)domid >= XSD_DOMID_MAX)
			return reply_err(c, h, EINVAL);
		r = xsd_domain_introduce((uint32_t)domid,
					 strtoull(m.args[1], NULL, 0), (uint32_t)port);
		return r < 0 ? reply_err(c, h, -r) : reply_ok(c, h);
	}
	case XS_RELEASE: {
		uint32_t domid = parse_uint(m.args[0]);
		if (!domid)
			return reply_err(c, h, EINVAL);
		r = xsd_domain_release(domid);
		if (c->closing)
			return;
		return r < 0 ? reply_err(c, h, -r) : reply_ok(c, h);
	}
	case XS_RESUME: {
		uint32_t domid = parse_uint(m.args[0]);
		if (!domid)
			return reply_err(c, h, EINVAL);
		if (!xsd_domain_get(domid))
			return reply_err(c, h, ENOENT);
		return reply_ok(c, h);
	}
	case XS_GET_DOMAIN_PATH: {
		char s[48];
		int k = snprintf(s, sizeof(s), "/local/domain/%u", parse_uint(m.args[0]));
		return reply(c, h, s, (size_t)k + 1);
	}
	case XS_IS_DOMAIN_INTRODUCED: {
		uint32_t domid = parse_uint(m.args[0]);
		bool yes = domid == XSD_DOMID_SELF || domain_connected(domid);
		return reply(c, h, yes ? "T" : "F", 2);
	}
	case XS_SET_TARGET: {
		uint32_t dom = parse_uint(m.args[0]), tgt = parse_uint(m.args[1]);
		if (!domain_connected(dom) || !domain_connected(tgt))
			return reply_err(c, h, ENOENT);
		r = xs_store_set_target(xsd.store, dom, tgt);
		return r < 0 ? reply_err(c, h, -r) : reply_ok(c, h);
	}
	case XS_RESET_WATCHES:
		xsd_watch_remove_all(c);
		txn_abort_all(c);
		return reply_ok(c, h);
	case XS_CONTROL:
		return do_control(c, &m);
	default:
		return reply_err(c, h, ENOSYS);
	}
}

/* ---- connection life --------------------------------------------------- */

struct xsd_conn *xsd_conn_new(const struct xsd_conn_ops *ops, uint32_t domid,
			      struct xsd_domain *dom)
{
	struct xsd_conn *c = util_calloc(1, sizeof(*c));
	c->ops = ops;
	c->domid = domid;
	c->priv = domid == 0;
	c->dom = dom;
	c->serial = ++xsd.conn_serial;
	buf_init(&c->in);
	buf_init(&c->out);
	c->next = xsd.conns;
	if (xsd.conns)
		xsd.conns->prev = c;
	xsd.conns = c;
	if (dom) {
		c->dnext = dom->conns;
		if (dom->conns)
			dom->conns->dprev = c;
		dom->conns = c;
	}
	xsd_trace_line("CREATE connection %" PRIu64 " domid %u\n", c->serial, domid);
	return c;
}

void xsd_conn_process(struct xsd_conn *c)
{
	while (!c->closing) {
		size_t avail = c->in.len - c->in_off;
		if (avail < XS_HDR_SIZE)
			break;
		struct xs_hdr h;
		memcpy(&h, c->in.p + c->in_off, XS_HDR_SIZE);
		if (h.len > XS_PAYLOAD_MAX) {
			/* 4.17 stops talking to such a client */
			log_warn("xenstored: connection %" PRIu64 " (domid %u) sent a %u-byte payload; closing it",
				 c->serial, c->domid, h.len);
			xsd_conn_drop(c, "payload too long");
			return;
		}
		if (avail < XS_HDR_SIZE + h.len)
			break;
		const char *payload = c->in.p + c->in_off + XS_HDR_SIZE;
		c->in_off += XS_HDR_SIZE + h.len;
		handle(c, &h, payload);
	}
	if (c->closing)
		return;
	if (c->in_off == c->in.len) {
		c->in.len = c->in_off = 0;
	} else if (c->in_off) {
		memmove(c->in.p, c->in.p + c->in_off, c->in.len - c->in_off);
		c->in.len -= c->in_off;
		c->in_off = 0;
	}
}

void xsd_conn_drop(struct xsd_conn *c, const char *why)
{
	if (c->closing)
		return;
	log_debug("xenstored: dropping connection %" PRIu64 " (domid %u): %s",
		  c->serial, c->domid, why);
	xsd_trace_line("DESTROY connection %" PRIu64 " (%s)\n", c->serial, why);
	txn_abort_all(c);
	xsd_watch_remove_all(c);
	c->closing = true;
	/* off the flush list */
	for (struct xsd_conn **pp = &xsd.flush_list; *pp; pp = &(*pp)->flush_next)
		if (*pp == c) {
			*pp = c->flush_next;
			break;
		}
	c->dirty = false;
	if (c->prev)
		c->prev->next = c->next;
	else
		xsd.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
	if (c->dom) {
		if (c->dprev)
			c->dprev->dnext = c->dnext;
		else
			c->dom->conns = c->dnext;
		if (c->dnext)
			c->dnext->dprev = c->dprev;
		c->dom = NULL;
	}
	c->ops->close(c);
}

void xsd_conn_free(struct xsd_conn *c)
{
	if (!c)
		return;
	buf_free(&c->in);
	buf_free(&c->out);
	free(c->txns);
	free(c);
}

/* ---- Unix socket transport: a thread per connection --------------------- */

/* Why threads: a thread blocked in recv() is woken once per request and makes
 * two system calls for it (recv, send); an event loop adds epoll_wait and its
 * own bookkeeping, which measured about 1 µs more per request (a quarter of
 * the kernel's own cost of a round trip; docs/xenstored.md).  Handling runs
 * under xsd.lock, so the store sees one request at a time as before. */

#define XSD_STACK (256u << 10)

static struct xsd_listener *ljobs;
static struct xsd_conn *cjobs;

static void wake_loop(void)
{
	uv_async_send(&xsd.wake);
}

static void queue_listener(struct xsd_listener *l)
{
	if (l->job_queued)
		return;
	l->job_queued = true;
	l->job_next = ljobs;
	ljobs = l;
	wake_loop();
}

static void queue_conn(struct xsd_conn *c)
{
	if (c->job_queued)
		return;
	c->job_queued = true;
	c->job_next = cjobs;
	cjobs = c;
	wake_loop();
}

static size_t pending(const struct xsd_conn *c)
{
	return c->out.len - c->out_off;
}

/* Send what the socket takes now, without blocking.  false: the connection
 * was dropped. */
static bool sock_send(struct xsd_conn *c)
{
	while (pending(c)) {
		ssize_t n = send(c->fd, c->out.p + c->out_off, pending(c), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		xsd_conn_drop(c, n < 0 ? strerror(errno) : "short write");
		return false;
	}
	c->out.len = c->out_off = 0;
	return true;
}

/* Keep a slow peer's buffer from growing with what it has already taken. */
static void compact(struct xsd_conn *c)
{
	if (c->out_off < (1u << 20))
		return;
	memmove(c->out.p, c->out.p + c->out_off, pending(c));
	c->out.len -= c->out_off;
	c->out_off = 0;
}

static void sock_flush(struct xsd_conn *c)
{
	if (c->wpoll_on || !sock_send(c) || !pending(c))
		return;
	compact(c);
	/* the peer does not keep up: the loop thread sends the rest */
	c->wpoll_on = true;
	queue_conn(c);
}

static void sock_close(struct xsd_conn *c)
{
	/* wakes the connection's thread from recv() or from waiting to drain */
	shutdown(c->fd, SHUT_RDWR);
	pthread_cond_broadcast(&c->drained);
}

static const struct xsd_conn_ops sock_ops = { sock_flush, sock_close };

static void *conn_thread(void *arg)
{
	struct xsd_conn *c = arg;
	for (;;) {
		buf_reserve(&c->in, 65536); /* c->in is this thread's alone */
		ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		pthread_mutex_lock(&xsd.lock);
		if (c->closing)
			break;
		if (n <= 0) {
			xsd_conn_drop(c, n == 0 ? "closed by peer" : strerror(errno));
			xsd_flush();
			break;
		}
		c->in.len += (size_t)n;
		xsd_conn_process(c);
		xsd_flush();
		/* a client that does not read its replies is not read from */
		while (!c->closing && pending(c) > XSD_OUT_MAX)
			pthread_cond_wait(&c->drained, &xsd.lock);
		if (c->closing)
			break;
		pthread_mutex_unlock(&xsd.lock);
	}
	c->gone = true;
	queue_conn(c);
	pthread_mutex_unlock(&xsd.lock);
	return NULL;
}

static void conn_freed(uv_handle_t *h)
{
	struct xsd_conn *c = h->data;
	close(c->fd);
	pthread_cond_destroy(&c->drained);
	xsd_conn_free(c);
}

static void on_writable(uv_poll_t *p, int status, int events)
{
	struct xsd_conn *c = p->data;
	pthread_mutex_lock(&xsd.lock);
	if (!c->closing && status < 0)
		xsd_conn_drop(c, uv_strerror(status));
	else if (!c->closing && sock_send(c) && pending(c)) {
		compact(c);
		goto out; /* more to send */
	}
	c->wpoll_on = false;
	uv_poll_stop(p);
	pthread_cond_broadcast(&c->drained);
	xsd_flush();
out:
	pthread_mutex_unlock(&xsd.lock);
}

static void on_accept(uv_poll_t *p, int status, int events);

static void listener_freed(uv_handle_t *h)
{
	struct xsd_listener *l = h->data;
	close(l->fd);
	free(l);
}

/* Loop thread, under the lock: start/stop what connection threads asked for. */
static void on_jobs(uv_async_t *a)
{
	pthread_mutex_lock(&xsd.lock);
	while (ljobs) {
		struct xsd_listener *l = ljobs;
		ljobs = l->job_next;
		l->job_queued = false;
		if (l->closed) {
			if (l->started) {
				uv_close((uv_handle_t *)&l->poll, listener_freed);
			} else {
				close(l->fd);
				free(l);
			}
		} else if (!l->started) {
			l->started = true;
			uv_poll_init(xsd.loop, &l->poll, l->fd);
			l->poll.data = l;
			uv_poll_start(&l->poll, UV_READABLE, on_accept);
		}
	}
	while (cjobs) {
		struct xsd_conn *c = cjobs;
		cjobs = c->job_next;
		c->job_queued = false;
		if (c->gone) {
			if (c->wpoll_init) {
				uv_close((uv_handle_t *)&c->wpoll, conn_freed);
			} else {
				close(c->fd);
				pthread_cond_destroy(&c->drained);
				xsd_conn_free(c);
			}
		} else if (c->wpoll_on && !c->closing) {
			if (!c->wpoll_init) {
				uv_poll_init(xsd.loop, &c->wpoll, c->fd);
				/* which made it non-blocking: the thread's recv() blocks */
				fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
				c->wpoll.data = c;
				c->wpoll_init = true;
			}
			uv_poll_start(&c->wpoll, UV_WRITABLE, on_writable);
		}
	}
	pthread_mutex_unlock(&xsd.lock);
}

static void on_accept(uv_poll_t *p, int status, int events)
{
	struct xsd_listener *l = p->data;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, XSD_STACK);
	pthread_mutex_lock(&xsd.lock);
	while (!l->closed) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_warn("xenstored: accept: %s", strerror(errno));
			if (errno != EINTR)
				break;
			continue;
		}
		struct xsd_conn *c = xsd_conn_new(&sock_ops, l->dom ? l->dom->domid : 0, l->dom);
		c->fd = fd;
		pthread_cond_init(&c->drained, NULL);
		pthread_t t;
		int r = pthread_create(&t, &attr, conn_thread, c);
		if (r) {
			log_warn("xenstored: no thread for a connection: %s", strerror(r));
			xsd_conn_drop(c, "no thread");
			c->gone = true;
			queue_conn(c);
		}
	}
	pthread_mutex_unlock(&xsd.lock);
	pthread_attr_destroy(&attr);
}

void xsd_transport_init(void)
{
	uv_async_init(xsd.loop, &xsd.wake, on_jobs);
}

struct xsd_listener *xsd_unix_listen(const char *path, struct xsd_domain *dom)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(a.sun_path)) {
		log_err("xenstored: socket path too long: %s", path);
		return NULL;
	}
	strcpy(a.sun_path, path);
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 128) < 0) {
		log_err("xenstored: cannot listen on %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct xsd_listener *l = util_calloc(1, sizeof(*l));
	l->fd = fd;
	l->dom = dom;
	queue_listener(l);
	return l;
}

/* Stop accepting; connections already made are the caller's business. */
void xsd_listener_close(struct xsd_listener *l)
{
	if (!l)
		return;
	l->closed = true;
	l->dom = NULL;
	queue_listener(l);
}
