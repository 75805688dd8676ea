/* events.h — event.from, event.inject, the legacy event.register/next, and
 * the waiters behind them (see docs/events.md).
 *
 * Waiting calls are parked on the libuv loop (api_park): they hold no thread
 * and no lock.  The database's commit hook wakes the loop (uv_async_send),
 * which checks the parked calls against the classes that changed.
 */
#ifndef CX_EVENTS_H
#define CX_EVENTS_H

#include <stdint.h>

struct uv_loop_s;

struct events_config {
	int delay_ms;            /* coalescing delay (the original: 50 ms); 0 = none */
	uint32_t deletions_kept; /* deletions remembered for event.from (retention horizon) */
	int message_limit;       /* messages kept (older ones are deleted); the original: 10000 */
	long legacy_queue_bytes; /* event.next queue bound (the original: 10,000,000) */
};

/* Set up on the loop thread, after api_init and before serving. */
int events_init(struct uv_loop_s *loop, const struct events_config *cfg);

/* The message limit (messages.c). */
int events_message_limit(void);

#endif
