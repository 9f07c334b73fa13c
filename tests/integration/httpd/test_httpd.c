/* Integration test of gateway/httpd over loopback with raw sockets: keep-alive, pipelining, bodies,
 * HEAD, limits, timeouts, on_gone, many connections, slow readers, quiesce and stop. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "httpd.h"
#include "test_support.h"

#define MIB (1 << 20)
#define BIG_LEN                                                                                    \
    (6 * MIB) /* past the default tcp_wmem max (4 MiB): the server must write in parts */
#define MAX_BODY 65536

static httpd *srv;
static int port;
static char *big_body;

static atomic_int outstanding;  /* on_request calls not ended yet */
static atomic_int threads_live; /* our answering threads still running */
static atomic_int gone_calls;
static atomic_int hang_started;
static atomic_int hang_late_answers;

/* ---------- the handler ---------- */

static pthread_mutex_t hang_mu = PTHREAD_MUTEX_INITIALIZER;
static httpd_req *hang_reqs[16];

static void hang_put(httpd_req *r)
{
    pthread_mutex_lock(&hang_mu);
    for (size_t i = 0; i < sizeof hang_reqs / sizeof hang_reqs[0]; i++) {
        if (!hang_reqs[i]) {
            hang_reqs[i] = r;
            break;
        }
    }
    pthread_mutex_unlock(&hang_mu);
}

/* Removes r (or any waiting request when r is NULL) from the list; returns it or NULL. */
static httpd_req *hang_take(httpd_req *r)
{
    httpd_req *got = NULL;
    pthread_mutex_lock(&hang_mu);
    for (size_t i = 0; i < sizeof hang_reqs / sizeof hang_reqs[0]; i++) {
        if (hang_reqs[i] && (!r || hang_reqs[i] == r)) {
            got = hang_reqs[i];
            hang_reqs[i] = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&hang_mu);
    return got;
}

/* Every answer goes through here: r is gone once httpd_end returns. */
static void answer(httpd_req *r, int status, const char *body, size_t len)
{
    httpd_begin(r, status);
    httpd_header(r, "Content-Type", "text/plain");
    httpd_end(r, body, len);
    atomic_fetch_sub(&outstanding, 1);
}

static const char *qget(const httpd_req *r, const char *k)
{
    for (size_t i = 0; i < r->nquery; i++)
        if (strcmp(r->query[i].key, k) == 0)
            return r->query[i].value;
    return NULL;
}

typedef struct job {
    httpd_req *r;
    int ms;
} job;

static void *async_main(void *arg)
{
    job *j = arg;
    httpd_req *r = j->r;
    usleep((useconds_t)j->ms * 1000);
    free(j);
    const char *id = qget(r, "id");
    char body[128];
    int n = snprintf(body, sizeof body, "async %s", id ? id : "");
    httpd_begin(r, 200);
    httpd_header(r, "X-Thread", "async");
    httpd_end(r, body, (size_t)n);
    atomic_fetch_sub(&outstanding, 1);
    atomic_fetch_sub(&threads_live, 1);
    return NULL;
}

/* Answers a /hang request after on_gone has returned. */
static void *late_main(void *arg)
{
    job *j = arg;
    httpd_req *r = j->r;
    free(j);
    usleep(20 * 1000);
    answer(r, 200, "late", 4);
    atomic_fetch_add(&hang_late_answers, 1);
    atomic_fetch_sub(&threads_live, 1);
    return NULL;
}

static bool spawn(void *(*fn)(void *), httpd_req *r, int ms)
{
    job *j = malloc(sizeof *j);
    if (!j)
        return false;
    j->r = r;
    j->ms = ms;
    atomic_fetch_add(&threads_live, 1);
    pthread_t t;
    if (pthread_create(&t, NULL, fn, j) != 0) {
        atomic_fetch_sub(&threads_live, 1);
        free(j);
        return false;
    }
    pthread_detach(t);
    return true;
}

static void on_request(void *ud, httpd_req *r)
{
    (void)ud;
    atomic_fetch_add(&outstanding, 1);
    char buf[2048];
    if (r->error) {
        int n = snprintf(buf, sizeof buf, "error %d\n", r->error);
        answer(r, r->error, buf, (size_t)n);
        return;
    }
    if (strcmp(r->path, "/echo") == 0) {
        httpd_begin(r, 200);
        httpd_header(r, "X-Method", r->method);
        httpd_end(r, r->body, r->body_len);
        atomic_fetch_sub(&outstanding, 1);
    } else if (strcmp(r->path, "/q") == 0) {
        size_t n = 0;
        for (size_t i = 0; i < r->nquery && n < sizeof buf; i++)
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s=%s;\n", r->query[i].key,
                                  r->query[i].value);
        answer(r, 200, buf, n < sizeof buf ? n : sizeof buf - 1);
    } else if (strcmp(r->path, "/h") == 0) {
        const char *v = httpd_get(r, "X-Test");
        v = v ? v : "(none)";
        answer(r, 200, v, strlen(v));
    } else if (strcmp(r->path, "/ip") == 0) {
        const char *v = r->client_ip ? r->client_ip : "(null)";
        answer(r, 200, v, strlen(v));
    } else if (strcmp(r->path, "/big") == 0) { /* ?mb=<1..6>, default 1 */
        const char *mb = qget(r, "mb");
        long v = mb ? strtol(mb, NULL, 10) : 1;
        if (v < 1 || v > BIG_LEN / MIB)
            v = 1;
        answer(r, 200, big_body, (size_t)v * MIB);
    } else if (strcmp(r->path, "/async") == 0) {
        const char *ms = qget(r, "ms");
        long v = ms ? strtol(ms, NULL, 10) : 50;
        if (v < 0 || v > 1000)
            v = 50;
        if (!spawn(async_main, r, (int)v))
            answer(r, 500, "no thread", 9);
    } else if (strcmp(r->path, "/hang") == 0) {
        hang_put(r);
        atomic_fetch_add(&hang_started, 1);
    } else {
        answer(r, 404, "not found", 9);
    }
}

