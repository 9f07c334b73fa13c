/* auth_rpc: handlers of auth.v1.AuthService. Each validates its request into field violations,
 * calls auth_service and maps the result to protobuf in the call's arena. Also builds and tears
 * down the service's state for svc_main. */
#include "auth_rpc.h"

#include <dirent.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sodium.h>

#include "auth/v1/auth.pb-c.h"
#include "auth_bootstrap.h"
#include "auth_events.h"
#include "auth_hasher.h"
#include "auth_peers.h"
#include "auth_service.h"
#include "auth_store.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/uuid.h"
#include "common/metrics.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

const config_opt auth_config_opts[] = {
    {"USER_SERVICE_ADDR", CONFIG_STR, offsetof(auth_config, user_service_addr), "127.0.0.1:50052",
     0, 0, "user service (host:port)"},
    {"PERMISSION_SERVICE_ADDR", CONFIG_STR, offsetof(auth_config, permission_service_addr),
     "127.0.0.1:50053", 0, 0, "permission service (host:port)"},
    {"PEER_TIMEOUT_MS", CONFIG_INT, offsetof(auth_config, peer_timeout_ms), "5000", 10, 600000,
     "deadline of a call to user/permission when the caller set none (background work)"},
    {"JWT_KEYS_DIR", CONFIG_STR, offsetof(auth_config, jwt_keys_dir), "./keys", 0, 0,
     "directory of <kid>.pem EC P-256 private keys; the greatest kid signs, all verify"},
    {"JWT_KEY_AUTOGENERATE", CONFIG_BOOL, offsetof(auth_config, jwt_key_autogenerate), "false", 0,
     0, "create JWT_KEYS_DIR and a first key (kid = UTC time) when it holds none (dev, tests)"},
    {"JWT_ISSUER", CONFIG_STR, offsetof(auth_config, jwt_issuer), "identity", 0, 0,
     "iss of issued tokens, required on verification"},
    {"JWT_AUDIENCE", CONFIG_STR, offsetof(auth_config, jwt_audience), "identity-api", 0, 0,
     "aud of issued tokens, required on verification"},
    {"JWT_LEEWAY_SEC", CONFIG_INT, offsetof(auth_config, jwt_leeway_s), "30", 0, 300,
     "clock skew allowed on exp/nbf/iat"},
    {"ACCESS_TOKEN_TTL_SEC", CONFIG_INT, offsetof(auth_config, access_ttl_s), "900", 10, 86400,
     "access token lifetime"},
    {"REFRESH_TOKEN_TTL_SEC", CONFIG_INT, offsetof(auth_config, refresh_ttl_s), "604800", 10,
     31536000, "refresh token lifetime (sliding: each refresh starts it again)"},
    {"SESSION_MAX_LIFETIME_SEC", CONFIG_INT, offsetof(auth_config, session_max_s), "2592000", 10,
     315360000, "absolute lifetime of a session, whatever the refreshes"},
    {"ARGON2_MEMORY_KIB", CONFIG_INT, offsetof(auth_config, argon2_memory_kib), "19456", 8, 4194304,
     "argon2id memory (KiB); hashes made with other parameters are upgraded on login"},
    {"ARGON2_ITERATIONS", CONFIG_INT, offsetof(auth_config, argon2_iterations), "2", 1, 100,
     "argon2id iterations (t)"},
    {"HASH_WORKERS", CONFIG_INT, offsetof(auth_config, hash_workers), "2", 1, 256,
     "password hashing threads"},
    {"HASH_QUEUE", CONFIG_INT, offsetof(auth_config, hash_queue), "64", 0, 100000,
     "hash jobs waiting beyond the running ones; more → RESOURCE_EXHAUSTED at once"},
    {"HASH_NICE", CONFIG_INT, offsetof(auth_config, hash_nice), "5", 0, 19,
     "niceness of the hash worker threads, so that cheap RPCs win the CPU during a login storm"},
    {"LOGIN_MAX_FAILURES", CONFIG_INT, offsetof(auth_config, login_max_failures), "5", 1, 1000,
     "failed logins per email within the window before it is locked"},
    {"LOGIN_LOCKOUT_WINDOW_SEC", CONFIG_INT, offsetof(auth_config, login_window_s), "900", 1, 86400,
     "lockout window, from the first failure"},
    {"BOOTSTRAP_ADMIN_EMAIL", CONFIG_STR, offsetof(auth_config, bootstrap_email), "", 0, 0,
     "admin account ensured at start (with BOOTSTRAP_ADMIN_PASSWORD); empty = none"},
    {"BOOTSTRAP_ADMIN_PASSWORD", CONFIG_SECRET, offsetof(auth_config, bootstrap_password), "", 0, 0,
     "its initial password (used only when the account has no credential yet)"},
    {"AUTH_EVENTS_ENABLED", CONFIG_BOOL, offsetof(auth_config, events_enabled), "true", 0, 0,
     "consume events.user (user.deleted revokes the user's sessions)"},
    {"AUTH_EVENTS_CLAIM_IDLE_MS", CONFIG_INT, offsetof(auth_config, events_claim_idle_ms), "60000",
     0, 86400000, "pending entries idle this long are claimed (XAUTOCLAIM min-idle-time)"},
    {"AUTH_EVENTS_CLAIM_INTERVAL_MS", CONFIG_INT, offsetof(auth_config, events_claim_interval_ms),
     "30000", 100, 86400000, "how often to look for such entries"},
};
const size_t auth_config_nopts = sizeof auth_config_opts / sizeof auth_config_opts[0];

