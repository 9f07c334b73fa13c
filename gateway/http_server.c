/* http_server: libmicrohttpd (epoll, thread pool) in front of the gRPC services. Each request is a
 * small state machine: routed, token-verified and transcoded on the MHD thread, then suspended once
 * while its Redis step (revocation + rate limit, batched with other requests' by common/cache_mux),
 * permission.Check and the route's RPC run on the mux and gRPC threads, each step starting the
 * next; the last one resumes the connection and the MHD thread answers. No thread waits on I/O.
 * Per-request memory lives in one arena freed when MHD completes it. */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/fmt.h"
#include "common/log.h"
#include "common/pbjson.h"
#include "errors.h"
#include "grpc/health/v1/health.pb-c.h"
#include "middleware.h"
#include "openapi.h"
#include "permission/v1/permission.pb-c.h"
#include "transcode.h"

/* A TCP connection, tracked so that a client that has not delivered its first request's headers
 * within HEADER_TIMEOUT_SEC is cut off (MHD's own timeout is reset by every byte, so a slowloris
 * trickle would survive it). */
typedef struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    int64_t start_ms;
    atomic_bool got_headers;
    /* While a request waits on a service (suspended, so MHD does not watch the socket): its
     * cancel handle, fired by the reaper when the client hung up. Guarded by ct_mu. */
    rpc_cancel *waiting;
    int64_t waiting_since;
} conn_track;

struct http_server {
    http_deps d;
    pthread_mutex_t ct_mu;
    conn_track ct_head; /* sentinel of a circular list */
    pthread_t reaper;
    bool reaper_started;
    atomic_bool stop;
    atomic_int slow_cut;
    struct MHD_Daemon *mhd;
    int port;
    atomic_bool draining;
    atomic_int inflight; /* requests MHD has not completed yet */
    atomic_int refs;     /* request objects alive (MHD or a pending gRPC callback holds them) */
    char *openapi;
    size_t openapi_len;
    metrics_family *m_total, *m_duration, *m_rl, *m_gone;
};

typedef enum stage { ST_BODY, ST_ASYNC, ST_WAIT_READY, ST_DONE } stage;
/* The reaper watches a suspended request's socket for the client hanging up (ct_mu held). */
static conn_track *track_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Set when the request suspends, cleared in on_completed (never earlier: a peek at a resumed
 * socket is harmless, and one lock per step is all this costs the hot path). */
static void track_waiting(http_server *s, struct MHD_Connection *conn, rpc_cancel *c,
                          int64_t since_ms)
{
    conn_track *ct = track_of(conn);
    if (!ct)
        return;
    pthread_mutex_lock(&s->ct_mu);
    ct->waiting = c;
    ct->waiting_since = since_ms;
    pthread_mutex_unlock(&s->ct_mu);
}

/* Where a suspended request is (ST_ASYNC): which step's completion comes next. */
typedef enum phase { PH_REDIS, PH_CHECK, PH_RPC } phase;

#define READY_CHECKS SVC_COUNT

typedef struct req {
    http_server *s;
    struct MHD_Connection *conn;
    arena *a;
    pthread_mutex_t mu;
    atomic_int refs;
    bool completed; /* MHD is done with the connection: never resume it */
    int64_t start_ms, deadline_ms;
    char request_id[129];
    char trace_id[33], span_id[17], traceparent[56];
    char client_ip[64];
    const char *method, *path, *origin, *user_agent;
    const char
        *authz; /* Authorization header (the bearer token stays here: services get x-actor-id) */
    routes_match m;
    char *body;
    size_t body_len, body_cap;
    bool too_big;
    stage st;
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
    /* The three error slots are arena copies made only on failure: an err_info is ~4 KiB, and
     * zeroing and copying them took more of a request than the route lookup. */
    err_info *terr; /* a transcoding error, reported after the Redis step */
    /* the answer decided off the MHD thread (ST_ASYNC): an error, else the RPC's response */
    bool failed, fail_upstream;
    int fail_status;
    err_info *fail;
    /* result of the asynchronous call(s) */
    rpc_cancel cancel; /* fired when the client leaves first: the service stops working for it */
    atomic_int pending;
    routes_svc call_svc;
    err_code rc;
    ProtobufCMessage *resp;
    err_info *rerr; /* rc != ERR_OK */
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
    free(q->body);
    rpc_cancel_destroy(&q->cancel);
    pthread_mutex_destroy(&q->mu);
    arena_free(q->a);
    free(q);
    atomic_fetch_sub(&s->refs, 1);
}

