/* xerr.c — XenAPI error values. */
#include "base/xerr.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "base/util.h"

void xerr_vset(struct xerr *e, const char *code, int n, va_list ap)
{
	xerr_clear(e);
	e->code = code;
	if (n > XERR_MAXP)
		n = XERR_MAXP;
	for (int i = 0; i < n; i++) {
		const char *p = va_arg(ap, const char *);
		e->params[i] = util_strdup(p ? p : "");
	}
	e->n = n;
}

void xerr_set(struct xerr *e, const char *code, int n, ...)
{
	va_list ap;
	va_start(ap, n);
	xerr_vset(e, code, n, ap);
	va_end(ap);
}

void xerr_clear(struct xerr *e)
{
	for (int i = 0; i < e->n; i++)
		free(e->params[i]);
	memset(e, 0, sizeof(*e));
}

void xerr_move(struct xerr *dst, struct xerr *src)
{
	xerr_clear(dst);
	*dst = *src;
	memset(src, 0, sizeof(*src));
}
