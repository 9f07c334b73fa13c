/* Unit tests of permission_cache: hits only under the same stamp and generation, clear, max age,
 * bounded size with LRU eviction, disabled cache, and concurrent use. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "permission_cache.h"
#include "test_support.h"

static const char *U1 = "00000000-0000-0000-0000-000000000001";
static const char *U2 = "00000000-0000-0000-0000-000000000002";

static perm_stamp stamp(const char *g, const char *u)
{
    perm_stamp s;
    memset(&s, 0, sizeof s);
    snprintf(s.global, sizeof s.global, "%s", g);
    snprintf(s.user, sizeof s.user, "%s", u);
    return s;
}

static perm_set *set_of(const char *p)
{
    const char *v[] = {p};
    return perm_set_new(v, 1);
}

static void test_hit_only_with_same_stamp(void)
{
    perm_cache *c = perm_cache_new(64, 0);
    perm_stamp s1 = stamp("g1", "u1");
    const char *perm = "users:read";
    bool allowed = false;
    CU_ASSERT_FALSE(perm_cache_check(c, U1, &s1, 0, &perm, 1, &allowed));
    perm_cache_put(c, U1, &s1, perm_cache_generation(c), 0, set_of("users:*"));
    CU_ASSERT_TRUE(perm_cache_check(c, U1, &s1, 0, &perm, 1, &allowed));
    CU_ASSERT_TRUE(allowed);
    perm_stamp s2 = stamp("g2", "u1"), s3 = stamp("g1", "u2");
    CU_ASSERT_FALSE(perm_cache_check(c, U1, &s2, 0, &perm, 1, &allowed));
    CU_ASSERT_FALSE(perm_cache_check(c, U1, &s3, 0, &perm, 1, &allowed));
    CU_ASSERT_FALSE(perm_cache_check(c, U2, &s1, 0, &perm, 1, &allowed));
    /* A newer entry replaces the user's old one. */
    perm_cache_put(c, U1, &s2, perm_cache_generation(c), 0, set_of("roles:read"));
    CU_ASSERT_FALSE(perm_cache_check(c, U1, &s1, 0, &perm, 1, &allowed));
    CU_ASSERT_TRUE(perm_cache_check(c, U1, &s2, 0, &perm, 1, &allowed));
    CU_ASSERT_FALSE(allowed);
    perm_cache_free(c);
}

static void test_clear_and_stale_generation(void)
{
    perm_cache *c = perm_cache_new(64, 0);
    perm_stamp s = stamp("g", "u");
    const char *perm = "users:read";
    bool allowed = false;
    perm_cache_put(c, U1, &s, perm_cache_generation(c), 0, set_of("*"));
    CU_ASSERT_TRUE(perm_cache_check(c, U1, &s, 0, &perm, 1, &allowed));
    perm_cache_clear(c);
    CU_ASSERT_FALSE(perm_cache_check(c, U1, &s, 0, &perm, 1, &allowed));
    /* An entry computed under a generation read before a clear is dead on arrival. */
    uint64_t gen = perm_cache_generation(c);
    perm_cache_clear(c);
    perm_cache_put(c, U2, &s, gen, 0, set_of("*"));
    CU_ASSERT_FALSE(perm_cache_check(c, U2, &s, 0, &perm, 1, &allowed));
    perm_cache_stats st;
    perm_cache_stats_get(c, &st);
    CU_ASSERT_EQUAL(st.clears, 2);
    CU_ASSERT_EQUAL(st.hits, 1);
    perm_cache_free(c);
}

static void test_max_age(void)
{
    perm_cache *c = perm_cache_new(64, 1000);
    perm_stamp s = stamp("g", "u");
    const char *perm = "users:read";
    bool allowed = false;
    perm_cache_put(c, U1, &s, perm_cache_generation(c), 5000, set_of("*"));
    CU_ASSERT_TRUE(perm_cache_check(c, U1, &s, 5999, &perm, 1, &allowed));
    CU_ASSERT_FALSE(perm_cache_check(c, U1, &s, 6000, &perm, 1, &allowed));
    perm_cache_free(c);
}

static void test_bounded_lru(void)
{
    /* 8 entries; insert 1000 users: never more than 8 hits possible, the latest always present. */
    perm_cache *c = perm_cache_new(8, 0);
    perm_stamp s = stamp("g", "u");
    char ids[1000][40];
    for (int i = 0; i < 1000; i++) {
        snprintf(ids[i], sizeof ids[i], "00000000-0000-0000-0000-%012d", i);
        perm_cache_put(c, ids[i], &s, perm_cache_generation(c), 0, set_of("*"));
        const char *perm = "a:b";
        bool allowed = false;
        CU_ASSERT_TRUE(perm_cache_check(c, ids[i], &s, 0, &perm, 1, &allowed));
    }
    int present = 0;
    for (int i = 0; i < 1000; i++) {
        const char *perm = "a:b";
        bool allowed = false;
        present += perm_cache_check(c, ids[i], &s, 0, &perm, 1, &allowed);
    }
    CU_ASSERT_TRUE(present <= 8);
    CU_ASSERT_TRUE(present >= 1);
    perm_cache_stats st;
    perm_cache_stats_get(c, &st);
    CU_ASSERT_TRUE(st.evictions >= 1000 - 8);
    perm_cache_free(c);
}

static void test_disabled(void)
{
    perm_cache *c = perm_cache_new(0, 0);
    perm_stamp s = stamp("g", "u");
    const char *perm = "users:read";
    bool allowed = false;
    perm_cache_put(c, U1, &s, perm_cache_generation(c), 0, set_of("*"));
    CU_ASSERT_FALSE(perm_cache_check(c, U1, &s, 0, &perm, 1, &allowed));
    perm_cache_free(c);
    perm_cache_free(NULL);
}

static perm_cache *shared;

static void *hammer(void *arg)
{
    int t = (int)(long)arg;
    perm_stamp s = stamp("g", "u");
    for (int i = 0; i < 20000; i++) {
        char id[40];
        snprintf(id, sizeof id, "00000000-0000-0000-%04d-%012d", t, i % 300);
        const char *perm = "users:read";
        bool allowed = false;
        if (perm_cache_check(shared, id, &s, 0, &perm, 1, &allowed)) {
            CU_ASSERT_TRUE(allowed);
        } else {
            perm_cache_put(shared, id, &s, perm_cache_generation(shared), 0, set_of("users:*"));
        }
        if (i % 5000 == 0)
            perm_cache_clear(shared);
    }
    return NULL;
}

static void test_concurrent(void)
{
    shared = perm_cache_new(256, 0);
    pthread_t th[4];
    for (long i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, hammer, (void *)i);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    perm_cache_stats st;
    perm_cache_stats_get(shared, &st);
    CU_ASSERT_EQUAL(st.hits + st.misses, 80000);
    CU_ASSERT_TRUE(st.hits > 0);
    perm_cache_free(shared);
}

int main(void)
{
    static const ts_case cases[] = {
        {"hit_only_with_same_stamp", test_hit_only_with_same_stamp},
        {"clear_and_stale_generation", test_clear_and_stale_generation},
        {"max_age", test_max_age},
        {"bounded_lru", test_bounded_lru},
        {"disabled", test_disabled},
        {"concurrent", test_concurrent},
        {NULL, NULL},
    };
    return ts_main("permission_cache", cases);
}
