/* user_service: the user service's logic over already-validated input: transactions that write the
 * row, its audit record and its outbox event together, cache-aside reads, keyset pagination. No
 * protobuf and no I/O of its own (the repo, store and outbox modules do it). Thread-safe. */
#ifndef USER_SERVICE_H
#define USER_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/db.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "user_model.h"
#include "user_outbox.h"
#include "user_page.h"
#include "user_store.h"

typedef struct user_service user_service;

/* Borrowed collaborators (they must outlive the service); outbox and store may be NULL. */
typedef struct user_service_opts {
    db_pool *db;
    user_store *store;
    user_outbox *outbox;
    const char *page_token_secret; /* "" = random key for this process */
} user_service_opts;

/* Who is calling: the audit actor, the request id (audit row, logs) and the deadline. */
typedef struct user_call {
    const char *actor;      /* "" or NULL = "system" */
    const char *request_id; /* may be NULL */
    const log_ctx *log;     /* may be NULL */
    int64_t deadline_ms;    /* CLOCK_MONOTONIC ms; 0 or INT64_MAX = none */
} user_call;

/* Fields UpdateUser may change (update_mask). */
enum { USER_UPD_EMAIL = 1, USER_UPD_DISPLAY_NAME = 2, USER_UPD_STATUS = 4 };

typedef struct user_update {
    const char *id;    /* canonical UUID */
    const char *etag;  /* "" = no check */
    unsigned mask;     /* USER_UPD_* bits, at least one */
    const char *email; /* normalised, when in mask */
    const char *display_name;
    int status;
} user_update;

typedef struct user_list_req {
    int page_size; /* already normalised: 1..1000 */
    const char *page_token;
    user_filter filter;
    bool show_deleted;
} user_list_req;

user_service *user_service_new(const user_service_opts *o);
void user_service_free(user_service *s); /* NULL ok */

/* Each returns ERR_OK and fills its outputs (in a), or an error with e filled:
 * ERR_NOT_FOUND (no live user), ERR_ALREADY_EXISTS (email taken by a live user), ERR_ABORTED (etag
 * mismatch), ERR_INVALID_ARGUMENT (bad page token; violation on page_token), ERR_UNAVAILABLE (pool
 * exhausted, database down), ERR_DEADLINE_EXCEEDED, ERR_INTERNAL. */
err_code user_service_create(user_service *s, const user_call *call, arena *a, const char *email,
                             const char *display_name, user_rec *out, err_info *e);
err_code user_service_get(user_service *s, const user_call *call, arena *a, const char *id,
                          user_rec *out, err_info *e);
/* user_service_get after the cache missed (read asynchronously by the caller): the database read,
 * then the cache refill. */
err_code user_service_load(user_service *s, const user_call *call, arena *a, const char *id,
                           user_rec *out, err_info *e);
err_code user_service_get_by_email(user_service *s, const user_call *call, arena *a,
                                   const char *email, user_rec *out, err_info *e);
err_code user_service_batch_get(user_service *s, const user_call *call, arena *a,
                                const char *const *ids, size_t n, user_rec **out, size_t *nout,
                                err_info *e);
/* *next_token is "" on the last page. */
err_code user_service_list(user_service *s, const user_call *call, arena *a,
                           const user_list_req *req, user_rec **out, size_t *nout,
                           const char **next_token, err_info *e);
err_code user_service_update(user_service *s, const user_call *call, arena *a, const user_update *u,
                             user_rec *out, err_info *e);
err_code user_service_delete(user_service *s, const user_call *call, arena *a, const char *id,
                             const char *etag, err_info *e);

#endif
