/* e2e_gateway: the whole stack (permission, user, auth services + gateway) on a fresh database and
 * Redis db 40-41, driven over HTTP through every route of SPEC §2: codes, bodies, headers, the
 * authorization rules (user vs admin vs self), revocation right after logout, limits, and a few
 * hundred malformed bodies that must only ever get 4xx answers. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/jwt.h"
#include "http_client.h"
#include "test_support.h"

#define ADMIN_EMAIL "admin@e2e.test"
#define ADMIN_PASSWORD "admin-password-123"
#define T_MS 10000

static int g_port, g_port_rl;
static int g_started;
#define NEED_STACK()                                                                               \
    do {                                                                                           \
        if (!g_started) {                                                                          \
            CU_FAIL("stack not started");                                                          \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static int g_pids[8];
static int g_npids;
static char g_dir[128];
static char g_auth_addr[64], g_user_addr[64], g_perm_addr[64];
static char g_log[256];
static char g_admin[2048], g_alice[2048], g_alice_refresh[512], g_alice_id[64], g_bob[2048],
    g_bob_id[64], g_admin_id[64];

/* ---------- helpers ---------- */

typedef struct res {
    int status;
    json_t *j;
    http_resp r;
} res;

static void res_free(res *x)
{
    json_decref(x->j);
    http_resp_free(&x->r);
    memset(x, 0, sizeof *x);
}

static int call_port(int port, const char *method, const char *path, const char *token,
                     const char *body, const char *extra, res *out)
{
    size_t cap = 4096 + (extra ? strlen(extra) : 0);
    char *hdrs = malloc(cap);
    size_t n = 0;
    hdrs[0] = 0;
    if (token && *token)
        n += (size_t)snprintf(hdrs + n, cap - n, "Authorization: Bearer %s\r\n", token);
    if (extra)
        snprintf(hdrs + n, cap - n, "%s", extra);
    memset(out, 0, sizeof *out);
    http_do(port, method, path, hdrs, body, body ? strlen(body) : 0, T_MS, &out->r);
    free(hdrs);
    out->status = out->r.status;
    if (out->r.body && out->r.body_len)
        out->j = json_loads(out->r.body, 0, NULL);
    return out->status;
}

static int call(const char *method, const char *path, const char *token, const char *body, res *out)
{
    return call_port(g_port, method, path, token, body, NULL, out);
}

static const char *jstr(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

/* Status of a request, with the response discarded; prints the body when it is unexpected. */
static int st(const char *method, const char *path, const char *token, const char *body)
{
    res x;
    int s = call(method, path, token, body, &x);
    res_free(&x);
    return s;
}

static void expect(int want, const char *method, const char *path, const char *token,
                   const char *body)
{
    res x;
    int s = call(method, path, token, body, &x);
    if (s != want)
        fprintf(stderr, "  %s %s: want %d got %d: %s\n", method, path, want, s,
                x.r.body ? x.r.body : "");
    CU_ASSERT_EQUAL(s, want);
    res_free(&x);
}

/* The error body shape of SPEC §2. */
static void check_error_body(res *x, const char *status)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(x->j);
    CU_ASSERT_TRUE(json_is_integer(json_object_get(x->j, "code")));
    CU_ASSERT_STRING_EQUAL(jstr(x->j, "status"), status);
    CU_ASSERT_TRUE(json_is_string(json_object_get(x->j, "message")));
    CU_ASSERT_TRUE(json_is_array(json_object_get(x->j, "details")));
    CU_ASSERT_TRUE(strlen(jstr(x->j, "request_id")) > 0);
}

static void register_user(const char *email, const char *password, char *token, size_t tl, char *id,
                          size_t il)
{
    char body[512];
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"password\":\"%s\",\"display_name\":\"E2E\"}",
             email, password);
    res x;
    int s = call("POST", "/v1/auth/register", NULL, body, &x);
    if (s != 201)
        fprintf(stderr, "register %s: %d %s\n", email, s, x.r.body ? x.r.body : "");
    CU_ASSERT_EQUAL_FATAL(s, 201);
    snprintf(token, tl, "%s", jstr(x.j, "access_token"));
    snprintf(id, il, "%s", jstr(json_object_get(x.j, "user"), "id"));
    res_free(&x);
}

static int login(const char *email, const char *password, char *token, size_t tl, char *refresh,
                 size_t rl)
{
    char body[512];
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"password\":\"%s\"}", email, password);
    res x;
    int s = call("POST", "/v1/auth/login", NULL, body, &x);
    if (s == 200) {
        snprintf(token, tl, "%s", jstr(x.j, "access_token"));
        if (refresh)
            snprintf(refresh, rl, "%s", jstr(x.j, "refresh_token"));
    }
    res_free(&x);
    return s;
}

/* ---------- stack ---------- */

static int spawn(const char *bin, char **env)
{
    char *argv[] = {(char *)ts_bin(bin), NULL};
    int pid = ts_spawn(argv, env, g_log);
    g_pids[g_npids++] = pid;
    return pid;
}

static int wait_ready(int port, int ms)
{
    for (int waited = 0; waited < ms; waited += 200) {
        if (st("GET", "/ready", NULL, NULL) == 200 || port != g_port)
            return 0;
        usleep(200000);
    }
    return -1;
}

