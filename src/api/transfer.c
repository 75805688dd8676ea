/* transfer.c — PUT /import_raw_vdi and GET /export_raw_vdi (transfer.h).
 *
 * The loop thread only claims the request and detaches its connection; the
 * rest runs on a thread of the transfer's own: credentials (the Unix socket is
 * root; else session_id from the query or a cookie with the vm-admin
 * permission the original requires; else HTTP Basic as root), the task, the
 * VDI (storage_vdi_open), then the bytes, in blocks of the VHD block size.
 * Raw exports copy allocated blocks with sendfile(2) and write zeros for the
 * rest; raw imports skip all-zero blocks that the VDI does not hold yet.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <openssl/evp.h>

#include "api/api.h"
#include "api/storage.h"
#include "api/tasks.h"
#include "api/transfer.h"
#include "base/log.h"
#include "base/util.h"
#include "rpc/rpc.h"

#define XFER_BUF (4u << 20)          /* two VHD blocks */
#define PROGRESS_EVERY 1.0           /* seconds between task progress updates */
#define READ_AHEAD (16 << 20)        /* raw export: what the disk reads ahead */
/* A Content-Length above this is "unknown": Xen Orchestra sends 1 PiB for a
 * stream whose length it does not know and closes the connection after it. */
#define LENGTH_UNKNOWN ((int64_t)1 << 50)

/* The original's http/get_export_raw_vdi and http/put_import_raw_vdi need
 * vm-admin or above. */
#define VM_ADMIN_UP ((1u << ROLE_POOL_ADMIN) | (1u << ROLE_POOL_OPERATOR) | \
		     (1u << ROLE_VM_POWER_ADMIN) | (1u << ROLE_VM_ADMIN))

enum xfer_kind { XF_IMPORT, XF_EXPORT };

struct xfer {
	enum xfer_kind kind;
	struct http_stream *s;
	struct http_req *req;
	char session[DB_REF_MAX];
	char task[DB_REF_MAX];
	bool own_task;               /* made here: destroyed at the end */
	bool vhd;                    /* format=vhd */
	bool answered;               /* the 200 head is out */
	char first;                  /* the body's first byte, read ahead (see probe) */
	bool have_first;
	double last_progress;
	uint64_t done, total;
	struct xerr err;
};

static bool path_is(const char *path, const char *name)
{
	size_t n = strlen(name);
	return !strncmp(path, name, n) && (path[n] == 0 || (path[n] == '/' && path[n + 1] == 0));
}

bool transfer_claims(const struct http_req *req)
{
	return (!strcmp(req->method, "PUT") && path_is(req->path, "/import_raw_vdi")) ||
	       (!strcmp(req->method, "GET") && path_is(req->path, "/export_raw_vdi"));
}

/* A query parameter, else "" (a value too long for out counts as absent). */
static void qget(const struct http_req *req, const char *name, char *out, size_t n)
{
	if (http_query_get(req->query, name, out, n) < 0)
		out[0] = 0;
}

/* session_id from a Cookie header ("a=b; session_id=OpaqueRef:..."). */
static void cookie_session(const struct http_req *req, char *out, size_t n)
{
	const char *c = http_req_header(req, "Cookie");
	out[0] = 0;
	for (const char *p = c; p && *p;) {
		while (*p == ' ' || *p == ';')
			p++;
		const char *end = strchr(p, ';');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len > 11 && !strncmp(p, "session_id=", 11) && len - 11 < n) {
			memcpy(out, p + 11, len - 11);
			out[len - 11] = 0;
			return;
		}
		p = end;
	}
}

/* Basic credentials checked through PAM as the root login is: 1 ok, 0 none
 * given, -1 refused. */
static int basic_auth(const struct http_req *req)
{
	const char *h = http_req_header(req, "Authorization");
	if (!h || strncasecmp(h, "Basic ", 6))
		return 0;
	const char *b64 = h + 6;
	size_t n = strlen(b64);
	if (n == 0 || n > 1024)
		return -1;
	unsigned char dec[800];
	int m = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)n);
	if (m < 0)
		return -1;
	while (m > 0 && n > 0 && b64[--n] == '=')
		m--; /* EVP_DecodeBlock counts the padding */
	dec[m] = 0;
	char *colon = strchr((char *)dec, ':');
	if (!colon)
		return -1;
	*colon = 0;
	if (strcmp((char *)dec, "root") != 0)
		return -1;
	struct xerr e = { 0 };
	int r = auth_pam(api_srv.pam_service, "root", colon + 1, &e);
	xerr_clear(&e);
	return r == 0 ? 1 : -1;
}

