/* Integration tests of the auth service: the real auth-service, user-service and
 * permission-service binaries on one harness database (t_auth) and Redis db 30, called over gRPC.
 * Covers the register saga and its compensation, login (no enumeration, lockout and its expiry,
 * disabled users), rotating refresh tokens (reuse, concurrency), revocation (logout, logout-all,
 * password change, sessions), the token attack list through ValidateToken, fail-closed Redis,
 * the hash pool limit, rehash on login, the events consumer (including reclaim of pending entries),
 * bootstrap admin, and that no password or token reaches any log. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/v1/auth.pb-c.h"
#include "common/breaker.h"
#include "common/cache.h"
#include "common/db.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rpc_client.h"
#include "google/protobuf/empty.pb-c.h"
#include "permission/v1/permission.pb-c.h"
#include "test_support.h"
#include "user/v1/user.pb-c.h"

#define REDIS_DB 30
#define ADMIN_EMAIL "root-admin@example.test"
#define ADMIN_PASSWORD "Bootstrap-Admin-Pass-7731"
#define LOCK_WINDOW 3

static const char *g_auth_conninfo, *g_user_conninfo, *g_perm_conninfo;
static char g_keys[256];
static char g_log_auth[512], g_log_user[512], g_log_perm[512], g_log_misc[512];
static int g_auth_port, g_user_port, g_perm_port, g_auth_mport;
static int g_auth_pid = -1, g_user_pid = -1, g_perm_pid = -1;
static rpc_client *g_auth, *g_user, *g_perm;
static db_pool *g_db;
static cache *g_redis;
static jwt_keyset *g_ks;

/* Every password and token the tests handle: none may appear in any log. */
static char *g_secrets[2048];
static size_t g_nsecrets;
static pthread_mutex_t g_secrets_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *track(const char *s)
{
    pthread_mutex_lock(&g_secrets_mu);
    if (s && *s && g_nsecrets < sizeof g_secrets / sizeof *g_secrets)
        g_secrets[g_nsecrets++] = xstrdup(s);
    pthread_mutex_unlock(&g_secrets_mu);
    return s;
}

static double now_s(void);

/* Test clients see every status as it is: no breaker, no retries. */
static rpc_client *test_client(int port, const char *name)
{
    static char targets[8][64];
    static int nt;
    char *t = targets[nt++ % 8];
    snprintf(t, 64, "127.0.0.1:%d", port);
    breaker_opts off = {.mode = BREAKER_DISABLED};
    retry_opts none = {.max_retries = 0};
    rpc_client_ext_opts x = {.breaker = &off, .retry = &none, .deadline_margin_ms = -1};
    rpc_client_opts o = {.target = t, .name = name, .default_timeout_ms = 15000};
    err_info e;
    err_clear(&e);
    rpc_client *c = rpc_client_new_ext(&o, &x, &e);
    if (!c) {
        fprintf(stderr, "client %s: %s\n", name, e.msg);
        exit(1);
    }
    return c;
}

/* ---- process management ---- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int spawn_auth_env(int port, const char *log, char *const *extra)
{
    static char env[40][512];
    int n = 0;
    snprintf(env[n++], 512, "LISTEN_ADDR=127.0.0.1:%d", port);
    int mport = ts_free_port();
    if (port == g_auth_port)
        g_auth_mport = mport;
    snprintf(env[n++], 512, "METRICS_ADDR=127.0.0.1:%d", mport);
    snprintf(env[n++], 512, "DATABASE_URL=%s", g_auth_conninfo);
    snprintf(env[n++], 512, "REDIS_URL=%s", ts_redis_url_db(REDIS_DB));
    snprintf(env[n++], 512, "USER_SERVICE_ADDR=127.0.0.1:%d", g_user_port);
    snprintf(env[n++], 512, "PERMISSION_SERVICE_ADDR=127.0.0.1:%d", g_perm_port);
    snprintf(env[n++], 512, "JWT_KEYS_DIR=%s", g_keys);
    snprintf(env[n++], 512, "LOGIN_LOCKOUT_WINDOW_SEC=%d", LOCK_WINDOW);
    snprintf(env[n++], 512, "LOGIN_MAX_FAILURES=5");
    snprintf(env[n++], 512, "AUTH_EVENTS_CLAIM_IDLE_MS=500");
    snprintf(env[n++], 512, "AUTH_EVENTS_CLAIM_INTERVAL_MS=300");
    snprintf(env[n++], 512, "REDIS_TIMEOUT_MS=500");
    snprintf(env[n++], 512, "BOOTSTRAP_ADMIN_EMAIL=%s", ADMIN_EMAIL);
    snprintf(env[n++], 512, "BOOTSTRAP_ADMIN_PASSWORD=%s", ADMIN_PASSWORD);
    snprintf(env[n++], 512, "LOG_LEVEL=debug");
    snprintf(env[n++], 512, "RPC_THREADS=4");
    /* defaults for speed; extra entries override (later wins in environ lookups? no: first
     * wins for getenv, so extras go first) */
    static char *envp[64];
    int k = 0;
    for (int i = 0; extra && extra[i]; i++)
        envp[k++] = extra[i];
    for (int i = 0; i < n; i++) {
        bool overridden = false;
        for (int j = 0; extra && extra[j]; j++) {
            size_t l = strcspn(extra[j], "=");
            if (strncmp(extra[j], env[i], l + 1) == 0)
                overridden = true;
        }
        if (!overridden)
            envp[k++] = env[i];
    }
    envp[k] = NULL;
    char *argv[] = {(char *)ts_bin("auth-service"), NULL};
    int pid = ts_spawn(argv, envp, log);
    return pid;
}

static void start_auth(char *const *extra)
{
    static char *defaults[] = {"ARGON2_MEMORY_KIB=1024", "ARGON2_ITERATIONS=1", NULL};
    g_auth_pid = spawn_auth_env(g_auth_port, g_log_auth, extra ? extra : defaults);
    if (ts_wait_port(g_auth_port, 20000) != 0) {
        fprintf(stderr, "auth-service did not listen (see %s)\n", g_log_auth);
        exit(1);
    }
}

static void stop_auth(void)
{
    if (g_auth_pid > 0)
        CU_ASSERT_EQUAL(ts_stop(g_auth_pid, 15, 10000), 0);
    g_auth_pid = -1;
}

static int start_peer(const char *bin, int port, const char *conninfo, const char *log)
{
    static char env[8][512];
    snprintf(env[0], 512, "LISTEN_ADDR=127.0.0.1:%d", port);
    snprintf(env[1], 512, "METRICS_ADDR=127.0.0.1:%d", ts_free_port());
    snprintf(env[2], 512, "DATABASE_URL=%s", conninfo);
    snprintf(env[3], 512, "REDIS_URL=%s", ts_redis_url_db(REDIS_DB));
    snprintf(env[4], 512, "OUTBOX_POLL_MS=100");
    snprintf(env[5], 512, "LOG_LEVEL=info");
    snprintf(env[6], 512, "PERMISSION_EVENTS_CLAIM_IDLE_MS=500");
    char *envp[] = {env[0], env[1], env[2], env[3], env[4], env[5], env[6], NULL};
    char *argv[] = {(char *)ts_bin(bin), NULL};
    int pid = ts_spawn(argv, envp, log);
    if (ts_wait_port(port, 20000) != 0) {
        fprintf(stderr, "%s did not listen (see %s)\n", bin, log);
        exit(1);
    }
    return pid;
}

/* ---- calls ---- */

static err_code call(rpc_client *c, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *rd, const rpc_metadata *md, arena *a,
                     void *resp, err_info *e)
{
    rpc_call_opts o = {.md = md, .deadline_ms = rpc_now_ms() + 15000};
    err_clear(e);
    return rpc_client_call(c, method, req, rd, &o, a, (ProtobufCMessage **)resp, e);
}

#define AUTH(m) "/auth.v1.AuthService/" m

