/* user_service: logic of user.v1.UserService. Writes are one transaction each (row + audit_log +
 * outbox); the cached copy is dropped only after COMMIT, so a reader can never refill the cache
 * from a transaction that later rolls back. */
#include "user_service.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "user_repo.h"

struct user_service {
    db_pool *db;
    user_store *store;
    user_outbox *outbox;
    user_page_key key;
};

user_service *user_service_new(const user_service_opts *o)
{
    user_service *s = xcalloc(1, sizeof *s);
    s->db = o->db;
    s->store = o->store;
    s->outbox = o->outbox;
    user_page_key_init(&s->key, o->page_token_secret);
    return s;
}

void user_service_free(user_service *s)
{
    free(s);
}

static const char *actor_of(const user_call *call)
{
    return call->actor && *call->actor ? call->actor : "system";
}

static err_code acquire(user_service *s, const user_call *call, db_conn **c, err_info *e)
{
    int64_t dl = call->deadline_ms == INT64_MAX ? 0 : call->deadline_ms;
    err_code rc = db_acquire(s->db, dl, c, e);
    if (!rc && call->log)
        db_set_log_ctx(*c, call->log);
    return rc;
}

/* Ends a write transaction: COMMIT when rc is OK, else ROLLBACK; then releases. */
static err_code finish_tx(user_service *s, db_conn *c, err_code rc, err_info *e)
{
    if (!rc)
        rc = db_commit(c, e);
    else
        db_rollback(c);
    db_release(s->db, c);
    return rc;
}

static err_code check_etag(const user_rec *cur, const char *etag, err_info *e)
{
    if (!etag || !*etag)
        return ERR_OK;
    int64_t v;
    if (!user_etag_parse(etag, &v) || v != cur->version)
        return err_set(e, ERR_ABORTED, "etag mismatch: the user was changed since it was read");
    return ERR_OK;
}

err_code user_service_create(user_service *s, const user_call *call, arena *a, const char *email,
                             const char *display_name, user_rec *out, err_info *e)
{
    db_conn *c;
    err_code rc = acquire(s, call, &c, e);
    if (rc)
        return rc;
    user_rec u;
    static const char *const fields[] = {"email", "display_name", "status"};
    rc = db_begin(c, e);
    if (!rc)
        rc = user_repo_insert(c, a, email, display_name, USER_STATUS_ACTIVE, &u, e);
    if (!rc)
        rc =
            user_repo_audit(c, actor_of(call), "user.create", u.id, fields, 3, call->request_id, e);
    if (!rc)
        rc = user_repo_outbox_add(c, "user.created", u.id, e);
    rc = finish_tx(s, c, rc, e);
    if (rc)
        return rc;
    user_outbox_wake(s->outbox);
    *out = u;
    return ERR_OK;
}

err_code user_service_get(user_service *s, const user_call *call, arena *a, const char *id,
                          user_rec *out, err_info *e)
{
    if (s->store && user_store_get(s->store, a, id, out, call->log) == ERR_OK)
        return ERR_OK;
    return user_service_load(s, call, a, id, out, e);
}

err_code user_service_load(user_service *s, const user_call *call, arena *a, const char *id,
                           user_rec *out, err_info *e)
{
    db_conn *c;
    err_code rc = acquire(s, call, &c, e);
    if (rc)
        return rc;
    rc = user_repo_get(c, a, id, out, e);
    db_release(s->db, c);
    if (rc)
        return rc;
    if (s->store)
        user_store_put(s->store, out, call->log);
    return ERR_OK;
}

err_code user_service_get_by_email(user_service *s, const user_call *call, arena *a,
                                   const char *email, user_rec *out, err_info *e)
{
    db_conn *c;
    err_code rc = acquire(s, call, &c, e);
    if (rc)
        return rc;
    rc = user_repo_get_by_email(c, a, email, out, e);
    db_release(s->db, c);
    return rc;
}

err_code user_service_batch_get(user_service *s, const user_call *call, arena *a,
                                const char *const *ids, size_t n, user_rec **out, size_t *nout,
                                err_info *e)
{
    if (n == 0) {
        *out = NULL;
        *nout = 0;
        return ERR_OK;
    }
    db_conn *c;
    err_code rc = acquire(s, call, &c, e);
    if (rc)
        return rc;
    rc = user_repo_get_many(c, a, ids, n, out, nout, e);
    db_release(s->db, c);
    return rc;
}

