/* vhd.h — VHD images: dynamic and differencing disks, read and written per
 * the VHD specification (footer, header, block allocation table, per-block
 * sector bitmaps, parent locators), creator application "tap" as XenServer's
 * tools write it (so readers take the size from the footer).
 *
 * Every function returns 0 (or a count) on success and -errno on failure;
 * a malformed image is -EINVAL (vhd_check says why).  Handles are not shared
 * between threads; several handles may read one file.
 *
 * Durability: a write is on stable storage once vhd_flush() returned.  At
 * every point of a crash the file is a valid VHD: a new block's data (and
 * the footer after it) reach the disk before the BAT entry that points at
 * them, so a crash loses only unflushed writes.  See docs/vhd.md.
 */
#ifndef CX_VHD_H
#define CX_VHD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VHD_SECTOR 512u
#define VHD_BLOCK_SIZE (2u << 20) /* the default and what XenServer uses */
/* the largest virtual size (as the original: 2 TiB less 8 MiB... per spec the
 * BAT could address more; we keep the original's limit) */
#define VHD_MAX_SIZE ((uint64_t)2040 << 30)

enum vhd_type { VHD_FIXED = 2, VHD_DYNAMIC = 3, VHD_DIFF = 4 };

struct vhd_info {
	enum vhd_type type;
	uint64_t virtual_size;  /* footer current size, bytes */
	uint32_t block_size;
	uint32_t max_bat;       /* BAT entries the image has room for */
	uint32_t allocated;     /* blocks allocated in this file */
	uint8_t uuid[16];
	uint8_t parent_uuid[16];       /* differencing only */
	uint32_t parent_timestamp;
	char parent_name[1024];        /* parent unicode name, as UTF-8 ("" if none) */
	char parent_path[4096];        /* the relative (W2ru) locator, else absolute (W2ku) */
	uint64_t file_size;            /* bytes, the physical utilisation */
	uint32_t timestamp;            /* footer timestamp (seconds since 2000-01-01) */
	bool hidden;                   /* the tap "hidden" flag (byte 85 of the footer's reserved area) */
};

struct vhd; /* one open image file */

/* Create a dynamic disk of virtual_size bytes (rounded up to a sector) with
 * room in the BAT for max_size bytes (0: virtual_size).  O_EXCL: -EEXIST if
 * path exists.  The file and its directory are synced before returning. */
int vhd_create_dynamic(const char *path, uint64_t virtual_size, uint64_t max_size);

/* Create a differencing disk over parent (an existing VHD).  Its locators
 * record parent_rel (relative to the child's directory, e.g. "./P.vhd") and
 * the parent's absolute path; parent uuid and timestamp are the parent's.
 * Virtual size = the parent's.  Synced before returning. */
int vhd_create_diff(const char *path, const char *parent_path, const char *parent_rel);

#define VHD_RDONLY 0
#define VHD_RDWR 1
int vhd_open(const char *path, int flags, struct vhd **out);
void vhd_close(struct vhd *v);
int vhd_get_info(struct vhd *v, struct vhd_info *out);
int vhd_fd(struct vhd *v);
/* the path the image was opened by (for a parent: its locator resolved
 * against the child's directory) */
const char *vhd_path(struct vhd *v);

/* Sector-aligned I/O on this one file (no parent): reads of sectors not
 * present in this file return zeros and, when present is non-NULL, clear
 * the matching bit of present (one bit per sector, LSB first).  Writes
 * allocate blocks as needed and set bitmap bits. */
int vhd_pread(struct vhd *v, void *buf, size_t len, uint64_t off, uint8_t *present);
int vhd_pwrite(struct vhd *v, const void *buf, size_t len, uint64_t off);
int vhd_flush(struct vhd *v); /* fdatasync after ordering BAT/bitmap updates */

/* Grow (never shrink: -EINVAL) the virtual size; moves data blocks to make
 * room in the BAT when needed, crash-safely.  Flushed before returning. */
int vhd_resize(struct vhd *v, uint64_t new_size);

/* Set or clear the footer's hidden flag and/or rewrite the parent locators
 * of a differencing disk (parent_path NULL: unchanged).  Flushed. */
int vhd_set_hidden(struct vhd *v, bool hidden);
int vhd_set_parent(struct vhd *v, const char *parent_path, const char *parent_rel);

/* Where block b's data lives in this file: its byte offset (after the
 * sector bitmap), or 0 when the block is not allocated; *full is set when
 * every sector of the block is present. */
