/* events.c — event.from, event.inject, event.get_current_id and the legacy
 * event.register / unregister / next, as the original serves them
 * (ocaml/xapi/xapi_event.ml was read, not copied).
 *
 * Everything here runs on the libuv loop thread.  A call that has to wait is
 * parked (api_park) with a libuv timer; it holds no thread and no lock.  The
 * database's commit hook (commit thread) only calls uv_async_send; the loop
 * then compares the classes that changed since the last wake with each
 * waiter's subscription bitmask and answers the ones that match.
 *
 * event.from builds its reply from the rows' generation stamps (add: created
 * > token, mod: modified > token, del: tombstones), walking only the rows
 * changed since the token (db_next_changed), and takes every snapshot when
 * the reply is built, so several changes to one object give one event.
 * See docs/events.md.
 */
#include "api/events.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <openssl/evp.h>

#include "api/api.h"
#include "base/log.h"
#include "base/util.h"

#define CLS_WORDS 4 /* bitsets of class indexes: up to 256 classes */

enum { SUB_ALL, SUB_CLASS, SUB_OBJECT };

struct sub {
	int kind;
	int cls;      /* class index, -1 if the name is no class */
	char *cname;  /* lower-cased class text as given */
	char *ref;    /* SUB_OBJECT */
};

struct subs {
	struct sub *v;
	int n;
	bool all;
	bool task_only;
	uint64_t cbits[CLS_WORDS]; /* whole classes */
	uint64_t obits[CLS_WORDS]; /* classes with single-object subscriptions */
};

enum { OP_ADD, OP_MOD, OP_DEL };
static const char *const op_names[] = {"add", "mod", "del"};

enum { WK_FROM, WK_NEXT };
enum { WS_DELAY, WS_WAIT };

struct waiter {
	struct waiter *prev, *next;
	uv_timer_t timer;
	struct api_ctx *c;
	int kind, state;
	char session[DB_REF_MAX];
	/* event.from */
	struct subs S;
	int64_t since, msince;
	uint64_t deadline;        /* uv_now() ms */
};

/* legacy registration, one per session */
struct reg {
	struct reg *next;
	char session[DB_REF_MAX];
	struct subs S;
	int64_t last_id;
};

/* legacy queued event */
struct lev {
	int64_t id;
	int64_t ts;
	int16_t cls;
	uint8_t op;
	char ref[DB_REF_MAX];
	struct val *snap; /* NULL for del */
	size_t size;
};

static struct {
	uv_loop_t *loop;
	uv_async_t wake;
	bool ready;
	int delay_ms;
	int message_limit;
	int msg_cls, sess_cls;
	char **lname;             /* lower-cased class names */
	bool *ev_cls;             /* db classes that generate events (message apart) */
	uint64_t evmask[CLS_WORDS]; /* ev_cls + message */
	int *count_order;         /* valid_ref_counts: classes in the original's order */
	int ncount;
	struct waiter *head;
	uint64_t last_wake_gen;
	/* legacy */
	struct reg *regs;
	int nregs;
	struct lev *q;
	size_t qhead, qn, qcap, qbytes;
	int64_t next_id;          /* id of the next legacy event */
	int64_t forgotten;        /* highest dropped id, -1 if none */
	uint64_t legacy_gen;      /* db generation fed into the legacy queue */
	size_t qmax;              /* queue bound, bytes (estimated) */
} E = {.forgotten = -1};

#define BIT(bs, i) (((bs)[(i) >> 6] >> ((i) & 63)) & 1u)
#define SETBIT(bs, i) ((bs)[(i) >> 6] |= 1ull << ((i) & 63))

int events_message_limit(void)
{
	return E.message_limit;
}

/* ---- subscriptions ---- */

static int class_by_lname(const char *l)
{
	for (int c = 0; c < idl_nclasses; c++)
		if (strcmp(E.lname[c], l) == 0)
			return c;
	return -1;
}

/* Parse one subscription string as the original: "*", "<class>", or
 * "<class>/<ref>" split at the first '/', the class lower-cased.  (The
 * original never fails here, so EVENT_SUBSCRIPTION_PARSE_FAILURE is never
 * raised; unknown classes simply match nothing.) */
