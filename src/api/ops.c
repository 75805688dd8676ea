/* ops.c — the operation-marking helpers shared by storage.c and vm.c
 * (see ops.h). */
#include "api/ops.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include "api/idl.h"
#include "api/tasks.h"
#include "base/util.h"
#include "db/db.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void ops_lock(void)
{
	pthread_mutex_lock(&lock);
}

void ops_unlock(void)
{
	pthread_mutex_unlock(&lock);
}

const char *ops_key(struct arena *a, const char *task)
{
	if (task)
		return task;
	char r[DB_REF_MAX];
	db_ref_new(r);
	return a ? arena_strndup(a, r, strlen(r)) : NULL;
}

void ops_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

int ops_retry(int (*once)(void *arg, struct xerr *e), void *arg, const char *task,
	      struct xerr *e)
{
	int wait = 20;
	double deadline = util_now_f() + 30;
	for (;;) {
		if (once(arg, e) == 0)
			return 0;
		if (strcmp(e->code, "OTHER_OPERATION_IN_PROGRESS") != 0 || util_now_f() > deadline)
			return -1;
		xerr_clear(e);
		if (task)
			task_set_cancellable(task, true);
		if (task && task_check_cancel(task, e) < 0)
			return -1;
		ops_sleep_ms(wait);
		if (wait < 500)
			wait *= 2;
	}
}

struct val *ops_map_with(const struct val *m, const char *key, const char *value)
{
	uint32_t n = m && m->kind == V_STRUCT ? m->n : 0, k = 0;
	struct val *o = val_struct_h(n + 1);
	for (uint32_t i = 0; i < n; i++) {
		if (strcmp(m->u.members[i].key, key) == 0)
			continue;
		o->u.members[k].key = util_strdup(m->u.members[i].key);
		o->u.members[k].klen = m->u.members[i].klen;
		o->u.members[k].v = val_dup_h(m->u.members[i].v);
		k++;
	}
	if (value) {
		o->u.members[k].key = util_strdup(key);
		o->u.members[k].klen = (uint32_t)strlen(key);
		o->u.members[k].v = val_cstr_h(value);
		k++;
	}
	o->n = k;
	return o;
}

bool ops_first_current(const struct val *cur, int enm, const char **task, const char **op,
		       const char *skip)
{
	int best = -1;
	for (uint32_t i = 0; cur && cur->kind == V_STRUCT && i < cur->n; i++) {
		const struct val *v = cur->u.members[i].v;
		if (!v || v->kind != V_STR || (skip && strcmp(v->u.s, skip) == 0))
			continue;
		int k = idl_enum_value(enm, v->u.s, strlen(v->u.s));
		if (best < 0 || k < best) {
			best = k;
			*task = cur->u.members[i].key;
			*op = v->u.s;
		}
	}
	return best >= 0;
}