static err_code do_register(arena *a, const char *email, const char *pw, const char *name,
                            Auth__V1__RegisterResponse **out, err_info *e)
{
    Auth__V1__RegisterRequest r = AUTH__V1__REGISTER_REQUEST__INIT;
    r.email = (char *)email;
    r.password = (char *)track(pw);
    r.display_name = (char *)name;
    Auth__V1__RegisterResponse *resp = NULL;
    err_code rc = call(g_auth, AUTH("Register"), &r.base, &auth__v1__register_response__descriptor,
                       NULL, a, &resp, e);
    if (rc == ERR_OK) {
        track(resp->access_token);
        track(resp->refresh_token);
        if (out)
            *out = resp;
    }
    return rc;
}

static err_code do_login_md(arena *a, const char *email, const char *pw, const rpc_metadata *md,
                            Auth__V1__TokenPair **out, err_info *e)
{
    Auth__V1__LoginRequest r = AUTH__V1__LOGIN_REQUEST__INIT;
    r.email = (char *)email;
    r.password = (char *)track(pw);
    Auth__V1__TokenPair *resp = NULL;
    err_code rc =
        call(g_auth, AUTH("Login"), &r.base, &auth__v1__token_pair__descriptor, md, a, &resp, e);
    if (rc == ERR_OK) {
        track(resp->access_token);
        track(resp->refresh_token);
        if (out)
            *out = resp;
    }
    return rc;
}

static err_code do_login(arena *a, const char *email, const char *pw, Auth__V1__TokenPair **out,
                         err_info *e)
{
    return do_login_md(a, email, pw, NULL, out, e);
}

static err_code do_refresh(arena *a, const char *refresh, Auth__V1__TokenPair **out, err_info *e)
{
    Auth__V1__RefreshRequest r = AUTH__V1__REFRESH_REQUEST__INIT;
    r.refresh_token = (char *)refresh;
    Auth__V1__TokenPair *resp = NULL;
    err_code rc = call(g_auth, AUTH("Refresh"), &r.base, &auth__v1__token_pair__descriptor, NULL, a,
                       &resp, e);
    if (rc == ERR_OK) {
        track(resp->access_token);
        track(resp->refresh_token);
        if (out)
            *out = resp;
    }
    return rc;
}

static err_code do_validate(arena *a, const char *access, Auth__V1__Claims **out, err_info *e)
{
    Auth__V1__ValidateTokenRequest r = AUTH__V1__VALIDATE_TOKEN_REQUEST__INIT;
    r.access_token = (char *)access;
    Auth__V1__ValidateTokenResponse *resp = NULL;
    err_code rc = call(g_auth, AUTH("ValidateToken"), &r.base,
                       &auth__v1__validate_token_response__descriptor, NULL, a, &resp, e);
    if (rc == ERR_OK && out)
        *out = resp->claims;
    return rc;
}

static Auth__V1__Claims *claims_of(arena *a, const char *access)
{
    err_info e;
    Auth__V1__Claims *c = NULL;
    if (do_validate(a, access, &c, &e) != ERR_OK)
        return NULL;
    return c;
}

static bool has_violation(const err_info *e, const char *field)
{
    for (size_t i = 0; i < e->nviolations; i++)
        if (strcmp(e->violations[i].field, field) == 0)
            return true;
    return false;
}

static err_code get_user_by_email(arena *a, const char *email, User__V1__User **out, err_info *e)
{
    User__V1__GetUserByEmailRequest r = USER__V1__GET_USER_BY_EMAIL_REQUEST__INIT;
    r.email = (char *)email;
    User__V1__User *u = NULL;
    err_code rc = call(g_user, "/user.v1.UserService/GetUserByEmail", &r.base,
                       &user__v1__user__descriptor, NULL, a, &u, e);
    if (rc == ERR_OK && out)
        *out = u;
    return rc;
}

static bool user_has_role(arena *a, const char *uid, const char *role)
{
    Permission__V1__ListUserRolesRequest r = PERMISSION__V1__LIST_USER_ROLES_REQUEST__INIT;
    r.user_id = (char *)uid;
    Permission__V1__ListUserRolesResponse *resp = NULL;
    err_info e;
    if (call(g_perm, "/permission.v1.PermissionService/ListUserRoles", &r.base,
             &permission__v1__list_user_roles_response__descriptor, NULL, a, &resp, &e) != ERR_OK)
        return false;
    for (size_t i = 0; i < resp->n_roles; i++)
        if (strcmp(resp->roles[i], role) == 0)
            return true;
    return false;
}

static long sql_long(const char *sql, const char *p1)
{
    db_conn *c = NULL;
    err_info e;
    err_clear(&e);
    if (db_acquire(g_db, 0, &c, &e) != ERR_OK)
        return -1;
    db_result *r = NULL;
    const char *p[] = {p1};
    long v = -1;
    if (db_exec(c, sql, p1 ? 1 : 0, p, &r, &e) == ERR_OK && db_result_rows(r) > 0)
        v = strtol(db_result_get(r, 0, 0), NULL, 10);
    else if (e.code)
        fprintf(stderr, "sql: %s\n", e.msg);
    db_result_free(r);
    db_release(g_db, c);
    return v;
}

static char *sql_text(arena *a, const char *sql, const char *p1)
{
    db_conn *c = NULL;
    err_info e;
    err_clear(&e);
    if (db_acquire(g_db, 0, &c, &e) != ERR_OK)
        return NULL;
    db_result *r = NULL;
    const char *p[] = {p1};
    char *v = NULL;
    if (db_exec(c, sql, 1, p, &r, &e) == ERR_OK && db_result_rows(r) > 0)
        v = arena_strdup(a, db_result_get(r, 0, 0));
    db_result_free(r);
    db_release(g_db, c);
    return v;
}

static char *unique_email(arena *a, const char *tag)
{
    static int n;
    return arena_printf(a, "%s-%d-%ld@example.test", tag, ++n, (long)getpid());
}

/* Waits until probe registrations go through 25 times in a row: the peers are up, and auth's
 * circuit breakers (count-based windows of 20 calls, which may still hold the failures from while
 * a peer was down and could trip again on them) only remember successes. */
static void wait_ready(void)
{
    arena *a = arena_new(0);
    err_info e;
    int streak = 0;
    for (int i = 0; i < 400 && streak < 25; i++) {
        if (do_register(a, unique_email(a, "probe"), "probe password", "Probe", NULL, &e) ==
            ERR_OK) {
            streak++;
        } else {
            streak = 0;
            sleep_ms(250);
        }
    }
    CU_ASSERT_EQUAL_FATAL(streak, 25);
    arena_free(a);
}

/* ---- cases ---- */

static void test_bootstrap_admin(void)
{
    /* auth started before user and permission: the bootstrap must have retried until they came. */
    arena *a = arena_new(0);
    err_info e;
    Auth__V1__TokenPair *tp = NULL;
    err_code rc = ERR_UNAVAILABLE;
    for (int i = 0; i < 100 && rc != ERR_OK; i++) {
        rc = do_login(a, ADMIN_EMAIL, ADMIN_PASSWORD, &tp, &e);
        if (rc != ERR_OK)
            sleep_ms(200);
    }
    CU_ASSERT_EQUAL_FATAL(rc, ERR_OK);
    Auth__V1__Claims *c = claims_of(a, tp->access_token);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_TRUE(user_has_role(a, c->sub, "admin"));
    arena_free(a);
    wait_ready();
}

