/* dispatch.c — from a decoded request to a reply: name lookup, parameter
 * count, types and defaults, the session, RBAC, then the implementation (on
 * the loop thread for quick calls, on a worker otherwise), and the envelope.
 * Every check happens before any implementation runs.
 */
#include "api/api.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "api/tasks.h"
#include "base/log.h"
#include "base/util.h"

struct api_server api_srv;

/* Implementation bound to each message (index = message index). */
static api_fn *msg_fn;
static bool *msg_quick;

api_fn generic_fn(const struct idl_msg *m, bool *quick);

static void bind_table(const struct api_impl *t)
{
	for (; t->wire; t++) {
		const struct idl_msg *m = idl_msg_find(t->wire, strlen(t->wire));
		if (!m) {
			log_warn("implementation for unknown message %s", t->wire);
			continue;
		}
		msg_fn[m - idl_msgs] = t->fn;
		msg_quick[m - idl_msgs] = t->quick;
	}
}

int api_init(void)
{
	msg_fn = util_calloc((size_t)idl_nmsgs, sizeof(*msg_fn));
	msg_quick = util_calloc((size_t)idl_nmsgs, sizeof(*msg_quick));
	for (int i = 0; i < idl_nmsgs; i++) {
		const struct idl_msg *m = &idl_msgs[i];
		if (m->kind != MK_EXPLICIT && !m->overridden)
			msg_fn[i] = generic_fn(m, &msg_quick[i]);
	}
	bind_table(generic_impls);
	bind_table(session_impls);
	bind_table(host_impls);
	bind_table(role_impls);
	bind_table(event_impls);
	bind_table(message_impls);
	bind_table(task_impls);
	bind_table(storage_impls);
	bind_table(vm_impls);
	bind_table(vm_power_impls);
	return 0;
}

void api_fail(struct api_ctx *c, const char *code, int n, ...)
{
	va_list ap;
	va_start(ap, n);
	xerr_vset(&c->err, code, n, ap);
	va_end(ap);
}

const char *api_str(struct api_ctx *c, int i)
{
	struct val *v = c->params[i];
	return v && v->kind == V_STR ? v->u.s : "";
}

int64_t api_int(struct api_ctx *c, int i)
{
	struct val *v = c->params[i];
	return v && (v->kind == V_INT || v->kind == V_I4) ? v->u.i : 0;
}

double api_float(struct api_ctx *c, int i)
{
	struct val *v = c->params[i];
	return v && v->kind == V_DOUBLE ? v->u.d : 0;
}

bool api_bool(struct api_ctx *c, int i)
{
	struct val *v = c->params[i];
	return v && v->kind == V_BOOL && v->u.b;
}

int api_commit(struct api_ctx *c, struct db_txn *t)
{
	struct xerr e = {0};
	if (db_txn_commit(t, &e) == 0)
		return 0;
	xerr_move(&c->err, &e);
	return -1;
}

/* ---- parameter checking ---- */

static bool utf8_ok(const struct val *v, const struct val **bad)
{
	switch (v->kind) {
	case V_STR:
		if (!util_utf8_valid(v->u.s, v->n)) {
			*bad = v;
			return false;
		}
		return true;
	case V_ARRAY:
		for (uint32_t i = 0; i < v->n; i++)
			if (!utf8_ok(v->u.items[i], bad))
				return false;
		return true;
	case V_STRUCT:
		for (uint32_t i = 0; i < v->n; i++) {
			if (!util_utf8_valid(v->u.members[i].key, v->u.members[i].klen)) {
				*bad = NULL;
				return false;
			}
			if (!utf8_ok(v->u.members[i].v, bad))
				return false;
		}
		return true;
	default:
		return true;
	}
}

static bool parse_int(const char *s, size_t n, int64_t *out)
{
	if (n == 0 || n > 20)
		return false;
	char tmp[24];
	memcpy(tmp, s, n);
	tmp[n] = 0;
	char *end;
	errno = 0;
	long long x = strtoll(tmp, &end, 10);
	if (errno || *end || end == tmp)
		return false;
	*out = x;
	return true;
}

