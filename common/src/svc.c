/* svc: the shared main of every service: config → log → db (migrations) → cache → rpc_server →
 * signals → graceful stop; plus `--help` and `--health-check` (Docker HEALTHCHECK). */
#include "common/svc.h"

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/rpc_client.h"
#include "grpc/health/v1/health.pb-c.h"

/* PostgreSQL may come up after us (compose, k8s): keep trying this long at start-up. */
#define SVC_DB_RETRY_S 30

/* Indexes of the options whose defaults depend on the service. */
enum { O_LISTEN, O_METRICS, O_DATABASE_URL };

#define OPT(env, type, field, def, min, max, help)                                                 \
    {                                                                                              \
        env, type, offsetof(svc_config, field), def, min, max, help                                \
    }

static const config_opt common_template[] = {
    OPT("LISTEN_ADDR", CONFIG_STR, listen_addr, NULL, 0, 0, "gRPC listen address host:port"),
    OPT("METRICS_ADDR", CONFIG_STR, metrics_addr, NULL, 0, 0,
        "Prometheus /metrics listen address host:port (port 0 = off)"),
    OPT("DATABASE_URL", CONFIG_SECRET, database_url, NULL, 0, 0,
        "libpq connection string or URL (password masked in logs)"),
    OPT("DB_POOL_SIZE", CONFIG_INT, db_pool_size, "10", 1, 1000, "PostgreSQL connections"),
    OPT("DB_POOL_WAIT_MS", CONFIG_INT, db_pool_wait_ms, "2000", 1, 600000,
        "longest wait for a free connection before UNAVAILABLE"),
    OPT("DB_STATEMENT_TIMEOUT_MS", CONFIG_INT, db_statement_timeout_ms, "5000", 0, 3600000,
        "statement_timeout per connection (0 = none)"),
    OPT("SLOW_QUERY_MS", CONFIG_INT, slow_query_ms, "200", 0, 3600000,
        "log queries slower than this (0 = off)"),
    OPT("REDIS_URL", CONFIG_SECRET, redis_url, "redis://127.0.0.1:6379/0", 0, 0,
        "redis://host:port/db"),
    OPT("REDIS_TIMEOUT_MS", CONFIG_INT, redis_timeout_ms, "1000", 1, 600000,
        "Redis connect and command timeout"),
    OPT("RPC_THREADS", CONFIG_INT, rpc_threads, "2", 1, 256,
        "worker threads for handlers that block (one more thread polls gRPC)"),
    OPT("RPC_MAX_MESSAGE_BYTES", CONFIG_INT, rpc_max_message_bytes, "4194304", 1024, 1073741824,
        "largest gRPC message received or sent"),
    OPT("RPC_MAX_INFLIGHT", CONFIG_INT, rpc_max_inflight, "1000", 1, 1000000,
        "calls in flight above this are refused with RESOURCE_EXHAUSTED"),
    OPT("SHUTDOWN_GRACE_MS", CONFIG_INT, shutdown_grace_ms, "10000", 0, 600000,
        "on SIGTERM, how long calls in flight may finish before they are cancelled"),
    OPT("LOG_LEVEL", CONFIG_STR, log_level, "info", 0, 0, "debug, info, warn or error"),
};

#define O_NCOMMON (sizeof common_template / sizeof common_template[0])

/* The common table with this service's defaults filled in. */
static void common_table(const svc_def *def, config_opt *t, char *dburl, size_t dburl_len)
{
    memcpy(t, common_template, sizeof common_template);
    t[O_LISTEN].def = def->default_listen ? def->default_listen : "0.0.0.0:50051";
    t[O_METRICS].def = def->default_metrics ? def->default_metrics : "0.0.0.0:0";
    for (size_t i = 0; def->default_rpc_threads && i < O_NCOMMON; i++)
        if (strcmp(t[i].env, "RPC_THREADS") == 0)
            t[i].def = def->default_rpc_threads;
    if (def->default_database_url) {
        t[O_DATABASE_URL].def = def->default_database_url;
    } else {
        snprintf(dburl, dburl_len, "host=127.0.0.1 port=5432 dbname=identity user=%s_svc",
                 def->name);
        t[O_DATABASE_URL].def = dburl;
    }
}

static void usage(const svc_def *def, const char *argv0, const config_opt *common)
{
    printf("usage: %s [--help] [--health-check]\n"
           "  %s service (%s). Configuration comes from the environment:\n\n",
           argv0, def->name, def->grpc_service ? def->grpc_service : "");
    config_print_help(common, O_NCOMMON);
    if (def->opts && def->nopts)
        config_print_help(def->opts, def->nopts);
    if (def->calls_peers)
        rpc_client_policy_print_help();
    printf(
        "\n  --health-check  ask grpc.health.v1.Health/Check on LISTEN_ADDR; exit 0 if SERVING\n");
}

