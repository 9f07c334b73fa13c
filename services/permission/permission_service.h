/* permission_service: the logic of roles, assignments and Check, over the repo (PostgreSQL), the
 * store (Redis version tokens) and the in-process cache. No gRPC here. Thread-safe. */
#ifndef PERMISSION_SERVICE_H
#define PERMISSION_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cache.h"
#include "common/db.h"
#include "common/log.h"
#include "common/mem.h"
#include "permission_cache.h"
#include "permission_repo.h"

typedef struct perm_service perm_service;

typedef struct perm_service_opts {
    size_t cache_size;        /* entries; 0 = no cache (every Check reads the database) */
    int64_t cache_max_age_ms; /* an entry older than this is not used (0 = no limit) */
} perm_service_opts;

/* What one call brings: its deadline (CLOCK_MONOTONIC ms, 0 or INT64_MAX = none), log ids and the
 * arena results are allocated in. */
typedef struct perm_call {
    int64_t deadline_ms;
    const log_ctx *log;
    arena *arena;
} perm_call;

/* db and redis are borrowed. */
perm_service *perm_service_new(db_pool *db, cache *redis, const perm_service_opts *o);
void perm_service_free(perm_service *s); /* NULL ok */
void perm_service_cache_stats(perm_service *s, perm_cache_stats *out);

/* Field names used in violations are the request's ("role.inherits[1]"). Inputs are validated by
 * the caller (names, permission strings); these check what needs the database.
 * Errors common to all: ERR_UNAVAILABLE (database or Redis), ERR_DEADLINE_EXCEEDED. */

/* ALREADY_EXISTS; INVALID_ARGUMENT (unknown parent); FAILED_PRECONDITION (self-inheritance, chain
 * deeper than PERM_MAX_DEPTH). */
err_code perm_service_create_role(perm_service *s, const perm_call *call, const perm_role *in,
                                  perm_role *out, err_info *e);
/* NOT_FOUND. */
err_code perm_service_get_role(perm_service *s, const perm_call *call, const char *name,
                               perm_role *out, err_info *e);
/* after: "" or the last name of the previous page. *more: another page exists. */
err_code perm_service_list_roles(perm_service *s, const perm_call *call, const char *after,
                                 int limit, perm_role **out, size_t *n, bool *more, err_info *e);

typedef struct perm_update_mask {
    bool description, permissions, inherits;
} perm_update_mask;
/* NOT_FOUND; FAILED_PRECONDITION (built-in role, cycle, too deep); INVALID_ARGUMENT (unknown
 * parent). Bumps the global version after commit. */
err_code perm_service_update_role(perm_service *s, const perm_call *call, const perm_role *in,
                                  const perm_update_mask *mask, perm_role *out, err_info *e);
/* NOT_FOUND; FAILED_PRECONDITION (built-in). Bumps the global version after commit. */
err_code perm_service_delete_role(perm_service *s, const perm_call *call, const char *name,
                                  err_info *e);

/* Idempotent. NOT_FOUND (role); FAILED_PRECONDITION (user deleted). Bumps the user's version. */
err_code perm_service_assign(perm_service *s, const perm_call *call, const char *user_id,
                             const char *role, err_info *e);
/* Idempotent. NOT_FOUND (role). Bumps the user's version. */
err_code perm_service_revoke(perm_service *s, const perm_call *call, const char *user_id,
                             const char *role, err_info *e);

/* Effective (inherited included), sorted. Read from the database. */
err_code perm_service_user_roles(perm_service *s, const perm_call *call, const char *user_id,
                                 const char ***roles, size_t *n, err_info *e);
err_code perm_service_user_permissions(perm_service *s, const perm_call *call, const char *user_id,
                                       const char ***perms, size_t *n, err_info *e);

/* allowed[i] for each concrete permission perms[i]: from the cache when its stamp is current in
 * Redis, else from the database (and cached under the stamp read before the query). Never answers
 * from the cache when Redis cannot be read. */
err_code perm_service_check(perm_service *s, const perm_call *call, const char *user_id,
                            const char *const *perms, size_t n, bool *allowed, err_info *e);

/* The user.deleted event: tombstone + delete assignments, commit, then bump the user's version.
 * Idempotent. */
err_code perm_service_user_deleted(perm_service *s, const perm_call *call, const char *user_id,
                                   const char *event_id, err_info *e);

#endif
