/* Unit tests for mem: arena allocation, alignment, cleanups, protobuf-c allocator. */
#include "common/mem.h"

#include <stdint.h>
#include <string.h>

#include "test_support.h"

static int cleanup_order[4];
static int cleanup_n;
static void record(void *arg)
{
    cleanup_order[cleanup_n++] = (int)(intptr_t)arg;
}

static void test_alloc_align_zero(void)
{
    arena *a = arena_new(64);
    for (int i = 1; i < 200; i += 7) {
        unsigned char *p = arena_alloc(a, (size_t)i);
        CU_ASSERT_EQUAL((uintptr_t)p % 16, 0);
        for (int j = 0; j < i; j++)
            CU_ASSERT_EQUAL_FATAL(p[j], 0);
        memset(p, 0xab, (size_t)i);
    }
    void *big = arena_alloc(a, 100000); /* larger than a block */
    CU_ASSERT_PTR_NOT_NULL(big);
    CU_ASSERT_STRING_EQUAL(arena_printf(a, "%s-%d", "x", 42), "x-42");
    CU_ASSERT_STRING_EQUAL(arena_strndup(a, "abcdef", 3), "abc");
    arena_free(a);
    arena_free(NULL);
}

static void test_cleanups_reverse_order(void)
{
    arena *a = arena_new(0);
    cleanup_n = 0;
    arena_defer(a, record, (void *)1);
    arena_defer(a, record, (void *)2);
    arena_reset(a);
    CU_ASSERT_EQUAL(cleanup_n, 2);
    CU_ASSERT_EQUAL(cleanup_order[0], 2);
    CU_ASSERT_EQUAL(cleanup_order[1], 1);
    CU_ASSERT_EQUAL(arena_used(a), 0);
    arena_defer(a, record, (void *)3);
    arena_free(a);
    CU_ASSERT_EQUAL(cleanup_n, 3);
    CU_ASSERT_EQUAL(cleanup_order[2], 3);
}

static void test_pb_allocator(void)
{
    arena *a = arena_new(0);
    ProtobufCAllocator al;
    arena_pb_allocator(a, &al);
    void *p = al.alloc(al.allocator_data, 100);
    CU_ASSERT_PTR_NOT_NULL(p);
    al.free(al.allocator_data, p);
    CU_ASSERT(arena_used(a) >= 100);
    arena_free(a);
}

int main(void)
{
    static const ts_case cases[] = {{"alloc align zero", test_alloc_align_zero},
                                    {"cleanups reverse order", test_cleanups_reverse_order},
                                    {"pb allocator", test_pb_allocator},
                                    {NULL, NULL}};
    return ts_main("mem", cases);
}
