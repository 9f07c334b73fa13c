/* test_resilience: rpc_client's breaker, deadline margin and retries against a real server on
 * loopback: an in-process rpc_server whose handlers the test steers (fail, sleep, count), and the
 * rpc_test_server binary for a server killed with SIGKILL and restarted. Asserts numbers: calls
 * the server saw, retries, time to fail, metric values, log lines. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "test/v1/echo.pb-c.h"
#include "test_support.h"

#define SVC "test.v1.EchoService"
#define M_GET "/test.v1.EchoService/GetThing" /* an idempotent read: retried */
#define M_WRITE "/test.v1.EchoService/Echo"   /* not a read: never retried */
#define M_NEST                                                                                     \
    "/test.v1.EchoService/GetNested" /* calls M_GET through `inner` with ctx as parent             \
                                      */

static rpc_server *srv;
static char target[64];
static atomic_int calls_get, calls_write, fail_next;
static rpc_client *inner; /* the client the M_NEST handler uses */

/* ---------- the steerable service ---------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static err_code handle(rpc_ctx *ctx, const ProtobufCMessage *reqm, ProtobufCMessage **respm,
                       err_info *e)
{
    const Test__V1__EchoRequest *req = (const Test__V1__EchoRequest *)reqm;
    if (strcmp(ctx->method, M_GET) == 0)
        atomic_fetch_add(&calls_get, 1);
    else
        atomic_fetch_add(&calls_write, 1);
    /* fail_next > 0: this call fails UNAVAILABLE (an overloaded or restarting replica). */
    int n = atomic_load(&fail_next);
    while (n > 0 && !atomic_compare_exchange_weak(&fail_next, &n, n - 1))
        ;
    if (n > 0)
        return err_set(e, ERR_UNAVAILABLE, "injected failure");
    if (req->sleep_ms > 0)
        sleep_ms(req->sleep_ms);
    if (req->fail_code)
        return err_set(e, (err_code)req->fail_code, "%s",
                       req->fail_message && *req->fail_message ? req->fail_message
                                                               : "asked to fail");
    Test__V1__EchoResponse *r = arena_alloc(ctx->arena, sizeof *r);
    test__v1__echo_response__init(r);
    r->text = req->text;
    r->deadline_left_ms = ctx->deadline_ms == INT64_MAX ? -1 : ctx->deadline_ms - rpc_now_ms();
    *respm = &r->base;
    return ERR_OK;
}

static err_code handle_nested(rpc_ctx *ctx, const ProtobufCMessage *reqm, ProtobufCMessage **respm,
                              err_info *e)
{
    (void)reqm;
    (void)e;
    Test__V1__EchoResponse *r = arena_alloc(ctx->arena, sizeof *r);
    test__v1__echo_response__init(r);
    r->deadline_left_ms = ctx->deadline_ms == INT64_MAX ? -1 : ctx->deadline_ms - rpc_now_ms();
    Test__V1__EchoRequest nreq = TEST__V1__ECHO_REQUEST__INIT;
    nreq.text = "nested";
    rpc_call_opts o = {.parent = ctx};
    ProtobufCMessage *nresp = NULL;
    err_info ne;
    err_code rc = rpc_client_call(inner, M_GET, &nreq.base, &test__v1__echo_response__descriptor,
                                  &o, ctx->arena, &nresp, &ne);
    if (rc == ERR_OK)
        r->nested = (Test__V1__EchoResponse *)nresp;
    else
        r->nested_error = arena_printf(ctx->arena, "%s: %s", err_str(rc), ne.msg);
    *respm = &r->base;
    return ERR_OK;
}

static const rpc_method methods[] = {
    {M_GET, &test__v1__echo_request__descriptor, &test__v1__echo_response__descriptor, handle,
     false},
    {M_WRITE, &test__v1__echo_request__descriptor, &test__v1__echo_response__descriptor, handle,
     false},
    {M_NEST, &test__v1__echo_request__descriptor, &test__v1__echo_response__descriptor,
     handle_nested, false},
};

/* ---------- helpers ---------- */

/* A client of the in-process server (or of addr) with a fast breaker (window 10, min 5, 50 %,
 * open 300 ms, 2 trials) and fast retries (backoff ≤ 4 ms), metrics into r. */
static rpc_client *client(const char *name, const char *addr, metrics_registry *r,
                          breaker_mode mode, int margin_ms)
{
    rpc_client_opts o = {.target = addr ? addr : target, .name = name, .default_timeout_ms = 2000};
    breaker_opts bo = {.window = 10,
                       .min_calls = 5,
                       .failure_rate_pct = 50,
                       .open_wait_ms = 300,
                       .half_open_calls = 2,
                       .mode = mode};
    retry_opts ro = {
        .max_retries = 2, .base_ms = 2, .max_ms = 4, .budget_pct = 10, .min_tokens = 3};
    rpc_client_ext_opts x = {
        .breaker = &bo, .retry = &ro, .metrics = r, .deadline_margin_ms = margin_ms};
    err_info e;
    rpc_client *c = rpc_client_new_ext(&o, &x, &e);
    CU_ASSERT_PTR_NOT_NULL(c);
    return c;
}

