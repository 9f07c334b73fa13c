/* user_outbox: the relay of the transactional outbox. A thread takes unsent rows of users.outbox
 * (FOR UPDATE SKIP LOCKED, so replicas never send the same row), XADDs each to the Redis stream
 * `events.user` (fields type, user_id, event_id, occurred_at) and marks it sent in the same
 * transaction. With Redis down the rows wait and go out when it returns. */
#ifndef USER_OUTBOX_H
#define USER_OUTBOX_H

#include <stdint.h>

#include "common/cache.h"
#include "common/db.h"
#include "common/err.h"

#define USER_EVENTS_STREAM "events.user"

typedef struct user_outbox user_outbox;

typedef struct user_outbox_opts {
    int poll_ms;        /* wait between polls when not woken (OUTBOX_POLL_MS) */
    int batch;          /* rows per transaction (OUTBOX_BATCH) */
    int retention_s;    /* sent rows older than this are deleted (OUTBOX_RETENTION_SEC; 0 = keep) */
    long stream_maxlen; /* XADD MAXLEN ~ cap of the stream (OUTBOX_STREAM_MAXLEN; 0 = no cap) */
} user_outbox_opts;

/* Borrows db and c (c NULL: nothing is ever sent). No thread yet. */
user_outbox *user_outbox_new(db_pool *db, cache *c, const user_outbox_opts *o);
/* Starts the relay thread. */
err_code user_outbox_start(user_outbox *ob, err_info *e);
/* Wakes the relay at once (call after a write committed). Cheap; thread-safe; NULL ok. */
void user_outbox_wake(user_outbox *ob);
/* Stops and joins the thread (idempotent), then frees. NULL ok. */
void user_outbox_free(user_outbox *ob);

/* One relay pass (what the thread does each round): sends up to `batch` events; *sent gets how
 * many. ERR_UNAVAILABLE when Redis (or the database) failed; rows not sent stay unsent. */
err_code user_outbox_run_once(user_outbox *ob, int *sent, err_info *e);

/* Unsent events as of the last pass (for metrics and logs); -1 before the first pass. */
long user_outbox_backlog(user_outbox *ob);
/* Events published since start, and failed publish attempts. */
uint64_t user_outbox_sent_total(user_outbox *ob);
uint64_t user_outbox_errors_total(user_outbox *ob);

#endif
