/* ops.h — what the classes with current_operations / allowed_operations
 * share (storage.c for SR and VDI, vm.c for VM, VBD and VIF): the
 * process-wide lock under which an operation is checked and marked (the
 * original's global lock), the key of a call's entries, the retry loop of
 * the original's retry_with_global_lock, and map editing.
 *
 * An operation: under ops_lock(), check it against the same rules that
 * compute allowed_operations and put {key: op} into current_operations in
 * one commit; take it out (and recompute allowed_operations) when it ends.
 */
#ifndef CX_OPS_H
#define CX_OPS_H

#include <stdbool.h>
#include "base/arena.h"
#include "base/xerr.h"
#include "val/val.h"

void ops_lock(void);
void ops_unlock(void);

/* The key of the current_operations entries of a call: its task, or a fresh
 * dummy ref (in a, or NULL without an arena) when it runs in none. */
const char *ops_key(struct arena *a, const char *task);

/* Call once(arg, e) until it succeeds, retrying while it fails with
 * OTHER_OPERATION_IN_PROGRESS, for up to 30 s with back-off; the task (may
 * be NULL) is cancellable meanwhile (TASK_CANCELLED).  0 or -1 with e set. */
int ops_retry(int (*once)(void *arg, struct xerr *e), void *arg, const char *task,
	      struct xerr *e);

/* A heap (string -> string) map: a copy of m with key set to value (NULL:
 * key removed). */
struct val *ops_map_with(const struct val *m, const char *key, const char *value);

/* The entry of current_operations with the lowest index in enum enm (the
 * original sorts them), skipping ops equal to skip: its (task, op). */
bool ops_first_current(const struct val *cur, int enm, const char **task, const char **op,
		       const char *skip);

void ops_sleep_ms(int ms);

#endif
