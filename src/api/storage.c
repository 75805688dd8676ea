/* storage.c — the XenAPI messages of storage: SR, PBD and VDI, on top of the
 * drivers of src/sm/sm.h.
 *
 * The drivers know files; this file keeps the rows.  Every operation follows
 * the original (xapi_sr.ml, xapi_pbd.ml, xapi_vdi.ml and the SR/PBD/VDI
 * parts of message_forwarding.ml):
 *
 *  - marking: an operation first puts {task: op} into the SR's and/or the
 *    VDI's current_operations, after checking it against the same rules that
 *    compute allowed_operations (sr_check, vdi_check), and takes it out at
 *    the end; a conflict is OTHER_OPERATION_IN_PROGRESS, retried for a while
 *    as the original's retry_with_global_lock does.  The check and the mark
 *    are one commit under ops_lock() (ops.h: the original's global lock,
 *    shared with the VM operations of vm.c).
 *  - allowed_operations are recomputed for the SR and its VDIs whenever an
 *    operation ends.
 *  - attached SRs: one struct sm_sr per plugged PBD of this host, in memory
 *    (atts), found by SR ref.
 *  - garbage collection: a background thread runs a driver's gc() for an SR
 *    until nothing is left, then reconciles the rows with the files as
 *    SR.scan does.
 *
 * See docs/storage.md ("The API").
 */
#include "api/storage.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/ops.h"
#include "api/tasks.h"
#include "base/log.h"
#include "base/util.h"

/* ---- field indices ---- */

static struct {
	int sr, pbd, vdi, vbd, vm;
	int sr_uuid, sr_name_label, sr_name_description, sr_allowed, sr_current, sr_vdis, sr_pbds,
		sr_valloc, sr_putil, sr_psize, sr_type, sr_content_type, sr_shared, sr_other_config,
		sr_sm_config, sr_is_tools, sr_dvv;
	int pbd_uuid, pbd_host, pbd_sr, pbd_dc, pbd_attached, pbd_other_config;
	int vdi_uuid, vdi_name_label, vdi_name_description, vdi_allowed, vdi_current, vdi_sr,
		vdi_vbds, vdi_vsize, vdi_putil, vdi_type, vdi_sharable, vdi_read_only,
		vdi_other_config, vdi_storage_lock, vdi_location, vdi_managed, vdi_missing,
		vdi_parent, vdi_xenstore_data, vdi_sm_config, vdi_is_a_snapshot, vdi_snapshot_of,
		vdi_snapshot_time, vdi_tags, vdi_allow_caching, vdi_on_boot, vdi_metadata_of_pool,
		vdi_cbt_enabled;
	int vbd_vdi, vbd_vm, vbd_attached, vbd_reserved, vbd_mode, vbd_current, vbd_empty;
	int vm_power_state, vm_suspend_vdi;
	int e_sr_ops, e_vdi_ops;
} F;
static pthread_once_t f_once = PTHREAD_ONCE_INIT;

static void f_init(void)
{
	int c = F.sr = idl_class_find("SR");
	F.sr_uuid = api_field(c, "uuid");
	F.sr_name_label = api_field(c, "name_label");
	F.sr_name_description = api_field(c, "name_description");
	F.sr_allowed = api_field(c, "allowed_operations");
	F.sr_current = api_field(c, "current_operations");
	F.sr_vdis = api_field(c, "VDIs");
	F.sr_pbds = api_field(c, "PBDs");
	F.sr_valloc = api_field(c, "virtual_allocation");
	F.sr_putil = api_field(c, "physical_utilisation");
	F.sr_psize = api_field(c, "physical_size");
	F.sr_type = api_field(c, "type");
	F.sr_content_type = api_field(c, "content_type");
	F.sr_shared = api_field(c, "shared");
	F.sr_other_config = api_field(c, "other_config");
	F.sr_sm_config = api_field(c, "sm_config");
	F.sr_is_tools = api_field(c, "is_tools_sr");
	F.sr_dvv = api_field(c, "default_vdi_visibility");
	c = F.pbd = idl_class_find("PBD");
	F.pbd_uuid = api_field(c, "uuid");
	F.pbd_host = api_field(c, "host");
	F.pbd_sr = api_field(c, "SR");
	F.pbd_dc = api_field(c, "device_config");
	F.pbd_attached = api_field(c, "currently_attached");
	F.pbd_other_config = api_field(c, "other_config");
	c = F.vdi = idl_class_find("VDI");
	F.vdi_uuid = api_field(c, "uuid");
	F.vdi_name_label = api_field(c, "name_label");
	F.vdi_name_description = api_field(c, "name_description");
	F.vdi_allowed = api_field(c, "allowed_operations");
	F.vdi_current = api_field(c, "current_operations");
	F.vdi_sr = api_field(c, "SR");
	F.vdi_vbds = api_field(c, "VBDs");
	F.vdi_vsize = api_field(c, "virtual_size");
	F.vdi_putil = api_field(c, "physical_utilisation");
	F.vdi_type = api_field(c, "type");
	F.vdi_sharable = api_field(c, "sharable");
	F.vdi_read_only = api_field(c, "read_only");
	F.vdi_other_config = api_field(c, "other_config");
	F.vdi_storage_lock = api_field(c, "storage_lock");
	F.vdi_location = api_field(c, "location");
	F.vdi_managed = api_field(c, "managed");
	F.vdi_missing = api_field(c, "missing");
	F.vdi_parent = api_field(c, "parent");
	F.vdi_xenstore_data = api_field(c, "xenstore_data");
	F.vdi_sm_config = api_field(c, "sm_config");
	F.vdi_is_a_snapshot = api_field(c, "is_a_snapshot");
	F.vdi_snapshot_of = api_field(c, "snapshot_of");
	F.vdi_snapshot_time = api_field(c, "snapshot_time");
	F.vdi_tags = api_field(c, "tags");
	F.vdi_allow_caching = api_field(c, "allow_caching");
	F.vdi_on_boot = api_field(c, "on_boot");
	F.vdi_metadata_of_pool = api_field(c, "metadata_of_pool");
	F.vdi_cbt_enabled = api_field(c, "cbt_enabled");
	c = F.vbd = idl_class_find("VBD");
	F.vbd_vdi = api_field(c, "VDI");
	F.vbd_vm = api_field(c, "VM");
	F.vbd_attached = api_field(c, "currently_attached");
	F.vbd_reserved = api_field(c, "reserved");
	F.vbd_mode = api_field(c, "mode");
	F.vbd_current = api_field(c, "current_operations");
	F.vbd_empty = api_field(c, "empty");
	c = F.vm = idl_class_find("VM");
	F.vm_power_state = api_field(c, "power_state");
	F.vm_suspend_vdi = api_field(c, "suspend_VDI");
	for (int i = 0; i < idl_nenums; i++) {
		if (strcmp(idl_enums[i].name, "storage_operations") == 0)
			F.e_sr_ops = i;
		else if (strcmp(idl_enums[i].name, "vdi_operations") == 0)
			F.e_vdi_ops = i;
	}
}

static void fields(void)
{
	pthread_once(&f_once, f_init);
}

/* ---- small row helpers (read lock held) ---- */

static const char *col_str(const struct db_row *r, int f)
{
	const struct val *v = r ? r->cols[f] : NULL;
	return v && v->kind == V_STR ? v->u.s : "";
}

static bool col_bool(const struct db_row *r, int f)
{
	const struct val *v = r ? r->cols[f] : NULL;
	return v && v->kind == V_BOOL && v->u.b;
}

static int64_t col_int(const struct db_row *r, int f)
{
	const struct val *v = r ? r->cols[f] : NULL;
	return v && (v->kind == V_INT || v->kind == V_I4) ? v->u.i : 0;
}

static const struct val *col(const struct db_row *r, int f)
{
	return r ? r->cols[f] : NULL;
}

static uint32_t count(const struct val *v)
{
	return v && (v->kind == V_ARRAY || v->kind == V_STRUCT) ? v->n : 0;
}

static const char *map_get(const struct val *m, const char *key)
{
	const struct val *v = m && m->kind == V_STRUCT ? val_struct_get(m, key) : NULL;
	return v && v->kind == V_STR ? v->u.s : NULL;
}

static bool is_null_ref(const char *r)
{
	return !r || !r[0] || strcmp(r, "OpaqueRef:NULL") == 0;
}

static struct val *map1(const char *key, const char *value)
{
	return ops_map_with(NULL, key, value);
}

/* ---- drivers and their features ---- */

enum {
	FE_VDI_CREATE = 1 << 0,
	FE_VDI_DELETE = 1 << 1,
	FE_VDI_RESIZE = 1 << 2,
	FE_VDI_SNAPSHOT = 1 << 3, /* and clone: one driver call */
	FE_VDI_INTRODUCE = 1 << 4,
	FE_VDI_UPDATE = 1 << 5,
	FE_SR_UPDATE = 1 << 6,
	FE_VDI_CLONE = 1 << 7,
};

/* What a driver can do, from the operations its table fills in (the
 * original reads the SM's capability list; an operation that a driver fills
 * in but refuses answers -EOPNOTSUPP at call time). */
static unsigned drv_features(const struct sm_driver *d)
{
	if (!d)
		return 0;
	unsigned f = 0;
	if (d->vdi_create)
		f |= FE_VDI_CREATE;
	if (d->vdi_delete)
		f |= FE_VDI_DELETE;
	if (d->vdi_resize)
		f |= FE_VDI_RESIZE;
	if (d->vdi_snapshot)
		f |= FE_VDI_SNAPSHOT | FE_VDI_CLONE;
	if (d->vdi_stat)
		f |= FE_VDI_INTRODUCE | FE_VDI_UPDATE;
	if (d->space)
		f |= FE_SR_UPDATE;
	return f;
}

/* The features of an SR type: those its SM row advertises (the original's
 * features_of_sr reads them there) that the driver's table can do; the
 * driver's alone when there is no SM row.  Read lock held. */
static unsigned type_features(const char *type)
{
	static const struct {
		const char *name;
		unsigned fe;
	} names[] = {{"VDI_CREATE", FE_VDI_CREATE},     {"VDI_DELETE", FE_VDI_DELETE},
		     {"VDI_RESIZE", FE_VDI_RESIZE},     {"VDI_SNAPSHOT", FE_VDI_SNAPSHOT},
		     {"VDI_CLONE", FE_VDI_CLONE},       {"VDI_INTRODUCE", FE_VDI_INTRODUCE},
		     {"VDI_UPDATE", FE_VDI_UPDATE},     {"SR_UPDATE", FE_SR_UPDATE}};
	unsigned have = drv_features(sm_driver_find(type));
	int sm = idl_class_find("SM");
	int ft = api_field(sm, "type"), ff = api_field(sm, "features");
	for (struct db_row *r = db_next(sm, NULL); r; r = db_next(sm, r)) {
		const struct val *t = r->cols[ft], *f = r->cols[ff];
		if (!t || t->kind != V_STR || strcmp(t->u.s, type) != 0)
			continue;
		unsigned adv = 0;
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (f && f->kind == V_STRUCT && val_struct_get(f, names[i].name))
				adv |= names[i].fe;
		return have & adv;
	}
	return have;
}

static const char *const known_types[] = {"file", "iso"};

/* ---- attached SRs (plugged PBDs of this host) ---- */

struct att {
	struct att *next;
	char sr_ref[DB_REF_MAX];
	struct sm_sr sr;
	int users;      /* calls using sr now */
	bool detaching;
};

/* An image opened by storage_vdi_open. */
struct opened {
	struct opened *next;
	struct sm_image *img;
	struct att *att;
	char vdi[DB_REF_MAX];
	bool write;
};

static pthread_mutex_t att_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t att_cond = PTHREAD_COND_INITIALIZER;
static struct att *atts;
static struct opened *opens;

static struct att *att_find_locked(const char *sr_ref)
{
	for (struct att *a = atts; a; a = a->next)
		if (strcmp(a->sr_ref, sr_ref) == 0 && !a->detaching)
			return a;
	return NULL;
}

static void att_put(struct att *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&att_lock);
	a->users--;
	pthread_cond_broadcast(&att_cond);
	pthread_mutex_unlock(&att_lock);
}

/* How a VDI is opened through storage_vdi_open now. */
static void open_counts(const char *vdi_ref, int *ro, int *rw)
{
	*ro = *rw = 0;
	pthread_mutex_lock(&att_lock);
	for (struct opened *o = opens; o; o = o->next)
		if (strcmp(o->vdi, vdi_ref) == 0)
			(*(o->write ? rw : ro))++;
	pthread_mutex_unlock(&att_lock);
}

/* ---- errors from drivers ---- */

static void backend_fail(struct xerr *e, int rc)
{
	char code[16];
	snprintf(code, sizeof(code), "%d", -rc);
	xerr_set(e, "SR_BACKEND_FAILURE", 3, code, strerror(-rc), "");
}

/* Map a driver's -errno to the XenAPI error (sm.h's table).  sr, vdi: refs
 * for the parameters (vdi may be NULL); op: the VDI operation; requested /
 * maximum for SR_FULL. */
static void sm_fail(struct xerr *e, int rc, const char *sr, const char *vdi, const char *op,
		    uint64_t requested, uint64_t maximum, const char *task)
{
	char a[32], b[32];
	switch (rc) {
	case -ENOSPC:
		snprintf(a, sizeof(a), "%" PRIu64, requested);
		snprintf(b, sizeof(b), "%" PRIu64, maximum);
		xerr_set(e, "SR_FULL", 2, a, b);
		return;
	case -ENOENT:
		if (vdi)
			xerr_set(e, "VDI_MISSING", 2, sr, vdi);
		else
			xerr_set(e, "SR_BACKEND_FAILURE_47", 3, "", "The SR is not available", "");
		return;
	case -EBUSY:
		xerr_set(e, "VDI_IN_USE", 2, vdi ? vdi : "", op ? op : "");
		return;
	case -EROFS:
		xerr_set(e, "VDI_READONLY", 1, vdi ? vdi : "");
		return;
	case -EOPNOTSUPP:
		xerr_set(e, "SR_OPERATION_NOT_SUPPORTED", 1, sr);
		return;
	case -ENOTEMPTY:
		xerr_set(e, "SR_NOT_EMPTY", 0);
		return;
	case -EMLINK:
		xerr_set(e, "SR_BACKEND_FAILURE_109", 3, "", "The snapshot chain is too long", "");
		return;
	case -ECANCELED:
		xerr_set(e, "TASK_CANCELLED", 1, task ? task : "");
		return;
	default:
		backend_fail(e, rc);
	}
}

/* Free space of an attached SR (for SR_FULL's maximum). */
static uint64_t sr_free(struct att *a)
{
	uint64_t size = 0, used = 0;
	if (a && a->sr.drv->space && a->sr.drv->space(&a->sr, &size, &used) == 0 && size > used)
		return size - used;
	return 0;
}

/* The SR of this host's plugged PBD, attached (users counted; att_put when
 * done).  NULL with HANDLE_INVALID [SR, ref], or SR_HAS_NO_PBDS [sr] when
 * it is not attached here.  (storage_start attached every plugged PBD; a
 * PBD.plug/unplug changes the memory first, then the row.) */
