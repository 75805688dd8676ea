/* test_rpc.c — XML-RPC / JSON-RPC decoding and byte-exact reply encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "base/buf.h"
#include "rpc/rpc.h"
#include "val/val.h"

/* ---- helpers ---- */

static struct arena A;

static int setup(void **state)
{
	(void)state;
	arena_init(&A, 1 << 20);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	arena_free(&A);
	return 0;
}

static int xdec(const char *body, struct rpc_request *r)
{
	const char *why = NULL;
	int rc = rpc_xml_decode(&A, body, strlen(body), r, &why);
	if (rc)
		assert_non_null(why);
	return rc;
}

static int jdec(const char *body, struct rpc_request *r)
{
	const char *why = NULL;
	int rc = rpc_json_decode(&A, body, strlen(body), r, &why);
	if (rc)
		assert_non_null(why);
	return rc;
}

static void assert_str(const struct val *v, const char *s)
{
	assert_non_null(v);
	assert_int_equal(v->kind, V_STR);
	assert_int_equal(v->n, strlen(s));
	assert_string_equal(v->u.s, s);
}

static void assert_int(const struct val *v, int64_t i)
{
	assert_non_null(v);
	assert_int_equal(v->kind, V_INT);
	assert_true(v->u.i == i);
}

/* Encode v as a bare value and compare. */
static void enc_is(bool json, const struct val *v, const char *want)
{
	struct buf b;
	struct enc e;
	buf_init(&b);
	enc_init(&e, &b, json);
	enc_val(&e, v);
	assert_non_null(b.p);
	assert_string_equal(b.p, want);
	assert_int_equal(b.len, strlen(want));
	buf_free(&b);
}

static void dbl_is(double d, const char *xml, const char *json)
{
	struct val v = { .kind = V_DOUBLE, .u.d = d };
	enc_is(false, &v, xml);
	enc_is(true, &v, json);
}

static struct val S(const char *s)
{
	struct val v = { .kind = V_STR, .n = (uint32_t)strlen(s), .u.s = s };
	return v;
}

#define XOK_HEAD "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name>"
#define XOK_TAIL "</member></struct></value></param></params></methodResponse>"

/* ---- XML decoding ---- */

static void t_xml_python_pretty(void **state)
{
	(void)state;
	const char *body = "<?xml version='1.0'?>\n"
			   "<methodCall>\n"
			   "<methodName>session.login_with_password</methodName>\n"
			   "<params>\n"
			   "<param>\n"
			   "<value><string>root</string></value>\n"
			   "</param>\n"
			   "<param>\n"
			   "<value><string>secret</string></value>\n"
			   "</param>\n"
			   "<param>\n"
			   "<value><int>42</int></value>\n"
			   "</param>\n"
			   "<param>\n"
			   "<value><struct>\n"
			   "<member>\n"
			   "<name>a</name>\n"
			   "<value><boolean>1</boolean></value>\n"
			   "</member>\n"
			   "</struct></value>\n"
			   "</param>\n"
			   "<param>\n"
			   "<value><array><data>\n"
			   "<value><string>x</string></value>\n"
			   "<value><nil/></value></data></array></value>\n"
			   "</param>\n"
			   "</params>\n"
			   "</methodCall>\n";
	struct rpc_request r;
	assert_int_equal(xdec(body, &r), 0);
	assert_int_equal(r.proto, RPC_XML);
	assert_string_equal(r.method, "session.login_with_password");
	assert_int_equal(r.nparams, 5);
	assert_str(r.params[0], "root");
	assert_str(r.params[1], "secret");
	assert_int(r.params[2], 42);
	assert_int_equal(r.params[3]->kind, V_STRUCT);
	assert_int_equal(r.params[3]->n, 1);
	assert_string_equal(r.params[3]->u.members[0].key, "a");
	assert_ptr_equal(val_struct_get(r.params[3], "a"), &val_true);
	assert_int_equal(r.params[4]->kind, V_ARRAY);
	assert_int_equal(r.params[4]->n, 2);
	assert_str(r.params[4]->u.items[0], "x");
	assert_int_equal(r.params[4]->u.items[1]->kind, V_NIL);
	assert_null(r.id_json);
}

static void t_xml_xo_compact(void **state)
{
	(void)state;
	struct rpc_request r;
	assert_int_equal(
		xdec("<?xml version=\"1.0\" encoding=\"UTF-8\"?><methodCall><methodName>session.login_with_password</methodName><params><param><value>root</value></param><param><value>secret</value></param></params></methodCall>",
		     &r),
		0);
	assert_string_equal(r.method, "session.login_with_password");
	assert_int_equal(r.nparams, 2);
	assert_str(r.params[0], "root");
	assert_str(r.params[1], "secret");

	assert_int_equal(xdec("<?xml version=\"1.0\" encoding=\"UTF-8\"?><methodCall><methodName>system.listMethods</methodName><params /></methodCall>", &r), 0);
	assert_string_equal(r.method, "system.listMethods");
	assert_int_equal(r.nparams, 0);

	/* no <params> at all */
	assert_int_equal(xdec("<methodCall><methodName>system.listMethods</methodName></methodCall>", &r), 0);
	assert_int_equal(r.nparams, 0);

	/* XO's event.from */
	assert_int_equal(
		xdec("<?xml version=\"1.0\" encoding=\"UTF-8\"?><methodCall><methodName>event.from</methodName><params><param><value>OpaqueRef:1111</value></param><param><value><array><data><value>pool</value><value>host</value><value>VM</value><value>task</value></data></array></value></param><param><value>1</value></param><param><value><double>60.1</double></value></param></params></methodCall>",
		     &r),
		0);
	assert_int_equal(r.nparams, 4);
	assert_int_equal(r.params[1]->n, 4);
	assert_str(r.params[1]->u.items[2], "VM");
	assert_str(r.params[2], "1");
	assert_int_equal(r.params[3]->kind, V_DOUBLE);
	assert_true(r.params[3]->u.d == 60.1);
}

