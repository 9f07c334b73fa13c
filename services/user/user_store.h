/* user_store: the Redis side of the user service: cache-aside copies of live users under
 * `user:{id}` (packed user.v1.User protobuf, TTL USER_CACHE_TTL_SEC). Redis trouble never fails a
 * caller: it is counted, logged, and reported as a miss. Thread-safe. */
#ifndef USER_STORE_H
#define USER_STORE_H

#include <stdint.h>

#include "common/cache.h"
#include "common/cache_mux.h"
#include "common/log.h"
#include "common/mem.h"
#include "user_model.h"

typedef struct user_store user_store;

typedef struct user_store_stats {
    uint64_t hits, misses, errors;
} user_store_stats;

/* c may be NULL (no caching). The cache is borrowed; with one, a cache_mux thread serves
 * user_store_get_async. */
user_store *user_store_new(cache *c, int ttl_s);
void user_store_free(user_store *s); /* NULL ok */

/* ERR_OK with *out filled (strings in a) on a hit; ERR_NOT_FOUND on a miss, an error (counted and
 * logged with lc's request id) or an unusable entry. Never returns a deleted user. */
err_code user_store_get(user_store *s, arena *a, const char *id, user_rec *out, const log_ctx *lc);
/* user_store_get without waiting: the read joins the other requests' in one Redis round trip and
 * cb runs on the cache thread with ERR_OK and the user (strings in a; valid during cb) or
 * ERR_NOT_FOUND as user_store_get would answer. cb must not block (hand database work to a worker,
 * e.g. rpc_continue). a and lc must live until cb ran. Returns false when it cannot start (no
 * cache): use user_store_get. */
typedef void (*user_store_get_cb)(void *arg, err_code rc, const user_rec *u);
bool user_store_get_async(user_store *s, arena *a, const char *id, const log_ctx *lc,
                          user_store_get_cb cb, void *arg);
/* Caches a live user (deleted ones are never cached). Errors are counted and logged only. */
void user_store_put(user_store *s, const user_rec *u, const log_ctx *lc);
/* Drops the cached copy (after a write commits). Errors are counted and logged only. */
void user_store_del(user_store *s, const char *id, const log_ctx *lc);

void user_store_stats_get(user_store *s, user_store_stats *out);

#endif
