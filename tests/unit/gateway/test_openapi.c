/* Unit tests for gateway/openapi: every route of the table appears, with schemas and security. */
#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "openapi.h"
#include "routes.h"
#include "test_support.h"

static void test_document(void)
{
    size_t len = 0;
    char *doc = openapi_build(&len);
    json_error_t je;
    json_t *j = json_loads(doc, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "openapi")), "3.0.3");
    json_t *paths = json_object_get(j, "paths");
    const char *must[] = {"/health",
                          "/ready",
                          "/metrics",
                          "/.well-known/jwks.json",
                          "/openapi.json",
                          "/v1/users/{id}",
                          "/v1/roles/{name}",
                          "/v1/permissions:check",
                          NULL};
    for (int i = 0; must[i]; i++)
        CU_ASSERT_PTR_NOT_NULL(json_object_get(paths, must[i]));
    json_t *me = json_object_get(json_object_get(paths, "/v1/users/me"), "get");
    CU_ASSERT_PTR_NOT_NULL_FATAL(me);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(me, "security")), 1);
    json_t *reg = json_object_get(json_object_get(paths, "/v1/auth/register"), "post");
    CU_ASSERT_PTR_NOT_NULL_FATAL(reg);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(json_object_get(reg, "responses"), "201"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(reg, "requestBody"));
    json_t *schemas = json_object_get(json_object_get(j, "components"), "schemas");
    CU_ASSERT_PTR_NOT_NULL(json_object_get(schemas, "Error"));
    json_t *user = json_object_get(schemas, "user.v1.User");
    CU_ASSERT_PTR_NOT_NULL_FATAL(user);
    json_t *ct = json_object_get(json_object_get(user, "properties"), "create_time");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(ct, "format")), "date-time");
    json_t *st = json_object_get(json_object_get(user, "properties"), "status");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(st, "enum")), 3);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(
        json_object_get(json_object_get(j, "components"), "securitySchemes"), "bearerAuth"));
    /* count operations = routes */
    size_t n, ops = 0;
    routes_table(&n);
    const char *k;
    json_t *v;
    json_object_foreach(paths, k, v) ops += json_object_size(v);
    CU_ASSERT_EQUAL(ops, n);
    /* GET and PATCH of one user share a path item (PATCH binds user.id, GET binds id). */
    json_t *uid = json_object_get(paths, "/v1/users/{id}");
    CU_ASSERT_PTR_NOT_NULL(json_object_get(uid, "get"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(uid, "patch"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(uid, "delete"));
    /* No two templated paths may differ only in their parameter names (OpenAPI 3 rule). */
    char seen[64][128];
    size_t nseen = 0;
    json_object_foreach(paths, k, v)
    {
        char norm[128];
        size_t o = 0;
        for (const char *c = k; *c && o + 3 < sizeof norm; c++) {
            if (*c == '{') {
                norm[o++] = '{';
                norm[o++] = '}';
                c = strchr(c, '}');
            } else {
                norm[o++] = *c;
            }
        }
        norm[o] = 0;
        for (size_t i = 0; i < nseen; i++)
            CU_ASSERT_STRING_NOT_EQUAL(seen[i], norm);
        if (nseen < 64)
            snprintf(seen[nseen++], sizeof seen[0], "%s", norm);
    }
    /* list users has query parameters */
    json_t *lu = json_object_get(json_object_get(paths, "/v1/users"), "get");
    CU_ASSERT(json_array_size(json_object_get(lu, "parameters")) >= 4);
    json_decref(j);
    free(doc);
}

int main(void)
{
    static const ts_case cases[] = {{"document", test_document}, {NULL, NULL}};
    return ts_main("gateway_openapi", cases);
}
