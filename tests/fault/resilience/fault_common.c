/* fault_common: HTTP/JSON calls, metric scrapes, psql/redis-cli queries and a background table
 * lock for the fault tests (see fault_common.h). */
#include "fault_common.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void fc_res_free(fc_res *x)
{
    json_decref(x->j);
    http_resp_free(&x->r);
    memset(x, 0, sizeof *x);
}

int fc_call(int port, const char *method, const char *path, const char *token, const char *body,
            int timeout_ms, fc_res *out)
{
    char hdrs[4096];
    hdrs[0] = 0;
    if (token && *token)
        snprintf(hdrs, sizeof hdrs, "Authorization: Bearer %s\r\n", token);
    memset(out, 0, sizeof *out);
    out->t0 = ts_now_ms();
    http_do(port, method, path, hdrs, body, body ? strlen(body) : 0, timeout_ms, &out->r);
    out->t1 = ts_now_ms();
    out->status = out->r.status;
    if (out->r.body && out->r.body_len)
        out->j = json_loads(out->r.body, 0, NULL);
    return out->status;
}

const char *fc_jstr(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

int fc_register(int port, const char *email, const char *password, char *token, size_t tl, char *id,
                size_t il)
{
    char body[512];
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"password\":\"%s\",\"display_name\":\"fault\"}",
             email, password);
    fc_res x;
    int s = fc_call(port, "POST", "/v1/auth/register", NULL, body, 10000, &x);
    if (s == 201) {
        if (token)
            snprintf(token, tl, "%s", fc_jstr(x.j, "access_token"));
        if (id)
            snprintf(id, il, "%s", fc_jstr(json_object_get(x.j, "user"), "id"));
    }
    fc_res_free(&x);
    return s;
}

int fc_login(int port, const char *email, const char *password, char *token, size_t tl)
{
    char body[512];
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"password\":\"%s\"}", email, password);
    int s = 0;
    /* Right after start-up the bootstrap admin may not exist yet (auth creates it in the
     * background): retry a 401/503 for a few seconds. */
    for (long long end = ts_now_ms() + 10000; ts_now_ms() < end; usleep(200000)) {
        fc_res x;
        s = fc_call(port, "POST", "/v1/auth/login", NULL, body, 10000, &x);
        if (s == 200)
            snprintf(token, tl, "%s", fc_jstr(x.j, "access_token"));
        else
            fprintf(stderr, "  login %s: %d %s\n", email, s, x.r.body ? x.r.body : "");
        fc_res_free(&x);
        if (s != 401 && s != 503)
            break;
    }
    return s;
}

double fc_metric(int port, const char *series)
{
    http_resp r;
    http_do(port, "GET", "/metrics", NULL, NULL, 0, 3000, &r);
    double v = -1;
    if (r.status == 200 && r.body) {
        size_t sl = strlen(series);
        for (const char *p = r.body; p && *p;) {
            if (strncmp(p, series, sl) == 0 && p[sl] == ' ') {
                v = strtod(p + sl + 1, NULL);
                break;
            }
            p = strchr(p, '\n');
            if (p)
                p++;
        }
    }
    http_resp_free(&r);
    return v;
}

/* Output of a command line (malloc'ed), NULL when it could not run. */
static char *read_cmd(const char *cmd)
{
    FILE *f = popen(cmd, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n < 1024) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[n] = 0;
    if (pclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

char *fc_psql_query(const char *dbname, const char *sql)
{
    char path[] = "/tmp/fc_sql_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    size_t len = strlen(sql);
    if (write(fd, sql, len) != (ssize_t)len) {
        close(fd);
        unlink(path);
        return NULL;
    }
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "psql -X -q -A -t -v ON_ERROR_STOP=1 -h %s -p %s -U postgres -d %s -f %s 2>/dev/null",
             ts_need_env("PGHOST"), ts_need_env("PGPORT"), dbname, path);
    char *out = read_cmd(cmd);
    unlink(path);
    return out;
}

char *fc_redis(int db, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "redis-cli --raw -h 127.0.0.1 -p %s -n %d %s 2>/dev/null",
             ts_need_env("REDIS_PORT"), db, args);
    return read_cmd(cmd);
}

int fc_lock_table(const char *dbname, const char *table, int hold_ms)
{
    char sql[512], port[16];
    snprintf(sql, sizeof sql,
             "BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(%.3f); COMMIT;", table,
             hold_ms / 1000.0);
    snprintf(port, sizeof port, "%s", ts_need_env("PGPORT"));
    char *argv[] = {"/usr/bin/psql",
                    "-X",
                    "-q",
                    "-h",
                    (char *)ts_need_env("PGHOST"),
                    "-p",
                    port,
                    "-U",
                    "postgres",
                    "-d",
                    (char *)dbname,
                    "-c",
                    sql,
                    NULL};
    int pid = ts_spawn(argv, NULL, "/dev/null");
    if (pid <= 0)
        return -1;
    const char *dot = strchr(table, '.');
    char q[512];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
             "WHERE c.relname = '%s' AND l.mode = 'AccessExclusiveLock' AND l.granted;",
             dot ? dot + 1 : table);
    for (long long end = ts_now_ms() + 5000; ts_now_ms() < end;) {
        char *o = fc_psql_query(dbname, q);
        int n = o ? (int)strtol(o, NULL, 10) : 0;
        free(o);
        if (n > 0)
            return pid;
        usleep(20000);
    }
    fc_lock_wait(pid, 0);
    return -1;
}

int fc_lock_wait(int pid, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    return ts_stop(pid, 0, timeout_ms) == 0 ? 0 : -1;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

long long fc_percentile(long long *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_ll);
    size_t i = (size_t)((p / 100.0) * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

void fc_harness_ensure(void)
{
    if (ts_harness("ensure") != 0)
        fprintf(stderr, "fault: harness ensure failed\n");
}
