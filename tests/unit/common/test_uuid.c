/* Unit tests for uuid: canonical form only. */
#include "common/uuid.h"

#include "test_support.h"

static void test_valid_and_invalid(void)
{
    CU_ASSERT_TRUE(uuid_valid("6521665b-f1ef-49ad-b335-322f40b53c06"));
    CU_ASSERT_TRUE(uuid_valid("6521665B-F1EF-49AD-B335-322F40B53C06"));
    CU_ASSERT_FALSE(uuid_valid("6521665b-f1ef-49ad-b335-322f40b53c0"));   /* 35 */
    CU_ASSERT_FALSE(uuid_valid("6521665b-f1ef-49ad-b335-322f40b53c066")); /* 37 */
    CU_ASSERT_FALSE(uuid_valid("6521665bff1ef-49ad-b335-322f40b53c06"));  /* dash missing */
    CU_ASSERT_FALSE(uuid_valid("6521665g-f1ef-49ad-b335-322f40b53c06"));  /* not hex */
    CU_ASSERT_FALSE(uuid_valid("me"));
    CU_ASSERT_FALSE(uuid_valid(""));
    CU_ASSERT_FALSE(uuid_valid(NULL));
    const char *path = "6521665b-f1ef-49ad-b335-322f40b53c06/roles";
    CU_ASSERT_TRUE(uuid_valid_n(path, 36));
    CU_ASSERT_FALSE(uuid_valid_n(path, 37));
}

int main(void)
{
    static const ts_case cases[] = {{"valid and invalid", test_valid_and_invalid}, {NULL, NULL}};
    return ts_main("uuid", cases);
}
