/* permission_events: XREADGROUP loop on events.user; see permission_events.h. */
#include "permission_events.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mem.h"
#include "permission_match.h"

struct perm_events {
    perm_service *svc;
    cache *redis;
    perm_events_opts o;
    char consumer[128];
    pthread_t thread;
    atomic_bool stop;
    atomic_ulong acked;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps up to ms, waking early when asked to stop. */
static void nap(perm_events *ev, int ms)
{
    for (int slept = 0; slept < ms && !atomic_load(&ev->stop); slept += 50) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static err_code command(perm_events *ev, int argc, const char **argv, cache_reply **out,
                        err_info *e)
{
    size_t lens[16];
    for (int i = 0; i < argc && i < 16; i++)
        lens[i] = strlen(argv[i]);
    return cache_command(ev->redis, argc, argv, lens, out, e);
}

static bool reply_is_error(const cache_reply *r, const char *prefix)
{
    if (!r || cache_reply_kind(r) != CACHE_REPLY_ERROR)
        return false;
    size_t len = 0;
    const char *s = cache_reply_str(r, &len);
    return !prefix || (s && strncmp(s, prefix, strlen(prefix)) == 0);
}

/* XGROUP CREATE ... 0 MKSTREAM: from the start of the stream, so events published while no
 * permission service ran are still processed. BUSYGROUP = already there. */
static bool ensure_group(perm_events *ev)
{
    const char *argv[] = {"XGROUP",          "CREATE", PERM_EVENTS_STREAM,
                          PERM_EVENTS_GROUP, "0",      "MKSTREAM"};
    cache_reply *r = NULL;
    err_info e;
    err_clear(&e);
    if (command(ev, 6, argv, &r, &e) != ERR_OK) {
        log_warn(NULL, "events: cannot create consumer group: %s", e.msg);
        return false;
    }
    bool ok = !reply_is_error(r, NULL) || reply_is_error(r, "BUSYGROUP");
    if (!ok) {
        size_t len;
        log_warn(NULL, "events: XGROUP CREATE: %s", cache_reply_str(r, &len));
    }
    cache_reply_free(r);
    return ok;
}

static const char *str_of(const cache_reply *r)
{
    size_t len = 0;
    if (!r || cache_reply_kind(r) != CACHE_REPLY_STRING)
        return NULL;
    return cache_reply_str(r, &len);
}

static bool ack(perm_events *ev, const char *id)
{
    const char *argv[] = {"XACK", PERM_EVENTS_STREAM, PERM_EVENTS_GROUP, id};
    cache_reply *r = NULL;
    err_info e;
    err_clear(&e);
    bool ok = command(ev, 4, argv, &r, &e) == ERR_OK && !reply_is_error(r, NULL);
    cache_reply_free(r);
    if (ok)
        atomic_fetch_add(&ev->acked, 1);
    return ok;
}

/* One stream entry [id, [field, value, ...]] (fields may be nil when the entry was trimmed).
 * Returns false when it must be retried later (not acknowledged). */
static bool process_entry(perm_events *ev, const cache_reply *entry)
{
    if (!entry || cache_reply_kind(entry) != CACHE_REPLY_ARRAY || cache_reply_len(entry) < 1)
        return true;
    const char *id = str_of(cache_reply_at(entry, 0));
    if (!id)
        return true;
    const char *type = "", *user_id = "", *event_id = "";
    const cache_reply *fields = cache_reply_len(entry) > 1 ? cache_reply_at(entry, 1) : NULL;
    if (fields && cache_reply_kind(fields) == CACHE_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < cache_reply_len(fields); i += 2) {
            const char *k = str_of(cache_reply_at(fields, i));
            const char *v = str_of(cache_reply_at(fields, i + 1));
            if (!k || !v)
                continue;
            if (strcmp(k, "type") == 0)
                type = v;
            else if (strcmp(k, "user_id") == 0)
                user_id = v;
            else if (strcmp(k, "event_id") == 0)
                event_id = v;
        }
    }
    if (strcmp(type, "user.deleted") == 0) {
        if (!perm_user_id_valid(user_id)) {
            /* A poison entry must not block the stream: log it and acknowledge. */
            log_warn(NULL, "events: user.deleted %s with a malformed user_id: skipped", id);
        } else {
            char uid[PERM_USER_ID_LEN + 1];
            perm_user_id_normalize(user_id, uid);
            char evid[80];
            snprintf(evid, sizeof evid, "%s", event_id);
            arena *a = arena_new(0);
            perm_call call = {.deadline_ms = mono_ms() + 10000, .log = NULL, .arena = a};
            err_info e;
            err_clear(&e);
            err_code rc = perm_service_user_deleted(ev->svc, &call, uid, evid, &e);
            arena_free(a);
            if (rc != ERR_OK) {
                log_warn(NULL, "events: user.deleted %s for %s not applied (will retry): %s", id,
                         uid, e.msg);
                return false;
            }
            log_info(NULL, "events: user %s deleted: assignments removed (entry %s)", uid, id);
        }
    }
    return ack(ev, id);
}

/* Processes the entries of an array; returns false at the first one to retry. */
static bool process_entries(perm_events *ev, const cache_reply *entries, size_t *count)
{
    *count = 0;
    if (!entries || cache_reply_kind(entries) != CACHE_REPLY_ARRAY)
        return true;
    for (size_t i = 0; i < cache_reply_len(entries); i++) {
        (*count)++;
        if (!process_entry(ev, cache_reply_at(entries, i)))
            return false;
    }
    return true;
}

/* XAUTOCLAIM everything idle for claim_idle_ms in other (dead) consumers, and process it.
 * Returns false when Redis failed or an entry must be retried. */
static bool claim_all(perm_events *ev)
{
    char start[64] = "0-0", idle[24];
    snprintf(idle, sizeof idle, "%d", ev->o.claim_idle_ms);
    for (int round = 0; round < 1000 && !atomic_load(&ev->stop); round++) {
        const char *argv[] = {
            "XAUTOCLAIM", PERM_EVENTS_STREAM, PERM_EVENTS_GROUP, ev->consumer, idle, start, "COUNT",
            "100"};
        cache_reply *r = NULL;
        err_info e;
        err_clear(&e);
        if (command(ev, 8, argv, &r, &e) != ERR_OK || reply_is_error(r, NULL) ||
            cache_reply_kind(r) != CACHE_REPLY_ARRAY || cache_reply_len(r) < 2) {
            cache_reply_free(r);
            return false;
        }
        size_t n = 0;
        bool ok = process_entries(ev, cache_reply_at(r, 1), &n);
        if (n)
            log_info(NULL, "events: claimed %zu pending entries from dead consumers", n);
        const char *next = str_of(cache_reply_at(r, 0));
        snprintf(start, sizeof start, "%s", next ? next : "0-0");
        cache_reply_free(r);
        if (!ok)
            return false;
        if (strcmp(start, "0-0") == 0)
            return true;
    }
    return true;
}

/* XREADGROUP; id "0" re-reads our own pending entries (after a failure), ">" reads new ones.
 * Returns -1 on a Redis failure, -2 when the group is gone, -3 when an entry must be retried,
 * else the number of entries read. */
static int read_batch(perm_events *ev, const char *id)
{
    char block[16];
    snprintf(block, sizeof block, "%d", ev->o.block_ms);
    const char *argv[] = {
        "XREADGROUP", "GROUP", PERM_EVENTS_GROUP, ev->consumer,       "COUNT", "100",
        "BLOCK",      block,   "STREAMS",         PERM_EVENTS_STREAM, id};
    const char *argv_nb[] = {
        "XREADGROUP",       "GROUP", PERM_EVENTS_GROUP, ev->consumer, "COUNT", "100", "STREAMS",
        PERM_EVENTS_STREAM, id};
    bool blocking = strcmp(id, ">") == 0;
    cache_reply *r = NULL;
    err_info e;
    err_clear(&e);
    err_code rc = blocking ? command(ev, 11, argv, &r, &e) : command(ev, 9, argv_nb, &r, &e);
    if (rc != ERR_OK)
        return -1;
    if (reply_is_error(r, "NOGROUP")) {
        cache_reply_free(r);
        return -2;
    }
    if (reply_is_error(r, NULL) || cache_reply_kind(r) != CACHE_REPLY_ARRAY) {
        bool nil = cache_reply_kind(r) == CACHE_REPLY_NIL;
        cache_reply_free(r);
        return nil ? 0 : -1;
    }
    int total = 0;
    bool ok = true;
    for (size_t s = 0; s < cache_reply_len(r) && ok; s++) {
        const cache_reply *stream = cache_reply_at(r, s);
        if (cache_reply_kind(stream) != CACHE_REPLY_ARRAY || cache_reply_len(stream) < 2)
            continue;
        size_t n = 0;
        ok = process_entries(ev, cache_reply_at(stream, 1), &n);
        total += (int)n;
    }
    cache_reply_free(r);
    return ok ? total : -3;
}

static void *events_main(void *arg)
{
    perm_events *ev = arg;
    bool group_ready = false, own_pending = true;
    int64_t next_claim = 0;
    int backoff = 100;
    while (!atomic_load(&ev->stop)) {
        if (!group_ready) {
            group_ready = ensure_group(ev);
            if (!group_ready) {
                nap(ev, backoff);
                backoff = backoff < 5000 ? backoff * 2 : 5000;
                continue;
            }
        }
        if (mono_ms() >= next_claim) {
            if (!claim_all(ev))
                own_pending = true;
            next_claim = mono_ms() + ev->o.claim_interval_ms;
        }
        int n = read_batch(ev, own_pending ? "0" : ">");
        if (n == -2) {
            group_ready = false;
            continue;
        }
        if (n < 0) {
            own_pending = true;
            nap(ev, backoff);
            backoff = backoff < 5000 ? backoff * 2 : 5000;
            continue;
        }
        backoff = 100;
        if (own_pending && n == 0)
            own_pending = false;
    }
    cache_disconnect_thread(ev->redis);
    return NULL;
}

perm_events *perm_events_start(perm_service *svc, cache *redis, const perm_events_opts *o,
                               err_info *e)
{
    perm_events *ev = xcalloc(1, sizeof *ev);
    ev->svc = svc;
    ev->redis = redis;
    ev->o = *o;
    if (ev->o.block_ms <= 0)
        ev->o.block_ms = 500;
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(ev->consumer, sizeof ev->consumer, "%s-%d", host, (int)getpid());
    atomic_init(&ev->stop, false);
    atomic_init(&ev->acked, 0);
    if (pthread_create(&ev->thread, NULL, events_main, ev) != 0) {
        free(ev);
        err_set(e, ERR_INTERNAL, "events: cannot start thread");
        return NULL;
    }
    log_info(NULL, "events: consuming %s as %s/%s", PERM_EVENTS_STREAM, PERM_EVENTS_GROUP,
             ev->consumer);
    return ev;
}

void perm_events_stop(perm_events *ev)
{
    if (!ev)
        return;
    atomic_store(&ev->stop, true);
    pthread_join(ev->thread, NULL);
    free(ev);
}

unsigned long perm_events_acked(perm_events *ev)
{
    return atomic_load(&ev->acked);
}