static err_code call(rpc_client *c, const char *method, int fail_code, int sleep, int64_t dl_ms,
                     err_info *e, Test__V1__EchoResponse **out, arena *a)
{
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = "hi";
    req.fail_code = fail_code;
    req.sleep_ms = sleep;
    rpc_call_opts o = {.deadline_ms = dl_ms};
    ProtobufCMessage *m = NULL;
    err_code rc =
        rpc_client_call(c, method, &req.base, &test__v1__echo_response__descriptor, &o, a, &m, e);
    if (out)
        *out = (Test__V1__EchoResponse *)m;
    return rc;
}

static err_code call_simple(rpc_client *c, const char *method, int fail_code, err_info *e)
{
    arena *a = arena_new(0);
    err_code rc = call(c, method, fail_code, 0, 0, e, NULL, a);
    arena_free(a);
    return rc;
}

/* The value of the sample line that starts with `series` ("name{labels}"), or -1. */
static double metric(metrics_registry *r, const char *series)
{
    size_t len;
    char *txt = metrics_render(r, &len);
    double v = -1;
    size_t n = strlen(series);
    for (char *p = txt; p && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    free(txt);
    return v;
}

static void reset_counts(void)
{
    atomic_store(&calls_get, 0);
    atomic_store(&calls_write, 0);
    atomic_store(&fail_next, 0);
}

/* ---------- breaker ---------- */

static void test_breaker_opens_and_rejects_fast(void)
{
    reset_counts();
    metrics_registry *r = metrics_registry_new();
    rpc_client *c = client("t_open", NULL, r, BREAKER_NORMAL, 0);
    err_info e;
    /* 5 INTERNAL failures (min_calls) trip it; a write so no retry blurs the counts. */
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(call_simple(c, M_WRITE, ERR_INTERNAL, &e), ERR_INTERNAL);
    CU_ASSERT_EQUAL(atomic_load(&calls_write), 5);
    CU_ASSERT_EQUAL(breaker_state_get(rpc_client_breaker(c)), BREAKER_OPEN);
    /* Open: refused at once, the server sees nothing, retry_after_s from the open wait. */
    for (int i = 0; i < 20; i++) {
        long long t0 = ts_now_ms();
        CU_ASSERT_EQUAL(call_simple(c, M_GET, 0, &e), ERR_UNAVAILABLE);
        CU_ASSERT(ts_now_ms() - t0 < 5);
        CU_ASSERT_STRING_EQUAL(e.msg, "circuit open: t_open");
        CU_ASSERT_EQUAL(e.retry_after_s, 1);
    }
    CU_ASSERT_EQUAL(atomic_load(&calls_write), 5);
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 0);
    rpc_client_stats st;
    rpc_client_stats_get(c, &st);
    CU_ASSERT_EQUAL(st.rejected, 20);
    CU_ASSERT_EQUAL(st.attempts, 5);
    CU_ASSERT_EQUAL(st.retries, 0); /* circuit-open answers are never retried */
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_state{target=\"t_open\"}"), 1);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_rejected_total{target=\"t_open\"}"), 20);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_transitions_total{target=\"t_open\",to=\"open\"}"),
                    1);
    CU_ASSERT_EQUAL(metric(r, "grpc_client_handled_total{target=\"t_open\",grpc_service=\"" SVC
                              "\",grpc_method=\"Echo\",grpc_code=\"INTERNAL\"}"),
                    5);
    CU_ASSERT_EQUAL(
        metric(r, "grpc_client_handling_seconds_count{target=\"t_open\",grpc_service=\"" SVC
                  "\",grpc_method=\"Echo\"}"),
        5);
    rpc_client_free(c);
    metrics_registry_free(r);
}

static void test_not_found_never_opens(void)
{
    reset_counts();
    metrics_registry *r = metrics_registry_new();
    rpc_client *c = client("t_nf", NULL, r, BREAKER_NORMAL, 0);
    err_info e;
    /* Answers that mean "the target works": NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS... */
    for (int i = 0; i < 30; i++) {
        int code = i % 3 == 0   ? ERR_NOT_FOUND
                   : i % 3 == 1 ? ERR_INVALID_ARGUMENT
                                : ERR_ALREADY_EXISTS;
        CU_ASSERT_EQUAL(call_simple(c, M_GET, code, &e), (err_code)code);
    }
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 30); /* every one reached the server, none retried */
    CU_ASSERT_EQUAL(breaker_state_get(rpc_client_breaker(c)), BREAKER_CLOSED);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_state{target=\"t_nf\"}"), 0);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_transitions_total{target=\"t_nf\",to=\"open\"}"), 0);
    CU_ASSERT_EQUAL(metric(r, "grpc_client_handled_total{target=\"t_nf\",grpc_service=\"" SVC
                              "\",grpc_method=\"GetThing\",grpc_code=\"NOT_FOUND\"}"),
                    10);
    rpc_client_free(c);
    metrics_registry_free(r);
}

