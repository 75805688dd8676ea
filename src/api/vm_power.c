/* vm_power.c — the VM, VBD and VIF messages that need a running domain,
 * connected to the domain manager (src/xenops/xenops.h): start, shutdown,
 * reboot, suspend/resume, pause, sysrq/trigger, live vCPUs, device
 * plug/unplug and CD insert/eject; what guests do by themselves (events:
 * actions_after_shutdown/reboot/crash, guest agent data → VM_guest_metrics,
 * VM_metrics); and the resync of the VM rows with the domains at start.
 *
 * Behaviour follows the original's xapi_vm.ml, xapi_xenops.ml (update_vm,
 * the event handling), xapi_vbd.ml, xapi_vif.ml, xapi_guest_agent.ml.  Each
 * message: vm_op_begin → xenops_* → vm_set_power_state / fields →
 * vm_op_end (vm.h).  See docs/vm.md ("Lifecycle").
 */
#include "api/vm_power.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/ops.h"
#include "api/row.h"
#include "api/storage.h"
#include "api/tasks.h"
#include "api/vm.h"
#include "base/log.h"
#include "base/util.h"

#define MIB (1024LL * 1024LL)
#define NULLREF "OpaqueRef:NULL"
#define SUSPEND_HDR 512 /* the suspend VDI: a header sector, then the image */

#define K vm_k /* vm.c's class indices */
static int shutdown_timeout_s = 1200;

static void k(void)
{
	vm_k_init();
}

/* ---- row helpers (read lock held) ---- */

static void cpy(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src ? src : "");
}
static char *dup_or_null(const char *s)
{
	return s && s[0] ? util_strdup(s) : NULL;
}

/* A map (string -> string) from "key=value" lines. */
static struct val *map_of_lines(const char *text)
{
	uint32_t n = 0;
	for (const char *p = text; *p; p++)
		n += *p == '\n';
	n++;
	struct val *m = val_struct_h(n);
	uint32_t k = 0;
	const char *p = text;
	while (*p && k < n) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		if (eq && eq > p) {
			m->u.members[k].key = strndup(p, (size_t)(eq - p));
			m->u.members[k].klen = (uint32_t)(eq - p);
			m->u.members[k].v = val_str_h(eq + 1, len - (size_t)(eq - p) - 1);
			k++;
		}
		p += len + (nl ? 1 : 0);
	}
	m->n = k;
	return m;
}

static struct val *set1(const char *s)
{
	struct val *a = val_array_h(1);
	a->u.items[0] = val_cstr_h(s);
	return a;
}

/* ---- a VM's domain description (struct xenops_vm) from its rows ---- */

struct spec {
	struct xenops_vm v;
	struct xenops_disk *disks;
	struct xenops_nic *nics;
	char (*vbd_refs)[DB_REF_MAX];
	char (*vdi_refs)[DB_REF_MAX];
	char *kernel, *ramdisk, *args, *bootloader, *platform;
	char domain_type[16];
};

static void spec_free(struct spec *s)
{
	free(s->disks);
	free(s->nics);
	free(s->vbd_refs);
	free(s->vdi_refs);
	free(s->kernel);
	free(s->ramdisk);
	free(s->args);
	free(s->bootloader);
	free(s->platform);
	memset(s, 0, sizeof(*s));
}

/* The guest's name for position n: hda-hdd for HVM below 4, else xvdX. */
static void device_name(bool hvm, int n, char out[16])
{
	if (hvm && n < 4)
		snprintf(out, 16, "hd%c", 'a' + n);
	else if (n < 26)
		snprintf(out, 16, "xvd%c", 'a' + n);
	else
		snprintf(out, 16, "xvd%c%c", 'a' + n / 26 - 1, 'a' + n % 26);
}

static void disk_from_row(const struct db_row *b, bool hvm, struct xenops_disk *d)
{
	cpy(d->vbd_uuid, sizeof(d->vbd_uuid), fs(b, K.vbd, "uuid"));
	d->userdevice = atoi(fs(b, K.vbd, "userdevice"));
	const char *dev = fs(b, K.vbd, "device");
	if (dev[0])
		cpy(d->device, sizeof(d->device), dev);
	else
		device_name(hvm, d->userdevice, d->device);
	d->read_only = strcmp(fs(b, K.vbd, "mode"), "RO") == 0;
	d->cdrom = strcmp(fs(b, K.vbd, "type"), "CD") == 0;
	d->empty = fb(b, K.vbd, "empty") || is_null(fs(b, K.vbd, "VDI"));
	d->bootable = fb(b, K.vbd, "bootable");
}

/* The file behind d's VDI (storage layer). */
static int disk_path(const char *vdi, struct xenops_disk *d, struct xerr *e)
{
	if (d->empty) {
		d->path[0] = 0;
		cpy(d->format, sizeof(d->format), "raw");
		return 0;
	}
	return storage_vdi_path(vdi, d->path, sizeof(d->path), d->format, e);
}

static void nic_from_row(const struct db_row *f, struct xenops_nic *n)
{
	cpy(n->vif_uuid, sizeof(n->vif_uuid), fs(f, K.vif, "uuid"));
	n->devid = atoi(fs(f, K.vif, "device"));
	cpy(n->mac, sizeof(n->mac), fs(f, K.vif, "MAC"));
	const struct db_row *net = db_get(K.net, fs(f, K.vif, "network"));
	n->mtu = (uint32_t)(fi(f, K.vif, "MTU") ? fi(f, K.vif, "MTU") : fi(net, K.net, "MTU"));
	if (!n->mtu)
		n->mtu = 1500;
	cpy(n->bridge, sizeof(n->bridge), fs(net, K.net, "bridge"));
}