/* What handlers get as ctx->state. */
typedef struct auth_app {
    const auth_config *cfg;
    jwt_keyset *keys;
    auth_hasher *hasher;
    auth_store *store;
    auth_peers *peers;
    auth_service *svc;
    auth_events *events;
    auth_bootstrap *bootstrap;
    /* metrics (families owned by svc's registry) */
    metrics_family *m_hash_queued, *m_hash_running, *m_hash_rejected, *m_hash_done, *m_hash_dropped;
    unsigned long last_rejected, last_done, last_dropped;
    /* Calls that hash (Register, Login, ChangePassword) hold an RPC thread while they wait for the
     * pool: at most heavy_max at once, so that some RPC threads always stay free for cheap calls.
     */
    atomic_int heavy;
    int heavy_max;
} auth_app;

/* Admission for calls that hash; false = refused (RESOURCE_EXHAUSTED, retry after 1 s). */
static bool heavy_enter(rpc_ctx *ctx, err_info *e)
{
    auth_app *app = ctx->state;
    if (atomic_fetch_add(&app->heavy, 1) >= app->heavy_max) {
        atomic_fetch_sub(&app->heavy, 1);
        e->retry_after_s = 1;
        err_set(e, ERR_RESOURCE_EXHAUSTED, "too many sign-ins in progress, retry later");
        return false;
    }
    rpc_watch_cancel(ctx); /* so the hash pool can drop the job if the caller leaves */
    return true;
}

static void heavy_leave(rpc_ctx *ctx)
{
    atomic_fetch_sub(&((auth_app *)ctx->state)->heavy, 1);
}

static auth_service *svc_of(const rpc_ctx *ctx)
{
    return ((auth_app *)ctx->state)->svc;
}

/* Internal failures are logged in full here and answered with a generic message: SQL text and
 * peer details stay out of client responses. */
static err_code done(rpc_ctx *ctx, err_code rc, err_info *e)
{
    if (rc == ERR_INTERNAL || rc == ERR_UNKNOWN || rc == ERR_DATA_LOSS ||
        rc == ERR_FAILED_PRECONDITION || rc == ERR_ABORTED) {
        log_error(&ctx->log, "%s failed: %s", ctx->method, e->msg);
        err_clear(e);
        err_set(e, ERR_INTERNAL, "internal error");
        return ERR_INTERNAL;
    }
    return rc;
}

/* ---- validation ---- */