/* A value of the wrong type: the original's unmarshaller raises, and its
 * dispatcher answers INTERNAL_ERROR with the exception's text. */
static struct val *type_error(struct api_ctx *c, const struct idl_type *ty, const char *what)
{
	if (!api_failed(c)) {
		char *why = arena_printf(c->a, "Expected %s for parameter %s", ty->text, what);
		api_fail(c, "INTERNAL_ERROR", 1, why ? why : what);
	}
	return NULL;
}

struct val *api_convert(struct api_ctx *c, const struct idl_type *ty, struct val *v,
			const char *what)
{
	switch (ty->kind) {
	case TY_STRING:
	case TY_REF:
		if (v->kind == V_STR)
			return v;
		if (v->kind == V_NIL)
			return val_str_a(c->a, "", 0);
		return type_error(c, ty, what);
	case TY_ENUM: {
		if (v->kind != V_STR)
			return type_error(c, ty, what);
		int k = idl_enum_value(ty->enm, v->u.s, v->n);
		if (k < 0) {
			api_fail(c, "INVALID_VALUE", 2, what, v->u.s);
			return NULL;
		}
		const char *canon = idl_enums[ty->enm].values[k];
		return val_str_a(c->a, canon, strlen(canon));
	}
	case TY_INT: {
		int64_t x;
		if (v->kind == V_INT)
			return v;
		if (v->kind == V_I4)
			return val_int_a(c->a, v->u.i);
		if (v->kind == V_STR && parse_int(v->u.s, v->n, &x))
			return val_int_a(c->a, x);
		return type_error(c, ty, what);
	}
	case TY_FLOAT: {
		if (v->kind == V_DOUBLE)
			return v;
		if (v->kind == V_INT || v->kind == V_I4)
			return val_double_a(c->a, (double)v->u.i);
		if (v->kind == V_STR && v->n > 0 && v->n < 64) {
			char tmp[64], *end;
			memcpy(tmp, v->u.s, v->n);
			tmp[v->n] = 0;
			double d = strtod(tmp, &end);
			if (!*end)
				return val_double_a(c->a, d);
		}
		return type_error(c, ty, what);
	}
	case TY_BOOL:
		if (v->kind == V_BOOL)
			return v;
		if (v->kind == V_STR && (strcasecmp(v->u.s, "true") == 0 || strcasecmp(v->u.s, "false") == 0))
			return strcasecmp(v->u.s, "true") == 0 ? &val_true : &val_false;
		return type_error(c, ty, what);
	case TY_DATETIME: {
		int64_t t;
		if (v->kind == V_DATETIME)
			return v;
		if (v->kind == V_STR && val_datetime_parse(v->u.s, v->n, &t) == 0)
			return val_datetime_a(c->a, t);
		return type_error(c, ty, what);
	}
	case TY_SET: {
		if (v->kind != V_ARRAY)
			return type_error(c, ty, what);
		struct val *o = val_array_a(c->a, v->n);
		if (!o)
			return type_error(c, ty, what);
		for (uint32_t i = 0; i < v->n; i++) {
			o->u.items[i] = api_convert(c, ty->a, v->u.items[i], what);
			if (!o->u.items[i])
				return NULL;
		}
		return o;
	}
	case TY_MAP: {
		if (v->kind != V_STRUCT)
			return type_error(c, ty, what);
		struct val *o = val_struct_a(c->a, v->n);
		if (!o)
			return type_error(c, ty, what);
		for (uint32_t i = 0; i < v->n; i++) {
			struct val_member *m = &v->u.members[i];
			struct val kv = {.kind = V_STR, .n = m->klen, .u.s = m->key};
			struct val *k = api_convert(c, ty->a, &kv, what);
			if (!k)
				return NULL;
			/* keys stay text on the wire; ints/enums are re-spelled canonically */
			const char *ks = m->key;
			uint32_t kl = m->klen;
			if (k->kind == V_STR) {
				ks = k->u.s;
				kl = k->n;
			} else if (k->kind == V_INT) {
				ks = arena_printf(c->a, "%lld", (long long)k->u.i);
				if (!ks)
					return type_error(c, ty, what);
				kl = (uint32_t)strlen(ks);
			}
			o->u.members[i].key = ks;
			o->u.members[i].klen = kl;
			o->u.members[i].v = api_convert(c, ty->b, m->v, what);
			if (!o->u.members[i].v)
				return NULL;
		}
		return o;
	}
	case TY_RECORD:
		if (v->kind != V_STRUCT)
			return type_error(c, ty, what);
		return v; /* members are checked by the implementation */
	case TY_OPTION:
		if (v->kind == V_NIL)
			return v;
		return api_convert(c, ty->a, v, what);
	default:
		return v;
	}
}

