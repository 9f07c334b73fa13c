/* fault_sigterm: SIGTERM the user service, then the gateway, while N clients run profile updates
 * (PATCH /v1/users/me) through the gateway. To have requests reliably in flight at the signal,
 * users.users is locked (psql, 1.5 s) just before it: every client's request is then parked in the
 * user service's database call. "In flight" = the whole request had been sent before the signal
 * and its answer came after it. Asserts: every in-flight request gets 200 (0 failures), at least
 * N/2 were in flight, the process exits 0 within SHUTDOWN_GRACE_MS (+1 s) and only after the
 * in-flight requests were answered; while the user service drains the gateway's /ready is 503;
 * while the gateway drains, /ready on an already-open connection is 503. Requests sent after the
 * signal may fail (503 / refused). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault_common.h"

#define DB "t_fault_sigterm"
#define CLIENTS 6
#define GRACE_MS 5000
#define LOCK_MS 1500
#define MAX_SAMPLES 20000

typedef struct sample {
    long long sent, t1;
    short status;
} sample;

typedef struct client {
    pthread_t th;
    char token[2048];
    sample *v;
    atomic_size_t n;
} client;

static ts_stack g_s;
static int g_ok_stack;
static client g_c[CLIENTS];
static atomic_bool g_stop;

static void *load(void *arg)
{
    client *c = arg;
    long seq = 0;
    while (!atomic_load(&g_stop) && atomic_load(&c->n) < MAX_SAMPLES) {
        char body[64];
        snprintf(body, sizeof body, "{\"display_name\":\"s%ld\"}", ++seq);
        fc_res x;
        fc_call(g_s.port[TS_GW], "PATCH", "/v1/users/me", c->token, body, 10000, &x);
        sample *s = &c->v[atomic_load(&c->n)];
        s->sent = x.r.sent_ms;
        s->t1 = x.t1;
        s->status = (short)x.status;
        atomic_fetch_add(&c->n, 1);
        fc_res_free(&x);
        usleep(x.status == 200 ? 2000 : 20000);
    }
    return NULL;
}

static void stop_clients(void)
{
    atomic_store(&g_stop, true);
    for (int i = 0; i < CLIENTS; i++) {
        if (g_c[i].th)
            pthread_join(g_c[i].th, NULL);
        g_c[i].th = 0;
    }
}

static void start_stack(void)
{
    char *all[] = {
        "ARGON2_MEMORY_KIB=1024",     "ARGON2_ITERATIONS=1",           "RATE_LIMIT_AUTH_RPM=100000",
        "RATE_LIMIT_ANON_RPM=100000", "RATE_LIMIT_USER_RPM=1000000",   "BREAKER_OPEN_MS=1000",
        "SHUTDOWN_GRACE_MS=5000",     "DB_STATEMENT_TIMEOUT_MS=20000", NULL};
    char *user[] = {"RPC_THREADS=8", NULL};
    ts_stack_opts o = {.dbname = DB, .redis_db = 54, .env_all = all, .env[TS_USER] = user};
    CU_ASSERT_EQUAL_FATAL(ts_stack_start(&g_s, &o), 0);
    for (int i = 0; i < CLIENTS; i++) {
        char email[64];
        snprintf(email, sizeof email, "c%d@fault-sigterm.test", i);
        CU_ASSERT_EQUAL_FATAL(fc_register(g_s.port[TS_GW], email, "password-123", g_c[i].token,
                                          sizeof g_c[i].token, NULL, 0),
                              201);
        g_c[i].v = calloc(MAX_SAMPLES, sizeof(sample));
    }
    for (int i = 0; i < CLIENTS; i++)
        pthread_create(&g_c[i].th, NULL, load, &g_c[i]);
    g_ok_stack = 1;
}

/* Counts, over every client's samples: requests in flight at t_sig and how many of them failed;
 * requests answered before t_sig that failed; the latest answer to an in-flight request. */
typedef struct tally {
    int inflight, inflight_failed, before_failed, after_ok, after_failed;
    long long last_inflight_answer;
} tally;

