/* Fault test of common/cache: Redis stopped (harness redis-stop) → every call fails with
 * ERR_UNAVAILABLE promptly and is counted; Redis back → the same cache object works again, and a
 * connection left stale by a restart is replaced without an error. Runs alone (RUN_SERIAL): it
 * stops the shared Redis. Redis database 6. */
#include "common/cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_support.h"

/* Whatever happened in a test, Redis must be up for the tests that follow. */
static void ensure_up(void)
{
    if (ts_harness("ensure") != 0)
        fprintf(stderr, "test_cache_fault: harness ensure failed\n");
}

static cache *mkcache(void)
{
    cache_opts o = {.url = ts_redis_url_db(6), .timeout_ms = 500, .backoff_max_ms = 300};
    err_info e;
    cache *c = cache_new(&o, &e);
    if (!c)
        fprintf(stderr, "cache_new: %s\n", e.msg);
    return c;
}

/* Calls until a SET+GET round trip works or 5 s pass; returns ms taken or -1. */
static long long recover_time(cache *c)
{
    long long t0 = ts_now_ms();
    while (ts_now_ms() - t0 < 5000) {
        err_info e;
        char *v = NULL;
        size_t len;
        if (cache_set(c, "r", "1", 1, 60, &e) == ERR_OK &&
            cache_get(c, "r", &v, &len, &e) == ERR_OK) {
            free(v);
            return ts_now_ms() - t0;
        }
        usleep(50000);
    }
    return -1;
}

static void test_redis_down_and_back(void)
{
    cache *c = mkcache();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    CU_ASSERT_EQUAL(cache_set(c, "k", "v", 1, 60, &e), ERR_OK);

    CU_ASSERT_EQUAL(ts_harness("redis-stop"), 0);
    cache_stats before, after;
    cache_stats_get(c, &before);
    long long t_all = ts_now_ms();
    for (int i = 0; i < 10; i++) {
        long long t0 = ts_now_ms();
        char *v = NULL;
        size_t len;
        CU_ASSERT_EQUAL(cache_get(c, "k", &v, &len, &e), ERR_UNAVAILABLE);
        CU_ASSERT_PTR_NULL(v);
        CU_ASSERT(ts_now_ms() - t0 < 1000);
        CU_ASSERT_EQUAL(cache_set(c, "k", "v", 1, 60, &e), ERR_UNAVAILABLE);
        usleep(20000);
    }
    CU_ASSERT(ts_now_ms() - t_all < 3000);
    cache_stats_get(c, &after);
    CU_ASSERT_EQUAL(after.errors - before.errors, 20);
    CU_ASSERT_EQUAL(after.misses, before.misses);
    /* pipelines and generic commands fail the same way */
    const char *ping[] = {"PING"};
    CU_ASSERT_EQUAL(cache_command(c, 1, ping, NULL, NULL, &e), ERR_UNAVAILABLE);

    CU_ASSERT_EQUAL(ts_harness("redis-start"), 0);
    long long ms = recover_time(c);
    CU_ASSERT(ms >= 0 && ms < 2000); /* within the capped backoff (300 ms) plus slack */
    cache_free(c);
    ensure_up();
}

/* Redis restarted between two calls: the idle connection is stale; the next call must not fail. */
static void test_stale_connection_replaced(void)
{
    cache *c = mkcache();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    CU_ASSERT_EQUAL(cache_set(c, "k", "v", 1, 60, &e), ERR_OK);
    CU_ASSERT_EQUAL(ts_harness("redis-stop"), 0);
    CU_ASSERT_EQUAL(ts_harness("redis-start"), 0);
    cache_stats before, after;
    cache_stats_get(c, &before);
    CU_ASSERT_EQUAL(cache_set(c, "k2", "v2", 2, 60, &e), ERR_OK);
    char *v = NULL;
    size_t len;
    CU_ASSERT_EQUAL(cache_get(c, "k2", &v, &len, &e), ERR_OK);
    free(v);
    cache_stats_get(c, &after);
    CU_ASSERT_EQUAL(after.errors, before.errors);
    cache_free(c);
    ensure_up();
}

static void at_exit_restore(void)
{
    ensure_up();
}

int main(void)
{
    ts_need_env("REDIS_PORT");
    atexit(at_exit_restore);
    static const ts_case cases[] = {
        {"redis_down_and_back", test_redis_down_and_back},
        {"stale_connection_replaced", test_stale_connection_replaced},
        {NULL, NULL},
    };
    return ts_main("cache_fault", cases);
}
