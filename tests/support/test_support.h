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
 * NULL) added to ours; stdout/stderr go to log_path (appended) when not NULL. Returns the pid.
 * The child gets PR_SET_PDEATHSIG = SIGKILL, so it dies with a crashed test program. Linux sends
 * it when the forking *thread* ends: spawn from the main thread (or one that outlives the child).
 */
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

/* ---------- the whole stack: permission, user, auth services + gateway ---------- */

typedef enum ts_svc { TS_PERM, TS_USER, TS_AUTH, TS_GW, TS_NSVC } ts_svc;

#define TS_STACK_MAX_ENV 32

typedef struct ts_stack_opts {
    const char *dbname;      /* fresh database (ts_fresh_db), e.g. "t_fault_breaker" */
    int redis_db;            /* every binary uses this Redis db (flushed at start) */
    const char *admin_email; /* BOOTSTRAP_ADMIN_EMAIL / _PASSWORD for auth (NULL = none) */
    const char *admin_password;
    /* Extra "K=V" entries (NULL-terminated, may be NULL): for all four, then per binary (later
     * entries win: they are put in the environment after the defaults). */
    char *const *env_all;
    char *const *env[TS_NSVC];
    int ready_timeout_ms; /* wait for the gateway's /ready 200 (default 30000) */
} ts_stack_opts;

typedef struct ts_stack {
    char dir[128];             /* private temp dir: keys/ and stack.log */
    char log[256];             /* every binary's output (appended) */
    int port[TS_NSVC];         /* gRPC ports of the services, HTTP port of the gateway */
    int metrics_port[TS_NSVC]; /* services' METRICS_ADDR (0 for the gateway: /metrics on port) */
    char addr[TS_NSVC][32];    /* "127.0.0.1:<port>" */
    int pid[TS_NSVC];          /* 0 when not running */
    char envbuf[TS_NSVC][TS_STACK_MAX_ENV][512];
    char *envp[TS_NSVC][TS_STACK_MAX_ENV + 1];
} ts_stack;

/* Starts the four binaries on free loopback ports against a fresh database and waits for the
 * gateway's /ready; returns 0, or -1 (with a message on stderr; whatever started is stopped). */
int ts_stack_start(ts_stack *s, const ts_stack_opts *o);
/* (Re)starts one binary with the same ports and environment; waits until its port accepts
 * connections (timeout_ms); returns 0 or -1. */
int ts_stack_spawn(ts_stack *s, ts_svc which, int timeout_ms);
/* Stops one binary with sig (SIGTERM: waits up to timeout_ms, then SIGKILL); returns its exit
 * status as ts_stop does (0 = clean exit); -2 when it was not running. */
int ts_stack_kill(ts_stack *s, ts_svc which, int sig, int timeout_ms);
/* Stops everything still running (SIGTERM, 15 s each); returns the number that did not exit 0.
 * Then removes the key dir; the log stays when keep_log (print its path). */
int ts_stack_stop(ts_stack *s, int keep_log);

#endif
