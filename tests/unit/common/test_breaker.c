/* Unit tests for breaker: every state transition walked with a fake clock, the failure-code table,
 * slow calls, modes, callbacks, and consistency under concurrent allow/record. */
#include "common/breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "test_support.h"

static _Atomic int64_t fake_now;
static int64_t fake_clock(void *arg)
{
    (void)arg;
    return atomic_load(&fake_now);
}

#define MAXT 64
static struct {
    breaker_state from, to;
} seen[MAXT];
static atomic_int nseen;
static const char *seen_target;

static void on_tr(void *arg, const char *target, breaker_state from, breaker_state to)
{
    (void)arg;
    int i = atomic_fetch_add(&nseen, 1);
    if (i < MAXT) {
        seen[i].from = from;
        seen[i].to = to;
    }
    if (i == 0) /* one writer per test, even when transitions come from several threads */
        seen_target = target;
}

static breaker *mk(breaker_opts o)
{
    atomic_store(&fake_now, 1000);
    atomic_store(&nseen, 0);
    o.target = o.target ? o.target : "user";
    o.now_ms = fake_clock;
    o.on_transition = on_tr;
    return breaker_new(&o);
}

static void expect_seen(int i, breaker_state from, breaker_state to)
{
    CU_ASSERT_FATAL(i < atomic_load(&nseen));
    CU_ASSERT_EQUAL(seen[i].from, from);
    CU_ASSERT_EQUAL(seen[i].to, to);
}

/* One permitted call with outcome code. */
static void call(breaker *b, err_code code, int64_t ms)
{
    CU_ASSERT_TRUE_FATAL(breaker_allow(b, NULL));
    breaker_record(b, code, ms);
}

static void test_names_and_codes(void)
{
    CU_ASSERT_STRING_EQUAL(breaker_state_name(BREAKER_CLOSED), "closed");
    CU_ASSERT_STRING_EQUAL(breaker_state_name(BREAKER_OPEN), "open");
    CU_ASSERT_STRING_EQUAL(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
    CU_ASSERT_EQUAL(BREAKER_CLOSED, 0);
    CU_ASSERT_EQUAL(BREAKER_OPEN, 1);
    CU_ASSERT_EQUAL(BREAKER_HALF_OPEN, 2);
    for (int c = 0; c <= 16; c++) {
        bool want = c == ERR_UNAVAILABLE || c == ERR_DEADLINE_EXCEEDED || c == ERR_INTERNAL ||
                    c == ERR_UNKNOWN;
        CU_ASSERT_EQUAL(breaker_is_failure((err_code)c), want);
    }
    breaker *b = breaker_new(NULL); /* all defaults, real clock */
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    CU_ASSERT_STRING_EQUAL(breaker_target(b), "");
    for (int i = 0; i < 9; i++)
        call(b, ERR_UNAVAILABLE, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED); /* default min_calls 10 */
    call(b, ERR_UNAVAILABLE, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    int64_t ra = 0;
    CU_ASSERT_FALSE(breaker_allow(b, &ra));
    CU_ASSERT(ra > 9000 && ra <= 10000); /* default open wait 10 s */
    breaker_free(b);
    breaker_free(NULL);
}

static void test_min_calls(void)
{
    breaker *b = mk((breaker_opts){0});
    for (int i = 0; i < 9; i++)
        call(b, ERR_UNAVAILABLE, 1);
    breaker_stats st;
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 9);
    CU_ASSERT_EQUAL(st.window_failures, 9);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED); /* 100% failures, but only 9 calls */
    CU_ASSERT_EQUAL(atomic_load(&nseen), 0);
    call(b, ERR_DEADLINE_EXCEEDED, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    CU_ASSERT_EQUAL(atomic_load(&nseen), 1);
    expect_seen(0, BREAKER_CLOSED, BREAKER_OPEN);
    CU_ASSERT_STRING_EQUAL(seen_target, "user");
    breaker_free(b);
}

static void test_threshold(void)
{
    breaker *b = mk((breaker_opts){.window = 20, .min_calls = 10, .failure_rate_pct = 50});
    for (int i = 0; i < 5; i++)
        call(b, ERR_OK, 1);
    for (int i = 0; i < 4; i++)
        call(b, ERR_INTERNAL, 1);
    call(b, ERR_OK, 1); /* 4/10 = 40% */
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    call(b, ERR_UNKNOWN, 1); /* 5/11 = 45% */
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    call(b, ERR_UNAVAILABLE, 1); /* 6/12 = 50%: trips exactly at the threshold */
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    breaker_stats st;
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.opened, 1);
    CU_ASSERT_EQUAL(st.transitions, 1);
    breaker_free(b);
}

