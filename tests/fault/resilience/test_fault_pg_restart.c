/* fault_pg_restart: PostgreSQL restarts (`harness pg-restart`) while registrations and profile
 * updates run through the gateway. Asserts: every registration answered 2xx is in users.users and
 * auth.credentials; for every user, the stored display_name is the last acknowledged update or a
 * later attempt whose answer was lost (never an older value); both kinds of request succeed again
 * within a few seconds of PostgreSQL being back, with the same service processes (no restart). */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault_common.h"

#define DB "t_fault_pg"
#define REG_THREADS 2
#define UPD_USERS 4
#define MAX_REG 4000
#define HEAL_MS 5000

static ts_stack g_s;
static int g_ok_stack;
static atomic_bool g_stop;

typedef struct reg_worker {
    pthread_t th;
    int idx;
    char (*acked)[64]; /* emails answered 201 */
    int nacked, tried, errors;
    atomic_llong first_ok_after; /* ms from g_t_back to the first 201 of a request started after */
} reg_worker;

typedef struct upd_worker {
    pthread_t th;
    char token[2048], id[64];
    long last_acked; /* seq of the last 200 */
    long last_tried; /* seq of the last attempt (answered or not) */
    int errors, oks;
    atomic_llong first_ok_after;
} upd_worker;

static atomic_llong g_t_back; /* when pg-restart returned (PostgreSQL accepting again) */

static void *reg_loop(void *arg)
{
    reg_worker *w = arg;
    while (!atomic_load(&g_stop) && w->tried < MAX_REG) {
        char email[64];
        snprintf(email, sizeof email, "r%d-%d@fault-pg.test", w->idx, w->tried++);
        char body[256];
        snprintf(body, sizeof body,
                 "{\"email\":\"%s\",\"password\":\"password-123\",\"display_name\":\"r\"}", email);
        fc_res x;
        int s = fc_call(g_s.port[TS_GW], "POST", "/v1/auth/register", NULL, body, 10000, &x);
        if (s >= 200 && s < 300) {
            snprintf(w->acked[w->nacked++], 64, "%s", email);
            long long back = atomic_load(&g_t_back);
            if (back && x.t0 >= back && !atomic_load(&w->first_ok_after))
                atomic_store(&w->first_ok_after, x.t1 - back);
        } else {
            w->errors++;
            usleep(20000);
        }
        fc_res_free(&x);
    }
    return NULL;
}

static void *upd_loop(void *arg)
{
    upd_worker *w = arg;
    while (!atomic_load(&g_stop)) {
        long seq = ++w->last_tried;
        char body[128];
        snprintf(body, sizeof body, "{\"display_name\":\"v%ld\"}", seq);
        fc_res x;
        int s = fc_call(g_s.port[TS_GW], "PATCH", "/v1/users/me", w->token, body, 10000, &x);
        if (s == 200) {
            w->last_acked = seq;
            w->oks++;
            long long back = atomic_load(&g_t_back);
            if (back && x.t0 >= back && !atomic_load(&w->first_ok_after))
                atomic_store(&w->first_ok_after, x.t1 - back);
        } else {
            w->errors++;
            usleep(20000);
        }
        fc_res_free(&x);
        usleep(5000);
    }
    return NULL;
}

static void start_stack(void)
{
    char *all[] = {
        "ARGON2_MEMORY_KIB=1024",      "ARGON2_ITERATIONS=1",         "RATE_LIMIT_AUTH_RPM=1000000",
        "RATE_LIMIT_ANON_RPM=1000000", "RATE_LIMIT_USER_RPM=1000000", "BREAKER_OPEN_MS=1000",
        "REQUEST_TIMEOUT_MS=5000",     "DB_POOL_WAIT_MS=1000",        NULL};
    ts_stack_opts o = {.dbname = DB, .redis_db = 51, .env_all = all};
    CU_ASSERT_EQUAL_FATAL(ts_stack_start(&g_s, &o), 0);
    g_ok_stack = 1;
}

static bool alive(int pid)
{
    int st;
    return pid > 0 && waitpid(pid, &st, WNOHANG) == 0;
}

