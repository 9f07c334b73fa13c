/* http_server: the request pipeline in front of the gRPC services, on gateway/httpd. Each request
 * is a small state machine: routed, token-verified and transcoded on the HTTP loop's thread, then
 * its Redis step (revocation + rate limit, batched with other requests' by common/cache_mux),
 * permission.Check and the route's RPC run on the mux and gRPC threads, each step starting the
 * next; the last one writes the answer from where it runs. No thread waits on I/O. Per-request
 * memory lives in one arena freed when the answer is written. */
#include "http_server.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/fmt.h"
#include "common/log.h"
#include "common/pbjson.h"
#include "errors.h"
#include "httpd.h"
#include "grpc/health/v1/health.pb-c.h"
#include "middleware.h"
#include "openapi.h"
#include "permission/v1/permission.pb-c.h"
#include "transcode.h"

struct http_server {
    http_deps d;
    httpd *h;
    int port;
    atomic_bool draining;
    atomic_int inflight; /* requests not answered yet */
    atomic_int refs;     /* request objects alive (the answer or a pending callback holds them) */
    char *openapi;
    size_t openapi_len;
    metrics_family *m_total, *m_duration, *m_rl, *m_gone;
};

/* Where a request waiting on a service is: which step's completion comes next. */
typedef enum phase { PH_REDIS, PH_CHECK, PH_RPC } phase;

#define READY_CHECKS SVC_COUNT

typedef struct req {
    http_server *s;
    httpd_req *hr; /* until the answer is written */
    arena *a;
    atomic_int refs;
    int64_t start_ms, deadline_ms;
    char request_id[129];
    char trace_id[33], span_id[17], traceparent[56];
    char client_ip[64];
    const char *method, *path, *origin, *user_agent;
    routes_match m;
    bool authed;
    jwt_claims claims;
    ProtobufCMessage *msg;
    rl_result rl;
    bool rl_set;
    /* the Redis step: revocation MGET and/or rate-limit EVALSHA, one job for cache_mux */
    phase ph;
    authn_cmd ac;
    ratelimit_cmd rlc;
    char rl_key[160];
    const char *rl_kind; /* rate_limit_rejections_total{limiter} */
    int rl_limit, ix_mget, ix_rl;
    /* An arena copy made only on failure: an err_info is ~4 KiB, and zeroing one per request
     * took more of it than the route lookup. */
    err_info *terr;    /* a transcoding error, reported after the Redis step */
    rpc_cancel cancel; /* fired when the client leaves first: the service stops working for it */
    atomic_int pending;
    routes_svc call_svc;
    arena *ready_arena[READY_CHECKS];
    err_code ready_rc[READY_CHECKS];
    ProtobufCMessage *ready_resp[READY_CHECKS];
    bool ready_redis;
    int status;
} req;

/* ---------- request lifetime ---------- */

static void req_unref(req *q)
{
    if (atomic_fetch_sub(&q->refs, 1) != 1)
        return;
    http_server *s = q->s;
    for (int i = 0; i < READY_CHECKS; i++)
        arena_free(q->ready_arena[i]);
    rpc_cancel_destroy(&q->cancel);
    arena_free(q->a);
    free(q);
    atomic_fetch_sub(&s->refs, 1);
}

/* ---------- responses ---------- */

static const char *hdr(req *q, const char *name)
{
    return httpd_get(q->hr, name);
}

/* Status line and the headers every answer carries. */
static void resp_begin(req *q, int status, const char *ctype, size_t len)
{
    httpd_req *r = q->hr;
    q->status = status;
    httpd_begin(r, status);
    httpd_header(r, "X-Request-Id", q->request_id);
    httpd_header(r, "X-Content-Type-Options", "nosniff");
    httpd_header(r, "X-Frame-Options", "DENY");
    httpd_header(r, "Referrer-Policy", "no-referrer");
    httpd_header(r, "Content-Security-Policy", "default-src 'none'");
    httpd_header(r, "Vary", "Origin");
    if (q->m.route && (q->m.route->flags & RF_NO_STORE)) {
        httpd_header(r, "Cache-Control", "no-store");
        httpd_header(r, "Pragma", "no-cache");
    }
    if (q->origin) {
        httpd_header(r, "Access-Control-Allow-Origin", q->origin);
        httpd_header(r, "Access-Control-Allow-Credentials", "true");
        httpd_header(r, "Access-Control-Expose-Headers",
                     "X-Request-Id, RateLimit-Limit, RateLimit-Remaining, "
                     "RateLimit-Reset, Retry-After, WWW-Authenticate");
    }
    if (q->rl_set) {
        char v[FMT_INT_MAX];
        fmt_i64(v, q->rl.limit);
        httpd_header(r, "RateLimit-Limit", v);
        fmt_i64(v, q->rl.remaining);
        httpd_header(r, "RateLimit-Remaining", v);
        fmt_i64(v, q->rl.reset_s);
        httpd_header(r, "RateLimit-Reset", v);
    }
    if (ctype && len)
        httpd_header(r, "Content-Type", ctype);
}

