/* test_rpc: rpc_server + rpc_client end to end over loopback with the echo test service:
 * round trip, metadata, deadlines, errors and their details, propagation, health, limits,
 * concurrency and shutdown with calls in flight; asynchronous handlers (RPC_PENDING, rpc_reply,
 * rpc_continue). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "echo_service.h"
#include "grpc/health/v1/health.pb-c.h"
#include "test_support.h"

#define MAX_MSG (64 * 1024)

static rpc_server *srv;
static rpc_client *cli;
static echo_state state;
static char target[64];

static atomic_int done_calls;

static void count_done(void *arg, const char *method, err_code code, double seconds)
{
    (void)arg;
    (void)method;
    (void)code;
    (void)seconds;
    atomic_fetch_add(&done_calls, 1);
}

static rpc_server *start_server(const char *addr, int threads, int max_inflight, echo_state *st,
                                rpc_client **self)
{
    rpc_server_opts o = {.addr = addr,
                         .service_name = ECHO_SERVICE,
                         .threads = threads,
                         .max_message_bytes = MAX_MSG,
                         .max_inflight = max_inflight,
                         .state = st,
                         .on_call_done = count_done};
    err_info e;
    rpc_server *s = rpc_server_new(&o, echo_methods, echo_nmethods, &e);
    if (!s) {
        fprintf(stderr, "rpc_server_new: %s\n", e.msg);
        return NULL;
    }
    if (self) {
        char t[64];
        snprintf(t, sizeof t, "127.0.0.1:%d", rpc_server_port(s));
        rpc_client_opts co = {.target = t, .name = "self", .default_timeout_ms = 30000};
        *self = rpc_client_new(&co, &e);
        st->self = *self;
    }
    if (rpc_server_start(s, &e) != ERR_OK) {
        fprintf(stderr, "rpc_server_start: %s\n", e.msg);
        rpc_server_free(s);
        return NULL;
    }
    return s;
}

static err_code echo_call(rpc_client *c, const Test__V1__EchoRequest *req, const rpc_call_opts *o,
                          arena *a, Test__V1__EchoResponse **resp, err_info *e)
{
    ProtobufCMessage *m = NULL;
    err_code rc = rpc_client_call(c, ECHO_METHOD, &req->base, &test__v1__echo_response__descriptor,
                                  o, a, &m, e);
    *resp = (Test__V1__EchoResponse *)m;
    return rc;
}

static err_code health(rpc_client *c, const char *service, int *status, err_info *e)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    arena *a = arena_new(0);
    ProtobufCMessage *m = NULL;
    rpc_call_opts o = {.deadline_ms = rpc_now_ms() + 2000};
    err_code rc =
        rpc_client_call(c, "/grpc.health.v1.Health/Check", &req.base,
                        &grpc__health__v1__health_check_response__descriptor, &o, a, &m, e);
    if (rc == ERR_OK)
        *status = ((Grpc__Health__V1__HealthCheckResponse *)m)->status;
    arena_free(a);
    return rc;
}

static void test_echo_round_trip(void)
{
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = "hello, world";
    uint8_t bytes[300];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)i;
    req.payload.data = bytes;
    req.payload.len = sizeof bytes;
    Test__V1__EchoResponse *r = NULL;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(r->text, "hello, world");
    CU_ASSERT_EQUAL(r->payload.len, sizeof bytes);
    CU_ASSERT(r->payload.len == sizeof bytes && memcmp(r->payload.data, bytes, sizeof bytes) == 0);
    /* No id sent: the server made a UUIDv4; no traceparent: it made one with its own span. */
    CU_ASSERT_EQUAL(strlen(r->request_id), 36);
    CU_ASSERT_EQUAL(r->request_id[14], '4');
    CU_ASSERT_EQUAL(strlen(r->trace_id), 32);
    CU_ASSERT_EQUAL(strlen(r->span_id), 16);
    CU_ASSERT_EQUAL(strlen(r->traceparent), 55);
    CU_ASSERT(strstr(r->traceparent, r->trace_id) != NULL);
    CU_ASSERT_STRING_EQUAL(r->authorization, "");
    CU_ASSERT_STRING_EQUAL(r->actor_id, "");
    /* The client's default 5 s deadline arrived as the call's deadline. */
    CU_ASSERT(r->deadline_left_ms > 3000 && r->deadline_left_ms <= 5100);
    CU_ASSERT(strstr(r->user_agent, "grpc-c") != NULL);
    arena_free(a);
}

