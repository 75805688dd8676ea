/* messages.c — the message class (alerts), as the original serves it
 * (ocaml/xapi/xapi_message.ml was read, not copied).
 *
 * The original keeps messages in files outside its database; here they are
 * rows of the persistent message class, so they are as durable as every
 * other object and their creation and deletion stamp database generations.
 * event.from reports them through the token's second part (events.c).
 * Lists are newest first, as the original sorts them; at most
 * events_message_limit() messages are kept (the oldest go first).
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/events.h"
#include "base/util.h"

static int msg_cls(void)
{
	static int c = -2;
	if (c == -2)
		c = idl_class_find("message");
	return c;
}

/* The class behind a value of the cls enum, as the original's check_uuid. */
static int cls_of_enum(const char *v)
{
	static const char *const map[][2] = {
		{"VM", "VM"}, {"Host", "host"}, {"SR", "SR"}, {"Pool", "pool"},
		{"VMPP", "VMPP"}, {"VMSS", "VMSS"}, {"PVS_proxy", "PVS_proxy"},
		{"VDI", "VDI"}, {"Certificate", "Certificate"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(map[i][0], v) == 0)
			return idl_class_find(map[i][1]);
	return -1;
}

static bool object_exists(const char *cls, const char *uuid)
{
	int k = cls_of_enum(cls);
	if (k < 0)
		return false;
	db_rdlock();
	bool ok = db_get_by_uuid(k, uuid) != NULL;
	db_unlock();
	return ok;
}

static struct val **msg_cols(struct api_ctx *c, const char *uuid, int64_t now)
{
	int k = msg_cls();
	struct val **cols = api_row_new(k);
	api_row_set(k, cols, "uuid", val_cstr_h(uuid));
	api_row_set(k, cols, "name", val_cstr_h(api_str(c, 1)));
	api_row_set(k, cols, "priority", val_int_h(api_int(c, 2)));
	api_row_set(k, cols, "cls", val_cstr_h(api_str(c, 3)));
	api_row_set(k, cols, "obj_uuid", val_cstr_h(api_str(c, 4)));
	api_row_set(k, cols, "timestamp", val_datetime_h(now));
	api_row_set(k, cols, "body", val_cstr_h(api_str(c, 5)));
	return cols;
}

static void message_create(struct api_ctx *c)
{
	const char *cls = api_str(c, 3), *obj = api_str(c, 4);
	if (!object_exists(cls, obj)) {
		api_fail(c, "UUID_INVALID", 2, cls, obj);
		return;
	}
	int k = msg_cls();
	char ref[DB_REF_MAX], uuid[40];
	db_ref_new(ref);
	db_uuid_new(uuid);
	int64_t now = util_now();
	for (int attempt = 0;; attempt++) {
		struct db_txn *t = db_txn_new();
		/* keep at most the limit: the oldest go (the original's message gc) */
		db_rdlock();
		long over = (long)db_count(k) + 1 - events_message_limit();
		for (struct db_row *r = db_next(k, NULL); r && over > 0; r = db_next(k, r), over--)
			db_txn_delete(t, k, r->ref);
		db_unlock();
		struct val **cols = msg_cols(c, uuid, now);
		db_txn_insert(t, k, ref, cols);
		free(cols);
		struct xerr e = {0};
		if (db_txn_commit(t, &e) == 0)
			break;
		/* a concurrent create removed the same old message first: again */
		if (attempt >= 3) {
			xerr_move(&c->err, &e);
			return;
		}
		xerr_clear(&e);
	}
	enc_cstr(c->out, ref);
}

/* Rows of the message class, newest first (read lock held); caller frees. */
static struct db_row **newest_first(size_t *n)
{
	int k = msg_cls();
	size_t cnt = db_count(k), i = cnt;
	struct db_row **v = util_calloc(cnt ? cnt : 1, sizeof(*v));
	for (struct db_row *r = db_next(k, NULL); r && i > 0; r = db_next(k, r))
		v[--i] = r;
	*n = cnt - i;
	if (i)
		memmove(v, v + i, *n * sizeof(*v));
	return v;
}

struct mfilter {
	const char *cls, *obj; /* NULL: any */
	int64_t since;         /* timestamp > since */
};

static bool mf_match(const struct mfilter *f, const struct db_row *r)
{
	int k = msg_cls();
	const struct val *ts = r->cols[api_field(k, "timestamp")];
	if (!ts || ts->u.i <= f->since)
		return false;
	if (f->cls) {
		const struct val *cv = r->cols[api_field(k, "cls")];
		const struct val *ov = r->cols[api_field(k, "obj_uuid")];
		if (!cv || cv->kind != V_STR || strcmp(cv->u.s, f->cls) != 0)
			return false;
		if (!ov || ov->kind != V_STR || strcmp(ov->u.s, f->obj) != 0)
			return false;
	}
	return true;
}

static void records(struct api_ctx *c, const struct mfilter *f)
{
	enc_struct_begin(c->out);
	db_rdlock();
	size_t n;
	struct db_row **v = newest_first(&n);
	for (size_t i = 0; i < n; i++) {
		if (f && !mf_match(f, v[i]))
			continue;
		enc_member_plain(c->out, v[i]->ref, strlen(v[i]->ref));
		api_write_record(c->out, v[i]);
	}
	db_unlock();
	free(v);
	enc_struct_end(c->out);
}

static void message_get_all_records(struct api_ctx *c)
{
	records(c, NULL);
}

static void message_get_since(struct api_ctx *c)
{
	const struct val *s = c->params[1];
	struct mfilter f = {.since = s && s->kind == V_DATETIME ? s->u.i : 0};
	records(c, &f);
}

static void message_get(struct api_ctx *c)
{
	const char *cls = api_str(c, 1), *obj = api_str(c, 2);
	if (!object_exists(cls, obj)) {
		api_fail(c, "UUID_INVALID", 0); /* the original gives no parameters here */
		return;
	}
	const struct val *s = c->params[3];
	struct mfilter f = {.cls = cls, .obj = obj,
			    .since = s && s->kind == V_DATETIME ? s->u.i : 0};
	records(c, &f);
}

static void message_get_all(struct api_ctx *c)
{
	enc_array_begin(c->out);
	db_rdlock();
	size_t n;
	struct db_row **v = newest_first(&n);
	for (size_t i = 0; i < n; i++)
		enc_cstr(c->out, v[i]->ref);
	db_unlock();
	free(v);
	enc_array_end(c->out);
}

static void message_get_record(struct api_ctx *c)
{
	const char *ref = api_str(c, 1);
	db_rdlock();
	struct db_row *r = db_get(msg_cls(), ref);
	if (r)
		api_write_record(c->out, r);
	else
		api_fail(c, "HANDLE_INVALID", 2, "message", ref);
	db_unlock();
}

static void message_get_by_uuid(struct api_ctx *c)
{
	const char *uuid = api_str(c, 1);
	db_rdlock();
	struct db_row *r = db_get_by_uuid(msg_cls(), uuid);
	if (r)
		enc_cstr(c->out, r->ref);
	else
		api_fail(c, "UUID_INVALID", 2, "message", uuid);
	db_unlock();
}

static int destroy_one(struct api_ctx *c, const char *ref)
{
	db_rdlock();
	bool ok = db_get(msg_cls(), ref) != NULL;
	db_unlock();
	if (!ok) {
		api_fail(c, "HANDLE_INVALID", 2, "message", ref);
		return -1;
	}
	struct db_txn *t = db_txn_new();
	db_txn_delete(t, msg_cls(), ref);
	if (api_commit(c, t) < 0) {
		xerr_clear(&c->err);
		api_fail(c, "HANDLE_INVALID", 2, "message", ref);
		return -1;
	}
	return 0;
}

static void message_destroy(struct api_ctx *c)
{
	if (destroy_one(c, api_str(c, 1)) == 0)
		enc_void(c->out);
}

/* One after the other, as the original: those before a bad ref are gone. */
static void message_destroy_many(struct api_ctx *c)
{
	const struct val *set = c->params[1];
	for (uint32_t i = 0; set && set->kind == V_ARRAY && i < set->n; i++)
		if (destroy_one(c, set->u.items[i]->kind == V_STR ? set->u.items[i]->u.s : "") < 0)
			return;
	enc_void(c->out);
}

const struct api_impl message_impls[] = {
	{"message.create", message_create, false},
	{"message.destroy", message_destroy, false},
	{"message.destroy_many", message_destroy_many, false},
	{"message.get_all_records", message_get_all_records, true},
	{"message.get_since", message_get_since, true},
	{"message.get", message_get, true},
	{"message.get_all", message_get_all, true},
	{"message.get_record", message_get_record, true},
	{"message.get_by_uuid", message_get_by_uuid, true},
	{NULL, NULL, false},
};
