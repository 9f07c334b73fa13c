/* test_support: CUnit runner and harness environment helpers. */
#include "test_support.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>

int ts_main(const char *suite, const ts_case *cases)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite(suite, NULL, NULL);
    if (!s)
        return 2;
    for (const ts_case *c = cases; c->name; c++) {
        if (!CU_add_test(s, c->name, c->fn))
            return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    return failed == 0 && run > 0 ? 0 : 1;
}

const char *ts_env(const char *name)
{
    return getenv(name);
}

const char *ts_need_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "test needs %s: run it through ctest (the harness fixture sets it)\n",
                name);
        exit(2);
    }
    return v;
}

const char *ts_pg_conninfo(const char *role)
{
    static __thread char buf[256];
    snprintf(buf, sizeof buf, "host=%s port=%s user=%s dbname=identity connect_timeout=5",
             ts_need_env("PGHOST"), ts_need_env("PGPORT"), role);
    return buf;
}

const char *ts_redis_url(void)
{
    static __thread char buf[128];
    snprintf(buf, sizeof buf, "redis://127.0.0.1:%s/0", ts_need_env("REDIS_PORT"));
    return buf;
}

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int ts_system(const char *cmd)
{
    int rc = system(cmd);
    if (rc == -1)
        return -1;
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int ts_psql(const char *dbname, const char *sql)
{
    char path[] = "/tmp/ts_psql_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t len = strlen(sql);
    if (write(fd, sql, len) != (ssize_t)len) {
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "psql -X -q -v ON_ERROR_STOP=1 -h %s -p %s -U postgres -d %s -f %s >/dev/null 2>&1",
             ts_need_env("PGHOST"), ts_need_env("PGPORT"), dbname, path);
    int rc = ts_system(cmd);
    unlink(path);
    return rc;
}

const char *ts_db_conninfo(const char *dbname, const char *role)
{
    static __thread char buf[256];
    snprintf(buf, sizeof buf, "host=%s port=%s user=%s dbname=%s connect_timeout=5",
             ts_need_env("PGHOST"), ts_need_env("PGPORT"), role, dbname);
    return buf;
}

const char *ts_fresh_db(const char *name, const char *role)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s';\n"
             "DROP DATABASE IF EXISTS %s;\nCREATE DATABASE %s;\n",
             name, name, name);
    if (ts_psql("postgres", sql) != 0) {
        fprintf(stderr, "ts_fresh_db: cannot create database %s\n", name);
        exit(2);
    }
    char init[1024];
    snprintf(init, sizeof init, "\\i %s/deploy/postgres/init.sql\n",
             ts_need_env("IDENTITY_SOURCE_DIR"));
    if (ts_psql(name, init) != 0) {
        fprintf(stderr, "ts_fresh_db: init.sql failed in %s\n", name);
        exit(2);
    }
    return ts_db_conninfo(name, role);
}

const char *ts_redis_url_db(int db)
{
    static __thread char buf[128];
    snprintf(buf, sizeof buf, "redis://127.0.0.1:%s/%d", ts_need_env("REDIS_PORT"), db);
    return buf;
}

int ts_redis_flush(int db)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "redis-cli -p %s -n %d FLUSHDB >/dev/null 2>&1",
             ts_need_env("REDIS_PORT"), db);
    return ts_system(cmd);
}

int ts_free_port(void)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)time(NULL) ^ (unsigned)getpid() << 8;
    for (int tries = 0; tries < 200; tries++) {
        int port = 20000 + (int)(rand_r(&seed) % 12000);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return -1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return port;
    }
    return -1;
}