int vhd_block(struct vhd *v, uint32_t b, uint64_t *data_off, bool *full);

/* ---- chains: a leaf and its parents --------------------------------------- */

#define VHD_CHAIN_MAX 64

struct vhd_chain {
	int depth;                       /* 1 = a lone image */
	struct vhd *v[VHD_CHAIN_MAX];    /* v[0] the leaf, v[depth-1] the root */
	struct vhd_info info[VHD_CHAIN_MAX];
};

/* Open leaf (flags apply to the leaf; parents are read-only), following
 * parent locators (relative first, then absolute; a parent whose uuid does
 * not match the child's parent_uuid is -EINVAL). */
int vhd_chain_open(const char *leaf, int flags, struct vhd_chain *c);
void vhd_chain_close(struct vhd_chain *c);
/* Read through the chain: each sector from the first image that has it. */
int vhd_chain_pread(struct vhd_chain *c, void *buf, size_t len, uint64_t off);

/* A block of the chain, for copying out without reading sector bitmaps
 * sector by sector:
 *   VHD_EXT_ZERO   no image of the chain (above stop) has the block
 *   VHD_EXT_FILE   one image has every sector of it: fd + off hold block_size bytes
 *   VHD_EXT_MIXED  read it with vhd_chain_pread
 * stop: consider only images v[0 .. stop-1] (a base's own images excluded);
 * 0 = the whole chain. */
enum vhd_ext_kind { VHD_EXT_ZERO, VHD_EXT_FILE, VHD_EXT_MIXED };
struct vhd_ext {
	enum vhd_ext_kind kind;
	int fd;
	uint64_t off;
};
int vhd_chain_block(struct vhd_chain *c, int stop, uint32_t b, struct vhd_ext *e);

/* ---- streams ----------------------------------------------------------------- */

/* Write/read callbacks of streams: return 0 / bytes read (0 at end), or -errno.
 * progress (may be NULL) is called now and then with done/total in [0,1];
 * returning nonzero cancels (the stream function returns -ECANCELED). */
typedef int (*vhd_write_fn)(void *ctx, const void *buf, size_t len);
typedef ssize_t (*vhd_read_fn)(void *ctx, void *buf, size_t len);
typedef int (*vhd_progress_fn)(void *ctx, double fraction);

/* The size in bytes of the VHD stream vhd_export would write (for
 * Content-Length).  stop as for vhd_chain_block. */
int vhd_export_size(struct vhd_chain *c, int stop, uint64_t *size);
/* Write the chain's contents as one dynamic VHD stream: footer copy, header,
 * BAT, the allocated blocks in order, footer.  With stop > 0 only blocks that
 * images above the base (v[0..stop-1]) allocate are included (a delta for
 * backups), as the original's export with base= does. */
int vhd_export(struct vhd_chain *c, int stop, vhd_write_fn w, void *wctx,
	       vhd_progress_fn p, void *pctx);
/* The same, naming base (an image outside the chain, e.g. the leaf of the
 * VDI a backup holds the full export of) as the delta's parent: its uuid,
 * timestamp and file name.  The stream's own uuid is always the leaf's, so a
 * delta exported later over this VDI names this export as its parent. */
int vhd_export_over(struct vhd_chain *c, int stop, struct vhd *base, vhd_write_fn w, void *wctx,
		    vhd_progress_fn p, void *pctx);
/* Read a VHD stream (dynamic or differencing; blocks in any order of
 * increasing file offset) and write its present sectors into dst at the same
 * virtual offsets.  A stream that ends early is -EPIPE after having written
 * every complete block that arrived.  A stream larger than dst is -EFBIG. */
int vhd_import(struct vhd *dst, vhd_read_fn r, void *rctx, vhd_progress_fn p, void *pctx);

/* ---- maintenance ----------------------------------------------------------- */

/* Copy every sector present in child into parent (opened read-write), block
 * by block, flushed.  Idempotent: repeating it after a crash gives the same
 * parent.  The caller then retires the child. */
int vhd_coalesce(struct vhd *child, struct vhd *parent, vhd_progress_fn p, void *pctx);

/* Check an image: structure, footer copies, header, BAT entries inside the
 * file and not overlapping, bitmaps, locators.  0 if sound, else -EINVAL with
 * a one-line reason in why (may be NULL). */
int vhd_check(const char *path, char *why, size_t why_len);

#endif
