/* httpd: HTTP/1.1 on edge-triggered epoll, one loop per thread, a connection owned by its loop
 * except while its request is with the handler. The thread that finishes a request writes the
 * answer itself; the loop hears of the connection again only when something is left to do
 * (pipelined bytes, a partial write, an event seen meanwhile, a close), through a posted list. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/fmt.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rpc_server.h" /* rpc_now_ms */

#define RBUF_MIN 4096
#define WBUF_MIN 4096
#define BUF_KEEP (64 * 1024) /* buffers grown past this are shrunk once their request is done */
#define LINGER_MS 2000       /* after an error answer: how long unread input is drained */
#define SWEEP_MS 100
#define LINE_ROOM 8192 /* room for the request line beside max_head_bytes of header lines */

typedef enum phase { P_HEAD, P_BODY, P_IDLE, P_LINGER } phase;

typedef struct loop loop;

typedef struct conn {
    loop *lp;
    int fd;
    struct conn *prev, *next; /* the loop's list (loop thread) */
    struct conn *post_next;   /* the loop's posted list (post_mu) */
    bool posted;              /* (post_mu) */
    pthread_mutex_t mu;
    /* guarded by mu: who owns the connection, and what happened while the handler did */
    bool busy;        /* a request is with the handler */
    bool in_dispatch; /* the loop is inside on_request: it goes on by itself after */
    bool ev;          /* an epoll event arrived while busy */
    bool hup;         /* the socket failed: write nothing more */
    bool gone;        /* on_gone was called for the request in flight */
    bool peer_eof;    /* the client shut down its side */
    /* the loop's, or the handler's while busy */
    bool close_after;
    bool maybe_more; /* the last read filled the buffer: the socket may hold more */
    bool drained;    /* the last read emptied the socket and no event came since: an edge will */
    bool head_only;  /* HEAD: no body in the answer */
    bool done;       /* answered, but its bytes are still in rbuf (the loop consumes them) */
    int status;      /* of the answer being written */
    phase ph;
    int64_t ph_ms, io_ms;
    char *rbuf;
    size_t rlen, rcap;
    size_t req_len; /* bytes of rbuf taken by the request in flight */
    http_head head;
    http_kv *hdrs;
    http_kv *qkv;
    size_t qcap;
    httpd_req req;
    char *wbuf;
    size_t wlen, woff, wcap;
    char ip[INET6_ADDRSTRLEN];
} conn;

struct loop {
    httpd *s;
    int epfd, evfd;
    pthread_t th;
    bool started;
    conn list; /* sentinel */
    int64_t now;
    pthread_mutex_t post_mu;
    conn *posted;
    bool listening;
    int64_t accept_paused_until; /* out of descriptors: the listener is out of the epoll set */
    int64_t accept_warned;
};

struct httpd {
    httpd_config c;
    httpd_handlers h;
    void *ud;
    int lfd;
    int port;
    int nloops;
    loop *loops;
    atomic_bool stop, quiesce;
    atomic_int quiesce_acks;
    atomic_int nconns;
};

static void wake(loop *lp)
{
    uint64_t one = 1;
    ssize_t n = write(lp->evfd, &one, sizeof one);
    (void)n; /* EAGAIN: the counter is full, the loop is awake anyway */
}

/* Puts c on its loop's posted list; true when the loop must be woken. Called with c->mu held by
 * a thread other than the loop: once c->mu is released the loop may close c, so the list entry
 * must be in place before (conn_close takes it off again). */
static bool post_locked(conn *c)
{
    loop *lp = c->lp;
    bool w = false;
    pthread_mutex_lock(&lp->post_mu);
    if (!c->posted) {
        c->posted = true;
        c->post_next = lp->posted;
        lp->posted = c;
        w = true;
    }
    pthread_mutex_unlock(&lp->post_mu);
    return w;
}

/* ---------- buffers ---------- */

