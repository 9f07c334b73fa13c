/* errors: the gateway's JSON error body {code, status, message, details, request_id}. */
#ifndef GATEWAY_ERRORS_H
#define GATEWAY_ERRORS_H

#include <stddef.h>

#include "common/err.h"
#include "common/mem.h"

/* The body for e (code, message, violations as google.rpc.BadRequest, retry_after_s as
 * google.rpc.RetryInfo), allocated in a. */
char *errors_body(arena *a, const err_info *e, const char *request_id, size_t *len);

/* HTTP status for a gRPC code (grpc-gateway's mapping). */
int errors_http_status(err_code code);

#endif
