/* routes: the one route table (routing, authorization, transcoding and OpenAPI all read it) and
 * the router that matches a request against it. */
#include "routes.h"

#include "common/uuid.h"

#include <string.h>

#include "auth/v1/auth.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "permission/v1/permission.pb-c.h"
#include "user/v1/user.pb-c.h"

#define AUTHS "/auth.v1.AuthService/"
#define USERS "/user.v1.UserService/"
#define PERMS "/permission.v1.PermissionService/"
#define D(x) &x##__descriptor
#define EMPTY D(google__protobuf__empty)
#define AUTH_COOKIE (RF_NO_STORE)

/* Adding a route is adding one line here. */
static const routes_route ROUTES[] = {
    /* auth */
    {"POST", "/v1/auth/register", "Register", SVC_AUTH, AUTHS "Register",
     D(auth__v1__register_request), D(auth__v1__register_response), "*", AUTH_PUBLIC, RULE_NONE,
     NULL, NULL, NULL, NULL, 201, LIMIT_AUTH, RF_NO_STORE, LOCAL_NONE},
    {"POST", "/v1/auth/login", "Login", SVC_AUTH, AUTHS "Login", D(auth__v1__login_request),
     D(auth__v1__token_pair), "*", AUTH_PUBLIC, RULE_NONE, NULL, NULL, NULL, NULL, 200, LIMIT_AUTH,
     RF_NO_STORE | RF_SET_COOKIE, LOCAL_NONE},
    {"POST", "/v1/auth/refresh", "Refresh", SVC_AUTH, AUTHS "Refresh", D(auth__v1__refresh_request),
     D(auth__v1__token_pair), "*", AUTH_PUBLIC, RULE_NONE, NULL, NULL, NULL, NULL, 200,
     LIMIT_DEFAULT, RF_NO_STORE | RF_SET_COOKIE | RF_READ_COOKIE, LOCAL_NONE},
    {"POST", "/v1/auth/logout", "Logout", SVC_AUTH, AUTHS "Logout", D(auth__v1__logout_request),
     EMPTY, "*", AUTH_SIGNED_IN, RULE_NONE, NULL, NULL, "jti=jti,session_id=sid,user_id=sub", NULL,
     204, LIMIT_DEFAULT, RF_NO_STORE | RF_READ_COOKIE | RF_CLEAR_COOKIE, LOCAL_NONE},
    {"POST", "/v1/auth/logout-all", "LogoutAll", SVC_AUTH, AUTHS "LogoutAll",
     D(auth__v1__logout_all_request), EMPTY, NULL, AUTH_SIGNED_IN, RULE_NONE, NULL, NULL,
     "user_id=sub", NULL, 204, LIMIT_DEFAULT, RF_NO_STORE | RF_CLEAR_COOKIE, LOCAL_NONE},
    {"POST", "/v1/auth/password", "ChangePassword", SVC_AUTH, AUTHS "ChangePassword",
     D(auth__v1__change_password_request), EMPTY, "*", AUTH_SIGNED_IN, RULE_NONE, NULL, NULL,
     "user_id=sub,session_id=sid", NULL, 204, LIMIT_DEFAULT, RF_NO_STORE, LOCAL_NONE},
    {"GET", "/v1/auth/sessions", "ListSessions", SVC_AUTH, AUTHS "ListSessions",
     D(auth__v1__list_sessions_request), D(auth__v1__list_sessions_response), NULL, AUTH_SIGNED_IN,
     RULE_NONE, NULL, NULL, "user_id=sub,current_session_id=sid", NULL, 200, LIMIT_DEFAULT,
     RF_NO_STORE, LOCAL_NONE},
    {"DELETE", "/v1/auth/sessions/{session_id:uuid}", "RevokeSession", SVC_AUTH,
     AUTHS "RevokeSession", D(auth__v1__revoke_session_request), EMPTY, NULL, AUTH_SIGNED_IN,
     RULE_NONE, NULL, NULL, "user_id=sub", NULL, 204, LIMIT_DEFAULT, RF_NO_STORE, LOCAL_NONE},
    {"GET", "/.well-known/jwks.json", "GetJwks", SVC_AUTH, AUTHS "GetJwks",
     D(auth__v1__get_jwks_request), D(auth__v1__jwks), NULL, AUTH_PUBLIC, RULE_NONE, NULL, NULL,
     NULL, NULL, 200, LIMIT_DEFAULT, 0, LOCAL_NONE},

    /* users */
    {"GET", "/v1/users/me", "GetMe", SVC_USER, USERS "GetUser", D(user__v1__get_user_request),
     D(user__v1__user), NULL, AUTH_SIGNED_IN, RULE_NONE, NULL, NULL, "id=sub", NULL, 200,
     LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"PATCH", "/v1/users/me", "UpdateMe", SVC_USER, USERS "UpdateUser",
     D(user__v1__update_user_request), D(user__v1__user), "user", AUTH_SIGNED_IN, RULE_SELF_OR_PERM,
     "users:write", "user.id", "user.id=sub", "user.etag", 200, LIMIT_DEFAULT,
     RF_INFER_MASK | RF_IF_MATCH | RF_STATUS_WRITE, LOCAL_NONE},
    {"GET", "/v1/users", "ListUsers", SVC_USER, USERS "ListUsers", D(user__v1__list_users_request),
     D(user__v1__list_users_response), NULL, AUTH_SIGNED_IN, RULE_PERM, "users:read", NULL, NULL,
     NULL, 200, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"GET", "/v1/users:batchGet", "BatchGetUsers", SVC_USER, USERS "BatchGetUsers",
     D(user__v1__batch_get_users_request), D(user__v1__batch_get_users_response), NULL,
     AUTH_SIGNED_IN, RULE_PERM, "users:read", NULL, NULL, NULL, 200, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"GET", "/v1/users/{id:user}", "GetUser", SVC_USER, USERS "GetUser",
     D(user__v1__get_user_request), D(user__v1__user), NULL, AUTH_SIGNED_IN, RULE_SELF_OR_PERM,
     "users:read", "id", NULL, NULL, 200, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"PATCH", "/v1/users/{user.id:user}", "UpdateUser", SVC_USER, USERS "UpdateUser",
     D(user__v1__update_user_request), D(user__v1__user), "user", AUTH_SIGNED_IN, RULE_SELF_OR_PERM,
     "users:write", "user.id", NULL, "user.etag", 200, LIMIT_DEFAULT,
     RF_INFER_MASK | RF_IF_MATCH | RF_STATUS_WRITE, LOCAL_NONE},
    {"DELETE", "/v1/users/{id:user}", "DeleteUser", SVC_USER, USERS "DeleteUser",
     D(user__v1__delete_user_request), EMPTY, NULL, AUTH_SIGNED_IN, RULE_SELF_OR_PERM,
     "users:delete", "id", NULL, "etag", 204, LIMIT_DEFAULT, RF_IF_MATCH, LOCAL_NONE},

    /* roles and permissions */
    {"GET", "/v1/roles", "ListRoles", SVC_PERMISSION, PERMS "ListRoles",
     D(permission__v1__list_roles_request), D(permission__v1__list_roles_response), NULL,
     AUTH_SIGNED_IN, RULE_PERM, "roles:read", NULL, NULL, NULL, 200, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"POST", "/v1/roles", "CreateRole", SVC_PERMISSION, PERMS "CreateRole",
     D(permission__v1__create_role_request), D(permission__v1__role), "role", AUTH_SIGNED_IN,
     RULE_PERM, "roles:write", NULL, NULL, NULL, 201, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"GET", "/v1/roles/{name}", "GetRole", SVC_PERMISSION, PERMS "GetRole",
     D(permission__v1__get_role_request), D(permission__v1__role), NULL, AUTH_SIGNED_IN, RULE_PERM,
     "roles:read", NULL, NULL, NULL, 200, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"PATCH", "/v1/roles/{role.name}", "UpdateRole", SVC_PERMISSION, PERMS "UpdateRole",
     D(permission__v1__update_role_request), D(permission__v1__role), "role", AUTH_SIGNED_IN,
     RULE_PERM, "roles:write", NULL, NULL, NULL, 200, LIMIT_DEFAULT, RF_INFER_MASK, LOCAL_NONE},
    {"DELETE", "/v1/roles/{name}", "DeleteRole", SVC_PERMISSION, PERMS "DeleteRole",
     D(permission__v1__delete_role_request), EMPTY, NULL, AUTH_SIGNED_IN, RULE_PERM, "roles:write",
     NULL, NULL, NULL, 204, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"GET", "/v1/users/{user_id:user}/roles", "ListUserRoles", SVC_PERMISSION,
     PERMS "ListUserRoles", D(permission__v1__list_user_roles_request),
     D(permission__v1__list_user_roles_response), NULL, AUTH_SIGNED_IN, RULE_SELF_OR_PERM,
     "roles:read", "user_id", NULL, NULL, 200, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"POST", "/v1/users/{user_id:user}/roles", "AssignRole", SVC_PERMISSION, PERMS "AssignRole",
     D(permission__v1__assign_role_request), EMPTY, "*", AUTH_SIGNED_IN, RULE_PERM, "roles:assign",
     NULL, NULL, NULL, 204, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"DELETE", "/v1/users/{user_id:user}/roles/{role}", "RevokeRole", SVC_PERMISSION,
     PERMS "RevokeRole", D(permission__v1__revoke_role_request), EMPTY, NULL, AUTH_SIGNED_IN,
     RULE_PERM, "roles:assign", NULL, NULL, NULL, 204, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"GET", "/v1/users/{user_id:user}/permissions", "ListUserPermissions", SVC_PERMISSION,
     PERMS "ListUserPermissions", D(permission__v1__list_user_permissions_request),
     D(permission__v1__list_user_permissions_response), NULL, AUTH_SIGNED_IN, RULE_SELF_OR_PERM,
     "roles:read", "user_id", NULL, NULL, 200, LIMIT_DEFAULT, 0, LOCAL_NONE},
    {"POST", "/v1/permissions:check", "Check", SVC_PERMISSION, PERMS "Check",
     D(permission__v1__check_request), D(permission__v1__check_response), "*", AUTH_SIGNED_IN,
     RULE_SELF_OR_PERM, "roles:read", "user_id", NULL, NULL, 200, LIMIT_DEFAULT,
     RF_CONCRETE_PERM | RF_SELF_DEFAULT, LOCAL_NONE},
    {"POST", "/v1/permissions:batchCheck", "BatchCheck", SVC_PERMISSION, PERMS "BatchCheck",
     D(permission__v1__batch_check_request), D(permission__v1__batch_check_response), "*",
     AUTH_SIGNED_IN, RULE_SELF_OR_PERM, "roles:read", "user_id", NULL, NULL, 200, LIMIT_DEFAULT,
     RF_CONCRETE_PERM | RF_SELF_DEFAULT, LOCAL_NONE},

    /* operations: answered by the gateway itself, never rate limited */
    {"GET", "/health", "Health", SVC_NONE, NULL, NULL, NULL, NULL, AUTH_PUBLIC, RULE_NONE, NULL,
     NULL, NULL, NULL, 200, LIMIT_NONE, 0, LOCAL_HEALTH},
    {"GET", "/ready", "Ready", SVC_NONE, NULL, NULL, NULL, NULL, AUTH_PUBLIC, RULE_NONE, NULL, NULL,
     NULL, NULL, 200, LIMIT_NONE, 0, LOCAL_READY},
    {"GET", "/metrics", "Metrics", SVC_NONE, NULL, NULL, NULL, NULL, AUTH_PUBLIC, RULE_NONE, NULL,
     NULL, NULL, NULL, 200, LIMIT_NONE, 0, LOCAL_METRICS},
    {"GET", "/openapi.json", "OpenApi", SVC_NONE, NULL, NULL, NULL, NULL, AUTH_PUBLIC, RULE_NONE,
     NULL, NULL, NULL, NULL, 200, LIMIT_NONE, 0, LOCAL_OPENAPI},
};

