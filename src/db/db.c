/* db.c — the in-memory object database and its commit thread.
 *
 * Tables: one per class with in_db.  Rows are indexed by ref (one global
 * chained hash over all classes, so db_get_any is one probe) and by uuid
 * (one chained hash per class), and linked in insertion order for db_next.
 * The chain links live in a header allocated in front of each row
 * (struct rowhdr), so an index costs no allocation per row.
 *
 * Writes: db_txn_commit queues the transaction to the single commit thread
 * and sleeps.  The commit thread takes every queued transaction (group
 * commit) and evaluates them one by one against "shadow" copies of the rows
 * they touch (the memory tables are not changed yet, readers keep running).
 * A failing transaction is rolled back from an undo log and dropped whole.
 * Then all changed persistent rows of the batch go to the store in one SQLite
 * transaction (one fdatasync), and only after that the shadows are installed
 * into the tables under the write lock, which is therefore held only for
 * pointer swaps.  See docs/database.md.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "db/db_internal.h"
#include "base/xerr.h"

#define TOMB_MAX_DEFAULT 131072
static uint32_t tomb_max = TOMB_MAX_DEFAULT;

/* ------------------------------------------------------------------ */
/* Shared immutable values used for common empties and defaults.      */

static struct val v_null_ref = { .kind = V_STR, .flags = VAL_STATIC, .n = 14,
				 .u.s = "OpaqueRef:NULL" };
static struct val v_zero_f = { .kind = V_DOUBLE, .flags = VAL_STATIC, .u.d = 0.0 };
static struct val v_epoch = { .kind = V_DATETIME, .flags = VAL_STATIC, .u.i = 0 };

struct table {
	struct rowhdr *head, *tail;
	struct rowhdr *chg_head, *chg_tail; /* change order (see rowhdr) */
	uint64_t cgen;            /* last generation that created, changed or deleted a row */
	uint32_t count;
	uint32_t ubn;             /* uuid buckets (power of two) */
	struct rowhdr **ub;
	uint32_t ucount;
};

struct op {
	uint8_t kind;
	int16_t cls;
	int16_t field;
	char ref[DB_REF_MAX];
	char *key;
	struct val *v;
	struct val **cols;
};

enum { OP_INSERT, OP_DELETE, OP_SET, OP_MAP_ADD, OP_MAP_REMOVE, OP_SET_ADD, OP_SET_REMOVE,
       OP_TOUCH };

struct db_txn {
	struct op *ops;
	int n, cap;
	bool bad;                 /* an argument was out of range */
	/* commit */
	struct db_txn *qnext;
	bool done;
	int rc;
	struct xerr err;
	pthread_cond_t cv;
};

static struct {
	bool open;
	pthread_rwlock_t lock;
	uint64_t gen;
	struct table *t;
	struct rowhdr **rb;       /* global ref index */
	size_t rbn, rcount;
	/* tombstones: ring */
	struct db_tomb *tombs;
	uint32_t tcap, thead, tn;
	uint64_t tomb_floor;      /* deletions with gen < floor may be forgotten */
	/* defaults and interned values */
	struct val ***defaults;   /* [cls][field], VAL_STATIC */
	struct val ***enumv;      /* [enum][value], VAL_STATIC */
	struct val **owned_static;
	size_t nowned, capowned;
	/* store */
	bool persistent;
	uint64_t stored_gen;
	/* commit thread */
	pthread_t thr;
	bool thr_running;
	pthread_mutex_t qmu;
	pthread_cond_t qcv;
	struct db_txn *qhead, *qtail;
	uint32_t qn;              /* queued transactions */
	bool stop;
	void (*hook)(uint64_t, void *);
	void *hook_opaque;
} D = { .lock = PTHREAD_RWLOCK_INITIALIZER, .qmu = PTHREAD_MUTEX_INITIALIZER,
	.qcv = PTHREAD_COND_INITIALIZER };

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}
static void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p)
		abort();
	return p;
}
static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		abort();
	return p;
}
static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = xmalloc(n);
	memcpy(p, s, n);
	return p;
}

static inline const struct idl_field *FLD(int cls, int f)
{
	return &idl_classes[cls].fields[f];
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static void uuid_fmt(const uint8_t b[16], char *out)
{
	static const char hx[] = "0123456789abcdef";
	int j = 0;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[j++] = '-';
		out[j++] = hx[b[i] >> 4];
		out[j++] = hx[b[i] & 15];
	}
	out[j] = 0;
}

void db_uuid_new(char out[40])
{
	uint8_t b[16];
	size_t got = 0;
	while (got < sizeof b) {
		ssize_t r = getrandom(b + got, sizeof b - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			abort(); /* no entropy source: refs would be guessable */
		}
		got += (size_t)r;
	}
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	uuid_fmt(b, out);
}

void db_ref_new(char out[DB_REF_MAX])
{
	memcpy(out, "OpaqueRef:", 10);
	db_uuid_new(out + 10);
}

static void mark_static(struct val *v)
{
	if (!v || (v->flags & VAL_STATIC))
		return;
	v->flags |= VAL_STATIC;
	if (v->kind == V_ARRAY)
		for (uint32_t i = 0; i < v->n; i++)
			mark_static(v->u.items[i]);
	else if (v->kind == V_STRUCT)
		for (uint32_t i = 0; i < v->n; i++)
			mark_static(v->u.members[i].v);
}

static void unmark_static(struct val *v)
{
	if (!v)
		return;
	v->flags &= (uint8_t)~VAL_STATIC;
	if (v->kind == V_ARRAY)
		for (uint32_t i = 0; i < v->n; i++)
			unmark_static(v->u.items[i]);
	else if (v->kind == V_STRUCT)
		for (uint32_t i = 0; i < v->n; i++)
			unmark_static(v->u.members[i].v);
}

/* Make a heap value permanent (shared by rows) and remember to free it at close. */
static struct val *own_static(struct val *v)
{
	if (!v || (v->flags & VAL_STATIC))
		return v;
	mark_static(v);
	if (D.nowned == D.capowned) {
		D.capowned = D.capowned ? D.capowned * 2 : 256;
		D.owned_static = xrealloc(D.owned_static, D.capowned * sizeof *D.owned_static);
	}
	D.owned_static[D.nowned++] = v;
	return v;
}

static struct val *empty_of(const struct idl_type *ty)
{
	switch (ty->kind) {
	case TY_INT: return &val_zero;
	case TY_FLOAT: return &v_zero_f;
	case TY_BOOL: return &val_false;
	case TY_DATETIME: return &v_epoch;
	case TY_REF: return &v_null_ref;
	case TY_SET: return &val_empty_array;
	case TY_MAP: return &val_empty_struct;
	case TY_OPTION: case TY_RECORD: case TY_VOID: case TY_EVENT_BATCH: return &val_nil;
	default: return &val_empty_str;
	}
}

/* Shared singleton for a cheap-to-recognise value, or NULL. */
static struct val *singleton_for(const struct idl_type *ty, const struct val *v)
{
	switch (v->kind) {
	case V_STR:
		if (v->n == 0)
			return &val_empty_str;
		if (ty->kind == TY_REF && v->n == 14 && memcmp(v->u.s, "OpaqueRef:NULL", 14) == 0)
			return &v_null_ref;
		if (ty->kind == TY_ENUM && D.enumv && ty->enm >= 0 && ty->enm < idl_nenums) {
			const struct idl_enum *e = &idl_enums[ty->enm];
			for (int i = 0; i < e->nvalues; i++)
				if (strlen(e->values[i]) == v->n &&
				    memcmp(e->values[i], v->u.s, v->n) == 0)
					return D.enumv[ty->enm][i];
		}
		return NULL;
	case V_INT: return v->u.i == 0 ? &val_zero : NULL;
	case V_DOUBLE: return v->u.d == 0.0 && !__builtin_signbit(v->u.d) ? &v_zero_f : NULL;
	case V_BOOL: return v->u.b ? &val_true : &val_false;
	case V_DATETIME: return v->u.i == 0 ? &v_epoch : NULL;
	case V_ARRAY: return v->n == 0 ? &val_empty_array : NULL;
	case V_STRUCT: return v->n == 0 ? &val_empty_struct : NULL;
	case V_NIL: return &val_nil;
	default: return NULL;
	}
}