static void wbuf_put(conn *c, const char *p, size_t n)
{
    if (c->wlen + n > c->wcap) {
        size_t cap = c->wcap ? c->wcap : WBUF_MIN;
        while (cap < c->wlen + n)
            cap *= 2;
        c->wbuf = xrealloc(c->wbuf, cap);
        c->wcap = cap;
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
}

static void wbuf_str(conn *c, const char *s)
{
    wbuf_put(c, s, strlen(s));
}

/* Grows the read buffer to at least need bytes; the parsed head's pointers follow it. */
static void rbuf_grow(conn *c, size_t need)
{
    if (need <= c->rcap)
        return;
    size_t cap = c->rcap ? c->rcap : RBUF_MIN;
    while (cap < need)
        cap *= 2;
    /* A new block and a copy rather than realloc: the offsets are taken while the old block is
     * still valid. */
    char *old = c->rbuf;
    char *nb = xmalloc(cap);
    if (c->rlen)
        memcpy(nb, old, c->rlen);
    if (c->ph == P_BODY) {
        http_head *h = &c->head;
        h->method = nb + (h->method - old);
        h->target = nb + (h->target - old);
        for (size_t i = 0; i < h->nheaders; i++) {
            c->hdrs[i].key = nb + (c->hdrs[i].key - old);
            c->hdrs[i].value = nb + (c->hdrs[i].value - old);
        }
    }
    free(old);
    c->rbuf = nb;
    c->rcap = cap;
}

/* ---------- connections ---------- */

static conn *conn_new(loop *lp, int fd, const struct sockaddr_storage *ss)
{
    httpd *s = lp->s;
    conn *c = xcalloc(1, sizeof *c);
    c->lp = lp;
    c->fd = fd;
    pthread_mutex_init(&c->mu, NULL);
    c->hdrs = xmalloc(s->c.max_headers * sizeof *c->hdrs);
    c->ph = P_HEAD;
    c->ph_ms = c->io_ms = lp->now;
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, c->ip, sizeof c->ip);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, c->ip, sizeof c->ip);
    c->next = lp->list.next;
    c->prev = &lp->list;
    lp->list.next->prev = c;
    lp->list.next = c;
    return c;
}

static void conn_free(conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    pthread_mutex_destroy(&c->mu);
    free(c->rbuf);
    free(c->wbuf);
    free(c->hdrs);
    free(c->qkv);
    free(c);
}

/* Loop thread, connection not busy. */
static void conn_close(conn *c)
{
    loop *lp = c->lp;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    pthread_mutex_lock(&lp->post_mu);
    if (c->posted)
        for (conn **pp = &lp->posted; *pp; pp = &(*pp)->post_next)
            if (*pp == c) {
                *pp = c->post_next;
                break;
            }
    pthread_mutex_unlock(&lp->post_mu);
    atomic_fetch_sub(&lp->s->nconns, 1);
    conn_free(c);
}

/* Writes what is pending. False when the socket failed. */
static bool flush(conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        return false;
    }
    c->wlen = c->woff = 0;
    if (c->wcap > BUF_KEEP) {
        free(c->wbuf);
        c->wbuf = NULL;
        c->wcap = 0;
    }
    return true;
}

/* The request in flight is done with: its bytes leave the read buffer. */
static void consume_request(conn *c, int64_t now)
{
    if (c->req_len) {
        memmove(c->rbuf, c->rbuf + c->req_len, c->rlen - c->req_len);
        c->rlen -= c->req_len;
        c->req_len = 0;
    }
    c->ph = c->rlen ? P_HEAD : P_IDLE;
    c->ph_ms = c->io_ms = now;
    if (c->rcap > BUF_KEEP && c->rlen < RBUF_MIN) {
        c->rbuf = xrealloc(c->rbuf, RBUF_MIN);
        c->rcap = RBUF_MIN;
    }
}

/* Reads what the socket has. 1: got bytes, 0: nothing more for now, -1: closed or failed. */
static int read_more(conn *c, size_t want)
{
    rbuf_grow(c, c->rlen + want);
    size_t room = c->rcap - c->rlen;
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, room, 0);
        if (n > 0) {
            c->rlen += (size_t)n;
            c->maybe_more = (size_t)n == room;
            c->drained = !c->maybe_more;
            c->io_ms = c->lp->now;
            return 1;
        }
        if (n < 0 && errno == EINTR)
            continue;
        c->maybe_more = false;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->drained = true;
            return 0;
        }
        return -1;
    }
}

