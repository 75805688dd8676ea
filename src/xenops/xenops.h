/* xenops.h — the domain manager: turns a VM's configuration into a domain
 * and its devices, and reports what happens to them.  It plays libxl's part:
 * it writes each domain's xenstore tree (/local/domain/<domid>/..., /vm/<uuid>,
 * device frontends and backends) into xenstored, key for key as a real Xen
 * 4.17 host does, and learns guest state only by watching xenstore
 * (@releaseDomain, control/, data/, attr/, device states) — the path a real
 * Xen backend uses.  Below it, a hypervisor backend (src/xenops/hv.h) does
 * the domctl-level work: `sim` emulates a Xen host (memory, domids, vCPUs,
 * pause, shutdown reasons) and runs simulated guests; `xen` will call libxc.
 *
 * The API layer (src/api/vm.c) calls these from worker threads; every call
 * may block.  Errors: -1 with err set to the XenAPI error the original gives
 * (e.g. HOST_NOT_ENOUGH_FREE_MEMORY [needed, available], VM_SHUTDOWN_TIMEOUT
 * [vm, timeout]), or INTERNAL_ERROR with a reason.
 */
#ifndef CX_XENOPS_H
#define CX_XENOPS_H

#include <stdbool.h>
#include <stdint.h>
#include "base/xerr.h"

enum xenops_type { XENOPS_PV, XENOPS_PVH, XENOPS_HVM };

struct xenops_disk {
	char vbd_uuid[40];
	char device[16];     /* guest name: "xvda", "hda"; from VBD.userdevice */
	int userdevice;      /* position 0, 1, ... */
	bool read_only, cdrom, empty, bootable;
	char path[4096];     /* the backing file (VHD or ISO); "" when empty */
	char format[8];      /* "vhd" or "raw" */
};

struct xenops_nic {
	char vif_uuid[40];
	int devid;           /* VIF.device */
	char mac[18];
	uint32_t mtu;
	char bridge[64];     /* the network's bridge */
};

/* What a domain is built from (the VM, VBD and VIF rows). */
struct xenops_vm {
	char uuid[40];
	char name[256];
	enum xenops_type type;
	uint64_t memory_static_max, memory_dynamic_min, memory_dynamic_max; /* bytes */
	uint64_t memory_target;  /* the balloon target at start (dynamic_max) */
	double shadow_multiplier;
	uint32_t vcpus_max, vcpus_at_startup;
	const char *pv_kernel, *pv_ramdisk, *pv_args, *pv_bootloader; /* may be NULL */
	const char *platform_json; /* the platform map, as JSON text, or NULL */
	int ndisks;
	const struct xenops_disk *disks;
	int nnics;
	const struct xenops_nic *nics;
};

enum xenops_state { XENOPS_RUNNING, XENOPS_PAUSED, XENOPS_SHUTDOWN, XENOPS_DYING };
enum xenops_reason { XENOPS_POWEROFF, XENOPS_REBOOT, XENOPS_SUSPEND, XENOPS_CRASH,
		     XENOPS_HALT };

struct xenops_dominfo {
	uint32_t domid;
	char uuid[40];             /* the VM's */
	enum xenops_state state;
	enum xenops_reason reason; /* when XENOPS_SHUTDOWN */
	uint64_t memory_actual;    /* bytes */
	uint32_t vcpus_online;
	double cpu_time;           /* seconds, all vCPUs */
};

/* What the guest agent reports (data/ and attr/ of the guest's tree). */
struct xenops_guest {
	bool present;              /* the agent has reported */
	char os_version[1024];     /* "name=...\nuname=...\n..." lines, as the original's map */
	char pv_drivers[256];      /* "major=..\nminor=..\nmicro=..\nbuild=.." */
	char networks[2048];       /* "0/ip=...\n0/ipv6/0=...\n" */
	uint64_t memory_free;      /* bytes, from data/meminfo_free */
	uint64_t memory_total;
	bool can_suspend, feature_shutdown;
	int64_t last_updated;
};

/* Something changed for a domain: it shut down (state/reason in info), or
 * the guest agent wrote new data, or a device changed state.  Called on the
 * domain manager's own thread; the API layer must not block in it (queue a
 * job). */
enum xenops_event { XENOPS_EV_DOMAIN, XENOPS_EV_GUEST, XENOPS_EV_DEVICE,
		    XENOPS_EV_STORE /* reconnected to a restarted xenstored: call
				       xenops_rewrite for each domain (no vm/domid) */ };
