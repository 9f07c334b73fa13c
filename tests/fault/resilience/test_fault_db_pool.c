/* fault_db_pool: a user service with DB_POOL_SIZE=1, DB_POOL_WAIT_MS=300 whose only connection is
 * stuck (its GetUser blocks on a table lock held by psql). Asserts: concurrent GetUser callers get
 * UNAVAILABLE after about the wait (250 ms <= t <= 1.5 s; also through the default client policy,
 * retries included), never hang; the timeouts are counted (db_pool_timeouts_total); the stuck call
 * and every later call succeed once the lock is released. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rpc_client.h"
#include "fault_common.h"
#include "user/v1/user.pb-c.h"

#define DB "t_fault_pool"
#define REDIS_DB 53
#define WAIT_MS 300
#define LOCK_MS 3000
#define CALLERS 4
#define M(name) "/user.v1.UserService/" name

static int g_pid, g_port, g_mport;
static rpc_client *g_cli;
static char g_log[128];
static char g_ids[CALLERS + 2][64];

typedef struct caller {
    pthread_t th;
    const char *id;
    unsigned flags;
    int deadline_ms;
    err_code rc;
    long long ms;
    err_info e;
} caller;

static void *get_user(void *arg)
{
    caller *c = arg;
    arena *a = arena_new(0);
    User__V1__GetUserRequest req = USER__V1__GET_USER_REQUEST__INIT;
    req.id = (char *)c->id;
    ProtobufCMessage *resp = NULL;
    err_clear(&c->e);
    rpc_call_opts o = {.deadline_ms = rpc_now_ms() + c->deadline_ms};
    long long t0 = ts_now_ms();
    c->rc = rpc_client_call_flags(g_cli, M("GetUser"), &req.base, &user__v1__user__descriptor, &o,
                                  c->flags, a, &resp, &c->e);
    c->ms = ts_now_ms() - t0;
    arena_free(a);
    return NULL;
}

static void start_service(void)
{
    ts_fresh_db(DB, "user_svc");
    ts_redis_flush(REDIS_DB);
    g_port = ts_free_port();
    do
        g_mport = ts_free_port();
    while (g_mport == g_port);
    snprintf(g_log, sizeof g_log, "/tmp/fault_db_pool.%d.log", (int)getpid());
    char env[10][512];
    snprintf(env[0], sizeof env[0], "LISTEN_ADDR=127.0.0.1:%d", g_port);
    snprintf(env[1], sizeof env[1], "METRICS_ADDR=127.0.0.1:%d", g_mport);
    snprintf(env[2], sizeof env[2], "DATABASE_URL=%s", ts_db_conninfo(DB, "user_svc"));
    snprintf(env[3], sizeof env[3], "REDIS_URL=%s", ts_redis_url_db(REDIS_DB));
    snprintf(env[4], sizeof env[4], "DB_POOL_SIZE=1");
    snprintf(env[5], sizeof env[5], "DB_POOL_WAIT_MS=%d", WAIT_MS);
    /* the stuck statement must outlast the lock, not be cancelled by the statement timeout */
    snprintf(env[6], sizeof env[6], "DB_STATEMENT_TIMEOUT_MS=20000");
    /* enough server threads that the callers wait in the pool, not in the RPC queue */
    snprintf(env[7], sizeof env[7], "RPC_THREADS=8");
    snprintf(env[8], sizeof env[8], "PAGE_TOKEN_SECRET=fault");
    snprintf(env[9], sizeof env[9], "LOG_LEVEL=warn");
    char *envp[] = {env[0], env[1], env[2], env[3], env[4], env[5],
                    env[6], env[7], env[8], env[9], NULL};
    char *argv[] = {(char *)ts_bin("user-service"), NULL};
    g_pid = ts_spawn(argv, envp, g_log);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(g_port, 20000), 0);
    err_info e;
    err_clear(&e);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", g_port);
    rpc_client_opts co = {.target = target, .name = "user", .default_timeout_ms = 5000};
    g_cli = rpc_client_new(&co, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g_cli);
    for (int i = 0; i < CALLERS + 2; i++) {
        arena *a = arena_new(0);
        User__V1__CreateUserRequest req = USER__V1__CREATE_USER_REQUEST__INIT;
        req.email = arena_printf(a, "p%d@fault-pool.test", i);
        req.display_name = "pool";
        ProtobufCMessage *resp = NULL;
        rpc_call_opts o = {0};
        CU_ASSERT_EQUAL_FATAL(rpc_client_call(g_cli, M("CreateUser"), &req.base,
                                              &user__v1__user__descriptor, &o, a, &resp, &e),
                              ERR_OK);
        snprintf(g_ids[i], sizeof g_ids[i], "%s", ((User__V1__User *)resp)->id);
        arena_free(a);
    }
}

static int blocked_backends(void)
{
    char *o = fc_psql_query(DB, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'user_svc' "
                                "AND wait_event_type = 'Lock';");
    int n = o ? (int)strtol(o, NULL, 10) : -1;
    free(o);
    return n;
}