static struct att *sr_get(const char *sr_ref, struct xerr *e)
{
	fields();
	pthread_mutex_lock(&att_lock);
	struct att *a = att_find_locked(sr_ref);
	if (a)
		a->users++;
	pthread_mutex_unlock(&att_lock);
	if (a)
		return a;
	db_rdlock();
	bool exists = db_get(F.sr, sr_ref) != NULL;
	db_unlock();
	if (!exists)
		xerr_set(e, "HANDLE_INVALID", 2, "SR", sr_ref);
	else
		xerr_set(e, "SR_HAS_NO_PBDS", 1, sr_ref);
	return NULL;
}

/* Attach an SR in memory (driver attach); 0 if it is attached already. */
static int plug_att(const char *sr_ref, const char *type, const char *location, struct xerr *e)
{
	const struct sm_driver *d = sm_driver_find(type);
	if (!d) {
		xerr_set(e, "SR_UNKNOWN_DRIVER", 1, type);
		return -1;
	}
	pthread_mutex_lock(&att_lock);
	bool have = att_find_locked(sr_ref) != NULL;
	pthread_mutex_unlock(&att_lock);
	if (have)
		return 0;
	struct att *a = util_calloc(1, sizeof(*a));
	snprintf(a->sr_ref, sizeof(a->sr_ref), "%s", sr_ref);
	a->sr.drv = d;
	db_rdlock();
	snprintf(a->sr.uuid, sizeof(a->sr.uuid), "%s", col_str(db_get(F.sr, sr_ref), F.sr_uuid));
	db_unlock();
	a->sr.path = util_strdup(location);
	int rc = d->attach(&a->sr); /* initialises sr.lock and sr.priv */
	if (rc < 0) {
		log_warn("SR %s: attach of %s failed: %s", a->sr.uuid, location, strerror(-rc));
		if (rc == -ENOENT)
			xerr_set(e, "SR_BACKEND_FAILURE_47", 3, "", "The SR is not available", location);
		else
			sm_fail(e, rc, sr_ref, NULL, NULL, 0, 0, NULL);
		free(a->sr.path);
		free(a);
		return -1;
	}
	pthread_mutex_lock(&att_lock);
	if (att_find_locked(sr_ref)) { /* someone else was quicker */
		pthread_mutex_unlock(&att_lock);
		d->detach(&a->sr);
		free(a->sr.path);
		free(a);
		return 0;
	}
	a->next = atts;
	atts = a;
	pthread_mutex_unlock(&att_lock);
	log_info("SR %s attached (%s, %s)", a->sr.uuid, type, location);
	return 0;
}

/* Detach an SR in memory: waits for the calls using it to end. */
static void unplug_att(const char *sr_ref)
{
	pthread_mutex_lock(&att_lock);
	struct att *a = att_find_locked(sr_ref);
	if (!a) {
		pthread_mutex_unlock(&att_lock);
		return;
	}
	a->detaching = true;
	while (a->users > 0)
		pthread_cond_wait(&att_cond, &att_lock);
	for (struct att **p = &atts; *p; p = &(*p)->next)
		if (*p == a) {
			*p = a->next;
			break;
		}
	pthread_mutex_unlock(&att_lock);
	a->sr.drv->detach(&a->sr);
	log_info("SR %s detached", a->sr.uuid);
	free(a->sr.path);
	free(a);
}

/* ---- allowed operations ---- */


/* SR operations the original lists (its all_ops, without vdi_revert which
 * API 2.21 lacks), in enum order. */
static const char *const sr_all_ops[] = {
	"scan", "destroy", "forget", "plug", "unplug", "update", "vdi_create", "vdi_introduce",
	"vdi_destroy", "vdi_resize", "vdi_clone", "vdi_snapshot", "vdi_mirror", "vdi_enable_cbt",
	"vdi_disable_cbt", "vdi_data_destroy", "vdi_list_changed_blocks", "vdi_set_on_boot",
	"pbd_create", "pbd_destroy"};

/* The driver feature an SR operation needs (the original's sm_cap_table);
 * -1 = none needed; 0 = one no driver of ours has. */
static int sr_op_feature(const char *op)
{
	static const struct {
		const char *op;
		int fe;
	} t[] = {{"vdi_create", FE_VDI_CREATE},       {"vdi_destroy", FE_VDI_DELETE},
		 {"vdi_resize", FE_VDI_RESIZE},       {"vdi_introduce", FE_VDI_INTRODUCE},
		 {"vdi_mirror", 0},                   {"vdi_enable_cbt", 0},
		 {"vdi_disable_cbt", 0},              {"vdi_data_destroy", 0},
		 {"vdi_list_changed_blocks", 0},      {"vdi_set_on_boot", 0},
		 {"update", FE_SR_UPDATE},            {"vdi_snapshot", FE_VDI_SNAPSHOT}};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(t[i].op, op) == 0)
			return t[i].fe;
	return -1;
}

/* Is op allowed on the SR row r with current operations cur?  The
 * original's valid_operations, for one operation, its checks in order (the
 * first error wins).  Read lock held. */
static int sr_check(const struct db_row *r, const struct val *cur, const char *op, struct xerr *e)
{
	const char *ref = r->ref;
	int fe = sr_op_feature(op);
	if (fe >= 0) {
		unsigned have = type_features(col_str(r, F.sr_type));
		if (col_bool(r, F.sr_is_tools))
			have &= ~(unsigned)(FE_VDI_CREATE | FE_VDI_DELETE);
		if (fe == 0 || !(have & (unsigned)fe)) {
			xerr_set(e, "SR_OPERATION_NOT_SUPPORTED", 1, ref);
			return -1;
		}
	}
	const struct val *pbds = col(r, F.sr_pbds);
	if (strcmp(op, "destroy") == 0 || strcmp(op, "forget") == 0) {
		for (uint32_t i = 0; i < count(pbds); i++) {
			struct db_row *p = db_get(F.pbd, pbds->u.items[i]->u.s);
			if (p && col_bool(p, F.pbd_attached)) {
				xerr_set(e, "SR_HAS_PBD", 1, ref);
				return -1;
			}
		}
	}
	if (strcmp(op, "destroy") == 0) {
		if (count(pbds) == 0) {
			xerr_set(e, "SR_HAS_NO_PBDS", 1, ref);
			return -1;
		}
		const struct val *vdis = col(r, F.sr_vdis);
		for (uint32_t i = 0; i < count(vdis); i++) {
			struct db_row *v = db_get(F.vdi, vdis->u.items[i]->u.s);
			if (v && col_bool(v, F.vdi_managed) && strcmp(col_str(v, F.vdi_type), "rrd") != 0) {
				xerr_set(e, "SR_NOT_EMPTY", 0);
				return -1;
			}
		}
	}
	/* parallel operations: only plugs run together */
	const char *task, *cop;
	if (ops_first_current(cur, F.e_sr_ops, &task, &cop, NULL)) {
		if (strcmp(op, "plug") != 0) {
			xerr_set(e, "OTHER_OPERATION_IN_PROGRESS", 4, "SR", ref, cop, task);
			return -1;
		}
		if (ops_first_current(cur, F.e_sr_ops, &task, &cop, "plug")) {
			xerr_set(e, "OTHER_OPERATION_IN_PROGRESS", 4, "SR", ref, cop, task);
			return -1;
		}
	}
	return 0;
}

static struct val *sr_allowed(const struct db_row *r, const struct val *cur)
{
	struct val *o = val_array_h(sizeof(sr_all_ops) / sizeof(sr_all_ops[0]));
	uint32_t k = 0;
	for (size_t i = 0; i < sizeof(sr_all_ops) / sizeof(sr_all_ops[0]); i++) {
		struct xerr e = {0};
		if (sr_check(r, cur, sr_all_ops[i], &e) == 0)
			o->u.items[k++] = val_cstr_h(sr_all_ops[i]);
		xerr_clear(&e);
	}
	o->n = k;
	return o;
}

/* The VDI operations the original shows in allowed_operations (its
 * pre_ely_vdi_operations without blocked and force_unlock), in enum order. */
static const char *const vdi_all_ops[] = {"clone",   "copy",   "resize", "resize_online",
					  "snapshot", "destroy", "forget", "update",
					  "generate_config"};

static bool op_in(const char *op, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(op, *list) == 0)
			return true;
	return false;
}

/* Is op allowed on VDI row r with current operations cur?  The original's
 * check_operation_error, in its order.  VBD rows that are currently_attached
 * or reserved, and images opened through storage_vdi_open, count as
 * attached.  Read lock held. */
static int vdi_check(const struct db_row *r, const struct val *cur, const char *op, struct xerr *e)
{
	const char *ref = r->ref;
	const char *sr_ref = col_str(r, F.vdi_sr);
	struct db_row *sr = db_get(F.sr, sr_ref);
	const char *sr_type = col_str(sr, F.sr_type);
	const char *task, *cop;
	/* 1. any current operation but copy excludes everything */
	if (ops_first_current(cur, F.e_vdi_ops, &task, &cop, "copy")) {
		xerr_set(e, "OTHER_OPERATION_IN_PROGRESS", 4, "VDI", ref, cop, task);
		return -1;
	}
	/* 2. resize needs a plugged PBD */
	if (strcmp(op, "resize") == 0) {
		bool attached = false;
		const struct val *pbds = col(sr, F.sr_pbds);
		for (uint32_t i = 0; i < count(pbds) && !attached; i++)
			attached = col_bool(db_get(F.pbd, pbds->u.items[i]->u.s), F.pbd_attached);
		if (!attached) {
			xerr_set(e, "SR_HAS_NO_PBDS", 1, sr_ref);
			return -1;
		}
	}
	/* 3. attached devices */
	int ro = 0, rw = 0;
	open_counts(ref, &ro, &rw);
	const char *vbd_op = NULL, *vbd_task = NULL;
	const struct val *vbds = col(r, F.vdi_vbds);
	for (uint32_t i = 0; i < count(vbds); i++) {
		struct db_row *b = db_get(F.vbd, vbds->u.items[i]->u.s);
		if (!b)
			continue;
		if (col_bool(b, F.vbd_attached) || col_bool(b, F.vbd_reserved))
			(*(strcmp(col_str(b, F.vbd_mode), "RW") == 0 ? &rw : &ro))++;
		const struct val *bc = col(b, F.vbd_current);
		if (!vbd_op && count(bc) && bc->u.members[0].v->kind == V_STR) {
			vbd_task = bc->u.members[0].key;
			vbd_op = bc->u.members[0].v->u.s;
		}
	}
	static const char *const live[] = {"snapshot", "resize_online", "blocked", "clone", "mirror",
					   "enable_cbt", "disable_cbt", "data_destroy", NULL};
	bool blocked = op_in(op, live) ? false : strcmp(op, "copy") == 0 ? rw > 0 : ro + rw > 0;
	if (blocked) {
		xerr_set(e, "VDI_IN_USE", 2, ref, op);
		return -1;
	}
	if (vbd_op && strcmp(op, "data_destroy") != 0) {
		xerr_set(e, "OTHER_OPERATION_IN_PROGRESS", 4, "VDI", ref, vbd_op, vbd_task);
		return -1;
	}
	/* 4. the driver must be able to */
	unsigned have = type_features(sr_type);
	int need = -1;
	if (strcmp(op, "snapshot") == 0)
		need = FE_VDI_SNAPSHOT;
	else if (strcmp(op, "clone") == 0)
		need = FE_VDI_CLONE;
	else if (strcmp(op, "destroy") == 0)
		need = FE_VDI_DELETE;
	else if (strcmp(op, "resize") == 0)
		need = FE_VDI_RESIZE;
	else if (strcmp(op, "update") == 0)
		need = FE_VDI_UPDATE;
	else if (!op_in(op, (const char *const[]){"forget", "copy", "force_unlock", "blocked", NULL}))
		need = 0; /* resize_online, generate_config, mirror, cbt, set_on_boot */
	if (need == 0 || (need > 0 && !(have & (unsigned)need))) {
		xerr_set(e, "SR_OPERATION_NOT_SUPPORTED", 1, sr_ref);
		return -1;
	}
	/* 5. cbt_metadata VDIs allow few operations */
	const char *type = col_str(r, F.vdi_type);
	if (strcmp(type, "cbt_metadata") == 0 &&
	    op_in(op, (const char *const[]){"clone", "copy", "disable_cbt", "enable_cbt", "mirror",
					    "resize", "resize_online", "snapshot", "set_on_boot", NULL})) {
		xerr_set(e, "VDI_INCOMPATIBLE_TYPE", 2, ref, "cbt_metadata");
		return -1;
	}
	/* 6. per operation */
	bool ha_state = strcmp(type, "ha_statefile") == 0 || strcmp(type, "redo_log") == 0;
	bool reset = strcmp(col_str(r, F.vdi_on_boot), "reset") == 0;
	if (strcmp(op, "forget") == 0 || strcmp(op, "destroy") == 0) {
		if (strcmp(op, "destroy") == 0 && strcmp(sr_type, "udev") == 0) {
			xerr_set(e, "VDI_IS_A_PHYSICAL_DEVICE", 1, ref);
			return -1;
		}
		if (strcmp(op, "destroy") == 0 && col_bool(sr, F.sr_is_tools)) {
			xerr_set(e, "SR_OPERATION_NOT_SUPPORTED", 1, sr_ref);
			return -1;
		}
		if (strcmp(type, "rrd") == 0) {
			xerr_set(e, "VDI_HAS_RRDS", 1, ref);
			return -1;
		}
	} else if (strcmp(op, "snapshot") == 0) {
		if (col_bool(r, F.vdi_sharable)) {
			/* not in the datamodel's error list, but what the original sends */
			xerr_set(e, "VDI_IS_SHARABLE", 1, ref);
			return -1;
		}
		if (reset) {
			xerr_set(e, "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", 0);
			return -1;
		}
		for (uint32_t i = 0; i < count(cur); i++)
			if (cur->u.members[i].v->kind == V_STR &&
			    strcmp(cur->u.members[i].v->u.s, "copy") == 0) {
				xerr_set(e, "OPERATION_NOT_ALLOWED", 1,
					 "Snapshot operation not allowed during copy.");
				return -1;
			}
	} else if (strcmp(op, "copy") == 0) {
		if (reset) {
			xerr_set(e, "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", 0);
			return -1;
		}
		if (ha_state) {
			xerr_set(e, "OPERATION_NOT_ALLOWED", 1,
				 "VDI containing HA statefile or redo log cannot be copied (check the "
				 "VDI's allowed operations).");
			return -1;
		}
	}
	return 0;
}

static struct val *vdi_allowed(const struct db_row *r, const struct val *cur)
{
	size_t n = sizeof(vdi_all_ops) / sizeof(vdi_all_ops[0]);
	struct val *o = val_array_h((uint32_t)n);
	uint32_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct xerr e = {0};
		if (vdi_check(r, cur, vdi_all_ops[i], &e) == 0)
			o->u.items[k++] = val_cstr_h(vdi_all_ops[i]);
		xerr_clear(&e);
	}
	o->n = k;
	return o;
}

