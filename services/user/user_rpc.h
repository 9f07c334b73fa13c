/* user_rpc: the gRPC face of user.v1.UserService: the method table, request validation (field
 * violations), proto ↔ domain mapping, and the service's start/stop for svc_main. */
#ifndef USER_RPC_H
#define USER_RPC_H

#include <stddef.h>

#include "common/config.h"
#include "common/rpc_server.h"
#include "common/svc.h"
#include "user_outbox.h"
#include "user_service.h"
#include "user_store.h"

/* The user service's own options (svc_def.opts fills it). */
typedef struct user_config {
    int cache_ttl_s;          /* USER_CACHE_TTL_SEC */
    char *page_token_secret;  /* PAGE_TOKEN_SECRET */
    int outbox_poll_ms;       /* OUTBOX_POLL_MS */
    int outbox_batch;         /* OUTBOX_BATCH */
    int outbox_retention_s;   /* OUTBOX_RETENTION_SEC */
    int outbox_stream_maxlen; /* OUTBOX_STREAM_MAXLEN */
} user_config;

extern const config_opt user_config_opts[];
extern const size_t user_config_nopts;

/* What handlers get as ctx->state. */
typedef struct user_app {
    user_service *svc;
    user_store *store;
    user_outbox *outbox;
    void *metrics; /* set by user_rpc_metrics_register */
} user_app;

extern const rpc_method user_rpc_methods[];
extern const size_t user_rpc_nmethods;

/* svc_def.start / stop: build the store, the outbox relay (thread started) and the service. */
err_code user_rpc_start(svc_env *env, err_info *e);
void user_rpc_stop(svc_env *env);

/* Registers the service's own metrics in r and a collect callback that refreshes them from app:
 * user_outbox_backlog (gauge), user_outbox_published_total, user_outbox_errors_total,
 * user_cache_requests_total{result="hit|miss|error"}. app must outlive r's rendering. svc_env has
 * no metrics registry yet, so nothing calls this in the binary today (see docs/arch/user.md). */
struct metrics_registry;
void user_rpc_metrics_register(user_app *app, struct metrics_registry *r);

/* Builds/frees a user_app directly (tests running the service in-process). cfg NULL = defaults. */
user_app *user_app_new(db_pool *db, cache *c, const user_config *cfg, bool start_relay,
                       err_info *e);
void user_app_free(user_app *app);

#endif
