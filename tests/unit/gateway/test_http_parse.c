/* Unit tests for gateway/http_parse: request heads, chunked bodies, percent-decoding, targets,
 * query strings, header lookup and tokens, plus a mutation loop over malformed input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"
#include "test_support.h"

#define MAX_HDRS 32

/* One parse of a private, exactly sized copy (so that ASan sees any read past len). */
typedef struct parsed {
    char *buf;
    size_t len;
    http_kv hdrs[MAX_HDRS];
    http_head h;
    int rc;
} parsed;

static void parse_n(parsed *p, const char *req, size_t len, size_t max_hdrs)
{
    memset(p, 0, sizeof *p);
    p->buf = malloc(len ? len : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p->buf);
    memcpy(p->buf, req, len);
    p->len = len;
    p->rc = http_parse_head(p->buf, len, p->hdrs, max_hdrs, &p->h);
}

static void parse(parsed *p, const char *req)
{
    parse_n(p, req, strlen(req), MAX_HDRS);
}

static void parsed_free(parsed *p)
{
    free(p->buf);
    p->buf = NULL;
}

static const char *rc_name(int rc)
{
    switch (rc) {
    case HP_OK:
        return "OK";
    case HP_INCOMPLETE:
        return "INCOMPLETE";
    case HP_BAD:
        return "BAD";
    case HP_TOO_LARGE:
        return "TOO_LARGE";
    case HP_VERSION:
        return "VERSION";
    case HP_NOT_IMPLEMENTED:
        return "NOT_IMPLEMENTED";
    default:
        return "?";
    }
}

/* what, with control characters escaped, for failure messages. */
static const char *show(const char *what)
{
    static char out[512];
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)what; *c && o + 5 < sizeof out; c++) {
        if (*c == '\r')
            o += (size_t)snprintf(out + o, sizeof out - o, "\\r");
        else if (*c == '\n')
            o += (size_t)snprintf(out + o, sizeof out - o, "\\n");
        else if (*c < 0x20 || *c >= 0x7f)
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *c);
        else
            out[o++] = (char)*c;
    }
    out[o] = '\0';
    return out;
}

/* Reports which table row failed (CUnit only shows the line of the assertion). */
static void expect_rc(const char *what, int got, int want, int alt)
{
    bool ok = got == want || got == alt;
    if (!ok)
        fprintf(stderr, "\n  [%s] got %s, want %s%s%s\n", show(what), rc_name(got), rc_name(want),
                alt != want ? " or " : "", alt != want ? rc_name(alt) : "");
    CU_ASSERT_TRUE(ok);
}

/* ---------- http_parse_head ---------- */