static void start_stack(void)
{
    const char *user_db = ts_fresh_db("t_e2e", "user_svc");
    char user_url[512], perm_url[512], auth_url[512];
    snprintf(user_url, sizeof user_url, "DATABASE_URL=%s", user_db);
    snprintf(perm_url, sizeof perm_url, "DATABASE_URL=%s",
             ts_db_conninfo("t_e2e", "permission_svc"));
    snprintf(auth_url, sizeof auth_url, "DATABASE_URL=%s", ts_db_conninfo("t_e2e", "auth_svc"));
    ts_redis_flush(40);
    ts_redis_flush(41);
    char redis[256];
    snprintf(redis, sizeof redis, "REDIS_URL=%s", ts_redis_url_db(40));

    snprintf(g_dir, sizeof g_dir, "/tmp/e2e_gateway.XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(g_dir));
    snprintf(g_log, sizeof g_log, "%s/stack.log", g_dir);
    char keydir[160], keypath[200];
    snprintf(keydir, sizeof keydir, "%s/keys", g_dir);
    mkdir(keydir, 0700);
    snprintf(keypath, sizeof keypath, "%s/20260101T000000Z.pem", keydir);
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL_FATAL(jwt_key_generate(keypath, &e), ERR_OK);

    int ports[9];
    for (int i = 0; i < 9; i++) {
    again:
        ports[i] = ts_free_port();
        for (int k = 0; k < i; k++)
            if (ports[k] == ports[i])
                goto again;
    }
    int p_auth = ports[0], p_user = ports[1], p_perm = ports[2];
    snprintf(g_auth_addr, sizeof g_auth_addr, "127.0.0.1:%d", p_auth);
    snprintf(g_user_addr, sizeof g_user_addr, "127.0.0.1:%d", p_user);
    snprintf(g_perm_addr, sizeof g_perm_addr, "127.0.0.1:%d", p_perm);
    g_port = ports[3];
    g_port_rl = ports[4];
    char l[9][64], m[3][64], a_auth[64], a_user[64], a_perm[64], kd[200];
    for (int i = 0; i < 5; i++)
        snprintf(l[i], sizeof l[i], "LISTEN_ADDR=127.0.0.1:%d", ports[i]);
    for (int i = 0; i < 3; i++)
        snprintf(m[i], sizeof m[i], "METRICS_ADDR=127.0.0.1:%d", ports[5 + i]);
    snprintf(a_auth, sizeof a_auth, "AUTH_SERVICE_ADDR=127.0.0.1:%d", p_auth);
    snprintf(a_user, sizeof a_user, "USER_SERVICE_ADDR=127.0.0.1:%d", p_user);
    snprintf(a_perm, sizeof a_perm, "PERMISSION_SERVICE_ADDR=127.0.0.1:%d", p_perm);
    snprintf(kd, sizeof kd, "JWT_KEYS_DIR=%s", keydir);
    fprintf(stderr, "e2e stack log: %s\n", g_log);

    char *perm_env[] = {l[2], m[2], perm_url, redis, "LOG_LEVEL=warn", NULL};
    spawn("permission-service", perm_env);
    char *user_env[] = {l[1], m[1], user_url, redis, "LOG_LEVEL=warn", NULL};
    spawn("user-service", user_env);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(p_perm, 20000), 0);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(p_user, 20000), 0);
    char *auth_env[] = {l[0],
                        m[0],
                        auth_url,
                        redis,
                        a_user,
                        a_perm,
                        kd,
                        "BOOTSTRAP_ADMIN_EMAIL=" ADMIN_EMAIL,
                        "BOOTSTRAP_ADMIN_PASSWORD=" ADMIN_PASSWORD,
                        "LOG_LEVEL=warn",
                        NULL};
    spawn("auth-service", auth_env);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(p_auth, 30000), 0);
    char *gw_env[] = {l[3],
                      redis,
                      a_auth,
                      a_user,
                      a_perm,
                      "RATE_LIMIT_AUTH_RPM=100000",
                      "RATE_LIMIT_ANON_RPM=100000",
                      "RATE_LIMIT_USER_RPM=100000",
                      "COOKIE_SECURE=false",
                      "CORS_ALLOWED_ORIGINS=https://app.e2e.test",
                      "MAX_BODY_BYTES=65536",
                      "LOG_LEVEL=warn",
                      NULL};
    spawn("gateway", gw_env);
    /* A second gateway with strict limits on its own Redis db, for the rate-limit test. */
    char redis_rl[256];
    snprintf(redis_rl, sizeof redis_rl, "REDIS_URL=%s", ts_redis_url_db(41));
    char *gw2_env[] = {l[4],
                       redis_rl,
                       a_auth,
                       a_user,
                       a_perm,
                       "RATE_LIMIT_AUTH_RPM=3",
                       "RATE_LIMIT_ANON_RPM=5",
                       "RATE_LIMIT_USER_RPM=5",
                       "HEADER_TIMEOUT_SEC=2",
                       "IDLE_TIMEOUT_SEC=3",
                       "LOG_LEVEL=warn",
                       NULL};
    spawn("gateway", gw2_env);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(g_port, 20000), 0);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(g_port_rl, 20000), 0);
    if (wait_ready(g_port, 30000) != 0) {
        res x;
        call("GET", "/ready", NULL, NULL, &x);
        fprintf(stderr, "not ready: %s\n", x.r.body ? x.r.body : "(no answer)");
        res_free(&x);
        CU_FAIL_FATAL("gateway never became ready");
    }
    g_started = 1;
}

static void stop_stack(void)
{
    for (int i = g_npids - 1; i >= 0; i--)
        if (g_pids[i] > 0)
            ts_stop(g_pids[i], SIGTERM, 15000);
    g_npids = 0;
}

/* ---------- cases ---------- */

static void test_ops_endpoints(void)
{
    NEED_STACK();
    res x;
    CU_ASSERT_EQUAL(call("GET", "/health", NULL, NULL, &x), 200);
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "status"), "SERVING");
    char h[256];
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "X-Request-Id", h, sizeof h));
    CU_ASSERT_STRING_EQUAL(http_header(&x.r, "X-Content-Type-Options", h, sizeof h), "nosniff");
    CU_ASSERT_STRING_EQUAL(http_header(&x.r, "X-Frame-Options", h, sizeof h), "DENY");
    CU_ASSERT_STRING_EQUAL(http_header(&x.r, "Referrer-Policy", h, sizeof h), "no-referrer");
    CU_ASSERT_STRING_EQUAL(http_header(&x.r, "Content-Security-Policy", h, sizeof h),
                           "default-src 'none'");
    res_free(&x);
    CU_ASSERT_EQUAL(call("GET", "/ready", NULL, NULL, &x), 200);
    CU_ASSERT_STRING_EQUAL(jstr(json_object_get(x.j, "checks"), "auth"), "SERVING");
    res_free(&x);
    CU_ASSERT_EQUAL(call("GET", "/.well-known/jwks.json", NULL, NULL, &x), 200);
    json_t *k = json_array_get(json_object_get(x.j, "keys"), 0);
    CU_ASSERT_STRING_EQUAL(jstr(k, "kty"), "EC");
    CU_ASSERT_STRING_EQUAL(jstr(k, "crv"), "P-256");
    CU_ASSERT_STRING_EQUAL(jstr(k, "alg"), "ES256");
    CU_ASSERT_STRING_EQUAL(jstr(k, "use"), "sig");
    CU_ASSERT_STRING_EQUAL(jstr(k, "kid"), "20260101T000000Z");
    CU_ASSERT(strlen(jstr(k, "x")) > 40 && strlen(jstr(k, "y")) > 40);
    res_free(&x);
    CU_ASSERT_EQUAL(call("GET", "/openapi.json", NULL, NULL, &x), 200);
    json_t *paths = json_object_get(x.j, "paths");
    const char *must[] = {
        "/health",           "/ready",       "/metrics",         "/.well-known/jwks.json",
        "/v1/auth/register", "/v1/users/me", "/v1/roles/{name}", NULL};
    for (int i = 0; must[i]; i++)
        CU_ASSERT_PTR_NOT_NULL(json_object_get(paths, must[i]));
    res_free(&x);
}

