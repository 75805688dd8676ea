/* vhd-check — check VHD images (and with -p their parent chains).
 *
 * The options after "--" in the usage text below are for tests and
 * developers: they drive the library from the shell (tests/integration). */
#include "vhd/vhd.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
	fprintf(out,
		"usage: vhd-check [-p] FILE...\n"
		"Check VHD images: footers, header, block allocation table, bitmaps,\n"
		"parent locators.  Prints \"FILE: ok (type, virtual size, allocated blocks,\n"
		"parent)\" or \"FILE: reason\"; exits 0 if every image is sound, else 1.\n"
		"  -p, --parents   also check every image of each FILE's parent chain\n"
		"  -h, --help      this text\n"
		"Developer options (one per run; used by the tests):\n"
		"  --create-dynamic FILE SIZE      --create-diff FILE PARENT [RELATIVE]\n"
		"  --write FILE OFFSET  (stdin)    --cat FILE  (the chain as raw, stdout)\n"
		"  --export FILE [STOP] (stdout)   --import FILE  (a VHD stream on stdin)\n"
		"  --resize FILE SIZE              --hidden FILE 0|1\n"
		"  --set-parent FILE PARENT [REL]  --coalesce CHILD PARENT\n");
}

static const char *type_name(enum vhd_type t)
{
	return t == VHD_DYNAMIC ? "dynamic" : t == VHD_DIFF ? "differencing" : "fixed";
}

static int check_one(const char *path)
{
	char why[256];
	int err = vhd_check(path, why, sizeof why);
	if (err) {
		printf("%s: %s\n", path, why[0] ? why : strerror(-err));
		return 1;
	}
	struct vhd *v;
	struct vhd_info in;
	if ((err = vhd_open(path, VHD_RDONLY, &v))) {
		printf("%s: %s\n", path, strerror(-err));
		return 1;
	}
	vhd_get_info(v, &in);
	vhd_close(v);
	printf("%s: ok (%s, %" PRIu64 " bytes, %" PRIu32 " blocks, %s%s)\n", path, type_name(in.type),
	       in.virtual_size, in.allocated, in.type == VHD_DIFF ? "parent " : "no parent",
	       in.type == VHD_DIFF ? in.parent_path : "");
	return 0;
}

static int check_chain(const char *path)
{
	if (check_one(path))
		return 1;
	struct vhd_chain *c = malloc(sizeof *c);
	if (!c)
		return 1;
	int err = vhd_chain_open(path, VHD_RDONLY, c), bad = 0;
	if (err) {
		printf("%s: parent chain: %s\n", path, err == -EINVAL ? "a parent is not this disk's parent, or the chain loops or is too deep" : strerror(-err));
		bad = 1;
	} else {
		for (int i = 1; i < c->depth && !bad; i++)
			bad = check_one(vhd_path(c->v[i]));
		vhd_chain_close(c);
	}
	free(c);
	return bad;
}

/* ---- developer helpers --------------------------------------------------------- */

