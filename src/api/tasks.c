/* tasks.c — the task class.
 *
 * Server side: the task row a call runs in (created by dispatch.c for
 * Async.X.y and for the synchronous form of async-capable messages),
 * completion with the result as XML-RPC value text or error_info,
 * progress and cancellation for long operations, and the garbage collection
 * of old tasks (the original's timeout_tasks).
 *
 * Client side: the task messages (task.create, destroy, cancel, set_*,
 * other_config edits) with the original's ownership rule: a task belongs to
 * the user whose session made it (same auth_user_sid); anyone else needs the
 * permission task.destroy/any (pool-admin, pool-operator).
 *
 * Tasks live in the database (class task, not persisted), so every change is
 * an event.  See docs/tasks.md.
 */
#include "api/tasks.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"

struct task_settings task_cfg = {
	.completed_timeout_s = 3900, /* the original: 65 minutes */
	.pending_timeout_s = 86400,  /* 24 hours */
	.max_tasks = 200,
	.debug_delay_ms = 0,
};

api_fn generic_fn(const struct idl_msg *m, bool *quick);

/* Class and field indices, looked up once. */
static struct {
	int cls, scls;
	int uuid, name_label, name_description, allowed_operations, current_operations, created,
		finished, status, resident_on, progress, type, result, error_info, other_config,
		subtask_of, backtrace, session, externalpid, stunnelpid, forwarded_to;
	int sess_sid;
} F;
static pthread_once_t f_once = PTHREAD_ONCE_INIT;

static void f_init(void)
{
	int c = F.cls = idl_class_find("task");
	F.uuid = api_field(c, "uuid");
	F.name_label = api_field(c, "name_label");
	F.name_description = api_field(c, "name_description");
	F.allowed_operations = api_field(c, "allowed_operations");
	F.current_operations = api_field(c, "current_operations");
	F.created = api_field(c, "created");
	F.finished = api_field(c, "finished");
	F.status = api_field(c, "status");
	F.resident_on = api_field(c, "resident_on");
	F.progress = api_field(c, "progress");
	F.type = api_field(c, "type");
	F.result = api_field(c, "result");
	F.error_info = api_field(c, "error_info");
	F.other_config = api_field(c, "other_config");
	F.subtask_of = api_field(c, "subtask_of");
	F.backtrace = api_field(c, "backtrace");
	F.session = api_field(c, "session");
	F.externalpid = api_field(c, "externalpid");
	F.stunnelpid = api_field(c, "stunnelpid");
	F.forwarded_to = api_field(c, "forwarded_to");
	F.scls = idl_class_find("session");
	F.sess_sid = api_field(F.scls, "auth_user_sid");
}

static void fields(void)
{
	pthread_once(&f_once, f_init);
}

static bool str_is(const struct val *v, const char *s)
{
	return v && v->kind == V_STR && strcmp(v->u.s, s) == 0;
}

/* success, failure and cancelled are final; pending and cancelling are not */
static bool status_completed(const struct val *v)
{
	return str_is(v, "success") || str_is(v, "failure") || str_is(v, "cancelled");
}

static bool map_has_value(const struct val *m, const char *value)
{
	if (!m || m->kind != V_STRUCT)
		return false;
	for (uint32_t i = 0; i < m->n; i++)
		if (str_is(m->u.members[i].v, value))
			return true;
	return false;
}

/* ---- server side ---- */

