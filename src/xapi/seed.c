/* seed.c — the objects of a fresh single host (see docs/fresh-host.md).
 *
 * A real host gets these from three places: xapi's own first start (pool,
 * host, host_metrics, host_cpu, the control domain and its consoles, SM
 * records, the internal management network), the installer's first-boot
 * scripts (networks and PIFs of the NICs, the local SR, the pool's default
 * SRs) and the guest-templates package (the built-in templates).  cxapi has
 * no installer, so all of it is created here, in one database transaction,
 * the first time the daemon starts on an empty database.  The hardware
 * values come from the sim_* configuration keys (struct config).
 *
 * On later starts only what the original rewrites on every start is
 * refreshed: the API and software versions, host_metrics, host.enabled and
 * the boot_time/agent_start_time keys of host.other_config.
 */
#include "xapi/seed.h"
#include "api/vm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api.h"
#include "api/idl.h"
#include "base/log.h"
#include "base/util.h"
#include "db/db.h"
#include "val/val.h"
#include "xapi/config.h"

#define MIB (1024LL * 1024)
#define GIB (1024LL * MIB)
#define NULL_REF "OpaqueRef:NULL"

#ifndef CX_VERSION
#define CX_VERSION "0.1.0"
#endif
#ifndef CX_GIT_ID
#define CX_GIT_ID "0"
#endif

/* The XenAPI implementation level we present as "xapi": the datamodel in
 * idl/ is that of xapi 24.10 (API 2.21). Clients compare it, so it follows
 * the datamodel, not cxapi's own version. */
#define XAPI_COMPAT_VERSION "24.10.0"
#define PLATFORM_NAME "XCP"
#define PLATFORM_VERSION "3.4.0"

/* Simulated CPU feature bitmaps (the form Xen's libxl reports: 32-bit words
 * in hex).  Not configurable: nothing checks them beyond equality between
 * hosts of a pool. */
#define FEATURES_PV_HOST "1fc9cbf5-f6b82203-2991cbf5-00000123-00000007-209c0129-00000000-00000000-00001000-8c000400"
#define FEATURES_HVM_HOST "1fcbfbff-f7fa3223-2d93fbff-00000523-00000001-001c4fbb-00000000-00000000-00001000-8c000400"
#define FEATURES_PV FEATURES_PV_HOST
#define FEATURES_HVM FEATURES_HVM_HOST

/* Simulated NIC identity (PIF_metrics). */
#define NIC_VENDOR_ID "8086"
#define NIC_VENDOR_NAME "Intel Corporation"
#define NIC_DEVICE_ID "10d3"
#define NIC_DEVICE_NAME "82574L Gigabit Network Connection"
#define NIC_SPEED_MBPS 1000

/* ---- small builders ---- */

static int cls_id(const char *name)
{
	int c = idl_class_find(name);
	if (c < 0) {
		log_err("seed: class %s is not in the datamodel", name);
		abort();
	}
	return c;
}

static const char *nz(const char *s)
{
	return s ? s : "";
}

/* A string map built pair by pair (keys and values copied). */
struct mapb {
	struct val_member *m;
	uint32_t n, cap;
};

static void mb_add(struct mapb *b, const char *k, const char *v)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? 2 * b->cap : 16;
		b->m = util_realloc(b->m, b->cap * sizeof(*b->m));
	}
	b->m[b->n].key = util_strdup(k);
	b->m[b->n].klen = (uint32_t)strlen(k);
	b->m[b->n].v = val_cstr_h(nz(v));
	b->n++;
}

static void mb_addf(struct mapb *b, const char *k, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void mb_addf(struct mapb *b, const char *k, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	mb_add(b, k, buf);
}

static struct val *mb_val(struct mapb *b)
{
	struct val *v = val_struct_h(b->n);
	for (uint32_t i = 0; i < b->n; i++)
		v->u.members[i] = b->m[i];
	free(b->m);
	b->m = NULL;
	b->n = b->cap = 0;
	return v;
}

/* A string map from a list of key, value, key, value, ... */
static struct val *map_of(const char *const *kv, size_t n)
{
	struct mapb b = {0};
	for (size_t i = 0; i + 1 < n; i += 2)
		mb_add(&b, kv[i], kv[i + 1]);
	return mb_val(&b);
}
#define SMAP(...) map_of((const char *const[]){__VA_ARGS__}, \
			 sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* A string set (also enum sets). */
static struct val *set_of(const char *const *s, size_t n)
{
	struct val *v = val_array_h((uint32_t)n);
	for (size_t i = 0; i < n; i++)
		v->u.items[i] = val_cstr_h(s[i]);
	return v;
}
#define SSET(...) set_of((const char *const[]){__VA_ARGS__}, \
			 sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* A row under construction. */
struct rb {
	int cls;
	struct val **c;
};

static struct rb rb_new(int cls, const char *uuid)
{
	struct rb r = {cls, api_row_new(cls)};
	api_row_set(cls, r.c, "uuid", val_cstr_h(uuid));
	return r;
}

static void set_v(struct rb *r, const char *f, struct val *v)
{
	api_row_set(r->cls, r->c, f, v);
}
static void set_s(struct rb *r, const char *f, const char *s)
{
	set_v(r, f, val_cstr_h(nz(s)));
}
static void set_i(struct rb *r, const char *f, int64_t i)
{
	set_v(r, f, val_int_h(i));
}
static void set_b(struct rb *r, const char *f, bool b)
{
	set_v(r, f, val_bool_h(b));
}
static void set_d(struct rb *r, const char *f, double d)
{
	set_v(r, f, val_double_h(d));
}
static void set_t(struct rb *r, const char *f, int64_t t)
{
	set_v(r, f, val_datetime_h(t));
}

/* Insert the row; every reference left unset is OpaqueRef:NULL (as the
 * original stores it), whatever the datamodel's default spelling. */
static void rb_insert(struct db_txn *t, struct rb *r, const char *ref)
{
	const struct idl_class *k = &idl_classes[r->cls];
	for (int i = 0; i < k->nfields; i++)
		if (!r->c[i] && k->fields[i].ty && k->fields[i].ty->kind == TY_REF)
			r->c[i] = val_cstr_h(NULL_REF);
	db_txn_insert(t, r->cls, ref, r->c);
	free(r->c);
	r->c = NULL;
}

static const char *state_dir(void)
{
	return api_srv.state_dir ? api_srv.state_dir : nz(cfg.state_dir);
}

/* ---- derived values ---- */

/* OCaml's string_of_float, which the original uses for these timestamps:
 * "%.12g", with a trailing "." when the result looks integral. */
static void time_text(double t, char out[40])
{
	snprintf(out, 40, "%.12g", t);
	if (!strpbrk(out, ".eEn"))
		strcat(out, ".");
}

/* When the machine booted (the simulated host shares it), from /proc/stat. */
static double boot_time(void)
{
	FILE *f = fopen("/proc/stat", "r");
	double bt = 0;
	if (f) {
		char line[256];
		long long v;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "btime %lld", &v) == 1) {
				bt = (double)v;
				break;
			}
		fclose(f);
	}
	return bt > 0 ? bt : (double)util_now();
}

