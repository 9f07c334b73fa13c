/* auth_store: Redis commands for revocation and lockout; see auth_store.h. */
#include "auth_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

struct auth_store {
    cache *c;
};

auth_store *auth_store_new(cache *c)
{
    auth_store *s = xcalloc(1, sizeof *s);
    s->c = c;
    return s;
}

void auth_store_free(auth_store *s)
{
    free(s);
}

/* Runs argv; an error reply becomes ERR_UNAVAILABLE (we only send commands that cannot fail on
 * well-formed input, so an error means a Redis in trouble: fail closed). */
static err_code run(auth_store *s, int argc, const char **argv, cache_reply **out, err_info *e)
{
    cache_reply *r = NULL;
    err_code rc = cache_command(s->c, argc, argv, NULL, &r, e);
    if (rc)
        return rc;
    if (cache_reply_kind(r) == CACHE_REPLY_ERROR) {
        size_t l = 0;
        err_set(e, ERR_UNAVAILABLE, "redis %s: %s", argv[0], cache_reply_str(r, &l));
        cache_reply_free(r);
        return ERR_UNAVAILABLE;
    }
    if (out)
        *out = r;
    else
        cache_reply_free(r);
    return ERR_OK;
}

static err_code set_ex(auth_store *s, const char *key, const char *val, int ttl_s, err_info *e)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", ttl_s > 0 ? ttl_s : 1);
    const char *argv[] = {"SET", key, val, "EX", ttl};
    return run(s, 5, argv, NULL, e);
}

err_code auth_store_revoke_jti(auth_store *s, const char *jti, int ttl_s, err_info *e)
{
    char key[128];
    snprintf(key, sizeof key, "revoked:jti:%s", jti);
    return set_ex(s, key, "1", ttl_s, e);
}

err_code auth_store_revoke_sids(auth_store *s, const char *const *sids, size_t n, int ttl_s,
                                err_info *e)
{
    if (n == 0)
        return ERR_OK;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", ttl_s > 0 ? ttl_s : 1);
    int *argcs = xcalloc(n, sizeof *argcs);
    const char ***argvs = xcalloc(n, sizeof *argvs);
    char(*keys)[96] = xcalloc(n, sizeof *keys);
    cache_reply **out = xcalloc(n, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "revoked:sid:%s", sids[i]);
        argvs[i] = xcalloc(5, sizeof(char *));
        argvs[i][0] = "SET";
        argvs[i][1] = keys[i];
        argvs[i][2] = "1";
        argvs[i][3] = "EX";
        argvs[i][4] = ttl;
        argcs[i] = 5;
    }
    err_code rc = cache_pipeline(s->c, (int)n, argcs, argvs, NULL, out, e);
    for (size_t i = 0; i < n; i++) {
        if (rc == ERR_OK && cache_reply_kind(out[i]) == CACHE_REPLY_ERROR)
            rc = err_set(e, ERR_UNAVAILABLE, "redis SET failed");
        cache_reply_free(out[i]);
        free(argvs[i]);
    }
    free(out);
    free(keys);
    free(argvs);
    free(argcs);
    return rc;
}

err_code auth_store_revoke_before(auth_store *s, const char *user_id, int64_t now, int ttl_s,
                                  err_info *e)
{
    char key[96], val[24];
    snprintf(key, sizeof key, "revoked_before:%s", user_id);
    snprintf(val, sizeof val, "%lld", (long long)now);
    return set_ex(s, key, val, ttl_s, e);
}

