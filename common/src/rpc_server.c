/* rpc_server: serves a table of unary protobuf-c methods on the gRPC C core (one shared completion
 * queue, N worker threads), with Health built in, plus the id/trace/status helpers rpc_client
 * shares. */
#include "common/rpc_server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc_internal.h"

#define HEALTH_CHECK "/grpc.health.v1.Health/Check"
/* Requests kept posted per method: calls beyond these wait in the core's queue until a worker
 * re-posts (each arrival re-posts at once), so this bounds memory, not concurrency. */
#define RPC_POSTED_PER_METHOD 64
#define RPC_POSTED_GENERIC 2

/* ---------------------------------------------------------------------------------------------
 * Shared helpers (declared in rpc_internal.h)
 * ------------------------------------------------------------------------------------------- */

/* Debian builds abseil without NDEBUG, so every absl::Mutex inside gRPC keeps a lock graph for
 * deadlock detection (GraphCycles, ~3 % of a gateway request in perf). gRPC's own builds run with
 * it off; so do we. The C++ setter is reached by its mangled name, weakly: an abseil without it
 * (another inline namespace) simply keeps its default. */
extern void _ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE(int)
    __attribute__((weak));

void rpc_grpc_init(void)
{
    if (_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE)
        _ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE(0 /* kIgnore */);
    grpc_init();
}

static _Thread_local uint64_t rng_state;
static _Thread_local int rng_seeded;

/* splitmix64: fast, good enough for ids (they need uniqueness, not secrecy). */
static uint64_t rng_next(void)
{
    if (!rng_seeded) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&ts;
        }
        rng_state = seed;
        rng_seeded = 1;
    }
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void rpc_rand_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    while (n) {
        uint64_t r = rng_next();
        size_t k = n < 8 ? n : 8;
        memcpy(p, &r, k);
        p += k;
        n -= k;
    }
}

static const char hexd[] = "0123456789abcdef";

void rpc_rand_hex(char *out, size_t nbytes)
{
    unsigned char b[64];
    if (nbytes > sizeof b)
        nbytes = sizeof b;
    rpc_rand_bytes(b, nbytes);
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hexd[b[i] >> 4];
        out[2 * i + 1] = hexd[b[i] & 15];
    }
    out[2 * nbytes] = '\0';
}

void rpc_uuid4(char out[37])
{
    unsigned char b[16];
    rpc_rand_bytes(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hexd[b[i] >> 4];
        out[o++] = hexd[b[i] & 15];
    }
    out[o] = '\0';
}

bool rpc_request_id_ok(const char *s, size_t len)
{
    if (len == 0 || len > RPC_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' || ch == '-';
        if (!ok)
            return false;
    }
    return true;
}

static bool lower_hex(const char *s, size_t n, bool *all_zero)
{
    bool z = true;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return false;
        if (ch != '0')
            z = false;
    }
    if (all_zero)
        *all_zero = z;
    return true;
}

