/* test_sm.c — unit tests of the storage drivers (src/sm): the file SR's
 * VDIs, snapshots, clones, deletes, gc (with SIGKILL at random points of a
 * merge or a snapshot), resize, scan and space; the ISO SR.
 *
 * Every VDI's expected contents are kept in memory (a "model") and compared
 * with what reads through the VHD chain give. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "sm/sm.h"

#define MiB (1024 * 1024ull)

static char root[64];

/* ---- helpers ------------------------------------------------------------------ */

static const char *sr_dir(const char *name)
{
	static char p[4][128];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof p[k], "%s/%s", root, name);
	return p[k];
}

static struct sm_sr *sr_open(const struct sm_driver *drv, const char *dir, bool create)
{
	struct sm_sr *sr = util_calloc(1, sizeof(*sr));
	sr->drv = drv;
	util_uuid_v4(sr->uuid);
	sr->path = util_strdup(dir);
	if (create)
		assert_int_equal(drv->sr_create(sr->uuid, dir, 0), 0);
	assert_int_equal(drv->attach(sr), 0);
	return sr;
}

/* a new struct for the same SR, as after a restart */
static struct sm_sr *sr_reopen(struct sm_sr *old)
{
	struct sm_sr *sr = util_calloc(1, sizeof(*sr));
	*sr = *old;
	sr->path = util_strdup(old->path);
	assert_int_equal(sr->drv->attach(sr), 0);
	return sr;
}

static void sr_close(struct sm_sr *sr)
{
	sr->drv->detach(sr);
	free(sr->path);
	free(sr);
}

/* the bytes of "generation" seed at offset off: every 8 bytes the offset
 * and the seed, so a misplaced or stale sector shows */
static void pattern(uint8_t *buf, size_t len, uint64_t off, unsigned seed)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = ((off + i) << 8) ^ seed;
		memcpy(buf + i, &v, len - i < 8 ? len - i : 8);
	}
}

static void vdi_write(struct sm_sr *sr, const char *loc, uint64_t off, size_t len, unsigned seed,
		      uint8_t *model)
{
	struct sm_image img;
	uint8_t *buf = util_malloc(len);
	pattern(buf, len, off, seed);
	assert_int_equal(sr->drv->vdi_open(sr, loc, true, &img), 0);
	assert_int_equal(sm_image_pwrite(&img, buf, len, off), 0);
	assert_int_equal(sm_image_flush(&img), 0);
	sm_image_close(&img);
	if (model)
		memcpy(model + off, buf, len);
	free(buf);
}

/* 0 if the whole of loc reads as model (size bytes); -EIO if it differs */
static int vdi_compare(struct sm_sr *sr, const char *loc, const uint8_t *model, uint64_t size)
{
	struct sm_image img;
	int r = sr->drv->vdi_open(sr, loc, false, &img);
	if (r < 0)
		return r;
	uint8_t *buf = util_malloc(4 * MiB);
	for (uint64_t off = 0; r == 0 && off < size; off += 4 * MiB) {
		size_t n = size - off < 4 * MiB ? (size_t)(size - off) : 4 * MiB;
		r = sm_image_pread(&img, buf, n, off);
		if (r == 0 && memcmp(buf, model + off, n) != 0)
			r = -EIO;
	}
	free(buf);
	sm_image_close(&img);
	return r;
}

static void vdi_expect(struct sm_sr *sr, const char *loc, const uint8_t *model, uint64_t size)
{
	assert_int_equal(vdi_compare(sr, loc, model, size), 0);
}

/* number of directory entries whose names end in suffix ("" = all but . and ..) */
static int count_files(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *e;
	assert_non_null(d);
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name), s = strlen(suffix);
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && l >= s &&
		    strcmp(e->d_name + l - s, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* 0 if every *.vhd of dir passes vhd_check */
static int check_all(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int r = 0;
	assert_non_null(d);
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		char p[512], why[256];
		if (l < 4 || strcmp(e->d_name + l - 4, ".vhd"))
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		if (vhd_check(p, why, sizeof why) < 0) {
			print_error("%s: %s\n", p, why);
			r = -EINVAL;
		}
	}
	closedir(d);
	return r;
}

static int gc_all(struct sm_sr *sr)
{
	int r, n = 0;
	while ((r = sr->drv->gc(sr, NULL, NULL)) == 1)
		if (++n > 100)
			return -ELOOP;
	return r;
}

struct scan_list {
	struct sm_vdi v[32];
	int n;
};

static int scan_add(void *ctx, const struct sm_vdi *v)
{
	struct scan_list *l = ctx;
	if (l->n == 32)
		return -E2BIG;
	l->v[l->n++] = *v;
	return 0;
}

static const struct sm_vdi *scan_find(const struct scan_list *l, const char *loc)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->v[i].location, loc) == 0)
			return &l->v[i];
	return NULL;
}

