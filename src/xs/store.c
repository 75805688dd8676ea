/* store.c — the xenstore node tree (see store.h and docs/xenstored-store.md).
 *
 * Layout, chosen for memory (≤ 60 B/node) and speed (sub-µs operations):
 *  - nodes are 36-byte records in one mmap'd array grown with mremap and
 *    addressed by 32-bit indices (0 = none, 1 = "/");
 *  - a node's name and value live together in one "blob" of a second mmap'd
 *    heap, addressed in 8-byte units, with per-size-class free lists: no
 *    malloc header per node;
 *  - children form an insertion-ordered doubly linked list (xenstored
 *    appends a new child at the end of its parent's list);
 *  - lookup of a child by name is one chained hash over (parent, name) whose
 *    chain link lives in the node;
 *  - permission lists are interned and refcounted: nodes hold a 24-bit id;
 *  - a directory listed while it has many children keeps its serialized
 *    child list in a small cache until a child is added or removed.
 *
 * Transactions keep, per path touched, an entry with the node's generation at
 * first access and the transaction's own version of it (value, permissions,
 * existence, children created in it); commit compares the generations (the
 * only check: unrelated paths never conflict) and applies the entries.
 *
 * Semantics follow Xen 4.17's C xenstored (xenstored_core.c,
 * xenstored_transaction.c, xenstored_domain.c); the code is ours.
 */
#include "xs/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/arena.h"
#include "base/util.h"

/* ---- growable mmap'd regions ------------------------------------------ */

/* One anonymous mapping grown with mremap: no copy, and untouched capacity
 * costs no resident memory (glibc's realloc of a big block may copy through
 * the heap and keep the old block resident). */
struct region {
	char *p;
	size_t cap;
};

static int region_grow(struct region *r, size_t need)
{
	if (need <= r->cap)
		return 0;
	size_t cap = r->cap ? r->cap : 64 * 1024;
	while (cap < need)
		cap *= 2;
	void *p;
	if (!r->p)
		p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	else
		p = mremap(r->p, r->cap, cap, MREMAP_MAYMOVE);
	if (p == MAP_FAILED)
		return -ENOMEM;
	r->p = p;
	r->cap = cap;
	return 0;
}

static void region_free(struct region *r)
{
	if (r->p)
		munmap(r->p, r->cap);
	r->p = NULL;
	r->cap = 0;
}

/* ---- hashing ----------------------------------------------------------- */

static inline uint32_t hash_bytes(uint64_t seed, const char *s, size_t n)
{
	uint64_t h = seed * 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
		s += 8;
		n -= 8;
	}
	uint64_t w = 0;
	memcpy(&w, s, n);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 29;
	h *= 0x9E3779B97F4A7C15ull;
	return (uint32_t)(h >> 32);
}

/* ---- blobs: name + value ----------------------------------------------- */

#define BLOB_UNIT 8u
#define NCLASS 112

