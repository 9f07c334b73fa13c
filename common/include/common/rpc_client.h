/* rpc_client: one channel per target; unary calls with deadline, metadata and parent propagation,
 * guarded by a circuit breaker, a deadline margin and budgeted retries of idempotent reads. */
#ifndef COMMON_RPC_CLIENT_H
#define COMMON_RPC_CLIENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/breaker.h"
#include "common/err.h"
#include "common/mem.h"
#include "common/metrics.h"
#include "common/retry.h"
#include "common/rpc_server.h"

typedef struct rpc_client rpc_client;

typedef struct rpc_client_opts {
    const char *target;     /* "127.0.0.1:50052" */
    const char *name;       /* for logs/metrics/breaker: "user" */
    int default_timeout_ms; /* per call when the caller gives no deadline (default 5000) */
    int max_message_bytes;  /* default 4 MiB */
} rpc_client_opts;

/* A caller's handle to cancel its calls (e.g. the HTTP client went away): the attempt in flight
 * is cancelled (the server sees CANCELLED, and so do the calls it made with this one as parent)
 * and no retry starts. It must outlive every call made with it; one call at a time. */
typedef struct rpc_cancel {
    pthread_mutex_t mu;
    void *call; /* the attempt in flight (grpc_call *), NULL between attempts */
    bool cancelled;
} rpc_cancel;
void rpc_cancel_init(rpc_cancel *t);
void rpc_cancel_destroy(rpc_cancel *t);
/* Any thread, any number of times; calls made with t afterwards end at once with CANCELLED. */
void rpc_cancel_fire(rpc_cancel *t);

/* Per-call options; all optional (NULL = defaults). */
typedef struct rpc_call_opts {
    const rpc_ctx *parent;  /* server call we run inside: its deadline, cancellation and
                               metadata (request id, traceparent, authorization) pass on */
    const rpc_metadata *md; /* explicit metadata (overrides the parent's where non-empty) */
    int64_t deadline_ms;    /* absolute CLOCK_MONOTONIC ms; 0 = parent's or default */
    rpc_cancel *cancel;     /* lets the caller cancel the call; NULL = never */
} rpc_call_opts;

/* Resilience policy shared by every client of a process, read from the environment (names,
 * defaults and meaning in docs/arch/resilience.md): BREAKER_WINDOW, BREAKER_MIN_CALLS,
 * BREAKER_FAILURE_RATE_PCT, BREAKER_SLOW_CALL_MS, BREAKER_SLOW_CALL_RATE_PCT, BREAKER_OPEN_MS,
 * BREAKER_HALF_OPEN_CALLS, BREAKER_MODE, RPC_RETRY_MAX, RPC_RETRY_BUDGET_PCT,
 * RPC_DEADLINE_MARGIN_MS. */
typedef struct rpc_client_policy {
    breaker_opts breaker;   /* thresholds and mode (target, clock and callback left unset) */
    retry_opts retry;       /* max_retries, budget_pct (backoff 25 ms doubling to 250 ms) */
    int deadline_margin_ms; /* taken off the caller's remaining budget (0 = none) */
} rpc_client_policy;

/* The built-in defaults (the same as with every variable unset). */
void rpc_client_policy_defaults(rpc_client_policy *out);
/* Reads the variables above through config_load; ERR_INVALID_ARGUMENT names a bad one. */
err_code rpc_client_policy_load(rpc_client_policy *out, err_info *e);
/* "NAME=default  # help" lines for --help. */
void rpc_client_policy_print_help(void);

/* Resilience options of one client (a separate struct so rpc_client_opts, initialised
 * positionally by some callers, keeps its layout). All optional: zero/NULL = default. Use
 * designated initialisers: fields may be added at the end. */
typedef struct rpc_client_ext_opts {
    const rpc_client_policy *policy; /* NULL = built-in defaults */
    const breaker_opts *breaker;     /* overrides policy->breaker (tests: clock). target is
                                        the client's name; an on_transition here runs after the
                                        client's own (log line, metrics) */
    const retry_opts *retry;         /* overrides policy->retry (max_retries 0 = no retries) */
    int deadline_margin_ms;          /* 0 = the policy's (default 5); < 0 = no margin */
    metrics_registry *metrics;       /* NULL = no metrics */
} rpc_client_ext_opts;

