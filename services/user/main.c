/* user-service: user.v1.UserService (profiles, cache-aside, pagination, audit, outbox relay). */
#include "common/svc.h"
#include "user_rpc.h"

extern const db_migration user_migrations[];
extern const size_t user_nmigrations;

int main(int argc, char **argv)
{
    const svc_def def = {
        .name = "user",
        .grpc_service = "user.v1.UserService",
        .schema = "users",
        .default_listen = "0.0.0.0:50052",
        .default_metrics = "0.0.0.0:9092",
        .default_database_url = "host=127.0.0.1 port=5432 dbname=identity user=user_svc",
        .migrations = user_migrations,
        .nmigrations = user_nmigrations,
        .methods = user_rpc_methods,
        .nmethods = user_rpc_nmethods,
        .opts = user_config_opts,
        .nopts = user_config_nopts,
        .cfg_size = sizeof(user_config),
        .start = user_rpc_start,
        .stop = user_rpc_stop,
    };
    return svc_main(&def, argc, argv);
}
