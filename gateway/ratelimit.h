/* ratelimit: GCRA rate limits shared through Redis (one Lua script, EVALSHA), with a per-process
 * fallback when Redis is unreachable. */
#ifndef GATEWAY_RATELIMIT_H
#define GATEWAY_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/cache.h"

typedef struct rl_result {
    bool allowed;
    int limit;         /* RateLimit-Limit */
    int remaining;     /* RateLimit-Remaining */
    int reset_s;       /* RateLimit-Reset: seconds until the full quota is back */
    int retry_after_s; /* on a denial */
    bool fallback;     /* answered by the per-process limiter (Redis down) */
} rl_result;

/* The GCRA step (the same arithmetic as the Lua script): *tat is the theoretical arrival time in
 * ms (0 = new key), now_ms the clock; limit requests per minute, bursts up to limit. Updates *tat
 * only when allowed. Pure: unit-tested with a fake clock. */
void ratelimit_gcra(double *tat, double now_ms, int limit_per_min, rl_result *out);

typedef struct ratelimit ratelimit;

/* c may be NULL (local limiting only). */
ratelimit *ratelimit_new(cache *c);
void ratelimit_free(ratelimit *rl);

/* Counts one request for key ("auth:ip:1.2.3.4") against limit per minute. Never fails: when
 * Redis cannot answer, the per-process limiter decides. limit <= 0: always allowed. Thread-safe. */
void ratelimit_check(ratelimit *rl, const char *key, int limit_per_min, rl_result *out);

/* Pipelining (one Redis round trip with the revocation MGET, through common/cache_mux):
 * ratelimit_prepare fills cmd with the EVALSHA command and returns true, or false when the limit is
 * off or there is no Redis (then ratelimit_check decides locally). key must outlive cmd.
 * ratelimit_finish interprets the reply (NULL = transport failure → the local limiter; NOSCRIPT →
 * ratelimit_check, which loads the script: a blocking round trip once per Redis start). */
typedef struct ratelimit_cmd {
    const char *argv[6];
    size_t lens[6];
    char sha[48], key[128], T[32], burst[16];
    int limit;
    const char *raw_key;
} ratelimit_cmd;
bool ratelimit_prepare(ratelimit *rl, const char *key, int limit_per_min, ratelimit_cmd *cmd);
void ratelimit_finish(ratelimit *rl, ratelimit_cmd *cmd, const cache_reply *r, rl_result *out);

/* The Lua script (for tests and docs). */
extern const char RATELIMIT_LUA[];

#endif