static inline size_t varint_len(uint32_t v)
{
	return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
}
static inline unsigned char *varint_put(unsigned char *p, uint32_t v)
{
	while (v >= 0x80) {
		*p++ = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	*p++ = (unsigned char)v;
	return p;
}
static inline const unsigned char *varint_get(const unsigned char *p, uint32_t *v)
{
	uint32_t r = 0;
	unsigned sh = 0;
	while (*p & 0x80) {
		r |= (uint32_t)(*p++ & 0x7f) << sh;
		sh += 7;
	}
	*v = r | (uint32_t)*p++ << sh;
	return p;
}

/* size class of a blob of u units: exact up to 32 units, then 4 steps per
 * power of two */
static inline unsigned blob_class(uint32_t u, uint32_t *cu)
{
	if (u <= 32) {
		*cu = u;
		return u;
	}
	unsigned b = 31 - (unsigned)__builtin_clz(u - 1); /* 2^b < u <= 2^(b+1) */
	uint32_t step = 1u << (b - 2);
	uint32_t c = (u + step - 1) & ~(step - 1);
	*cu = c;
	return 33 + (b - 5) * 4 + (c / step - 5);
}

/* ---- the store --------------------------------------------------------- */

#define NIL 0u
#define ROOT 1u
#define PID_MASK 0x00ffffffu
#define NF_DIRCACHE 0x80000000u
#define NF_PREVMAP 0x40000000u  /* its children's predecessors are in t.prev */
#define PREV_WALK 64u           /* a longer predecessor walk builds the map */

struct node {
	uint32_t parent;
	uint32_t last;   /* last child; the children form a circular list */
	uint32_t next;   /* next sibling; the last child's next is the first */
	uint32_t hnext;  /* hash chain; free list link when free */
	uint32_t pid;    /* interned permission list | flags; 0 = free slot */
	uint32_t blob;   /* name + value */
	uint32_t gen;    /* low 32 bits of the generation; never 0 */
};

struct pset {
	uint32_t refs;
	uint32_t hash;
	uint32_t hnext;
	uint32_t n;
	struct xs_perm *p;
};

struct dom {
	uint32_t domid;
	uint8_t used;
	uint8_t has_target;
	uint32_t target;
	int32_t nodes;
	uint32_t txns;
};

struct dcache {
	uint32_t idx;
	uint32_t len;
	struct dcache *next;
	char data[];
};

/* the tree proper: swapped as a whole by xs_store_load */
struct tree {
	struct region nodes;  /* struct node[] */
	uint32_t nhw;         /* slots in use or freed (high water) */
	uint32_t nfree;       /* free list head */
	uint32_t count;       /* live nodes */
	uint32_t *bucket;
	uint32_t bmask;
	struct region blobs;
	uint32_t btop;        /* units used */
	uint32_t bfree[NCLASS];
	struct pset *ps;
	uint32_t nps, capps, psfree;
	uint32_t *psbucket;
	uint32_t psbmask;
	uint64_t gen;
	/* child -> previous sibling, for the directories (NF_PREVMAP) a
	 * removal had to walk far in: open addressing, key 0 = empty */
	uint32_t (*prev)[2];
	uint32_t pmask, pn;
};

struct xs_store {
	struct tree t;
	struct xs_quota q;
	xs_change_fn fn;
	void *opaque;
	uint32_t priv_domid;
	struct dom *doms;
	uint32_t dmask, ndoms, ntargets;
	struct dcache **dc;
	uint32_t dcmask;
	size_t dcbytes;
	uint32_t next_txn_id;
	uint32_t open_txns;
	struct xs_txn *txn_pool;
	unsigned npool;
	char *pathbuf;
	size_t pathcap;
};

#define N(s, i) (&((struct node *)(s)->t.nodes.p)[i])
#define BLOB(s, r) ((unsigned char *)(s)->t.blobs.p + (size_t)(r) * BLOB_UNIT)

static inline uint32_t ngen(const struct node *n)
{
	return n->gen;
}
/* A node keeps 32 bits of the 64-bit generation counter (4 bytes a node);
 * equality is all a conflict check needs, and a false match would need
 * 2^32 changes during one transaction.  0 stays "absent". */
static inline void bump_(struct node *n, uint64_t *ctr)
{
	if ((uint32_t)++*ctr == 0)
		++*ctr;
	n->gen = (uint32_t)*ctr;
}
#define bump(s, n) bump_(n, &(s)->t.gen)
static inline uint32_t kid_first(const struct xs_store *s, uint32_t i);
static inline uint32_t kid_next(const struct xs_store *s, uint32_t parent, uint32_t c);

static inline const char *node_name(const struct xs_store *s, uint32_t i, uint32_t *len)
{
	const unsigned char *p = varint_get(BLOB(s, N(s, i)->blob), len);
	return (const char *)p;
}
static inline const char *node_value(const struct xs_store *s, uint32_t i, uint32_t *len)
{
	uint32_t nl;
	const unsigned char *p = varint_get(BLOB(s, N(s, i)->blob), &nl);
	p = varint_get(p + nl, len);
	return (const char *)p;
}

static inline uint32_t kid_first(const struct xs_store *s, uint32_t i)
{
	uint32_t l = N(s, i)->last;
	return l ? N(s, l)->next : NIL;
}
static inline uint32_t kid_next(const struct xs_store *s, uint32_t parent, uint32_t c)
{
	return c == N(s, parent)->last ? NIL : N(s, c)->next;
}

static int blob_alloc(struct xs_store *s, size_t bytes, uint32_t *ref)
{
	uint32_t u = (uint32_t)((bytes + BLOB_UNIT - 1) / BLOB_UNIT), cu;
	if (u == 0)
		u = 1;
	if (bytes > (1u << 26))
		return -E2BIG;
	unsigned c = blob_class(u, &cu);
	if (s->t.bfree[c]) {
		*ref = s->t.bfree[c];
		memcpy(&s->t.bfree[c], BLOB(s, *ref), 4);
		return 0;
	}
	if ((uint64_t)s->t.btop + cu >= 0xfffffff0u)
		return -ENOMEM;
	if (s->t.btop == 0)
		s->t.btop = 1; /* ref 0 = none */
	int r = region_grow(&s->t.blobs, ((size_t)s->t.btop + cu) * BLOB_UNIT);
	if (r)
		return r;
	*ref = s->t.btop;
	s->t.btop += cu;
	return 0;
}

static size_t blob_size(struct xs_store *s, uint32_t ref)
{
	uint32_t nl, vl;
	const unsigned char *b = BLOB(s, ref), *p = varint_get(b, &nl);
	p = varint_get(p + nl, &vl);
	return (size_t)(p - b) + vl;
}

static void blob_free(struct xs_store *s, uint32_t ref)
{
	uint32_t cu, u = (uint32_t)((blob_size(s, ref) + BLOB_UNIT - 1) / BLOB_UNIT);
	if (u == 0)
		u = 1;
	unsigned c = blob_class(u, &cu);
	memcpy(BLOB(s, ref), &s->t.bfree[c], 4);
	s->t.bfree[c] = ref;
}

/* a new blob holding name and val */
static int blob_make(struct xs_store *s, const char *name, uint32_t nl, const void *val,
		     uint32_t vl, uint32_t *ref)
{
	size_t sz = varint_len(nl) + nl + varint_len(vl) + vl;
	int r = blob_alloc(s, sz, ref);
	if (r)
		return r;
	unsigned char *p = varint_put(BLOB(s, *ref), nl);
	memcpy(p, name, nl);
	p = varint_put(p + nl, vl);
	if (vl)
		memcpy(p, val, vl);
	return 0;
}

/* ---- permission sets --------------------------------------------------- */

static uint32_t pset_hash(const struct xs_perm *p, uint32_t n)
{
	uint64_t h = n;
	for (uint32_t i = 0; i < n; i++)
		h = (h ^ ((uint64_t)p[i].domid << 8 | p[i].perm)) * 0x9E3779B97F4A7C15ull;
	return (uint32_t)(h >> 32);
}

static int pset_rehash(struct tree *t, uint32_t nb)
{
	uint32_t *b = calloc(nb, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (uint32_t i = 1; i < t->nps; i++)
		if (t->ps[i].refs) {
			uint32_t h = t->ps[i].hash & (nb - 1);
			t->ps[i].hnext = b[h];
			b[h] = i;
		}
	free(t->psbucket);
	t->psbucket = b;
	t->psbmask = nb - 1;
	return 0;
}

/* the id of the list p[0..n) with one more reference; 0 on failure */
static uint32_t pset_get(struct xs_store *s, const struct xs_perm *p, uint32_t n)
{
	struct tree *t = &s->t;
	uint32_t h = pset_hash(p, n);
	for (uint32_t i = t->psbucket[h & t->psbmask]; i; i = t->ps[i].hnext) {
		struct pset *q = &t->ps[i];
		if (q->hash == h && q->n == n) {
			uint32_t k;
			for (k = 0; k < n; k++)
				if (q->p[k].domid != p[k].domid || q->p[k].perm != p[k].perm)
					break;
			if (k == n) {
				q->refs++;
				return i;
			}
		}
	}
	uint32_t id;
	if (t->psfree) {
		id = t->psfree;
		t->psfree = t->ps[id].hnext;
	} else {
		if (t->nps == t->capps) {
			uint32_t cap = t->capps ? t->capps * 2 : 64;
			if (cap > PID_MASK + 1)
				return 0;
			struct pset *np = realloc(t->ps, cap * sizeof(*np));
			if (!np)
				return 0;
			t->ps = np;
			t->capps = cap;
		}
		id = t->nps++;
	}
	struct pset *q = &t->ps[id];
	q->p = malloc(n * sizeof(*p));
	if (!q->p) {
		q->refs = 0;
		q->hnext = t->psfree;
		t->psfree = id;
		return 0;
	}
	memcpy(q->p, p, n * sizeof(*p));
	for (uint32_t k = 0; k < n; k++) /* padding bytes of struct xs_perm */
		q->p[k] = (struct xs_perm){ .domid = p[k].domid, .perm = p[k].perm };
	q->n = n;
	q->refs = 1;
	q->hash = h;
	q->hnext = t->psbucket[h & t->psbmask];
	t->psbucket[h & t->psbmask] = id;
	if (t->nps > 2 * (t->psbmask + 1))
		pset_rehash(t, 2 * (t->psbmask + 1));
	return id;
}

static inline void pset_ref(struct xs_store *s, uint32_t id)
{
	s->t.ps[id].refs++;
}

static void pset_unref(struct xs_store *s, uint32_t id)
{
	struct tree *t = &s->t;
	struct pset *q = &t->ps[id];
	if (--q->refs)
		return;
	uint32_t *pp = &t->psbucket[q->hash & t->psbmask];
	while (*pp != id)
		pp = &t->ps[*pp].hnext;
	*pp = q->hnext;
	free(q->p);
	q->p = NULL;
	q->hnext = t->psfree;
	t->psfree = id;
}

/* the list with its owner replaced by dom */
static uint32_t pset_with_owner(struct xs_store *s, uint32_t id, uint32_t dom)
{
	struct pset *q = &s->t.ps[id];
	if (q->p[0].domid == dom) {
		pset_ref(s, id);
		return id;
	}
	struct xs_perm tmp[16], *p = q->n <= 16 ? tmp : malloc(q->n * sizeof(*p));
	if (!p)
		return 0;
	memcpy(p, q->p, q->n * sizeof(*p));
	p[0].domid = dom;
	uint32_t r = pset_get(s, p, q->n);
	if (p != tmp)
		free(p);
	return r;
}

static inline uint32_t pset_owner(const struct xs_store *s, uint32_t id)
{
	return s->t.ps[id].p[0].domid;
}

/* ---- domains ----------------------------------------------------------- */

static struct dom *dom_find(struct xs_store *s, uint32_t domid, bool create)
{
	uint32_t h = (domid * 0x9E3779B1u) & s->dmask;
	while (s->doms[h].used) {
		if (s->doms[h].domid == domid)
			return &s->doms[h];
		h = (h + 1) & s->dmask;
	}
	if (!create)
		return NULL;
	if ((s->ndoms + 1) * 2 > s->dmask + 1) {
		uint32_t nb = (s->dmask + 1) * 2;
		struct dom *nd = calloc(nb, sizeof(*nd)), *od = s->doms;
		if (!nd)
			return NULL;
		uint32_t om = s->dmask;
		s->doms = nd;
		s->dmask = nb - 1;
		for (uint32_t i = 0; i <= om; i++)
			if (od[i].used) {
				uint32_t k = (od[i].domid * 0x9E3779B1u) & s->dmask;
				while (nd[k].used)
					k = (k + 1) & s->dmask;
				nd[k] = od[i];
			}
		free(od);
		return dom_find(s, domid, true);
	}
	s->ndoms++;
	memset(&s->doms[h], 0, sizeof(s->doms[h]));
	s->doms[h].used = 1;
	s->doms[h].domid = domid;
	return &s->doms[h];
}

static void dom_nodes_add(struct xs_store *s, uint32_t domid, int d)
{
	struct dom *x = dom_find(s, domid, true);
	if (x)
		x->nodes += d;
}

static inline bool is_priv(const struct xs_store *s, uint32_t dom)
{
	return dom == 0 || dom == s->priv_domid;
}

bool xs_store_is_priv(struct xs_store *s, uint32_t dom)
{
	return is_priv(s, dom);
}

void xs_store_set_priv_domid(struct xs_store *s, uint32_t dom)
{
	s->priv_domid = dom;
}

int xs_store_set_target(struct xs_store *s, uint32_t dom, uint32_t target)
{
	struct dom *d = dom_find(s, dom, true);
	if (!d)
		return -ENOMEM;
	if (!d->has_target)
		s->ntargets++;
	d->has_target = 1;
	d->target = target;
	return 0;
}

void xs_store_domain_gone(struct xs_store *s, uint32_t dom)
{
	struct dom *d = dom_find(s, dom, false);
	if (!d)
		return;
	if (d->has_target)
		s->ntargets--;
	d->has_target = 0;
	d->target = 0;
	/* The node count describes the tree, which keeps the nodes: it stays
	 * (Xen recounts nothing either); only the target goes. */
}

#define P_OWNER 4u

/* perm_for_conn of xenstored: the rights of dom under permission list id */
static unsigned perm_for(struct xs_store *s, uint32_t dom, uint32_t id)
{
	if (is_priv(s, dom))
		return XS_PERM_BOTH | P_OWNER;
	const struct pset *q = &s->t.ps[id & PID_MASK];
	uint32_t tgt = 0;
	bool ht = false;
	if (s->ntargets) {
		struct dom *d = dom_find(s, dom, false);
		if (d && d->has_target) {
			ht = true;
			tgt = d->target;
		}
	}
	if (q->p[0].domid == dom || (ht && q->p[0].domid == tgt))
		return XS_PERM_BOTH | P_OWNER;
	for (uint32_t i = 1; i < q->n; i++)
		if (q->p[i].domid == dom || (ht && q->p[i].domid == tgt))
			return q->p[i].perm & XS_PERM_BOTH;
	return q->p[0].perm & XS_PERM_BOTH;
}

/* ---- node slots, the child hash ---------------------------------------- */

static inline uint32_t child_hash(uint32_t parent, const char *name, size_t nl)
{
	return hash_bytes(parent, name, nl);
}

static int bucket_rehash(struct xs_store *s, uint32_t nb)
{
	uint32_t *b = calloc(nb, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (uint32_t i = ROOT + 1; i < s->t.nhw; i++) {
		struct node *n = N(s, i);
		if (!n->pid)
			continue;
		uint32_t nl;
		const char *nm = node_name(s, i, &nl);
		uint32_t h = child_hash(n->parent, nm, nl) & (nb - 1);
		n->hnext = b[h];
		b[h] = i;
	}
	free(s->t.bucket);
	s->t.bucket = b;
	s->t.bmask = nb - 1;
	return 0;
}

static uint32_t find_child(struct xs_store *s, uint32_t parent, const char *name, size_t nl)
{
	uint32_t i = s->t.bucket[child_hash(parent, name, nl) & s->t.bmask];
	while (i) {
		struct node *n = N(s, i);
		if (n->parent == parent) {
			const unsigned char *b = BLOB(s, n->blob);
			if (b[0] == nl && nl < 0x80) {
				if (memcmp(b + 1, name, nl) == 0)
					return i;
			} else if (nl >= 0x80) {
				uint32_t l;
				const char *p = node_name(s, i, &l);
				if (l == nl && memcmp(p, name, nl) == 0)
					return i;
			}
		}
		i = n->hnext;
	}
	return NIL;
}


/* The deepest existing node on path: path itself if it exists, then
 * *matched >= plen; else its deepest existing ancestor, *matched being how
 * much of path that covers. */
static uint32_t nearest_ancestor(struct xs_store *s, const char *path, size_t plen,
				 size_t *matched)
{
	uint32_t cur = ROOT, nx;
	size_t i = 1;
	*matched = 1;
	while (i < plen) {
		const char *c = path + i;
		const char *e = memchr(c, '/', plen - i);
		size_t l = e ? (size_t)(e - c) : plen - i;
		nx = find_child(s, cur, c, l);
		if (!nx)
			return cur;
		cur = nx;
		i += l + 1;
		*matched = i;
	}
	return cur;
}

/* path → node, or NIL */
static uint32_t lookup(struct xs_store *s, const char *path, size_t plen)
{
	size_t matched;
	uint32_t n = nearest_ancestor(s, path, plen, &matched);
	return matched >= plen ? n : NIL;
}

static void dcache_drop(struct xs_store *s, uint32_t idx);
static void dcache_child(struct xs_store *s, uint32_t idx, const char *nm, uint32_t nl, bool add);

/* p gained (add) or lost its child named nm: its generation moves, and its
 * cached listing follows */
static inline void touch_parent(struct xs_store *s, uint32_t p, const char *nm, uint32_t nl,
				bool add)
{
	struct node *n = N(s, p);
	bump(s, n);
	if (n->pid & NF_DIRCACHE)
		dcache_child(s, p, nm, nl, add);
}

/* ---- the predecessor map (NF_PREVMAP): O(1) removal from a big directory,
 * whose sibling list is singly linked (4 bytes a node less than a doubly
 * linked one); built for a directory the first time a removal walks more
 * than PREV_WALK siblings, so it costs nothing where nothing is removed */

static uint32_t *prev_slot(struct tree *t, uint32_t child)
{
	uint32_t h = (child * 0x9E3779B1u) & t->pmask;
	while (t->prev[h][0] && t->prev[h][0] != child)
		h = (h + 1) & t->pmask;
	return t->prev[h];
}

static int prev_set(struct tree *t, uint32_t child, uint32_t pred)
{
	uint32_t *e = t->prev ? prev_slot(t, child) : NULL;
	if (e && e[0]) { /* a new predecessor: no growth, cannot fail */
		e[1] = pred;
		return 0;
	}
	if (2 * (t->pn + 1) > t->pmask + 1) { /* grow: rehash into twice the slots */
		uint32_t (*old)[2] = t->prev, om = t->pmask;
		uint32_t nm = t->prev ? 2 * (om + 1) - 1 : 255;
		t->prev = calloc((size_t)nm + 1, sizeof(*t->prev));
		if (!t->prev) {
			t->prev = old;
			return -ENOMEM;
		}
		t->pmask = nm;
		for (uint32_t i = 0; old && i <= om; i++)
			if (old[i][0])
				memcpy(prev_slot(t, old[i][0]), old[i], sizeof(*old));
		free(old);
	}
	e = prev_slot(t, child);
	t->pn++;
	e[0] = child;
	e[1] = pred;
	return 0;
}

static void prev_del(struct tree *t, uint32_t child)
{
	uint32_t *e = prev_slot(t, child);
	if (!e[0])
		return;
	/* backward-shift: later entries of the run move up into the hole */
	uint32_t h = (uint32_t)((uint32_t (*)[2])(void *)e - t->prev);
	for (uint32_t j = (h + 1) & t->pmask; t->prev[j][0]; j = (j + 1) & t->pmask) {
		uint32_t home = (t->prev[j][0] * 0x9E3779B1u) & t->pmask;
		if (((j - home) & t->pmask) >= ((j - h) & t->pmask)) {
			memcpy(t->prev[h], t->prev[j], sizeof(*t->prev));
			h = j;
		}
	}
	t->prev[h][0] = t->prev[h][1] = 0;
	t->pn--;
}

/* every child of parent p in the map (or none: on no memory, the flag
 * stays off and removals walk) */
static void prev_build(struct xs_store *s, uint32_t p)
{
	uint32_t last = N(s, p)->last, c = last;
	do {
		uint32_t nx = N(s, c)->next;
		if (prev_set(&s->t, nx, c)) {
			for (uint32_t d = N(s, last)->next; d != nx; d = N(s, d)->next)
				prev_del(&s->t, d);
			prev_del(&s->t, nx);
			return;
		}
		c = nx;
	} while (c != last);
	N(s, p)->pid |= NF_PREVMAP;
}

/* a new child of parent, appended to its list; takes a reference on pid */
static int node_create(struct xs_store *s, uint32_t parent, const char *name, size_t nl,
		       const void *val, size_t vl, uint32_t pid, uint32_t *out)
{
	uint32_t blob;
	int r = blob_make(s, name, (uint32_t)nl, val, (uint32_t)vl, &blob);
	if (r)
		return r;
	uint32_t i;
	if (s->t.nfree) {
		i = s->t.nfree;
		s->t.nfree = N(s, i)->hnext;
	} else {
		if (s->t.nhw == 0xfffffff0u ||
		    (r = region_grow(&s->t.nodes, ((size_t)s->t.nhw + 1) * sizeof(struct node)))) {
			blob_free(s, blob);
			return r ? r : -ENOMEM;
		}
		i = s->t.nhw++;
	}
	struct node *n = N(s, i), *p = N(s, parent);
	n->parent = parent;
	n->last = NIL;
	n->pid = pid;
	n->blob = blob;
	bump(s, n);
	/* append */
	if (p->last) {
		struct node *l = N(s, p->last);
		n->next = l->next;
		l->next = i;
	} else {
		n->next = i;
	}
	if ((p->pid & NF_PREVMAP) &&
	    (prev_set(&s->t, i, p->last) || prev_set(&s->t, n->next, i))) {
		/* no memory for the map: this directory walks again */
		for (uint32_t c = n->next;; c = N(s, c)->next) {
			prev_del(&s->t, c);
			if (c == i)
				break;
		}
		N(s, parent)->pid &= ~NF_PREVMAP;
		p = N(s, parent);
	}
	p->last = i;
	uint32_t h = child_hash(parent, name, nl) & s->t.bmask;
	n->hnext = s->t.bucket[h];
	s->t.bucket[h] = i;
	pset_ref(s, pid);
	dom_nodes_add(s, pset_owner(s, pid), 1);
	s->t.count++;
	touch_parent(s, parent, name, (uint32_t)nl, true);
	if (s->t.count > s->t.bmask + 1)
		bucket_rehash(s, 2 * (s->t.bmask + 1));
	*out = i;
	return 0;
}

/* unlink one childless node and free it */
static void node_free(struct xs_store *s, uint32_t i)
{
	struct node *n = N(s, i);
	uint32_t parent = n->parent;
	struct node *p = N(s, parent);
	/* sibling list: find the predecessor (at once for the first child,
	 * which is what removing a subtree removes) */
	if (n->next == i) {
		p->last = NIL;
		if (p->pid & NF_PREVMAP) {
			prev_del(&s->t, i);
			p->pid &= ~NF_PREVMAP;
		}
	} else {
		uint32_t pred;
		if (p->pid & NF_PREVMAP) {
			pred = prev_slot(&s->t, i)[1];
		} else {
			uint32_t steps = 0;
			for (pred = p->last; N(s, pred)->next != i; pred = N(s, pred)->next)
				steps++;
			if (steps > PREV_WALK)
				prev_build(s, parent);
		}
		N(s, pred)->next = n->next;
		if (p->pid & NF_PREVMAP) {
			prev_set(&s->t, n->next, pred); /* a replacement: cannot fail */
			prev_del(&s->t, i);
		}
		if (p->last == i)
			p->last = pred;
	}
	/* hash chain */
	uint32_t nl;
	const char *nm = node_name(s, i, &nl);
	uint32_t *pp = &s->t.bucket[child_hash(parent, nm, nl) & s->t.bmask];
	while (*pp != i)
		pp = &N(s, *pp)->hnext;
	*pp = n->hnext;
	if (n->pid & NF_DIRCACHE)
		dcache_drop(s, i);
	touch_parent(s, parent, nm, nl, false);
	dom_nodes_add(s, pset_owner(s, n->pid & PID_MASK), -1);
	pset_unref(s, n->pid & PID_MASK);
	blob_free(s, n->blob);
	n->pid = 0;
	n->blob = 0;
	n->hnext = s->t.nfree;
	s->t.nfree = i;
	s->t.count--;
}

/* remove the subtree at i (post-order) */
static void node_delete(struct xs_store *s, uint32_t top)
{
	uint32_t cur = top;
	for (;;) {
		while (N(s, cur)->last)
			cur = kid_first(s, cur);
		uint32_t up = N(s, cur)->parent;
		node_free(s, cur);
		if (cur == top)
			return;
		cur = up;
	}
}

static int node_set_value(struct xs_store *s, uint32_t i, const void *val, size_t vl)
{
	uint32_t nl, ovl, cu;
	node_value(s, i, &ovl);
	node_name(s, i, &nl);
	uint32_t ob = N(s, i)->blob, nb;
	size_t osz = varint_len(nl) + nl + varint_len(ovl) + ovl;
	size_t sz = varint_len(nl) + nl + varint_len((uint32_t)vl) + vl;
	uint32_t ou = (uint32_t)((osz + BLOB_UNIT - 1) / BLOB_UNIT);
	uint32_t nu = (uint32_t)((sz + BLOB_UNIT - 1) / BLOB_UNIT);
	if (blob_class(ou ? ou : 1, &cu) == blob_class(nu ? nu : 1, &cu)) {
		/* same size class: rewrite the value in place */
		unsigned char *p = BLOB(s, ob) + varint_len(nl) + nl;
		p = varint_put(p, (uint32_t)vl);
		if (vl)
			memmove(p, val, vl);
		bump(s, N(s, i));
		return 0;
	}
	int r = blob_alloc(s, sz, &nb); /* may move the heap */
	if (r)
		return r;
	const unsigned char *op = varint_get(BLOB(s, ob), &nl);
	unsigned char *p = varint_put(BLOB(s, nb), nl);
	memcpy(p, op, nl);
	p = varint_put(p + nl, (uint32_t)vl);
	if (vl)
		memcpy(p, val, vl);
	blob_free(s, ob);
	N(s, i)->blob = nb;
	bump(s, N(s, i));
	return 0;
}

/* takes over the caller's reference on pid */
static void node_set_pid(struct xs_store *s, uint32_t i, uint32_t pid)
{
	struct node *n = N(s, i);
	uint32_t old = n->pid & PID_MASK;
	dom_nodes_add(s, pset_owner(s, old), -1);
	dom_nodes_add(s, pset_owner(s, pid), 1);
	pset_unref(s, old);
	n->pid = (n->pid & ~PID_MASK) | pid;
	bump(s, n);
}

/* bytes of the child list as xenstored stores it (names + NULs), stopping
 * once past limit */
static size_t node_childlen(struct xs_store *s, uint32_t i, size_t limit)
{
	size_t sum = 0;
	for (uint32_t c = kid_first(s, i); c && sum <= limit; c = kid_next(s, i, c)) {
		uint32_t nl;
		node_name(s, c, &nl);
		sum += nl + 1;
	}
	return sum;
}

/* ---- directory cache --------------------------------------------------- */

#define DC_MIN_BYTES 256u
#define DC_MAX_BYTES (16u << 20)

static void dcache_drop(struct xs_store *s, uint32_t idx)
{
	N(s, idx)->pid &= ~NF_DIRCACHE;
	struct dcache **pp = &s->dc[(idx * 0x9E3779B1u) & s->dcmask];
	while (*pp) {
		if ((*pp)->idx == idx) {
			struct dcache *d = *pp;
			*pp = d->next;
			s->dcbytes -= d->len;
			free(d);
			return;
		}
		pp = &(*pp)->next;
	}
}

/* A cached listing follows its directory's children (appended at the end,
 * as the sibling list; removed in place), so that a big directory that
 * changes does not have to be walked again; dropped if it would outgrow
 * the cache's bound. */
static void dcache_child(struct xs_store *s, uint32_t idx, const char *nm, uint32_t nl, bool add)
{
	struct dcache **pp = &s->dc[(idx * 0x9E3779B1u) & s->dcmask];
	while (*pp && (*pp)->idx != idx)
		pp = &(*pp)->next;
	struct dcache *d = *pp;
	if (!d)
		return;
	if (!add) {
		for (uint32_t o = 0; o < d->len;) {
			uint32_t l = (uint32_t)strlen(d->data + o);
			if (l == nl && !memcmp(d->data + o, nm, nl)) {
				memmove(d->data + o, d->data + o + l + 1, d->len - o - l - 1);
				d->len -= l + 1;
				s->dcbytes -= l + 1;
				return;
			}
			o += l + 1;
		}
		dcache_drop(s, idx); /* not there: cannot be */
		return;
	}
	struct dcache *g = s->dcbytes + nl + 1 <= DC_MAX_BYTES ?
		realloc(d, sizeof(*d) + d->len + nl + 1) : NULL;
	if (!g) {
		dcache_drop(s, idx);
		return;
	}
	*pp = g;
	memcpy(g->data + g->len, nm, nl);
	g->data[g->len + nl] = 0;
	g->len += nl + 1;
	s->dcbytes += nl + 1;
}

static void dcache_clear(struct xs_store *s)
{
	for (uint32_t b = 0; b <= s->dcmask; b++)
		while (s->dc[b]) {
			struct dcache *d = s->dc[b];
			s->dc[b] = d->next;
			if (d->idx < s->t.nhw)
				N(s, d->idx)->pid &= ~NF_DIRCACHE;
			free(d);
		}
	s->dcbytes = 0;
}

/* append the children of main node i, NUL-terminated each */
static void main_children(struct xs_store *s, uint32_t i, struct buf *out)
{
	if (N(s, i)->pid & NF_DIRCACHE) {
		for (struct dcache *d = s->dc[(i * 0x9E3779B1u) & s->dcmask]; d; d = d->next)
			if (d->idx == i) {
				buf_add(out, d->data, d->len);
				return;
			}
	}
	size_t start = out->len;
	for (uint32_t c = kid_first(s, i); c; c = kid_next(s, i, c)) {
		uint32_t nl;
		const char *nm = node_name(s, c, &nl);
		buf_reserve(out, nl + 1);
		memcpy(out->p + out->len, nm, nl);
		out->p[out->len + nl] = 0;
		out->len += nl + 1;
	}
	size_t len = out->len - start;
	if (len >= DC_MIN_BYTES) {
		if (s->dcbytes + len > DC_MAX_BYTES)
			dcache_clear(s);
		struct dcache *d = malloc(sizeof(*d) + len);
		if (d) {
			d->idx = i;
			d->len = (uint32_t)len;
			memcpy(d->data, out->p + start, len);
			struct dcache **b = &s->dc[(i * 0x9E3779B1u) & s->dcmask];
			d->next = *b;
			*b = d;
			s->dcbytes += len;
			N(s, i)->pid |= NF_DIRCACHE;
		}
	}
}

/* ---- setup ------------------------------------------------------------- */

static int tree_init(struct xs_store *s)
{
	struct tree *t = &s->t;
	memset(t, 0, sizeof(*t));
	t->bmask = 1023;
	t->bucket = calloc(t->bmask + 1, sizeof(*t->bucket));
	t->psbmask = 63;
	t->psbucket = calloc(t->psbmask + 1, sizeof(*t->psbucket));
	t->nps = 1; /* id 0 = none */
	t->capps = 64;
	t->ps = calloc(t->capps, sizeof(*t->ps));
	if (!t->bucket || !t->psbucket || !t->ps)
		return -ENOMEM;
	t->nhw = ROOT + 1;
	if (region_grow(&t->nodes, (ROOT + 1) * sizeof(struct node)))
		return -ENOMEM;
	struct xs_perm p0 = { .domid = 0, .perm = XS_PERM_NONE };
	uint32_t pid = pset_get(s, &p0, 1);
	uint32_t blob;
	if (!pid || blob_make(s, "", 0, NULL, 0, &blob))
		return -ENOMEM;
	struct node *r = N(s, ROOT);
	memset(r, 0, sizeof(*r));
	r->pid = pid;
	r->blob = blob;
	bump(s, r);
	t->count = 1;
	dom_nodes_add(s, 0, 1);
	return 0;
}

static void tree_free(struct tree *t)
{
	region_free(&t->nodes);
	region_free(&t->blobs);
	free(t->bucket);
	for (uint32_t i = 1; i < t->nps; i++)
		free(t->ps[i].p);
	free(t->ps);
	free(t->psbucket);
	free(t->prev);
	memset(t, 0, sizeof(*t));
}

static int mk_initial(struct xs_store *s, const char *path)
{
	uint32_t parent = ROOT, idx;
	const char *name = strrchr(path, '/');
	if (name != path)
		parent = lookup(s, path, (size_t)(name - path));
	return node_create(s, parent, name + 1, strlen(name + 1), NULL, 0,
			   N(s, ROOT)->pid & PID_MASK, &idx);
}

struct xs_store *xs_store_new(const struct xs_quota *q, xs_change_fn fn, void *opaque)
{
	struct xs_store *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (q)
		s->q = *q;
	s->fn = fn;
	s->opaque = opaque;
	s->dmask = 63;
	s->doms = calloc(s->dmask + 1, sizeof(*s->doms));
	s->dcmask = 255;
	s->dc = calloc(s->dcmask + 1, sizeof(*s->dc));
	s->next_txn_id = 1;
	if (!s->doms || !s->dc || tree_init(s) || mk_initial(s, "/tool") ||
	    mk_initial(s, "/tool/xenstored")) {
		xs_store_free(s);
		return NULL;
	}
	return s;
}

struct xs_txn;
static void txn_destroy(struct xs_txn *t);

void xs_store_free(struct xs_store *s)
{
	if (!s)
		return;
	if (s->dc)
		dcache_clear(s);
	free(s->dc);
	tree_free(&s->t);
	free(s->doms);
	while (s->txn_pool) {
		struct xs_txn *t = s->txn_pool;
		s->txn_pool = *(struct xs_txn **)t; /* pool_next, the first field */
		txn_destroy(t);
	}
	free(s->pathbuf);
	free(s);
}

void xs_store_set_quota(struct xs_store *s, const struct xs_quota *q)
{
	s->q = *q;
}

const struct xs_quota *xs_store_quota(const struct xs_store *s)
{
	return &s->q;
}

uint32_t xs_store_nodes(const struct xs_store *s)
{
	return s->t.count;
}

uint32_t xs_store_dom_nodes(const struct xs_store *s, uint32_t dom)
{
	struct dom *d = dom_find((struct xs_store *)s, dom, false);
	return d && d->nodes > 0 ? (uint32_t)d->nodes : 0;
}

/* ---- paths ------------------------------------------------------------- */

/* is_valid_nodename of xenstored, with our quota's path length */
int xs_path_check(const struct xs_store *s, const char *path, size_t plen)
{
	if (plen == 0 || path[0] != '/')
		return -EINVAL;
	if (plen == 1)
		return 0;
	if (path[plen - 1] == '/')
		return -EINVAL;
	for (size_t i = 0; i < plen; i++) {
		unsigned char c = (unsigned char)path[i];
		if (c == '/') {
			if (path[i + 1] == '/')
				return -EINVAL;
		} else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '@')) {
			return -EINVAL;
		}
	}
	if (s->q.max_path) {
		/* the length past "/local/domain/<domid>/" counts */
		size_t off = 0;
		if (plen > 14 && memcmp(path, "/local/domain/", 14) == 0) {
			size_t k = 14, d = 0;
			while (k < plen && path[k] >= '0' && path[k] <= '9' && d < 5)
				k++, d++;
			if (d && k < plen && path[k] == '/')
				off = k + 1;
		}
		if (plen > off + s->q.max_path)
			return -EINVAL;
	}
	return 0;
}

/* ---- non-transactional operations -------------------------------------- */

static inline void report(struct xs_store *s, const char *path, bool recursive)
{
	if (s->fn)
		s->fn(s->opaque, path, recursive);
}


/* The errno xenstored gives for a missing node (errno_from_parents). */
static int missing_errno(struct xs_store *s, uint32_t dom, uint32_t anc, unsigned want)
{
	return (perm_for(s, dom, N(s, anc)->pid) & want) ? -ENOENT : -EACCES;
}

static inline bool unpriv(struct xs_store *s, uint32_t dom)
{
	return !is_priv(s, dom);
}

/* xenstored's record size (struct xs_tdb_record_hdr + perms + data +
 * children) must stay below max_node_size for unprivileged writers */
#define REC_HDR 24u
#define REC_PERM 8u

static bool too_big(struct xs_store *s, uint32_t dom, uint32_t nperms, size_t vl,
		    size_t childlen)
{
	return s->q.max_node_size && unpriv(s, dom) &&
	       REC_HDR + REC_PERM * nperms + vl + childlen >= s->q.max_node_size;
}

static int count_levels(const char *path, size_t from, size_t plen)
{
	int k = 0;
	for (size_t i = from; i < plen; i++)
		if (path[i] == '/')
			k++;
	return k + 1;
}

/* create path (missing; its deepest existing ancestor is anc, matched bytes
 * of path are existing) with value val */
static int main_create(struct xs_store *s, uint32_t dom, const char *path, size_t plen,
		       uint32_t anc, size_t matched, const void *val, size_t vl)
{
	struct node *a = N(s, anc);
	if (!(perm_for(s, dom, a->pid) & XS_PERM_WRITE))
		return -EACCES;
	int levels = count_levels(path, matched, plen);
	if (unpriv(s, dom) && s->q.max_nodes &&
	    (uint64_t)xs_store_dom_nodes(s, dom) + (unsigned)levels > s->q.max_nodes)
		return -ENOSPC;
	uint32_t apid = a->pid & PID_MASK;
	uint32_t np = s->t.ps[apid].n;
	if (unpriv(s, dom) && s->q.max_node_size) {
		const char *first = path + matched;
		const char *e = memchr(first, '/', plen - matched);
		size_t fl = e ? (size_t)(e - first) : plen - matched;
		uint32_t avl;
		node_value(s, anc, &avl);
		if (too_big(s, dom, np, vl, 0) ||
		    too_big(s, dom, np, avl, node_childlen(s, anc, s->q.max_node_size) + fl + 1))
			return -ENOSPC;
	}
	uint32_t pid = unpriv(s, dom) ? pset_with_owner(s, apid, dom) : (pset_ref(s, apid), apid);
	if (!pid)
		return -ENOMEM;
	uint32_t cur = anc, first_new = NIL;
	size_t i = matched;
	int r = 0;
	while (i < plen) {
		const char *c = path + i;
		const char *e = memchr(c, '/', plen - i);
		size_t l = e ? (size_t)(e - c) : plen - i;
		bool last = !e;
		uint32_t nx;
		r = node_create(s, cur, c, l, last ? val : NULL, last ? vl : 0, pid, &nx);
		if (r)
			break;
		if (!first_new)
			first_new = nx;
		cur = nx;
		i += l + 1;
	}
	if (r && first_new)
		node_delete(s, first_new);
	pset_unref(s, pid);
	return r;
}

static int main_write(struct xs_store *s, uint32_t dom, const char *path, size_t plen,
		      const void *val, size_t vl, bool mkdir)
{
	size_t matched;
	uint32_t i = nearest_ancestor(s, path, plen, &matched);
	if (matched >= plen) {
		if (!(perm_for(s, dom, N(s, i)->pid) & XS_PERM_WRITE))
			return -EACCES;
		if (mkdir)
			return 0;
		if (too_big(s, dom, s->t.ps[N(s, i)->pid & PID_MASK].n, vl,
			    node_childlen(s, i, s->q.max_node_size)))
			return -ENOSPC;
		int r = node_set_value(s, i, val, vl);
		if (r)
			return r;
	} else {
		int r = main_create(s, dom, path, plen, i, matched, val, vl);
		if (r)
			return r;
	}
	report(s, path, false);
	return 0;
}

/* ---- transactions ------------------------------------------------------ */

struct txe {
	char *path;
	uint32_t plen, hash;
	uint32_t gen0;        /* generation at first access; 0 = absent */
	uint32_t node0;       /* main node at first access, or after creation */
	uint32_t pid;         /* own permissions (modified && exists) */
	char *val;            /* own value (modified && exists) */
	uint32_t vlen;
	/* what the first access saw, so that reads stay repeatable when another
	 * client changes the node meanwhile (the commit then fails with EAGAIN) */
	char *sval;
	uint32_t svlen, spid; /* spid holds a reference */
	char *skids;          /* child names at the first listing */
	uint32_t skidlen;
	uint8_t skids_set;
	uint8_t exists, modified, fresh, kids_dirty, linked, reported, applied;
	struct txe *parent_e, *kid_first, *kid_last, *kid_next;
	struct txe *hnext;
};

struct ddelta {
	uint32_t domid;
	int32_t delta;
};

struct xs_txn {
	struct xs_txn *pool_next; /* first: the pool links through it */
	struct xs_store *s;
	uint32_t id, dom;
	struct arena a;
	struct txe **tab;
	uint32_t tmask, n;
	struct txe **list;
	uint32_t ncap;
	struct txe **rep;
	uint32_t nrep, rcap;
	struct ddelta *dd;
	uint32_t ndd, ddcap;
	uint32_t mods;
	bool fail, created;
};

static void txn_destroy(struct xs_txn *t)
{
	arena_free(&t->a);
	free(t->tab);
	free(t->list);
	free(t->rep);
	free(t->dd);
	free(t);
}

uint32_t xs_txn_id(const struct xs_txn *t)
{
	return t->id;
}

uint32_t xs_txn_dom(const struct xs_txn *t)
{
	return t->dom;
}

int xs_txn_start(struct xs_store *s, uint32_t dom, struct xs_txn **tp)
{
	struct dom *d = dom_find(s, dom, true);
	if (!d)
		return -ENOMEM;
	/* xenstored: "transaction_started > quota" fails, so quota + 1 may be open */
	if (unpriv(s, dom) && s->q.max_transactions && d->txns > s->q.max_transactions)
		return -ENOSPC;
	struct xs_txn *t = s->txn_pool;
	if (t) {
		s->txn_pool = t->pool_next;
		s->npool--;
	} else {
		t = calloc(1, sizeof(*t));
		if (!t)
			return -ENOMEM;
		arena_init(&t->a, 0);
		t->tmask = 31;
		t->tab = calloc(t->tmask + 1, sizeof(*t->tab));
		if (!t->tab) {
			free(t);
			return -ENOMEM;
		}
	}
	t->s = s;
	t->dom = dom;
	do
		t->id = s->next_txn_id++;
	while (t->id == 0);
	s->t.gen++; /* as xenstored: a transaction takes a generation */
	d->txns++;
	s->open_txns++;
	*tp = t;
	return 0;
}

static void txn_release(struct xs_store *s, struct xs_txn *t)
{
	for (uint32_t i = 0; i < t->n; i++) {
		struct txe *e = t->list[i];
		if (e->modified && e->exists && e->pid)
			pset_unref(s, e->pid);
		if (e->spid)
			pset_unref(s, e->spid);
	}
	struct dom *d = dom_find(s, t->dom, false);
	if (d && d->txns)
		d->txns--;
	s->open_txns--;
	if (s->npool >= 16 || t->tmask > 1023 || t->ncap > 4096) {
		txn_destroy(t);
		return;
	}
	memset(t->tab, 0, (t->tmask + 1) * sizeof(*t->tab));
	arena_reset(&t->a);
	t->n = t->nrep = t->ndd = t->mods = 0;
	t->fail = t->created = false;
	t->pool_next = s->txn_pool;
	s->txn_pool = t;
	s->npool++;
}

static struct txe *txe_find(struct xs_txn *t, const char *path, size_t plen, uint32_t h)
{
	for (struct txe *e = t->tab[h & t->tmask]; e; e = e->hnext)
		if (e->hash == h && e->plen == plen && memcmp(e->path, path, plen) == 0)
			return e;
	return NULL;
}

static int vec_push(struct txe ***v, uint32_t *n, uint32_t *cap, struct txe *e)
{
	if (*n == *cap) {
		uint32_t c = *cap ? *cap * 2 : 32;
		struct txe **nv = realloc(*v, c * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = e;
	return 0;
}

/* the entry of path, recording the first access */
static int txe_get(struct xs_store *s, struct xs_txn *t, const char *path, size_t plen,
		   struct txe **out)
{
	uint32_t h = hash_bytes(0, path, plen);
	struct txe *e = txe_find(t, path, plen, h);
	if (e) {
		*out = e;
		return 0;
	}
	/* quota_trans_nodes */
	if (s->q.max_txn_nodes && unpriv(s, t->dom) && t->n >= s->q.max_txn_nodes) {
		t->fail = true;
		return -ENOSPC;
	}
	e = arena_calloc(&t->a, sizeof(*e));
	char *p = arena_alloc(&t->a, plen + 1);
	if (!e || !p || vec_push(&t->list, &t->n, &t->ncap, e)) {
		t->fail = true;
		return -ENOMEM;
	}
	memcpy(p, path, plen);
	p[plen] = 0;
	e->path = p;
	e->plen = (uint32_t)plen;
	e->hash = h;
	uint32_t i = lookup(s, path, plen);
	e->node0 = i;
	e->exists = i != NIL;
	e->gen0 = i ? ngen(N(s, i)) : 0;
	if (i) {
		uint32_t vl;
		const char *v = node_value(s, i, &vl);
		e->sval = arena_alloc(&t->a, vl ? vl : 1);
		if (!e->sval) {
			t->fail = true;
			return -ENOMEM;
		}
		memcpy(e->sval, v, vl);
		e->svlen = vl;
		e->spid = N(s, i)->pid & PID_MASK;
		pset_ref(s, e->spid);
	}
	e->hnext = t->tab[h & t->tmask];
	t->tab[h & t->tmask] = e;
	if (t->n > 2 * (t->tmask + 1)) {
		uint32_t nb = 4 * (t->tmask + 1);
		struct txe **nt = calloc(nb, sizeof(*nt));
		if (nt) {
			for (uint32_t k = 0; k < t->n; k++) {
				struct txe *x = t->list[k];
				x->hnext = nt[x->hash & (nb - 1)];
				nt[x->hash & (nb - 1)] = x;
			}
			free(t->tab);
			t->tab = nt;
			t->tmask = nb - 1;
		}
	}
	*out = e;
	return 0;
}

/* Is e's main node still the one first accessed (for unmodified entries)? */
static inline bool txe_main_ok(struct xs_store *s, const struct txe *e)
{
	return e->node0 && e->node0 < s->t.nhw && N(s, e->node0)->pid &&
	       ngen(N(s, e->node0)) == e->gen0;
}

/* the transaction's view of e: its own version, else what it first saw */
static inline bool tv_exists(struct xs_store *s, const struct txe *e)
{
	(void)s;
	return e->exists;
}
static inline uint32_t tv_pid(struct xs_store *s, const struct txe *e)
{
	if (e->modified)
		return e->pid;
	return txe_main_ok(s, e) ? (N(s, e->node0)->pid & PID_MASK) : e->spid;
}
static inline const char *tv_val(struct xs_store *s, const struct txe *e, uint32_t *vl)
{
	if (e->modified) {
		*vl = e->vlen;
		return e->val;
	}
	if (txe_main_ok(s, e))
		return node_value(s, e->node0, vl);
	*vl = e->svlen;
	return e->sval;
}

/* take a private copy of an existing entry before changing it */
static int txe_modify(struct xs_store *s, struct xs_txn *t, struct txe *e)
{
	if (e->modified)
		return 0;
	if (e->exists) {
		uint32_t vl;
		const char *v = tv_val(s, e, &vl);
		char *c = arena_alloc(&t->a, vl ? vl : 1);
		if (!c)
			return -ENOMEM;
		memcpy(c, v, vl);
		e->val = c;
		e->vlen = vl;
		e->pid = tv_pid(s, e);
		pset_ref(s, e->pid);
	}
	e->modified = 1;
	return 0;
}

static int txe_report(struct xs_txn *t, struct txe *e, bool recursive)
{
	if (recursive)
		e->reported |= 2;
	if (e->reported & 1) {
		t->mods++;
		return 0;
	}
	e->reported |= 1;
	t->mods++;
	return vec_push(&t->rep, &t->nrep, &t->rcap, e);
}

static int dd_add(struct xs_txn *t, uint32_t domid, int d)
{
	for (uint32_t i = 0; i < t->ndd; i++)
		if (t->dd[i].domid == domid) {
			t->dd[i].delta += d;
			return 0;
		}
	if (t->ndd == t->ddcap) {
		uint32_t c = t->ddcap ? t->ddcap * 2 : 8;
		struct ddelta *n = realloc(t->dd, c * sizeof(*n));
		if (!n)
			return -ENOMEM;
		t->dd = n;
		t->ddcap = c;
	}
	t->dd[t->ndd++] = (struct ddelta){ domid, d };
	return 0;
}

static inline size_t parent_len(const char *path, size_t plen)
{
	const char *sl = memrchr(path, '/', plen);
	return sl == path ? 1 : (size_t)(sl - path);
}

/* children of an existing entry in the transaction's view */
/* k among the children the transaction has entries for (created, or
 * removed), in the order it first changed them. */
static void txe_link(struct txe *par, struct txe *k)
{
	if (k->linked)
		return;
	k->linked = 1;
	k->parent_e = par;
	if (par->kid_last)
		par->kid_last->kid_next = k;
	else
		par->kid_first = k;
	par->kid_last = k;
}

/* Whether the main child named nm (nl bytes) is among gone (entries of
 * children the transaction removed, or removed and made again). */
static bool in_gone(struct txe *const *gone, int ng, const char *nm, uint32_t nl)
{
	for (int i = 0; i < ng; i++) {
		const struct txe *k = gone[i];
		if (k->plen > nl && k->path[k->plen - nl - 1] == '/' &&
		    !memcmp(k->path + k->plen - nl, nm, nl))
			return true;
	}
	return false;
}

static void tv_children(struct xs_store *s, struct xs_txn *t, struct txe *e, struct buf *out)
{
	/* a node changed behind the transaction's back: its commit will fail;
	 * it keeps seeing what it first listed, else only what it knows itself */
	bool main_ok = txe_main_ok(s, e);
	if (!e->fresh && e->node0 && !e->kids_dirty && !e->modified) {
		if (!e->skids_set && main_ok) {
			size_t from = out->len;
			main_children(s, e->node0, out);
			e->skidlen = (uint32_t)(out->len - from);
			e->skids = arena_alloc(&t->a, e->skidlen ? e->skidlen : 1);
			if (e->skids) {
				if (e->skidlen)
					memcpy(e->skids, out->p + from, e->skidlen);
				e->skids_set = 1;
			}
		} else if (e->skids_set) {
			buf_add(out, e->skids, e->skidlen);
		}
		return;
	}
	if (!e->fresh && e->node0 && main_ok) {
		if (!e->kids_dirty) {
			main_children(s, e->node0, out);
			return;
		}
		/* main children not removed by the transaction (maybe
		 * re-created: then they come at the end, as in 4.17), then its
		 * own.  The removed ones are among e's own entries: a few are
		 * compared by name (a removal from a directory of 1,000, as a
		 * device's, is then not 1,000 lookups); many, looked up. */
		struct txe *gone[16];
		int ng = 0;
		for (struct txe *k = e->kid_first; k && ng <= 16; k = k->kid_next)
			if (k->modified && (!k->exists || k->fresh)) {
				if (ng < 16)
					gone[ng] = k;
				ng++;
			}
		struct buf mk, pb;
		buf_init(&mk);
		buf_init(&pb);
		main_children(s, e->node0, &mk); /* a big directory's is cached */
		buf_add(&pb, e->path, e->plen);
		if (e->plen > 1)
			buf_addc(&pb, '/');
		size_t base = pb.len;
		for (size_t o = 0; o < mk.len;) {
			const char *nm = mk.p + o;
			uint32_t nl = (uint32_t)strlen(nm);
			o += nl + 1;
			bool removed;
			if (ng <= 16) {
				removed = in_gone(gone, ng, nm, nl);
			} else {
				pb.len = base;
				buf_add(&pb, nm, nl);
				struct txe *k = txe_find(t, pb.p, pb.len, hash_bytes(0, pb.p, pb.len));
				removed = k && k->modified && (!k->exists || k->fresh);
			}
			if (!removed)
				buf_add(out, nm, nl + 1);
		}
		buf_free(&mk);
		buf_free(&pb);
	}
	for (struct txe *k = e->kid_first; k; k = k->kid_next) {
		if (!k->exists)
			continue;
		if (!e->fresh && e->node0 && k->gen0 && !k->fresh)
			continue; /* a main child: listed above */
		const char *nm = memrchr(k->path, '/', k->plen) + 1;
		buf_add(out, nm, k->plen - (size_t)(nm - k->path));
		buf_addc(out, 0);
	}
}

/* the deepest existing ancestor entry of path in the transaction's view
 * (recording the access to each one on the way up, as xenstored does) */
static int tv_ancestor(struct xs_store *s, struct xs_txn *t, const char *path, size_t plen,
		       struct txe **out)
{
	size_t l = plen;
	for (;;) {
		l = parent_len(path, l);
		struct txe *a;
		int r = txe_get(s, t, path, l, &a);
		if (r)
			return r;
		if (tv_exists(s, a)) {
			*out = a;
			return 0;
		}
		if (l == 1)
			return -EIO; /* no root: cannot happen */
	}
}

/* view: e does not exist; create it and its missing parents */
static int tv_create(struct xs_store *s, struct xs_txn *t, struct txe *e, const void *val,
		     size_t vl)
{
	struct txe *a;
	int r = tv_ancestor(s, t, e->path, e->plen, &a);
	if (r)
		return r;
	if (!(perm_for(s, t->dom, tv_pid(s, a)) & XS_PERM_WRITE))
		return -EACCES;
	uint32_t dom = t->dom;
	if (unpriv(s, dom) && s->q.max_nodes && xs_store_dom_nodes(s, dom) >= s->q.max_nodes)
		return -ENOSPC;
	uint32_t apid = tv_pid(s, a);
	uint32_t np = s->t.ps[apid].n;
	if (unpriv(s, dom) && s->q.max_node_size) {
		struct buf kb;
		buf_init(&kb);
		tv_children(s, t, a, &kb);
		uint32_t avl;
		tv_val(s, a, &avl);
		const char *first = e->path + a->plen + (a->plen > 1);
		const char *sl = memchr(first, '/', e->plen - (size_t)(first - e->path));
		size_t fl = sl ? (size_t)(sl - first) : e->plen - (size_t)(first - e->path);
		bool big = too_big(s, dom, np, vl, 0) || too_big(s, dom, np, avl, kb.len + fl + 1);
		buf_free(&kb);
		if (big)
			return -ENOSPC;
	}
	uint32_t pid = unpriv(s, dom) ? pset_with_owner(s, apid, dom) : (pset_ref(s, apid), apid);
	if (!pid)
		return -ENOMEM;
	/* top-down from a */
	struct txe *par = a;
	size_t i = a->plen + (a->plen > 1);
	for (;;) {
		const char *sl = memchr(e->path + i, '/', e->plen - i);
		size_t end = sl ? (size_t)(sl - e->path) : e->plen;
		struct txe *k;
		r = txe_get(s, t, e->path, end, &k);
		if (!r)
			r = txe_modify(s, t, par);
		if (r) {
			pset_unref(s, pid);
			return r;
		}
		if (k->modified && k->exists) /* stale view of a doomed txn */
			pset_unref(s, k->pid);
		k->modified = 1;
		k->exists = 1;
		k->fresh = 1;
		k->applied = 0;
		k->pid = pid;
		pset_ref(s, pid);
		bool last = !sl;
		k->vlen = last ? (uint32_t)vl : 0;
		k->val = arena_alloc(&t->a, k->vlen ? k->vlen : 1);
		if (!k->val) {
			pset_unref(s, pid);
			return -ENOMEM;
		}
		if (k->vlen)
			memcpy(k->val, val, vl);
		par->kids_dirty = 1;
		txe_link(par, k);
		dd_add(t, pset_owner(s, pid), 1);
		t->created = true;
		if (last)
			break;
		par = k;
		i = end + 1;
	}
	pset_unref(s, pid);
	return 0;
}

static int tv_write(struct xs_store *s, struct xs_txn *t, const char *path, size_t plen,
		    const void *val, size_t vl, bool mkdir)
{
	struct txe *e;
	int r = txe_get(s, t, path, plen, &e);
	if (r)
		return r;
	if (tv_exists(s, e)) {
		if (!(perm_for(s, t->dom, tv_pid(s, e)) & XS_PERM_WRITE))
			return -EACCES;
		if (mkdir)
			return 0;
		if (s->q.max_node_size && unpriv(s, t->dom)) {
			struct buf kb;
			buf_init(&kb);
			tv_children(s, t, e, &kb);
			bool big = too_big(s, t->dom, s->t.ps[tv_pid(s, e)].n, vl, kb.len);
			buf_free(&kb);
			if (big)
				return -ENOSPC;
		}
		if ((r = txe_modify(s, t, e)))
			return r;
		char *c = arena_alloc(&t->a, vl ? vl : 1);
		if (!c)
			return -ENOMEM;
		memcpy(c, val, vl);
		e->val = c;
		e->vlen = (uint32_t)vl;
	} else {
		if ((r = tv_create(s, t, e, val, vl)))
			return r;
	}
	return txe_report(t, e, false);
}

/* view: remove the existing entry e and everything below it */
static int tv_remove(struct xs_store *s, struct xs_txn *t, struct txe *e)
{
	struct buf kb;
	buf_init(&kb);
	tv_children(s, t, e, &kb);
	struct buf pb;
	buf_init(&pb);
	buf_add(&pb, e->path, e->plen);
	if (e->plen > 1)
		buf_addc(&pb, '/');
	size_t base = pb.len;
	int r = 0;
	for (size_t off = 0; off < kb.len && !r;) {
		size_t l = strlen(kb.p + off);
		pb.len = base;
		buf_add(&pb, kb.p + off, l);
		struct txe *k;
		r = txe_get(s, t, pb.p, pb.len, &k);
		if (!r && tv_exists(s, k))
			r = tv_remove(s, t, k);
		off += l + 1;
	}
	buf_free(&pb);
	buf_free(&kb);
	if (r)
		return r;
	uint32_t pid = tv_pid(s, e);
	dd_add(t, pset_owner(s, pid), -1);
	if (e->modified && e->exists)
		pset_unref(s, e->pid);
	e->pid = 0;
	e->modified = 1;
	e->exists = 0;
	e->fresh = 1;
	e->val = NULL;
	e->vlen = 0;
	return 0;
}

/* ---- the operations ---------------------------------------------------- */

#define CHECK_PATH(s, path, plen)                           \
	size_t plen = strlen(path);                         \
	do {                                                \
		int _r = xs_path_check(s, path, plen);      \
		if (_r)                                     \
			return _r;                          \
	} while (0)

/* Find path for reading with want: the entry/node, or the errno. */
static int get_for(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		   size_t plen, unsigned want, uint32_t *idx, struct txe **ent)
{
	if (!t) {
		size_t matched;
		uint32_t i = nearest_ancestor(s, path, plen, &matched);
		if (matched < plen)
			return missing_errno(s, dom, i, want);
		if ((perm_for(s, dom, N(s, i)->pid) & want) != want)
			return -EACCES;
		*idx = i;
		return 0;
	}
	struct txe *e;
	int r = txe_get(s, t, path, plen, &e);
	if (r)
		return r;
	if (!tv_exists(s, e)) {
		struct txe *a;
		if ((r = tv_ancestor(s, t, path, plen, &a)))
			return r;
		return (perm_for(s, dom, tv_pid(s, a)) & want) ? -ENOENT : -EACCES;
	}
	if ((perm_for(s, dom, tv_pid(s, e)) & want) != want)
		return -EACCES;
	*ent = e;
	return 0;
}

int xs_read(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
	    struct buf *out)
{
	CHECK_PATH(s, path, plen);
	uint32_t i = 0, vl;
	struct txe *e = NULL;
	int r = get_for(s, t, dom, path, plen, XS_PERM_READ, &i, &e);
	if (r)
		return r;
	const char *v = e ? tv_val(s, e, &vl) : node_value(s, i, &vl);
	buf_add(out, v, vl);
	return 0;
}

int xs_directory(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		 struct buf *out)
{
	CHECK_PATH(s, path, plen);
	uint32_t i = 0;
	struct txe *e = NULL;
	int r = get_for(s, t, dom, path, plen, XS_PERM_READ, &i, &e);
	if (r)
		return r;
	if (e)
		tv_children(s, t, e, out);
	else
		main_children(s, i, out);
	return 0;
}

int xs_get_perms(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		 struct xs_perm **perms, int *n)
{
	CHECK_PATH(s, path, plen);
	uint32_t i = 0;
	struct txe *e = NULL;
	int r = get_for(s, t, dom, path, plen, XS_PERM_READ, &i, &e);
	if (r)
		return r;
	const struct pset *q = &s->t.ps[e ? tv_pid(s, e) : (N(s, i)->pid & PID_MASK)];
	*perms = malloc(q->n * sizeof(**perms));
	if (!*perms)
		return -ENOMEM;
	memcpy(*perms, q->p, q->n * sizeof(**perms));
	*n = (int)q->n;
	return 0;
}

uint64_t xs_node_gen(struct xs_store *s, struct xs_txn *t, const char *path)
{
	size_t plen = strlen(path);
	if (xs_path_check(s, path, plen))
		return 0;
	if (t) {
		struct txe *e = txe_find(t, path, plen, hash_bytes(0, path, plen));
		if (e && e->modified) /* a number of the transaction's own */
			return e->exists ? (1ull << 63 | (uint64_t)t->id << 24 | t->mods) : 0;
	}
	uint32_t i = lookup(s, path, plen);
	return i ? ngen(N(s, i)) : 0;
}

int xs_write(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
	     const void *val, size_t len)
{
	CHECK_PATH(s, path, plen);
	if (len > UINT32_MAX / 2)
		return -E2BIG;
	if (t)
		return tv_write(s, t, path, plen, val, len, false);
	return main_write(s, dom, path, plen, val, len, false);
}

int xs_mkdir(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path)
{
	CHECK_PATH(s, path, plen);
	if (t) {
		struct txe *e;
		int r = txe_get(s, t, path, plen, &e);
		if (r)
			return r;
		if (tv_exists(s, e))
			return (perm_for(s, dom, tv_pid(s, e)) & XS_PERM_WRITE) ? 0 : -EACCES;
		return tv_write(s, t, path, plen, NULL, 0, true);
	}
	return main_write(s, dom, path, plen, NULL, 0, true);
}

int xs_rm(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path)
{
	CHECK_PATH(s, path, plen);
	uint32_t i = 0;
	struct txe *e = NULL;
	int r = get_for(s, t, dom, path, plen, XS_PERM_WRITE, &i, &e);
	if (r == -ENOENT) {
		/* missing: fine if its parent exists */
		size_t pl = parent_len(path, plen);
		if (!t)
			return lookup(s, path, pl) ? 0 : -ENOENT;
		struct txe *p;
		if ((r = txe_get(s, t, path, pl, &p)))
			return r;
		return tv_exists(s, p) ? 0 : -ENOENT;
	}
	if (r)
		return r;
	if (plen == 1)
		return -EINVAL;
	if (!t) {
		/* reported before the removal, so that the daemon can still see
		 * the subtree (its nodes and their permissions) */
		report(s, path, true);
		node_delete(s, i);
		return 0;
	}
	struct txe *p;
	if ((r = txe_get(s, t, path, parent_len(path, plen), &p)) || (r = txe_modify(s, t, p)))
		return r;
	if ((r = tv_remove(s, t, e)))
		return r;
	p->kids_dirty = 1;
	txe_link(p, e); /* tv_children finds the removed child among p's own */
	return txe_report(t, e, true);
}

int xs_set_perms(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		 const struct xs_perm *perms, int n)
{
	CHECK_PATH(s, path, plen);
	if (n < 1)
		return -EINVAL;
	for (int k = 0; k < n; k++)
		if (perms[k].perm > XS_PERM_BOTH)
			return -EINVAL;
	if (unpriv(s, dom) && s->q.max_perms && (uint32_t)n > s->q.max_perms)
		return -ENOSPC;
	uint32_t i = 0;
	struct txe *e = NULL;
	int r = get_for(s, t, dom, path, plen, XS_PERM_WRITE | P_OWNER, &i, &e);
	/* (for a missing node, errno_from_parents tests "parent_perm & perm":
	 * any of the bits, as missing_errno does) */
	if (r)
		return r;
	uint32_t old = e ? tv_pid(s, e) : (N(s, i)->pid & PID_MASK);
	if (unpriv(s, dom) && perms[0].domid != pset_owner(s, old))
		return -EPERM;
	uint32_t vl;
	if (e)
		tv_val(s, e, &vl);
	else
		node_value(s, i, &vl);
	if (s->q.max_node_size && unpriv(s, dom)) {
		size_t cl;
		if (e) {
			struct buf kb;
			buf_init(&kb);
			tv_children(s, t, e, &kb);
			cl = kb.len;
			buf_free(&kb);
		} else {
			cl = node_childlen(s, i, s->q.max_node_size);
		}
		if (too_big(s, dom, (uint32_t)n, vl, cl))
			return -ENOSPC;
	}
	uint32_t pid = pset_get(s, perms, (uint32_t)n);
	if (!pid)
		return -ENOMEM;
	if (!t) {
		node_set_pid(s, i, pid);
		report(s, path, false);
		return 0;
	}
	if ((r = txe_modify(s, t, e))) {
		pset_unref(s, pid);
		return r;
	}
	dd_add(t, pset_owner(s, e->pid), -1);
	dd_add(t, pset_owner(s, pid), 1);
	pset_unref(s, e->pid);
	e->pid = pid;
	return txe_report(t, e, false);
}

bool xs_can(struct xs_store *s, uint32_t dom, const char *path, uint8_t want)
{
	size_t plen = strlen(path);
	if (xs_path_check(s, path, plen))
		return false;
	size_t matched;
	uint32_t i = nearest_ancestor(s, path, plen, &matched);
	if ((perm_for(s, dom, N(s, i)->pid) & want) == want)
		return true;
	/* xenstored's watch_permitted: the node's or its parent's rights */
	if (matched >= plen && i != ROOT)
		return (perm_for(s, dom, N(s, N(s, i)->parent)->pid) & want) == want;
	return false;
}

/* ---- commit ------------------------------------------------------------ */

static int materialize(struct xs_store *s, struct txe *e)
{
	if (e->applied || (e->gen0 && !e->fresh)) /* done, or changed in place */
		return 0;
	uint32_t parent;
	if (e->parent_e) {
		int r = materialize(s, e->parent_e);
		if (r)
			return r;
		parent = e->parent_e->node0;
	} else {
		parent = lookup(s, e->path, parent_len(e->path, e->plen));
	}
	if (!parent)
		return -EIO;
	const char *nm = memrchr(e->path, '/', e->plen) + 1;
	uint32_t idx;
	int r = node_create(s, parent, nm, e->plen - (size_t)(nm - e->path), e->val, e->vlen,
			    e->pid, &idx);
	if (r)
		return r;
	e->node0 = idx;
	e->applied = 1;
	return 0;
}

int xs_txn_end(struct xs_store *s, struct xs_txn *t, bool commit)
{
	int r = 0;
	if (!commit)
		goto out;
	if (t->fail) {
		r = -ENOMEM; /* xenstored answers ENOMEM for a failed transaction */
		goto out;
	}
	/* node quota first, as xenstored (transaction_fix_domains) */
	if (t->created && unpriv(s, t->dom) && s->q.max_nodes) {
		for (uint32_t k = 0; k < t->ndd; k++) {
			if (is_priv(s, t->dd[k].domid))
				continue;
			int64_t cnt = (int64_t)xs_store_dom_nodes(s, t->dd[k].domid) + t->dd[k].delta;
			if (cnt >= (int64_t)s->q.max_nodes) {
				r = -ENOSPC;
				goto out;
			}
		}
	}
	/* conflicts: every node accessed must be as it was at first access */
	for (uint32_t k = 0; k < t->n; k++) {
		struct txe *e = t->list[k];
		if (e->gen0) {
			if (!txe_main_ok(s, e)) {
				r = -EAGAIN;
				goto out;
			}
		} else if (lookup(s, e->path, e->plen)) {
			r = -EAGAIN;
			goto out;
		}
	}
	/* apply: removals, then changes and creations in order */
	for (uint32_t k = 0; k < t->n; k++) {
		struct txe *e = t->list[k];
		/* removed, or removed and re-created (then created anew below) */
		if (e->modified && e->gen0 && (!e->exists || e->fresh) && N(s, e->node0)->pid)
			node_delete(s, e->node0);
	}
	for (uint32_t k = 0; k < t->n; k++) {
		struct txe *e = t->list[k];
		if (!e->modified || !e->exists || e->applied)
			continue;
		if (e->gen0 && !e->fresh) { /* alive: checked above, and not removed */
			uint32_t vl;
			const char *v = node_value(s, e->node0, &vl);
			if (vl != e->vlen || memcmp(v, e->val, vl))
				r = node_set_value(s, e->node0, e->val, e->vlen);
			else
				bump(s, N(s, e->node0));
			if ((N(s, e->node0)->pid & PID_MASK) != e->pid) {
				pset_ref(s, e->pid);
				node_set_pid(s, e->node0, e->pid);
			}
			e->applied = 1;
		} else {
			e->node0 = 0;
			r = materialize(s, e);
		}
		if (r) /* out of memory half-way: what is done stays done */
			break;
	}
	for (uint32_t k = 0; k < t->nrep; k++) {
		struct txe *e = t->rep[k];
		if (!e->exists) {
			/* inside a subtree removed by this transaction? */
			size_t pl = parent_len(e->path, e->plen);
			struct txe *p = pl > 1 ? txe_find(t, e->path, pl, hash_bytes(0, e->path, pl))
					       : NULL;
			if (p && p->modified && !p->exists)
				continue;
		}
		report(s, e->path, !e->exists);
	}
out:
	txn_release(s, t);
	return r;
}

/* ---- domain cleanup ---------------------------------------------------- */

/* the path of node i, NUL-terminated, into b (reset) */
static void node_path(struct xs_store *s, uint32_t i, struct buf *b)
{
	size_t total = 0;
	for (uint32_t x = i; x != ROOT; x = N(s, x)->parent) {
		uint32_t nl;
		node_name(s, x, &nl);
		total += nl + 1;
	}
	b->len = 0;
	buf_reserve(b, total + 1);
	b->len = total;
	b->p[total] = 0;
	for (uint32_t x = i; x != ROOT; x = N(s, x)->parent) {
		uint32_t nl;
		const char *nm = node_name(s, x, &nl);
		total -= nl;
		memcpy(b->p + total, nm, nl);
		b->p[--total] = '/';
	}
}

/* xenstored, when a domain is destroyed: the nodes it owns are removed (or,
 * with keep, given to the privileged domain).  Reports each removal. */
int xs_store_domain_orphans(struct xs_store *s, uint32_t dom, bool keep)
{
	if (!xs_store_dom_nodes(s, dom))
		return 0;
	uint32_t cur = kid_first(s, ROOT);
	struct buf pb;
	buf_init(&pb);
	while (cur && xs_store_dom_nodes(s, dom)) {
		struct node *n = N(s, cur);
		uint32_t pid = n->pid & PID_MASK;
		if (pset_owner(s, pid) == dom) {
			if (keep) {
				uint32_t np = pset_with_owner(s, pid, s->priv_domid);
				if (np)
					node_set_pid(s, cur, np);
			} else {
				node_path(s, cur, &pb);
				uint32_t up = n->parent, next = kid_next(s, up, cur);
				report(s, pb.p, true);
				node_delete(s, cur);
				/* continue with the next sibling, or up */
				while (!next && up != ROOT) {
					next = kid_next(s, N(s, up)->parent, up);
					up = N(s, up)->parent;
				}
				cur = next;
				continue;
			}
		}
		/* pre-order step */
		if (N(s, cur)->last) {
			cur = kid_first(s, cur);
			continue;
		}
		for (;;) {
			uint32_t up = N(s, cur)->parent, nx = kid_next(s, up, cur);
			if (nx) {
				cur = nx;
				break;
			}
			if (up == ROOT) {
				cur = NIL;
				break;
			}
			cur = up;
		}
	}
	buf_free(&pb);
	return 0;
}

/* ---- dump and load ----------------------------------------------------- */

static const char DUMP_MAGIC[8] = "CXXS01\n";

static int put32(FILE *f, uint32_t v)
{
	unsigned char b[4] = { (unsigned char)v, (unsigned char)(v >> 8),
			       (unsigned char)(v >> 16), (unsigned char)(v >> 24) };
	return fwrite(b, 1, 4, f) == 4 ? 0 : -EIO;
}

static int dump_node(struct xs_store *s, FILE *f, uint32_t i, struct buf *path)
{
	const struct pset *q = &s->t.ps[N(s, i)->pid & PID_MASK];
	uint32_t vl;
	const char *v = node_value(s, i, &vl);
	int r = put32(f, (uint32_t)path->len);
	if (!r && fwrite(path->p, 1, path->len, f) != path->len)
		r = -EIO;
	if (!r)
		r = put32(f, q->n);
	for (uint32_t k = 0; k < q->n && !r; k++) {
		r = put32(f, q->p[k].domid);
		if (!r && fputc(q->p[k].perm, f) == EOF)
			r = -EIO;
	}
	if (!r)
		r = put32(f, vl);
	if (!r && vl && fwrite(v, 1, vl, f) != vl)
		r = -EIO;
	if (r)
		return r;
	size_t base = path->len;
	for (uint32_t c = kid_first(s, i); c && !r; c = kid_next(s, i, c)) {
		uint32_t nl;
		const char *nm = node_name(s, c, &nl);
		path->len = base;
		if (base > 1)
			buf_addc(path, '/');
		buf_add(path, nm, nl);
		r = dump_node(s, f, c, path);
	}
	path->len = base;
	return r;
}

int xs_store_dump(struct xs_store *s, const char *file)
{
	size_t fl = strlen(file);
	char *tmp = malloc(fl + 8);
	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, file, fl);
	memcpy(tmp + fl, ".tmp", 5);
	FILE *f = fopen(tmp, "we");
	if (!f) {
		int e = -errno;
		free(tmp);
		return e;
	}
	struct buf path;
	buf_init(&path);
	buf_addc(&path, '/');
	int r = fwrite(DUMP_MAGIC, 1, 8, f) == 8 ? 0 : -EIO;
	if (!r)
		r = dump_node(s, f, ROOT, &path);
	if (!r)
		r = put32(f, 0xffffffffu);
	buf_free(&path);
	if (fflush(f) || fsync(fileno(f)))
		r = r ? r : -errno;
	if (fclose(f))
		r = r ? r : -EIO;
	if (!r && rename(tmp, file))
		r = -errno;
	if (r)
		unlink(tmp);
	free(tmp);
	return r;
}

static int get32(FILE *f, uint32_t *v)
{
	unsigned char b[4];
	if (fread(b, 1, 4, f) != 4)
		return -EINVAL;
	*v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
	return 0;
}

static int load_into(struct xs_store *s, FILE *f)
{
	char magic[8];
	if (fread(magic, 1, 8, f) != 8 || memcmp(magic, DUMP_MAGIC, 8))
		return -EINVAL;
	char *path = NULL, *val = NULL;
	struct xs_perm *perms = NULL;
	int r = 0;
	bool root_seen = false;
	for (;;) {
		uint32_t pl, np, vl;
		if ((r = get32(f, &pl)))
			break;
		if (pl == 0xffffffffu)
			break;
		r = -EINVAL;
		if (pl == 0 || pl > (1u << 20))
			break;
		free(path);
		path = malloc(pl + 1);
		if (!path || fread(path, 1, pl, f) != pl)
			break;
		path[pl] = 0;
		if (get32(f, &np) || np == 0 || np > (1u << 16))
			break;
		free(perms);
		perms = malloc(np * sizeof(*perms));
		if (!perms)
			break;
		uint32_t k;
		for (k = 0; k < np; k++) {
			int c;
			if (get32(f, &perms[k].domid) || (c = fgetc(f)) == EOF || c > XS_PERM_BOTH)
				break;
			perms[k].perm = (uint8_t)c;
		}
		if (k < np || get32(f, &vl) || vl > (1u << 24))
			break;
		free(val);
		val = malloc(vl ? vl : 1);
		if (!val || fread(val, 1, vl, f) != vl)
			break;
		if (path[0] != '/' || (pl > 1 && (path[pl - 1] == '/' || strstr(path, "//"))) ||
		    memchr(path, 0, pl))
			break;
		uint32_t pid = pset_get(s, perms, np);
		if (!pid) {
			r = -ENOMEM;
			break;
		}
		if (pl == 1) {
			if (root_seen) {
				pset_unref(s, pid);
				break;
			}
			root_seen = true;
			node_set_pid(s, ROOT, pid);
			r = node_set_value(s, ROOT, val, vl);
			if (r)
				break;
			continue;
		}
		const char *nm = strrchr(path, '/');
		uint32_t parent = lookup(s, path, nm == path ? 1 : (size_t)(nm - path));
		if (!parent || find_child(s, parent, nm + 1, pl - (size_t)(nm + 1 - path))) {
			pset_unref(s, pid);
			break;
		}
		uint32_t idx;
		r = node_create(s, parent, nm + 1, pl - (size_t)(nm + 1 - path), val, vl, pid, &idx);
		pset_unref(s, pid);
		if (r)
			break;
		r = 0;
	}
	if (!r && !root_seen)
		r = -EINVAL;
	free(path);
	free(val);
	free(perms);
	return r;
}

static void recount(struct xs_store *s)
{
	for (uint32_t k = 0; k <= s->dmask; k++)
		s->doms[k].nodes = 0;
	for (uint32_t i = ROOT; i < s->t.nhw; i++)
		if (N(s, i)->pid)
			dom_nodes_add(s, pset_owner(s, N(s, i)->pid & PID_MASK), 1);
}

int xs_store_load(struct xs_store *s, const char *file)
{
	if (s->open_txns)
		return -EBUSY;
	FILE *f = fopen(file, "re");
	if (!f)
		return -errno;
	/* build a new tree beside the old one; keep the one that is whole */
	dcache_clear(s);
	struct tree old = s->t;
	int r = tree_init(s);
	if (!r)
		r = load_into(s, f);
	fclose(f);
	if (r) {
		tree_free(&s->t);
		s->t = old;
	} else {
		tree_free(&old);
	}
	recount(s);
	return r;
}
