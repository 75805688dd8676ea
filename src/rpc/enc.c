/* enc.c — XML-RPC and JSON-RPC reply encoding, straight into a struct buf.
 *
 * This is the hot path (get_record / get_all_records), so:
 *  - strings are scanned with a 256-entry class table and copied in runs with
 *    one memcpy; only bytes that need escaping break a run;
 *  - space is reserved once per item and the buffer is written directly;
 *  - integers are written with a two-digits-at-a-time itoa, never printf.
 * Byte-exact with xapi (ocaml-rpc); see docs/rpc.md for the rules.
 *
 * The buffer is kept NUL-terminated after every call (as buf.c does).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rpc/rpc.h"

/* ---- raw buffer helpers ---- */

/* Ensure room for n more bytes (+ the NUL buf.c keeps); return the write point. */
static inline char *room(struct buf *b, size_t n)
{
	if (b->cap - b->len < n + 1)
		buf_reserve(b, n);
	return b->p + b->len;
}

static inline void put(struct buf *b, const char *s, size_t n)
{
	char *w = room(b, n);
	if (n)
		memcpy(w, s, n);
	b->len += n;
}

#define PUTL(b, lit) put((b), (lit), sizeof(lit) - 1)

static inline void term(struct buf *b)
{
	b->p[b->len] = 0;
}

static const char digits2[201] =
	"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
	"8081828384858687888990919293949596979899";

/* Write the decimal text of i at w (at least 20 bytes); return its length. */
static size_t i64toa(int64_t i, char *w)
{
	char tmp[24];
	char *p = tmp + sizeof tmp;
	uint64_t v = i < 0 ? 0 - (uint64_t)i : (uint64_t)i;
	while (v >= 100) {
		unsigned r = (unsigned)(v % 100);
		v /= 100;
		p -= 2;
		memcpy(p, digits2 + 2 * r, 2);
	}
	if (v >= 10) {
		p -= 2;
		memcpy(p, digits2 + 2 * v, 2);
	} else {
		*--p = (char)('0' + v);
	}
	if (i < 0)
		*--p = '-';
	size_t n = (size_t)(tmp + sizeof tmp - p);
	memcpy(w, p, n);
	return n;
}

static inline void put_int(struct buf *b, int64_t i)
{
	char *w = room(b, 20);
	b->len += i64toa(i, w);
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at p (p[0] >= 0x80), or 0 if invalid. */
static inline size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t avail = (size_t)(end - p);
	if (c >= 0xC2 && c <= 0xDF)
		return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
	if (c >= 0xE0 && c <= 0xEF) {
		if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
			return 0;
		if (c == 0xE0 && p[1] < 0xA0)
			return 0; /* overlong */
		if (c == 0xED && p[1] > 0x9F)
			return 0; /* surrogates */
		return 3;
	}
	if (c >= 0xF0 && c <= 0xF4) {
		if (avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
		    (p[3] & 0xC0) != 0x80)
			return 0;
		if (c == 0xF0 && p[1] < 0x90)
			return 0;
		if (c == 0xF4 && p[1] > 0x8F)
			return 0;
		return 4;
	}
	return 0;
}

/* ---- escaping ---- */

/* Byte classes: 0 copy, 1 escape, 2 drop (XML control chars), 3 non-ASCII. */
enum { C_OK = 0, C_ESC, C_DROP, C_HI };

static unsigned char xml_cls[256], json_cls[256];

__attribute__((constructor)) static void enc_tables_init(void)
{
	for (int c = 0; c < 256; c++) {
		unsigned char x = C_OK, j = C_OK;
		if (c < 0x20) {
			x = (c == '\t' || c == '\n' || c == '\r') ? C_OK : C_DROP;
			j = C_ESC;
		} else if (c >= 0x80) {
			x = j = C_HI;
		}
		if (c == '<' || c == '>' || c == '&' || c == '"')
			x = C_ESC;
		if (c == '"' || c == '\\')
			j = C_ESC;
		xml_cls[c] = x;
		json_cls[c] = j;
	}
}

