/* store.c — SQLite persistence of the object database.
 *
 * Layout (meant to be read with the sqlite3 shell):
 *   one table per persistent class, named after the class:
 *     _ref TEXT PRIMARY KEY, _created INTEGER, _modified INTEGER,
 *     then one column per field, named by its db column (name__label, ...)
 *   strings/enums/refs TEXT, ints INTEGER, floats REAL, bools INTEGER 0/1,
 *   datetimes TEXT YYYYMMDDTHH:MM:SSZ, sets/maps JSON text.
 *   Derived relation sets (VM.VBDs, ...) are not stored; they are rebuilt
 *   from the pointers after loading.
 *   _meta(key, value): generation, schema_version, api_version, clean.
 *
 * The file is in WAL mode with synchronous=FULL: every COMMIT syncs the WAL,
 * so a batch is durable when store_commit returns.  Only the commit thread
 * calls into this file after store_load.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db_internal.h"

struct cstmts {
	bool stored;          /* persistent class with a table */
	int nstored;
	int *sf;              /* stored field indexes */
	sqlite3_stmt *ins, *del, *touch, *updall;
	sqlite3_stmt **upd;   /* per field, prepared on first use */
};

static struct {
	sqlite3 *db;
	struct cstmts *c;
	sqlite3_stmt *begin, *commit, *rollback, *setgen;
	struct buf sql, json;
	char err[256];
} S;

static void set_err(const char *what)
{
	snprintf(S.err, sizeof S.err, "%s: %s", what, S.db ? sqlite3_errmsg(S.db) : "no database");
}

const char *store_errmsg(void)
{
	return S.err[0] ? S.err : NULL;
}

static int sql_exec(const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(S.db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(S.err, sizeof S.err, "%s: %s", sql, msg ? msg : "?");
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

static sqlite3_stmt *prep(const char *sql)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v3(S.db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
		set_err(sql);
		return NULL;
	}
	return st;
}

static void qident(struct buf *b, const char *s)
{
	buf_addc(b, '"');
	for (; *s; s++) {
		if (*s == '"')
			buf_addc(b, '"');
		buf_addc(b, *s);
	}
	buf_addc(b, '"');
}

static const char *col_name(const struct idl_field *f)
{
	return f->column ? f->column : f->name;
}

static const char *sql_type(const struct idl_type *ty)
{
	switch (ty->kind) {
	case TY_INT: case TY_BOOL: return "INTEGER";
	case TY_FLOAT: return "REAL";
	case TY_OPTION: return ty->a ? sql_type(ty->a) : "TEXT";
	default: return "TEXT";
	}
}

static const char *sql_cstr(struct buf *b)
{
	buf_addc(b, 0);
	b->len--;
	return b->p;
}

/* ---- JSON ---- */

static void json_str(struct buf *out, const char *s, size_t n)
{
	static const char hx[] = "0123456789abcdef";
	buf_addc(out, '"');
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		buf_add(out, s + run, i - run);
		run = i + 1;
		switch (c) {
		case '"': buf_add(out, "\\\"", 2); break;
		case '\\': buf_add(out, "\\\\", 2); break;
		case '\n': buf_add(out, "\\n", 2); break;
		case '\r': buf_add(out, "\\r", 2); break;
		case '\t': buf_add(out, "\\t", 2); break;
		default: {
			char e[6] = { '\\', 'u', '0', '0', hx[c >> 4], hx[c & 15] };
			buf_add(out, e, 6);
		}
		}
	}
	buf_add(out, s + run, n - run);
	buf_addc(out, '"');
}

