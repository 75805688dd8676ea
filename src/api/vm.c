/* vm.c — the XenAPI messages of VM, VBD and VIF that need no running domain,
 * and the VM operation machinery (current_operations / allowed_operations of
 * VM, VBD and VIF) that the domain-running messages will use too.
 *
 * Behaviour follows the original: xapi_vm_lifecycle.ml (the operation
 * check, first error wins), xapi_vm.ml, xapi_vm_clone.ml,
 * xapi_vm_snapshot.ml, xapi_vbd.ml / xapi_vbd_helpers.ml, xapi_vif.ml /
 * xapi_vif_helpers.ml, xapi_templates(_install).ml and the VM parts of
 * message_forwarding.ml.  Marking uses ops.h, the lock and retry loop shared
 * with storage.c; disks are copied through storage.h.  See docs/vm.md
 * ("The API").
 */
#include "api/vm.h"

#include <expat.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/ops.h"
#include "api/row.h"
#include "api/storage.h"
#include "api/tasks.h"
#include "api/vm_power.h"
#include "base/log.h"
#include "base/util.h"

#define MIB (1024LL * 1024LL)
#define NULLREF "OpaqueRef:NULL"

/* ---- classes, fields ---- */

struct vm_classes vm_k;
#define K vm_k
static pthread_once_t k_once = PTHREAD_ONCE_INIT;

static int enum_find(const char *name)
{
	for (int i = 0; i < idl_nenums; i++)
		if (strcmp(idl_enums[i].name, name) == 0)
			return i;
	return -1;
}

static void k_init(void)
{
	K.vm = idl_class_find("VM");
	K.vbd = idl_class_find("VBD");
	K.vif = idl_class_find("VIF");
	K.vdi = idl_class_find("VDI");
	K.sr = idl_class_find("SR");
	K.net = idl_class_find("network");
	K.host = idl_class_find("host");
	K.hm = idl_class_find("host_metrics");
	K.vmm = idl_class_find("VM_metrics");
	K.vbdm = idl_class_find("VBD_metrics");
	K.vifm = idl_class_find("VIF_metrics");
	K.pool = idl_class_find("pool");
	K.gm = idl_class_find("VM_guest_metrics");
	K.e_vm = enum_find("vm_operations");
	K.e_vbd = enum_find("vbd_operations");
	K.e_vif = enum_find("vif_operations");
}

void vm_k_init(void)
{
	pthread_once(&k_once, k_init);
}

static void k(void)
{
	vm_k_init();
}

/* ---- row helpers (read lock held) ---- */

static double fd(const struct db_row *r, int cls, const char *f)
{
	const struct val *v = fv(r, cls, f);
	return v && v->kind == V_DOUBLE ? v->u.d : v && v->kind == V_INT ? (double)v->u.i : 0;
}
static const char *map_get(const struct val *m, const char *key)
{
	const struct val *v = m && m->kind == V_STRUCT ? val_struct_get(m, key) : NULL;
	return v && v->kind == V_STR ? v->u.s : NULL;
}
static bool valid_ref(int cls, const char *r)
{
	return !is_null(r) && db_get(cls, r) != NULL;
}
static bool truthy(const char *s)
{
	return s && (strcmp(s, "1") == 0 || strcasecmp(s, "true") == 0);
}

/* ---- memory overhead (shared with the seed) ---- */

int64_t vm_overhead_bytes(int64_t static_max, int vcpus, double multiplier, bool hvm)
{
	int64_t smax_mib = (static_max + MIB - 1) / MIB;
	int64_t pages = 256LL * vcpus + 2 * smax_mib;
	int64_t shadow = (int64_t)((double)((pages + 255) / 256) * multiplier);
	if (shadow < 1)
		shadow = 1;
	return ((hvm ? 2 : 1) + shadow) * MIB;
}

bool vm_hvm(const struct db_row *r)
{
	const char *dt = fs(r, K.vm, "domain_type");
	if (strcmp(dt, "hvm") == 0)
		return true;
	if (strcmp(dt, "unspecified") == 0 || !dt[0])
		return fs(r, K.vm, "HVM_boot_policy")[0] != 0;
	return false;
}

static int64_t vm_overhead_row(const struct db_row *r)
{
	return vm_overhead_bytes(fi(r, K.vm, "memory_static_max"), (int)fi(r, K.vm, "VCPUs_max"),
				 fd(r, K.vm, "HVM_shadow_multiplier") > 0
					 ? fd(r, K.vm, "HVM_shadow_multiplier") : 1.0,
				 vm_hvm(r));
}

/* ---- the VM operation check (xapi_vm_lifecycle.ml) ---- */

enum { PS_H = 1, PS_P = 2, PS_S = 4, PS_R = 8, PS_ALL = 15 };

static int ps_bit(const char *ps)
{
	if (strcmp(ps, "Halted") == 0)
		return PS_H;
	if (strcmp(ps, "Paused") == 0)
		return PS_P;
	if (strcmp(ps, "Suspended") == 0)
		return PS_S;
	if (strcmp(ps, "Running") == 0)
		return PS_R;
	return 0;
}

static bool in_list(const char *op, const char *const *l)
{
	for (; *l; l++)
		if (strcmp(op, *l) == 0)
			return true;
	return false;
}
#define IN(op, ...) in_list(op, (const char *const[]){__VA_ARGS__, NULL})

static int allowed_power_states(const char *op, bool ctl, bool snapshot)
{
	if (IN(op, "import"))
		return 0;
	if (IN(op, "changing_VCPUs", "changing_static_range", "changing_memory_limits"))
		return PS_H | (ctl ? PS_R : 0);
	if (IN(op, "changing_shadow_memory", "changing_NVRAM", "make_into_template", "provision",
	       "start", "start_on", "create_vtpm"))
		return PS_H;
	if (IN(op, "unpause"))
		return PS_P;
	if (IN(op, "csvm", "resume", "resume_on"))
		return PS_S;
	if (IN(op, "awaiting_memory_live", "call_plugin", "clean_reboot", "clean_shutdown",
	       "changing_memory_live", "changing_shadow_memory_live", "changing_VCPUs_live",
	       "data_source_op", "pause", "pool_migrate", "send_sysrq", "send_trigger",
	       "snapshot_with_quiesce", "sysprep", "suspend"))
		return PS_R;
	if (IN(op, "changing_dynamic_range"))
		return PS_H | PS_R;
	if (IN(op, "clone", "copy"))
		return PS_H | (snapshot ? PS_S : 0);
	if (IN(op, "create_template", "destroy", "export"))
		return PS_H | PS_S;
	if (IN(op, "hard_reboot"))
		return PS_P | PS_R;
	if (IN(op, "checkpoint", "get_boot_record", "shutdown", "hard_shutdown"))
		return PS_P | PS_S | PS_R;
	if (IN(op, "migrate_send"))
		return PS_H | PS_S | PS_R;
	return PS_ALL; /* assert_operation_valid, metadata_export, power_state_reset, revert,
			  reverting, snapshot, update_allowed_operations, query_services */
}

static void ps_list(int bits, char *out, size_t n)
{
	static const char *const names[] = {"halted", "paused", "suspended", "running"};
	out[0] = 0;
	for (int i = 0; i < 4; i++)
		if (bits & (1 << i))
			snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? ", " : "",
				 names[i]);
}

static bool cur_has(const struct val *cur, const char *op)
{
	for (uint32_t i = 0; i < n_of(cur); i++) {
		const struct val *v = cur->u.members[i].v;
		if (v && v->kind == V_STR && strcmp(v->u.s, op) == 0)
			return true;
	}
	return false;
}

static bool all_cur_in(const struct val *cur, const char *const *l)
{
	for (uint32_t i = 0; i < n_of(cur); i++) {
		const struct val *v = cur->u.members[i].v;
		if (!v || v->kind != V_STR || !in_list(v->u.s, l))
			return false;
	}
	return true;
}

static bool allowed_concurrently(const char *op, const struct val *cur)
{
	static const char *const copies[] = {"clone", "copy", "export", NULL};
	static const char *const snaps[] = {"snapshot", "checkpoint", NULL};
	static const char *const boot[] = {"get_boot_record", NULL};
	if ((in_list(op, copies) && all_cur_in(cur, copies)) ||
	    (in_list(op, snaps) && all_cur_in(cur, snaps)) ||
	    (in_list(op, boot) && all_cur_in(cur, boot)))
		return true;
	if (strcmp(op, "hard_shutdown") == 0)
		return !cur_has(cur, "hard_shutdown");
	if (strcmp(op, "hard_reboot") == 0)
		return !cur_has(cur, "hard_shutdown") && !cur_has(cur, "hard_reboot");
	/* the state machine: exactly one op in progress, and this transition */
	if (n_of(cur) != 1 || !cur->u.members[0].v || cur->u.members[0].v->kind != V_STR)
		return false;
	const char *c = cur->u.members[0].v->u.s;
	return (strcmp(c, "snapshot_with_quiesce") == 0 && strcmp(op, "snapshot") == 0) ||
	       (strcmp(c, "migrate_send") == 0 &&
		IN(op, "metadata_export", "clean_shutdown", "clean_reboot"));
}

/* OTHER_OPERATION_IN_PROGRESS [class, ref, ops, tasks] as the original
 * reports it: one entry as (op, task), several as "{a,b}" (sep ","). */
static void other_op_err(struct xerr *e, const char *cls, const char *ref, const struct val *cur,
			 const char *sep)
{
	struct buf ops, refs;
	buf_init(&ops);
	buf_init(&refs);
	uint32_t n = n_of(cur);
	if (n > 1) {
		buf_addc(&ops, '{');
		buf_addc(&refs, '{');
	}
	for (uint32_t i = 0; i < n; i++) {
		const struct val *v = cur->u.members[i].v;
		buf_printf(&ops, "%s%s", i ? sep : "", v && v->kind == V_STR ? v->u.s : "");
		buf_printf(&refs, "%s%s", i ? sep : "", cur->u.members[i].key);
	}
	if (n > 1) {
		buf_addc(&ops, '}');
		buf_addc(&refs, '}');
	}
	buf_addc(&ops, 0);
	buf_addc(&refs, 0);
	xerr_set(e, "OTHER_OPERATION_IN_PROGRESS", 4, cls, ref, ops.p, refs.p);
	buf_free(&ops);
	buf_free(&refs);
}

static bool is_dom0(const struct db_row *r)
{
	return fb(r, K.vm, "is_control_domain") && fi(r, K.vm, "domid") == 0;
}

static bool platform_true(const struct db_row *r, const char *key)
{
	return truthy(map_get(fv(r, K.vm, "platform"), key));
}

/* Is op allowed on VM row r, with current operations cur and power state ps
 * (NULL: the row's)?  The original's check_operation_error: the first error
 * wins.  0, or -1 with e set. */
static int vm_check(const struct db_row *r, const struct val *cur, const char *ps_in,
		    const char *op, bool strict, struct xerr *e)
{
	const char *ref = r->ref;
	const char *ps = ps_in ? ps_in : fs(r, K.vm, "power_state");
	bool tmpl = fb(r, K.vm, "is_a_template"), snap = fb(r, K.vm, "is_a_snapshot");
	bool ctl = fb(r, K.vm, "is_control_domain");
	const char *blocked = map_get(fv(r, K.vm, "blocked_operations"), op);
	if (blocked) {
		xerr_set(e, "OPERATION_BLOCKED", 2, ref, blocked);
		return -1;
	}
	int aps = allowed_power_states(op, ctl, snap);
	if (!(aps & ps_bit(ps))) {
		char exp[64], act[32];
		ps_list(aps, exp, sizeof(exp));
		lower(ps, act, sizeof(act));
		xerr_set(e, "VM_BAD_POWER_STATE", 3, ref, exp, act);
		return -1;
	}
	if (n_of(cur) && !allowed_concurrently(op, cur)) {
		other_op_err(e, "VM", ref, cur, ",");
		return -1;
	}
	if (tmpl && !snap) {
		bool def = fb(r, K.vm, "is_default_template") ||
			   truthy(map_get(fv(r, K.vm, "other_config"), "default_template"));
		if (!IN(op, "changing_dynamic_range", "changing_static_range",
			"changing_memory_limits", "changing_shadow_memory", "changing_VCPUs",
			"changing_NVRAM", "clone", "copy", "export", "metadata_export", "provision") &&
		    !(IN(op, "destroy", "migrate_send") && !def)) {
			xerr_set(e, "VM_IS_TEMPLATE", 2, ref, op);
			return -1;
		}
	}
	if (snap && !IN(op, "revert", "clone", "copy", "export", "destroy", "hard_shutdown",
			"metadata_export")) {
		xerr_set(e, "VM_IS_SNAPSHOT", 2, ref, op);
		return -1;
	}
	if (strcmp(op, "provision") == 0 && !tmpl) {
		xerr_set(e, "PROVISION_ONLY_ALLOWED_ON_TEMPLATE", 0);
		return -1;
	}
	if (strcmp(op, "revert") == 0 && !snap) {
		xerr_set(e, "REVERT_ONLY_ALLOWED_ON_SNAPSHOT", 0);
		return -1;
	}
	bool nested = platform_true(r, "nested-virt");
	if (IN(op, "suspend", "checkpoint", "pool_migrate", "migrate_send") && strict &&
	    (platform_true(r, "nomigrate") || nested)) {
		xerr_set(e, "VM_IS_IMMOBILE", 1, ref);
		return -1;
	}
	if (strcmp(op, "changing_dynamic_range") == 0 && nested && strict) {
		xerr_set(e, "VM_IS_USING_NESTED_VIRT", 1, ref);
		return -1;
	}
	if (IN(op, "changing_VCPUs", "destroy") && is_dom0(r)) {
		xerr_set(e, "OPERATION_NOT_ALLOWED", 1, "This operation is not allowed on dom0");
		return -1;
	}
	if (ctl && !IN(op, "data_source_op", "changing_memory_live", "awaiting_memory_live",
		       "metadata_export", "changing_dynamic_range", "changing_memory_limits",
		       "changing_static_range", "start", "start_on", "changing_VCPUs", "destroy")) {
		xerr_set(e, "OPERATION_NOT_ALLOWED", 1,
			 "This operation is not allowed on a control domain");
		return -1;
	}
	/* guest features: only live HVM guests without PV drivers lack them */
	bool live = ps_bit(ps) & (PS_R | PS_P);
	if (live && IN(op, "suspend", "checkpoint", "pool_migrate", "migrate_send", "clean_shutdown",
		       "clean_reboot", "changing_VCPUs_live")) {
		const struct db_row *m = db_get(K.vmm, fs(r, K.vm, "metrics"));
		const struct db_row *g = db_get(K.gm, fs(r, K.vm, "guest_metrics"));
		const char *cdt = fs(m, K.vmm, "current_domain_type");
		const struct val *other = fv(g, K.gm, "other");
		bool implicit = IN(cdt, "pv", "pvh", "pv_in_pvh") || fb(g, K.gm, "PV_drivers_detected");
		const char *reason = map_get(other, "data-cant-suspend-reason");
		bool susp = IN(op, "suspend", "checkpoint", "pool_migrate", "migrate_send");
		if (susp && reason) {
			xerr_set(e, "VM_NON_SUSPENDABLE", 2, ref, reason);
			return -1;
		}
		if (!implicit && strict &&
		    ((susp && !truthy(map_get(other, "feature-suspend"))) ||
		     (strcmp(op, "clean_shutdown") == 0 && !truthy(map_get(other, "feature-shutdown")) &&
		      !truthy(map_get(other, "feature-poweroff"))) ||
		     (strcmp(op, "clean_reboot") == 0 && !truthy(map_get(other, "feature-shutdown")) &&
		      !truthy(map_get(other, "feature-reboot"))))) {
			xerr_set(e, "VM_LACKS_FEATURE", 1, ref);
			return -1;
		}
		if (!implicit && strcmp(op, "changing_VCPUs_live") == 0 &&
		    !truthy(map_get(other, "feature-vcpu-hotplug"))) {
			xerr_set(e, "VM_LACKS_FEATURE", 1, ref);
			return -1;
		}
	}
	if (strcmp(op, "snapshot_with_quiesce") == 0) {
		xerr_set(e, "VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED", 1, ref);
		return -1;
	}
	if (IN(op, "checkpoint", "snapshot", "suspend", "pool_migrate")) {
		const struct val *vbds = fv(r, K.vm, "VBDs");
		for (uint32_t i = 0; i < n_of(vbds); i++) {
			const struct db_row *b = db_get(K.vbd, vbds->u.items[i]->u.s);
			const struct db_row *d = b ? db_get(K.vdi, fs(b, K.vbd, "VDI")) : NULL;
			const struct val *sm = fv(d, K.vdi, "sm_config");
			const char *ob = map_get(sm, "on_boot");
			bool reset = ob && strcmp(ob, "reset") == 0;
			if (reset && (strcmp(op, "pool_migrate") != 0 || truthy(map_get(sm, "caching")))) {
				xerr_set(e, "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", 0);
				return -1;
			}
		}
	}
	if (IN(op, "suspend", "checkpoint", "pool_migrate", "migrate_send") &&
	    n_of(fv(r, K.vm, "attached_PCIs"))) {
		xerr_set(e, "VM_HAS_PCI_ATTACHED", 1, ref);
		return -1;
	}
	if (n_of(fv(r, K.vm, "VGPUs")) &&
	    ((IN(op, "pool_migrate", "suspend") ||
	      (strcmp(op, "migrate_send") == 0 && ps_bit(ps) != PS_H) ||
	      (strcmp(op, "checkpoint") == 0 && ps_bit(ps) != PS_S)))) {
		xerr_set(e, "VM_HAS_VGPU", 1, ref);
		return -1;
	}
	if (IN(op, "suspend", "snapshot", "checkpoint", "migrate_send", "pool_migrate") &&
	    n_of(fv(r, K.vm, "VUSBs"))) {
		xerr_set(e, "VM_HAS_VUSBS", 1, ref);
		return -1;
	}
	if (strcmp(op, "make_into_template") == 0) {
		static const char *const links[][3] = {
			{"appliance", "VM_appliance", "VM_IS_PART_OF_AN_APPLIANCE"},
			{"protection_policy", "VMPP", "VM_ASSIGNED_TO_PROTECTION_POLICY"},
			{"snapshot_schedule", "VMSS", "VM_ASSIGNED_TO_SNAPSHOT_SCHEDULE"}};
		for (size_t i = 0; i < 3; i++) {
			int cls = idl_class_find(links[i][1]);
			const char *l = fs(r, K.vm, links[i][0]);
			if (cls >= 0 && valid_ref(cls, l)) {
				xerr_set(e, links[i][2], 2, ref, l);
				return -1;
			}
		}
	}
	if (strcmp(op, "query_services") == 0 &&
	    !truthy(map_get(fv(r, K.vm, "other_config"), "is_system_domain"))) {
		xerr_set(e, "NOT_SYSTEM_DOMAIN", 1, ref);
		return -1;
	}
	if (strcmp(op, "create_vtpm") == 0 && n_of(fv(r, K.vm, "VTPMs"))) {
		char n[16];
		snprintf(n, sizeof(n), "%u", n_of(fv(r, K.vm, "VTPMs")));
		xerr_set(e, "VTPM_MAX_AMOUNT_REACHED", 1, n);
		return -1;
	}
	return 0;
}