static void test_head_simple_get(void)
{
    const char *req = "GET /v1/users/me?x=1 HTTP/1.1\r\nHost: example.com\r\n"
                      "User-Agent: t/1.0\r\n\r\nNEXT";
    parsed p;
    parse(&p, req);
    CU_ASSERT_EQUAL_FATAL(p.rc, HP_OK);
    CU_ASSERT_STRING_EQUAL(p.h.method, "GET");
    CU_ASSERT_STRING_EQUAL(p.h.target, "/v1/users/me?x=1");
    CU_ASSERT_EQUAL(p.h.minor, 1);
    CU_ASSERT_PTR_EQUAL(p.h.headers, p.hdrs);
    CU_ASSERT_EQUAL_FATAL(p.h.nheaders, 2);
    CU_ASSERT_STRING_EQUAL(p.hdrs[0].key, "Host");
    CU_ASSERT_STRING_EQUAL(p.hdrs[0].value, "example.com");
    CU_ASSERT_STRING_EQUAL(p.hdrs[1].key, "User-Agent");
    CU_ASSERT_STRING_EQUAL(p.hdrs[1].value, "t/1.0");
    CU_ASSERT_EQUAL(p.h.head_len, strlen(req) - 4);
    /* the header lines and the blank line, without "GET /v1/users/me?x=1 HTTP/1.1\r\n" */
    CU_ASSERT_EQUAL(p.h.fields_len, strlen(req) - 4 - 31);
    CU_ASSERT_EQUAL(memcmp(p.buf + p.h.head_len, "NEXT", 4), 0);
    CU_ASSERT_EQUAL(p.h.content_length, -1);
    CU_ASSERT_TRUE(p.h.keep_alive);
    CU_ASSERT_FALSE(p.h.chunked);
    CU_ASSERT_FALSE(p.h.expect_continue);
    parsed_free(&p);

    /* no headers at all; other methods */
    parse(&p, "DELETE /x HTTP/1.1\r\n\r\n");
    CU_ASSERT_EQUAL_FATAL(p.rc, HP_OK);
    CU_ASSERT_STRING_EQUAL(p.h.method, "DELETE");
    CU_ASSERT_STRING_EQUAL(p.h.target, "/x");
    CU_ASSERT_EQUAL(p.h.nheaders, 0);
    CU_ASSERT_EQUAL(p.h.head_len, p.len);
    parsed_free(&p);

    parse(&p, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    CU_ASSERT_EQUAL_FATAL(p.rc, HP_OK);
    CU_ASSERT_STRING_EQUAL(p.h.method, "OPTIONS");
    CU_ASSERT_STRING_EQUAL(p.h.target, "*");
    parsed_free(&p);
}

static void test_head_keep_alive(void)
{
    static const struct {
        const char *req;
        int minor;
        bool keep_alive;
    } t[] = {
        {"GET / HTTP/1.1\r\n\r\n", 1, true},
        {"GET / HTTP/1.0\r\n\r\n", 0, false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, true},
        {"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n", 0, true},
        {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nCONNECTION: CLOSE\r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", 1, true},
        {"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", 1, true},
        {"GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n", 1, true},
        /* a list split over two field lines is one list (RFC 9110 §5.3) */
        {"GET / HTTP/1.1\r\nConnection: foo\r\nConnection: close\r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nConnection: close\r\nConnection: foo\r\n\r\n", 1, false},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        parsed p;
        parse(&p, t[i].req);
        expect_rc(t[i].req, p.rc, HP_OK, HP_OK);
        if (p.rc == HP_OK) {
            CU_ASSERT_EQUAL(p.h.minor, t[i].minor);
            if (p.h.keep_alive != t[i].keep_alive)
                fprintf(stderr, "\n  [%s] keep_alive %d\n", show(t[i].req), p.h.keep_alive);
            CU_ASSERT_EQUAL(p.h.keep_alive, t[i].keep_alive);
            CU_ASSERT_EQUAL(p.h.head_len, p.len);
        }
        parsed_free(&p);
    }
}

static void test_head_line_endings(void)
{
    parsed p;
    parse(&p, "GET /a HTTP/1.1\nHost: x\nX-B: y\n\n");
    CU_ASSERT_EQUAL_FATAL(p.rc, HP_OK);
    CU_ASSERT_STRING_EQUAL(p.h.target, "/a");
    CU_ASSERT_EQUAL(p.h.minor, 1);
    CU_ASSERT_EQUAL_FATAL(p.h.nheaders, 2);
    CU_ASSERT_STRING_EQUAL(p.hdrs[0].value, "x");
    CU_ASSERT_STRING_EQUAL(p.hdrs[1].key, "X-B");
    CU_ASSERT_STRING_EQUAL(p.hdrs[1].value, "y");
    CU_ASSERT_EQUAL(p.h.head_len, p.len);
    parsed_free(&p);

    /* CRLF and bare LF mixed, line by line */
    parse(&p, "GET /a HTTP/1.1\r\nHost: x\nX-B: y\r\n\n");
    CU_ASSERT_EQUAL_FATAL(p.rc, HP_OK);
    CU_ASSERT_EQUAL_FATAL(p.h.nheaders, 2);
    CU_ASSERT_STRING_EQUAL(p.hdrs[0].value, "x");
    CU_ASSERT_STRING_EQUAL(p.hdrs[1].value, "y");
    CU_ASSERT_EQUAL(p.h.head_len, p.len);
    parsed_free(&p);

    parse(&p, "GET /a HTTP/1.1\nHost: x\r\n\r\nrest");
    CU_ASSERT_EQUAL_FATAL(p.rc, HP_OK);
    CU_ASSERT_EQUAL(p.h.head_len, p.len - 4);
    parsed_free(&p);
}

static void test_head_values(void)
{
    parsed p;
    parse(&p, "GET / HTTP/1.1\r\nA:  \t v a l \t \r\nB:\r\nC: \t \r\nD:x\r\nE: b\tc\r\n"
              "F: caf\xc3\xa9\r\n\r\n");
    CU_ASSERT_EQUAL_FATAL(p.rc, HP_OK);
    CU_ASSERT_EQUAL_FATAL(p.h.nheaders, 6);
    CU_ASSERT_STRING_EQUAL(p.hdrs[0].key, "A");
    CU_ASSERT_STRING_EQUAL(p.hdrs[0].value, "v a l");
    CU_ASSERT_STRING_EQUAL(p.hdrs[1].key, "B");
    CU_ASSERT_STRING_EQUAL(p.hdrs[1].value, "");
    CU_ASSERT_STRING_EQUAL(p.hdrs[2].value, "");
    CU_ASSERT_STRING_EQUAL(p.hdrs[3].key, "D");
    CU_ASSERT_STRING_EQUAL(p.hdrs[3].value, "x");
    CU_ASSERT_STRING_EQUAL(p.hdrs[4].value, "b\tc");        /* tab inside a value is allowed */
    CU_ASSERT_STRING_EQUAL(p.hdrs[5].value, "caf\xc3\xa9"); /* obs-text is not a control */
    parsed_free(&p);

    /* names keep their case */
    parse(&p, "GET / HTTP/1.1\r\nx-MiXeD: 1\r\n\r\n");
    CU_ASSERT_EQUAL_FATAL(p.rc, HP_OK);
    CU_ASSERT_STRING_EQUAL(p.hdrs[0].key, "x-MiXeD");
    parsed_free(&p);
}

static void test_head_leading_blank_lines(void)
{
    static const char *t[] = {"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
                              "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
                              "\n\nGET / HTTP/1.1\nHost: x\n\n"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        parsed p;
        parse(&p, t[i]);
        expect_rc(t[i], p.rc, HP_OK, HP_OK);
        if (p.rc == HP_OK) {
            CU_ASSERT_STRING_EQUAL(p.h.method, "GET");
            CU_ASSERT_STRING_EQUAL(p.h.target, "/");
            CU_ASSERT_EQUAL(p.h.nheaders, 1);
            CU_ASSERT_EQUAL(p.h.head_len, p.len); /* the skipped lines are consumed too */
        }
        parsed_free(&p);
    }
}

/* Valid heads: every proper prefix is HP_INCOMPLETE and leaves the bytes alone. */
static const char *const valid_heads[] = {
    "GET /v1/users/me?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
    "GET / HTTP/1.1\r\n\r\n",
    "GET /a HTTP/1.1\nHost: x\nX-B: y\n\n",
    "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "\n\nGET / HTTP/1.0\nConnection: keep-alive\n\n",
    "POST /echo HTTP/1.1\r\nContent-Length: 42\r\nExpect: 100-continue\r\nA:  \t v \r\n"
    "B:\r\n\r\n",
    "PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: foo, close\r\n\r\n",
};

static void test_head_incomplete_prefixes(void)
{
    for (size_t i = 0; i < sizeof valid_heads / sizeof valid_heads[0]; i++) {
        const char *req = valid_heads[i];
        size_t len = strlen(req);
        for (size_t n = 0; n < len; n++) {
            parsed p;
            parse_n(&p, req, n, MAX_HDRS);
            if (p.rc != HP_INCOMPLETE)
                fprintf(stderr, "\n  [head %zu prefix %zu] got %s\n", i, n, rc_name(p.rc));
            CU_ASSERT_EQUAL(p.rc, HP_INCOMPLETE);
            CU_ASSERT_EQUAL(memcmp(p.buf, req, n), 0);
            parsed_free(&p);
        }
        parsed p;
        parse_n(&p, req, len, MAX_HDRS);
        expect_rc(req, p.rc, HP_OK, HP_OK);
        if (p.rc == HP_OK)
            CU_ASSERT_EQUAL(p.h.head_len, len);
        parsed_free(&p);
    }
}

static void test_head_content_length(void)
{
    static const struct {
        const char *hdrs; /* header lines, each ending in CRLF */
        int rc, alt;
        int64_t cl;
    } t[] = {
        {"Content-Length: 0\r\n", HP_OK, HP_OK, 0},
        {"Content-Length: 42\r\n", HP_OK, HP_OK, 42},
        {"content-length: 3\r\n", HP_OK, HP_OK, 3},
        {"Content-Length: 9999999999\r\n", HP_OK, HP_OK, 9999999999LL},
        {"Content-Length: 007\r\n", HP_OK, HP_OK, 7},
        {"Content-Length: 9223372036854775808\r\n", HP_BAD, HP_TOO_LARGE, 0},
        {"Content-Length:  7 \t\r\n", HP_OK, HP_OK, 7},
        {"Content-Length: 5\r\nContent-Length: 5\r\n", HP_OK, HP_OK, 5},
        {"Content-Length: -5\r\n", HP_BAD, HP_BAD, 0},
        {"Content-Length: +5\r\n", HP_BAD, HP_BAD, 0},
        {"Content-Length: 1x\r\n", HP_BAD, HP_BAD, 0},
        {"Content-Length: 0x10\r\n", HP_BAD, HP_BAD, 0},
        {"Content-Length: 1 2\r\n", HP_BAD, HP_BAD, 0},
        {"Content-Length:\r\n", HP_BAD, HP_BAD, 0},
        {"Content-Length:   \r\n", HP_BAD, HP_BAD, 0},
        {"Content-Length: 5\r\nContent-Length: 6\r\n", HP_BAD, HP_BAD, 0},
        {"Content-Length: 99999999999999999999999\r\n", HP_BAD, HP_TOO_LARGE, 0},
        {"Content-Length: 18446744073709551616\r\n", HP_BAD, HP_TOO_LARGE, 0},
        {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", HP_BAD, HP_BAD, 0},
        {"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", HP_BAD, HP_BAD, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char req[512];
        snprintf(req, sizeof req, "POST /p HTTP/1.1\r\nHost: h\r\n%s\r\n", t[i].hdrs);
        parsed p;
        parse(&p, req);
        expect_rc(t[i].hdrs, p.rc, t[i].rc, t[i].alt);
        if (p.rc == HP_OK && t[i].rc == HP_OK) {
            CU_ASSERT_EQUAL(p.h.content_length, t[i].cl);
            CU_ASSERT_FALSE(p.h.chunked);
        }
        parsed_free(&p);
    }
}

static void test_head_transfer_encoding(void)
{
    static const struct {
        const char *hdrs;
        int rc, alt;
        bool chunked;
    } t[] = {
        {"Transfer-Encoding: chunked\r\n", HP_OK, HP_OK, true},
        {"transfer-encoding: Chunked\r\n", HP_OK, HP_OK, true},
        {"Transfer-Encoding: gzip\r\n", HP_NOT_IMPLEMENTED, HP_NOT_IMPLEMENTED, false},
        {"Transfer-Encoding: gzip, chunked\r\n", HP_NOT_IMPLEMENTED, HP_BAD, false},
        {"Transfer-Encoding: chunked, gzip\r\n", HP_BAD, HP_NOT_IMPLEMENTED, false},
        /* two field lines are one list: chunked is not (only) the last coding */
        {"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", HP_NOT_IMPLEMENTED, HP_BAD,
         false},
        {"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", HP_BAD, HP_NOT_IMPLEMENTED,
         false},
        {"Host2: x\r\n", HP_OK, HP_OK, false},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char req[512];
        snprintf(req, sizeof req, "POST /p HTTP/1.1\r\nHost: h\r\n%s\r\n", t[i].hdrs);
        parsed p;
        parse(&p, req);
        expect_rc(t[i].hdrs, p.rc, t[i].rc, t[i].alt);
        if (p.rc == HP_OK) {
            CU_ASSERT_EQUAL(p.h.chunked, t[i].chunked);
            CU_ASSERT_EQUAL(p.h.content_length, -1);
        }
        parsed_free(&p);
    }
}

static void test_head_expect(void)
{
    static const struct {
        const char *hdrs;
        bool expect;
    } t[] = {
        {"Expect: 100-continue\r\n", true},
        {"expect: 100-Continue\r\n", true},
        {"EXPECT: 100-CONTINUE\r\n", true},
        {"X-Expect: 100-continue\r\n", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char req[256];
        snprintf(req, sizeof req, "POST /p HTTP/1.1\r\nContent-Length: 1\r\n%s\r\n", t[i].hdrs);
        parsed p;
        parse(&p, req);
        expect_rc(req, p.rc, HP_OK, HP_OK);
        if (p.rc == HP_OK)
            CU_ASSERT_EQUAL(p.h.expect_continue, t[i].expect);
        parsed_free(&p);
    }
}

static void test_head_max_headers(void)
{
    const char *req = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    parsed p;
    parse_n(&p, req, strlen(req), 4);
    CU_ASSERT_EQUAL(p.rc, HP_TOO_LARGE);
    parsed_free(&p);
    parse_n(&p, req, strlen(req), 5);
    CU_ASSERT_EQUAL_FATAL(p.rc, HP_OK);
    CU_ASSERT_EQUAL(p.h.nheaders, 5);
    CU_ASSERT_STRING_EQUAL(p.hdrs[4].key, "E");
    parsed_free(&p);
    parse_n(&p, "GET / HTTP/1.1\r\n\r\n", 18, 0);
    CU_ASSERT_EQUAL(p.rc, HP_OK);
    CU_ASSERT_EQUAL(p.h.nheaders, 0);
    parsed_free(&p);
    parse_n(&p, "GET / HTTP/1.1\r\nA: 1\r\n\r\n", 24, 0);
    CU_ASSERT_EQUAL(p.rc, HP_TOO_LARGE);
    parsed_free(&p);
}

static void test_head_version(void)
{
    static const struct {
        const char *line;
        int rc, alt;
    } t[] = {
        {"GET / HTTP/2.0", HP_VERSION, HP_VERSION},
        {"GET / HTTP/1.2", HP_VERSION, HP_BAD},
        {"GET / HTTP/3.0", HP_VERSION, HP_BAD},
        {"GET / HTTP/0.9", HP_VERSION, HP_BAD},
        {"GET / HTTP/1", HP_BAD, HP_VERSION},
        {"GET / HTTP/1.1x", HP_BAD, HP_VERSION},
        {"GET / HTTP/11.1", HP_BAD, HP_VERSION},
        {"GET / http/1.1", HP_BAD, HP_VERSION},
        {"GET / HTTPS/1.1", HP_BAD, HP_VERSION},
        {"GET / FOO", HP_BAD, HP_VERSION},
        {"GET /", HP_BAD, HP_VERSION},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char req[256];
        snprintf(req, sizeof req, "%s\r\nHost: h\r\n\r\n", t[i].line);
        parsed p;
        parse(&p, req);
        expect_rc(t[i].line, p.rc, t[i].rc, t[i].alt);
        parsed_free(&p);
    }
}

static void test_head_malformed(void)
{
    static const struct {
        const char *req;
        size_t len; /* 0: strlen */
    } t[] = {
        {"GET HTTP/1.1\r\nHost: x\r\n\r\n", 0},
        {"GARBAGE\r\n\r\n", 0},
        {" GET / HTTP/1.1\r\n\r\n", 0},
        {"/ HTTP/1.1\r\n\r\n", 0},
        {"GET / HTTP/1.1 extra\r\n\r\n", 0},
        {"GET /a\x01 HTTP/1.1\r\n\r\n", 0},
        {"GET /a\0b HTTP/1.1\r\n\r\n", 21},
        {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nBad(Name): x\r\n\r\n", 0},
        {"GE(T / HTTP/1.1\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\n: x\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", 26},
        {"GET / HTTP/1.1\r\nA: b\x01"
         "c\r\n\r\n",
         0},
        {"GET / HTTP/1.1\r\nA: b\x1b"
         "c\r\n\r\n",
         0},
        {"GET / HTTP/1.1\r\nA: b\x7f"
         "c\r\n\r\n",
         0},
        {"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nA\0B: c\r\n\r\n", 26},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t len = t[i].len ? t[i].len : strlen(t[i].req);
        parsed p;
        parse_n(&p, t[i].req, len, MAX_HDRS);
        char what[32];
        snprintf(what, sizeof what, "malformed #%zu", i);
        expect_rc(what, p.rc, HP_BAD, HP_BAD);
        parsed_free(&p);
    }
}

/* ---------- mutation loop: any return code, no crash, sane results on HP_OK ---------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static bool in_buf(const char *p, const char *buf, size_t len)
{
    return p && p >= buf && p < buf + len;
}

static size_t mutate(char *b, size_t len, size_t cap)
{
    static const char special[] = {'\0', '\r', '\n', ' ', '\t', ':',    ',',    '%',
                                   ';',  '0',  'f',  'F', '-',  '\x7f', '\xff', '\x01'};
    int nmut = 1 + (int)(rng() % 4);
    for (int m = 0; m < nmut; m++) {
        size_t pos = len ? rng() % len : 0;
        char c = rng() % 2 ? special[rng() % sizeof special] : (char)(rng() & 0xff);
        switch (rng() % 5) {
        case 0: /* overwrite */
            if (len)
                b[pos] = c;
            break;
        case 1: /* insert */
            if (len < cap) {
                memmove(b + pos + 1, b + pos, len - pos);
                b[pos] = c;
                len++;
            }
            break;
        case 2: /* delete */
            if (len) {
                memmove(b + pos, b + pos + 1, len - pos - 1);
                len--;
            }
            break;
        case 3: /* truncate */
            len = pos;
            break;
        default: /* duplicate a piece */
            if (len) {
                size_t n = 1 + rng() % 16;
                if (pos + n > len)
                    n = len - pos;
                if (len + n <= cap) {
                    memmove(b + pos + n, b + pos, len - pos);
                    len += n;
                }
            }
            break;
        }
    }
    return len;
}

static const char *const fuzz_heads[] = {
    "GET /v1/users/me?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
    "POST /echo HTTP/1.1\r\nContent-Length: 42\r\nExpect: 100-continue\r\n\r\nbody",
    "PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: foo, close\r\n\r\n",
    "\r\n\r\nGET / HTTP/1.0\nConnection: keep-alive\n\n",
    "GET / HTTP/1.1\r\nA:  \t v \r\nB:\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
};

static const char *const fuzz_chunked[] = {
    "5\r\nhello\r\n0\r\n\r\n",
    "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    "1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "ffffffff\r\nab\r\n0\r\n\r\n",
};

static void test_head_fuzz(void)
{
    enum { CAP = 600 };
    char work[CAP];
    unsigned bad_results = 0;
    for (int it = 0; it < 6000; it++) {
        size_t len;
        if (it % 10 == 9) { /* pure noise */
            len = rng() % 200;
            for (size_t i = 0; i < len; i++)
                work[i] = (char)(rng() & 0xff);
        } else {
            const char *seed = fuzz_heads[rng() % (sizeof fuzz_heads / sizeof fuzz_heads[0])];
            len = strlen(seed);
            memcpy(work, seed, len);
            len = mutate(work, len, CAP);
        }
        size_t max_hdrs = rng() % 9;
        parsed p;
        parse_n(&p, work, len, max_hdrs);
        if (p.rc == HP_OK) {
            bool sane = p.h.head_len > 0 && p.h.head_len <= len && p.h.nheaders <= max_hdrs &&
                        in_buf(p.h.method, p.buf, len) && in_buf(p.h.target, p.buf, len) &&
                        strlen(p.h.method) > 0 && strlen(p.h.target) > 0 &&
                        (p.h.minor == 0 || p.h.minor == 1) && p.h.content_length >= -1 &&
                        !(p.h.chunked && p.h.content_length >= 0);
            for (size_t i = 0; sane && i < p.h.nheaders; i++) {
                sane = in_buf(p.hdrs[i].key, p.buf, len) && in_buf(p.hdrs[i].value, p.buf, len) &&
                       strlen(p.hdrs[i].key) > 0 && strlen(p.hdrs[i].value) < len;
            }
            if (!sane)
                bad_results++;
        } else if (p.rc < HP_NOT_IMPLEMENTED || p.rc > HP_OK) {
            bad_results++;
        }
        parsed_free(&p);
    }
    CU_ASSERT_EQUAL(bad_results, 0);
}

/* ---------- http_chunked_decode ---------- */

typedef struct chunked_out {
    int rc;
    size_t body_len, consumed;
} chunked_out;

/* Decodes an exactly sized private copy; returns it in *out_buf (caller frees). */
static chunked_out chunked(const char *in, size_t len, size_t max, char **out_buf)
{
    char *b = malloc(len ? len : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    memcpy(b, in, len);
    chunked_out o = {0, (size_t)-1, (size_t)-1};
    o.rc = http_chunked_decode(b, len, max, &o.body_len, &o.consumed);
    if (out_buf)
        *out_buf = b;
    else
        free(b);
    return o;
}

static const struct {
    const char *in;
    const char *body;
    size_t consumed; /* 0: strlen(in) */
} chunked_ok[] = {
    {"5\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0},
    {"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n", "abc", 0},
    {"a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij", 0},
    {"1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n", "0123456789abcdef0123456789abcde", 0},
    {"1f\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n", "0123456789abcdef0123456789abcde", 0},
    {"005\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"5;ext=1\r\nhello\r\n0\r\n\r\n", "hello", 0},
    {"5;a=\"q\";b\r\nhello\r\n0;last\r\n\r\n", "hello", 0},
    {"5\r\nhello\r\n0\r\nX-Trailer: 1\r\nY: z\r\n\r\n", "hello", 0},
    {"0\r\n\r\n", "", 0},
    {"5\r\nhe\r\nl\r\n0\r\n\r\n", "he\r\nl", 0},
    {"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", "hello", 15},
    {"5\r\nhello\r\n0\r\nT: 1\r\n\r\nPOST /x HTTP/1.1\r\n", "hello", 21},
};

static void test_chunked_ok(void)
{
    for (size_t i = 0; i < sizeof chunked_ok / sizeof chunked_ok[0]; i++) {
        const char *in = chunked_ok[i].in;
        size_t len = strlen(in);
        size_t want_consumed = chunked_ok[i].consumed ? chunked_ok[i].consumed : len;
        char *b;
        chunked_out o = chunked(in, len, 1 << 20, &b);
        expect_rc(in, o.rc, HP_OK, HP_OK);
        if (o.rc == HP_OK) {
            CU_ASSERT_EQUAL(o.body_len, strlen(chunked_ok[i].body));
            if (o.body_len == strlen(chunked_ok[i].body))
                CU_ASSERT_EQUAL(memcmp(b, chunked_ok[i].body, o.body_len), 0);
            if (o.consumed != want_consumed)
                fprintf(stderr, "\n  [%s] consumed %zu, want %zu\n", show(in), o.consumed,
                        want_consumed);
            CU_ASSERT_EQUAL(o.consumed, want_consumed);
        }
        free(b);
    }
}

static void test_chunked_incomplete(void)
{
    for (size_t i = 0; i < sizeof chunked_ok / sizeof chunked_ok[0]; i++) {
        const char *in = chunked_ok[i].in;
        size_t end = chunked_ok[i].consumed ? chunked_ok[i].consumed : strlen(in);
        for (size_t n = 0; n < end; n++) {
            char *b;
            chunked_out o = chunked(in, n, 1 << 20, &b);
            if (o.rc != HP_INCOMPLETE)
                fprintf(stderr, "\n  [chunked %zu prefix %zu] got %s\n", i, n, rc_name(o.rc));
            CU_ASSERT_EQUAL(o.rc, HP_INCOMPLETE);
            CU_ASSERT_EQUAL(memcmp(b, in, n), 0);
            free(b);
        }
    }
}

static void test_chunked_bad(void)
{
    static const char *t[] = {
        "zz\r\nhello\r\n0\r\n\r\n",  "\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloX0\r\n\r\n",      "5\r\nhello0\r\n\r\n",
        "5\r\nhelloXY0\r\n\r\n",     "-5\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n", "g\r\n",
        "5 x\r\nhello\r\n0\r\n\r\n", "5\rx\r\nhello\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        chunked_out o = chunked(t[i], strlen(t[i]), 1 << 20, NULL);
        expect_rc(t[i], o.rc, HP_BAD, HP_BAD);
    }
}

static void test_chunked_limits(void)
{
    const char *in = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    chunked_out o = chunked(in, strlen(in), 10, NULL);
    CU_ASSERT_EQUAL(o.rc, HP_TOO_LARGE);
    o = chunked(in, strlen(in), 11, NULL);
    CU_ASSERT_EQUAL(o.rc, HP_OK);
    CU_ASSERT_EQUAL(o.body_len, 11);
    o = chunked("0\r\n\r\n", 5, 0, NULL);
    CU_ASSERT_EQUAL(o.rc, HP_OK);
    CU_ASSERT_EQUAL(o.body_len, 0);
    o = chunked("1\r\na\r\n0\r\n\r\n", 11, 0, NULL);
    CU_ASSERT_EQUAL(o.rc, HP_TOO_LARGE);

    /* a size past max before its data arrived: refused at once or still waiting, untouched */
    char *b;
    o = chunked("100000\r\n", 8, 1000, &b);
    expect_rc("100000 early", o.rc, HP_TOO_LARGE, HP_INCOMPLETE);
    CU_ASSERT_EQUAL(memcmp(b, "100000\r\n", 8), 0);
    free(b);

    /* overflowing sizes */
    static const char *huge[] = {
        "ffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        "10000000000000000\r\nabc\r\n0\r\n\r\n",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffff\r\n",
    };
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        o = chunked(huge[i], strlen(huge[i]), 1 << 20, NULL);
        expect_rc(huge[i], o.rc, HP_BAD, HP_TOO_LARGE);
        o = chunked(huge[i], strlen(huge[i]), SIZE_MAX, NULL);
        expect_rc(huge[i], o.rc, HP_BAD, HP_TOO_LARGE);
    }
    /* sizes that fit in 64 bits but not in memory: with no limit, anything but OK or a crash */
    static const char *big[] = {
        "ffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        "7fffffffffffffff\r\nabc\r\n0\r\n\r\n",
        "fffffffffffffff0\r\nab\r\n0\r\n\r\n",
        "1\r\na\r\nffffffffffffffff\r\nb\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        o = chunked(big[i], strlen(big[i]), SIZE_MAX, NULL);
        CU_ASSERT_NOT_EQUAL(o.rc, HP_OK);
        o = chunked(big[i], strlen(big[i]), 1 << 20, NULL);
        expect_rc(big[i], o.rc, HP_TOO_LARGE, HP_BAD);
    }
}

static void test_chunked_fuzz(void)
{
    enum { CAP = 400 };
    char work[CAP];
    unsigned bad_results = 0;
    for (int it = 0; it < 4000; it++) {
        const char *seed = fuzz_chunked[rng() % (sizeof fuzz_chunked / sizeof fuzz_chunked[0])];
        size_t len = strlen(seed);
        memcpy(work, seed, len);
        len = mutate(work, len, CAP);
        size_t max = rng() % 2 ? SIZE_MAX : rng() % 64;
        chunked_out o = chunked(work, len, max, NULL);
        if (o.rc == HP_OK) {
            if (o.consumed > len || o.body_len > o.consumed || o.body_len > max)
                bad_results++;
        } else if (o.rc < HP_NOT_IMPLEMENTED || o.rc > HP_OK) {
            bad_results++;
        }
    }
    CU_ASSERT_EQUAL(bad_results, 0);
}

/* ---------- http_pct_decode, http_split_target, http_parse_query ---------- */

static void test_pct_decode(void)
{
    static const struct {
        const char *in;
        bool plus;
        const char *out;
    } t[] = {
        {"%41%62c", false, "Abc"}, {"a+b", true, "a b"},      {"a+b", false, "a+b"},
        {"%2B", true, "+"},        {"%2f%2F", false, "//"},   {"%", false, "%"},
        {"%4", false, "%4"},       {"%zz", false, "%zz"},     {"%4g", false, "%4g"},
        {"a%", false, "a%"},       {"%%41", false, "%A"},     {"100%", true, "100%"},
        {"", false, ""},           {"plain", false, "plain"}, {"%e2%82%ac", false, "\xe2\x82\xac"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t n = strlen(t[i].in);
        char *s = malloc(n + 1);
        memcpy(s, t[i].in, n + 1);
        size_t r = http_pct_decode(s, n, t[i].plus);
        if (r != strlen(t[i].out) || memcmp(s, t[i].out, r) != 0)
            fprintf(stderr, "\n  [pct %s] got %zu '%.*s'\n", t[i].in, r, (int)r, s);
        CU_ASSERT_EQUAL(r, strlen(t[i].out));
        if (r <= n) {
            CU_ASSERT_EQUAL(memcmp(s, t[i].out, r), 0);
            CU_ASSERT_EQUAL(s[r], '\0');
        }
        free(s);
    }

    /* only s[0..n) is decoded: an escape cut by n stays as it is */
    char s1[] = "abc%41";
    CU_ASSERT_EQUAL(http_pct_decode(s1, 5, false), 5);
    CU_ASSERT_STRING_EQUAL(s1, "abc%4");
    char s2[] = "%41xyz";
    CU_ASSERT_EQUAL(http_pct_decode(s2, 3, false), 1);
    CU_ASSERT_STRING_EQUAL(s2, "A");
    char s3[] = "%41";
    CU_ASSERT_EQUAL(http_pct_decode(s3, 0, false), 0);
    CU_ASSERT_EQUAL(s3[0], '\0');

    /* noise: never longer, always terminated */
    unsigned bad = 0;
    for (int it = 0; it < 2000; it++) {
        char b[40];
        size_t n = rng() % 32;
        for (size_t i = 0; i < n; i++)
            b[i] = "%0aF+zG9"[rng() % 8];
        b[n] = 'X';
        size_t r = http_pct_decode(b, n, rng() % 2);
        if (r > n || b[r] != '\0')
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_split_target(void)
{
    char t1[] = "/v1/users/me?x=1&y=2";
    char *path = NULL, *query = NULL;
    http_split_target(t1, &path, &query);
    CU_ASSERT_STRING_EQUAL(path, "/v1/users/me");
    CU_ASSERT_PTR_NOT_NULL_FATAL(query);
    CU_ASSERT_STRING_EQUAL(query, "x=1&y=2");

    char t2[] = "/v1/a%20b";
    query = (char *)"sentinel";
    http_split_target(t2, &path, &query);
    CU_ASSERT_STRING_EQUAL(path, "/v1/a b");
    CU_ASSERT_PTR_NULL(query);

    /* split before decoding; the query stays raw; '+' in a path is no space */
    char t3[] = "/a%3Fb+c?q=%41+";
    http_split_target(t3, &path, &query);
    CU_ASSERT_STRING_EQUAL(path, "/a?b+c");
    CU_ASSERT_PTR_NOT_NULL_FATAL(query);
    CU_ASSERT_STRING_EQUAL(query, "q=%41+");

    char t4[] = "/p?";
    http_split_target(t4, &path, &query);
    CU_ASSERT_STRING_EQUAL(path, "/p");
    CU_ASSERT_TRUE(query == NULL || *query == '\0');

    char t5[] = "/a?b?c";
    http_split_target(t5, &path, &query);
    CU_ASSERT_STRING_EQUAL(path, "/a");
    CU_ASSERT_PTR_NOT_NULL_FATAL(query);
    CU_ASSERT_STRING_EQUAL(query, "b?c");
}

static void test_parse_query(void)
{
    http_kv kv[8];
    char q1[] = "a=1&b=two&c";
    CU_ASSERT_EQUAL_FATAL(http_parse_query(q1, kv, 8), 3);
    CU_ASSERT_STRING_EQUAL(kv[0].key, "a");
    CU_ASSERT_STRING_EQUAL(kv[0].value, "1");
    CU_ASSERT_STRING_EQUAL(kv[1].key, "b");
    CU_ASSERT_STRING_EQUAL(kv[1].value, "two");
    CU_ASSERT_STRING_EQUAL(kv[2].key, "c");
    CU_ASSERT_STRING_EQUAL(kv[2].value, "");

    char q2[] = "&&a=1&";
    CU_ASSERT_EQUAL_FATAL(http_parse_query(q2, kv, 8), 1);
    CU_ASSERT_STRING_EQUAL(kv[0].key, "a");
    CU_ASSERT_STRING_EQUAL(kv[0].value, "1");

    char q3[] = "k%5B%5D=a+b%21";
    CU_ASSERT_EQUAL_FATAL(http_parse_query(q3, kv, 8), 1);
    CU_ASSERT_STRING_EQUAL(kv[0].key, "k[]");
    CU_ASSERT_STRING_EQUAL(kv[0].value, "a b!");

    /* split on the raw '&' and the first raw '=', then decode */
    char q4[] = "a%3Db=c%26d&e==f";
    CU_ASSERT_EQUAL_FATAL(http_parse_query(q4, kv, 8), 2);
    CU_ASSERT_STRING_EQUAL(kv[0].key, "a=b");
    CU_ASSERT_STRING_EQUAL(kv[0].value, "c&d");
    CU_ASSERT_STRING_EQUAL(kv[1].key, "e");
    CU_ASSERT_STRING_EQUAL(kv[1].value, "=f");

    char q5[] = "a=1&b=2&c=3";
    CU_ASSERT_EQUAL_FATAL(http_parse_query(q5, kv, 2), 2);
    CU_ASSERT_STRING_EQUAL(kv[0].key, "a");
    CU_ASSERT_STRING_EQUAL(kv[1].key, "b");
    CU_ASSERT_STRING_EQUAL(kv[1].value, "2");

    char q6[] = "";
    CU_ASSERT_EQUAL(http_parse_query(q6, kv, 8), 0);
    char q7[] = "a=1";
    CU_ASSERT_EQUAL(http_parse_query(q7, kv, 0), 0);
    char q8[] = "&&&";
    CU_ASSERT_EQUAL(http_parse_query(q8, kv, 8), 0);

    unsigned bad = 0;
    for (int it = 0; it < 2000; it++) {
        char b[40];
        size_t n = rng() % 32;
        for (size_t i = 0; i < n; i++)
            b[i] = "a=&%+3D"[rng() % 7];
        b[n] = '\0';
        size_t max = rng() % 6;
        size_t got = http_parse_query(b, kv, max);
        if (got > max)
            bad++;
        for (size_t i = 0; i < got && i < max; i++)
            if (!kv[i].key || !kv[i].value || strlen(kv[i].key) + strlen(kv[i].value) > n)
                bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

/* ---------- http_find_header, http_has_token ---------- */

static void test_header_lookup(void)
{
    const http_kv h[] = {{"Host", "a"}, {"X-Dup", "1"}, {"x-dup", "2"}, {"Accept", ""}};
    CU_ASSERT_STRING_EQUAL(http_find_header(h, 4, "host"), "a");
    CU_ASSERT_STRING_EQUAL(http_find_header(h, 4, "HOST"), "a");
    CU_ASSERT_STRING_EQUAL(http_find_header(h, 4, "x-DUP"), "1");
    CU_ASSERT_STRING_EQUAL(http_find_header(h, 4, "accept"), "");
    CU_ASSERT_PTR_NULL(http_find_header(h, 4, "X-Du"));
    CU_ASSERT_PTR_NULL(http_find_header(h, 4, "X-Dupe"));
    CU_ASSERT_PTR_NULL(http_find_header(h, 4, "Missing"));
    CU_ASSERT_PTR_NULL(http_find_header(h, 0, "Host"));
    CU_ASSERT_STRING_EQUAL(http_find_header(h + 2, 2, "X-Dup"), "2");
}

static void test_has_token(void)
{
    static const struct {
        const char *value, *token;
        bool want;
    } t[] = {
        {"keep-alive, Upgrade", "upgrade", true},
        {"keep-alive, Upgrade", "keep-alive", true},
        {"keep-alive, Upgrade", "keep", false},
        {"closed", "close", false},
        {"xclose", "close", false},
        {"close", "close", true},
        {"CLOSE", "close", true},
        {" close , foo ", "close", true},
        {" close , foo ", "foo", true},
        {"\tclose\t,\tfoo", "foo", true},
        {"foo,close", "close", true},
        {"foo, , close", "close", true},
        {"foo", "close", false},
        {"", "close", false},
        {"close-ish, x", "close", false},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        bool got = http_has_token(t[i].value, t[i].token);
        if (got != t[i].want)
            fprintf(stderr, "\n  [has_token '%s' '%s'] got %d\n", t[i].value, t[i].token, got);
        CU_ASSERT_EQUAL(got, t[i].want);
    }
}

int main(void)
{
    static const ts_case cases[] = {{"head: simple GET", test_head_simple_get},
                                    {"head: keep-alive", test_head_keep_alive},
                                    {"head: line endings", test_head_line_endings},
                                    {"head: values", test_head_values},
                                    {"head: leading blank lines", test_head_leading_blank_lines},
                                    {"head: incomplete prefixes", test_head_incomplete_prefixes},
                                    {"head: content-length", test_head_content_length},
                                    {"head: transfer-encoding", test_head_transfer_encoding},
                                    {"head: expect", test_head_expect},
                                    {"head: max headers", test_head_max_headers},
                                    {"head: version", test_head_version},
                                    {"head: malformed", test_head_malformed},
                                    {"head: mutations", test_head_fuzz},
                                    {"chunked: ok", test_chunked_ok},
                                    {"chunked: incomplete prefixes", test_chunked_incomplete},
                                    {"chunked: bad", test_chunked_bad},
                                    {"chunked: limits", test_chunked_limits},
                                    {"chunked: mutations", test_chunked_fuzz},
                                    {"pct_decode", test_pct_decode},
                                    {"split_target", test_split_target},
                                    {"parse_query", test_parse_query},
                                    {"header lookup", test_header_lookup},
                                    {"has_token", test_has_token},
                                    {NULL, NULL}};
    return ts_main("gateway_http_parse", cases);
}
