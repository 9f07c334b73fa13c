/* auth_hasher: argon2id (libsodium) on a bounded pool of worker threads, so that hashing never
 * stalls the RPC threads; a full queue is refused at once (RESOURCE_EXHAUSTED). */
#ifndef AUTH_HASHER_H
#define AUTH_HASHER_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

/* crypto_pwhash_STRBYTES (128) */
#define AUTH_HASH_MAX 128

typedef struct auth_hasher_opts {
    int workers;    /* threads (>= 1) */
    int queue;      /* jobs waiting beyond those running (>= 0) */
    int iterations; /* argon2id t (opslimit) */
    int memory_kib; /* argon2id m in KiB */
    int nice;       /* worker thread niceness (0 = as the process; > 0 = yield to RPCs) */
} auth_hasher_opts;

typedef struct auth_hasher auth_hasher;

/* Who waits for a job. gone(arg) true = the caller left (it cancelled, or its deadline passed):
 * a job still queued when a worker reaches it is dropped (ERR_CANCELLED) instead of hashed for
 * nobody, so a storm of abandoned sign-ins cannot fill the queue and refuse the live ones.
 * NULL = always wanted. */
typedef struct auth_hasher_caller {
    bool (*gone)(const void *arg);
    const void *arg;
} auth_hasher_caller;

/* Starts the workers and computes the dummy hash used for unknown accounts. NULL with e set on bad
 * parameters (libsodium limits). */
auth_hasher *auth_hasher_new(const auth_hasher_opts *o, err_info *e);
/* Finishes queued jobs, joins the workers. NULL ok. */
void auth_hasher_free(auth_hasher *h);

/* Hashes pw into out ("$argon2id$..." NUL-terminated). ERR_RESOURCE_EXHAUSTED (retry_after_s 1)
 * when the queue is full; ERR_CANCELLED when who left before a worker took the job; ERR_INTERNAL
 * if libsodium fails (out of memory). Blocks the caller until a worker is done. Thread-safe. */
err_code auth_hasher_hash(auth_hasher *h, const auth_hasher_caller *who, const char *pw,
                          char out[AUTH_HASH_MAX], err_info *e);

/* Verifies pw against hash (NULL hash = the dummy hash: same cost, never matches). *match and
 * *needs_rehash (hash made with other parameters than ours) are written on ERR_OK. Errors as
 * auth_hasher_hash. */
err_code auth_hasher_verify(auth_hasher *h, const auth_hasher_caller *who, const char *hash,
                            const char *pw, bool *match, bool *needs_rehash, err_info *e);

typedef struct auth_hasher_stats {
    unsigned long done, rejected, dropped; /* dropped: the caller left before its turn */
    int queued, running;
} auth_hasher_stats;
void auth_hasher_stats_get(auth_hasher *h, auth_hasher_stats *out);

#endif