static void set_error(conn *c, int status)
{
    memset(&c->req, 0, sizeof c->req);
    c->req.method = "";
    c->req.path = "";
    c->req.client_ip = c->ip;
    c->req.error = status;
    c->req_len = c->rlen;
    c->head_only = false;
    c->close_after = true;
}

static int parse_error_status(http_parse_rc rc)
{
    switch (rc) {
    case HP_TOO_LARGE:
        return 431;
    case HP_VERSION:
        return 505;
    case HP_NOT_IMPLEMENTED:
        return 501;
    default:
        return 400;
    }
}

/* RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host line, else 400. */
static bool one_host(const http_head *h)
{
    int n = 0;
    for (size_t i = 0; i < h->nheaders; i++)
        n += strcasecmp(h->headers[i].key, "Host") == 0;
    return n == 1;
}

/* Fills c->req from the parsed head and the body at rbuf[body_off..+blen). */
static void fill_request(conn *c, size_t body_off, size_t blen)
{
    httpd_req *r = &c->req;
    memset(r, 0, sizeof *r);
    char *path, *query;
    http_split_target(c->head.target, &path, &query);
    r->method = c->head.method;
    r->path = path;
    r->minor = c->head.minor;
    r->headers = c->hdrs;
    r->nheaders = c->head.nheaders;
    if (query && *query) {
        size_t n = 1;
        for (const char *p = query; *p; p++)
            n += *p == '&';
        if (n > c->qcap) {
            c->qkv = xrealloc(c->qkv, n * sizeof *c->qkv);
            c->qcap = n;
        }
        r->query = c->qkv;
        r->nquery = http_parse_query(query, c->qkv, n);
    }
    r->body = c->rbuf + body_off;
    r->body_len = blen;
    r->client_ip = c->ip;
    c->head_only = strcmp(r->method, "HEAD") == 0;
    c->close_after = !c->head.keep_alive;
}

/* Whether a whole request is in the buffer (then c->req is ready); reads as needed. 1: ready,
 * 0: wait for the socket, -1: the connection is gone (closed here). */