int ts_spawn(char *const argv[], char *const extra_env[], const char *log_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return (int)pid;
    /* Die with the test program: a crashed or killed test must not leave services behind. The
     * parent may have died between fork and prctl: then we already belong to another process. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
    for (char *const *e = extra_env; e && *e; e++)
        putenv(*e);
    if (log_path) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(argv[0], argv, environ);
    _exit(127);
}

int ts_wait_port(int port, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return 0;
        usleep(20000);
    }
    return -1;
}

int ts_stop(int pid, int sig, int timeout_ms)
{
    int status;
    kill(pid, sig);
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    if (waitpid(pid, &status, 0) == pid)
        return -1;
    return -1;
}

const char *ts_bin(const char *name)
{
    static __thread char buf[512];
    snprintf(buf, sizeof buf, "%s/bin/%s", ts_need_env("IDENTITY_BUILD_DIR"), name);
    return buf;
}

int ts_harness(const char *cmd)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "'%s/tests/support/harness' %s", ts_need_env("IDENTITY_SOURCE_DIR"),
             cmd);
    return ts_system(buf);
}

long long ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------- ts_stack ---------- */

#include <sys/stat.h>

#include "common/jwt.h"
#include "http_client.h"

static const char *const TS_BIN[TS_NSVC] = {"permission-service", "user-service", "auth-service",
                                            "gateway"};
static const char *const TS_ROLE[TS_NSVC] = {"permission_svc", "user_svc", "auth_svc", NULL};

/* Appends "key=val" (or key alone, already "K=V", when val is NULL). */
static void stack_env_add(ts_stack *s, ts_svc w, int *n, const char *key, const char *val)
{
    if (*n >= TS_STACK_MAX_ENV)
        return;
    snprintf(s->envbuf[w][*n], sizeof s->envbuf[w][*n], "%s%s%s", key, val ? "=" : "",
             val ? val : "");
    s->envp[w][*n] = s->envbuf[w][*n];
    (*n)++;
    s->envp[w][*n] = NULL;
}

static void stack_env_list(ts_stack *s, ts_svc w, int *n, char *const *list)
{
    for (char *const *e = list; e && *e; e++)
        stack_env_add(s, w, n, *e, NULL);
}

int ts_stack_spawn(ts_stack *s, ts_svc w, int timeout_ms)
{
    char *argv[] = {(char *)ts_bin(TS_BIN[w]), NULL};
    s->pid[w] = ts_spawn(argv, s->envp[w], s->log);
    if (s->pid[w] <= 0) {
        s->pid[w] = 0;
        return -1;
    }
    if (ts_wait_port(s->port[w], timeout_ms) != 0) {
        fprintf(stderr, "ts_stack: %s did not listen on %d within %d ms (log %s)\n", TS_BIN[w],
                s->port[w], timeout_ms, s->log);
        return -1;
    }
    return 0;
}

int ts_stack_kill(ts_stack *s, ts_svc w, int sig, int timeout_ms)
{
    if (s->pid[w] <= 0)
        return -2;
    int rc = ts_stop(s->pid[w], sig, timeout_ms);
    s->pid[w] = 0;
    return rc;
}

int ts_stack_stop(ts_stack *s, int keep_log)
{
    int bad = 0;
    for (int w = TS_NSVC - 1; w >= 0; w--)
        if (s->pid[w] > 0 && ts_stack_kill(s, (ts_svc)w, SIGTERM, 15000) != 0)
            bad++;
    if (s->dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, keep_log ? "rm -rf '%s/keys'" : "rm -rf '%s'", s->dir);
        if (ts_system(cmd) != 0)
            fprintf(stderr, "ts_stack: could not clean %s\n", s->dir);
        if (keep_log)
            fprintf(stderr, "ts_stack: log kept in %s\n", s->log);
        s->dir[0] = 0;
    }
    return bad;
}