static void test_half_open_then_closed(void)
{
    reset_counts();
    metrics_registry *r = metrics_registry_new();
    rpc_client *c = client("t_half", NULL, r, BREAKER_NORMAL, 0);
    breaker *b = rpc_client_breaker(c);
    err_info e;
    for (int i = 0; i < 5; i++)
        call_simple(c, M_WRITE, ERR_UNKNOWN, &e);
    CU_ASSERT_EQUAL_FATAL(breaker_state_get(b), BREAKER_OPEN);
    usleep(150 * 1000);
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, 0, &e), ERR_UNAVAILABLE); /* still open at 150 ms */
    usleep(200 * 1000);
    /* Past 300 ms: half-open, a failing trial opens it again. */
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, ERR_DEADLINE_EXCEEDED, &e), ERR_DEADLINE_EXCEEDED);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    usleep(350 * 1000);
    /* Two successful trials close it. */
    int before = atomic_load(&calls_write);
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_HALF_OPEN);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_state{target=\"t_half\"}"), 2);
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    CU_ASSERT_EQUAL(atomic_load(&calls_write) - before, 2);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_state{target=\"t_half\"}"), 0);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_transitions_total{target=\"t_half\",to=\"open\"}"),
                    2);
    CU_ASSERT_EQUAL(
        metric(r, "circuit_breaker_transitions_total{target=\"t_half\",to=\"half_open\"}"), 2);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_transitions_total{target=\"t_half\",to=\"closed\"}"),
                    1);
    rpc_client_free(c);
    metrics_registry_free(r);
}

/* One log line per transition, warn when opening and info otherwise, naming the target. */
static void test_transition_log_lines(void)
{
    char path[] = "/tmp/test_resilience_log_XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    log_min_level = LOG_INFO;
    log_set_fd(fd);
    rpc_client *c = client("t_log", NULL, NULL, BREAKER_NORMAL, 0);
    err_info e;
    for (int i = 0; i < 5; i++)
        call_simple(c, M_WRITE, ERR_UNAVAILABLE, &e);
    for (int i = 0; i < 5; i++)
        call_simple(c, M_WRITE, 0, &e); /* rejected: no line each */
    usleep(350 * 1000);
    call_simple(c, M_WRITE, 0, &e);
    call_simple(c, M_WRITE, 0, &e);
    log_set_fd(2);
    log_min_level = LOG_WARN;
    CU_ASSERT_EQUAL(breaker_state_get(rpc_client_breaker(c)), BREAKER_CLOSED);
    static char buf[1 << 16];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    CU_ASSERT_FATAL(n > 0);
    buf[n] = '\0';
    int lines = 0, open_warn = 0, half_info = 0, closed_info = 0;
    for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
        if (!strstr(l, "circuit breaker t_log"))
            continue;
        lines++;
        if (strstr(l, "\"level\":\"warn\"") && strstr(l, "\"to\":\"open\"") &&
            strstr(l, "\"target\":\"t_log\""))
            open_warn++;
        if (strstr(l, "\"level\":\"info\"") && strstr(l, "\"to\":\"half_open\""))
            half_info++;
        if (strstr(l, "\"level\":\"info\"") && strstr(l, "\"to\":\"closed\""))
            closed_info++;
    }
    CU_ASSERT_EQUAL(lines, 3);
    CU_ASSERT_EQUAL(open_warn, 1);
    CU_ASSERT_EQUAL(half_info, 1);
    CU_ASSERT_EQUAL(closed_info, 1);
    rpc_client_free(c);
}

/* ---------- a killed server ---------- */

