/* filter.c — the get_all_where expression language.
 *
 *   expr  := value "=" value | value "<>" value
 *          | expr "and" expr | expr "or" expr | "not" expr
 *          | "true" | "false" | "(" expr ")"
 *   value := '"' text '"' | "field" '"' column '"'
 *
 * Same grammar and precedence as the original's yacc parser: "and" and "or"
 * have the same precedence and associate to the left; "not" has the lowest
 * precedence, so it extends to the end of the enclosing group
 * ("not a and b" is "not (a and b)").  Keywords are recognised as prefixes,
 * like the original's lexer; a quoted text cannot contain '"'.  "<>" is our
 * extension.  Columns are db column names (name__label); the wire name
 * (name_label) and "ref"/"_ref" (the row's own reference) are accepted too.
 * A field compares by its db text form (db_value_text).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db_internal.h"
#include "base/xerr.h"

enum { N_TRUE, N_FALSE, N_NOT, N_AND, N_OR, N_EQ, N_NE };

#define FV_REF (-1)
#define FV_LIT (-2)

struct fval {
	int field;        /* field index, FV_REF or FV_LIT */
	const char *s;    /* literal (points into db_filter.text) */
	size_t n;
};

struct fnode {
	uint8_t kind;
	int a, b;         /* child nodes (NOT/AND/OR) or values (EQ/NE) */
};

struct db_filter {
	int cls;
	struct fnode *nodes;
	int nn, capn;
	struct fval *vals;
	int nv, capv;
	int root;
	char *text;       /* copy of the expression; literals point into it */
};

enum { T_EOF, T_EQ, T_NE, T_TRUE, T_FALSE, T_LP, T_RP, T_FIELD, T_AND, T_OR, T_NOT, T_STR, T_ERR };

struct parser {
	struct db_filter *f;
	const char *p;
	int tok;
	const char *ts;   /* T_STR: text */
	size_t tn;
	bool err;
};

static void lex(struct parser *ps)
{
	static const struct { const char *kw; int tok; } kws[] = {
		{ "true", T_TRUE }, { "false", T_FALSE }, { "field", T_FIELD },
		{ "and", T_AND }, { "or", T_OR }, { "not", T_NOT },
	};
	const char *p = ps->p;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (!*p) {
		ps->tok = T_EOF;
		ps->p = p;
		return;
	}
	if (*p == '=') {
		ps->tok = T_EQ;
		ps->p = p + 1;
		return;
	}
	if (p[0] == '<' && p[1] == '>') {
		ps->tok = T_NE;
		ps->p = p + 2;
		return;
	}
	if (*p == '(' || *p == ')') {
		ps->tok = *p == '(' ? T_LP : T_RP;
		ps->p = p + 1;
		return;
	}
	if (*p == '"') {
		const char *e = strchr(p + 1, '"');
		if (!e) {
			ps->tok = T_ERR;
			return;
		}
		ps->tok = T_STR;
		ps->ts = p + 1;
		ps->tn = (size_t)(e - p - 1);
		ps->p = e + 1;
		return;
	}
	for (size_t i = 0; i < sizeof kws / sizeof kws[0]; i++) {
		size_t n = strlen(kws[i].kw);
		if (strncmp(p, kws[i].kw, n) == 0) {
			ps->tok = kws[i].tok;
			ps->p = p + n;
			return;
		}
	}
	ps->tok = T_ERR;
}

static int node(struct parser *ps, int kind, int a, int b)
{
	struct db_filter *f = ps->f;
	if (f->nn == f->capn) {
		f->capn = f->capn ? f->capn * 2 : 16;
		f->nodes = realloc(f->nodes, (size_t)f->capn * sizeof *f->nodes);
		if (!f->nodes)
			abort();
	}
	f->nodes[f->nn] = (struct fnode){ (uint8_t)kind, a, b };
	return f->nn++;
}