static void test_pool_exhausted(void)
{
    CU_ASSERT_FATAL(g_cli != NULL);
    ts_redis_flush(REDIS_DB); /* every GetUser below must go to the database */
    double timeouts0 = fc_metric(g_mport, "db_pool_timeouts_total");
    long long t_lock = ts_now_ms();
    int lock = fc_lock_table(DB, "users.users", LOCK_MS);
    CU_ASSERT_FATAL(lock > 0);
    /* The stuck caller takes the only connection and blocks on the lock. */
    caller stuck = {.id = g_ids[0], .flags = RPC_CALL_NO_RETRY, .deadline_ms = 15000};
    pthread_create(&stuck.th, NULL, get_user, &stuck);
    int blocked = 0;
    for (int i = 0; i < 100 && blocked < 1; i++) {
        usleep(20000);
        blocked = blocked_backends();
    }
    CU_ASSERT_EQUAL(blocked, 1);
    /* Concurrent callers: CALLERS measuring the service alone (no client retry, breaker
     * bypassed), one through the client's default policy: GetUser is an idempotent read, but the
     * pool's answer carries a retry hint, so the client must not retry into the saturated pool. */
    caller c[CALLERS + 1];
    memset(c, 0, sizeof c);
    for (int i = 0; i <= CALLERS; i++) {
        c[i].id = g_ids[1 + (i % CALLERS)];
        c[i].flags = i < CALLERS ? RPC_CALL_NO_RETRY | RPC_CALL_BYPASS_BREAKER : 0;
        c[i].deadline_ms = 5000;
        pthread_create(&c[i].th, NULL, get_user, &c[i]);
    }
    for (int i = 0; i <= CALLERS; i++)
        pthread_join(c[i].th, NULL);
    long long t_callers = ts_now_ms() - t_lock;
    double waiting = fc_metric(g_mport, "db_pool_in_use");
    double timeouts1 = fc_metric(g_mport, "db_pool_timeouts_total");
    int lrc = fc_lock_wait(lock, LOCK_MS + 5000);
    pthread_join(stuck.th, NULL);
    long long t_release = ts_now_ms() - t_lock;

    for (int i = 0; i <= CALLERS; i++)
        fprintf(stderr, "  caller %d (%s): %s after %lld ms: %s\n", i,
                i < CALLERS ? "no retry" : "default policy", err_str(c[i].rc), c[i].ms, c[i].e.msg);
    fprintf(stderr,
            "fault_db_pool: stuck caller %s after %lld ms; callers done %lld ms after the lock, "
            "lock released at %lld ms; in use %.0f; db_pool_timeouts_total %.0f -> %.0f\n",
            err_str(stuck.rc), stuck.ms, t_callers, t_release, waiting, timeouts0, timeouts1);
    for (int i = 0; i <= CALLERS; i++) {
        CU_ASSERT_EQUAL(c[i].rc, ERR_UNAVAILABLE);
        CU_ASSERT(c[i].ms >= WAIT_MS - 50 && c[i].ms <= 1500);
        CU_ASSERT(c[i].e.retry_after_s >= 1); /* RetryInfo, i.e. HTTP Retry-After */
    }
    CU_ASSERT(c[CALLERS].ms < 2 * WAIT_MS); /* not retried: one wait, not three */
    CU_ASSERT(t_callers < LOCK_MS);         /* they did not wait for the lock */
    CU_ASSERT_EQUAL(waiting, 1);
    CU_ASSERT(timeouts1 - timeouts0 >= CALLERS);
    CU_ASSERT_EQUAL(lrc, 0);
    CU_ASSERT_EQUAL(stuck.rc, ERR_OK);
    CU_ASSERT(stuck.ms >= LOCK_MS - 1000);

    /* After the release: every call succeeds again, promptly. */
    int ok = 0;
    long long worst = 0;
    for (int i = 0; i < CALLERS; i++) {
        caller d = {.id = g_ids[1 + i], .flags = RPC_CALL_NO_RETRY, .deadline_ms = 5000};
        get_user(&d);
        ok += d.rc == ERR_OK;
        if (d.ms > worst)
            worst = d.ms;
    }
    fprintf(stderr, "  after the release: %d/%d ok, worst %lld ms\n", ok, CALLERS, worst);
    CU_ASSERT_EQUAL(ok, CALLERS);
    CU_ASSERT(worst < 1000);
}

int main(void)
{
    ts_need_env("PGPORT");
    log_init("fault_db_pool", LOG_ERROR);
    static const ts_case cases[] = {{"start user service", start_service},
                                    {"pool of 1 exhausted", test_pool_exhausted},
                                    {NULL, NULL}};
    int rc = ts_main("fault_db_pool", cases);
    rpc_client_free(g_cli);
    if (g_pid > 0 && ts_stop(g_pid, SIGTERM, 15000) != 0 && rc == 0) {
        fprintf(stderr, "fault_db_pool: user-service did not exit 0 on SIGTERM\n");
        rc = 1;
    }
    if (rc == 0)
        unlink(g_log);
    else
        fprintf(stderr, "fault_db_pool: service log %s\n", g_log);
    return rc;
}
