/* auth_hasher: a fixed pool of threads running argon2id jobs from a bounded FIFO; callers block on
 * their job's condition variable. See auth_hasher.h. */
#include "auth_hasher.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <sodium.h>

#include "common/mem.h"

typedef enum job_kind { JOB_HASH, JOB_VERIFY } job_kind;

typedef struct job {
    job_kind kind;
    const char *pw;
    const char *hash; /* verify: the stored hash */
    char out[AUTH_HASH_MAX];
    const auth_hasher_caller *who;
    bool match, needs_rehash, failed, dropped, done;
    pthread_cond_t cv;
    struct job *next;
} job;

struct auth_hasher {
    pthread_mutex_t mu;
    pthread_cond_t work;
    job *head, *tail;
    int queued, running, workers, queue_cap;
    bool stopping;
    pthread_t *threads;
    unsigned long long opslimit;
    size_t memlimit;
    char dummy[AUTH_HASH_MAX];
    unsigned long done, rejected, dropped;
    int nice;
};

static void run_job(auth_hasher *h, job *j)
{
    if (j->kind == JOB_HASH) {
        j->failed = crypto_pwhash_str_alg(j->out, j->pw, strlen(j->pw), h->opslimit, h->memlimit,
                                          crypto_pwhash_ALG_ARGON2ID13) != 0;
        return;
    }
    const char *hash = j->hash ? j->hash : h->dummy;
    /* crypto_pwhash_str_verify picks the algorithm from the string; a non-argon2id string or a
     * garbled one simply does not match. */
    bool ok = crypto_pwhash_str_verify(hash, j->pw, strlen(j->pw)) == 0;
    j->match = ok && j->hash != NULL;
    j->needs_rehash =
        j->match && (strncmp(hash, "$argon2id$", 10) != 0 ||
                     crypto_pwhash_str_needs_rehash(hash, h->opslimit, h->memlimit) != 0);
}

static void *worker(void *arg)
{
    auth_hasher *h = arg;
    pthread_setname_np(pthread_self(), "auth-hash"); /* top -H, perf, gdb */
    /* Hashing yields the CPU to the RPC threads: under a login storm ValidateToken and other cheap
     * calls keep their latency, and logins (which are meant to be slow) absorb the wait. Linux
     * applies nice per thread. Failure (e.g. forbidden) changes nothing else. */
    if (h->nice > 0)
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), h->nice);
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->head && !h->stopping)
            pthread_cond_wait(&h->work, &h->mu);
        if (!h->head)
            break;
        job *j = h->head;
        h->head = j->next;
        if (!h->head)
            h->tail = NULL;
        h->queued--;
        h->running++;
        pthread_mutex_unlock(&h->mu);
        j->dropped = j->who && j->who->gone(j->who->arg);
        if (!j->dropped)
            run_job(h, j);
        pthread_mutex_lock(&h->mu);
        h->running--;
        if (j->dropped)
            h->dropped++;
        else
            h->done++;
        j->done = true;
        pthread_cond_signal(&j->cv);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* Queues j and waits for it. Admission: running + queued may not exceed workers + queue_cap. */