/* Never listed in allowed_operations (the original's ignored_ops). */
static const char *const vm_ignored_ops[] = {
	"create_template", "power_state_reset", "csvm", "get_boot_record", "send_sysrq",
	"send_trigger", "query_services", "shutdown", "call_plugin", "changing_memory_live",
	"awaiting_memory_live", "changing_memory_limits", "changing_shadow_memory_live",
	"changing_VCPUs", "assert_operation_valid", "data_source_op", "update_allowed_operations",
	"import", "reverting", NULL};

static struct val *vm_allowed(const struct db_row *r, const struct val *cur, const char *ps)
{
	const struct idl_enum *en = &idl_enums[K.e_vm];
	struct val *o = val_array_h((uint32_t)en->nvalues);
	uint32_t k = 0;
	for (int i = 0; i < en->nvalues; i++) {
		const char *op = en->values[i];
		if (in_list(op, vm_ignored_ops))
			continue;
		struct xerr e = {0};
		if (vm_check(r, cur, ps, op, true, &e) == 0)
			o->u.items[k++] = val_cstr_h(op);
		xerr_clear(&e);
	}
	o->n = k;
	return o;
}

/* ---- VBD and VIF operations (xapi_vbd_helpers.ml, xapi_vif_helpers.ml) ---- */

/* vm_ps / vm_cur: the VM's power state and current operations as they will
 * be (NULL: the row's). */
static int vbd_check(const struct db_row *b, const char *vm_ps, const struct val *vm_cur,
		     bool attached_override, bool use_override, const char *op, struct xerr *e)
{
	const struct db_row *vm = db_get(K.vm, fs(b, K.vbd, "VM"));
	const char *ps = vm_ps ? vm_ps : fs(vm, K.vm, "power_state");
	const struct val *vcur = vm_cur ? vm_cur : fv(vm, K.vm, "current_operations");
	const struct val *cur = fv(b, K.vbd, "current_operations");
	bool attached = use_override ? attached_override
				     : fb(b, K.vbd, "currently_attached") || fb(b, K.vbd, "reserved");
	bool cd = strcmp(fs(b, K.vbd, "type"), "CD") == 0, empty = fb(b, K.vbd, "empty");
	char act[32];
	lower(ps, act, sizeof(act));
	if (n_of(cur) && !IN(op, "pause", "unpause")) {
		other_op_err(e, "VBD", b->ref, cur, "; ");
		return -1;
	}
	if (IN(op, "plug", "unplug", "unplug_force", "pause", "unpause")) {
		if (strcmp(ps, "Running") != 0) {
			xerr_set(e, "VM_BAD_POWER_STATE", 3, vm ? vm->ref : "", "running", act);
			return -1;
		}
		if (strcmp(op, "plug") == 0 && attached) {
			xerr_set(e, "DEVICE_ALREADY_ATTACHED", 1, b->ref);
			return -1;
		}
		if (strcmp(op, "plug") != 0 && !attached) {
			xerr_set(e, "DEVICE_ALREADY_DETACHED", 1, b->ref);
			return -1;
		}
		if (IN(op, "unplug", "unplug_force") && !fb(b, K.vbd, "unpluggable")) {
			xerr_set(e, "VBD_NOT_UNPLUGGABLE", 1, b->ref);
			return -1;
		}
		for (uint32_t i = 0; i < n_of(vcur); i++) {
			const struct val *v = vcur->u.members[i].v;
			if (v && v->kind == V_STR &&
			    IN(v->u.s, "clean_shutdown", "hard_shutdown", "suspend", "pause")) {
				char msg[256];
				snprintf(msg, sizeof(msg), "Current operation on VM:%s is %s",
					 vm ? vm->ref : "", v->u.s);
				xerr_set(e, "OPERATION_NOT_ALLOWED", 1, msg);
				return -1;
			}
		}
		if (strcmp(op, "unpause") == 0) {
			xerr_set(e, "OPERATION_NOT_ALLOWED", 1, "VBD is not paused");
			return -1;
		}
	}
	if (IN(op, "insert", "eject")) {
		if (!cd) {
			xerr_set(e, "VBD_NOT_REMOVABLE_MEDIA", 1, b->ref);
			return -1;
		}
		if (strcmp(ps, "Suspended") == 0) {
			xerr_set(e, "VM_BAD_POWER_STATE", 3, vm ? vm->ref : "", "halted, running", act);
			return -1;
		}
		if (strcmp(op, "insert") == 0 && !empty) {
			xerr_set(e, "VBD_NOT_EMPTY", 1, b->ref);
			return -1;
		}
		if (strcmp(op, "eject") == 0 && empty) {
			xerr_set(e, "VBD_IS_EMPTY", 1, b->ref);
			return -1;
		}
	}
	return 0;
}

static int vif_check(const struct db_row *f, const char *vm_ps, const struct val *vm_cur,
		     bool attached_override, bool use_override, const char *op, struct xerr *e)
{
	const struct db_row *vm = db_get(K.vm, fs(f, K.vif, "VM"));
	const char *ps = vm_ps ? vm_ps : fs(vm, K.vm, "power_state");
	const struct val *vcur = vm_cur ? vm_cur : fv(vm, K.vm, "current_operations");
	const struct val *cur = fv(f, K.vif, "current_operations");
	bool attached = use_override ? attached_override
				     : fb(f, K.vif, "currently_attached") || fb(f, K.vif, "reserved");
	if (n_of(cur)) {
		other_op_err(e, "VIF", f->ref, cur, "; ");
		return -1;
	}
	if (strcmp(op, "plug") == 0 && vm && is_dom0(vm)) {
		xerr_set(e, "OPERATION_NOT_ALLOWED", 1, "Control domain does not support hotplug");
		return -1;
	}
	if (IN(op, "plug", "unplug")) {
		char act[32];
		lower(ps, act, sizeof(act));
		if (strcmp(ps, "Running") != 0) {
			xerr_set(e, "VM_BAD_POWER_STATE", 3, vm ? vm->ref : "", "running", act);
			return -1;
		}
		if (strcmp(op, "plug") == 0 && attached) {
			xerr_set(e, "DEVICE_ALREADY_ATTACHED", 1, f->ref);
			return -1;
		}
		if (strcmp(op, "unplug") == 0 && !attached) {
			xerr_set(e, "DEVICE_ALREADY_DETACHED", 1, f->ref);
			return -1;
		}
		for (uint32_t i = 0; i < n_of(vcur); i++) {
			const struct val *v = vcur->u.members[i].v;
			if (v && v->kind == V_STR &&
			    IN(v->u.s, "clean_shutdown", "hard_shutdown", "suspend", "pause")) {
				char msg[256];
				snprintf(msg, sizeof(msg), "Current operation on VM:%s is %s",
					 vm ? vm->ref : "", v->u.s);
				xerr_set(e, "OPERATION_NOT_ALLOWED", 1, msg);
				return -1;
			}
		}
	}
	return 0;
}

static const char *const vbd_all_ops[] = {"attach", "eject", "insert", "plug", "unplug",
					  "unplug_force", "pause", "unpause", NULL};
static const char *const vif_all_ops[] = {"attach", "plug", "unplug", NULL};

typedef int (*dev_check_fn)(const struct db_row *, const char *, const struct val *, bool, bool,
			    const char *, struct xerr *);

static struct val *dev_allowed(dev_check_fn fn, const char *const *all, const struct db_row *r,
			       const char *vm_ps, const struct val *vm_cur, int att)
{
	struct val *o = val_array_h(8);
	uint32_t k = 0;
	for (; *all; all++) {
		struct xerr e = {0};
		if (fn(r, vm_ps, vm_cur, att > 0, att >= 0, *all, &e) == 0)
			o->u.items[k++] = val_cstr_h(*all);
		xerr_clear(&e);
	}
	o->n = k;
	return o;
}

/* A shallow stand-in row (column pointers borrowed) for checking a row
 * that is not stored yet or is seen with one column changed; free() it. */
static struct db_row *tmp_row(int cls, const char *ref, struct val *const *cols)
{
	int nf = idl_classes[cls].nfields;
	struct db_row *r = util_calloc(1, sizeof(*r) + sizeof(r->cols[0]) * (size_t)nf);
	snprintf(r->ref, sizeof(r->ref), "%s", ref);
	r->cls = (int16_t)cls;
	memcpy(r->cols, cols, sizeof(r->cols[0]) * (size_t)nf);
	return r;
}

static void set_if_changed(struct db_txn *t, int cls, const struct db_row *r, const char *field,
			   struct val *v)
{
	const struct val *old = fv(r, cls, field);
	if (old && val_equal(old, v))
		val_free(v);
	else
		db_txn_set(t, cls, r->ref, api_field(cls, field), v);
}

/* Add to t allowed_operations of the VM and its VBDs/VIFs, the VM seen with
 * current operations cur and power state ps (NULL: as stored); att: the
 * devices' currently_attached as they will be (-1: as stored).  Read lock
 * held. */
static void refresh_locked(struct db_txn *t, const struct db_row *r, const struct val *cur,
			   const char *ps, int att, bool clear_dev_ops)
{
	const struct val *c = cur ? cur : fv(r, K.vm, "current_operations");
	set_if_changed(t, K.vm, r, "allowed_operations", vm_allowed(r, c, ps));
	const struct val *vbds = fv(r, K.vm, "VBDs"), *vifs = fv(r, K.vm, "VIFs");
	for (uint32_t i = 0; i < n_of(vbds); i++) {
		const struct db_row *b = db_get(K.vbd, vbds->u.items[i]->u.s);
		if (!b)
			continue;
		int a = att;
		if (att > 0 && fb(b, K.vbd, "empty"))
			a = 0;
		if (clear_dev_ops) {
			/* the check must not see the ops being cleared */
			struct db_row *tmp = tmp_row(K.vbd, b->ref, b->cols);
			tmp->cols[api_field(K.vbd, "current_operations")] = NULL;
			set_if_changed(t, K.vbd, b, "allowed_operations",
				       dev_allowed(vbd_check, vbd_all_ops, tmp, ps, c, a));
			free(tmp);
		} else {
			set_if_changed(t, K.vbd, b, "allowed_operations",
				       dev_allowed(vbd_check, vbd_all_ops, b, ps, c, a));
		}
	}
	for (uint32_t i = 0; i < n_of(vifs); i++) {
		const struct db_row *f = db_get(K.vif, vifs->u.items[i]->u.s);
		if (!f)
			continue;
		if (clear_dev_ops) {
			struct db_row *tmp = tmp_row(K.vif, f->ref, f->cols);
			tmp->cols[api_field(K.vif, "current_operations")] = NULL;
			set_if_changed(t, K.vif, f, "allowed_operations",
				       dev_allowed(vif_check, vif_all_ops, tmp, ps, c, att));
			free(tmp);
		} else {
			set_if_changed(t, K.vif, f, "allowed_operations",
				       dev_allowed(vif_check, vif_all_ops, f, ps, c, att));
		}
	}
}

static void commit_quiet(struct db_txn *t, const char *what, const char *ref)
{
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0 && strcmp(e.code, "HANDLE_INVALID") != 0)
		log_warn("%s %s: %s", what, ref, e.code);
	xerr_clear(&e);
}

static void vm_refresh_vdis(const char *vm);

void vm_update_allowed(const char *vm)
{
	k();
	ops_lock();
	struct db_txn *t = db_txn_new();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	if (r)
		refresh_locked(t, r, NULL, NULL, -1, false);
	db_unlock();
	commit_quiet(t, "allowed_operations of VM", vm);
	ops_unlock();
	vm_refresh_vdis(vm);
}

struct vm_mark {
	const char *vm, *key, *op;
};