/* Word-at-a-time scan for the first byte that is not a plain copy.  The
 * classic bit tricks below flag a byte exactly at the LOWEST flagged position
 * (borrows only create false flags above a true one), which is all we use.
 * XML also flags TAB/LF/CR (they are < 0x20); the byte loop lets them pass. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline uint64_t zero_bytes(uint64_t v)
{
	return (v - ONES) & ~v & HIGHS;
}

static inline uint64_t eq_bytes(uint64_t v, unsigned char c)
{
	return zero_bytes(v ^ (ONES * c));
}

static inline uint64_t lt_bytes(uint64_t v, unsigned char n) /* n <= 128 */
{
	return (v - ONES * n) & ~v & HIGHS;
}

static inline unsigned first_flag(uint64_t m)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return (unsigned)__builtin_clzll(m) >> 3;
#else
	return (unsigned)__builtin_ctzll(m) >> 3;
#endif
}

static inline const unsigned char *scan_json(const unsigned char *p, const unsigned char *end)
{
	while (end - p >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		uint64_t m = lt_bytes(w, 0x20) | eq_bytes(w, '"') | eq_bytes(w, '\\') | (w & HIGHS);
		if (m)
			return p + first_flag(m);
		p += 8;
	}
	while (p < end && json_cls[*p] == C_OK)
		p++;
	return p;
}

static inline const unsigned char *scan_xml(const unsigned char *p, const unsigned char *end)
{
	while (end - p >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		uint64_t m = lt_bytes(w, 0x20) | eq_bytes(w, '<') | eq_bytes(w, '>') |
			     eq_bytes(w, '&') | eq_bytes(w, '"') | (w & HIGHS);
		if (m)
			return p + first_flag(m);
		p += 8;
	}
	while (p < end && xml_cls[*p] == C_OK)
		p++;
	return p;
}

/* Invalid UTF-8 never reaches the wire: each bad byte becomes U+FFFD, so the
 * output is always well-formed XML / valid JSON.  (The dispatcher rejects
 * invalid UTF-8 in requests, as xapi does, so this only guards our own data.) */
static const char repl_utf8[3] = { (char)0xEF, (char)0xBF, (char)0xBD };

static void esc_xml(struct buf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
	for (;;) {
		p = scan_xml(p, end);
		if (p == end)
			break;
		unsigned cls = xml_cls[*p];
		if (cls == C_OK) { /* TAB, LF, CR */
			p++;
			continue;
		}
		size_t l = 0;
		if (cls == C_HI && (l = utf8_seq(p, end)) != 0) {
			/* U+FFFE and U+FFFF are not XML characters: replace them too */
			if (!(l == 3 && p[0] == 0xEF && p[1] == 0xBF && p[2] >= 0xBE)) {
				p += l;
				continue;
			}
		}
		/* flush the run, then the special byte; keep room for the rest */
		size_t rl = (size_t)(p - run);
		char *w = room(b, rl + (size_t)(end - p) + 8);
		memcpy(w, run, rl);
		w += rl;
		switch (cls) {
		case C_ESC:
			switch (*p) {
			case '<': memcpy(w, "&lt;", 4); w += 4; break;
			case '>': memcpy(w, "&gt;", 4); w += 4; break;
			case '&': memcpy(w, "&amp;", 5); w += 5; break;
			default: memcpy(w, "&quot;", 6); w += 6; break;
			}
			break;
		case C_HI:
			memcpy(w, repl_utf8, 3);
			w += 3;
			break;
		default: /* C_DROP */
			break;
		}
		b->len = (size_t)(w - b->p);
		p += l ? l : 1;
		run = p;
	}
	put(b, (const char *)run, (size_t)(end - run));
}

static const char hexd[] = "0123456789abcdef";

