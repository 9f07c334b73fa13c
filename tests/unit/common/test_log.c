/* Unit tests for log: one valid JSON line per event, escaping, level filter, ids. */
#include "common/log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_support.h"

/* Captures what log_emit writes by pointing it at a temp file. */
static char captured[16384];

static void capture_begin(FILE **f)
{
    *f = tmpfile();
    log_set_fd(fileno(*f));
}

static void capture_end(FILE *f)
{
    fflush(f);
    rewind(f);
    size_t n = fread(captured, 1, sizeof captured - 1, f);
    captured[n] = '\0';
    fclose(f);
    log_set_fd(2);
}

static void test_line_is_json_with_ids(void)
{
    FILE *f;
    log_init("user", LOG_INFO);
    capture_begin(&f);
    log_ctx ctx = {.request_id = "req-1",
                   .trace_id = "0af7651916cd43dd8448eb211c80319c",
                   .span_id = "b7ad6b7169203331"};
    log_info_kv(&ctx, "\"grpc_code\":\"OK\",\"duration_ms\":1.5", "served %s \"quoted\"\n\x01",
                "GetUser");
    capture_end(f);
    CU_ASSERT_EQUAL(strchr(captured, '\n') - captured + 1, (long)strlen(captured)); /* one line */
    json_error_t err;
    json_t *j = json_loads(captured, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "level")), "info");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "service")), "user");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "request_id")), "req-1");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "trace_id")),
                           "0af7651916cd43dd8448eb211c80319c");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "span_id")), "b7ad6b7169203331");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "msg")),
                           "served GetUser \"quoted\"\n\x01");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "grpc_code")), "OK");
    CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_object_get(j, "duration_ms")), 1.5, 1e-9);
    const char *ts = json_string_value(json_object_get(j, "ts"));
    CU_ASSERT(ts && strlen(ts) == 24 && ts[23] == 'Z');
    json_decref(j);
}

static void test_level_filter(void)
{
    FILE *f;
    log_init("auth", LOG_WARN);
    capture_begin(&f);
    log_info(NULL, "hidden");
    log_debug(NULL, "hidden");
    log_warn(NULL, "shown");
    capture_end(f);
    CU_ASSERT_PTR_NULL(strstr(captured, "hidden"));
    CU_ASSERT_PTR_NOT_NULL(strstr(captured, "\"msg\":\"shown\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(captured, "\"request_id\":\"\""));
    log_level l;
    CU_ASSERT_TRUE(log_level_parse("debug", &l) && l == LOG_DEBUG);
    CU_ASSERT_TRUE(log_level_parse("error", &l) && l == LOG_ERROR);
    CU_ASSERT_FALSE(log_level_parse("loud", &l));
}

static void test_json_str_truncates_safely(void)
{
    char small[8];
    CU_ASSERT_STRING_EQUAL(log_json_str(small, sizeof small, "abcdefghij"), "\"abcde\"");
    CU_ASSERT_STRING_EQUAL(log_json_str(small, sizeof small, "a\"b"), "\"a\\\"b\"");
    char tiny[2];
    CU_ASSERT_STRING_EQUAL(log_json_str(tiny, sizeof tiny, "x"), "");
    char buf[32];
    CU_ASSERT_STRING_EQUAL(log_json_str(buf, sizeof buf, NULL), "\"\"");
}

static void test_long_message_stays_one_line(void)
{
    FILE *f;
    log_init("gateway", LOG_INFO);
    capture_begin(&f);
    char big[6000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_info(NULL, "%s", big);
    capture_end(f);
    size_t n = strlen(captured);
    CU_ASSERT(n > 0 && captured[n - 1] == '\n');
    CU_ASSERT_PTR_EQUAL(strchr(captured, '\n'), captured + n - 1);
}

int main(void)
{
    static const ts_case cases[] = {{"line is json with ids", test_line_is_json_with_ids},
                                    {"level filter", test_level_filter},
                                    {"json_str truncates safely", test_json_str_truncates_safely},
                                    {"long message one line", test_long_message_stays_one_line},
                                    {NULL, NULL}};
    return ts_main("log", cases);
}
