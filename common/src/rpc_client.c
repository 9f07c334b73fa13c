/* rpc_client: one gRPC channel per target; blocking and asynchronous unary calls with deadline,
 * metadata pass-on, parent propagation, and google.rpc.Status details parsed into err_info. */
#include "common/rpc_client.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/log.h"
#include "rpc_internal.h"

#define MAX_MD 6

typedef struct method_handle {
    char *name;
    void *handle;
} method_handle;

struct rpc_client {
    grpc_channel *ch;
    char *target, *name;
    int default_timeout_ms;
    int max_msg;
    pthread_mutex_t mu; /* guards methods and the async thread's start */
    method_handle *methods;
    size_t nmethods, capmethods;
    grpc_completion_queue *acq; /* async calls; drained by athr */
    pthread_t athr;
    bool athr_started;
};

/* Everything one call needs until its batch completes (sync: on the stack; async: heap). */
typedef struct call_state {
    grpc_call *call;
    grpc_byte_buffer *req_bb, *resp_bb;
    grpc_metadata md[MAX_MD];
    size_t nmd;
    char tp[64];
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    /* async only */
    rpc_client *c;
    const ProtobufCMessageDescriptor *resp_desc;
    arena *a;
    rpc_client_done done;
    void *arg;
    char *md_copy; /* async: metadata values copied here */
} call_state;

rpc_client *rpc_client_new(const rpc_client_opts *opts, err_info *e)
{
    err_clear(e);
    if (!opts || !opts->target || !*opts->target || strpbrk(opts->target, " \t\r\n")) {
        err_set(e, ERR_INVALID_ARGUMENT, "rpc_client: bad target '%.100s'",
                opts && opts->target ? opts->target : "");
        return NULL;
    }
    grpc_init();
    rpc_client *c = xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->target = xstrdup(opts->target);
    c->name = xstrdup(opts->name ? opts->name : opts->target);
    c->default_timeout_ms = opts->default_timeout_ms > 0 ? opts->default_timeout_ms : 5000;
    c->max_msg = opts->max_message_bytes > 0 ? opts->max_message_bytes : 4 * 1024 * 1024;

    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = c->max_msg;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = c->max_msg;
    grpc_channel_args ca = {2, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    c->ch = grpc_channel_create(c->target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (!c->ch) {
        err_set(e, ERR_INVALID_ARGUMENT, "rpc_client: cannot create channel to %s", c->target);
        rpc_client_free(c);
        return NULL;
    }
    return c;
}

void rpc_client_free(rpc_client *c)
{
    if (!c)
        return;
    if (c->athr_started) {
        /* The thread drains what is left and exits on GRPC_QUEUE_SHUTDOWN. */
        grpc_completion_queue_shutdown(c->acq);
        pthread_join(c->athr, NULL);
        grpc_completion_queue_destroy(c->acq);
    }
    if (c->ch)
        grpc_channel_destroy(c->ch);
    for (size_t i = 0; i < c->nmethods; i++)
        free(c->methods[i].name);
    free(c->methods);
    free(c->target);
    free(c->name);
    pthread_mutex_destroy(&c->mu);
    free(c);
    grpc_shutdown();
}

const char *rpc_client_name(const rpc_client *c) { return c ? c->name : ""; }

/* Registered-call handle for method (registering once saves the core a lookup per call). */
static void *method_handle_get(rpc_client *c, const char *method)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->nmethods; i++) {
        if (strcmp(c->methods[i].name, method) == 0) {
            void *h = c->methods[i].handle;
            pthread_mutex_unlock(&c->mu);
            return h;
        }
    }
    if (c->nmethods == c->capmethods) {
        c->capmethods = c->capmethods ? c->capmethods * 2 : 16;
        c->methods = xrealloc(c->methods, c->capmethods * sizeof *c->methods);
    }
    void *h = grpc_channel_register_call(c->ch, method, NULL, NULL);
    c->methods[c->nmethods].name = xstrdup(method);
    c->methods[c->nmethods].handle = h;
    c->nmethods++;
    pthread_mutex_unlock(&c->mu);
    return h;
}

static void md_add(call_state *st, const char *key, const char *val)
{
    if (!val || !*val || st->nmd >= MAX_MD)
        return;
    st->md[st->nmd].key = grpc_slice_from_static_string(key);
    st->md[st->nmd].value = grpc_slice_from_static_string(val);
    st->nmd++;
}

static const char *pick(const char *explicit_v, const char *parent_v)
{
    if (explicit_v && *explicit_v)
        return explicit_v;
    return parent_v && *parent_v ? parent_v : NULL;
}

/* Metadata to send: explicit values win, else the parent's; the trace goes on with the parent's
 * span as the new parent id. Values are referenced, not copied (they outlive the batch). */