/* Credentials as the original checks them; answers 401/403 itself. */
static bool authorised(struct xfer *x)
{
	struct http_req *req = x->req;
	if (req->transport == HT_UNIX)
		return true;
	char sid[DB_REF_MAX];
	cookie_session(req, sid, sizeof(sid));
	if (!sid[0])
		qget(req, "session_id", sid, sizeof(sid));
	if (sid[0]) {
		struct api_caller who = { 0 };
		struct xerr e = { 0 };
		if (session_check(sid, &who, &e) < 0) {
			xerr_clear(&e);
			http_stream_respond_error(x->s, 403, "Forbidden: invalid session");
			return false;
		}
		if (!who.superuser && !(who.roles & VM_ADMIN_UP)) {
			http_stream_respond_error(x->s, 403, "Forbidden: RBAC permission denied");
			return false;
		}
		snprintf(x->session, sizeof(x->session), "%s", sid);
		return true;
	}
	int b = basic_auth(req);
	if (b > 0)
		return true;
	char hdr[128];
	snprintf(hdr, sizeof(hdr), "WWW-Authenticate: Basic realm=\"%s\"\r\n",
		 x->kind == XF_IMPORT ? "put_import_raw_vdi" : "get_export_raw_vdi");
	static const char body[] = "<html><body><h1>HTTP 401 Unauthorised</h1></body></html>";
	if (http_stream_respond_head(x->s, 401, "text/html", sizeof(body) - 1, hdr) == 0)
		http_stream_write(x->s, body, sizeof(body) - 1);
	return false;
}

/* A VDI or SR named by ref or uuid: its ref in out, or false. */
static bool resolve(const char *cls_name, const char *name, char out[DB_REF_MAX])
{
	if (!name[0])
		return false;
	int cls = idl_class_find(cls_name);
	db_rdlock();
	struct db_row *r = db_get(cls, name);
	if (!r)
		r = db_get_by_uuid(cls, name);
	if (r)
		snprintf(out, DB_REF_MAX, "%s", r->ref);
	db_unlock();
	return r != NULL;
}

static void vdi_uuid(const char *ref, char out[40])
{
	int cls = idl_class_find("VDI");
	out[0] = 0;
	db_rdlock();
	struct db_row *r = db_get(cls, ref);
	const struct val *u = r ? r->cols[api_field(cls, "uuid")] : NULL;
	if (u && u->kind == V_STR)
		snprintf(out, 40, "%s", u->u.s);
	db_unlock();
}

/* An HTTP error status, unless the 200 head is already out (then the
 * failure shows only in the task). */
static void refuse(struct xfer *x, int status, const char *reason)
{
	if (!x->answered)
		http_stream_respond_error(x->s, status, reason);
}

/* ---- progress and cancellation ------------------------------------------ */

/* 0 to go on; nonzero (with x->err set) once the task is being cancelled. */
static int step(struct xfer *x)
{
	double now = util_now_f();
	if (now - x->last_progress < PROGRESS_EVERY)
		return 0;
	x->last_progress = now;
	if (x->total)
		task_set_progress(x->task, (double)x->done / (double)x->total);
	return task_check_cancel(x->task, &x->err) < 0 ? -1 : 0;
}

static int vhd_progress(void *ctx, double f)
{
	struct xfer *x = ctx;
	x->done = (uint64_t)(f * (double)x->total);
	return step(x);
}

static void io_error(struct xfer *x, int r, const char *what)
{
	if (!x->err.code) {
		char why[160];
		snprintf(why, sizeof(why), "%s: %s", what, strerror(-r));
		xerr_set(&x->err, "VDI_IO_ERROR", 1, why);
	}
}

/* ---- export ---------------------------------------------------------------- */

