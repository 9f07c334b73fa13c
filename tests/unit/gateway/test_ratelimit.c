/* Unit tests for gateway/ratelimit: GCRA arithmetic with a fake clock, and the per-process
 * fallback when there is no Redis. */
#include <string.h>

#include "ratelimit.h"
#include "test_support.h"

static void test_burst_then_refill(void)
{
    double tat = 0, now = 1e12;
    rl_result r;
    for (int i = 0; i < 20; i++) {
        ratelimit_gcra(&tat, now, 20, &r);
        CU_ASSERT_TRUE(r.allowed);
        CU_ASSERT_EQUAL(r.limit, 20);
        CU_ASSERT_EQUAL(r.remaining, 19 - i);
    }
    ratelimit_gcra(&tat, now, 20, &r);
    CU_ASSERT_FALSE(r.allowed);
    CU_ASSERT_EQUAL(r.remaining, 0);
    CU_ASSERT_EQUAL(r.retry_after_s, 3); /* one token every 3 s at 20/min */
    CU_ASSERT_EQUAL(r.reset_s, 60);
    /* 2.9 s later: still refused; 3 s later: one more */
    ratelimit_gcra(&tat, now + 2900, 20, &r);
    CU_ASSERT_FALSE(r.allowed);
    CU_ASSERT_EQUAL(r.retry_after_s, 1);
    ratelimit_gcra(&tat, now + 3000, 20, &r);
    CU_ASSERT_TRUE(r.allowed);
    CU_ASSERT_EQUAL(r.remaining, 0);
    ratelimit_gcra(&tat, now + 3000, 20, &r);
    CU_ASSERT_FALSE(r.allowed);
    /* after a full idle minute the whole burst is back */
    ratelimit_gcra(&tat, now + 3000 + 60000, 20, &r);
    CU_ASSERT_TRUE(r.allowed);
    CU_ASSERT_EQUAL(r.remaining, 19);
    CU_ASSERT_EQUAL(r.reset_s, 3);
}

static void test_denied_does_not_consume(void)
{
    double tat = 0, now = 5e11;
    rl_result r;
    for (int i = 0; i < 2; i++)
        ratelimit_gcra(&tat, now, 2, &r);
    double before = tat;
    for (int i = 0; i < 100; i++) {
        ratelimit_gcra(&tat, now + i, 2, &r);
        CU_ASSERT_FALSE(r.allowed);
    }
    CU_ASSERT_DOUBLE_EQUAL(tat, before, 1e-9);
    ratelimit_gcra(&tat, now + 30000, 2, &r);
    CU_ASSERT_TRUE(r.allowed);
}

static void test_high_rate(void)
{
    double tat = 0, now = 1e12;
    rl_result r;
    int ok = 0;
    for (int i = 0; i < 2000; i++) {
        ratelimit_gcra(&tat, now, 1200, &r);
        ok += r.allowed;
    }
    CU_ASSERT_EQUAL(ok, 1200);
}

static void test_local_fallback(void)
{
    ratelimit *rl = ratelimit_new(NULL);
    rl_result r;
    int ok = 0;
    for (int i = 0; i < 10; i++) {
        ratelimit_check(rl, "auth:1.2.3.4", 5, &r);
        ok += r.allowed;
        CU_ASSERT_TRUE(r.fallback);
    }
    CU_ASSERT_EQUAL(ok, 5);
    ratelimit_check(rl, "auth:5.6.7.8", 5, &r); /* another key is independent */
    CU_ASSERT_TRUE(r.allowed);
    ratelimit_check(rl, "x", 0, &r); /* 0 = unlimited */
    CU_ASSERT_TRUE(r.allowed);
    ratelimit_free(rl);
    CU_ASSERT_PTR_NOT_NULL(strstr(RATELIMIT_LUA, "redis.call('TIME')"));
}

int main(void)
{
    static const ts_case cases[] = {{"burst then refill", test_burst_then_refill},
                                    {"denied does not consume", test_denied_does_not_consume},
                                    {"high rate", test_high_rate},
                                    {"local fallback", test_local_fallback},
                                    {NULL, NULL}};
    return ts_main("gateway_ratelimit", cases);
}
