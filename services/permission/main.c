/* permission-service: the svc_def of the permission service (options, start/stop) handed to
 * svc_main. */
#include <stddef.h>
#include <stdlib.h>

#include "common/svc.h"
#include "permission_events.h"
#include "permission_rpc.h"
#include "permission_service.h"

extern const db_migration permission_migrations[];
extern const size_t permission_nmigrations;

typedef struct perm_config {
    int cache_size;
    int cache_max_age_ms;
    bool events_enabled;
    int events_claim_idle_ms;
    int events_claim_interval_ms;
} perm_config;

static const config_opt perm_opts[] = {
    {"PERMISSION_CACHE_SIZE", CONFIG_INT, offsetof(perm_config, cache_size), "65536", 0, 10000000,
     "users whose effective permissions are cached in process (0 = no cache)"},
    {"PERMISSION_CACHE_MAX_AGE_MS", CONFIG_INT, offsetof(perm_config, cache_max_age_ms), "60000", 0,
     86400000, "a cached set older than this is recomputed even if still current (0 = no limit)"},
    {"PERMISSION_EVENTS_ENABLED", CONFIG_BOOL, offsetof(perm_config, events_enabled), "true", 0, 0,
     "consume the events.user stream (user.deleted removes assignments)"},
    {"PERMISSION_EVENTS_CLAIM_IDLE_MS", CONFIG_INT, offsetof(perm_config, events_claim_idle_ms),
     "60000", 0, 86400000,
     "entries pending this long in another consumer are claimed (XAUTOCLAIM min-idle-time)"},
    {"PERMISSION_EVENTS_CLAIM_INTERVAL_MS", CONFIG_INT,
     offsetof(perm_config, events_claim_interval_ms), "30000", 100, 86400000,
     "how often to look for pending entries of dead consumers"},
};

/* The in-process permission cache as metrics (SPEC §4: cache hits / misses). */
typedef struct perm_metrics {
    perm_service *svc;
    metrics_series *hit, *miss, *evictions, *clears;
} perm_metrics;

static void perm_collect(void *arg)
{
    perm_metrics *m = arg;
    perm_cache_stats st;
    perm_service_cache_stats(m->svc, &st);
    metrics_gauge_set(m->hit, (double)st.hits);
    metrics_gauge_set(m->miss, (double)st.misses);
    metrics_gauge_set(m->evictions, (double)st.evictions);
    metrics_gauge_set(m->clears, (double)st.clears);
}

static void perm_metrics_register(perm_state *st, metrics_registry *r)
{
    static const char *const labels[] = {"result", NULL};
    static const char *const hit[] = {"hit"}, *const miss[] = {"miss"};
    perm_metrics *m = xcalloc(1, sizeof *m);
    m->svc = st->svc;
    metrics_family *f =
        metrics_family_new(r, METRICS_COUNTER, "permission_cache_requests_total",
                           "Check lookups in the in-process cache, by result.", labels, NULL, 0);
    m->hit = metrics_series_get(f, hit);
    m->miss = metrics_series_get(f, miss);
    f = metrics_family_new(r, METRICS_COUNTER, "permission_cache_evictions_total",
                           "Cached users evicted for room.", NULL, NULL, 0);
    m->evictions = metrics_series_get(f, NULL);
    f = metrics_family_new(r, METRICS_COUNTER, "permission_cache_clears_total",
                           "Whole-cache clears after a Redis error.", NULL, NULL, 0);
    m->clears = metrics_series_get(f, NULL);
    st->metrics = m;
    metrics_on_collect(r, perm_collect, m);
}

static err_code perm_start(svc_env *env, err_info *e)
{
    const perm_config *pc = env->svc_cfg;
    perm_service_opts so = {.cache_size = (size_t)pc->cache_size,
                            .cache_max_age_ms = pc->cache_max_age_ms};
    perm_state *st = xcalloc(1, sizeof *st);
    st->svc = perm_service_new(env->db, env->cache, &so);
    if (pc->events_enabled) {
        int block = env->cfg->redis_timeout_ms / 2;
        perm_events_opts eo = {.block_ms = block > 1000 ? 1000 : (block < 10 ? 10 : block),
                               .claim_idle_ms = pc->events_claim_idle_ms,
                               .claim_interval_ms = pc->events_claim_interval_ms};
        st->events = perm_events_start(st->svc, env->cache, &eo, e);
        if (!st->events) {
            perm_service_free(st->svc);
            free(st);
            return e->code ? e->code : ERR_INTERNAL;
        }
    }
    env->state = st;
    if (env->metrics)
        perm_metrics_register(st, env->metrics);
    return ERR_OK;
}

static void perm_stop(svc_env *env)
{
    perm_state *st = env->state;
    if (!st)
        return;
    perm_events_stop(st->events);
    perm_service_free(st->svc);
    free(st->metrics); /* the registry outlives stop(); it is freed after, with no scrape running */
    free(st);
    env->state = NULL;
}

int main(int argc, char **argv)
{
    static const svc_def def = {
        .name = "permission",
        .grpc_service = "permission.v1.PermissionService",
        .schema = "permissions",
        .default_listen = "0.0.0.0:50053",
        .default_metrics = "0.0.0.0:9093",
        .default_database_url = "host=127.0.0.1 port=5432 dbname=identity user=permission_svc",
        .default_rpc_threads = "4",
        .migrations = permission_migrations,
        .nmigrations = 0, /* set below: a const size_t is not a constant expression in C */
        .methods = permission_rpc_methods,
        .nmethods = 0,
        .opts = perm_opts,
        .nopts = sizeof perm_opts / sizeof perm_opts[0],
        .cfg_size = sizeof(perm_config),
        .start = perm_start,
        .stop = perm_stop,
    };
    svc_def d = def;
    d.nmigrations = permission_nmigrations;
    d.nmethods = permission_rpc_nmethods;
    return svc_main(&d, argc, argv);
}
