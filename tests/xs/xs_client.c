/*
 * xs_client.c - a scriptable libxenstore client for cxapi's xenstored
 * integration tests (tests/integration/test_xenstored.py).  Every operation
 * goes through Debian's libxenstore (xs_* calls), exactly as a real toolstack
 * or guest agent would; the daemon is picked by XENSTORED_PATH.
 *
 *   xs_client CMD ARGS... [CMD ARGS...]...
 *
 * runs the commands in order and prints one line per command:
 *   "ok" [" " RESULT]   or   "err " ERRNO-NAME   (ENOENT, EACCES, EAGAIN ...)
 * Exit status 0 unless a command is malformed (status 2).
 *
 * Commands (P path, V value, D domid):
 *   sock PATH          XENSTORED_PATH for handles opened from now on
 *   h N                use handle N (0..15), opening it on first use
 *   close              close the current handle (and forget its transaction)
 *   read P             value, escaped: bytes outside 0x20..0x7e and '\' as \xNN
 *   write P V          V may contain \xNN escapes (binary, NULs)
 *   mkdir P | rm P
 *   ls P               children, space-separated, in the daemon's order
 *   lsn P              number of children
 *   getperms P         e.g. "n0 r1 w2" (owner first)
 *   setperms P PERMS   PERMS: comma-separated, e.g. n0,r1,b2
 *   watch P T | unwatch P T
 *   event [MS]         next watch event: "ok PATH TOKEN" or "err TIMEOUT" (default 2000 ms)
 *   noevent MS         "ok" if no watch event arrives within MS ms, else "err GOT PATH TOKEN"
 *   drain MS           read watch events for MS ms; "ok N PATH:TOKEN ..."
 *   tstart             start a transaction on the current handle; later
 *                      read/write/... on this handle use it
 *   tcommit | tabort   end it
 *   introduce D MFN PORT | release D | resume D
 *   domainpath D       xs_get_domain_path
 *   introduced D       "ok 1" / "ok 0" (xs_is_domain_introduced)
 *   settarget D T
 *   control CMD [ARG]  xs_control_command; result escaped
 *   writen P N SIZE    N writes P/0..N-1, each a SIZE-byte value; stops at
 *                      the first error: "ok N" or "err E at I"
 *   watchn P N         N watches on P (tokens t0..), "ok N" or "err E at I"
 *   tstartn N          N transactions on the current handle, "ok N" or "err E at I"
 *                      (they stay open until the handle is closed)
 *   sleep MS
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xenstore.h>

#define MAXH 16

static struct xs_handle *hs[MAXH];
static xs_transaction_t txn[MAXH];
static int cur;

static const char *ename(int e)
{
	switch (e) {
	case EINVAL: return "EINVAL";
	case EACCES: return "EACCES";
	case EEXIST: return "EEXIST";
	case EISDIR: return "EISDIR";
	case ENOENT: return "ENOENT";
	case ENOMEM: return "ENOMEM";
	case ENOSPC: return "ENOSPC";
	case EIO: return "EIO";
	case ENOTEMPTY: return "ENOTEMPTY";
	case ENOSYS: return "ENOSYS";
	case EROFS: return "EROFS";
	case EBUSY: return "EBUSY";
	case EAGAIN: return "EAGAIN";
	case EISCONN: return "EISCONN";
	case E2BIG: return "E2BIG";
	case EPERM: return "EPERM";
	case EBADF: return "EBADF";
	case ECONNRESET: return "ECONNRESET";
	case EPIPE: return "EPIPE";
	default: {
		static char b[32];
		snprintf(b, sizeof(b), "E%d", e);
		return b;
	}
	}
}

static void put_escaped(const char *v, unsigned len)
{
	for (unsigned i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c < 0x20 || c > 0x7e || c == '\\')
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

static char *unescape(const char *s, unsigned *len)
{
	char *o = malloc(strlen(s) + 1);
	unsigned n = 0;

	while (*s) {
		if (s[0] == '\\' && s[1] == 'x' && s[2] && s[3]) {
			char h[3] = { s[2], s[3], 0 };
			o[n++] = (char)strtoul(h, NULL, 16);
			s += 4;
		} else {
			o[n++] = *s++;
		}
	}
	o[n] = 0;
	*len = n;
	return o;
}

static struct xs_handle *H(void)
{
	if (!hs[cur]) {
		hs[cur] = xs_open(0);
		if (!hs[cur]) {
			printf("err OPEN %s\n", ename(errno));
			fflush(stdout);
			exit(3);
		}
	}
	return hs[cur];
}

static void fail(void) { printf("err %s\n", ename(errno)); }
static void ok(void) { printf("ok\n"); }

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* One watch event within ms, or NULL. */
static char **get_event(int ms)
{
	struct xs_handle *h = H();
	long deadline = now_ms() + ms;
	char **ev;

	for (;;) {
		ev = xs_check_watch(h);
		if (ev)
			return ev;
		long left = deadline - now_ms();
		if (left <= 0)
			return NULL;
		struct pollfd p = { .fd = xs_fileno(h), .events = POLLIN };
		poll(&p, 1, (int)left);
	}
}