static void req_complete(req *q);

/* The body; the request is over after (metrics, log, its memory). */
static void resp_end(req *q, const char *body, size_t len)
{
    httpd_end(q->hr, body, len);
    q->hr = NULL;
    req_complete(q);
}

static void send_raw(req *q, int status, const char *body, size_t len, const char *ctype)
{
    resp_begin(q, status, ctype, len);
    resp_end(q, body, len);
}

/* An error answer; http_status 0 = the code's own mapping. */
static void send_error(req *q, const err_info *e, int http_status, const char *allow)
{
    size_t len = 0;
    char *body = errors_body(q->a, e, q->request_id, &len);
    int status = http_status ? http_status : errors_http_status(e->code);
    resp_begin(q, status, "application/json", len);
    if (status == 401)
        httpd_header(q->hr, "WWW-Authenticate", "Bearer realm=\"identity\"");
    if (allow)
        httpd_header(q->hr, "Allow", allow);
    if (status == 429 || status == 503) {
        char v[FMT_INT_MAX];
        fmt_i64(v, e->retry_after_s > 0 ? e->retry_after_s : 1);
        httpd_header(q->hr, "Retry-After", v);
    }
    resp_end(q, body, len);
}

static void send_code(req *q, err_code code, int http_status, const char *msg)
{
    err_info e;
    err_clear(&e);
    err_set(&e, code, "%s", msg);
    send_error(q, &e, http_status, NULL);
}

static void send_json(req *q, int status, const char *body, size_t len)
{
    send_raw(q, status, body, len, "application/json");
}

/* ---------- asynchronous steps ---------- */

static void send_upstream_error(req *q, err_info *e);

/* An error kept past the call that reported it, in the request's arena. */
static err_info *err_copy(arena *a, const err_info *e)
{
    err_info *c = arena_alloc(a, sizeof *c);
    *c = *e;
    return c;
}

/* Ends a waiting request with an error, from the thread that found it (from_upstream: scrub
 * transport details first). */
static void async_fail(req *q, const err_info *e, int http_status, bool from_upstream)
{
    err_info c = *e;
    if (from_upstream)
        send_upstream_error(q, &c);
    else
        send_error(q, &c, http_status, NULL);
}

static void async_fail_code(req *q, err_code code, const char *msg)
{
    err_info e;
    err_clear(&e);
    err_set(&e, code, "%s", msg);
    async_fail(q, &e, 0, false);
}

static void fill_md(req *q, rpc_metadata *md)
{
    md->request_id = q->request_id;
    md->traceparent = q->traceparent;
    /* Not the bearer token: no service reads it (they trust the verified x-actor-id), and a
     * token copied into every internal call is one more place it can leak from. */
    md->authorization = "";
    md->user_agent = q->user_agent ? q->user_agent : "";
    md->client_ip = q->client_ip;
    md->actor_id = q->authed ? q->claims.sub : "";
}

static void on_done(void *arg, err_code code, ProtobufCMessage *resp, const err_info *e);
static void respond_rpc(req *q, ProtobufCMessage *resp, err_info *e);

/* Starts a call for a waiting request; on_done runs when it completes (on a gRPC thread, or
 * right here when the call cannot start). */
static void start_call(req *q, routes_svc svc, const char *method, const ProtobufCMessage *msg,
                       const ProtobufCMessageDescriptor *rd, phase ph)
{
    rpc_metadata *md = arena_alloc(q->a, sizeof *md);
    fill_md(q, md);
    rpc_call_opts o = {.md = md, .deadline_ms = q->deadline_ms, .cancel = &q->cancel};
    q->ph = ph;
    q->call_svc = svc;
    atomic_fetch_add(&q->refs, 1);
    err_info e;
    err_clear(&e);
    /* The client's breaker, retries and deadline margin apply here (common/rpc_client). An open
     * circuit is refused at once: UNAVAILABLE "circuit open: <svc>" with e.retry_after_s = the
     * remaining open time, answered as 503 + Retry-After by send_upstream_error. */
    if (rpc_client_call_async(upstream_client(q->s->d.up, svc), method, msg, rd, &o, q->a, on_done,
                              q, &e) != ERR_OK) {
        if (e.code == ERR_OK)
            e.code = ERR_UNAVAILABLE;
        on_done(q, e.code, NULL, &e);
    }
}