static void build_metadata(call_state *st, const rpc_call_opts *o)
{
    const rpc_metadata *md = o ? o->md : NULL;
    const rpc_ctx *p = o ? o->parent : NULL;
    const rpc_metadata *pm = p ? &p->md : NULL;
#define FIELD(f) pick(md ? md->f : NULL, pm ? pm->f : NULL)
    md_add(st, "x-request-id", FIELD(request_id));
    if (md && md->traceparent && *md->traceparent) {
        md_add(st, "traceparent", md->traceparent);
    } else if (p && p->trace_id[0] && p->span_id[0]) {
        char t[33], s[17], flags[3] = "01";
        if (pm && pm->traceparent)
            rpc_traceparent_parse(pm->traceparent, strlen(pm->traceparent), t, s, flags);
        snprintf(st->tp, sizeof st->tp, "00-%s-%s-%s", p->trace_id, p->span_id, flags);
        md_add(st, "traceparent", st->tp);
    }
    md_add(st, "authorization", FIELD(authorization));
    md_add(st, "x-user-agent", FIELD(user_agent));
    md_add(st, "x-client-ip", FIELD(client_ip));
    md_add(st, "x-actor-id", FIELD(actor_id));
#undef FIELD
}

static int64_t call_deadline(const rpc_client *c, const rpc_call_opts *o)
{
    if (o && o->deadline_ms > 0)
        return o->deadline_ms;
    if (o && o->parent && o->parent->deadline_ms != INT64_MAX && o->parent->deadline_ms > 0)
        return o->parent->deadline_ms;
    return rpc_now_ms() + c->default_timeout_ms;
}

/* Creates the call and starts the one batch. tag = st for async, NULL-free sync uses st too. */
static err_code call_start(rpc_client *c, const char *method, const ProtobufCMessage *req,
                           const rpc_call_opts *o, grpc_completion_queue *cq, call_state *st,
                           err_info *e)
{
    if (!method || method[0] != '/' || !req)
        return err_set(e, ERR_INVALID_ARGUMENT, "rpc_client: bad method or request");
    void *h = method_handle_get(c, method);
    grpc_call *parent = o && o->parent ? rpc_ctx_grpc_call(o->parent) : NULL;
    st->call = grpc_channel_create_registered_call(c->ch, parent, GRPC_PROPAGATE_DEFAULTS, cq, h,
                                                   rpc_ms_to_deadline(call_deadline(c, o)), NULL);
    if (!st->call)
        return err_set(e, ERR_INTERNAL, "rpc_client %s: cannot create call %s", c->name, method);

    size_t n = protobuf_c_message_get_packed_size(req);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(sl));
    st->req_bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_metadata_array_init(&st->init_md);
    grpc_metadata_array_init(&st->trail_md);

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = st->nmd;
    ops[0].data.send_initial_metadata.metadata = st->nmd ? st->md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = st->req_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &st->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &st->resp_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &st->trail_md;
    ops[5].data.recv_status_on_client.status = &st->status;
    ops[5].data.recv_status_on_client.status_details = &st->details;
    ops[5].data.recv_status_on_client.error_string = &st->error_string;
    grpc_call_error r = grpc_call_start_batch(st->call, ops, 6, st, NULL);
    if (r != GRPC_CALL_OK) {
        grpc_call_unref(st->call);
        st->call = NULL;
        grpc_byte_buffer_destroy(st->req_bb);
        st->req_bb = NULL;
        grpc_metadata_array_destroy(&st->init_md);
        grpc_metadata_array_destroy(&st->trail_md);
        return err_set(e, ERR_INTERNAL, "rpc_client %s: %s: start_batch failed (%d)", c->name,
                       method, (int)r);
    }
    return ERR_OK;
}

