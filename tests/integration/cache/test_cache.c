/* Integration tests of common/cache against the harness Redis (databases 1-5): get/set/del/ttl,
 * misses, generic commands and replies, pipelines, database selection, threads, URL parsing, and a
 * server that accepts but never answers (timeout, then fail-fast backoff). */
#include "common/cache.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_support.h"

static cache *mkcache(int db, int timeout_ms)
{
    cache_opts o = {.url = ts_redis_url_db(db), .timeout_ms = timeout_ms};
    err_info e;
    cache *c = cache_new(&o, &e);
    if (!c)
        fprintf(stderr, "cache_new: %s\n", e.msg);
    return c;
}

static long long cmd_int(cache *c, const char *a0, const char *a1)
{
    const char *argv[] = {a0, a1};
    cache_reply *r = NULL;
    err_info e;
    if (cache_command(c, a1 ? 2 : 1, argv, NULL, &r, &e) != ERR_OK)
        return -999;
    long long v = cache_reply_kind(r) == CACHE_REPLY_INTEGER ? cache_reply_int(r) : -998;
    cache_reply_free(r);
    return v;
}

static void test_get_set_del_ttl(void)
{
    ts_redis_flush(1);
    cache *c = mkcache(1, 1000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    char *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(cache_get(c, "k1", &v, &len, &e), ERR_NOT_FOUND);
    CU_ASSERT_PTR_NULL(v);
    CU_ASSERT_EQUAL(cache_set(c, "k1", "hello", 5, 100, &e), ERR_OK);
    CU_ASSERT_EQUAL(cache_get(c, "k1", &v, &len, &e), ERR_OK);
    CU_ASSERT_EQUAL(len, 5);
    CU_ASSERT_STRING_EQUAL(v, "hello");
    free(v);
    long long ttl = cmd_int(c, "TTL", "k1");
    CU_ASSERT(ttl > 90 && ttl <= 100);

    /* no expiry */
    CU_ASSERT_EQUAL(cache_set(c, "k2", "x", 1, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(cmd_int(c, "TTL", "k2"), -1);

    /* binary-safe values */
    const char bin[] = {'a', '\0', 'b', '\n', '\xff'};
    CU_ASSERT_EQUAL(cache_set(c, "bin", bin, sizeof bin, 60, &e), ERR_OK);
    v = NULL;
    CU_ASSERT_EQUAL(cache_get(c, "bin", &v, &len, &e), ERR_OK);
    CU_ASSERT_EQUAL(len, sizeof bin);
    if (v)
        CU_ASSERT_EQUAL(memcmp(v, bin, sizeof bin), 0);
    free(v);

    CU_ASSERT_EQUAL(cache_del(c, "k1", &e), ERR_OK);
    CU_ASSERT_EQUAL(cache_del(c, "k1", &e), ERR_OK); /* deleting a missing key is fine */
    v = NULL;
    CU_ASSERT_EQUAL(cache_get(c, "k1", &v, &len, &e), ERR_NOT_FOUND);

    cache_stats st;
    cache_stats_get(c, &st);
    CU_ASSERT_EQUAL(st.hits, 2);
    CU_ASSERT_EQUAL(st.misses, 2);
    CU_ASSERT_EQUAL(st.errors, 0);
    cache_free(c);
}

static void test_ttl_expires(void)
{
    ts_redis_flush(1);
    cache *c = mkcache(1, 1000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    CU_ASSERT_EQUAL(cache_set(c, "short", "v", 1, 1, &e), ERR_OK);
    char *v = NULL;
    size_t len;
    CU_ASSERT_EQUAL(cache_get(c, "short", &v, &len, &e), ERR_OK);
    free(v);
    usleep(1200000);
    v = NULL;
    CU_ASSERT_EQUAL(cache_get(c, "short", &v, &len, &e), ERR_NOT_FOUND);
    cache_free(c);
}

static void test_command_replies(void)
{
    ts_redis_flush(2);
    cache *c = mkcache(2, 1000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    CU_ASSERT_EQUAL(cmd_int(c, "INCR", "n"), 1);
    CU_ASSERT_EQUAL(cmd_int(c, "INCR", "n"), 2);

    /* A Redis error reply is a reply, not a transport failure. */
    const char *lp[] = {"LPUSH", "n", "x"};
    cache_reply *r = NULL;
    CU_ASSERT_EQUAL(cache_command(c, 3, lp, NULL, &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(cache_reply_kind(r), CACHE_REPLY_ERROR);
    size_t len = 0;
    CU_ASSERT_PTR_NOT_NULL(strstr(cache_reply_str(r, &len), "WRONGTYPE"));
    cache_reply_free(r);

    /* GET on the wrong type is an error for cache_get */
    const char *lp2[] = {"RPUSH", "list", "a"};
    CU_ASSERT_EQUAL(cache_command(c, 3, lp2, NULL, NULL, &e), ERR_OK);
    char *v = NULL;
    CU_ASSERT_EQUAL(cache_get(c, "list", &v, &len, &e), ERR_INTERNAL);

    /* arrays with nils; status replies are strings */
    const char *set[] = {"SET", "a", "1"};
    CU_ASSERT_EQUAL(cache_command(c, 3, set, NULL, &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(cache_reply_kind(r), CACHE_REPLY_STRING);
    CU_ASSERT_STRING_EQUAL(cache_reply_str(r, NULL), "OK");
    cache_reply_free(r);
    const char *mget[] = {"MGET", "a", "missing", "n"};
    CU_ASSERT_EQUAL(cache_command(c, 4, mget, NULL, &r, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(cache_reply_kind(r), CACHE_REPLY_ARRAY);
    CU_ASSERT_EQUAL(cache_reply_len(r), 3);
    CU_ASSERT_STRING_EQUAL(cache_reply_str(cache_reply_at(r, 0), NULL), "1");
    CU_ASSERT_EQUAL(cache_reply_kind(cache_reply_at(r, 1)), CACHE_REPLY_NIL);
    CU_ASSERT_STRING_EQUAL(cache_reply_str(cache_reply_at(r, 2), NULL), "2");
    CU_ASSERT_PTR_NULL(cache_reply_at(r, 3));
    cache_reply_free(r);
    cache_reply_free(NULL);

    /* explicit lengths (binary-safe argv) */
    const char *bset[] = {"SET", "b\0x", "v"};
    size_t blens[] = {3, 3, 1};
    CU_ASSERT_EQUAL(cache_command(c, 3, bset, blens, NULL, &e), ERR_OK);
    CU_ASSERT_EQUAL(cmd_int(c, "EXISTS", "b"), 0);
    CU_ASSERT_EQUAL(cmd_int(c, "DBSIZE", NULL), 4); /* n, list, a, "b\0x" */
    cache_free(c);
}

static void test_pipeline(void)
{
    ts_redis_flush(3);
    cache *c = mkcache(3, 1000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    const char *c0[] = {"SET", "p", "10"};
    const char *c1[] = {"INCRBY", "p", "5"};
    const char *c2[] = {"GET", "p"};
    const char *c3[] = {"NOSUCHCOMMAND"};
    const char **argvs[] = {c0, c1, c2, c3};
    int argcs[] = {3, 3, 2, 1};
    cache_reply *out[4] = {0};
    err_info e;
    CU_ASSERT_EQUAL_FATAL(cache_pipeline(c, 4, argcs, argvs, NULL, out, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(cache_reply_str(out[0], NULL), "OK");
    CU_ASSERT_EQUAL(cache_reply_int(out[1]), 15);
    CU_ASSERT_STRING_EQUAL(cache_reply_str(out[2], NULL), "15");
    CU_ASSERT_EQUAL(cache_reply_kind(out[3]), CACHE_REPLY_ERROR);
    for (int i = 0; i < 4; i++)
        cache_reply_free(out[i]);
    /* the connection is in a clean state afterwards */
    CU_ASSERT_EQUAL(cmd_int(c, "INCR", "p"), 16);

    /* Explicit lengths (binary-safe: NUL and CR LF inside), and a value too big for the
     * formatter's stack buffer, in one pipeline. */
    static char big[5000];
    memset(big, 'z', sizeof big);
    big[100] = '\r';
    big[101] = '\n';
    const char bin[] = {'a', '\0', '\r', '\n', 'b'};
    const char *b0[] = {"SET", "bin", bin};
    const char *b1[] = {"SET", "big", big};
    const char *b2[] = {"STRLEN", "big"};
    const char *b3[] = {"GET", "bin"};
    const size_t l0[] = {3, 3, sizeof bin}, l1[] = {3, 3, sizeof big}, l2[] = {6, 3}, l3[] = {3, 3};
    const char **bargvs[] = {b0, b1, b2, b3};
    const size_t *blens[] = {l0, l1, l2, l3};
    int bargcs[] = {3, 3, 2, 2};
    CU_ASSERT_EQUAL_FATAL(cache_pipeline(c, 4, bargcs, bargvs, blens, out, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(cache_reply_str(out[0], NULL), "OK");
    CU_ASSERT_STRING_EQUAL(cache_reply_str(out[1], NULL), "OK");
    CU_ASSERT_EQUAL(cache_reply_int(out[2]), (long long)sizeof big);
    size_t n = 0;
    const char *got = cache_reply_str(out[3], &n);
    CU_ASSERT_EQUAL(n, sizeof bin);
    if (got && n == sizeof bin)
        CU_ASSERT_EQUAL(memcmp(got, bin, sizeof bin), 0);
    for (int i = 0; i < 4; i++)
        cache_reply_free(out[i]);
    cache_free(c);
}

static void test_db_selection(void)
{
    ts_redis_flush(4);
    ts_redis_flush(5);
    cache *a = mkcache(4, 1000), *b = mkcache(5, 1000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    err_info e;
    CU_ASSERT_EQUAL(cache_set(a, "only-in-4", "1", 1, 60, &e), ERR_OK);
    char *v = NULL;
    size_t len;
    CU_ASSERT_EQUAL(cache_get(b, "only-in-4", &v, &len, &e), ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(cache_get(a, "only-in-4", &v, &len, &e), ERR_OK);
    free(v);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test \"$(redis-cli -p %s -n 4 GET only-in-4)\" = 1",
             ts_need_env("REDIS_PORT"));
    CU_ASSERT_EQUAL(system(cmd), 0);
    cache_free(a);
    cache_free(b);
}

typedef struct worker {
    cache *c;
    int ok;
} worker;

static void *incr_worker(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < 200; i++)
        if (cmd_int(w->c, "INCR", "shared") > 0)
            w->ok++;
    return NULL; /* the thread's connection is closed by the key destructor */
}

static void test_threads(void)
{
    ts_redis_flush(2);
    cache *c = mkcache(2, 1000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    enum { N = 6 };
    pthread_t th[N];
    worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker){.c = c};
        pthread_create(&th[i], NULL, incr_worker, &w[i]);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
    }
    CU_ASSERT_EQUAL(ok, N * 200);
    const char *get[] = {"GET", "shared"};
    cache_reply *r = NULL;
    err_info e;
    CU_ASSERT_EQUAL(cache_command(c, 2, get, NULL, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(cache_reply_str(r, NULL), "1200");
    cache_reply_free(r);
    cache_free(c);
}

static void test_url_parsing(void)
{
    static const char *bad[] = {"http://127.0.0.1:6379",
                                "redis://",
                                "redis://h:notaport",
                                "redis://h:70000",
                                "redis://h:6379/x",
                                "redis://h:6379/-1",
                                NULL};
    err_info e;
    for (int i = 0; bad[i]; i++) {
        cache_opts o = {.url = bad[i]};
        cache *c = cache_new(&o, &e);
        CU_ASSERT_PTR_NULL(c);
        CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
        cache_free(c);
    }
    static const char *good[] = {"redis://localhost", "redis://10.0.0.1:6380/3",
                                 "redis://:pw@h:1/2", "redis://[::1]:6379/0", NULL};
    for (int i = 0; good[i]; i++) {
        cache_opts o = {.url = good[i]};
        cache *c = cache_new(&o, &e);
        CU_ASSERT_PTR_NOT_NULL(c);
        cache_free(c);
    }
    /* a password that Redis rejects is an error naming AUTH, not the password */
    char url[128];
    snprintf(url, sizeof url, "redis://:n0tThePw@127.0.0.1:%s/1", ts_need_env("REDIS_PORT"));
    cache_opts o = {.url = url, .timeout_ms = 500};
    cache *c = cache_new(&o, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    char *v = NULL;
    size_t len;
    CU_ASSERT_EQUAL(cache_get(c, "x", &v, &len, &e), ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "AUTH"));
    CU_ASSERT_PTR_NULL(strstr(e.msg, "n0tThePw"));
    cache_free(c);
}

/* A "Redis" that accepts connections and never answers: the first command waits for the timeout,
 * the following ones fail at once during the backoff, and a later one tries again. */
static void test_timeout_then_fail_fast(void)
{
    int port = ts_free_port();
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(bind(ls, (struct sockaddr *)&a, sizeof a) == 0);
    CU_ASSERT_FATAL(listen(ls, 16) == 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    cache_opts o = {.url = url, .timeout_ms = 200, .backoff_max_ms = 400};
    err_info e;
    cache *c = cache_new(&o, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    char *v = NULL;
    size_t len;
    long long t0 = ts_now_ms();
    CU_ASSERT_EQUAL(cache_get(c, "k", &v, &len, &e), ERR_UNAVAILABLE);
    long long took = ts_now_ms() - t0;
    CU_ASSERT(took >= 180 && took < 700);
    t0 = ts_now_ms();
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(cache_get(c, "k", &v, &len, &e), ERR_UNAVAILABLE);
    CU_ASSERT(ts_now_ms() - t0 < 40); /* fail fast: no network wait */
    cache_stats st;
    cache_stats_get(c, &st);
    CU_ASSERT_EQUAL(st.errors, 21);
    CU_ASSERT_EQUAL(st.misses, 0);
    usleep(450000); /* past the backoff: it tries (and waits) again */
    t0 = ts_now_ms();
    CU_ASSERT_EQUAL(cache_get(c, "k", &v, &len, &e), ERR_UNAVAILABLE);
    CU_ASSERT(ts_now_ms() - t0 >= 180);
    cache_free(c);
    close(ls);
}

int main(void)
{
    ts_need_env("REDIS_PORT");
    static const ts_case cases[] = {
        {"get_set_del_ttl", test_get_set_del_ttl},
        {"ttl_expires", test_ttl_expires},
        {"command_replies", test_command_replies},
        {"pipeline", test_pipeline},
        {"db_selection", test_db_selection},
        {"threads", test_threads},
        {"url_parsing", test_url_parsing},
        {"timeout_then_fail_fast", test_timeout_then_fail_fast},
        {NULL, NULL},
    };
    return ts_main("cache", cases);
}