static const struct val *one_param(const char *valuexml)
{
	static char body[4096];
	static struct rpc_request r;
	snprintf(body, sizeof body,
		 "<methodCall><methodName>m</methodName><params><param>%s</param></params></methodCall>",
		 valuexml);
	int rc = xdec(body, &r);
	if (rc)
		fail_msg("decode failed for %s: %d", valuexml, rc);
	assert_int_equal(r.nparams, 1);
	return r.params[0];
}

static int one_param_rc(const char *valuexml)
{
	char body[4096];
	struct rpc_request r;
	snprintf(body, sizeof body,
		 "<methodCall><methodName>m</methodName><params><param>%s</param></params></methodCall>",
		 valuexml);
	return xdec(body, &r);
}

static void t_xml_scalars(void **state)
{
	(void)state;
	const struct val *v;
	assert_str(one_param("<value>plain</value>"), "plain");
	assert_str(one_param("<value> spaced </value>"), " spaced ");
	assert_str(one_param("<value/>"), "");
	assert_str(one_param("<value></value>"), "");
	assert_str(one_param("<value><string/></value>"), "");
	assert_str(one_param("<value><string> a&lt;b&amp;&quot;c&gt; </string></value>"),
		   " a<b&\"c> ");
	assert_str(one_param("<value> <string>x</string> </value>"), "x");
	assert_str(one_param("<value><![CDATA[<raw>]]></value>"), "<raw>");
	assert_str(one_param("<value>caf\xc3\xa9 &#x263A;</value>"), "caf\xc3\xa9 \xe2\x98\xba");
	assert_int(one_param("<value><int>-17</int></value>"), -17);
	assert_int(one_param("<value><i4>2147483647</i4></value>"), 2147483647);
	assert_int(one_param("<value><i8>9223372036854775807</i8></value>"), INT64_MAX);
	assert_int(one_param("<value><i8>-9223372036854775808</i8></value>"), INT64_MIN);
	assert_int(one_param("<value><int> +5 </int></value>"), 5);
	assert_int(one_param("<value><int>0</int></value>"), 0);
	assert_ptr_equal(one_param("<value><boolean>1</boolean></value>"), &val_true);
	assert_ptr_equal(one_param("<value><boolean>0</boolean></value>"), &val_false);
	assert_ptr_equal(one_param("<value><boolean>true</boolean></value>"), &val_false);
	assert_ptr_equal(one_param("<value><boolean/></value>"), &val_false);
	v = one_param("<value><double>60.1</double></value>");
	assert_int_equal(v->kind, V_DOUBLE);
	assert_true(v->u.d == 60.1);
	v = one_param("<value><double>-1.5e3</double></value>");
	assert_true(v->u.d == -1500.0);
	v = one_param("<value><dateTime.iso8601>20240325T10:11:12Z</dateTime.iso8601></value>");
	assert_int_equal(v->kind, V_DATETIME);
	assert_true(v->u.i == 1711361472);
	v = one_param("<value><dateTime.iso8601>2024-03-25T12:11:12+02:00</dateTime.iso8601></value>");
	assert_int_equal(v->kind, V_DATETIME);
	assert_true(v->u.i == 1711361472);
	assert_str(one_param("<value><dateTime.iso8601>yesterday</dateTime.iso8601></value>"),
		   "yesterday");
	assert_str(one_param("<value><base64>aGVsbG8=</base64></value>"), "aGVsbG8=");
	assert_int_equal(one_param("<value><nil/></value>")->kind, V_NIL);
	v = one_param("<value><array><data/></array></value>");
	assert_int_equal(v->kind, V_ARRAY);
	assert_int_equal(v->n, 0);
	v = one_param("<value><array/></value>");
	assert_int_equal(v->kind, V_ARRAY);
	assert_int_equal(v->n, 0);
	v = one_param("<value><struct></struct></value>");
	assert_int_equal(v->kind, V_STRUCT);
	assert_int_equal(v->n, 0);

	/* bad scalars */
	assert_int_equal(one_param_rc("<value><int>12x</int></value>"), -EINVAL);
	assert_int_equal(one_param_rc("<value><int></int></value>"), -EINVAL);
	assert_int_equal(one_param_rc("<value><int>9223372036854775808</int></value>"), -EINVAL);
	assert_int_equal(one_param_rc("<value><double>nan</double></value>"), -EINVAL);
	assert_int_equal(one_param_rc("<value><double>1.2.3</double></value>"), -EINVAL);
	assert_int_equal(one_param_rc("<value><double>1e999</double></value>"), -EINVAL);
	assert_int_equal(one_param_rc("<value><double></double></value>"), -EINVAL);
}

static void t_xml_nested(void **state)
{
	(void)state;
	const struct val *v = one_param(
		"<value><struct>"
		"<member><name>k1</name><value><array><data>"
		"<value><struct><member><name>inner</name><value><i4>1</i4></value></member></struct></value>"
		"<value><array><data><value>deep</value></data></array></value>"
		"</data></array></value></member>"
		"<member><value>swapped</value><name>k2</name></member>"
		"<member><name></name><value/></member>"
		"</struct></value>");
	assert_int_equal(v->kind, V_STRUCT);
	assert_int_equal(v->n, 3);
	const struct val *k1 = val_struct_get(v, "k1");
	assert_int_equal(k1->kind, V_ARRAY);
	assert_int_equal(k1->n, 2);
	assert_int(val_struct_get(k1->u.items[0], "inner"), 1);
	assert_str(k1->u.items[1]->u.items[0], "deep");
	assert_str(val_struct_get(v, "k2"), "swapped");
	assert_str(val_struct_get(v, ""), "");
	assert_int_equal(v->u.members[2].klen, 0);
}

