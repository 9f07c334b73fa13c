/* Unit tests for user_valid (email, display name, UUID, page size, filter) and user_model etags. */
#include "user_valid.h"

#include <string.h>

#include "test_support.h"

static arena *A;

static const char *email_ok(const char *in)
{
    const char *out = NULL;
    char why[128] = "";
    return user_valid_email(A, in, &out, why, sizeof why) ? out : NULL;
}

static void test_email_normalises(void)
{
    CU_ASSERT_STRING_EQUAL(email_ok("  Alice@Example.COM \t"), "alice@example.com");
    CU_ASSERT_STRING_EQUAL(email_ok("a@b.c"), "a@b.c");
    CU_ASSERT_STRING_EQUAL(email_ok("first.last+tag@sub.example.org"),
                           "first.last+tag@sub.example.org");
    CU_ASSERT_STRING_EQUAL(email_ok("ÜSER@bücher.de"), "Üser@bücher.de"); /* ASCII only lowered */
}

static void test_email_rejects(void)
{
    const char *bad[] = {"",           "   ",          "no-at.example.com", "a@@b.com",
                         "a@b@c.com",  "@example.com", "a@example",         "a@.com",
                         "a@com.",     "a@ex..com",    "a b@example.com",   "a@exa mple.com",
                         "a\x01@x.io", "a\x7f@x.io",   "a@x.io\xff",        NULL};
    for (int i = 0; bad[i]; i++) {
        char why[128] = "";
        const char *out = NULL;
        CU_ASSERT_FALSE(user_valid_email(A, bad[i], &out, why, sizeof why));
        CU_ASSERT_TRUE(why[0] != '\0');
    }
    /* 254 bytes is the limit, after trimming. */
    char big[300];
    memset(big, 'a', sizeof big);
    memcpy(big + 254 - 6, "@x.com", 6);
    big[254] = '\0';
    CU_ASSERT_PTR_NOT_NULL(email_ok(big));
    char big2[300];
    memset(big2, 'a', sizeof big2);
    memcpy(big2 + 255 - 6, "@x.com", 6);
    big2[255] = '\0';
    CU_ASSERT_PTR_NULL(email_ok(big2));
}

static void test_display_name(void)
{
    const char *out = NULL;
    char why[128];
    CU_ASSERT_TRUE(user_valid_display_name(A, "  Ada Lovelace ", &out, why, sizeof why));
    CU_ASSERT_STRING_EQUAL(out, "Ada Lovelace");
    CU_ASSERT_FALSE(user_valid_display_name(A, "", &out, why, sizeof why));
    CU_ASSERT_FALSE(user_valid_display_name(A, "   ", &out, why, sizeof why));
    CU_ASSERT_FALSE(user_valid_display_name(A, "tab\there", &out, why, sizeof why));
    CU_ASSERT_FALSE(user_valid_display_name(A, "nl\n", &out, why, sizeof why));
    CU_ASSERT_FALSE(user_valid_display_name(A, "c1\xc2\x85x", &out, why, sizeof why));
    CU_ASSERT_FALSE(user_valid_display_name(A, "bad\xc3(", &out, why, sizeof why));
    CU_ASSERT_FALSE(user_valid_display_name(A, "overlong\xc0\xaf", &out, why, sizeof why));
    CU_ASSERT_FALSE(user_valid_display_name(A, "surrogate\xed\xa0\x80", &out, why, sizeof why));
    /* 100 characters (multi-byte) pass, 101 do not: the limit counts characters, not bytes. */
    char name[512] = "";
    size_t off = 0;
    for (int i = 0; i < 100; i++, off += 2)
        memcpy(name + off, "é", 2);
    CU_ASSERT_TRUE(user_valid_display_name(A, name, &out, why, sizeof why));
    memcpy(name + off, "é", 2);
    CU_ASSERT_FALSE(user_valid_display_name(A, name, &out, why, sizeof why));
    CU_ASSERT_TRUE(user_valid_display_name(A, "李小龍 🐉", &out, why, sizeof why));
}

static void test_uuid(void)
{
    char id[37];
    CU_ASSERT_TRUE(user_valid_uuid("123E4567-E89B-12D3-A456-426614174000", id));
    CU_ASSERT_STRING_EQUAL(id, "123e4567-e89b-12d3-a456-426614174000");
    CU_ASSERT_FALSE(user_valid_uuid("", id));
    CU_ASSERT_FALSE(user_valid_uuid("123e4567e89b12d3a456426614174000", id));
    CU_ASSERT_FALSE(user_valid_uuid("123e4567-e89b-12d3-a456-42661417400g", id));
    CU_ASSERT_FALSE(user_valid_uuid("123e4567-e89b-12d3-a456-4266141740000", id));
    CU_ASSERT_FALSE(user_valid_uuid("'; DROP TABLE users; --", id));
    CU_ASSERT_FALSE(user_valid_uuid(NULL, id));
}

