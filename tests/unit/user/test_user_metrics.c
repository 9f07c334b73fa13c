/* Unit test for user_rpc_metrics_register: the outbox and cache figures reach the Prometheus text.
 */
#include <stdlib.h>
#include <string.h>

#include "common/metrics.h"
#include "test_support.h"
#include "user_rpc.h"

static void test_metrics_render(void)
{
    err_info e;
    err_clear(&e);
    /* No database, no Redis: nothing connects until used, and the relay thread is not started. */
    user_app *app = user_app_new(NULL, NULL, NULL, false, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(app);
    metrics_registry *r = metrics_registry_new();
    user_rpc_metrics_register(app, r);
    user_rpc_metrics_register(app, r); /* twice is harmless */
    /* Without a cache every lookup is a miss. */
    arena *a = arena_new(0);
    user_rec u;
    CU_ASSERT_EQUAL(user_store_get(app->store, a, "123e4567-e89b-12d3-a456-426614174000", &u, NULL),
                    ERR_NOT_FOUND);
    size_t len = 0;
    char *text = metrics_render(r, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "outbox_backlog 0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "user_outbox_published_total"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "user_cache_requests_total{result=\"hit\"} 0"));
    free(text);
    arena_free(a);
    metrics_registry_free(r);
    user_app_free(app);
}

int main(void)
{
    static const ts_case cases[] = {
        {"metrics_render", test_metrics_render},
        {NULL, NULL},
    };
    return ts_main("user_metrics", cases);
}