static void test_sliding_window(void)
{
    breaker *b = mk((breaker_opts){.window = 10, .min_calls = 10, .failure_rate_pct = 50});
    for (int i = 0; i < 4; i++)
        call(b, ERR_UNAVAILABLE, 1);
    for (int i = 0; i < 6; i++)
        call(b, ERR_OK, 1);
    breaker_stats st;
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 10);
    CU_ASSERT_EQUAL(st.window_failures, 4);
    for (int i = 0; i < 4; i++) /* the four old failures slide out */
        call(b, ERR_OK, 1);
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 10);
    CU_ASSERT_EQUAL(st.window_failures, 0);
    for (int i = 0; i < 4; i++)
        call(b, ERR_UNAVAILABLE, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED); /* 4/10 */
    call(b, ERR_UNAVAILABLE, 1);                           /* 5/10 */
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    breaker_free(b);
}

static void test_non_failures_never_trip(void)
{
    breaker *b = mk((breaker_opts){.window = 10, .min_calls = 5, .failure_rate_pct = 10});
    static const err_code ok_codes[] = {ERR_OK,
                                        ERR_NOT_FOUND,
                                        ERR_INVALID_ARGUMENT,
                                        ERR_ALREADY_EXISTS,
                                        ERR_PERMISSION_DENIED,
                                        ERR_UNAUTHENTICATED,
                                        ERR_FAILED_PRECONDITION,
                                        ERR_RESOURCE_EXHAUSTED,
                                        ERR_ABORTED,
                                        ERR_OUT_OF_RANGE,
                                        ERR_UNIMPLEMENTED,
                                        ERR_DATA_LOSS,
                                        ERR_CANCELLED};
    for (int r = 0; r < 20; r++)
        for (size_t i = 0; i < sizeof ok_codes / sizeof ok_codes[0]; i++)
            call(b, ok_codes[i], 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    CU_ASSERT_EQUAL(breaker_transitions(b), 0);
    breaker_stats st;
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.window_failures, 0);
    breaker_free(b);
}

/* Trips a fresh breaker (min_calls failures) at the current fake time. */
static void trip(breaker *b, int n)
{
    for (int i = 0; i < n; i++)
        call(b, ERR_UNAVAILABLE, 1);
    CU_ASSERT_EQUAL_FATAL(breaker_state_get(b), BREAKER_OPEN);
}

