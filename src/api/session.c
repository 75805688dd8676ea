/* session.c — login, logout and the per-call session check.
 *
 * Sessions are rows of the (non-persistent) session class, so clients can read
 * them; what the per-call check needs (who, which roles, when last used) is
 * also kept in a small in-memory index, so checking a session costs one hash
 * lookup under a mutex and no database write.
 */
#include "api/api.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/roles.h"
#include "base/log.h"
#include "base/util.h"

struct sess {
	struct sess *next;
	char ref[DB_REF_MAX];
	bool superuser;
	uint8_t roles;
	double last_used;
	char *sid;      /* auth_user_sid; "" for local */
};

#define SESS_BUCKETS 4096
static struct sess *sess_tab[SESS_BUCKETS];
static pthread_mutex_t sess_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned sess_bucket(const char *ref)
{
	return (unsigned)(util_hash(ref, strlen(ref)) % SESS_BUCKETS);
}

static void sess_free(struct sess *s)
{
	if (s) {
		free(s->sid);
		free(s);
	}
}

static void sess_destroy_rows(char (*refs)[DB_REF_MAX], int n)
{
	int cls = idl_class_find("session");
	struct db_txn *t = db_txn_new();
	for (int i = 0; i < n; i++)
		db_txn_delete(t, cls, refs[i]);
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0)
		xerr_clear(&e); /* already gone: fine */
}

int session_check(const char *ref, struct api_caller *who, struct xerr *err)
{
	double now = util_now_f();
	pthread_mutex_lock(&sess_lock);
	struct sess *s = sess_tab[sess_bucket(ref)];
	while (s && strcmp(s->ref, ref) != 0)
		s = s->next;
	bool expired = s && api_srv.session_timeout_s > 0 &&
		       now - s->last_used > api_srv.session_timeout_s;
	if (s && !expired) {
		s->last_used = now;
		who->superuser = s->superuser;
		who->roles = s->roles;
		snprintf(who->session, sizeof(who->session), "%s", s->ref);
	}
	pthread_mutex_unlock(&sess_lock);
	if (!s || expired) {
		if (expired)
			session_forget(ref);
		xerr_set(err, "SESSION_INVALID", 1, ref);
		return -1;
	}
	return 0;
}

void session_forget(const char *ref)
{
	pthread_mutex_lock(&sess_lock);
	struct sess **pp = &sess_tab[sess_bucket(ref)];
	while (*pp && strcmp((*pp)->ref, ref) != 0)
		pp = &(*pp)->next;
	struct sess *s = *pp;
	if (s)
		*pp = s->next;
	pthread_mutex_unlock(&sess_lock);
	sess_free(s);
}

/* Remove every session for which drop(s, ctx) holds, with its row. */
static void sess_remove_if(bool (*drop)(const struct sess *s, const void *ctx), const void *ctx)
{
	char (*dead)[DB_REF_MAX] = NULL;
	int n = 0, cap = 0;
	pthread_mutex_lock(&sess_lock);
	for (int b = 0; b < SESS_BUCKETS; b++) {
		struct sess **pp = &sess_tab[b];
		while (*pp) {
			struct sess *s = *pp;
			if (!drop(s, ctx)) {
				pp = &s->next;
				continue;
			}
			*pp = s->next;
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				dead = util_realloc(dead, (size_t)cap * sizeof(*dead));
			}
			memcpy(dead[n++], s->ref, DB_REF_MAX);
			sess_free(s);
		}
	}
	pthread_mutex_unlock(&sess_lock);
	if (n)
		sess_destroy_rows(dead, n);
	free(dead);
}

static bool sess_idle(const struct sess *s, const void *ctx)
{
	return *(const double *)ctx - s->last_used > api_srv.session_timeout_s;
}

/* Drop sessions idle for longer than the timeout (called from a timer). */
void session_gc(void)
{
	if (api_srv.session_timeout_s <= 0)
		return;
	double now = util_now_f();
	sess_remove_if(sess_idle, &now);
}

static int host_external_auth(char *type, size_t n)
{
	int cls = idl_class_find("host");
	db_rdlock();
	struct db_row *h = db_get(cls, api_srv.host_ref);
	const struct val *v = h ? h->cols[api_field(cls, "external_auth_type")] : NULL;
	snprintf(type, n, "%s", v && v->kind == V_STR ? v->u.s : "");
	db_unlock();
	return 0;
}