/* "0.0.0.0:50052" → "127.0.0.1:50052": where a local probe can reach what we listen on. */
static void local_target(const char *listen, char *out, size_t len)
{
    const char *colon = strrchr(listen, ':');
    const char *port = colon ? colon + 1 : "50051";
    size_t hostlen = colon ? (size_t)(colon - listen) : strlen(listen);
    if (hostlen == 0 || (hostlen == 7 && strncmp(listen, "0.0.0.0", 7) == 0))
        snprintf(out, len, "127.0.0.1:%s", port);
    else if ((hostlen == 4 && strncmp(listen, "[::]", 4) == 0) ||
             (hostlen == 2 && strncmp(listen, "::", 2) == 0))
        snprintf(out, len, "[::1]:%s", port);
    else
        snprintf(out, len, "%s", listen);
}

static int health_check(const svc_config *cfg)
{
    char target[300];
    local_target(cfg->listen_addr, target, sizeof target);
    rpc_client_opts co = {.target = target, .name = "health-check", .default_timeout_ms = 2000};
    err_info e;
    rpc_client *c = rpc_client_new(&co, &e);
    if (!c) {
        printf("health-check: %s\n", e.msg);
        return 1;
    }
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    arena *a = arena_new(0);
    ProtobufCMessage *m = NULL;
    rpc_call_opts o = {.deadline_ms = rpc_now_ms() + 2000};
    err_code rc =
        rpc_client_call(c, "/grpc.health.v1.Health/Check", &req.base,
                        &grpc__health__v1__health_check_response__descriptor, &o, a, &m, &e);
    int exit_code = 1;
    if (rc != ERR_OK) {
        printf("health-check %s: %s: %s\n", target, err_str(rc), e.msg);
    } else {
        int st = ((Grpc__Health__V1__HealthCheckResponse *)m)->status;
        bool serving = st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        printf("health-check %s: %s\n", target, serving ? "SERVING" : "NOT_SERVING");
        exit_code = serving ? 0 : 1;
    }
    arena_free(a);
    rpc_client_free(c);
    return exit_code;
}

/* Sleeps up to ms, returning early (true) when SIGINT/SIGTERM arrives (they are blocked, so
 * sigtimedwait takes them): a stop during the start-up retries must not wait them out. */
static bool stop_requested_within(int ms)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    return sigtimedwait(&set, NULL, &ts) > 0;
}

static db_pool *connect_db(const svc_def *def, const svc_config *cfg, bool *stopped)
{
    db_pool_opts po = {.conninfo = cfg->database_url,
                       .schema = def->schema,
                       .size = cfg->db_pool_size,
                       .acquire_timeout_ms = cfg->db_pool_wait_ms,
                       .statement_timeout_ms = cfg->db_statement_timeout_ms,
                       .connect_timeout_s = 5,
                       .slow_query_ms = cfg->slow_query_ms};
    int64_t give_up = rpc_now_ms() + SVC_DB_RETRY_S * 1000;
    *stopped = false;
    for (int attempt = 1;; attempt++) {
        err_info e;
        db_pool *p = db_pool_new(&po, &e);
        if (p) {
            if (attempt > 1)
                log_info(NULL, "database reachable after %d attempts", attempt);
            return p;
        }
        /* db_pool_new masks the password in its message. */
        if (e.code != ERR_UNAVAILABLE || rpc_now_ms() >= give_up) {
            log_error(NULL, "start-up failed: database: %s", e.msg);
            return NULL;
        }
        log_warn(NULL, "database not reachable yet (attempt %d, retrying for up to %d s): %s",
                 attempt, SVC_DB_RETRY_S, e.msg);
        if (stop_requested_within(1000)) {
            log_info(NULL, "stop requested during start-up");
            *stopped = true;
            return NULL;
        }
    }
}

/* Metrics every service exports (names in SPEC §4 and deploy/prometheus/alerts.yml). */
typedef struct svc_metrics {
    metrics_family *handled, *seconds;
    metrics_family *pool_size, *pool_in_use, *pool_idle, *pool_waiting, *pool_wait_seconds,
        *pool_timeouts, *pool_reconnects;
    metrics_family *cache_hits, *cache_misses, *cache_errors;
    svc_env *env;
} svc_metrics;

static void svc_on_call_done(void *arg, const char *method, err_code code, double seconds)
{
    svc_metrics *m = arg;
    /* "/user.v1.UserService/GetUser" → service "user.v1.UserService", method "GetUser". */
    char service[128] = "";
    const char *slash = method ? strrchr(method, '/') : NULL;
    if (!slash)
        return;
    size_t sl = (size_t)(slash - method) - (method[0] == '/');
    if (sl >= sizeof service)
        sl = sizeof service - 1;
    memcpy(service, method + (method[0] == '/'), sl);
    service[sl] = '\0';
    const char *l3[] = {service, slash + 1, err_str(code)};
    metrics_inc(m->handled, l3);
    metrics_observe(m->seconds, l3, seconds);
}