static void esc_json(struct buf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
	for (;;) {
		p = scan_json(p, end);
		if (p == end)
			break;
		unsigned cls = json_cls[*p];
		if (cls == C_OK) { /* not reached: the scan is exact for the first flag */
			p++;
			continue;
		}
		size_t l = 0;
		if (cls == C_HI && (l = utf8_seq(p, end)) != 0) {
			p += l;
			continue;
		}
		size_t rl = (size_t)(p - run);
		char *w = room(b, rl + (size_t)(end - p) + 8);
		memcpy(w, run, rl);
		w += rl;
		if (cls == C_HI) {
			memcpy(w, "\\ufffd", 6);
			w += 6;
		} else {
			unsigned c = *p;
			*w++ = '\\';
			switch (c) {
			case '"': *w++ = '"'; break;
			case '\\': *w++ = '\\'; break;
			case '\b': *w++ = 'b'; break;
			case '\f': *w++ = 'f'; break;
			case '\n': *w++ = 'n'; break;
			case '\r': *w++ = 'r'; break;
			case '\t': *w++ = 't'; break;
			default:
				memcpy(w, "u00", 3);
				w[3] = hexd[c >> 4];
				w[4] = hexd[c & 15];
				w += 5;
			}
		}
		b->len = (size_t)(w - b->p);
		run = ++p;
	}
	put(b, (const char *)run, (size_t)(end - run));
}

/* ---- JSON separators ---- */

/* Bit (depth-1) of e->first is set while the container at that depth has not
 * received an item yet (JSON), or has no open <member> (XML structs). */
#define LVL_BIT(d) ((uint64_t)1 << (((d) - 1) & 63))

static inline void sep(struct enc *e)
{
	if (!e->depth)
		return;
	uint64_t bit = LVL_BIT(e->depth);
	if (e->first & bit)
		e->first &= ~bit;
	else
		put(e->b, ",", 1);
}

/* ---- values ---- */

void enc_init(struct enc *e, struct buf *b, bool json)
{
	e->b = b;
	e->json = json;
	e->depth = 0;
	e->first = 0;
}

void enc_str(struct enc *e, const char *s, size_t n)
{
	struct buf *b = e->b;
	if (e->json) {
		sep(e);
		put(b, "\"", 1);
		esc_json(b, s, n);
		put(b, "\"", 1);
	} else {
		room(b, n + 15);
		PUTL(b, "<value>");
		esc_xml(b, s, n);
		PUTL(b, "</value>");
	}
	term(b);
}

void enc_cstr(struct enc *e, const char *s)
{
	enc_str(e, s ? s : "", s ? strlen(s) : 0);
}

/* An integer: a bare JSON number; in XML between open and close tags. */
static void int_value(struct enc *e, int64_t i, const char *open, size_t olen, const char *close,
		      size_t clen)
{
	struct buf *b = e->b;
	if (e->json) {
		sep(e);
		put_int(b, i);
	} else {
		room(b, olen + clen + 24);
		put(b, open, olen);
		put_int(b, i);
		put(b, close, clen);
	}
	term(b);
}

/* int64 is untyped text in XML-RPC, as the original sends it */
void enc_int(struct enc *e, int64_t i)
{
	int_value(e, i, "<value>", 7, "</value>", 8);
}

void enc_i4(struct enc *e, int32_t i)
{
	int_value(e, i, "<value><i4>", 11, "</i4></value>", 13);
}

void enc_bool(struct enc *e, bool v)
{
	struct buf *b = e->b;
	if (e->json) {
		sep(e);
		if (v)
			PUTL(b, "true");
		else
			PUTL(b, "false");
	} else if (v) {
		PUTL(b, "<value><boolean>1</boolean></value>");
	} else {
		PUTL(b, "<value><boolean>0</boolean></value>");
	}
	term(b);
}

/* %.16g as xapi prints it.  JSON has no NaN/Infinity: there we write 0 for
 * NaN and ±1.7976931348623157e+308 (±DBL_MAX, %.17g so it parses back as a
 * finite number) for infinities.  XML keeps "nan", "inf", "-inf". */