static bool parse_ll(const char *s, size_t len, long long *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

err_code auth_store_is_revoked(auth_store *s, const char *jti, const char *sid, const char *user_id,
                               int64_t iat, bool *revoked, err_info *e)
{
    char k1[128], k2[128], k3[128];
    snprintf(k1, sizeof k1, "revoked:jti:%s", jti);
    snprintf(k2, sizeof k2, "revoked:sid:%s", sid);
    snprintf(k3, sizeof k3, "revoked_before:%s", user_id);
    const char *argv[] = {"MGET", k1, k2, k3};
    cache_reply *r = NULL;
    err_code rc = run(s, 4, argv, &r, e);
    if (rc)
        return rc;
    if (cache_reply_kind(r) != CACHE_REPLY_ARRAY || cache_reply_len(r) != 3) {
        cache_reply_free(r);
        return err_set(e, ERR_UNAVAILABLE, "redis MGET: unexpected reply");
    }
    bool denied = cache_reply_kind(cache_reply_at(r, 0)) != CACHE_REPLY_NIL ||
                  cache_reply_kind(cache_reply_at(r, 1)) != CACHE_REPLY_NIL;
    const cache_reply *rb = cache_reply_at(r, 2);
    if (!denied && cache_reply_kind(rb) == CACHE_REPLY_STRING) {
        size_t l = 0;
        const char *v = cache_reply_str(rb, &l);
        long long before = 0;
        /* An unreadable value denies: fail closed. */
        if (!parse_ll(v, l, &before) || iat < before)
            denied = true;
    }
    cache_reply_free(r);
    *revoked = denied;
    return ERR_OK;
}

err_code auth_store_login_failures(auth_store *s, const char *email, int window_s, long *count,
                                   int *ttl_s, err_info *e)
{
    char key[400];
    snprintf(key, sizeof key, "login_fail:%s", email);
    const char *a1[] = {"GET", key};
    const char *a2[] = {"TTL", key};
    const char **argvs[] = {a1, a2};
    int argcs[] = {2, 2};
    cache_reply *out[2] = {NULL, NULL};
    err_code rc = cache_pipeline(s->c, 2, argcs, argvs, NULL, out, e);
    if (rc == ERR_OK) {
        long long n = 0;
        size_t l = 0;
        if (cache_reply_kind(out[0]) == CACHE_REPLY_STRING) {
            const char *v = cache_reply_str(out[0], &l);
            if (!parse_ll(v, l, &n))
                n = 0;
        } else if (cache_reply_kind(out[0]) == CACHE_REPLY_ERROR) {
            rc = err_set(e, ERR_UNAVAILABLE, "redis GET failed");
        }
        long long ttl =
            cache_reply_kind(out[1]) == CACHE_REPLY_INTEGER ? cache_reply_int(out[1]) : -2;
        *count = (long)n;
        *ttl_s = ttl > 0 ? (int)ttl : 1;
        if (rc == ERR_OK && ttl == -1) {
            char win[24];
            snprintf(win, sizeof win, "%d", window_s > 0 ? window_s : 1);
            const char *argv[] = {"EXPIRE", key, win, "NX"};
            err_info ie;
            err_clear(&ie);
            (void)run(s, 4, argv, NULL, &ie); /* best effort; the next look retries */
            *ttl_s = window_s > 0 ? window_s : 1;
        }
    }
    cache_reply_free(out[0]);
    cache_reply_free(out[1]);
    return rc;
}

err_code auth_store_login_failed(auth_store *s, const char *email, int window_s, long *count,
                                 err_info *e)
{
    char key[400], win[24];
    snprintf(key, sizeof key, "login_fail:%s", email);
    snprintf(win, sizeof win, "%d", window_s > 0 ? window_s : 1);
    const char *a1[] = {"INCR", key};
    const char *a2[] = {"EXPIRE", key, win, "NX"};
    const char **argvs[] = {a1, a2};
    int argcs[] = {2, 4};
    cache_reply *out[2] = {NULL, NULL};
    err_code rc = cache_pipeline(s->c, 2, argcs, argvs, NULL, out, e);
    if (rc == ERR_OK) {
        if (cache_reply_kind(out[0]) != CACHE_REPLY_INTEGER ||
            cache_reply_kind(out[1]) == CACHE_REPLY_ERROR)
            rc = err_set(e, ERR_UNAVAILABLE, "redis INCR/EXPIRE failed");
        else if (count)
            *count = (long)cache_reply_int(out[0]);
    }
    cache_reply_free(out[0]);
    cache_reply_free(out[1]);
    return rc;
}

err_code auth_store_login_reset(auth_store *s, const char *email, err_info *e)
{
    char key[400];
    snprintf(key, sizeof key, "login_fail:%s", email);
    const char *argv[] = {"DEL", key};
    return run(s, 2, argv, NULL, e);
}