static char *platform_json(const struct val *m)
{
	json_t *o = json_object();
	for (uint32_t i = 0; i < n_of(m); i++)
		if (m->u.members[i].v->kind == V_STR)
			json_object_set_new(o, m->u.members[i].key,
					    json_string(m->u.members[i].v->u.s));
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* What vm's domain is built from; attached: only the VBDs and VIFs
 * currently attached (a running domain's, to write its tree again). */
static int spec_build(const char *vm, struct spec *s, bool attached, struct xerr *e)
{
	memset(s, 0, sizeof(*s));
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	if (!r) {
		db_unlock();
		xerr_set(e, "HANDLE_INVALID", 2, "VM", vm);
		return -1;
	}
	bool hvm = vm_hvm(r);
	cpy(s->v.uuid, sizeof(s->v.uuid), fs(r, K.vm, "uuid"));
	cpy(s->v.name, sizeof(s->v.name), fs(r, K.vm, "name_label"));
	const char *dt = fs(r, K.vm, "domain_type");
	s->v.type = hvm ? XENOPS_HVM : strcmp(dt, "pvh") == 0 ? XENOPS_PVH : XENOPS_PV;
	cpy(s->domain_type, sizeof(s->domain_type), hvm ? "hvm" : s->v.type == XENOPS_PVH ? "pvh" : "pv");
	s->v.memory_static_max = (uint64_t)fi(r, K.vm, "memory_static_max");
	s->v.memory_dynamic_min = (uint64_t)fi(r, K.vm, "memory_dynamic_min");
	s->v.memory_dynamic_max = (uint64_t)fi(r, K.vm, "memory_dynamic_max");
	s->v.memory_target = s->v.memory_dynamic_max;
	const struct val *sm = fv(r, K.vm, "HVM_shadow_multiplier");
	s->v.shadow_multiplier = sm && sm->kind == V_DOUBLE && sm->u.d > 0 ? sm->u.d : 1.0;
	s->v.vcpus_max = (uint32_t)fi(r, K.vm, "VCPUs_max");
	s->v.vcpus_at_startup = (uint32_t)fi(r, K.vm, "VCPUs_at_startup");
	s->v.pv_kernel = s->kernel = dup_or_null(fs(r, K.vm, "PV_kernel"));
	s->v.pv_ramdisk = s->ramdisk = dup_or_null(fs(r, K.vm, "PV_ramdisk"));
	s->v.pv_args = s->args = dup_or_null(fs(r, K.vm, "PV_args"));
	s->v.pv_bootloader = s->bootloader = dup_or_null(fs(r, K.vm, "PV_bootloader"));
	s->v.platform_json = s->platform = platform_json(fv(r, K.vm, "platform"));
	const struct val *vbds = fv(r, K.vm, "VBDs"), *vifs = fv(r, K.vm, "VIFs");
	uint32_t nb = n_of(vbds), nn = n_of(vifs);
	s->disks = util_calloc(nb + 1, sizeof(*s->disks));
	s->vbd_refs = util_calloc(nb + 1, sizeof(*s->vbd_refs));
	s->vdi_refs = util_calloc(nb + 1, sizeof(*s->vdi_refs));
	s->nics = util_calloc(nn + 1, sizeof(*s->nics));
	for (uint32_t i = 0; i < nb; i++) {
		const struct db_row *b = db_get(K.vbd, vbds->u.items[i]->u.s);
		if (!b || (attached && !fb(b, K.vbd, "currently_attached")))
			continue;
		disk_from_row(b, hvm, &s->disks[s->v.ndisks]);
		cpy(s->vbd_refs[s->v.ndisks], DB_REF_MAX, b->ref);
		cpy(s->vdi_refs[s->v.ndisks], DB_REF_MAX, fs(b, K.vbd, "VDI"));
		s->v.ndisks++;
	}
	for (uint32_t i = 0; i < nn; i++) {
		const struct db_row *f = db_get(K.vif, vifs->u.items[i]->u.s);
		if (f && (!attached || fb(f, K.vif, "currently_attached")))
			nic_from_row(f, &s->nics[s->v.nnics++]);
	}
	db_unlock();
	for (int i = 0; i < s->v.ndisks; i++)
		if (disk_path(s->vdi_refs[i], &s->disks[i], e) < 0) {
			spec_free(s);
			return -1;
		}
	s->v.disks = s->disks;
	s->v.nics = s->nics;
	return 0;
}

/* ---- bookkeeping around a domain ---- */

/* The VM's domid and power state (read lock taken here). */
static int64_t vm_domid(const char *vm, char ps[16])
{
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	int64_t d = r ? fi(r, K.vm, "domid") : -1;
	if (ps)
		cpy(ps, 16, r ? fs(r, K.vm, "power_state") : "");
	db_unlock();
	return d;
}

static void commit_log(struct db_txn *t, const char *what, const char *vm)
{
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0 && strcmp(e.code, "HANDLE_INVALID") != 0)
		log_warn("%s of VM %s: %s", what, vm, e.code);
	xerr_clear(&e);
}

/* VM_metrics after a power-state change (started: a new domain, whose
 * start_time is now) and VBD.device of a started domain's disks; Halted and
 * Suspended VMs lose their guest metrics, as the original's. */
static void metrics_fill(struct db_txn *t, const struct db_row *r, const char *state,
			 const struct spec *s, bool started)
{
	int64_t now = (int64_t)util_now();
	const char *vm = r->ref;
	const char *m = fs(r, K.vm, "metrics");
	if (r && db_get(K.vmm, m)) {
		char low[16];
		lower(state, low, sizeof(low));
		db_txn_set(t, K.vmm, m, api_field(K.vmm, "state"), set1(low));
		db_txn_set(t, K.vmm, m, api_field(K.vmm, "last_updated"), val_datetime_h(now));
		if (started && s) {
			db_txn_set(t, K.vmm, m, api_field(K.vmm, "start_time"), val_datetime_h(now));
			db_txn_set(t, K.vmm, m, api_field(K.vmm, "VCPUs_number"),
				   val_int_h(s->v.vcpus_at_startup));
			db_txn_set(t, K.vmm, m, api_field(K.vmm, "memory_actual"),
				   val_int_h((int64_t)s->v.memory_target));
			db_txn_set(t, K.vmm, m, api_field(K.vmm, "current_domain_type"),
				   val_cstr_h(s->domain_type));
			db_txn_set(t, K.vmm, m, api_field(K.vmm, "hvm"),
				   val_bool_h(s->v.type == XENOPS_HVM));
		}
		if (strcmp(state, "Halted") == 0) {
			db_txn_set(t, K.vmm, m, api_field(K.vmm, "VCPUs_number"), val_int_h(0));
			db_txn_set(t, K.vmm, m, api_field(K.vmm, "memory_actual"), val_int_h(0));
			db_txn_set(t, K.vmm, m, api_field(K.vmm, "current_domain_type"),
				   val_cstr_h("unspecified"));
		}
	}
	if (r && started && s)
		for (int i = 0; i < s->v.ndisks; i++)
			if (db_get(K.vbd, s->vbd_refs[i]))
				db_txn_set(t, K.vbd, s->vbd_refs[i], api_field(K.vbd, "device"),
					   val_cstr_h(s->disks[i].device));
	if (r && (strcmp(state, "Halted") == 0 || strcmp(state, "Suspended") == 0)) {
		const char *gm = fs(r, K.vm, "guest_metrics");
		if (db_get(K.gm, gm))
			db_txn_delete(t, K.gm, gm);
		if (!is_null(gm))
			db_txn_set(t, K.vm, vm, api_field(K.vm, "guest_metrics"), val_cstr_h(NULLREF));
	}
}

/* The guest agent's report, read from the domain, as rows to write. */
struct guest_report {
	struct val **cols;   /* a VM_guest_metrics row; NULL: no report */
	bool have_info;
	struct xenops_dominfo info;
};

static void guest_read(uint32_t domid, struct guest_report *g);
static int guest_fill(struct db_txn *t, const struct db_row *r, struct guest_report *g);

struct after {
	const char *state;
	const struct spec *s;
	bool started;
	struct guest_report g;
};

static void after_fill(struct db_txn *t, const struct db_row *r, void *arg)
{
	struct after *a = arg;
	metrics_fill(t, r, a->state, a->s, a->started);
	if (a->g.cols)
		guest_fill(t, r, &a->g);
}

/* A power-state change (vm_set_power_state) with VM_metrics and, for a
 * started domain (s given), the VBDs' devices and the guest agent's report
 * (one the agent made before the VM row had its domid was ignored by
 * ev_handle), all in one commit.  The operation's end recomputes the
 * allowed operations the guest's features decide. */
static int set_state(const char *vm, const char *state, int64_t domid, const struct spec *s,
		     struct xerr *e)
{
	struct after a = { state, s, s != NULL, { NULL, false } };
	if (s && domid >= 0)
		guest_read((uint32_t)domid, &a.g);
	int rc = vm_set_power_state_with(vm, state, NULL, domid, after_fill, &a, e);
	if (a.g.cols)
		api_cols_free(K.gm, a.g.cols);
	return rc;
}

/* Build and start the domain of vm; the VM becomes Running (Paused). */
static int domain_start(const char *vm, bool paused, struct xerr *e)
{
	struct spec s;
	if (spec_build(vm, &s, false, e) < 0)
		return -1;
	uint32_t domid;
	int rc = xenops_start(&s.v, paused, &domid, e);
	if (rc == 0) {
		if (set_state(vm, paused ? "Paused" : "Running", domid, &s, e) < 0) {
			struct xerr e2 = {0};
			xenops_destroy(domid, &e2);
			xerr_clear(&e2);
			rc = -1;
		}
	}
	spec_free(&s);
	return rc;
}

/* Destroy vm's domain (if any) and make it Halted. */
static int domain_halt(const char *vm, int64_t domid, struct xerr *e)
{
	if (domid >= 0 && xenops_destroy((uint32_t)domid, e) < 0)
		return -1;
	return set_state(vm, "Halted", -1, NULL, e);
}

static int cancel_cb(void *ctx)
{
	return ctx && task_cancelling(ctx);
}

/* A clean shutdown request and its wait, cancellable through the task. */
static int clean_wait(struct api_ctx *c, int64_t domid, enum xenops_reason why)
{
	if (domid < 0) {
		api_fail(c, "INTERNAL_ERROR", 1, "the VM has no domain");
		return -1;
	}
	if (c->task)
		task_set_cancellable(c->task, true);
	int rc = xenops_clean_shutdown((uint32_t)domid, why, shutdown_timeout_s, cancel_cb,
				       (void *)c->task, &c->err);
	if (c->task)
		task_set_cancellable(c->task, false);
	if (rc && c->err.code && strcmp(c->err.code, "TASK_CANCELLED") == 0 && c->err.n == 0) {
		xerr_clear(&c->err);
		api_fail(c, "TASK_CANCELLED", 1, c->task ? c->task : "");
	}
	return rc;
}

/* ---- messages ---- */

static bool vm_exists(struct api_ctx *c, const char *vm)
{
	k();
	db_rdlock();
	bool ok = db_get(K.vm, vm) != NULL;
	db_unlock();
	if (!ok)
		api_fail(c, "HANDLE_INVALID", 2, "VM", vm);
	return ok;
}

static void done(struct api_ctx *c)
{
	if (!api_failed(c))
		enc_void(c->out);
}

static void start_common(struct api_ctx *c, const char *op, bool paused)
{
	const char *vm = api_str(c, 1);
	WITH_VM_OP(c, vm, op, { domain_start(vm, paused, &c->err); });
	done(c);
}

static void vm_start_msg(struct api_ctx *c)
{
	if (vm_exists(c, api_str(c, 1)))
		start_common(c, "start", api_bool(c, 2));
}

/* This host only: a pool of one. */
static bool host_is_here(struct api_ctx *c, const char *host)
{
	db_rdlock();
	bool ok = db_get(K.host, host) != NULL;
	db_unlock();
	if (!ok)
		api_fail(c, "HANDLE_INVALID", 2, "host", host);
	else if (strcmp(host, api_srv.host_ref) != 0) {
		api_fail(c, "HOST_OFFLINE", 1, host);
		return false;
	}
	return ok;
}

static void vm_start_on(struct api_ctx *c)
{
	if (vm_exists(c, api_str(c, 1)) && host_is_here(c, api_str(c, 2)))
		start_common(c, "start_on", api_bool(c, 3));
}

static void vm_clean_shutdown(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "clean_shutdown", {
		int64_t d = vm_domid(vm, NULL);
		if (clean_wait(c, d, XENOPS_POWEROFF) == 0)
			domain_halt(vm, d, &c->err);
	});
	done(c);
}