static void scan(struct sm_sr *sr, struct scan_list *l)
{
	l->n = 0;
	assert_int_equal(sr->drv->scan(sr, scan_add, l), 0);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the file SR ----------------------------------------------------------------- */

static void test_driver_find(void **state)
{
	(void)state;
	assert_ptr_equal(sm_driver_find("file"), &sm_file_driver);
	assert_ptr_equal(sm_driver_find("iso"), &sm_iso_driver);
	assert_null(sm_driver_find("lvm"));
	assert_null(sm_driver_find(NULL));
}

static void test_create_scan_probe(void **state)
{
	(void)state;
	const char *dir = sr_dir("create");
	struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
	struct sm_vdi v, w;
	struct scan_list l;
	char *xml;

	/* sr_create: idempotent for the same SR, refused for another */
	assert_int_equal(sm_file_driver.sr_create(sr->uuid, dir, 0), 0);
	assert_int_equal(sm_file_driver.sr_create("5a4e1b0e-0000-4000-8000-000000000000", dir, 0),
			 -EEXIST);

	assert_int_equal(sm_file_driver.vdi_create(sr, 10 * MiB + 1, &v), 0);
	assert_true(util_uuid_valid(v.location));
	assert_int_equal(v.virtual_size, 12 * MiB); /* whole 2 MiB blocks, as the original */
	assert_false(v.hidden);
	assert_false(v.read_only);
	assert_string_equal(v.parent, "");
	assert_true(v.physical_utilisation > 0 && v.physical_utilisation < MiB);
	assert_int_equal(sm_file_driver.vdi_create(sr, 0, &w), 0);
	assert_int_equal(w.virtual_size, 2 * MiB);
	assert_int_equal(sm_file_driver.vdi_create(sr, VHD_MAX_SIZE + 1, &w), -EINVAL);

	char odd[200];
	snprintf(odd, sizeof odd, "%s/folder.vhd", dir); /* not an image: ignored */
	assert_int_equal(mkdir(odd, 0700), 0);
	scan(sr, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(rmdir(odd), 0);
	assert_non_null(scan_find(&l, v.location));
	assert_int_equal(scan_find(&l, v.location)->virtual_size, 12 * MiB);

	assert_int_equal(sm_file_driver.vdi_stat(sr, v.location, &w), 0);
	assert_string_equal(w.location, v.location);
	assert_int_equal(sm_file_driver.vdi_stat(sr, "nonexistent", &w), -ENOENT);
	assert_int_equal(sm_file_driver.vdi_stat(sr, "../x", &w), -ENOENT);

	assert_int_equal(sm_file_driver.probe(dir, &xml), 0);
	char want[256];
	snprintf(want, sizeof want,
		 "<?xml version=\"1.0\" ?>\n<SRlist>\n\t<SR>\n\t\t<UUID>%s</UUID>\n\t</SR>\n</SRlist>\n",
		 sr->uuid);
	assert_string_equal(xml, want);
	free(xml);
	assert_int_equal(sm_file_driver.probe(sr_dir("nothing-here"), &xml), -ENOENT);

	/* destroy: refused while VDIs are left */
	assert_int_equal(sm_file_driver.sr_delete(sr), -ENOTEMPTY);
	scan(sr, &l);
	for (int i = 0; i < l.n; i++)
		assert_int_equal(sm_file_driver.vdi_delete(sr, l.v[i].location), 0);
	assert_int_equal(sm_file_driver.vdi_delete(sr, v.location), -ENOENT);
	sr->drv->detach(sr);
	assert_int_equal(sm_file_driver.sr_delete(sr), 0);
	assert_int_equal(access(dir, F_OK), -1);
	free(sr->path);
	free(sr);
}

static void test_io_unaligned(void **state)
{
	(void)state;
	struct sm_sr *sr = sr_open(&sm_file_driver, sr_dir("io"), true);
	struct sm_vdi v;
	struct sm_image img;
	uint64_t size = 6 * MiB;
	uint8_t *model = util_calloc(1, size), buf[3000];
	assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0);
	vdi_write(sr, v.location, MiB, 8192, 1, model);
	vdi_write(sr, v.location, MiB + 100, 3000, 2, model);      /* inside sectors */
	vdi_write(sr, v.location, 2 * MiB - 7, 20, 3, model);      /* across a block end */
	vdi_write(sr, v.location, size - 5, 5, 4, model);          /* the last bytes */
	vdi_expect(sr, v.location, model, size);
	assert_int_equal(sm_file_driver.vdi_open(sr, v.location, false, &img), 0);
	assert_int_equal(sm_image_pread(&img, buf, 3000, MiB + 99), 0);
	assert_memory_equal(buf, model + MiB + 99, 3000);
	assert_int_equal(sm_image_pread(&img, buf, 6, size - 5), -EINVAL);
	assert_int_equal(sm_image_pwrite(&img, buf, 6, 0), -EROFS);
	/* a second writer is refused, readers are not */
	struct sm_image w1, w2;
	assert_int_equal(sm_file_driver.vdi_open(sr, v.location, true, &w1), 0);
	assert_int_equal(sm_file_driver.vdi_open(sr, v.location, true, &w2), -EBUSY);
	assert_int_equal(sm_image_pwrite(&w1, buf, 6, size - 5), -EINVAL);
	sm_image_close(&w1);
	sm_image_close(&img);
	free(model);
	sr_close(sr);
}

static void test_snapshot_clone(void **state)
{
	(void)state;
	const char *dir = sr_dir("snap");
	struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
	struct sm_vdi v, s, b, c, b2, w;
	struct scan_list l;
	uint64_t size = 16 * MiB;
	uint8_t *m0 = util_calloc(1, size), *m1, *m2;

	assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0);
	vdi_write(sr, v.location, 0, 3 * MiB, 1, m0);
	vdi_write(sr, v.location, 9 * MiB + 512, 4096, 2, m0);

	assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s, &b), 0);
	assert_true(b.hidden && b.read_only);
	assert_string_equal(s.parent, b.location);
	assert_int_equal(s.virtual_size, size);
	assert_int_equal(b.virtual_size, size);
	assert_false(s.hidden);
	assert_int_equal(sm_file_driver.vdi_stat(sr, v.location, &w), 0);
	assert_string_equal(w.parent, b.location); /* the VDI keeps its location */

	/* the leaf takes new writes; the snapshot keeps the old contents */
	m1 = util_malloc(size);
	memcpy(m1, m0, size);
	vdi_write(sr, v.location, MiB, 2 * MiB, 3, m1);
	vdi_write(sr, v.location, 12 * MiB, 700, 4, m1);
	vdi_expect(sr, s.location, m0, size);
	vdi_expect(sr, v.location, m1, size);

	/* a clone of the snapshot, written to on its own */
	assert_int_equal(sm_file_driver.vdi_snapshot(sr, s.location, &c, &b2), 0);
	m2 = util_malloc(size);
	memcpy(m2, m0, size);
	vdi_write(sr, c.location, 5 * MiB, MiB, 5, m2);
	vdi_expect(sr, c.location, m2, size);
	vdi_expect(sr, s.location, m0, size);
	vdi_expect(sr, v.location, m1, size);

	/* a base copy is not snapshotted, written or destroyed while needed */
	struct sm_image img;
	assert_int_equal(sm_file_driver.vdi_snapshot(sr, b.location, &w, &w), -EINVAL);
	assert_int_equal(sm_file_driver.vdi_open(sr, b.location, true, &img), -EROFS);
	assert_int_equal(sm_file_driver.vdi_delete(sr, b.location), -EBUSY);
	assert_int_equal(sm_file_driver.vdi_resize(sr, b.location, 2 * size, &w), -EROFS);
	/* nor a VDI open for writing (its writer would write into the base) */
	assert_int_equal(sm_file_driver.vdi_open(sr, v.location, true, &img), 0);
	assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &w, &w), -EBUSY);
	sm_image_close(&img);

	scan(sr, &l);
	assert_int_equal(l.n, 5);
	assert_true(scan_find(&l, b.location)->hidden);
	assert_true(scan_find(&l, b2.location)->hidden);
	assert_string_equal(scan_find(&l, b2.location)->parent, b.location);
	assert_string_equal(scan_find(&l, v.location)->parent, b.location);
	assert_string_equal(scan_find(&l, s.location)->parent, b2.location);
	assert_string_equal(scan_find(&l, c.location)->parent, b2.location);
	assert_int_equal(count_files(dir, ".vhd"), 5);
	assert_int_equal(count_files(dir, ""), 6); /* and .sr-uuid: no leftovers */
	assert_int_equal(check_all(dir), 0);
	assert_int_equal(gc_all(sr), 0); /* nothing to collect */
	assert_int_equal(count_files(dir, ".vhd"), 5);

	/* relative parent locators: the directory moved whole still works */
	sr->drv->detach(sr);
	const char *moved = sr_dir("snap-moved");
	assert_int_equal(rename(dir, moved), 0);
	free(sr->path);
	sr->path = util_strdup(moved);
	assert_int_equal(sr->drv->attach(sr), 0);
	vdi_expect(sr, c.location, m2, size);
	vdi_expect(sr, s.location, m0, size);
	vdi_expect(sr, v.location, m1, size);
	free(m0);
	free(m1);
	free(m2);
	sr_close(sr);
}

