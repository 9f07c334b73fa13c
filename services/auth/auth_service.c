/* auth_service: the logic of auth.v1; see auth_service.h. Secrets (passwords, tokens, hashes)
 * never reach a log line or an error message here. */
#include "auth_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/log.h"

struct auth_service {
    auth_service_opts o;
    db_pool *db;
    auth_store *store;
    auth_hasher *hasher;
    const jwt_keyset *keys;
    auth_peers *peers;
};

#define BAD_LOGIN "invalid email or password"

auth_service *auth_service_new(const auth_service_opts *o, db_pool *db, auth_store *store,
                               auth_hasher *hasher, const jwt_keyset *keys, auth_peers *peers)
{
    auth_service *s = xcalloc(1, sizeof *s);
    s->o = *o;
    s->db = db;
    s->store = store;
    s->hasher = hasher;
    s->keys = keys;
    s->peers = peers;
    return s;
}

void auth_service_free(auth_service *s)
{
    free(s);
}

const jwt_keyset *auth_service_keys(const auth_service *s)
{
    return s->keys;
}

/* ---- helpers ---- */

static const log_ctx *log_of(const rpc_ctx *ctx)
{
    return ctx ? &ctx->log : NULL;
}

static err_code acquire(auth_service *s, const rpc_ctx *ctx, db_conn **c, err_info *e)
{
    int64_t dl = ctx && ctx->deadline_ms != INT64_MAX ? ctx->deadline_ms : 0;
    err_code rc = db_acquire(s->db, dl, c, e);
    if (rc == ERR_OK && ctx)
        db_set_log_ctx(*c, &ctx->log);
    return rc;
}

static int revoke_ttl(const auth_service *s)
{
    return s->o.access_ttl_s + s->o.leeway_s;
}

static void uuid4(char out[AUTH_UUID_LEN + 1])
{
    unsigned char b[16];
    randombytes_buf(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, AUTH_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

/* Hex SHA-256 of a refresh token: what the database keeps. */
static void refresh_hash(const char *token, char out[AUTH_TOKEN_HASH_HEX + 1])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)token, strlen(token));
    sodium_bin2hex(out, AUTH_TOKEN_HASH_HEX + 1, h, sizeof h);
}

