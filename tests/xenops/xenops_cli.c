/* xenops_cli — drives the domain manager (src/xenops) for the integration
 * tests (tests/integration/test_xenops.py), standing in for xapi: it calls
 * xenops_init like the daemon, then reads one command per line on stdin and
 * answers one line: "ok [result]" or "error CODE [params...]".
 *
 *   xenops_cli --state DIR --xenstored BIN [--host-mib N] [--dom0-mib N]
 *              [--boot-ms N] [--shutdown-ms N] [--faults F]
 *
 * Commands (VM spec: uuid=U name=N mib=M vcpus=V [at-start=A] [target-mib=T]
 *   [kernel=K] [ramdisk=R] [cmdline=C] [paused=1]
 *   [disk=DEV,PATH,FLAGS] (FLAGS: rw|ro|cd|empty) [nic=DEVID,MAC,BRIDGE];
 *   values are %-decoded, so "cmdline=console=hvc0%20quiet"):
 *   start SPEC | shutdown DOMID REASON TIMEOUT_S | destroy DOMID | pause DOMID
 *   | unpause DOMID | suspend DOMID FILE | resume FILE SPEC
 *   | plug-disk DOMID DEV PATH FLAGS | unplug-disk DOMID DEV [force]
 *   | plug-nic DOMID DEVID MAC BRIDGE | unplug-nic DOMID DEVID [force]
 *   | cd-insert DOMID DEV PATH | cd-eject DOMID DEV | memory DOMID MIB
 *   | vcpus DOMID N | sysrq DOMID KEY | trigger DOMID NAME | list | info DOMID
 *   | guest DOMID | free | events | wait-event KIND DOMID TIMEOUT_S | quit
 */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/util.h"
#include "xenops/xenops.h"

static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ev_cond = PTHREAD_COND_INITIALIZER;
static struct buf ev_log; /* "kind domid uuid\n" lines */

static const char *const ev_names[] = { "domain", "guest", "device" };
static const char *const states[] = { "running", "paused", "shutdown", "dying" };
static const char *const reasons[] = { "poweroff", "reboot", "suspend", "crash", "halt" };

static void on_event(void *ctx, enum xenops_event ev, const char *uuid, uint32_t domid)
{
	pthread_mutex_lock(&ev_lock);
	buf_printf(&ev_log, "%s %u %s\n", ev_names[ev], domid, uuid);
	pthread_cond_broadcast(&ev_cond);
	pthread_mutex_unlock(&ev_lock);
}

static void answer_err(struct xerr *e)
{
	printf("error %s", e->code ? e->code : "?");
	for (int i = 0; i < e->n; i++)
		printf(" %s", e->params[i]);
	printf("\n");
	xerr_clear(e);
}

struct spec {
	struct xenops_vm vm;
	char kernel[256], ramdisk[256], cmdline[1024];
	struct xenops_disk disks[8];
	struct xenops_nic nics[8];
	bool paused;
};

static void parse_disk(struct xenops_disk *d, const char *dev, const char *path,
		       const char *flags, int pos)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->device, sizeof(d->device), "%s", dev);
	snprintf(d->path, sizeof(d->path), "%s", strcmp(path, "-") ? path : "");
	d->userdevice = pos;
	d->read_only = strstr(flags, "ro") || strstr(flags, "cd");
	d->cdrom = strstr(flags, "cd") != NULL;
	d->empty = strstr(flags, "empty") != NULL;
	d->bootable = pos == 0;
	snprintf(d->format, sizeof(d->format), "%s", d->cdrom ? "raw" : "vhd");
}

/* %XX -> the byte, in place */
static void pct_decode(char *v)
{
	char *o = v;
	for (; *v; v++) {
		unsigned x;
		if (v[0] == '%' && sscanf(v + 1, "%2x", &x) == 1 && v[1] && v[2]) {
			*o++ = (char)x;
			v += 2;
		} else
			*o++ = *v;
	}
	*o = 0;
}