const struct val *db_default_shared(int cls, int field)
{
	if (D.defaults && D.defaults[cls])
		return D.defaults[cls][field];
	return empty_of(FLD(cls, field)->ty);
}

struct val *db_intern(int cls, int field, struct val *v)
{
	if (!v)
		return (struct val *)db_default_shared(cls, field);
	if (v->flags & VAL_STATIC)
		return v;
	const struct idl_field *f = FLD(cls, field);
	struct val *s = singleton_for(f->ty, v);
	if (!s) {
		const struct val *d = db_default_shared(cls, field);
		if (d->kind == v->kind && (d->kind != V_ARRAY && d->kind != V_STRUCT) &&
		    val_equal(d, v))
			s = (struct val *)d;
	}
	if (s) {
		val_free(v);
		return s;
	}
	return v;
}

static struct val *parse_default(const struct idl_field *f)
{
	if (!f->deflt)
		return NULL;
	return db_json_read(f->ty, f->deflt, strlen(f->deflt));
}

struct val *db_field_default(int cls, int field)
{
	if (cls < 0 || cls >= idl_nclasses || field < 0 || field >= idl_classes[cls].nfields)
		return NULL;
	if (D.defaults && D.defaults[cls])
		return val_dup_h(D.defaults[cls][field]);
	const struct idl_field *f = FLD(cls, field);
	struct val *v = parse_default(f);
	return v ? v : val_dup_h(empty_of(f->ty));
}

static void build_shared(void)
{
	D.enumv = xcalloc((size_t)idl_nenums, sizeof *D.enumv);
	for (int e = 0; e < idl_nenums; e++) {
		int n = idl_enums[e].nvalues;
		D.enumv[e] = xcalloc((size_t)n, sizeof **D.enumv);
		for (int i = 0; i < n; i++)
			D.enumv[e][i] = own_static(val_cstr_h(idl_enums[e].values[i]));
	}
	D.defaults = xcalloc((size_t)idl_nclasses, sizeof *D.defaults);
	for (int c = 0; c < idl_nclasses; c++) {
		const struct idl_class *C = &idl_classes[c];
		if (!C->in_db)
			continue;
		D.defaults[c] = xcalloc((size_t)C->nfields, sizeof **D.defaults);
		for (int f = 0; f < C->nfields; f++) {
			const struct idl_field *F = &C->fields[f];
			struct val *v = parse_default(F);
			struct val *s = v ? singleton_for(F->ty, v) : empty_of(F->ty);
			if (s) {
				val_free(v);
				D.defaults[c][f] = s;
			} else {
				D.defaults[c][f] = own_static(v);
			}
		}
	}
}

static void free_shared(void)
{
	for (size_t i = 0; i < D.nowned; i++) {
		unmark_static(D.owned_static[i]);
		val_free(D.owned_static[i]);
	}
	free(D.owned_static);
	D.owned_static = NULL;
	D.nowned = D.capowned = 0;
	if (D.enumv)
		for (int e = 0; e < idl_nenums; e++)
			free(D.enumv[e]);
	free(D.enumv);
	D.enumv = NULL;
	if (D.defaults)
		for (int c = 0; c < idl_nclasses; c++)
			free(D.defaults[c]);
	free(D.defaults);
	D.defaults = NULL;
}

/* ------------------------------------------------------------------ */
/* Tables and indexes (caller holds the write lock, or is the opener). */

static const char *row_uuid(const struct db_row *r)
{
	int uf = idl_classes[r->cls].uuid_field;
	if (uf < 0 || !r->cols[uf] || r->cols[uf]->kind != V_STR || r->cols[uf]->n == 0)
		return NULL;
	return r->cols[uf]->u.s;
}

static struct db_row *row_alloc(int cls, const char *ref)
{
	size_t nf = (size_t)idl_classes[cls].nfields;
	char *m = xcalloc(1, sizeof(struct rowhdr) + sizeof(struct db_row) + nf * sizeof(struct val *));
	struct db_row *r = HDR_ROW((struct rowhdr *)m);
	size_t n = strlen(ref);
	if (n >= DB_REF_MAX)
		n = DB_REF_MAX - 1;
	memcpy(r->ref, ref, n);
	r->ref[n] = 0;
	r->cls = (int16_t)cls;
	return r;
}

static void row_free(struct db_row *r)
{
	if (!r)
		return;
	for (int f = 0; f < idl_classes[r->cls].nfields; f++)
		val_free(r->cols[f]);
	free(ROW_HDR(r));
}

static void rb_grow(void)
{
	size_t nb = D.rbn ? D.rbn * 2 : 1024;
	struct rowhdr **b = xcalloc(nb, sizeof *b);
	for (size_t i = 0; i < D.rbn; i++) {
		struct rowhdr *h = D.rb[i], *nx;
		for (; h; h = nx) {
			nx = h->ref_next;
			size_t k = h->ref_hash & (nb - 1);
			h->ref_next = b[k];
			b[k] = h;
		}
	}
	free(D.rb);
	D.rb = b;
	D.rbn = nb;
}

static void ub_grow(struct table *t)
{
	uint32_t nb = t->ubn ? t->ubn * 2 : 64;
	struct rowhdr **b = xcalloc(nb, sizeof *b);
	for (uint32_t i = 0; i < t->ubn; i++) {
		struct rowhdr *h = t->ub[i], *nx;
		for (; h; h = nx) {
			nx = h->uuid_next;
			uint32_t k = (uint32_t)(h->uuid_hash & (nb - 1));
			h->uuid_next = b[k];
			b[k] = h;
		}
	}
	free(t->ub);
	t->ub = b;
	t->ubn = nb;
}

static void uuid_index_add(struct db_row *r)
{
	const char *u = row_uuid(r);
	if (!u)
		return;
	struct table *t = &D.t[r->cls];
	if (t->ucount + 1 > t->ubn)
		ub_grow(t);
	struct rowhdr *h = ROW_HDR(r);
	h->uuid_hash = db_hash(u);
	uint32_t k = (uint32_t)(h->uuid_hash & (t->ubn - 1));
	h->uuid_next = t->ub[k];
	t->ub[k] = h;
	t->ucount++;
}

static void uuid_index_del(struct db_row *r)
{
	if (!row_uuid(r))
		return;
	struct table *t = &D.t[r->cls];
	struct rowhdr *h = ROW_HDR(r);
	struct rowhdr **pp = &t->ub[h->uuid_hash & (t->ubn - 1)];
	for (; *pp; pp = &(*pp)->uuid_next)
		if (*pp == h) {
			*pp = h->uuid_next;
			t->ucount--;
			return;
		}
}

static void chg_unlink(struct table *t, struct rowhdr *h)
{
	if (h->chg_prev)
		h->chg_prev->chg_next = h->chg_next;
	else if (t->chg_head == h)
		t->chg_head = h->chg_next;
	else
		return; /* not linked */
	if (h->chg_next)
		h->chg_next->chg_prev = h->chg_prev;
	else
		t->chg_tail = h->chg_prev;
	h->chg_prev = h->chg_next = NULL;
}

