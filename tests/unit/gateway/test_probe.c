/* Unit tests for gateway/probe (--health-check): target derivation, status parsing, failures and
 * the overall time-out, against a one-shot loopback server thread. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"
#include "test_support.h"

typedef struct srv {
    int lfd, port;
    const char *answer; /* NULL = accept, read, then say nothing for hold_ms */
    int hold_ms;
    char got[512];
    pthread_t th;
} srv;

static void *srv_main(void *arg)
{
    srv *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    ssize_t n = recv(fd, s->got, sizeof s->got - 1, 0);
    s->got[n > 0 ? n : 0] = 0;
    if (s->answer)
        (void)send(fd, s->answer, strlen(s->answer), MSG_NOSIGNAL);
    else
        usleep((useconds_t)s->hold_ms * 1000);
    close(fd);
    return NULL;
}

static void srv_start(srv *s, const char *answer, int hold_ms)
{
    memset(s, 0, sizeof *s);
    s->answer = answer;
    s->hold_ms = hold_ms;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) == 0);
    CU_ASSERT_FATAL(listen(s->lfd, 4) == 0);
    socklen_t sl = sizeof sa;
    getsockname(s->lfd, (struct sockaddr *)&sa, &sl);
    s->port = ntohs(sa.sin_port);
    pthread_create(&s->th, NULL, srv_main, s);
}

static void srv_stop(srv *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
}

static void test_local_target(void)
{
    char h[64];
    CU_ASSERT_EQUAL(probe_local_target("0.0.0.0:8080", h, sizeof h), 8080);
    CU_ASSERT_STRING_EQUAL(h, "127.0.0.1");
    CU_ASSERT_EQUAL(probe_local_target(":9000", h, sizeof h), 9000);
    CU_ASSERT_STRING_EQUAL(h, "127.0.0.1");
    CU_ASSERT_EQUAL(probe_local_target("*:81", h, sizeof h), 81);
    CU_ASSERT_STRING_EQUAL(h, "127.0.0.1");
    CU_ASSERT_EQUAL(probe_local_target("127.0.0.2:8081", h, sizeof h), 8081);
    CU_ASSERT_STRING_EQUAL(h, "127.0.0.2");
    CU_ASSERT_EQUAL(probe_local_target("0.0.0.0", h, sizeof h), -1);
    CU_ASSERT_EQUAL(probe_local_target("0.0.0.0:", h, sizeof h), -1);
    CU_ASSERT_EQUAL(probe_local_target("0.0.0.0:70000", h, sizeof h), -1);
    CU_ASSERT_EQUAL(probe_local_target("0.0.0.0:80x", h, sizeof h), -1);
    CU_ASSERT_EQUAL(probe_local_target(NULL, h, sizeof h), -1);
}

static void test_status_ok_and_request(void)
{
    srv s;
    char msg[160];
    srv_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 0);
    CU_ASSERT_EQUAL(probe_http_get("127.0.0.1", s.port, "/health", 2000, msg, sizeof msg), 200);
    srv_stop(&s);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.got, "GET /health HTTP/1.1\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.got, "Connection: close\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.got, "\r\n\r\n"));
}

static void test_status_503(void)
{
    srv s;
    char msg[160];
    srv_start(&s, "HTTP/1.1 503 Service Unavailable\r\n\r\n", 0);
    CU_ASSERT_EQUAL(probe_http_get("127.0.0.1", s.port, "/health", 2000, msg, sizeof msg), 503);
    srv_stop(&s);
}

static void test_garbage(void)
{
    srv s;
    char msg[160];
    srv_start(&s, "SSH-2.0-OpenSSH\r\n", 0);
    CU_ASSERT_EQUAL(probe_http_get("127.0.0.1", s.port, "/health", 2000, msg, sizeof msg), -1);
    CU_ASSERT_STRING_EQUAL(msg, "not an HTTP answer");
    srv_stop(&s);
}

static void test_refused(void)
{
    srv s;
    srv_start(&s, "", 0);
    int port = s.port;
    /* Let the server thread take one connection and close, then close the listener. */
    char msg[160];
    probe_http_get("127.0.0.1", port, "/", 500, msg, sizeof msg);
    srv_stop(&s);
    CU_ASSERT_EQUAL(probe_http_get("127.0.0.1", port, "/health", 1000, msg, sizeof msg), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "connect"));
}

static void test_timeout(void)
{
    srv s;
    char msg[160];
    srv_start(&s, NULL, 1500);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CU_ASSERT_EQUAL(probe_http_get("127.0.0.1", s.port, "/health", 300, msg, sizeof msg), -1);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    CU_ASSERT(ms >= 250 && ms < 1200);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "no answer"));
    srv_stop(&s);
}

static void test_health_main_exit_codes(void)
{
    srv s;
    char addr[64];
    srv_start(&s, "HTTP/1.0 200 OK\r\n\r\n", 0);
    snprintf(addr, sizeof addr, "0.0.0.0:%d", s.port);
    CU_ASSERT_EQUAL(probe_health_main(addr), 0);
    srv_stop(&s);
    srv_start(&s, "HTTP/1.1 503 Service Unavailable\r\n\r\n", 0);
    snprintf(addr, sizeof addr, "0.0.0.0:%d", s.port);
    CU_ASSERT_EQUAL(probe_health_main(addr), 1);
    srv_stop(&s);
    CU_ASSERT_EQUAL(probe_health_main("no-port"), 1);
}

int main(void)
{
    static const ts_case cases[] = {
        {"local_target", test_local_target},
        {"status_ok_and_request", test_status_ok_and_request},
        {"status_503", test_status_503},
        {"garbage", test_garbage},
        {"refused", test_refused},
        {"timeout", test_timeout},
        {"health_main_exit_codes", test_health_main_exit_codes},
        {NULL, NULL},
    };
    return ts_main("gateway_probe", cases);
}