/* A Suspended VM's suspend image goes with it (the original destroys it). */
static int drop_suspend_vdi(const char *vm, const char *task, struct xerr *e)
{
	db_rdlock();
	char vdi[DB_REF_MAX];
	cpy(vdi, sizeof(vdi), fs(db_get(K.vm, vm), K.vm, "suspend_VDI"));
	bool exists = db_get(K.vdi, vdi) != NULL;
	db_unlock();
	if (exists && storage_vdi_destroy(vdi, task, e) < 0)
		return -1;
	struct db_txn *t = db_txn_new();
	db_txn_set(t, K.vm, vm, api_field(K.vm, "suspend_VDI"), val_cstr_h(NULLREF));
	return db_txn_commit(t, e);
}

/* Hard shutdown of a VM in power state ps (its domain d): Halted. */
static int hard_halt(const char *vm, const char *ps, int64_t d, const char *task, struct xerr *e)
{
	if (strcmp(ps, "Suspended") == 0)
		return drop_suspend_vdi(vm, task, e) < 0 ? -1 : domain_halt(vm, -1, e);
	if (strcmp(ps, "Halted") != 0)
		return domain_halt(vm, d, e);
	return 0;
}

static int hard_shutdown_do(const char *vm, const char *task, struct xerr *e)
{
	char ps[16];
	int64_t d = vm_domid(vm, ps);
	return hard_halt(vm, ps, d, task, e);
}

static void vm_hard_shutdown(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "hard_shutdown", hard_shutdown_do(vm, c->task, &c->err));
	done(c);
}

int vm_power_hard_shutdown(const char *vm, const char *task, struct xerr *e)
{
	k();
	char key[DB_REF_MAX];
	db_ref_new(key);
	if (vm_op_begin(vm, key, "hard_shutdown", task, e) < 0)
		return -1;
	int rc = hard_shutdown_do(vm, task, e);
	vm_op_end(vm, key);
	return rc;
}

static void shutdown_do(struct api_ctx *c, const char *vm)
{
	char ps[16];
	int64_t d = vm_domid(vm, ps);
	if (strcmp(ps, "Running") == 0 && clean_wait(c, d, XENOPS_POWEROFF) < 0) {
		if (strcmp(c->err.code, "TASK_CANCELLED") == 0)
			return;
		log_info("VM.shutdown %s: clean shutdown failed (%s); hard shutdown", vm, c->err.code);
		xerr_clear(&c->err);
	}
	hard_halt(vm, ps, d, c->task, &c->err);
}

/* VM.shutdown: a clean shutdown, and a hard one if it fails (timeout). */
static void vm_shutdown(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "shutdown", shutdown_do(c, vm));
	done(c);
}

/* Destroy the domain and build a new one (the same VM; Running). */
static int domain_restart(const char *vm, int64_t d, struct xerr *e)
{
	if (d >= 0 && xenops_destroy((uint32_t)d, e) < 0)
		return -1;
	if (domain_start(vm, false, e) == 0)
		return 0;
	/* the new domain could not be built: the VM is Halted */
	struct xerr e2 = {0};
	domain_halt(vm, -1, &e2);
	xerr_clear(&e2);
	return -1;
}

static void vm_clean_reboot(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "clean_reboot", {
		int64_t d = vm_domid(vm, NULL);
		if (clean_wait(c, d, XENOPS_REBOOT) == 0)
			domain_restart(vm, d, &c->err);
	});
	done(c);
}

static void vm_hard_reboot(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "hard_reboot", { domain_restart(vm, vm_domid(vm, NULL), &c->err); });
	done(c);
}

static void pause_common(struct api_ctx *c, bool pause)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, pause ? "pause" : "unpause", {
		int64_t d = vm_domid(vm, NULL);
		int rc = d < 0 ? (api_fail(c, "INTERNAL_ERROR", 1, "the VM has no domain"), -1)
			 : pause ? xenops_pause((uint32_t)d, &c->err)
				 : xenops_unpause((uint32_t)d, &c->err);
		if (rc == 0)
			set_state(vm, pause ? "Paused" : "Running", d, NULL, &c->err);
	});
	done(c);
}

static void vm_pause(struct api_ctx *c)
{
	pause_common(c, true);
}
static void vm_unpause(struct api_ctx *c)
{
	pause_common(c, false);
}

/* ---- suspend / resume ---- */

/* Where the suspend image goes: VM.suspend_SR, the pool's
 * suspend_image_SR, its default_SR. */
static bool suspend_sr(const char *vm, char out[DB_REF_MAX])
{
	static const char *const sr_cls = "SR";
	int sr = idl_class_find(sr_cls);
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	const struct db_row *p = db_get(K.pool, api_srv.pool_ref);
	const char *cand[3] = {fs(r, K.vm, "suspend_SR"), fs(p, K.pool, "suspend_image_SR"),
			       fs(p, K.pool, "default_SR")};
	bool ok = false;
	for (int i = 0; i < 3 && !ok; i++)
		if (!is_null(cand[i]) && db_get(sr, cand[i])) {
			cpy(out, DB_REF_MAX, cand[i]);
			ok = true;
		}
	db_unlock();
	return ok;
}

static int write_image(const char *vdi, int fd, const char *task, struct xerr *e)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		goto io;
	size_t len = (size_t)st.st_size;
	char *buf = util_malloc(len + SUSPEND_HDR);
	memset(buf, 0, SUSPEND_HDR);
	snprintf(buf, SUSPEND_HDR, "cxapi-suspend-image %zu\n", len);
	if (pread(fd, buf + SUSPEND_HDR, len, 0) != (ssize_t)len) {
		free(buf);
		goto io;
	}
	struct sm_image img = {0};
	int rc = storage_vdi_open(vdi, true, task, &img, e);
	if (rc == 0) {
		if (len + SUSPEND_HDR > img.virtual_size)
			rc = -EFBIG;
		else
			rc = sm_image_pwrite(&img, buf, len + SUSPEND_HDR, 0);
		struct xerr ce = {0};
		if (storage_vdi_close(&img, &ce) < 0 && rc == 0)
			xerr_move(e, &ce), rc = -1;
		xerr_clear(&ce);
		if (rc < -1)
			xerr_set(e, "INTERNAL_ERROR", 1, "writing the suspend image failed");
	}
	free(buf);
	return rc ? -1 : 0;
