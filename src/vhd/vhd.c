/* vhd.c — dynamic and differencing VHD images (see vhd.h, docs/vhd.md).
 *
 * Written by hand on libc only: no Debian library reads and writes VHD
 * differencing chains with the crash-safety ordering we need (libvhdi is
 * read-only, qemu's driver ignores parents and bitmaps).
 *
 * Layout of the files we create:
 *   0        footer copy (512)
 *   512      dynamic header (1024)
 *   1536     differencing disks only: 4 locator slots of 4096 bytes (W2ku and
 *            W2ru use two of them; vhd_set_parent writes the other two, then
 *            switches the header over)
 *   T        BAT (max_bat big-endian sector offsets, padded to a sector)
 *   T+B      batmap header (blktap's "tdbatmap", 512) and batmap (all zero:
 *            "no block known full", always true)
 *   ...      blocks: sector bitmap (padded to a sector), then block_size bytes
 *   EOF-512  footer
 *
 * Block allocation: new blocks go at `next_off`, below `res_end`, where the
 * end-of-file footer currently is.  When the reservation is used up, the footer
 * is first written further on (and synced), so the file always ends with a
 * valid footer.  A new block's data, and every bitmap bit's data, is synced
 * before the bitmap and the BAT entry naming it are written ("commit"). */
#include "vhd/vhd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SEC VHD_SECTOR
#define BAT_UNUSED 0xffffffffu
#define EPOCH_2000 946684800
#define CREATOR_VERSION 0x00010003u /* blktap's VHD_CURRENT_VERSION (1.3) */
#define CREATOR_OS 0u               /* blktap writes 0 */
#define BATMAP_VERSION 0x00010002u
#define LOC_AREA 1536u
#define LOC_SLOT 4096u
#define LOC_SLOTS 4u
#define MAX_BAT_ENTRIES (1u << 22) /* 2040 GiB in 512 KiB blocks fits */
#define MAX_DIRTY 64u             /* blocks whose bitmap/BAT entry waits for a commit */
#define RESERVE_BLOCKS 64u        /* blocks reserved ahead of the footer at once */

/* footer fields */
enum { F_COOKIE = 0, F_FEATURES = 8, F_VERSION = 12, F_DATAOFF = 16, F_TIME = 24,
       F_APP = 28, F_CVER = 32, F_COS = 36, F_ORIG = 40, F_CUR = 48, F_GEOM = 56,
       F_TYPE = 60, F_CSUM = 64, F_UUID = 68, F_SAVED = 84, F_HIDDEN = 85 };
/* header fields */
enum { H_COOKIE = 0, H_DATAOFF = 8, H_TABLE = 16, H_VER = 24, H_MAXBAT = 28, H_BS = 32,
       H_CSUM = 36, H_PUUID = 40, H_PTS = 56, H_RES1 = 60, H_PNAME = 64, H_LOC = 576,
       H_RES2 = 768 };
/* parent locator entry fields (8 entries of 24 bytes at H_LOC) */
enum { L_CODE = 0, L_SPACE = 4, L_LEN = 8, L_RES = 12, L_OFF = 16, L_SIZE = 24 };
#define PLAT_W2RU 0x57327275u
#define PLAT_W2KU 0x57326b75u
#define PLAT_MACX 0x4d616358u

/* per-block state flags */
enum { BS_KNOWN = 1, BS_FULL = 2, BS_DIRTY = 4, BS_NEW = 8 };

struct vhd {
	int fd;
	bool rw;
	char *path;
	uint8_t footer[SEC];
	uint8_t header[1024];
	enum vhd_type type;
	uint64_t size;
	uint32_t bs, spb, bm_bytes;
	uint64_t span; /* bm_bytes + bs */
	uint32_t max_bat;
	uint64_t table_off;
	uint32_t *bat;   /* host order */
	uint8_t *bst;    /* BS_* per block */
	uint8_t **bm;    /* cached bitmaps of partial or dirty blocks */
	uint8_t *ones;   /* bm_bytes of 0xff */
	uint32_t dirty[MAX_DIRTY];
	uint32_t ndirty;
	uint64_t meta_end; /* end of header, BAT, batmap, locators */
	bool has_batmap;
	uint64_t next_off; /* where the next new block goes */
	uint64_t res_end;  /* where the end-of-file footer is */
	uint64_t file_size;
	uint32_t allocated;
	char loc[3][PATH_MAX]; /* parent locators: W2ru, MacX, W2ku ("" if none) */
	struct vhd_info info;
};

/* Test hook: every write, sync and truncate of an image goes through these. */
enum io_op { IO_WRITE, IO_SYNC, IO_TRUNC };
static void (*io_hook)(int fd, enum io_op op, const void *buf, size_t len, uint64_t off);
static uint32_t reserve_blocks = RESERVE_BLOCKS; /* tests make it small */

/* ---- bytes --------------------------------------------------------------- */

static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, (uint32_t)v); }

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* one's complement of the byte sum, the checksum field counted as zero */
static uint32_t checksum(const uint8_t *p, size_t len, size_t csum_at)
{
	uint32_t s = 0;
	for (size_t i = 0; i < len; i++)
		if (i < csum_at || i >= csum_at + 4)
			s += p[i];
	return ~s;
}

static int full_pread(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EINVAL; /* the image is shorter than its metadata says */
		p += n, len -= (size_t)n, off += (uint64_t)n;
	}
	return 0;
}

static int wr(int fd, const void *buf, size_t len, uint64_t off)
{
	if (io_hook)
		io_hook(fd, IO_WRITE, buf, len, off);
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n, len -= (size_t)n, off += (uint64_t)n;
	}
	return 0;
}

static int sync_fd(int fd)
{
	if (io_hook)
		io_hook(fd, IO_SYNC, NULL, 0, 0);
	return fdatasync(fd) < 0 ? -errno : 0;
}

static int trunc_fd(int fd, uint64_t len)
{
	if (io_hook)
		io_hook(fd, IO_TRUNC, NULL, 0, len);
	return ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
}

static void set_why(char *why, size_t n, const char *fmt, const char *detail)
{
	if (why && n)
		snprintf(why, n, fmt, detail);
}

/* ---- small format helpers ---------------------------------------------------- */

static uint32_t vhd_now(void)
{
	time_t t = time(NULL);
	return t > EPOCH_2000 ? (uint32_t)(t - EPOCH_2000) : 0;
}

static void new_uuid(uint8_t u[16])
{
	if (getrandom(u, 16, 0) != 16) {
		/* not expected on Linux >= 3.17; still never an all-zero uuid */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t x = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32;
		for (int i = 0; i < 16; i++, x = x * 6364136223846793005u + 1442695040888963407u)
			u[i] = (uint8_t)(x >> 56);
	}
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
}

/* CHS geometry, the algorithm of the VHD specification */
static uint32_t chs(uint64_t size)
{
	uint64_t total = size / SEC;
	uint32_t spt, heads, cth;
	if (total > 65535ull * 16 * 255)
		total = 65535ull * 16 * 255;
	if (total >= 65535ull * 16 * 63) {
		spt = 255, heads = 16, cth = (uint32_t)(total / spt);
	} else {
		spt = 17;
		cth = (uint32_t)(total / spt);
		heads = (cth + 1023) / 1024;
		if (heads < 4)
			heads = 4;
		if (cth >= heads * 1024 || heads > 16) {
			spt = 31, heads = 16, cth = (uint32_t)(total / spt);
		}
		if (cth >= heads * 1024) {
			spt = 63, heads = 16, cth = (uint32_t)(total / spt);
		}
	}
	return (cth / heads) << 16 | heads << 8 | spt;
}

/* UTF-8 -> UTF-16 (big or little endian); returns bytes written or -errno */
static int utf16_encode(const char *s, uint8_t *out, size_t cap, bool be)
{
	size_t n = 0;
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		uint32_t c;
		int more;
		if (*p < 0x80)
			c = *p, more = 0;
		else if ((*p & 0xe0) == 0xc0)
			c = *p & 0x1f, more = 1;
		else if ((*p & 0xf0) == 0xe0)
			c = *p & 0x0f, more = 2;
		else if ((*p & 0xf8) == 0xf0)
			c = *p & 0x07, more = 3;
		else
			return -EINVAL;
		p++;
		for (int i = 0; i < more; i++, p++) {
			if ((*p & 0xc0) != 0x80)
				return -EINVAL;
			c = c << 6 | (*p & 0x3f);
		}
		if (c > 0x10ffff || (c >= 0xd800 && c < 0xe000))
			return -EINVAL;
		uint16_t u[2];
		int k = 1;
		if (c >= 0x10000) {
			c -= 0x10000;
			u[0] = (uint16_t)(0xd800 | c >> 10), u[1] = (uint16_t)(0xdc00 | (c & 0x3ff)), k = 2;
		} else {
			u[0] = (uint16_t)c;
		}
		for (int i = 0; i < k; i++) {
			if (n + 2 > cap)
				return -ENAMETOOLONG;
			out[n + (be ? 0 : 1)] = (uint8_t)(u[i] >> 8);
			out[n + (be ? 1 : 0)] = (uint8_t)u[i];
			n += 2;
		}
	}
	return (int)n;
}