int ts_stack_start(ts_stack *s, const ts_stack_opts *o)
{
    memset(s, 0, sizeof *s);
    ts_fresh_db(o->dbname, "postgres");
    ts_redis_flush(o->redis_db);
    snprintf(s->dir, sizeof s->dir, "/tmp/ts_stack.XXXXXX");
    if (!mkdtemp(s->dir)) {
        s->dir[0] = 0;
        return -1;
    }
    snprintf(s->log, sizeof s->log, "%s/stack.log", s->dir);
    char keydir[200], keypath[260];
    snprintf(keydir, sizeof keydir, "%s/keys", s->dir);
    mkdir(keydir, 0700);
    snprintf(keypath, sizeof keypath, "%s/20260101T000000Z.pem", keydir);
    err_info e;
    err_clear(&e);
    if (jwt_key_generate(keypath, &e) != ERR_OK) {
        fprintf(stderr, "ts_stack: key: %s\n", e.msg);
        return -1;
    }
    /* 7 distinct free ports: 4 listeners, 3 metrics. */
    int ports[7];
    for (int i = 0; i < 7; i++) {
    again:
        ports[i] = ts_free_port();
        for (int k = 0; k < i; k++)
            if (ports[k] == ports[i])
                goto again;
    }
    for (int w = 0; w < TS_NSVC; w++) {
        s->port[w] = ports[w];
        snprintf(s->addr[w], sizeof s->addr[w], "127.0.0.1:%d", ports[w]);
        s->metrics_port[w] = w < TS_GW ? ports[4 + w] : 0;
    }
    const char *redis = ts_redis_url_db(o->redis_db);
    char redis_url[160];
    snprintf(redis_url, sizeof redis_url, "%s", redis);
    for (int w = 0; w < TS_NSVC; w++) {
        int n = 0;
        s->envp[w][0] = NULL;
        stack_env_add(s, w, &n, "LISTEN_ADDR", s->addr[w]);
        stack_env_add(s, w, &n, "REDIS_URL", redis_url);
        stack_env_add(s, w, &n, "LOG_LEVEL", "warn");
        if (w != TS_GW) {
            char m[32];
            snprintf(m, sizeof m, "127.0.0.1:%d", s->metrics_port[w]);
            stack_env_add(s, w, &n, "METRICS_ADDR", m);
            stack_env_add(s, w, &n, "DATABASE_URL", ts_db_conninfo(o->dbname, TS_ROLE[w]));
        }
        if (w == TS_USER)
            stack_env_add(s, w, &n, "PAGE_TOKEN_SECRET", "ts-stack-page-secret");
        if (w == TS_AUTH || w == TS_GW) {
            stack_env_add(s, w, &n, "USER_SERVICE_ADDR", s->addr[TS_USER]);
            stack_env_add(s, w, &n, "PERMISSION_SERVICE_ADDR", s->addr[TS_PERM]);
        }
        if (w == TS_AUTH) {
            stack_env_add(s, w, &n, "JWT_KEYS_DIR", keydir);
            if (o->admin_email) {
                stack_env_add(s, w, &n, "BOOTSTRAP_ADMIN_EMAIL", o->admin_email);
                stack_env_add(s, w, &n, "BOOTSTRAP_ADMIN_PASSWORD", o->admin_password);
            }
        }
        if (w == TS_GW) {
            stack_env_add(s, w, &n, "AUTH_SERVICE_ADDR", s->addr[TS_AUTH]);
            stack_env_add(s, w, &n, "COOKIE_SECURE", "false");
        }
        stack_env_list(s, w, &n, o->env_all);
        stack_env_list(s, w, &n, o->env[w]);
    }
    fprintf(stderr, "ts_stack: log %s\n", s->log);
    if (ts_stack_spawn(s, TS_PERM, 20000) || ts_stack_spawn(s, TS_USER, 20000) ||
        ts_stack_spawn(s, TS_AUTH, 30000) || ts_stack_spawn(s, TS_GW, 20000)) {
        ts_stack_stop(s, 1);
        return -1;
    }
    int wait = o->ready_timeout_ms > 0 ? o->ready_timeout_ms : 30000;
    long long end = ts_now_ms() + wait;
    int st = 0;
    while (ts_now_ms() < end) {
        http_resp r;
        http_do(s->port[TS_GW], "GET", "/ready", NULL, NULL, 0, 2000, &r);
        st = r.status;
        http_resp_free(&r);
        if (st == 200)
            return 0;
        usleep(100000);
    }
    fprintf(stderr, "ts_stack: gateway not ready within %d ms (last %d)\n", wait, st);
    ts_stack_stop(s, 1);
    return -1;
}
