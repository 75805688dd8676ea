/* test_dispatch.c — the dispatcher on an in-memory database: name lookup,
 * parameter count and types, sessions, the generic engine, Async tasks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "api/api.h"
#include "api/roles.h"

struct done {
	bool called;
};

static void on_done(void *opaque)
{
	((struct done *)opaque)->called = true;
}

/* Run one JSON-RPC request as the given caller; returns the parsed reply. */
static json_t *call(bool local_root, const char *fmt, ...)
{
	char body[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	struct arena a;
	arena_init(&a, 1 << 20);
	struct rpc_request req;
	const char *why = NULL;
	assert_int_equal(rpc_json_decode(&a, body, strlen(body), &req, &why), 0);
	struct buf out;
	buf_init(&out);
	struct done d = {false};
	int rc = api_call(uv_default_loop(), &a, &req, local_root, &out, on_done, &d);
	assert_true(rc >= 0);
	if (rc == 1)
		while (!d.called)
			uv_run(uv_default_loop(), UV_RUN_ONCE);
	json_error_t err;
	json_t *j = json_loadb(out.p, out.len, 0, &err);
	assert_non_null(j);
	buf_free(&out);
	arena_free(&a);
	return j;
}

static const char *result_str(json_t *j)
{
	json_t *r = json_object_get(j, "result");
	assert_non_null(r);
	assert_true(json_is_string(r));
	return json_string_value(r);
}

static void assert_error(json_t *j, const char *code, int nparams, ...)
{
	json_t *e = json_object_get(j, "error");
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "message")), code);
	json_t *data = json_object_get(e, "data");
	assert_int_equal((int)json_array_size(data), nparams);
	va_list ap;
	va_start(ap, nparams);
	for (int i = 0; i < nparams; i++) {
		const char *want = va_arg(ap, const char *);
		if (want)
			assert_string_equal(json_string_value(json_array_get(data, (size_t)i)), want);
	}
	va_end(ap);
}

static char session[DB_REF_MAX];

static int setup(void **state)
{
	assert_int_equal(db_open(NULL), 0);
	struct xerr e = {0};
	assert_int_equal(roles_seed(&e), 0);
	api_srv.session_timeout_s = 3600;
	api_init();
	json_t *j = call(true, "{\"jsonrpc\":\"2.0\",\"method\":\"session.login_with_password\","
			       "\"params\":[\"root\",\"x\"],\"id\":1}");
	snprintf(session, sizeof(session), "%s", result_str(j));
	json_decref(j);
	return 0;
}

static int teardown(void **state)
{
	db_close();
	return 0;
}

static void test_unknown_method(void **state)
{
	json_t *j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"VM.frobnicate\",\"params\":[],\"id\":1}");
	assert_error(j, "MESSAGE_METHOD_UNKNOWN", 1, "VM.frobnicate");
	json_decref(j);
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"Async.VM.frobnicate\",\"params\":[],\"id\":1}");
	assert_error(j, "MESSAGE_METHOD_UNKNOWN", 1, "VM.frobnicate");
	json_decref(j);
}

static void test_count_mismatch(void **state)
{
	json_t *j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"VM.get_all\",\"params\":[],\"id\":1}");
	assert_error(j, "MESSAGE_PARAMETER_COUNT_MISMATCH", 3, "VM.get_all", "0", "-1");
	json_decref(j);
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"session.login_with_password\",\"params\":[\"root\"],\"id\":1}");
	assert_error(j, "MESSAGE_PARAMETER_COUNT_MISMATCH", 3, "session.login_with_password", "2", "1");
	json_decref(j);
}

static void test_session_invalid(void **state)
{
	json_t *j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"VM.get_all\",\"params\":[\"OpaqueRef:bad\"],\"id\":1}");
	assert_error(j, "SESSION_INVALID", 1, "OpaqueRef:bad");
	json_decref(j);
}

