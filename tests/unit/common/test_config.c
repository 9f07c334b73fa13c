/* Unit tests of common/config: defaults, environment overrides, type and range errors naming the
 * variable, secret and password masking in the log line, help output. */
#include "common/config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "test_support.h"

typedef struct tcfg {
    char *name;
    char *secret;
    char *url;
    int size;
    int wide;
    bool flag;
} tcfg;

static const config_opt opts[] = {
    {"TC_NAME", CONFIG_STR, offsetof(tcfg, name), "svc", 0, 0, "service name"},
    {"TC_SECRET", CONFIG_SECRET, offsetof(tcfg, secret), "", 0, 0, "a secret"},
    {"TC_URL", CONFIG_STR, offsetof(tcfg, url), "host=127.0.0.1 user=u", 0, 0, "conninfo"},
    {"TC_POOL_SIZE", CONFIG_INT, offsetof(tcfg, size), "10", 1, 1000, "pool size"},
    {"TC_WIDE", CONFIG_INT, offsetof(tcfg, wide), "-5", 0, 0, "unbounded int"},
    {"TC_FLAG", CONFIG_BOOL, offsetof(tcfg, flag), "true", 0, 0, "a flag"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static void clear_env(void)
{
    for (size_t i = 0; i < NOPTS; i++)
        unsetenv(opts[i].env);
    unsetenv("TC_REQUIRED");
}

static void test_defaults(void)
{
    clear_env();
    tcfg c = {0};
    err_info e;
    CU_ASSERT_EQUAL_FATAL(config_load(opts, NOPTS, &c, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(c.name, "svc");
    CU_ASSERT_STRING_EQUAL(c.secret, "");
    CU_ASSERT_EQUAL(c.size, 10);
    CU_ASSERT_EQUAL(c.wide, -5);
    CU_ASSERT_TRUE(c.flag);
    config_free(opts, NOPTS, &c);
    CU_ASSERT_PTR_NULL(c.name);
    config_free(opts, NOPTS, NULL); /* no-op */
}

static void test_env_overrides(void)
{
    clear_env();
    setenv("TC_NAME", "other", 1);
    setenv("TC_POOL_SIZE", "1000", 1);
    setenv("TC_WIDE", "2147483647", 1);
    setenv("TC_FLAG", "Off", 1);
    setenv("TC_SECRET", "", 1); /* set but empty: empty, not the default */
    tcfg c = {0};
    err_info e;
    CU_ASSERT_EQUAL_FATAL(config_load(opts, NOPTS, &c, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(c.name, "other");
    CU_ASSERT_EQUAL(c.size, 1000);
    CU_ASSERT_EQUAL(c.wide, 2147483647);
    CU_ASSERT_FALSE(c.flag);
    config_free(opts, NOPTS, &c);

    static const char *yes[] = {"true", "1", "yes", "on", "TRUE", "Yes"};
    static const char *no[] = {"false", "0", "no", "off", "False", "NO"};
    for (size_t i = 0; i < 6; i++) {
        tcfg d = {0};
        setenv("TC_FLAG", yes[i], 1);
        CU_ASSERT_EQUAL(config_load(opts, NOPTS, &d, &e), ERR_OK);
        CU_ASSERT_TRUE(d.flag);
        config_free(opts, NOPTS, &d);
        setenv("TC_FLAG", no[i], 1);
        d.flag = true;
        CU_ASSERT_EQUAL(config_load(opts, NOPTS, &d, &e), ERR_OK);
        CU_ASSERT_FALSE(d.flag);
        config_free(opts, NOPTS, &d);
    }
    clear_env();
}

static void expect_error(const char *env, const char *val, const char *msg)
{
    clear_env();
    setenv(env, val, 1);
    tcfg c = {0};
    err_info e;
    CU_ASSERT_EQUAL(config_load(opts, NOPTS, &c, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    if (strcmp(e.msg, msg) != 0)
        fprintf(stderr, "\n  got:  %s\n  want: %s\n", e.msg, msg);
    CU_ASSERT_STRING_EQUAL(e.msg, msg);
    config_free(opts, NOPTS, &c);
    clear_env();
}

static void test_int_errors(void)
{
    expect_error("TC_POOL_SIZE", "x", "TC_POOL_SIZE: must be an integer in [1, 1000], got 'x'");
    expect_error("TC_POOL_SIZE", "0", "TC_POOL_SIZE: must be an integer in [1, 1000], got '0'");
    expect_error("TC_POOL_SIZE", "1001",
                 "TC_POOL_SIZE: must be an integer in [1, 1000], got '1001'");
    expect_error("TC_POOL_SIZE", "10ms",
                 "TC_POOL_SIZE: must be an integer in [1, 1000], got '10ms'");
    expect_error("TC_POOL_SIZE", "", "TC_POOL_SIZE: must be an integer in [1, 1000], got ''");
    expect_error("TC_POOL_SIZE", " 5", "TC_POOL_SIZE: must be an integer in [1, 1000], got ' 5'");
    expect_error("TC_WIDE", "99999999999",
                 "TC_WIDE: must be an integer in [-2147483648, 2147483647], got '99999999999'");
}

static void test_bool_errors(void)
{
    expect_error("TC_FLAG", "maybe",
                 "TC_FLAG: must be a boolean (true/false, 1/0, yes/no, on/off), got 'maybe'");
    expect_error("TC_FLAG", "",
                 "TC_FLAG: must be a boolean (true/false, 1/0, yes/no, on/off), got ''");
}

static void test_required(void)
{
    clear_env();
    typedef struct {
        char *req;
    } rcfg;
    static const config_opt ropts[] = {
        {"TC_REQUIRED", CONFIG_STR, offsetof(rcfg, req), NULL, 0, 0, "must be set"}};
    rcfg c = {0};
    err_info e;
    CU_ASSERT_EQUAL(config_load(ropts, 1, &c, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "TC_REQUIRED"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "required"));
    config_free(ropts, 1, &c);
    setenv("TC_REQUIRED", "", 1); /* "" counts as set */
    CU_ASSERT_EQUAL(config_load(ropts, 1, &c, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(c.req, "");
    config_free(ropts, 1, &c);
    clear_env();
}

/* Runs config_log with the log going to a temp file; returns the text (caller frees). */
static char *capture_log(const tcfg *c)
{
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    unlink(path);
    log_set_fd(fd);
    config_log(opts, NOPTS, c);
    log_set_fd(2);
    off_t end = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)end + 1);
    CU_ASSERT_FATAL(pread(fd, buf, (size_t)end, 0) == end);
    close(fd);
    return buf;
}

static void test_log_masks_secrets(void)
{
    clear_env();
    setenv("TC_SECRET", "hunter2-very-secret", 1);
    setenv("TC_URL", "host=db port=5432 password=pa55word user=x", 1);
    tcfg c = {0};
    err_info e;
    CU_ASSERT_EQUAL_FATAL(config_load(opts, NOPTS, &c, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(c.secret, "hunter2-very-secret"); /* the program gets the value */
    char *line = capture_log(&c);
    CU_ASSERT_PTR_NULL(strstr(line, "hunter2"));
    CU_ASSERT_PTR_NULL(strstr(line, "pa55word"));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"TC_SECRET\":\"***\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"TC_URL\":\"host=db port=5432 password=*** user=x\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"TC_POOL_SIZE\":10"));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"TC_FLAG\":true"));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"TC_NAME\":\"svc\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"msg\":\"config\""));
    /* one line */
    char *nl = strchr(line, '\n');
    CU_ASSERT_PTR_NOT_NULL(nl);
    if (nl)
        CU_ASSERT_EQUAL(nl[1], '\0');
    free(line);
    config_free(opts, NOPTS, &c);
    clear_env();
}

static void test_redact(void)
{
    char out[256];
    config_redact("postgresql://app:s3cret@db:5432/identity", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "postgresql://app:***@db:5432/identity");
    config_redact("redis://:pw@127.0.0.1:6379/0", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "redis://:***@127.0.0.1:6379/0");
    config_redact("redis://127.0.0.1:6379/0", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "redis://127.0.0.1:6379/0");
    config_redact("postgres://u@h/db?password=x1&sslmode=off", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "postgres://u@h/db?password=***&sslmode=off");
    config_redact("host=h password = 'a b\\' c' user=u", out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "host=h password=*** user=u");
    config_redact("dbname=x", out, 4); /* truncation stays terminated */
    CU_ASSERT_STRING_EQUAL(out, "dbn");
    config_redact(NULL, out, sizeof out);
    CU_ASSERT_STRING_EQUAL(out, "");
}

static void test_help(void)
{
    char path[] = "/tmp/test_config_help_XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    config_print_help(opts, NOPTS);
    dup2(saved, 1);
    close(saved);
    char buf[4096] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "TC_POOL_SIZE=10  # pool size [1, 1000]\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "TC_NAME=svc  # service name\n"));
}

int main(void)
{
    static const ts_case cases[] = {
        {"defaults", test_defaults},
        {"env_overrides", test_env_overrides},
        {"int_errors", test_int_errors},
        {"bool_errors", test_bool_errors},
        {"required", test_required},
        {"log_masks_secrets", test_log_masks_secrets},
        {"redact", test_redact},
        {"help", test_help},
        {NULL, NULL},
    };
    return ts_main("config", cases);
}
