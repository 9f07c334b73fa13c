/* Integration tests of permission-service: every RPC rule, cycles (also concurrent), depth bound,
 * wildcard x inheritance table, DeleteRole cascade, Redis unreachable, the two-replica freshness
 * loop and the events.user consumer (including claiming a dead consumer's pending entry). */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/rpc_client.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "permission/v1/permission.pb-c.h"
#include "test_support.h"

#define REDIS_DB 20
#define MP "/permission.v1.PermissionService/"

static const char *g_conninfo;
static char g_log[256];

typedef struct replica {
    int pid, port;
    rpc_client *client;
} replica;

static replica g_a, g_b;

/* ---------- process and client helpers ---------- */

static void start_replica(replica *r, const char *redis_url, const char *claim_idle_ms)
{
    r->port = ts_free_port();
    int mport = ts_free_port();
    char buf[8][512];
    char *env[9];
    snprintf(buf[0], sizeof buf[0], "LISTEN_ADDR=127.0.0.1:%d", r->port);
    snprintf(buf[1], sizeof buf[1], "METRICS_ADDR=127.0.0.1:%d", mport);
    snprintf(buf[2], sizeof buf[2], "DATABASE_URL=%s", g_conninfo);
    snprintf(buf[3], sizeof buf[3], "REDIS_URL=%s", redis_url);
    snprintf(buf[4], sizeof buf[4], "PERMISSION_EVENTS_CLAIM_IDLE_MS=%s", claim_idle_ms);
    snprintf(buf[5], sizeof buf[5], "PERMISSION_EVENTS_CLAIM_INTERVAL_MS=%d", 300);
    snprintf(buf[6], sizeof buf[6], "REDIS_TIMEOUT_MS=%d", 500);
    snprintf(buf[7], sizeof buf[7], "LOG_LEVEL=%s", "info");
    for (int i = 0; i < 8; i++)
        env[i] = buf[i];
    env[8] = NULL;
    char *argv[] = {(char *)ts_bin("permission-service"), NULL};
    r->pid = ts_spawn(argv, env, g_log);
    if (ts_wait_port(r->port, 20000) != 0) {
        fprintf(stderr, "permission-service did not start; log: %s\n", g_log);
        exit(2);
    }
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", r->port);
    rpc_client_opts o = {.target = target, .name = "permission", .default_timeout_ms = 10000};
    err_info e;
    err_clear(&e);
    r->client = rpc_client_new(&o, &e);
    if (!r->client) {
        fprintf(stderr, "rpc_client_new: %s\n", e.msg);
        exit(2);
    }
}

/* Returns the exit status (0 = clean shutdown), or 0 when nothing ran. */
static int stop_replica(replica *r)
{
    if (r->client)
        rpc_client_free(r->client);
    r->client = NULL;
    int st = 0;
    if (r->pid > 0)
        st = ts_stop(r->pid, SIGTERM, 15000);
    r->pid = 0;
    return st;
}

/* Calls a method; resp lives in a (arena per test). */
static err_code call(replica *r, arena *a, const char *method, const void *req,
                     const ProtobufCMessageDescriptor *rd, void **resp, err_info *e)
{
    char full[128];
    snprintf(full, sizeof full, MP "%s", method);
    err_clear(e);
    ProtobufCMessage *out = NULL;
    err_code rc = rpc_client_call(r->client, full, req, rd, NULL, a, &out, e);
    if (resp)
        *resp = out;
    return rc;
}

static bool has_violation(const err_info *e, const char *field)
{
    for (size_t i = 0; i < e->nviolations; i++) {
        if (strncmp(e->violations[i].field, field, strlen(field)) == 0)
            return true;
    }
    return false;
}

static err_code create_role(replica *r, arena *a, const char *name, const char **perms, size_t np,
                            const char **parents, size_t npar, err_info *e)
{
    Permission__V1__Role role = PERMISSION__V1__ROLE__INIT;
    role.name = (char *)name;
    role.description = (char *)"test role";
    role.permissions = (char **)perms;
    role.n_permissions = np;
    role.inherits = (char **)parents;
    role.n_inherits = npar;
    Permission__V1__CreateRoleRequest req = PERMISSION__V1__CREATE_ROLE_REQUEST__INIT;
    req.role = &role;
    return call(r, a, "CreateRole", &req, &permission__v1__role__descriptor, NULL, e);
}

/* UpdateRole with a mask of one field: "permissions" or "inherits" or "description". */
static err_code update_role(replica *r, arena *a, const char *name, const char *field,
                            const char **vals, size_t n, err_info *e)
{
    Permission__V1__Role role = PERMISSION__V1__ROLE__INIT;
    role.name = (char *)name;
    if (strcmp(field, "permissions") == 0) {
        role.permissions = (char **)vals;
        role.n_permissions = n;
    } else if (strcmp(field, "inherits") == 0) {
        role.inherits = (char **)vals;
        role.n_inherits = n;
    } else {
        role.description = n ? (char *)vals[0] : (char *)"";
    }
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {(char *)field};
    mask.paths = paths;
    mask.n_paths = 1;
    Permission__V1__UpdateRoleRequest req = PERMISSION__V1__UPDATE_ROLE_REQUEST__INIT;
    req.role = &role;
    req.update_mask = &mask;
    return call(r, a, "UpdateRole", &req, &permission__v1__role__descriptor, NULL, e);
}