io:
	xerr_set(e, "INTERNAL_ERROR", 1, "reading the suspend image failed");
	return -1;
}

/* The image of a suspend VDI into a memory file; its fd or -1. */
static int read_image(const char *vdi, const char *task, struct xerr *e)
{
	struct sm_image img = {0};
	if (storage_vdi_open(vdi, false, task, &img, e) < 0)
		return -1;
	char hdr[SUSPEND_HDR + 1] = {0};
	size_t len = 0;
	int fd = -1;
	char *buf = NULL;
	if (img.virtual_size < SUSPEND_HDR || sm_image_pread(&img, hdr, SUSPEND_HDR, 0) ||
	    sscanf(hdr, "cxapi-suspend-image %zu", &len) != 1 ||
	    len > img.virtual_size - SUSPEND_HDR) {
		xerr_set(e, "INTERNAL_ERROR", 1, "the suspend image is not readable");
		goto out;
	}
	buf = util_malloc(len + 1);
	if (sm_image_pread(&img, buf, len, SUSPEND_HDR)) {
		xerr_set(e, "INTERNAL_ERROR", 1, "the suspend image is not readable");
		goto out;
	}
	fd = memfd_create("cxapi-resume", MFD_CLOEXEC);
	if (fd < 0 || pwrite(fd, buf, len, 0) != (ssize_t)len || lseek(fd, 0, SEEK_SET) < 0) {
		if (fd >= 0)
			close(fd);
		fd = -1;
		xerr_set(e, "INTERNAL_ERROR", 1, "no memory file for the suspend image");
	}
out:
	free(buf);
	struct xerr ce = {0};
	storage_vdi_close(&img, &ce);
	xerr_clear(&ce);
	return fd;
}

static void suspend_do(struct api_ctx *c, const char *vm)
{
	char sr[DB_REF_MAX], vdi[DB_REF_MAX];
	int64_t d = vm_domid(vm, NULL);
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	uint64_t size = (uint64_t)fi(r, K.vm, "memory_static_max") + (uint64_t)MIB;
	char name[300];
	snprintf(name, sizeof(name), "Suspend image of %s", fs(r, K.vm, "name_label"));
	db_unlock();
	if (!suspend_sr(vm, sr)) {
		api_fail(c, "VM_NO_SUSPEND_SR", 1, vm);
		return;
	}
	if (storage_vdi_create_in_sr(sr, name, size, "suspend", false, NULL, c->task, vdi,
				     &c->err) < 0)
		return;
	int fd = memfd_create("cxapi-suspend", MFD_CLOEXEC);
	int rc = fd < 0 ? (api_fail(c, "INTERNAL_ERROR", 1, "no memory file"), -1)
			: xenops_suspend((uint32_t)d, fd, &c->err);
	if (rc == 0) {
		/* the domain is gone: from here the VM is Suspended or Halted */
		if (write_image(vdi, fd, c->task, &c->err) == 0) {
			struct db_txn *t = db_txn_new();
			db_txn_set(t, K.vm, vm, api_field(K.vm, "suspend_VDI"), val_cstr_h(vdi));
			if (api_commit(c, t) == 0)
				set_state(vm, "Suspended", -1, NULL, &c->err);
		}
		if (api_failed(c)) {
			struct xerr e2 = {0};
			domain_halt(vm, -1, &e2);
			xerr_clear(&e2);
		}
	}
	if (fd >= 0)
		close(fd);
	if (api_failed(c)) {
		struct xerr e2 = {0};
		storage_vdi_destroy(vdi, c->task, &e2);
		xerr_clear(&e2);
	}
}

static void vm_suspend(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "suspend", suspend_do(c, vm));
	done(c);
}

static void resume_do(struct api_ctx *c, const char *vm, bool paused)
{
	char vdi[DB_REF_MAX];
	db_rdlock();
	cpy(vdi, sizeof(vdi), fs(db_get(K.vm, vm), K.vm, "suspend_VDI"));
	db_unlock();
	struct spec s;
	if (spec_build(vm, &s, false, &c->err) < 0)
		return;
	int fd = read_image(vdi, c->task, &c->err);
	uint32_t domid;
	if (fd >= 0 && xenops_resume(&s.v, fd, paused, &domid, &c->err) == 0) {
		if (set_state(vm, paused ? "Paused" : "Running", domid, &s, &c->err) == 0) {
			struct xerr e2 = {0};
			if (drop_suspend_vdi(vm, c->task, &e2) < 0)
				log_warn("VM %s resumed; its suspend VDI %s: %s", vm, vdi, e2.code);
			xerr_clear(&e2);
		}
	}
	if (fd >= 0)
		close(fd);
	spec_free(&s);
}

static void resume_common(struct api_ctx *c, const char *op, bool paused)
{
	const char *vm = api_str(c, 1);
	WITH_VM_OP(c, vm, op, resume_do(c, vm, paused));
	done(c);
}

static void vm_resume(struct api_ctx *c)
{
	if (vm_exists(c, api_str(c, 1)))
		resume_common(c, "resume", api_bool(c, 2));
}

static void vm_resume_on(struct api_ctx *c)
{
	if (vm_exists(c, api_str(c, 1)) && host_is_here(c, api_str(c, 2)))
		resume_common(c, "resume_on", api_bool(c, 3));
}

/* ---- checkpoint (xapi_vm_snapshot.ml) ---- */

/* A Running VM is suspended (its image into a suspend VDI, the VM Suspended
 * but still resident), its disks and suspend image snapshotted into a
 * Suspended snapshot VM, then resumed from the image (a new domain) and the
 * suspend VDI dropped; a Paused or Suspended VM is snapshotted as it is. */
static void checkpoint_do(struct api_ctx *c, const char *vm, const char *name, const char *key)
{
	char ps[16], out[DB_REF_MAX];
	vm_domid(vm, ps);
	bool running = strcmp(ps, "Running") == 0;
	if (running) {
		suspend_do(c, vm);
		if (api_failed(c))
			return;
	}
	if (c->task)
		task_set_cancellable(c->task, true);
	int rc = vm_checkpoint_copy(vm, name, ps, c->task, key, out, &c->err);
	if (c->task)
		task_set_cancellable(c->task, false);
	if (!running) {
		if (rc == 0)
			enc_cstr(c->out, out);
		return;
	}
	/* the VM runs again whatever became of the copy (the original's
	 * "slow resume"); a failed resume is the answer */
	struct xerr copy_err = {0};
	xerr_move(&copy_err, &c->err);
	resume_do(c, vm, false);
	if (api_failed(c)) {
		xerr_clear(&copy_err);
	} else if (rc < 0) {
		xerr_move(&c->err, &copy_err);
	} else {
		enc_cstr(c->out, out);
	}
}

static void vm_checkpoint(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "checkpoint", checkpoint_do(c, vm, api_str(c, 2), key_));
}

/* ---- live changes ---- */

static void vm_send_sysrq(struct api_ctx *c)
{
	const char *vm = api_str(c, 1), *key = api_str(c, 2);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "send_sysrq", {
		if (strlen(key) != 1)
			api_fail(c, "INVALID_VALUE", 2, "key", key);
		else
			xenops_sysrq((uint32_t)vm_domid(vm, NULL), key[0], &c->err);
	});
	done(c);
}

static void vm_send_trigger(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "send_trigger", {
		xenops_trigger((uint32_t)vm_domid(vm, NULL), api_str(c, 2), &c->err);
	});
	done(c);
}

static void vm_set_vcpus_number_live(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	int64_t n = api_int(c, 2);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "changing_VCPUs_live", {
		db_rdlock();
		const struct db_row *r = db_get(K.vm, vm);
		int64_t max = fi(r, K.vm, "VCPUs_max");
		char m[DB_REF_MAX];
		cpy(m, sizeof(m), fs(r, K.vm, "metrics"));
		db_unlock();
		if (n < 1 || n > max) {
			char v[24];
			snprintf(v, sizeof(v), "%" PRId64, n);
			api_fail(c, "INVALID_VALUE", 2, "nvcpu", v);
		} else if (xenops_set_vcpus((uint32_t)vm_domid(vm, NULL), (uint32_t)n, &c->err) == 0) {
			struct db_txn *t = db_txn_new();
			db_txn_set(t, K.vm, vm, api_field(K.vm, "VCPUs_at_startup"), val_int_h(n));
			db_rdlock();
			if (db_get(K.vmm, m))
				db_txn_set(t, K.vmm, m, api_field(K.vmm, "VCPUs_number"), val_int_h(n));
			db_unlock();
			api_commit(c, t);
		}
	});
	done(c);
}

