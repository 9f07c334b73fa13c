/* rpc_load: a generic unary gRPC load generator (any method, raw request bytes) for benchmarks:
 * keeps N calls in flight for a duration and prints calls/s, latency percentiles and errors.
 * Written on the C core directly (like echo_raw) so it measures servers, not our client. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

typedef struct opts {
    const char *target, *method, *request_file;
    int inflight, threads, timeout_ms;
    double duration_s;
} opts;

typedef struct lcall {
    grpc_call *call;
    grpc_byte_buffer *resp;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    int64_t start_ns;
} lcall;

typedef struct worker {
    const opts *o;
    grpc_channel *ch;
    void *handle;
    grpc_completion_queue *cq;
    grpc_slice req;
    int inflight;
    int64_t end_ns;
    uint32_t *lat_us;
    size_t nlat, caplat;
    uint64_t errors[17];
    pthread_t tid;
} worker;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void start_call(worker *w, lcall *c)
{
    memset(c, 0, sizeof *c);
    grpc_metadata_array_init(&c->init_md);
    grpc_metadata_array_init(&c->trail_md);
    c->start_ns = now_ns();
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                   gpr_time_from_millis(w->o->timeout_ms, GPR_TIMESPAN));
    c->call = grpc_channel_create_registered_call(w->ch, NULL, GRPC_PROPAGATE_DEFAULTS, w->cq,
                                                  w->handle, dl, NULL);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&w->req, 1);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->trail_md;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->details;
    if (grpc_call_start_batch(c->call, ops, 6, c, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "rpc_load: start_batch failed\n");
        exit(1);
    }
    grpc_byte_buffer_destroy(bb);
    w->inflight++;
}

static void finish_call(worker *w, lcall *c)
{
    int64_t us = (now_ns() - c->start_ns) / 1000;
    if (c->status == GRPC_STATUS_OK) {
        if (w->nlat == w->caplat) {
            w->caplat = w->caplat ? w->caplat * 2 : 65536;
            w->lat_us = realloc(w->lat_us, w->caplat * sizeof *w->lat_us);
            if (!w->lat_us)
                abort();
        }
        w->lat_us[w->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    } else {
        w->errors[(unsigned)c->status <= 16 ? (unsigned)c->status : 2]++;
    }
    if (c->resp)
        grpc_byte_buffer_destroy(c->resp);
    grpc_metadata_array_destroy(&c->init_md);
    grpc_metadata_array_destroy(&c->trail_md);
    grpc_slice_unref(c->details);
    grpc_call_unref(c->call);
    w->inflight--;
}

static void *run(void *arg)
{
    worker *w = arg;
    int n = w->o->inflight / w->o->threads;
    if (n < 1)
        n = 1;
    lcall *calls = calloc((size_t)n, sizeof *calls);
    for (int i = 0; i < n; i++)
        start_call(w, &calls[i]);
    while (w->inflight > 0) {
        grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        lcall *c = ev.tag;
        finish_call(w, c);
        if (now_ns() < w->end_ns)
            start_call(w, c);
    }
    free(calls);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint32_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i] / 1000.0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: rpc_load --target host:port [--method /pkg.Svc/Method] [--request-file f]\n"
            "                [--inflight 64] [--duration 10] [--threads 1] [--timeout-ms 5000]\n"
            "  Default method: /grpc.health.v1.Health/Check with an empty HealthCheckRequest.\n"
            "  --request-file: the binary protobuf request (e.g. from protoc --encode).\n");
    exit(2);
}

int main(int argc, char **argv)
{
    opts o = {.method = "/grpc.health.v1.Health/Check",
              .inflight = 64,
              .threads = 1,
              .timeout_ms = 5000,
              .duration_s = 10};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (strcmp(argv[i], "--target") == 0)
            o.target = v;
        else if (strcmp(argv[i], "--method") == 0)
            o.method = v;
        else if (strcmp(argv[i], "--request-file") == 0)
            o.request_file = v;
        else if (strcmp(argv[i], "--inflight") == 0)
            o.inflight = (int)strtol(v, NULL, 10);
        else if (strcmp(argv[i], "--threads") == 0)
            o.threads = (int)strtol(v, NULL, 10);
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            o.timeout_ms = (int)strtol(v, NULL, 10);
        else if (strcmp(argv[i], "--duration") == 0)
            o.duration_s = strtod(v, NULL);
        else
            usage();
        i++;
    }
    if (!o.target || o.inflight < 1 || o.threads < 1 || o.duration_s <= 0 || o.timeout_ms < 1)
        usage();

    unsigned char *body = NULL;
    size_t blen = 0;
    if (o.request_file) {
        FILE *f = fopen(o.request_file, "rb");
        if (!f) {
            perror(o.request_file);
            return 1;
        }
        body = malloc(1 << 22);
        blen = fread(body, 1, 1 << 22, f);
        fclose(f);
    }

    grpc_init();
    worker *ws = calloc((size_t)o.threads, sizeof *ws);
    int64_t t0 = now_ns();
    int64_t end = t0 + (int64_t)(o.duration_s * 1e9);
    for (int i = 0; i < o.threads; i++) {
        worker *w = &ws[i];
        w->o = &o;
        grpc_channel_credentials *cr = grpc_insecure_credentials_create();
        /* One channel (one HTTP/2 connection) per thread. */
        grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = "grpc.channel_id", .value.integer = i};
        grpc_channel_args ca = {1, &arg};
        w->ch = grpc_channel_create(o.target, cr, &ca);
        grpc_channel_credentials_release(cr);
        w->handle = grpc_channel_register_call(w->ch, o.method, NULL, NULL);
        w->cq = grpc_completion_queue_create_for_next(NULL);
        w->req = grpc_slice_from_copied_buffer((const char *)body, blen);
        w->end_ns = end;
    }
    for (int i = 0; i < o.threads; i++)
        pthread_create(&ws[i].tid, NULL, run, &ws[i]);
    size_t total = 0;
    uint64_t errors[17] = {0};
    for (int i = 0; i < o.threads; i++) {
        pthread_join(ws[i].tid, NULL);
        total += ws[i].nlat;
        for (int k = 0; k < 17; k++)
            errors[k] += ws[i].errors[k];
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    uint32_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t o2 = 0;
    for (int i = 0; i < o.threads; i++) {
        memcpy(all + o2, ws[i].lat_us, ws[i].nlat * sizeof *all);
        o2 += ws[i].nlat;
    }
    qsort(all, total, sizeof *all, cmp_u32);
    uint64_t nerr = 0;
    for (int k = 0; k < 17; k++)
        nerr += errors[k];
    printf("target %s method %s inflight %d threads %d duration %.1f s\n", o.target, o.method,
           o.inflight, o.threads, secs);
    printf("ok %zu errors %llu calls/s %.0f\n", total, (unsigned long long)nerr,
           (double)total / secs);
    printf("latency ms p50 %.3f p90 %.3f p99 %.3f max %.3f\n", pct(all, total, 0.5),
           pct(all, total, 0.9), pct(all, total, 0.99), total ? all[total - 1] / 1000.0 : 0.0);
    for (int k = 1; k < 17; k++)
        if (errors[k])
            printf("errors status %d: %llu\n", k, (unsigned long long)errors[k]);

    for (int i = 0; i < o.threads; i++) {
        grpc_completion_queue_shutdown(ws[i].cq);
        while (
            grpc_completion_queue_next(ws[i].cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
            GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(ws[i].cq);
        grpc_slice_unref(ws[i].req);
        grpc_channel_destroy(ws[i].ch);
        free(ws[i].lat_us);
    }
    free(ws);
    free(all);
    free(body);
    grpc_shutdown();
    return nerr && !total ? 1 : 0;
}
