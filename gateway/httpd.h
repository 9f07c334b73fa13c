/* httpd: the gateway's HTTP/1.1 server: one epoll loop per thread, keep-alive, pipelining, limits
 * and timeouts, and answers written by whichever thread finishes the request (a gRPC completion
 * writes its own response: no hand-back to the loop, no re-arming of the socket). */
#ifndef GATEWAY_HTTPD_H
#define GATEWAY_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "http_parse.h"

typedef struct httpd httpd;

/* One request, valid from on_request until httpd_end returns. Strings point into the
 * connection's buffer. */
typedef struct httpd_req {
    const char *method; /* "" when error != 0 and the head could not be read */
    const char *path;   /* percent-decoded, without the query */
    int minor;          /* HTTP/1.<minor> */
    const http_kv *headers;
    size_t nheaders;
    const http_kv *query; /* decoded */
    size_t nquery;
    const char *body; /* not NUL-terminated */
    size_t body_len;
    const char *client_ip;
    /* 0, or the status the server could not serve the request with (400 malformed, 413 body
     * too large, 431 head too large, 501, 505): the handler writes that answer (its own body)
     * and the connection closes after it. */
    int error;
    void *user; /* the handler's */
} httpd_req;

typedef struct httpd_handlers {
    /* On the loop thread, once per request (head and body read). The handler answers with
     * httpd_begin ... httpd_end exactly once, at once or later from any thread. */
    void (*on_request)(void *ud, httpd_req *r);
    /* On the loop thread: the client hung up (or reset) while r waits for its answer. The
     * handler must still call httpd_end (it writes nothing then). Must not answer from here. */
    void (*on_gone)(void *ud, httpd_req *r);
} httpd_handlers;

typedef struct httpd_config {
    const char *listen_addr; /* "host:port" (IPv4; "*" or "" = any; port 0 = any free one) */
    int threads;
    int header_timeout_ms; /* from a connection's first byte (or its accept) to a complete head */
    int idle_timeout_ms;   /* keep-alive wait for the next request; also any stall mid-body */
    size_t max_head_bytes; /* header lines (the request line may add up to 8 KiB); past it: 431 */
    size_t max_body_bytes; /* past it: error 413 */
    size_t max_headers;    /* header lines; past it: error 431 */
    int max_conns;         /* accepted connections past it are closed at once */
} httpd_config;

httpd *httpd_start(const httpd_config *c, const httpd_handlers *h, void *ud, err_info *e);
int httpd_port(const httpd *s);
/* Stops accepting and closes the listening socket (in-flight and keep-alive connections stay). */
void httpd_quiesce(httpd *s);
/* Stops the loops and closes idle connections; requests still waiting keep their connection
 * until httpd_end. Call httpd_free once every started request has ended. */
void httpd_stop(httpd *s);
void httpd_free(httpd *s);

/* The answer: status line, then headers (Content-Length, Date and Connection are added by
 * httpd_end), then the body, sent at httpd_end (not sent for HEAD). */
void httpd_begin(httpd_req *r, int status);
void httpd_header(httpd_req *r, const char *name, const char *value);
void httpd_end(httpd_req *r, const char *body, size_t len);

/* A request header's value, or NULL. */
const char *httpd_get(const httpd_req *r, const char *name);

#endif