/* Creates the channel (lazy connect). Thread-safe afterwards. NULL only for a bad target.
 * rpc_client_new: breaker and retries with their defaults, deadlines as given (no margin; the
 * same as rpc_client_new_ext with {.deadline_margin_ms = -1}). rpc_client_new_ext(opts, NULL, e):
 * every default, margin 5 ms included. */
rpc_client *rpc_client_new(const rpc_client_opts *opts, err_info *e);
rpc_client *rpc_client_new_ext(const rpc_client_opts *opts, const rpc_client_ext_opts *x,
                               err_info *e);
void rpc_client_free(rpc_client *c); /* NULL ok; no call may be in flight */
const char *rpc_client_name(const rpc_client *c);
/* The client's circuit breaker (state for /ready pages, tests). Owned by the client. */
breaker *rpc_client_breaker(rpc_client *c);

/* Running totals since creation. */
typedef struct rpc_client_stats {
    uint64_t attempts;         /* calls put on the wire (first tries and retries) */
    uint64_t retries;          /* of which retries */
    uint64_t rejected;         /* refused at once by the open breaker */
    uint64_t deadline_skipped; /* not made: the caller's budget minus the margin was spent */
} rpc_client_stats;
void rpc_client_stats_get(rpc_client *c, rpc_client_stats *out);

/* Blocking unary call. resp is unpacked into arena a. On a non-OK status returns it with e filled:
 * message, violations from grpc-status-details-bin (google.rpc.BadRequest) and retry_after_s
 * (google.rpc.RetryInfo). UNAVAILABLE when nothing listens; DEADLINE_EXCEEDED on time-out.
 * Resilience (both calls):
 * - breaker open: UNAVAILABLE "circuit open: <name>" at once, e->retry_after_s = the remaining
 *   open time in seconds (at least 1); nothing is sent.
 * - deadline: explicit deadline_ms (and/or the parent's) minus the margin; the parent's alone is
 *   also capped by default_timeout_ms; none = default_timeout_ms. No time left after the margin:
 *   DEADLINE_EXCEEDED at once, nothing is sent.
 * - retries: only idempotent reads (retry_is_idempotent), only on UNAVAILABLE that is neither a
 *   circuit-open answer nor carries RetryInfo, at most max_retries, full-jitter backoff, within
 *   the deadline and the client's retry budget. Writes are never retried. */
err_code rpc_client_call(rpc_client *c, const char *method, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                         arena *a, ProtobufCMessage **resp, err_info *e);

/* rpc_client_call with flags (0 = the same as rpc_client_call):
 * RPC_CALL_BYPASS_BREAKER: made even while the circuit is open and not recorded in it (e.g. a
 *   compensation that must be tried whatever the target's recent record);
 * RPC_CALL_NO_RETRY: never retried, even an idempotent read (the caller retries itself). */
#define RPC_CALL_BYPASS_BREAKER 1u
#define RPC_CALL_NO_RETRY 2u
err_code rpc_client_call_flags(rpc_client *c, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                               unsigned flags, arena *a, ProtobufCMessage **resp, err_info *e);

/* Asynchronous unary call: done() runs later on the client's completion-queue thread with the same
 * results as rpc_client_call (resp unpacked into a, which must outlive the call). Returns ERR_OK
 * when the call was started; otherwise done() is not called (an open breaker and a spent deadline
 * budget are reported this way: UNAVAILABLE "circuit open: <name>" / DEADLINE_EXCEEDED with e
 * filled). Retries are re-issued by the queue thread after their backoff (a timer on the queue,
 * no sleeping), so one retry never delays other completions. */
typedef void (*rpc_client_done)(void *arg, err_code code, ProtobufCMessage *resp,
                                const err_info *e);
err_code rpc_client_call_async(rpc_client *c, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                               arena *a, rpc_client_done done, void *arg, err_info *e);

#endif