static int mark_once(void *arg, struct xerr *e)
{
	struct vm_mark *m = arg;
	ops_lock();
	struct db_txn *t = db_txn_new();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, m->vm);
	int rc = -1;
	if (!r)
		xerr_set(e, "HANDLE_INVALID", 2, "VM", m->vm);
	else if (vm_check(r, fv(r, K.vm, "current_operations"), NULL, m->op, false, e) == 0) {
		struct val *cur = ops_map_with(fv(r, K.vm, "current_operations"), m->key, m->op);
		refresh_locked(t, r, cur, NULL, -1, false);
		db_txn_set(t, K.vm, m->vm, api_field(K.vm, "current_operations"), cur);
		rc = 0;
	}
	db_unlock();
	if (rc == 0)
		rc = db_txn_commit(t, e);
	else
		db_txn_free(t);
	ops_unlock();
	return rc;
}

int vm_op_begin(const char *vm, const char *key, const char *op, const char *task,
		struct xerr *err)
{
	k();
	struct vm_mark m = {vm, key, op};
	return ops_retry(mark_once, &m, task, err);
}

void vm_op_end(const char *vm, const char *key)
{
	k();
	ops_lock();
	struct db_txn *t = db_txn_new();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	if (r) {
		struct val *cur = ops_map_with(fv(r, K.vm, "current_operations"), key, NULL);
		refresh_locked(t, r, cur, NULL, -1, false);
		db_txn_set(t, K.vm, vm, api_field(K.vm, "current_operations"), cur);
	}
	db_unlock();
	commit_quiet(t, "current_operations of VM", vm);
	ops_unlock();
	vm_refresh_vdis(vm);
}

/* ---- VBD / VIF operations: marking ---- */

struct dev_mark {
	int cls;
	const char *ref, *op, *key;
	char *vm;
};

static int dev_mark_once(void *arg, struct xerr *e)
{
	struct dev_mark *m = arg;
	bool vbd = m->cls == K.vbd;
	ops_lock();
	db_rdlock();
	const struct db_row *r = db_get(m->cls, m->ref);
	int rc = -1;
	struct val *cur = NULL;
	if (!r)
		xerr_set(e, "HANDLE_INVALID", 2, vbd ? "VBD" : "VIF", m->ref);
	else if ((vbd ? vbd_check : vif_check)(r, NULL, NULL, false, false, m->op, e) == 0) {
		snprintf(m->vm, DB_REF_MAX, "%s", fs(r, m->cls, "VM"));
		cur = ops_map_with(fv(r, m->cls, "current_operations"), m->key, m->op);
		rc = 0;
	}
	db_unlock();
	if (rc == 0) {
		struct db_txn *t = db_txn_new();
		db_txn_set(t, m->cls, m->ref, api_field(m->cls, "current_operations"), cur);
		rc = db_txn_commit(t, e);
	}
	ops_unlock();
	return rc;
}

int vm_dev_op_begin(int cls, const char *ref, const char *op, const char *key, const char *task,
		    char vm[DB_REF_MAX], struct xerr *err)
{
	k();
	struct dev_mark m = {cls, ref, op, key, vm};
	if (ops_retry(dev_mark_once, &m, task, err) < 0)
		return -1;
	vm_update_allowed(vm);
	return 0;
}

void vm_dev_op_end(int cls, const char *ref, const char *key, const char *vm)
{
	k();
	ops_lock();
	struct db_txn *t = db_txn_new();
	db_rdlock();
	const struct db_row *r = db_get(cls, ref);
	if (r)
		db_txn_set(t, cls, ref, api_field(cls, "current_operations"),
			   ops_map_with(fv(r, cls, "current_operations"), key, NULL));
	db_unlock();
	commit_quiet(t, "current_operations of device", ref);
	ops_unlock();
	vm_update_allowed(vm);
}

int vm_set_power_state(const char *vm, const char *state, const char *host, int64_t domid,
		       struct xerr *err)
{
	return vm_set_power_state_with(vm, state, host, domid, NULL, NULL, err);
}

int vm_set_power_state_with(const char *vm, const char *state, const char *host, int64_t domid,
			    vm_txn_fill fill, void *arg, struct xerr *err)
{
	k();
	ops_lock();
	struct db_txn *t = db_txn_new();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	if (!r) {
		db_unlock();
		db_txn_free(t);
		ops_unlock();
		xerr_set(err, "HANDLE_INVALID", 2, "VM", vm);
		return -1;
	}
	int ps = ps_bit(state);
	db_txn_set(t, K.vm, vm, api_field(K.vm, "power_state"), val_cstr_h(state));
	int att = -1;
	bool clear = false;
	if (ps == PS_H) {
		att = 0;
		clear = true;
		static const char *const devs[][2] = {{"VBDs", "VBD"}, {"VIFs", "VIF"}};
		for (int d = 0; d < 2; d++) {
			int cls = d ? K.vif : K.vbd;
			const struct val *s = fv(r, K.vm, devs[d][0]);
			for (uint32_t i = 0; i < n_of(s); i++) {
				const char *dr = s->u.items[i]->u.s;
				if (!db_get(cls, dr))
					continue;
				db_txn_set(t, cls, dr, api_field(cls, "currently_attached"), val_bool_h(false));
				db_txn_set(t, cls, dr, api_field(cls, "reserved"), val_bool_h(false));
				db_txn_set(t, cls, dr, api_field(cls, "current_operations"), val_struct_h(0));
			}
		}
		db_txn_set(t, K.vm, vm, api_field(K.vm, "requires_reboot"), val_bool_h(false));
	}
	if (ps == PS_H || (ps == PS_S && !cur_has(fv(r, K.vm, "current_operations"), "checkpoint"))) {
		db_txn_set(t, K.vm, vm, api_field(K.vm, "resident_on"), val_cstr_h(NULLREF));
		db_txn_set(t, K.vm, vm, api_field(K.vm, "scheduled_to_be_resident_on"),
			   val_cstr_h(NULLREF));
		db_txn_set(t, K.vm, vm, api_field(K.vm, "domid"), val_int_h(-1));
	}
	if (ps == PS_R || ps == PS_P) {
		att = 1;
		db_txn_set(t, K.vm, vm, api_field(K.vm, "resident_on"),
			   val_cstr_h(host ? host : api_srv.host_ref));
		db_txn_set(t, K.vm, vm, api_field(K.vm, "scheduled_to_be_resident_on"),
			   val_cstr_h(NULLREF));
		db_txn_set(t, K.vm, vm, api_field(K.vm, "domid"), val_int_h(domid));
		const struct val *s = fv(r, K.vm, "VBDs");
		for (uint32_t i = 0; i < n_of(s); i++) {
			const struct db_row *b = db_get(K.vbd, s->u.items[i]->u.s);
			if (b && !fb(b, K.vbd, "empty"))
				db_txn_set(t, K.vbd, b->ref, api_field(K.vbd, "currently_attached"),
					   val_bool_h(true));
		}
		s = fv(r, K.vm, "VIFs");
		for (uint32_t i = 0; i < n_of(s); i++)
			if (db_get(K.vif, s->u.items[i]->u.s))
				db_txn_set(t, K.vif, s->u.items[i]->u.s,
					   api_field(K.vif, "currently_attached"), val_bool_h(true));
	}
	if (fill)
		fill(t, r, arg);
	refresh_locked(t, r, NULL, state, att, clear);
	db_unlock();
	int rc = db_txn_commit(t, err);
	ops_unlock();
	return rc;
}

/* Whether a VDI is in use follows its VBDs' attachment and operations:
 * recompute the allowed_operations of the VDIs of vm's VBDs (at the end of
 * every VM or device operation: vm_update_allowed, vm_op_end). */
static void vm_refresh_vdis(const char *vm)
{
	k();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	const struct val *vbds = r ? fv(r, K.vm, "VBDs") : NULL;
	uint32_t nv = n_of(vbds);
	char (*vdis)[DB_REF_MAX] = util_calloc(nv + 1, sizeof(*vdis));
	const char **refs = util_calloc(nv + 1, sizeof(*refs));
	int n = 0;
	for (uint32_t i = 0; i < nv; i++) {
		const struct db_row *b = db_get(K.vbd, vbds->u.items[i]->u.s);
		if (b && !is_null(fs(b, K.vbd, "VDI"))) {
			snprintf(vdis[n], DB_REF_MAX, "%s", fs(b, K.vbd, "VDI"));
			refs[n] = vdis[n];
			n++;
		}
	}
	db_unlock();
	if (n)
		storage_vdis_refresh_allowed(refs, n);
	free(refs);
	free(vdis);
}

void vm_start(void)
{
	k();
	/* operations a crash interrupted: their tasks are gone */
	struct db_txn *t = db_txn_new();
	db_rdlock();
	for (struct db_row *r = db_next(K.vm, NULL); r; r = db_next(K.vm, r))
		if (n_of(fv(r, K.vm, "current_operations")))
			db_txn_set(t, K.vm, r->ref, api_field(K.vm, "current_operations"),
				   val_struct_h(0));
	int cls[2] = {K.vbd, K.vif};
	for (int i = 0; i < 2; i++)
		for (struct db_row *r = db_next(cls[i], NULL); r; r = db_next(cls[i], r))
			if (n_of(fv(r, cls[i], "current_operations")))
				db_txn_set(t, cls[i], r->ref, api_field(cls[i], "current_operations"),
					   val_struct_h(0));
	db_unlock();
	commit_quiet(t, "clearing current_operations", "");
	t = db_txn_new();
	db_rdlock();
	for (struct db_row *r = db_next(K.vm, NULL); r; r = db_next(K.vm, r))
		refresh_locked(t, r, NULL, NULL, -1, false);
	db_unlock();
	commit_quiet(t, "allowed_operations", "of VMs");
}

/* ---- messages: the operation machinery ---- */

static bool vm_exists(struct api_ctx *c, const char *vm)
{
	db_rdlock();
	bool ok = db_get(K.vm, vm) != NULL;
	db_unlock();
	if (!ok)
		api_fail(c, "HANDLE_INVALID", 2, "VM", vm);
	return ok;
}

static void vm_assert_operation_valid(struct api_ctx *c)
{
	k();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, api_str(c, 1));
	if (!r)
		api_fail(c, "HANDLE_INVALID", 2, "VM", api_str(c, 1));
	else
		vm_check(r, fv(r, K.vm, "current_operations"), NULL, api_str(c, 2), false, &c->err);
	db_unlock();
	if (!api_failed(c))
		enc_void(c->out);
}

static void vm_update_allowed_operations(struct api_ctx *c)
{
	k();
	if (!vm_exists(c, api_str(c, 1)))
		return;
	vm_update_allowed(api_str(c, 1));
	enc_void(c->out);
}

/* ---- VM.create / VM.destroy ---- */

static void vm_create(struct api_ctx *c)
{
	k();
	struct val **cols = api_cols_from_record(c, K.vm, c->params[1]);
	if (!cols)
		return;
	char ref[DB_REF_MAX], mref[DB_REF_MAX], muuid[40];
	db_ref_new(ref);
	db_ref_new(mref);
	db_uuid_new(muuid);
	struct val **mcols = api_row_new(K.vmm);
	api_row_set(K.vmm, mcols, "uuid", val_cstr_h(muuid));
	api_row_set(K.vmm, mcols, "last_updated", val_datetime_h(util_now()));
	api_row_set(K.vm, cols, "metrics", val_cstr_h(mref));
	/* Halted, unless suspended with everything a resume needs */
	int fps = api_field(K.vm, "power_state");
	bool susp = cols[fps] && cols[fps]->kind == V_STR && strcmp(cols[fps]->u.s, "Suspended") == 0;
	const struct val *sv = cols[api_field(K.vm, "suspend_VDI")];
	const struct val *lbr = cols[api_field(K.vm, "last_booted_record")];
	const struct val *cpu = cols[api_field(K.vm, "last_boot_CPU_flags")];
	if (!(susp && sv && sv->kind == V_STR && !is_null(sv->u.s) && lbr && lbr->kind == V_STR &&
	      lbr->n && n_of(cpu)))
		api_row_set(K.vm, cols, "power_state", val_cstr_h("Halted"));
	int foc = api_field(K.vm, "other_config");
	if (!map_get(cols[foc], "mac_seed")) {
		char seed[40];
		db_uuid_new(seed);
		struct val *oc = ops_map_with(cols[foc], "mac_seed", seed);
		api_row_set(K.vm, cols, "other_config", oc);
	}
	int fdt = api_field(K.vm, "domain_type");
	if (!cols[fdt] || (cols[fdt]->kind == V_STR && (!cols[fdt]->n ||
							 strcmp(cols[fdt]->u.s, "unspecified") == 0))) {
		const struct val *hbp = cols[api_field(K.vm, "HVM_boot_policy")];
		api_row_set(K.vm, cols, "domain_type",
			    val_cstr_h(hbp && hbp->kind == V_STR && hbp->n ? "hvm" : "pv"));
	}
	/* allowed_operations and memory_overhead from the new row */
	struct db_row *tmp = tmp_row(K.vm, ref, cols);
	db_rdlock();
	struct val *allowed = vm_allowed(tmp, NULL, NULL);
	int64_t ovh = vm_overhead_row(tmp);
	db_unlock();
	free(tmp);
	api_row_set(K.vm, cols, "allowed_operations", allowed);
	api_row_set(K.vm, cols, "memory_overhead", val_int_h(ovh));
	struct db_txn *t = db_txn_new();
	db_txn_insert(t, K.vmm, mref, mcols);
	db_txn_insert(t, K.vm, ref, cols);
	free(mcols);
	free(cols);
	if (api_commit(c, t) == 0)
		enc_cstr(c->out, ref);
}

/* The VM's rows and its own dependents (metrics, VBDs, VIFs, consoles) into
 * t; VDIs stay.  Read lock held. */
static void vm_delete_txn(struct db_txn *t, const struct db_row *r)
{
	static const char *const owned[][2] = {{"metrics", "VM_metrics"},
					       {"guest_metrics", "VM_guest_metrics"}};
	for (size_t i = 0; i < 2; i++) {
		int cls = idl_class_find(owned[i][1]);
		const char *o = fs(r, K.vm, owned[i][0]);
		if (cls >= 0 && db_get(cls, o))
			db_txn_delete(t, cls, o);
	}
	static const char *const sets[][3] = {{"VBDs", "VBD", "metrics"},
					      {"VIFs", "VIF", "metrics"},
					      {"consoles", "console", NULL},
					      {"VTPMs", "VTPM", NULL}};
	for (size_t i = 0; i < 4; i++) {
		int cls = idl_class_find(sets[i][1]);
		const struct val *s = fv(r, K.vm, sets[i][0]);
		for (uint32_t j = 0; cls >= 0 && j < n_of(s); j++) {
			const struct db_row *d = db_get(cls, s->u.items[j]->u.s);
			if (!d)
				continue;
			if (sets[i][2]) {
				int mc = cls == K.vbd ? K.vbdm : K.vifm;
				const char *m = fs(d, cls, "metrics");
				if (mc >= 0 && db_get(mc, m))
					db_txn_delete(t, mc, m);
			}
			db_txn_delete(t, cls, d->ref);
		}
	}
	/* children are re-parented to this VM's parent */
	const struct val *ch = fv(r, K.vm, "children");
	for (uint32_t j = 0; j < n_of(ch); j++)
		if (db_get(K.vm, ch->u.items[j]->u.s))
			db_txn_set(t, K.vm, ch->u.items[j]->u.s, api_field(K.vm, "parent"),
				   val_cstr_h(fs(r, K.vm, "parent")[0] ? fs(r, K.vm, "parent") : NULLREF));
	db_txn_delete(t, K.vm, r->ref);
}