/* Trimmed, ASCII lower-cased copy of an email in a; false with why when not plausible. The user
 * service is the judge of the full syntax. */
static bool norm_email(arena *a, const char *in, const char **out, char *why, size_t wl)
{
    while (*in == ' ' || *in == '\t' || *in == '\r' || *in == '\n')
        in++;
    size_t n = strlen(in);
    while (n && (in[n - 1] == ' ' || in[n - 1] == '\t' || in[n - 1] == '\r' || in[n - 1] == '\n'))
        n--;
    if (n == 0) {
        snprintf(why, wl, "is required");
        return false;
    }
    if (n > 254) {
        snprintf(why, wl, "must be at most 254 characters");
        return false;
    }
    char *s = arena_strndup(a, in, n);
    const char *at = NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            s[i] = (char)(c + 32);
        if (c <= 0x20 || c == 0x7f) {
            snprintf(why, wl, "must not contain spaces or control characters");
            return false;
        }
        if (c == '@')
            at = s + i;
    }
    if (!at || at == s || at[1] == 0 || strchr(at + 1, '@')) {
        snprintf(why, wl, "must be an email address");
        return false;
    }
    *out = s;
    return true;
}

/* Counts UTF-8 code points; false on invalid UTF-8. */
static bool utf8_len(const char *s, size_t *chars)
{
    size_t n = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int extra = *p < 0x80         ? 0
                    : (*p >> 5) == 6  ? 1
                    : (*p >> 4) == 14 ? 2
                    : (*p >> 3) == 30 ? 3
                                      : -1;
        if (extra < 0)
            return false;
        p++;
        for (int i = 0; i < extra; i++, p++)
            if ((*p & 0xc0) != 0x80)
                return false;
        n++;
    }
    *chars = n;
    return true;
}

static bool valid_password(const char *pw, char *why, size_t wl)
{
    size_t n = 0;
    if (!utf8_len(pw, &n)) {
        snprintf(why, wl, "must be valid UTF-8");
        return false;
    }
    if (n < 8 || n > 128) {
        snprintf(why, wl, "must be 8 to 128 characters");
        return false;
    }
    return true;
}

static void uuid_field(err_info *e, const char *field, const char *v, bool required)
{
    if (!*v) {
        if (required)
            err_violation_add(e, field, "is required");
        return;
    }
    if (!uuid_valid(v))
        err_violation_add(e, field, "must be a UUID");
}

/* Refresh tokens we issue are 43 base64url characters; anything far off is not worth a query. */
static bool plausible_token(const char *t)
{
    return *t && strlen(t) <= 512;
}

/* ---- mapping ---- */

static Auth__V1__TokenPair *pair_pb(arena *a, const auth_tokens *t)
{
    Auth__V1__TokenPair *p = arena_alloc(a, sizeof *p);
    auth__v1__token_pair__init(p);
    p->access_token = (char *)t->access;
    p->refresh_token = (char *)t->refresh;
    p->token_type = "Bearer";
    p->expires_in = t->expires_in;
    p->refresh_expires_in = t->refresh_expires_in;
    return p;
}

static Google__Protobuf__Timestamp *ts_pb(arena *a, int64_t us)
{
    Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof *t);
    google__protobuf__timestamp__init(t);
    t->seconds = us / 1000000;
    t->nanos = (int32_t)((us % 1000000) * 1000);
    if (t->nanos < 0) {
        t->seconds -= 1;
        t->nanos += 1000000000;
    }
    return t;
}

/* ---- handlers ---- */

