/* cache_mux: many threads' Redis commands over one connection, without blocking the submitters:
 * jobs queue while a round trip is in flight and all of them go out in the next one. */
#ifndef COMMON_CACHE_MUX_H
#define COMMON_CACHE_MUX_H

#include <stdint.h>

#include "common/cache.h"
#include "common/err.h"

typedef struct cache_mux cache_mux;

#define CACHE_MUX_MAX_CMDS 4 /* commands in one job */

typedef struct cache_mux_cmd {
    int argc;
    const char **argv;  /* must stay valid until the callback has run */
    const size_t *lens; /* NULL = NUL-terminated arguments */
} cache_mux_cmd;

/* Runs on the mux thread: keep it short and never block on Redis there (cache_* calls on that
 * thread are allowed but stall every other job). On a transport failure replies[] are all NULL and
 * e->code is ERR_UNAVAILABLE; otherwise e->code is ERR_OK and replies[i] answers cmds[i] (a Redis
 * error is a reply of type CACHE_REPLY_ERROR). The replies are freed when the callback returns. */
typedef void (*cache_mux_cb)(void *arg, cache_reply **replies, const err_info *e);

/* Starts the mux thread on its own connection of c (c must outlive the mux). */
cache_mux *cache_mux_new(cache *c, err_info *e);
/* Answers every job already queued (normally), then stops the thread. */
void cache_mux_free(cache_mux *m);

/* Queues one job of 1..CACHE_MUX_MAX_CMDS commands (pipelined with everything queued). Returns
 * ERR_OK when cb will be called exactly once; ERR_UNAVAILABLE (cb never called) once the mux is
 * stopping, ERR_INVALID_ARGUMENT for a bad ncmds. Thread-safe, never waits for Redis. */
err_code cache_mux_submit(cache_mux *m, int ncmds, const cache_mux_cmd *cmds, cache_mux_cb cb,
                          void *arg, err_info *e);

typedef struct cache_mux_stats {
    uint64_t jobs, round_trips, failures;
} cache_mux_stats;
void cache_mux_stats_get(cache_mux *m, cache_mux_stats *out);

#endif
