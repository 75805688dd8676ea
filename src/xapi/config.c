/* config.c — defaults, the configuration file, and flags, all through one
 * table of keys: each key is a file key and a flag (--key, with '-' for '_'). */
#include "xapi/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct config cfg;

enum kt { K_STR, K_INT, K_LL };

struct key {
	const char *name;
	enum kt t;
	void *p;
	const char *deflt;
	const char *help;
};

#define S(f) K_STR, &cfg.f
#define I(f) K_INT, &cfg.f
#define L(f) K_LL, &cfg.f

static const struct key keys[] = {
	{"config", S(config_file), "/etc/cxapi/xapi.conf", "configuration file (a missing default file is ignored)"},
	{"state_dir", S(state_dir), "/var/lib/cxapi", "state directory: database, certificate, PAM files, SRs"},
	{"bind", S(bind), "", "address of the TCP listeners (\"\" = all)"},
	{"http_port", I(http_port), "80", "HTTP port (0 = off, -1 = any free port)"},
	{"https_port", I(https_port), "443", "HTTPS port (0 = off, -1 = any free port)"},
	{"unix_socket", S(unix_socket), "", "Unix socket path (\"\" = <state_dir>/xapi.sock, \"none\" = off)"},
	{"pam_service", S(pam_service), "cxapi", "PAM service for root logins"},
	{"pam_ext_service", S(pam_ext_service), "cxapi-external", "PAM service for external-auth logins"},
	{"pam_confdir", S(pam_confdir), "embedded", "\"embedded\" = private stack in <state_dir>/pam.d over <state_dir>/passwd; \"\" = /etc/pam.d"},
	{"root_password", S(root_password), "", "embedded PAM: root's password, written if <state_dir>/passwd is missing"},
	{"session_timeout", I(session_timeout), "86400", "seconds an idle session lives"},
	{"completed_task_timeout", I(completed_task_timeout), "3900", "seconds a finished task is kept"},
	{"pending_task_timeout", I(pending_task_timeout), "86400", "seconds after which a pending task that makes no progress is removed"},
	{"max_tasks", I(max_tasks), "200", "tasks kept at most (the oldest finished ones go first)"},
	{"gc_interval", I(gc_interval), "30", "seconds between garbage collections of sessions and tasks"},
	{"debug_call_delay_ms", I(debug_call_delay_ms), "0", "testing: every call of an async-capable message first waits this long in its task, cancellable (0 = off)"},
	{"debug_sm_step_delay_ms", I(debug_sm_step_delay_ms), "0", "testing: the file SR driver sleeps this long between the steps of its multi-step changes (snapshot, create, gc), so that a test can kill the daemon at a chosen step (0 = off)"},
	{"event_delay_ms", I(event_delay_ms), "50", "event.from: coalescing delay, ms (the original's 50; 0 = none)"},
	{"event_deletions_kept", I(event_deletions_kept), "131072", "event.from: deletions remembered (retention horizon; ~90 bytes each)"},
	{"event_queue_bytes", L(event_queue_bytes), "10000000", "event.next: queued events bound, bytes (beyond it: EVENTS_LOST)"},
	{"message_limit", I(message_limit), "10000", "messages kept (the oldest are deleted beyond it)"},
	{"max_rpc_body", I(max_rpc_body), "1048576", "largest RPC request body, bytes"},
	{"threads", I(threads), "32", "worker threads"},
	{"log_level", S(log_level), "info", "error, warn, info or debug"},
	{"backend", S(backend), "sim", "hypervisor backend"},
	{"xenstored_bin", S(xenstored_bin), "", "xenstored to start when none runs (\"\" = ../xs/xenstored beside the xapi binary)"},
	{"simguest_bin", S(simguest_bin), "", "sim: cxapi-simguest to start (\"\" = ../simguest/cxapi-simguest beside xenstored)"},
	{"clean_shutdown_timeout", I(clean_shutdown_timeout), "1200", "seconds a VM's clean shutdown, reboot or suspend may take (then VM_SHUTDOWN_TIMEOUT)"},
	{"sim_boot_ms", I(sim_boot_ms), "100", "sim: ms from a domain's unpause until its guest is up"},
	{"sim_shutdown_ms", I(sim_shutdown_ms), "50", "sim: ms from an acknowledged shutdown request until the domain is down"},
	{"sim_faults", S(sim_faults), "", "sim: faults, comma-separated: start-fails=<vm uuid>, ignore-shutdown=<uuid>, crash=<uuid> (docs/vm.md)"},
	{"sim_hostname", S(sim_hostname), "cxapi-sim", "simulated host: host name"},
	{"sim_address", S(sim_address), "127.0.0.1", "simulated host: management address"},
	{"sim_cpus", I(sim_cpus), "8", "simulated host: logical CPUs"},
	{"sim_sockets", I(sim_sockets), "1", "simulated host: CPU sockets"},
	{"sim_cpu_vendor", S(sim_cpu_vendor), "GenuineIntel", "simulated host: CPU vendor"},
	{"sim_cpu_model", S(sim_cpu_model), "Intel(R) Xeon(R) CPU E5-2620 v4 @ 2.10GHz", "simulated host: CPU model name"},
	{"sim_cpu_family", I(sim_cpu_family), "6", "simulated host: CPU family"},
	{"sim_cpu_model_no", I(sim_cpu_model_no), "79", "simulated host: CPU model number"},
	{"sim_cpu_stepping", I(sim_cpu_stepping), "1", "simulated host: CPU stepping"},
	{"sim_cpu_mhz", I(sim_cpu_mhz), "2100", "simulated host: CPU speed, MHz"},
	{"sim_cpu_flags", S(sim_cpu_flags), "fpu de tsc msr pae mce cx8 apic sep mca cmov pat clflush mmx fxsr sse sse2 ht syscall nx lm constant_tsc rep_good nopl pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 hle avx2 bmi2 erms rtm rdseed adx xsaveopt", "simulated host: CPU flags"},
	{"sim_memory_mib", L(sim_memory_mib), "65536", "simulated host: memory, MiB"},
	{"sim_dom0_memory_mib", L(sim_dom0_memory_mib), "4096", "simulated host: control domain memory, MiB"},
	{"sim_dom0_vcpus", I(sim_dom0_vcpus), "4", "simulated host: control domain vCPUs"},
	{"sim_nics", I(sim_nics), "2", "simulated host: physical NICs"},
	{"sim_mac_prefix", S(sim_mac_prefix), "02:16:3e:5a:00", "simulated host: MAC prefix (NIC n gets :0n)"},
	{"sim_netmask", S(sim_netmask), "255.255.255.0", "simulated host: management netmask"},
	{"sim_gateway", S(sim_gateway), "127.0.0.254", "simulated host: management gateway"},
	{"sim_dns", S(sim_dns), "127.0.0.53", "simulated host: DNS server"},
	{"sim_product_brand", S(sim_product_brand), "cxapi", "simulated host: product brand"},
	{"sim_product_version", S(sim_product_version), "8.3.0", "simulated host: product version"},
	{"sim_xen_version", S(sim_xen_version), "4.17.5", "simulated host: Xen version"},
	{"sim_linux_version", S(sim_linux_version), "6.1.0", "simulated host: dom0 kernel version"},
	{"sim_local_sr_size_gib", L(sim_local_sr_size_gib), "512", "simulated host: local SR size, GiB"},
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const struct key *key_find(const char *name, size_t n)
{
	char norm[64];
	if (n >= sizeof(norm))
		return NULL;
	for (size_t i = 0; i < n; i++)
		norm[i] = name[i] == '-' ? '_' : name[i];
	norm[n] = 0;
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, norm) == 0)
			return &keys[i];
	return NULL;
}