static void test_killed_server(void)
{
    int port = ts_free_port();
    char addr[64], portarg[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", port);
    char *argv[] = {
        (char *)ts_bin("rpc_test_server"), "--addr", portarg, "--log-level", "warn", NULL};
    int pid = ts_spawn(argv, NULL, "/dev/null");
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_FATAL(ts_wait_port(port, 10000) == 0);
    metrics_registry *r = metrics_registry_new();
    rpc_client *c = client("t_kill", addr, r, BREAKER_NORMAL, 0);
    err_info e;
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, 0, &e), ERR_OK);
    ts_stop(pid, SIGKILL, 5000);
    /* Every call fails fast with UNAVAILABLE; within min_calls calls the breaker is open and
     * the rest are refused in well under 5 ms. */
    long long t_kill = ts_now_ms();
    int unavailable = 0, open_at = -1;
    for (int i = 0; i < 12; i++) {
        long long t0 = ts_now_ms();
        err_code rc = call_simple(c, M_WRITE, 0, &e);
        long long took = ts_now_ms() - t0;
        CU_ASSERT_EQUAL(rc, ERR_UNAVAILABLE);
        CU_ASSERT(took < 1000);
        unavailable += rc == ERR_UNAVAILABLE;
        if (open_at < 0 && strstr(e.msg, "circuit open")) {
            open_at = i;
            CU_ASSERT(took < 5);
        }
    }
    CU_ASSERT_EQUAL(unavailable, 12);
    /* The window holds the OK before the kill and 4 failures: 4/5 >= 50 % with min 5 calls, so
     * calls 0-3 reached the (dead) target and the circuit opened. */
    CU_ASSERT_EQUAL(open_at, 4);
    CU_ASSERT(ts_now_ms() - t_kill < 1000);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_state{target=\"t_kill\"}"), 1);

    /* Restart on the same port: success again within the open wait + 2 s. */
    pid = ts_spawn(argv, NULL, "/dev/null");
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_FATAL(ts_wait_port(port, 10000) == 0);
    long long t_up = ts_now_ms(), t_ok = -1;
    while (ts_now_ms() - t_up < 5000) {
        if (call_simple(c, M_WRITE, 0, &e) == ERR_OK) {
            t_ok = ts_now_ms();
            break;
        }
        usleep(20 * 1000);
    }
    CU_ASSERT(t_ok > 0);
    CU_ASSERT(t_ok - t_up <= 300 + 2000);
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(breaker_state_get(rpc_client_breaker(c)), BREAKER_CLOSED);
    CU_ASSERT_EQUAL(ts_stop(pid, SIGTERM, 5000), 0);
    rpc_client_free(c);
    metrics_registry_free(r);
}

/* ---------- retries ---------- */

static void test_retry_read_once(void)
{
    reset_counts();
    metrics_registry *r = metrics_registry_new();
    /* The breaker is disabled here: these failures would open it, and it is tested above. */
    rpc_client *c = client("t_retry", NULL, r, BREAKER_DISABLED, 0);
    err_info e;
    atomic_store(&fail_next, 1);
    CU_ASSERT_EQUAL(call_simple(c, M_GET, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 2);
    rpc_client_stats st;
    rpc_client_stats_get(c, &st);
    CU_ASSERT_EQUAL(st.retries, 1);
    CU_ASSERT_EQUAL(st.attempts, 2);
    CU_ASSERT_EQUAL(metric(r, "grpc_client_retries_total{target=\"t_retry\"}"), 1);
    CU_ASSERT_EQUAL(metric(r, "grpc_client_handled_total{target=\"t_retry\",grpc_service=\"" SVC
                              "\",grpc_method=\"GetThing\",grpc_code=\"UNAVAILABLE\"}"),
                    1);
    CU_ASSERT_EQUAL(metric(r, "grpc_client_handled_total{target=\"t_retry\",grpc_service=\"" SVC
                              "\",grpc_method=\"GetThing\",grpc_code=\"OK\"}"),
                    1);
    /* At most 2 retries: a read failing 5 times in a row is tried 3 times. */
    reset_counts();
    atomic_store(&fail_next, 5);
    CU_ASSERT_EQUAL(call_simple(c, M_GET, 0, &e), ERR_UNAVAILABLE);
    CU_ASSERT_STRING_EQUAL(e.msg, "injected failure");
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 3);
    /* Only UNAVAILABLE is retried: an INTERNAL or DEADLINE_EXCEEDED read is tried once. */
    reset_counts();
    CU_ASSERT_EQUAL(call_simple(c, M_GET, ERR_INTERNAL, &e), ERR_INTERNAL);
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 1);
    rpc_client_free(c);
    metrics_registry_free(r);
}

static void test_write_never_retried(void)
{
    reset_counts();
    metrics_registry *r = metrics_registry_new();
    rpc_client *c = client("t_write", NULL, r, BREAKER_NORMAL, 0);
    err_info e;
    atomic_store(&fail_next, 1);
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, 0, &e), ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(atomic_load(&calls_write), 1);
    atomic_store(&fail_next, 0);
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, ERR_UNAVAILABLE, &e), ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(atomic_load(&calls_write), 2);
    rpc_client_stats st;
    rpc_client_stats_get(c, &st);
    CU_ASSERT_EQUAL(st.retries, 0);
    CU_ASSERT_EQUAL(metric(r, "grpc_client_retries_total{target=\"t_write\"}"), 0);
    rpc_client_free(c);
    metrics_registry_free(r);
}

