/* fuzz_xmlrpc.c — libFuzzer target for the XML-RPC decoder and both encoders.
 *
 * Decodes the input into a size-limited arena; on success re-encodes the
 * parameters (XML and JSON), checks that what we wrote parses back with our
 * own decoders (the encoders must always produce well-formed output), and
 * writes a failure reply carrying the method name.
 *
 *   meson setup build-fuzz -Dfuzz=true (CC=clang); ./fuzz_xmlrpc -max_len=65536
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "base/buf.h"
#include "rpc/rpc.h"

static void encode_params(struct enc *e, const struct rpc_request *r)
{
	enc_array_begin(e);
	for (uint32_t i = 0; i < r->nparams; i++)
		enc_val(e, r->params[i]);
	enc_array_end(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct arena a;
	struct rpc_request r;
	const char *why = NULL;

	arena_init(&a, 256 * 1024);
	int rc = rpc_xml_decode(&a, (const char *)data, size, &r, &why);
	if (rc) {
		if ((rc != -EINVAL && rc != -E2BIG) || !why)
			abort();
		arena_free(&a);
		return 0;
	}

	struct buf b;
	struct enc e;
	struct rpc_request r2;

	/* XML: the params as one array value inside a methodCall must decode */
	buf_init(&b);
	buf_adds(&b, "<methodCall><methodName>m</methodName><params>");
	enc_init(&e, &b, false);
	for (uint32_t i = 0; i < r.nparams; i++) {
		buf_adds(&b, "<param>");
		enc_val(&e, r.params[i]);
		buf_adds(&b, "</param>");
	}
	buf_adds(&b, "</params></methodCall>");
	if (e.depth != 0)
		abort();
	struct arena a2;
	arena_init(&a2, 0);
	if (rpc_xml_decode(&a2, b.p, b.len, &r2, &why) != 0 || r2.nparams != r.nparams)
		abort();
	arena_free(&a2);
	buf_free(&b);

	/* JSON: same, through the JSON decoder */
	buf_init(&b);
	buf_adds(&b, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":");
	enc_init(&e, &b, true);
	encode_params(&e, &r);
	buf_adds(&b, "}");
	arena_init(&a2, 0);
	if (rpc_json_decode(&a2, b.p, b.len, &r2, &why) != 0 || r2.nparams != r.nparams)
		abort();
	arena_free(&a2);
	buf_free(&b);

	/* envelopes */
	buf_init(&b);
	enc_init(&e, &b, false);
	rpc_reply_begin(&e, &r, r.nparams == 0);
	encode_params(&e, &r);
	rpc_reply_end(&e, &r, r.nparams == 0);
	const char *p[2] = { r.method, r.nparams ? "x" : "" };
	rpc_reply_error(&e, &r, "MESSAGE_METHOD_UNKNOWN", p, 2);
	buf_free(&b);

	arena_free(&a);
	return 0;
}
