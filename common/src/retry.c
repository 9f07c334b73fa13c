/* retry: idempotency by method name, retryable codes, full-jitter backoff, and the retry budget. */
#include "common/retry.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

/* Tokens are kept in thousandths so a 10 % deposit is an integer (100 milli-tokens a call). */
struct retry_budget {
    _Atomic int64_t milli;
    int64_t deposit_milli;
    int64_t cap_milli;
};

static retry_opts retry_defaults(const retry_opts *o)
{
    retry_opts r = {
        .max_retries = 2, .base_ms = 25, .max_ms = 250, .budget_pct = 10, .min_tokens = 3};
    if (o) {
        if (o->max_retries >= 0)
            r.max_retries = o->max_retries;
        if (o->base_ms > 0)
            r.base_ms = o->base_ms;
        if (o->max_ms > 0)
            r.max_ms = o->max_ms;
        if (o->budget_pct > 0)
            r.budget_pct = o->budget_pct;
        if (o->min_tokens > 0)
            r.min_tokens = o->min_tokens;
    }
    return r;
}

retry_budget *retry_budget_new(const retry_opts *o)
{
    retry_opts r = retry_defaults(o);
    retry_budget *b = xcalloc(1, sizeof *b);
    b->deposit_milli = r.budget_pct * 10;
    /* The cap bounds a burst of retries after a long quiet spell: at most min_tokens + a few. */
    b->cap_milli = (int64_t)r.min_tokens * 1000;
    atomic_init(&b->milli, b->cap_milli);
    return b;
}

void retry_budget_free(retry_budget *b)
{
    free(b);
}

void retry_budget_on_call(retry_budget *b)
{
    int64_t cur = atomic_load_explicit(&b->milli, memory_order_relaxed);
    while (cur < b->cap_milli) {
        int64_t next = cur + b->deposit_milli;
        if (next > b->cap_milli)
            next = b->cap_milli;
        if (atomic_compare_exchange_weak_explicit(&b->milli, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return;
    }
}

bool retry_budget_try_withdraw(retry_budget *b)
{
    int64_t cur = atomic_load_explicit(&b->milli, memory_order_relaxed);
    while (cur >= 1000) {
        if (atomic_compare_exchange_weak_explicit(&b->milli, &cur, cur - 1000, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

bool retry_is_idempotent(const char *full_method)
{
    if (!full_method)
        return false;
    if (strcmp(full_method, "/grpc.health.v1.Health/Check") == 0)
        return true;
    const char *m = strrchr(full_method, '/');
    if (!m)
        return false;
    m++;
    static const char *exact[] = {"Check", "BatchCheck", "GetJwks", "ValidateToken"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(m, exact[i]) == 0)
            return true;
    /* Get* / List* followed by an upper-case letter (GetUser, ListRoles), not e.g. "Getaway". */
    if ((strncmp(m, "Get", 3) == 0 && m[3] >= 'A' && m[3] <= 'Z') ||
        (strncmp(m, "List", 4) == 0 && m[4] >= 'A' && m[4] <= 'Z') ||
        (strncmp(m, "BatchGet", 8) == 0 && m[8] >= 'A' && m[8] <= 'Z'))
        return true;
    return false;
}

bool retry_is_retryable(err_code code)
{
    return code == ERR_UNAVAILABLE;
}

int retry_backoff_ms(const retry_opts *o, int attempt, uint32_t rnd)
{
    retry_opts r = retry_defaults(o);
    if (attempt < 1)
        attempt = 1;
    int64_t cap = r.base_ms;
    for (int i = 1; i < attempt && cap < r.max_ms; i++)
        cap *= 2;
    if (cap > r.max_ms)
        cap = r.max_ms;
    return (int)((uint64_t)rnd % (uint64_t)(cap + 1));
}
