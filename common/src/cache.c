/* cache: owns every hiredis call of the project: one Redis connection per thread and cache object,
 * connected on first use, dropped on error and retried after a growing backoff (failing fast in
 * between), command timeouts, replies copied into our own type, hit/miss/error counters. */
#include "common/cache.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "common/fmt.h"
#include "common/log.h"
#include "common/mem.h"

#define CACHE_BACKOFF_MIN_MS 50

/* One thread's connection to one cache. */
typedef struct cache_tls {
    cache *owner;
    redisContext *ctx;
    int64_t retry_at_ms; /* while now < retry_at_ms, calls fail fast */
    int backoff_ms;      /* next wait after a failure; doubles up to backoff_max_ms */
    char last_err[128];
    struct cache_tls *prev, *next; /* owner's list, so cache_free can close every thread's */
} cache_tls;

struct cache {
    char *host;
    char *password; /* NULL = no AUTH */
    int port, db;
    int timeout_ms, backoff_max_ms;
    pthread_key_t key;
    pthread_mutex_t mu; /* guards the list of thread states */
    cache_tls *threads;
    atomic_uint_fast64_t hits, misses, errors;
};

struct cache_reply {
    cache_reply_type type;
    long long integer;
    char *str; /* NUL-terminated copy (strings, status, error) */
    size_t len;
    size_t nelem;
    cache_reply **elem;
};

static int64_t cache_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- URL ---- */

/* redis://[[user]:password@]host[:port][/db] */
static err_code cache_parse_url(cache *c, const char *url, err_info *e)
{
    const char *p = url;
    if (!p || strncasecmp(p, "redis://", 8) != 0)
        return err_set(e, ERR_INVALID_ARGUMENT,
                       "cache: REDIS_URL must look like "
                       "redis://host:port[/db]");
    p += 8;
    const char *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon && at > colon + 1)
            c->password = xstrndup(colon + 1, (size_t)(at - colon - 1));
        p = at + 1;
    }
    const char *hend = end;
    const char *pc = NULL;
    if (*p == '[') { /* [ipv6]:port */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb)
            return err_set(e, ERR_INVALID_ARGUMENT, "cache: bad host in REDIS_URL");
        c->host = xstrndup(p + 1, (size_t)(rb - p - 1));
        pc = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        pc = memchr(p, ':', (size_t)(end - p));
        hend = pc ? pc : end;
        c->host = xstrndup(p, (size_t)(hend - p));
    }
    if (!*c->host)
        return err_set(e, ERR_INVALID_ARGUMENT, "cache: no host in REDIS_URL");
    c->port = 6379;
    if (pc) {
        char *pe;
        errno = 0;
        long port = strtol(pc + 1, &pe, 10);
        if (pe != end || pe == pc + 1 || errno || port < 1 || port > 65535)
            return err_set(e, ERR_INVALID_ARGUMENT, "cache: bad port in REDIS_URL");
        c->port = (int)port;
    }
    c->db = 0;
    if (*end == '/' && end[1] && end[1] != '?' && end[1] != '#') {
        char *de;
        errno = 0;
        long db = strtol(end + 1, &de, 10);
        if (de == end + 1 || (*de && *de != '?' && *de != '#') || errno || db < 0 || db > INT_MAX)
            return err_set(e, ERR_INVALID_ARGUMENT, "cache: bad database number in REDIS_URL");
        c->db = (int)db;
    }
    return ERR_OK;
}

/* ---- per-thread connections ---- */

static void cache_tls_destroy(void *arg)
{
    cache_tls *t = arg;
    cache *c = t->owner;
    pthread_mutex_lock(&c->mu);
    if (t->prev)
        t->prev->next = t->next;
    else
        c->threads = t->next;
    if (t->next)
        t->next->prev = t->prev;
    pthread_mutex_unlock(&c->mu);
    if (t->ctx)
        redisFree(t->ctx);
    free(t);
}

cache *cache_new(const cache_opts *opts, err_info *e)
{
    cache *c = xcalloc(1, sizeof *c);
    if (!opts || cache_parse_url(c, opts->url, e) != ERR_OK) {
        if (!opts)
            err_set(e, ERR_INVALID_ARGUMENT, "cache: no options");
        free(c->host);
        free(c->password);
        free(c);
        return NULL;
    }
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 1000;
    c->backoff_max_ms = opts->backoff_max_ms > 0 ? opts->backoff_max_ms : 1000;
    if (pthread_key_create(&c->key, cache_tls_destroy) != 0) {
        err_set(e, ERR_INTERNAL, "cache: pthread_key_create failed");
        free(c->host);
        free(c->password);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->hits, 0);
    atomic_init(&c->misses, 0);
    atomic_init(&c->errors, 0);
    return c;
}