static tally count(long long t_sig)
{
    tally t = {0};
    for (int i = 0; i < CLIENTS; i++) {
        size_t n = atomic_load(&g_c[i].n);
        for (size_t k = 0; k < n; k++) {
            sample *s = &g_c[i].v[k];
            bool ok = s->status >= 200 && s->status < 300;
            if (s->sent && s->sent < t_sig && s->t1 >= t_sig) {
                t.inflight++;
                if (!ok) {
                    t.inflight_failed++;
                    fprintf(stderr,
                            "  in-flight request failed: status %d, sent %lld ms before "
                            "the signal, answered %lld ms after\n",
                            s->status, t_sig - s->sent, s->t1 - t_sig);
                }
                if (s->t1 > t.last_inflight_answer)
                    t.last_inflight_answer = s->t1;
            } else if (s->t1 < t_sig) {
                t.before_failed += !ok;
            } else {
                t.after_ok += ok;
                t.after_failed += !ok;
            }
        }
    }
    return t;
}

/* Waits for pid to exit (up to ms); returns the exit status (128+sig when killed) and the time. */
static int wait_exit(int pid, int ms, long long *t_exit)
{
    int st;
    for (long long end = ts_now_ms() + ms; ts_now_ms() < end;) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            *t_exit = ts_now_ms();
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(5000);
    }
    *t_exit = 0;
    return -1;
}

/* Waits until every client has had a 2xx started after `since`. */
static bool all_succeed_after(long long since, int ms)
{
    for (long long end = ts_now_ms() + ms; ts_now_ms() < end; usleep(50000)) {
        int good = 0;
        for (int i = 0; i < CLIENTS; i++) {
            size_t n = atomic_load(&g_c[i].n);
            for (size_t k = 0; k < n; k++)
                if (g_c[i].v[k].sent > since && g_c[i].v[k].status == 200) {
                    good++;
                    break;
                }
        }
        if (good == CLIENTS)
            return true;
    }
    return false;
}

static void test_sigterm_user_service(void)
{
    CU_ASSERT_FATAL(g_ok_stack);
    usleep(500000);
    int lock = fc_lock_table(DB, "users.users", LOCK_MS);
    CU_ASSERT_FATAL(lock > 0);
    usleep(300000); /* every client's PATCH is now parked on the lock */
    int pid = g_s.pid[TS_USER];
    long long t_sig = ts_now_ms();
    kill(pid, SIGTERM);
    /* While it drains, the gateway's /ready reports the user service not serving. */
    int ready503 = 0, ready_other = 0;
    long long t_exit = 0;
    int st = -1;
    for (long long end = t_sig + GRACE_MS + 3000; ts_now_ms() < end;) {
        int s2;
        if (waitpid(pid, &s2, WNOHANG) == pid) {
            t_exit = ts_now_ms();
            st = WIFEXITED(s2) ? WEXITSTATUS(s2) : 128 + WTERMSIG(s2);
            break;
        }
        fc_res x;
        int s = fc_call(g_s.port[TS_GW], "GET", "/ready", NULL, NULL, 3000, &x);
        fc_res_free(&x);
        ready503 += s == 503;
        ready_other += s != 503;
        usleep(50000);
    }
    if (!t_exit)
        st = wait_exit(pid, 5000, &t_exit);
    g_s.pid[TS_USER] = 0;
    int lrc = fc_lock_wait(lock, LOCK_MS + 5000);
    usleep(300000);
    tally t = count(t_sig);
    fprintf(stderr,
            "fault_sigterm (user service): exit %d after %lld ms (grace %d); in flight %d, failed "
            "%d; last in-flight answer %lld ms after the signal; failed before %d; after: %d ok, "
            "%d failed; gateway /ready during the drain: %d x 503, %d other\n",
            st, t_exit ? t_exit - t_sig : -1, GRACE_MS, t.inflight, t.inflight_failed,
            t.last_inflight_answer ? t.last_inflight_answer - t_sig : -1, t.before_failed,
            t.after_ok, t.after_failed, ready503, ready_other);
    CU_ASSERT_EQUAL(lrc, 0);
    CU_ASSERT_EQUAL(t.before_failed, 0);
    CU_ASSERT(t.inflight >= CLIENTS / 2);
    CU_ASSERT_EQUAL(t.inflight_failed, 0);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(t_exit && t_exit - t_sig <= GRACE_MS + 1000);
    CU_ASSERT(t_exit >= t.last_inflight_answer - 50); /* it waited for them */
    CU_ASSERT(ready503 > 0);

    /* back in service (same port) for the gateway part */
    long long t_restart = ts_now_ms();
    CU_ASSERT_EQUAL_FATAL(ts_stack_spawn(&g_s, TS_USER, 20000), 0);
    bool back = all_succeed_after(t_restart, 10000);
    fprintf(stderr, "  user service restarted; every client succeeded again after %lld ms\n",
            back ? ts_now_ms() - t_restart : -1);
    CU_ASSERT_FATAL(back);
}