static void test_register_login(void)
{
    NEED_STACK();
    res x;
    /* register → 201, flat shape */
    CU_ASSERT_EQUAL_FATAL(call("POST", "/v1/auth/register", NULL,
                               "{\"email\":\"  Alice@E2E.test \",\"password\":\"alice-pass-1\","
                               "\"displayName\":\"Alice\"}",
                               &x),
                          201);
    json_t *u = json_object_get(x.j, "user");
    CU_ASSERT_STRING_EQUAL(jstr(u, "email"), "alice@e2e.test");
    CU_ASSERT_STRING_EQUAL(jstr(u, "display_name"), "Alice");
    CU_ASSERT_STRING_EQUAL(jstr(u, "status"), "USER_STATUS_ACTIVE");
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "token_type"), "Bearer");
    CU_ASSERT_TRUE(json_is_integer(json_object_get(x.j, "expires_in")));
    CU_ASSERT_TRUE(json_is_integer(json_object_get(x.j, "refresh_expires_in")));
    CU_ASSERT(strlen(jstr(x.j, "refresh_token")) > 20);
    char h[512];
    CU_ASSERT_STRING_EQUAL(http_header(&x.r, "Cache-Control", h, sizeof h), "no-store");
    snprintf(g_alice_id, sizeof g_alice_id, "%s", jstr(u, "id"));
    res_free(&x);
    /* duplicate → 409; bad email / short password → 400 with BadRequest details */
    expect(409, "POST", "/v1/auth/register", NULL,
           "{\"email\":\"alice@e2e.test\",\"password\":\"alice-pass-1\",\"display_name\":\"A\"}");
    CU_ASSERT_EQUAL(call("POST", "/v1/auth/register", NULL,
                         "{\"email\":\"not-an-email\",\"password\":\"x\"}", &x),
                    400);
    check_error_body(&x, "INVALID_ARGUMENT");
    json_t *d0 = json_array_get(json_object_get(x.j, "details"), 0);
    CU_ASSERT_STRING_EQUAL(jstr(d0, "@type"), "type.googleapis.com/google.rpc.BadRequest");
    CU_ASSERT(json_array_size(json_object_get(d0, "field_violations")) >= 1);
    res_free(&x);

    /* login → 200 TokenPair + cookie */
    CU_ASSERT_EQUAL_FATAL(call("POST", "/v1/auth/login", NULL,
                               "{\"email\":\"ALICE@e2e.test\",\"password\":\"alice-pass-1\"}", &x),
                          200);
    snprintf(g_alice, sizeof g_alice, "%s", jstr(x.j, "access_token"));
    snprintf(g_alice_refresh, sizeof g_alice_refresh, "%s", jstr(x.j, "refresh_token"));
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "token_type"), "Bearer");
    CU_ASSERT_PTR_NULL(json_object_get(x.j, "user"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(http_header(&x.r, "Set-Cookie", h, sizeof h));
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "refresh_token="));
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "HttpOnly"));
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "SameSite=Strict"));
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "Path=/v1/auth"));
    CU_ASSERT_STRING_EQUAL(http_header(&x.r, "Cache-Control", h, sizeof h), "no-store");
    res_free(&x);
    /* wrong password and unknown email: the same 401 */
    CU_ASSERT_EQUAL(call("POST", "/v1/auth/login", NULL,
                         "{\"email\":\"alice@e2e.test\",\"password\":\"wrong-pass-1\"}", &x),
                    401);
    check_error_body(&x, "UNAUTHENTICATED");
    char m1[256];
    snprintf(m1, sizeof m1, "%s", jstr(x.j, "message"));
    res_free(&x);
    CU_ASSERT_EQUAL(call("POST", "/v1/auth/login", NULL,
                         "{\"email\":\"nobody@e2e.test\",\"password\":\"wrong-pass-1\"}", &x),
                    401);
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "message"), m1);
    res_free(&x);

    register_user("bob@e2e.test", "bob-pass-12", g_bob, sizeof g_bob, g_bob_id, sizeof g_bob_id);
    CU_ASSERT_EQUAL_FATAL(login(ADMIN_EMAIL, ADMIN_PASSWORD, g_admin, sizeof g_admin, NULL, 0),
                          200);
    CU_ASSERT_EQUAL(call("GET", "/v1/users/me", g_admin, NULL, &x), 200);
    snprintf(g_admin_id, sizeof g_admin_id, "%s", jstr(x.j, "id"));
    res_free(&x);
}

static void test_users_me_and_authn(void)
{
    NEED_STACK();
    res x;
    CU_ASSERT_EQUAL(call("GET", "/v1/users/me", g_alice, NULL, &x), 200);
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "id"), g_alice_id);
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "email"), "alice@e2e.test");
    CU_ASSERT_TRUE(json_object_get(x.j, "create_time") &&
                   json_is_string(json_object_get(x.j, "create_time")));
    CU_ASSERT(strlen(jstr(x.j, "etag")) > 0);
    char etag[128];
    snprintf(etag, sizeof etag, "%s", jstr(x.j, "etag"));
    res_free(&x);
    /* no token / bad token → 401 with WWW-Authenticate */
    char h[256];
    CU_ASSERT_EQUAL(call("GET", "/v1/users/me", NULL, NULL, &x), 401);
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "WWW-Authenticate", h, sizeof h));
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "Bearer"));
    check_error_body(&x, "UNAUTHENTICATED");
    res_free(&x);
    expect(401, "GET", "/v1/users/me", "garbage.token.here", NULL);
    char forged[2100];
    snprintf(forged, sizeof forged, "%s", g_alice);
    forged[strlen(forged) - 2] = forged[strlen(forged) - 2] == 'A' ? 'B' : 'A';
    expect(401, "GET", "/v1/users/me", forged, NULL);
    /* alg none token */
    expect(401, "GET", "/v1/users/me", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.",
           NULL);

    /* PATCH me: display name (camelCase in), status needs users:write */
    CU_ASSERT_EQUAL(call("PATCH", "/v1/users/me", g_alice, "{\"displayName\":\"Alice Two\"}", &x),
                    200);
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "display_name"), "Alice Two");
    CU_ASSERT_STRING_NOT_EQUAL(jstr(x.j, "etag"), etag);
    res_free(&x);
    expect(403, "PATCH", "/v1/users/me", g_alice, "{\"status\":\"USER_STATUS_DISABLED\"}");
    /* stale etag via If-Match → 409 */
    res y;
    char ifm[200];
    snprintf(ifm, sizeof ifm, "If-Match: \"%s\"\r\n", etag);
    CU_ASSERT_EQUAL(
        call_port(g_port, "PATCH", "/v1/users/me", g_alice, "{\"display_name\":\"Z\"}", ifm, &y),
        409);
    res_free(&y);
}

static void test_users_authz(void)
{
    NEED_STACK();
    char p[256];
    /* self vs other vs admin */
    snprintf(p, sizeof p, "/v1/users/%s", g_alice_id);
    expect(200, "GET", p, g_alice, NULL);
    expect(403, "GET", p, g_bob, NULL);
    expect(200, "GET", p, g_admin, NULL);
    expect(403, "PATCH", p, g_bob, "{\"display_name\":\"hacked\"}");
    expect(200, "PATCH", p, g_admin, "{\"display_name\":\"By Admin\"}");
    expect(400, "GET", "/v1/users/not-a-uuid", g_admin, NULL);
    expect(404, "GET", "/v1/users/00000000-0000-4000-8000-000000000000", g_admin, NULL);
    /* list and batchGet need users:read */
    expect(403, "GET", "/v1/users", g_alice, NULL);
    res x;
    CU_ASSERT_EQUAL(call("GET", "/v1/users?page_size=2", g_admin, NULL, &x), 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(x.j, "users")), 2);
    CU_ASSERT(strlen(jstr(x.j, "next_page_token")) > 0);
    char next[600];
    snprintf(next, sizeof next, "/v1/users?page_size=2&page_token=%s",
             jstr(x.j, "next_page_token"));
    res_free(&x);
    CU_ASSERT_EQUAL(call("GET", next, g_admin, NULL, &x), 200);
    CU_ASSERT(json_array_size(json_object_get(x.j, "users")) >= 1);
    res_free(&x);
    CU_ASSERT_EQUAL(call("GET", "/v1/users?filter=email_prefix%3Dali", g_admin, NULL, &x), 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(x.j, "users")), 1);
    res_free(&x);
    snprintf(p, sizeof p, "/v1/users:batchGet?ids=%s&ids=%s", g_alice_id, g_bob_id);
    expect(403, "GET", p, g_alice, NULL);
    CU_ASSERT_EQUAL(call("GET", p, g_admin, NULL, &x), 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(x.j, "users")), 2);
    res_free(&x);
    expect(400, "GET", "/v1/users?page_size=abc", g_admin, NULL);
}