void db_json_write(const struct val *v, struct buf *out)
{
	char tmp[40];
	if (!v) {
		buf_adds(out, "null");
		return;
	}
	switch (v->kind) {
	case V_STR: json_str(out, v->u.s, v->n); break;
	case V_INT: case V_I4: buf_printf(out, "%" PRId64, v->u.i); break;
	case V_DOUBLE:
		if (isfinite(v->u.d))
			buf_printf(out, "%.17g", v->u.d);
		else {
			snprintf(tmp, sizeof tmp, "%g", v->u.d);
			json_str(out, tmp, strlen(tmp));
		}
		break;
	case V_BOOL: buf_adds(out, v->u.b ? "true" : "false"); break;
	case V_DATETIME:
		val_datetime_fmt(v->u.i, tmp);
		json_str(out, tmp, strlen(tmp));
		break;
	case V_ARRAY:
		buf_addc(out, '[');
		for (uint32_t i = 0; i < v->n; i++) {
			if (i)
				buf_addc(out, ',');
			db_json_write(v->u.items[i], out);
		}
		buf_addc(out, ']');
		break;
	case V_STRUCT:
		buf_addc(out, '{');
		for (uint32_t i = 0; i < v->n; i++) {
			if (i)
				buf_addc(out, ',');
			json_str(out, v->u.members[i].key, strlen(v->u.members[i].key));
			buf_addc(out, ':');
			db_json_write(v->u.members[i].v, out);
		}
		buf_addc(out, '}');
		break;
	default: buf_adds(out, "null"); break;
	}
}

static struct val *from_json(const struct idl_type *ty, json_t *j);

static struct val *text_to(const struct idl_type *ty, const char *s, size_t n)
{
	char tmp[64];
	switch (ty ? ty->kind : TY_STRING) {
	case TY_INT:
		if (n < sizeof tmp) {
			memcpy(tmp, s, n);
			tmp[n] = 0;
			return val_int_h(strtoll(tmp, NULL, 10));
		}
		return val_int_h(0);
	case TY_FLOAT:
		if (n < sizeof tmp) {
			memcpy(tmp, s, n);
			tmp[n] = 0;
			return val_double_h(strtod(tmp, NULL));
		}
		return val_double_h(0);
	case TY_BOOL:
		return val_bool_h((n == 4 && memcmp(s, "true", 4) == 0) || (n == 1 && s[0] == '1'));
	case TY_DATETIME: {
		int64_t t = 0;
		if (n && val_datetime_parse(s, n, &t) != 0)
			t = 0;
		return val_datetime_h(t);
	}
	case TY_SET: case TY_MAP: {
		struct val *v = db_json_read(ty, s, n);
		return v ? v : val_dup_h(ty->kind == TY_SET ? &val_empty_array : &val_empty_struct);
	}
	case TY_OPTION:
		return text_to(ty->a, s, n);
	default:
		return val_str_h(s, n);
	}
}

static struct val *from_json(const struct idl_type *ty, json_t *j)
{
	int k = ty ? ty->kind : TY_STRING;
	char tmp[40];
	if (k == TY_OPTION) {
		if (json_is_null(j))
			return &val_nil;
		return from_json(ty->a, j);
	}
	if (k == TY_SET) {
		if (!json_is_array(j) || json_array_size(j) == 0)
			return &val_empty_array;
		size_t n = json_array_size(j);
		struct val *v = val_array_h((uint32_t)n);
		for (size_t i = 0; i < n; i++)
			v->u.items[i] = from_json(ty->a, json_array_get(j, i));
		return v;
	}
	if (k == TY_MAP) {
		if (!json_is_object(j) || json_object_size(j) == 0)
			return &val_empty_struct;
		struct val *v = val_struct_h((uint32_t)json_object_size(j));
		const char *key;
		json_t *jv;
		uint32_t i = 0;
		json_object_foreach(j, key, jv) {
			v->u.members[i].key = strdup(key);
			if (!v->u.members[i].key)
				abort();
			v->u.members[i].klen = (uint32_t)strlen(key);
			v->u.members[i].v = from_json(ty->b, jv);
			i++;
		}
		return v;
	}
	switch (json_typeof(j)) {
	case JSON_STRING:
		return text_to(ty, json_string_value(j), json_string_length(j));
	case JSON_INTEGER:
		if (k == TY_FLOAT)
			return val_double_h((double)json_integer_value(j));
		if (k == TY_BOOL)
			return val_bool_h(json_integer_value(j) != 0);
		if (k == TY_DATETIME)
			return val_datetime_h(json_integer_value(j));
		if (k == TY_INT)
			return val_int_h(json_integer_value(j));
		snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
		return val_cstr_h(tmp);
	case JSON_REAL:
		if (k == TY_FLOAT)
			return val_double_h(json_real_value(j));
		if (k == TY_INT)
			return val_int_h((int64_t)json_real_value(j));
		snprintf(tmp, sizeof tmp, "%.17g", json_real_value(j));
		return text_to(ty, tmp, strlen(tmp));
	case JSON_TRUE:
	case JSON_FALSE:
		if (k == TY_BOOL)
			return val_bool_h(json_is_true(j));
		if (k == TY_INT)
			return val_int_h(json_is_true(j));
		return val_cstr_h(json_is_true(j) ? "true" : "false");
	default:
		return text_to(ty, "", 0);
	}
}

