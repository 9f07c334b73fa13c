/* test_rpc_helpers: the pure parts of the rpc runtime: request-id and traceparent checks, id
 * generation, google.rpc.Status details encoding, status code mapping, deadline clocks. */
#include <stdlib.h>
#include <string.h>

#include "rpc_internal.h"
#include "test_support.h"

static void test_request_id(void)
{
    CU_ASSERT(rpc_request_id_ok("abc-123", 7));
    CU_ASSERT(rpc_request_id_ok("A.b_c:d-9", 9));
    CU_ASSERT_FALSE(rpc_request_id_ok("", 0));
    CU_ASSERT_FALSE(rpc_request_id_ok("a b", 3));
    CU_ASSERT_FALSE(rpc_request_id_ok("a\"b", 3));
    CU_ASSERT_FALSE(rpc_request_id_ok("a\nb", 3));
    CU_ASSERT_FALSE(rpc_request_id_ok("é", 2));
    char buf[130];
    memset(buf, 'x', sizeof buf);
    CU_ASSERT(rpc_request_id_ok(buf, 128));
    CU_ASSERT_FALSE(rpc_request_id_ok(buf, 129));
}

static void test_traceparent(void)
{
    char t[33], s[17], f[3];
    const char *ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    CU_ASSERT_FATAL(rpc_traceparent_parse(ok, strlen(ok), t, s, f));
    CU_ASSERT_STRING_EQUAL(t, "4bf92f3577b34da6a3ce929d0e0e4736");
    CU_ASSERT_STRING_EQUAL(s, "00f067aa0ba902b7");
    CU_ASSERT_STRING_EQUAL(f, "01");
    const char *bad[] = {
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* unknown version */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero span */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_FALSE(rpc_traceparent_parse(bad[i], strlen(bad[i]), t, s, f));
}

static void test_ids(void)
{
    char u1[37], u2[37];
    rpc_uuid4(u1);
    rpc_uuid4(u2);
    CU_ASSERT_EQUAL(strlen(u1), 36);
    CU_ASSERT_STRING_NOT_EQUAL(u1, u2);
    CU_ASSERT(u1[8] == '-' && u1[13] == '-' && u1[18] == '-' && u1[23] == '-');
    CU_ASSERT_EQUAL(u1[14], '4');
    CU_ASSERT(strchr("89ab", u1[19]) != NULL);
    CU_ASSERT(rpc_request_id_ok(u1, 36));
    char h[33];
    rpc_rand_hex(h, 16);
    CU_ASSERT_EQUAL(strlen(h), 32);
    CU_ASSERT_EQUAL(strspn(h, "0123456789abcdef"), 32);
}

static void test_status_details(void)
{
    arena *a = arena_new(0);
    err_info e;
    err_clear(&e);
    size_t len;
    CU_ASSERT_PTR_NULL(rpc_status_details_encode(a, ERR_NOT_FOUND, "x", &e, &len));
    CU_ASSERT_EQUAL(len, 0);
    err_violation_add(&e, "email", "bad %s", "address");
    err_violation_add(&e, "password", "too short");
    e.retry_after_s = 30;
    uint8_t *p = rpc_status_details_encode(a, ERR_INVALID_ARGUMENT, "invalid", &e, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT(len > 20);
    err_info back;
    err_clear(&back);
    CU_ASSERT(rpc_status_details_decode(p, len, &back));
    CU_ASSERT_EQUAL_FATAL(back.nviolations, 2);
    CU_ASSERT_STRING_EQUAL(back.violations[0].field, "email");
    CU_ASSERT_STRING_EQUAL(back.violations[0].description, "bad address");
    CU_ASSERT_STRING_EQUAL(back.violations[1].field, "password");
    CU_ASSERT_EQUAL(back.retry_after_s, 30);
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
    err_clear(&back);
    CU_ASSERT_FALSE(rpc_status_details_decode(junk, sizeof junk, &back));
    CU_ASSERT_EQUAL(back.nviolations, 0);
    arena_free(a);
}

static void test_codes_and_clocks(void)
{
    CU_ASSERT_EQUAL(rpc_code_from_int(0), ERR_OK);
    CU_ASSERT_EQUAL(rpc_code_from_int(16), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(rpc_code_from_int(17), ERR_UNKNOWN);
    CU_ASSERT_EQUAL(rpc_code_from_int(-3), ERR_UNKNOWN);
    int64_t now = rpc_now_ms();
    int64_t back = rpc_deadline_to_ms(rpc_ms_to_deadline(now + 1500));
    CU_ASSERT(llabs(back - (now + 1500)) <= 2);
    CU_ASSERT_EQUAL(rpc_deadline_to_ms(gpr_inf_future(GPR_CLOCK_MONOTONIC)), INT64_MAX);
    CU_ASSERT_EQUAL(rpc_deadline_to_ms(gpr_inf_future(GPR_CLOCK_REALTIME)), INT64_MAX);
    /* A realtime deadline converts too. */
    gpr_timespec rt =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(800, GPR_TIMESPAN));
    int64_t ms = rpc_deadline_to_ms(rt);
    CU_ASSERT(llabs(ms - (rpc_now_ms() + 800)) <= 5);
}

int main(void)
{
    static const ts_case cases[] = {
        {"request_id", test_request_id},
        {"traceparent", test_traceparent},
        {"ids", test_ids},
        {"status_details", test_status_details},
        {"codes_and_clocks", test_codes_and_clocks},
        {NULL, NULL},
    };
    return ts_main("rpc_helpers", cases);
}