bool rpc_traceparent_parse(const char *s, size_t len, char trace_id[33], char span_id[17],
                           char flags[3])
{
    /* 00-<32>-<16>-<2> = 55 chars; version 00 is the only one we know (future versions may
     * append fields, but we then make a fresh trace rather than guess). */
    bool z1, z2;
    if (len != 55 || s[0] != '0' || s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return false;
    if (!lower_hex(s + 3, 32, &z1) || !lower_hex(s + 36, 16, &z2) || !lower_hex(s + 53, 2, NULL))
        return false;
    if (z1 || z2)
        return false;
    memcpy(trace_id, s + 3, 32);
    trace_id[32] = '\0';
    memcpy(span_id, s + 36, 16);
    span_id[16] = '\0';
    memcpy(flags, s + 53, 2);
    flags[2] = '\0';
    return true;
}

uint8_t *rpc_status_details_encode(arena *a, err_code code, const char *msg, const err_info *e,
                                   size_t *len)
{
    *len = 0;
    if (!e || (e->nviolations == 0 && e->retry_after_s <= 0))
        return NULL;
    Google__Protobuf__Any anys[2];
    Google__Protobuf__Any *anyp[2];
    size_t nany = 0;

    if (e->nviolations) {
        size_t nv = e->nviolations > ERR_MAX_VIOLATIONS ? ERR_MAX_VIOLATIONS : e->nviolations;
        Google__Rpc__BadRequest__FieldViolation *fv = arena_alloc(a, nv * sizeof *fv);
        Google__Rpc__BadRequest__FieldViolation **fvp = arena_alloc(a, nv * sizeof *fvp);
        for (size_t i = 0; i < nv; i++) {
            google__rpc__bad_request__field_violation__init(&fv[i]);
            fv[i].field = arena_strndup(a, e->violations[i].field, sizeof e->violations[i].field);
            fv[i].description =
                arena_strndup(a, e->violations[i].description, sizeof e->violations[i].description);
            fvp[i] = &fv[i];
        }
        Google__Rpc__BadRequest br = GOOGLE__RPC__BAD_REQUEST__INIT;
        br.n_field_violations = nv;
        br.field_violations = fvp;
        size_t n = google__rpc__bad_request__get_packed_size(&br);
        uint8_t *buf = arena_alloc(a, n);
        google__rpc__bad_request__pack(&br, buf);
        google__protobuf__any__init(&anys[nany]);
        anys[nany].type_url = "type.googleapis.com/google.rpc.BadRequest";
        anys[nany].value.data = buf;
        anys[nany].value.len = n;
        anyp[nany] = &anys[nany];
        nany++;
    }
    if (e->retry_after_s > 0) {
        Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
        d.seconds = e->retry_after_s;
        Google__Rpc__RetryInfo ri = GOOGLE__RPC__RETRY_INFO__INIT;
        ri.retry_delay = &d;
        size_t n = google__rpc__retry_info__get_packed_size(&ri);
        uint8_t *buf = arena_alloc(a, n);
        google__rpc__retry_info__pack(&ri, buf);
        google__protobuf__any__init(&anys[nany]);
        anys[nany].type_url = "type.googleapis.com/google.rpc.RetryInfo";
        anys[nany].value.data = buf;
        anys[nany].value.len = n;
        anyp[nany] = &anys[nany];
        nany++;
    }
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = (int32_t)code;
    st.message = (char *)(msg ? msg : "");
    st.n_details = nany;
    st.details = anyp;
    size_t n = google__rpc__status__get_packed_size(&st);
    uint8_t *out = arena_alloc(a, n ? n : 1);
    google__rpc__status__pack(&st, out);
    *len = n;
    return out;
}

bool rpc_status_details_decode(const uint8_t *p, size_t len, err_info *e)
{
    Google__Rpc__Status *st = google__rpc__status__unpack(NULL, len, p);
    if (!st)
        return false;
    for (size_t i = 0; i < st->n_details; i++) {
        const Google__Protobuf__Any *any = st->details[i];
        const char *t = any->type_url ? any->type_url : "";
        const char *slash = strrchr(t, '/');
        const char *name = slash ? slash + 1 : t;
        if (strcmp(name, "google.rpc.BadRequest") == 0) {
            Google__Rpc__BadRequest *br =
                google__rpc__bad_request__unpack(NULL, any->value.len, any->value.data);
            if (!br)
                continue;
            for (size_t j = 0; j < br->n_field_violations && e->nviolations < ERR_MAX_VIOLATIONS;
                 j++) {
                err_violation *v = &e->violations[e->nviolations++];
                snprintf(v->field, sizeof v->field, "%s", br->field_violations[j]->field);
                snprintf(v->description, sizeof v->description, "%s",
                         br->field_violations[j]->description);
            }
            google__rpc__bad_request__free_unpacked(br, NULL);
        } else if (strcmp(name, "google.rpc.RetryInfo") == 0) {
            Google__Rpc__RetryInfo *ri =
                google__rpc__retry_info__unpack(NULL, any->value.len, any->value.data);
            if (!ri)
                continue;
            if (ri->retry_delay) {
                int64_t s = ri->retry_delay->seconds + (ri->retry_delay->nanos > 0 ? 1 : 0);
                e->retry_after_s = s > 0 ? (s > 86400 ? 86400 : (int)s) : 0;
            }
            google__rpc__retry_info__free_unpacked(ri, NULL);
        }
    }
    google__rpc__status__free_unpacked(st, NULL);
    return true;
}

err_code rpc_code_from_int(int code)
{
    if (code < 0 || code > ERR_UNAUTHENTICATED)
        return ERR_UNKNOWN;
    return (err_code)code;
}

int64_t rpc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t rpc_deadline_to_ms(gpr_timespec t)
{
    if (gpr_time_cmp(t, gpr_inf_future(t.clock_type)) == 0)
        return INT64_MAX;
    gpr_timespec mono = gpr_convert_clock_type(t, GPR_CLOCK_MONOTONIC);
    gpr_timespec left = gpr_time_sub(mono, gpr_now(GPR_CLOCK_MONOTONIC));
    int64_t left_ms = (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return rpc_now_ms() + left_ms;
}

gpr_timespec rpc_ms_to_deadline(int64_t ms)
{
    if (ms == INT64_MAX)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    int64_t left = ms - rpc_now_ms();
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(left, GPR_TIMESPAN));
}

/* ---------------------------------------------------------------------------------------------
 * The server
 * ------------------------------------------------------------------------------------------- */

/* Every completion-queue tag points at one of these as its first member. */
typedef enum tag_kind {
    TAG_CALL_NEW,
    TAG_CALL_DONE,
    TAG_GENERIC_NEW,
    TAG_GENERIC_DONE,
    TAG_CALL_CLOSED, /* rpc_watch_cancel's RECV_CLOSE_ON_SERVER (srv_call.close_tag) */
    TAG_SHUTDOWN
} tag_kind;

typedef struct srv_method {
    rpc_method m;
    void *handle;
    bool health;
} srv_method;

typedef struct srv_call {
    tag_kind kind;
    rpc_server *s;
    srv_method *method; /* NULL for an unknown method */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* unknown methods only */
    rpc_ctx ctx;
    const ProtobufCMessage *req; /* the unpacked request (ctx->arena), for rpc_continue */
    rpc_handler cont;            /* what a worker runs next (blocking handler, rpc_continue) */
    struct srv_call *wnext;      /* the workers' queue */
    int64_t start_ns;
    int cancelled;
    /* rpc_watch_cancel: RECV_CLOSE_ON_SERVER in its own batch, tagged with close_tag; the call
     * is finished when both it and the reply batch completed (ends). */
    tag_kind close_tag;
    bool watching;
    atomic_bool gone; /* the close completed with cancelled = 1 */
    atomic_int ends;
    err_code code;
    grpc_byte_buffer *resp_buf;
    grpc_slice status_msg;
    bool has_status_msg;
    grpc_metadata init_md[1];
    size_t ninit;
    grpc_metadata trail_md[1];
    size_t ntrail;
    bool counted;              /* holds a max_inflight slot */
    char err_msg[ERR_MSG_LEN]; /* for the log line */
} srv_call;

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    srv_method *methods;
    size_t nmethods;
    /* One thread polls the completion queue: every arrival, completion and nonblocking handler.
     * Handlers that block run on the workers (nthreads), fed by a queue: two threads polling one
     * queue hand the polling back and forth with a futex wake per event. */
    pthread_t poller;
    bool poller_started;
    int nthreads;
    pthread_t *tids;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    struct srv_call *whead, *wtail;
    int widle;  /* workers waiting on wcv */
    bool wstop; /* workers exit once the queue is empty */
    int port;
    int max_msg, max_inflight;
    char *addr, *service_name;
    void *state;
    void (*on_call_done)(void *arg, const char *method, err_code code, double seconds);
    void *on_call_done_arg;

    atomic_bool serving;
    atomic_bool shutting_down;
    atomic_int inflight; /* calls between arrival and reply done (max_inflight) */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    tag_kind shutdown_tag;
    bool shutdown_tag_seen;
    int live; /* srv_call structs alive (posted or in progress); guarded by mu */
    bool started, stopping, stopped;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void live_add(rpc_server *s, int d)
{
    pthread_mutex_lock(&s->mu);
    s->live += d;
    if (s->live == 0)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void call_free(srv_call *c)
{
    rpc_server *s = c->s;
    if (c->call)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->resp_buf)
        grpc_byte_buffer_destroy(c->resp_buf);
    if (c->has_status_msg)
        grpc_slice_unref(c->status_msg);
    for (size_t i = 0; i < c->ninit; i++)
        grpc_slice_unref(c->init_md[i].value);
    for (size_t i = 0; i < c->ntrail; i++)
        grpc_slice_unref(c->trail_md[i].value);
    if (c->kind == TAG_GENERIC_NEW || c->kind == TAG_GENERIC_DONE)
        grpc_call_details_destroy(&c->details);
    if (c->counted)
        atomic_fetch_sub(&s->inflight, 1);
    arena_free(c->ctx.arena);
    free(c);
    live_add(s, -1);
}

static void post_method(rpc_server *s, srv_method *m)
{
    srv_call *c = xcalloc(1, sizeof *c);
    c->kind = TAG_CALL_NEW;
    c->s = s;
    c->method = m;
    grpc_metadata_array_init(&c->md);
    live_add(s, 1);
    grpc_call_error r = grpc_server_request_registered_call(
        s->server, m->handle, &c->call, &c->deadline, &c->md, &c->payload, s->cq, s->cq, c);
    if (r != GRPC_CALL_OK)
        call_free(c);
}

static void post_generic(rpc_server *s)
{
    srv_call *c = xcalloc(1, sizeof *c);
    c->kind = TAG_GENERIC_NEW;
    c->s = s;
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    live_add(s, 1);
    grpc_call_error r =
        grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq, c);
    if (r != GRPC_CALL_OK)
        call_free(c);
}