/* UTF-16 (len bytes, stops at a NUL unit) -> NUL-terminated UTF-8 */
static int utf16_decode(const uint8_t *in, size_t len, bool be, char *out, size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; i + 1 < len; i += 2) {
		uint32_t c = be ? (uint32_t)in[i] << 8 | in[i + 1] : (uint32_t)in[i + 1] << 8 | in[i];
		if (c == 0)
			break;
		if (c >= 0xd800 && c < 0xdc00) {
			if (i + 3 >= len)
				return -EINVAL;
			uint32_t d = be ? (uint32_t)in[i + 2] << 8 | in[i + 3] : (uint32_t)in[i + 3] << 8 | in[i + 2];
			if (d < 0xdc00 || d >= 0xe000)
				return -EINVAL;
			c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
			i += 2;
		} else if (c >= 0xdc00 && c < 0xe000) {
			return -EINVAL;
		}
		uint8_t b[4];
		int k;
		if (c < 0x80)
			b[0] = (uint8_t)c, k = 1;
		else if (c < 0x800)
			b[0] = (uint8_t)(0xc0 | c >> 6), b[1] = (uint8_t)(0x80 | (c & 0x3f)), k = 2;
		else if (c < 0x10000)
			b[0] = (uint8_t)(0xe0 | c >> 12), b[1] = (uint8_t)(0x80 | (c >> 6 & 0x3f)),
			b[2] = (uint8_t)(0x80 | (c & 0x3f)), k = 3;
		else
			b[0] = (uint8_t)(0xf0 | c >> 18), b[1] = (uint8_t)(0x80 | (c >> 12 & 0x3f)),
			b[2] = (uint8_t)(0x80 | (c >> 6 & 0x3f)), b[3] = (uint8_t)(0x80 | (c & 0x3f)), k = 4;
		if (n + (size_t)k + 1 > cap)
			return -ENAMETOOLONG;
		memcpy(out + n, b, (size_t)k);
		n += (size_t)k;
	}
	out[n] = 0;
	return 0;
}

/* A path as a W2ku/W2ru locator: backslashes, UTF-16LE; relative paths start
 * with ".\" (as blktap writes them, for Microsoft's tools). */
static int locator_encode(const char *path, bool relative, uint8_t *out, size_t cap)
{
	char tmp[PATH_MAX + 3];
	const char *p = path;
	if (relative && strncmp(p, "./", 2) == 0)
		p += 2;
	if (snprintf(tmp, sizeof tmp, "%s%s", relative && p[0] != '/' ? ".\\" : "", p) >= (int)sizeof tmp)
		return -ENAMETOOLONG;
	for (char *q = tmp; *q; q++)
		if (*q == '/')
			*q = '\\';
	return utf16_encode(tmp, out, cap, false);
}

/* A W2ku/W2ru/MacX locator's bytes -> a Unix path */
static int locator_decode(uint32_t code, const uint8_t *in, size_t len, char *out, size_t cap)
{
	if (code == PLAT_MACX) {
		if (len < 7 || memcmp(in, "file://", 7) || len - 7 >= cap || memchr(in, 0, len))
			return -EINVAL;
		memcpy(out, in + 7, len - 7);
		out[len - 7] = 0;
		return 0;
	}
	int err = utf16_decode(in, len, false, out, cap);
	if (err)
		return err;
	for (char *q = out; *q; q++)
		if (*q == '\\')
			*q = '/';
	if ((out[0] == 'C' || out[0] == 'c') && out[1] == ':')
		memmove(out, out + 2, strlen(out + 2) + 1);
	return out[0] ? 0 : -EINVAL;
}

/* data_space is sectors per the specification but bytes in what Microsoft's
 * and XenServer's tools write: read it as blktap does */
static uint64_t locator_space(uint32_t space)
{
	if (space < 512)
		return (uint64_t)space * SEC;
	return space % SEC ? 0 : space;
}

static void footer_seal(uint8_t *f)
{
	put32(f + F_CSUM, checksum(f, SEC, F_CSUM));
}

static void header_seal(uint8_t *h)
{
	put32(h + H_CSUM, checksum(h, 1024, H_CSUM));
}

static void footer_init(uint8_t *f, enum vhd_type type, uint64_t size)
{
	memset(f, 0, SEC);
	memcpy(f + F_COOKIE, "conectix", 8);
	put32(f + F_FEATURES, 2);
	put32(f + F_VERSION, 0x00010000);
	put64(f + F_DATAOFF, SEC);
	put32(f + F_TIME, vhd_now());
	memcpy(f + F_APP, "tap", 4);
	put32(f + F_CVER, CREATOR_VERSION);
	put32(f + F_COS, CREATOR_OS);
	put64(f + F_ORIG, size);
	put64(f + F_CUR, size);
	put32(f + F_GEOM, chs(size));
	put32(f + F_TYPE, type);
	new_uuid(f + F_UUID);
	footer_seal(f);
}

static void header_init(uint8_t *h, uint64_t table_off, uint32_t max_bat)
{
	memset(h, 0, 1024);
	memcpy(h + H_COOKIE, "cxsparse", 8);
	put64(h + H_DATAOFF, UINT64_MAX);
	put64(h + H_TABLE, table_off);
	put32(h + H_VER, 0x00010000);
	put32(h + H_MAXBAT, max_bat);
	put32(h + H_BS, VHD_BLOCK_SIZE);
}

static uint64_t bat_bytes(uint32_t max_bat) { return round_up((uint64_t)max_bat * 4, SEC); }
static uint64_t batmap_bytes(uint32_t max_bat) { return round_up(((uint64_t)max_bat + 7) / 8, SEC); }

/* blktap's batmap: header sector then the map, right after the BAT */
static void batmap_header_init(uint8_t *b, uint64_t table_off, uint32_t max_bat)
{
	memset(b, 0, SEC);
	memcpy(b, "tdbatmap", 8);
	put64(b + 8, table_off + bat_bytes(max_bat) + SEC);
	put32(b + 16, (uint32_t)(batmap_bytes(max_bat) / SEC));
	put32(b + 20, BATMAP_VERSION);
	put32(b + 24, 0xffffffffu); /* ~sum of an all-zero map */
}

/* ---- opening and validating ----------------------------------------------------- */

#define FAIL(why_msg) do { set_why(why, why_len, "%s", why_msg); err = -EINVAL; goto out; } while (0)

static bool footer_valid(uint8_t *f)
{
	if (memcmp(f + F_COOKIE, "conectix", 8))
		return false;
	uint32_t want = get32(f + F_CSUM);
	if (checksum(f, SEC, F_CSUM) == want)
		return true;
	/* early blktap set "hidden" without updating the checksum */
	if (f[F_HIDDEN] && !memcmp(f + F_APP, "tap", 3) &&
	    (get32(f + F_CVER) == 0x00000001 || get32(f + F_CVER) == 0x00010001)) {
		uint8_t h = f[F_HIDDEN];
		f[F_HIDDEN] = 0;
		bool ok = checksum(f, SEC, F_CSUM) == want;
		f[F_HIDDEN] = h;
		return ok;
	}
	return false;
}

/* LSD radix sort of 32-bit values (the BAT's sector offsets) */
static int sort_u32(uint32_t *a, size_t n)
{
	uint32_t *t = malloc(n * sizeof *t + 1);
	if (!t)
		return -ENOMEM;
	for (int shift = 0; shift < 32; shift += 8) {
		size_t cnt[257] = {0};
		for (size_t i = 0; i < n; i++)
			cnt[(a[i] >> shift & 0xff) + 1]++;
		for (int i = 0; i < 256; i++)
			cnt[i + 1] += cnt[i];
		for (size_t i = 0; i < n; i++)
			t[cnt[a[i] >> shift & 0xff]++] = a[i];
		memcpy(a, t, n * sizeof *t);
	}
	free(t);
	return 0;
}

struct range { uint64_t start, end; const char *what; };

