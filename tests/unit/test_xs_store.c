/* test_xs_store.c — unit tests of the xenstore node tree (src/xs/store.c).
 *
 * Semantics as Xen 4.17's C xenstored.  test_memory and test_speed print
 * bytes/node and per-operation costs; CXAPI_XS_BENCH=1 makes them run longer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "xs/store.h"

/* ---- helpers ----------------------------------------------------------- */

struct rec {
	char paths[64][128];
	bool rec[64];
	int n;
};

static void on_change(void *opaque, const char *path, bool recursive)
{
	struct rec *r = opaque;
	if (r->n < 64) {
		snprintf(r->paths[r->n], sizeof(r->paths[0]), "%s", path);
		r->rec[r->n] = recursive;
	}
	r->n++;
}

static struct rec R;

static struct xs_store *mk(const struct xs_quota *q)
{
	memset(&R, 0, sizeof(R));
	struct xs_store *s = xs_store_new(q, on_change, &R);
	assert_non_null(s);
	return s;
}

static int rd(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path, char *out,
	      size_t cap)
{
	struct buf b;
	buf_init(&b);
	int r = xs_read(s, t, dom, path, &b);
	if (r == 0) {
		size_t n = b.len < cap - 1 ? b.len : cap - 1;
		memcpy(out, b.p, n);
		out[n] = 0;
	}
	buf_free(&b);
	return r;
}

static void assert_val(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		       const char *want)
{
	char v[256];
	assert_int_equal(rd(s, t, dom, path, v, sizeof(v)), 0);
	assert_string_equal(v, want);
}

static int wr(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
	      const char *val)
{
	return xs_write(s, t, dom, path, val, strlen(val));
}

/* the directory as "a,b,c" */
static int dir(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path, char *out,
	       size_t cap)
{
	struct buf b;
	buf_init(&b);
	int r = xs_directory(s, t, dom, path, &b);
	out[0] = 0;
	if (r == 0) {
		size_t o = 0;
		for (size_t i = 0; i < b.len && o + 1 < cap; i++)
			out[o++] = b.p[i] ? b.p[i] : ',';
		if (o && out[o - 1] == ',')
			o--;
		out[o] = 0;
	}
	buf_free(&b);
	return r;
}

static void assert_dir(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		       const char *want)
{
	char v[1024];
	assert_int_equal(dir(s, t, dom, path, v, sizeof(v)), 0);
	assert_string_equal(v, want);
}

static int setp(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		const char *spec)
{
	/* spec: "b1,r2,n3": letter + domid per entry, as xenstore-chmod */
	struct xs_perm p[16];
	int n = 0;
	const char *c = spec;
	while (*c && n < 16) {
		uint8_t bits = *c == 'r' ? XS_PERM_READ : *c == 'w' ? XS_PERM_WRITE
			     : *c == 'b' ? XS_PERM_BOTH : XS_PERM_NONE;
		char *end;
		p[n].domid = (uint32_t)strtoul(c + 1, &end, 10);
		p[n].perm = bits;
		n++;
		c = *end == ',' ? end + 1 : end;
	}
	return xs_set_perms(s, t, dom, path, p, n);
}

/* perms as "n1,r2" */
static void assert_perms(struct xs_store *s, const char *path, const char *want)
{
	struct xs_perm *p;
	int n;
	assert_int_equal(xs_get_perms(s, NULL, 0, path, &p, &n), 0);
	char out[256];
	size_t o = 0;
	for (int i = 0; i < n; i++)
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%c%u", i ? "," : "",
				      "nrwb"[p[i].perm], p[i].domid);
	free(p);
	assert_string_equal(out, want);
}

/* ---- basic operations -------------------------------------------------- */

static void test_initial(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	assert_dir(s, NULL, 0, "/", "tool");
	assert_dir(s, NULL, 0, "/tool", "xenstored");
	assert_perms(s, "/", "n0");
	assert_perms(s, "/tool/xenstored", "n0");
	assert_int_equal(xs_store_nodes(s), 3);
	assert_int_equal(xs_store_dom_nodes(s, 0), 3);
	assert_val(s, NULL, 0, "/", "");
	xs_store_free(s);
}

static void test_read_write(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	assert_int_equal(wr(s, NULL, 0, "/a/b/c", "hello"), 0);
	assert_val(s, NULL, 0, "/a/b/c", "hello");
	assert_val(s, NULL, 0, "/a/b", "");
	assert_val(s, NULL, 0, "/a", "");
	assert_int_equal(R.n, 1); /* one report, for the node written */
	assert_string_equal(R.paths[0], "/a/b/c");
	assert_false(R.rec[0]);
	assert_int_equal(wr(s, NULL, 0, "/a/b/c", "again, longer than before........."), 0);
	assert_val(s, NULL, 0, "/a/b/c", "again, longer than before.........");
	assert_int_equal(wr(s, NULL, 0, "/a/b/c", ""), 0);
	assert_val(s, NULL, 0, "/a/b/c", "");
	/* binary value */
	const char bin[] = { 'x', 0, 'y', 0, 0, (char)0xff };
	assert_int_equal(xs_write(s, NULL, 0, "/bin", bin, sizeof(bin)), 0);
	struct buf b;
	buf_init(&b);
	assert_int_equal(xs_read(s, NULL, 0, "/bin", &b), 0);
	assert_int_equal(b.len, sizeof(bin));
	assert_memory_equal(b.p, bin, sizeof(bin));
	buf_free(&b);
	/* errors */
	char v[16];
	assert_int_equal(rd(s, NULL, 0, "/nope", v, sizeof(v)), -ENOENT);
	assert_int_equal(rd(s, NULL, 0, "/a/nope/deeper", v, sizeof(v)), -ENOENT);
	assert_int_equal(rd(s, NULL, 0, "a", v, sizeof(v)), -EINVAL);
	assert_int_equal(rd(s, NULL, 0, "/a/", v, sizeof(v)), -EINVAL);
	assert_int_equal(rd(s, NULL, 0, "/a//b", v, sizeof(v)), -EINVAL);
	assert_int_equal(rd(s, NULL, 0, "/a b", v, sizeof(v)), -EINVAL);
	assert_int_equal(wr(s, NULL, 0, "/a/b.c", "x"), -EINVAL);
	assert_int_equal(wr(s, NULL, 0, "/ok-_@/x9", "x"), 0);
	xs_store_free(s);
}

