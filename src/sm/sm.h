/* sm.h — storage drivers: one table of operations per SR type, one file per
 * driver (sm_file.c: VHD images in a directory; sm_iso.c: a directory of ISO
 * files).  Drivers know files, not the database: the API layer
 * (src/api/storage.c) keeps the SR, PBD and VDI rows, decides what is
 * allowed, and calls these.  Every call may block (disk I/O, fsync); they run
 * on worker threads, never on the loop thread.  A driver serialises what it
 * must per SR itself (struct sm_sr.lock).
 *
 * All functions return 0 (or a count) or -errno:
 *   -ENOSPC  SR_FULL        -ENOENT  VDI_MISSING / SR not found
 *   -EBUSY   VDI_IN_USE     -EROFS   VDI_READONLY / read-only SR
 *   -EINVAL  bad argument or corrupt image (logged with the reason)
 *   -ECANCELED  the progress callback asked to stop
 *   -EOPNOTSUPP  the driver lacks the operation (SR_OPERATION_NOT_SUPPORTED)
 *   -ENOTEMPTY  SR_NOT_EMPTY (sr_delete found VDIs that are not hidden)
 *   -EMLINK  the VHD chain is too long to snapshot (the original's
 *            SR_BACKEND_FAILURE_109 "SnapshotChainTooLong")
 */
#ifndef CX_SM_H
#define CX_SM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "vhd/vhd.h"

#define SM_LOC_MAX 256

/* A VDI as the driver sees it.  location is the driver's name for it: the
 * file SR's VDI file is <dir>/<location>.vhd (location a uuid); the ISO SR's
 * is <dir>/<location> (the file name). */
struct sm_vdi {
	char location[SM_LOC_MAX];
	char parent[SM_LOC_MAX];    /* the parent's location, "" if none (sm_config vhd-parent) */
	uint64_t virtual_size;
	uint64_t physical_utilisation;
	bool read_only;
	bool hidden;                /* a base copy kept for its children; not managed */
	char name[SM_LOC_MAX];      /* a suggested name_label ("" = none); the ISO SR gives the file name */
};

/* An attached SR (a plugged PBD).  The caller fills drv, uuid, path and
 * physical_size; attach() initialises lock and priv, detach() destroys them
 * (sr_create, sr_delete and probe need neither). */
struct sm_sr {
	const struct sm_driver *drv;
	char uuid[40];
	char *path;                 /* device_config:location */
	uint64_t physical_size;     /* 0: the filesystem's size */
	pthread_mutex_t lock;       /* held by the driver around metadata changes */
	void *priv;                 /* the driver's */
};

/* progress: fraction in [0,1]; a nonzero return cancels (-ECANCELED). */
typedef int (*sm_progress_fn)(void *ctx, double fraction);

/* What a transfer reads or writes: a raw file or a VHD chain. */
enum sm_format { SM_RAW, SM_VHD };
struct sm_image {
	enum sm_format format;
	uint64_t virtual_size;
	int fd;                     /* SM_RAW: the file, opened read-only or read-write */
	struct vhd_chain chain;     /* SM_VHD: leaf first (read-write when opened for writing) */
	struct sm_sr *sr;
	char location[SM_LOC_MAX];
	bool write;
};

struct sm_driver {
	const char *type;           /* SR.type: "file", "iso" */
	const char *content_type;   /* default SR.content_type: "user", "iso" */

	/* SR.create: make what the SR needs at device_config:location (dir),
	 * e.g. create the directory; fails with -EEXIST if it holds another SR. */
	int (*sr_create)(const char *uuid, const char *dir, uint64_t physical_size);
	/* SR.destroy: remove the SR's own files (the API checked it has no VDIs
	 * left other than hidden ones, as the original). */
	int (*sr_delete)(struct sm_sr *sr);
	/* PBD.plug / unplug: check and open the directory; detach stops any
	 * background work of this SR (waits for it). */
	int (*attach)(struct sm_sr *sr);
	void (*detach)(struct sm_sr *sr);
	/* SR.probe: what exists at dir, as the original's probe XML
	 * ("<SRlist><SR><UUID>..</UUID></SR></SRlist>"); *xml malloc'd. */
	int (*probe)(const char *dir, char **xml);
	/* Space: physical_size (the configured or the filesystem's) and
	 * physical_utilisation (bytes the SR's files take). */
	int (*space)(struct sm_sr *sr, uint64_t *size, uint64_t *utilisation);
	/* SR.scan: every VDI the SR holds, hidden ones included; each() returning
	 * nonzero stops the scan with that value. */
	int (*scan)(struct sm_sr *sr, int (*each)(void *ctx, const struct sm_vdi *v), void *ctx);

