/* idl.h — the datamodel as C tables.
 *
 * The tables are generated at build time by tools/idlgen.py from the idl/ JSON files
 * (build/.../idl_gen.c); nothing generated is committed.  Every other part of
 * the daemon (database schema, dispatch, RBAC, records) is driven by them.
 */
#ifndef CX_IDL_H
#define CX_IDL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ty_kind {
	TY_VOID = 0,
	TY_STRING,
	TY_INT,
	TY_FLOAT,
	TY_BOOL,
	TY_DATETIME,
	TY_ENUM,     /* enm = index in idl_enums */
	TY_REF,      /* cls = index in idl_classes, or -1 for a class not in the model */
	TY_RECORD,   /* cls */
	TY_SET,      /* a = element type */
	TY_MAP,      /* a = key type, b = value type */
	TY_OPTION,   /* a */
	TY_EVENT_BATCH, /* result of event.from */
};

struct idl_type {
	uint8_t kind;   /* enum ty_kind */
	int16_t cls;
	int16_t enm;
	const struct idl_type *a, *b;
	const char *text; /* the datamodel spelling, e.g. "(string -> string) map" */
};

struct idl_enum {
	const char *name;
	int nvalues;
	const char *const *values; /* wire spelling */
};

enum idl_qual { Q_RW, Q_RO_CONSTRUCTOR, Q_RO_RUNTIME };

/* A map key with its own RBAC permission "<perm>/key:<key>" (key may end in
 * '*' to match a prefix) and the roles allowed it. */
struct idl_keyrole {
	const char *key;
	uint8_t roles;
};

enum idl_lifecycle { LC_PUBLISHED, LC_PROTOTYPED, LC_DEPRECATED, LC_REMOVED };

struct idl_field {
	const char *name;       /* wire name, e.g. "name_label" */
	uint16_t name_len;
	const char *column;     /* database column name, e.g. "name__label" */
	const struct idl_type *ty;
	uint8_t qual;           /* enum idl_qual */
	uint8_t lifecycle;      /* enum idl_lifecycle */
	bool internal;          /* kept in the database, never sent in records */
	bool has_default;
	bool required;          /* must be given to an implicit create */
	const char *deflt;      /* default as JSON text (e.g. "\"\"", "{}", "0",
	                           "\"OpaqueRef:NULL\""), NULL if none */
	/* One-to-many relation: when this field is the "many" side (a set of
	 * refs computed from another class's ref field), rel_cls/rel_field name
	 * that ref field; -1 otherwise. */
	int16_t rel_cls;
	int16_t rel_field;
	/* The "one" side of a relation: this ref field is mirrored by the set
	 * field many_field of class many_cls; -1 otherwise. */
	int16_t many_cls;
	int16_t many_field;
	/* map fields: keys with their own permission (add_to_/remove_from_) */
	const struct idl_keyrole *keyroles;
	int nkeyroles;
};

struct idl_class {
	const char *name;          /* "VM" */
	const char *lname;         /* lower-cased, for permission names: "vm" */
	uint8_t lifecycle;
	bool in_db;                /* has rows (false for auth, event, data_source ...) */
	bool persist;              /* stored durably (false for session, task ...) */
	int nfields;
	const struct idl_field *fields;
	int uuid_field;            /* index of "uuid", or -1 */
	int name_label_field;      /* index of "name_label", or -1 */
};

enum idl_msg_kind {
	MK_EXPLICIT = 0, /* hand-written; handler looked up by wire name */
	MK_GET_FIELD,
	MK_SET_FIELD,
	MK_MAP_ADD,      /* add_to_<field> */
	MK_MAP_REMOVE,   /* remove_from_<field> */
	MK_SET_ADD,      /* add_<field> */
	MK_SET_REMOVE,   /* remove_<field> */
	MK_GET_BY_UUID,
	MK_GET_BY_NAME_LABEL,
	MK_GET_RECORD,
	MK_GET_ALL,
	MK_GET_ALL_RECORDS,
	MK_GET_ALL_WHERE,
	MK_GET_ALL_RECORDS_WHERE,
	MK_CREATE,
	MK_DESTROY,
};

struct idl_param {
	const char *name;
	const struct idl_type *ty;
	const char *deflt;   /* JSON text of the default, NULL if required */
};

/* Roles are a bitmask in this order (highest privilege first). */
enum idl_role {
	ROLE_POOL_ADMIN = 0,
	ROLE_POOL_OPERATOR,
	ROLE_VM_POWER_ADMIN,
	ROLE_VM_ADMIN,
	ROLE_VM_OPERATOR,
	ROLE_CLIENT_CERT,
	ROLE_READ_ONLY,
	ROLE_COUNT
};
extern const char *const idl_role_names[ROLE_COUNT]; /* "pool-admin", ... */

struct idl_msg {
	const char *wire;        /* "VM.get_record" */
	const char *perm;        /* RBAC permission name, lower-cased: "vm.get_record" */
	int16_t cls;
	int16_t field;           /* for field messages, else -1 */
	uint8_t kind;            /* enum idl_msg_kind */
	uint8_t lifecycle;       /* LC_REMOVED answers MESSAGE_REMOVED */
	bool session;            /* first parameter is a session ref */
	bool async;              /* may be called as Async.<wire> */
	bool hidden;             /* not in system.listMethods? (false: hidden messages are listed) */
	bool overridden;         /* implicit-looking but needs hand-written code */
	uint8_t roles;           /* bitmask of 1u << enum idl_role; 0 = local root only */
	int nparams;             /* including the session parameter */
	int nrequired;           /* parameters without defaults, including the session */
	const struct idl_param *params;
	const struct idl_type *result;
	int nerrors;
	const char *const *errors;
};

struct idl_error {
	const char *code;
	int nparams;
	const char *const *params; /* documented parameter names */
};

extern const int idl_nclasses;
extern const struct idl_class idl_classes[];
extern const int idl_nmsgs;
extern const struct idl_msg idl_msgs[];
extern const int idl_nenums;
extern const struct idl_enum idl_enums[];
extern const int idl_nerrors;
extern const struct idl_error idl_errors[];
extern const int idl_api_version_major, idl_api_version_minor;
extern const char *const idl_schema_version; /* e.g. "5.780" */

/* Lookups (idl.c; hash tables built once on first use, thread-safe). */
int idl_class_find(const char *name);              /* -1 if unknown */
int idl_field_find(int cls, const char *name);     /* -1 if unknown */
const struct idl_msg *idl_msg_find(const char *wire, size_t n); /* also accepts Class_msg */
int idl_enum_value(int enm, const char *s, size_t n); /* case-insensitive; -1 */

#endif
