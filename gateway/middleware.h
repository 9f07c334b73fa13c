/* middleware: request-scoped header logic with no I/O: request id, traceparent, CORS, cookies. */
#ifndef GATEWAY_MIDDLEWARE_H
#define GATEWAY_MIDDLEWARE_H

#include <stdbool.h>
#include <stddef.h>

/* A sane X-Request-Id: 1-128 characters of [A-Za-z0-9._:-]. NULL is not sane. */
bool mw_request_id_sane(const char *s);
/* A new random request id (UUID v4 text, 36 chars + NUL). */
void mw_request_id_new(char out[37]);

/* Accepts a valid W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>", ids not all zero) or starts a
 * new trace; either way makes a new span id for this hop. Writes trace_id (32 hex), span_id (16
 * hex) and the traceparent to pass on (55 chars). Returns true when the client's was accepted. */
bool mw_traceparent(const char *in, char trace_id[33], char span_id[17], char out[56]);

/* True when origin is in the comma-separated allow-list (exact match, whitespace trimmed). "*" in
 * the list is ignored: credentials are allowed, so the origin is always echoed, never "*". */
bool mw_cors_allowed(const char *allow_list, const char *origin);

/* Copies the value of cookie `name` from a Cookie header into out (NUL-terminated). Returns false
 * when absent, empty or longer than len-1. */
bool mw_cookie_get(const char *header, const char *name, char *out, size_t len);

/* The refresh-token cookie (Set-Cookie value) for token, max_age seconds (0 = expire it). */
void mw_refresh_cookie(char *out, size_t len, const char *token, int max_age, bool secure);

/* Extracts the token from "Bearer <token>" (scheme case-insensitive). NULL when malformed. */
const char *mw_bearer(const char *authorization);

/* If-Match value without W/ prefix and quotes, into out. */
void mw_etag_from_if_match(const char *h, char *out, size_t len);

#endif