static void test_roles_and_permissions(void)
{
    NEED_STACK();
    char p[256];
    res x;
    expect(403, "POST", "/v1/roles", g_alice,
           "{\"name\":\"editor\",\"permissions\":[\"users:read\"]}");
    CU_ASSERT_EQUAL(
        call("POST", "/v1/roles", g_admin,
             "{\"name\":\"editor\",\"description\":\"d\",\"permissions\":[\"users:read\"]}", &x),
        201);
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "name"), "editor");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(x.j, "permissions")), 1);
    res_free(&x);
    CU_ASSERT_EQUAL(call("GET", "/v1/roles", g_admin, NULL, &x), 200);
    CU_ASSERT(json_array_size(json_object_get(x.j, "roles")) >= 3);
    res_free(&x);
    expect(403, "GET", "/v1/roles", g_alice, NULL);
    CU_ASSERT_EQUAL(call("GET", "/v1/roles/admin", g_admin, NULL, &x), 200);
    CU_ASSERT_TRUE(json_is_true(json_object_get(x.j, "builtin")));
    res_free(&x);
    CU_ASSERT_EQUAL(call("PATCH", "/v1/roles/editor", g_admin, "{\"description\":\"Editors\"}", &x),
                    200);
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "description"), "Editors");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(x.j, "permissions")), 1); /* mask kept it */
    res_free(&x);

    /* check: self allowed, other needs roles:read, '*' → 400 */
    CU_ASSERT_EQUAL(
        call("POST", "/v1/permissions:check", g_alice, "{\"permission\":\"users:read\"}", &x), 200);
    CU_ASSERT_TRUE(json_is_false(json_object_get(x.j, "allowed")));
    res_free(&x);
    char body[256];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"permission\":\"users:read\"}", g_bob_id);
    expect(403, "POST", "/v1/permissions:check", g_alice, body);
    expect(400, "POST", "/v1/permissions:check", g_alice, "{\"permission\":\"users:*\"}");

    /* assign editor to alice; she now reads users */
    snprintf(p, sizeof p, "/v1/users/%s/roles", g_alice_id);
    expect(403, "POST", p, g_alice, "{\"role\":\"editor\"}");
    CU_ASSERT_EQUAL(call("POST", p, g_admin, "{\"role\":\"editor\"}", &x), 204);
    CU_ASSERT_EQUAL(x.r.body_len, 0);
    res_free(&x);
    CU_ASSERT_EQUAL(call("GET", p, g_alice, NULL, &x), 200);
    json_t *roles = json_object_get(x.j, "roles");
    int has = 0;
    for (size_t i = 0; i < json_array_size(roles); i++)
        has |= strcmp(json_string_value(json_array_get(roles, i)), "editor") == 0;
    CU_ASSERT_TRUE(has);
    res_free(&x);
    snprintf(p, sizeof p, "/v1/users/%s/roles", g_bob_id);
    expect(403, "GET", p, g_alice, NULL);
    snprintf(p, sizeof p, "/v1/users/%s/permissions", g_alice_id);
    CU_ASSERT_EQUAL(call("GET", p, g_alice, NULL, &x), 200);
    CU_ASSERT(json_array_size(json_object_get(x.j, "permissions")) >= 1);
    res_free(&x);
    CU_ASSERT_EQUAL(
        call("POST", "/v1/permissions:check", g_alice, "{\"permission\":\"users:read\"}", &x), 200);
    CU_ASSERT_TRUE(json_is_true(json_object_get(x.j, "allowed")));
    res_free(&x);
    expect(200, "GET", "/v1/users", g_alice, NULL); /* takes effect at once */
    CU_ASSERT_EQUAL(call("POST", "/v1/permissions:batchCheck", g_alice,
                         "{\"permissions\":[\"users:read\",\"users:delete\"]}", &x),
                    200);
    json_t *r = json_object_get(x.j, "results");
    CU_ASSERT_EQUAL(json_array_size(r), 2);
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_array_get(r, 0), "allowed")));
    CU_ASSERT_TRUE(json_is_false(json_object_get(json_array_get(r, 1), "allowed")));
    res_free(&x);
    /* revoke, delete role */
    snprintf(p, sizeof p, "/v1/users/%s/roles/editor", g_alice_id);
    expect(204, "DELETE", p, g_admin, NULL);
    expect(403, "GET", "/v1/users", g_alice, NULL);
    expect(403, "DELETE", "/v1/roles/editor", g_alice, NULL);
    expect(204, "DELETE", "/v1/roles/editor", g_admin, NULL);
    expect(404, "GET", "/v1/roles/editor", g_admin, NULL);
    expect(400, "DELETE", "/v1/roles/admin", g_admin, NULL);
}