static int key_set(const struct key *k, const char *v)
{
	char *end;
	switch (k->t) {
	case K_STR:
		free(*(char **)k->p);
		*(char **)k->p = util_strdup(v);
		return 0;
	case K_INT: {
		errno = 0;
		long x = strtol(v, &end, 10);
		if (errno || *end || end == v || x < -1 || x > 1000000000)
			return -1;
		*(int *)k->p = (int)x;
		return 0;
	}
	case K_LL: {
		errno = 0;
		long long x = strtoll(v, &end, 10);
		if (errno || *end || end == v)
			return -1;
		*(long long *)k->p = x;
		return 0;
	}
	}
	return -1;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	char *e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = 0;
	return s;
}

static int load_file(const char *path, bool must_exist)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		if (!must_exist && errno == ENOENT)
			return 0;
		fprintf(stderr, "xapi: %s: %s\n", path, strerror(errno));
		return -1;
	}
	char line[4096];
	int lineno = 0, rc = 0;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		char *s = trim(line);
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			fprintf(stderr, "xapi: %s:%d: expected key = value\n", path, lineno);
			rc = -1;
			continue;
		}
		*eq = 0;
		char *k = trim(s), *v = trim(eq + 1);
		size_t vl = strlen(v);
		if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
			v[vl - 1] = 0;
			v++;
		}
		const struct key *key = key_find(k, strlen(k));
		if (!key || strcmp(key->name, "config") == 0) {
			fprintf(stderr, "xapi: %s:%d: unknown key %s\n", path, lineno, k);
			rc = -1;
		} else if (key_set(key, v) < 0) {
			fprintf(stderr, "xapi: %s:%d: bad value for %s\n", path, lineno, k);
			rc = -1;
		}
	}
	fclose(f);
	return rc;
}