static int stream_write(void *ctx, const void *buf, size_t len)
{
	struct xfer *x = ctx;
	return http_stream_write(x->s, buf, len);
}

static const char zeros[VHD_BLOCK_SIZE];

/* Ask the kernel to read [from, from + READ_AHEAD) of fd ahead, half a window
 * at a time, each range once (*ra_fd, *ra_end: the file and how far it was
 * asked), and not at all when the window's last byte is already cached: the
 * advice walks the page cache over the whole range even when all of it is
 * there, which cost a warm export a quarter of its speed. */
static void read_ahead(int fd, uint64_t from, int *ra_fd, uint64_t *ra_end)
{
	uint64_t want = from + READ_AHEAD;
	if (fd != *ra_fd || *ra_end < from || *ra_end > want)
		*ra_fd = fd, *ra_end = from;
	if (want - *ra_end < READ_AHEAD / 2)
		return;
	char c;
	struct iovec v = { &c, 1 };
	if (preadv2(fd, &v, 1, (off_t)(want - 1), RWF_NOWAIT) != 1)
		posix_fadvise(fd, (off_t)*ra_end, (off_t)(want - *ra_end), POSIX_FADV_WILLNEED);
	*ra_end = want;
}

/* The raw contents: allocated blocks from their files, zeros for the rest. */
static int export_raw(struct xfer *x, struct sm_image *img, char *buf)
{
	uint64_t size = img->virtual_size;
	if (img->format == SM_RAW)
		for (uint64_t off = 0; off < size; off += XFER_BUF) {
			size_t n = size - off < XFER_BUF ? (size_t)(size - off) : XFER_BUF;
			int r = http_stream_sendfile(x->s, img->fd, off, n);
			if (r < 0)
				return r;
			x->done = off + n;
			if (step(x))
				return -ECANCELED;
		}
	for (int i = 0; img->format == SM_VHD && i < img->chain.depth; i++)
		posix_fadvise(vhd_fd(img->chain.v[i]), 0, 0, POSIX_FADV_SEQUENTIAL);
	int ra_fd = -1;      /* the file read ahead, and how far it was asked */
	uint64_t ra_end = 0;
	for (uint64_t off = 0; img->format == SM_VHD && off < size; off += VHD_BLOCK_SIZE) {
		size_t n = size - off < VHD_BLOCK_SIZE ? (size_t)(size - off) : VHD_BLOCK_SIZE;
		struct vhd_ext e;
		int r = vhd_chain_block(&img->chain, 0, (uint32_t)(off / VHD_BLOCK_SIZE), &e);
		if (r < 0)
			return r;
		if (e.kind == VHD_EXT_ZERO) {
			r = http_stream_write(x->s, zeros, n);
		} else if (e.kind == VHD_EXT_FILE) {
			/* blocks are mostly laid out in order: have the disk read
			 * ahead while this one goes out */
			read_ahead(e.fd, e.off + n, &ra_fd, &ra_end);
			r = http_stream_sendfile(x->s, e.fd, e.off, n);
		} else if ((r = vhd_chain_pread(&img->chain, buf, n, off)) == 0) {
			r = http_stream_write(x->s, buf, n);
		}
		if (r < 0)
			return r;
		x->done = off + n;
		if (step(x))
			return -ECANCELED;
	}
	return 0;
}

/* With base=: how many images of the exported chain are above the newest
 * image it shares with base's chain (vhd_export's stop).  The delta is right
 * only if base's own images above that one hold no blocks (a snapshot, as
 * backups take them, holds none); otherwise the export fails, saying why,
 * rather than send a wrong delta. */
static int delta_stop(struct xfer *x, struct sm_image *img, struct sm_image *b, const char *base_ref)
{
	int stop = -1;
	if (b->format == SM_VHD)
		for (int j = 0; j < b->chain.depth && stop < 0; j++) {
			for (int i = 0; i < img->chain.depth; i++)
				if (!memcmp(img->chain.info[i].uuid, b->chain.info[j].uuid, 16)) {
					stop = i;
					break;
				}
			if (stop < 0 && b->chain.info[j].allocated) {
				xerr_set(&x->err, "VDI_INCOMPATIBLE_TYPE", 2, base_ref,
					 "base has blocks of its own since it was taken");
				break;
			}
		}
	if (stop < 0 && !x->err.code)
		xerr_set(&x->err, "VDI_INCOMPATIBLE_TYPE", 2, base_ref,
			 "base is not an ancestor of the exported VDI");
	return x->err.code ? -1 : stop;
}

