/* roles.h — static RBAC roles and permissions. */
#ifndef CX_ROLES_H
#define CX_ROLES_H
#include "base/xerr.h"
#include "db/db.h"
void role_uuid(const char *name, char out[37]);
void role_ref(const char *name, char out[DB_REF_MAX]);
int role_bit_of_ref(const char *ref);      /* enum idl_role, or -1 */
int roles_seed(struct xerr *err);          /* insert missing role rows */
#endif