static err_code h_register(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                           err_info *e)
{
    const Auth__V1__RegisterRequest *req = (const Auth__V1__RegisterRequest *)m;
    const char *email = NULL;
    char why[128];
    if (!norm_email(ctx->arena, req->email, &email, why, sizeof why))
        err_violation_add(e, "email", "%s", why);
    if (!valid_password(req->password, why, sizeof why))
        err_violation_add(e, "password", "%s", why);
    if (!*req->display_name)
        err_violation_add(e, "display_name", "is required");
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    User__V1__User *u = NULL;
    auth_tokens t;
    memset(&t, 0, sizeof t);
    if (!heavy_enter(ctx, e))
        return ERR_RESOURCE_EXHAUSTED;
    err_code rc =
        auth_service_register(svc_of(ctx), ctx, email, req->password, req->display_name, &u, &t, e);
    heavy_leave(ctx);
    if (rc)
        return done(ctx, rc, e);
    Auth__V1__RegisterResponse *out = arena_alloc(ctx->arena, sizeof *out);
    auth__v1__register_response__init(out);
    out->user = u;
    out->access_token = (char *)t.access;
    out->refresh_token = (char *)t.refresh;
    out->token_type = "Bearer";
    out->expires_in = t.expires_in;
    out->refresh_expires_in = t.refresh_expires_in;
    *resp = &out->base;
    return ERR_OK;
}

static err_code h_login(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                        err_info *e)
{
    const Auth__V1__LoginRequest *req = (const Auth__V1__LoginRequest *)m;
    const char *email = NULL;
    char why[128];
    if (!*req->email)
        err_violation_add(e, "email", "is required");
    if (!*req->password)
        err_violation_add(e, "password", "is required");
    else if (strlen(req->password) > 4096)
        err_violation_add(e, "password", "is too long");
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    if (!norm_email(ctx->arena, req->email, &email, why, sizeof why)) {
        /* Not an address anyone can hold: the usual answer, counted like any other failure. The
         * normalised text still keys the counter so the lockout behaves the same. */
        email = arena_strndup(ctx->arena, req->email, 254);
    }
    auth_tokens t;
    memset(&t, 0, sizeof t);
    if (!heavy_enter(ctx, e))
        return ERR_RESOURCE_EXHAUSTED;
    err_code rc = auth_service_login(svc_of(ctx), ctx, email, req->password, &t, e);
    heavy_leave(ctx);
    if (rc)
        return done(ctx, rc, e);
    *resp = &pair_pb(ctx->arena, &t)->base;
    return ERR_OK;
}

static err_code h_refresh(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                          err_info *e)
{
    const Auth__V1__RefreshRequest *req = (const Auth__V1__RefreshRequest *)m;
    if (!*req->refresh_token)
        return err_violation_add(e, "refresh_token", "is required");
    if (!plausible_token(req->refresh_token))
        return err_set(e, ERR_UNAUTHENTICATED, "invalid refresh token");
    auth_tokens t;
    memset(&t, 0, sizeof t);
    err_code rc = auth_service_refresh(svc_of(ctx), ctx, req->refresh_token, &t, e);
    if (rc)
        return done(ctx, rc, e);
    *resp = &pair_pb(ctx->arena, &t)->base;
    return ERR_OK;
}

static ProtobufCMessage *empty(arena *a)
{
    Google__Protobuf__Empty *out = arena_alloc(a, sizeof *out);
    google__protobuf__empty__init(out);
    return &out->base;
}

static err_code h_logout(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                         err_info *e)
{
    const Auth__V1__LogoutRequest *req = (const Auth__V1__LogoutRequest *)m;
    uuid_field(e, "session_id", req->session_id, false);
    uuid_field(e, "user_id", req->user_id, false);
    if (strlen(req->jti) > 64)
        err_violation_add(e, "jti", "is too long");
    if (strlen(req->refresh_token) > 512)
        err_violation_add(e, "refresh_token", "is too long");
    if (!*req->refresh_token && !*req->session_id && !*req->jti)
        err_violation_add(e, "refresh_token",
                          "one of refresh_token, session_id or jti is required");
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    err_code rc = auth_service_logout(svc_of(ctx), ctx, req->refresh_token, req->jti,
                                      req->session_id, req->user_id, e);
    if (rc)
        return done(ctx, rc, e);
    *resp = empty(ctx->arena);
    return ERR_OK;
}

