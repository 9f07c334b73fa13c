/* gw_config: the gateway's configuration, read once from the environment through common/config. */
#ifndef GATEWAY_GW_CONFIG_H
#define GATEWAY_GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"

typedef struct gw_config {
    char *listen_addr;
    char *auth_addr, *user_addr, *permission_addr;
    char *redis_url;
    int redis_timeout_ms;
    char *jwt_issuer, *jwt_audience;
    int jwt_leeway_sec;
    int jwks_refresh_sec;
    char *cors_origins;
    int rl_auth_rpm, rl_anon_rpm, rl_user_rpm;
    int request_timeout_ms;
    int max_body_bytes;
    int max_header_bytes;
    int idle_timeout_sec;
    int header_timeout_sec;
    bool cookie_secure;
    int http_threads;
    int shutdown_grace_ms;
    char *log_level;
    char *metrics_addr;
} gw_config;

const config_opt *gw_config_table(size_t *n);
/* Defaults for tests: every field as if the environment were empty (call gw_config_free after). */
err_code gw_config_load(gw_config *c, err_info *e);
void gw_config_free(gw_config *c);

#endif
