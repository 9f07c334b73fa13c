/* svc: the shared main of every service: config → log → db (migrations) → cache → rpc_server →
 * signals. */
#ifndef COMMON_SVC_H
#define COMMON_SVC_H

#include <stdbool.h>
#include <stddef.h>

#include "common/cache.h"
#include "common/config.h"
#include "common/db.h"
#include "common/metrics.h"
#include "common/rpc_server.h"

/* Options every service has (env names in docs/CONFIGURATION.md). */
typedef struct svc_config {
    char *listen_addr;           /* LISTEN_ADDR */
    char *metrics_addr;          /* METRICS_ADDR */
    char *database_url;          /* DATABASE_URL */
    int db_pool_size;            /* DB_POOL_SIZE */
    int db_pool_wait_ms;         /* DB_POOL_WAIT_MS */
    int db_statement_timeout_ms; /* DB_STATEMENT_TIMEOUT_MS */
    int slow_query_ms;           /* SLOW_QUERY_MS */
    char *redis_url;             /* REDIS_URL */
    int redis_timeout_ms;        /* REDIS_TIMEOUT_MS */
    int rpc_threads;             /* RPC_THREADS */
    int rpc_max_message_bytes;   /* RPC_MAX_MESSAGE_BYTES */
    int rpc_max_inflight;        /* RPC_MAX_INFLIGHT */
    int shutdown_grace_ms;       /* SHUTDOWN_GRACE_MS */
    char *log_level;             /* LOG_LEVEL */
} svc_config;

/* What a running service has; handed to start/stop and (as state) to handlers. */
typedef struct svc_env {
    const svc_config *cfg;
    const void *svc_cfg; /* the service's own config struct */
    db_pool *db;
    cache *cache;
    rpc_server *server;
    metrics_registry *metrics; /* served on METRICS_ADDR; start() may add its own families */
    void *state;               /* set by start(); handlers get it as ctx->state */
} svc_env;

typedef struct svc_def {
    const char *name;            /* "user": log service name */
    const char *grpc_service;    /* "user.v1.UserService" */
    const char *schema;          /* "users" */
    const char *default_listen;  /* "0.0.0.0:50052" */
    const char *default_metrics; /* "0.0.0.0:9092" */
    const char *default_database_url;
    bool calls_peers; /* makes rpc_client calls: --help lists the BREAKER_* / RPC_RETRY_* options */
    const char *default_rpc_threads; /* RPC_THREADS default; NULL = "2" (auth blocks a thread per
                                        login while it hashes; permission per Redis round trip) */
    const db_migration *migrations;
    size_t nmigrations;
    const rpc_method *methods;
    size_t nmethods;
    /* The service's own options (may be NULL/0): loaded into a struct of cfg_size bytes. */
    const config_opt *opts;
    size_t nopts;
    size_t cfg_size;
    /* After db and cache are up, before serving: build env->state (threads, clients...). */
    err_code (*start)(svc_env *env, err_info *e);
    /* After the server stopped: stop threads, free env->state. */
    void (*stop)(svc_env *env);
} svc_def;

/* Runs the service until SIGTERM/SIGINT; returns the process exit code (0 on clean shutdown,
 * 1 on a start-up error, which is logged naming its cause). `--help` prints the options. */
int svc_main(const svc_def *def, int argc, char **argv);

#endif
