/* store.h — the xenstore node tree: nodes with values and permissions,
 * per-domain quotas, and transactions with fine-grained conflict detection.
 *
 * This is the contract between the store (store.c) and the daemon (the wire
 * protocol, connections, watches: the other files of src/xs).  The store does
 * no I/O and is used from one thread (the daemon's loop).
 *
 * Paths are absolute, canonical ("/local/domain/1/name"), without a trailing
 * '/' except the root "/"; the daemon turns relative paths (relative to
 * /local/domain/<domid>) into absolute ones and checks their syntax and length
 * before calling (the store checks them again: EINVAL, see xs_path_check).
 * Errors are negative errnos, named on the wire as xenstored names them.  The
 * store answers ENOENT, EACCES, EINVAL, EPERM (an unprivileged domain changing
 * a node's owner), ENOSPC (every quota of the store, as 4.17: nodes per
 * domain, node size, permissions per node, transactions, nodes per
 * transaction), EAGAIN (conflict), ENOMEM (also: commit of a transaction that
 * failed half-way, as 4.17), EBUSY (load with transactions open).  E2BIG is
 * the daemon's (watches).
 */
#ifndef CX_XS_STORE_H
#define CX_XS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define XS_DOMID_PRIV 0u /* dom0: privileged (and the domain of xs_store_set_priv_domid) */

/* Permission letters on the wire: 'n' none, 'r' read, 'w' write, 'b' both. */
enum xs_perm_bits { XS_PERM_NONE = 0, XS_PERM_READ = 1, XS_PERM_WRITE = 2, XS_PERM_BOTH = 3 };

struct xs_perm {
	uint32_t domid;
	uint8_t perm; /* enum xs_perm_bits */
};
/* A node's permissions: perms[0] is the owner and the default for every
 * domain not listed; the owner (and privileged domains) may do anything. */

/* Every field: 0 = unlimited.  Privileged domains are exempt from all.
 * 4.17's defaults in brackets. */
struct xs_quota {
	uint32_t max_nodes;        /* nodes a domain owns [1000]; a write needing k new
				    * nodes fails when owned + k > max; a commit fails
				    * when a changed domain would own >= max (4.17) */
	uint32_t max_node_size;    /* 4.17's record size: 24 + 8 * perms + value +
				    * child names with NULs must stay < max [2048] */
	uint32_t max_path;         /* path length past "/local/domain/<id>/"
				    * (XENSTORE_REL_PATH_MAX) [2048] */
	uint32_t max_watches;      /* per domain (kept by the daemon) [128] */
	uint32_t max_transactions; /* per domain open at once; as 4.17 ("started >
				    * quota" fails) max + 1 may be open [10] */
	uint32_t max_perms;        /* entries in one node's permission list [5] */
	uint32_t max_txn_nodes;    /* nodes one transaction may touch [1024] */
};

struct xs_store;
struct xs_txn;

/* The daemon is told of every committed change (a non-transactional write or a
 * transaction's commit): one call per changed path, in order.  rm of a subtree
 * reports the removed node with recursive = true (watches on any path below it
 * fire too).  Paths are absolute.
 * When: a write, mkdir or set_perms is reported after it is applied; a
 * non-transactional rm just BEFORE the subtree goes (so xs_can and
 * xs_node_gen still see it); a commit reports after all its changes are
 * applied, each path once, in the order of its first change in the
 * transaction; nodes below a removed node are not reported separately.
 * (4.17 fires, for rm, one exact event per removed node and a normal one
 * for the top: the daemon gets that by matching watches below a recursive
 * path against the nodes that exist before the removal.) */
typedef void (*xs_change_fn)(void *opaque, const char *path, bool recursive);

struct xs_store *xs_store_new(const struct xs_quota *q, xs_change_fn fn, void *opaque);
void xs_store_free(struct xs_store *s);
/* xs_store_new creates "/", "/tool", "/tool/xenstored" (owner 0, 'n' for
 * others), as 4.17's setup_structure; writing /local/domain/0 creates /local
 * and /local/domain with the root's permissions.  q may be NULL (no quotas). */
void xs_store_set_quota(struct xs_store *s, const struct xs_quota *q);
const struct xs_quota *xs_store_quota(const struct xs_store *s);

/* Is dom privileged: dom0, or the domain given with xenstored's -p
 * (xs_store_set_priv_domid)?  Privileged domains may do anything and have
 * no quotas. */