static void test_page_size(void)
{
    CU_ASSERT_EQUAL(user_valid_page_size(0), 50);
    CU_ASSERT_EQUAL(user_valid_page_size(1), 1);
    CU_ASSERT_EQUAL(user_valid_page_size(1000), 1000);
    CU_ASSERT_EQUAL(user_valid_page_size(1001), 1000);
    CU_ASSERT_EQUAL(user_valid_page_size(-1), -1);
}

static void test_filter(void)
{
    user_filter f;
    char why[128];
    CU_ASSERT_TRUE(user_filter_parse(A, "", &f, why, sizeof why));
    CU_ASSERT_EQUAL(f.status, 0);
    CU_ASSERT_PTR_NULL(f.email_prefix);
    CU_ASSERT_TRUE(user_filter_parse(A, "status=ACTIVE", &f, why, sizeof why));
    CU_ASSERT_EQUAL(f.status, USER_STATUS_ACTIVE);
    CU_ASSERT_TRUE(user_filter_parse(A, " status = user_status_disabled ", &f, why, sizeof why));
    CU_ASSERT_EQUAL(f.status, USER_STATUS_DISABLED);
    CU_ASSERT_TRUE(user_filter_parse(A, "status=ACTIVE AND email_prefix=AB", &f, why, sizeof why));
    CU_ASSERT_EQUAL(f.status, USER_STATUS_ACTIVE);
    CU_ASSERT_STRING_EQUAL(f.email_prefix, "ab");
    CU_ASSERT_TRUE(
        user_filter_parse(A, "email_prefix=\"a b\" and status=disabled", &f, why, sizeof why));
    CU_ASSERT_STRING_EQUAL(f.email_prefix, "a b");
    CU_ASSERT_EQUAL(f.status, USER_STATUS_DISABLED);

    const char *bad[] = {"status=GONE",
                         "role=admin",
                         "status",
                         "=x",
                         "status=ACTIVE OR email_prefix=a",
                         "status=ACTIVE AND",
                         "status=ACTIVE status=ACTIVE",
                         "status=ACTIVE AND status=DISABLED",
                         "email_prefix=",
                         "email_prefix=\"open",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        why[0] = '\0';
        CU_ASSERT_FALSE(user_filter_parse(A, bad[i], &f, why, sizeof why));
        CU_ASSERT_TRUE(why[0] != '\0');
    }
}

static void test_etag_and_pb_roundtrip(void)
{
    user_rec r = {.id = "123e4567-e89b-12d3-a456-426614174000",
                  .email = "a@b.co",
                  .display_name = "A",
                  .status = USER_STATUS_ACTIVE,
                  .create_us = 1700000000123456,
                  .update_us = 1700000000999999,
                  .version = 7};
    char buf[24];
    CU_ASSERT_STRING_EQUAL(user_rec_etag(&r, buf, sizeof buf), "7");
    int64_t v;
    CU_ASSERT_TRUE(user_etag_parse("7", &v));
    CU_ASSERT_EQUAL(v, 7);
    CU_ASSERT_FALSE(user_etag_parse("7x", &v));
    CU_ASSERT_FALSE(user_etag_parse("-7", &v));
    CU_ASSERT_FALSE(user_etag_parse("", &v));
    User__V1__User *pb = user_rec_to_pb(A, &r);
    CU_ASSERT_PTR_NULL(pb->delete_time);
    CU_ASSERT_EQUAL(pb->create_time->seconds, 1700000000);
    CU_ASSERT_EQUAL(pb->create_time->nanos, 123456000);
    user_rec back;
    CU_ASSERT_TRUE(user_rec_from_pb(A, pb, &back));
    CU_ASSERT_EQUAL(back.create_us, r.create_us);
    CU_ASSERT_EQUAL(back.update_us, r.update_us);
    CU_ASSERT_EQUAL(back.delete_us, 0);
    CU_ASSERT_EQUAL(back.version, 7);
    CU_ASSERT_STRING_EQUAL(back.email, "a@b.co");
    pb->id = "nope";
    CU_ASSERT_FALSE(user_rec_from_pb(A, pb, &back));
}

int main(void)
{
    A = arena_new(0);
    static const ts_case cases[] = {
        {"email_normalises", test_email_normalises},
        {"email_rejects", test_email_rejects},
        {"display_name", test_display_name},
        {"uuid", test_uuid},
        {"page_size", test_page_size},
        {"filter", test_filter},
        {"etag_and_pb_roundtrip", test_etag_and_pb_roundtrip},
        {NULL, NULL},
    };
    int rc = ts_main("user_valid", cases);
    arena_free(A);
    return rc;
}