static void start_rpc(req *q)
{
    const routes_route *r = q->m.route;
    start_call(q, r->svc, r->rpc, q->msg, r->resp, PH_RPC);
}

static const char *perm_needed(req *q)
{
    const routes_route *r = q->m.route;
    switch (r->rule) {
    case RULE_NONE:
        return NULL;
    case RULE_PERM:
        return r->perm;
    case RULE_SELF_OR_PERM: {
        const char *id = transcode_get_str(q->msg, r->self);
        bool self = strcasecmp(id, q->claims.sub) == 0;
        if (!self)
            return r->perm;
        if ((r->flags & RF_STATUS_WRITE) && transcode_mask_has(q->msg, "status"))
            return "users:write";
        return NULL;
    }
    }
    return r->perm;
}

/* permission.Check when the route's rule asks for it, else the route's RPC. */
static void authorize_then_call(req *q)
{
    const char *perm = q->authed ? perm_needed(q) : NULL;
    if (!perm) {
        start_rpc(q);
        return;
    }
    Permission__V1__CheckRequest *cr = arena_alloc(q->a, sizeof *cr);
    permission__v1__check_request__init(cr);
    cr->user_id = q->claims.sub;
    cr->permission = (char *)perm;
    start_call(q, SVC_PERMISSION, "/permission.v1.PermissionService/Check", &cr->base,
               &permission__v1__check_response__descriptor, PH_CHECK);
}

static void on_done(void *arg, err_code code, ProtobufCMessage *resp, const err_info *e)
{
    req *q = arg;
    err_info ce;
    err_clear(&ce);
    if (code != ERR_OK && e)
        ce = *e;
    ce.code = code;
    if (q->ph == PH_CHECK) {
        const Permission__V1__CheckResponse *cr = (const void *)resp;
        if (code != ERR_OK) {
            /* The permission service failed: never fail open. */
            if (ce.code != ERR_DEADLINE_EXCEEDED)
                ce.code = ERR_UNAVAILABLE;
            async_fail(q, &ce, 0, true);
        } else if (!cr || !cr->allowed) {
            async_fail_code(q, ERR_PERMISSION_DENIED, "permission denied");
        } else {
            start_rpc(q);
        }
    } else {
        respond_rpc(q, resp, code != ERR_OK ? &ce : NULL);
    }
    req_unref(q);
}

/* The Redis step's verdict (on the mux thread, or on the loop thread when there is no Redis work):
 * revocation first (fail closed), then the rate limit, then a deferred transcoding error. */
static void on_redis(void *arg, cache_reply **replies, const err_info *re)
{
    req *q = arg;
    http_server *s = q->s;
    bool ok = re && re->code == ERR_OK && replies;
    err_info e;
    err_clear(&e);
    if (q->m.route->auth == AUTH_SIGNED_IN) {
        const cache_reply *mget = ok && q->ix_mget >= 0 ? replies[q->ix_mget] : NULL;
        if (authn_revocation_finish(&q->claims, mget, &e) != ERR_OK) {
            async_fail(q, &e, 0, false);
            goto out;
        }
    }
    if (q->rl_limit > 0) {
        if (q->ix_rl >= 0)
            ratelimit_finish(s->d.rl, &q->rlc, ok ? replies[q->ix_rl] : NULL, &q->rl);
        else
            ratelimit_check(s->d.rl, q->rl_key, q->rl_limit, &q->rl);
        q->rl_set = true;
        if (!q->rl.allowed) {
            const char *lv[] = {q->rl_kind};
            metrics_inc(s->m_rl, lv);
            err_set(&e, ERR_RESOURCE_EXHAUSTED, "rate limit exceeded; retry later");
            e.retry_after_s = q->rl.retry_after_s;
            async_fail(q, &e, 0, false);
            goto out;
        }
    }
    if (q->m.route->auth == AUTH_SIGNED_IN)
        q->authed = true;
    if (q->terr) {
        async_fail(q, q->terr, 0, false);
        goto out;
    }
    authorize_then_call(q);
out:
    req_unref(q);
}

/* ---------- pipeline ---------- */

static void serve_local(req *q);

