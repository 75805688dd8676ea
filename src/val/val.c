/* val.c — value tree constructors, copy, free, comparison and datetime text.
 *
 * Layout: every constructor allocates the node and its payload in ONE block
 * (string bytes, item pointers or members follow the struct val), so a heap
 * value costs one malloc and val_free() one free per node.  Struct member keys
 * of heap structs are separate allocations (the caller strdup()s them, see
 * val.h) and are freed with the struct.
 */
#include "val/val.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"

/* ---- singletons ---- */

struct val val_nil = { .kind = V_NIL, .flags = VAL_STATIC };
struct val val_empty_str = { .kind = V_STR, .flags = VAL_STATIC, .n = 0, .u.s = "" };
struct val val_true = { .kind = V_BOOL, .flags = VAL_STATIC, .u.b = true };
struct val val_false = { .kind = V_BOOL, .flags = VAL_STATIC, .u.b = false };
struct val val_zero = { .kind = V_INT, .flags = VAL_STATIC, .u.i = 0 };
struct val val_empty_array = { .kind = V_ARRAY, .flags = VAL_STATIC, .n = 0, .u.items = NULL };
struct val val_empty_struct = { .kind = V_STRUCT, .flags = VAL_STATIC, .n = 0, .u.members = NULL };

/* ---- heap ---- */

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fputs("cxapi: out of memory\n", stderr);
		abort();
	}
	return p;
}

static void *xcalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (!p) {
		fputs("cxapi: out of memory\n", stderr);
		abort();
	}
	return p;
}

struct val *val_str_h(const char *s, size_t n)
{
	if (n > UINT32_MAX)
		abort(); /* our own bug: callers bound lengths long before */
	struct val *v = xmalloc(sizeof *v + n + 1);
	char *d = (char *)(v + 1);
	if (n)
		memcpy(d, s, n);
	d[n] = 0;
	v->kind = V_STR;
	v->flags = 0;
	v->n = (uint32_t)n;
	v->u.s = d;
	return v;
}

struct val *val_cstr_h(const char *s)
{
	return val_str_h(s, strlen(s));
}

static struct val *scalar_h(uint8_t kind)
{
	struct val *v = xmalloc(sizeof *v);
	v->kind = kind;
	v->flags = 0;
	v->n = 0;
	return v;
}

struct val *val_int_h(int64_t i)
{
	struct val *v = scalar_h(V_INT);
	v->u.i = i;
	return v;
}

struct val *val_double_h(double d)
{
	struct val *v = scalar_h(V_DOUBLE);
	v->u.d = d;
	return v;
}

struct val *val_bool_h(bool b)
{
	return b ? &val_true : &val_false;
}

struct val *val_datetime_h(int64_t t)
{
	struct val *v = scalar_h(V_DATETIME);
	v->u.i = t;
	return v;
}

struct val *val_array_h(uint32_t n)
{
	struct val *v = xcalloc(sizeof *v + (size_t)n * sizeof(struct val *));
	v->kind = V_ARRAY;
	v->n = n;
	v->u.items = (struct val **)(v + 1);
	return v;
}

struct val *val_struct_h(uint32_t n)
{
	struct val *v = xcalloc(sizeof *v + (size_t)n * sizeof(struct val_member));
	v->kind = V_STRUCT;
	v->n = n;
	v->u.members = (struct val_member *)(v + 1);
	return v;
}

struct val *val_dup_h(const struct val *v)
{
	if (!v)
		return NULL;
	if (v->flags & VAL_STATIC)
		return (struct val *)v; /* immutable singletons are shared */
	struct val *r;
	switch (v->kind) {
	case V_STR:
		return val_str_h(v->u.s, v->n);
	case V_ARRAY:
		r = val_array_h(v->n);
		for (uint32_t i = 0; i < v->n; i++)
			r->u.items[i] = val_dup_h(v->u.items[i]);
		return r;
	case V_STRUCT:
		r = val_struct_h(v->n);
		for (uint32_t i = 0; i < v->n; i++) {
			const struct val_member *m = &v->u.members[i];
			struct val_member *d = &r->u.members[i];
			if (m->key) {
				char *k = xmalloc((size_t)m->klen + 1);
				memcpy(k, m->key, m->klen);
				k[m->klen] = 0;
				d->key = k;
			}
			d->klen = m->klen;
			d->v = val_dup_h(m->v);
		}
		return r;
	case V_BOOL:
		return val_bool_h(v->u.b);
	default:
		r = scalar_h(v->kind);
		r->u = v->u;
		return r;
	}
}

void val_free(struct val *v)
{
	if (!v || (v->flags & VAL_STATIC))
		return;
	if (v->kind == V_ARRAY) {
		for (uint32_t i = 0; i < v->n; i++)
			val_free(v->u.items[i]);
	} else if (v->kind == V_STRUCT) {
		for (uint32_t i = 0; i < v->n; i++) {
			free((char *)v->u.members[i].key);
			val_free(v->u.members[i].v);
		}
	}
	free(v);
}