void cache_free(cache *c)
{
    if (!c)
        return;
    /* Deleting the key runs no destructors: close every thread's connection here (callers free the
     * cache once no thread uses it any more). */
    pthread_key_delete(c->key);
    cache_tls *t = c->threads;
    while (t) {
        cache_tls *next = t->next;
        if (t->ctx)
            redisFree(t->ctx);
        free(t);
        t = next;
    }
    pthread_mutex_destroy(&c->mu);
    free(c->host);
    free(c->password);
    free(c);
}

void cache_stats_get(cache *c, cache_stats *out)
{
    if (!c) {
        memset(out, 0, sizeof *out);
        return;
    }
    out->hits = atomic_load(&c->hits);
    out->misses = atomic_load(&c->misses);
    out->errors = atomic_load(&c->errors);
}

void cache_count_get(cache *c, const cache_reply *r)
{
    switch (cache_reply_kind(r)) {
    case CACHE_REPLY_STRING:
        atomic_fetch_add(&c->hits, 1);
        break;
    case CACHE_REPLY_NIL:
        atomic_fetch_add(&c->misses, 1);
        break;
    default:
        atomic_fetch_add(&c->errors, 1);
    }
}

static cache_tls *cache_tls_get(cache *c)
{
    cache_tls *t = pthread_getspecific(c->key);
    if (t)
        return t;
    t = xcalloc(1, sizeof *t);
    t->owner = c;
    t->backoff_ms = CACHE_BACKOFF_MIN_MS;
    pthread_mutex_lock(&c->mu);
    t->next = c->threads;
    if (t->next)
        t->next->prev = t;
    c->threads = t;
    pthread_mutex_unlock(&c->mu);
    pthread_setspecific(c->key, t);
    return t;
}

static void cache_drop(cache_tls *t)
{
    if (t->ctx)
        redisFree(t->ctx);
    t->ctx = NULL;
}

/* A failure: drop the connection and fail fast for the next backoff period, so a Redis that is
 * down costs callers nothing but an error (not a timeout per call). */
static err_code cache_failed(cache *c, cache_tls *t, const char *what, err_info *e)
{
    snprintf(t->last_err, sizeof t->last_err, "%s", what);
    cache_drop(t);
    t->retry_at_ms = cache_now_ms() + t->backoff_ms;
    t->backoff_ms = t->backoff_ms * 2 > c->backoff_max_ms ? c->backoff_max_ms : t->backoff_ms * 2;
    atomic_fetch_add(&c->errors, 1);
    return err_set(e, ERR_UNAVAILABLE, "cache: redis %s:%d unavailable: %s", c->host, c->port,
                   t->last_err); /* not `what`: it may point into the context just freed */
}

static err_code cache_setup_cmd(cache *c, cache_tls *t, int argc, const char **argv, err_info *e)
{
    redisReply *r = redisCommandArgv(t->ctx, argc, argv, NULL);
    if (!r)
        return cache_failed(c, t, t->ctx->errstr, e);
    bool ok = r->type != REDIS_REPLY_ERROR;
    char msg[128];
    snprintf(msg, sizeof msg, "%s: %s", argv[0], ok ? "" : r->str);
    freeReplyObject(r);
    return ok ? ERR_OK : cache_failed(c, t, msg, e);
}

/* This thread's live connection, connecting when needed; ERR_UNAVAILABLE at once during backoff. */
static err_code cache_ctx(cache *c, redisContext **out, err_info *e)
{
    cache_tls *t = cache_tls_get(c);
    if (t->ctx) {
        /* A connection that has something to read between commands was closed by the server
         * (restart, timeout, CLIENT KILL): replace it instead of failing the next command. */
        struct pollfd pfd = {.fd = t->ctx->fd, .events = POLLIN};
        if (t->ctx->err || poll(&pfd, 1, 0) != 0)
            cache_drop(t);
    }
    if (!t->ctx) {
        int64_t now = cache_now_ms();
        if (now < t->retry_at_ms) {
            atomic_fetch_add(&c->errors, 1);
            return err_set(e, ERR_UNAVAILABLE,
                           "cache: redis %s:%d unavailable (%s; next try in %lld ms)", c->host,
                           c->port, t->last_err, (long long)(t->retry_at_ms - now));
        }
        struct timeval tv = {.tv_sec = c->timeout_ms / 1000,
                             .tv_usec = (c->timeout_ms % 1000) * 1000};
        t->ctx = redisConnectWithTimeout(c->host, c->port, tv);
        if (!t->ctx)
            return cache_failed(c, t, "out of memory", e);
        if (t->ctx->err)
            return cache_failed(c, t, t->ctx->errstr, e);
        if (redisSetTimeout(t->ctx, tv) != REDIS_OK)
            return cache_failed(c, t, "cannot set timeout", e);
        if (c->password) {
            const char *av[] = {"AUTH", c->password};
            err_code rc = cache_setup_cmd(c, t, 2, av, e);
            if (rc != ERR_OK)
                return rc;
        }
        if (c->db != 0) {
            char db[16];
            snprintf(db, sizeof db, "%d", c->db);
            const char *av[] = {"SELECT", db};
            err_code rc = cache_setup_cmd(c, t, 2, av, e);
            if (rc != ERR_OK)
                return rc;
        }
        t->backoff_ms = CACHE_BACKOFF_MIN_MS;
        t->retry_at_ms = 0;
    }
    *out = t->ctx;
    return ERR_OK;
}

