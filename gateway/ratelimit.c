/* ratelimit: GCRA (generic cell rate algorithm) in one atomic Lua script so every gateway replica
 * shares the limit; the same arithmetic runs in-process when Redis is down, so requests are limited
 * per process rather than refused. Redis' own clock (TIME) is used so replicas agree. */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "common/fmt.h"
#include "common/log.h"
#include "common/mem.h"

const char RATELIMIT_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
    "local T = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tat < now then tat = now end\n"
    "local new_tat = tat + T\n"
    "local allow_at = new_tat - T * burst\n"
    "if now < allow_at then\n"
    "  return {0, 0, math.ceil((tat - now) / 1000), math.ceil((allow_at - now) / 1000)}\n"
    "end\n"
    "redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now))\n"
    "return {1, math.floor((now + T * burst - new_tat) / T), math.ceil((new_tat - now) / 1000), "
    "0}\n";

void ratelimit_gcra(double *tat, double now, int limit, rl_result *out)
{
    memset(out, 0, sizeof *out);
    out->limit = limit;
    double T = 60000.0 / limit;
    double t = *tat < now ? now : *tat;
    double new_tat = t + T;
    double allow_at = new_tat - T * limit;
    if (now < allow_at) {
        out->allowed = false;
        out->remaining = 0;
        out->reset_s = (int)ceil((t - now) / 1000.0);
        out->retry_after_s = (int)ceil((allow_at - now) / 1000.0);
        if (out->retry_after_s < 1)
            out->retry_after_s = 1;
        return;
    }
    *tat = new_tat;
    out->allowed = true;
    out->remaining = (int)floor((now + T * limit - new_tat) / T);
    out->reset_s = (int)ceil((new_tat - now) / 1000.0);
}

#define LOCAL_SLOTS 4096

typedef struct local_slot {
    char key[96];
    double tat;
} local_slot;

struct ratelimit {
    cache *c;
    char sha[48]; /* SHA1 of RATELIMIT_LUA, what EVALSHA names; constant after ratelimit_new */
    pthread_mutex_t mu;
    local_slot *slots;
    int64_t last_warn;
};

ratelimit *ratelimit_new(cache *c)
{
    ratelimit *rl = xcalloc(1, sizeof *rl);
    rl->c = c;
    pthread_mutex_init(&rl->mu, NULL);
    rl->slots = xcalloc(LOCAL_SLOTS, sizeof *rl->slots);
    /* Redis names a script by the SHA1 of its text: knowing it up front lets every request go out
     * as EVALSHA in one pipelined round trip; a NOSCRIPT answer (new or restarted Redis) loads it.
     */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(RATELIMIT_LUA, strlen(RATELIMIT_LUA), md, &mdlen, EVP_sha1(), NULL);
    fmt_hex(md, mdlen, rl->sha); /* SHA-1: 41 bytes of the 48 */
    return rl;
}

void ratelimit_free(ratelimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->mu);
    free(rl->slots);
    free(rl);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void local_check(ratelimit *rl, const char *key, int limit, rl_result *out)
{
    local_slot *s = &rl->slots[fnv(key) % LOCAL_SLOTS];
    pthread_mutex_lock(&rl->mu);
    if (strncmp(s->key, key, sizeof s->key - 1) != 0) {
        /* Collision or new key: the slot is taken over (bounded memory, slightly lenient). */
        snprintf(s->key, sizeof s->key, "%s", key);
        s->tat = 0;
    }
    ratelimit_gcra(&s->tat, now_ms(), limit, out);
    pthread_mutex_unlock(&rl->mu);
    out->fallback = true;
}

/* cache_command with lengths computed from NUL-terminated arguments. */
static err_code cmd(cache *c, int argc, const char **argv, cache_reply **r)
{
    size_t lens[8];
    err_info e;
    err_clear(&e);
    for (int i = 0; i < argc && i < 8; i++)
        lens[i] = strlen(argv[i]);
    return cache_command(c, argc, argv, lens, r, &e);
}