static void test_sessions_refresh_password(void)
{
    NEED_STACK();
    res x;
    CU_ASSERT_EQUAL(call("GET", "/v1/auth/sessions", g_alice, NULL, &x), 200);
    json_t *ss = json_object_get(x.j, "sessions");
    CU_ASSERT(json_array_size(ss) >= 2); /* register + login */
    int current = 0;
    char other[64] = "";
    for (size_t i = 0; i < json_array_size(ss); i++) {
        json_t *s = json_array_get(ss, i);
        /* the gateway passes the client's address (x-client-ip) on to auth */
        CU_ASSERT_STRING_EQUAL(jstr(s, "ip"), "127.0.0.1");
        if (json_is_true(json_object_get(s, "current")))
            current++;
        else
            snprintf(other, sizeof other, "%s", jstr(s, "id"));
    }
    CU_ASSERT_EQUAL(current, 1);
    res_free(&x);
    {
        char tok[2048];
        CU_ASSERT_EQUAL_FATAL(
            call_port(g_port, "POST", "/v1/auth/login", NULL,
                      "{\"email\":\"alice@e2e.test\",\"password\":\"alice-pass-1\"}",
                      "User-Agent: e2e-agent/1.0\r\n", &x),
            200);
        snprintf(tok, sizeof tok, "%s", jstr(x.j, "access_token"));
        res_free(&x);
        CU_ASSERT_EQUAL(call("GET", "/v1/auth/sessions", tok, NULL, &x), 200);
        json_t *all = json_object_get(x.j, "sessions");
        int seen = 0;
        for (size_t i = 0; i < json_array_size(all); i++) {
            json_t *s1 = json_array_get(all, i);
            if (json_is_true(json_object_get(s1, "current")))
                seen = strcmp(jstr(s1, "user_agent"), "e2e-agent/1.0") == 0;
        }
        CU_ASSERT_TRUE(seen);
        res_free(&x);
    }
    /* refresh with the cookie; the old refresh token is then dead */
    char cookie[700];
    snprintf(cookie, sizeof cookie, "Cookie: refresh_token=%s\r\n", g_alice_refresh);
    CU_ASSERT_EQUAL(call_port(g_port, "POST", "/v1/auth/refresh", NULL, NULL, cookie, &x), 200);
    char h[600];
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "Set-Cookie", h, sizeof h));
    char new_access[2048], new_refresh[512];
    snprintf(new_access, sizeof new_access, "%s", jstr(x.j, "access_token"));
    snprintf(new_refresh, sizeof new_refresh, "%s", jstr(x.j, "refresh_token"));
    CU_ASSERT_STRING_NOT_EQUAL(new_refresh, g_alice_refresh);
    res_free(&x);
    expect(200, "GET", "/v1/users/me", new_access, NULL);
    char body[700];
    snprintf(body, sizeof body, "{\"refresh_token\":\"%s\"}", new_refresh);
    expect(200, "POST", "/v1/auth/refresh", NULL, body);
    /* reuse of a rotated token: 401 and the whole family dies */
    snprintf(body, sizeof body, "{\"refresh_token\":\"%s\"}", g_alice_refresh);
    expect(401, "POST", "/v1/auth/refresh", NULL, body);
    expect(401, "POST", "/v1/auth/refresh", NULL, "{\"refresh_token\":\"nope\"}");
    /* the family's session is revoked: its access tokens (old and refreshed) are denied at once */
    expect(401, "GET", "/v1/users/me", g_alice, NULL);
    expect(401, "GET", "/v1/users/me", new_access, NULL);
    CU_ASSERT_EQUAL_FATAL(login("alice@e2e.test", "alice-pass-1", g_alice, sizeof g_alice,
                                g_alice_refresh, sizeof g_alice_refresh),
                          200);
    /* revoke another session (by id); foreign / bad ids */
    if (other[0]) {
        char p[128];
        snprintf(p, sizeof p, "/v1/auth/sessions/%s", other);
        expect(404, "DELETE", p, g_bob, NULL);
        expect(204, "DELETE", p, g_alice, NULL);
    }
    expect(400, "DELETE", "/v1/auth/sessions/xyz", g_alice, NULL);
    /* password change */
    CU_ASSERT_EQUAL(
        call("POST", "/v1/auth/password", g_alice,
             "{\"current_password\":\"wrong-pass-9\",\"new_password\":\"alice-pass-2\"}", &x),
        400);
    json_t *fv =
        json_object_get(json_array_get(json_object_get(x.j, "details"), 0), "field_violations");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(fv, 0), "field"), "current_password");
    res_free(&x);
    expect(204, "POST", "/v1/auth/password", g_alice,
           "{\"currentPassword\":\"alice-pass-1\",\"newPassword\":\"alice-pass-2\"}");
    expect(200, "GET", "/v1/users/me", g_alice, NULL); /* the caller's session survives */
    CU_ASSERT_EQUAL(login("alice@e2e.test", "alice-pass-1", h, sizeof h, NULL, 0), 401);
    CU_ASSERT_EQUAL(login("alice@e2e.test", "alice-pass-2", g_alice, sizeof g_alice,
                          g_alice_refresh, sizeof g_alice_refresh),
                    200);
}

static void test_logout_revokes(void)
{
    NEED_STACK();
    char tok2[2048];
    CU_ASSERT_EQUAL_FATAL(login("alice@e2e.test", "alice-pass-2", tok2, sizeof tok2, NULL, 0), 200);
    expect(200, "GET", "/v1/users/me", g_alice, NULL);
    expect(204, "POST", "/v1/auth/logout", g_alice, NULL);
    expect(401, "GET", "/v1/users/me", g_alice, NULL); /* right after logout */
    expect(200, "GET", "/v1/users/me", tok2, NULL);    /* other session unaffected */
    expect(204, "POST", "/v1/auth/logout-all", tok2, NULL);
    expect(401, "GET", "/v1/users/me", tok2, NULL);
    expect(401, "POST", "/v1/auth/logout", tok2, NULL);
}

static void test_limits_and_headers(void)
{
    NEED_STACK();
    res x;
    char h[300];
    /* unknown route 404 with and without a token; 405 + Allow */
    CU_ASSERT_EQUAL(call("GET", "/v1/nothing", NULL, NULL, &x), 404);
    check_error_body(&x, "NOT_FOUND");
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "X-Request-Id", h, sizeof h));
    res_free(&x);
    expect(404, "GET", "/v1/nothing", g_admin, NULL);
    CU_ASSERT_EQUAL(call("PUT", "/v1/users/me", g_bob, "{}", &x), 405);
    check_error_body(&x, "UNIMPLEMENTED");
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "Allow", h, sizeof h));
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "GET"));
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "PATCH"));
    res_free(&x);
    /* request id: sane echoed, insane replaced */
    CU_ASSERT_EQUAL(
        call_port(g_port, "GET", "/health", NULL, NULL, "X-Request-Id: abc-123.x:y_z\r\n", &x),
        200);
    CU_ASSERT_STRING_EQUAL(http_header(&x.r, "X-Request-Id", h, sizeof h), "abc-123.x:y_z");
    res_free(&x);
    CU_ASSERT_EQUAL(
        call_port(g_port, "GET", "/v1/nothing", NULL, NULL, "X-Request-Id: bad id!\r\n", &x), 404);
    CU_ASSERT_STRING_NOT_EQUAL(http_header(&x.r, "X-Request-Id", h, sizeof h), "bad id!");
    CU_ASSERT_STRING_EQUAL(jstr(x.j, "request_id"), h);
    res_free(&x);
    /* 413 (limit 64 KiB in this stack) and 431 */
    static char b[70001];
    size_t big = 70000;
    memset(b, 'a', big);
    b[0] = '"';
    b[big - 1] = '"';
    b[big] = 0;
    CU_ASSERT_EQUAL(call("POST", "/v1/auth/login", NULL, b, &x), 413);
    check_error_body(&x, "RESOURCE_EXHAUSTED");
    res_free(&x);
    static char hb[20000];
    memcpy(hb, "X-Big: ", 7);
    memset(hb + 7, 'b', 17500);
    memcpy(hb + 17507, "\r\n", 3);
    CU_ASSERT_EQUAL(call_port(g_port, "GET", "/health", NULL, NULL, hb, &x), 431);
    check_error_body(&x, "RESOURCE_EXHAUSTED");
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "X-Request-Id", h, sizeof h));
    res_free(&x);
    /* CORS: allowed origin echoed with credentials, never '*'; preflight */
    CU_ASSERT_EQUAL(
        call_port(g_port, "OPTIONS", "/v1/users/me", NULL, NULL,
                  "Origin: https://app.e2e.test\r\nAccess-Control-Request-Method: PATCH\r\n", &x),
        204);
    CU_ASSERT_STRING_EQUAL(http_header(&x.r, "Access-Control-Allow-Origin", h, sizeof h),
                           "https://app.e2e.test");
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "Access-Control-Allow-Methods", h, sizeof h));
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "PATCH"));
    CU_ASSERT_STRING_EQUAL(http_header(&x.r, "Vary", h, sizeof h), "Origin");
    res_free(&x);
    CU_ASSERT_EQUAL(
        call_port(g_port, "GET", "/health", NULL, NULL, "Origin: https://evil.test\r\n", &x), 200);
    CU_ASSERT_PTR_NULL(http_header(&x.r, "Access-Control-Allow-Origin", h, sizeof h));
    res_free(&x);
    /* metrics reflect the traffic */
    CU_ASSERT_EQUAL(call("GET", "/metrics", NULL, NULL, &x), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(x.r.body, "http_requests_total"));
    CU_ASSERT_PTR_NOT_NULL(strstr(x.r.body, "http_request_duration_seconds"));
    CU_ASSERT_PTR_NOT_NULL(strstr(x.r.body, "route=\"/v1/users/me\""));
    res_free(&x);
}

