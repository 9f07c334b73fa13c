/* Unit tests for gateway/transcode: body mapping, path/query parameters, claims, masks, If-Match,
 * cookies, and the gateway-specific rejections (bad UUID, '*' in a check). */
#include <string.h>

#include "auth/v1/auth.pb-c.h"
#include "permission/v1/permission.pb-c.h"
#include "test_support.h"
#include "transcode.h"
#include "user/v1/user.pb-c.h"

#define UID "0b8e3a52-6f7c-4c59-9a4e-0d3c5f0e2a11"
#define SUB "11111111-2222-4333-8444-555555555555"

static err_code run(const char *method, const char *path, const char *body, transcode_input *in,
                    arena *a, ProtobufCMessage **out, err_info *e)
{
    routes_match m;
    routes_find(method, path, &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.route);
    in->body = body;
    in->body_len = body ? strlen(body) : 0;
    err_clear(e);
    return transcode_request(m.route, &m, in, a, out, e);
}

static void test_patch_user(void)
{
    arena *a = arena_new(0);
    transcode_input in = {0};
    in.sub = SUB;
    ProtobufCMessage *out = NULL;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(
        run("PATCH", "/v1/users/" UID,
            "{\"displayName\":\"Ann\",\"status\":\"USER_STATUS_DISABLED\",\"id\":\"x\"}", &in, a,
            &out, &e),
        ERR_OK);
    User__V1__UpdateUserRequest *u = (void *)out;
    CU_ASSERT_PTR_NOT_NULL_FATAL(u->user);
    CU_ASSERT_STRING_EQUAL(u->user->id, UID); /* the path wins over the body */
    CU_ASSERT_STRING_EQUAL(u->user->display_name, "Ann");
    CU_ASSERT_EQUAL(u->user->status, USER__V1__USER_STATUS__USER_STATUS_DISABLED);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u->update_mask);
    CU_ASSERT_EQUAL(u->update_mask->n_paths, 2);
    CU_ASSERT_TRUE(transcode_mask_has(out, "display_name"));
    CU_ASSERT_TRUE(transcode_mask_has(out, "status"));
    CU_ASSERT_FALSE(transcode_mask_has(out, "id"));
    CU_ASSERT_STRING_EQUAL(transcode_get_str(out, "user.id"), UID);

    /* explicit ?update_mask= wins; If-Match fills etag */
    transcode_kv q[] = {{"update_mask", "display_name"}};
    in.query = q;
    in.nquery = 1;
    in.if_match = "etag-1";
    CU_ASSERT_EQUAL_FATAL(run("PATCH", "/v1/users/me",
                              "{\"display_name\":\"B\",\"status\":\"USER_STATUS_ACTIVE\"}", &in, a,
                              &out, &e),
                          ERR_OK);
    u = (void *)out;
    CU_ASSERT_STRING_EQUAL(u->user->id, SUB);
    CU_ASSERT_EQUAL(u->update_mask->n_paths, 1);
    CU_ASSERT_FALSE(transcode_mask_has(out, "status"));
    CU_ASSERT_STRING_EQUAL(u->user->etag, "etag-1");
    /* etag in the body wins over If-Match */
    in.nquery = 0;
    CU_ASSERT_EQUAL_FATAL(run("PATCH", "/v1/users/me", "{\"display_name\":\"B\",\"etag\":\"body\"}",
                              &in, a, &out, &e),
                          ERR_OK);
    CU_ASSERT_STRING_EQUAL(((User__V1__UpdateUserRequest *)out)->user->etag, "body");
    /* nothing to update */
    CU_ASSERT_EQUAL(run("PATCH", "/v1/users/me", "{\"etag\":\"x\"}", &in, a, &out, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_STRING_EQUAL(e.violations[0].field, "update_mask");
    arena_free(a);
}

static void test_bad_inputs(void)
{
    arena *a = arena_new(0);
    transcode_input in = {0};
    in.sub = SUB;
    ProtobufCMessage *out = NULL;
    err_info e;
    CU_ASSERT_EQUAL(run("GET", "/v1/users/not-a-uuid", NULL, &in, a, &out, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_STRING_EQUAL(e.violations[0].field, "id");
    CU_ASSERT_EQUAL(run("DELETE", "/v1/auth/sessions/me", NULL, &in, a, &out, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(run("POST", "/v1/auth/login", "{\"email\":", &in, a, &out, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(run("POST", "/v1/auth/login", "[1,2]", &in, a, &out, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(run("POST", "/v1/auth/login", "{\"email\":5}", &in, a, &out, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(run("PATCH", "/v1/users/me", "{\"status\":\"NOPE\"}", &in, a, &out, &e),
                    ERR_INVALID_ARGUMENT);
    transcode_kv q[] = {{"page_size", "abc"}};
    in.query = q;
    in.nquery = 1;
    CU_ASSERT_EQUAL(run("GET", "/v1/users", NULL, &in, a, &out, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(e.nviolations >= 1, 1);
    in.nquery = 0;
    /* a '*' in a permission to check */
    CU_ASSERT_EQUAL(
        run("POST", "/v1/permissions:check", "{\"permission\":\"users:*\"}", &in, a, &out, &e),
        ERR_INVALID_ARGUMENT);
    CU_ASSERT_STRING_EQUAL(e.violations[0].field, "permission");
    CU_ASSERT_EQUAL(run("POST", "/v1/permissions:check", "{}", &in, a, &out, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(run("POST", "/v1/permissions:batchCheck", "{\"permissions\":[\"a:b\",\"*\"]}",
                        &in, a, &out, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(run("POST", "/v1/permissions:check",
                        "{\"user_id\":\"zz\",\"permission\":\"a:b\"}", &in, a, &out, &e),
                    ERR_INVALID_ARGUMENT);
    arena_free(a);
}

static void test_fill_ins(void)
{
    arena *a = arena_new(0);
    transcode_input in = {0};
    in.sub = SUB;
    in.sid = "sess-1";
    in.jti = "jti-1";
    ProtobufCMessage *out = NULL;
    err_info e;
    /* claims win over the body; the cookie fills an absent refresh token */
    in.cookie_refresh = "cookie-tok";
    CU_ASSERT_EQUAL_FATAL(
        run("POST", "/v1/auth/logout", "{\"jti\":\"forged\",\"user_id\":\"x\"}", &in, a, &out, &e),
        ERR_OK);
    Auth__V1__LogoutRequest *lo = (void *)out;
    CU_ASSERT_STRING_EQUAL(lo->jti, "jti-1");
    CU_ASSERT_STRING_EQUAL(lo->user_id, SUB);
    CU_ASSERT_STRING_EQUAL(lo->session_id, "sess-1");
    CU_ASSERT_STRING_EQUAL(lo->refresh_token, "cookie-tok");
    CU_ASSERT_EQUAL_FATAL(
        run("POST", "/v1/auth/refresh", "{\"refreshToken\":\"body-tok\"}", &in, a, &out, &e),
        ERR_OK);
    CU_ASSERT_STRING_EQUAL(((Auth__V1__RefreshRequest *)out)->refresh_token, "body-tok");
    /* check without user_id = the caller */
    CU_ASSERT_EQUAL_FATAL(
        run("POST", "/v1/permissions:check", "{\"permission\":\"users:read\"}", &in, a, &out, &e),
        ERR_OK);
    CU_ASSERT_STRING_EQUAL(((Permission__V1__CheckRequest *)out)->user_id, SUB);
    /* "me" in a user path parameter */
    CU_ASSERT_EQUAL_FATAL(run("GET", "/v1/users/me/roles", NULL, &in, a, &out, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(((Permission__V1__ListUserRolesRequest *)out)->user_id, SUB);
    /* assign: path + body */
    CU_ASSERT_EQUAL_FATAL(
        run("POST", "/v1/users/" UID "/roles", "{\"role\":\"editor\"}", &in, a, &out, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(((Permission__V1__AssignRoleRequest *)out)->user_id, UID);
    CU_ASSERT_STRING_EQUAL(((Permission__V1__AssignRoleRequest *)out)->role, "editor");
    /* repeated query parameter; lowerCamelCase keys; unknown keys ignored */
    transcode_kv q[] = {{"ids", UID}, {"ids", SUB}, {"cacheBuster", "1"}};
    in.query = q;
    in.nquery = 3;
    CU_ASSERT_EQUAL_FATAL(run("GET", "/v1/users:batchGet", NULL, &in, a, &out, &e), ERR_OK);
    User__V1__BatchGetUsersRequest *bg = (void *)out;
    CU_ASSERT_EQUAL(bg->n_ids, 2);
    transcode_kv q2[] = {{"pageSize", "10"}, {"show_deleted", "true"}, {"filter", "status=ACTIVE"}};
    in.query = q2;
    CU_ASSERT_EQUAL_FATAL(run("GET", "/v1/users", NULL, &in, a, &out, &e), ERR_OK);
    User__V1__ListUsersRequest *lu = (void *)out;
    CU_ASSERT_EQUAL(lu->page_size, 10);
    CU_ASSERT_TRUE(lu->show_deleted);
    CU_ASSERT_STRING_EQUAL(lu->filter, "status=ACTIVE");
    arena_free(a);
}

int main(void)
{
    static const ts_case cases[] = {{"patch user", test_patch_user},
                                    {"bad inputs", test_bad_inputs},
                                    {"fill-ins", test_fill_ins},
                                    {NULL, NULL}};
    return ts_main("gateway_transcode", cases);
}