/* Does [s, e) overlap one of the n sorted blocks (sector offsets) of length span? */
static bool hits_block(const uint32_t *blk, size_t n, uint64_t span, uint64_t s, uint64_t e)
{
	size_t lo = 0, hi = n; /* first block whose end > s */
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if ((uint64_t)blk[mid] * SEC + span <= s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && (uint64_t)blk[lo] * SEC < e;
}

static int parse(struct vhd *v, char *why, size_t why_len)
{
	int err = 0;
	uint32_t *blk = NULL;
	uint8_t *raw = NULL;
	struct stat st;
	if (fstat(v->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return set_why(why, why_len, "%s", "not a regular file"), -EINVAL;
	uint64_t fsize = (uint64_t)st.st_size, foot;
	if (fsize < 3 * SEC)
		return set_why(why, why_len, "%s", "file too small"), -EINVAL;
	if (fsize % SEC == 0)
		foot = fsize - SEC;
	else if (fsize % SEC == SEC - 1) /* old tools wrote 511-byte footers */
		foot = fsize - (SEC - 1);
	else
		return set_why(why, why_len, "%s", "file size is not a whole number of sectors"), -EINVAL;
	v->file_size = fsize;
	v->res_end = foot;

	uint8_t *f = v->footer, copy[SEC];
	memset(f, 0, SEC);
	if ((err = full_pread(v->fd, f, fsize - foot, foot)) || (err = full_pread(v->fd, copy, SEC, 0)))
		return err;
	if (!footer_valid(f))
		FAIL("footer at the end: bad cookie or checksum");
	if (!footer_valid(copy))
		FAIL("footer copy at offset 0: bad cookie or checksum");
	/* a crash while a footer changes (hidden flag, size) leaves the copies
	 * different in those fields: the end one counts (docs/vhd.md) */
	if (memcmp(f + F_UUID, copy + F_UUID, 16) || get32(f + F_TYPE) != get32(copy + F_TYPE) ||
	    get64(f + F_DATAOFF) != get64(copy + F_DATAOFF))
		FAIL("footer copies describe different disks");
	if (get32(f + F_VERSION) >> 16 != 1)
		FAIL("unsupported format version");
	uint32_t type = get32(f + F_TYPE);
	if (type == VHD_FIXED) {
		set_why(why, why_len, "%s", "fixed disks are not supported");
		return -EOPNOTSUPP;
	}
	if (type != VHD_DYNAMIC && type != VHD_DIFF)
		FAIL("unknown disk type");
	v->type = (enum vhd_type)type;
	v->size = get64(f + F_CUR);
	if (v->size % SEC || v->size > VHD_MAX_SIZE || v->size == 0)
		FAIL("absurd virtual size");
	uint64_t doff = get64(f + F_DATAOFF);
	if (doff % SEC || doff < SEC || doff > foot || foot - doff < 1024)
		FAIL("header offset outside the file");

	uint8_t *h = v->header;
	if ((err = full_pread(v->fd, h, 1024, doff)))
		return err;
	if (memcmp(h + H_COOKIE, "cxsparse", 8) || checksum(h, 1024, H_CSUM) != get32(h + H_CSUM))
		FAIL("dynamic header: bad cookie or checksum");
	if (get32(h + H_VER) != 0x00010000)
		FAIL("dynamic header: unsupported version");
	v->bs = get32(h + H_BS);
	if (v->bs < 4096 || v->bs > (1u << 28) || (v->bs & (v->bs - 1)))
		FAIL("dynamic header: bad block size");
	v->spb = v->bs / SEC;
	v->bm_bytes = (uint32_t)round_up(v->spb / 8, SEC);
	v->span = (uint64_t)v->bm_bytes + v->bs;
	v->max_bat = get32(h + H_MAXBAT);
	v->table_off = get64(h + H_TABLE);
	if (v->max_bat > MAX_BAT_ENTRIES || (uint64_t)v->max_bat * v->bs < v->size)
		FAIL("BAT too small for the virtual size, or absurdly large");
	uint64_t batlen = bat_bytes(v->max_bat);
	if (v->table_off % SEC || v->table_off < SEC || v->table_off > foot || foot - v->table_off < (uint64_t)v->max_bat * 4)
		FAIL("BAT outside the file");

	/* metadata regions, checked against each other and against the blocks */
	struct range meta[16];
	int nmeta = 0;
	meta[nmeta++] = (struct range){0, SEC, "footer copy"};
	meta[nmeta++] = (struct range){doff, doff + 1024, "header"};
	meta[nmeta++] = (struct range){v->table_off, v->table_off + (uint64_t)v->max_bat * 4, "BAT"};
	uint64_t bmh = v->table_off + batlen;
	if (bmh + SEC <= foot) {
		uint8_t b[SEC];
		if ((err = full_pread(v->fd, b, SEC, bmh)))
			return err;
		if (!memcmp(b, "tdbatmap", 8)) {
			uint64_t mo = get64(b + 8), ml = (uint64_t)get32(b + 16) * SEC;
			if (mo % SEC || mo > foot || foot - mo < ml || ml < ((uint64_t)v->max_bat + 7) / 8)
				FAIL("batmap outside the file or too small");
			v->has_batmap = true;
			meta[nmeta++] = (struct range){bmh, bmh + SEC, "batmap header"};
			meta[nmeta++] = (struct range){mo, mo + ml, "batmap"};
		}
	}
	if (v->type == VHD_DIFF && utf16_decode(h + H_PNAME, 512, true, v->info.parent_name, sizeof v->info.parent_name))
		FAIL("parent name is not valid UTF-16");
	for (int i = 0; i < 8; i++) {
		const uint8_t *l = h + H_LOC + i * L_SIZE;
		uint32_t code = get32(l + L_CODE), len = get32(l + L_LEN);
		if (!code)
			continue;
		uint64_t lo = get64(l + L_OFF), space = locator_space(get32(l + L_SPACE));
		if (!space || len > space || lo < SEC || lo > foot || foot - lo < space)
			FAIL("parent locator outside the file");
		meta[nmeta++] = (struct range){lo, lo + space, "parent locator"};
		int slot = code == PLAT_W2RU ? 0 : code == PLAT_MACX ? 1 : code == PLAT_W2KU ? 2 : -1;
		if (v->type != VHD_DIFF || slot < 0)
			continue;
		if (len > 4 * PATH_MAX)
			FAIL("parent locator too long");
		uint8_t *buf = malloc(len + 1);
		if (!buf)
			return -ENOMEM;
		err = full_pread(v->fd, buf, len, lo);
		if (!err && locator_decode(code, buf, len, v->loc[slot], sizeof v->loc[slot]))
			err = -EINVAL, set_why(why, why_len, "%s", "parent locator is not a valid path");
		free(buf);
		if (err)
			return err;
	}
	if (v->type == VHD_DIFF && !v->loc[0][0] && !v->loc[1][0] && !v->loc[2][0])
		FAIL("differencing disk without a parent locator");
	for (int i = 0; i < nmeta; i++)
		for (int j = i + 1; j < nmeta; j++)
			if (meta[i].start < meta[j].end && meta[j].start < meta[i].end) {
				set_why(why, why_len, "metadata regions overlap (%s)", meta[j].what);
				err = -EINVAL;
				goto out;
			}

	/* the BAT */
	raw = malloc((size_t)v->max_bat * 4 + 1);
	v->bat = malloc((size_t)v->max_bat * 4 + 1);
	v->bst = calloc((size_t)v->max_bat + 1, 1);
	blk = malloc((size_t)v->max_bat * 4 + 1);
	if (!raw || !v->bat || !v->bst || !blk) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = full_pread(v->fd, raw, (size_t)v->max_bat * 4, v->table_off)))
		goto out;
	size_t n = 0;
	for (uint32_t b = 0; b < v->max_bat; b++) {
		uint32_t e = v->bat[b] = get32(raw + 4 * (size_t)b);
		if (e == BAT_UNUSED)
			continue;
		if ((uint64_t)e * SEC > foot || foot - (uint64_t)e * SEC < v->span)
			FAIL("BAT entry outside the file");
		blk[n++] = e;
	}
	if ((err = sort_u32(blk, n)))
		goto out;
	for (size_t i = 1; i < n; i++)
		if ((uint64_t)blk[i] * SEC < (uint64_t)blk[i - 1] * SEC + v->span)
			FAIL("BAT entries overlap");
	uint64_t data_end = 0;
	for (int i = 0; i < nmeta; i++) {
		if (hits_block(blk, n, v->span, meta[i].start, meta[i].end)) {
			set_why(why, why_len, "a block overlaps the %s", meta[i].what);
			err = -EINVAL;
			goto out;
		}
		if (meta[i].end > v->meta_end)
			v->meta_end = meta[i].end;
	}
	v->meta_end = round_up(v->meta_end, SEC);
	data_end = n ? (uint64_t)blk[n - 1] * SEC + v->span : 0;
	if (data_end < v->meta_end)
		data_end = v->meta_end;
	if (data_end > foot)
		FAIL("metadata overlaps the footer");
	v->allocated = (uint32_t)n;
	v->next_off = foot;
	if (v->rw && data_end < foot &&
	    fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)data_end, (off_t)(foot - data_end)) == 0)
		v->next_off = data_end; /* space a crash left unreferenced, zeroed again */
out:
	free(raw);
	free(blk);
	return err;
}
#undef FAIL

static void fill_info(struct vhd *v)
{
	struct vhd_info *i = &v->info;
	const uint8_t *f = v->footer, *h = v->header;
	i->type = v->type;
	i->virtual_size = v->size;
	i->block_size = v->bs;
	i->max_bat = v->max_bat;
	i->allocated = v->allocated;
	memcpy(i->uuid, f + F_UUID, 16);
	i->timestamp = get32(f + F_TIME);
	i->hidden = f[F_HIDDEN] != 0;
	i->file_size = v->next_off + SEC;
	if (v->type == VHD_DIFF) {
		memcpy(i->parent_uuid, h + H_PUUID, 16);
		i->parent_timestamp = get32(h + H_PTS);
		snprintf(i->parent_path, sizeof i->parent_path, "%s", v->loc[0][0] ? v->loc[0] : v->loc[2][0] ? v->loc[2] : v->loc[1]);
	}
}

static void free_handle(struct vhd *v)
{
	if (v->bm)
		for (uint32_t b = 0; b < v->max_bat; b++)
			free(v->bm[b]);
	free(v->bm);
	free(v->bat);
	free(v->bst);
	free(v->ones);
	free(v->path);
	if (v->fd >= 0)
		close(v->fd);
	free(v);
}

