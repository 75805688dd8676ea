/* test_idl.c — checks on the generated datamodel tables and their lookups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "api/idl.h"

static const struct idl_msg *msg(const char *w)
{
	return idl_msg_find(w, strlen(w));
}

static const struct idl_field *field(const char *cls, const char *f)
{
	int c = idl_class_find(cls);
	assert_true(c >= 0);
	int i = idl_field_find(c, f);
	if (i < 0)
		return NULL;
	return &idl_classes[c].fields[i];
}

static void test_classes(void **state)
{
	(void)state;
	assert_true(idl_nclasses >= 67);
	assert_int_equal(idl_class_find("session"), 0);
	assert_true(idl_class_find("VM") >= 0);
	assert_int_equal(idl_class_find("vm"), -1); /* case-sensitive */
	assert_int_equal(idl_class_find("nope"), -1);
	int vm = idl_class_find("VM");
	assert_string_equal(idl_classes[vm].lname, "vm");
	assert_true(idl_classes[vm].in_db);
	assert_true(idl_classes[vm].persist);
	assert_int_equal(idl_classes[vm].uuid_field, idl_field_find(vm, "uuid"));
	assert_int_equal(idl_classes[vm].name_label_field,
	                 idl_field_find(vm, "name_label"));
	int s = idl_class_find("session");
	assert_true(idl_classes[s].in_db);
	assert_false(idl_classes[s].persist);
	assert_false(idl_classes[idl_class_find("task")].persist);
	assert_false(idl_classes[idl_class_find("event")].in_db);
	assert_false(idl_classes[idl_class_find("auth")].in_db);
	/* every class's name round-trips */
	for (int i = 0; i < idl_nclasses; i++)
		assert_int_equal(idl_class_find(idl_classes[i].name), i);
}

static void test_fields(void **state)
{
	(void)state;
	const struct idl_field *f = field("VM", "name_label");
	assert_non_null(f);
	assert_string_equal(f->column, "name__label");
	assert_int_equal(f->ty->kind, TY_STRING);
	f = field("VM", "memory_static_max");
	assert_non_null(f);
	assert_string_equal(f->column, "memory__static_max");
	assert_true(f->required);
	assert_string_equal(field("VM", "other_config")->column, "other_config");
	assert_string_equal(field("VM", "HVM_boot_policy")->column, "HVM__boot_policy");
	assert_string_equal(field("VM", "VCPUs_at_startup")->column, "VCPUs__at_startup");
	/* removed fields stay */
	f = field("host_metrics", "memory_free");
	assert_non_null(f);
	assert_int_equal(f->lifecycle, LC_REMOVED);
	assert_string_equal(f->column, "memory__free");
	/* internal fields */
	f = field("VBD", "reserved");
	assert_non_null(f);
	assert_true(f->internal);
	assert_non_null(field("console", "port"));
	assert_true(field("console", "port")->internal);
	assert_false(field("VM", "uuid")->internal);
	/* the synthetic event.snapshot is not a field */
	assert_null(field("event", "snapshot"));
	/* defaults */
	f = field("VM", "name_label");
	assert_true(f->has_default);
	assert_string_equal(f->deflt, "\"\"");
	f = field("VM", "tags");
	assert_string_equal(f->deflt, "[]");
	assert_int_equal(f->ty->kind, TY_SET);
	f = field("VM", "other_config");
	assert_int_equal(f->ty->kind, TY_MAP);
	assert_int_equal(f->ty->a->kind, TY_STRING);
	f = field("VM", "power_state");
	assert_int_equal(f->ty->kind, TY_ENUM);
	assert_string_equal(idl_enums[f->ty->enm].name, "vm_power_state");
	f = field("VM", "resident_on");
	assert_int_equal(f->ty->kind, TY_REF);
	assert_int_equal(f->ty->cls, idl_class_find("host"));
}