int task_create(const char *name, const char *description, const char *session,
		const char *subtask_of, const char *const *http_oc, char out[DB_REF_MAX],
		struct xerr *err)
{
	fields();
	int cls = F.cls;
	char uuid[40];
	db_ref_new(out);
	db_uuid_new(uuid);
	struct val **cols = api_row_new(cls);
	cols[F.uuid] = val_cstr_h(uuid);
	cols[F.name_label] = val_cstr_h(name);
	cols[F.name_description] = val_cstr_h(description ? description : "");
	cols[F.created] = val_datetime_h(util_now());
	cols[F.finished] = val_datetime_h(0);
	cols[F.status] = val_cstr_h("pending");
	cols[F.resident_on] = val_cstr_h(api_srv.host_ref[0] ? api_srv.host_ref : "OpaqueRef:NULL");
	cols[F.progress] = val_double_h(0.0);
	cols[F.type] = val_cstr_h("<none/>");
	cols[F.result] = val_cstr_h("");
	cols[F.backtrace] = val_cstr_h("()");
	cols[F.externalpid] = val_int_h(-1);
	cols[F.stunnelpid] = val_int_h(-1);
	if (session && session[0])
		cols[F.session] = val_cstr_h(session);
	if (subtask_of && subtask_of[0])
		cols[F.subtask_of] = val_cstr_h(subtask_of);
	if (http_oc && http_oc[0]) {
		uint32_t n = 0;
		while (http_oc[2 * n])
			n++;
		struct val *oc = val_struct_h(n);
		for (uint32_t i = 0; i < n; i++) {
			char *k = util_malloc(strlen(http_oc[2 * i]) + 6);
			sprintf(k, "http:%s", http_oc[2 * i]);
			oc->u.members[i].key = k;
			oc->u.members[i].klen = (uint32_t)strlen(k);
			oc->u.members[i].v = val_cstr_h(http_oc[2 * i + 1]);
		}
		cols[F.other_config] = oc;
	}
	struct db_txn *t = db_txn_new();
	db_txn_insert(t, cls, out, cols);
	free(cols);
	return db_txn_commit(t, err);
}

bool task_exists(const char *task)
{
	fields();
	db_rdlock();
	bool ok = db_get(F.cls, task) != NULL;
	db_unlock();
	return ok;
}

/* The task's status is pending (or cancelling): it may still be completed. */
static bool task_running(const char *task)
{
	db_rdlock();
	struct db_row *r = db_get(F.cls, task);
	bool ok = r && !status_completed(r->cols[F.status]);
	db_unlock();
	return ok;
}

static void commit_quietly(struct db_txn *t, const char *task, const char *what)
{
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0) {
		log_debug("task %s: %s: %s", task, what, e.code);
		xerr_clear(&e);
	}
}

void task_complete(const char *task, const struct xerr *err, const char *result_xml)
{
	fields();
	if (!task_running(task)) {
		log_debug("task %s is no longer pending; completion ignored", task);
		return;
	}
	int cls = F.cls;
	struct db_txn *t = db_txn_new();
	db_txn_set(t, cls, task, F.progress, val_double_h(1.0));
	db_txn_set(t, cls, task, F.finished, val_datetime_h(util_now()));
	db_txn_set(t, cls, task, F.allowed_operations, val_array_h(0));
	if (err && err->code) {
		struct val *info = val_array_h((uint32_t)err->n + 1);
		info->u.items[0] = val_cstr_h(err->code);
		for (int i = 0; i < err->n; i++)
			info->u.items[i + 1] = val_cstr_h(err->params[i] ? err->params[i] : "");
		db_txn_set(t, cls, task, F.error_info, info);
		/* status is written last in the original; one transaction here */
		bool cancelled = strcmp(err->code, "TASK_CANCELLED") == 0;
		db_txn_set(t, cls, task, F.status, val_cstr_h(cancelled ? "cancelled" : "failure"));
	} else {
		/* the XML-RPC text of the value, for every client (the original's
		 * Xmlrpc.to_string of the marshalled result) */
		db_txn_set(t, cls, task, F.result, val_cstr_h(result_xml ? result_xml : ""));
		db_txn_set(t, cls, task, F.status, val_cstr_h("success"));
	}
	commit_quietly(t, task, "recording completion");
}

void task_destroy_row(const char *task)
{
	fields();
	struct db_txn *t = db_txn_new();
	db_txn_delete(t, F.cls, task);
	commit_quietly(t, task, "destroying");
}

bool task_cancelling(const char *task)
{
	if (!task)
		return false;
	fields();
	db_rdlock();
	struct db_row *r = db_get(F.cls, task);
	bool yes = r && map_has_value(r->cols[F.current_operations], "cancel");
	db_unlock();
	return yes;
}

int task_check_cancel(const char *task, struct xerr *err)
{
	if (!task_cancelling(task))
		return 0;
	xerr_set(err, "TASK_CANCELLED", 1, task);
	return -1;
}

int task_set_progress(const char *task, double progress)
{
	if (!task)
		return -1;
	fields();
	if (!task_running(task))
		return -1;
	if (progress < 0)
		progress = 0;
	if (progress > 1)
		progress = 1;
	struct db_txn *t = db_txn_new();
	db_txn_set(t, F.cls, task, F.progress, val_double_h(progress));
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0) {
		xerr_clear(&e);
		return -1;
	}
	return 0;
}

