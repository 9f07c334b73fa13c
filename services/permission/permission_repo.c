/* permission_repo: SQL of the permissions schema (parameterised, prepared once per connection). */
#include "permission_repo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Splits a space-separated list (our names and permission strings never hold spaces) into the
 * arena. */
static const char **split_words(arena *a, const char *s, size_t *n)
{
    size_t count = 0;
    for (const char *p = s; *p;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        count++;
        while (*p && *p != ' ')
            p++;
    }
    const char **out = arena_alloc(a, (count ? count : 1) * sizeof *out);
    size_t i = 0;
    for (const char *p = s; *p;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ' ')
            p++;
        out[i++] = arena_strndup(a, start, (size_t)(p - start));
    }
    *n = count;
    return out;
}

/* Joins strings with single spaces into the arena. */
static char *join_words(arena *a, const char *const *v, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *out = arena_alloc(a, len);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]);
        if (i)
            out[off++] = ' ';
        memcpy(out + off, v[i], l);
        off += l;
    }
    out[off] = '\0';
    return out;
}

static int64_t to_i64(const char *s)
{
    return strtoll(s, NULL, 10);
}

#define ROLE_COLS                                                                                  \
    "r.name, r.description, r.builtin, array_to_string(r.permissions, ' '), "                      \
    "coalesce((SELECT string_agg(p.parent, ' ' ORDER BY p.position, p.parent) "                    \
    "FROM role_parents p WHERE p.role = r.name), ''), "                                            \
    "(extract(epoch FROM r.create_time) * 1000000)::bigint, "                                      \
    "(extract(epoch FROM r.update_time) * 1000000)::bigint"

static void role_from_row(const db_result *res, int row, arena *a, perm_role *out)
{
    memset(out, 0, sizeof *out);
    out->name = arena_strdup(a, db_result_get(res, row, 0));
    out->description = arena_strdup(a, db_result_get(res, row, 1));
    out->builtin = strcmp(db_result_get(res, row, 2), "t") == 0;
    out->permissions = split_words(a, db_result_get(res, row, 3), &out->npermissions);
    out->inherits = split_words(a, db_result_get(res, row, 4), &out->ninherits);
    out->create_us = to_i64(db_result_get(res, row, 5));
    out->update_us = to_i64(db_result_get(res, row, 6));
}

err_code perm_repo_role_get(db_conn *c, const char *name, arena *a, perm_role *out, err_info *e)
{
    const char *params[] = {name};
    db_result *res = NULL;
    err_code rc =
        db_exec(c, "SELECT " ROLE_COLS " FROM roles r WHERE r.name = $1", 1, params, &res, e);
    if (rc != ERR_OK)
        return rc;
    if (db_result_rows(res) == 0) {
        db_result_free(res);
        return err_set(e, ERR_NOT_FOUND, "role %s not found", name);
    }
    role_from_row(res, 0, a, out);
    db_result_free(res);
    return ERR_OK;
}

err_code perm_repo_role_lock(db_conn *c, const char *name, bool *builtin, err_info *e)
{
    const char *params[] = {name};
    db_result *res = NULL;
    err_code rc =
        db_exec(c, "SELECT builtin FROM roles WHERE name = $1 FOR UPDATE", 1, params, &res, e);
    if (rc != ERR_OK)
        return rc;
    if (db_result_rows(res) == 0) {
        db_result_free(res);
        return err_set(e, ERR_NOT_FOUND, "role %s not found", name);
    }
    *builtin = strcmp(db_result_get(res, 0, 0), "t") == 0;
    db_result_free(res);
    return ERR_OK;
}

err_code perm_repo_role_list(db_conn *c, const char *after, int limit, arena *a, perm_role **out,
                             size_t *n, err_info *e)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[] = {after, lim};
    db_result *res = NULL;
    err_code rc = db_exec(c,
                          "SELECT " ROLE_COLS " FROM roles r WHERE r.name > $1 "
                          "ORDER BY r.name LIMIT $2::int",
                          2, params, &res, e);
    if (rc != ERR_OK)
        return rc;
    int rows = db_result_rows(res);
    perm_role *v = arena_alloc(a, (size_t)(rows ? rows : 1) * sizeof *v);
    for (int i = 0; i < rows; i++)
        role_from_row(res, i, a, &v[i]);
    db_result_free(res);
    *out = v;
    *n = (size_t)rows;
    return ERR_OK;
}

err_code perm_repo_role_insert(db_conn *c, const perm_role *r, err_info *e)
{
    arena *a = arena_new(0);
    const char *params[] = {r->name, r->description,
                            join_words(a, r->permissions, r->npermissions)};
    err_code rc = db_exec(c,
                          "INSERT INTO roles (name, description, permissions) "
                          "VALUES ($1, $2, coalesce(string_to_array(NULLIF($3, ''), ' '), '{}'))",
                          3, params, NULL, e);
    arena_free(a);
    if (rc == ERR_ALREADY_EXISTS)
        return err_set(e, ERR_ALREADY_EXISTS, "role %s already exists", r->name);
    return rc;
}