static int next_request(conn *c)
{
    httpd *s = c->lp->s;
    for (;;) {
        if (c->ph == P_IDLE || c->ph == P_HEAD) {
            if (c->rlen) {
                if (c->ph == P_IDLE) {
                    c->ph = P_HEAD;
                    c->ph_ms = c->lp->now;
                }
                http_parse_rc rc =
                    http_parse_head(c->rbuf, c->rlen, c->hdrs, s->c.max_headers, &c->head);
                size_t cap = s->c.max_head_bytes + LINE_ROOM;
                if (rc == HP_OK && c->head.fields_len > s->c.max_head_bytes)
                    rc = HP_TOO_LARGE;
                if (rc == HP_INCOMPLETE && c->rlen > cap)
                    rc = HP_TOO_LARGE;
                if (rc != HP_OK && rc != HP_INCOMPLETE) {
                    set_error(c, parse_error_status(rc));
                    return 1;
                }
                if (rc == HP_OK) {
                    if (c->head.minor >= 1 && !one_host(&c->head)) {
                        set_error(c, 400);
                        return 1;
                    }
                    if (c->head.content_length > (int64_t)s->c.max_body_bytes) {
                        set_error(c, 413);
                        return 1;
                    }
                    c->ph = P_BODY;
                    if (c->head.expect_continue && c->head.minor >= 1 &&
                        c->rlen == c->head.head_len &&
                        (c->head.chunked || c->head.content_length > 0)) {
                        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                        ssize_t n = send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL);
                        (void)n; /* a client that cannot take 25 bytes will time out */
                    }
                    continue;
                }
            }
            if (c->drained)
                return 0; /* saves the read that would only say EAGAIN */
            size_t want = c->rlen < RBUF_MIN ? RBUF_MIN - c->rlen : c->rlen;
            size_t cap = s->c.max_head_bytes + LINE_ROOM;
            if (c->rlen + want > cap + 1)
                want = cap + 1 - c->rlen;
            int rr = read_more(c, want ? want : 1);
            if (rr <= 0)
                return rr;
            continue;
        }
        /* P_BODY */
        size_t hl = c->head.head_len;
        if (c->head.chunked) {
            size_t blen = 0, used = 0;
            http_parse_rc rc =
                http_chunked_decode(c->rbuf + hl, c->rlen - hl, s->c.max_body_bytes, &blen, &used);
            if (rc == HP_INCOMPLETE && c->rlen - hl > 2 * s->c.max_body_bytes + 65536)
                rc = HP_TOO_LARGE; /* chunk overhead without end */
            if (rc == HP_OK) {
                c->req_len = hl + used;
                fill_request(c, hl, blen);
                return 1;
            }
            if (rc != HP_INCOMPLETE) {
                set_error(c, rc == HP_TOO_LARGE ? 413 : 400);
                return 1;
            }
            if (c->drained)
                return 0;
            int rr = read_more(c, c->rlen - hl < 16384 ? 16384 : c->rlen - hl);
            if (rr <= 0)
                return rr;
            continue;
        }
        size_t cl = c->head.content_length > 0 ? (size_t)c->head.content_length : 0;
        if (c->rlen - hl >= cl) {
            c->req_len = hl + cl;
            fill_request(c, hl, cl);
            return 1;
        }
        if (c->drained)
            return 0;
        int rr = read_more(c, hl + cl - c->rlen);
        if (rr <= 0)
            return rr;
    }
}

static void dispatch(conn *c)
{
    httpd *s = c->lp->s;
    c->wlen = c->woff = 0;
    pthread_mutex_lock(&c->mu);
    c->busy = true;
    c->in_dispatch = true;
    c->ev = false;
    c->gone = false;
    pthread_mutex_unlock(&c->mu);
    s->h.on_request(s->ud, &c->req);
}

/* Everything the loop does for a connection it owns; returns when it must wait. */
static void conn_run(conn *c)
{
    for (;;) {
        if (c->woff < c->wlen) {
            if (!flush(c)) {
                conn_close(c);
                return;
            }
            if (c->woff < c->wlen)
                return; /* EPOLLOUT brings us back */
        }
        if (c->ph == P_LINGER) {
            char junk[4096];
            ssize_t n;
            while ((n = recv(c->fd, junk, sizeof junk, 0)) > 0)
                ;
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                conn_close(c);
            return;
        }
        if (c->close_after) {
            /* Half-close and drain, so unread input does not turn our answer into a reset. */
            shutdown(c->fd, SHUT_WR);
            c->ph = P_LINGER;
            c->ph_ms = c->lp->now;
            continue;
        }
        if (c->done) {
            c->done = false;
            consume_request(c, c->lp->now);
        }
        if (c->peer_eof && !c->rlen) {
            conn_close(c);
            return;
        }
        int r = next_request(c);
        if (r < 0) {
            conn_close(c);
            return;
        }
        if (r == 0) {
            if (c->peer_eof) {
                conn_close(c);
                return;
            }
            return;
        }
        dispatch(c);
        pthread_mutex_lock(&c->mu);
        c->in_dispatch = false;
        bool busy = c->busy;
        pthread_mutex_unlock(&c->mu);
        if (busy)
            return; /* the handler's now; httpd_end posts it back if needed */
    }
}

static void conn_event(conn *c, uint32_t events)
{
    httpd *s = c->lp->s;
    pthread_mutex_lock(&c->mu);
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->peer_eof = true;
    if (events & (EPOLLHUP | EPOLLERR))
        c->hup = true;
    if (c->busy) {
        c->ev = true;
        if (c->peer_eof && !c->gone) {
            c->gone = true;
            s->h.on_gone(s->ud, &c->req);
        }
        pthread_mutex_unlock(&c->mu);
        return;
    }
    pthread_mutex_unlock(&c->mu);
    if (c->hup) {
        conn_close(c);
        return;
    }
    c->drained = false;
    conn_run(c);
}

