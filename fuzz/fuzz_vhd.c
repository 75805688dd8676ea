/* fuzz_vhd.c — arbitrary bytes as a VHD file (and as a VHD stream).
 *
 * Every input goes through vhd_check, vhd_open and reads, vhd_chain_open,
 * vhd_chain_pread/vhd_chain_block, vhd_export and vhd_import.  An image that
 * vhd_check passes is also opened read-write and written to; it must still
 * pass vhd_check afterwards (else abort: a finding).  Files live in a
 * private directory, on /dev/shm when there is one (syncs cost nothing). */
#include "vhd/vhd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64], in_path[96], dst_path[96];

static void init(void)
{
	if (dir[0])
		return;
	snprintf(dir, sizeof dir, "%s/fuzz_vhd.XXXXXX", access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm");
	if (!mkdtemp(dir))
		abort();
	snprintf(in_path, sizeof in_path, "%s/in.vhd", dir);
	snprintf(dst_path, sizeof dst_path, "%s/dst.vhd", dir);
}

struct mem { const uint8_t *p; size_t len, pos; };

static ssize_t mem_read(void *ctx, void *buf, size_t len)
{
	struct mem *m = ctx;
	size_t n = m->len - m->pos < len ? m->len - m->pos : len;
	memcpy(buf, m->p + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

static int count_write(void *ctx, const void *buf, size_t len)
{
	(void)buf;
	*(uint64_t *)ctx += len;
	return 0;
}

static uint8_t buf[1 << 20];

static void reads(struct vhd_chain *c)
{
	uint64_t size = c->info[0].virtual_size, n = size < sizeof buf ? size : sizeof buf;
	if (vhd_chain_pread(c, buf, n, 0) || vhd_chain_pread(c, buf, 512, size - 512))
		abort(); /* a chain that opened reads */
	struct vhd_ext e;
	uint32_t blocks = (uint32_t)((size + c->info[0].block_size - 1) / c->info[0].block_size);
	for (uint32_t b = 0; b < blocks && b < 8; b++)
		vhd_chain_block(c, 0, b, &e);
	uint64_t want, got = 0;
	if (!vhd_export_size(c, 0, &want) && want < (64u << 20) && !vhd_export(c, 0, count_write, &got, NULL, NULL) &&
	    got != want)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init();
	int fd = open(in_path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);

	char why[256];
	bool sound = vhd_check(in_path, why, sizeof why) == 0;
	struct vhd *v;
	if (vhd_open(in_path, VHD_RDONLY, &v) == 0) {
		struct vhd_info in;
		uint64_t off;
		bool full;
		vhd_get_info(v, &in);
		vhd_pread(v, buf, in.virtual_size < 65536 ? in.virtual_size : 65536, 0, buf + 65536);
		vhd_block(v, 0, &off, &full);
		vhd_close(v);
	}
	struct vhd_chain *c = malloc(sizeof *c);
	if (c && vhd_chain_open(in_path, VHD_RDONLY, c) == 0) {
		reads(c);
		vhd_chain_close(c);
	}
	free(c);

	/* as a stream into a fresh 64 MiB disk */
	unlink(dst_path);
	if (vhd_create_dynamic(dst_path, 64u << 20, 0) == 0 && vhd_open(dst_path, VHD_RDWR, &v) == 0) {
		struct mem m = {data, size, 0};
		vhd_import(v, mem_read, &m, NULL, NULL);
		vhd_close(v);
		if (vhd_check(dst_path, why, sizeof why))
			abort();
	}

	/* a sound image stays sound through writes */
	if (sound && vhd_open(in_path, VHD_RDWR, &v) == 0) {
		struct vhd_info in;
		vhd_get_info(v, &in);
		memset(buf, 0xa5, 4096);
		vhd_pwrite(v, buf, 4096 < in.virtual_size ? 4096 : 512, 0);
		vhd_pwrite(v, buf, 512, in.virtual_size - 512);
		vhd_set_hidden(v, !in.hidden);
		vhd_flush(v);
		vhd_close(v);
		if (vhd_check(in_path, why, sizeof why)) {
			fprintf(stderr, "sound image broken by writes: %s\n", why);
			abort();
		}
	}
	return 0;
}
