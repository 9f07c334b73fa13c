/* user_rpc: handlers of user.v1.UserService. Each validates its request into field violations,
 * calls user_service, and maps the result back to protobuf in the call's arena. */
#include "user_rpc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics.h"
#include "google/protobuf/empty.pb-c.h"
#include "user/v1/user.pb-c.h"
#include "user_valid.h"

const config_opt user_config_opts[] = {
    {"USER_CACHE_TTL_SEC", CONFIG_INT, offsetof(user_config, cache_ttl_s), "300", 0, 86400,
     "TTL of cached users (user:{id} in Redis); 0 disables the cache"},
    {"PAGE_TOKEN_SECRET", CONFIG_SECRET, offsetof(user_config, page_token_secret), "", 0, 0,
     "HMAC key of ListUsers page tokens; replicas must share it (unset = random per process)"},
    {"OUTBOX_POLL_MS", CONFIG_INT, offsetof(user_config, outbox_poll_ms), "1000", 10, 60000,
     "outbox relay poll interval (it is also woken after each write)"},
    {"OUTBOX_BATCH", CONFIG_INT, offsetof(user_config, outbox_batch), "100", 1, 1000,
     "outbox events relayed per transaction"},
    {"OUTBOX_RETENTION_SEC", CONFIG_INT, offsetof(user_config, outbox_retention_s), "604800", 0,
     31536000, "sent outbox rows are deleted after this long (0 = keep)"},
    {"OUTBOX_STREAM_MAXLEN", CONFIG_INT, offsetof(user_config, outbox_stream_maxlen), "1000000", 0,
     100000000, "approximate cap (XADD MAXLEN ~) of the events.user stream; 0 = no cap"},
};
const size_t user_config_nopts = sizeof user_config_opts / sizeof user_config_opts[0];

static user_call call_of(const rpc_ctx *ctx)
{
    user_call c = {.actor = ctx->md.actor_id,
                   .request_id = ctx->md.request_id,
                   .log = &ctx->log,
                   .deadline_ms = ctx->deadline_ms};
    return c;
}

static user_service *svc_of(const rpc_ctx *ctx)
{
    return ((user_app *)ctx->state)->svc;
}

/* Database and other internal failures are logged in full here and answered with a generic
 * message: SQL text and server details stay out of client responses. */
static err_code done(rpc_ctx *ctx, err_code rc, err_info *e)
{
    if (rc == ERR_INTERNAL || rc == ERR_UNKNOWN || rc == ERR_DATA_LOSS ||
        rc == ERR_FAILED_PRECONDITION) {
        log_error(&ctx->log, "%s failed: %s", ctx->method, e->msg);
        err_set(e, ERR_INTERNAL, "internal error");
        return ERR_INTERNAL;
    }
    return rc;
}

static err_code h_create(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                         err_info *e)
{
    const User__V1__CreateUserRequest *req = (const User__V1__CreateUserRequest *)m;
    const char *email = NULL, *name = NULL;
    char why[128];
    if (!user_valid_email(ctx->arena, req->email, &email, why, sizeof why))
        err_violation_add(e, "email", "%s", why);
    if (!user_valid_display_name(ctx->arena, req->display_name, &name, why, sizeof why))
        err_violation_add(e, "display_name", "%s", why);
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    user_call call = call_of(ctx);
    user_rec u;
    err_code rc = user_service_create(svc_of(ctx), &call, ctx->arena, email, name, &u, e);
    if (rc)
        return done(ctx, rc, e);
    *resp = &user_rec_to_pb(ctx->arena, &u)->base;
    return ERR_OK;
}

/* GetUser: the hottest read (every GET /v1/users/me). It is registered nonblocking: h_get runs
 * on the RPC polling thread and only starts the cache read, which is asynchronous, so concurrent
 * calls share Redis round trips and a call waiting for Redis holds no thread; a hit is answered
 * from the cache thread, a miss comes back through rpc_continue (h_get_db) for the database on a
 * worker. Without the asynchronous cache (disabled, or its queue refused the read) the whole
 * lookup goes to a worker (h_get_sync). */