static int resolve_column(int cls, const char *s, size_t n)
{
	if ((n == 3 && memcmp(s, "ref", 3) == 0) || (n == 4 && memcmp(s, "_ref", 4) == 0))
		return FV_REF;
	const struct idl_class *C = &idl_classes[cls];
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < C->nfields; i++) {
			const char *c = pass == 0 ? C->fields[i].column : C->fields[i].name;
			if (c && strlen(c) == n && memcmp(c, s, n) == 0)
				return i;
		}
	return -3;
}

static int value(struct parser *ps)
{
	struct db_filter *f = ps->f;
	struct fval v = { .field = FV_LIT };
	if (ps->tok == T_FIELD) {
		lex(ps);
		if (ps->tok != T_STR) {
			ps->err = true;
			return -1;
		}
		v.field = resolve_column(f->cls, ps->ts, ps->tn);
		if (v.field == -3) {
			ps->err = true;
			return -1;
		}
	} else if (ps->tok == T_STR) {
		v.s = ps->ts;
		v.n = ps->tn;
	} else {
		ps->err = true;
		return -1;
	}
	lex(ps);
	if (f->nv == f->capv) {
		f->capv = f->capv ? f->capv * 2 : 16;
		f->vals = realloc(f->vals, (size_t)f->capv * sizeof *f->vals);
		if (!f->vals)
			abort();
	}
	f->vals[f->nv] = v;
	return f->nv++;
}

static int expr(struct parser *ps, int depth);

static int unary(struct parser *ps, int depth)
{
	int n;
	switch (ps->tok) {
	case T_NOT:
		lex(ps);
		n = expr(ps, depth + 1);
		return ps->err ? -1 : node(ps, N_NOT, n, -1);
	case T_TRUE:
	case T_FALSE:
		n = node(ps, ps->tok == T_TRUE ? N_TRUE : N_FALSE, -1, -1);
		lex(ps);
		return n;
	case T_LP:
		lex(ps);
		n = expr(ps, depth + 1);
		if (ps->err || ps->tok != T_RP) {
			ps->err = true;
			return -1;
		}
		lex(ps);
		return n;
	case T_FIELD:
	case T_STR: {
		int a = value(ps);
		if (ps->err)
			return -1;
		int kind = ps->tok == T_EQ ? N_EQ : ps->tok == T_NE ? N_NE : -1;
		if (kind < 0) {
			ps->err = true;
			return -1;
		}
		lex(ps);
		int b = value(ps);
		if (ps->err)
			return -1;
		return node(ps, kind, a, b);
	}
	default:
		ps->err = true;
		return -1;
	}
}

static int expr(struct parser *ps, int depth)
{
	if (depth > 200) {
		ps->err = true;
		return -1;
	}
	int left = unary(ps, depth);
	while (!ps->err && (ps->tok == T_AND || ps->tok == T_OR)) {
		int kind = ps->tok == T_AND ? N_AND : N_OR;
		lex(ps);
		int right = unary(ps, depth);
		if (ps->err)
			return -1;
		left = node(ps, kind, left, right);
	}
	return ps->err ? -1 : left;
}

struct db_filter *db_filter_compile(int cls, const char *text, struct xerr *err)
{
	if (cls < 0 || cls >= idl_nclasses || !text) {
		if (err)
			xerr_set(err, "INVALID_VALUE", 2, "expr", text ? text : "");
		return NULL;
	}
	struct db_filter *f = calloc(1, sizeof *f);
	if (!f)
		abort();
	f->cls = cls;
	f->text = strdup(text);
	if (!f->text)
		abort();
	struct parser ps = { .f = f, .p = f->text };
	lex(&ps);
	f->root = expr(&ps, 0);
	if (!ps.err && ps.tok != T_EOF)
		ps.err = true;
	if (ps.err) {
		if (err)
			xerr_set(err, "INVALID_VALUE", 2, "expr", text);
		db_filter_free(f);
		return NULL;
	}
	return f;
}

void db_filter_free(struct db_filter *f)
{
	if (!f)
		return;
	free(f->nodes);
	free(f->vals);
	free(f->text);
	free(f);
}

/* ---- text forms ---- */

