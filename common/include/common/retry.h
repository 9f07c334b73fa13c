/* retry: when a failed call may be tried again (idempotent reads, UNAVAILABLE only), how long to
 * wait (exponential backoff with full jitter), and a budget so an outage is not multiplied. */
#ifndef COMMON_RETRY_H
#define COMMON_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

typedef struct retry_opts {
    int max_retries; /* per call (default 2) */
    int base_ms;     /* first backoff cap (default 25) */
    int max_ms;      /* backoff cap (default 250) */
    int budget_pct;  /* retries may be at most this % of calls (default 10) */
    int min_tokens;  /* retries always allowed at low volume (default 3) */
} retry_opts;

/* Thread-safe token budget (lock-free), as gRPC's retry throttling and Finagle's RetryBudget:
 * each call deposits budget_pct/100 of a token, each retry withdraws one. */
typedef struct retry_budget retry_budget;

retry_budget *retry_budget_new(const retry_opts *o); /* o NULL = defaults */
void retry_budget_free(retry_budget *b);             /* NULL ok */
void retry_budget_on_call(retry_budget *b);
/* Takes one token when available; false = do not retry. */
bool retry_budget_try_withdraw(retry_budget *b);

/* Whether "/pkg.Service/Method" is an idempotent read: Get*, List*, Check, BatchCheck, GetJwks,
 * ValidateToken, and grpc.health.v1.Health/Check. Writes are never retried. */
bool retry_is_idempotent(const char *full_method);
/* Whether this outcome may be retried at all (only UNAVAILABLE: the call did not reach a handler
 * or the handler could not start; a DEADLINE_EXCEEDED has used the budget of time). */
bool retry_is_retryable(err_code code);
/* Backoff before retry number attempt (1-based): uniform in [0, min(max_ms, base_ms *
 * 2^(attempt-1))]
 * ("full jitter"). rnd: a uniform 32-bit random value supplied by the caller (testable). */
int retry_backoff_ms(const retry_opts *o, int attempt, uint32_t rnd);

#endif