err_code perm_repo_role_update(db_conn *c, const char *name, const char *description,
                               const char *const *perms, size_t nperms, bool set_perms, err_info *e)
{
    arena *a = arena_new(0);
    const char *params[] = {name, description, set_perms ? join_words(a, perms, nperms) : NULL};
    err_code rc = db_exec(c,
                          "UPDATE roles SET description = coalesce($2, description), "
                          "permissions = CASE WHEN $3::text IS NULL THEN permissions "
                          "ELSE coalesce(string_to_array(NULLIF($3, ''), ' '), '{}') END, "
                          "update_time = now() WHERE name = $1",
                          3, params, NULL, e);
    arena_free(a);
    return rc;
}

err_code perm_repo_role_delete(db_conn *c, const char *name, err_info *e)
{
    const char *params[] = {name};
    return db_exec(c, "DELETE FROM roles WHERE name = $1", 1, params, NULL, e);
}

err_code perm_repo_lock_graph(db_conn *c, err_info *e)
{
    /* SHARE ROW EXCLUSIVE conflicts with itself and with row writes, not with plain reads.
     * LOCK cannot be prepared, hence the simple-query path. */
    return db_exec_script(c, "LOCK TABLE role_parents IN SHARE ROW EXCLUSIVE MODE", e);
}

err_code perm_repo_roles_missing(db_conn *c, const char *const *names, size_t n, bool *missing,
                                 err_info *e)
{
    if (n == 0)
        return ERR_OK;
    arena *a = arena_new(0);
    const char *params[] = {join_words(a, names, n)};
    db_result *res = NULL;
    err_code rc = db_exec(c, "SELECT name FROM roles WHERE name = ANY(string_to_array($1, ' '))", 1,
                          params, &res, e);
    arena_free(a);
    if (rc != ERR_OK)
        return rc;
    int rows = db_result_rows(res);
    for (size_t i = 0; i < n; i++) {
        missing[i] = true;
        for (int r = 0; r < rows; r++) {
            if (strcmp(db_result_get(res, r, 0), names[i]) == 0) {
                missing[i] = false;
                break;
            }
        }
    }
    db_result_free(res);
    return ERR_OK;
}

err_code perm_repo_parents_replace(db_conn *c, const char *name, const char *const *parents,
                                   size_t n, err_info *e)
{
    const char *p1[] = {name};
    err_code rc = db_exec(c, "DELETE FROM role_parents WHERE role = $1", 1, p1, NULL, e);
    if (rc != ERR_OK || n == 0)
        return rc;
    arena *a = arena_new(0);
    const char *p2[] = {name, join_words(a, parents, n)};
    rc = db_exec(
        c,
        "INSERT INTO role_parents (role, parent, position) "
        "SELECT $1, p, ord FROM unnest(string_to_array($2, ' ')) WITH ORDINALITY AS u(p, ord) "
        "ON CONFLICT DO NOTHING",
        2, p2, NULL, e);
    arena_free(a);
    return rc;
}

err_code perm_repo_chain(db_conn *c, const char *name, int *up, int *down, bool *cycle, err_info *e)
{
    /* UNION (not ALL) on (name, depth) keeps the walk finite and small even with a cycle. */
    const char *params[] = {name};
    db_result *res = NULL;
    err_code rc = db_exec(
        c,
        "WITH RECURSIVE up(name, d) AS ("
        "  SELECT parent, 1 FROM role_parents WHERE role = $1"
        "  UNION SELECT p.parent, up.d + 1 FROM role_parents p JOIN up ON p.role = up.name"
        "  WHERE up.d < 40),"
        " down(name, d) AS ("
        "  SELECT role, 1 FROM role_parents WHERE parent = $1"
        "  UNION SELECT p.role, down.d + 1 FROM role_parents p JOIN down ON p.parent = down.name"
        "  WHERE down.d < 40)"
        " SELECT (SELECT coalesce(max(d), 0) FROM up), (SELECT coalesce(max(d), 0) FROM down),"
        " (SELECT coalesce(bool_or(name = $1), false) FROM up)",
        1, params, &res, e);
    if (rc != ERR_OK)
        return rc;
    *up = (int)to_i64(db_result_get(res, 0, 0));
    *down = (int)to_i64(db_result_get(res, 0, 1));
    *cycle = strcmp(db_result_get(res, 0, 2), "t") == 0;
    db_result_free(res);
    return ERR_OK;
}

/* Assign and user.deleted take this per-user lock, so an assignment racing the deletion event
 * either lands before it (and is deleted by it) or sees the tombstone. */
#define USER_LOCK_SQL "SELECT pg_advisory_xact_lock(1885562732, hashtext($1))"

