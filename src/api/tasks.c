/* tasks.c — the task row behind an Async.X.y call. */
#include "api/tasks.h"

#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"

char *task_create_for_call(struct arena *a, const char *name, const char *session,
			   struct xerr *err)
{
	int cls = idl_class_find("task");
	char ref[DB_REF_MAX], uuid[40];
	db_ref_new(ref);
	db_uuid_new(uuid);
	struct val **cols = api_row_new(cls);
	api_row_set(cls, cols, "uuid", val_cstr_h(uuid));
	api_row_set(cls, cols, "name_label", val_cstr_h(name));
	api_row_set(cls, cols, "created", val_datetime_h(util_now()));
	api_row_set(cls, cols, "status", val_cstr_h("pending"));
	api_row_set(cls, cols, "resident_on", val_cstr_h(api_srv.host_ref));
	struct val *ops = val_array_h(1);
	ops->u.items[0] = val_cstr_h("cancel");
	api_row_set(cls, cols, "allowed_operations", ops);
	struct db_txn *t = db_txn_new();
	db_txn_insert(t, cls, ref, cols);
	free(cols);
	if (db_txn_commit(t, err) < 0)
		return NULL;
	(void)session;
	return arena_strndup(a, ref, strlen(ref));
}

void task_complete(const char *task, const struct xerr *err, const char *result_xml)
{
	int cls = idl_class_find("task");
	struct db_txn *t = db_txn_new();
	db_txn_set(t, cls, task, api_field(cls, "finished"), val_datetime_h(util_now()));
	db_txn_set(t, cls, task, api_field(cls, "progress"), val_double_h(1.0));
	db_txn_set(t, cls, task, api_field(cls, "allowed_operations"), val_array_h(0));
	if (err && err->code) {
		struct val *info = val_array_h((uint32_t)err->n + 1);
		info->u.items[0] = val_cstr_h(err->code);
		for (int i = 0; i < err->n; i++)
			info->u.items[i + 1] = val_cstr_h(err->params[i]);
		db_txn_set(t, cls, task, api_field(cls, "error_info"), info);
		db_txn_set(t, cls, task, api_field(cls, "status"), val_cstr_h("failure"));
	} else {
		/* the original stores the result as XML-RPC <value> text */
		struct buf b;
		buf_init(&b);
		if (result_xml[0])
			buf_printf(&b, "%s", result_xml);
		db_txn_set(t, cls, task, api_field(cls, "result"), val_str_h(b.p ? b.p : "", b.len));
		db_txn_set(t, cls, task, api_field(cls, "status"), val_cstr_h("success"));
		buf_free(&b);
	}
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0) {
		log_warn("task %s: could not record completion: %s", task, e.code);
		xerr_clear(&e);
	}
}