static void test_relations(void **state)
{
	(void)state;
	int vm = idl_class_find("VM"), vbd = idl_class_find("VBD");
	const struct idl_field *vbds = field("VM", "VBDs");
	assert_non_null(vbds);
	assert_int_equal(vbds->rel_cls, vbd);
	assert_int_equal(vbds->rel_field, idl_field_find(vbd, "VM"));
	const struct idl_field *vbdvm = field("VBD", "VM");
	assert_int_equal(vbdvm->many_cls, vm);
	assert_int_equal(vbdvm->many_field, idl_field_find(vm, "VBDs"));
	const struct idl_field *rv = field("host", "resident_VMs");
	assert_int_equal(rv->rel_cls, vm);
	assert_int_equal(rv->rel_field, idl_field_find(vm, "resident_on"));
	assert_int_equal(field("network", "VIFs")->rel_cls, idl_class_find("VIF"));
	assert_int_equal(field("SR", "PBDs")->rel_cls, idl_class_find("PBD"));
	assert_int_equal(field("session", "tasks")->rel_cls, idl_class_find("task"));
	assert_int_equal(field("VM", "name_label")->rel_cls, -1);
	assert_int_equal(field("VM", "name_label")->many_cls, -1);
	/* every relation is consistent both ways */
	for (int c = 0; c < idl_nclasses; c++)
		for (int i = 0; i < idl_classes[c].nfields; i++) {
			const struct idl_field *f = &idl_classes[c].fields[i];
			if (f->rel_cls >= 0) {
				const struct idl_field *o =
					&idl_classes[f->rel_cls].fields[f->rel_field];
				assert_int_equal(o->many_cls, c);
				assert_int_equal(o->many_field, i);
				assert_int_equal(f->ty->kind, TY_SET);
				assert_int_equal(o->ty->kind, TY_REF);
			}
		}
}

static void test_messages(void **state)
{
	(void)state;
	const struct idl_msg *m = msg("VM.get_record");
	assert_non_null(m);
	assert_int_equal(m->kind, MK_GET_RECORD);
	assert_int_equal(m->cls, idl_class_find("VM"));
	assert_true(m->session);
	assert_false(m->async);
	assert_string_equal(m->perm, "vm.get_record");
	assert_int_equal(m->result->kind, TY_RECORD);
	assert_ptr_equal(msg("VM_get_record"), m);
	assert_ptr_equal(idl_msg_find("VM.get_recordX", 13), m); /* n respected */
	assert_null(msg("VM.get_recordX"));
	assert_null(msg("VM.nope"));
	assert_null(msg("VM_nope"));
	assert_null(msg(""));
	/* alias with underscores on both sides */
	assert_ptr_equal(msg("VM_metrics_get_record"), msg("VM_metrics.get_record"));
	assert_ptr_equal(msg("VM_guest_metrics_get_os_version"),
	                 msg("VM_guest_metrics.get_os_version"));
	assert_ptr_equal(msg("host_get_name_label"), msg("host.get_name_label"));

	m = msg("session.login_with_password");
	assert_non_null(m);
	assert_false(m->session);
	assert_false(m->async);
	assert_int_equal(m->nparams, 4);
	assert_int_equal(m->nrequired, 2);
	assert_string_equal(m->params[2].name, "version");
	assert_string_equal(m->params[2].deflt, "\"1.1\"");
	assert_string_equal(m->params[3].deflt, "\"\"");
	assert_null(m->params[0].deflt);

	m = msg("VM.start");
	assert_non_null(m);
	assert_int_equal(m->kind, MK_EXPLICIT);
	assert_int_equal(m->nparams, 4);
	assert_int_equal(m->nrequired, 4); /* session, vm, start_paused, force */
	assert_string_equal(m->params[1].name, "vm");
	assert_true(m->async);
	assert_true(m->roles & (1u << ROLE_VM_OPERATOR));
	assert_false(m->roles & (1u << ROLE_READ_ONLY));
	assert_true(m->nerrors > 0);

	m = msg("VM.snapshot");
	assert_int_equal(m->nrequired, 3);
	assert_string_equal(m->params[3].deflt, "[]");
	m = msg("VDI.copy");
	assert_int_equal(m->nrequired, 2);
	assert_string_equal(m->params[2].deflt, "\"OpaqueRef:NULL\"");

	m = msg("VM.set_name_label");
	assert_int_equal(m->kind, MK_SET_FIELD);
	assert_int_equal(m->field, idl_field_find(m->cls, "name_label"));
	assert_int_equal(msg("VM.add_to_other_config")->kind, MK_MAP_ADD);
	assert_int_equal(msg("VM.remove_from_other_config")->kind, MK_MAP_REMOVE);
	assert_int_equal(msg("VM.add_tags")->kind, MK_SET_ADD);
	assert_int_equal(msg("VM.remove_tags")->kind, MK_SET_REMOVE);
	assert_int_equal(msg("VM.get_by_uuid")->kind, MK_GET_BY_UUID);
	assert_int_equal(msg("VM.get_by_name_label")->kind, MK_GET_BY_NAME_LABEL);
	assert_int_equal(msg("VM.get_all")->kind, MK_GET_ALL);
	assert_int_equal(msg("VM.get_all_records")->kind, MK_GET_ALL_RECORDS);
	m = msg("VM.create");
	assert_int_equal(m->kind, MK_CREATE);
	assert_true(m->async);
	assert_true(m->overridden);
	assert_int_equal(msg("VM.destroy")->kind, MK_DESTROY);
	assert_true(msg("VM.destroy")->overridden);
	assert_false(msg("VM.get_name_label")->overridden);
	assert_false(msg("session.logout")->async);
	assert_false(msg("task.cancel")->async);

	/* hidden messages */
	m = msg("VM.get_all_records_where");
	assert_non_null(m);
	assert_int_equal(m->kind, MK_GET_ALL_RECORDS_WHERE);
	assert_int_equal(m->nparams, 2);
	assert_non_null(msg("VM.get_all_where"));
	assert_int_equal(msg("VM.get_all_where")->kind, MK_GET_ALL_WHERE);
	assert_non_null(msg("VM.set_is_default_template"));
	assert_non_null(msg("VM.atomic_set_resident_on"));
	m = msg("session.slave_login");
	assert_non_null(m);
	assert_false(m->session);
	assert_non_null(msg("session.slave_local_login"));

	/* removed message still dispatchable */
	int removed = 0;
	for (int i = 0; i < idl_nmsgs; i++) {
		const struct idl_msg *x = &idl_msgs[i];
		assert_ptr_equal(msg(x->wire), x);
		assert_true(x->nrequired <= x->nparams);
		if (x->lifecycle == LC_REMOVED)
			removed++;
		if (x->kind >= MK_GET_FIELD && x->kind <= MK_SET_REMOVE)
			assert_true(x->field >= 0);
	}
	assert_true(removed > 0);
	assert_true(idl_nmsgs > 1900);
}