typedef void (*xenops_event_fn)(void *ctx, enum xenops_event ev, const char *vm_uuid,
				uint32_t domid);

struct xenops_settings {
	const char *backend;       /* "sim" */
	const char *state_dir;     /* sim: where its xenstored and guests live */
	const char *xenstored_bin; /* sim: our xenstored, started by xenops_init */
	uint64_t host_memory;      /* bytes the hypervisor has (sim) */
	uint32_t host_cpus;
	uint64_t dom0_memory;
	/* sim: timings and fault injection (see docs/vm.md) */
	int sim_boot_ms, sim_shutdown_ms;
	const char *sim_faults;    /* e.g. "start-fails=<uuid>,ignore-shutdown=<uuid>,crash=<uuid>" */
	const char *simguest_bin;  /* sim: cxapi-simguest; NULL: ../simguest/ beside xenstored_bin */
};

int xenops_init(const struct xenops_settings *s, xenops_event_fn fn, void *ctx, struct xerr *err);
void xenops_shutdown(void); /* at daemon stop: leaves domains running */

/* Build the domain, write its tree, introduce it, plug its devices and
 * (unless paused) unpause it.  *domid set on success.  On failure nothing is
 * left behind. */
int xenops_start(const struct xenops_vm *vm, bool paused, uint32_t *domid, struct xerr *err);
/* After xenstored restarted without its store: write the running domain's
 * tree and devices again (vm: its configuration with the devices now
 * plugged), introduce it; nothing if its tree is there. */
int xenops_rewrite(const struct xenops_vm *vm, uint32_t domid, struct xerr *err);
/* Ask the guest to power off / reboot / suspend (control/shutdown) and wait
 * until the domain has shut down with that reason, at most timeout_s
 * (VM_SHUTDOWN_TIMEOUT), honouring cancel (a nonzero return: TASK_CANCELLED). */
int xenops_clean_shutdown(uint32_t domid, enum xenops_reason why, int timeout_s,
			  int (*cancel)(void *ctx), void *cctx, struct xerr *err);
/* Destroy the domain and its devices (hard shutdown); releases it in
 * xenstored and removes its tree. */
int xenops_destroy(uint32_t domid, struct xerr *err);
int xenops_pause(uint32_t domid, struct xerr *err);
int xenops_unpause(uint32_t domid, struct xerr *err);
/* Suspend: after a clean suspend, the domain's memory image is written to fd
 * (the suspend VDI); the domain is then destroyed.  Resume builds a domain
 * from vm and the image read from fd. */
int xenops_suspend(uint32_t domid, int fd, struct xerr *err);
int xenops_resume(const struct xenops_vm *vm, int fd, bool paused, uint32_t *domid,
		  struct xerr *err);

int xenops_disk_plug(uint32_t domid, const struct xenops_disk *d, struct xerr *err);
int xenops_disk_unplug(uint32_t domid, const char *device, bool force, struct xerr *err);
int xenops_cd_insert(uint32_t domid, const char *device, const char *path, struct xerr *err);
int xenops_cd_eject(uint32_t domid, const char *device, struct xerr *err);
int xenops_nic_plug(uint32_t domid, const struct xenops_nic *n, struct xerr *err);
int xenops_nic_unplug(uint32_t domid, int devid, bool force, struct xerr *err);

int xenops_set_memory_target(uint32_t domid, uint64_t bytes, struct xerr *err);
/* The balloon target the domain was given (memory/target). */
int xenops_get_memory_target(uint32_t domid, uint64_t *bytes, struct xerr *err);
int xenops_set_vcpus(uint32_t domid, uint32_t n, struct xerr *err);
int xenops_sysrq(uint32_t domid, char key, struct xerr *err);
int xenops_trigger(uint32_t domid, const char *trigger, struct xerr *err);

/* Free host memory as the hypervisor counts it (bytes). */
uint64_t xenops_host_free_memory(void);
/* Every domain but dom0 (for the resync at start); *out malloc'd. */
int xenops_list(struct xenops_dominfo **out, int *n, struct xerr *err);
int xenops_info(uint32_t domid, struct xenops_dominfo *out, struct xerr *err);
int xenops_guest(uint32_t domid, struct xenops_guest *out, struct xerr *err);

#endif