/* Add to t a VDI's allowed_operations if they change.  Read lock held. */
static void vdi_allowed_locked(struct db_txn *t, const char *vdi)
{
	struct db_row *v = db_get(F.vdi, vdi);
	if (!v)
		return;
	struct val *va = vdi_allowed(v, col(v, F.vdi_current));
	if (col(v, F.vdi_allowed) && val_equal(va, col(v, F.vdi_allowed)))
		val_free(va);
	else
		db_txn_set(t, F.vdi, v->ref, F.vdi_allowed, va);
}

/* Add to t the allowed_operations of the SR and of each of its VDIs whose
 * value changes.  Read lock held. */
static void refresh_allowed_locked(struct db_txn *t, const char *sr_ref)
{
	struct db_row *sr = db_get(F.sr, sr_ref);
	if (!sr)
		return;
	struct val *a = sr_allowed(sr, col(sr, F.sr_current));
	if (col(sr, F.sr_allowed) && val_equal(a, col(sr, F.sr_allowed)))
		val_free(a);
	else
		db_txn_set(t, F.sr, sr_ref, F.sr_allowed, a);
	const struct val *vdis = col(sr, F.sr_vdis);
	for (uint32_t i = 0; i < count(vdis); i++)
		vdi_allowed_locked(t, vdis->u.items[i]->u.s);
}

/* Recompute allowed_operations of an SR and its VDIs, or (sr_ref NULL) of
 * the VDIs in vdis (one commit). */
static void refresh_allowed_of(const char *sr_ref, const char *const *vdis, int n)
{
	ops_lock();
	struct db_txn *t = db_txn_new();
	db_rdlock();
	if (sr_ref)
		refresh_allowed_locked(t, sr_ref);
	for (int i = 0; i < n; i++)
		vdi_allowed_locked(t, vdis[i]);
	db_unlock();
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0 && strcmp(e.code, "HANDLE_INVALID") != 0)
		log_warn("allowed_operations of SR %s: %s", sr_ref ? sr_ref : "(VDIs)", e.code);
	xerr_clear(&e);
	ops_unlock();
}

static void refresh_allowed(const char *sr_ref)
{
	refresh_allowed_of(sr_ref, NULL, 0);
}

void storage_vdis_refresh_allowed(const char *const *vdis, int n)
{
	fields();
	refresh_allowed_of(NULL, vdis, n);
}

/* ---- marking operations ---- */

struct mark {
	const char *key;         /* the task */
	char sr[DB_REF_MAX];     /* "" = no SR mark */
	const char *sr_op;
	char vdi[DB_REF_MAX];    /* "" = no VDI mark */
	const char *vdi_op;
	bool sr_done, vdi_done;
};

/* One attempt: check and mark under ops_lock.  0 or -1 with e set. */
static int mark_once(struct mark *m, struct xerr *e)
{
	int rc = -1;
	ops_lock();
	struct db_txn *t = db_txn_new();
	db_rdlock();
	struct db_row *sr = m->sr[0] ? db_get(F.sr, m->sr) : NULL;
	struct db_row *v = m->vdi[0] ? db_get(F.vdi, m->vdi) : NULL;
	if (m->sr[0] && !sr) {
		xerr_set(e, "HANDLE_INVALID", 2, "SR", m->sr);
		goto out;
	}
	if (m->vdi[0] && !v) {
		xerr_set(e, "HANDLE_INVALID", 2, "VDI", m->vdi);
		goto out;
	}
	if (sr) {
		if (sr_check(sr, col(sr, F.sr_current), m->sr_op, e) < 0)
			goto out;
		struct val *cur = ops_map_with(col(sr, F.sr_current), m->key, m->sr_op);
		db_txn_set(t, F.sr, m->sr, F.sr_allowed, sr_allowed(sr, cur));
		db_txn_set(t, F.sr, m->sr, F.sr_current, cur);
	}
	if (v) {
		if (vdi_check(v, col(v, F.vdi_current), m->vdi_op, e) < 0)
			goto out;
		struct val *cur = ops_map_with(col(v, F.vdi_current), m->key, m->vdi_op);
		db_txn_set(t, F.vdi, m->vdi, F.vdi_allowed, vdi_allowed(v, cur));
		db_txn_set(t, F.vdi, m->vdi, F.vdi_current, cur);
	}
	rc = 0;
out:
	db_unlock();
	if (rc == 0) {
		rc = db_txn_commit(t, e);
		t = NULL;
	}
	if (t)
		db_txn_free(t);
	ops_unlock();
	if (rc == 0) {
		m->sr_done = sr != NULL;
		m->vdi_done = v != NULL;
	}
	return rc;
}

/* Mark, retrying while another operation is in progress (the original's
 * retry_with_global_lock; the task is cancellable meanwhile). */
static int mark_once_cb(void *m, struct xerr *e)
{
	return mark_once(m, e);
}

static int mark_retry(struct mark *m, const char *task, struct xerr *e)
{
	return ops_retry(mark_once_cb, m, task, e);
}

static void unmark(struct mark *m)
{
	if (!m->sr_done && !m->vdi_done)
		return;
	ops_lock();
	struct db_txn *t = db_txn_new();
	char sr_ref[DB_REF_MAX] = "";
	db_rdlock();
	if (m->sr_done && db_get(F.sr, m->sr)) {
		db_txn_map_remove(t, F.sr, m->sr, F.sr_current, m->key);
		snprintf(sr_ref, sizeof(sr_ref), "%s", m->sr);
	}
	struct db_row *v = m->vdi_done ? db_get(F.vdi, m->vdi) : NULL;
	if (v) {
		db_txn_map_remove(t, F.vdi, m->vdi, F.vdi_current, m->key);
		if (!sr_ref[0])
			snprintf(sr_ref, sizeof(sr_ref), "%s", col_str(v, F.vdi_sr));
	}
	db_unlock();
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0) {
		/* a row went meanwhile: take each mark out on its own */
		xerr_clear(&e);
		t = db_txn_new();
		db_txn_map_remove(t, F.sr, m->sr, F.sr_current, m->key);
		if (m->sr_done && db_txn_commit(t, &e) < 0)
			xerr_clear(&e);
		else if (!m->sr_done)
			db_txn_free(t);
		t = db_txn_new();
		db_txn_map_remove(t, F.vdi, m->vdi, F.vdi_current, m->key);
		if (m->vdi_done && db_txn_commit(t, &e) < 0)
			xerr_clear(&e);
		else if (!m->vdi_done)
			db_txn_free(t);
	}
	ops_unlock();
	m->sr_done = m->vdi_done = false;
	if (sr_ref[0])
		refresh_allowed(sr_ref);
}

/* ---- SR space and VDI rows ---- */

/* Set the SR's physical_size and physical_utilisation from the driver and
 * virtual_allocation from the rows (the sum of the virtual sizes of its
 * managed VDIs, as the file driver of the original counts non-hidden ones). */
static void sr_space_txn(struct db_txn *t, struct att *a, const char *sr_ref)
{
	uint64_t size = 0, used = 0;
	if (a && a->sr.drv->space && a->sr.drv->space(&a->sr, &size, &used) == 0) {
		db_txn_set(t, F.sr, sr_ref, F.sr_psize, val_int_h((int64_t)size));
		db_txn_set(t, F.sr, sr_ref, F.sr_putil, val_int_h((int64_t)used));
	}
	int64_t valloc = 0;
	db_rdlock();
	const struct val *vdis = col(db_get(F.sr, sr_ref), F.sr_vdis);
	for (uint32_t i = 0; i < count(vdis); i++) {
		struct db_row *v = db_get(F.vdi, vdis->u.items[i]->u.s);
		if (v && col_bool(v, F.vdi_managed))
			valloc += col_int(v, F.vdi_vsize);
	}
	db_unlock();
	db_txn_set(t, F.sr, sr_ref, F.sr_valloc, val_int_h(valloc));
}

static void sr_space_update(struct att *a, const char *sr_ref)
{
	struct db_txn *t = db_txn_new();
	sr_space_txn(t, a, sr_ref);
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0)
		log_warn("space of SR %s: %s", sr_ref, e.code);
	xerr_clear(&e);
}

/* The uuid of a VDI row for a driver's VDI: its location when that is a
 * uuid not used yet (the file driver names files by uuid, as the original's
 * SM does), else a fresh one.  Read lock held. */
static void vdi_uuid_for(const char *location, char out[40])
{
	if (strlen(location) == 36 && util_uuid_valid(location) && !db_get_by_uuid(F.vdi, location))
		memcpy(out, location, 37);
	else
		db_uuid_new(out);
}

/* A new VDI row's columns from a driver's VDI: the defaults of a VDI the
 * original introduces (managed unless hidden, not missing, persist on boot,
 * no snapshot), sizes and location from the driver; sm_config vhd-parent
 * from the driver's parent.  Read lock held (for the uuid). */
static struct val **vdi_cols_new(const char *sr_ref, const struct sm_vdi *sv)
{
	struct val **c = api_row_new(F.vdi);
	char uuid[40];
	vdi_uuid_for(sv->location, uuid);
	c[F.vdi_uuid] = val_cstr_h(uuid);
	c[F.vdi_name_label] = val_cstr_h(sv->hidden ? "base copy" : sv->name);
	c[F.vdi_name_description] = val_cstr_h("");
	c[F.vdi_allowed] = val_array_h(0);
	c[F.vdi_current] = val_struct_h(0);
	c[F.vdi_sr] = val_cstr_h(sr_ref);
	c[F.vdi_vsize] = val_int_h((int64_t)sv->virtual_size);
	c[F.vdi_putil] = val_int_h((int64_t)sv->physical_utilisation);
	c[F.vdi_type] = val_cstr_h("user");
	c[F.vdi_sharable] = val_bool_h(false);
	c[F.vdi_read_only] = val_bool_h(sv->read_only || sv->hidden);
	c[F.vdi_other_config] = val_struct_h(0);
	c[F.vdi_storage_lock] = val_bool_h(false);
	c[F.vdi_location] = val_cstr_h(sv->location);
	c[F.vdi_managed] = val_bool_h(!sv->hidden);
	c[F.vdi_missing] = val_bool_h(false);
	c[F.vdi_parent] = val_cstr_h("OpaqueRef:NULL");
	c[F.vdi_xenstore_data] = val_struct_h(0);
	c[F.vdi_sm_config] = sv->parent[0] ? map1("vhd-parent", sv->parent) : val_struct_h(0);
	c[F.vdi_is_a_snapshot] = val_bool_h(false);
	c[F.vdi_snapshot_of] = val_cstr_h("OpaqueRef:NULL");
	c[F.vdi_snapshot_time] = val_datetime_h(0);
	c[F.vdi_tags] = val_array_h(0);
	c[F.vdi_allow_caching] = val_bool_h(false);
	c[F.vdi_on_boot] = val_cstr_h("persist");
	c[F.vdi_metadata_of_pool] = val_cstr_h("OpaqueRef:NULL");
	c[F.vdi_cbt_enabled] = val_bool_h(false);
	return c;
}

/* Add to t what makes an existing VDI row agree with the driver's view:
 * sizes, the vhd-parent key, managed (hidden bases are not), read_only when
 * the driver says so (a parent, an ISO).  Read lock held. */
static void vdi_sync_txn(struct db_txn *t, const struct db_row *r, const struct sm_vdi *sv)
{
	if (col_int(r, F.vdi_vsize) != (int64_t)sv->virtual_size)
		db_txn_set(t, F.vdi, r->ref, F.vdi_vsize, val_int_h((int64_t)sv->virtual_size));
	if (col_int(r, F.vdi_putil) != (int64_t)sv->physical_utilisation)
		db_txn_set(t, F.vdi, r->ref, F.vdi_putil,
			   val_int_h((int64_t)sv->physical_utilisation));
	const char *p = map_get(col(r, F.vdi_sm_config), "vhd-parent");
	if ((p ? p : "")[0] != sv->parent[0] || (p && strcmp(p, sv->parent) != 0))
		db_txn_set(t, F.vdi, r->ref, F.vdi_sm_config,
			   ops_map_with(col(r, F.vdi_sm_config), "vhd-parent",
				    sv->parent[0] ? sv->parent : NULL));
	if (col_bool(r, F.vdi_managed) == sv->hidden)
		db_txn_set(t, F.vdi, r->ref, F.vdi_managed, val_bool_h(!sv->hidden));
	if ((sv->read_only || sv->hidden) && !col_bool(r, F.vdi_read_only))
		db_txn_set(t, F.vdi, r->ref, F.vdi_read_only, val_bool_h(true));
}

/* ---- scan: reconcile rows with the driver ---- */

struct scan_list {
	struct sm_vdi *v;
	size_t n, cap;
};

static int scan_each(void *ctx, const struct sm_vdi *v)
{
	struct scan_list *l = ctx;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = util_realloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = *v;
	return 0;
}

/* SR.scan's work on an attached SR: VDIs found that have no row get one
 * (hidden bases unmanaged, named "base copy", read-only); rows whose VDI is
 * gone are deleted; the others get sizes, vhd-parent, managed, read_only
 * updated; hidden VDIs that nothing uses any more (a deleted VDI the
 * garbage collection has not removed yet) are left out, as the original
 * does.  Then the SR's sizes.  0 or -1 with e set. */
static int sr_reconcile(struct att *a, const char *sr_ref, struct xerr *e)
{
	struct scan_list l = {0};
	int rc = a->sr.drv->scan(&a->sr, scan_each, &l);
	if (rc < 0) {
		sm_fail(e, rc, sr_ref, NULL, NULL, 0, 0, NULL);
		free(l.v);
		return -1;
	}
	/* drop hidden leaves */
	for (size_t i = 0; i < l.n;) {
		bool needed = !l.v[i].hidden;
		for (size_t j = 0; j < l.n && !needed; j++)
			needed = strcmp(l.v[j].parent, l.v[i].location) == 0;
		if (!needed)
			l.v[i] = l.v[--l.n];
		else
			i++;
	}
	struct db_txn *t = db_txn_new();
	db_rdlock();
	const struct val *vdis = col(db_get(F.sr, sr_ref), F.sr_vdis);
	bool *seen = util_calloc(l.n + 1, sizeof(bool));
	for (uint32_t i = 0; i < count(vdis); i++) {
		struct db_row *r = db_get(F.vdi, vdis->u.items[i]->u.s);
		if (!r)
			continue;
		const char *loc = col_str(r, F.vdi_location);
		size_t j;
		for (j = 0; j < l.n; j++)
			if (!seen[j] && strcmp(l.v[j].location, loc) == 0)
				break;
		if (j == l.n) {
			log_info("SR %s: VDI %s (%s) is gone; forgetting it", a->sr.uuid,
				 col_str(r, F.vdi_uuid), loc);
			db_txn_delete(t, F.vdi, r->ref);
			continue;
		}
		seen[j] = true;
		vdi_sync_txn(t, r, &l.v[j]);
	}
	for (size_t j = 0; j < l.n; j++) {
		if (seen[j])
			continue;
		char ref[DB_REF_MAX];
		db_ref_new(ref);
		struct val **c = vdi_cols_new(sr_ref, &l.v[j]);
		log_info("SR %s: new VDI %s found", a->sr.uuid, l.v[j].location);
		db_txn_insert(t, F.vdi, ref, c);
		free(c);
	}
	db_unlock();
	free(seen);
	free(l.v);
	if (db_txn_commit(t, e) < 0)
		return -1;
	sr_space_update(a, sr_ref);
	return 0;
}