static void test_open_half_open_closed(void)
{
    breaker *b = mk((breaker_opts){.min_calls = 4, .open_wait_ms = 10000, .half_open_calls = 3});
    trip(b, 4); /* opened at t=1000 */
    int64_t ra = -1;
    CU_ASSERT_FALSE(breaker_allow(b, &ra));
    CU_ASSERT_EQUAL(ra, 10000);
    atomic_store(&fake_now, 4000);
    CU_ASSERT_FALSE(breaker_allow(b, &ra));
    CU_ASSERT_EQUAL(ra, 7000);
    atomic_store(&fake_now, 10999);
    CU_ASSERT_FALSE(breaker_allow(b, &ra));
    CU_ASSERT_EQUAL(ra, 1);
    CU_ASSERT_FALSE(breaker_allow(b, NULL)); /* NULL retry_after is fine */
    CU_ASSERT_EQUAL(breaker_rejected(b), 4);
    /* A late answer to a call let through before the trip changes nothing. */
    breaker_record(b, ERR_OK, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);

    atomic_store(&fake_now, 11000); /* open wait over: the next allow goes half-open */
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    CU_ASSERT_TRUE(breaker_allow(b, &ra));
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_HALF_OPEN);
    expect_seen(1, BREAKER_OPEN, BREAKER_HALF_OPEN);
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    ra = -1;
    CU_ASSERT_FALSE(breaker_allow(b, &ra)); /* exactly 3 trial permits */
    CU_ASSERT(ra > 0);
    CU_ASSERT_EQUAL(breaker_rejected(b), 5);
    breaker_record(b, ERR_OK, 1);
    breaker_record(b, ERR_NOT_FOUND, 1); /* the target answered: a success */
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_HALF_OPEN);
    CU_ASSERT_FALSE(breaker_allow(b, NULL)); /* results in, but the batch is spent */
    breaker_record(b, ERR_OK, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    expect_seen(2, BREAKER_HALF_OPEN, BREAKER_CLOSED);
    breaker_stats st;
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 0); /* window reset on closing */
    /* Closed again: needs min_calls fresh failures to trip. */
    for (int i = 0; i < 3; i++)
        call(b, ERR_UNAVAILABLE, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    call(b, ERR_UNAVAILABLE, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    CU_ASSERT_EQUAL(atomic_load(&nseen), 4);
    CU_ASSERT_EQUAL(breaker_transitions(b), 4);
    breaker_free(b);
}

static void test_half_open_failure_reopens(void)
{
    breaker *b = mk((breaker_opts){.min_calls = 2, .open_wait_ms = 500, .half_open_calls = 3});
    trip(b, 2);
    atomic_store(&fake_now, 1500);
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    breaker_record(b, ERR_OK, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_HALF_OPEN);
    atomic_store(&fake_now, 1600);
    breaker_record(b, ERR_DEADLINE_EXCEEDED, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    expect_seen(2, BREAKER_HALF_OPEN, BREAKER_OPEN);
    int64_t ra = 0;
    CU_ASSERT_FALSE(breaker_allow(b, &ra));
    CU_ASSERT_EQUAL(ra, 500); /* a full new open wait from the failure */
    atomic_store(&fake_now, 2100);
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_HALF_OPEN);
    breaker_stats st;
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.opened, 2);
    CU_ASSERT_EQUAL(st.transitions, 4);
    CU_ASSERT_EQUAL(atomic_load(&nseen), 4);
    breaker_free(b);
}

static void test_half_open_cancel_and_stuck(void)
{
    breaker *b = mk((breaker_opts){.min_calls = 2, .open_wait_ms = 1000, .half_open_calls = 2});
    trip(b, 2);
    atomic_store(&fake_now, 2000);
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    CU_ASSERT_FALSE(breaker_allow(b, NULL));
    breaker_record(b, ERR_CANCELLED, 1); /* permit returned, nothing learned */
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_HALF_OPEN);
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    CU_ASSERT_FALSE(breaker_allow(b, NULL));
    /* The trials never report back: after another open wait a fresh batch is permitted. */
    atomic_store(&fake_now, 2999);
    int64_t ra = 0;
    CU_ASSERT_FALSE(breaker_allow(b, &ra));
    CU_ASSERT_EQUAL(ra, 1);
    atomic_store(&fake_now, 3000);
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    CU_ASSERT_FALSE(breaker_allow(b, NULL));
    breaker_record(b, ERR_OK, 1);
    breaker_record(b, ERR_OK, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    /* CANCELLED while closed is not recorded in the window. */
    call(b, ERR_CANCELLED, 1);
    breaker_stats st;
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.window_calls, 0);
    breaker_free(b);
}

static void test_slow_calls(void)
{
    breaker *b = mk((breaker_opts){.window = 10,
                                   .min_calls = 10,
                                   .slow_call_ms = 500,
                                   .slow_call_rate_pct = 50,
                                   .open_wait_ms = 100});
    for (int i = 0; i < 5; i++)
        call(b, ERR_OK, 10);
    for (int i = 0; i < 4; i++)
        call(b, ERR_OK, 500); /* at the threshold counts as slow */
    call(b, ERR_OK, 499);
    breaker_stats st;
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.window_slow, 4);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED); /* 4/10 slow */
    call(b, ERR_OK, 5000);                                 /* 5/10 slow */
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    /* In half-open a slow trial fails the trial. */
    atomic_store(&fake_now, 1100);
    call(b, ERR_OK, 600);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    expect_seen(2, BREAKER_HALF_OPEN, BREAKER_OPEN);
    breaker_free(b);

    /* slow_call_ms = 0: durations are ignored. */
    b = mk((breaker_opts){.window = 10, .min_calls = 10});
    for (int i = 0; i < 30; i++)
        call(b, ERR_OK, 60000);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    breaker_free(b);
}

