/* Unit tests for retry: idempotency table, retryable codes, backoff bounds, budget arithmetic. */
#include "common/retry.h"

#include "test_support.h"

static void test_idempotent_table(void)
{
    CU_ASSERT_TRUE(retry_is_idempotent("/user.v1.UserService/GetUser"));
    CU_ASSERT_TRUE(retry_is_idempotent("/user.v1.UserService/BatchGetUsers"));
    CU_ASSERT_TRUE(retry_is_idempotent("/user.v1.UserService/ListUsers"));
    CU_ASSERT_TRUE(retry_is_idempotent("/permission.v1.PermissionService/Check"));
    CU_ASSERT_TRUE(retry_is_idempotent("/permission.v1.PermissionService/BatchCheck"));
    CU_ASSERT_TRUE(retry_is_idempotent("/auth.v1.AuthService/GetJwks"));
    CU_ASSERT_TRUE(retry_is_idempotent("/grpc.health.v1.Health/Check"));
    CU_ASSERT_FALSE(retry_is_idempotent("/user.v1.UserService/CreateUser"));
    CU_ASSERT_FALSE(retry_is_idempotent("/user.v1.UserService/UpdateUser"));
    CU_ASSERT_FALSE(retry_is_idempotent("/auth.v1.AuthService/Login"));
    CU_ASSERT_FALSE(retry_is_idempotent("/auth.v1.AuthService/Refresh"));
    CU_ASSERT_FALSE(retry_is_idempotent("/permission.v1.PermissionService/AssignRole"));
    CU_ASSERT_FALSE(retry_is_idempotent("/x.v1.S/Getaway"));
    CU_ASSERT_FALSE(retry_is_idempotent("nonsense"));
    CU_ASSERT_FALSE(retry_is_idempotent(NULL));
}

static void test_retryable_codes(void)
{
    CU_ASSERT_TRUE(retry_is_retryable(ERR_UNAVAILABLE));
    CU_ASSERT_FALSE(retry_is_retryable(ERR_DEADLINE_EXCEEDED));
    CU_ASSERT_FALSE(retry_is_retryable(ERR_INTERNAL));
    CU_ASSERT_FALSE(retry_is_retryable(ERR_NOT_FOUND));
    CU_ASSERT_FALSE(retry_is_retryable(ERR_OK));
}

static void test_backoff_full_jitter(void)
{
    retry_opts o = {
        .max_retries = 2, .base_ms = 25, .max_ms = 250, .budget_pct = 10, .min_tokens = 3};
    CU_ASSERT_EQUAL(retry_backoff_ms(&o, 1, 0), 0);
    CU_ASSERT_EQUAL(retry_backoff_ms(&o, 1, 25), 25);
    CU_ASSERT_EQUAL(retry_backoff_ms(&o, 1, 26), 0); /* modulo 26: never above the cap */
    for (uint32_t r = 0; r < 5000; r += 7) {
        CU_ASSERT(retry_backoff_ms(&o, 1, r) <= 25);
        CU_ASSERT(retry_backoff_ms(&o, 2, r) <= 50);
        CU_ASSERT(retry_backoff_ms(&o, 3, r) <= 100);
        CU_ASSERT(retry_backoff_ms(&o, 30, r) <= 250);
    }
    CU_ASSERT_EQUAL(retry_backoff_ms(&o, 30, 250), 250);
}

static void test_budget_ratio(void)
{
    retry_opts o = {
        .max_retries = 2, .base_ms = 25, .max_ms = 250, .budget_pct = 10, .min_tokens = 3};
    retry_budget *b = retry_budget_new(&o);
    /* Starts with min_tokens for low volume. */
    CU_ASSERT_TRUE(retry_budget_try_withdraw(b));
    CU_ASSERT_TRUE(retry_budget_try_withdraw(b));
    CU_ASSERT_TRUE(retry_budget_try_withdraw(b));
    CU_ASSERT_FALSE(retry_budget_try_withdraw(b));
    /* Under sustained failure: 1000 calls allow about 100 retries, never more. */
    int retries = 0;
    for (int i = 0; i < 1000; i++) {
        retry_budget_on_call(b);
        if (retry_budget_try_withdraw(b))
            retries++;
    }
    CU_ASSERT(retries >= 99 && retries <= 100);
    retry_budget_free(b);
    retry_budget_free(NULL);
}

int main(void)
{
    static const ts_case cases[] = {{"idempotent table", test_idempotent_table},
                                    {"retryable codes", test_retryable_codes},
                                    {"backoff full jitter", test_backoff_full_jitter},
                                    {"budget ratio", test_budget_ratio},
                                    {NULL, NULL}};
    return ts_main("retry", cases);
}