static void test_mkdir_rm_directory(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	assert_int_equal(xs_mkdir(s, NULL, 0, "/d"), 0);
	assert_int_equal(R.n, 1);
	assert_int_equal(wr(s, NULL, 0, "/d", "v"), 0);
	assert_int_equal(xs_mkdir(s, NULL, 0, "/d"), 0); /* existing: fine, value kept */
	assert_int_equal(R.n, 2);                        /* and nothing reported */
	assert_val(s, NULL, 0, "/d", "v");
	/* insertion order, removal keeps order */
	const char *names[] = { "zeta", "alpha", "m", "b2", "b1" };
	for (int i = 0; i < 5; i++) {
		char p[64];
		snprintf(p, sizeof(p), "/d/%s", names[i]);
		assert_int_equal(wr(s, NULL, 0, p, "x"), 0);
	}
	assert_dir(s, NULL, 0, "/d", "zeta,alpha,m,b2,b1");
	assert_int_equal(wr(s, NULL, 0, "/d/m/sub/deep", "1"), 0);
	R.n = 0;
	assert_int_equal(xs_rm(s, NULL, 0, "/d/m"), 0);
	assert_int_equal(R.n, 1);
	assert_string_equal(R.paths[0], "/d/m");
	assert_true(R.rec[0]);
	assert_dir(s, NULL, 0, "/d", "zeta,alpha,b2,b1");
	char v[16];
	assert_int_equal(rd(s, NULL, 0, "/d/m/sub/deep", v, sizeof(v)), -ENOENT);
	assert_int_equal(wr(s, NULL, 0, "/d/m", "back"), 0);
	assert_dir(s, NULL, 0, "/d", "zeta,alpha,b2,b1,m");
	assert_dir(s, NULL, 0, "/d/m", "");
	/* rm of a missing node: parent exists → 0; parent missing → ENOENT */
	R.n = 0;
	assert_int_equal(xs_rm(s, NULL, 0, "/d/none"), 0);
	assert_int_equal(xs_rm(s, NULL, 0, "/d/none/x"), -ENOENT);
	assert_int_equal(R.n, 0);
	assert_int_equal(xs_rm(s, NULL, 0, "/"), -EINVAL);
	assert_int_equal(xs_store_nodes(s), 3 + 1 + 5);
	assert_int_equal(xs_rm(s, NULL, 0, "/d"), 0);
	assert_int_equal(xs_store_nodes(s), 3);
	assert_dir(s, NULL, 0, "/", "tool");
	assert_int_equal(dir(s, NULL, 0, "/d", v, sizeof(v)), -ENOENT);
	/* generations move with value and children */
	assert_int_equal(wr(s, NULL, 0, "/g", ""), 0);
	uint64_t g1 = xs_node_gen(s, NULL, "/g");
	assert_true(g1 > 0);
	assert_int_equal(wr(s, NULL, 0, "/g/kid", ""), 0);
	uint64_t g2 = xs_node_gen(s, NULL, "/g");
	assert_true(g2 > g1);
	assert_int_equal(xs_node_gen(s, NULL, "/none"), 0);
	xs_store_free(s);
}

static void test_big_directory(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	char p[64];
	for (int i = 0; i < 1000; i++) {
		snprintf(p, sizeof(p), "/big/%d", i);
		assert_int_equal(wr(s, NULL, 0, p, "v"), 0);
	}
	struct buf a, b;
	buf_init(&a);
	buf_init(&b);
	assert_int_equal(xs_directory(s, NULL, 0, "/big", &a), 0);
	assert_int_equal(xs_directory(s, NULL, 0, "/big", &b), 0); /* cached */
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.p, b.p, a.len);
	assert_string_equal(a.p, "0");
	/* the cache follows changes */
	assert_int_equal(xs_rm(s, NULL, 0, "/big/0"), 0);
	assert_int_equal(wr(s, NULL, 0, "/big/new", ""), 0);
	b.len = 0;
	assert_int_equal(xs_directory(s, NULL, 0, "/big", &b), 0);
	assert_string_equal(b.p, "1");
	assert_int_equal(b.len, a.len - 2 + 4);
	assert_string_equal(b.p + b.len - 4, "new");
	/* a child removed from the middle, one added: the cached listing is
	 * updated in place, in the children's order */
	assert_int_equal(xs_rm(s, NULL, 0, "/big/500"), 0);
	assert_int_equal(wr(s, NULL, 0, "/big/newer", ""), 0);
	b.len = 0;
	assert_int_equal(xs_directory(s, NULL, 0, "/big", &b), 0);
	struct buf want;
	buf_init(&want);
	for (int i = 1; i < 1000; i++)
		if (i != 500)
			buf_printf(&want, "%d%c", i, 0);
	buf_add(&want, "new\0newer", 10);
	assert_int_equal(b.len, want.len);
	assert_memory_equal(b.p, want.p, want.len);
	/* a transaction that removed children lists the rest, and its own new
	 * ones at the end; others see the main listing until it commits */
	struct xs_txn *t;
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(xs_rm(s, t, 0, "/big/7"), 0);
	assert_int_equal(xs_rm(s, t, 0, "/big/999"), 0);
	assert_int_equal(wr(s, t, 0, "/big/mine", ""), 0);
	struct buf tb;
	buf_init(&tb);
	assert_int_equal(xs_directory(s, t, 0, "/big", &tb), 0);
	assert_int_equal(tb.len, want.len - 2 - 4 + 5);
	assert_null(memmem(tb.p, tb.len, "\0" "7\0", 3));
	assert_null(memmem(tb.p, tb.len, "999\0", 4));
	assert_string_equal(tb.p + tb.len - 5, "mine");
	b.len = 0;
	assert_int_equal(xs_directory(s, NULL, 0, "/big", &b), 0);
	assert_int_equal(b.len, want.len);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	b.len = 0;
	assert_int_equal(xs_directory(s, NULL, 0, "/big", &b), 0);
	assert_int_equal(b.len, tb.len);
	assert_memory_equal(b.p, tb.p, tb.len);
	/* removals at the end, the start and in the middle of a directory
	 * whose siblings' predecessors are mapped (built by the walk to 500) */
	assert_int_equal(xs_rm(s, NULL, 0, "/big/mine"), 0);
	assert_int_equal(xs_rm(s, NULL, 0, "/big/newer"), 0);
	assert_int_equal(xs_rm(s, NULL, 0, "/big/1"), 0);
	assert_int_equal(xs_rm(s, NULL, 0, "/big/600"), 0);
	assert_int_equal(wr(s, NULL, 0, "/big/last", ""), 0);
	assert_int_equal(xs_rm(s, NULL, 0, "/big/new"), 0);
	want.len = 0;
	for (int i = 2; i < 999; i++)
		if (i != 7 && i != 500 && i != 600)
			buf_printf(&want, "%d%c", i, 0);
	buf_add(&want, "last", 5);
	for (int k = 0; k < 2; k++) { /* cached, then walked */
		b.len = 0;
		assert_int_equal(xs_directory(s, NULL, 0, "/big", &b), 0);
		assert_int_equal(b.len, want.len);
		assert_memory_equal(b.p, want.p, want.len);
		assert_int_equal(wr(s, NULL, 0, "/other", ""), 0); /* (no effect) */
	}
	for (int i = 2; i < 999; i++) { /* all of it, newest first */
		snprintf(p, sizeof(p), "/big/%d", 998 - (i - 2));
		assert_int_equal(xs_rm(s, NULL, 0, p), 0);
	}
	assert_int_equal(xs_rm(s, NULL, 0, "/big/last"), 0);
	assert_dir(s, NULL, 0, "/big", "");
	assert_int_equal(wr(s, NULL, 0, "/big/again", ""), 0);
	assert_dir(s, NULL, 0, "/big", "again");
	buf_free(&tb);
	buf_free(&want);
	buf_free(&a);
	buf_free(&b);
	xs_store_free(s);
}

