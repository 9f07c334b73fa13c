/* ops_metrics: starts the four binaries (ts_stack), drives a little traffic through the gateway
 * (register, login, reads that miss then hit the user cache, a 404, rate-limited requests), scrapes
 * the gateway's /metrics (its own port) and each service's (METRICS_ADDR), runs `promtool check
 * metrics` on each text (exposition format and Prometheus naming lint), and asserts the families of
 * SPEC §4 with their labels and kinds, and that the counters moved. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "http_client.h"
#include "test_support.h"

static ts_stack g_stack;
static bool g_up;
static char g_dir[128];
static char *g_text[TS_NSVC];
static const char *const NAMES[TS_NSVC] = {"permission", "user", "auth", "gateway"};

static void test_start(void)
{
    /* Anonymous routes limited to 2 a minute so a third JWKS request is a 429. */
    static char *const env_gw[] = {"RATE_LIMIT_ANON_RPM=2", NULL};
    ts_stack_opts o = {.dbname = "t_ops_metrics", .redis_db = 48};
    o.env[TS_GW] = env_gw;
    CU_ASSERT_FATAL(ts_stack_start(&g_stack, &o) == 0);
    g_up = true;
    snprintf(g_dir, sizeof g_dir, "%s", "/tmp/ops_metrics.XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(g_dir) != NULL);
}

static int gw(const char *method, const char *path, const char *hdrs, const char *body,
              http_resp *r)
{
    http_do(g_stack.port[TS_GW], method, path, hdrs, body, body ? strlen(body) : 0, 10000, r);
    return r->status;
}

/* Value of "access_token" / "id" in a JSON body (no escapes in these values). */
static bool json_str(const char *body, const char *key, char *out, size_t len)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = body ? strstr(body, pat) : NULL;
    if (!p)
        return false;
    p += strlen(pat);
    const char *e = strchr(p, '"');
    if (!e || (size_t)(e - p) >= len)
        return false;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = 0;
    return true;
}

static void test_traffic(void)
{
    CU_ASSERT_FATAL(g_up);
    http_resp r;
    const char *ct = "Content-Type: application/json\r\n";
    CU_ASSERT_EQUAL(gw("POST", "/v1/auth/register", ct,
                       "{\"email\":\"metrics@example.com\",\"password\":\"Metrics-Passw0rd!\","
                       "\"display_name\":\"Metrics\"}",
                       &r),
                    201);
    char tok[2048] = "", id[64] = "";
    CU_ASSERT(json_str(r.body, "access_token", tok, sizeof tok));
    CU_ASSERT(json_str(r.body, "id", id, sizeof id));
    http_resp_free(&r);
    CU_ASSERT_EQUAL(gw("POST", "/v1/auth/login", ct,
                       "{\"email\":\"metrics@example.com\",\"password\":\"Metrics-Passw0rd!\"}",
                       &r),
                    200);
    http_resp_free(&r);
    char auth[2200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", tok);
    for (int i = 0; i < 3; i++) { /* a cache miss, then hits */
        CU_ASSERT_EQUAL(gw("GET", "/v1/users/me", auth, NULL, &r), 200);
        http_resp_free(&r);
    }
    char path[128];
    snprintf(path, sizeof path, "/v1/users/%s/permissions", id);
    CU_ASSERT_EQUAL(gw("GET", path, auth, NULL, &r), 200);
    http_resp_free(&r);
    CU_ASSERT_EQUAL(gw("GET", "/v1/roles", auth, NULL, &r), 403); /* permission.Check said no */
    http_resp_free(&r);
    CU_ASSERT_EQUAL(gw("GET", "/v1/nothing-here", NULL, NULL, &r), 404);
    http_resp_free(&r);
    int st[3];
    for (int i = 0; i < 3; i++) {
        st[i] = gw("GET", "/.well-known/jwks.json", NULL, NULL, &r);
        http_resp_free(&r);
    }
    CU_ASSERT_EQUAL(st[0], 200);
    CU_ASSERT_EQUAL(st[2], 429);
}

static char *scrape(int port)
{
    http_resp r;
    http_do(port, "GET", "/metrics", NULL, NULL, 0, 10000, &r);
    char ctype[128] = "";
    http_header(&r, "Content-Type", ctype, sizeof ctype);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(ctype, "text/plain"));
    char *body = r.body;
    r.body = NULL;
    http_resp_free(&r);
    return body;
}

static void test_scrape(void)
{
    CU_ASSERT_FATAL(g_up);
    for (int w = 0; w < TS_NSVC; w++) {
        int port = w == TS_GW ? g_stack.port[TS_GW] : g_stack.metrics_port[w];
        g_text[w] = scrape(port);
        CU_ASSERT_PTR_NOT_NULL_FATAL(g_text[w]);
        char path[256];
        snprintf(path, sizeof path, "%s/%s.prom", g_dir, NAMES[w]);
        FILE *f = fopen(path, "w");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        fputs(g_text[w], f);
        fclose(f);
    }
}

