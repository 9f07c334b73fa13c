/* err: the one error type of the project (codes = gRPC status codes) and the message that travels
 * with it. */
#ifndef COMMON_ERR_H
#define COMMON_ERR_H

#include <stddef.h>

/* X(name, grpc code, http status). The enum value IS the gRPC status code. */
#define ERR_MAP(X)                                                                                 \
    X(OK, 0, 200)                                                                                  \
    X(CANCELLED, 1, 499)                                                                           \
    X(UNKNOWN, 2, 500)                                                                             \
    X(INVALID_ARGUMENT, 3, 400)                                                                    \
    X(DEADLINE_EXCEEDED, 4, 504)                                                                   \
    X(NOT_FOUND, 5, 404)                                                                           \
    X(ALREADY_EXISTS, 6, 409)                                                                      \
    X(PERMISSION_DENIED, 7, 403)                                                                   \
    X(RESOURCE_EXHAUSTED, 8, 429)                                                                  \
    X(FAILED_PRECONDITION, 9, 400)                                                                 \
    X(ABORTED, 10, 409)                                                                            \
    X(OUT_OF_RANGE, 11, 400)                                                                       \
    X(UNIMPLEMENTED, 12, 501)                                                                      \
    X(INTERNAL, 13, 500)                                                                           \
    X(UNAVAILABLE, 14, 503)                                                                        \
    X(DATA_LOSS, 15, 500)                                                                          \
    X(UNAUTHENTICATED, 16, 401)

typedef enum err_code {
#define ERR_ENUM(name, grpc, http) ERR_##name = grpc,
    ERR_MAP(ERR_ENUM)
#undef ERR_ENUM
} err_code;

#define ERR_MAX_VIOLATIONS 16
#define ERR_MSG_LEN 256

typedef struct err_violation {
    char field[64];
    char description[160];
} err_violation;

/* Filled by whoever fails; caller storage, no allocation. code == ERR_OK means "no error". */
typedef struct err_info {
    err_code code;
    char msg[ERR_MSG_LEN];
    int retry_after_s; /* > 0: sent as google.rpc.RetryInfo, HTTP Retry-After */
    size_t nviolations;
    err_violation violations[ERR_MAX_VIOLATIONS];
} err_info;

#if defined(__GNUC__)
#define ERR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define ERR_PRINTF(f, a)
#endif

/* "NOT_FOUND" etc.; "UNKNOWN" for codes outside the map. */
const char *err_str(err_code code);
/* The HTTP status grpc-gateway uses for this code. */
int err_to_http(err_code code);
/* Parse "NOT_FOUND" back to a code; returns -1 when unknown. */
int err_from_str(const char *name);

void err_clear(err_info *e);
/* Sets code and message (printf-style) and returns code, so `return err_set(e, ...)` reads well.
 * e may be NULL. */
err_code err_set(err_info *e, err_code code, const char *fmt, ...) ERR_PRINTF(3, 4);
/* Adds a field violation and makes the code INVALID_ARGUMENT (message "invalid argument" if unset).
 * Violations past ERR_MAX_VIOLATIONS are dropped. Returns ERR_INVALID_ARGUMENT. */
err_code err_violation_add(err_info *e, const char *field, const char *fmt, ...) ERR_PRINTF(3, 4);
/* Prefix the message with context: "db: " + old message. */
void err_prefix(err_info *e, const char *prefix);

#endif