static int need(int argc, int i, int n, const char *cmd)
{
	if (i + n >= argc) {
		fprintf(stderr, "xs_client: %s needs %d argument(s)\n", cmd, n);
		exit(2);
	}
	return 1;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		const char *c = argv[i];
		unsigned len;

		if (!strcmp(c, "sock")) {
			need(argc, i, 1, c);
			setenv("XENSTORED_PATH", argv[++i], 1);
			ok();
		} else if (!strcmp(c, "h")) {
			need(argc, i, 1, c);
			cur = atoi(argv[++i]);
			if (cur < 0 || cur >= MAXH) { fprintf(stderr, "bad handle\n"); return 2; }
			H();
			ok();
		} else if (!strcmp(c, "close")) {
			xs_close(hs[cur]);
			hs[cur] = NULL;
			txn[cur] = XBT_NULL;
			ok();
		} else if (!strcmp(c, "read")) {
			need(argc, i, 1, c);
			char *v = xs_read(H(), txn[cur], argv[++i], &len);
			if (!v) { fail(); continue; }
			printf("ok ");
			put_escaped(v, len);
			putchar('\n');
			free(v);
		} else if (!strcmp(c, "write")) {
			need(argc, i, 2, c);
			const char *p = argv[++i];
			char *v = unescape(argv[++i], &len);
			if (xs_write(H(), txn[cur], p, v, len)) ok(); else fail();
			free(v);
		} else if (!strcmp(c, "mkdir")) {
			need(argc, i, 1, c);
			if (xs_mkdir(H(), txn[cur], argv[++i])) ok(); else fail();
		} else if (!strcmp(c, "rm")) {
			need(argc, i, 1, c);
			if (xs_rm(H(), txn[cur], argv[++i])) ok(); else fail();
		} else if (!strcmp(c, "ls") || !strcmp(c, "lsn")) {
			need(argc, i, 1, c);
			char **d = xs_directory(H(), txn[cur], argv[++i], &len);
			if (!d) { fail(); continue; }
			if (!strcmp(c, "lsn")) {
				printf("ok %u\n", len);
			} else {
				printf("ok");
				for (unsigned k = 0; k < len; k++)
					printf(" %s", d[k]);
				putchar('\n');
			}
			free(d);
		} else if (!strcmp(c, "getperms")) {
			need(argc, i, 1, c);
			struct xs_permissions *p = xs_get_permissions(H(), txn[cur], argv[++i], &len);
			if (!p) { fail(); continue; }
			printf("ok");
			for (unsigned k = 0; k < len; k++) {
				unsigned pm = p[k].perms & (XS_PERM_READ | XS_PERM_WRITE);
				char l = pm == (XS_PERM_READ | XS_PERM_WRITE) ? 'b' : pm == XS_PERM_READ ? 'r'
					: pm == XS_PERM_WRITE ? 'w' : 'n';
				printf(" %c%u", l, p[k].id);
			}
			putchar('\n');
			free(p);
		} else if (!strcmp(c, "setperms")) {
			need(argc, i, 2, c);
			const char *path = argv[++i];
			char *s = strdup(argv[++i]);
			struct xs_permissions p[64];
			unsigned n = 0;
			bool bad = false;
			for (char *tok = strtok(s, ","); tok && n < 64; tok = strtok(NULL, ","))
				if (!xs_strings_to_perms(&p[n++], 1, tok))
					bad = true;
			free(s);
			if (bad) { printf("err BADPERM\n"); continue; }
			if (xs_set_permissions(H(), txn[cur], path, p, n)) ok(); else fail();
		} else if (!strcmp(c, "watch")) {
			need(argc, i, 2, c);
			i += 2;
			if (xs_watch(H(), argv[i - 1], argv[i])) ok(); else fail();
		} else if (!strcmp(c, "unwatch")) {
			need(argc, i, 2, c);
			i += 2;
			if (xs_unwatch(H(), argv[i - 1], argv[i])) ok(); else fail();
		} else if (!strcmp(c, "event")) {
			int ms = 2000;
			if (i + 1 < argc && argv[i + 1][0] >= '0' && argv[i + 1][0] <= '9')
				ms = atoi(argv[++i]);
			char **ev = get_event(ms);
			if (!ev) { printf("err TIMEOUT\n"); continue; }
			printf("ok %s %s\n", ev[XS_WATCH_PATH], ev[XS_WATCH_TOKEN]);
			free(ev);
		} else if (!strcmp(c, "noevent")) {
			need(argc, i, 1, c);
			char **ev = get_event(atoi(argv[++i]));
			if (!ev) { ok(); continue; }
			printf("err GOT %s %s\n", ev[XS_WATCH_PATH], ev[XS_WATCH_TOKEN]);
			free(ev);
		} else if (!strcmp(c, "drain")) {
			need(argc, i, 1, c);
			long deadline = now_ms() + atoi(argv[++i]);
			char out[65536];
			size_t o = 0;
			int n = 0;
			out[0] = 0;
			for (;;) {
				long left = deadline - now_ms();
				char **ev = get_event(left > 0 ? (int)left : 0);
				if (!ev)
					break;
				n++;
				if (o < sizeof(out) - 1)
					o += (size_t)snprintf(out + o, sizeof(out) - o, " %s:%s",
							      ev[XS_WATCH_PATH], ev[XS_WATCH_TOKEN]);
				free(ev);
			}
			printf("ok %d%s\n", n, out);
		} else if (!strcmp(c, "tstart")) {
			txn[cur] = xs_transaction_start(H());
			if (txn[cur] == XBT_NULL) fail(); else ok();
		} else if (!strcmp(c, "tcommit") || !strcmp(c, "tabort")) {
			bool r = xs_transaction_end(H(), txn[cur], !strcmp(c, "tabort"));
			int e = errno;
			txn[cur] = XBT_NULL;
			errno = e;
			if (r) ok(); else fail();
		} else if (!strcmp(c, "introduce")) {
			need(argc, i, 3, c);
			i += 3;
			if (xs_introduce_domain(H(), (unsigned)atoi(argv[i - 2]),
						strtoul(argv[i - 1], NULL, 0), (unsigned)atoi(argv[i])))
				ok();
			else
				fail();
		} else if (!strcmp(c, "release")) {
			need(argc, i, 1, c);
			if (xs_release_domain(H(), (unsigned)atoi(argv[++i]))) ok(); else fail();
		} else if (!strcmp(c, "resume")) {
			need(argc, i, 1, c);
			if (xs_resume_domain(H(), (unsigned)atoi(argv[++i]))) ok(); else fail();
		} else if (!strcmp(c, "domainpath")) {
			need(argc, i, 1, c);
			char *p = xs_get_domain_path(H(), (unsigned)atoi(argv[++i]));
			if (!p) { fail(); continue; }
			printf("ok %s\n", p);
			free(p);
		} else if (!strcmp(c, "introduced")) {
			need(argc, i, 1, c);
			errno = 0;
			bool r = xs_is_domain_introduced(H(), (unsigned)atoi(argv[++i]));
			if (!r && errno) fail(); else printf("ok %d\n", r ? 1 : 0);
		} else if (!strcmp(c, "settarget")) {
			need(argc, i, 2, c);
			i += 2;
			if (xs_set_target(H(), (unsigned)atoi(argv[i - 1]), (unsigned)atoi(argv[i]))) ok(); else fail();
		} else if (!strcmp(c, "control")) {
			need(argc, i, 1, c);
			const char *cmd = argv[++i];
			char *arg = "";
			if (i + 1 < argc && argv[i + 1][0] == '=')
				arg = argv[++i] + 1;
			char *r = xs_control_command(H(), cmd, arg, (unsigned)strlen(arg) + (*arg ? 1 : 0));
			if (!r) { fail(); continue; }
			printf("ok ");
			put_escaped(r, (unsigned)strlen(r));
			putchar('\n');
			free(r);
		} else if (!strcmp(c, "writen")) {
			need(argc, i, 3, c);
			const char *p = argv[++i];
			int n = atoi(argv[++i]), size = atoi(argv[++i]), k;
			char *v = malloc((size_t)size + 1), path[4096];
			memset(v, 'x', (size_t)size);
			for (k = 0; k < n; k++) {
				snprintf(path, sizeof(path), "%s/%d", p, k);
				if (!xs_write(H(), txn[cur], path, v, (unsigned)size))
					break;
			}
			if (k == n) printf("ok %d\n", n); else printf("err %s at %d\n", ename(errno), k);
			free(v);
		} else if (!strcmp(c, "watchn")) {
			need(argc, i, 2, c);
			const char *p = argv[++i];
			int n = atoi(argv[++i]), k;
			char tok[32];
			for (k = 0; k < n; k++) {
				snprintf(tok, sizeof(tok), "t%d", k);
				if (!xs_watch(H(), p, tok))
					break;
			}
			if (k == n) printf("ok %d\n", n); else printf("err %s at %d\n", ename(errno), k);
		} else if (!strcmp(c, "tstartn")) {
			need(argc, i, 1, c);
			int n = atoi(argv[++i]), k;
			for (k = 0; k < n; k++)
				if (xs_transaction_start(H()) == XBT_NULL)
					break;
			if (k == n) printf("ok %d\n", n); else printf("err %s at %d\n", ename(errno), k);
		} else if (!strcmp(c, "sleep")) {
			need(argc, i, 1, c);
			usleep((useconds_t)atoi(argv[++i]) * 1000);
			ok();
		} else {
			fprintf(stderr, "xs_client: unknown command %s\n", c);
			return 2;
		}
	}
	for (int k = 0; k < MAXH; k++)
		xs_close(hs[k]);
	return 0;
}
