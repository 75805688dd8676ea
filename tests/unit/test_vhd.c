/* test_vhd.c — unit tests of the VHD library (src/vhd/vhd.c).
 *
 * The library source is included so the tests can watch every write and
 * sync (io_hook) and build the files a crash could leave behind.
 * test_speed prints the figures the issue names. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../../src/vhd/vhd.c"

#include <dirent.h>
#include <sys/wait.h>

#define MiB (1u << 20)

static char dir[256];

static const char *P(const char *name)
{
	static char buf[4][PATH_MAX + 64];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
	return buf[i];
}

static int setup(void **state)
{
	(void)state;
	const char *t = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/test_vhd.XXXXXX", t ? t : "/tmp");
	assert_non_null(mkdtemp(dir));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			unlink(P(e->d_name));
	if (d)
		closedir(d);
	rmdir(dir);
	return 0;
}

static void fill(uint8_t *p, size_t len, uint8_t tag)
{
	memset(p, tag, len);
}

static void write_tag(struct vhd *v, uint64_t off, size_t len, uint8_t tag)
{
	uint8_t *b = malloc(len);
	fill(b, len, tag);
	assert_int_equal(vhd_pwrite(v, b, len, off), 0);
	free(b);
}

/* every byte of [off, off+len) of the chain equals tag */
static void expect_chain(struct vhd_chain *c, uint64_t off, size_t len, uint8_t tag)
{
	uint8_t *b = malloc(len);
	assert_int_equal(vhd_chain_pread(c, b, len, off), 0);
	for (size_t i = 0; i < len; i++)
		if (b[i] != tag)
			fail_msg("byte %zu of [%llu, +%zu): %u, want %u", i, (unsigned long long)off, len, b[i], tag);
	free(b);
}

static void assert_check_ok(const char *path)
{
	char why[200];
	int err = vhd_check(path, why, sizeof why);
	if (err)
		fail_msg("%s: %s", path, why);
}

/* ---- format ------------------------------------------------------------- */

static void test_create_layout(void **state)
{
	(void)state;
	assert_int_equal(vhd_create_dynamic(P("a.vhd"), 10 * MiB + 1, 0), 0);
	assert_int_equal(vhd_create_dynamic(P("a.vhd"), 10 * MiB, 0), -EEXIST);
	assert_int_equal(vhd_create_dynamic(P("z.vhd"), 0, 0), -EINVAL);
	assert_int_equal(vhd_create_dynamic(P("z.vhd"), VHD_MAX_SIZE + 1, 0), -EINVAL);
	int fd = open(P("a.vhd"), O_RDONLY);
	uint8_t f[SEC], e[SEC], h[1024], bm[SEC];
	off_t size = lseek(fd, 0, SEEK_END);
	assert_int_equal(pread(fd, f, SEC, 0), SEC);
	assert_int_equal(pread(fd, e, SEC, size - SEC), SEC);
	assert_int_equal(pread(fd, h, 1024, SEC), 1024);
	assert_memory_equal(f, e, SEC);
	assert_memory_equal(f, "conectix", 8);
	assert_int_equal(get32(f + F_FEATURES), 2);
	assert_int_equal(get32(f + F_VERSION), 0x00010000);
	assert_int_equal(get64(f + F_DATAOFF), 512);
	assert_memory_equal(f + F_APP, "tap\0", 4);
	assert_int_equal(get32(f + F_CVER), 0x00010003);
	assert_int_equal(get32(f + F_COS), 0);
	assert_int_equal(get64(f + F_CUR), 10 * MiB + 512);
	assert_int_equal(get32(f + F_TYPE), VHD_DYNAMIC);
	assert_int_equal(get32(f + F_CSUM), checksum(f, SEC, F_CSUM));
	uint32_t now = (uint32_t)(time(NULL) - EPOCH_2000);
	assert_true(get32(f + F_TIME) <= now && get32(f + F_TIME) + 5 >= now);
	assert_int_equal(f[F_UUID + 6] >> 4, 4);
	/* geometry of the specification: 10 MiB+512 -> 20481 sectors, 17 spt, 4 heads */
	assert_int_equal(get32(f + F_GEOM), (20481u / 17 / 4) << 16 | 4 << 8 | 17);
	assert_memory_equal(h, "cxsparse", 8);
	assert_int_equal(get64(h + H_DATAOFF), UINT64_MAX);
	assert_int_equal(get64(h + H_TABLE), 1536);
	assert_int_equal(get32(h + H_MAXBAT), 6);
	assert_int_equal(get32(h + H_BS), 2 * MiB);
	assert_int_equal(get32(h + H_CSUM), checksum(h, 1024, H_CSUM));
	assert_int_equal(pread(fd, bm, SEC, 2048), SEC);
	assert_memory_equal(bm, "tdbatmap", 8);
	assert_int_equal(size, 2048 + 512 + 512 + 512);
	close(fd);
	assert_check_ok(P("a.vhd"));

	struct vhd *v;
	struct vhd_info in;
	assert_int_equal(vhd_open(P("a.vhd"), VHD_RDONLY, &v), 0);
	vhd_get_info(v, &in);
	assert_int_equal(in.type, VHD_DYNAMIC);
	assert_int_equal(in.virtual_size, 10 * MiB + 512);
	assert_int_equal(in.max_bat, 6);
	assert_int_equal(in.allocated, 0);
	assert_memory_equal(in.uuid, f + F_UUID, 16);
	assert_false(in.hidden);
	assert_int_equal(vhd_pwrite(v, f, SEC, 0), -EBADF);
	vhd_close(v);

	/* room in the BAT for a larger size */
	assert_int_equal(vhd_create_dynamic(P("m.vhd"), 4 * MiB, 100 * MiB), 0);
	assert_int_equal(vhd_open(P("m.vhd"), VHD_RDONLY, &v), 0);
	vhd_get_info(v, &in);
	assert_int_equal(in.max_bat, 50);
	assert_int_equal(in.virtual_size, 4 * MiB);
	vhd_close(v);
}

