/* Unit tests for gateway/middleware: request id sanitising, traceparent, CORS, cookies, bearer. */
#include <string.h>

#include "middleware.h"
#include "test_support.h"

static void test_request_id(void)
{
    CU_ASSERT_TRUE(mw_request_id_sane("abc-123_x.y:z"));
    CU_ASSERT_TRUE(mw_request_id_sane("a"));
    CU_ASSERT_FALSE(mw_request_id_sane(""));
    CU_ASSERT_FALSE(mw_request_id_sane(NULL));
    CU_ASSERT_FALSE(mw_request_id_sane("has space"));
    CU_ASSERT_FALSE(mw_request_id_sane("new\nline"));
    CU_ASSERT_FALSE(mw_request_id_sane("quote\""));
    CU_ASSERT_FALSE(mw_request_id_sane("slash/"));
    char long_id[200];
    memset(long_id, 'a', sizeof long_id);
    long_id[128] = 0;
    CU_ASSERT_TRUE(mw_request_id_sane(long_id));
    long_id[128] = 'a';
    long_id[129] = 0;
    CU_ASSERT_FALSE(mw_request_id_sane(long_id));
    char a[37], b[37];
    mw_request_id_new(a);
    mw_request_id_new(b);
    CU_ASSERT_EQUAL(strlen(a), 36);
    CU_ASSERT_TRUE(mw_request_id_sane(a));
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_EQUAL(a[14], '4');
}

static void test_traceparent(void)
{
    char tid[33], sid[17], out[56];
    const char *in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    CU_ASSERT_TRUE(mw_traceparent(in, tid, sid, out));
    CU_ASSERT_STRING_EQUAL(tid, "4bf92f3577b34da6a3ce929d0e0e4736");
    CU_ASSERT_EQUAL(strlen(out), 55);
    CU_ASSERT_NSTRING_EQUAL(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
    CU_ASSERT_STRING_NOT_EQUAL(sid, "00f067aa0ba902b7");
    CU_ASSERT_STRING_EQUAL(out + 53, "01");
    /* invalid: all-zero trace id, upper case, wrong length, version ff */
    CU_ASSERT_FALSE(
        mw_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01", tid, sid, out));
    CU_ASSERT_STRING_NOT_EQUAL(tid, "00000000000000000000000000000000");
    CU_ASSERT_EQUAL(strlen(tid), 32);
    CU_ASSERT_FALSE(
        mw_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", tid, sid, out));
    CU_ASSERT_FALSE(
        mw_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", tid, sid, out));
    CU_ASSERT_FALSE(
        mw_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tid, sid, out));
    CU_ASSERT_FALSE(mw_traceparent(NULL, tid, sid, out));
    CU_ASSERT_EQUAL(strlen(out), 55);
}

static void test_cors(void)
{
    const char *list = "https://app.example.com, http://localhost:3000";
    CU_ASSERT_TRUE(mw_cors_allowed(list, "https://app.example.com"));
    CU_ASSERT_TRUE(mw_cors_allowed(list, "http://localhost:3000"));
    CU_ASSERT_FALSE(mw_cors_allowed(list, "https://app.example.com.evil"));
    CU_ASSERT_FALSE(mw_cors_allowed(list, "https://app.example.co"));
    CU_ASSERT_FALSE(mw_cors_allowed(list, ""));
    CU_ASSERT_FALSE(mw_cors_allowed("", "https://app.example.com"));
    CU_ASSERT_FALSE(mw_cors_allowed("*", "*"));
    CU_ASSERT_FALSE(mw_cors_allowed("*", "https://x"));
}

static void test_cookies(void)
{
    char v[64];
    CU_ASSERT_TRUE(
        mw_cookie_get("a=1; refresh_token=abc_DEF-9; b=2", "refresh_token", v, sizeof v));
    CU_ASSERT_STRING_EQUAL(v, "abc_DEF-9");
    CU_ASSERT_TRUE(mw_cookie_get("refresh_token=\"q\"", "refresh_token", v, sizeof v));
    CU_ASSERT_STRING_EQUAL(v, "q");
    CU_ASSERT_FALSE(mw_cookie_get("xrefresh_token=1", "refresh_token", v, sizeof v));
    CU_ASSERT_FALSE(mw_cookie_get("refresh_token=", "refresh_token", v, sizeof v));
    CU_ASSERT_FALSE(mw_cookie_get(NULL, "refresh_token", v, sizeof v));
    char big[200];
    memset(big, 'x', sizeof big);
    memcpy(big, "refresh_token=", 14);
    big[199] = 0;
    CU_ASSERT_FALSE(mw_cookie_get(big, "refresh_token", v, sizeof v));
    char c[256];
    mw_refresh_cookie(c, sizeof c, "tok", 60, true);
    CU_ASSERT_PTR_NOT_NULL(strstr(c, "refresh_token=tok"));
    CU_ASSERT_PTR_NOT_NULL(strstr(c, "HttpOnly"));
    CU_ASSERT_PTR_NOT_NULL(strstr(c, "Secure"));
    CU_ASSERT_PTR_NOT_NULL(strstr(c, "SameSite=Strict"));
    CU_ASSERT_PTR_NOT_NULL(strstr(c, "Path=/v1/auth"));
    CU_ASSERT_PTR_NOT_NULL(strstr(c, "Max-Age=60"));
    mw_refresh_cookie(c, sizeof c, "tok", 60, false);
    CU_ASSERT_PTR_NULL(strstr(c, "Secure"));
}

static void test_bearer_and_if_match(void)
{
    CU_ASSERT_STRING_EQUAL(mw_bearer("Bearer abc.def.ghi"), "abc.def.ghi");
    CU_ASSERT_STRING_EQUAL(mw_bearer("bearer   x"), "x");
    CU_ASSERT_PTR_NULL(mw_bearer("Basic abc"));
    CU_ASSERT_PTR_NULL(mw_bearer("Bearer "));
    CU_ASSERT_PTR_NULL(mw_bearer("Bearer a b"));
    CU_ASSERT_PTR_NULL(mw_bearer(NULL));
    char e[32];
    mw_etag_from_if_match("W/\"abc\"", e, sizeof e);
    CU_ASSERT_STRING_EQUAL(e, "abc");
    mw_etag_from_if_match("\"x1\"", e, sizeof e);
    CU_ASSERT_STRING_EQUAL(e, "x1");
    mw_etag_from_if_match("raw", e, sizeof e);
    CU_ASSERT_STRING_EQUAL(e, "raw");
}

int main(void)
{
    static const ts_case cases[] = {{"request id", test_request_id},
                                    {"traceparent", test_traceparent},
                                    {"cors", test_cors},
                                    {"cookies", test_cookies},
                                    {"bearer and if-match", test_bearer_and_if_match},
                                    {NULL, NULL}};
    return ts_main("gateway_middleware", cases);
}