struct val *db_json_read(const struct idl_type *ty, const char *s, size_t n)
{
	while (n && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')) {
		s++;
		n--;
	}
	if (n == 2 && s[0] == '[' && s[1] == ']')
		return &val_empty_array;
	if (n == 2 && s[0] == '{' && s[1] == '}')
		return &val_empty_struct;
	json_error_t e;
	json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &e);
	if (!j)
		return NULL;
	struct val *v = from_json(ty, j);
	json_decref(j);
	return v;
}

/* ---- binding and reading columns ---- */

static int bind_val(sqlite3_stmt *st, int i, const struct idl_type *ty, const struct val *v)
{
	char tmp[40];
	if (!v || v->kind == V_NIL)
		return sqlite3_bind_null(st, i);
	if (ty->kind == TY_OPTION && ty->a)
		ty = ty->a;
	switch (v->kind) {
	case V_STR:
		return sqlite3_bind_text(st, i, v->u.s, (int)v->n, SQLITE_STATIC);
	case V_INT: case V_I4:
		return sqlite3_bind_int64(st, i, v->u.i);
	case V_DOUBLE:
		return sqlite3_bind_double(st, i, v->u.d);
	case V_BOOL:
		return sqlite3_bind_int(st, i, v->u.b ? 1 : 0);
	case V_DATETIME:
		val_datetime_fmt(v->u.i, tmp);
		return sqlite3_bind_text(st, i, tmp, -1, SQLITE_TRANSIENT);
	case V_ARRAY:
		if (v->n == 0)
			return sqlite3_bind_text(st, i, "[]", 2, SQLITE_STATIC);
		break;
	case V_STRUCT:
		if (v->n == 0)
			return sqlite3_bind_text(st, i, "{}", 2, SQLITE_STATIC);
		break;
	}
	S.json.len = 0;
	db_json_write(v, &S.json);
	return sqlite3_bind_text(st, i, S.json.p, (int)S.json.len, SQLITE_TRANSIENT);
}

static struct val *read_col(sqlite3_stmt *st, int i, const struct idl_type *ty)
{
	int t = sqlite3_column_type(st, i);
	if (t == SQLITE_NULL)
		return NULL;
	if (ty->kind == TY_OPTION && ty->a)
		ty = ty->a;
	switch (ty->kind) {
	case TY_INT:
		if (t == SQLITE_INTEGER || t == SQLITE_FLOAT)
			return val_int_h(sqlite3_column_int64(st, i));
		break;
	case TY_FLOAT:
		if (t == SQLITE_INTEGER || t == SQLITE_FLOAT)
			return val_double_h(sqlite3_column_double(st, i));
		break;
	case TY_BOOL:
		if (t == SQLITE_INTEGER || t == SQLITE_FLOAT)
			return val_bool_h(sqlite3_column_int64(st, i) != 0);
		break;
	case TY_DATETIME:
		if (t == SQLITE_INTEGER)
			return val_datetime_h(sqlite3_column_int64(st, i));
		break;
	}
	const char *s = (const char *)sqlite3_column_text(st, i);
	int n = sqlite3_column_bytes(st, i);
	return text_to(ty, s ? s : "", s ? (size_t)n : 0);
}

