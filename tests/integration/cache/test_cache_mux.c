/* Integration tests of common/cache_mux against the harness Redis (database 6): replies reach the
 * right job under concurrent submitters, jobs queued during a round trip share the next one, error
 * replies stay per command, transport failures reach every job, and free answers what is queued. */
#include "common/cache_mux.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_support.h"

static cache *mkcache(const char *url, int timeout_ms)
{
    cache_opts o = {.url = url, .timeout_ms = timeout_ms};
    err_info e;
    cache *c = cache_new(&o, &e);
    if (!c)
        fprintf(stderr, "cache_new: %s\n", e.msg);
    return c;
}

/* ---- many submitters ---- */

#define THREADS 4
#define PER_THREAD 400

typedef struct job {
    char key[32], val[32];
    const char *set[3], *get[2];
    atomic_int *done, *bad;
} job;

static void on_job(void *arg, cache_reply **r, const err_info *e)
{
    job *j = arg;
    size_t n = 0;
    const char *s = e->code == ERR_OK ? cache_reply_str(r[1], &n) : NULL;
    if (e->code != ERR_OK || cache_reply_kind(r[0]) != CACHE_REPLY_STRING || !s ||
        strcmp(s, j->val) != 0)
        atomic_fetch_add(j->bad, 1);
    atomic_fetch_add(j->done, 1);
}

typedef struct submitter {
    cache_mux *m;
    int id;
    job *jobs;
    atomic_int done, bad, refused;
} submitter;

static void *submit_main(void *arg)
{
    submitter *s = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        job *j = &s->jobs[i];
        snprintf(j->key, sizeof j->key, "mux:%d:%d", s->id, i);
        snprintf(j->val, sizeof j->val, "v-%d-%d", s->id, i);
        j->set[0] = "SET", j->set[1] = j->key, j->set[2] = j->val;
        j->get[0] = "GET", j->get[1] = j->key;
        j->done = &s->done;
        j->bad = &s->bad;
        cache_mux_cmd cmds[2] = {{3, j->set, NULL}, {2, j->get, NULL}};
        err_info e;
        if (cache_mux_submit(s->m, 2, cmds, on_job, j, &e) != ERR_OK)
            atomic_fetch_add(&s->refused, 1);
    }
    return NULL;
}

