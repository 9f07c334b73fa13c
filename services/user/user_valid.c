/* user_valid: validation rules for user input, kept free of I/O so they are unit-tested alone. */
#include "user_valid.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/fmt.h"

static bool is_ascii_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static void set_why(char *why, size_t len, const char *msg)
{
    if (why && len)
        snprintf(why, len, "%s", msg);
}

bool user_valid_utf8(const char *s, size_t len, size_t *nchars)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    size_t n = 0;
    while (p < end) {
        unsigned c = *p;
        size_t need;
        unsigned cp, min;
        if (c < 0x80) {
            p++;
            n++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= need)
            return false;
        for (size_t i = 1; i <= need; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += need + 1;
        n++;
    }
    if (nchars)
        *nchars = n;
    return true;
}

bool user_valid_email(arena *a, const char *in, const char **out, char *why, size_t whylen)
{
    if (!in)
        in = "";
    size_t len = strlen(in);
    while (len && is_ascii_space((unsigned char)in[0]))
        in++, len--;
    while (len && is_ascii_space((unsigned char)in[len - 1]))
        len--;
    if (len == 0) {
        set_why(why, whylen, "must not be empty");
        return false;
    }
    if (len > USER_EMAIL_MAX) {
        set_why(why, whylen, "must be at most 254 bytes");
        return false;
    }
    if (!user_valid_utf8(in, len, NULL)) {
        set_why(why, whylen, "must be valid UTF-8");
        return false;
    }
    char *e = arena_strndup(a, in, len);
    size_t at = len, nat = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)e[i];
        if (c <= 0x20 || c == 0x7F) {
            set_why(why, whylen, "must not contain spaces or control characters");
            return false;
        }
        if (c >= 'A' && c <= 'Z')
            e[i] = (char)(c - 'A' + 'a');
        if (c == '@')
            at = i, nat++;
    }
    if (nat != 1) {
        set_why(why, whylen, "must contain exactly one '@'");
        return false;
    }
    if (at == 0) {
        set_why(why, whylen, "must have a local part before '@'");
        return false;
    }
    const char *dom = e + at + 1;
    size_t dlen = len - at - 1;
    if (dlen == 0 || !memchr(dom, '.', dlen) || dom[0] == '.' || dom[dlen - 1] == '.' ||
        strstr(dom, "..")) {
        set_why(why, whylen, "must have a domain with a '.' (like example.com)");
        return false;
    }
    *out = e;
    return true;
}

bool user_valid_display_name(arena *a, const char *in, const char **out, char *why, size_t whylen)
{
    if (!in)
        in = "";
    size_t len = strlen(in);
    while (len && in[0] == ' ')
        in++, len--;
    while (len && in[len - 1] == ' ')
        len--;
    if (len == 0) {
        set_why(why, whylen, "must not be empty");
        return false;
    }
    size_t n;
    if (!user_valid_utf8(in, len, &n)) {
        set_why(why, whylen, "must be valid UTF-8");
        return false;
    }
    if (n > USER_NAME_MAX) {
        set_why(why, whylen, "must be at most 100 characters");
        return false;
    }
    const unsigned char *p = (const unsigned char *)in;
    for (size_t i = 0; i < len; i++) {
        /* C1 controls U+0080..U+009F are encoded C2 80..C2 9F. */
        if (p[i] < 0x20 || p[i] == 0x7F || (p[i] == 0xC2 && i + 1 < len && p[i + 1] <= 0x9F)) {
            set_why(why, whylen, "must not contain control characters");
            return false;
        }
    }
    *out = arena_strndup(a, in, len);
    return true;
}

bool user_valid_uuid(const char *in, char out[USER_ID_LEN + 1])
{
    if (!in || strlen(in) != USER_ID_LEN)
        return false;
    for (int i = 0; i < USER_ID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? in[i] != '-' : fmt_hexval(in[i]) < 0)
            return false;
    }
    for (int i = 0; i < USER_ID_LEN; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'F') ? (char)(in[i] - 'A' + 'a') : in[i];
    out[USER_ID_LEN] = '\0';
    return true;
}

int user_valid_page_size(int32_t requested)
{
    if (requested < 0)
        return -1;
    if (requested == 0)
        return USER_PAGE_DEFAULT;
    return requested > USER_PAGE_MAX ? USER_PAGE_MAX : requested;
}

static const char *skip_spaces(const char *p)
{
    while (*p && is_ascii_space((unsigned char)*p))
        p++;
    return p;
}

static bool parse_status(const char *v, size_t n, int *out)
{
    if (n > 12 && strncasecmp(v, "USER_STATUS_", 12) == 0)
        v += 12, n -= 12;
    if (n == 6 && strncasecmp(v, "ACTIVE", 6) == 0)
        *out = USER_STATUS_ACTIVE;
    else if (n == 8 && strncasecmp(v, "DISABLED", 8) == 0)
        *out = USER_STATUS_DISABLED;
    else
        return false;
    return true;
}

bool user_filter_parse(arena *a, const char *in, user_filter *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (!in)
        in = "";
    if (strlen(in) > 1024) {
        set_why(why, whylen, "must be at most 1024 bytes");
        return false;
    }
    bool have_status = false, have_prefix = false;
    const char *p = skip_spaces(in);
    while (*p) {
        const char *k = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_')
            p++;
        size_t klen = (size_t)(p - k);
        p = skip_spaces(p);
        if (klen == 0 || *p != '=') {
            set_why(why, whylen, "expected key=value terms joined by AND");
            return false;
        }
        p = skip_spaces(p + 1);
        const char *v;
        size_t vlen;
        if (*p == '"') {
            v = ++p;
            while (*p && *p != '"')
                p++;
            if (*p != '"') {
                set_why(why, whylen, "unterminated quoted value");
                return false;
            }
            vlen = (size_t)(p - v);
            p++;
        } else {
            v = p;
            while (*p && !is_ascii_space((unsigned char)*p))
                p++;
            vlen = (size_t)(p - v);
        }
        if (klen == 6 && strncasecmp(k, "status", 6) == 0) {
            if (have_status || !parse_status(v, vlen, &out->status)) {
                set_why(why, whylen,
                        have_status ? "status given twice" : "status must be ACTIVE or DISABLED");
                return false;
            }
            have_status = true;
        } else if (klen == 12 && strncasecmp(k, "email_prefix", 12) == 0) {
            if (have_prefix) {
                set_why(why, whylen, "email_prefix given twice");
                return false;
            }
            if (vlen == 0 || vlen > USER_EMAIL_MAX || !user_valid_utf8(v, vlen, NULL)) {
                set_why(why, whylen, "email_prefix must be 1-254 bytes of UTF-8");
                return false;
            }
            char *pre = arena_strndup(a, v, vlen);
            for (char *c = pre; *c; c++) {
                if ((unsigned char)*c < 0x20 || *c == 0x7F) {
                    set_why(why, whylen, "email_prefix must not contain control characters");
                    return false;
                }
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c - 'A' + 'a');
            }
            out->email_prefix = pre;
            have_prefix = true;
        } else {
            set_why(why, whylen, "unknown filter key (supported: status, email_prefix)");
            return false;
        }
        p = skip_spaces(p);
        if (!*p)
            break;
        if (strncasecmp(p, "AND", 3) != 0 || !is_ascii_space((unsigned char)p[3])) {
            set_why(why, whylen, "terms must be joined by AND");
            return false;
        }
        p = skip_spaces(p + 3);
        if (!*p) {
            set_why(why, whylen, "dangling AND");
            return false;
        }
    }
    return true;
}