/* An idle connection opened before the gateway's SIGTERM (so it survives the closed listener). */
static int connect_gw(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_s.port[TS_GW])};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int status_on(int fd, const char *path)
{
    char rq[128], buf[2048];
    int n = snprintf(rq, sizeof rq, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    if (send(fd, rq, (size_t)n, MSG_NOSIGNAL) != n)
        return 0;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 3000) != 1)
        return 0;
    ssize_t got = recv(fd, buf, sizeof buf - 1, 0);
    if (got <= 0)
        return 0;
    buf[got] = 0;
    int st = 0;
    return sscanf(buf, "HTTP/1.1 %d", &st) == 1 ? st : 0;
}

static void test_sigterm_gateway(void)
{
    CU_ASSERT_FATAL(g_ok_stack && g_s.pid[TS_USER] > 0);
    int idle = connect_gw();
    CU_ASSERT(idle >= 0);
    usleep(300000);
    int lock = fc_lock_table(DB, "users.users", LOCK_MS);
    CU_ASSERT_FATAL(lock > 0);
    usleep(300000);
    int pid = g_s.pid[TS_GW];
    long long t_sig = ts_now_ms();
    kill(pid, SIGTERM);
    usleep(100000);
    int ready = idle >= 0 ? status_on(idle, "/ready") : -1;
    if (idle >= 0)
        close(idle);
    long long t_exit = 0;
    int st = wait_exit(pid, GRACE_MS + 5000, &t_exit);
    g_s.pid[TS_GW] = 0;
    int lrc = fc_lock_wait(lock, LOCK_MS + 5000);
    stop_clients();
    tally t = count(t_sig);
    fprintf(stderr,
            "fault_sigterm (gateway): exit %d after %lld ms (grace %d); in flight %d, failed %d; "
            "last in-flight answer %lld ms after the signal; after: %d ok, %d failed; /ready on "
            "an open connection during the drain: %d\n",
            st, t_exit ? t_exit - t_sig : -1, GRACE_MS, t.inflight, t.inflight_failed,
            t.last_inflight_answer ? t.last_inflight_answer - t_sig : -1, t.after_ok,
            t.after_failed, ready);
    CU_ASSERT_EQUAL(lrc, 0);
    CU_ASSERT(t.inflight >= CLIENTS / 2);
    CU_ASSERT_EQUAL(t.inflight_failed, 0);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(t_exit && t_exit - t_sig <= GRACE_MS + 1000);
    CU_ASSERT(t_exit >= t.last_inflight_answer - 50);
    CU_ASSERT_EQUAL(ready, 503);
}

int main(void)
{
    ts_need_env("PGPORT");
    static const ts_case cases[] = {{"start stack and load", start_stack},
                                    {"SIGTERM user service under load", test_sigterm_user_service},
                                    {"SIGTERM gateway under load", test_sigterm_gateway},
                                    {NULL, NULL}};
    int rc = ts_main("fault_sigterm", cases);
    stop_clients();
    if (ts_stack_stop(&g_s, rc != 0) != 0 && rc == 0) {
        fprintf(stderr, "fault_sigterm: a binary did not exit 0 on SIGTERM\n");
        rc = 1;
    }
    for (int i = 0; i < CLIENTS; i++)
        free(g_c[i].v);
    return rc;
}
