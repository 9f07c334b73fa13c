/* Integration tests of common/db against the harness PostgreSQL (database t_db): pool exhaustion
 * and waiting, transactions, prepared statement reuse, SQLSTATE mapping, broken connection
 * replacement, slow-query logs, and migrations (twice, failing, and two processes at once). */
#include "common/db.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "test_support.h"

static char conninfo[512];  /* superuser in t_db */
static char user_conn[512]; /* user_svc in t_db */
static char perm_conn[512]; /* permission_svc in t_db */

static db_pool *mkpool(const char *ci, const char *schema, int size, int wait_ms, int stmt_ms,
                       int slow_ms)
{
    db_pool_opts o = {.conninfo = ci,
                      .schema = schema,
                      .size = size,
                      .acquire_timeout_ms = wait_ms,
                      .statement_timeout_ms = stmt_ms,
                      .slow_query_ms = slow_ms,
                      .application_name = "test_db"};
    err_info e;
    db_pool *p = db_pool_new(&o, &e);
    if (!p)
        fprintf(stderr, "db_pool_new: %s\n", e.msg);
    return p;
}

static long scalar(db_conn *c, const char *sql)
{
    db_result *r = NULL;
    err_info e;
    if (db_exec(c, sql, 0, NULL, &r, &e) != ERR_OK) {
        fprintf(stderr, "scalar(%s): %s\n", sql, e.msg);
        return -1;
    }
    long v = db_result_rows(r) == 1 ? strtol(db_result_get(r, 0, 0), NULL, 10) : -2;
    db_result_free(r);
    return v;
}

static void test_bad_conninfo(void)
{
    err_info e;
    char ci[600];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=1 dbname=x user=u password=SeCrEt connect_timeout=2");
    long long t0 = ts_now_ms();
    db_pool_opts o = {.conninfo = ci, .size = 1, .acquire_timeout_ms = 100};
    db_pool *p = db_pool_new(&o, &e);
    CU_ASSERT_PTR_NULL(p);
    CU_ASSERT_EQUAL(e.code, ERR_UNAVAILABLE);
    CU_ASSERT_PTR_NULL(strstr(e.msg, "SeCrEt"));
    CU_ASSERT(ts_now_ms() - t0 < 3000);
    db_pool_free(p);
}

static void test_pool_exhaustion(void)
{
    db_pool *p = mkpool(conninfo, NULL, 1, 300, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    db_conn *c1 = NULL, *c2 = NULL;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c1, &e), ERR_OK);

    long long t0 = ts_now_ms();
    CU_ASSERT_EQUAL(db_acquire(p, 0, &c2, &e), ERR_UNAVAILABLE);
    long long waited = ts_now_ms() - t0;
    CU_ASSERT_PTR_NULL(c2);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "db pool exhausted (waited"));
    CU_ASSERT(waited >= 295);
    CU_ASSERT(waited < 800);

    /* A caller deadline sooner than the pool's wait wins. */
    t0 = ts_now_ms();
    CU_ASSERT_EQUAL(db_acquire(p, ts_now_ms() + 100, &c2, &e), ERR_UNAVAILABLE);
    waited = ts_now_ms() - t0;
    CU_ASSERT(waited >= 95);
    CU_ASSERT(waited < 280);

    db_pool_stats st;
    db_pool_stats_get(p, &st);
    CU_ASSERT_EQUAL(st.size, 1);
    CU_ASSERT_EQUAL(st.in_use, 1);
    CU_ASSERT_EQUAL(st.idle, 0);
    CU_ASSERT_EQUAL(st.timeouts, 2);
    CU_ASSERT_EQUAL(st.acquired, 1);
    CU_ASSERT(st.wait_us_total >= 390000);

    db_release(p, c1);
    db_pool_stats_get(p, &st);
    CU_ASSERT_EQUAL(st.in_use, 0);
    CU_ASSERT_EQUAL(st.idle, 1);
    CU_ASSERT_EQUAL(db_acquire(p, 0, &c2, &e), ERR_OK);
    CU_ASSERT_PTR_EQUAL(c2, c1);
    db_release(p, c2);
    db_pool_free(p);
}