/* ---- schema ---- */

static int ensure_table(int cls)
{
	const struct idl_class *C = &idl_classes[cls];
	struct cstmts *c = &S.c[cls];
	struct buf *b = &S.sql;
	b->len = 0;
	buf_adds(b, "CREATE TABLE IF NOT EXISTS ");
	qident(b, C->name);
	buf_adds(b, " (\"_ref\" TEXT PRIMARY KEY, \"_created\" INTEGER, \"_modified\" INTEGER");
	for (int k = 0; k < c->nstored; k++) {
		const struct idl_field *F = &C->fields[c->sf[k]];
		buf_adds(b, ", ");
		qident(b, col_name(F));
		buf_printf(b, " %s", sql_type(F->ty));
	}
	buf_adds(b, ")");
	int rc = sql_exec(sql_cstr(b));
	if (rc)
		return rc;
	/* upgrade: add the columns an older datamodel did not have */
	b->len = 0;
	buf_adds(b, "PRAGMA table_info(");
	qident(b, C->name);
	buf_adds(b, ")");
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(S.db, sql_cstr(b), -1, &st, NULL) != SQLITE_OK) {
		set_err("table_info");
		return -EIO;
	}
	bool *have = calloc((size_t)C->nfields + 1, sizeof *have);
	if (!have)
		abort();
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 1);
		if (!name)
			continue;
		for (int k = 0; k < c->nstored; k++)
			if (strcmp(col_name(&C->fields[c->sf[k]]), name) == 0)
				have[k] = true;
	}
	sqlite3_finalize(st);
	for (int k = 0; k < c->nstored && rc == 0; k++) {
		if (have[k])
			continue;
		const struct idl_field *F = &C->fields[c->sf[k]];
		b->len = 0;
		buf_adds(b, "ALTER TABLE ");
		qident(b, C->name);
		buf_adds(b, " ADD COLUMN ");
		qident(b, col_name(F));
		buf_printf(b, " %s", sql_type(F->ty));
		rc = sql_exec(sql_cstr(b));
	}
	free(have);
	return rc;
}

static int meta_get(const char *key, char *out, size_t n)
{
	sqlite3_stmt *st = NULL;
	int found = 0;
	if (sqlite3_prepare_v2(S.db, "SELECT value FROM _meta WHERE key = ?1", -1, &st, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
		snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
		found = 1;
	}
	sqlite3_finalize(st);
	return found;
}

static int meta_set(const char *key, const char *value)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(S.db, "INSERT OR REPLACE INTO _meta(key, value) VALUES (?1, ?2)",
			       -1, &st, NULL) != SQLITE_OK) {
		set_err("meta");
		return -EIO;
	}
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
	if (rc)
		set_err("meta");
	sqlite3_finalize(st);
	return rc;
}

