/* wire.c — the xenstore wire protocol of Xen 4.17: argument splitting per
 * message type, reply framing, error names.  Pure functions, no I/O; every
 * input byte comes from an untrusted client (fuzzed by fuzz/fuzz_xs_wire.c).
 *
 * The argument rules follow Xen 4.17's xenstored (tools/xenstore/
 * xenstored_*.c): "one argument" means exactly one NUL, at the very end;
 * "n strings" counts NUL-terminated strings and ignores bytes after the last
 * NUL; a write's value is everything after the path's NUL.
 */
#include "xs/wire.h"

#include <errno.h>
#include <string.h>
#include <xen/io/xs_wire.h>

/* Count NUL-terminated strings in p[0..len) and record up to XS_MAX_ARGS. */
static int split(struct xs_msg *m, const char *p, size_t len)
{
	size_t off = 0;
	int n = 0;
	while (off < len) {
		const char *nul = memchr(p + off, 0, len - off);
		if (!nul)
			break;
		if (n < XS_MAX_ARGS) {
			m->args[n] = p + off;
			m->arglen[n] = (size_t)(nul - (p + off));
		}
		n++;
		off = (size_t)(nul - p) + 1;
	}
	m->nargs = n < XS_MAX_ARGS ? n : XS_MAX_ARGS;
	return n;
}

/* Exactly one NUL, at the end. */
static int onearg(struct xs_msg *m, const char *p, size_t len)
{
	if (len == 0 || p[len - 1] != 0 || memchr(p, 0, len) != p + len - 1)
		return -EINVAL;
	m->args[0] = p;
	m->arglen[0] = len - 1;
	m->nargs = 1;
	return 0;
}

int xs_msg_decode(const struct xs_hdr *h, const char *payload, struct xs_msg *m)
{
	size_t len = h->len;
	int n;

	memset(m, 0, sizeof(*m));
	m->h = *h;
	m->payload = payload;
	if (len > XS_PAYLOAD_MAX)
		return -E2BIG;
	if (len && !payload)
		return -EINVAL;

	switch (h->type) {
	case XS_READ:
	case XS_MKDIR:
	case XS_RM:
	case XS_DIRECTORY:
	case XS_GET_PERMS:
	case XS_TRANSACTION_END:
	case XS_GET_DOMAIN_PATH:
	case XS_IS_DOMAIN_INTRODUCED:
	case XS_RELEASE:
	case XS_RESUME:
		return onearg(m, payload, len);
	case XS_WRITE:
		/* Extra "strings" can be binary data: at least the path. */
		n = split(m, payload, len);
		if (n < 1)
			return -EINVAL;
		m->nargs = 1;
		m->value = payload + m->arglen[0] + 1;
		m->value_len = len - m->arglen[0] - 1;
		return 0;
	case XS_DIRECTORY_PART:
		/* 4.17 counts NULs: exactly two strings, nothing after. */
		n = split(m, payload, len);
		return n == 2 ? 0 : -EINVAL;
	case XS_WATCH:
	case XS_UNWATCH:
		n = split(m, payload, len);
		return n == 2 ? 0 : -EINVAL;
	case XS_SET_PERMS:
		/* path, then one string per permission: the handler parses
		 * value[0..value_len) (any number of permissions). */
		n = split(m, payload, len);
		if (n < 2)
			return -EINVAL;
		m->nargs = n < XS_MAX_ARGS ? n : XS_MAX_ARGS;
		m->value = payload + m->arglen[0] + 1;
		m->value_len = len - m->arglen[0] - 1;
		return 0;
	case XS_INTRODUCE:
		n = split(m, payload, len);
		return n >= 3 ? 0 : -EINVAL;
	case XS_SET_TARGET:
		n = split(m, payload, len);
		return n >= 2 ? 0 : -EINVAL;
	case XS_TRANSACTION_START:
	case XS_RESET_WATCHES:
		/* 4.17 ignores the payload. */
		m->nargs = 0;
		return 0;
	case XS_CONTROL:
		n = split(m, payload, len);
		if (n < 1)
			return -EINVAL;
		/* the whole list for commands with many parameters */
		m->value = payload;
		m->value_len = len;
		return 0;
	default:
		/* XS_WATCH_EVENT, XS_ERROR (never requests) and unknown types */
		return -ENOSYS;
	}
}

