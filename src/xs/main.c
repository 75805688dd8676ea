/* main.c — xenstored: options, start-up (reload of a clean-stop dump or the
 * initial nodes), the privileged socket, signals, and the clean stop that
 * dumps the store.  See man/xenstored.8 and docs/xenstored.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "base/log.h"
#include "base/util.h"
#include "xs/xsd.h"

static char *pid_file;
static bool output_pid, do_fork, check_only;
static uv_signal_t sig_term, sig_int, sig_hup;

static void usage(FILE *f)
{
	fprintf(f,
"Usage: xenstored [options]\n"
"\n"
"The Xen store daemon of cxapi (wire protocol of Xen 4.17).\n"
"\n"
"  -s, --socket PATH       privileged (dom0) socket; default $XENSTORED_PATH,\n"
"                          else $XENSTORED_RUNDIR/socket, else\n"
"                          /var/run/xenstored/socket\n"
"      --rundir DIR        run directory (per-domain sockets DIR/domain/<domid>/socket,\n"
"                          default dump); default $XENSTORED_RUNDIR, else the\n"
"                          socket's directory\n"
"      --dump FILE         store dump written on SIGTERM/SIGINT and reloaded (then\n"
"                          removed) at start; default RUNDIR/xenstored.dump;\n"
"                          \"none\" disables it\n"
"  -F, --pid-file FILE     write the daemon's pid to FILE\n"
"  -N, --no-fork           stay in the foreground (the default)\n"
"      --fork              detach into the background once listening\n"
"  -P, --output-pid        print the daemon's pid on stdout\n"
"  -T, --trace-file FILE   access trace: one line per request, reply and event\n"
"      --trace FILE        same as -T\n"
"  -E, --entry-nb N        nodes per domain (default 1000)\n"
"  -S, --entry-size N      max. size of a node, bytes (default 2048)\n"
"  -W, --watch-nb N        watches per domain (default 128)\n"
"  -t, --transaction N     open transactions per domain connection (default 10)\n"
"  -A, --perm-nb N         permissions per node (default 5)\n"
"  -M, --path-max N        max. path length below /local/domain/<id>/ (default\n"
"                          2048)\n"
"  -Q, --quota WHAT=N      nodes, watches, transactions, node-size, path-max,\n"
"                          permissions\n"
"      --sched batch|normal  CPU scheduling policy (default batch: a request\n"
"                          does not preempt the client that is still writing it)\n"
"  -V, --verbose           debug log on stderr\n"
"  -n, --check-config      check the options and exit\n"
"  -h, -H, --help          this text\n"
"\n"
"Accepted for compatibility with Xen's xenstored and ignored: -D/--no-domain-init,\n"
"-I/--internal-db [on|off], -K/--keep-orphans, -R/--no-recovery, -q/--quota-soft,\n"
"-w/--timeout, -e/--event, -m/--master-domid, -p/--priv-domid.\n"
"\n"
"Environment: XENSTORED_PATH, XENSTORED_RUNDIR (as libxenstore reads them).\n");
}

static uint32_t *quota_field(const char *name)
{
	if (!strcmp(name, "nodes")) return &xsd.quota.max_nodes;
	if (!strcmp(name, "watches")) return &xsd.quota.max_watches;
	if (!strcmp(name, "transactions")) return &xsd.quota.max_transactions;
	if (!strcmp(name, "node-size")) return &xsd.quota.max_node_size;
	if (!strcmp(name, "path-max")) return &xsd.quota.max_path;
	if (!strcmp(name, "permissions")) return &xsd.quota.max_perms;
	return NULL;
}

static int parse_num(const char *s, uint32_t *out)
{
	char *e;
	errno = 0;
	unsigned long v = strtoul(s, &e, 10);
	if (errno || !*s || *e || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

void xsd_quota_changed(void)
{
	/* the store reads xsd.quota through the pointer it was given */
	if (xsd.quota.max_path > 2048)
		xsd.quota.max_path = 2048;
}

static char *dupcat(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 1;
	char *p = util_malloc(n);
	snprintf(p, n, "%s%s", a, b);
	return p;
}

static void remove_files(void)
{
	if (xsd.sock_path)
		unlink(xsd.sock_path);
	if (pid_file)
		unlink(pid_file);
}

