/* roles.c — the static RBAC roles and permissions as role rows.
 *
 * As in the original, roles and permissions are both `role` objects: seven
 * roles (pool-admin .. read-only) whose subroles are permissions, and one
 * permission per message (its lower-cased wire name).  Their uuids are fixed
 * (an MD5 digest of the name read as a uuid; pool-admin has a fixed uuid), so
 * their refs (OpaqueRef:<uuid>) are the same on every host and every start.
 */
#include "api/roles.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "base/log.h"
#include "base/util.h"

static const char *const role_descriptions[ROLE_COUNT] = {
	"The Pool Administrator role has full access to all features and settings",
	"The Pool Operator role can manage host- and pool-wide resources",
	"The VM Power Administrator role has full access to VM and template management",
	"The VM Administrator role can manage VMs and templates",
	"The VM Operator role can use VMs and interact with VM consoles",
	"The Client Certificate role has access to the calls a certificate-authenticated client needs",
	"The Read-Only role can log in with basic read-only access",
};

void role_uuid(const char *name, char out[37])
{
	if (strcmp(name, "pool-admin") == 0) {
		strcpy(out, "0165f154-ba3e-034e-6b27-5d271af109ba");
		return;
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	EVP_Digest(name, strlen(name), md, &n, EVP_md5(), NULL);
	static const char hex[] = "0123456789abcdef";
	char *p = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[md[i] >> 4];
		*p++ = hex[md[i] & 15];
	}
	*p = 0;
}

void role_ref(const char *name, char out[DB_REF_MAX])
{
	char u[37];
	role_uuid(name, u);
	snprintf(out, DB_REF_MAX, "OpaqueRef:%s", u);
}

int role_bit_of_ref(const char *ref)
{
	static char refs[ROLE_COUNT][DB_REF_MAX];
	static int ready;
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		for (int r = 0; r < ROLE_COUNT; r++)
			role_ref(idl_role_names[r], refs[r]);
		__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
	}
	for (int r = 0; r < ROLE_COUNT; r++)
		if (strcmp(refs[r], ref) == 0)
			return r;
	return -1;
}

/* Several messages may share a permission name; each permission counts
 * once, at its first message.  Worked out once (the table is static). */
static bool *perm_rep;
static pthread_once_t perm_rep_once = PTHREAD_ONCE_INIT;

static void perm_rep_init(void)
{
	perm_rep = util_calloc((size_t)idl_nmsgs, sizeof(*perm_rep));
	for (int i = 0; i < idl_nmsgs; i++) {
		if (perm_rep[i])
			continue;
		for (int k = i + 1; k < idl_nmsgs; k++)
			if (!perm_rep[k] && strcmp(idl_msgs[k].perm, idl_msgs[i].perm) == 0)
				perm_rep[k] = true;
	}
}

static bool perm_repeated(int i)
{
	pthread_once(&perm_rep_once, perm_rep_init);
	return perm_rep[i];
}

/* Insert every missing role/permission row in one transaction. */
int roles_seed(struct xerr *err)
{
	int cls = idl_class_find("role");
	if (cls < 0)
		return 0;
	int nperm = 0;
	for (int i = 0; i < idl_nmsgs; i++)
		if (idl_msgs[i].roles)
			nperm++;
	struct db_txn *t = db_txn_new();
	int added = 0;
	/* permissions first, then roles, as role.get_all lists them */
	char ref[DB_REF_MAX], uuid[37];
	db_rdlock();
	for (int i = 0; i < idl_nmsgs; i++) {
		const struct idl_msg *m = &idl_msgs[i];
		role_ref(m->perm, ref);
		if (db_get(cls, ref))
			continue;
		/* several wire names can share a permission (aliases): once only */
		if (perm_repeated(i))
			continue;
		role_uuid(m->perm, uuid);
		struct val **cols = api_row_new(cls);
		api_row_set(cls, cols, "uuid", val_cstr_h(uuid));
		api_row_set(cls, cols, "name_label", val_cstr_h(m->perm));
		api_row_set(cls, cols, "name_description", val_cstr_h("A basic permission"));
		api_row_set(cls, cols, "is_internal", val_bool_h(true));
		db_txn_insert(t, cls, ref, cols);
		free(cols);
		added++;
	}
	for (int r = 0; r < ROLE_COUNT; r++) {
		role_ref(idl_role_names[r], ref);
		if (db_get(cls, ref))
			continue;
		role_uuid(idl_role_names[r], uuid);
		struct val **cols = api_row_new(cls);
		api_row_set(cls, cols, "uuid", val_cstr_h(uuid));
		api_row_set(cls, cols, "name_label", val_cstr_h(idl_role_names[r]));
		api_row_set(cls, cols, "name_description", val_cstr_h(role_descriptions[r]));
		api_row_set(cls, cols, "is_internal", val_bool_h(r == ROLE_CLIENT_CERT));
		/* subroles: every permission this role holds */
		int n = 0;
		for (int i = 0; i < idl_nmsgs; i++)
			if (idl_msgs[i].roles & (1u << r))
				n++;
		struct val *set = val_array_h((uint32_t)n);
		n = 0;
		for (int i = 0; i < idl_nmsgs; i++) {
			if (!(idl_msgs[i].roles & (1u << r)))
				continue;
			char pref[DB_REF_MAX];
			role_ref(idl_msgs[i].perm, pref);
			set->u.items[n++] = val_cstr_h(pref);
		}
		api_row_set(cls, cols, "subroles", set);
		db_txn_insert(t, cls, ref, cols);
		free(cols);
		added++;
	}
	db_unlock();
	(void)nperm;
	if (!added) {
		db_txn_free(t);
		return 0;
	}
	return db_txn_commit(t, err);
}