/* ---------- responses ---------- */

static const char *hdr(req *q, const char *name)
{
    return MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, name);
}

static void add_common_headers(req *q, struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Request-Id", q->request_id);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Content-Security-Policy", "default-src 'none'");
    MHD_add_response_header(r, "Vary", "Origin");
    if (q->m.route && (q->m.route->flags & RF_NO_STORE)) {
        MHD_add_response_header(r, "Cache-Control", "no-store");
        MHD_add_response_header(r, "Pragma", "no-cache");
    }
    if (q->origin) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", q->origin);
        MHD_add_response_header(r, "Access-Control-Allow-Credentials", "true");
        MHD_add_response_header(r, "Access-Control-Expose-Headers",
                                "X-Request-Id, RateLimit-Limit, RateLimit-Remaining, "
                                "RateLimit-Reset, Retry-After, WWW-Authenticate");
    }
    if (q->rl_set) {
        char v[FMT_INT_MAX];
        fmt_i64(v, q->rl.limit);
        MHD_add_response_header(r, "RateLimit-Limit", v);
        fmt_i64(v, q->rl.remaining);
        MHD_add_response_header(r, "RateLimit-Remaining", v);
        fmt_i64(v, q->rl.reset_s);
        MHD_add_response_header(r, "RateLimit-Reset", v);
    }
}