/* ---- live memory ---- */

/* VM.set_memory_target_live (deprecated): the original takes the operation
 * and leaves the target alone (set_memory_dynamic_range moves it). */
static void vm_set_memory_target_live(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "changing_memory_live", {});
	done(c);
}

#define TARGET_TOLERANCE (1 << 20)  /* the original's, bytes */
#define TARGET_WAIT_S 256

/* VM.wait_memory_target_live (deprecated): until the domain's memory is
 * within 1 MiB of its balloon target, at most 256 s (the original's
 * tolerance and timeout: VM_MEMORY_TARGET_WAIT_TIMEOUT), or the task's
 * cancellation. */
static void vm_wait_memory_target_live(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "awaiting_memory_live", {
		int64_t d = vm_domid(vm, NULL);
		double end = util_now_f() + TARGET_WAIT_S;
		struct xenops_dominfo info;
		uint64_t target;
		while (d >= 0 && xenops_info((uint32_t)d, &info, &c->err) == 0 &&
		       xenops_get_memory_target((uint32_t)d, &target, &c->err) == 0) {
			uint64_t diff = info.memory_actual > target ? info.memory_actual - target
								    : target - info.memory_actual;
			if (diff <= TARGET_TOLERANCE)
				break;
			if (util_now_f() > end) {
				api_fail(c, "VM_MEMORY_TARGET_WAIT_TIMEOUT", 0);
				break;
			}
			if (c->task && task_cancelling(c->task)) {
				api_fail(c, "TASK_CANCELLED", 1, c->task);
				break;
			}
			struct timespec ts = { 0, 50 * 1000 * 1000 };
			nanosleep(&ts, NULL);
		}
		if (d < 0 && !api_failed(c))
			api_fail(c, "INTERNAL_ERROR", 1, "the VM has no domain");
	});
	done(c);
}

/* VM.set_shadow_multiplier_live: an HVM guest's shadow memory multiplier
 * (at least 1.0), and the memory overhead that follows from it.  The sim
 * hypervisor charges no shadow memory, so only the VM's fields change. */
static void vm_set_shadow_multiplier_live(struct api_ctx *c)
{
	const char *vm = api_str(c, 1);
	double mult = api_float(c, 2);
	if (!vm_exists(c, vm))
		return;
	WITH_VM_OP(c, vm, "changing_shadow_memory_live", {
		db_rdlock();
		const struct db_row *r = db_get(K.vm, vm);
		bool hvm = vm_hvm(r);
		int64_t ovh = vm_overhead_bytes(fi(r, K.vm, "memory_static_max"),
						(int)fi(r, K.vm, "VCPUs_max"), mult, hvm);
		db_unlock();
		char v[32];
		snprintf(v, sizeof(v), "%g", mult);
		if (mult < 1.0) {
			api_fail(c, "INVALID_VALUE", 2, "multiplier", v);
		} else if (!hvm) {
			api_fail(c, "VM_HVM_REQUIRED", 1, vm);
		} else {
			struct db_txn *t = db_txn_new();
			db_txn_set(t, K.vm, vm, api_field(K.vm, "HVM_shadow_multiplier"),
				   val_double_h(mult));
			db_txn_set(t, K.vm, vm, api_field(K.vm, "memory_overhead"), val_int_h(ovh));
			api_commit(c, t);
		}
	});
	done(c);
}

/* The domain's balloon reached target (or 2 s passed): its memory_actual
 * into VM_metrics. */
static void memory_actual_follow(const char *vm, uint32_t domid, uint64_t target)
{
	struct xenops_dominfo info;
	struct xerr e = {0};
	int rc;
	for (int i = 0; (rc = xenops_info(domid, &info, &e)) == 0 && info.memory_actual != target &&
			i < 40;
	     i++)
		ops_sleep_ms(50);
	xerr_clear(&e);
	if (rc < 0)
		return;
	struct db_txn *t = db_txn_new();
	db_rdlock();
	const char *m = fs(db_get(K.vm, vm), K.vm, "metrics");
	if (db_get(K.vmm, m)) {
		db_txn_set(t, K.vmm, m, api_field(K.vmm, "memory_actual"),
			   val_int_h((int64_t)info.memory_actual));
		db_txn_set(t, K.vmm, m, api_field(K.vmm, "last_updated"),
			   val_datetime_h((int64_t)util_now()));
	}
	db_unlock();
	commit_log(t, "memory_actual", vm);
}

int vm_power_balloon(const char *vm, struct xerr *e)
{
	k();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	bool live = strcmp(fs(r, K.vm, "power_state"), "Running") == 0 ||
		    strcmp(fs(r, K.vm, "power_state"), "Paused") == 0;
	int64_t d = fi(r, K.vm, "domid");
	uint64_t dmin = (uint64_t)fi(r, K.vm, "memory_dynamic_min");
	uint64_t dmax = (uint64_t)fi(r, K.vm, "memory_dynamic_max");
	bool ctl = fb(r, K.vm, "is_control_domain");
	db_unlock();
	if (!live || d < 0 || ctl)
		return 0;
	/* as squeezed balances: as much as the range allows, as far as the
	 * host's free memory goes, never below dynamic_min */
	struct xenops_dominfo info;
	if (xenops_info((uint32_t)d, &info, e) < 0)
		return -1;
	uint64_t target = dmax;
	if (target > info.memory_actual) {
		uint64_t room = info.memory_actual + xenops_host_free_memory();
		if (target > room)
			target = room > dmin ? room : dmin;
	}
	if (xenops_set_memory_target((uint32_t)d, target, e) < 0)
		return -1;
	memory_actual_follow(vm, (uint32_t)d, target);
	return 0;
}

/* VM.power_state_reset (xapi_vm.ml): refused on control domains; a VM this
 * host runs a domain for stays as it is (DOMAIN_EXISTS) while the domain
 * runs; a paused or shut-down domain is destroyed (the original forgets
 * it in xenopsd), then the Halted bookkeeping. */
static void vm_power_state_reset(struct api_ctx *c)
{
	k();
	const char *vm = api_str(c, 1);
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	bool ctl = fb(r, K.vm, "is_control_domain");
	char uuid[40];
	cpy(uuid, sizeof(uuid), fs(r, K.vm, "uuid"));
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "VM", vm);
		return;
	}
	if (ctl) {
		api_fail(c, "CANNOT_RESET_CONTROL_DOMAIN", 1, vm);
		return;
	}
	char ps[16];
	int64_t d = vm_domid(vm, ps);
	if ((strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0) && d >= 0) {
		struct xenops_dominfo info;
		struct xerr e = {0};
		if (xenops_info((uint32_t)d, &info, &e) == 0 && strcmp(info.uuid, uuid) == 0) {
			if (info.state == XENOPS_RUNNING) {
				api_fail(c, "DOMAIN_EXISTS", 1, vm);
				return;
			}
			if (xenops_destroy((uint32_t)d, &e) < 0)
				log_warn("VM.power_state_reset %s: domain %" PRId64 ": %s", vm, d, e.code);
		}
		xerr_clear(&e);
	}
	if (domain_halt(vm, -1, &c->err) == 0)
		enc_void(c->out);
}

/* ---- VBD and VIF plug/unplug, CDs ---- */

#define WITH_DEV_OP(c, cls, ref, op, vm, ...)                                        \
	do {                                                                          \
		const char *key_ = ops_key((c)->a, (c)->task);                        \
		if (vm_dev_op_begin((cls), (ref), (op), key_, (c)->task, (vm), &(c)->err) < 0) \
			break;                                                        \
		__VA_ARGS__;                                                          \
		vm_dev_op_end((cls), (ref), key_, (vm));                              \
	} while (0)

static void set_attached(struct api_ctx *c, int cls, const char *ref, bool att, const char *dev)
{
	struct db_txn *t = db_txn_new();
	db_txn_set(t, cls, ref, api_field(cls, "currently_attached"), val_bool_h(att));
	if (dev)
		db_txn_set(t, cls, ref, api_field(cls, "device"), val_cstr_h(dev));
	api_commit(c, t);
}

