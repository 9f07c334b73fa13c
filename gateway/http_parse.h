/* http_parse: HTTP/1.1 request heads, chunked bodies, percent-encoding and query strings, parsed
 * in place in the connection's read buffer (RFC 9112). Pure functions: no I/O, no allocation. */
#ifndef GATEWAY_HTTP_PARSE_H
#define GATEWAY_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_kv {
    const char *key;
    const char *value;
} http_kv;

typedef enum http_parse_rc {
    HP_OK = 0,
    HP_INCOMPLETE = -1, /* not all there yet: the buffer is untouched, call again with more */
    HP_BAD = -2,        /* malformed: answer 400 and close */
    HP_TOO_LARGE = -3,  /* more header lines than the caller's array (431) or body past max (413) */
    HP_VERSION = -4,    /* not HTTP/1.0 or HTTP/1.1 (505) */
    HP_NOT_IMPLEMENTED = -5 /* a transfer coding other than chunked (501) */
} http_parse_rc;

typedef struct http_head {
    const char *method; /* as sent (a token) */
    char *target;       /* request target as sent, NUL-terminated; split by http_split_target */
    int minor;          /* HTTP/1.<minor> */
    http_kv *headers;   /* the caller's array; names as sent, values without surrounding blanks */
    size_t nheaders;
    size_t head_len;        /* bytes of the head, blank line included */
    size_t fields_len;      /* of which the header lines and the blank line (no request line) */
    int64_t content_length; /* -1: none */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* what the client asked for (version default, Connection header) */
    bool expect_continue;   /* Expect: 100-continue */
} http_head;

/* Parses the request head at buf[0..len), writing NULs over separators. Lines may end in CRLF or
 * a bare LF. Refused (HP_BAD): a malformed request line, a header line without a colon or with
 * blanks before it, a folded line, control characters, Content-Length not all digits or given
 * twice with different values, Content-Length together with Transfer-Encoding. Leading blank
 * lines are skipped (RFC 9112 §2.2). */
http_parse_rc http_parse_head(char *buf, size_t len, http_kv *hdrs, size_t max_hdrs, http_head *h);

/* Decodes a chunked body at buf[0..len) (first byte: the first chunk-size line) in place.
 * HP_OK: the body is buf[0..*body_len) and the chunked form with its trailers took *consumed
 * bytes of buf; HP_INCOMPLETE leaves buf untouched; HP_TOO_LARGE when the body exceeds max. */
http_parse_rc http_chunked_decode(char *buf, size_t len, size_t max, size_t *body_len,
                                  size_t *consumed);

/* %XX-decodes s[0..n) in place (and '+' to a space when plus_is_space, as in query strings);
 * malformed escapes stay as they are. Returns the new length and NUL-terminates. */
size_t http_pct_decode(char *s, size_t n, bool plus_is_space);

/* Splits the target at '?': *path (percent-decoded) and *query (raw, NULL when there is none). */
void http_split_target(char *target, char **path, char **query);

/* Splits a raw query string in place into decoded key/value pairs ("a" alone gives value "";
 * empty pieces are skipped). Returns the number of pairs stored, at most max. */
size_t http_parse_query(char *q, http_kv *out, size_t max);

/* The first header called name (case-insensitive), or NULL. */
const char *http_find_header(const http_kv *h, size_t n, const char *name);

/* Whether the comma-separated header value holds token (case-insensitive), e.g. "close". */
bool http_has_token(const char *value, const char *token);

#endif
