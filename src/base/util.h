/* util.h — small helpers shared by every module. */
#ifndef CX_UTIL_H
#define CX_UTIL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
void util_uuid_v4(char out[37]);         /* random (getrandom-backed) uuid text */
bool util_uuid_valid(const char *s);
int64_t util_now(void);                  /* seconds since the epoch */
double util_now_f(void);
bool util_utf8_valid(const char *s, size_t n);
char *util_strdup(const char *s);        /* aborts on OOM */
void *util_malloc(size_t n);             /* aborts on OOM */
void *util_calloc(size_t n, size_t m);
void *util_realloc(void *p, size_t n);
/* Replace path with text, atomically (temp file, fsync, rename).  0 or -errno. */
int util_write_file(const char *path, const char *text, unsigned mode);
int util_mkdir_p(const char *path, unsigned mode); /* 0 or -errno; parents 0755 */
uint64_t util_hash(const void *p, size_t n); /* FNV-1a 64 */
#endif
