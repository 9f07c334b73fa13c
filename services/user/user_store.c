/* user_store: cache-aside for users in Redis through common/cache; reads on the RPC path go
 * through common/cache_mux, so concurrent GetUser calls share round trips and hold no thread. */
#include "user_store.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct user_store {
    cache *c;
    cache_mux *mux; /* NULL = no asynchronous reads (no cache, or its thread did not start) */
    int ttl_s;
    atomic_uint_least64_t hits, misses, errors;
};

user_store *user_store_new(cache *c, int ttl_s)
{
    user_store *s = xcalloc(1, sizeof *s);
    s->c = c;
    s->ttl_s = ttl_s;
    if (c) {
        err_info e;
        err_clear(&e);
        s->mux = cache_mux_new(c, &e);
        if (!s->mux)
            log_warn(NULL, "user cache: no asynchronous reads (%s); reads block a thread", e.msg);
    }
    return s;
}

void user_store_free(user_store *s)
{
    if (!s)
        return;
    cache_mux_free(s->mux); /* answers the reads still queued */
    free(s);
}

static void key_of(const char *id, char *buf, size_t len)
{
    snprintf(buf, len, "user:%s", id);
}

static void count_error(user_store *s, const char *op, const err_info *e, const log_ctx *lc)
{
    atomic_fetch_add(&s->errors, 1);
    log_warn(lc, "user cache %s failed (the call goes on without the cache): %s", op, e->msg);
}

/* A cached value → *out: ERR_NOT_FOUND (counted as a miss) for a foreign or corrupt entry. */
static err_code decode(user_store *s, arena *a, const char *id, const char *val, size_t len,
                       user_rec *out, const log_ctx *lc)
{
    ProtobufCAllocator al;
    arena_pb_allocator(a, &al);
    User__V1__User *pb = user__v1__user__unpack(&al, len, (const uint8_t *)val);
    if (!pb || !user_rec_from_pb(a, pb, out) || out->delete_us || strcmp(out->id, id) != 0) {
        /* The refill overwrites it. */
        atomic_fetch_add(&s->misses, 1);
        log_warn(lc, "user cache entry user:%s unusable; ignored", id);
        return ERR_NOT_FOUND;
    }
    atomic_fetch_add(&s->hits, 1);
    return ERR_OK;
}

err_code user_store_get(user_store *s, arena *a, const char *id, user_rec *out, const log_ctx *lc)
{
    if (!s->c)
        return ERR_NOT_FOUND;
    char key[64];
    key_of(id, key, sizeof key);
    char *val = NULL;
    size_t len = 0;
    err_info e;
    err_clear(&e);
    err_code rc = cache_get(s->c, key, &val, &len, &e);
    if (rc == ERR_NOT_FOUND) {
        atomic_fetch_add(&s->misses, 1);
        return ERR_NOT_FOUND;
    }
    if (rc) {
        count_error(s, "get", &e, lc);
        return ERR_NOT_FOUND;
    }
    rc = decode(s, a, id, val, len, out, lc);
    free(val);
    return rc;
}

typedef struct async_get {
    user_store *s;
    arena *a;
    const log_ctx *lc;
    user_store_get_cb cb;
    void *arg;
    char key[64], id[USER_ID_LEN + 1];
    const char *argv[2];
} async_get;

static void on_get(void *arg, cache_reply **r, const err_info *e)
{
    async_get *g = arg;
    user_rec u;
    err_code rc = ERR_NOT_FOUND;
    if (e->code != ERR_OK) {
        count_error(g->s, "get", e, g->lc);
        g->cb(g->arg, rc, NULL);
        return;
    }
    cache_count_get(g->s->c, r[0]);
    if (cache_reply_kind(r[0]) == CACHE_REPLY_STRING) {
        size_t len = 0;
        const char *val = cache_reply_str(r[0], &len);
        rc = decode(g->s, g->a, g->id, val, len, &u, g->lc);
    } else if (cache_reply_kind(r[0]) == CACHE_REPLY_NIL) {
        atomic_fetch_add(&g->s->misses, 1);
    } else {
        err_info ge;
        err_clear(&ge);
        size_t n = 0;
        const char *msg = cache_reply_str(r[0], &n);
        err_set(&ge, ERR_INTERNAL, "GET: %s", msg ? msg : "unexpected reply");
        count_error(g->s, "get", &ge, g->lc);
    }
    g->cb(g->arg, rc, rc == ERR_OK ? &u : NULL);
}

bool user_store_get_async(user_store *s, arena *a, const char *id, const log_ctx *lc,
                          user_store_get_cb cb, void *arg)
{
    if (!s->mux || strlen(id) > USER_ID_LEN)
        return false;
    async_get *g = arena_alloc(a, sizeof *g);
    *g = (async_get){.s = s, .a = a, .lc = lc, .cb = cb, .arg = arg};
    snprintf(g->id, sizeof g->id, "%s", id);
    key_of(g->id, g->key, sizeof g->key);
    g->argv[0] = "GET";
    g->argv[1] = g->key;
    cache_mux_cmd cmd = {2, g->argv, NULL};
    err_info e;
    err_clear(&e);
    return cache_mux_submit(s->mux, 1, &cmd, on_get, g, &e) == ERR_OK;
}

void user_store_put(user_store *s, const user_rec *u, const log_ctx *lc)
{
    if (!s->c || u->delete_us)
        return;
    arena *a = arena_new(1024);
    User__V1__User *pb = user_rec_to_pb(a, u);
    size_t len = user__v1__user__get_packed_size(pb);
    uint8_t *buf = arena_alloc(a, len + 1);
    user__v1__user__pack(pb, buf);
    char key[64];
    key_of(u->id, key, sizeof key);
    err_info e;
    err_clear(&e);
    if (cache_set(s->c, key, (const char *)buf, len, s->ttl_s, &e))
        count_error(s, "set", &e, lc);
    arena_free(a);
}

void user_store_del(user_store *s, const char *id, const log_ctx *lc)
{
    if (!s->c)
        return;
    char key[64];
    key_of(id, key, sizeof key);
    err_info e;
    err_clear(&e);
    err_code rc = cache_del(s->c, key, &e);
    if (rc && rc != ERR_NOT_FOUND)
        count_error(s, "del", &e, lc);
}

void user_store_stats_get(user_store *s, user_store_stats *out)
{
    out->hits = atomic_load(&s->hits);
    out->misses = atomic_load(&s->misses);
    out->errors = atomic_load(&s->errors);
}
