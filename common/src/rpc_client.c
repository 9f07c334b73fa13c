/* rpc_client: one gRPC channel per target; blocking and asynchronous unary calls with deadline,
 * metadata pass-on, parent propagation, google.rpc.Status details parsed into err_info, and the
 * resilience policy of SPEC §3: a circuit breaker per target, a deadline margin, and budgeted
 * retries of idempotent reads (docs/arch/resilience.md). */
#include "common/rpc_client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/config.h"
#include "common/log.h"
#include "rpc_internal.h"

#define MAX_MD 6
#define DEFAULT_MARGIN_MS 5
#define CIRCUIT_OPEN "circuit open"

typedef struct method_handle {
    char *name;
    void *handle;
} method_handle;

typedef struct call_state call_state;

/* Metric families and this client's fixed series (NULL when the client has no registry). */
typedef struct client_metrics {
    metrics_family *handled, *seconds, *state, *transitions, *rejected, *retries, *skipped;
    metrics_series *s_state, *s_rejected, *s_retries, *s_skipped, *s_to[3];
} client_metrics;

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

    /* resilience */
    breaker *br;
    void (*user_transition)(void *, const char *, breaker_state, breaker_state);
    void *user_transition_arg;
    retry_opts ropts;
    retry_budget *budget;
    int margin_ms;
    client_metrics m;
    bool has_metrics;
    atomic_uint_fast64_t n_attempts, n_retries, n_rejected, n_skipped;

    /* Async retries waiting for their backoff, sorted by due time. Touched only by the async
     * thread, except `closing`, which qmu guards against a re-issue racing the queue's shutdown. */
    call_state *retry_head;
    pthread_mutex_t qmu;
    bool closing;
};

/* One logical call (its attempts share it). Sync: on the caller's stack; async: heap. */
struct call_state {
    /* per attempt */
    grpc_call *call;
    grpc_byte_buffer *req_bb, *resp_bb;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    int64_t t0; /* attempt start, ms */
    /* per logical call */
    grpc_metadata md[MAX_MD];
    size_t nmd;
    char tp[64];
    const char *method;  /* async: owned copy */
    void *mh;            /* registered-call handle */
    grpc_slice req;      /* packed request, kept for retries */
    grpc_call *parent;   /* server call we run inside (async: a reference is held) */
    int64_t deadline_ms; /* absolute, margin already taken off */
    bool idempotent;
    bool bypass_breaker; /* RPC_CALL_BYPASS_BREAKER: neither asked nor taught */
    rpc_cancel *cancel;  /* the caller's, or NULL */
    int attempts;        /* made so far */
    /* async only */
    rpc_client *c;
    const ProtobufCMessageDescriptor *resp_desc;
    arena *a;
    rpc_client_done done;
    void *arg;
    char *md_copy; /* metadata values copied here */
    char *method_copy;
    int64_t due_ms;   /* retry queue */
    err_code last_rc; /* what the caller gets if the retry cannot be made */
    err_info *last_e; /* allocated by the first retry only: an err_info is ~4 KiB */
    call_state *next;
};

/* ---------- policy ---------- */

typedef struct policy_env {
    int window, min_calls, failure_rate_pct, slow_call_ms, slow_call_rate_pct, open_ms, half_open;
    char *mode;
    int retry_max, retry_budget_pct, margin_ms;
} policy_env;

#define POPT(env, type, field, def, lo, hi, help)                                                  \
    {                                                                                              \
        env, type, offsetof(policy_env, field), def, lo, hi, help                                  \
    }