static void sub_parse(const char *s, struct sub *o)
{
	memset(o, 0, sizeof(*o));
	if (strcmp(s, "*") == 0) {
		o->kind = SUB_ALL;
		o->cls = -1;
		return;
	}
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	o->cname = util_malloc(n + 1);
	for (size_t i = 0; i < n; i++)
		o->cname[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
	o->cname[n] = 0;
	o->cls = class_by_lname(o->cname);
	if (slash) {
		o->kind = SUB_OBJECT;
		o->ref = util_strdup(slash + 1);
	} else {
		o->kind = SUB_CLASS;
	}
}

static void sub_free(struct sub *o)
{
	free(o->cname);
	free(o->ref);
}

static void subs_index(struct subs *S)
{
	S->all = false;
	memset(S->cbits, 0, sizeof(S->cbits));
	memset(S->obits, 0, sizeof(S->obits));
	S->task_only = true;
	for (int i = 0; i < S->n; i++) {
		struct sub *o = &S->v[i];
		if (o->kind == SUB_ALL) {
			S->all = true;
			S->task_only = false;
			continue;
		}
		if (strcmp(o->cname, "task") != 0)
			S->task_only = false;
		if (o->cls < 0)
			continue;
		if (o->kind == SUB_CLASS)
			SETBIT(S->cbits, o->cls);
		else
			SETBIT(S->obits, o->cls);
	}
}

static void subs_add(struct subs *S, const struct val *set)
{
	if (!set || set->kind != V_ARRAY || set->n == 0)
		return;
	S->v = util_realloc(S->v, sizeof(*S->v) * (size_t)(S->n + (int)set->n));
	/* the original prepends the new ones: keep that order */
	memmove(S->v + set->n, S->v, sizeof(*S->v) * (size_t)S->n);
	for (uint32_t i = 0; i < set->n; i++)
		sub_parse(set->u.items[i]->kind == V_STR ? set->u.items[i]->u.s : "", &S->v[i]);
	S->n += (int)set->n;
	subs_index(S);
}

static bool sub_equal(const struct sub *a, const struct sub *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == SUB_ALL)
		return true;
	if (strcmp(a->cname, b->cname) != 0)
		return false;
	return a->kind == SUB_CLASS || strcmp(a->ref, b->ref) == 0;
}

static void subs_remove(struct subs *S, const struct val *set)
{
	if (!set || set->kind != V_ARRAY)
		return;
	for (uint32_t i = 0; i < set->n; i++) {
		struct sub x;
		sub_parse(set->u.items[i]->kind == V_STR ? set->u.items[i]->u.s : "", &x);
		int k = 0;
		for (int j = 0; j < S->n; j++) {
			if (sub_equal(&S->v[j], &x))
				sub_free(&S->v[j]);
			else
				S->v[k++] = S->v[j];
		}
		S->n = k;
		sub_free(&x);
	}
	subs_index(S);
}

static void subs_free(struct subs *S)
{
	for (int i = 0; i < S->n; i++)
		sub_free(&S->v[i]);
	free(S->v);
	memset(S, 0, sizeof(*S));
}

static bool table_matches(const struct subs *S, int c)
{
	return S->all || BIT(S->cbits, c) || BIT(S->obits, c);
}

static bool object_matches(const struct subs *S, int c, const char *ref)
{
	if (S->all || BIT(S->cbits, c))
		return true;
	if (!BIT(S->obits, c))
		return false;
	for (int i = 0; i < S->n; i++)
		if (S->v[i].kind == SUB_OBJECT && S->v[i].cls == c && strcmp(S->v[i].ref, ref) == 0)
			return true;
	return false;
}

static bool subs_touch(const struct subs *S, const uint64_t *changed)
{
	for (int i = 0; i < CLS_WORDS; i++) {
		uint64_t mine = S->all ? E.evmask[i] : (S->cbits[i] | S->obits[i]);
		if (mine & changed[i])
			return true;
	}
	return false;
}

/* ---- tokens ---- */

/* OCaml's Int64.of_string: optional sign, 0x/0o/0b/0u prefixes, '_'
 * separators after the first digit. */
