/* permission_events: what events.user means to permission (user.deleted removes the user's
 * assignments); the consumer-group mechanism is common/events. See permission_events.h. */
#include "permission_events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/events.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rpc_server.h"
#include "permission_match.h"

struct perm_events {
    perm_service *svc;
    events_consumer *consumer;
};

/* ERR_OK acknowledges the entry. Other types are acknowledged at once; a malformed user_id is
 * logged and acknowledged (a poison entry must not block the stream). */
static err_code handle(void *arg, const events_entry *ev, err_info *e)
{
    perm_events *pe = arg;
    if (strcmp(ev->type, "user.deleted") != 0)
        return ERR_OK;
    if (!perm_user_id_valid(ev->user_id)) {
        log_warn(NULL, "events: user.deleted %s with a malformed user_id: skipped", ev->id);
        return ERR_OK;
    }
    char uid[PERM_USER_ID_LEN + 1];
    perm_user_id_normalize(ev->user_id, uid);
    char evid[80];
    snprintf(evid, sizeof evid, "%s", ev->event_id);
    arena *a = arena_new(0);
    perm_call call = {.deadline_ms = rpc_now_ms() + 10000, .log = NULL, .arena = a};
    err_code rc = perm_service_user_deleted(pe->svc, &call, uid, evid, e);
    arena_free(a);
    if (rc == ERR_OK)
        log_info(NULL, "events: user %s deleted: assignments removed (entry %s)", uid, ev->id);
    return rc;
}

perm_events *perm_events_start(perm_service *svc, cache *redis, const perm_events_opts *o,
                               err_info *e)
{
    perm_events *pe = xcalloc(1, sizeof *pe);
    pe->svc = svc;
    events_consumer_opts co = {.stream = PERM_EVENTS_STREAM,
                               .group = PERM_EVENTS_GROUP,
                               .block_ms = o->block_ms,
                               .claim_idle_ms = o->claim_idle_ms,
                               .claim_interval_ms = o->claim_interval_ms,
                               .handle = handle,
                               .arg = pe};
    pe->consumer = events_consumer_start(redis, &co, e);
    if (!pe->consumer) {
        free(pe);
        return NULL;
    }
    return pe;
}

void perm_events_stop(perm_events *ev)
{
    if (!ev)
        return;
    events_consumer_stop(ev->consumer);
    free(ev);
}

unsigned long perm_events_acked(perm_events *ev)
{
    return ev ? events_consumer_acked(ev->consumer) : 0;
}