/* 256 random bits, base64url without padding (43 chars), in a. */
static char *new_refresh(arena *a, char hash[AUTH_TOKEN_HASH_HEX + 1])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    char *tok = arena_alloc(
        a, sodium_base64_ENCODED_LEN(sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    sodium_bin2base64(
        tok, sodium_base64_ENCODED_LEN(sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING), raw,
        sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    refresh_hash(tok, hash);
    return tok;
}

static err_code issue_access(auth_service *s, arena *a, const char *user_id, const char *sid,
                             const char **out, err_info *e)
{
    jwt_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.iss, sizeof c.iss, "%s", s->o.issuer);
    snprintf(c.aud, sizeof c.aud, "%s", s->o.audience);
    snprintf(c.sub, sizeof c.sub, "%s", user_id);
    snprintf(c.sid, sizeof c.sid, "%s", sid);
    uuid4(c.jti);
    c.iat = (int64_t)time(NULL);
    c.exp = c.iat + s->o.access_ttl_s;
    char *tok = NULL;
    err_code rc = jwt_sign(s->keys, &c, &tok, e);
    if (rc)
        return rc;
    *out = arena_strdup(a, tok);
    sodium_memzero(tok, strlen(tok));
    free(tok);
    return ERR_OK;
}

/* Opens a session for user_id and issues its first pair. */
static err_code new_session(auth_service *s, rpc_ctx *ctx, const char *user_id, auth_tokens *t,
                            err_info *e)
{
    char hash[AUTH_TOKEN_HASH_HEX + 1];
    const char *refresh = new_refresh(ctx->arena, hash);
    db_conn *c = NULL;
    err_code rc = acquire(s, ctx, &c, e);
    if (rc)
        return rc;
    rc = auth_repo_session_create(c, user_id, hash, s->o.refresh_ttl_s, s->o.session_max_s,
                                  ctx->md.user_agent, ctx->md.client_ip, t->sid, e);
    db_release(s->db, c);
    if (rc)
        return rc;
    rc = issue_access(s, ctx->arena, user_id, t->sid, &t->access, e);
    if (rc)
        return rc;
    t->refresh = refresh;
    t->expires_in = s->o.access_ttl_s;
    t->refresh_expires_in =
        s->o.refresh_ttl_s < s->o.session_max_s ? s->o.refresh_ttl_s : s->o.session_max_s;
    return ERR_OK;
}

/* Ends sessions in Redis: their access tokens are denied from now on. */
static err_code deny_sids(auth_service *s, char **sids, size_t n, err_info *e)
{
    return auth_store_revoke_sids(s->store, (const char *const *)sids, n, revoke_ttl(s), e);
}

/* ---- register ---- */

/* The hash pool drops a queued job whose caller is gone (rpc_watch_cancel is on for calls that
 * hash: auth_rpc's heavy_enter). */
static bool caller_gone(const void *ctx)
{
    return ctx && rpc_ctx_cancelled(ctx);
}
#define CALLER(ctx) (&(auth_hasher_caller){caller_gone, (ctx)})

err_code auth_service_register(auth_service *s, rpc_ctx *ctx, const char *email, const char *pw,
                               const char *display_name, User__V1__User **user, auth_tokens *t,
                               err_info *e)
{
    /* Hash first: a busy pool then refuses before anything was created. */
    char hash[AUTH_HASH_MAX];
    err_code rc = auth_hasher_hash(s->hasher, CALLER(ctx), pw, hash, e);
    if (rc)
        return rc;
    User__V1__User *u = NULL;
    rc = auth_peers_create_user(s->peers, ctx, ctx->arena, email, display_name, &u, e);
    if (rc) {
        sodium_memzero(hash, sizeof hash);
        return rc;
    }
    const char *step = "credential";
    db_conn *c = NULL;
    rc = acquire(s, ctx, &c, e);
    if (!rc) {
        rc = auth_repo_credential_put(c, u->id, hash, e);
        db_release(s->db, c);
    }
    sodium_memzero(hash, sizeof hash);
    bool have_cred = rc == ERR_OK, have_role = false;
    if (!rc) {
        step = "role";
        rc = auth_peers_assign_role(s->peers, ctx, u->id, "user", e);
        have_role = rc == ERR_OK;
    }
    if (!rc) {
        step = "session";
        rc = new_session(s, ctx, u->id, t, e);
    }
    if (rc == ERR_OK) {
        *user = u;
        log_info(log_of(ctx), "registered user %s", u->id);
        return ERR_OK;
    }

    /* Compensate in reverse order; keep the original error for the caller. */
    err_info orig = *e;
    err_info ce;
    log_warn(log_of(ctx), "register of %s failed at %s (%s: %s); compensating", u->id, step,
             err_str(orig.code), orig.msg);
    if (have_role) {
        err_clear(&ce);
        if (auth_peers_revoke_role(s->peers, ctx, u->id, "user", &ce))
            log_error(log_of(ctx), "register compensation: revoke role of %s: %s", u->id, ce.msg);
    }
    if (have_cred) {
        err_clear(&ce);
        db_conn *c2 = NULL;
        if (acquire(s, NULL, &c2, &ce) == ERR_OK) {
            if (auth_repo_credential_delete(c2, u->id, &ce))
                log_error(log_of(ctx), "register compensation: delete credential of %s: %s", u->id,
                          ce.msg);
            db_release(s->db, c2);
        } else {
            log_error(log_of(ctx), "register compensation: delete credential of %s: %s", u->id,
                      ce.msg);
        }
    }
    err_clear(&ce);
    if (auth_peers_delete_user(s->peers, ctx, u->id, &ce) != ERR_OK)
        log_error(log_of(ctx), "register compensation: delete user %s: %s (%s)", u->id,
                  err_str(ce.code), ce.msg);
    *e = orig;
    /* A peer that is down is the caller's UNAVAILABLE; anything else from a step is ours. */
    if (rc != ERR_UNAVAILABLE && rc != ERR_DEADLINE_EXCEEDED && rc != ERR_RESOURCE_EXHAUSTED &&
        rc != ERR_CANCELLED)
        return err_set(e, ERR_INTERNAL, "register failed at %s: %s", step, orig.msg);
    return rc;
}

/* ---- login ---- */

err_code auth_service_login(auth_service *s, rpc_ctx *ctx, const char *email, const char *pw,
                            auth_tokens *t, err_info *e)
{
    long fails = 0;
    int ttl = 0;
    err_code rc = auth_store_login_failures(s->store, email, s->o.login_window_s, &fails, &ttl, e);
    if (rc) {
        /* Without the counters brute force is unbounded: fail closed. */
        log_warn(log_of(ctx), "login: lockout counters unavailable: %s", e->msg);
        e->retry_after_s = 1;
        return err_set(e, ERR_UNAVAILABLE, "login temporarily unavailable");
    }
    if (fails >= s->o.login_max_failures) {
        err_set(e, ERR_RESOURCE_EXHAUSTED, "too many failed logins; retry in %d s", ttl);
        e->retry_after_s = ttl;
        return ERR_RESOURCE_EXHAUSTED;
    }

    User__V1__User *u = NULL;
    rc = auth_peers_get_user_by_email(s->peers, ctx, ctx->arena, email, &u, e);
    if (rc == ERR_NOT_FOUND || rc == ERR_INVALID_ARGUMENT) {
        u = NULL;
        err_clear(e);
    } else if (rc) {
        return rc;
    }
    char *hash = NULL;
    if (u) {
        db_conn *c = NULL;
        rc = acquire(s, ctx, &c, e);
        if (rc)
            return rc;
        rc = auth_repo_credential_get(c, u->id, ctx->arena, &hash, e);
        db_release(s->db, c);
        if (rc == ERR_NOT_FOUND) {
            hash = NULL;
            err_clear(e);
        } else if (rc) {
            return rc;
        }
    }
    /* Always one verification: the dummy hash for unknown accounts, so timing says nothing. */
    bool match = false, rehash = false;
    rc = auth_hasher_verify(s->hasher, CALLER(ctx), hash, pw, &match, &rehash, e);
    if (rc)
        return rc;
    bool ok = match && u && u->status == USER__V1__USER_STATUS__USER_STATUS_ACTIVE;
    if (!ok) {
        long n = 0;
        err_info se;
        err_clear(&se);
        if (auth_store_login_failed(s->store, email, s->o.login_window_s, &n, &se))
            log_warn(log_of(ctx), "login: cannot count failure: %s", se.msg);
        log_info(log_of(ctx), "login failed (%ld in window)%s", n,
                 u && match ? ": account disabled" : "");
        return err_set(e, ERR_UNAUTHENTICATED, BAD_LOGIN);
    }
    err_info se;
    err_clear(&se);
    if (fails > 0 && auth_store_login_reset(s->store, email, &se))
        log_warn(log_of(ctx), "login: cannot reset failures: %s", se.msg);

    if (rehash) {
        /* Parameters were raised since this hash was made: upgrade it now that we know pw. A busy
         * pool just postpones it to a later login. */
        char nh[AUTH_HASH_MAX];
        err_clear(&se);
        if (auth_hasher_hash(s->hasher, NULL, pw, nh, &se) == ERR_OK) {
            db_conn *c = NULL;
            if (acquire(s, ctx, &c, &se) == ERR_OK) {
                if (auth_repo_credential_rehash(c, u->id, hash, nh, &se) == ERR_OK)
                    log_info(log_of(ctx), "password hash of %s upgraded", u->id);
                db_release(s->db, c);
            }
            sodium_memzero(nh, sizeof nh);
        }
    }
    rc = new_session(s, ctx, u->id, t, e);
    if (rc == ERR_OK)
        log_info(log_of(ctx), "login of %s, session %s", u->id, t->sid);
    return rc;
}

/* ---- refresh ---- */

static void revoke_session_bg(auth_service *s, const rpc_ctx *ctx, const char *sid,
                              const char *reason)
{
    err_info e;
    err_clear(&e);
    db_conn *c = NULL;
    if (acquire(s, ctx, &c, &e) == ERR_OK) {
        auth_repo_session_revoke(c, sid, NULL, reason, &e);
        db_release(s->db, c);
    }
    char *sids[] = {(char *)sid};
    err_clear(&e);
    if (deny_sids(s, sids, 1, &e))
        log_warn(log_of(ctx), "cannot deny session %s in redis: %s", sid, e.msg);
}

err_code auth_service_refresh(auth_service *s, rpc_ctx *ctx, const char *refresh, auth_tokens *t,
                              err_info *e)
{
    char hash[AUTH_TOKEN_HASH_HEX + 1], sid[AUTH_UUID_LEN + 1], uid[AUTH_UUID_LEN + 1];
    refresh_hash(refresh, hash);
    db_conn *c = NULL;
    err_code rc = acquire(s, ctx, &c, e);
    if (rc)
        return rc;
    rc = auth_repo_token_session(c, hash, sid, uid, e);
    db_release(s->db, c);
    if (rc == ERR_NOT_FOUND)
        return err_set(e, ERR_UNAUTHENTICATED, "invalid refresh token");
    if (rc)
        return rc;

    /* The account must still be usable (not deleted, not disabled). */
    User__V1__User *u = NULL;
    rc = auth_peers_get_user(s->peers, ctx, ctx->arena, uid, &u, e);
    if (rc == ERR_NOT_FOUND) {
        revoke_session_bg(s, ctx, sid, "user_deleted");
        return err_set(e, ERR_UNAUTHENTICATED, "invalid refresh token");
    }
    if (rc)
        return rc;
    if (u->status != USER__V1__USER_STATUS__USER_STATUS_ACTIVE)
        return err_set(e, ERR_UNAUTHENTICATED, "account disabled");

    rc = acquire(s, ctx, &c, e);
    if (rc)
        return rc;
    auth_session_lock st;
    rc = db_begin(c, e);
    if (!rc)
        rc = auth_repo_session_lock(c, sid, hash, &st, e);
    if (rc) {
        db_release(s->db, c);
        return rc == ERR_NOT_FOUND ? err_set(e, ERR_UNAUTHENTICATED, "invalid refresh token") : rc;
    }
    if (st.revoked) {
        db_release(s->db, c); /* rolls back */
        return err_set(e, ERR_UNAUTHENTICATED, "session revoked");
    }
    if (st.token_rotated) {
        /* Reuse of a rotated token: someone holds a copy. Kill the whole family. */
        rc = auth_repo_session_revoke(c, sid, NULL, "refresh_reuse", e);
        if (!rc)
            rc = db_commit(c, e);
        db_release(s->db, c);
        if (rc)
            return rc;
        log_warn(log_of(ctx), "refresh token reuse on session %s (user %s): session revoked", sid,
                 uid);
        char *sids[] = {sid};
        err_info se;
        err_clear(&se);
        if (deny_sids(s, sids, 1, &se))
            return err_set(e, ERR_UNAVAILABLE, "cannot revoke session: %s", se.msg);
        return err_set(e, ERR_UNAUTHENTICATED, "refresh token reused; session revoked");
    }
    if (st.expired) {
        db_release(s->db, c);
        return err_set(e, ERR_UNAUTHENTICATED, "session expired");
    }
    char nhash[AUTH_TOKEN_HASH_HEX + 1];
    const char *nref = new_refresh(ctx->arena, nhash);
    int ttl = 0;
    rc = auth_repo_session_rotate(c, sid, hash, nhash, s->o.refresh_ttl_s, &ttl, e);
    if (!rc)
        rc = db_commit(c, e);
    db_release(s->db, c);
    if (rc)
        return rc;
    memcpy(t->sid, sid, sizeof sid);
    rc = issue_access(s, ctx->arena, uid, sid, &t->access, e);
    if (rc)
        return rc;
    t->refresh = nref;
    t->expires_in = s->o.access_ttl_s;
    t->refresh_expires_in = ttl;
    return ERR_OK;
}

/* ---- logout, revocation ---- */

err_code auth_service_logout(auth_service *s, rpc_ctx *ctx, const char *refresh, const char *jti,
                             const char *session_id, const char *user_id, err_info *e)
{
    char sid[AUTH_UUID_LEN + 1] = "";
    const char *owner = *user_id ? user_id : NULL;
    db_conn *c = NULL;
    err_code rc;
    if (*refresh) {
        char hash[AUTH_TOKEN_HASH_HEX + 1], uid[AUTH_UUID_LEN + 1];
        refresh_hash(refresh, hash);
        rc = acquire(s, ctx, &c, e);
        if (rc)
            return rc;
        rc = auth_repo_token_session(c, hash, sid, uid, e);
        db_release(s->db, c);
        if (rc == ERR_NOT_FOUND) {
            sid[0] = 0; /* RFC 7009 §2.2: an unknown token is not an error */
            err_clear(e);
        } else if (rc) {
            return rc;
        } else if (owner && strcmp(owner, uid) != 0) {
            return err_set(e, ERR_NOT_FOUND, "session not found");
        }
        if (*session_id && sid[0] && strcmp(session_id, sid) != 0)
            return err_set(e, ERR_NOT_FOUND, "session not found");
    }
    if (!sid[0] && *session_id)
        snprintf(sid, sizeof sid, "%s", session_id);
    if (sid[0]) {
        rc = acquire(s, ctx, &c, e);
        if (rc)
            return rc;
        rc = auth_repo_session_revoke(c, sid, owner, "logout", e);
        db_release(s->db, c);
        if (rc)
            return rc;
        char *sids[] = {sid};
        rc = deny_sids(s, sids, 1, e);
        if (rc)
            return rc;
    }
    if (*jti) {
        rc = auth_store_revoke_jti(s->store, jti, revoke_ttl(s), e);
        if (rc)
            return rc;
    }
    log_info(log_of(ctx), "logout%s%s", sid[0] ? " of session " : "", sid);
    return ERR_OK;
}

err_code auth_service_logout_all(auth_service *s, rpc_ctx *ctx, const char *user_id, err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, ctx, &c, e);
    if (rc)
        return rc;
    char **sids = NULL;
    size_t n = 0;
    rc = auth_repo_sessions_revoke_user(c, user_id, NULL, "logout_all", ctx->arena, &sids, &n, e);
    db_release(s->db, c);
    if (rc)
        return rc;
    rc = auth_store_revoke_before(s->store, user_id, (int64_t)time(NULL), revoke_ttl(s), e);
    if (!rc)
        rc = deny_sids(s, sids, n, e);
    if (!rc)
        log_info(log_of(ctx), "logout-all of %s: %zu sessions", user_id, n);
    return rc;
}