/* Find the subject for an externally authenticated user; returns its role
 * bitmask, or -1 if no subject matches. */
static int subject_roles(const char *sid, char subject_ref[DB_REF_MAX])
{
	int cls = idl_class_find("subject");
	int f_sid = api_field(cls, "subject_identifier");
	int f_roles = api_field(cls, "roles");
	int roles = -1;
	db_rdlock();
	for (struct db_row *r = db_next(cls, NULL); r; r = db_next(cls, r)) {
		const struct val *v = r->cols[f_sid];
		if (!v || v->kind != V_STR || strcmp(v->u.s, sid) != 0)
			continue;
		snprintf(subject_ref, DB_REF_MAX, "%s", r->ref);
		roles = 0;
		const struct val *set = r->cols[f_roles];
		for (uint32_t i = 0; set && set->kind == V_ARRAY && i < set->n; i++) {
			int bit = role_bit_of_ref(set->u.items[i]->u.s);
			if (bit >= 0)
				roles |= 1 << bit;
		}
		break;
	}
	db_unlock();
	return roles;
}

static struct val *perms_of_roles(int roles)
{
	int n = 0;
	for (int i = 0; i < idl_nmsgs; i++)
		if (idl_msgs[i].roles & roles)
			n++;
	struct val *set = val_array_h((uint32_t)n);
	n = 0;
	for (int i = 0; i < idl_nmsgs; i++)
		if (idl_msgs[i].roles & roles)
			set->u.items[n++] = val_cstr_h(idl_msgs[i].perm);
	return set;
}

static void session_login_with_password(struct api_ctx *c)
{
	const char *user = api_str(c, 0), *pw = api_str(c, 1);
	const char *originator = c->nparams > 3 ? api_str(c, 3) : "";
	bool superuser = true;
	int roles = 0;
	char subject[DB_REF_MAX] = "OpaqueRef:NULL";
	const char *sid = "";
	if (!c->who.local_root) {
		char ext[32];
		host_external_auth(ext, sizeof(ext));
		struct xerr e = {0};
		if (ext[0] == 0 || strcmp(user, "root") == 0) {
			if (auth_pam(api_srv.pam_service, user, pw, &e) < 0) {
				xerr_move(&c->err, &e);
				return;
			}
		} else {
			if (auth_pam(api_srv.pam_ext_service, user, pw, &e) < 0) {
				xerr_move(&c->err, &e);
				return;
			}
			superuser = false;
			sid = user;
			roles = subject_roles(sid, subject);
			if (roles < 0) {
				api_fail(c, "SESSION_AUTHORIZATION_FAILED", 2, user,
					 "The user is not a subject of this pool");
				return;
			}
			if (roles == 0) {
				api_fail(c, "RBAC_PERMISSION_DENIED", 2, "session.login_with_password",
					 "The subject has no roles");
				return;
			}
		}
	}
	int cls = idl_class_find("session");
	char ref[DB_REF_MAX], uuid[40];
	db_ref_new(ref);
	db_uuid_new(uuid);
	int64_t now = util_now();
	struct val **cols = api_row_new(cls);
	api_row_set(cls, cols, "uuid", val_cstr_h(uuid));
	api_row_set(cls, cols, "this_host", val_cstr_h(api_srv.host_ref));
	api_row_set(cls, cols, "last_active", val_datetime_h(now));
	api_row_set(cls, cols, "validation_time", val_datetime_h(now));
	api_row_set(cls, cols, "is_local_superuser", val_bool_h(superuser));
	api_row_set(cls, cols, "subject", val_cstr_h(subject));
	api_row_set(cls, cols, "auth_user_sid", val_cstr_h(sid));
	api_row_set(cls, cols, "auth_user_name", val_cstr_h(user));
	api_row_set(cls, cols, "originator", val_cstr_h(originator));
	if (!superuser)
		api_row_set(cls, cols, "rbac_permissions", perms_of_roles(roles));
	struct db_txn *t = db_txn_new();
	db_txn_insert(t, cls, ref, cols);
	free(cols);
	if (api_commit(c, t) < 0)
		return;
	struct sess *s = util_calloc(1, sizeof(*s));
	snprintf(s->ref, sizeof(s->ref), "%s", ref);
	s->superuser = superuser;
	s->roles = (uint8_t)roles;
	s->last_used = util_now_f();
	s->sid = util_strdup(sid);
	pthread_mutex_lock(&sess_lock);
	unsigned b = sess_bucket(ref);
	s->next = sess_tab[b];
	sess_tab[b] = s;
	pthread_mutex_unlock(&sess_lock);
	enc_cstr(c->out, ref);
}