/* ---- permissions ------------------------------------------------------- */

static void test_perms(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	char v[64];
	/* toolstack sets up domain 1's home */
	assert_int_equal(wr(s, NULL, 0, "/local/domain/1", ""), 0);
	assert_perms(s, "/local", "n0");
	assert_int_equal(setp(s, NULL, 0, "/local/domain/1", "n1,r2"), 0);
	assert_perms(s, "/local/domain/1", "n1,r2");
	/* dom1 owns it: full rights */
	assert_int_equal(wr(s, NULL, 1, "/local/domain/1/a/b", "x"), 0);
	assert_perms(s, "/local/domain/1/a", "n1,r2");
	assert_perms(s, "/local/domain/1/a/b", "n1,r2");
	assert_int_equal(xs_store_dom_nodes(s, 1), 3);
	/* dom2 may read, not write; dom3 nothing */
	assert_val(s, NULL, 2, "/local/domain/1/a/b", "x");
	assert_int_equal(wr(s, NULL, 2, "/local/domain/1/a/b", "y"), -EACCES);
	assert_int_equal(wr(s, NULL, 2, "/local/domain/1/a/new", "y"), -EACCES);
	assert_int_equal(rd(s, NULL, 3, "/local/domain/1/a/b", v, sizeof(v)), -EACCES);
	/* a missing node: ENOENT only to who may read the nearest ancestor */
	assert_int_equal(rd(s, NULL, 2, "/local/domain/1/zz", v, sizeof(v)), -ENOENT);
	assert_int_equal(rd(s, NULL, 3, "/local/domain/1/zz", v, sizeof(v)), -EACCES);
	assert_int_equal(xs_rm(s, NULL, 3, "/local/domain/1/zz"), -EACCES);
	assert_int_equal(xs_rm(s, NULL, 2, "/local/domain/1/a"), -EACCES);
	/* dom1 can't touch / or /local */
	assert_int_equal(wr(s, NULL, 1, "/x", "y"), -EACCES);
	assert_int_equal(rd(s, NULL, 1, "/local", v, sizeof(v)), -EACCES);
	assert_int_equal(xs_rm(s, NULL, 1, "/"), -EACCES);
	/* set_perms: only owner (or privileged); owner change: privileged only */
	assert_int_equal(setp(s, NULL, 2, "/local/domain/1/a", "n2"), -EACCES);
	assert_int_equal(setp(s, NULL, 1, "/local/domain/1/a", "n2"), -EPERM);
	assert_int_equal(setp(s, NULL, 1, "/local/domain/1/a", "n1,b3"), 0);
	assert_val(s, NULL, 3, "/local/domain/1/a", "");
	assert_int_equal(wr(s, NULL, 3, "/local/domain/1/a/c", "by3"), 0);
	/* the new node: parent's list with the unprivileged writer as owner */
	assert_perms(s, "/local/domain/1/a/c", "n3,b3");
	assert_int_equal(xs_store_dom_nodes(s, 3), 1);
	/* dom0 writing below keeps the parent's list */
	assert_int_equal(wr(s, NULL, 0, "/local/domain/1/a/d", ""), 0);
	assert_perms(s, "/local/domain/1/a/d", "n1,b3");
	assert_int_equal(setp(s, NULL, 0, "/local/domain/1/a/d", "r5"), 0);
	assert_perms(s, "/local/domain/1/a/d", "r5");
	assert_int_equal(xs_store_dom_nodes(s, 5), 1);
	assert_val(s, NULL, 4, "/local/domain/1/a/d", ""); /* default 'r' for others */
	assert_int_equal(wr(s, NULL, 4, "/local/domain/1/a/d", ""), -EACCES);
	/* rm needs write on the node only, not its children */
	assert_int_equal(setp(s, NULL, 0, "/local/domain/1/a/d", "n0"), 0);
	assert_int_equal(xs_rm(s, NULL, 1, "/local/domain/1/a"), 0);
	assert_int_equal(xs_store_dom_nodes(s, 3), 0);
	/* bad perms */
	assert_int_equal(xs_set_perms(s, NULL, 0, "/local", NULL, 0), -EINVAL);
	struct xs_perm bad = { .domid = 0, .perm = 9 };
	assert_int_equal(xs_set_perms(s, NULL, 0, "/local", &bad, 1), -EINVAL);
	assert_int_equal(setp(s, NULL, 0, "/nope", "n0"), -ENOENT);
	assert_true(xs_can(s, 2, "/local/domain/1", XS_PERM_READ));
	assert_false(xs_can(s, 3, "/local/domain/1", XS_PERM_READ));
	assert_false(xs_can(s, 2, "/local/domain/1", XS_PERM_WRITE));
	assert_true(xs_can(s, 0, "/local/domain/1", XS_PERM_WRITE));
	xs_store_free(s);
}