/* VDI v, snapshot s: delete s, gc merges v into the base and the base
 * takes v's name. */
static void test_delete_gc_leaf(void **state)
{
	(void)state;
	const char *dir = sr_dir("gcleaf");
	struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
	struct sm_vdi v, s, b, w;
	struct scan_list l;
	uint64_t size = 8 * MiB;
	uint8_t *m = util_calloc(1, size);

	assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0);
	vdi_write(sr, v.location, 0, 4 * MiB, 1, m);
	assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s, &b), 0);
	vdi_write(sr, v.location, 3 * MiB, 2 * MiB, 2, m);
	assert_int_equal(sm_file_driver.vdi_delete(sr, s.location), 0);

	/* the base has one child left: scan still shows it until gc ran */
	scan(sr, &l);
	assert_int_equal(l.n, 2);
	/* gc leaves a chain alone while its VDI is open for writing */
	struct sm_image img;
	assert_int_equal(sm_file_driver.vdi_open(sr, v.location, true, &img), 0);
	assert_int_equal(sm_file_driver.gc(sr, NULL, NULL), 0);
	sm_image_close(&img);

	assert_int_equal(sm_file_driver.gc(sr, NULL, NULL), 1);
	assert_int_equal(sm_file_driver.gc(sr, NULL, NULL), 0);
	scan(sr, &l);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.v[0].location, v.location);
	assert_string_equal(l.v[0].parent, "");
	assert_false(l.v[0].hidden);
	assert_int_equal(count_files(dir, ".vhd"), 1);
	assert_int_equal(check_all(dir), 0);
	vdi_expect(sr, v.location, m, size);
	/* and it is writable as before */
	vdi_write(sr, v.location, 7 * MiB, 4096, 3, m);
	vdi_expect(sr, v.location, m, size);
	assert_int_equal(sm_file_driver.vdi_stat(sr, v.location, &w), 0);
	assert_int_equal(w.virtual_size, size);
	free(m);
	sr_close(sr);
}