struct val *api_to_heap(const struct val *v)
{
	return val_dup_h(v);
}

/* ---- RBAC ---- */

/* The permission a call needs and the roles that hold it: the message's own,
 * or for add_to_/remove_from_ a map key with its own permission
 * ("<perm>/key:<key>"), that key's. */
static uint8_t rbac_roles(struct api_ctx *c, const char **perm)
{
	const struct idl_msg *m = c->msg;
	*perm = m->perm;
	if ((m->kind != MK_MAP_ADD && m->kind != MK_MAP_REMOVE) || m->field < 0)
		return m->roles;
	const struct idl_field *f = &idl_classes[m->cls].fields[m->field];
	const char *key = api_str(c, 2);
	for (int i = 0; i < f->nkeyroles; i++) {
		const char *k = f->keyroles[i].key;
		size_t kl = strlen(k);
		bool match = kl && k[kl - 1] == '*' ? strncmp(key, k, kl - 1) == 0 : strcmp(key, k) == 0;
		if (match) {
			*perm = arena_printf(c->a, "%s/key:%s", m->perm, k);
			return f->keyroles[i].roles;
		}
	}
	return m->roles;
}

/* 0 if the caller may make this call, else -1 with RBAC_PERMISSION_DENIED set. */
static int rbac_check(struct api_ctx *c)
{
	const struct api_caller *who = &c->who;
	/* messages without a session (logins) check their own credentials */
	if (!c->msg->session || who->local_root || who->superuser)
		return 0;
	const char *perm;
	uint8_t roles = rbac_roles(c, &perm);
	if (who->roles & roles)
		return 0;
	char list[256] = "";
	size_t n = 0;
	for (int r = 0; r < ROLE_COUNT; r++) {
		if (!(roles & (1u << r)))
			continue;
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "",
				      idl_role_names[r]);
		if (n >= sizeof(list))
			break;
	}
	char msg[400];
	snprintf(msg, sizeof(msg), "No permission in user session. (Roles with this permission: %s)",
		 list);
	api_fail(c, "RBAC_PERMISSION_DENIED", 2, perm ? perm : c->msg->perm, msg);
	return -1;
}

/* ---- running a call ---- */

struct call {
	uv_work_t work;
	struct api_ctx ctx;
	const struct rpc_request *req;
	struct buf *out;
	struct enc enc;
	size_t mark;       /* where the reply began */
	api_fn fn;
	bool is_async;     /* Async.X: the reply is the task ref */
	bool in_task;      /* synchronous call of an async-capable message */
	bool forwarded;    /* runs in the client's task (task-id header): the
	                      client completes and destroys it, not we */
	const char *subtask_of; /* subtask-of header, or NULL */
	struct arena *own; /* Async.X: the task's own arena */
	struct call *answer; /* Async.X: the request to answer once the task exists */
	uv_loop_t *loop;
	api_done_fn done;
	void *opaque;
};

static void write_error(struct call *k, const char *code, int n, char *const *params)
{
	k->out->len = k->mark;
	rpc_reply_error(&k->enc, k->req, code, (const char *const *)params, n);
}

static void finish_reply(struct call *k)
{
	if (api_failed(&k->ctx))
		write_error(k, k->ctx.err.code, k->ctx.err.n, k->ctx.err.params);
	else
		rpc_reply_end(&k->enc, k->req, false);
	xerr_clear(&k->ctx.err);
}

