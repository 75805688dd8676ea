/* idl.c — lookups over the generated datamodel tables (idl_gen.c).
 *
 * Open-addressing hash tables, built once on first use under pthread_once and
 * read-only afterwards, so lookups need no lock.  idl_msg_find is on every
 * call's hot path: one hash and usually one string compare.
 */
#include "api/idl.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a, 64 bit. */
static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static uint64_t hash_lower(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)lower(s[i]);
		h *= 0x100000001b3ull;
	}
	return h;
}

/* A table of int32 slots holding index+1 (0 = empty). */
struct htab {
	uint32_t mask;
	int32_t *slot;
};

static int htab_init(struct htab *t, size_t n)
{
	size_t cap = 16;
	while (cap < n * 2 + 1)
		cap <<= 1;
	t->slot = calloc(cap, sizeof *t->slot);
	if (!t->slot)
		return -1;
	t->mask = (uint32_t)(cap - 1);
	return 0;
}

static void htab_put(struct htab *t, uint64_t h, int idx)
{
	uint32_t i = (uint32_t)h & t->mask;
	while (t->slot[i])
		i = (i + 1) & t->mask;
	t->slot[i] = idx + 1;
}

static bool eqn(const char *a, const char *s, size_t n)
{
	return strncmp(a, s, n) == 0 && a[n] == '\0';
}

/* Tables. */
static struct htab cls_tab;      /* class name -> class index */
static struct htab msg_tab;      /* "Class.msg" -> msg index */
static struct htab *field_tabs;  /* per class: field name -> field index */
static struct htab *enum_tabs;   /* per enum: lower-cased value -> index */
static bool init_ok;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void build(void)
{
	if (htab_init(&cls_tab, (size_t)idl_nclasses) < 0 ||
	    htab_init(&msg_tab, (size_t)idl_nmsgs) < 0)
		return;
	field_tabs = calloc((size_t)idl_nclasses, sizeof *field_tabs);
	enum_tabs = calloc((size_t)(idl_nenums ? idl_nenums : 1), sizeof *enum_tabs);
	if (!field_tabs || !enum_tabs)
		return;
	for (int i = 0; i < idl_nclasses; i++) {
		const struct idl_class *c = &idl_classes[i];
		htab_put(&cls_tab, hash_bytes(c->name, strlen(c->name)), i);
		if (htab_init(&field_tabs[i], (size_t)c->nfields) < 0)
			return;
		for (int j = 0; j < c->nfields; j++) {
			const char *f = c->fields[j].name;
			htab_put(&field_tabs[i], hash_bytes(f, strlen(f)), j);
		}
	}
	for (int i = 0; i < idl_nmsgs; i++) {
		const char *w = idl_msgs[i].wire;
		htab_put(&msg_tab, hash_bytes(w, strlen(w)), i);
	}
	for (int i = 0; i < idl_nenums; i++) {
		const struct idl_enum *e = &idl_enums[i];
		if (htab_init(&enum_tabs[i], (size_t)e->nvalues) < 0)
			return;
		for (int j = 0; j < e->nvalues; j++)
			htab_put(&enum_tabs[i],
			         hash_lower(e->values[j], strlen(e->values[j])), j);
	}
	init_ok = true;
}

static bool ready(void)
{
	pthread_once(&init_once, build);
	return init_ok;
}

int idl_class_find(const char *name)
{
	if (!name || !ready())
		return -1;
	size_t n = strlen(name);
	uint32_t i = (uint32_t)hash_bytes(name, n) & cls_tab.mask;
	for (int32_t v; (v = cls_tab.slot[i]); i = (i + 1) & cls_tab.mask)
		if (eqn(idl_classes[v - 1].name, name, n))
			return v - 1;
	return -1;
}

int idl_field_find(int cls, const char *name)
{
	if (!name || cls < 0 || cls >= idl_nclasses || !ready())
		return -1;
	const struct htab *t = &field_tabs[cls];
	const struct idl_field *f = idl_classes[cls].fields;
	size_t n = strlen(name);
	uint32_t i = (uint32_t)hash_bytes(name, n) & t->mask;
	for (int32_t v; (v = t->slot[i]); i = (i + 1) & t->mask)
		if (eqn(f[v - 1].name, name, n))
			return v - 1;
	return -1;
}

/* Exact lookup of "Class.msg" given as (s, n), where the separator at
 * position dot (if >= 0) is to be read as '.'. */
static const struct idl_msg *msg_lookup(const char *s, size_t n, ptrdiff_t dot)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (ptrdiff_t)k == dot ? '.' : (unsigned char)s[k];
		h ^= c;
		h *= 0x100000001b3ull;
	}
	uint32_t i = (uint32_t)h & msg_tab.mask;
	for (int32_t v; (v = msg_tab.slot[i]); i = (i + 1) & msg_tab.mask) {
		const char *w = idl_msgs[v - 1].wire;
		if (dot < 0) {
			if (eqn(w, s, n))
				return &idl_msgs[v - 1];
		} else if (strncmp(w, s, (size_t)dot) == 0 && w[dot] == '.' &&
		           strncmp(w + dot + 1, s + dot + 1, n - (size_t)dot - 1) == 0 &&
		           w[n] == '\0') {
			return &idl_msgs[v - 1];
		}
	}
	return NULL;
}

const struct idl_msg *idl_msg_find(const char *wire, size_t n)
{
	if (!wire || n == 0 || !ready())
		return NULL;
	const struct idl_msg *m = msg_lookup(wire, n, -1);
	if (m || memchr(wire, '.', n))
		return m;
	/* Alternative spelling Class_msg: class and message names both contain
	 * underscores, so try every split point. */
	for (size_t k = 1; k + 1 < n; k++) {
		if (wire[k] != '_')
			continue;
		m = msg_lookup(wire, n, (ptrdiff_t)k);
		if (m)
			return m;
	}
	return NULL;
}

int idl_enum_value(int enm, const char *s, size_t n)
{
	if (!s || enm < 0 || enm >= idl_nenums || !ready())
		return -1;
	const struct htab *t = &enum_tabs[enm];
	const struct idl_enum *e = &idl_enums[enm];
	uint32_t i = (uint32_t)hash_lower(s, n) & t->mask;
	for (int32_t v; (v = t->slot[i]); i = (i + 1) & t->mask) {
		const char *val = e->values[v - 1];
		if (strlen(val) != n)
			continue;
		size_t k = 0;
		while (k < n && lower(val[k]) == lower(s[k]))
			k++;
		if (k == n)
			return v - 1;
	}
	return -1;
}