/* The disk of a VBD, its backing file resolved. */
static int vbd_disk(const char *vbd, const char *vm, struct xenops_disk *d, struct xerr *e)
{
	char vdi[DB_REF_MAX];
	db_rdlock();
	const struct db_row *b = db_get(K.vbd, vbd);
	disk_from_row(b, vm_hvm(db_get(K.vm, vm)), d);
	cpy(vdi, sizeof(vdi), fs(b, K.vbd, "VDI"));
	db_unlock();
	return disk_path(vdi, d, e);
}

static void vbd_plug(struct api_ctx *c)
{
	k();
	const char *vbd = api_str(c, 1);
	char vm[DB_REF_MAX];
	WITH_DEV_OP(c, K.vbd, vbd, "plug", vm, {
		struct xenops_disk d = {0};
		if (vbd_disk(vbd, vm, &d, &c->err) == 0 &&
		    xenops_disk_plug((uint32_t)vm_domid(vm, NULL), &d, &c->err) == 0)
			set_attached(c, K.vbd, vbd, true, d.device);
	});
	done(c);
}

static void vbd_unplug_common(struct api_ctx *c, bool force)
{
	k();
	const char *vbd = api_str(c, 1);
	char vm[DB_REF_MAX];
	WITH_DEV_OP(c, K.vbd, vbd, force ? "unplug_force" : "unplug", vm, {
		struct xenops_disk d = {0};
		db_rdlock();
		disk_from_row(db_get(K.vbd, vbd), vm_hvm(db_get(K.vm, vm)), &d);
		db_unlock();
		if (xenops_disk_unplug((uint32_t)vm_domid(vm, NULL), d.device, force, &c->err) == 0)
			set_attached(c, K.vbd, vbd, false, NULL);
	});
	done(c);
}

static void vbd_unplug(struct api_ctx *c)
{
	vbd_unplug_common(c, false);
}
static void vbd_unplug_force(struct api_ctx *c)
{
	vbd_unplug_common(c, true);
}

/* CD insert/eject: the running domain's drive, then the row (a halted VM's
 * only the row); currently_attached stays as it is. */
static void vbd_media(struct api_ctx *c, bool insert)
{
	k();
	const char *vbd = api_str(c, 1), *vdi = insert ? api_str(c, 2) : NULL;
	char vm[DB_REF_MAX];
	if (insert) {
		db_rdlock();
		bool ok = db_get(K.vdi, vdi) != NULL;
		db_unlock();
		if (!ok) {
			api_fail(c, "HANDLE_INVALID", 2, "VDI", vdi);
			return;
		}
	}
	WITH_DEV_OP(c, K.vbd, vbd, insert ? "insert" : "eject", vm, {
		char ps[16];
		int64_t d = vm_domid(vm, ps);
		bool live = (strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0) && d >= 0;
		struct xenops_disk dk = {0};
		db_rdlock();
		disk_from_row(db_get(K.vbd, vbd), vm_hvm(db_get(K.vm, vm)), &dk);
		db_unlock();
		int rc = 0;
		if (live && insert) {
			char fmt[8];
			rc = storage_vdi_path(vdi, dk.path, sizeof(dk.path), fmt, &c->err);
			if (rc == 0)
				rc = xenops_cd_insert((uint32_t)d, dk.device, dk.path, &c->err);
		} else if (live) {
			rc = xenops_cd_eject((uint32_t)d, dk.device, &c->err);
		}
		if (rc == 0) {
			struct db_txn *t = db_txn_new();
			db_txn_set(t, K.vbd, vbd, api_field(K.vbd, "VDI"),
				   val_cstr_h(insert ? vdi : NULLREF));
			db_txn_set(t, K.vbd, vbd, api_field(K.vbd, "empty"), val_bool_h(!insert));
			api_commit(c, t);
		}
	});
	done(c);
}

static void vbd_insert(struct api_ctx *c)
{
	vbd_media(c, true);
}
static void vbd_eject(struct api_ctx *c)
{
	vbd_media(c, false);
}

static void vif_plug(struct api_ctx *c)
{
	k();
	const char *vif = api_str(c, 1);
	char vm[DB_REF_MAX];
	WITH_DEV_OP(c, K.vif, vif, "plug", vm, {
		struct xenops_nic n = {0};
		db_rdlock();
		nic_from_row(db_get(K.vif, vif), &n);
		db_unlock();
		if (xenops_nic_plug((uint32_t)vm_domid(vm, NULL), &n, &c->err) == 0)
			set_attached(c, K.vif, vif, true, NULL);
	});
	done(c);
}

static void vif_unplug_common(struct api_ctx *c, bool force)
{
	k();
	const char *vif = api_str(c, 1);
	char vm[DB_REF_MAX];
	WITH_DEV_OP(c, K.vif, vif, "unplug", vm, {
		struct xenops_nic n = {0};
		db_rdlock();
		nic_from_row(db_get(K.vif, vif), &n);
		db_unlock();
		if (xenops_nic_unplug((uint32_t)vm_domid(vm, NULL), n.devid, force, &c->err) == 0)
			set_attached(c, K.vif, vif, false, NULL);
	});
	done(c);
}

static void vif_unplug(struct api_ctx *c)
{
	vif_unplug_common(c, false);
}
static void vif_unplug_force(struct api_ctx *c)
{
	vif_unplug_common(c, true);
}

/* ---- what guests do by themselves: events ---- */

struct ev {
	struct ev *next;
	enum xenops_event ev;
	char uuid[40];
	uint32_t domid;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct ev *head, **tail;
	bool stop, on;
	pthread_t thread;
} Q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, &Q.head, false, false};

void vm_power_on_event(void *ctx, enum xenops_event ev, const char *vm_uuid, uint32_t domid)
{
	if (ev == XENOPS_EV_DEVICE) /* the guest reports its NICs once connected */
		ev = XENOPS_EV_GUEST;
	struct ev *e = util_calloc(1, sizeof(*e));
	e->ev = ev;
	cpy(e->uuid, sizeof(e->uuid), vm_uuid);
	e->domid = domid;
	pthread_mutex_lock(&Q.lock);
	*Q.tail = e;
	Q.tail = &e->next;
	pthread_cond_signal(&Q.cond);
	pthread_mutex_unlock(&Q.lock);
}

/* Guest agent data → VM_guest_metrics (xapi_guest_agent.ml), and the
 * domain's memory into VM_metrics: read (no report: g->cols NULL) ... */
static void guest_read(uint32_t domid, struct guest_report *g)
{
	struct xenops_guest x;
	struct xerr e = {0};
	g->cols = NULL;
	if (xenops_guest(domid, &x, &e) < 0 || !x.present) {
		xerr_clear(&e);
		return;
	}
	g->have_info = xenops_info(domid, &g->info, &e) == 0;
	xerr_clear(&e);
	struct val **cols = g->cols = api_row_new(K.gm);
	api_row_set(K.gm, cols, "os_version", map_of_lines(x.os_version));
	api_row_set(K.gm, cols, "PV_drivers_version", map_of_lines(x.pv_drivers));
	api_row_set(K.gm, cols, "networks", map_of_lines(x.networks));
	char mem[96];
	snprintf(mem, sizeof(mem), "free=%" PRIu64 "\ntotal=%" PRIu64, x.memory_free / 1024,
		 x.memory_total / 1024);
	api_row_set(K.gm, cols, "memory", map_of_lines(mem));
	api_row_set(K.gm, cols, "other",
		    map_of_lines(x.feature_shutdown ? (x.can_suspend ? "feature-shutdown=1\nfeature-suspend=1"
								     : "feature-shutdown=1")
						    : ""));
	api_row_set(K.gm, cols, "PV_drivers_up_to_date", val_bool_h(true));
	api_row_set(K.gm, cols, "PV_drivers_detected", val_bool_h(true));
	api_row_set(K.gm, cols, "live", val_bool_h(true));
	api_row_set(K.gm, cols, "can_use_hotplug_vbd", val_cstr_h("yes"));
	api_row_set(K.gm, cols, "can_use_hotplug_vif", val_cstr_h("yes"));
	api_row_set(K.gm, cols, "last_updated",
		    val_datetime_h(x.last_updated ? x.last_updated : (int64_t)util_now()));
}

