/* test_svc: svc_main's command line (--help, unknown arguments), start-up config errors (exit 1)
 * and --health-check against a live rpc_server (no database needed for these paths). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc_server.h"
#include "echo_service.h"
#include "test_support.h"

/* Runs bin/svctest-service (svc_main around the echo service) with args and extra env "K=V"
 * entries; stdout to out_path (or /dev/null), stderr to /dev/null. Returns its exit status. A
 * child process, not an in-process call: svc_main blocks signals, and gRPC must not be used on
 * both sides of a fork. */
static int run_svc(const char *const *args, const char *const *env, const char *out_path)
{
    const char *bin = ts_bin("svctest-service");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        for (const char *const *kv = env; kv && *kv; kv++)
            putenv((char *)*kv);
        FILE *f = freopen(out_path ? out_path : "/dev/null", "w", stdout);
        FILE *n = freopen("/dev/null", "w", stderr);
        (void)f;
        (void)n;
        char *argv[8];
        int argc = 0;
        argv[argc++] = (char *)bin;
        for (const char *const *a = args; a && *a && argc < 7; a++)
            argv[argc++] = (char *)*a;
        argv[argc] = NULL;
        execv(bin, argv);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    static char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static char out_path[256];

static void test_help(void)
{
    const char *args[] = {"--help", NULL};
    CU_ASSERT_EQUAL(run_svc(args, NULL, out_path), 0);
    char *out = slurp(out_path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT(strstr(out, "LISTEN_ADDR=127.0.0.1:0") != NULL);
    CU_ASSERT(
        strstr(out, "DATABASE_URL=host=127.0.0.1 port=5432 dbname=identity user=svctest_svc") !=
        NULL);
    CU_ASSERT(strstr(out, "RPC_MAX_INFLIGHT=1000") != NULL);
    CU_ASSERT(strstr(out, "SHUTDOWN_GRACE_MS=10000") != NULL);
    CU_ASSERT(strstr(out, "--health-check") != NULL);
}

static void test_bad_args_and_config(void)
{
    const char *bad_arg[] = {"--frobnicate", NULL};
    CU_ASSERT_EQUAL(run_svc(bad_arg, NULL, NULL), 2);
    const char *threads[] = {"RPC_THREADS=lots", NULL};
    CU_ASSERT_EQUAL(run_svc(NULL, threads, NULL), 1);
    const char *range[] = {"DB_POOL_SIZE=0", NULL};
    CU_ASSERT_EQUAL(run_svc(NULL, range, NULL), 1);
    const char *level[] = {"LOG_LEVEL=loud", NULL};
    CU_ASSERT_EQUAL(run_svc(NULL, level, NULL), 1);
}

static void test_health_check_mode(void)
{
    /* A server on a free port; --health-check with LISTEN_ADDR=0.0.0.0:<port> must find it. */
    int port = ts_free_port();
    char addr[64], env_listen[96];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(env_listen, sizeof env_listen, "LISTEN_ADDR=0.0.0.0:%d", port);
    rpc_server_opts o = {.addr = addr, .service_name = ECHO_SERVICE, .threads = 1};
    err_info e;
    rpc_server *s = rpc_server_new(&o, echo_methods, echo_nmethods, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL_FATAL(rpc_server_start(s, &e), ERR_OK);

    const char *args[] = {"--health-check", NULL};
    const char *env[] = {env_listen, NULL};
    CU_ASSERT_EQUAL(run_svc(args, env, out_path), 0);
    CU_ASSERT(strstr(slurp(out_path), "SERVING") != NULL);
    rpc_server_set_serving(s, false);
    CU_ASSERT_EQUAL(run_svc(args, env, out_path), 1);
    CU_ASSERT(strstr(slurp(out_path), "NOT_SERVING") != NULL);
    rpc_server_shutdown(s, 1000);
    rpc_server_free(s);
    /* Nothing listens now. */
    CU_ASSERT_EQUAL(run_svc(args, env, out_path), 1);
    CU_ASSERT(strstr(slurp(out_path), "UNAVAILABLE") != NULL);
}

int main(void)
{
    log_init("test_svc", LOG_WARN);
    snprintf(out_path, sizeof out_path, "/tmp/test_svc_%d.out", (int)getpid());
    static const ts_case cases[] = {
        {"help", test_help},
        {"bad_args_and_config", test_bad_args_and_config},
        {"health_check_mode", test_health_check_mode},
        {NULL, NULL},
    };
    int rc = ts_main("svc", cases);
    unlink(out_path);
    return rc;
}
