/* arena.h — bump allocator for per-request data; freed in one go. */
#ifndef CX_ARENA_H
#define CX_ARENA_H
#include <stddef.h>

struct arena_chunk;
struct arena {
	struct arena_chunk *head;
	size_t used, cap;   /* in head */
	size_t total;       /* bytes handed out, for size caps */
	size_t limit;       /* 0 = unlimited; allocations past it return NULL */
};

void arena_init(struct arena *a, size_t limit);
void *arena_alloc(struct arena *a, size_t n);       /* 16-aligned; NULL past limit */
void *arena_calloc(struct arena *a, size_t n);
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_printf(struct arena *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void arena_reset(struct arena *a);  /* keep the first chunk, drop the rest */
void arena_free(struct arena *a);
#endif