void task_set_cancellable(const char *task, bool cancellable)
{
	if (!task)
		return;
	fields();
	struct val *ops = val_array_h(cancellable ? 1 : 0);
	if (cancellable)
		ops->u.items[0] = val_cstr_h("cancel");
	struct db_txn *t = db_txn_new();
	db_txn_set(t, F.cls, task, F.allowed_operations, ops);
	commit_quietly(t, task, "allowed_operations");
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

int task_debug_delay(const char *task, struct xerr *err)
{
	int ms = task_cfg.debug_delay_ms;
	if (ms <= 0 || !task)
		return 0;
	task_set_cancellable(task, true);
	double t0 = util_now_f(), next = t0 + 0.1;
	for (;;) {
		if (task_check_cancel(task, err) < 0)
			return -1;
		double now = util_now_f(), left = t0 + ms / 1000.0 - now;
		if (left <= 0)
			break;
		if (now >= next) {
			task_set_progress(task, 0.9 * (now - t0) * 1000.0 / ms);
			next += 0.1;
		}
		sleep_ms(left < 0.01 ? (int)(left * 1000) + 1 : 10);
	}
	task_set_cancellable(task, false);
	return 0;
}

/* ---- the task messages ---- */

#define DESTROY_ANY_ROLES ((1u << ROLE_POOL_ADMIN) | (1u << ROLE_POOL_OPERATOR))

/* The original's TaskHelper.assert_op_valid: the caller may operate on its
 * own tasks — the task its call runs in, or one made by a session of the same
 * user (equal auth_user_sid) — and on anyone's with task.destroy/any. */
static int op_valid(struct api_ctx *c, const char *task)
{
	fields();
	if (c->task && strcmp(c->task, task) == 0)
		return 0;
	bool own = false;
	if (c->who.session[0]) {
		db_rdlock();
		struct db_row *t = db_get(F.cls, task);
		const struct val *ts = t ? t->cols[F.session] : NULL;
		struct db_row *s1 = db_get(F.scls, c->who.session);
		struct db_row *s2 = ts && ts->kind == V_STR ? db_get(F.scls, ts->u.s) : NULL;
		if (s1 && s2) {
			const struct val *a = s1->cols[F.sess_sid], *b = s2->cols[F.sess_sid];
			const char *as = a && a->kind == V_STR ? a->u.s : "";
			const char *bs = b && b->kind == V_STR ? b->u.s : "";
			own = strcmp(as, bs) == 0;
		}
		db_unlock();
	}
	if (own || c->who.local_root || c->who.superuser || (c->who.roles & DESTROY_ANY_ROLES))
		return 0;
	api_fail(c, "RBAC_PERMISSION_DENIED", 2, "task.destroy/any",
		 "No permission in user session. (Roles with this permission: pool-admin, pool-operator)");
	return -1;
}

/* Status of an existing task into *completed; -1 with HANDLE_INVALID if gone. */
static int task_status(struct api_ctx *c, const char *task, bool *completed)
{
	db_rdlock();
	struct db_row *r = db_get(F.cls, task);
	if (r)
		*completed = status_completed(r->cols[F.status]);
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "task", task);
		return -1;
	}
	return 0;
}

static void t_create(struct api_ctx *c)
{
	char ref[DB_REF_MAX];
	struct xerr e = {0};
	/* subtask of the task this call runs in (only a real one: a task-id header) */
	if (task_create(api_str(c, 1), api_str(c, 2), c->who.session, c->task, NULL, ref, &e) < 0) {
		xerr_move(&c->err, &e);
		return;
	}
	enc_cstr(c->out, ref);
}