void enc_double(struct enc *e, double d)
{
	struct buf *b = e->b;
	char tmp[40];
	int n;
	if (isnan(d)) {
		n = e->json ? snprintf(tmp, sizeof tmp, "0") : snprintf(tmp, sizeof tmp, "nan");
	} else if (isinf(d)) {
		if (e->json)
			n = snprintf(tmp, sizeof tmp, "%s1.7976931348623157e+308", d < 0 ? "-" : "");
		else
			n = snprintf(tmp, sizeof tmp, "%s", d < 0 ? "-inf" : "inf");
	} else {
		n = snprintf(tmp, sizeof tmp, "%.16g", d);
	}
	if (n < 0)
		n = 0;
	if (e->json) {
		sep(e);
		put(b, tmp, (size_t)n);
	} else {
		room(b, (size_t)n + 32);
		PUTL(b, "<value><double>");
		put(b, tmp, (size_t)n);
		PUTL(b, "</double></value>");
	}
	term(b);
}

void enc_datetime(struct enc *e, int64_t t)
{
	struct buf *b = e->b;
	char tmp[24];
	val_datetime_fmt(t, tmp);
	if (e->json) {
		sep(e);
		char *w = room(b, 20);
		w[0] = '"';
		memcpy(w + 1, tmp, 18);
		w[19] = '"';
		b->len += 20;
	} else {
		PUTL(b, "<value><dateTime.iso8601>");
		put(b, tmp, 18);
		PUTL(b, "</dateTime.iso8601></value>");
	}
	term(b);
}

void enc_void(struct enc *e)
{
	struct buf *b = e->b;
	if (e->json) {
		sep(e);
		PUTL(b, "\"\"");
	} else {
		PUTL(b, "<value></value>");
	}
	term(b);
}

void enc_array_begin(struct enc *e)
{
	if (e->json) {
		sep(e);
		put(e->b, "[", 1);
	} else {
		PUTL(e->b, "<value><array><data>");
	}
	e->depth++;
	e->first |= LVL_BIT(e->depth);
	term(e->b);
}

void enc_array_end(struct enc *e)
{
	if (e->depth) {
		e->first &= ~LVL_BIT(e->depth);
		e->depth--;
	}
	if (e->json)
		put(e->b, "]", 1);
	else
		PUTL(e->b, "</data></array></value>");
	term(e->b);
}

void enc_struct_begin(struct enc *e)
{
	if (e->json) {
		sep(e);
		put(e->b, "{", 1);
	} else {
		PUTL(e->b, "<value><struct>");
	}
	e->depth++;
	e->first |= LVL_BIT(e->depth);
	term(e->b);
}

static void member(struct enc *e, const char *key, size_t klen, bool escape)
{
	struct buf *b = e->b;
	if (e->json) {
		sep(e);
		room(b, klen + 8);
		put(b, "\"", 1);
		if (escape)
			esc_json(b, key, klen);
		else
			put(b, key, klen);
		put(b, "\":", 2);
		/* the member's value must not write a comma */
		if (e->depth)
			e->first |= LVL_BIT(e->depth);
	} else {
		room(b, klen + 40);
		uint64_t bit = e->depth ? LVL_BIT(e->depth) : 0;
		if (e->first & bit)
			e->first &= ~bit;
		else if (e->depth)
			PUTL(b, "</member>");
		PUTL(b, "<member><name>");
		if (escape)
			esc_xml(b, key, klen);
		else
			put(b, key, klen);
		PUTL(b, "</name>");
	}
	term(b);
}

void enc_member(struct enc *e, const char *key, size_t klen)
{
	member(e, key, klen, true);
}

void enc_member_plain(struct enc *e, const char *key, size_t klen)
{
	member(e, key, klen, false);
}

void enc_struct_end(struct enc *e)
{
	if (e->json) {
		put(e->b, "}", 1);
	} else {
		uint64_t bit = e->depth ? LVL_BIT(e->depth) : 0;
		if (e->depth && !(e->first & bit))
			PUTL(e->b, "</member>");
		PUTL(e->b, "</struct></value>");
	}
	if (e->depth) {
		e->first &= ~LVL_BIT(e->depth);
		e->depth--;
	}
	term(e->b);
}

