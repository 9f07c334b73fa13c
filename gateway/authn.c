/* authn: verifies access tokens locally and checks revocation in Redis. Verified tokens are cached
 * by SHA-256 of the token (never the token itself) until exp, in a fixed-size table, so the hot
 * path costs one hash instead of an ECDSA verify; revocation is still checked on every request. */
#include "authn.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fmt.h"
#include "common/mem.h"
#include "common/rpc_server.h"

#define STRIPES 64

typedef struct slot {
    unsigned char hash[32];
    bool used;
    uint64_t gen;
    jwt_claims claims;
} slot;

struct authn {
    char *iss, *aud;
    int leeway;
    cache *redis;
    pthread_rwlock_t keys_lock;
    jwt_keyset *keys;
    uint64_t gen; /* keyset generation: cache entries of older keysets are ignored */
    int64_t keys_time;
    size_t nslots;
    slot *slots;
    pthread_mutex_t stripes[STRIPES];
};

authn *authn_new(const authn_opts *o)
{
    authn *a = xcalloc(1, sizeof *a);
    a->iss = xstrdup(o->issuer ? o->issuer : "");
    a->aud = xstrdup(o->audience ? o->audience : "");
    a->leeway = o->leeway_s;
    a->redis = o->redis;
    pthread_rwlock_init(&a->keys_lock, NULL);
    a->nslots = o->cache_slots ? o->cache_slots : 8192;
    a->slots = xcalloc(a->nslots, sizeof *a->slots);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&a->stripes[i], NULL);
    return a;
}

void authn_free(authn *a)
{
    if (!a)
        return;
    jwt_keyset_free(a->keys);
    pthread_rwlock_destroy(&a->keys_lock);
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&a->stripes[i]);
    free(a->slots);
    free(a->iss);
    free(a->aud);
    free(a);
}

err_code authn_set_jwks(authn *a, const char *json, size_t len, err_info *e)
{
    jwt_keyset *ks = jwt_keyset_from_jwks(json, len, e);
    if (!ks)
        return e->code ? e->code : ERR_INVALID_ARGUMENT;
    pthread_rwlock_wrlock(&a->keys_lock);
    jwt_keyset *old = a->keys;
    a->keys = ks;
    a->gen++;
    a->keys_time = rpc_now_ms();
    pthread_rwlock_unlock(&a->keys_lock);
    jwt_keyset_free(old);
    return ERR_OK;
}

bool authn_has_keys(authn *a)
{
    pthread_rwlock_rdlock(&a->keys_lock);
    bool has = a->keys && jwt_keyset_count(a->keys) > 0;
    pthread_rwlock_unlock(&a->keys_lock);
    return has;
}

int64_t authn_keys_time(authn *a)
{
    pthread_rwlock_rdlock(&a->keys_lock);
    int64_t t = a->keys_time;
    pthread_rwlock_unlock(&a->keys_lock);
    return t;
}

err_code authn_verify(authn *a, const char *token, jwt_claims *out, err_info *e)
{
    if (!token || !*token || strlen(token) > 8192)
        return err_set(e, ERR_UNAUTHENTICATED, "missing or malformed bearer token");
    unsigned char h[32];
    if (!jwt_sha256(token, strlen(token), h))
        return err_set(e, ERR_UNAVAILABLE, "token hash unavailable");
    uint64_t idx;
    memcpy(&idx, h, sizeof idx);
    size_t i = (size_t)(idx % a->nslots);
    pthread_mutex_t *mu = &a->stripes[i % STRIPES];
    int64_t now = (int64_t)time(NULL);

    pthread_rwlock_rdlock(&a->keys_lock);
    uint64_t gen = a->gen;
    if (!a->keys) {
        pthread_rwlock_unlock(&a->keys_lock);
        return err_set(e, ERR_UNAVAILABLE, "signing keys not loaded yet");
    }
    pthread_mutex_lock(mu);
    slot *s = &a->slots[i];
    if (s->used && s->gen == gen && memcmp(s->hash, h, 32) == 0 &&
        now <= s->claims.exp + a->leeway) {
        *out = s->claims;
        pthread_mutex_unlock(mu);
        pthread_rwlock_unlock(&a->keys_lock);
        return ERR_OK;
    }
    pthread_mutex_unlock(mu);
    jwt_verify_opts vo = {a->iss, a->aud, a->leeway, 0};
    jwt_claims c;
    err_code rc = jwt_verify(a->keys, token, &vo, &c, e);
    pthread_rwlock_unlock(&a->keys_lock);
    if (rc == ERR_NOT_FOUND)
        return rc;
    if (rc != ERR_OK) {
        e->code = ERR_UNAUTHENTICATED;
        return ERR_UNAUTHENTICATED;
    }
    pthread_mutex_lock(mu);
    memcpy(s->hash, h, 32);
    s->used = true;
    s->gen = gen;
    s->claims = c;
    pthread_mutex_unlock(mu);
    *out = c;
    return ERR_OK;
}

bool authn_is_revoked(const jwt_claims *c, const char *jti_val, const char *sid_val,
                      const char *before_val)
{
    if (jti_val || sid_val)
        return true;
    if (before_val) {
        char *end = NULL;
        long long before = strtoll(before_val, &end, 10);
        if (end == before_val)
            return true; /* unreadable marker: deny rather than guess */
        if (c->iat < before)
            return true;
    }
    return false;
}

void authn_revocation_prepare(const jwt_claims *c, authn_cmd *cmd)
{
    static const char *const prefix[3] = {"revoked:jti:", "revoked:sid:", "revoked_before:"};
    const char *val[3] = {c->jti, c->sid, c->sub};
    cmd->argv[0] = "MGET";
    cmd->lens[0] = 4;
    for (int i = 0; i < 3; i++) {
        cmd->lens[i + 1] = fmt_cat(cmd->k[i], sizeof cmd->k[i], prefix[i], val[i]);
        cmd->argv[i + 1] = cmd->k[i];
    }
}

err_code authn_revocation_finish(const jwt_claims *c, const cache_reply *r, err_info *e)
{
    if (!r || cache_reply_kind(r) != CACHE_REPLY_ARRAY || cache_reply_len(r) != 3) {
        e->retry_after_s = 1;
        return err_set(e, ERR_UNAVAILABLE, "token revocation store unavailable");
    }
    const char *v[3];
    for (size_t i = 0; i < 3; i++) {
        const cache_reply *x = cache_reply_at(r, i);
        v[i] = x && cache_reply_kind(x) == CACHE_REPLY_STRING ? cache_reply_str(x, NULL) : NULL;
    }
    if (authn_is_revoked(c, v[0], v[1], v[2]))
        return err_set(e, ERR_UNAUTHENTICATED, "access token has been revoked");
    return ERR_OK;
}

err_code authn_check_revoked(authn *a, const jwt_claims *c, err_info *e)
{
    if (!a->redis) {
        e->retry_after_s = 1;
        return err_set(e, ERR_UNAVAILABLE, "token revocation store unavailable");
    }
    authn_cmd cmd;
    authn_revocation_prepare(c, &cmd);
    cache_reply *r = NULL;
    err_info ce;
    err_clear(&ce);
    if (cache_command(a->redis, 4, cmd.argv, cmd.lens, &r, &ce) != ERR_OK)
        r = NULL;
    err_code rc = authn_revocation_finish(c, r, e);
    cache_reply_free(r);
    return rc;
}