static void test_concurrent_submitters(void)
{
    ts_redis_flush(6);
    cache *c = mkcache(ts_redis_url_db(6), 2000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    cache_mux *m = cache_mux_new(c, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    submitter s[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        s[t].m = m;
        s[t].id = t;
        s[t].jobs = calloc(PER_THREAD, sizeof(job));
        atomic_init(&s[t].done, 0);
        atomic_init(&s[t].bad, 0);
        atomic_init(&s[t].refused, 0);
        pthread_create(&th[t], NULL, submit_main, &s[t]);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    long long t0 = ts_now_ms();
    int total = 0;
    while (ts_now_ms() - t0 < 10000) {
        total = 0;
        for (int t = 0; t < THREADS; t++)
            total += atomic_load(&s[t].done);
        if (total == THREADS * PER_THREAD)
            break;
        usleep(2000);
    }
    CU_ASSERT_EQUAL(total, THREADS * PER_THREAD);
    for (int t = 0; t < THREADS; t++) {
        CU_ASSERT_EQUAL(atomic_load(&s[t].bad), 0);
        CU_ASSERT_EQUAL(atomic_load(&s[t].refused), 0);
    }
    cache_mux_stats st;
    cache_mux_stats_get(m, &st);
    CU_ASSERT_EQUAL(st.jobs, THREADS * PER_THREAD);
    CU_ASSERT_EQUAL(st.failures, 0);
    CU_ASSERT(st.round_trips >= 1 && st.round_trips <= st.jobs);
    cache_mux_free(m);
    for (int t = 0; t < THREADS; t++)
        free(s[t].jobs);
    cache_free(c);
}

/* ---- batching: jobs queued behind a slow callback share one round trip ---- */

typedef struct counter {
    atomic_int n, errors;
    int sleep_ms;
} counter;

static void on_count(void *arg, cache_reply **r, const err_info *e)
{
    counter *k = arg;
    if (k->sleep_ms)
        usleep((useconds_t)k->sleep_ms * 1000);
    if (e->code != ERR_OK || cache_reply_kind(r[0]) == CACHE_REPLY_ERROR)
        atomic_fetch_add(&k->errors, 1);
    atomic_fetch_add(&k->n, 1);
}

static bool wait_count(atomic_int *n, int want, int ms)
{
    long long t0 = ts_now_ms();
    while (atomic_load(n) < want && ts_now_ms() - t0 < ms)
        usleep(1000);
    return atomic_load(n) == want;
}

static void test_queued_jobs_share_a_round_trip(void)
{
    cache *c = mkcache(ts_redis_url_db(6), 2000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    cache_mux *m = cache_mux_new(c, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    static const char *ping[] = {"PING"};
    cache_mux_cmd cmd = {1, ping, NULL};
    counter slow = {.sleep_ms = 150}, fast = {0};
    CU_ASSERT_EQUAL(cache_mux_submit(m, 1, &cmd, on_count, &slow, &e), ERR_OK);
    usleep(50000); /* the mux thread is now in the slow callback */
    for (int i = 0; i < 50; i++)
        CU_ASSERT_EQUAL(cache_mux_submit(m, 1, &cmd, on_count, &fast, &e), ERR_OK);
    CU_ASSERT(wait_count(&fast.n, 50, 5000));
    CU_ASSERT_EQUAL(atomic_load(&fast.errors), 0);
    cache_mux_stats st;
    cache_mux_stats_get(m, &st);
    CU_ASSERT_EQUAL(st.jobs, 51);
    CU_ASSERT_EQUAL(st.round_trips, 2);
    cache_mux_free(m);
    cache_free(c);
}

/* ---- a Redis error reply is that job's, not the batch's ---- */

static void test_error_reply_is_per_command(void)
{
    cache *c = mkcache(ts_redis_url_db(6), 2000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    cache_mux *m = cache_mux_new(c, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    static const char *bad[] = {"NOSUCHCOMMAND", "x"};
    static const char *ping[] = {"PING"};
    cache_mux_cmd cb = {2, bad, NULL}, cp = {1, ping, NULL};
    counter slow = {.sleep_ms = 100}, k_bad = {0}, k_ok = {0};
    CU_ASSERT_EQUAL(cache_mux_submit(m, 1, &cp, on_count, &slow, &e), ERR_OK);
    usleep(30000);
    CU_ASSERT_EQUAL(cache_mux_submit(m, 1, &cb, on_count, &k_bad, &e), ERR_OK);
    CU_ASSERT_EQUAL(cache_mux_submit(m, 1, &cp, on_count, &k_ok, &e), ERR_OK);
    CU_ASSERT(wait_count(&k_ok.n, 1, 5000));
    CU_ASSERT(wait_count(&k_bad.n, 1, 5000));
    CU_ASSERT_EQUAL(atomic_load(&k_bad.errors), 1);
    CU_ASSERT_EQUAL(atomic_load(&k_ok.errors), 0);
    cache_mux_stats st;
    cache_mux_stats_get(m, &st);
    CU_ASSERT_EQUAL(st.failures, 0);
    cache_mux_free(m);
    cache_free(c);
}

/* ---- transport failure reaches every job, quickly ---- */

typedef struct failure {
    atomic_int n, unavailable, null_replies;
} failure;

static void on_failure(void *arg, cache_reply **r, const err_info *e)
{
    failure *f = arg;
    if (e->code == ERR_UNAVAILABLE)
        atomic_fetch_add(&f->unavailable, 1);
    if (!r[0] && !r[1])
        atomic_fetch_add(&f->null_replies, 1);
    atomic_fetch_add(&f->n, 1);
}

static void test_unreachable_redis(void)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", ts_free_port()); /* nobody listens */
    cache *c = mkcache(url, 300);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    cache_mux *m = cache_mux_new(c, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    static const char *get[] = {"GET", "a"};
    cache_mux_cmd cmds[2] = {{2, get, NULL}, {2, get, NULL}};
    failure f = {0};
    long long t0 = ts_now_ms();
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(cache_mux_submit(m, 2, cmds, on_failure, &f, &e), ERR_OK);
    CU_ASSERT(wait_count(&f.n, 20, 5000));
    CU_ASSERT(ts_now_ms() - t0 < 2000);
    CU_ASSERT_EQUAL(atomic_load(&f.unavailable), 20);
    CU_ASSERT_EQUAL(atomic_load(&f.null_replies), 20);
    cache_mux_stats st;
    cache_mux_stats_get(m, &st);
    CU_ASSERT(st.failures >= 1);
    cache_mux_free(m);
    cache_free(c);
}

/* ---- free answers what is queued; bad arguments are refused ---- */

static void test_free_answers_queued_jobs(void)
{
    cache *c = mkcache(ts_redis_url_db(6), 2000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    err_info e;
    cache_mux *m = cache_mux_new(c, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    static const char *ping[] = {"PING"};
    cache_mux_cmd cmd = {1, ping, NULL};
    counter k = {0};
    for (int i = 0; i < 300; i++)
        CU_ASSERT_EQUAL(cache_mux_submit(m, 1, &cmd, on_count, &k, &e), ERR_OK);
    cache_mux_free(m);
    CU_ASSERT_EQUAL(atomic_load(&k.n), 300);
    CU_ASSERT_EQUAL(atomic_load(&k.errors), 0);

    m = cache_mux_new(c, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(cache_mux_submit(m, 0, &cmd, on_count, &k, &e), ERR_INVALID_ARGUMENT);
    cache_mux_cmd many[CACHE_MUX_MAX_CMDS + 1];
    for (int i = 0; i <= CACHE_MUX_MAX_CMDS; i++)
        many[i] = cmd;
    CU_ASSERT_EQUAL(cache_mux_submit(m, CACHE_MUX_MAX_CMDS + 1, many, on_count, &k, &e),
                    ERR_INVALID_ARGUMENT);
    cache_mux_cmd empty = {0, ping, NULL};
    CU_ASSERT_EQUAL(cache_mux_submit(m, 1, &empty, on_count, &k, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(cache_mux_submit(m, 1, &cmd, NULL, &k, &e), ERR_INVALID_ARGUMENT);
    cache_mux_free(m);
    CU_ASSERT_PTR_NULL(cache_mux_new(NULL, &e));
    cache_free(c);
}

int main(void)
{
    ts_need_env("REDIS_PORT");
    static const ts_case cases[] = {
        {"concurrent_submitters", test_concurrent_submitters},
        {"queued_jobs_share_a_round_trip", test_queued_jobs_share_a_round_trip},
        {"error_reply_is_per_command", test_error_reply_is_per_command},
        {"unreachable_redis", test_unreachable_redis},
        {"free_answers_queued_jobs", test_free_answers_queued_jobs},
        {NULL, NULL},
    };
    return ts_main("cache_mux", cases);
}
