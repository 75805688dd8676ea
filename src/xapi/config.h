/* config.h — the daemon's configuration: one file (/etc/cxapi/xapi.conf,
 * "key = value" lines, '#' comments), every key overridable by a flag
 * --key=value (or --key value; '-' and '_' are interchangeable).
 */
#ifndef CX_CONFIG_H
#define CX_CONFIG_H
#include <stdbool.h>

struct config {
	char *config_file;
	char *state_dir;        /* database, certificate, PAM files, SR directories */
	char *bind;             /* address for TCP listeners; "" = all */
	int http_port;          /* 0 = off, -1 = any free port */
	int https_port;
	char *unix_socket;      /* "" = <state_dir>/xapi.sock; "none" = off */
	char *pam_service;      /* local root logins */
	char *pam_ext_service;  /* external (subject) logins */
	char *pam_confdir;      /* "embedded" = private stack in <state_dir>/pam.d; "" = /etc/pam.d */
	char *root_password;    /* embedded PAM: sets root's password if <state_dir>/passwd is missing */
	int session_timeout;    /* seconds; idle sessions expire */
	int event_delay_ms;     /* event.from coalescing delay */
	int event_deletions_kept; /* deletions remembered for event.from */
	int message_limit;      /* messages kept */
	long long event_queue_bytes; /* event.next queue bound */
	int completed_task_timeout; /* seconds; finished tasks are removed after this */
	int pending_task_timeout;   /* seconds; stuck pending tasks are removed after this */
	int max_tasks;              /* beyond this, the oldest finished tasks are removed */
	int gc_interval;            /* seconds between garbage collections (sessions, tasks) */
	int debug_call_delay_ms;    /* testing: async-capable calls first wait, cancellable */
	int debug_sm_step_delay_ms; /* testing: the file SR sleeps between its steps (sm_test_step) */
	int max_rpc_body;       /* bytes */
	int threads;            /* worker threads */
	char *log_level;        /* error|warn|info|debug */
	char *backend;          /* "sim" */
	char *xenstored_bin;    /* "" = ../xs/xenstored beside the xapi binary */
	char *simguest_bin;     /* "" = ../simguest/cxapi-simguest beside xenstored */
	int clean_shutdown_timeout; /* seconds a clean shutdown/reboot/suspend may take */
	int sim_boot_ms;        /* sim: unpause -> the guest is up */
	int sim_shutdown_ms;    /* sim: acknowledged shutdown request -> the domain is down */
	char *sim_faults;       /* sim: fault injection (docs/vm.md) */
	/* The simulated host's hardware (backend sim). */
	char *sim_hostname;
	char *sim_address;
	int sim_cpus;            /* logical CPUs */
	int sim_sockets;
	char *sim_cpu_vendor;
	char *sim_cpu_model;
	int sim_cpu_family;
	int sim_cpu_model_no;
	int sim_cpu_stepping;
	int sim_cpu_mhz;
	char *sim_cpu_flags;
	long long sim_memory_mib;
	long long sim_dom0_memory_mib;
	int sim_dom0_vcpus;
	int sim_nics;
	char *sim_mac_prefix;    /* e.g. "02:16:3e:00:00" — NIC n gets :<n> */
	char *sim_netmask;
	char *sim_gateway;
	char *sim_dns;
	char *sim_product_brand;
	char *sim_product_version;
	char *sim_xen_version;
	char *sim_linux_version;
	long long sim_local_sr_size_gib; /* reported size of the local file SR */
	bool check_only;         /* -n */
};

extern struct config cfg;

/* Defaults, then the file (cfg.config_file, or --config given in argv), then
 * flags.  Returns 0, 1 if the program should exit successfully (--help), or
 * -1 on an error (reported on stderr). */
int config_load(int argc, char **argv);
void config_usage(const char *prog);
#endif