static void vm_destroy(struct api_ctx *c)
{
	k();
	const char *ref = api_str(c, 1);
	db_rdlock();
	struct db_row *r = db_get(K.vm, ref);
	bool def = r && (fb(r, K.vm, "is_default_template") ||
			 truthy(map_get(fv(r, K.vm, "other_config"), "default_template")));
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "VM", ref);
		return;
	}
	if (def) {
		api_fail(c, "VM_CANNOT_DELETE_DEFAULT_TEMPLATE", 1, ref);
		return;
	}
	const char *key = ops_key(c->a, c->task);
	if (vm_op_begin(ref, key, "destroy", c->task, &c->err) < 0)
		return;
	struct db_txn *t = db_txn_new();
	db_rdlock();
	r = db_get(K.vm, ref);
	if (r)
		vm_delete_txn(t, r);
	db_unlock();
	if (!r) {
		db_txn_free(t);
		api_fail(c, "HANDLE_INVALID", 2, "VM", ref);
		return;
	}
	if (api_commit(c, t) == 0)
		enc_void(c->out);
	else
		vm_op_end(ref, key);
}

/* ---- device numbers (the original's Device_number) ---- */

enum bus { BUS_XEN, BUS_SCSI, BUS_FLOPPY, BUS_IDE };
struct devnum {
	int bus, disk, part;
};

static bool dev_make(int bus, long disk, long part, struct devnum *d)
{
	static const long maxd[] = {(1L << 20) - 1, 15, 2, 19}, maxp[] = {15, 15, 0, 63};
	if (disk < 0 || disk > maxd[bus] || part < 0 || part > maxp[bus])
		return false;
	*d = (struct devnum){bus, (int)disk, (int)part};
	return true;
}

static bool dev_of_disk_number(bool hvm, long n, struct devnum *d)
{
	return dev_make(hvm && n < 4 ? BUS_IDE : BUS_XEN, n, 0, d);
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* "abc12" -> base-26 letters and a partition number */
static bool b26_int(const char *s, long *disk, long *part)
{
	long v = 0;
	const char *p = s;
	for (; *p >= 'a' && *p <= 'z'; p++) {
		v = v * 26 + (*p - 'a' + 1);
		if (v > (1L << 22))
			return false;
	}
	if (p == s)
		return false;
	*disk = v - 1;
	*part = 0;
	if (!*p)
		return true;
	if (!all_digits(p) || strlen(p) > 6)
		return false;
	*part = atol(p);
	return true;
}

static bool dev_of_string(const char *s, bool hvm, struct devnum *d)
{
	if (all_digits(s) && strlen(s) < 10)
		if (dev_of_disk_number(hvm, atol(s), d))
			return true;
	long disk, part;
	static const struct {
		const char *prefix;
		int bus;
	} pre[] = {{"xvd", BUS_XEN}, {"sd", BUS_SCSI}, {"fd", BUS_FLOPPY}, {"hd", BUS_IDE}};
	for (size_t i = 0; i < 4; i++) {
		size_t n = strlen(pre[i].prefix);
		if (strncmp(s, pre[i].prefix, n) == 0)
			return b26_int(s + n, &disk, &part) && dev_make(pre[i].bus, disk, part, d);
	}
	if (s[0] == 'd' && s[1]) {
		const char *p = s + 1, *q = strchr(p, 'p');
		char num[16];
		size_t n = q ? (size_t)(q - p) : strlen(p);
		if (n == 0 || n >= sizeof(num))
			return false;
		memcpy(num, p, n);
		num[n] = 0;
		if (!all_digits(num) || (q && !all_digits(q + 1)))
			return false;
		return dev_make(BUS_XEN, atol(num), q ? atol(q + 1) : 0, d);
	}
	return false;
}

/* The interpretations of a device string (as HVM and as PV); n of 2. */
static int dev_possible(const char *s, struct devnum out[2])
{
	int n = 0;
	if (dev_of_string(s, true, &out[n]))
		n++;
	if (dev_of_string(s, false, &out[n]))
		n++;
	return n;
}

/* Every device number used by the VM's VBDs (device and userdevice). */
static int used_devices(const struct db_row *vm, struct devnum *out, int max)
{
	int n = 0;
	const struct val *s = fv(vm, K.vm, "VBDs");
	for (uint32_t i = 0; i < n_of(s); i++) {
		const struct db_row *b = db_get(K.vbd, s->u.items[i]->u.s);
		const char *names[2] = {fs(b, K.vbd, "device"), fs(b, K.vbd, "userdevice")};
		for (int j = 0; b && j < 2; j++) {
			struct devnum d[2];
			int k2 = dev_possible(names[j], d);
			for (int x = 0; x < k2 && n < max; x++)
				out[n++] = d[x];
		}
	}
	return n;
}

static bool dev_in(const struct devnum *d, const struct devnum *l, int n)
{
	for (int i = 0; i < n; i++)
		if (l[i].bus == d->bus && l[i].disk == d->disk && l[i].part == d->part)
			return true;
	return false;
}

/* The free disk positions of a VM: 0..254 (0..255 for a PV control domain)
 * not used, as the original's allowed_VBD_devices for disks and CDs. */
static int free_vbd_positions(const struct db_row *vm, int *out)
{
	bool hvm = vm_hvm(vm);
	int max = !hvm && fb(vm, K.vm, "is_control_domain") ? 255 : 254, n = 0;
	struct devnum used[1024];
	int nu = used_devices(vm, used, 1024);
	for (int i = 0; i <= max; i++) {
		struct devnum d;
		if (dev_of_disk_number(hvm, i, &d) && !dev_in(&d, used, nu))
			out[n++] = i;
	}
	return n;
}

static void vm_get_allowed_vbd_devices(struct api_ctx *c)
{
	k();
	int pos[256], n = 0;
	db_rdlock();
	const struct db_row *r = db_get(K.vm, api_str(c, 1));
	if (r)
		n = free_vbd_positions(r, pos);
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "VM", api_str(c, 1));
		return;
	}
	enc_array_begin(c->out);
	for (int i = 0; i < n; i++) {
		char s[16];
		snprintf(s, sizeof(s), "%d", pos[i]);
		enc_cstr(c->out, s);
	}
	enc_array_end(c->out);
}

static void vm_get_allowed_vif_devices(struct api_ctx *c)
{
	k();
	bool used[16] = {0};
	db_rdlock();
	const struct db_row *r = db_get(K.vm, api_str(c, 1));
	const struct val *s = fv(r, K.vm, "VIFs");
	for (uint32_t i = 0; i < n_of(s); i++) {
		const char *d = fs(db_get(K.vif, s->u.items[i]->u.s), K.vif, "device");
		if (all_digits(d) && strlen(d) < 4 && atoi(d) < 16)
			used[atoi(d)] = true;
	}
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "VM", api_str(c, 1));
		return;
	}
	enc_array_begin(c->out);
	for (int i = 0; i < 16; i++) {
		char d[8];
		snprintf(d, sizeof(d), "%d", i);
		if (!used[i])
			enc_cstr(c->out, d);
	}
	enc_array_end(c->out);
}

/* ---- VBD ---- */

static pthread_mutex_t dev_lock = PTHREAD_MUTEX_INITIALIZER; /* unique devices */

static const char *col_s(int cls, struct val **cols, const char *f)
{
	const struct val *v = cols[api_field(cls, f)];
	return v && v->kind == V_STR ? v->u.s : "";
}
static bool col_b(int cls, struct val **cols, const char *f)
{
	const struct val *v = cols[api_field(cls, f)];
	return v && v->kind == V_BOOL && v->u.b;
}

/* The end of VBD.create and VIF.create (the read lock and dev_lock held,
 * cols checked and filled but for metrics and allowed_operations): the row
 * and its metrics row in one commit, then the VM's allowed_operations.
 * Releases both locks; takes cols. */
static int dev_insert(int cls, int mcls, dev_check_fn check, const char *const *all_ops,
		      struct val **cols, const char out[DB_REF_MAX], const char *vm, struct xerr *e)
{
	char mref[DB_REF_MAX], muuid[40];
	db_ref_new(mref);
	db_uuid_new(muuid);
	api_row_set(cls, cols, "metrics", val_cstr_h(mref));
	struct db_row *tmp = tmp_row(cls, out, cols);
	struct val *allowed = dev_allowed(check, all_ops, tmp, NULL, NULL, -1);
	free(tmp);
	api_row_set(cls, cols, "allowed_operations", allowed);
	struct val **mcols = api_row_new(mcls);
	api_row_set(mcls, mcols, "uuid", val_cstr_h(muuid));
	db_unlock();
	struct db_txn *t = db_txn_new();
	db_txn_insert(t, mcls, mref, mcols);
	db_txn_insert(t, cls, out, cols);
	free(mcols);
	free(cols);
	int rc = db_txn_commit(t, e);
	pthread_mutex_unlock(&dev_lock);
	if (rc == 0)
		vm_update_allowed(vm);
	return rc;
}

/* VBD.create or VIF.create refused: both locks released, cols freed. */
static int dev_refuse(int cls, struct val **cols)
{
	db_unlock();
	pthread_mutex_unlock(&dev_lock);
	api_cols_free(cls, cols);
	return -1;
}

/* The message: the record's columns, then create_cols (vbd_create_cols,
 * vif_create_cols). */
static void dev_create(struct api_ctx *c, int cls,
		       int (*create_cols)(struct val **cols, char out[DB_REF_MAX], struct xerr *e))
{
	struct val **cols = api_cols_from_record(c, cls, c->params[1]);
	if (!cols)
		return;
	char ref[DB_REF_MAX];
	if (create_cols(cols, ref, &c->err) == 0)
		enc_cstr(c->out, ref);
}

/* VBD.create's checks and row (xapi_vbd.ml); cols taken.  0 and the ref in
 * out, or -1 with e set. */
static int vbd_create_cols(struct val **cols, char out[DB_REF_MAX], struct xerr *e)
{
	const char *vm = col_s(K.vbd, cols, "VM"), *vdi = col_s(K.vbd, cols, "VDI");
	const char *type = col_s(K.vbd, cols, "type"), *mode = col_s(K.vbd, cols, "mode");
	bool empty = col_b(K.vbd, cols, "empty"), cd = strcmp(type, "CD") == 0;
	pthread_mutex_lock(&dev_lock);
	db_rdlock();
	const struct db_row *vr = db_get(K.vm, vm);
	const struct db_row *dr = db_get(K.vdi, vdi);
	char udev[64];
	snprintf(udev, sizeof(udev), "%s", col_s(K.vbd, cols, "userdevice"));
	if (!vr) {
		xerr_set(e, "HANDLE_INVALID", 2, "VM", vm);
		goto out;
	}
	if (!empty && !dr) {
		xerr_set(e, "HANDLE_INVALID", 2, "VDI", vdi);
		goto out;
	}
	bool susp = strcmp(fs(vr, K.vm, "power_state"), "Suspended") == 0;
	if (!empty) {
		const char *vt = fs(dr, K.vdi, "type");
		if (!IN(vt, "system", "user", "ephemeral", "suspend", "crashdump", "metadata", "rrd",
			"pvs_cache")) {
			xerr_set(e, "VDI_INCOMPATIBLE_TYPE", 2, vdi, vt);
			goto out;
		}
	}
	if (cd && strcmp(mode, "RO") != 0) {
		xerr_set(e, "VBD_CDS_MUST_BE_READONLY", 0);
		goto out;
	}
	if (!cd && empty) {
		xerr_set(e, "VBD_NOT_REMOVABLE_MEDIA", 1, "in constructor");
		goto out;
	}
	if (strcmp(mode, "RW") == 0 && dr && fb(dr, K.vdi, "read_only")) {
		xerr_set(e, "VDI_READONLY", 1, vdi);
		goto out;
	}
	const struct val *vcur = fv(vr, K.vm, "current_operations");
	for (uint32_t i = 0; i < n_of(vcur); i++) {
		const struct val *v = vcur->u.members[i].v;
		if (v && v->kind == V_STR && IN(v->u.s, "migrate_send", "pool_migrate")) {
			xerr_set(e, "OTHER_OPERATION_IN_PROGRESS", 4, "VM", vm, v->u.s,
				 vcur->u.members[i].key);
			goto out;
		}
	}
	if (strcmp(type, "Floppy") == 0 && !vm_hvm(vr)) {
		xerr_set(e, "NOT_IMPLEMENTED", 1, "VBD of type 'floppy' is not supported on PV domain");
		goto out;
	}
	struct devnum tmpd;
	bool valid = strcmp(udev, "autodetect") == 0 || dev_of_string(udev, false, &tmpd) ||
		     (strcmp(type, "Floppy") != 0 && all_digits(udev));
	if (!valid) {
		xerr_set(e, "INVALID_DEVICE", 1, udev);
		goto out;
	}
	if (strcmp(udev, "autodetect") == 0) {
		int pos[256];
		int n = free_vbd_positions(vr, pos);
		if (n == 0) {
			xerr_set(e, "INVALID_DEVICE", 1, udev);
			goto out;
		}
		snprintf(udev, sizeof(udev), "%d", pos[0]);
	}
	struct devnum mine[2], used[1024];
	int nm = dev_possible(udev, mine), nu = used_devices(vr, used, 1024);
	for (int i = 0; i < nm; i++)
		if (dev_in(&mine[i], used, nu)) {
			xerr_set(e, "DEVICE_ALREADY_EXISTS", 1, udev);
			goto out;
		}
	/* the row */
	db_ref_new(out);
	api_row_set(K.vbd, cols, "userdevice", val_cstr_h(udev));
	if (!susp) {
		api_row_set(K.vbd, cols, "device", val_cstr_h(""));
		api_row_set(K.vbd, cols, "currently_attached", val_bool_h(false));
	}
	const char *bk = dr ? map_get(fv(dr, K.vdi, "sm_config"), "backend-kind") : NULL;
	if (bk)
		api_row_set(K.vbd, cols, "other_config",
			    ops_map_with(cols[api_field(K.vbd, "other_config")], "backend-kind", bk));
	return dev_insert(K.vbd, K.vbdm, vbd_check, vbd_all_ops, cols, out, vm, e);
out:
	return dev_refuse(K.vbd, cols);
}

static void vbd_create(struct api_ctx *c)
{
	k();
	dev_create(c, K.vbd, vbd_create_cols);
}

/* VBD.destroy and VIF.destroy: refused while attached to a live VM (a VBD:
 * any VM that is not Halted; a VIF: a Running one, as the original), else
 * the row and its metrics go. */
static void dev_destroy(struct api_ctx *c, int cls, int mcls, const char *name, bool vbd)
{
	k();
	const char *ref = api_str(c, 1);
	db_rdlock();
	const struct db_row *d = db_get(cls, ref);
	char vm[DB_REF_MAX] = "", m[DB_REF_MAX] = "";
	bool live = false;
	if (d) {
		snprintf(vm, sizeof(vm), "%s", fs(d, cls, "VM"));
		snprintf(m, sizeof(m), "%s", fs(d, cls, "metrics"));
		const char *ps = fs(db_get(K.vm, vm), K.vm, "power_state");
		live = fb(d, cls, "currently_attached") &&
		       (vbd ? strcmp(ps, "Halted") != 0 : strcmp(ps, "Running") == 0);
	}
	bool has_m = d && db_get(mcls, m);
	db_unlock();
	if (!d) {
		api_fail(c, "HANDLE_INVALID", 2, name, ref);
		return;
	}
	if (live) {
		api_fail(c, "OPERATION_NOT_ALLOWED", 1,
			 vbd ? "VBD currently attached to a running VM"
			     : "VIF currently attached to a running VM");
		return;
	}
	struct db_txn *t = db_txn_new();
	if (has_m)
		db_txn_delete(t, mcls, m);
	db_txn_delete(t, cls, ref);
	if (api_commit(c, t) == 0) {
		vm_update_allowed(vm);
		enc_void(c->out);
	}
}