/* The build date as YYYY-MM-DD (software_version:date). */
static void build_date(char out[32])
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	const char *d = __DATE__; /* "Mmm dd yyyy" */
	const char *m = strstr(months, (char[4]){d[0], d[1], d[2], 0});
	int mon = m ? (int)(m - months) / 3 + 1 : 1;
	int day = atoi(d + 4);
	snprintf(out, 32, "%.4s-%02d-%02d", d + 7, mon, day);
}

/* "8.3.0" -> "8.3" */
static void version_short(const char *v, char out[64])
{
	snprintf(out, 64, "%s", nz(v));
	char *dot = strchr(out, '.');
	if (dot && (dot = strchr(dot + 1, '.')))
		*dot = 0;
}

static int64_t host_memory_total(void)
{
	return cfg.sim_memory_mib * MIB;
}
/* Xen's own heap and the crash kernel: a fixed share of the host's RAM. */
static int64_t host_memory_overhead(void)
{
	return (host_memory_total() / 64 + MIB - 1) / MIB * MIB;
}
static int64_t dom0_memory(void)
{
	return cfg.sim_dom0_memory_mib * MIB;
}
static int64_t host_memory_free(void)
{
	int64_t f = host_memory_total() - host_memory_overhead() - dom0_memory() -
		    vm_overhead_bytes(dom0_memory(), cfg.sim_dom0_vcpus, 1.0, false);
	return f > 0 ? f : 0;
}

static struct val *software_version(void)
{
	char shortv[64], date[32];
	version_short(cfg.sim_product_version, shortv);
	build_date(date);
	char xapi_short[64];
	version_short(XAPI_COMPAT_VERSION, xapi_short);
	struct mapb b = {0};
	mb_add(&b, "product_version", cfg.sim_product_version);
	mb_add(&b, "product_version_text", shortv);
	mb_add(&b, "product_version_text_short", shortv);
	mb_add(&b, "platform_name", PLATFORM_NAME);
	mb_add(&b, "platform_version", PLATFORM_VERSION);
	mb_add(&b, "product_brand", cfg.sim_product_brand);
	mb_add(&b, "build_number", "cxapi-" CX_VERSION);
	mb_add(&b, "git_id", CX_GIT_ID);
	mb_add(&b, "hostname", cfg.sim_hostname);
	mb_add(&b, "date", date);
	mb_add(&b, "xapi", xapi_short);
	mb_add(&b, "xapi_build", XAPI_COMPAT_VERSION);
	mb_add(&b, "xen", cfg.sim_xen_version);
	mb_add(&b, "linux", cfg.sim_linux_version);
	mb_addf(&b, "xencenter_min", "%d.%d", idl_api_version_major, idl_api_version_minor);
	mb_addf(&b, "xencenter_max", "%d.%d", idl_api_version_major, idl_api_version_minor);
	mb_add(&b, "network_backend", "bridge");
	mb_add(&b, "db_schema", idl_schema_version);
	/* empty product values are omitted, as the original does */
	uint32_t w = 0;
	for (uint32_t i = 0; i < b.n; i++) {
		if (b.m[i].v->n == 0) {
			free((char *)b.m[i].key);
			val_free(b.m[i].v);
			continue;
		}
		b.m[w++] = b.m[i];
	}
	b.n = w;
	return mb_val(&b);
}

/* License restrictions: every feature allowed (restrict_* = "false"). */
static const char *const restriction_keys[] = {
	"restrict_vswitch_controller", "restrict_lab", "restrict_stage",
	"restrict_storagelink", "restrict_storagelink_site_recovery",
	"restrict_web_selfservice", "restrict_web_selfservice_manager",
	"restrict_hotfix_apply", "restrict_export_resource_data", "restrict_read_caching",
	"restrict_cifs", "restrict_health_check", "restrict_xcm",
	"restrict_vm_memory_introspection", "restrict_batch_hotfix_apply",
	"restrict_management_on_vlan", "restrict_ws_proxy", "restrict_vlan", "restrict_qos",
	"restrict_pool_attached_storage", "restrict_netapp", "restrict_equalogic",
	"restrict_pooling", "restrict_marathon", "restrict_email_alerting",
	"restrict_historical_performance", "restrict_wlb", "restrict_rbac", "restrict_dmc",
	"restrict_checkpoint", "restrict_cpu_masking", "restrict_connection", "restrict_vmpr",
	"restrict_vmss", "restrict_intellicache", "restrict_gpu", "restrict_dr",
	"restrict_vif_locking", "restrict_storage_xen_motion", "restrict_vgpu",
	"restrict_integrated_gpu_passthrough", "restrict_vss",
	"restrict_guest_agent_auto_update", "restrict_pci_device_for_auto_update",
	"restrict_xen_motion", "restrict_guest_ip_setting", "restrict_ad",
	"restrict_nested_virt", "restrict_live_patching", "restrict_set_vcpus_number_live",
	"restrict_pvs_proxy", "restrict_igmp_snooping", "restrict_rpu", "restrict_pool_size",
	"restrict_cbt", "restrict_usb_passthrough", "restrict_network_sriov",
	"restrict_corosync", "restrict_zstd_export", "restrict_pool_secret_rotation",
	"restrict_certificate_verification", "restrict_updates",
	"restrict_internal_repo_access", "restrict_vtpm",
};