typedef enum get_mode { GET_ASYNC, GET_SYNC, GET_DB } get_mode;

static err_code get_user(rpc_ctx *ctx, const ProtobufCMessage *m, get_mode mode,
                         ProtobufCMessage **resp, err_info *e);

static err_code h_get_db(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                         err_info *e)
{
    return get_user(ctx, m, GET_DB, resp, e);
}

static err_code h_get_sync(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                           err_info *e)
{
    return get_user(ctx, m, GET_SYNC, resp, e);
}

static err_code h_get(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, err_info *e)
{
    return get_user(ctx, m, GET_ASYNC, resp, e);
}

/* On the cache thread: a hit is answered from here, a miss goes to a worker. */
static void on_cached_user(void *arg, err_code rc, const user_rec *u)
{
    rpc_ctx *ctx = arg;
    if (rc == ERR_OK)
        rpc_reply(ctx, ERR_OK, &user_rec_to_pb(ctx->arena, u)->base, NULL);
    else
        rpc_continue(ctx, h_get_db);
}

static err_code get_user(rpc_ctx *ctx, const ProtobufCMessage *m, get_mode mode,
                         ProtobufCMessage **resp, err_info *e)
{
    const User__V1__GetUserRequest *req = (const User__V1__GetUserRequest *)m;
    char id[USER_ID_LEN + 1];
    if (!user_valid_uuid(req->id, id))
        return err_violation_add(e, "id", "must be a UUID");
    user_app *app = ctx->state;
    if (mode == GET_ASYNC) {
        if (!user_store_get_async(app->store, ctx->arena, id, &ctx->log, on_cached_user, ctx))
            rpc_continue(ctx, h_get_sync); /* this thread must not block */
        return RPC_PENDING;
    }
    user_call call = call_of(ctx);
    user_rec u;
    /* After an asynchronous miss the cache was read already: the database only. */
    err_code rc = mode == GET_SYNC ? user_service_get(svc_of(ctx), &call, ctx->arena, id, &u, e)
                                   : user_service_load(svc_of(ctx), &call, ctx->arena, id, &u, e);
    if (rc)
        return done(ctx, rc, e);
    *resp = &user_rec_to_pb(ctx->arena, &u)->base;
    return ERR_OK;
}

static err_code h_get_by_email(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                               err_info *e)
{
    const User__V1__GetUserByEmailRequest *req = (const User__V1__GetUserByEmailRequest *)m;
    const char *email = NULL;
    char why[128];
    if (!user_valid_email(ctx->arena, req->email, &email, why, sizeof why))
        return err_violation_add(e, "email", "%s", why);
    user_call call = call_of(ctx);
    user_rec u;
    err_code rc = user_service_get_by_email(svc_of(ctx), &call, ctx->arena, email, &u, e);
    if (rc)
        return done(ctx, rc, e);
    *resp = &user_rec_to_pb(ctx->arena, &u)->base;
    return ERR_OK;
}

static int cmp_rec_id(const void *a, const void *b)
{
    return strcmp(((const user_rec *)a)->id, ((const user_rec *)b)->id);
}

