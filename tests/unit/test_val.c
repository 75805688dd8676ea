/* test_val.c — value tree: constructors, dup/free, equality, datetime. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "val/val.h"

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	assert_non_null(d);
	return d;
}

static struct val *sample_tree(void)
{
	struct val *st = val_struct_h(4);
	st->u.members[0].key = xstrdup("name_label");
	st->u.members[0].klen = 10;
	st->u.members[0].v = val_cstr_h("vm one");
	st->u.members[1].key = xstrdup("VCPUs_max");
	st->u.members[1].klen = 9;
	st->u.members[1].v = val_int_h(4);
	struct val *arr = val_array_h(3);
	arr->u.items[0] = val_double_h(0.25);
	arr->u.items[1] = val_bool_h(true);
	arr->u.items[2] = &val_nil;
	st->u.members[2].key = xstrdup("list");
	st->u.members[2].klen = 4;
	st->u.members[2].v = arr;
	st->u.members[3].key = xstrdup("when");
	st->u.members[3].klen = 4;
	st->u.members[3].v = val_datetime_h(1711361472);
	return st;
}

static void t_heap_ctors(void **state)
{
	(void)state;
	struct val *s = val_str_h("ab\0cd", 5);
	assert_int_equal(s->kind, V_STR);
	assert_int_equal(s->n, 5);
	assert_memory_equal(s->u.s, "ab\0cd", 5);
	assert_int_equal(s->u.s[5], 0);
	val_free(s);

	struct val *c = val_cstr_h("");
	assert_int_equal(c->n, 0);
	assert_string_equal(c->u.s, "");
	val_free(c);

	assert_ptr_equal(val_bool_h(true), &val_true);
	assert_ptr_equal(val_bool_h(false), &val_false);

	struct val *i = val_int_h(INT64_MIN);
	assert_int_equal(i->kind, V_INT);
	assert_true(i->u.i == INT64_MIN);
	val_free(i);

	struct val *a = val_array_h(2);
	assert_null(a->u.items[0]);
	assert_null(a->u.items[1]);
	val_free(a); /* NULL items are fine */

	struct val *st = val_struct_h(1);
	assert_null(st->u.members[0].key);
	val_free(st);

	val_free(NULL);
	val_free(&val_nil);
	val_free(&val_empty_array);
}

static void t_dup_equal(void **state)
{
	(void)state;
	struct val *t = sample_tree();
	struct val *d = val_dup_h(t);
	assert_ptr_not_equal(t, d);
	assert_true(val_equal(t, d));
	assert_true(val_equal(d, t));
	assert_ptr_equal(d->u.members[2].v->u.items[1], &val_true); /* singleton shared */

	/* a change anywhere breaks equality */
	val_free(d->u.members[1].v);
	d->u.members[1].v = val_int_h(5);
	assert_false(val_equal(t, d));

	/* member order does not matter */
	struct val *e = val_dup_h(t);
	struct val_member tmp = e->u.members[0];
	e->u.members[0] = e->u.members[3];
	e->u.members[3] = tmp;
	assert_true(val_equal(t, e));

	/* INT vs I4 by value, kinds otherwise strict */
	struct val i4 = { .kind = V_I4, .u.i = 4 };
	struct val *four = val_int_h(4);
	assert_true(val_equal(&i4, four));
	struct val *s4 = val_cstr_h("4");
	assert_false(val_equal(s4, four));
	struct val *n1 = val_double_h(NAN), *n2 = val_double_h(NAN);
	assert_true(val_equal(n1, n2));
	assert_true(val_equal(NULL, &val_nil));
	assert_false(val_equal(&val_empty_str, &val_nil));
	struct val *a0 = val_array_h(0);
	assert_true(val_equal(&val_empty_array, a0));
	val_free(a0);

	val_free(n1);
	val_free(n2);
	val_free(s4);
	val_free(four);
	val_free(t);
	val_free(d);
	val_free(e);
}

static void t_struct_get(void **state)
{
	(void)state;
	struct val *t = sample_tree();
	assert_int_equal(val_struct_get(t, "VCPUs_max")->u.i, 4);
	assert_null(val_struct_get(t, "VCPUs"));
	assert_null(val_struct_get(t, "vcpus_max"));
	assert_null(val_struct_get(&val_empty_str, "x"));
	assert_null(val_struct_get(NULL, "x"));
	val_free(t);
}