static void test_create_get_destroy(void **state)
{
	json_t *j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"VM_appliance.create\",\"params\":[\"%s\","
				"{\"name_label\":\"app\",\"name_description\":\"d\"}],\"id\":1}", session);
	char ref[DB_REF_MAX];
	snprintf(ref, sizeof(ref), "%s", result_str(j));
	json_decref(j);
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"VM_appliance.get_record\",\"params\":[\"%s\",\"%s\"],\"id\":1}",
		 session, ref);
	json_t *rec = json_object_get(j, "result");
	assert_string_equal(json_string_value(json_object_get(rec, "name_label")), "app");
	assert_true(json_is_array(json_object_get(rec, "VMs")));
	json_decref(j);
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"secret.create\",\"params\":[\"%s\","
		 "{\"value\":\"s\",\"other_config\":{}}],\"id\":1}", session);
	char sec[DB_REF_MAX];
	snprintf(sec, sizeof(sec), "%s", result_str(j));
	json_decref(j);
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"secret.add_to_other_config\",\"params\":[\"%s\",\"%s\",\"k\",\"v\"],\"id\":1}",
		 session, sec);
	assert_string_equal(result_str(j), "");
	json_decref(j);
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"secret.add_to_other_config\",\"params\":[\"%s\",\"%s\",\"k\",\"w\"],\"id\":1}",
		 session, sec);
	assert_error(j, "MAP_DUPLICATE_KEY", 4, "secret", "other_config", sec, "k");
	json_decref(j);
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"VM_appliance.destroy\",\"params\":[\"%s\",\"%s\"],\"id\":1}",
		 session, ref);
	json_decref(j);
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"VM_appliance.get_name_label\",\"params\":[\"%s\",\"%s\"],\"id\":1}",
		 session, ref);
	assert_error(j, "HANDLE_INVALID", 2, "VM_appliance", ref);
	json_decref(j);
}

static void test_type_errors(void **state)
{
	json_t *j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"pool.get_all_records_where\",\"params\":[\"%s\",42],\"id\":1}",
			 session);
	assert_error(j, "INTERNAL_ERROR", 1, "Expected string for parameter expr");
	json_decref(j);
}

static void test_list_methods(void **state)
{
	json_t *j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"system.listMethods\",\"params\":[],\"id\":1}");
	json_t *r = json_object_get(j, "result");
	assert_true(json_array_size(r) > 1500);
	json_decref(j);
}

static void test_not_implemented(void **state)
{
	json_t *j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"console.create\",\"params\":[\"%s\",{}],\"id\":1}",
			 session);
	assert_error(j, "NOT_IMPLEMENTED", 1, "console.create");
	json_decref(j);
}

static void test_async_task(void **state)
{
	json_t *j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"Async.VM_appliance.create\",\"params\":[\"%s\","
				"{\"name_label\":\"async\",\"name_description\":\"\"}],\"id\":1}", session);
	char task[DB_REF_MAX];
	snprintf(task, sizeof(task), "%s", result_str(j));
	json_decref(j);
	for (int i = 0; i < 200; i++) {
		j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"task.get_status\",\"params\":[\"%s\",\"%s\"],\"id\":1}",
			 session, task);
		bool pending = strcmp(result_str(j), "pending") == 0;
		json_decref(j);
		if (!pending)
			break;
		uv_run(uv_default_loop(), UV_RUN_NOWAIT);
		usleep(10000);
	}
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"task.get_record\",\"params\":[\"%s\",\"%s\"],\"id\":1}",
		 session, task);
	json_t *rec = json_object_get(j, "result");
	assert_string_equal(json_string_value(json_object_get(rec, "status")), "success");
	assert_string_equal(json_string_value(json_object_get(rec, "name_label")), "Async.VM_appliance.create");
	assert_true(strncmp(json_string_value(json_object_get(rec, "result")), "<value>OpaqueRef:", 17) == 0);
	json_decref(j);
	j = call(false, "{\"jsonrpc\":\"2.0\",\"method\":\"Async.VM_appliance.get_record\",\"params\":[\"%s\",\"x\"],\"id\":1}",
		 session);
	assert_error(j, "Fault", 1, NULL);
	json_decref(j);
	uv_run(uv_default_loop(), UV_RUN_NOWAIT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unknown_method),
		cmocka_unit_test(test_count_mismatch),
		cmocka_unit_test(test_session_invalid),
		cmocka_unit_test(test_create_get_destroy),
		cmocka_unit_test(test_type_errors),
		cmocka_unit_test(test_list_methods),
		cmocka_unit_test(test_not_implemented),
		cmocka_unit_test(test_async_task),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