void xs_reply(struct buf *out, uint32_t type, uint32_t req_id, uint32_t tx_id,
	      const void *payload, size_t len)
{
	struct xs_hdr h = { type, req_id, tx_id, (uint32_t)len };
	buf_reserve(out, XS_HDR_SIZE + len);
	memcpy(out->p + out->len, &h, XS_HDR_SIZE);
	if (len)
		memcpy(out->p + out->len + XS_HDR_SIZE, payload, len);
	out->len += XS_HDR_SIZE + len;
	out->p[out->len] = 0;
}

static const struct {
	int err;
	const char *name;
} errnames[] = {
	/* the order of xsd_errors[] in xs_wire.h */
	{ EINVAL, "EINVAL" }, { EACCES, "EACCES" }, { EEXIST, "EEXIST" },
	{ EISDIR, "EISDIR" }, { ENOENT, "ENOENT" }, { ENOMEM, "ENOMEM" },
	{ ENOSPC, "ENOSPC" }, { EIO, "EIO" }, { ENOTEMPTY, "ENOTEMPTY" },
	{ ENOSYS, "ENOSYS" }, { EROFS, "EROFS" }, { EBUSY, "EBUSY" },
	{ EAGAIN, "EAGAIN" }, { EISCONN, "EISCONN" }, { E2BIG, "E2BIG" },
	{ EPERM, "EPERM" },
};

const char *xs_errno_name(int err)
{
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].err == err)
			return errnames[i].name;
	return "EINVAL";
}

int xs_errno_value(const char *name)
{
	for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (!strcmp(errnames[i].name, name))
			return errnames[i].err;
	return EIO;
}

void xs_reply_error(struct buf *out, const struct xs_hdr *req, int err)
{
	const char *n = xs_errno_name(err);
	xs_reply(out, XS_ERROR, req->req_id, req->tx_id, n, strlen(n) + 1);
}

static const char *const type_names[] = {
	[XS_CONTROL] = "CONTROL",
	[XS_DIRECTORY] = "DIRECTORY",
	[XS_READ] = "READ",
	[XS_GET_PERMS] = "GET_PERMS",
	[XS_WATCH] = "WATCH",
	[XS_UNWATCH] = "UNWATCH",
	[XS_TRANSACTION_START] = "TRANSACTION_START",
	[XS_TRANSACTION_END] = "TRANSACTION_END",
	[XS_INTRODUCE] = "INTRODUCE",
	[XS_RELEASE] = "RELEASE",
	[XS_GET_DOMAIN_PATH] = "GET_DOMAIN_PATH",
	[XS_WRITE] = "WRITE",
	[XS_MKDIR] = "MKDIR",
	[XS_RM] = "RM",
	[XS_SET_PERMS] = "SET_PERMS",
	[XS_WATCH_EVENT] = "WATCH_EVENT",
	[XS_ERROR] = "ERROR",
	[XS_IS_DOMAIN_INTRODUCED] = "IS_DOMAIN_INTRODUCED",
	[XS_RESUME] = "RESUME",
	[XS_SET_TARGET] = "SET_TARGET",
	[XS_RESET_WATCHES] = "RESET_WATCHES",
	[XS_DIRECTORY_PART] = "DIRECTORY_PART",
};

const char *xs_type_name(uint32_t type)
{
	if (type < sizeof(type_names) / sizeof(type_names[0]) && type_names[type])
		return type_names[type];
	return "**UNKNOWN**";
}
