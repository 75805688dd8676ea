/* val.h — the one value tree used for decoded requests, stored database
 * values and encoded replies.
 *
 * A decoded request lives in a per-request arena (val_*_a constructors).
 * Stored database values are heap-allocated (val_*_h constructors) and owned
 * by their row; val_free() releases a heap tree (static singletons are never
 * freed).  The encoders (rpc/) take any tree, whichever way it was allocated.
 */
#ifndef CX_VAL_H
#define CX_VAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct arena;

enum val_kind {
	V_NIL = 0,  /* XML-RPC <nil/>, JSON null; also "void" results */
	V_STR,      /* string, ref, uuid, enum: untyped text on the wire */
	V_INT,      /* int64; XML-RPC encodes as bare text, JSON as a number */
	V_I4,       /* int32: XML-RPC <i4>, only where the original sends it */
	V_DOUBLE,
	V_BOOL,
	V_DATETIME, /* seconds since the epoch, UTC; text form YYYYMMDDTHH:MM:SSZ */
	V_ARRAY,
	V_STRUCT,   /* maps and records: ordered (key, value) members */
};

struct val;

struct val_member {
	const char *key;   /* NUL-terminated */
	uint32_t klen;
	struct val *v;
};

struct val {
	uint8_t kind;      /* enum val_kind */
	uint8_t flags;     /* VAL_STATIC: never freed */
	uint32_t n;        /* string length, array/struct item count */
	union {
		const char *s; /* V_STR: NUL-terminated, n bytes (may hold NUL? no: UTF-8 text) */
		int64_t i;     /* V_INT, V_I4, V_DATETIME */
		double d;
		bool b;
		struct val **items;
		struct val_member *members;
	} u;
};

#define VAL_STATIC 1u

/* Shared immutable singletons (static storage, safe to store in rows). */
extern struct val val_nil, val_empty_str, val_true, val_false, val_zero,
	val_empty_array, val_empty_struct;

/* Heap constructors (for stored values); abort on out-of-memory. */
struct val *val_str_h(const char *s, size_t n);
struct val *val_cstr_h(const char *s);
struct val *val_int_h(int64_t i);
struct val *val_double_h(double d);
struct val *val_bool_h(bool b); /* returns a singleton */
struct val *val_datetime_h(int64_t t);
struct val *val_array_h(uint32_t n);  /* items zeroed; caller fills */
struct val *val_struct_h(uint32_t n); /* members zeroed; caller fills (key via strdup) */
struct val *val_dup_h(const struct val *v); /* deep copy to heap */
void val_free(struct val *v);          /* NULL and singletons are ignored */

/* Arena constructors (for decoded requests and per-request results). */
struct val *val_str_a(struct arena *a, const char *s, size_t n);
struct val *val_int_a(struct arena *a, int64_t i);
struct val *val_double_a(struct arena *a, double d);
struct val *val_datetime_a(struct arena *a, int64_t t);
struct val *val_array_a(struct arena *a, uint32_t n);
struct val *val_struct_a(struct arena *a, uint32_t n);

/* Lookup / comparison helpers */
struct val *val_struct_get(const struct val *st, const char *key);
bool val_equal(const struct val *a, const struct val *b);

/* Datetime text: YYYYMMDDTHH:MM:SSZ (18 chars + NUL). */
void val_datetime_fmt(int64_t t, char out[24]);
/* Parses YYYYMMDDTHH:MM:SSZ, RFC 3339, and the basic form without zone (UTC). */
int val_datetime_parse(const char *s, size_t n, int64_t *out);

#endif
