/* auth_peers: user/permission calls; see auth_peers.h. Breakers, retries of idempotent reads and
 * client metrics come from rpc_client (policy from the BREAKER_* / RPC_RETRY_* environment). */
#include "auth_peers.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

#include "common/breaker.h"
#include "common/log.h"
#include "common/rpc_client.h"
#include "google/protobuf/empty.pb-c.h"
#include "permission/v1/permission.pb-c.h"

struct auth_peers {
    rpc_client *user, *perm;
    /* Compensations go through clients whose breaker is disabled: undoing must be tried even
     * while the breaker of the forward path is open. */
    rpc_client *user_undo, *perm_undo;
    int timeout_ms;
};

static rpc_client *client(const char *target, const char *name, int timeout_ms,
                          const rpc_client_policy *pol, metrics_registry *m, bool undo, err_info *e)
{
    rpc_client_opts o = {.target = target, .name = name, .default_timeout_ms = timeout_ms};
    breaker_opts off = pol->breaker;
    off.mode = BREAKER_DISABLED;
    retry_opts none = pol->retry;
    none.max_retries = 0;
    rpc_client_ext_opts x = {.policy = pol,
                             .breaker = undo ? &off : NULL,
                             .retry = undo ? &none : NULL,
                             .metrics = undo ? NULL : m};
    return rpc_client_new_ext(&o, &x, e);
}

auth_peers *auth_peers_new(const auth_peers_opts *o, metrics_registry *m, err_info *e)
{
    rpc_client_policy pol;
    if (rpc_client_policy_load(&pol, e) != ERR_OK)
        return NULL;
    auth_peers *p = xcalloc(1, sizeof *p);
    p->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
    p->user = client(o->user_addr, "user", p->timeout_ms, &pol, m, false, e);
    p->perm =
        p->user ? client(o->permission_addr, "permission", p->timeout_ms, &pol, m, false, e) : NULL;
    p->user_undo =
        p->perm ? client(o->user_addr, "user-undo", p->timeout_ms, &pol, m, true, e) : NULL;
    p->perm_undo = p->user_undo ? client(o->permission_addr, "permission-undo", p->timeout_ms, &pol,
                                         m, true, e)
                                : NULL;
    if (!p->perm_undo) {
        auth_peers_free(p);
        return NULL;
    }
    return p;
}

void auth_peers_free(auth_peers *p)
{
    if (!p)
        return;
    rpc_client_free(p->user);
    rpc_client_free(p->perm);
    rpc_client_free(p->user_undo);
    rpc_client_free(p->perm_undo);
    free(p);
}

static err_code call(rpc_client *c, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *rd, const rpc_ctx *parent, arena *a,
                     ProtobufCMessage **resp, err_info *e)
{
    rpc_call_opts o = {.parent = parent};
    return rpc_client_call(c, method, req, rd, &o, a, resp, e);
}

err_code auth_peers_create_user(auth_peers *p, const rpc_ctx *parent, arena *a, const char *email,
                                const char *display_name, User__V1__User **out, err_info *e)
{
    User__V1__CreateUserRequest req = USER__V1__CREATE_USER_REQUEST__INIT;
    req.email = (char *)email;
    req.display_name = (char *)display_name;
    ProtobufCMessage *resp = NULL;
    err_code rc = call(p->user, "/user.v1.UserService/CreateUser", &req.base,
                       &user__v1__user__descriptor, parent, a, &resp, e);
    if (rc == ERR_OK)
        *out = (User__V1__User *)resp;
    return rc;
}

err_code auth_peers_get_user(auth_peers *p, const rpc_ctx *parent, arena *a, const char *id,
                             User__V1__User **out, err_info *e)
{
    User__V1__GetUserRequest req = USER__V1__GET_USER_REQUEST__INIT;
    req.id = (char *)id;
    ProtobufCMessage *resp = NULL;
    err_code rc = call(p->user, "/user.v1.UserService/GetUser", &req.base,
                       &user__v1__user__descriptor, parent, a, &resp, e);
    if (rc == ERR_OK)
        *out = (User__V1__User *)resp;
    return rc;
}

