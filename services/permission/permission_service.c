/* permission_service: roles, assignments and the Check hot path. The freshness protocol (see
 * docs/arch/permission.md): writers replace a Redis version token before commit (must succeed, or
 * nothing is committed) and again after commit (before returning); Check reads the tokens first and
 * uses a cached set only when it was computed under exactly those tokens. */
#include "permission_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "permission_match.h"
#include "permission_store.h"

struct perm_service {
    db_pool *db;
    perm_store *store;
    perm_cache *cache;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

perm_service *perm_service_new(db_pool *db, cache *redis, const perm_service_opts *o)
{
    perm_service *s = xcalloc(1, sizeof *s);
    s->db = db;
    s->store = perm_store_new(redis);
    s->cache = perm_cache_new(o->cache_size, o->cache_max_age_ms);
    return s;
}

void perm_service_free(perm_service *s)
{
    if (!s)
        return;
    perm_cache_free(s->cache);
    perm_store_free(s->store);
    free(s);
}

void perm_service_cache_stats(perm_service *s, perm_cache_stats *out)
{
    perm_cache_stats_get(s->cache, out);
}

static err_code acquire(perm_service *s, const perm_call *call, db_conn **c, err_info *e)
{
    int64_t dl = call->deadline_ms == INT64_MAX ? 0 : call->deadline_ms;
    err_code rc = db_acquire(s->db, dl, c, e);
    if (rc == ERR_OK && call->log)
        db_set_log_ctx(*c, call->log);
    return rc;
}

/* Replaces the global token (user_id NULL) or the user's token. */
static err_code bump_once(perm_service *s, const char *user_id, err_info *e)
{
    return user_id ? perm_store_bump_user(s->store, user_id, e)
                   : perm_store_bump_global(s->store, e);
}

/* Before commit: a failure here aborts the write (the caller rolls back), so a Redis that cannot be
 * reached never lets a change commit without the replicas being told. */
static err_code pre_bump(perm_service *s, const char *user_id, err_info *e)
{
    err_code rc = bump_once(s, user_id, e);
    if (rc != ERR_OK) {
        perm_cache_clear(s->cache);
        err_set(e, ERR_UNAVAILABLE, "redis unreachable: change not applied");
        e->retry_after_s = 1;
    }
    return rc;
}

/* After commit, before returning: a few tries within the deadline. If Redis failed in the few
 * milliseconds since pre_bump, the change is committed but replicas may hold entries computed
 * between the two bumps: answer UNAVAILABLE (the call's outcome is then "unknown" to the client,
 * who retries: every write is idempotent and bumps again) and clear our own cache. */
static err_code post_bump(perm_service *s, const perm_call *call, const char *user_id, err_info *e)
{
    err_code rc = ERR_OK;
    for (int attempt = 0; attempt < 3; attempt++) {
        if (attempt) {
            int64_t wait = 20 * attempt;
            if (call->deadline_ms && call->deadline_ms != INT64_MAX &&
                mono_ms() + wait >= call->deadline_ms)
                break;
            struct timespec ts = {0, (long)wait * 1000000L};
            nanosleep(&ts, NULL);
        }
        rc = bump_once(s, user_id, e);
        if (rc == ERR_OK)
            return ERR_OK;
    }
    perm_cache_clear(s->cache);
    log_error(call->log, "permission version bump failed after commit: %s", e->msg);
    err_set(e, ERR_UNAVAILABLE,
            "change committed but replicas could not be notified (redis); retry the call");
    e->retry_after_s = 1;
    return ERR_UNAVAILABLE;
}

/* Checks the parents named in in->inherits exist and are not the role itself. */
/* The tail every role or assignment write shares: the version token replaced before the commit
 * and again after it (see post_bump), rollback on any error, the connection released. rc is the
 * result of the write's own statements. */
static err_code finish_write(perm_service *s, const perm_call *call, db_conn *c,
                             const char *user_id, err_code rc, err_info *e)
{
    bool committed = false;
    if (rc == ERR_OK && (rc = pre_bump(s, user_id, e)) == ERR_OK &&
        (rc = db_commit(c, e)) == ERR_OK)
        committed = true;
    if (rc != ERR_OK)
        db_rollback(c);
    db_release(s->db, c);
    return committed ? post_bump(s, call, user_id, e) : rc;
}

static err_code check_parents(db_conn *c, const perm_role *in, err_info *e)
{
    for (size_t i = 0; i < in->ninherits; i++) {
        if (strcmp(in->inherits[i], in->name) == 0)
            return err_set(e, ERR_FAILED_PRECONDITION, "role %s cannot inherit itself", in->name);
    }
    if (in->ninherits == 0)
        return ERR_OK;
    bool *missing = xcalloc(in->ninherits, sizeof *missing);
    err_code rc = perm_repo_roles_missing(c, in->inherits, in->ninherits, missing, e);
    if (rc == ERR_OK) {
        for (size_t i = 0; i < in->ninherits; i++) {
            if (missing[i])
                rc = err_violation_add(e, "role.inherits", "unknown role %s", in->inherits[i]);
        }
    }
    free(missing);
    return rc;
}

/* After the parents changed (inside the transaction, graph locked): no cycle, no chain too long. */
static err_code check_graph(db_conn *c, const char *name, err_info *e)
{
    int up = 0, down = 0;
    bool cycle = false;
    err_code rc = perm_repo_chain(c, name, &up, &down, &cycle, e);
    if (rc != ERR_OK)
        return rc;
    if (cycle)
        return err_set(e, ERR_FAILED_PRECONDITION, "inheritance cycle through role %s", name);
    if (up + down + 1 > PERM_MAX_DEPTH)
        return err_set(e, ERR_FAILED_PRECONDITION,
                       "inheritance chain through role %s would hold %d roles (max %d)", name,
                       up + down + 1, PERM_MAX_DEPTH);
    return ERR_OK;
}

err_code perm_service_create_role(perm_service *s, const perm_call *call, const perm_role *in,
                                  perm_role *out, err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, call, &c, e);
    if (rc != ERR_OK)
        return rc;
    if ((rc = db_begin(c, e)) != ERR_OK)
        goto done;
    if ((rc = perm_repo_lock_graph(c, e)) != ERR_OK)
        goto done;
    if ((rc = check_parents(c, in, e)) != ERR_OK)
        goto done;
    if ((rc = perm_repo_role_insert(c, in, e)) != ERR_OK)
        goto done;
    if ((rc = perm_repo_parents_replace(c, in->name, in->inherits, in->ninherits, e)) != ERR_OK)
        goto done;
    if ((rc = check_graph(c, in->name, e)) != ERR_OK)
        goto done;
    if ((rc = perm_repo_role_get(c, in->name, call->arena, out, e)) != ERR_OK)
        goto done;
    /* No bump: nobody holds or inherits a role that did not exist (DeleteRole removed every
     * reference to an earlier role of the same name), so no effective set changes. */
    rc = db_commit(c, e);
done:
    if (rc != ERR_OK)
        db_rollback(c);
    db_release(s->db, c);
    return rc;
}

