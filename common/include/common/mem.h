/* mem: allocation that aborts on failure, and the per-request arena (with a protobuf-c allocator).
 */
#ifndef COMMON_MEM_H
#define COMMON_MEM_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* Abort the process on out-of-memory, as Redis and h2o do. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* A bump allocator whose memory dies at once with arena_free/arena_reset. Not thread-safe:
 * one arena belongs to one request. Cleanups run in reverse order of registration. */
typedef struct arena arena;

arena *arena_new(size_t block_size);   /* 0 = default (8 KiB) */
void arena_free(arena *a);             /* runs cleanups; NULL is a no-op */
void arena_reset(arena *a);            /* runs cleanups, keeps the first block */
void *arena_alloc(arena *a, size_t n); /* 16-byte aligned, zeroed */
char *arena_strdup(arena *a, const char *s);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_defer(arena *a, void (*fn)(void *), void *arg);
size_t arena_used(const arena *a);

/* A protobuf-c allocator whose memory lives in the arena: unpacked messages die with it, and
 * protobuf_c_message_free_unpacked is then unnecessary (harmless: free is a no-op). */
void arena_pb_allocator(arena *a, ProtobufCAllocator *out);

#endif