static void test_metadata_round_trip(void)
{
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = "md";
    const char *trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    rpc_metadata md = {.request_id = "req-42.a:b_c",
                       .traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                       .authorization = "Bearer abc.def.ghi",
                       .user_agent = "curl/8.0",
                       .client_ip = "203.0.113.9",
                       .actor_id = "user-7"};
    rpc_call_opts o = {.md = &md};
    Test__V1__EchoResponse *r = NULL;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(echo_call(cli, &req, &o, a, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(r->request_id, "req-42.a:b_c");
    CU_ASSERT_STRING_EQUAL(r->trace_id, trace);
    CU_ASSERT_STRING_EQUAL(r->traceparent, md.traceparent);
    CU_ASSERT_STRING_NOT_EQUAL(r->span_id, "00f067aa0ba902b7"); /* a new span for this hop */
    CU_ASSERT_STRING_EQUAL(r->authorization, "Bearer abc.def.ghi");
    CU_ASSERT_STRING_EQUAL(r->user_agent, "curl/8.0");
    CU_ASSERT_STRING_EQUAL(r->client_ip, "203.0.113.9");
    CU_ASSERT_STRING_EQUAL(r->actor_id, "user-7");

    /* Unsafe request id and broken traceparent: replaced, not passed on. */
    rpc_metadata bad = {.request_id = "evil id\"{}", .traceparent = "00-XYZ-1-01"};
    o.md = &bad;
    CU_ASSERT_EQUAL_FATAL(echo_call(cli, &req, &o, a, &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(strlen(r->request_id), 36);
    CU_ASSERT_STRING_NOT_EQUAL(r->request_id, "evil id\"{}");
    CU_ASSERT_EQUAL(strlen(r->trace_id), 32);
    CU_ASSERT_STRING_NOT_EQUAL(r->traceparent, "00-XYZ-1-01");
    char long_id[200];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    bad.request_id = long_id; /* 199 chars > 128 */
    bad.traceparent = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"; /* zero trace */
    CU_ASSERT_EQUAL_FATAL(echo_call(cli, &req, &o, a, &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(strlen(r->request_id), 36);
    CU_ASSERT_STRING_NOT_EQUAL(r->trace_id, "00000000000000000000000000000000");
    arena_free(a);
}

static void test_deadline(void)
{
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.sleep_ms = 1000;
    Test__V1__EchoResponse *r = NULL;
    err_info e;
    int64_t t0 = rpc_now_ms();
    rpc_call_opts o = {.deadline_ms = t0 + 1};
    CU_ASSERT_EQUAL(echo_call(cli, &req, &o, a, &r, &e), ERR_DEADLINE_EXCEEDED);
    CU_ASSERT(rpc_now_ms() - t0 < 300);
    CU_ASSERT_EQUAL(e.code, ERR_DEADLINE_EXCEEDED);
    /* 150 ms against a 1 s sleep */
    t0 = rpc_now_ms();
    o.deadline_ms = t0 + 150;
    CU_ASSERT_EQUAL(echo_call(cli, &req, &o, a, &r, &e), ERR_DEADLINE_EXCEEDED);
    int64_t took = rpc_now_ms() - t0;
    CU_ASSERT(took >= 140 && took < 600);
    arena_free(a);
}

static void test_unknown_method(void)
{
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    err_info e;
    int64_t t0 = rpc_now_ms();
    rpc_call_opts o = {.deadline_ms = t0 + 5000};
    CU_ASSERT_EQUAL(rpc_client_call(cli, "/test.v1.EchoService/Nope", &req.base,
                                    &test__v1__echo_response__descriptor, &o, a, &m, &e),
                    ERR_UNIMPLEMENTED);
    CU_ASSERT(rpc_now_ms() - t0 < 1000);
    CU_ASSERT(strstr(e.msg, "/test.v1.EchoService/Nope") != NULL);
    CU_ASSERT_EQUAL(rpc_client_call(cli, "/no.Such/Service", &req.base,
                                    &test__v1__echo_response__descriptor, &o, a, &m, &e),
                    ERR_UNIMPLEMENTED);
    arena_free(a);
}

static void test_garbage_request(void)
{
    arena *a = arena_new(0);
    Test__V1__NotEcho bad = TEST__V1__NOT_ECHO__INIT;
    bad.text = 0x4141414141414141ull;
    ProtobufCMessage *m = NULL;
    err_info e;
    CU_ASSERT_EQUAL(rpc_client_call(cli, ECHO_METHOD, &bad.base,
                                    &test__v1__echo_response__descriptor, NULL, a, &m, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT(strstr(e.msg, "malformed") != NULL);
    arena_free(a);
}

static void test_oversized(void)
{
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    size_t n = MAX_MSG + 1000;
    uint8_t *big = calloc(1, n);
    req.payload.data = big;
    req.payload.len = n;
    Test__V1__EchoResponse *r = NULL;
    err_info e;
    CU_ASSERT_EQUAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_RESOURCE_EXHAUSTED);
    /* Just under the cap still works. */
    req.payload.len = MAX_MSG / 2;
    CU_ASSERT_EQUAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_OK);
    free(big);
    arena_free(a);
}

static void test_status_details(void)
{
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    char *viol[] = {"email:must be an email address", "name:is required"};
    req.fail_code = ERR_INVALID_ARGUMENT;
    req.fail_message = "the request is not valid";
    req.violations = viol;
    req.n_violations = 2;
    req.retry_after_s = 7;
    Test__V1__EchoResponse *r = NULL;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    CU_ASSERT_STRING_EQUAL(e.msg, "the request is not valid");
    CU_ASSERT_EQUAL_FATAL(e.nviolations, 2);
    CU_ASSERT_STRING_EQUAL(e.violations[0].field, "email");
    CU_ASSERT_STRING_EQUAL(e.violations[0].description, "must be an email address");
    CU_ASSERT_STRING_EQUAL(e.violations[1].field, "name");
    CU_ASSERT_STRING_EQUAL(e.violations[1].description, "is required");
    CU_ASSERT_EQUAL(e.retry_after_s, 7);

    /* RetryInfo alone on RESOURCE_EXHAUSTED; an empty message becomes the code's name. */
    req.fail_code = ERR_RESOURCE_EXHAUSTED;
    req.fail_message = "";
    req.n_violations = 0;
    req.retry_after_s = 3;
    CU_ASSERT_EQUAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_RESOURCE_EXHAUSTED);
    CU_ASSERT_EQUAL(e.retry_after_s, 3);
    CU_ASSERT_EQUAL(e.nviolations, 0);
    CU_ASSERT_STRING_EQUAL(e.msg, "RESOURCE_EXHAUSTED");

    /* No details: none come back. */
    req.fail_code = ERR_NOT_FOUND;
    req.fail_message = "no such thing";
    req.retry_after_s = 0;
    CU_ASSERT_EQUAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(e.retry_after_s, 0);
    CU_ASSERT_STRING_EQUAL(e.msg, "no such thing");
    arena_free(a);
}

static void test_bad_handlers(void)
{
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    Test__V1__EchoResponse *r = NULL;
    err_info e;
    req.fail_code = 99; /* outside the map */
    CU_ASSERT_EQUAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_UNKNOWN);
    req.fail_code = -1; /* OK without a response */
    CU_ASSERT_EQUAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_INTERNAL);
    req.fail_code = -2; /* wrong message type */
    CU_ASSERT_EQUAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_INTERNAL);
    CU_ASSERT(strstr(e.msg, "test.v1.EchoResponse") != NULL);
    /* Still serving. */
    req.fail_code = 0;
    req.text = "alive";
    CU_ASSERT_EQUAL_FATAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(r->text, "alive");
    arena_free(a);
}

static void test_propagation(void)
{
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = "outer";
    req.nested = true;
    rpc_metadata md = {.request_id = "prop-1",
                       .traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                       .authorization = "Bearer tok",
                       .actor_id = "admin-1"};
    rpc_call_opts o = {.md = &md, .deadline_ms = rpc_now_ms() + 2000};
    Test__V1__EchoResponse *r = NULL;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(echo_call(cli, &req, &o, a, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(r->nested_error, "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->nested);
    /* The self client's default is 30 s: a nested deadline under 2 s came from the parent. */
    /* (grpc-timeout is sent rounded up, hence the slack above 2000) */
    CU_ASSERT(r->nested->deadline_left_ms > 1000 && r->nested->deadline_left_ms <= 2100);
    CU_ASSERT_STRING_EQUAL(r->nested->request_id, "prop-1");
    CU_ASSERT_STRING_EQUAL(r->nested->trace_id, "0af7651916cd43dd8448eb211c80319c");
    /* The nested hop's parent span is the outer hop's span. */
    char want[64];
    snprintf(want, sizeof want, "00-0af7651916cd43dd8448eb211c80319c-%s-01", r->span_id);
    CU_ASSERT_STRING_EQUAL(r->nested->traceparent, want);
    CU_ASSERT_STRING_NOT_EQUAL(r->nested->span_id, r->span_id);
    CU_ASSERT_STRING_EQUAL(r->nested->authorization, "Bearer tok");
    CU_ASSERT_STRING_EQUAL(r->nested->actor_id, "admin-1");

    /* The parent's deadline bounds the nested call: 300 ms outer, nested sleeps 2 s. */
    req.nested_sleep_ms = 2000;
    int64_t t0 = rpc_now_ms();
    o.deadline_ms = t0 + 300;
    err_code rc = echo_call(cli, &req, &o, a, &r, &e);
    CU_ASSERT_EQUAL(rc, ERR_DEADLINE_EXCEEDED);
    CU_ASSERT(rpc_now_ms() - t0 < 1000);
    /* And the server's handler got its nested answer (DEADLINE_EXCEEDED) near 300 ms, not 2 s:
     * a call right after is served at once by a free worker. */
    req.nested = false;
    req.nested_sleep_ms = 0;
    usleep(400 * 1000);
    t0 = rpc_now_ms();
    o.deadline_ms = t0 + 2000;
    CU_ASSERT_EQUAL(echo_call(cli, &req, &o, a, &r, &e), ERR_OK);
    CU_ASSERT(rpc_now_ms() - t0 < 500);
    arena_free(a);
}

static void test_health(void)
{
    int st = -1;
    err_info e;
    CU_ASSERT_EQUAL(health(cli, "", &st, &e), ERR_OK);
    CU_ASSERT_EQUAL(st, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    CU_ASSERT_EQUAL(health(cli, ECHO_SERVICE, &st, &e), ERR_OK);
    CU_ASSERT_EQUAL(st, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    CU_ASSERT_EQUAL(health(cli, "other.v1.Other", &st, &e), ERR_NOT_FOUND);
    rpc_server_set_serving(srv, false);
    CU_ASSERT_EQUAL(health(cli, "", &st, &e), ERR_OK);
    CU_ASSERT_EQUAL(st, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    CU_ASSERT_EQUAL(health(cli, ECHO_SERVICE, &st, &e), ERR_OK);
    CU_ASSERT_EQUAL(st, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    rpc_server_set_serving(srv, true);
    CU_ASSERT_EQUAL(health(cli, "", &st, &e), ERR_OK);
    CU_ASSERT_EQUAL(st, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
}

static void test_port_taken(void)
{
    rpc_server_opts o = {.addr = target, .threads = 1};
    err_info e;
    rpc_server *s2 = rpc_server_new(&o, echo_methods, echo_nmethods, &e);
    CU_ASSERT_PTR_NULL(s2);
    CU_ASSERT_EQUAL(e.code, ERR_UNAVAILABLE);
    CU_ASSERT(strstr(e.msg, target) != NULL);
    rpc_server_free(s2);
    /* The first server is unharmed. */
    int st = -1;
    CU_ASSERT_EQUAL(health(cli, "", &st, &e), ERR_OK);
}

static void test_nothing_listens(void)
{
    int port = ts_free_port();
    char t[64];
    snprintf(t, sizeof t, "127.0.0.1:%d", port);
    rpc_client_opts co = {.target = t, .name = "nobody"};
    err_info e;
    rpc_client *c = rpc_client_new(&co, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(rpc_client_name(c), "nobody");
    int st;
    int64_t t0 = rpc_now_ms();
    CU_ASSERT_EQUAL(health(c, "", &st, &e), ERR_UNAVAILABLE);
    CU_ASSERT(rpc_now_ms() - t0 < 1500);
    rpc_client_free(c);
    rpc_client_opts bad = {.target = ""};
    CU_ASSERT_PTR_NULL(rpc_client_new(&bad, &e));
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
}

/* --- concurrency ------------------------------------------------------------------------- */

#define SYNC_THREADS 6
#define SYNC_CALLS 60

static atomic_int sync_bad;

static void *sync_worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    arena *a = arena_new(0);
    for (int i = 0; i < SYNC_CALLS; i++) {
        char text[64];
        snprintf(text, sizeof text, "t%d-c%d", id, i);
        Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
        req.text = text;
        Test__V1__EchoResponse *r = NULL;
        err_info e;
        if (echo_call(cli, &req, NULL, a, &r, &e) != ERR_OK || strcmp(r->text, text) != 0)
            atomic_fetch_add(&sync_bad, 1);
        arena_reset(a);
    }
    arena_free(a);
    return NULL;
}

#define ASYNC_CALLS 400

typedef struct async_slot {
    int index;
    atomic_int *ok, *bad, *finished;
    char text[32];
} async_slot;

static pthread_mutex_t async_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t async_cv = PTHREAD_COND_INITIALIZER;

static void async_done(void *arg, err_code code, ProtobufCMessage *resp, const err_info *e)
{
    async_slot *s = arg;
    const Test__V1__EchoResponse *r = (const Test__V1__EchoResponse *)resp;
    if (code == ERR_OK && r && strcmp(r->text, s->text) == 0)
        atomic_fetch_add(s->ok, 1);
    else
        atomic_fetch_add(s->bad, 1);
    pthread_mutex_lock(&async_mu);
    atomic_fetch_add(s->finished, 1);
    pthread_cond_broadcast(&async_cv);
    pthread_mutex_unlock(&async_mu);
}

static bool wait_finished(atomic_int *finished, int want, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&async_mu);
    while (atomic_load(finished) < want)
        if (pthread_cond_timedwait(&async_cv, &async_mu, &dl) != 0)
            break;
    pthread_mutex_unlock(&async_mu);
    return atomic_load(finished) >= want;
}

static void test_concurrency(void)
{
    /* Several threads of blocking calls, and hundreds of asynchronous calls in flight at once
     * (each handler sleeps 5 ms, so they pile up), all answered with their own text. */
    pthread_t th[SYNC_THREADS];
    atomic_store(&sync_bad, 0);
    for (int i = 0; i < SYNC_THREADS; i++)
        pthread_create(&th[i], NULL, sync_worker, (void *)(intptr_t)i);

    atomic_int ok = 0, bad = 0, finished = 0;
    async_slot *slots = calloc(ASYNC_CALLS, sizeof *slots);
    arena **arenas = calloc(ASYNC_CALLS, sizeof *arenas);
    int started = 0;
    for (int i = 0; i < ASYNC_CALLS; i++) {
        slots[i].index = i;
        slots[i].ok = &ok;
        slots[i].bad = &bad;
        slots[i].finished = &finished;
        snprintf(slots[i].text, sizeof slots[i].text, "async-%d", i);
        arenas[i] = arena_new(0);
        Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
        req.text = slots[i].text;
        req.sleep_ms = 5;
        rpc_call_opts o = {.deadline_ms = rpc_now_ms() + 20000};
        err_info e;
        if (rpc_client_call_async(cli, ECHO_METHOD, &req.base, &test__v1__echo_response__descriptor,
                                  &o, arenas[i], async_done, &slots[i], &e) == ERR_OK)
            started++;
    }
    CU_ASSERT_EQUAL(started, ASYNC_CALLS);
    /* Most are still in flight right after the last one was started. */
    CU_ASSERT(atomic_load(&finished) < ASYNC_CALLS / 2);
    CU_ASSERT(wait_finished(&finished, started, 30000));
    for (int i = 0; i < SYNC_THREADS; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(atomic_load(&ok), ASYNC_CALLS);
    CU_ASSERT_EQUAL(atomic_load(&bad), 0);
    CU_ASSERT_EQUAL(atomic_load(&sync_bad), 0);
    for (int i = 0; i < ASYNC_CALLS; i++)
        arena_free(arenas[i]);
    free(arenas);
    free(slots);
}

typedef struct timed_slot {
    err_code code;
    int retry_after_s;
    int64_t took_ms;
    int64_t t0;
    atomic_int *finished;
    arena *a;
} timed_slot;

static void timed_done(void *arg, err_code code, ProtobufCMessage *resp, const err_info *e)
{
    timed_slot *s = arg;
    s->code = code;
    s->retry_after_s = e->retry_after_s;
    s->took_ms = rpc_now_ms() - s->t0;
    pthread_mutex_lock(&async_mu);
    atomic_fetch_add(s->finished, 1);
    pthread_cond_broadcast(&async_cv);
    pthread_mutex_unlock(&async_mu);
}

/* Starts n async Echo calls that sleep sleep_ms each on c. */
static void start_sleepers(rpc_client *c, timed_slot *slots, int n, int sleep_ms,
                           atomic_int *finished)
{
    for (int i = 0; i < n; i++) {
        slots[i].finished = finished;
        slots[i].a = arena_new(0);
        slots[i].t0 = rpc_now_ms();
        slots[i].code = -1;
        Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
        req.text = "sleeper";
        req.sleep_ms = sleep_ms;
        rpc_call_opts o = {.deadline_ms = rpc_now_ms() + 10000};
        err_info e;
        CU_ASSERT_EQUAL(rpc_client_call_async(c, ECHO_METHOD, &req.base,
                                              &test__v1__echo_response__descriptor, &o, slots[i].a,
                                              timed_done, &slots[i], &e),
                        ERR_OK);
    }
}

static void free_sleepers(timed_slot *slots, int n)
{
    for (int i = 0; i < n; i++)
        arena_free(slots[i].a);
}

static rpc_client *client_for(rpc_server *s)
{
    char t[64];
    snprintf(t, sizeof t, "127.0.0.1:%d", rpc_server_port(s));
    rpc_client_opts co = {.target = t, .name = "t"};
    err_info e;
    return rpc_client_new(&co, &e);
}

static void test_max_inflight(void)
{
    /* 4 workers, 2 calls allowed: of 6 calls that each sleep 400 ms, the extra ones are refused
     * at once with RESOURCE_EXHAUSTED + RetryInfo, and the 2 admitted ones succeed. */
    echo_state st = {0};
    rpc_server *s = start_server("127.0.0.1:0", 4, 2, &st, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    rpc_client *c = client_for(s);
    /* Connect first so the 6 calls arrive together. */
    int hs;
    err_info e;
    CU_ASSERT_EQUAL(health(c, "", &hs, &e), ERR_OK);
    timed_slot slots[6];
    memset(slots, 0, sizeof slots);
    atomic_int finished = 0;
    start_sleepers(c, slots, 6, 400, &finished);
    CU_ASSERT_FATAL(wait_finished(&finished, 6, 10000));
    int ok = 0, refused = 0;
    for (int i = 0; i < 6; i++) {
        if (slots[i].code == ERR_OK) {
            ok++;
            CU_ASSERT(slots[i].took_ms >= 390);
        } else if (slots[i].code == ERR_RESOURCE_EXHAUSTED) {
            refused++;
            CU_ASSERT(slots[i].took_ms < 300);
            CU_ASSERT_EQUAL(slots[i].retry_after_s, 1);
        }
    }
    CU_ASSERT_EQUAL(ok, 2);
    CU_ASSERT_EQUAL(refused, 4);
    free_sleepers(slots, 6);
    rpc_client_free(c);
    rpc_server_free(s);
}

typedef struct probe_arg {
    rpc_client *c;
    int rc, status;
} probe_arg;

static void *probe_health(void *arg)
{
    probe_arg *p = arg;
    err_info e;
    usleep(100 * 1000);
    p->rc = health(p->c, "", &p->status, &e);
    return NULL;
}

static void test_shutdown_in_flight(void)
{
    /* Calls in flight when shutdown starts finish within the grace period, and new calls are
     * refused (not SERVING) meanwhile. */
    echo_state st = {0};
    rpc_server *s = start_server("127.0.0.1:0", 2, 0, &st, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    rpc_client *c = client_for(s);
    rpc_client *c2 = client_for(s);
    int hs;
    err_info e;
    CU_ASSERT_EQUAL(health(c, "", &hs, &e), ERR_OK);
    CU_ASSERT_EQUAL(health(c2, "", &hs, &e), ERR_OK);
    /* One 800 ms call per worker. (Calls beyond the workers may not even have been read off the
     * socket when shutdown starts: the C core does its I/O on the threads that poll the queue, and
     * calls it never handed us are cancelled by the core, not "in flight".) */
    timed_slot slots[2];
    memset(slots, 0, sizeof slots);
    atomic_int finished = 0;
    start_sleepers(c, slots, 2, 800, &finished);
    usleep(100 * 1000);
    int64_t t0 = rpc_now_ms();
    /* Probe Health from another thread while the shutdown waits for the calls. */
    probe_arg pa = {.c = c2, .rc = -1, .status = -1};
    pthread_t th;
    pthread_create(&th, NULL, probe_health, &pa);
    rpc_server_shutdown(s, 5000);
    int64_t took = rpc_now_ms() - t0;
    pthread_join(th, NULL);
    CU_ASSERT(wait_finished(&finished, 2, 5000));
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL(slots[i].code, ERR_OK);
    CU_ASSERT(took >= 500 && took < 4000);
    CU_ASSERT(pa.rc != ERR_OK ||
              pa.status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    free_sleepers(slots, 2);
    rpc_client_free(c);
    rpc_client_free(c2);
    rpc_server_free(s);
}

static void test_shutdown_grace_over(void)
{
    /* Calls that outlive the grace period are cancelled: the clients hear at once (CANCELLED /
     * UNAVAILABLE), the server waits for the handlers to return, and nothing leaks (ASan). */
    echo_state st = {0};
    rpc_server *s = start_server("127.0.0.1:0", 2, 0, &st, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    rpc_client *c = client_for(s);
    int hs;
    err_info e;
    CU_ASSERT_EQUAL(health(c, "", &hs, &e), ERR_OK);
    timed_slot slots[2];
    memset(slots, 0, sizeof slots);
    atomic_int finished = 0;
    start_sleepers(c, slots, 2, 1500, &finished);
    usleep(100 * 1000);
    int64_t t0 = rpc_now_ms();
    rpc_server_shutdown(s, 200);
    int64_t took = rpc_now_ms() - t0;
    CU_ASSERT(wait_finished(&finished, 2, 5000));
    for (int i = 0; i < 2; i++) {
        CU_ASSERT(slots[i].code != ERR_OK);
        CU_ASSERT(slots[i].took_ms < 1200); /* cancelled at ~300 ms, not after the 1.5 s sleep */
    }
    CU_ASSERT(took >= 1000 && took < 3000); /* waited for the handlers */
    rpc_server_shutdown(s, 200);            /* idempotent */
    free_sleepers(slots, 2);
    rpc_client_free(c);
    rpc_server_free(s);
}

/* --- asynchronous handlers (RPC_PENDING, rpc_reply, rpc_continue) -------------------------- */

/* on_call_done as seen by one server: every code, in order. */
typedef struct hook_log {
    pthread_mutex_t mu;
    int n;
    err_code codes[64];
} hook_log;

static void record_done(void *arg, const char *method, err_code code, double seconds)
{
    (void)method;
    (void)seconds;
    hook_log *h = arg;
    pthread_mutex_lock(&h->mu);
    if (h->n < (int)(sizeof h->codes / sizeof h->codes[0]))
        h->codes[h->n] = code;
    h->n++;
    pthread_mutex_unlock(&h->mu);
}

static int hook_count(hook_log *h, err_code *last)
{
    pthread_mutex_lock(&h->mu);
    int n = h->n;
    if (last && n > 0 && n <= (int)(sizeof h->codes / sizeof h->codes[0]))
        *last = h->codes[n - 1];
    pthread_mutex_unlock(&h->mu);
    return n;
}

/* A server of the echo service with a replier (the asynchronous modes), its own hook and a
 * client. */
typedef struct async_srv {
    echo_state st;
    rpc_server *s;
    rpc_client *c;
    hook_log hooks;
} async_srv;

static bool async_srv_start(async_srv *as, int threads)
{
    memset(as, 0, sizeof *as);
    pthread_mutex_init(&as->hooks.mu, NULL);
    as->st.replier = echo_replier_new();
    if (!as->st.replier)
        return false;
    rpc_server_opts o = {.addr = "127.0.0.1:0",
                         .service_name = ECHO_SERVICE,
                         .threads = threads,
                         .max_message_bytes = MAX_MSG,
                         .state = &as->st,
                         .on_call_done = record_done,
                         .on_call_done_arg = &as->hooks};
    err_info e;
    as->s = rpc_server_new(&o, echo_methods, echo_nmethods, &e);
    if (!as->s || rpc_server_start(as->s, &e) != ERR_OK) {
        fprintf(stderr, "async server: %s\n", e.msg);
        rpc_server_free(as->s);
        echo_replier_free(as->st.replier);
        return false;
    }
    as->c = client_for(as->s);
    return as->c != NULL;
}

static void async_srv_stop(async_srv *as)
{
    rpc_client_free(as->c);
    /* The server first: its shutdown waits for pending calls, which the replier answers. */
    rpc_server_free(as->s);
    echo_replier_free(as->st.replier);
    pthread_mutex_destroy(&as->hooks.mu);
}

/* One asynchronous client call and what came back. */
typedef struct async_result {
    char text[64];
    err_code code;
    char msg[ERR_MSG_LEN];
    int64_t t0, took_ms;
    atomic_int *finished;
    arena *a;
} async_result;

static void result_done(void *arg, err_code code, ProtobufCMessage *resp, const err_info *e)
{
    async_result *s = arg;
    const Test__V1__EchoResponse *r = (const Test__V1__EchoResponse *)resp;
    s->code = code;
    snprintf(s->msg, sizeof s->msg, "%s", e ? e->msg : "");
    snprintf(s->text, sizeof s->text, "%s", code == ERR_OK && r && r->text ? r->text : "");
    s->took_ms = rpc_now_ms() - s->t0;
    pthread_mutex_lock(&async_mu);
    atomic_fetch_add(s->finished, 1);
    pthread_cond_broadcast(&async_cv);
    pthread_mutex_unlock(&async_mu);
}

static void start_async_call(rpc_client *c, const char *method, async_result *s, const char *text,
                             int delay_ms, int timeout_ms, atomic_int *finished)
{
    memset(s, 0, sizeof *s);
    s->finished = finished;
    s->a = arena_new(0);
    s->code = (err_code)-1;
    s->t0 = rpc_now_ms();
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = (char *)text;
    req.sleep_ms = delay_ms;
    rpc_call_opts o = {.deadline_ms = rpc_now_ms() + timeout_ms};
    err_info e;
    CU_ASSERT_EQUAL(rpc_client_call_async(c, method, &req.base,
                                          &test__v1__echo_response__descriptor, &o, s->a,
                                          result_done, s, &e),
                    ERR_OK);
}

static void start_async_echo(rpc_client *c, async_result *s, const char *text, int delay_ms,
                             int timeout_ms, atomic_int *finished)
{
    start_async_call(c, ECHO_METHOD, s, text, delay_ms, timeout_ms, finished);
}

/* A blocking call of `text` answered after delay_ms; fail_code as in echo.proto. */
static err_code echo_text(rpc_client *c, const char *text, int delay_ms, int fail_code, arena *a,
                          Test__V1__EchoResponse **r, err_info *e)
{
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = (char *)text;
    req.sleep_ms = delay_ms;
    req.fail_code = fail_code;
    *r = NULL;
    return echo_call(c, &req, NULL, a, r, e);
}

static void test_async_reply(void)
{
    /* One worker thread, so a handler that held it while waiting would stall everything else. */
    async_srv as;
    CU_ASSERT_FATAL(async_srv_start(&as, 1));
    arena *a = arena_new(0);
    err_info e;

    /* Answered 50 ms later by rpc_reply on the replier thread; ctx (metadata, arena) and the
     * request lived until then. */
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = ECHO_ASYNC_REPLY "hello";
    req.sleep_ms = 50;
    rpc_metadata md = {.request_id = "async-req-1", .actor_id = "user-9"};
    rpc_call_opts o = {.md = &md, .deadline_ms = rpc_now_ms() + 5000};
    Test__V1__EchoResponse *r = NULL;
    int64_t t0 = rpc_now_ms();
    CU_ASSERT_EQUAL_FATAL(echo_call(as.c, &req, &o, a, &r, &e), ERR_OK);
    int64_t took = rpc_now_ms() - t0;
    CU_ASSERT_STRING_EQUAL(r->text, ECHO_ASYNC_REPLY "hello");
    CU_ASSERT_STRING_EQUAL(r->request_id, "async-req-1");
    CU_ASSERT_STRING_EQUAL(r->actor_id, "user-9");
    CU_ASSERT(r->deadline_left_ms > 0 && r->deadline_left_ms <= 5100);
    CU_ASSERT(took >= 45);
    echo_async_seen seen;
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT_EQUAL(seen.pending, 1);
    CU_ASSERT_EQUAL(seen.replies, 1);
    CU_ASSERT(!pthread_equal(seen.handler, seen.replier));

    /* 8 calls pending (answered 1 s after their handler ran) on the one worker: a synchronous
     * call meanwhile is served before any of them is answered. */
    enum { NPEND = 8 };
    async_result res[NPEND];
    char texts[NPEND][32];
    atomic_int finished = 0;
    for (int i = 0; i < NPEND; i++) {
        snprintf(texts[i], sizeof texts[i], ECHO_ASYNC_REPLY "p%d", i);
        start_async_echo(as.c, &res[i], texts[i], 1000, 20000, &finished);
    }
    CU_ASSERT_FATAL(echo_replier_wait_pending(as.st.replier, 1 + NPEND, 10000));
    t0 = rpc_now_ms();
    CU_ASSERT_EQUAL(echo_text(as.c, "sync", 0, 0, a, &r, &e), ERR_OK);
    took = rpc_now_ms() - t0;
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT_STRING_EQUAL(r ? r->text : "", "sync");
    CU_ASSERT_EQUAL(seen.replies, 1); /* none of the 8 answered yet */
    CU_ASSERT_EQUAL(atomic_load(&finished), 0);
    CU_ASSERT(took < 900);

    CU_ASSERT(wait_finished(&finished, NPEND, 10000));
    for (int i = 0; i < NPEND; i++) {
        CU_ASSERT_EQUAL(res[i].code, ERR_OK);
        CU_ASSERT_STRING_EQUAL(res[i].text, texts[i]);
        CU_ASSERT(res[i].took_ms >= 990);
        arena_free(res[i].a);
    }
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT_EQUAL(seen.replies, 1 + NPEND);
    arena_free(a);
    async_srv_stop(&as);
}

/* rpc_cancel: the caller's cancel reaches the server's handler (rpc_watch_cancel), a cancelled
 * handle refuses new calls at once, and a watched call that is not cancelled answers as usual. */
static void test_cancel(void)
{
    async_srv as;
    CU_ASSERT_FATAL(async_srv_start(&as, 2));
    int seen0 = echo_cancel_seen();

    /* Watched, not cancelled: the plain answer (the call ends after both its batches). */
    arena *a = arena_new(0);
    err_info e;
    Test__V1__EchoResponse *r = NULL;
    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_WATCH_CANCEL "stay", 20, 0, a, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(r ? r->text : "", ECHO_WATCH_CANCEL "stay");
    CU_ASSERT_EQUAL(echo_cancel_seen(), seen0);

    /* Cancelled 100 ms into a 5 s handler: the caller hears CANCELLED at once, the handler
     * sees it within its 5 ms polling. */
    rpc_cancel tok;
    rpc_cancel_init(&tok);
    async_result res;
    memset(&res, 0, sizeof res);
    atomic_int finished = 0;
    res.finished = &finished;
    res.a = arena_new(0);
    res.code = (err_code)-1;
    res.t0 = rpc_now_ms();
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = ECHO_WATCH_CANCEL "go";
    req.sleep_ms = 5000;
    rpc_call_opts o = {.deadline_ms = rpc_now_ms() + 10000, .cancel = &tok};
    CU_ASSERT_EQUAL_FATAL(rpc_client_call_async(as.c, ECHO_METHOD, &req.base,
                                                &test__v1__echo_response__descriptor, &o, res.a,
                                                result_done, &res, &e),
                          ERR_OK);
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    rpc_cancel_fire(&tok);
    CU_ASSERT(wait_finished(&finished, 1, 3000));
    CU_ASSERT_EQUAL(res.code, ERR_CANCELLED);
    CU_ASSERT(res.took_ms < 2000);
    int64_t until = rpc_now_ms() + 3000;
    while (echo_cancel_seen() == seen0 && rpc_now_ms() < until)
        nanosleep(&ts, NULL);
    CU_ASSERT_EQUAL(echo_cancel_seen(), seen0 + 1);

    /* The handle stays cancelled: the next call is refused before it starts. */
    err_clear(&e);
    CU_ASSERT_EQUAL(rpc_client_call_async(as.c, ECHO_METHOD, &req.base,
                                          &test__v1__echo_response__descriptor, &o, res.a,
                                          result_done, &res, &e),
                    ERR_CANCELLED);
    CU_ASSERT_EQUAL(atomic_load(&finished), 1);
    rpc_cancel_fire(&tok); /* idempotent */
    rpc_cancel_destroy(&tok);
    arena_free(res.a);
    arena_free(a);
    async_srv_stop(&as);
}

static void test_async_reply_error(void)
{
    async_srv as;
    CU_ASSERT_FATAL(async_srv_start(&as, 2));
    arena *a = arena_new(0);
    err_info e;
    Test__V1__EchoResponse *r = NULL;

    /* An error with a field violation, answered by rpc_reply: code, message and details. */
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    char *viol[] = {"email:must be an email address"};
    req.text = ECHO_ASYNC_REPLY "bad";
    req.sleep_ms = 30;
    req.fail_code = ERR_INVALID_ARGUMENT;
    req.fail_message = "checked later";
    req.violations = viol;
    req.n_violations = 1;
    CU_ASSERT_EQUAL_FATAL(echo_call(as.c, &req, NULL, a, &r, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    CU_ASSERT_STRING_EQUAL(e.msg, "checked later");
    CU_ASSERT_EQUAL_FATAL(e.nviolations, 1);
    CU_ASSERT_STRING_EQUAL(e.violations[0].field, "email");
    CU_ASSERT_STRING_EQUAL(e.violations[0].description, "must be an email address");
    CU_ASSERT_EQUAL(e.retry_after_s, 0);

    /* RetryInfo too; and a code outside the map becomes UNKNOWN, as from a synchronous handler. */
    req.fail_code = ERR_RESOURCE_EXHAUSTED;
    req.fail_message = "";
    req.n_violations = 0;
    req.retry_after_s = 2;
    CU_ASSERT_EQUAL(echo_call(as.c, &req, NULL, a, &r, &e), ERR_RESOURCE_EXHAUSTED);
    CU_ASSERT_EQUAL(e.retry_after_s, 2);
    CU_ASSERT_STRING_EQUAL(e.msg, "RESOURCE_EXHAUSTED");
    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_REPLY "99", 0, 99, a, &r, &e), ERR_UNKNOWN);

    echo_async_seen seen;
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT_EQUAL(seen.replies, 3);
    arena_free(a);
    async_srv_stop(&as);
}

static void test_async_continue(void)
{
    /* One worker: a continuation can only run on it (never on the thread calling rpc_continue). */
    async_srv as;
    CU_ASSERT_FATAL(async_srv_start(&as, 1));
    arena *a = arena_new(0);
    err_info e;
    Test__V1__EchoResponse *r = NULL;
    echo_async_seen seen;

    int64_t t0 = rpc_now_ms();
    CU_ASSERT_EQUAL_FATAL(echo_text(as.c, ECHO_ASYNC_CONTINUE "one", 50, 0, a, &r, &e), ERR_OK);
    CU_ASSERT(rpc_now_ms() - t0 >= 45);
    CU_ASSERT_STRING_EQUAL(r->text, ECHO_ASYNC_CONTINUE "one");
    CU_ASSERT_EQUAL(strlen(r->request_id), 36);
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT_EQUAL(seen.continues, 1);
    CU_ASSERT_EQUAL(seen.continuations, 1);
    CU_ASSERT_EQUAL(seen.replies, 0);
    CU_ASSERT(!seen.cont_on_replier);
    CU_ASSERT(!pthread_equal(seen.continuation, seen.replier));
    CU_ASSERT(pthread_equal(seen.continuation, seen.handler)); /* the sole worker */

    /* The continuation returns RPC_PENDING again; the replier answers 30 ms later. */
    t0 = rpc_now_ms();
    CU_ASSERT_EQUAL_FATAL(echo_text(as.c, ECHO_ASYNC_CONTINUE_PENDING "two", 30, 0, a, &r, &e),
                          ERR_OK);
    CU_ASSERT(rpc_now_ms() - t0 >= 55);
    CU_ASSERT_STRING_EQUAL(r->text, ECHO_ASYNC_CONTINUE_PENDING "two");
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT_EQUAL(seen.continues, 2);
    CU_ASSERT_EQUAL(seen.continuations, 2);
    CU_ASSERT_EQUAL(seen.pending, 3); /* two handlers, one continuation */
    CU_ASSERT_EQUAL(seen.replies, 1);
    CU_ASSERT(!seen.cont_on_replier);
    CU_ASSERT(pthread_equal(seen.continuation, seen.handler));

    /* A continuation's error reaches the client like a handler's. */
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = ECHO_ASYNC_CONTINUE "missing";
    req.fail_code = ERR_NOT_FOUND;
    req.fail_message = "no such echo";
    CU_ASSERT_EQUAL(echo_call(as.c, &req, NULL, a, &r, &e), ERR_NOT_FOUND);
    CU_ASSERT_STRING_EQUAL(e.msg, "no such echo");

    /* Continuations of several pending calls in a row, with synchronous calls between. */
    enum { NCONT = 6 };
    async_result res[NCONT];
    char texts[NCONT][40];
    atomic_int finished = 0;
    for (int i = 0; i < NCONT; i++) {
        snprintf(texts[i], sizeof texts[i], "%s%d",
                 i % 2 ? ECHO_ASYNC_CONTINUE_PENDING : ECHO_ASYNC_CONTINUE, i);
        start_async_echo(as.c, &res[i], texts[i], 20 + 10 * i, 20000, &finished);
    }
    CU_ASSERT_EQUAL(echo_text(as.c, "between", 0, 0, a, &r, &e), ERR_OK);
    CU_ASSERT(wait_finished(&finished, NCONT, 10000));
    for (int i = 0; i < NCONT; i++) {
        CU_ASSERT_EQUAL(res[i].code, ERR_OK);
        CU_ASSERT_STRING_EQUAL(res[i].text, texts[i]);
        arena_free(res[i].a);
    }
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT_EQUAL(seen.continuations, 3 + NCONT);
    CU_ASSERT(!seen.cont_on_replier);
    arena_free(a);
    async_srv_stop(&as);
}

static void test_nonblocking_method(void)
{
    /* One worker. A blocking handler runs on it; a method registered nonblocking runs on the
     * polling thread, so it is answered while the worker is still busy. */
    async_srv as;
    CU_ASSERT_FATAL(async_srv_start(&as, 1));
    arena *a = arena_new(0);
    err_info e;
    echo_async_seen seen;

    /* Where each kind of handler runs: the async-reply mode records the handler's thread. */
    atomic_int finished = 0;
    async_result r1, r2;
    start_async_call(as.c, ECHO_METHOD, &r1, ECHO_ASYNC_REPLY "blocking", 0, 10000, &finished);
    CU_ASSERT_FATAL(wait_finished(&finished, 1, 10000));
    echo_replier_seen(as.st.replier, &seen);
    pthread_t worker_thread = seen.handler;
    start_async_call(as.c, ECHO_INLINE_METHOD, &r2, ECHO_ASYNC_REPLY "inline", 0, 10000, &finished);
    CU_ASSERT_FATAL(wait_finished(&finished, 2, 10000));
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT(!pthread_equal(seen.handler, worker_thread));
    CU_ASSERT_EQUAL(r1.code, ERR_OK);
    CU_ASSERT_EQUAL(r2.code, ERR_OK);
    CU_ASSERT_STRING_EQUAL(r2.text, ECHO_ASYNC_REPLY "inline");

    /* The worker sleeps 1.5 s in a blocking echo; the nonblocking call is answered first. */
    atomic_int slow_done = 0, fast_done = 0;
    async_result slow, fast;
    start_async_call(as.c, ECHO_METHOD, &slow, "slow", 1500, 10000, &slow_done);
    start_async_call(as.c, ECHO_INLINE_METHOD, &fast, ECHO_ASYNC_REPLY "fast", 0, 10000,
                     &fast_done);
    CU_ASSERT_FATAL(wait_finished(&fast_done, 1, 10000));
    CU_ASSERT_EQUAL(atomic_load(&slow_done), 0);
    CU_ASSERT_EQUAL(fast.code, ERR_OK);
    CU_ASSERT(wait_finished(&slow_done, 1, 10000));
    CU_ASSERT_EQUAL(slow.code, ERR_OK);
    CU_ASSERT_STRING_EQUAL(slow.text, "slow");

    /* rpc_continue from a nonblocking handler still runs the continuation on the worker. */
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = ECHO_ASYNC_CONTINUE "via-inline";
    ProtobufCMessage *m = NULL;
    rpc_call_opts o = {.deadline_ms = rpc_now_ms() + 10000};
    CU_ASSERT_EQUAL(rpc_client_call(as.c, ECHO_INLINE_METHOD, &req.base,
                                    &test__v1__echo_response__descriptor, &o, a, &m, &e),
                    ERR_OK);
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT(pthread_equal(seen.continuation, worker_thread));

    arena_free(r1.a);
    arena_free(r2.a);
    arena_free(slow.a);
    arena_free(fast.a);
    arena_free(a);
    async_srv_stop(&as);
}

static void test_async_misuse(void)
{
    /* Bad answers through rpc_reply (and from a continuation) are checked like a synchronous
     * handler's: INTERNAL, and the server keeps serving. */
    async_srv as;
    CU_ASSERT_FATAL(async_srv_start(&as, 2));
    arena *a = arena_new(0);
    err_info e;
    Test__V1__EchoResponse *r = NULL;

    /* rpc_reply(ctx, ERR_OK, NULL, NULL) */
    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_REPLY "null", 10, -1, a, &r, &e), ERR_INTERNAL);
    CU_ASSERT(strstr(e.msg, "no response") != NULL);
    /* rpc_reply(ctx, ERR_OK, <a NotEcho>, NULL) */
    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_REPLY "wrong", 10, -2, a, &r, &e), ERR_INTERNAL);
    CU_ASSERT(strstr(e.msg, "test.v1.EchoResponse") != NULL);
    /* rpc_reply(ctx, RPC_PENDING, ...) */
    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_REPLY "pending", 10, (int)RPC_PENDING, a, &r, &e),
                    ERR_INTERNAL);
    CU_ASSERT(strstr(e.msg, "RPC_PENDING") != NULL);
    /* A continuation returning OK without a response, or the wrong type. */
    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_CONTINUE "null", 10, -1, a, &r, &e), ERR_INTERNAL);
    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_CONTINUE "wrong", 10, -2, a, &r, &e), ERR_INTERNAL);
    CU_ASSERT(strstr(e.msg, "test.v1.EchoResponse") != NULL);
    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_CONTINUE_PENDING "wrong", 10, -2, a, &r, &e),
                    ERR_INTERNAL);

    /* Still serving, both ways. */
    CU_ASSERT_EQUAL_FATAL(echo_text(as.c, "alive", 0, 0, a, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(r->text, "alive");
    CU_ASSERT_EQUAL_FATAL(echo_text(as.c, ECHO_ASYNC_REPLY "alive", 10, 0, a, &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(r->text, ECHO_ASYNC_REPLY "alive");
    /* Every bad answer was reported once, as INTERNAL. */
    usleep(100 * 1000);
    pthread_mutex_lock(&as.hooks.mu);
    CU_ASSERT_EQUAL(as.hooks.n, 8);
    int internal = 0;
    for (int i = 0; i < as.hooks.n && i < 64; i++)
        internal += as.hooks.codes[i] == ERR_INTERNAL;
    pthread_mutex_unlock(&as.hooks.mu);
    CU_ASSERT_EQUAL(internal, 6);
    arena_free(a);
    async_srv_stop(&as);
}

static void test_async_shutdown(void)
{
    /* Pending calls answered within the grace period: shutdown returns after their answers
     * (a continuation posted during the shutdown still runs), the clients get them. */
    async_srv as;
    CU_ASSERT_FATAL(async_srv_start(&as, 2));
    arena *a = arena_new(0);
    err_info e;
    Test__V1__EchoResponse *r = NULL;
    CU_ASSERT_EQUAL(echo_text(as.c, "connect", 0, 0, a, &r, &e), ERR_OK);
    async_result res[2];
    atomic_int finished = 0;
    start_async_echo(as.c, &res[0], ECHO_ASYNC_REPLY "late", 300, 10000, &finished);
    start_async_echo(as.c, &res[1], ECHO_ASYNC_CONTINUE_PENDING "late", 150, 10000, &finished);
    CU_ASSERT_FATAL(echo_replier_wait_pending(as.st.replier, 2, 5000));
    int64_t t0 = rpc_now_ms();
    rpc_server_shutdown(as.s, 2000);
    int64_t took = rpc_now_ms() - t0;
    /* Returned once both were answered (and their hooks ran), well before the grace ended. */
    echo_async_seen seen;
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT_EQUAL(seen.replies, 2);
    CU_ASSERT_EQUAL(seen.continuations, 1);
    CU_ASSERT_EQUAL(hook_count(&as.hooks, NULL), 3);
    CU_ASSERT(took >= 100 && took < 1900);
    CU_ASSERT(wait_finished(&finished, 2, 5000));
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(res[i].code, ERR_OK);
        CU_ASSERT(res[i].took_ms >= 250);
        arena_free(res[i].a);
    }
    CU_ASSERT_STRING_EQUAL(res[0].text, ECHO_ASYNC_REPLY "late");
    CU_ASSERT_STRING_EQUAL(res[1].text, ECHO_ASYNC_CONTINUE_PENDING "late");
    async_srv_stop(&as);

    /* Pending past the grace period: cancelled (the clients hear at once), but the shutdown
     * waits for the answers, which still come (rpc_reply, and rpc_continue with its
     * continuation) on the cancelled calls; nothing leaks (ASan). */
    CU_ASSERT_FATAL(async_srv_start(&as, 2));
    CU_ASSERT_EQUAL(echo_text(as.c, "connect", 0, 0, a, &r, &e), ERR_OK);
    finished = 0;
    start_async_echo(as.c, &res[0], ECHO_ASYNC_REPLY "too-late", 800, 10000, &finished);
    start_async_echo(as.c, &res[1], ECHO_ASYNC_CONTINUE "too-late", 800, 10000, &finished);
    CU_ASSERT_FATAL(echo_replier_wait_pending(as.st.replier, 2, 5000));
    t0 = rpc_now_ms();
    rpc_server_shutdown(as.s, 100);
    took = rpc_now_ms() - t0;
    CU_ASSERT(took >= 600 && took < 3000); /* waited for the answers */
    CU_ASSERT(wait_finished(&finished, 2, 5000));
    for (int i = 0; i < 2; i++) {
        CU_ASSERT(res[i].code != ERR_OK);
        CU_ASSERT(res[i].took_ms < 700); /* cancelled near 100 ms, not answered at 800 */
        arena_free(res[i].a);
    }
    echo_replier_seen(as.st.replier, &seen);
    CU_ASSERT_EQUAL(seen.replies, 1);
    CU_ASSERT_EQUAL(seen.continues, 1);
    CU_ASSERT_EQUAL(seen.continuations, 1);
    pthread_mutex_lock(&as.hooks.mu);
    CU_ASSERT_EQUAL(as.hooks.n, 3);
    if (as.hooks.n == 3) {
        CU_ASSERT_EQUAL(as.hooks.codes[1], ERR_CANCELLED);
        CU_ASSERT_EQUAL(as.hooks.codes[2], ERR_CANCELLED);
    }
    pthread_mutex_unlock(&as.hooks.mu);
    async_srv_stop(&as);
    arena_free(a);
}

/* Waits up to 2 s for the hook's count to reach n, then a little longer for any extra. */
static int wait_hooks(hook_log *h, int n, err_code *last)
{
    int64_t until = rpc_now_ms() + 2000;
    while (hook_count(h, NULL) < n && rpc_now_ms() < until)
        usleep(5 * 1000);
    usleep(30 * 1000);
    return hook_count(h, last);
}

static void test_async_on_call_done(void)
{
    /* on_call_done fires once per asynchronous call, when its answer has gone, with its code. */
    async_srv as;
    CU_ASSERT_FATAL(async_srv_start(&as, 2));
    arena *a = arena_new(0);
    err_info e;
    Test__V1__EchoResponse *r = NULL;
    err_code last = (err_code)-1;

    /* Not while pending. */
    async_result res;
    atomic_int finished = 0;
    start_async_echo(as.c, &res, ECHO_ASYNC_REPLY "slow", 400, 10000, &finished);
    CU_ASSERT_FATAL(echo_replier_wait_pending(as.st.replier, 1, 5000));
    usleep(100 * 1000);
    CU_ASSERT_EQUAL(hook_count(&as.hooks, NULL), 0);
    CU_ASSERT(wait_finished(&finished, 1, 5000));
    CU_ASSERT_EQUAL(res.code, ERR_OK);
    arena_free(res.a);
    CU_ASSERT_EQUAL(wait_hooks(&as.hooks, 1, &last), 1);
    CU_ASSERT_EQUAL(last, ERR_OK);

    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_REPLY "e", 10, ERR_PERMISSION_DENIED, a, &r, &e),
                    ERR_PERMISSION_DENIED);
    CU_ASSERT_EQUAL(wait_hooks(&as.hooks, 2, &last), 2);
    CU_ASSERT_EQUAL(last, ERR_PERMISSION_DENIED);

    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_CONTINUE "ok", 10, 0, a, &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(wait_hooks(&as.hooks, 3, &last), 3);
    CU_ASSERT_EQUAL(last, ERR_OK);

    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_CONTINUE_PENDING "ok", 10, 0, a, &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(wait_hooks(&as.hooks, 4, &last), 4);
    CU_ASSERT_EQUAL(last, ERR_OK);

    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_CONTINUE "nf", 10, ERR_NOT_FOUND, a, &r, &e),
                    ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(wait_hooks(&as.hooks, 5, &last), 5);
    CU_ASSERT_EQUAL(last, ERR_NOT_FOUND);

    CU_ASSERT_EQUAL(echo_text(as.c, ECHO_ASYNC_REPLY "null", 10, -1, a, &r, &e), ERR_INTERNAL);
    CU_ASSERT_EQUAL(wait_hooks(&as.hooks, 6, &last), 6);
    CU_ASSERT_EQUAL(last, ERR_INTERNAL);

    /* The client gives up (deadline) while the call is pending: the hook fires once the answer
     * came (on the dead call), with the code the client saw. */
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = ECHO_ASYNC_REPLY "expired";
    req.sleep_ms = 400;
    int64_t t0 = rpc_now_ms();
    rpc_call_opts o = {.deadline_ms = t0 + 100};
    CU_ASSERT_EQUAL(echo_call(as.c, &req, &o, a, &r, &e), ERR_DEADLINE_EXCEEDED);
    CU_ASSERT(rpc_now_ms() - t0 < 350);
    CU_ASSERT_EQUAL(hook_count(&as.hooks, NULL), 6);
    CU_ASSERT_EQUAL(wait_hooks(&as.hooks, 7, &last), 7);
    CU_ASSERT_EQUAL(last, ERR_DEADLINE_EXCEEDED);

    usleep(100 * 1000);
    CU_ASSERT_EQUAL(hook_count(&as.hooks, NULL), 7);
    arena_free(a);
    async_srv_stop(&as);
}

static void test_on_call_done_hook(void)
{
    int before = atomic_load(&done_calls);
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    Test__V1__EchoResponse *r;
    err_info e;
    CU_ASSERT_EQUAL(echo_call(cli, &req, NULL, a, &r, &e), ERR_OK);
    usleep(50 * 1000); /* the hook runs after the answer left */
    CU_ASSERT(atomic_load(&done_calls) > before);
    arena_free(a);
}

int main(void)
{
    log_init("test_rpc", LOG_WARN);
    rpc_client *self = NULL;
    int port = ts_free_port();
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    srv = start_server(target, 2, 0, &state, &self);
    if (!srv)
        return 1;
    rpc_client_opts co = {.target = target, .name = "echo"};
    err_info e;
    cli = rpc_client_new(&co, &e);
    static const ts_case cases[] = {
        {"echo_round_trip", test_echo_round_trip},
        {"metadata_round_trip", test_metadata_round_trip},
        {"deadline", test_deadline},
        {"unknown_method", test_unknown_method},
        {"garbage_request", test_garbage_request},
        {"oversized", test_oversized},
        {"status_details", test_status_details},
        {"bad_handlers", test_bad_handlers},
        {"propagation", test_propagation},
        {"health", test_health},
        {"port_taken", test_port_taken},
        {"nothing_listens", test_nothing_listens},
        {"concurrency", test_concurrency},
        {"max_inflight", test_max_inflight},
        {"shutdown_in_flight", test_shutdown_in_flight},
        {"shutdown_grace_over", test_shutdown_grace_over},
        {"on_call_done_hook", test_on_call_done_hook},
        {"async_reply", test_async_reply},
        {"cancel", test_cancel},
        {"async_reply_error", test_async_reply_error},
        {"async_continue", test_async_continue},
        {"nonblocking_method", test_nonblocking_method},
        {"async_misuse", test_async_misuse},
        {"async_shutdown", test_async_shutdown},
        {"async_on_call_done", test_async_on_call_done},
        {NULL, NULL},
    };
    int rc = ts_main("rpc", cases);
    rpc_client_free(cli);
    rpc_server_shutdown(srv, 1000);
    rpc_server_free(srv);
    rpc_client_free(self);
    return rc;
}
