/* events: a consumer-group reader of a Redis stream (events.user) on its own thread: XREADGROUP
 * BLOCK, XACK once the handler succeeded, XAUTOCLAIM of dead consumers' pending entries at start
 * and periodically, back-off while Redis is down. The services plug in only what an event means. */
#ifndef COMMON_EVENTS_H
#define COMMON_EVENTS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/cache.h"
#include "common/err.h"

/* One stream entry, by field name (SPEC "Events"). Absent fields are "" (never NULL); the strings
 * live until the handler returns. */
typedef struct events_entry {
    const char *id;          /* stream entry id, e.g. "1700000000000-0" */
    const char *type;        /* user.created | user.updated | user.deleted (others passed as is) */
    const char *user_id;     /* not validated here: the handler decides what a bad one means */
    const char *event_id;    /* UUID of the event (idempotency, log correlation) */
    const char *occurred_at; /* RFC 3339 UTC */
} events_entry;

/* ERR_OK = done (or deliberately ignored): the entry is acknowledged. Anything else leaves it
 * pending; it is re-read from this consumer's pending list after a back-off, before any new entry.
 * Must be idempotent: an entry may be delivered more than once (a slow consumer's entry claimed by
 * another, a crash between commit and XACK). */
typedef err_code (*events_handler)(void *arg, const events_entry *ev, err_info *e);

typedef struct events_consumer_opts {
    const char *stream;    /* e.g. "events.user" (copied) */
    const char *group;     /* e.g. "auth-service" (copied) */
    const char *consumer;  /* NULL or "": "<hostname>-<pid>" */
    int block_ms;          /* XREADGROUP BLOCK, keep below the Redis command timeout; <= 0: 500 */
    int claim_idle_ms;     /* XAUTOCLAIM min-idle-time: pending this long in any consumer = taken */
    int claim_interval_ms; /* how often to claim; <= 0: 30000 */
    events_handler handle;
    void *arg; /* passed to handle */
} events_consumer_opts;

typedef struct events_consumer events_consumer;

/* Starts the thread (redis borrowed: it must outlive events_consumer_stop). The group is created
 * by the thread (XGROUP CREATE <stream> <group> 0 MKSTREAM: from the stream's beginning, so entries
 * published while no consumer ran are processed; BUSYGROUP is fine), retrying with back-off while
 * Redis is down, so start-up never waits on Redis. NULL + e when the thread cannot start or opts
 * lack stream/group/handle.
 *
 * Malformed entries never loop forever: an entry without an id (nothing to acknowledge) is skipped;
 * an entry without a `type` field (e.g. deleted from the stream while pending: its fields come back
 * nil) is logged and acknowledged without calling handle; every other entry, whatever its type, is
 * given to handle, which acknowledges what it does not care about by returning ERR_OK. */
events_consumer *events_consumer_start(cache *redis, const events_consumer_opts *o, err_info *e);
/* Stops and joins the thread (within about block_ms), then frees. NULL ok. */
void events_consumer_stop(events_consumer *c);
/* Entries acknowledged so far (tests, metrics). */
unsigned long events_consumer_acked(events_consumer *c);

/* Pure helpers (unit-tested). */

/* Fills *out from an entry id and its flat field list kv[0..n) = key, value, key, value, ... (NULL
 * items, unknown keys and an odd last item are ignored; a repeated key: the last wins). Absent
 * fields become "". false when id is NULL or "" (such an entry cannot be acknowledged). */
bool events_entry_parse(const char *id, const char *const *kv, size_t n, events_entry *out);
/* true for 36-character 8-4-4-4-12 hexadecimal (either case) UUID text. */
bool events_uuid_valid(const char *s);

#endif
