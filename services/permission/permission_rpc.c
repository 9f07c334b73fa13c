/* permission_rpc: PermissionService handlers. Validation lives here (so every bad argument becomes
 * INVALID_ARGUMENT with field violations before any I/O); the logic lives in permission_service. */
#include "permission_rpc.h"

#include <stdio.h>
#include <string.h>

#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "permission/v1/permission.pb-c.h"
#include "permission_match.h"

#define NAME_RULE "must match ^[a-z][a-z0-9_.-]{0,62}$"
#define UUID_RULE "must be a UUID (8-4-4-4-12 hex digits)"

static perm_service *svc_of(rpc_ctx *ctx)
{
    return ((perm_state *)ctx->state)->svc;
}

static perm_call call_of(rpc_ctx *ctx)
{
    perm_call c = {.deadline_ms = ctx->deadline_ms, .log = &ctx->log, .arena = ctx->arena};
    return c;
}

/* Validates and lower-cases a user id into the arena; adds a violation on failure. */
static const char *user_id_arg(rpc_ctx *ctx, const char *field, const char *v, err_info *e)
{
    if (!perm_user_id_valid(v)) {
        err_violation_add(e, field, UUID_RULE);
        return NULL;
    }
    char *out = arena_alloc(ctx->arena, PERM_USER_ID_LEN + 1);
    perm_user_id_normalize(v, out);
    return out;
}

static bool role_name_arg(const char *field, const char *v, err_info *e)
{
    if (perm_role_name_valid(v))
        return true;
    err_violation_add(e, field, NAME_RULE);
    return false;
}

static Google__Protobuf__Timestamp *ts_new(arena *a, int64_t us)
{
    Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof *t);
    google__protobuf__timestamp__init(t);
    int64_t sec = us / 1000000, rem = us % 1000000;
    if (rem < 0) {
        rem += 1000000;
        sec--;
    }
    t->seconds = sec;
    t->nanos = (int32_t)(rem * 1000);
    return t;
}

static Permission__V1__Role *role_to_pb(arena *a, const perm_role *r)
{
    Permission__V1__Role *pb = arena_alloc(a, sizeof *pb);
    permission__v1__role__init(pb);
    pb->name = (char *)r->name;
    pb->description = (char *)r->description;
    pb->n_permissions = r->npermissions;
    pb->permissions = (char **)r->permissions;
    pb->n_inherits = r->ninherits;
    pb->inherits = (char **)r->inherits;
    pb->builtin = r->builtin;
    pb->create_time = ts_new(a, r->create_us);
    pb->update_time = ts_new(a, r->update_us);
    return pb;
}

/* Copies a repeated string field without duplicates (first occurrence kept), validating each. */
static const char **unique_list(arena *a, char **v, size_t n, size_t *out_n)
{
    const char **out = arena_alloc(a, (n ? n : 1) * sizeof *out);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = strcmp(out[j], v[i]) == 0;
        if (!dup)
            out[k++] = v[i];
    }
    *out_n = k;
    return out;
}

/* role → domain; validates what is asked (which: bit 1 description, 2 permissions, 4 inherits). */
static bool role_from_pb(rpc_ctx *ctx, const Permission__V1__Role *pb, perm_role *r, int which,
                         err_info *e)
{
    memset(r, 0, sizeof *r);
    bool ok = true;
    if (!pb) {
        err_violation_add(e, "role", "is required");
        return false;
    }
    ok &= role_name_arg("role.name", pb->name, e);
    r->name = pb->name;
    r->description = pb->description;
    if ((which & 1) && strlen(pb->description) > PERM_MAX_DESCRIPTION) {
        err_violation_add(e, "role.description", "must be at most %d bytes", PERM_MAX_DESCRIPTION);
        ok = false;
    }
    if (which & 2) {
        if (pb->n_permissions > PERM_MAX_ROLE_PERMISSIONS) {
            err_violation_add(e, "role.permissions", "at most %d permissions",
                              PERM_MAX_ROLE_PERMISSIONS);
            ok = false;
        }
        for (size_t i = 0; i < pb->n_permissions && ok; i++) {
            if (!perm_pattern_valid(pb->permissions[i])) {
                err_violation_add(e, "role.permissions",
                                  "[%zu] must be `*` or `resource:action` (segments "
                                  "[a-z0-9][a-z0-9_.-]{0,63} or `*`)",
                                  i);
                ok = false;
            }
        }
        r->permissions =
            unique_list(ctx->arena, pb->permissions, pb->n_permissions, &r->npermissions);
    }
    if (which & 4) {
        if (pb->n_inherits > PERM_MAX_ROLE_PARENTS) {
            err_violation_add(e, "role.inherits", "at most %d parent roles", PERM_MAX_ROLE_PARENTS);
            ok = false;
        }
        for (size_t i = 0; i < pb->n_inherits && ok; i++) {
            if (!perm_role_name_valid(pb->inherits[i])) {
                err_violation_add(e, "role.inherits", "[%zu] " NAME_RULE, i);
                ok = false;
            }
        }
        r->inherits = unique_list(ctx->arena, pb->inherits, pb->n_inherits, &r->ninherits);
    }
    return ok;
}

