/* fault_client_gone: a client that hangs up while its request waits on a service. Auth has one
 * hash worker and slow argon2id parameters; login A occupies the worker, login B is queued behind
 * it and its client closes the socket. Asserts: the gateway notices (http_client_gone_total),
 * cancels B's call (auth answers it CANCELLED), auth drops B's queued hash instead of computing it
 * for nobody (auth_hash_dropped_total), and A is answered as usual (401: unknown account, after
 * one full verification). Deadlines are an hour away, so only the hang-up can cancel B. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "fault_common.h"
#include "http_client.h"
#include "test_support.h"

#define DB "t_fault_client_gone"
#define LOGIN_BODY "{\"email\":\"nobody@client-gone.test\",\"password\":\"password-123\"}"

static ts_stack g_s;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void start_stack(void)
{
    /* 64 MiB x 50 passes: about 1 s per hash on a fast machine, several on a slow one; either
     * way longer than the gateway needs to notice B's hang-up (200 ms + one 200 ms reaper tick). */
    char *all[] = {"RATE_LIMIT_AUTH_RPM=100000", "RATE_LIMIT_ANON_RPM=100000", NULL};
    char *auth[] = {"HASH_WORKERS=1", "ARGON2_MEMORY_KIB=65536", "ARGON2_ITERATIONS=50", NULL};
    char *gw[] = {"REQUEST_TIMEOUT_MS=600000", NULL};
    ts_stack_opts o = {.dbname = DB,
                       .redis_db = 45,
                       .env_all = all,
                       .env[TS_AUTH] = auth,
                       .env[TS_GW] = gw,
                       .ready_timeout_ms = 60000};
    CU_ASSERT_EQUAL_FATAL(ts_stack_start(&g_s, &o), 0);
}

typedef struct login_a {
    pthread_t th;
    int status;
} login_a;

static void *run_login_a(void *arg)
{
    login_a *a = arg;
    http_resp r;
    http_do(g_s.port[TS_GW], "POST", "/v1/auth/login", "Content-Type: application/json\r\n",
            LOGIN_BODY, strlen(LOGIN_BODY), 120000, &r);
    a->status = r.status;
    http_resp_free(&r);
    return NULL;
}

/* Sends login B on its own connection and closes it hold_ms later without reading. */
static int login_b_and_hang_up(int hold_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_s.port[TS_GW])};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(LOGIN_BODY), LOGIN_BODY);
    int rc = write(fd, req, (size_t)n) == n ? 0 : -1;
    sleep_ms(hold_ms);
    close(fd);
    return rc;
}

static void test_hang_up_cancels(void)
{
    int gw = g_s.port[TS_GW], au = g_s.metrics_port[TS_AUTH];
    double gone0 = fc_metric(gw, "http_client_gone_total");
    double dropped0 = fc_metric(au, "auth_hash_dropped_total");
    CU_ASSERT(dropped0 >= 0); /* the family is exported */

    login_a a = {0};
    CU_ASSERT_FATAL(pthread_create(&a.th, NULL, run_login_a, &a) == 0);
    sleep_ms(150); /* A reaches the worker first */
    CU_ASSERT_EQUAL(login_b_and_hang_up(300), 0);
    pthread_join(a.th, NULL);
    CU_ASSERT_EQUAL(a.status, 401);

    /* B's job is dropped when the worker gets to it, right after A. */
    double gone = -1, dropped = -1, cancelled = -1;
    for (long long until = ts_now_ms() + 15000; ts_now_ms() < until; sleep_ms(100)) {
        gone = fc_metric(gw, "http_client_gone_total");
        dropped = fc_metric(au, "auth_hash_dropped_total");
        cancelled = fc_metric(au, "grpc_server_handled_total{grpc_service=\"auth.v1.AuthService\","
                                  "grpc_method=\"Login\",grpc_code=\"CANCELLED\"}");
        if (gone > gone0 && dropped > dropped0 && cancelled >= 1)
            break;
    }
    fprintf(stderr,
            "fault_client_gone: A %d; http_client_gone_total %.0f -> %.0f; "
            "auth_hash_dropped_total %.0f -> %.0f; Login CANCELLED %.0f\n",
            a.status, gone0 < 0 ? 0 : gone0, gone, dropped0, dropped, cancelled);
    CU_ASSERT(gone >= (gone0 < 0 ? 0 : gone0) + 1);
    CU_ASSERT(dropped >= dropped0 + 1);
    CU_ASSERT(cancelled >= 1);
    /* One hash for A (the dummy verification), none for B. */
    CU_ASSERT(fc_metric(au, "auth_hash_jobs_total") >= 1);
}

int main(void)
{
    ts_need_env("PGPORT");
    static const ts_case cases[] = {{"start stack", start_stack},
                                    {"hang-up cancels the queued login", test_hang_up_cancels},
                                    {NULL, NULL}};
    int rc = ts_main("fault_client_gone", cases);
    if (ts_stack_stop(&g_s, rc != 0) != 0 && rc == 0)
        rc = 1;
    return rc;
}
