/* auth_repo: SQL statements of the auth schema; see auth_repo.h. */
#include "auth_repo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void copy_id(char dst[AUTH_UUID_LEN + 1], const char *src)
{
    snprintf(dst, AUTH_UUID_LEN + 1, "%s", src);
}

err_code auth_repo_credential_get(db_conn *c, const char *user_id, arena *a, char **hash,
                                  err_info *e)
{
    const char *p[] = {user_id};
    db_result *r = NULL;
    err_code rc =
        db_exec(c, "SELECT password_hash FROM credentials WHERE user_id = $1", 1, p, &r, e);
    if (rc)
        return rc;
    if (db_result_rows(r) == 0) {
        db_result_free(r);
        return err_set(e, ERR_NOT_FOUND, "no credential");
    }
    *hash = arena_strdup(a, db_result_get(r, 0, 0));
    db_result_free(r);
    return ERR_OK;
}

err_code auth_repo_credential_put(db_conn *c, const char *user_id, const char *hash, err_info *e)
{
    const char *p[] = {user_id, hash};
    return db_exec(c,
                   "INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2) "
                   "ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, "
                   "update_time = now()",
                   2, p, NULL, e);
}

err_code auth_repo_credential_rehash(db_conn *c, const char *user_id, const char *old,
                                     const char *hash, err_info *e)
{
    const char *p[] = {user_id, old, hash};
    return db_exec(c,
                   "UPDATE credentials SET password_hash = $3, update_time = now() "
                   "WHERE user_id = $1 AND password_hash = $2",
                   3, p, NULL, e);
}

err_code auth_repo_credential_delete(db_conn *c, const char *user_id, err_info *e)
{
    const char *p[] = {user_id};
    return db_exec(c, "DELETE FROM credentials WHERE user_id = $1", 1, p, NULL, e);
}

err_code auth_repo_session_create(db_conn *c, const char *user_id, const char *refresh_hash,
                                  int refresh_ttl_s, int max_lifetime_s, const char *user_agent,
                                  const char *ip, char sid[AUTH_UUID_LEN + 1], err_info *e)
{
    char ttl[16], max[16];
    snprintf(ttl, sizeof ttl, "%d", refresh_ttl_s);
    snprintf(max, sizeof max, "%d", max_lifetime_s);
    const char *p[] = {user_id, ttl, max, user_agent ? user_agent : "", ip ? ip : "", refresh_hash};
    db_result *r = NULL;
    /* One statement (atomic on its own): the session and its first refresh token. */
    err_code rc = db_exec(
        c,
        "WITH s AS (INSERT INTO sessions (user_id, expire_time, absolute_expire_time, user_agent, "
        "ip) VALUES ($1, now() + least($2::int, $3::int) * interval '1 second', "
        "now() + $3::int * interval '1 second', left($4, 512), left($5, 64)) RETURNING id) "
        "INSERT INTO refresh_tokens (hash, session_id) SELECT $6, id FROM s RETURNING session_id",
        6, p, &r, e);
    if (rc)
        return rc;
    copy_id(sid, db_result_get(r, 0, 0));
    db_result_free(r);
    return ERR_OK;
}

err_code auth_repo_token_session(db_conn *c, const char *refresh_hash, char sid[AUTH_UUID_LEN + 1],
                                 char user_id[AUTH_UUID_LEN + 1], err_info *e)
{
    const char *p[] = {refresh_hash};
    db_result *r = NULL;
    err_code rc = db_exec(c,
                          "SELECT s.id, s.user_id FROM refresh_tokens t "
                          "JOIN sessions s ON s.id = t.session_id WHERE t.hash = $1",
                          1, p, &r, e);
    if (rc)
        return rc;
    if (db_result_rows(r) == 0) {
        db_result_free(r);
        return err_set(e, ERR_NOT_FOUND, "unknown refresh token");
    }
    copy_id(sid, db_result_get(r, 0, 0));
    copy_id(user_id, db_result_get(r, 0, 1));
    db_result_free(r);
    return ERR_OK;
}

err_code auth_repo_session_lock(db_conn *c, const char *sid, const char *refresh_hash,
                                auth_session_lock *out, err_info *e)
{
    const char *p[] = {sid};
    db_result *r = NULL;
    err_code rc = db_exec(c,
                          "SELECT revoked_time IS NOT NULL, "
                          "expire_time <= now() OR absolute_expire_time <= now(), "
                          "floor(extract(epoch FROM absolute_expire_time - now()))::bigint "
                          "FROM sessions WHERE id = $1 FOR UPDATE",
                          1, p, &r, e);
    if (rc)
        return rc;
    if (db_result_rows(r) == 0) {
        db_result_free(r);
        return err_set(e, ERR_NOT_FOUND, "no such session");
    }
    out->revoked = strcmp(db_result_get(r, 0, 0), "t") == 0;
    out->expired = strcmp(db_result_get(r, 0, 1), "t") == 0;
    out->absolute_left_s = strtoll(db_result_get(r, 0, 2), NULL, 10);
    db_result_free(r);
    /* Read the token's state only now, under the row lock: a concurrent refresh that rotated it
     * has committed before we got the lock, and READ COMMITTED shows us its write. */
    const char *p2[] = {refresh_hash};
    rc = db_exec(c, "SELECT rotated_time IS NOT NULL FROM refresh_tokens WHERE hash = $1", 1, p2,
                 &r, e);
    if (rc)
        return rc;
    out->token_rotated = db_result_rows(r) == 0 || strcmp(db_result_get(r, 0, 0), "t") == 0;
    db_result_free(r);
    return ERR_OK;
}