static err_code get_role(replica *r, arena *a, const char *name, Permission__V1__Role **out,
                         err_info *e)
{
    Permission__V1__GetRoleRequest req = PERMISSION__V1__GET_ROLE_REQUEST__INIT;
    req.name = (char *)name;
    return call(r, a, "GetRole", &req, &permission__v1__role__descriptor, (void **)out, e);
}

static err_code delete_role(replica *r, arena *a, const char *name, err_info *e)
{
    Permission__V1__DeleteRoleRequest req = PERMISSION__V1__DELETE_ROLE_REQUEST__INIT;
    req.name = (char *)name;
    return call(r, a, "DeleteRole", &req, &google__protobuf__empty__descriptor, NULL, e);
}

static err_code assign(replica *r, arena *a, const char *user, const char *role, bool yes,
                       err_info *e)
{
    Permission__V1__AssignRoleRequest req = PERMISSION__V1__ASSIGN_ROLE_REQUEST__INIT;
    req.user_id = (char *)user;
    req.role = (char *)role;
    /* AssignRoleRequest and RevokeRoleRequest have the same fields and numbers. */
    return call(r, a, yes ? "AssignRole" : "RevokeRole", &req, &google__protobuf__empty__descriptor,
                NULL, e);
}

/* 1 allowed, 0 denied, -1 error (e filled). */
static int check(replica *r, arena *a, const char *user, const char *perm, err_info *e)
{
    Permission__V1__CheckRequest req = PERMISSION__V1__CHECK_REQUEST__INIT;
    req.user_id = (char *)user;
    req.permission = (char *)perm;
    Permission__V1__CheckResponse *resp = NULL;
    if (call(r, a, "Check", &req, &permission__v1__check_response__descriptor, (void **)&resp, e) !=
        ERR_OK)
        return -1;
    return resp->allowed ? 1 : 0;
}

static err_code user_roles(replica *r, arena *a, const char *user,
                           Permission__V1__ListUserRolesResponse **out, err_info *e)
{
    Permission__V1__ListUserRolesRequest req = PERMISSION__V1__LIST_USER_ROLES_REQUEST__INIT;
    req.user_id = (char *)user;
    return call(r, a, "ListUserRoles", &req, &permission__v1__list_user_roles_response__descriptor,
                (void **)out, e);
}

static bool list_has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i], s) == 0)
            return true;
    }
    return false;
}

static void new_uuid(char out[37])
{
    static unsigned seq;
    seq++;
    unsigned r = (unsigned)getpid();
    snprintf(out, 37, "%08x-%04x-4%03x-8%03x-%012x", r, seq & 0xffff, seq & 0xfff,
             (unsigned)(rand() & 0xfff), seq);
}

static int redis_cli(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int redis_cli(const char *fmt, ...)
{
    char args[512], cmd[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "redis-cli -p %s -n %d %s >/dev/null 2>&1", ts_need_env("REDIS_PORT"),
             REDIS_DB, args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Number from a redis-cli command's output (first line), or -1. */
static long redis_cli_num(const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "redis-cli -p %s -n %d %s", ts_need_env("REDIS_PORT"), REDIS_DB,
             args);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    char line[128] = "";
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    pclose(f);
    char *end = NULL;
    long v = strtol(line, &end, 10);
    return end == line ? -1 : v;
}

/* ---------- tests ---------- */

static void test_builtin_roles(void)
{
    arena *a = arena_new(0);
    err_info e;
    Permission__V1__Role *r = NULL;
    CU_ASSERT_EQUAL_FATAL(get_role(&g_a, a, "admin", &r, &e), ERR_OK);
    CU_ASSERT_TRUE(r->builtin);
    CU_ASSERT_EQUAL(r->n_permissions, 1);
    if (r->n_permissions == 1)
        CU_ASSERT_STRING_EQUAL(r->permissions[0], "*");
    CU_ASSERT_PTR_NOT_NULL(r->create_time);
    CU_ASSERT_EQUAL_FATAL(get_role(&g_a, a, "user", &r, &e), ERR_OK);
    CU_ASSERT_TRUE(r->builtin);
    CU_ASSERT_EQUAL(r->n_permissions, 0);
    CU_ASSERT_EQUAL(delete_role(&g_a, a, "admin", &e), ERR_FAILED_PRECONDITION);
    CU_ASSERT_EQUAL(delete_role(&g_a, a, "user", &e), ERR_FAILED_PRECONDITION);
    const char *none[] = {"users:read"};
    CU_ASSERT_EQUAL(update_role(&g_a, a, "admin", "permissions", none, 1, &e),
                    ERR_FAILED_PRECONDITION);
    CU_ASSERT_EQUAL(update_role(&g_a, a, "user", "permissions", none, 1, &e),
                    ERR_FAILED_PRECONDITION);
    /* admin still grants everything */
    char u[37];
    new_uuid(u);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "admin", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "anything:at-all", &e), 1);
    arena_free(a);
}

