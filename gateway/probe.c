/* probe: the gateway's --health-check (HTTP GET /health on its own port, exit 0 on 200), with a
 * single overall deadline so a wedged process makes the probe fail, not hang. */
#include "probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int probe_local_target(const char *listen_addr, char *host, size_t hostlen)
{
    const char *colon = listen_addr ? strrchr(listen_addr, ':') : NULL;
    if (!colon)
        return -1;
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port <= 0 || port > 65535)
        return -1;
    size_t hl = (size_t)(colon - listen_addr);
    if (hl == 0 || (hl == 7 && strncmp(listen_addr, "0.0.0.0", 7) == 0) ||
        (hl == 1 && listen_addr[0] == '*') || hl >= hostlen)
        snprintf(host, hostlen, "127.0.0.1");
    else
        snprintf(host, hostlen, "%.*s", (int)hl, listen_addr);
    return (int)port;
}

/* Waits for ev on fd until the deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {fd, ev, 0};
        int r = poll(&p, 1, (int)left);
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

int probe_http_get(const char *host, int port, const char *path, int timeout_ms, char *msg,
                   size_t msglen)
{
    int64_t deadline = now_ms() + timeout_ms;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(msg, msglen, "bad address %s", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(msg, msglen, "socket: %s", strerror(errno));
        return -1;
    }
    int status = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS) {
            snprintf(msg, msglen, "connect: %s", strerror(errno));
            goto out;
        }
        int w = wait_fd(fd, POLLOUT, deadline);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (w <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
            snprintf(msg, msglen, "connect: %s",
                     w == 0 ? "timed out" : strerror(soerr ? soerr : errno));
            goto out;
        }
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: gateway-health-check\r\n"
                     "Connection: close\r\n\r\n",
                     path, host, port);
    if (n < 0 || (size_t)n >= sizeof req) {
        snprintf(msg, msglen, "path too long");
        goto out;
    }
    size_t sent = 0;
    while (sent < (size_t)n) {
        ssize_t w = send(fd, req + sent, (size_t)n - sent, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) <= 0) {
                snprintf(msg, msglen, "send: timed out");
                goto out;
            }
        } else {
            snprintf(msg, msglen, "send: %s", strerror(errno));
            goto out;
        }
    }
    /* Only the status line matters: "HTTP/1.x NNN ...". */
    char buf[256];
    size_t got = 0;
    while (got < sizeof buf - 1 && !memchr(buf, '\n', got)) {
        ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (r > 0) {
            got += (size_t)r;
        } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLIN, deadline) <= 0) {
                snprintf(msg, msglen, "no answer within %d ms", timeout_ms);
                goto out;
            }
        } else {
            break; /* closed (or error): parse what arrived */
        }
    }
    buf[got] = 0;
    if (got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && buf[8] == ' ' && buf[9] >= '1' &&
        buf[9] <= '5' && buf[10] >= '0' && buf[10] <= '9' && buf[11] >= '0' && buf[11] <= '9') {
        status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
        snprintf(msg, msglen, "HTTP %d", status);
    } else {
        snprintf(msg, msglen, "not an HTTP answer");
    }
out:
    close(fd);
    return status;
}

int probe_health_main(const char *listen_addr)
{
    char host[64], msg[160];
    int port = probe_local_target(listen_addr, host, sizeof host);
    if (port < 0) {
        printf("health-check: LISTEN_ADDR '%s' has no port\n", listen_addr ? listen_addr : "");
        return 1;
    }
    int st = probe_http_get(host, port, "/health", 2000, msg, sizeof msg);
    printf("health-check http://%s:%d/health: %s\n", host, port, msg);
    return st == 200 ? 0 : 1;
}