static int open_impl(const char *path, int flags, struct vhd **out, char *why, size_t why_len)
{
	*out = NULL;
	struct vhd *v = calloc(1, sizeof *v);
	if (!v)
		return -ENOMEM;
	v->rw = flags == VHD_RDWR;
	v->fd = open(path, (v->rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	v->path = strdup(path);
	int err = v->fd < 0 ? -errno : !v->path ? -ENOMEM : 0;
	if (err) {
		set_why(why, why_len, "%s", strerror(-err));
	} else if (!(err = parse(v, why, why_len))) {
		v->ones = malloc(v->bm_bytes);
		if (!v->ones)
			err = -ENOMEM;
		else
			memset(v->ones, 0xff, v->bm_bytes);
	}
	if (!err && v->rw) {
		/* a crash while a footer changed left the copy behind: catch it up */
		uint8_t copy[SEC];
		if (!(err = full_pread(v->fd, copy, SEC, 0)) && memcmp(copy, v->footer, SEC) &&
		    !(err = wr(v->fd, v->footer, SEC, 0)))
			err = sync_fd(v->fd);
	}
	if (err) {
		free_handle(v);
		return err;
	}
	fill_info(v);
	*out = v;
	return 0;
}

int vhd_open(const char *path, int flags, struct vhd **out)
{
	return open_impl(path, flags, out, NULL, 0);
}

int vhd_get_info(struct vhd *v, struct vhd_info *out)
{
	fill_info(v);
	*out = v->info;
	return 0;
}

int vhd_fd(struct vhd *v)
{
	return v->fd;
}

const char *vhd_path(struct vhd *v)
{
	return v->path;
}

/* ---- blocks ---------------------------------------------------------------------- */

static bool bit(const uint8_t *bm, uint32_t s) { return bm[s >> 3] & (0x80 >> (s & 7)); }

static bool bits_all_set(const uint8_t *bm, uint32_t spb)
{
	for (uint32_t i = 0; i < spb / 8; i++)
		if (bm[i] != 0xff)
			return false;
	return true;
}

/* set sectors [s, s + n) of a bitmap (MSB first, as the specification) */
static void bits_set(uint8_t *bm, uint32_t s, uint32_t n)
{
	while (n && (s & 7))
		bm[s >> 3] |= 0x80 >> (s & 7), s++, n--;
	memset(bm + (s >> 3), 0xff, n >> 3);
	s += n & ~7u, n &= 7;
	while (n)
		bm[s >> 3] |= 0x80 >> (s & 7), s++, n--;
}

enum { BLK_NONE, BLK_FULL, BLK_PARTIAL };

/* What this file holds of block b: BLK_NONE, BLK_FULL, or BLK_PARTIAL with
 * its bitmap in *bm; or -errno. */
static int block_state(struct vhd *v, uint32_t b, const uint8_t **bm)
{
	if (b >= v->max_bat || v->bat[b] == BAT_UNUSED)
		return BLK_NONE;
	if (!(v->bst[b] & BS_KNOWN)) {
		if (!v->bm && !(v->bm = calloc(v->max_bat, sizeof *v->bm)))
			return -ENOMEM;
		uint8_t *m = malloc(v->bm_bytes);
		if (!m)
			return -ENOMEM;
		int err = full_pread(v->fd, m, v->bm_bytes, (uint64_t)v->bat[b] * SEC);
		if (err) {
			free(m);
			return err;
		}
		v->bst[b] |= BS_KNOWN;
		if (bits_all_set(m, v->spb)) {
			v->bst[b] |= BS_FULL;
			free(m);
		} else {
			v->bm[b] = m;
		}
	}
	if (v->bst[b] & BS_FULL)
		return BLK_FULL;
	*bm = v->bm[b];
	return BLK_PARTIAL;
}

static uint64_t data_off(struct vhd *v, uint32_t b)
{
	return (uint64_t)v->bat[b] * SEC + v->bm_bytes;
}

static int check_io(struct vhd *v, size_t len, uint64_t off)
{
	if (off % SEC || len % SEC || off > v->size || v->size - off < len)
		return -EINVAL;
	return 0;
}

static void clear_present(uint8_t *present, size_t first, size_t n)
{
	if (!present)
		return;
	for (size_t i = first; i < first + n; i++)
		present[i >> 3] &= (uint8_t)~(1u << (i & 7));
}

int vhd_pread(struct vhd *v, void *buf, size_t len, uint64_t off, uint8_t *present)
{
	int err = check_io(v, len, off);
	uint8_t *p = buf;
	while (!err && len) {
		uint32_t b = (uint32_t)(off / v->bs), s0 = (uint32_t)(off % v->bs / SEC);
		size_t n = v->bs - off % v->bs < len ? v->bs - off % v->bs : len;
		uint32_t ns = (uint32_t)(n / SEC);
		size_t idx = (size_t)(p - (uint8_t *)buf) / SEC;
		const uint8_t *bm = NULL;
		int st = block_state(v, b, &bm);
		if (st < 0)
			return st;
		if (st == BLK_FULL) {
			err = full_pread(v->fd, p, n, data_off(v, b) + (uint64_t)s0 * SEC);
		} else if (st == BLK_NONE) {
			memset(p, 0, n);
			clear_present(present, idx, ns);
		} else {
			for (uint32_t s = 0; s < ns && !err;) {
				bool set = bit(bm, s0 + s);
				uint32_t e = s + 1;
				while (e < ns && bit(bm, s0 + e) == set)
					e++;
				if (set) {
					err = full_pread(v->fd, p + (size_t)s * SEC, (size_t)(e - s) * SEC,
							 data_off(v, b) + (uint64_t)(s0 + s) * SEC);
				} else {
					memset(p + (size_t)s * SEC, 0, (size_t)(e - s) * SEC);
					clear_present(present, idx + s, e - s);
				}
				s = e;
			}
		}
		p += n, off += n, len -= n;
	}
	return err;
}

/* Room for one more block: below the footer, which is first moved further
 * (and synced) when the reservation is used up. */
static int alloc_block(struct vhd *v, uint64_t *off)
{
	if (v->next_off + v->span > v->res_end) {
		uint64_t k = v->max_bat - v->allocated;
		if (k > reserve_blocks)
			k = reserve_blocks;
		if (k == 0)
			k = 1;
		uint64_t res = v->next_off + k * v->span;
		if (res / SEC >= BAT_UNUSED)
			return -ENOSPC;
		int err = wr(v->fd, v->footer, SEC, res);
		if (!err)
			err = sync_fd(v->fd);
		if (err)
			return err;
		v->res_end = res;
	}
	*off = v->next_off;
	v->next_off += v->span;
	return 0;
}

/* Write the bitmaps and BAT entries of the dirty blocks, after their data is
 * on stable storage.  Durable at the next sync. */
static int commit(struct vhd *v)
{
	if (!v->ndirty)
		return 0;
	/* a new block's bitmap may go with its data (no BAT entry names the
	 * block yet); an existing block's only once its data is durable */
	int err = 0;
	for (int pass = 0; pass < 2 && !err; pass++) {
		for (uint32_t i = 0; i < v->ndirty && !err; i++) {
			uint32_t b = v->dirty[i];
			if (!!(v->bst[b] & BS_NEW) == (pass == 0))
				err = wr(v->fd, v->bst[b] & BS_FULL ? v->ones : v->bm[b], v->bm_bytes,
					 (uint64_t)v->bat[b] * SEC);
		}
		if (!pass && !err)
			err = sync_fd(v->fd);
	}
	uint32_t secs[MAX_DIRTY], nsecs = 0;
	for (uint32_t i = 0; i < v->ndirty && !err; i++) {
		uint32_t b = v->dirty[i];
		if (v->bst[b] & BS_NEW) {
			uint32_t s = b / (SEC / 4), j = 0;
			while (j < nsecs && secs[j] != s)
				j++;
			if (j == nsecs)
				secs[nsecs++] = s;
		}
	}
	for (uint32_t j = 0; j < nsecs && !err; j++) {
		uint8_t sec[SEC];
		memset(sec, 0, SEC);
		for (uint32_t k = 0; k < SEC / 4; k++) {
			uint64_t b = (uint64_t)secs[j] * (SEC / 4) + k;
			if (b < v->max_bat)
				put32(sec + 4 * k, v->bat[b]);
		}
		uint64_t at = v->table_off + (uint64_t)secs[j] * SEC;
		uint64_t len = v->table_off + (uint64_t)v->max_bat * 4 - at; /* a foreign BAT may end mid-sector */
		err = wr(v->fd, sec, len < SEC ? len : SEC, at);
	}
	if (err)
		return err;
	for (uint32_t i = 0; i < v->ndirty; i++)
		v->bst[v->dirty[i]] &= (uint8_t)~(BS_DIRTY | BS_NEW);
	v->ndirty = 0;
	return 0;
}

static int mark_dirty(struct vhd *v, uint32_t b)
{
	if (v->bst[b] & BS_DIRTY)
		return 0;
	v->bst[b] |= BS_DIRTY;
	v->dirty[v->ndirty++] = b;
	return v->ndirty == MAX_DIRTY ? commit(v) : 0;
}

/* write sectors [s0, s0 + ns) of block b */
static int block_write(struct vhd *v, uint32_t b, const uint8_t *p, uint32_t s0, uint32_t ns)
{
	int err;
	bool whole = s0 == 0 && ns == v->spb;
	if (v->bat[b] == BAT_UNUSED) {
		uint64_t off;
		if (!v->bm && !(v->bm = calloc(v->max_bat, sizeof *v->bm)))
			return -ENOMEM;
		if (!whole && !(v->bm[b] = calloc(1, v->bm_bytes)))
			return -ENOMEM;
		if ((err = alloc_block(v, &off))) {
			free(v->bm[b]);
			v->bm[b] = NULL;
			return err;
		}
		v->bat[b] = (uint32_t)(off / SEC);
		v->bst[b] = BS_KNOWN | BS_NEW | (whole ? BS_FULL : 0);
		v->allocated++;
	}
	if ((err = wr(v->fd, p, (size_t)ns * SEC, data_off(v, b) + (uint64_t)s0 * SEC)))
		return err;
	const uint8_t *cur = NULL;
	int st = block_state(v, b, &cur);
	if (st < 0)
		return st;
	if (st == BLK_PARTIAL) {
		if (whole) {
			v->bst[b] |= BS_FULL;
		} else {
			bits_set(v->bm[b], s0, ns);
			if (bits_all_set(v->bm[b], v->spb))
				v->bst[b] |= BS_FULL;
		}
		if (v->bst[b] & BS_FULL) {
			free(v->bm[b]);
			v->bm[b] = NULL;
		}
		return mark_dirty(v, b);
	}
	return v->bst[b] & BS_NEW ? mark_dirty(v, b) : 0;
}

int vhd_pwrite(struct vhd *v, const void *buf, size_t len, uint64_t off)
{
	if (!v->rw)
		return -EBADF;
	int err = check_io(v, len, off);
	const uint8_t *p = buf;
	while (!err && len) {
		size_t n = v->bs - off % v->bs < len ? v->bs - off % v->bs : len;
		err = block_write(v, (uint32_t)(off / v->bs), p, (uint32_t)(off % v->bs / SEC), (uint32_t)(n / SEC));
		p += n, off += n, len -= n;
	}
	return err;
}

int vhd_flush(struct vhd *v)
{
	if (!v->rw)
		return 0;
	int err = commit(v);
	return err ? err : sync_fd(v->fd);
}

/* Give back the unused reservation: a footer right after the last block,
 * then cut the file there (either end of the file holds a valid footer). */
static int trim(struct vhd *v)
{
	int err = commit(v);
	if (err || v->next_off >= v->res_end)
		return err ? err : sync_fd(v->fd);
	if ((err = wr(v->fd, v->footer, SEC, v->next_off)) || (err = sync_fd(v->fd)) ||
	    (err = trunc_fd(v->fd, v->next_off + SEC)))
		return err;
	v->res_end = v->next_off;
	return sync_fd(v->fd);
}

void vhd_close(struct vhd *v)
{
	if (!v)
		return;
	if (v->rw)
		trim(v);
	free_handle(v);
}

int vhd_block(struct vhd *v, uint32_t b, uint64_t *data_offset, bool *full)
{
	const uint8_t *bm;
	int st = block_state(v, b, &bm);
	if (st < 0)
		return st;
	*data_offset = st == BLK_NONE ? 0 : data_off(v, b);
	if (full)
		*full = st == BLK_FULL;
	return 0;
}

/* ---- creating ----------------------------------------------------------------- */

/* Write an image under a temporary name (O_TMPFILE where the filesystem has
 * it), sync it, then link it to path: a crash leaves no half-made image, and
 * an existing path is never replaced. */
static int create_file(const char *path, const uint8_t *buf, size_t len)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 16];
	const char *slash = strrchr(path, '/');
	if (strlen(path) >= PATH_MAX)
		return -ENAMETOOLONG;
	if (!slash)
		strcpy(dir, ".");
	else if (slash == path)
		strcpy(dir, "/");
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	bool named = false;
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0) {
		snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
		fd = mkostemp(tmp, O_CLOEXEC);
		named = true;
		if (fd >= 0)
			fchmod(fd, 0644);
	}
	int err = fd < 0 ? -errno : 0;
	if (!err)
		err = wr(fd, buf, len, 0);
	if (!err)
		err = sync_fd(fd);
	if (!err) {
		if (named) {
			err = link(tmp, path) < 0 ? -errno : 0;
		} else {
			char proc[64];
			snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
			err = linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
		}
	}
	if (named && fd >= 0)
		unlink(tmp);
	if (!err)
		err = fsync(dfd) < 0 ? -errno : 0;
	if (fd >= 0)
		close(fd);
	close(dfd);
	return err;
}