static bool parse_i64(const char *s, size_t n, int64_t *out)
{
	size_t i = 0;
	bool neg = false;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	int base = 10;
	if (i + 1 < n && s[i] == '0') {
		char p = s[i + 1];
		if (p == 'x' || p == 'X')
			base = 16;
		else if (p == 'o' || p == 'O')
			base = 8;
		else if (p == 'b' || p == 'B')
			base = 2;
		else if (p == 'u' || p == 'U')
			base = 10;
		if (p == 'x' || p == 'X' || p == 'o' || p == 'O' || p == 'b' || p == 'B' ||
		    p == 'u' || p == 'U')
			i += 2;
	}
	if (i >= n || s[i] == '_')
		return false;
	uint64_t v = 0;
	uint64_t lim = base == 10 ? (uint64_t)INT64_MAX + (neg ? 1 : 0) : UINT64_MAX;
	for (; i < n; i++) {
		int d;
		char ch = s[i];
		if (ch == '_')
			continue;
		if (ch >= '0' && ch <= '9')
			d = ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			d = ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			d = ch - 'A' + 10;
		else
			return false;
		if (d >= base)
			return false;
		if (v > (lim - (uint64_t)d) / (uint64_t)base)
			return false;
		v = v * (uint64_t)base + (uint64_t)d;
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

static bool token_parse(const char *t, int64_t *g, int64_t *m)
{
	if (!t[0]) {
		*g = *m = 0;
		return true;
	}
	const char *comma = strchr(t, ',');
	if (!comma || strchr(comma + 1, ','))
		return false;
	return parse_i64(t, (size_t)(comma - t), g) &&
	       parse_i64(comma + 1, strlen(comma + 1), m);
}

static void token_fmt(char out[48], int64_t g, int64_t m)
{
	snprintf(out, 48, "%020lld,%020lld", (long long)g, (long long)m);
}

/* ---- collecting event.from's events (read lock held) ---- */

struct ent {
	const struct db_row *row;   /* add/mod */
	const char *ref;
	int cls;
	uint8_t op;
	uint64_t gen;
};

struct evec {
	struct ent *v;
	size_t n, cap;
};

static void evec_push(struct evec *e, struct ent x)
{
	if (e->n == e->cap) {
		e->cap = e->cap ? e->cap * 2 : 64;
		e->v = util_realloc(e->v, e->cap * sizeof(*e->v));
	}
	e->v[e->n++] = x;
}

static void evec_reverse(struct evec *e, size_t from)
{
	for (size_t i = from, j = e->n; i + 1 < j; i++, j--) {
		struct ent t = e->v[i];
		e->v[i] = e->v[j - 1];
		e->v[j - 1] = t;
	}
}

struct coll {
	const struct subs *S;
	int64_t since, msince;
	bool msub;
	int64_t last, mgen;
	struct evec madd, mdel, add, mod, del;
};

static void coll_free(struct coll *k)
{
	free(k->madd.v);
	free(k->mdel.v);
	free(k->add.v);
	free(k->mod.v);
	free(k->del.v);
}

static int coll_tomb(const struct db_tomb *t, void *opaque)
{
	struct coll *k = opaque;
	int64_t gen = (int64_t)t->gen;
	if (t->cls == E.msg_cls) {
		if (k->msub && gen > k->msince) {
			evec_push(&k->mdel, (struct ent){.ref = t->ref, .cls = t->cls, .op = OP_DEL});
			if (gen > k->mgen)
				k->mgen = gen;
		}
		return 0;
	}
	if (gen <= k->since || !E.ev_cls[t->cls] || !object_matches(k->S, t->cls, t->ref))
		return 0;
	if (gen > k->last)
		k->last = gen;
	if ((int64_t)t->created <= k->since)
		evec_push(&k->del, (struct ent){.ref = t->ref, .cls = t->cls, .op = OP_DEL,
						.gen = t->gen});
	return 0;
}

static uint64_t clamp0(int64_t x)
{
	return x < 0 ? 0 : (uint64_t)x;
}

static void collect(struct coll *k)
{
	const struct subs *S = k->S;
	k->last = k->since;
	k->msub = table_matches(S, E.msg_cls);
	k->mgen = k->msub ? k->msince : 0;
	for (int c = 0; c < idl_nclasses; c++) {
		if (!E.ev_cls[c] || !table_matches(S, c) || (int64_t)db_class_gen(c) <= k->since)
			continue;
		size_t a0 = k->add.n, m0 = k->mod.n;
		for (struct db_row *r = db_next_changed(c, clamp0(k->since), NULL); r;
		     r = db_next_changed(c, clamp0(k->since), r)) {
			if ((int64_t)r->modified <= k->since || !object_matches(S, c, r->ref))
				continue;
			if ((int64_t)r->modified > k->last)
				k->last = (int64_t)r->modified;
			if ((int64_t)r->created > k->since)
				evec_push(&k->add, (struct ent){r, r->ref, c, OP_ADD, r->created});
			else
				evec_push(&k->mod, (struct ent){r, r->ref, c, OP_MOD, r->modified});
		}
		/* oldest change first */
		evec_reverse(&k->add, a0);
		evec_reverse(&k->mod, m0);
	}
	if (k->msub && (int64_t)db_class_gen(E.msg_cls) > k->msince) {
		size_t a0 = k->madd.n;
		for (struct db_row *r = db_next_changed(E.msg_cls, clamp0(k->msince), NULL); r;
		     r = db_next_changed(E.msg_cls, clamp0(k->msince), r)) {
			if ((int64_t)r->created <= k->msince)
				continue;
			evec_push(&k->madd, (struct ent){r, r->ref, E.msg_cls, OP_ADD, 0});
			if ((int64_t)r->created > k->mgen)
				k->mgen = (int64_t)r->created;
		}
		evec_reverse(&k->madd, a0);
	}
	int64_t tsince = k->since;
	if (k->msub && k->msince < tsince)
		tsince = k->msince;
	db_tombs_each(clamp0(tsince), coll_tomb, k);
}

static size_t coll_count(const struct coll *k)
{
	return k->madd.n + k->mdel.n + k->add.n + k->mod.n + k->del.n;
}

static void enc_event(struct enc *e, const char *id, const char *ts, int cls, int op,
		      const char *ref, const struct db_row *snap, const struct val *vsnap)
{
	enc_struct_begin(e);
	enc_member_plain(e, "id", 2);
	enc_cstr(e, id);
	enc_member_plain(e, "timestamp", 9);
	enc_cstr(e, ts);
	enc_member_plain(e, "class", 5);
	enc_cstr(e, E.lname[cls]);
	enc_member_plain(e, "operation", 9);
	enc_cstr(e, op_names[op]);
	enc_member_plain(e, "ref", 3);
	enc_cstr(e, ref);
	if (snap) {
		enc_member_plain(e, "snapshot", 8);
		api_write_record(e, snap);
	} else if (vsnap) {
		enc_member_plain(e, "snapshot", 8);
		enc_val(e, vsnap);
	}
	enc_struct_end(e);
}

static void enc_group(struct enc *e, const struct evec *g)
{
	char id[24];
	for (size_t i = 0; i < g->n; i++) {
		const struct ent *x = &g->v[i];
		if (x->cls == E.msg_cls)
			snprintf(id, sizeof(id), "0");
		else
			snprintf(id, sizeof(id), "%llu", (unsigned long long)x->gen);
		enc_event(e, id, "0.0", x->cls, x->op, x->ref, x->op == OP_DEL ? NULL : x->row, NULL);
	}
}

static void encode_from(struct enc *e, struct coll *k)
{
	enc_struct_begin(e);
	enc_member_plain(e, "events", 6);
	enc_array_begin(e);
	enc_group(e, &k->mdel);
	enc_group(e, &k->madd);
	enc_group(e, &k->add);
	enc_group(e, &k->mod);
	enc_group(e, &k->del);
	enc_array_end(e);
	enc_member_plain(e, "valid_ref_counts", 16);
	enc_struct_begin(e);
	for (int i = 0; i < E.ncount; i++) {
		int c = E.count_order[i];
		enc_member_plain(e, E.lname[c], strlen(E.lname[c]));
		enc_i4(e, (int32_t)db_count(c));
	}
	enc_struct_end(e);
	enc_member_plain(e, "token", 5);
	char tok[48];
	token_fmt(tok, k->last, k->msub ? k->mgen : 0);
	enc_cstr(e, tok);
	enc_struct_end(e);
}

/* Scan; if anything matched (or force), write the reply and return true. */
static bool from_try(struct api_ctx *c, const struct subs *S, int64_t since, int64_t msince,
		     bool force)
{
	struct coll k = {.S = S, .since = since, .msince = msince};
	db_rdlock();
	collect(&k);
	bool done = force || coll_count(&k) > 0;
	if (done)
		encode_from(c->out, &k);
	db_unlock();
	coll_free(&k);
	return done;
}

/* ---- waiters ---- */

static void waiter_closed(uv_handle_t *h)
{
	struct waiter *w = h->data;
	subs_free(&w->S);
	free(w);
}

static void waiter_link(struct waiter *w)
{
	w->prev = NULL;
	w->next = E.head;
	if (E.head)
		E.head->prev = w;
	E.head = w;
}

/* Answer a parked call (its value or error already set) and free the waiter. */
static void waiter_finish(struct waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		E.head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	uv_timer_stop(&w->timer);
	api_resume(w->c);
	uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void on_timer(uv_timer_t *t);
static bool next_try(struct waiter *w);

static struct waiter *waiter_new(struct api_ctx *c, int kind)
{
	struct waiter *w = util_calloc(1, sizeof(*w));
	w->c = c;
	w->kind = kind;
	snprintf(w->session, sizeof(w->session), "%s", c->who.session);
	uv_timer_init(E.loop, &w->timer);
	w->timer.data = w;
	waiter_link(w);
	api_park(c);
	return w;
}

static void waiter_timer(struct waiter *w, uint64_t ms)
{
	uv_timer_start(&w->timer, on_timer, ms, 0);
}

static void from_step(struct waiter *w)
{
	uint64_t now = uv_now(E.loop);
	bool expired = now >= w->deadline;
	if (from_try(w->c, &w->S, w->since, w->msince, expired)) {
		waiter_finish(w);
		return;
	}
	w->state = WS_WAIT;
	waiter_timer(w, w->deadline - now);
}

static void on_timer(uv_timer_t *t)
{
	struct waiter *w = t->data;
	if (w->kind == WK_FROM) {
		from_step(w);
	} else {
		if (next_try(w))
			waiter_finish(w);
		else
			w->state = WS_WAIT;
	}
}

/* ---- event.from ---- */

static void ev_from(struct api_ctx *c)
{
	const char *token = api_str(c, 2);
	int64_t g, m;
	if (!token_parse(token, &g, &m)) {
		api_fail(c, "EVENT_FROM_TOKEN_PARSE_FAILURE", 1, token);
		return;
	}
	double timeout = c->params[3] && c->params[3]->kind == V_DOUBLE ? c->params[3]->u.d : 0;
	/* as Clock.Timer.s_to_span: what it cannot represent means 24 hours */
	if (!(timeout >= 0) || timeout * 1e9 > 9007199254740992.0)
		timeout = 86400;
	uint64_t tmo_ms = (uint64_t)ceil(timeout * 1000.0);
	struct subs S = {0};
	subs_add(&S, c->params[1]);
	int delay = S.task_only ? 0 : E.delay_ms;
	if (delay == 0 && from_try(c, &S, g, m, tmo_ms == 0)) {
		subs_free(&S);
		return;
	}
	struct waiter *w = waiter_new(c, WK_FROM);
	w->S = S;
	w->since = g;
	w->msince = m;
	w->deadline = uv_now(E.loop) + tmo_ms;
	w->state = delay ? WS_DELAY : WS_WAIT;
	waiter_timer(w, delay ? (uint64_t)delay : tmo_ms);
}

/* ---- legacy event.register / unregister / next ---- */

static struct reg *reg_find(const char *session)
{
	for (struct reg *r = E.regs; r; r = r->next)
		if (strcmp(r->session, session) == 0)
			return r;
	return NULL;
}

static size_t val_size(const struct val *v)
{
	size_t n = 8;
	switch (v->kind) {
	case V_STR:
		return n + v->n;
	case V_ARRAY:
		for (uint32_t i = 0; i < v->n; i++)
			n += val_size(v->u.items[i]);
		return n;
	case V_STRUCT:
		for (uint32_t i = 0; i < v->n; i++)
			n += 6 + v->u.members[i].klen + val_size(v->u.members[i].v);
		return n;
	default:
		return n + 8;
	}
}

/* The record of a row as a heap value (interned column values are shared
 * with the database; they live until db_close). */
static struct val *row_snapshot(const struct db_row *r)
{
	const struct idl_class *C = &idl_classes[r->cls];
	uint32_t n = 0;
	for (int i = 0; i < C->nfields; i++)
		if (!C->fields[i].internal)
			n++;
	struct val *s = val_struct_h(n);
	uint32_t k = 0;
	for (int i = 0; i < C->nfields; i++) {
		const struct idl_field *f = &C->fields[i];
		if (f->internal)
			continue;
		const struct val *v = r->cols[i];
		if (f->ty->kind == TY_OPTION && (!v || v->kind == V_NIL))
			continue;
		s->u.members[k].key = util_strdup(f->name);
		s->u.members[k].klen = (uint32_t)f->name_len;
		s->u.members[k].v = val_dup_h(v ? v : &val_empty_str);
		k++;
	}
	s->n = k;
	return s;
}

static void legacy_drop_oldest(void)
{
	struct lev *o = &E.q[E.qhead];
	E.forgotten = o->id;
	E.qbytes -= o->size;
	val_free(o->snap);
	E.qhead = (E.qhead + 1) % E.qcap;
	E.qn--;
}

static void legacy_push(int cls, int op, const char *ref, const struct db_row *row)
{
	if (E.qn == E.qcap) {
		size_t nc = E.qcap ? E.qcap * 2 : 64;
		struct lev *nq = util_calloc(nc, sizeof(*nq));
		for (size_t i = 0; i < E.qn; i++)
			nq[i] = E.q[(E.qhead + i) % E.qcap];
		free(E.q);
		E.q = nq;
		E.qcap = nc;
		E.qhead = 0;
	}
	struct lev *x = &E.q[(E.qhead + E.qn) % E.qcap];
	memset(x, 0, sizeof(*x));
	x->id = E.next_id++;
	x->ts = util_now();
	x->cls = (int16_t)cls;
	x->op = (uint8_t)op;
	snprintf(x->ref, sizeof(x->ref), "%s", ref);
	x->snap = row ? row_snapshot(row) : NULL;
	x->size = 120 + (x->snap ? val_size(x->snap) : 0);
	E.qn++;
	E.qbytes += x->size;
	while (E.qbytes > E.qmax && E.qn > 1)
		legacy_drop_oldest();
}

static bool legacy_wanted(int cls, const char *ref)
{
	for (struct reg *r = E.regs; r; r = r->next)
		if (object_matches(&r->S, cls, ref))
			return true;
	return false;
}

struct lfeed {
	struct evec v;
	uint64_t since;
};

static int lfeed_tomb(const struct db_tomb *t, void *opaque)
{
	struct lfeed *f = opaque;
	if (t->cls == E.msg_cls || E.ev_cls[t->cls])
		evec_push(&f->v, (struct ent){.ref = t->ref, .cls = t->cls, .op = OP_DEL,
					      .gen = t->gen});
	return 0;
}

static int ent_gen_cmp(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;
	return x->gen < y->gen ? -1 : x->gen > y->gen;
}

/* Queue the changes since the last feed for the registered sessions. */
static void legacy_feed(void)
{
	if (!E.nregs)
		return;
	db_rdlock();
	uint64_t g = db_generation();
	if (g <= E.legacy_gen) {
		db_unlock();
		return;
	}
	struct lfeed f = {.since = E.legacy_gen};
	for (int c = 0; c < idl_nclasses; c++) {
		if ((!E.ev_cls[c] && c != E.msg_cls) || db_class_gen(c) <= f.since)
			continue;
		for (struct db_row *r = db_next_changed(c, f.since, NULL); r;
		     r = db_next_changed(c, f.since, r)) {
			if (r->modified <= f.since)
				continue;
			bool add = r->created > f.since;
			if (c == E.msg_cls && !add)
				continue;
			evec_push(&f.v, (struct ent){r, r->ref, c, add ? OP_ADD : OP_MOD,
						     r->modified});
		}
	}
	db_tombs_each(f.since, lfeed_tomb, &f);
	qsort(f.v.v, f.v.n, sizeof(*f.v.v), ent_gen_cmp);
	for (size_t i = 0; i < f.v.n; i++) {
		struct ent *x = &f.v.v[i];
		if (legacy_wanted(x->cls, x->ref))
			legacy_push(x->cls, x->op, x->ref, x->op == OP_DEL ? NULL : x->row);
	}
	E.legacy_gen = g;
	db_unlock();
	free(f.v.v);
}

static struct reg *reg_get(const char *session)
{
	struct reg *r = reg_find(session);
	if (r)
		return r;
	if (E.nregs == 0) {
		db_rdlock();
		E.legacy_gen = db_generation();
		db_unlock();
	} else {
		legacy_feed();
	}
	r = util_calloc(1, sizeof(*r));
	snprintf(r->session, sizeof(r->session), "%s", session);
	r->last_id = E.next_id;
	r->next = E.regs;
	E.regs = r;
	E.nregs++;
	return r;
}

static void reg_drop(const char *session)
{
	for (struct reg **pp = &E.regs; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->session, session) != 0)
			continue;
		struct reg *r = *pp;
		*pp = r->next;
		subs_free(&r->S);
		free(r);
		E.nregs--;
		return;
	}
}

static void ev_register(struct api_ctx *c)
{
	struct reg *r = reg_get(c->who.session);
	subs_add(&r->S, c->params[1]);
	enc_void(c->out);
}

static void ev_unregister(struct api_ctx *c)
{
	struct reg *r = reg_get(c->who.session);
	subs_remove(&r->S, c->params[1]);
	enc_void(c->out);
}

static void trackid(const char *session, char out[48])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	EVP_Digest(session, strlen(session), md, &n, EVP_md5(), NULL);
	int k = snprintf(out, 48, "trackid=");
	for (unsigned i = 0; i < n && k + 2 < 48; i++)
		k += snprintf(out + k, (size_t)(48 - k), "%02x", md[i]);
}

