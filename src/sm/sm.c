/* sm.c — the driver table and what the drivers share: I/O on an opened
 * image (a raw file or a VHD chain) and space accounting.  See
 * docs/storage.md. */
#include "sm/sm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/util.h"

void (*sm_test_step)(const char *where);

const struct sm_driver *sm_driver_find(const char *type)
{
	static const struct sm_driver *const drivers[] = {&sm_file_driver, &sm_iso_driver};
	for (size_t i = 0; type && i < sizeof(drivers) / sizeof(drivers[0]); i++)
		if (strcmp(drivers[i]->type, type) == 0)
			return drivers[i];
	return NULL;
}

/* ---- space ------------------------------------------------------------------- */

int sm_fs_size(const char *dir, uint64_t configured, uint64_t *size)
{
	struct statvfs st;
	if (configured) {
		*size = configured;
		return 0;
	}
	if (statvfs(dir, &st) < 0)
		return -errno;
	*size = (uint64_t)st.f_blocks * st.f_frsize;
	return 0;
}

int sm_fs_fits(const char *dir, uint64_t bytes)
{
	struct statvfs st;
	if (statvfs(dir, &st) < 0)
		return -errno;
	return bytes <= (uint64_t)st.f_bavail * st.f_frsize ? 0 : -ENOSPC;
}

int sm_dir_sync(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* ---- I/O on an opened image ------------------------------------------------ */

static int raw_pread(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) /* the file shrank under us: what is gone reads as zeros */
			return memset(p, 0, len), 0;
		p += n, len -= (size_t)n, off += (uint64_t)n;
	}
	return 0;
}

static int raw_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n, len -= (size_t)n, off += (uint64_t)n;
	}
	return 0;
}

static bool in_range(const struct sm_image *img, size_t len, uint64_t off)
{
	return off <= img->virtual_size && len <= img->virtual_size - off;
}

/* The sector-aligned range that covers [off, off+len). */
static void cover(size_t len, uint64_t off, uint64_t *a_off, size_t *a_len)
{
	*a_off = off / VHD_SECTOR * VHD_SECTOR;
	uint64_t end = (off + len + VHD_SECTOR - 1) / VHD_SECTOR * VHD_SECTOR;
	*a_len = (size_t)(end - *a_off);
}

static bool aligned(size_t len, uint64_t off)
{
	return off % VHD_SECTOR == 0 && len % VHD_SECTOR == 0;
}

int sm_image_pread(struct sm_image *img, void *buf, size_t len, uint64_t off)
{
	if (!in_range(img, len, off))
		return -EINVAL;
	if (len == 0)
		return 0;
	if (img->format == SM_RAW)
		return raw_pread(img->fd, buf, len, off);
	if (aligned(len, off)) {
		int r = vhd_chain_pread(&img->chain, buf, len, off);
		return r < 0 ? r : 0;
	}
	uint64_t a_off;
	size_t a_len;
	cover(len, off, &a_off, &a_len);
	char *b = util_malloc(a_len);
	int r = vhd_chain_pread(&img->chain, b, a_len, a_off);
	if (r >= 0)
		memcpy(buf, b + (off - a_off), len), r = 0;
	free(b);
	return r;
}

/* Bytes the blocks of [off, off+len) not yet allocated in the leaf would
 * add to its file: each a sector bitmap and the block, and the footer
 * moved after them. */
static int vhd_growth(struct sm_image *img, size_t len, uint64_t off, uint64_t *need)
{
	struct vhd *leaf = img->chain.v[0];
	uint32_t bs = img->chain.info[0].block_size;
	uint64_t bitmap = ((uint64_t)bs / VHD_SECTOR / 8 + VHD_SECTOR - 1) / VHD_SECTOR * VHD_SECTOR;
	*need = 0;
	for (uint64_t b = off / bs; b <= (off + len - 1) / bs; b++) {
		uint64_t data_off;
		bool full;
		int r = vhd_block(leaf, (uint32_t)b, &data_off, &full);
		if (r < 0)
			return r;
		if (!data_off)
			*need += bitmap + bs;
	}
	if (*need)
		*need += VHD_SECTOR;
	return 0;
}

int sm_image_pwrite(struct sm_image *img, const void *buf, size_t len, uint64_t off)
{
	if (!img->write)
		return -EROFS;
	if (!in_range(img, len, off))
		return -EINVAL;
	if (len == 0)
		return 0;
	if (img->format == SM_RAW)
		return raw_pwrite(img->fd, buf, len, off);
	uint64_t need;
	int r = vhd_growth(img, len, off, &need);
	if (r == 0 && need && img->sr)
		r = sm_fs_fits(img->sr->path, need);
	if (r < 0)
		return r;
	if (aligned(len, off)) {
		r = vhd_pwrite(img->chain.v[0], buf, len, off);
		return r < 0 ? r : 0;
	}
	/* read-modify-write of the partial sectors, through the chain */
	uint64_t a_off;
	size_t a_len;
	cover(len, off, &a_off, &a_len);
	char *b = util_malloc(a_len);
	r = vhd_chain_pread(&img->chain, b, VHD_SECTOR, a_off);
	if (r >= 0 && a_len > VHD_SECTOR)
		r = vhd_chain_pread(&img->chain, b + a_len - VHD_SECTOR, VHD_SECTOR,
				    a_off + a_len - VHD_SECTOR);
	if (r >= 0) {
		memcpy(b + (off - a_off), buf, len);
		r = vhd_pwrite(img->chain.v[0], b, a_len, a_off);
	}
	free(b);
	return r < 0 ? r : 0;
}

int sm_image_flush(struct sm_image *img)
{
	if (!img->write)
		return 0;
	if (img->format == SM_RAW)
		return fdatasync(img->fd) < 0 ? -errno : 0;
	return vhd_flush(img->chain.v[0]);
}

void sm_image_release(struct sm_image *img)
{
	if (img->format == SM_RAW) {
		if (img->fd >= 0)
			close(img->fd);
		img->fd = -1;
	} else if (img->chain.depth > 0) {
		vhd_chain_close(&img->chain);
		img->chain.depth = 0;
	}
}

void sm_image_close(struct sm_image *img)
{
	if (!img)
		return;
	if (img->sr && img->sr->drv && img->sr->drv->vdi_close)
		img->sr->drv->vdi_close(img);
	else
		sm_image_release(img);
}
