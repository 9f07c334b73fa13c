/* fault_redis: Redis stops (`harness redis-stop`) under the whole stack. Asserts: (a) the user
 * service still answers GetUser from the database (direct gRPC, fast); (b) signed-in gateway routes
 * fail closed (503 + Retry-After: revocation cannot be checked), anonymous routes still work with
 * the per-process limiter (JWKS 200 with RateLimit-* headers), and login fails closed (503 +
 * Retry-After: the lockout counters are in Redis); (c) after `harness redis-start` signed-in routes
 * answer 200 again within a few seconds; (d) a user created and one deleted during the outage show
 * up in the stream events.user once Redis is back (the outbox held them). Redis is restarted on
 * every path (atexit + harness ensure). */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rpc_client.h"
#include "fault_common.h"
#include "user/v1/user.pb-c.h"

#define ADMIN_EMAIL "admin@fault-redis.test"
#define ADMIN_PASSWORD "admin-password-123"
#define REDIS_DB 52
#define RECOVER_MS 5000
#define EVENTS_MS 10000
#define M(name) "/user.v1.UserService/" name

static ts_stack g_s;
static int g_ok_stack;
static rpc_client *g_user;
static char g_bob_tok[2048], g_bob_id[64];

static void start_stack(void)
{
    char *all[] = {"ARGON2_MEMORY_KIB=1024",     "ARGON2_ITERATIONS=1",
                   "REDIS_TIMEOUT_MS=300",       "OUTBOX_POLL_MS=100",
                   "RATE_LIMIT_AUTH_RPM=100000", "RATE_LIMIT_ANON_RPM=100000",
                   "RATE_LIMIT_USER_RPM=100000", NULL};
    ts_stack_opts o = {.dbname = "t_fault_redis",
                       .redis_db = REDIS_DB,
                       .admin_email = ADMIN_EMAIL,
                       .admin_password = ADMIN_PASSWORD,
                       .env_all = all};
    CU_ASSERT_EQUAL_FATAL(ts_stack_start(&g_s, &o), 0);
    CU_ASSERT_EQUAL_FATAL(fc_register(g_s.port[TS_GW], "bob@fault-redis.test", "bob-password-1",
                                      g_bob_tok, sizeof g_bob_tok, g_bob_id, sizeof g_bob_id),
                          201);
    err_info e;
    err_clear(&e);
    rpc_client_opts co = {.target = g_s.addr[TS_USER], .name = "user", .default_timeout_ms = 3000};
    g_user = rpc_client_new(&co, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g_user);
    g_ok_stack = 1;
}

static err_code get_user(const char *id, long long *ms, err_info *e)
{
    arena *a = arena_new(0);
    User__V1__GetUserRequest req = USER__V1__GET_USER_REQUEST__INIT;
    req.id = (char *)id;
    ProtobufCMessage *resp = NULL;
    err_clear(e);
    long long t0 = ts_now_ms();
    err_code rc = rpc_client_call(g_user, M("GetUser"), &req.base, &user__v1__user__descriptor,
                                  NULL, a, &resp, e);
    *ms = ts_now_ms() - t0;
    if (rc == ERR_OK && strcmp(((User__V1__User *)resp)->id, id) != 0)
        rc = ERR_INTERNAL;
    arena_free(a);
    return rc;
}

static err_code create_user(const char *email, char *id, size_t il, err_info *e)
{
    arena *a = arena_new(0);
    User__V1__CreateUserRequest req = USER__V1__CREATE_USER_REQUEST__INIT;
    req.email = (char *)email;
    req.display_name = "outage";
    ProtobufCMessage *resp = NULL;
    err_clear(e);
    err_code rc = rpc_client_call(g_user, M("CreateUser"), &req.base, &user__v1__user__descriptor,
                                  NULL, a, &resp, e);
    if (rc == ERR_OK)
        snprintf(id, il, "%s", ((User__V1__User *)resp)->id);
    arena_free(a);
    return rc;
}

