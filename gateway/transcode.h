/* transcode: HTTP request (path params, query, body, headers, claims) → the route's request
 * message, through common/pbjson; grpc-gateway's rules for body mapping and update masks. */
#ifndef GATEWAY_TRANSCODE_H
#define GATEWAY_TRANSCODE_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "common/err.h"
#include "common/mem.h"
#include "http_parse.h"
#include "routes.h"

typedef http_kv transcode_kv; /* a decoded query parameter, as the HTTP server hands it over */

typedef struct transcode_input {
    const char *body;
    size_t body_len;
    const transcode_kv *query; /* decoded query parameters */
    size_t nquery;
    const char *if_match;        /* header or NULL */
    const char *cookie_refresh;  /* refresh_token cookie or NULL */
    const char *sub, *sid, *jti; /* verified claims (NULL on public routes) */
} transcode_input;

/* Builds the request message in a. ERR_INVALID_ARGUMENT with violations on bad JSON, a bad path
 * parameter (not a UUID), a bad query parameter, or a '*' in a permission to check. */
err_code transcode_request(const routes_route *r, const routes_match *m, const transcode_input *in,
                           arena *a, ProtobufCMessage **out, err_info *e);

/* The string field at a dotted path ("user.id"); "" when unset or absent. */
const char *transcode_get_str(const ProtobufCMessage *m, const char *path);

/* True when the message's update_mask lists path. */
bool transcode_mask_has(const ProtobufCMessage *m, const char *path);

#endif