static int parse_spec(char **argv, int argc, struct spec *s)
{
	memset(s, 0, sizeof(*s));
	s->vm.type = XENOPS_PV;
	s->vm.disks = s->disks;
	s->vm.nics = s->nics;
	s->vm.shadow_multiplier = 1.0;
	for (int i = 0; i < argc; i++) {
		char *k = argv[i], *v = strchr(k, '=');
		if (!v)
			return -1;
		*v++ = 0;
		pct_decode(v);
		if (!strcmp(k, "uuid"))
			snprintf(s->vm.uuid, sizeof(s->vm.uuid), "%s", v);
		else if (!strcmp(k, "name"))
			snprintf(s->vm.name, sizeof(s->vm.name), "%s", v);
		else if (!strcmp(k, "mib"))
			s->vm.memory_static_max = s->vm.memory_dynamic_max = s->vm.memory_target =
				s->vm.memory_dynamic_min = strtoull(v, NULL, 10) << 20;
		else if (!strcmp(k, "vcpus"))
			s->vm.vcpus_max = s->vm.vcpus_at_startup = (uint32_t)atoi(v);
		else if (!strcmp(k, "target-mib"))
			s->vm.memory_target = s->vm.memory_dynamic_max = s->vm.memory_dynamic_min =
				strtoull(v, NULL, 10) << 20;
		else if (!strcmp(k, "kernel"))
			s->vm.pv_kernel = strncpy(s->kernel, v, sizeof(s->kernel) - 1);
		else if (!strcmp(k, "ramdisk"))
			s->vm.pv_ramdisk = strncpy(s->ramdisk, v, sizeof(s->ramdisk) - 1);
		else if (!strcmp(k, "cmdline"))
			s->vm.pv_args = strncpy(s->cmdline, v, sizeof(s->cmdline) - 1);
		else if (!strcmp(k, "at-start"))
			s->vm.vcpus_at_startup = (uint32_t)atoi(v);
		else if (!strcmp(k, "paused"))
			s->paused = atoi(v) != 0;
		else if (!strcmp(k, "disk") && s->vm.ndisks < 8) {
			char *dev = strtok(v, ","), *path = strtok(NULL, ","), *fl = strtok(NULL, ",");
			if (!dev || !path || !fl)
				return -1;
			parse_disk(&s->disks[s->vm.ndisks], dev, path, fl, s->vm.ndisks);
			s->vm.ndisks++;
		} else if (!strcmp(k, "nic") && s->vm.nnics < 8) {
			struct xenops_nic *n = &s->nics[s->vm.nnics++];
			char *id = strtok(v, ","), *mac = strtok(NULL, ","), *br = strtok(NULL, ",");
			if (!id || !mac || !br)
				return -1;
			n->devid = atoi(id);
			snprintf(n->mac, sizeof(n->mac), "%s", mac);
			snprintf(n->bridge, sizeof(n->bridge), "%s", br);
			n->mtu = 1500;
		} else
			return -1;
	}
	return s->vm.uuid[0] ? 0 : -1;
}

static void print_info(const struct xenops_dominfo *i)
{
	printf("%u %s %s %s %" PRIu64 " %u %.3f", i->domid, i->uuid, states[i->state],
	       i->state == XENOPS_SHUTDOWN ? reasons[i->reason] : "-", i->memory_actual,
	       i->vcpus_online, i->cpu_time);
}

static int reason_of(const char *s)
{
	for (int i = 0; i < 5; i++)
		if (!strcmp(s, reasons[i]))
			return i;
	return -1;
}

static void wait_event(const char *kind, const char *domid, int timeout_s)
{
	char want[64];
	snprintf(want, sizeof(want), "%s %s ", kind, domid);
	struct timespec end;
	clock_gettime(CLOCK_REALTIME, &end);
	end.tv_sec += timeout_s;
	pthread_mutex_lock(&ev_lock);
	for (;;) {
		bool found = false;
		for (char *l = ev_log.p; l && *l; l = strchr(l, '\n') + 1)
			if (!strncmp(l, want, strlen(want)))
				found = true;
		if (found || pthread_cond_timedwait(&ev_cond, &ev_lock, &end)) {
			printf(found ? "ok\n" : "error TIMEOUT\n");
			break;
		}
	}
	pthread_mutex_unlock(&ev_lock);
}