static void t_xml_malformed(void **state)
{
	(void)state;
	static const char *bad[] = {
		"",
		"   ",
		"not xml",
		"<methodCall>",
		"<methodCall><methodName>x</methodName>",
		"<methodResponse><params/></methodResponse>",
		"<methodcall><methodName>x</methodName></methodcall>",
		"<methodCall><params/></methodCall>",
		"<methodCall></methodCall>",
		"<methodCall><methodName>a</methodName><methodName>b</methodName></methodCall>",
		"<methodCall><methodName>a</methodName><params/><params/></methodCall>",
		"<methodCall><methodName>a</methodName><params><value>x</value></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value>x</value><value>y</value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value>x<string>y</string></value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><string>y</string>x</value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><string>y</string><string>y</string></value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><foo/></value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><array><value/></array></value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><array><data/><data/></array></value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><struct><member><name>k</name></member></struct></value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><struct><member><value/></member></struct></value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><struct><value/></struct></value></param></params></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><string><b/></string></value></param></params></methodCall>",
		"<methodCall><methodName>a<b/></methodName></methodCall>",
		"<methodCall>text<methodName>a</methodName></methodCall>",
		"<methodCall><methodName>a</methodName></methodCall><methodCall/>",
		"<methodCall><methodName>a</methodName></methodCall>junk",
		"<methodCall><methodName>a &undefined;</methodName></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value>&#0;</value></param></params></methodCall>",
		"<methodCall><methodName>a\xff\xfe</methodName></methodCall>",
		"<methodCall><methodName>a</methodName><params><param><value><nil>x</nil></value></param></params></methodCall>",
		"<?xml version=\"1.0\"?><!DOCTYPE methodCall><methodCall><methodName>a</methodName></methodCall>",
		"<?xml version=\"1.0\"?><!DOCTYPE x SYSTEM \"file:///etc/passwd\"><methodCall><methodName>&x;</methodName></methodCall>",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct rpc_request r;
		int rc = xdec(bad[i], &r);
		if (rc != -EINVAL)
			fail_msg("case %zu accepted (rc %d): %s", i, rc, bad[i]);
	}
	/* NULL body with zero length */
	struct rpc_request r;
	const char *why;
	assert_int_equal(rpc_xml_decode(&A, NULL, 0, &r, &why), -EINVAL);
}

static void t_xml_truncated(void **state)
{
	(void)state;
	const char *body = "<?xml version=\"1.0\"?><methodCall><methodName>VM.create</methodName><params><param><value>OpaqueRef:S</value></param><param><value><struct><member><name>name_label</name><value><string>x</string></value></member><member><name>VCPUs_max</name><value><int>4</int></value></member><member><name>l</name><value><array><data><value><boolean>1</boolean></value><value><double>1.5</double></value><value><dateTime.iso8601>20240325T10:11:12Z</dateTime.iso8601></value></data></array></value></member></struct></value></param></params></methodCall>";
	size_t n = strlen(body);
	struct rpc_request r;
	const char *why;
	assert_int_equal(rpc_xml_decode(&A, body, n, &r, &why), 0);
	for (size_t i = 0; i < n; i++) {
		struct arena a;
		arena_init(&a, 1 << 20);
		int rc = rpc_xml_decode(&a, body, i, &r, &why);
		if (rc != -EINVAL)
			fail_msg("prefix %zu: rc %d", i, rc);
		arena_free(&a);
	}
}

static void t_xml_billion_laughs(void **state)
{
	(void)state;
	const char *body =
		"<?xml version=\"1.0\"?>"
		"<!DOCTYPE lolz ["
		"<!ENTITY lol \"lol\">"
		"<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">"
		"<!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">"
		"<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">"
		"<!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">"
		"<!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">"
		"<!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">"
		"<!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">"
		"<!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">"
		"<!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">"
		"]>"
		"<methodCall><methodName>&lol9;</methodName></methodCall>";
	struct rpc_request r;
	assert_int_equal(xdec(body, &r), -EINVAL);
	/* an internal-subset entity, even a harmless one, is refused */
	assert_int_equal(xdec("<!DOCTYPE m [<!ENTITY e \"x\">]><methodCall><methodName>&e;</methodName></methodCall>", &r), -EINVAL);
}

static char *nested_xml(int depth)
{
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "<methodCall><methodName>m</methodName><params><param><value>");
	for (int i = 0; i < depth; i++)
		buf_adds(&b, i % 2 ? "<array><data><value>"
				   : "<struct><member><name>k</name><value>");
	buf_adds(&b, "leaf");
	for (int i = depth - 1; i >= 0; i--)
		buf_adds(&b, i % 2 ? "</value></data></array>" : "</value></member></struct>");
	buf_adds(&b, "</value></param></params></methodCall>");
	return buf_steal(&b);
}

static char *nested_json(int depth)
{
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "{\"method\":\"m\",\"id\":1,\"params\":[");
	for (int i = 0; i < depth; i++)
		buf_adds(&b, i % 2 ? "[" : "{\"k\":");
	buf_adds(&b, "\"leaf\"");
	for (int i = depth - 1; i >= 0; i--)
		buf_adds(&b, i % 2 ? "]" : "}");
	buf_adds(&b, "]}");
	return buf_steal(&b);
}