static void test_rate_limits(void)
{
    NEED_STACK();
    res x;
    char h[64];
    int got429 = 0;
    for (int i = 0; i < 5; i++) {
        call_port(g_port_rl, "POST", "/v1/auth/login", NULL,
                  "{\"email\":\"nobody@e2e.test\",\"password\":\"whatever-1\"}", NULL, &x);
        if (i < 3) {
            CU_ASSERT_EQUAL(x.status, 401);
            CU_ASSERT_STRING_EQUAL(http_header(&x.r, "RateLimit-Limit", h, sizeof h), "3");
        } else if (x.status == 429) {
            got429++;
            CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "Retry-After", h, sizeof h));
            CU_ASSERT(strtol(h, NULL, 10) >= 1);
            CU_ASSERT_STRING_EQUAL(http_header(&x.r, "RateLimit-Remaining", h, sizeof h), "0");
            check_error_body(&x, "RESOURCE_EXHAUSTED");
        }
        res_free(&x);
    }
    CU_ASSERT_EQUAL(got429, 2);
    /* signed-in: per user (bob), independent of the IP's anonymous budget */
    int ok = 0, limited = 0;
    for (int i = 0; i < 7; i++) {
        call_port(g_port_rl, "GET", "/v1/users/me", g_bob, NULL, NULL, &x);
        ok += x.status == 200;
        limited += x.status == 429;
        res_free(&x);
    }
    CU_ASSERT_EQUAL(ok, 5);
    CU_ASSERT_EQUAL(limited, 2);
}

/* A few hundred malformed bodies against every body-taking route: 4xx only, never 5xx or a hang. */
static void test_malformed_bodies(void)
{
    NEED_STACK();
    static const char *const bad[] = {
        "{",
        "}",
        "[",
        "[]",
        "null",
        "true",
        "1",
        "\"s\"",
        "{\"email\":}",
        "{\"email\":1}",
        "{\"email\":[\"a\"]}",
        "{\"email\":{\"a\":1}}",
        "{\"password\":true}",
        "{\"a\":1,\"a\":2}",
        "{\"email\":\"\\ud800\"}",
        "{\"email\":\"\xff\xfe\"}",
        "{\"display_name\":\"x\",}",
        "{'email':'x'}",
        "{\"email\":\"a\" \"b\"}",
        "\x00\x01",
        "{\"page_size\":1e999}",
        "{\"expires_in\":99999999999999999999}",
        "{\"status\":\"NOPE\"}",
        "{\"status\":99}",
        "{\"permissions\":\"users:read\"}",
        "{\"permissions\":[1,2]}",
        "{\"role\":{}}",
        "{\"user\":null}",
        "{\"update_mask\":5}",
        "{\"create_time\":\"yesterday\"}",
        "{\"user_id\":\"not-a-uuid\",\"permission\":\"a:b\"}",
        "{\"permission\":\"*\"}",
        "{\"inherits\":[null]}",
        "{\"name\":\"\"}",
        "{\"name\":\"UPPER\"}",
        "{\"description\":{}}",
        "{\"refresh_token\":[]}",
        "{\"email\":\"a@b.c\",\"password\":\"\"}",
        "{\"x\":{\"y\":{\"z\":{\"w\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]"
        "]]]]]]]]]]}}}}",
        "{\"email\":\"a@b.c\",\"password\":\""
        "012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
        "0123456789012345678901234567890123456789"
        "\"}",
        NULL};
    static const char *const routes[][2] = {{"POST", "/v1/auth/register"},
                                            {"POST", "/v1/auth/login"},
                                            {"POST", "/v1/auth/refresh"},
                                            {"POST", "/v1/auth/password"},
                                            {"PATCH", "/v1/users/me"},
                                            {"POST", "/v1/roles"},
                                            {"PATCH", "/v1/roles/user"},
                                            {"POST", "/v1/permissions:check"},
                                            {"POST", "/v1/permissions:batchCheck"},
                                            {"POST", "/v1/auth/logout"},
                                            {NULL, NULL}};
    char bob_tok[2048];
    CU_ASSERT_EQUAL_FATAL(login("bob@e2e.test", "bob-pass-12", bob_tok, sizeof bob_tok, NULL, 0),
                          200);
    int total = 0, fails = 0;
    for (int r = 0; routes[r][0]; r++) {
        for (int i = 0; bad[i]; i++) {
            /* logout with a valid token would end the session: use the admin-less bob token only
             * for bodies that cannot succeed there */
            const char *tok =
                strcmp(routes[r][1], "/v1/auth/logout") == 0 ? "bad.token.x" : bob_tok;
            /* an email change is a valid PATCH of oneself: not a malformed body there */
            if (strcmp(routes[r][1], "/v1/users/me") == 0 && strstr(bad[i], "a@b.c"))
                continue;
            res x;
            int s = call(routes[r][0], routes[r][1], tok, bad[i], &x);
            total++;
            if (!(s >= 400 && s < 500)) {
                fails++;
                fprintf(stderr, "  %s %s body #%d: %d %s\n", routes[r][0], routes[r][1], i, s,
                        x.r.body ? x.r.body : "");
            }
            res_free(&x);
        }
    }
    /* raw protocol garbage */
    http_resp hr;
    http_raw(g_port, "GARBAGE\r\n\r\n", 11, 3000, &hr);
    CU_ASSERT(hr.status == 0 || (hr.status >= 400 && hr.status < 500));
    http_resp_free(&hr);
    http_raw(g_port, "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 53, 3000,
             &hr);
    CU_ASSERT(hr.status == 0 || hr.status < 500);
    http_resp_free(&hr);
    fprintf(stderr, "  malformed bodies: %d requests, %d not 4xx\n", total, fails);
    CU_ASSERT(total >= 300);
    CU_ASSERT_EQUAL(fails, 0);
    expect(200, "GET", "/health", NULL, NULL); /* still alive */
}

static void test_delete_user(void)
{
    NEED_STACK();
    char p[128];
    snprintf(p, sizeof p, "/v1/users/%s", g_bob_id);
    char t[2048];
    CU_ASSERT_EQUAL_FATAL(login("alice@e2e.test", "alice-pass-2", t, sizeof t, NULL, 0), 200);
    expect(403, "DELETE", p, t, NULL); /* alice cannot delete bob */
    char bob_tok[2048];
    CU_ASSERT_EQUAL_FATAL(login("bob@e2e.test", "bob-pass-12", bob_tok, sizeof bob_tok, NULL, 0),
                          200);
    expect(204, "DELETE", "/v1/users/me", bob_tok, NULL);
    /* the deletion revokes bob's sessions (eventually: the event is asynchronous) */
    int s = 0;
    for (int i = 0; i < 50; i++) {
        s = st("GET", "/v1/users/me", bob_tok, NULL);
        if (s == 401)
            break;
        usleep(100000);
    }
    CU_ASSERT_EQUAL(s, 401);
    CU_ASSERT_EQUAL(login("bob@e2e.test", "bob-pass-12", t, sizeof t, NULL, 0), 401);
    expect(404, "GET", p, g_admin, NULL);
}

/* Redis down: revocation fails closed (503 + Retry-After) while anonymous routes still work with
 * the per-process rate limiter. A third gateway points at a port where nothing listens. */
