/* breaker: a per-target circuit breaker (count-based sliding window, failure and slow-call rates,
 * open → half-open → closed), with an injectable clock so tests walk every transition. */
#ifndef COMMON_BREAKER_H
#define COMMON_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/* Values are the circuit_breaker_state{target} gauge: 0 closed, 1 open, 2 half-open. */
typedef enum breaker_state {
    BREAKER_CLOSED = 0,
    BREAKER_OPEN = 1,
    BREAKER_HALF_OPEN = 2
} breaker_state;

typedef enum breaker_mode {
    BREAKER_NORMAL = 0,
    BREAKER_FORCED_OPEN, /* every call rejected (operator switch), state reads OPEN */
    BREAKER_DISABLED,    /* every call allowed, nothing recorded, state reads CLOSED */
} breaker_mode;

/* Zero in a numeric field means its default (so `breaker_opts o = {.target = "user"}` works). */
typedef struct breaker_opts {
    const char *target;     /* name for logs and metrics; copied */
    int window;             /* last N calls considered (20) */
    int min_calls;          /* calls in the window before it may trip (10; capped at window) */
    int failure_rate_pct;   /* trips when failures * 100 >= pct * calls (50) */
    int slow_call_ms;       /* a call this long or longer is slow; 0 = slow calls ignored */
    int slow_call_rate_pct; /* trips when slow * 100 >= pct * calls (100) */
    int open_wait_ms;       /* time open before half-open (10000) */
    int half_open_calls;    /* trial calls permitted in half-open (3) */
    breaker_mode mode;      /* BREAKER_NORMAL */
    int64_t (*now_ms)(void *arg); /* monotonic milliseconds; NULL = CLOCK_MONOTONIC */
    void *clock_arg;
    /* Called once per transition, outside the breaker's lock (it may call breaker_* getters);
     * concurrent transitions may be reported out of order. NULL = none. */
    void (*on_transition)(void *arg, const char *target, breaker_state from, breaker_state to);
    void *transition_arg;
} breaker_opts;

typedef struct breaker breaker;

typedef struct breaker_stats {
    breaker_state state;
    uint64_t rejected;                              /* calls refused by breaker_allow */
    uint64_t transitions;                           /* state changes of any kind */
    uint64_t opened;                                /* transitions into OPEN (trips) */
    int window_calls, window_failures, window_slow; /* current closed-state window */
} breaker_stats;

/* Never NULL (aborts on OOM). Thread-safe once created. */
breaker *breaker_new(const breaker_opts *o);
void breaker_free(breaker *b); /* NULL ok */

/* Before a call: true = go ahead (the caller MUST then call breaker_record exactly once).
 * false = fail at once with UNAVAILABLE "circuit open: <target>"; *retry_after_ms (may be NULL)
 * gets the remaining open time (at least 1; open_wait_ms when forced open). In half-open only
 * half_open_calls permits are handed out until their results are in (if they never come back
 * within open_wait_ms, a new batch is permitted, so a lost permit cannot wedge the breaker). */
bool breaker_allow(breaker *b, int64_t *retry_after_ms);

/* After a permitted call: its status and duration. Failures are UNAVAILABLE, DEADLINE_EXCEEDED,
 * INTERNAL and UNKNOWN only (NOT_FOUND etc. mean the target answered). A call of slow_call_ms or
 * more is slow (counted separately, whatever its status; in half-open a slow call fails the
 * trial). CANCELLED (our caller gave up) teaches nothing: it only returns a half-open permit. */
void breaker_record(breaker *b, err_code code, int64_t duration_ms);

/* True for the codes that count as failures. */
bool breaker_is_failure(err_code code);

breaker_state breaker_state_get(breaker *b); /* lock-free */
breaker_mode breaker_mode_get(const breaker *b);
const char *breaker_target(const breaker *b);
uint64_t breaker_rejected(breaker *b);
uint64_t breaker_transitions(breaker *b);
void breaker_stats_get(breaker *b, breaker_stats *out);

/* "closed", "open", "half_open". */
const char *breaker_state_name(breaker_state s);

#endif
