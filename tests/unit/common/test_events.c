/* Unit tests for events: entry parsing (fields by name, absent/NULL/odd items), UUID check, and
 * the argument checks of events_consumer_start. The Redis loop is proven by integration_auth and
 * integration_permission (events cases). */
#include <string.h>

#include "common/cache.h"
#include "common/events.h"

#include "test_support.h"

static void test_parse_all_fields(void)
{
    const char *kv[] = {
        "type",     "user.deleted", "user_id",     "0b1c2d3e-0000-4000-8000-00000000000a",
        "event_id", "e-1",          "occurred_at", "2024-01-02T03:04:05Z"};
    events_entry ev;
    CU_ASSERT_TRUE(events_entry_parse("1-0", kv, 8, &ev));
    CU_ASSERT_STRING_EQUAL(ev.id, "1-0");
    CU_ASSERT_STRING_EQUAL(ev.type, "user.deleted");
    CU_ASSERT_STRING_EQUAL(ev.user_id, "0b1c2d3e-0000-4000-8000-00000000000a");
    CU_ASSERT_STRING_EQUAL(ev.event_id, "e-1");
    CU_ASSERT_STRING_EQUAL(ev.occurred_at, "2024-01-02T03:04:05Z");
}

static void test_parse_order_unknown_and_missing(void)
{
    /* Any order; unknown keys ignored; absent fields are "" (never NULL); the last repeat wins. */
    const char *kv[] = {"extra",        "x",    "user_id",     "u1", "type",
                        "user.created", "type", "user.updated"};
    events_entry ev;
    CU_ASSERT_TRUE(events_entry_parse("5-1", kv, 8, &ev));
    CU_ASSERT_STRING_EQUAL(ev.type, "user.updated");
    CU_ASSERT_STRING_EQUAL(ev.user_id, "u1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev.event_id);
    CU_ASSERT_STRING_EQUAL(ev.event_id, "");
    CU_ASSERT_STRING_EQUAL(ev.occurred_at, "");
}

static void test_parse_malformed(void)
{
    events_entry ev;
    /* Fields nil (entry deleted while pending): id kept, type "" (acknowledged by the loop). */
    CU_ASSERT_TRUE(events_entry_parse("7-0", NULL, 0, &ev));
    CU_ASSERT_STRING_EQUAL(ev.id, "7-0");
    CU_ASSERT_STRING_EQUAL(ev.type, "");
    /* NULL key or value (non-string reply items) skip the pair; an odd last item is ignored. */
    const char *kv[] = {NULL, "user.deleted", "type", NULL, "user_id", "u2", "type"};
    CU_ASSERT_TRUE(events_entry_parse("8-0", kv, 7, &ev));
    CU_ASSERT_STRING_EQUAL(ev.type, "");
    CU_ASSERT_STRING_EQUAL(ev.user_id, "u2");
    /* No id: nothing to acknowledge. */
    const char *kv2[] = {"type", "user.deleted"};
    CU_ASSERT_FALSE(events_entry_parse(NULL, kv2, 2, &ev));
    CU_ASSERT_STRING_EQUAL(ev.id, "");
    CU_ASSERT_STRING_EQUAL(ev.type, "user.deleted");
    CU_ASSERT_FALSE(events_entry_parse("", kv2, 2, &ev));
}

static void test_uuid_valid(void)
{
    CU_ASSERT_TRUE(events_uuid_valid("0b1c2d3e-0000-4000-8000-00000000000a"));
    CU_ASSERT_TRUE(events_uuid_valid("0B1C2D3E-ABCD-4000-8000-FFFFFFFFFFFF"));
    CU_ASSERT_FALSE(events_uuid_valid(NULL));
    CU_ASSERT_FALSE(events_uuid_valid(""));
    CU_ASSERT_FALSE(events_uuid_valid("not-a-uuid"));
    CU_ASSERT_FALSE(events_uuid_valid("0b1c2d3e-0000-4000-8000-00000000000"));   /* 35 chars */
    CU_ASSERT_FALSE(events_uuid_valid("0b1c2d3e-0000-4000-8000-00000000000ab")); /* 37 chars */
    CU_ASSERT_FALSE(events_uuid_valid("0b1c2d3e00000-4000-8000-00000000000a"));  /* dash missing */
    CU_ASSERT_FALSE(events_uuid_valid("0b1c2d3g-0000-4000-8000-00000000000a"));  /* 'g' */
    CU_ASSERT_FALSE(events_uuid_valid("0b1c2d3e-0000-4000-8000-00000000000-"));
}

static err_code never(void *arg, const events_entry *ev, err_info *e)
{
    (void)arg;
    (void)ev;
    (void)e;
    return ERR_OK;
}

static void test_start_requires_opts(void)
{
    err_info e;
    cache_opts co = {.url = "redis://127.0.0.1:1/0", .timeout_ms = 100, .backoff_max_ms = 100};
    cache *c = cache_new(&co, &e); /* no connection is made */
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    events_consumer_opts no_handle = {.stream = "s", .group = "g"};
    err_clear(&e);
    CU_ASSERT_PTR_NULL(events_consumer_start(c, &no_handle, &e));
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    events_consumer_opts no_group = {.stream = "s", .group = "", .handle = never};
    err_clear(&e);
    CU_ASSERT_PTR_NULL(events_consumer_start(c, &no_group, &e));
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    err_clear(&e);
    CU_ASSERT_PTR_NULL(events_consumer_start(NULL, &no_group, &e));
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    events_consumer_stop(NULL);
    CU_ASSERT_EQUAL(events_consumer_acked(NULL), 0);
    cache_free(c);
}

int main(void)
{
    static const ts_case cases[] = {
        {"parse all fields", test_parse_all_fields},
        {"parse order, unknown, missing", test_parse_order_unknown_and_missing},
        {"parse malformed", test_parse_malformed},
        {"uuid valid", test_uuid_valid},
        {"start requires opts", test_start_requires_opts},
        {NULL, NULL}};
    return ts_main("events", cases);
}