static void test_role_crud_and_validation(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *ed_perms[] = {"posts:write", "posts:read", "posts:write"};
    const char *ed_parents[] = {"crud-viewer"};
    /* unknown parent */
    CU_ASSERT_EQUAL(create_role(&g_a, a, "crud-editor", ed_perms, 3, ed_parents, 1, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "role.inherits"));
    const char *v_perms[] = {"posts:read", "comments:*"};
    CU_ASSERT_EQUAL(create_role(&g_a, a, "crud-viewer", v_perms, 2, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(create_role(&g_a, a, "crud-editor", ed_perms, 3, ed_parents, 1, &e), ERR_OK);
    CU_ASSERT_EQUAL(create_role(&g_b, a, "crud-editor", ed_perms, 3, NULL, 0, &e),
                    ERR_ALREADY_EXISTS);
    Permission__V1__Role *r = NULL;
    CU_ASSERT_EQUAL_FATAL(get_role(&g_b, a, "crud-editor", &r, &e), ERR_OK);
    CU_ASSERT_FALSE(r->builtin);
    CU_ASSERT_EQUAL(r->n_permissions, 2); /* duplicate dropped */
    CU_ASSERT_EQUAL_FATAL(r->n_inherits, 1);
    CU_ASSERT_STRING_EQUAL(r->inherits[0], "crud-viewer");
    CU_ASSERT_STRING_EQUAL(r->description, "test role");

    /* invalid names and permission strings */
    const char *bad_perm[] = {"posts"};
    CU_ASSERT_EQUAL(create_role(&g_a, a, "Bad Name", NULL, 0, NULL, 0, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "role.name"));
    CU_ASSERT_EQUAL(create_role(&g_a, a, "crud-bad", bad_perm, 1, NULL, 0, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "role.permissions"));
    const char *bad_perm2[] = {"po*ts:read"};
    CU_ASSERT_EQUAL(create_role(&g_a, a, "crud-bad", bad_perm2, 1, NULL, 0, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(get_role(&g_a, a, "Nope", &r, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(get_role(&g_a, a, "crud-missing", &r, &e), ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(delete_role(&g_a, a, "crud-missing", &e), ERR_NOT_FOUND);
    const char *x[] = {"a:b"};
    CU_ASSERT_EQUAL(update_role(&g_a, a, "crud-missing", "permissions", x, 1, &e), ERR_NOT_FOUND);

    /* update one field: the others stay */
    const char *desc[] = {"new description"};
    CU_ASSERT_EQUAL(update_role(&g_a, a, "crud-editor", "description", desc, 1, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(get_role(&g_b, a, "crud-editor", &r, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(r->description, "new description");
    CU_ASSERT_EQUAL(r->n_permissions, 2);
    CU_ASSERT_EQUAL(r->n_inherits, 1);
    CU_ASSERT_EQUAL(update_role(&g_a, a, "crud-editor", "name", desc, 1, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "update_mask"));
    const char *bad_parent[] = {"crud-nope"};
    CU_ASSERT_EQUAL(update_role(&g_a, a, "crud-editor", "inherits", bad_parent, 1, &e),
                    ERR_INVALID_ARGUMENT);

    /* an absent mask replaces all three mutable fields */
    {
        Permission__V1__Role role = PERMISSION__V1__ROLE__INIT;
        role.name = (char *)"crud-editor";
        role.description = (char *)"full";
        char *np[] = {"posts:publish"};
        role.permissions = np;
        role.n_permissions = 1;
        Permission__V1__UpdateRoleRequest ur = PERMISSION__V1__UPDATE_ROLE_REQUEST__INIT;
        ur.role = &role;
        CU_ASSERT_EQUAL(
            call(&g_a, a, "UpdateRole", &ur, &permission__v1__role__descriptor, (void **)&r, &e),
            ERR_OK);
        CU_ASSERT_EQUAL(get_role(&g_b, a, "crud-editor", &r, &e), ERR_OK);
        CU_ASSERT_STRING_EQUAL(r->description, "full");
        CU_ASSERT_EQUAL(r->n_inherits, 0);
        CU_ASSERT_EQUAL_FATAL(r->n_permissions, 1);
        CU_ASSERT_STRING_EQUAL(r->permissions[0], "posts:publish");
    }

    /* ListRoles: every page in name order, tokens opaque, bad token rejected */
    char *seen[64];
    size_t nseen = 0;
    Permission__V1__ListRolesRequest lr = PERMISSION__V1__LIST_ROLES_REQUEST__INIT;
    lr.page_size = 2;
    lr.page_token = (char *)"";
    for (int pages = 0; pages < 30; pages++) {
        Permission__V1__ListRolesResponse *resp = NULL;
        CU_ASSERT_EQUAL_FATAL(call(&g_a, a, "ListRoles", &lr,
                                   &permission__v1__list_roles_response__descriptor, (void **)&resp,
                                   &e),
                              ERR_OK);
        CU_ASSERT_TRUE(resp->n_roles <= 2);
        for (size_t i = 0; i < resp->n_roles && nseen < 64; i++)
            seen[nseen++] = resp->roles[i]->name;
        if (!*resp->next_page_token)
            break;
        lr.page_token = resp->next_page_token;
    }
    CU_ASSERT_TRUE(nseen >= 4);
    for (size_t i = 1; i < nseen; i++)
        CU_ASSERT_TRUE(strcmp(seen[i - 1], seen[i]) < 0);
    CU_ASSERT_TRUE(list_has(seen, nseen, "admin"));
    CU_ASSERT_TRUE(list_has(seen, nseen, "user"));
    CU_ASSERT_TRUE(list_has(seen, nseen, "crud-editor"));
    CU_ASSERT_TRUE(list_has(seen, nseen, "crud-viewer"));
    lr.page_token = (char *)"garbage!";
    CU_ASSERT_EQUAL(
        call(&g_a, a, "ListRoles", &lr, &permission__v1__list_roles_response__descriptor, NULL, &e),
        ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "page_token"));
    lr.page_token = (char *)"";
    lr.page_size = -1;
    CU_ASSERT_EQUAL(
        call(&g_a, a, "ListRoles", &lr, &permission__v1__list_roles_response__descriptor, NULL, &e),
        ERR_INVALID_ARGUMENT);
    arena_free(a);
}

static void test_cycles(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *self[] = {"cy-self"};
    CU_ASSERT_EQUAL(create_role(&g_a, a, "cy-self", NULL, 0, self, 1, &e), ERR_FAILED_PRECONDITION);
    CU_ASSERT_EQUAL(get_role(&g_a, a, "cy-self", NULL, &e), ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(create_role(&g_a, a, "cy-a", NULL, 0, NULL, 0, &e), ERR_OK);
    const char *pa[] = {"cy-a"}, *pb[] = {"cy-b"}, *pc[] = {"cy-c"};
    CU_ASSERT_EQUAL(create_role(&g_a, a, "cy-b", NULL, 0, pa, 1, &e), ERR_OK);
    CU_ASSERT_EQUAL(create_role(&g_a, a, "cy-c", NULL, 0, pb, 1, &e), ERR_OK);
    /* a inherits a; a inherits b (2-cycle); a inherits c (3-cycle) */
    CU_ASSERT_EQUAL(update_role(&g_a, a, "cy-a", "inherits", pa, 1, &e), ERR_FAILED_PRECONDITION);
    CU_ASSERT_EQUAL(update_role(&g_b, a, "cy-a", "inherits", pb, 1, &e), ERR_FAILED_PRECONDITION);
    CU_ASSERT_EQUAL(update_role(&g_a, a, "cy-a", "inherits", pc, 1, &e), ERR_FAILED_PRECONDITION);
    Permission__V1__Role *r = NULL;
    CU_ASSERT_EQUAL_FATAL(get_role(&g_a, a, "cy-a", &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(r->n_inherits, 0); /* nothing of the refused updates stayed */
    /* a diamond is not a cycle */
    const char *pab[] = {"cy-a", "cy-b"};
    CU_ASSERT_EQUAL(update_role(&g_a, a, "cy-c", "inherits", pab, 2, &e), ERR_OK);
    arena_free(a);
}

typedef struct race_arg {
    replica *r;
    const char *role, *parent;
    err_code rc;
} race_arg;

static void *race_update(void *p)
{
    race_arg *ra = p;
    arena *a = arena_new(0);
    err_info e;
    const char *par[] = {ra->parent};
    ra->rc = update_role(ra->r, a, ra->role, "inherits", par, 1, &e);
    arena_free(a);
    return NULL;
}

static void test_concurrent_cycle(void)
{
    arena *a = arena_new(0);
    err_info e;
    int both_ok = 0, one_ok = 0;
    for (int i = 0; i < 20; i++) {
        char x[32], y[32];
        snprintf(x, sizeof x, "race-x%d", i);
        snprintf(y, sizeof y, "race-y%d", i);
        CU_ASSERT_EQUAL(create_role(&g_a, a, x, NULL, 0, NULL, 0, &e), ERR_OK);
        CU_ASSERT_EQUAL(create_role(&g_a, a, y, NULL, 0, NULL, 0, &e), ERR_OK);
        race_arg r1 = {&g_a, x, y, ERR_UNKNOWN}, r2 = {&g_b, y, x, ERR_UNKNOWN};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, race_update, &r1);
        pthread_create(&t2, NULL, race_update, &r2);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        if (r1.rc == ERR_OK && r2.rc == ERR_OK)
            both_ok++;
        if ((r1.rc == ERR_OK) != (r2.rc == ERR_OK))
            one_ok++;
        CU_ASSERT_TRUE(r1.rc == ERR_OK || r1.rc == ERR_FAILED_PRECONDITION);
        CU_ASSERT_TRUE(r2.rc == ERR_OK || r2.rc == ERR_FAILED_PRECONDITION);
    }
    CU_ASSERT_EQUAL(both_ok, 0);
    CU_ASSERT_EQUAL(one_ok, 20);
    arena_free(a);
}

static void test_depth_bound(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *p1[] = {"deep:one"};
    CU_ASSERT_EQUAL_FATAL(create_role(&g_a, a, "deep1", p1, 1, NULL, 0, &e), ERR_OK);
    for (int i = 2; i <= 32; i++) {
        char name[16], parent[16];
        snprintf(name, sizeof name, "deep%d", i);
        snprintf(parent, sizeof parent, "deep%d", i - 1);
        const char *par[] = {parent};
        CU_ASSERT_EQUAL(create_role(&g_a, a, name, NULL, 0, par, 1, &e), ERR_OK);
    }
    const char *par33[] = {"deep32"};
    CU_ASSERT_EQUAL(create_role(&g_a, a, "deep33", NULL, 0, par33, 1, &e), ERR_FAILED_PRECONDITION);
    /* a chain of exactly 32 roles is followed to its end */
    char u[37];
    new_uuid(u);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "deep32", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "deep:one", &e), 1);
    Permission__V1__ListUserRolesResponse *ur = NULL;
    CU_ASSERT_EQUAL_FATAL(user_roles(&g_b, a, u, &ur, &e), ERR_OK);
    CU_ASSERT_EQUAL(ur->n_roles, 32);
    /* lengthening the chain from below is refused too */
    CU_ASSERT_EQUAL(create_role(&g_a, a, "deep0", NULL, 0, NULL, 0, &e), ERR_OK);
    const char *p0[] = {"deep0"};
    CU_ASSERT_EQUAL(update_role(&g_a, a, "deep1", "inherits", p0, 1, &e), ERR_FAILED_PRECONDITION);
    arena_free(a);
}

static void test_wildcard_inheritance_table(void)
{
    arena *a = arena_new(0);
    err_info e;
    struct {
        const char *grant;
        int want;
    } rows[] = {{"users:read", 1}, {"users:*", 1},     {"*:read", 1},    {"*:*", 1},
                {"*", 1},          {"users:write", 0}, {"user:read", 0}, {"usersx:read", 0}};
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        char base[32], mid[32], top[32], u[37];
        snprintf(base, sizeof base, "wc-base%zu", i);
        snprintf(mid, sizeof mid, "wc-mid%zu", i);
        snprintf(top, sizeof top, "wc-top%zu", i);
        const char *g[] = {rows[i].grant};
        const char *pb[] = {base}, *pm[] = {mid};
        CU_ASSERT_EQUAL(create_role(&g_a, a, base, g, 1, NULL, 0, &e), ERR_OK);
        CU_ASSERT_EQUAL(create_role(&g_a, a, mid, NULL, 0, pb, 1, &e), ERR_OK);
        CU_ASSERT_EQUAL(create_role(&g_a, a, top, NULL, 0, pm, 1, &e), ERR_OK);
        new_uuid(u);
        CU_ASSERT_EQUAL(assign(&g_a, a, u, top, true, &e), ERR_OK);
        int got = check(&g_b, a, u, "users:read", &e);
        if (got != rows[i].want)
            fprintf(stderr, "grant %s via 2 levels: got %d want %d\n", rows[i].grant, got,
                    rows[i].want);
        CU_ASSERT_EQUAL(got, rows[i].want);
    }
    arena_free(a);
}

static void test_assign_revoke_check(void)
{
    arena *a = arena_new(0);
    err_info e;
    char u[37];
    new_uuid(u);
    const char *pr[] = {"reports:read"}, *pw[] = {"reports:write", "audit:*"};
    const char *par[] = {"ar-reader"};
    CU_ASSERT_EQUAL(create_role(&g_a, a, "ar-reader", pr, 1, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(create_role(&g_a, a, "ar-writer", pw, 2, par, 1, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_a, a, "not-a-uuid", "ar-writer", true, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "user_id"));
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "ar-nope", true, &e), ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "ar-writer", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_b, a, u, "ar-writer", true, &e), ERR_OK); /* idempotent */
    Permission__V1__ListUserRolesResponse *ur = NULL;
    CU_ASSERT_EQUAL_FATAL(user_roles(&g_b, a, u, &ur, &e), ERR_OK);
    CU_ASSERT_EQUAL(ur->n_roles, 2);
    CU_ASSERT_TRUE(list_has(ur->roles, ur->n_roles, "ar-reader"));
    CU_ASSERT_TRUE(list_has(ur->roles, ur->n_roles, "ar-writer"));
    Permission__V1__ListUserPermissionsRequest lp =
        PERMISSION__V1__LIST_USER_PERMISSIONS_REQUEST__INIT;
    lp.user_id = u;
    Permission__V1__ListUserPermissionsResponse *up = NULL;
    CU_ASSERT_EQUAL_FATAL(call(&g_b, a, "ListUserPermissions", &lp,
                               &permission__v1__list_user_permissions_response__descriptor,
                               (void **)&up, &e),
                          ERR_OK);
    CU_ASSERT_EQUAL(up->n_permissions, 3);
    CU_ASSERT_TRUE(list_has(up->permissions, up->n_permissions, "audit:*"));
    CU_ASSERT_TRUE(list_has(up->permissions, up->n_permissions, "reports:read"));
    CU_ASSERT_TRUE(list_has(up->permissions, up->n_permissions, "reports:write"));

    CU_ASSERT_EQUAL(check(&g_b, a, u, "reports:read", &e), 1);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "audit:anything", &e), 1);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "reports:delete", &e), 0);
    /* a pattern is not a valid Check argument */
    CU_ASSERT_EQUAL(check(&g_b, a, u, "reports:*", &e), -1);
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "permission"));
    CU_ASSERT_EQUAL(check(&g_b, a, u, "*", &e), -1);
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(check(&g_b, a, "x", "reports:read", &e), -1);
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);

    /* BatchCheck: one answer per permission, same order */
    Permission__V1__BatchCheckRequest bc = PERMISSION__V1__BATCH_CHECK_REQUEST__INIT;
    char *perms[] = {"reports:read", "reports:delete", "audit:x", "users:read"};
    bc.user_id = u;
    bc.permissions = perms;
    bc.n_permissions = 4;
    Permission__V1__BatchCheckResponse *br = NULL;
    CU_ASSERT_EQUAL_FATAL(call(&g_a, a, "BatchCheck", &bc,
                               &permission__v1__batch_check_response__descriptor, (void **)&br, &e),
                          ERR_OK);
    CU_ASSERT_EQUAL_FATAL(br->n_results, 4);
    const bool want[] = {true, false, true, false};
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_STRING_EQUAL(br->results[i]->permission, perms[i]);
        CU_ASSERT_EQUAL(br->results[i]->allowed, want[i]);
    }
    bc.n_permissions = 0;
    CU_ASSERT_EQUAL(call(&g_a, a, "BatchCheck", &bc,
                         &permission__v1__batch_check_response__descriptor, NULL, &e),
                    ERR_INVALID_ARGUMENT);
    char *badp[] = {"reports:read", "reports:*"};
    bc.permissions = badp;
    bc.n_permissions = 2;
    CU_ASSERT_EQUAL(call(&g_a, a, "BatchCheck", &bc,
                         &permission__v1__batch_check_response__descriptor, NULL, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "permissions[1]"));

    /* revoke: idempotent; unknown role NOT_FOUND */
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "ar-writer", false, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "ar-writer", false, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "ar-nope", false, &e), ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "reports:read", &e), 0);
    CU_ASSERT_EQUAL_FATAL(user_roles(&g_b, a, u, &ur, &e), ERR_OK);
    CU_ASSERT_EQUAL(ur->n_roles, 0);
    /* upper-case user ids are the same user */
    char upper[37];
    for (int i = 0; i < 37; i++)
        upper[i] = (u[i] >= 'a' && u[i] <= 'f') ? (char)(u[i] - 32) : u[i];
    CU_ASSERT_EQUAL(assign(&g_a, a, upper, "ar-reader", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "reports:read", &e), 1);
    arena_free(a);
}

