/* sm_iso.c — the "iso" SR: a directory of ISO images, each a read-only VDI
 * (location = name_label = the file name, virtual_size = the file size), as
 * the original's ISOSR: regular files named *.iso or *.img (any case) with
 * UTF-8 names.  Nothing is created, resized or snapshotted here. */
#include "sm/sm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"

static bool iso_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (name[0] == '.' || n < 5 || n >= SM_LOC_MAX || strchr(name, '/'))
		return false;
	if (strcasecmp(name + n - 4, ".iso") != 0 && strcasecmp(name + n - 4, ".img") != 0)
		return false;
	return util_utf8_valid(name, n);
}

/* The VDI of the file name in dir; -ENOENT if it is not an ISO image. */
static int iso_stat(const char *dir, const char *name, struct sm_vdi *out)
{
	char path[4096];
	struct stat st;
	if (!iso_name_ok(name))
		return -ENOENT;
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	snprintf(out->location, sizeof(out->location), "%s", name);
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->virtual_size = (uint64_t)st.st_size;
	out->physical_utilisation = (uint64_t)st.st_blocks * 512;
	out->read_only = true;
	return 0;
}

static int iso_sr_create(const char *uuid, const char *dir, uint64_t physical_size)
{
	return util_mkdir_p(dir, 0755);
}

static int iso_sr_delete(struct sm_sr *sr)
{
	return 0; /* the images are the user's: an ISO SR owns no files */
}

static int iso_attach(struct sm_sr *sr)
{
	struct stat st;
	if (stat(sr->path, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	pthread_mutex_init(&sr->lock, NULL);
	sr->priv = NULL;
	return 0;
}

static void iso_detach(struct sm_sr *sr)
{
	pthread_mutex_destroy(&sr->lock);
}

static int iso_probe(const char *dir, char **xml)
{
	return -EOPNOTSUPP;
}

/* Calls each() for every image of the directory; the sum of their sizes
 * goes to *bytes when it is not NULL. */
static int iso_each(struct sm_sr *sr, int (*each)(void *ctx, const struct sm_vdi *v), void *ctx,
		    uint64_t *bytes)
{
	DIR *d = opendir(sr->path);
	if (!d)
		return -errno;
	int r = 0;
	struct dirent *e;
	while (r == 0 && (e = readdir(d))) {
		struct sm_vdi v;
		if (iso_stat(sr->path, e->d_name, &v) < 0)
			continue;
		if (bytes)
			*bytes += v.physical_utilisation;
		if (each)
			r = each(ctx, &v);
	}
	closedir(d);
	return r;
}

static int iso_space(struct sm_sr *sr, uint64_t *size, uint64_t *utilisation)
{
	*utilisation = 0;
	int r = iso_each(sr, NULL, NULL, utilisation);
	return r < 0 ? r : sm_fs_size(sr->path, sr->physical_size, size);
}

static int iso_scan(struct sm_sr *sr, int (*each)(void *ctx, const struct sm_vdi *v), void *ctx)
{
	return iso_each(sr, each, ctx, NULL);
}

static int iso_vdi_create(struct sm_sr *sr, uint64_t size, struct sm_vdi *out)
{
	return -EOPNOTSUPP;
}

static int iso_vdi_delete(struct sm_sr *sr, const char *location)
{
	return -EOPNOTSUPP;
}

static int iso_vdi_snapshot(struct sm_sr *sr, const char *location, struct sm_vdi *out,
			    struct sm_vdi *base)
{
	return -EOPNOTSUPP;
}

static int iso_vdi_resize(struct sm_sr *sr, const char *location, uint64_t size, struct sm_vdi *out)
{
	return -EOPNOTSUPP;
}

static int iso_vdi_stat(struct sm_sr *sr, const char *location, struct sm_vdi *out)
{
	return iso_stat(sr->path, location, out);
}

static int iso_vdi_open(struct sm_sr *sr, const char *location, bool write, struct sm_image *img)
{
	struct sm_vdi v;
	char path[4096];
	if (write)
		return -EROFS;
	int r = iso_stat(sr->path, location, &v);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/%s", sr->path, location);
	memset(img, 0, sizeof(*img));
	img->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (img->fd < 0)
		return -errno;
	img->format = SM_RAW;
	img->virtual_size = v.virtual_size;
	img->sr = sr;
	snprintf(img->location, sizeof(img->location), "%s", location);
	return 0;
}

static int iso_gc(struct sm_sr *sr, sm_progress_fn p, void *pctx)
{
	return 0;
}

const struct sm_driver sm_iso_driver = {
	.type = "iso",
	.content_type = "iso",
	.sr_create = iso_sr_create,
	.sr_delete = iso_sr_delete,
	.attach = iso_attach,
	.detach = iso_detach,
	.probe = iso_probe,
	.space = iso_space,
	.scan = iso_scan,
	.vdi_create = iso_vdi_create,
	.vdi_delete = iso_vdi_delete,
	.vdi_snapshot = iso_vdi_snapshot,
	.vdi_resize = iso_vdi_resize,
	.vdi_stat = iso_vdi_stat,
	.vdi_open = iso_vdi_open,
	.vdi_close = sm_image_release,
	.gc = iso_gc,
};