static void session_logout(struct api_ctx *c)
{
	const char *ref = c->who.session;
	session_forget(ref);
	char refs[1][DB_REF_MAX];
	snprintf(refs[0], DB_REF_MAX, "%s", ref);
	sess_destroy_rows(refs, 1);
	enc_void(c->out);
}

static void session_get_all_subject_identifiers(struct api_ctx *c)
{
	/* distinct non-empty sids of live sessions */
	char **seen = NULL;
	int n = 0;
	pthread_mutex_lock(&sess_lock);
	for (int b = 0; b < SESS_BUCKETS; b++)
		for (struct sess *s = sess_tab[b]; s; s = s->next) {
			if (!s->sid[0])
				continue;
			bool dup = false;
			for (int i = 0; i < n && !dup; i++)
				dup = strcmp(seen[i], s->sid) == 0;
			if (dup)
				continue;
			seen = util_realloc(seen, sizeof(char *) * (size_t)(n + 1));
			seen[n++] = util_strdup(s->sid);
		}
	pthread_mutex_unlock(&sess_lock);
	enc_array_begin(c->out);
	for (int i = 0; i < n; i++) {
		enc_cstr(c->out, seen[i]);
		free(seen[i]);
	}
	enc_array_end(c->out);
	free(seen);
}

static void logout_sid(const char *sid, const char *keep);

static void session_logout_subject_identifier(struct api_ctx *c)
{
	logout_sid(api_str(c, 1), c->who.session);
	enc_void(c->out);
}

/* Root's password, in the embedded PAM stack's password file. */
static void session_change_password(struct api_ctx *c)
{
	const char *old_pw = api_str(c, 1), *new_pw = api_str(c, 2);
	if (!c->who.superuser && !c->who.local_root) {
		api_fail(c, "USER_IS_NOT_LOCAL_SUPERUSER", 1, "Only the local superuser can change passwords");
		return;
	}
	if (!api_srv.pwdfile) {
		api_fail(c, "CHANGE_PASSWORD_REJECTED", 1,
			 "Passwords are managed by the system's PAM configuration");
		return;
	}
	struct xerr e = {0};
	if (!c->who.local_root && auth_pam(api_srv.pam_service, "root", old_pw, &e) < 0) {
		xerr_clear(&e);
		api_fail(c, "CHANGE_PASSWORD_REJECTED", 1, "Authentication failure");
		return;
	}
	if (!new_pw[0]) {
		api_fail(c, "CHANGE_PASSWORD_REJECTED", 1, "The new password is empty");
		return;
	}
	int rc = auth_pwdfile_set(api_srv.pwdfile, "root", new_pw);
	if (rc < 0) {
		api_fail(c, "INTERNAL_ERROR", 1, strerror(-rc));
		return;
	}
	enc_void(c->out);
}

/* ---- subjects ---- */

static void subject_create(struct api_ctx *c)
{
	int cls = idl_class_find("subject");
	struct val **cols = api_cols_from_record(c, cls, c->params[1]);
	if (!cols)
		return;
	const struct val *sid = cols[api_field(cls, "subject_identifier")];
	const char *want = sid && sid->kind == V_STR ? sid->u.s : "";
	int f_sid = api_field(cls, "subject_identifier");
	bool dup = false;
	db_rdlock();
	for (struct db_row *r = db_next(cls, NULL); r && !dup; r = db_next(cls, r)) {
		const struct val *v = r->cols[f_sid];
		dup = v && v->kind == V_STR && strcmp(v->u.s, want) == 0;
	}
	db_unlock();
	if (dup || !want[0]) {
		if (dup)
			api_fail(c, "SUBJECT_ALREADY_EXISTS", 0);
		else
			api_fail(c, "SUBJECT_CANNOT_BE_RESOLVED", 0);
		api_cols_free(cls, cols);
		return;
	}
	api_insert_reply(c, cls, cols);
}

struct sid_match {
	const char *sid, *keep;
};

static bool sess_of_sid(const struct sess *s, const void *ctx)
{
	const struct sid_match *m = ctx;
	return s->sid[0] && strcmp(s->sid, m->sid) == 0 && strcmp(s->ref, m->keep) != 0;
}