static err_code delete_user(const char *id, err_info *e)
{
    arena *a = arena_new(0);
    User__V1__DeleteUserRequest req = USER__V1__DELETE_USER_REQUEST__INIT;
    req.id = (char *)id;
    ProtobufCMessage *resp = NULL;
    err_clear(e);
    err_code rc = rpc_client_call(g_user, M("DeleteUser"), &req.base,
                                  &google__protobuf__empty__descriptor, NULL, a, &resp, e);
    arena_free(a);
    return rc;
}

/* Does events.user hold an entry with this type and user_id? (redis-cli --raw XRANGE prints one
 * token per line: entry id, then field, value, field, value...) */
static bool has_event(const char *type, const char *user_id)
{
    char *out = fc_redis(REDIS_DB, "XRANGE events.user - +");
    if (!out)
        return false;
    bool found = false;
    char cur_type[32] = "", cur_id[64] = "";
    char *save = NULL, *prev = NULL;
    for (char *line = strtok_r(out, "\n", &save); line && !found;
         line = strtok_r(NULL, "\n", &save)) {
        if (strchr(line, '-') && strspn(line, "0123456789-") == strlen(line)) {
            cur_type[0] = cur_id[0] = 0; /* a new entry */
        } else if (prev && strcmp(prev, "type") == 0) {
            snprintf(cur_type, sizeof cur_type, "%s", line);
        } else if (prev && strcmp(prev, "user_id") == 0) {
            snprintf(cur_id, sizeof cur_id, "%s", line);
        }
        found = strcmp(cur_type, type) == 0 && strcmp(cur_id, user_id) == 0;
        prev = line;
    }
    free(out);
    return found;
}