static void vbd_destroy(struct api_ctx *c)
{
	k();
	dev_destroy(c, K.vbd, K.vbdm, "VBD", true);
}

/* ---- VIF ---- */

/* The original's gen_mac: the seed hashed 2*device+1 times with MD5, then
 * bytes 0-3 of that and 1-2 of its MD5; locally administered, unicast. */
static void gen_mac(int dev, const char *seed, char out[18])
{
	unsigned char h[EVP_MAX_MD_SIZE], h2[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	EVP_Digest(seed, strlen(seed), h, &n, EVP_md5(), NULL);
	for (int i = 0; i < dev * 2; i++)
		EVP_Digest(h, 16, h, &n, EVP_md5(), NULL);
	EVP_Digest(h, 16, h2, &n, EVP_md5(), NULL);
	unsigned b0 = (h[0] | 0x2u) & ~0x1u;
	snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b0, h[1], h[2], h[3], h2[1], h2[2]);
}

static bool valid_mac(const char *m)
{
	if (strlen(m) != 17)
		return false;
	for (int i = 0; i < 17; i++) {
		char ch = m[i];
		if (i % 3 == 2) {
			if (ch != ':' && ch != '-')
				return false;
		} else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
			     (ch >= 'A' && ch <= 'F'))) {
			return false;
		}
	}
	return true;
}

/* VIF.create's checks and row (xapi_vif_helpers.ml); cols taken. */
static int vif_create_cols(struct val **cols, char out[DB_REF_MAX], struct xerr *e)
{
	const char *vm = col_s(K.vif, cols, "VM"), *net = col_s(K.vif, cols, "network");
	char dev[32], mac[64];
	snprintf(dev, sizeof(dev), "%s", col_s(K.vif, cols, "device"));
	snprintf(mac, sizeof(mac), "%s", col_s(K.vif, cols, "MAC"));
	pthread_mutex_lock(&dev_lock);
	db_rdlock();
	const struct db_row *vr = db_get(K.vm, vm);
	const struct db_row *nr = db_get(K.net, net);
	if (!vr) {
		xerr_set(e, "HANDLE_INVALID", 2, "VM", vm);
		goto out;
	}
	if (!nr) {
		xerr_set(e, "HANDLE_INVALID", 2, "network", net);
		goto out;
	}
	if (!all_digits(dev) || strlen(dev) > 9) {
		xerr_set(e, "INVALID_DEVICE", 1, dev);
		goto out;
	}
	const char *seed = map_get(fv(vr, K.vm, "other_config"), "mac_seed");
	bool autogen = false;
	if (seed && !mac[0]) {
		gen_mac(atoi(dev), seed, mac);
		autogen = true;
	}
	if (!valid_mac(mac)) {
		xerr_set(e, "MAC_INVALID", 1, mac);
		goto out;
	}
	const struct val *vifs = fv(vr, K.vm, "VIFs");
	for (uint32_t i = 0; i < n_of(vifs); i++) {
		const char *d = fs(db_get(K.vif, vifs->u.items[i]->u.s), K.vif, "device");
		if (all_digits(d) && atol(d) == atol(dev)) {
			xerr_set(e, "DEVICE_ALREADY_EXISTS", 1, dev);
			goto out;
		}
	}
	bool susp = strcmp(fs(vr, K.vm, "power_state"), "Suspended") == 0;
	db_ref_new(out);
	api_row_set(K.vif, cols, "MAC", val_cstr_h(mac));
	api_row_set(K.vif, cols, "MAC_autogenerated", val_bool_h(autogen));
	if (!susp)
		api_row_set(K.vif, cols, "currently_attached", val_bool_h(false));
	/* MTU 0 (not given): the network's */
	const struct val *mtu = cols[api_field(K.vif, "MTU")];
	if (!mtu || (mtu->kind == V_INT && mtu->u.i == 0))
		api_row_set(K.vif, cols, "MTU", val_int_h(fi(nr, K.net, "MTU") ? fi(nr, K.net, "MTU")
										: 1500));
	return dev_insert(K.vif, K.vifm, vif_check, vif_all_ops, cols, out, vm, e);
out:
	return dev_refuse(K.vif, cols);
}

static void vif_create(struct api_ctx *c)
{
	k();
	dev_create(c, K.vif, vif_create_cols);
}

static void vif_destroy(struct api_ctx *c)
{
	k();
	dev_destroy(c, K.vif, K.vifm, "VIF", false);
}

/* ---- setters ---- */

static int64_t row_i(const char *vm, const char *f)
{
	db_rdlock();
	int64_t v = fi(db_get(K.vm, vm), K.vm, f);
	db_unlock();
	return v;
}

/* Memory limits (smin, dmin, dmax, smax; -1 = keep), checked as the
 * original's assert_valid_for_current_context, in an operation op. */
static void set_memory(struct api_ctx *c, const char *op, int64_t smin, int64_t dmin, int64_t dmax,
		       int64_t smax)
{
	k();
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, op, {
		db_rdlock();
		const struct db_row *r = db_get(K.vm, vm);
		int64_t a = smin >= 0 ? smin : fi(r, K.vm, "memory_static_min");
		int64_t b = dmin >= 0 ? dmin : fi(r, K.vm, "memory_dynamic_min");
		int64_t d = dmax >= 0 ? dmax : fi(r, K.vm, "memory_dynamic_max");
		int64_t s = smax >= 0 ? smax : fi(r, K.vm, "memory_static_max");
		bool pin = fb(r, K.vm, "is_control_domain") || platform_true(r, "nested-virt");
		const char *why = fb(r, K.vm, "is_control_domain") ? "control domain" : "nested virt";
		db_unlock();
		if (pin && !(a <= b && b == d && d == s))
			api_fail(c, "MEMORY_CONSTRAINT_VIOLATION_MAXPIN", 1, why);
		else if (!(a <= b && b <= d && d <= s))
			api_fail(c, "MEMORY_CONSTRAINT_VIOLATION_ORDER", 0);
		if (!api_failed(c)) {
			struct db_txn *t = db_txn_new();
			db_txn_set(t, K.vm, vm, api_field(K.vm, "memory_static_min"), val_int_h(a));
			db_txn_set(t, K.vm, vm, api_field(K.vm, "memory_dynamic_min"), val_int_h(b));
			db_txn_set(t, K.vm, vm, api_field(K.vm, "memory_dynamic_max"), val_int_h(d));
			db_txn_set(t, K.vm, vm, api_field(K.vm, "memory_static_max"), val_int_h(s));
			if (dmin >= 0)
				db_txn_set(t, K.vm, vm, api_field(K.vm, "memory_target"), val_int_h(b));
			db_rdlock();
			const struct db_row *r2 = db_get(K.vm, vm);
			int64_t ovh = vm_overhead_bytes(s, (int)fi(r2, K.vm, "VCPUs_max"),
							fd(r2, K.vm, "HVM_shadow_multiplier") > 0
								? fd(r2, K.vm, "HVM_shadow_multiplier") : 1.0,
							vm_hvm(r2));
			db_unlock();
			db_txn_set(t, K.vm, vm, api_field(K.vm, "memory_overhead"), val_int_h(ovh));
			/* a running VM's balloon follows the new range (the
			 * original's Xapi_xenops.set_memory_dynamic_range) */
			if (api_commit(c, t) == 0 && vm_power_balloon(vm, &c->err) == 0)
				enc_void(c->out);
		}
	});
}

static void vm_set_memory_static_range(struct api_ctx *c)
{
	set_memory(c, "changing_static_range", api_int(c, 2), -1, -1, api_int(c, 3));
}
static void vm_set_memory_static_min(struct api_ctx *c)
{
	set_memory(c, "changing_static_range", api_int(c, 2), -1, -1, -1);
}
static void vm_set_memory_static_max(struct api_ctx *c)
{
	set_memory(c, "changing_static_range", -1, -1, -1, api_int(c, 2));
}
static void vm_set_memory_dynamic_range(struct api_ctx *c)
{
	set_memory(c, "changing_dynamic_range", -1, api_int(c, 2), api_int(c, 3), -1);
}
static void vm_set_memory_dynamic_min(struct api_ctx *c)
{
	set_memory(c, "changing_dynamic_range", -1, api_int(c, 2), -1, -1);
}
static void vm_set_memory_dynamic_max(struct api_ctx *c)
{
	set_memory(c, "changing_dynamic_range", -1, -1, api_int(c, 2), -1);
}
static void vm_set_memory_limits(struct api_ctx *c)
{
	set_memory(c, "changing_memory_limits", api_int(c, 2), api_int(c, 4), api_int(c, 5),
		   api_int(c, 3));
}
static void vm_set_memory_all(struct api_ctx *c)
{
	int64_t v = api_int(c, 2);
	set_memory(c, "changing_memory_limits", -1, v, v, v);
}

static void vcpus_invalid(struct api_ctx *c, int64_t v)
{
	char s[32];
	snprintf(s, sizeof(s), "%" PRId64, v);
	api_fail(c, "INVALID_VALUE", 2, "VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max",
		 s);
}

static void vm_set_vcpus_max(struct api_ctx *c)
{
	k();
	const char *vm = api_str(c, 1);
	int64_t v = api_int(c, 2);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "changing_VCPUs", {
		if (v < 1 || v < row_i(vm, "VCPUs_at_startup")) {
			vcpus_invalid(c, v);
		} else {
			db_rdlock();
			const struct db_row *r = db_get(K.vm, vm);
			int64_t ovh = vm_overhead_bytes(fi(r, K.vm, "memory_static_max"), (int)v,
							fd(r, K.vm, "HVM_shadow_multiplier") > 0
								? fd(r, K.vm, "HVM_shadow_multiplier") : 1.0,
							vm_hvm(r));
			bool reboot = fb(r, K.vm, "is_control_domain") &&
				      strcmp(fs(r, K.vm, "power_state"), "Running") == 0;
			db_unlock();
			struct db_txn *t = db_txn_new();
			db_txn_set(t, K.vm, vm, api_field(K.vm, "VCPUs_max"), val_int_h(v));
			db_txn_set(t, K.vm, vm, api_field(K.vm, "memory_overhead"), val_int_h(ovh));
			if (reboot)
				db_txn_set(t, K.vm, vm, api_field(K.vm, "requires_reboot"),
					   val_bool_h(true));
			if (api_commit(c, t) == 0)
				enc_void(c->out);
		}
	});
}

static void vm_set_vcpus_at_startup(struct api_ctx *c)
{
	k();
	const char *vm = api_str(c, 1);
	int64_t v = api_int(c, 2);
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	bool d0 = r && is_dom0(r);
	int64_t max = fi(r, K.vm, "VCPUs_max");
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "VM", vm);
		return;
	}
	if (d0) {
		api_fail(c, "OPERATION_NOT_ALLOWED", 1, "set_VCPUs_at_startup is not allowed on dom0");
		return;
	}
	if (v < 1 || v > max) {
		vcpus_invalid(c, v);
		return;
	}
	struct db_txn *t = db_txn_new();
	db_txn_set(t, K.vm, vm, api_field(K.vm, "VCPUs_at_startup"), val_int_h(v));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void vm_set_is_a_template(struct api_ctx *c)
{
	k();
	const char *vm = api_str(c, 1);
	bool v = api_bool(c, 2);
	if (!vm_exists(c, vm))
		return;
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	bool cur = fb(r, K.vm, "is_a_template");
	db_unlock();
	/* false is allowed on a snapshot too: only true is an operation */
	if (v == cur) {
		enc_void(c->out);
		return;
	}
	if (v) {
		WITH_VM_OP(c, vm, "make_into_template", {
			struct db_txn *t = db_txn_new();
			db_txn_set(t, K.vm, vm, api_field(K.vm, "is_a_template"), val_bool_h(true));
			db_txn_set(t, K.vm, vm, api_field(K.vm, "ha_always_run"), val_bool_h(false));
			if (api_commit(c, t) == 0)
				enc_void(c->out);
		});
		return;
	}
	/* as the original: clearing the flag is the VM's "install time" */
	struct db_txn *t = db_txn_new();
	db_txn_set(t, K.vm, vm, api_field(K.vm, "is_a_template"), val_bool_h(false));
	db_rdlock();
	r = db_get(K.vm, vm);
	const char *m = r ? fs(r, K.vm, "metrics") : "";
	if (db_get(K.vmm, m))
		db_txn_set(t, K.vmm, m, api_field(K.vmm, "install_time"), val_datetime_h(util_now()));
	db_unlock();
	if (api_commit(c, t) == 0) {
		vm_update_allowed(vm);
		enc_void(c->out);
	}
}

static void vm_set_is_default_template(struct api_ctx *c)
{
	k();
	struct db_txn *t = db_txn_new();
	db_txn_set(t, K.vm, api_str(c, 1), api_field(K.vm, "is_default_template"),
		   val_bool_h(api_bool(c, 2)));
	if (api_commit(c, t) == 0) {
		vm_update_allowed(api_str(c, 1));
		enc_void(c->out);
	}
}


/* ---- copies of rows (clone, copy, snapshot, revert) ---- */

/* A new row of class cls with every column of r copied, a fresh uuid and
 * ref (in out).  The caller overrides what differs. */
static struct val **row_dup(int cls, const struct db_row *r, char out[DB_REF_MAX])
{
	struct val **cols = api_row_new(cls);
	for (int i = 0; i < idl_classes[cls].nfields; i++)
		if (r->cols[i])
			cols[i] = val_dup_h(r->cols[i]);
	char uuid[40];
	db_uuid_new(uuid);
	db_ref_new(out);
	api_row_set(cls, cols, "uuid", val_cstr_h(uuid));
	return cols;
}

/* Into t: a copy of row src of class cls (VM_metrics, VM_guest_metrics);
 * out = its ref, or NULLREF when src is no row. */
static void owned_copy_txn(struct db_txn *t, int cls, const char *src, char out[DB_REF_MAX])
{
	const struct db_row *r = is_null(src) ? NULL : db_get(cls, src);
	if (!r) {
		snprintf(out, DB_REF_MAX, "%s", NULLREF);
		return;
	}
	struct val **cols = row_dup(cls, r, out);
	db_txn_insert(t, cls, out, cols);
	free(cols);
}

/* Into t: a copy of VBD b for VM vm on VDI vdi (NULL/NULLREF: empty), with
 * fresh metrics, as the original's Xapi_vbd_helpers.copy; owner: add
 * other_config:owner="" to disks that have no owner key (clones own their
 * disks).  Read lock held. */
static void vbd_copy_txn(struct db_txn *t, const struct db_row *b, const char *vm, const char *vdi,
			 bool owner)
{
	char ref[DB_REF_MAX], mref[DB_REF_MAX], muuid[40];
	struct val **cols = row_dup(K.vbd, b, ref);
	bool empty = fb(b, K.vbd, "empty") || is_null(vdi);
	api_row_set(K.vbd, cols, "VM", val_cstr_h(vm));
	api_row_set(K.vbd, cols, "VDI", val_cstr_h(empty ? NULLREF : vdi));
	api_row_set(K.vbd, cols, "empty", val_bool_h(empty));
	api_row_set(K.vbd, cols, "reserved", val_bool_h(false));
	api_row_set(K.vbd, cols, "current_operations", val_struct_h(0));
	api_row_set(K.vbd, cols, "allowed_operations", val_array_h(0));
	const struct val *oc = fv(b, K.vbd, "other_config");
	if (owner && strcmp(fs(b, K.vbd, "type"), "Disk") == 0 && !map_get(oc, "owner"))
		api_row_set(K.vbd, cols, "other_config", ops_map_with(oc, "owner", ""));
	db_ref_new(mref);
	db_uuid_new(muuid);
	struct val **mcols = api_row_new(K.vbdm);
	api_row_set(K.vbdm, mcols, "uuid", val_cstr_h(muuid));
	api_row_set(K.vbd, cols, "metrics", val_cstr_h(mref));
	db_txn_insert(t, K.vbdm, mref, mcols);
	db_txn_insert(t, K.vbd, ref, cols);
	free(mcols);
	free(cols);
}

