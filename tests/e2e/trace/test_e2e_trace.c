/* e2e_trace: the four binaries (ts_stack, LOG_LEVEL=info, every line in one log file, told apart by
 * each line's "service"); POST /v1/auth/register with a client traceparent and X-Request-Id; the
 * trace id must show up in the gateway's, auth's, user's (CreateUser) and permission's
 * (AssignRole) lines, with the request id, a span id of each hop's own, and the gateway's span not
 * the client's. No log line may hold the password or the returned tokens. Also `gateway
 * --health-check` against the running gateway (exit 0) and a dead port (exit 1). */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http_client.h"
#include "test_support.h"

#define TRACE_ID "4bf92f3577b34da6a3ce929d0e0e4736"
#define CLIENT_SPAN "00f067aa0ba902b7"
#define REQUEST_ID "trace-test-req-7f3a9c"
#define PASSWORD "Tr4ce-Secret-Passw0rd!"

static ts_stack g_stack;
static bool g_up;

static const char *const SVCS[] = {"gateway", "auth", "user", "permission"};
#define NSVCS 4

/* Reads the whole file (malloc'ed, NUL-terminated). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    fclose(f);
    return buf;
}

static int svc_index(const char *s)
{
    for (int i = 0; i < NSVCS; i++)
        if (s && strcmp(s, SVCS[i]) == 0)
            return i;
    return -1;
}

static void test_start(void)
{
    static char *const env_all[] = {"LOG_LEVEL=info", NULL};
    ts_stack_opts o = {.dbname = "t_e2e_trace", .redis_db = 46, .env_all = env_all};
    CU_ASSERT_FATAL(ts_stack_start(&g_stack, &o) == 0);
    g_up = true;
}

/* The log after the services have had time to write their last lines. */
static char *read_log(void)
{
    usleep(300000);
    return slurp(g_stack.log);
}

static void test_trace_through_every_hop(void)
{
    CU_ASSERT_FATAL(g_up);
    char headers[512];
    snprintf(headers, sizeof headers,
             "Content-Type: application/json\r\ntraceparent: 00-%s-%s-01\r\nX-Request-Id: %s\r\n",
             TRACE_ID, CLIENT_SPAN, REQUEST_ID);
    const char *body = "{\"email\":\"trace.user@example.com\",\"password\":\"" PASSWORD
                       "\",\"display_name\":\"Trace User\"}";
    http_resp r;
    http_do(g_stack.port[TS_GW], "POST", "/v1/auth/register", headers, body, strlen(body), 10000,
            &r);
    CU_ASSERT_EQUAL_FATAL(r.status, 201);
    char rid[160];
    CU_ASSERT_PTR_NOT_NULL(http_header(&r, "X-Request-Id", rid, sizeof rid));
    CU_ASSERT_STRING_EQUAL(rid, REQUEST_ID);
    json_error_t je;
    json_t *resp = json_loads(r.body, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    const char *access = json_string_value(json_object_get(resp, "access_token"));
    const char *refresh = json_string_value(json_object_get(resp, "refresh_token"));
    CU_ASSERT_FATAL(access && strlen(access) > 40 && refresh && strlen(refresh) > 16);
    const char *sig = strrchr(access, '.'); /* the JWT's signature alone must not leak either */
    CU_ASSERT_FATAL(sig && strlen(sig + 1) > 20);

    char *log = read_log();
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);

    /* No secret anywhere in the log, whole or in part of a line. */
    CU_ASSERT_PTR_NULL(strstr(log, PASSWORD));
    CU_ASSERT_PTR_NULL(strstr(log, access));
    CU_ASSERT_PTR_NULL(strstr(log, sig + 1));
    CU_ASSERT_PTR_NULL(strstr(log, refresh));

    int lines[NSVCS] = {0};
    char spans[NSVCS][8][17];
    int nspans[NSVCS] = {0};
    int bad_rid = 0, unparsed = 0, register_line = 0;
    for (char *line = log, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        if (!strstr(line, TRACE_ID))
            continue;
        json_t *j = json_loads(line, 0, &je);
        if (!j) {
            unparsed++;
            fprintf(stderr, "not JSON: %s\n", line);
            continue;
        }
        const char *tid = json_string_value(json_object_get(j, "trace_id"));
        int k = svc_index(json_string_value(json_object_get(j, "service")));
        if (tid && strcmp(tid, TRACE_ID) == 0 && k >= 0) {
            lines[k]++;
            const char *lrid = json_string_value(json_object_get(j, "request_id"));
            if (!lrid || strcmp(lrid, REQUEST_ID) != 0) {
                bad_rid++;
                fprintf(stderr, "request id missing: %s\n", line);
            }
            const char *sp = json_string_value(json_object_get(j, "span_id"));
            CU_ASSERT(sp && strlen(sp) == 16 && strspn(sp, "0123456789abcdef") == 16);
            if (sp && strlen(sp) == 16) {
                bool seen = false;
                for (int i = 0; i < nspans[k]; i++)
                    seen = seen || strcmp(spans[k][i], sp) == 0;
                if (!seen && nspans[k] < 8)
                    snprintf(spans[k][nspans[k]++], 17, "%s", sp);
            }
            const char *route = json_string_value(json_object_get(j, "route"));
            if (k == 0 && json_integer_value(json_object_get(j, "status")) == 201 && route &&
                strcmp(route, "/v1/auth/register") == 0)
                register_line++;
        }
        json_decref(j);
    }
    CU_ASSERT_EQUAL(unparsed, 0);
    CU_ASSERT_EQUAL(bad_rid, 0);
    CU_ASSERT_EQUAL(register_line, 1); /* the gateway's access-log line for this request */
    for (int k = 0; k < NSVCS; k++) {
        if (lines[k] == 0)
            fprintf(stderr, "trace id %s not in any %s log line (log %s)\n", TRACE_ID, SVCS[k],
                    g_stack.log);
        CU_ASSERT(lines[k] > 0);
        CU_ASSERT(nspans[k] > 0);
        for (int i = 0; i < nspans[k]; i++) {
            /* A new span per hop: never the client's, never another hop's. */
            CU_ASSERT_STRING_NOT_EQUAL(spans[k][i], CLIENT_SPAN);
            for (int m = k + 1; m < NSVCS; m++)
                for (int x = 0; x < nspans[m]; x++)
                    CU_ASSERT_STRING_NOT_EQUAL(spans[k][i], spans[m][x]);
        }
    }
    /* One request is one span in the gateway. */
    CU_ASSERT_EQUAL(nspans[0], 1);
    free(log);
    json_decref(resp);
    http_resp_free(&r);
}