static const config_opt policy_table[] = {
    POPT("BREAKER_WINDOW", CONFIG_INT, window, "20", 1, 10000,
         "circuit breaker: outcomes of the last N calls per target considered"),
    POPT("BREAKER_MIN_CALLS", CONFIG_INT, min_calls, "10", 1, 10000,
         "circuit breaker: calls in the window before it may open"),
    POPT("BREAKER_FAILURE_RATE_PCT", CONFIG_INT, failure_rate_pct, "50", 1, 100,
         "circuit breaker: opens when this % of the window failed (UNAVAILABLE, "
         "DEADLINE_EXCEEDED, INTERNAL, UNKNOWN)"),
    POPT("BREAKER_SLOW_CALL_MS", CONFIG_INT, slow_call_ms, "0", 0, 3600000,
         "circuit breaker: a call this long is slow (0 = slow calls ignored)"),
    POPT("BREAKER_SLOW_CALL_RATE_PCT", CONFIG_INT, slow_call_rate_pct, "100", 1, 100,
         "circuit breaker: opens when this % of the window was slow"),
    POPT("BREAKER_OPEN_MS", CONFIG_INT, open_ms, "10000", 1, 3600000,
         "circuit breaker: time open before trial calls (half-open)"),
    POPT("BREAKER_HALF_OPEN_CALLS", CONFIG_INT, half_open, "3", 1, 1000,
         "circuit breaker: trial calls that must succeed to close again"),
    POPT("BREAKER_MODE", CONFIG_STR, mode, "normal", 0, 0,
         "circuit breaker: normal | forced_open (refuse every call) | disabled"),
    POPT("RPC_RETRY_MAX", CONFIG_INT, retry_max, "2", 0, 10,
         "retries of an idempotent read on UNAVAILABLE (0 = none)"),
    POPT("RPC_RETRY_BUDGET_PCT", CONFIG_INT, retry_budget_pct, "10", 1, 100,
         "retries per target at most this % of calls (plus 3 in reserve)"),
    POPT("RPC_DEADLINE_MARGIN_MS", CONFIG_INT, margin_ms, "5", 0, 60000,
         "taken off the caller's remaining deadline for each outgoing call"),
};
#define NPOLICY (sizeof policy_table / sizeof policy_table[0])

void rpc_client_policy_defaults(rpc_client_policy *out)
{
    memset(out, 0, sizeof *out);
    out->breaker.window = 20;
    out->breaker.min_calls = 10;
    out->breaker.failure_rate_pct = 50;
    out->breaker.slow_call_ms = 0;
    out->breaker.slow_call_rate_pct = 100;
    out->breaker.open_wait_ms = 10000;
    out->breaker.half_open_calls = 3;
    out->breaker.mode = BREAKER_NORMAL;
    out->retry.max_retries = 2;
    out->retry.base_ms = 25;
    out->retry.max_ms = 250;
    out->retry.budget_pct = 10;
    out->retry.min_tokens = 3;
    out->deadline_margin_ms = DEFAULT_MARGIN_MS;
}

err_code rpc_client_policy_load(rpc_client_policy *out, err_info *e)
{
    rpc_client_policy_defaults(out);
    policy_env env;
    memset(&env, 0, sizeof env);
    err_code rc = config_load(policy_table, NPOLICY, &env, e);
    if (rc == ERR_OK) {
        if (strcmp(env.mode, "normal") == 0)
            out->breaker.mode = BREAKER_NORMAL;
        else if (strcmp(env.mode, "forced_open") == 0)
            out->breaker.mode = BREAKER_FORCED_OPEN;
        else if (strcmp(env.mode, "disabled") == 0)
            out->breaker.mode = BREAKER_DISABLED;
        else
            rc = err_set(e, ERR_INVALID_ARGUMENT,
                         "BREAKER_MODE: must be normal, forced_open or disabled, got '%.40s'",
                         env.mode);
    }
    if (rc == ERR_OK) {
        out->breaker.window = env.window;
        out->breaker.min_calls = env.min_calls;
        out->breaker.failure_rate_pct = env.failure_rate_pct;
        out->breaker.slow_call_ms = env.slow_call_ms;
        out->breaker.slow_call_rate_pct = env.slow_call_rate_pct;
        out->breaker.open_wait_ms = env.open_ms;
        out->breaker.half_open_calls = env.half_open;
        out->retry.max_retries = env.retry_max;
        out->retry.budget_pct = env.retry_budget_pct;
        out->deadline_margin_ms = env.margin_ms;
    }
    config_free(policy_table, NPOLICY, &env);
    return rc;
}

void rpc_client_policy_print_help(void)
{
    config_print_help(policy_table, NPOLICY);
}

/* ---------- metrics and transition log ---------- */

