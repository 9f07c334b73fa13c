/* permission_store: version tokens in Redis (see permission_store.h and docs/arch/permission.md).
 */
#include "permission_store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/mem.h"

/* User tokens expire after a day without change: an expired token is as safe as an evicted one (a
 * fresh token is made, which no cached entry carries), and Redis does not keep one key per user
 * ever seen. */
#define USER_TOKEN_TTL "86400"

struct perm_store {
    cache *cache;
};

/* cache_command with the lengths computed (our arguments are C strings). */
static err_code cmd(perm_store *s, int argc, const char **argv, cache_reply **out, err_info *e)
{
    size_t lens[8];
    for (int i = 0; i < argc && i < 8; i++)
        lens[i] = strlen(argv[i]);
    return cache_command(s->cache, argc, argv, lens, out, e);
}

perm_store *perm_store_new(cache *c)
{
    perm_store *s = xcalloc(1, sizeof *s);
    s->cache = c;
    return s;
}

void perm_store_free(perm_store *s)
{
    free(s);
}

/* A fresh random token: 16 hex digits from the kernel's CSPRNG (collisions ~2^-64). */
static void new_token(char out[PERM_TOKEN_MAX])
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
        /* Never reached on Linux >= 3.17 for 8 bytes; fall back to something still unique-ish. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^
            ((uint64_t)getpid() << 48);
    }
    snprintf(out, PERM_TOKEN_MAX, "%016" PRIx64, v);
}

static void user_key(char *buf, size_t len, const char *user_id)
{
    snprintf(buf, len, "%s%s", PERM_KEY_USER_PREFIX, user_id);
}

/* Copies an MGET element into a token; false when missing or not a plain short string. */
static bool take_token(const cache_reply *r, char out[PERM_TOKEN_MAX])
{
    if (!r || cache_reply_kind(r) != CACHE_REPLY_STRING)
        return false;
    size_t len = 0;
    const char *s = cache_reply_str(r, &len);
    if (!s || len == 0 || len >= PERM_TOKEN_MAX)
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

/* Parses an MGET reply of two keys; returns how many tokens were present (0-2), -1 if malformed. */
static int parse_mget(const cache_reply *r, perm_stamp *out)
{
    if (!r || cache_reply_kind(r) != CACHE_REPLY_ARRAY || cache_reply_len(r) != 2)
        return -1;
    int have = 0;
    have += take_token(cache_reply_at(r, 0), out->global);
    have += take_token(cache_reply_at(r, 1), out->user);
    return have;
}

err_code perm_store_read(perm_store *s, const char *user_id, perm_stamp *out, err_info *e)
{
    char ukey[96];
    user_key(ukey, sizeof ukey, user_id);
    const char *argv[] = {"MGET", PERM_KEY_GLOBAL, ukey};
    cache_reply *r = NULL;
    if (cmd(s, 3, argv, &r, e) != ERR_OK)
        return ERR_UNAVAILABLE;
    perm_stamp st;
    memset(&st, 0, sizeof st);
    int have = parse_mget(r, &st);
    cache_reply_free(r);
    if (have < 0)
        return err_set(e, ERR_UNAVAILABLE, "redis: unexpected MGET reply");
    if (have == 2) {
        *out = st;
        return ERR_OK;
    }
    /* A token is missing (never set, evicted, or Redis lost its data): create it, then read both
     * again. Whatever the final values are, they were read before the caller's database query,
     * which is all the protocol needs. */
    char tg[PERM_TOKEN_MAX], tu[PERM_TOKEN_MAX];
    new_token(tg);
    new_token(tu);
    const char *a0[] = {"SET", PERM_KEY_GLOBAL, tg, "NX"};
    const char *a1[] = {"SET", ukey, tu, "NX", "EX", USER_TOKEN_TTL};
    const char *a2[] = {"MGET", PERM_KEY_GLOBAL, ukey};
    const char **argvs[] = {a0, a1, a2};
    const int argcs[] = {4, 6, 3};
    size_t l0[4], l1[6], l2[3];
    size_t *ls[] = {l0, l1, l2};
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < argcs[c]; i++)
            ls[c][i] = strlen(argvs[c][i]);
    }
    const size_t *lens[] = {l0, l1, l2};
    cache_reply *rs[3] = {NULL, NULL, NULL};
    if (cache_pipeline(s->cache, 3, argcs, argvs, lens, rs, e) != ERR_OK) {
        for (int i = 0; i < 3; i++)
            cache_reply_free(rs[i]);
        return ERR_UNAVAILABLE;
    }
    memset(&st, 0, sizeof st);
    have = parse_mget(rs[2], &st);
    for (int i = 0; i < 3; i++)
        cache_reply_free(rs[i]);
    if (have != 2)
        return err_set(e, ERR_UNAVAILABLE, "redis: version tokens missing after SET NX");
    *out = st;
    return ERR_OK;
}

static err_code set_token(perm_store *s, const char *key, const char *ttl, err_info *e)
{
    char tok[PERM_TOKEN_MAX];
    new_token(tok);
    const char *argv[] = {"SET", key, tok, "EX", ttl};
    cache_reply *r = NULL;
    if (cmd(s, ttl ? 5 : 3, argv, &r, e) != ERR_OK)
        return ERR_UNAVAILABLE;
    bool ok = r && cache_reply_kind(r) == CACHE_REPLY_STRING;
    cache_reply_free(r);
    if (!ok)
        return err_set(e, ERR_UNAVAILABLE, "redis: SET %s refused", key);
    return ERR_OK;
}

err_code perm_store_bump_global(perm_store *s, err_info *e)
{
    return set_token(s, PERM_KEY_GLOBAL, NULL, e);
}

err_code perm_store_bump_user(perm_store *s, const char *user_id, err_info *e)
{
    char ukey[96];
    user_key(ukey, sizeof ukey, user_id);
    return set_token(s, ukey, USER_TOKEN_TTL, e);
}