/* ---------- the answer ---------- */

static conn *conn_of(httpd_req *r)
{
    return (conn *)((char *)r - offsetof(conn, req));
}

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Status";
    }
}

void httpd_begin(httpd_req *r, int status)
{
    conn *c = conn_of(r);
    c->wlen = c->woff = 0;
    if (status < 100 || status > 999)
        status = 500;
    c->status = status;
    char line[64] = "HTTP/1.1 ";
    size_t n = 9 + fmt_u64(line + 9, (uint64_t)status);
    line[n++] = ' ';
    wbuf_put(c, line, n);
    wbuf_str(c, reason(status));
    wbuf_put(c, "\r\n", 2);
}

void httpd_header(httpd_req *r, const char *name, const char *value)
{
    /* a CR or LF would let a value start a header or a body of its own */
    if (strpbrk(value, "\r\n"))
        return;
    conn *c = conn_of(r);
    wbuf_str(c, name);
    wbuf_put(c, ": ", 2);
    wbuf_str(c, value);
    wbuf_put(c, "\r\n", 2);
}

/* RFC 9110 date, formatted once a second per thread. */
static const char *http_date(void)
{
    static _Thread_local time_t last;
    static _Thread_local char buf[40];
    time_t t = time(NULL);
    if (t != last) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = t;
    }
    return buf;
}

void httpd_end(httpd_req *r, const char *body, size_t len)
{
    conn *c = conn_of(r);
    httpd *s = c->lp->s;
    int status = c->status;
    bool bodyless = status < 200 || status == 204 || status == 304;
    char num[FMT_INT_MAX];
    if (!bodyless) {
        wbuf_put(c, "Content-Length: ", 16);
        wbuf_put(c, num, fmt_u64(num, len));
        wbuf_put(c, "\r\n", 2);
    }
    wbuf_put(c, "Date: ", 6);
    wbuf_str(c, http_date());
    wbuf_put(c, "\r\n", 2);
    if (r->error || atomic_load(&s->stop))
        c->close_after = true;
    if (c->close_after)
        wbuf_put(c, "Connection: close\r\n", 19);
    else if (r->minor == 0)
        wbuf_put(c, "Connection: keep-alive\r\n", 24);
    wbuf_put(c, "\r\n", 2);
    if (!bodyless && !c->head_only && len)
        wbuf_put(c, body, len);

    pthread_mutex_lock(&c->mu);
    if (!c->hup && !flush(c))
        c->hup = true;
    int64_t now = rpc_now_ms();
    bool clean = !c->hup && c->woff == c->wlen && !c->close_after && !c->ev && !c->peer_eof &&
                 !c->maybe_more && c->rlen == c->req_len;
    if (clean)
        consume_request(c, now); /* the usual case: nothing for the loop to do */
    else
        c->done = true;
    c->busy = false;
    c->ev = false;
    loop *lp = c->lp;
    bool w = !clean && !c->in_dispatch && post_locked(c);
    pthread_mutex_unlock(&c->mu);
    /* c is the loop's again: not touched past this point */
    if (w)
        wake(lp);
}

const char *httpd_get(const httpd_req *r, const char *name)
{
    return http_find_header(r->headers, r->nheaders, name);
}

/* ---------- loops ---------- */

static void accept_one(loop *lp)
{
    httpd *s = lp->s;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* The pending connection stays queued and the listener stays readable: without a
             * pause this loop would spin on it. The sweep puts the listener back. */
            if (lp->now - lp->accept_warned >= 1000) {
                log_warn(NULL, "accept: %s: not accepting for 100 ms", strerror(errno));
                lp->accept_warned = lp->now;
            }
            epoll_ctl(lp->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
            lp->accept_paused_until = lp->now + 100;
        }
        return;
    }
    if (atomic_fetch_add(&s->nconns, 1) >= s->c.max_conns) {
        atomic_fetch_sub(&s->nconns, 1);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn *c = conn_new(lp, fd, &ss);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        conn_close(c);
}