static err_code h_logout_all(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                             err_info *e)
{
    const Auth__V1__LogoutAllRequest *req = (const Auth__V1__LogoutAllRequest *)m;
    uuid_field(e, "user_id", req->user_id, true);
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    err_code rc = auth_service_logout_all(svc_of(ctx), ctx, req->user_id, e);
    if (rc)
        return done(ctx, rc, e);
    *resp = empty(ctx->arena);
    return ERR_OK;
}

static err_code h_change_password(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                                  err_info *e)
{
    const Auth__V1__ChangePasswordRequest *req = (const Auth__V1__ChangePasswordRequest *)m;
    char why[128];
    uuid_field(e, "user_id", req->user_id, true);
    uuid_field(e, "session_id", req->session_id, false);
    if (!*req->current_password)
        err_violation_add(e, "current_password", "is required");
    else if (strlen(req->current_password) > 4096)
        err_violation_add(e, "current_password", "is incorrect");
    if (!valid_password(req->new_password, why, sizeof why))
        err_violation_add(e, "new_password", "%s", why);
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    if (!heavy_enter(ctx, e))
        return ERR_RESOURCE_EXHAUSTED;
    err_code rc =
        auth_service_change_password(svc_of(ctx), ctx, req->user_id, req->current_password,
                                     req->new_password, req->session_id, e);
    heavy_leave(ctx);
    if (rc)
        return done(ctx, rc, e);
    *resp = empty(ctx->arena);
    return ERR_OK;
}

static err_code h_list_sessions(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                                err_info *e)
{
    const Auth__V1__ListSessionsRequest *req = (const Auth__V1__ListSessionsRequest *)m;
    uuid_field(e, "user_id", req->user_id, true);
    uuid_field(e, "current_session_id", req->current_session_id, false);
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    auth_session_rec *recs = NULL;
    size_t n = 0;
    err_code rc = auth_service_list_sessions(svc_of(ctx), ctx, req->user_id, &recs, &n, e);
    if (rc)
        return done(ctx, rc, e);
    Auth__V1__ListSessionsResponse *out = arena_alloc(ctx->arena, sizeof *out);
    auth__v1__list_sessions_response__init(out);
    out->sessions = arena_alloc(ctx->arena, sizeof *out->sessions * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        Auth__V1__Session *s = arena_alloc(ctx->arena, sizeof *s);
        auth__v1__session__init(s);
        s->id = arena_strdup(ctx->arena, recs[i].id);
        s->create_time = ts_pb(ctx->arena, recs[i].create_us);
        s->last_used_time = ts_pb(ctx->arena, recs[i].last_used_us);
        s->expire_time = ts_pb(ctx->arena, recs[i].expire_us);
        s->user_agent = (char *)recs[i].user_agent;
        s->ip = (char *)recs[i].ip;
        s->current =
            *req->current_session_id && strcasecmp(recs[i].id, req->current_session_id) == 0;
        out->sessions[i] = s;
    }
    out->n_sessions = n;
    *resp = &out->base;
    return ERR_OK;
}

static err_code h_revoke_session(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                                 err_info *e)
{
    const Auth__V1__RevokeSessionRequest *req = (const Auth__V1__RevokeSessionRequest *)m;
    uuid_field(e, "session_id", req->session_id, true);
    uuid_field(e, "user_id", req->user_id, false);
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    err_code rc = auth_service_revoke_session(svc_of(ctx), ctx, req->session_id, req->user_id, e);
    if (rc)
        return done(ctx, rc, e);
    *resp = empty(ctx->arena);
    return ERR_OK;
}