/* v, snapshot s1 (base b1), snapshot s2 (base b2 over b1): deleting s1
 * leaves b1 with the single hidden child b2: b2 is merged into b1 and v and
 * s2 are relinked to b1.  Then deleting s2 merges v into b1. */
static void test_delete_gc_intermediate(void **state)
{
	(void)state;
	const char *dir = sr_dir("gcmid");
	struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
	struct sm_vdi v, s1, b1, s2, b2;
	struct scan_list l;
	uint64_t size = 8 * MiB;
	uint8_t *mv = util_calloc(1, size), *ms2 = util_malloc(size);

	assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0);
	vdi_write(sr, v.location, 0, 2 * MiB, 1, mv);
	assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s1, &b1), 0);
	vdi_write(sr, v.location, MiB, 2 * MiB, 2, mv);
	assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s2, &b2), 0);
	memcpy(ms2, mv, size);
	vdi_write(sr, v.location, 6 * MiB, 512, 3, mv);
	assert_string_equal(b2.parent, b1.location);

	assert_int_equal(sm_file_driver.vdi_delete(sr, s1.location), 0);
	assert_int_equal(gc_all(sr), 0);
	scan(sr, &l);
	assert_int_equal(l.n, 3);
	assert_null(scan_find(&l, b2.location));
	assert_string_equal(scan_find(&l, v.location)->parent, b1.location);
	assert_string_equal(scan_find(&l, s2.location)->parent, b1.location);
	assert_int_equal(check_all(dir), 0);
	vdi_expect(sr, v.location, mv, size);
	vdi_expect(sr, s2.location, ms2, size);

	assert_int_equal(sm_file_driver.vdi_delete(sr, s2.location), 0);
	assert_int_equal(gc_all(sr), 0);
	scan(sr, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(count_files(dir, ".vhd"), 1);
	vdi_expect(sr, v.location, mv, size);

	/* deleting both children of a base: the base is removed */
	struct sm_vdi s3, b3;
	assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s3, &b3), 0);
	assert_int_equal(sm_file_driver.vdi_delete(sr, v.location), 0);
	assert_int_equal(sm_file_driver.vdi_delete(sr, s3.location), 0);
	scan(sr, &l);
	assert_int_equal(l.n, 0); /* a hidden leaf is garbage, not a VDI */
	assert_int_equal(gc_all(sr), 0);
	assert_int_equal(count_files(dir, ".vhd"), 0);
	free(mv);
	free(ms2);
	sr_close(sr);
}

/* What happens to a VDI while gc copies it into its base (without the SR
 * lock) makes gc give up the switch; the next gc merges what is there. */
struct meddle {
	struct sm_sr *sr;
	const char *loc;
	int what; /* 0 write, 1 snapshot, 2 delete */
	bool done;
	uint8_t *model;
	struct sm_vdi snap;
};

static int meddle_progress(void *ctx, double fraction)
{
	struct meddle *md = ctx;
	struct sm_vdi b;
	if (md->done)
		return 0;
	md->done = true;
	if (md->what == 0)
		vdi_write(md->sr, md->loc, 5 * MiB, MiB, 7, md->model);
	else if (md->what == 1)
		assert_int_equal(md->sr->drv->vdi_snapshot(md->sr, md->loc, &md->snap, &b), 0);
	else
		assert_int_equal(md->sr->drv->vdi_delete(md->sr, md->loc), 0);
	return 0;
}

static void test_gc_concurrent(void **state)
{
	(void)state;
	uint64_t size = 8 * MiB;
	for (int what = 0; what < 3; what++) {
		char name[32];
		snprintf(name, sizeof name, "gcconc%d", what);
		const char *dir = sr_dir(name);
		struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
		struct sm_vdi v, s, b;
		uint8_t *m = util_calloc(1, size);
		assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0);
		vdi_write(sr, v.location, 0, 4 * MiB, 1, m);
		assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s, &b), 0);
		vdi_write(sr, v.location, 2 * MiB, 4 * MiB, 2, m);
		assert_int_equal(sm_file_driver.vdi_delete(sr, s.location), 0);

		struct meddle md = {sr, v.location, what, false, m, {{0}}};
		assert_int_equal(sm_file_driver.gc(sr, meddle_progress, &md), 1);
		assert_true(md.done);
		assert_int_equal(count_files(dir, ".vhd"), what == 0 ? 2 : what == 1 ? 4 : 1);
		assert_int_equal(check_all(dir), 0);
		if (what < 2)
			vdi_expect(sr, v.location, m, size);
		assert_int_equal(gc_all(sr), 0);
		assert_int_equal(check_all(dir), 0);
		if (what < 2)
			vdi_expect(sr, v.location, m, size);
		if (what == 1)
			vdi_expect(sr, md.snap.location, m, size);
		assert_int_equal(count_files(dir, ".vhd"), what == 0 ? 1 : what == 1 ? 3 : 0);
		free(m);
		sr_close(sr);
	}
}