static void test_retry_budget_caps(void)
{
    reset_counts();
    /* Sustained failure with the breaker disabled (so it does not hide the budget): 200 reads,
     * each failing UNAVAILABLE. Without a budget that would be 600 attempts; with 10 % and 3 in
     * reserve, at most 200 * 0.1 + 3 = 23 retries. */
    rpc_client *c = client("t_budget", NULL, NULL, BREAKER_DISABLED, 0);
    err_info e;
    const int N = 200;
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(call_simple(c, M_GET, ERR_UNAVAILABLE, &e), ERR_UNAVAILABLE);
    rpc_client_stats st;
    rpc_client_stats_get(c, &st);
    int calls = atomic_load(&calls_get);
    CU_ASSERT((int)st.retries <= N / 10 + 3);
    CU_ASSERT((int)st.retries >= N / 10 - 2); /* the budget is spent, not left unused */
    CU_ASSERT_EQUAL(calls, N + (int)st.retries);
    CU_ASSERT_EQUAL(breaker_state_get(rpc_client_breaker(c)), BREAKER_CLOSED);
    rpc_client_free(c);
}

/* A read whose server names a wait (RetryInfo), or a downstream "circuit open", is not retried. */
static void test_no_retry_on_circuit_open_from_downstream(void)
{
    reset_counts();
    rpc_client *c = client("t_down", NULL, NULL, BREAKER_NORMAL, 0);
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.fail_code = ERR_UNAVAILABLE;
    req.fail_message = "circuit open: user";
    ProtobufCMessage *m = NULL;
    err_info e;
    CU_ASSERT_EQUAL(
        rpc_client_call(c, M_GET, &req.base, &test__v1__echo_response__descriptor, NULL, a, &m, &e),
        ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 1);
    arena_free(a);
    rpc_client_free(c);
}

/* ---------- deadlines ---------- */

static void test_deadline_margin(void)
{
    reset_counts();
    metrics_registry *r = metrics_registry_new();
    rpc_client *c = client("t_dl", NULL, r, BREAKER_NORMAL, 50);
    arena *a = arena_new(0);
    err_info e;
    Test__V1__EchoResponse *resp = NULL;
    /* Explicit deadline 30 ms away, margin 50: not made at all. */
    long long t0 = ts_now_ms();
    CU_ASSERT_EQUAL(call(c, M_GET, 0, 0, rpc_now_ms() + 30, &e, &resp, a), ERR_DEADLINE_EXCEEDED);
    CU_ASSERT(ts_now_ms() - t0 < 5);
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 0);
    rpc_client_stats st;
    rpc_client_stats_get(c, &st);
    CU_ASSERT_EQUAL(st.deadline_skipped, 1);
    CU_ASSERT_EQUAL(st.attempts, 0);
    CU_ASSERT_EQUAL(metric(r, "grpc_client_deadline_skipped_total{target=\"t_dl\"}"), 1);
    /* The breaker learnt nothing from a call that was not made. */
    breaker_stats bs;
    breaker_stats_get(rpc_client_breaker(c), &bs);
    CU_ASSERT_EQUAL(bs.window_calls, 0);
    /* With time left the margin comes off what the server sees. */
    CU_ASSERT_EQUAL(call(c, M_GET, 0, 0, rpc_now_ms() + 1000, &e, &resp, a), ERR_OK);
    CU_ASSERT(resp->deadline_left_ms > 800 && resp->deadline_left_ms <= 960);
    arena_free(a);
    rpc_client_free(c);
    metrics_registry_free(r);
}

/* The parent's budget: a hop inside a server call whose deadline leaves less than the margin
 * is not made; with time left, the hop gets the parent's budget minus the margin, capped by the
 * per-target default. */
static void test_parent_budget(void)
{
    reset_counts();
    rpc_client *outer = client("t_outer", NULL, NULL, BREAKER_NORMAL, -1);
    arena *a = arena_new(0);
    err_info e;
    Test__V1__EchoResponse *resp = NULL;

    /* inner: margin 100 ms, default 2 s. Outer deadline 60 ms: the nested hop is not made. */
    inner = client("t_inner", NULL, NULL, BREAKER_NORMAL, 100);
    CU_ASSERT_EQUAL(call(outer, M_NEST, 0, 0, rpc_now_ms() + 60, &e, &resp, a), ERR_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp->nested_error);
    CU_ASSERT(strncmp(resp->nested_error, "DEADLINE_EXCEEDED", 17) == 0);
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 0);

    /* Outer 1 s: the nested hop sees about 1 s - 100 ms. */
    CU_ASSERT_EQUAL(call(outer, M_NEST, 0, 0, rpc_now_ms() + 1000, &e, &resp, a), ERR_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp->nested);
    /* (gRPC's grpc-timeout header keeps about 2 significant digits, rounded up: allow 50 ms.) */
    CU_ASSERT(resp->nested->deadline_left_ms > 700 && resp->nested->deadline_left_ms <= 950);
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 1);

    /* Outer 10 s: capped by the inner client's 2 s default. */
    CU_ASSERT_EQUAL(call(outer, M_NEST, 0, 0, rpc_now_ms() + 10000, &e, &resp, a), ERR_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp->nested);
    CU_ASSERT(resp->nested->deadline_left_ms > 1500 && resp->nested->deadline_left_ms <= 2050);
    rpc_client_free(inner);
    inner = NULL;
    arena_free(a);
    rpc_client_free(outer);
}