/* VIFs of VM src copied onto VM dst through VIF.create's checks, as the
 * original's Xapi_vif_helpers.copy: the MAC kept (preserve) or generated
 * from dst's mac_seed.  0 or -1 with e set. */
static int vifs_copy(const char *src, const char *dst, bool preserve, struct xerr *e)
{
	db_rdlock();
	const struct val *s = fv(db_get(K.vm, src), K.vm, "VIFs");
	uint32_t n = n_of(s);
	char (*refs)[DB_REF_MAX] = util_calloc(n ? n : 1, DB_REF_MAX);
	for (uint32_t i = 0; i < n; i++)
		snprintf(refs[i], DB_REF_MAX, "%s", s->u.items[i]->u.s);
	db_unlock();
	int rc = 0;
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		db_rdlock();
		const struct db_row *f = db_get(K.vif, refs[i]);
		struct val **cols = NULL;
		char ref[DB_REF_MAX];
		if (f) {
			cols = row_dup(K.vif, f, ref);
			api_row_set(K.vif, cols, "VM", val_cstr_h(dst));
			if (!preserve)
				api_row_set(K.vif, cols, "MAC", val_cstr_h(""));
			api_row_set(K.vif, cols, "currently_attached", val_bool_h(false));
			api_row_set(K.vif, cols, "current_operations", val_struct_h(0));
			api_row_set(K.vif, cols, "allowed_operations", val_array_h(0));
		}
		db_unlock();
		if (cols)
			rc = vif_create_cols(cols, ref, e);
	}
	free(refs);
	return rc;
}

/* The fields a clone, copy or snapshot takes from its source (the
 * original's copy_vm_record) and a revert gives back to the VM. */
static const char *const vm_kept_fields[] = {
	"name_description", "user_version", "memory_overhead", "memory_target",
	"memory_static_max", "memory_dynamic_max", "memory_dynamic_min", "memory_static_min",
	"VCPUs_max", "VCPUs_at_startup", "VCPUs_params", "actions_after_softreboot",
	"actions_after_shutdown", "actions_after_reboot", "actions_after_crash",
	"HVM_boot_policy", "HVM_boot_params", "HVM_shadow_multiplier", "platform", "PV_kernel",
	"PV_ramdisk", "PV_args", "PV_bootloader", "PV_bootloader_args", "PV_legacy_args",
	"PCI_bus", "last_boot_CPU_flags", "is_control_domain", "last_booted_record",
	"recommendations", "xenstore_data", "ha_restart_priority", "bios_strings",
	"hardware_platform_version", "has_vendor_device", "reference_label", "domain_type",
	"NVRAM", NULL};

static void set_kept(struct db_txn *t, const char *dst, const struct db_row *src)
{
	for (const char *const *f = vm_kept_fields; *f; f++) {
		const struct val *v = fv(src, K.vm, *f);
		db_txn_set(t, K.vm, dst, api_field(K.vm, *f), val_dup_h(v ? v : &val_nil));
	}
}

enum disk_op { OP_CLONE, OP_COPY, OP_SNAPSHOT, OP_CHECKPOINT };
static const char *const disk_op_names[] = {"clone", "copy", "snapshot", "checkpoint"};

/* Snapshots and checkpoints make snapshot VMs from snapshots of the disks. */
static bool snap_op(enum disk_op op)
{
	return op == OP_SNAPSHOT || op == OP_CHECKPOINT;
}

/* One disk of the VM being copied: its VBD, the source VDI and the new one
 * (CDs keep theirs, empty drives have none). */
struct cdisk {
	char vbd[DB_REF_MAX], src[DB_REF_MAX], vdi[DB_REF_MAX];
	bool copy;    /* a new VDI is made (not empty, not a CD) */
	bool created; /* ... and exists: delete it on failure */
};

static bool in_refs(const struct val *set, const char *ref)
{
	for (uint32_t i = 0; i < n_of(set); i++)
		if (set->u.items[i] && set->u.items[i]->kind == V_STR &&
		    strcmp(set->u.items[i]->u.s, ref) == 0)
			return true;
	return false;
}

/* The VBDs of vm (all of type type_only when not NULL), skipping those on
 * the VDIs in ignore.  Read lock held; *out calloc'd. */
static int disks_of(const struct db_row *vm, const struct val *ignore, const char *type_only,
		    struct cdisk **out)
{
	const struct val *s = fv(vm, K.vm, "VBDs");
	struct cdisk *d = util_calloc(n_of(s) + 1, sizeof(*d));
	int n = 0;
	for (uint32_t i = 0; i < n_of(s); i++) {
		const struct db_row *b = db_get(K.vbd, s->u.items[i]->u.s);
		if (!b || (ignore && in_refs(ignore, fs(b, K.vbd, "VDI"))))
			continue;
		bool cd = strcmp(fs(b, K.vbd, "type"), "CD") == 0;
		if (type_only && strcmp(fs(b, K.vbd, "type"), type_only) != 0)
			continue;
		bool empty = fb(b, K.vbd, "empty") || is_null(fs(b, K.vbd, "VDI"));
		snprintf(d[n].vbd, DB_REF_MAX, "%s", b->ref);
		snprintf(d[n].src, DB_REF_MAX, "%s", empty ? NULLREF : fs(b, K.vbd, "VDI"));
		snprintf(d[n].vdi, DB_REF_MAX, "%s", d[n].src);
		d[n].copy = !empty && !cd;
		n++;
	}
	*out = d;
	return n;
}

static void disks_delete(struct cdisk *d, int n, const char *task)
{
	for (int i = 0; i < n; i++) {
		if (!d[i].created)
			continue;
		struct xerr e = {0};
		if (storage_vdi_destroy(d[i].vdi, task, &e) < 0)
			log_warn("cleaning up VDI %s: %s", d[i].vdi, e.code);
		xerr_clear(&e);
		d[i].created = false;
	}
}

/* One VDI through VDI.clone / VDI.copy (to sr, NULL: the VDI's own) /
 * VDI.snapshot. */
static int disk_do(enum disk_op op, const char *vdi, const char *sr, const char *task,
		   char out[DB_REF_MAX], struct xerr *e)
{
	if (op == OP_CLONE)
		return storage_vdi_clone(vdi, task, out, e);
	if (snap_op(op))
		return storage_vdi_snapshot(vdi, task, out, e);
	char own[DB_REF_MAX];
	if (is_null(sr)) {
		db_rdlock();
		snprintf(own, sizeof(own), "%s", fs(db_get(K.vdi, vdi), K.vdi, "SR"));
		db_unlock();
		sr = own;
	}
	return storage_vdi_copy(vdi, sr, task, out, e);
}

/* The original's safe_clone_disks: every disk copied in turn (cancellable
 * between disks; a copy also within), all new ones deleted on failure. */
static int disks_do(enum disk_op op, const char *sr, struct cdisk *d, int n, const char *task,
		    struct xerr *e)
{
	for (int i = 0; i < n; i++) {
		if (!d[i].copy)
			continue;
		if ((task && task_check_cancel(task, e) < 0) ||
		    disk_do(op, d[i].src, sr, task, d[i].vdi, e) < 0) {
			disks_delete(d, n, task);
			return -1;
		}
		d[i].created = true;
		if (task)
			task_set_progress(task, (double)(i + 1) / (double)n);
	}
	return 0;
}

/* The original's fresh_genid: a VM without a generation id keeps none. */
static struct val *fresh_genid(const char *cur)
{
	if (!cur || !cur[0])
		return val_cstr_h("");
	uint64_t a[2];
	RAND_bytes((unsigned char *)a, sizeof(a));
	char s[48];
	snprintf(s, sizeof(s), "%" PRIu64 ":%" PRIu64, a[0] >> 1, a[1] >> 1);
	return val_cstr_h(s);
}

/* The new VM's row (the original's copy_vm_record).  Read lock held. */
static struct val **vm_copy_cols(const struct db_row *r, enum disk_op op, const char *name,
				 const char *new_ps, const char *ps_at, const char *key,
				 const char *mref, const char *gmref, const char *suspend_vdi)
{
	bool snap = snap_op(op), tmpl = fb(r, K.vm, "is_a_template");
	struct val **cols = api_row_new(K.vm);
	char uuid[40];
	db_uuid_new(uuid);
	api_row_set(K.vm, cols, "uuid", val_cstr_h(uuid));
	for (const char *const *f = vm_kept_fields; *f; f++) {
		const struct val *v = fv(r, K.vm, *f);
		if (v)
			api_row_set(K.vm, cols, *f, val_dup_h(v));
	}
	static const char *const also[] = {"affinity", "tags"};
	for (size_t i = 0; i < 2; i++)
		if (fv(r, K.vm, also[i]))
			api_row_set(K.vm, cols, also[i], val_dup_h(fv(r, K.vm, also[i])));
	api_row_set(K.vm, cols, "name_label", val_cstr_h(name));
	api_row_set(K.vm, cols, "power_state", val_cstr_h(new_ps));
	api_row_set(K.vm, cols, "allowed_operations", val_array_h(0));
	struct val *cur = ops_map_with(NULL, key, disk_op_names[op]);
	api_row_set(K.vm, cols, "current_operations", cur);
	api_row_set(K.vm, cols, "blocked_operations", val_struct_h(0));
	api_row_set(K.vm, cols, "is_a_template", val_bool_h(snap || tmpl));
	api_row_set(K.vm, cols, "is_default_template", val_bool_h(false));
	api_row_set(K.vm, cols, "is_a_snapshot", val_bool_h(snap));
	api_row_set(K.vm, cols, "snapshot_of", val_cstr_h(snap ? r->ref : NULLREF));
	api_row_set(K.vm, cols, "snapshot_time", val_datetime_h(snap ? util_now() : 0));
	struct val *info = NULL;
	if (snap) {
		struct val *a = ops_map_with(NULL, "power-state-at-snapshot",
					      ps_at ? ps_at : fs(r, K.vm, "power_state"));
		info = ops_map_with(a, "disk-snapshot-type", "crash_consistent");
		val_free(a);
	}
	api_row_set(K.vm, cols, "snapshot_info", info ? info : val_struct_h(0));
	api_row_set(K.vm, cols, "snapshot_metadata", val_cstr_h(""));
	api_row_set(K.vm, cols, "transportable_snapshot_id", val_cstr_h(""));
	const char *parent = fs(r, K.vm, "parent");
	api_row_set(K.vm, cols, "parent", val_cstr_h(snap && !is_null(parent) ? parent : NULLREF));
	api_row_set(K.vm, cols, "resident_on", val_cstr_h(NULLREF));
	api_row_set(K.vm, cols, "scheduled_to_be_resident_on", val_cstr_h(NULLREF));
	api_row_set(K.vm, cols, "suspend_VDI", val_cstr_h(suspend_vdi));
	api_row_set(K.vm, cols, "domid", val_int_h(-1));
	api_row_set(K.vm, cols, "metrics", val_cstr_h(mref));
	api_row_set(K.vm, cols, "guest_metrics", val_cstr_h(gmref));
	api_row_set(K.vm, cols, "ha_always_run", val_bool_h(false));
	api_row_set(K.vm, cols, "requires_reboot", val_bool_h(false));
	api_row_set(K.vm, cols, "generation_id", fresh_genid(fs(r, K.vm, "generation_id")));
	/* other_config: a new mac_seed unless a snapshot; no default_template
	 * or xensource_internal; the template's name kept */
	const struct val *oc = fv(r, K.vm, "other_config");
	struct val *o = val_dup_h(oc ? oc : &val_nil);
	if (!o || o->kind != V_STRUCT) {
		val_free(o);
		o = val_struct_h(0);
	}
	struct val *tmp;
	if (!snap) {
		char seed[40];
		db_uuid_new(seed);
		tmp = ops_map_with(o, "mac_seed", seed);
		val_free(o);
		o = tmp;
	}
	static const char *const drop[] = {"default_template", "xensource_internal"};
	for (size_t i = 0; i < 2; i++) {
		tmp = ops_map_with(o, drop[i], NULL);
		val_free(o);
		o = tmp;
	}
	if (tmpl && !map_get(o, "base_template_name")) {
		tmp = ops_map_with(o, "base_template_name", fs(r, K.vm, "name_label"));
		val_free(o);
		o = tmp;
	}
	api_row_set(K.vm, cols, "other_config", o);
	return cols;
}

/* The original's Xapi_vm_clone.clone: disks first, then the VM row with
 * its metrics and VBDs (one commit), then the VIFs; the new VM ends in the
 * power state it gets (Halted, Suspended for a clone/copy of a Suspended
 * VM, or a checkpoint of one) with its allowed_operations.  Runs inside the
 * source's operation.  ps_at: the power state a snapshot records (NULL: the
 * VM's).  0 with the new ref in out, or -1 with e set (everything made
 * undone). */
static int vm_clone_do(const char *vm, const char *name, enum disk_op op, const char *sr,
		       const struct val *ignore, const char *ps_at, const char *task,
		       const char *key, char out[DB_REF_MAX], struct xerr *e)
{
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	if (!r) {
		db_unlock();
		xerr_set(e, "HANDLE_INVALID", 2, "VM", vm);
		return -1;
	}
	const char *ps = fs(r, K.vm, "power_state");
	char old_parent[DB_REF_MAX];
	snprintf(old_parent, sizeof(old_parent), "%s",
		 is_null(fs(r, K.vm, "parent")) ? NULLREF : fs(r, K.vm, "parent"));
	const char *new_ps = op != OP_SNAPSHOT && strcmp(ps, "Suspended") == 0 ? "Suspended" : "Halted";
	struct cdisk *d;
	int n = disks_of(r, snap_op(op) ? ignore : NULL, NULL, &d);
	/* the suspend image goes with clones, copies and checkpoints, as one
	 * more disk */
	const char *sv = fs(r, K.vm, "suspend_VDI");
	bool has_sv = op != OP_SNAPSHOT && !is_null(sv) && db_get(K.vdi, sv);
	if (has_sv) {
		snprintf(d[n].src, DB_REF_MAX, "%s", sv);
		d[n].copy = true;
		n++;
	}
	db_unlock();
	int rc = -1;
	if (disks_do(op, sr, d, n, task, e) < 0)
		goto out;
	char mref[DB_REF_MAX], gmref[DB_REF_MAX];
	struct db_txn *t = db_txn_new();
	db_rdlock();
	r = db_get(K.vm, vm);
	if (!r) {
		db_unlock();
		db_txn_free(t);
		xerr_set(e, "HANDLE_INVALID", 2, "VM", vm);
		disks_delete(d, n, task);
		goto out;
	}
	db_ref_new(out);
	owned_copy_txn(t, K.vmm, fs(r, K.vm, "metrics"), mref);
	if (strcmp(mref, NULLREF) == 0) { /* a VM always has metrics */
		char muuid[40];
		db_ref_new(mref);
		db_uuid_new(muuid);
		struct val **mc = api_row_new(K.vmm);
		api_row_set(K.vmm, mc, "uuid", val_cstr_h(muuid));
		db_txn_insert(t, K.vmm, mref, mc);
		free(mc);
	}
	owned_copy_txn(t, K.gm, fs(r, K.vm, "guest_metrics"), gmref);
	struct val **cols = vm_copy_cols(r, op, name, new_ps, ps_at, key, mref, gmref,
					 has_sv ? d[n - 1].vdi : NULLREF);
	db_txn_insert(t, K.vm, out, cols);
	free(cols);
	for (int i = 0; i < n - (has_sv ? 1 : 0); i++) {
		const struct db_row *b = db_get(K.vbd, d[i].vbd);
		if (b)
			vbd_copy_txn(t, b, out, d[i].vdi, true);
	}
	if (snap_op(op))
		db_txn_set(t, K.vm, vm, api_field(K.vm, "parent"), val_cstr_h(out));
	db_unlock();
	if (db_txn_commit(t, e) < 0) {
		disks_delete(d, n, task);
		goto out;
	}
	if (vifs_copy(vm, out, snap_op(op), e) < 0 ||
	    vm_set_power_state(out, new_ps, NULL, -1, e) < 0) {
		struct db_txn *t2 = db_txn_new();
		db_rdlock();
		const struct db_row *nr = db_get(K.vm, out);
		if (nr)
			vm_delete_txn(t2, nr);
		if (snap_op(op))
			db_txn_set(t2, K.vm, vm, api_field(K.vm, "parent"), val_cstr_h(old_parent));
		db_unlock();
		commit_quiet(t2, "undoing the copy of VM", vm);
		disks_delete(d, n, task);
		goto out;
	}
	vm_op_end(out, key);
	log_info("VM.%s %s -> %s (%d disks)", disk_op_names[op], vm, out, n);
	rc = 0;
out:
	free(d);
	return rc;
}

