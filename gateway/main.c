/* gateway: the HTTP/JSON front door: config → log → Redis/keys/clients → HTTP server → signals →
 * graceful shutdown (/ready 503, stop accepting, finish in-flight within SHUTDOWN_GRACE_MS). */
#include <stdio.h>
#include <string.h>

#include "authn.h"
#include "common/cache.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc_server.h"
#include "gw_config.h"
#include "http_server.h"
#include "ratelimit.h"
#include "upstream.h"

int main(int argc, char **argv)
{
    size_t ntab;
    const config_opt *tab = gw_config_table(&ntab);
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        config_print_help(tab, ntab);
        return 0;
    }
    rpc_signals_block(); /* before any thread, gRPC's and MHD's included */
    gw_config cfg;
    err_info e;
    err_clear(&e);
    if (gw_config_load(&cfg, &e) != ERR_OK) {
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
    http_server *hs = NULL;
    metrics_http *mh = NULL;
    if (!redis) {
        log_error(NULL, "REDIS_URL: %s", e.msg);
        goto out;
    }
    up = upstream_new(&cfg, &e);
    if (!up) {
        log_error(NULL, "upstream: %s", e.msg);
        goto out;
    }
    upstream_export_metrics(up, mr);
    upstream_start_key_refresher(up, an, cfg.jwks_refresh_sec);
    http_deps d = {&cfg, an, rl, up, redis, mr};
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
    upstream_free(up);
    ratelimit_free(rl);
    authn_free(an);
    metrics_registry_free(mr);
    cache_free(redis);
    gw_config_free(&cfg);
    log_info(NULL, "gateway stopped");
    return rc;
}
