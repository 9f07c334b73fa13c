/* events: the Redis stream consumer-group loop shared by auth and permission; see events.h. */
#include "common/events.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mem.h"
#include "common/uuid.h"

#define EVENTS_BATCH "100" /* entries per XREADGROUP / XAUTOCLAIM */
#define EVENTS_BACKOFF_MIN_MS 100
#define EVENTS_BACKOFF_MAX_MS 5000

struct events_consumer {
    cache *redis;
    char *stream, *group;
    char consumer[128];
    int block_ms, claim_idle_ms, claim_interval_ms;
    events_handler handle;
    void *arg;
    pthread_t thread;
    atomic_bool stop;
    atomic_ulong acked;
};

/* ---- pure parts ---- */

bool events_entry_parse(const char *id, const char *const *kv, size_t n, events_entry *out)
{
    *out = (events_entry){
        .id = id ? id : "", .type = "", .user_id = "", .event_id = "", .occurred_at = ""};
    for (size_t i = 0; kv && i + 1 < n; i += 2) {
        const char *k = kv[i], *v = kv[i + 1];
        if (!k || !v)
            continue;
        if (strcmp(k, "type") == 0)
            out->type = v;
        else if (strcmp(k, "user_id") == 0)
            out->user_id = v;
        else if (strcmp(k, "event_id") == 0)
            out->event_id = v;
        else if (strcmp(k, "occurred_at") == 0)
            out->occurred_at = v;
    }
    return id && *id;
}

bool events_uuid_valid(const char *s)
{
    return uuid_valid(s);
}