/* Take the session's range of new events; answer and return true if some
 * match (or they were lost); false to keep waiting. */
static bool next_try(struct waiter *w)
{
	struct reg *r = reg_find(w->session);
	if (!r) { /* unregistered by a session loss: answered elsewhere */
		api_fail(w->c, "SESSION_INVALID", 1, w->session);
		return true;
	}
	legacy_feed();
	int64_t start = r->last_id, end = E.next_id;
	r->last_id = end;
	if (start == end)
		return false;
	if (E.forgotten >= start) {
		api_fail(w->c, "EVENTS_LOST", 0);
		return true;
	}
	size_t nrel = 0;
	for (size_t i = 0; i < E.qn; i++) {
		struct lev *x = &E.q[(E.qhead + i) % E.qcap];
		if (x->id >= start && x->id < end && object_matches(&r->S, x->cls, x->ref))
			nrel++;
	}
	if (!nrel)
		return false;
	struct enc *e = w->c->out;
	enc_array_begin(e);
	for (size_t i = 0; i < E.qn; i++) {
		struct lev *x = &E.q[(E.qhead + i) % E.qcap];
		if (x->id < start || x->id >= end || !object_matches(&r->S, x->cls, x->ref))
			continue;
		char id[24], ts[32];
		snprintf(id, sizeof(id), "%lld", (long long)x->id);
		snprintf(ts, sizeof(ts), "%lld.", (long long)x->ts); /* OCaml's string_of_float */
		enc_event(e, id, ts, x->cls, x->op, x->ref, NULL, x->snap);
	}
	enc_array_end(e);
	return true;
}

