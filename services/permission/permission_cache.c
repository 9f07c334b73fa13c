/* permission_cache: a set-associative table (4 ways per set, LRU within a set) of effective
 * permission sets, one mutex per set so concurrent Checks for different users rarely meet. */
#include "permission_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

#define WAYS 4

typedef struct entry {
    char user[PERM_USER_ID_LEN + 1]; /* "" = empty slot */
    perm_stamp stamp;
    uint64_t gen;
    int64_t born_ms;
    uint64_t used; /* LRU tick */
    perm_set *set;
} entry;

typedef struct bucket {
    pthread_mutex_t mu;
    uint64_t tick;
    entry ways[WAYS];
} bucket;

struct perm_cache {
    size_t nbuckets; /* 0 = disabled */
    int64_t max_age_ms;
    bucket *buckets;
    _Atomic uint64_t gen;
    _Atomic uint64_t hits, misses, inserts, evictions, clears;
};

perm_cache *perm_cache_new(size_t capacity, int64_t max_age_ms)
{
    perm_cache *c = xcalloc(1, sizeof *c);
    c->nbuckets = (capacity + WAYS - 1) / WAYS;
    c->max_age_ms = max_age_ms;
    atomic_init(&c->gen, 1);
    if (c->nbuckets) {
        c->buckets = xcalloc(c->nbuckets, sizeof *c->buckets);
        for (size_t i = 0; i < c->nbuckets; i++)
            pthread_mutex_init(&c->buckets[i].mu, NULL);
    }
    return c;
}

void perm_cache_free(perm_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (int w = 0; w < WAYS; w++)
            perm_set_free(c->buckets[i].ways[w].set);
        pthread_mutex_destroy(&c->buckets[i].mu);
    }
    free(c->buckets);
    free(c);
}

/* FNV-1a: user ids are random UUIDs, so even a simple hash spreads them well. */
static size_t hash_user(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return (size_t)(h ^ (h >> 29));
}

static bool stamp_eq(const perm_stamp *a, const perm_stamp *b)
{
    return strcmp(a->global, b->global) == 0 && strcmp(a->user, b->user) == 0;
}

bool perm_cache_check(perm_cache *c, const char *user_id, const perm_stamp *st, int64_t now_ms,
                      const char *const *perms, size_t n, bool *allowed)
{
    if (!c->nbuckets) {
        atomic_fetch_add_explicit(&c->misses, 1, memory_order_relaxed);
        return false;
    }
    uint64_t gen = atomic_load_explicit(&c->gen, memory_order_acquire);
    bucket *b = &c->buckets[hash_user(user_id) % c->nbuckets];
    bool hit = false;
    pthread_mutex_lock(&b->mu);
    for (int w = 0; w < WAYS; w++) {
        entry *e = &b->ways[w];
        if (!e->set || strcmp(e->user, user_id) != 0)
            continue;
        if (e->gen == gen && stamp_eq(&e->stamp, st) &&
            (c->max_age_ms <= 0 || now_ms - e->born_ms < c->max_age_ms)) {
            for (size_t i = 0; i < n; i++)
                allowed[i] = perm_set_allows(e->set, perms[i]);
            e->used = ++b->tick;
            hit = true;
        }
        break;
    }
    pthread_mutex_unlock(&b->mu);
    atomic_fetch_add_explicit(hit ? &c->hits : &c->misses, 1, memory_order_relaxed);
    return hit;
}

uint64_t perm_cache_generation(perm_cache *c)
{
    return atomic_load_explicit(&c->gen, memory_order_acquire);
}

void perm_cache_put(perm_cache *c, const char *user_id, const perm_stamp *st, uint64_t gen,
                    int64_t now_ms, perm_set *set)
{
    if (!c->nbuckets || gen != atomic_load_explicit(&c->gen, memory_order_acquire)) {
        perm_set_free(set);
        return;
    }
    bucket *b = &c->buckets[hash_user(user_id) % c->nbuckets];
    perm_set *old = NULL;
    pthread_mutex_lock(&b->mu);
    entry *victim = NULL;
    for (int w = 0; w < WAYS && !victim; w++) {
        if (b->ways[w].set && strcmp(b->ways[w].user, user_id) == 0)
            victim = &b->ways[w];
    }
    for (int w = 0; w < WAYS && !victim; w++) {
        if (!b->ways[w].set)
            victim = &b->ways[w];
    }
    if (!victim) {
        victim = &b->ways[0];
        for (int w = 1; w < WAYS; w++) {
            if (b->ways[w].used < victim->used)
                victim = &b->ways[w];
        }
        atomic_fetch_add_explicit(&c->evictions, 1, memory_order_relaxed);
    }
    old = victim->set;
    snprintf(victim->user, sizeof victim->user, "%s", user_id);
    victim->stamp = *st;
    victim->gen = gen;
    victim->born_ms = now_ms;
    victim->used = ++b->tick;
    victim->set = set;
    pthread_mutex_unlock(&b->mu);
    perm_set_free(old); /* outside the lock */
    atomic_fetch_add_explicit(&c->inserts, 1, memory_order_relaxed);
}

void perm_cache_clear(perm_cache *c)
{
    atomic_fetch_add_explicit(&c->gen, 1, memory_order_acq_rel);
    atomic_fetch_add_explicit(&c->clears, 1, memory_order_relaxed);
}

void perm_cache_stats_get(perm_cache *c, perm_cache_stats *out)
{
    out->hits = atomic_load(&c->hits);
    out->misses = atomic_load(&c->misses);
    out->inserts = atomic_load(&c->inserts);
    out->evictions = atomic_load(&c->evictions);
    out->clears = atomic_load(&c->clears);
}
