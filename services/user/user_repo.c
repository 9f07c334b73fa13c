/* user_repo: the SQL of the user service. Times travel as epoch microseconds (bigint) so the exact
 * database value round-trips through page tokens. */
#include "user_repo.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"
#define USER_COLS                                                                                  \
    "id::text, email, display_name, status, " US("create_time") ", " US("update_time") ", " US(    \
        "delete_time") ", version"

static int64_t to_i64(const char *s)
{
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    return errno ? 0 : (int64_t)v;
}

static void row_to_rec(const db_result *r, int row, arena *a, user_rec *u)
{
    memset(u, 0, sizeof *u);
    snprintf(u->id, sizeof u->id, "%s", db_result_get(r, row, 0));
    u->email = arena_strdup(a, db_result_get(r, row, 1));
    u->display_name = arena_strdup(a, db_result_get(r, row, 2));
    u->status = (int)to_i64(db_result_get(r, row, 3));
    u->create_us = to_i64(db_result_get(r, row, 4));
    u->update_us = to_i64(db_result_get(r, row, 5));
    u->delete_us = db_result_isnull(r, row, 6) ? 0 : to_i64(db_result_get(r, row, 6));
    u->version = to_i64(db_result_get(r, row, 7));
}

/* Runs a query expected to return 0 or 1 user row. */
static err_code one_user(db_conn *c, arena *a, const char *sql, int n, const char *const *p,
                         user_rec *out, err_info *e)
{
    db_result *r = NULL;
    err_code rc = db_exec(c, sql, n, p, &r, e);
    if (rc)
        return rc;
    if (db_result_rows(r) < 1) {
        db_result_free(r);
        return err_set(e, ERR_NOT_FOUND, "user not found");
    }
    row_to_rec(r, 0, a, out);
    db_result_free(r);
    return ERR_OK;
}

static err_code many_users(db_conn *c, arena *a, const char *sql, int n, const char *const *p,
                           user_rec **out, size_t *nout, err_info *e)
{
    db_result *r = NULL;
    err_code rc = db_exec(c, sql, n, p, &r, e);
    if (rc)
        return rc;
    int rows = db_result_rows(r);
    user_rec *v = arena_alloc(a, sizeof *v * (size_t)(rows ? rows : 1));
    for (int i = 0; i < rows; i++)
        row_to_rec(r, i, a, &v[i]);
    db_result_free(r);
    *out = v;
    *nout = (size_t)rows;
    return ERR_OK;
}

err_code user_repo_insert(db_conn *c, arena *a, const char *email, const char *display_name,
                          int status, user_rec *out, err_info *e)
{
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    const char *p[] = {email, display_name, st};
    err_code rc = one_user(c, a,
                           "INSERT INTO users (email, display_name, status) VALUES ($1, $2, "
                           "$3::smallint) RETURNING " USER_COLS,
                           3, p, out, e);
    if (rc == ERR_ALREADY_EXISTS)
        return err_set(e, ERR_ALREADY_EXISTS, "a user with this email already exists");
    return rc;
}

err_code user_repo_get(db_conn *c, arena *a, const char *id, user_rec *out, err_info *e)
{
    const char *p[] = {id};
    return one_user(c, a,
                    "SELECT " USER_COLS " FROM users WHERE id = $1::uuid AND delete_time IS NULL",
                    1, p, out, e);
}

err_code user_repo_get_for_update(db_conn *c, arena *a, const char *id, user_rec *out, err_info *e)
{
    const char *p[] = {id};
    return one_user(c, a,
                    "SELECT " USER_COLS " FROM users WHERE id = $1::uuid AND delete_time IS NULL "
                    "FOR UPDATE",
                    1, p, out, e);
}

err_code user_repo_get_by_email(db_conn *c, arena *a, const char *email, user_rec *out, err_info *e)
{
    const char *p[] = {email};
    return one_user(c, a,
                    "SELECT " USER_COLS " FROM users WHERE lower(email) = lower($1) AND "
                    "delete_time IS NULL",
                    1, p, out, e);
}

/* "{a,b,c}": the elements are canonical UUIDs or integers (checked by the caller), so no quoting
 * is needed; the literal travels as ONE bound parameter. */
static char *array_literal(arena *a, const char *const *items, size_t n)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++)
        len += strlen(items[i]) + 1;
    char *s = arena_alloc(a, len);
    size_t off = 0;
    s[off++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            s[off++] = ',';
        size_t l = strlen(items[i]);
        memcpy(s + off, items[i], l);
        off += l;
    }
    s[off++] = '}';
    s[off] = '\0';
    return s;
}

err_code user_repo_get_many(db_conn *c, arena *a, const char *const *ids, size_t nids,
                            user_rec **out, size_t *nout, err_info *e)
{
    const char *p[] = {array_literal(a, ids, nids)};
    return many_users(c, a,
                      "SELECT " USER_COLS " FROM users WHERE id = ANY($1::uuid[]) AND delete_time "
                      "IS NULL ORDER BY create_time, id",
                      1, p, out, nout, e);
}

#define LIST_WHERE                                                                                 \
    " FROM users WHERE ($1::smallint IS NULL OR status = $1::smallint)"                            \
    " AND ($2::text IS NULL OR starts_with(email, $2::text))"                                      \
    " AND ($3::boolean OR delete_time IS NULL)"