static bool slice_eq(grpc_slice sl, const char *lit, size_t n)
{
    return GRPC_SLICE_LENGTH(sl) == n && memcmp(GRPC_SLICE_START_PTR(sl), lit, n) == 0;
}

#define KEY_IS(sl, lit) slice_eq((sl), lit, sizeof(lit) - 1)

/* Copies a metadata value into the arena, capped (a header is no place for a novel). */
static const char *md_copy(arena *a, grpc_slice v, size_t cap)
{
    size_t n = GRPC_SLICE_LENGTH(v);
    if (n > cap)
        n = cap;
    return arena_strndup(a, (const char *)GRPC_SLICE_START_PTR(v), n);
}

/* Metadata → ctx (copied into the arena: the slices die with the call), ids made or checked. */
static void read_metadata(srv_call *c)
{
    rpc_ctx *ctx = &c->ctx;
    arena *a = ctx->arena;
    const char *ua = NULL, *xua = NULL;
    /* Slices, not pointers into them: short values are inlined in the grpc_slice itself. */
    grpc_slice rid = grpc_empty_slice(), tp = grpc_empty_slice();
    bool have_rid = false, have_tp = false;

    ctx->md.authorization = ctx->md.client_ip = ctx->md.actor_id = "";
    for (size_t i = 0; i < c->md.count; i++) {
        grpc_slice k = c->md.metadata[i].key, v = c->md.metadata[i].value;
        if (KEY_IS(k, "x-request-id")) {
            rid = v;
            have_rid = true;
        } else if (KEY_IS(k, "traceparent")) {
            tp = v;
            have_tp = true;
        } else if (KEY_IS(k, "authorization")) {
            ctx->md.authorization = md_copy(a, v, 8192);
        } else if (KEY_IS(k, "x-user-agent")) {
            xua = md_copy(a, v, 512);
        } else if (KEY_IS(k, "user-agent")) {
            ua = md_copy(a, v, 512);
        } else if (KEY_IS(k, "x-client-ip")) {
            ctx->md.client_ip = md_copy(a, v, 64);
        } else if (KEY_IS(k, "x-actor-id")) {
            ctx->md.actor_id = md_copy(a, v, 128);
        }
    }
    ctx->md.user_agent = xua && *xua ? xua : (ua ? ua : "");

    if (have_rid &&
        rpc_request_id_ok((const char *)GRPC_SLICE_START_PTR(rid), GRPC_SLICE_LENGTH(rid))) {
        ctx->md.request_id = md_copy(a, rid, RPC_REQUEST_ID_MAX);
    } else {
        char *u = arena_alloc(a, 37);
        rpc_uuid4(u);
        ctx->md.request_id = u;
    }

    char parent_span[17], flags[3];
    rpc_rand_hex(ctx->span_id, 8);
    if (have_tp &&
        rpc_traceparent_parse((const char *)GRPC_SLICE_START_PTR(tp), GRPC_SLICE_LENGTH(tp),
                              ctx->trace_id, parent_span, flags)) {
        ctx->md.traceparent = md_copy(a, tp, 55);
    } else {
        rpc_rand_hex(ctx->trace_id, 16);
        ctx->md.traceparent = arena_printf(a, "00-%s-%s-01", ctx->trace_id, ctx->span_id);
    }
    ctx->log.request_id = ctx->md.request_id;
    ctx->log.trace_id = ctx->trace_id;
    ctx->log.span_id = ctx->span_id;
}