static void test_register_login_validate(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "alice");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "correct horse battery", "Alice", &rr, &e), ERR_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rr->user);
    CU_ASSERT_STRING_EQUAL(rr->user->email, email);
    CU_ASSERT_STRING_EQUAL(rr->token_type, "Bearer");
    CU_ASSERT_EQUAL(rr->expires_in, 900);
    CU_ASSERT_EQUAL(rr->refresh_expires_in, 604800);
    CU_ASSERT_EQUAL(strlen(rr->refresh_token), 43);
    Auth__V1__Claims *c = claims_of(a, rr->access_token);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(c->sub, rr->user->id);
    CU_ASSERT_STRING_EQUAL(c->iss, "identity");
    CU_ASSERT_STRING_EQUAL(c->aud, "identity-api");
    CU_ASSERT_EQUAL(c->exp - c->iat, 900);
    CU_ASSERT_EQUAL(strlen(c->sid), 36);
    CU_ASSERT_EQUAL(strlen(c->jti), 36);
    /* role user assigned, credential stored as argon2id, refresh token only as its hash */
    CU_ASSERT_TRUE(user_has_role(a, rr->user->id, "user"));
    char *h = sql_text(a, "SELECT password_hash FROM credentials WHERE user_id = $1", rr->user->id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL(strncmp(h, "$argon2id$", 10), 0);
    CU_ASSERT_EQUAL(
        sql_long("SELECT count(*) FROM refresh_tokens WHERE hash = $1", rr->refresh_token), 0);
    CU_ASSERT_EQUAL(sql_long("SELECT count(*) FROM refresh_tokens t JOIN sessions s ON "
                             "s.id = t.session_id WHERE s.user_id = $1",
                             rr->user->id),
                    1);
    /* login, with the email in another case and padded */
    char *loud = arena_printf(a, "  %s ", email);
    for (char *p = loud; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 32);
    Auth__V1__TokenPair *tp = NULL;
    CU_ASSERT_EQUAL(do_login(a, loud, "correct horse battery", &tp, &e), ERR_OK);
    CU_ASSERT_PTR_NOT_NULL(claims_of(a, tp ? tp->access_token : ""));
    /* JWKS: the published key verifies the token locally */
    Auth__V1__GetJwksRequest jr = AUTH__V1__GET_JWKS_REQUEST__INIT;
    Auth__V1__Jwks *jwks = NULL;
    CU_ASSERT_EQUAL_FATAL(
        call(g_auth, AUTH("GetJwks"), &jr.base, &auth__v1__jwks__descriptor, NULL, a, &jwks, &e),
        ERR_OK);
    CU_ASSERT_EQUAL_FATAL(jwks->n_keys, 1);
    CU_ASSERT_STRING_EQUAL(jwks->keys[0]->kty, "EC");
    CU_ASSERT_STRING_EQUAL(jwks->keys[0]->crv, "P-256");
    CU_ASSERT_STRING_EQUAL(jwks->keys[0]->alg, "ES256");
    CU_ASSERT_STRING_EQUAL(jwks->keys[0]->use, "sig");
    jwt_keyset *pub = jwt_keyset_from_jwks("{\"keys\":[]}", 11, &e); /* no key: NULL */
    CU_ASSERT_PTR_NULL(pub);
    char *doc = jwt_keyset_jwks(g_ks);
    pub = jwt_keyset_from_jwks(doc, strlen(doc), &e);
    free(doc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pub);
    CU_ASSERT_TRUE(jwt_keyset_has_kid(pub, jwks->keys[0]->kid));
    jwt_verify_opts vo = {.iss = "identity", .aud = "identity-api", .leeway_s = 30};
    jwt_claims jc;
    CU_ASSERT_EQUAL(jwt_verify(pub, rr->access_token, &vo, &jc, &e), ERR_OK);
    jwt_keyset_free(pub);
    arena_free(a);
}

static void test_register_errors(void)
{
    arena *a = arena_new(0);
    err_info e;
    CU_ASSERT_EQUAL(do_register(a, "not-an-email", "short", "", NULL, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "email"));
    CU_ASSERT_TRUE(has_violation(&e, "password"));
    CU_ASSERT_TRUE(has_violation(&e, "display_name"));
    char longpw[140];
    memset(longpw, 'x', 129);
    longpw[129] = 0;
    CU_ASSERT_EQUAL(do_register(a, unique_email(a, "long"), longpw, "L", NULL, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "password"));
    /* 8 characters of multi-byte UTF-8 are 8 characters */
    CU_ASSERT_EQUAL(do_register(a, unique_email(a, "utf8"),
                                "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
                                "U", NULL, &e),
                    ERR_OK);
    const char *email = unique_email(a, "dup");
    CU_ASSERT_EQUAL(do_register(a, email, "password-one", "Dup", NULL, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_register(a, email, "password-two", "Dup", NULL, &e), ERR_ALREADY_EXISTS);
    /* the first credential is intact */
    CU_ASSERT_EQUAL(do_login(a, email, "password-one", NULL, &e), ERR_OK);
    arena_free(a);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static void test_no_enumeration(void)
{
    arena *a = arena_new(0);
    err_info e1, e2, e;
    const char *email = unique_email(a, "enum");
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "the right password", "E", NULL, &e), ERR_OK);
    err_code r1 = do_login(a, email, "the wrong password", NULL, &e1);
    err_code r2 = do_login(a, unique_email(a, "nobody"), "the wrong password", NULL, &e2);
    CU_ASSERT_EQUAL(r1, ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(r2, ERR_UNAUTHENTICATED);
    CU_ASSERT_STRING_EQUAL(e1.msg, e2.msg);
    CU_ASSERT_STRING_EQUAL(e1.msg, "invalid email or password");
    /* Timing: the unknown email pays for a (dummy) verification too. Medians of several tries,
     * each with fresh emails so the lockout does not interfere. */
    double tk[5], tu[5];
    for (int i = 0; i < 5; i++) {
        const char *known = unique_email(a, "tk");
        CU_ASSERT_EQUAL(do_register(a, known, "timing password", "T", NULL, &e), ERR_OK);
        double t0 = now_s();
        CU_ASSERT_EQUAL(do_login(a, known, "not the password", NULL, &e), ERR_UNAUTHENTICATED);
        tk[i] = now_s() - t0;
        t0 = now_s();
        CU_ASSERT_EQUAL(do_login(a, unique_email(a, "tu"), "not the password", NULL, &e),
                        ERR_UNAUTHENTICATED);
        tu[i] = now_s() - t0;
    }
    qsort(tk, 5, sizeof *tk, cmp_double);
    qsort(tu, 5, sizeof *tu, cmp_double);
    fprintf(stderr, "login median: known %.1f ms, unknown %.1f ms\n", tk[2] * 1e3, tu[2] * 1e3);
    CU_ASSERT(tu[2] > 0.6 * tk[2]);
    CU_ASSERT(tu[2] < 2.5 * tk[2]);
    arena_free(a);
}

static void test_disabled_user(void)
{
    arena *a = arena_new(0);
    err_info e, e2;
    const char *email = unique_email(a, "disabled");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "disabled password", "D", &rr, &e), ERR_OK);
    User__V1__User u = USER__V1__USER__INIT;
    u.id = rr->user->id;
    u.status = USER__V1__USER_STATUS__USER_STATUS_DISABLED;
    Google__Protobuf__FieldMask fm = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"status"};
    fm.paths = paths;
    fm.n_paths = 1;
    User__V1__UpdateUserRequest ur = USER__V1__UPDATE_USER_REQUEST__INIT;
    ur.user = &u;
    ur.update_mask = &fm;
    User__V1__User *out = NULL;
    CU_ASSERT_EQUAL_FATAL(call(g_user, "/user.v1.UserService/UpdateUser", &ur.base,
                               &user__v1__user__descriptor, NULL, a, &out, &e),
                          ERR_OK);
    CU_ASSERT_EQUAL(do_login(a, email, "disabled password", NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_login(a, unique_email(a, "nobody"), "disabled password", NULL, &e2),
                    ERR_UNAUTHENTICATED);
    CU_ASSERT_STRING_EQUAL(e.msg, e2.msg);
    /* and its refresh token no longer works */
    CU_ASSERT_EQUAL(do_refresh(a, rr->refresh_token, NULL, &e), ERR_UNAUTHENTICATED);
    arena_free(a);
}