err_code user_repo_list(db_conn *c, arena *a, const user_filter *f, int show_deleted,
                        const user_cursor *after, int limit, user_rec **out, size_t *nout,
                        err_info *e)
{
    char st[8], lim[16], us[24];
    snprintf(st, sizeof st, "%d", f->status);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[6] = {
        f->status ? st : NULL, f->email_prefix, show_deleted ? "true" : "false", lim, NULL, NULL};
    if (!after)
        return many_users(c, a,
                          "SELECT " USER_COLS LIST_WHERE " ORDER BY create_time, id LIMIT $4::int",
                          4, p, out, nout, e);
    snprintf(us, sizeof us, "%" PRId64, after->create_us);
    p[4] = us;
    p[5] = after->id;
    /* The cursor's microseconds go back to a timestamptz exactly: epoch + n µs. */
    return many_users(c, a,
                      "SELECT " USER_COLS LIST_WHERE
                      " AND (create_time, id) > ('epoch'::timestamptz + $5::bigint * interval "
                      "'1 microsecond', $6::uuid) ORDER BY create_time, id LIMIT $4::int",
                      6, p, out, nout, e);
}

err_code user_repo_update(db_conn *c, arena *a, const char *id, const char *email,
                          const char *display_name, int status, user_rec *out, err_info *e)
{
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    const char *p[] = {id, email, display_name, st};
    err_code rc = one_user(c, a,
                           "UPDATE users SET email = $2, display_name = $3, status = $4::smallint, "
                           "version = version + 1, update_time = now() WHERE id = $1::uuid AND "
                           "delete_time IS NULL RETURNING " USER_COLS,
                           4, p, out, e);
    if (rc == ERR_ALREADY_EXISTS)
        return err_set(e, ERR_ALREADY_EXISTS, "a user with this email already exists");
    return rc;
}

err_code user_repo_soft_delete(db_conn *c, arena *a, const char *id, user_rec *out, err_info *e)
{
    const char *p[] = {id};
    return one_user(c, a,
                    "UPDATE users SET delete_time = now(), update_time = now(), version = version "
                    "+ 1 WHERE id = $1::uuid AND delete_time IS NULL RETURNING " USER_COLS,
                    1, p, out, e);
}

err_code user_repo_audit(db_conn *c, const char *actor, const char *action, const char *target,
                         const char *const *fields, size_t nfields, const char *request_id,
                         err_info *e)
{
    arena *a = arena_new(512);
    const char *p[] = {actor, action, target, array_literal(a, fields, nfields),
                       request_id ? request_id : ""};
    err_code rc = db_exec(c,
                          "INSERT INTO audit_log (actor, action, target, changed_fields, "
                          "request_id) VALUES ($1, $2, $3, $4::text[], $5)",
                          5, p, NULL, e);
    arena_free(a);
    return rc;
}

err_code user_repo_outbox_add(db_conn *c, const char *type, const char *user_id, err_info *e)
{
    const char *p[] = {type, user_id};
    return db_exec(c, "INSERT INTO outbox (type, user_id) VALUES ($1, $2::uuid)", 2, p, NULL, e);
}

err_code user_repo_outbox_claim(db_conn *c, arena *a, int limit, user_event **out, size_t *nout,
                                err_info *e)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = {lim};
    db_result *r = NULL;
    err_code rc = db_exec(c,
                          "SELECT id, event_id::text, type, user_id::text, to_char(occurred_at AT "
                          "TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM outbox "
                          "WHERE sent_at IS NULL ORDER BY id LIMIT $1::int FOR UPDATE SKIP LOCKED",
                          1, p, &r, e);
    if (rc)
        return rc;
    int rows = db_result_rows(r);
    user_event *v = arena_alloc(a, sizeof *v * (size_t)(rows ? rows : 1));
    for (int i = 0; i < rows; i++) {
        v[i].id = to_i64(db_result_get(r, i, 0));
        v[i].event_id = arena_strdup(a, db_result_get(r, i, 1));
        v[i].type = arena_strdup(a, db_result_get(r, i, 2));
        v[i].user_id = arena_strdup(a, db_result_get(r, i, 3));
        v[i].occurred_at = arena_strdup(a, db_result_get(r, i, 4));
    }
    db_result_free(r);
    *out = v;
    *nout = (size_t)rows;
    return ERR_OK;
}

err_code user_repo_outbox_mark_sent(db_conn *c, arena *a, const int64_t *ids, size_t n, err_info *e)
{
    const char **txt = arena_alloc(a, sizeof *txt * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        txt[i] = arena_printf(a, "%" PRId64, ids[i]);
    const char *p[] = {array_literal(a, txt, n)};
    return db_exec(c, "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", 1, p, NULL,
                   e);
}

err_code user_repo_outbox_backlog(db_conn *c, long *out, err_info *e)
{
    db_result *r = NULL;
    err_code rc = db_exec(c, "SELECT count(*) FROM outbox WHERE sent_at IS NULL", 0, NULL, &r, e);
    if (rc)
        return rc;
    *out = db_result_rows(r) ? (long)to_i64(db_result_get(r, 0, 0)) : 0;
    db_result_free(r);
    return ERR_OK;
}

err_code user_repo_outbox_purge(db_conn *c, int older_than_s, long *deleted, err_info *e)
{
    char s[16];
    snprintf(s, sizeof s, "%d", older_than_s);
    const char *p[] = {s};
    db_result *r = NULL;
    err_code rc = db_exec(c,
                          "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < now() - "
                          "$1::int * interval '1 second'",
                          1, p, &r, e);
    if (rc)
        return rc;
    *deleted = db_result_affected(r);
    db_result_free(r);
    return ERR_OK;
}
