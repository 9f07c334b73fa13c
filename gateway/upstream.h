/* upstream: one rpc_client per backend service, health checks and the JWKS fetch. */
#ifndef GATEWAY_UPSTREAM_H
#define GATEWAY_UPSTREAM_H

#include "authn.h"
#include "common/breaker.h"
#include "common/metrics.h"
#include "common/rpc_client.h"
#include "gw_config.h"
#include "routes.h"

typedef struct upstream upstream;

/* One client per service with the process's resilience policy (breaker, retries, deadline
 * margin: common/rpc_client) and, when mr is given, its client metrics (grpc_client_*,
 * circuit_breaker_state{target}, ...) in mr. policy NULL = built-in defaults. */
upstream *upstream_new(const gw_config *cfg, const rpc_client_policy *policy, metrics_registry *mr,
                       err_info *e);
void upstream_free(upstream *u); /* no call may be in flight */
rpc_client *upstream_client(upstream *u, routes_svc s);
/* The circuit breaker of a service's client (owned by the rpc_client; every call through
 * upstream_client goes through it). For state pages (/ready). */
breaker *upstream_breaker(upstream *u, routes_svc s);
const char *upstream_name(routes_svc s);

/* Blocking GetJwks → authn_set_jwks. */
err_code upstream_fetch_jwks(upstream *u, authn *an, int timeout_ms, err_info *e);

/* Starts a thread that loads the keys (retrying every second until auth answers), then refreshes
 * them every refresh_s; stops in upstream_free. */
void upstream_start_key_refresher(upstream *u, authn *an, int refresh_s);

/* A refresh after an unknown kid: at most one per 10 s (returns false when skipped or failed). */
bool upstream_refresh_keys_now(upstream *u, authn *an);

#endif
