/* rpc_test_server: serves test.v1.EchoService (and Health) through rpc_server until SIGTERM/SIGINT;
 * the Python client test and the benchmark run it. Exit 0 after a clean shutdown. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "echo_service.h"

static int int_arg(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 1 << 30) {
        fprintf(stderr, "bad number '%s'\n", s);
        exit(2);
    }
    return (int)v;
}

int main(int argc, char **argv)
{
    rpc_signals_block();
    rpc_server_opts o = {.addr = "127.0.0.1:0", .service_name = ECHO_SERVICE, .threads = 2};
    const char *level = "info";
    int grace = 5000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--addr") == 0)
            o.addr = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0)
            o.threads = int_arg(argv[i + 1]);
        else if (strcmp(argv[i], "--max-message-bytes") == 0)
            o.max_message_bytes = int_arg(argv[i + 1]);
        else if (strcmp(argv[i], "--max-inflight") == 0)
            o.max_inflight = int_arg(argv[i + 1]);
        else if (strcmp(argv[i], "--grace-ms") == 0)
            grace = int_arg(argv[i + 1]);
        else if (strcmp(argv[i], "--log-level") == 0)
            level = argv[i + 1];
        else {
            fprintf(stderr,
                    "usage: %s [--addr host:port] [--threads n] [--max-message-bytes n] "
                    "[--max-inflight n] [--grace-ms n] [--log-level l]\n",
                    argv[0]);
            return 2;
        }
    }
    log_level lvl = LOG_INFO;
    log_level_parse(level, &lvl);
    log_init("rpc_test_server", lvl);

    echo_state st = {0};
    o.state = &st;
    err_info e;
    rpc_server *s = rpc_server_new(&o, echo_methods, echo_nmethods, &e);
    if (!s) {
        log_error(NULL, "start-up failed: %s", e.msg);
        return 1;
    }
    char self[64];
    snprintf(self, sizeof self, "127.0.0.1:%d", rpc_server_port(s));
    rpc_client_opts co = {.target = self, .name = "self", .default_timeout_ms = 30000};
    st.self = rpc_client_new(&co, &e);
    if (rpc_server_start(s, &e) != ERR_OK) {
        log_error(NULL, "start-up failed: %s", e.msg);
        return 1;
    }
    log_info_kv(NULL, NULL, "serving on port %d", rpc_server_port(s));
    int sig = rpc_signals_wait();
    log_info(NULL, "signal %d: shutting down", sig);
    rpc_server_shutdown(s, grace);
    rpc_server_free(s);
    rpc_client_free(st.self);
    return 0;
}
