/* rpc_internal: what rpc_server.c and rpc_client.c share (ids, traceparent, status details,
 * deadline clocks). Private to common/src/rpc_*.c: the only place besides them that sees gRPC. */
#ifndef COMMON_RPC_INTERNAL_H
#define COMMON_RPC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "common/err.h"
#include "common/mem.h"
#include "common/rpc_server.h"

#define RPC_MD_STATUS_DETAILS "grpc-status-details-bin"
#define RPC_REQUEST_ID_MAX 128

/* grpc_init, with abseil's debug-only mutex deadlock detection off (Debian builds it on). */
void rpc_grpc_init(void);

/* Fills out with n pseudo-random bytes from a per-thread generator seeded by getrandom(2): ids
 * must be unique, not secret, and a syscall per call would cost more than the call. */
void rpc_rand_bytes(void *out, size_t n);
/* 2*nbytes lower-case hex digits + NUL into out. */
void rpc_rand_hex(char *out, size_t nbytes);
/* A random UUIDv4 "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" into out (37 bytes). */
void rpc_uuid4(char out[37]);

/* x-request-id is safe to log and pass on: 1-128 chars of [A-Za-z0-9._:-]. */
bool rpc_request_id_ok(const char *s, size_t len);
/* Parses a W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>" (lower-case hex, ids not all zero).
 * Writes the NUL-terminated parts on success; touches nothing on failure. */
bool rpc_traceparent_parse(const char *s, size_t len, char trace_id[33], char span_id[17],
                           char flags[3]);

/* Serialized google.rpc.Status {code, message, details: BadRequest (violations), RetryInfo
 * (retry_after_s > 0)} allocated in a. Returns NULL (and *len 0) when e carries no details. */
uint8_t *rpc_status_details_encode(arena *a, err_code code, const char *msg, const err_info *e,
                                   size_t *len);
/* Parses grpc-status-details-bin back into e->violations and e->retry_after_s (code and message
 * are left alone: the status line is authoritative). Returns false when the bytes are not a
 * google.rpc.Status. */
bool rpc_status_details_decode(const uint8_t *p, size_t len, err_info *e);

/* A gRPC status code as our err_code; codes outside the map become ERR_UNKNOWN. */
err_code rpc_code_from_int(int code);

/* gRPC deadline ↔ CLOCK_MONOTONIC ms (rpc_now_ms). Converted through "time left" so the two
 * clocks need not share an epoch. INT64_MAX ↔ infinite future. */
int64_t rpc_deadline_to_ms(gpr_timespec t);
gpr_timespec rpc_ms_to_deadline(int64_t ms);

/* The server call behind a handler's ctx (parent for propagation), or NULL. */
grpc_call *rpc_ctx_grpc_call(const rpc_ctx *ctx);

#endif