static void test_resize(void **state)
{
	(void)state;
	const char *dir = sr_dir("resize");
	struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
	struct sm_vdi v, w, s, b;
	uint64_t size = 4 * MiB, big = 100 * MiB;
	uint8_t *m = util_calloc(1, big), *ms = util_calloc(1, big);

	assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0);
	vdi_write(sr, v.location, 0, size, 1, m);
	assert_int_equal(sm_file_driver.vdi_resize(sr, v.location, 2 * MiB, &w), -EINVAL);
	struct sm_image img;
	assert_int_equal(sm_file_driver.vdi_open(sr, v.location, false, &img), 0);
	assert_int_equal(sm_file_driver.vdi_resize(sr, v.location, big, &w), -EBUSY);
	sm_image_close(&img);
	assert_int_equal(sm_file_driver.vdi_resize(sr, v.location, big - 1, &w), 0);
	assert_int_equal(w.virtual_size, big);
	vdi_expect(sr, v.location, m, big);
	vdi_write(sr, v.location, big - MiB, MiB, 2, m);
	vdi_expect(sr, v.location, m, big);

	/* grow a differencing leaf beyond its base; gc then grows the base */
	assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s, &b), 0);
	memcpy(ms, m, big);
	assert_int_equal(sm_file_driver.vdi_resize(sr, v.location, big + 8 * MiB, &w), 0);
	uint8_t *m2 = util_calloc(1, big + 8 * MiB);
	memcpy(m2, m, big);
	vdi_write(sr, v.location, big + 6 * MiB, 4096, 3, m2);
	vdi_expect(sr, v.location, m2, big + 8 * MiB);
	vdi_expect(sr, s.location, ms, big);
	assert_int_equal(sm_file_driver.vdi_delete(sr, s.location), 0);
	assert_int_equal(gc_all(sr), 0);
	assert_int_equal(count_files(dir, ".vhd"), 1);
	assert_int_equal(sm_file_driver.vdi_stat(sr, v.location, &w), 0);
	assert_int_equal(w.virtual_size, big + 8 * MiB);
	vdi_expect(sr, v.location, m2, big + 8 * MiB);
	assert_int_equal(check_all(dir), 0);
	free(m);
	free(m2);
	free(ms);
	sr_close(sr);
}

static void test_space(void **state)
{
	(void)state;
	const char *dir = sr_dir("space");
	struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
	struct sm_vdi v, w;
	uint64_t size, util0, util1;

	assert_int_equal(sm_file_driver.space(sr, &size, &util0), 0);
	assert_true(size > 0);
	assert_int_equal(sm_file_driver.vdi_create(sr, 64 * MiB, &v), 0);
	vdi_write(sr, v.location, 0, 8 * MiB, 1, NULL);
	assert_int_equal(sm_file_driver.vdi_stat(sr, v.location, &w), 0);
	/* allocated bytes: the 4 blocks written, not the virtual size */
	assert_true(w.physical_utilisation >= 8 * MiB && w.physical_utilisation < 10 * MiB);
	assert_int_equal(sm_file_driver.space(sr, &size, &util1), 0);
	assert_true(util1 - util0 >= 8 * MiB && util1 - util0 < 10 * MiB);
	sr->physical_size = 5 * MiB; /* configured */
	assert_int_equal(sm_file_driver.space(sr, &size, &util1), 0);
	assert_int_equal(size, 5 * MiB);
	/* thin: virtual allocation above the physical size is allowed */
	assert_int_equal(sm_file_driver.vdi_create(sr, 1024 * 1024 * MiB, &w), 0);
	assert_int_equal(sm_fs_fits(dir, 1), 0);
	assert_int_equal(sm_fs_fits(dir, UINT64_MAX), -ENOSPC);
	sr_close(sr);
}

/* On a 24 MiB file system: writes, snapshots and resizes that cannot fit
 * fail with -ENOSPC before changing anything. */