/* footer copy, header, locator area, BAT, batmap, footer: one write */
static int create_image(const char *path, const uint8_t *f, const uint8_t *h, const uint8_t *locs)
{
	uint64_t table_off = get64(h + H_TABLE);
	uint32_t max_bat = get32(h + H_MAXBAT);
	uint64_t bmh = table_off + bat_bytes(max_bat);
	size_t len = (size_t)(bmh + SEC + batmap_bytes(max_bat) + SEC);
	uint8_t *buf = calloc(1, len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, f, SEC);
	memcpy(buf + SEC, h, 1024);
	if (locs)
		memcpy(buf + LOC_AREA, locs, LOC_SLOTS * LOC_SLOT);
	memset(buf + table_off, 0xff, (size_t)max_bat * 4);
	batmap_header_init(buf + bmh, table_off, max_bat);
	memcpy(buf + len - SEC, f, SEC);
	int err = create_file(path, buf, len);
	free(buf);
	return err;
}

int vhd_create_dynamic(const char *path, uint64_t virtual_size, uint64_t max_size)
{
	uint64_t size = round_up(virtual_size, SEC), max = max_size ? round_up(max_size, SEC) : size;
	if (!size || size > VHD_MAX_SIZE || max < size || max > VHD_MAX_SIZE)
		return -EINVAL;
	uint8_t f[SEC], h[1024];
	footer_init(f, VHD_DYNAMIC, size);
	header_init(h, LOC_AREA, (uint32_t)((max + VHD_BLOCK_SIZE - 1) / VHD_BLOCK_SIZE));
	header_seal(h);
	return create_image(path, f, h, NULL);
}

/* Point the header at parent: uuid, timestamp (the parent file's mtime, as
 * blktap), unicode name (its base name, UTF-16BE) and two locators, W2ku
 * (absolute) and W2ru (relative), written into the given slots of locs. */
static int header_set_parent(uint8_t *h, uint8_t *locs, const int slots[2], const char *parent_path,
			     const char *parent_rel)
{
	struct vhd *p;
	struct stat st;
	char abs[PATH_MAX];
	int err = vhd_open(parent_path, VHD_RDONLY, &p);
	if (err)
		return err;
	memcpy(h + H_PUUID, p->footer + F_UUID, 16);
	err = fstat(p->fd, &st) < 0 ? -errno : 0;
	vhd_close(p);
	if (err)
		return err;
	if (!realpath(parent_path, abs))
		return -errno;
	put32(h + H_PTS, st.st_mtime > EPOCH_2000 ? (uint32_t)(st.st_mtime - EPOCH_2000) : 0);
	const char *base = strrchr(abs, '/') ? strrchr(abs, '/') + 1 : abs;
	memset(h + H_PNAME, 0, 512);
	int n = utf16_encode(base, h + H_PNAME, 512, true);
	if (n < 0)
		return n;
	memset(h + H_LOC, 0, 8 * L_SIZE);
	const char *paths[2] = {abs, parent_rel};
	const uint32_t codes[2] = {PLAT_W2KU, PLAT_W2RU};
	for (int i = 0, e = 0; i < 2; i++) {
		if (!paths[i])
			continue;
		uint8_t *slot = locs + (size_t)slots[i] * LOC_SLOT, *l = h + H_LOC + e++ * L_SIZE;
		memset(slot, 0, LOC_SLOT);
		if ((n = locator_encode(paths[i], codes[i] == PLAT_W2RU, slot, LOC_SLOT)) < 0)
			return n;
		put32(l + L_CODE, codes[i]);
		put32(l + L_SPACE, LOC_SLOT); /* bytes, as Microsoft's and blktap's tools */
		put32(l + L_LEN, (uint32_t)n);
		put64(l + L_OFF, LOC_AREA + (uint64_t)slots[i] * LOC_SLOT);
	}
	header_seal(h);
	return 0;
}

int vhd_create_diff(const char *path, const char *parent_path, const char *parent_rel)
{
	struct vhd_info pi;
	struct vhd *p;
	int err = vhd_open(parent_path, VHD_RDONLY, &p);
	if (err)
		return err;
	vhd_get_info(p, &pi);
	vhd_close(p);
	uint8_t f[SEC], h[1024];
	uint8_t *locs = calloc(LOC_SLOTS, LOC_SLOT);
	if (!locs)
		return -ENOMEM;
	footer_init(f, VHD_DIFF, pi.virtual_size);
	header_init(h, LOC_AREA + LOC_SLOTS * LOC_SLOT, (uint32_t)((pi.virtual_size + VHD_BLOCK_SIZE - 1) / VHD_BLOCK_SIZE));
	err = header_set_parent(h, locs, (const int[2]){0, 1}, parent_path, parent_rel);
	if (!err)
		err = create_image(path, f, h, locs);
	free(locs);
	return err;
}