static void test_redis_down(void)
{
    NEED_STACK();
    int port = ts_free_port(), dead = ts_free_port();
    char l[64], r[128], a[3][128];
    snprintf(l, sizeof l, "LISTEN_ADDR=127.0.0.1:%d", port);
    snprintf(r, sizeof r, "REDIS_URL=redis://127.0.0.1:%d/0", dead);
    snprintf(a[0], sizeof a[0], "AUTH_SERVICE_ADDR=%s", g_auth_addr);
    snprintf(a[1], sizeof a[1], "USER_SERVICE_ADDR=%s", g_user_addr);
    snprintf(a[2], sizeof a[2], "PERMISSION_SERVICE_ADDR=%s", g_perm_addr);
    char *env[] = {l, r, a[0], a[1], a[2], "REDIS_TIMEOUT_MS=200", "LOG_LEVEL=error", NULL};
    int pid = spawn("gateway", env);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(port, 20000), 0);
    char tok[2048];
    CU_ASSERT_EQUAL_FATAL(login(ADMIN_EMAIL, ADMIN_PASSWORD, tok, sizeof tok, NULL, 0), 200);
    res x;
    int s = 0;
    for (int i = 0; i < 50; i++) { /* keys arrive from auth shortly after start */
        s = call_port(port, "GET", "/v1/users/me", tok, NULL, NULL, &x);
        if (s != 503 || strstr(x.r.body ? x.r.body : "", "revocation"))
            break;
        res_free(&x);
        usleep(100000);
    }
    CU_ASSERT_EQUAL(s, 503);
    char h[64];
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "Retry-After", h, sizeof h));
    CU_ASSERT_PTR_NOT_NULL(strstr(x.r.body ? x.r.body : "", "revocation"));
    res_free(&x);
    CU_ASSERT_EQUAL(call_port(port, "POST", "/v1/auth/login", NULL,
                              "{\"email\":\"" ADMIN_EMAIL "\",\"password\":\"" ADMIN_PASSWORD "\"}",
                              NULL, &x),
                    200);
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "RateLimit-Limit", h, sizeof h));
    res_free(&x);
    CU_ASSERT_EQUAL(call_port(port, "GET", "/ready", NULL, NULL, NULL, &x), 503);
    res_free(&x);
    g_pids[--g_npids] = 0;
    CU_ASSERT_EQUAL(ts_stop(pid, SIGTERM, 15000), 0);
}

/* A slow Redis holds memory, not a thread. Redis here is a listener that accepts (in the kernel
 * backlog) and never answers; the gateway has one HTTP thread and waits 1.5 s for Redis. Four
 * signed-in requests are parked on that Redis while /health, on the same single thread, answers at
 * once; then each of the four fails closed (503: revocation could not be checked) after the Redis
 * timeout. A design that waited for Redis on the HTTP thread would hold /health for >= 1.5 s. */
static void test_redis_frozen(void)
{
    NEED_STACK();
    int frozen = ts_free_port();
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CU_ASSERT_FATAL(ls >= 0);
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)frozen)};
    la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* a deep backlog: every failed round trip leaves one never-accepted connection behind */
    if (bind(ls, (struct sockaddr *)&la, sizeof la) != 0 || listen(ls, 128) != 0) {
        close(ls);
        CU_FAIL_FATAL("cannot listen for the frozen Redis");
    }
    int port = ts_free_port();
    char l[64], r[128], a[3][128];
    snprintf(l, sizeof l, "LISTEN_ADDR=127.0.0.1:%d", port);
    snprintf(r, sizeof r, "REDIS_URL=redis://127.0.0.1:%d/0", frozen);
    snprintf(a[0], sizeof a[0], "AUTH_SERVICE_ADDR=%s", g_auth_addr);
    snprintf(a[1], sizeof a[1], "USER_SERVICE_ADDR=%s", g_user_addr);
    snprintf(a[2], sizeof a[2], "PERMISSION_SERVICE_ADDR=%s", g_perm_addr);
    char *env[] = {
        l, r, a[0], a[1], a[2], "REDIS_TIMEOUT_MS=1500", "HTTP_THREADS=1", "LOG_LEVEL=error", NULL};
    int pid = spawn("gateway", env);
    int fds[4] = {-1, -1, -1, -1};
    if (ts_wait_port(port, 20000) != 0) {
        CU_FAIL("gateway did not start");
        goto out;
    }
    char tok[2048];
    if (login(ADMIN_EMAIL, ADMIN_PASSWORD, tok, sizeof tok, NULL, 0) != 200) {
        CU_FAIL("admin login");
        goto out;
    }
    /* Until the keys have arrived from auth, /v1/users/me is a quick 503 "signing keys not loaded
     * yet"; after that it reaches the frozen Redis and is a 503 "revocation" after 1.5 s. */
    res x;
    int keyed = 0;
    for (int i = 0; i < 40 && !keyed; i++) {
        int s = call_port(port, "GET", "/v1/users/me", tok, NULL, NULL, &x);
        keyed = s == 503 && strstr(x.r.body ? x.r.body : "", "revocation");
        if (!keyed && s != 503)
            fprintf(stderr, "  frozen redis: users/me %d: %s\n", s, x.r.body ? x.r.body : "");
        res_free(&x);
        if (!keyed)
            usleep(100000);
    }
    if (!keyed) {
        CU_FAIL("the gateway never reached the revocation check");
        goto out;
    }
    /* past the cache's backoff after that failure (50 ms), so the next requests wait on Redis
     * again instead of failing fast */
    usleep(300000);

    char rq[2300];
    int rqn = snprintf(rq, sizeof rq,
                       "GET /v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                       "Connection: close\r\n\r\n",
                       tok);
    if (rqn <= 0 || rqn >= (int)sizeof rq) {
        CU_FAIL("request too long");
        goto out;
    }
    struct sockaddr_in ga = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    ga.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    long long sent = ts_now_ms();
    for (int i = 0; i < 4; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&ga, sizeof ga) != 0 ||
            send(fds[i], rq, (size_t)rqn, MSG_NOSIGNAL) != rqn) {
            CU_FAIL("cannot send a request to the gateway");
            goto out;
        }
    }
    /* a moment for the gateway's thread to read them and park them on Redis */
    usleep(100000);

    /* the single HTTP thread is free while the four wait */
    long long t0 = ts_now_ms();
    int hs = call_port(port, "GET", "/health", NULL, NULL, NULL, &x);
    long long health_ms = ts_now_ms() - t0;
    res_free(&x);
    fprintf(stderr, "  frozen redis: /health %d in %lld ms with 4 requests waiting on Redis\n", hs,
            health_ms);
    CU_ASSERT_EQUAL(hs, 200);
    CU_ASSERT(health_ms < 500);

    /* each of the four fails closed once Redis times out */
    long long first = -1, last = -1;
    for (int i = 0; i < 4; i++) {
        struct timeval tv = {5, 0};
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char b[4096];
        size_t n = 0;
        while (n < sizeof b - 1 && !memchr(b, '\n', n)) {
            ssize_t k = recv(fds[i], b + n, sizeof b - 1 - n, 0);
            if (k <= 0)
                break;
            n += (size_t)k;
        }
        b[n] = 0;
        long long took = ts_now_ms() - sent;
        if (strncmp(b, "HTTP/1.1 503", 12) != 0)
            fprintf(stderr, "  frozen redis: request %d after %lld ms: '%.40s'\n", i, took, b);
        CU_ASSERT_EQUAL(strncmp(b, "HTTP/1.1 503", 12), 0);
        /* it did wait on Redis: answered after the timeout, not failed fast */
        CU_ASSERT(took >= 1000);
        if (first < 0)
            first = took;
        last = took;
        close(fds[i]);
        fds[i] = -1;
    }
    fprintf(stderr, "  frozen redis: the four answered after %lld..%lld ms\n", first, last);