/* ---- role messages ---- */

static int role_cls(void)
{
	static int cls = -2;
	if (cls == -2)
		cls = idl_class_find("role");
	return cls;
}

static int role_index(struct api_ctx *c, int i)
{
	const char *ref = api_str(c, i);
	db_rdlock();
	bool ok = db_get(role_cls(), ref) != NULL;
	db_unlock();
	if (!ok) {
		api_fail(c, "HANDLE_INVALID", 2, "role", ref);
		return -2;
	}
	return role_bit_of_ref(ref);
}

static void write_perms(struct api_ctx *c, int r, bool names)
{
	enc_array_begin(c->out);
	if (r >= 0) {
		for (int i = 0; i < idl_nmsgs; i++) {
			const struct idl_msg *m = &idl_msgs[i];
			if (!(m->roles & (1u << r)))
				continue;
			if (perm_repeated(i))
				continue;
			if (names) {
				enc_cstr(c->out, m->perm);
			} else {
				char ref[DB_REF_MAX];
				role_ref(m->perm, ref);
				enc_cstr(c->out, ref);
			}
		}
	}
	enc_array_end(c->out);
}

static void role_get_permissions(struct api_ctx *c)
{
	int r = role_index(c, 1);
	if (r != -2)
		write_perms(c, r, false);
}

static void role_get_permissions_name_label(struct api_ctx *c)
{
	int r = role_index(c, 1);
	if (r != -2)
		write_perms(c, r, true);
}

static void write_roles_with(struct api_ctx *c, const char *perm)
{
	enc_array_begin(c->out);
	for (int i = 0; i < idl_nmsgs; i++) {
		if (strcmp(idl_msgs[i].perm, perm) != 0)
			continue;
		for (int r = 0; r < ROLE_COUNT; r++) {
			if (!(idl_msgs[i].roles & (1u << r)))
				continue;
			char ref[DB_REF_MAX];
			role_ref(idl_role_names[r], ref);
			enc_cstr(c->out, ref);
		}
		break;
	}
	enc_array_end(c->out);
}

static void role_get_by_permission(struct api_ctx *c)
{
	const char *ref = api_str(c, 1);
	db_rdlock();
	struct db_row *row = db_get(role_cls(), ref);
	char name[256] = "";
	if (row) {
		const struct val *v = row->cols[idl_classes[role_cls()].name_label_field];
		snprintf(name, sizeof(name), "%s", v && v->kind == V_STR ? v->u.s : "");
	}
	db_unlock();
	if (!row) {
		api_fail(c, "HANDLE_INVALID", 2, "role", ref);
		return;
	}
	write_roles_with(c, name);
}

static void role_get_by_permission_name_label(struct api_ctx *c)
{
	write_roles_with(c, api_str(c, 1));
}

const struct api_impl role_impls[] = {
	{"role.get_permissions", role_get_permissions, true},
	{"role.get_permissions_name_label", role_get_permissions_name_label, true},
	{"role.get_by_permission", role_get_by_permission, true},
	{"role.get_by_permission_name_label", role_get_by_permission_name_label, true},
	{NULL, NULL, false},
};