	/* VDI.create: a new empty VDI of size bytes (rounded up as the format
	 * needs; out gets the real size).  -ENOSPC when it cannot fit the
	 * space accounting (virtual allocation > physical size is allowed for
	 * thin provisioning; the file system running out is not). */
	int (*vdi_create)(struct sm_sr *sr, uint64_t size, struct sm_vdi *out);
	/* VDI.destroy: remove the VDI's file; a parent left with no children
	 * becomes garbage for gc(), one left with one child is coalesced by it. */
	int (*vdi_delete)(struct sm_sr *sr, const char *location);
	/* VDI.snapshot / VDI.clone of location, in constant time: location's
	 * data becomes a new hidden read-only base (base->location new), location
	 * and the new VDI (out) become children of it; location keeps its name.
	 * (Snapshot and clone differ only in the records the API writes.) */
	int (*vdi_snapshot)(struct sm_sr *sr, const char *location, struct sm_vdi *out,
			    struct sm_vdi *base);
	/* VDI.resize (grow only). */
	int (*vdi_resize)(struct sm_sr *sr, const char *location, uint64_t size, struct sm_vdi *out);
	/* VDI.introduce / VDI.update: what the driver knows of location. */
	int (*vdi_stat)(struct sm_sr *sr, const char *location, struct sm_vdi *out);

	/* Transfers: open location for reading (its whole chain) or writing
	 * (the leaf; -EROFS for read-only VDIs).  While a VDI is open for
	 * writing, gc() leaves its chain alone.  Close with sm_image_close. */
	int (*vdi_open)(struct sm_sr *sr, const char *location, bool write, struct sm_image *img);
	void (*vdi_close)(struct sm_image *img);

	/* Background garbage collection, one step: remove a hidden VDI nobody
	 * needs, or coalesce a hidden parent with a single child into it (crash
	 * safe at every point; see docs/storage.md).  Returns 1 if it did
	 * something (call again), 0 if nothing is left to do.  The API layer
	 * calls it from a background thread after deletes and at start, then
	 * reconciles the rows with scan(). */
	int (*gc)(struct sm_sr *sr, sm_progress_fn p, void *pctx);
};

/* The drivers, by SR.type; NULL if unknown (SR_UNKNOWN_DRIVER). */
const struct sm_driver *sm_driver_find(const char *type);
extern const struct sm_driver sm_file_driver, sm_iso_driver;

/* Generic helpers (sm.c) over an opened image.  Offsets and lengths need
 * no alignment (partial sectors of a VHD are read-modify-written); off + len
 * must not pass virtual_size (-EINVAL).  pread and pwrite return 0 when the
 * whole range was transferred.  pwrite of an SM_VHD image checks first that
 * the blocks it would allocate fit the file system (-ENOSPC, nothing
 * written).  A write is on stable storage once sm_image_flush returned. */
int sm_image_pread(struct sm_image *img, void *buf, size_t len, uint64_t off);
int sm_image_pwrite(struct sm_image *img, const void *buf, size_t len, uint64_t off);
int sm_image_flush(struct sm_image *img);
void sm_image_close(struct sm_image *img); /* the driver's vdi_close; NULL-safe */

/* ---- shared by the drivers (sm.c) ------------------------------------------ */

/* The SR's size: configured if nonzero, else the file system's (statvfs). */
int sm_fs_size(const char *dir, uint64_t configured, uint64_t *size);
/* 0 if bytes more fit the file system holding dir (its free space for
 * unprivileged users, f_bavail), else -ENOSPC. */
int sm_fs_fits(const char *dir, uint64_t bytes);
int sm_dir_sync(const char *dir);
/* Close an image's file or chain (the drivers' vdi_close end with it). */
void sm_image_release(struct sm_image *img);
/* Tests only (NULL otherwise): called between the steps of the file SR's
 * multi-step changes (snapshot, create, gc), so that a test can _exit()
 * there as a crash would stop it. */
extern void (*sm_test_step)(const char *where);

#endif