static void add_restrictions(struct mapb *b)
{
	for (size_t i = 0; i < sizeof(restriction_keys) / sizeof(restriction_keys[0]); i++)
		mb_add(b, restriction_keys[i], "false");
	mb_add(b, "enable_xha", "true");
	mb_add(b, "platform_filter", "false");
	mb_add(b, "regular_nag_dialog", "false");
}

static struct val *restrictions(void)
{
	struct mapb b = {0};
	add_restrictions(&b);
	return mb_val(&b);
}

static struct val *license_params(void)
{
	struct mapb b = {0};
	mb_add(&b, "expiry", "30000101T00:00:00Z");
	mb_add(&b, "sku_type", "free");
	mb_add(&b, "sku_marketing_name", cfg.sim_product_brand);
	mb_add(&b, "version", "");
	mb_add(&b, "grace", "no");
	mb_add(&b, "productcode", "");
	mb_add(&b, "serialnumber", "");
	add_restrictions(&b);
	return mb_val(&b);
}

static int threads_per_core(void)
{
	return 1; /* the simulated CPUs have no SMT siblings */
}

static struct val *host_cpu_info(void)
{
	struct mapb b = {0};
	mb_addf(&b, "cpu_count", "%d", cfg.sim_cpus);
	mb_addf(&b, "socket_count", "%d", cfg.sim_sockets);
	mb_addf(&b, "threads_per_core", "%d", threads_per_core());
	mb_addf(&b, "nr_nodes", "%d", cfg.sim_sockets);
	mb_add(&b, "vendor", cfg.sim_cpu_vendor);
	mb_addf(&b, "speed", "%d.000", cfg.sim_cpu_mhz);
	mb_add(&b, "modelname", cfg.sim_cpu_model);
	mb_addf(&b, "family", "%d", cfg.sim_cpu_family);
	mb_addf(&b, "model", "%d", cfg.sim_cpu_model_no);
	mb_addf(&b, "stepping", "%d", cfg.sim_cpu_stepping);
	mb_add(&b, "flags", cfg.sim_cpu_flags);
	mb_add(&b, "features_pv", FEATURES_PV);
	mb_add(&b, "features_hvm", FEATURES_HVM);
	mb_add(&b, "features_hvm_host", FEATURES_HVM_HOST);
	mb_add(&b, "features_pv_host", FEATURES_PV_HOST);
	return mb_val(&b);
}

static struct val *pool_cpu_info(void)
{
	struct mapb b = {0};
	mb_add(&b, "vendor", cfg.sim_cpu_vendor);
	mb_addf(&b, "cpu_count", "%d", cfg.sim_cpus);
	mb_addf(&b, "socket_count", "%d", cfg.sim_sockets);
	mb_add(&b, "features_pv", FEATURES_PV);
	mb_add(&b, "features_hvm", FEATURES_HVM);
	mb_add(&b, "features_pv_host", FEATURES_PV_HOST);
	mb_add(&b, "features_hvm_host", FEATURES_HVM_HOST);
	return mb_val(&b);
}

/* ---- the fresh host ---- */

/* The SM drivers cxapi has.  features: "NAME" or "NAME/<version>". */
struct seed_sm {
	const char *type, *name, *description;
	const char *config_key, *config_doc;
	const char *const *features;
};

static const char *const file_features[] = {
	"SR_PROBE", "SR_UPDATE", "VDI_CREATE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH",
	"VDI_CLONE", "VDI_SNAPSHOT", "VDI_RESIZE", "VDI_INTRODUCE", "VDI_ACTIVATE",
	"VDI_DEACTIVATE", "VDI_UPDATE", "VDI_GENERATE_CONFIG", "THIN_PROVISIONING", NULL,
};
static const char *const iso_features[] = {
	"SR_SCAN", "SR_ATTACH", "SR_DETACH", "SR_UPDATE", "VDI_INTRODUCE", "VDI_ATTACH",
	"VDI_DETACH", "VDI_UPDATE", NULL,
};

static const struct seed_sm seed_sms[] = {
	{"file", "Local Path VHD",
	 "SR plugin which keeps disks as VHD files in a local directory",
	 "location", "local directory path (required)", file_features},
	{"iso", "ISO",
	 "Handles CD images stored as files in iso format",
	 "location", "path to the directory of images (required)", iso_features},
};

