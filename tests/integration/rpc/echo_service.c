/* echo_service: echoes its request and the call's context; misbehaves on request (see echo.proto),
 * and answers asynchronously on request (see echo_service.h). */
#include "echo_service.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* The answer, after any sleep: what the handler returns for this request. */
static err_code echo_answer(rpc_ctx *ctx, const ProtobufCMessage *reqm, ProtobufCMessage **respm,
                            err_info *e)
{
    const Test__V1__EchoRequest *req = (const Test__V1__EchoRequest *)reqm;
    echo_state *st = ctx->state;
    if (req->fail_code == -1)
        return ERR_OK; /* and no response: the server must answer INTERNAL */
    if (req->fail_code == -2) {
        Test__V1__NotEcho *w = arena_alloc(ctx->arena, sizeof *w);
        test__v1__not_echo__init(w);
        *respm = &w->base;
        return ERR_OK;
    }
    if (req->fail_code != 0 || req->n_violations || req->retry_after_s) {
        for (size_t i = 0; i < req->n_violations; i++) {
            const char *v = req->violations[i];
            const char *colon = strchr(v, ':');
            int flen = colon ? (int)(colon - v) : (int)strlen(v);
            err_violation_add(e, "", "%s", colon ? colon + 1 : "");
            snprintf(e->violations[e->nviolations - 1].field, sizeof e->violations[0].field, "%.*s",
                     flen, v);
        }
        e->retry_after_s = req->retry_after_s;
        if (req->fail_code != 0)
            e->code = (err_code)req->fail_code;
        snprintf(e->msg, sizeof e->msg, "%s", req->fail_message);
        return (err_code)(req->fail_code ? req->fail_code : (int)e->code);
    }

    Test__V1__EchoResponse *r = arena_alloc(ctx->arena, sizeof *r);
    test__v1__echo_response__init(r);
    r->text = req->text;
    r->payload = req->payload;
    r->request_id = (char *)ctx->md.request_id;
    r->traceparent = (char *)ctx->md.traceparent;
    r->trace_id = ctx->trace_id;
    r->span_id = ctx->span_id;
    r->authorization = (char *)ctx->md.authorization;
    r->user_agent = (char *)ctx->md.user_agent;
    r->client_ip = (char *)ctx->md.client_ip;
    r->actor_id = (char *)ctx->md.actor_id;
    r->deadline_left_ms = ctx->deadline_ms == INT64_MAX ? -1 : ctx->deadline_ms - rpc_now_ms();

    if (req->nested && st && st->self) {
        Test__V1__EchoRequest nreq = TEST__V1__ECHO_REQUEST__INIT;
        nreq.text = req->text;
        nreq.sleep_ms = req->nested_sleep_ms;
        rpc_call_opts o = {.parent = ctx};
        ProtobufCMessage *nresp = NULL;
        err_info ne;
        err_code rc =
            rpc_client_call(st->self, ECHO_METHOD, &nreq.base, &test__v1__echo_response__descriptor,
                            &o, ctx->arena, &nresp, &ne);
        if (rc == ERR_OK)
            r->nested = (Test__V1__EchoResponse *)nresp;
        else
            r->nested_error = arena_printf(ctx->arena, "%s: %s", err_str(rc), ne.msg);
    }
    *respm = &r->base;
    return ERR_OK;
}

/* --- asynchronous answers ------------------------------------------------------------------ */

typedef enum echo_mode { MODE_SYNC, MODE_REPLY, MODE_CONTINUE, MODE_CONTINUE_PENDING } echo_mode;

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static echo_mode mode_of(const Test__V1__EchoRequest *req)
{
    const char *t = req->text ? req->text : "";
    if (has_prefix(t, ECHO_ASYNC_REPLY))
        return MODE_REPLY;
    if (has_prefix(t, ECHO_ASYNC_CONTINUE))
        return MODE_CONTINUE;
    if (has_prefix(t, ECHO_ASYNC_CONTINUE_PENDING))
        return MODE_CONTINUE_PENDING;
    return MODE_SYNC;
}

typedef enum job_kind { JOB_REPLY, JOB_CONTINUE } job_kind;

typedef struct echo_job {
    struct echo_job *next;
    int64_t due_ms;
    job_kind kind;
    rpc_ctx *ctx;
    const ProtobufCMessage *req;
} echo_job;

struct echo_replier {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC: jobs queued, pending counted, stop */
    echo_job *head;    /* by due time, first come first within the same time */
    bool stop;
    pthread_t tid;
    echo_async_seen seen;
};

static void ms_to_timespec(int64_t ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ms / 1000);
    ts->tv_nsec = (long)(ms % 1000) * 1000000L;
}

/* Queues a job and counts a pending call; the caller returns RPC_PENDING right after and touches
 * ctx no more (the replier may answer before it returned). */