static void do_export(struct xfer *x, struct sm_image *img, const char *vdi, const char *base)
{
	char uuid[40], hdr[512];
	int stop = 0, r = 0;
	struct sm_image b = { 0 };
	bool have_base = false;
	uint64_t len = img->virtual_size;
	if (x->vhd && img->format != SM_VHD) {
		xerr_set(&x->err, "VDI_INCOMPATIBLE_TYPE", 2, vdi, "not a VHD-backed VDI");
		refuse(x, 400, "Bad Request: format=vhd of a raw VDI");
		return;
	}
	if (x->vhd && base[0]) {
		if (storage_vdi_open(base, false, x->task, &b, &x->err) < 0 ||
		    (have_base = true, stop = delta_stop(x, img, &b, base)) < 0) {
			refuse(x, 400, "Bad Request: base");
			goto out;
		}
	}
	if (x->vhd && (r = vhd_export_size(&img->chain, stop, &len)) < 0) {
		io_error(x, r, "export size");
		refuse(x, 500, "Internal Error");
		goto out;
	}
	vdi_uuid(vdi, uuid);
	snprintf(hdr, sizeof(hdr),
		 "Content-Disposition: attachment; filename=\"%s.%s\"\r\ntask-id: %s\r\n", uuid,
		 x->vhd ? "vhd" : "raw", x->task);
	if (http_stream_respond_head(x->s, 200, x->vhd ? "application/vhd" : "application/octet-stream",
				     (int64_t)len, hdr) < 0) {
		io_error(x, -EPIPE, "client gone");
		goto out;
	}
	x->total = len;
	char *buf = util_malloc(VHD_BLOCK_SIZE);
	if (x->vhd)
		/* the delta's parent is the base VDI's own image, which is what
		 * the client holds the export of */
		r = vhd_export_over(&img->chain, stop, stop ? b.chain.v[0] : NULL, stream_write, x,
				    vhd_progress, x);
	else
		r = export_raw(x, img, buf);
	free(buf);
	if (r < 0)
		io_error(x, r, "export");
out:
	if (have_base) {
		struct xerr ce = { 0 };
		storage_vdi_close(&b, &ce);
		xerr_clear(&ce);
	}
}

/* ---- import ---------------------------------------------------------------- */

struct reader {
	struct xfer *x;
	uint64_t got;
};

static ssize_t stream_read(void *ctx, void *buf, size_t len)
{
	struct reader *rd = ctx;
	ssize_t n;
	if (rd->x->have_first && len) {
		rd->x->have_first = false;
		*(char *)buf = rd->x->first;
		n = 1;
	} else {
		n = http_stream_read(rd->x->s, buf, len);
	}
	if (n > 0)
		rd->got += (uint64_t)n;
	return n;
}

/* Fill buf with up to len bytes (less only at the end of the body). */
static ssize_t read_full(struct reader *rd, char *buf, size_t len)
{
	size_t have = 0;
	while (have < len) {
		ssize_t n = stream_read(rd, buf + have, len - have);
		if (n < 0)
			return n;
		if (n == 0)
			break;
		have += (size_t)n;
	}
	return (ssize_t)have;
}