const routes_route *routes_table(size_t *n)
{
    *n = sizeof ROUTES / sizeof ROUTES[0];
    return ROUTES;
}

bool routes_is_uuid(const char *s, size_t n)
{
    return uuid_valid_n(s, n);
}

/* Matches path against template t; fills params. Returns the number of literal segments + 1 on
 * a match (so a more literal template scores higher), 0 otherwise. */
static int match_template(const char *t, const char *path, routes_match *m)
{
    int score = 1;
    size_t np = 0;
    const char *p = path;
    while (*t && *p) {
        if (*t != '/' || *p != '/')
            return 0;
        t++, p++;
        const char *te = t;
        if (*t == '{')
            while (*te && *te != '/')
                te++;
        size_t tl = (size_t)(te - t);
        if (tl > 1 && te[-1] == '}') {
            const char *pe = p;
            while (*pe && *pe != '/')
                pe++;
            size_t pl = (size_t)(pe - p);
            if (pl == 0 || np >= ROUTES_MAX_PARAMS)
                return 0;
            const char *colon = memchr(t, ':', tl);
            routes_param *rp = &m->params[np++];
            rp->field = t + 1;
            rp->field_len = colon ? (size_t)(colon - t - 1) : tl - 2;
            rp->kind = 0;
            if (colon && strncmp(colon + 1, "user}", 5) == 0)
                rp->kind = 'u';
            else if (colon && strncmp(colon + 1, "uuid}", 5) == 0)
                rp->kind = 'i';
            rp->value = p;
            rp->value_len = pl;
            t = te;
            p = pe;
        } else {
            /* A literal segment, compared as it is walked: this runs for every route on every
             * request, and most templates differ from the path within a few characters. */
            while (*t && *t != '/' && *t == *p)
                t++, p++;
            if ((*t && *t != '/') || (*p && *p != '/'))
                return 0;
            score++;
        }
    }
    if (*t || *p)
        return 0;
    m->nparams = np;
    return score;
}