static void test_modes(void)
{
    breaker *b = mk((breaker_opts){.mode = BREAKER_FORCED_OPEN, .open_wait_ms = 3000});
    int64_t ra = 0;
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_FALSE(breaker_allow(b, &ra));
        CU_ASSERT_EQUAL(ra, 3000);
        atomic_fetch_add(&fake_now, 100000);
    }
    breaker_record(b, ERR_OK, 1);
    CU_ASSERT_FALSE(breaker_allow(b, NULL));
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_OPEN);
    CU_ASSERT_EQUAL(breaker_mode_get(b), BREAKER_FORCED_OPEN);
    CU_ASSERT_EQUAL(breaker_rejected(b), 6);
    CU_ASSERT_EQUAL(atomic_load(&nseen), 0);
    breaker_free(b);

    b = mk((breaker_opts){.mode = BREAKER_DISABLED, .min_calls = 1});
    for (int i = 0; i < 100; i++)
        call(b, ERR_UNAVAILABLE, 99999);
    CU_ASSERT_TRUE(breaker_allow(b, NULL));
    breaker_record(b, ERR_OK, 1);
    CU_ASSERT_EQUAL(breaker_state_get(b), BREAKER_CLOSED);
    CU_ASSERT_EQUAL(breaker_rejected(b), 0);
    CU_ASSERT_EQUAL(breaker_transitions(b), 0);
    CU_ASSERT_EQUAL(atomic_load(&nseen), 0);
    breaker_free(b);
}

/* Several threads hammer one breaker while the clock moves: counts must stay consistent. */
typedef struct worker {
    breaker *b;
    unsigned seed;
    long allowed, rejected, bad_snapshots;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < 20000; i++) {
        w->seed = w->seed * 1103515245u + 12345u;
        unsigned r = (w->seed >> 16) % 100;
        if (breaker_allow(w->b, NULL)) {
            w->allowed++;
            breaker_record(w->b, r < 40 ? ERR_UNAVAILABLE : (r < 45 ? ERR_CANCELLED : ERR_OK),
                           r % 7);
        } else {
            w->rejected++;
        }
        if (r == 0)
            atomic_fetch_add(&fake_now, 7);
        if (r == 1) { /* CUnit is not thread-safe: count bad snapshots, assert in main */
            breaker_stats st;
            breaker_stats_get(w->b, &st);
            if (st.window_calls < 0 || st.window_calls > 20 || st.window_failures < 0 ||
                st.window_failures > st.window_calls || st.window_slow > st.window_calls)
                w->bad_snapshots++;
        }
    }
    return NULL;
}

static void test_concurrent(void)
{
    breaker *b = mk((breaker_opts){
        .open_wait_ms = 5, .half_open_calls = 3, .slow_call_ms = 6, .slow_call_rate_pct = 90});
    enum { N = 4 };
    pthread_t th[N];
    worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker){.b = b, .seed = 77u + (unsigned)i};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    long allowed = 0, rejected = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        allowed += w[i].allowed;
        rejected += w[i].rejected;
        CU_ASSERT_EQUAL(w[i].bad_snapshots, 0);
    }
    CU_ASSERT_EQUAL(allowed + rejected, N * 20000);
    CU_ASSERT_EQUAL((long)breaker_rejected(b), rejected);
    CU_ASSERT(rejected > 0 && allowed > 0); /* 40% failures: it did trip and recover */
    breaker_stats st;
    breaker_stats_get(b, &st);
    CU_ASSERT_EQUAL(st.transitions, (uint64_t)atomic_load(&nseen));
    CU_ASSERT(st.opened >= 1 && st.transitions >= 2);
    /* Each trip is followed by at most one half-open and one close/reopen. */
    CU_ASSERT(st.transitions <= 3 * st.opened);
    breaker_free(b);
}

int main(void)
{
    static const ts_case cases[] = {
        {"names, failure codes, defaults", test_names_and_codes},
        {"closed below min_calls", test_min_calls},
        {"trips at the threshold", test_threshold},
        {"sliding window", test_sliding_window},
        {"non-failure codes never trip", test_non_failures_never_trip},
        {"open, half-open, closed", test_open_half_open_closed},
        {"half-open failure reopens", test_half_open_failure_reopens},
        {"half-open cancel and stuck permits", test_half_open_cancel_and_stuck},
        {"slow calls", test_slow_calls},
        {"forced open and disabled", test_modes},
        {"concurrent allow/record", test_concurrent},
        {NULL, NULL}};
    return ts_main("breaker", cases);
}