err_code auth_service_change_password(auth_service *s, rpc_ctx *ctx, const char *user_id,
                                      const char *current, const char *new_pw, const char *keep_sid,
                                      err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, ctx, &c, e);
    if (rc)
        return rc;
    char *old = NULL;
    rc = auth_repo_credential_get(c, user_id, ctx->arena, &old, e);
    db_release(s->db, c);
    if (rc == ERR_NOT_FOUND) {
        old = NULL;
        err_clear(e);
    } else if (rc) {
        return rc;
    }
    bool match = false;
    rc = auth_hasher_verify(s->hasher, CALLER(ctx), old, current, &match, NULL, e);
    if (rc)
        return rc;
    if (!match)
        return err_violation_add(e, "current_password", "is incorrect");
    char nh[AUTH_HASH_MAX];
    rc = auth_hasher_hash(s->hasher, CALLER(ctx), new_pw, nh, e);
    if (rc)
        return rc;
    char **sids = NULL;
    size_t n = 0;
    rc = acquire(s, ctx, &c, e);
    if (rc) {
        sodium_memzero(nh, sizeof nh);
        return rc;
    }
    rc = db_begin(c, e);
    if (!rc)
        rc = auth_repo_credential_put(c, user_id, nh, e);
    if (!rc)
        rc = auth_repo_sessions_revoke_user(c, user_id, *keep_sid ? keep_sid : NULL,
                                            "password_changed", ctx->arena, &sids, &n, e);
    if (!rc)
        rc = db_commit(c, e);
    db_release(s->db, c);
    sodium_memzero(nh, sizeof nh);
    if (rc)
        return rc;
    rc = deny_sids(s, sids, n, e);
    if (!rc)
        log_info(log_of(ctx), "password of %s changed; %zu other sessions ended", user_id, n);
    return rc;
}