static void svc_collect(void *arg)
{
    svc_metrics *m = arg;
    if (m->env->db) {
        db_pool_stats st;
        db_pool_stats_get(m->env->db, &st);
        metrics_gauge_set(metrics_series_get(m->pool_size, NULL), st.size);
        metrics_gauge_set(metrics_series_get(m->pool_in_use, NULL), st.in_use);
        metrics_gauge_set(metrics_series_get(m->pool_idle, NULL), st.idle);
        metrics_gauge_set(metrics_series_get(m->pool_waiting, NULL), st.waiting);
        metrics_gauge_set(metrics_series_get(m->pool_wait_seconds, NULL), st.wait_us_total / 1e6);
        metrics_gauge_set(metrics_series_get(m->pool_timeouts, NULL), (double)st.timeouts);
        metrics_gauge_set(metrics_series_get(m->pool_reconnects, NULL), (double)st.reconnects);
    }
    if (m->env->cache) {
        cache_stats cs;
        cache_stats_get(m->env->cache, &cs);
        metrics_gauge_set(metrics_series_get(m->cache_hits, NULL), (double)cs.hits);
        metrics_gauge_set(metrics_series_get(m->cache_misses, NULL), (double)cs.misses);
        metrics_gauge_set(metrics_series_get(m->cache_errors, NULL), (double)cs.errors);
    }
}

static void svc_metrics_init(svc_metrics *m, svc_env *env)
{
    metrics_registry *r = env->metrics;
    static const char *l3[] = {"grpc_service", "grpc_method", "grpc_code", NULL};
    m->env = env;
    m->handled = metrics_family_new(r, METRICS_COUNTER, "grpc_server_handled_total",
                                    "RPCs completed on the server, by code.", l3, NULL, 0);
    m->seconds =
        metrics_family_new(r, METRICS_HISTOGRAM, "grpc_server_handling_seconds",
                           "RPC handling time on the server (SPEC §4: by code too).", l3, NULL, 0);
    m->pool_size =
        metrics_family_new(r, METRICS_GAUGE, "db_pool_size", "Pool connections.", NULL, NULL, 0);
    m->pool_in_use = metrics_family_new(r, METRICS_GAUGE, "db_pool_in_use",
                                        "Connections handed out.", NULL, NULL, 0);
    m->pool_idle =
        metrics_family_new(r, METRICS_GAUGE, "db_pool_idle", "Connections idle.", NULL, NULL, 0);
    m->pool_waiting = metrics_family_new(r, METRICS_GAUGE, "db_pool_waiting",
                                         "Callers waiting for a connection.", NULL, NULL, 0);
    /* Running totals kept by db.c and cache.c, copied at scrape time (monotonic, so counters). */
    m->pool_wait_seconds =
        metrics_family_new(r, METRICS_COUNTER, "db_pool_wait_seconds_total",
                           "Total time callers waited for a connection.", NULL, NULL, 0);
    m->pool_timeouts = metrics_family_new(r, METRICS_COUNTER, "db_pool_timeouts_total",
                                          "Acquires that gave up (UNAVAILABLE).", NULL, NULL, 0);
    m->pool_reconnects = metrics_family_new(r, METRICS_COUNTER, "db_pool_reconnects_total",
                                            "Broken connections replaced.", NULL, NULL, 0);
    m->cache_hits = metrics_family_new(r, METRICS_COUNTER, "cache_hits_total", "Redis GET hits.",
                                       NULL, NULL, 0);
    m->cache_misses = metrics_family_new(r, METRICS_COUNTER, "cache_misses_total",
                                         "Redis GET misses.", NULL, NULL, 0);
    m->cache_errors = metrics_family_new(r, METRICS_COUNTER, "cache_errors_total",
                                         "Redis calls that failed.", NULL, NULL, 0);
    metrics_on_collect(r, svc_collect, m);
}