static void metrics_init(rpc_client *c, metrics_registry *r)
{
    static const char *l_handled[] = {"target", "grpc_service", "grpc_method", "grpc_code", NULL};
    static const char *l_seconds[] = {"target", "grpc_service", "grpc_method", NULL};
    static const char *l_target[] = {"target", NULL};
    static const char *l_to[] = {"target", "to", NULL};
    client_metrics *m = &c->m;
    m->handled = metrics_family_new(r, METRICS_COUNTER, "grpc_client_handled_total",
                                    "RPCs made by this process (each attempt), by code.", l_handled,
                                    NULL, 0);
    m->seconds =
        metrics_family_new(r, METRICS_HISTOGRAM, "grpc_client_handling_seconds",
                           "Time of each RPC attempt as seen by the caller.", l_seconds, NULL, 0);
    m->state = metrics_family_new(r, METRICS_GAUGE, "circuit_breaker_state",
                                  "Circuit breaker per target: 0 closed, 1 open, 2 half-open.",
                                  l_target, NULL, 0);
    m->transitions =
        metrics_family_new(r, METRICS_COUNTER, "circuit_breaker_transitions_total",
                           "Circuit breaker state changes, by new state.", l_to, NULL, 0);
    m->rejected = metrics_family_new(r, METRICS_COUNTER, "circuit_breaker_rejected_total",
                                     "Calls refused at once because the circuit was open.",
                                     l_target, NULL, 0);
    m->retries =
        metrics_family_new(r, METRICS_COUNTER, "grpc_client_retries_total",
                           "Retries of idempotent reads after UNAVAILABLE.", l_target, NULL, 0);
    m->skipped = metrics_family_new(r, METRICS_COUNTER, "grpc_client_deadline_skipped_total",
                                    "Calls not made: the caller's deadline budget was spent.",
                                    l_target, NULL, 0);
    const char *t[] = {c->name};
    m->s_state = metrics_series_get(m->state, t);
    m->s_rejected = metrics_series_get(m->rejected, t);
    m->s_retries = metrics_series_get(m->retries, t);
    m->s_skipped = metrics_series_get(m->skipped, t);
    for (int s = 0; s < 3; s++) {
        const char *lt[] = {c->name, breaker_state_name((breaker_state)s)};
        m->s_to[s] = metrics_series_get(m->transitions, lt);
    }
    /* Every series exists from the start (at 0), so rate() and alerts see them before the first
     * incident. */
    metrics_counter_add(m->s_rejected, 0);
    metrics_counter_add(m->s_retries, 0);
    metrics_counter_add(m->s_skipped, 0);
    for (int s = 0; s < 3; s++)
        metrics_counter_add(m->s_to[s], 0);
    c->has_metrics = true;
}

/* Sets the state gauge from the breaker itself (transitions may be reported out of order). */
static void state_gauge_update(rpc_client *c)
{
    if (c->has_metrics)
        metrics_gauge_set(c->m.s_state, (double)breaker_state_get(c->br));
}

static void on_transition(void *arg, const char *target, breaker_state from, breaker_state to)
{
    rpc_client *c = arg;
    char t[160], kv[256];
    snprintf(kv, sizeof kv, "\"target\":%s,\"from\":\"%s\",\"to\":\"%s\"",
             log_json_str(t, sizeof t, target), breaker_state_name(from), breaker_state_name(to));
    /* Opening is what an operator must notice; half-open and closing are recovery steps. */
    if (to == BREAKER_OPEN)
        log_warn_kv(NULL, kv, "circuit breaker %s: %s -> %s", target, breaker_state_name(from),
                    breaker_state_name(to));
    else
        log_info_kv(NULL, kv, "circuit breaker %s: %s -> %s", target, breaker_state_name(from),
                    breaker_state_name(to));
    if (c->has_metrics) {
        metrics_counter_add(c->m.s_to[to], 1);
        state_gauge_update(c);
    }
    if (c->user_transition)
        c->user_transition(c->user_transition_arg, target, from, to);
}

/* "/pkg.Service/Method" → service "pkg.Service" (into buf) and method "Method". */
static const char *split_method(const char *full, char *buf, size_t len)
{
    const char *slash = strrchr(full, '/');
    if (!slash) {
        snprintf(buf, len, "%s", "");
        return full;
    }
    const char *start = full[0] == '/' ? full + 1 : full;
    int n = slash > start ? (int)(slash - start) : 0;
    snprintf(buf, len, "%.*s", n, start);
    return slash + 1;
}