static void test_read_write(void **state)
{
	(void)state;
	struct vhd *v;
	assert_int_equal(vhd_create_dynamic(P("rw.vhd"), 8 * MiB, 0), 0);
	assert_int_equal(vhd_open(P("rw.vhd"), VHD_RDWR, &v), 0);
	uint8_t *buf = malloc(4 * MiB), present[1024];
	/* sectors 1..2 of block 0, a span across blocks 1 and 2, all of block 3 */
	write_tag(v, 512, 1024, 0x11);
	write_tag(v, 3 * MiB, 2 * MiB, 0x22);
	write_tag(v, 6 * MiB, 2 * MiB, 0x33);
	assert_int_equal(vhd_pwrite(v, buf, 512, 8 * MiB), -EINVAL);
	assert_int_equal(vhd_pwrite(v, buf, 100, 0), -EINVAL);
	memset(present, 0xff, sizeof present);
	assert_int_equal(vhd_pread(v, buf, 4096, 0, present), 0);
	for (int s = 0; s < 8; s++) {
		bool in = s == 1 || s == 2;
		assert_int_equal(buf[s * 512], in ? 0x11 : 0);
		assert_int_equal(!!(present[0] & (1 << s)), in);
	}
	uint64_t off;
	bool full;
	assert_int_equal(vhd_block(v, 0, &off, &full), 0);
	assert_true(off > 0);
	assert_false(full);
	assert_int_equal(vhd_block(v, 3, &off, &full), 0);
	assert_true(full);
	assert_int_equal(vhd_block(v, 2, &off, &full), 0);
	assert_false(full);
	assert_int_equal(vhd_flush(v), 0);
	vhd_close(v);
	assert_check_ok(P("rw.vhd"));

	/* the file after close: blocks, footer, no reservation left */
	struct stat st;
	stat(P("rw.vhd"), &st);
	assert_int_equal(st.st_size, 3072 + 4 * (512 + 2 * MiB) + 512);
	assert_int_equal(vhd_open(P("rw.vhd"), VHD_RDONLY, &v), 0);
	struct vhd_info in;
	vhd_get_info(v, &in);
	assert_int_equal(in.allocated, 4);
	assert_int_equal(in.file_size, (uint64_t)st.st_size);
	assert_int_equal(vhd_pread(v, buf, 4 * MiB, 2 * MiB, NULL), 0);
	for (uint64_t i = 0; i < 4 * MiB; i += 512)
		assert_int_equal(buf[i], i >= MiB && i < 3 * MiB ? 0x22 : 0);
	vhd_close(v);
	free(buf);

	/* what qemu reads ignores bitmaps: sectors never written are zero on disk */
	int fd = open(P("rw.vhd"), O_RDONLY);
	uint8_t sec[512];
	assert_int_equal(pread(fd, sec, 512, 3072 + 512), 512); /* data sector 0 of the first block */
	for (int i = 0; i < 512; i++)
		assert_int_equal(sec[i], 0);
	close(fd);
}