/* promtool check metrics < file; returns its exit status (lint problems are failures too). */
static int promtool(const char *file)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "bash -c '. \"$IDENTITY_SOURCE_DIR/tests/ops/deploy/lib.sh\" && ensure_tools promtool "
             "&& promtool check metrics' < '%s' 2>&1",
             file);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[512];
    while (fgets(line, sizeof line, p))
        fprintf(stderr, "promtool %s: %s", file, line);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_promtool(void)
{
    CU_ASSERT_FATAL(g_up && g_text[TS_GW]);
    for (int w = 0; w < TS_NSVC; w++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s.prom", g_dir, NAMES[w]);
        int rc = promtool(path);
        if (rc != 0)
            fprintf(stderr, "promtool check metrics failed for %s (%d)\n", NAMES[w], rc);
        CU_ASSERT_EQUAL(rc, 0);
    }
    /* promtool must reject what is not valid exposition text (so the check means something). */
    char bad[256];
    snprintf(bad, sizeof bad, "%s/bad.prom", g_dir);
    FILE *f = fopen(bad, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("# TYPE x_total counter\nx_total{a=\"1\" 1\n", f);
    fclose(f);
    CU_ASSERT_NOT_EQUAL(promtool(bad), 0);
}

/* "# TYPE name kind" present. */
static bool has_type(const char *text, const char *name, const char *kind)
{
    char pat[160];
    snprintf(pat, sizeof pat, "# TYPE %s %s\n", name, kind);
    return strstr(text, pat) != NULL;
}

/* A sample line of `series` (name + "{") whose label set has every label in `labels`
 * (NULL-terminated) and, when min_value >= 0, a value >= min_value. */
static bool has_sample(const char *text, const char *series, const char *const *labels,
                       double min_value)
{
    size_t sl = strlen(series);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > sl && strncmp(p, series, sl) == 0 && p[sl] == '{') {
            char line[1024];
            snprintf(line, sizeof line, "%.*s", (int)(len < 1023 ? len : 1023), p);
            char *close = strrchr(line, '}');
            bool ok = close != NULL;
            for (const char *const *l = labels; ok && *l; l++) {
                char pat[80];
                snprintf(pat, sizeof pat, "%s=\"", *l);
                char *at = strstr(line, pat);
                ok = at && at < close && (at[-1] == '{' || at[-1] == ',');
            }
            if (ok && min_value >= 0)
                ok = strtod(close + 1, NULL) >= min_value;
            if (ok)
                return true;
        }
        p = eol ? eol + 1 : NULL;
    }
    return false;
}

/* An unlabelled sample "name value" (or "name{} value"): its value, or -1. */
static double plain_value(const char *text, const char *name)
{
    char pat[160];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(text, pat);
    return p ? strtod(p + strlen(pat), NULL) : -1;
}

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        bool ok_ = (cond);                                                                         \
        if (!ok_)                                                                                  \
            fprintf(stderr, "%s /metrics: missing %s\n", NAMES[w], what);                          \
        CU_ASSERT(ok_);                                                                            \
    } while (0)