static void clone_msg(struct api_ctx *c, enum disk_op op, const char *sr, const struct val *ignore)
{
	k();
	const char *vm = api_str(c, 1), *name = api_str(c, 2);
	if (!vm_exists(c, vm))
		return;
	if (op == OP_COPY && !is_null(sr)) {
		/* the original: an SR that exists and holds no ISOs */
		db_rdlock();
		const struct db_row *s = db_get(K.sr, sr);
		bool iso = s && strcmp(fs(s, K.sr, "content_type"), "iso") == 0;
		db_unlock();
		if (!s)
			sr = NULL;
		else if (iso) {
			api_fail(c, "OPERATION_NOT_ALLOWED", 1, "Cannot copy a VM's disks to an ISO SR");
			return;
		}
	}
	const char *key = ops_key(c->a, c->task);
	if (vm_op_begin(vm, key, disk_op_names[op], c->task, &c->err) < 0)
		return;
	if (c->task)
		task_set_cancellable(c->task, true);
	char out[DB_REF_MAX];
	if (vm_clone_do(vm, name, op, sr, ignore, NULL, c->task, key, out, &c->err) == 0)
		enc_cstr(c->out, out);
	vm_op_end(vm, key);
}

int vm_checkpoint_copy(const char *vm, const char *name, const char *ps_at, const char *task,
		       const char *key, char out[DB_REF_MAX], struct xerr *e)
{
	k();
	return vm_clone_do(vm, name, OP_CHECKPOINT, NULL, NULL, ps_at, task, key, out, e);
}

static void vm_clone(struct api_ctx *c)
{
	clone_msg(c, OP_CLONE, NULL, NULL);
}

static void vm_copy(struct api_ctx *c)
{
	clone_msg(c, OP_COPY, api_str(c, 3), NULL);
}

static void vm_snapshot(struct api_ctx *c)
{
	clone_msg(c, OP_SNAPSHOT, NULL, c->nparams > 3 ? c->params[3] : NULL);
}

/* ---- VM.revert (xapi_vm_snapshot.ml) ---- */

/* Destroy a VDI unless it lives on an ISO SR (the original's
 * safe_destroy_vdi). */
static int vdi_destroy_unless_iso(const char *vdi, const char *task, struct xerr *e)
{
	db_rdlock();
	const struct db_row *v = is_null(vdi) ? NULL : db_get(K.vdi, vdi);
	const struct db_row *s = v ? db_get(K.sr, fs(v, K.vdi, "SR")) : NULL;
	bool skip = !v || (s && strcmp(fs(s, K.sr, "content_type"), "iso") == 0);
	db_unlock();
	return skip ? 0 : storage_vdi_destroy(vdi, task, e);
}

static int revert_do(const char *snap, const char *vm, const char *task, struct xerr *e)
{
	struct cdisk *sd = NULL, *sc = NULL;
	int nsd = 0, nsc = 0, rc = -1;
	char (*old)[DB_REF_MAX] = NULL;
	int nold = 0;
	char snap_sv[DB_REF_MAX], vm_sv[DB_REF_MAX], new_sv[DB_REF_MAX];
	char (*snap_of)[DB_REF_MAX] = NULL;
	db_rdlock();
	const struct db_row *s = db_get(K.vm, snap), *v = db_get(K.vm, vm);
	if (!s || !v) {
		db_unlock();
		xerr_set(e, "HANDLE_INVALID", 2, "VM", !s ? snap : vm);
		return -1;
	}
	nsd = disks_of(s, NULL, "Disk", &sd);
	nsc = disks_of(s, NULL, "CD", &sc);
	snap_of = util_calloc((size_t)nsd + 1, DB_REF_MAX);
	for (int i = 0; i < nsd; i++)
		snprintf(snap_of[i], DB_REF_MAX, "%s",
			 fs(db_get(K.vdi, sd[i].src), K.vdi, "snapshot_of"));
	/* the VM's disks that the snapshot has a copy of go; the others stay,
	 * unattached */
	const struct val *vb = fv(v, K.vm, "VBDs");
	old = util_calloc(n_of(vb) + 1, DB_REF_MAX);
	for (uint32_t i = 0; i < n_of(vb); i++) {
		const struct db_row *b = db_get(K.vbd, vb->u.items[i]->u.s);
		if (!b || strcmp(fs(b, K.vbd, "type"), "Disk") != 0)
			continue;
		for (int j = 0; j < nsd; j++)
			if (strcmp(snap_of[j], fs(b, K.vbd, "VDI")) == 0 && !is_null(snap_of[j])) {
				snprintf(old[nold++], DB_REF_MAX, "%s", fs(b, K.vbd, "VDI"));
				break;
			}
	}
	snprintf(snap_sv, sizeof(snap_sv), "%s", fs(s, K.vm, "suspend_VDI"));
	snprintf(vm_sv, sizeof(vm_sv), "%s", fs(v, K.vm, "suspend_VDI"));
	/* the VM's VBDs go first */
	struct db_txn *t = db_txn_new();
	for (uint32_t i = 0; i < n_of(vb); i++) {
		const struct db_row *b = db_get(K.vbd, vb->u.items[i]->u.s);
		if (!b)
			continue;
		if (db_get(K.vbdm, fs(b, K.vbd, "metrics")))
			db_txn_delete(t, K.vbdm, fs(b, K.vbd, "metrics"));
		db_txn_delete(t, K.vbd, b->ref);
	}
	db_unlock();
	if (db_txn_commit(t, e) < 0)
		goto out;
	if (vdi_destroy_unless_iso(vm_sv, task, e) < 0)
		goto out;
	for (int i = 0; i < nold; i++)
		if (vdi_destroy_unless_iso(old[i], task, e) < 0)
			goto out;
	if (task)
		task_set_progress(task, 0.2);
	if (disks_do(OP_CLONE, NULL, sd, nsd, NULL, e) < 0)
		goto out;
	snprintf(new_sv, sizeof(new_sv), "%s", NULLREF);
	if (!is_null(snap_sv) && storage_vdi_clone(snap_sv, NULL, new_sv, e) < 0) {
		disks_delete(sd, nsd, task);
		goto out;
	}
	if (task)
		task_set_progress(task, 0.6);
	t = db_txn_new();
	db_rdlock();
	s = db_get(K.vm, snap);
	v = db_get(K.vm, vm);
	if (!s || !v) {
		db_unlock();
		db_txn_free(t);
		xerr_set(e, "HANDLE_INVALID", 2, "VM", !s ? snap : vm);
		goto undo;
	}
	/* the snapshots of a reverted disk now are snapshots of its clone */
	for (int i = 0; i < nsd; i++) {
		if (!sd[i].created || is_null(snap_of[i]))
			continue;
		for (struct db_row *x = db_next(K.vdi, NULL); x; x = db_next(K.vdi, x))
			if (strcmp(fs(x, K.vdi, "snapshot_of"), snap_of[i]) == 0)
				db_txn_set(t, K.vdi, x->ref, api_field(K.vdi, "snapshot_of"),
					   val_cstr_h(sd[i].vdi));
	}
	struct cdisk *all[2] = {sd, sc};
	int nall[2] = {nsd, nsc};
	for (int k2 = 0; k2 < 2; k2++)
		for (int i = 0; i < nall[k2]; i++) {
			const struct db_row *b = db_get(K.vbd, all[k2][i].vbd);
			if (b)
				vbd_copy_txn(t, b, vm, all[k2][i].vdi, false);
		}
	db_txn_set(t, K.vm, vm, api_field(K.vm, "suspend_VDI"), val_cstr_h(new_sv));
	/* the fields: what the snapshot took from the VM */
	set_kept(t, vm, s);
	const struct val *oc = fv(s, K.vm, "other_config");
	db_txn_set(t, K.vm, vm, api_field(K.vm, "other_config"), val_dup_h(oc ? oc : &val_nil));
	db_txn_set(t, K.vm, vm, api_field(K.vm, "ha_always_run"), val_bool_h(false));
	const char *hbp = fs(s, K.vm, "HVM_boot_policy");
	const char *derived = hbp[0] ? "hvm" : "pv";
	if (strcmp(fs(s, K.vm, "domain_type"), derived) != 0)
		db_txn_set(t, K.vm, vm, api_field(K.vm, "domain_type"), val_cstr_h(derived));
	/* old VIFs, metrics and guest metrics replaced by the snapshot's */
	const struct val *vf = fv(v, K.vm, "VIFs");
	for (uint32_t i = 0; i < n_of(vf); i++) {
		const struct db_row *f = db_get(K.vif, vf->u.items[i]->u.s);
		if (!f)
			continue;
		if (db_get(K.vifm, fs(f, K.vif, "metrics")))
			db_txn_delete(t, K.vifm, fs(f, K.vif, "metrics"));
		db_txn_delete(t, K.vif, f->ref);
	}
	static const char *const owned[] = {"metrics", "guest_metrics"};
	for (int i = 0; i < 2; i++) {
		int cls = i ? K.gm : K.vmm;
		const char *o = fs(v, K.vm, owned[i]);
		if (!is_null(o) && db_get(cls, o))
			db_txn_delete(t, cls, o);
		char nref[DB_REF_MAX];
		owned_copy_txn(t, cls, fs(s, K.vm, owned[i]), nref);
		if (strcmp(nref, NULLREF) != 0 || i == 1)
			db_txn_set(t, K.vm, vm, api_field(K.vm, owned[i]), val_cstr_h(nref));
	}
	db_txn_set(t, K.vm, vm, api_field(K.vm, "parent"), val_cstr_h(snap));
	char ps[16];
	snprintf(ps, sizeof(ps), "%s", fs(s, K.vm, "power_state"));
	db_unlock();
	if (db_txn_commit(t, e) < 0)
		goto undo;
	if (task)
		task_set_progress(task, 0.8);
	if (vifs_copy(snap, vm, true, e) < 0)
		goto out;
	rc = vm_set_power_state(vm, ps, NULL, -1, e);
	goto out;
undo:
	disks_delete(sd, nsd, task);
	if (!is_null(new_sv)) {
		struct xerr e2 = {0};
		storage_vdi_destroy(new_sv, task, &e2);
		xerr_clear(&e2);
	}
out:
	free(sd);
	free(sc);
	free(old);
	free(snap_of);
	return rc;
}

static void vm_revert(struct api_ctx *c)
{
	k();
	const char *snap = api_str(c, 1);
	db_rdlock();
	const struct db_row *s = db_get(K.vm, snap);
	char vm[DB_REF_MAX] = "", vps[16] = "";
	bool is_snap = fb(s, K.vm, "is_a_snapshot");
	if (s) {
		snprintf(vm, sizeof(vm), "%s", fs(s, K.vm, "snapshot_of"));
		snprintf(vps, sizeof(vps), "%s", fs(db_get(K.vm, vm), K.vm, "power_state"));
	}
	bool vm_ok = s && valid_ref(K.vm, vm);
	db_unlock();
	if (!s) {
		api_fail(c, "HANDLE_INVALID", 2, "VM", snap);
		return;
	}
	if (is_snap && !vm_ok) {
		/* the original re-creates the VM from snapshot_metadata, which
		 * cxapi does not write (docs/vm.md) */
		api_fail(c, "VM_REVERT_FAILED", 2, snap, vm);
		return;
	}
	const char *key = ops_key(c->a, c->task);
	if (vm_op_begin(snap, key, "revert", c->task, &c->err) < 0)
		return;
	if (vm_op_begin(vm, key, "reverting", c->task, &c->err) < 0) {
		vm_op_end(snap, key);
		return;
	}
	if (c->task)
		task_set_cancellable(c->task, false);
	/* a VM with a domain is hard-shut down first (as the original's
	 * message_forwarding; hard_shutdown goes with reverting) */
	if (strcmp(vps, "Halted") != 0 && vm_power_hard_shutdown(vm, c->task, &c->err) < 0) {
		log_warn("VM.revert %s to %s: hard shutdown: %s", vm, snap, c->err.code);
	} else if (revert_do(snap, vm, c->task, &c->err) < 0) {
		struct xerr e2 = {0};
		if (vm_set_power_state(vm, "Halted", NULL, -1, &e2) < 0)
			xerr_clear(&e2);
		const char *code = c->err.code;
		if (!(code && (strcmp(code, "SR_BACKEND_FAILURE_44") == 0 ||
			       strcmp(code, "SR_BACKEND_FAILURE_109") == 0 ||
			       strcmp(code, "VDI_INCOMPATIBLE_TYPE") == 0))) {
			log_warn("VM.revert %s to %s: %s", vm, snap, code ? code : "?");
			xerr_clear(&c->err);
			api_fail(c, "VM_REVERT_FAILED", 2, snap, vm);
		}
	} else {
		enc_void(c->out);
	}
	vm_op_end(vm, key);
	vm_op_end(snap, key);
}

/* ---- VM.provision (xapi_templates.ml) ---- */

struct pdisk {
	char device[64], sr[64], type[16];
	int64_t size;
	bool bootable;
};

struct pxml {
	struct pdisk *d;
	int n, cap, depth;
	bool bad;
};

static const char *attr(const char **a, const char *name)
{
	for (; a && a[0]; a += 2)
		if (strcmp(a[0], name) == 0)
			return a[1];
	return NULL;
}

