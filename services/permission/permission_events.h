/* permission_events: the consumer of the events.user stream (group permission-service), on
 * common/events. On user.deleted it removes the user's assignments, and acknowledges only after
 * that committed and the user's version token was replaced. Pending entries of dead consumers are
 * claimed (XAUTOCLAIM) at start and periodically. One thread. */
#ifndef PERMISSION_EVENTS_H
#define PERMISSION_EVENTS_H

#include "common/cache.h"
#include "common/err.h"
#include "permission_service.h"

#define PERM_EVENTS_STREAM "events.user"
#define PERM_EVENTS_GROUP "permission-service"

typedef struct perm_events_opts {
    int block_ms;          /* XREADGROUP BLOCK; keep below the Redis command timeout */
    int claim_idle_ms;     /* entries pending longer than this in another consumer are taken */
    int claim_interval_ms; /* how often to look for such entries */
} perm_events_opts;

typedef struct perm_events perm_events;

/* Starts the thread (svc and redis borrowed; they must outlive perm_events_stop). The group is
 * created (from the stream's beginning, MKSTREAM) by the thread, retrying while Redis is down, so
 * start-up never waits for Redis. */
perm_events *perm_events_start(perm_service *svc, cache *redis, const perm_events_opts *o,
                               err_info *e);
/* Stops and joins the thread (within about block_ms). NULL ok. */
void perm_events_stop(perm_events *ev);

/* Entries processed and acknowledged so far (tests, metrics). */
unsigned long perm_events_acked(perm_events *ev);

#endif