static enum MHD_Result send_raw(req *q, int status, const char *body, size_t len, const char *ctype,
                                struct MHD_Response **keep)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    add_common_headers(q, r);
    if (ctype && len)
        MHD_add_response_header(r, "Content-Type", ctype);
    if (keep) {
        *keep = r;
        return MHD_YES;
    }
    q->status = status;
    q->st = ST_DONE;
    enum MHD_Result ok = MHD_queue_response(q->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result finish(req *q, int status, struct MHD_Response *r)
{
    q->status = status;
    q->st = ST_DONE;
    enum MHD_Result ok = MHD_queue_response(q->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

/* An error answer; http_status 0 = the code's own mapping. */
static enum MHD_Result send_error(req *q, const err_info *e, int http_status, const char *allow)
{
    size_t len = 0;
    char *body = errors_body(q->a, e, q->request_id, &len);
    int status = http_status ? http_status : errors_http_status(e->code);
    struct MHD_Response *r = NULL;
    if (send_raw(q, status, body, len, "application/json", &r) != MHD_YES)
        return MHD_NO;
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"identity\"");
    if (allow)
        MHD_add_response_header(r, "Allow", allow);
    if (status == 429 || status == 503) {
        char v[FMT_INT_MAX];
        fmt_i64(v, e->retry_after_s > 0 ? e->retry_after_s : 1);
        MHD_add_response_header(r, "Retry-After", v);
    }
    return finish(q, status, r);
}

static enum MHD_Result send_code(req *q, err_code code, int http_status, const char *msg)
{
    err_info e;
    err_clear(&e);
    err_set(&e, code, "%s", msg);
    return send_error(q, &e, http_status, NULL);
}

static enum MHD_Result send_json(req *q, int status, const char *body, size_t len)
{
    return send_raw(q, status, body, len, "application/json", NULL);
}

/* ---------- asynchronous steps ---------- */

/* The last step of a suspended request: the MHD thread answers when it runs the handler again. */
static void async_resume(req *q)
{
    pthread_mutex_lock(&q->mu);
    if (!q->completed)
        MHD_resume_connection(q->conn);
    pthread_mutex_unlock(&q->mu);
}

/* An error kept past the call that reported it, in the request's arena. */
static err_info *err_copy(arena *a, const err_info *e)
{
    err_info *c = arena_alloc(a, sizeof *c);
    *c = *e;
    return c;
}

/* Ends a suspended request with an error (from_upstream: scrub transport details first). */
static void async_fail(req *q, const err_info *e, int http_status, bool from_upstream)
{
    q->failed = true;
    q->fail = err_copy(q->a, e);
    q->fail_status = http_status;
    q->fail_upstream = from_upstream;
    async_resume(q);
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

/* Starts a call for a suspended request; on_done runs when it completes (on a gRPC thread, or
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
        q->rc = code;
        q->resp = resp;
        if (code != ERR_OK)
            q->rerr = err_copy(q->a, &ce);
        async_resume(q);
    }
    req_unref(q);
}

/* The Redis step's verdict (on the mux thread, or on the MHD thread when there is no Redis work):
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

static enum MHD_Result respond_rpc(req *q);
static enum MHD_Result send_upstream_error(req *q, err_info *e);
static enum MHD_Result serve_local(req *q);

typedef struct collect {
    transcode_kv *kv;
    size_t n, cap;
} collect;

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    collect *c = cls;
    if (c->n < c->cap) {
        c->kv[c->n].key = key;
        c->kv[c->n].value = value;
        c->n++;
    }
    return MHD_YES;
}

/* Local token verification (signature, claims; cached). Answers and returns false on failure. */
static bool verify_token(req *q, enum MHD_Result *ret)
{
    q->authz = hdr(q, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *token = mw_bearer(q->authz);
    err_info e;
    err_clear(&e);
    if (!token) {
        *ret = send_code(q, ERR_UNAUTHENTICATED, 0, "missing bearer token");
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
        *ret = send_code(q, ERR_UNAUTHENTICATED, 0, "invalid access token");
    } else if (rc == ERR_UNAVAILABLE) {
        e.retry_after_s = 1;
        *ret = send_error(q, &e, 0, NULL);
    } else {
        *ret = send_code(q, ERR_UNAUTHENTICATED, 0, "invalid or expired access token");
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
    collect c = {NULL, 0, 0};
    int nq = MHD_get_connection_values(q->conn, MHD_GET_ARGUMENT_KIND, NULL, NULL);
    if (nq > 0) {
        c.kv = arena_alloc(q->a, (size_t)nq * sizeof *c.kv);
        c.cap = (size_t)nq;
        MHD_get_connection_values(q->conn, MHD_GET_ARGUMENT_KIND, collect_kv, &c);
    }
    transcode_input in = {0};
    in.body = q->body;
    in.body_len = q->body_len;
    in.query = c.kv;
    in.nquery = c.n;
    const char *im = hdr(q, "If-Match");
    if (im) {
        mw_etag_from_if_match(im, etag, sizeof etag);
        in.if_match = etag;
    }
    if ((r->flags & RF_READ_COOKIE) &&
        mw_cookie_get(hdr(q, MHD_HTTP_HEADER_COOKIE), "refresh_token", cookie, sizeof cookie))
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

static enum MHD_Result send_no_route(req *q)
{
    if (q->m.allow[0]) {
        err_info e;
        err_clear(&e);
        err_set(&e, ERR_UNIMPLEMENTED, "method %s not allowed on this path", q->method);
        return send_error(q, &e, 405, q->m.allow);
    }
    return send_code(q, ERR_NOT_FOUND, 404, "no route for this path");
}

static enum MHD_Result process(req *q)
{
    const routes_route *r = q->m.route;
    const gw_config *cfg = q->s->d.cfg;
    if (!r)
        return send_no_route(q);
    if (q->too_big)
        return send_code(q, ERR_RESOURCE_EXHAUSTED, 413, "request body too large");
    if (r->local != LOCAL_NONE)
        return serve_local(q);

    /* 1. the token, locally */
    enum MHD_Result ret = MHD_YES;
    if (r->auth == AUTH_SIGNED_IN && !verify_token(q, &ret))
        return ret;

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

    /* 4. suspend; revocation and rate limit in one Redis job, then authorization and the RPC run
     * off this thread, each step starting the next */
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
    q->st = ST_ASYNC;
    q->ph = PH_REDIS;
    track_waiting(q->s, q->conn, &q->cancel, q->start_ms);
    MHD_suspend_connection(q->conn);
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
    return MHD_YES;
}

/* The MHD thread again, after the last asynchronous step resumed the connection. */
static enum MHD_Result answer_async(req *q)
{
    if (q->failed) {
        if (q->fail_upstream)
            return send_upstream_error(q, q->fail);
        return send_error(q, q->fail, q->fail_status, NULL);
    }
    return respond_rpc(q);
}

/* Upstream failures carry transport details (addresses, library errors): keep them in the log,
 * give the client a stable message. */
static enum MHD_Result send_upstream_error(req *q, err_info *e)
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
    return send_error(q, e, 0, NULL);
}

static enum MHD_Result respond_rpc(req *q)
{
    const routes_route *r = q->m.route;
    if (q->rc != ERR_OK)
        return send_upstream_error(q, q->rerr);
    struct MHD_Response *resp = NULL;
    if (r->status == 204) {
        if (send_raw(q, 204, "", 0, NULL, &resp) != MHD_YES)
            return MHD_NO;
    } else {
        size_t len = 0;
        char *json = pbjson_encode(q->resp, NULL, q->a, &len);
        if (send_raw(q, r->status, json, len, "application/json", &resp) != MHD_YES)
            return MHD_NO;
    }
    const gw_config *cfg = q->s->d.cfg;
    char cookie[2048];
    if ((r->flags & RF_SET_COOKIE) && q->resp) {
        const char *tok = transcode_get_str(q->resp, "refresh_token");
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(
            q->resp->descriptor, "refresh_expires_in");
        int max_age = f ? *(const int32_t *)((const char *)q->resp + f->offset) : 0;
        if (*tok && strlen(tok) < 1500) {
            mw_refresh_cookie(cookie, sizeof cookie, tok, max_age, cfg->cookie_secure);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, cookie);
        }
    }
    if (r->flags & RF_CLEAR_COOKIE) {
        mw_refresh_cookie(cookie, sizeof cookie, "", 0, cfg->cookie_secure);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, cookie);
    }
    return finish(q, r->status, resp);
}

/* ---------- local routes ---------- */

/* One of /ready's probes finished: the last one resumes the connection. */
static void ready_step_done(req *q)
{
    if (atomic_fetch_sub(&q->pending, 1) == 1)
        async_resume(q);
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
    q->st = ST_WAIT_READY;
    atomic_store(&q->pending, READY_CHECKS + 1);
    MHD_suspend_connection(q->conn);
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
}

static enum MHD_Result finish_ready(req *q)
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
    return send_json(q, ok ? 200 : 503, body, n);
}

static enum MHD_Result serve_local(req *q)
{
    switch (q->m.route->local) {
    case LOCAL_HEALTH:
        if (atomic_load(&q->s->draining))
            return send_json(q, 503, "{\"status\":\"NOT_SERVING\"}", 24);
        return send_json(q, 200, "{\"status\":\"SERVING\"}", 20);
    case LOCAL_READY:
        start_ready(q);
        return MHD_YES;
    case LOCAL_METRICS: {
        if (q->s->d.cfg->metrics_addr && *q->s->d.cfg->metrics_addr)
            return send_code(q, ERR_NOT_FOUND, 404, "metrics are served on METRICS_ADDR");
        size_t len = 0;
        char *text = metrics_render(q->s->d.metrics, &len);
        enum MHD_Result x =
            send_raw(q, 200, text, len, "text/plain; version=0.0.4; charset=utf-8", NULL);
        free(text);
        return x;
    }
    case LOCAL_OPENAPI:
        return send_json(q, 200, q->s->openapi, q->s->openapi_len);
    case LOCAL_NONE:
        break;
    }
    return send_code(q, ERR_NOT_FOUND, 0, "not found");
}

/* ---------- MHD callbacks ---------- */

static enum MHD_Result sum_headers(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    size_t *n = cls;
    *n += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

static const char *method_label(const char *m)
{
    static const char *const K[] = {"GET",    "POST", "PUT",     "PATCH",
                                    "DELETE", "HEAD", "OPTIONS", NULL};
    for (int i = 0; K[i]; i++)
        if (strcmp(K[i], m) == 0)
            return K[i];
    return "OTHER";
}

static req *req_new(http_server *s, struct MHD_Connection *conn, const char *url,
                    const char *method)
{
    req *q = xcalloc(1, sizeof *q);
    q->s = s;
    q->conn = conn;
    q->a = arena_new(0);
    pthread_mutex_init(&q->mu, NULL);
    rpc_cancel_init(&q->cancel);
    atomic_store(&q->refs, 1);
    atomic_fetch_add(&s->refs, 1);
    q->start_ms = rpc_now_ms();
    q->deadline_ms = q->start_ms + s->d.cfg->request_timeout_ms;
    q->method = method_label(method);
    q->path = arena_strdup(q->a, url);
    const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (mw_request_id_sane(rid))
        snprintf(q->request_id, sizeof q->request_id, "%s", rid);
    else
        mw_request_id_new(q->request_id);
    mw_traceparent(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent"), q->trace_id,
                   q->span_id, q->traceparent);
    const char *ua = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);
    q->user_agent = ua ? arena_strndup(q->a, ua, 512) : "";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    q->client_ip[0] = 0;
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, q->client_ip,
                      sizeof q->client_ip);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, q->client_ip,
                      sizeof q->client_ip);
    }
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (origin && mw_cors_allowed(s->d.cfg->cors_origins, origin))
        q->origin = arena_strdup(q->a, origin);
    return q;
}

