/* main.c — the xapi daemon: configuration, state directory, PAM setup,
 * database, fresh-host seeding, and the HTTP front door that routes RPC
 * requests to the dispatcher. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "api/api.h"
#include "api/events.h"
#include "api/roles.h"
#include "api/storage.h"
#include "api/vm.h"
#include "api/vm_power.h"
#include "api/tasks.h"
#include "api/transfer.h"
#include "base/log.h"
#include "base/util.h"
#include "http/http.h"
#include "rpc/rpc.h"
#include "sm/sm.h"
#include "xapi/config.h"
#include "xapi/seed.h"
#include "xenops/xenops.h"

static uv_loop_t *loop;
static struct http_server *server;

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = util_malloc(n);
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* A random password of 16 letters and digits. */
static void random_password(char out[17])
{
	static const char al[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
	unsigned char b[16];
	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		abort();
	for (int i = 0; i < 16; i++)
		out[i] = al[b[i] % (sizeof(al) - 1)];
	out[16] = 0;
}

/* The embedded PAM stack: <state>/pam.d/{cxapi,cxapi-external} using
 * pam_pwdfile over <state>/passwd (root) and <state>/external-passwd (users
 * of external authentication). */
static int setup_embedded_pam(void)
{
	char *dir = path_join(cfg.state_dir, "pam.d");
	char *pw = path_join(cfg.state_dir, "passwd");
	char *ext = path_join(cfg.state_dir, "external-passwd");
	char *svc = path_join(dir, cfg.pam_service);
	char *esvc = path_join(dir, cfg.pam_ext_service);
	char text[8192];
	int rc = util_mkdir_p(dir, 0700);
	if (rc == 0) {
		snprintf(text, sizeof(text),
			 "# written by xapi: root logins against %s\n"
			 "auth required pam_pwdfile.so pwdfile=%s\n"
			 "account required pam_permit.so\n",
			 pw, pw);
		rc = util_write_file(svc, text, 0600);
	}
	if (rc == 0) {
		snprintf(text, sizeof(text),
			 "# written by xapi: external-auth logins against %s\n"
			 "auth required pam_pwdfile.so pwdfile=%s\n"
			 "account required pam_permit.so\n",
			 ext, ext);
		rc = util_write_file(esvc, text, 0600);
	}
	if (rc == 0 && access(ext, F_OK) < 0)
		rc = util_write_file(ext, "", 0600);
	if (rc == 0 && access(pw, F_OK) < 0) {
		char gen[17];
		const char *pass = cfg.root_password;
		if (!pass[0]) {
			random_password(gen);
			pass = gen;
			printf("root password: %s\n", pass);
			fflush(stdout);
		}
		rc = auth_pwdfile_set(pw, "root", pass);
	}
	if (rc < 0)
		log_err("embedded PAM setup in %s: %s", dir, strerror(-rc));
	api_srv.pam_confdir = dir;
	api_srv.pwdfile = pw; /* kept for session.change_password */
	free(ext);
	free(svc);
	free(esvc);
	return rc;
}

/* ---- HTTP routing ---- */

struct rpc_call {
	struct http_conn *conn;
	struct arena a;
	struct rpc_request req;
	struct buf out;
};

/* --debug-sm-step-delay-ms: between the steps of the file SR's multi-step
 * changes, log the step just done and sleep, so that a test can kill -9 the
 * daemon right after a chosen step (tests/integration/test_storage_crash.py). */
static void sm_step_delay(const char *where)
{
	int ms = cfg.debug_sm_step_delay_ms;
	log_info("sm step: %s (pausing %d ms)", where, ms);
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The domain manager (docs/vm.md): xenstored and cxapi-simguest under
 * <state>/sim, the simulated host as the seed describes it.  Before any
 * thread starts (xenops_init sets XENSTORED_PATH).  Events go to
 * vm_power's queue. */
static int start_xenops(void)
{
	char *xs = NULL;
	if (cfg.xenstored_bin[0]) {
		xs = util_strdup(cfg.xenstored_bin);
	} else {
		char exe[4096];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (n < 0) {
			log_err("cannot find the xapi binary's directory; set xenstored_bin");
			return -1;
		}
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
		xs = path_join(exe, "../xs/xenstored");
	}
	char *dir = path_join(cfg.state_dir, "sim");
	struct xenops_settings s = {
		.backend = cfg.backend,
		.state_dir = dir,
		.xenstored_bin = xs,
		.host_memory = (uint64_t)cfg.sim_memory_mib << 20,
		.host_cpus = (uint32_t)cfg.sim_cpus,
		.dom0_memory = (uint64_t)cfg.sim_dom0_memory_mib << 20,
		.sim_boot_ms = cfg.sim_boot_ms,
		.sim_shutdown_ms = cfg.sim_shutdown_ms,
		.sim_faults = cfg.sim_faults[0] ? cfg.sim_faults : NULL,
		.simguest_bin = cfg.simguest_bin[0] ? cfg.simguest_bin : NULL,
	};
	struct xerr e = {0};
	int rc = util_mkdir_p(dir, 0700);
	if (rc < 0)
		log_err("%s: %s", dir, strerror(-rc));
	else if ((rc = xenops_init(&s, vm_power_on_event, NULL, &e)) < 0)
		log_err("domain manager: %s %s", e.code, e.n ? e.params[0] : "");
	xerr_clear(&e);
	free(xs);
	free(dir);
	return rc;
}

static void rpc_call_free(struct rpc_call *k)
{
	arena_free(&k->a);
	buf_free(&k->out);
	free(k);
}

static void rpc_done(void *opaque)
{
	struct rpc_call *k = opaque;
	const char *ct = k->req.proto == RPC_XML ? "text/xml" : "application/json";
	http_respond(k->conn, 200, ct, &k->out, NULL);
	rpc_call_free(k);
}

static const char index_html[] =
	"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>cxapi</title></head>"
	"<body><h1>cxapi</h1><p>XenAPI server. XML-RPC on <code>POST /</code>, "
	"JSON-RPC on <code>POST /jsonrpc</code>.</p></body></html>";

static bool on_stream(const struct http_req *r, void *opaque)
{
	return transfer_claims(r);
}

static void on_request(struct http_conn *c, struct http_req *r, void *opaque)
{
	if (r->streamed) {
		transfer_start(c, r);
		return;
	}
	if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0) {
		if (strcmp(r->path, "/") == 0) {
			struct buf b;
			buf_init(&b);
			buf_adds(&b, index_html);
			http_respond(c, 200, "text/html; charset=utf-8", &b, NULL);
		} else {
			http_respond_error(c, 404, "Not Found");
		}
		return;
	}
	if (strcmp(r->method, "POST") != 0) {
		http_respond_error(c, 405, "Method Not Allowed");
		return;
	}
	struct rpc_call *k = util_calloc(1, sizeof(*k));
	k->conn = c;
	/* decoded trees are bounded by a multiple of the body size */
	arena_init(&k->a, 16 * (r->body_len + 4096));
	buf_init(&k->out);
	const char *why = NULL;
	int rc = strcmp(r->path, "/jsonrpc") == 0
			 ? rpc_json_decode(&k->a, r->body, r->body_len, &k->req, &why)
			 : rpc_xml_decode(&k->a, r->body, r->body_len, &k->req, &why);
	if (rc < 0) {
		log_debug("bad RPC request from %s: %s", r->peer, why ? why : "malformed");
		http_respond_error(c, rc == -E2BIG ? 413 : 400, why ? why : "malformed request");
		rpc_call_free(k);
		return;
	}
	struct api_http h = {http_req_header(r, "task-id"), http_req_header(r, "subtask-of")};
	rc = api_call_http(loop, &k->a, &k->req, r->transport == HT_UNIX,
			   h.task_id || h.subtask_of ? &h : NULL, &k->out, rpc_done, k);
	if (rc == 0) {
		rpc_done(k);
	} else if (rc < 0) {
		http_respond_error(c, 500, "Internal Error");
		rpc_call_free(k);
	}
}

/* ---- signals and timers ---- */

static uv_signal_t sig_int, sig_term;
static uv_timer_t gc_timer;

static void on_signal(uv_signal_t *s, int signum)
{
	log_info("signal %d: stopping", signum);
	uv_stop(loop);
}

static void gc_work(uv_work_t *w)
{
	session_gc();
	task_gc();
}

static void gc_after(uv_work_t *w, int status)
{
	free(w);
}

static void on_gc(uv_timer_t *t)
{
	uv_work_t *w = util_calloc(1, sizeof(*w));
	uv_queue_work(loop, w, gc_work, gc_after);
}

int main(int argc, char **argv)
{
	int rc = config_load(argc, argv);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	if (strcmp(cfg.log_level, "debug") == 0)
		log_level_max = LOG_DEBUG_;
	else if (strcmp(cfg.log_level, "warn") == 0)
		log_level_max = LOG_WARN_;
	else if (strcmp(cfg.log_level, "error") == 0)
		log_level_max = LOG_ERR_;
	if (cfg.check_only) {
		printf("configuration ok\n");
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	/* Big replies (tens of MB) are built and freed often: keep such memory in
	 * the heap instead of mapping and faulting it in afresh every time. */
	mallopt(M_MMAP_THRESHOLD, 256 << 20);
	mallopt(M_TRIM_THRESHOLD, 512 << 20);
	char threads[16];
	snprintf(threads, sizeof(threads), "%d", cfg.threads);
	setenv("UV_THREADPOOL_SIZE", threads, 1);

	if ((rc = util_mkdir_p(cfg.state_dir, 0700)) < 0) {
		log_err("state directory %s: %s", cfg.state_dir, strerror(-rc));
		return 1;
	}
	char *abs = realpath(cfg.state_dir, NULL);
	if (abs) {
		free(cfg.state_dir);
		cfg.state_dir = abs;
	}
	api_srv.state_dir = cfg.state_dir;
	api_srv.pam_service = cfg.pam_service;
	api_srv.pam_ext_service = cfg.pam_ext_service;
	api_srv.session_timeout_s = cfg.session_timeout;
	task_cfg.completed_timeout_s = cfg.completed_task_timeout;
	task_cfg.pending_timeout_s = cfg.pending_task_timeout;
	task_cfg.max_tasks = cfg.max_tasks;
	task_cfg.debug_delay_ms = cfg.debug_call_delay_ms;
	if (cfg.debug_sm_step_delay_ms > 0)
		sm_test_step = sm_step_delay;
	if (strcmp(cfg.pam_confdir, "embedded") == 0) {
		if (setup_embedded_pam() < 0)
			return 1;
	} else {
		api_srv.pam_confdir = cfg.pam_confdir[0] ? cfg.pam_confdir : NULL;
	}

	if (start_xenops() < 0)
		return 1;
	char *dbpath = path_join(cfg.state_dir, "xapi.db");
	if ((rc = db_open(dbpath)) < 0) {
		log_err("database %s: %s", dbpath, strerror(-rc));
		return 1;
	}
	struct xerr e = {0};
	if (roles_seed(&e) < 0 || seed_fresh_host(&e) < 0) {
		log_err("seeding the database: %s %s", e.code, e.n ? e.params[0] : "");
		return 1;
	}
	api_init();
	storage_start(); /* attach this host's plugged SRs; background GC */
	vm_start();      /* VM operations a crash left; allowed_operations */
	vm_power_start(cfg.clean_shutdown_timeout); /* resync with the domains; events */

	loop = uv_default_loop();
	struct events_config ec = {.delay_ms = cfg.event_delay_ms,
				   .deletions_kept = (uint32_t)cfg.event_deletions_kept,
				   .message_limit = cfg.message_limit,
				   .legacy_queue_bytes = (long)cfg.event_queue_bytes};
	if (events_init(loop, &ec) < 0)
		return 1;
	char *cert = path_join(cfg.state_dir, "xapi-cert.pem");
	char *key = path_join(cfg.state_dir, "xapi-key.pem");
	char *sock = cfg.unix_socket[0] ? util_strdup(cfg.unix_socket)
					 : path_join(cfg.state_dir, "xapi.sock");
	if (cfg.https_port && http_tls_ensure_cert(cert, key, cfg.sim_hostname) < 0) {
		log_err("cannot make a TLS certificate in %s", cfg.state_dir);
		return 1;
	}
	struct http_config hc = {
		.bind_addr = cfg.bind,
		.http_port = cfg.http_port,
		.https_port = cfg.https_port,
		.unix_path = strcmp(sock, "none") == 0 ? NULL : sock,
		.cert_file = cert,
		.key_file = key,
		.max_head = 16 * 1024,
		.max_body = (size_t)cfg.max_rpc_body,
		.head_timeout_ms = 30000,
		.idle_timeout_ms = 300000,
		.max_conns = 4096,
		.stream_body = on_stream,
	};
	server = http_server_new(loop, &hc, on_request, NULL);
	if (!server || http_server_start(server) < 0) {
		log_err("cannot listen");
		return 1;
	}
	const char *shown = cfg.bind[0] ? cfg.bind : "127.0.0.1";
	if (cfg.http_port)
		printf("cxapi: http://%s:%d/\n", shown, http_server_port(server, HT_TCP));
	if (cfg.https_port)
		printf("cxapi: https://%s:%d/\n", shown, http_server_port(server, HT_TLS));
	if (hc.unix_path)
		printf("cxapi: unix socket %s\n", hc.unix_path);
	fflush(stdout);
	log_info("xapi ready: state %s, database generation %llu", cfg.state_dir,
		 (unsigned long long)db_generation());

	uv_signal_init(loop, &sig_int);
	uv_signal_start(&sig_int, on_signal, SIGINT);
	uv_signal_init(loop, &sig_term);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_timer_init(loop, &gc_timer);
	uint64_t gc_ms = (uint64_t)(cfg.gc_interval > 0 ? cfg.gc_interval : 30) * 1000;
	uv_timer_start(&gc_timer, on_gc, gc_ms, gc_ms);
	uv_run(loop, UV_RUN_DEFAULT);

	http_server_stop(server);
	http_server_free(server);
	vm_power_stop();
	xenops_shutdown(); /* xenstored, cxapi-simguest and the domains live on */
	db_close();
	free(dbpath);
	free(cert);
	free(key);
	free(sock);
	log_info("xapi stopped");
	return 0;
}