static void run_impl(struct call *k)
{
	rpc_reply_begin(&k->enc, k->req, false);
	if (!api_failed(&k->ctx))
		k->fn(&k->ctx);
}

/* Before the implementation of a call that runs in a task: a task already
 * cancelled (a client's task, or an Async task cancelled before a worker took
 * it) fails at once; then the testing delay (task_cfg.debug_delay_ms). */
static int task_prelude(struct api_ctx *c)
{
	struct xerr e = {0};
	if (task_check_cancel(c->task, &e) == 0 && task_debug_delay(c->task, &e) == 0)
		return 0;
	xerr_move(&c->err, &e);
	return -1;
}

/* The synchronous form of an async-capable message: as the original, it runs
 * in a task row named after the message (e.g. "VM.create") that exists for
 * the duration of the call, so event.from watchers see it come and go. */
static void run_in_task(struct call *k)
{
	struct api_ctx *c = &k->ctx;
	char *mine = NULL;
	rpc_reply_begin(&k->enc, k->req, false);
	if (!k->forwarded) {
		char ref[DB_REF_MAX];
		struct xerr e = {0};
		if (task_create(c->msg->wire, "", c->who.session, k->subtask_of, NULL, ref, &e) < 0) {
			xerr_move(&c->err, &e);
			return;
		}
		c->task = mine = arena_strndup(c->a, ref, strlen(ref));
	}
	if (task_prelude(c) == 0)
		k->fn(c);
	if (mine)
		task_destroy_row(mine);
}

static void work_cb(uv_work_t *w)
{
	struct call *k = w->data;
	if (k->in_task)
		run_in_task(k);
	else
		run_impl(k);
}

static void after_cb(uv_work_t *w, int status)
{
	struct call *k = w->data;
	finish_reply(k);
	k->done(k->opaque);
}

void api_park(struct api_ctx *c)
{
	c->parked = true;
}

void api_resume(struct api_ctx *c)
{
	struct call *k = (struct call *)((char *)c - offsetof(struct call, ctx));
	finish_reply(k);
	k->done(k->opaque);
}

/* Async.X: the implementation runs in a task on a worker; the reply is the
 * task.  As the original, the RBAC check happens inside the task (a denial is
 * the task's error_info), and the result is stored as XML-RPC value text
 * whatever the client's protocol. */
static void async_work_cb(uv_work_t *w)
{
	struct call *k = w->data;
	struct buf res;
	buf_init(&res);
	struct enc e;
	enc_init(&e, &res, false);
	k->ctx.out = &e;
	if (rbac_check(&k->ctx) == 0 && task_prelude(&k->ctx) == 0)
		k->fn(&k->ctx);
	if (!k->forwarded)
		task_complete(k->ctx.task, &k->ctx.err, res.p ? res.p : "");
	log_debug("task %s done%s%s", k->ctx.task, k->ctx.err.code ? ": " : "",
		  k->ctx.err.code ? k->ctx.err.code : "");
	xerr_clear(&k->ctx.err);
	buf_free(&res);
}

static void async_free(struct call *t)
{
	xerr_clear(&t->ctx.err);
	struct arena *own = t->own;
	arena_free(own);
	free(own);
}

static void async_after_cb(uv_work_t *w, int status)
{
	async_free(w->data);
}

/* The task row is made on a worker (its commit waits for the commit thread);
 * then, on the loop, the request is answered with it and the work queued. */
static void async_create_cb(uv_work_t *w)
{
	struct call *t = w->data;
	char ref[DB_REF_MAX];
	char *name = arena_printf(t->own, "Async.%s", t->ctx.msg->wire);
	if (task_create(name, "", t->ctx.who.session, t->subtask_of, NULL, ref, &t->ctx.err) == 0)
		t->ctx.task = arena_strndup(t->own, ref, strlen(ref));
}