static void on_gone(void *ud, httpd_req *r)
{
    (void)ud;
    atomic_fetch_add(&gone_calls, 1);
    if (hang_take(r) && !spawn(late_main, r, 0)) {
        fprintf(stderr, "test_httpd: cannot start a thread for a late answer\n");
        abort();
    }
}

/* ---------- a raw client ---------- */

typedef struct cli {
    int fd;
    char *buf;
    size_t len, cap;
    size_t maxread;    /* 0: as much as fits */
    int read_delay_us; /* sleep after each recv (a slow reader) */
} cli;

typedef struct resp {
    int status;
    char head[8192];
    char *body;
    size_t body_len;
} resp;

static int cli_open_opt(cli *c, int rcvbuf)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {5, 0}; /* bounds connect and blocking sends */
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->cap = 65536;
    c->buf = malloc(c->cap);
    return c->buf ? 0 : -1;
}

static int cli_open(cli *c)
{
    return cli_open_opt(c, 0);
}

static void cli_close(cli *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* Closes with a reset (SO_LINGER 0) instead of a FIN. */
static void cli_reset(cli *c)
{
    struct linger l = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    cli_close(c);
}

/* One recv into the buffer, waiting until deadline: >0 bytes, 0 EOF, -1 error (reset), -2 time-out
 */
static int cli_fill(cli *c, long long deadline)
{
    if (c->len == c->cap) {
        c->cap *= 2;
        c->buf = realloc(c->buf, c->cap);
        if (!c->buf)
            abort();
    }
    for (;;) {
        long long left = deadline - ts_now_ms();
        if (left <= 0)
            return -2;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return -2;
        size_t want = c->cap - c->len;
        if (c->maxread && want > c->maxread)
            want = c->maxread;
        ssize_t n = recv(c->fd, c->buf + c->len, want, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        c->len += (size_t)n;
        if (c->read_delay_us)
            usleep((useconds_t)c->read_delay_us);
        return (int)n;
    }
}

/* Sends everything, reading whatever arrives meanwhile (so a server answering early and closing
 * does not lose its answer in a reset). 0, or -1 when the connection failed first. */
static int cli_send(cli *c, const void *data, size_t len, int timeout_ms)
{
    const char *p = data;
    long long deadline = ts_now_ms() + timeout_ms;
    while (len > 0) {
        long long left = deadline - ts_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pf = {.fd = c->fd, .events = POLLOUT | POLLIN};
        int r = poll(&pf, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        if (pf.revents & POLLIN) {
            if (cli_fill(c, ts_now_ms() + 1000) <= 0)
                return -1;
            continue;
        }
        if (pf.revents & (POLLERR | POLLHUP))
            return -1;
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int cli_sends(cli *c, const char *s)
{
    return cli_send(c, s, strlen(s), 5000);
}

/* One byte per send, delay_us apart. */
static int cli_send_slowly(cli *c, const char *s, int delay_us)
{
    for (size_t i = 0; s[i]; i++) {
        if (cli_send(c, s + i, 1, 5000) != 0)
            return -1;
        usleep((useconds_t)delay_us);
    }
    return 0;
}

static const char *resp_hdr(const resp *r, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    const char *line = strstr(r->head, "\r\n");
    while (line && line[2] != '\r' && line[2] != '\0') {
        line += 2;
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(eol - v);
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (vl >= n)
                vl = n - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        line = eol;
    }
    return NULL;
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* Reads one response: 0, -1 (closed or reset before it was complete, or not HTTP), -2 time-out.
 * head_req: no body follows (an answer to HEAD). */
static int cli_read(cli *c, resp *r, bool head_req, int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;
    memset(r, 0, sizeof *r);
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
        int n = cli_fill(c, deadline);
        if (n <= 0)
            return n == -2 ? -2 : -1;
    }
    size_t hl = (size_t)(end - c->buf) + 4;
    size_t keep = hl < sizeof r->head ? hl : sizeof r->head - 1;
    memcpy(r->head, c->buf, keep);
    r->head[keep] = '\0';
    if (hl < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0)
        return -1;
    char code[4] = {c->buf[9], c->buf[10], c->buf[11], 0};
    r->status = (int)strtol(code, NULL, 10);
    char v[64];
    long long clen = -1;
    if (resp_hdr(r, "Content-Length", v, sizeof v))
        clen = strtoll(v, NULL, 10);
    size_t blen = 0;
    if (head_req || r->status / 100 == 1 || r->status == 204 || r->status == 304) {
        blen = 0;
    } else if (clen >= 0) {
        blen = (size_t)clen;
        while (c->len < hl + blen) {
            int n = cli_fill(c, deadline);
            if (n <= 0)
                return n == -2 ? -2 : -1;
        }
    } else {
        int n;
        while ((n = cli_fill(c, deadline)) > 0)
            ;
        if (n == -2)
            return -2;
        blen = c->len - hl;
    }
    r->body = malloc(blen + 1);
    memcpy(r->body, c->buf + hl, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    memmove(c->buf, c->buf + hl + blen, c->len - hl - blen);
    c->len -= hl + blen;
    return 0;
}

/* Waits for EOF or a reset (reading and keeping whatever comes): the time it came, or -1. */
static long long cli_wait_closed(cli *c, int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;
    for (;;) {
        int n = cli_fill(c, deadline);
        if (n == 0 || n == -1)
            return ts_now_ms();
        if (n == -2)
            return -1;
    }
}

/* Sends req, reads one answer and checks status and body; returns whether both matched. */
/* Sends req (byte by byte with delay_us between bytes when > 0), reads one answer, checks it. */
static bool exchange_paced(cli *c, const char *req, int delay_us, int status, const char *body)
{
    if ((delay_us > 0 ? cli_send_slowly(c, req, delay_us) : cli_sends(c, req)) != 0) {
        fprintf(stderr, "\n  send failed for %.40s\n", req);
        return false;
    }
    resp r;
    int rc = cli_read(c, &r, false, 5000);
    bool ok = rc == 0 && r.status == status && (!body || strcmp(r.body, body) == 0);
    if (!ok)
        fprintf(stderr, "\n  [%.40s] rc %d status %d body '%.60s'\n", req, rc, r.status,
                r.body ? r.body : "");
    resp_free(&r);
    return ok;
}

static bool exchange(cli *c, const char *req, int status, const char *body)
{
    return exchange_paced(c, req, 0, status, body);
}

/* A response's framing: Content-Length equal to the body (unless HEAD) and a Date. */
static void check_framing(const resp *r, size_t want_len)
{
    char v[128];
    CU_ASSERT_PTR_NOT_NULL(resp_hdr(r, "Content-Length", v, sizeof v));
    if (resp_hdr(r, "Content-Length", v, sizeof v))
        CU_ASSERT_EQUAL(strtoull(v, NULL, 10), want_len);
    CU_ASSERT_PTR_NOT_NULL(resp_hdr(r, "Date", v, sizeof v));
    if (resp_hdr(r, "Date", v, sizeof v))
        CU_ASSERT_PTR_NOT_NULL(strstr(v, "GMT"));
}

static bool conn_says_close(const resp *r)
{
    char v[128];
    return resp_hdr(r, "Connection", v, sizeof v) && strcasestr(v, "close") != NULL;
}

/* ---------- cases ---------- */

static void test_keep_alive(void)
{
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    static const char *vals[] = {"one", "two", "three", "four", "five"};
    for (size_t i = 0; i < 5; i++) {
        char req[256];
        snprintf(req, sizeof req, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: %s\r\n\r\n", vals[i]);
        CU_ASSERT_EQUAL_FATAL(cli_sends(&c, req), 0);
        resp r;
        CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 5000), 0);
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT_STRING_EQUAL(r.body, vals[i]);
        check_framing(&r, strlen(vals[i]));
        CU_ASSERT_FALSE(conn_says_close(&r));
        resp_free(&r);
    }
    /* other paths on the same connection: decoded path, query pairs, echo, 404, client ip */
    CU_ASSERT_TRUE(exchange(&c, "GET /e%63ho HTTP/1.1\r\nHost: t\r\n\r\n", 200, ""));
    CU_ASSERT_TRUE(exchange(&c, "GET /q?a=1&b=two&c&k%5B%5D=a+b%21 HTTP/1.1\r\nHost: t\r\n\r\n",
                            200, "a=1;\nb=two;\nc=;\nk[]=a b!;\n"));
    CU_ASSERT_TRUE(exchange(&c, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, "not found"));
    CU_ASSERT_TRUE(exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\n\r\n", 200, "(none)"));
    CU_ASSERT_TRUE(exchange(&c, "GET /ip HTTP/1.1\r\nHost: t\r\n\r\n", 200, "127.0.0.1"));
    CU_ASSERT_EQUAL(
        cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nping"), 0);
    resp r;
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 5000), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "ping");
    char v[64];
    CU_ASSERT_PTR_NOT_NULL(resp_hdr(&r, "X-Method", v, sizeof v));
    if (resp_hdr(&r, "X-Method", v, sizeof v))
        CU_ASSERT_STRING_EQUAL(v, "POST");
    resp_free(&r);
    cli_close(&c);

    /* HTTP/1.0 without keep-alive: closed after the answer */
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_TRUE(exchange(&c, "GET /h HTTP/1.0\r\nX-Test: old\r\n\r\n", 200, "old"));
    CU_ASSERT_NOT_EQUAL(cli_wait_closed(&c, 3000), -1);
    cli_close(&c);

    /* HTTP/1.0 asking for keep-alive: kept, and told so */
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(cli_sends(&c, "GET /h HTTP/1.0\r\nConnection: keep-alive\r\nX-Test: "
                                      "ka\r\n\r\n"),
                        0);
        CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 5000), 0);
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT_STRING_EQUAL(r.body, "ka");
        CU_ASSERT_TRUE(resp_hdr(&r, "Connection", v, sizeof v) && strcasestr(v, "keep-alive"));
        resp_free(&r);
    }
    cli_close(&c);

    /* Connection: close honoured (and announced) */
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_EQUAL(cli_sends(&c, "GET /h HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Test: "
                                  "bye\r\n\r\n"),
                    0);
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 5000), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "bye");
    CU_ASSERT_TRUE(conn_says_close(&r));
    resp_free(&r);
    CU_ASSERT_NOT_EQUAL(cli_wait_closed(&c, 3000), -1);
    cli_close(&c);
}