err_code auth_repo_session_rotate(db_conn *c, const char *sid, const char *old_hash,
                                  const char *new_hash, int refresh_ttl_s, int *ttl_s, err_info *e)
{
    const char *p1[] = {old_hash};
    err_code rc = db_exec(c, "UPDATE refresh_tokens SET rotated_time = now() WHERE hash = $1", 1,
                          p1, NULL, e);
    if (rc)
        return rc;
    const char *p2[] = {new_hash, sid};
    rc =
        db_exec(c, "INSERT INTO refresh_tokens (hash, session_id) VALUES ($1, $2)", 2, p2, NULL, e);
    if (rc)
        return rc;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", refresh_ttl_s);
    const char *p3[] = {sid, ttl};
    db_result *r = NULL;
    rc = db_exec(c,
                 "UPDATE sessions SET last_used_time = now(), expire_time = least(now() + "
                 "$2::int * interval '1 second', absolute_expire_time) WHERE id = $1 "
                 "RETURNING greatest(1, floor(extract(epoch FROM expire_time - now())))::bigint",
                 2, p3, &r, e);
    if (rc)
        return rc;
    *ttl_s = db_result_rows(r) ? (int)strtol(db_result_get(r, 0, 0), NULL, 10) : refresh_ttl_s;
    db_result_free(r);
    return ERR_OK;
}

err_code auth_repo_session_revoke(db_conn *c, const char *sid, const char *user_id,
                                  const char *reason, err_info *e)
{
    const char *p[] = {sid, user_id, reason};
    db_result *r = NULL;
    err_code rc = db_exec(c,
                          "WITH s AS (SELECT id FROM sessions WHERE id = $1 "
                          "AND ($2::uuid IS NULL OR user_id = $2::uuid)) "
                          "UPDATE sessions SET revoked_time = coalesce(revoked_time, now()), "
                          "revoke_reason = coalesce(revoke_reason, $3) "
                          "WHERE id IN (SELECT id FROM s) RETURNING id",
                          3, p, &r, e);
    if (rc)
        return rc;
    int n = db_result_rows(r);
    db_result_free(r);
    if (n == 0)
        return err_set(e, ERR_NOT_FOUND, "session not found");
    return ERR_OK;
}

err_code auth_repo_sessions_revoke_user(db_conn *c, const char *user_id, const char *keep_sid,
                                        const char *reason, arena *a, char ***sids, size_t *n,
                                        err_info *e)
{
    const char *p[] = {user_id, keep_sid, reason};
    db_result *r = NULL;
    err_code rc = db_exec(c,
                          "UPDATE sessions SET revoked_time = now(), revoke_reason = $3 "
                          "WHERE user_id = $1 AND revoked_time IS NULL "
                          "AND ($2::uuid IS NULL OR id <> $2::uuid) RETURNING id",
                          3, p, &r, e);
    if (rc)
        return rc;
    size_t rows = (size_t)db_result_rows(r);
    char **out = arena_alloc(a, sizeof *out * (rows ? rows : 1));
    for (size_t i = 0; i < rows; i++)
        out[i] = arena_strdup(a, db_result_get(r, (int)i, 0));
    db_result_free(r);
    *sids = out;
    *n = rows;
    return ERR_OK;
}

err_code auth_repo_sessions_list(db_conn *c, const char *user_id, arena *a, auth_session_rec **out,
                                 size_t *n, err_info *e)
{
    const char *p[] = {user_id};
    db_result *r = NULL;
    err_code rc =
        db_exec(c,
                "SELECT id, user_id, (extract(epoch FROM create_time) * 1000000)::bigint, "
                "(extract(epoch FROM last_used_time) * 1000000)::bigint, "
                "(extract(epoch FROM expire_time) * 1000000)::bigint, user_agent, ip FROM sessions "
                "WHERE user_id = $1 AND revoked_time IS NULL AND expire_time > now() "
                "AND absolute_expire_time > now() ORDER BY last_used_time DESC, id LIMIT 1000",
                1, p, &r, e);
    if (rc)
        return rc;
    size_t rows = (size_t)db_result_rows(r);
    auth_session_rec *recs = arena_alloc(a, sizeof *recs * (rows ? rows : 1));
    for (size_t i = 0; i < rows; i++) {
        int row = (int)i;
        copy_id(recs[i].id, db_result_get(r, row, 0));
        copy_id(recs[i].user_id, db_result_get(r, row, 1));
        recs[i].create_us = strtoll(db_result_get(r, row, 2), NULL, 10);
        recs[i].last_used_us = strtoll(db_result_get(r, row, 3), NULL, 10);
        recs[i].expire_us = strtoll(db_result_get(r, row, 4), NULL, 10);
        recs[i].user_agent = arena_strdup(a, db_result_get(r, row, 5));
        recs[i].ip = arena_strdup(a, db_result_get(r, row, 6));
    }
    db_result_free(r);
    *out = recs;
    *n = rows;
    return ERR_OK;
}
