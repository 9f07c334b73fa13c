/* Fault test of common/db: a PostgreSQL restart (harness pg-restart) while a pool is in use heals
 * without a new pool: idle connections are replaced, a connection lost mid-transaction reports
 * UNAVAILABLE and is replaced on its next use. Runs alone (RUN_SERIAL): it restarts the server. */
#include "common/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_support.h"

static char conninfo[512];

/* Whatever happened in a test, PostgreSQL must be up for the tests that follow. */
static void ensure_pg_up(void)
{
    if (ts_harness("ensure") != 0)
        fprintf(stderr, "test_db_restart: harness ensure failed\n");
}

static err_code select_one(db_pool *p, long *pid, err_info *e)
{
    db_conn *c;
    err_code rc = db_acquire(p, 0, &c, e);
    if (rc != ERR_OK)
        return rc;
    db_result *r = NULL;
    rc = db_exec(c, "SELECT pg_backend_pid()", 0, NULL, &r, e);
    if (rc == ERR_OK && pid)
        *pid = strtol(db_result_get(r, 0, 0), NULL, 10);
    db_result_free(r);
    db_release(p, c);
    return rc;
}

/* Calls until one succeeds or 10 s pass; returns ms taken (-1 = never) and counts failures. */
static long long heal_time(db_pool *p, int *failures)
{
    long long t0 = ts_now_ms();
    *failures = 0;
    while (ts_now_ms() - t0 < 10000) {
        err_info e;
        long long c0 = ts_now_ms();
        err_code rc = select_one(p, NULL, &e);
        CU_ASSERT(ts_now_ms() - c0 < 3000); /* no call hangs */
        if (rc == ERR_OK)
            return ts_now_ms() - t0;
        CU_ASSERT_EQUAL(rc, ERR_UNAVAILABLE);
        (*failures)++;
        usleep(100000);
    }
    return -1;
}

static void test_restart_heals_idle_pool(void)
{
    db_pool_opts o = {
        .conninfo = conninfo, .size = 2, .acquire_timeout_ms = 1000, .statement_timeout_ms = 2000};
    err_info e;
    db_pool *p = db_pool_new(&o, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    long pid1 = 0;
    CU_ASSERT_EQUAL(select_one(p, &pid1, &e), ERR_OK);

    CU_ASSERT_EQUAL(ts_harness("pg-restart"), 0);
    int failures = 0;
    long long ms = heal_time(p, &failures);
    CU_ASSERT(ms >= 0 && ms < 5000);
    CU_ASSERT(failures <= 1);
    long pid2 = 0;
    CU_ASSERT_EQUAL(select_one(p, &pid2, &e), ERR_OK);
    CU_ASSERT(pid2 > 0 && pid2 != pid1);
    db_pool_stats st;
    db_pool_stats_get(p, &st);
    CU_ASSERT(st.reconnects >= 1);
    CU_ASSERT_EQUAL(st.in_use, 0);
    db_pool_free(p);
    ensure_pg_up();
}

static void test_restart_mid_transaction(void)
{
    db_pool_opts o = {.conninfo = conninfo, .size = 1, .acquire_timeout_ms = 1000};
    err_info e;
    db_pool *p = db_pool_new(&o, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    db_conn *c;
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_exec_script(c, "CREATE TABLE IF NOT EXISTS r (v int)", &e), ERR_OK);
    CU_ASSERT_EQUAL(db_begin(c, &e), ERR_OK);
    CU_ASSERT_EQUAL(db_exec(c, "INSERT INTO r VALUES (1)", 0, NULL, NULL, &e), ERR_OK);

    CU_ASSERT_EQUAL(ts_harness("pg-restart"), 0);
    /* The transaction is gone with the server: reported, never silently "committed". */
    err_code rc = db_exec(c, "INSERT INTO r VALUES (2)", 0, NULL, NULL, &e);
    CU_ASSERT_EQUAL(rc, ERR_UNAVAILABLE);
    CU_ASSERT_NOT_EQUAL(db_commit(c, &e), ERR_OK);
    db_release(p, c);

    int failures = 0;
    long long ms = heal_time(p, &failures);
    CU_ASSERT(ms >= 0 && ms < 5000);
    CU_ASSERT_EQUAL_FATAL(db_acquire(p, 0, &c, &e), ERR_OK);
    db_result *r = NULL;
    CU_ASSERT_EQUAL(db_exec(c, "SELECT count(*) FROM r", 0, NULL, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(db_result_get(r, 0, 0), "0");
    db_result_free(r);
    db_release(p, c);
    db_pool_free(p);
    ensure_pg_up();
}

/* While the server is down, calls fail within the wait (no hang), then heal once it is back. */
static void test_down_then_up(void)
{
    db_pool_opts o = {
        .conninfo = conninfo, .size = 1, .acquire_timeout_ms = 500, .connect_timeout_s = 2};
    err_info e;
    db_pool *p = db_pool_new(&o, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    /* Stop the postmaster by hand for a moment: pg-restart's stop half, then its start half. */
    CU_ASSERT_EQUAL(ts_harness("pg-stop"), 0);
    for (int i = 0; i < 3; i++) {
        long long t0 = ts_now_ms();
        CU_ASSERT_EQUAL(select_one(p, NULL, &e), ERR_UNAVAILABLE);
        CU_ASSERT(ts_now_ms() - t0 < 1500);
    }
    CU_ASSERT_EQUAL(ts_harness("pg-start"), 0);
    int failures = 0;
    long long ms = heal_time(p, &failures);
    CU_ASSERT(ms >= 0 && ms < 5000);
    db_pool_free(p);
    ensure_pg_up();
}

static void at_exit_restore(void)
{
    ensure_pg_up();
}

int main(void)
{
    snprintf(conninfo, sizeof conninfo, "%s", ts_fresh_db("t_db_restart", "postgres"));
    atexit(at_exit_restore);
    static const ts_case cases[] = {
        {"restart_heals_idle_pool", test_restart_heals_idle_pool},
        {"restart_mid_transaction", test_restart_mid_transaction},
        {"down_then_up", test_down_then_up},
        {NULL, NULL},
    };
    return ts_main("db_restart", cases);
}