void config_usage(const char *prog)
{
	printf("Usage: %s [-n] [--help] [--KEY=VALUE | --KEY VALUE]...\n\n"
	       "The XenAPI server.  Every configuration-file key is also a flag (write '-' or '_').\n"
	       "  -n            check the configuration and exit\n"
	       "  --help        this text\n\nKeys (default):\n",
	       prog);
	for (size_t i = 0; i < NKEYS; i++) {
		char flag[64];
		snprintf(flag, sizeof(flag), "%s", keys[i].name);
		for (char *p = flag; *p; p++)
			if (*p == '_')
				*p = '-';
		printf("  --%-22s %s (%s)\n", flag, keys[i].help, keys[i].deflt);
	}
	printf("\nExample (what `make run` does):\n"
	       "  %s --state-dir=./state --http-port=8080 --https-port=8443 --root-password=secret\n",
	       prog);
}

int config_load(int argc, char **argv)
{
	for (size_t i = 0; i < NKEYS; i++)
		key_set(&keys[i], keys[i].deflt);
	bool config_given = false;
	/* first pass: --config and --help */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			config_usage(argv[0]);
			return 1;
		}
		if (strncmp(argv[i], "--config=", 9) == 0) {
			key_set(&keys[0], argv[i] + 9);
			config_given = true;
		} else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			key_set(&keys[0], argv[++i]);
			config_given = true;
		}
	}
	if (cfg.config_file[0] && load_file(cfg.config_file, config_given) < 0)
		return -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-n") == 0) {
			cfg.check_only = true;
			continue;
		}
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "xapi: unexpected argument %s (see --help)\n", a);
			return -1;
		}
		a += 2;
		const char *eq = strchr(a, '=');
		size_t n = eq ? (size_t)(eq - a) : strlen(a);
		const struct key *k = key_find(a, n);
		if (!k) {
			fprintf(stderr, "xapi: unknown flag --%.*s (see --help)\n", (int)n, a);
			return -1;
		}
		const char *v;
		if (eq) {
			v = eq + 1;
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			fprintf(stderr, "xapi: --%s needs a value\n", a);
			return -1;
		}
		if (strcmp(k->name, "config") == 0)
			continue;
		if (key_set(k, v) < 0) {
			fprintf(stderr, "xapi: bad value for --%.*s: %s\n", (int)n, a, v);
			return -1;
		}
	}
	if (cfg.sim_cpus < 1 || cfg.sim_sockets < 1 || cfg.sim_nics < 1 || cfg.sim_memory_mib < 256 ||
	    cfg.threads < 1 || cfg.max_rpc_body < 1024) {
		fprintf(stderr, "xapi: sim_cpus, sim_sockets, sim_nics >= 1, sim_memory_mib >= 256, threads >= 1, max_rpc_body >= 1024\n");
		return -1;
	}
	if (strcmp(cfg.backend, "sim") != 0) {
		fprintf(stderr, "xapi: backend %s is not available (only sim)\n", cfg.backend);
		return -1;
	}
	return 0;
}
