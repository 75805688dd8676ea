/* sim.c — the `sim` hypervisor backend: a client of cxapi-simguest
 * (src/simguest), which holds the simulated hypervisor's domains and runs
 * the guests.  One Unix stream socket (<state_dir>/sim.sock), one text line
 * per request and answer, serialised by a mutex (each answer takes
 * microseconds).  See docs/vm.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/util.h"
#include "xenops/hv.h"

static struct {
	pthread_mutex_t lock;
	int fd;
	struct buf in;      /* received; consumed up to in_off */
	size_t in_off;
} sim = { PTHREAD_MUTEX_INITIALIZER, -1, { 0 } };

#define IMAGE_MAGIC "CXAPI-SIM-SUSPEND 1\n"

int hv_spawn_daemon(char *const argv[], const char *logfile, const char *pidfile)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC))
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(pfd[0]);
		close(pfd[1]);
		return -e;
	}
	if (pid == 0) {
		/* only async-signal-safe calls from here: we may be threaded */
		setsid();
		pid_t gc = fork();
		if (gc != 0) {
			ssize_t w = write(pfd[1], &gc, sizeof(gc));
			_exit(w == sizeof(gc) ? 0 : 1);
		}
		int nul = open("/dev/null", O_RDONLY);
		int log = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (nul >= 0)
			dup2(nul, 0);
		if (log >= 0) {
			dup2(log, 1);
			dup2(log, 2);
		}
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		execv(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	pid_t daemon = -1;
	ssize_t n;
	while ((n = read(pfd[0], &daemon, sizeof(daemon))) < 0 && errno == EINTR)
		;
	close(pfd[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (n != sizeof(daemon) || daemon <= 0)
		return -ECHILD;
	if (pidfile) {
		char t[32];
		snprintf(t, sizeof(t), "%d\n", (int)daemon);
		util_write_file(pidfile, t, 0644);
	}
	return 0;
}

int hv_connect_unix(const char *path, int wait_ms)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	strcpy(a.sun_path, path);
	for (int waited = 0;; waited += 10) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
		int e = errno;
		close(fd);
		if (waited >= wait_ms)
			return -e;
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

/* One line of the answer (without '\n') into line; 0 or -errno. */
static int read_line(char *line, size_t n)
{
	for (;;) {
		char *start = sim.in.p + sim.in_off;
		size_t avail = sim.in.len - sim.in_off;
		char *nl = avail ? memchr(start, '\n', avail) : NULL;
		if (nl) {
			/* consumed by moving an offset: a LIST of 1,000 domains
			 * once moved the rest of the buffer for every line */
			size_t l = (size_t)(nl - start);
			if (l >= n)
				return -EPROTO;
			memcpy(line, start, l);
			line[l] = 0;
			sim.in_off += l + 1;
			if (sim.in_off == sim.in.len)
				sim.in.len = sim.in_off = 0;
			return 0;
		}
		if (sim.in_off) { /* keep what is left at the front */
			memmove(sim.in.p, start, avail);
			sim.in.len = avail;
			sim.in_off = 0;
		}
		char tmp[4096];
		ssize_t r = recv(sim.fd, tmp, sizeof(tmp), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r ? -errno : -EPIPE;
		buf_add(&sim.in, tmp, (size_t)r);
	}
}

/* Send a request; the first answer line's text after "OK " goes to out.
 * Returns 0, the request's -errno ("ERR <errno> ..."), or -EPIPE when the
 * simulator is gone.  With keep_lock (and success) the caller keeps the
 * lock to read more lines. */
static int call_v(char *out, size_t n, bool keep_lock, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int call_v(char *out, size_t n, bool keep_lock, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char req[512];
	int l = vsnprintf(req, sizeof(req) - 1, fmt, ap);
	va_end(ap);
	if (l < 0 || l >= (int)sizeof(req) - 1)
		return -EINVAL;
	req[l++] = '\n';
	pthread_mutex_lock(&sim.lock);
	int r = sim.fd < 0 ? -EPIPE : 0;
	for (int off = 0; !r && off < l;) {
		ssize_t w = send(sim.fd, req + off, (size_t)(l - off), MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			r = -EPIPE;
		else
			off += (int)w;
	}
	char line[512];
	if (!r)
		r = read_line(line, sizeof(line));
	if (!r) {
		const char *rest;
		if (!strncmp(line, "OK", 2)) {
			rest = line[2] ? line + 3 : "";
		} else {
			int e = atoi(line + 4);
			rest = strchr(line + 4, ' ');
			rest = rest ? rest + 1 : "";
			r = e > 0 ? -e : -EIO;
		}
		size_t rl = strlen(rest);
		if (out && rl < n)
			memcpy(out, rest, rl + 1);
		else if (out)
			r = -EPROTO;
	}
	if (r && sim.fd >= 0 && (r == -EPIPE || r == -EPROTO)) {
		close(sim.fd);
		sim.fd = -1;
	}
	if (!keep_lock || r)
		pthread_mutex_unlock(&sim.lock);
	return r;
}

#define call(out, n, ...) call_v(out, n, false, __VA_ARGS__)

static int parse_info(const char *s, struct hv_info *o)
{
	int st, rs;
	memset(o, 0, sizeof(*o));
	if (sscanf(s, "%" SCNu32 " %39s %d %d %" SCNu64 " %" SCNu64 " %" SCNu32 " %" SCNu32 " %lf",
		   &o->domid, o->uuid, &st, &rs, &o->mem_kib, &o->max_kib, &o->vcpus_max,
		   &o->vcpus_online, &o->cpu_time) != 9)
		return -EPROTO;
	o->state = (enum xenops_state)st;
	o->reason = (enum xenops_reason)rs;
	return 0;
}

static char *simguest_path(const struct xenops_settings *s)
{
	if (s->simguest_bin)
		return util_strdup(s->simguest_bin);
	/* beside the build's xenstored: <build>/src/xs/xenstored */
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s", s->xenstored_bin ? s->xenstored_bin : "");
	char *sl = strrchr(p, '/');
	if (!sl)
		return util_strdup("cxapi-simguest");
	*sl = 0;
	char q[PATH_MAX + 64];
	snprintf(q, sizeof(q), "%s/../simguest/cxapi-simguest", p);
	return util_strdup(q);
}

static int sim_open(const struct xenops_settings *s, const char **why)
{
	char sock[PATH_MAX], xs_sock[PATH_MAX], rundir[PATH_MAX], log[PATH_MAX];
	snprintf(sock, sizeof(sock), "%s/sim.sock", s->state_dir);
	snprintf(rundir, sizeof(rundir), "%s/xs", s->state_dir);
	snprintf(xs_sock, sizeof(xs_sock), "%s/xs/socket", s->state_dir);
	snprintf(log, sizeof(log), "%s/simguest.log", s->state_dir);
	int fd = hv_connect_unix(sock, 0);
	if (fd < 0) {
		/* none running: start it (a running one keeps its domains) */
		char *bin = simguest_path(s);
		char *argv[] = { bin, "--dir", (char *)s->state_dir, "--xenstored", xs_sock,
				 "--rundir", rundir, NULL };
		int r = access(bin, X_OK) ? -errno : hv_spawn_daemon(argv, log, NULL);
		free(bin);
		if (r < 0) {
			*why = "cannot start cxapi-simguest";
			return r;
		}
		fd = hv_connect_unix(sock, 5000);
		if (fd < 0) {
			*why = "cxapi-simguest did not come up (see simguest.log)";
			return fd;
		}
	}
	pthread_mutex_lock(&sim.lock);
	if (sim.fd >= 0)
		close(sim.fd);
	sim.fd = fd;
	sim.in.len = sim.in_off = 0;
	pthread_mutex_unlock(&sim.lock);
	int r = call(NULL, 0, "CONFIG %" PRIu64 " %" PRIu64 " %d %d %s", s->host_memory / 1024,
		     s->dom0_memory / 1024, s->sim_boot_ms, s->sim_shutdown_ms,
		     s->sim_faults && *s->sim_faults ? s->sim_faults : "");
	if (r)
		*why = "cxapi-simguest refused the settings";
	return r;
}

static void sim_close(void)
{
	pthread_mutex_lock(&sim.lock);
	if (sim.fd >= 0)
		close(sim.fd);
	sim.fd = -1;
	buf_free(&sim.in);
	pthread_mutex_unlock(&sim.lock);
}

static int sim_create(const char *uuid, uint64_t kib, uint32_t vcpus, uint32_t *domid)
{
	char out[64];
	int r = call(out, sizeof(out), "CREATE %s %" PRIu64 " %" PRIu32, uuid, kib, vcpus);
	if (!r)
		*domid = (uint32_t)strtoul(out, NULL, 10);
	return r;
}

static int sim_pause(uint32_t d) { return call(NULL, 0, "PAUSE %u", d); }
static int sim_unpause(uint32_t d) { return call(NULL, 0, "UNPAUSE %u", d); }
static int sim_destroy(uint32_t d) { return call(NULL, 0, "DESTROY %u", d); }
static int sim_shutdown(uint32_t d, enum xenops_reason r) { return call(NULL, 0, "SHUTDOWN %u %d", d, (int)r); }
static int sim_setmaxmem(uint32_t d, uint64_t kib) { return call(NULL, 0, "MAXMEM %u %" PRIu64, d, kib); }
static int sim_set_vcpus(uint32_t d, uint32_t n) { return call(NULL, 0, "VCPUS %u %u", d, n); }
static int sim_trigger(uint32_t d, const char *t, bool hvm)
{
	if (strchr(t, ' ') || strchr(t, '\n') || !*t)
		return -EINVAL;
	return call(NULL, 0, "TRIGGER %u %s %d", d, t, hvm ? 1 : 0);
}

static int sim_getinfo(uint32_t domid, struct hv_info *o)
{
	char out[256];
	int r = call(out, sizeof(out), "INFO %u", domid);
	return r ? r : parse_info(out, o);
}

/* LIST [filter]: "OK n", then n info lines. */
static int list(const char *req, struct hv_info **out, int *n)
{
	char line[256];
	int r = call_v(line, sizeof(line), true, "%s", req);
	if (r)
		return r;
	int cnt = atoi(line);
	struct hv_info *v = util_calloc((size_t)cnt + 1, sizeof(*v));
	for (int i = 0; !r && i < cnt; i++) {
		r = read_line(line, sizeof(line));
		if (!r)
			r = parse_info(line, &v[i]);
	}
	pthread_mutex_unlock(&sim.lock);
	if (r) {
		free(v);
		return r;
	}
	*out = v;
	*n = cnt;
	return 0;
}

static int sim_list(struct hv_info **out, int *n) { return list("LIST", out, n); }
static int sim_list_down(struct hv_info **out, int *n) { return list("LIST down", out, n); }

static int sim_host_memory(uint64_t *total, uint64_t *free_b)
{
	char out[64];
	uint64_t t, f;
	int r = call(out, sizeof(out), "FREE");
	if (r)
		return r;
	if (sscanf(out, "%" SCNu64 " %" SCNu64, &t, &f) != 2)
		return -EPROTO;
	*total = t * 1024;
	*free_b = f * 1024;
	return 0;
}

/* The image: a header line and the domain's state.  (A real image holds the
 * guest's pages; the sim's guests have none worth saving.) */
static int sim_suspend_write(uint32_t domid, int fd)
{
	struct hv_info i;
	int r = sim_getinfo(domid, &i);
	if (r)
		return r;
	if (i.state != XENOPS_SHUTDOWN || i.reason != XENOPS_SUSPEND)
		return -EINVAL;
	char img[512];
	int l = snprintf(img, sizeof(img), IMAGE_MAGIC "%s %" PRIu64 " %u %u %.6f\n", i.uuid,
			 i.max_kib, i.vcpus_max, i.vcpus_online, i.cpu_time);
	for (int off = 0; off < l;) {
		ssize_t w = write(fd, img + off, (size_t)(l - off));
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		off += (int)w;
	}
	return 0;
}

static int sim_resume_read(int fd, const char *uuid, uint32_t *domid)
{
	char img[512];
	size_t got = 0;
	while (got < sizeof(img) - 1) {
		ssize_t r = read(fd, img + got, sizeof(img) - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	img[got] = 0;
	char u[40];
	uint64_t kib;
	unsigned vmax, von;
	double cpu;
	size_t ml = strlen(IMAGE_MAGIC);
	if (got < ml || memcmp(img, IMAGE_MAGIC, ml) ||
	    sscanf(img + ml, "%39s %" SCNu64 " %u %u %lf", u, &kib, &vmax, &von, &cpu) != 5)
		return -EINVAL;
	char out[64];
	int r = call(out, sizeof(out), "RESTORE %s %" PRIu64 " %u %u %.6f", uuid, kib, vmax, von,
		     cpu);
	if (!r)
		*domid = (uint32_t)strtoul(out, NULL, 10);
	return r;
}

const struct hv_ops hv_sim = {
	.name = "sim",
	.open = sim_open,
	.close = sim_close,
	.domain_create = sim_create,
	.domain_pause = sim_pause,
	.domain_unpause = sim_unpause,
	.domain_destroy = sim_destroy,
	.domain_shutdown = sim_shutdown,
	.domain_getinfo = sim_getinfo,
	.domain_list = sim_list,
	.domain_list_down = sim_list_down,
	.domain_setmaxmem = sim_setmaxmem,
	.domain_set_vcpus = sim_set_vcpus,
	.domain_trigger = sim_trigger,
	.host_memory = sim_host_memory,
	.suspend_write = sim_suspend_write,
	.resume_read = sim_resume_read,
};
