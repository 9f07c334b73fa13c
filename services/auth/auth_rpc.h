/* auth_rpc: the gRPC face of auth.v1.AuthService: options, the method table, request validation
 * (field violations), proto mapping, and start/stop for svc_main. */
#ifndef AUTH_RPC_H
#define AUTH_RPC_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"
#include "common/rpc_server.h"
#include "common/svc.h"

/* auth's own options (env names in auth_config_opts). */
typedef struct auth_config {
    char *user_service_addr, *permission_service_addr;
    int peer_timeout_ms;
    char *jwt_keys_dir, *jwt_issuer, *jwt_audience;
    bool jwt_key_autogenerate;
    int jwt_leeway_s, access_ttl_s, refresh_ttl_s, session_max_s;
    int argon2_memory_kib, argon2_iterations, hash_workers, hash_queue, hash_nice;
    int login_max_failures, login_window_s;
    char *bootstrap_email, *bootstrap_password;
    bool events_enabled;
    int events_claim_idle_ms, events_claim_interval_ms;
} auth_config;

extern const config_opt auth_config_opts[];
extern const size_t auth_config_nopts;

extern const rpc_method auth_rpc_methods[];
extern const size_t auth_rpc_nmethods;

err_code auth_rpc_start(svc_env *env, err_info *e);
void auth_rpc_stop(svc_env *env);

#endif