static void test_pipelining(void)
{
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    const char *reqs = "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: one\r\n\r\n"
                       "GET /async?id=two&ms=100 HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /async?id=three&ms=5 HTTP/1.1\r\nHost: t\r\n\r\n"
                       "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nfour"
                       "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: five\r\n\r\n"
                       "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\nsix\r\n0\r\n\r\n"
                       "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: seven\r\n\r\n";
    static const char *want[] = {"one", "async two", "async three", "four", "five", "six", "seven"};
    CU_ASSERT_EQUAL_FATAL(cli_sends(&c, reqs), 0);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        resp r;
        int rc = cli_read(&c, &r, false, 5000);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc != 0)
            break;
        CU_ASSERT_EQUAL(r.status, 200);
        if (strcmp(r.body, want[i]) != 0)
            fprintf(stderr, "\n  pipelined answer %zu: '%s', want '%s'\n", i, r.body, want[i]);
        CU_ASSERT_STRING_EQUAL(r.body, want[i]);
        resp_free(&r);
    }
    /* still usable afterwards */
    CU_ASSERT_TRUE(
        exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: eight\r\n\r\n", 200, "eight"));
    cli_close(&c);
}

static void test_split_bytes(void)
{
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_TRUE(exchange_paced(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: split\r\n\r\n", 1000,
                                  200, "split"));
    CU_ASSERT_TRUE(exchange_paced(
        &c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world", 1000, 200,
        "hello world"));
    CU_ASSERT_TRUE(exchange_paced(&c,
                                  "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
                                  "chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n"
                                  "T: 1\r\n\r\n",
                                  1000, 200, "hello world"));
    cli_close(&c);
}