static err_code h_batch_get(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                            err_info *e)
{
    const User__V1__BatchGetUsersRequest *req = (const User__V1__BatchGetUsersRequest *)m;
    if (req->n_ids > USER_BATCH_MAX)
        return err_violation_add(e, "ids", "at most %d ids per call, got %zu", USER_BATCH_MAX,
                                 req->n_ids);
    char **ids = arena_alloc(ctx->arena, sizeof *ids * (req->n_ids ? req->n_ids : 1));
    for (size_t i = 0; i < req->n_ids; i++) {
        ids[i] = arena_alloc(ctx->arena, USER_ID_LEN + 1);
        if (!user_valid_uuid(req->ids[i], ids[i])) {
            char field[32];
            snprintf(field, sizeof field, "ids[%zu]", i);
            err_violation_add(e, field, "must be a UUID");
        }
    }
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    user_call call = call_of(ctx);
    user_rec *recs = NULL;
    size_t n = 0;
    err_code rc = user_service_batch_get(svc_of(ctx), &call, ctx->arena, (const char *const *)ids,
                                         req->n_ids, &recs, &n, e);
    if (rc)
        return done(ctx, rc, e);
    User__V1__BatchGetUsersResponse *out = arena_alloc(ctx->arena, sizeof *out);
    user__v1__batch_get_users_response__init(out);
    out->users = arena_alloc(ctx->arena, sizeof *out->users * (n ? n : 1));
    /* Answer in request order (AIP-231), each user once, missing ids left out. */
    if (n > 1)
        qsort(recs, n, sizeof *recs, cmp_rec_id);
    bool *used = arena_alloc(ctx->arena, n ? n : 1);
    for (size_t i = 0; i < req->n_ids && out->n_users < n; i++) {
        user_rec key;
        memcpy(key.id, ids[i], sizeof key.id);
        user_rec *hit = n ? bsearch(&key, recs, n, sizeof *recs, cmp_rec_id) : NULL;
        if (!hit || used[hit - recs])
            continue;
        used[hit - recs] = true;
        out->users[out->n_users++] = user_rec_to_pb(ctx->arena, hit);
    }
    *resp = &out->base;
    return ERR_OK;
}

