/* permission_cache: the bounded, thread-safe in-process cache of users' effective permission sets,
 * each entry stamped with the Redis version tokens it was computed under. Pure memory, no I/O. */
#ifndef PERMISSION_CACHE_H
#define PERMISSION_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "permission_match.h"

#define PERM_TOKEN_MAX 24

/* The freshness tokens read from Redis (perm:ver:global, perm:ver:user:{id}) before the database
 * read that produced an entry. An entry is used only while Redis still holds the same two tokens.
 */
typedef struct perm_stamp {
    char global[PERM_TOKEN_MAX];
    char user[PERM_TOKEN_MAX];
} perm_stamp;

typedef struct perm_cache perm_cache;

typedef struct perm_cache_stats {
    uint64_t hits, misses, inserts, evictions, clears;
} perm_cache_stats;

/* capacity: entries (rounded up to a multiple of the set size; 0 = disabled: every lookup misses).
 * max_age_ms: an entry older than this is a miss even when its stamp matches (defence in depth;
 * 0 = no limit). */
perm_cache *perm_cache_new(size_t capacity, int64_t max_age_ms);
void perm_cache_free(perm_cache *c); /* NULL ok */

/* On a hit (same user, same stamp, same generation, young enough) fills allowed[i] for each
 * concrete permission perms[i] and returns true; the matching runs under the entry's lock, so no
 * set escapes. Otherwise returns false. Thread-safe. */
bool perm_cache_check(perm_cache *c, const char *user_id, const perm_stamp *st, int64_t now_ms,
                      const char *const *perms, size_t n, bool *allowed);

/* The generation to pass to perm_cache_put: read it BEFORE the Redis read of the stamp, so that a
 * perm_cache_clear() that happens meanwhile makes the new entry dead on arrival. */
uint64_t perm_cache_generation(perm_cache *c);

/* Stores (replacing the user's entry or evicting the least recently used of its set). Takes
 * ownership of set (freed at once when the cache is disabled or gen is out of date). */
void perm_cache_put(perm_cache *c, const char *user_id, const perm_stamp *st, uint64_t gen,
                    int64_t now_ms, perm_set *set);

/* Forgets every entry (O(1): bumps the generation; old entries die lazily). Called on any Redis
 * error, since versions observed across an outage cannot be trusted. */
void perm_cache_clear(perm_cache *c);

void perm_cache_stats_get(perm_cache *c, perm_cache_stats *out);

#endif
