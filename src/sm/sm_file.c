/* sm_file.c — the "file" SR: a directory of VHD images (docs/storage.md).
 *
 *   <dir>/<location>.vhd        a VDI (dynamic, or differencing over a base),
 *                               or a hidden read-only base of snapshots
 *   <dir>/.sr-uuid              the SR's uuid (written by sr_create)
 *   <dir>/.tmp.<location>.vhd   a VDI being created
 *   <dir>/.snap.<B>.<N>.<L>     a snapshot of L in progress (B the new base,
 *                               N the new VDI): empty, the name says it all
 *   <dir>/.coalesced.<C>.vhd    a hidden image already merged into its parent,
 *                               whose children are being relinked to that parent
 *
 * Snapshots rename and create small files; gc merges a hidden parent with
 * its only child.  Every step is ordered so that a crash at any point leaves
 * either the old or the new state, and recover() (run under the SR lock
 * at attach and before every scan, gc and delete) finishes or undoes what a
 * crash interrupted.  The argument, step by step, is in docs/storage.md. */
#include "sm/sm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"

#define CHAIN_MAX 30   /* the original's MAX_CHAIN_SIZE */
#define LOC_NAME_MAX 160 /* room for the prefixes and suffixes of our file names */
#define SNAP_PREFIX ".snap."
#define TMP_PREFIX ".tmp."
#define COALESCED_PREFIX ".coalesced."
#define ID_FILE ".sr-uuid"
#define STEP(where) do { if (sm_test_step) sm_test_step(where); } while (0)

/* A VDI opened through vdi_open, and when it last changed (a write open,
 * resize or snapshot): gc compares with what it saw before copying. */
struct file_open {
	char loc[SM_LOC_MAX];
	int readers, writers;
	uint64_t touched;
};

struct file_sr {
	char dir[PATH_MAX]; /* absolute: the parents' absolute locators use it */
	struct file_open *opens;
	size_t n_opens;
	uint64_t seq;
	pthread_mutex_t gc_lock; /* one gc at a time; detach waits on it */
	atomic_int stopping;
};

/* One image of the directory. */
struct node {
	struct sm_vdi v;
	uint8_t uuid[16], puuid[16];
	int up;     /* the parent's index, -1 if none or missing */
	int nchild;
	int child;  /* a child's index (the only one when nchild == 1) */
	bool named; /* some child has this image's uuid as its parent uuid */
};

struct graph {
	struct node *n;
	size_t len;
};

/* ---- names ------------------------------------------------------------------- */

static bool loc_ok(const char *loc)
{
	size_t n = strnlen(loc, LOC_NAME_MAX + 1);
	return n > 0 && n <= LOC_NAME_MAX && loc[0] != '.' && !strchr(loc, '/');
}

/* dir/<pre><name><suf> */
static int path3(char out[PATH_MAX], const char *dir, const char *pre, const char *name,
		 const char *suf)
{
	if (strlen(dir) + strlen(pre) + strlen(name) + strlen(suf) + 2 > PATH_MAX)
		return -ENAMETOOLONG;
	stpcpy(stpcpy(stpcpy(stpcpy(stpcpy(out, dir), "/"), pre), name), suf);
	return 0;
}

static int img_path(char out[PATH_MAX], const char *dir, const char *loc)
{
	return path3(out, dir, "", loc, ".vhd");
}

/* The location a parent locator names: "./P.vhd" or "/dir/P.vhd" -> "P". */
static void locator_loc(const char *locator, char out[SM_LOC_MAX])
{
	const char *b = strrchr(locator, '/');
	b = b ? b + 1 : locator;
	size_t n = strlen(b);
	if (n > 4 && strcmp(b + n - 4, ".vhd") == 0)
		n -= 4;
	if (n >= SM_LOC_MAX)
		n = SM_LOC_MAX - 1;
	memcpy(out, b, n);
	out[n] = 0;
}

/* Location of a directory entry "<loc>.vhd" (not one of our dot files). */
static bool entry_loc(const char *name, char out[SM_LOC_MAX])
{
	size_t n = strlen(name);
	if (name[0] == '.' || n <= 4 || n - 4 >= SM_LOC_MAX || strcmp(name + n - 4, ".vhd") != 0)
		return false;
	memcpy(out, name, n - 4);
	out[n - 4] = 0;
	return true;
}

/* A regular file (not a directory or link that happens to be named *.vhd). */
static bool is_regular(DIR *d, const struct dirent *e)
{
	struct stat st;
	if (e->d_type != DT_UNKNOWN)
		return e->d_type == DT_REG;
	return fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

static bool starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* rename that never replaces newpath (falls back where renameat2 is missing). */
static int rename_noreplace(const char *from, const char *to)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (access(to, F_OK) == 0)
		return -EEXIST;
	return rename(from, to) < 0 ? -errno : 0;
}