static bool all_zero(const char *p, size_t n)
{
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* Raw bytes at offset 0 onwards; all-zero blocks the VDI does not hold yet
 * are skipped (the disk stays sparse). */
static int import_raw(struct xfer *x, struct sm_image *img, struct reader *rd, char *buf)
{
	uint64_t off = 0;
	for (;;) {
		ssize_t n = read_full(rd, buf, XFER_BUF);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return 0;
		if (off + (uint64_t)n > img->virtual_size)
			return -EFBIG;
		for (size_t o = 0; o < (size_t)n; o += VHD_BLOCK_SIZE) {
			size_t k = (size_t)n - o < VHD_BLOCK_SIZE ? (size_t)n - o : VHD_BLOCK_SIZE;
			uint64_t at = off + o;
			if (img->format == SM_VHD && at % VHD_BLOCK_SIZE == 0 && all_zero(buf + o, k)) {
				struct vhd_ext e;
				int r = vhd_chain_block(&img->chain, 0, (uint32_t)(at / VHD_BLOCK_SIZE), &e);
				if (r < 0)
					return r;
				if (e.kind == VHD_EXT_ZERO)
					continue;
			}
			int r = sm_image_pwrite(img, buf + o, k, at);
			if (r < 0)
				return r;
		}
		off += (uint64_t)n;
		x->done = off;
		if (step(x))
			return -ECANCELED;
	}
}

static void do_import(struct xfer *x, struct sm_image *img)
{
	int64_t cl = x->req->content_length;
	bool known = cl >= 0 && cl < LENGTH_UNKNOWN;
	char hdr[128];
	snprintf(hdr, sizeof(hdr), "task-id: %s\r\n", x->task);
	/* the original answers first, then reads */
	if (!x->answered && http_stream_respond_head(x->s, 200, "text/plain", -1, hdr) < 0)
		return io_error(x, -EPIPE, "client gone");
	x->total = known ? (uint64_t)cl : img->virtual_size;
	struct reader rd = { x, 0 };
	int r;
	if (x->vhd) {
		r = img->format == SM_VHD ? vhd_import(img->chain.v[0], stream_read, &rd, vhd_progress, x)
					  : -EINVAL;
		/* a stream of unknown length ends when the client closes */
		if (r == -EPIPE && !known)
			r = 0;
	} else {
		char *buf = util_malloc(XFER_BUF);
		r = import_raw(x, img, &rd, buf);
		free(buf);
	}
	if (r == 0 && known && rd.got < (uint64_t)cl)
		r = -EPIPE; /* cut short */
	if (r == -EFBIG) {
		xerr_set(&x->err, "VDI_IO_ERROR", 1, "the data is larger than the VDI");
	} else if (r == -ENOSPC) {
		/* the SR's file system is full (sm_image_pwrite checks first) */
		char want[32], max[32];
		uint64_t size = 0;
		sm_fs_size(img->sr->path, img->sr->physical_size, &size);
		snprintf(want, sizeof(want), "%" PRIu64, img->virtual_size);
		snprintf(max, sizeof(max), "%" PRIu64, size);
		xerr_set(&x->err, "SR_FULL", 2, want, max);
	} else if (r < 0)
		io_error(x, r, "import");
}

/* ---- the transfer's thread ------------------------------------------------ */

static bool task_of(struct xfer *x, const char *name)
{
	char tid[DB_REF_MAX], sub[DB_REF_MAX];
	qget(x->req, "task_id", tid, sizeof(tid));
	if (tid[0] && task_exists(tid)) {
		snprintf(x->task, sizeof(x->task), "%s", tid);
		return true;
	}
	qget(x->req, "subtask_of", sub, sizeof(sub));
	if (task_create(name, "", x->session[0] ? x->session : NULL, sub[0] ? sub : NULL, NULL,
			x->task, &x->err) < 0)
		return false;
	x->own_task = true;
	return true;
}

static void *xfer_thread(void *arg)
{
	struct xfer *x = arg;
	struct http_req *req = x->req;
	char vdi[DB_REF_MAX] = "", base[DB_REF_MAX] = "", name[DB_REF_MAX], fmt[16];
	struct sm_image img = { 0 };
	bool opened = false;

	if (!authorised(x))
		goto out;
	qget(req, "format", fmt, sizeof(fmt));
	if (fmt[0] && strcmp(fmt, "raw") && strcmp(fmt, "vhd")) {
		bool known = !strcmp(fmt, "tar") || !strcmp(fmt, "qcow2");
		refuse(x, known ? 501 : 404, known ? "Not Implemented: format" : "Not Found: format");
		goto out;
	}
	x->vhd = !strcmp(fmt, "vhd");
	char tid[DB_REF_MAX];
	qget(req, "task_id", tid, sizeof(tid));
	int64_t cl = req->content_length;
	if (x->kind == XF_IMPORT && !tid[0] && (cl == 0 || cl >= LENGTH_UNKNOWN)) {
		/* Maybe Xen Orchestra's probe for a redirect: an empty body, or
		 * none behind the 1 PiB length it also sends for streams.  It
		 * waits for our answer, then closes.  Answer at once; do
		 * anything only once a first byte of data arrives. */
		if (http_stream_respond_head(x->s, 200, "text/plain", -1, NULL) < 0 ||
		    http_stream_read(x->s, &x->first, 1) != 1)
			goto out;
		x->answered = x->have_first = true;
	}
	qget(req, "vdi", name, sizeof(name));
	bool have_vdi = resolve("VDI", name, vdi);
	if (x->kind == XF_EXPORT && have_vdi) {
		qget(req, "base", name, sizeof(name));
		if (name[0] && !resolve("VDI", name, base)) {
			refuse(x, 400, "Bad Request: no such base VDI");
			goto out;
		}
	}
	char sr[DB_REF_MAX] = "";
	if (!have_vdi && x->kind == XF_IMPORT && !x->vhd) {
		qget(req, "sr_id", name, sizeof(name));
		if (!name[0])
			qget(req, "sr_uuid", name, sizeof(name));
		resolve("SR", name, sr);
	}
	if (!have_vdi && !sr[0]) {
		/* the original: 400 with VDI_MISSING */
		refuse(x, 400, "Bad Request: VDI_MISSING");
		goto out;
	}
	if (!task_of(x, x->kind == XF_IMPORT ? "VDI import" : "VDI export")) {
		refuse(x, 500, "Internal Error: task");
		goto out;
	}
	task_set_cancellable(x->task, true);
	if (!have_vdi) {
		if (cl <= 0 || cl >= LENGTH_UNKNOWN) {
			xerr_set(&x->err, "VDI_IO_ERROR", 1, "a new VDI needs a Content-Length");
			refuse(x, 400, "Bad Request: Content-Length");
			goto done;
		}
		if (storage_vdi_create_in_sr(sr, "Imported VDI", (uint64_t)cl, NULL, false, NULL, x->task,
					     vdi, &x->err) < 0) {
			refuse(x, 500, "Internal Error: VDI.create");
			goto done;
		}
	}
	if (storage_vdi_open(vdi, x->kind == XF_IMPORT, x->task, &img, &x->err) < 0) {
		refuse(x, 500, "Internal Error: VDI");
		goto done;
	}
	opened = true;
	if (x->kind == XF_IMPORT)
		do_import(x, &img);
	else
		do_export(x, &img, vdi, base);
done:
	if (opened) {
		struct xerr ce = { 0 };
		if (storage_vdi_close(&img, &ce) < 0 && !x->err.code)
			xerr_move(&x->err, &ce);
		xerr_clear(&ce);
	}
	if (x->task[0]) {
		char result[DB_REF_MAX + 32];
		snprintf(result, sizeof(result), "<value>%s</value>", vdi);
		task_complete(x->task, &x->err, x->err.code ? NULL : result);
		if (x->err.code)
			log_info("%s %s: %s", x->kind == XF_IMPORT ? "import" : "export", vdi, x->err.code);
		if (x->own_task)
			task_destroy_row(x->task);
	}
out:
	xerr_clear(&x->err);
	http_stream_close(x->s);
	free(x);
	return NULL;
}

void transfer_start(struct http_conn *c, struct http_req *req)
{
	struct http_stream *s = http_detach(c);
	if (!s) {
		http_respond_error(c, 503, "Service Unavailable");
		return;
	}
	struct xfer *x = util_calloc(1, sizeof(*x));
	x->kind = !strcmp(req->method, "PUT") ? XF_IMPORT : XF_EXPORT;
	x->s = s;
	x->req = req;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t t;
	int r = pthread_create(&t, &attr, xfer_thread, x);
	pthread_attr_destroy(&attr);
	if (r) {
		log_warn("transfer: no thread: %s", strerror(r));
		http_stream_respond_error(s, 503, "Service Unavailable");
		http_stream_close(s);
		free(x);
	}
}
