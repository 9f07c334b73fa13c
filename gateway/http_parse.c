/* http_parse: request heads, chunked bodies, percent-encoding and query strings (RFC 9112), in
 * place. Strict where leniency lets two parsers disagree (request smuggling): no folded lines, no
 * blanks before a colon, one Content-Length, never with Transfer-Encoding. */
#include "http_parse.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "common/fmt.h"

/* RFC 9110 tchar */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* End of the head: the index just past its blank line, or 0 when it is not all there. */
static size_t head_end(const char *buf, size_t len)
{
    for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + len - p))) != NULL;) {
        p++;
        if (p < buf + len && *p == '\n')
            return (size_t)(p + 1 - buf);
        if (p + 1 < buf + len && p[0] == '\r' && p[1] == '\n')
            return (size_t)(p + 2 - buf);
    }
    return 0;
}

/* Cuts the line starting at *p (ending in LF or CRLF) and moves *p past it. */
static char *next_line(char **p, char *end)
{
    char *s = *p;
    char *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl)
        return NULL;
    *p = nl + 1;
    if (nl > s && nl[-1] == '\r')
        nl--;
    *nl = 0;
    return s;
}

static bool parse_u64(const char *s, int64_t *out)
{
    if (!*s)
        return false;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > (INT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return true;
}

bool http_has_token(const char *value, const char *token)
{
    if (!value)
        return false;
    size_t tl = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ',' || is_blank(*p))
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && is_blank(e[-1]))
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
            return true;
    }
    return false;
}

static http_parse_rc parse_request_line(char *line, http_head *h)
{
    char *sp1 = strchr(line, ' ');
    if (!sp1 || sp1 == line)
        return HP_BAD;
    *sp1 = 0;
    for (const char *m = line; *m; m++)
        if (!is_tchar((unsigned char)*m))
            return HP_BAD;
    char *target = sp1 + 1;
    char *sp2 = strchr(target, ' ');
    if (!sp2 || sp2 == target)
        return HP_BAD;
    *sp2 = 0;
    for (const unsigned char *t = (const unsigned char *)target; *t; t++)
        if (*t <= 0x20 || *t == 0x7f)
            return HP_BAD;
    const char *ver = sp2 + 1;
    if (strncmp(ver, "HTTP/", 5) != 0)
        return HP_BAD;
    const char *v = ver + 5;
    if (!(v[0] >= '0' && v[0] <= '9' && v[1] == '.' && v[2] >= '0' && v[2] <= '9' && !v[3]))
        return HP_BAD;
    if (v[0] != '1' || v[2] > '1')
        return HP_VERSION;
    h->method = line;
    h->target = target;
    h->minor = v[2] - '0';
    return HP_OK;
}

http_parse_rc http_parse_head(char *buf, size_t len, http_kv *hdrs, size_t max_hdrs, http_head *h)
{
    /* RFC 9112 §2.2: blank lines before the request line are ignored */
    size_t skip = 0;
    while (skip < len && (buf[skip] == '\r' || buf[skip] == '\n'))
        skip++;
    size_t end = head_end(buf + skip, len - skip);
    if (!end)
        return HP_INCOMPLETE;
    /* a NUL would cut a line short, so one string would end where the line does not */
    if (memchr(buf + skip, 0, end))
        return HP_BAD;
    memset(h, 0, sizeof *h);
    h->headers = hdrs;
    h->head_len = skip + end;
    h->content_length = -1;
    char *p = buf + skip, *e = buf + skip + end;
    char *line = next_line(&p, e);
    http_parse_rc rc = parse_request_line(line, h);
    if (rc != HP_OK)
        return rc;
    h->fields_len = (size_t)(e - p);
    const char *te = NULL;
    bool have_cl = false, conn_close = false, conn_keep = false;
    while ((line = next_line(&p, e)) != NULL && *line) {
        if (is_blank(*line))
            return HP_BAD; /* obsolete line folding */
        char *colon = strchr(line, ':');
        if (!colon || colon == line)
            return HP_BAD;
        for (char *k = line; k < colon; k++)
            if (!is_tchar((unsigned char)*k))
                return HP_BAD; /* includes blanks before the colon */
        *colon = 0;
        char *v = colon + 1;
        while (is_blank(*v))
            v++;
        char *ve = v + strlen(v);
        while (ve > v && is_blank(ve[-1]))
            ve--;
        *ve = 0;
        for (const unsigned char *c = (const unsigned char *)v; *c; c++)
            if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
                return HP_BAD;
        if (h->nheaders == max_hdrs)
            return HP_TOO_LARGE;
        hdrs[h->nheaders].key = line;
        hdrs[h->nheaders].value = v;
        h->nheaders++;
        if (strcasecmp(line, "Content-Length") == 0) {
            int64_t cl;
            if (!parse_u64(v, &cl) || (have_cl && cl != h->content_length))
                return HP_BAD;
            have_cl = true;
            h->content_length = cl;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            if (te)
                return HP_BAD;
            te = v;
        } else if (strcasecmp(line, "Connection") == 0) {
            /* repeated lines are one list (RFC 9110 §5.3) */
            conn_close = conn_close || http_has_token(v, "close");
            conn_keep = conn_keep || http_has_token(v, "keep-alive");
        } else if (strcasecmp(line, "Expect") == 0) {
            h->expect_continue = strcasecmp(v, "100-continue") == 0;
        }
    }
    if (te) {
        if (have_cl)
            return HP_BAD;
        if (strcasecmp(te, "chunked") != 0)
            return HP_NOT_IMPLEMENTED;
        h->chunked = true;
    }
    h->keep_alive = !conn_close && (h->minor >= 1 || conn_keep);
    return HP_OK;
}