static err_code h_validate(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                           err_info *e)
{
    const Auth__V1__ValidateTokenRequest *req = (const Auth__V1__ValidateTokenRequest *)m;
    const char *tok = req->access_token;
    if (strncasecmp(tok, "Bearer ", 7) == 0)
        tok += 7;
    if (!*tok)
        return err_violation_add(e, "access_token", "is required");
    jwt_claims c;
    err_code rc = auth_service_validate(svc_of(ctx), tok, &c, e);
    if (rc)
        return done(ctx, rc, e);
    Auth__V1__Claims *cl = arena_alloc(ctx->arena, sizeof *cl);
    auth__v1__claims__init(cl);
    cl->iss = arena_strdup(ctx->arena, c.iss);
    cl->aud = arena_strdup(ctx->arena, c.aud);
    cl->sub = arena_strdup(ctx->arena, c.sub);
    cl->sid = arena_strdup(ctx->arena, c.sid);
    cl->jti = arena_strdup(ctx->arena, c.jti);
    cl->iat = c.iat;
    cl->exp = c.exp;
    Auth__V1__ValidateTokenResponse *out = arena_alloc(ctx->arena, sizeof *out);
    auth__v1__validate_token_response__init(out);
    out->claims = cl;
    *resp = &out->base;
    return ERR_OK;
}

typedef struct jwks_build {
    arena *a;
    Auth__V1__Jwks *out;
} jwks_build;

static void jwks_add(void *arg, const char *kid, const char *x, const char *y)
{
    jwks_build *b = arg;
    Auth__V1__JsonWebKey *k = arena_alloc(b->a, sizeof *k);
    auth__v1__json_web_key__init(k);
    k->kty = "EC";
    k->crv = "P-256";
    k->x = arena_strdup(b->a, x);
    k->y = arena_strdup(b->a, y);
    k->kid = arena_strdup(b->a, kid);
    k->use = "sig";
    k->alg = "ES256";
    b->out->keys[b->out->n_keys++] = k;
}

static err_code h_jwks(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                       err_info *e)
{
    (void)m;
    (void)e;
    const jwt_keyset *ks = auth_service_keys(svc_of(ctx));
    Auth__V1__Jwks *out = arena_alloc(ctx->arena, sizeof *out);
    auth__v1__jwks__init(out);
    size_t n = jwt_keyset_count(ks);
    out->keys = arena_alloc(ctx->arena, sizeof *out->keys * (n ? n : 1));
    jwks_build b = {.a = ctx->arena, .out = out};
    jwt_keyset_each(ks, jwks_add, &b);
    *resp = &out->base;
    return ERR_OK;
}

/* B: the handler blocks (a worker runs it); NB: it answers from memory (the polling thread). */
#define M(name, req, resp, h, nb)                                                                  \
    {                                                                                              \
        "/auth.v1.AuthService/" name, &req##__descriptor, &resp##__descriptor, h, nb               \
    }
#define B false
#define NB true
const rpc_method auth_rpc_methods[] = {
    M("Register", auth__v1__register_request, auth__v1__register_response, h_register, B),
    M("Login", auth__v1__login_request, auth__v1__token_pair, h_login, B),
    M("Refresh", auth__v1__refresh_request, auth__v1__token_pair, h_refresh, B),
    M("Logout", auth__v1__logout_request, google__protobuf__empty, h_logout, B),
    M("LogoutAll", auth__v1__logout_all_request, google__protobuf__empty, h_logout_all, B),
    M("ChangePassword", auth__v1__change_password_request, google__protobuf__empty,
      h_change_password, B),
    M("ListSessions", auth__v1__list_sessions_request, auth__v1__list_sessions_response,
      h_list_sessions, B),
    M("RevokeSession", auth__v1__revoke_session_request, google__protobuf__empty, h_revoke_session,
      B),
    M("ValidateToken", auth__v1__validate_token_request, auth__v1__validate_token_response,
      h_validate, B),
    M("GetJwks", auth__v1__get_jwks_request, auth__v1__jwks, h_jwks, NB),
};
#undef M
#undef B
#undef NB
const size_t auth_rpc_nmethods = sizeof auth_rpc_methods / sizeof auth_rpc_methods[0];

/* ---- start / stop ---- */

static bool dir_has_pem(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        found = l > 4 && de->d_name[0] != '.' && strcmp(de->d_name + l - 4, ".pem") == 0;
    }
    closedir(d);
    return found;
}

