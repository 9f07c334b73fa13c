/* echo_service: echoes its request and the call's context; misbehaves on request (see echo.proto).
 */
#include "echo_service.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static err_code echo(rpc_ctx *ctx, const ProtobufCMessage *reqm, ProtobufCMessage **respm,
                     err_info *e)
{
    const Test__V1__EchoRequest *req = (const Test__V1__EchoRequest *)reqm;
    echo_state *st = ctx->state;
    if (req->sleep_ms > 0)
        sleep_ms(req->sleep_ms);

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

const rpc_method echo_methods[] = {
    {ECHO_METHOD, &test__v1__echo_request__descriptor, &test__v1__echo_response__descriptor, echo},
};
const size_t echo_nmethods = sizeof echo_methods / sizeof echo_methods[0];
