/* breaker: circuit breaker state machine per call target (see breaker.h for the contract). */
#include "common/breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/mem.h"

#define OUT_FAIL 1u
#define OUT_SLOW 2u

/* Concurrency: one small mutex per breaker (never a global one) guards the window and the state
 * machine; it is held for a few dozen instructions and never across a call or a callback, so
 * uncontended it costs one atomic exchange pair. The hot path of a healthy target, breaker_allow
 * while CLOSED, takes no lock at all: `state` is an atomic read with acquire ordering (a call let
 * through a few nanoseconds after a concurrent trip is harmless). A lock-free window would need a
 * multi-word CAS for (ring slot, counts, state) and is not worth it at these rates. Counters read
 * by metrics are atomics so scrapes never take the lock either. */
struct breaker {
    char *target;
    breaker_opts o;
    pthread_mutex_t mu;
    _Atomic int state;
    atomic_uint_fast64_t rejected, transitions, opened;

    /* guarded by mu */
    uint8_t *ring; /* last `window` outcomes: OUT_FAIL | OUT_SLOW bits */
    int pos, calls, failures, slow;
    int64_t open_until;      /* OPEN: when half-open may begin */
    int64_t half_open_since; /* HALF_OPEN: when the current permit batch started */
    int permits_out;         /* HALF_OPEN: permits handed out in this batch */
    int successes;           /* HALF_OPEN: trial calls that succeeded */
};

static int64_t mono_ms(void *arg)
{
    (void)arg;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int def(int v, int d)
{
    return v > 0 ? v : d;
}
static int clamp_pct(int v)
{
    return v > 100 ? 100 : v;
}

breaker *breaker_new(const breaker_opts *o)
{
    breaker *b = xcalloc(1, sizeof *b);
    breaker_opts z = {0};
    b->o = o ? *o : z;
    b->target = xstrdup(b->o.target ? b->o.target : "");
    b->o.target = b->target;
    b->o.window = def(b->o.window, 20);
    b->o.min_calls = def(b->o.min_calls, 10);
    if (b->o.min_calls > b->o.window)
        b->o.min_calls = b->o.window;
    b->o.failure_rate_pct = clamp_pct(def(b->o.failure_rate_pct, 50));
    b->o.slow_call_rate_pct = clamp_pct(def(b->o.slow_call_rate_pct, 100));
    if (b->o.slow_call_ms < 0)
        b->o.slow_call_ms = 0;
    b->o.open_wait_ms = def(b->o.open_wait_ms, 10000);
    b->o.half_open_calls = def(b->o.half_open_calls, 3);
    if (!b->o.now_ms)
        b->o.now_ms = mono_ms;
    b->ring = xcalloc((size_t)b->o.window, 1);
    pthread_mutex_init(&b->mu, NULL);
    atomic_init(&b->state, BREAKER_CLOSED);
    atomic_init(&b->rejected, 0);
    atomic_init(&b->transitions, 0);
    atomic_init(&b->opened, 0);
    return b;
}

void breaker_free(breaker *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b->ring);
    free(b->target);
    free(b);
}

bool breaker_is_failure(err_code code)
{
    return code == ERR_UNAVAILABLE || code == ERR_DEADLINE_EXCEEDED || code == ERR_INTERNAL ||
           code == ERR_UNKNOWN;
}

static void window_reset(breaker *b)
{
    memset(b->ring, 0, (size_t)b->o.window);
    b->pos = b->calls = b->failures = b->slow = 0;
}

/* Under mu. Returns the previous state so the caller reports the transition after unlocking. */
static breaker_state set_state(breaker *b, breaker_state to, int64_t now)
{
    breaker_state from = (breaker_state)atomic_load_explicit(&b->state, memory_order_relaxed);
    switch (to) {
    case BREAKER_OPEN:
        b->open_until = now + b->o.open_wait_ms;
        atomic_fetch_add_explicit(&b->opened, 1, memory_order_relaxed);
        break;
    case BREAKER_HALF_OPEN:
        b->half_open_since = now;
        b->permits_out = 0;
        b->successes = 0;
        break;
    case BREAKER_CLOSED:
        window_reset(b);
        break;
    }
    atomic_fetch_add_explicit(&b->transitions, 1, memory_order_relaxed);
    atomic_store_explicit(&b->state, to, memory_order_release);
    return from;
}

static void report(breaker *b, breaker_state from, breaker_state to)
{
    if (b->o.on_transition)
        b->o.on_transition(b->o.transition_arg, b->target, from, to);
}

