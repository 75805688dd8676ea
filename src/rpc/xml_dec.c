/* xml_dec.c — XML-RPC <methodCall> decoding with expat, into the request arena.
 *
 * A small state machine over expat's callbacks.  Each open element is a frame
 * on a fixed stack; completed values are pushed on one scratch stack (heap,
 * freed at the end) and popped into exact-size arena arrays when their
 * <array>, <struct> or <params> closes, so no container is ever resized in the
 * arena.  DTDs are refused outright (no entity expansion, no billion laughs);
 * container nesting is capped at RPC_MAX_DEPTH.
 */
#include <errno.h>
#include <expat.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "rpc/rpc.h"

#define RPC_MAX_DEPTH 64
/* methodCall, params, param, then 3 frames per container level, a scalar */
#define MAX_FRAMES (4 + 3 * RPC_MAX_DEPTH + 4)

enum el {
	E_ROOT = 0,
	E_CALL,   /* methodCall */
	E_MNAME,  /* methodName */
	E_PARAMS,
	E_PARAM,
	E_VALUE,
	E_STRING, /* also base64 */
	E_INT,    /* int, i4, i8 */
	E_BOOL,
	E_DOUBLE,
	E_DATE,
	E_NIL,
	E_ARRAY,
	E_DATA,
	E_STRUCT,
	E_MEMBER,
	E_NAME,
};

struct frame {
	uint8_t kind;
	bool has_child;     /* value: got a typed child; call: saw methodName etc. */
	bool has_name;      /* member */
	bool has_params;    /* methodCall */
	uint32_t klen;      /* member: key */
	const char *key;
	struct val *v;      /* value/member/param: the completed value */
	size_t vstart;      /* array/struct/params: scratch stack base */
};

struct xd {
	XML_Parser p;
	struct arena *a;
	int err;
	const char *why;

	struct frame f[MAX_FRAMES];
	int nf;
	int cdepth; /* open arrays/structs */

	char *t;    /* text of the innermost text-bearing element */
	size_t tlen, tcap;

	struct val_member *vs; /* scratch stack of completed values / members */
	size_t vn, vcap;

	const char *method;
	struct val **params;
	uint32_t nparams;
	bool done;
};

static void fail(struct xd *x, int err, const char *why)
{
	if (x->err)
		return;
	x->err = err;
	x->why = why;
	XML_StopParser(x->p, XML_FALSE);
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool all_ws(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!is_ws(s[i]))
			return false;
	return true;
}

static void trim(const char **s, size_t *n)
{
	while (*n && is_ws((*s)[0]))
		(*s)++, (*n)--;
	while (*n && is_ws((*s)[*n - 1]))
		(*n)--;
}

static bool push(struct xd *x, const char *key, uint32_t klen, struct val *v)
{
	if (x->vn == x->vcap) {
		size_t nc = x->vcap ? x->vcap * 2 : 64;
		struct val_member *n = realloc(x->vs, nc * sizeof *n);
		if (!n) {
			fail(x, -E2BIG, "out of memory");
			return false;
		}
		x->vs = n;
		x->vcap = nc;
	}
	x->vs[x->vn].key = key;
	x->vs[x->vn].klen = klen;
	x->vs[x->vn].v = v;
	x->vn++;
	return true;
}

static int kind_of(const char *name)
{
	switch (name[0]) {
	case 'a':
		if (!strcmp(name, "array")) return E_ARRAY;
		break;
	case 'b':
		if (!strcmp(name, "boolean")) return E_BOOL;
		if (!strcmp(name, "base64")) return E_STRING;
		break;
	case 'd':
		if (!strcmp(name, "data")) return E_DATA;
		if (!strcmp(name, "double")) return E_DOUBLE;
		if (!strcmp(name, "dateTime.iso8601")) return E_DATE;
		break;
	case 'i':
		if (!strcmp(name, "int") || !strcmp(name, "i4") || !strcmp(name, "i8"))
			return E_INT;
		break;
	case 'm':
		if (!strcmp(name, "member")) return E_MEMBER;
		if (!strcmp(name, "methodName")) return E_MNAME;
		if (!strcmp(name, "methodCall")) return E_CALL;
		break;
	case 'n':
		if (!strcmp(name, "name")) return E_NAME;
		if (!strcmp(name, "nil")) return E_NIL;
		break;
	case 'p':
		if (!strcmp(name, "param")) return E_PARAM;
		if (!strcmp(name, "params")) return E_PARAMS;
		break;
	case 's':
		if (!strcmp(name, "string")) return E_STRING;
		if (!strcmp(name, "struct")) return E_STRUCT;
		break;
	case 'v':
		if (!strcmp(name, "value")) return E_VALUE;
		break;
	}
	return -1;
}

