/* rpc.h — XML-RPC and JSON-RPC: request decoding and reply encoding.
 *
 * Decoding turns a request body into a method name, its parameter values and
 * (JSON-RPC) the id and version, all in the request's arena.  Encoding writes
 * straight into a buffer through one small interface (struct enc) that both
 * encodings implement, so handlers write replies from database rows without
 * building an intermediate tree.
 */
#ifndef CX_RPC_H
#define CX_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "base/buf.h"
#include "val/val.h"

struct arena;

enum rpc_proto { RPC_XML = 0, RPC_JSON1, RPC_JSON2 };

struct rpc_request {
	enum rpc_proto proto;
	const char *method;   /* NUL-terminated, in the arena */
	struct val **params;  /* positional parameters */
	uint32_t nparams;
	/* JSON-RPC only: the id, echoed verbatim with its JSON type */
	const char *id_json;  /* the id's JSON text, e.g. "1" or "\"abc\"" */
};

/* Decode an XML-RPC <methodCall>.  Returns 0, or -EINVAL for malformed input
 * (with a short reason in *why), -E2BIG if the arena limit was hit.
 * Lenient as the original: whitespace between elements, untyped <value>text</value>
 * as string, <string>, <int>, <i4>, <i8>, <boolean>, <double>, <dateTime.iso8601>,
 * <base64> (kept as text), <array>, <struct>, <nil/>. */
int rpc_xml_decode(struct arena *a, const char *body, size_t len,
		   struct rpc_request *out, const char **why);

/* Decode a JSON-RPC 1.0 / 2.0 request.  Version: "jsonrpc":"2.0" is v2, absent
 * is v1, anything else is malformed.  "id" must be a string or integer.  v1
 * params must be an array; v2 params may be an array, absent/null (no params),
 * or an object (one record parameter).  JSON integers become V_INT, other
 * numbers V_DOUBLE, null V_NIL. */
int rpc_json_decode(struct arena *a, const char *body, size_t len,
		    struct rpc_request *out, const char **why);

/* Decode one JSON value (any type) into the arena; NULL if malformed. */
struct val *rpc_json_value(struct arena *a, const char *text, size_t len);

/* ---- encoding ---- */

struct enc {
	struct buf *b;
	bool json;
	/* internal state for commas in JSON: one bit per nesting level */
	uint32_t depth;
	uint64_t first; /* bit d set = next item at depth d is the first */
};

void enc_init(struct enc *e, struct buf *b, bool json);

/* One value.  XML: string -> <value>escaped</value>; int -> <value>123</value>;
 * V_I4 -> <value><i4>..</i4></value>; double -> <value><double>%.16g</double></value>;
 * bool -> <value><boolean>1</boolean></value>; datetime -> <value><dateTime.iso8601>
 * YYYYMMDDTHH:MM:SSZ</dateTime.iso8601></value>; nil/void -> <value></value>.
 * JSON: strings quoted and escaped; int as a number; double %.16g (integral
 * doubles keep a ".0"? no: the original prints %.16g); datetime as a string;
 * nil/void -> "". */
void enc_val(struct enc *e, const struct val *v);
void enc_str(struct enc *e, const char *s, size_t n);
void enc_cstr(struct enc *e, const char *s);
void enc_int(struct enc *e, int64_t i);
/* int32 (only event.from valid_ref_counts): XML <value><i4>N</i4></value>, JSON a number */
void enc_i4(struct enc *e, int32_t i);
void enc_bool(struct enc *e, bool b);
void enc_double(struct enc *e, double d);
void enc_datetime(struct enc *e, int64_t t);
void enc_void(struct enc *e);
void enc_array_begin(struct enc *e);
void enc_array_end(struct enc *e);
void enc_struct_begin(struct enc *e);
void enc_member(struct enc *e, const char *key, size_t klen); /* then exactly one value */
/* The same for a key known to need no escaping (datamodel field names, refs). */
void enc_member_plain(struct enc *e, const char *key, size_t klen);
void enc_struct_end(struct enc *e);

/* ---- envelopes ----
 * A reply is: rpc_reply_begin, the result value written with enc_*, then
 * rpc_reply_end.  For a failure, truncate the buffer back to where the reply
 * began and call rpc_reply_error instead.  system.listMethods in XML-RPC is
 * not wrapped in Status/Value: use raw=true. */
void rpc_reply_begin(struct enc *e, const struct rpc_request *req, bool raw);
void rpc_reply_end(struct enc *e, const struct rpc_request *req, bool raw);
void rpc_reply_error(struct enc *e, const struct rpc_request *req,
		     const char *code, const char *const *params, int nparams);

#endif