static void command(char *line)
{
	char *argv[24];
	int argc = 0;
	for (char *t = strtok(line, " \t\n"); t && argc < 24; t = strtok(NULL, " \t\n"))
		argv[argc++] = t;
	if (!argc)
		return;
	struct xerr e = { 0 };
	const char *c = argv[0];
	uint32_t d = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 0;
	int r = 0;
	struct spec s;
	if (!strcmp(c, "start")) {
		if (parse_spec(argv + 1, argc - 1, &s))
			return (void)printf("error BAD_SPEC\n");
		uint32_t domid;
		r = xenops_start(&s.vm, s.paused, &domid, &e);
		if (!r)
			return (void)printf("ok %u\n", domid);
	} else if (!strcmp(c, "resume") && argc >= 2) {
		if (parse_spec(argv + 2, argc - 2, &s))
			return (void)printf("error BAD_SPEC\n");
		int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
		uint32_t domid;
		r = xenops_resume(&s.vm, fd, s.paused, &domid, &e);
		close(fd);
		if (!r)
			return (void)printf("ok %u\n", domid);
	} else if (!strcmp(c, "shutdown") && argc == 4) {
		int why = reason_of(argv[2]);
		r = xenops_clean_shutdown(d, (enum xenops_reason)(why < 0 ? 99 : why), atoi(argv[3]),
					  NULL, NULL, &e);
	} else if (!strcmp(c, "destroy") && argc == 2) {
		r = xenops_destroy(d, &e);
	} else if (!strcmp(c, "pause") && argc == 2) {
		r = xenops_pause(d, &e);
	} else if (!strcmp(c, "unpause") && argc == 2) {
		r = xenops_unpause(d, &e);
	} else if (!strcmp(c, "suspend") && argc == 3) {
		int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		r = xenops_suspend(d, fd, &e);
		close(fd);
	} else if (!strcmp(c, "plug-disk") && argc == 5) {
		struct xenops_disk disk;
		parse_disk(&disk, argv[2], argv[3], argv[4], 1);
		r = xenops_disk_plug(d, &disk, &e);
	} else if (!strcmp(c, "unplug-disk") && argc >= 3) {
		r = xenops_disk_unplug(d, argv[2], argc > 3, &e);
	} else if (!strcmp(c, "plug-nic") && argc == 5) {
		struct xenops_nic n = { .devid = atoi(argv[2]), .mtu = 1500 };
		snprintf(n.mac, sizeof(n.mac), "%s", argv[3]);
		snprintf(n.bridge, sizeof(n.bridge), "%s", argv[4]);
		r = xenops_nic_plug(d, &n, &e);
	} else if (!strcmp(c, "unplug-nic") && argc >= 3) {
		r = xenops_nic_unplug(d, atoi(argv[2]), argc > 3, &e);
	} else if (!strcmp(c, "cd-insert") && argc == 4) {
		r = xenops_cd_insert(d, argv[2], argv[3], &e);
	} else if (!strcmp(c, "cd-eject") && argc == 3) {
		r = xenops_cd_eject(d, argv[2], &e);
	} else if (!strcmp(c, "memory") && argc == 3) {
		r = xenops_set_memory_target(d, strtoull(argv[2], NULL, 10) << 20, &e);
	} else if (!strcmp(c, "vcpus") && argc == 3) {
		r = xenops_set_vcpus(d, (uint32_t)atoi(argv[2]), &e);
	} else if (!strcmp(c, "sysrq") && argc == 3) {
		r = xenops_sysrq(d, argv[2][0], &e);
	} else if (!strcmp(c, "trigger") && argc == 3) {
		r = xenops_trigger(d, argv[2], &e);
	} else if (!strcmp(c, "free")) {
		return (void)printf("ok %" PRIu64 "\n", xenops_host_free_memory());
	} else if (!strcmp(c, "list")) {
		struct xenops_dominfo *v;
		int n;
		r = xenops_list(&v, &n, &e);
		if (!r) {
			printf("ok");
			for (int i = 0; i < n; i++) {
				printf(" ");
				printf("%u:%s:%s", v[i].domid, v[i].uuid, states[v[i].state]);
			}
			printf("\n");
			free(v);
			return;
		}
	} else if (!strcmp(c, "info") && argc == 2) {
		struct xenops_dominfo i;
		r = xenops_info(d, &i, &e);
		if (!r) {
			printf("ok ");
			print_info(&i);
			printf("\n");
			return;
		}
	} else if (!strcmp(c, "guest") && argc == 2) {
		struct xenops_guest gst;
		r = xenops_guest(d, &gst, &e);
		if (!r) {
			/* one line: fields separated by '|', newlines as ';' */
			for (char *p = gst.os_version; *p; p++) if (*p == '\n') *p = ';';
			for (char *p = gst.pv_drivers; *p; p++) if (*p == '\n') *p = ';';
			for (char *p = gst.networks; *p; p++) if (*p == '\n') *p = ';';
			printf("ok present=%d|os=%s|pv=%s|net=%s|free=%" PRIu64 "|total=%" PRIu64
			       "|suspend=%d|shutdown=%d\n", gst.present, gst.os_version,
			       gst.pv_drivers, gst.networks, gst.memory_free, gst.memory_total,
			       gst.can_suspend, gst.feature_shutdown);
			return;
		}
	} else if (!strcmp(c, "events")) {
		pthread_mutex_lock(&ev_lock);
		for (char *p = ev_log.p; p && *p; p++)
			if (*p == '\n') *p = ';';
		printf("ok %s\n", ev_log.p ? ev_log.p : "");
		ev_log.len = 0;
		if (ev_log.p)
			ev_log.p[0] = 0;
		pthread_mutex_unlock(&ev_lock);
		return;
	} else if (!strcmp(c, "wait-event") && argc == 4) {
		return wait_event(argv[1], argv[2], atoi(argv[3]));
	} else {
		return (void)printf("error BAD_COMMAND %s\n", c);
	}
	if (r)
		answer_err(&e);
	else
		printf("ok\n");
}