static srv_call *call_of(rpc_ctx *ctx)
{
    return (srv_call *)(void *)((char *)ctx - offsetof(srv_call, ctx));
}

static err_code health_check(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                             err_info *e)
{
    srv_call *c = call_of(ctx);
    rpc_server *s = c->s;
    const Grpc__Health__V1__HealthCheckRequest *r =
        (const Grpc__Health__V1__HealthCheckRequest *)req;
    if (r->service[0] && !(s->service_name && strcmp(r->service, s->service_name) == 0))
        return err_set(e, ERR_NOT_FOUND, "unknown service %.100s", r->service);
    Grpc__Health__V1__HealthCheckResponse *out = arena_alloc(ctx->arena, sizeof *out);
    grpc__health__v1__health_check_response__init(out);
    out->status = atomic_load(&s->serving)
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    *resp = &out->base;
    return ERR_OK;
}

grpc_call *rpc_ctx_grpc_call(const rpc_ctx *ctx)
{
    return ctx ? (grpc_call *)ctx->call : NULL;
}

/* A handler's result as a status: RPC_PENDING passes through, anything else is checked (a
 * known code; a response of the method's type on success). */
static err_code check_result(srv_call *c, int raw, ProtobufCMessage **resp, err_info *e)
{
    if (raw == (int)RPC_PENDING)
        return RPC_PENDING;
    srv_method *m = c->method;
    err_code rc = rpc_code_from_int(raw);
    if (rc != ERR_OK) {
        *resp = NULL;
        if (raw != (int)rc) {
            e->code = rc;
            snprintf(e->msg, sizeof e->msg, "handler returned invalid status %d", raw);
        }
        return rc;
    }
    if (!*resp)
        return err_set(e, ERR_INTERNAL, "handler returned no response");
    if ((*resp)->descriptor != m->m.resp) {
        const char *got = (*resp)->descriptor ? (*resp)->descriptor->name : "?";
        *resp = NULL;
        return err_set(e, ERR_INTERNAL, "handler returned a %s, want a %s", got, m->m.resp->name);
    }
    return ERR_OK;
}

/* Tells the workers to exit once their queue is empty, and joins them. */
static void workers_stop(rpc_server *s)
{
    pthread_mutex_lock(&s->wmu);
    s->wstop = true;
    pthread_cond_broadcast(&s->wcv);
    pthread_mutex_unlock(&s->wmu);
    for (int i = 0; i < s->nthreads; i++)
        pthread_join(s->tids[i], NULL);
}

/* Queues c for a worker, which runs fn(ctx, req) as a handler. */
static void work_push(srv_call *c, rpc_handler fn)
{
    rpc_server *s = c->s;
    c->cont = fn;
    c->wnext = NULL;
    pthread_mutex_lock(&s->wmu);
    if (s->wtail)
        s->wtail->wnext = c;
    else
        s->whead = c;
    s->wtail = c;
    if (s->widle > 0)
        pthread_cond_signal(&s->wcv);
    pthread_mutex_unlock(&s->wmu);
}