/* Local token verification (signature, claims; cached). Answers and returns false on failure. */
static bool verify_token(req *q)
{
    const char *token = mw_bearer(hdr(q, "Authorization"));
    err_info e;
    err_clear(&e);
    if (!token) {
        send_code(q, ERR_UNAUTHENTICATED, 0, "missing bearer token");
        return false;
    }
    err_code rc = authn_verify(q->s->d.an, token, &q->claims, &e);
    if (rc == ERR_NOT_FOUND && upstream_refresh_keys_now(q->s->d.up, q->s->d.an)) {
        err_clear(&e);
        rc = authn_verify(q->s->d.an, token, &q->claims, &e);
    }
    if (rc == ERR_OK)
        return true;
    if (rc == ERR_NOT_FOUND) {
        send_code(q, ERR_UNAUTHENTICATED, 0, "invalid access token");
    } else if (rc == ERR_UNAVAILABLE) {
        e.retry_after_s = 1;
        send_error(q, &e, 0, NULL);
    } else {
        send_code(q, ERR_UNAUTHENTICATED, 0, "invalid or expired access token");
    }
    return false;
}

/* Builds the request message; a failure is kept and answered after the Redis step, so that a
 * revoked or rate-limited caller is told so before being told about its body. */
static void transcode(req *q)
{
    const routes_route *r = q->m.route;
    char cookie[1024];
    char etag[256];
    transcode_input in = {0};
    in.body = q->hr->body;
    in.body_len = q->hr->body_len;
    in.query = q->hr->query;
    in.nquery = q->hr->nquery;
    const char *im = hdr(q, "If-Match");
    if (im) {
        mw_etag_from_if_match(im, etag, sizeof etag);
        in.if_match = etag;
    }
    if ((r->flags & RF_READ_COOKIE) &&
        mw_cookie_get(hdr(q, "Cookie"), "refresh_token", cookie, sizeof cookie))
        in.cookie_refresh = cookie;
    if (r->auth == AUTH_SIGNED_IN) {
        in.sub = q->claims.sub;
        in.sid = q->claims.sid;
        in.jti = q->claims.jti;
    }
    err_info te;
    err_clear(&te);
    if (transcode_request(r, &q->m, &in, q->a, &q->msg, &te) != ERR_OK)
        q->terr = err_copy(q->a, &te);
}

static void send_no_route(req *q)
{
    if (q->m.allow[0]) {
        err_info e;
        err_clear(&e);
        err_set(&e, ERR_UNIMPLEMENTED, "method %s not allowed on this path", q->method);
        send_error(q, &e, 405, q->m.allow);
        return;
    }
    send_code(q, ERR_NOT_FOUND, 404, "no route for this path");
}

static void process(req *q)
{
    const routes_route *r = q->m.route;
    const gw_config *cfg = q->s->d.cfg;
    if (r->local != LOCAL_NONE) {
        serve_local(q);
        return;
    }

    /* 1. the token, locally */
    if (r->auth == AUTH_SIGNED_IN && !verify_token(q))
        return;

    /* 2. which rate limit: per user when signed in, else per client IP */
    if (r->auth == AUTH_SIGNED_IN) {
        q->rl_limit = cfg->rl_user_rpm;
        q->rl_kind = "user";
        fmt_cat(q->rl_key, sizeof q->rl_key, "user:", q->claims.sub);
    } else if (r->limit == LIMIT_AUTH) {
        q->rl_limit = cfg->rl_auth_rpm;
        q->rl_kind = "auth";
        fmt_cat(q->rl_key, sizeof q->rl_key, "auth:", q->client_ip);
    } else if (r->limit == LIMIT_DEFAULT) {
        q->rl_limit = cfg->rl_anon_rpm;
        q->rl_kind = "anon";
        fmt_cat(q->rl_key, sizeof q->rl_key, "anon:", q->client_ip);
    }

    /* 3. the request message */
    transcode(q);

    /* 4. revocation and rate limit in one Redis job, then authorization and the RPC run off this
     * thread, each step starting the next; q is not touched here after the submit */
    cache_mux_cmd cmds[2];
    int n = 0;
    q->ix_mget = q->ix_rl = -1;
    if (r->auth == AUTH_SIGNED_IN && q->s->d.redis) {
        authn_revocation_prepare(&q->claims, &q->ac);
        cmds[n] = (cache_mux_cmd){4, q->ac.argv, q->ac.lens};
        q->ix_mget = n++;
    }
    if (q->rl_limit > 0 && q->s->d.redis &&
        ratelimit_prepare(q->s->d.rl, q->rl_key, q->rl_limit, &q->rlc)) {
        cmds[n] = (cache_mux_cmd){6, q->rlc.argv, q->rlc.lens};
        q->ix_rl = n++;
    }
    q->ph = PH_REDIS;
    atomic_fetch_add(&q->refs, 1);
    err_info e;
    err_clear(&e);
    if (n == 0 || cache_mux_submit(q->s->d.redis, n, cmds, on_redis, q, &e) != ERR_OK) {
        /* No Redis work, no Redis, or the mux is stopping: decide here as if Redis did not
         * answer (a signed-in route fails closed, limits fall back to the local limiter). */
        err_clear(&e);
        if (n > 0)
            e.code = ERR_UNAVAILABLE;
        on_redis(q, NULL, &e);
    }
}