/* ... and written into t, for the VM of row r (under the read lock; the
 * report's columns are taken).  0: nothing new; 1: the domain's memory or
 * vCPUs only; 2: the guest metrics changed. */
static int guest_fill(struct db_txn *t, const struct db_row *r, struct guest_report *g)
{
	/* last_updated last: a change of it alone is no change */
	static const char *const upd[] = {"os_version", "PV_drivers_version", "networks", "memory",
					  "other", "PV_drivers_up_to_date", "PV_drivers_detected",
					  "live", "can_use_hotplug_vbd", "can_use_hotplug_vif",
					  "last_updated"};
	struct val **cols = g->cols;
	g->cols = NULL;
	const char *vm = r->ref;
	const char *gm = fs(r, K.vm, "guest_metrics");
	const struct db_row *gr = db_get(K.gm, gm);
	bool changed = !gr;
	for (size_t i = 0; gr && i + 1 < sizeof(upd) / sizeof(upd[0]); i++) {
		int f = api_field(K.gm, upd[i]);
		changed |= !gr->cols[f] || !val_equal(gr->cols[f], cols[f]);
	}
	const struct db_row *mr = db_get(K.vmm, fs(r, K.vm, "metrics"));
	bool mem_changed = g->have_info && mr &&
			   (fi(mr, K.vmm, "memory_actual") != (int64_t)g->info.memory_actual ||
			    fi(mr, K.vmm, "VCPUs_number") != (int64_t)g->info.vcpus_online);
	if (!changed && !mem_changed) {
		api_cols_free(K.gm, cols);
		return 0;
	}
	if (!changed) {
		api_cols_free(K.gm, cols);
	} else if (gr) {
		for (size_t i = 0; i < sizeof(upd) / sizeof(upd[0]); i++) {
			int f = api_field(K.gm, upd[i]);
			struct val *v = cols[f];
			cols[f] = NULL;
			if (gr->cols[f] && val_equal(gr->cols[f], v) && strcmp(upd[i], "last_updated"))
				val_free(v);
			else
				db_txn_set(t, K.gm, gm, f, v);
		}
		api_cols_free(K.gm, cols);
	} else {
		char ref[DB_REF_MAX], uuid[40];
		db_ref_new(ref);
		db_uuid_new(uuid);
		api_row_set(K.gm, cols, "uuid", val_cstr_h(uuid));
		db_txn_insert(t, K.gm, ref, cols);
		db_txn_set(t, K.vm, vm, api_field(K.vm, "guest_metrics"), val_cstr_h(ref));
	}
	const char *m = fs(r, K.vm, "metrics");
	if (g->have_info && db_get(K.vmm, m)) {
		db_txn_set(t, K.vmm, m, api_field(K.vmm, "memory_actual"),
			   val_int_h((int64_t)g->info.memory_actual));
		db_txn_set(t, K.vmm, m, api_field(K.vmm, "VCPUs_number"),
			   val_int_h(g->info.vcpus_online));
		db_txn_set(t, K.vmm, m, api_field(K.vmm, "last_updated"),
			   val_datetime_h((int64_t)util_now()));
	}
	return changed ? 2 : 1;
}

/* A report of the running domain domid of vm, committed. */
static void guest_update(const char *vm, uint32_t domid)
{
	struct guest_report g;
	guest_read(domid, &g);
	if (!g.cols)
		return;
	struct db_txn *t = db_txn_new();
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	int what = 0;
	if (r && fi(r, K.vm, "domid") == (int64_t)domid)
		what = guest_fill(t, r, &g);
	else
		api_cols_free(K.gm, g.cols);
	db_unlock();
	if (!what) {
		db_txn_free(t);
		return;
	}
	commit_log(t, "guest metrics", vm);
	/* the guest's features decide clean_shutdown, clean_reboot, suspend
	 * (the original's guest agent update recomputes them too) */
	if (what == 2)
		vm_update_allowed(vm);
}

/* Operations during which the operation itself handles the domain's end. */
static bool busy_with_domain(const struct val *cur)
{
	static const char *const ops[] = {"start", "start_on", "clean_shutdown", "hard_shutdown",
					  "shutdown", "clean_reboot", "hard_reboot", "suspend",
					  "resume", "resume_on", "checkpoint", "pool_migrate",
					  "migrate_send", "pause", "unpause", NULL};
	for (uint32_t i = 0; i < n_of(cur); i++)
		for (int j = 0; ops[j]; j++)
			if (cur->u.members[i].v->kind == V_STR &&
			    strcmp(cur->u.members[i].v->u.s, ops[j]) == 0)
				return true;
	return false;
}

/* The domain shut down by itself (the guest powered off, rebooted, crashed):
 * actions_after_shutdown / _reboot / _crash, as xenopsd and xapi_xenops do. */
static void domain_down(const char *vm, uint32_t domid, enum xenops_reason why)
{
	const char *field = why == XENOPS_REBOOT ? "actions_after_reboot"
			    : why == XENOPS_CRASH ? "actions_after_crash"
						  : "actions_after_shutdown";
	char action[32];
	db_rdlock();
	const struct db_row *r = db_get(K.vm, vm);
	cpy(action, sizeof(action), fs(r, K.vm, field));
	db_unlock();
	bool restart = strcmp(action, "restart") == 0 || strcmp(action, "coredump_and_restart") == 0 ||
		       strcmp(action, "rename_restart") == 0;
	bool preserve = strcmp(action, "preserve") == 0;
	log_info("VM %s: domain %u shut down by itself (%s): %s", vm, domid,
		 why == XENOPS_REBOOT ? "reboot" : why == XENOPS_CRASH ? "crash"
			: why == XENOPS_SUSPEND ? "suspend" : "poweroff",
		 action);
	char key[DB_REF_MAX];
	db_ref_new(key);
	struct xerr e = {0};
	const char *op = restart ? "hard_reboot" : "hard_shutdown";
	if (vm_op_begin(vm, key, op, NULL, &e) < 0) {
		log_warn("VM %s: cannot apply %s=%s: %s", vm, field, action, e.code);
		xerr_clear(&e);
		return;
	}
	if (vm_domid(vm, NULL) == (int64_t)domid) {
		int rc;
		if (preserve)
			rc = vm_set_power_state(vm, "Paused", NULL, domid, &e); /* left as it is */
		else if (restart)
			rc = domain_restart(vm, domid, &e);
		else
			rc = domain_halt(vm, domid, &e);
		if (rc < 0)
			log_warn("VM %s: %s=%s failed: %s", vm, field, action, e.code);
	}
	xerr_clear(&e);
	vm_op_end(vm, key);
}

/* The guests' VMs with their domains: Running ones, and Paused ones too if
 * paused.  *out malloc'd; returns how many. */
struct dom {
	char ref[DB_REF_MAX];
	uint32_t domid;
};

static int doms_of(struct dom **out, bool paused)
{
	struct dom *v = NULL;
	int n = 0, cap = 0;
	db_rdlock();
	for (struct db_row *r = db_next(K.vm, NULL); r; r = db_next(K.vm, r)) {
		const char *ps = fs(r, K.vm, "power_state");
		if (fb(r, K.vm, "is_control_domain") || fi(r, K.vm, "domid") < 0 ||
		    (strcmp(ps, "Running") && (!paused || strcmp(ps, "Paused"))))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = util_realloc(v, (size_t)cap * sizeof(*v));
		}
		cpy(v[n].ref, DB_REF_MAX, r->ref);
		v[n++].domid = (uint32_t)fi(r, K.vm, "domid");
	}
	db_unlock();
	*out = v;
	return n;
}

/* xenstored restarted: the running domains' trees, written again if the
 * store lost them (xenops_rewrite). */
static void trees_rewrite(void)
{
	struct dom *v;
	int n = doms_of(&v, true);
	for (int i = 0; i < n; i++) {
		struct spec s;
		struct xerr e = {0};
		if (spec_build(v[i].ref, &s, true, &e) == 0) {
			if (xenops_rewrite(&s.v, v[i].domid, &e) < 0)
				log_warn("VM %s: %s", v[i].ref, e.n ? e.params[0] : e.code);
			spec_free(&s);
		}
		xerr_clear(&e);
	}
	free(v);
}