int store_open(const char *path, uint64_t *generation)
{
	memset(&S, 0, sizeof S);
	buf_init(&S.sql);
	buf_init(&S.json);
	if (sqlite3_open_v2(path, &S.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		set_err(path);
		return -EIO;
	}
	sqlite3_busy_timeout(S.db, 10000);
	int rc = sql_exec("PRAGMA journal_mode=WAL");
	if (!rc)
		rc = sql_exec("PRAGMA synchronous=FULL");
	if (!rc)
		rc = sql_exec("BEGIN IMMEDIATE");
	if (rc)
		return rc;
	rc = sql_exec("CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value TEXT)");
	S.c = calloc((size_t)idl_nclasses, sizeof *S.c);
	if (!S.c)
		abort();
	for (int c = 0; c < idl_nclasses && rc == 0; c++) {
		const struct idl_class *C = &idl_classes[c];
		if (!C->in_db || !C->persist)
			continue;
		struct cstmts *cs = &S.c[c];
		cs->stored = true;
		cs->sf = malloc(((size_t)C->nfields + 1) * sizeof *cs->sf);
		cs->upd = calloc((size_t)C->nfields + 1, sizeof *cs->upd);
		if (!cs->sf || !cs->upd)
			abort();
		for (int f = 0; f < C->nfields; f++)
			if (!db_field_derived(&C->fields[f]))
				cs->sf[cs->nstored++] = f;
		rc = ensure_table(c);
	}
	char tmp[64];
	uint64_t gen = 0;
	if (rc == 0 && meta_get("generation", tmp, sizeof tmp)) {
		gen = strtoull(tmp, NULL, 10);
		if (!meta_get("clean", tmp, sizeof tmp) || strcmp(tmp, "1") != 0)
			gen += GEN_SLACK;
	}
	if (rc == 0) {
		snprintf(tmp, sizeof tmp, "%" PRIu64, gen);
		rc = meta_set("generation", tmp);
	}
	if (rc == 0)
		rc = meta_set("schema_version", idl_schema_version);
	if (rc == 0) {
		snprintf(tmp, sizeof tmp, "%d.%d", idl_api_version_major, idl_api_version_minor);
		rc = meta_set("api_version", tmp);
	}
	if (rc == 0)
		rc = meta_set("clean", "0");
	if (rc == 0)
		rc = sql_exec("COMMIT");
	else
		sql_exec("ROLLBACK");
	if (rc)
		return rc;
	S.begin = prep("BEGIN IMMEDIATE");
	S.commit = prep("COMMIT");
	S.rollback = prep("ROLLBACK");
	S.setgen = prep("INSERT OR REPLACE INTO _meta(key, value) VALUES ('generation', ?1)");
	if (!S.begin || !S.commit || !S.rollback || !S.setgen)
		return -EIO;
	*generation = gen;
	return 0;
}

int store_load(store_row_fn fn)
{
	for (int c = 0; c < idl_nclasses; c++) {
		struct cstmts *cs = &S.c[c];
		if (!cs->stored)
			continue;
		const struct idl_class *C = &idl_classes[c];
		struct buf *b = &S.sql;
		b->len = 0;
		buf_adds(b, "SELECT \"_ref\", \"_created\", \"_modified\"");
		for (int k = 0; k < cs->nstored; k++) {
			buf_adds(b, ", ");
			qident(b, col_name(&C->fields[cs->sf[k]]));
		}
		buf_adds(b, " FROM ");
		qident(b, C->name);
		buf_adds(b, " ORDER BY rowid");
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(S.db, sql_cstr(b), -1, &st, NULL) != SQLITE_OK) {
			set_err("load");
			return -EIO;
		}
		struct val **cols = calloc((size_t)C->nfields + 1, sizeof *cols);
		if (!cols)
			abort();
		int r;
		while ((r = sqlite3_step(st)) == SQLITE_ROW) {
			const char *ref = (const char *)sqlite3_column_text(st, 0);
			if (!ref || strlen(ref) >= DB_REF_MAX)
				continue;
			for (int f = 0; f < C->nfields; f++)
				cols[f] = db_field_derived(&C->fields[f]) ? &val_empty_array : NULL;
			for (int k = 0; k < cs->nstored; k++) {
				int f = cs->sf[k];
				cols[f] = db_intern(c, f, read_col(st, 3 + k, C->fields[f].ty));
			}
			fn(c, ref, (uint64_t)sqlite3_column_int64(st, 1),
			   (uint64_t)sqlite3_column_int64(st, 2), cols);
		}
		free(cols);
		sqlite3_finalize(st);
		if (r != SQLITE_DONE) {
			set_err("load");
			return -EIO;
		}
	}
	return 0;
}