static void t_deep_nesting(void **state)
{
	(void)state;
	struct rpc_request r;
	char *s = nested_xml(64);
	assert_int_equal(xdec(s, &r), 0);
	const struct val *v = r.params[0];
	for (int i = 0; i < 64; i++)
		v = v->kind == V_STRUCT ? v->u.members[0].v : v->u.items[0];
	assert_str(v, "leaf");
	/* re-encoding the deepest allowed tree works in both encodings */
	struct buf b;
	struct enc e;
	buf_init(&b);
	enc_init(&e, &b, true);
	enc_val(&e, r.params[0]);
	free(s);
	s = nested_json(64);
	assert_int_equal(strncmp(b.p, s + strlen("{\"method\":\"m\",\"id\":1,\"params\":["), b.len), 0);
	buf_free(&b);
	free(s);

	s = nested_xml(65);
	assert_int_equal(xdec(s, &r), -EINVAL);
	free(s);
	s = nested_xml(5000);
	assert_int_equal(xdec(s, &r), -EINVAL);
	free(s);

	s = nested_json(64);
	assert_int_equal(jdec(s, &r), 0);
	free(s);
	s = nested_json(65);
	assert_int_equal(jdec(s, &r), -EINVAL);
	free(s);
	s = nested_json(5000);
	assert_int_equal(jdec(s, &r), -EINVAL);
	free(s);
}

static void t_arena_limit(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b);
	buf_adds(&b, "<methodCall><methodName>m</methodName><params><param><value><array><data>");
	for (int i = 0; i < 2000; i++)
		buf_adds(&b, "<value>0123456789abcdef0123456789abcdef</value>");
	buf_adds(&b, "</data></array></value></param></params></methodCall>");
	struct arena a;
	struct rpc_request r;
	const char *why = NULL;
	arena_init(&a, 16 * 1024);
	assert_int_equal(rpc_xml_decode(&a, b.p, b.len, &r, &why), -E2BIG);
	assert_non_null(why);
	arena_free(&a);
	arena_init(&a, 1 << 20);
	assert_int_equal(rpc_xml_decode(&a, b.p, b.len, &r, &why), 0);
	assert_int_equal(r.params[0]->n, 2000);
	arena_free(&a);
	buf_free(&b);

	buf_init(&b);
	buf_adds(&b, "{\"method\":\"m\",\"id\":1,\"params\":[[");
	for (int i = 0; i < 2000; i++)
		buf_adds(&b, i ? ",\"0123456789abcdef0123456789abcdef\""
			       : "\"0123456789abcdef0123456789abcdef\"");
	buf_adds(&b, "]]}");
	arena_init(&a, 16 * 1024);
	assert_int_equal(rpc_json_decode(&a, b.p, b.len, &r, &why), -E2BIG);
	arena_free(&a);
	arena_init(&a, 1 << 20);
	assert_int_equal(rpc_json_decode(&a, b.p, b.len, &r, &why), 0);
	assert_int_equal(r.params[0]->n, 2000);
	arena_free(&a);
	buf_free(&b);

	/* many tiny params hitting the limit on the params array itself */
	arena_init(&a, 64);
	assert_int_equal(xdec("<methodCall><methodName>a-rather-long-method-name-that-does-not-fit-in-sixty-four-bytes-of-arena</methodName></methodCall>", &r), 0);
	const char *lm = "<methodCall><methodName>a-rather-long-method-name-that-does-not-fit-in-sixty-four-bytes-of-arena</methodName></methodCall>";
	assert_int_equal(rpc_xml_decode(&a, lm, strlen(lm), &r, &why), -E2BIG);
	arena_free(&a);
}

/* ---- JSON decoding ---- */