bool xs_store_is_priv(struct xs_store *s, uint32_t dom);
void xs_store_set_priv_domid(struct xs_store *s, uint32_t dom);
/* set_target: dom (e.g. a device model stub domain) gets, on every node, the
 * rights of target as well as its own, and the owner's rights on the nodes
 * target owns (4.17's perm_for_conn).  It does NOT make dom privileged: its
 * quotas still apply. */
int xs_store_set_target(struct xs_store *s, uint32_t dom, uint32_t target);
/* Forget a domain's target mapping (its nodes and their count stay). */
void xs_store_domain_gone(struct xs_store *s, uint32_t dom);
/* What 4.17 does to a destroyed domain's nodes: remove every node dom owns
 * (reported as removals), or with keep (xenstored -K) give them to the
 * privileged domain.  A walk of the whole tree, only when dom owns nodes. */
int xs_store_domain_orphans(struct xs_store *s, uint32_t dom, bool keep);
/* 4.17's is_valid_nodename: absolute, no "//", no trailing '/', characters
 * [A-Za-z0-9-/_@], length past "/local/domain/<id>/" <= max_path.  0 or
 * -EINVAL. */
int xs_path_check(const struct xs_store *s, const char *path, size_t plen);

/* Transactions.  t = NULL means "no transaction".  Reads in a transaction see
 * its own writes; commit fails with -EAGAIN if any node it touched (read,
 * wrote, listed, removed, created, or whose absence it saw; and, as 4.17, the
 * parent whose child list it changed) changed since it first touched it —
 * unrelated paths never conflict.  Transactions are per store, ids unique
 * and non-zero; ENOSPC past max_transactions.  xs_txn_end frees t either
 * way; a commit answers 0, -EAGAIN, -ENOSPC (node quota) or -ENOMEM. */
int xs_txn_start(struct xs_store *s, uint32_t dom, struct xs_txn **t);
int xs_txn_end(struct xs_store *s, struct xs_txn *t, bool commit);
uint32_t xs_txn_id(const struct xs_txn *t);
uint32_t xs_txn_dom(const struct xs_txn *t);

/* Operations as dom.  Values are bytes (may contain NULs). */
int xs_read(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
	    struct buf *out);
/* write creates missing parents.  As 4.17's construct_node: every new node
 * gets a copy of its parent's permission list, with its owner (entry 0)
 * replaced by dom when dom is unprivileged.  Creating needs write access to
 * the deepest existing ancestor; a missing node answers ENOENT if that
 * ancestor grants the access asked for, else EACCES (no information leak). */
int xs_write(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
	     const void *val, size_t len);
int xs_mkdir(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path);
/* rm is recursive and needs write access to the node only.  rm of a missing
 * node whose parent exists succeeds (xenstored); of "/" fails EINVAL. */
int xs_rm(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path);
/* Child names, each followed by NUL, appended to out, in creation order (4.17
 * appends a new child to its parent's list). */
int xs_directory(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		 struct buf *out);
/* The generation of a node (for directory_part: a change of it restarts the
 * listing); 0 if absent.  Changes with the node's value, permissions and child
 * list. */
uint64_t xs_node_gen(struct xs_store *s, struct xs_txn *t, const char *path);
int xs_get_perms(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		 struct xs_perm **perms, int *n); /* *perms malloc'd */
int xs_set_perms(struct xs_store *s, struct xs_txn *t, uint32_t dom, const char *path,
		 const struct xs_perm *perms, int n);
/* Does dom have (at least) want on path (for watches: a watch event is only
 * sent to a connection that may read the node or its parent, as 4.17's
 * watch_permitted)?  For a missing path: the deepest existing ancestor. */
bool xs_can(struct xs_store *s, uint32_t dom, const char *path, uint8_t want);

/* Accounting */
uint32_t xs_store_nodes(const struct xs_store *s);
uint32_t xs_store_dom_nodes(const struct xs_store *s, uint32_t dom);

/* Dump and reload (clean stop / start): a binary format of ours (see
 * docs/xenstored-store.md), every node with its value and permissions, child
 * order kept; written to file.tmp, synced, renamed.  load replaces the whole
 * tree (or keeps the old one on error); not with transactions open (EBUSY).
 * 0 or -errno. */
int xs_store_dump(struct xs_store *s, const char *file);
int xs_store_load(struct xs_store *s, const char *file);

#endif