static void test_target_priv(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	char v[64];
	assert_int_equal(wr(s, NULL, 0, "/local/domain/7/dm", "x"), 0);
	assert_int_equal(setp(s, NULL, 0, "/local/domain/7", "n7"), 0);
	assert_int_equal(setp(s, NULL, 0, "/local/domain/7/dm", "n7"), 0);
	assert_int_equal(wr(s, NULL, 0, "/vm/7", "x"), 0);
	assert_int_equal(setp(s, NULL, 0, "/vm/7", "n0,r7"), 0);
	assert_int_equal(rd(s, NULL, 8, "/local/domain/7/dm", v, sizeof(v)), -EACCES);
	assert_false(xs_store_is_priv(s, 8));
	assert_int_equal(xs_store_set_target(s, 8, 7), 0);
	assert_false(xs_store_is_priv(s, 8));
	/* 8 acts as owner of 7's nodes and with 7's rights elsewhere */
	assert_val(s, NULL, 8, "/local/domain/7/dm", "x");
	assert_int_equal(wr(s, NULL, 8, "/local/domain/7/dm", "y"), 0);
	assert_int_equal(setp(s, NULL, 8, "/local/domain/7/dm", "n7,r8"), 0);
	assert_val(s, NULL, 8, "/vm/7", "x");
	assert_int_equal(wr(s, NULL, 8, "/vm/7", "z"), -EACCES);
	assert_int_equal(rd(s, NULL, 8, "/", v, sizeof(v)), -EACCES);
	xs_store_domain_gone(s, 8);
	assert_int_equal(wr(s, NULL, 8, "/local/domain/7/dm", "w"), -EACCES);
	/* -p: a privileged domain */
	assert_int_equal(rd(s, NULL, 9, "/", v, sizeof(v)), -EACCES);
	xs_store_set_priv_domid(s, 9);
	assert_true(xs_store_is_priv(s, 9));
	assert_int_equal(rd(s, NULL, 9, "/", v, sizeof(v)), 0);
	xs_store_free(s);
}

static void test_orphans(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	assert_int_equal(wr(s, NULL, 0, "/local/domain/4", ""), 0);
	assert_int_equal(setp(s, NULL, 0, "/local/domain/4", "n4"), 0);
	assert_int_equal(wr(s, NULL, 4, "/local/domain/4/a/b", "1"), 0);
	assert_int_equal(wr(s, NULL, 0, "/other", ""), 0);
	assert_int_equal(setp(s, NULL, 0, "/other", "n0,b4"), 0);
	assert_int_equal(wr(s, NULL, 4, "/other/mine", "1"), 0);
	assert_int_equal(wr(s, NULL, 0, "/other/not", "1"), 0);
	assert_int_equal(xs_store_dom_nodes(s, 4), 4);
	R.n = 0;
	assert_int_equal(xs_store_domain_orphans(s, 4, false), 0);
	assert_int_equal(xs_store_dom_nodes(s, 4), 0);
	assert_int_equal(R.n, 2);
	assert_string_equal(R.paths[0], "/local/domain/4");
	assert_string_equal(R.paths[1], "/other/mine");
	assert_dir(s, NULL, 0, "/other", "not");
	assert_dir(s, NULL, 0, "/local/domain", "");
	/* keep: given to dom0 */
	assert_int_equal(wr(s, NULL, 0, "/local/domain/5", ""), 0);
	assert_int_equal(setp(s, NULL, 0, "/local/domain/5", "n5,r6"), 0);
	assert_int_equal(xs_store_domain_orphans(s, 5, true), 0);
	assert_perms(s, "/local/domain/5", "n0,r6");
	xs_store_free(s);
}

/* ---- quotas ------------------------------------------------------------ */

static void test_quotas(void **st)
{
	(void)st;
	struct xs_quota q = { .max_nodes = 5, .max_node_size = 200, .max_path = 40,
			      .max_transactions = 2, .max_perms = 3, .max_txn_nodes = 20 };
	struct xs_store *s = mk(&q);
	assert_int_equal(wr(s, NULL, 0, "/local/domain/1", ""), 0);
	assert_int_equal(setp(s, NULL, 0, "/local/domain/1", "n1"), 0);
	assert_int_equal(xs_store_dom_nodes(s, 1), 1);
	/* nodes: owned + new > max fails, all or nothing */
	assert_int_equal(wr(s, NULL, 1, "/local/domain/1/a/b/c/d/e", "x"), -ENOSPC);
	assert_int_equal(xs_store_dom_nodes(s, 1), 1);
	assert_int_equal(wr(s, NULL, 1, "/local/domain/1/a/b/c/d", "x"), 0);
	assert_int_equal(xs_store_dom_nodes(s, 1), 5);
	assert_int_equal(wr(s, NULL, 1, "/local/domain/1/z", "x"), -ENOSPC);
	assert_int_equal(wr(s, NULL, 1, "/local/domain/1/a", "overwrite is fine"), 0);
	assert_int_equal(wr(s, NULL, 0, "/local/domain/1/z", "dom0 exempt"), 0);
	assert_int_equal(xs_store_dom_nodes(s, 1), 6);
	assert_int_equal(xs_rm(s, NULL, 1, "/local/domain/1/a"), 0);
	assert_int_equal(xs_store_dom_nodes(s, 1), 2);
	/* node size: 24 + 8 * perms + value + children < 200 */
	char big[200];
	memset(big, 'v', sizeof(big));
	assert_int_equal(xs_write(s, NULL, 1, "/local/domain/1/z", big, 200 - 24 - 8 - 1), 0);
	assert_int_equal(xs_write(s, NULL, 1, "/local/domain/1/z", big, 200 - 24 - 8), -ENOSPC);
	assert_int_equal(xs_write(s, NULL, 0, "/local/domain/1/z", big, 200), 0);
	/* the child list counts too: a new child of a full node */
	assert_int_equal(xs_write(s, NULL, 1, "/local/domain/1/z", big, 200 - 24 - 8 - 2), 0);
	assert_int_equal(wr(s, NULL, 1, "/local/domain/1/z/k", ""), -ENOSPC);
	assert_int_equal(wr(s, NULL, 1, "/local/domain/1/z", ""), 0);
	/* perms per node */
	assert_int_equal(setp(s, NULL, 1, "/local/domain/1/z", "n1,r2,r3,r4"), -ENOSPC);
	assert_int_equal(setp(s, NULL, 1, "/local/domain/1/z", "n1,r2,r3"), 0);
	assert_int_equal(setp(s, NULL, 0, "/local/domain/1/z", "n1,r2,r3,r4"), 0);
	/* path length past /local/domain/<id>/ */
	char p[128];
	snprintf(p, sizeof(p), "/local/domain/1/%040d", 0);
	assert_int_equal(wr(s, NULL, 1, p, ""), 0);
	snprintf(p, sizeof(p), "/local/domain/1/%041d", 0);
	assert_int_equal(wr(s, NULL, 1, p, ""), -EINVAL);
	snprintf(p, sizeof(p), "/%041d", 0);
	assert_int_equal(wr(s, NULL, 0, p, ""), -EINVAL);
	/* transactions: as 4.17, quota + 1 open at once */
	struct xs_txn *t[4];
	assert_int_equal(xs_txn_start(s, 1, &t[0]), 0);
	assert_int_equal(xs_txn_start(s, 1, &t[1]), 0);
	assert_int_equal(xs_txn_start(s, 1, &t[2]), 0);
	assert_int_equal(xs_txn_start(s, 1, &t[3]), -ENOSPC);
	assert_int_equal(xs_txn_end(s, t[2], false), 0);
	assert_int_equal(xs_txn_start(s, 1, &t[2]), 0);
	/* nodes per transaction */
	int r = 0;
	for (int i = 0; i < 30 && !r; i++) {
		snprintf(p, sizeof(p), "/local/domain/1/n%d", i);
		char v[8];
		r = rd(s, t[0], 1, p, v, sizeof(v));
		if (r == -ENOENT)
			r = 0;
	}
	assert_int_equal(r, -ENOSPC);
	assert_int_equal(xs_txn_end(s, t[0], true), -ENOMEM); /* failed txn: 4.17 */
	/* node quota at commit: counted with the transaction's creations */
	assert_int_equal(xs_store_dom_nodes(s, 1), 3);
	assert_int_equal(wr(s, t[1], 1, "/local/domain/1/t1", ""), 0);
	assert_int_equal(xs_txn_end(s, t[1], true), 0); /* 4 < 5 */
	assert_int_equal(wr(s, t[2], 1, "/local/domain/1/t2", ""), 0);
	assert_int_equal(xs_txn_end(s, t[2], true), -ENOSPC); /* 5 >= 5 (4.17) */
	assert_int_equal(xs_store_dom_nodes(s, 1), 4);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(xs_txn_start(s, 1, &t[0]), 0);
		assert_int_equal(xs_txn_end(s, t[0], false), 0);
	}
	xs_store_free(s);
}

