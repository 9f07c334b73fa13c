/* log: one JSON line per event on stderr, with service, request and trace ids. */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

#include <stdbool.h>

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* The ids that tie a line to a request. Any field may be NULL. */
typedef struct log_ctx {
    const char *request_id;
    const char *trace_id;
    const char *span_id;
} log_ctx;

/* Process-wide settings, written once by main before any thread starts (the one global of the
 * project, as Redis' serverLog). */
extern log_level log_min_level;

void log_init(const char *service, log_level min_level);
/* "debug" / "info" / "warn" / "error" → level; returns false when unknown. */
bool log_level_parse(const char *s, log_level *out);
/* Redirect output (tests); fd must stay open. Default 2 (stderr). */
void log_set_fd(int fd);

/* Writes {"ts","level","service","request_id","trace_id","span_id","msg", <kv>}.
 * kv: NULL or pre-rendered JSON members without braces, e.g.
 * "\"status\":\"OK\",\"duration_ms\":1.2" (build them with log_json_str for strings). msg is
 * escaped here. Thread-safe: one write(2) a line. Never pass a password, token, hash or secret. */
void log_emit(log_level level, const log_ctx *ctx, const char *kv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Escapes s as a JSON string (with quotes) into buf; truncates safely. Returns buf. */
char *log_json_str(char *buf, unsigned long len, const char *s);

#define LOG_AT(lvl, ctx, kv, ...)                                                                  \
    do {                                                                                           \
        if ((lvl) >= log_min_level)                                                                \
            log_emit((lvl), (ctx), (kv), __VA_ARGS__);                                             \
    } while (0)
#define log_debug(ctx, ...) LOG_AT(LOG_DEBUG, ctx, NULL, __VA_ARGS__)
#define log_info(ctx, ...) LOG_AT(LOG_INFO, ctx, NULL, __VA_ARGS__)
#define log_warn(ctx, ...) LOG_AT(LOG_WARN, ctx, NULL, __VA_ARGS__)
#define log_error(ctx, ...) LOG_AT(LOG_ERROR, ctx, NULL, __VA_ARGS__)
#define log_info_kv(ctx, kv, ...) LOG_AT(LOG_INFO, ctx, kv, __VA_ARGS__)
#define log_warn_kv(ctx, kv, ...) LOG_AT(LOG_WARN, ctx, kv, __VA_ARGS__)
#define log_error_kv(ctx, kv, ...) LOG_AT(LOG_ERROR, ctx, kv, __VA_ARGS__)

#endif