typedef struct holder {
    db_pool *p;
    db_conn *c;
    int hold_ms;
    db_pool_stats seen; /* stats just before the release, while the other thread waits */
} holder;

static void *release_later(void *arg)
{
    holder *h = arg;
    usleep((useconds_t)h->hold_ms * 1000);
    db_pool_stats_get(h->p, &h->seen);
    db_release(h->p, h->c);
    return NULL;
}

static void test_pool_waiter_gets_released_conn(void)
{
    db_pool *p = mkpool(conninfo, NULL, 1, 3000, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    err_info e;
    holder h = {.p = p, .hold_ms = 150};
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &h.c, &e), ERR_OK);
    pthread_t th;
    pthread_create(&th, NULL, release_later, &h);
    long long t0 = ts_now_ms();
    db_conn *c = NULL;
    CU_ASSERT_EQUAL(db_acquire(p, 0, &c, &e), ERR_OK);
    long long waited = ts_now_ms() - t0;
    CU_ASSERT(waited >= 100 && waited < 1500);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(h.seen.waiting, 1);
    CU_ASSERT_EQUAL(h.seen.in_use, 1);
    if (c) {
        CU_ASSERT_EQUAL(scalar(c, "SELECT 41 + 1"), 42);
        db_release(p, c);
    }
    db_pool_free(p);
}

/* Many threads, few connections: every call gets a connection (no lost wake-up) and the stats add
 * up. */
typedef struct churn {
    db_pool *p;
    int ok, failed;
} churn;

static void *churn_run(void *arg)
{
    churn *ch = arg;
    for (int i = 0; i < 25; i++) {
        db_conn *c;
        err_info e;
        if (db_acquire(ch->p, 0, &c, &e) != ERR_OK) {
            ch->failed++;
            continue;
        }
        if (scalar(c, "SELECT 1") == 1)
            ch->ok++;
        else
            ch->failed++;
        db_release(ch->p, c);
    }
    return NULL;
}

static void test_pool_concurrency(void)
{
    db_pool *p = mkpool(conninfo, NULL, 3, 5000, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    enum { N = 8 };
    pthread_t th[N];
    churn ch[N];
    for (int i = 0; i < N; i++) {
        ch[i] = (churn){.p = p};
        pthread_create(&th[i], NULL, churn_run, &ch[i]);
    }
    int ok = 0, failed = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += ch[i].ok;
        failed += ch[i].failed;
    }
    CU_ASSERT_EQUAL(ok, N * 25);
    CU_ASSERT_EQUAL(failed, 0);
    db_pool_stats st;
    db_pool_stats_get(p, &st);
    CU_ASSERT_EQUAL(st.acquired, N * 25);
    CU_ASSERT_EQUAL(st.in_use, 0);
    CU_ASSERT(st.idle >= 1 && st.idle <= 3);
    CU_ASSERT_EQUAL(st.timeouts, 0);
    db_pool_free(p);
}

