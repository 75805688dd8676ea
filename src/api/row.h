/* row.h — reading the columns of a database row by field name, for the VM
 * side of the API layer (vm.c, vm_power.c).  The row may be NULL (a missing
 * row reads as empty); the read lock must be held while the results are in
 * use.
 */
#ifndef CX_API_ROW_H
#define CX_API_ROW_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include "api/api.h"
#include "db/db.h"

static inline const struct val *fv(const struct db_row *r, int cls, const char *f)
{
	return r ? r->cols[api_field(cls, f)] : NULL;
}
static inline const char *fs(const struct db_row *r, int cls, const char *f)
{
	const struct val *v = fv(r, cls, f);
	return v && v->kind == V_STR ? v->u.s : "";
}
static inline bool fb(const struct db_row *r, int cls, const char *f)
{
	const struct val *v = fv(r, cls, f);
	return v && v->kind == V_BOOL && v->u.b;
}
static inline int64_t fi(const struct db_row *r, int cls, const char *f)
{
	const struct val *v = fv(r, cls, f);
	return v && (v->kind == V_INT || v->kind == V_I4) ? v->u.i : 0;
}
/* Members of an array or map; 0 for anything else. */
static inline uint32_t n_of(const struct val *v)
{
	return v && (v->kind == V_ARRAY || v->kind == V_STRUCT) ? v->n : 0;
}
static inline bool is_null(const char *r)
{
	return !r || !r[0] || strcmp(r, "OpaqueRef:NULL") == 0;
}
/* s in lower case into out (n bytes), e.g. a power state for an error. */
static inline void lower(const char *s, char *out, size_t n)
{
	size_t i = 0;
	for (; s[i] && i + 1 < n; i++)
		out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
	out[i] = 0;
}

#endif