static int unlink_ok(const char *path)
{
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

/* ---- sizes ------------------------------------------------------------------- */

static uint64_t round_size(uint64_t size)
{
	if (size < VHD_BLOCK_SIZE)
		size = VHD_BLOCK_SIZE; /* the original's MIN_VHD_SIZE */
	return (size + VHD_BLOCK_SIZE - 1) / VHD_BLOCK_SIZE * VHD_BLOCK_SIZE;
}

static uint64_t bat_bytes(uint64_t size)
{
	uint64_t entries = (size + VHD_BLOCK_SIZE - 1) / VHD_BLOCK_SIZE;
	return (entries * 4 + VHD_SECTOR - 1) / VHD_SECTOR * VHD_SECTOR;
}

/* What a new, empty image of size takes (headers, locators, BAT, batmap). */
static uint64_t empty_image_bytes(uint64_t size)
{
	return 2048 + 4 * 4096 + bat_bytes(size) + VHD_SECTOR + bat_bytes(size) / 32 + VHD_SECTOR;
}

/* ---- images ------------------------------------------------------------------ */

/* The node of dir/<loc>.vhd (links not set). */
static int node_read(const char *dir, const char *loc, struct node *nd)
{
	char path[PATH_MAX];
	struct vhd *v;
	int r = img_path(path, dir, loc);
	if (r == 0)
		r = vhd_open(path, VHD_RDONLY, &v);
	if (r < 0)
		return r;
	struct vhd_info *info = util_malloc(sizeof(*info));
	struct stat st;
	r = vhd_get_info(v, info);
	if (r == 0 && fstat(vhd_fd(v), &st) < 0)
		r = -errno;
	if (r == 0) {
		memset(nd, 0, sizeof(*nd));
		snprintf(nd->v.location, sizeof(nd->v.location), "%s", loc);
		if (info->type == VHD_DIFF)
			locator_loc(info->parent_path, nd->v.parent);
		nd->v.virtual_size = info->virtual_size;
		nd->v.physical_utilisation = (uint64_t)st.st_blocks * 512;
		nd->v.hidden = info->hidden;
		nd->v.read_only = info->hidden;
		memcpy(nd->uuid, info->uuid, 16);
		memcpy(nd->puuid, info->parent_uuid, 16);
		nd->up = -1;
		nd->child = -1;
	}
	free(info);
	vhd_close(v);
	return r;
}

static int set_hidden(const char *path, bool hidden)
{
	struct vhd *v;
	int r = vhd_open(path, VHD_RDWR, &v);
	if (r < 0)
		return r;
	r = vhd_set_hidden(v, hidden);
	vhd_close(v);
	return r;
}

static int get_info(const char *path, struct vhd_info *info)
{
	struct vhd *v;
	int r = vhd_open(path, VHD_RDONLY, &v);
	if (r < 0)
		return r;
	r = vhd_get_info(v, info);
	vhd_close(v);
	return r;
}

/* ---- crash recovery ---------------------------------------------------------- */

/* Is child a sound differencing image over parent? */
static bool is_child_of(const char *child, const char *parent)
{
	struct vhd_info *c = util_malloc(sizeof(*c)), *p = util_malloc(sizeof(*p));
	bool ok = vhd_check(child, NULL, 0) == 0 && get_info(child, c) == 0 &&
		  get_info(parent, p) == 0 && c->type == VHD_DIFF &&
		  memcmp(c->parent_uuid, p->uuid, 16) == 0;
	free(c);
	free(p);
	return ok;
}

/* Finish or undo the snapshot of L whose marker is dir/.snap.<B>.<N>.<L>.
 * back: undo even if it got to the end (the snapshot call is failing). */
static int snap_finish(const char *dir, const char *marker, bool back)
{
	const char *s = marker + strlen(SNAP_PREFIX);
	char B[37], N[37], L[SM_LOC_MAX];
	char pm[PATH_MAX], pb[PATH_MAX], pn[PATH_MAX], pl[PATH_MAX];
	if (strlen(s) < 75 || s[36] != '.' || s[73] != '.' || strlen(s + 74) >= SM_LOC_MAX) {
		log_err("sm file %s: unknown snapshot marker %s left alone", dir, marker);
		return -EINVAL;
	}
	memcpy(B, s, 36), B[36] = 0;
	memcpy(N, s + 37, 36), N[36] = 0;
	snprintf(L, sizeof(L), "%s", s + 74);
	int r = path3(pm, dir, "", marker, "");
	if (r == 0)
		r = img_path(pb, dir, B);
	if (r == 0)
		r = img_path(pn, dir, N);
	if (r == 0)
		r = img_path(pl, dir, L);
	if (r < 0)
		return r;

	if (access(pb, F_OK) < 0) {
		/* L was never renamed: it is untouched; N cannot exist yet */
		r = unlink_ok(pn);
	} else if (!back && is_child_of(pl, pb) && is_child_of(pn, pb)) {
		/* every file is there: only the base's hidden flag may be missing */
		log_info("sm file %s: snapshot of %s completed (base %s, new %s)", dir, L, B, N);
		r = set_hidden(pb, true);
	} else {
		/* back to the start: nobody has written to the new L (the snapshot
		 * held the SR lock), so the base replaces it whole */
		log_info("sm file %s: snapshot of %s undone (base %s back to %s)", dir, L, B, L);
		r = unlink_ok(pn);
		if (r == 0 && rename(pb, pl) < 0)
			r = -errno;
		if (r == 0)
			r = set_hidden(pl, false);
		if (r == 0)
			r = sm_dir_sync(dir);
	}
	if (r == 0)
		r = unlink_ok(pm);
	if (r < 0)
		log_err("sm file %s: recovering snapshot %s: %s", dir, marker, strerror(-r));
	return r;
}

/* dir/.coalesced.<C>.vhd was merged into its parent P: point C's children at
 * P, then remove it. */
static int coalesced_finish(const char *dir, const char *name)
{
	char pc[PATH_MAX], pp[PATH_MAX], rel[SM_LOC_MAX + 8], P[SM_LOC_MAX], K[SM_LOC_MAX];
	struct vhd_info *ci = util_malloc(sizeof(*ci)), *ki = util_malloc(sizeof(*ki));
	int r = path3(pc, dir, "", name, "");
	if (r == 0)
		r = get_info(pc, ci);
	if (r == 0 && ci->type != VHD_DIFF)
		r = -EINVAL;
	if (r == 0) {
		locator_loc(ci->parent_path, P);
		snprintf(rel, sizeof(rel), "./%s.vhd", P);
		r = img_path(pp, dir, P);
	}
	DIR *d = r == 0 ? opendir(dir) : NULL;
	if (r == 0 && !d)
		r = -errno;
	struct dirent *e;
	while (r == 0 && (e = readdir(d))) {
		char pk[PATH_MAX];
		if (!entry_loc(e->d_name, K) || !is_regular(d, e) || img_path(pk, dir, K) < 0 ||
		    get_info(pk, ki) < 0)
			continue;
		if (ki->type != VHD_DIFF || memcmp(ki->parent_uuid, ci->uuid, 16) != 0)
			continue;
		struct vhd *v;
		r = vhd_open(pk, VHD_RDWR, &v);
		if (r == 0) {
			r = vhd_set_parent(v, pp, rel);
			vhd_close(v);
		}
		if (r == 0)
			log_info("sm file %s: %s relinked to %s", dir, K, P);
		STEP("gc: relinked");
	}
	if (d)
		closedir(d);
	if (r == 0)
		r = unlink_ok(pc);
	STEP("gc: merged child removed");
	if (r == 0)
		r = sm_dir_sync(dir);
	if (r < 0)
		log_err("sm file %s: finishing the merge of %s: %s", dir, name, strerror(-r));
	free(ci);
	free(ki);
	return r;
}

/* Finish or undo whatever a crash interrupted (see the top of the file). */
static int recover(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	char **names = NULL;
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (starts(e->d_name, TMP_PREFIX) || starts(e->d_name, SNAP_PREFIX) ||
		    starts(e->d_name, COALESCED_PREFIX)) {
			names = util_realloc(names, (n + 1) * sizeof(*names));
			names[n++] = util_strdup(e->d_name);
		}
	}
	closedir(d);
	int r = 0;
	/* images being created, then snapshots, then merges (a snapshot's undo
	 * never involves a merged image; a merge's relink may involve a
	 * snapshot's files, so those must be settled first) */
	for (int pass = 0; pass < 3; pass++) {
		for (size_t i = 0; i < n; i++) {
			char p[PATH_MAX];
			int k = 0;
			if (pass == 0 && starts(names[i], TMP_PREFIX)) {
				log_info("sm file %s: removing %s (an interrupted create)", dir, names[i]);
				k = path3(p, dir, "", names[i], "");
				if (k == 0)
					k = unlink_ok(p);
			} else if (pass == 1 && starts(names[i], SNAP_PREFIX)) {
				k = snap_finish(dir, names[i], false);
			} else if (pass == 2 && starts(names[i], COALESCED_PREFIX)) {
				k = coalesced_finish(dir, names[i]);
			}
			if (k < 0 && r == 0)
				r = k;
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

/* ---- the directory as a graph ------------------------------------------------ */

static void graph_free(struct graph *g)
{
	free(g->n);
	g->n = NULL;
	g->len = 0;
}

static int graph_find(const struct graph *g, const char *loc)
{
	for (size_t i = 0; i < g->len; i++)
		if (strcmp(g->n[i].v.location, loc) == 0)
			return (int)i;
	return -1;
}

/* Recover, then read every image and link children to parents.  A parent
 * that is not hidden gets hidden (nothing may write to a parent; only a
 * crash between a merge's two last steps leaves one so).  An image that
 * cannot be read fails the whole load: gc must not decide anything about
 * a tree it cannot see whole. */
static int graph_load(const char *dir, struct graph *g)
{
	g->n = NULL;
	g->len = 0;
	int r = recover(dir);
	if (r < 0)
		return r;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	size_t cap = 0;
	struct dirent *e;
	char loc[SM_LOC_MAX];
	while (r == 0 && (e = readdir(d))) {
		if (!entry_loc(e->d_name, loc) || !is_regular(d, e))
			continue;
		if (g->len == cap) {
			cap = cap ? 2 * cap : 16;
			g->n = util_realloc(g->n, cap * sizeof(*g->n));
		}
		r = node_read(dir, loc, &g->n[g->len]);
		if (r < 0)
			log_err("sm file %s: cannot read %s.vhd: %s", dir, loc, strerror(-r));
		else
			g->len++;
	}
	closedir(d);
	for (size_t i = 0; r == 0 && i < g->len; i++) {
		struct node *c = &g->n[i];
		if (!c->v.parent[0])
			continue;
		int p = graph_find(g, c->v.parent);
		if (p < 0) {
			log_warn("sm file %s: the parent %s of %s is missing", dir, c->v.parent,
				 c->v.location);
			continue;
		}
		/* counted as a child either way: gc must never remove or merge
		 * a file that an image names */
		if (memcmp(g->n[p].uuid, c->puuid, 16) == 0)
			g->n[p].named = true;
		else
			log_warn("sm file %s: %s names %s as its parent, whose uuid differs", dir,
				 c->v.location, c->v.parent);
		c->up = p;
		g->n[p].nchild++;
		g->n[p].child = (int)i;
	}
	for (size_t i = 0; r == 0 && i < g->len; i++) {
		struct node *p = &g->n[i];
		char path[PATH_MAX];
		if (!p->named || p->v.hidden)
			continue;
		log_warn("sm file %s: hiding %s, a parent", dir, p->v.location);
		r = img_path(path, dir, p->v.location);
		if (r == 0)
			r = set_hidden(path, true);
		p->v.hidden = p->v.read_only = true;
	}
	if (r < 0)
		graph_free(g);
	return r;
}

/* ---- opened VDIs ------------------------------------------------------------- */

static struct file_open *open_get(struct file_sr *f, const char *loc, bool create)
{
	for (size_t i = 0; i < f->n_opens; i++)
		if (strcmp(f->opens[i].loc, loc) == 0)
			return &f->opens[i];
	if (!create)
		return NULL;
	f->opens = util_realloc(f->opens, (f->n_opens + 1) * sizeof(*f->opens));
	struct file_open *o = &f->opens[f->n_opens++];
	memset(o, 0, sizeof(*o));
	snprintf(o->loc, sizeof(o->loc), "%s", loc);
	return o;
}

static bool is_open(struct file_sr *f, const char *loc, bool writers_only)
{
	struct file_open *o = open_get(f, loc, false);
	return o && (o->writers || (!writers_only && o->readers));
}

static void touch(struct file_sr *f, const char *loc)
{
	open_get(f, loc, true)->touched = ++f->seq;
}

static bool touched_since(struct file_sr *f, const char *loc, uint64_t seq)
{
	struct file_open *o = open_get(f, loc, false);
	return o && o->touched > seq;
}

static void open_forget(struct file_sr *f, const char *loc)
{
	struct file_open *o = open_get(f, loc, false);
	if (o && !o->readers && !o->writers)
		*o = f->opens[--f->n_opens];
}

/* ---- SR ---------------------------------------------------------------------- */

static int read_id(const char *dir, char uuid[37])
{
	char p[PATH_MAX];
	int r = path3(p, dir, "", ID_FILE, "");
	if (r < 0)
		return r;
	FILE *fp = fopen(p, "re");
	if (!fp)
		return -errno;
	r = fscanf(fp, "%36s", uuid) == 1 && util_uuid_valid(uuid) ? 0 : -EINVAL;
	fclose(fp);
	return r;
}

static int file_sr_create(const char *uuid, const char *dir, uint64_t physical_size)
{
	char id[37], p[PATH_MAX];
	int r = util_mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	if (read_id(dir, id) == 0)
		return strcmp(id, uuid) == 0 ? 0 : -EEXIST;
	/* as the original: the directory must be empty (a mount point's
	 * lost+found excepted) */
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	while (r == 0 && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "lost+found"))
			r = -EEXIST;
	closedir(d);
	char text[40];
	snprintf(text, sizeof(text), "%s\n", uuid);
	if (r == 0)
		r = path3(p, dir, "", ID_FILE, "");
	if (r == 0)
		r = util_write_file(p, text, 0600);
	if (r == 0)
		r = sm_dir_sync(dir);
	return r;
}

static int file_sr_delete(struct sm_sr *sr)
{
	const char *dir = sr->path;
	struct graph g;
	int r = graph_load(dir, &g);
	if (r < 0)
		return r;
	for (size_t i = 0; i < g.len; i++)
		if (!g.n[i].v.hidden) {
			log_err("sm file %s: SR not empty: %s", dir, g.n[i].v.location);
			r = -ENOTEMPTY;
		}
	for (size_t i = 0; r == 0 && i < g.len; i++) {
		char p[PATH_MAX];
		r = img_path(p, dir, g.n[i].v.location);
		if (r == 0)
			r = unlink_ok(p);
	}
	graph_free(&g);
	char p[PATH_MAX];
	if (r == 0)
		r = path3(p, dir, "", ID_FILE, "");
	if (r == 0)
		r = unlink_ok(p);
	if (r == 0 && rmdir(dir) < 0 && errno != ENOENT)
		log_warn("sm file %s: directory left in place: %s", dir, strerror(errno));
	return r;
}

static int file_attach(struct sm_sr *sr)
{
	struct stat st;
	char id[37];
	if (stat(sr->path, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (read_id(sr->path, id) == 0 && strcmp(id, sr->uuid) != 0) {
		log_err("sm file %s: holds SR %s, not %s", sr->path, id, sr->uuid);
		return -EINVAL;
	}
	struct file_sr *f = util_calloc(1, sizeof(*f));
	if (!realpath(sr->path, f->dir)) {
		int r = -errno;
		free(f);
		return r;
	}
	pthread_mutex_init(&f->gc_lock, NULL);
	pthread_mutex_init(&sr->lock, NULL);
	sr->priv = f;
	/* settle what a crash interrupted; a failure is logged and met again
	 * by the next scan or gc */
	struct graph g;
	pthread_mutex_lock(&sr->lock);
	graph_load(f->dir, &g);
	graph_free(&g);
	pthread_mutex_unlock(&sr->lock);
	return 0;
}

static void file_detach(struct sm_sr *sr)
{
	struct file_sr *f = sr->priv;
	if (!f)
		return;
	atomic_store(&f->stopping, 1);
	pthread_mutex_lock(&f->gc_lock); /* waits for a running gc to stop */
	pthread_mutex_unlock(&f->gc_lock);
	pthread_mutex_destroy(&f->gc_lock);
	for (size_t i = 0; i < f->n_opens; i++)
		if (f->opens[i].readers || f->opens[i].writers)
			log_err("sm file %s: detached while %s is open", f->dir, f->opens[i].loc);
	free(f->opens);
	free(f);
	sr->priv = NULL;
	pthread_mutex_destroy(&sr->lock);
}

static int file_probe(const char *dir, char **xml)
{
	struct stat st;
	char id[37];
	if (stat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	/* the original's answer, as Python's minidom toprettyxml() writes it */
	if (read_id(dir, id) == 0) {
		const char *fmt = "<?xml version=\"1.0\" ?>\n<SRlist>\n\t<SR>\n\t\t<UUID>%s</UUID>\n"
				  "\t</SR>\n</SRlist>\n";
		*xml = util_malloc(strlen(fmt) + 37);
		sprintf(*xml, fmt, id);
	} else {
		*xml = util_strdup("<?xml version=\"1.0\" ?>\n<SRlist/>\n");
	}
	return 0;
}

static int file_space(struct sm_sr *sr, uint64_t *size, uint64_t *utilisation)
{
	const char *dir = ((struct file_sr *)sr->priv)->dir;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	*utilisation = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		struct stat st;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
			*utilisation += (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	return sm_fs_size(dir, sr->physical_size, size);
}

static int file_scan(struct sm_sr *sr, int (*each)(void *ctx, const struct sm_vdi *v), void *ctx)
{
	struct file_sr *f = sr->priv;
	struct graph g;
	pthread_mutex_lock(&sr->lock);
	int r = graph_load(f->dir, &g);
	pthread_mutex_unlock(&sr->lock);
	/* hidden leaves are garbage gc is about to remove: reporting them would
	 * bring back VDIs just deleted (as the original's scan) */
	for (size_t i = 0; r == 0 && i < g.len; i++)
		if (!g.n[i].v.hidden || g.n[i].nchild > 0)
			r = each(ctx, &g.n[i].v);
	graph_free(&g);
	return r;
}

/* ---- VDIs -------------------------------------------------------------------- */

static int file_vdi_stat(struct sm_sr *sr, const char *location, struct sm_vdi *out)
{
	struct node nd;
	if (!loc_ok(location))
		return -ENOENT;
	int r = node_read(((struct file_sr *)sr->priv)->dir, location, &nd);
	if (r == 0)
		*out = nd.v;
	return r;
}

static int file_vdi_create(struct sm_sr *sr, uint64_t size, struct sm_vdi *out)
{
	struct file_sr *f = sr->priv;
	char loc[37], tmp[PATH_MAX], path[PATH_MAX];
	if (size > VHD_MAX_SIZE)
		return -EINVAL;
	size = round_size(size);
	int r = sm_fs_fits(f->dir, empty_image_bytes(size));
	if (r < 0)
		return r;
	util_uuid_v4(loc);
	path3(tmp, f->dir, TMP_PREFIX, loc, ".vhd");
	img_path(path, f->dir, loc);
	pthread_mutex_lock(&sr->lock);
	r = vhd_create_dynamic(tmp, size, 0);
	STEP("create: made");
	if (r == 0)
		r = rename_noreplace(tmp, path);
	STEP("create: renamed");
	if (r == 0)
		r = sm_dir_sync(f->dir);
	if (r < 0)
		unlink_ok(tmp);
	pthread_mutex_unlock(&sr->lock);
	return r < 0 ? r : file_vdi_stat(sr, loc, out);
}

static int file_vdi_delete(struct sm_sr *sr, const char *location)
{
	struct file_sr *f = sr->priv;
	char path[PATH_MAX];
	struct graph g;
	if (!loc_ok(location))
		return -ENOENT;
	pthread_mutex_lock(&sr->lock);
	/* the whole directory, to be sure no image depends on this one */
	int r = graph_load(f->dir, &g);
	int i = r == 0 ? graph_find(&g, location) : -1;
	if (r == 0 && i < 0)
		r = -ENOENT;
	else if (r == 0 && (g.n[i].nchild > 0 || is_open(f, location, false)))
		r = -EBUSY;
	graph_free(&g);
	if (r == 0)
		r = img_path(path, f->dir, location);
	if (r == 0 && unlink(path) < 0)
		r = -errno;
	if (r == 0) {
		r = sm_dir_sync(f->dir);
		open_forget(f, location);
	}
	pthread_mutex_unlock(&sr->lock);
	return r;
}

/* The snapshot (see docs/storage.md, "Snapshot and clone"):
 *   1. create the marker .snap.<B>.<N>.<L>, sync the directory
 *   2. rename L.vhd -> B.vhd (L's data, untouched, under its new name)
 *   3. create L.vhd and N.vhd as differencing images over ./B.vhd (each
 *      synced with the directory)
 *   4. hide B; remove the marker. */
static int file_vdi_snapshot(struct sm_sr *sr, const char *location, struct sm_vdi *out,
			     struct sm_vdi *base)
{
	struct file_sr *f = sr->priv;
	char B[37], N[37], marker[SM_LOC_MAX + 80];
	char pm[PATH_MAX], pl[PATH_MAX], pb[PATH_MAX], pn[PATH_MAX], rel[48];
	struct vhd_chain *c = util_malloc(sizeof(*c));
	if (!loc_ok(location))
		return free(c), -ENOENT;
	util_uuid_v4(B);
	util_uuid_v4(N);
	snprintf(marker, sizeof(marker), SNAP_PREFIX "%s.%s.%s", B, N, location);
	snprintf(rel, sizeof(rel), "./%s.vhd", B);
	int r = path3(pm, f->dir, "", marker, "");
	if (r == 0)
		r = img_path(pl, f->dir, location);
	img_path(pb, f->dir, B);
	img_path(pn, f->dir, N);

	pthread_mutex_lock(&sr->lock);
	if (r == 0)
		r = vhd_chain_open(pl, VHD_RDONLY, c);
	if (r == 0) {
		bool hidden = c->info[0].hidden;
		int depth = c->depth;
		uint64_t size = c->info[0].virtual_size;
		vhd_chain_close(c);
		if (hidden) {
			log_err("sm file %s: %s is a base copy: not snapshotted", f->dir, location);
			r = -EINVAL;
		} else if (depth >= CHAIN_MAX) {
			r = -EMLINK;
		} else if (is_open(f, location, true)) {
			r = -EBUSY;
		} else {
			r = sm_fs_fits(f->dir, 2 * empty_image_bytes(size));
		}
	}
	free(c);
	if (r == 0) {
		int fd = open(pm, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		r = fd < 0 ? -errno : (close(fd), sm_dir_sync(f->dir));
		if (r < 0)
			unlink_ok(pm);
		STEP("snapshot: marker");
	}
	if (r == 0) {
		r = rename_noreplace(pl, pb);
		STEP("snapshot: renamed");
		if (r < 0) {
			unlink_ok(pm);
		} else {
			r = vhd_create_diff(pl, pb, rel);
			STEP("snapshot: leaf made");
			if (r == 0)
				r = vhd_create_diff(pn, pb, rel);
			STEP("snapshot: new VDI made");
			if (r == 0)
				r = set_hidden(pb, true);
			STEP("snapshot: base hidden");
			/* Not synced: until the directory changes again, recover()
			 * would find every file in place and only hide B again. */
			if (r == 0)
				r = unlink_ok(pm);
			STEP("snapshot: done");
			if (r < 0) {
				log_err("sm file %s: snapshot of %s failed: %s", f->dir, location,
					strerror(-r));
				snap_finish(f->dir, marker, true);
			}
		}
	}
	if (r == 0) {
		touch(f, location);
		r = file_vdi_stat(sr, N, out);
		if (r == 0)
			r = file_vdi_stat(sr, B, base);
	}
	pthread_mutex_unlock(&sr->lock);
	return r;
}

static int file_vdi_resize(struct sm_sr *sr, const char *location, uint64_t size, struct sm_vdi *out)
{
	struct file_sr *f = sr->priv;
	char path[PATH_MAX];
	struct vhd *v = NULL;
	struct vhd_info *info = util_malloc(sizeof(*info));
	if (!loc_ok(location))
		return free(info), -ENOENT;
	if (size > VHD_MAX_SIZE)
		return free(info), -EINVAL;
	size = round_size(size);
	pthread_mutex_lock(&sr->lock);
	int r = img_path(path, f->dir, location);
	if (r == 0)
		r = vhd_open(path, VHD_RDWR, &v);
	if (r == 0)
		r = vhd_get_info(v, info);
	if (r == 0 && info->hidden)
		r = -EROFS;
	else if (r == 0 && is_open(f, location, false))
		r = -EBUSY; /* offline only: resize may move blocks under a reader */
	else if (r == 0 && size < info->virtual_size)
		r = -EINVAL;
	if (r == 0 && size > info->virtual_size) {
		/* a bigger BAT may move blocks to the end of the file */
		uint64_t bat = bat_bytes(size);
		uint64_t need = bat + ((uint64_t)info->max_bat * 4 >= bat ? 0 :
				       (bat / info->block_size + 1) * (info->block_size + VHD_SECTOR));
		r = sm_fs_fits(f->dir, need);
		if (r == 0)
			r = vhd_resize(v, size);
		if (r == 0)
			touch(f, location);
	}
	vhd_close(v);
	free(info);
	pthread_mutex_unlock(&sr->lock);
	return r < 0 ? r : file_vdi_stat(sr, location, out);
}

static int file_vdi_open(struct sm_sr *sr, const char *location, bool write, struct sm_image *img)
{
	struct file_sr *f = sr->priv;
	char path[PATH_MAX];
	if (!loc_ok(location))
		return -ENOENT;
	memset(img, 0, sizeof(*img));
	img->fd = -1;
	pthread_mutex_lock(&sr->lock);
	int r = img_path(path, f->dir, location);
	if (r == 0 && write && is_open(f, location, true))
		r = -EBUSY; /* two writers would allocate the same blocks */
	if (r == 0)
		r = vhd_chain_open(path, write ? VHD_RDWR : VHD_RDONLY, &img->chain);
	if (r == 0 && write && img->chain.info[0].hidden) {
		vhd_chain_close(&img->chain);
		r = -EROFS;
	}
	if (r == 0) {
		struct file_open *o = open_get(f, location, true);
		if (write) {
			o->writers++;
			touch(f, location);
		} else {
			o->readers++;
		}
		img->format = SM_VHD;
		img->virtual_size = img->chain.info[0].virtual_size;
		img->sr = sr;
		img->write = write;
		snprintf(img->location, sizeof(img->location), "%s", location);
	} else {
		img->chain.depth = 0;
	}
	pthread_mutex_unlock(&sr->lock);
	return r;
}

static void file_vdi_close(struct sm_image *img)
{
	struct sm_sr *sr = img->sr;
	struct file_sr *f = sr->priv;
	pthread_mutex_lock(&sr->lock);
	struct file_open *o = open_get(f, img->location, false);
	if (o && img->write && o->writers)
		o->writers--;
	else if (o && !img->write && o->readers)
		o->readers--;
	pthread_mutex_unlock(&sr->lock);
	sm_image_release(img);
}

/* ---- garbage collection ------------------------------------------------------ */

struct gc_progress {
	sm_progress_fn p;
	void *ctx;
	struct file_sr *f;
};

static int gc_progress(void *ctx, double fraction)
{
	struct gc_progress *g = ctx;
	if (atomic_load(&g->f->stopping))
		return 1;
	return g->p ? g->p(g->ctx, fraction) : 0;
}

/* Can the hidden g->n[p] and its only child be merged, leaving every
 * writer alone and with nothing changed since seq? */
static bool can_merge(struct file_sr *f, const struct graph *g, int p, uint64_t seq)
{
	const struct node *P = &g->n[p];
	if (!P->v.hidden || P->nchild != 1 || is_open(f, P->v.location, false))
		return false;
	const struct node *C = &g->n[P->child];
	if (touched_since(f, C->v.location, seq))
		return false;
	if (C->nchild == 0)
		return !C->v.hidden && !is_open(f, C->v.location, true);
	for (size_t k = 0; k < g->len; k++)
		if (g->n[k].up == P->child &&
		    (is_open(f, g->n[k].v.location, true) || touched_since(f, g->n[k].v.location, seq)))
			return false;
	return true;
}

/* Is any image whose chain holds g->n[p] open? */
static bool subtree_open(struct file_sr *f, const struct graph *g, int p)
{
	for (size_t k = 0; k < g->len; k++)
		for (int i = (int)k; i >= 0; i = g->n[i].up)
			if (i == p && is_open(f, g->n[k].v.location, false))
				return true;
	return false;
}

/* One step of gc with the SR lock held on entry and on return (dropped
 * around the copy).  1: did something; 0: nothing to do. */
static int gc_step(struct sm_sr *sr, sm_progress_fn pfn, void *pctx)
{
	struct file_sr *f = sr->priv;
	const char *dir = f->dir;
	char pp[PATH_MAX], pc[PATH_MAX];
	struct graph g;
	int r = graph_load(dir, &g);
	if (r < 0)
		return r;

	/* a base nobody needs any more */
	for (size_t i = 0; i < g.len; i++) {
		struct node *n = &g.n[i];
		if (!n->v.hidden || n->nchild || is_open(f, n->v.location, false))
			continue;
		log_info("sm file %s: removing the unused base %s", dir, n->v.location);
		r = img_path(pp, dir, n->v.location);
		if (r == 0 && unlink(pp) < 0)
			r = -errno;
		STEP("gc: base removed");
		if (r == 0)
			r = sm_dir_sync(dir);
		graph_free(&g);
		return r < 0 ? r : 1;
	}

	/* a base with one child: copy the child into it */
	uint64_t seq = f->seq;
	int p = -1;
	for (size_t i = 0; p < 0 && i < g.len; i++) {
		if (!can_merge(f, &g, (int)i, seq))
			continue;
		const struct node *P = &g.n[i], *C = &g.n[P->child];
		if (C->v.virtual_size > P->v.virtual_size && subtree_open(f, &g, (int)i))
			continue; /* growing the base may move its blocks under a reader */
		p = (int)i;
	}
	if (p < 0) {
		graph_free(&g);
		return 0;
	}
	struct node P = g.n[p], C = g.n[P.child];
	bool leaf = C.nchild == 0;
	graph_free(&g);
	img_path(pp, dir, P.v.location);
	img_path(pc, dir, C.v.location);
	struct vhd *vp = NULL, *vc = NULL;
	r = sm_fs_fits(dir, C.v.physical_utilisation);
	if (r == 0)
		r = vhd_open(pp, VHD_RDWR, &vp);
	if (r == 0 && C.v.virtual_size > P.v.virtual_size)
		r = vhd_resize(vp, C.v.virtual_size);
	if (r == 0)
		r = vhd_open(pc, VHD_RDONLY, &vc);
	if (r < 0) {
		log_err("sm file %s: cannot merge %s into %s: %s", dir, C.v.location, P.v.location,
			strerror(-r));
		vhd_close(vp);
		return r;
	}
	log_info("sm file %s: merging %s into %s", dir, C.v.location, P.v.location);

	/* The copy, without the lock: it only writes sectors of P that C hides,
	 * so whatever reads through C (P's only child) sees no change. */
	pthread_mutex_unlock(&sr->lock);
	struct gc_progress gp = {pfn, pctx, f};
	r = vhd_coalesce(vc, vp, gc_progress, &gp);
	vhd_close(vc);
	vhd_close(vp);
	STEP("gc: copied");
	pthread_mutex_lock(&sr->lock);
	if (r < 0) {
		log_err("sm file %s: merging %s into %s: %s", dir, C.v.location, P.v.location,
			strerror(-r));
		return r;
	}

	/* The switch, with the lock: only if the tree is as it was and nobody
	 * wrote to C or its children meanwhile. */
	r = graph_load(dir, &g);
	if (r < 0)
		return r;
	int p2 = graph_find(&g, P.v.location);
	bool same = p2 >= 0 && can_merge(f, &g, p2, seq) &&
		    memcmp(g.n[p2].uuid, P.uuid, 16) == 0 &&
		    strcmp(g.n[g.n[p2].child].v.location, C.v.location) == 0 &&
		    memcmp(g.n[g.n[p2].child].uuid, C.uuid, 16) == 0 &&
		    (g.n[g.n[p2].child].nchild == 0) == leaf &&
		    g.n[g.n[p2].child].v.virtual_size <= g.n[p2].v.virtual_size;
	graph_free(&g);
	if (!same) {
		log_info("sm file %s: %s changed while being merged; later", dir, C.v.location);
		return 1;
	}
	if (leaf) {
		/* P takes C's name: unhidden first (a crash in between leaves a
		 * parent unhidden, which graph_load hides again) */
		r = set_hidden(pp, false);
		STEP("gc: base unhidden");
		if (r == 0 && rename(pp, pc) < 0)
			r = -errno;
		STEP("gc: base renamed");
		if (r == 0)
			r = sm_dir_sync(dir);
		if (r == 0)
			open_forget(f, P.v.location);
	} else {
		/* C steps out; its children are relinked to P */
		char pcx[PATH_MAX], name[SM_LOC_MAX + 32];
		snprintf(name, sizeof(name), COALESCED_PREFIX "%s.vhd", C.v.location);
		r = path3(pcx, dir, "", name, "");
		if (r == 0 && rename(pc, pcx) < 0)
			r = -errno;
		if (r == 0)
			r = sm_dir_sync(dir);
		STEP("gc: child set aside");
		if (r == 0)
			r = coalesced_finish(dir, name);
	}
	if (r < 0)
		log_err("sm file %s: finishing the merge of %s into %s: %s", dir, C.v.location,
			P.v.location, strerror(-r));
	return r < 0 ? r : 1;
}

static int file_gc(struct sm_sr *sr, sm_progress_fn p, void *pctx)
{
	struct file_sr *f = sr->priv;
	pthread_mutex_lock(&f->gc_lock);
	int r = -ECANCELED;
	if (!atomic_load(&f->stopping)) {
		pthread_mutex_lock(&sr->lock);
		r = gc_step(sr, p, pctx);
		pthread_mutex_unlock(&sr->lock);
	}
	pthread_mutex_unlock(&f->gc_lock);
	return r;
}

const struct sm_driver sm_file_driver = {
	.type = "file",
	.content_type = "user",
	.sr_create = file_sr_create,
	.sr_delete = file_sr_delete,
	.attach = file_attach,
	.detach = file_detach,
	.probe = file_probe,
	.space = file_space,
	.scan = file_scan,
	.vdi_create = file_vdi_create,
	.vdi_delete = file_vdi_delete,
	.vdi_snapshot = file_vdi_snapshot,
	.vdi_resize = file_vdi_resize,
	.vdi_stat = file_vdi_stat,
	.vdi_open = file_vdi_open,
	.vdi_close = file_vdi_close,
	.gc = file_gc,
};