/* ---- transactions ------------------------------------------------------ */

static void test_txn_basic(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	char v[64];
	assert_int_equal(wr(s, NULL, 0, "/a", "0"), 0);
	R.n = 0;
	struct xs_txn *t;
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_true(xs_txn_id(t) != 0);
	assert_int_equal(xs_txn_dom(t), 0);
	assert_val(s, t, 0, "/a", "0");
	assert_int_equal(wr(s, t, 0, "/a", "1"), 0);
	assert_int_equal(wr(s, t, 0, "/x/y/z", "deep"), 0); /* nested creation */
	/* own writes visible inside, nothing outside */
	assert_val(s, t, 0, "/a", "1");
	assert_val(s, t, 0, "/x/y/z", "deep");
	assert_val(s, t, 0, "/x/y", "");
	assert_dir(s, t, 0, "/", "tool,a,x");
	assert_dir(s, t, 0, "/x", "y");
	assert_val(s, NULL, 0, "/a", "0");
	assert_int_equal(rd(s, NULL, 0, "/x", v, sizeof(v)), -ENOENT);
	assert_dir(s, NULL, 0, "/", "tool,a");
	assert_int_equal(R.n, 0);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	assert_val(s, NULL, 0, "/a", "1");
	assert_val(s, NULL, 0, "/x/y/z", "deep");
	assert_dir(s, NULL, 0, "/", "tool,a,x");
	assert_int_equal(R.n, 2);
	assert_string_equal(R.paths[0], "/a");
	assert_string_equal(R.paths[1], "/x/y/z");
	/* abort: nothing */
	R.n = 0;
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(wr(s, t, 0, "/a", "2"), 0);
	assert_int_equal(wr(s, t, 0, "/new", "2"), 0);
	assert_int_equal(xs_txn_end(s, t, false), 0);
	assert_val(s, NULL, 0, "/a", "1");
	assert_int_equal(rd(s, NULL, 0, "/new", v, sizeof(v)), -ENOENT);
	assert_int_equal(R.n, 0);
	assert_int_equal(xs_store_nodes(s), 3 + 4);
	xs_store_free(s);
}

static void test_txn_conflicts(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	char v[64];
	assert_int_equal(wr(s, NULL, 0, "/a", "0"), 0);
	assert_int_equal(wr(s, NULL, 0, "/b", "0"), 0);
	assert_int_equal(wr(s, NULL, 0, "/d/k1", "0"), 0);
	struct xs_txn *t, *u;

	/* same node written outside → EAGAIN */
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_val(s, t, 0, "/a", "0");
	assert_int_equal(wr(s, t, 0, "/a", "t"), 0);
	assert_int_equal(wr(s, NULL, 0, "/a", "outside"), 0);
	assert_int_equal(xs_txn_end(s, t, true), -EAGAIN);
	assert_val(s, NULL, 0, "/a", "outside");

	/* a blind write to a node changed outside conflicts too (4.17 reads it) */
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(wr(s, t, 0, "/a", "t"), 0);
	assert_int_equal(wr(s, NULL, 0, "/a", "outside2"), 0);
	assert_int_equal(xs_txn_end(s, t, true), -EAGAIN);

	/* unrelated nodes: no conflict, both orders */
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(xs_txn_start(s, 0, &u), 0);
	assert_val(s, t, 0, "/a", "outside2");
	assert_int_equal(wr(s, t, 0, "/a", "t"), 0);
	assert_val(s, u, 0, "/b", "0");
	assert_int_equal(wr(s, u, 0, "/b", "u"), 0);
	assert_int_equal(wr(s, NULL, 0, "/d/k1", "outside"), 0);
	assert_int_equal(xs_txn_end(s, u, true), 0);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	assert_val(s, NULL, 0, "/a", "t");
	assert_val(s, NULL, 0, "/b", "u");

	/* existing siblings written in two transactions: no conflict */
	assert_int_equal(wr(s, NULL, 0, "/d/k2", "0"), 0);
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(xs_txn_start(s, 0, &u), 0);
	assert_int_equal(wr(s, t, 0, "/d/k1", "t"), 0);
	assert_int_equal(wr(s, u, 0, "/d/k2", "u"), 0);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	assert_int_equal(xs_txn_end(s, u, true), 0);

	/* conflict through a directory listing */
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_dir(s, t, 0, "/d", "k1,k2");
	assert_int_equal(wr(s, t, 0, "/summary", "2 keys"), 0);
	assert_int_equal(wr(s, NULL, 0, "/d/k3", "0"), 0);
	assert_int_equal(xs_txn_end(s, t, true), -EAGAIN);
	assert_int_equal(rd(s, NULL, 0, "/summary", v, sizeof(v)), -ENOENT);

	/* a node seen absent, created outside → EAGAIN */
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(rd(s, t, 0, "/maybe", v, sizeof(v)), -ENOENT);
	assert_int_equal(wr(s, t, 0, "/other", "1"), 0);
	assert_int_equal(wr(s, NULL, 0, "/maybe", "now"), 0);
	assert_int_equal(xs_txn_end(s, t, true), -EAGAIN);

	/* removal outside of a node read */
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_val(s, t, 0, "/b", "u");
	assert_int_equal(wr(s, t, 0, "/c", "1"), 0);
	assert_int_equal(xs_rm(s, NULL, 0, "/b"), 0);
	assert_int_equal(xs_txn_end(s, t, true), -EAGAIN);

	/* two transactions creating under the same parent: 4.17 conflicts
	 * (the parent's child list is part of the parent) */
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(xs_txn_start(s, 0, &u), 0);
	assert_int_equal(wr(s, t, 0, "/d/t", "1"), 0);
	assert_int_equal(wr(s, u, 0, "/d/u", "1"), 0);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	assert_int_equal(xs_txn_end(s, u, true), -EAGAIN);

	/* permissions changed outside */
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_val(s, t, 0, "/a", "t");
	assert_int_equal(setp(s, NULL, 0, "/a", "r0"), 0);
	assert_int_equal(xs_txn_end(s, t, true), -EAGAIN);
	xs_store_free(s);
}