/* First call for a request: everything that can be decided from the headers alone. Returns
 * MHD_YES with q->st == ST_BODY to go on reading the body. */
static enum MHD_Result on_headers(req *q, const char *method)
{
    http_server *s = q->s;
    size_t hsize = 0;
    MHD_get_connection_values(q->conn, MHD_HEADER_KIND, sum_headers, &hsize);
    if (hsize > (size_t)s->d.cfg->max_header_bytes)
        return send_code(q, ERR_RESOURCE_EXHAUSTED, 431, "request header fields too large");

    bool preflight = strcmp(method, "OPTIONS") == 0;
    routes_find(preflight ? "\x01" : method, q->path, &q->m);
    if (preflight) {
        if (!q->m.allow[0])
            return send_code(q, ERR_NOT_FOUND, 404, "no route for this path");
        struct MHD_Response *r = NULL;
        if (send_raw(q, 204, "", 0, NULL, &r) != MHD_YES)
            return MHD_NO;
        char allow[80];
        snprintf(allow, sizeof allow, "%s, OPTIONS", q->m.allow);
        MHD_add_response_header(r, "Allow", allow);
        if (q->origin) {
            MHD_add_response_header(r, "Access-Control-Allow-Methods", allow);
            MHD_add_response_header(
                r, "Access-Control-Allow-Headers",
                "Authorization, Content-Type, X-Request-Id, If-Match, traceparent");
            MHD_add_response_header(r, "Access-Control-Max-Age", "600");
        }
        return finish(q, 204, r);
    }
    if (!q->m.route) {
        /* Without a body the answer waits for the final call, so the connection stays alive
         * (a response queued before the body is read makes MHD close the connection). */
        const char *clen =
            MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        bool no_body = !MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_TRANSFER_ENCODING) &&
                       (!clen || strcmp(clen, "0") == 0);
        if (no_body) {
            q->st = ST_BODY;
            return MHD_YES;
        }
        return send_no_route(q);
    }
    const char *cl =
        MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end = NULL;
        unsigned long long v = strtoull(cl, &end, 10);
        if (end != cl && v > (unsigned long long)s->d.cfg->max_body_bytes)
            return send_code(q, ERR_RESOURCE_EXHAUSTED, 413, "request body too large");
    }
    if (atomic_load(&s->draining) && q->m.route->local == LOCAL_NONE) {
        /* Keep-alive connections during shutdown: refuse new work politely. */
        err_info e;
        err_clear(&e);
        err_set(&e, ERR_UNAVAILABLE, "shutting down");
        e.retry_after_s = 1;
        return send_error(q, &e, 0, NULL);
    }
    q->st = ST_BODY;
    return MHD_YES;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **sock_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    http_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_track *ct = xcalloc(1, sizeof *ct);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        ct->fd = ci ? ci->connect_fd : -1;
        ct->start_ms = rpc_now_ms();
        pthread_mutex_lock(&s->ct_mu);
        ct->next = s->ct_head.next;
        ct->prev = &s->ct_head;
        s->ct_head.next->prev = ct;
        s->ct_head.next = ct;
        pthread_mutex_unlock(&s->ct_mu);
        *sock_ctx = ct;
    } else if (*sock_ctx) {
        conn_track *ct = *sock_ctx;
        pthread_mutex_lock(&s->ct_mu);
        ct->prev->next = ct->next;
        ct->next->prev = ct->prev;
        pthread_mutex_unlock(&s->ct_mu);
        free(ct);
        *sock_ctx = NULL;
    }
}