static void enqueue_locked(echo_replier *r, job_kind kind, rpc_ctx *ctx,
                           const ProtobufCMessage *req, int delay_ms)
{
    echo_job *j = calloc(1, sizeof *j);
    if (!j)
        abort();
    j->due_ms = rpc_now_ms() + (delay_ms > 0 ? delay_ms : 0);
    j->kind = kind;
    j->ctx = ctx;
    j->req = req;
    echo_job **pp = &r->head;
    while (*pp && (*pp)->due_ms <= j->due_ms)
        pp = &(*pp)->next;
    j->next = *pp;
    *pp = j;
    r->seen.pending++;
    pthread_cond_broadcast(&r->cv);
}

static err_code echo_continuation(rpc_ctx *ctx, const ProtobufCMessage *reqm,
                                  ProtobufCMessage **respm, err_info *e)
{
    const Test__V1__EchoRequest *req = (const Test__V1__EchoRequest *)reqm;
    echo_state *st = ctx->state;
    echo_replier *r = st->replier;
    pthread_mutex_lock(&r->mu);
    r->seen.continuations++;
    r->seen.continuation = pthread_self();
    if (pthread_equal(pthread_self(), r->tid))
        r->seen.cont_on_replier = true;
    if (mode_of(req) == MODE_CONTINUE_PENDING) {
        enqueue_locked(r, JOB_REPLY, ctx, reqm, req->sleep_ms);
        pthread_mutex_unlock(&r->mu);
        return RPC_PENDING;
    }
    pthread_mutex_unlock(&r->mu);
    return echo_answer(ctx, reqm, respm, e);
}

static void run_job(const echo_job *j)
{
    if (j->kind == JOB_CONTINUE) {
        rpc_continue(j->ctx, echo_continuation);
        return;
    }
    err_info e;
    err_clear(&e);
    ProtobufCMessage *resp = NULL;
    err_code rc = echo_answer(j->ctx, j->req, &resp, &e);
    rpc_reply(j->ctx, rc, resp, rc == ERR_OK ? NULL : &e);
}

static void *replier_main(void *arg)
{
    echo_replier *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (!r->head) {
            if (r->stop)
                break;
            pthread_cond_wait(&r->cv, &r->mu);
            continue;
        }
        if (r->head->due_ms > rpc_now_ms()) {
            struct timespec ts;
            ms_to_timespec(r->head->due_ms, &ts);
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
            continue;
        }
        echo_job *j = r->head;
        r->head = j->next;
        if (j->kind == JOB_REPLY)
            r->seen.replies++;
        else
            r->seen.continues++;
        pthread_mutex_unlock(&r->mu);
        run_job(j);
        free(j);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

echo_replier *echo_replier_new(void)
{
    echo_replier *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&r->tid, NULL, replier_main, r) != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
    r->seen.replier = r->tid;
    return r;
}

void echo_replier_free(echo_replier *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->tid, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void echo_replier_seen(echo_replier *r, echo_async_seen *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->seen;
    pthread_mutex_unlock(&r->mu);
}

bool echo_replier_wait_pending(echo_replier *r, int n, int timeout_ms)
{
    struct timespec ts;
    ms_to_timespec(rpc_now_ms() + timeout_ms, &ts);
    pthread_mutex_lock(&r->mu);
    while (r->seen.pending < n)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
            break;
    bool ok = r->seen.pending >= n;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static atomic_int cancel_seen;

int echo_cancel_seen(void)
{
    return atomic_load(&cancel_seen);
}

static err_code echo(rpc_ctx *ctx, const ProtobufCMessage *reqm, ProtobufCMessage **respm,
                     err_info *e)
{
    const Test__V1__EchoRequest *req = (const Test__V1__EchoRequest *)reqm;
    if (req->text && has_prefix(req->text, ECHO_WATCH_CANCEL)) {
        rpc_watch_cancel(ctx);
        for (int64_t end = rpc_now_ms() + req->sleep_ms; rpc_now_ms() < end;) {
            if (rpc_ctx_cancelled(ctx)) {
                atomic_fetch_add(&cancel_seen, 1);
                return err_set(e, ERR_CANCELLED, "caller gone");
            }
            sleep_ms(5);
        }
        return echo_answer(ctx, reqm, respm, e);
    }
    echo_state *st = ctx->state;
    echo_mode mode = mode_of(req);
    if (mode != MODE_SYNC) {
        if (!st || !st->replier)
            return err_set(e, ERR_FAILED_PRECONDITION, "asynchronous echo without a replier");
        echo_replier *r = st->replier;
        pthread_mutex_lock(&r->mu);
        r->seen.handler = pthread_self();
        enqueue_locked(r, mode == MODE_REPLY ? JOB_REPLY : JOB_CONTINUE, ctx, reqm, req->sleep_ms);
        pthread_mutex_unlock(&r->mu);
        return RPC_PENDING;
    }
    if (req->sleep_ms > 0)
        sleep_ms(req->sleep_ms);
    return echo_answer(ctx, reqm, respm, e);
}

const rpc_method echo_methods[] = {
    {ECHO_METHOD, &test__v1__echo_request__descriptor, &test__v1__echo_response__descriptor, echo,
     false},
    {ECHO_INLINE_METHOD, &test__v1__echo_request__descriptor, &test__v1__echo_response__descriptor,
     echo, true},
};
const size_t echo_nmethods = sizeof echo_methods / sizeof echo_methods[0];