static void test_delete_role_cascade(void)
{
    arena *a = arena_new(0);
    err_info e;
    char u[37];
    new_uuid(u);
    const char *pp[] = {"files:read"}, *pq[] = {"files:list"};
    const char *par[] = {"del-p"};
    CU_ASSERT_EQUAL(create_role(&g_a, a, "del-p", pp, 1, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(create_role(&g_a, a, "del-q", pq, 1, par, 1, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "del-q", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "del-p", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "files:read", &e), 1); /* warm B */
    CU_ASSERT_EQUAL(delete_role(&g_a, a, "del-p", &e), ERR_OK);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "files:read", &e), 0);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "files:list", &e), 1);
    Permission__V1__Role *r = NULL;
    CU_ASSERT_EQUAL_FATAL(get_role(&g_b, a, "del-q", &r, &e), ERR_OK);
    CU_ASSERT_EQUAL(r->n_inherits, 0);
    Permission__V1__ListUserRolesResponse *ur = NULL;
    CU_ASSERT_EQUAL_FATAL(user_roles(&g_b, a, u, &ur, &e), ERR_OK);
    CU_ASSERT_EQUAL(ur->n_roles, 1);
    /* re-created under the same name, it is a new empty role: nobody holds it */
    CU_ASSERT_EQUAL(create_role(&g_a, a, "del-p", pp, 1, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "files:read", &e), 0);
    arena_free(a);
}