static void t_destroy(struct api_ctx *c)
{
	const char *task = api_str(c, 1);
	bool done;
	if (op_valid(c, task) < 0 || task_status(c, task, &done) < 0)
		return;
	struct db_txn *t = db_txn_new();
	if (done)
		db_txn_delete(t, F.cls, task);
	else /* still running: the GC removes it once it completes */
		db_txn_map_add(t, F.cls, task, F.current_operations, "task", val_cstr_h("destroy"));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void t_cancel(struct api_ctx *c)
{
	const char *task = api_str(c, 1);
	bool done;
	if (op_valid(c, task) < 0 || task_status(c, task, &done) < 0)
		return;
	/* current_operations := {<the calling task>: cancel}; the operation
	 * running in the task polls for it (task_cancelling) and fails with
	 * TASK_CANCELLED, which makes the task cancelled.  The calling task of
	 * task.cancel is a dummy one in the original: DummyRef:|<uuid>|task.cancel */
	char key[DB_REF_MAX + 32];
	if (c->task) {
		snprintf(key, sizeof(key), "%s", c->task);
	} else {
		char uuid[40];
		db_uuid_new(uuid);
		snprintf(key, sizeof(key), "DummyRef:|%s|task.cancel", uuid);
	}
	struct val *ops = val_struct_h(1);
	ops->u.members[0].key = util_strdup(key);
	ops->u.members[0].klen = (uint32_t)strlen(key);
	ops->u.members[0].v = val_cstr_h("cancel");
	struct db_txn *t = db_txn_new();
	db_txn_set(t, F.cls, task, F.current_operations, ops);
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

/* task.set_status / set_progress / set_result / set_error_info: the plain
 * update of the field, by the task's owner (or task.destroy/any). */
static void t_set(struct api_ctx *c, int field)
{
	const char *task = api_str(c, 1);
	if (op_valid(c, task) < 0)
		return;
	struct db_txn *t = db_txn_new();
	db_txn_set(t, F.cls, task, field, api_to_heap(c->params[2]));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void t_set_status(struct api_ctx *c)
{
	fields();
	t_set(c, F.status);
}

static void t_set_progress(struct api_ctx *c)
{
	fields();
	t_set(c, F.progress);
}

static void t_set_result(struct api_ctx *c)
{
	fields();
	t_set(c, F.result);
}

static void t_set_error_info(struct api_ctx *c)
{
	fields();
	t_set(c, F.error_info);
}

/* other_config edits: only on tasks the caller may operate on (the
 * original's assert_can_modify_other_config), then the generic edit. */
static void t_other_config(struct api_ctx *c)
{
	if (op_valid(c, api_str(c, 1)) < 0)
		return;
	bool quick;
	api_fn g = generic_fn(c->msg, &quick);
	if (g)
		g(c);
	else
		api_fail(c, "NOT_IMPLEMENTED", 1, c->msg->wire);
}

const struct api_impl task_impls[] = {
	{"task.create", t_create, false},
	{"task.destroy", t_destroy, false},
	{"task.cancel", t_cancel, false},
	{"task.set_status", t_set_status, false},
	{"task.set_progress", t_set_progress, false},
	{"task.set_result", t_set_result, false},
	{"task.set_error_info", t_set_error_info, false},
	{"task.set_other_config", t_other_config, false},
	{"task.add_to_other_config", t_other_config, false},
	{"task.remove_from_other_config", t_other_config, false},
	{NULL, NULL, false},
};

/* ---- garbage collection (the original's Db_gc_util.timeout_tasks) ---- */

struct gc_row {
	char ref[DB_REF_MAX];
	char uuid[40];
	bool completed, destroy_marked;
	int64_t created, finished;
	double progress;
};

/* Old pending tasks seen by the previous pass, with their progress then: a
 * task that is still old, pending and has not progressed since is hung. */
struct probation {
	char uuid[40];
	double progress;
};
static struct probation *prob;
static size_t nprob;
static pthread_mutex_t gc_mu = PTHREAD_MUTEX_INITIALIZER;

static int prob_cmp(const void *a, const void *b)
{
	return strcmp(((const struct probation *)a)->uuid, ((const struct probation *)b)->uuid);
}

/* newest finished first */
static int finished_desc(const void *a, const void *b)
{
	const struct gc_row *x = *(struct gc_row *const *)a, *y = *(struct gc_row *const *)b;
	return x->finished < y->finished ? 1 : x->finished > y->finished ? -1 : 0;
}

static void gc_delete(struct gc_row **rows, size_t n)
{
	if (!n)
		return;
	struct db_txn *t = db_txn_new();
	for (size_t i = 0; i < n; i++)
		db_txn_delete(t, F.cls, rows[i]->ref);
	struct xerr e = {0};
	if (db_txn_commit(t, &e) == 0)
		return;
	/* one of them went meanwhile: one by one */
	xerr_clear(&e);
	for (size_t i = 0; i < n; i++)
		task_destroy_row(rows[i]->ref);
}

void task_gc(void)
{
	fields();
	if (pthread_mutex_trylock(&gc_mu) != 0)
		return; /* a pass is still running */
	db_rdlock();
	uint32_t total = db_count(F.cls);
	struct gc_row *rows = util_calloc(total ? total : 1, sizeof(*rows));
	size_t n = 0;
	for (struct db_row *r = db_next(F.cls, NULL); r && n < total; r = db_next(F.cls, r)) {
		struct gc_row *g = &rows[n++];
		snprintf(g->ref, sizeof(g->ref), "%s", r->ref);
		const struct val *v = r->cols[F.uuid];
		snprintf(g->uuid, sizeof(g->uuid), "%s", v && v->kind == V_STR ? v->u.s : "");
		g->completed = status_completed(r->cols[F.status]);
		g->destroy_marked = map_has_value(r->cols[F.current_operations], "destroy");
		v = r->cols[F.created];
		g->created = v && v->kind == V_DATETIME ? v->u.i : 0;
		v = r->cols[F.finished];
		g->finished = v && v->kind == V_DATETIME ? v->u.i : 0;
		v = r->cols[F.progress];
		g->progress = v && v->kind == V_DOUBLE ? v->u.d : 0;
	}
	db_unlock();

	int64_t now = util_now();
	int64_t oldest_completed = now - task_cfg.completed_timeout_s;
	int64_t oldest_pending = now - task_cfg.pending_timeout_s;
	struct gc_row **dead = util_calloc(n ? n : 1, sizeof(*dead));
	struct gc_row **young_done = util_calloc(n ? n : 1, sizeof(*young_done));
	struct probation *next = util_calloc(n ? n : 1, sizeof(*next));
	size_t ndead = 0, nyoung_done = 0, nyoung_pending = 0, nnext = 0;
	for (size_t i = 0; i < n; i++) {
		struct gc_row *g = &rows[i];
		if (g->completed) {
			/* destroyed while running, or finished long ago */
			if (g->destroy_marked || g->finished < oldest_completed)
				dead[ndead++] = g;
			else
				young_done[nyoung_done++] = g;
			continue;
		}
		if (g->created >= oldest_pending) {
			nyoung_pending++;
			continue;
		}
		/* old and pending: hung if on probation and no progress since */
		struct probation key, *p;
		memcpy(key.uuid, g->uuid, sizeof(key.uuid));
		p = nprob ? bsearch(&key, prob, nprob, sizeof(*prob), prob_cmp) : NULL;
		if (p && !(g->progress - p->progress > 0)) {
			log_warn("GC: removing old task that is still pending: %s", g->uuid);
			dead[ndead++] = g;
		} else {
			nyoung_pending++;
		}
		memcpy(next[nnext].uuid, g->uuid, sizeof(next[nnext].uuid));
		next[nnext++].progress = g->progress;
	}
	/* Too many left: drop the oldest completed ones.  (The original means to
	 * keep max_tasks in all, pending ones first; its code subtracts the count
	 * of completed tasks instead, which removes every completed task once
	 * there are too many.  The intent is implemented here.) */
	size_t keep_total = task_cfg.max_tasks > 0 ? (size_t)task_cfg.max_tasks : 0;
	if (nyoung_done + nyoung_pending > keep_total) {
		size_t keep = keep_total > nyoung_pending ? keep_total - nyoung_pending : 0;
		qsort(young_done, nyoung_done, sizeof(*young_done), finished_desc);
		for (size_t i = keep; i < nyoung_done; i++)
			dead[ndead++] = young_done[i];
		if (nyoung_pending > keep_total)
			log_warn("There are more pending tasks than the maximum allowed: %zu > %zu",
				 nyoung_pending, keep_total);
	}
	gc_delete(dead, ndead);
	if (ndead)
		log_debug("GC: removed %zu tasks", ndead);
	qsort(next, nnext, sizeof(*next), prob_cmp);
	free(prob);
	prob = next;
	nprob = nnext;
	free(dead);
	free(young_done);
	free(rows);
	pthread_mutex_unlock(&gc_mu);
}