static void test_bodies(void)
{
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    /* Content-Length, then an empty body, then chunked, on one connection */
    CU_ASSERT_TRUE(exchange(&c,
                            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\n\r\n"
                            "{\"a\":\"b c\"}\r\n",
                            200, "{\"a\":\"b c\"}\r\n"));
    CU_ASSERT_TRUE(
        exchange(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 200, ""));
    CU_ASSERT_TRUE(exchange(&c,
                            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5\r\nhello\r\nA\r\n, chunked!\r\n0\r\n\r\n",
                            200, "hello, chunked!"));
    /* a body of max_body_bytes exactly is fine */
    char *big = malloc(MAX_BODY + 256);
    int hl = snprintf(big, 256, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n",
                      MAX_BODY);
    memset(big + hl, 'b', MAX_BODY);
    CU_ASSERT_EQUAL(cli_send(&c, big, (size_t)hl + MAX_BODY, 5000), 0);
    resp r;
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 5000), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(r.body_len, MAX_BODY);
    CU_ASSERT_EQUAL(memcmp(r.body, big + hl, MAX_BODY), 0);
    resp_free(&r);
    free(big);

    /* Expect: 100-continue: the body goes only after the interim answer */
    CU_ASSERT_EQUAL(cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                  "Expect: 100-continue\r\n\r\n"),
                    0);
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 3000), 0);
    CU_ASSERT_EQUAL(r.status, 100);
    CU_ASSERT_EQUAL(strncmp(r.head, "HTTP/1.1 100 Continue\r\n", 23), 0);
    resp_free(&r);
    CU_ASSERT_EQUAL(cli_sends(&c, "hello"), 0);
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 5000), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "hello");
    resp_free(&r);
    CU_ASSERT_TRUE(
        exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: after\r\n\r\n", 200, "after"));

    /* a client that sends the body at once anyway: perhaps a 100 first, then one answer */
    CU_ASSERT_EQUAL(cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                                  "Expect: 100-continue\r\n\r\nabc"),
                    0);
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 3000), 0);
    if (r.status == 100) {
        resp_free(&r);
        CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 3000), 0);
    }
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "abc");
    resp_free(&r);
    CU_ASSERT_TRUE(
        exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: after2\r\n\r\n", 200, "after2"));
    cli_close(&c);

    /* no 100 Continue to an HTTP/1.0 client (RFC 9110 §10.1.1) */
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_EQUAL(cli_sends(&c, "POST /echo HTTP/1.0\r\nContent-Length: 5\r\n"
                                  "Expect: 100-continue\r\n\r\n"),
                    0);
    CU_ASSERT_EQUAL(cli_fill(&c, ts_now_ms() + 300), -2);
    CU_ASSERT_EQUAL(cli_sends(&c, "hello"), 0);
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 3000), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "hello");
    resp_free(&r);
    cli_close(&c);

    /* Expect with a body too large: 413 (perhaps after a 100), then closed */
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_EQUAL(cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                                  "Expect: 100-continue\r\n\r\n"),
                    0);
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 3000), 0);
    if (r.status == 100) {
        resp_free(&r);
        CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 3000), 0);
    }
    CU_ASSERT_EQUAL(r.status, 413);
    resp_free(&r);
    CU_ASSERT_NOT_EQUAL(cli_wait_closed(&c, 3000), -1);
    cli_close(&c);
}

static void test_head(void)
{
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_EQUAL(cli_sends(&c, "HEAD /h HTTP/1.1\r\nHost: t\r\nX-Test: hello\r\n\r\n"), 0);
    resp r;
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, true, 5000), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    check_framing(&r, 5); /* the length a GET would have had */
    resp_free(&r);
    /* no body bytes follow */
    CU_ASSERT_EQUAL(cli_fill(&c, ts_now_ms() + 300), -2);
    CU_ASSERT_EQUAL(c.len, 0);
    CU_ASSERT_TRUE(
        exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: world\r\n\r\n", 200, "world"));
    /* HEAD of a big answer, pipelined with a GET */
    CU_ASSERT_EQUAL(
        cli_sends(
            &c,
            "HEAD /big HTTP/1.1\r\nHost: t\r\n\r\nGET /h HTTP/1.1\r\nHost: t\r\nX-Test: x\r\n\r\n"),
        0);
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, true, 5000), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    check_framing(&r, MIB);
    resp_free(&r);
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 5000), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "x");
    resp_free(&r);
    cli_close(&c);
}

/* Sends raw on a new connection: the answer must be status with our handler's body, the
 * connection announced closed and then closed. */