static void observe_attempt(rpc_client *c, const char *method, err_code rc, int64_t took_ms)
{
    atomic_fetch_add_explicit(&c->n_attempts, 1, memory_order_relaxed);
    if (!c->has_metrics)
        return;
    char svc[160];
    const char *m = split_method(method, svc, sizeof svc);
    const char *l4[] = {c->name, svc, m, err_str(rc)};
    metrics_inc(c->m.handled, l4);
    const char *l3[] = {c->name, svc, m};
    metrics_observe(c->m.seconds, l3, (double)took_ms / 1000.0);
}

/* ---------- lifecycle ---------- */

rpc_client *rpc_client_new(const rpc_client_opts *opts, err_info *e)
{
    /* The plain constructor keeps its callers' deadlines exactly (no margin): their code and
     * tests were written against that. Breaker and retries apply with their defaults. */
    rpc_client_ext_opts x = {.deadline_margin_ms = -1};
    return rpc_client_new_ext(opts, &x, e);
}

rpc_client *rpc_client_new_ext(const rpc_client_opts *opts, const rpc_client_ext_opts *x,
                               err_info *e)
{
    err_clear(e);
    if (!opts || !opts->target || !*opts->target || strpbrk(opts->target, " \t\r\n")) {
        err_set(e, ERR_INVALID_ARGUMENT, "rpc_client: bad target '%.100s'",
                opts && opts->target ? opts->target : "");
        return NULL;
    }
    rpc_grpc_init();
    rpc_client *c = xcalloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->qmu, NULL);
    c->target = xstrdup(opts->target);
    c->name = xstrdup(opts->name ? opts->name : opts->target);
    c->default_timeout_ms = opts->default_timeout_ms > 0 ? opts->default_timeout_ms : 5000;
    c->max_msg = opts->max_message_bytes > 0 ? opts->max_message_bytes : 4 * 1024 * 1024;
    atomic_init(&c->n_attempts, 0);
    atomic_init(&c->n_retries, 0);
    atomic_init(&c->n_rejected, 0);
    atomic_init(&c->n_skipped, 0);

    rpc_client_policy pol;
    if (x && x->policy)
        pol = *x->policy;
    else
        rpc_client_policy_defaults(&pol);
    breaker_opts bo = x && x->breaker ? *x->breaker : pol.breaker;
    c->user_transition = bo.on_transition;
    c->user_transition_arg = bo.transition_arg;
    bo.target = c->name;
    bo.on_transition = on_transition;
    bo.transition_arg = c;
    c->ropts = x && x->retry ? *x->retry : pol.retry;
    if (c->ropts.max_retries < 0)
        c->ropts.max_retries = 0;
    c->margin_ms = pol.deadline_margin_ms;
    if (x && x->deadline_margin_ms)
        c->margin_ms = x->deadline_margin_ms;
    if (c->margin_ms < 0)
        c->margin_ms = 0;
    if (x && x->metrics)
        metrics_init(c, x->metrics);
    c->br = breaker_new(&bo);
    c->budget = retry_budget_new(&c->ropts);
    state_gauge_update(c); /* forced_open reads 1 from the start */

    /* Reconnect backoff: the core's defaults (1 s growing to 120 s) would leave a restarted
     * target unreached for minutes after a long outage, and the breaker's half-open trials
     * would fail against a channel still backing off. Inside a cluster a refused connect is
     * cheap, so retry it every 100 ms growing to 1 s at most. */
    grpc_arg args[4];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = c->max_msg;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = c->max_msg;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[2].value.integer = 100;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[3].value.integer = 1000;
    grpc_channel_args ca = {4, args};
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
        /* No retry may be re-issued on the queue once it is shut down: the thread checks
         * `closing` under qmu before starting one. The thread drains what is left, answers the
         * retries still waiting with their last error, and exits on GRPC_QUEUE_SHUTDOWN. */
        pthread_mutex_lock(&c->qmu);
        c->closing = true;
        grpc_completion_queue_shutdown(c->acq);
        pthread_mutex_unlock(&c->qmu);
        pthread_join(c->athr, NULL);
        grpc_completion_queue_destroy(c->acq);
    }
    if (c->ch)
        grpc_channel_destroy(c->ch);
    for (size_t i = 0; i < c->nmethods; i++)
        free(c->methods[i].name);
    free(c->methods);
    breaker_free(c->br);
    retry_budget_free(c->budget);
    free(c->target);
    free(c->name);
    pthread_mutex_destroy(&c->qmu);
    pthread_mutex_destroy(&c->mu);
    free(c);
    grpc_shutdown();
}

