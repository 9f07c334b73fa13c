/* test_support: a CUnit main that fails the process on any failed assertion, and harness access. */
#ifndef TEST_SUPPORT_H
#define TEST_SUPPORT_H

#include <CUnit/CUnit.h>

typedef struct ts_case {
    const char *name;
    void (*fn)(void);
} ts_case;

/* Runs the cases (NULL-terminated by name) as one suite; returns 0 only when every assertion
 * passed and every case ran (CU_basic_run_tests alone reports success even on failures). */
int ts_main(const char *suite, const ts_case *cases);

/* Harness variables (set by tests/support/with-harness from the running harness): PGHOST, PGPORT,
 * REDIS_PORT, ... NULL when unset. ts_need_env aborts the test program with a clear message. */
const char *ts_env(const char *name);
const char *ts_need_env(const char *name);

/* libpq conninfo for the harness PostgreSQL as `role` (password-less on loopback), database
 * identity. */
const char *ts_pg_conninfo(const char *role);
/* "redis://127.0.0.1:<REDIS_PORT>/0" */
const char *ts_redis_url(void);

/* A fresh database named `name` (dropped first if it exists) in the harness cluster, with
 * deploy/postgres/init.sql applied; returns the conninfo for `role` in it. Each test program uses
 * its own database so programs never see each other's rows. Aborts on failure. */
const char *ts_fresh_db(const char *name, const char *role);
/* conninfo for role in database dbname (already created). */
const char *ts_db_conninfo(const char *dbname, const char *role);
/* Runs SQL as the superuser in dbname; returns psql's exit status. */
int ts_psql(const char *dbname, const char *sql);

/* "redis://127.0.0.1:<REDIS_PORT>/<db>"; the harness Redis has 64 databases. Ranges by program:
 * common 1-9, user 10-19, permission 20-29, auth 30-39, gateway/e2e 40-49, fault 50-63.
 * ts_redis_flush empties that database. */
const char *ts_redis_url_db(int db);
int ts_redis_flush(int db);

/* A TCP port on 127.0.0.1 that is free now, below 32768 (outside the ephemeral range). */
int ts_free_port(void);

/* Starts a program (argv[0] a path) with extra environment entries "K=V" (NULL-terminated, may be
 * NULL) added to ours; stdout/stderr go to log_path (appended) when not NULL. Returns the pid. */
int ts_spawn(char *const argv[], char *const extra_env[], const char *log_path);
/* Waits until 127.0.0.1:port accepts a TCP connection; returns 0, or -1 after timeout_ms. */
int ts_wait_port(int port, int timeout_ms);
/* SIGTERM (or sig), then wait up to timeout_ms, then SIGKILL; returns the exit status (or -1). */
int ts_stop(int pid, int sig, int timeout_ms);
/* Path of a built binary: $IDENTITY_BUILD_DIR/bin/<name>. */
const char *ts_bin(const char *name);

/* Runs `tests/support/harness <cmd>` on the running harness (fault tests: "pg-restart",
 * "redis-stop", "redis-start", "status"); returns its exit status. A test that stops a server must
 * start it again on every path, failed assertions included (later tests share the harness). */
int ts_harness(const char *cmd);
/* CLOCK_MONOTONIC in milliseconds. */
long long ts_now_ms(void);

#endif
