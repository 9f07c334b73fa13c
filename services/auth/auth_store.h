/* auth_store: auth's Redis keys: revocation (revoked:jti, revoked:sid, revoked_before), login
 * lockout counters (login_fail:{email}). Every failure to reach Redis is ERR_UNAVAILABLE, so
 * callers fail closed. */
#ifndef AUTH_STORE_H
#define AUTH_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cache.h"
#include "common/err.h"

typedef struct auth_store auth_store;

/* Borrows c (must outlive the store). */
auth_store *auth_store_new(cache *c);
void auth_store_free(auth_store *s);

/* SET revoked:jti:{jti} 1 EX ttl_s (ttl_s >= 1). */
err_code auth_store_revoke_jti(auth_store *s, const char *jti, int ttl_s, err_info *e);
/* SET revoked:sid:{sid} 1 EX ttl_s for each of n sessions, one round trip. */
err_code auth_store_revoke_sids(auth_store *s, const char *const *sids, size_t n, int ttl_s,
                                err_info *e);
/* SET revoked_before:{user} now EX ttl_s. */
err_code auth_store_revoke_before(auth_store *s, const char *user_id, int64_t now, int ttl_s,
                                  err_info *e);
/* One MGET of the three keys; *revoked = jti or sid denied, or iat < revoked_before. */
err_code auth_store_is_revoked(auth_store *s, const char *jti, const char *sid, const char *user_id,
                               int64_t iat, bool *revoked, err_info *e);

/* Lockout. *count = failures recorded in the current window, *ttl_s = seconds left in it. A
 * counter found without expiry (an EXPIRE lost after its INCR) is given window_s, so a lock can
 * never become permanent. */
err_code auth_store_login_failures(auth_store *s, const char *email, int window_s, long *count,
                                   int *ttl_s, err_info *e);
/* INCR + EXPIRE NX window (the window starts at the first failure). */
err_code auth_store_login_failed(auth_store *s, const char *email, int window_s, long *count,
                                 err_info *e);
err_code auth_store_login_reset(auth_store *s, const char *email, err_info *e);

#endif