static err_code submit(auth_hasher *h, job *j, err_info *e)
{
    pthread_cond_init(&j->cv, NULL);
    pthread_mutex_lock(&h->mu);
    if (h->stopping || h->queued + h->running >= h->workers + h->queue_cap) {
        h->rejected++;
        pthread_mutex_unlock(&h->mu);
        pthread_cond_destroy(&j->cv);
        e->retry_after_s = 1;
        return err_set(e, ERR_RESOURCE_EXHAUSTED, "password hashing busy, retry later");
    }
    j->next = NULL;
    if (h->tail)
        h->tail->next = j;
    else
        h->head = j;
    h->tail = j;
    h->queued++;
    pthread_cond_signal(&h->work);
    while (!j->done)
        pthread_cond_wait(&j->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    pthread_cond_destroy(&j->cv);
    if (j->dropped)
        return err_set(e, ERR_CANCELLED, "the caller left before its turn to hash");
    return ERR_OK;
}

auth_hasher *auth_hasher_new(const auth_hasher_opts *o, err_info *e)
{
    if (sodium_init() < 0) {
        err_set(e, ERR_INTERNAL, "libsodium init failed");
        return NULL;
    }
    if (o->workers < 1 || o->queue < 0 ||
        (unsigned long long)o->iterations < crypto_pwhash_argon2id_OPSLIMIT_MIN ||
        (size_t)o->memory_kib * 1024u < crypto_pwhash_argon2id_MEMLIMIT_MIN) {
        err_set(e, ERR_INVALID_ARGUMENT,
                "hasher: bad parameters (workers %d, iterations %d, %d KiB)", o->workers,
                o->iterations, o->memory_kib);
        return NULL;
    }
    auth_hasher *h = xcalloc(1, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->work, NULL);
    h->workers = o->workers;
    h->queue_cap = o->queue;
    h->nice = o->nice;
    h->opslimit = (unsigned long long)o->iterations;
    h->memlimit = (size_t)o->memory_kib * 1024u;
    /* The dummy: a real hash of a random password with our parameters, so verifying it for an
     * unknown account costs what a real verification costs. */
    unsigned char rnd[24];
    char pw[49];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(pw, sizeof pw, rnd, sizeof rnd);
    if (crypto_pwhash_str_alg(h->dummy, pw, strlen(pw), h->opslimit, h->memlimit,
                              crypto_pwhash_ALG_ARGON2ID13) != 0) {
        sodium_memzero(pw, sizeof pw);
        err_set(e, ERR_INTERNAL, "hasher: cannot hash (memory?)");
        pthread_cond_destroy(&h->work);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    sodium_memzero(pw, sizeof pw);
    h->threads = xcalloc((size_t)h->workers, sizeof *h->threads);
    for (int i = 0; i < h->workers; i++)
        pthread_create(&h->threads[i], NULL, worker, h);
    return h;
}

void auth_hasher_free(auth_hasher *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_cond_broadcast(&h->work);
    pthread_mutex_unlock(&h->mu);
    for (int i = 0; i < h->workers; i++)
        pthread_join(h->threads[i], NULL);
    free(h->threads);
    pthread_cond_destroy(&h->work);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

err_code auth_hasher_hash(auth_hasher *h, const auth_hasher_caller *who, const char *pw,
                          char out[AUTH_HASH_MAX], err_info *e)
{
    job j;
    memset(&j, 0, sizeof j);
    j.kind = JOB_HASH;
    j.pw = pw;
    j.who = who;
    err_code rc = submit(h, &j, e);
    if (rc)
        return rc;
    if (j.failed)
        return err_set(e, ERR_INTERNAL, "password hashing failed");
    memcpy(out, j.out, AUTH_HASH_MAX);
    sodium_memzero(j.out, sizeof j.out);
    return ERR_OK;
}

err_code auth_hasher_verify(auth_hasher *h, const auth_hasher_caller *who, const char *hash,
                            const char *pw, bool *match, bool *needs_rehash, err_info *e)
{
    job j;
    memset(&j, 0, sizeof j);
    j.kind = JOB_VERIFY;
    j.pw = pw;
    j.hash = hash;
    j.who = who;
    err_code rc = submit(h, &j, e);
    if (rc)
        return rc;
    *match = j.match;
    if (needs_rehash)
        *needs_rehash = j.needs_rehash;
    return ERR_OK;
}

void auth_hasher_stats_get(auth_hasher *h, auth_hasher_stats *out)
{
    pthread_mutex_lock(&h->mu);
    out->done = h->done;
    out->rejected = h->rejected;
    out->dropped = h->dropped;
    out->queued = h->queued;
    out->running = h->running;
    pthread_mutex_unlock(&h->mu);
}