/* Turns a finished batch into (code, response, e) and releases what the batch held. */
static err_code call_finish(call_state *st, const ProtobufCMessageDescriptor *resp_desc, arena *a,
                            ProtobufCMessage **resp, err_info *e)
{
    err_code rc = rpc_code_from_int((int)st->status);
    if (rc == ERR_OK) {
        if (!st->resp_bb) {
            rc = err_set(e, ERR_INTERNAL, "response message missing");
        } else {
            grpc_byte_buffer_reader rd;
            grpc_byte_buffer_reader_init(&rd, st->resp_bb);
            grpc_slice body = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
            ProtobufCAllocator alloc;
            arena_pb_allocator(a, &alloc);
            ProtobufCMessage *m = protobuf_c_message_unpack(resp_desc, &alloc, GRPC_SLICE_LENGTH(body),
                                                            GRPC_SLICE_START_PTR(body));
            grpc_slice_unref(body);
            if (!m)
                rc = err_set(e, ERR_INTERNAL, "malformed response message (%s)", resp_desc->name);
            else
                *resp = m;
        }
    } else {
        size_t n = GRPC_SLICE_LENGTH(st->details);
        if (n) {
            if (n >= sizeof e->msg)
                n = sizeof e->msg - 1;
            memcpy(e->msg, GRPC_SLICE_START_PTR(st->details), n);
            e->msg[n] = '\0';
        } else {
            snprintf(e->msg, sizeof e->msg, "%s", err_str(rc));
        }
        e->code = rc;
        for (size_t i = 0; i < st->trail_md.count; i++) {
            grpc_slice k = st->trail_md.metadata[i].key, v = st->trail_md.metadata[i].value;
            if (GRPC_SLICE_LENGTH(k) == sizeof RPC_MD_STATUS_DETAILS - 1 &&
                memcmp(GRPC_SLICE_START_PTR(k), RPC_MD_STATUS_DETAILS, GRPC_SLICE_LENGTH(k)) == 0)
                rpc_status_details_decode(GRPC_SLICE_START_PTR(v), GRPC_SLICE_LENGTH(v), e);
        }
    }
    if (st->resp_bb)
        grpc_byte_buffer_destroy(st->resp_bb);
    grpc_byte_buffer_destroy(st->req_bb);
    grpc_metadata_array_destroy(&st->init_md);
    grpc_metadata_array_destroy(&st->trail_md);
    grpc_slice_unref(st->details);
    if (st->error_string)
        gpr_free((void *)st->error_string);
    grpc_call_unref(st->call);
    return rc;
}

err_code rpc_client_call(rpc_client *c, const char *method, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                         arena *a, ProtobufCMessage **resp, err_info *e)
{
    err_info local;
    if (!e)
        e = &local;
    err_clear(e);
    if (!a || !resp_desc || !resp)
        return err_set(e, ERR_INVALID_ARGUMENT, "rpc_client: arena, descriptor and resp required");
    call_state st;
    memset(&st, 0, sizeof st);
    build_metadata(&st, o);
    /* A pluck queue per call: nothing shared between callers' threads, nothing to route. */
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    err_code rc = call_start(c, method, req, o, cq, &st, e);
    if (rc == ERR_OK) {
        grpc_event ev = grpc_completion_queue_pluck(cq, &st, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        (void)ev; /* the call's deadline bounds the wait; the status says what happened */
        rc = call_finish(&st, resp_desc, a, resp, e);
    }
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(cq);
    return rc;
}

static void *async_thread(void *arg)
{
    rpc_client *c = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(c->acq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        call_state *st = ev.tag;
        err_info e;
        err_clear(&e);
        ProtobufCMessage *resp = NULL;
        err_code rc = call_finish(st, st->resp_desc, st->a, &resp, &e);
        st->done(st->arg, rc, rc == ERR_OK ? resp : NULL, &e);
        free(st->md_copy);
        free(st);
    }
    return NULL;
}

/* Copies the metadata values into one block owned by the async call (the caller's strings may
 * die before the answer comes). */
static void copy_metadata(call_state *st)
{
    size_t total = 0;
    for (size_t i = 0; i < st->nmd; i++)
        total += GRPC_SLICE_LENGTH(st->md[i].value) + 1;
    if (!total)
        return;
    st->md_copy = xmalloc(total);
    char *p = st->md_copy;
    for (size_t i = 0; i < st->nmd; i++) {
        size_t n = GRPC_SLICE_LENGTH(st->md[i].value);
        memcpy(p, GRPC_SLICE_START_PTR(st->md[i].value), n);
        p[n] = '\0';
        st->md[i].value = grpc_slice_from_static_buffer(p, n);
        p += n + 1;
    }
}

err_code rpc_client_call_async(rpc_client *c, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                               arena *a, rpc_client_done done, void *arg, err_info *e)
{
    err_info local;
    if (!e)
        e = &local;
    err_clear(e);
    if (!a || !resp_desc || !done)
        return err_set(e, ERR_INVALID_ARGUMENT, "rpc_client: arena, descriptor and done required");
    pthread_mutex_lock(&c->mu);
    if (!c->athr_started) {
        c->acq = grpc_completion_queue_create_for_next(NULL);
        int prc = pthread_create(&c->athr, NULL, async_thread, c);
        if (prc != 0) {
            grpc_completion_queue_destroy(c->acq);
            c->acq = NULL;
            pthread_mutex_unlock(&c->mu);
            return err_set(e, ERR_INTERNAL, "rpc_client %s: cannot start its thread", c->name);
        }
        c->athr_started = true;
    }
    pthread_mutex_unlock(&c->mu);

    call_state *st = xcalloc(1, sizeof *st);
    build_metadata(st, o);
    copy_metadata(st);
    st->c = c;
    st->resp_desc = resp_desc;
    st->a = a;
    st->done = done;
    st->arg = arg;
    err_code rc = call_start(c, method, req, o, c->acq, st, e);
    if (rc != ERR_OK) {
        free(st->md_copy);
        free(st);
    }
    return rc;
}
