/* tasks.h — tasks for asynchronous calls (Async.X.y). */
#ifndef CX_TASKS_H
#define CX_TASKS_H
#include "base/arena.h"
#include "base/xerr.h"

/* Create a pending task named name for the session; returns its ref in the
 * arena, or NULL with err set. */
char *task_create_for_call(struct arena *a, const char *name, const char *session,
			   struct xerr *err);
/* Finish the task: success with result (XML-RPC value text of the result) if
 * err->code is NULL, else failure with error_info. */
void task_complete(const char *task, const struct xerr *err, const char *result_xml);
#endif
