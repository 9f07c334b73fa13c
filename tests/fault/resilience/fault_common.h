/* fault_common: helpers shared by the fault tests: JSON calls through the gateway, metric scrapes,
 * psql/redis-cli queries, a PostgreSQL table lock held in the background, latency percentiles. */
#ifndef FAULT_COMMON_H
#define FAULT_COMMON_H

#include <jansson.h>
#include <stddef.h>

#include "http_client.h"
#include "test_support.h"

/* One HTTP answer, with its JSON body parsed (NULL when not JSON) and its timing. */
typedef struct fc_res {
    int status; /* 0 = no answer (refused, reset, time-out) */
    json_t *j;
    http_resp r;
    long long t0, t1; /* monotonic ms: before connecting, after the answer */
} fc_res;

void fc_res_free(fc_res *x);
/* A request to 127.0.0.1:port with an optional bearer token and JSON body. */
int fc_call(int port, const char *method, const char *path, const char *token, const char *body,
            int timeout_ms, fc_res *out);
/* A string member of a JSON object ("" when absent). */
const char *fc_jstr(json_t *j, const char *key);

/* POST /v1/auth/register; on 201 copies the access token and the user id. Returns the status. */
int fc_register(int port, const char *email, const char *password, char *token, size_t tl, char *id,
                size_t il);
/* POST /v1/auth/login; on 200 copies the access token. Returns the status. */
int fc_login(int port, const char *email, const char *password, char *token, size_t tl);

/* Value of the first Prometheus sample whose line starts with `series` (e.g.
 * `circuit_breaker_state{target="user"}`) on GET http://127.0.0.1:port/metrics; -1 when absent
 * or the scrape failed. */
double fc_metric(int port, const char *series);

/* Runs psql as postgres in dbname and returns its unaligned, tuples-only output (malloc'ed; NULL on
 * failure). */
char *fc_psql_query(const char *dbname, const char *sql);
/* Runs redis-cli --raw against the harness Redis db and returns its output (malloc'ed). */
char *fc_redis(int db, const char *args);

/* Holds LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE in dbname for hold_ms from a background psql
 * (so a service's statements on it block while holding their pool connection). Returns the psql
 * pid once the lock is granted (-1 if it was not within 5 s). Reap it with fc_lock_wait. */
int fc_lock_table(const char *dbname, const char *table, int hold_ms);
/* Waits for the lock holder to exit (up to timeout_ms; then kills it); returns its exit status. */
int fc_lock_wait(int pid, int timeout_ms);

/* The p-th percentile (0..100) of n values (sorts v). 0 when n == 0. */
long long fc_percentile(long long *v, size_t n, double p);

/* Every harness server up again (registered with atexit by fault tests that stop one). */
void fc_harness_ensure(void);

#endif