/* ---- changing metadata --------------------------------------------------------- */

/* the footer changed: the end copy first, then the one at offset 0 */
static int write_footers(struct vhd *v)
{
	footer_seal(v->footer);
	int err = commit(v);
	if (!err)
		err = wr(v->fd, v->footer, SEC, v->res_end);
	if (!err)
		err = sync_fd(v->fd);
	if (!err)
		err = wr(v->fd, v->footer, SEC, 0);
	if (!err)
		err = sync_fd(v->fd);
	return err;
}

int vhd_set_hidden(struct vhd *v, bool hidden)
{
	if (!v->rw)
		return -EBADF;
	v->footer[F_HIDDEN] = hidden;
	int err = write_footers(v);
	fill_info(v);
	return err;
}

int vhd_set_parent(struct vhd *v, const char *parent_path, const char *parent_rel)
{
	if (!v->rw)
		return -EBADF;
	if (v->type != VHD_DIFF)
		return -EINVAL;
	if (!parent_path)
		return 0;
	/* our layout only: new locators go into the two slots not in use, the
	 * header switches over once they are on disk */
	if (v->table_off < LOC_AREA + LOC_SLOTS * LOC_SLOT)
		return -EOPNOTSUPP;
	bool used[LOC_SLOTS] = {0};
	for (int i = 0; i < 8; i++) {
		const uint8_t *l = v->header + H_LOC + i * L_SIZE;
		if (!get32(l + L_CODE))
			continue;
		uint64_t off = get64(l + L_OFF);
		if (off < LOC_AREA || off >= LOC_AREA + LOC_SLOTS * LOC_SLOT || (off - LOC_AREA) % LOC_SLOT)
			return -EOPNOTSUPP;
		used[(off - LOC_AREA) / LOC_SLOT] = true;
	}
	int slots[2], n = 0;
	for (int s = 0; s < (int)LOC_SLOTS && n < 2; s++)
		if (!used[s])
			slots[n++] = s;
	if (n < 2)
		return -EOPNOTSUPP;
	uint8_t h[1024];
	uint8_t *locs = calloc(LOC_SLOTS, LOC_SLOT);
	if (!locs)
		return -ENOMEM;
	memcpy(h, v->header, sizeof h);
	int err = header_set_parent(h, locs, slots, parent_path, parent_rel);
	for (int i = 0; i < 2 && !err; i++)
		err = wr(v->fd, locs + (size_t)slots[i] * LOC_SLOT, LOC_SLOT, LOC_AREA + (uint64_t)slots[i] * LOC_SLOT);
	if (!err)
		err = sync_fd(v->fd);
	if (!err)
		err = wr(v->fd, h, sizeof h, get64(v->footer + F_DATAOFF));
	if (!err)
		err = sync_fd(v->fd);
	if (!err) {
		memcpy(v->header, h, sizeof h);
		memset(v->loc, 0, sizeof v->loc);
		char abs[PATH_MAX];
		if (realpath(parent_path, abs))
			snprintf(v->loc[2], PATH_MAX, "%s", abs);
		if (parent_rel)
			snprintf(v->loc[0], PATH_MAX, "%s", parent_rel);
		utf16_decode(h + H_PNAME, 512, true, v->info.parent_name, sizeof v->info.parent_name);
		fill_info(v);
	}
	free(locs);
	return err;
}

/* Grow the BAT to `need` entries: move the blocks in the way to the end
 * (copy, sync, repoint, sync), then write the longer BAT and batmap into the
 * freed space, then the header. */
static int grow_bat(struct vhd *v, uint32_t need)
{
	uint64_t doff = get64(v->footer + F_DATAOFF);
	uint64_t bmh = v->table_off + bat_bytes(need);
	uint64_t new_end = bmh + (v->has_batmap ? SEC + batmap_bytes(need) : 0);
	if (doff < new_end && doff + 1024 > v->table_off)
		return -EOPNOTSUPP;
	for (int i = 0; i < 8; i++) {
		const uint8_t *l = v->header + H_LOC + i * L_SIZE;
		uint64_t off = get64(l + L_OFF);
		if (get32(l + L_CODE) && off < new_end && off + locator_space(get32(l + L_SPACE)) > v->table_off)
			return -EOPNOTSUPP; /* a foreign layout with locators after the BAT */
	}
	uint32_t *bat = realloc(v->bat, (size_t)need * 4);
	if (!bat)
		return -ENOMEM;
	v->bat = bat;
	uint8_t *bst = realloc(v->bst, need);
	if (!bst)
		return -ENOMEM;
	v->bst = bst;
	if (v->bm) {
		uint8_t **bm = realloc(v->bm, (size_t)need * sizeof *bm);
		if (!bm)
			return -ENOMEM;
		v->bm = bm;
	}
	uint8_t *buf = malloc(v->span > new_end - v->table_off ? v->span : new_end - v->table_off);
	if (!buf)
		return -ENOMEM;
	int err = 0;
	if (v->next_off < new_end)
		v->next_off = new_end;
	if (v->res_end < v->next_off) {
		if (!(err = wr(v->fd, v->footer, SEC, v->next_off)) && !(err = sync_fd(v->fd)))
			v->res_end = v->next_off;
	}
	/* move: copy every block in the way, sync, then repoint */
	uint32_t moved = 0;
	uint32_t *old = malloc((size_t)v->max_bat * 4 + 1);
	if (!old)
		err = -ENOMEM;
	else
		memcpy(old, v->bat, (size_t)v->max_bat * 4);
	for (uint32_t b = 0; b < v->max_bat && !err; b++) {
		if (v->bat[b] == BAT_UNUSED || (uint64_t)v->bat[b] * SEC >= new_end)
			continue;
		uint64_t to = 0;
		if (!(err = alloc_block(v, &to)) && !(err = full_pread(v->fd, buf, v->span, (uint64_t)v->bat[b] * SEC)))
			err = wr(v->fd, buf, v->span, to);
		v->bat[b] = (uint32_t)(to / SEC);
		moved++;
	}
	if (!err && moved) {
		if (!(err = sync_fd(v->fd))) {
			for (uint32_t b = 0; b < v->max_bat; b++)
				put32(buf + 4 * (size_t)b, v->bat[b]);
			if (!(err = wr(v->fd, buf, (size_t)v->max_bat * 4, v->table_off)))
				err = sync_fd(v->fd);
		}
	}
	if (err) {
		if (old)
			memcpy(v->bat, old, (size_t)v->max_bat * 4);
		free(old);
		free(buf);
		return err;
	}
	free(old);
	/* the longer BAT and an empty batmap, into space nothing refers to */
	for (uint32_t b = v->max_bat; b < need; b++) {
		v->bat[b] = BAT_UNUSED;
		v->bst[b] = 0;
		if (v->bm)
			v->bm[b] = NULL;
	}
	uint64_t from = v->table_off + (uint64_t)v->max_bat * 4 / SEC * SEC;
	memset(buf, 0, new_end - from);
	for (uint64_t b = (from - v->table_off) / 4; b < need; b++)
		put32(buf + (v->table_off + b * 4 - from), v->bat[b]);
	if (v->has_batmap)
		batmap_header_init(buf + (bmh - from), v->table_off, need);
	if (!(err = wr(v->fd, buf, new_end - from, from)) && !(err = sync_fd(v->fd))) {
		put32(v->header + H_MAXBAT, need);
		header_seal(v->header);
		if (!(err = wr(v->fd, v->header, 1024, doff)) && !(err = sync_fd(v->fd))) {
			v->max_bat = need;
			v->meta_end = new_end;
		}
	}
	free(buf);
	return err;
}

int vhd_resize(struct vhd *v, uint64_t new_size)
{
	if (!v->rw)
		return -EBADF;
	new_size = round_up(new_size, SEC);
	if (new_size < v->size || new_size > VHD_MAX_SIZE)
		return -EINVAL;
	int err = commit(v);
	if (err)
		return err;
	uint64_t need = (new_size + v->bs - 1) / v->bs;
	if (need > v->max_bat && (err = grow_bat(v, (uint32_t)need)))
		return err;
	put64(v->footer + F_CUR, new_size);
	put32(v->footer + F_GEOM, chs(new_size));
	if ((err = write_footers(v)))
		return err;
	v->size = new_size;
	fill_info(v);
	return 0;
}

/* ---- chains ------------------------------------------------------------------------ */

