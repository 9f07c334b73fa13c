/* log: JSON lines, level filter, escaping. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

log_level log_min_level = LOG_INFO;
static char log_service[64] = "identity";
static int log_fd = 2;

void log_init(const char *service, log_level min_level)
{
    snprintf(log_service, sizeof log_service, "%s", service ? service : "identity");
    log_min_level = min_level;
}

void log_set_fd(int fd)
{
    log_fd = fd;
}

bool log_level_parse(const char *s, log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (log_level)i;
            return true;
        }
    }
    return false;
}

char *log_json_str(char *buf, unsigned long len, const char *s)
{
    size_t o = 0;
    if (len < 3) {
        if (len)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        char tmp[8];
        size_t n;
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            n = 2;
        } else if (*p == '\n') {
            memcpy(tmp, "\\n", 2);
            n = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            n = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", *p);
        } else {
            tmp[0] = (char)*p;
            n = 1;
        }
        if (o + n + 2 > len)
            break;
        memcpy(buf + o, tmp, n);
        o += n;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void log_emit(log_level level, const log_ctx *ctx, const char *kv, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char msg[1024], emsg[2100], rid[300], tid[80], sid[40], ts[40], line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03ldZ", now.tv_nsec / 1000000);

    int n = snprintf(line, sizeof line,
                     "{\"ts\":\"%s\",\"level\":\"%s\",\"service\":\"%s\",\"request_id\":%s,"
                     "\"trace_id\":%s,\"span_id\":%s,\"msg\":%s%s%s}\n",
                     ts, names[level], log_service,
                     log_json_str(rid, sizeof rid, ctx ? ctx->request_id : NULL),
                     log_json_str(tid, sizeof tid, ctx ? ctx->trace_id : NULL),
                     log_json_str(sid, sizeof sid, ctx ? ctx->span_id : NULL),
                     log_json_str(emsg, sizeof emsg, msg), kv && *kv ? "," : "", kv ? kv : "");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        /* Keep the line valid JSON-ish when cut: end it properly. */
        n = (int)sizeof line - 1;
        line[n - 2] = '}';
        line[n - 1] = '\n';
    }
    ssize_t w = write(log_fd, line, (size_t)n);
    (void)w;
}
