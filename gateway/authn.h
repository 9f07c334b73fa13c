/* authn: bearer-token authentication: local ES256 verification with keys from auth's JWKS, a
 * bounded cache of verified tokens, and the Redis revocation check (fail closed). */
#ifndef GATEWAY_AUTHN_H
#define GATEWAY_AUTHN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cache.h"
#include "common/err.h"
#include "common/jwt.h"

typedef struct authn authn;

typedef struct authn_opts {
    const char *issuer;
    const char *audience;
    int leeway_s;
    cache *redis;       /* revocation store; NULL = revocation checks answer UNAVAILABLE */
    size_t cache_slots; /* verified-token cache size (0 = 8192) */
} authn_opts;

authn *authn_new(const authn_opts *o);
void authn_free(authn *a);

/* Replaces the verification keys with those of a JWKS document (clears the token cache). */
err_code authn_set_jwks(authn *a, const char *json, size_t len, err_info *e);
bool authn_has_keys(authn *a);
/* Monotonic ms of the last successful authn_set_jwks (0 = never). */
int64_t authn_keys_time(authn *a);

/* Verifies token (from the cache when it was verified before and has not expired).
 * ERR_UNAUTHENTICATED (reason in e->msg), ERR_NOT_FOUND when only the kid is unknown (refresh keys
 * and retry), ERR_UNAVAILABLE when no keys are loaded yet. Thread-safe. */
err_code authn_verify(authn *a, const char *token, jwt_claims *out, err_info *e);

/* One MGET of revoked:jti:{jti}, revoked:sid:{sid}, revoked_before:{sub}: ERR_UNAUTHENTICATED when
 * the token is revoked, ERR_UNAVAILABLE when Redis cannot answer (fail closed). */
err_code authn_check_revoked(authn *a, const jwt_claims *c, err_info *e);

/* The same check split for pipelining: prepare the MGET, then judge its reply (NULL = Redis could
 * not answer → ERR_UNAVAILABLE). */
typedef struct authn_cmd {
    const char *argv[4];
    size_t lens[4];
    char k[3][96];
} authn_cmd;
void authn_revocation_prepare(const jwt_claims *c, authn_cmd *cmd);
err_code authn_revocation_finish(const jwt_claims *c, const cache_reply *r, err_info *e);

/* The decision on an MGET answer (pure; unit-tested): values may be NULL (key absent). */
bool authn_is_revoked(const jwt_claims *c, const char *jti_val, const char *sid_val,
                      const char *before_val);

#endif