static void test_redis_down(void)
{
    CU_ASSERT_FATAL(g_ok_stack);
    int gw = g_s.port[TS_GW];
    fc_res x;
    char h[64];
    /* Before: signed-in route works; a user to delete during the outage. */
    CU_ASSERT_EQUAL(fc_call(gw, "GET", "/v1/users/me", g_bob_tok, NULL, 5000, &x), 200);
    fc_res_free(&x);
    err_info e;
    char victim[64] = "", created[64] = "";
    CU_ASSERT_EQUAL_FATAL(create_user("victim@fault-redis.test", victim, sizeof victim, &e),
                          ERR_OK);

    CU_ASSERT_EQUAL_FATAL(ts_harness("redis-stop"), 0);
    long long t_down = ts_now_ms();

    /* (a) GetUser straight from the database, a few times, each well under a second */
    int a_ok = 0;
    long long a_worst = 0;
    for (int i = 0; i < 5; i++) {
        long long ms;
        err_code rc = get_user(g_bob_id, &ms, &e);
        if (rc != ERR_OK)
            fprintf(stderr, "  GetUser during the outage: %s %s\n", err_str(rc), e.msg);
        a_ok += rc == ERR_OK;
        if (ms > a_worst)
            a_worst = ms;
    }
    CU_ASSERT_EQUAL(a_ok, 5);
    CU_ASSERT(a_worst < 1000);

    /* (b) signed-in: 503 + Retry-After, fail closed */
    int s = fc_call(gw, "GET", "/v1/users/me", g_bob_tok, NULL, 5000, &x);
    bool ra = http_header(&x.r, "Retry-After", h, sizeof h) != NULL;
    fprintf(stderr, "  signed-in during the outage: %d (%lld ms) %s\n", s, x.t1 - x.t0,
            x.r.body ? x.r.body : "");
    CU_ASSERT_EQUAL(s, 503);
    CU_ASSERT(ra);
    CU_ASSERT(x.t1 - x.t0 < 2000);
    fc_res_free(&x);
    /* anonymous: JWKS through the per-process limiter */
    s = fc_call(gw, "GET", "/.well-known/jwks.json", NULL, NULL, 5000, &x);
    CU_ASSERT_EQUAL(s, 200);
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "RateLimit-Limit", h, sizeof h));
    CU_ASSERT_PTR_NOT_NULL(x.j ? json_object_get(x.j, "keys") : NULL);
    fc_res_free(&x);
    /* login reaches auth, whose lockout counters live in Redis: fail closed, 503 + Retry-After */
    s = fc_call(gw, "POST", "/v1/auth/login", NULL,
                "{\"email\":\"" ADMIN_EMAIL "\",\"password\":\"" ADMIN_PASSWORD "\"}", 5000, &x);
    fprintf(stderr, "  login during the outage: %d %s\n", s, x.r.body ? x.r.body : "");
    CU_ASSERT_EQUAL(s, 503);
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "Retry-After", h, sizeof h));
    CU_ASSERT_PTR_NOT_NULL(http_header(&x.r, "RateLimit-Limit", h, sizeof h));
    fc_res_free(&x);

    /* (d) writes during the outage: their events wait in the outbox */
    CU_ASSERT_EQUAL(create_user("created@fault-redis.test", created, sizeof created, &e), ERR_OK);
    CU_ASSERT_EQUAL(delete_user(victim, &e), ERR_OK);
    usleep(2000000); /* the relay tries, fails and backs off meanwhile */
    double cache_err =
        fc_metric(g_s.metrics_port[TS_USER], "user_cache_requests_total{result=\"error\"}");
    double relay_err = fc_metric(g_s.metrics_port[TS_USER], "user_outbox_errors_total");
    double backlog = fc_metric(g_s.metrics_port[TS_USER], "outbox_backlog");
    fprintf(stderr,
            "  user service during the outage: cache errors %.0f, relay errors %.0f, "
            "outbox backlog %.0f\n",
            cache_err, relay_err, backlog);
    CU_ASSERT(cache_err >= 5); /* each GetUser above fell back to the database, counted */
    CU_ASSERT(relay_err >= 1);
    CU_ASSERT(backlog >= 2);
    long long down_ms = ts_now_ms() - t_down;

    CU_ASSERT_EQUAL_FATAL(ts_harness("redis-start"), 0);
    long long t_up = ts_now_ms();

    /* (c) signed-in routes recover by themselves */
    long long recovered = -1;
    while (ts_now_ms() - t_up < RECOVER_MS + 3000) {
        s = fc_call(gw, "GET", "/v1/users/me", g_bob_tok, NULL, 5000, &x);
        fc_res_free(&x);
        if (s == 200) {
            recovered = ts_now_ms() - t_up;
            break;
        }
        usleep(100000);
    }
    /* (d) the events held during the outage are delivered */
    long long delivered = -1;
    while (ts_now_ms() - t_up < EVENTS_MS) {
        if (created[0] && has_event("user.created", created) && has_event("user.deleted", victim)) {
            delivered = ts_now_ms() - t_up;
            break;
        }
        usleep(200000);
    }
    fprintf(stderr,
            "fault_redis: outage %lld ms; GetUser %d/5 ok (worst %lld ms); signed-in recovered "
            "%lld ms after Redis was back; events delivered after %lld ms\n",
            down_ms, a_ok, a_worst, recovered, delivered);
    CU_ASSERT(recovered >= 0 && recovered <= RECOVER_MS);
    CU_ASSERT(delivered >= 0);
}

int main(void)
{
    ts_need_env("PGPORT");
    log_init("fault_redis", LOG_WARN);
    atexit(fc_harness_ensure); /* Redis up again even if this program dies midway */
    static const ts_case cases[] = {
        {"start stack", start_stack}, {"Redis down and back", test_redis_down}, {NULL, NULL}};
    int rc = ts_main("fault_redis", cases);
    fc_harness_ensure();
    rpc_client_free(g_user);
    if (ts_stack_stop(&g_s, rc != 0) != 0 && rc == 0) {
        fprintf(stderr, "fault_redis: a binary did not exit 0 on SIGTERM\n");
        rc = 1;
    }
    return rc;
}