const char *rpc_client_name(const rpc_client *c)
{
    return c ? c->name : "";
}

breaker *rpc_client_breaker(rpc_client *c)
{
    return c ? c->br : NULL;
}

void rpc_client_stats_get(rpc_client *c, rpc_client_stats *out)
{
    out->attempts = atomic_load_explicit(&c->n_attempts, memory_order_relaxed);
    out->retries = atomic_load_explicit(&c->n_retries, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&c->n_rejected, memory_order_relaxed);
    out->deadline_skipped = atomic_load_explicit(&c->n_skipped, memory_order_relaxed);
}

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

/* ---------- metadata ---------- */

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

/* ---------- deadline, breaker, retry decisions ---------- */

/* The absolute deadline of a call, margin taken off the caller's budget. An explicit deadline is
 * the caller's own choice and is not capped; an inherited one (the parent's alone) is capped by
 * the per-target default so one slow hop cannot take a long request's whole budget. Returns
 * DEADLINE_EXCEEDED, without making the call, when nothing is left after the margin. */
static err_code plan_deadline(rpc_client *c, const rpc_call_opts *o, const char *method,
                              int64_t now, int64_t *out, err_info *e)
{
    int64_t parent = 0, budget_end = 0;
    if (o && o->parent && o->parent->deadline_ms != INT64_MAX && o->parent->deadline_ms > 0)
        parent = o->parent->deadline_ms;
    bool explicit_dl = o && o->deadline_ms > 0;
    if (explicit_dl)
        budget_end = parent && parent < o->deadline_ms ? parent : o->deadline_ms;
    else
        budget_end = parent;
    if (!budget_end) {
        *out = now + c->default_timeout_ms;
        return ERR_OK;
    }
    int64_t left = budget_end - c->margin_ms - now;
    if (left <= 0) {
        atomic_fetch_add_explicit(&c->n_skipped, 1, memory_order_relaxed);
        if (c->has_metrics)
            metrics_counter_add(c->m.s_skipped, 1);
        return err_set(e, ERR_DEADLINE_EXCEEDED,
                       "%s %s: not called, the deadline leaves %lld ms (margin %d ms)", c->name,
                       method, (long long)(budget_end - now), c->margin_ms);
    }
    if (!explicit_dl && left > c->default_timeout_ms)
        left = c->default_timeout_ms;
    *out = now + left;
    return ERR_OK;
}

static err_code circuit_open(rpc_client *c, int64_t retry_after_ms, err_info *e)
{
    atomic_fetch_add_explicit(&c->n_rejected, 1, memory_order_relaxed);
    if (c->has_metrics)
        metrics_counter_add(c->m.s_rejected, 1);
    err_set(e, ERR_UNAVAILABLE, CIRCUIT_OPEN ": %s", c->name);
    int64_t s = (retry_after_ms + 999) / 1000;
    e->retry_after_s = s < 1 ? 1 : (int)(s > 86400 ? 86400 : s);
    return ERR_UNAVAILABLE;
}

/* Backoff before the next attempt in ms, or -1 when the outcome must stand: not an idempotent
 * read, not UNAVAILABLE, a circuit-open answer (ours or a downstream hop's) or one with RetryInfo
 * (the server named its own wait), retries used up, no time left, or the budget is empty. The
 * budget is asked last so a token is only spent on a retry that will be made. */