/* Log out every session of a subject identifier except keep (may be ""). */
static void logout_sid(const char *sid, const char *keep)
{
	struct sid_match m = {sid, keep};
	sess_remove_if(sess_of_sid, &m);
}

static bool subject_sid(struct api_ctx *c, const char *ref, char *out, size_t n)
{
	int cls = idl_class_find("subject");
	db_rdlock();
	struct db_row *r = db_get(cls, ref);
	if (r) {
		const struct val *v = r->cols[api_field(cls, "subject_identifier")];
		snprintf(out, n, "%s", v && v->kind == V_STR ? v->u.s : "");
	}
	db_unlock();
	if (!r)
		api_fail(c, "HANDLE_INVALID", 2, "subject", ref);
	return r != NULL;
}

static void subject_destroy(struct api_ctx *c)
{
	int cls = idl_class_find("subject");
	char sid[512];
	if (!subject_sid(c, api_str(c, 1), sid, sizeof(sid)))
		return;
	struct db_txn *t = db_txn_new();
	db_txn_delete(t, cls, api_str(c, 1));
	if (api_commit(c, t) < 0)
		return;
	logout_sid(sid, "");
	enc_void(c->out);
}

static void subject_roles_edit(struct api_ctx *c, bool add)
{
	int cls = idl_class_find("subject");
	const char *ref = api_str(c, 1), *role = api_str(c, 2);
	int f = api_field(cls, "roles");
	db_rdlock();
	struct db_row *r = db_get(cls, ref);
	bool has = false;
	const struct val *set = r ? r->cols[f] : NULL;
	for (uint32_t i = 0; set && set->kind == V_ARRAY && i < set->n; i++)
		has = has || strcmp(set->u.items[i]->u.s, role) == 0;
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "subject", ref);
		return;
	}
	if (role_bit_of_ref(role) < 0) {
		api_fail(c, "ROLE_NOT_FOUND", 0);
		return;
	}
	if (add && has) {
		api_fail(c, "ROLE_ALREADY_EXISTS", 0);
		return;
	}
	if (!add && !has) {
		api_fail(c, "ROLE_NOT_FOUND", 0);
		return;
	}
	struct db_txn *t = db_txn_new();
	struct val v = {.kind = V_STR, .n = (uint32_t)strlen(role), .u.s = role};
	if (add)
		db_txn_set_add(t, cls, ref, f, val_dup_h(&v));
	else
		db_txn_set_remove(t, cls, ref, f, &v);
	if (api_commit(c, t) < 0)
		return;
	/* sessions of this subject carry their roles: make them log in again */
	char sid[512];
	if (subject_sid(c, ref, sid, sizeof(sid)))
		logout_sid(sid, "");
	xerr_clear(&c->err);
	enc_void(c->out);
}

static void subject_add_to_roles(struct api_ctx *c)
{
	subject_roles_edit(c, true);
}

static void subject_remove_from_roles(struct api_ctx *c)
{
	subject_roles_edit(c, false);
}

static void subject_get_permissions_name_label(struct api_ctx *c)
{
	int cls = idl_class_find("subject");
	const char *ref = api_str(c, 1);
	int roles = 0;
	db_rdlock();
	struct db_row *r = db_get(cls, ref);
	const struct val *set = r ? r->cols[api_field(cls, "roles")] : NULL;
	for (uint32_t i = 0; set && set->kind == V_ARRAY && i < set->n; i++) {
		int bit = role_bit_of_ref(set->u.items[i]->u.s);
		if (bit >= 0)
			roles |= 1 << bit;
	}
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "subject", ref);
		return;
	}
	struct val *perms = perms_of_roles(roles);
	enc_val(c->out, perms);
	val_free(perms);
}

const struct api_impl session_impls[] = {
	{"session.change_password", session_change_password, false},
	{"subject.create", subject_create, false},
	{"subject.destroy", subject_destroy, false},
	{"subject.add_to_roles", subject_add_to_roles, false},
	{"subject.remove_from_roles", subject_remove_from_roles, false},
	{"subject.get_permissions_name_label", subject_get_permissions_name_label, true},
	{"session.login_with_password", session_login_with_password, false},
	{"session.logout", session_logout, false},
	{"session.local_logout", session_logout, false},
	{"session.get_all_subject_identifiers", session_get_all_subject_identifiers, true},
	{"session.logout_subject_identifier", session_logout_subject_identifier, false},
	{NULL, NULL, false},
};
