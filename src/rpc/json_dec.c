/* json_dec.c — JSON-RPC 1.0/2.0 request decoding with jansson, into the
 * request arena.
 *
 * jansson parses into its own heap tree (json_loadb; duplicate keys allowed,
 * the last one wins as in jansson; "\u0000" in strings rejected since our
 * strings are NUL-terminated); we then copy the parts we need into the arena
 * and drop jansson's tree.  Container nesting is capped at RPC_MAX_DEPTH.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "base/arena.h"
#include "rpc/rpc.h"

#define RPC_MAX_DEPTH 64

struct jd {
	struct arena *a;
	int err;
	const char *why;
};

static struct val *conv(struct jd *d, json_t *j, int depth)
{
	struct val *v = NULL;
	switch (json_typeof(j)) {
	case JSON_STRING: {
		size_t n = json_string_length(j);
		v = n ? val_str_a(d->a, json_string_value(j), n) : &val_empty_str;
		break;
	}
	case JSON_INTEGER: {
		json_int_t i = json_integer_value(j);
		v = i == 0 ? &val_zero : val_int_a(d->a, (int64_t)i);
		break;
	}
	case JSON_REAL:
		v = val_double_a(d->a, json_real_value(j));
		break;
	case JSON_TRUE:
		return &val_true;
	case JSON_FALSE:
		return &val_false;
	case JSON_NULL:
		return &val_nil;
	case JSON_ARRAY: {
		if (depth >= RPC_MAX_DEPTH) {
			d->err = -EINVAL;
			d->why = "nesting too deep";
			return NULL;
		}
		size_t n = json_array_size(j);
		if (n == 0)
			return &val_empty_array;
		if (n > UINT32_MAX)
			break;
		v = val_array_a(d->a, (uint32_t)n);
		if (!v)
			break;
		for (size_t i = 0; i < n; i++) {
			v->u.items[i] = conv(d, json_array_get(j, i), depth + 1);
			if (!v->u.items[i])
				return NULL;
		}
		return v;
	}
	case JSON_OBJECT: {
		if (depth >= RPC_MAX_DEPTH) {
			d->err = -EINVAL;
			d->why = "nesting too deep";
			return NULL;
		}
		size_t n = json_object_size(j);
		if (n == 0)
			return &val_empty_struct;
		if (n > UINT32_MAX)
			break;
		v = val_struct_a(d->a, (uint32_t)n);
		if (!v)
			break;
		const char *key;
		json_t *item;
		uint32_t k = 0;
		json_object_foreach(j, key, item) {
			if (k >= n)
				break;
			size_t kl = strlen(key);
			char *kc = arena_strndup(d->a, key, kl);
			if (!kc)
				goto big;
			v->u.members[k].key = kc;
			v->u.members[k].klen = (uint32_t)kl;
			v->u.members[k].v = conv(d, item, depth + 1);
			if (!v->u.members[k].v)
				return NULL;
			k++;
		}
		v->n = k;
		return v;
	}
	}
	if (v)
		return v;
big:
	if (!d->err) {
		d->err = -E2BIG;
		d->why = "request too large";
	}
	return NULL;
}

struct val *rpc_json_value(struct arena *a, const char *text, size_t len)
{
	json_t *j = json_loadb(text, len, JSON_DECODE_ANY, NULL);
	if (!j)
		return NULL;
	struct jd d = {.a = a};
	struct val *v = conv(&d, j, 0);
	json_decref(j);
	return v;
}

static int bad(const char **why, const char *w)
{
	*why = w;
	return -EINVAL;
}

int rpc_json_decode(struct arena *a, const char *body, size_t len,
		    struct rpc_request *out, const char **why)
{
	const char *dummy;
	if (!why)
		why = &dummy;
	*why = NULL;
	memset(out, 0, sizeof *out);

	json_error_t jerr;
	json_t *root = json_loadb(body ? body : "", len, 0, &jerr);
	if (!root)
		return bad(why, "not well-formed JSON");

	int rc = 0;
	struct jd d = { .a = a };
	if (!json_is_object(root)) {
		rc = bad(why, "request is not a JSON object");
		goto out;
	}

	json_t *ver = json_object_get(root, "jsonrpc");
	if (!ver) {
		out->proto = RPC_JSON1;
	} else if (json_is_string(ver) && strcmp(json_string_value(ver), "2.0") == 0 &&
		   json_string_length(ver) == 3) {
		out->proto = RPC_JSON2;
	} else {
		rc = bad(why, "unsupported jsonrpc version");
		goto out;
	}

	json_t *m = json_object_get(root, "method");
	if (!m || !json_is_string(m)) {
		rc = bad(why, "missing method");
		goto out;
	}

	json_t *id = json_object_get(root, "id");
	char idbuf[32];
	const char *idtxt;
	size_t idlen;
	struct buf ib;
	buf_init(&ib);
	if (id && json_is_integer(id)) {
		idlen = (size_t)snprintf(idbuf, sizeof idbuf, "%" PRId64,
					 (int64_t)json_integer_value(id));
		idtxt = idbuf;
	} else if (id && json_is_string(id)) {
		struct enc e;
		enc_init(&e, &ib, true);
		enc_str(&e, json_string_value(id), json_string_length(id));
		idtxt = ib.p;
		idlen = ib.len;
	} else {
		rc = bad(why, "missing or invalid id");
		goto out;
	}
	out->id_json = arena_strndup(a, idtxt, idlen);
	buf_free(&ib);
	if (!out->id_json)
		goto big;

	out->method = arena_strndup(a, json_string_value(m), json_string_length(m));
	if (!out->method)
		goto big;

	json_t *p = json_object_get(root, "params");
	if (json_is_array(p)) {
		size_t n = json_array_size(p);
		if (n > UINT32_MAX)
			goto big;
		if (n) {
			out->params = arena_alloc(a, n * sizeof *out->params);
			if (!out->params)
				goto big;
			for (size_t i = 0; i < n; i++) {
				out->params[i] = conv(&d, json_array_get(p, i), 0);
				if (!out->params[i])
					goto fail;
			}
		}
		out->nparams = (uint32_t)n;
	} else if (out->proto == RPC_JSON2 && (!p || json_is_null(p))) {
		out->nparams = 0;
	} else if (out->proto == RPC_JSON2 && json_is_object(p)) {
		out->params = arena_alloc(a, sizeof *out->params);
		if (!out->params)
			goto big;
		out->params[0] = conv(&d, p, 0);
		if (!out->params[0])
			goto fail;
		out->nparams = 1;
	} else {
		rc = bad(why, "params must be an array");
		goto out;
	}
	goto out;

fail:
	rc = d.err ? d.err : -E2BIG;
	*why = d.why ? d.why : "request too large";
	goto out;
big:
	rc = -E2BIG;
	*why = "request too large";
out:
	json_decref(root);
	if (rc) {
		const char *w = *why;
		enum rpc_proto pr = out->proto;
		memset(out, 0, sizeof *out);
		out->proto = pr;
		*why = w;
	}
	return rc;
}