static void test_transactions(void)
{
    db_pool *p = mkpool(conninfo, NULL, 1, 1000, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    db_conn *c;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_exec_script(c, "DROP TABLE IF EXISTS tx; CREATE TABLE tx (v int)", &e),
                    ERR_OK);
    const char *one[] = {"1"};
    const char *ins = "INSERT INTO tx VALUES ($1::int)";

    CU_ASSERT_EQUAL(db_begin(c, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_begin(c, &e), ERR_INTERNAL); /* nested BEGIN is a bug, said loudly */
    CU_ASSERT_EQUAL(db_exec(c, ins, 1, one, NULL, &e), ERR_OK);
    db_rollback(c);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM tx"), 0);

    CU_ASSERT_EQUAL(db_begin(c, &e), ERR_OK);
    db_result *r = NULL;
    CU_ASSERT_EQUAL(db_exec(c, ins, 1, one, &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_result_affected(r), 1);
    db_result_free(r);
    CU_ASSERT_EQUAL(db_commit(c, &e), ERR_OK);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM tx"), 1);

    /* A failed statement poisons the transaction: COMMIT must not report success. */
    CU_ASSERT_EQUAL(db_begin(c, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_exec(c, ins, 1, one, NULL, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_exec(c, "SELECT 1/0", 0, NULL, NULL, &e), ERR_INTERNAL);
    CU_ASSERT_STRING_EQUAL(db_last_sqlstate(c), "22012");
    CU_ASSERT_EQUAL(db_commit(c, &e), ERR_ABORTED);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM tx"), 1);

    /* Releasing with an open transaction rolls it back (same connection: pool of one). */
    CU_ASSERT_EQUAL(db_begin(c, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_exec(c, ins, 1, one, NULL, &e), ERR_OK);
    db_release(p, c);
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM tx"), 1);
    CU_ASSERT_EQUAL(db_begin(c, &e), ERR_OK); /* not still inside the old one */
    db_rollback(c);

    /* NULL parameters and results */
    const char *nul[] = {NULL};
    CU_ASSERT_EQUAL(db_exec(c, "SELECT $1::text IS NULL, $1::text", 1, nul, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(db_result_get(r, 0, 0), "t");
    CU_ASSERT_TRUE(db_result_isnull(r, 0, 1));
    CU_ASSERT_STRING_EQUAL(db_result_get(r, 0, 1), "");
    CU_ASSERT_EQUAL(db_result_cols(r), 2);
    CU_ASSERT_STRING_EQUAL(db_result_get(r, 5, 5), ""); /* out of range is safe */
    db_result_free(r);
    db_release(p, c);
    db_pool_free(p);
}

static long prepared_count(db_conn *c, const char *sql)
{
    const char *pp[] = {sql};
    db_result *r = NULL;
    err_info e;
    if (db_exec(c, "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1", 1, pp, &r,
                &e) != ERR_OK)
        return -1;
    long n = strtol(db_result_get(r, 0, 0), NULL, 10);
    db_result_free(r);
    return n;
}

static void test_prepared_reuse(void)
{
    db_pool *p = mkpool(conninfo, NULL, 1, 1000, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    db_conn *c;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    const char *sql = "SELECT $1::int * 2 AS doubled";
    for (int i = 1; i <= 3; i++) {
        char v[8];
        snprintf(v, sizeof v, "%d", i);
        const char *pv[] = {v};
        db_result *r = NULL;
        CU_ASSERT_EQUAL(db_exec(c, sql, 1, pv, &r, &e), ERR_OK);
        CU_ASSERT_EQUAL(strtol(db_result_get(r, 0, 0), NULL, 10), 2 * i);
        db_result_free(r);
    }
    CU_ASSERT_EQUAL(prepared_count(c, sql), 1);
    db_release(p, c);
    /* Still prepared once after a release and re-acquire of the same connection. */
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    const char *pv[] = {"5"};
    CU_ASSERT_EQUAL(db_exec(c, sql, 1, pv, NULL, &e), ERR_OK);
    CU_ASSERT_EQUAL(prepared_count(c, sql), 1);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM pg_prepared_statements"), 3);
    /* A statement that fails to prepare is not cached and reports the error. */
    CU_ASSERT_EQUAL(db_exec(c, "SELEKT 1", 0, NULL, NULL, &e), ERR_INTERNAL);
    CU_ASSERT_STRING_EQUAL(db_last_sqlstate(c), "42601");
    CU_ASSERT_EQUAL(prepared_count(c, "SELEKT 1"), 0);
    db_release(p, c);
    db_pool_free(p);
}

static void test_sqlstate_mapping(void)
{
    db_pool *p = mkpool(conninfo, NULL, 1, 1000, 300, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    db_conn *c;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_exec_script(c,
                                   "DROP TABLE IF EXISTS child; DROP TABLE IF EXISTS parent;"
                                   "CREATE TABLE parent (id int PRIMARY KEY, email text "
                                   "CONSTRAINT parent_email_key UNIQUE, n int CHECK (n > 0));"
                                   "CREATE TABLE child (pid int REFERENCES parent(id))",
                                   &e),
                    ERR_OK);
    const char *ins = "INSERT INTO parent VALUES ($1::int, $2, $3::int)";
    const char *a[] = {"1", "a@example.com", "1"};
    const char *b[] = {"2", "a@example.com", "1"};
    const char *neg[] = {"3", "c@example.com", "-1"};
    CU_ASSERT_EQUAL(db_exec(c, ins, 3, a, NULL, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_last_sqlstate(c)[0], '\0');
    CU_ASSERT_EQUAL(db_exec(c, ins, 3, b, NULL, &e), ERR_ALREADY_EXISTS);
    CU_ASSERT_STRING_EQUAL(db_last_sqlstate(c), "23505");
    CU_ASSERT_STRING_EQUAL(db_last_constraint(c), "parent_email_key");
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "23505"));
    CU_ASSERT_PTR_NULL(strstr(e.msg, "a@example.com")); /* no DETAIL with row values */
    CU_ASSERT_EQUAL(db_exec(c, ins, 3, neg, NULL, &e), ERR_FAILED_PRECONDITION);
    CU_ASSERT_STRING_EQUAL(db_last_sqlstate(c), "23514");
    const char *orphan[] = {"99"};
    CU_ASSERT_EQUAL(db_exec(c, "INSERT INTO child VALUES ($1::int)", 1, orphan, NULL, &e),
                    ERR_FAILED_PRECONDITION);
    CU_ASSERT_STRING_EQUAL(db_last_sqlstate(c), "23503");
    long long t0 = ts_now_ms();
    CU_ASSERT_EQUAL(db_exec(c, "SELECT pg_sleep(5)", 0, NULL, NULL, &e), ERR_DEADLINE_EXCEEDED);
    CU_ASSERT(ts_now_ms() - t0 < 2000); /* statement_timeout 300 ms was set on connect */
    CU_ASSERT_STRING_EQUAL(db_last_sqlstate(c), "57014");
    CU_ASSERT_EQUAL(db_exec(c, "SELECT * FROM no_such_table", 0, NULL, NULL, &e), ERR_INTERNAL);
    /* A serialization failure raised by the server maps to ABORTED (retryable). */
    CU_ASSERT_EQUAL(
        db_exec_script(c, "DO $$BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END$$", &e),
        ERR_ABORTED);
    CU_ASSERT_EQUAL(scalar(c, "SELECT 7"), 7); /* the connection is still fine */
    db_release(p, c);
    db_pool_free(p);
}

/* A connection the server killed is reported UNAVAILABLE and replaced on the next acquire. */
static void test_broken_connection_replaced(void)
{
    db_pool *p = mkpool(conninfo, NULL, 1, 1000, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    db_conn *c;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    long pid = scalar(c, "SELECT pg_backend_pid()");
    CU_ASSERT(pid > 0);
    CU_ASSERT_EQUAL(db_begin(c, &e), ERR_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%ld)", pid);
    CU_ASSERT_EQUAL(ts_psql("t_db", sql), 0);
    usleep(100000);
    CU_ASSERT_EQUAL(db_exec(c, "SELECT 1", 0, NULL, NULL, &e), ERR_UNAVAILABLE);
    db_release(p, c);

    db_pool_stats st;
    db_pool_stats_get(p, &st);
    CU_ASSERT_EQUAL(st.idle, 0); /* closed at release */
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    long pid2 = scalar(c, "SELECT pg_backend_pid()");
    CU_ASSERT(pid2 > 0 && pid2 != pid);
    db_release(p, c);
    db_pool_stats_get(p, &st);
    CU_ASSERT_EQUAL(st.reconnects, 1);

    /* Killed while idle in the pool: replaced before it is handed out, the caller sees no error. */
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%ld)", pid2);
    CU_ASSERT_EQUAL(ts_psql("t_db", sql), 0);
    usleep(100000);
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    long pid3 = scalar(c, "SELECT pg_backend_pid()");
    CU_ASSERT(pid3 > 0 && pid3 != pid2);
    /* search_path and application_name are set on the new connection too */
    db_result *r = NULL;
    CU_ASSERT_EQUAL(db_exec(c, "SELECT current_setting('application_name')", 0, NULL, &r, &e),
                    ERR_OK);
    CU_ASSERT_STRING_EQUAL(db_result_get(r, 0, 0), "test_db");
    db_result_free(r);
    db_release(p, c);
    db_pool_free(p);
}

static void test_search_path_and_role(void)
{
    db_pool *p = mkpool(user_conn, "users", 1, 1000, 1234, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    db_conn *c;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    db_result *r = NULL;
    CU_ASSERT_EQUAL(db_exec(c,
                            "SELECT current_schema(), current_user, "
                            "current_setting('statement_timeout')",
                            0, NULL, &r, &e),
                    ERR_OK);
    CU_ASSERT_STRING_EQUAL(db_result_get(r, 0, 0), "users");
    CU_ASSERT_STRING_EQUAL(db_result_get(r, 0, 1), "user_svc");
    CU_ASSERT_STRING_EQUAL(db_result_get(r, 0, 2), "1234ms");
    db_result_free(r);
    db_release(p, c);
    db_pool_free(p);
}

static char *read_fd_all(int fd)
{
    off_t end = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)end + 1);
    if (pread(fd, buf, (size_t)end, 0) != end)
        buf[0] = '\0';
    return buf;
}

static void test_slow_query_log(void)
{
    db_pool *p = mkpool(conninfo, NULL, 1, 1000, 0, 50);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    db_conn *c;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    char path[] = "/tmp/test_db_log_XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    unlink(path);
    log_set_fd(fd);
    log_ctx ctx = {.request_id = "req-slow-1"};
    db_set_log_ctx(c, &ctx);
    const char *pv[] = {"sekret-param-value"};
    CU_ASSERT_EQUAL(db_exec(c,
                            "SELECT pg_sleep(0.12), length($1::text)  -- a comment that is long "
                            "enough to be cut at eighty characters XXXXXXXXXXXXXXXXXXXX",
                            1, pv, NULL, &e),
                    ERR_OK);
    CU_ASSERT_EQUAL(db_exec(c, "SELECT 1", 0, NULL, NULL, &e), ERR_OK); /* fast: not logged */
    log_set_fd(2);
    char *out = read_fd_all(fd);
    close(fd);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"msg\":\"slow query\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"level\":\"warn\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"request_id\":\"req-slow-1\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"duration_ms\":1"));
    CU_ASSERT_PTR_NOT_NULL(
        strstr(out, "\"statement\":\"SELECT pg_sleep(0.12), length($1::text) -- a comment"));
    CU_ASSERT_PTR_NULL(strstr(out, "XXXX"));
    CU_ASSERT_PTR_NULL(strstr(out, "sekret"));
    CU_ASSERT_PTR_NULL(strstr(out, "SELECT 1\""));
    int lines = 0;
    for (char *s = out; *s; s++)
        lines += *s == '\n';
    CU_ASSERT_EQUAL(lines, 1);
    free(out);
    db_release(p, c);
    db_pool_free(p);
}

static void test_migrations_twice(void)
{
    db_pool *p = mkpool(user_conn, "users", 1, 1000, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    /* Neither migration is idempotent: running either twice would fail or duplicate rows. */
    db_migration migs[] = {
        {"0001_items", "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);"},
        {"0002_seed", "INSERT INTO items VALUES (1, 'one');"},
        {"0003_more", "INSERT INTO items VALUES (2, 'two');"},
    };
    err_info e;
    CU_ASSERT_EQUAL_FATAL(db_migrate(p, "users", migs, 2, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_migrate(p, "users", migs, 2, &e), ERR_OK);
    db_conn *c;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM users.schema_migrations"), 2);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM items"), 1);
    db_release(p, c);

    /* A new migration is applied alone, after the recorded ones. */
    CU_ASSERT_EQUAL(db_migrate(p, "users", migs, 3, &e), ERR_OK);
    /* A failing migration: reported by name, not recorded, its changes rolled back. */
    db_migration bad[] = {
        migs[0], migs[1], migs[2], {"0004_bad", "INSERT INTO items VALUES (3, 'three'); SELEKT;"}};
    CU_ASSERT_EQUAL(db_migrate(p, "users", bad, 4, &e), ERR_INTERNAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "0004_bad"));
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM users.schema_migrations"), 3);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM items"), 2);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM users.schema_migrations WHERE name = "
                              "'0003_more' AND applied_at <= now()"),
                    1);
    /* The advisory lock was released: a session can take it at once. */
    CU_ASSERT_EQUAL(scalar(c, "SELECT pg_try_advisory_lock(hashtext('users'))::int"), 1);
    CU_ASSERT_EQUAL(scalar(c, "SELECT pg_advisory_unlock(hashtext('users'))::int"), 1);
    db_release(p, c);
    db_pool_free(p);
}

