/* storage.h — the storage side of the API layer (src/api/storage.c), for the
 * other parts of the daemon: daemon start-up, and the HTTP handlers that move
 * VDI contents (/import_raw_vdi, /export_raw_vdi, imports of VMs).
 *
 * storage.c keeps the SR, PBD and VDI rows, their allowed_operations and
 * current_operations, the attached SRs of this host (plugged PBDs, one
 * struct sm_sr each) and the background garbage collection; the drivers
 * behind src/sm/sm.h know only files.  See docs/storage.md ("The API").
 *
 * Every function here may block (driver calls, commits): call them from a
 * worker thread, never from the loop thread.
 */
#ifndef CX_STORAGE_H
#define CX_STORAGE_H

#include <stdbool.h>
#include <stdint.h>
#include "base/xerr.h"
#include "db/db.h"
#include "sm/sm.h"

/* At daemon start, after the database is loaded and api_init() ran, before
 * the loop serves requests: clears the current_operations that a crash left
 * on SRs and VDIs (their tasks are gone), recomputes allowed_operations,
 * attaches the SR of every PBD of this host that is currently_attached (a
 * PBD whose SR cannot be attached any more is marked unplugged, with a
 * warning), and starts the background thread that runs each SR's garbage
 * collection and then reconciles the VDI rows with the files (as SR.scan).
 * Idempotent. */
void storage_start(void);

/* Open a VDI's contents for a transfer.
 *   vdi_ref  the VDI row;
 *   write    open the leaf read-write (an import), else the whole chain
 *            read-only (an export);
 *   task     the task the transfer runs in (for logs), or NULL.
 * Checks, with the original's errors: HANDLE_INVALID [VDI, ref]; the SR
 * plugged on this host (SR_HAS_NO_PBDS [sr]); VDI_NOT_MANAGED [vdi] for a
 * hidden base; VDI_READONLY [vdi] for writing a read-only VDI; an operation
 * in progress on it (OTHER_OPERATION_IN_PROGRESS [VDI, vdi, op, task]; a
 * copy in progress does not stop a read); VDI_IN_USE [vdi] when the access
 * conflicts with another (a writer excludes every other opener and a reader
 * excludes writers, unless the VDI is sharable).  Driver errors map as
 * sm.h says (e.g. VDI_MISSING [sr, vdi]).
 * While open, the VDI counts as attached, as the original's dom0 VBD makes
 * it: read-write for writers (so destroy/resize/copy answer VDI_IN_USE and
 * leave allowed_operations), read-only for readers (destroy/resize refused;
 * copy, snapshot and clone allowed).  No current_operations entry is made:
 * the original's transfers make none either.
 * 0 with *img filled (img->format, virtual_size, the fd or VHD chain; read
 * and write with sm_image_pread / sm_image_pwrite), or -1 with err set. */
int storage_vdi_open(const char *vdi_ref, bool write, const char *task, struct sm_image *img,
		     struct xerr *err);

/* Close what storage_vdi_open opened (flushing a writer first: a write is
 * durable once this returned 0).  Refreshes the VDI row's
 * physical_utilisation (writers) and allowed_operations.  0, or -1 with err
 * set if the flush failed (the image is closed anyway).  img NULL or never
 * opened: no-op. */
int storage_vdi_close(struct sm_image *img, struct xerr *err);

/* A new, empty VDI in an SR, as VDI.create makes it (marks the SR
 * vdi_create meanwhile, SR_FULL [requested, maximum] when it cannot fit,
 * SR_HAS_NO_PBDS [sr] when not plugged).  For imports that have no VDI yet
 * (e.g. PUT /import_raw_vdi?sr_id=..., VM imports).  name_label may be NULL
 * (""); type NULL = "user"; other_config NULL = {}.  virtual_size is rounded
 * as the driver says (read it back from the row).  The new ref in out.
 * task: the key of the SR's current_operations entry (NULL: a fresh one). */
int storage_vdi_create_in_sr(const char *sr_ref, const char *name_label, uint64_t virtual_size,
			     const char *type, bool read_only, const struct val *other_config,
			     const char *task, char out[DB_REF_MAX], struct xerr *err);

/* The file behind a VDI, for the domain manager (a VBD's backend
 * params): the file SR's <dir>/<location>.vhd ("vhd"), the ISO SR's
 * <dir>/<location> ("raw").  HANDLE_INVALID [VDI, ref], SR_HAS_NO_PBDS [sr]
 * when its SR is not attached here, SR_OPERATION_NOT_SUPPORTED [sr] for a
 * driver without files.  0 or -1 with err set. */
int storage_vdi_path(const char *vdi_ref, char *path, size_t n, char fmt[8], struct xerr *err);

/* Recompute the allowed_operations of these VDIs (one commit): after a
 * change of what makes them in use, e.g. their VBDs attached or detached. */
void storage_vdis_refresh_allowed(const char *const *vdis, int n);

/* Destroy a VDI as VDI.destroy does (e.g. to clean up after a failed
 * import).  0 or -1 with err set. */
int storage_vdi_destroy(const char *vdi_ref, const char *task, struct xerr *err);

/* VDI.snapshot, VDI.clone and VDI.copy(vdi, sr) as the messages do them
 * (marks, driver calls, rows; a copy is cancellable through task), for the
 * VM messages that copy disks (VM.clone, copy, snapshot).  task: the call's
 * task or NULL.  0 with the new VDI's ref in out, or -1 with err set. */
int storage_vdi_snapshot(const char *vdi, const char *task, char out[DB_REF_MAX],
			 struct xerr *err);
int storage_vdi_clone(const char *vdi, const char *task, char out[DB_REF_MAX], struct xerr *err);
int storage_vdi_copy(const char *vdi, const char *sr, const char *task, char out[DB_REF_MAX],
		     struct xerr *err);

#endif
