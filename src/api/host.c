/* host.c — hand-written messages of the core classes: the overridden
 * constructor and destructor of network (VM's are in vm.c), external authentication of the
 * pool and host, the auth class, and small host/VM extras.
 */
#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

static const char *row_str(const struct db_row *r, int cls, const char *field)
{
	const struct val *v = r->cols[api_field(cls, field)];
	return v && v->kind == V_STR ? v->u.s : "";
}

/* ---- network ---- */

static void network_create(struct api_ctx *c)
{
	int net = idl_class_find("network");
	struct val **cols = api_cols_from_record(c, net, c->params[1]);
	if (!cols)
		return;
	int fb = api_field(net, "bridge");
	if (!cols[fb] || (cols[fb]->kind == V_STR && cols[fb]->n == 0)) {
		/* pick the first free xapiN bridge name */
		char name[32];
		db_rdlock();
		for (int n = 0;; n++) {
			snprintf(name, sizeof(name), "xapi%d", n);
			bool used = false;
			for (struct db_row *r = db_next(net, NULL); r && !used; r = db_next(net, r))
				used = strcmp(row_str(r, net, "bridge"), name) == 0;
			if (!used)
				break;
		}
		db_unlock();
		val_free(cols[fb]);
		cols[fb] = val_cstr_h(name);
	}
	api_insert_reply(c, net, cols);
}

static void network_destroy(struct api_ctx *c)
{
	int net = idl_class_find("network");
	const char *ref = api_str(c, 1);
	db_rdlock();
	struct db_row *r = db_get(net, ref);
	const struct val *pifs = r ? r->cols[api_field(net, "PIFs")] : NULL;
	const struct val *vifs = r ? r->cols[api_field(net, "VIFs")] : NULL;
	char first[DB_REF_MAX] = "";
	const char *err = NULL;
	if (pifs && pifs->n) {
		err = "NETWORK_CONTAINS_PIF";
		snprintf(first, sizeof(first), "%s", pifs->u.items[0]->u.s);
	} else if (vifs && vifs->n) {
		err = "NETWORK_CONTAINS_VIF";
		snprintf(first, sizeof(first), "%s", vifs->u.items[0]->u.s);
	}
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "network", ref);
		return;
	}
	if (err) {
		api_fail(c, err, 1, first);
		return;
	}
	struct db_txn *t = db_txn_new();
	db_txn_delete(t, net, ref);
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

/* ---- external authentication ----
 * The auth type of ours is "PAM": users are checked by the PAM service for
 * external logins, and a subject's identifier is the user name. */

static int set_external_auth(struct api_ctx *c, const char *host, const struct val *config,
			     const char *service, const char *type)
{
	int h = idl_class_find("host");
	struct db_txn *t = db_txn_new();
	db_txn_set(t, h, host, api_field(h, "external_auth_type"), val_cstr_h(type));
	db_txn_set(t, h, host, api_field(h, "external_auth_service_name"), val_cstr_h(service));
	db_txn_set(t, h, host, api_field(h, "external_auth_configuration"),
		   config ? val_dup_h(config) : val_struct_h(0));
	return api_commit(c, t);
}

static bool auth_type_ok(struct api_ctx *c, const char *type)
{
	if (strcmp(type, "PAM") == 0)
		return true;
	api_fail(c, "AUTH_UNKNOWN_TYPE", 1, type);
	return false;
}

static void host_enable_external_auth(struct api_ctx *c)
{
	/* (session, host, config, service_name, auth_type) */
	if (!auth_type_ok(c, api_str(c, 4)))
		return;
	if (set_external_auth(c, api_str(c, 1), c->params[2], api_str(c, 3), api_str(c, 4)) == 0)
		enc_void(c->out);
}

static void host_disable_external_auth(struct api_ctx *c)
{
	if (set_external_auth(c, api_str(c, 1), NULL, "", "") == 0)
		enc_void(c->out);
}

static void pool_enable_external_auth(struct api_ctx *c)
{
	/* (session, pool, config, service_name, auth_type): every host of the pool */
	if (!auth_type_ok(c, api_str(c, 4)))
		return;
	if (set_external_auth(c, api_srv.host_ref, c->params[2], api_str(c, 3), api_str(c, 4)) == 0)
		enc_void(c->out);
}

static void pool_disable_external_auth(struct api_ctx *c)
{
	if (set_external_auth(c, api_srv.host_ref, NULL, "", "") == 0)
		enc_void(c->out);
}

static void auth_get_subject_identifier(struct api_ctx *c)
{
	enc_cstr(c->out, api_str(c, 1));
}

static void auth_get_subject_information_from_identifier(struct api_ctx *c)
{
	const char *sid = api_str(c, 1);
	enc_struct_begin(c->out);
	enc_member(c->out, "subject-name", 12);
	enc_cstr(c->out, sid);
	enc_member(c->out, "subject-is-group", 16);
	enc_cstr(c->out, "false");
	enc_member(c->out, "subject-account-disabled", 24);
	enc_cstr(c->out, "false");
	enc_struct_end(c->out);
}

static void auth_get_group_membership(struct api_ctx *c)
{
	enc_array_begin(c->out);
	enc_array_end(c->out);
}

/* ---- host extras ---- */

static void host_get_servertime(struct api_ctx *c)
{
	enc_datetime(c->out, util_now());
}

const struct api_impl host_impls[] = {
	{"network.create", network_create, false},
	{"network.destroy", network_destroy, false},
	{"host.enable_external_auth", host_enable_external_auth, false},
	{"host.disable_external_auth", host_disable_external_auth, false},
	{"pool.enable_external_auth", pool_enable_external_auth, false},
	{"pool.disable_external_auth", pool_disable_external_auth, false},
	{"auth.get_subject_identifier", auth_get_subject_identifier, true},
	{"auth.get_subject_information_from_identifier", auth_get_subject_information_from_identifier, true},
	{"auth.get_group_membership", auth_get_group_membership, true},
	{"host.get_servertime", host_get_servertime, true},
	{"host.get_server_localtime", host_get_servertime, true},
	{NULL, NULL, false},
};
