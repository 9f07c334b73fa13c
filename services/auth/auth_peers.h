/* auth_peers: auth's calls to the user and permission services through rpc_client (its circuit
 * breaker answers UNAVAILABLE at once while open; idempotent reads are retried within a budget). */
#ifndef AUTH_PEERS_H
#define AUTH_PEERS_H

#include "common/err.h"
#include "common/mem.h"
#include "common/metrics.h"
#include "common/rpc_server.h"
#include "user/v1/user.pb-c.h"

typedef struct auth_peers auth_peers;

typedef struct auth_peers_opts {
    const char *user_addr;       /* USER_SERVICE_ADDR */
    const char *permission_addr; /* PERMISSION_SERVICE_ADDR */
    int timeout_ms;              /* per call without a caller deadline */
} auth_peers_opts;

/* m: the service's registry for client metrics (circuit_breaker_state{target}...), NULL = none.
 * The breaker/retry policy is read from the environment (rpc_client_policy_load). */
auth_peers *auth_peers_new(const auth_peers_opts *o, metrics_registry *m, err_info *e);
void auth_peers_free(auth_peers *p);

/* parent: the server call we serve (deadline, cancellation and metadata pass on), or NULL for
 * background work (own deadline). Results are unpacked into a. Errors are the peer's status;
 * UNAVAILABLE when it is down or its breaker is open. */
err_code auth_peers_create_user(auth_peers *p, const rpc_ctx *parent, arena *a, const char *email,
                                const char *display_name, User__V1__User **out, err_info *e);
err_code auth_peers_get_user(auth_peers *p, const rpc_ctx *parent, arena *a, const char *id,
                             User__V1__User **out, err_info *e);
err_code auth_peers_get_user_by_email(auth_peers *p, const rpc_ctx *parent, arena *a,
                                      const char *email, User__V1__User **out, err_info *e);
err_code auth_peers_assign_role(auth_peers *p, const rpc_ctx *parent, const char *user_id,
                                const char *role, err_info *e);

/* Compensations of the register saga: run with their own deadline (not the caller's, which may be
 * what failed) but the caller's request id; retried a few times. */
err_code auth_peers_delete_user(auth_peers *p, const rpc_ctx *parent, const char *id, err_info *e);
err_code auth_peers_revoke_role(auth_peers *p, const rpc_ctx *parent, const char *user_id,
                                const char *role, err_info *e);

/* circuit_breaker_state gauge values (0 closed, 1 open, 2 half-open) of "user" / "permission". */
int auth_peers_breaker_state(auth_peers *p, const char *target);

#endif