/* Two processes migrate the same schema at the same moment. The first migration sleeps, then
 * creates a table without IF NOT EXISTS: without the advisory lock both would run it and one would
 * fail. */
static void test_migrations_concurrent(void)
{
    static const db_migration migs[] = {
        {"0001_slow_create", "SELECT pg_sleep(0.4); CREATE TABLE conc (id int);"},
        {"0002_seed", "INSERT INTO conc VALUES (1);"},
    };
    int gate[2];
    CU_ASSERT_FATAL(pipe(gate) == 0);
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        CU_ASSERT_FATAL(kids[i] >= 0);
        if (kids[i] == 0) {
            close(gate[1]);
            char b;
            if (read(gate[0], &b, 1) < 0) /* returns 0 when the parent opens the gate */
                _exit(3);
            db_pool *p = mkpool(perm_conn, "permissions", 1, 1000, 0, 0);
            if (!p)
                _exit(4);
            err_info e;
            err_code rc = db_migrate(p, "permissions", migs, 2, &e);
            if (rc != ERR_OK)
                fprintf(stderr, "child %d: db_migrate: %s\n", i, e.msg);
            db_pool_free(p);
            _exit(rc == ERR_OK ? 0 : 1);
        }
    }
    close(gate[0]);
    long long t0 = ts_now_ms();
    close(gate[1]); /* both children start now */
    for (int i = 0; i < 2; i++) {
        int status = 0;
        CU_ASSERT_EQUAL(waitpid(kids[i], &status, 0), kids[i]);
        CU_ASSERT_TRUE(WIFEXITED(status));
        CU_ASSERT_EQUAL(WEXITSTATUS(status), 0);
    }
    /* One waited for the other under the lock: about one migration time, not zero. */
    CU_ASSERT(ts_now_ms() - t0 >= 400);

    db_pool *p = mkpool(perm_conn, "permissions", 1, 1000, 0, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    db_conn *c;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM permissions.schema_migrations"), 2);
    CU_ASSERT_EQUAL(scalar(c, "SELECT count(*) FROM conc"), 1);
    db_release(p, c);
    db_pool_free(p);
}

int main(void)
{
    snprintf(conninfo, sizeof conninfo, "%s", ts_fresh_db("t_db", "postgres"));
    snprintf(user_conn, sizeof user_conn, "%s", ts_db_conninfo("t_db", "user_svc"));
    snprintf(perm_conn, sizeof perm_conn, "%s", ts_db_conninfo("t_db", "permission_svc"));
    static const ts_case cases[] = {
        {"bad_conninfo", test_bad_conninfo},
        {"pool_exhaustion", test_pool_exhaustion},
        {"pool_waiter_gets_released_conn", test_pool_waiter_gets_released_conn},
        {"pool_concurrency", test_pool_concurrency},
        {"transactions", test_transactions},
        {"prepared_reuse", test_prepared_reuse},
        {"sqlstate_mapping", test_sqlstate_mapping},
        {"broken_connection_replaced", test_broken_connection_replaced},
        {"search_path_and_role", test_search_path_and_role},
        {"slow_query_log", test_slow_query_log},
        {"migrations_twice", test_migrations_twice},
        {"migrations_concurrent", test_migrations_concurrent},
        {NULL, NULL},
    };
    return ts_main("db", cases);
}
