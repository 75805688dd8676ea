/* generic.c — every implicit message of every class, driven by the schema:
 * field getters and setters, map and set edits, lookups, records, create and
 * destroy.  One implementation per message kind; the message's class and
 * field come from its idl entry.
 */
#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"

/* ---- helpers shared with the hand-written implementations ---- */

struct val *api_val_dup_a(struct arena *a, const struct val *v)
{
	switch (v->kind) {
	case V_STR:
		return val_str_a(a, v->u.s, v->n);
	case V_ARRAY: {
		struct val *o = val_array_a(a, v->n);
		if (!o)
			return NULL;
		for (uint32_t i = 0; i < v->n; i++)
			if (!(o->u.items[i] = api_val_dup_a(a, v->u.items[i])))
				return NULL;
		return o;
	}
	case V_STRUCT: {
		struct val *o = val_struct_a(a, v->n);
		if (!o)
			return NULL;
		for (uint32_t i = 0; i < v->n; i++) {
			o->u.members[i].key = arena_strndup(a, v->u.members[i].key, v->u.members[i].klen);
			o->u.members[i].klen = v->u.members[i].klen;
			if (!o->u.members[i].key ||
			    !(o->u.members[i].v = api_val_dup_a(a, v->u.members[i].v)))
				return NULL;
		}
		return o;
	}
	default: {
		if (v->flags & VAL_STATIC)
			return (struct val *)v;
		struct val *o = arena_alloc(a, sizeof(*o));
		if (o)
			*o = *v;
		return o;
	}
	}
}

struct val *api_param_default(struct arena *a, const struct idl_param *p)
{
	struct val *v = p->deflt ? rpc_json_value(a, p->deflt, strlen(p->deflt)) : NULL;
	if (!v)
		return &val_nil;
	/* bring it to the declared type (e.g. ints given as text, datetimes) */
	struct api_ctx tmp = {.a = a};
	struct val *c = api_convert(&tmp, p->ty, v, p->name);
	xerr_clear(&tmp.err);
	return c ? c : v;
}

int api_field(int cls, const char *field)
{
	int f = idl_field_find(cls, field);
	if (f < 0) {
		log_err("no field %s.%s", idl_classes[cls].name, field);
		abort();
	}
	return f;
}

struct val **api_row_new(int cls)
{
	return util_calloc((size_t)idl_classes[cls].nfields, sizeof(struct val *));
}

void api_row_set(int cls, struct val **cols, const char *field, struct val *v)
{
	int f = api_field(cls, field);
	val_free(cols[f]);
	cols[f] = v;
}

/* ---- records ---- */

void api_write_field(struct enc *e, const struct idl_field *f, const struct val *v)
{
	enc_val(e, v ? v : &val_empty_str);
}

void api_write_record(struct enc *e, const struct db_row *row)
{
	const struct idl_class *c = &idl_classes[row->cls];
	enc_struct_begin(e);
	for (int i = 0; i < c->nfields; i++) {
		const struct idl_field *f = &c->fields[i];
		if (f->internal)
			continue;
		const struct val *v = row->cols[i];
		if (f->ty->kind == TY_OPTION && (!v || v->kind == V_NIL))
			continue;
		enc_member_plain(e, f->name, f->name_len);
		api_write_field(e, f, v);
	}
	enc_struct_end(e);
}

/* ---- the generic implementations ---- */

static struct db_row *self_row(struct api_ctx *c, int i)
{
	const char *ref = api_str(c, i);
	struct db_row *r = db_get(c->msg->cls, ref);
	if (!r)
		api_fail(c, "HANDLE_INVALID", 2, idl_classes[c->msg->cls].name, ref);
	return r;
}

/* Does the row exist now?  (writes: checked again at commit) */
static bool self_exists(struct api_ctx *c, int i)
{
	db_rdlock();
	bool ok = self_row(c, i) != NULL;
	db_unlock();
	return ok;
}

static void g_get_field(struct api_ctx *c)
{
	db_rdlock();
	struct db_row *r = self_row(c, 1);
	if (r)
		api_write_field(c->out, &idl_classes[r->cls].fields[c->msg->field],
				r->cols[c->msg->field]);
	db_unlock();
}

