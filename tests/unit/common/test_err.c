/* Unit tests for err: code mapping and the violation buffer. */
#include "common/err.h"

#include <string.h>

#include "test_support.h"

static void test_codes_match_grpc(void)
{
    CU_ASSERT_EQUAL(ERR_NOT_FOUND, 5);
    CU_ASSERT_EQUAL(ERR_UNAUTHENTICATED, 16);
    CU_ASSERT_STRING_EQUAL(err_str(ERR_ALREADY_EXISTS), "ALREADY_EXISTS");
    CU_ASSERT_EQUAL(err_from_str("ABORTED"), ERR_ABORTED);
    CU_ASSERT_EQUAL(err_from_str("NOPE"), -1);
}

static void test_http_mapping(void)
{
    CU_ASSERT_EQUAL(err_to_http(ERR_INVALID_ARGUMENT), 400);
    CU_ASSERT_EQUAL(err_to_http(ERR_FAILED_PRECONDITION), 400);
    CU_ASSERT_EQUAL(err_to_http(ERR_OUT_OF_RANGE), 400);
    CU_ASSERT_EQUAL(err_to_http(ERR_UNAUTHENTICATED), 401);
    CU_ASSERT_EQUAL(err_to_http(ERR_PERMISSION_DENIED), 403);
    CU_ASSERT_EQUAL(err_to_http(ERR_NOT_FOUND), 404);
    CU_ASSERT_EQUAL(err_to_http(ERR_ALREADY_EXISTS), 409);
    CU_ASSERT_EQUAL(err_to_http(ERR_ABORTED), 409);
    CU_ASSERT_EQUAL(err_to_http(ERR_RESOURCE_EXHAUSTED), 429);
    CU_ASSERT_EQUAL(err_to_http(ERR_CANCELLED), 499);
    CU_ASSERT_EQUAL(err_to_http(ERR_UNKNOWN), 500);
    CU_ASSERT_EQUAL(err_to_http(ERR_DATA_LOSS), 500);
    CU_ASSERT_EQUAL(err_to_http(ERR_UNIMPLEMENTED), 501);
    CU_ASSERT_EQUAL(err_to_http(ERR_UNAVAILABLE), 503);
    CU_ASSERT_EQUAL(err_to_http(ERR_DEADLINE_EXCEEDED), 504);
    CU_ASSERT_EQUAL(err_to_http((err_code)99), 500);
}

static void test_violations(void)
{
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL(err_violation_add(&e, "email", "must contain %s", "@"), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(e.nviolations, 1);
    CU_ASSERT_STRING_EQUAL(e.violations[0].field, "email");
    CU_ASSERT_STRING_EQUAL(e.violations[0].description, "must contain @");
    for (int i = 0; i < 40; i++)
        err_violation_add(&e, "x", "y");
    CU_ASSERT_EQUAL(e.nviolations, ERR_MAX_VIOLATIONS);
    err_set(&e, ERR_NOT_FOUND, "user %d", 7);
    err_prefix(&e, "repo: ");
    CU_ASSERT_STRING_EQUAL(e.msg, "repo: user 7");
    CU_ASSERT_EQUAL(err_set(NULL, ERR_INTERNAL, "x"), ERR_INTERNAL);
}

int main(void)
{
    static const ts_case cases[] = {{"codes match gRPC", test_codes_match_grpc},
                                    {"http mapping", test_http_mapping},
                                    {"violations", test_violations},
                                    {NULL, NULL}};
    return ts_main("err", cases);
}