static void test_chain(void **state)
{
	(void)state;
	struct vhd *v;
	struct vhd_chain c;
	assert_int_equal(vhd_create_dynamic(P("base.vhd"), 8 * MiB, 0), 0);
	assert_int_equal(vhd_open(P("base.vhd"), VHD_RDWR, &v), 0);
	write_tag(v, 0, 8 * MiB, 0xb0);
	vhd_close(v);
	assert_int_equal(vhd_create_diff(P("mid.vhd"), P("base.vhd"), "./base.vhd"), 0);
	assert_int_equal(vhd_open(P("mid.vhd"), VHD_RDWR, &v), 0);
	write_tag(v, 2 * MiB, 2 * MiB, 0xa1); /* block 1 whole */
	write_tag(v, 4 * MiB + 4096, 4096, 0xa2);  /* part of block 2 */
	vhd_close(v);
	assert_int_equal(vhd_create_diff(P("leaf.vhd"), P("mid.vhd"), "mid.vhd"), 0);
	assert_check_ok(P("leaf.vhd"));

	assert_int_equal(vhd_chain_open(P("leaf.vhd"), VHD_RDWR, &c), 0);
	assert_int_equal(c.depth, 3);
	assert_string_equal(c.info[0].parent_path, "./mid.vhd");
	assert_string_equal(c.info[0].parent_name, "mid.vhd");
	assert_string_equal(c.info[1].parent_path, "./base.vhd");
	assert_memory_equal(c.info[0].parent_uuid, c.info[1].uuid, 16);
	assert_memory_equal(c.info[1].parent_uuid, c.info[2].uuid, 16);
	write_tag(c.v[0], 4 * MiB + 8192, 512, 0xc1);
	expect_chain(&c, 0, 2 * MiB, 0xb0);
	expect_chain(&c, 2 * MiB, 2 * MiB, 0xa1);
	expect_chain(&c, 4 * MiB, 4096, 0xb0);
	expect_chain(&c, 4 * MiB + 4096, 4096, 0xa2);
	expect_chain(&c, 4 * MiB + 8192, 512, 0xc1);
	expect_chain(&c, 4 * MiB + 8704, 2 * MiB - 8704, 0xb0);

	/* a leaf's unwritten sectors are zero and absent */
	uint8_t b[1024], present[1] = {0xff};
	assert_int_equal(vhd_pread(c.v[0], b, 1024, 4 * MiB + 8192, present), 0);
	assert_int_equal(b[0], 0xc1);
	assert_int_equal(b[512], 0);
	assert_int_equal(present[0] & 3, 1);

	struct vhd_ext e;
	assert_int_equal(vhd_chain_block(&c, 0, 0, &e), 0);
	assert_int_equal(e.kind, VHD_EXT_FILE);
	assert_int_equal(e.fd, vhd_fd(c.v[2]));
	assert_int_equal(vhd_chain_block(&c, 0, 1, &e), 0);
	assert_int_equal(e.kind, VHD_EXT_FILE);
	assert_int_equal(e.fd, vhd_fd(c.v[1]));
	uint8_t sec[512];
	assert_int_equal(pread(e.fd, sec, 512, (off_t)e.off), 512);
	assert_int_equal(sec[0], 0xa1);
	assert_int_equal(vhd_chain_block(&c, 0, 2, &e), 0);
	assert_int_equal(e.kind, VHD_EXT_MIXED);
	/* above the base (stop = 2: leaf and mid only) */
	assert_int_equal(vhd_chain_block(&c, 2, 0, &e), 0);
	assert_int_equal(e.kind, VHD_EXT_ZERO);
	assert_int_equal(vhd_chain_block(&c, 1, 1, &e), 0);
	assert_int_equal(e.kind, VHD_EXT_ZERO);
	assert_int_equal(vhd_chain_block(&c, 0, 4, &e), -EINVAL);
	vhd_chain_close(&c);

	/* a parent that is not the recorded one */
	rename(P("base.vhd"), P("base.old"));
	assert_int_equal(vhd_chain_open(P("leaf.vhd"), VHD_RDONLY, &c), -ENOENT);
	assert_int_equal(vhd_create_dynamic(P("base.vhd"), 8 * MiB, 0), 0);
	assert_int_equal(vhd_chain_open(P("leaf.vhd"), VHD_RDONLY, &c), -EINVAL);
	unlink(P("base.vhd"));
	rename(P("base.old"), P("base.vhd"));

	/* moving a chain: relative locators still find it; set_parent repoints */
	assert_int_equal(mkdir(P("sub"), 0755), 0);
	rename(P("base.vhd"), P("sub/base2.vhd"));
	assert_int_equal(vhd_open(P("mid.vhd"), VHD_RDWR, &v), 0);
	assert_int_equal(vhd_set_parent(v, P("sub/base2.vhd"), "sub/base2.vhd"), 0);
	assert_int_equal(vhd_set_parent(v, P("sub/base2.vhd"), "./sub/base2.vhd"), 0); /* the slots alternate */
	vhd_close(v);
	assert_check_ok(P("mid.vhd"));
	assert_int_equal(vhd_chain_open(P("leaf.vhd"), VHD_RDONLY, &c), 0);
	assert_int_equal(c.depth, 3);
	assert_string_equal(c.info[1].parent_path, "./sub/base2.vhd");
	assert_string_equal(c.info[1].parent_name, "base2.vhd");
	expect_chain(&c, 0, 2 * MiB, 0xb0);
	vhd_chain_close(&c);
	rename(P("sub/base2.vhd"), P("base.vhd"));
	rmdir(P("sub"));
}

