/* api.h — the API layer: dispatch of decoded calls, the request context that
 * every message implementation receives, and the registry of hand-written
 * implementations.
 */
#ifndef CX_API_H
#define CX_API_H

#include <stdbool.h>
#include <stdint.h>
#include "api/idl.h"
#include "base/arena.h"
#include "base/xerr.h"
#include "db/db.h"
#include "rpc/rpc.h"

struct api_ctx;
typedef void (*api_fn)(struct api_ctx *c);

/* Who is calling: fixed per session, cached in memory (see session.c). */
struct api_caller {
	bool local_root;          /* came over the Unix socket */
	bool superuser;           /* session.is_local_superuser */
	uint8_t roles;            /* bitmask of enum idl_role from the subject's roles */
	char session[DB_REF_MAX]; /* "" if the message takes no session */
};

struct api_ctx {
	struct arena *a;
	const struct idl_msg *msg;
	struct val **params;      /* every parameter incl. the session, checked and
	                             converted to the declared types, defaults filled */
	int nparams;
	struct enc *out;          /* write exactly one value here on success */
	struct xerr err;          /* set on failure (then anything written is discarded) */
	struct api_caller who;
	const char *task;         /* the task ref this call runs in, or NULL */
	bool parked;              /* see api_park */
};

/* Parked calls (event.from, event.next, ...): a quick implementation, on the
 * loop thread, may call api_park(c) instead of answering; the call stays open
 * (no thread, no lock held) until the implementation, later and on the loop
 * thread, writes its one value to c->out (or sets c->err) and calls
 * api_resume(c), which sends the reply.  c, c->a and the parameters stay valid
 * until then.  If the client goes away meanwhile, the reply is just dropped. */
void api_park(struct api_ctx *c);
void api_resume(struct api_ctx *c);

/* Fail the call with a XenAPI error (n string parameters). */
void api_fail(struct api_ctx *c, const char *code, int n, ...);
#define api_failed(c) ((c)->err.code != NULL)

/* Parameter accessors (after checking, parameters have their declared types). */
const char *api_str(struct api_ctx *c, int i);
int64_t api_int(struct api_ctx *c, int i);
bool api_bool(struct api_ctx *c, int i);
double api_float(struct api_ctx *c, int i);

/* A hand-written message implementation.  quick: runs on the loop thread (no
 * blocking, no commits of persistent rows); otherwise it runs on a worker. */
struct api_impl {
	const char *wire;
	api_fn fn;
	bool quick;
};

/* Every file with hand-written implementations exports a NULL-terminated table;
 * api_init binds them to the messages. */
extern const struct api_impl session_impls[];
extern const struct api_impl generic_impls[];
extern const struct api_impl host_impls[];
extern const struct api_impl role_impls[];
extern const struct api_impl event_impls[];
extern const struct api_impl message_impls[];
extern const struct api_impl task_impls[];
extern const struct api_impl storage_impls[];
extern const struct api_impl vm_impls[];
extern const struct api_impl vm_power_impls[];

/* Global state of the API server (set up by main). */
struct api_server {
	const char *state_dir;
	const char *pam_confdir;   /* NULL: use /etc/pam.d */
	const char *pam_service;   /* PAM service for local root logins */
	const char *pam_ext_service; /* PAM service for external (subject) logins */
	const char *pwdfile;       /* embedded PAM: root's password file; NULL otherwise */
	char host_ref[DB_REF_MAX];
	char pool_ref[DB_REF_MAX];
	int session_timeout_s;     /* idle sessions expire after this */
};
extern struct api_server api_srv;

int api_init(void);

/* Run one decoded request and write the whole reply into out.  Called on the
 * loop thread.  If the call must run on a worker, returns 1 and later calls
 * done(opaque) on the loop thread after out is filled; otherwise returns 0
 * with out filled. */
struct uv_loop_s;
typedef void (*api_done_fn)(void *opaque);
int api_call(struct uv_loop_s *loop, struct arena *a, const struct rpc_request *req,
	     bool local_root, struct buf *out, api_done_fn done, void *opaque);
/* The same with what the call takes from its HTTP request head (see
 * docs/tasks.md; strings are copied): "task-id" runs the call in that
 * (client's) task, "subtask-of" makes the call's new task a subtask. */
struct api_http {
	const char *task_id;
	const char *subtask_of;
};
int api_call_http(struct uv_loop_s *loop, struct arena *a, const struct rpc_request *req,
		  bool local_root, const struct api_http *http, struct buf *out,
		  api_done_fn done, void *opaque);

/* ---- shared helpers for implementations ---- */

/* Generic record writer: every non-internal field of row (read lock held). */
void api_write_record(struct enc *e, const struct db_row *row);
/* Write a value of a declared type from a stored value. */
void api_write_field(struct enc *e, const struct idl_field *f, const struct val *v);
/* Check and convert a parameter value to a declared type (arena allocations).
 * Returns NULL and sets c->err on a type error. */
struct val *api_convert(struct api_ctx *c, const struct idl_type *ty, struct val *v,
			const char *what);
/* Convert an arena value of a declared type to a heap value for storing. */
struct val *api_to_heap(const struct val *v);
/* Deep copy of a value into an arena. */
struct val *api_val_dup_a(struct arena *a, const struct val *v);
/* The default of an optional parameter, as an arena value. */
struct val *api_param_default(struct arena *a, const struct idl_param *p);
/* Building a new row: a calloc'd column array for class cls (NULL = default),
 * and setting a column by field name (v is taken; aborts on an unknown name:
 * that is our bug). */
struct val **api_row_new(int cls);
void api_row_set(int cls, struct val **cols, const char *field, struct val *v);
int api_field(int cls, const char *field); /* index; aborts if unknown */
void api_cols_free(int cls, struct val **cols);
/* Columns of a new row from a create record (RW and RO/constructor fields,
 * defaults, required ones enforced, a fresh uuid); NULL with c->err set. */
struct val **api_cols_from_record(struct api_ctx *c, int cls, const struct val *rec);
/* Insert a row with a fresh ref (cols taken) and answer the ref. */
void api_insert_reply(struct api_ctx *c, int cls, struct val **cols);
/* Commit t; on error copy the error into c.  Returns 0 or -1. */
int api_commit(struct api_ctx *c, struct db_txn *t);

/* Sessions (session.c) */
int session_check(const char *ref, struct api_caller *who, struct xerr *err);
void session_forget(const char *ref);
void session_gc(void);

/* Authentication through PAM (auth.c).  0 = ok; else err set to
 * SESSION_AUTHENTICATION_FAILED [user, reason]. */
int auth_pam(const char *service, const char *user, const char *password, struct xerr *err);
/* Set user's password in a pam_pwdfile password file (crypt SHA-512),
 * atomically.  0 or -errno. */
int auth_pwdfile_set(const char *file, const char *user, const char *password);

#endif