static int resolve_locator(const char *child, const char *loc, char *out, size_t cap)
{
	const char *slash = strrchr(child, '/');
	int n = loc[0] == '/' || !slash ? snprintf(out, cap, "%s", loc)
					: snprintf(out, cap, "%.*s/%s", (int)(slash - child), child, loc);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* open the parent of child: the relative locator first, then MacX, then the absolute one */
static int open_parent(struct vhd *child, struct vhd **out)
{
	int err = -ENOENT;
	for (int i = 0; i < 3; i++) {
		char path[PATH_MAX];
		struct vhd *p;
		if (!child->loc[i][0] || resolve_locator(child->path, child->loc[i], path, sizeof path) ||
		    access(path, F_OK))
			continue;
		int e = vhd_open(path, VHD_RDONLY, &p);
		if (e) {
			err = e;
			continue;
		}
		if (!memcmp(p->footer + F_UUID, child->header + H_PUUID, 16)) {
			*out = p;
			return 0;
		}
		vhd_close(p);
		err = -EINVAL; /* a file that is not our parent */
	}
	return err;
}

int vhd_chain_open(const char *leaf, int flags, struct vhd_chain *c)
{
	memset(c, 0, sizeof *c);
	int err = vhd_open(leaf, flags, &c->v[0]);
	if (err)
		return err;
	c->depth = 1;
	while (c->v[c->depth - 1]->type == VHD_DIFF) {
		struct vhd *p;
		if (c->depth == VHD_CHAIN_MAX) {
			err = -EINVAL;
			break;
		}
		if ((err = open_parent(c->v[c->depth - 1], &p)))
			break;
		for (int i = 0; i < c->depth && !err; i++)
			if (!memcmp(c->v[i]->footer + F_UUID, p->footer + F_UUID, 16))
				err = -EINVAL; /* a loop */
		if (err) {
			vhd_close(p);
			break;
		}
		c->v[c->depth++] = p;
	}
	if (err) {
		vhd_chain_close(c);
		return err;
	}
	for (int i = 0; i < c->depth; i++)
		vhd_get_info(c->v[i], &c->info[i]);
	return 0;
}

void vhd_chain_close(struct vhd_chain *c)
{
	for (int i = 0; i < c->depth; i++)
		vhd_close(c->v[i]);
	c->depth = 0;
}

/* state of image v at virtual offset off (within one of its blocks) */
static int state_at(struct vhd *v, uint64_t off, const uint8_t **bm, uint32_t *b, uint32_t *s0)
{
	if (off >= v->size)
		return BLK_NONE;
	*b = (uint32_t)(off / v->bs);
	*s0 = (uint32_t)(off % v->bs / SEC);
	return block_state(v, *b, bm);
}

int vhd_chain_pread(struct vhd_chain *c, void *buf, size_t len, uint64_t off)
{
	int err = check_io(c->v[0], len, off);
	uint8_t *p = buf;
	while (!err && len) {
		/* a piece inside one block of every image, on one side of every image's end */
		size_t n = len;
		for (int i = 0; i < c->depth; i++) {
			struct vhd *v = c->v[i];
			uint64_t lim = v->bs - off % v->bs;
			if (off < v->size && v->size - off < lim)
				lim = v->size - off;
			if (lim < n)
				n = (size_t)lim;
		}
		int st[VHD_CHAIN_MAX];
		const uint8_t *bm[VHD_CHAIN_MAX];
		uint32_t b[VHD_CHAIN_MAX], s0[VHD_CHAIN_MAX], ns = (uint32_t)(n / SEC);
		for (int i = 0; i < c->depth; i++)
			if ((st[i] = state_at(c->v[i], off, &bm[i], &b[i], &s0[i])) < 0)
				return st[i];
		for (uint32_t s = 0; s < ns && !err;) {
			int src = -1, run_src;
			uint32_t e = s;
			do { /* extend the run while the same image serves */
				run_src = -1;
				for (int i = 0; i < c->depth; i++)
					if (st[i] == BLK_FULL || (st[i] == BLK_PARTIAL && bit(bm[i], s0[i] + e))) {
						run_src = i;
						break;
					}
				if (e == s)
					src = run_src;
			} while (run_src == src && ++e < ns);
			if (src < 0)
				memset(p + (size_t)s * SEC, 0, (size_t)(e - s) * SEC);
			else
				err = full_pread(c->v[src]->fd, p + (size_t)s * SEC, (size_t)(e - s) * SEC,
						 data_off(c->v[src], b[src]) + (uint64_t)(s0[src] + s) * SEC);
			s = e;
		}
		p += n, off += n, len -= n;
	}
	return err;
}

int vhd_chain_block(struct vhd_chain *c, int stop, uint32_t b, struct vhd_ext *e)
{
	int n = stop > 0 ? stop : c->depth;
	uint32_t bs = c->v[0]->bs;
	if (n > c->depth || (uint64_t)b * bs >= c->v[0]->size)
		return -EINVAL;
	e->kind = VHD_EXT_ZERO;
	e->fd = -1;
	e->off = 0;
	for (int i = 0; i < n; i++) {
		struct vhd *v = c->v[i];
		const uint8_t *bm;
		if (v->bs != bs) { /* foreign block size: no shortcut */
			e->kind = VHD_EXT_MIXED;
			return 0;
		}
		int st = (uint64_t)b * bs >= v->size ? BLK_NONE : block_state(v, b, &bm);
		if (st < 0)
			return st;
		if (st == BLK_FULL && (uint64_t)(b + 1) * bs <= v->size) {
			e->kind = VHD_EXT_FILE;
			e->fd = v->fd;
			e->off = data_off(v, b);
			return 0;
		}
		if (st != BLK_NONE) {
			e->kind = VHD_EXT_MIXED;
			return 0;
		}
	}
	return 0;
}

/* ---- streams -------------------------------------------------------------------------- */

/* does one of v[0 .. n-1] allocate something in [lo, hi)? */
static bool chain_allocates(struct vhd_chain *c, int n, uint64_t lo, uint64_t hi)
{
	for (int i = 0; i < n; i++) {
		struct vhd *v = c->v[i];
		for (uint64_t b = lo / v->bs; b * v->bs < hi && b * v->bs < v->size && b < v->max_bat; b++)
			if (v->bat[b] != BAT_UNUSED)
				return true;
	}
	return false;
}

struct xlayout {
	uint32_t bs, bm_bytes, max_bat, count;
	uint64_t table_off, first_block, total;
	bool delta;
};

static int export_layout(struct vhd_chain *c, int stop, struct xlayout *x)
{
	if (stop < 0 || stop >= c->depth || c->depth < 1)
		return -EINVAL;
	struct vhd *top = c->v[0];
	x->delta = stop > 0;
	x->bs = top->bs;
	x->bm_bytes = top->bm_bytes;
	x->max_bat = (uint32_t)((top->size + top->bs - 1) / top->bs);
	x->table_off = LOC_AREA + (x->delta ? LOC_SLOT : 0);
	x->first_block = x->table_off + bat_bytes(x->max_bat) + SEC + batmap_bytes(x->max_bat);
	x->count = 0;
	for (uint32_t b = 0; b < x->max_bat; b++)
		x->count += chain_allocates(c, stop ? stop : c->depth, (uint64_t)b * x->bs, (uint64_t)(b + 1) * x->bs);
	x->total = x->first_block + (uint64_t)x->count * (x->bm_bytes + x->bs) + SEC;
	return 0;
}

int vhd_export_size(struct vhd_chain *c, int stop, uint64_t *size)
{
	struct xlayout x;
	int err = export_layout(c, stop, &x);
	if (!err)
		*size = x.total;
	return err;
}

/* Block contents through the whole chain (the original streams included
 * blocks whole, every bitmap bit set, read through the chain). */
static int read_block(struct vhd_chain *c, uint32_t b, uint8_t *buf)
{
	struct vhd *top = c->v[0];
	struct vhd_ext e;
	uint64_t off = (uint64_t)b * top->bs;
	size_t n = top->size - off < top->bs ? (size_t)(top->size - off) : top->bs;
	int err = vhd_chain_block(c, 0, b, &e);
	if (err)
		return err;
	memset(buf + n, 0, top->bs - n);
	if (e.kind == VHD_EXT_FILE)
		return full_pread(e.fd, buf, n, e.off);
	if (e.kind == VHD_EXT_ZERO) {
		memset(buf, 0, n);
		return 0;
	}
	return vhd_chain_pread(c, buf, n, off);
}

int vhd_export(struct vhd_chain *c, int stop, vhd_write_fn w, void *wctx, vhd_progress_fn p, void *pctx)
{
	return vhd_export_over(c, stop, stop ? c->v[stop] : NULL, w, wctx, p, pctx);
}

int vhd_export_over(struct vhd_chain *c, int stop, struct vhd *base, vhd_write_fn w, void *wctx,
		    vhd_progress_fn p, void *pctx)
{
	struct xlayout x;
	int err = export_layout(c, stop, &x);
	if (err)
		return err;
	struct vhd *top = c->v[0];
	size_t meta = (size_t)x.first_block;
	uint8_t *buf = calloc(1, meta > top->span ? meta : top->span);
	if (!buf)
		return -ENOMEM;
	uint8_t *f = buf, *h = buf + SEC;
	footer_init(f, x.delta ? VHD_DIFF : VHD_DYNAMIC, top->size);
	/* the stream is the leaf: a delta exported later names it as its parent */
	memcpy(f + F_UUID, top->footer + F_UUID, 16);
	footer_seal(f);
	header_init(h, x.table_off, x.max_bat);
	put32(h + H_BS, x.bs);
	if (x.delta) {
		/* a differencing disk over the base, named by its uuid and a
		 * relative locator "./<base file name>" */
		struct stat st;
		const char *name = strrchr(base->path, '/') ? strrchr(base->path, '/') + 1 : base->path;
		memcpy(h + H_PUUID, base->footer + F_UUID, 16);
		if (fstat(base->fd, &st) == 0 && st.st_mtime > EPOCH_2000)
			put32(h + H_PTS, (uint32_t)(st.st_mtime - EPOCH_2000));
		int n = utf16_encode(name, h + H_PNAME, 512, true);
		int len = n < 0 ? n : locator_encode(name, true, buf + LOC_AREA, LOC_SLOT);
		if (len < 0) {
			free(buf);
			return len;
		}
		uint8_t *l = h + H_LOC;
		put32(l + L_CODE, PLAT_W2RU);
		put32(l + L_SPACE, LOC_SLOT);
		put32(l + L_LEN, (uint32_t)len);
		put64(l + L_OFF, LOC_AREA);
	}
	header_seal(h);
	uint64_t next = x.first_block;
	int n = stop ? stop : c->depth;
	for (uint32_t b = 0; b < x.max_bat; b++) {
		bool inc = chain_allocates(c, n, (uint64_t)b * x.bs, (uint64_t)(b + 1) * x.bs);
		put32(buf + x.table_off + 4 * (uint64_t)b, inc ? (uint32_t)(next / SEC) : BAT_UNUSED);
		next += inc ? x.bm_bytes + x.bs : 0;
	}
	batmap_header_init(buf + x.table_off + bat_bytes(x.max_bat), x.table_off, x.max_bat);
	uint8_t footer[SEC];
	memcpy(footer, f, SEC);
	err = w(wctx, buf, meta);
	uint32_t done = 0;
	for (uint32_t b = 0; b < x.max_bat && !err; b++) {
		if (!chain_allocates(c, n, (uint64_t)b * x.bs, (uint64_t)(b + 1) * x.bs))
			continue;
		if (!(err = w(wctx, top->ones, x.bm_bytes)) && !(err = read_block(c, b, buf)))
			err = w(wctx, buf, x.bs);
		if (!err && p && p(pctx, (double)++done / x.count))
			err = -ECANCELED;
	}
	if (!err)
		err = w(wctx, footer, SEC);
	free(buf);
	return err;
}

struct reader {
	vhd_read_fn r;
	void *ctx;
	uint64_t pos;
};

static int rd(struct reader *s, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = s->r(s->ctx, p, len);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EPIPE;
		if ((size_t)n > len)
			return -EINVAL;
		p += n, len -= (size_t)n, s->pos += (uint64_t)n;
	}
	return 0;
}

