/* Unit tests for gateway/routes: template matching, literal precedence, 404 vs 405 + Allow. */
#include <string.h>

#include "routes.h"
#include "test_support.h"

static void find(const char *m, const char *p, routes_match *out)
{
    routes_find(m, p, out);
}

static void test_literal_beats_param(void)
{
    routes_match m;
    find("GET", "/v1/users/me", &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.route);
    CU_ASSERT_STRING_EQUAL(m.route->op, "GetMe");
    CU_ASSERT_EQUAL(m.nparams, 0);
    find("GET", "/v1/users/0b8e3a52-6f7c-4c59-9a4e-0d3c5f0e2a11", &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.route);
    CU_ASSERT_STRING_EQUAL(m.route->op, "GetUser");
    CU_ASSERT_EQUAL(m.nparams, 1);
    CU_ASSERT_EQUAL(m.params[0].field_len, 2);
    CU_ASSERT_NSTRING_EQUAL(m.params[0].field, "id", 2);
    CU_ASSERT_EQUAL(m.params[0].kind, 'u');
    CU_ASSERT_EQUAL(m.params[0].value_len, 36);
}

static void test_custom_verbs_and_nested(void)
{
    routes_match m;
    find("GET", "/v1/users:batchGet", &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.route);
    CU_ASSERT_STRING_EQUAL(m.route->op, "BatchGetUsers");
    find("POST", "/v1/permissions:check", &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.route);
    CU_ASSERT_STRING_EQUAL(m.route->op, "Check");
    find("DELETE", "/v1/users/abc/roles/editor", &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.route);
    CU_ASSERT_STRING_EQUAL(m.route->op, "RevokeRole");
    CU_ASSERT_EQUAL(m.nparams, 2);
    CU_ASSERT_NSTRING_EQUAL(m.params[1].value, "editor", 6);
    CU_ASSERT_NSTRING_EQUAL(m.params[1].field, "role", m.params[1].field_len);
    find("PATCH", "/v1/roles/editor", &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.route);
    CU_ASSERT_NSTRING_EQUAL(m.params[0].field, "role.name", m.params[0].field_len);
}

static void test_404_and_405(void)
{
    routes_match m;
    find("GET", "/v1/nope", &m);
    CU_ASSERT_PTR_NULL(m.route);
    CU_ASSERT_STRING_EQUAL(m.allow, "");
    find("GET", "/v1/users/a/b/c/d", &m);
    CU_ASSERT_PTR_NULL(m.route);
    CU_ASSERT_STRING_EQUAL(m.allow, "");
    find("GET", "/v1/users/", &m); /* empty segment is not a parameter */
    CU_ASSERT_PTR_NULL(m.route);
    find("PUT", "/v1/users/me", &m);
    CU_ASSERT_PTR_NULL(m.route);
    CU_ASSERT_PTR_NOT_NULL(strstr(m.allow, "GET"));
    CU_ASSERT_PTR_NOT_NULL(strstr(m.allow, "PATCH"));
    CU_ASSERT_PTR_NOT_NULL(strstr(m.allow, "DELETE"));
    /* no duplicate GET although two templates match */
    const char *g = strstr(m.allow, "GET");
    CU_ASSERT_PTR_NULL(strstr(g + 3, "GET"));
    find("GET", "/v1/auth/login", &m);
    CU_ASSERT_PTR_NULL(m.route);
    CU_ASSERT_STRING_EQUAL(m.allow, "POST");
    find("DELETE", "/health", &m);
    CU_ASSERT_STRING_EQUAL(m.allow, "GET");
}

static void test_table_is_consistent(void)
{
    size_t n;
    const routes_route *t = routes_table(&n);
    CU_ASSERT(n >= 30);
    for (size_t i = 0; i < n; i++) {
        const routes_route *r = &t[i];
        CU_ASSERT(r->status == 200 || r->status == 201 || r->status == 204);
        if (r->local == LOCAL_NONE) {
            CU_ASSERT_PTR_NOT_NULL(r->rpc);
            CU_ASSERT_PTR_NOT_NULL(r->req);
            CU_ASSERT_PTR_NOT_NULL(r->resp);
        }
        if (r->rule != RULE_NONE)
            CU_ASSERT_PTR_NOT_NULL(r->perm);
        if (r->rule == RULE_SELF_OR_PERM)
            CU_ASSERT_PTR_NOT_NULL(r->self);
        if (r->rule != RULE_NONE || r->inject)
            CU_ASSERT_EQUAL(r->auth, AUTH_SIGNED_IN);
        /* each route is reachable: finding it by its own template yields itself */
        if (!strchr(r->path, '{')) {
            routes_match m;
            routes_find(r->method, r->path, &m);
            CU_ASSERT_PTR_EQUAL(m.route, r);
        }
        if (strncmp(r->path, "/v1/auth/", 9) == 0)
            CU_ASSERT(r->flags & RF_NO_STORE);
    }
}

static void test_uuid(void)
{
    CU_ASSERT_TRUE(routes_is_uuid("0b8e3a52-6f7c-4c59-9a4e-0d3c5f0e2a11", 36));
    CU_ASSERT_TRUE(routes_is_uuid("0B8E3A52-6F7C-4C59-9A4E-0D3C5F0E2A11", 36));
    CU_ASSERT_FALSE(routes_is_uuid("0b8e3a52-6f7c-4c59-9a4e-0d3c5f0e2a1", 35));
    CU_ASSERT_FALSE(routes_is_uuid("0b8e3a52x6f7c-4c59-9a4e-0d3c5f0e2a11", 36));
    CU_ASSERT_FALSE(routes_is_uuid("gb8e3a52-6f7c-4c59-9a4e-0d3c5f0e2a11", 36));
    CU_ASSERT_FALSE(routes_is_uuid("me", 2));
}

int main(void)
{
    static const ts_case cases[] = {{"literal beats param", test_literal_beats_param},
                                    {"custom verbs and nested", test_custom_verbs_and_nested},
                                    {"404 and 405", test_404_and_405},
                                    {"table consistent", test_table_is_consistent},
                                    {"uuid", test_uuid},
                                    {NULL, NULL}};
    return ts_main("gateway_routes", cases);
}