static int step_reset(sqlite3_stmt *st)
{
	int r = sqlite3_step(st);
	if (r != SQLITE_DONE && r != SQLITE_ROW)
		set_err("write");
	sqlite3_reset(st);
	return r == SQLITE_DONE || r == SQLITE_ROW ? 0 : -EIO;
}

int store_begin(void)
{
	S.err[0] = 0;
	return step_reset(S.begin);
}

int store_commit(void)
{
	return step_reset(S.commit);
}

void store_rollback(void)
{
	if (sqlite3_get_autocommit(S.db) == 0)
		step_reset(S.rollback);
}

int store_set_generation(uint64_t gen)
{
	sqlite3_bind_int64(S.setgen, 1, (int64_t)gen);
	return step_reset(S.setgen);
}

int store_delete_row(int cls, const char *ref)
{
	struct cstmts *cs = &S.c[cls];
	if (!cs->stored)
		return 0;
	if (!cs->del) {
		struct buf *b = &S.sql;
		b->len = 0;
		buf_adds(b, "DELETE FROM ");
		qident(b, idl_classes[cls].name);
		buf_adds(b, " WHERE \"_ref\" = ?1");
		if (!(cs->del = prep(sql_cstr(b))))
			return -EIO;
	}
	sqlite3_bind_text(cs->del, 1, ref, -1, SQLITE_STATIC);
	return step_reset(cs->del);
}

static sqlite3_stmt *stmt_ins(int cls)
{
	struct cstmts *cs = &S.c[cls];
	if (cs->ins)
		return cs->ins;
	const struct idl_class *C = &idl_classes[cls];
	struct buf *b = &S.sql;
	b->len = 0;
	buf_adds(b, "INSERT INTO ");
	qident(b, C->name);
	buf_adds(b, " (\"_ref\", \"_created\", \"_modified\"");
	for (int k = 0; k < cs->nstored; k++) {
		buf_adds(b, ", ");
		qident(b, col_name(&C->fields[cs->sf[k]]));
	}
	buf_adds(b, ") VALUES (?1, ?2, ?3");
	for (int k = 0; k < cs->nstored; k++)
		buf_printf(b, ", ?%d", k + 4);
	buf_adds(b, ")");
	return cs->ins = prep(sql_cstr(b));
}

static sqlite3_stmt *stmt_updall(int cls)
{
	struct cstmts *cs = &S.c[cls];
	if (cs->updall)
		return cs->updall;
	const struct idl_class *C = &idl_classes[cls];
	struct buf *b = &S.sql;
	b->len = 0;
	buf_adds(b, "UPDATE ");
	qident(b, C->name);
	buf_adds(b, " SET \"_modified\" = ?1");
	for (int k = 0; k < cs->nstored; k++) {
		buf_adds(b, ", ");
		qident(b, col_name(&C->fields[cs->sf[k]]));
		buf_printf(b, " = ?%d", k + 3);
	}
	buf_adds(b, " WHERE \"_ref\" = ?2");
	return cs->updall = prep(sql_cstr(b));
}

static sqlite3_stmt *stmt_upd(int cls, int f)
{
	struct cstmts *cs = &S.c[cls];
	if (f < 0 ? cs->touch != NULL : cs->upd[f] != NULL)
		return f < 0 ? cs->touch : cs->upd[f];
	const struct idl_class *C = &idl_classes[cls];
	struct buf *b = &S.sql;
	b->len = 0;
	buf_adds(b, "UPDATE ");
	qident(b, C->name);
	buf_adds(b, " SET \"_modified\" = ?1");
	if (f >= 0) {
		buf_adds(b, ", ");
		qident(b, col_name(&C->fields[f]));
		buf_adds(b, " = ?3");
	}
	buf_adds(b, " WHERE \"_ref\" = ?2");
	sqlite3_stmt *st = prep(sql_cstr(b));
	if (f >= 0)
		cs->upd[f] = st;
	else
		cs->touch = st;
	return st;
}

