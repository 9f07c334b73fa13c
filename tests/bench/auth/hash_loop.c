/* auth_hash_loop: the password-hashing ceiling of this machine: N threads verifying (or hashing)
 * argon2id with libsodium for a fixed time, nothing else. Login/s of auth-service is compared to
 * it. Usage: auth_hash_loop [--threads 2] [--duration 5] [--memory-kib 19456] [--iterations 2]
 *                       [--mode verify|hash] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

static int g_threads = 2, g_duration = 5, g_mem_kib = 19456, g_iter = 2, g_verify = 1;
static char g_hash[crypto_pwhash_STRBYTES];
static atomic_ulong g_ops;
static atomic_bool g_stop;

static const char PW[] = "bench password 123";

static void *run(void *arg)
{
    (void)arg;
    char out[crypto_pwhash_STRBYTES];
    while (!atomic_load(&g_stop)) {
        int rc =
            g_verify
                ? crypto_pwhash_str_verify(g_hash, PW, sizeof PW - 1)
                : crypto_pwhash_str_alg(out, PW, sizeof PW - 1, (unsigned long long)g_iter,
                                        (size_t)g_mem_kib * 1024u, crypto_pwhash_ALG_ARGON2ID13);
        if (rc != 0) {
            fprintf(stderr, "argon2 failed\n");
            exit(1);
        }
        atomic_fetch_add(&g_ops, 1);
    }
    return NULL;
}

static long arg_long(const char *s)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!end || *end || v <= 0) {
        fprintf(stderr, "bad number: %s\n", s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0)
            g_threads = (int)arg_long(argv[i + 1]);
        else if (strcmp(argv[i], "--duration") == 0)
            g_duration = (int)arg_long(argv[i + 1]);
        else if (strcmp(argv[i], "--memory-kib") == 0)
            g_mem_kib = (int)arg_long(argv[i + 1]);
        else if (strcmp(argv[i], "--iterations") == 0)
            g_iter = (int)arg_long(argv[i + 1]);
        else if (strcmp(argv[i], "--mode") == 0)
            g_verify = strcmp(argv[i + 1], "hash") != 0;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (sodium_init() < 0)
        return 1;
    if (crypto_pwhash_str_alg(g_hash, PW, sizeof PW - 1, (unsigned long long)g_iter,
                              (size_t)g_mem_kib * 1024u, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return 1;
    pthread_t *t = calloc((size_t)g_threads, sizeof *t);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < g_threads; i++)
        pthread_create(&t[i], NULL, run, NULL);
    struct timespec d = {g_duration, 0};
    nanosleep(&d, NULL);
    atomic_store(&g_stop, true);
    for (int i = 0; i < g_threads; i++)
        pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    unsigned long n = atomic_load(&g_ops);
    printf("argon2id %s m=%d KiB t=%d, %d threads: %lu in %.2f s = %.1f/s (%.2f ms each)\n",
           g_verify ? "verify" : "hash", g_mem_kib, g_iter, g_threads, n, secs, (double)n / secs,
           n ? secs * 1e3 * g_threads / (double)n : 0.0);
    free(t);
    return 0;
}