static void test_enospc(void **state)
{
	(void)state;
	const char *dir = sr_dir("small");
	mkdir(dir, 0700);
	if (geteuid() != 0 && unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
		skip();
	if ((geteuid() == 0 && unshare(CLONE_NEWNS) < 0) ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=24m") < 0) {
		print_message("no private tmpfs (%s): skipped\n", strerror(errno));
		skip();
	}
	struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
	struct sm_vdi v, w;
	struct sm_image img;
	uint64_t size = 64 * MiB;
	uint8_t *m = util_calloc(1, size);

	assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0); /* thin */
	vdi_write(sr, v.location, 0, 18 * MiB, 1, m);
	uint8_t *buf = util_malloc(16 * MiB);
	pattern(buf, 16 * MiB, 32 * MiB, 9);
	assert_int_equal(sm_file_driver.vdi_open(sr, v.location, true, &img), 0);
	assert_int_equal(sm_image_pwrite(&img, buf, 16 * MiB, 32 * MiB), -ENOSPC);
	/* rewriting allocated blocks needs no space */
	assert_int_equal(sm_image_pwrite(&img, buf, 4 * MiB, 0), 0);
	memcpy(m, buf, 4 * MiB);
	sm_image_close(&img);
	vdi_expect(sr, v.location, m, size);
	assert_int_equal(sm_file_driver.vdi_resize(sr, v.location, 2000 * 1024 * MiB, &w), -ENOSPC);
	assert_int_equal(sm_file_driver.vdi_stat(sr, v.location, &w), 0);
	assert_int_equal(w.virtual_size, size);
	assert_int_equal(check_all(dir), 0);
	free(buf);
	free(m);
	sr_close(sr);
	umount(dir);
}

/* ---- crashes ---------------------------------------------------------------------- */

/* Run job in a child and SIGKILL it after delay seconds; true if it was
 * killed before finishing. */
static bool run_killed(void (*job)(const struct sm_sr *proto), const struct sm_sr *proto, double delay)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		log_level_max = LOG_ERR_;
		job(proto);
		_exit(0);
	}
	double end = now_s() + delay;
	int st;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_s() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		usleep(200);
	}
	if (!WIFSIGNALED(st))
		assert_int_equal(WEXITSTATUS(st), 0);
	return WIFSIGNALED(st);
}

static void job_gc(const struct sm_sr *proto)
{
	struct sm_sr sr = *proto;
	if (sm_file_driver.attach(&sr) == 0)
		_exit(gc_all(&sr) == 0 ? 0 : 1);
	_exit(2);
}

static char crash_loc[SM_LOC_MAX];
static void job_snapshots(const struct sm_sr *proto)
{
	struct sm_sr sr = *proto;
	struct sm_vdi s, b;
	if (sm_file_driver.attach(&sr) < 0)
		return;
	for (;;) {
		s.location[0] = 0;
		sm_file_driver.vdi_snapshot(&sr, crash_loc, &s, &b);
		sm_file_driver.vdi_delete(&sr, s.location);
		gc_all(&sr);
	}
}

/* After a crash: every file sound; loc reads as m and loc2 (if not NULL)
 * as m2 (loc2 may be gone when it was being deleted: gone2_ok); any other
 * VDI is a snapshot of loc made just before the crash (reads as m) or a
 * new empty VDI (zeros); and gc finishes. */
static void check_after_crash(struct sm_sr *proto, const char *loc, const uint8_t *m, uint64_t size,
			      const char *loc2, const uint8_t *m2, bool gone2_ok)
{
	struct sm_sr *sr = sr_reopen(proto);
	struct scan_list l;
	uint8_t *zero = util_calloc(1, size);
	for (int pass = 0; pass < 2; pass++) { /* before gc and after */
		assert_int_equal(check_all(sr->path), 0);
		scan(sr, &l);
		assert_non_null(scan_find(&l, loc));
		vdi_expect(sr, loc, m, size);
		if (loc2 && !(gone2_ok && !scan_find(&l, loc2)))
			vdi_expect(sr, loc2, m2, size);
		for (int i = 0; i < l.n; i++) {
			const char *x = l.v[i].location;
			if (l.v[i].hidden || !strcmp(x, loc) || (loc2 && !strcmp(x, loc2)))
				continue;
			if (vdi_compare(sr, x, m, size) != 0)
				assert_int_equal(vdi_compare(sr, x, zero, size), 0);
		}
		if (pass == 0)
			assert_int_equal(gc_all(sr), 0);
	}
	free(zero);
	sr_close(sr);
}