/* ---- arena ---- */

struct val *val_str_a(struct arena *a, const char *s, size_t n)
{
	if (n > UINT32_MAX)
		return NULL;
	struct val *v = arena_alloc(a, sizeof *v + n + 1);
	if (!v)
		return NULL;
	char *d = (char *)(v + 1);
	if (n)
		memcpy(d, s, n);
	d[n] = 0;
	v->kind = V_STR;
	v->flags = 0;
	v->n = (uint32_t)n;
	v->u.s = d;
	return v;
}

static struct val *scalar_a(struct arena *a, uint8_t kind)
{
	struct val *v = arena_alloc(a, sizeof *v);
	if (v) {
		v->kind = kind;
		v->flags = 0;
		v->n = 0;
	}
	return v;
}

struct val *val_int_a(struct arena *a, int64_t i)
{
	struct val *v = scalar_a(a, V_INT);
	if (v)
		v->u.i = i;
	return v;
}

struct val *val_double_a(struct arena *a, double d)
{
	struct val *v = scalar_a(a, V_DOUBLE);
	if (v)
		v->u.d = d;
	return v;
}

struct val *val_datetime_a(struct arena *a, int64_t t)
{
	struct val *v = scalar_a(a, V_DATETIME);
	if (v)
		v->u.i = t;
	return v;
}

struct val *val_array_a(struct arena *a, uint32_t n)
{
	struct val *v = arena_calloc(a, sizeof *v + (size_t)n * sizeof(struct val *));
	if (!v)
		return NULL;
	v->kind = V_ARRAY;
	v->n = n;
	v->u.items = (struct val **)(v + 1);
	return v;
}

struct val *val_struct_a(struct arena *a, uint32_t n)
{
	struct val *v = arena_calloc(a, sizeof *v + (size_t)n * sizeof(struct val_member));
	if (!v)
		return NULL;
	v->kind = V_STRUCT;
	v->n = n;
	v->u.members = (struct val_member *)(v + 1);
	return v;
}

/* ---- lookup / comparison ---- */

struct val *val_struct_get(const struct val *st, const char *key)
{
	if (!st || st->kind != V_STRUCT || !key)
		return NULL;
	size_t kl = strlen(key);
	for (uint32_t i = 0; i < st->n; i++) {
		const struct val_member *m = &st->u.members[i];
		if (m->klen == kl && m->key && memcmp(m->key, key, kl) == 0)
			return m->v;
	}
	return NULL;
}

static const struct val *member_find(const struct val *st, const char *key, uint32_t kl)
{
	for (uint32_t i = 0; i < st->n; i++) {
		const struct val_member *m = &st->u.members[i];
		if (m->klen == kl && (kl == 0 || memcmp(m->key, key, kl) == 0))
			return m->v ? m->v : &val_nil;
	}
	return NULL;
}

/* Deep equality.  V_INT and V_I4 compare by value; doubles with ==, except
 * that two NaNs are equal (so a stored value equals its own copy); structs
 * are compared as maps (member order does not matter, keys are unique). */
bool val_equal(const struct val *a, const struct val *b)
{
	if (!a)
		a = &val_nil;
	if (!b)
		b = &val_nil;
	if (a == b)
		return true;
	bool ai = a->kind == V_INT || a->kind == V_I4;
	bool bi = b->kind == V_INT || b->kind == V_I4;
	if (ai && bi)
		return a->u.i == b->u.i;
	if (a->kind != b->kind)
		return false;
	switch (a->kind) {
	case V_NIL:
		return true;
	case V_STR:
		return a->n == b->n && (a->n == 0 || memcmp(a->u.s, b->u.s, a->n) == 0);
	case V_DATETIME:
		return a->u.i == b->u.i;
	case V_DOUBLE:
		return a->u.d == b->u.d || (isnan(a->u.d) && isnan(b->u.d));
	case V_BOOL:
		return a->u.b == b->u.b;
	case V_ARRAY:
		if (a->n != b->n)
			return false;
		for (uint32_t i = 0; i < a->n; i++)
			if (!val_equal(a->u.items[i], b->u.items[i]))
				return false;
		return true;
	case V_STRUCT:
		if (a->n != b->n)
			return false;
		for (uint32_t i = 0; i < a->n; i++) {
			const struct val_member *ma = &a->u.members[i];
			const struct val_member *mb = &b->u.members[i];
			const struct val *other;
			/* fast path: same order */
			if (ma->klen == mb->klen &&
			    (ma->klen == 0 || memcmp(ma->key, mb->key, ma->klen) == 0))
				other = mb->v ? mb->v : &val_nil;
			else
				other = member_find(b, ma->key, ma->klen);
			if (!other || !val_equal(ma->v, other))
				return false;
		}
		return true;
	default:
		return false;
	}
}