/* ---- background garbage collection ---- */

struct gc_item {
	struct gc_item *next;
	char sr_ref[DB_REF_MAX];
	bool rescan;    /* reconcile the rows even if gc() found nothing */
};

static pthread_mutex_t gc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gc_cond = PTHREAD_COND_INITIALIZER;
static struct gc_item *gc_queue;
static bool gc_started;

static void *gc_main(void *arg);

/* Ask the background thread to collect an SR's garbage (and, with rescan,
 * to reconcile its rows in any case). */
static void gc_kick(const char *sr_ref, bool rescan)
{
	pthread_mutex_lock(&gc_lock);
	if (!gc_started) {
		pthread_t th;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&th, &at, gc_main, NULL) == 0)
			gc_started = true;
		else
			log_err("storage: cannot start the garbage collection thread");
		pthread_attr_destroy(&at);
	}
	bool queued = false;
	for (struct gc_item *g = gc_queue; g && !queued; g = g->next)
		if (strcmp(g->sr_ref, sr_ref) == 0) {
			queued = true;
			g->rescan |= rescan;
		}
	if (!queued) {
		struct gc_item *g = util_calloc(1, sizeof(*g));
		snprintf(g->sr_ref, sizeof(g->sr_ref), "%s", sr_ref);
		g->rescan = rescan;
		struct gc_item **p = &gc_queue;
		while (*p)
			p = &(*p)->next;
		*p = g;
	}
	pthread_cond_signal(&gc_cond);
	pthread_mutex_unlock(&gc_lock);
}

/* One SR: gc() until it has nothing left, then reconcile the rows (always:
 * at start this also repairs what a crash left) under a "scan" mark of the
 * SR, so that no VDI operation's rows are half written meanwhile. */
static void gc_sr(const char *sr_ref, bool rescan)
{
	struct xerr e = {0};
	struct att *a = sr_get(sr_ref, &e);
	if (!a) {
		xerr_clear(&e);
		return; /* unplugged or gone meanwhile */
	}
	int rc = 0, steps = 0;
	while (a->sr.drv->gc && (rc = a->sr.drv->gc(&a->sr, NULL, NULL)) > 0)
		steps++;
	if (rc < 0)
		log_warn("SR %s: garbage collection: %s", a->sr.uuid, strerror(-rc));
	if (steps > 0 || rescan) {
		char key[DB_REF_MAX];
		db_ref_new(key);
		struct mark m = {.key = key, .sr_op = "scan"};
		snprintf(m.sr, sizeof(m.sr), "%s", sr_ref);
		if (mark_once(&m, &e) == 0) {
			if (sr_reconcile(a, sr_ref, &e) < 0)
				log_warn("SR %s: rescan after garbage collection: %s", a->sr.uuid,
					 e.code);
			unmark(&m);
		} else {
			/* busy (or going: an unplug waits for us to let the SR go):
			 * let it go and come back later */
			bool busy = strcmp(e.code, "OTHER_OPERATION_IN_PROGRESS") == 0;
			if (!busy)
				log_warn("SR %s: rescan after garbage collection: %s", a->sr.uuid,
					 e.code);
			att_put(a);
			xerr_clear(&e);
			if (busy) {
				ops_sleep_ms(200);
				gc_kick(sr_ref, true);
			}
			return;
		}
		if (steps)
			log_info("SR %s: garbage collection did %d step(s)", a->sr.uuid, steps);
	}
	xerr_clear(&e);
	att_put(a);
}

static void *gc_main(void *arg)
{
	for (;;) {
		pthread_mutex_lock(&gc_lock);
		while (!gc_queue)
			pthread_cond_wait(&gc_cond, &gc_lock);
		struct gc_item *g = gc_queue;
		gc_queue = g->next;
		pthread_mutex_unlock(&gc_lock);
		gc_sr(g->sr_ref, g->rescan);
		free(g);
	}
	return NULL;
}

/* ---- start ---- */

static void start_once(void)
{
	fields();
	/* 1. operations a crash interrupted: their tasks are gone */
	struct db_txn *t = db_txn_new();
	int n = 0;
	db_rdlock();
	for (struct db_row *r = db_next(F.sr, NULL); r; r = db_next(F.sr, r))
		if (count(col(r, F.sr_current))) {
			db_txn_set(t, F.sr, r->ref, F.sr_current, val_struct_h(0));
			n++;
		}
	for (struct db_row *r = db_next(F.vdi, NULL); r; r = db_next(F.vdi, r))
		if (count(col(r, F.vdi_current))) {
			db_txn_set(t, F.vdi, r->ref, F.vdi_current, val_struct_h(0));
			n++;
		}
	db_unlock();
	struct xerr e = {0};
	if (db_txn_commit(t, &e) < 0)
		log_err("storage: clearing stale current_operations: %s", e.code);
	else if (n)
		log_info("storage: cleared the current_operations of %d object(s)", n);
	xerr_clear(&e);
	/* 2. attach the plugged PBDs of this host */
	struct plug {
		char pbd[DB_REF_MAX], sr[DB_REF_MAX], type[64], loc[4096];
	} *pl = NULL;
	size_t np = 0;
	db_rdlock();
	uint32_t total = db_count(F.pbd);
	pl = util_calloc(total + 1, sizeof(*pl));
	for (struct db_row *p = db_next(F.pbd, NULL); p && np < total; p = db_next(F.pbd, p)) {
		if (!col_bool(p, F.pbd_attached) || strcmp(col_str(p, F.pbd_host), api_srv.host_ref))
			continue;
		const char *loc = map_get(col(p, F.pbd_dc), "location");
		snprintf(pl[np].pbd, sizeof(pl[np].pbd), "%s", p->ref);
		snprintf(pl[np].sr, sizeof(pl[np].sr), "%s", col_str(p, F.pbd_sr));
		snprintf(pl[np].type, sizeof(pl[np].type), "%s",
			 col_str(db_get(F.sr, col_str(p, F.pbd_sr)), F.sr_type));
		snprintf(pl[np].loc, sizeof(pl[np].loc), "%s", loc ? loc : "");
		np++;
	}
	db_unlock();
	for (size_t i = 0; i < np; i++) {
		if (plug_att(pl[i].sr, pl[i].type, pl[i].loc, &e) < 0) {
			log_warn("storage: PBD %s (SR %s) cannot be plugged again: %s; marking it "
				 "unplugged", pl[i].pbd, pl[i].sr, e.code);
			xerr_clear(&e);
			struct db_txn *u = db_txn_new();
			db_txn_set(u, F.pbd, pl[i].pbd, F.pbd_attached, val_bool_h(false));
			if (db_txn_commit(u, &e) < 0)
				xerr_clear(&e);
		}
	}
	/* 3. allowed operations everywhere, then the garbage of every SR */
	db_rdlock();
	uint32_t nsr = db_count(F.sr), k = 0;
	char (*srs)[DB_REF_MAX] = util_calloc(nsr + 1, DB_REF_MAX);
	for (struct db_row *r = db_next(F.sr, NULL); r && k < nsr; r = db_next(F.sr, r))
		snprintf(srs[k++], DB_REF_MAX, "%s", r->ref);
	db_unlock();
	for (uint32_t i = 0; i < k; i++)
		refresh_allowed(srs[i]);
	for (size_t i = 0; i < np; i++)
		gc_kick(pl[i].sr, true);
	free(srs);
	free(pl);
}

static pthread_once_t started = PTHREAD_ONCE_INIT;

/* Also called at the entry of every storage message and storage.h function,
 * so that a daemon that does not call it at start still clears and attaches
 * before the first storage operation. */
void storage_start(void)
{
	pthread_once(&started, start_once);
}

/* ---- SR messages ---- */

/* SR.introduce's row: the record only, no PBD, no driver call. */
static int sr_introduce_row(struct api_ctx *c, const char *uuid_in, const char *name_label,
			    const char *name_description, const char *type_in,
			    const char *content_type, bool shared, const struct val *sm_config,
			    char out[DB_REF_MAX])
{
	char uuid[40], type[64];
	size_t i;
	for (i = 0; type_in[i] && i < sizeof(type) - 1; i++)
		type[i] = (char)(type_in[i] >= 'A' && type_in[i] <= 'Z' ? type_in[i] + 32 : type_in[i]);
	type[i] = 0;
	if (uuid_in && uuid_in[0])
		snprintf(uuid, sizeof(uuid), "%s", uuid_in);
	else
		db_uuid_new(uuid);
	db_rdlock();
	bool dup = db_get_by_uuid(F.sr, uuid) != NULL;
	db_unlock();
	if (dup) {
		api_fail(c, "SR_UUID_EXISTS", 1, uuid);
		return -1;
	}
	struct val **cols = api_row_new(F.sr);
	cols[F.sr_uuid] = val_cstr_h(uuid);
	cols[F.sr_name_label] = val_cstr_h(name_label);
	cols[F.sr_name_description] = val_cstr_h(name_description);
	cols[F.sr_allowed] = val_array_h(0);
	cols[F.sr_current] = val_struct_h(0);
	cols[F.sr_valloc] = val_int_h(0);
	cols[F.sr_putil] = val_int_h(-1);
	cols[F.sr_psize] = val_int_h(-1);
	cols[F.sr_type] = val_cstr_h(type);
	cols[F.sr_content_type] = val_cstr_h(content_type);
	cols[F.sr_shared] = val_bool_h(shared);
	cols[F.sr_other_config] = val_struct_h(0);
	cols[F.sr_sm_config] = sm_config ? val_dup_h(sm_config) : val_struct_h(0);
	cols[F.sr_dvv] = val_bool_h(true);
	db_ref_new(out);
	struct db_txn *t = db_txn_new();
	db_txn_insert(t, F.sr, out, cols);
	free(cols);
	if (api_commit(c, t) < 0) {
		if (strcmp(c->err.code, "DB_UNIQUENESS_CONSTRAINT_VIOLATION") == 0) {
			xerr_clear(&c->err);
			api_fail(c, "SR_UUID_EXISTS", 1, uuid);
		}
		return -1;
	}
	refresh_allowed(out);
	return 0;
}

static void sr_introduce(struct api_ctx *c)
{
	/* (session, uuid, name_label, name_description, type, content_type, shared, sm_config) */
	storage_start();
	char ref[DB_REF_MAX];
	if (sr_introduce_row(c, api_str(c, 1), api_str(c, 2), api_str(c, 3), api_str(c, 4),
			     api_str(c, 5), api_bool(c, 6), c->params[7], ref) == 0)
		enc_cstr(c->out, ref);
}

/* PBD.plug's work: driver attach, currently_attached, the SR's sizes
 * (the original's SR.update after the first plug). */
static int pbd_plug_do(struct api_ctx *c, const char *pbd)
{
	char sr[DB_REF_MAX] = "", type[64] = "", loc[4096] = "";
	bool attached;
	db_rdlock();
	struct db_row *p = db_get(F.pbd, pbd);
	attached = col_bool(p, F.pbd_attached);
	if (p) {
		const char *l = map_get(col(p, F.pbd_dc), "location");
		snprintf(sr, sizeof(sr), "%s", col_str(p, F.pbd_sr));
		snprintf(type, sizeof(type), "%s", col_str(db_get(F.sr, sr), F.sr_type));
		snprintf(loc, sizeof(loc), "%s", l ? l : "");
	}
	db_unlock();
	if (!p) {
		api_fail(c, "HANDLE_INVALID", 2, "PBD", pbd);
		return -1;
	}
	if (attached)
		return 0;
	if (!sm_driver_find(type)) {
		api_fail(c, "SR_UNKNOWN_DRIVER", 1, type);
		return -1;
	}
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "plug"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return -1;
	int rc = -1;
	if (!loc[0]) {
		api_fail(c, "SR_BACKEND_FAILURE_94", 3, "",
			 "The request is missing the location parameter", "");
		goto out;
	}
	if (plug_att(sr, type, loc, &c->err) < 0)
		goto out;
	struct db_txn *t = db_txn_new();
	db_txn_set(t, F.pbd, pbd, F.pbd_attached, val_bool_h(true));
	if (api_commit(c, t) < 0) {
		unplug_att(sr);
		goto out;
	}
	struct xerr e = {0};
	struct att *a = sr_get(sr, &e);
	xerr_clear(&e);
	sr_space_update(a, sr);
	att_put(a);
	rc = 0;
out:
	unmark(&m);
	return rc;
}

static void sr_create(struct api_ctx *c)
{
	/* (session, host, device_config, physical_size, name_label, name_description,
	 *  type, content_type, shared, sm_config) */
	storage_start();
	const char *host = api_str(c, 1), *type = api_str(c, 6);
	const struct val *dc = c->params[2];
	db_rdlock();
	bool host_ok = db_get(idl_class_find("host"), host) != NULL;
	db_unlock();
	if (!host_ok) {
		api_fail(c, "HANDLE_INVALID", 2, "host", host);
		return;
	}
	char ltype[64];
	size_t i;
	for (i = 0; type[i] && i < sizeof(ltype) - 1; i++)
		ltype[i] = (char)(type[i] >= 'A' && type[i] <= 'Z' ? type[i] + 32 : type[i]);
	ltype[i] = 0;
	const struct sm_driver *d = sm_driver_find(ltype);
	if (!d) {
		api_fail(c, "SR_UNKNOWN_DRIVER", 1, type);
		return;
	}
	const char *ct = api_str(c, 7);
	char sr[DB_REF_MAX], pbd[DB_REF_MAX];
	if (sr_introduce_row(c, NULL, api_str(c, 4), api_str(c, 5), ltype, ct, api_bool(c, 8),
			     c->params[9], sr) < 0)
		return;
	/* the PBD of this host (one per host when shared: we are one host) */
	struct val **pc = api_row_new(F.pbd);
	char puuid[40];
	db_uuid_new(puuid);
	pc[F.pbd_uuid] = val_cstr_h(puuid);
	pc[F.pbd_host] = val_cstr_h(api_srv.host_ref);
	pc[F.pbd_sr] = val_cstr_h(sr);
	pc[F.pbd_dc] = val_dup_h(dc);
	pc[F.pbd_attached] = val_bool_h(false);
	pc[F.pbd_other_config] = val_struct_h(0);
	db_ref_new(pbd);
	struct db_txn *t = db_txn_new();
	db_txn_insert(t, F.pbd, pbd, pc);
	free(pc);
	if (api_commit(c, t) < 0)
		goto undo;
	const char *loc = map_get(dc, "location");
	int rc;
	if (!loc || !loc[0]) {
		api_fail(c, "SR_BACKEND_FAILURE_94", 3, "",
			 "The request is missing the location parameter", "");
		goto undo;
	}
	db_rdlock();
	char uuid[40];
	snprintf(uuid, sizeof(uuid), "%s", col_str(db_get(F.sr, sr), F.sr_uuid));
	db_unlock();
	rc = d->sr_create(uuid, loc, (uint64_t)(api_int(c, 3) > 0 ? api_int(c, 3) : 0));
	if (rc < 0) {
		if (rc == -EEXIST)
			api_fail(c, "SR_BACKEND_FAILURE", 3, "EEXIST",
				 "the location holds another SR", loc);
		else
			sm_fail(&c->err, rc, sr, NULL, NULL, 0, 0, c->task);
		goto undo;
	}
	log_info("SR %s created (%s at %s)", uuid, ltype, loc);
	/* plug it; as the original (which waits for PBD.plug tasks and does
	 * not look at their outcome) a failed plug does not fail the create */
	struct api_ctx sub = *c;
	memset(&sub.err, 0, sizeof(sub.err));
	if (pbd_plug_do(&sub, pbd) < 0) {
		log_warn("SR %s: plugging its new PBD failed: %s", uuid, sub.err.code);
		xerr_clear(&sub.err);
	}
	enc_cstr(c->out, sr);
	return;
undo:;
	struct db_txn *u = db_txn_new();
	db_rdlock();
	if (db_get(F.pbd, pbd))
		db_txn_delete(u, F.pbd, pbd);
	db_unlock();
	db_txn_delete(u, F.sr, sr);
	struct xerr e = {0};
	if (db_txn_commit(u, &e) < 0)
		log_warn("SR.create: removing the rows of a failed create: %s", e.code);
	xerr_clear(&e);
}