/* Upstream failures carry transport details (addresses, library errors): keep them in the log,
 * give the client a stable message. */
static void send_upstream_error(req *q, err_info *e)
{
    switch (e->code) {
    case ERR_UNAVAILABLE:
        if (strncmp(e->msg, "circuit open", 12) != 0) {
            log_ctx lc = {q->request_id, q->trace_id, q->span_id};
            log_warn(&lc, "%s unavailable: %s", upstream_name(q->call_svc), e->msg);
            snprintf(e->msg, sizeof e->msg, "%s service unavailable", upstream_name(q->call_svc));
        }
        break;
    case ERR_DEADLINE_EXCEEDED:
        snprintf(e->msg, sizeof e->msg, "request deadline exceeded");
        break;
    case ERR_INTERNAL:
    case ERR_UNKNOWN:
    case ERR_DATA_LOSS: {
        log_ctx lc = {q->request_id, q->trace_id, q->span_id};
        log_error(&lc, "%s failed: %s", upstream_name(q->call_svc), e->msg);
        snprintf(e->msg, sizeof e->msg, "internal error");
        e->nviolations = 0;
        break;
    }
    default:
        break;
    }
    send_error(q, e, 0, NULL);
}

/* The route's RPC finished (e: its error, NULL on success): the answer, from the gRPC thread. */
static void respond_rpc(req *q, ProtobufCMessage *resp, err_info *e)
{
    const routes_route *r = q->m.route;
    if (e) {
        send_upstream_error(q, e);
        return;
    }
    size_t len = 0;
    const char *json = r->status == 204 ? "" : pbjson_encode(resp, NULL, q->a, &len);
    resp_begin(q, r->status, "application/json", len);
    const gw_config *cfg = q->s->d.cfg;
    char cookie[2048];
    if ((r->flags & RF_SET_COOKIE) && resp) {
        const char *tok = transcode_get_str(resp, "refresh_token");
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(resp->descriptor, "refresh_expires_in");
        int max_age = f ? *(const int32_t *)((const char *)resp + f->offset) : 0;
        if (*tok && strlen(tok) < 1500) {
            mw_refresh_cookie(cookie, sizeof cookie, tok, max_age, cfg->cookie_secure);
            httpd_header(q->hr, "Set-Cookie", cookie);
        }
    }
    if (r->flags & RF_CLEAR_COOKIE) {
        mw_refresh_cookie(cookie, sizeof cookie, "", 0, cfg->cookie_secure);
        httpd_header(q->hr, "Set-Cookie", cookie);
    }
    resp_end(q, json, len);
}

/* ---------- local routes ---------- */

static void finish_ready(req *q);

/* One of /ready's probes finished: the last one answers. */
static void ready_step_done(req *q)
{
    if (atomic_fetch_sub(&q->pending, 1) == 1)
        finish_ready(q);
    req_unref(q);
}

typedef struct ready_arg {
    req *q;
    int i;
} ready_arg;

static void on_ready_done(void *arg, err_code code, ProtobufCMessage *resp, const err_info *e)
{
    ready_arg *ra = arg;
    req *q = ra->q;
    (void)e;
    q->ready_rc[ra->i] = code;
    q->ready_resp[ra->i] = resp;
    ready_step_done(q);
}

static void on_ready_ping(void *arg, cache_reply **replies, const err_info *e)
{
    req *q = arg;
    q->ready_redis = e->code == ERR_OK && cache_reply_kind(replies[0]) == CACHE_REPLY_STRING;
    ready_step_done(q);
}