static void ev_next(struct api_ctx *c)
{
	if (!reg_find(c->who.session)) {
		char t[48];
		trackid(c->who.session, t);
		api_fail(c, "SESSION_NOT_REGISTERED", 1, t);
		return;
	}
	struct waiter *w = waiter_new(c, WK_NEXT);
	/* the original waits 200 ms before looking (four times event.from's delay) */
	w->state = WS_DELAY;
	waiter_timer(w, (uint64_t)E.delay_ms * 4);
}

static void ev_get_current_id(struct api_ctx *c)
{
	enc_int(c->out, E.next_id);
}

/* ---- event.inject (on a worker: it commits) ---- */

static void ev_inject(struct api_ctx *c)
{
	const char *cls = api_str(c, 1), *ref = api_str(c, 2);
	db_rdlock();
	struct db_row *r = db_get_any(ref);
	int k = r ? r->cls : -1;
	db_unlock();
	if (k < 0 || k == E.msg_cls || strcmp(idl_classes[k].name, cls) != 0) {
		api_fail(c, "HANDLE_INVALID", 2, cls, ref);
		return;
	}
	struct db_txn *t = db_txn_new();
	db_txn_touch(t, k, ref);
	if (api_commit(c, t) < 0)
		return;
	db_rdlock();
	r = db_get(k, ref);
	uint64_t gen = r ? r->modified : db_generation();
	db_unlock();
	char tok[48];
	token_fmt(tok, (int64_t)gen - 1, 0);
	enc_cstr(c->out, tok);
}

