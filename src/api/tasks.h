/* tasks.h — the task class: the task a call runs in (Async.X.y, and the
 * synchronous form of every async-capable message), tasks clients make for
 * themselves (task.create), completion, progress, cancellation, and the
 * garbage collection of old tasks.  See docs/tasks.md.
 */
#ifndef CX_TASKS_H
#define CX_TASKS_H
#include <stdbool.h>
#include "base/arena.h"
#include "base/xerr.h"
#include "db/db.h"

/* Settings (main.c fills them from the configuration). */
struct task_settings {
	int completed_timeout_s; /* completed tasks are removed this long after finishing */
	int pending_timeout_s;   /* pending tasks older than this that make no progress go */
	int max_tasks;           /* beyond this many, the oldest completed tasks go */
	int debug_delay_ms;      /* testing: calls of async-capable messages first spend
	                            this long, cancellable, in their task (0 = off) */
};
extern struct task_settings task_cfg;

/* A new task row.  name: name_label; session: the owner (NULL/"" = none);
 * subtask_of: parent task (NULL = none); http_oc: NULL-terminated key/value
 * pairs from the request's "x-http-other-config-<k>" headers, stored in
 * other_config as "http:<k>".  0 and the ref in out, or -1 with err set. */
int task_create(const char *name, const char *description, const char *session,
		const char *subtask_of, const char *const *http_oc, char out[DB_REF_MAX],
		struct xerr *err);
/* Finish a pending task (a task no longer pending is left alone, as the
 * original does): success with result (XML-RPC value text) if err is NULL or
 * has no code; else failure with error_info = [code, params...], or status
 * cancelled if the code is TASK_CANCELLED. */
void task_complete(const char *task, const struct xerr *err, const char *result_xml);
/* Delete the row (the end of a synchronous call's task). */
void task_destroy_row(const char *task);
bool task_exists(const char *task);

/* For long operations running in a task (c->task): */
/* Has someone asked to cancel it (task.cancel put "cancel" in its
 * current_operations)?  Cheap: one lookup under the read lock. */
bool task_cancelling(const char *task);
/* Set progress (0..1) of a pending task; 0, or -1 if it is gone or done. */
int task_set_progress(const char *task, double progress);
/* allowed_operations = [cancel] or [] (what the task advertises). */
void task_set_cancellable(const char *task, bool cancellable);
/* 0, or -1 with err = TASK_CANCELLED [task] if the task is being cancelled. */
int task_check_cancel(const char *task, struct xerr *err);
/* The testing delay (task_cfg.debug_delay_ms): sleeps in steps, cancellable,
 * with progress; 0, or -1 with err = TASK_CANCELLED [task]. */
int task_debug_delay(const char *task, struct xerr *err);

/* Remove old tasks as the original's timeout_tasks does (timer, worker). */
void task_gc(void);
#endif