err_code auth_service_list_sessions(auth_service *s, rpc_ctx *ctx, const char *user_id,
                                    auth_session_rec **out, size_t *n, err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, ctx, &c, e);
    if (rc)
        return rc;
    rc = auth_repo_sessions_list(c, user_id, ctx->arena, out, n, e);
    db_release(s->db, c);
    return rc;
}

err_code auth_service_revoke_session(auth_service *s, rpc_ctx *ctx, const char *sid,
                                     const char *user_id, err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, ctx, &c, e);
    if (rc)
        return rc;
    rc = auth_repo_session_revoke(c, sid, *user_id ? user_id : NULL, "revoked", e);
    db_release(s->db, c);
    if (rc)
        return rc;
    char *sids[] = {(char *)sid};
    return deny_sids(s, sids, 1, e);
}

err_code auth_service_validate(auth_service *s, const char *token, jwt_claims *out, err_info *e)
{
    jwt_verify_opts o = {.iss = s->o.issuer, .aud = s->o.audience, .leeway_s = s->o.leeway_s};
    jwt_claims c;
    err_code rc = jwt_verify(s->keys, token, &o, &c, e);
    if (rc == ERR_NOT_FOUND)
        return err_set(e, ERR_UNAUTHENTICATED, "token signed by an unknown key");
    if (rc)
        return rc;
    bool revoked = true;
    rc = auth_store_is_revoked(s->store, c.jti, c.sid, c.sub, c.iat, &revoked, e);
    if (rc) {
        e->retry_after_s = 1;
        return err_set(e, ERR_UNAVAILABLE, "revocation check unavailable");
    }
    if (revoked)
        return err_set(e, ERR_UNAUTHENTICATED, "token revoked");
    *out = c;
    return ERR_OK;
}