static void async_created_cb(uv_work_t *w, int status)
{
	struct call *t = w->data, *k = t->answer;
	t->answer = NULL;
	if (!t->ctx.task) {
		write_error(k, t->ctx.err.code ? t->ctx.err.code : "INTERNAL_ERROR", t->ctx.err.n,
			    t->ctx.err.params);
		k->done(k->opaque);
		async_free(t);
		return;
	}
	rpc_reply_begin(&k->enc, k->req, false);
	enc_cstr(&k->enc, t->ctx.task);
	rpc_reply_end(&k->enc, k->req, false);
	k->done(k->opaque);
	uv_queue_work(t->loop, &t->work, async_work_cb, async_after_cb);
}

/* Start Async.X: returns as api_call does. */
static int async_start(uv_loop_t *loop, struct call *k)
{
	struct api_ctx *c = &k->ctx;
	/* The task outlives the request: give it its own arena and copies. */
	struct arena *own = util_malloc(sizeof(*own));
	arena_init(own, 0);
	struct call *t = arena_calloc(own, sizeof(*t));
	t->own = own;
	t->loop = loop;
	t->fn = k->fn;
	t->is_async = true;
	t->forwarded = k->forwarded;
	t->ctx.a = own;
	t->ctx.msg = c->msg;
	t->ctx.who = c->who;
	t->ctx.nparams = c->nparams;
	t->ctx.params = arena_calloc(own, sizeof(struct val *) * (size_t)(c->nparams + 1));
	for (int i = 0; i < c->nparams; i++)
		t->ctx.params[i] = api_val_dup_a(own, c->params[i]);
	if (k->subtask_of)
		t->subtask_of = arena_strndup(own, k->subtask_of, strlen(k->subtask_of));
	t->work.data = t;
	if (k->forwarded) {
		/* the client's task (task-id header): answer with it at once; as
		 * the original, the server neither completes nor destroys it */
		t->ctx.task = arena_strndup(own, c->task, strlen(c->task));
		rpc_reply_begin(&k->enc, k->req, false);
		enc_cstr(&k->enc, c->task);
		rpc_reply_end(&k->enc, k->req, false);
		uv_queue_work(loop, &t->work, async_work_cb, async_after_cb);
		return 0;
	}
	t->answer = k;
	uv_queue_work(loop, &t->work, async_create_cb, async_created_cb);
	return 1;
}

static void list_methods(struct call *k)
{
	rpc_reply_begin(&k->enc, k->req, true);
	enc_array_begin(&k->enc);
	for (int i = 0; i < idl_nmsgs; i++)
		enc_cstr(&k->enc, idl_msgs[i].wire);
	enc_array_end(&k->enc);
	rpc_reply_end(&k->enc, k->req, true);
}

int api_call(uv_loop_t *loop, struct arena *a, const struct rpc_request *req, bool local_root,
	     struct buf *out, api_done_fn done, void *opaque)
{
	return api_call_http(loop, a, req, local_root, NULL, out, done, opaque);
}

