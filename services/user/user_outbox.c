/* user_outbox: relay thread from users.outbox to the Redis stream events.user (at-least-once:
 * a crash between XADD and COMMIT re-sends, so consumers act idempotently on event_id). */
#include "user_outbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/mem.h"
#include "user_repo.h"

#define BACKOFF_MAX_MS 5000
#define PURGE_EVERY_MS 60000

struct user_outbox {
    db_pool *db;
    cache *c;
    user_outbox_opts o;
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool woken, stop;
    atomic_long backlog;
    atomic_uint_least64_t sent, errors;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

user_outbox *user_outbox_new(db_pool *db, cache *c, const user_outbox_opts *o)
{
    user_outbox *ob = xcalloc(1, sizeof *ob);
    ob->db = db;
    ob->c = c;
    ob->o = *o;
    if (ob->o.poll_ms <= 0)
        ob->o.poll_ms = 1000;
    if (ob->o.batch <= 0)
        ob->o.batch = 100;
    atomic_store(&ob->backlog, -1);
    pthread_mutex_init(&ob->mu, NULL);
    /* Timed waits on CLOCK_MONOTONIC so a wall-clock jump does not stall the relay. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ob->cv, &ca);
    pthread_condattr_destroy(&ca);
    return ob;
}

void user_outbox_wake(user_outbox *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->woken = true;
    pthread_cond_signal(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
}

long user_outbox_backlog(user_outbox *ob)
{
    return atomic_load(&ob->backlog);
}
uint64_t user_outbox_sent_total(user_outbox *ob)
{
    return atomic_load(&ob->sent);
}
uint64_t user_outbox_errors_total(user_outbox *ob)
{
    return atomic_load(&ob->errors);
}

/* XADD one event; ERR_UNAVAILABLE on transport failure or an error reply. */
static err_code publish(user_outbox *ob, const user_event *ev, err_info *e)
{
    const char *argv[14];
    int n = 0;
    char maxlen[24];
    argv[n++] = "XADD";
    argv[n++] = USER_EVENTS_STREAM;
    if (ob->o.stream_maxlen > 0) {
        snprintf(maxlen, sizeof maxlen, "%ld", ob->o.stream_maxlen);
        argv[n++] = "MAXLEN";
        argv[n++] = "~";
        argv[n++] = maxlen;
    }
    argv[n++] = "*";
    argv[n++] = "type";
    argv[n++] = ev->type;
    argv[n++] = "user_id";
    argv[n++] = ev->user_id;
    argv[n++] = "event_id";
    argv[n++] = ev->event_id;
    argv[n++] = "occurred_at";
    argv[n++] = ev->occurred_at;
    size_t lens[14];
    for (int i = 0; i < n; i++)
        lens[i] = strlen(argv[i]);
    cache_reply *r = NULL;
    err_code rc = cache_command(ob->c, n, argv, lens, &r, e);
    if (rc == ERR_OK && cache_reply_kind(r) == CACHE_REPLY_ERROR) {
        size_t l;
        rc = err_set(e, ERR_UNAVAILABLE, "XADD: %s", cache_reply_str(r, &l));
    }
    cache_reply_free(r);
    if (rc == ERR_OK && strcmp(ev->type, "user.created") != 0) {
        /* The write's own DEL may have failed (Redis blip); repeating it here, from a relay that
         * retries until Redis answers, bounds how long a stale copy can outlive a failed DEL. */
        char key[64];
        snprintf(key, sizeof key, "user:%s", ev->user_id);
        const char *dargv[] = {"DEL", key};
        size_t dlens[] = {3, strlen(key)};
        r = NULL;
        rc = cache_command(ob->c, 2, dargv, dlens, &r, e);
        cache_reply_free(r);
    }
    return rc;
}

err_code user_outbox_run_once(user_outbox *ob, int *sent, err_info *e)
{
    *sent = 0;
    db_conn *c = NULL;
    err_code rc = db_acquire(ob->db, 0, &c, e);
    if (rc)
        return rc;
    arena *a = arena_new(0);
    user_event *evs = NULL;
    size_t n = 0, done = 0;
    err_code pub_rc = ERR_OK;
    err_info pub_e;
    err_clear(&pub_e);
    rc = db_begin(c, e);
    if (!rc)
        rc = user_repo_outbox_claim(c, a, ob->o.batch, &evs, &n, e);
    if (!rc && n > 0) {
        if (!ob->c)
            pub_rc = err_set(&pub_e, ERR_UNAVAILABLE, "no redis configured");
        for (; ob->c && done < n; done++) {
            pub_rc = publish(ob, &evs[done], &pub_e);
            if (pub_rc)
                break;
        }
        if (done > 0) {
            int64_t *ids = arena_alloc(a, sizeof *ids * done);
            for (size_t i = 0; i < done; i++)
                ids[i] = evs[i].id;
            rc = user_repo_outbox_mark_sent(c, a, ids, done, e);
        }
    }
    if (!rc)
        rc = db_commit(c, e);
    else
        db_rollback(c);
    long backlog = 0;
    err_info be;
    err_clear(&be);
    if (!rc && user_repo_outbox_backlog(c, &backlog, &be) == ERR_OK)
        atomic_store(&ob->backlog, backlog);
    db_release(ob->db, c);
    arena_free(a);
    if (rc)
        return rc;
    *sent = (int)done;
    atomic_fetch_add(&ob->sent, done);
    if (pub_rc) {
        atomic_fetch_add(&ob->errors, 1);
        *e = pub_e;
        return ERR_UNAVAILABLE;
    }
    return ERR_OK;
}

static void purge(user_outbox *ob)
{
    if (ob->o.retention_s <= 0)
        return;
    db_conn *c = NULL;
    err_info e;
    err_clear(&e);
    if (db_acquire(ob->db, 0, &c, &e))
        return;
    long deleted = 0;
    if (user_repo_outbox_purge(c, ob->o.retention_s, &deleted, &e))
        log_warn(NULL, "outbox purge failed: %s", e.msg);
    else if (deleted > 0)
        log_debug(NULL, "outbox purged %ld sent events", deleted);
    db_release(ob->db, c);
}

static void *relay_main(void *arg)
{
    user_outbox *ob = arg;
    int wait_ms = 0, fails = 0;
    int64_t next_purge = mono_ms() + PURGE_EVERY_MS;
    for (;;) {
        pthread_mutex_lock(&ob->mu);
        /* While backing off after a failure, a wake (new write) does not cut the wait short. */
        if (wait_ms > 0 && !ob->stop && (fails || !ob->woken)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += wait_ms / 1000;
            ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            while (!ob->stop && (fails || !ob->woken) &&
                   pthread_cond_timedwait(&ob->cv, &ob->mu, &ts) != ETIMEDOUT) {
            }
        }
        bool stop = ob->stop;
        ob->woken = false;
        pthread_mutex_unlock(&ob->mu);
        if (stop)
            break;
        int sent = 0;
        err_info e;
        err_clear(&e);
        err_code rc = user_outbox_run_once(ob, &sent, &e);
        if (rc) {
            fails++;
            if (fails == 1 || fails % 30 == 0)
                log_warn(NULL, "outbox relay failed (attempt %d, backlog %ld): %s", fails,
                         atomic_load(&ob->backlog), e.msg);
            wait_ms = 100 << (fails < 6 ? fails : 6);
            if (wait_ms > BACKOFF_MAX_MS)
                wait_ms = BACKOFF_MAX_MS;
            continue;
        }
        if (fails)
            log_info(NULL, "outbox relay recovered after %d failed attempts (backlog %ld)", fails,
                     atomic_load(&ob->backlog));
        fails = 0;
        /* A full batch means more may be waiting: go again at once. */
        wait_ms = sent >= ob->o.batch ? 0 : ob->o.poll_ms;
        if (mono_ms() >= next_purge) {
            purge(ob);
            next_purge = mono_ms() + PURGE_EVERY_MS;
        }
    }
    return NULL;
}

err_code user_outbox_start(user_outbox *ob, err_info *e)
{
    if (ob->running)
        return ERR_OK;
    if (pthread_create(&ob->thread, NULL, relay_main, ob) != 0)
        return err_set(e, ERR_INTERNAL, "outbox: cannot start the relay thread");
    ob->running = true;
    return ERR_OK;
}

void user_outbox_free(user_outbox *ob)
{
    if (!ob)
        return;
    if (ob->running) {
        pthread_mutex_lock(&ob->mu);
        ob->stop = true;
        pthread_cond_signal(&ob->cv);
        pthread_mutex_unlock(&ob->mu);
        pthread_join(ob->thread, NULL);
        ob->running = false;
    }
    pthread_cond_destroy(&ob->cv);
    pthread_mutex_destroy(&ob->mu);
    free(ob);
}
