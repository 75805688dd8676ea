/* vm_power.h — the VM messages that need a running domain
 * (src/api/vm_power.c): what the daemon calls to connect them to the domain
 * manager (src/xenops/xenops.h).  See docs/vm.md ("Lifecycle").
 */
#ifndef CX_VM_POWER_H
#define CX_VM_POWER_H

#include <stdint.h>
#include "xenops/xenops.h"

/* The xenops event callback (ctx unused): queues the event for the
 * lifecycle thread; never blocks.  May be called before vm_power_start. */
void vm_power_on_event(void *ctx, enum xenops_event ev, const char *vm_uuid, uint32_t domid);

/* At daemon start, after xenops_init, the database, vm_start() and
 * storage_start(): resync the VM rows with the domains xenops lists (as the
 * original's resync: domains → Running/Paused with their domid; VMs without
 * one → Halted), then start the thread that handles queued events (guest
 * shutdowns and crashes: actions_after_*; guest agent data). */
void vm_power_start(int clean_shutdown_timeout_s);

/* After the VM's dynamic memory range changed: a Running (Paused) VM's
 * balloon target is set as squeezed would (dynamic_max, as far as the host's
 * free memory goes, not below dynamic_min) through
 * xenops_set_memory_target, and VM_metrics.memory_actual follows the
 * domain.  0 for VMs without a domain; -1 with e set. */
int vm_power_balloon(const char *vm, struct xerr *e);

/* VM.hard_shutdown of vm as its own operation (a fresh key; e.g. inside
 * VM.revert's "reverting"): the domain destroyed, a Suspended VM's image
 * dropped; Halted.  0 or -1 with e set. */
int vm_power_hard_shutdown(const char *vm, const char *task, struct xerr *e);

/* At daemon stop, before xenops_shutdown: stops the event thread. */
void vm_power_stop(void);

#endif
