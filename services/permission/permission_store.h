/* permission_store: the Redis side of Check freshness: version tokens perm:ver:global and
 * perm:ver:user:{id}. A token is a random 64-bit value replaced (never incremented) on each change,
 * so a token value is never seen twice: a flushed, evicted or restarted Redis gives "missing",
 * never an old value that a stale cache entry could match. */
#ifndef PERMISSION_STORE_H
#define PERMISSION_STORE_H

#include "common/cache.h"
#include "common/err.h"
#include "permission_cache.h"

#define PERM_KEY_GLOBAL "perm:ver:global"
#define PERM_KEY_USER_PREFIX "perm:ver:user:"

typedef struct perm_store perm_store;

/* c is borrowed (must outlive the store). */
perm_store *perm_store_new(cache *c);
void perm_store_free(perm_store *s); /* NULL ok */

/* Reads both tokens in one round trip (MGET). When one is missing it is first created (SET NX with
 * a fresh token) and both are read again, in one pipelined round trip, so the stamp returned is
 * always complete. ERR_UNAVAILABLE when Redis fails (the caller must then not trust any cached
 * entry). */
err_code perm_store_read(perm_store *s, const char *user_id, perm_stamp *out, err_info *e);

/* Replace the global token (any role change) / the user's token (assign, revoke, user deleted).
 * Must be called AFTER the database commit and BEFORE the RPC returns. ERR_UNAVAILABLE on failure.
 */
err_code perm_store_bump_global(perm_store *s, err_info *e);
err_code perm_store_bump_user(perm_store *s, const char *user_id, err_info *e);

#endif
