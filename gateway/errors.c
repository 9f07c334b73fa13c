/* errors: renders an err_info as the JSON error body; details are the proto3 JSON of the
 * google.rpc.Status details (BadRequest field violations, RetryInfo). */
#include "errors.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const char *s)
{
    size_t l = strlen(s);
    if (b->n + l + 1 > b->cap)
        l = b->cap - b->n - 1; /* cap is sized generously; truncation cannot break JSON here */
    memcpy(b->p + b->n, s, l);
    b->n += l;
    b->p[b->n] = 0;
}

static void put_str(buf *b, const char *s)
{
    char tmp[1024];
    put(b, log_json_str(tmp, sizeof tmp, s ? s : ""));
}

int errors_http_status(err_code code)
{
    return err_to_http(code);
}

char *errors_body(arena *a, const err_info *e, const char *request_id, size_t *len)
{
    buf b = {arena_alloc(a, 16384), 0, 16384};
    char num[160];
    err_code code = e->code == ERR_OK ? ERR_UNKNOWN : e->code;
    snprintf(num, sizeof num, "{\"code\":%d,\"status\":", (int)code);
    put(&b, num);
    put_str(&b, err_str(code));
    put(&b, ",\"message\":");
    put_str(&b, e->msg[0] ? e->msg : err_str(code));
    put(&b, ",\"details\":[");
    bool first = true;
    if (e->nviolations > 0) {
        put(&b, "{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\",\"field_violations\":[");
        for (size_t i = 0; i < e->nviolations && i < ERR_MAX_VIOLATIONS; i++) {
            put(&b, i ? ",{\"field\":" : "{\"field\":");
            put_str(&b, e->violations[i].field);
            put(&b, ",\"description\":");
            put_str(&b, e->violations[i].description);
            put(&b, "}");
        }
        put(&b, "]}");
        first = false;
    }
    if (e->retry_after_s > 0) {
        snprintf(num, sizeof num,
                 "%s{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
                 "\"retry_delay\":\"%ds\"}",
                 first ? "" : ",", e->retry_after_s);
        put(&b, num);
    }
    put(&b, "],\"request_id\":");
    put_str(&b, request_id);
    put(&b, "}");
    if (len)
        *len = b.n;
    return b.p;
}