static bool text_frame(int k)
{
	return k == E_MNAME || k == E_NAME || k == E_VALUE || k == E_STRING || k == E_INT ||
	       k == E_BOOL || k == E_DOUBLE || k == E_DATE;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
	struct xd *x = ud;
	(void)attrs;
	if (x->err)
		return;
	int k = kind_of(name);
	struct frame *par = &x->f[x->nf - 1];
	bool ok = false;

	switch (par->kind) {
	case E_ROOT:
		ok = k == E_CALL;
		if (!ok) {
			fail(x, -EINVAL, "root element is not methodCall");
			return;
		}
		break;
	case E_CALL:
		if (k == E_MNAME) {
			ok = !x->method && !par->has_child;
			par->has_child = true;
		} else if (k == E_PARAMS) {
			ok = !par->has_params;
			par->has_params = true;
		}
		break;
	case E_PARAMS:
		ok = k == E_PARAM;
		break;
	case E_PARAM:
		ok = k == E_VALUE && !par->v;
		break;
	case E_VALUE:
		ok = k >= E_STRING && k <= E_STRUCT && k != E_DATA && !par->has_child;
		if (ok) {
			if (!all_ws(x->t, x->tlen)) {
				fail(x, -EINVAL, "text mixed with a typed value");
				return;
			}
			par->has_child = true;
		}
		break;
	case E_ARRAY:
		ok = k == E_DATA && !par->has_child;
		par->has_child = true;
		break;
	case E_DATA:
		ok = k == E_VALUE;
		break;
	case E_STRUCT:
		ok = k == E_MEMBER;
		break;
	case E_MEMBER:
		if (k == E_NAME)
			ok = !par->has_name;
		else if (k == E_VALUE)
			ok = !par->v;
		break;
	default: /* scalars, names, nil: no children */
		break;
	}
	if (!ok) {
		fail(x, -EINVAL, "unexpected element");
		return;
	}
	if (k == E_ARRAY || k == E_STRUCT) {
		if (x->cdepth >= RPC_MAX_DEPTH) {
			fail(x, -EINVAL, "nesting too deep");
			return;
		}
		x->cdepth++;
	}
	if (x->nf >= MAX_FRAMES) { /* cannot happen given the grammar; be safe */
		fail(x, -EINVAL, "nesting too deep");
		return;
	}
	struct frame *fr = &x->f[x->nf++];
	memset(fr, 0, sizeof *fr);
	fr->kind = (uint8_t)k;
	fr->vstart = x->vn;
	if (text_frame(k))
		x->tlen = 0;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct xd *x = ud;
	if (x->err || len <= 0)
		return;
	struct frame *fr = &x->f[x->nf - 1];
	if (!text_frame(fr->kind) || (fr->kind == E_VALUE && fr->has_child)) {
		if (!all_ws(s, (size_t)len))
			fail(x, -EINVAL, "unexpected text");
		return;
	}
	if (x->tlen + (size_t)len + 1 > x->tcap) {
		size_t nc = x->tcap ? x->tcap : 256;
		while (nc < x->tlen + (size_t)len + 1)
			nc *= 2;
		char *n = realloc(x->t, nc);
		if (!n) {
			fail(x, -E2BIG, "out of memory");
			return;
		}
		x->t = n;
		x->tcap = nc;
	}
	memcpy(x->t + x->tlen, s, (size_t)len);
	x->tlen += (size_t)len;
}