out:
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    g_pids[--g_npids] = 0;
    CU_ASSERT_EQUAL(ts_stop(pid, SIGTERM, 15000), 0);
    close(ls);
}

/* A request that cannot finish within REQUEST_TIMEOUT_MS is a 504 (the user service is frozen with
 * SIGSTOP under a gateway whose deadline is 500 ms), and the gateway recovers once it thaws. */
static void test_deadline(void)
{
    NEED_STACK();
    int port = ts_free_port();
    char l[64], r[128], a[3][128];
    snprintf(l, sizeof l, "LISTEN_ADDR=127.0.0.1:%d", port);
    snprintf(r, sizeof r, "REDIS_URL=%s", ts_redis_url_db(40));
    snprintf(a[0], sizeof a[0], "AUTH_SERVICE_ADDR=%s", g_auth_addr);
    snprintf(a[1], sizeof a[1], "USER_SERVICE_ADDR=%s", g_user_addr);
    snprintf(a[2], sizeof a[2], "PERMISSION_SERVICE_ADDR=%s", g_perm_addr);
    char *env[] = {l, r, a[0], a[1], a[2], "REQUEST_TIMEOUT_MS=500", "LOG_LEVEL=error", NULL};
    int pid = spawn("gateway", env);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(port, 20000), 0);
    res x;
    int s = 0;
    for (int i = 0; i < 50; i++) { /* until the keys are loaded */
        s = call_port(port, "GET", "/v1/users/me", g_admin, NULL, NULL, &x);
        res_free(&x);
        if (s == 200)
            break;
        usleep(100000);
    }
    CU_ASSERT_EQUAL_FATAL(s, 200);
    int user_pid = g_pids[1];
    kill(user_pid, SIGSTOP);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    s = call_port(port, "GET", "/v1/users/me", g_admin, NULL, NULL, &x);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    kill(user_pid, SIGCONT);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CU_ASSERT_EQUAL(s, 504);
    if (x.j)
        check_error_body(&x, "DEADLINE_EXCEEDED");
    CU_ASSERT(ms >= 400 && ms < 3000);
    res_free(&x);
    s = 0;
    for (int i = 0; i < 30 && s != 200; i++) {
        s = call_port(port, "GET", "/v1/users/me", g_admin, NULL, NULL, &x);
        res_free(&x);
        if (s != 200)
            usleep(100000);
    }
    CU_ASSERT_EQUAL(s, 200);
    g_pids[--g_npids] = 0;
    CU_ASSERT_EQUAL(ts_stop(pid, SIGTERM, 15000), 0);
}

/* Connects to the strict gateway and returns the fd. */
static int connect_rl(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)g_port_rl);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* ms until the server closes fd (recv returns 0 or fails), sending one header byte every
 * trickle_ms (0 = send nothing); -1 when still open after max_ms. */
static long closed_after(int fd, int trickle_ms, int max_ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const char *slow = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    size_t off = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (el > max_ms)
            return -1;
        struct pollfd p = {fd, POLLIN, 0};
        int n = poll(&p, 1, trickle_ms ? trickle_ms : 100);
        if (n > 0) {
            char b[256];
            ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
            if (r <= 0)
                return el;
        }
        if (trickle_ms && slow[off] && send(fd, slow + off, 1, MSG_NOSIGNAL) != 1)
            return el;
        if (trickle_ms && slow[off])
            off++;
    }
}

/* Slow and idle clients are cut off (strict gateway: headers within 2 s, idle 3 s). */
static void test_slow_clients(void)
{
    NEED_STACK();
    int fd = connect_rl();
    CU_ASSERT_FATAL(fd >= 0);
    long ms = closed_after(fd, 300, 8000); /* slowloris: one byte every 300 ms */
    close(fd);
    CU_ASSERT(ms >= 1500 && ms <= 4000);
    fd = connect_rl();
    CU_ASSERT_FATAL(fd >= 0);
    ms = closed_after(fd, 0, 8000); /* says nothing */
    close(fd);
    CU_ASSERT(ms >= 1500 && ms <= 4000);
    /* a served keep-alive connection is closed after the idle time */
    fd = connect_rl();
    CU_ASSERT_FATAL(fd >= 0);
    const char *rq = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    CU_ASSERT_EQUAL(send(fd, rq, strlen(rq), MSG_NOSIGNAL), (ssize_t)strlen(rq));
    char b[2048];
    struct pollfd p = {fd, POLLIN, 0};
    CU_ASSERT_EQUAL(poll(&p, 1, 3000), 1);
    CU_ASSERT(recv(fd, b, sizeof b, 0) > 0);
    ms = closed_after(fd, 0, 9000);
    close(fd);
    CU_ASSERT(ms >= 2000 && ms <= 6000);
}

/* SIGTERM: the gateway drains and exits 0 (ASan would make a leak or a race exit non-zero). */
static void test_graceful_shutdown(void)
{
    NEED_STACK();
    int pid = g_pids[4]; /* the second gateway */
    g_pids[4] = 0;
    CU_ASSERT_EQUAL(ts_stop(pid, SIGTERM, 15000), 0);
    http_resp r;
    http_do(g_port_rl, "GET", "/health", NULL, NULL, 0, 2000, &r);
    CU_ASSERT_EQUAL(r.status, 0); /* no longer listening */
    http_resp_free(&r);
    pid = g_pids[3];
    g_pids[3] = 0;
    CU_ASSERT_EQUAL(ts_stop(pid, SIGTERM, 15000), 0);
}

int main(void)
{
    ts_need_env("PGPORT");
    static const ts_case cases[] = {{"start stack", start_stack},
                                    {"ops endpoints", test_ops_endpoints},
                                    {"register and login", test_register_login},
                                    {"users/me and authn", test_users_me_and_authn},
                                    {"users authorization", test_users_authz},
                                    {"roles and permissions", test_roles_and_permissions},
                                    {"sessions, refresh, password", test_sessions_refresh_password},
                                    {"logout revokes at once", test_logout_revokes},
                                    {"limits and headers", test_limits_and_headers},
                                    {"rate limits", test_rate_limits},
                                    {"malformed bodies", test_malformed_bodies},
                                    {"delete user", test_delete_user},
                                    {"redis down", test_redis_down},
                                    {"redis frozen: no thread waits", test_redis_frozen},
                                    {"slow clients", test_slow_clients},
                                    {"deadline 504", test_deadline},
                                    {"graceful shutdown", test_graceful_shutdown},
                                    {NULL, NULL}};
    int rc = ts_main("e2e_gateway", cases);
    stop_stack();
    if (g_dir[0]) {
        /* the private key always goes; the stack log stays only when something failed */
        char cmd[300];
        snprintf(cmd, sizeof cmd, rc == 0 ? "rm -rf '%s'" : "rm -rf '%s/keys'", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not clean %s\n", g_dir);
    }
    return rc;
}