err_code perm_repo_assign(db_conn *c, const char *user_id, const char *role, err_info *e)
{
    const char *p1[] = {user_id};
    err_code rc = db_exec(c, USER_LOCK_SQL, 1, p1, NULL, e);
    if (rc != ERR_OK)
        return rc;
    const char *params[] = {user_id, role};
    db_result *res = NULL;
    rc = db_exec(c,
                 "WITH r AS (SELECT name FROM roles WHERE name = $2 FOR SHARE),"
                 " d AS (SELECT 1 FROM deleted_users WHERE user_id = $1::uuid),"
                 " ins AS (INSERT INTO user_roles (user_id, role)"
                 "  SELECT $1::uuid, name FROM r WHERE NOT EXISTS (SELECT 1 FROM d)"
                 "  ON CONFLICT DO NOTHING RETURNING 1)"
                 " SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM d)",
                 2, params, &res, e);
    if (rc != ERR_OK)
        return rc;
    bool role_found = to_i64(db_result_get(res, 0, 0)) > 0;
    bool deleted = to_i64(db_result_get(res, 0, 1)) > 0;
    db_result_free(res);
    if (!role_found)
        return err_set(e, ERR_NOT_FOUND, "role %s not found", role);
    if (deleted)
        return err_set(e, ERR_FAILED_PRECONDITION, "user %s has been deleted", user_id);
    return ERR_OK;
}

err_code perm_repo_revoke(db_conn *c, const char *user_id, const char *role, err_info *e)
{
    const char *params[] = {user_id, role};
    db_result *res = NULL;
    err_code rc = db_exec(c,
                          "WITH del AS (DELETE FROM user_roles WHERE user_id = $1::uuid"
                          " AND role = $2 RETURNING 1)"
                          " SELECT EXISTS (SELECT 1 FROM roles WHERE name = $2)",
                          2, params, &res, e);
    if (rc != ERR_OK)
        return rc;
    bool found = strcmp(db_result_get(res, 0, 0), "t") == 0;
    db_result_free(res);
    if (!found)
        return err_set(e, ERR_NOT_FOUND, "role %s not found", role);
    return ERR_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

err_code perm_repo_effective(db_conn *c, const char *user_id, arena *a, const char ***roles,
                             size_t *nroles, const char ***perms, size_t *nperms, err_info *e)
{
    const char *params[] = {user_id};
    db_result *res = NULL;
    err_code rc =
        db_exec(c,
                "WITH RECURSIVE r(name, d) AS ("
                "  SELECT role, 1 FROM user_roles WHERE user_id = $1::uuid"
                "  UNION SELECT p.parent, r.d + 1 FROM role_parents p JOIN r ON p.role = r.name"
                "  WHERE r.d < " PERM_MAX_DEPTH_STR ")"
                " SELECT ro.name, array_to_string(ro.permissions, ' ') FROM roles ro"
                " WHERE ro.name IN (SELECT name FROM r) ORDER BY ro.name",
                1, params, &res, e);
    if (rc != ERR_OK)
        return rc;
    int rows = db_result_rows(res);
    if (roles) {
        const char **v = arena_alloc(a, (size_t)(rows ? rows : 1) * sizeof *v);
        for (int i = 0; i < rows; i++)
            v[i] = arena_strdup(a, db_result_get(res, i, 0));
        *roles = v;
        *nroles = (size_t)rows;
    }
    if (perms) {
        size_t total = 0, cap = 0;
        const char ***lists = arena_alloc(a, (size_t)(rows ? rows : 1) * sizeof *lists);
        size_t *counts = arena_alloc(a, (size_t)(rows ? rows : 1) * sizeof *counts);
        for (int i = 0; i < rows; i++) {
            lists[i] = split_words(a, db_result_get(res, i, 1), &counts[i]);
            cap += counts[i];
        }
        const char **v = arena_alloc(a, (cap ? cap : 1) * sizeof *v);
        for (int i = 0; i < rows; i++) {
            for (size_t j = 0; j < counts[i]; j++)
                v[total++] = lists[i][j];
        }
        qsort(v, total, sizeof *v, cmp_str);
        size_t u = 0;
        for (size_t i = 0; i < total; i++) {
            if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
                v[u++] = v[i];
        }
        *perms = v;
        *nperms = u;
    }
    db_result_free(res);
    return ERR_OK;
}

err_code perm_repo_user_deleted(db_conn *c, const char *user_id, const char *event_id, err_info *e)
{
    const char *p1[] = {user_id};
    err_code rc = db_exec(c, USER_LOCK_SQL, 1, p1, NULL, e);
    if (rc != ERR_OK)
        return rc;
    const char *p2[] = {user_id, event_id};
    rc = db_exec(c,
                 "INSERT INTO deleted_users (user_id, event_id) VALUES ($1::uuid, $2)"
                 " ON CONFLICT DO NOTHING",
                 2, p2, NULL, e);
    if (rc != ERR_OK)
        return rc;
    return db_exec(c, "DELETE FROM user_roles WHERE user_id = $1::uuid", 1, p1, NULL, e);
}
