/* cache: the Redis client (hiredis): one connection per thread, reconnect with backoff, timeouts.
 */
#ifndef COMMON_CACHE_H
#define COMMON_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct cache cache;
typedef struct cache_reply cache_reply;

typedef struct cache_opts {
    const char *url;    /* redis://host:port[/db] */
    int timeout_ms;     /* connect and command timeout */
    int backoff_max_ms; /* a thread whose connection failed retries after a growing wait, capped */
} cache_opts;

typedef struct cache_stats {
    uint64_t hits, misses, errors;
} cache_stats;

typedef enum cache_reply_type {
    CACHE_REPLY_NIL,
    CACHE_REPLY_STRING, /* also status replies */
    CACHE_REPLY_INTEGER,
    CACHE_REPLY_ARRAY,
    CACHE_REPLY_ERROR,
} cache_reply_type;

/* No connection is made here: each thread connects on first use. Never fails for a well-formed URL
 * (ERR_INVALID_ARGUMENT otherwise). Thread-safe. */
cache *cache_new(const cache_opts *opts, err_info *e);
void cache_free(cache *c);
void cache_stats_get(cache *c, cache_stats *out);
/* Counts the reply of a GET sent another way (cache_pipeline, cache_mux) as cache_get would: a
 * string is a hit, nil a miss, anything else an error. Transport failures are counted already. */
void cache_count_get(cache *c, const cache_reply *r);

/* GET key. ERR_NOT_FOUND on a miss (counted), ERR_UNAVAILABLE when Redis cannot be reached or
 * times out (counted as an error). *val is malloc'ed, NUL-terminated; caller frees. */
err_code cache_get(cache *c, const char *key, char **val, size_t *len, err_info *e);
/* SET key val EX ttl_s (ttl_s <= 0: no expiry). */
err_code cache_set(cache *c, const char *key, const char *val, size_t len, int ttl_s, err_info *e);
err_code cache_del(cache *c, const char *key, err_info *e);

/* Any command, binary-safe argv. A Redis error reply is returned as a reply of type ERROR with
 * ERR_OK (the caller decides); transport failures → ERR_UNAVAILABLE. *out owned by caller. */
err_code cache_command(cache *c, int argc, const char **argv, const size_t *lens, cache_reply **out,
                       err_info *e);
/* Sends several commands in one round trip (pipeline); out[i] gets each reply. */
err_code cache_pipeline(cache *c, int ncmds, const int *argcs, const char ***argvs,
                        const size_t **lens, cache_reply **out, err_info *e);

cache_reply_type cache_reply_kind(const cache_reply *r);
long long cache_reply_int(const cache_reply *r);
const char *cache_reply_str(const cache_reply *r, size_t *len); /* string, status or error text */
size_t cache_reply_len(const cache_reply *r);                   /* array elements */
const cache_reply *cache_reply_at(const cache_reply *r, size_t i);
void cache_reply_free(cache_reply *r); /* NULL ok */

/* Drops this thread's connection (tests; after fork). */
void cache_disconnect_thread(cache *c);

#endif