static void test_lockout(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "lock");
    const char *ghost = unique_email(a, "ghost");
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "lockout password", "L", NULL, &e), ERR_OK);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(do_login(a, email, "wrong password", NULL, &e), ERR_UNAUTHENTICATED);
        CU_ASSERT_EQUAL(do_login(a, ghost, "wrong password", NULL, &e), ERR_UNAUTHENTICATED);
    }
    /* locked: even the right password, even in another case/padding; unknown email the same */
    CU_ASSERT_EQUAL(do_login(a, email, "lockout password", NULL, &e), ERR_RESOURCE_EXHAUSTED);
    CU_ASSERT(e.retry_after_s >= 1 && e.retry_after_s <= LOCK_WINDOW);
    char *upper = arena_printf(a, " %s", email);
    upper[1] = (char)(upper[1] - 32);
    CU_ASSERT_EQUAL(do_login(a, upper, "lockout password", NULL, &e), ERR_RESOURCE_EXHAUSTED);
    err_info eg;
    CU_ASSERT_EQUAL(do_login(a, ghost, "whatever pass", NULL, &eg), ERR_RESOURCE_EXHAUSTED);
    CU_ASSERT(eg.retry_after_s >= 1 && eg.retry_after_s <= LOCK_WINDOW);
    /* a counter that lost its expiry (EXPIRE after INCR never arrived) still expires */
    const char *stuck = unique_email(a, "stuck");
    char *skey = arena_printf(a, "login_fail:%s", stuck);
    const char *set[] = {"SET", skey, "7"};
    cache_reply *r = NULL;
    CU_ASSERT_EQUAL(cache_command(g_redis, 3, set, NULL, &r, &e), ERR_OK);
    cache_reply_free(r);
    CU_ASSERT_EQUAL(do_login(a, stuck, "whatever pass", NULL, &e), ERR_RESOURCE_EXHAUSTED);
    const char *ttl[] = {"TTL", skey};
    r = NULL;
    CU_ASSERT_EQUAL(cache_command(g_redis, 2, ttl, NULL, &r, &e), ERR_OK);
    CU_ASSERT(r && cache_reply_int(r) > 0 && cache_reply_int(r) <= LOCK_WINDOW);
    cache_reply_free(r);
    /* the window ends → the right password works, and success resets the counter */
    sleep_ms(LOCK_WINDOW * 1000 + 1100);
    CU_ASSERT_EQUAL(do_login(a, email, "lockout password", NULL, &e), ERR_OK);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(do_login(a, email, "wrong password", NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_login(a, email, "lockout password", NULL, &e), ERR_OK);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(do_login(a, email, "wrong password", NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_login(a, email, "lockout password", NULL, &e), ERR_OK);
    arena_free(a);
}

static void test_refresh_rotation_and_reuse(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "rot");
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "rotation password", "R", NULL, &e), ERR_OK);
    Auth__V1__TokenPair *p1 = NULL, *p2 = NULL, *p3 = NULL, *other = NULL;
    CU_ASSERT_EQUAL_FATAL(do_login(a, email, "rotation password", &p1, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(do_login(a, email, "rotation password", &other, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(do_refresh(a, p1->refresh_token, &p2, &e), ERR_OK);
    CU_ASSERT_STRING_NOT_EQUAL(p2->refresh_token, p1->refresh_token);
    CU_ASSERT_STRING_EQUAL(p2->token_type, "Bearer");
    Auth__V1__Claims *c1 = claims_of(a, p1->access_token), *c2 = claims_of(a, p2->access_token);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c2);
    CU_ASSERT_STRING_EQUAL(c1->sid, c2->sid); /* same session */
    CU_ASSERT_STRING_NOT_EQUAL(c1->jti, c2->jti);
    CU_ASSERT_EQUAL_FATAL(do_refresh(a, p2->refresh_token, &p3, &e), ERR_OK);
    /* reuse of a rotated token: refused, and the whole family dies with its access tokens */
    CU_ASSERT_EQUAL(do_refresh(a, p1->refresh_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_refresh(a, p3->refresh_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_validate(a, p3->access_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_validate(a, p2->access_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(sql_long("SELECT count(*) FROM sessions WHERE id = $1 AND revoke_reason = "
                             "'refresh_reuse'",
                             c1->sid),
                    1);
    /* another session of the same user is untouched */
    CU_ASSERT_EQUAL(do_validate(a, other->access_token, NULL, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_refresh(a, other->refresh_token, NULL, &e), ERR_OK);
    /* garbage refresh tokens */
    CU_ASSERT_EQUAL(do_refresh(a, "not-a-token", NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_refresh(a, "", NULL, &e), ERR_INVALID_ARGUMENT);
    arena_free(a);
}

typedef struct race_arg {
    const char *token;
    pthread_barrier_t *bar;
    err_code rc;
} race_arg;

static void *race_refresh(void *p)
{
    race_arg *r = p;
    arena *a = arena_new(0);
    err_info e;
    pthread_barrier_wait(r->bar);
    r->rc = do_refresh(a, r->token, NULL, &e);
    arena_free(a);
    return NULL;
}

static void test_concurrent_refresh(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "race");
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "race password", "R", NULL, &e), ERR_OK);
    for (int round = 0; round < 3; round++) {
        Auth__V1__TokenPair *p = NULL;
        CU_ASSERT_EQUAL_FATAL(do_login(a, email, "race password", &p, &e), ERR_OK);
        enum { N = 6 };
        pthread_t t[N];
        race_arg r[N];
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, N);
        for (int i = 0; i < N; i++) {
            r[i] = (race_arg){.token = p->refresh_token, .bar = &bar, .rc = ERR_UNKNOWN};
            pthread_create(&t[i], NULL, race_refresh, &r[i]);
        }
        int ok = 0, unauth = 0;
        for (int i = 0; i < N; i++) {
            pthread_join(t[i], NULL);
            ok += r[i].rc == ERR_OK;
            unauth += r[i].rc == ERR_UNAUTHENTICATED;
        }
        pthread_barrier_destroy(&bar);
        CU_ASSERT_EQUAL(ok, 1);
        CU_ASSERT_EQUAL(unauth, N - 1);
    }
    arena_free(a);
}

static void test_logout(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "logout");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "logout password", "L", &rr, &e), ERR_OK);
    Auth__V1__TokenPair *p = NULL, *q = NULL;
    CU_ASSERT_EQUAL_FATAL(do_login(a, email, "logout password", &p, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(do_login(a, email, "logout password", &q, &e), ERR_OK);
    Auth__V1__Claims *c = claims_of(a, p->access_token);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    Auth__V1__LogoutRequest lr = AUTH__V1__LOGOUT_REQUEST__INIT;
    Google__Protobuf__Empty *empty = NULL;
    /* nothing named → invalid */
    CU_ASSERT_EQUAL(call(g_auth, AUTH("Logout"), &lr.base, &google__protobuf__empty__descriptor,
                         NULL, a, &empty, &e),
                    ERR_INVALID_ARGUMENT);
    /* somebody else's session → NOT_FOUND */
    lr.session_id = c->sid;
    lr.user_id = "00000000-0000-4000-8000-000000000001";
    CU_ASSERT_EQUAL(call(g_auth, AUTH("Logout"), &lr.base, &google__protobuf__empty__descriptor,
                         NULL, a, &empty, &e),
                    ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(do_validate(a, p->access_token, NULL, &e), ERR_OK);
    lr.session_id = "";
    lr.user_id = rr->user->id;
    lr.refresh_token = p->refresh_token;
    lr.jti = c->jti;
    CU_ASSERT_EQUAL(call(g_auth, AUTH("Logout"), &lr.base, &google__protobuf__empty__descriptor,
                         NULL, a, &empty, &e),
                    ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, p->access_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_refresh(a, p->refresh_token, NULL, &e), ERR_UNAUTHENTICATED);
    /* idempotent */
    CU_ASSERT_EQUAL(call(g_auth, AUTH("Logout"), &lr.base, &google__protobuf__empty__descriptor,
                         NULL, a, &empty, &e),
                    ERR_OK);
    /* the other session lives */
    CU_ASSERT_EQUAL(do_validate(a, q->access_token, NULL, &e), ERR_OK);
    /* deny list key with a TTL no longer than the token's life */
    char key[128];
    snprintf(key, sizeof key, "revoked:jti:%s", c->jti);
    const char *argv[] = {"TTL", key};
    cache_reply *r = NULL;
    CU_ASSERT_EQUAL(cache_command(g_redis, 2, argv, NULL, &r, &e), ERR_OK);
    CU_ASSERT(r && cache_reply_int(r) > 0 && cache_reply_int(r) <= 930);
    cache_reply_free(r);
    arena_free(a);
}

static void test_logout_all(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "all");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "logout-all password", "A", &rr, &e), ERR_OK);
    Auth__V1__TokenPair *p = NULL;
    CU_ASSERT_EQUAL_FATAL(do_login(a, email, "logout-all password", &p, &e), ERR_OK);
    Auth__V1__LogoutAllRequest lr = AUTH__V1__LOGOUT_ALL_REQUEST__INIT;
    lr.user_id = rr->user->id;
    Google__Protobuf__Empty *empty = NULL;
    CU_ASSERT_EQUAL(call(g_auth, AUTH("LogoutAll"), &lr.base, &google__protobuf__empty__descriptor,
                         NULL, a, &empty, &e),
                    ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, p->access_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_validate(a, rr->access_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_refresh(a, p->refresh_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_refresh(a, rr->refresh_token, NULL, &e), ERR_UNAUTHENTICATED);
    /* a login right after works (new tokens' iat is not before revoked_before) */
    Auth__V1__TokenPair *n = NULL;
    CU_ASSERT_EQUAL_FATAL(do_login(a, email, "logout-all password", &n, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, n->access_token, NULL, &e), ERR_OK);
    lr.user_id = "bad";
    CU_ASSERT_EQUAL(call(g_auth, AUTH("LogoutAll"), &lr.base, &google__protobuf__empty__descriptor,
                         NULL, a, &empty, &e),
                    ERR_INVALID_ARGUMENT);
    arena_free(a);
}

static void test_change_password(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "chpw");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "old password 1", "C", &rr, &e), ERR_OK);
    Auth__V1__TokenPair *mine = NULL, *other = NULL;
    CU_ASSERT_EQUAL_FATAL(do_login(a, email, "old password 1", &mine, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(do_login(a, email, "old password 1", &other, &e), ERR_OK);
    Auth__V1__Claims *mc = claims_of(a, mine->access_token);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mc);
    Auth__V1__ChangePasswordRequest cr = AUTH__V1__CHANGE_PASSWORD_REQUEST__INIT;
    cr.user_id = rr->user->id;
    cr.session_id = mc->sid;
    cr.current_password = (char *)track("not my password");
    cr.new_password = (char *)track("new password 2");
    Google__Protobuf__Empty *empty = NULL;
    CU_ASSERT_EQUAL(call(g_auth, AUTH("ChangePassword"), &cr.base,
                         &google__protobuf__empty__descriptor, NULL, a, &empty, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "current_password"));
    cr.current_password = "old password 1";
    cr.new_password = "short";
    CU_ASSERT_EQUAL(call(g_auth, AUTH("ChangePassword"), &cr.base,
                         &google__protobuf__empty__descriptor, NULL, a, &empty, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "new_password"));
    cr.new_password = "new password 2";
    CU_ASSERT_EQUAL_FATAL(call(g_auth, AUTH("ChangePassword"), &cr.base,
                               &google__protobuf__empty__descriptor, NULL, a, &empty, &e),
                          ERR_OK);
    /* mine survives, the others die at once */
    CU_ASSERT_EQUAL(do_validate(a, mine->access_token, NULL, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, other->access_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_validate(a, rr->access_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_refresh(a, other->refresh_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_refresh(a, mine->refresh_token, NULL, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_login(a, email, "old password 1", NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_login(a, email, "new password 2", NULL, &e), ERR_OK);
    arena_free(a);
}

static void test_sessions(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "sess");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "sessions password", "S", &rr, &e), ERR_OK);
    rpc_metadata md = {.request_id = "",
                       .traceparent = "",
                       .authorization = "",
                       .user_agent = "integration-agent/1.0",
                       .client_ip = "203.0.113.7",
                       .actor_id = ""};
    Auth__V1__TokenPair *p = NULL;
    CU_ASSERT_EQUAL_FATAL(do_login_md(a, email, "sessions password", &md, &p, &e), ERR_OK);
    Auth__V1__Claims *c = claims_of(a, p->access_token);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    Auth__V1__ListSessionsRequest lr = AUTH__V1__LIST_SESSIONS_REQUEST__INIT;
    lr.user_id = rr->user->id;
    lr.current_session_id = c->sid;
    Auth__V1__ListSessionsResponse *ls = NULL;
    CU_ASSERT_EQUAL_FATAL(call(g_auth, AUTH("ListSessions"), &lr.base,
                               &auth__v1__list_sessions_response__descriptor, NULL, a, &ls, &e),
                          ERR_OK);
    CU_ASSERT_EQUAL_FATAL(ls->n_sessions, 2);
    int current = 0, found = 0;
    for (size_t i = 0; i < ls->n_sessions; i++) {
        Auth__V1__Session *s = ls->sessions[i];
        current += s->current;
        CU_ASSERT_PTR_NOT_NULL(s->create_time);
        CU_ASSERT_PTR_NOT_NULL(s->last_used_time);
        CU_ASSERT_PTR_NOT_NULL(s->expire_time);
        if (strcmp(s->id, c->sid) == 0) {
            found++;
            CU_ASSERT_TRUE(s->current);
            CU_ASSERT_STRING_EQUAL(s->user_agent, "integration-agent/1.0");
            CU_ASSERT_STRING_EQUAL(s->ip, "203.0.113.7");
            CU_ASSERT(s->create_time && s->create_time->seconds > 1700000000);
            CU_ASSERT(s->expire_time && s->create_time &&
                      s->expire_time->seconds - s->create_time->seconds >= 604799);
        }
    }
    CU_ASSERT_EQUAL(current, 1);
    CU_ASSERT_EQUAL(found, 1);
    /* revoke: someone else's id → NOT_FOUND; unknown → NOT_FOUND; own → gone */
    Auth__V1__RevokeSessionRequest rv = AUTH__V1__REVOKE_SESSION_REQUEST__INIT;
    rv.session_id = c->sid;
    rv.user_id = "00000000-0000-4000-8000-000000000002";
    Google__Protobuf__Empty *empty = NULL;
    CU_ASSERT_EQUAL(call(g_auth, AUTH("RevokeSession"), &rv.base,
                         &google__protobuf__empty__descriptor, NULL, a, &empty, &e),
                    ERR_NOT_FOUND);
    rv.session_id = "00000000-0000-4000-8000-000000000003";
    rv.user_id = rr->user->id;
    CU_ASSERT_EQUAL(call(g_auth, AUTH("RevokeSession"), &rv.base,
                         &google__protobuf__empty__descriptor, NULL, a, &empty, &e),
                    ERR_NOT_FOUND);
    rv.session_id = c->sid;
    CU_ASSERT_EQUAL(call(g_auth, AUTH("RevokeSession"), &rv.base,
                         &google__protobuf__empty__descriptor, NULL, a, &empty, &e),
                    ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, p->access_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_refresh(a, p->refresh_token, NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL_FATAL(call(g_auth, AUTH("ListSessions"), &lr.base,
                               &auth__v1__list_sessions_response__descriptor, NULL, a, &ls, &e),
                          ERR_OK);
    CU_ASSERT_EQUAL(ls->n_sessions, 1);
    arena_free(a);
}

static char *b64u(arena *a, const char *s)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(s), o = 0;
    char *out = arena_alloc(a, n * 2 + 4);
    const unsigned char *in = (const unsigned char *)s;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = al[(v >> 18) & 63];
        out[o++] = al[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = al[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = al[v & 63];
    }
    return out;
}

static void test_validate_attacks(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "attack");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "attack password", "A", &rr, &e), ERR_OK);
    Auth__V1__Claims *c = claims_of(a, rr->access_token);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    const char *kid = NULL;
    char *doc = jwt_keyset_jwks(g_ks);
    char *k = strstr(doc, "\"kid\":\"");
    kid = k ? arena_strndup(a, k + 7, strcspn(k + 7, "\"")) : "";
    free(doc);
    char *payload = arena_printf(a,
                                 "{\"iss\":\"identity\",\"aud\":\"identity-api\",\"sub\":\"%s\","
                                 "\"sid\":\"%s\",\"jti\":\"%s\",\"iat\":%lld,\"exp\":%lld}",
                                 c->sub, c->sid, "11111111-2222-4333-8444-555555555555",
                                 (long long)time(NULL), (long long)time(NULL) + 600);
    /* alg none */
    char *none = arena_printf(a, "%s.%s.",
                              b64u(a, arena_printf(a, "{\"alg\":\"none\",\"kid\":\"%s\"}", kid)),
                              b64u(a, payload));
    CU_ASSERT_EQUAL(do_validate(a, none, NULL, &e), ERR_UNAUTHENTICATED);
    /* HS256 "signed" with junk */
    char *hs = arena_printf(a, "%s.%s.%s",
                            b64u(a, arena_printf(a, "{\"alg\":\"HS256\",\"kid\":\"%s\"}", kid)),
                            b64u(a, payload), b64u(a, "0123456789abcdef0123456789abcdef"));
    CU_ASSERT_EQUAL(do_validate(a, hs, NULL, &e), ERR_UNAUTHENTICATED);
    /* tampered payload: the real header and signature, another subject */
    const char *d1 = strchr(rr->access_token, '.'), *d2 = strrchr(rr->access_token, '.');
    char *tampered = arena_printf(a, "%.*s.%s%s", (int)(d1 - rr->access_token), rr->access_token,
                                  b64u(a, payload), d2);
    CU_ASSERT_EQUAL(do_validate(a, tampered, NULL, &e), ERR_UNAUTHENTICATED);
    /* signed by a key auth does not have */
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "/tmp/auth_it_rogue.%d", (int)getpid());
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/%s.pem", dir, kid);
    CU_ASSERT_EQUAL(jwt_key_generate(path, &e), ERR_OK);
    jwt_keyset *rogue = jwt_keyset_load_dir(dir, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rogue);
    jwt_claims jc;
    memset(&jc, 0, sizeof jc);
    snprintf(jc.iss, sizeof jc.iss, "identity");
    snprintf(jc.aud, sizeof jc.aud, "identity-api");
    snprintf(jc.sub, sizeof jc.sub, "%s", c->sub);
    snprintf(jc.sid, sizeof jc.sid, "%s", c->sid);
    snprintf(jc.jti, sizeof jc.jti, "22222222-2222-4333-8444-555555555555");
    jc.iat = (int64_t)time(NULL);
    jc.exp = jc.iat + 600;
    char *tok = NULL;
    CU_ASSERT_EQUAL(jwt_sign(rogue, &jc, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, tok, NULL, &e), ERR_UNAUTHENTICATED);
    free(tok);
    unlink(path);
    snprintf(path, sizeof path, "%s/zz-unknown.pem", dir);
    CU_ASSERT_EQUAL(jwt_key_generate(path, &e), ERR_OK);
    jwt_keyset_free(rogue);
    rogue = jwt_keyset_load_dir(dir, &e);
    CU_ASSERT_EQUAL(jwt_sign(rogue, &jc, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, tok, NULL, &e), ERR_UNAUTHENTICATED); /* unknown kid */
    free(tok);
    jwt_keyset_free(rogue);
    unlink(path);
    rmdir(dir);
    /* with the real key: control ok; expired, wrong iss, wrong aud refused */
    CU_ASSERT_EQUAL(jwt_sign(g_ks, &jc, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, tok, NULL, &e), ERR_OK);
    free(tok);
    jwt_claims bad = jc;
    bad.iat = (int64_t)time(NULL) - 2000;
    bad.exp = (int64_t)time(NULL) - 100;
    CU_ASSERT_EQUAL(jwt_sign(g_ks, &bad, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, tok, NULL, &e), ERR_UNAUTHENTICATED);
    free(tok);
    bad = jc;
    snprintf(bad.iss, sizeof bad.iss, "evil");
    CU_ASSERT_EQUAL(jwt_sign(g_ks, &bad, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, tok, NULL, &e), ERR_UNAUTHENTICATED);
    free(tok);
    bad = jc;
    snprintf(bad.aud, sizeof bad.aud, "other-api");
    CU_ASSERT_EQUAL(jwt_sign(g_ks, &bad, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(do_validate(a, tok, NULL, &e), ERR_UNAUTHENTICATED);
    free(tok);
    /* garbage, "Bearer " prefix accepted on a good token */
    CU_ASSERT_EQUAL(do_validate(a, "garbage", NULL, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(do_validate(a, "", NULL, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(do_validate(a, arena_printf(a, "Bearer %s", rr->access_token), NULL, &e),
                    ERR_OK);
    arena_free(a);
}

static void test_register_saga_compensation(void)
{
    arena *a = arena_new(0);
    err_info e;
    long creds = sql_long("SELECT count(*) FROM credentials", NULL);
    /* permission down: the user and credential made before AssignRole are undone */
    CU_ASSERT_EQUAL(ts_stop(g_perm_pid, 15, 10000), 0);
    const char *email = unique_email(a, "saga");
    CU_ASSERT_EQUAL(do_register(a, email, "saga password", "Saga", NULL, &e), ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(get_user_by_email(a, email, NULL, &e), ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(sql_long("SELECT count(*) FROM credentials", NULL), creds);
    CU_ASSERT_EQUAL(do_login(a, email, "saga password", NULL, &e), ERR_UNAUTHENTICATED);
    g_perm_pid = start_peer("permission-service", g_perm_port, g_perm_conninfo, g_log_perm);
    /* the same email can register once everything is up again */
    wait_ready();
    CU_ASSERT_EQUAL(do_register(a, email, "saga password", "Saga", NULL, &e), ERR_OK);
    /* user service down: UNAVAILABLE, nothing stored */
    CU_ASSERT_EQUAL(ts_stop(g_user_pid, 15, 10000), 0);
    creds = sql_long("SELECT count(*) FROM credentials", NULL);
    CU_ASSERT_EQUAL(do_register(a, unique_email(a, "saga2"), "saga password", "S", NULL, &e),
                    ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(sql_long("SELECT count(*) FROM credentials", NULL), creds);
    g_user_pid = start_peer("user-service", g_user_port, g_user_conninfo, g_log_user);
    arena_free(a);
    wait_ready();
}

static void test_redis_down_fails_closed(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "closed");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "closed password", "C", &rr, &e), ERR_OK);
    /* a second auth whose Redis is a closed port */
    int port = ts_free_port(), dead = ts_free_port();
    char redis[64];
    snprintf(redis, sizeof redis, "REDIS_URL=redis://127.0.0.1:%d/0", dead);
    char *extra[] = {redis,
                     "ARGON2_MEMORY_KIB=1024",
                     "ARGON2_ITERATIONS=1",
                     "AUTH_EVENTS_ENABLED=false",
                     "BOOTSTRAP_ADMIN_EMAIL=",
                     NULL};
    int pid = spawn_auth_env(port, g_log_misc, extra);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(port, 20000), 0);
    rpc_client *c2 = test_client(port, "auth2");
    Auth__V1__ValidateTokenRequest vr = AUTH__V1__VALIDATE_TOKEN_REQUEST__INIT;
    vr.access_token = rr->access_token;
    Auth__V1__ValidateTokenResponse *vresp = NULL;
    CU_ASSERT_EQUAL(call(c2, AUTH("ValidateToken"), &vr.base,
                         &auth__v1__validate_token_response__descriptor, NULL, a, &vresp, &e),
                    ERR_UNAVAILABLE);
    Auth__V1__LoginRequest lr = AUTH__V1__LOGIN_REQUEST__INIT;
    lr.email = (char *)email;
    lr.password = "closed password";
    Auth__V1__TokenPair *tp = NULL;
    CU_ASSERT_EQUAL(
        call(c2, AUTH("Login"), &lr.base, &auth__v1__token_pair__descriptor, NULL, a, &tp, &e),
        ERR_UNAVAILABLE);
    rpc_client_free(c2);
    CU_ASSERT_EQUAL(ts_stop(pid, 15, 10000), 0);
    arena_free(a);
}

typedef struct storm_arg {
    rpc_client *c;
    const char *email;
    pthread_barrier_t *bar;
    err_code rc;
} storm_arg;

static void *storm_login(void *p)
{
    storm_arg *s = p;
    arena *a = arena_new(0);
    err_info e;
    Auth__V1__LoginRequest lr = AUTH__V1__LOGIN_REQUEST__INIT;
    lr.email = (char *)s->email;
    lr.password = "storm password";
    Auth__V1__TokenPair *tp = NULL;
    pthread_barrier_wait(s->bar);
    s->rc =
        call(s->c, AUTH("Login"), &lr.base, &auth__v1__token_pair__descriptor, NULL, a, &tp, &e);
    if (s->rc == ERR_OK) {
        track(tp->access_token);
        track(tp->refresh_token);
    }
    arena_free(a);
    return NULL;
}

static void test_hash_pool_full(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "storm");
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, track("storm password"), "S", NULL, &e), ERR_OK);
    int port = ts_free_port();
    /* Two RPC threads and room for 1 + 4 hash jobs: without the admission limit both threads
     * would sit in Login handlers waiting for the slow hashes, and GetJwks would wait behind them
     * for at least one full hash (hundreds of ms); with it one thread stays free. */
    char *extra[] = {"HASH_WORKERS=1",
                     "HASH_QUEUE=4",
                     "ARGON2_MEMORY_KIB=65536",
                     "ARGON2_ITERATIONS=4",
                     "AUTH_EVENTS_ENABLED=false",
                     "BOOTSTRAP_ADMIN_EMAIL=",
                     "RPC_THREADS=2",
                     NULL};
    int pid = spawn_auth_env(port, g_log_misc, extra);
    CU_ASSERT_EQUAL_FATAL(ts_wait_port(port, 20000), 0);
    rpc_client *c3 = test_client(port, "auth3");
    /* warm up the channel, and time one login alone: at least one full hash */
    Auth__V1__LoginRequest one = AUTH__V1__LOGIN_REQUEST__INIT;
    one.email = (char *)email;
    one.password = "storm password";
    Auth__V1__TokenPair *tp1 = NULL;
    double l0 = now_s();
    CU_ASSERT_EQUAL(
        call(c3, AUTH("Login"), &one.base, &auth__v1__token_pair__descriptor, NULL, a, &tp1, &e),
        ERR_OK);
    double login_ms = (now_s() - l0) * 1e3;
    if (tp1) {
        track(tp1->access_token);
        track(tp1->refresh_token);
    }
    enum { N = 6 };
    pthread_t t[N];
    storm_arg s[N];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, N);
    for (int i = 0; i < N; i++) {
        s[i] = (storm_arg){.c = c3, .email = email, .bar = &bar, .rc = ERR_UNKNOWN};
        pthread_create(&t[i], NULL, storm_login, &s[i]);
    }
    /* while the pool is busy, a cheap call on the same server is answered promptly */
    sleep_ms(20);
    Auth__V1__GetJwksRequest jr = AUTH__V1__GET_JWKS_REQUEST__INIT;
    Auth__V1__Jwks *jwks = NULL;
    double t0 = now_s();
    CU_ASSERT_EQUAL(
        call(c3, AUTH("GetJwks"), &jr.base, &auth__v1__jwks__descriptor, NULL, a, &jwks, &e),
        ERR_OK);
    double cheap_ms = (now_s() - t0) * 1e3;
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ok += s[i].rc == ERR_OK;
        busy += s[i].rc == ERR_RESOURCE_EXHAUSTED;
    }
    fprintf(stderr, "GetJwks during the storm: %.1f ms (one login alone: %.1f ms)\n", cheap_ms,
            login_ms);
    CU_ASSERT(cheap_ms < login_ms / 2);
    pthread_barrier_destroy(&bar);
    fprintf(stderr, "hash pool storm: %d ok, %d refused\n", ok, busy);
    CU_ASSERT(ok >= 1);
    CU_ASSERT(busy >= 1);
    CU_ASSERT_EQUAL(ok + busy, N);
    rpc_client_free(c3);
    CU_ASSERT_EQUAL(ts_stop(pid, 15, 10000), 0);
    arena_free(a);
}

static void test_rehash_on_login(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "rehash");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "rehash password", "R", &rr, &e), ERR_OK);
    char *before =
        sql_text(a, "SELECT password_hash FROM credentials WHERE user_id = $1", rr->user->id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(before);
    CU_ASSERT_PTR_NOT_NULL(strstr(before, "m=1024,t=1"));
    stop_auth();
    char *stronger[] = {"ARGON2_MEMORY_KIB=8192", "ARGON2_ITERATIONS=2", NULL};
    start_auth(stronger);
    CU_ASSERT_EQUAL(do_login(a, email, "rehash password", NULL, &e), ERR_OK);
    char *after =
        sql_text(a, "SELECT password_hash FROM credentials WHERE user_id = $1", rr->user->id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(after);
    CU_ASSERT_STRING_NOT_EQUAL(before, after);
    CU_ASSERT_PTR_NOT_NULL(strstr(after, "m=8192,t=2"));
    /* the upgraded hash still verifies, and is not upgraded again */
    CU_ASSERT_EQUAL(do_login(a, email, "rehash password", NULL, &e), ERR_OK);
    char *again =
        sql_text(a, "SELECT password_hash FROM credentials WHERE user_id = $1", rr->user->id);
    CU_ASSERT_STRING_EQUAL(after, again);
    CU_ASSERT_EQUAL(do_login(a, email, "wrong rehash password", NULL, &e), ERR_UNAUTHENTICATED);
    arena_free(a);
}

static bool wait_unauth(arena *a, const char *access, int ms)
{
    err_info e;
    for (int t = 0; t < ms; t += 100) {
        if (do_validate(a, access, NULL, &e) == ERR_UNAUTHENTICATED)
            return true;
        sleep_ms(100);
    }
    return false;
}

static void test_events_user_deleted(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "deleted");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "deleted password", "D", &rr, &e), ERR_OK);
    Auth__V1__TokenPair *p = NULL;
    CU_ASSERT_EQUAL_FATAL(do_login(a, email, "deleted password", &p, &e), ERR_OK);
    User__V1__DeleteUserRequest dr = USER__V1__DELETE_USER_REQUEST__INIT;
    dr.id = rr->user->id;
    Google__Protobuf__Empty *empty = NULL;
    CU_ASSERT_EQUAL_FATAL(call(g_user, "/user.v1.UserService/DeleteUser", &dr.base,
                               &google__protobuf__empty__descriptor, NULL, a, &empty, &e),
                          ERR_OK);
    CU_ASSERT_TRUE(wait_unauth(a, p->access_token, 10000));
    CU_ASSERT_TRUE(wait_unauth(a, rr->access_token, 2000));
    for (int t = 0; t < 50; t++) {
        if (sql_long("SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_time IS NULL",
                     rr->user->id) == 0)
            break;
        sleep_ms(100);
    }
    CU_ASSERT_EQUAL(sql_long("SELECT count(*) FROM sessions WHERE user_id = $1 AND revoke_reason "
                             "= 'user_deleted'",
                             rr->user->id),
                    2);
    CU_ASSERT_EQUAL(sql_long("SELECT count(*) FROM credentials WHERE user_id = $1", rr->user->id),
                    0);
    CU_ASSERT_EQUAL(do_refresh(a, p->refresh_token, NULL, &e), ERR_UNAUTHENTICATED);
    arena_free(a);
}

