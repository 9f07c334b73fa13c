/* config: reads a table of typed options from the environment once, validates them, logs them with
 * secrets (and passwords inside URLs/conninfo strings) masked. The only getenv of the runtime. */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/mem.h"

static bool config_has_bounds(const config_opt *o)
{
    return !(o->min == 0 && o->max == 0);
}

static err_code config_parse_int(const config_opt *o, const char *txt, int *out, err_info *e)
{
    long lo = config_has_bounds(o) ? o->min : INT_MIN;
    long hi = config_has_bounds(o) ? o->max : INT_MAX;
    char *end = NULL;
    errno = 0;
    long v = strtol(txt, &end, 10);
    /* Reject empty text, trailing junk ("10ms"), leading blanks and overflow: a typo in a limit
     * must stop the start-up, not silently become 0. */
    bool ok = *txt && !isspace((unsigned char)*txt) && end && *end == '\0' && errno == 0 &&
              v >= lo && v <= hi;
    if (!ok)
        return err_set(e, ERR_INVALID_ARGUMENT, "%s: must be an integer in [%ld, %ld], got '%.64s'",
                       o->env, lo, hi, txt);
    *out = (int)v;
    return ERR_OK;
}

static err_code config_parse_bool(const config_opt *o, const char *txt, bool *out, err_info *e)
{
    static const char *yes[] = {"true", "1", "yes", "on"};
    static const char *no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(txt, yes[i]) == 0) {
            *out = true;
            return ERR_OK;
        }
        if (strcasecmp(txt, no[i]) == 0) {
            *out = false;
            return ERR_OK;
        }
    }
    return err_set(e, ERR_INVALID_ARGUMENT,
                   "%s: must be a boolean (true/false, 1/0, yes/no, on/off), got '%.64s'", o->env,
                   txt);
}

err_code config_load(const config_opt *table, size_t n, void *out, err_info *e)
{
    err_clear(e);
    for (size_t i = 0; i < n; i++) {
        const config_opt *o = &table[i];
        char *field = (char *)out + o->offset;
        const char *txt = getenv(o->env);
        if (!txt)
            txt = o->def;
        if (!txt)
            return err_set(e, ERR_INVALID_ARGUMENT, "%s: is required (%s)", o->env,
                           o->help ? o->help : "no default");
        err_code rc = ERR_OK;
        switch (o->type) {
        case CONFIG_STR:
        case CONFIG_SECRET: {
            /* The struct may be uninitialised: overwrite, never free here. */
            *(char **)(void *)field = xstrdup(txt);
            break;
        }
        case CONFIG_INT:
            rc = config_parse_int(o, txt, (int *)(void *)field, e);
            break;
        case CONFIG_BOOL:
            rc = config_parse_bool(o, txt, (bool *)(void *)field, e);
            break;
        default:
            rc = err_set(e, ERR_INTERNAL, "%s: unknown option type %d", o->env, (int)o->type);
        }
        if (rc != ERR_OK)
            return rc;
    }
    return ERR_OK;
}

/* Copies s into out with any password replaced by "***": the userinfo password of a URL
 * (scheme://user:PASS@host) and the value of a `password=` keyword (libpq conninfo), anywhere in
 * the string. */
void config_redact(const char *s, char *out, size_t len)
{
    if (!len)
        return;
    size_t o = 0;
    /* The argument is evaluated exactly once, even when the output is full (PUT(*p++)). */
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        char put_c_ = (ch);                                                                        \
        if (o + 1 < len)                                                                           \
            out[o++] = put_c_;                                                                     \
    } while (0)
    const char *p = s ? s : "";
    while (*p) {
        /* URL userinfo: after "://", up to '@' before the next '/', a ':' starts the password. */
        if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
            PUT(':');
            PUT('/');
            PUT('/');
            p += 3;
            const char *auth_end = p + strcspn(p, "/?# ");
            const char *at = NULL;
            for (const char *q = p; q < auth_end; q++)
                if (*q == '@')
                    at = q;
            if (at) {
                const char *colon = memchr(p, ':', (size_t)(at - p));
                const char *user_end = colon ? colon : at;
                while (p < user_end)
                    PUT(*p++);
                if (colon) {
                    PUT(':');
                    PUT('*');
                    PUT('*');
                    PUT('*');
                }
                p = at;
            }
            continue;
        }
        /* conninfo keyword: password = value | password='quoted value' */
        if (strncasecmp(p, "password", 8) == 0 && (p == s || !isalnum((unsigned char)p[-1]))) {
            const char *q = p + 8;
            while (*q == ' ')
                q++;
            if (*q == '=') {
                q++;
                while (*q == ' ')
                    q++;
                for (const char *k = "password=***"; *k; k++)
                    PUT(*k);
                if (*q == '\'') {
                    q++;
                    while (*q && *q != '\'') {
                        if (*q == '\\' && q[1])
                            q++;
                        q++;
                    }
                    if (*q == '\'')
                        q++;
                } else {
                    while (*q && *q != ' ' && *q != '&')
                        q++;
                }
                p = q;
                continue;
            }
        }
        PUT(*p++);
    }
    out[o] = '\0';
#undef PUT
}

void config_log(const config_opt *table, size_t n, const void *cfg)
{
    size_t cap = 256, len = 0;
    char *kv = xmalloc(cap);
    len = (size_t)snprintf(kv, cap, "\"config\":{");
    for (size_t i = 0; i < n; i++) {
        const config_opt *o = &table[i];
        const char *field = (const char *)cfg + o->offset;
        char val[1100], name[160], red[512];
        switch (o->type) {
        case CONFIG_STR:
            config_redact(*(char *const *)(const void *)field, red, sizeof red);
            log_json_str(val, sizeof val, red);
            break;
        case CONFIG_SECRET: /* never the value, not even its length */
            snprintf(val, sizeof val, "\"***\"");
            break;
        case CONFIG_INT:
            snprintf(val, sizeof val, "%d", *(const int *)(const void *)field);
            break;
        case CONFIG_BOOL:
            snprintf(val, sizeof val, "%s", *(const bool *)(const void *)field ? "true" : "false");
            break;
        default:
            snprintf(val, sizeof val, "null");
        }
        log_json_str(name, sizeof name, o->env);
        size_t need = strlen(name) + strlen(val) + 4;
        if (len + need + 2 > cap) {
            cap = (len + need + 2) * 2;
            kv = xrealloc(kv, cap);
        }
        len += (size_t)snprintf(kv + len, cap - len, "%s%s:%s", i ? "," : "", name, val);
    }
    snprintf(kv + len, cap - len, "}");
    log_info_kv(NULL, kv, "config");
    free(kv);
}

void config_free(const config_opt *table, size_t n, void *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < n; i++) {
        const config_opt *o = &table[i];
        if (o->type == CONFIG_STR || o->type == CONFIG_SECRET) {
            char **s = (char **)(void *)((char *)cfg + o->offset);
            free(*s);
            *s = NULL;
        }
    }
}

void config_print_help(const config_opt *table, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const config_opt *o = &table[i];
        char range[64] = "";
        if (o->type == CONFIG_INT && config_has_bounds(o))
            snprintf(range, sizeof range, " [%ld, %ld]", o->min, o->max);
        else if (o->type == CONFIG_BOOL)
            snprintf(range, sizeof range, " (true/false)");
        printf("%s=%s  # %s%s%s\n", o->env, o->def ? o->def : "(required)", o->help ? o->help : "",
               range, o->type == CONFIG_SECRET ? " (secret)" : "");
    }
    fflush(stdout);
}