int api_call_http(uv_loop_t *loop, struct arena *a, const struct rpc_request *req,
		  bool local_root, const struct api_http *http, struct buf *out,
		  api_done_fn done, void *opaque)
{
	struct call *k = arena_calloc(a, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->req = req;
	k->out = out;
	k->done = done;
	k->opaque = opaque;
	k->mark = out->len;
	enc_init(&k->enc, out, req->proto != RPC_XML);
	struct api_ctx *c = &k->ctx;
	c->a = a;
	c->out = &k->enc;
	c->who.local_root = local_root;

	const char *name = req->method;
	if (strcmp(name, "system.listMethods") == 0) {
		list_methods(k);
		return 0;
	}
	if (strncmp(name, "system.isAlive", 14) == 0) {
		rpc_reply_begin(&k->enc, req, false);
		if (req->nparams > 0)
			enc_val(&k->enc, req->params[0]);
		else
			enc_void(&k->enc);
		rpc_reply_end(&k->enc, req, false);
		return 0;
	}
	if (strncmp(name, "Async.", 6) == 0) {
		k->is_async = true;
		name += 6;
	}
	const struct idl_msg *m = idl_msg_find(name, strlen(name));
	for (uint32_t i = 0; i < req->nparams; i++) {
		const struct val *bad = NULL;
		if (!utf8_ok(req->params[i], &bad)) {
			write_error(k, "INVALID_VALUE", 2,
				    (char *[]){"Invalid UTF-8 string in parameter",
					       (char *)(bad ? "" : "")});
			return 0;
		}
	}
	if (!m) {
		write_error(k, "MESSAGE_METHOD_UNKNOWN", 1, (char *[]){(char *)name});
		return 0;
	}
	c->msg = m;
	int np = (int)req->nparams;
	bool count_ok = m->nrequired < m->nparams ? np >= m->nrequired : np == m->nparams;
	if (m->kind == MK_CREATE)
		count_ok = np == m->nparams;
	if (!count_ok) {
		int off = m->session ? 1 : 0;
		char *exp = arena_printf(a, "%d", m->nrequired - off);
		char *got = arena_printf(a, "%d", np - off);
		write_error(k, "MESSAGE_PARAMETER_COUNT_MISMATCH", 3,
			    (char *[]){(char *)m->wire, exp, got});
		return 0;
	}
	/* The session, before anything else may fail. */
	if (m->session) {
		const struct val *s = req->params[0];
		const char *sref = s->kind == V_STR ? s->u.s : "";
		struct xerr e = {0};
		if (session_check(sref, &c->who, &e) < 0) {
			write_error(k, e.code, e.n, e.params);
			xerr_clear(&e);
			return 0;
		}
	}
	if (m->lifecycle == LC_REMOVED) {
		write_error(k, "MESSAGE_REMOVED", 0, NULL);
		return 0;
	}
	/* Parameters: convert to their types and fill defaults. */
	c->nparams = m->nparams;
	c->params = arena_calloc(a, sizeof(struct val *) * (size_t)(m->nparams ? m->nparams : 1));
	if (!c->params)
		return -ENOMEM;
	for (int i = 0; i < m->nparams; i++) {
		const struct idl_param *p = &m->params[i];
		struct val *v;
		if (i < np) {
			v = api_convert(c, p->ty, req->params[i], p->name);
		} else {
			v = api_param_default(a, p);
		}
		if (!v) {
			finish_reply(k);
			return 0;
		}
		c->params[i] = v;
	}
	api_fn fn = msg_fn[m - idl_msgs];
	k->fn = fn;
	if (k->is_async && !m->async) {
		char *why = arena_printf(a, "No async mode for this operation (rpc: %s)", name);
		write_error(k, "Fault", 1, (char *[]){why});
		return 0;
	}
	/* Task headers (docs/tasks.md): with task-id the call runs in that task. */
	if (http && http->task_id && http->task_id[0]) {
		if (!task_exists(http->task_id)) {
			write_error(k, "HANDLE_INVALID", 2, (char *[]){"task", (char *)http->task_id});
			return 0;
		}
		c->task = arena_strndup(a, http->task_id, strlen(http->task_id));
		k->forwarded = true;
	}
	if (http && http->subtask_of && http->subtask_of[0])
		k->subtask_of = arena_strndup(a, http->subtask_of, strlen(http->subtask_of));
	if (k->is_async) {
		if (!fn) {
			write_error(k, "NOT_IMPLEMENTED", 1, (char *[]){(char *)m->wire});
			return 0;
		}
		return async_start(loop, k);
	}
	if (rbac_check(c) < 0) {
		finish_reply(k);
		return 0;
	}
	if (!fn) {
		write_error(k, "NOT_IMPLEMENTED", 1, (char *[]){(char *)m->wire});
		return 0;
	}
	if (m->async) {
		/* a synchronous call of an async-capable message runs in a task */
		k->in_task = true;
		k->work.data = k;
		uv_queue_work(loop, &k->work, work_cb, after_cb);
		return 1;
	}
	if (msg_quick[m - idl_msgs]) {
		run_impl(k);
		if (c->parked && !api_failed(c))
			return 1; /* answered later by api_resume */
		finish_reply(k);
		return 0;
	}
	k->work.data = k;
	uv_queue_work(loop, &k->work, work_cb, after_cb);
	return 1;
}
