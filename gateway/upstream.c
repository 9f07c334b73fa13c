/* upstream: the gateway's clients to auth, user and permission (asynchronous calls are started by
 * http_server through upstream_client), and the signing-key refresher. */
#include "upstream.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/v1/auth.pb-c.h"
#include "common/log.h"
#include "common/pbjson.h"

struct upstream {
    rpc_client *c[SVC_COUNT];
    pthread_t th;
    bool th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    authn *an;
    int refresh_s;
    atomic_llong last_kid_refresh;
};

static const char *const NAMES[SVC_COUNT] = {"auth", "user", "permission"};

const char *upstream_name(routes_svc s)
{
    return s >= 0 && s < SVC_COUNT ? NAMES[s] : "none";
}

breaker *upstream_breaker(upstream *u, routes_svc s)
{
    return s >= 0 && s < SVC_COUNT ? rpc_client_breaker(u->c[s]) : NULL;
}

upstream *upstream_new(const gw_config *cfg, const rpc_client_policy *policy, metrics_registry *mr,
                       err_info *e)
{
    upstream *u = xcalloc(1, sizeof *u);
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    const char *addrs[SVC_COUNT] = {cfg->auth_addr, cfg->user_addr, cfg->permission_addr};
    for (int i = 0; i < SVC_COUNT; i++) {
        rpc_client_opts o = {addrs[i], NAMES[i], cfg->request_timeout_ms, 4 * 1024 * 1024};
        /* The client owns the breaker, retries and deadline margin; it also logs each breaker
         * transition and exports circuit_breaker_state{target}. */
        rpc_client_ext_opts x = {.policy = policy, .metrics = mr};
        u->c[i] = rpc_client_new_ext(&o, &x, e);
        if (!u->c[i]) {
            upstream_free(u);
            return NULL;
        }
    }
    return u;
}

void upstream_free(upstream *u)
{
    if (!u)
        return;
    if (u->th_started) {
        pthread_mutex_lock(&u->mu);
        u->stop = true;
        pthread_cond_broadcast(&u->cv);
        pthread_mutex_unlock(&u->mu);
        pthread_join(u->th, NULL);
    }
    for (int i = 0; i < SVC_COUNT; i++) {
        rpc_client_free(u->c[i]);
    }
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    free(u);
}

rpc_client *upstream_client(upstream *u, routes_svc s)
{
    return s >= 0 && s < SVC_COUNT ? u->c[s] : NULL;
}

err_code upstream_fetch_jwks(upstream *u, authn *an, int timeout_ms, err_info *e)
{
    arena *a = arena_new(0);
    Auth__V1__GetJwksRequest req = AUTH__V1__GET_JWKS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_call_opts o = {.deadline_ms = rpc_now_ms() + timeout_ms};
    err_code rc = rpc_client_call(u->c[SVC_AUTH], "/auth.v1.AuthService/GetJwks", &req.base,
                                  &auth__v1__jwks__descriptor, &o, a, &resp, e);
    if (rc == ERR_OK) {
        size_t len = 0;
        pbjson_opts po = {true};
        char *json = pbjson_encode(resp, &po, a, &len);
        rc = authn_set_jwks(an, json, len, e);
    }
    arena_free(a);
    return rc;
}

bool upstream_refresh_keys_now(upstream *u, authn *an)
{
    long long now = (long long)rpc_now_ms();
    long long last = atomic_load(&u->last_kid_refresh);
    if (last && now - last < 10000)
        return false;
    if (!atomic_compare_exchange_strong(&u->last_kid_refresh, &last, now))
        return false;
    err_info e;
    err_clear(&e);
    if (upstream_fetch_jwks(u, an, 1000, &e) != ERR_OK) {
        log_warn(NULL, "jwks refresh after unknown kid failed: %s", e.msg);
        return false;
    }
    log_info(NULL, "jwks refreshed after an unknown kid");
    return true;
}

static void *refresher(void *arg)
{
    upstream *u = arg;
    pthread_setname_np(pthread_self(), "jwks-refresh"); /* top -H, perf, gdb */
    bool loaded = false;
    for (;;) {
        err_info e;
        err_clear(&e);
        if (upstream_fetch_jwks(u, u->an, 2000, &e) == ERR_OK) {
            if (!loaded)
                log_info(NULL, "jwks loaded from auth");
            loaded = true;
        } else {
            log_warn(NULL, "jwks fetch failed (%s): %s", err_str(e.code), e.msg);
        }
        int wait_s = loaded ? u->refresh_s : 1;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait_s;
        pthread_mutex_lock(&u->mu);
        while (!u->stop) {
            if (pthread_cond_timedwait(&u->cv, &u->mu, &ts) != 0)
                break;
        }
        bool stop = u->stop;
        pthread_mutex_unlock(&u->mu);
        if (stop)
            return NULL;
    }
}

void upstream_start_key_refresher(upstream *u, authn *an, int refresh_s)
{
    u->an = an;
    u->refresh_s = refresh_s;
    if (pthread_create(&u->th, NULL, refresher, u) == 0)
        u->th_started = true;
}