err_code perm_service_get_role(perm_service *s, const perm_call *call, const char *name,
                               perm_role *out, err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, call, &c, e);
    if (rc != ERR_OK)
        return rc;
    rc = perm_repo_role_get(c, name, call->arena, out, e);
    db_release(s->db, c);
    return rc;
}

err_code perm_service_list_roles(perm_service *s, const perm_call *call, const char *after,
                                 int limit, perm_role **out, size_t *n, bool *more, err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, call, &c, e);
    if (rc != ERR_OK)
        return rc;
    rc = perm_repo_role_list(c, after, limit + 1, call->arena, out, n, e);
    db_release(s->db, c);
    if (rc != ERR_OK)
        return rc;
    *more = *n > (size_t)limit;
    if (*more)
        *n = (size_t)limit;
    return ERR_OK;
}

/* Shared tail of the locked role writes: lock the row, refuse built-ins. */
static err_code lock_mutable_role(db_conn *c, const char *name, const char *verb, err_info *e)
{
    bool builtin = false;
    err_code rc = perm_repo_role_lock(c, name, &builtin, e);
    if (rc != ERR_OK)
        return rc;
    if (builtin)
        return err_set(e, ERR_FAILED_PRECONDITION, "role %s is built in and cannot be %s", name,
                       verb);
    return ERR_OK;
}

err_code perm_service_update_role(perm_service *s, const perm_call *call, const perm_role *in,
                                  const perm_update_mask *mask, perm_role *out, err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, call, &c, e);
    if (rc != ERR_OK)
        return rc;
    if ((rc = db_begin(c, e)) != ERR_OK)
        goto done;
    if ((rc = perm_repo_lock_graph(c, e)) != ERR_OK)
        goto done;
    if ((rc = lock_mutable_role(c, in->name, "updated", e)) != ERR_OK)
        goto done;
    if (mask->inherits) {
        if ((rc = check_parents(c, in, e)) != ERR_OK)
            goto done;
        if ((rc = perm_repo_parents_replace(c, in->name, in->inherits, in->ninherits, e)) != ERR_OK)
            goto done;
        if ((rc = check_graph(c, in->name, e)) != ERR_OK)
            goto done;
    }
    if ((rc = perm_repo_role_update(c, in->name, mask->description ? in->description : NULL,
                                    in->permissions, in->npermissions, mask->permissions, e)) !=
        ERR_OK)
        goto done;
    if ((rc = perm_repo_role_get(c, in->name, call->arena, out, e)) != ERR_OK)
        goto done;