static void start_ready(req *q)
{
    static const char HEALTH[] = "/grpc.health.v1.Health/Check";
    static const char *ping[] = {"PING"};
    /* one more than the probes: the last probe cannot answer while this loop still uses q */
    atomic_store(&q->pending, READY_CHECKS + 2);
    atomic_fetch_add(&q->refs, 1);
    cache_mux_cmd pc = {1, ping, NULL};
    err_info pe;
    err_clear(&pe);
    if (!q->s->d.redis || cache_mux_submit(q->s->d.redis, 1, &pc, on_ready_ping, q, &pe) != ERR_OK)
        ready_step_done(q); /* ready_redis stays false */
    int64_t dl = rpc_now_ms() + 1000;
    for (int i = 0; i < READY_CHECKS; i++) {
        q->ready_arena[i] = arena_new(1024);
        Grpc__Health__V1__HealthCheckRequest *hr = arena_alloc(q->a, sizeof *hr);
        grpc__health__v1__health_check_request__init(hr);
        ready_arg *ra = arena_alloc(q->a, sizeof *ra);
        ra->q = q;
        ra->i = i;
        rpc_metadata *md = arena_alloc(q->a, sizeof *md);
        fill_md(q, md);
        rpc_call_opts o = {.md = md, .deadline_ms = dl};
        atomic_fetch_add(&q->refs, 1);
        err_info e;
        err_clear(&e);
        if (rpc_client_call_async(upstream_client(q->s->d.up, (routes_svc)i), HEALTH, &hr->base,
                                  &grpc__health__v1__health_check_response__descriptor, &o,
                                  q->ready_arena[i], on_ready_done, ra, &e) != ERR_OK)
            on_ready_done(ra, e.code ? e.code : ERR_UNAVAILABLE, NULL, &e);
    }
    atomic_fetch_add(&q->refs, 1);
    ready_step_done(q);
}

static void finish_ready(req *q)
{
    bool ok = !atomic_load(&q->s->draining);
    char body[512];
    size_t n = 0;
    n += (size_t)snprintf(body + n, sizeof body - n, "{\"checks\":{");
    for (int i = 0; i < READY_CHECKS; i++) {
        const Grpc__Health__V1__HealthCheckResponse *hr = (const void *)q->ready_resp[i];
        bool serving =
            q->ready_rc[i] == ERR_OK && hr &&
            hr->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        ok = ok && serving;
        n += (size_t)snprintf(body + n, sizeof body - n, "\"%s\":\"%s\",",
                              upstream_name((routes_svc)i), serving ? "SERVING" : "NOT_SERVING");
    }
    bool redis_ok = q->ready_redis;
    bool keys = authn_has_keys(q->s->d.an);
    ok = ok && redis_ok && keys;
    n += (size_t)snprintf(body + n, sizeof body - n,
                          "\"redis\":\"%s\",\"jwks\":\"%s\"},\"breakers\":{",
                          redis_ok ? "SERVING" : "NOT_SERVING", keys ? "SERVING" : "NOT_SERVING");
    /* Informational: an open circuit already shows as NOT_SERVING (its check was refused). */
    for (int i = 0; i < READY_CHECKS; i++)
        n += (size_t)snprintf(
            body + n, sizeof body - n, "%s\"%s\":\"%s\"", i ? "," : "",
            upstream_name((routes_svc)i),
            breaker_state_name(breaker_state_get(upstream_breaker(q->s->d.up, (routes_svc)i))));
    n += (size_t)snprintf(body + n, sizeof body - n, "},\"status\":\"%s\"}",
                          ok ? "SERVING" : "NOT_SERVING");
    send_json(q, ok ? 200 : 503, body, n);
}

static void serve_local(req *q)
{
    switch (q->m.route->local) {
    case LOCAL_HEALTH:
        if (atomic_load(&q->s->draining))
            send_json(q, 503, "{\"status\":\"NOT_SERVING\"}", 24);
        else
            send_json(q, 200, "{\"status\":\"SERVING\"}", 20);
        return;
    case LOCAL_READY:
        start_ready(q);
        return;
    case LOCAL_METRICS: {
        if (q->s->d.cfg->metrics_addr && *q->s->d.cfg->metrics_addr) {
            send_code(q, ERR_NOT_FOUND, 404, "metrics are served on METRICS_ADDR");
            return;
        }
        size_t len = 0;
        char *text = metrics_render(q->s->d.metrics, &len);
        send_raw(q, 200, text, len, "text/plain; version=0.0.4; charset=utf-8");
        free(text);
        return;
    }
    case LOCAL_OPENAPI:
        send_json(q, 200, q->s->openapi, q->s->openapi_len);
        return;
    case LOCAL_NONE:
        break;
    }
    send_code(q, ERR_NOT_FOUND, 0, "not found");
}