static err_code h_create_role(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                              err_info *e)
{
    const Permission__V1__CreateRoleRequest *in = (const void *)req;
    perm_role r, out;
    if (!role_from_pb(ctx, in->role, &r, 7, e))
        return ERR_INVALID_ARGUMENT;
    perm_call call = call_of(ctx);
    err_code rc = perm_service_create_role(svc_of(ctx), &call, &r, &out, e);
    if (rc != ERR_OK)
        return rc;
    *resp = (ProtobufCMessage *)role_to_pb(ctx->arena, &out);
    return ERR_OK;
}

static err_code h_get_role(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                           err_info *e)
{
    const Permission__V1__GetRoleRequest *in = (const void *)req;
    if (!role_name_arg("name", in->name, e))
        return ERR_INVALID_ARGUMENT;
    perm_role out;
    perm_call call = call_of(ctx);
    err_code rc = perm_service_get_role(svc_of(ctx), &call, in->name, &out, e);
    if (rc != ERR_OK)
        return rc;
    *resp = (ProtobufCMessage *)role_to_pb(ctx->arena, &out);
    return ERR_OK;
}

/* Page tokens: "1" + hex of the last name of the previous page. Opaque to clients; version digit
 * so the format can change. */
static char *token_make(arena *a, const char *name)
{
    size_t n = strlen(name);
    char *t = arena_alloc(a, 2 * n + 2);
    t[0] = '1';
    for (size_t i = 0; i < n; i++)
        snprintf(t + 1 + 2 * i, 3, "%02x", (unsigned char)name[i]);
    return t;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool token_parse(arena *a, const char *t, const char **after)
{
    if (!*t) {
        *after = "";
        return true;
    }
    size_t n = strlen(t);
    if (t[0] != '1' || n % 2 != 1 || n > 1 + 2 * PERM_ROLE_NAME_MAX)
        return false;
    char *name = arena_alloc(a, n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(t[1 + 2 * i]), lo = hexval(t[2 + 2 * i]);
        if (hi < 0 || lo < 0)
            return false;
        name[i] = (char)(hi * 16 + lo);
    }
    *after = name;
    return perm_role_name_valid(name);
}

static err_code h_list_roles(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                             err_info *e)
{
    const Permission__V1__ListRolesRequest *in = (const void *)req;
    const char *after = "";
    if (in->page_size < 0)
        err_violation_add(e, "page_size", "must not be negative");
    if (!token_parse(ctx->arena, in->page_token, &after))
        err_violation_add(e, "page_token", "is not a token this service returned");
    if (e->nviolations)
        return ERR_INVALID_ARGUMENT;
    int limit = in->page_size == 0
                    ? PERM_PAGE_DEFAULT
                    : (in->page_size > PERM_PAGE_MAX ? PERM_PAGE_MAX : in->page_size);
    perm_role *roles = NULL;
    size_t n = 0;
    bool more = false;
    perm_call call = call_of(ctx);
    err_code rc = perm_service_list_roles(svc_of(ctx), &call, after, limit, &roles, &n, &more, e);
    if (rc != ERR_OK)
        return rc;
    Permission__V1__ListRolesResponse *out = arena_alloc(ctx->arena, sizeof *out);
    permission__v1__list_roles_response__init(out);
    out->n_roles = n;
    out->roles = arena_alloc(ctx->arena, (n ? n : 1) * sizeof *out->roles);
    for (size_t i = 0; i < n; i++)
        out->roles[i] = role_to_pb(ctx->arena, &roles[i]);
    if (more && n > 0)
        out->next_page_token = token_make(ctx->arena, roles[n - 1].name);
    *resp = (ProtobufCMessage *)out;
    return ERR_OK;
}

static err_code h_update_role(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                              err_info *e)
{
    const Permission__V1__UpdateRoleRequest *in = (const void *)req;
    perm_update_mask mask = {false, false, false};
    if (!in->update_mask || in->update_mask->n_paths == 0) {
        mask.description = mask.permissions = mask.inherits = true;
    } else {
        for (size_t i = 0; i < in->update_mask->n_paths; i++) {
            const char *p = in->update_mask->paths[i];
            if (strncmp(p, "role.", 5) == 0)
                p += 5;
            if (strcmp(p, "description") == 0)
                mask.description = true;
            else if (strcmp(p, "permissions") == 0)
                mask.permissions = true;
            else if (strcmp(p, "inherits") == 0)
                mask.inherits = true;
            else
                err_violation_add(e, "update_mask",
                                  "unknown or immutable field %.60s (allowed: description, "
                                  "permissions, inherits)",
                                  in->update_mask->paths[i]);
        }
    }
    int which = (mask.description ? 1 : 0) | (mask.permissions ? 2 : 0) | (mask.inherits ? 4 : 0);
    perm_role r, out;
    bool ok = role_from_pb(ctx, in->role, &r, which, e);
    if (!ok || e->nviolations)
        return ERR_INVALID_ARGUMENT;
    perm_call call = call_of(ctx);
    err_code rc = perm_service_update_role(svc_of(ctx), &call, &r, &mask, &out, e);
    if (rc != ERR_OK)
        return rc;
    *resp = (ProtobufCMessage *)role_to_pb(ctx->arena, &out);
    return ERR_OK;
}

static ProtobufCMessage *empty_new(arena *a)
{
    Google__Protobuf__Empty *m = arena_alloc(a, sizeof *m);
    google__protobuf__empty__init(m);
    return (ProtobufCMessage *)m;
}

static err_code h_delete_role(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                              err_info *e)
{
    const Permission__V1__DeleteRoleRequest *in = (const void *)req;
    if (!role_name_arg("name", in->name, e))
        return ERR_INVALID_ARGUMENT;
    perm_call call = call_of(ctx);
    err_code rc = perm_service_delete_role(svc_of(ctx), &call, in->name, e);
    if (rc != ERR_OK)
        return rc;
    *resp = empty_new(ctx->arena);
    return ERR_OK;
}

static err_code assign_or_revoke(rpc_ctx *ctx, const char *user_id, const char *role, bool assign,
                                 ProtobufCMessage **resp, err_info *e)
{
    const char *uid = user_id_arg(ctx, "user_id", user_id, e);
    bool ok = role_name_arg("role", role, e);
    if (!uid || !ok)
        return ERR_INVALID_ARGUMENT;
    perm_call call = call_of(ctx);
    err_code rc = assign ? perm_service_assign(svc_of(ctx), &call, uid, role, e)
                         : perm_service_revoke(svc_of(ctx), &call, uid, role, e);
    if (rc != ERR_OK)
        return rc;
    *resp = empty_new(ctx->arena);
    return ERR_OK;
}

static err_code h_assign_role(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                              err_info *e)
{
    const Permission__V1__AssignRoleRequest *in = (const void *)req;
    return assign_or_revoke(ctx, in->user_id, in->role, true, resp, e);
}

static err_code h_revoke_role(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                              err_info *e)
{
    const Permission__V1__RevokeRoleRequest *in = (const void *)req;
    return assign_or_revoke(ctx, in->user_id, in->role, false, resp, e);
}

static err_code h_list_user_roles(rpc_ctx *ctx, const ProtobufCMessage *req,
                                  ProtobufCMessage **resp, err_info *e)
{
    const Permission__V1__ListUserRolesRequest *in = (const void *)req;
    const char *uid = user_id_arg(ctx, "user_id", in->user_id, e);
    if (!uid)
        return ERR_INVALID_ARGUMENT;
    const char **roles = NULL;
    size_t n = 0;
    perm_call call = call_of(ctx);
    err_code rc = perm_service_user_roles(svc_of(ctx), &call, uid, &roles, &n, e);
    if (rc != ERR_OK)
        return rc;
    Permission__V1__ListUserRolesResponse *out = arena_alloc(ctx->arena, sizeof *out);
    permission__v1__list_user_roles_response__init(out);
    out->n_roles = n;
    out->roles = (char **)roles;
    *resp = (ProtobufCMessage *)out;
    return ERR_OK;
}

static err_code h_list_user_permissions(rpc_ctx *ctx, const ProtobufCMessage *req,
                                        ProtobufCMessage **resp, err_info *e)
{
    const Permission__V1__ListUserPermissionsRequest *in = (const void *)req;
    const char *uid = user_id_arg(ctx, "user_id", in->user_id, e);
    if (!uid)
        return ERR_INVALID_ARGUMENT;
    const char **perms = NULL;
    size_t n = 0;
    perm_call call = call_of(ctx);
    err_code rc = perm_service_user_permissions(svc_of(ctx), &call, uid, &perms, &n, e);
    if (rc != ERR_OK)
        return rc;
    Permission__V1__ListUserPermissionsResponse *out = arena_alloc(ctx->arena, sizeof *out);
    permission__v1__list_user_permissions_response__init(out);
    out->n_permissions = n;
    out->permissions = (char **)perms;
    *resp = (ProtobufCMessage *)out;
    return ERR_OK;
}

#define CONCRETE_RULE                                                                              \
    "must be a concrete `resource:action` (no `*`; segments [a-z0-9][a-z0-9_.-]{0,63})"

static err_code h_check(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                        err_info *e)
{
    const Permission__V1__CheckRequest *in = (const void *)req;
    const char *uid = user_id_arg(ctx, "user_id", in->user_id, e);
    bool ok = perm_concrete_valid(in->permission);
    if (!ok)
        err_violation_add(e, "permission", CONCRETE_RULE);
    if (!uid || !ok)
        return ERR_INVALID_ARGUMENT;
    bool allowed = false;
    const char *perm = in->permission;
    perm_call call = call_of(ctx);
    err_code rc = perm_service_check(svc_of(ctx), &call, uid, &perm, 1, &allowed, e);
    if (rc != ERR_OK)
        return rc;
    Permission__V1__CheckResponse *out = arena_alloc(ctx->arena, sizeof *out);
    permission__v1__check_response__init(out);
    out->allowed = allowed;
    *resp = (ProtobufCMessage *)out;
    return ERR_OK;
}

static err_code h_batch_check(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
                              err_info *e)
{
    const Permission__V1__BatchCheckRequest *in = (const void *)req;
    const char *uid = user_id_arg(ctx, "user_id", in->user_id, e);
    bool ok = true;
    if (in->n_permissions == 0 || in->n_permissions > PERM_MAX_BATCH) {
        err_violation_add(e, "permissions", "must hold 1 to %d permissions", PERM_MAX_BATCH);
        ok = false;
    }
    for (size_t i = 0; i < in->n_permissions && ok; i++) {
        if (!perm_concrete_valid(in->permissions[i])) {
            char field[48];
            snprintf(field, sizeof field, "permissions[%zu]", i);
            err_violation_add(e, field, CONCRETE_RULE);
        }
    }
    if (!uid || e->nviolations)
        return ERR_INVALID_ARGUMENT;
    bool *allowed = arena_alloc(ctx->arena, in->n_permissions * sizeof *allowed);
    perm_call call = call_of(ctx);
    err_code rc = perm_service_check(svc_of(ctx), &call, uid, (const char *const *)in->permissions,
                                     in->n_permissions, allowed, e);
    if (rc != ERR_OK)
        return rc;
    Permission__V1__BatchCheckResponse *out = arena_alloc(ctx->arena, sizeof *out);
    permission__v1__batch_check_response__init(out);
    out->n_results = in->n_permissions;
    out->results = arena_alloc(ctx->arena, in->n_permissions * sizeof *out->results);
    Permission__V1__CheckResult *res = arena_alloc(ctx->arena, in->n_permissions * sizeof *res);
    for (size_t i = 0; i < in->n_permissions; i++) {
        permission__v1__check_result__init(&res[i]);
        res[i].permission = in->permissions[i];
        res[i].allowed = allowed[i];
        out->results[i] = &res[i];
    }
    *resp = (ProtobufCMessage *)out;
    return ERR_OK;
}

#define M(name, req, resp, fn)                                                                     \
    {                                                                                              \
        "/permission.v1.PermissionService/" name, &req, &resp, fn, false                           \
    }

const rpc_method permission_rpc_methods[] = {
    M("CreateRole", permission__v1__create_role_request__descriptor,
      permission__v1__role__descriptor, h_create_role),
    M("GetRole", permission__v1__get_role_request__descriptor, permission__v1__role__descriptor,
      h_get_role),
    M("ListRoles", permission__v1__list_roles_request__descriptor,
      permission__v1__list_roles_response__descriptor, h_list_roles),
    M("UpdateRole", permission__v1__update_role_request__descriptor,
      permission__v1__role__descriptor, h_update_role),
    M("DeleteRole", permission__v1__delete_role_request__descriptor,
      google__protobuf__empty__descriptor, h_delete_role),
    M("AssignRole", permission__v1__assign_role_request__descriptor,
      google__protobuf__empty__descriptor, h_assign_role),
    M("RevokeRole", permission__v1__revoke_role_request__descriptor,
      google__protobuf__empty__descriptor, h_revoke_role),
    M("ListUserRoles", permission__v1__list_user_roles_request__descriptor,
      permission__v1__list_user_roles_response__descriptor, h_list_user_roles),
    M("ListUserPermissions", permission__v1__list_user_permissions_request__descriptor,
      permission__v1__list_user_permissions_response__descriptor, h_list_user_permissions),
    M("Check", permission__v1__check_request__descriptor,
      permission__v1__check_response__descriptor, h_check),
    M("BatchCheck", permission__v1__batch_check_request__descriptor,
      permission__v1__batch_check_response__descriptor, h_batch_check),
};
const size_t permission_rpc_nmethods =
    sizeof permission_rpc_methods / sizeof permission_rpc_methods[0];