static int retry_delay(rpc_client *c, const call_state *st, err_code rc, const err_info *e)
{
    if (!st->idempotent || !retry_is_retryable(rc))
        return -1;
    if (strstr(e->msg, CIRCUIT_OPEN) || e->retry_after_s > 0)
        return -1;
    int retries_done = st->attempts - 1;
    if (retries_done >= c->ropts.max_retries)
        return -1;
    uint32_t rnd;
    rpc_rand_bytes(&rnd, sizeof rnd);
    int wait = retry_backoff_ms(&c->ropts, retries_done + 1, rnd);
    /* The retry needs some time of its own after the backoff to be worth making. */
    if (rpc_now_ms() + wait + 1 >= st->deadline_ms)
        return -1;
    if (!retry_budget_try_withdraw(c->budget))
        return -1;
    atomic_fetch_add_explicit(&c->n_retries, 1, memory_order_relaxed);
    if (c->has_metrics)
        metrics_counter_add(c->m.s_retries, 1);
    return wait;
}

/* ---------- one attempt ---------- */

/* Breaker permit, then the call and its one batch on cq (tag st). On ERR_OK the caller must end
 * the attempt with attempt_end once the batch completes. */
void rpc_cancel_init(rpc_cancel *t)
{
    pthread_mutex_init(&t->mu, NULL);
    t->call = NULL;
    t->cancelled = false;
}

void rpc_cancel_destroy(rpc_cancel *t)
{
    pthread_mutex_destroy(&t->mu);
}

void rpc_cancel_fire(rpc_cancel *t)
{
    pthread_mutex_lock(&t->mu);
    t->cancelled = true;
    /* Under the lock: the attempt cannot be released meanwhile (attempt_detach takes it). */
    if (t->call)
        grpc_call_cancel((grpc_call *)t->call, NULL);
    pthread_mutex_unlock(&t->mu);
}

/* The attempt is over: the caller's cancel handle forgets it before it is released. */
static void attempt_detach(call_state *st)
{
    if (!st->cancel)
        return;
    pthread_mutex_lock(&st->cancel->mu);
    if (st->cancel->call == st->call)
        st->cancel->call = NULL;
    pthread_mutex_unlock(&st->cancel->mu);
}

static err_code attempt_start_locked(rpc_client *c, call_state *st, grpc_completion_queue *cq,
                                     err_info *e);

/* Starts one attempt; with a cancel handle, a cancelled caller gets CANCELLED at once and a
 * cancel that arrives later finds the attempt. */
static err_code attempt_start(rpc_client *c, call_state *st, grpc_completion_queue *cq, err_info *e)
{
    if (!st->cancel)
        return attempt_start_locked(c, st, cq, e);
    pthread_mutex_lock(&st->cancel->mu);
    err_code rc;
    if (st->cancel->cancelled) {
        rc = err_set(e, ERR_CANCELLED, "%s %s: cancelled by the caller", c->name, st->method);
    } else {
        rc = attempt_start_locked(c, st, cq, e);
        if (rc == ERR_OK)
            st->cancel->call = st->call;
    }
    pthread_mutex_unlock(&st->cancel->mu);
    return rc;
}

static err_code attempt_start_locked(rpc_client *c, call_state *st, grpc_completion_queue *cq,
                                     err_info *e)
{
    int64_t now = rpc_now_ms();
    if (st->deadline_ms - now <= 0)
        return err_set(e, ERR_DEADLINE_EXCEEDED, "%s %s: deadline exceeded before the call",
                       c->name, st->method);
    int64_t wait_ms = 0;
    if (!st->bypass_breaker && !breaker_allow(c->br, &wait_ms))
        return circuit_open(c, wait_ms, e);
    st->attempts++;
    st->t0 = now;
    st->resp_bb = NULL;
    st->error_string = NULL;
    st->status = GRPC_STATUS_OK;
    st->details = grpc_empty_slice();
    st->call =
        grpc_channel_create_registered_call(c->ch, st->parent, GRPC_PROPAGATE_DEFAULTS, cq, st->mh,
                                            rpc_ms_to_deadline(st->deadline_ms), NULL);
    if (!st->call) {
        if (!st->bypass_breaker)
            breaker_record(c->br, ERR_CANCELLED, 0); /* our failure, not the target's: neutral */
        return err_set(e, ERR_INTERNAL, "rpc_client %s: cannot create call %s", c->name,
                       st->method);
    }
    st->req_bb = grpc_raw_byte_buffer_create(&st->req, 1);
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
        if (!st->bypass_breaker)
            breaker_record(c->br, ERR_CANCELLED, 0);
        return err_set(e, ERR_INTERNAL, "rpc_client %s: %s: start_batch failed (%d)", c->name,
                       st->method, (int)r);
    }
    return ERR_OK;
}

