/* cache_mux: a queue of Redis jobs drained by one thread. Each round trip carries every job that
 * queued while the previous one was in flight (group commit), so under load one write and one read
 * serve many requests on both sides, and a slow Redis holds queued jobs, not callers' threads.
 * Connection handling (reconnect, backoff, timeouts) is the cache's, on the mux thread. */
#include "common/cache_mux.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

/* Jobs per round trip: bounds the arrays and a batch's wait behind a large one. */
#define CACHE_MUX_MAX_BATCH 256

typedef struct mux_job {
    struct mux_job *next;
    int ncmds;
    cache_mux_cmd cmds[CACHE_MUX_MAX_CMDS];
    cache_mux_cb cb;
    void *arg;
} mux_job;

struct cache_mux {
    cache *c;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mux_job *head, *tail; /* guarded by mu */
    bool idle, stop;      /* guarded by mu */
    atomic_uint_fast64_t jobs, round_trips, failures;
};

/* One round trip for a batch of jobs; every callback runs exactly once. */
static void mux_run_batch(cache_mux *m, mux_job **batch, int njobs)
{
    int argcs[CACHE_MUX_MAX_BATCH * CACHE_MUX_MAX_CMDS];
    const char **argvs[CACHE_MUX_MAX_BATCH * CACHE_MUX_MAX_CMDS];
    const size_t *lens[CACHE_MUX_MAX_BATCH * CACHE_MUX_MAX_CMDS];
    cache_reply *out[CACHE_MUX_MAX_BATCH * CACHE_MUX_MAX_CMDS];
    int n = 0;
    for (int j = 0; j < njobs; j++) {
        for (int i = 0; i < batch[j]->ncmds; i++, n++) {
            argcs[n] = batch[j]->cmds[i].argc;
            argvs[n] = batch[j]->cmds[i].argv;
            lens[n] = batch[j]->cmds[i].lens;
            out[n] = NULL;
        }
    }
    err_info e;
    err_clear(&e);
    err_code rc = cache_pipeline(m->c, n, argcs, argvs, lens, out, &e);
    atomic_fetch_add(&m->round_trips, 1);
    if (rc != ERR_OK) {
        atomic_fetch_add(&m->failures, 1);
        if (e.code == ERR_OK)
            e.code = ERR_UNAVAILABLE;
        for (int i = 0; i < n; i++) {
            cache_reply_free(out[i]);
            out[i] = NULL;
        }
    }
    int k = 0;
    for (int j = 0; j < njobs; j++) {
        mux_job *job = batch[j];
        job->cb(job->arg, &out[k], &e);
        for (int i = 0; i < job->ncmds; i++)
            cache_reply_free(out[k + i]);
        k += job->ncmds;
        free(job);
    }
}

static void *mux_main(void *arg)
{
    cache_mux *m = arg;
    pthread_setname_np(pthread_self(), "cache-mux"); /* top -H, perf, gdb */
    mux_job *batch[CACHE_MUX_MAX_BATCH];
    for (;;) {
        pthread_mutex_lock(&m->mu);
        while (!m->head && !m->stop) {
            m->idle = true;
            pthread_cond_wait(&m->cv, &m->mu);
        }
        m->idle = false;
        int n = 0;
        while (m->head && n < CACHE_MUX_MAX_BATCH) {
            batch[n++] = m->head;
            m->head = m->head->next;
        }
        if (!m->head)
            m->tail = NULL;
        bool done = m->stop && n == 0;
        pthread_mutex_unlock(&m->mu);
        if (done)
            break;
        mux_run_batch(m, batch, n);
    }
    /* This thread's connection belongs to the cache; close it before the thread ends. */
    cache_disconnect_thread(m->c);
    return NULL;
}

cache_mux *cache_mux_new(cache *c, err_info *e)
{
    if (!c) {
        err_set(e, ERR_INVALID_ARGUMENT, "cache_mux: no cache");
        return NULL;
    }
    cache_mux *m = xcalloc(1, sizeof *m);
    m->c = c;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    if (pthread_create(&m->th, NULL, mux_main, m) != 0) {
        err_set(e, ERR_INTERNAL, "cache_mux: cannot start its thread");
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
        free(m);
        return NULL;
    }
    return m;
}

void cache_mux_free(cache_mux *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->th, NULL);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}

err_code cache_mux_submit(cache_mux *m, int ncmds, const cache_mux_cmd *cmds, cache_mux_cb cb,
                          void *arg, err_info *e)
{
    if (ncmds < 1 || ncmds > CACHE_MUX_MAX_CMDS || !cb)
        return err_set(e, ERR_INVALID_ARGUMENT, "cache_mux: 1..%d commands and a callback",
                       CACHE_MUX_MAX_CMDS);
    for (int i = 0; i < ncmds; i++)
        if (cmds[i].argc < 1 || !cmds[i].argv)
            return err_set(e, ERR_INVALID_ARGUMENT, "cache_mux: empty command");
    mux_job *job = xmalloc(sizeof *job);
    job->next = NULL;
    job->ncmds = ncmds;
    memcpy(job->cmds, cmds, (size_t)ncmds * sizeof *cmds);
    job->cb = cb;
    job->arg = arg;
    pthread_mutex_lock(&m->mu);
    if (m->stop) {
        pthread_mutex_unlock(&m->mu);
        free(job);
        return err_set(e, ERR_UNAVAILABLE, "cache_mux: shutting down");
    }
    if (m->tail)
        m->tail->next = job;
    else
        m->head = job;
    m->tail = job;
    /* A busy thread picks the job up after its round trip: wake it only when it sleeps. */
    if (m->idle) {
        m->idle = false;
        pthread_cond_signal(&m->cv);
    }
    atomic_fetch_add(&m->jobs, 1);
    pthread_mutex_unlock(&m->mu);
    return ERR_OK;
}

void cache_mux_stats_get(cache_mux *m, cache_mux_stats *out)
{
    out->jobs = atomic_load(&m->jobs);
    out->round_trips = atomic_load(&m->round_trips);
    out->failures = atomic_load(&m->failures);
}
