/* rpc_client: one channel per target; unary calls with deadline, metadata and parent propagation. */
#ifndef COMMON_RPC_CLIENT_H
#define COMMON_RPC_CLIENT_H

#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/err.h"
#include "common/mem.h"
#include "common/rpc_server.h"

typedef struct rpc_client rpc_client;

typedef struct rpc_client_opts {
    const char *target;       /* "127.0.0.1:50052" */
    const char *name;         /* for logs/metrics/breaker: "user" */
    int default_timeout_ms;   /* per call when the caller gives no deadline (default 5000) */
    int max_message_bytes;    /* default 4 MiB */
} rpc_client_opts;

/* Per-call options; all optional (NULL = defaults). */
typedef struct rpc_call_opts {
    const rpc_ctx *parent;     /* server call we run inside: its deadline, cancellation and
                                  metadata (request id, traceparent, authorization) pass on */
    const rpc_metadata *md;    /* explicit metadata (overrides the parent's where non-empty) */
    int64_t deadline_ms;       /* absolute CLOCK_MONOTONIC ms; 0 = parent's or default */
} rpc_call_opts;

/* Creates the channel (lazy connect). Thread-safe afterwards. NULL only for a bad target. */
rpc_client *rpc_client_new(const rpc_client_opts *opts, err_info *e);
void rpc_client_free(rpc_client *c); /* NULL ok; no call may be in flight */
const char *rpc_client_name(const rpc_client *c);

/* Blocking unary call. resp is unpacked into arena a. On a non-OK status returns it with e filled:
 * message, violations from grpc-status-details-bin (google.rpc.BadRequest) and retry_after_s
 * (google.rpc.RetryInfo). UNAVAILABLE when nothing listens; DEADLINE_EXCEEDED on time-out. */
err_code rpc_client_call(rpc_client *c, const char *method, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                         arena *a, ProtobufCMessage **resp, err_info *e);

/* Asynchronous unary call: done() runs later on the client's completion-queue thread with the same
 * results as rpc_client_call (resp unpacked into a, which must outlive the call). Returns ERR_OK
 * when the call was started; otherwise done() is not called. */
typedef void (*rpc_client_done)(void *arg, err_code code, ProtobufCMessage *resp,
                                const err_info *e);
err_code rpc_client_call_async(rpc_client *c, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc, const rpc_call_opts *o,
                               arena *a, rpc_client_done done, void *arg, err_info *e);

#endif