/* read forward to offset to, through scratch (a stream cannot seek) */
static int skip_to(struct reader *s, uint64_t to, uint8_t *scratch, size_t cap)
{
	if (to < s->pos)
		return -EINVAL;
	while (s->pos < to) {
		size_t n = to - s->pos < cap ? (size_t)(to - s->pos) : cap;
		int err = rd(s, scratch, n);
		if (err)
			return err;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int vhd_import(struct vhd *dst, vhd_read_fn r, void *rctx, vhd_progress_fn p, void *pctx)
{
	if (!dst->rw)
		return -EBADF;
	struct reader s = {r, rctx, 0};
	uint8_t f[SEC], h[1024];
	uint8_t *buf = NULL, *raw = NULL;
	uint64_t *order = NULL;
	int err = rd(&s, f, SEC);
	if (err)
		return err;
	if (!footer_valid(f) || (get32(f + F_TYPE) != VHD_DYNAMIC && get32(f + F_TYPE) != VHD_DIFF))
		return -EINVAL;
	uint64_t size = get64(f + F_CUR), doff = get64(f + F_DATAOFF);
	if (size % SEC || size > VHD_MAX_SIZE || doff < SEC || doff > VHD_MAX_SIZE)
		return -EINVAL;
	if (size > dst->size)
		return -EFBIG;
	if ((err = skip_to(&s, doff, h, sizeof h)) || (err = rd(&s, h, sizeof h)))
		return err;
	uint32_t bs = get32(h + H_BS), max_bat = get32(h + H_MAXBAT);
	uint64_t table_off = get64(h + H_TABLE);
	if (memcmp(h, "cxsparse", 8) || checksum(h, 1024, H_CSUM) != get32(h + H_CSUM) ||
	    bs < 4096 || bs > (1u << 28) || (bs & (bs - 1)) || max_bat > MAX_BAT_ENTRIES ||
	    (uint64_t)max_bat * bs < size || table_off < s.pos || table_off > VHD_MAX_SIZE)
		return -EINVAL;
	uint32_t bm_bytes = (uint32_t)round_up(bs / SEC / 8, SEC);
	buf = malloc((size_t)bm_bytes + bs);
	raw = malloc((size_t)max_bat * 4 + 1);
	order = malloc((size_t)max_bat * 8 + 1);
	if (!buf || !raw || !order) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = skip_to(&s, table_off, buf, bs)) || (err = rd(&s, raw, (size_t)max_bat * 4)))
		goto out;
	size_t n = 0;
	for (uint32_t b = 0; b < max_bat; b++) {
		uint32_t e = get32(raw + 4 * (size_t)b);
		if (e != BAT_UNUSED && (uint64_t)b * bs < size)
			order[n++] = (uint64_t)e << 32 | b;
	}
	qsort(order, n, sizeof *order, cmp_u64);
	uint8_t *bm = buf, *data = buf + bm_bytes;
	for (size_t i = 0; i < n && !err; i++) {
		uint32_t b = (uint32_t)order[i];
		uint64_t at = (order[i] >> 32) * SEC, voff = (uint64_t)b * bs;
		uint32_t ns = (uint32_t)((size - voff < bs ? size - voff : bs) / SEC);
		if (at < s.pos) { /* overlapping blocks, or a block inside the metadata */
			err = -EINVAL;
			break;
		}
		if ((err = skip_to(&s, at, data, bs)) || (err = rd(&s, bm, bm_bytes)) || (err = rd(&s, data, bs)))
			break;
		for (uint32_t k = 0; k < ns && !err;) {
			bool set = bit(bm, k);
			uint32_t e = k + 1;
			while (e < ns && bit(bm, e) == set)
				e++;
			if (set)
				err = vhd_pwrite(dst, data + (size_t)k * SEC, (size_t)(e - k) * SEC, voff + (uint64_t)k * SEC);
			k = e;
		}
		if (!err && p && p(pctx, (double)(i + 1) / n))
			err = -ECANCELED;
	}
out:
	free(buf);
	free(raw);
	free(order);
	/* what arrived complete is kept, even when the stream broke off */
	int ferr = vhd_flush(dst);
	return err ? err : ferr;
}

/* ---- maintenance ------------------------------------------------------------------------ */

int vhd_coalesce(struct vhd *child, struct vhd *parent, vhd_progress_fn p, void *pctx)
{
	if (!parent->rw)
		return -EBADF;
	int err = 0;
	if (child->size > parent->size && (err = vhd_resize(parent, child->size)))
		return err;
	uint8_t *buf = malloc(child->bs);
	if (!buf)
		return -ENOMEM;
	uint32_t done = 0;
	for (uint32_t b = 0; b < child->max_bat && !err; b++) {
		uint64_t voff = (uint64_t)b * child->bs;
		if (child->bat[b] == BAT_UNUSED || voff >= child->size)
			continue;
		const uint8_t *bm = NULL;
		uint32_t ns = (uint32_t)((child->size - voff < child->bs ? child->size - voff : child->bs) / SEC);
		int st = block_state(child, b, &bm);
		if (st < 0) {
			err = st;
			break;
		}
		for (uint32_t k = 0; k < ns && !err;) {
			bool set = st == BLK_FULL || bit(bm, k);
			uint32_t e = k + 1;
			while (e < ns && (st == BLK_FULL || bit(bm, e) == set))
				e++;
			size_t len = (size_t)(e - k) * SEC;
			if (set && !(err = full_pread(child->fd, buf, len, data_off(child, b) + (uint64_t)k * SEC)))
				err = vhd_pwrite(parent, buf, len, voff + (uint64_t)k * SEC);
			k = e;
		}
		if (!err && p && p(pctx, (double)++done / child->allocated))
			err = -ECANCELED;
	}
	free(buf);
	int ferr = vhd_flush(parent);
	return err ? err : ferr;
}

int vhd_check(const char *path, char *why, size_t why_len)
{
	struct vhd *v;
	if (why && why_len)
		why[0] = 0;
	int err = open_impl(path, VHD_RDONLY, &v, why, why_len);
	if (err)
		return err == -EOPNOTSUPP || err == -EINVAL ? -EINVAL : err;
	/* blktap's batmap: a block marked full must be allocated and full */
	uint64_t bmh = v->table_off + bat_bytes(v->max_bat);
	uint8_t hdr[SEC];
	uint8_t *map = NULL;
	if (v->has_batmap && !(err = full_pread(v->fd, hdr, SEC, bmh))) {
		size_t len = ((size_t)v->max_bat + 7) / 8;
		if (!(map = malloc(len + 1)))
			err = -ENOMEM;
		else
			err = full_pread(v->fd, map, len, get64(hdr + 8));
		for (uint32_t b = 0; b < v->max_bat && !err; b++) {
			const uint8_t *bm;
			if (!bit(map, b))
				continue;
			int st = block_state(v, b, &bm);
			if (st != BLK_FULL) {
				set_why(why, why_len, "%s", st < 0 ? "cannot read a bitmap" : "batmap marks a block full that is not");
				err = -EINVAL;
			}
		}
	}
	free(map);
	vhd_close(v);
	return err;
}