int main(int argc, char **argv)
{
	struct xenops_settings s = { .backend = "sim", .host_memory = 16ull << 30,
				     .host_cpus = 4, .dom0_memory = 1ull << 30 };
	static const struct option opts[] = {
		{ "state", 1, NULL, 's' }, { "xenstored", 1, NULL, 'x' },
		{ "host-mib", 1, NULL, 'm' }, { "dom0-mib", 1, NULL, 'd' },
		{ "boot-ms", 1, NULL, 'b' }, { "shutdown-ms", 1, NULL, 'S' },
		{ "faults", 1, NULL, 'f' }, { "simguest", 1, NULL, 'g' }, { 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': s.state_dir = optarg; break;
		case 'x': s.xenstored_bin = optarg; break;
		case 'm': s.host_memory = strtoull(optarg, NULL, 10) << 20; break;
		case 'd': s.dom0_memory = strtoull(optarg, NULL, 10) << 20; break;
		case 'b': s.sim_boot_ms = atoi(optarg); break;
		case 'S': s.sim_shutdown_ms = atoi(optarg); break;
		case 'f': s.sim_faults = optarg; break;
		case 'g': s.simguest_bin = optarg; break;
		default: return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct xerr e = { 0 };
	if (xenops_init(&s, on_event, NULL, &e)) {
		answer_err(&e);
		return 1;
	}
	printf("ready\n");
	char line[8192];
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "quit", 4))
			break;
		command(line);
	}
	xenops_shutdown();
	return 0;
}
