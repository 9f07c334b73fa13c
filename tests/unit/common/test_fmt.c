/* Unit tests for fmt: every result is checked against snprintf, edges included. */
#include "common/fmt.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "test_support.h"

static void test_u64_i64(void)
{
    static const uint64_t us[] = {
        0, 1, 9, 10, 99, 100, 12345, 4294967295u, 4294967296u, UINT64_MAX - 1, UINT64_MAX};
    char a[FMT_INT_MAX], b[32];
    for (size_t i = 0; i < sizeof us / sizeof us[0]; i++) {
        size_t n = fmt_u64(a, us[i]);
        snprintf(b, sizeof b, "%" PRIu64, us[i]);
        CU_ASSERT_STRING_EQUAL(a, b);
        CU_ASSERT_EQUAL(n, strlen(b));
    }
    static const int64_t is[] = {0,   1,       -1,       9,         -9,        10,
                                 -10, 1234567, -1234567, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    for (size_t i = 0; i < sizeof is / sizeof is[0]; i++) {
        size_t n = fmt_i64(a, is[i]);
        snprintf(b, sizeof b, "%" PRId64, is[i]);
        CU_ASSERT_STRING_EQUAL(a, b);
        CU_ASSERT_EQUAL(n, strlen(b));
    }
}

static void test_zpad(void)
{
    char a[16];
    memset(a, 'x', sizeof a);
    fmt_zpad(a, 7, 2);
    CU_ASSERT_EQUAL(memcmp(a, "07x", 3), 0); /* no NUL, nothing past width */
    fmt_zpad(a, 2026, 4);
    CU_ASSERT_EQUAL(memcmp(a, "2026", 4), 0);
    fmt_zpad(a, 5, 9);
    CU_ASSERT_EQUAL(memcmp(a, "000000005", 9), 0);
    fmt_zpad(a, 123, 2); /* higher digits dropped */
    CU_ASSERT_EQUAL(memcmp(a, "23", 2), 0);
    fmt_zpad(a, 0, 3);
    CU_ASSERT_EQUAL(memcmp(a, "000", 3), 0);
}

static void test_hex(void)
{
    const unsigned char b[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[13];
    fmt_hex(b, sizeof b, out);
    CU_ASSERT_STRING_EQUAL(out, "00017f80abff");
    fmt_hex(b, 0, out);
    CU_ASSERT_STRING_EQUAL(out, "");
    const char *digits = "0123456789abcdefABCDEF";
    for (int i = 0; digits[i]; i++)
        CU_ASSERT_EQUAL(fmt_hexval(digits[i]), i < 16 ? i : i - 6);
    for (int c = 1; c < 256; c++)
        if (!strchr(digits, c))
            CU_ASSERT_EQUAL(fmt_hexval((char)c), -1);
}

static void test_cat(void)
{
    char out[8];
    CU_ASSERT_EQUAL(fmt_cat(out, sizeof out, "rl:", "abc"), 6);
    CU_ASSERT_STRING_EQUAL(out, "rl:abc");
    CU_ASSERT_EQUAL(fmt_cat(out, sizeof out, "rl:", "abcdefgh"), 7); /* cut like snprintf */
    CU_ASSERT_STRING_EQUAL(out, "rl:abcd");
    CU_ASSERT_EQUAL(fmt_cat(out, sizeof out, "revoked:", "x"), 7); /* a itself too long */
    CU_ASSERT_STRING_EQUAL(out, "revoked");
    CU_ASSERT_EQUAL(fmt_cat(out, sizeof out, "", ""), 0);
    CU_ASSERT_STRING_EQUAL(out, "");
    CU_ASSERT_EQUAL(fmt_cat(out, 1, "a", "b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "");
    char big[64];
    char want[64];
    snprintf(want, sizeof want, "%s%s", "user:", "6521665b-f1ef-49ad-b335-322f40b53c06");
    fmt_cat(big, sizeof big, "user:", "6521665b-f1ef-49ad-b335-322f40b53c06");
    CU_ASSERT_STRING_EQUAL(big, want);
}

int main(void)
{
    static const ts_case cases[] = {{"u64 and i64 against snprintf", test_u64_i64},
                                    {"zero padding", test_zpad},
                                    {"hex", test_hex},
                                    {"concatenation with truncation", test_cat},
                                    {NULL, NULL}};
    return ts_main("fmt", cases);
}