static void test_txn_rm(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	char v[64];
	assert_int_equal(wr(s, NULL, 0, "/r/a/x", "1"), 0);
	assert_int_equal(wr(s, NULL, 0, "/r/a/y", "2"), 0);
	assert_int_equal(wr(s, NULL, 0, "/r/b", "3"), 0);
	R.n = 0;
	struct xs_txn *t;
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(xs_rm(s, t, 0, "/r/a"), 0);
	assert_int_equal(rd(s, t, 0, "/r/a/x", v, sizeof(v)), -ENOENT);
	assert_dir(s, t, 0, "/r", "b");
	assert_int_equal(xs_rm(s, t, 0, "/r/a"), 0);        /* missing, parent there */
	assert_int_equal(xs_rm(s, t, 0, "/r/a/x/q"), -ENOENT);
	assert_val(s, NULL, 0, "/r/a/x", "1");              /* outside: untouched */
	/* re-create below the removed node */
	assert_int_equal(wr(s, t, 0, "/r/a/z", "new"), 0);
	assert_dir(s, t, 0, "/r/a", "z");
	assert_dir(s, t, 0, "/r", "b,a");
	assert_int_equal(R.n, 0);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	assert_dir(s, NULL, 0, "/r/a", "z");
	assert_dir(s, NULL, 0, "/r", "b,a"); /* re-created: at the end, as 4.17 */
	assert_int_equal(rd(s, NULL, 0, "/r/a/x", v, sizeof(v)), -ENOENT);
	assert_val(s, NULL, 0, "/r/a/z", "new");
	assert_int_equal(xs_store_nodes(s), 3 + 4);
	/* reports: /r/a once (first change: the rm, recursive — it was removed
	 * then written again: it exists, so not recursive), /r/a/z */
	assert_int_equal(R.n, 2);
	assert_string_equal(R.paths[0], "/r/a");
	assert_string_equal(R.paths[1], "/r/a/z");
	/* rm of a whole subtree: one report, recursive */
	R.n = 0;
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(wr(s, t, 0, "/r/b", "changed first"), 0);
	assert_int_equal(xs_rm(s, t, 0, "/r"), 0);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	assert_int_equal(R.n, 1);
	assert_string_equal(R.paths[0], "/r");
	assert_true(R.rec[0]);
	assert_int_equal(xs_store_nodes(s), 3);
	/* create then remove inside: nothing left */
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	assert_int_equal(wr(s, t, 0, "/tmp/a/b", "1"), 0);
	assert_int_equal(xs_rm(s, t, 0, "/tmp"), 0);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	assert_int_equal(xs_store_nodes(s), 3);
	assert_dir(s, NULL, 0, "/", "tool");
	xs_store_free(s);
}

static void test_txn_order_once(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	assert_int_equal(wr(s, NULL, 0, "/c/x", "0"), 0);
	R.n = 0;
	struct xs_txn *t;
	assert_int_equal(xs_txn_start(s, 0, &t), 0);
	char v[8];
	assert_int_equal(rd(s, t, 0, "/z", v, sizeof(v)), -ENOENT); /* read first, not a change */
	assert_int_equal(wr(s, t, 0, "/b", "1"), 0);
	assert_int_equal(wr(s, t, 0, "/a", "1"), 0);
	assert_int_equal(wr(s, t, 0, "/b", "2"), 0);
	assert_int_equal(xs_rm(s, t, 0, "/c"), 0);
	assert_int_equal(wr(s, t, 0, "/z", "1"), 0);
	assert_int_equal(setp(s, t, 0, "/a", "r0"), 0);
	assert_int_equal(xs_mkdir(s, t, 0, "/m"), 0);
	assert_int_equal(xs_mkdir(s, t, 0, "/m"), 0);
	assert_int_equal(R.n, 0);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	assert_int_equal(R.n, 5);
	assert_string_equal(R.paths[0], "/b");
	assert_string_equal(R.paths[1], "/a");
	assert_string_equal(R.paths[2], "/c");
	assert_true(R.rec[2]);
	assert_string_equal(R.paths[3], "/z");
	assert_string_equal(R.paths[4], "/m");
	assert_false(R.rec[0] || R.rec[1] || R.rec[3] || R.rec[4]);
	assert_perms(s, "/a", "r0");
	assert_val(s, NULL, 0, "/b", "2");
	/* the unprivileged: transaction perms and quotas as outside */
	assert_int_equal(wr(s, NULL, 0, "/local/domain/3", ""), 0);
	assert_int_equal(setp(s, NULL, 0, "/local/domain/3", "n3"), 0);
	assert_int_equal(xs_txn_start(s, 3, &t), 0);
	assert_int_equal(wr(s, t, 3, "/local/domain/3/p/q", "v"), 0);
	assert_int_equal(wr(s, t, 3, "/a", "v"), -EACCES);
	assert_int_equal(rd(s, t, 3, "/b", v, sizeof(v)), -EACCES);
	assert_int_equal(xs_txn_end(s, t, true), 0);
	assert_perms(s, "/local/domain/3/p/q", "n3");
	assert_int_equal(xs_store_dom_nodes(s, 3), 3);
	xs_store_free(s);
}