/* Remove the SR's rows (its PBDs, VDIs and itself); the PBDs are unplugged. */
static int sr_forget_rows(struct api_ctx *c, const char *sr)
{
	struct db_txn *t = db_txn_new();
	db_rdlock();
	struct db_row *r = db_get(F.sr, sr);
	const struct val *pbds = col(r, F.sr_pbds), *vdis = col(r, F.sr_vdis);
	for (uint32_t i = 0; i < count(pbds); i++)
		db_txn_delete(t, F.pbd, pbds->u.items[i]->u.s);
	for (uint32_t i = 0; i < count(vdis); i++)
		db_txn_delete(t, F.vdi, vdis->u.items[i]->u.s);
	if (r)
		db_txn_delete(t, F.sr, sr);
	db_unlock();
	return api_commit(c, t);
}

static bool any_pbd_attached(const char *sr)
{
	bool any = false;
	db_rdlock();
	const struct val *pbds = col(db_get(F.sr, sr), F.sr_pbds);
	for (uint32_t i = 0; i < count(pbds) && !any; i++)
		any = col_bool(db_get(F.pbd, pbds->u.items[i]->u.s), F.pbd_attached);
	db_unlock();
	return any;
}

static void sr_forget(struct api_ctx *c)
{
	storage_start();
	const char *sr = api_str(c, 1);
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "forget"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	if (any_pbd_attached(sr))
		api_fail(c, "SR_HAS_PBD", 1, sr);
	else if (sr_forget_rows(c, sr) == 0)
		enc_void(c->out);
	unmark(&m);
}

static void sr_destroy(struct api_ctx *c)
{
	storage_start();
	const char *sr = api_str(c, 1);
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "destroy"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	char type[64] = "", loc[4096] = "", uuid[40] = "";
	bool indestructible;
	db_rdlock();
	struct db_row *r = db_get(F.sr, sr);
	const char *ind = map_get(col(r, F.sr_other_config), "indestructible");
	indestructible = ind && strcmp(ind, "true") == 0;
	snprintf(type, sizeof(type), "%s", col_str(r, F.sr_type));
	snprintf(uuid, sizeof(uuid), "%s", col_str(r, F.sr_uuid));
	const struct val *pbds = col(r, F.sr_pbds);
	for (uint32_t i = 0; i < count(pbds); i++) {
		struct db_row *p = db_get(F.pbd, pbds->u.items[i]->u.s);
		const char *l = map_get(col(p, F.pbd_dc), "location");
		if (l && (!loc[0] || strcmp(col_str(p, F.pbd_host), api_srv.host_ref) == 0))
			snprintf(loc, sizeof(loc), "%s", l);
	}
	db_unlock();
	if (any_pbd_attached(sr)) {
		api_fail(c, "SR_HAS_PBD", 1, sr);
		goto out;
	}
	if (indestructible) {
		api_fail(c, "SR_INDESTRUCTIBLE", 1, sr);
		goto out;
	}
	const struct sm_driver *d = sm_driver_find(type);
	if (!d) {
		api_fail(c, "SR_UNKNOWN_DRIVER", 1, type);
		goto out;
	}
	/* the PBDs are unplugged: the driver deletes from the PBD's config, as
	 * the original's destroy_sr does (sr_delete needs no attach) */
	struct sm_sr tmp = {.drv = d, .path = loc};
	snprintf(tmp.uuid, sizeof(tmp.uuid), "%s", uuid);
	int rc = d->sr_delete(&tmp);
	if (rc == -ENOTEMPTY) {
		api_fail(c, "SR_NOT_EMPTY", 0);
		goto out;
	}
	if (rc < 0) {
		sm_fail(&c->err, rc, sr, NULL, NULL, 0, 0, c->task);
		goto out;
	}
	log_info("SR %s destroyed", uuid);
	if (sr_forget_rows(c, sr) == 0)
		enc_void(c->out);
out:
	unmark(&m);
}

static void sr_scan(struct api_ctx *c)
{
	storage_start();
	const char *sr = api_str(c, 1);
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "scan"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	struct att *a = sr_get(sr, &c->err);
	if (a) {
		if (sr_reconcile(a, sr, &c->err) == 0)
			enc_void(c->out);
		att_put(a);
	}
	unmark(&m);
}

static void sr_update(struct api_ctx *c)
{
	storage_start();
	const char *sr = api_str(c, 1);
	struct att *a = sr_get(sr, &c->err);
	if (!a)
		return;
	uint64_t size = 0, used = 0;
	int rc = a->sr.drv->space ? a->sr.drv->space(&a->sr, &size, &used) : -EOPNOTSUPP;
	att_put(a);
	if (rc < 0) {
		sm_fail(&c->err, rc, sr, NULL, NULL, 0, 0, c->task);
		return;
	}
	struct db_txn *t = db_txn_new();
	db_txn_set(t, F.sr, sr, F.sr_psize, val_int_h((int64_t)size));
	db_txn_set(t, F.sr, sr, F.sr_putil, val_int_h((int64_t)used));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void sr_probe(struct api_ctx *c)
{
	/* (session, host, device_config, type, sm_config) */
	storage_start();
	const char *type = api_str(c, 3);
	const struct sm_driver *d = sm_driver_find(type);
	if (!d) {
		api_fail(c, "SR_UNKNOWN_DRIVER", 1, type);
		return;
	}
	const char *loc = map_get(c->params[2], "location");
	if (!loc || !loc[0]) {
		api_fail(c, "SR_BACKEND_FAILURE_94", 3, "",
			 "The request is missing the location parameter", "");
		return;
	}
	if (!d->probe) {
		api_fail(c, "SR_OPERATION_NOT_SUPPORTED", 1, "OpaqueRef:NULL");
		return;
	}
	char *xml = NULL;
	int rc = d->probe(loc, &xml);
	if (rc < 0) {
		sm_fail(&c->err, rc, "OpaqueRef:NULL", NULL, NULL, 0, 0, c->task);
		free(xml);
		return;
	}
	enc_cstr(c->out, xml ? xml : "");
	free(xml);
}

static void sr_probe_ext(struct api_ctx *c)
{
	/* our drivers answer the SMAPIv1 form (XML text): the original refuses */
	if (!sm_driver_find(api_str(c, 3))) {
		api_fail(c, "SR_UNKNOWN_DRIVER", 1, api_str(c, 3));
		return;
	}
	api_fail(c, "SR_OPERATION_NOT_SUPPORTED", 0);
}

static void sr_get_supported_types(struct api_ctx *c)
{
	enc_array_begin(c->out);
	for (size_t i = 0; i < sizeof(known_types) / sizeof(known_types[0]); i++)
		if (sm_driver_find(known_types[i]))
			enc_cstr(c->out, known_types[i]);
	enc_array_end(c->out);
}

static void sr_set_shared(struct api_ctx *c)
{
	storage_start();
	const char *sr = api_str(c, 1);
	db_rdlock();
	struct db_row *r = db_get(F.sr, sr);
	const struct val *pbds = col(r, F.sr_pbds);
	uint32_t n = count(pbds);
	char first[2][DB_REF_MAX] = {"", ""};
	for (uint32_t i = 0; i < n && i < 2; i++)
		snprintf(first[i], DB_REF_MAX, "%s", pbds->u.items[i]->u.s);
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "SR", sr);
		return;
	}
	if (!api_bool(c, 2) && n > 1) {
		api_fail(c, "SR_HAS_MULTIPLE_PBDS", 2, first[0], first[1]);
		return;
	}
	struct db_txn *t = db_txn_new();
	db_txn_set(t, F.sr, sr, F.sr_shared, val_bool_h(api_bool(c, 2)));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

/* Setters the original allows only to the storage drivers' own sessions
 * (Sm.assert_session_has_internal_sr_access); no client session has that
 * access here. */
static void sm_internal_only(struct api_ctx *c)
{
	api_fail(c, "PERMISSION_DENIED", 1, "");
}

/* ---- PBD messages ---- */

static void pbd_create(struct api_ctx *c)
{
	storage_start();
	struct val **cols = api_cols_from_record(c, F.pbd, c->params[1]);
	if (!cols)
		return;
	const char *host = cols[F.pbd_host] ? cols[F.pbd_host]->u.s : "";
	const char *sr = cols[F.pbd_sr] ? cols[F.pbd_sr]->u.s : "";
	const char *srm = map_get(cols[F.pbd_dc], "SRmaster");
	if (srm) {
		api_fail(c, "VALUE_NOT_SUPPORTED", 3, "SRmaster", srm, "This key is for internal use only");
		api_cols_free(F.pbd, cols);
		return;
	}
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "pbd_create"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	if (mark_retry(&m, c->task, &c->err) < 0) {
		api_cols_free(F.pbd, cols);
		return;
	}
	char dup[DB_REF_MAX] = "";
	db_rdlock();
	bool host_ok = db_get(idl_class_find("host"), host) != NULL;
	const struct val *pbds = col(db_get(F.sr, sr), F.sr_pbds);
	for (uint32_t i = 0; i < count(pbds) && !dup[0]; i++)
		if (strcmp(col_str(db_get(F.pbd, pbds->u.items[i]->u.s), F.pbd_host), host) == 0)
			snprintf(dup, sizeof(dup), "%s", pbds->u.items[i]->u.s);
	db_unlock();
	if (!host_ok) {
		api_fail(c, "HANDLE_INVALID", 2, "host", host);
		api_cols_free(F.pbd, cols);
	} else if (dup[0]) {
		api_fail(c, "PBD_EXISTS", 3, sr, host, dup);
		api_cols_free(F.pbd, cols);
	} else {
		/* as the original: not attached, other_config not taken */
		api_row_set(F.pbd, cols, "currently_attached", val_bool_h(false));
		api_row_set(F.pbd, cols, "other_config", val_struct_h(0));
		api_insert_reply(c, F.pbd, cols);
	}
	unmark(&m);
}

static void pbd_destroy(struct api_ctx *c)
{
	storage_start();
	const char *pbd = api_str(c, 1);
	db_rdlock();
	struct db_row *p = db_get(F.pbd, pbd);
	char sr[DB_REF_MAX];
	snprintf(sr, sizeof(sr), "%s", col_str(p, F.pbd_sr));
	db_unlock();
	if (!p) {
		api_fail(c, "HANDLE_INVALID", 2, "PBD", pbd);
		return;
	}
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "pbd_destroy"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	db_rdlock();
	bool attached = col_bool(db_get(F.pbd, pbd), F.pbd_attached);
	db_unlock();
	if (attached) {
		api_fail(c, "OPERATION_NOT_ALLOWED", 1, "PBD is currently attached");
	} else {
		struct db_txn *t = db_txn_new();
		db_txn_delete(t, F.pbd, pbd);
		if (api_commit(c, t) == 0)
			enc_void(c->out);
	}
	unmark(&m);
}

static void pbd_plug(struct api_ctx *c)
{
	storage_start();
	if (pbd_plug_do(c, api_str(c, 1)) == 0)
		enc_void(c->out);
}

static void pbd_unplug(struct api_ctx *c)
{
	storage_start();
	const char *pbd = api_str(c, 1);
	db_rdlock();
	struct db_row *p = db_get(F.pbd, pbd);
	bool attached = col_bool(p, F.pbd_attached);
	char sr[DB_REF_MAX];
	snprintf(sr, sizeof(sr), "%s", col_str(p, F.pbd_sr));
	db_unlock();
	if (!p) {
		api_fail(c, "HANDLE_INVALID", 2, "PBD", pbd);
		return;
	}
	if (!attached) {
		enc_void(c->out);
		return;
	}
	/* no VDI of the SR may have an operation in progress (the original's
	 * with_unplug_locks), then mark the SR */
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "unplug"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	db_rdlock();
	const struct val *vdis = col(db_get(F.sr, sr), F.sr_vdis);
	for (uint32_t i = 0; i < count(vdis) && !api_failed(c); i++) {
		struct db_row *v = db_get(F.vdi, vdis->u.items[i]->u.s);
		const struct val *cur = col(v, F.vdi_current);
		if (count(cur) && cur->u.members[0].v->kind == V_STR)
			api_fail(c, "OTHER_OPERATION_IN_PROGRESS", 4, "VDI", v->ref,
				 cur->u.members[0].v->u.s, cur->u.members[0].key);
	}
	db_unlock();
	if (api_failed(c) || mark_retry(&m, c->task, &c->err) < 0)
		return;
	/* VDIs of the SR in use: attached VBDs (not empty) and open images */
	char *inuse[XERR_MAXP];
	int nin = 0;
	db_rdlock();
	vdis = col(db_get(F.sr, sr), F.sr_vdis);
	for (uint32_t i = 0; i < count(vdis) && nin < XERR_MAXP; i++) {
		struct db_row *v = db_get(F.vdi, vdis->u.items[i]->u.s);
		if (!v || strcmp(col_str(v, F.vdi_type), "metadata") == 0)
			continue;
		int ro = 0, rw = 0;
		open_counts(v->ref, &ro, &rw);
		const struct val *vbds = col(v, F.vdi_vbds);
		for (uint32_t k = 0; k < count(vbds); k++) {
			struct db_row *b = db_get(F.vbd, vbds->u.items[k]->u.s);
			if (b && (col_bool(b, F.vbd_attached) || col_bool(b, F.vbd_reserved)) &&
			    !col_bool(b, F.vbd_empty))
				ro++;
		}
		if (ro + rw)
			inuse[nin++] = arena_strndup(c->a, v->ref, strlen(v->ref));
	}
	db_unlock();
	if (nin) {
		xerr_set(&c->err, "VDI_IN_USE", 0);
		for (int i = 0; i < nin; i++)
			c->err.params[c->err.n++] = util_strdup(inuse[i]);
		goto out;
	}
	unplug_att(sr);
	struct db_txn *t = db_txn_new();
	db_txn_set(t, F.pbd, pbd, F.pbd_attached, val_bool_h(false));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
out:
	unmark(&m);
}