/* Move r to the end of its class's change order (write lock held). */
static void chg_touch(struct db_row *r, uint64_t batch_gen)
{
	struct table *t = &D.t[r->cls];
	struct rowhdr *h = ROW_HDR(r);
	chg_unlink(t, h);
	h->chg_gen = batch_gen;
	h->chg_prev = t->chg_tail;
	h->chg_next = NULL;
	if (t->chg_tail)
		t->chg_tail->chg_next = h;
	else
		t->chg_head = h;
	t->chg_tail = h;
	if (r->modified > t->cgen)
		t->cgen = r->modified;
}

static void row_link(struct db_row *r)
{
	struct table *t = &D.t[r->cls];
	struct rowhdr *h = ROW_HDR(r);
	if (D.rcount + 1 > D.rbn)
		rb_grow();
	h->ref_hash = db_hash(r->ref);
	size_t k = h->ref_hash & (D.rbn - 1);
	h->ref_next = D.rb[k];
	D.rb[k] = h;
	D.rcount++;
	h->prev = t->tail;
	h->next = NULL;
	if (t->tail)
		t->tail->next = h;
	else
		t->head = h;
	t->tail = h;
	t->count++;
	uuid_index_add(r);
}

static void row_unlink(struct db_row *r)
{
	struct table *t = &D.t[r->cls];
	struct rowhdr *h = ROW_HDR(r);
	struct rowhdr **pp = &D.rb[h->ref_hash & (D.rbn - 1)];
	for (; *pp; pp = &(*pp)->ref_next)
		if (*pp == h) {
			*pp = h->ref_next;
			D.rcount--;
			break;
		}
	if (h->prev)
		h->prev->next = h->next;
	else
		t->head = h->next;
	if (h->next)
		h->next->prev = h->prev;
	else
		t->tail = h->prev;
	t->count--;
	uuid_index_del(r);
	chg_unlink(t, h);
}

static struct db_row *mem_get_any(const char *ref)
{
	if (!D.rbn || !ref)
		return NULL;
	uint64_t hv = db_hash(ref);
	for (struct rowhdr *h = D.rb[hv & (D.rbn - 1)]; h; h = h->ref_next)
		if (h->ref_hash == hv && strcmp(HDR_ROW(h)->ref, ref) == 0)
			return HDR_ROW(h);
	return NULL;
}

static struct db_row *mem_get_by_uuid(int cls, const char *uuid)
{
	struct table *t = &D.t[cls];
	if (!t->ubn || !uuid)
		return NULL;
	uint64_t hv = db_hash(uuid);
	for (struct rowhdr *h = t->ub[hv & (t->ubn - 1)]; h; h = h->uuid_next)
		if (h->uuid_hash == hv) {
			const char *u = row_uuid(HDR_ROW(h));
			if (u && strcmp(u, uuid) == 0)
				return HDR_ROW(h);
		}
	return NULL;
}

static bool cls_ok(int cls)
{
	return cls >= 0 && cls < idl_nclasses && idl_classes[cls].in_db;
}

/* ---- public lookups (read lock held) ---- */

struct db_row *db_get(int cls, const char *ref)
{
	if (!D.open || !cls_ok(cls))
		return NULL;
	struct db_row *r = mem_get_any(ref);
	return r && r->cls == cls ? r : NULL;
}

struct db_row *db_get_by_uuid(int cls, const char *uuid)
{
	if (!D.open || !cls_ok(cls))
		return NULL;
	return mem_get_by_uuid(cls, uuid);
}

struct db_row *db_get_any(const char *ref)
{
	return D.open ? mem_get_any(ref) : NULL;
}

uint32_t db_count(int cls)
{
	return D.open && cls_ok(cls) ? D.t[cls].count : 0;
}

struct db_row *db_next(int cls, struct db_row *row)
{
	if (!D.open || !cls_ok(cls))
		return NULL;
	struct rowhdr *h = row ? ROW_HDR(row)->next : D.t[cls].head;
	return h ? HDR_ROW(h) : NULL;
}

struct db_row *db_next_changed(int cls, uint64_t since, struct db_row *row)
{
	if (!D.open || !cls_ok(cls))
		return NULL;
	struct rowhdr *h = row ? ROW_HDR(row)->chg_prev : D.t[cls].chg_tail;
	return h && h->chg_gen > since ? HDR_ROW(h) : NULL;
}

uint64_t db_class_gen(int cls)
{
	return D.open && cls_ok(cls) ? D.t[cls].cgen : 0;
}

void db_set_tomb_max(uint32_t n)
{
	tomb_max = n < 256 ? 256 : n;
}

void db_rdlock(void)
{
	pthread_rwlock_rdlock(&D.lock);
}

void db_unlock(void)
{
	pthread_rwlock_unlock(&D.lock);
}

uint64_t db_generation(void)
{
	return __atomic_load_n(&D.gen, __ATOMIC_ACQUIRE);
}

void db_set_commit_hook(void (*fn)(uint64_t gen, void *opaque), void *opaque)
{
	pthread_mutex_lock(&D.qmu);
	D.hook = fn;
	D.hook_opaque = opaque;
	pthread_mutex_unlock(&D.qmu);
}

/* ---- tombstones ---- */

static void tomb_add(int cls, const char *ref, uint64_t created, uint64_t gen)
{
	while (D.tn >= tomb_max && D.tn > 0) { /* the bound was lowered */
		struct db_tomb *o = &D.tombs[D.thead];
		if (o->gen + 1 > D.tomb_floor)
			D.tomb_floor = o->gen + 1;
		D.thead = (D.thead + 1) % D.tcap;
		D.tn--;
	}
	if (D.tn == D.tcap) {
		if (D.tcap < tomb_max) {
			/* grow, unrolling the ring */
			uint32_t nc = D.tcap ? D.tcap * 2 : 256;
			if (nc > tomb_max)
				nc = tomb_max;
			struct db_tomb *n = xmalloc(nc * sizeof *n);
			for (uint32_t i = 0; i < D.tn; i++)
				n[i] = D.tombs[(D.thead + i) % D.tcap];
			free(D.tombs);
			D.tombs = n;
			D.tcap = nc;
			D.thead = 0;
		} else {
			/* drop the oldest */
			struct db_tomb *o = &D.tombs[D.thead];
			if (o->gen + 1 > D.tomb_floor)
				D.tomb_floor = o->gen + 1;
			D.thead = (D.thead + 1) % D.tcap;
			D.tn--;
		}
	}
	struct db_tomb *t = &D.tombs[(D.thead + D.tn) % D.tcap];
	t->cls = (int16_t)cls;
	t->gen = gen;
	t->created = created;
	snprintf(t->ref, sizeof t->ref, "%s", ref);
	D.tn++;
	if (cls >= 0 && cls < idl_nclasses && gen > D.t[cls].cgen)
		D.t[cls].cgen = gen;
}

/* Position in the ring of the first tombstone with gen > since (generations
 * are non-decreasing along the ring: binary search). */