void enc_val(struct enc *e, const struct val *v)
{
	if (!v) {
		enc_void(e);
		return;
	}
	switch (v->kind) {
	case V_STR:
		enc_str(e, v->u.s, v->n);
		break;
	case V_INT:
		enc_int(e, v->u.i);
		break;
	case V_I4:
		enc_i4(e, (int32_t)v->u.i);
		break;
	case V_DOUBLE:
		enc_double(e, v->u.d);
		break;
	case V_BOOL:
		enc_bool(e, v->u.b);
		break;
	case V_DATETIME:
		enc_datetime(e, v->u.i);
		break;
	case V_ARRAY:
		enc_array_begin(e);
		for (uint32_t i = 0; i < v->n; i++)
			enc_val(e, v->u.items[i]);
		enc_array_end(e);
		break;
	case V_STRUCT:
		enc_struct_begin(e);
		for (uint32_t i = 0; i < v->n; i++) {
			const struct val_member *m = &v->u.members[i];
			enc_member(e, m->key ? m->key : "", m->key ? m->klen : 0);
			enc_val(e, m->v);
		}
		enc_struct_end(e);
		break;
	case V_NIL:
	default:
		enc_void(e);
		break;
	}
}

/* ---- envelopes ---- */

#define XML_HEAD "<?xml version=\"1.0\"?><methodResponse><params><param>"
#define XML_TAIL "</param></params></methodResponse>"
#define XML_OK_HEAD                                                                   \
	XML_HEAD "<value><struct><member><name>Status</name><value>Success</value></member>" \
		 "<member><name>Value</name>"
#define XML_OK_TAIL "</member></struct></value>" XML_TAIL
#define XML_ERR_HEAD                                                                  \
	XML_HEAD "<value><struct><member><name>Status</name><value>Failure</value></member>" \
		 "<member><name>ErrorDescription</name><value><array><data>"
#define XML_ERR_TAIL "</data></array></value></member></struct></value>" XML_TAIL

static bool is_v1(const struct enc *e, const struct rpc_request *req)
{
	return e->json && req && req->proto == RPC_JSON1;
}

static void put_id(struct buf *b, const struct rpc_request *req)
{
	const char *id = req && req->id_json ? req->id_json : "null";
	put(b, id, strlen(id));
}

void rpc_reply_begin(struct enc *e, const struct rpc_request *req, bool raw)
{
	e->depth = 0;
	e->first = 0;
	if (!e->json) {
		if (raw)
			PUTL(e->b, XML_HEAD);
		else
			PUTL(e->b, XML_OK_HEAD);
	} else if (is_v1(e, req)) {
		PUTL(e->b, "{\"result\":");
	} else {
		PUTL(e->b, "{\"jsonrpc\":\"2.0\",\"result\":");
	}
	term(e->b);
}

void rpc_reply_end(struct enc *e, const struct rpc_request *req, bool raw)
{
	if (!e->json) {
		if (raw)
			PUTL(e->b, XML_TAIL);
		else
			PUTL(e->b, XML_OK_TAIL);
	} else {
		if (is_v1(e, req))
			PUTL(e->b, ",\"error\":null,\"id\":");
		else
			PUTL(e->b, ",\"id\":");
		put_id(e->b, req);
		put(e->b, "}", 1);
	}
	term(e->b);
}

void rpc_reply_error(struct enc *e, const struct rpc_request *req,
		     const char *code, const char *const *params, int nparams)
{
	struct buf *b = e->b;
	e->depth = 0;
	e->first = 0;
	if (!code)
		code = "";
	if (!params)
		nparams = 0;
	if (!e->json) {
		PUTL(b, XML_ERR_HEAD);
		enc_cstr(e, code);
		for (int i = 0; i < nparams; i++)
			enc_cstr(e, params[i]);
		PUTL(b, XML_ERR_TAIL);
	} else {
		bool v1 = is_v1(e, req);
		if (v1)
			PUTL(b, "{\"result\":null,\"error\":[");
		else
			PUTL(b, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":");
		enc_cstr(e, code);
		if (!v1)
			PUTL(b, ",\"data\":[");
		for (int i = 0; i < nparams; i++) {
			if (v1 || i)
				put(b, ",", 1);
			enc_cstr(e, params[i]);
		}
		if (v1)
			PUTL(b, "],\"id\":");
		else
			PUTL(b, "]},\"id\":");
		put_id(b, req);
		put(b, "}", 1);
	}
	term(b);
}