/* ---------- async ---------- */

typedef struct async_slot {
    atomic_int done;
    err_code code;
    char msg[ERR_MSG_LEN];
    long long at;
} async_slot;

static void async_done(void *arg, err_code code, ProtobufCMessage *resp, const err_info *e)
{
    async_slot *s = arg;
    s->code = code;
    snprintf(s->msg, sizeof s->msg, "%s", e ? e->msg : "");
    CU_ASSERT((code == ERR_OK) == (resp != NULL));
    s->at = ts_now_ms();
    atomic_store(&s->done, 1);
}

static bool wait_done(async_slot *s, int ms)
{
    long long end = ts_now_ms() + ms;
    while (!atomic_load(&s->done) && ts_now_ms() < end)
        usleep(2000);
    return atomic_load(&s->done);
}

static err_code call_async(rpc_client *c, const char *method, int fail_code, int sleep,
                           async_slot *s, arena *a, err_info *e)
{
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    req.text = "async";
    req.fail_code = fail_code;
    req.sleep_ms = sleep;
    memset(s, 0, sizeof *s);
    rpc_call_opts o = {.deadline_ms = rpc_now_ms() + 2000};
    return rpc_client_call_async(c, method, &req.base, &test__v1__echo_response__descriptor, &o, a,
                                 async_done, s, e);
}

static void test_async(void)
{
    reset_counts();
    rpc_client *c = client("t_async", NULL, NULL, BREAKER_NORMAL, 0);
    arena *a = arena_new(0);
    err_info e;
    async_slot s;
    /* A read failing once is retried by the queue thread and answered OK. */
    atomic_store(&fail_next, 1);
    CU_ASSERT_EQUAL(call_async(c, M_GET, 0, 0, &s, a, &e), ERR_OK);
    CU_ASSERT_FATAL(wait_done(&s, 3000));
    CU_ASSERT_EQUAL(s.code, ERR_OK);
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 2);
    rpc_client_stats st;
    rpc_client_stats_get(c, &st);
    CU_ASSERT_EQUAL(st.retries, 1);
    /* A write is not. */
    atomic_store(&fail_next, 1);
    CU_ASSERT_EQUAL(call_async(c, M_WRITE, 0, 0, &s, a, &e), ERR_OK);
    CU_ASSERT_FATAL(wait_done(&s, 3000));
    CU_ASSERT_EQUAL(s.code, ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(atomic_load(&calls_write), 1);

    /* A retry waiting for its backoff does not hold up other answers: the backoff is a timer on
     * the queue, not a sleep of its thread, so a quick call started meanwhile is answered at
     * once (a sleeping thread would hold it for up to 400 ms). */
    rpc_client *slow = NULL;
    {
        rpc_client_opts o = {.target = target, .name = "t_async_slow", .default_timeout_ms = 3000};
        retry_opts ro = {.max_retries = 1, .base_ms = 400, .max_ms = 400, .min_tokens = 3};
        rpc_client_ext_opts x = {.retry = &ro};
        slow = rpc_client_new_ext(&o, &x, &e);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(slow);
    async_slot s1, s2;
    atomic_store(&fail_next, 1);
    CU_ASSERT_EQUAL(call_async(slow, M_GET, 0, 0, &s1, a, &e), ERR_OK);
    usleep(20 * 1000); /* the first attempt has failed; its retry waits on the queue's timer */
    long long t0 = ts_now_ms();
    CU_ASSERT_EQUAL(call_async(slow, M_WRITE, 0, 0, &s2, a, &e), ERR_OK);
    CU_ASSERT_FATAL(wait_done(&s2, 3000));
    CU_ASSERT(s2.at - t0 < 100);
    CU_ASSERT_EQUAL(s2.code, ERR_OK);
    CU_ASSERT_FATAL(wait_done(&s1, 3000));
    CU_ASSERT_EQUAL(s1.code, ERR_OK);

    /* Breaker open: call_async refuses at once (done is not called) with circuit open. */
    rpc_client_free(c);
    c = client("t_async", NULL, NULL, BREAKER_NORMAL, 0);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(call_async(c, M_WRITE, ERR_INTERNAL, 0, &s, a, &e), ERR_OK);
        CU_ASSERT_FATAL(wait_done(&s, 3000));
    }
    CU_ASSERT_EQUAL(breaker_state_get(rpc_client_breaker(c)), BREAKER_OPEN);
    t0 = ts_now_ms();
    CU_ASSERT_EQUAL(call_async(c, M_WRITE, 0, 0, &s, a, &e), ERR_UNAVAILABLE);
    CU_ASSERT(ts_now_ms() - t0 < 5);
    CU_ASSERT_STRING_EQUAL(e.msg, "circuit open: t_async");
    CU_ASSERT(e.retry_after_s >= 1);
    usleep(50 * 1000);
    CU_ASSERT_EQUAL(atomic_load(&s.done), 0);

    /* Freeing a client with a retry still waiting answers it (with the failure it retried). */
    atomic_store(&fail_next, 1);
    CU_ASSERT_EQUAL(call_async(slow, M_GET, 0, 0, &s1, a, &e), ERR_OK);
    usleep(30 * 1000);
    rpc_client_free(slow);
    CU_ASSERT_EQUAL(atomic_load(&s1.done), 1);
    CU_ASSERT(s1.code == ERR_UNAVAILABLE || s1.code == ERR_OK); /* OK if the backoff drew ~0 */
    arena_free(a);
    rpc_client_free(c);
}