/* Turns a finished batch into (code, response, e) and releases what the attempt held. */
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
            ProtobufCMessage *m = protobuf_c_message_unpack(
                resp_desc, &alloc, GRPC_SLICE_LENGTH(body), GRPC_SLICE_START_PTR(body));
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
    st->resp_bb = NULL;
    grpc_byte_buffer_destroy(st->req_bb);
    st->req_bb = NULL;
    grpc_metadata_array_destroy(&st->init_md);
    grpc_metadata_array_destroy(&st->trail_md);
    grpc_slice_unref(st->details);
    st->details = grpc_empty_slice();
    if (st->error_string)
        gpr_free((void *)st->error_string);
    st->error_string = NULL;
    attempt_detach(st);
    grpc_call_unref(st->call);
    st->call = NULL;
    return rc;
}

/* The one breaker_record of a permitted attempt, and its metrics. */
static void attempt_end(rpc_client *c, call_state *st, err_code rc)
{
    int64_t took = rpc_now_ms() - st->t0;
    if (!st->bypass_breaker)
        breaker_record(c->br, rc, took);
    observe_attempt(c, st->method, rc, took);
}

/* Fills the parts of st every call needs; the request is packed once for all attempts. */
static err_code state_init(rpc_client *c, call_state *st, const char *method,
                           const ProtobufCMessage *req, const rpc_call_opts *o, unsigned flags,
                           err_info *e)
{
    if (!method || method[0] != '/' || !req)
        return err_set(e, ERR_INVALID_ARGUMENT, "rpc_client: bad method or request");
    int64_t now = rpc_now_ms();
    err_code rc = plan_deadline(c, o, method, now, &st->deadline_ms, e);
    if (rc != ERR_OK)
        return rc;
    st->method = method;
    st->mh = method_handle_get(c, method);
    st->parent = o && o->parent ? rpc_ctx_grpc_call(o->parent) : NULL;
    st->idempotent = !(flags & RPC_CALL_NO_RETRY) && retry_is_idempotent(method);
    st->bypass_breaker = (flags & RPC_CALL_BYPASS_BREAKER) != 0;
    st->cancel = o ? o->cancel : NULL;
    size_t n = protobuf_c_message_get_packed_size(req);
    st->req = grpc_slice_malloc(n);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(st->req));
    st->details = grpc_empty_slice();
    build_metadata(st, o);
    retry_budget_on_call(c->budget);
    return ERR_OK;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---------- blocking calls ---------- */

err_code rpc_client_call(rpc_client *c, const char *method, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                         arena *a, ProtobufCMessage **resp, err_info *e)
{
    return rpc_client_call_flags(c, method, req, resp_desc, o, 0, a, resp, e);
}