static void XMLCALL px_start(void *ud, const char *el, const char **a)
{
	struct pxml *p = ud;
	int depth = p->depth++;
	if (depth == 0) {
		if (strcmp(el, "provision") != 0 || (a && a[0]))
			p->bad = true;
		return;
	}
	if (depth != 1 || strcmp(el, "disk") != 0) {
		p->bad = true;
		return;
	}
	const char *dev = attr(a, "device"), *size = attr(a, "size"), *sr = attr(a, "sr"),
		   *boot = attr(a, "bootable"), *type = attr(a, "type");
	char *end = NULL;
	long long sz = size ? strtoll(size, &end, 10) : 0;
	if (!dev || !size || !sr || !boot || !*size || *end || strlen(dev) >= 64 || strlen(sr) >= 64) {
		p->bad = true;
		return;
	}
	if (p->n == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 4;
		p->d = realloc(p->d, sizeof(*p->d) * (size_t)p->cap);
		if (!p->d)
			abort();
	}
	struct pdisk *d = &p->d[p->n++];
	snprintf(d->device, sizeof(d->device), "%s", dev);
	snprintf(d->sr, sizeof(d->sr), "%s", sr);
	snprintf(d->type, sizeof(d->type), "%s",
		 type && IN(type, "system", "user", "ephemeral", "suspend", "crashdump") ? type : "system");
	d->size = sz;
	d->bootable = strcmp(boot, "true") == 0;
}

static void XMLCALL px_end(void *ud, const char *el)
{
	(void)el;
	((struct pxml *)ud)->depth--;
}

static void XMLCALL px_text(void *ud, const char *s, int len)
{
	struct pxml *p = ud;
	for (int i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
			p->bad = true;
}

/* The disks of a provision XML; -1 if it does not parse as one. */
static int provision_parse(const char *xml, struct pdisk **out)
{
	struct pxml p = {0};
	XML_Parser x = XML_ParserCreate("UTF-8");
	XML_SetUserData(x, &p);
	XML_SetElementHandler(x, px_start, px_end);
	XML_SetCharacterDataHandler(x, px_text);
	bool ok = XML_Parse(x, xml, (int)strlen(xml), 1) == XML_STATUS_OK && !p.bad;
	XML_ParserFree(x);
	if (!ok) {
		free(p.d);
		return -1;
	}
	*out = p.d;
	return p.n;
}

/* One disk: a VDI on the SR named by uuid and its VBD, as the original's
 * create_disk.  The VBD's ref in vbd, the VDI's in vdi ("" if none). */
static int provision_disk(const char *vm, const char *vm_uuid, const struct pdisk *pd,
			  const char *task, char vbd[DB_REF_MAX], char vdi[DB_REF_MAX], struct xerr *e)
{
	vbd[0] = vdi[0] = 0;
	db_rdlock();
	const struct db_row *s = db_get_by_uuid(K.sr, pd->sr);
	char sr[DB_REF_MAX] = "";
	if (s)
		snprintf(sr, sizeof(sr), "%s", s->ref);
	db_unlock();
	if (!s) {
		log_warn("VM.provision: no SR with uuid '%s'", pd->sr);
		xerr_set(e, "UUID_INVALID", 2, "sr", pd->sr);
		return -1;
	}
	if (storage_vdi_create_in_sr(sr, "", (uint64_t)pd->size, pd->type, false, NULL, task, vdi,
				     e) < 0) {
		vdi[0] = 0;
		return -1;
	}
	struct val **cols = api_row_new(K.vbd);
	char uuid[40];
	db_uuid_new(uuid);
	api_row_set(K.vbd, cols, "uuid", val_cstr_h(uuid));
	api_row_set(K.vbd, cols, "VM", val_cstr_h(vm));
	api_row_set(K.vbd, cols, "VDI", val_cstr_h(vdi));
	api_row_set(K.vbd, cols, "userdevice", val_cstr_h(pd->device));
	api_row_set(K.vbd, cols, "bootable", val_bool_h(pd->bootable));
	api_row_set(K.vbd, cols, "mode", val_cstr_h("RW"));
	api_row_set(K.vbd, cols, "type", val_cstr_h("Disk"));
	api_row_set(K.vbd, cols, "unpluggable", val_bool_h(strcmp(pd->type, "system") != 0));
	api_row_set(K.vbd, cols, "empty", val_bool_h(false));
	api_row_set(K.vbd, cols, "other_config", ops_map_with(NULL, "owner", ""));
	if (vbd_create_cols(cols, vbd, e) < 0) {
		vbd[0] = 0;
		return -1;
	}
	/* the VDI is named after the VBD's position; sm_config:vmhint */
	struct db_txn *t = db_txn_new();
	db_rdlock();
	const struct db_row *vr = db_get(K.vdi, vdi);
	if (vr) {
		db_txn_set(t, K.vdi, vdi, api_field(K.vdi, "name_label"),
			   val_cstr_h(fs(db_get(K.vbd, vbd), K.vbd, "userdevice")));
		db_txn_set(t, K.vdi, vdi, api_field(K.vdi, "name_description"),
			   val_cstr_h("Created by template provisioner"));
		db_txn_set(t, K.vdi, vdi, api_field(K.vdi, "sm_config"),
			   ops_map_with(fv(vr, K.vdi, "sm_config"), "vmhint", vm_uuid));
	}
	db_unlock();
	return db_txn_commit(t, e);
}

static void provision_do(struct api_ctx *c, const char *vm)
{
	struct db_txn *t = db_txn_new();
	db_txn_set(t, K.vm, vm, api_field(K.vm, "is_a_template"), val_bool_h(false));
	if (api_commit(c, t) < 0)
		return;
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	const struct val *oc = fv(r, K.vm, "other_config");
	char *xml = map_get(oc, "disks") ? util_strdup(map_get(oc, "disks")) : NULL;
	bool script = map_get(oc, "postinstall") != NULL;
	char vm_uuid[40];
	snprintf(vm_uuid, sizeof(vm_uuid), "%s", fs(r, K.vm, "uuid"));
	db_unlock();
	struct pdisk *pd = NULL;
	int n = 0;
	if (xml && (n = provision_parse(xml, &pd)) < 0) {
		free(xml);
		api_fail(c, "INTERNAL_ERROR", 1, "Xapi_templates.Parse_failure");
		return;
	}
	free(xml);
	if (script) {
		/* the original runs it in dom0 with the new disks attached */
		free(pd);
		api_fail(c, "NOT_IMPLEMENTED", 1, "VM.provision: other_config:postinstall");
		return;
	}
	if (c->task)
		task_set_progress(c->task, 0.1);
	char (*vbds)[DB_REF_MAX] = util_calloc((size_t)n + 1, DB_REF_MAX);
	char (*vdis)[DB_REF_MAX] = util_calloc((size_t)n + 1, DB_REF_MAX);
	int i = 0;
	for (; i < n; i++)
		if (provision_disk(vm, vm_uuid, &pd[i], c->task, vbds[i], vdis[i], &c->err) < 0)
			break;
	if (i < n) {
		/* undo: the VBDs, then their VDIs */
		for (int j = 0; j <= i; j++) {
			struct xerr e = {0};
			if (vbds[j][0]) {
				struct db_txn *t2 = db_txn_new();
				db_txn_delete(t2, K.vbd, vbds[j]);
				commit_quiet(t2, "VM.provision: deleting VBD", vbds[j]);
			}
			if (vdis[j][0] && storage_vdi_destroy(vdis[j], c->task, &e) < 0)
				log_warn("VM.provision: deleting VDI %s: %s", vdis[j], e.code);
			xerr_clear(&e);
		}
		vm_update_allowed(vm);
	} else {
		t = db_txn_new();
		db_rdlock();
		struct val *o1 = ops_map_with(fv(db_get(K.vm, vm), K.vm, "other_config"), "disks", NULL);
		db_unlock();
		struct val *o2 = ops_map_with(o1, "postinstall", NULL);
		val_free(o1);
		db_txn_set(t, K.vm, vm, api_field(K.vm, "other_config"), o2);
		if (api_commit(c, t) == 0)
			enc_void(c->out);
	}
	free(vbds);
	free(vdis);
	free(pd);
}

static void vm_provision(struct api_ctx *c)
{
	k();
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "provision", provision_do(c, vm));
}

/* ---- placement (xapi_vm_helpers.ml, memory_check.ml) ---- */

/* The original's assert_can_boot_here, as far as one host goes: enabled,
 * the VM's SRs plugged here, and memory: dynamic_min + overhead against
 * the host's free memory.  Read lock held. */
static int boot_check(const struct db_row *r, const char *host, struct xerr *e)
{
	const struct db_row *h = db_get(K.host, host);
	if (!h) {
		xerr_set(e, "HANDLE_INVALID", 2, "host", host);
		return -1;
	}
	if (!fb(h, K.host, "enabled")) {
		xerr_set(e, "HOST_DISABLED", 1, host);
		return -1;
	}
	int pbd = idl_class_find("PBD");
	const struct val *vbds = fv(r, K.vm, "VBDs");
	for (uint32_t i = 0; i < n_of(vbds); i++) {
		const struct db_row *b = db_get(K.vbd, vbds->u.items[i]->u.s);
		if (!b || fb(b, K.vbd, "empty"))
			continue;
		const char *sr = fs(db_get(K.vdi, fs(b, K.vbd, "VDI")), K.vdi, "SR");
		const struct val *pbds = fv(db_get(K.sr, sr), K.sr, "PBDs");
		bool ok = false;
		for (uint32_t j = 0; j < n_of(pbds) && !ok; j++) {
			const struct db_row *p = db_get(pbd, pbds->u.items[j]->u.s);
			ok = p && strcmp(fs(p, pbd, "host"), host) == 0 &&
			     fb(p, pbd, "currently_attached");
		}
		if (!ok) {
			xerr_set(e, "VM_REQUIRES_SR", 2, r->ref, sr);
			return -1;
		}
	}
	int64_t need = fi(r, K.vm, "memory_dynamic_min") + vm_overhead_row(r);
	int64_t avail = fi(db_get(K.hm, fs(h, K.host, "metrics")), K.hm, "memory_free");
	if (avail < need) {
		char a[32], b[32];
		snprintf(a, sizeof(a), "%" PRId64, need);
		snprintf(b, sizeof(b), "%" PRId64, avail);
		xerr_set(e, "HOST_NOT_ENOUGH_FREE_MEMORY", 2, a, b);
		return -1;
	}
	return 0;
}

static void vm_assert_can_boot_here(struct api_ctx *c)
{
	k();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, api_str(c, 1));
	if (!r)
		api_fail(c, "HANDLE_INVALID", 2, "VM", api_str(c, 1));
	else
		boot_check(r, api_str(c, 2), &c->err);
	db_unlock();
	if (!api_failed(c))
		enc_void(c->out);
}

static void vm_get_possible_hosts(struct api_ctx *c)
{
	k();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, api_str(c, 1));
	if (!r) {
		db_unlock();
		api_fail(c, "HANDLE_INVALID", 2, "VM", api_str(c, 1));
		return;
	}
	enc_array_begin(c->out);
	for (struct db_row *h = db_next(K.host, NULL); h; h = db_next(K.host, h)) {
		struct xerr e = {0};
		if (boot_check(r, h->ref, &e) == 0)
			enc_cstr(c->out, h->ref);
		xerr_clear(&e);
	}
	enc_array_end(c->out);
	db_unlock();
}

/* The original's maximise_memory: the largest static_max (whole MiB) whose
 * start memory (static_max + overhead, 64 vCPUs when approximate) fits in
 * total. */
static void vm_maximise_memory(struct api_ctx *c)
{
	k();
	int64_t total = api_int(c, 2);
	db_rdlock();
	const struct db_row *r = db_get(K.vm, api_str(c, 1));
	int vcpus = api_bool(c, 3) ? 64 : (int)fi(r, K.vm, "VCPUs_max");
	double mult = fd(r, K.vm, "HVM_shadow_multiplier") > 0 ? fd(r, K.vm, "HVM_shadow_multiplier")
								: 1.0;
	bool hvm = r && vm_hvm(r);
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "VM", api_str(c, 1));
		return;
	}
	int64_t lo = 0, hi = total > 0 ? total : 0;
	while (lo < hi) { /* the largest x in [0, total] that fits */
		int64_t mid = lo + (hi - lo + 1) / 2;
		if (mid + vm_overhead_bytes(mid, vcpus, mult, hvm) <= total)
			lo = mid;
		else
			hi = mid - 1;
	}
	enc_int(c->out, lo / MIB * MIB);
}

static void vm_copy_bios_strings(struct api_ctx *c)
{
	k();
	const char *vm = api_str(c, 1), *host = api_str(c, 2);
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm), *h = db_get(K.host, host);
	bool set = n_of(fv(r, K.vm, "bios_strings")) > 0;
	struct val *bs = h ? val_dup_h(fv(h, K.host, "bios_strings") ? fv(h, K.host, "bios_strings")
								     : &val_nil)
			   : NULL;
	db_unlock();
	if (!r || !h) {
		val_free(bs);
		api_fail(c, "HANDLE_INVALID", 2, r ? "host" : "VM", r ? host : vm);
		return;
	}
	if (set) {
		val_free(bs);
		api_fail(c, "VM_BIOS_STRINGS_ALREADY_SET", 0);
		return;
	}
	struct db_txn *t = db_txn_new();
	db_txn_set(t, K.vm, vm, api_field(K.vm, "bios_strings"), bs);
	/* and the VM is pushed to start on that host */
	db_txn_set(t, K.vm, vm, api_field(K.vm, "affinity"), val_cstr_h(host));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void vm_get_boot_record(struct api_ctx *c)
{
	k();
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "get_boot_record", {
		db_rdlock();
		const struct db_row *r = db_get(K.vm, vm);
		if (r)
			api_write_record(c->out, r);
		else
			api_fail(c, "HANDLE_INVALID", 2, "VM", vm);
		db_unlock();
	});
}

const struct api_impl vm_impls[] = {
	{"VM.create", vm_create, false},
	{"VM.destroy", vm_destroy, false},
	{"VM.set_is_default_template", vm_set_is_default_template, false},
	{"VM.assert_operation_valid", vm_assert_operation_valid, true},
	{"VM.update_allowed_operations", vm_update_allowed_operations, false},
	{"VM.get_allowed_VBD_devices", vm_get_allowed_vbd_devices, true},
	{"VM.get_allowed_VIF_devices", vm_get_allowed_vif_devices, true},
	{"VM.set_memory_static_range", vm_set_memory_static_range, false},
	{"VM.set_memory_static_min", vm_set_memory_static_min, false},
	{"VM.set_memory_static_max", vm_set_memory_static_max, false},
	{"VM.set_memory_dynamic_range", vm_set_memory_dynamic_range, false},
	{"VM.set_memory_dynamic_min", vm_set_memory_dynamic_min, false},
	{"VM.set_memory_dynamic_max", vm_set_memory_dynamic_max, false},
	{"VM.set_memory_limits", vm_set_memory_limits, false},
	{"VM.set_memory", vm_set_memory_all, false},
	{"VM.set_VCPUs_max", vm_set_vcpus_max, false},
	{"VM.set_VCPUs_at_startup", vm_set_vcpus_at_startup, false},
	{"VM.set_is_a_template", vm_set_is_a_template, false},
	{"VM.clone", vm_clone, false},
	{"VM.copy", vm_copy, false},
	{"VM.snapshot", vm_snapshot, false},
	{"VM.revert", vm_revert, false},
	{"VM.provision", vm_provision, false},
	{"VM.get_boot_record", vm_get_boot_record, false},
	{"VM.get_possible_hosts", vm_get_possible_hosts, true},
	{"VM.assert_can_boot_here", vm_assert_can_boot_here, true},
	{"VM.copy_bios_strings", vm_copy_bios_strings, false},
	{"VM.maximise_memory", vm_maximise_memory, true},
	{"VBD.create", vbd_create, false},
	{"VBD.destroy", vbd_destroy, false},
	{"VIF.create", vif_create, false},
	{"VIF.destroy", vif_destroy, false},
	{NULL, NULL, false},
};