static void test_pg_restart(void)
{
    CU_ASSERT_FATAL(g_ok_stack);
    upd_worker *u = calloc(UPD_USERS, sizeof *u);
    for (int i = 0; i < UPD_USERS; i++) {
        char email[64];
        snprintf(email, sizeof email, "u%d@fault-pg.test", i);
        CU_ASSERT_EQUAL_FATAL(fc_register(g_s.port[TS_GW], email, "password-123", u[i].token,
                                          sizeof u[i].token, u[i].id, sizeof u[i].id),
                              201);
    }
    int pids[TS_NSVC];
    memcpy(pids, g_s.pid, sizeof pids);
    reg_worker r[REG_THREADS];
    memset(r, 0, sizeof r);
    for (int i = 0; i < REG_THREADS; i++) {
        r[i].idx = i;
        r[i].acked = calloc(MAX_REG, 64);
        pthread_create(&r[i].th, NULL, reg_loop, &r[i]);
    }
    for (int i = 0; i < UPD_USERS; i++)
        pthread_create(&u[i].th, NULL, upd_loop, &u[i]);

    usleep(1500000);
    int before = 0;
    for (int i = 0; i < REG_THREADS; i++)
        before += r[i].nacked;
    long long t0 = ts_now_ms();
    int hrc = ts_harness("pg-restart");
    long long t_back = ts_now_ms();
    atomic_store(&g_t_back, t_back);
    /* Run on until both kinds succeeded after the restart (or HEAL_MS), then a little more. */
    for (;;) {
        bool healed = true;
        for (int i = 0; i < REG_THREADS; i++)
            healed = healed && r[i].first_ok_after;
        for (int i = 0; i < UPD_USERS; i++)
            healed = healed && u[i].first_ok_after;
        if (healed || ts_now_ms() - t_back > HEAL_MS + 2000)
            break;
        usleep(50000);
    }
    usleep(1000000);
    atomic_store(&g_stop, true);
    for (int i = 0; i < REG_THREADS; i++)
        pthread_join(r[i].th, NULL);
    for (int i = 0; i < UPD_USERS; i++)
        pthread_join(u[i].th, NULL);

    /* ---- check the database ---- */
    int acked = 0, missing_user = 0, missing_cred = 0, reg_err = 0;
    long long reg_heal = 0;
    char *users = fc_psql_query(DB, "SELECT email FROM users.users WHERE delete_time IS NULL;");
    char *creds = fc_psql_query(
        DB, "SELECT u.email FROM users.users u JOIN auth.credentials c ON c.user_id = u.id;");
    CU_ASSERT_PTR_NOT_NULL_FATAL(users);
    CU_ASSERT_PTR_NOT_NULL_FATAL(creds);
    for (int i = 0; i < REG_THREADS; i++) {
        reg_err += r[i].errors;
        if (r[i].first_ok_after > reg_heal)
            reg_heal = r[i].first_ok_after;
        for (int k = 0; k < r[i].nacked; k++) {
            char line[80];
            snprintf(line, sizeof line, "%s\n", r[i].acked[k]);
            acked++;
            /* every line is "<email>\n"; search "\n<email>\n" or a match at the start */
            char pat[82];
            snprintf(pat, sizeof pat, "\n%s", line);
            if (strncmp(users, line, strlen(line)) != 0 && !strstr(users, pat)) {
                missing_user++;
                fprintf(stderr, "  acknowledged registration missing in users.users: %s", line);
            }
            if (strncmp(creds, line, strlen(line)) != 0 && !strstr(creds, pat))
                missing_cred++;
        }
    }
    free(users);
    free(creds);
    int upd_ok = 0, upd_err = 0, bad_value = 0;
    long long upd_heal = 0;
    for (int i = 0; i < UPD_USERS; i++) {
        upd_ok += u[i].oks;
        upd_err += u[i].errors;
        if (u[i].first_ok_after > upd_heal)
            upd_heal = u[i].first_ok_after;
        char q[256];
        snprintf(q, sizeof q, "SELECT display_name FROM users.users WHERE id = '%s';", u[i].id);
        char *v = fc_psql_query(DB, q);
        long stored = v && v[0] == 'v' ? strtol(v + 1, NULL, 10) : -1;
        if (stored < u[i].last_acked || stored > u[i].last_tried) {
            bad_value++;
            fprintf(stderr, "  user %s: stored v%ld, last acknowledged v%ld, last tried v%ld\n",
                    u[i].id, stored, u[i].last_acked, u[i].last_tried);
        }
        free(v);
    }
    bool same = true;
    for (int w = 0; w < TS_NSVC; w++)
        same = same && g_s.pid[w] == pids[w] && alive(pids[w]);
    fprintf(stderr,
            "fault_pg_restart: pg-restart rc %d took %lld ms; registrations: %d acknowledged (%d "
            "before the restart), %d errors, %d missing in users.users, %d without credentials; "
            "updates: %d ok, %d errors, %d wrong values; healed: register %lld ms, update %lld "
            "ms after PostgreSQL was back; same processes: %s\n",
            hrc, t_back - t0, acked, before, reg_err, missing_user, missing_cred, upd_ok, upd_err,
            bad_value, reg_heal, upd_heal, same ? "yes" : "no");

    CU_ASSERT_EQUAL(hrc, 0);
    CU_ASSERT(before > 0);
    CU_ASSERT(acked > before); /* some after the restart too */
    CU_ASSERT_EQUAL(missing_user, 0);
    CU_ASSERT_EQUAL(missing_cred, 0);
    CU_ASSERT(upd_ok > UPD_USERS);
    CU_ASSERT_EQUAL(bad_value, 0);
    /* healed by themselves: every worker succeeded again within HEAL_MS, same processes */
    for (int i = 0; i < REG_THREADS; i++)
        CU_ASSERT(r[i].first_ok_after > 0 && r[i].first_ok_after <= HEAL_MS);
    for (int i = 0; i < UPD_USERS; i++)
        CU_ASSERT(u[i].first_ok_after > 0 && u[i].first_ok_after <= HEAL_MS);
    CU_ASSERT(same);
    for (int i = 0; i < REG_THREADS; i++)
        free(r[i].acked);
    free(u);
}

int main(void)
{
    ts_need_env("PGPORT");
    atexit(fc_harness_ensure); /* PostgreSQL up again even if this program dies midway */
    static const ts_case cases[] = {{"start stack", start_stack},
                                    {"PostgreSQL restart under writes", test_pg_restart},
                                    {NULL, NULL}};
    int rc = ts_main("fault_pg_restart", cases);
    fc_harness_ensure();
    if (ts_stack_stop(&g_s, rc != 0) != 0 && rc == 0) {
        fprintf(stderr, "fault_pg_restart: a binary did not exit 0 on SIGTERM\n");
        rc = 1;
    }
    return rc;
}