/* ---- Redis plumbing ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms, waking early when asked to stop. */
static void nap(events_consumer *c, int ms)
{
    while (ms > 0 && !atomic_load(&c->stop)) {
        int step = ms < 50 ? ms : 50;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static int backoff_next(int ms)
{
    return ms < EVENTS_BACKOFF_MAX_MS ? ms * 2 : EVENTS_BACKOFF_MAX_MS;
}

static bool reply_is_error(const cache_reply *r, const char *prefix)
{
    if (!r || cache_reply_kind(r) != CACHE_REPLY_ERROR)
        return false;
    size_t len = 0;
    const char *s = cache_reply_str(r, &len);
    return !prefix || (s && strncmp(s, prefix, strlen(prefix)) == 0);
}

static const char *str_of(const cache_reply *r)
{
    size_t len = 0;
    return r && cache_reply_kind(r) == CACHE_REPLY_STRING ? cache_reply_str(r, &len) : NULL;
}

static err_code command(events_consumer *c, int argc, const char **argv, cache_reply **out,
                        err_info *e)
{
    return cache_command(c->redis, argc, argv, NULL, out, e);
}

static bool ensure_group(events_consumer *c)
{
    const char *argv[] = {"XGROUP", "CREATE", c->stream, c->group, "0", "MKSTREAM"};
    cache_reply *r = NULL;
    err_info e;
    err_clear(&e);
    if (command(c, 6, argv, &r, &e) != ERR_OK) {
        log_warn(NULL, "events: cannot create consumer group %s: %s", c->group, e.msg);
        return false;
    }
    bool ok = !reply_is_error(r, NULL) || reply_is_error(r, "BUSYGROUP");
    if (!ok) {
        size_t len = 0;
        log_warn(NULL, "events: XGROUP CREATE %s %s: %s", c->stream, c->group,
                 cache_reply_str(r, &len));
    }
    cache_reply_free(r);
    return ok;
}

static bool ack(events_consumer *c, const char *id)
{
    const char *argv[] = {"XACK", c->stream, c->group, id};
    cache_reply *r = NULL;
    err_info e;
    err_clear(&e);
    bool ok = command(c, 4, argv, &r, &e) == ERR_OK && !reply_is_error(r, NULL);
    cache_reply_free(r);
    if (ok)
        atomic_fetch_add(&c->acked, 1);
    return ok;
}

/* One entry [id, [field, value, ...]] (fields nil when the entry was deleted while pending).
 * false = not acknowledged, retry later. */
static bool process_entry(events_consumer *c, const cache_reply *entry)
{
    if (!entry || cache_reply_kind(entry) != CACHE_REPLY_ARRAY || cache_reply_len(entry) < 1)
        return true;
    const char *id = str_of(cache_reply_at(entry, 0));
    const cache_reply *f = cache_reply_len(entry) > 1 ? cache_reply_at(entry, 1) : NULL;
    size_t n = f && cache_reply_kind(f) == CACHE_REPLY_ARRAY ? cache_reply_len(f) : 0;
    const char **kv = n ? xcalloc(n, sizeof *kv) : NULL;
    for (size_t i = 0; i < n; i++)
        kv[i] = str_of(cache_reply_at(f, i));
    events_entry ev;
    bool has_id = events_entry_parse(id, kv, n, &ev);
    bool ok = true;
    if (!has_id) {
        log_warn(NULL, "events: %s entry without an id: skipped", c->stream);
    } else if (!*ev.type) {
        /* A poison entry must not block the stream. */
        log_warn(NULL, "events: entry %s has no type (deleted or malformed): acknowledged", ev.id);
        ok = ack(c, ev.id);
    } else {
        char rid[96];
        snprintf(rid, sizeof rid, "event:%.80s", ev.event_id);
        log_ctx lc = {.request_id = rid};
        err_info e;
        err_clear(&e);
        if (c->handle(c->arg, &ev, &e) != ERR_OK) {
            log_warn(&lc, "events: entry %s (%s %s) not applied, will retry: %s", ev.id, ev.type,
                     ev.user_id, e.msg);
            ok = false;
        } else {
            ok = ack(c, ev.id);
        }
    }
    free(kv);
    return ok;
}

/* Processes an array of entries; false at the first one to retry. *n = entries looked at. */
static bool process_entries(events_consumer *c, const cache_reply *entries, size_t *n)
{
    *n = 0;
    if (!entries || cache_reply_kind(entries) != CACHE_REPLY_ARRAY)
        return true;
    for (size_t i = 0; i < cache_reply_len(entries); i++) {
        (*n)++;
        if (!process_entry(c, cache_reply_at(entries, i)))
            return false;
    }
    return true;
}

/* XAUTOCLAIM and process everything idle for claim_idle_ms in any consumer (dead replicas; our own
 * too). false when Redis failed or an entry must be retried. */
static bool claim_all(events_consumer *c)
{
    char start[64] = "0-0", idle[24];
    snprintf(idle, sizeof idle, "%d", c->claim_idle_ms);
    for (int round = 0; round < 1000 && !atomic_load(&c->stop); round++) {
        const char *argv[] = {"XAUTOCLAIM", c->stream, c->group, c->consumer,
                              idle,         start,     "COUNT",  EVENTS_BATCH};
        cache_reply *r = NULL;
        err_info e;
        err_clear(&e);
        if (command(c, 8, argv, &r, &e) != ERR_OK || reply_is_error(r, NULL) ||
            cache_reply_kind(r) != CACHE_REPLY_ARRAY || cache_reply_len(r) < 2) {
            cache_reply_free(r);
            return false;
        }
        size_t n = 0;
        bool ok = process_entries(c, cache_reply_at(r, 1), &n);
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

/* XREADGROUP: id ">" = new entries (blocking), "0" = our own pending ones (after a failure).
 * -1 Redis failure, -2 group gone, -3 an entry to retry, else entries read. */
static int read_batch(events_consumer *c, const char *id)
{
    char block[16];
    snprintf(block, sizeof block, "%d", c->block_ms);
    bool blocking = strcmp(id, ">") == 0;
    const char *argv[] = {"XREADGROUP", "GROUP", c->group,  c->consumer, "COUNT", EVENTS_BATCH,
                          "BLOCK",      block,   "STREAMS", c->stream,   id};
    const char *argv_nb[] = {"XREADGROUP", "GROUP",   c->group,  c->consumer, "COUNT",
                             EVENTS_BATCH, "STREAMS", c->stream, id};
    cache_reply *r = NULL;
    err_info e;
    err_clear(&e);
    if ((blocking ? command(c, 11, argv, &r, &e) : command(c, 9, argv_nb, &r, &e)) != ERR_OK)
        return -1;
    if (reply_is_error(r, "NOGROUP")) {
        cache_reply_free(r);
        return -2;
    }
    if (cache_reply_kind(r) != CACHE_REPLY_ARRAY) {
        bool nil = cache_reply_kind(r) == CACHE_REPLY_NIL; /* BLOCK timed out */
        cache_reply_free(r);
        return nil ? 0 : -1;
    }
    int total = 0;
    bool ok = true;
    for (size_t s = 0; s < cache_reply_len(r) && ok; s++) {
        const cache_reply *st = cache_reply_at(r, s);
        if (cache_reply_kind(st) != CACHE_REPLY_ARRAY || cache_reply_len(st) < 2)
            continue;
        size_t n = 0;
        ok = process_entries(c, cache_reply_at(st, 1), &n);
        total += (int)n;
    }
    cache_reply_free(r);
    return ok ? total : -3;
}

static void *events_main(void *arg)
{
    events_consumer *c = arg;
    pthread_setname_np(pthread_self(), "events"); /* top -H, perf, gdb */
    bool group = false, own_pending = true;
    int64_t next_claim = 0;
    int backoff = EVENTS_BACKOFF_MIN_MS;
    while (!atomic_load(&c->stop)) {
        if (!group) {
            group = ensure_group(c);
            if (!group) {
                nap(c, backoff);
                backoff = backoff_next(backoff);
                continue;
            }
            backoff = EVENTS_BACKOFF_MIN_MS;
        }
        if (mono_ms() >= next_claim) {
            if (!claim_all(c))
                own_pending = true;
            next_claim = mono_ms() + c->claim_interval_ms;
        }
        int n = read_batch(c, own_pending ? "0" : ">");
        if (n == -2) {
            group = false; /* the stream or group was deleted: recreate */
            continue;
        }
        if (n < 0) {
            own_pending = true;
            nap(c, backoff);
            backoff = backoff_next(backoff);
            continue;
        }
        backoff = EVENTS_BACKOFF_MIN_MS;
        if (own_pending && n == 0)
            own_pending = false; /* our pending list is empty: switch to new entries */
    }
    cache_disconnect_thread(c->redis);
    return NULL;
}

static void consumer_free(events_consumer *c)
{
    free(c->stream);
    free(c->group);
    free(c);
}

events_consumer *events_consumer_start(cache *redis, const events_consumer_opts *o, err_info *e)
{
    if (!redis || !o || !o->stream || !*o->stream || !o->group || !*o->group || !o->handle) {
        err_set(e, ERR_INVALID_ARGUMENT, "events: redis, stream, group and handle are required");
        return NULL;
    }
    events_consumer *c = xcalloc(1, sizeof *c);
    c->redis = redis;
    c->stream = xstrdup(o->stream);
    c->group = xstrdup(o->group);
    c->block_ms = o->block_ms > 0 ? o->block_ms : 500;
    c->claim_idle_ms = o->claim_idle_ms > 0 ? o->claim_idle_ms : 0;
    c->claim_interval_ms = o->claim_interval_ms > 0 ? o->claim_interval_ms : 30000;
    c->handle = o->handle;
    c->arg = o->arg;
    if (o->consumer && *o->consumer) {
        snprintf(c->consumer, sizeof c->consumer, "%s", o->consumer);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(c->consumer, sizeof c->consumer, "%s-%d", host, (int)getpid());
    }
    atomic_init(&c->stop, false);
    atomic_init(&c->acked, 0);
    if (pthread_create(&c->thread, NULL, events_main, c) != 0) {
        consumer_free(c);
        err_set(e, ERR_INTERNAL, "events: cannot start thread");
        return NULL;
    }
    log_info(NULL, "events: consuming %s as %s/%s", o->stream, o->group, c->consumer);
    return c;
}

void events_consumer_stop(events_consumer *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, true);
    pthread_join(c->thread, NULL);
    consumer_free(c);
}

unsigned long events_consumer_acked(events_consumer *c)
{
    return c ? atomic_load(&c->acked) : 0;
}