/* Runs the handler (or the refusal) and fills code/e/response; RPC_PENDING = answered later. */
static err_code dispatch(srv_call *c, err_info *e, ProtobufCMessage **resp)
{
    rpc_server *s = c->s;
    srv_method *m = c->method;
    rpc_ctx *ctx = &c->ctx;

    if (atomic_fetch_add(&s->inflight, 1) >= s->max_inflight) {
        atomic_fetch_sub(&s->inflight, 1);
        e->retry_after_s = 1;
        return err_set(e, ERR_RESOURCE_EXHAUSTED, "server busy: %d calls in flight",
                       s->max_inflight);
    }
    c->counted = true;

    if (!c->payload)
        return err_set(e, ERR_INVALID_ARGUMENT, "request message missing");
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, c->payload))
        return err_set(e, ERR_INVALID_ARGUMENT, "request message unreadable");
    grpc_slice body = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    ProtobufCAllocator alloc;
    arena_pb_allocator(ctx->arena, &alloc);
    ProtobufCMessage *req = protobuf_c_message_unpack(m->m.req, &alloc, GRPC_SLICE_LENGTH(body),
                                                      GRPC_SLICE_START_PTR(body));
    grpc_slice_unref(body);
    grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    if (!req)
        return err_set(e, ERR_INVALID_ARGUMENT, "malformed request message (%s)", m->m.req->name);
    c->req = req;

    if (!m->m.nonblocking) {
        work_push(c, m->m.handler);
        return RPC_PENDING;
    }
    *resp = NULL;
    int raw = (int)m->m.handler(ctx, req, resp, e);
    return check_result(c, raw, resp, e);
}

static void log_call(srv_call *c, const char *method, double secs)
{
    log_level lvl = LOG_INFO;
    if (c->code == ERR_INTERNAL || c->code == ERR_UNKNOWN || c->code == ERR_DATA_LOSS)
        lvl = LOG_ERROR;
    else if (c->method && c->method->health)
        lvl = LOG_DEBUG; /* probes every few seconds would drown the log */
    if (lvl < log_min_level)
        return;
    char mjs[200], ejs[ERR_MSG_LEN * 2 + 8], kv[1024];
    log_json_str(mjs, sizeof mjs, method);
    if (c->code != ERR_OK && c->err_msg[0]) {
        log_json_str(ejs, sizeof ejs, c->err_msg);
        snprintf(kv, sizeof kv,
                 "\"method\":%s,\"grpc_code\":\"%s\",\"duration_ms\":%.3f,\"error\":%s", mjs,
                 err_str(c->code), secs * 1e3, ejs);
    } else {
        snprintf(kv, sizeof kv, "\"method\":%s,\"grpc_code\":\"%s\",\"duration_ms\":%.3f", mjs,
                 err_str(c->code), secs * 1e3);
    }
    log_emit(lvl, c->ctx.arena ? &c->ctx.log : NULL, kv, "rpc");
}

/* Sends the whole answer (initial metadata, message or status with details) in one batch; the
 * call is freed when that batch completes (TAG_CALL_DONE). */
static void send_reply(srv_call *c, err_code rc, ProtobufCMessage *resp, err_info *ep)
{
    rpc_ctx *ctx = &c->ctx;
    err_info e = *ep;
    c->code = rc;
    c->kind = TAG_CALL_DONE;

    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t nops = 0;

    c->init_md[0].key = grpc_slice_from_static_string("x-request-id");
    c->init_md[0].value = grpc_slice_from_copied_string(ctx->md.request_id);
    c->ninit = 1;
    ops[nops].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[nops].data.send_initial_metadata.count = c->ninit;
    ops[nops].data.send_initial_metadata.metadata = c->init_md;
    nops++;

    if (rc == ERR_OK) {
        size_t n = protobuf_c_message_get_packed_size(resp);
        grpc_slice sl = grpc_slice_malloc(n);
        protobuf_c_message_pack(resp, GRPC_SLICE_START_PTR(sl));
        c->resp_buf = grpc_raw_byte_buffer_create(&sl, 1);
        grpc_slice_unref(sl);
        ops[nops].op = GRPC_OP_SEND_MESSAGE;
        ops[nops].data.send_message.send_message = c->resp_buf;
        nops++;
    } else {
        const char *msg = e.msg[0] ? e.msg : err_str(rc);
        snprintf(c->err_msg, sizeof c->err_msg, "%s", msg);
        c->status_msg = grpc_slice_from_copied_string(msg);
        c->has_status_msg = true;
        size_t dlen;
        uint8_t *det = rpc_status_details_encode(ctx->arena, rc, msg, &e, &dlen);
        if (det) {
            c->trail_md[0].key = grpc_slice_from_static_string(RPC_MD_STATUS_DETAILS);
            c->trail_md[0].value = grpc_slice_from_copied_buffer((const char *)det, dlen);
            c->ntrail = 1;
        }
    }
    ops[nops].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[nops].data.send_status_from_server.status = (grpc_status_code)rc;
    ops[nops].data.send_status_from_server.status_details =
        c->has_status_msg ? &c->status_msg : NULL;
    ops[nops].data.send_status_from_server.trailing_metadata_count = c->ntrail;
    ops[nops].data.send_status_from_server.trailing_metadata = c->ntrail ? c->trail_md : NULL;
    nops++;
    if (!c->watching) {
        ops[nops].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[nops].data.recv_close_on_server.cancelled = &c->cancelled;
        nops++;
    }

    grpc_call_error r = grpc_call_start_batch(c->call, ops, nops, c, NULL);
    if (r != GRPC_CALL_OK) {
        log_error(&ctx->log, "rpc %s: start_batch failed (%d)", ctx->method, (int)r);
        c->code = ERR_INTERNAL;
        if (c->watching) {
            /* The close batch is still out: it finishes the call. */
            grpc_call_cancel(c->call, NULL);
            if (atomic_fetch_sub(&c->ends, 1) == 1)
                call_free(c);
            return;
        }
        call_free(c);
    }
}