/* A request without traceparent gets a fresh trace that still reaches the service it calls. */
static void test_trace_made_when_absent(void)
{
    CU_ASSERT_FATAL(g_up);
    const char *body = "{\"email\":\"trace.user@example.com\",\"password\":\"" PASSWORD "\"}";
    http_resp r;
    http_do(g_stack.port[TS_GW], "POST", "/v1/auth/login",
            "Content-Type: application/json\r\nX-Request-Id: trace-test-login-1\r\n", body,
            strlen(body), 10000, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    http_resp_free(&r);
    char *log = read_log();
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT_PTR_NULL(strstr(log, PASSWORD));
    char gw_trace[33] = "", auth_trace[33] = "";
    for (char *line = log, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        if (!strstr(line, "trace-test-login-1"))
            continue;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j)
            continue;
        const char *svc = json_string_value(json_object_get(j, "service"));
        const char *tid = json_string_value(json_object_get(j, "trace_id"));
        if (svc && tid && strlen(tid) == 32) {
            if (strcmp(svc, "gateway") == 0)
                snprintf(gw_trace, sizeof gw_trace, "%s", tid);
            else if (strcmp(svc, "auth") == 0)
                snprintf(auth_trace, sizeof auth_trace, "%s", tid);
        }
        json_decref(j);
    }
    CU_ASSERT_EQUAL(strlen(gw_trace), 32);
    CU_ASSERT_STRING_EQUAL(gw_trace, auth_trace);
    CU_ASSERT_STRING_NOT_EQUAL(gw_trace, TRACE_ID);
    free(log);
}

static int run_probe(int port)
{
    char env[64];
    snprintf(env, sizeof env, "LISTEN_ADDR=0.0.0.0:%d", port);
    char *const argv[] = {(char *)ts_bin("gateway"), "--health-check", NULL};
    char *const extra[] = {env, NULL};
    int pid = ts_spawn(argv, extra, "/dev/null");
    int st = 0;
    long long end = ts_now_ms() + 5000;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (ts_now_ms() > end) {
            ts_stop(pid, 9, 1000);
            return -1;
        }
        usleep(20000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_health_check_mode(void)
{
    CU_ASSERT_FATAL(g_up);
    CU_ASSERT_EQUAL(run_probe(g_stack.port[TS_GW]), 0);
    CU_ASSERT_EQUAL(run_probe(ts_free_port()), 1);
    /* A gRPC port answers no HTTP/1.1 /health 200. */
    CU_ASSERT_EQUAL(run_probe(g_stack.port[TS_USER]), 1);
}

static void test_stop(void)
{
    /* Every binary must exit 0 on SIGTERM; the log is kept only when something failed. */
    if (g_up)
        CU_ASSERT_EQUAL(ts_stack_stop(&g_stack, CU_get_number_of_failures() > 0), 0);
    g_up = false;
}

int main(void)
{
    static const ts_case cases[] = {
        {"start", test_start},
        {"trace_through_every_hop", test_trace_through_every_hop},
        {"trace_made_when_absent", test_trace_made_when_absent},
        {"health_check_mode", test_health_check_mode},
        {"stop", test_stop},
        {NULL, NULL},
    };
    int rc = ts_main("e2e_trace", cases);
    if (g_up)
        ts_stack_stop(&g_stack, 1);
    return rc;
}
