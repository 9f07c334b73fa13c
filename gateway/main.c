/* gateway: the HTTP/JSON front door: config → log → Redis/keys/clients → HTTP server → signals →
 * graceful shutdown (/ready 503, stop accepting, finish in-flight within SHUTDOWN_GRACE_MS). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "authn.h"
#include "common/cache.h"
#include "common/cache_mux.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "gw_config.h"
#include "http_server.h"
#include "probe.h"
#include "ratelimit.h"
#include "upstream.h"

/* Same layout as the services' --help (svc.c): docs/CONFIGURATION.md is generated from the
 * "NAME=default  # help" lines (tests/ops/config/gen-configuration). */
static void usage(const char *argv0, const config_opt *tab, size_t ntab)
{
    printf("usage: %s [--help] [--health-check]\n"
           "  gateway (HTTP/JSON front door). Configuration comes from the environment:\n\n",
           argv0);
    config_print_help(tab, ntab);
    rpc_client_policy_print_help();
    printf("\n  --health-check  GET /health on LISTEN_ADDR's port (127.0.0.1 for a wildcard "
           "host, 2 s); exit 0 on 200\n");
}

/* One descriptor per client connection: the soft limit is often 1024 while the hard one is far
 * higher, so take the hard one (as nginx's worker_rlimit_nofile and Go's runtime do). */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn(NULL, "setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    }
}

int main(int argc, char **argv)
{
    size_t ntab;
    const config_opt *tab = gw_config_table(&ntab);
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(argv[0], tab, ntab);
        return 0;
    }
    bool probe = argc > 1 && strcmp(argv[1], "--health-check") == 0;
    if (argc > 1 && !probe) {
        fprintf(stderr, "gateway: unknown argument '%s' (try --help)\n", argv[1]);
        return 2;
    }
    gw_config cfg;
    err_info e;
    err_clear(&e);
    if (probe) {
        /* Docker HEALTHCHECK: no threads, no logging, just GET /health on our own port. */
        int x = 1;
        if (gw_config_load(&cfg, &e) == ERR_OK)
            x = probe_health_main(cfg.listen_addr);
        else
            printf("health-check: %s\n", e.msg);
        gw_config_free(&cfg);
        return x;
    }
    rpc_signals_block(); /* before any thread, gRPC's and MHD's included */
    /* The resilience policy (breakers, retries, deadline margin) is read once, for all clients. */
    rpc_client_policy policy;
    if (gw_config_load(&cfg, &e) != ERR_OK || rpc_client_policy_load(&policy, &e) != ERR_OK) {
        fprintf(stderr, "gateway: %s\n", e.msg);
        gw_config_free(&cfg);
        return 2;
    }
    log_level lvl = LOG_INFO;
    if (!log_level_parse(cfg.log_level, &lvl)) {
        fprintf(stderr, "gateway: LOG_LEVEL: unknown level '%s'\n", cfg.log_level);
        gw_config_free(&cfg);
        return 2;
    }
    log_init("gateway", lvl);
    config_log(tab, ntab, &cfg);

    int rc = 1;
    cache_opts co = {cfg.redis_url, cfg.redis_timeout_ms, 2000};
    cache *redis = cache_new(&co, &e);
    metrics_registry *mr = metrics_registry_new();
    authn_opts ao = {cfg.jwt_issuer, cfg.jwt_audience, cfg.jwt_leeway_sec, redis, 0};
    authn *an = authn_new(&ao);
    ratelimit *rl = ratelimit_new(redis);
    upstream *up = NULL;
    cache_mux *mux = NULL;
    http_server *hs = NULL;
    metrics_http *mh = NULL;
    if (!redis) {
        log_error(NULL, "REDIS_URL: %s", e.msg);
        goto out;
    }
    up = upstream_new(&cfg, &policy, mr, &e);
    if (!up) {
        log_error(NULL, "upstream: %s", e.msg);
        goto out;
    }
    upstream_start_key_refresher(up, an, cfg.jwks_refresh_sec);
    mux = cache_mux_new(redis, &e);
    if (!mux) {
        log_error(NULL, "redis: %s", e.msg);
        goto out;
    }
    raise_fd_limit();
    http_deps d = {&cfg, an, rl, up, mux, mr};
    hs = http_server_start(&d, &e);
    if (!hs) {
        log_error(NULL, "http: %s", e.msg);
        goto out;
    }
    if (cfg.metrics_addr && *cfg.metrics_addr) {
        char eb[256];
        mh = metrics_http_start(mr, cfg.metrics_addr, eb, sizeof eb);
        if (!mh) {
            log_error(NULL, "METRICS_ADDR: %s", eb);
            goto out;
        }
    }
    log_info_kv(NULL, NULL, "gateway listening on %s (port %d)", cfg.listen_addr,
                http_server_port(hs));

    int sig = rpc_signals_wait();
    log_info(NULL, "signal %d: draining (grace %d ms)", sig, cfg.shutdown_grace_ms);
    http_server_drain(hs);
    if (!http_server_wait_idle(hs, cfg.shutdown_grace_ms))
        log_warn(NULL, "grace period over with requests in flight; closing them");
    rc = 0;
out:
    metrics_http_stop(mh);
    http_server_free(hs);
    cache_mux_free(mux);
    upstream_free(up);
    ratelimit_free(rl);
    authn_free(an);
    metrics_registry_free(mr);
    cache_free(redis);
    gw_config_free(&cfg);
    log_info(NULL, "gateway stopped");
    return rc;
}
