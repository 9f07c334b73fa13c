/* gw_config: the gateway's option table (names fixed by the cross-team contract). */
#include "gw_config.h"

#include <stddef.h>
#include <string.h>

#define O(f) offsetof(gw_config, f)

static const config_opt TABLE[] = {
    {"LISTEN_ADDR", CONFIG_STR, O(listen_addr), "0.0.0.0:8080", 0, 0,
     "HTTP listen address host:port"},
    {"AUTH_SERVICE_ADDR", CONFIG_STR, O(auth_addr), "127.0.0.1:50051", 0, 0,
     "auth service gRPC address"},
    {"USER_SERVICE_ADDR", CONFIG_STR, O(user_addr), "127.0.0.1:50052", 0, 0,
     "user service gRPC address"},
    {"PERMISSION_SERVICE_ADDR", CONFIG_STR, O(permission_addr), "127.0.0.1:50053", 0, 0,
     "permission service gRPC address"},
    {"REDIS_URL", CONFIG_SECRET, O(redis_url), "redis://127.0.0.1:6379/0", 0, 0,
     "Redis for revocation checks and rate limits"},
    {"REDIS_TIMEOUT_MS", CONFIG_INT, O(redis_timeout_ms), "1000", 1, 60000,
     "Redis connect/command timeout"},
    {"JWT_ISSUER", CONFIG_STR, O(jwt_issuer), "identity", 0, 0, "required iss of access tokens"},
    {"JWT_AUDIENCE", CONFIG_STR, O(jwt_audience), "identity-api", 0, 0,
     "required aud of access tokens"},
    {"JWT_LEEWAY_SEC", CONFIG_INT, O(jwt_leeway_sec), "30", 0, 600, "clock leeway for exp/nbf"},
    {"JWKS_REFRESH_SEC", CONFIG_INT, O(jwks_refresh_sec), "300", 5, 86400,
     "period of the JWKS refresh from auth (also refreshed on an unknown kid)"},
    {"CORS_ALLOWED_ORIGINS", CONFIG_STR, O(cors_origins), "", 0, 0,
     "comma-separated origins allowed by CORS (credentials allowed; never *)"},
    {"RATE_LIMIT_AUTH_RPM", CONFIG_INT, O(rl_auth_rpm), "20", 0, 100000000,
     "register + login requests per minute per IP (0 = off)"},
    {"RATE_LIMIT_ANON_RPM", CONFIG_INT, O(rl_anon_rpm), "300", 0, 100000000,
     "other anonymous requests per minute per IP (0 = off)"},
    {"RATE_LIMIT_USER_RPM", CONFIG_INT, O(rl_user_rpm), "1200", 0, 100000000,
     "signed-in requests per minute per user (0 = off)"},
    {"REQUEST_TIMEOUT_MS", CONFIG_INT, O(request_timeout_ms), "5000", 10, 600000,
     "deadline of a request (→ 504), passed to every gRPC call"},
    {"MAX_BODY_BYTES", CONFIG_INT, O(max_body_bytes), "1048576", 1, 1073741824,
     "request body limit (→ 413)"},
    {"MAX_HEADER_BYTES", CONFIG_INT, O(max_header_bytes), "16384", 1024, 49152,
     "request header limit (→ 431)"},
    {"IDLE_TIMEOUT_SEC", CONFIG_INT, O(idle_timeout_sec), "30", 1, 3600,
     "keep-alive connection idle limit; also a body or an answer stalled this long"},
    {"HEADER_TIMEOUT_SEC", CONFIG_INT, O(header_timeout_sec), "10", 1, 3600,
     "a request's headers must arrive within this time of its first byte (of the accept for a "
     "new connection)"},
    {"COOKIE_SECURE", CONFIG_BOOL, O(cookie_secure), "true", 0, 0,
     "Secure attribute on the refresh-token cookie (false only for local plain http)"},
    {"HTTP_THREADS", CONFIG_INT, O(http_threads), "2", 1, 256, "HTTP event-loop threads"},
    {"SHUTDOWN_GRACE_MS", CONFIG_INT, O(shutdown_grace_ms), "10000", 0, 600000,
     "on SIGTERM, in-flight requests may finish for this long"},
    {"LOG_LEVEL", CONFIG_STR, O(log_level), "info", 0, 0, "debug|info|warn|error"},
    {"METRICS_ADDR", CONFIG_STR, O(metrics_addr), "", 0, 0,
     "when set (host:port), /metrics is served there only (e.g. 127.0.0.1:9090) instead of on "
     "LISTEN_ADDR"},
};

const config_opt *gw_config_table(size_t *n)
{
    *n = sizeof TABLE / sizeof TABLE[0];
    return TABLE;
}

err_code gw_config_load(gw_config *c, err_info *e)
{
    memset(c, 0, sizeof *c);
    return config_load(TABLE, sizeof TABLE / sizeof TABLE[0], c, e);
}

void gw_config_free(gw_config *c)
{
    config_free(TABLE, sizeof TABLE / sizeof TABLE[0], c);
}