static void run_posted(loop *lp)
{
    pthread_mutex_lock(&lp->post_mu);
    conn *c = lp->posted;
    lp->posted = NULL;
    pthread_mutex_unlock(&lp->post_mu);
    while (c) {
        /* next is read as the flag drops: a re-post from here on starts a new list */
        pthread_mutex_lock(&lp->post_mu);
        conn *next = c->post_next;
        c->posted = false;
        pthread_mutex_unlock(&lp->post_mu);
        pthread_mutex_lock(&c->mu);
        bool busy = c->busy;
        if (busy)
            c->ev = true; /* dispatched again since: its httpd_end looks once more */
        pthread_mutex_unlock(&c->mu);
        if (!busy) {
            c->drained = false; /* an event may have come while the handler had it */
            if (c->hup)
                conn_close(c);
            else
                conn_run(c);
        }
        c = next;
    }
}

/* Connections past their time: slow heads, stalled bodies or writes, idle keep-alive. */
static void sweep(loop *lp)
{
    httpd *s = lp->s;
    int64_t now = lp->now;
    if (lp->accept_paused_until && now >= lp->accept_paused_until) {
        lp->accept_paused_until = 0;
        struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = s};
        if (lp->listening)
            epoll_ctl(lp->epfd, EPOLL_CTL_ADD, s->lfd, &le);
    }
    for (conn *c = lp->list.next, *n; c != &lp->list; c = n) {
        n = c->next;
        pthread_mutex_lock(&c->mu);
        bool busy = c->busy;
        pthread_mutex_unlock(&c->mu);
        if (busy)
            continue;
        bool late;
        if (c->woff < c->wlen)
            late = now - c->io_ms > s->c.idle_timeout_ms;
        else if (c->ph == P_LINGER)
            late = now - c->ph_ms > LINGER_MS;
        else if (c->ph == P_HEAD)
            late = now - c->ph_ms > s->c.header_timeout_ms;
        else if (c->ph == P_BODY)
            late = now - c->io_ms > s->c.idle_timeout_ms;
        else
            late = now - c->ph_ms > s->c.idle_timeout_ms;
        if (late)
            conn_close(c);
    }
}

static void loop_quiesce(loop *lp)
{
    httpd *s = lp->s;
    if (lp->listening && atomic_load(&s->quiesce)) {
        epoll_ctl(lp->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
        lp->listening = false;
        atomic_fetch_add(&s->quiesce_acks, 1);
    }
}

static void *loop_main(void *arg)
{
    loop *lp = arg;
    httpd *s = lp->s;
    pthread_setname_np(pthread_self(), "http-loop"); /* top -H, perf, gdb */
    struct epoll_event evs[128];
    int64_t next_sweep = 0;
    while (!atomic_load(&s->stop)) {
        int n = epoll_wait(lp->epfd, evs, 128, SWEEP_MS);
        lp->now = rpc_now_ms();
        bool woke = false;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == s)
                accept_one(lp);
            else if (p == lp)
                woke = true;
            else
                conn_event(p, evs[i].events);
        }
        if (woke) {
            uint64_t v;
            ssize_t r = read(lp->evfd, &v, sizeof v);
            (void)r;
            loop_quiesce(lp);
            run_posted(lp);
        }
        if (lp->now >= next_sweep) {
            sweep(lp);
            next_sweep = lp->now + SWEEP_MS;
        }
    }
    loop_quiesce(lp);
    /* idle connections close now; a busy one stays until its httpd_end, freed by httpd_free */
    for (conn *c = lp->list.next, *nx; c != &lp->list; c = nx) {
        nx = c->next;
        pthread_mutex_lock(&c->mu);
        bool busy = c->busy;
        pthread_mutex_unlock(&c->mu);
        if (!busy)
            conn_close(c);
    }
    return NULL;
}

