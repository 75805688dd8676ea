/* arena.c — bump allocator: chunks of at least 16 KiB, freed all at once. */
#include "base/arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct arena_chunk {
	struct arena_chunk *next;
	size_t cap;
	_Alignas(16) unsigned char data[];
};

#define ARENA_CHUNK_MIN (16u * 1024u)

void arena_init(struct arena *a, size_t limit)
{
	memset(a, 0, sizeof(*a));
	a->limit = limit;
}

static int arena_grow(struct arena *a, size_t n)
{
	size_t cap = ARENA_CHUNK_MIN;
	if (a->head && a->head->cap * 2 > cap && a->head->cap < (1u << 24))
		cap = a->head->cap * 2;
	if (cap < n)
		cap = n;
	struct arena_chunk *c = malloc(sizeof(*c) + cap);
	if (!c)
		return -1;
	c->next = a->head;
	c->cap = cap;
	a->head = c;
	a->used = 0;
	a->cap = cap;
	return 0;
}

void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + 15u) & ~(size_t)15u;
	if (n == 0)
		n = 16;
	if (a->limit && a->total + n > a->limit)
		return NULL;
	if (!a->head || a->cap - a->used < n) {
		if (arena_grow(a, n) < 0)
			return NULL;
	}
	void *p = a->head->data + a->used;
	a->used += n;
	a->total += n;
	return p;
}

void *arena_calloc(struct arena *a, size_t n)
{
	void *p = arena_alloc(a, n);
	if (p)
		memset(p, 0, n);
	return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);
	if (!p)
		return NULL;
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char *arena_printf(struct arena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	char *p = arena_alloc(a, (size_t)n + 1);
	if (!p)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

void arena_reset(struct arena *a)
{
	if (!a->head)
		return;
	/* keep the oldest chunk (the last in the list) */
	struct arena_chunk *c = a->head, *keep = NULL;
	while (c) {
		struct arena_chunk *next = c->next;
		if (!next)
			keep = c;
		else
			free(c);
		c = next;
	}
	keep->next = NULL;
	a->head = keep;
	a->used = 0;
	a->cap = keep->cap;
	a->total = 0;
}

void arena_free(struct arena *a)
{
	struct arena_chunk *c = a->head;
	while (c) {
		struct arena_chunk *next = c->next;
		free(c);
		c = next;
	}
	a->head = NULL;
	a->used = a->cap = a->total = 0;
}