done:
    return finish_write(s, call, c, NULL, rc, e);
}

err_code perm_service_delete_role(perm_service *s, const perm_call *call, const char *name,
                                  err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, call, &c, e);
    if (rc != ERR_OK)
        return rc;
    if ((rc = db_begin(c, e)) != ERR_OK)
        goto done;
    if ((rc = perm_repo_lock_graph(c, e)) != ERR_OK)
        goto done;
    if ((rc = lock_mutable_role(c, name, "deleted", e)) != ERR_OK)
        goto done;
    if ((rc = perm_repo_role_delete(c, name, e)) != ERR_OK)
        goto done;
done:
    return finish_write(s, call, c, NULL, rc, e);
}

typedef err_code (*user_write_fn)(db_conn *c, const char *user_id, const char *arg, err_info *e);

/* One transaction writing the user's assignments, with the user's token bumped around the
 * commit. */
static err_code user_write(perm_service *s, const perm_call *call, const char *user_id,
                           const char *arg, user_write_fn fn, err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, call, &c, e);
    if (rc != ERR_OK)
        return rc;
    if ((rc = db_begin(c, e)) != ERR_OK)
        goto done;
    if ((rc = fn(c, user_id, arg, e)) != ERR_OK)
        goto done;
done:
    return finish_write(s, call, c, user_id, rc, e);
}

err_code perm_service_assign(perm_service *s, const perm_call *call, const char *user_id,
                             const char *role, err_info *e)
{
    return user_write(s, call, user_id, role, perm_repo_assign, e);
}

err_code perm_service_revoke(perm_service *s, const perm_call *call, const char *user_id,
                             const char *role, err_info *e)
{
    return user_write(s, call, user_id, role, perm_repo_revoke, e);
}

err_code perm_service_user_deleted(perm_service *s, const perm_call *call, const char *user_id,
                                   const char *event_id, err_info *e)
{
    return user_write(s, call, user_id, event_id, perm_repo_user_deleted, e);
}

/* The user's effective roles and/or permissions (inheritance applied), in one query. */
static err_code effective(perm_service *s, const perm_call *call, const char *user_id,
                          const char ***roles, size_t *nroles, const char ***perms, size_t *nperms,
                          err_info *e)
{
    db_conn *c = NULL;
    err_code rc = acquire(s, call, &c, e);
    if (rc != ERR_OK)
        return rc;
    rc = perm_repo_effective(c, user_id, call->arena, roles, nroles, perms, nperms, e);
    db_release(s->db, c);
    return rc;
}

err_code perm_service_user_roles(perm_service *s, const perm_call *call, const char *user_id,
                                 const char ***roles, size_t *n, err_info *e)
{
    return effective(s, call, user_id, roles, n, NULL, NULL, e);
}

err_code perm_service_user_permissions(perm_service *s, const perm_call *call, const char *user_id,
                                       const char ***perms, size_t *n, err_info *e)
{
    return effective(s, call, user_id, NULL, NULL, perms, n, e);
}

err_code perm_service_check(perm_service *s, const perm_call *call, const char *user_id,
                            const char *const *perms, size_t n, bool *allowed, err_info *e)
{
    /* Order matters: generation, then the tokens, then (on a miss) the database. An entry is thus
     * stamped with tokens read before the data it holds, so a concurrent write can only make it
     * look stale, never fresh; and a cache clear during the read kills it on arrival. */
    uint64_t gen = perm_cache_generation(s->cache);
    perm_stamp st;
    err_info re;
    err_clear(&re);
    bool redis_ok = perm_store_read(s->store, user_id, &st, &re) == ERR_OK;
    if (!redis_ok) {
        /* Unvalidated entries are worthless from now on, and Redis may come back with other
         * values: forget everything and go to the database. */
        perm_cache_clear(s->cache);
        log_debug(call->log, "permission check without cache: %s", re.msg);
    } else if (perm_cache_check(s->cache, user_id, &st, mono_ms(), perms, n, allowed)) {
        return ERR_OK;
    }

    arena *a = call->arena;
    const char **eff = NULL;
    size_t neff = 0;
    db_conn *c = NULL;
    err_code rc = acquire(s, call, &c, e);
    if (rc != ERR_OK)
        return rc;
    rc = perm_repo_effective(c, user_id, a, NULL, NULL, &eff, &neff, e);
    db_release(s->db, c);
    if (rc != ERR_OK)
        return rc;
    perm_set *set = perm_set_new(eff, neff);
    for (size_t i = 0; i < n; i++)
        allowed[i] = perm_set_allows(set, perms[i]);
    if (redis_ok)
        perm_cache_put(s->cache, user_id, &st, gen, mono_ms(), set);
    else
        perm_set_free(set);
    return ERR_OK;
}
