/* test_support: CUnit runner and harness environment helpers. */
#include "test_support.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>

int ts_main(const char *suite, const ts_case *cases)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite(suite, NULL, NULL);
    if (!s)
        return 2;
    for (const ts_case *c = cases; c->name; c++) {
        if (!CU_add_test(s, c->name, c->fn))
            return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    return failed == 0 && run > 0 ? 0 : 1;
}

const char *ts_env(const char *name) { return getenv(name); }

const char *ts_need_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "test needs %s: run it through ctest (the harness fixture sets it)\n", name);
        exit(2);
    }
    return v;
}

const char *ts_pg_conninfo(const char *role)
{
    static __thread char buf[256];
    snprintf(buf, sizeof buf, "host=%s port=%s user=%s dbname=identity connect_timeout=5",
             ts_need_env("PGHOST"), ts_need_env("PGPORT"), role);
    return buf;
}

const char *ts_redis_url(void)
{
    static __thread char buf[128];
    snprintf(buf, sizeof buf, "redis://127.0.0.1:%s/0", ts_need_env("REDIS_PORT"));
    return buf;
}