static void test_hidden_resize(void **state)
{
	(void)state;
	struct vhd *v;
	struct vhd_info in;
	assert_int_equal(vhd_create_dynamic(P("h.vhd"), 4 * MiB, 0), 0);
	assert_int_equal(vhd_open(P("h.vhd"), VHD_RDWR, &v), 0);
	write_tag(v, 0, 4 * MiB, 0x44);
	assert_int_equal(vhd_set_hidden(v, true), 0);
	vhd_close(v);
	int fd = open(P("h.vhd"), O_RDONLY);
	uint8_t f[SEC];
	assert_int_equal(pread(fd, f, SEC, 0), SEC);
	close(fd);
	assert_int_equal(f[85], 1);
	assert_int_equal(f[84], 0);
	assert_check_ok(P("h.vhd"));

	/* grow within the BAT, then past it: blocks 0 and 1 move out of the way */
	assert_int_equal(vhd_open(P("h.vhd"), VHD_RDWR, &v), 0);
	vhd_get_info(v, &in);
	assert_true(in.hidden);
	assert_int_equal(vhd_resize(v, 2 * MiB), -EINVAL);
	assert_int_equal(vhd_resize(v, 4 * MiB + 512), 0);
	assert_int_equal(vhd_get_info(v, &in), 0);
	assert_int_equal(in.max_bat, 3);
	assert_int_equal(vhd_resize(v, 600 * MiB), 0);
	write_tag(v, 598 * MiB, 2 * MiB, 0x55);
	vhd_get_info(v, &in);
	assert_int_equal(in.virtual_size, 600 * MiB);
	assert_int_equal(in.max_bat, 300);
	vhd_close(v);
	assert_check_ok(P("h.vhd"));
	struct vhd_chain c;
	assert_int_equal(vhd_chain_open(P("h.vhd"), VHD_RDONLY, &c), 0);
	expect_chain(&c, 0, 4 * MiB, 0x44);
	expect_chain(&c, 4 * MiB, 2 * MiB, 0);
	expect_chain(&c, 598 * MiB, 2 * MiB, 0x55);
	assert_true(c.info[0].hidden);
	vhd_chain_close(&c);
}

/* ---- streams ----------------------------------------------------------------- */

struct mem {
	uint8_t *p;
	size_t len, cap, pos, limit;
};

static int mem_write(void *ctx, const void *buf, size_t len)
{
	struct mem *m = ctx;
	if (m->len + len > m->cap) {
		m->cap = (m->len + len) * 2;
		m->p = realloc(m->p, m->cap);
	}
	memcpy(m->p + m->len, buf, len);
	m->len += len;
	return 0;
}