/* ---------- the server's callbacks ---------- */

static const char *method_label(const char *m)
{
    static const char *const K[] = {"GET",    "POST", "PUT",     "PATCH",
                                    "DELETE", "HEAD", "OPTIONS", NULL};
    for (int i = 0; K[i]; i++)
        if (strcmp(K[i], m) == 0)
            return K[i];
    return "OTHER";
}

static req *req_new(http_server *s, httpd_req *hr)
{
    req *q = xcalloc(1, sizeof *q);
    q->s = s;
    q->hr = hr;
    q->a = arena_new(0);
    rpc_cancel_init(&q->cancel);
    atomic_store(&q->refs, 1);
    atomic_fetch_add(&s->refs, 1);
    q->start_ms = rpc_now_ms();
    q->deadline_ms = q->start_ms + s->d.cfg->request_timeout_ms;
    q->method = method_label(hr->method);
    q->path = arena_strdup(q->a, hr->path);
    const char *rid = httpd_get(hr, "X-Request-Id");
    if (mw_request_id_sane(rid))
        snprintf(q->request_id, sizeof q->request_id, "%s", rid);
    else
        mw_request_id_new(q->request_id);
    mw_traceparent(httpd_get(hr, "traceparent"), q->trace_id, q->span_id, q->traceparent);
    const char *ua = httpd_get(hr, "User-Agent");
    q->user_agent = ua ? arena_strndup(q->a, ua, 512) : "";
    snprintf(q->client_ip, sizeof q->client_ip, "%s", hr->client_ip ? hr->client_ip : "");
    const char *origin = httpd_get(hr, "Origin");
    if (origin && mw_cors_allowed(s->d.cfg->cors_origins, origin))
        q->origin = arena_strdup(q->a, origin);
    return q;
}

/* A request the server could not read whole (httpd_req.error). */
static void send_http_error(req *q, int status)
{
    switch (status) {
    case 413:
        send_code(q, ERR_RESOURCE_EXHAUSTED, 413, "request body too large");
        break;
    case 431:
        send_code(q, ERR_RESOURCE_EXHAUSTED, 431, "request header fields too large");
        break;
    case 501:
        send_code(q, ERR_UNIMPLEMENTED, 501, "transfer coding not supported");
        break;
    case 505:
        send_code(q, ERR_UNIMPLEMENTED, 505, "HTTP version not supported");
        break;
    default:
        send_code(q, ERR_INVALID_ARGUMENT, 400, "malformed HTTP request");
        break;
    }
}

/* What can be decided from the head alone; then the pipeline. */
static void on_request(void *ud, httpd_req *hr)
{
    http_server *s = ud;
    req *q = req_new(s, hr);
    hr->user = q;
    atomic_fetch_add(&s->inflight, 1);
    if (hr->error) {
        send_http_error(q, hr->error);
        return;
    }
    bool preflight = strcmp(hr->method, "OPTIONS") == 0;
    routes_find(preflight ? "\x01" : hr->method, q->path, &q->m);
    if (preflight) {
        if (!q->m.allow[0]) {
            send_code(q, ERR_NOT_FOUND, 404, "no route for this path");
            return;
        }
        resp_begin(q, 204, NULL, 0);
        char allow[80];
        snprintf(allow, sizeof allow, "%s, OPTIONS", q->m.allow);
        httpd_header(hr, "Allow", allow);
        if (q->origin) {
            httpd_header(hr, "Access-Control-Allow-Methods", allow);
            httpd_header(hr, "Access-Control-Allow-Headers",
                         "Authorization, Content-Type, X-Request-Id, If-Match, traceparent");
            httpd_header(hr, "Access-Control-Max-Age", "600");
        }
        resp_end(q, "", 0);
        return;
    }
    if (!q->m.route) {
        send_no_route(q);
        return;
    }
    if (atomic_load(&s->draining) && q->m.route->local == LOCAL_NONE) {
        /* Keep-alive connections during shutdown: refuse new work politely. */
        err_info e;
        err_clear(&e);
        err_set(&e, ERR_UNAVAILABLE, "shutting down");
        e.retry_after_s = 1;
        send_error(q, &e, 0, NULL);
        return;
    }
    process(q);
}

/* The client hung up while its request waits on a service (the server's loop thread): cancel the
 * call, so the service drops work nobody waits for (e.g. auth's queued password hashes). The
 * request still ends the usual way, its answer written to nobody. */