static void sexpr_str(struct buf *out, const char *s, size_t n)
{
	buf_addc(out, '\'');
	size_t run = 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\\' || s[i] == '\'') {
			buf_add(out, s + run, i - run);
			buf_addc(out, '\\');
			run = i;
		}
	buf_add(out, s + run, n - run);
	buf_addc(out, '\'');
}

static void sexpr_item(const struct val *v, struct buf *out)
{
	if (v && v->kind == V_STR) {
		sexpr_str(out, v->u.s, v->n);
		return;
	}
	struct buf t;
	buf_init(&t);
	db_value_text(v, &t);
	sexpr_str(out, t.p ? t.p : "", t.len);
	buf_free(&t);
}

void db_value_text(const struct val *v, struct buf *out)
{
	char tmp[48];
	if (!v)
		return;
	switch (v->kind) {
	case V_STR: buf_add(out, v->u.s, v->n); break;
	case V_INT: case V_I4: buf_printf(out, "%" PRId64, v->u.i); break;
	case V_DOUBLE: buf_printf(out, "%0.18g", v->u.d); break;
	case V_BOOL: buf_adds(out, v->u.b ? "true" : "false"); break;
	case V_DATETIME:
		val_datetime_fmt(v->u.i, tmp);
		buf_adds(out, tmp);
		break;
	case V_ARRAY:
		buf_addc(out, '(');
		for (uint32_t i = 0; i < v->n; i++) {
			if (i)
				buf_addc(out, ' ');
			sexpr_item(v->u.items[i], out);
		}
		buf_addc(out, ')');
		break;
	case V_STRUCT:
		buf_addc(out, '(');
		for (uint32_t i = 0; i < v->n; i++) {
			if (i)
				buf_addc(out, ' ');
			buf_addc(out, '(');
			sexpr_str(out, v->u.members[i].key, strlen(v->u.members[i].key));
			buf_addc(out, ' ');
			sexpr_item(v->u.members[i].v, out);
			buf_addc(out, ')');
		}
		buf_addc(out, ')');
		break;
	default: break;
	}
}

/* The text of a value for this row: direct pointer when possible. */
static void val_text(const struct db_filter *f, const struct fval *fv, const struct db_row *row,
		     struct buf *tmp, const char **s, size_t *n)
{
	if (fv->field == FV_LIT) {
		*s = fv->s;
		*n = fv->n;
		return;
	}
	if (fv->field == FV_REF) {
		*s = row->ref;
		*n = strlen(row->ref);
		return;
	}
	const struct val *v = row->cols[fv->field];
	if (v && v->kind == V_STR) {
		*s = v->u.s;
		*n = v->n;
		return;
	}
	(void)f;
	tmp->len = 0;
	db_value_text(v, tmp);
	*s = tmp->p ? tmp->p : "";
	*n = tmp->len;
}

static bool eval(const struct db_filter *f, int i, const struct db_row *row,
		 struct buf *t1, struct buf *t2)
{
	const struct fnode *nd = &f->nodes[i];
	switch (nd->kind) {
	case N_TRUE: return true;
	case N_FALSE: return false;
	case N_NOT: return !eval(f, nd->a, row, t1, t2);
	case N_AND: return eval(f, nd->a, row, t1, t2) && eval(f, nd->b, row, t1, t2);
	case N_OR: return eval(f, nd->a, row, t1, t2) || eval(f, nd->b, row, t1, t2);
	case N_EQ:
	case N_NE: {
		const char *a, *b;
		size_t an, bn;
		val_text(f, &f->vals[nd->a], row, t1, &a, &an);
		val_text(f, &f->vals[nd->b], row, t2, &b, &bn);
		bool eq = an == bn && memcmp(a, b, an) == 0;
		return nd->kind == N_EQ ? eq : !eq;
	}
	}
	return false;
}

bool db_filter_match(const struct db_filter *f, const struct db_row *row)
{
	if (!f || !row || row->cls != f->cls)
		return false;
	struct buf t1, t2;
	buf_init(&t1);
	buf_init(&t2);
	bool r = eval(f, f->root, row, &t1, &t2);
	buf_free(&t1);
	buf_free(&t2);
	return r;
}
