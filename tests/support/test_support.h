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

/* libpq conninfo for the harness PostgreSQL as `role` (password-less on loopback), database identity. */
const char *ts_pg_conninfo(const char *role);
/* "redis://127.0.0.1:<REDIS_PORT>/0" */
const char *ts_redis_url(void);

#endif
