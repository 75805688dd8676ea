/* db.h — the object database: in-memory tables driven by the idl schema,
 * made durable in a SQLite file.
 *
 * Reading: take the read lock (db_rdlock), look rows up and read their
 * columns, release it (db_unlock).  Never block or do I/O while holding it,
 * and never take it twice in one thread (the lock prefers the writer, so a
 * nested rdlock can deadlock behind a waiting commit).
 *
 * Writing: build a transaction of row operations (db_txn_*) and commit it.
 * The commit thread validates each transaction against the latest state,
 * writes every transaction of a batch to SQLite in one SQLite transaction and
 * syncs it (group commit), and only then applies the batch to memory, bumps
 * the generation, stamps the rows and wakes waiters.  So nothing is visible
 * before it is durable, and db_txn_commit returns only after that.
 * Classes with persist=false (session, task, ...) are applied the same way
 * but never written to the file.
 *
 * Relations: the "many" side of a one-to-many relation (VM.VBDs, ...) is a
 * column kept by the database itself: when a VBD's VM changes, both VMs' VBDs
 * sets are updated and stamped in the same transaction.
 */
#ifndef CX_DB_H
#define CX_DB_H

#include <stdbool.h>
#include <stdint.h>
#include "val/val.h"
#include "base/buf.h"
#include "base/xerr.h"

#define DB_REF_MAX 64  /* "OpaqueRef:" + 36-char uuid + NUL fits easily */

struct db_row {
	char ref[DB_REF_MAX];
	int16_t cls;
	uint64_t created;   /* generation of creation */
	uint64_t modified;  /* generation of last change */
	struct val *cols[]; /* one per field of the class (idl_classes[cls].fields) */
};

/* Open (create if missing) the database file and load every persistent row.
 * An older file layout (missing tables/columns) is upgraded.  path NULL =
 * memory only (unit tests).  0 or -errno. */
int db_open(const char *path);
void db_close(void);

void db_rdlock(void);
void db_unlock(void);

uint64_t db_generation(void);  /* current (committed) generation */

/* Lookups (read lock held). */
struct db_row *db_get(int cls, const char *ref);
struct db_row *db_get_by_uuid(int cls, const char *uuid);
struct db_row *db_get_any(const char *ref); /* any class */
uint32_t db_count(int cls);
/* Iteration in insertion order: row = NULL starts; returns NULL at the end. */
struct db_row *db_next(int cls, struct db_row *row);

/* Evaluate a get_all_where filter expression ("true", field "x" = "y", and/or/not).
 * db_filter_compile returns NULL and sets err (INVALID_VALUE) if it does not parse. */
struct db_filter;
struct db_filter *db_filter_compile(int cls, const char *expr, struct xerr *err);
bool db_filter_match(const struct db_filter *f, const struct db_row *row);
void db_filter_free(struct db_filter *f);
/* The text form of a column value that filters compare against: strings as-is,
 * bools "true"/"false", ints decimal, sets/maps as S-expressions. */
void db_value_text(const struct val *v, struct buf *out);

/* ---- writes ---- */
struct db_txn;

struct db_txn *db_txn_new(void);
void db_txn_free(struct db_txn *t);

/* New row.  cols: heap values, one per field (ownership passes); a NULL entry
 * takes the field's default (or empty of its type).  Relations are updated. */
void db_txn_insert(struct db_txn *t, int cls, const char *ref, struct val **cols);
void db_txn_delete(struct db_txn *t, int cls, const char *ref);
/* Stamp a row as modified without changing it (event.inject). */
void db_txn_touch(struct db_txn *t, int cls, const char *ref);
/* Replace a column (v is taken). */
void db_txn_set(struct db_txn *t, int cls, const char *ref, int field, struct val *v);
/* Map and set edits, applied against the latest state at commit time.
 * map_add of a present key fails with MAP_DUPLICATE_KEY [class, field, ref, key];
 * map_remove of an absent key and set add/remove are idempotent. */
void db_txn_map_add(struct db_txn *t, int cls, const char *ref, int field,
		    const char *key, struct val *v);
void db_txn_map_remove(struct db_txn *t, int cls, const char *ref, int field, const char *key);
void db_txn_set_add(struct db_txn *t, int cls, const char *ref, int field, struct val *v);
void db_txn_set_remove(struct db_txn *t, int cls, const char *ref, int field, const struct val *v);

/* Commit and wait until durable and applied (never call on the loop thread
 * for a transaction that touches persistent classes).  A row that vanished
 * gives HANDLE_INVALID [class, ref]; a duplicate uuid gives
 * DB_UNIQUENESS_CONSTRAINT_VIOLATION.  The whole transaction applies or none
 * of it.  Frees t.  0, or -1 with err set. */
int db_txn_commit(struct db_txn *t, struct xerr *err);

/* Called on the commit thread after each applied batch (no lock held) with
 * the new generation; used to wake event waiters.  It must not commit (the
 * commit thread would wait for itself). */
void db_set_commit_hook(void (*fn)(uint64_t gen, void *opaque), void *opaque);

/* Deleted rows are remembered (class, ref, generation of deletion) so that
 * event.from can report deletions since a token; oldest are dropped past a bound. */
struct db_tomb {
	int16_t cls;
	uint64_t gen;       /* generation of the deletion */
	uint64_t created;   /* generation the row was created at */
	char ref[DB_REF_MAX];
};
/* Copy tombstones with gen > since into out (up to max); returns how many. The
 * earliest generation still remembered is in *oldest. (read lock held) */
int db_tombs_since(uint64_t since, struct db_tomb *out, int max, uint64_t *oldest);
/* Call fn for every tombstone with gen > since, oldest first, until fn
 * returns non-zero (returned).  (read lock held) */
int db_tombs_each(uint64_t since, int (*fn)(const struct db_tomb *t, void *opaque),
		  void *opaque);
/* How many deletions are remembered at most (default 131072; memory about
 * 90 bytes each, allocated only as deletions happen). */
void db_set_tomb_max(uint32_t n);

/* Change tracking for events (read lock held).
 * db_class_gen: the last generation that created, changed or deleted a row
 * of cls (0 if none since the database was opened, except loaded stamps).
 * db_next_changed: rows of cls from the most recently changed backwards;
 * row = NULL starts.  It returns NULL once every remaining row was last
 * changed at or before since, but may also return rows changed at or before
 * since (a batch's rows share one position): check row->modified. */
uint64_t db_class_gen(int cls);
struct db_row *db_next_changed(int cls, uint64_t since, struct db_row *row);

/* Helpers */
void db_ref_new(char out[DB_REF_MAX]);  /* "OpaqueRef:<random uuid v4>" */
void db_uuid_new(char out[40]);          /* random uuid v4 text */
/* The default value of a field as a heap value (parsed from idl default text). */
struct val *db_field_default(int cls, int field);

#endif