void cache_disconnect_thread(cache *c)
{
    if (!c)
        return;
    cache_tls *t = pthread_getspecific(c->key);
    if (t) {
        cache_drop(t);
        t->retry_at_ms = 0;
        t->backoff_ms = CACHE_BACKOFF_MIN_MS;
    }
}

/* ---- replies ---- */

static cache_reply *cache_reply_from(const redisReply *r)
{
    cache_reply *out = xcalloc(1, sizeof *out);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        out->type = r->type == REDIS_REPLY_ERROR ? CACHE_REPLY_ERROR : CACHE_REPLY_STRING;
        out->len = r->len > 0 ? (size_t)r->len : 0;
        out->str = xmalloc(out->len + 1);
        if (out->len)
            memcpy(out->str, r->str, out->len);
        out->str[out->len] = '\0';
        break;
    case REDIS_REPLY_INTEGER:
        out->type = CACHE_REPLY_INTEGER;
        out->integer = r->integer;
        break;
    case REDIS_REPLY_ARRAY:
        out->type = CACHE_REPLY_ARRAY;
        out->nelem = r->elements;
        out->elem = xcalloc(r->elements ? r->elements : 1, sizeof *out->elem);
        for (size_t i = 0; i < r->elements; i++)
            out->elem[i] = cache_reply_from(r->element[i]);
        break;
    default:
        out->type = CACHE_REPLY_NIL;
    }
    return out;
}

cache_reply_type cache_reply_kind(const cache_reply *r)
{
    return r ? r->type : CACHE_REPLY_NIL;
}
long long cache_reply_int(const cache_reply *r)
{
    return r ? r->integer : 0;
}
const char *cache_reply_str(const cache_reply *r, size_t *len)
{
    if (len)
        *len = r && r->str ? r->len : 0;
    return r && r->str ? r->str : NULL;
}
size_t cache_reply_len(const cache_reply *r)
{
    return r ? r->nelem : 0;
}
const cache_reply *cache_reply_at(const cache_reply *r, size_t i)
{
    return r && i < r->nelem ? r->elem[i] : NULL;
}
void cache_reply_free(cache_reply *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nelem; i++)
        cache_reply_free(r->elem[i]);
    free(r->elem);
    free(r->str);
    free(r);
}

/* ---- commands ---- */

/* Runs one command; *out is hiredis' reply (caller frees) or NULL on a transport failure. */
static err_code cache_run(cache *c, int argc, const char **argv, const size_t *lens,
                          redisReply **out, err_info *e)
{
    redisContext *ctx;
    err_code rc = cache_ctx(c, &ctx, e);
    if (rc != ERR_OK)
        return rc;
    redisReply *r = redisCommandArgv(ctx, argc, argv, lens);
    if (!r) {
        char why[128];
        snprintf(why, sizeof why, "%s",
                 ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)
                     ? "timed out"
                     : ctx->errstr);
        return cache_failed(c, cache_tls_get(c), why, e);
    }
    *out = r;
    return ERR_OK;
}