/* ---- datetime ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date, and back
 * (H. Hinnant's civil calendar algorithms; exact for all int64 ranges we use). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range with 4-digit years. */
#define DT_MIN (-62167219200LL)
#define DT_MAX (253402300799LL)

static inline void put2(char *p, unsigned v)
{
	p[0] = (char)('0' + v / 10);
	p[1] = (char)('0' + v % 10);
}

/* Times outside years 0000..9999 are clamped so the text keeps its fixed width. */
void val_datetime_fmt(int64_t t, char out[24])
{
	if (t < DT_MIN)
		t = DT_MIN;
	if (t > DT_MAX)
		t = DT_MAX;
	int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
	int64_t secs = t - days * 86400;
	int64_t y;
	unsigned mo, d;
	civil_from_days(days, &y, &mo, &d);
	unsigned yy = (unsigned)y;
	put2(out, yy / 100);
	put2(out + 2, yy % 100);
	put2(out + 4, mo);
	put2(out + 6, d);
	out[8] = 'T';
	put2(out + 9, (unsigned)(secs / 3600));
	out[11] = ':';
	put2(out + 12, (unsigned)(secs / 60 % 60));
	out[14] = ':';
	put2(out + 15, (unsigned)(secs % 60));
	out[17] = 'Z';
	out[18] = 0;
}

static bool digits(const char *s, size_t n, unsigned *out)
{
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*out = v;
	return true;
}

static bool leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned mdays(int64_t y, unsigned m)
{
	static const unsigned char dm[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	return m == 2 && leap(y) ? 29 : dm[m - 1];
}

/* Accepted (as ocaml/libs/clock/date.ml does):
 *   YYYYMMDDTHH:MM:SSZ         (the fast path; what xapi emits)
 *   YYYYMMDDTHH:MM:SS          (basic form without zone: UTC)
 *   YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)   (RFC 3339)
 * plus the obvious mixtures (extended date without zone = UTC, HHMMSS in
 * the basic form, lowercase t/z, ±hhmm).  Fractions are truncated.
 * Returns 0 or -1. */
int val_datetime_parse(const char *s, size_t n, int64_t *out)
{
	unsigned Y, M, D, h, mi, sec;
	size_t p;

	if (!s)
		return -1;
	if (n >= 8 && s[4] == '-') { /* YYYY-MM-DD */
		if (n < 10 || s[7] != '-' || !digits(s, 4, &Y) || !digits(s + 5, 2, &M) ||
		    !digits(s + 8, 2, &D))
			return -1;
		p = 10;
	} else {
		if (n < 8 || !digits(s, 4, &Y) || !digits(s + 4, 2, &M) || !digits(s + 6, 2, &D))
			return -1;
		p = 8;
	}
	if (p >= n || (s[p] != 'T' && s[p] != 't'))
		return -1;
	p++;
	if (n - p >= 8 && s[p + 2] == ':') {
		if (s[p + 5] != ':' || !digits(s + p, 2, &h) || !digits(s + p + 3, 2, &mi) ||
		    !digits(s + p + 6, 2, &sec))
			return -1;
		p += 8;
	} else if (n - p >= 6) {
		if (!digits(s + p, 2, &h) || !digits(s + p + 2, 2, &mi) || !digits(s + p + 4, 2, &sec))
			return -1;
		p += 6;
	} else {
		return -1;
	}
	if (p < n && (s[p] == '.' || s[p] == ',')) { /* fraction: at least one digit */
		size_t q = ++p;
		while (p < n && s[p] >= '0' && s[p] <= '9')
			p++;
		if (p == q)
			return -1;
	}
	int64_t off = 0;
	if (p < n) {
		if ((s[p] == 'Z' || s[p] == 'z') && p + 1 == n) {
			p++;
		} else if (s[p] == '+' || s[p] == '-') {
			unsigned oh, om;
			int sign = s[p] == '-' ? -1 : 1;
			p++;
			if (n - p == 5 && s[p + 2] == ':') {
				if (!digits(s + p, 2, &oh) || !digits(s + p + 3, 2, &om))
					return -1;
			} else if (n - p == 4) {
				if (!digits(s + p, 2, &oh) || !digits(s + p + 2, 2, &om))
					return -1;
			} else {
				return -1;
			}
			if (oh > 23 || om > 59)
				return -1;
			off = sign * (int64_t)(oh * 3600 + om * 60);
			p = n;
		} else {
			return -1;
		}
	}
	if (p != n)
		return -1;
	if (M < 1 || M > 12 || D < 1 || D > mdays(Y, M) || h > 23 || mi > 59 || sec > 60)
		return -1;
	int64_t t = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + sec;
	*out = t - off;
	return 0;
}