/* Per-call flags: a compensation made while the circuit is open; a read the caller retries
 * itself. */
static void test_call_flags(void)
{
    reset_counts();
    rpc_client *c = client("t_flags", NULL, NULL, BREAKER_NORMAL, 0);
    err_info e;
    for (int i = 0; i < 5; i++)
        call_simple(c, M_WRITE, ERR_UNAVAILABLE, &e);
    CU_ASSERT_EQUAL_FATAL(breaker_state_get(rpc_client_breaker(c)), BREAKER_OPEN);
    arena *a = arena_new(0);
    Test__V1__EchoRequest req = TEST__V1__ECHO_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    int before = atomic_load(&calls_write);
    CU_ASSERT_EQUAL(rpc_client_call_flags(c, M_WRITE, &req.base,
                                          &test__v1__echo_response__descriptor, NULL,
                                          RPC_CALL_BYPASS_BREAKER, a, &m, &e),
                    ERR_OK);
    CU_ASSERT_EQUAL(atomic_load(&calls_write), before + 1);
    /* Not recorded: still open, and a plain call is still refused. */
    CU_ASSERT_EQUAL(breaker_state_get(rpc_client_breaker(c)), BREAKER_OPEN);
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, 0, &e), ERR_UNAVAILABLE);
    rpc_client_free(c);

    c = client("t_flags2", NULL, NULL, BREAKER_DISABLED, 0);
    reset_counts();
    atomic_store(&fail_next, 1);
    CU_ASSERT_EQUAL(rpc_client_call_flags(c, M_GET, &req.base, &test__v1__echo_response__descriptor,
                                          NULL, RPC_CALL_NO_RETRY, a, &m, &e),
                    ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 1);
    arena_free(a);
    rpc_client_free(c);
}

/* ---------- configuration ---------- */