static ssize_t mem_read(void *ctx, void *buf, size_t len)
{
	struct mem *m = ctx;
	size_t end = m->limit ? m->limit : m->len, n = end - m->pos < len ? end - m->pos : len;
	n = n > 3000 ? n - 1000 : n; /* short reads */
	memcpy(buf, m->p + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

static void test_streams(void **state)
{
	(void)state;
	struct vhd *v;
	struct vhd_chain c;
	assert_int_equal(vhd_create_dynamic(P("s0.vhd"), 9 * MiB, 0), 0);
	assert_int_equal(vhd_open(P("s0.vhd"), VHD_RDWR, &v), 0);
	write_tag(v, 0, MiB, 0x10);
	write_tag(v, 8 * MiB, MiB, 0x18);
	vhd_close(v);
	assert_int_equal(vhd_create_diff(P("s1.vhd"), P("s0.vhd"), "./s0.vhd"), 0);
	assert_int_equal(vhd_open(P("s1.vhd"), VHD_RDWR, &v), 0);
	write_tag(v, 512 * 1024, 512, 0x21);
	write_tag(v, 4 * MiB, 512, 0x24);
	vhd_close(v);
	assert_int_equal(vhd_chain_open(P("s1.vhd"), VHD_RDONLY, &c), 0);

	/* whole chain: 3 blocks (0, 2, 4) */
	struct mem m = {0};
	uint64_t size;
	assert_int_equal(vhd_export_size(&c, 0, &size), 0);
	assert_int_equal(vhd_export(&c, 0, mem_write, &m, NULL, NULL), 0);
	assert_int_equal(m.len, size);
	assert_int_equal(size, 1536 + 512 + 512 + 512 + 3 * (512 + 2 * MiB) + 512);
	assert_memory_equal(m.p, m.p + m.len - 512, 512);
	assert_int_equal(get32(m.p + F_TYPE), VHD_DYNAMIC);
	assert_int_equal(vhd_create_dynamic(P("imp.vhd"), 9 * MiB, 0), 0);
	assert_int_equal(vhd_open(P("imp.vhd"), VHD_RDWR, &v), 0);
	assert_int_equal(vhd_import(v, mem_read, &m, NULL, NULL), 0);
	vhd_close(v);
	struct vhd_chain d;
	uint8_t *a = malloc(9 * MiB), *b = malloc(9 * MiB);
	assert_int_equal(vhd_chain_open(P("imp.vhd"), VHD_RDONLY, &d), 0);
	assert_int_equal(vhd_chain_pread(&c, a, 9 * MiB, 0), 0);
	assert_int_equal(vhd_chain_pread(&d, b, 9 * MiB, 0), 0);
	assert_memory_equal(a, b, 9 * MiB);
	vhd_chain_close(&d);

	/* too large for the destination */
	assert_int_equal(vhd_create_dynamic(P("small.vhd"), 8 * MiB, 0), 0);
	assert_int_equal(vhd_open(P("small.vhd"), VHD_RDWR, &v), 0);
	m.pos = 0;
	assert_int_equal(vhd_import(v, mem_read, &m, NULL, NULL), -EFBIG);
	vhd_close(v);

	/* cut off in the third block: the first two arrive, then -EPIPE */
	assert_int_equal(vhd_create_dynamic(P("cut.vhd"), 9 * MiB, 0), 0);
	assert_int_equal(vhd_open(P("cut.vhd"), VHD_RDWR, &v), 0);
	m.pos = 0;
	m.limit = m.len - 512 - MiB;
	assert_int_equal(vhd_import(v, mem_read, &m, NULL, NULL), -EPIPE);
	vhd_close(v);
	m.limit = 0;
	assert_int_equal(vhd_chain_open(P("cut.vhd"), VHD_RDONLY, &d), 0);
	assert_int_equal(vhd_chain_pread(&d, b, 9 * MiB, 0), 0);
	assert_memory_equal(a, b, 8 * MiB);
	expect_chain(&d, 8 * MiB, MiB, 0);
	vhd_chain_close(&d);
	assert_check_ok(P("cut.vhd"));

	/* the delta above the base: a differencing disk naming s0 */
	free(m.p);
	memset(&m, 0, sizeof m);
	assert_int_equal(vhd_export_size(&c, 1, &size), 0);
	assert_int_equal(vhd_export(&c, 1, mem_write, &m, NULL, NULL), 0);
	assert_int_equal(m.len, size);
	assert_int_equal(get32(m.p + F_TYPE), VHD_DIFF);
	assert_memory_equal(m.p + SEC + H_PUUID, c.info[1].uuid, 16);
	int fd = open(P("delta.vhd"), O_CREAT | O_WRONLY | O_TRUNC, 0644);
	assert_int_equal(write(fd, m.p, m.len), (ssize_t)m.len);
	close(fd);
	assert_check_ok(P("delta.vhd"));
	assert_int_equal(vhd_chain_open(P("delta.vhd"), VHD_RDONLY, &d), 0);
	assert_int_equal(d.depth, 2);
	assert_int_equal(d.info[0].allocated, 2);
	assert_int_equal(vhd_chain_pread(&d, b, 9 * MiB, 0), 0);
	assert_memory_equal(a, b, 9 * MiB);
	vhd_chain_close(&d);
	vhd_chain_close(&c);

	/* coalesce s1 into s0: s0 alone then reads as the chain did */
	struct vhd *child, *parent;
	assert_int_equal(vhd_open(P("s1.vhd"), VHD_RDONLY, &child), 0);
	assert_int_equal(vhd_open(P("s0.vhd"), VHD_RDWR, &parent), 0);
	assert_int_equal(vhd_coalesce(child, parent, NULL, NULL), 0);
	assert_int_equal(vhd_coalesce(child, parent, NULL, NULL), 0);
	assert_int_equal(vhd_pread(parent, b, 9 * MiB, 0, NULL), 0);
	assert_memory_equal(a, b, 9 * MiB);
	vhd_close(child);
	vhd_close(parent);
	assert_check_ok(P("s0.vhd"));
	free(a);
	free(b);
	free(m.p);
}

/* ---- bad input ------------------------------------------------------------------- */

static void patch(const char *path, uint64_t off, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY);
	assert_int_equal(pwrite(fd, bytes, len, (off_t)off), (ssize_t)len);
	close(fd);
}

/* rewrite the footer (both copies) or header with a field changed and a good checksum */
static void patch_footer(const char *path, size_t at, uint32_t val)
{
	int fd = open(path, O_RDWR);
	off_t end = lseek(fd, 0, SEEK_END) - SEC;
	uint8_t f[SEC];
	assert_int_equal(pread(fd, f, SEC, 0), SEC);
	put32(f + at, val);
	footer_seal(f);
	assert_int_equal(pwrite(fd, f, SEC, 0), SEC);
	assert_int_equal(pwrite(fd, f, SEC, end), SEC);
	close(fd);
}

static void patch_header(const char *path, size_t at, uint32_t val)
{
	int fd = open(path, O_RDWR);
	uint8_t h[1024];
	assert_int_equal(pread(fd, h, 1024, SEC), 1024);
	put32(h + at, val);
	header_seal(h);
	assert_int_equal(pwrite(fd, h, 1024, SEC), 1024);
	close(fd);
}

static void expect_bad(const char *path, const char *why_part)
{
	char why[200];
	struct vhd *v;
	assert_int_equal(vhd_check(path, why, sizeof why), -EINVAL);
	if (!strstr(why, why_part))
		fail_msg("reason \"%s\" lacks \"%s\"", why, why_part);
	assert_int_equal(vhd_open(path, VHD_RDONLY, &v), -EINVAL);
}

static void fresh(const char *name)
{
	struct vhd *v;
	unlink(P(name));
	assert_int_equal(vhd_create_dynamic(P(name), 6 * MiB, 0), 0);
	assert_int_equal(vhd_open(P(name), VHD_RDWR, &v), 0);
	write_tag(v, 0, 512, 1);
	write_tag(v, 2 * MiB, 512, 2);
	vhd_close(v);
}

static void test_bad_input(void **state)
{
	(void)state;
	uint8_t junk[4] = {1, 2, 3, 4};
	uint64_t blocks = 3072; /* first block of fresh() */
	fresh("x.vhd");
	patch(P("x.vhd"), 70, junk, 1);
	expect_bad(P("x.vhd"), "footer copy");
	fresh("x.vhd");
	patch(P("x.vhd"), SEC + 100, junk, 1);
	expect_bad(P("x.vhd"), "header");
	fresh("x.vhd");
	patch_footer(P("x.vhd"), F_CUR + 4, 0x7fffffff);
	expect_bad(P("x.vhd"), "virtual size");
	fresh("x.vhd");
	patch_footer(P("x.vhd"), F_CUR, 0x100); /* 1 TiB: the BAT is too small */
	expect_bad(P("x.vhd"), "BAT");
	fresh("x.vhd");
	patch_header(P("x.vhd"), H_MAXBAT, 0x7fffffff);
	expect_bad(P("x.vhd"), "BAT");
	fresh("x.vhd");
	patch_header(P("x.vhd"), H_BS, 3 * MiB);
	expect_bad(P("x.vhd"), "block size");
	fresh("x.vhd");
	patch_header(P("x.vhd"), H_TABLE, 0x7ffffe00);
	expect_bad(P("x.vhd"), "BAT outside");
	/* BAT entries: outside the file, overlapping each other, over the header */
	uint8_t e[4];
	fresh("x.vhd");
	put32(e, 0x00ffffff);
	patch(P("x.vhd"), 1536 + 4, e, 4);
	expect_bad(P("x.vhd"), "outside");
	fresh("x.vhd");
	put32(e, (uint32_t)(blocks / 512 + 1));
	patch(P("x.vhd"), 1536 + 4, e, 4);
	expect_bad(P("x.vhd"), "overlap");
	fresh("x.vhd");
	put32(e, 1);
	patch(P("x.vhd"), 1536 + 4, e, 4);
	expect_bad(P("x.vhd"), "overlap");
	fresh("x.vhd");
	put32(e, 2);
	patch(P("x.vhd"), 1536, e, 4);
	put32(e, 0xffffffff);
	patch(P("x.vhd"), 1536 + 4, e, 4);
	expect_bad(P("x.vhd"), "overlaps the header");
	/* a truncated file */
	fresh("x.vhd");
	assert_int_equal(truncate(P("x.vhd"), 4000), 0);
	expect_bad(P("x.vhd"), "");
	assert_int_equal(truncate(P("x.vhd"), 100), 0);
	expect_bad(P("x.vhd"), "small");

	/* a parent locator pointing outside the file */
	unlink(P("xp.vhd"));
	unlink(P("xc.vhd"));
	assert_int_equal(vhd_create_dynamic(P("xp.vhd"), 4 * MiB, 0), 0);
	assert_int_equal(vhd_create_diff(P("xc.vhd"), P("xp.vhd"), "./xp.vhd"), 0);
	patch_header(P("xc.vhd"), H_LOC + L_OFF + 4, 0x7ffff000);
	expect_bad(P("xc.vhd"), "locator");
}

/* a chain that loops: x's parent is y, whose parent claims x's identity */
static void test_loops_and_depth(void **state)
{
	(void)state;
	struct vhd_chain c;
	assert_int_equal(vhd_create_dynamic(P("lx.vhd"), 4 * MiB, 0), 0);
	assert_int_equal(vhd_create_diff(P("ly.vhd"), P("lx.vhd"), "./lx.vhd"), 0);
	assert_int_equal(vhd_create_diff(P("lz.vhd"), P("ly.vhd"), "./ly.vhd"), 0);
	uint8_t f[SEC];
	int fd = open(P("lx.vhd"), O_RDONLY);
	assert_int_equal(pread(fd, f, SEC, 0), SEC);
	close(fd);
	patch_footer(P("lz.vhd"), F_UUID, get32(f + F_UUID));
	patch_footer(P("lz.vhd"), F_UUID + 4, get32(f + F_UUID + 4));
	patch_footer(P("lz.vhd"), F_UUID + 8, get32(f + F_UUID + 8));
	patch_footer(P("lz.vhd"), F_UUID + 12, get32(f + F_UUID + 12));
	rename(P("lz.vhd"), P("lx.vhd"));
	assert_int_equal(vhd_chain_open(P("ly.vhd"), VHD_RDONLY, &c), -EINVAL);

	/* VHD_CHAIN_MAX images open, one more does not */
	char prev[32] = "d0.vhd", cur[32];
	assert_int_equal(vhd_create_dynamic(P(prev), 4 * MiB, 0), 0);
	for (int i = 1; i <= VHD_CHAIN_MAX; i++) {
		snprintf(cur, sizeof cur, "d%d.vhd", i);
		assert_int_equal(vhd_create_diff(P(cur), P(prev), prev), 0);
		memcpy(prev, cur, sizeof cur);
	}
	assert_int_equal(vhd_chain_open(P("d63.vhd"), VHD_RDONLY, &c), 0);
	assert_int_equal(c.depth, VHD_CHAIN_MAX);
	vhd_chain_close(&c);
	assert_int_equal(vhd_chain_open(P("d64.vhd"), VHD_RDONLY, &c), -EINVAL);
}

/* ---- crashes ------------------------------------------------------------------------
 * Every write, sync and truncate of the image under test is recorded.  At each
 * sync, the files a crash could leave are built: the state at the previous sync
 * plus every prefix of the writes since, each single one of them, and all
 * but one.  Each must pass vhd_check, and every sector must read as its last
 * flushed value or as the value written since. */

struct op { enum io_op op; uint64_t off; size_t len; uint8_t *data; };

static struct {
	int fd;
	uint8_t *disk; /* contents at the last sync */
	size_t size, cap;
	struct op ops[4096];
	int nops;
	/* the model, one tag per sector of the first `sectors` */
	uint8_t *flushed, *pending;
	uint32_t sectors;
	const char *image; /* path of the crash image; its parent lies beside it */
	int images;
	char variant[64];
} cr;

static void apply(uint8_t **disk, size_t *size, const struct op *o)
{
	if (o->op == IO_TRUNC) {
		if (o->off > *size)
			memset(*disk + *size, 0, o->off - *size);
		*size = o->off;
	} else if (o->op == IO_WRITE) {
		if (o->off > *size)
			memset(*disk + *size, 0, o->off - *size);
		memcpy(*disk + o->off, o->data, o->len);
		if (o->off + o->len > *size)
			*size = o->off + o->len;
	}
}

static void check_crash_image(const uint8_t *disk, size_t size)
{
	int fd = open(cr.image, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	assert_int_equal(write(fd, disk, size), (ssize_t)size);
	close(fd);
	assert_check_ok(cr.image);
	struct vhd_chain c;
	assert_int_equal(vhd_chain_open(cr.image, VHD_RDONLY, &c), 0);
	/* before the first resize reached the disk, the disk is smaller */
	uint32_t n = c.info[0].virtual_size / SEC < cr.sectors ? (uint32_t)(c.info[0].virtual_size / SEC) : cr.sectors;
	uint8_t *s = malloc((size_t)cr.sectors * SEC);
	assert_int_equal(vhd_chain_pread(&c, s, (size_t)n * SEC, 0), 0);
	for (uint32_t i = 0; i < n; i++) {
		uint8_t got = s[(size_t)i * SEC];
		if (got != cr.flushed[i] && got != cr.pending[i])
		{
			for (int k = 0; k < cr.nops; k++)
				print_message("op %d: %d off %llu len %zu\n", k, cr.ops[k].op, (unsigned long long)cr.ops[k].off, cr.ops[k].len);
			fail_msg("crash image %d (%s): sector %u reads %u, flushed %u, written %u", cr.images, cr.variant, i, got,
				 cr.flushed[i], cr.pending[i]);
		}
	}
	free(s);
	vhd_chain_close(&c);
	cr.images++;
}

static void crash_points(void)
{
	size_t cap = cr.cap;
	uint8_t *d = malloc(cap);
	for (int k = 0; k <= cr.nops; k++) { /* prefixes */
		size_t size = cr.size;
		memcpy(d, cr.disk, cr.size);
		for (int i = 0; i < k; i++)
			apply(&d, &size, &cr.ops[i]);
		snprintf(cr.variant, sizeof cr.variant, "prefix %d", k);
		check_crash_image(d, size);
	}
	for (int k = 0; k < cr.nops; k++) { /* one alone, all but one */
		for (int mode = 0; mode < 2; mode++) {
			size_t size = cr.size;
			memcpy(d, cr.disk, cr.size);
			for (int i = 0; i < cr.nops; i++)
				if ((i == k) == (mode == 0))
					apply(&d, &size, &cr.ops[i]);
			snprintf(cr.variant, sizeof cr.variant, "%s %d", mode ? "all but" : "only", k);
			check_crash_image(d, size);
		}
	}
	free(d);
}

static void record(int fd, enum io_op op, const void *buf, size_t len, uint64_t off)
{
	if (fd != cr.fd)
		return;
	if (op == IO_SYNC) {
		crash_points();
		for (int i = 0; i < cr.nops; i++) {
			apply(&cr.disk, &cr.size, &cr.ops[i]);
			free(cr.ops[i].data);
		}
		cr.nops = 0;
		return;
	}
	assert_true(cr.nops < 4096);
	assert_true(off + len <= cr.cap);
	struct op *o = &cr.ops[cr.nops++];
	*o = (struct op){op, off, len, NULL};
	if (op == IO_WRITE) {
		o->data = malloc(len);
		memcpy(o->data, buf, len);
	}
}

static void track(struct vhd *v)
{
	struct stat st;
	fstat(v->fd, &st);
	cr.fd = v->fd;
	cr.size = (size_t)st.st_size;
	assert_int_equal(pread(v->fd, cr.disk, cr.size, 0), (ssize_t)cr.size);
	cr.nops = 0;
	io_hook = record;
}

static void model_write(struct vhd *v, uint32_t sector, uint32_t n, uint8_t tag)
{
	write_tag(v, (uint64_t)sector * SEC, (size_t)n * SEC, tag);
	memset(cr.pending + sector, tag, n);
}

static void model_flush(struct vhd *v)
{
	assert_int_equal(vhd_flush(v), 0);
	memcpy(cr.flushed, cr.pending, cr.sectors);
}

static void crash_workload(const char *name, bool diff)
{
	struct vhd *v;
	cr.sectors = 6 * MiB / SEC;
	cr.flushed = malloc(cr.sectors);
	cr.pending = malloc(cr.sectors);
	cr.cap = 48 * MiB;
	reserve_blocks = 2;
	cr.disk = malloc(cr.cap);
	cr.image = P("crash.vhd");
	memset(cr.flushed, 0, cr.sectors);
	if (diff) {
		/* a parent with data everywhere: a child's lost bitmap bit must not
		 * show zeros instead of it */
		assert_int_equal(vhd_create_dynamic(P("cp.vhd"), 6 * MiB, 0), 0);
		assert_int_equal(vhd_open(P("cp.vhd"), VHD_RDWR, &v), 0);
		write_tag(v, 0, 6 * MiB, 0x70);
		vhd_close(v);
		memset(cr.flushed, 0x70, cr.sectors);
		assert_int_equal(vhd_create_diff(P(name), P("cp.vhd"), "./cp.vhd"), 0);
	} else {
		assert_int_equal(vhd_create_dynamic(P(name), 6 * MiB, 4 * MiB), -EINVAL);
		assert_int_equal(vhd_create_dynamic(P(name), 4 * MiB, 0), 0);
	}
	memcpy(cr.pending, cr.flushed, cr.sectors);
	assert_int_equal(vhd_open(P(name), VHD_RDWR, &v), 0);
	track(v);
	if (!diff) {
		assert_int_equal(vhd_resize(v, 6 * MiB), 0);
	}
	model_write(v, 1, 2, 0x11);     /* a new partial block */
	model_write(v, 4096, 4096, 0x12); /* a new whole block */
	model_flush(v);
	model_write(v, 3, 1, 0x13);      /* more bits in a partial block */
	model_write(v, 4096 + 8, 8, 0x14); /* overwrite in a full block */
	model_write(v, 8192 + 100, 50, 0x15);
	model_flush(v);
	if (!diff) /* the BAT grows past its sector: blocks move */
		assert_int_equal(vhd_resize(v, 400 * MiB), 0);
	model_write(v, 200, 10, 0x16);
	vhd_close(v); /* commit, trim */
	memcpy(cr.flushed, cr.pending, cr.sectors);
	io_hook = NULL;
	reserve_blocks = RESERVE_BLOCKS;
	assert_true(cr.images > 20);
	check_crash_image(cr.disk, cr.size);
	free(cr.flushed);
	free(cr.pending);
	free(cr.disk);
}

static void test_crash_dynamic(void **state)
{
	(void)state;
	crash_workload("crash-dyn.vhd", false);
}

static void test_crash_diff(void **state)
{
	(void)state;
	crash_workload("crash-diff.vhd", true);
}

/* ---- speed -------------------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int null_write(void *ctx, const void *buf, size_t len)
{
	(void)buf;
	*(uint64_t *)ctx += len;
	return 0;
}

static void test_speed(void **state)
{
	(void)state;
	struct vhd *v;
	struct vhd_chain c;
	/* a differencing disk over a 100 GiB parent */
	assert_int_equal(vhd_create_dynamic(P("big.vhd"), 100ull << 30, 0), 0);
	double t0 = now_s();
	assert_int_equal(vhd_create_diff(P("big-child.vhd"), P("big.vhd"), "./big.vhd"), 0);
	double t_diff = now_s() - t0;
	/* sequential writes of 1 MiB, 256 MiB in all */
	uint8_t *buf = malloc(MiB);
	memset(buf, 0x5a, MiB);
	assert_int_equal(vhd_create_dynamic(P("seq.vhd"), 10ull << 30, 0), 0);
	assert_int_equal(vhd_open(P("seq.vhd"), VHD_RDWR, &v), 0);
	t0 = now_s();
	for (int i = 0; i < 256; i++)
		assert_int_equal(vhd_pwrite(v, buf, MiB, (uint64_t)i * MiB), 0);
	assert_int_equal(commit(v), 0);
	double t_write = now_s() - t0;
	vhd_close(v);
	/* export of a sparse 10 GiB disk */
	assert_int_equal(vhd_chain_open(P("seq.vhd"), VHD_RDONLY, &c), 0);
	uint64_t n = 0, size;
	t0 = now_s();
	assert_int_equal(vhd_export(&c, 0, null_write, &n, NULL, NULL), 0);
	double t_export = now_s() - t0;
	assert_int_equal(vhd_export_size(&c, 0, &size), 0);
	assert_int_equal(n, size);
	vhd_chain_close(&c);
	printf("vhd_create_diff over 100 GiB: %.2f ms\n", t_diff * 1e3);
	printf("vhd_pwrite sequential 1 MiB: %.0f MB/s (256 MiB, one fdatasync per 64 blocks + commit)\n",
	       256 * 1.048576 / t_write);
	printf("vhd_export 10 GiB with 256 MiB allocated: %.0f ms\n", t_export * 1e3);
	assert_true(t_diff < 0.5); /* generous: the disk here is shared */
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_layout),
		cmocka_unit_test(test_read_write),
		cmocka_unit_test(test_chain),
		cmocka_unit_test(test_hidden_resize),
		cmocka_unit_test(test_streams),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_loops_and_depth),
		cmocka_unit_test(test_crash_dynamic),
		cmocka_unit_test(test_crash_diff),
		cmocka_unit_test(test_speed),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