static jwt_keyset *load_keys(const auth_config *cfg, err_info *e)
{
    if (cfg->jwt_key_autogenerate && !dir_has_pem(cfg->jwt_keys_dir)) {
        if (mkdir(cfg->jwt_keys_dir, 0700) != 0 && errno != EEXIST) {
            err_set(e, ERR_UNAVAILABLE, "JWT_KEYS_DIR %s: %s", cfg->jwt_keys_dir, strerror(errno));
            return NULL;
        }
        char kid[32], path[4096];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(kid, sizeof kid, "%Y%m%dT%H%M%SZ", &tm);
        snprintf(path, sizeof path, "%s/%s.pem", cfg->jwt_keys_dir, kid);
        if (jwt_key_generate(path, e) != ERR_OK)
            return NULL;
        log_info(NULL, "generated signing key %s in %s", kid, cfg->jwt_keys_dir);
    }
    return jwt_keyset_load_dir(cfg->jwt_keys_dir, e);
}

static void app_free(auth_app *app)
{
    if (!app)
        return;
    auth_bootstrap_stop(app->bootstrap);
    auth_events_stop(app->events);
    auth_service_free(app->svc);
    auth_peers_free(app->peers);
    auth_store_free(app->store);
    auth_hasher_free(app->hasher);
    jwt_keyset_free(app->keys);
    free(app);
}

/* Sets the hash pool's gauges before each scrape (the breakers' are rpc_client's). */
static void collect(void *arg)
{
    auth_app *app = arg;
    auth_hasher_stats st;
    auth_hasher_stats_get(app->hasher, &st);
    metrics_gauge_set(metrics_series_get(app->m_hash_queued, NULL), st.queued);
    metrics_gauge_set(metrics_series_get(app->m_hash_running, NULL), st.running);
    metrics_counter_add(metrics_series_get(app->m_hash_rejected, NULL),
                        (double)(st.rejected - app->last_rejected));
    metrics_counter_add(metrics_series_get(app->m_hash_done, NULL),
                        (double)(st.done - app->last_done));
    metrics_counter_add(metrics_series_get(app->m_hash_dropped, NULL),
                        (double)(st.dropped - app->last_dropped));
    app->last_rejected = st.rejected;
    app->last_done = st.done;
    app->last_dropped = st.dropped;
}

static void metrics_init(auth_app *app, metrics_registry *r)
{
    app->m_hash_queued =
        metrics_family_new(r, METRICS_GAUGE, "auth_hash_queue_length",
                           "password hash jobs waiting for a worker", NULL, NULL, 0);
    app->m_hash_running = metrics_family_new(r, METRICS_GAUGE, "auth_hash_running",
                                             "password hash jobs running", NULL, NULL, 0);
    app->m_hash_rejected =
        metrics_family_new(r, METRICS_COUNTER, "auth_hash_rejected_total",
                           "hash jobs refused because the queue was full", NULL, NULL, 0);
    app->m_hash_done = metrics_family_new(r, METRICS_COUNTER, "auth_hash_jobs_total",
                                          "password hash/verify jobs completed", NULL, NULL, 0);
    app->m_hash_dropped =
        metrics_family_new(r, METRICS_COUNTER, "auth_hash_dropped_total",
                           "queued hash jobs dropped because the caller had left", NULL, NULL, 0);
    metrics_on_collect(r, collect, app);
}