/* SIGKILL at random points of merges, leaf and intermediate. */
static void test_crash_gc(void **state)
{
	(void)state;
	const char *dir = sr_dir("crashgc");
	struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
	uint64_t size = 24 * MiB;
	uint8_t *m = util_calloc(1, size), *ms = util_malloc(size);
	struct sm_vdi v, s, b;
	int rounds = 24, killed = 0;
	double t_gc = 0;
	srand((unsigned)time(NULL));
	assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0);
	vdi_write(sr, v.location, 0, 20 * MiB, 1, m);
	sr->drv->detach(sr);

	for (int round = 0; round < rounds; round++) {
		/* v over two bases, with a snapshot s of the middle one; deleting
		 * the first snapshot makes a hidden-child merge, deleting s
		 * later a leaf merge */
		struct sm_vdi s0, b0;
		assert_int_equal(sr->drv->attach(sr), 0);
		assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s0, &b0), 0);
		vdi_write(sr, v.location, (uint64_t)(rand() % 8) * MiB, 8 * MiB, 10 + round, m);
		assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s, &b), 0);
		memcpy(ms, m, size);
		vdi_write(sr, v.location, (uint64_t)(rand() % 12) * MiB, 6 * MiB + 512, 50 + round, m);
		assert_int_equal(sm_file_driver.vdi_delete(sr, s0.location), 0);
		if (round % 2)
			assert_int_equal(sm_file_driver.vdi_delete(sr, s.location), 0);
		bool keep_s = round % 2 == 0;
		sr->drv->detach(sr);

		if (t_gc == 0) { /* measure a whole gc once */
			double t0 = now_s();
			assert_false(run_killed(job_gc, sr, 30));
			t_gc = now_s() - t0;
		} else {
			killed += run_killed(job_gc, sr, t_gc * (double)rand() / RAND_MAX);
		}
		check_after_crash(sr, v.location, m, size, keep_s ? s.location : NULL, ms, false);
		if (keep_s) {
			assert_int_equal(sr->drv->attach(sr), 0);
			assert_int_equal(sm_file_driver.vdi_delete(sr, s.location), 0);
			assert_int_equal(gc_all(sr), 0);
			sr->drv->detach(sr);
		}
		assert_int_equal(count_files(dir, ".vhd"), 1);
	}
	print_message("gc: %.0f ms; %d of %d rounds killed in the middle\n", t_gc * 1e3, killed,
		      rounds - 1);
	free(sr->path);
	free(sr);
	free(m);
	free(ms);
}

/* SIGKILL at random points of snapshot + delete + gc cycles. */
static void test_crash_snapshot(void **state)
{
	(void)state;
	const char *dir = sr_dir("crashsnap");
	struct sm_sr *sr = sr_open(&sm_file_driver, dir, true);
	uint64_t size = 8 * MiB;
	uint8_t *m = util_calloc(1, size);
	struct sm_vdi v;
	assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0);
	vdi_write(sr, v.location, MiB, 4 * MiB, 1, m);
	snprintf(crash_loc, sizeof crash_loc, "%s", v.location);
	sr->drv->detach(sr);
	for (int round = 0; round < 30; round++) {
		run_killed(job_snapshots, sr, 0.002 + 0.1 * (double)rand() / RAND_MAX);
		check_after_crash(sr, v.location, m, size, NULL, NULL, false);
		/* snapshots finished just before the kill remain, as VDIs */
		struct sm_sr *s2 = sr_reopen(sr);
		struct scan_list l;
		scan(s2, &l);
		for (int i = 0; i < l.n; i++)
			if (!l.v[i].hidden && strcmp(l.v[i].location, v.location))
				assert_int_equal(sm_file_driver.vdi_delete(s2, l.v[i].location), 0);
		assert_int_equal(gc_all(s2), 0);
		assert_int_equal(count_files(dir, ".vhd"), 1);
		assert_int_equal(count_files(dir, ""), 2);
		sr_close(s2);
	}
	free(sr->path);
	free(sr);
	free(m);
}

/* A crash (an _exit) between every two steps of create, snapshot, delete and
 * the merges gc makes (hidden child and leaf) and its removal of a base. */
static int step_target, step_count;
static void step_exit(const char *where)
{
	if (++step_count == step_target)
		_exit(77);
}

static char step_v[SM_LOC_MAX], step_s[SM_LOC_MAX];
static void job_steps(const struct sm_sr *proto)
{
	struct sm_sr sr = *proto;
	struct sm_vdi n, s2, b2, s3, b3;
	sm_test_step = step_exit;
	if (sm_file_driver.attach(&sr) < 0 || sm_file_driver.vdi_create(&sr, 8 * MiB, &n) < 0 ||
	    sm_file_driver.vdi_snapshot(&sr, step_v, &s2, &b2) < 0 ||
	    sm_file_driver.vdi_delete(&sr, s2.location) < 0 || gc_all(&sr) < 0 ||
	    sm_file_driver.vdi_delete(&sr, step_s) < 0 || gc_all(&sr) < 0 ||
	    /* a base left with no child at all */
	    sm_file_driver.vdi_snapshot(&sr, n.location, &s3, &b3) < 0 ||
	    sm_file_driver.vdi_delete(&sr, s3.location) < 0 ||
	    sm_file_driver.vdi_delete(&sr, n.location) < 0 || gc_all(&sr) < 0)
		_exit(1);
	_exit(0);
}