/* One pass over the chunked form: with out == NULL it only measures (buf untouched), else it
 * moves the data to out (out <= the data, so an in-place move is safe). */
static http_parse_rc chunked_pass(char *buf, size_t len, size_t max, char *out, size_t *body_len,
                                  size_t *consumed)
{
    size_t i = 0, total = 0;
    for (;;) {
        /* chunk-size [; ext] CRLF */
        size_t size = 0;
        int digits = 0;
        while (i < len && fmt_hexval(buf[i]) >= 0) {
            if (size > (SIZE_MAX >> 4) || digits >= 16)
                return HP_BAD;
            size = size * 16 + (size_t)fmt_hexval(buf[i]);
            digits++;
            i++;
        }
        if (i == len)
            return HP_INCOMPLETE;
        if (!digits)
            return HP_BAD;
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl) {
            if (len - i > 1024)
                return HP_BAD; /* an endless chunk extension */
            return HP_INCOMPLETE;
        }
        /* RFC 9112 §7.1: optional blanks, then an extension (";...") or the line end; no bare CR */
        size_t j = i;
        while (is_blank(buf[j]))
            j++;
        if (buf[j] == ';') {
            for (size_t k = j; buf + k < nl; k++)
                if (buf[k] == '\r' && buf + k + 1 != nl)
                    return HP_BAD;
        } else if (!(buf + j == nl || (buf[j] == '\r' && buf + j + 1 == nl))) {
            return HP_BAD;
        }
        i = (size_t)(nl - buf) + 1;
        if (size == 0)
            break;
        if (size > max || total > max - size)
            return HP_TOO_LARGE;
        if (len - i < size)
            return HP_INCOMPLETE;
        if (out)
            memmove(out + total, buf + i, size);
        total += size;
        i += size;
        /* CRLF after the data */
        if (i < len && buf[i] == '\r')
            i++;
        if (i == len)
            return HP_INCOMPLETE;
        if (buf[i] != '\n')
            return HP_BAD;
        i++;
    }
    /* trailer fields, then the blank line */
    for (;;) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl) {
            if (len - i > 8192)
                return HP_BAD;
            return HP_INCOMPLETE;
        }
        size_t ll = (size_t)(nl - (buf + i));
        bool blank = ll == 0 || (ll == 1 && buf[i] == '\r');
        i = (size_t)(nl - buf) + 1;
        if (blank)
            break;
    }
    *body_len = total;
    *consumed = i;
    return HP_OK;
}

http_parse_rc http_chunked_decode(char *buf, size_t len, size_t max, size_t *body_len,
                                  size_t *consumed)
{
    http_parse_rc rc = chunked_pass(buf, len, max, NULL, body_len, consumed);
    if (rc != HP_OK)
        return rc;
    return chunked_pass(buf, len, max, buf, body_len, consumed);
}

size_t http_pct_decode(char *s, size_t n, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%' && i + 2 < n && fmt_hexval(s[i + 1]) >= 0 && fmt_hexval(s[i + 2]) >= 0) {
            c = (char)(fmt_hexval(s[i + 1]) * 16 + fmt_hexval(s[i + 2]));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        s[o++] = c;
    }
    s[o] = 0;
    return o;
}

void http_split_target(char *target, char **path, char **query)
{
    char *q = strchr(target, '?');
    *query = NULL;
    if (q) {
        *q = 0;
        *query = q + 1;
    }
    http_pct_decode(target, strlen(target), false);
    *path = target;
}

size_t http_parse_query(char *q, http_kv *out, size_t max)
{
    size_t n = 0;
    char *p = q;
    while (p && *p && n < max) {
        char *amp = strchr(p, '&');
        if (amp)
            *amp = 0;
        if (*p) {
            char *eq = strchr(p, '=');
            out[n].value = "";
            if (eq) {
                *eq = 0;
                http_pct_decode(eq + 1, strlen(eq + 1), true);
                out[n].value = eq + 1;
            }
            http_pct_decode(p, strlen(p), true);
            out[n].key = p;
            n++;
        }
        p = amp ? amp + 1 : NULL;
    }
    return n;
}

const char *http_find_header(const http_kv *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(h[i].key, name) == 0)
            return h[i].value;
    return NULL;
}