static void on_gone(void *ud, httpd_req *hr)
{
    http_server *s = ud;
    req *q = hr->user;
    if (!q)
        return;
    rpc_cancel_fire(&q->cancel);
    metrics_inc(s->m_gone, NULL);
}

/* After the answer: metrics, the access log line, and the request's memory. */
static void req_complete(req *q)
{
    http_server *s = q->s;
    double dur = (double)(rpc_now_ms() - q->start_ms) / 1000.0;
    int status = q->status ? q->status : 499;
    char sc[FMT_INT_MAX];
    fmt_i64(sc, status);
    const char *route = q->m.route ? q->m.route->path : "unmatched";
    const char *lv[] = {q->method, route, sc};
    metrics_inc(s->m_total, lv);
    metrics_observe(s->m_duration, lv, dur);
    if (log_min_level <= LOG_INFO) {
        char kv[1024], p[600], ip[100];
        snprintf(
            kv, sizeof kv,
            "\"method\":\"%s\",\"route\":\"%s\",\"path\":%s,\"status\":%d,\"duration_ms\":%.3f,"
            "\"client_ip\":%s,\"user_id\":\"%s\"",
            q->method, route, log_json_str(p, sizeof p, q->path), status, dur * 1000.0,
            log_json_str(ip, sizeof ip, q->client_ip), q->authed ? q->claims.sub : "");
        log_ctx lc = {q->request_id, q->trace_id, q->span_id};
        log_info_kv(&lc, kv, "request");
    }
    atomic_fetch_sub(&s->inflight, 1);
    req_unref(q);
}

http_server *http_server_start(const http_deps *d, err_info *e)
{
    http_server *s = xcalloc(1, sizeof *s);
    s->d = *d;
    s->openapi = openapi_build(&s->openapi_len);
    static const char *const labels[] = {"method", "route", "status_code", NULL};
    s->m_total =
        metrics_family_new(d->metrics, METRICS_COUNTER, "http_requests_total",
                           "HTTP requests by method, route template and status", labels, NULL, 0);
    s->m_duration = metrics_family_new(
        d->metrics, METRICS_HISTOGRAM, "http_request_duration_seconds",
        "HTTP request duration by method, route template and status", labels, NULL, 0);
    static const char *const rl_labels[] = {"limiter", NULL};
    s->m_rl = metrics_family_new(d->metrics, METRICS_COUNTER, "rate_limit_rejections_total",
                                 "requests refused by the rate limiter", rl_labels, NULL, 0);
    s->m_gone = metrics_family_new(d->metrics, METRICS_COUNTER, "http_client_gone_total",
                                   "requests whose client hung up while a service call was in "
                                   "flight (the call was cancelled)",
                                   NULL, NULL, 0);
    httpd_config hc = {
        .listen_addr = d->cfg->listen_addr,
        .threads = d->cfg->http_threads,
        .header_timeout_ms = d->cfg->header_timeout_sec * 1000,
        .idle_timeout_ms = d->cfg->idle_timeout_sec * 1000,
        .max_head_bytes = (size_t)d->cfg->max_header_bytes,
        .max_body_bytes = (size_t)d->cfg->max_body_bytes,
        .max_headers = 256,
        .max_conns = 10000,
    };
    httpd_handlers hh = {.on_request = on_request, .on_gone = on_gone};
    s->h = httpd_start(&hc, &hh, s, e);
    if (!s->h) {
        free(s->openapi);
        free(s);
        return NULL;
    }
    s->port = httpd_port(s->h);
    return s;
}

int http_server_port(const http_server *s)
{
    return s->port;
}

void http_server_drain(http_server *s)
{
    atomic_store(&s->draining, true);
    httpd_quiesce(s->h);
}

bool http_server_wait_idle(http_server *s, int grace_ms)
{
    int64_t end = rpc_now_ms() + grace_ms;
    while (atomic_load(&s->inflight) > 0 && rpc_now_ms() < end)
        usleep(20000);
    return atomic_load(&s->inflight) == 0;
}

void http_server_free(http_server *s)
{
    if (!s)
        return;
    httpd_stop(s->h);
    /* Requests whose gRPC call is still running hold a reference (and their connection); their
     * callbacks arrive within the request deadline. */
    int64_t end = rpc_now_ms() + s->d.cfg->request_timeout_ms + 1000;
    while (atomic_load(&s->refs) > 0 && rpc_now_ms() < end)
        usleep(10000);
    httpd_free(s->h);
    free(s->openapi);
    free(s);
}
