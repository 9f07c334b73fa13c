/* e2e_gateway_breaker: the four binaries; the gateway's breakers made small (window 4, 4 calls,
 * open 30 s, no retries). The user service is SIGKILLed: GET /v1/users/me first answers 503 "user
 * service unavailable", then, once the circuit is open, 503 "circuit open: user" at once with
 * Retry-After = the remaining open time (close to 30 s, not the generic 1 s) and a RetryInfo
 * detail; routes of other services keep working; /ready is 503 and names the open breaker; /metrics
 * has circuit_breaker_state{target="user"} 1. */
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_client.h"
#include "test_support.h"

#define OPEN_S 30

static ts_stack g_stack;
static bool g_up;
static char g_auth[2200]; /* "Authorization: Bearer <token>\r\n" */

static void test_start(void)
{
    /* No retries: one attempt per request, so the request that trips the breaker is known. */
    static char *const env_gw[] = {"BREAKER_WINDOW=4", "BREAKER_MIN_CALLS=4",
                                   "BREAKER_OPEN_MS=30000", "RPC_RETRY_MAX=0", NULL};
    ts_stack_opts o = {.dbname = "t_e2e_breaker", .redis_db = 47};
    o.env[TS_GW] = env_gw;
    CU_ASSERT_FATAL(ts_stack_start(&g_stack, &o) == 0);
    g_up = true;
    const char *body = "{\"email\":\"breaker@example.com\",\"password\":\"Breaker-Passw0rd!\","
                       "\"display_name\":\"Breaker\"}";
    http_resp r;
    http_do(g_stack.port[TS_GW], "POST", "/v1/auth/register", "Content-Type: application/json\r\n",
            body, strlen(body), 10000, &r);
    if (r.status != 201)
        fprintf(stderr, "register: %d %s\n", r.status, r.body ? r.body : "");
    CU_ASSERT_EQUAL(r.status, 201);
    json_error_t je;
    json_t *j = json_loads(r.body, 0, &je);
    const char *tok = json_string_value(json_object_get(j, "access_token"));
    CU_ASSERT(tok && strlen(tok) < 2000);
    if (tok)
        snprintf(g_auth, sizeof g_auth, "Authorization: Bearer %s\r\n", tok);
    json_decref(j);
    http_resp_free(&r);
    CU_ASSERT_FATAL(g_auth[0] != 0);
}

static int get(const char *path, const char *hdrs, http_resp *r)
{
    http_do(g_stack.port[TS_GW], "GET", path, hdrs, NULL, 0, 10000, r);
    return r->status;
}

static void test_open_circuit_is_503_with_retry_after(void)
{
    CU_ASSERT_FATAL(g_up);
    http_resp r;
    CU_ASSERT_EQUAL(get("/v1/users/me", g_auth, &r), 200);
    http_resp_free(&r);
    CU_ASSERT_EQUAL(ts_stack_kill(&g_stack, TS_USER, SIGKILL, 2000), 128 + SIGKILL);

    int unavailable = 0, open_at = -1, other = 0;
    for (int i = 0; i < 20 && open_at < 0; i++) {
        long long t0 = ts_now_ms();
        int st = get("/v1/users/me", g_auth, &r);
        long long took = ts_now_ms() - t0;
        char ra[32] = "";
        bool has_ra = http_header(&r, "Retry-After", ra, sizeof ra) != NULL;
        if (st == 503 && r.body && strstr(r.body, "circuit open: user")) {
            open_at = i;
            /* The remaining open time, rounded up: not the generic 1 s. */
            int secs = (int)strtol(ra, NULL, 10);
            CU_ASSERT(has_ra && secs >= OPEN_S - 5 && secs <= OPEN_S);
            CU_ASSERT(took < 500); /* refused at once, nothing sent upstream */
            json_error_t je;
            json_t *j = json_loads(r.body, 0, &je);
            CU_ASSERT_PTR_NOT_NULL(j);
            CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "status")), "UNAVAILABLE");
            CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "google.rpc.RetryInfo"));
            char delay[32];
            snprintf(delay, sizeof delay, "\"%ds\"", secs);
            CU_ASSERT_PTR_NOT_NULL(strstr(r.body, delay));
            json_decref(j);
        } else if (st == 503) {
            unavailable++;
            CU_ASSERT(has_ra);
            CU_ASSERT_PTR_NOT_NULL(strstr(r.body ? r.body : "", "user service unavailable"));
            /* Addresses and library errors stay in the log. */
            CU_ASSERT_PTR_NULL(strstr(r.body ? r.body : "", "127.0.0.1"));
        } else {
            other++;
            fprintf(stderr, "unexpected %d: %s\n", st, r.body ? r.body : "");
        }
        http_resp_free(&r);
    }
    CU_ASSERT_EQUAL(other, 0);
    CU_ASSERT(unavailable >= 1);             /* real failures first ... */
    CU_ASSERT(open_at >= 1 && open_at <= 4); /* ... then the window (4 calls) trips it */
    CU_ASSERT_EQUAL(get("/v1/users/me", g_auth, &r), 503);
    http_resp_free(&r);

    /* Other services' routes are unaffected (JWKS is auth's). */
    CU_ASSERT_EQUAL(get("/.well-known/jwks.json", NULL, &r), 200);
    http_resp_free(&r);

    /* /ready: 503, user NOT_SERVING, the breaker shown open, the others closed. */
    CU_ASSERT_EQUAL(get("/ready", NULL, &r), 503);
    json_error_t je;
    json_t *j = json_loads(r.body ? r.body : "", 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    json_t *b = json_object_get(j, "breakers");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "user")), "open");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "auth")), "closed");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "permission")), "closed");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(j, "checks"), "user")),
                           "NOT_SERVING");
    json_decref(j);
    http_resp_free(&r);

    /* /metrics: the state gauge from rpc_client (one family, no duplicate from the gateway). */
    CU_ASSERT_EQUAL(get("/metrics", NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\ncircuit_breaker_state{target=\"user\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\ncircuit_breaker_state{target=\"auth\"} 0\n"));
    const char *t1 = strstr(r.body, "# TYPE circuit_breaker_state ");
    CU_ASSERT_PTR_NOT_NULL(t1);
    CU_ASSERT_PTR_NULL(t1 ? strstr(t1 + 1, "# TYPE circuit_breaker_state ") : NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "circuit_breaker_rejected_total{target=\"user\"}"));
    http_resp_free(&r);
}

static void test_stop(void)
{
    if (g_up)
        CU_ASSERT_EQUAL(ts_stack_stop(&g_stack, CU_get_number_of_failures() > 0), 0);
    g_up = false;
}

int main(void)
{
    static const ts_case cases[] = {
        {"start", test_start},
        {"open_circuit_is_503_with_retry_after", test_open_circuit_is_503_with_retry_after},
        {"stop", test_stop},
        {NULL, NULL},
    };
    int rc = ts_main("e2e_gateway_breaker", cases);
    if (g_up)
        ts_stack_stop(&g_stack, 1);
    return rc;
}
