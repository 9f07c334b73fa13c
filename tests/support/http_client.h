/* http_client: a tiny blocking HTTP/1.1 client over a TCP socket for the e2e and fault tests. */
#ifndef TS_HTTP_CLIENT_H
#define TS_HTTP_CLIENT_H

#include <stddef.h>

typedef struct http_resp {
    int status;    /* 0 on a transport failure or time-out */
    char *headers; /* raw header block (malloc'ed) */
    char *body;    /* malloc'ed, NUL-terminated */
    size_t body_len;
    long long sent_ms; /* CLOCK_MONOTONIC ms when the whole request had been sent (0 = never) */
} http_resp;

/* Sends one request on a new connection (Connection: close) to 127.0.0.1:port; extra_headers is
 * "Name: value\r\n..." or NULL; body may be NULL. Gives up after timeout_ms. */
void http_do(int port, const char *method, const char *path, const char *extra_headers,
             const char *body, size_t body_len, int timeout_ms, http_resp *out);
/* Sends raw bytes, half-closes the connection and reads the answer (for malformed requests). */
void http_raw(int port, const char *raw, size_t len, int timeout_ms, http_resp *out);
/* Value of a response header (case-insensitive name) copied into buf; NULL when absent. */
const char *http_header(const http_resp *r, const char *name, char *buf, size_t len);
void http_resp_free(http_resp *r);

#endif
