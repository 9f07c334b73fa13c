/* Unit tests of permission_match: the wildcard table, validation of names, ids and permission
 * strings, and perm_set agreeing with perm_grants. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "permission_match.h"
#include "test_support.h"

static void test_grants_table(void)
{
    /* users:read is granted by exactly these. */
    const char *yes[] = {"users:read", "users:*", "*:read", "*:*", "*"};
    const char *no[] = {"users:write", "user:read", "usersx:read", "users:readx", "xusers:read",
                        "roles:*",     "*:write",   "users:rea",   "sers:read"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        CU_ASSERT_TRUE(perm_pattern_valid(yes[i]));
        if (!perm_grants(yes[i], "users:read"))
            fprintf(stderr, "expected %s to grant users:read\n", yes[i]);
        CU_ASSERT_TRUE(perm_grants(yes[i], "users:read"));
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        CU_ASSERT_TRUE(perm_pattern_valid(no[i]));
        if (perm_grants(no[i], "users:read"))
            fprintf(stderr, "expected %s NOT to grant users:read\n", no[i]);
        CU_ASSERT_FALSE(perm_grants(no[i], "users:read"));
    }
}

static void test_set_agrees_with_grants(void)
{
    const char *pats[] = {"users:*", "*:read", "roles:write", "a.b-c_d:x"};
    const char *perms[] = {"users:read",  "users:delete", "roles:read",
                           "roles:write", "roles:assign", "a.b-c_d:x",
                           "a.b-c_d:y",   "x:read",       "user:write"};
    perm_set *s = perm_set_new(pats, 4);
    CU_ASSERT_EQUAL(perm_set_count(s), 4);
    for (size_t p = 0; p < sizeof perms / sizeof *perms; p++) {
        bool want = false;
        for (size_t i = 0; i < 4; i++)
            want |= perm_grants(pats[i], perms[p]);
        CU_ASSERT_EQUAL(perm_set_allows(s, perms[p]), want);
    }
    CU_ASSERT_TRUE(perm_set_allows(s, "users:read"));
    CU_ASSERT_TRUE(perm_set_allows(s, "x:read"));
    CU_ASSERT_FALSE(perm_set_allows(s, "user:write"));
    CU_ASSERT_FALSE(perm_set_allows(s, "roles:assign"));
    perm_set_free(s);

    /* Exactly one pattern each, so each row of the table is tested through the set too. */
    const char *one[][1] = {{"users:read"}, {"users:*"}, {"*:read"}, {"*:*"}, {"*"}};
    for (size_t i = 0; i < 5; i++) {
        perm_set *t = perm_set_new(one[i], 1);
        CU_ASSERT_TRUE(perm_set_allows(t, "users:read"));
        CU_ASSERT_EQUAL(perm_set_allows(t, "users:write"), i != 0 && i != 2);
        CU_ASSERT_EQUAL(perm_set_allows(t, "usersx:read"), i >= 2);
        CU_ASSERT_EQUAL(perm_set_allows(t, "user:read"), i >= 2);
        perm_set_free(t);
    }
    const char *wrong[] = {"users:write", "user:read", "usersx:read"};
    perm_set *w = perm_set_new(wrong, 3);
    CU_ASSERT_FALSE(perm_set_allows(w, "users:read"));
    perm_set_free(w);

    perm_set *empty = perm_set_new(NULL, 0);
    CU_ASSERT_EQUAL(perm_set_count(empty), 0);
    CU_ASSERT_FALSE(perm_set_allows(empty, "users:read"));
    perm_set_free(empty);
    perm_set_free(NULL);
}

