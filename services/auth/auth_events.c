/* auth_events: XREADGROUP/XAUTOCLAIM loop on events.user; see auth_events.h. */
#include "auth_events.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mem.h"

struct auth_events {
    auth_service *svc;
    cache *redis;
    auth_events_opts o;
    char consumer[96];
    atomic_bool stop;
    pthread_t thread;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms, waking early when asked to stop. */
static void nap(auth_events *ev, int ms)
{
    while (ms > 0 && !atomic_load(&ev->stop)) {
        int step = ms < 50 ? ms : 50;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static bool is_error(const cache_reply *r, const char *prefix)
{
    if (!r || cache_reply_kind(r) != CACHE_REPLY_ERROR)
        return false;
    size_t l = 0;
    const char *s = cache_reply_str(r, &l);
    return !prefix || (s && strncmp(s, prefix, strlen(prefix)) == 0);
}

static const char *str_of(const cache_reply *r)
{
    size_t l = 0;
    return r && cache_reply_kind(r) == CACHE_REPLY_STRING ? cache_reply_str(r, &l) : NULL;
}

static err_code command(auth_events *ev, int argc, const char **argv, cache_reply **r)
{
    err_info e;
    err_clear(&e);
    return cache_command(ev->redis, argc, argv, NULL, r, &e);
}

static bool ensure_group(auth_events *ev)
{
    /* From the stream's start: deletions published while auth was down are still acted on. */
    const char *argv[] = {"XGROUP", "CREATE", AUTH_EVENTS_STREAM, AUTH_EVENTS_GROUP, "0",
                          "MKSTREAM"};
    cache_reply *r = NULL;
    if (command(ev, 6, argv, &r) != ERR_OK)
        return false;
    bool ok = !is_error(r, NULL) || is_error(r, "BUSYGROUP");
    cache_reply_free(r);
    return ok;
}

static bool uuid_ok(const char *s)
{
    if (strlen(s) != AUTH_UUID_LEN)
        return false;
    for (int i = 0; i < AUTH_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

/* Entry [id, [k, v, ...]]. false = not acknowledged, retry later. */
static bool process_entry(auth_events *ev, const cache_reply *entry)
{
    if (!entry || cache_reply_kind(entry) != CACHE_REPLY_ARRAY || cache_reply_len(entry) < 1)
        return true;
    const char *id = str_of(cache_reply_at(entry, 0));
    if (!id)
        return true;
    const char *type = "", *user_id = "", *event_id = "";
    const cache_reply *f = cache_reply_len(entry) > 1 ? cache_reply_at(entry, 1) : NULL;
    for (size_t i = 0; f && cache_reply_kind(f) == CACHE_REPLY_ARRAY && i + 1 < cache_reply_len(f);
         i += 2) {
        const char *k = str_of(cache_reply_at(f, i)), *v = str_of(cache_reply_at(f, i + 1));
        if (!k || !v)
            continue;
        if (strcmp(k, "type") == 0)
            type = v;
        else if (strcmp(k, "user_id") == 0)
            user_id = v;
        else if (strcmp(k, "event_id") == 0)
            event_id = v;
    }
    if (strcmp(type, "user.deleted") == 0) {
        if (!uuid_ok(user_id)) {
            log_warn(NULL, "events: entry %s: user.deleted with a malformed user_id: skipped", id);
        } else {
            char rid[96];
            snprintf(rid, sizeof rid, "event:%.80s", event_id);
            log_ctx lc = {.request_id = rid};
            err_info e;
            err_clear(&e);
            if (auth_service_user_deleted(ev->svc, user_id, &lc, &e) != ERR_OK) {
                log_warn(&lc, "events: entry %s (user.deleted %s) not applied, will retry: %s", id,
                         user_id, e.msg);
                return false;
            }
        }
    }
    const char *argv[] = {"XACK", AUTH_EVENTS_STREAM, AUTH_EVENTS_GROUP, id};
    cache_reply *r = NULL;
    bool ok = command(ev, 4, argv, &r) == ERR_OK && !is_error(r, NULL);
    cache_reply_free(r);
    return ok;
}

static bool process_entries(auth_events *ev, const cache_reply *entries, size_t *n)
{
    *n = 0;
    if (!entries || cache_reply_kind(entries) != CACHE_REPLY_ARRAY)
        return true;
    for (size_t i = 0; i < cache_reply_len(entries); i++) {
        (*n)++;
        if (!process_entry(ev, cache_reply_at(entries, i)))
            return false;
    }
    return true;
}

/* Claims and processes entries idle in any consumer (ourselves included) for claim_idle_ms. */
static bool claim_all(auth_events *ev)
{
    char start[64] = "0-0", idle[24];
    snprintf(idle, sizeof idle, "%d", ev->o.claim_idle_ms);
    for (int round = 0; round < 1000 && !atomic_load(&ev->stop); round++) {
        const char *argv[] = {"XAUTOCLAIM", AUTH_EVENTS_STREAM, AUTH_EVENTS_GROUP, ev->consumer,
                              idle, start, "COUNT", "100"};
        cache_reply *r = NULL;
        if (command(ev, 8, argv, &r) != ERR_OK || is_error(r, NULL) ||
            cache_reply_kind(r) != CACHE_REPLY_ARRAY || cache_reply_len(r) < 2) {
            cache_reply_free(r);
            return false;
        }
        size_t n = 0;
        bool ok = process_entries(ev, cache_reply_at(r, 1), &n);
        if (n)
            log_info(NULL, "events: claimed %zu pending entries", n);
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

/* id ">" = new entries (blocking), "0" = our own pending ones. -1 Redis failure, -2 no group,
 * -3 an entry to retry, else entries read. */
static int read_batch(auth_events *ev, const char *id)
{
    char block[16];
    snprintf(block, sizeof block, "%d", ev->o.block_ms);
    bool blocking = strcmp(id, ">") == 0;
    const char *argv[] = {"XREADGROUP", "GROUP", AUTH_EVENTS_GROUP, ev->consumer, "COUNT", "100",
                          "BLOCK", block, "STREAMS", AUTH_EVENTS_STREAM, id};
    const char *argv_nb[] = {"XREADGROUP", "GROUP", AUTH_EVENTS_GROUP, ev->consumer, "COUNT", "100",
                             "STREAMS", AUTH_EVENTS_STREAM, id};
    cache_reply *r = NULL;
    if ((blocking ? command(ev, 11, argv, &r) : command(ev, 9, argv_nb, &r)) != ERR_OK)
        return -1;
    if (is_error(r, "NOGROUP")) {
        cache_reply_free(r);
        return -2;
    }
    if (cache_reply_kind(r) != CACHE_REPLY_ARRAY) {
        bool nil = cache_reply_kind(r) == CACHE_REPLY_NIL;
        cache_reply_free(r);
        return nil ? 0 : -1;
    }
    int total = 0;
    bool ok = true;
    for (size_t i = 0; i < cache_reply_len(r) && ok; i++) {
        const cache_reply *st = cache_reply_at(r, i);
        if (cache_reply_kind(st) != CACHE_REPLY_ARRAY || cache_reply_len(st) < 2)
            continue;
        size_t n = 0;
        ok = process_entries(ev, cache_reply_at(st, 1), &n);
        total += (int)n;
    }
    cache_reply_free(r);
    return ok ? total : -3;
}

static void *events_main(void *arg)
{
    auth_events *ev = arg;
    bool group = false, own_pending = true;
    int64_t next_claim = 0;
    int backoff = 100;
    while (!atomic_load(&ev->stop)) {
        if (!group) {
            group = ensure_group(ev);
            if (!group) {
                nap(ev, backoff);
                backoff = backoff < 5000 ? backoff * 2 : 5000;
                continue;
            }
            backoff = 100;
        }
        if (mono_ms() >= next_claim) {
            if (!claim_all(ev))
                own_pending = true;
            next_claim = mono_ms() + ev->o.claim_interval_ms;
        }
        int n = read_batch(ev, own_pending ? "0" : ">");
        if (n == -2) {
            group = false;
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
            own_pending = false; /* our pending list is empty: switch to new entries */
    }
    return NULL;
}

auth_events *auth_events_start(auth_service *svc, cache *redis, const auth_events_opts *o)
{
    auth_events *ev = xcalloc(1, sizeof *ev);
    ev->svc = svc;
    ev->redis = redis;
    ev->o = *o;
    if (ev->o.block_ms <= 0)
        ev->o.block_ms = 500;
    if (ev->o.claim_interval_ms <= 0)
        ev->o.claim_interval_ms = 30000;
    char host[64] = "auth";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(ev->consumer, sizeof ev->consumer, "%s-%d", host, (int)getpid());
    atomic_init(&ev->stop, false);
    pthread_create(&ev->thread, NULL, events_main, ev);
    return ev;
}

void auth_events_stop(auth_events *ev)
{
    if (!ev)
        return;
    atomic_store(&ev->stop, true);
    pthread_join(ev->thread, NULL);
    free(ev);
}
