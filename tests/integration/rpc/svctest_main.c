/* svctest-service: svc_main around the echo test service, for test_svc (command line, config
 * errors, --health-check, and the whole lifecycle when a database is there). */
#include "common/svc.h"
#include "echo_service.h"

static const svc_def def = {
    .name = "svctest",
    .grpc_service = ECHO_SERVICE,
    .schema = "svctest",
    .default_listen = "127.0.0.1:0",
    .default_metrics = "127.0.0.1:0",
    .methods = echo_methods,
    .nmethods = 1,
};

int main(int argc, char **argv)
{
    return svc_main(&def, argc, argv);
}