static int parse_int(const char *s, size_t n, int64_t *out)
{
	trim(&s, &n);
	bool neg = false;
	if (n && (*s == '-' || *s == '+')) {
		neg = *s == '-';
		s++, n--;
	}
	if (!n)
		return -1;
	uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (lim - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

static int parse_double(char *s, size_t n, double *out)
{
	const char *b = s;
	trim(&b, &n);
	if (!n || n > 400)
		return -1;
	char tmp[401];
	for (size_t i = 0; i < n; i++) {
		char c = b[i];
		if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '+' || c == 'e' ||
		      c == 'E'))
			return -1; /* decimal forms only: no nan/inf/hex */
		tmp[i] = c;
	}
	tmp[n] = 0;
	char *end;
	errno = 0;
	double d = strtod(tmp, &end);
	if (end != tmp + n || end == tmp || !isfinite(d))
		return -1; /* overflow is refused, as jansson does for JSON */
	*out = d;
	return 0;
}

/* Store the completed value v into the frame that encloses the current one. */
static void deliver(struct xd *x, struct val *v)
{
	struct frame *par = &x->f[x->nf - 1];
	switch (par->kind) {
	case E_VALUE:
		par->v = v;
		break;
	case E_PARAM:
	case E_MEMBER:
		par->v = v;
		break;
	case E_DATA:
		push(x, NULL, 0, v);
		break;
	default:
		break;
	}
}