void routes_find(const char *method, const char *path, routes_match *m)
{
    memset(m, 0, sizeof *m);
    int best = 0;
    routes_match tmp;
    size_t alen = 0;
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++) {
        const routes_route *r = &ROUTES[i];
        /* No memset of tmp: match_template writes every param it counts, and this loop runs for
         * every route on every request (zeroing it was the gateway's top libc cost). */
        int s = match_template(r->path, path, &tmp);
        if (s == 0)
            continue;
        if (strcmp(r->method, method) == 0) {
            if (s > best) {
                best = s;
                m->route = r;
                m->nparams = tmp.nparams;
                memcpy(m->params, tmp.params, sizeof tmp.params);
            }
            continue;
        }
        /* Another method on this path: remember it for Allow (no duplicates). */
        size_t ml = strlen(r->method);
        const char *a = m->allow;
        bool dup = false;
        while ((a = strstr(a, r->method)) != NULL) {
            if ((a == m->allow || a[-1] == ' ') && (a[ml] == ',' || a[ml] == 0)) {
                dup = true;
                break;
            }
            a += ml;
        }
        if (!dup && alen + ml + 3 < sizeof m->allow) {
            if (alen) {
                memcpy(m->allow + alen, ", ", 2);
                alen += 2;
            }
            memcpy(m->allow + alen, r->method, ml);
            alen += ml;
            m->allow[alen] = 0;
        }
    }
    if (m->route)
        m->allow[0] = 0;
}
