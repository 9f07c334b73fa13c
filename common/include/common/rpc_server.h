/* rpc_server: serves a table of unary protobuf-c methods on the gRPC C core, with Health built in.
 */
#ifndef COMMON_RPC_SERVER_H
#define COMMON_RPC_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"

/* Call metadata we read and pass on. Strings are NUL-terminated, never NULL ("" when absent). */
typedef struct rpc_metadata {
    const char *request_id;    /* x-request-id (made when absent or not sane) */
    const char *traceparent;   /* W3C traceparent as received (made when absent) */
    const char *authorization; /* "Bearer ..." or "" */
    const char
        *user_agent; /* x-user-agent (the end client's, set by the gateway), else user-agent */
    const char *client_ip; /* x-client-ip (set by the gateway) */
    const char *actor_id;  /* x-actor-id: the verified token subject (set by the gateway or auth;
                              internal callers are trusted), for audit logs; "" = system */
} rpc_metadata;

/* What a handler gets besides its request. Lives for the call. */
typedef struct rpc_ctx {
    const char *method; /* "/user.v1.UserService/GetUser" */
    rpc_metadata md;
    char trace_id[33];   /* from traceparent */
    char span_id[17];    /* this hop's span id (new) */
    log_ctx log;         /* request_id / trace_id / span_id for log lines */
    int64_t deadline_ms; /* CLOCK_MONOTONIC ms; INT64_MAX when the caller set none */
    arena *arena;        /* dies with the call: allocate the response here */
    void *call;          /* opaque: the server call, for rpc_client parent propagation */
    void *state;         /* the service's state (rpc_server_opts.state) */
} rpc_ctx;

/* Returns ERR_OK and sets *resp (allocated in ctx->arena, or static), or an error with e filled
 * (message, optional violations, retry_after_s). The dispatcher frees nothing of the response.
 * Or returns RPC_PENDING: the handler keeps ctx and req (they live until the answer) and answers
 * later, exactly once, with rpc_reply from any thread, or hands its blocking part to a worker
 * with rpc_continue. A pending call holds no thread. */
typedef err_code (*rpc_handler)(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                                err_info *e);

#define RPC_PENDING ((err_code)1000)

/* The answer of a pending call (any thread; e may be NULL on success). */
void rpc_reply(rpc_ctx *ctx, err_code code, ProtobufCMessage *resp, const err_info *e);
/* Runs fn(ctx, req, ...) on a worker thread as a normal handler (it may return RPC_PENDING
 * again): for the part of an asynchronous handler that blocks (e.g. a database query after a
 * cache miss answered on the cache thread). May be called from the handler itself, which then
 * returns RPC_PENDING and touches ctx no more. */
void rpc_continue(rpc_ctx *ctx, rpc_handler fn);

/* For handlers that may wait long (password hashing): after rpc_watch_cancel (on the handler's
 * thread, before it answers), rpc_ctx_cancelled tells at any moment whether the caller is gone
 * (it cancelled, or hung up) so queued work can be dropped. It costs one more batch per call, so
 * it is opt-in. rpc_ctx_cancelled is also true once the deadline passed, watched or not. */
void rpc_watch_cancel(rpc_ctx *ctx);
bool rpc_ctx_cancelled(const rpc_ctx *ctx);

typedef struct rpc_method {
    const char *name; /* full name "/pkg.Service/Method" */
    const ProtobufCMessageDescriptor *req;
    const ProtobufCMessageDescriptor *resp;
    rpc_handler handler;
    /* The handler never blocks: it answers at once from memory, or returns RPC_PENDING (and
     * moves any blocking part to rpc_continue). It then runs on the thread that polls the
     * completion queue, without a hand-off to a worker. Default (false): a worker runs it. */
    bool nonblocking;
} rpc_method;

typedef struct rpc_server_opts {
    const char *addr;         /* "0.0.0.0:50052"; port 0 = pick one (see rpc_server_port) */
    const char *service_name; /* "user.v1.UserService", for Health/Check per service */
    int threads; /* worker threads running handlers that block (default 2); one more thread
                    polls the completion queue and runs the nonblocking ones */
    int max_message_bytes; /* receive/send cap (default 4 MiB) */
    int max_inflight;      /* calls in flight above this → RESOURCE_EXHAUSTED (0 = 1000) */
    void *state;           /* handed to handlers as ctx->state */
    /* Optional: called once per finished call (any code, unknown methods included) on the
     * polling thread, e.g. to count calls and observe latency. Must be thread-safe and quick. */
    void (*on_call_done)(void *arg, const char *method, err_code code, double seconds);
    void *on_call_done_arg;
} rpc_server_opts;

typedef struct rpc_server rpc_server;

/* Binds and registers methods (grpc_init must not have been called by the caller; the server
 * does it). Fails with ERR_UNAVAILABLE when the port is taken (so_reuseport off). */
rpc_server *rpc_server_new(const rpc_server_opts *opts, const rpc_method *methods, size_t n,
                           err_info *e);
/* Replaces opts.state (for owners that build their state after the server, as svc_main does).
 * Call before rpc_server_start: handlers read it without a lock. */
void rpc_server_set_state(rpc_server *s, void *state);
/* Starts the worker threads; returns at once. */
err_code rpc_server_start(rpc_server *s, err_info *e);
int rpc_server_port(const rpc_server *s);
/* Health: SERVING after start, NOT_SERVING once shutdown begins. */
void rpc_server_set_serving(rpc_server *s, bool serving);
/* Graceful stop: NOT_SERVING, refuse new calls, let in-flight calls finish for up to grace_ms,
 * then cancel the rest; joins the threads. Idempotent. */
void rpc_server_shutdown(rpc_server *s, int grace_ms);
void rpc_server_free(rpc_server *s); /* shuts down first if needed; NULL ok */

/* Signals: call rpc_signals_block() first thing in main (before any thread, gRPC's included),
 * then rpc_signals_wait() blocks until SIGINT or SIGTERM and returns the signal. */
void rpc_signals_block(void);
int rpc_signals_wait(void);

/* ms on CLOCK_MONOTONIC, the clock deadlines use. */
int64_t rpc_now_ms(void);

#endif
