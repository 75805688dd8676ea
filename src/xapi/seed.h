/* seed.h — the objects of a fresh host, created on first start.
 *
 * seed_fresh_host() runs once at daemon start, after db_open() and before
 * serving.  On an empty database it creates, in one transaction, everything a
 * freshly installed single host has (pool, host, control domain, storage,
 * networks, built-in templates; see docs/fresh-host.md).  On an existing
 * database it only rewrites what the original rewrites on every start.
 * Either way it sets api_srv.host_ref and api_srv.pool_ref.
 */
#ifndef CX_SEED_H
#define CX_SEED_H
#include <stdbool.h>
#include "base/xerr.h"

/* 0, or -1 with err set. */
int seed_fresh_host(struct xerr *err);

/* One built-in template (templates.c).  Memory follows the guest-templates
 * convention: static_min = min_memory, static_max = dynamic_min = dynamic_max
 * = 2 * min_memory. */
struct seed_template {
	const char *uuid;            /* fixed per template, stable across installs */
	const char *name_label;
	const char *name_description;
	const char *reference_label;
	bool linux_guest;            /* other_config:linux_template, "cdn" boot order */
	bool windows;                /* viridian, vendor device, 2 vCPUs, ... */
	bool uefi;                   /* HVM_boot_params:firmware uefi (else bios) */
	const char *secureboot;      /* platform:secureboot: "auto" | "true" | "false" */
	bool supports_uefi;          /* recommendations */
	bool supports_secure_boot;
	int min_memory_mib;
	int max_memory_gib;          /* recommendation memory-static-max */
	int vcpus;                   /* VCPUs_max = VCPUs_at_startup */
	int vcpus_min;               /* recommendation vcpus-min (0 = none) */
	int vcpus_max;               /* recommendation vcpus-max */
	int disk_gib;                /* system disk of the provision XML (0 = none) */
	const char *install_methods;
	int user_version;
};

extern const struct seed_template seed_templates[];
extern const int seed_ntemplates;
#endif