static void test_pattern_validation(void)
{
    const char *good[] = {"*",      "*:*", "users:read", "users:*",
                          "*:read", "a:b", "0:9",        "a.b-c_d:e.f-g_h"};
    const char *bad[] = {
        "",           ":",          "users",       "users:",      ":read",       "users:read:x",
        "Users:read", "users:Read", "us*:read",    "users:re*",   "**",          "*:",
        ":*",         "* :read",    "users :read", "-users:read", "users:_read", "users:read ",
        "üsers:read", "users::read"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CU_ASSERT_TRUE(perm_pattern_valid(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (perm_pattern_valid(bad[i]))
            fprintf(stderr, "pattern '%s' should be invalid\n", bad[i]);
        CU_ASSERT_FALSE(perm_pattern_valid(bad[i]));
    }
    CU_ASSERT_FALSE(perm_pattern_valid(NULL));
    char seg64[80], seg65[80];
    memset(seg64, 'a', 64);
    seg64[64] = '\0';
    memset(seg65, 'a', 65);
    seg65[65] = '\0';
    char p64[160], p65[160];
    snprintf(p64, sizeof p64, "%s:read", seg64);
    snprintf(p65, sizeof p65, "%s:read", seg65);
    CU_ASSERT_TRUE(perm_pattern_valid(p64));
    CU_ASSERT_FALSE(perm_pattern_valid(p65));
}

static void test_concrete_validation(void)
{
    CU_ASSERT_TRUE(perm_concrete_valid("users:read"));
    CU_ASSERT_TRUE(perm_concrete_valid("a.b:c-d"));
    const char *bad[] = {"*",     "*:*", "users:*",      "*:read",
                         "users", "",    "users:read:x", "Users:read"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CU_ASSERT_FALSE(perm_concrete_valid(bad[i]));
    CU_ASSERT_FALSE(perm_concrete_valid(NULL));
}

static void test_role_names(void)
{
    const char *good[] = {"a", "admin", "user", "role-1", "a.b_c-d", "z9"};
    const char *bad[] = {"", "A", "1abc", "_a", ".a", "-a", "ab c", "ab/c", "abC", "a*", "é"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CU_ASSERT_TRUE(perm_role_name_valid(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CU_ASSERT_FALSE(perm_role_name_valid(bad[i]));
    CU_ASSERT_FALSE(perm_role_name_valid(NULL));
    char n63[70], n64[70];
    memset(n63, 'a', 63);
    n63[63] = '\0';
    memset(n64, 'a', 64);
    n64[64] = '\0';
    CU_ASSERT_TRUE(perm_role_name_valid(n63));
    CU_ASSERT_FALSE(perm_role_name_valid(n64));
}

static void test_user_ids(void)
{
    CU_ASSERT_TRUE(perm_user_id_valid("123e4567-e89b-12d3-a456-426614174000"));
    CU_ASSERT_TRUE(perm_user_id_valid("123E4567-E89B-12D3-A456-426614174000"));
    const char *bad[] = {"",
                         "123e4567e89b12d3a456426614174000",
                         "123e4567-e89b-12d3-a456-42661417400",
                         "123e4567-e89b-12d3-a456-4266141740000",
                         "123e4567-e89b-12d3-a456_426614174000",
                         "g23e4567-e89b-12d3-a456-426614174000",
                         "{123e4567-e89b-12d3-a456-426614174000}",
                         "not-a-uuid"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CU_ASSERT_FALSE(perm_user_id_valid(bad[i]));
    CU_ASSERT_FALSE(perm_user_id_valid(NULL));
    char out[PERM_USER_ID_LEN + 1];
    perm_user_id_normalize("123E4567-E89B-12D3-A456-42661417400F", out);
    CU_ASSERT_STRING_EQUAL(out, "123e4567-e89b-12d3-a456-42661417400f");
}

int main(void)
{
    static const ts_case cases[] = {
        {"grants_table", test_grants_table},
        {"set_agrees_with_grants", test_set_agrees_with_grants},
        {"pattern_validation", test_pattern_validation},
        {"concrete_validation", test_concrete_validation},
        {"role_names", test_role_names},
        {"user_ids", test_user_ids},
        {NULL, NULL},
    };
    return ts_main("permission_match", cases);
}