/* ---- VDI messages ---- */

/* The VDI's SR ref and location (read lock taken here); HANDLE_INVALID. */
static bool vdi_info(struct api_ctx *c, const char *vdi, char sr[DB_REF_MAX],
		     char loc[SM_LOC_MAX], bool *managed)
{
	db_rdlock();
	struct db_row *r = db_get(F.vdi, vdi);
	if (r) {
		snprintf(sr, DB_REF_MAX, "%s", col_str(r, F.vdi_sr));
		snprintf(loc, SM_LOC_MAX, "%s", col_str(r, F.vdi_location));
		if (managed)
			*managed = col_bool(r, F.vdi_managed);
	}
	db_unlock();
	if (!r)
		api_fail(c, "HANDLE_INVALID", 2, "VDI", vdi);
	return r != NULL;
}

/* Create a VDI in an attached SR (the SR is marked vdi_create by the
 * caller).  The row from the driver's VDI and the client's fields. */
struct vdi_spec {
	const char *name_label, *name_description, *type;
	bool sharable, read_only;
	const struct val *other_config, *xenstore_data, *sm_config, *tags;
	uint64_t virtual_size;
};

static int vdi_create_in(struct att *a, const char *sr, const struct vdi_spec *s, const char *task,
			 char out[DB_REF_MAX], struct xerr *e)
{
	if (strcmp(s->type, "cbt_metadata") == 0) {
		xerr_set(e, "VDI_INCOMPATIBLE_TYPE", 2, "", "cbt_metadata");
		return -1;
	}
	struct sm_vdi v = {0};
	int rc = a->sr.drv->vdi_create(&a->sr, s->virtual_size, &v);
	if (rc < 0) {
		sm_fail(e, rc, sr, NULL, "create", s->virtual_size, sr_free(a), task);
		return -1;
	}
	if (v.virtual_size > s->virtual_size)
		log_info("SR %s: VDI %s requested virtual size %" PRIu64 " < actual %" PRIu64,
			 a->sr.uuid, v.location, s->virtual_size, v.virtual_size);
	db_rdlock();
	struct val **cols = vdi_cols_new(sr, &v);
	db_unlock();
	api_row_set(F.vdi, cols, "name_label", val_cstr_h(s->name_label ? s->name_label : ""));
	api_row_set(F.vdi, cols, "name_description",
		    val_cstr_h(s->name_description ? s->name_description : ""));
	api_row_set(F.vdi, cols, "type", val_cstr_h(s->type));
	api_row_set(F.vdi, cols, "sharable", val_bool_h(s->sharable));
	api_row_set(F.vdi, cols, "read_only", val_bool_h(s->read_only || v.read_only));
	if (s->other_config)
		api_row_set(F.vdi, cols, "other_config", val_dup_h(s->other_config));
	if (s->xenstore_data)
		api_row_set(F.vdi, cols, "xenstore_data", val_dup_h(s->xenstore_data));
	if (s->tags)
		api_row_set(F.vdi, cols, "tags", val_dup_h(s->tags));
	if (s->sm_config && s->sm_config->n) {
		struct val *sm = val_dup_h(s->sm_config);
		if (v.parent[0]) {
			struct val *m2 = ops_map_with(sm, "vhd-parent", v.parent);
			val_free(sm);
			sm = m2;
		}
		api_row_set(F.vdi, cols, "sm_config", sm);
	}
	db_ref_new(out);
	struct db_txn *t = db_txn_new();
	db_txn_insert(t, F.vdi, out, cols);
	free(cols);
	if (db_txn_commit(t, e) < 0) {
		a->sr.drv->vdi_delete(&a->sr, v.location);
		return -1;
	}
	sr_space_update(a, sr);
	return 0;
}