static void on_stop(uv_signal_t *h, int signum)
{
	log_info("xenstored: signal %d, stopping", signum);
	pthread_mutex_lock(&xsd.lock); /* kept: the connections' threads stop here */
	if (xsd.dump_path) {
		char *dfile = dupcat(xsd.dump_path, ".domains");
		int r = xs_store_dump(xsd.store, xsd.dump_path);
		if (r < 0)
			log_err("xenstored: dump to %s failed: %s", xsd.dump_path, strerror(-r));
		else if (xsd_domains_save(dfile) < 0)
			log_err("xenstored: cannot write %s", dfile);
		else
			log_info("xenstored: store dumped to %s (%u nodes)", xsd.dump_path,
				 xs_store_nodes(xsd.store));
		free(dfile);
	}
	xsd_flush();
	xsd_trace_close();
	xsd_domain_release_all();
	remove_files();
	exit(0);
}

static void on_hup(uv_signal_t *h, int signum)
{
	pthread_mutex_lock(&xsd.lock);
	if (xsd.trace_path)
		xsd_trace_open(xsd.trace_path);
	pthread_mutex_unlock(&xsd.lock);
}

static int initial_nodes(void)
{
	struct xs_store *s = xsd.store;
	int r;
	if ((r = xs_mkdir(s, NULL, 0, "/tool")) < 0 ||
	    (r = xs_mkdir(s, NULL, 0, "/tool/xenstored")) < 0 ||
	    (r = xs_mkdir(s, NULL, 0, "/local")) < 0 ||
	    (r = xs_mkdir(s, NULL, 0, "/local/domain")) < 0 ||
	    (r = xs_mkdir(s, NULL, 0, "/local/domain/0")) < 0 ||
	    (r = xs_write(s, NULL, 0, "/local/domain/0/domid", "0", 1)) < 0 ||
	    (r = xs_write(s, NULL, 0, "/local/domain/0/name", "Domain-0", 8)) < 0)
		return r;
	return 0;
}

static int write_pid_file(void)
{
	if (!pid_file)
		return 0;
	FILE *f = fopen(pid_file, "w");
	if (!f)
		return -errno;
	fprintf(f, "%ld\n", (long)getpid());
	return fclose(f) ? -errno : 0;
}

