/* fuzz_jsonrpc.c — libFuzzer target for the JSON-RPC decoder and both encoders.
 *
 * Decodes the input into a size-limited arena; on success writes a full reply
 * (the parameters as the result) and a failure reply, and checks that the
 * JSON reply parses with jansson and the re-encoded parameters decode again
 * with both of our decoders.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "base/buf.h"
#include "rpc/rpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct arena a;
	struct rpc_request r;
	const char *why = NULL;

	arena_init(&a, 256 * 1024);
	int rc = rpc_json_decode(&a, (const char *)data, size, &r, &why);
	if (rc) {
		if ((rc != -EINVAL && rc != -E2BIG) || !why)
			abort();
		arena_free(&a);
		return 0;
	}
	if (!r.method || !r.id_json || (r.proto != RPC_JSON1 && r.proto != RPC_JSON2))
		abort();

	struct buf b;
	struct enc e;
	struct rpc_request r2;
	struct arena a2;
	json_error_t jerr;

	/* a success reply with the params array as the result: valid JSON */
	buf_init(&b);
	enc_init(&e, &b, true);
	rpc_reply_begin(&e, &r, false);
	enc_array_begin(&e);
	for (uint32_t i = 0; i < r.nparams; i++)
		enc_val(&e, r.params[i]);
	enc_array_end(&e);
	rpc_reply_end(&e, &r, false);
	json_t *j = json_loadb(b.p, b.len, 0, &jerr);
	if (!j)
		abort();
	json_decref(j);
	buf_free(&b);

	/* an error reply: valid JSON */
	buf_init(&b);
	enc_init(&e, &b, true);
	const char *p[2] = { r.method, r.id_json };
	rpc_reply_error(&e, &r, "MESSAGE_METHOD_UNKNOWN", p, 2);
	j = json_loadb(b.p, b.len, 0, &jerr);
	if (!j)
		abort();
	json_decref(j);
	buf_free(&b);

	/* the params re-encoded as a request decode again */
	buf_init(&b);
	buf_adds(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":");
	buf_adds(&b, r.id_json);
	buf_adds(&b, ",\"params\":");
	enc_init(&e, &b, true);
	enc_array_begin(&e);
	for (uint32_t i = 0; i < r.nparams; i++)
		enc_val(&e, r.params[i]);
	enc_array_end(&e);
	buf_adds(&b, "}");
	arena_init(&a2, 0);
	if (rpc_json_decode(&a2, b.p, b.len, &r2, &why) != 0 || r2.nparams != r.nparams ||
	    strcmp(r2.id_json, r.id_json) != 0)
		abort();
	arena_free(&a2);
	buf_free(&b);

	/* and as XML */
	buf_init(&b);
	buf_adds(&b, "<methodCall><methodName>m</methodName><params>");
	enc_init(&e, &b, false);
	for (uint32_t i = 0; i < r.nparams; i++) {
		buf_adds(&b, "<param>");
		enc_val(&e, r.params[i]);
		buf_adds(&b, "</param>");
	}
	buf_adds(&b, "</params></methodCall>");
	arena_init(&a2, 0);
	if (rpc_xml_decode(&a2, b.p, b.len, &r2, &why) != 0 || r2.nparams != r.nparams)
		abort();
	arena_free(&a2);
	buf_free(&b);

	arena_free(&a);
	return 0;
}