err_code user_service_list(user_service *s, const user_call *call, arena *a,
                           const user_list_req *req, user_rec **out, size_t *nout,
                           const char **next_token, err_info *e)
{
    user_cursor cur, *after = NULL;
    if (req->page_token && *req->page_token) {
        if (!user_page_token_decode(&s->key, req->page_token, &req->filter, req->show_deleted,
                                    &cur))
            return err_violation_add(e, "page_token",
                                     "invalid page token, or made for another filter");
        after = &cur;
    }
    db_conn *c;
    err_code rc = acquire(s, call, &c, e);
    if (rc)
        return rc;
    user_rec *rows = NULL;
    size_t n = 0;
    /* One row more than the page tells whether another page exists. */
    rc = user_repo_list(c, a, &req->filter, req->show_deleted, after, req->page_size + 1, &rows, &n,
                        e);
    db_release(s->db, c);
    if (rc)
        return rc;
    *next_token = "";
    if (n > (size_t)req->page_size) {
        n = (size_t)req->page_size;
        user_cursor last = {.create_us = rows[n - 1].create_us};
        memcpy(last.id, rows[n - 1].id, sizeof last.id);
        *next_token = user_page_token_encode(a, &s->key, &last, &req->filter, req->show_deleted);
    }
    *out = rows;
    *nout = n;
    return ERR_OK;
}

err_code user_service_update(user_service *s, const user_call *call, arena *a, const user_update *u,
                             user_rec *out, err_info *e)
{
    db_conn *c;
    err_code rc = acquire(s, call, &c, e);
    if (rc)
        return rc;
    user_rec cur, upd;
    const char *fields[3];
    size_t nf = 0;
    rc = db_begin(c, e);
    if (!rc)
        rc = user_repo_get_for_update(c, a, u->id, &cur, e);
    if (!rc)
        rc = check_etag(&cur, u->etag, e);
    if (!rc) {
        const char *email = cur.email, *name = cur.display_name;
        int status = cur.status;
        if (u->mask & USER_UPD_EMAIL)
            email = u->email, fields[nf++] = "email";
        if (u->mask & USER_UPD_DISPLAY_NAME)
            name = u->display_name, fields[nf++] = "display_name";
        if (u->mask & USER_UPD_STATUS)
            status = u->status, fields[nf++] = "status";
        rc = user_repo_update(c, a, u->id, email, name, status, &upd, e);
    }
    if (!rc)
        rc = user_repo_audit(c, actor_of(call), "user.update", u->id, fields, nf, call->request_id,
                             e);
    if (!rc)
        rc = user_repo_outbox_add(c, "user.updated", u->id, e);
    rc = finish_tx(s, c, rc, e);
    if (rc)
        return rc;
    if (s->store)
        user_store_del(s->store, u->id, call->log);
    user_outbox_wake(s->outbox);
    *out = upd;
    return ERR_OK;
}

err_code user_service_delete(user_service *s, const user_call *call, arena *a, const char *id,
                             const char *etag, err_info *e)
{
    db_conn *c;
    err_code rc = acquire(s, call, &c, e);
    if (rc)
        return rc;
    user_rec cur, del;
    static const char *const fields[] = {"delete_time"};
    rc = db_begin(c, e);
    if (!rc)
        rc = user_repo_get_for_update(c, a, id, &cur, e);
    if (!rc)
        rc = check_etag(&cur, etag, e);
    if (!rc)
        rc = user_repo_soft_delete(c, a, id, &del, e);
    if (!rc)
        rc = user_repo_audit(c, actor_of(call), "user.delete", id, fields, 1, call->request_id, e);
    if (!rc)
        rc = user_repo_outbox_add(c, "user.deleted", id, e);
    rc = finish_tx(s, c, rc, e);
    if (rc)
        return rc;
    if (s->store)
        user_store_del(s->store, id, call->log);
    user_outbox_wake(s->outbox);
    return ERR_OK;
}
