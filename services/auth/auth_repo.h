/* auth_repo: the SQL of the auth schema (credentials, sessions, refresh_tokens), one function per
 * statement, all parameterised. Functions taking a db_conn run inside the caller's transaction. */
#ifndef AUTH_REPO_H
#define AUTH_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/db.h"
#include "common/err.h"
#include "common/mem.h"

#define AUTH_UUID_LEN 36
#define AUTH_TOKEN_HASH_HEX 64

typedef struct auth_session_rec {
    char id[AUTH_UUID_LEN + 1];
    char user_id[AUTH_UUID_LEN + 1];
    int64_t create_us, last_used_us, expire_us; /* unix microseconds */
    const char *user_agent, *ip;                /* in the caller's arena */
} auth_session_rec;

/* Credentials. get: ERR_NOT_FOUND when the user has none; *hash in a. */
err_code auth_repo_credential_get(db_conn *c, const char *user_id, arena *a, char **hash,
                                  err_info *e);
/* Insert or replace. */
err_code auth_repo_credential_put(db_conn *c, const char *user_id, const char *hash, err_info *e);
/* Replaces the hash only if it is still `old` (a concurrent password change wins). */
err_code auth_repo_credential_rehash(db_conn *c, const char *user_id, const char *old,
                                     const char *hash, err_info *e);
err_code auth_repo_credential_delete(db_conn *c, const char *user_id, err_info *e);

/* New session with its first refresh token (hash hex), in one statement; *sid gets the id. */
err_code auth_repo_session_create(db_conn *c, const char *user_id, const char *refresh_hash,
                                  int refresh_ttl_s, int max_lifetime_s, const char *user_agent,
                                  const char *ip, char sid[AUTH_UUID_LEN + 1], err_info *e);

/* Session (and user) of a refresh token hash, rotated or not. ERR_NOT_FOUND when unknown. */
err_code auth_repo_token_session(db_conn *c, const char *refresh_hash, char sid[AUTH_UUID_LEN + 1],
                                 char user_id[AUTH_UUID_LEN + 1], err_info *e);

/* State of a session locked FOR UPDATE (the refresh critical section). */
typedef struct auth_session_lock {
    bool revoked, expired;
    bool token_rotated; /* the presented token is no longer the current one */
    int64_t absolute_left_s;
} auth_session_lock;
err_code auth_repo_session_lock(db_conn *c, const char *sid, const char *refresh_hash,
                                auth_session_lock *out, err_info *e);
/* Marks old rotated, inserts new, slides the expiry (capped by the absolute lifetime). *ttl_s =
 * seconds the new refresh token lives. */
err_code auth_repo_session_rotate(db_conn *c, const char *sid, const char *old_hash,
                                  const char *new_hash, int refresh_ttl_s, int *ttl_s, err_info *e);

/* Revoke one session (idempotent). *owner gets its user id; ERR_NOT_FOUND when there is no such
 * session, or when user_id is non-NULL and not its owner. */
err_code auth_repo_session_revoke(db_conn *c, const char *sid, const char *user_id,
                                  const char *reason, err_info *e);
/* Revoke every active session of the user except keep_sid (NULL = none). *sids (in a) get the ids
 * revoked now. */
err_code auth_repo_sessions_revoke_user(db_conn *c, const char *user_id, const char *keep_sid,
                                        const char *reason, arena *a, char ***sids, size_t *n,
                                        err_info *e);
/* Active sessions (not revoked, not expired), most recently used first. */
err_code auth_repo_sessions_list(db_conn *c, const char *user_id, arena *a, auth_session_rec **out,
                                 size_t *n, err_info *e);

#endif