int svc_main(const svc_def *def, int argc, char **argv)
{
    rpc_signals_block(); /* before any thread, gRPC's included: they inherit the mask */

    config_opt common[O_NCOMMON];
    char dburl[256];
    common_table(def, common, dburl, sizeof dburl);

    bool want_health = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(def, argv[0], common);
            return 0;
        } else if (strcmp(argv[i], "--health-check") == 0) {
            want_health = true;
        } else {
            fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", argv[0], argv[i]);
            return 2;
        }
    }

    log_init(def->name, LOG_INFO);
    svc_config cfg;
    memset(&cfg, 0, sizeof cfg);
    void *scfg = def->cfg_size ? xcalloc(1, def->cfg_size) : NULL;
    svc_env env;
    memset(&env, 0, sizeof env);
    env.cfg = &cfg;
    env.svc_cfg = scfg;
    int exit_code = 1;
    bool started = false;
    err_info e;
    svc_metrics sm;
    metrics_http *mhttp = NULL;
    env.metrics = metrics_registry_new();
    svc_metrics_init(&sm, &env);

    if (config_load(common, O_NCOMMON, &cfg, &e) != ERR_OK) {
        log_error(NULL, "start-up failed: config: %s", e.msg);
        goto out;
    }
    log_level lvl;
    if (!log_level_parse(cfg.log_level, &lvl)) {
        log_error(NULL,
                  "start-up failed: config: LOG_LEVEL: must be debug, info, warn or error, "
                  "got '%.40s'",
                  cfg.log_level);
        goto out;
    }
    if (want_health) {
        exit_code = health_check(&cfg);
        goto out;
    }
    if (def->opts && def->nopts && config_load(def->opts, def->nopts, scfg, &e) != ERR_OK) {
        log_error(NULL, "start-up failed: config: %s", e.msg);
        goto out;
    }
    log_init(def->name, lvl);
    config_log(common, O_NCOMMON, &cfg);
    if (def->opts && def->nopts)
        config_log(def->opts, def->nopts, scfg);

    bool stopped;
    env.db = connect_db(def, &cfg, &stopped);
    if (!env.db) {
        exit_code = stopped ? 0 : 1;
        goto out;
    }
    if (def->schema &&
        db_migrate(env.db, def->schema, def->migrations, def->nmigrations, &e) != ERR_OK) {
        log_error(NULL, "start-up failed: migrations: %s", e.msg);
        goto out;
    }
    cache_opts cop = {
        .url = cfg.redis_url, .timeout_ms = cfg.redis_timeout_ms, .backoff_max_ms = 5000};
    env.cache = cache_new(&cop, &e);
    if (!env.cache) {
        log_error(NULL, "start-up failed: redis: %s", e.msg);
        goto out;
    }
    rpc_server_opts so = {.addr = cfg.listen_addr,
                          .service_name = def->grpc_service,
                          .threads = cfg.rpc_threads,
                          .max_message_bytes = cfg.rpc_max_message_bytes,
                          .max_inflight = cfg.rpc_max_inflight,
                          .on_call_done = svc_on_call_done,
                          .on_call_done_arg = &sm};
    env.server = rpc_server_new(&so, def->methods, def->nmethods, &e);
    if (!env.server) {
        log_error(NULL, "start-up failed: %s", e.msg);
        goto out;
    }
    if (def->start && def->start(&env, &e) != ERR_OK) {
        log_error(NULL, "start-up failed: %s: %s", def->name, e.msg[0] ? e.msg : err_str(e.code));
        goto out;
    }
    started = true;
    rpc_server_set_state(env.server, env.state);
    {
        char merr[160] = "";
        mhttp = metrics_http_start(env.metrics, cfg.metrics_addr, merr, sizeof merr);
        if (!mhttp && merr[0]) {
            log_error(NULL, "start-up failed: %s", merr);
            goto out;
        }
    }
    if (rpc_server_start(env.server, &e) != ERR_OK) {
        log_error(NULL, "start-up failed: %s", e.msg);
        goto out;
    }
    {
        char kv[400], a[300];
        snprintf(kv, sizeof kv, "\"addr\":%s,\"port\":%d",
                 log_json_str(a, sizeof a, cfg.listen_addr), rpc_server_port(env.server));
        log_info_kv(NULL, kv, "serving %s", def->grpc_service ? def->grpc_service : def->name);
    }

    int sig = rpc_signals_wait();
    log_info(NULL, "%s: shutting down (grace %d ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
             cfg.shutdown_grace_ms);
    rpc_server_set_serving(env.server, false);
    rpc_server_shutdown(env.server, cfg.shutdown_grace_ms);
    exit_code = 0;

out:
    if (env.server)
        rpc_server_shutdown(env.server, 0);
    metrics_http_stop(mhttp);
    if (started && def->stop)
        def->stop(&env);
    rpc_server_free(env.server);
    if (env.cache)
        cache_free(env.cache);
    db_pool_free(env.db);
    if (def->opts && def->nopts && scfg)
        config_free(def->opts, def->nopts, scfg);
    free(scfg);
    config_free(common, O_NCOMMON, &cfg);
    metrics_registry_free(env.metrics);
    if (exit_code == 0 && !want_health)
        log_info(NULL, "stopped");
    return exit_code;
}
