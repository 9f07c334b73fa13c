/* auth-service: auth.v1.AuthService (credentials, sessions, ES256 tokens, JWKS, revocation). */
#include "auth_rpc.h"
#include "common/svc.h"

extern const db_migration auth_migrations[];
extern const size_t auth_nmigrations;

int main(int argc, char **argv)
{
    const svc_def def = {
        .name = "auth",
        .grpc_service = "auth.v1.AuthService",
        .schema = "auth",
        .default_listen = "0.0.0.0:50051",
        .default_metrics = "0.0.0.0:9091",
        .default_database_url = "host=127.0.0.1 port=5432 dbname=identity user=auth_svc",
        .default_rpc_threads = "72", /* > HASH_WORKERS + HASH_QUEUE: the queue bounds hashing */
        .calls_peers = true,
        .migrations = auth_migrations,
        .nmigrations = auth_nmigrations,
        .methods = auth_rpc_methods,
        .nmethods = auth_rpc_nmethods,
        .opts = auth_config_opts,
        .nopts = auth_config_nopts,
        .cfg_size = sizeof(auth_config),
        .start = auth_rpc_start,
        .stop = auth_rpc_stop,
    };
    return svc_main(&def, argc, argv);
}