static bool parse_reply(const cache_reply *r, int limit, rl_result *out)
{
    if (!r || cache_reply_kind(r) != CACHE_REPLY_ARRAY || cache_reply_len(r) != 4)
        return false;
    memset(out, 0, sizeof *out);
    out->limit = limit;
    out->allowed = cache_reply_int(cache_reply_at(r, 0)) == 1;
    out->remaining = (int)cache_reply_int(cache_reply_at(r, 1));
    out->reset_s = (int)cache_reply_int(cache_reply_at(r, 2));
    out->retry_after_s = (int)cache_reply_int(cache_reply_at(r, 3));
    if (!out->allowed && out->retry_after_s < 1)
        out->retry_after_s = 1;
    if (out->remaining < 0)
        out->remaining = 0;
    return true;
}

/* SCRIPT LOAD (after a NOSCRIPT: new or restarted Redis). */
static bool load_script(ratelimit *rl)
{
    const char *argv[] = {"SCRIPT", "LOAD", RATELIMIT_LUA};
    cache_reply *r = NULL;
    if (cmd(rl->c, 3, argv, &r) != ERR_OK)
        return false;
    size_t n = 0;
    const char *s = cache_reply_str(r, &n);
    bool ok = cache_reply_kind(r) == CACHE_REPLY_STRING && s && strcmp(s, rl->sha) == 0;
    cache_reply_free(r);
    return ok;
}

/* The script's arguments: key "rl:<key>", T = 60000/limit ms between requests (6 decimals,
 * rounded) and burst = limit. Formatted by hand: this runs on every limited request. T needs 13
 * bytes, burst 12 (an int). */
static void script_args(const char *key, int limit, char *rkey, size_t rkey_size, char *T,
                        char *burst)
{
    fmt_cat(rkey, rkey_size, "rl:", key);
    uint64_t micro = (60000ull * 1000000ull + (uint64_t)limit / 2) / (uint64_t)limit;
    size_t n = fmt_u64(T, micro / 1000000);
    T[n] = '.';
    fmt_zpad(T + n + 1, (uint32_t)(micro % 1000000), 6);
    T[n + 7] = 0;
    fmt_i64(burst, limit);
}

void ratelimit_check(ratelimit *rl, const char *key, int limit, rl_result *out)
{
    memset(out, 0, sizeof *out);
    if (limit <= 0) {
        out->allowed = true;
        return;
    }
    if (!rl->c) {
        local_check(rl, key, limit, out);
        return;
    }
    char rkey[128], T[32], burst[16];
    script_args(key, limit, rkey, sizeof rkey, T, burst);
    bool loaded = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt == 1 && !(loaded = load_script(rl)))
            break;
        const char *argv[] = {"EVALSHA", rl->sha, "1", rkey, T, burst};
        cache_reply *r = NULL;
        if (cmd(rl->c, 6, argv, &r) != ERR_OK)
            break;
        if (cache_reply_kind(r) == CACHE_REPLY_ERROR) {
            size_t n;
            const char *s = cache_reply_str(r, &n);
            bool noscript = s && strncmp(s, "NOSCRIPT", 8) == 0;
            cache_reply_free(r);
            if (noscript && !loaded)
                continue;
            break;
        }
        bool ok = parse_reply(r, limit, out);
        cache_reply_free(r);
        if (ok)
            return;
        break;
    }
    local_check(rl, key, limit, out);
}

bool ratelimit_prepare(ratelimit *rl, const char *key, int limit, ratelimit_cmd *cmd)
{
    if (limit <= 0 || !rl->c)
        return false;
    memcpy(cmd->sha, rl->sha, sizeof cmd->sha);
    cmd->limit = limit;
    cmd->raw_key = key;
    script_args(key, limit, cmd->key, sizeof cmd->key, cmd->T, cmd->burst);
    const char *argv[6] = {"EVALSHA", cmd->sha, "1", cmd->key, cmd->T, cmd->burst};
    for (int i = 0; i < 6; i++) {
        cmd->argv[i] = argv[i];
        cmd->lens[i] = strlen(argv[i]);
    }
    return true;
}

void ratelimit_finish(ratelimit *rl, ratelimit_cmd *cmd, const cache_reply *r, rl_result *out)
{
    if (!r) { /* Redis unreachable: no second attempt, decide locally */
        local_check(rl, cmd->raw_key, cmd->limit, out);
        return;
    }
    if (parse_reply(r, cmd->limit, out))
        return;
    /* NOSCRIPT (new or restarted Redis): the slow path loads the script and counts once. */
    ratelimit_check(rl, cmd->raw_key, cmd->limit, out);
}