/* A registered call arrived: re-post, run the handler, send everything in one batch. */
static void on_call_new(srv_call *c)
{
    rpc_server *s = c->s;
    if (!atomic_load(&s->shutting_down))
        post_method(s, c->method);

    c->start_ns = now_ns();
    c->kind = TAG_CALL_DONE;
    rpc_ctx *ctx = &c->ctx;
    ctx->arena = arena_new(0);
    ctx->method = c->method->m.name;
    ctx->call = c->call;
    ctx->state = s->state;
    read_metadata(c);
    ctx->deadline_ms = rpc_deadline_to_ms(c->deadline);

    err_info e;
    err_clear(&e);
    ProtobufCMessage *resp = NULL;
    err_code rc = dispatch(c, &e, &resp);
    if (rc != RPC_PENDING)
        send_reply(c, rc, resp, &e);
}

void rpc_reply(rpc_ctx *ctx, err_code code, ProtobufCMessage *resp, const err_info *e)
{
    srv_call *c = call_of(ctx);
    err_info ce;
    err_clear(&ce);
    if (e && code != ERR_OK)
        ce = *e;
    err_code rc = check_result(c, (int)code, &resp, &ce);
    if (rc == RPC_PENDING) /* not an answer: a bug in the caller; never leave the call hanging */
        rc = err_set(&ce, ERR_INTERNAL, "rpc_reply with RPC_PENDING");
    send_reply(c, rc, resp, &ce);
}

void rpc_continue(rpc_ctx *ctx, rpc_handler fn)
{
    work_push(call_of(ctx), fn);
}

/* On a worker: a blocking handler, or the blocking part of an asynchronous one. */
static void on_call_continue(srv_call *c)
{
    err_info e;
    err_clear(&e);
    ProtobufCMessage *resp = NULL;
    int raw = (int)c->cont(&c->ctx, c->req, &resp, &e);
    err_code rc = check_result(c, raw, &resp, &e);
    if (rc != RPC_PENDING)
        send_reply(c, rc, resp, &e);
}

void rpc_watch_cancel(rpc_ctx *ctx)
{
    srv_call *c = call_of(ctx);
    if (c->watching)
        return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    c->close_tag = TAG_CALL_CLOSED;
    atomic_store(&c->ends, 2);
    c->watching = true;
    if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) {
        c->watching = false; /* the reply batch will ask for the close as before */
        atomic_store(&c->ends, 1);
    }
}

bool rpc_ctx_cancelled(const rpc_ctx *ctx)
{
    if (ctx->deadline_ms != INT64_MAX && rpc_now_ms() >= ctx->deadline_ms)
        return true;
    /* A ctx made outside rpc_server (tests) has no call behind it. */
    return ctx->call && atomic_load(&call_of((rpc_ctx *)ctx)->gone);
}

static void call_end(srv_call *c);

/* The watched close: the client cancelled (or the answer went out); the call ends when the
 * reply batch did too. */
static void on_call_closed(srv_call *c)
{
    if (c->cancelled)
        atomic_store(&c->gone, true);
    if (atomic_fetch_sub(&c->ends, 1) == 1)
        call_end(c);
}

static void on_call_done(srv_call *c)
{
    if (c->watching && atomic_fetch_sub(&c->ends, 1) != 1)
        return; /* the close completes later and ends the call */
    call_end(c);
}

static void call_end(srv_call *c)
{
    rpc_server *s = c->s;
    double secs = (double)(now_ns() - c->start_ns) / 1e9;
    if (c->cancelled && c->code == ERR_OK) {
        /* The client went away before our answer: report what it saw. */
        c->code = c->ctx.deadline_ms != INT64_MAX && rpc_now_ms() >= c->ctx.deadline_ms
                      ? ERR_DEADLINE_EXCEEDED
                      : ERR_CANCELLED;
    }
    log_call(c, c->ctx.method, secs);
    if (s->on_call_done)
        s->on_call_done(s->on_call_done_arg, c->ctx.method, c->code, secs);
    call_free(c);
}