int store_put_row(const struct store_put *p)
{
	struct cstmts *cs = &S.c[p->cls];
	if (!cs->stored)
		return 0;
	const struct idl_class *C = &idl_classes[p->cls];
	sqlite3_stmt *st;
	if (p->is_new || !p->dirty) {
		if (!(st = stmt_ins(p->cls)))
			return -EIO;
		sqlite3_bind_text(st, 1, p->ref, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (int64_t)p->created);
		sqlite3_bind_int64(st, 3, (int64_t)p->modified);
		for (int k = 0; k < cs->nstored; k++) {
			int f = cs->sf[k];
			bind_val(st, k + 4, C->fields[f].ty, p->cols[f]);
		}
		return step_reset(st);
	}
	int ndirty = 0;
	for (int k = 0; k < cs->nstored; k++)
		if (BIT_TEST(p->dirty, cs->sf[k]))
			ndirty++;
	if (ndirty > 3) {
		if (!(st = stmt_updall(p->cls)))
			return -EIO;
		sqlite3_bind_int64(st, 1, (int64_t)p->modified);
		sqlite3_bind_text(st, 2, p->ref, -1, SQLITE_STATIC);
		for (int k = 0; k < cs->nstored; k++) {
			int f = cs->sf[k];
			bind_val(st, k + 3, C->fields[f].ty, p->cols[f]);
		}
		return step_reset(st);
	}
	if (ndirty == 0) {
		if (!(st = stmt_upd(p->cls, -1)))
			return -EIO;
		sqlite3_bind_int64(st, 1, (int64_t)p->modified);
		sqlite3_bind_text(st, 2, p->ref, -1, SQLITE_STATIC);
		return step_reset(st);
	}
	for (int k = 0; k < cs->nstored; k++) {
		int f = cs->sf[k];
		if (!BIT_TEST(p->dirty, f))
			continue;
		if (!(st = stmt_upd(p->cls, f)))
			return -EIO;
		sqlite3_bind_int64(st, 1, (int64_t)p->modified);
		sqlite3_bind_text(st, 2, p->ref, -1, SQLITE_STATIC);
		bind_val(st, 3, C->fields[f].ty, p->cols[f]);
		int rc = step_reset(st);
		if (rc)
			return rc;
	}
	return 0;
}

void store_close(bool clean, uint64_t generation)
{
	if (!S.db)
		return;
	if (S.c)
		for (int c = 0; c < idl_nclasses; c++) {
			struct cstmts *cs = &S.c[c];
			sqlite3_finalize(cs->ins);
			sqlite3_finalize(cs->del);
			sqlite3_finalize(cs->touch);
			sqlite3_finalize(cs->updall);
			if (cs->upd)
				for (int f = 0; f < idl_classes[c].nfields; f++)
					sqlite3_finalize(cs->upd[f]);
			free(cs->upd);
			free(cs->sf);
		}
	free(S.c);
	S.c = NULL;
	sqlite3_finalize(S.begin);
	sqlite3_finalize(S.commit);
	sqlite3_finalize(S.rollback);
	sqlite3_finalize(S.setgen);
	if (clean && sqlite3_get_autocommit(S.db)) {
		char tmp[32];
		snprintf(tmp, sizeof tmp, "%" PRIu64, generation);
		if (sql_exec("BEGIN IMMEDIATE") == 0) {
			if (meta_set("generation", tmp) == 0 && meta_set("clean", "1") == 0)
				sql_exec("COMMIT");
			else
				sql_exec("ROLLBACK");
		}
	}
	sqlite3_close(S.db);
	S.db = NULL;
	buf_free(&S.sql);
	buf_free(&S.json);
}
