/* Unit tests for gateway/errors: HTTP mapping and the error body (details as google.rpc types). */
#include <jansson.h>
#include <string.h>

#include "errors.h"
#include "test_support.h"

static void test_mapping(void)
{
    CU_ASSERT_EQUAL(errors_http_status(ERR_INVALID_ARGUMENT), 400);
    CU_ASSERT_EQUAL(errors_http_status(ERR_FAILED_PRECONDITION), 400);
    CU_ASSERT_EQUAL(errors_http_status(ERR_OUT_OF_RANGE), 400);
    CU_ASSERT_EQUAL(errors_http_status(ERR_UNAUTHENTICATED), 401);
    CU_ASSERT_EQUAL(errors_http_status(ERR_PERMISSION_DENIED), 403);
    CU_ASSERT_EQUAL(errors_http_status(ERR_NOT_FOUND), 404);
    CU_ASSERT_EQUAL(errors_http_status(ERR_ALREADY_EXISTS), 409);
    CU_ASSERT_EQUAL(errors_http_status(ERR_ABORTED), 409);
    CU_ASSERT_EQUAL(errors_http_status(ERR_RESOURCE_EXHAUSTED), 429);
    CU_ASSERT_EQUAL(errors_http_status(ERR_CANCELLED), 499);
    CU_ASSERT_EQUAL(errors_http_status(ERR_UNKNOWN), 500);
    CU_ASSERT_EQUAL(errors_http_status(ERR_INTERNAL), 500);
    CU_ASSERT_EQUAL(errors_http_status(ERR_DATA_LOSS), 500);
    CU_ASSERT_EQUAL(errors_http_status(ERR_UNIMPLEMENTED), 501);
    CU_ASSERT_EQUAL(errors_http_status(ERR_UNAVAILABLE), 503);
    CU_ASSERT_EQUAL(errors_http_status(ERR_DEADLINE_EXCEEDED), 504);
}

static void test_body(void)
{
    arena *a = arena_new(0);
    err_info e;
    err_clear(&e);
    err_violation_add(&e, "email", "must contain \"@\"");
    err_violation_add(&e, "password", "too short");
    e.retry_after_s = 7;
    size_t len = 0;
    char *b = errors_body(a, &e, "rid-1", &len);
    CU_ASSERT_EQUAL(len, strlen(b));
    json_error_t je;
    json_t *j = json_loads(b, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "code")), 3);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "status")), "INVALID_ARGUMENT");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "request_id")), "rid-1");
    json_t *d = json_object_get(j, "details");
    CU_ASSERT_EQUAL(json_array_size(d), 2);
    json_t *br = json_array_get(d, 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(br, "@type")),
                           "type.googleapis.com/google.rpc.BadRequest");
    json_t *fv = json_object_get(br, "field_violations");
    CU_ASSERT_EQUAL(json_array_size(fv), 2);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(fv, 0), "description")),
                           "must contain \"@\"");
    json_t *ri = json_array_get(d, 1);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(ri, "retry_delay")), "7s");
    json_decref(j);

    err_clear(&e);
    err_set(&e, ERR_NOT_FOUND, "no route");
    b = errors_body(a, &e, "x", &len);
    j = json_loads(b, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "details")), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "message")), "no route");
    json_decref(j);
    arena_free(a);
}

int main(void)
{
    static const ts_case cases[] = {{"mapping", test_mapping}, {"body", test_body}, {NULL, NULL}};
    return ts_main("gateway_errors", cases);
}
