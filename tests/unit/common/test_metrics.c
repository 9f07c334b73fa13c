/* Unit tests for metrics: counters, gauges, histograms, labels, exposition format, concurrency. */
#include "common/metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

static void test_counter_gauge_render(void)
{
    metrics_registry *r = metrics_registry_new();
    const char *names[] = {"method", "code", NULL};
    metrics_family *c = metrics_family_new(r, METRICS_COUNTER, "grpc_server_handled_total",
                                           "Handled RPCs.", names, NULL, 0);
    CU_ASSERT_PTR_EQUAL(
        metrics_family_new(r, METRICS_COUNTER, "grpc_server_handled_total", "x", names, NULL, 0),
        c);
    const char *v1[] = {"Get\"User", "OK"};
    metrics_inc(c, v1);
    metrics_inc(c, v1);
    metrics_series *s = metrics_series_get(c, v1);
    metrics_counter_add(s, 0.5);
    metrics_counter_add(s, -3); /* counters never go down */
    metrics_family *g =
        metrics_family_new(r, METRICS_GAUGE, "db_pool_in_use", "In use.", NULL, NULL, 0);
    metrics_gauge_set(metrics_series_get(g, NULL), 7);
    metrics_gauge_add(metrics_series_get(g, NULL), -2);
    size_t len;
    char *text = metrics_render(r, &len);
    CU_ASSERT_EQUAL(strlen(text), len);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# TYPE grpc_server_handled_total counter\n"));
    CU_ASSERT_PTR_NOT_NULL(
        strstr(text, "grpc_server_handled_total{method=\"Get\\\"User\",code=\"OK\"} 2.5\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# TYPE db_pool_in_use gauge\ndb_pool_in_use 5\n"));
    free(text);
    metrics_registry_free(r);
}

static void test_histogram_buckets_cumulative(void)
{
    metrics_registry *r = metrics_registry_new();
    const char *names[] = {"route", NULL};
    const double b[] = {0.1, 1, 10};
    metrics_family *h =
        metrics_family_new(r, METRICS_HISTOGRAM, "lat_seconds", "Latency.", names, b, 3);
    const char *v[] = {"/x"};
    metrics_observe(h, v, 0.05);
    metrics_observe(h, v, 0.5);
    metrics_observe(h, v, 0.5);
    metrics_observe(h, v, 100);
    char *text = metrics_render(r, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "lat_seconds_bucket{route=\"/x\",le=\"0.1\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "lat_seconds_bucket{route=\"/x\",le=\"1\"} 3\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "lat_seconds_bucket{route=\"/x\",le=\"10\"} 3\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "lat_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "lat_seconds_sum{route=\"/x\"} 101.05\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "lat_seconds_count{route=\"/x\"} 4\n"));
    free(text);
    metrics_registry_free(r);
}

static int collected;
static void collect(void *arg)
{
    collected++;
    metrics_gauge_set(metrics_series_get(arg, NULL), 42);
}

static void test_collect_callback(void)
{
    metrics_registry *r = metrics_registry_new();
    metrics_family *g =
        metrics_family_new(r, METRICS_GAUGE, "outbox_backlog", "Rows.", NULL, NULL, 0);
    metrics_on_collect(r, collect, g);
    char *text = metrics_render(r, NULL);
    CU_ASSERT_EQUAL(collected, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "outbox_backlog 42\n"));
    free(text);
    metrics_registry_free(r);
}

static metrics_family *conc_family;
static void *conc_worker(void *arg)
{
    const char *codes[] = {"OK", "NOT_FOUND", "INTERNAL"};
    for (int i = 0; i < 20000; i++) {
        const char *v[] = {codes[(i + (int)(long)arg) % 3]};
        metrics_inc(conc_family, v);
    }
    return NULL;
}

static void test_concurrent_increments(void)
{
    metrics_registry *r = metrics_registry_new();
    const char *names[] = {"code", NULL};
    conc_family = metrics_family_new(r, METRICS_COUNTER, "calls_total", "Calls.", names, NULL, 0);
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, conc_worker, (void *)i);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *text = metrics_render(r, NULL);
    /* 80000 increments spread over 3 codes: the three values must add up exactly. */
    long total = 0;
    const char *codes[] = {"OK", "NOT_FOUND", "INTERNAL"};
    for (int i = 0; i < 3; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "calls_total{code=\"%s\"} ", codes[i]);
        char *p = strstr(text, pat);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        total += strtol(p + strlen(pat), NULL, 10);
    }
    CU_ASSERT_EQUAL(total, 80000);
    free(text);
    metrics_registry_free(r);
}

static void test_http_bad_addr(void)
{
    metrics_registry *r = metrics_registry_new();
    char err[128] = "";
    CU_ASSERT_PTR_NULL(metrics_http_start(r, "0.0.0.0:notaport", err, sizeof err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "bad port"));
    metrics_http *h = metrics_http_start(r, "127.0.0.1:0", err, sizeof err); /* 0 = disabled */
    CU_ASSERT_PTR_NULL(h);
    metrics_registry_free(r);
}

int main(void)
{
    static const ts_case cases[] = {{"counter gauge render", test_counter_gauge_render},
                                    {"histogram cumulative", test_histogram_buckets_cumulative},
                                    {"collect callback", test_collect_callback},
                                    {"concurrent increments", test_concurrent_increments},
                                    {"http bad addr", test_http_bad_addr},
                                    {NULL, NULL}};
    return ts_main("metrics", cases);
}