/* ---- dump / load ------------------------------------------------------- */

static void test_dump_load(void **st)
{
	(void)st;
	struct xs_store *s = mk(NULL);
	const char bin[] = { 0, 1, 2, 0, (char)0xfe, 'z' };
	assert_int_equal(xs_write(s, NULL, 0, "/local/domain/1/bin", bin, sizeof(bin)), 0);
	assert_int_equal(setp(s, NULL, 0, "/local/domain/1", "n1,r2,w3"), 0);
	assert_int_equal(wr(s, NULL, 0, "/order/zz", "1"), 0);
	assert_int_equal(wr(s, NULL, 0, "/order/aa", "2"), 0);
	assert_int_equal(wr(s, NULL, 0, "/order/mm", ""), 0);
	char big[3000];
	memset(big, 'q', sizeof(big));
	assert_int_equal(xs_write(s, NULL, 0, "/big", big, sizeof(big)), 0);
	char file[] = "/tmp/test_xs_storeXXXXXX";
	int fd = mkstemp(file);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(xs_store_dump(s, file), 0);
	uint32_t nodes = xs_store_nodes(s);
	struct xs_store *s2 = mk(NULL);
	assert_int_equal(wr(s2, NULL, 0, "/junk", "gone after load"), 0);
	assert_int_equal(xs_store_load(s2, file), 0);
	assert_int_equal(xs_store_nodes(s2), nodes);
	struct buf b;
	buf_init(&b);
	assert_int_equal(xs_read(s2, NULL, 0, "/local/domain/1/bin", &b), 0);
	assert_int_equal(b.len, sizeof(bin));
	assert_memory_equal(b.p, bin, sizeof(bin));
	b.len = 0;
	assert_int_equal(xs_read(s2, NULL, 0, "/big", &b), 0);
	assert_int_equal(b.len, sizeof(big));
	buf_free(&b);
	assert_perms(s2, "/local/domain/1", "n1,r2,w3");
	assert_perms(s2, "/local/domain/1/bin", "n0");
	assert_dir(s2, NULL, 0, "/order", "zz,aa,mm");
	assert_dir(s2, NULL, 0, "/", "tool,local,order,big");
	assert_int_equal(xs_store_dom_nodes(s2, 1), 1);
	char v[8];
	assert_int_equal(rd(s2, NULL, 0, "/junk", v, sizeof(v)), -ENOENT);
	/* a damaged file keeps the current tree */
	FILE *f = fopen(file, "r+");
	assert_non_null(f);
	assert_int_equal(ftruncate(fileno(f), 40), 0);
	fclose(f);
	assert_int_equal(xs_store_load(s2, file), -EINVAL);
	assert_int_equal(xs_store_nodes(s2), nodes);
	assert_dir(s2, NULL, 0, "/order", "zz,aa,mm");
	assert_int_equal(xs_store_load(s2, "/nonexistent/file"), -ENOENT);
	struct xs_txn *t;
	assert_int_equal(xs_txn_start(s2, 0, &t), 0);
	assert_int_equal(xs_store_load(s2, file), -EBUSY);
	assert_int_equal(xs_txn_end(s2, t, false), 0);
	unlink(file);
	xs_store_free(s);
	xs_store_free(s2);
}

/* random operations in and out of transactions; the structure must stay
 * whole: a dump reloads to the same dump, counts match a recount */
static void rnd_path(unsigned *seed, char *p, size_t cap)
{
	static const char *parts[] = { "a", "b", "c", "dd", "e" };
	int depth = 1 + rand_r(seed) % 4;
	size_t o = 0;
	for (int i = 0; i < depth; i++)
		o += (size_t)snprintf(p + o, cap - o, "/%s", parts[rand_r(seed) % 5]);
}

static bool files_equal(const char *a, const char *b)
{
	FILE *f = fopen(a, "r"), *g = fopen(b, "r");
	bool eq = f && g;
	while (eq) {
		int x = fgetc(f), y = fgetc(g);
		if (x != y)
			eq = false;
		if (x == EOF || y == EOF)
			break;
	}
	if (f)
		fclose(f);
	if (g)
		fclose(g);
	return eq;
}

static void test_random(void **st)
{
	(void)st;
	unsigned seed = 12345;
	struct xs_store *s = mk(NULL);
	struct xs_txn *t[3] = { NULL, NULL, NULL };
	char p[64];
	int commits = 0, conflicts = 0;
	for (int i = 0; i < 50000; i++) {
		int k = rand_r(&seed) % 4; /* 3 = outside any transaction */
		struct xs_txn *tx = k < 3 ? t[k] : NULL;
		if (k < 3 && !tx) {
			assert_int_equal(xs_txn_start(s, 0, &t[k]), 0);
			tx = t[k];
		}
		rnd_path(&seed, p, sizeof(p));
		uint32_t dom = rand_r(&seed) % 3;
		struct buf b;
		buf_init(&b);
		switch (rand_r(&seed) % 8) {
		case 0: case 1: case 2:
			xs_write(s, tx, dom, p, p, strlen(p) % 7);
			break;
		case 3:
			xs_rm(s, tx, dom, p);
			break;
		case 4:
			xs_mkdir(s, tx, dom, p);
			break;
		case 5: {
			struct xs_perm pr[2] = { { .domid = dom, .perm = rand_r(&seed) % 4 },
						 { .domid = 2, .perm = XS_PERM_READ } };
			xs_set_perms(s, tx, 0, p, pr, 1 + rand_r(&seed) % 2);
			break;
		}
		case 6:
			xs_directory(s, tx, dom, p, &b);
			break;
		case 7:
			xs_read(s, tx, dom, p, &b);
			break;
		}
		buf_free(&b);
		if (k < 3 && rand_r(&seed) % 10 == 0) {
			int r = xs_txn_end(s, tx, rand_r(&seed) % 4 != 0);
			assert_true(r == 0 || r == -EAGAIN);
			commits += r == 0;
			conflicts += r == -EAGAIN;
			t[k] = NULL;
		}
	}
	for (int k = 0; k < 3; k++)
		if (t[k])
			xs_txn_end(s, t[k], true);
	char f1[] = "/tmp/test_xs_rnd1XXXXXX", f2[] = "/tmp/test_xs_rnd2XXXXXX";
	close(mkstemp(f1));
	close(mkstemp(f2));
	assert_int_equal(xs_store_dump(s, f1), 0);
	struct xs_store *s2 = mk(NULL);
	assert_int_equal(xs_store_load(s2, f1), 0);
	assert_int_equal(xs_store_dump(s2, f2), 0);
	assert_true(files_equal(f1, f2));
	assert_int_equal(xs_store_nodes(s), xs_store_nodes(s2));
	for (uint32_t d = 0; d < 3; d++)
		assert_int_equal(xs_store_dom_nodes(s, d), xs_store_dom_nodes(s2, d));
	printf("# random: %u nodes, %d commits, %d conflicts\n", xs_store_nodes(s), commits,
	       conflicts);
	unlink(f1);
	unlink(f2);
	xs_store_free(s);
	xs_store_free(s2);
}