static void expect_error(const char *what, const char *raw, size_t len, int status)
{
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    (void)cli_send(&c, raw, len, 5000); /* the server may answer and close before the end */
    resp r;
    int rc = cli_read(&c, &r, false, 5000);
    char want[32];
    snprintf(want, sizeof want, "error %d\n", status);
    if (rc != 0 || r.status != status || strcmp(r.body, want) != 0)
        fprintf(stderr, "\n  [%s] rc %d status %d body '%.40s'\n", what, rc, r.status,
                r.body ? r.body : "");
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(r.status, status);
    if (rc == 0) {
        CU_ASSERT_STRING_EQUAL(r.body, want);
        CU_ASSERT_TRUE(conn_says_close(&r));
    }
    resp_free(&r);
    CU_ASSERT_NOT_EQUAL(cli_wait_closed(&c, 3000), -1);
    cli_close(&c);
}

static void test_limits(void)
{
    /* a head past max_head_bytes (8192) */
    size_t n = 9300;
    char *raw = malloc(n + 1);
    int hl = snprintf(raw, 64, "GET /h HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(raw + hl, 'a', n - (size_t)hl - 4);
    memcpy(raw + n - 4, "\r\n\r\n", 5);
    expect_error("head too large", raw, n, 431);
    free(raw);

    /* more header lines than max_headers (64) */
    char many[2048];
    size_t m = (size_t)snprintf(many, sizeof many, "GET /h HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 70; i++)
        m += (size_t)snprintf(many + m, sizeof many - m, "X-%d: v\r\n", i);
    m += (size_t)snprintf(many + m, sizeof many - m, "\r\n");
    expect_error("too many headers", many, m, 431);

    const char *cl = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n";
    expect_error("content-length too large", cl, strlen(cl), 413);

    /* a chunked body growing past max_body_bytes */
    size_t cap = 6 * (16384 + 16) + 64, len = 0;
    char *ch = malloc(cap);
    len += (size_t)snprintf(ch, cap,
                            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 6; i++) {
        len += (size_t)snprintf(ch + len, cap - len, "4000\r\n");
        memset(ch + len, 'c', 16384);
        len += 16384;
        len += (size_t)snprintf(ch + len, cap - len, "\r\n");
    }
    expect_error("chunked too large", ch, len, 413);
    free(ch);

    const char *clte =
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n";
    expect_error("Content-Length with Transfer-Encoding", clte, strlen(clte), 400);
    const char *cl2 =
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    expect_error("two Content-Lengths", cl2, strlen(cl2), 400);
    const char *garbage = "GARBAGE\r\n\r\n";
    expect_error("malformed", garbage, strlen(garbage), 400);
    const char *colon = "GET /h HTTP/1.1\r\nHost : x\r\n\r\n";
    expect_error("space before colon", colon, strlen(colon), 400);
    const char *two = "GET / HTTP/2.0\r\nHost: t\r\n\r\n";
    expect_error("HTTP/2.0", two, strlen(two), 505);
    const char *gzip = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n";
    expect_error("gzip", gzip, strlen(gzip), 501);

    /* the server is still fine */
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_TRUE(exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: ok\r\n\r\n", 200, "ok"));
    cli_close(&c);
    /* the request line is not counted in max_head_bytes: a 9,000-byte target with small
     * headers is served (8192 of header lines is the limit) */
    char *longq = malloc(9200);
    int lq = snprintf(longq, 9200, "GET /h?x=");
    memset(longq + lq, 'q', 9000);
    snprintf(longq + lq + 9000, 9200 - (size_t)lq - 9000,
             " HTTP/1.1\r\nHost: t\r\nX-Test: long\r\n\r\n");
    cli lc;
    CU_ASSERT_EQUAL_FATAL(cli_open(&lc), 0);
    CU_ASSERT_TRUE(exchange(&lc, longq, 200, "long"));
    cli_close(&lc);
    free(longq);

    /* RFC 9112 §3.2: HTTP/1.1 needs exactly one Host line; HTTP/1.0 none */
    const char *nohost = "GET /h HTTP/1.1\r\nX-Test: x\r\n\r\n";
    expect_error("no Host", nohost, strlen(nohost), 400);
    const char *twohosts = "GET /h HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n";
    expect_error("two Host lines", twohosts, strlen(twohosts), 400);
    cli c10;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c10), 0);
    CU_ASSERT_TRUE(exchange(&c10, "GET /h HTTP/1.0\r\nX-Test: ten\r\n\r\n", 200, "ten"));
    cli_close(&c10);
}

/* Expected windows (header 1000 ms, idle 1500 ms) with room for a noisy VM. */
#define CLOSE_MIN_MS 500
#define CLOSE_MAX_MS 4000

static void check_window(const char *what, long long t0, long long closed)
{
    long long el = closed < 0 ? -1 : closed - t0;
    fprintf(stderr, "  (%s: closed after %lld ms)\n", what, el);
    CU_ASSERT_TRUE(closed >= 0);
    CU_ASSERT_TRUE(el >= CLOSE_MIN_MS && el <= CLOSE_MAX_MS);
}

static void test_timeout_silent(void)
{
    cli c;
    long long t0 = ts_now_ms();
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    check_window("silent client", t0, cli_wait_closed(&c, CLOSE_MAX_MS + 1000));
    cli_close(&c);
}

static void test_timeout_slowloris(void)
{
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    const char *head =
        "GET /h HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    long long t0 = ts_now_ms(), closed = -1;
    for (size_t i = 0; head[i] && ts_now_ms() - t0 < CLOSE_MAX_MS + 1000; i++) {
        if (cli_send(&c, head + i, 1, 1000) != 0) {
            closed = ts_now_ms();
            break;
        }
        if ((closed = cli_wait_closed(&c, 200)) >= 0)
            break;
    }
    check_window("slowloris", t0, closed);
    cli_close(&c);
}

static void test_timeout_idle(void)
{
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_TRUE(exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: i\r\n\r\n", 200, "i"));
    long long t0 = ts_now_ms();
    check_window("idle keep-alive", t0, cli_wait_closed(&c, CLOSE_MAX_MS + 1000));
    cli_close(&c);

    /* a body that stalls half way */
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_EQUAL(
        cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhalf"), 0);
    t0 = ts_now_ms();
    check_window("stalled body", t0, cli_wait_closed(&c, CLOSE_MAX_MS + 1000));
    cli_close(&c);

    /* a busy keep-alive connection outlives the header timeout: requests 300 ms apart for 2.4 s */
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    for (int i = 0; i < 8; i++) {
        if (!exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: busy\r\n\r\n", 200, "busy")) {
            fprintf(stderr, "\n  busy connection lost at request %d\n", i);
            CU_FAIL("busy keep-alive connection closed");
            break;
        }
        usleep(300 * 1000);
    }
    cli_close(&c);
}

static int wait_quiet(int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;
    while ((atomic_load(&outstanding) != 0 || atomic_load(&threads_live) != 0) &&
           ts_now_ms() < deadline)
        usleep(5000);
    return atomic_load(&outstanding) == 0 && atomic_load(&threads_live) == 0 ? 0 : -1;
}

static int wait_atomic_above(atomic_int *a, int floor, int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;
    while (atomic_load(a) <= floor && ts_now_ms() < deadline)
        usleep(2000);
    return atomic_load(a) > floor ? 0 : -1;
}

static void hang_then(bool reset)
{
    int started = atomic_load(&hang_started), gone = atomic_load(&gone_calls),
        late = atomic_load(&hang_late_answers);
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_EQUAL(cli_sends(&c, "GET /hang HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    CU_ASSERT_EQUAL_FATAL(wait_atomic_above(&hang_started, started, 3000), 0);
    usleep(50 * 1000); /* nothing is answered meanwhile */
    CU_ASSERT_EQUAL(c.len, 0);
    long long t0 = ts_now_ms();
    if (reset)
        cli_reset(&c);
    else
        cli_close(&c);
    int rc = wait_atomic_above(&gone_calls, gone, 3000);
    fprintf(stderr, "  (on_gone after %s: %lld ms)\n", reset ? "reset" : "close", ts_now_ms() - t0);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_TRUE(ts_now_ms() - t0 <= 2000);
    CU_ASSERT_EQUAL(wait_atomic_above(&hang_late_answers, late, 3000), 0);
    usleep(50 * 1000);
    CU_ASSERT_EQUAL(atomic_load(&gone_calls), gone + 1); /* once */
}

static void test_on_gone(void)
{
    /* another connection stays served throughout */
    cli other;
    CU_ASSERT_EQUAL_FATAL(cli_open(&other), 0);
    CU_ASSERT_TRUE(exchange(&other, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: a\r\n\r\n", 200, "a"));
    hang_then(false);
    CU_ASSERT_TRUE(exchange(&other, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: b\r\n\r\n", 200, "b"));
    hang_then(true);
    CU_ASSERT_TRUE(exchange(&other, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: c\r\n\r\n", 200, "c"));
    cli_close(&other);
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_TRUE(exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: d\r\n\r\n", 200, "d"));
    cli_close(&c);
}

/* Many waiting requests whose clients leave at once (half by reset), while answers come from
 * other threads: each gets one on_gone, and the server survives. */
static void test_on_gone_many(void)
{
    enum { N = 12 };
    for (int round = 0; round < 3; round++) {
        int started = atomic_load(&hang_started), gone = atomic_load(&gone_calls),
            late = atomic_load(&hang_late_answers);
        cli c[N];
        int opened = 0;
        for (int i = 0; i < N; i++) {
            if (cli_open(&c[i]) != 0)
                break;
            opened++;
            CU_ASSERT_EQUAL(cli_sends(&c[i], "GET /hang HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
        }
        CU_ASSERT_EQUAL_FATAL(opened, N);
        CU_ASSERT_EQUAL(wait_atomic_above(&hang_started, started + N - 1, 3000), 0);
        for (int i = 0; i < N; i++) {
            if (i % 2)
                cli_reset(&c[i]);
            else
                cli_close(&c[i]);
        }
        CU_ASSERT_EQUAL(wait_atomic_above(&gone_calls, gone + N - 1, 3000), 0);
        CU_ASSERT_EQUAL(wait_atomic_above(&hang_late_answers, late + N - 1, 3000), 0);
        usleep(50 * 1000);
        CU_ASSERT_EQUAL(atomic_load(&gone_calls), gone + N);
    }
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_TRUE(exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: e\r\n\r\n", 200, "e"));
    cli_close(&c);
}

/* A second server with max_conns 3: a fourth connection is closed at once; a freed slot is
 * usable again. */
/* Connects a socket made earlier (no descriptor needed now) and sends one request. */
static int connect_send(int fd, const char *req)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    return send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req) ? 0 : -1;
}

/* Whether a 200 arrives on fd within ms. */
static bool answered_within(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, ms) != 1)
        return false;
    char b[512];
    ssize_t n = recv(fd, b, sizeof b - 1, 0);
    if (n <= 0)
        return false;
    b[n] = 0;
    return strncmp(b, "HTTP/1.1 200", 12) == 0;
}

/* Out of descriptors: accept fails (EMFILE) with the connection still queued, so the listener
 * stays readable; the server pauses accepting instead of spinning on it, and serves the queued
 * clients once descriptors are free again. */
static void test_out_of_fds(void)
{
    struct rlimit old;
    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_NOFILE, &old), 0);
    int c1 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int c2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int reserve = dup(0);
    CU_ASSERT_FATAL(c1 >= 0 && c2 >= 0 && reserve >= 0);
    int lowest = dup(0); /* the lowest free number: every one below it is open */
    CU_ASSERT_FATAL(lowest >= 0);
    close(lowest);
    struct rlimit tight = {(rlim_t)lowest, old.rlim_max};
    CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_NOFILE, &tight), 0);

    CU_ASSERT_EQUAL(connect_send(c1, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: one\r\n\r\n"), 0);
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    CU_ASSERT_FALSE(answered_within(c1, 500)); /* cannot be accepted yet */
    getrusage(RUSAGE_SELF, &r1);
    long cpu_ms =
        (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000 +
        (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) /
            1000;
    fprintf(stderr, " (CPU while out of descriptors: %ld ms in 500 ms)", cpu_ms);
    CU_ASSERT(cpu_ms < 200); /* a loop retrying accept would burn a core: ~500 ms */
    close(reserve); /* one descriptor free: the paused listener comes back and accepts c1 */
    CU_ASSERT_TRUE(answered_within(c1, 3000));

    CU_ASSERT_EQUAL(connect_send(c2, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: two\r\n\r\n"), 0);
    CU_ASSERT_FALSE(answered_within(c2, 300));
    CU_ASSERT_EQUAL(setrlimit(RLIMIT_NOFILE, &old), 0);
    CU_ASSERT_TRUE(answered_within(c2, 3000));
    close(c1);
    close(c2);
    /* still serving */
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open(&c), 0);
    CU_ASSERT_TRUE(
        exchange(&c, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: after\r\n\r\n", 200, "after"));
    cli_close(&c);
}

static void test_max_conns(void)
{
    httpd_config cfg = {.listen_addr = "127.0.0.1:0",
                        .threads = 1,
                        .header_timeout_ms = 3000,
                        .idle_timeout_ms = 3000,
                        .max_head_bytes = 8192,
                        .max_body_bytes = MAX_BODY,
                        .max_headers = 64,
                        .max_conns = 3};
    httpd_handlers h = {.on_request = on_request, .on_gone = on_gone};
    err_info e = {0};
    httpd *s2 = httpd_start(&cfg, &h, NULL, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
    int main_port = port;
    port = httpd_port(s2);
    cli c[3], extra;
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL_FATAL(cli_open(&c[i]), 0);
        CU_ASSERT_TRUE(
            exchange(&c[i], "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: in\r\n\r\n", 200, "in"));
    }
    CU_ASSERT_EQUAL(cli_open(&extra), 0);
    if (extra.fd >= 0) {
        (void)cli_sends(&extra, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: over\r\n\r\n");
        resp r;
        CU_ASSERT_NOT_EQUAL(cli_read(&extra, &r, false, 2000), 0); /* closed, no answer */
        resp_free(&r);
    }
    cli_close(&extra);
    cli_close(&c[0]);
    bool served = false;
    for (long long dl = ts_now_ms() + 3000; !served && ts_now_ms() < dl;) {
        usleep(50 * 1000);
        cli again;
        if (cli_open(&again) != 0)
            continue;
        if (cli_sends(&again, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: again\r\n\r\n") == 0) {
            resp r;
            served = cli_read(&again, &r, false, 2000) == 0 && r.status == 200;
            resp_free(&r);
        }
        cli_close(&again);
    }
    CU_ASSERT_TRUE(served);
    cli_close(&c[1]);
    cli_close(&c[2]);
    port = main_port;
    httpd_quiesce(s2);
    httpd_stop(s2);
    CU_ASSERT_EQUAL(wait_quiet(5000), 0);
    httpd_free(s2);
}

#define MANY_CONNS 50
#define MANY_REQS 20

static atomic_int many_ok, many_fail;

static void *many_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    cli c;
    if (cli_open(&c) != 0) {
        atomic_fetch_add(&many_fail, MANY_REQS);
        return NULL;
    }
    for (int i = 0; i < MANY_REQS; i++) {
        char req[256], want[64];
        if (i % 5 == 4) {
            snprintf(req, sizeof req, "GET /async?id=%d-%d&ms=1 HTTP/1.1\r\nHost: t\r\n\r\n", id,
                     i);
            snprintf(want, sizeof want, "async %d-%d", id, i);
        } else {
            snprintf(want, sizeof want, "payload %d-%d %s", id, i, i % 2 ? "odd" : "even");
            snprintf(req, sizeof req,
                     "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(want), want);
        }
        if (cli_sends(&c, req) != 0) {
            atomic_fetch_add(&many_fail, MANY_REQS - i);
            break;
        }
        resp r;
        int rc = cli_read(&c, &r, false, 10000);
        if (rc == 0 && r.status == 200 && strcmp(r.body, want) == 0) {
            atomic_fetch_add(&many_ok, 1);
        } else {
            fprintf(stderr, "\n  conn %d req %d: rc %d status %d body '%.40s'\n", id, i, rc,
                    r.status, r.body ? r.body : "");
            atomic_fetch_add(&many_fail, 1);
        }
        resp_free(&r);
        if (rc != 0) {
            atomic_fetch_add(&many_fail, MANY_REQS - i - 1);
            break;
        }
    }
    cli_close(&c);
    return NULL;
}

static void test_many_connections(void)
{
    pthread_t t[MANY_CONNS];
    bool made[MANY_CONNS];
    for (intptr_t i = 0; i < MANY_CONNS; i++)
        made[i] = pthread_create(&t[i], NULL, many_main, (void *)i) == 0;
    for (int i = 0; i < MANY_CONNS; i++) {
        CU_ASSERT_TRUE(made[i]);
        if (made[i])
            pthread_join(t[i], NULL);
    }
    CU_ASSERT_EQUAL(atomic_load(&many_fail), 0);
    CU_ASSERT_EQUAL(atomic_load(&many_ok), MANY_CONNS * MANY_REQS);
}

static void test_big_slow_reader(void)
{
    cli c;
    CU_ASSERT_EQUAL_FATAL(cli_open_opt(&c, 8192), 0);
    c.maxread = 4096;
    c.read_delay_us = 500;
    CU_ASSERT_EQUAL_FATAL(cli_sends(&c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"
                                        "GET /big?mb=6 HTTP/1.1\r\nHost: t\r\n\r\n"
                                        "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: after big\r\n\r\n"),
                          0);
    long long t0 = ts_now_ms();
    static const size_t lens[] = {MIB, BIG_LEN};
    for (int i = 0; i < 2; i++) {
        resp r;
        int rc = cli_read(&c, &r, false, 30000);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc != 0)
            break;
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT_EQUAL(r.body_len, lens[i]);
        if (r.body_len == lens[i])
            CU_ASSERT_EQUAL(memcmp(r.body, big_body, lens[i]), 0);
        resp_free(&r);
    }
    fprintf(stderr, "  (7 MiB read slowly in %lld ms)\n", ts_now_ms() - t0);
    c.read_delay_us = 0;
    resp r;
    CU_ASSERT_EQUAL_FATAL(cli_read(&c, &r, false, 5000), 0);
    CU_ASSERT_STRING_EQUAL(r.body, "after big");
    resp_free(&r);
    cli_close(&c);
}

static void test_quiesce_and_stop(void)
{
    cli idle, waiting, late;
    CU_ASSERT_EQUAL_FATAL(cli_open(&idle), 0);
    CU_ASSERT_TRUE(
        exchange(&idle, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: pre\r\n\r\n", 200, "pre"));
    CU_ASSERT_EQUAL_FATAL(cli_open(&waiting), 0);
    int started = atomic_load(&hang_started);
    CU_ASSERT_EQUAL(cli_sends(&waiting, "GET /hang HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    CU_ASSERT_EQUAL(wait_atomic_above(&hang_started, started, 3000), 0);

    httpd_quiesce(srv);
    /* no new connections, but the open keep-alive one is still served */
    int rc = cli_open(&late);
    CU_ASSERT_NOT_EQUAL(rc, 0);
    if (rc == 0)
        cli_close(&late);
    CU_ASSERT_TRUE(
        exchange(&idle, "GET /h HTTP/1.1\r\nHost: t\r\nX-Test: post\r\n\r\n", 200, "post"));

    httpd_stop(srv);
    /* idle connections are closed; the waiting request keeps its connection and gets its answer */
    CU_ASSERT_NOT_EQUAL(cli_wait_closed(&idle, 3000), -1);
    cli_close(&idle);
    httpd_req *r = hang_take(NULL);
    CU_ASSERT_PTR_NOT_NULL(r);
    if (r)
        answer(r, 200, "final", 5);
    resp a;
    rc = cli_read(&waiting, &a, false, 3000);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc == 0) {
        CU_ASSERT_EQUAL(a.status, 200);
        CU_ASSERT_STRING_EQUAL(a.body, "final");
        CU_ASSERT_TRUE(conn_says_close(&a));
    }
    resp_free(&a);

    CU_ASSERT_EQUAL(wait_quiet(5000), 0);
    httpd_free(srv);
    srv = NULL;
    /* closed by httpd_free at the latest */
    CU_ASSERT_NOT_EQUAL(cli_wait_closed(&waiting, 3000), -1);
    cli_close(&waiting);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    big_body = malloc(BIG_LEN);
    if (!big_body)
        return 2;
    for (size_t i = 0; i < BIG_LEN; i++)
        big_body[i] = (char)('a' + (i * 7 + i / 251) % 26);

    httpd_config cfg = {.listen_addr = "127.0.0.1:0",
                        .threads = 2,
                        .header_timeout_ms = 1000,
                        .idle_timeout_ms = 1500,
                        .max_head_bytes = 8192,
                        .max_body_bytes = MAX_BODY,
                        .max_headers = 64,
                        .max_conns = 100};
    httpd_handlers h = {.on_request = on_request, .on_gone = on_gone};
    err_info e = {0};
    srv = httpd_start(&cfg, &h, NULL, &e);
    if (!srv) {
        fprintf(stderr, "httpd_start: %s\n", e.msg);
        free(big_body);
        return 1;
    }
    port = httpd_port(srv);
    if (port <= 0) {
        fprintf(stderr, "httpd_port: %d\n", port);
        return 1;
    }

    static const ts_case cases[] = {{"keep-alive", test_keep_alive},
                                    {"pipelining", test_pipelining},
                                    {"split byte by byte", test_split_bytes},
                                    {"bodies and 100-continue", test_bodies},
                                    {"HEAD", test_head},
                                    {"limits", test_limits},
                                    {"timeout: silent client", test_timeout_silent},
                                    {"timeout: slowloris", test_timeout_slowloris},
                                    {"timeout: idle and stalled", test_timeout_idle},
                                    {"on_gone", test_on_gone},
                                    {"on_gone, many at once", test_on_gone_many},
                                    {"max_conns", test_max_conns},
                                    {"out of descriptors", test_out_of_fds},
                                    {"many connections", test_many_connections},
                                    {"big answer, slow reader", test_big_slow_reader},
                                    {"quiesce and stop", test_quiesce_and_stop},
                                    {NULL, NULL}};
    int rc = ts_main("integration_httpd", cases);

    if (srv) { /* the last case did not get as far as freeing it */
        httpd_quiesce(srv);
        httpd_stop(srv);
        httpd_req *r;
        while ((r = hang_take(NULL)))
            answer(r, 200, "", 0);
        if (wait_quiet(5000) == 0)
            httpd_free(srv);
        else
            fprintf(stderr, "requests still running: the server is not freed\n");
        rc = 1;
    }
    free(big_body);
    return rc;
}