static void test_crash_steps(void **state)
{
	(void)state;
	uint64_t size = 8 * MiB;
	uint8_t *m = util_calloc(1, size), *ms = util_malloc(size);
	int n;
	for (n = 1; n < 100; n++) {
		char name[32];
		struct sm_vdi v, s0, b0, s, b;
		snprintf(name, sizeof name, "steps%d", n);
		struct sm_sr *sr = sr_open(&sm_file_driver, sr_dir(name), true);
		memset(m, 0, size);
		assert_int_equal(sm_file_driver.vdi_create(sr, size, &v), 0);
		vdi_write(sr, v.location, 0, 4 * MiB, 1, m);
		assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s0, &b0), 0);
		vdi_write(sr, v.location, MiB, 4 * MiB, 2, m);
		assert_int_equal(sm_file_driver.vdi_snapshot(sr, v.location, &s, &b), 0);
		memcpy(ms, m, size);
		vdi_write(sr, v.location, 3 * MiB, 4 * MiB, 3, m);
		assert_int_equal(sm_file_driver.vdi_delete(sr, s0.location), 0);
		snprintf(step_v, sizeof step_v, "%s", v.location);
		snprintf(step_s, sizeof step_s, "%s", s.location);
		sr->drv->detach(sr);

		step_target = n;
		step_count = 0;
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			log_level_max = LOG_ERR_;
			job_steps(sr);
		}
		int st;
		waitpid(pid, &st, 0);
		assert_true(WIFEXITED(st));
		check_after_crash(sr, v.location, m, size, s.location, ms, true);
		free(sr->path);
		free(sr);
		if (WEXITSTATUS(st) == 0)
			break; /* the job ran to its end: every step was tried */
		assert_int_equal(WEXITSTATUS(st), 77);
	}
	print_message("crashed at each of %d steps\n", n - 1);
	assert_true(n > 10);
	free(m);
	free(ms);
}

/* ---- the ISO SR ------------------------------------------------------------------ */

static void put_file(const char *dir, const char *name, size_t len)
{
	char p[256];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	for (size_t i = 0; i < len; i++)
		fputc((int)(i * 7 % 251), f);
	fclose(f);
}

static void test_iso(void **state)
{
	(void)state;
	const char *dir = sr_dir("iso");
	struct sm_sr *sr;
	struct scan_list l;
	struct sm_vdi v;
	struct sm_image img;
	char sub[200];

	assert_int_equal(sm_iso_driver.sr_create("", dir, 0), 0);
	put_file(dir, "debian.iso", 10000);
	put_file(dir, "tools.IMG", 513);
	put_file(dir, "notes.txt", 10);
	put_file(dir, ".hidden.iso", 10);
	snprintf(sub, sizeof sub, "%s/folder.iso", dir);
	mkdir(sub, 0755);
	sr = sr_open(&sm_iso_driver, dir, false);
	scan(sr, &l);
	assert_int_equal(l.n, 2);
	const struct sm_vdi *d = scan_find(&l, "debian.iso");
	assert_non_null(d);
	assert_string_equal(d->name, "debian.iso");
	assert_int_equal(d->virtual_size, 10000);
	assert_true(d->read_only);
	assert_int_equal(scan_find(&l, "tools.IMG")->virtual_size, 513);

	assert_int_equal(sm_iso_driver.vdi_open(sr, "debian.iso", true, &img), -EROFS);
	assert_int_equal(sm_iso_driver.vdi_open(sr, "debian.iso", false, &img), 0);
	assert_int_equal(img.format, SM_RAW);
	assert_int_equal(img.virtual_size, 10000);
	uint8_t buf[100];
	assert_int_equal(sm_image_pread(&img, buf, 100, 9900), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(buf[i], (9900 + i) * 7 % 251);
	assert_int_equal(sm_image_pread(&img, buf, 100, 9901), -EINVAL);
	assert_int_equal(sm_image_pwrite(&img, buf, 1, 0), -EROFS);
	sm_image_close(&img);

	assert_int_equal(sm_iso_driver.vdi_stat(sr, "tools.IMG", &v), 0);
	assert_int_equal(sm_iso_driver.vdi_stat(sr, "notes.txt", &v), -ENOENT);
	assert_int_equal(sm_iso_driver.vdi_create(sr, MiB, &v), -EOPNOTSUPP);
	assert_int_equal(sm_iso_driver.vdi_snapshot(sr, "debian.iso", &v, &v), -EOPNOTSUPP);
	assert_int_equal(sm_iso_driver.vdi_resize(sr, "debian.iso", MiB, &v), -EOPNOTSUPP);
	assert_int_equal(sm_iso_driver.vdi_delete(sr, "debian.iso"), -EOPNOTSUPP);
	assert_int_equal(sm_iso_driver.gc(sr, NULL, NULL), 0);
	uint64_t size, util;
	assert_int_equal(sm_iso_driver.space(sr, &size, &util), 0);
	assert_true(util >= 10000 + 513);
	sr_close(sr);
}

/* ---- main ---------------------------------------------------------------------- */

static int rm_tree(const char *path)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	return system(cmd);
}

int main(void)
{
	snprintf(root, sizeof root, "/tmp/test_sm.XXXXXX");
	if (!mkdtemp(root))
		return 1;
	log_level_max = LOG_WARN_;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_driver_find),
		cmocka_unit_test(test_create_scan_probe),
		cmocka_unit_test(test_io_unaligned),
		cmocka_unit_test(test_snapshot_clone),
		cmocka_unit_test(test_delete_gc_leaf),
		cmocka_unit_test(test_delete_gc_intermediate),
		cmocka_unit_test(test_gc_concurrent),
		cmocka_unit_test(test_resize),
		cmocka_unit_test(test_space),
		cmocka_unit_test(test_iso),
		cmocka_unit_test(test_crash_gc),
		cmocka_unit_test(test_crash_snapshot),
		cmocka_unit_test(test_crash_steps),
		cmocka_unit_test(test_enospc), /* last: it leaves this process in its own mount namespace */
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	rm_tree(root);
	return r;
}