/* ---- memory and speed -------------------------------------------------- */

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, res = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void test_memory(void **st)
{
	(void)st;
	struct xs_store *s = xs_store_new(NULL, NULL, NULL);
	assert_int_equal(wr(s, NULL, 0, "/bench/load", ""), 0);
	long before = rss_kb();
	char p[64], v[16];
	double t0 = now();
	for (int i = 0; i < 100000; i++) {
		snprintf(p, sizeof(p), "/bench/load/%d/%d", i / 1000, i % 1000);
		int n = snprintf(v, sizeof(v), "value-%d", i); /* as xsbench */
		assert_int_equal(xs_write(s, NULL, 0, p, v, (size_t)n), 0);
	}
	double dt = now() - t0;
	long after = rss_kb();
	double per = (double)(after - before) * 1024.0 / 100100.0;
	printf("# memory: 100k nodes (+100 dirs): RSS %ld kB -> %ld kB = %.1f B/node; "
	       "create %.2f us/node\n", before, after, per, dt * 1e6 / 100000);
	assert_true(per <= 60.0);
	xs_store_free(s);
}

static void test_speed(void **st)
{
	(void)st;
	int rep = getenv("CXAPI_XS_BENCH") ? 2000000 : 200000;
	struct xs_store *s = xs_store_new(NULL, NULL, NULL);
	char p[64];
	for (int i = 0; i < 1000; i++) {
		snprintf(p, sizeof(p), "/local/domain/1/dir1000/%d", i);
		assert_int_equal(wr(s, NULL, 0, p, "v"), 0);
	}
	assert_int_equal(wr(s, NULL, 0, "/local/domain/1/key", "some value 16 by"), 0);
	struct buf b;
	buf_init(&b);
	double t0 = now();
	for (int i = 0; i < rep; i++) {
		b.len = 0;
		xs_read(s, NULL, 1, "/local/domain/1/key", &b);
	}
	double rd_us = (now() - t0) * 1e6 / rep;
	t0 = now();
	for (int i = 0; i < rep; i++)
		xs_write(s, NULL, 1, "/local/domain/1/key", "some value 16 by", 16);
	double wr_us = (now() - t0) * 1e6 / rep;
	t0 = now();
	for (int i = 0; i < rep / 10; i++) {
		b.len = 0;
		xs_directory(s, NULL, 1, "/local/domain/1/dir1000", &b);
	}
	double dir_us = (now() - t0) * 1e6 / (rep / 10);
	t0 = now();
	for (int i = 0; i < rep; i++) {
		struct xs_txn *t;
		xs_txn_start(s, 1, &t);
		xs_write(s, t, 1, "/local/domain/1/key", "some value 16 by", 16);
		xs_txn_end(s, t, true);
	}
	double txn_us = (now() - t0) * 1e6 / rep;
	printf("# per op (store only): read %.3f us, write %.3f us, dir1000 %.3f us, "
	       "txn start+write+commit %.3f us\n", rd_us, wr_us, dir_us, txn_us);
	buf_free(&b);
	xs_store_free(s);
}

/* a VM-creation-sized transaction (100 writes) with 0 and 1000 domains */
static double vm_txn(struct xs_store *s, int dom, int reps)
{
	char p[96];
	double t0 = now();
	for (int r = 0; r < reps; r++) {
		struct xs_txn *t;
		assert_int_equal(xs_txn_start(s, 0, &t), 0);
		for (int i = 0; i < 100; i++) {
			snprintf(p, sizeof(p), "/local/domain/%d/device/vif/%d/k%d", dom, i / 10, i % 10);
			assert_int_equal(xs_write(s, t, 0, p, "value", 5), 0);
		}
		assert_int_equal(xs_txn_end(s, t, true), 0);
		snprintf(p, sizeof(p), "/local/domain/%d", dom);
		assert_int_equal(xs_rm(s, NULL, 0, p), 0);
	}
	return (now() - t0) * 1e6 / reps;
}

static void test_many_domains(void **st)
{
	(void)st;
	int reps = getenv("CXAPI_XS_BENCH") ? 20000 : 2000;
	struct xs_store *s = xs_store_new(NULL, NULL, NULL);
	vm_txn(s, 5000, reps / 10);
	double t0 = vm_txn(s, 5000, reps);
	char p[96];
	for (int d = 1; d <= 1000; d++) {
		snprintf(p, sizeof(p), "/local/domain/%d/name", d);
		assert_int_equal(wr(s, NULL, 0, p, "guest"), 0);
		snprintf(p, sizeof(p), "/local/domain/%d", d);
		struct xs_perm perm[2] = { { .domid = (uint32_t)d, .perm = XS_PERM_NONE },
					   { .domid = 0, .perm = XS_PERM_READ } };
		assert_int_equal(xs_set_perms(s, NULL, 0, p, perm, 2), 0);
		snprintf(p, sizeof(p), "/local/domain/%d/device/vbd/768/state", d);
		assert_int_equal(wr(s, NULL, (uint32_t)d, p, "4"), 0);
	}
	double t1 = vm_txn(s, 5000, reps);
	printf("# 100-write transaction: %.1f us with no domains, %.1f us with 1000 (x%.2f)\n",
	       t0, t1, t1 / t0);
	assert_true(t1 / t0 < 1.5); /* the target is 1.2 for the whole daemon */
	xs_store_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_initial),
		cmocka_unit_test(test_read_write),
		cmocka_unit_test(test_mkdir_rm_directory),
		cmocka_unit_test(test_big_directory),
		cmocka_unit_test(test_perms),
		cmocka_unit_test(test_target_priv),
		cmocka_unit_test(test_orphans),
		cmocka_unit_test(test_quotas),
		cmocka_unit_test(test_txn_basic),
		cmocka_unit_test(test_txn_conflicts),
		cmocka_unit_test(test_txn_rm),
		cmocka_unit_test(test_txn_order_once),
		cmocka_unit_test(test_dump_load),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_memory),
		cmocka_unit_test(test_speed),
		cmocka_unit_test(test_many_domains),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
