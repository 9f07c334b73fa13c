/* auth_events: what events.user means to auth (user.deleted revokes the user's sessions); the
 * consumer-group mechanism is common/events. See auth_events.h. */
#include "auth_events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/events.h"
#include "common/log.h"
#include "common/mem.h"

struct auth_events {
    auth_service *svc;
    events_consumer *consumer;
};

/* ERR_OK acknowledges the entry. Other types are not auth's business; a malformed user_id is
 * logged and acknowledged (a poison entry must not block the stream). */
static err_code handle(void *arg, const events_entry *ev, err_info *e)
{
    auth_events *ae = arg;
    if (strcmp(ev->type, "user.deleted") != 0)
        return ERR_OK;
    if (!events_uuid_valid(ev->user_id)) {
        log_warn(NULL, "events: entry %s: user.deleted with a malformed user_id: skipped", ev->id);
        return ERR_OK;
    }
    char rid[96];
    snprintf(rid, sizeof rid, "event:%.80s", ev->event_id);
    log_ctx lc = {.request_id = rid};
    return auth_service_user_deleted(ae->svc, ev->user_id, &lc, e);
}

auth_events *auth_events_start(auth_service *svc, cache *redis, const auth_events_opts *o)
{
    auth_events *ae = xcalloc(1, sizeof *ae);
    ae->svc = svc;
    events_consumer_opts co = {.stream = AUTH_EVENTS_STREAM,
                               .group = AUTH_EVENTS_GROUP,
                               .block_ms = o->block_ms,
                               .claim_idle_ms = o->claim_idle_ms,
                               .claim_interval_ms = o->claim_interval_ms,
                               .handle = handle,
                               .arg = ae};
    err_info e;
    err_clear(&e);
    ae->consumer = events_consumer_start(redis, &co, &e);
    if (!ae->consumer) {
        log_error(NULL, "events: consumer not started: %s", e.msg);
        free(ae);
        return NULL;
    }
    return ae;
}

void auth_events_stop(auth_events *ev)
{
    if (!ev)
        return;
    events_consumer_stop(ev->consumer);
    free(ev);
}
