/* query.c — request helpers: header lookup and query-string parameters. */
#include "http/http.h"

#include <string.h>
#include <strings.h>

const char *http_req_header(const struct http_req *r, const char *name)
{
	for (int i = 0; i < r->nheaders; i++)
		if (strcasecmp(r->headers[i].name, name) == 0)
			return r->headers[i].value;
	return NULL;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode one form-urlencoded token [s, e) into out (at most outsz-1 bytes
 * plus a NUL).  Returns the decoded length, or -1 if it does not fit.  A '%'
 * not followed by two hex digits is kept literally, as browsers do. */
static long decode(const char *s, const char *e, char *out, size_t outsz)
{
	size_t n = 0;
	while (s < e) {
		unsigned char c = (unsigned char)*s++;
		if (c == '+') {
			c = ' ';
		} else if (c == '%' && e - s >= 2 && hexval((unsigned char)s[0]) >= 0 &&
			   hexval((unsigned char)s[1]) >= 0) {
			c = (unsigned char)(hexval((unsigned char)s[0]) * 16 + hexval((unsigned char)s[1]));
			s += 2;
		}
		if (out) {
			if (n + 1 >= outsz)
				return -1;
			out[n] = (char)c;
		}
		n++;
	}
	if (out)
		out[n] = '\0';
	return (long)n;
}

/* Does the encoded key [s, e) decode to exactly name? */
static bool key_equals(const char *s, const char *e, const char *name)
{
	size_t nl = strlen(name);
	while (s < e) {
		unsigned char c = (unsigned char)*s++;
		if (c == '+') {
			c = ' ';
		} else if (c == '%' && e - s >= 2 && hexval((unsigned char)s[0]) >= 0 &&
			   hexval((unsigned char)s[1]) >= 0) {
			c = (unsigned char)(hexval((unsigned char)s[0]) * 16 + hexval((unsigned char)s[1]));
			s += 2;
		}
		if (nl == 0 || (unsigned char)*name != c)
			return false;
		name++;
		nl--;
	}
	return nl == 0;
}

/* Returns the decoded length of the first parameter called name (a key
 * without '=' has the empty value), -1 if there is none, -2 if its value
 * does not fit in outsz-1 bytes.  out is NUL-terminated on success; the
 * value may itself contain NULs (%00), so use the length. */
int http_query_get(const char *query, const char *name, char *out, size_t outsz)
{
	if (!query || !name || !out || outsz == 0)
		return -1;
	const char *p = query;
	while (*p) {
		const char *end = strchr(p, '&');
		if (!end)
			end = p + strlen(p);
		const char *eq = memchr(p, '=', (size_t)(end - p));
		const char *kend = eq ? eq : end;
		if (kend > p && key_equals(p, kend, name)) {
			long n = eq ? decode(eq + 1, end, out, outsz) : decode(end, end, out, outsz);
			if (n < 0)
				return -2;
			return n > 0x7fffffff ? -2 : (int)n;
		}
		p = *end ? end + 1 : end;
	}
	return -1;
}
