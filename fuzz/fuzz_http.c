/* fuzz_http.c — libFuzzer target for the HTTP request parser.
 *
 * The input is one connection's byte stream.  http_fuzz_feed() pushes it
 * through the server's own read path (buffering, http_parser, limits,
 * in-place termination, pipelining, answering now or later, closing) on a
 * connection with no socket, so every code path but the syscalls is the
 * one a client reaches.
 *
 *   clang -fsanitize=fuzzer,address,undefined ...; ./fuzz_http -max_total_time=60
 */
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "http/http_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	log_level_max = LOG_ERR_; /* rejects are logged at debug level anyway */
	(void)http_fuzz_feed(data, size);
	return 0;
}