static uint32_t tomb_first_after(uint64_t since)
{
	uint32_t lo = 0, hi = D.tn;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (D.tombs[(D.thead + mid) % D.tcap].gen > since)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

int db_tombs_since(uint64_t since, struct db_tomb *out, int max, uint64_t *oldest)
{
	int k = 0;
	if (oldest)
		*oldest = D.tomb_floor;
	if (!D.tcap)
		return 0;
	uint32_t lo = tomb_first_after(since);
	for (uint32_t i = lo; i < D.tn && k < max; i++)
		out[k++] = D.tombs[(D.thead + i) % D.tcap];
	return k;
}

int db_tombs_each(uint64_t since, int (*fn)(const struct db_tomb *t, void *opaque),
		  void *opaque)
{
	if (!D.tcap)
		return 0;
	uint32_t lo = tomb_first_after(since);
	for (uint32_t i = lo; i < D.tn; i++) {
		int rc = fn(&D.tombs[(D.thead + i) % D.tcap], opaque);
		if (rc)
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Transactions                                                        */

struct db_txn *db_txn_new(void)
{
	return xcalloc(1, sizeof(struct db_txn));
}

static void op_free(struct op *o)
{
	free(o->key);
	val_free(o->v);
	if (o->cols) {
		for (int f = 0; f < idl_classes[o->cls].nfields; f++)
			val_free(o->cols[f]);
		free(o->cols);
	}
}

void db_txn_free(struct db_txn *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->n; i++)
		op_free(&t->ops[i]);
	free(t->ops);
	xerr_clear(&t->err);
	free(t);
}

static struct op *op_push(struct db_txn *t, int kind, int cls, const char *ref, int field)
{
	if (!cls_ok(cls) || !ref ||
	    (field != -1 && (field < 0 || field >= idl_classes[cls].nfields))) {
		t->bad = true;
		return NULL;
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 4;
		t->ops = xrealloc(t->ops, (size_t)t->cap * sizeof *t->ops);
	}
	struct op *o = &t->ops[t->n++];
	memset(o, 0, sizeof *o);
	o->kind = (uint8_t)kind;
	o->cls = (int16_t)cls;
	o->field = (int16_t)field;
	snprintf(o->ref, sizeof o->ref, "%s", ref);
	if (strlen(ref) >= DB_REF_MAX)
		t->bad = true;
	return o;
}

void db_txn_insert(struct db_txn *t, int cls, const char *ref, struct val **cols)
{
	struct op *o = op_push(t, OP_INSERT, cls, ref, -1);
	int nf = cls_ok(cls) ? idl_classes[cls].nfields : 0;
	if (!o) {
		if (cols)
			for (int f = 0; f < nf; f++)
				val_free(cols[f]);
		return;
	}
	o->cols = xcalloc((size_t)nf, sizeof *o->cols);
	if (cols)
		memcpy(o->cols, cols, (size_t)nf * sizeof *cols);
}

void db_txn_delete(struct db_txn *t, int cls, const char *ref)
{
	op_push(t, OP_DELETE, cls, ref, -1);
}

void db_txn_touch(struct db_txn *t, int cls, const char *ref)
{
	op_push(t, OP_TOUCH, cls, ref, -1);
}

void db_txn_set(struct db_txn *t, int cls, const char *ref, int field, struct val *v)
{
	struct op *o = op_push(t, OP_SET, cls, ref, field);
	if (!o) {
		val_free(v);
		return;
	}
	o->v = v ? v : val_dup_h(db_default_shared(cls, field));
}

void db_txn_map_add(struct db_txn *t, int cls, const char *ref, int field,
		    const char *key, struct val *v)
{
	struct op *o = op_push(t, OP_MAP_ADD, cls, ref, field);
	if (!o || !key) {
		if (o)
			t->bad = true;
		val_free(v);
		return;
	}
	o->key = xstrdup(key);
	o->v = v ? v : val_str_h("", 0);
}

void db_txn_map_remove(struct db_txn *t, int cls, const char *ref, int field, const char *key)
{
	struct op *o = op_push(t, OP_MAP_REMOVE, cls, ref, field);
	if (!o)
		return;
	if (!key) {
		t->bad = true;
		return;
	}
	o->key = xstrdup(key);
}

void db_txn_set_add(struct db_txn *t, int cls, const char *ref, int field, struct val *v)
{
	struct op *o = op_push(t, OP_SET_ADD, cls, ref, field);
	if (!o || !v) {
		if (o)
			t->bad = true;
		val_free(v);
		return;
	}
	o->v = v;
}

void db_txn_set_remove(struct db_txn *t, int cls, const char *ref, int field, const struct val *v)
{
	struct op *o = op_push(t, OP_SET_REMOVE, cls, ref, field);
	if (!o)
		return;
	if (!v) {
		t->bad = true;
		return;
	}
	o->v = val_dup_h(v);
}

/* ------------------------------------------------------------------ */
/* Batch evaluation: shadows and undo                                  */

struct shadow {
	struct shadow *hnext, *lnext;
	struct db_row *base;      /* the row in memory at batch start, or NULL */
	int cls;
	bool exists;              /* row exists in the batch's view */
	bool touched;             /* changed by a successful txn of the batch */
	bool reinserted;          /* base deleted, then a new row inserted */
	uint64_t hash;
	uint64_t created, modified, deleted_gen;
	struct val **cols;
	uint64_t *owned;          /* cols[f] was set by the batch */
	uint64_t *dirty;          /* cols[f] must be written to the store */
	char ref[DB_REF_MAX];
};

struct undo {
	struct shadow *s;
	int field;                /* -1: state record */
	struct val *old;
	bool old_owned, old_dirty;
	bool exists, touched, reinserted;
	uint64_t created, modified, deleted_gen;
};

struct uent {                 /* uuid overlay entry */
	struct uent *next;
	struct shadow *s;
	uint64_t hash;
};

struct batch {
	struct shadow **sb;
	size_t sbn, scount;
	struct shadow *shead, *stail;
	struct uent **ub;
	size_t ubn, ucount;
	struct undo *undo;
	size_t nundo, capundo;
	uint64_t gen;             /* last generation assigned */
	bool changed;             /* current txn changed something */
	struct val **garbage;     /* freed after the write lock is released */
	size_t ngarbage, capgarbage;
	struct db_tomb *tombs;    /* deletions of the batch, sorted before recording */
	size_t ntombs, captombs;
};

static void garbage(struct batch *b, struct val *v)
{
	if (!v || (v->flags & VAL_STATIC))
		return;
	if (b->ngarbage == b->capgarbage) {
		b->capgarbage = b->capgarbage ? b->capgarbage * 2 : 64;
		b->garbage = xrealloc(b->garbage, b->capgarbage * sizeof *b->garbage);
	}
	b->garbage[b->ngarbage++] = v;
}

static struct undo *undo_push(struct batch *b)
{
	if (b->nundo == b->capundo) {
		b->capundo = b->capundo ? b->capundo * 2 : 64;
		b->undo = xrealloc(b->undo, b->capundo * sizeof *b->undo);
	}
	struct undo *u = &b->undo[b->nundo++];
	memset(u, 0, sizeof *u);
	return u;
}

static struct shadow *sh_find(struct batch *b, const char *ref, uint64_t hv)
{
	if (!b->sbn)
		return NULL;
	for (struct shadow *s = b->sb[hv & (b->sbn - 1)]; s; s = s->hnext)
		if (s->hash == hv && strcmp(s->ref, ref) == 0)
			return s;
	return NULL;
}

static struct shadow *sh_new(struct batch *b, int cls, const char *ref, uint64_t hv,
			     struct db_row *base)
{
	if (b->scount + 1 > b->sbn) {
		size_t nb = b->sbn ? b->sbn * 2 : 64;
		struct shadow **nbk = xcalloc(nb, sizeof *nbk);
		for (struct shadow *s = b->shead; s; s = s->lnext) {
			size_t k = s->hash & (nb - 1);
			s->hnext = nbk[k];
			nbk[k] = s;
		}
		free(b->sb);
		b->sb = nbk;
		b->sbn = nb;
	}
	int nf = idl_classes[cls].nfields;
	size_t nw = BITWORDS((size_t)nf);
	struct shadow *s = xcalloc(1, sizeof *s);
	s->cls = cls;
	s->base = base;
	s->exists = base != NULL;
	s->hash = hv;
	snprintf(s->ref, sizeof s->ref, "%s", ref);
	s->cols = xcalloc((size_t)nf, sizeof *s->cols);
	s->owned = xcalloc(nw, sizeof *s->owned);
	s->dirty = xcalloc(nw, sizeof *s->dirty);
	if (base) {
		memcpy(s->cols, base->cols, (size_t)nf * sizeof *s->cols);
		s->created = base->created;
		s->modified = base->modified;
	}
	size_t k = hv & (b->sbn - 1);
	s->hnext = b->sb[k];
	b->sb[k] = s;
	if (b->stail)
		b->stail->lnext = s;
	else
		b->shead = s;
	b->stail = s;
	b->scount++;
	return s;
}

/* The shadow for ref, creating it from memory; NULL if the ref is unknown
 * everywhere (then a new shadow of class cls is created only if create). */
static struct shadow *sh_get(struct batch *b, int cls, const char *ref, bool create)
{
	uint64_t hv = db_hash(ref);
	struct shadow *s = sh_find(b, ref, hv);
	if (s)
		return s;
	struct db_row *r = mem_get_any(ref);
	if (r)
		return sh_new(b, r->cls, ref, hv, r);
	return create ? sh_new(b, cls, ref, hv, NULL) : NULL;
}

static void sh_save_state(struct batch *b, struct shadow *s)
{
	struct undo *u = undo_push(b);
	u->s = s;
	u->field = -1;
	u->exists = s->exists;
	u->touched = s->touched;
	u->reinserted = s->reinserted;
	u->created = s->created;
	u->modified = s->modified;
	u->deleted_gen = s->deleted_gen;
}

static void sh_stamp(struct batch *b, struct shadow *s, uint64_t gen)
{
	if (s->touched && s->modified == gen)
		return;
	sh_save_state(b, s);
	s->touched = true;
	s->modified = gen;
	b->changed = true;
}

/* Replace column f of s with nv (owned by the batch from now on). */
static void sh_setcol(struct batch *b, struct shadow *s, int f, struct val *nv)
{
	struct undo *u = undo_push(b);
	u->s = s;
	u->field = f;
	u->old = s->cols[f];
	u->old_owned = BIT_TEST(s->owned, f);
	u->old_dirty = BIT_TEST(s->dirty, f);
	s->cols[f] = nv;
	BIT_SET(s->owned, f);
	BIT_SET(s->dirty, f);
	b->changed = true;
}

/* End of a transaction: keep (ok) or roll back its changes. */
static void undo_finish(struct batch *b, bool ok)
{
	if (ok) {
		for (size_t i = 0; i < b->nundo; i++) {
			struct undo *u = &b->undo[i];
			if (u->field >= 0 && u->old_owned && u->old != u->s->cols[u->field])
				val_free(u->old);
		}
	} else {
		for (size_t i = b->nundo; i-- > 0;) {
			struct undo *u = &b->undo[i];
			struct shadow *s = u->s;
			if (u->field >= 0) {
				if (BIT_TEST(s->owned, u->field))
					val_free(s->cols[u->field]);
				s->cols[u->field] = u->old;
				if (u->old_owned)
					BIT_SET(s->owned, u->field);
				else
					BIT_CLR(s->owned, u->field);
				if (u->old_dirty)
					BIT_SET(s->dirty, u->field);
				else
					BIT_CLR(s->dirty, u->field);
			} else {
				s->exists = u->exists;
				s->touched = u->touched;
				s->reinserted = u->reinserted;
				s->created = u->created;
				s->modified = u->modified;
				s->deleted_gen = u->deleted_gen;
			}
		}
	}
	b->nundo = 0;
}

static const char *sh_uuid(const struct shadow *s)
{
	int uf = idl_classes[s->cls].uuid_field;
	if (uf < 0 || !s->cols[uf] || s->cols[uf]->kind != V_STR || s->cols[uf]->n == 0)
		return NULL;
	return s->cols[uf]->u.s;
}

static void uuid_overlay_add(struct batch *b, struct shadow *s)
{
	const char *u = sh_uuid(s);
	if (!u)
		return;
	if (b->ucount + 1 > b->ubn) {
		size_t nb = b->ubn ? b->ubn * 2 : 64;
		struct uent **nbk = xcalloc(nb, sizeof *nbk);
		for (size_t i = 0; i < b->ubn; i++) {
			struct uent *e = b->ub[i], *nx;
			for (; e; e = nx) {
				nx = e->next;
				e->next = nbk[e->hash & (nb - 1)];
				nbk[e->hash & (nb - 1)] = e;
			}
		}
		free(b->ub);
		b->ub = nbk;
		b->ubn = nb;
	}
	struct uent *e = xmalloc(sizeof *e);
	e->s = s;
	e->hash = db_hash(u);
	e->next = b->ub[e->hash & (b->ubn - 1)];
	b->ub[e->hash & (b->ubn - 1)] = e;
	b->ucount++;
}

/* Is uuid u of class cls held by a row other than self in the batch's view? */
static bool uuid_taken(struct batch *b, int cls, const char *u, const struct shadow *self)
{
	uint64_t hv = db_hash(u);
	if (b->ubn)
		for (struct uent *e = b->ub[hv & (b->ubn - 1)]; e; e = e->next) {
			const struct shadow *s = e->s;
			if (e->hash != hv || s == self || s->cls != cls || !s->exists)
				continue;
			const char *su = sh_uuid(s);
			if (su && strcmp(su, u) == 0)
				return true;
		}
	struct db_row *r = mem_get_by_uuid(cls, u);
	if (!r)
		return false;
	const struct shadow *s = sh_find(b, r->ref, db_hash(r->ref));
	if (!s)
		return self == NULL || self->base != r;
	if (s == self || !s->exists || s->reinserted)
		return false;
	const char *su = sh_uuid(s);
	return su && strcmp(su, u) == 0;
}

static bool is_null_ref(const struct val *v)
{
	return !v || v->kind != V_STR || v->n == 0 ||
	       (v->n == 14 && memcmp(v->u.s, "OpaqueRef:NULL", 14) == 0);
}

static int set_find(const struct val *set, const struct val *item)
{
	if (!set || set->kind != V_ARRAY)
		return -1;
	for (uint32_t i = 0; i < set->n; i++)
		if (val_equal(set->u.items[i], item))
			return (int)i;
	return -1;
}

static int set_find_str(const struct val *set, const char *s)
{
	if (!set || set->kind != V_ARRAY)
		return -1;
	size_t n = strlen(s);
	for (uint32_t i = 0; i < set->n; i++) {
		const struct val *it = set->u.items[i];
		if (it->kind == V_STR && it->n == n && memcmp(it->u.s, s, n) == 0)
			return (int)i;
	}
	return -1;
}

/* A copy of set with item appended (item taken). */
static struct val *set_with(const struct val *set, struct val *item)
{
	uint32_t n = set && set->kind == V_ARRAY ? set->n : 0;
	struct val *nv = val_array_h(n + 1);
	for (uint32_t i = 0; i < n; i++)
		nv->u.items[i] = val_dup_h(set->u.items[i]);
	nv->u.items[n] = item;
	return nv;
}

static struct val *set_without(const struct val *set, int idx)
{
	uint32_t n = set->n;
	if (n == 1)
		return &val_empty_array;
	struct val *nv = val_array_h(n - 1);
	for (uint32_t i = 0, j = 0; i < n; i++)
		if ((int)i != idx)
			nv->u.items[j++] = val_dup_h(set->u.items[i]);
	return nv;
}

static int map_find(const struct val *m, const char *key)
{
	if (!m || m->kind != V_STRUCT)
		return -1;
	for (uint32_t i = 0; i < m->n; i++)
		if (strcmp(m->u.members[i].key, key) == 0)
			return (int)i;
	return -1;
}

/* Relation maintenance: add/remove ref to/from target's derived set. */
static void rel_update(struct batch *b, int mcls, int mfield, const struct val *target,
		       const char *ref, bool add, uint64_t gen)
{
	if (is_null_ref(target))
		return;
	struct shadow *t = sh_get(b, mcls, target->u.s, false);
	if (!t || !t->exists || t->cls != mcls)
		return;
	const struct val *cur = t->cols[mfield];
	int idx = set_find_str(cur, ref);
	if (add) {
		if (idx >= 0)
			return;
		sh_setcol(b, t, mfield, set_with(cur, val_cstr_h(ref)));
	} else {
		if (idx < 0)
			return;
		sh_setcol(b, t, mfield, set_without(cur, idx));
	}
	sh_stamp(b, t, gen);
}

static void rel_all(struct batch *b, struct shadow *s, bool add, uint64_t gen)
{
	const struct idl_class *C = &idl_classes[s->cls];
	for (int f = 0; f < C->nfields; f++) {
		const struct idl_field *F = &C->fields[f];
		if (F->many_cls >= 0 && F->many_field >= 0)
			rel_update(b, F->many_cls, F->many_field, s->cols[f], s->ref, add, gen);
	}
}

static void err_handle(struct xerr *err, int cls, const char *ref)
{
	xerr_set(err, "HANDLE_INVALID", 2, idl_classes[cls].name, ref);
}

static struct shadow *sh_existing(struct batch *b, int cls, const char *ref, struct xerr *err)
{
	struct shadow *s = sh_get(b, cls, ref, false);
	if (!s || !s->exists || s->cls != cls) {
		err_handle(err, cls, ref);
		return NULL;
	}
	return s;
}

static int op_eval(struct batch *b, struct op *o, uint64_t gen, struct xerr *err)
{
	const struct idl_class *C = &idl_classes[o->cls];
	struct shadow *s;
	switch (o->kind) {
	case OP_INSERT: {
		s = sh_get(b, o->cls, o->ref, true);
		if (s->exists || s->cls != o->cls) {
			xerr_set(err, "DB_UNIQUENESS_CONSTRAINT_VIOLATION", 3, C->name, "_ref", o->ref);
			return -1;
		}
		/* values first (interned), then the uuid check */
		for (int f = 0; f < C->nfields; f++) {
			struct val *v = o->cols[f];
			o->cols[f] = NULL;
			if (db_field_derived(&C->fields[f])) {
				val_free(v);
				v = &val_empty_array;
			} else {
				v = db_intern(o->cls, f, v);
			}
			sh_setcol(b, s, f, v);
		}
		const char *u = sh_uuid(s);
		if (u && uuid_taken(b, o->cls, u, s)) {
			xerr_set(err, "DB_UNIQUENESS_CONSTRAINT_VIOLATION", 3, C->name, "uuid", u);
			return -1;
		}
		sh_save_state(b, s);
		s->reinserted = s->base != NULL;
		s->exists = true;
		s->touched = true;
		s->created = s->modified = gen;
		b->changed = true;
		uuid_overlay_add(b, s);
		rel_all(b, s, true, gen);
		return 0;
	}
	case OP_DELETE:
		if (!(s = sh_existing(b, o->cls, o->ref, err)))
			return -1;
		rel_all(b, s, false, gen);
		sh_save_state(b, s);
		s->exists = false;
		s->touched = true;
		s->reinserted = false;
		s->deleted_gen = gen;
		b->changed = true;
		return 0;
	case OP_TOUCH:
		if (!(s = sh_existing(b, o->cls, o->ref, err)))
			return -1;
		sh_stamp(b, s, gen);
		return 0;
	case OP_SET: {
		if (!(s = sh_existing(b, o->cls, o->ref, err)))
			return -1;
		const struct idl_field *F = &C->fields[o->field];
		struct val *v = db_intern(o->cls, o->field, o->v);
		o->v = NULL;
		if (val_equal(s->cols[o->field], v)) {
			val_free(v);
			return 0;
		}
		if (o->field == C->uuid_field && v->kind == V_STR && v->n &&
		    uuid_taken(b, o->cls, v->u.s, s)) {
			xerr_set(err, "DB_UNIQUENESS_CONSTRAINT_VIOLATION", 3, C->name, "uuid", v->u.s);
			val_free(v);
			return -1;
		}
		bool rel = F->many_cls >= 0 && F->many_field >= 0;
		if (rel)
			rel_update(b, F->many_cls, F->many_field, s->cols[o->field], s->ref, false, gen);
		sh_setcol(b, s, o->field, v);
		if (rel)
			rel_update(b, F->many_cls, F->many_field, v, s->ref, true, gen);
		if (o->field == C->uuid_field)
			uuid_overlay_add(b, s);
		sh_stamp(b, s, gen);
		return 0;
	}
	case OP_MAP_ADD: {
		if (!(s = sh_existing(b, o->cls, o->ref, err)))
			return -1;
		const struct val *cur = s->cols[o->field];
		if (map_find(cur, o->key) >= 0) {
			xerr_set(err, "MAP_DUPLICATE_KEY", 4, C->name, C->fields[o->field].column,
				 o->ref, o->key);
			return -1;
		}
		uint32_t n = cur && cur->kind == V_STRUCT ? cur->n : 0;
		struct val *nv = val_struct_h(n + 1);
		for (uint32_t i = 0; i < n; i++) {
			nv->u.members[i].key = xstrdup(cur->u.members[i].key);
			nv->u.members[i].klen = cur->u.members[i].klen;
			nv->u.members[i].v = val_dup_h(cur->u.members[i].v);
		}
		nv->u.members[n].key = xstrdup(o->key);
		nv->u.members[n].klen = (uint32_t)strlen(o->key);
		nv->u.members[n].v = o->v;
		o->v = NULL;
		sh_setcol(b, s, o->field, nv);
		sh_stamp(b, s, gen);
		return 0;
	}
	case OP_MAP_REMOVE: {
		if (!(s = sh_existing(b, o->cls, o->ref, err)))
			return -1;
		const struct val *cur = s->cols[o->field];
		int idx = map_find(cur, o->key);
		if (idx < 0)
			return 0;
		struct val *nv = &val_empty_struct;
		if (cur->n > 1) {
			nv = val_struct_h(cur->n - 1);
			for (uint32_t i = 0, j = 0; i < cur->n; i++) {
				if ((int)i == idx)
					continue;
				nv->u.members[j].key = xstrdup(cur->u.members[i].key);
				nv->u.members[j].klen = cur->u.members[i].klen;
				nv->u.members[j].v = val_dup_h(cur->u.members[i].v);
				j++;
			}
		}
		sh_setcol(b, s, o->field, nv);
		sh_stamp(b, s, gen);
		return 0;
	}
	case OP_SET_ADD: {
		if (!(s = sh_existing(b, o->cls, o->ref, err)))
			return -1;
		if (set_find(s->cols[o->field], o->v) >= 0)
			return 0;
		sh_setcol(b, s, o->field, set_with(s->cols[o->field], o->v));
		o->v = NULL;
		sh_stamp(b, s, gen);
		return 0;
	}
	case OP_SET_REMOVE: {
		if (!(s = sh_existing(b, o->cls, o->ref, err)))
			return -1;
		int idx = set_find(s->cols[o->field], o->v);
		if (idx < 0)
			return 0;
		sh_setcol(b, s, o->field, set_without(s->cols[o->field], idx));
		sh_stamp(b, s, gen);
		return 0;
	}
	}
	return 0;
}

/* ---- writing a batch to the store ---- */

static bool shadow_persist(const struct shadow *s)
{
	return s->touched && idl_classes[s->cls].persist;
}

static int store_batch(struct batch *b)
{
	for (struct shadow *s = b->shead; s; s = s->lnext) {
		if (!shadow_persist(s))
			continue;
		int rc = 0;
		if (s->base && (!s->exists || s->reinserted))
			rc = store_delete_row(s->cls, s->ref);
		if (rc == 0 && s->exists) {
			bool isnew = !s->base || s->reinserted;
			struct store_put p = {
				.cls = s->cls, .ref = s->ref, .created = s->created,
				.modified = s->modified, .cols = s->cols,
				.dirty = isnew ? NULL : s->dirty, .is_new = isnew,
			};
			rc = store_put_row(&p);
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int tomb_cmp(const void *a, const void *b)
{
	const struct db_tomb *x = a, *y = b;
	return x->gen < y->gen ? -1 : x->gen > y->gen;
}

/* Memory: install the batch (write lock held). */
static void apply_batch(struct batch *b)
{
	for (struct shadow *s = b->shead; s; s = s->lnext) {
		if (!s->touched)
			continue;
		int nf = idl_classes[s->cls].nfields;
		if (s->base && (!s->exists || s->reinserted)) {
			row_unlink(s->base);
			if (b->ntombs == b->captombs) {
				b->captombs = b->captombs ? b->captombs * 2 : 16;
				b->tombs = xrealloc(b->tombs, b->captombs * sizeof *b->tombs);
			}
			struct db_tomb *tb = &b->tombs[b->ntombs++];
			tb->cls = (int16_t)s->cls;
			tb->gen = s->deleted_gen;
			tb->created = s->base->created;
			memcpy(tb->ref, s->ref, sizeof tb->ref);
			for (int f = 0; f < nf; f++)
				if (!s->reinserted && BIT_TEST(s->owned, f))
					garbage(b, s->cols[f]);
			/* base's own columns */
			for (int f = 0; f < nf; f++)
				garbage(b, s->base->cols[f]);
			free(ROW_HDR(s->base));
			if (!s->exists)
				continue;
		}
		if (!s->exists) {     /* inserted and deleted within the batch */
			for (int f = 0; f < nf; f++)
				if (BIT_TEST(s->owned, f))
					garbage(b, s->cols[f]);
			continue;
		}
		if (!s->base || s->reinserted) {
			struct db_row *r = row_alloc(s->cls, s->ref);
			memcpy(r->cols, s->cols, (size_t)nf * sizeof *r->cols);
			r->created = s->created;
			r->modified = s->modified;
			row_link(r);
			chg_touch(r, b->gen);
			continue;
		}
		struct db_row *r = s->base;
		int uf = idl_classes[s->cls].uuid_field;
		bool reuuid = uf >= 0 && BIT_TEST(s->owned, uf);
		if (reuuid)
			uuid_index_del(r);
		for (int f = 0; f < nf; f++)
			if (BIT_TEST(s->owned, f) && r->cols[f] != s->cols[f]) {
				garbage(b, r->cols[f]);
				r->cols[f] = s->cols[f];
			}
		if (reuuid)
			uuid_index_add(r);
		r->modified = s->modified;
		chg_touch(r, b->gen);
	}
	if (b->ntombs > 1)
		qsort(b->tombs, b->ntombs, sizeof *b->tombs, tomb_cmp);
	for (size_t i = 0; i < b->ntombs; i++)
		tomb_add(b->tombs[i].cls, b->tombs[i].ref, b->tombs[i].created, b->tombs[i].gen);
}

static void batch_free(struct batch *b, bool applied)
{
	struct shadow *s, *nx;
	for (s = b->shead; s; s = nx) {
		nx = s->lnext;
		if (!applied) {
			int nf = idl_classes[s->cls].nfields;
			for (int f = 0; f < nf; f++)
				if (BIT_TEST(s->owned, f))
					val_free(s->cols[f]);
		}
		free(s->cols);
		free(s->owned);
		free(s->dirty);
		free(s);
	}
	for (size_t i = 0; i < b->ubn; i++) {
		struct uent *e = b->ub[i], *en;
		for (; e; e = en) {
			en = e->next;
			free(e);
		}
	}
	free(b->ub);
	free(b->sb);
	free(b->undo);
	free(b->tombs);
	for (size_t i = 0; i < b->ngarbage; i++)
		val_free(b->garbage[i]);
	free(b->garbage);
	memset(b, 0, sizeof *b);
}

static void process_batch(struct db_txn *list)
{
	struct batch b = { 0 };
	b.gen = D.gen;
	bool any_persist = false, any_change = false;
	for (struct db_txn *t = list; t; t = t->qnext) {
		uint64_t gen = b.gen + 1;
		b.changed = false;
		int rc = 0;
		for (int i = 0; i < t->n && rc == 0; i++)
			rc = op_eval(&b, &t->ops[i], gen, &t->err);
		undo_finish(&b, rc == 0);
		t->rc = rc;
		if (rc == 0 && b.changed) {
			b.gen = gen;
			any_change = true;
		}
	}
	if (!any_change)
		goto done;
	for (struct shadow *s = b.shead; s && !any_persist; s = s->lnext)
		any_persist = shadow_persist(s);
	if (D.persistent && (any_persist || b.gen >= D.stored_gen + GEN_SLACK / 2)) {
		int rc = store_begin();
		if (rc == 0 && any_persist)
			rc = store_batch(&b);
		if (rc == 0)
			rc = store_set_generation(b.gen);
		if (rc == 0)
			rc = store_commit();
		if (rc) {
			const char *msg = store_errmsg();
			store_rollback();
			for (struct db_txn *t = list; t; t = t->qnext)
				if (t->rc == 0) {
					t->rc = -1;
					xerr_set(&t->err, "INTERNAL_ERROR", 1,
						 msg ? msg : "database write failed");
				}
			batch_free(&b, false);
			return;
		}
		D.stored_gen = b.gen;
	}
	pthread_rwlock_wrlock(&D.lock);
	apply_batch(&b);
	__atomic_store_n(&D.gen, b.gen, __ATOMIC_RELEASE);
	pthread_rwlock_unlock(&D.lock);
	batch_free(&b, true);
	void (*hook)(uint64_t, void *);
	void *op;
	pthread_mutex_lock(&D.qmu);
	hook = D.hook;
	op = D.hook_opaque;
	pthread_mutex_unlock(&D.qmu);
	if (hook)
		hook(b.gen, op);
	return;
done:
	batch_free(&b, false);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Group commit with a short linger: the writers just woken are likely to
 * come back at once (a busy server, a client committing in a loop), so when
 * the last batch had several transactions the thread waits a little for the
 * queue to fill up to the number of writers it knows of before taking it.
 * The wait is bounded by a quarter of the last batch's duration (at most
 * LINGER_MAX_NS), so a lone writer pays nothing and a burst at most ~25%. */
#define LINGER_MAX_NS 250000u

static void *commit_main(void *arg)
{
	(void)arg;
	uint32_t want = 0;        /* writers believed active */
	uint64_t last_ns = 0;     /* duration of the last batch */
	pthread_mutex_lock(&D.qmu);
	for (;;) {
		while (!D.qhead && !D.stop)
			pthread_cond_wait(&D.qcv, &D.qmu);
		if (!D.qhead && D.stop)
			break;
		if (want >= 2 && D.qn < want && !D.stop) {
			uint64_t wait = last_ns / 4;
			if (wait > LINGER_MAX_NS)
				wait = LINGER_MAX_NS;
			uint64_t dl = mono_ns() + wait;
			struct timespec ts = { (time_t)(dl / 1000000000u), (long)(dl % 1000000000u) };
			while (D.qn < want && !D.stop)
				if (pthread_cond_timedwait(&D.qcv, &D.qmu, &ts) == ETIMEDOUT)
					break;
		}
		struct db_txn *list = D.qhead;
		uint32_t n = D.qn;
		D.qhead = D.qtail = NULL;
		D.qn = 0;
		pthread_mutex_unlock(&D.qmu);
		uint64_t t0 = mono_ns();
		process_batch(list);
		last_ns = mono_ns() - t0;
		pthread_mutex_lock(&D.qmu);
		for (struct db_txn *t = list, *nx; t; t = nx) {
			nx = t->qnext;
			t->done = true;
			pthread_cond_signal(&t->cv);
		}
		want = n > 1 ? n + D.qn : 0;
		if (want > 4096)
			want = 4096;
	}
	pthread_mutex_unlock(&D.qmu);
	return NULL;
}

int db_txn_commit(struct db_txn *t, struct xerr *err)
{
	if (!t)
		return 0;
	if (t->bad || !D.open) {
		if (err)
			xerr_set(err, "INTERNAL_ERROR", 1,
				 D.open ? "invalid database operation" : "database not open");
		db_txn_free(t);
		return -1;
	}
	if (t->n == 0) {
		db_txn_free(t);
		return 0;
	}
	pthread_cond_init(&t->cv, NULL);
	t->done = false;
	t->qnext = NULL;
	pthread_mutex_lock(&D.qmu);
	if (D.qtail)
		D.qtail->qnext = t;
	else
		D.qhead = t;
	D.qtail = t;
	D.qn++;
	pthread_cond_signal(&D.qcv);
	while (!t->done)
		pthread_cond_wait(&t->cv, &D.qmu);
	pthread_mutex_unlock(&D.qmu);
	pthread_cond_destroy(&t->cv);
	int rc = t->rc;
	if (rc && err)
		xerr_move(err, &t->err);
	db_txn_free(t);
	return rc ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* Open / load / close                                                 */

static void load_row(int cls, const char *ref, uint64_t created, uint64_t modified,
		     struct val **cols)
{
	if (mem_get_any(ref)) { /* duplicate ref: keep the first */
		for (int f = 0; f < idl_classes[cls].nfields; f++)
			val_free(cols[f]);
		return;
	}
	struct db_row *r = row_alloc(cls, ref);
	memcpy(r->cols, cols, (size_t)idl_classes[cls].nfields * sizeof *cols);
	r->created = created;
	r->modified = modified;
	row_link(r);
	chg_touch(r, 0); /* chg_gen is set to the loaded generation in db_open */
}

struct relpair {
	struct db_row *target;
	size_t order;
	const char *ref;
};

static int relpair_cmp(const void *a, const void *b)
{
	const struct relpair *x = a, *y = b;
	if (x->target != y->target)
		return x->target < y->target ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Recompute every derived relation set from the pointers (after loading). */
static void relations_rebuild(void)
{
	for (int c = 0; c < idl_nclasses; c++) {
		const struct idl_class *C = &idl_classes[c];
		if (!C->in_db)
			continue;
		for (int f = 0; f < C->nfields; f++) {
			const struct idl_field *F = &C->fields[f];
			if (F->many_cls < 0 || F->many_field < 0 || !cls_ok(F->many_cls))
				continue;
			size_t n = 0, cap = 0;
			struct relpair *v = NULL;
			for (struct rowhdr *h = D.t[c].head; h; h = h->next) {
				struct db_row *r = HDR_ROW(h);
				if (is_null_ref(r->cols[f]))
					continue;
				struct db_row *t = db_get(F->many_cls, r->cols[f]->u.s);
				if (!t)
					continue;
				if (n == cap) {
					cap = cap ? cap * 2 : 256;
					v = xrealloc(v, cap * sizeof *v);
				}
				v[n].target = t;
				v[n].order = n;
				v[n].ref = r->ref;
				n++;
			}
			if (n > 1)
				qsort(v, n, sizeof *v, relpair_cmp);
			for (size_t i = 0; i < n;) {
				size_t j = i;
				while (j < n && v[j].target == v[i].target)
					j++;
				struct val *set = val_array_h((uint32_t)(j - i));
				for (size_t k = i; k < j; k++)
					set->u.items[k - i] = val_cstr_h(v[k].ref);
				struct db_row *t = v[i].target;
				val_free(t->cols[F->many_field]);
				t->cols[F->many_field] = set;
				i = j;
			}
			free(v);
		}
	}
}

int db_open(const char *path)
{
	if (D.open)
		return -EBUSY;
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	/* the commit thread must not starve behind a stream of readers */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&D.lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	D.t = xcalloc((size_t)idl_nclasses, sizeof *D.t);
	build_shared();
	D.gen = 0;
	D.tomb_floor = 0;
	D.persistent = path != NULL;
	if (path) {
		uint64_t g = 0;
		int rc = store_open(path, &g);
		if (rc == 0)
			rc = store_load(load_row);
		if (rc) {
			store_close(false, 0);
			D.open = true; /* so that db_close frees */
			D.persistent = false;
			db_close();
			return rc;
		}
		D.gen = g;
		D.stored_gen = g;
		D.tomb_floor = g + 1; /* deletions before the restart are forgotten */
		for (int c = 0; c < idl_nclasses; c++)
			for (struct rowhdr *h = D.t[c].chg_head; h; h = h->chg_next)
				h->chg_gen = g;
	}
	D.open = true;
	relations_rebuild();
	D.stop = false;
	D.qhead = D.qtail = NULL;
	D.qn = 0;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&D.qcv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&D.thr, NULL, commit_main, NULL) != 0) {
		db_close();
		return -EAGAIN;
	}
	D.thr_running = true;
	return 0;
}

void db_close(void)
{
	if (!D.open)
		return;
	if (D.thr_running) {
		pthread_mutex_lock(&D.qmu);
		D.stop = true;
		pthread_cond_signal(&D.qcv);
		pthread_mutex_unlock(&D.qmu);
		pthread_join(D.thr, NULL);
		D.thr_running = false;
		pthread_cond_destroy(&D.qcv);
	}
	if (D.persistent)
		store_close(true, D.gen);
	D.persistent = false;
	for (int c = 0; c < idl_nclasses; c++) {
		struct rowhdr *h, *nx;
		for (h = D.t[c].head; h; h = nx) {
			nx = h->next;
			row_free(HDR_ROW(h));
		}
		free(D.t[c].ub);
	}
	free(D.t);
	D.t = NULL;
	free(D.rb);
	D.rb = NULL;
	D.rbn = D.rcount = 0;
	free(D.tombs);
	D.tombs = NULL;
	D.tcap = D.thead = D.tn = 0;
	free_shared();
	D.hook = NULL;
	D.hook_opaque = NULL;
	pthread_rwlock_destroy(&D.lock);
	D.open = false;
}