static void *reaper_main(void *arg)
{
    http_server *s = arg;
    pthread_setname_np(pthread_self(), "gw-reaper"); /* top -H, perf, gdb */
    int64_t limit = (int64_t)s->d.cfg->header_timeout_sec * 1000;
    while (!atomic_load(&s->stop)) {
        usleep(200000);
        int64_t now = rpc_now_ms();
        pthread_mutex_lock(&s->ct_mu);
        for (conn_track *ct = s->ct_head.next; ct != &s->ct_head; ct = ct->next) {
            if (!atomic_load(&ct->got_headers) && now - ct->start_ms > limit && ct->fd >= 0) {
                /* shutdown, not close: MHD sees EOF and closes (and notifies) itself. */
                shutdown(ct->fd, SHUT_RDWR);
                atomic_store(&ct->got_headers, true);
                atomic_fetch_add(&s->slow_cut, 1);
            }
            /* A suspended socket is MHD's to read but it is not watching: a peek that finds
             * end-of-file (or a reset) means the client left; cancel the service call so the
             * service stops working for nobody (e.g. auth drops the queued password hash). */
            if (ct->waiting && now - ct->waiting_since >= 200 && ct->fd >= 0) {
                char b;
                ssize_t n = recv(ct->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
                if (n == 0 ||
                    (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                    rpc_cancel_fire(ct->waiting);
                    ct->waiting = NULL;
                    metrics_inc(s->m_gone, NULL);
                }
            }
        }
        pthread_mutex_unlock(&s->ct_mu);
    }
    return NULL;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    http_server *s = cls;
    req *q = *con_cls;
    if (!q) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        if (ci && ci->socket_context)
            atomic_store(&((conn_track *)ci->socket_context)->got_headers, true);
        q = req_new(s, conn, url, method);
        *con_cls = q;
        atomic_fetch_add(&s->inflight, 1);
        q->st = ST_DONE;
        return on_headers(q, method);
    }
    if (q->st == ST_DONE) {
        /* Answered from the headers; discard any body. */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!q->too_big) {
            if (q->body_len + *upload_size > (size_t)s->d.cfg->max_body_bytes) {
                q->too_big = true;
                free(q->body);
                q->body = NULL;
                q->body_len = 0;
            } else {
                if (q->body_len + *upload_size + 1 > q->body_cap) {
                    size_t cap = q->body_cap ? q->body_cap * 2 : 4096;
                    while (cap < q->body_len + *upload_size + 1)
                        cap *= 2;
                    q->body = xrealloc(q->body, cap);
                    q->body_cap = cap;
                }
                memcpy(q->body + q->body_len, upload, *upload_size);
                q->body_len += *upload_size;
                q->body[q->body_len] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    switch (q->st) {
    case ST_BODY:
        return process(q);
    case ST_ASYNC:
        return answer_async(q);
    case ST_WAIT_READY:
        return finish_ready(q);
    case ST_DONE:
        break;
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    req *q = *con_cls;
    if (!q)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&q->mu);
    q->completed = true;
    pthread_mutex_unlock(&q->mu);
    /* Ended without an answer (client gone, timeout, shutdown): a call still in flight is
     * cancelled, so the service drops work nobody waits for (auth's queued password hashes). */
    track_waiting(s, conn, NULL, 0);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        rpc_cancel_fire(&q->cancel);

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

static int parse_addr(const char *addr, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return -1;
    char host[64];
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host)
        return -1;
    memcpy(host, addr, hl);
    host[hl] = 0;
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port < 0 || port > 65535)
        return -1;
    sa->sin_port = htons((uint16_t)port);
    if (hl == 0 || strcmp(host, "*") == 0)
        snprintf(host, sizeof host, "0.0.0.0");
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -1;
    return 0;
}

http_server *http_server_start(const http_deps *d, err_info *e)
{
    struct sockaddr_in sa;
    if (parse_addr(d->cfg->listen_addr, &sa) != 0) {
        err_set(e, ERR_INVALID_ARGUMENT, "LISTEN_ADDR: bad address '%s'", d->cfg->listen_addr);
        return NULL;
    }
    http_server *s = xcalloc(1, sizeof *s);
    s->d = *d;
    pthread_mutex_init(&s->ct_mu, NULL);
    s->ct_head.next = s->ct_head.prev = &s->ct_head;
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
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC;
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, handler, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)d->cfg->http_threads, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)d->cfg->idle_timeout_sec, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        /* Room for headers somewhat past our limit, so we answer 431 ourselves with a JSON body;
         * not more: MHD zeroes this pool between requests (80 KiB cost ~20% of /health). */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(d->cfg->max_header_bytes + 8192),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)10000, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned)1024, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->mhd) {
        err_set(e, ERR_UNAVAILABLE, "cannot listen on %s", d->cfg->listen_addr);
        pthread_mutex_destroy(&s->ct_mu);
        free(s->openapi);
        free(s);
        return NULL;
    }
    if (pthread_create(&s->reaper, NULL, reaper_main, s) == 0)
        s->reaper_started = true;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : ntohs(sa.sin_port);
    return s;
}

int http_server_port(const http_server *s)
{
    return s->port;
}

void http_server_drain(http_server *s)
{
    atomic_store(&s->draining, true);
    MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
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
    atomic_store(&s->stop, true);
    if (s->reaper_started)
        pthread_join(s->reaper, NULL);
    MHD_stop_daemon(s->mhd);
    /* Suspended requests whose gRPC call is still running hold a reference; their callbacks
     * arrive within the request deadline. */
    int64_t end = rpc_now_ms() + s->d.cfg->request_timeout_ms + 1000;
    while (atomic_load(&s->refs) > 0 && rpc_now_ms() < end)
        usleep(10000);
    pthread_mutex_destroy(&s->ct_mu);
    free(s->openapi);
    free(s);
}