/* ---------- start and stop ---------- */

static int listen_on(const char *addr, err_info *e)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    const char *colon = strrchr(addr, ':');
    char host[64];
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || hl >= sizeof host || end == colon + 1 || *end || port < 0 || port > 65535) {
        err_set(e, ERR_INVALID_ARGUMENT, "LISTEN_ADDR: bad address '%s'", addr);
        return -1;
    }
    memcpy(host, addr, hl);
    host[hl] = 0;
    if (hl == 0 || strcmp(host, "*") == 0)
        snprintf(host, sizeof host, "0.0.0.0");
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        err_set(e, ERR_INVALID_ARGUMENT, "LISTEN_ADDR: bad address '%s'", addr);
        return -1;
    }
    sa.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1024) != 0) {
        err_set(e, ERR_UNAVAILABLE, "cannot listen on %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

httpd *httpd_start(const httpd_config *c, const httpd_handlers *h, void *ud, err_info *e)
{
    int lfd = listen_on(c->listen_addr, e);
    if (lfd < 0)
        return NULL;
    httpd *s = xcalloc(1, sizeof *s);
    s->c = *c;
    if (s->c.threads < 1)
        s->c.threads = 1;
    if (s->c.max_headers < 8)
        s->c.max_headers = 8;
    s->h = *h;
    s->ud = ud;
    s->lfd = lfd;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    s->port = getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0 ? ntohs(sa.sin_port) : 0;
    s->loops = xcalloc((size_t)s->c.threads, sizeof *s->loops);
    for (int i = 0; i < s->c.threads; i++) {
        loop *lp = &s->loops[i];
        lp->s = s;
        lp->list.next = lp->list.prev = &lp->list;
        pthread_mutex_init(&lp->post_mu, NULL);
        lp->now = rpc_now_ms();
        lp->epfd = epoll_create1(EPOLL_CLOEXEC);
        lp->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        s->nloops++;
        struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = s};
        struct epoll_event we = {.events = EPOLLIN, .data.ptr = lp};
        if (lp->epfd < 0 || lp->evfd < 0 || epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lfd, &le) != 0 ||
            epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->evfd, &we) != 0 ||
            pthread_create(&lp->th, NULL, loop_main, lp) != 0) {
            err_set(e, ERR_UNAVAILABLE, "http loop: %s", strerror(errno));
            httpd_stop(s);
            httpd_free(s);
            return NULL;
        }
        lp->listening = true;
        lp->started = true;
    }
    return s;
}

int httpd_port(const httpd *s)
{
    return s->port;
}

void httpd_quiesce(httpd *s)
{
    if (s->lfd < 0)
        return;
    atomic_store(&s->quiesce, true);
    int want = 0;
    for (int i = 0; i < s->nloops; i++)
        if (s->loops[i].started) {
            want++;
            wake(&s->loops[i]);
        }
    /* the loops take the socket out of their epoll sets before it is closed (an fd number
     * reused under a loop still watching it would be accepted from) */
    for (int i = 0; i < 2000 && atomic_load(&s->quiesce_acks) < want; i++)
        usleep(1000);
    close(s->lfd);
    s->lfd = -1;
}

void httpd_stop(httpd *s)
{
    atomic_store(&s->stop, true);
    for (int i = 0; i < s->nloops; i++)
        if (s->loops[i].started) {
            wake(&s->loops[i]);
            pthread_join(s->loops[i].th, NULL);
            s->loops[i].started = false;
        }
}

void httpd_free(httpd *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nloops; i++) {
        loop *lp = &s->loops[i];
        for (conn *c = lp->list.next, *nx; c != &lp->list; c = nx) {
            nx = c->next;
            conn_free(c);
        }
        if (lp->epfd >= 0)
            close(lp->epfd);
        if (lp->evfd >= 0)
            close(lp->evfd);
        pthread_mutex_destroy(&lp->post_mu);
    }
    if (s->lfd >= 0)
        close(s->lfd);
    free(s->loops);
    free(s);
}