/* ---- waking ---- */

static void check_sessions(void)
{
	int n = 0;
	struct waiter **dead = NULL;
	db_rdlock();
	for (struct waiter *w = E.head; w; w = w->next)
		if (!db_get(E.sess_cls, w->session)) {
			dead = util_realloc(dead, sizeof(*dead) * (size_t)(n + 1));
			dead[n++] = w;
		}
	char (*gone)[DB_REF_MAX] = NULL;
	int ng = 0;
	for (struct reg *r = E.regs; r; r = r->next)
		if (!db_get(E.sess_cls, r->session)) {
			gone = util_realloc(gone, sizeof(*gone) * (size_t)(ng + 1));
			memcpy(gone[ng++], r->session, DB_REF_MAX);
		}
	db_unlock();
	for (int i = 0; i < n; i++) {
		api_fail(dead[i]->c, "SESSION_INVALID", 1, dead[i]->session);
		waiter_finish(dead[i]);
	}
	for (int i = 0; i < ng; i++)
		reg_drop(gone[i]);
	free(dead);
	free(gone);
}

static void on_wake(uv_async_t *h)
{
	(void)h;
	uint64_t changed[CLS_WORDS] = {0};
	db_rdlock();
	uint64_t g = db_generation();
	for (int c = 0; c < idl_nclasses; c++)
		if (db_class_gen(c) > E.last_wake_gen)
			SETBIT(changed, c);
	db_unlock();
	if (g == E.last_wake_gen)
		return;
	E.last_wake_gen = g;
	if (BIT(changed, E.sess_cls))
		check_sessions();
	legacy_feed();
	struct waiter *nx;
	for (struct waiter *w = E.head; w; w = nx) {
		nx = w->next;
		if (w->state != WS_WAIT)
			continue;
		if (w->kind == WK_FROM) {
			if (!subs_touch(&w->S, changed))
				continue;
			if (E.delay_ms > 0) {
				w->state = WS_DELAY;
				waiter_timer(w, (uint64_t)E.delay_ms);
			} else {
				from_step(w);
			}
		} else {
			struct reg *r = reg_find(w->session);
			if (!r || r->last_id == E.next_id)
				continue;
			if (E.delay_ms > 0) {
				w->state = WS_DELAY;
				waiter_timer(w, (uint64_t)E.delay_ms);
			} else if (next_try(w)) {
				waiter_finish(w);
			}
		}
	}
}