err_code auth_peers_get_user_by_email(auth_peers *p, const rpc_ctx *parent, arena *a,
                                      const char *email, User__V1__User **out, err_info *e)
{
    User__V1__GetUserByEmailRequest req = USER__V1__GET_USER_BY_EMAIL_REQUEST__INIT;
    req.email = (char *)email;
    ProtobufCMessage *resp = NULL;
    err_code rc = call(p->user, "/user.v1.UserService/GetUserByEmail", &req.base,
                       &user__v1__user__descriptor, parent, a, &resp, e);
    if (rc == ERR_OK)
        *out = (User__V1__User *)resp;
    return rc;
}

err_code auth_peers_assign_role(auth_peers *p, const rpc_ctx *parent, const char *user_id,
                                const char *role, err_info *e)
{
    Permission__V1__AssignRoleRequest req = PERMISSION__V1__ASSIGN_ROLE_REQUEST__INIT;
    req.user_id = (char *)user_id;
    req.role = (char *)role;
    arena *a = arena_new(0);
    ProtobufCMessage *resp = NULL;
    err_code rc = call(p->perm, "/permission.v1.PermissionService/AssignRole", &req.base,
                       &google__protobuf__empty__descriptor, parent, a, &resp, e);
    arena_free(a);
    return rc;
}

/* A compensation: not tied to the caller's deadline or cancellation (only its metadata), retried
 * on UNAVAILABLE / DEADLINE_EXCEEDED (the operations are idempotent). */
static err_code compensate(auth_peers *p, rpc_client *c, const char *method,
                           const ProtobufCMessage *req, const rpc_ctx *parent, err_info *e)
{
    err_code rc = ERR_OK;
    /* The caller's metadata, but with this hop as the trace parent (not the hop that called us). */
    rpc_metadata md;
    char tp[64];
    if (parent) {
        md = parent->md;
        snprintf(tp, sizeof tp, "00-%s-%s-01", parent->trace_id, parent->span_id);
        md.traceparent = tp;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        rpc_call_opts o = {.md = parent ? &md : NULL, .deadline_ms = rpc_now_ms() + p->timeout_ms};
        arena *a = arena_new(0);
        ProtobufCMessage *resp = NULL;
        err_clear(e);
        rc = rpc_client_call(c, method, req, &google__protobuf__empty__descriptor, &o, a, &resp, e);
        arena_free(a);
        if (rc != ERR_UNAVAILABLE && rc != ERR_DEADLINE_EXCEEDED)
            return rc;
        struct timespec ts = {0, 100 * 1000 * 1000 * (attempt + 1)};
        nanosleep(&ts, NULL);
    }
    return rc;
}

err_code auth_peers_delete_user(auth_peers *p, const rpc_ctx *parent, const char *id, err_info *e)
{
    User__V1__DeleteUserRequest req = USER__V1__DELETE_USER_REQUEST__INIT;
    req.id = (char *)id;
    return compensate(p, p->user_undo, "/user.v1.UserService/DeleteUser", &req.base, parent, e);
}

err_code auth_peers_revoke_role(auth_peers *p, const rpc_ctx *parent, const char *user_id,
                                const char *role, err_info *e)
{
    Permission__V1__RevokeRoleRequest req = PERMISSION__V1__REVOKE_ROLE_REQUEST__INIT;
    req.user_id = (char *)user_id;
    req.role = (char *)role;
    return compensate(p, p->perm_undo, "/permission.v1.PermissionService/RevokeRole", &req.base,
                      parent, e);
}

int auth_peers_breaker_state(auth_peers *p, const char *target)
{
    rpc_client *c = strcmp(target, "user") == 0 ? p->user : p->perm;
    return (int)breaker_state_get(rpc_client_breaker(c));
}