bool breaker_allow(breaker *b, int64_t *retry_after_ms)
{
    if (b->o.mode == BREAKER_DISABLED)
        return true;
    if (b->o.mode == BREAKER_FORCED_OPEN) {
        atomic_fetch_add_explicit(&b->rejected, 1, memory_order_relaxed);
        if (retry_after_ms)
            *retry_after_ms = b->o.open_wait_ms;
        return false;
    }
    if (atomic_load_explicit(&b->state, memory_order_acquire) == BREAKER_CLOSED)
        return true;

    int64_t now = b->o.now_ms(b->o.clock_arg);
    bool ok = false, moved = false;
    breaker_state from = BREAKER_OPEN;
    int64_t wait = 0;
    pthread_mutex_lock(&b->mu);
    breaker_state s = (breaker_state)atomic_load_explicit(&b->state, memory_order_relaxed);
    if (s == BREAKER_OPEN && now >= b->open_until) {
        from = set_state(b, BREAKER_HALF_OPEN, now);
        moved = true;
        s = BREAKER_HALF_OPEN;
    }
    switch (s) {
    case BREAKER_CLOSED: /* closed by another thread since our unlocked read */
        ok = true;
        break;
    case BREAKER_OPEN:
        wait = b->open_until - now;
        break;
    case BREAKER_HALF_OPEN:
        if (b->permits_out >= b->o.half_open_calls &&
            now - b->half_open_since >= b->o.open_wait_ms) {
            /* The trial results never came back (a caller broke the allow/record contract or
             * is stuck): start a fresh batch rather than stay wedged in half-open forever. */
            b->half_open_since = now;
            b->permits_out = 0;
            b->successes = 0;
        }
        if (b->permits_out < b->o.half_open_calls) {
            b->permits_out++;
            ok = true;
        } else {
            /* Trials in flight: come back when they could have finished. */
            wait = b->half_open_since + b->o.open_wait_ms - now;
        }
        break;
    }
    pthread_mutex_unlock(&b->mu);
    if (moved)
        report(b, from, BREAKER_HALF_OPEN);
    if (!ok) {
        atomic_fetch_add_explicit(&b->rejected, 1, memory_order_relaxed);
        if (retry_after_ms)
            *retry_after_ms = wait > 0 ? wait : 1;
    }
    return ok;
}

void breaker_record(breaker *b, err_code code, int64_t duration_ms)
{
    if (b->o.mode != BREAKER_NORMAL)
        return;
    bool fail = breaker_is_failure(code);
    bool slow = b->o.slow_call_ms > 0 && duration_ms >= b->o.slow_call_ms;
    int64_t now = b->o.now_ms(b->o.clock_arg);
    bool moved = false;
    breaker_state from = BREAKER_CLOSED, to = BREAKER_CLOSED;

    pthread_mutex_lock(&b->mu);
    breaker_state s = (breaker_state)atomic_load_explicit(&b->state, memory_order_relaxed);
    if (s == BREAKER_CLOSED && code != ERR_CANCELLED) {
        uint8_t old = b->ring[b->pos];
        if (b->calls == b->o.window) { /* full: the oldest outcome leaves the window */
            b->failures -= (old & OUT_FAIL) != 0;
            b->slow -= (old & OUT_SLOW) != 0;
        } else {
            b->calls++;
        }
        b->ring[b->pos] = (uint8_t)((fail ? OUT_FAIL : 0) | (slow ? OUT_SLOW : 0));
        b->pos = (b->pos + 1) % b->o.window;
        b->failures += fail;
        b->slow += slow;
        if (b->calls >= b->o.min_calls &&
            ((int64_t)b->failures * 100 >= (int64_t)b->o.failure_rate_pct * b->calls ||
             (b->o.slow_call_ms > 0 &&
              (int64_t)b->slow * 100 >= (int64_t)b->o.slow_call_rate_pct * b->calls))) {
            from = set_state(b, BREAKER_OPEN, now);
            to = BREAKER_OPEN;
            moved = true;
        }
    } else if (s == BREAKER_HALF_OPEN) {
        if (code == ERR_CANCELLED) {
            if (b->permits_out > 0)
                b->permits_out--; /* give the permit back: this trial taught nothing */
        } else if (fail || slow) {
            from = set_state(b, BREAKER_OPEN, now);
            to = BREAKER_OPEN;
            moved = true;
        } else if (++b->successes >= b->o.half_open_calls) {
            from = set_state(b, BREAKER_CLOSED, now);
            to = BREAKER_CLOSED;
            moved = true;
        }
    }
    /* OPEN: a late answer to a call permitted before the trip; it changes nothing. */
    pthread_mutex_unlock(&b->mu);
    if (moved)
        report(b, from, to);
}

breaker_state breaker_state_get(breaker *b)
{
    if (b->o.mode == BREAKER_FORCED_OPEN)
        return BREAKER_OPEN;
    if (b->o.mode == BREAKER_DISABLED)
        return BREAKER_CLOSED;
    return (breaker_state)atomic_load_explicit(&b->state, memory_order_acquire);
}

breaker_mode breaker_mode_get(const breaker *b)
{
    return b->o.mode;
}
const char *breaker_target(const breaker *b)
{
    return b->target;
}

uint64_t breaker_rejected(breaker *b)
{
    return atomic_load_explicit(&b->rejected, memory_order_relaxed);
}

uint64_t breaker_transitions(breaker *b)
{
    return atomic_load_explicit(&b->transitions, memory_order_relaxed);
}

void breaker_stats_get(breaker *b, breaker_stats *out)
{
    pthread_mutex_lock(&b->mu);
    out->window_calls = b->calls;
    out->window_failures = b->failures;
    out->window_slow = b->slow;
    pthread_mutex_unlock(&b->mu);
    out->state = breaker_state_get(b);
    out->rejected = breaker_rejected(b);
    out->transitions = breaker_transitions(b);
    out->opened = atomic_load_explicit(&b->opened, memory_order_relaxed);
}

const char *breaker_state_name(breaker_state s)
{
    switch (s) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}