static void t_json_decode(void **state)
{
	(void)state;
	struct rpc_request r;
	assert_int_equal(jdec("{\"id\":0,\"jsonrpc\":\"2.0\",\"method\":\"session.login_with_password\",\"params\":[\"root\",\"secret\"]}", &r), 0);
	assert_int_equal(r.proto, RPC_JSON2);
	assert_string_equal(r.method, "session.login_with_password");
	assert_string_equal(r.id_json, "0");
	assert_int_equal(r.nparams, 2);
	assert_str(r.params[0], "root");

	assert_int_equal(jdec("{\"method\":\"VM.get_all\",\"params\":[\"S\", 12, -3.5, 1.0, true, false, null, [], {}, {\"a\":[1,{\"b\":\"c\"}]}, 9223372036854775807],\"id\":\"abc\\\"\\u0001\"}", &r), 0);
	assert_int_equal(r.proto, RPC_JSON1);
	assert_string_equal(r.id_json, "\"abc\\\"\\u0001\"");
	assert_int_equal(r.nparams, 11);
	assert_int(r.params[1], 12);
	assert_int_equal(r.params[2]->kind, V_DOUBLE);
	assert_true(r.params[2]->u.d == -3.5);
	assert_int_equal(r.params[3]->kind, V_DOUBLE);
	assert_ptr_equal(r.params[4], &val_true);
	assert_ptr_equal(r.params[5], &val_false);
	assert_int_equal(r.params[6]->kind, V_NIL);
	assert_int_equal(r.params[7]->kind, V_ARRAY);
	assert_int_equal(r.params[7]->n, 0);
	assert_int_equal(r.params[8]->kind, V_STRUCT);
	assert_int_equal(r.params[8]->n, 0);
	const struct val *a = val_struct_get(r.params[9], "a");
	assert_int_equal(a->n, 2);
	assert_int(a->u.items[0], 1);
	assert_str(val_struct_get(a->u.items[1], "b"), "c");
	assert_int(r.params[10], INT64_MAX);

	/* ids */
	assert_int_equal(jdec("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[],\"id\":-42}", &r), 0);
	assert_string_equal(r.id_json, "-42");
	assert_int_equal(jdec("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[],\"id\":\"\"}", &r), 0);
	assert_string_equal(r.id_json, "\"\"");
	assert_int_equal(jdec("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[],\"id\":\"\xc3\xa9/\"}", &r), 0);
	assert_string_equal(r.id_json, "\"\xc3\xa9/\"");

	/* v2 params: object, absent, null */
	assert_int_equal(jdec("{\"jsonrpc\":\"2.0\",\"method\":\"VM.create\",\"params\":{\"name_label\":\"x\",\"VCPUs_max\":4},\"id\":1}", &r), 0);
	assert_int_equal(r.nparams, 1);
	assert_int_equal(r.params[0]->kind, V_STRUCT);
	assert_str(val_struct_get(r.params[0], "name_label"), "x");
	assert_int(val_struct_get(r.params[0], "VCPUs_max"), 4);
	assert_string_equal(r.params[0]->u.members[0].key, "name_label"); /* order kept */
	assert_int_equal(jdec("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":1}", &r), 0);
	assert_int_equal(r.nparams, 0);
	assert_null(r.params);
	assert_int_equal(jdec("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":null,\"id\":1}", &r), 0);
	assert_int_equal(r.nparams, 0);
	/* duplicate keys are accepted */
	assert_int_equal(jdec("{\"method\":\"m\",\"params\":[{\"a\":1,\"a\":2}],\"id\":1}", &r), 0);
	assert_int_equal(r.params[0]->n, 1);
	assert_int(val_struct_get(r.params[0], "a"), 2);
}

static void t_json_malformed(void **state)
{
	(void)state;
	static const char *bad[] = {
		"",
		"{",
		"[]",
		"\"str\"",
		"42",
		"{\"method\":\"m\",\"params\":[]}",                       /* no id */
		"{\"method\":\"m\",\"params\":[],\"id\":null}",            /* notification */
		"{\"method\":\"m\",\"params\":[],\"id\":1.5}",
		"{\"method\":\"m\",\"params\":[],\"id\":[1]}",
		"{\"method\":\"m\",\"params\":[],\"id\":true}",
		"{\"params\":[],\"id\":1}",                               /* no method */
		"{\"method\":7,\"params\":[],\"id\":1}",
		"{\"method\":null,\"params\":[],\"id\":1}",
		"{\"jsonrpc\":\"1.0\",\"method\":\"m\",\"params\":[],\"id\":1}",
		"{\"jsonrpc\":2.0,\"method\":\"m\",\"params\":[],\"id\":1}",
		"{\"jsonrpc\":null,\"method\":\"m\",\"params\":[],\"id\":1}",
		"{\"method\":\"m\",\"params\":{\"a\":1},\"id\":1}",       /* v1 object params */
		"{\"method\":\"m\",\"id\":1}",                            /* v1 no params */
		"{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":\"x\",\"id\":1}",
		"{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[],\"id\":1} trailing",
		"{\"method\":\"m\",\"params\":[\"a\\u0000b\"],\"id\":1}",  /* NUL in string */
		"{\"method\":\"m\",\"params\":[\"\xff\"],\"id\":1}",       /* invalid UTF-8 */
		"{\"method\":\"m\",\"params\":[99999999999999999999],\"id\":1}",
		"{\"method\":\"m\",\"params\":[NaN],\"id\":1}",
		"{\"method\":\"m\",\"params\":[1,],\"id\":1}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct rpc_request r;
		int rc = jdec(bad[i], &r);
		if (rc != -EINVAL)
			fail_msg("case %zu accepted (rc %d): %s", i, rc, bad[i]);
	}
	/* truncations of a valid request */
	const char *ok = "{\"jsonrpc\":\"2.0\",\"method\":\"VM.create\",\"params\":[\"S\",{\"a\":[1,2.5,true,null,\"x\"]}],\"id\":\"q\"}";
	for (size_t i = 0; i < strlen(ok); i++) {
		struct rpc_request r;
		const char *why;
		assert_int_equal(rpc_json_decode(&A, ok, i, &r, &why), -EINVAL);
	}
}

/* ---- encoding: values ---- */

static void t_enc_scalars(void **state)
{
	(void)state;
	struct val s = S("a<b>&\"c'\t\n\r\x01\x1f" "d\x7f");
	enc_is(false, &s, "<value>a&lt;b&gt;&amp;&quot;c'\t\n\rd\x7f</value>");
	enc_is(true, &s, "\"a<b>&\\\"c'\\t\\n\\r\\u0001\\u001fd\x7f\"");
	struct val bs = S("back\\slash/\b\f");
	enc_is(true, &bs, "\"back\\\\slash/\\b\\f\"");
	enc_is(false, &bs, "<value>back\\slash/</value>");
	struct val u = S("caf\xc3\xa9 \xe2\x98\xba \xf0\x9f\x98\x80");
	enc_is(false, &u, "<value>caf\xc3\xa9 \xe2\x98\xba \xf0\x9f\x98\x80</value>");
	enc_is(true, &u, "\"caf\xc3\xa9 \xe2\x98\xba \xf0\x9f\x98\x80\"");
	struct val bad = S("x\xff" "y\xc3");
	enc_is(false, &bad, "<value>x\xef\xbf\xbdy\xef\xbf\xbd</value>");
	enc_is(true, &bad, "\"x\\ufffdy\\ufffd\"");
	struct val nonch = S("a\xef\xbf\xbf\xef\xbf\xbe\xef\xbf\xbd" "b");
	enc_is(false, &nonch, "<value>a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "b</value>");
	enc_is(true, &nonch, "\"a\xef\xbf\xbf\xef\xbf\xbe\xef\xbf\xbd" "b\"");
	struct val sur = S("\xed\xa0\x80");
	enc_is(true, &sur, "\"\\ufffd\\ufffd\\ufffd\"");
	struct val nul = { .kind = V_STR, .n = 3, .u.s = "a\0b" };
	enc_is(true, &nul, "\"a\\u0000b\"");
	enc_is(false, &nul, "<value>ab</value>");

	enc_is(false, &val_empty_str, "<value></value>");
	enc_is(true, &val_empty_str, "\"\"");
	enc_is(false, &val_nil, "<value></value>");
	enc_is(true, &val_nil, "\"\"");
	enc_is(false, NULL, "<value></value>");

	struct val i = { .kind = V_INT, .u.i = 12345 };
	enc_is(false, &i, "<value>12345</value>");
	enc_is(true, &i, "12345");
	i.u.i = INT64_MIN;
	enc_is(false, &i, "<value>-9223372036854775808</value>");
	enc_is(true, &i, "-9223372036854775808");
	i.u.i = INT64_MAX;
	enc_is(true, &i, "9223372036854775807");
	enc_is(true, &val_zero, "0");
	i.u.i = -7;
	enc_is(true, &i, "-7");
	for (int64_t k = -1000; k <= 1000; k += 7) {
		char want[40];
		snprintf(want, sizeof want, "%lld", (long long)k);
		i.u.i = k;
		enc_is(true, &i, want);
	}
	struct val i4 = { .kind = V_I4, .u.i = 7 };
	enc_is(false, &i4, "<value><i4>7</i4></value>");
	enc_is(true, &i4, "7");

	enc_is(false, &val_true, "<value><boolean>1</boolean></value>");
	enc_is(false, &val_false, "<value><boolean>0</boolean></value>");
	enc_is(true, &val_true, "true");
	enc_is(true, &val_false, "false");

	dbl_is(1.0, "<value><double>1</double></value>", "1");
	dbl_is(0.25, "<value><double>0.25</double></value>", "0.25");
	dbl_is(1e20, "<value><double>1e+20</double></value>", "1e+20");
	dbl_is(0.1, "<value><double>0.1</double></value>", "0.1");
	dbl_is(-2.5, "<value><double>-2.5</double></value>", "-2.5");
	dbl_is(1.0 / 3.0, "<value><double>0.3333333333333333</double></value>",
	       "0.3333333333333333");
	dbl_is(60.1, "<value><double>60.1</double></value>", "60.1");
	dbl_is(NAN, "<value><double>nan</double></value>", "0");
	dbl_is(INFINITY, "<value><double>inf</double></value>", "1.7976931348623157e+308");
	dbl_is(-INFINITY, "<value><double>-inf</double></value>", "-1.7976931348623157e+308");

	struct val dt = { .kind = V_DATETIME, .u.i = 1711361472 };
	enc_is(false, &dt, "<value><dateTime.iso8601>20240325T10:11:12Z</dateTime.iso8601></value>");
	enc_is(true, &dt, "\"20240325T10:11:12Z\"");

	enc_is(false, &val_empty_array, "<value><array><data></data></array></value>");
	enc_is(true, &val_empty_array, "[]");
	enc_is(false, &val_empty_struct, "<value><struct></struct></value>");
	enc_is(true, &val_empty_struct, "{}");
}

static void t_enc_nested(void **state)
{
	(void)state;
	struct val a = S("a"), b = S("b<");
	struct val n5 = { .kind = V_INT, .u.i = 5 };
	struct val *inner_items[] = { &a, &val_empty_array, &val_empty_struct, &n5 };
	struct val inner = { .kind = V_ARRAY, .n = 4, .u.items = inner_items };
	struct val_member im[] = { { "x", 1, &b } };
	struct val ist = { .kind = V_STRUCT, .n = 1, .u.members = im };
	struct val_member mm[] = {
		{ "list", 4, &inner }, { "st", 2, &ist }, { "k\"<", 3, &val_true }, { "nil", 3, NULL },
	};
	struct val st = { .kind = V_STRUCT, .n = 4, .u.members = mm };
	struct val *top_items[] = { &st, &st };
	struct val top = { .kind = V_ARRAY, .n = 2, .u.items = top_items };

	const char *xs =
		"<value><struct>"
		"<member><name>list</name><value><array><data><value>a</value><value><array><data></data></array></value><value><struct></struct></value><value>5</value></data></array></value></member>"
		"<member><name>st</name><value><struct><member><name>x</name><value>b&lt;</value></member></struct></value></member>"
		"<member><name>k&quot;&lt;</name><value><boolean>1</boolean></value></member>"
		"<member><name>nil</name><value></value></member>"
		"</struct></value>";
	char want[4096];
	snprintf(want, sizeof want, "<value><array><data>%s%s</data></array></value>", xs, xs);
	enc_is(false, &top, want);

	const char *js = "{\"list\":[\"a\",[],{},5],\"st\":{\"x\":\"b<\"},\"k\\\"<\":true,\"nil\":\"\"}";
	snprintf(want, sizeof want, "[%s,%s]", js, js);
	enc_is(true, &top, want);

	/* the same through the streaming calls */
	struct buf buf;
	struct enc e;
	buf_init(&buf);
	enc_init(&e, &buf, true);
	enc_struct_begin(&e);
	enc_member(&e, "a", 1);
	enc_array_begin(&e);
	enc_cstr(&e, "x");
	enc_int(&e, 1);
	enc_i4(&e, 2);
	enc_double(&e, 0.5);
	enc_datetime(&e, 0);
	enc_void(&e);
	enc_bool(&e, false);
	enc_array_end(&e);
	enc_member(&e, "b", 1);
	enc_struct_begin(&e);
	enc_struct_end(&e);
	enc_member(&e, "c", 1);
	enc_cstr(&e, NULL);
	enc_struct_end(&e);
	assert_string_equal(buf.p, "{\"a\":[\"x\",1,2,0.5,\"19700101T00:00:00Z\",\"\",false],\"b\":{},\"c\":\"\"}");
	assert_int_equal(e.depth, 0);
	buf_free(&buf);
}

/* ---- encoding: envelopes ---- */

static char *reply_ok(const struct rpc_request *req, bool json, bool raw, const struct val *v)
{
	struct buf b;
	struct enc e;
	buf_init(&b);
	enc_init(&e, &b, json);
	rpc_reply_begin(&e, req, raw);
	enc_val(&e, v);
	rpc_reply_end(&e, req, raw);
	return buf_steal(&b);
}

static char *reply_err(const struct rpc_request *req, bool json, const char *code,
		       const char *const *p, int np)
{
	struct buf b;
	struct enc e;
	buf_init(&b);
	enc_init(&e, &b, json);
	rpc_reply_error(&e, req, code, p, np);
	return buf_steal(&b);
}

static void t_envelopes_xml(void **state)
{
	(void)state;
	struct rpc_request xr = { .proto = RPC_XML };
	struct val ref = S("OpaqueRef:abc");
	char *s = reply_ok(&xr, false, false, &ref);
	assert_string_equal(s, XOK_HEAD "<value>OpaqueRef:abc</value>" XOK_TAIL);
	free(s);

	s = reply_ok(&xr, false, false, NULL); /* void */
	assert_string_equal(s, "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value></value></member></struct></value></param></params></methodResponse>");
	free(s);

	s = reply_ok(&xr, false, false, &val_empty_array);
	assert_string_equal(s, XOK_HEAD "<value><array><data></data></array></value>" XOK_TAIL);
	free(s);

	struct val m1 = S("VM.get_all"), m2 = S("system.listMethods");
	struct val *items[] = { &m1, &m2 };
	struct val arr = { .kind = V_ARRAY, .n = 2, .u.items = items };
	s = reply_ok(&xr, false, true, &arr);
	assert_string_equal(s, "<?xml version=\"1.0\"?><methodResponse><params><param><value><array><data><value>VM.get_all</value><value>system.listMethods</value></data></array></value></param></params></methodResponse>");
	free(s);

	const char *p[] = { "VM", "OpaqueRef:<x>" };
	s = reply_err(&xr, false, "HANDLE_INVALID", p, 2);
	assert_string_equal(s, "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>HANDLE_INVALID</value><value>VM</value><value>OpaqueRef:&lt;x&gt;</value></data></array></value></member></struct></value></param></params></methodResponse>");
	free(s);
	s = reply_err(NULL, false, "SESSION_INVALID", NULL, 0);
	assert_string_equal(s, "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>SESSION_INVALID</value></data></array></value></member></struct></value></param></params></methodResponse>");
	free(s);

	/* a record */
	struct val name = S("vm one"), power = S("Halted");
	struct val mem = { .kind = V_INT, .u.i = 1073741824 };
	struct val_member mm[] = {
		{ "name_label", 10, &name }, { "power_state", 11, &power },
		{ "memory_static_max", 17, &mem }, { "other_config", 12, &val_empty_struct },
	};
	struct val rec = { .kind = V_STRUCT, .n = 4, .u.members = mm };
	s = reply_ok(&xr, false, false, &rec);
	assert_string_equal(s, XOK_HEAD "<value><struct><member><name>name_label</name><value>vm one</value></member><member><name>power_state</name><value>Halted</value></member><member><name>memory_static_max</name><value>1073741824</value></member><member><name>other_config</name><value><struct></struct></value></member></struct></value>" XOK_TAIL);
	free(s);
}

static void t_envelopes_json(void **state)
{
	(void)state;
	struct rpc_request r1, r2, rs;
	assert_int_equal(jdec("{\"method\":\"m\",\"params\":[],\"id\":7}", &r1), 0);
	assert_int_equal(jdec("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[],\"id\":0}", &r2), 0);
	assert_int_equal(jdec("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[],\"id\":\"a\\\"b\"}", &rs), 0);

	struct val ref = S("OpaqueRef:abc");
	char *s = reply_ok(&r1, true, false, &ref);
	assert_string_equal(s, "{\"result\":\"OpaqueRef:abc\",\"error\":null,\"id\":7}");
	free(s);
	s = reply_ok(&r2, true, false, &ref);
	assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"result\":\"OpaqueRef:abc\",\"id\":0}");
	free(s);
	s = reply_ok(&rs, true, true, &ref); /* raw is ignored in JSON */
	assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"result\":\"OpaqueRef:abc\",\"id\":\"a\\\"b\"}");
	free(s);
	s = reply_ok(&r2, true, false, NULL);
	assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"result\":\"\",\"id\":0}");
	free(s);
	struct val *items[] = { &ref, &ref };
	struct val arr = { .kind = V_ARRAY, .n = 2, .u.items = items };
	s = reply_ok(&r1, true, false, &arr);
	assert_string_equal(s, "{\"result\":[\"OpaqueRef:abc\",\"OpaqueRef:abc\"],\"error\":null,\"id\":7}");
	free(s);

	const char *p[] = { "root", "Authentication failure" };
	s = reply_err(&r1, true, "SESSION_AUTHENTICATION_FAILED", p, 2);
	assert_string_equal(s, "{\"result\":null,\"error\":[\"SESSION_AUTHENTICATION_FAILED\",\"root\",\"Authentication failure\"],\"id\":7}");
	free(s);
	s = reply_err(&r2, true, "SESSION_AUTHENTICATION_FAILED", p, 2);
	assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"SESSION_AUTHENTICATION_FAILED\",\"data\":[\"root\",\"Authentication failure\"]},\"id\":0}");
	free(s);
	s = reply_err(&rs, true, "MESSAGE_METHOD_UNKNOWN", NULL, 0);
	assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"MESSAGE_METHOD_UNKNOWN\",\"data\":[]},\"id\":\"a\\\"b\"}");
	free(s);
	s = reply_err(&r1, true, "X", NULL, 0);
	assert_string_equal(s, "{\"result\":null,\"error\":[\"X\"],\"id\":7}");
	free(s);
	s = reply_err(NULL, true, "X", NULL, 0);
	assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"X\",\"data\":[]},\"id\":null}");
	free(s);
}

