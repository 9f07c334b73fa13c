/* user_repo: every SQL statement of the user service, one function per query, parameterised (text
 * parameters through db_exec's prepared statements; nothing is spliced into SQL). The caller owns
 * the connection and the transaction. Records are allocated in arena a. */
#ifndef USER_REPO_H
#define USER_REPO_H

#include <stddef.h>
#include <stdint.h>

#include "common/db.h"
#include "common/err.h"
#include "common/mem.h"
#include "user_model.h"

/* INSERT a live user; ERR_ALREADY_EXISTS when a live user has the email (unique index). */
err_code user_repo_insert(db_conn *c, arena *a, const char *email, const char *display_name,
                          int status, user_rec *out, err_info *e);
/* A live (not deleted) user by id; ERR_NOT_FOUND otherwise. */
err_code user_repo_get(db_conn *c, arena *a, const char *id, user_rec *out, err_info *e);
/* Same, locking the row FOR UPDATE (inside a transaction). */
err_code user_repo_get_for_update(db_conn *c, arena *a, const char *id, user_rec *out, err_info *e);
/* A live user by normalised email; ERR_NOT_FOUND otherwise. */
err_code user_repo_get_by_email(db_conn *c, arena *a, const char *email, user_rec *out,
                                err_info *e);
/* Live users whose id is one of ids (canonical UUIDs), in ONE query (= ANY($1::uuid[])); missing
 * ids are left out. *out has *nout records (arena). */
err_code user_repo_get_many(db_conn *c, arena *a, const char *const *ids, size_t nids,
                            user_rec **out, size_t *nout, err_info *e);
/* Up to limit users in (create_time, id) order after cursor (NULL = from the start), matching f;
 * deleted ones only when show_deleted. */
err_code user_repo_list(db_conn *c, arena *a, const user_filter *f, int show_deleted,
                        const user_cursor *after, int limit, user_rec **out, size_t *nout,
                        err_info *e);
/* Writes email, display_name, status of a live user, bumps version and update_time. */
err_code user_repo_update(db_conn *c, arena *a, const char *id, const char *email,
                          const char *display_name, int status, user_rec *out, err_info *e);
/* Sets delete_time (and bumps version) of a live user; ERR_NOT_FOUND when none. */
err_code user_repo_soft_delete(db_conn *c, arena *a, const char *id, user_rec *out, err_info *e);

/* One audit row. fields: names from a fixed set (they form an array literal). */
err_code user_repo_audit(db_conn *c, const char *actor, const char *action, const char *target,
                         const char *const *fields, size_t nfields, const char *request_id,
                         err_info *e);

/* Outbox. */
typedef struct user_event {
    int64_t id;
    const char *event_id;
    const char *type;
    const char *user_id;
    const char *occurred_at; /* RFC 3339 UTC with microseconds */
} user_event;

err_code user_repo_outbox_add(db_conn *c, const char *type, const char *user_id, err_info *e);
/* Oldest unsent events, locked FOR UPDATE SKIP LOCKED (so replicas never take the same rows). */
err_code user_repo_outbox_claim(db_conn *c, arena *a, int limit, user_event **out, size_t *nout,
                                err_info *e);
err_code user_repo_outbox_mark_sent(db_conn *c, arena *a, const int64_t *ids, size_t n,
                                    err_info *e);
err_code user_repo_outbox_backlog(db_conn *c, long *out, err_info *e);
/* Deletes events sent more than older_than_s seconds ago; *deleted gets the count. */
err_code user_repo_outbox_purge(db_conn *c, int older_than_s, long *deleted, err_info *e);

#endif
