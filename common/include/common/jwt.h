/* jwt: ES256 access tokens: keys loaded once (OpenSSL EVP_PKEY), sign, strict verify, JWKS. */
#ifndef COMMON_JWT_H
#define COMMON_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct jwt_keyset jwt_keyset;

typedef struct jwt_claims {
    char iss[128];
    char aud[128];
    char sub[64]; /* user id (UUID) */
    char sid[64]; /* session id */
    char jti[64];
    int64_t iat, exp, nbf; /* nbf 0 when absent */
} jwt_claims;

/* Loads every *.pem in dir (EC P-256 private keys, PKCS#8 or SEC1; kid = file name without
 * ".pem"). The greatest kid in byte order signs (name keys by creation time, e.g.
 * 20261122T064300Z); all verify and are published. ERR_INVALID_ARGUMENT naming the file on a bad
 * key, ERR_NOT_FOUND when the directory holds none. */
jwt_keyset *jwt_keyset_load_dir(const char *dir, err_info *e);
/* A verify-only keyset from a JWKS JSON document (the gateway, from auth's GetJwks). */
jwt_keyset *jwt_keyset_from_jwks(const char *json, size_t len, err_info *e);
/* Adds a public key (x, y base64url P-256 coordinates) under kid; replaces a key of the same kid.
 */
err_code jwt_keyset_add_public(jwt_keyset *ks, const char *kid, const char *x_b64url,
                               const char *y_b64url, err_info *e);
void jwt_keyset_free(jwt_keyset *ks);
size_t jwt_keyset_count(const jwt_keyset *ks);
/* SHA-256 of in (32 bytes into out); thread-safe, the digest is looked up once per process. */
bool jwt_sha256(const void *in, size_t n, unsigned char out[32]);
bool jwt_keyset_has_kid(const jwt_keyset *ks, const char *kid);

/* Signs claims (iss, aud, sub, sid, jti, iat, exp; nbf omitted when 0) with the newest private
 * key: header {"alg":"ES256","typ":"JWT","kid":...}. *token is malloc'ed. ERR_FAILED_PRECONDITION
 * when the keyset has no private key. */
err_code jwt_sign(const jwt_keyset *ks, const jwt_claims *c, char **token, err_info *e);

typedef struct jwt_verify_opts {
    const char *iss; /* required match */
    const char *aud; /* required match (string or array containing it) */
    int leeway_s;    /* for exp / nbf / iat-in-future */
    int64_t now;     /* unix seconds; 0 = time(NULL) */
} jwt_verify_opts;

/* Verifies a compact JWS: alg pinned to ES256 (none, HS*, RS* rejected), kid must be known,
 * signature (raw r||s, 64 bytes) by that key, exp/nbf with leeway, iss, aud, and sub/sid/jti
 * present. ERR_UNAUTHENTICATED with a reason in e->msg (safe to log: never contains the token);
 * ERR_NOT_FOUND when only the kid is unknown (so the gateway can refresh its keys and retry).
 * Thread-safe. */
err_code jwt_verify(const jwt_keyset *ks, const char *token, const jwt_verify_opts *o,
                    jwt_claims *out, err_info *e);

/* The public keys as a JWKS JSON document {"keys":[{kty,crv,x,y,kid,use,alg}]} (malloc'ed). */
char *jwt_keyset_jwks(const jwt_keyset *ks);
/* Visits each key's public JWK fields (for building the GetJwks response). */
void jwt_keyset_each(const jwt_keyset *ks,
                     void (*fn)(void *arg, const char *kid, const char *x, const char *y),
                     void *arg);

/* Writes a new P-256 private key as PKCS#8 PEM to path (mode 0600); used by the local stack and
 * tests. */
err_code jwt_key_generate(const char *path, err_info *e);

#endif