static void add_sm(struct db_txn *t, const struct seed_sm *d)
{
	int cls = cls_id("SM");
	char ref[DB_REF_MAX], uuid[40];
	db_ref_new(ref);
	db_uuid_new(uuid);
	struct rb r = rb_new(cls, uuid);
	set_s(&r, "name_label", d->name);
	set_s(&r, "name_description", d->description);
	set_s(&r, "type", d->type);
	set_s(&r, "vendor", "cxapi");
	set_s(&r, "copyright", "(C) the cxapi authors");
	set_s(&r, "version", "1.0");
	set_s(&r, "required_api_version", "1.0");
	set_v(&r, "configuration", SMAP(d->config_key, d->config_doc));
	size_t n = 0;
	while (d->features[n])
		n++;
	struct val *caps = val_array_h((uint32_t)n);
	struct val *feat = val_struct_h((uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		const char *f = d->features[i], *slash = strchr(f, '/');
		size_t kl = slash ? (size_t)(slash - f) : strlen(f);
		char *key = util_malloc(kl + 1);
		memcpy(key, f, kl);
		key[kl] = 0;
		caps->u.items[i] = val_cstr_h(key);
		feat->u.members[i].key = key;
		feat->u.members[i].klen = (uint32_t)kl;
		feat->u.members[i].v = val_int_h(slash ? atoll(slash + 1) : 1);
	}
	set_v(&r, "capabilities", caps);
	set_v(&r, "features", feat);
	set_s(&r, "driver_filename", "builtin");
	rb_insert(t, &r, ref);
}

struct fresh {
	char host[DB_REF_MAX], host_uuid[40], pool[DB_REF_MAX], metrics[DB_REF_MAX];
	char dom0[DB_REF_MAX], local_sr[DB_REF_MAX], iso_sr[DB_REF_MAX];
	char local_sr_uuid[40];
	char local_dir[4200], iso_dir[4200];
	int64_t now;
	double boot;
};

static void add_host(struct db_txn *t, struct fresh *s)
{
	int cls = cls_id("host");
	char bt[40], at[40], iqn[128];
	time_text(s->boot, bt);
	time_text(util_now_f(), at);
	struct tm tm;
	time_t now = (time_t)s->now;
	gmtime_r(&now, &tm);
	snprintf(iqn, sizeof(iqn), "iqn.%04d-%02d.com.example:%.8s", tm.tm_year + 1900,
		 tm.tm_mon + 1, s->host_uuid);

	struct rb r = rb_new(cls, s->host_uuid);
	set_s(&r, "name_label", cfg.sim_hostname);
	set_s(&r, "name_description", "Default install");
	set_s(&r, "hostname", cfg.sim_hostname);
	set_s(&r, "address", cfg.sim_address);
	set_b(&r, "enabled", true);
	set_i(&r, "memory_overhead", host_memory_overhead());
	set_v(&r, "allowed_operations",
	      SSET("provision", "evacuate", "vm_start", "vm_resume", "vm_migrate"));
	set_i(&r, "API_version_major", idl_api_version_major);
	set_i(&r, "API_version_minor", idl_api_version_minor);
	set_s(&r, "API_version_vendor", "XenSource");
	set_v(&r, "API_version_vendor_implementation", &val_empty_struct);
	set_v(&r, "software_version", software_version());
	set_v(&r, "other_config", SMAP("boot_time", bt, "agent_start_time", at, "iscsi_iqn", iqn));
	set_v(&r, "capabilities", SSET("xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_32p",
				       "hvm-3.0-x86_64"));
	set_v(&r, "cpu_configuration", &val_empty_struct);
	set_s(&r, "sched_policy", "credit");
	set_v(&r, "supported_bootloaders", SSET("pygrub", "eliloader"));
	set_v(&r, "logging", &val_empty_struct);
	set_s(&r, "suspend_image_sr", s->local_sr);
	set_s(&r, "crash_dump_sr", s->local_sr);
	set_v(&r, "cpu_info", host_cpu_info());
	set_s(&r, "metrics", s->metrics);
	set_v(&r, "license_params", license_params());
	set_s(&r, "edition", "free");
	set_v(&r, "license_server", SMAP("address", "localhost", "port", "27000"));
	set_v(&r, "bios_strings",
	      SMAP("bios-vendor", cfg.sim_product_brand, "bios-version", CX_VERSION,
		   "system-manufacturer", cfg.sim_product_brand,
		   "system-product-name", "Simulated host", "system-version", "",
		   "system-serial-number", s->host_uuid));
	set_v(&r, "chipset_info", SMAP("iommu", "false"));
	set_b(&r, "ssl_legacy", false);
	set_s(&r, "display", "enabled");
	struct val *vhp = val_array_h(3);
	for (int i = 0; i < 3; i++)
		vhp->u.items[i] = val_int_h(i);
	set_v(&r, "virtual_hardware_platform_versions", vhp);
	set_s(&r, "control_domain", s->dom0);
	set_s(&r, "iscsi_iqn", iqn);
	rb_insert(t, &r, s->host);
}

static void add_host_metrics(struct db_txn *t, struct fresh *s)
{
	int cls = cls_id("host_metrics");
	char uuid[40];
	db_uuid_new(uuid);
	struct rb r = rb_new(cls, uuid);
	set_i(&r, "memory_total", host_memory_total());
	set_i(&r, "memory_free", host_memory_free());
	set_b(&r, "live", true);
	set_t(&r, "last_updated", s->now);
	rb_insert(t, &r, s->metrics);
}

static void add_host_cpus(struct db_txn *t, struct fresh *s)
{
	int cls = cls_id("host_cpu");
	for (int i = 0; i < cfg.sim_cpus; i++) {
		char ref[DB_REF_MAX], uuid[40], stepping[16];
		db_ref_new(ref);
		db_uuid_new(uuid);
		snprintf(stepping, sizeof(stepping), "%d", cfg.sim_cpu_stepping);
		struct rb r = rb_new(cls, uuid);
		set_s(&r, "host", s->host);
		set_i(&r, "number", i);
		set_s(&r, "vendor", cfg.sim_cpu_vendor);
		set_i(&r, "speed", cfg.sim_cpu_mhz);
		set_s(&r, "modelname", cfg.sim_cpu_model);
		set_i(&r, "family", cfg.sim_cpu_family);
		set_i(&r, "model", cfg.sim_cpu_model_no);
		set_s(&r, "stepping", stepping);
		set_s(&r, "flags", cfg.sim_cpu_flags);
		set_s(&r, "features", FEATURES_HVM_HOST);
		set_d(&r, "utilisation", 0.0);
		rb_insert(t, &r, ref);
	}
}

static void add_pool(struct db_txn *t, struct fresh *s)
{
	int cls = cls_id("pool");
	char uuid[40];
	db_uuid_new(uuid);
	struct rb r = rb_new(cls, uuid);
	set_s(&r, "name_label", "");
	set_s(&r, "name_description", "");
	set_s(&r, "master", s->host);
	set_s(&r, "default_SR", s->local_sr);
	set_s(&r, "suspend_image_SR", s->local_sr);
	set_s(&r, "crash_dump_SR", s->local_sr);
	set_v(&r, "other_config", SMAP("memory-ratio-hvm", "0.25", "memory-ratio-pv", "0.25"));
	set_b(&r, "ha_enabled", false);
	set_s(&r, "ha_cluster_stack", "xhad");
	set_v(&r, "restrictions", restrictions());
	set_v(&r, "metadata_VDIs", &val_empty_array);
	set_v(&r, "cpu_info", pool_cpu_info());
	set_b(&r, "tls_verification_enabled", false);
	set_b(&r, "coordinator_bias", true);
	set_i(&r, "local_auth_max_threads", 8);
	set_i(&r, "ext_auth_max_threads", 1);
	set_s(&r, "telemetry_frequency", "weekly");
	set_s(&r, "update_sync_frequency", "weekly");
	rb_insert(t, &r, s->pool);
}

static void add_console(struct db_txn *t, struct fresh *s, const char *vm, const char *protocol)
{
	int cls = cls_id("console");
	char ref[DB_REF_MAX], uuid[40], loc[256];
	db_ref_new(ref);
	db_uuid_new(uuid);
	snprintf(loc, sizeof(loc), "https://%s/console?ref=%s", nz(cfg.sim_address), ref);
	struct rb r = rb_new(cls, uuid);
	set_s(&r, "protocol", protocol);
	set_s(&r, "location", loc);
	set_s(&r, "VM", vm);
	set_v(&r, "other_config", &val_empty_struct);
	rb_insert(t, &r, ref);
}

static void add_dom0(struct db_txn *t, struct fresh *s)
{
	int vm = cls_id("VM"), met = cls_id("VM_metrics");
	char uuid[40], muuid[40], mref[DB_REF_MAX], name[512];
	db_uuid_new(uuid);
	db_uuid_new(muuid);
	db_ref_new(mref);
	int64_t mem = dom0_memory();
	int vcpus = cfg.sim_dom0_vcpus;

	struct rb m = rb_new(met, muuid);
	set_i(&m, "memory_actual", mem);
	set_i(&m, "VCPUs_number", vcpus);
	set_v(&m, "state", &val_empty_array);
	set_t(&m, "start_time", (int64_t)s->boot);
	set_t(&m, "install_time", s->now);
	set_t(&m, "last_updated", s->now);
	set_s(&m, "current_domain_type", "pv");
	rb_insert(t, &m, mref);

	snprintf(name, sizeof(name), "Control domain on host: %s", nz(cfg.sim_hostname));
	struct rb r = rb_new(vm, uuid);
	set_s(&r, "name_label", name);
	set_s(&r, "name_description",
	      "The domain which manages physical devices and manages other domains");
	set_v(&r, "allowed_operations",
	      SSET("metadata_export", "changing_dynamic_range", "changing_static_range"));
	set_s(&r, "power_state", "Running");
	set_i(&r, "user_version", 1);
	set_b(&r, "is_a_template", false);
	set_b(&r, "is_default_template", false);
	set_s(&r, "resident_on", s->host);
	set_s(&r, "affinity", s->host);
	set_i(&r, "memory_overhead", vm_overhead_bytes(mem, vcpus, 1.0, false));
	set_i(&r, "memory_target", mem);
	set_i(&r, "memory_static_max", mem);
	set_i(&r, "memory_dynamic_max", mem);
	set_i(&r, "memory_dynamic_min", mem);
	set_i(&r, "memory_static_min", mem);
	set_v(&r, "VCPUs_params", &val_empty_struct);
	set_i(&r, "VCPUs_max", vcpus);
	set_i(&r, "VCPUs_at_startup", vcpus);
	set_s(&r, "actions_after_softreboot", "soft_reboot");
	set_s(&r, "actions_after_shutdown", "destroy");
	set_s(&r, "actions_after_reboot", "destroy");
	set_s(&r, "actions_after_crash", "destroy");
	set_s(&r, "PV_bootloader", "");
	set_s(&r, "PV_kernel", "");
	set_s(&r, "PV_ramdisk", "");
	set_s(&r, "PV_args", "");
	set_s(&r, "PV_bootloader_args", "");
	set_s(&r, "PV_legacy_args", "");
	set_s(&r, "HVM_boot_policy", "");
	set_v(&r, "HVM_boot_params", &val_empty_struct);
	set_d(&r, "HVM_shadow_multiplier", 1.0);
	set_v(&r, "platform", &val_empty_struct);
	set_s(&r, "PCI_bus", "");
	set_v(&r, "other_config",
	      SMAP("storage_driver_domain", s->dom0, "is_system_domain", "true"));
	set_i(&r, "domid", 0);
	set_s(&r, "domarch", "x64");
	set_b(&r, "is_control_domain", true);
	set_s(&r, "metrics", mref);
	set_s(&r, "recommendations", "");
	set_s(&r, "domain_type", "pv");
	rb_insert(t, &r, s->dom0);

	add_console(t, s, s->dom0, "rfb");
	add_console(t, s, s->dom0, "vt100");
}

static void add_sr(struct db_txn *t, struct fresh *s, const char *ref, const char *uuid,
		   const char *name, const char *desc, const char *type, const char *content,
		   int64_t size, const char *const *ops, size_t nops, struct val *other_config,
		   const char *dir)
{
	int sr = cls_id("SR"), pbd = cls_id("PBD");
	struct rb r = rb_new(sr, uuid);
	set_s(&r, "name_label", name);
	set_s(&r, "name_description", desc);
	set_v(&r, "allowed_operations", set_of(ops, nops));
	set_i(&r, "virtual_allocation", 0);
	set_i(&r, "physical_utilisation", 0);
	set_i(&r, "physical_size", size);
	set_s(&r, "type", type);
	set_s(&r, "content_type", content);
	set_b(&r, "shared", false);
	set_v(&r, "other_config", other_config);
	set_v(&r, "sm_config", &val_empty_struct);
	rb_insert(t, &r, ref);

	char pref[DB_REF_MAX], puuid[40];
	db_ref_new(pref);
	db_uuid_new(puuid);
	struct rb p = rb_new(pbd, puuid);
	set_s(&p, "host", s->host);
	set_s(&p, "SR", ref);
	set_v(&p, "device_config", SMAP("location", dir));
	set_b(&p, "currently_attached", true);
	set_v(&p, "other_config", &val_empty_struct);
	rb_insert(t, &p, pref);
}

static void add_storage(struct db_txn *t, struct fresh *s)
{
	for (size_t i = 0; i < sizeof(seed_sms) / sizeof(seed_sms[0]); i++)
		add_sm(t, &seed_sms[i]);

	static const char *const user_ops[] = {
		"scan", "plug", "unplug", "update", "pbd_create", "pbd_destroy",
		"vdi_create", "vdi_introduce", "vdi_destroy", "vdi_resize", "vdi_clone",
		"vdi_snapshot", "vdi_set_on_boot",
	};
	static const char *const iso_ops[] = {
		"scan", "plug", "unplug", "update", "pbd_create", "pbd_destroy", "vdi_introduce",
	};
	add_sr(t, s, s->local_sr, s->local_sr_uuid, "Local storage", "", "file", "user",
	       cfg.sim_local_sr_size_gib * GIB, user_ops, sizeof(user_ops) / sizeof(user_ops[0]),
	       SMAP("i18n-original-value-name_label", "Local storage", "i18n-key", "local-storage"),
	       s->local_dir);

	char iso_uuid[40];
	db_uuid_new(iso_uuid);
	add_sr(t, s, s->iso_sr, iso_uuid, "ISO library", "ISO images on the host", "iso", "iso",
	       0, iso_ops, sizeof(iso_ops) / sizeof(iso_ops[0]), &val_empty_struct, s->iso_dir);
}

static void add_network(struct db_txn *t, const char *ref, const char *name, const char *desc,
			const char *bridge, struct val *other_config)
{
	int cls = cls_id("network");
	char uuid[40];
	db_uuid_new(uuid);
	struct rb r = rb_new(cls, uuid);
	set_s(&r, "name_label", name);
	set_s(&r, "name_description", desc);
	set_i(&r, "MTU", 1500);
	set_v(&r, "other_config", other_config);
	set_s(&r, "bridge", bridge);
	set_b(&r, "managed", true);
	rb_insert(t, &r, ref);
}

static void add_networks(struct db_txn *t, struct fresh *s)
{
	int pif = cls_id("PIF"), pm = cls_id("PIF_metrics");
	for (int n = 0; n < cfg.sim_nics; n++) {
		char net[DB_REF_MAX], name[64], bridge[32], device[32], mac[64], pci[32];
		db_ref_new(net);
		snprintf(name, sizeof(name), "Pool-wide network %d", n);
		snprintf(bridge, sizeof(bridge), "xenbr%d", n);
		snprintf(device, sizeof(device), "eth%d", n);
		snprintf(mac, sizeof(mac), "%s:%02x", nz(cfg.sim_mac_prefix), n & 0xff);
		snprintf(pci, sizeof(pci), "0000:%02x:00.0", (n + 1) & 0xff);
		add_network(t, net, name, "", bridge, &val_empty_struct);

		char mref[DB_REF_MAX], muuid[40];
		db_ref_new(mref);
		db_uuid_new(muuid);
		struct rb m = rb_new(pm, muuid);
		set_d(&m, "io_read_kbs", 0.0);
		set_d(&m, "io_write_kbs", 0.0);
		set_b(&m, "carrier", true);
		set_s(&m, "vendor_id", NIC_VENDOR_ID);
		set_s(&m, "vendor_name", NIC_VENDOR_NAME);
		set_s(&m, "device_id", NIC_DEVICE_ID);
		set_s(&m, "device_name", NIC_DEVICE_NAME);
		set_i(&m, "speed", NIC_SPEED_MBPS);
		set_b(&m, "duplex", true);
		set_s(&m, "pci_bus_path", pci);
		set_t(&m, "last_updated", s->now);
		rb_insert(t, &m, mref);

		char ref[DB_REF_MAX], uuid[40];
		db_ref_new(ref);
		db_uuid_new(uuid);
		bool mgmt = n == 0;
		struct rb r = rb_new(pif, uuid);
		set_s(&r, "device", device);
		set_s(&r, "network", net);
		set_s(&r, "host", s->host);
		set_s(&r, "MAC", mac);
		set_i(&r, "MTU", 1500);
		set_i(&r, "VLAN", -1);
		set_s(&r, "metrics", mref);
		set_b(&r, "physical", true);
		set_b(&r, "currently_attached", true);
		set_s(&r, "ip_configuration_mode", mgmt ? "Static" : "None");
		if (mgmt) {
			set_s(&r, "IP", cfg.sim_address);
			set_s(&r, "netmask", cfg.sim_netmask);
			set_s(&r, "gateway", cfg.sim_gateway);
			set_s(&r, "DNS", cfg.sim_dns);
		}
		set_b(&r, "management", mgmt);
		set_v(&r, "other_config", &val_empty_struct);
		set_s(&r, "primary_address_type", "IPv4");
		set_b(&r, "managed", true);
		set_v(&r, "properties", SMAP("gro", "on"));
		rb_insert(t, &r, ref);
	}

	char net[DB_REF_MAX];
	db_ref_new(net);
	add_network(t, net, "Host internal management network",
		    "Network on which guests will be assigned a private link-local IP address "
		    "which can be used to talk XenAPI",
		    "xenapi",
		    SMAP("is_guest_installer_network", "true",
			 "is_host_internal_management_network", "true",
			 "ip_begin", "169.254.0.1", "ip_end", "169.254.255.254",
			 "netmask", "255.255.0.0"));
}

/* The recommendations XML of a template (the guest-templates layout). */
static void template_recommendations(const struct seed_template *tp, char *out, size_t n)
{
	int k = snprintf(out, n,
			 "<restrictions><restriction field=\"memory-static-max\" max=\"%lld\"/>",
			 (long long)tp->max_memory_gib * GIB);
	if (tp->vcpus_min)
		k += snprintf(out + k, n - k, "<restriction field=\"vcpus-min\" min=\"%d\"/>",
			      tp->vcpus_min);
	k += snprintf(out + k, n - k,
		      "<restriction field=\"vcpus-max\" max=\"%d\"/>"
		      "<restriction field=\"has-vendor-device\" value=\"%s\"/>",
		      tp->vcpus_max, tp->windows ? "true" : "false");
	if (tp->linux_guest)
		k += snprintf(out + k, n - k,
			      "<restriction field=\"allow-gpu-passthrough\" value=\"1\"/>"
			      "<restriction field=\"allow-vgpu\" value=\"1\"/>");
	snprintf(out + k, n - k,
		 "<restriction field=\"supports-bios\" value=\"yes\"/>"
		 "<restriction field=\"supports-uefi\" value=\"%s\"/>"
		 "<restriction field=\"supports-secure-boot\" value=\"%s\"/>"
		 "<restriction property=\"number-of-vbds\" max=\"255\"/>"
		 "<restriction property=\"number-of-vifs\" max=\"7\"/></restrictions>",
		 tp->supports_uefi ? "yes" : "no", tp->supports_secure_boot ? "yes" : "no");
}

static struct val *template_platform(const struct seed_template *tp)
{
	struct mapb b = {0};
	mb_add(&b, "nx", "true");
	mb_add(&b, "acpi", "1");
	mb_add(&b, "apic", "true");
	mb_add(&b, "pae", "true");
	mb_add(&b, "hpet", "true");
	mb_add(&b, "secureboot", tp->secureboot);
	if (tp->windows) {
		char cps[16];
		snprintf(cps, sizeof(cps), "%d", tp->vcpus);
		mb_add(&b, "cores-per-socket", cps);
		mb_add(&b, "device_id", "0002");
		mb_add(&b, "viridian", "true");
		mb_add(&b, "viridian_time_ref_count", "true");
		mb_add(&b, "viridian_reference_tsc", "true");
		mb_add(&b, "viridian_hcall_remote_tlb_flush", "true");
		mb_add(&b, "viridian_apic_assist", "true");
		mb_add(&b, "viridian_crash_ctl", "true");
		mb_add(&b, "viridian_stimer", "true");
	} else if (tp->linux_guest) {
		mb_add(&b, "vga", "std");
		mb_add(&b, "videoram", "8");
		mb_add(&b, "viridian", "false");
		mb_add(&b, "device_id", "0001");
	} else {
		mb_add(&b, "viridian", "true");
	}
	/* UEFI guests run on the default device model; BIOS ones on the compat one */
	if (!tp->uefi)
		mb_add(&b, "device-model", "qemu-upstream-compat");
	return mb_val(&b);
}

static void add_template(struct db_txn *t, struct fresh *s, const struct seed_template *tp)
{
	int vm = cls_id("VM"), met = cls_id("VM_metrics");
	char ref[DB_REF_MAX], mref[DB_REF_MAX], muuid[40];
	db_ref_new(ref);
	db_ref_new(mref);
	db_uuid_new(muuid);

	struct rb m = rb_new(met, muuid);
	set_i(&m, "memory_actual", 0);
	set_i(&m, "VCPUs_number", 0);
	set_v(&m, "state", &val_empty_array);
	set_s(&m, "current_domain_type", "unspecified");
	rb_insert(t, &m, mref);

	int64_t smin = (int64_t)tp->min_memory_mib * MIB, smax = 2 * smin;
	char reco[2048], disks[256];
	template_recommendations(tp, reco, sizeof(reco));
	struct mapb oc = {0};
	mb_add(&oc, "install-methods", tp->install_methods);
	if (tp->disk_gib) {
		snprintf(disks, sizeof(disks),
			 "<provision><disk device=\"0\" size=\"%lld\" sr=\"\" bootable=\"true\" "
			 "type=\"system\"/></provision>",
			 (long long)tp->disk_gib * GIB);
		mb_add(&oc, "disks", disks);
	}
	if (tp->linux_guest)
		mb_add(&oc, "linux_template", "true");
	mb_add(&oc, "default_template", "true");

	struct rb r = rb_new(vm, tp->uuid);
	set_s(&r, "name_label", tp->name_label);
	set_s(&r, "name_description", tp->name_description);
	set_v(&r, "allowed_operations",
	      SSET("clone", "copy", "export", "metadata_export", "provision",
		   "changing_dynamic_range", "changing_static_range", "changing_shadow_memory",
		   "changing_NVRAM"));
	set_s(&r, "power_state", "Halted");
	set_i(&r, "user_version", tp->user_version);
	set_b(&r, "is_a_template", true);
	set_b(&r, "is_default_template", true);
	set_i(&r, "memory_overhead", vm_overhead_bytes(smax, tp->vcpus, 1.0, true));
	set_i(&r, "memory_target", 0);
	set_i(&r, "memory_static_max", smax);
	set_i(&r, "memory_dynamic_max", smax);
	set_i(&r, "memory_dynamic_min", smax);
	set_i(&r, "memory_static_min", smin);
	set_v(&r, "VCPUs_params", &val_empty_struct);
	set_i(&r, "VCPUs_max", tp->vcpus);
	set_i(&r, "VCPUs_at_startup", tp->vcpus);
	set_s(&r, "actions_after_softreboot", "soft_reboot");
	set_s(&r, "actions_after_shutdown", "destroy");
	set_s(&r, "actions_after_reboot", "restart");
	set_s(&r, "actions_after_crash", "restart");
	set_s(&r, "PV_bootloader", "");
	set_s(&r, "PV_kernel", "");
	set_s(&r, "PV_ramdisk", "");
	set_s(&r, "PV_args", "");
	set_s(&r, "PV_bootloader_args", "");
	set_s(&r, "PV_legacy_args", "");
	set_s(&r, "HVM_boot_policy", "BIOS order");
	set_v(&r, "HVM_boot_params",
	      SMAP("order", tp->linux_guest ? "cdn" : "dc", "firmware", tp->uefi ? "uefi" : "bios"));
	set_d(&r, "HVM_shadow_multiplier", 1.0);
	set_v(&r, "platform", template_platform(tp));
	set_s(&r, "PCI_bus", "");
	set_v(&r, "other_config", mb_val(&oc));
	set_i(&r, "domid", -1);
	set_s(&r, "domarch", "");
	set_b(&r, "is_control_domain", false);
	set_s(&r, "metrics", mref);
	set_s(&r, "recommendations", reco);
	set_b(&r, "has_vendor_device", tp->windows);
	set_s(&r, "reference_label", tp->reference_label);
	set_s(&r, "domain_type", "hvm");
	rb_insert(t, &r, ref);
	(void)s;
}

static int create_fresh(struct xerr *err)
{
	struct fresh s;
	memset(&s, 0, sizeof(s));
	s.now = util_now();
	s.boot = boot_time();
	db_ref_new(s.host);
	db_uuid_new(s.host_uuid);
	db_ref_new(s.pool);
	db_ref_new(s.metrics);
	db_ref_new(s.dom0);
	db_ref_new(s.local_sr);
	db_ref_new(s.iso_sr);
	db_uuid_new(s.local_sr_uuid);
	snprintf(s.local_dir, sizeof(s.local_dir), "%s/sr/%s", state_dir(), s.local_sr_uuid);
	snprintf(s.iso_dir, sizeof(s.iso_dir), "%s/iso", state_dir());

	int rc;
	if ((rc = util_mkdir_p(s.local_dir, 0755)) < 0 || (rc = util_mkdir_p(s.iso_dir, 0755)) < 0) {
		xerr_set(err, "INTERNAL_ERROR", 1, strerror(-rc));
		return -1;
	}

	struct db_txn *t = db_txn_new();
	add_host_metrics(t, &s);
	add_host(t, &s);
	add_pool(t, &s);
	add_dom0(t, &s);
	add_host_cpus(t, &s);
	add_storage(t, &s);
	add_networks(t, &s);
	for (int i = 0; i < seed_ntemplates; i++)
		add_template(t, &s, &seed_templates[i]);
	if (db_txn_commit(t, err) < 0)
		return -1;

	snprintf(api_srv.host_ref, sizeof(api_srv.host_ref), "%s", s.host);
	snprintf(api_srv.pool_ref, sizeof(api_srv.pool_ref), "%s", s.pool);
	log_info("seeded a fresh host %s (%s): %d CPUs, %d NICs, %d templates, local SR %s",
		 nz(cfg.sim_hostname), s.host_uuid, cfg.sim_cpus, cfg.sim_nics, seed_ntemplates,
		 s.local_dir);
	return 0;
}

/* ---- a later start ---- */

static const struct val *col(const struct db_row *r, int cls, const char *field)
{
	return r->cols[api_field(cls, field)];
}

/* other_config with boot_time and agent_start_time replaced. */
static struct val *refreshed_other_config(const struct val *old)
{
	char bt[40], at[40];
	time_text(boot_time(), bt);
	time_text(util_now_f(), at);
	struct mapb b = {0};
	if (old && old->kind == V_STRUCT)
		for (uint32_t i = 0; i < old->n; i++) {
			const struct val_member *m = &old->u.members[i];
			if (strcmp(m->key, "boot_time") == 0 || strcmp(m->key, "agent_start_time") == 0)
				continue;
			if (b.n == b.cap) {
				b.cap = b.cap ? 2 * b.cap : 16;
				b.m = util_realloc(b.m, b.cap * sizeof(*b.m));
			}
			b.m[b.n].key = util_strdup(m->key);
			b.m[b.n].klen = (uint32_t)strlen(m->key);
			b.m[b.n].v = val_dup_h(m->v);
			b.n++;
		}
	mb_add(&b, "boot_time", bt);
	mb_add(&b, "agent_start_time", at);
	return mb_val(&b);
}

/* Recreate the directories of the host's file and iso SRs if they vanished. */
static void ensure_sr_dirs(const char *host)
{
	int pbd = cls_id("PBD"), sr = cls_id("SR");
	char *dirs[64];
	int n = 0;
	db_rdlock();
	for (struct db_row *p = db_next(pbd, NULL); p && n < 64; p = db_next(pbd, p)) {
		const struct val *h = col(p, pbd, "host"), *s = col(p, pbd, "SR");
		if (!h || h->kind != V_STR || strcmp(h->u.s, host) != 0 || !s || s->kind != V_STR)
			continue;
		struct db_row *r = db_get(sr, s->u.s);
		const struct val *ty = r ? col(r, sr, "type") : NULL;
		if (!ty || ty->kind != V_STR || (strcmp(ty->u.s, "file") && strcmp(ty->u.s, "iso")))
			continue;
		const struct val *dc = col(p, pbd, "device_config");
		const struct val *loc = dc && dc->kind == V_STRUCT ? val_struct_get(dc, "location") : NULL;
		if (loc && loc->kind == V_STR && loc->u.s[0] == '/')
			dirs[n++] = util_strdup(loc->u.s);
	}
	db_unlock();
	for (int i = 0; i < n; i++) {
		int rc = util_mkdir_p(dirs[i], 0755);
		if (rc < 0)
			log_warn("SR directory %s: %s", dirs[i], strerror(-rc));
		free(dirs[i]);
	}
}

static int refresh_existing(struct xerr *err)
{
	int hc = cls_id("host"), pc = cls_id("pool"), mc = cls_id("host_metrics");
	char host[DB_REF_MAX] = "", pool[DB_REF_MAX] = "", metrics[DB_REF_MAX] = "";
	struct val *other = NULL;

	db_rdlock();
	struct db_row *h = db_next(hc, NULL);
	if (h) {
		snprintf(host, sizeof(host), "%s", h->ref);
		const struct val *m = col(h, hc, "metrics");
		if (m && m->kind == V_STR && db_get(mc, m->u.s))
			snprintf(metrics, sizeof(metrics), "%s", m->u.s);
		other = refreshed_other_config(col(h, hc, "other_config"));
	}
	struct db_row *p = db_next(pc, NULL);
	if (p)
		snprintf(pool, sizeof(pool), "%s", p->ref);
	db_unlock();

	struct db_txn *t = db_txn_new();
	db_txn_set(t, hc, host, api_field(hc, "API_version_major"), val_int_h(idl_api_version_major));
	db_txn_set(t, hc, host, api_field(hc, "API_version_minor"), val_int_h(idl_api_version_minor));
	db_txn_set(t, hc, host, api_field(hc, "software_version"), software_version());
	db_txn_set(t, hc, host, api_field(hc, "enabled"), val_bool_h(true));
	db_txn_set(t, hc, host, api_field(hc, "other_config"), other);
	if (metrics[0]) {
		db_txn_set(t, mc, metrics, api_field(mc, "memory_total"), val_int_h(host_memory_total()));
		db_txn_set(t, mc, metrics, api_field(mc, "memory_free"), val_int_h(host_memory_free()));
		db_txn_set(t, mc, metrics, api_field(mc, "live"), val_bool_h(true));
		db_txn_set(t, mc, metrics, api_field(mc, "last_updated"), val_datetime_h(util_now()));
	}
	if (db_txn_commit(t, err) < 0)
		return -1;

	snprintf(api_srv.host_ref, sizeof(api_srv.host_ref), "%s", host);
	snprintf(api_srv.pool_ref, sizeof(api_srv.pool_ref), "%s", pool);
	if (!pool[0])
		log_warn("the database has a host but no pool");
	ensure_sr_dirs(host);
	log_info("host %s refreshed", host);
	return 0;
}

int seed_fresh_host(struct xerr *err)
{
	int hc = cls_id("host");
	db_rdlock();
	bool have_host = db_next(hc, NULL) != NULL;
	db_unlock();
	return have_host ? refresh_existing(err) : create_fresh(err);
}
