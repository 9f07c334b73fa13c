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
    pid_t pid = fork();
    if (pid != 0)
        return (int)pid;
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