static long long redis_int(int argc, const char **argv)
{
    cache_reply *r = NULL;
    err_info e;
    err_clear(&e);
    long long v = -1;
    if (cache_command(g_redis, argc, argv, NULL, &r, &e) == ERR_OK) {
        if (cache_reply_kind(r) == CACHE_REPLY_INTEGER)
            v = cache_reply_int(r);
        else if (cache_reply_kind(r) == CACHE_REPLY_ARRAY && cache_reply_len(r) > 0 &&
                 cache_reply_kind(cache_reply_at(r, 0)) == CACHE_REPLY_INTEGER)
            v = cache_reply_int(cache_reply_at(r, 0));
    }
    cache_reply_free(r);
    return v;
}

static void test_events_reclaim_pending(void)
{
    /* A consumer of group auth-service read the event and died before acking it: the restarted
     * service must claim it (XAUTOCLAIM) and act on it. */
    arena *a = arena_new(0);
    err_info e;
    const char *email = unique_email(a, "pending");
    Auth__V1__RegisterResponse *rr = NULL;
    CU_ASSERT_EQUAL_FATAL(do_register(a, email, "pending password", "P", &rr, &e), ERR_OK);
    stop_auth();
    const char *xadd[] = {"XADD",
                          "events.user",
                          "*",
                          "type",
                          "user.deleted",
                          "user_id",
                          rr->user->id,
                          "event_id",
                          "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
                          "occurred_at",
                          "2026-11-22T00:00:00Z"};
    cache_reply *r = NULL;
    CU_ASSERT_EQUAL_FATAL(cache_command(g_redis, 11, xadd, NULL, &r, &e), ERR_OK);
    cache_reply_free(r);
    const char *read[] = {"XREADGROUP",    "GROUP",       "auth-service",
                          "dead-consumer", "COUNT",       "1000",
                          "STREAMS",       "events.user", ">"};
    r = NULL;
    CU_ASSERT_EQUAL_FATAL(cache_command(g_redis, 9, read, NULL, &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(cache_reply_kind(r), CACHE_REPLY_ARRAY);
    cache_reply_free(r);
    const char *pend[] = {"XPENDING", "events.user", "auth-service"};
    CU_ASSERT(redis_int(3, pend) >= 1);
    sleep_ms(600); /* idle longer than AUTH_EVENTS_CLAIM_IDLE_MS */
    start_auth(NULL);
    CU_ASSERT_TRUE(wait_unauth(a, rr->access_token, 10000));
    for (int t = 0; t < 50 && redis_int(3, pend) != 0; t++)
        sleep_ms(100);
    CU_ASSERT_EQUAL(redis_int(3, pend), 0);
    CU_ASSERT_EQUAL(sql_long("SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_time "
                             "IS NULL",
                             rr->user->id),
                    0);
    arena_free(a);
}

static void test_bootstrap_idempotent(void)
{
    /* after the restarts, still exactly one admin account, and it logs in */
    arena *a = arena_new(0);
    err_info e;
    User__V1__User *u = NULL;
    CU_ASSERT_EQUAL_FATAL(get_user_by_email(a, ADMIN_EMAIL, &u, &e), ERR_OK);
    CU_ASSERT_EQUAL(sql_long("SELECT count(*) FROM credentials WHERE user_id = $1", u->id), 1);
    CU_ASSERT_EQUAL(do_login(a, ADMIN_EMAIL, ADMIN_PASSWORD, NULL, &e), ERR_OK);
    CU_ASSERT_TRUE(user_has_role(a, u->id, "admin"));
    arena_free(a);
}

static void test_metrics(void)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import urllib.request as u; "
             "print(u.urlopen('http://127.0.0.1:%d/metrics', timeout=5).read().decode())\"",
             g_auth_mport);
    FILE *f = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    pclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "circuit_breaker_state{target=\"user\"} 0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "circuit_breaker_state{target=\"permission\"} 0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "auth_hash_jobs_total"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "grpc_server_handled_total"));
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 >= cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static void test_no_secrets_in_logs(void)
{
    track(ADMIN_PASSWORD);
    const char *logs[] = {g_log_auth, g_log_user, g_log_perm, g_log_misc};
    size_t total = 0;
    for (size_t i = 0; i < 4; i++) {
        size_t n = 0;
        char *text = slurp(logs[i], &n);
        if (!text)
            continue;
        total += n;
        for (size_t s = 0; s < g_nsecrets; s++) {
            if (strstr(text, g_secrets[s])) {
                fprintf(stderr, "secret #%zu found in %s\n", s, logs[i]);
                CU_FAIL("a password or token appears in a log");
            }
        }
        /* argon2 hashes never either */
        CU_ASSERT_PTR_NULL(strstr(text, "$argon2id$"));
        free(text);
    }
    fprintf(stderr, "checked %zu secrets against %zu bytes of logs\n", g_nsecrets, total);
    CU_ASSERT(g_nsecrets > 50);
    CU_ASSERT(total > 1000);
}

/* ---- setup ---- */

static void setup(void)
{
    g_auth_conninfo = xstrdup(ts_fresh_db("t_auth", "auth_svc"));
    g_user_conninfo = xstrdup(ts_db_conninfo("t_auth", "user_svc"));
    g_perm_conninfo = xstrdup(ts_db_conninfo("t_auth", "permission_svc"));
    ts_redis_flush(REDIS_DB);
    const char *bd = ts_need_env("IDENTITY_BUILD_DIR");
    snprintf(g_log_auth, sizeof g_log_auth, "%s/integration_auth.auth.log", bd);
    snprintf(g_log_user, sizeof g_log_user, "%s/integration_auth.user.log", bd);
    snprintf(g_log_perm, sizeof g_log_perm, "%s/integration_auth.permission.log", bd);
    snprintf(g_log_misc, sizeof g_log_misc, "%s/integration_auth.misc.log", bd);
    unlink(g_log_auth);
    unlink(g_log_user);
    unlink(g_log_perm);
    unlink(g_log_misc);
    snprintf(g_keys, sizeof g_keys, "%s/integration_auth.keys", bd);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", g_keys, g_keys);
    if (system(cmd) != 0)
        exit(1);
    err_info e;
    err_clear(&e);
    char path[400];
    snprintf(path, sizeof path, "%s/20260101T000000Z.pem", g_keys);
    if (jwt_key_generate(path, &e) != ERR_OK || !(g_ks = jwt_keyset_load_dir(g_keys, &e))) {
        fprintf(stderr, "keys: %s\n", e.msg);
        exit(1);
    }
    g_auth_port = ts_free_port();
    g_user_port = ts_free_port();
    g_perm_port = ts_free_port();
    /* auth first: bootstrap must wait for the peers */
    start_auth(NULL);
    sleep_ms(500);
    g_user_pid = start_peer("user-service", g_user_port, g_user_conninfo, g_log_user);
    g_perm_pid = start_peer("permission-service", g_perm_port, g_perm_conninfo, g_log_perm);
    g_auth = test_client(g_auth_port, "auth");
    g_user = test_client(g_user_port, "user");
    g_perm = test_client(g_perm_port, "permission");
    db_pool_opts dbo = {.conninfo = g_auth_conninfo,
                        .schema = "auth",
                        .size = 2,
                        .acquire_timeout_ms = 5000,
                        .statement_timeout_ms = 10000};
    g_db = db_pool_new(&dbo, &e);
    cache_opts ro = {.url = ts_redis_url_db(REDIS_DB), .timeout_ms = 2000, .backoff_max_ms = 100};
    g_redis = cache_new(&ro, &e);
    if (!g_auth || !g_user || !g_perm || !g_db || !g_redis) {
        fprintf(stderr, "setup failed: %s\n", e.msg);
        exit(1);
    }
}

static void teardown(void)
{
    rpc_client_free(g_auth);
    rpc_client_free(g_user);
    rpc_client_free(g_perm);
    if (g_auth_pid > 0)
        ts_stop(g_auth_pid, 15, 10000);
    if (g_user_pid > 0)
        ts_stop(g_user_pid, 15, 10000);
    if (g_perm_pid > 0)
        ts_stop(g_perm_pid, 15, 10000);
    db_pool_free(g_db);
    cache_free(g_redis);
    jwt_keyset_free(g_ks);
}

int main(void)
{
    log_init("test_auth", LOG_WARN);
    setup();
    static const ts_case cases[] = {
        {"bootstrap_admin_waits_for_peers", test_bootstrap_admin},
        {"register_login_validate_jwks", test_register_login_validate},
        {"register_errors", test_register_errors},
        {"disabled_user", test_disabled_user},
        {"lockout_and_expiry", test_lockout},
        {"refresh_rotation_and_reuse", test_refresh_rotation_and_reuse},
        {"concurrent_refresh_one_wins", test_concurrent_refresh},
        {"logout", test_logout},
        {"logout_all", test_logout_all},
        {"change_password", test_change_password},
        {"sessions_list_revoke", test_sessions},
        {"validate_token_attacks", test_validate_attacks},
        {"register_saga_compensation", test_register_saga_compensation},
        {"redis_down_fails_closed", test_redis_down_fails_closed},
        {"hash_pool_full", test_hash_pool_full},
        {"rehash_on_login", test_rehash_on_login},
        {"no_enumeration_timing", test_no_enumeration},
        {"events_user_deleted", test_events_user_deleted},
        {"events_reclaim_pending", test_events_reclaim_pending},
        {"bootstrap_idempotent", test_bootstrap_idempotent},
        {"metrics", test_metrics},
        {"no_secrets_in_logs", test_no_secrets_in_logs},
        {NULL, NULL},
    };
    int rc = ts_main("auth_integration", cases);
    teardown();
    return rc;
}