/* A reply appended after other bytes in the same buffer, then a failure that
 * truncates back: the documented dispatcher pattern. */
static void t_truncate_pattern(void **state)
{
	(void)state;
	struct rpc_request r = { .proto = RPC_JSON2, .id_json = "3" };
	struct buf b;
	struct enc e;
	buf_init(&b);
	buf_adds(&b, "HEAD");
	size_t mark = b.len;
	enc_init(&e, &b, true);
	rpc_reply_begin(&e, &r, false);
	enc_struct_begin(&e);
	enc_member(&e, "a", 1);
	enc_array_begin(&e);
	b.len = mark; /* failure half-way */
	rpc_reply_error(&e, &r, "E", NULL, 0);
	assert_string_equal(b.p, "HEAD{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"E\",\"data\":[]},\"id\":3}");
	buf_free(&b);
}

/* Decode, re-encode, decode again: the trees are equal. */
static void t_roundtrip(void **state)
{
	(void)state;
	const char *body = "<methodCall><methodName>m</methodName><params><param><value><struct><member><name>k&amp;</name><value><array><data><value>x&lt;</value><value><int>-5</int></value><value><double>0.1</double></value><value><boolean>1</boolean></value><value><dateTime.iso8601>20240325T10:11:12Z</dateTime.iso8601></value><value><struct/></value></data></array></value></member></struct></value></param></params></methodCall>";
	struct rpc_request r, r2, r3;
	assert_int_equal(xdec(body, &r), 0);

	/* XML: reply body -> wrap as a call */
	struct buf b;
	struct enc e;
	buf_init(&b);
	buf_adds(&b, "<methodCall><methodName>m</methodName><params><param>");
	enc_init(&e, &b, false);
	enc_val(&e, r.params[0]);
	buf_adds(&b, "</param></params></methodCall>");
	assert_int_equal(xdec(b.p, &r2), 0);
	/* ints go out as bare text (as xapi does), so they come back as strings */
	const struct val *a2 = val_struct_get(r2.params[0], "k&");
	assert_str(a2->u.items[1], "-5");
	a2->u.items[1] = r.params[0]->u.members[0].v->u.items[1];
	assert_true(val_equal(r.params[0], r2.params[0]));
	buf_free(&b);

	/* JSON: datetimes come back as strings, everything else equal */
	buf_init(&b);
	buf_adds(&b, "{\"method\":\"m\",\"id\":1,\"params\":[");
	enc_init(&e, &b, true);
	enc_val(&e, r.params[0]);
	buf_adds(&b, "]}");
	assert_int_equal(jdec(b.p, &r3), 0);
	const struct val *arr = val_struct_get(r3.params[0], "k&");
	assert_int_equal(arr->n, 6);
	assert_str(arr->u.items[0], "x<");
	assert_int(arr->u.items[1], -5);
	assert_true(arr->u.items[2]->u.d == 0.1);
	assert_str(arr->u.items[4], "20240325T10:11:12Z");
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(t_xml_python_pretty, setup, teardown),
		cmocka_unit_test_setup_teardown(t_xml_xo_compact, setup, teardown),
		cmocka_unit_test_setup_teardown(t_xml_scalars, setup, teardown),
		cmocka_unit_test_setup_teardown(t_xml_nested, setup, teardown),
		cmocka_unit_test_setup_teardown(t_xml_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(t_xml_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(t_xml_billion_laughs, setup, teardown),
		cmocka_unit_test_setup_teardown(t_deep_nesting, setup, teardown),
		cmocka_unit_test_setup_teardown(t_arena_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(t_json_decode, setup, teardown),
		cmocka_unit_test_setup_teardown(t_json_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(t_enc_scalars, setup, teardown),
		cmocka_unit_test_setup_teardown(t_enc_nested, setup, teardown),
		cmocka_unit_test_setup_teardown(t_envelopes_xml, setup, teardown),
		cmocka_unit_test_setup_teardown(t_envelopes_json, setup, teardown),
		cmocka_unit_test_setup_teardown(t_truncate_pattern, setup, teardown),
		cmocka_unit_test_setup_teardown(t_roundtrip, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