static void ev_handle(const struct ev *q)
{
	if (q->ev == XENOPS_EV_STORE) {
		trees_rewrite();
		return;
	}
	char vm[DB_REF_MAX] = "";
	db_rdlock();
	const struct db_row *r = db_get_by_uuid(K.vm, q->uuid);
	bool ours = r && fi(r, K.vm, "domid") == (int64_t)q->domid &&
		    !fb(r, K.vm, "is_control_domain");
	bool busy = r && busy_with_domain(fv(r, K.vm, "current_operations"));
	if (r)
		cpy(vm, sizeof(vm), r->ref);
	db_unlock();
	if (!ours)
		return;
	if (q->ev == XENOPS_EV_GUEST) {
		guest_update(vm, q->domid);
		return;
	}
	struct xenops_dominfo info;
	struct xerr e = {0};
	if (xenops_info(q->domid, &info, &e) < 0) {
		xerr_clear(&e);
		return;
	}
	if ((info.state == XENOPS_SHUTDOWN || info.state == XENOPS_DYING) && !busy)
		domain_down(vm, q->domid, info.reason);
}

/* The agent's data/updated watch drives guest metrics (ev_handle), and a
 * report that raced a start is read once the start has committed.  What
 * the agents wrote while xapi was away is read once, when the event thread
 * starts (only changes are written).  There is no periodic poll: at 1,000
 * VMs a 2 s poll cost xapi 18 % of a CPU and slowed every call
 * (docs/performance.md). */

static void guest_poll(void)
{
	struct dom *v;
	int n = doms_of(&v, false);
	for (int i = 0; i < n; i++)
		guest_update(v[i].ref, v[i].domid);
	free(v);
}

static void *ev_main(void *arg)
{
	guest_poll(); /* what the agents wrote while xapi was away */
	pthread_mutex_lock(&Q.lock);
	for (;;) {
		while (!Q.head && !Q.stop)
			pthread_cond_wait(&Q.cond, &Q.lock);
		if (Q.stop)
			break;
		struct ev *e = Q.head;
		Q.head = e->next;
		if (!Q.head)
			Q.tail = &Q.head;
		pthread_mutex_unlock(&Q.lock);
		ev_handle(e);
		free(e);
		pthread_mutex_lock(&Q.lock);
	}
	pthread_mutex_unlock(&Q.lock);
	return NULL;
}

/* ---- start: resync ---- */

void vm_power_start(int clean_shutdown_timeout_s)
{
	k();
	if (clean_shutdown_timeout_s > 0)
		shutdown_timeout_s = clean_shutdown_timeout_s;
	struct xenops_dominfo *d = NULL;
	int n = 0;
	struct xerr e = {0};
	if (xenops_list(&d, &n, &e) < 0) {
		log_warn("resync: cannot list domains: %s", e.code);
		xerr_clear(&e);
		n = 0;
	}
	/* every domain: its VM Running/Paused with its domid */
	for (int i = 0; i < n; i++) {
		char vm[DB_REF_MAX] = "", ps[16] = "";
		int64_t domid = -1;
		db_rdlock();
		const struct db_row *r = db_get_by_uuid(K.vm, d[i].uuid);
		if (r && !fb(r, K.vm, "is_control_domain")) {
			cpy(vm, sizeof(vm), r->ref);
			cpy(ps, sizeof(ps), fs(r, K.vm, "power_state"));
			domid = fi(r, K.vm, "domid");
		}
		db_unlock();
		if (!vm[0]) {
			log_warn("resync: domain %u belongs to no VM (%s)", d[i].domid, d[i].uuid);
			continue;
		}
		if (d[i].state == XENOPS_SHUTDOWN || d[i].state == XENOPS_DYING) {
			/* it went down while we were away: handled as the event it is */
			if (domid != d[i].domid)
				vm_set_power_state(vm, "Running", NULL, d[i].domid, &e);
			xerr_clear(&e);
			vm_power_on_event(NULL, XENOPS_EV_DOMAIN, d[i].uuid, d[i].domid);
			continue;
		}
		const char *want = d[i].state == XENOPS_PAUSED ? "Paused" : "Running";
		if (strcmp(ps, want) != 0 || domid != d[i].domid) {
			log_info("resync: VM %s is %s with domain %u", vm, want, d[i].domid);
			if (vm_set_power_state(vm, want, NULL, d[i].domid, &e) < 0)
				log_warn("resync: VM %s: %s", vm, e.code);
			xerr_clear(&e);
		}
		vm_power_on_event(NULL, XENOPS_EV_GUEST, d[i].uuid, d[i].domid);
	}
	/* VMs the database thinks have a domain that has none: Halted */
	struct halt {
		char ref[DB_REF_MAX];
	} *h = NULL;
	int nh = 0, cap = 0;
	db_rdlock();
	for (struct db_row *r = db_next(K.vm, NULL); r; r = db_next(K.vm, r)) {
		if (fb(r, K.vm, "is_control_domain"))
			continue;
		const char *ps = fs(r, K.vm, "power_state");
		bool has = false;
		for (int i = 0; i < n && !has; i++)
			has = strcmp(d[i].uuid, fs(r, K.vm, "uuid")) == 0;
		bool lost = (strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0) && !has;
		lost |= strcmp(ps, "Suspended") == 0 && !db_get(K.vdi, fs(r, K.vm, "suspend_VDI"));
		if (!lost)
			continue;
		if (nh == cap) {
			cap = cap ? cap * 2 : 16;
			h = util_realloc(h, (size_t)cap * sizeof(*h));
		}
		cpy(h[nh++].ref, DB_REF_MAX, r->ref);
	}
	db_unlock();
	for (int i = 0; i < nh; i++) {
		log_info("resync: VM %s has no domain: Halted", h[i].ref);
		set_state(h[i].ref, "Halted", -1, NULL, &e);
		xerr_clear(&e);
	}
	free(h);
	free(d);
	Q.stop = false;
	if (pthread_create(&Q.thread, NULL, ev_main, NULL) == 0)
		Q.on = true;
	else
		log_err("cannot start the VM event thread");
}

void vm_power_stop(void)
{
	if (!Q.on)
		return;
	pthread_mutex_lock(&Q.lock);
	Q.stop = true;
	pthread_cond_signal(&Q.cond);
	pthread_mutex_unlock(&Q.lock);
	pthread_join(Q.thread, NULL);
	Q.on = false;
}

const struct api_impl vm_power_impls[] = {
	{"VM.start", vm_start_msg, false},
	{"VM.start_on", vm_start_on, false},
	{"VM.clean_shutdown", vm_clean_shutdown, false},
	{"VM.hard_shutdown", vm_hard_shutdown, false},
	{"VM.shutdown", vm_shutdown, false},
	{"VM.clean_reboot", vm_clean_reboot, false},
	{"VM.hard_reboot", vm_hard_reboot, false},
	{"VM.pause", vm_pause, false},
	{"VM.unpause", vm_unpause, false},
	{"VM.suspend", vm_suspend, false},
	{"VM.resume", vm_resume, false},
	{"VM.resume_on", vm_resume_on, false},
	{"VM.checkpoint", vm_checkpoint, false},
	{"VM.send_sysrq", vm_send_sysrq, false},
	{"VM.send_trigger", vm_send_trigger, false},
	{"VM.set_VCPUs_number_live", vm_set_vcpus_number_live, false},
	{"VM.set_memory_target_live", vm_set_memory_target_live, false},
	{"VM.wait_memory_target_live", vm_wait_memory_target_live, false},
	{"VM.set_shadow_multiplier_live", vm_set_shadow_multiplier_live, false},
	{"VM.power_state_reset", vm_power_state_reset, false},
	{"VBD.plug", vbd_plug, false},
	{"VBD.unplug", vbd_unplug, false},
	{"VBD.unplug_force", vbd_unplug_force, false},
	{"VBD.insert", vbd_insert, false},
	{"VBD.eject", vbd_eject, false},
	{"VIF.plug", vif_plug, false},
	{"VIF.unplug", vif_unplug, false},
	{"VIF.unplug_force", vif_unplug_force, false},
	{NULL, NULL, false},
};
