/* transfer.h — the HTTP handlers that move disk contents:
 *   PUT /import_raw_vdi   (format raw or vhd; into a VDI, or a new VDI of an SR)
 *   GET /export_raw_vdi   (format raw or vhd; vhd with base= is a delta)
 * with or without a trailing slash, as the original's.  Each transfer takes
 * its connection over (http_detach) and runs on a thread of its own, with
 * blocking I/O on the socket, never holding a whole disk in memory; it runs
 * in a task (the client's task_id, else one of its own) with progress and
 * cancellation.  See docs/storage.md ("Disk transfer over HTTP").
 */
#ifndef CX_TRANSFER_H
#define CX_TRANSFER_H

#include <stdbool.h>
#include "http/http.h"

/* For http_config.stream_body: is req one of these (its body not to be read
 * by the server)? */
bool transfer_claims(const struct http_req *req);

/* The handler of a claimed request (loop thread): detaches the connection and
 * starts the transfer's thread. */
void transfer_start(struct http_conn *c, struct http_req *req);

#endif