static void commit_hook(uint64_t gen, void *opaque)
{
	(void)gen;
	(void)opaque;
	uv_async_send(&E.wake);
}

/* ---- set-up ---- */

static int count_cmp(const void *a, const void *b)
{
	/* the original folds over its table map (names in byte order) and
	 * prepends: reverse byte order of the class names */
	return -strcmp(idl_classes[*(const int *)a].name, idl_classes[*(const int *)b].name);
}

int events_init(uv_loop_t *loop, const struct events_config *cfg)
{
	if (idl_nclasses > CLS_WORDS * 64) {
		log_err("events: too many classes (%d)", idl_nclasses);
		return -1;
	}
	E.loop = loop;
	E.delay_ms = cfg->delay_ms < 0 ? 0 : cfg->delay_ms;
	E.message_limit = cfg->message_limit > 0 ? cfg->message_limit : 10000;
	E.qmax = cfg->legacy_queue_bytes > 0 ? (size_t)cfg->legacy_queue_bytes : 10000000;
	E.msg_cls = idl_class_find("message");
	E.sess_cls = idl_class_find("session");
	E.lname = util_calloc((size_t)idl_nclasses, sizeof(*E.lname));
	E.ev_cls = util_calloc((size_t)idl_nclasses, sizeof(*E.ev_cls));
	E.count_order = util_calloc((size_t)idl_nclasses, sizeof(*E.count_order));
	for (int c = 0; c < idl_nclasses; c++) {
		const char *n = idl_classes[c].name;
		E.lname[c] = util_strdup(n);
		for (char *p = E.lname[c]; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p + 32);
		if (!idl_classes[c].in_db || c == E.msg_cls)
			continue;
		E.count_order[E.ncount++] = c;
		/* the original's gen_events=false classes */
		bool quiet = strcmp(n, "session") == 0 || strcmp(n, "user") == 0 ||
			     strcmp(n, "secret") == 0;
		if (!quiet) {
			E.ev_cls[c] = true;
			SETBIT(E.evmask, c);
		}
	}
	SETBIT(E.evmask, E.msg_cls);
	qsort(E.count_order, (size_t)E.ncount, sizeof(int), count_cmp);
	if (cfg->deletions_kept)
		db_set_tomb_max(cfg->deletions_kept);
	uv_async_init(loop, &E.wake, on_wake);
	E.last_wake_gen = db_generation();
	E.ready = true;
	db_set_commit_hook(commit_hook, NULL);
	return 0;
}

const struct api_impl event_impls[] = {
	{"event.from", ev_from, true},
	{"event.next", ev_next, true},
	{"event.register", ev_register, true},
	{"event.unregister", ev_unregister, true},
	{"event.get_current_id", ev_get_current_id, true},
	{"event.inject", ev_inject, false},
	{NULL, NULL, false},
};