err_code cache_get(cache *c, const char *key, char **val, size_t *len, err_info *e)
{
    const char *argv[] = {"GET", key};
    redisReply *r = NULL;
    err_code rc = cache_run(c, 2, argv, NULL, &r, e);
    if (rc != ERR_OK)
        return rc;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        atomic_fetch_add(&c->misses, 1);
        return err_set(e, ERR_NOT_FOUND, "cache: miss");
    }
    if (r->type != REDIS_REPLY_STRING) {
        rc = err_set(e, ERR_INTERNAL, "cache: GET: %s",
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        atomic_fetch_add(&c->errors, 1);
        return rc;
    }
    char *v = xmalloc((size_t)r->len + 1);
    memcpy(v, r->str, (size_t)r->len);
    v[r->len] = '\0';
    if (len)
        *len = (size_t)r->len;
    *val = v;
    freeReplyObject(r);
    atomic_fetch_add(&c->hits, 1);
    return ERR_OK;
}

/* Status/integer commands whose error reply is a bug or a wrong key type: ERR_INTERNAL. */
static err_code cache_simple(cache *c, int argc, const char **argv, const size_t *lens, err_info *e)
{
    redisReply *r = NULL;
    err_code rc = cache_run(c, argc, argv, lens, &r, e);
    if (rc != ERR_OK)
        return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = err_set(e, ERR_INTERNAL, "cache: %s: %s", argv[0], r->str);
        atomic_fetch_add(&c->errors, 1);
    }
    freeReplyObject(r);
    return rc;
}

err_code cache_set(cache *c, const char *key, const char *val, size_t len, int ttl_s, err_info *e)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", ttl_s);
    const char *argv[] = {"SET", key, val, "EX", ttl};
    size_t lens[] = {3, strlen(key), len, 2, strlen(ttl)};
    return cache_simple(c, ttl_s > 0 ? 5 : 3, argv, lens, e);
}

err_code cache_del(cache *c, const char *key, err_info *e)
{
    const char *argv[] = {"DEL", key};
    return cache_simple(c, 2, argv, NULL, e);
}

err_code cache_command(cache *c, int argc, const char **argv, const size_t *lens, cache_reply **out,
                       err_info *e)
{
    if (argc < 1)
        return err_set(e, ERR_INVALID_ARGUMENT, "cache: empty command");
    redisReply *r = NULL;
    err_code rc = cache_run(c, argc, argv, lens, &r, e);
    if (rc != ERR_OK)
        return rc;
    if (out)
        *out = cache_reply_from(r);
    freeReplyObject(r);
    return ERR_OK;
}

/* Appends one command in RESP. hiredis' own formatter (redisAppendCommandArgv) builds it with an
 * sdscatfmt per argument: a few thousand instructions a command, on every request's path. */
static int append_argv(redisContext *ctx, int argc, const char **argv, const size_t *lens)
{
    size_t need = 1 + FMT_INT_MAX + 2;
    for (int i = 0; i < argc; i++)
        need += 1 + FMT_INT_MAX + 2 + (lens ? lens[i] : strlen(argv[i])) + 2;
    char stack[1024];
    char *buf = need <= sizeof stack ? stack : xmalloc(need);
    size_t n = 0;
    buf[n++] = '*';
    n += fmt_u64(buf + n, (uint64_t)argc);
    buf[n++] = '\r';
    buf[n++] = '\n';
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);
        buf[n++] = '$';
        n += fmt_u64(buf + n, len);
        buf[n++] = '\r';
        buf[n++] = '\n';
        memcpy(buf + n, argv[i], len);
        n += len;
        buf[n++] = '\r';
        buf[n++] = '\n';
    }
    int rc = redisAppendFormattedCommand(ctx, buf, n);
    if (buf != stack)
        free(buf);
    return rc;
}

err_code cache_pipeline(cache *c, int ncmds, const int *argcs, const char ***argvs,
                        const size_t **lens, cache_reply **out, err_info *e)
{
    if (ncmds < 1)
        return ERR_OK;
    redisContext *ctx;
    err_code rc = cache_ctx(c, &ctx, e);
    if (rc != ERR_OK)
        return rc;
    for (int i = 0; i < ncmds; i++) {
        if (append_argv(ctx, argcs[i], argvs[i], lens ? lens[i] : NULL) != REDIS_OK)
            return cache_failed(c, cache_tls_get(c), ctx->errstr, e);
    }
    for (int i = 0; i < ncmds; i++) {
        void *raw = NULL;
        if (redisGetReply(ctx, &raw) != REDIS_OK || !raw) {
            char why[128];
            snprintf(why, sizeof why, "%s", ctx->errstr);
            for (int j = 0; j < i; j++) {
                cache_reply_free(out[j]);
                out[j] = NULL;
            }
            /* The rest of the replies would be read by the next command: the context is dropped. */
            return cache_failed(c, cache_tls_get(c), why, e);
        }
        out[i] = cache_reply_from(raw);
        freeReplyObject(raw);
    }
    return ERR_OK;
}