/* An unknown method: answer UNIMPLEMENTED at once (else the client waits for its deadline). */
static void on_generic_new(srv_call *c)
{
    rpc_server *s = c->s;
    if (!atomic_load(&s->shutting_down))
        post_generic(s);
    c->start_ns = now_ns();
    c->kind = TAG_GENERIC_DONE;
    c->code = ERR_UNIMPLEMENTED;
    size_t mlen = GRPC_SLICE_LENGTH(c->details.method);
    if (mlen > 120)
        mlen = 120;
    char name[128];
    memcpy(name, GRPC_SLICE_START_PTR(c->details.method), mlen);
    name[mlen] = '\0';
    snprintf(c->err_msg, sizeof c->err_msg, "unknown method %s", name);
    c->status_msg = grpc_slice_from_copied_string(c->err_msg);
    c->has_status_msg = true;

    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[1].data.send_status_from_server.status_details = &c->status_msg;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, ops, 3, c, NULL) != GRPC_CALL_OK)
        call_free(c);
}

static void on_generic_done(srv_call *c)
{
    rpc_server *s = c->s;
    double secs = (double)(now_ns() - c->start_ns) / 1e9;
    char name[128];
    size_t mlen = GRPC_SLICE_LENGTH(c->details.method);
    if (mlen > 120)
        mlen = 120;
    memcpy(name, GRPC_SLICE_START_PTR(c->details.method), mlen);
    name[mlen] = '\0';
    log_call(c, name, secs);
    if (s->on_call_done)
        s->on_call_done(s->on_call_done_arg, name, c->code, secs);
    call_free(c);
}

static void *worker(void *arg)
{
    rpc_server *s = arg;
    pthread_setname_np(pthread_self(), "rpc-worker"); /* top -H, perf, gdb */
    for (;;) {
        pthread_mutex_lock(&s->wmu);
        while (!s->whead && !s->wstop) {
            s->widle++;
            pthread_cond_wait(&s->wcv, &s->wmu);
            s->widle--;
        }
        srv_call *c = s->whead;
        if (c) {
            s->whead = c->wnext;
            if (!s->whead)
                s->wtail = NULL;
        }
        pthread_mutex_unlock(&s->wmu);
        if (!c)
            break; /* stopping, and nothing left */
        on_call_continue(c);
    }
    return NULL;
}

static void *poller(void *arg)
{
    rpc_server *s = arg;
    pthread_setname_np(pthread_self(), "rpc-poll");
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        tag_kind *k = ev.tag;
        if (*k == TAG_SHUTDOWN) {
            pthread_mutex_lock(&s->mu);
            s->shutdown_tag_seen = true;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        if (*k == TAG_CALL_CLOSED) {
            on_call_closed((srv_call *)(void *)((char *)k - offsetof(srv_call, close_tag)));
            continue;
        }
        srv_call *c = (srv_call *)(void *)k;
        switch (*k) {
        case TAG_CALL_NEW:
            if (ev.success)
                on_call_new(c);
            else
                call_free(c); /* request withdrawn: shutting down */
            break;
        case TAG_GENERIC_NEW:
            if (ev.success)
                on_generic_new(c);
            else
                call_free(c);
            break;
        case TAG_CALL_DONE:
            on_call_done(c);
            break;
        case TAG_GENERIC_DONE:
            on_generic_done(c);
            break;
        default:
            break;
        }
    }
    return NULL;
}

rpc_server *rpc_server_new(const rpc_server_opts *opts, const rpc_method *methods, size_t n,
                           err_info *e)
{
    err_clear(e);
    if (!opts || !opts->addr || !*opts->addr) {
        err_set(e, ERR_INVALID_ARGUMENT, "rpc_server: listen address required");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const rpc_method *m = &methods[i];
        if (!m->name || m->name[0] != '/' || !m->req || !m->resp || !m->handler) {
            err_set(e, ERR_INVALID_ARGUMENT, "rpc_server: method %zu (%s) incomplete", i,
                    m->name ? m->name : "?");
            return NULL;
        }
    }
    rpc_grpc_init();
    rpc_server *s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pthread_cond_init(&s->wcv, NULL);
    s->shutdown_tag = TAG_SHUTDOWN;
    s->nthreads = opts->threads > 0 ? opts->threads : 2;
    s->max_msg = opts->max_message_bytes > 0 ? opts->max_message_bytes : 4 * 1024 * 1024;
    s->max_inflight = opts->max_inflight > 0 ? opts->max_inflight : 1000;
    s->addr = xstrdup(opts->addr);
    s->service_name = opts->service_name ? xstrdup(opts->service_name) : NULL;
    s->state = opts->state;
    s->on_call_done = opts->on_call_done;
    s->on_call_done_arg = opts->on_call_done_arg;

    grpc_arg args[3];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[0].value.integer = 0;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = s->max_msg;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[2].value.integer = s->max_msg;
    grpc_channel_args ca = {3, args};

    s->cq = grpc_completion_queue_create_for_next(NULL);
    s->server = grpc_server_create(&ca, NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);

    bool has_health = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(methods[i].name, HEALTH_CHECK) == 0)
            has_health = true;
    s->methods = xcalloc(n + 1, sizeof *s->methods);
    for (size_t i = 0; i < n; i++)
        s->methods[s->nmethods++].m = methods[i];
    if (!has_health) {
        srv_method *h = &s->methods[s->nmethods++];
        h->m.name = HEALTH_CHECK;
        h->m.req = &grpc__health__v1__health_check_request__descriptor;
        h->m.resp = &grpc__health__v1__health_check_response__descriptor;
        h->m.handler = health_check;
        h->m.nonblocking = true;
        h->health = true;
    }
    for (size_t i = 0; i < s->nmethods; i++) {
        srv_method *m = &s->methods[i];
        m->handle = grpc_server_register_method(s->server, m->m.name, NULL,
                                                GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!m->handle) {
            err_set(e, ERR_INVALID_ARGUMENT, "rpc_server: cannot register %s (duplicate?)",
                    m->m.name);
            rpc_server_free(s);
            return NULL;
        }
    }
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    s->port = grpc_server_add_http2_port(s->server, s->addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0) {
        err_set(e, ERR_UNAVAILABLE, "rpc_server: cannot listen on %s (port in use or bad address)",
                s->addr);
        rpc_server_free(s);
        return NULL;
    }
    return s;
}

