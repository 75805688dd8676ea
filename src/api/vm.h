/* vm.h — the VM side of the API layer (src/api/vm.c) for the rest of the
 * daemon: the VM operation machinery (current_operations /
 * allowed_operations of VM, VBD and VIF), the power-state transitions
 * (field effects of a VM becoming Halted, Running, Paused, Suspended) that
 * the start/shutdown implementations call, and the memory overhead model.
 * See docs/vm.md ("The API").  Functions that commit may block: call them on
 * a worker thread.
 */
#ifndef CX_VM_H
#define CX_VM_H

#include <stdbool.h>
#include <stdint.h>
#include "base/xerr.h"
#include "db/db.h"

/* The class (and operation enum) indices of the VM side (vm.c, vm_power.c),
 * filled once by vm_k_init. */
struct vm_classes {
	int vm, vbd, vif, vdi, sr, net, host, hm, vmm, vbdm, vifm, pool, gm;
	int e_vm, e_vbd, e_vif;
};
extern struct vm_classes vm_k;
void vm_k_init(void);

/* The memory a domain needs beyond its RAM (xenopsd's model: shadow for
 * vCPUs + p2m + resident pages, plus one MiB extra, two for HVM). */
int64_t vm_overhead_bytes(int64_t static_max, int vcpus, double multiplier, bool hvm);
/* Whether the VM (its row) is an HVM guest: domain_type, or when that is
 * unspecified, an HVM_boot_policy. */
bool vm_hvm(const struct db_row *r);

/* Check op on the VM (non-strict, as the message does) and put {key: op}
 * into its current_operations (one commit under ops_lock, retried while
 * another operation is in progress, as the original's with_vm_operation).
 * key: the call's task (ops_key).  0, or -1 with err set
 * (OTHER_OPERATION_IN_PROGRESS, VM_BAD_POWER_STATE, ...). */
int vm_op_begin(const char *vm, const char *key, const char *op, const char *task,
		struct xerr *err);
/* Take the call's entry out and recompute allowed_operations of the VM and
 * its VBDs and VIFs. */
void vm_op_end(const char *vm, const char *key);

/* Run the body (the variadic part) between vm_op_begin and vm_op_end, in
 * the call's task; c is a struct api_ctx * (api.h), needs ops.h. */
#define WITH_VM_OP(c, vm, op, ...)                                                   \
	do {                                                                          \
		const char *key_ = ops_key((c)->a, (c)->task);                        \
		if (vm_op_begin((vm), key_, (op), (c)->task, &(c)->err) < 0)          \
			break;                                                        \
		__VA_ARGS__;                                                          \
		vm_op_end((vm), key_);                                                \
	} while (0)

/* A VBD or VIF operation (cls: the VBD or VIF class): check op on the
 * device with the rules that compute its allowed_operations
 * (xapi_vbd_helpers / xapi_vif_helpers: OTHER_OPERATION_IN_PROGRESS,
 * VM_BAD_POWER_STATE [vm, "running", actual], DEVICE_ALREADY_ATTACHED /
 * _DETACHED, VBD_NOT_UNPLUGGABLE, VBD_NOT_REMOVABLE_MEDIA, VBD_NOT_EMPTY,
 * VBD_IS_EMPTY, ...) and put {key: op} into its current_operations, retried
 * while another operation is in progress (as the original's
 * with_vbd_marked); vm gets the device's VM.  Then the allowed_operations
 * of the VM and its devices.  0, or -1 with err set. */
int vm_dev_op_begin(int cls, const char *ref, const char *op, const char *key, const char *task,
		    char vm[DB_REF_MAX], struct xerr *err);
/* Take {key: ...} out of the device's current_operations; recompute. */
void vm_dev_op_end(int cls, const char *ref, const char *key, const char *vm);

/* Recompute allowed_operations of the VM, its VBDs and VIFs (one commit). */
void vm_update_allowed(const char *vm);

/* Power-state transitions, as the original's
 * force_state_reset_keep_current_operations and update_vm (7.4):
 *  - "Halted": every VBD/VIF currently_attached=false, reserved=false,
 *    current_operations {}; requires_reboot false; resident_on,
 *    scheduled_to_be_resident_on NULL, domid -1;
 *  - "Suspended": resident_on/scheduled NULL, domid -1 (unless a
 *    checkpoint is in progress);
 *  - "Running" / "Paused": resident_on = host, domid = domid,
 *    scheduled_to_be_resident_on NULL; the VM's VIFs and non-empty VBDs
 *    currently_attached=true.
 * Then allowed_operations of the VM, its VBDs and VIFs — all one commit.
 * host/domid are used for Running/Paused only.  0 or -1 with err set. */
int vm_set_power_state(const char *vm, const char *state, const char *host, int64_t domid,
		       struct xerr *err);
/* The same, with fill (if given) adding its own changes to the commit,
 * called under the database's read lock with the VM's row. */
typedef void (*vm_txn_fill)(struct db_txn *t, const struct db_row *r, void *arg);
int vm_set_power_state_with(const char *vm, const char *state, const char *host, int64_t domid,
			    vm_txn_fill fill, void *arg, struct xerr *err);

/* VM.checkpoint's copy (the original's Xapi_vm_clone.clone with
 * Disk_op_checkpoint), inside the VM's checkpoint operation (key): the
 * disks and the suspend VDI (if any) snapshotted, a snapshot VM (snapshot
 * rows as VM.snapshot's) that is Suspended with the copy of the suspend
 * image when the VM is Suspended, else Halted; ps_at: the
 * power-state-at-snapshot it records.  0 with the ref in out, or -1 with e
 * set (nothing left behind). */
int vm_checkpoint_copy(const char *vm, const char *name, const char *ps_at, const char *task,
		       const char *key, char out[DB_REF_MAX], struct xerr *e);

/* At daemon start: clears current_operations left on VMs, VBDs and VIFs by
 * a crash and recomputes every allowed_operations.  Idempotent. */
void vm_start(void);

#endif