static void g_set_field(struct api_ctx *c)
{
	if (!self_exists(c, 1))
		return;
	struct db_txn *t = db_txn_new();
	db_txn_set(t, c->msg->cls, api_str(c, 1), c->msg->field, api_to_heap(c->params[2]));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

/* An explicit set_<field> message whose effect here is the plain update of
 * that field (the field is found by name). */
static void g_set_named(struct api_ctx *c)
{
	const char *name = strrchr(c->msg->wire, '.') + 1 + 4; /* after "set_" */
	int f = idl_field_find(c->msg->cls, name);
	if (f < 0) {
		api_fail(c, "NOT_IMPLEMENTED", 1, c->msg->wire);
		return;
	}
	if (!self_exists(c, 1))
		return;
	struct db_txn *t = db_txn_new();
	db_txn_set(t, c->msg->cls, api_str(c, 1), f, api_to_heap(c->params[2]));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void g_map_add(struct api_ctx *c)
{
	if (!self_exists(c, 1))
		return;
	struct db_txn *t = db_txn_new();
	db_txn_map_add(t, c->msg->cls, api_str(c, 1), c->msg->field, api_str(c, 2),
		       api_to_heap(c->params[3]));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void g_map_remove(struct api_ctx *c)
{
	if (!self_exists(c, 1))
		return;
	struct db_txn *t = db_txn_new();
	db_txn_map_remove(t, c->msg->cls, api_str(c, 1), c->msg->field, api_str(c, 2));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void g_set_add(struct api_ctx *c)
{
	if (!self_exists(c, 1))
		return;
	struct db_txn *t = db_txn_new();
	db_txn_set_add(t, c->msg->cls, api_str(c, 1), c->msg->field, api_to_heap(c->params[2]));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void g_set_remove(struct api_ctx *c)
{
	if (!self_exists(c, 1))
		return;
	struct db_txn *t = db_txn_new();
	db_txn_set_remove(t, c->msg->cls, api_str(c, 1), c->msg->field, c->params[2]);
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void g_get_by_uuid(struct api_ctx *c)
{
	const char *uuid = api_str(c, 1);
	db_rdlock();
	struct db_row *r = db_get_by_uuid(c->msg->cls, uuid);
	if (r)
		enc_cstr(c->out, r->ref);
	else
		api_fail(c, "UUID_INVALID", 2, idl_classes[c->msg->cls].name, uuid);
	db_unlock();
}

static void g_get_by_name_label(struct api_ctx *c)
{
	const struct val *want = c->params[1];
	int nf = idl_classes[c->msg->cls].name_label_field;
	enc_array_begin(c->out);
	db_rdlock();
	for (struct db_row *r = db_next(c->msg->cls, NULL); r; r = db_next(c->msg->cls, r)) {
		const struct val *v = r->cols[nf];
		if (v && v->kind == V_STR && v->n == want->n && memcmp(v->u.s, want->u.s, v->n) == 0)
			enc_cstr(c->out, r->ref);
	}
	db_unlock();
	enc_array_end(c->out);
}

static void g_get_record(struct api_ctx *c)
{
	db_rdlock();
	struct db_row *r = self_row(c, 1);
	if (r)
		api_write_record(c->out, r);
	db_unlock();
}

static void list_rows(struct api_ctx *c, const char *expr, bool records)
{
	struct db_filter *f = NULL;
	if (expr) {
		struct xerr e = {0};
		f = db_filter_compile(c->msg->cls, expr, &e);
		if (!f) {
			xerr_move(&c->err, &e);
			return;
		}
	}
	int cls = c->msg->cls;
	db_rdlock();
	/* reserve for the whole reply at once: no copying as it grows */
	buf_reserve(c->out->b, (size_t)db_count(cls) * (records ? 2048 : 64));
	db_unlock();
	if (records)
		enc_struct_begin(c->out);
	else
		enc_array_begin(c->out);
	db_rdlock();
	for (struct db_row *r = db_next(cls, NULL); r; r = db_next(cls, r)) {
		if (f && !db_filter_match(f, r))
			continue;
		if (records) {
			enc_member_plain(c->out, r->ref, strlen(r->ref));
			api_write_record(c->out, r);
		} else {
			enc_cstr(c->out, r->ref);
		}
	}
	db_unlock();
	if (records)
		enc_struct_end(c->out);
	else
		enc_array_end(c->out);
	db_filter_free(f);
}

static void g_get_all(struct api_ctx *c)
{
	list_rows(c, NULL, false);
}

static void g_get_all_records(struct api_ctx *c)
{
	list_rows(c, NULL, true);
}

static void g_get_all_where(struct api_ctx *c)
{
	list_rows(c, api_str(c, 1), false);
}

static void g_get_all_records_where(struct api_ctx *c)
{
	list_rows(c, api_str(c, 1), true);
}

/* Build the columns of a new row from a create record: RW and RO/constructor
 * fields are read from the record (defaults where absent, an error where a
 * required one is absent); the rest take their defaults.  uuid is fresh. */
struct val **api_cols_from_record(struct api_ctx *c, int cls, const struct val *rec)
{
	const struct idl_class *k = &idl_classes[cls];
	struct val **cols = api_row_new(cls);
	for (int i = 0; i < k->nfields; i++) {
		const struct idl_field *f = &k->fields[i];
		if (f->qual == Q_RO_RUNTIME || f->internal)
			continue;
		struct val *v = val_struct_get(rec, f->name);
		if (!v) {
			if (f->required) {
				char *why = arena_printf(c->a, "Dispatcher_FieldNotFound(\"%s\")", f->name);
				api_fail(c, "INTERNAL_ERROR", 1, why);
				goto fail;
			}
			continue;
		}
		struct val *cv = api_convert(c, f->ty, v, f->name);
		if (!cv)
			goto fail;
		cols[i] = api_to_heap(cv);
	}
	if (k->uuid_field >= 0) {
		char uuid[40];
		db_uuid_new(uuid);
		val_free(cols[k->uuid_field]);
		cols[k->uuid_field] = val_cstr_h(uuid);
	}
	return cols;
fail:
	api_cols_free(cls, cols);
	return NULL;
}

void api_cols_free(int cls, struct val **cols)
{
	if (!cols)
		return;
	for (int i = 0; i < idl_classes[cls].nfields; i++)
		val_free(cols[i]);
	free(cols);
}

void api_insert_reply(struct api_ctx *c, int cls, struct val **cols)
{
	char ref[DB_REF_MAX];
	db_ref_new(ref);
	struct db_txn *t = db_txn_new();
	db_txn_insert(t, cls, ref, cols);
	free(cols);
	if (api_commit(c, t) == 0)
		enc_cstr(c->out, ref);
}

static void g_create(struct api_ctx *c)
{
	struct val **cols = api_cols_from_record(c, c->msg->cls, c->params[1]);
	if (cols)
		api_insert_reply(c, c->msg->cls, cols);
}

static void g_destroy(struct api_ctx *c)
{
	if (!self_exists(c, 1))
		return;
	struct db_txn *t = db_txn_new();
	db_txn_delete(t, c->msg->cls, api_str(c, 1));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

api_fn generic_fn(const struct idl_msg *m, bool *quick)
{
	*quick = true;
	switch (m->kind) {
	case MK_GET_FIELD:
		return g_get_field;
	case MK_GET_BY_UUID:
		return g_get_by_uuid;
	case MK_GET_BY_NAME_LABEL:
		return g_get_by_name_label;
	case MK_GET_RECORD:
		return g_get_record;
	case MK_GET_ALL:
		return g_get_all;
	case MK_GET_ALL_RECORDS:
		return g_get_all_records;
	case MK_GET_ALL_WHERE:
		return g_get_all_where;
	case MK_GET_ALL_RECORDS_WHERE:
		return g_get_all_records_where;
	default:
		break;
	}
	*quick = false;
	switch (m->kind) {
	case MK_SET_FIELD:
		return g_set_field;
	case MK_MAP_ADD:
		return g_map_add;
	case MK_MAP_REMOVE:
		return g_map_remove;
	case MK_SET_ADD:
		return g_set_add;
	case MK_SET_REMOVE:
		return g_set_remove;
	case MK_CREATE:
		return g_create;
	case MK_DESTROY:
		return g_destroy;
	default:
		return NULL;
	}
}

/* Messages the datamodel marks overridden whose behaviour here is exactly the
 * generic one (no side effects beyond the row itself). */
const struct api_impl generic_impls[] = {
	{"VM_appliance.create", g_create, false},
	{"VM_appliance.destroy", g_destroy, false},
	{"VMSS.create", g_create, false},
	{"VMSS.destroy", g_destroy, false},
	{"secret.create", g_create, false},
	{"secret.destroy", g_destroy, false},
	{"user.create", g_create, false},
	{"user.destroy", g_destroy, false},
	{"VM.set_xenstore_data", g_set_field, false},
	{"VM.set_is_a_template", g_set_field, false},
	/* explicit setters that only update their field */
	{"pool.set_ext_auth_max_threads", g_set_named, false},
	{"pool.set_local_auth_max_threads", g_set_named, false},
	{"pool.set_update_sync_enabled", g_set_named, false},
	{"VM.set_HVM_boot_policy", g_set_named, false},
	{"VM.set_actions_after_crash", g_set_named, false},
	{"VM.set_has_vendor_device", g_set_named, false},
	{"VM.set_appliance", g_set_named, false},
	{"VM.set_suspend_VDI", g_set_named, false},
	{"VM.set_order", g_set_named, false},
	{"VM.set_shutdown_delay", g_set_named, false},
	{"VM.set_start_delay", g_set_named, false},
	{"VM.set_ha_always_run", g_set_named, false},
	{"VM.set_ha_restart_priority", g_set_named, false},
	{"VM.set_NVRAM", g_set_named, false},
	{"host.set_iscsi_iqn", g_set_named, false},
	{"SR.set_name_label", g_set_named, false},
	{"SR.set_name_description", g_set_named, false},
	{"VDI.set_name_label", g_set_named, false},
	{"VDI.set_name_description", g_set_named, false},
	/* the message class's queries have the generic shapes */
	{"message.get_all_records_where", g_get_all_records_where, true},
	{NULL, NULL, false},
};
