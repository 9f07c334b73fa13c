/* auth_service: the logic of auth.v1 (register saga, login with lockout, rotating refresh tokens,
 * revocation, sessions, token validation). It owns no I/O of its own: the database through
 * auth_repo, Redis through auth_store, hashing through auth_hasher, peers through auth_peers. */
#ifndef AUTH_SERVICE_H
#define AUTH_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth_hasher.h"
#include "auth_peers.h"
#include "auth_repo.h"
#include "auth_store.h"
#include "common/db.h"
#include "common/jwt.h"
#include "common/rpc_server.h"

typedef struct auth_service_opts {
    const char *issuer, *audience;
    int leeway_s;
    int access_ttl_s, refresh_ttl_s, session_max_s;
    int login_max_failures, login_window_s;
} auth_service_opts;

typedef struct auth_service auth_service;

/* Everything borrowed; opts strings too. */
auth_service *auth_service_new(const auth_service_opts *o, db_pool *db, auth_store *store,
                               auth_hasher *hasher, const jwt_keyset *keys, auth_peers *peers);
void auth_service_free(auth_service *s);
const jwt_keyset *auth_service_keys(const auth_service *s);

/* A freshly issued pair (strings in the call's arena). */
typedef struct auth_tokens {
    const char *access, *refresh;
    int expires_in, refresh_expires_in;
    char sid[AUTH_UUID_LEN + 1];
} auth_tokens;

/* Inputs are validated by the rpc layer (email normalised, password 8-128 chars). ctx gives the
 * arena, deadline, metadata (user agent, client ip) and the parent for peer calls. */
err_code auth_service_register(auth_service *s, rpc_ctx *ctx, const char *email, const char *pw,
                               const char *display_name, User__V1__User **user, auth_tokens *t,
                               err_info *e);
err_code auth_service_login(auth_service *s, rpc_ctx *ctx, const char *email, const char *pw,
                            auth_tokens *t, err_info *e);
err_code auth_service_refresh(auth_service *s, rpc_ctx *ctx, const char *refresh, auth_tokens *t,
                              err_info *e);
/* refresh/session_id/jti/user_id: "" when absent. */
err_code auth_service_logout(auth_service *s, rpc_ctx *ctx, const char *refresh, const char *jti,
                             const char *session_id, const char *user_id, err_info *e);
err_code auth_service_logout_all(auth_service *s, rpc_ctx *ctx, const char *user_id, err_info *e);
err_code auth_service_change_password(auth_service *s, rpc_ctx *ctx, const char *user_id,
                                      const char *current, const char *new_pw, const char *keep_sid,
                                      err_info *e);
err_code auth_service_list_sessions(auth_service *s, rpc_ctx *ctx, const char *user_id,
                                    auth_session_rec **out, size_t *n, err_info *e);
err_code auth_service_revoke_session(auth_service *s, rpc_ctx *ctx, const char *sid,
                                     const char *user_id, err_info *e);
/* Signature, claims and revocation (fail closed: Redis down → UNAVAILABLE). */
err_code auth_service_validate(auth_service *s, const char *token, jwt_claims *out, err_info *e);

/* Background work (no rpc ctx). */
/* user.deleted: revoke every session of the user and deny their access tokens. Idempotent. */
err_code auth_service_user_deleted(auth_service *s, const char *user_id, const log_ctx *log,
                                   err_info *e);
/* Bootstrap: make sure email exists with a credential (pw, only if it has none) and role admin. */
err_code auth_service_bootstrap_admin(auth_service *s, const char *email, const char *pw,
                                      err_info *e);

#endif
