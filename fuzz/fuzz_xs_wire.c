/* fuzz_xs_wire.c — libFuzzer target for the xenstore packet decoder.
 *
 * The input is a stream of packets as a client would send them: a 16-byte
 * header then (up to) len payload bytes.  Each packet is split with
 * xs_msg_decode() exactly as the daemon does, and the result is checked:
 * every argument lies inside the payload and ends with its NUL, a write's
 * value ends at the payload's end; then a reply is framed from it.
 *
 *   meson setup build-fuzz -Dfuzz=true (CC=clang); ./fuzz_xs_wire -max_total_time=60
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "xs/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf out;
	buf_init(&out);
	while (size >= XS_HDR_SIZE) {
		struct xs_hdr h;
		memcpy(&h, data, XS_HDR_SIZE);
		data += XS_HDR_SIZE;
		size -= XS_HDR_SIZE;
		if (h.len > XS_PAYLOAD_MAX)
			break; /* the daemon closes such a connection */
		size_t n = h.len <= size ? h.len : size;
		h.len = (uint32_t)n;
		/* the payload in its own allocation, so ASan sees overreads */
		char *payload = malloc(n ? n : 1);
		if (!payload)
			abort();
		memcpy(payload, data, n);
		struct xs_msg m;
		int r = xs_msg_decode(&h, payload, &m);
		if (r == 0) {
			if (m.nargs < 0 || m.nargs > XS_MAX_ARGS)
				abort();
			for (int i = 0; i < m.nargs; i++) {
				const char *a = m.args[i];
				if (a < payload || a + m.arglen[i] >= payload + n ||
				    a[m.arglen[i]] != 0 || memchr(a, 0, m.arglen[i]))
					abort();
			}
			if (m.value && (m.value < payload || m.value + m.value_len != payload + n))
				abort();
			xs_reply(&out, h.type, h.req_id, h.tx_id, payload, n);
		} else {
			if (r != -EINVAL && r != -ENOSYS && r != -E2BIG)
				abort();
			xs_reply_error(&out, &h, -r);
		}
		(void)xs_type_name(h.type);
		(void)xs_errno_name(-r);
		free(payload);
		data += n;
		size -= n;
		out.len = 0;
	}
	buf_free(&out);
	return 0;
}
