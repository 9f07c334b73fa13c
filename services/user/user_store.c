/* user_store: cache-aside for users in Redis through common/cache. */
#include "user_store.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct user_store {
    cache *c;
    int ttl_s;
    atomic_uint_least64_t hits, misses, errors;
};

user_store *user_store_new(cache *c, int ttl_s)
{
    user_store *s = xcalloc(1, sizeof *s);
    s->c = c;
    s->ttl_s = ttl_s;
    return s;
}

void user_store_free(user_store *s)
{
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
    ProtobufCAllocator al;
    arena_pb_allocator(a, &al);
    User__V1__User *pb = user__v1__user__unpack(&al, len, (const uint8_t *)val);
    free(val);
    if (!pb || !user_rec_from_pb(a, pb, out) || out->delete_us || strcmp(out->id, id) != 0) {
        /* A foreign or corrupt entry: treat as a miss; the refill overwrites it. */
        atomic_fetch_add(&s->misses, 1);
        log_warn(lc, "user cache entry %s unusable; ignored", key);
        return ERR_NOT_FOUND;
    }
    atomic_fetch_add(&s->hits, 1);
    return ERR_OK;
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