err_code rpc_client_call_flags(rpc_client *c, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                               unsigned flags, arena *a, ProtobufCMessage **resp, err_info *e)
{
    err_info local;
    if (!e)
        e = &local;
    err_clear(e);
    if (!a || !resp_desc || !resp)
        return err_set(e, ERR_INVALID_ARGUMENT, "rpc_client: arena, descriptor and resp required");
    call_state st;
    memset(&st, 0, sizeof st);
    err_code rc = state_init(c, &st, method, req, o, flags, e);
    if (rc != ERR_OK)
        return rc;
    /* A pluck queue per call: nothing shared between callers' threads, nothing to route. Its
     * attempts run one after the other on it. */
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    bool retrying = false;
    for (;;) {
        err_info ae;
        err_clear(&ae);
        rc = attempt_start(c, &st, cq, &ae);
        if (rc == ERR_OK) {
            grpc_event ev =
                grpc_completion_queue_pluck(cq, &st, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            (void)ev; /* the call's deadline bounds the wait; the status says what happened */
            rc = call_finish(&st, resp_desc, a, resp, &ae);
            attempt_end(c, &st, rc);
        } else if (retrying && !strstr(ae.msg, CIRCUIT_OPEN)) {
            rc = e->code; /* the retry could not start: the failure it retried stands */
            break;
        }
        *e = ae;
        int wait = rc == ERR_OK ? -1 : retry_delay(c, &st, rc, e);
        if (wait < 0)
            break;
        sleep_ms(wait);
        retrying = true;
    }
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(cq);
    grpc_slice_unref(st.req);
    return rc;
}

/* ---------- asynchronous calls ---------- */

static void async_state_free(call_state *st)
{
    if (st->parent)
        grpc_call_unref(st->parent);
    grpc_slice_unref(st->req);
    free(st->md_copy);
    free(st->method_copy);
    free(st->last_e);
    free(st);
}

static void async_finish(call_state *st, err_code rc, ProtobufCMessage *resp, const err_info *e)
{
    st->done(st->arg, rc, rc == ERR_OK ? resp : NULL, e);
    async_state_free(st);
}

static void retry_queue_push(rpc_client *c, call_state *st)
{
    call_state **p = &c->retry_head;
    while (*p && (*p)->due_ms <= st->due_ms)
        p = &(*p)->next;
    st->next = *p;
    *p = st;
}

/* Re-issues the retries whose backoff is over (async thread). A retry that cannot be made
 * (deadline reached, breaker open, client closing) answers with the failure it was retrying. */
static void retry_queue_run(rpc_client *c)
{
    int64_t now = rpc_now_ms();
    while (c->retry_head && c->retry_head->due_ms <= now) {
        call_state *st = c->retry_head;
        c->retry_head = st->next;
        st->next = NULL;
        err_info e;
        err_clear(&e);
        pthread_mutex_lock(&c->qmu);
        err_code rc = c->closing ? ERR_CANCELLED : attempt_start(c, st, c->acq, &e);
        pthread_mutex_unlock(&c->qmu);
        if (rc != ERR_OK && strstr(e.msg, CIRCUIT_OPEN))
            async_finish(st, rc, NULL, &e); /* the breaker opened meanwhile: say so */
        else if (rc != ERR_OK)
            async_finish(st, st->last_rc, NULL, st->last_e);
    }
}

/* The client's completion-queue thread: finishes attempts, schedules retries (the queue wait
 * times out at the earliest due retry, so backoffs cost no thread and never delay other
 * completions), and at shutdown answers the retries still waiting. */
static void *async_thread(void *arg)
{
    rpc_client *c = arg;
    pthread_setname_np(pthread_self(), "rpc-async"); /* top -H, perf, gdb */
    for (;;) {
        gpr_timespec until = c->retry_head ? rpc_ms_to_deadline(c->retry_head->due_ms)
                                           : gpr_inf_future(GPR_CLOCK_REALTIME);
        grpc_event ev = grpc_completion_queue_next(c->acq, until, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE) {
            call_state *st = ev.tag;
            err_info e;
            err_clear(&e);
            ProtobufCMessage *resp = NULL;
            err_code rc = call_finish(st, st->resp_desc, st->a, &resp, &e);
            attempt_end(c, st, rc);
            int wait = rc == ERR_OK ? -1 : retry_delay(c, st, rc, &e);
            if (wait < 0) {
                async_finish(st, rc, resp, &e);
            } else {
                st->last_rc = rc;
                if (!st->last_e)
                    st->last_e = xmalloc(sizeof *st->last_e);
                *st->last_e = e;
                st->due_ms = rpc_now_ms() + wait;
                retry_queue_push(c, st);
            }
        }
        retry_queue_run(c);
    }
    while (c->retry_head) {
        call_state *st = c->retry_head;
        c->retry_head = st->next;
        async_finish(st, st->last_rc, NULL, st->last_e);
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
    err_code rc = state_init(c, st, method, req, o, 0, e);
    if (rc != ERR_OK) {
        free(st);
        return rc;
    }
    copy_metadata(st);
    st->method_copy = xstrdup(method);
    st->method = st->method_copy;
    if (st->parent)
        grpc_call_ref(st->parent); /* retries may start after the caller's frame is gone */
    st->c = c;
    st->resp_desc = resp_desc;
    st->a = a;
    st->done = done;
    st->arg = arg;
    rc = attempt_start(c, st, c->acq, e);
    if (rc != ERR_OK)
        async_state_free(st);
    return rc;
}