static void test_errors_enums_versions(void **state)
{
	(void)state;
	assert_true(idl_nerrors > 500);
	const struct idl_error *e = NULL;
	for (int i = 0; i < idl_nerrors; i++)
		if (strcmp(idl_errors[i].code, "HANDLE_INVALID") == 0)
			e = &idl_errors[i];
	assert_non_null(e);
	assert_int_equal(e->nparams, 2);
	assert_string_equal(e->params[0], "class");
	assert_string_equal(e->params[1], "handle");

	int ps = -1;
	for (int i = 0; i < idl_nenums; i++)
		if (strcmp(idl_enums[i].name, "vm_power_state") == 0)
			ps = i;
	assert_true(ps >= 0);
	assert_int_equal(idl_enum_value(ps, "Halted", 6), 0);
	assert_int_equal(idl_enum_value(ps, "halted", 6), 0);
	assert_int_equal(idl_enum_value(ps, "HALTED", 6), 0);
	assert_int_equal(idl_enum_value(ps, "Running", 7), 2);
	assert_int_equal(idl_enum_value(ps, "Runn", 4), -1);
	assert_int_equal(idl_enum_value(ps, "bogus", 5), -1);
	assert_int_equal(idl_enum_value(-1, "Halted", 6), -1);

	assert_int_equal(idl_api_version_major, 2);
	assert_int_equal(idl_api_version_minor, 21);
	assert_non_null(idl_schema_version);
	assert_string_equal(idl_role_names[ROLE_POOL_ADMIN], "pool-admin");
	assert_string_equal(idl_role_names[ROLE_READ_ONLY], "read-only");
}

/* No description text leaked into the tables: every string reachable from a
 * class, field, message or error is a short identifier-like token. */
static void check_token(const char *s)
{
	assert_non_null(s);
	assert_true(strlen(s) < 80);
	assert_null(strchr(s, ' '));
}

static void test_no_descriptions(void **state)
{
	(void)state;
	for (int c = 0; c < idl_nclasses; c++) {
		check_token(idl_classes[c].name);
		for (int i = 0; i < idl_classes[c].nfields; i++) {
			check_token(idl_classes[c].fields[i].name);
			check_token(idl_classes[c].fields[i].column);
		}
	}
	for (int i = 0; i < idl_nmsgs; i++) {
		check_token(idl_msgs[i].wire);
		for (int p = 0; p < idl_msgs[i].nparams; p++)
			check_token(idl_msgs[i].params[p].name);
		for (int k = 0; k < idl_msgs[i].nerrors; k++)
			check_token(idl_msgs[i].errors[k]);
	}
	for (int i = 0; i < idl_nerrors; i++) {
		check_token(idl_errors[i].code);
		for (int p = 0; p < idl_errors[i].nparams; p++)
			assert_true(strlen(idl_errors[i].params[p]) < 80);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes),
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_relations),
		cmocka_unit_test(test_messages),
		cmocka_unit_test(test_errors_enums_versions),
		cmocka_unit_test(test_no_descriptions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
