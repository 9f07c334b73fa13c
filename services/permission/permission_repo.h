/* permission_repo: every SQL statement of the permission service, one function per query. Callers
 * own the connection and the transaction; strings returned live in the arena given. */
#ifndef PERMISSION_REPO_H
#define PERMISSION_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/db.h"
#include "common/mem.h"

/* Inheritance chains (assigned role → parent → ...) hold at most this many roles; writes that would
 * make a longer chain are refused, so the effective-set query's depth bound never truncates. */
#define PERM_MAX_DEPTH 32
#define PERM_MAX_DEPTH_STR "32"

typedef struct perm_role {
    const char *name;
    const char *description;
    const char **permissions;
    size_t npermissions;
    const char **inherits; /* parent role names, in the order given */
    size_t ninherits;
    bool builtin;
    int64_t create_us, update_us; /* unix microseconds */
} perm_role;

/* One role. ERR_NOT_FOUND when absent. */
err_code perm_repo_role_get(db_conn *c, const char *name, arena *a, perm_role *out, err_info *e);
/* Locks the role's row (FOR UPDATE) and says whether it is built in. ERR_NOT_FOUND when absent. */
err_code perm_repo_role_lock(db_conn *c, const char *name, bool *builtin, err_info *e);
/* Roles with name > after ("" = from the start), by name, at most limit. */
err_code perm_repo_role_list(db_conn *c, const char *after, int limit, arena *a, perm_role **out,
                             size_t *n, err_info *e);
/* Inserts name/description/permissions (not parents). ERR_ALREADY_EXISTS when the name is taken. */
err_code perm_repo_role_insert(db_conn *c, const perm_role *r, err_info *e);
/* Sets description and/or permissions (NULL = keep) and update_time. */
err_code perm_repo_role_update(db_conn *c, const char *name, const char *description,
                               const char *const *perms, size_t nperms, bool set_perms,
                               err_info *e);
/* Deletes the role; its assignments and parent edges (both directions) go with it (cascade). */
err_code perm_repo_role_delete(db_conn *c, const char *name, err_info *e);

/* Serialises writers of the role graph for the rest of the transaction (readers are not blocked),
 * so two concurrent updates cannot build a cycle together. */
err_code perm_repo_lock_graph(db_conn *c, err_info *e);
/* missing[i] = no role named names[i]. */
err_code perm_repo_roles_missing(db_conn *c, const char *const *names, size_t n, bool *missing,
                                 err_info *e);
/* Replaces the parents of name (in order). */
err_code perm_repo_parents_replace(db_conn *c, const char *name, const char *const *parents,
                                   size_t n, err_info *e);
/* For role name, in the current (uncommitted) graph: longest chain of ancestors above it (up),
 * of descendants below it (down), and whether it reaches itself (cycle). Bounded at 40 levels. */
err_code perm_repo_chain(db_conn *c, const char *name, int *up, int *down, bool *cycle,
                         err_info *e);

/* Idempotent. ERR_NOT_FOUND when the role does not exist; ERR_FAILED_PRECONDITION when the user
 * was deleted (tombstone from the events.user stream). */
err_code perm_repo_assign(db_conn *c, const char *user_id, const char *role, err_info *e);
/* Idempotent. ERR_NOT_FOUND when the role does not exist. */
err_code perm_repo_revoke(db_conn *c, const char *user_id, const char *role, err_info *e);

/* The user's effective roles (assigned + inherited, depth-bounded) sorted by name, and the union of
 * their permissions (sorted, unique), in one recursive query. Either output may be NULL. */
err_code perm_repo_effective(db_conn *c, const char *user_id, arena *a, const char ***roles,
                             size_t *nroles, const char ***perms, size_t *nperms, err_info *e);

/* user.deleted: tombstone the user and delete every assignment (idempotent). */
err_code perm_repo_user_deleted(db_conn *c, const char *user_id, const char *event_id, err_info *e);

#endif
