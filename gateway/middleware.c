/* middleware: request id, traceparent, CORS allow-list, cookies and bearer parsing, as pure
 * functions so that they are unit-tested without a server. */
#include "middleware.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "common/fmt.h"

/* Ids need to be unique and unguessable enough for correlation, not secret: a per-thread
 * xoshiro256** seeded once from getrandom keeps three syscalls off every request. */
static __thread uint64_t rng_s[4];
static __thread bool rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    if (!rng_seeded) {
        size_t got = 0;
        while (got < sizeof rng_s) {
            ssize_t r = getrandom((char *)rng_s + got, sizeof rng_s - got, 0);
            if (r > 0)
                got += (size_t)r;
        }
        rng_s[0] |= 1; /* never all zero */
        rng_seeded = true;
    }
    uint64_t *s = rng_s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void rand_bytes(unsigned char *b, size_t n)
{
    while (n > 0) {
        uint64_t v = rng_next();
        size_t k = n < 8 ? n : 8;
        memcpy(b, &v, k);
        b += k;
        n -= k;
    }
}

bool mw_request_id_sane(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= 128)
            return false;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return n >= 1;
}

void mw_request_id_new(char out[37])
{
    unsigned char b[16];
    char h[33];
    rand_bytes(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    fmt_hex(b, 16, h);
    /* 8-4-4-4-12 */
    memcpy(out, h, 8);
    out[8] = '-';
    memcpy(out + 9, h + 8, 4);
    out[13] = '-';
    memcpy(out + 14, h + 12, 4);
    out[18] = '-';
    memcpy(out + 19, h + 16, 4);
    out[23] = '-';
    memcpy(out + 24, h + 20, 12);
    out[36] = 0;
}

static bool is_hex_any(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

static bool is_lhex(const char *s, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        if (c != '0')
            nonzero = true;
    }
    return nonzero;
}

bool mw_traceparent(const char *in, char trace_id[33], char span_id[17], char out[56])
{
    unsigned char b[16];
    bool ok = in && strlen(in) == 55 && in[2] == '-' && in[35] == '-' && in[52] == '-' &&
              is_hex_any(in, 2) && strncmp(in, "ff", 2) != 0 && is_lhex(in + 3, 32) &&
              is_lhex(in + 36, 16);
    char flags[3] = "01";
    if (ok && !is_hex_any(in + 53, 2))
        ok = false;
    if (ok) {
        memcpy(trace_id, in + 3, 32);
        trace_id[32] = 0;
        flags[0] = in[53];
        flags[1] = in[54];
    } else {
        rand_bytes(b, 16);
        fmt_hex(b, 16, trace_id);
    }
    rand_bytes(b, 8);
    fmt_hex(b, 8, span_id);
    /* 00-<trace_id 32>-<span_id 16>-<flags 2> */
    memcpy(out, "00-", 3);
    memcpy(out + 3, trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, span_id, 16);
    out[52] = '-';
    memcpy(out + 53, flags, 2);
    out[55] = 0;
    return ok;
}

bool mw_cors_allowed(const char *list, const char *origin)
{
    if (!list || !origin || !*origin)
        return false;
    size_t ol = strlen(origin);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *te = e;
        while (te > p && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        size_t n = (size_t)(te - p);
        if (n == ol && n > 0 && memcmp(p, origin, n) == 0 && strcmp(origin, "*") != 0)
            return true;
        p = e;
    }
    return false;
}

bool mw_cookie_get(const char *h, const char *name, char *out, size_t len)
{
    if (!h || !name)
        return false;
    size_t nl = strlen(name);
    const char *p = h;
    while (*p) {
        while (*p == ' ' || *p == ';' || *p == '\t')
            p++;
        const char *e = strchr(p, ';');
        if (!e)
            e = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (eq && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq + 1;
            const char *ve = e;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (ve - v >= 2 && *v == '"' && ve[-1] == '"')
                v++, ve--;
            size_t vl = (size_t)(ve - v);
            if (vl == 0 || vl >= len)
                return false;
            memcpy(out, v, vl);
            out[vl] = 0;
            return true;
        }
        p = e;
    }
    return false;
}

void mw_refresh_cookie(char *out, size_t len, const char *token, int max_age, bool secure)
{
    snprintf(out, len, "refresh_token=%s; HttpOnly;%s SameSite=Strict; Path=/v1/auth; Max-Age=%d",
             token ? token : "", secure ? " Secure;" : "", max_age);
}

const char *mw_bearer(const char *h)
{
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    if (!*h)
        return NULL;
    for (const char *p = h; *p; p++)
        if (*p == ' ' || *p == '\t' || *p == ',')
            return NULL;
    return h;
}

void mw_etag_from_if_match(const char *h, char *out, size_t len)
{
    out[0] = 0;
    if (!h)
        return;
    while (*h == ' ')
        h++;
    if (strncmp(h, "W/", 2) == 0)
        h += 2;
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ')
        n--;
    if (n >= 2 && h[0] == '"' && h[n - 1] == '"')
        h++, n -= 2;
    if (n >= len)
        n = len - 1;
    memcpy(out, h, n);
    out[n] = 0;
}
