/* hv.h — the hypervisor backend under the domain manager: the domctl-level
 * work (domains, their memory and vCPUs, pause, shutdown, destroy, suspend
 * images).  xenops.c plays libxl's part on top of it; it never learns guest
 * state from here except through getinfo, as libxl does after
 * @releaseDomain.
 *
 * `sim` (sim.c): the simulated hypervisor lives in the simulated-guest
 * process (src/simguest), so domains outlive a restart of xapi as they do on
 * a Xen host; sim.c is its client.  `xen` (later): libxenctrl.
 *
 * Every call returns 0 or a negative errno; -ENOMEM from domain_create means
 * the host has not enough free memory.  Calls may block briefly and may be
 * made from any thread.
 */
#ifndef CX_XENOPS_HV_H
#define CX_XENOPS_HV_H

#include <stdint.h>
#include "xenops/xenops.h"

/* The sim charges each vCPU this much host memory besides the domain's. */
#define HV_SIM_VCPU_OVERHEAD_KIB 1024u

struct hv_info {
	uint32_t domid;
	char uuid[40];             /* the handle given at creation */
	enum xenops_state state;
	enum xenops_reason reason; /* when XENOPS_SHUTDOWN */
	uint64_t mem_kib;          /* what the domain holds now */
	uint64_t max_kib;          /* its maximum (static-max) */
	uint32_t vcpus_max, vcpus_online;
	double cpu_time;           /* seconds, all vCPUs */
};

struct hv_ops {
	const char *name;
	/* Connect to the hypervisor (sim: start its process unless one is
	 * already running on state_dir, else reconnect).  0 or -errno; *why
	 * says what failed (static or a thread-local text). */
	int (*open)(const struct xenops_settings *s, const char **why);
	void (*close)(void);
	/* A new paused domain with this handle: charges mem_kib (+ overhead)
	 * against the host's free memory. */
	int (*domain_create)(const char *uuid, uint64_t mem_kib, uint32_t vcpus,
			     uint32_t *domid);
	int (*domain_pause)(uint32_t domid);
	int (*domain_unpause)(uint32_t domid);
	int (*domain_destroy)(uint32_t domid);
	/* The toolstack shuts a domain down itself (SCHEDOP_remote_shutdown). */
	int (*domain_shutdown)(uint32_t domid, enum xenops_reason why);
	int (*domain_getinfo)(uint32_t domid, struct hv_info *out);
	int (*domain_list)(struct hv_info **out, int *n); /* *out malloc'd */
	/* As domain_list, only the domains shut down or dying (what
	 * @releaseDomain is about): the cost follows those, not all. */
	int (*domain_list_down)(struct hv_info **out, int *n);
	int (*domain_setmaxmem)(uint32_t domid, uint64_t kib);
	int (*domain_set_vcpus)(uint32_t domid, uint32_t online);
	/* XEN_DOMCTL_sendtrigger ("nmi", "power", "sleep", "reset", "init",
	 * "s3resume"; all but nmi need an HVM guest: -EINVAL) */
	int (*domain_trigger)(uint32_t domid, const char *trigger, bool hvm);
	/* bytes: what the host has and what is free */
	int (*host_memory)(uint64_t *total, uint64_t *free);
	/* Write a shut-down (suspended) domain's memory image to fd; build a
	 * paused domain from an image read from fd (its handle: uuid). */
	int (*suspend_write)(uint32_t domid, int fd);
	int (*resume_read)(int fd, const char *uuid, uint32_t *domid);
};

extern const struct hv_ops hv_sim;

/* Helpers of the sim parts (sim.c). */
/* Start a daemon detached from us (its own session; reparented to init, so
 * it outlives xapi), stdout and stderr appended to logfile, its pid written
 * to pidfile (unless NULL).  0 or -errno. */
int hv_spawn_daemon(char *const argv[], const char *logfile, const char *pidfile);
/* Connect to a Unix stream socket, retrying up to wait_ms.  fd or -errno. */
int hv_connect_unix(const char *path, int wait_ms);

#endif