enum { OPT_RUNDIR = 1000, OPT_DUMP, OPT_FORK, OPT_TRACE, OPT_SCHED };

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", 1, NULL, 's' },
		{ "rundir", 1, NULL, OPT_RUNDIR },
		{ "dump", 1, NULL, OPT_DUMP },
		{ "pid-file", 1, NULL, 'F' },
		{ "no-fork", 0, NULL, 'N' },
		{ "fork", 0, NULL, OPT_FORK },
		{ "output-pid", 0, NULL, 'P' },
		{ "trace-file", 1, NULL, 'T' },
		{ "trace", 1, NULL, OPT_TRACE },
		{ "entry-nb", 1, NULL, 'E' },
		{ "entry-size", 1, NULL, 'S' },
		{ "watch-nb", 1, NULL, 'W' },
		{ "transaction", 1, NULL, 't' },
		{ "perm-nb", 1, NULL, 'A' },
		{ "path-max", 1, NULL, 'M' },
		{ "quota", 1, NULL, 'Q' },
		{ "quota-soft", 1, NULL, 'q' },
		{ "timeout", 1, NULL, 'w' },
		{ "no-domain-init", 0, NULL, 'D' },
		{ "internal-db", 2, NULL, 'I' },
		{ "keep-orphans", 0, NULL, 'K' },
		{ "no-recovery", 0, NULL, 'R' },
		{ "event", 1, NULL, 'e' },
		{ "master-domid", 1, NULL, 'm' },
		{ "priv-domid", 1, NULL, 'p' },
		{ "sched", 1, NULL, OPT_SCHED },
		{ "verbose", 0, NULL, 'V' },
		{ "check-config", 0, NULL, 'n' },
		{ "help", 0, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	xsd.quota = (struct xs_quota){
		.max_nodes = 1000, .max_node_size = 2048, .max_path = 2048,
		.max_watches = 128, .max_transactions = 10, .max_perms = 5,
	};
	const char *sock = NULL, *rundir = NULL, *dump = NULL, *trace = NULL;
	int c, policy = SCHED_BATCH;
	while ((c = getopt_long(argc, argv, "s:F:NPT:E:S:W:t:A:M:Q:q:w:DI::KRe:m:p:VnhH",
				opts, NULL)) != -1) {
		uint32_t *q = NULL;
		switch (c) {
		case 's': sock = optarg; break;
		case OPT_RUNDIR: rundir = optarg; break;
		case OPT_DUMP: dump = optarg; break;
		case 'F': pid_file = util_strdup(optarg); break;
		case 'N': do_fork = false; break;
		case OPT_FORK: do_fork = true; break;
		case 'P': output_pid = true; break;
		case 'T': case OPT_TRACE: trace = optarg; break;
		case 'E': q = &xsd.quota.max_nodes; break;
		case 'S': q = &xsd.quota.max_node_size; break;
		case 'W': q = &xsd.quota.max_watches; break;
		case 't': q = &xsd.quota.max_transactions; break;
		case 'A': q = &xsd.quota.max_perms; break;
		case 'M': q = &xsd.quota.max_path; break;
		case 'Q': {
			char name[64];
			const char *eq = strchr(optarg, '=');
			if (!eq || (size_t)(eq - optarg) >= sizeof(name)) {
				fprintf(stderr, "xenstored: bad quota '%s' (want WHAT=N)\n", optarg);
				return 2;
			}
			memcpy(name, optarg, (size_t)(eq - optarg));
			name[eq - optarg] = 0;
			q = quota_field(name);
			if (!q) {
				fprintf(stderr, "xenstored: quota '%s' ignored (not supported)\n", name);
				break;
			}
			if (parse_num(eq + 1, q) < 0) {
				fprintf(stderr, "xenstored: bad quota value '%s'\n", optarg);
				return 2;
			}
			q = NULL;
			break;
		}
		case 'q': case 'w': case 'D': case 'I': case 'K': case 'R':
		case 'e': case 'm': case 'p':
			break;
		case OPT_SCHED:
			if (!strcmp(optarg, "batch"))
				policy = SCHED_BATCH;
			else if (!strcmp(optarg, "normal"))
				policy = SCHED_OTHER;
			else {
				fprintf(stderr, "xenstored: --sched wants batch or normal, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 'V': log_level_max = LOG_DEBUG_; xsd.verbose = true; break;
		case 'n': check_only = true; break;
		case 'h': case 'H': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (q && parse_num(optarg, q) < 0) {
			fprintf(stderr, "xenstored: -%c needs a number, not '%s'\n", c, optarg);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "xenstored: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (xsd.quota.max_path > 2048)
		xsd.quota.max_path = 2048; /* XENSTORE_REL_PATH_MAX, as 4.17 clamps */

	/* where: as libxenstore's xs_daemon_socket() looks */
	const char *env_rundir = getenv("XENSTORED_RUNDIR");
	if (!sock)
		sock = getenv("XENSTORED_PATH");
	if (!sock || !*sock)
		sock = NULL;
	if (!sock) {
		const char *d = env_rundir && *env_rundir ? env_rundir : "/var/run/xenstored";
		xsd.sock_path = dupcat(d, "/socket");
	} else
		xsd.sock_path = util_strdup(sock);
	if (rundir)
		xsd.rundir = util_strdup(rundir);
	else if (env_rundir && *env_rundir)
		xsd.rundir = util_strdup(env_rundir);
	else {
		xsd.rundir = util_strdup(xsd.sock_path);
		char *sl = strrchr(xsd.rundir, '/');
		if (sl && sl != xsd.rundir)
			*sl = 0;
		else
			strcpy(xsd.rundir, sl ? "/" : ".");
	}
	if (dump && !strcmp(dump, "none"))
		xsd.dump_path = NULL;
	else
		xsd.dump_path = dump ? util_strdup(dump) : dupcat(xsd.rundir, "/xenstored.dump");
	if (strlen(xsd.sock_path) >= 108 || strlen(xsd.rundir) + 32 >= 108) {
		fprintf(stderr, "xenstored: socket path too long for a Unix socket: %s\n",
			strlen(xsd.sock_path) >= 108 ? xsd.sock_path : xsd.rundir);
		return 2;
	}
	if (check_only) {
		printf("socket %s\nrundir %s\ndump %s\n", xsd.sock_path, xsd.rundir,
		       xsd.dump_path ? xsd.dump_path : "none");
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	int r = util_mkdir_p(xsd.rundir, 0755);
	if (r < 0) {
		log_err("xenstored: cannot create %s: %s", xsd.rundir, strerror(-r));
		return 1;
	}
	if (do_fork) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid > 0)
			_exit(0);
		setsid();
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			if (fd > 2)
				close(fd);
		}
	}

	/* SCHED_BATCH: a woken batch task does not preempt the running one.
	 * libxenstore writes a request's header and payload separately; under
	 * SCHED_OTHER the header's wakeup often preempts the client, the daemon
	 * reads 16 bytes, sleeps again and is woken for the payload (1.6 reads and
	 * wakeups per request).  As batch it runs once the client blocks for
	 * its answer and reads the whole request at once.  docs/xenstored.md. */
	if (sched_setscheduler(0, policy, &(struct sched_param){ 0 }) < 0)
		log_warn("xenstored: cannot set the scheduling policy: %s", strerror(errno));
	pthread_mutex_init(&xsd.lock, NULL);
	xsd.loop = uv_default_loop();
	buf_init(&xsd.scratch);
	buf_reserve(&xsd.scratch, XS_PAYLOAD_MAX * 2);
	xsd.intro_perms = (struct xsd_special_perms){ 1, { { 0, XS_PERM_NONE } } };
	xsd.release_perms = xsd.intro_perms;
	xsd_watch_init();
	if (trace) {
		xsd.trace_path = util_strdup(trace);
		if ((r = xsd_trace_open(trace)) < 0) {
			log_err("xenstored: cannot open trace file %s: %s", trace, strerror(-r));
			return 1;
		}
	}
	xsd.store = xs_store_new(&xsd.quota, xsd_watch_changed, NULL);
	if (!xsd.store) {
		log_err("xenstored: cannot create the store");
		return 1;
	}

	bool loaded = false;
	char *dfile = xsd.dump_path ? dupcat(xsd.dump_path, ".domains") : NULL;
	if (xsd.dump_path && access(xsd.dump_path, F_OK) == 0) {
		r = xs_store_load(xsd.store, xsd.dump_path);
		if (r < 0) {
			log_err("xenstored: cannot reload %s: %s; starting empty",
				xsd.dump_path, strerror(-r));
			xs_store_free(xsd.store);
			xsd.store = xs_store_new(&xsd.quota, xsd_watch_changed, NULL);
		} else {
			loaded = true;
			log_info("xenstored: reloaded %u nodes from %s",
				 xs_store_nodes(xsd.store), xsd.dump_path);
		}
		/* a later kill -9 must not bring back this state */
		unlink(xsd.dump_path);
	}
	if (!loaded) {
		if (dfile)
			unlink(dfile);
		if ((r = initial_nodes()) < 0) {
			log_err("xenstored: cannot create the initial nodes: %s", strerror(-r));
			return 1;
		}
	}

	xsd_transport_init();
	if (!(xsd.listener = xsd_unix_listen(xsd.sock_path, NULL)))
		return 1;
	if (loaded && dfile)
		xsd_domains_restore(dfile);
	free(dfile);
	if ((r = write_pid_file()) < 0) {
		log_err("xenstored: cannot write pid file %s: %s", pid_file, strerror(-r));
		remove_files();
		return 1;
	}
	if (output_pid) {
		printf("%ld\n", (long)getpid());
		fflush(stdout);
	}

	uv_signal_init(xsd.loop, &sig_term);
	uv_signal_start(&sig_term, on_stop, SIGTERM);
	uv_signal_init(xsd.loop, &sig_int);
	uv_signal_start(&sig_int, on_stop, SIGINT);
	uv_signal_init(xsd.loop, &sig_hup);
	uv_signal_start(&sig_hup, on_hup, SIGHUP);
	log_info("xenstored: listening on %s (domain sockets under %s/domain)",
		 xsd.sock_path, xsd.rundir);

	uv_run(xsd.loop, UV_RUN_DEFAULT);
	remove_files();
	return 0;
}
