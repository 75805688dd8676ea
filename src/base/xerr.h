/* xerr.h — a XenAPI error: a code from idl/errors.json and its parameters. */
#ifndef CX_XERR_H
#define CX_XERR_H

#define XERR_MAXP 8

struct xerr {
	const char *code;         /* NULL = no error; static string */
	int n;
	char *params[XERR_MAXP];  /* heap copies, freed by xerr_clear */
};

#include <stdarg.h>

void xerr_set(struct xerr *e, const char *code, int n, ...); /* n const char* params */
void xerr_vset(struct xerr *e, const char *code, int n, va_list ap);
void xerr_clear(struct xerr *e);
void xerr_move(struct xerr *dst, struct xerr *src);
#endif