err_code auth_rpc_start(svc_env *env, err_info *e)
{
    const auth_config *cfg = env->svc_cfg;
    if (sodium_init() < 0)
        return err_set(e, ERR_INTERNAL, "libsodium init failed");
    auth_app *app = xcalloc(1, sizeof *app);
    app->cfg = cfg;
    app->keys = load_keys(cfg, e);
    if (!app->keys) {
        err_prefix(e, "JWT keys: ");
        app_free(app);
        return e->code ? e->code : ERR_INVALID_ARGUMENT;
    }
    auth_hasher_opts ho = {.workers = cfg->hash_workers,
                           .queue = cfg->hash_queue,
                           .iterations = cfg->argon2_iterations,
                           .memory_kib = cfg->argon2_memory_kib,
                           .nice = cfg->hash_nice};
    app->hasher = auth_hasher_new(&ho, e);
    if (!app->hasher) {
        app_free(app);
        return e->code ? e->code : ERR_INVALID_ARGUMENT;
    }
    /* Leave at least one RPC thread for cheap calls; never admit more than the pool can hold. */
    int threads = env->cfg->rpc_threads > 0 ? env->cfg->rpc_threads : 2;
    app->heavy_max = threads - 1 < cfg->hash_workers + cfg->hash_queue
                         ? threads - 1
                         : cfg->hash_workers + cfg->hash_queue;
    if (app->heavy_max < 1)
        app->heavy_max = 1;
    atomic_init(&app->heavy, 0);
    app->store = auth_store_new(env->cache);
    auth_peers_opts po = {.user_addr = cfg->user_service_addr,
                          .permission_addr = cfg->permission_service_addr,
                          .timeout_ms = cfg->peer_timeout_ms};
    app->peers = auth_peers_new(&po, env->metrics, e);
    if (!app->peers) {
        app_free(app);
        return e->code ? e->code : ERR_INVALID_ARGUMENT;
    }
    auth_service_opts so = {.issuer = cfg->jwt_issuer,
                            .audience = cfg->jwt_audience,
                            .leeway_s = cfg->jwt_leeway_s,
                            .access_ttl_s = cfg->access_ttl_s,
                            .refresh_ttl_s = cfg->refresh_ttl_s,
                            .session_max_s = cfg->session_max_s,
                            .login_max_failures = cfg->login_max_failures,
                            .login_window_s = cfg->login_window_s};
    app->svc = auth_service_new(&so, env->db, app->store, app->hasher, app->keys, app->peers);
    if (cfg->events_enabled) {
        int block = env->cfg->redis_timeout_ms / 2;
        auth_events_opts eo = {.block_ms = block > 1000 ? 1000 : (block < 10 ? 10 : block),
                               .claim_idle_ms = cfg->events_claim_idle_ms,
                               .claim_interval_ms = cfg->events_claim_interval_ms};
        app->events = auth_events_start(app->svc, env->cache, &eo);
    }
    if (*cfg->bootstrap_email) {
        if (!*cfg->bootstrap_password) {
            log_warn(NULL, "BOOTSTRAP_ADMIN_EMAIL set without BOOTSTRAP_ADMIN_PASSWORD: skipped");
        } else {
            char why[128];
            if (!valid_password(cfg->bootstrap_password, why, sizeof why)) {
                err_set(e, ERR_INVALID_ARGUMENT, "BOOTSTRAP_ADMIN_PASSWORD %s", why);
                app_free(app);
                return ERR_INVALID_ARGUMENT;
            }
            arena *a = arena_new(0);
            const char *email = NULL;
            if (!norm_email(a, cfg->bootstrap_email, &email, why, sizeof why)) {
                err_set(e, ERR_INVALID_ARGUMENT, "BOOTSTRAP_ADMIN_EMAIL %s", why);
                arena_free(a);
                app_free(app);
                return ERR_INVALID_ARGUMENT;
            }
            app->bootstrap = auth_bootstrap_start(app->svc, email, cfg->bootstrap_password);
            arena_free(a);
        }
    }
    if (env->metrics)
        metrics_init(app, env->metrics);
    log_info(NULL,
             "auth ready: %zu signing key(s), argon2id m=%d KiB t=%d, %d hash workers, at most %d "
             "hashing calls of %d RPC threads",
             jwt_keyset_count(app->keys), cfg->argon2_memory_kib, cfg->argon2_iterations,
             cfg->hash_workers, app->heavy_max, threads);
    env->state = app;
    return ERR_OK;
}

void auth_rpc_stop(svc_env *env)
{
    app_free(env->state);
    env->state = NULL;
}