static void t_arena_ctors(void **state)
{
	(void)state;
	struct arena a;
	arena_init(&a, 0);
	struct val *s = val_str_a(&a, "hello", 5);
	assert_string_equal(s->u.s, "hello");
	assert_int_equal(val_int_a(&a, -7)->u.i, -7);
	assert_true(val_double_a(&a, 1.5)->u.d == 1.5);
	assert_int_equal(val_datetime_a(&a, 12)->kind, V_DATETIME);
	struct val *ar = val_array_a(&a, 3);
	assert_null(ar->u.items[2]);
	struct val *st = val_struct_a(&a, 2);
	assert_null(st->u.members[1].v);
	arena_free(&a);

	arena_init(&a, 256);
	int n = 0;
	while (val_str_a(&a, "0123456789", 10))
		n++;
	assert_true(n > 0 && n < 20);
	assert_null(val_array_a(&a, 1000));
	arena_free(&a);
}

static void fmt_is(int64_t t, const char *want)
{
	char out[24];
	val_datetime_fmt(t, out);
	assert_string_equal(out, want);
}

static void t_datetime_fmt(void **state)
{
	(void)state;
	fmt_is(0, "19700101T00:00:00Z");
	fmt_is(1711361472, "20240325T10:11:12Z");
	fmt_is(951782400, "20000229T00:00:00Z");
	fmt_is(-1, "19691231T23:59:59Z");
	fmt_is(253402300799LL, "99991231T23:59:59Z");
	fmt_is(INT64_MAX, "99991231T23:59:59Z"); /* clamped */
	fmt_is(INT64_MIN, "00000101T00:00:00Z");
}

static void parse_is(const char *s, int64_t want)
{
	int64_t t = -12345;
	assert_int_equal(val_datetime_parse(s, strlen(s), &t), 0);
	assert_true(t == want);
}

static void parse_bad(const char *s)
{
	int64_t t;
	assert_int_equal(val_datetime_parse(s, strlen(s), &t), -1);
}

static void t_datetime_parse(void **state)
{
	(void)state;
	parse_is("20240325T10:11:12Z", 1711361472);
	parse_is("20240325T10:11:12", 1711361472);
	parse_is("20240325T101112Z", 1711361472);
	parse_is("2024-03-25T10:11:12Z", 1711361472);
	parse_is("2024-03-25T10:11:12.123456Z", 1711361472);
	parse_is("2024-03-25t10:11:12z", 1711361472);
	parse_is("2024-03-25T12:11:12+02:00", 1711361472);
	parse_is("2024-03-25T05:11:12-05:00", 1711361472);
	parse_is("2024-03-25T05:11:12-0500", 1711361472);
	parse_is("2024-03-25T10:11:12", 1711361472);
	parse_is("19700101T00:00:00Z", 0);
	parse_is("19691231T23:59:59Z", -1);
	parse_is("20000229T00:00:00Z", 951782400);
	for (int64_t t = -5000000000LL; t < 250000000000LL; t += 987654321) {
		char out[24];
		int64_t back;
		val_datetime_fmt(t, out);
		assert_int_equal(val_datetime_parse(out, 18, &back), 0);
		assert_true(back == t);
	}
	parse_bad("");
	parse_bad("2024");
	parse_bad("20240325");
	parse_bad("20240325T");
	parse_bad("20240325T10:11");
	parse_bad("20240325X10:11:12Z");
	parse_bad("20241325T10:11:12Z");
	parse_bad("20230229T10:11:12Z");
	parse_bad("20240325T24:11:12Z");
	parse_bad("20240325T10:11:12ZZ");
	parse_bad("20240325T10:11:12+2");
	parse_bad("2024-03-25T10:11:12.Z");
	parse_bad("2024-03-2510:11:12Z");
	parse_bad("abcdefghTij:kl:mnZ");
	parse_bad("2024-03-25T10:11:12+25:00");
	int64_t t;
	assert_int_equal(val_datetime_parse("20240325T10:11:12Z", 10, &t), -1); /* length respected */
	assert_int_equal(val_datetime_parse(NULL, 0, &t), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_heap_ctors),   cmocka_unit_test(t_dup_equal),
		cmocka_unit_test(t_struct_get),   cmocka_unit_test(t_arena_ctors),
		cmocka_unit_test(t_datetime_fmt), cmocka_unit_test(t_datetime_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