void rpc_server_set_state(rpc_server *s, void *state)
{
    s->state = state;
}

err_code rpc_server_start(rpc_server *s, err_info *e)
{
    err_clear(e);
    if (s->started)
        return err_set(e, ERR_FAILED_PRECONDITION, "rpc_server: already started");
    grpc_server_start(s->server);
    s->started = true;
    for (size_t i = 0; i < s->nmethods; i++) {
        int k = s->methods[i].health ? 4 : RPC_POSTED_PER_METHOD;
        for (int j = 0; j < k; j++)
            post_method(s, &s->methods[i]);
    }
    for (int j = 0; j < RPC_POSTED_GENERIC; j++)
        post_generic(s);
    s->tids = xcalloc((size_t)s->nthreads, sizeof *s->tids);
    for (int i = 0; i < s->nthreads; i++) {
        int rc = pthread_create(&s->tids[i], NULL, worker, s);
        if (rc != 0) {
            /* Fewer workers still serve; none would hang every blocking call. */
            log_error(NULL, "rpc_server: cannot start worker %d: %s", i, strerror(rc));
            s->nthreads = i;
            break;
        }
    }
    int rc = s->nthreads == 0 ? -1 : pthread_create(&s->poller, NULL, poller, s);
    if (rc != 0) {
        /* Nothing would answer: stop the workers again; rpc_server_free still drains the queue. */
        workers_stop(s);
        s->nthreads = 0;
        return err_set(e, ERR_INTERNAL, "rpc_server: cannot start its threads");
    }
    s->poller_started = true;
    atomic_store(&s->serving, true);
    return ERR_OK;
}

int rpc_server_port(const rpc_server *s)
{
    return s ? s->port : 0;
}

void rpc_server_set_serving(rpc_server *s, bool serving)
{
    atomic_store(&s->serving, serving);
}

static bool shutdown_done_locked(rpc_server *s)
{
    return s->shutdown_tag_seen && s->live == 0;
}

/* Waits until the shutdown tag came back and every call struct is gone, or until deadline (a
 * CLOCK_REALTIME timespec; NULL = no limit). Returns true when done. */
static bool wait_drained(rpc_server *s, const struct timespec *deadline)
{
    bool done;
    pthread_mutex_lock(&s->mu);
    while (!(done = shutdown_done_locked(s))) {
        if (deadline) {
            if (pthread_cond_timedwait(&s->cv, &s->mu, deadline) == ETIMEDOUT) {
                done = shutdown_done_locked(s);
                break;
            }
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 5;
            if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT &&
                !shutdown_done_locked(s))
                log_warn(NULL, "rpc_server: still waiting for %d call(s) to finish", s->live);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return done;
}

void rpc_server_shutdown(rpc_server *s, int grace_ms)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);

    atomic_store(&s->serving, false);
    atomic_store(&s->shutting_down, true);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);

    if (!s->poller_started) {
        /* Nothing polls: drain the queue here until the shutdown tag is back. */
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_OP_COMPLETE && ev.tag == &s->shutdown_tag)
                break;
            if (ev.type == GRPC_QUEUE_SHUTDOWN)
                break;
        }
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        s->stopped = true;
        return;
    }

    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    int g = grace_ms > 0 ? grace_ms : 0;
    dl.tv_sec += g / 1000;
    dl.tv_nsec += (long)(g % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    if (!wait_drained(s, &dl)) {
        log_warn(NULL, "rpc_server: grace period of %d ms over; cancelling the calls left", g);
        grpc_server_cancel_all_calls(s->server);
        wait_drained(s, NULL);
    }
    grpc_completion_queue_shutdown(s->cq);
    pthread_join(s->poller, NULL);
    workers_stop(s); /* every call is gone (wait_drained): their queue is empty */
    s->stopped = true;
}

void rpc_server_free(rpc_server *s)
{
    if (!s)
        return;
    rpc_server_shutdown(s, 0);
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    free(s->tids);
    free(s->methods);
    free(s->addr);
    free(s->service_name);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->wmu);
    pthread_cond_destroy(&s->wcv);
    free(s);
    grpc_shutdown();
}

/* ---------------------------------------------------------------------------------------------
 * Signals
 * ------------------------------------------------------------------------------------------- */

void rpc_signals_block(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int rpc_signals_wait(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    return sig;
}