static struct val *pop_array(struct xd *x, size_t start)
{
	size_t n = x->vn - start;
	if (n > UINT32_MAX) {
		fail(x, -E2BIG, "too many items");
		return NULL;
	}
	struct val *v = n ? val_array_a(x->a, (uint32_t)n) : &val_empty_array;
	if (!v) {
		fail(x, -E2BIG, "request too large");
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		v->u.items[i] = x->vs[start + i].v;
	x->vn = start;
	return v;
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
	struct xd *x = ud;
	(void)name;
	if (x->err)
		return;
	struct frame fr = x->f[--x->nf]; /* copy: deliver() writes the parent */
	struct val *v = NULL;
	const char *s = x->t ? x->t : "";
	size_t n = x->tlen;
	int64_t i;
	double d;

	switch (fr.kind) {
	case E_CALL:
		if (!x->method) {
			fail(x, -EINVAL, "missing methodName");
			return;
		}
		x->done = true;
		return;
	case E_MNAME:
		trim(&s, &n);
		x->method = arena_strndup(x->a, s, n);
		if (!x->method)
			fail(x, -E2BIG, "request too large");
		return;
	case E_PARAMS: {
		size_t cnt = x->vn - fr.vstart;
		if (cnt > UINT32_MAX) {
			fail(x, -E2BIG, "too many parameters");
			return;
		}
		x->nparams = (uint32_t)cnt;
		if (cnt) {
			x->params = arena_alloc(x->a, cnt * sizeof *x->params);
			if (!x->params) {
				fail(x, -E2BIG, "request too large");
				return;
			}
			for (size_t k = 0; k < cnt; k++)
				x->params[k] = x->vs[fr.vstart + k].v;
		}
		x->vn = fr.vstart;
		return;
	}
	case E_PARAM:
		if (!fr.v) {
			fail(x, -EINVAL, "param without value");
			return;
		}
		push(x, NULL, 0, fr.v);
		return;
	case E_VALUE:
		if (fr.has_child) {
			v = fr.v;
		} else if (n == 0) {
			v = &val_empty_str;
		} else {
			v = val_str_a(x->a, s, n);
		}
		break;
	case E_STRING:
		v = n ? val_str_a(x->a, s, n) : &val_empty_str;
		break;
	case E_INT:
		if (parse_int(s, n, &i) < 0) {
			fail(x, -EINVAL, "bad integer");
			return;
		}
		v = i == 0 ? &val_zero : val_int_a(x->a, i);
		break;
	case E_BOOL:
		trim(&s, &n);
		v = n == 1 && s[0] == '1' ? &val_true : &val_false;
		break;
	case E_DOUBLE:
		if (parse_double(x->t, n, &d) < 0) {
			fail(x, -EINVAL, "bad double");
			return;
		}
		v = val_double_a(x->a, d);
		break;
	case E_DATE: {
		const char *ts = s;
		size_t tn = n;
		trim(&ts, &tn);
		if (val_datetime_parse(ts, tn, &i) == 0)
			v = val_datetime_a(x->a, i);
		else
			v = n ? val_str_a(x->a, s, n) : &val_empty_str;
		break;
	}
	case E_NIL:
		v = &val_nil;
		break;
	case E_DATA:
		return; /* items stay on the scratch stack for </array> */
	case E_ARRAY:
		x->cdepth--;
		v = pop_array(x, fr.vstart);
		if (!v)
			return;
		break;
	case E_STRUCT: {
		x->cdepth--;
		size_t cnt = x->vn - fr.vstart;
		if (cnt > UINT32_MAX) {
			fail(x, -E2BIG, "too many members");
			return;
		}
		v = cnt ? val_struct_a(x->a, (uint32_t)cnt) : &val_empty_struct;
		if (v && cnt)
			memcpy(v->u.members, x->vs + fr.vstart, cnt * sizeof *x->vs);
		x->vn = fr.vstart;
		break;
	}
	case E_MEMBER:
		if (!fr.has_name || !fr.v) {
			fail(x, -EINVAL, "member without name or value");
			return;
		}
		push(x, fr.key, fr.klen, fr.v);
		return;
	case E_NAME: {
		if (n > UINT32_MAX) {
			fail(x, -E2BIG, "name too long");
			return;
		}
		char *k = arena_strndup(x->a, s, n);
		if (!k) {
			fail(x, -E2BIG, "request too large");
			return;
		}
		struct frame *par = &x->f[x->nf - 1];
		par->key = k;
		par->klen = (uint32_t)n;
		par->has_name = true;
		return;
	}
	default:
		return;
	}
	if (!v) {
		fail(x, -E2BIG, "request too large");
		return;
	}
	deliver(x, v);
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
			       const XML_Char *pubid, int has_internal_subset)
{
	(void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
	fail(ud, -EINVAL, "DTD not allowed");
}

static void XMLCALL on_entity(void *ud, const XML_Char *name, int is_param,
			      const XML_Char *value, int value_length, const XML_Char *base,
			      const XML_Char *sysid, const XML_Char *pubid,
			      const XML_Char *notation)
{
	(void)name, (void)is_param, (void)value, (void)value_length, (void)base;
	(void)sysid, (void)pubid, (void)notation;
	fail(ud, -EINVAL, "entity declarations not allowed");
}

int rpc_xml_decode(struct arena *a, const char *body, size_t len,
		   struct rpc_request *out, const char **why)
{
	const char *dummy;
	if (!why)
		why = &dummy;
	*why = NULL;
	memset(out, 0, sizeof *out);
	if (len > INT_MAX) {
		*why = "request too large";
		return -E2BIG;
	}

	struct xd *x = calloc(1, sizeof *x);
	if (!x) {
		*why = "out of memory";
		return -E2BIG;
	}
	x->a = a;
	x->p = XML_ParserCreate(NULL);
	if (!x->p) {
		free(x);
		*why = "out of memory";
		return -E2BIG;
	}
	XML_SetUserData(x->p, x);
	XML_SetElementHandler(x->p, on_start, on_end);
	XML_SetCharacterDataHandler(x->p, on_text);
	XML_SetStartDoctypeDeclHandler(x->p, on_doctype);
	XML_SetEntityDeclHandler(x->p, on_entity);
	XML_SetParamEntityParsing(x->p, XML_PARAM_ENTITY_PARSING_NEVER);
	x->f[0].kind = E_ROOT;
	x->nf = 1;

	enum XML_Status st = XML_Parse(x->p, body ? body : "", (int)len, 1);
	int rc = 0;
	if (x->err) {
		rc = x->err;
		*why = x->why;
	} else if (st != XML_STATUS_OK) {
		rc = -EINVAL;
		*why = XML_ErrorString(XML_GetErrorCode(x->p));
		if (!*why)
			*why = "not well-formed XML";
	} else if (!x->done || !x->method) {
		rc = -EINVAL;
		*why = "missing methodName";
	} else {
		out->proto = RPC_XML;
		out->method = x->method;
		out->params = x->params;
		out->nparams = x->nparams;
		out->id_json = NULL;
	}
	XML_ParserFree(x->p);
	free(x->t);
	free(x->vs);
	free(x);
	return rc;
}
