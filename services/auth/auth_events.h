/* auth_events: consumer of the events.user stream (group auth-service), on common/events. On
 * user.deleted every session of the user is revoked and their access tokens denied; the entry is
 * acknowledged only after that committed. Entries left pending by a dead consumer are claimed
 * (XAUTOCLAIM) at start and periodically. One thread; acting twice on an entry is harmless. */
#ifndef AUTH_EVENTS_H
#define AUTH_EVENTS_H

#include "auth_service.h"
#include "common/cache.h"

#define AUTH_EVENTS_STREAM "events.user"
#define AUTH_EVENTS_GROUP "auth-service"

typedef struct auth_events_opts {
    int block_ms;          /* XREADGROUP BLOCK: below the Redis command timeout */
    int claim_idle_ms;     /* XAUTOCLAIM min-idle-time */
    int claim_interval_ms; /* how often to claim */
} auth_events_opts;

typedef struct auth_events auth_events;

/* Starts the thread; the group is created by it (retrying while Redis is down). NULL (logged)
 * only when the thread cannot start. */
auth_events *auth_events_start(auth_service *svc, cache *redis, const auth_events_opts *o);
/* Stops and joins (within about block_ms). NULL ok. */
void auth_events_stop(auth_events *ev);

#endif
