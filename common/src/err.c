/* err: code names, HTTP mapping and the message/violation buffer. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *err_str(err_code code)
{
    switch (code) {
#define ERR_CASE(name, grpc, http)                                                                 \
    case ERR_##name:                                                                               \
        return #name;
        ERR_MAP(ERR_CASE)
#undef ERR_CASE
    }
    return "UNKNOWN";
}

int err_to_http(err_code code)
{
    switch (code) {
#define ERR_CASE(name, grpc, http)                                                                 \
    case ERR_##name:                                                                               \
        return http;
        ERR_MAP(ERR_CASE)
#undef ERR_CASE
    }
    return 500;
}

int err_from_str(const char *name)
{
#define ERR_CMP(n, grpc, http)                                                                     \
    if (strcmp(name, #n) == 0)                                                                     \
        return grpc;
    ERR_MAP(ERR_CMP)
#undef ERR_CMP
    return -1;
}

void err_clear(err_info *e)
{
    if (!e)
        return;
    e->code = ERR_OK;
    e->msg[0] = '\0';
    e->retry_after_s = 0;
    e->nviolations = 0;
}

err_code err_set(err_info *e, err_code code, const char *fmt, ...)
{
    if (!e)
        return code;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

err_code err_violation_add(err_info *e, const char *field, const char *fmt, ...)
{
    if (!e)
        return ERR_INVALID_ARGUMENT;
    if (e->code != ERR_INVALID_ARGUMENT || e->msg[0] == '\0') {
        e->code = ERR_INVALID_ARGUMENT;
        snprintf(e->msg, sizeof e->msg, "invalid argument");
    }
    if (e->nviolations < ERR_MAX_VIOLATIONS) {
        err_violation *v = &e->violations[e->nviolations++];
        snprintf(v->field, sizeof v->field, "%s", field);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->description, sizeof v->description, fmt, ap);
        va_end(ap);
    }
    return ERR_INVALID_ARGUMENT;
}

void err_prefix(err_info *e, const char *prefix)
{
    if (!e)
        return;
    char tmp[ERR_MSG_LEN];
    snprintf(tmp, sizeof tmp, "%s%s", prefix, e->msg);
    memcpy(e->msg, tmp, sizeof tmp);
}
