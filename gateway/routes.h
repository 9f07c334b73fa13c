/* routes: the gateway's one static route table and the router (template match, 404 vs 405 + Allow).
 */
#ifndef GATEWAY_ROUTES_H
#define GATEWAY_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

typedef enum routes_svc {
    SVC_NONE = -1,
    SVC_AUTH = 0,
    SVC_USER,
    SVC_PERMISSION,
    SVC_COUNT
} routes_svc;

/* Routes served by the gateway itself rather than by an RPC. */
typedef enum routes_local {
    LOCAL_NONE = 0,
    LOCAL_HEALTH,
    LOCAL_READY,
    LOCAL_METRICS,
    LOCAL_OPENAPI
} routes_local;

typedef enum routes_auth { AUTH_PUBLIC = 0, AUTH_SIGNED_IN } routes_auth;
typedef enum routes_rule { RULE_NONE = 0, RULE_PERM, RULE_SELF_OR_PERM } routes_rule;
typedef enum routes_limit { LIMIT_NONE = 0, LIMIT_AUTH, LIMIT_DEFAULT } routes_limit;

/* Route flags. */
#define RF_NO_STORE 0x01u      /* Cache-Control: no-store (auth routes) */
#define RF_SET_COOKIE 0x02u    /* answer carries the refresh token: set it as a cookie */
#define RF_READ_COOKIE 0x04u   /* refresh_token from the cookie when the body has none */
#define RF_CLEAR_COOKIE 0x08u  /* expire the refresh cookie (logout) */
#define RF_INFER_MASK 0x10u    /* PATCH: update_mask = fields present in the body unless given */
#define RF_IF_MATCH 0x20u      /* If-Match fills the route's etag field */
#define RF_STATUS_WRITE 0x40u  /* PATCH of `status` needs users:write even for self */
#define RF_CONCRETE_PERM 0x80u /* `permission(s)` must not contain '*' */
#define RF_SELF_DEFAULT 0x100u /* self field empty → the caller's id */

/* One route. Path templates use proto field paths as parameter names; `{f:user}` is a user id
 * (UUID, or "me" = the caller), `{f:uuid}` a UUID, `{f}` any one segment. */
typedef struct routes_route {
    const char *method;
    const char *path;
    const char *op; /* operationId / metrics name: "GetUser" */
    routes_svc svc;
    const char *rpc; /* "/user.v1.UserService/GetUser" */
    const ProtobufCMessageDescriptor *req, *resp;
    const char *body; /* NULL: no body; "*": the whole request; "user": that field */
    routes_auth auth;
    routes_rule rule;
    const char *perm;   /* permission for RULE_PERM / RULE_SELF_OR_PERM */
    const char *self;   /* request field holding the user id for "self" ("id", "user.id") */
    const char *inject; /* "user_id=sub,session_id=sid,jti=jti": claims copied into the request */
    const char *etag;   /* request field filled from If-Match ("user.etag") */
    int status;         /* success status: 200, 201, 204 */
    routes_limit limit;
    unsigned flags;
    routes_local local;
} routes_route;

#define ROUTES_MAX_PARAMS 4

typedef struct routes_param {
    const char *field; /* proto field path (points into a static buffer of the route) */
    size_t field_len;
    const char *value; /* points into the request path */
    size_t value_len;
    char kind; /* 0 any, 'u' user, 'i' uuid */
} routes_param;

typedef struct routes_match {
    const routes_route *route; /* NULL: 404 or 405 */
    size_t nparams;
    routes_param params[ROUTES_MAX_PARAMS];
    char allow[64]; /* 405: "GET, PATCH" (empty when the path matches nothing) */
} routes_match;

const routes_route *routes_table(size_t *n);

/* Finds the route for method + path (path without the query string). Literal segments win over
 * parameters. On no route: m->route NULL and m->allow lists the methods the path supports (405),
 * or is empty (404). HEAD is not routed. Thread-safe. */
void routes_find(const char *method, const char *path, routes_match *m);

/* True when s[0..n) is a canonical UUID (8-4-4-4-12 hex). */
bool routes_is_uuid(const char *s, size_t n);

#endif