static void test_families(void)
{
    CU_ASSERT_FATAL(g_up && g_text[TS_GW]);
    static const char *const http_l[] = {"method", "route", "status_code", NULL};
    static const char *const http_b[] = {"method", "route", "status_code", "le", NULL};
    static const char *const target_l[] = {"target", NULL};
    static const char *const grpc_l[] = {"grpc_service", "grpc_method", "grpc_code", NULL};
    static const char *const grpc_h[] = {"grpc_service", "grpc_method", "grpc_code", "le", NULL};
    static const char *const limiter_l[] = {"limiter", NULL};

    int w = TS_GW;
    const char *g = g_text[TS_GW];
    CHECK(has_type(g, "http_requests_total", "counter"), "http_requests_total counter");
    CHECK(has_sample(g, "http_requests_total", http_l, 1),
          "http_requests_total{method,route,status_code}");
    CHECK(strstr(g, "http_requests_total{method=\"POST\",route=\"/v1/auth/"
                    "register\",status_code=\"201\"} 1\n"),
          "http_requests_total for the register (route template, status)");
    CHECK(strstr(g, "route=\"/.well-known/jwks.json\",status_code=\"429\""), "a 429 counted");
    CHECK(strstr(g, "route=\"unmatched\",status_code=\"404\""),
          "the 404 under route=\"unmatched\"");
    CHECK(has_type(g, "http_request_duration_seconds", "histogram"),
          "http_request_duration_seconds histogram");
    CHECK(has_sample(g, "http_request_duration_seconds_bucket", http_b, 1),
          "duration buckets {method,route,status_code,le}");
    CHECK(has_sample(g, "http_request_duration_seconds_count", http_l, 1), "duration _count");
    CHECK(has_sample(g, "http_request_duration_seconds_sum", http_l, 0), "duration _sum");
    CHECK(has_type(g, "circuit_breaker_state", "gauge"), "circuit_breaker_state gauge");
    for (int i = 0; i < 3; i++) {
        char s[96];
        snprintf(s, sizeof s, "\ncircuit_breaker_state{target=\"%s\"} 0\n", NAMES[i]);
        CHECK(strstr(g, s), s + 1);
    }
    CHECK(has_type(g, "rate_limit_rejections_total", "counter"),
          "rate_limit_rejections_total counter");
    CHECK(has_sample(g, "rate_limit_rejections_total", limiter_l, 1),
          "rate_limit_rejections_total{limiter} >= 1");
    CHECK(has_sample(g, "grpc_client_handled_total", target_l, 1),
          "grpc_client_handled_total{target}");

    for (w = 0; w < TS_GW; w++) {
        const char *t = g_text[w];
        CHECK(has_type(t, "grpc_server_handled_total", "counter"),
              "grpc_server_handled_total counter");
        CHECK(has_sample(t, "grpc_server_handled_total", grpc_l, 1),
              "grpc_server_handled_total{grpc_service,grpc_method,grpc_code} >= 1");
        CHECK(has_type(t, "grpc_server_handling_seconds", "histogram"),
              "grpc_server_handling_seconds histogram");
        CHECK(has_sample(t, "grpc_server_handling_seconds_bucket", grpc_h, 1),
              "grpc_server_handling_seconds_bucket{grpc_service,grpc_method,grpc_code,le}");
        CHECK(has_type(t, "db_pool_in_use", "gauge"), "db_pool_in_use gauge");
        CHECK(has_type(t, "db_pool_idle", "gauge"), "db_pool_idle gauge");
        CHECK(has_type(t, "db_pool_waiting", "gauge"), "db_pool_waiting gauge");
        CHECK(plain_value(t, "db_pool_in_use") >= 0, "a db_pool_in_use sample");
        CHECK(plain_value(t, "db_pool_idle") >= 1, "db_pool_idle >= 1 after traffic");
        CHECK(plain_value(t, "db_pool_waiting") >= 0, "a db_pool_waiting sample");
        CHECK(has_type(t, "cache_hits_total", "counter"), "cache_hits_total counter");
        CHECK(has_type(t, "cache_misses_total", "counter"), "cache_misses_total counter");
        CHECK(has_type(t, "cache_errors_total", "counter"), "cache_errors_total counter");
    }
    w = TS_USER;
    CHECK(strstr(g_text[TS_USER],
                 "grpc_service=\"user.v1.UserService\",grpc_method=\"GetUser\",grpc_code=\"OK\""),
          "grpc_server_handled_total for GetUser OK");
    CHECK(plain_value(g_text[TS_USER], "cache_hits_total") >= 1,
          "cache_hits_total >= 1 (GET /v1/users/me x3)");
    CHECK(plain_value(g_text[TS_USER], "cache_misses_total") >= 1, "cache_misses_total >= 1");
    CHECK(has_type(g_text[TS_USER], "outbox_backlog", "gauge"), "outbox_backlog gauge");
    CHECK(plain_value(g_text[TS_USER], "outbox_backlog") >= 0, "an outbox_backlog sample");
    w = TS_AUTH;
    CHECK(strstr(g_text[TS_AUTH], "\ncircuit_breaker_state{target=\"user\"} 0\n"),
          "auth's breaker on user");
    CHECK(strstr(g_text[TS_AUTH], "\ncircuit_breaker_state{target=\"permission\"} 0\n"),
          "auth's breaker on permission");
    w = TS_PERM;
    CHECK(strstr(g_text[TS_PERM], "grpc_method=\"Check\",grpc_code=\"OK\""),
          "permission Check counted");
}

static void test_stop(void)
{
    if (g_up)
        CU_ASSERT_EQUAL(ts_stack_stop(&g_stack, CU_get_number_of_failures() > 0), 0);
    g_up = false;
    if (g_dir[0]) {
        char cmd[200];
        if (CU_get_number_of_failures() > 0)
            fprintf(stderr, "ops_metrics: scrapes kept in %s\n", g_dir);
        else if (snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir) > 0 && system(cmd) != 0)
            fprintf(stderr, "ops_metrics: could not remove %s\n", g_dir);
    }
    for (int w = 0; w < TS_NSVC; w++)
        free(g_text[w]);
}

int main(void)
{
    static const ts_case cases[] = {
        {"start", test_start},
        {"traffic", test_traffic},
        {"scrape", test_scrape},
        {"promtool_check_metrics", test_promtool},
        {"spec_families", test_families},
        {"stop", test_stop},
        {NULL, NULL},
    };
    int rc = ts_main("ops_metrics", cases);
    if (g_up)
        ts_stack_stop(&g_stack, 1);
    return rc;
}