static int vdi_create_marked(const char *sr, const struct vdi_spec *s, const char *key,
			     const char *task, char out[DB_REF_MAX], struct xerr *e)
{
	struct mark m = {.key = key, .sr_op = "vdi_create"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	if (mark_retry(&m, task, e) < 0)
		return -1;
	int rc = -1;
	struct att *a = sr_get(sr, e);
	if (a) {
		rc = vdi_create_in(a, sr, s, task, out, e);
		att_put(a);
	}
	unmark(&m);
	return rc;
}

static void vdi_create(struct api_ctx *c)
{
	storage_start();
	struct val **cols = api_cols_from_record(c, F.vdi, c->params[1]);
	if (!cols)
		return;
	struct vdi_spec s = {
		.name_label = cols[F.vdi_name_label] ? cols[F.vdi_name_label]->u.s : "",
		.name_description = cols[F.vdi_name_description] ? cols[F.vdi_name_description]->u.s : "",
		.type = cols[F.vdi_type]->u.s,
		.sharable = cols[F.vdi_sharable]->u.b,
		.read_only = cols[F.vdi_read_only]->u.b,
		.other_config = cols[F.vdi_other_config],
		.xenstore_data = cols[F.vdi_xenstore_data],
		.sm_config = cols[F.vdi_sm_config],
		.tags = cols[F.vdi_tags],
		.virtual_size = (uint64_t)(cols[F.vdi_vsize]->u.i > 0 ? cols[F.vdi_vsize]->u.i : 0),
	};
	char ref[DB_REF_MAX];
	if (vdi_create_marked(cols[F.vdi_sr]->u.s, &s, ops_key(c->a, c->task), c->task, ref,
			      &c->err) == 0)
		enc_cstr(c->out, ref);
	api_cols_free(F.vdi, cols);
}

/* VDI.destroy's work (the SR and VDI are marked by the caller). */
static int vdi_destroy_do(const char *vdi, const char *task, struct xerr *e)
{
	char sr[DB_REF_MAX] = "", loc[SM_LOC_MAX] = "";
	db_rdlock();
	struct db_row *r = db_get(F.vdi, vdi);
	bool managed = col_bool(r, F.vdi_managed);
	snprintf(sr, sizeof(sr), "%s", col_str(r, F.vdi_sr));
	snprintf(loc, sizeof(loc), "%s", col_str(r, F.vdi_location));
	db_unlock();
	if (!r) {
		xerr_set(e, "HANDLE_INVALID", 2, "VDI", vdi);
		return -1;
	}
	struct att *a = sr_get(sr, e);
	if (!a)
		return -1;
	int rc = -1;
	if (!managed) {
		xerr_set(e, "VDI_NOT_MANAGED", 1, vdi);
		goto out;
	}
	/* attached VBDs and open images */
	int ro = 0, rw = 0;
	open_counts(vdi, &ro, &rw);
	struct db_txn *t = db_txn_new();
	db_rdlock();
	r = db_get(F.vdi, vdi);
	const struct val *vbds = col(r, F.vdi_vbds);
	for (uint32_t i = 0; i < count(vbds); i++) {
		struct db_row *b = db_get(F.vbd, vbds->u.items[i]->u.s);
		if (b && (col_bool(b, F.vbd_attached) || col_bool(b, F.vbd_reserved)))
			ro++;
		else if (b)
			db_txn_delete(t, F.vbd, b->ref);
	}
	int vm = F.vm;
	for (struct db_row *v = db_next(vm, NULL); v; v = db_next(vm, v))
		if (strcmp(col_str(v, F.vm_suspend_vdi), vdi) == 0)
			db_txn_set(t, vm, v->ref, F.vm_suspend_vdi, val_cstr_h("OpaqueRef:NULL"));
	db_txn_delete(t, F.vdi, vdi);
	db_unlock();
	if (ro + rw) {
		db_txn_free(t);
		xerr_set(e, "VDI_IN_USE", 2, vdi, "destroy");
		goto out;
	}
	rc = a->sr.drv->vdi_delete(&a->sr, loc);
	if (rc < 0 && rc != -ENOENT) {
		db_txn_free(t);
		sm_fail(e, rc, sr, vdi, "destroy", 0, 0, task);
		rc = -1;
		goto out;
	}
	log_info("SR %s: VDI %s destroyed", a->sr.uuid, loc);
	rc = db_txn_commit(t, e);
	sr_space_update(a, sr);
	gc_kick(sr, false);
out:
	att_put(a);
	return rc;
}

static int vdi_destroy_marked(const char *vdi, const char *key, const char *task,
			      struct xerr *e)
{
	char sr[DB_REF_MAX] = "";
	db_rdlock();
	struct db_row *r = db_get(F.vdi, vdi);
	snprintf(sr, sizeof(sr), "%s", col_str(r, F.vdi_sr));
	db_unlock();
	if (!r) {
		xerr_set(e, "HANDLE_INVALID", 2, "VDI", vdi);
		return -1;
	}
	struct mark m = {.key = key, .sr_op = "vdi_destroy", .vdi_op = "destroy"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	snprintf(m.vdi, sizeof(m.vdi), "%s", vdi);
	if (mark_retry(&m, task, e) < 0)
		return -1;
	int rc = vdi_destroy_do(vdi, task, e);
	unmark(&m);
	return rc;
}

static void vdi_destroy(struct api_ctx *c)
{
	storage_start();
	if (vdi_destroy_marked(api_str(c, 1), ops_key(c->a, c->task), c->task, &c->err) == 0)
		enc_void(c->out);
}

/* VDI.snapshot and VDI.clone: one driver call makes the new VDI and a
 * hidden base (its own row, unmanaged, "base copy"); both the original and
 * the new VDI get sm_config vhd-parent = the base; the new row copies the
 * metadata the API keeps (the original's snapshot_and_clone). */
static void snapshot_or_clone(struct api_ctx *c, bool snapshot, char *result)
{
	storage_start();
	const char *vdi = api_str(c, 1);
	char sr[DB_REF_MAX], loc[SM_LOC_MAX];
	bool managed;
	if (!vdi_info(c, vdi, sr, loc, &managed))
		return;
	struct mark m = {.key = ops_key(c->a, c->task),
			 .sr_op = snapshot ? "vdi_snapshot" : "vdi_clone",
			 .vdi_op = snapshot ? "snapshot" : "clone"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	snprintf(m.vdi, sizeof(m.vdi), "%s", vdi);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	struct att *a = sr_get(sr, &c->err);
	if (!a)
		goto out;
	if (!managed) {
		api_fail(c, "VDI_NOT_MANAGED", 1, vdi);
		goto put;
	}
	struct sm_vdi nv = {0}, base = {0}, orig = {0};
	int rc = a->sr.drv->vdi_snapshot(&a->sr, loc, &nv, &base);
	if (rc < 0) {
		db_rdlock();
		uint64_t vs = (uint64_t)col_int(db_get(F.vdi, vdi), F.vdi_vsize);
		db_unlock();
		sm_fail(&c->err, rc, sr, vdi, m.vdi_op, vs, sr_free(a), c->task);
		goto put;
	}
	bool have_orig = a->sr.drv->vdi_stat && a->sr.drv->vdi_stat(&a->sr, loc, &orig) == 0;
	char nref[DB_REF_MAX], bref[DB_REF_MAX];
	db_ref_new(nref);
	db_ref_new(bref);
	struct db_txn *t = db_txn_new();
	db_rdlock();
	struct db_row *r = db_get(F.vdi, vdi);
	if (!r) { /* forgotten meanwhile: scan will pick the files up */
		db_unlock();
		db_txn_free(t);
		api_fail(c, "HANDLE_INVALID", 2, "VDI", vdi);
		goto put;
	}
	bool base_new = base.location[0] && !db_get_by_uuid(F.vdi, base.location);
	if (base_new) {
		base.hidden = true;
		struct val **bc = vdi_cols_new(sr, &base);
		db_txn_insert(t, F.vdi, bref, bc);
		free(bc);
	}
	struct val **nc = vdi_cols_new(sr, &nv);
	static const char *const copied[] = {"name_label",   "name_description", "type",
					     "sharable",     "other_config",     "xenstore_data",
					     "on_boot",      "allow_caching",    "tags"};
	for (size_t i = 0; i < sizeof(copied) / sizeof(copied[0]); i++) {
		int f = api_field(F.vdi, copied[i]);
		api_row_set(F.vdi, nc, copied[i], val_dup_h(r->cols[f] ? r->cols[f] : &val_nil));
	}
	api_row_set(F.vdi, nc, "sm_config", map1("vhd-parent", nv.parent[0] ? nv.parent : base.location));
	if (snapshot) {
		api_row_set(F.vdi, nc, "is_a_snapshot", val_bool_h(true));
		api_row_set(F.vdi, nc, "snapshot_of", val_cstr_h(vdi));
		api_row_set(F.vdi, nc, "snapshot_time", val_datetime_h(util_now()));
	}
	db_txn_insert(t, F.vdi, nref, nc);
	free(nc);
	if (have_orig)
		vdi_sync_txn(t, r, &orig);
	else
		db_txn_set(t, F.vdi, vdi, F.vdi_sm_config,
			   ops_map_with(col(r, F.vdi_sm_config), "vhd-parent", base.location));
	db_unlock();
	if (api_commit(c, t) < 0)
		goto put;
	sr_space_update(a, sr);
	log_info("SR %s: VDI %s %s as %s (base %s)", a->sr.uuid, loc,
		 snapshot ? "snapshotted" : "cloned", nv.location, base.location);
	if (result)
		snprintf(result, DB_REF_MAX, "%s", nref);
	else
		enc_cstr(c->out, nref);
put:
	att_put(a);
out:
	unmark(&m);
}

static void vdi_snapshot(struct api_ctx *c)
{
	snapshot_or_clone(c, true, NULL);
}

static void vdi_clone(struct api_ctx *c)
{
	snapshot_or_clone(c, false, NULL);
}

static void vdi_resize(struct api_ctx *c)
{
	storage_start();
	const char *vdi = api_str(c, 1);
	int64_t size = api_int(c, 2);
	char sr[DB_REF_MAX], loc[SM_LOC_MAX];
	bool managed;
	if (!vdi_info(c, vdi, sr, loc, &managed))
		return;
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "vdi_resize", .vdi_op = "resize"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	snprintf(m.vdi, sizeof(m.vdi), "%s", vdi);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	struct att *a = sr_get(sr, &c->err);
	if (!a)
		goto out;
	db_rdlock();
	int64_t cur = col_int(db_get(F.vdi, vdi), F.vdi_vsize);
	db_unlock();
	if (!managed) {
		api_fail(c, "VDI_NOT_MANAGED", 1, vdi);
	} else if (size < cur) {
		/* what the original's file SR answers (SM error VDISize) */
		api_fail(c, "SR_BACKEND_FAILURE_79", 3, "",
			 "VDI Invalid size [opterr=shrinking not allowed]", "");
	} else {
		struct sm_vdi nv = {0};
		int rc = size == cur ? 0 : a->sr.drv->vdi_resize(&a->sr, loc, (uint64_t)size, &nv);
		if (rc < 0) {
			sm_fail(&c->err, rc, sr, vdi, "resize", (uint64_t)size, sr_free(a), c->task);
		} else {
			struct db_txn *t = db_txn_new();
			if (size != cur) {
				db_rdlock();
				struct db_row *r = db_get(F.vdi, vdi);
				if (r)
					vdi_sync_txn(t, r, &nv);
				db_unlock();
			}
			if (api_commit(c, t) == 0) {
				sr_space_update(a, sr);
				enc_void(c->out);
			}
		}
	}
	att_put(a);
out:
	unmark(&m);
}

static void vdi_forget(struct api_ctx *c)
{
	storage_start();
	const char *vdi = api_str(c, 1);
	char sr[DB_REF_MAX], loc[SM_LOC_MAX];
	if (!vdi_info(c, vdi, sr, loc, NULL))
		return;
	struct mark m = {.key = ops_key(c->a, c->task), .vdi_op = "forget"};
	snprintf(m.vdi, sizeof(m.vdi), "%s", vdi);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	struct db_txn *t = db_txn_new();
	db_txn_delete(t, F.vdi, vdi);
	if (api_commit(c, t) == 0) {
		enc_void(c->out);
		refresh_allowed(sr);
	} else {
		unmark(&m);
	}
}

static void vdi_update(struct api_ctx *c)
{
	storage_start();
	const char *vdi = api_str(c, 1);
	char sr[DB_REF_MAX], loc[SM_LOC_MAX];
	if (!vdi_info(c, vdi, sr, loc, NULL))
		return;
	struct mark m = {.key = ops_key(c->a, c->task), .vdi_op = "update"};
	snprintf(m.vdi, sizeof(m.vdi), "%s", vdi);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	struct att *a = sr_get(sr, &c->err);
	if (a) {
		struct sm_vdi v = {0};
		int rc = a->sr.drv->vdi_stat ? a->sr.drv->vdi_stat(&a->sr, loc, &v) : -EOPNOTSUPP;
		if (rc < 0) {
			sm_fail(&c->err, rc, sr, vdi, "update", 0, 0, c->task);
		} else {
			struct db_txn *t = db_txn_new();
			db_rdlock();
			struct db_row *r = db_get(F.vdi, vdi);
			if (r)
				vdi_sync_txn(t, r, &v);
			db_unlock();
			if (api_commit(c, t) == 0)
				enc_void(c->out);
		}
		att_put(a);
	}
	unmark(&m);
}

/* VDI.introduce (driver: what exists at location) and VDI.pool_introduce
 * (the record only). */
static void vdi_introduce_common(struct api_ctx *c, bool db_only)
{
	/* (session, uuid, name_label, name_description, SR, type, sharable, read_only,
	 *  other_config, location, xenstore_data, sm_config, managed, virtual_size,
	 *  physical_utilisation, metadata_of_pool, is_a_snapshot, snapshot_time,
	 *  snapshot_of[, cbt_enabled]) */
	storage_start();
	const char *uuid = api_str(c, 1), *sr = api_str(c, 4), *loc = api_str(c, 9);
	db_rdlock();
	struct db_row *srr = db_get(F.sr, sr);
	char dup[DB_REF_MAX] = "";
	const struct val *vdis = col(srr, F.sr_vdis);
	for (uint32_t i = 0; i < count(vdis) && !dup[0]; i++) {
		struct db_row *v = db_get(F.vdi, vdis->u.items[i]->u.s);
		if (v && strcmp(col_str(v, F.vdi_location), loc) == 0 &&
		    (db_only || strcmp(col_str(v, F.vdi_uuid), uuid) != 0))
			snprintf(dup, sizeof(dup), "%s", v->ref);
	}
	db_unlock();
	if (!srr) {
		api_fail(c, "HANDLE_INVALID", 2, "SR", sr);
		return;
	}
	if (dup[0]) {
		api_fail(c, "LOCATION_NOT_UNIQUE", 2, sr, loc);
		return;
	}
	if (uuid[0] && !util_uuid_valid(uuid)) {
		api_fail(c, "UUID_INVALID", 2, "VDI", uuid);
		return;
	}
	struct sm_vdi v = {0};
	snprintf(v.location, sizeof(v.location), "%s", loc);
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "vdi_introduce"};
	struct att *a = NULL;
	if (!db_only) {
		snprintf(m.sr, sizeof(m.sr), "%s", sr);
		if (mark_retry(&m, c->task, &c->err) < 0)
			return;
		if (!(a = sr_get(sr, &c->err)))
			goto out;
		int rc = a->sr.drv->vdi_stat(&a->sr, loc, &v);
		if (rc == -ENOENT) {
			api_fail(c, "VDI_LOCATION_MISSING", 2, sr, loc);
			goto out;
		} else if (rc < 0) {
			sm_fail(&c->err, rc, sr, NULL, "introduce", 0, 0, c->task);
			goto out;
		}
	} else {
		v.virtual_size = (uint64_t)api_int(c, 13);
		v.physical_utilisation = (uint64_t)api_int(c, 14);
		v.read_only = api_bool(c, 7);
		v.hidden = !api_bool(c, 12);
	}
	db_rdlock();
	struct val **cols = vdi_cols_new(sr, &v);
	db_unlock();
	if (uuid[0])
		api_row_set(F.vdi, cols, "uuid", val_cstr_h(uuid));
	const char *nl = api_str(c, 2);
	if (nl[0] || db_only)
		api_row_set(F.vdi, cols, "name_label", val_cstr_h(nl));
	api_row_set(F.vdi, cols, "name_description", val_cstr_h(api_str(c, 3)));
	api_row_set(F.vdi, cols, "type", val_cstr_h(api_str(c, 5)));
	api_row_set(F.vdi, cols, "sharable", val_bool_h(api_bool(c, 6)));
	api_row_set(F.vdi, cols, "other_config", val_dup_h(c->params[8]));
	api_row_set(F.vdi, cols, "xenstore_data", val_dup_h(c->params[10]));
	if (db_only || count(c->params[11])) {
		struct val *sm = val_dup_h(c->params[11]);
		if (!db_only && v.parent[0]) {
			struct val *m2 = ops_map_with(sm, "vhd-parent", v.parent);
			val_free(sm);
			sm = m2;
		}
		api_row_set(F.vdi, cols, "sm_config", sm);
	}
	if (db_only) {
		api_row_set(F.vdi, cols, "metadata_of_pool", val_cstr_h(api_str(c, 15)));
		api_row_set(F.vdi, cols, "is_a_snapshot", val_bool_h(api_bool(c, 16)));
		api_row_set(F.vdi, cols, "snapshot_time", val_dup_h(c->params[17]));
		api_row_set(F.vdi, cols, "snapshot_of", val_cstr_h(api_str(c, 18)));
		if (c->nparams > 19)
			api_row_set(F.vdi, cols, "cbt_enabled", val_bool_h(api_bool(c, 19)));
	}
	api_insert_reply(c, F.vdi, cols);
	if (api_failed(c) && strcmp(c->err.code, "DB_UNIQUENESS_CONSTRAINT_VIOLATION") == 0) {
		xerr_clear(&c->err);
		api_fail(c, "UUID_INVALID", 2, "VDI", uuid);
	}
	if (!api_failed(c) && a)
		sr_space_update(a, sr);
out:
	att_put(a);
	unmark(&m);
	if (db_only && !api_failed(c))
		refresh_allowed(sr);
}

static void vdi_introduce(struct api_ctx *c)
{
	vdi_introduce_common(c, false);
}

static void vdi_pool_introduce(struct api_ctx *c)
{
	vdi_introduce_common(c, true);
}

static void vdi_set_allow_caching(struct api_ctx *c)
{
	storage_start();
	const char *vdi = api_str(c, 1);
	char bad[DB_REF_MAX] = "", ps[32] = "";
	db_rdlock();
	struct db_row *r = db_get(F.vdi, vdi);
	const struct val *vbds = col(r, F.vdi_vbds);
	for (uint32_t i = 0; i < count(vbds) && !bad[0]; i++) {
		struct db_row *vm = db_get(F.vm, col_str(db_get(F.vbd, vbds->u.items[i]->u.s), F.vbd_vm));
		if (vm && strcmp(col_str(vm, F.vm_power_state), "Halted") != 0) {
			snprintf(bad, sizeof(bad), "%s", vm->ref);
			snprintf(ps, sizeof(ps), "%s", col_str(vm, F.vm_power_state));
		}
	}
	db_unlock();
	if (!r) {
		api_fail(c, "HANDLE_INVALID", 2, "VDI", vdi);
		return;
	}
	if (bad[0]) {
		for (char *p = ps; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		api_fail(c, "VM_BAD_POWER_STATE", 3, bad, "halted", ps);
		return;
	}
	struct db_txn *t = db_txn_new();
	db_txn_set(t, F.vdi, vdi, F.vdi_allow_caching, val_bool_h(api_bool(c, 2)));
	if (api_commit(c, t) == 0)
		enc_void(c->out);
}

static void vdi_set_on_boot(struct api_ctx *c)
{
	/* needs the driver's reset-on-boot (the original's VDI_RESET_ON_BOOT
	 * feature), which no driver of ours has: the SR mark refuses with
	 * SR_OPERATION_NOT_SUPPORTED, as the original does */
	storage_start();
	const char *vdi = api_str(c, 1);
	char sr[DB_REF_MAX], loc[SM_LOC_MAX];
	if (!vdi_info(c, vdi, sr, loc, NULL))
		return;
	struct mark m = {.key = ops_key(c->a, c->task), .sr_op = "vdi_set_on_boot",
			 .vdi_op = "set_on_boot"};
	snprintf(m.sr, sizeof(m.sr), "%s", sr);
	snprintf(m.vdi, sizeof(m.vdi), "%s", vdi);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	api_fail(c, "SR_OPERATION_NOT_SUPPORTED", 1, sr);
	unmark(&m);
}

/* ---- VDI.copy ---- */

struct copy_progress {
	const char *task;
	double next;
};

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Copy the contents of src into dst block by block: with base, only the
 * blocks where src differs from base (the original's sparse_dd with a base);
 * else every block but those that are zero in src (dst reads zero there,
 * being new or thin; the original copies sparsely the same way).  Progress
 * and cancellation through the task.  0 or -1 with e set. */
static int copy_blocks(struct sm_image *src, struct sm_image *base, struct sm_image *dst,
		       const char *task, struct xerr *e)
{
	const size_t bs = VHD_BLOCK_SIZE;
	uint64_t size = src->virtual_size;
	uint8_t *buf = util_malloc(bs), *bbuf = base ? util_malloc(bs) : NULL;
	int rc = 0;
	double next = util_now_f() + 0.1;
	if (task)
		task_set_cancellable(task, true);
	for (uint64_t off = 0; off < size; off += bs) {
		size_t len = size - off < bs ? (size_t)(size - off) : bs;
		if (task && task_check_cancel(task, e) < 0) {
			rc = -1;
			break;
		}
		/* a block no image of the chain has is zero: nothing to read */
		bool zero = false;
		if (!base && src->format == SM_VHD && src->chain.info[0].block_size == bs) {
			struct vhd_ext x;
			if (vhd_chain_block(&src->chain, 0, (uint32_t)(off / bs), &x) == 0 &&
			    x.kind == VHD_EXT_ZERO)
				zero = true;
		}
		if (zero)
			goto progress;
		if ((rc = sm_image_pread(src, buf, len, off)) < 0)
			break;
		if (base) {
			memset(bbuf, 0, len);
			if (off < base->virtual_size) {
				size_t bl = base->virtual_size - off < len ? (size_t)(base->virtual_size - off) : len;
				if ((rc = sm_image_pread(base, bbuf, bl, off)) < 0)
					break;
			}
			if (memcmp(buf, bbuf, len) == 0)
				goto progress;
		} else if (all_zero(buf, len)) {
			goto progress;
		}
		if ((rc = sm_image_pwrite(dst, buf, len, off)) < 0)
			break;
progress:
		if (task && util_now_f() >= next) {
			task_set_progress(task, (double)(off + len) / (double)size);
			next = util_now_f() + 0.1;
		}
	}
	if (rc >= 0 && !e->code)
		rc = sm_image_flush(dst);
	free(buf);
	free(bbuf);
	if (rc == -ENOSPC && !e->code) {
		/* the destination's file system ran out (sm.h: SR_FULL) */
		uint64_t size = 0, used = 0;
		char a[32], b[32];
		if (dst->sr && dst->sr->drv->space)
			dst->sr->drv->space(dst->sr, &size, &used);
		snprintf(a, sizeof(a), "%" PRIu64, dst->virtual_size);
		snprintf(b, sizeof(b), "%" PRIu64, size > used ? size - used : 0);
		xerr_set(e, "SR_FULL", 2, a, b);
	}
	if (rc < 0 && !e->code)
		xerr_set(e, "VDI_COPY_FAILED", 1, strerror(-rc));
	return e->code ? -1 : 0;
}

static void vdi_copy_to(struct api_ctx *c, char *result)
{
	/* (session, vdi, sr, base_vdi, into_vdi) */
	storage_start();
	const char *vdi = api_str(c, 1), *sr = api_str(c, 2), *base_vdi = api_str(c, 3),
		   *into = api_str(c, 4);
	char src_sr[DB_REF_MAX], loc[SM_LOC_MAX];
	bool managed;
	if (!vdi_info(c, vdi, src_sr, loc, &managed))
		return;
	const char *key = ops_key(c->a, c->task);
	struct mark m = {.key = key, .vdi_op = "copy"};
	snprintf(m.vdi, sizeof(m.vdi), "%s", vdi);
	if (mark_retry(&m, c->task, &c->err) < 0)
		return;
	char dst[DB_REF_MAX] = "";
	bool created = false;
	struct sm_image si = {0}, bi = {0}, di = {0};
	bool sopen = false, bopen = false, dopen = false;
	if (!managed) {
		api_fail(c, "VDI_NOT_MANAGED", 1, vdi);
		goto out;
	}
	db_rdlock();
	struct db_row *s = db_get(F.vdi, vdi);
	bool into_ok = !is_null_ref(into) && db_get(F.vdi, into);
	bool base_ok = !is_null_ref(base_vdi) && db_get(F.vdi, base_vdi);
	int64_t ssize = col_int(s, F.vdi_vsize);
	struct vdi_spec spec = {0};
	struct val *oc = NULL, *xd = NULL, *tags = NULL, *nl = NULL, *nd = NULL, *ty = NULL;
	bool reset = strcmp(col_str(s, F.vdi_on_boot), "reset") == 0,
	     caching = col_bool(s, F.vdi_allow_caching);
	if (s) {
		nl = val_dup_h(col(s, F.vdi_name_label) ? col(s, F.vdi_name_label) : &val_empty_str);
		nd = val_dup_h(col(s, F.vdi_name_description) ? col(s, F.vdi_name_description)
							      : &val_empty_str);
		ty = val_cstr_h(col_str(s, F.vdi_type));
		oc = col(s, F.vdi_other_config) ? val_dup_h(col(s, F.vdi_other_config)) : NULL;
		xd = col(s, F.vdi_xenstore_data) ? val_dup_h(col(s, F.vdi_xenstore_data)) : NULL;
		tags = col(s, F.vdi_tags) ? val_dup_h(col(s, F.vdi_tags)) : NULL;
		spec.sharable = col_bool(s, F.vdi_sharable);
	}
	db_unlock();
	if (into_ok) {
		snprintf(dst, sizeof(dst), "%s", into);
	} else {
		/* a new VDI like the source (read-write even if the source is not,
		 * no sm_config), as the original */
		spec.name_label = nl->u.s;
		spec.name_description = nd->u.s;
		spec.type = ty->u.s;
		spec.other_config = oc;
		spec.xenstore_data = xd;
		spec.tags = tags;
		spec.virtual_size = (uint64_t)ssize;
		db_rdlock();
		bool sr_ok = db_get(F.sr, sr) != NULL;
		db_unlock();
		if (!sr_ok)
			api_fail(c, "HANDLE_INVALID", 2, "SR", sr);
		else if (vdi_create_marked(sr, &spec, key, c->task, dst, &c->err) == 0)
			created = true;
		if (created && (reset || caching)) {
			struct db_txn *t = db_txn_new();
			if (caching)
				db_txn_set(t, F.vdi, dst, F.vdi_allow_caching, val_bool_h(true));
			struct xerr e2 = {0};
			if (db_txn_commit(t, &e2) < 0)
				xerr_clear(&e2);
		}
	}
	val_free(nl);
	val_free(nd);
	val_free(ty);
	val_free(oc);
	val_free(xd);
	val_free(tags);
	if (api_failed(c))
		goto out;
	db_rdlock();
	struct db_row *d = db_get(F.vdi, dst);
	bool dro = col_bool(d, F.vdi_read_only);
	int64_t dsize = col_int(d, F.vdi_vsize);
	db_unlock();
	if (!d) {
		api_fail(c, "HANDLE_INVALID", 2, "VDI", dst);
		goto out;
	}
	if (dro) {
		api_fail(c, "VDI_READONLY", 1, dst);
		goto out;
	}
	if (dsize < ssize) {
		char n[32];
		snprintf(n, sizeof(n), "%" PRId64, ssize);
		api_fail(c, "VDI_TOO_SMALL", 2, dst, n);
		goto out;
	}
	if (storage_vdi_open(vdi, false, c->task, &si, &c->err) < 0)
		goto out;
	sopen = true;
	if (base_ok) {
		if (storage_vdi_open(base_vdi, false, c->task, &bi, &c->err) < 0)
			goto out;
		bopen = true;
	}
	if (storage_vdi_open(dst, true, c->task, &di, &c->err) < 0)
		goto out;
	dopen = true;
	log_info("VDI.copy %s -> %s%s%s", vdi, dst, base_ok ? " from base " : "",
		 base_ok ? base_vdi : "");
	copy_blocks(&si, bopen ? &bi : NULL, &di, c->task, &c->err);
out:;
	struct xerr ce = {0};
	if (dopen && storage_vdi_close(&di, &ce) < 0 && !api_failed(c))
		xerr_move(&c->err, &ce);
	xerr_clear(&ce);
	if (bopen)
		storage_vdi_close(&bi, NULL);
	if (sopen)
		storage_vdi_close(&si, NULL);
	unmark(&m);
	if (api_failed(c)) {
		if (created) {
			struct xerr e = {0};
			if (vdi_destroy_marked(dst, key, c->task, &e) < 0)
				log_warn("VDI.copy: cleaning up VDI %s: %s", dst, e.code);
			xerr_clear(&e);
		}
		return;
	}
	if (result)
		snprintf(result, DB_REF_MAX, "%s", dst);
	else
		enc_cstr(c->out, dst);
}

static void vdi_copy(struct api_ctx *c)
{
	vdi_copy_to(c, NULL);
}

/* ---- for the HTTP handlers (storage.h) ---- */

int storage_vdi_path(const char *vdi_ref, char *path, size_t n, char fmt[8], struct xerr *err)
{
	storage_start();
	char sr[DB_REF_MAX] = "", loc[SM_LOC_MAX] = "";
	db_rdlock();
	struct db_row *r = db_get(F.vdi, vdi_ref);
	snprintf(sr, sizeof(sr), "%s", col_str(r, F.vdi_sr));
	snprintf(loc, sizeof(loc), "%s", col_str(r, F.vdi_location));
	db_unlock();
	if (!r) {
		xerr_set(err, "HANDLE_INVALID", 2, "VDI", vdi_ref);
		return -1;
	}
	struct att *a = sr_get(sr, err);
	if (!a)
		return -1;
	int rc = 0;
	if (a->sr.drv == &sm_file_driver) {
		snprintf(path, n, "%s/%s.vhd", a->sr.path, loc);
		snprintf(fmt, 8, "vhd");
	} else if (a->sr.drv == &sm_iso_driver) {
		snprintf(path, n, "%s/%s", a->sr.path, loc);
		snprintf(fmt, 8, "raw");
	} else {
		xerr_set(err, "SR_OPERATION_NOT_SUPPORTED", 1, sr);
		rc = -1;
	}
	att_put(a);
	return rc;
}

int storage_vdi_open(const char *vdi_ref, bool write, const char *task, struct sm_image *img,
		     struct xerr *err)
{
	storage_start();
	char sr[DB_REF_MAX] = "", loc[SM_LOC_MAX] = "";
	db_rdlock();
	struct db_row *r = db_get(F.vdi, vdi_ref);
	bool managed = col_bool(r, F.vdi_managed), ro = col_bool(r, F.vdi_read_only),
	     sharable = col_bool(r, F.vdi_sharable);
	snprintf(sr, sizeof(sr), "%s", col_str(r, F.vdi_sr));
	snprintf(loc, sizeof(loc), "%s", col_str(r, F.vdi_location));
	const char *t = NULL, *op = NULL;
	char busy[3][DB_REF_MAX] = {"", "", ""};
	if (r && ops_first_current(col(r, F.vdi_current), F.e_vdi_ops, &t, &op, write ? NULL : "copy")) {
		snprintf(busy[0], DB_REF_MAX, "%s", op);
		snprintf(busy[1], DB_REF_MAX, "%s", t);
	}
	int vro = 0, vrw = 0;
	const struct val *vbds = col(r, F.vdi_vbds);
	for (uint32_t i = 0; i < count(vbds); i++) {
		struct db_row *b = db_get(F.vbd, vbds->u.items[i]->u.s);
		if (b && (col_bool(b, F.vbd_attached) || col_bool(b, F.vbd_reserved)))
			(*(strcmp(col_str(b, F.vbd_mode), "RW") == 0 ? &vrw : &vro))++;
	}
	db_unlock();
	if (!r) {
		xerr_set(err, "HANDLE_INVALID", 2, "VDI", vdi_ref);
		return -1;
	}
	if (!managed) {
		xerr_set(err, "VDI_NOT_MANAGED", 1, vdi_ref);
		return -1;
	}
	if (write && ro) {
		xerr_set(err, "VDI_READONLY", 1, vdi_ref);
		return -1;
	}
	if (busy[0][0]) {
		xerr_set(err, "OTHER_OPERATION_IN_PROGRESS", 4, "VDI", vdi_ref, busy[0], busy[1]);
		return -1;
	}
	struct att *a = sr_get(sr, err);
	if (!a)
		return -1;
	struct opened *o = util_calloc(1, sizeof(*o));
	o->img = img;
	o->att = a;
	o->write = write;
	snprintf(o->vdi, sizeof(o->vdi), "%s", vdi_ref);
	/* the sharing check and the registration are one step */
	pthread_mutex_lock(&att_lock);
	int oro = vro, orw = vrw;
	for (struct opened *p = opens; p; p = p->next)
		if (strcmp(p->vdi, vdi_ref) == 0)
			(*(p->write ? &orw : &oro))++;
	bool conflict = !sharable && (write ? oro + orw > 0 : orw > 0);
	if (!conflict) {
		o->next = opens;
		opens = o;
	}
	pthread_mutex_unlock(&att_lock);
	if (conflict) {
		free(o);
		att_put(a);
		xerr_set(err, "VDI_IN_USE", 1, vdi_ref);
		return -1;
	}
	memset(img, 0, sizeof(*img));
	img->fd = -1;
	int rc = a->sr.drv->vdi_open(&a->sr, loc, write, img);
	if (rc < 0) {
		pthread_mutex_lock(&att_lock);
		for (struct opened **p = &opens; *p; p = &(*p)->next)
			if (*p == o) {
				*p = o->next;
				break;
			}
		pthread_mutex_unlock(&att_lock);
		free(o);
		att_put(a);
		sm_fail(err, rc, sr, vdi_ref, write ? "write" : "read", 0, 0, task);
		return -1;
	}
	log_debug("VDI %s opened for %s%s%s", vdi_ref, write ? "writing" : "reading",
		  task ? " in task " : "", task ? task : "");
	refresh_allowed(sr);
	return 0;
}

int storage_vdi_close(struct sm_image *img, struct xerr *err)
{
	if (!img)
		return 0;
	storage_start();
	pthread_mutex_lock(&att_lock);
	struct opened *o = NULL;
	for (struct opened **p = &opens; *p; p = &(*p)->next)
		if ((*p)->img == img) {
			o = *p;
			*p = o->next;
			break;
		}
	pthread_mutex_unlock(&att_lock);
	if (!o)
		return 0;
	int rc = 0;
	if (o->write && (rc = sm_image_flush(img)) < 0 && err)
		xerr_set(err, "VDI_IO_ERROR", 1, strerror(-rc));
	sm_image_close(img);
	struct att *a = o->att;
	char sr[DB_REF_MAX];
	snprintf(sr, sizeof(sr), "%s", a->sr_ref);
	if (o->write && a->sr.drv->vdi_stat) {
		char loc[SM_LOC_MAX];
		db_rdlock();
		snprintf(loc, sizeof(loc), "%s", col_str(db_get(F.vdi, o->vdi), F.vdi_location));
		db_unlock();
		struct sm_vdi v = {0};
		if (a->sr.drv->vdi_stat(&a->sr, loc, &v) == 0) {
			struct db_txn *t = db_txn_new();
			db_rdlock();
			struct db_row *r = db_get(F.vdi, o->vdi);
			if (r)
				vdi_sync_txn(t, r, &v);
			db_unlock();
			struct xerr e = {0};
			if (db_txn_commit(t, &e) < 0)
				xerr_clear(&e);
			sr_space_update(a, sr);
		}
	}
	att_put(a);
	free(o);
	refresh_allowed(sr);
	return rc < 0 ? -1 : 0;
}

int storage_vdi_create_in_sr(const char *sr_ref, const char *name_label, uint64_t virtual_size,
			     const char *type, bool read_only, const struct val *other_config,
			     const char *task, char out[DB_REF_MAX], struct xerr *err)
{
	storage_start();
	struct vdi_spec s = {.name_label = name_label ? name_label : "",
			     .name_description = "",
			     .type = type ? type : "user",
			     .read_only = read_only,
			     .other_config = other_config,
			     .virtual_size = virtual_size};
	char key[DB_REF_MAX];
	if (!task)
		db_ref_new(key);
	return vdi_create_marked(sr_ref, &s, task ? task : key, task, out, err);
}

int storage_vdi_destroy(const char *vdi_ref, const char *task, struct xerr *err)
{
	storage_start();
	char key[DB_REF_MAX];
	if (!task)
		db_ref_new(key);
	return vdi_destroy_marked(vdi_ref, task ? task : key, task, err);
}

/* VDI.snapshot, VDI.clone and VDI.copy for the VM messages (vm.c): the
 * message implementations run with a context of their own. */
static int vdi_call(int which, const char *vdi, const char *sr, const char *task,
		    char out[DB_REF_MAX], struct xerr *err)
{
	struct arena a;
	arena_init(&a, 1 << 20);
	const char *args[] = {"", vdi, sr ? sr : "OpaqueRef:NULL", "OpaqueRef:NULL",
			      "OpaqueRef:NULL"};
	struct val *params[5];
	for (int i = 0; i < 5; i++)
		params[i] = val_str_a(&a, args[i], strlen(args[i]));
	struct api_ctx c = {.a = &a, .params = params, .nparams = 5, .task = task};
	out[0] = 0;
	if (which == 2)
		vdi_copy_to(&c, out);
	else
		snapshot_or_clone(&c, which == 0, out);
	int rc = 0;
	if (api_failed(&c)) {
		xerr_move(err, &c.err);
		rc = -1;
	}
	arena_free(&a);
	return rc;
}

int storage_vdi_snapshot(const char *vdi, const char *task, char out[DB_REF_MAX],
			 struct xerr *err)
{
	return vdi_call(0, vdi, NULL, task, out, err);
}

int storage_vdi_clone(const char *vdi, const char *task, char out[DB_REF_MAX], struct xerr *err)
{
	return vdi_call(1, vdi, NULL, task, out, err);
}

int storage_vdi_copy(const char *vdi, const char *sr, const char *task, char out[DB_REF_MAX],
		     struct xerr *err)
{
	return vdi_call(2, vdi, sr, task, out, err);
}

const struct api_impl storage_impls[] = {
	{"SR.create", sr_create, false},
	{"SR.introduce", sr_introduce, false},
	{"SR.forget", sr_forget, false},
	{"SR.destroy", sr_destroy, false},
	{"SR.scan", sr_scan, false},
	{"SR.update", sr_update, false},
	{"SR.probe", sr_probe, false},
	{"SR.probe_ext", sr_probe_ext, false},
	{"SR.get_supported_types", sr_get_supported_types, true},
	{"SR.set_shared", sr_set_shared, false},
	{"SR.set_physical_size", sm_internal_only, true},
	{"SR.set_virtual_allocation", sm_internal_only, true},
	{"SR.set_physical_utilisation", sm_internal_only, true},
	{"PBD.create", pbd_create, false},
	{"PBD.destroy", pbd_destroy, false},
	{"PBD.plug", pbd_plug, false},
	{"PBD.unplug", pbd_unplug, false},
	{"PBD.set_device_config", sm_internal_only, true},
	{"VDI.create", vdi_create, false},
	{"VDI.destroy", vdi_destroy, false},
	{"VDI.snapshot", vdi_snapshot, false},
	{"VDI.clone", vdi_clone, false},
	{"VDI.copy", vdi_copy, false},
	{"VDI.resize", vdi_resize, false},
	{"VDI.forget", vdi_forget, false},
	{"VDI.update", vdi_update, false},
	{"VDI.introduce", vdi_introduce, false},
	{"VDI.pool_introduce", vdi_pool_introduce, false},
	{"VDI.set_allow_caching", vdi_set_allow_caching, false},
	{"VDI.set_on_boot", vdi_set_on_boot, false},
	{"VDI.set_sharable", sm_internal_only, true},
	{"VDI.set_managed", sm_internal_only, true},
	{"VDI.set_read_only", sm_internal_only, true},
	{"VDI.set_missing", sm_internal_only, true},
	{"VDI.set_virtual_size", sm_internal_only, true},
	{"VDI.set_physical_utilisation", sm_internal_only, true},
	{"VDI.set_is_a_snapshot", sm_internal_only, true},
	{"VDI.set_snapshot_of", sm_internal_only, true},
	{"VDI.set_snapshot_time", sm_internal_only, true},
	{"VDI.set_metadata_of_pool", sm_internal_only, true},
	{"VDI.db_forget", sm_internal_only, true},
	{NULL, NULL, false},
};