static int write_all(void *ctx, const void *buf, size_t len)
{
	(void)ctx;
	const char *p = buf;
	while (len) {
		ssize_t n = write(1, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n, len -= (size_t)n;
	}
	return 0;
}

static ssize_t read_some(void *ctx, void *buf, size_t len)
{
	(void)ctx;
	for (;;) {
		ssize_t n = read(0, buf, len);
		if (n >= 0 || errno != EINTR)
			return n < 0 ? -errno : n;
	}
}

static int dev_cat(const char *path)
{
	struct vhd_chain *c = malloc(sizeof *c);
	int err = c ? vhd_chain_open(path, VHD_RDONLY, c) : -ENOMEM;
	if (err) {
		free(c);
		return err;
	}
	uint64_t size = c->info[0].virtual_size;
	size_t chunk = 1 << 20;
	char *buf = malloc(chunk);
	for (uint64_t off = 0; buf && !err && off < size; off += chunk) {
		size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
		if (!(err = vhd_chain_pread(c, buf, n, off)))
			err = write_all(NULL, buf, n);
	}
	free(buf);
	vhd_chain_close(c);
	free(c);
	return buf ? err : -ENOMEM;
}

static int dev_write(const char *path, uint64_t off)
{
	struct vhd *v;
	int err = vhd_open(path, VHD_RDWR, &v);
	if (err)
		return err;
	size_t cap = 4 << 20, have = 0;
	char *buf = malloc(cap);
	for (;;) {
		ssize_t n = buf ? read_some(NULL, buf + have, cap - have) : -ENOMEM;
		if (n < 0) {
			err = (int)n;
			break;
		}
		have += (size_t)n;
		if (have == cap || n == 0) {
			size_t whole = have / VHD_SECTOR * VHD_SECTOR;
			if (n == 0 && whole != have) {
				err = -EINVAL; /* not a whole number of sectors */
				break;
			}
			if ((err = vhd_pwrite(v, buf, whole, off)))
				break;
			off += whole;
			memmove(buf, buf + whole, have - whole);
			have -= whole;
			if (n == 0)
				break;
		}
	}
	free(buf);
	int ferr = vhd_flush(v);
	vhd_close(v);
	return err ? err : ferr;
}

static int with_rw(const char *path, int (*fn)(struct vhd *, char **), char **args)
{
	struct vhd *v;
	int err = vhd_open(path, VHD_RDWR, &v);
	if (err)
		return err;
	err = fn(v, args);
	vhd_close(v);
	return err;
}

static int do_import(struct vhd *v, char **a) { (void)a; return vhd_import(v, read_some, NULL, NULL, NULL); }
static int do_resize(struct vhd *v, char **a) { return vhd_resize(v, strtoull(a[0], NULL, 0)); }
static int do_hidden(struct vhd *v, char **a) { return vhd_set_hidden(v, atoi(a[0]) != 0); }
static int do_set_parent(struct vhd *v, char **a) { return vhd_set_parent(v, a[0], a[1]); }
static int do_coalesce(struct vhd *parent, char **a)
{
	struct vhd *child;
	int err = vhd_open(a[0], VHD_RDONLY, &child);
	if (!err) {
		err = vhd_coalesce(child, parent, NULL, NULL);
		vhd_close(child);
	}
	return err;
}

static int dev_export(const char *path, int stop)
{
	struct vhd_chain *c = malloc(sizeof *c);
	int err = c ? vhd_chain_open(path, VHD_RDONLY, c) : -ENOMEM;
	if (!err) {
		err = vhd_export(c, stop, write_all, NULL, NULL, NULL);
		vhd_chain_close(c);
	}
	free(c);
	return err;
}

/* the developer options: returns -1 when argv holds none */
static int developer(int argc, char **argv)
{
	if (argc < 3 || strncmp(argv[1], "--", 2))
		return -1;
	const char *op = argv[1] + 2, *f = argv[2];
	char *a3 = argc > 3 ? argv[3] : NULL, *a4 = argc > 4 ? argv[4] : NULL;
	char *args[2] = {a3, a4};
	int err;
	if (!strcmp(op, "create-dynamic") && a3)
		err = vhd_create_dynamic(f, strtoull(a3, NULL, 0), a4 ? strtoull(a4, NULL, 0) : 0);
	else if (!strcmp(op, "create-diff") && a3)
		err = vhd_create_diff(f, a3, a4);
	else if (!strcmp(op, "write") && a3)
		err = dev_write(f, strtoull(a3, NULL, 0));
	else if (!strcmp(op, "cat"))
		err = dev_cat(f);
	else if (!strcmp(op, "export"))
		err = dev_export(f, a3 ? atoi(a3) : 0);
	else if (!strcmp(op, "import"))
		err = with_rw(f, do_import, args);
	else if (!strcmp(op, "resize") && a3)
		err = with_rw(f, do_resize, args);
	else if (!strcmp(op, "hidden") && a3)
		err = with_rw(f, do_hidden, args);
	else if (!strcmp(op, "set-parent") && a3)
		err = with_rw(f, do_set_parent, args);
	else if (!strcmp(op, "coalesce") && a3)
		err = with_rw(a3, do_coalesce, (char *[]){(char *)f, NULL});
	else
		return -1;
	if (err)
		fprintf(stderr, "vhd-check --%s %s: %s\n", op, f, strerror(-err));
	return err ? 1 : 0;
}

int main(int argc, char **argv)
{
	int rc = developer(argc, argv);
	if (rc >= 0)
		return rc;
	static const struct option opts[] = {
		{"parents", no_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'}, {0}};
	bool parents = false;
	int c;
	while ((c = getopt_long(argc, argv, "ph", opts, NULL)) != -1) {
		if (c == 'p')
			parents = true;
		else if (c == 'h')
			return usage(stdout), 0;
		else
			return usage(stderr), 2;
	}
	if (optind == argc)
		return usage(stderr), 2;
	int bad = 0;
	for (int i = optind; i < argc; i++)
		bad |= parents ? check_chain(argv[i]) : check_one(argv[i]);
	return bad;
}
