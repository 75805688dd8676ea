/* db_internal.h — shared between db.c (tables, commit thread), store.c
 * (SQLite persistence) and filter.c (get_all_where).  Not for use outside
 * src/db/. */
#ifndef CX_DB_INTERNAL_H
#define CX_DB_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include "db/db.h"
#include "api/idl.h"
#include "base/buf.h"

/* Every row is allocated with this header in front of the public struct
 * db_row, so the indexes need no separate nodes. */
struct rowhdr {
	struct rowhdr *prev, *next; /* insertion order within the class */
	struct rowhdr *ref_next;    /* global ref hash chain */
	struct rowhdr *uuid_next;   /* per-class uuid hash chain */
	uint64_t ref_hash;
	uint64_t uuid_hash;         /* hash of the uuid text it is indexed under */
	/* change order within the class (for event.from): the most recently
	 * stamped row is last; chg_gen is the last generation of the batch that
	 * moved it there, so chg_gen never decreases along the list */
	struct rowhdr *chg_prev, *chg_next;
	uint64_t chg_gen;
};
#define ROW_HDR(r) ((struct rowhdr *)((char *)(r) - sizeof(struct rowhdr)))
#define HDR_ROW(h) ((struct db_row *)((char *)(h) + sizeof(struct rowhdr)))

static inline uint64_t db_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

/* Field classification helpers. */
static inline bool db_field_derived(const struct idl_field *f)
{
	return f->rel_cls >= 0; /* many side of a one-to-many relation */
}

/* The shared immutable value used for a field's default (VAL_STATIC all the
 * way down; never free it). */
const struct val *db_default_shared(int cls, int field);
/* Take ownership of v (heap) and return the value to store: v itself, or a
 * shared singleton equal to it (v is then freed). */
struct val *db_intern(int cls, int field, struct val *v);

/* ---- store.c: the persistence backend (SQLite) ---- */

/* A row change as the store sees it. */
struct store_put {
	int cls;
	const char *ref;
	uint64_t created, modified;
	struct val *const *cols;
	const uint64_t *dirty;   /* bitset of changed fields; NULL = whole row new */
	bool is_new;             /* INSERT (else UPDATE of dirty fields + _modified) */
};

/* Called for every loaded row: cols are heap values (already interned);
 * ownership passes. */
typedef void (*store_row_fn)(int cls, const char *ref, uint64_t created,
			     uint64_t modified, struct val **cols);

int store_open(const char *path, uint64_t *generation);
int store_load(store_row_fn fn);
int store_begin(void);
int store_put_row(const struct store_put *p);
int store_delete_row(int cls, const char *ref);
int store_set_generation(uint64_t gen);
int store_commit(void);       /* COMMIT; durable when it returns 0 */
void store_rollback(void);
void store_close(bool clean, uint64_t generation); /* clean: record the exact generation */
const char *store_errmsg(void);

/* JSON text of a set/map value (store.c). */
void db_json_write(const struct val *v, struct buf *out);
/* Parse JSON text into a heap value of type ty (may return a shared
 * VAL_STATIC empty); NULL on error. */
struct val *db_json_read(const struct idl_type *ty, const char *s, size_t n);

/* After an unclean shutdown, up to this many generations may have been used
 * without being written (batches touching only non-persistent classes skip
 * the store until half of it is used up); the reopened database starts
 * beyond them so that tokens handed out before the crash stay in the past. */
#define GEN_SLACK 1024

#define BIT_TEST(bs, i) (((bs)[(i) >> 6] >> ((i) & 63)) & 1u)
#define BIT_SET(bs, i) ((bs)[(i) >> 6] |= (1ull << ((i) & 63)))
#define BIT_CLR(bs, i) ((bs)[(i) >> 6] &= ~(1ull << ((i) & 63)))
#define BITWORDS(n) (((n) + 63) / 64)

#endif
