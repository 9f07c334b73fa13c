/* http_client (tests): one request per connection, read to EOF, split headers and body
 * (Content-Length or chunked is not needed: the gateway always sends Content-Length). */
#include "http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends raw, then reads to EOF. half_close: shutdown(SHUT_WR) after sending (malformed requests
 * must not leave the server waiting for more bytes); well-formed requests keep the write side open
 * like real clients do (libmicrohttpd may drop a suspended request whose client half-closed). */
static void raw_io(int port, const char *raw, size_t len, int timeout_ms, int half_close,
                   http_resp *out)
{
    memset(out, 0, sizeof *out);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return;
    }
    long long end = now_ms() + timeout_ms;
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, raw + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may answer early (413) and close */
        off += (size_t)n;
    }
    if (off == len)
        out->sent_ms = now_ms();
    if (half_close)
        shutdown(fd, SHUT_WR);
    size_t cap = 65536, got = 0;
    char *buf = malloc(cap);
    for (;;) {
        long long left = end - now_ms();
        if (left <= 0)
            break;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)left) <= 0)
            break;
        if (got + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t n = recv(fd, buf + got, cap - got - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.1 %d", &out->status) != 1) {
        out->status = 0;
        out->headers = NULL;
        free(buf);
        return;
    }
    size_t hl = (size_t)(sep - buf) + 2;
    out->headers = malloc(hl + 1);
    memcpy(out->headers, buf, hl);
    out->headers[hl] = 0;
    out->body_len = got - hl - 2;
    out->body = malloc(out->body_len + 1);
    memcpy(out->body, sep + 4, out->body_len);
    out->body[out->body_len] = 0;
    free(buf);
}

void http_raw(int port, const char *raw, size_t len, int timeout_ms, http_resp *out)
{
    raw_io(port, raw, len, timeout_ms, 1, out);
}

void http_do(int port, const char *method, const char *path, const char *extra, const char *body,
             size_t body_len, int timeout_ms, http_resp *out)
{
    size_t cap = 1024 + (extra ? strlen(extra) : 0) + body_len + strlen(path);
    char *req = malloc(cap);
    int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%s",
                     method, path, extra ? extra : "",
                     body ? "Content-Type: application/json\r\n" : "", "");
    if (body)
        n += snprintf(req + n, cap - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(req + n, cap - (size_t)n, "\r\n");
    if (body) {
        memcpy(req + n, body, body_len);
        n += (int)body_len;
    }
    raw_io(port, req, (size_t)n, timeout_ms, 0, out);
    free(req);
}

const char *http_header(const http_resp *r, const char *name, char *buf, size_t len)
{
    if (!r->headers)
        return NULL;
    size_t nl = strlen(name);
    const char *p = strstr(r->headers, "\r\n");
    while (p && p[2]) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t vl = e ? (size_t)(e - v) : strlen(v);
            if (vl >= len)
                vl = len - 1;
            memcpy(buf, v, vl);
            buf[vl] = 0;
            return buf;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

void http_resp_free(http_resp *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}