static err_code h_list(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                       err_info *e)
{
    const User__V1__ListUsersRequest *req = (const User__V1__ListUsersRequest *)m;
    user_list_req lr = {.page_token = req->page_token, .show_deleted = req->show_deleted};
    char why[128];
    lr.page_size = user_valid_page_size(req->page_size);
    if (lr.page_size < 0)
        err_violation_add(e, "page_size", "must not be negative");
    if (!user_filter_parse(ctx->arena, req->filter, &lr.filter, why, sizeof why))
        err_violation_add(e, "filter", "%s", why);
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    user_call call = call_of(ctx);
    user_rec *recs = NULL;
    size_t n = 0;
    const char *next = "";
    err_code rc = user_service_list(svc_of(ctx), &call, ctx->arena, &lr, &recs, &n, &next, e);
    if (rc)
        return done(ctx, rc, e);
    User__V1__ListUsersResponse *out = arena_alloc(ctx->arena, sizeof *out);
    user__v1__list_users_response__init(out);
    out->users = arena_alloc(ctx->arena, sizeof *out->users * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        out->users[i] = user_rec_to_pb(ctx->arena, &recs[i]);
    out->n_users = n;
    out->next_page_token = (char *)next;
    *resp = &out->base;
    return ERR_OK;
}

static err_code h_update(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                         err_info *e)
{
    const User__V1__UpdateUserRequest *req = (const User__V1__UpdateUserRequest *)m;
    if (!req->user)
        return err_violation_add(e, "user", "is required");
    char id[USER_ID_LEN + 1];
    if (!user_valid_uuid(req->user->id, id))
        err_violation_add(e, "user.id", "must be a UUID");
    user_update u = {.id = id, .etag = req->user->etag};
    char why[128];
    if (!req->update_mask || req->update_mask->n_paths == 0)
        err_violation_add(e, "update_mask",
                          "must name at least one of display_name, status, email");
    for (size_t i = 0; req->update_mask && i < req->update_mask->n_paths; i++) {
        const char *p = req->update_mask->paths[i];
        if (strcmp(p, "display_name") == 0 || strcmp(p, "displayName") == 0)
            u.mask |= USER_UPD_DISPLAY_NAME;
        else if (strcmp(p, "status") == 0)
            u.mask |= USER_UPD_STATUS;
        else if (strcmp(p, "email") == 0)
            u.mask |= USER_UPD_EMAIL;
        else
            err_violation_add(e, "update_mask", "unknown or read-only path '%.64s'", p);
    }
    if ((u.mask & USER_UPD_EMAIL) &&
        !user_valid_email(ctx->arena, req->user->email, &u.email, why, sizeof why))
        err_violation_add(e, "user.email", "%s", why);
    if ((u.mask & USER_UPD_DISPLAY_NAME) &&
        !user_valid_display_name(ctx->arena, req->user->display_name, &u.display_name, why,
                                 sizeof why))
        err_violation_add(e, "user.display_name", "%s", why);
    if (u.mask & USER_UPD_STATUS) {
        u.status = (int)req->user->status;
        if (u.status != USER_STATUS_ACTIVE && u.status != USER_STATUS_DISABLED)
            err_violation_add(e, "user.status",
                              "must be USER_STATUS_ACTIVE or USER_STATUS_DISABLED");
    }
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    user_call call = call_of(ctx);
    user_rec out;
    err_code rc = user_service_update(svc_of(ctx), &call, ctx->arena, &u, &out, e);
    if (rc)
        return done(ctx, rc, e);
    *resp = &user_rec_to_pb(ctx->arena, &out)->base;
    return ERR_OK;
}

static err_code h_delete(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp,
                         err_info *e)
{
    const User__V1__DeleteUserRequest *req = (const User__V1__DeleteUserRequest *)m;
    char id[USER_ID_LEN + 1];
    if (!user_valid_uuid(req->id, id))
        return err_violation_add(e, "id", "must be a UUID");
    user_call call = call_of(ctx);
    err_code rc = user_service_delete(svc_of(ctx), &call, ctx->arena, id, req->etag, e);
    if (rc)
        return done(ctx, rc, e);
    Google__Protobuf__Empty *out = arena_alloc(ctx->arena, sizeof *out);
    google__protobuf__empty__init(out);
    *resp = &out->base;
    return ERR_OK;
}

#define M(name) "/user.v1.UserService/" name
const rpc_method user_rpc_methods[] = {
    {M("CreateUser"), &user__v1__create_user_request__descriptor, &user__v1__user__descriptor,
     h_create, false},
    {M("GetUser"), &user__v1__get_user_request__descriptor, &user__v1__user__descriptor, h_get,
     true},
    {M("GetUserByEmail"), &user__v1__get_user_by_email_request__descriptor,
     &user__v1__user__descriptor, h_get_by_email, false},
    {M("BatchGetUsers"), &user__v1__batch_get_users_request__descriptor,
     &user__v1__batch_get_users_response__descriptor, h_batch_get, false},
    {M("ListUsers"), &user__v1__list_users_request__descriptor,
     &user__v1__list_users_response__descriptor, h_list, false},
    {M("UpdateUser"), &user__v1__update_user_request__descriptor, &user__v1__user__descriptor,
     h_update, false},
    {M("DeleteUser"), &user__v1__delete_user_request__descriptor,
     &google__protobuf__empty__descriptor, h_delete, false},
};
const size_t user_rpc_nmethods = sizeof user_rpc_methods / sizeof user_rpc_methods[0];

user_app *user_app_new(db_pool *db, cache *c, const user_config *cfg, bool start_relay, err_info *e)
{
    static const user_config defaults = {.cache_ttl_s = 300,
                                         .page_token_secret = "",
                                         .outbox_poll_ms = 1000,
                                         .outbox_batch = 100,
                                         .outbox_retention_s = 604800,
                                         .outbox_stream_maxlen = 1000000};
    if (!cfg)
        cfg = &defaults;
    user_app *app = xcalloc(1, sizeof *app);
    app->store = user_store_new(cfg->cache_ttl_s > 0 ? c : NULL, cfg->cache_ttl_s);
    user_outbox_opts oo = {.poll_ms = cfg->outbox_poll_ms,
                           .batch = cfg->outbox_batch,
                           .retention_s = cfg->outbox_retention_s,
                           .stream_maxlen = cfg->outbox_stream_maxlen};
    app->outbox = user_outbox_new(db, c, &oo);
    user_service_opts so = {.db = db,
                            .store = app->store,
                            .outbox = app->outbox,
                            .page_token_secret = cfg->page_token_secret};
    app->svc = user_service_new(&so);
    if (start_relay && user_outbox_start(app->outbox, e)) {
        user_app_free(app);
        return NULL;
    }
    return app;
}

void user_app_free(user_app *app)
{
    if (!app)
        return;
    user_outbox_free(app->outbox); /* joins the relay thread first */
    free(app->metrics);
    user_service_free(app->svc);
    user_store_free(app->store);
    free(app);
}

err_code user_rpc_start(svc_env *env, err_info *e)
{
    const user_config *cfg = env->svc_cfg;
    if (!cfg->page_token_secret || !*cfg->page_token_secret)
        log_warn(NULL, "PAGE_TOKEN_SECRET is unset: page tokens are signed with a random key and "
                       "work only against this process (replicas must share the secret)");
    user_app *app = user_app_new(env->db, env->cache, cfg, true, e);
    if (!app)
        return e->code ? e->code : ERR_INTERNAL;
    env->state = app;
    if (env->metrics)
        user_rpc_metrics_register(app, env->metrics);
    return ERR_OK;
}

void user_rpc_stop(svc_env *env)
{
    user_app_free(env->state);
    env->state = NULL;
}

/* Metrics: counters only go up, so the collector adds the growth since its last run. */
typedef struct user_metrics {
    user_app *app;
    metrics_series *backlog, *published, *errors, *hit, *miss, *cerr;
    uint64_t last_published, last_errors, last_hit, last_miss, last_cerr;
} user_metrics;

static void add_delta(metrics_series *s, uint64_t now, uint64_t *last)
{
    if (now > *last)
        metrics_counter_add(s, (double)(now - *last));
    *last = now;
}

static void collect(void *arg)
{
    user_metrics *m = arg;
    long backlog = user_outbox_backlog(m->app->outbox);
    metrics_gauge_set(m->backlog, backlog < 0 ? 0 : (double)backlog);
    add_delta(m->published, user_outbox_sent_total(m->app->outbox), &m->last_published);
    add_delta(m->errors, user_outbox_errors_total(m->app->outbox), &m->last_errors);
    user_store_stats st;
    user_store_stats_get(m->app->store, &st);
    add_delta(m->hit, st.hits, &m->last_hit);
    add_delta(m->miss, st.misses, &m->last_miss);
    add_delta(m->cerr, st.errors, &m->last_cerr);
}

void user_rpc_metrics_register(user_app *app, metrics_registry *r)
{
    if (!app || !r || app->metrics)
        return;
    user_metrics *m = xcalloc(1, sizeof *m);
    m->app = app;
    metrics_family *f =
        metrics_family_new(r, METRICS_GAUGE, "outbox_backlog",
                           "Outbox events not yet published to events.user", NULL, NULL, 0);
    m->backlog = metrics_series_get(f, NULL);
    f = metrics_family_new(r, METRICS_COUNTER, "user_outbox_published_total",
                           "Outbox events published to events.user", NULL, NULL, 0);
    m->published = metrics_series_get(f, NULL);
    f = metrics_family_new(r, METRICS_COUNTER, "user_outbox_errors_total",
                           "Failed outbox relay passes (Redis or database unavailable)", NULL, NULL,
                           0);
    m->errors = metrics_series_get(f, NULL);
    static const char *const labels[] = {"result", NULL};
    f = metrics_family_new(r, METRICS_COUNTER, "user_cache_requests_total",
                           "User cache lookups by result (error = Redis failed, DB used)", labels,
                           NULL, 0);
    static const char *const hit[] = {"hit"}, *const miss[] = {"miss"}, *const er[] = {"error"};
    m->hit = metrics_series_get(f, hit);
    m->miss = metrics_series_get(f, miss);
    m->cerr = metrics_series_get(f, er);
    app->metrics = m;
    metrics_on_collect(r, collect, m);
}