/* ---- background ---- */

err_code auth_service_user_deleted(auth_service *s, const char *user_id, const log_ctx *log,
                                   err_info *e)
{
    arena *a = arena_new(0);
    db_conn *c = NULL;
    err_code rc = acquire(s, NULL, &c, e);
    char **sids = NULL;
    size_t n = 0;
    if (!rc) {
        db_set_log_ctx(c, log);
        rc = db_begin(c, e);
        if (!rc)
            rc = auth_repo_sessions_revoke_user(c, user_id, NULL, "user_deleted", a, &sids, &n, e);
        if (!rc)
            rc = auth_repo_credential_delete(c, user_id, e);
        if (!rc)
            rc = db_commit(c, e);
        db_release(s->db, c);
    }
    if (!rc)
        rc = auth_store_revoke_before(s->store, user_id, (int64_t)time(NULL), revoke_ttl(s), e);
    if (!rc)
        rc = deny_sids(s, sids, n, e);
    if (!rc)
        log_info(log, "user %s deleted: %zu sessions revoked", user_id, n);
    arena_free(a);
    return rc;
}

err_code auth_service_bootstrap_admin(auth_service *s, const char *email, const char *pw,
                                      err_info *e)
{
    arena *a = arena_new(0);
    User__V1__User *u = NULL;
    err_code rc = auth_peers_get_user_by_email(s->peers, NULL, a, email, &u, e);
    if (rc == ERR_NOT_FOUND) {
        err_clear(e);
        rc = auth_peers_create_user(s->peers, NULL, a, email, "Administrator", &u, e);
        if (rc == ERR_ALREADY_EXISTS) { /* another replica won the race */
            err_clear(e);
            rc = auth_peers_get_user_by_email(s->peers, NULL, a, email, &u, e);
        }
        if (rc == ERR_OK)
            log_info(NULL, "bootstrap: created admin account %s", u->id);
    }
    if (rc)
        goto done;
    db_conn *c = NULL;
    char *hash = NULL;
    rc = acquire(s, NULL, &c, e);
    if (rc)
        goto done;
    rc = auth_repo_credential_get(c, u->id, a, &hash, e);
    db_release(s->db, c);
    if (rc == ERR_NOT_FOUND) {
        /* Only when it has none: an admin who changed the password keeps it. */
        err_clear(e);
        char nh[AUTH_HASH_MAX];
        rc = auth_hasher_hash(s->hasher, NULL, pw, nh, e);
        if (!rc)
            rc = acquire(s, NULL, &c, e);
        if (!rc) {
            rc = auth_repo_credential_put(c, u->id, nh, e);
            db_release(s->db, c);
        }
        sodium_memzero(nh, sizeof nh);
    }
    if (rc)
        goto done;
    rc = auth_peers_assign_role(s->peers, NULL, u->id, "admin", e);
    if (rc == ERR_OK)
        log_info(NULL, "bootstrap: admin account %s ready", u->id);
done:
    arena_free(a);
    return rc;
}
