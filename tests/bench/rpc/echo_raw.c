/* echo_raw: the benchmark's baseline: a unary server written straight on the C core (no arena,
 * no protobuf, no metadata, no logging) that answers every call to one method with the request
 * bytes. Same shape as rpc_server (one queue, N polling threads, requests kept posted). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#define POSTED 64

typedef struct rcall {
    int done; /* 0: waiting for a call, 1: replying */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    int cancelled;
} rcall;

static grpc_server *server;
static grpc_completion_queue *cq;
static void *method;

static void post(void)
{
    rcall *c = calloc(1, sizeof *c);
    grpc_metadata_array_init(&c->md);
    grpc_server_request_registered_call(server, method, &c->call, &c->deadline, &c->md, &c->payload,
                                        cq, cq, c);
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE || !ev.tag)
            continue;
        rcall *c = ev.tag;
        if (c->done || !ev.success) {
            if (c->call)
                grpc_call_unref(c->call);
            if (c->payload)
                grpc_byte_buffer_destroy(c->payload);
            grpc_metadata_array_destroy(&c->md);
            free(c);
            continue;
        }
        post();
        c->done = 1;
        grpc_op ops[4];
        memset(ops, 0, sizeof ops);
        size_t n = 0;
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        if (c->payload) {
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n++].data.send_message.send_message = c->payload;
        }
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n++].data.send_status_from_server.status = GRPC_STATUS_OK;
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
        grpc_call_start_batch(c->call, ops, n, c, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0", *name = "/grpc.health.v1.Health/Check";
    int threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--addr") == 0)
            addr = argv[i + 1];
        else if (strcmp(argv[i], "--method") == 0)
            name = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0)
            threads = (int)strtol(argv[i + 1], NULL, 10);
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    grpc_init();
    grpc_arg a = {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0};
    grpc_channel_args ca = {1, &a};
    server = grpc_server_create(&ca, NULL);
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    method = grpc_server_register_method(server, name, NULL,
                                         GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *cr = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, addr, cr);
    grpc_server_credentials_release(cr);
    if (!port) {
        fprintf(stderr, "echo_raw: cannot listen on %s\n", addr);
        return 1;
    }
    grpc_server_start(server);
    for (int i = 0; i < POSTED; i++)
        post();
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    printf("echo_raw serving %s on port %d\n", name, port);
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    grpc_server_shutdown_and_notify(server, cq, NULL);
    grpc_server_cancel_all_calls(server);
    /* The NULL tag comes back through a worker; then stop the queue. */
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    grpc_completion_queue_shutdown(cq);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    grpc_server_destroy(server);
    grpc_completion_queue_destroy(cq);
    free(t);
    grpc_shutdown();
    return 0;
}
