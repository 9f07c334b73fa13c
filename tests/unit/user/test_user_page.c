/* Unit tests for user_page: page tokens round-trip, and any tampering, other key, other filter or
 * garbage is refused. */
#include "user_page.h"

#include <string.h>

#include "test_support.h"

static arena *A;
static user_page_key K;

static const user_cursor C = {.create_us = 1700000000123456,
                              .id = "123e4567-e89b-12d3-a456-426614174000"};

static void test_roundtrip(void)
{
    user_filter f = {.status = USER_STATUS_ACTIVE, .email_prefix = "ab"};
    char *t = user_page_token_encode(A, &K, &C, &f, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    /* base64url, no padding: safe in URLs and JSON. */
    CU_ASSERT_EQUAL(strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                    strlen(t));
    user_cursor out;
    memset(&out, 0, sizeof out);
    CU_ASSERT_TRUE(user_page_token_decode(&K, t, &f, false, &out));
    CU_ASSERT_EQUAL(out.create_us, C.create_us);
    CU_ASSERT_STRING_EQUAL(out.id, C.id);
    /* An equal filter (a separate copy) is accepted. */
    user_filter f2 = {.status = USER_STATUS_ACTIVE, .email_prefix = arena_strdup(A, "ab")};
    CU_ASSERT_TRUE(user_page_token_decode(&K, t, &f2, false, &out));
}

static void test_bound_to_filter(void)
{
    user_filter f = {.status = USER_STATUS_ACTIVE, .email_prefix = "ab"};
    char *t = user_page_token_encode(A, &K, &C, &f, false);
    user_cursor out;
    user_filter other1 = {.status = USER_STATUS_DISABLED, .email_prefix = "ab"};
    user_filter other2 = {.status = USER_STATUS_ACTIVE, .email_prefix = "abc"};
    user_filter other3 = {.status = USER_STATUS_ACTIVE};
    CU_ASSERT_FALSE(user_page_token_decode(&K, t, &other1, false, &out));
    CU_ASSERT_FALSE(user_page_token_decode(&K, t, &other2, false, &out));
    CU_ASSERT_FALSE(user_page_token_decode(&K, t, &other3, false, &out));
    CU_ASSERT_FALSE(user_page_token_decode(&K, t, &f, true, &out));
}

static void test_tamper(void)
{
    user_filter f = {0};
    char *t = user_page_token_encode(A, &K, &C, &f, false);
    size_t n = strlen(t);
    user_cursor out;
    /* Flip every character in turn: each change must be detected. */
    for (size_t i = 0; i < n; i++) {
        char *m = arena_strdup(A, t);
        m[i] = m[i] == 'A' ? 'B' : 'A';
        CU_ASSERT_FALSE(user_page_token_decode(&K, m, &f, false, &out));
    }
    CU_ASSERT_FALSE(user_page_token_decode(&K, arena_strndup(A, t, n - 1), &f, false, &out));
    CU_ASSERT_FALSE(user_page_token_decode(&K, arena_printf(A, "%sA", t), &f, false, &out));
    CU_ASSERT_FALSE(user_page_token_decode(&K, "", &f, false, &out));
    CU_ASSERT_FALSE(user_page_token_decode(&K, "not a token!", &f, false, &out));
    CU_ASSERT_FALSE(user_page_token_decode(&K, "====", &f, false, &out));
    CU_ASSERT_FALSE(user_page_token_decode(&K, NULL, &f, false, &out));
}

static void test_other_key(void)
{
    user_filter f = {0};
    user_page_key k2, k3, krand1, krand2;
    user_page_key_init(&k2, "another secret");
    user_page_key_init(&k3, "s3cret");
    char *t = user_page_token_encode(A, &K, &C, &f, false);
    user_cursor out;
    CU_ASSERT_FALSE(user_page_token_decode(&k2, t, &f, false, &out));
    /* Same secret → same key: replicas sharing PAGE_TOKEN_SECRET accept each other's tokens. */
    CU_ASSERT_TRUE(user_page_token_decode(&k3, t, &f, false, &out));
    /* No secret → a random key per process. */
    user_page_key_init(&krand1, "");
    user_page_key_init(&krand2, NULL);
    CU_ASSERT_NOT_EQUAL(memcmp(krand1.k, krand2.k, sizeof krand1.k), 0);
    char *t2 = user_page_token_encode(A, &krand1, &C, &f, false);
    CU_ASSERT_TRUE(user_page_token_decode(&krand1, t2, &f, false, &out));
    CU_ASSERT_FALSE(user_page_token_decode(&krand2, t2, &f, false, &out));
}

int main(void)
{
    A = arena_new(0);
    user_page_key_init(&K, "s3cret");
    static const ts_case cases[] = {
        {"roundtrip", test_roundtrip},
        {"bound_to_filter", test_bound_to_filter},
        {"tamper", test_tamper},
        {"other_key", test_other_key},
        {NULL, NULL},
    };
    int rc = ts_main("user_page", cases);
    arena_free(A);
    return rc;
}
