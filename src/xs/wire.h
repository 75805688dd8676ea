/* wire.h — the xenstore wire protocol of Xen 4.17 (xs_wire.h): packet
 * framing, message types, error names.  Pure functions, no I/O (fuzzed by
 * fuzz/fuzz_xs_wire.c).
 */
#ifndef CX_XS_WIRE_H
#define CX_XS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

/* The header of every packet, host byte order as on the wire. */
struct xs_hdr {
	uint32_t type;   /* enum xsd_sockmsg_type of xs_wire.h */
	uint32_t req_id;
	uint32_t tx_id;
	uint32_t len;    /* payload bytes; at most XENSTORE_PAYLOAD_MAX (4096) */
};

#define XS_HDR_SIZE 16u
#define XS_PAYLOAD_MAX 4096u

/* A decoded request: its arguments split at NULs as the type requires. */
#define XS_MAX_ARGS 8
struct xs_msg {
	struct xs_hdr h;
	const char *payload;       /* points into the caller's buffer */
	int nargs;
	const char *args[XS_MAX_ARGS]; /* each NUL-terminated inside payload */
	size_t arglen[XS_MAX_ARGS];
	/* for WRITE: the value after the path (may contain NULs) */
	const char *value;
	size_t value_len;
};

/* Split a complete packet (header already checked: len <= XS_PAYLOAD_MAX)
 * into arguments per its type.  Returns 0, or a negative errno (EINVAL for a
 * missing NUL or a wrong argument count, ENOSYS for an unknown type). */
int xs_msg_decode(const struct xs_hdr *h, const char *payload, struct xs_msg *m);

/* Append a reply packet: header + payload. */
void xs_reply(struct buf *out, uint32_t type, uint32_t req_id, uint32_t tx_id,
	      const void *payload, size_t len);
/* An error reply: type XS_ERROR, payload "<ENAME>\0". */
void xs_reply_error(struct buf *out, const struct xs_hdr *req, int err);
/* "EINVAL" etc. for a (positive) errno, as xsd_errors[] names them; "EINVAL"
 * for anything unknown. */
const char *xs_errno_name(int err);
/* The (positive) errno an error reply names; EIO for a name not known. */
int xs_errno_value(const char *name);
/* Message type name ("READ", "WRITE", ...) for traces. */
const char *xs_type_name(uint32_t type);

#endif