/* The SPEC's promise: once a write returned, every later Check on any replica sees it. Write on A,
 * check on B at once; B's cache is warmed before each write so a stale cache would show. */
static void test_two_replica_freshness(void)
{
    arena *a = arena_new(0);
    err_info e;
    char u[37];
    new_uuid(u);
    const char *pa[] = {"fr:read"}, *pc[] = {"fr:share"}, *pd[] = {"fr:delete"};
    const char *pb_off[] = {"fr:write"}, *pb_on[] = {"fr:write", "fr:audit"};
    CU_ASSERT_EQUAL_FATAL(create_role(&g_a, a, "fr-a", pa, 1, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(create_role(&g_a, a, "fr-b", pb_off, 1, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(create_role(&g_a, a, "fr-c", pc, 1, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(create_role(&g_a, a, "fr-d", pd, 1, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(assign(&g_a, a, u, "fr-b", true, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(assign(&g_a, a, u, "fr-d", true, &e), ERR_OK);
    bool has_a = false, b_audit = false, b_inherits_c = false, d_exists = true;
    char *perms[] = {"fr:read", "fr:audit", "fr:share", "fr:delete", "fr:write"};
    int stale = 0, errors = 0, iterations = 320;
    for (int i = 0; i < iterations; i++) {
        Permission__V1__BatchCheckRequest bc = PERMISSION__V1__BATCH_CHECK_REQUEST__INIT;
        bc.user_id = u;
        bc.permissions = perms;
        bc.n_permissions = 5;
        bool want[5];
        Permission__V1__BatchCheckResponse *br = NULL;
        for (int phase = 0; phase < 2; phase++) {
            want[0] = has_a;
            want[1] = b_audit;
            want[2] = b_inherits_c;
            want[3] = d_exists;
            want[4] = true;
            /* phase 0 warms B's cache (and checks the state before the write) */
            if (call(&g_b, a, "BatchCheck", &bc, &permission__v1__batch_check_response__descriptor,
                     (void **)&br, &e) != ERR_OK ||
                br->n_results != 5) {
                errors++;
                break;
            }
            for (int k = 0; k < 5; k++) {
                if (br->results[k]->allowed != want[k]) {
                    stale++;
                    fprintf(stderr, "iteration %d phase %d: %s is %d, expected %d\n", i, phase,
                            perms[k], br->results[k]->allowed, want[k]);
                }
            }
            if (phase == 1)
                break;
            err_code rc = ERR_OK;
            switch (i % 4) {
            case 0: /* assign / revoke */
                rc = assign(&g_a, a, u, "fr-a", !has_a, &e);
                has_a = !has_a;
                break;
            case 1: /* UpdateRole permissions */
                rc = update_role(&g_a, a, "fr-b", "permissions", b_audit ? pb_off : pb_on,
                                 b_audit ? 1 : 2, &e);
                b_audit = !b_audit;
                break;
            case 2: { /* UpdateRole inherits */
                const char *par[] = {"fr-c"};
                rc = update_role(&g_a, a, "fr-b", "inherits", par, b_inherits_c ? 0 : 1, &e);
                b_inherits_c = !b_inherits_c;
                break;
            }
            case 3: /* DeleteRole, or re-create + assign */
                if (d_exists) {
                    rc = delete_role(&g_a, a, "fr-d", &e);
                } else {
                    rc = create_role(&g_a, a, "fr-d", pd, 1, NULL, 0, &e);
                    if (rc == ERR_OK)
                        rc = assign(&g_a, a, u, "fr-d", true, &e);
                }
                d_exists = !d_exists;
                break;
            }
            if (rc != ERR_OK) {
                fprintf(stderr, "iteration %d: write failed: %s\n", i, e.msg);
                errors++;
            }
        }
        if (i % 64 == 63)
            arena_reset(a);
    }
    fprintf(stderr, "freshness: %d iterations, %d stale answers, %d errors\n", iterations, stale,
            errors);
    CU_ASSERT_EQUAL(stale, 0);
    CU_ASSERT_EQUAL(errors, 0);
    arena_free(a);
}

/* With Redis unreachable, Check answers from the database (correctly), and writes are refused
 * before they commit. */
static void test_redis_unreachable(void)
{
    arena *a = arena_new(0);
    err_info e;
    char u[37];
    new_uuid(u);
    const char *pp[] = {"nr:read"};
    CU_ASSERT_EQUAL(create_role(&g_a, a, "nr-role", pp, 1, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "nr-role", true, &e), ERR_OK);
    replica c = {0};
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", ts_free_port()); /* nothing listens */
    start_replica(&c, url, "60000");
    CU_ASSERT_EQUAL(check(&c, a, u, "nr:read", &e), 1);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "nr-role", false, &e), ERR_OK); /* through A */
    CU_ASSERT_EQUAL(check(&c, a, u, "nr:read", &e), 0);                /* C sees it: no cache */
    CU_ASSERT_EQUAL(assign(&c, a, u, "nr-role", true, &e), ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(check(&g_a, a, u, "nr:read", &e), 0); /* the refused write did not commit */
    CU_ASSERT_EQUAL(stop_replica(&c), 0);
    arena_free(a);
}

/* A private Redis (not the harness', which other programs share) that this test may stop. */
static int start_private_redis(int port)
{
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", port);
    char *argv[] = {"/usr/bin/redis-server", "--port", portarg, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly",          "no",     NULL};
    int pid = ts_spawn(argv, NULL, "/dev/null");
    CU_ASSERT_EQUAL(ts_wait_port(port, 10000), 0);
    return pid;
}

/* Redis restarts empty while replicas hold cached sets: the lost tokens come back as fresh values,
 * so a write after the restart is seen at once by a replica whose cache was warm before it. */
static void test_redis_restart(void)
{
    arena *a = arena_new(0);
    err_info e;
    char u[37];
    new_uuid(u);
    int rport = ts_free_port();
    int rpid = start_private_redis(rport);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", rport);
    replica c = {0}, d = {0};
    start_replica(&c, url, "60000");
    start_replica(&d, url, "60000");
    const char *pp[] = {"rr:read"};
    CU_ASSERT_EQUAL(create_role(&c, a, "rr-role", pp, 1, NULL, 0, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&c, a, u, "rr-role", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(check(&d, a, u, "rr:read", &e), 1); /* D caches it */
    CU_ASSERT_EQUAL(check(&d, a, u, "rr:read", &e), 1);

    /* Redis down: D answers from the database; a write is refused and changes nothing. */
    ts_stop(rpid, SIGTERM, 10000);
    CU_ASSERT_EQUAL(check(&d, a, u, "rr:read", &e), 1);
    CU_ASSERT_EQUAL(assign(&c, a, u, "rr-role", false, &e), ERR_UNAVAILABLE);
    CU_ASSERT_EQUAL(check(&d, a, u, "rr:read", &e), 1);

    /* Redis back, empty. The revoke goes through (after the client's reconnect back-off) and D
     * sees it on its very next Check. */
    rpid = start_private_redis(rport);
    err_code rc = ERR_UNAVAILABLE;
    for (int i = 0; i < 50 && rc == ERR_UNAVAILABLE; i++) {
        rc = assign(&c, a, u, "rr-role", false, &e);
        if (rc == ERR_UNAVAILABLE)
            usleep(100000);
    }
    CU_ASSERT_EQUAL(rc, ERR_OK);
    int got = -1;
    for (int i = 0; i < 50; i++) {            /* D may still be in its own reconnect back-off: */
        got = check(&d, a, u, "rr:read", &e); /* then it reads the DB, never its old cache */
        CU_ASSERT_EQUAL(got, 0);
        if (got != 0)
            break;
        usleep(20000);
    }
    CU_ASSERT_EQUAL(got, 0);
    CU_ASSERT_EQUAL(stop_replica(&c), 0);
    CU_ASSERT_EQUAL(stop_replica(&d), 0);
    ts_stop(rpid, SIGTERM, 10000);
    arena_free(a);
}

static bool wait_no_roles(replica *r, arena *a, const char *u, int timeout_ms)
{
    err_info e;
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        Permission__V1__ListUserRolesResponse *ur = NULL;
        if (user_roles(r, a, u, &ur, &e) == ERR_OK && ur->n_roles == 0)
            return true;
        usleep(100000);
    }
    return false;
}

static void xadd_deleted(const char *u)
{
    char evid[37];
    new_uuid(evid);
    CU_ASSERT_EQUAL(redis_cli("XADD events.user '*' type user.deleted user_id %s event_id %s "
                              "occurred_at 2026-01-01T00:00:00Z",
                              u, evid),
                    0);
}

static void test_events_user_deleted(void)
{
    arena *a = arena_new(0);
    err_info e;
    char u[37], other[37];
    new_uuid(u);
    new_uuid(other);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "user", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "admin", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_a, a, other, "admin", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(check(&g_b, a, u, "users:read", &e), 1); /* warm B */
    CU_ASSERT_EQUAL(redis_cli("XADD events.user '*' type user.updated user_id %s event_id x "
                              "occurred_at 2026-01-01T00:00:00Z",
                              other),
                    0);
    xadd_deleted(u);
    CU_ASSERT_TRUE(wait_no_roles(&g_b, a, u, 10000));
    CU_ASSERT_EQUAL(check(&g_b, a, u, "users:read", &e), 0);
    CU_ASSERT_EQUAL(check(&g_b, a, other, "users:read", &e), 1); /* others untouched */
    /* a late assignment cannot resurrect the deleted user */
    CU_ASSERT_EQUAL(assign(&g_a, a, u, "admin", true, &e), ERR_FAILED_PRECONDITION);
    /* replayed event: idempotent */
    xadd_deleted(u);
    usleep(500000);
    CU_ASSERT_TRUE(wait_no_roles(&g_a, a, u, 5000));
    /* everything acknowledged */
    long pending = -1;
    for (int i = 0; i < 50 && pending != 0; i++) {
        pending = redis_cli_num("XPENDING events.user permission-service");
        if (pending != 0)
            usleep(100000);
    }
    CU_ASSERT_EQUAL(pending, 0);
    arena_free(a);
}

/* A consumer that read an entry and died leaves it pending; a (re)started service claims it after
 * the idle time and processes it. Also: events published while no service runs are processed. */
static void test_events_claim_dead_consumer(void)
{
    arena *a = arena_new(0);
    err_info e;
    char u1[37], u2[37];
    new_uuid(u1);
    new_uuid(u2);
    CU_ASSERT_EQUAL(assign(&g_a, a, u1, "admin", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(assign(&g_a, a, u2, "admin", true, &e), ERR_OK);
    CU_ASSERT_EQUAL(stop_replica(&g_a), 0); /* clean exit on SIGTERM */
    CU_ASSERT_EQUAL(stop_replica(&g_b), 0);
    xadd_deleted(u1);
    /* a fake consumer takes u1's entry and "dies" without acknowledging it */
    CU_ASSERT_EQUAL(redis_cli("XREADGROUP GROUP permission-service dead-consumer COUNT 10 STREAMS "
                              "events.user '>'"),
                    0);
    CU_ASSERT_EQUAL(redis_cli_num("XPENDING events.user permission-service"), 1);
    xadd_deleted(u2); /* published while no service runs */
    start_replica(&g_a, ts_redis_url_db(REDIS_DB), "500");
    CU_ASSERT_TRUE(wait_no_roles(&g_a, a, u2, 10000));
    CU_ASSERT_TRUE(wait_no_roles(&g_a, a, u1, 10000));
    long pending = -1;
    for (int i = 0; i < 100 && pending != 0; i++) {
        pending = redis_cli_num("XPENDING events.user permission-service");
        if (pending != 0)
            usleep(100000);
    }
    CU_ASSERT_EQUAL(pending, 0);
    CU_ASSERT_EQUAL(check(&g_a, a, u1, "users:read", &e), 0);
    arena_free(a);
}

int main(void)
{
    snprintf(g_log, sizeof g_log, "%s/integration_permission.log",
             ts_need_env("IDENTITY_BUILD_DIR"));
    unlink(g_log);
    g_conninfo = strdup(ts_fresh_db("t_permission", "permission_svc"));
    ts_redis_flush(REDIS_DB);
    srand((unsigned)getpid());
    start_replica(&g_a, ts_redis_url_db(REDIS_DB), "500");
    start_replica(&g_b, ts_redis_url_db(REDIS_DB), "500");
    static const ts_case cases[] = {
        {"builtin_roles", test_builtin_roles},
        {"role_crud_and_validation", test_role_crud_and_validation},
        {"cycles", test_cycles},
        {"concurrent_cycle", test_concurrent_cycle},
        {"depth_bound", test_depth_bound},
        {"wildcard_inheritance_table", test_wildcard_inheritance_table},
        {"assign_revoke_check", test_assign_revoke_check},
        {"delete_role_cascade", test_delete_role_cascade},
        {"two_replica_freshness", test_two_replica_freshness},
        {"redis_unreachable", test_redis_unreachable},
        {"redis_restart", test_redis_restart},
        {"events_user_deleted", test_events_user_deleted},
        {"events_claim_dead_consumer", test_events_claim_dead_consumer},
        {NULL, NULL},
    };
    int rc = ts_main("permission_service", cases);
    if (stop_replica(&g_a) != 0 || stop_replica(&g_b) != 0) {
        fprintf(stderr, "permission-service did not exit cleanly; log: %s\n", g_log);
        rc = 1;
    }
    free((void *)g_conninfo);
    return rc;
}