static void test_policy_from_env(void)
{
    rpc_client_policy p;
    err_info e;
    unsetenv("BREAKER_MODE");
    CU_ASSERT_EQUAL(rpc_client_policy_load(&p, &e), ERR_OK);
    CU_ASSERT_EQUAL(p.breaker.window, 20);
    CU_ASSERT_EQUAL(p.breaker.min_calls, 10);
    CU_ASSERT_EQUAL(p.breaker.failure_rate_pct, 50);
    CU_ASSERT_EQUAL(p.breaker.open_wait_ms, 10000);
    CU_ASSERT_EQUAL(p.breaker.half_open_calls, 3);
    CU_ASSERT_EQUAL(p.breaker.mode, BREAKER_NORMAL);
    CU_ASSERT_EQUAL(p.retry.max_retries, 2);
    CU_ASSERT_EQUAL(p.retry.budget_pct, 10);
    CU_ASSERT_EQUAL(p.deadline_margin_ms, 5);

    setenv("BREAKER_OPEN_MS", "300", 1);
    setenv("BREAKER_MIN_CALLS", "4", 1);
    setenv("RPC_RETRY_MAX", "0", 1);
    setenv("RPC_DEADLINE_MARGIN_MS", "20", 1);
    setenv("BREAKER_MODE", "forced_open", 1);
    CU_ASSERT_EQUAL(rpc_client_policy_load(&p, &e), ERR_OK);
    CU_ASSERT_EQUAL(p.breaker.open_wait_ms, 300);
    CU_ASSERT_EQUAL(p.breaker.min_calls, 4);
    CU_ASSERT_EQUAL(p.retry.max_retries, 0);
    CU_ASSERT_EQUAL(p.deadline_margin_ms, 20);
    CU_ASSERT_EQUAL(p.breaker.mode, BREAKER_FORCED_OPEN);

    /* forced_open from the environment: every call refused, the gauge reads 1 from the start. */
    reset_counts();
    metrics_registry *r = metrics_registry_new();
    rpc_client_opts o = {.target = target, .name = "t_forced"};
    rpc_client_ext_opts x = {.policy = &p, .metrics = r};
    rpc_client *c = rpc_client_new_ext(&o, &x, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(metric(r, "circuit_breaker_state{target=\"t_forced\"}"), 1);
    CU_ASSERT_EQUAL(call_simple(c, M_GET, 0, &e), ERR_UNAVAILABLE);
    CU_ASSERT_STRING_EQUAL(e.msg, "circuit open: t_forced");
    CU_ASSERT_EQUAL(atomic_load(&calls_get), 0);
    rpc_client_free(c);
    metrics_registry_free(r);

    setenv("BREAKER_MODE", "sometimes", 1);
    CU_ASSERT_EQUAL(rpc_client_policy_load(&p, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT(strstr(e.msg, "BREAKER_MODE") != NULL);
    setenv("BREAKER_MODE", "normal", 1);
    setenv("BREAKER_FAILURE_RATE_PCT", "101", 1);
    CU_ASSERT_EQUAL(rpc_client_policy_load(&p, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT(strstr(e.msg, "BREAKER_FAILURE_RATE_PCT") != NULL);
    const char *vars[] = {"BREAKER_OPEN_MS", "BREAKER_MIN_CALLS",
                          "RPC_RETRY_MAX",   "RPC_DEADLINE_MARGIN_MS",
                          "BREAKER_MODE",    "BREAKER_FAILURE_RATE_PCT"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);

    /* Disabled: failures never open it. */
    rpc_client *d = client("t_disabled", NULL, NULL, BREAKER_DISABLED, 0);
    for (int i = 0; i < 12; i++)
        CU_ASSERT_EQUAL(call_simple(d, M_WRITE, ERR_INTERNAL, &e), ERR_INTERNAL);
    CU_ASSERT_EQUAL(breaker_state_get(rpc_client_breaker(d)), BREAKER_CLOSED);
    rpc_client_free(d);
}

/* The plain constructor (existing callers) gets a breaker too, with the defaults (10 calls). */
static void test_plain_constructor_has_breaker(void)
{
    reset_counts();
    rpc_client_opts o = {.target = target, .name = "t_plain"};
    err_info e;
    rpc_client *c = rpc_client_new(&o, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(call_simple(c, M_WRITE, ERR_UNAVAILABLE, &e), ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(call_simple(c, M_WRITE, 0, &e), ERR_UNAVAILABLE);
    CU_ASSERT_STRING_EQUAL(e.msg, "circuit open: t_plain");
    CU_ASSERT(e.retry_after_s >= 9 && e.retry_after_s <= 10);
    CU_ASSERT_EQUAL(atomic_load(&calls_write), 10);
    rpc_client_free(c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_init("test_resilience", LOG_WARN);
    int port = ts_free_port();
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_server_opts so = {.addr = target, .service_name = SVC, .threads = 4};
    err_info e;
    srv = rpc_server_new(&so, methods, sizeof methods / sizeof methods[0], &e);
    if (!srv || rpc_server_start(srv, &e) != ERR_OK) {
        fprintf(stderr, "server: %s\n", e.msg);
        return 1;
    }
    static const ts_case cases[] = {
        {"breaker_opens_and_rejects_fast", test_breaker_opens_and_rejects_fast},
        {"not_found_never_opens", test_not_found_never_opens},
        {"half_open_then_closed", test_half_open_then_closed},
        {"transition_log_lines", test_transition_log_lines},
        {"killed_server", test_killed_server},
        {"retry_read_once", test_retry_read_once},
        {"write_never_retried", test_write_never_retried},
        {"retry_budget_caps", test_retry_budget_caps},
        {"no_retry_on_downstream_circuit_open", test_no_retry_on_circuit_open_from_downstream},
        {"deadline_margin", test_deadline_margin},
        {"parent_budget", test_parent_budget},
        {"async", test_async},
        {"call_flags", test_call_flags},
        {"policy_from_env", test_policy_from_env},
        {"plain_constructor_has_breaker", test_plain_constructor_has_breaker},
        {NULL, NULL},
    };
    int rc = ts_main("resilience", cases);
    rpc_server_free(srv);
    return rc;
}
