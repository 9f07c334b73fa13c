/* http_server: the gateway's request pipeline (route → authn → rate limit → transcode → authz →
 * RPC → JSON) on gateway/httpd; no thread waits while gRPC calls are in flight. */
#ifndef GATEWAY_HTTP_SERVER_H
#define GATEWAY_HTTP_SERVER_H

#include <stdbool.h>

#include "authn.h"
#include "common/cache_mux.h"
#include "common/metrics.h"
#include "gw_config.h"
#include "ratelimit.h"
#include "upstream.h"

typedef struct http_deps {
    const gw_config *cfg;
    authn *an;
    ratelimit *rl;
    upstream *up;
    cache_mux *redis; /* revocation, rate limits, /ready's PING; NULL = no Redis (fail closed) */
    metrics_registry *metrics;
} http_deps;

typedef struct http_server http_server;

/* Binds cfg->listen_addr (port 0 = any; see http_server_port) and starts serving. */
http_server *http_server_start(const http_deps *d, err_info *e);
int http_server_port(const http_server *s);
/* Shutdown, step 1: /health and /ready answer 503, the listening socket is closed. */
void http_server_drain(http_server *s);
/* Step 2: waits until no request is in flight or grace_ms passed; true when idle. */
bool http_server_wait_idle(http_server *s, int grace_ms);
/* Step 3: stops the HTTP loops (idle connections close) and awaits outstanding gRPC callbacks. */
void http_server_free(http_server *s);

#endif
