/* Unit tests for pbjson: exact output of the real messages, tricky inputs both ways, round trips,
 * path/query parameters, PATCH field lists, and a bounded mutation fuzz that must never crash. */
#include "common/pbjson.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/v1/auth.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "permission/v1/permission.pb-c.h"
#include "user/v1/user.pb-c.h"

#include "test_support.h"

static arena *A;

static void setup(void)
{
    arena_free(A);
    A = arena_new(0);
}

static const char *enc(const void *m)
{
    return pbjson_encode(m, NULL, A, NULL);
}

static void expect_json(const void *m, const char *want)
{
    const char *got = enc(m);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "\n  got:  %s\n  want: %s\n", got, want);
    CU_ASSERT_STRING_EQUAL(got, want);
}

static Google__Protobuf__Timestamp *ts(int64_t s, int32_t ns)
{
    Google__Protobuf__Timestamp *t = arena_alloc(A, sizeof *t);
    google__protobuf__timestamp__init(t);
    t->seconds = s;
    t->nanos = ns;
    return t;
}

static void test_encode_user(void)
{
    setup();
    User__V1__User u = USER__V1__USER__INIT;
    expect_json(&u, "{\"id\":\"\",\"email\":\"\",\"display_name\":\"\",\"status\":"
                    "\"USER_STATUS_UNSPECIFIED\",\"create_time\":null,\"update_time\":null,"
                    "\"delete_time\":null,\"etag\":\"\"}");
    pbjson_opts omit = {.omit_unpopulated = true};
    CU_ASSERT_STRING_EQUAL(pbjson_encode(&u.base, &omit, A, NULL), "{}");

    u.id = "7d0f";
    u.email = "ann@example.com";
    u.display_name = "Ann \"A\" \\ B\n\x01 é";
    u.status = USER__V1__USER_STATUS__USER_STATUS_ACTIVE;
    u.create_time = ts(1700000000, 123000000);
    u.update_time = ts(1700000000, 0);
    u.etag = "W/1";
    size_t len = 0;
    const char *got = pbjson_encode(&u.base, NULL, A, &len);
    const char *want =
        "{\"id\":\"7d0f\",\"email\":\"ann@example.com\",\"display_name\":\"Ann \\\"A\\\" \\\\ B\\n"
        "\\u0001 "
        "é\",\"status\":\"USER_STATUS_ACTIVE\",\"create_time\":\"2023-11-14T22:13:20.123Z\","
        "\"update_time\":\"2023-11-14T22:13:20Z\",\"delete_time\":null,\"etag\":\"W/1\"}";
    CU_ASSERT_STRING_EQUAL(got, want);
    CU_ASSERT_EQUAL(len, strlen(want));
    CU_ASSERT_STRING_EQUAL(pbjson_encode(&u.base, &omit, A, NULL),
                           "{\"id\":\"7d0f\",\"email\":\"ann@example.com\",\"display_name\":\"Ann "
                           "\\\"A\\\" \\\\ B\\n\\u0001 é\",\"status\":\"USER_STATUS_ACTIVE\","
                           "\"create_time\":\"2023-11-14T22:13:20.123Z\",\"update_time\":"
                           "\"2023-11-14T22:13:20Z\",\"etag\":\"W/1\"}");

    /* Invalid UTF-8 from the wire must not produce invalid JSON. */
    u.display_name = "a\xff"
                     "b";
    u.status = 9; /* open enum: unknown number stays a number */
    got = enc(&u);
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\"display_name\":\"a\xEF\xBF\xBD"
                                       "b\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\"status\":9,"));
}

static void test_encode_timestamps(void)
{
    setup();
    static const struct {
        int64_t s;
        int32_t ns;
        const char *want;
    } cases[] = {
        {0, 0, "\"1970-01-01T00:00:00Z\""},
        {0, 1, "\"1970-01-01T00:00:00.000000001Z\""},
        {0, 1000, "\"1970-01-01T00:00:00.000001Z\""},
        {0, 500000, "\"1970-01-01T00:00:00.000500Z\""},
        {0, 10000000, "\"1970-01-01T00:00:00.010Z\""},
        {-1, 0, "\"1969-12-31T23:59:59Z\""},
        {951782400, 0, "\"2000-02-29T00:00:00Z\""},
        {-62135596800LL, 0, "\"0001-01-01T00:00:00Z\""},
        {253402300799LL, 999999999, "\"9999-12-31T23:59:59.999999999Z\""},
        {253402300800LL, 0, "\"9999-12-31T23:59:59Z\""}, /* beyond range: clamped */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = enc(ts(cases[i].s, cases[i].ns));
        if (strcmp(got, cases[i].want))
            fprintf(stderr, "\n  ts %zu got %s\n", i, got);
        CU_ASSERT_STRING_EQUAL(got, cases[i].want);
    }
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 1;
    d.nanos = 500000000;
    CU_ASSERT_STRING_EQUAL(enc(&d), "\"1.500s\"");
    d.seconds = -3;
    d.nanos = -1000;
    CU_ASSERT_STRING_EQUAL(enc(&d), "\"-3.000001s\"");
    d.seconds = 0;
    d.nanos = 0;
    CU_ASSERT_STRING_EQUAL(enc(&d), "\"0s\"");
}

static void test_encode_nested_and_wkt(void)
{
    setup();
    Permission__V1__CheckResponse cr = PERMISSION__V1__CHECK_RESPONSE__INIT;
    expect_json(&cr, "{\"allowed\":false}");
    cr.allowed = 1;
    expect_json(&cr, "{\"allowed\":true}");

    Auth__V1__RegisterResponse rr = AUTH__V1__REGISTER_RESPONSE__INIT;
    User__V1__User u = USER__V1__USER__INIT;
    u.id = "u1";
    u.status = USER__V1__USER_STATUS__USER_STATUS_DISABLED;
    rr.user = &u;
    rr.access_token = "at";
    rr.token_type = "Bearer";
    rr.expires_in = 900;
    rr.refresh_expires_in = 604800;
    expect_json(&rr, "{\"user\":{\"id\":\"u1\",\"email\":\"\",\"display_name\":\"\",\"status\":"
                     "\"USER_STATUS_DISABLED\",\"create_time\":null,\"update_time\":null,"
                     "\"delete_time\":null,\"etag\":\"\"},\"access_token\":\"at\","
                     "\"refresh_token\":\"\",\"token_type\":\"Bearer\",\"expires_in\":900,"
                     "\"refresh_expires_in\":604800}");

    Permission__V1__Role r = PERMISSION__V1__ROLE__INIT;
    char *perms[] = {"users:read", "users:write"};
    r.name = "admin";
    r.permissions = perms;
    r.n_permissions = 2;
    expect_json(&r, "{\"name\":\"admin\",\"description\":\"\",\"permissions\":[\"users:read\","
                    "\"users:write\"],\"inherits\":[],\"builtin\":false,\"create_time\":null,"
                    "\"update_time\":null}");

    Auth__V1__Claims c = AUTH__V1__CLAIMS__INIT;
    c.iat = 1700000000;
    c.exp = INT64_MIN;
    const char *got = enc(&c);
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\"iat\":\"1700000000\",\"exp\":\"-9223372036854775808\""));

    User__V1__UpdateUserRequest up = USER__V1__UPDATE_USER_REQUEST__INIT;
    Google__Protobuf__FieldMask fm = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"display_name", "status", "user.create_time"};
    fm.paths = paths;
    fm.n_paths = 3;
    up.update_mask = &fm;
    got = enc(&up);
    CU_ASSERT_STRING_EQUAL(got, "{\"user\":null,\"update_mask\":\"displayName,status,"
                                "user.createTime\"}");
}

/* google.rpc.Status carrying a packed BadRequest and RetryInfo, as the gateway renders errors. */
static Google__Rpc__Status *make_status(void)
{
    Google__Rpc__BadRequest__FieldViolation *fv = arena_alloc(A, sizeof *fv);
    google__rpc__bad_request__field_violation__init(fv);
    fv->field = "email";
    fv->description = "must be an email address";
    Google__Rpc__BadRequest *br = arena_alloc(A, sizeof *br);
    google__rpc__bad_request__init(br);
    br->field_violations = arena_alloc(A, sizeof(void *));
    br->field_violations[0] = fv;
    br->n_field_violations = 1;

    Google__Protobuf__Duration *d = arena_alloc(A, sizeof *d);
    google__protobuf__duration__init(d);
    d->seconds = 1;
    d->nanos = 500000000;
    Google__Rpc__RetryInfo *ri = arena_alloc(A, sizeof *ri);
    google__rpc__retry_info__init(ri);
    ri->retry_delay = d;

    Google__Protobuf__Any **anys = arena_alloc(A, 3 * sizeof(void *));
    const ProtobufCMessage *inner[] = {&br->base, &ri->base};
    const char *urls[] = {"type.googleapis.com/google.rpc.BadRequest",
                          "type.googleapis.com/google.rpc.RetryInfo"};
    for (int i = 0; i < 2; i++) {
        anys[i] = arena_alloc(A, sizeof *anys[i]);
        google__protobuf__any__init(anys[i]);
        anys[i]->type_url = (char *)urls[i];
        anys[i]->value.len = protobuf_c_message_get_packed_size(inner[i]);
        anys[i]->value.data = arena_alloc(A, anys[i]->value.len + 1);
        protobuf_c_message_pack(inner[i], anys[i]->value.data);
    }
    Google__Rpc__Status *st = arena_alloc(A, sizeof *st);
    google__rpc__status__init(st);
    st->code = 3;
    st->message = "invalid argument";
    st->details = anys;
    st->n_details = 2;
    return st;
}

static void test_encode_any(void)
{
    setup();
    Google__Rpc__Status *st = make_status();
    expect_json(st, "{\"code\":3,\"message\":\"invalid argument\",\"details\":[{\"@type\":"
                    "\"type.googleapis.com/google.rpc.BadRequest\",\"field_violations\":[{"
                    "\"field\":\"email\",\"description\":\"must be an email address\"}]},"
                    "{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retry_delay\":"
                    "\"1.500s\"}]}");
    /* Unregistered type: the payload stays visible as base64, output stays JSON. */
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    uint8_t raw[] = {1, 2, 3, 0xfb};
    any.type_url = "type.googleapis.com/x.v1.Unknown";
    any.value.data = raw;
    any.value.len = 4;
    expect_json(&any, "{\"@type\":\"type.googleapis.com/x.v1.Unknown\",\"value\":\"AQID+w==\"}");
    /* A registered type whose bytes do not parse also falls back to base64. */
    any.type_url = "type.googleapis.com/google.rpc.BadRequest";
    uint8_t junk[] = {0x0a, 0x7f};
    any.value.data = junk;
    any.value.len = 2;
    expect_json(&any,
                "{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\",\"value\":\"Cn8=\"}");
    /* Timestamp in Any: special form goes under "value". */
    Google__Protobuf__Timestamp *t = ts(0, 0);
    any.type_url = "type.googleapis.com/google.protobuf.Timestamp";
    any.value.len = protobuf_c_message_get_packed_size(&t->base);
    any.value.data = arena_alloc(A, 16);
    protobuf_c_message_pack(&t->base, any.value.data);
    expect_json(&any, "{\"@type\":\"type.googleapis.com/google.protobuf.Timestamp\",\"value\":"
                      "\"1970-01-01T00:00:00Z\"}");
}

static ProtobufCMessage *dec_ok(const ProtobufCMessageDescriptor *d, const char *json)
{
    err_info e;
    err_clear(&e);
    ProtobufCMessage *m = NULL;
    err_code rc = pbjson_decode(d, json, strlen(json), A, &m, &e);
    if (rc != ERR_OK)
        fprintf(stderr, "\n  decode %s: %s %s\n", json, e.nviolations ? e.violations[0].field : "",
                e.nviolations ? e.violations[0].description : e.msg);
    CU_ASSERT_EQUAL(rc, ERR_OK);
    CU_ASSERT_EQUAL(rc == ERR_OK, m != NULL);
    return m;
}

static void test_decode_user(void)
{
    setup();
    User__V1__User *u = (void *)dec_ok(
        &user__v1__user__descriptor,
        "{\"id\":\"x1\",\"displayName\":\"Ann\",\"status\":\"USER_STATUS_DISABLED\","
        "\"createTime\":\"2023-11-15T00:13:20.5+02:00\",\"update_time\":\"2023-11-14T22:13:20Z\","
        "\"delete_time\":null,\"unknown_field\":{\"deep\":[1,2,{\"x\":null}]},\"etag\":\"e\"}");
    CU_ASSERT_FATAL(u != NULL);
    CU_ASSERT_STRING_EQUAL(u->id, "x1");
    CU_ASSERT_STRING_EQUAL(u->email, ""); /* absent string: protobuf-c's empty default */
    CU_ASSERT_STRING_EQUAL(u->display_name, "Ann");
    CU_ASSERT_EQUAL(u->status, USER__V1__USER_STATUS__USER_STATUS_DISABLED);
    CU_ASSERT_FATAL(u->create_time != NULL);
    CU_ASSERT_EQUAL(u->create_time->seconds, 1700000000);
    CU_ASSERT_EQUAL(u->create_time->nanos, 500000000);
    CU_ASSERT_EQUAL(u->update_time->seconds, 1700000000);
    CU_ASSERT_PTR_NULL(u->delete_time);
    CU_ASSERT_STRING_EQUAL(u->etag, "e");

    u = (void *)dec_ok(&user__v1__user__descriptor, "{\"status\":1}");
    CU_ASSERT_EQUAL(u->status, USER__V1__USER_STATUS__USER_STATUS_ACTIVE);
    u = (void *)dec_ok(&user__v1__user__descriptor, "");
    CU_ASSERT_STRING_EQUAL(u->id, "");
    u = (void *)dec_ok(&user__v1__user__descriptor, " {} ");
    CU_ASSERT_PTR_NULL(u->create_time);

    User__V1__ListUsersRequest *l =
        (void *)dec_ok(&user__v1__list_users_request__descriptor,
                       "{\"pageSize\":1e2,\"show_deleted\":true,\"filter\":\"status=ACTIVE\"}");
    CU_ASSERT_EQUAL(l->page_size, 100);
    CU_ASSERT_TRUE(l->show_deleted);
    l = (void *)dec_ok(&user__v1__list_users_request__descriptor, "{\"page_size\":\"-5\"}");
    CU_ASSERT_EQUAL(l->page_size, -5);
    l = (void *)dec_ok(&user__v1__list_users_request__descriptor, "{\"page_size\":2147483647}");
    CU_ASSERT_EQUAL(l->page_size, INT32_MAX);

    Auth__V1__Claims *c = (void *)dec_ok(&auth__v1__claims__descriptor,
                                         "{\"iat\":\"-9223372036854775808\",\"exp\":"
                                         "9223372036854775807,\"sub\":\"\\u00e9\\ud83d\\ude00\"}");
    CU_ASSERT_EQUAL(c->iat, INT64_MIN);
    CU_ASSERT_EQUAL(c->exp, INT64_MAX);
    CU_ASSERT_STRING_EQUAL(c->sub, "é\xF0\x9F\x98\x80");

    User__V1__UpdateUserRequest *up = (void *)dec_ok(
        &user__v1__update_user_request__descriptor,
        "{\"user\":{\"id\":\"u\"},\"updateMask\":\"displayName, status,user.createTime\"}");
    CU_ASSERT_FATAL(up->update_mask != NULL);
    CU_ASSERT_EQUAL_FATAL(up->update_mask->n_paths, 3);
    CU_ASSERT_STRING_EQUAL(up->update_mask->paths[0], "display_name");
    CU_ASSERT_STRING_EQUAL(up->update_mask->paths[1], "status");
    CU_ASSERT_STRING_EQUAL(up->update_mask->paths[2], "user.create_time");
    CU_ASSERT_STRING_EQUAL(up->user->id, "u");
    up = (void *)dec_ok(&user__v1__update_user_request__descriptor, "{\"update_mask\":\"\"}");
    CU_ASSERT_EQUAL(up->update_mask->n_paths, 0);

    Permission__V1__Role *r = (void *)dec_ok(&permission__v1__role__descriptor,
                                             "{\"permissions\":[\"a\",\"b:c\"],\"inherits\":[]}");
    CU_ASSERT_EQUAL_FATAL(r->n_permissions, 2);
    CU_ASSERT_STRING_EQUAL(r->permissions[1], "b:c");
    CU_ASSERT_EQUAL(r->n_inherits, 0);
}

static void test_decode_any(void)
{
    setup();
    Google__Rpc__Status *st = (void *)dec_ok(
        &google__rpc__status__descriptor,
        "{\"code\":3,\"details\":[{\"field_violations\":[{\"field\":\"email\",\"description\":"
        "\"bad\"}],\"@type\":\"type.googleapis.com/google.rpc.BadRequest\"}]}");
    CU_ASSERT_FATAL(st != NULL);
    CU_ASSERT_EQUAL_FATAL(st->n_details, 1);
    CU_ASSERT_STRING_EQUAL(st->details[0]->type_url, "type.googleapis.com/google.rpc.BadRequest");
    Google__Rpc__BadRequest *br = google__rpc__bad_request__unpack(NULL, st->details[0]->value.len,
                                                                   st->details[0]->value.data);
    CU_ASSERT_FATAL(br != NULL);
    CU_ASSERT_EQUAL_FATAL(br->n_field_violations, 1);
    CU_ASSERT_STRING_EQUAL(br->field_violations[0]->field, "email");
    CU_ASSERT_STRING_EQUAL(br->field_violations[0]->description, "bad");
    google__rpc__bad_request__free_unpacked(br, NULL);
}

/* Each bad input must give INVALID_ARGUMENT with a violation on `field` whose text contains
 * `why`. */
static void test_decode_errors(void)
{
    setup();
    const ProtobufCMessageDescriptor *U = &user__v1__user__descriptor,
                                     *L = &user__v1__list_users_request__descriptor,
                                     *R = &permission__v1__role__descriptor,
                                     *C = &auth__v1__claims__descriptor,
                                     *UP = &user__v1__update_user_request__descriptor,
                                     *S = &google__rpc__status__descriptor;
    static char deep[200], deep_ok[200];
    /* 33 levels: the top-level object plus 32 nested arrays. */
    snprintf(deep, sizeof deep, "{\"x\":%.*s%.*s}", 32, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 32,
             "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    snprintf(deep_ok, sizeof deep_ok, "{\"x\":%.*s%.*s}", 31, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
             31, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    const struct {
        const ProtobufCMessageDescriptor *d;
        const char *json;
        const char *field;
        const char *why;
    } cases[] = {
        {L, "{\"page_size\":2147483648}", "page_size", "out of range"},
        {L, "{\"page_size\":-2147483649}", "page_size", "out of range"},
        {L, "{\"page_size\":\"2147483648\"}", "page_size", "out of range"},
        {L, "{\"page_size\":1.5}", "page_size", "not an integer"},
        {L, "{\"page_size\":\"12abc\"}", "page_size", "not an integer"},
        {L, "{\"page_size\":\" 1\"}", "page_size", "not an integer"},
        {L, "{\"page_size\":true}", "page_size", "expected an integer"},
        {L, "{\"page_size\":[1]}", "page_size", "expected an integer"},
        {L, "{\"show_deleted\":\"true\"}", "show_deleted", "true or false"},
        {L, "{\"showDeleted\":1}", "show_deleted", "true or false"},
        {U, "{\"status\":\"ACTIVE\"}", "status", "unknown value"},
        {U, "{\"status\":1.5}", "status", "not an integer"},
        {U, "{\"status\":{}}", "status", "enum"},
        {U, "{\"email\":5}", "email", "expected a string"},
        {U, "{\"email\":{\"a\":1}}", "email", "expected a string"},
        {U, "{\"create_time\":\"2023-13-01T00:00:00Z\"}", "create_time", "RFC 3339"},
        {U, "{\"create_time\":\"2023-02-29T00:00:00Z\"}", "create_time", "RFC 3339"},
        {U, "{\"create_time\":\"2023-01-01 00:00:00Z\"}", "create_time", "RFC 3339"},
        {U, "{\"create_time\":\"2023-01-01T00:00:00\"}", "create_time", "RFC 3339"},
        {U, "{\"create_time\":\"2023-01-01T00:00:00.1234567890Z\"}", "create_time", "RFC 3339"},
        {U, "{\"create_time\":\"0000-12-31T23:59:59Z\"}", "create_time", "RFC 3339"},
        {U, "{\"create_time\":1700000000}", "create_time", "RFC 3339"},
        {U, "{\"display_name\":\"a\",\"displayName\":\"b\"}", "display_name", "twice"},
        {U, "{\"email\":\"\xff\"}", "body", "UTF-8"},
        {U, "{\"email\":\"\xc3\x28\"}", "body", "UTF-8"},
        {U, "{\"email\":\"a\",\"email\":\"b\"}", "body", "duplicate"},
        {U, "{\"email\":\"a\\u0000b\"}", "body", "malformed"},
        {U, "[1,2]", "body", "expected a JSON object"},
        {U, "\"abc\"", "body", "expected a JSON object"},
        {U, "null", "body", "expected a JSON object"},
        {U, "{\"email\":", "body", "malformed"},
        {U, "{\"email\":\"a\"} x", "body", "malformed"},
        {U, "{'email':'a'}", "body", "malformed"},
        {U, deep, "body", "deeper"},
        {UP, "{\"user\":{\"status\":7.5}}", "user.status", "not an integer"},
        {UP, "{\"user\":[]}", "user", "expected an object"},
        {UP, "{\"update_mask\":[\"a\"]}", "update_mask", "field mask"},
        {UP, "{\"update_mask\":\"a,,b\"}", "update_mask", "empty path"},
        {UP, "{\"update_mask\":\"a;b\"}", "update_mask", "invalid field mask"},
        {R, "{\"permissions\":[\"a\",1]}", "permissions[1]", "expected a string"},
        {R, "{\"permissions\":[\"a\",null]}", "permissions[1]", "null"},
        {R, "{\"permissions\":\"a\"}", "permissions", "expected an array"},
        {C, "{\"iat\":\"9223372036854775808\"}", "iat", "out of range"},
        {C, "{\"iat\":1e19}", "iat", "out of range"},
        {C, "{\"iat\":\"1e3\"}", "iat", "not an integer"},
        {C, "{\"iat\":12345678901234567890}", "body", "malformed"}, /* jansson: too big */
        {S, "{\"details\":[{\"@type\":\"type.googleapis.com/x.Nope\",\"a\":1}]}",
         "details[0].@type", "unknown type"},
        {S, "{\"details\":[{\"field_violations\":[]}]}", "details[0].@type", "missing"},
        {S,
         "{\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\","
         "\"field_violations\":[{\"field\":3}]}]}",
         "details[0].field_violations[0].field", "expected a string"},
        {S, "{\"code\":\"x\",\"message\":1}", "code", "not an integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err_info e;
        err_clear(&e);
        ProtobufCMessage *m = (void *)1;
        err_code rc = pbjson_decode(cases[i].d, cases[i].json, strlen(cases[i].json), A, &m, &e);
        bool ok = rc == ERR_INVALID_ARGUMENT && e.code == ERR_INVALID_ARGUMENT && m == NULL &&
                  e.nviolations >= 1 && strcmp(e.violations[0].field, cases[i].field) == 0 &&
                  strstr(e.violations[0].description, cases[i].why) != NULL;
        if (!ok)
            fprintf(stderr, "\n  case %zu %s: rc=%d field=%s desc=%s\n", i, cases[i].json, rc,
                    e.nviolations ? e.violations[0].field : "-",
                    e.nviolations ? e.violations[0].description : "-");
        CU_ASSERT_TRUE(ok);
    }
    /* Several bad fields are all reported. */
    err_info e;
    err_clear(&e);
    ProtobufCMessage *m;
    const char *two = "{\"page_size\":\"x\",\"show_deleted\":3}";
    CU_ASSERT_EQUAL(pbjson_decode(L, two, strlen(two), A, &m, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(e.nviolations, 2);
    /* Nesting at exactly the limit is fine (inside an ignored field). */
    dec_ok(U, deep_ok);
}

/* encode → decode → encode: same bytes on the wire and the same JSON. */
static void roundtrip(const ProtobufCMessage *m)
{
    const char *j1 = enc(m);
    ProtobufCMessage *back = dec_ok(m->descriptor, j1);
    CU_ASSERT_FATAL(back != NULL);
    size_t n1 = protobuf_c_message_get_packed_size(m),
           n2 = protobuf_c_message_get_packed_size(back);
    CU_ASSERT_EQUAL(n1, n2);
    uint8_t *b1 = arena_alloc(A, n1 + 1), *b2 = arena_alloc(A, n2 + 1);
    protobuf_c_message_pack(m, b1);
    protobuf_c_message_pack(back, b2);
    CU_ASSERT(n1 == n2 && memcmp(b1, b2, n1) == 0);
    CU_ASSERT_STRING_EQUAL(enc(back), j1);
}

static void test_roundtrip(void)
{
    setup();
    User__V1__User u = USER__V1__USER__INIT;
    roundtrip(&u.base);
    u.id = "6f1c8f0e-2b7b-4a53-9c1e-1b5c7f3d9a10";
    u.email = "zoë@example.com";
    u.display_name = "tab\there \"quoted\" \xe2\x80\xa8 \\";
    u.status = USER__V1__USER_STATUS__USER_STATUS_ACTIVE;
    u.create_time = ts(-62135596800LL, 1);
    u.update_time = ts(1700000000, 999999999);
    u.delete_time = ts(951782400, 120000);
    u.etag = "\"abc\"";
    roundtrip(&u.base);

    Auth__V1__RegisterResponse rr = AUTH__V1__REGISTER_RESPONSE__INIT;
    rr.user = &u;
    rr.access_token = "eyJ.x.y";
    rr.expires_in = -1;
    rr.refresh_expires_in = INT32_MIN;
    roundtrip(&rr.base);

    Auth__V1__Claims c = AUTH__V1__CLAIMS__INIT;
    c.iat = INT64_MAX;
    c.exp = INT64_MIN;
    roundtrip(&c.base);

    Permission__V1__Role r = PERMISSION__V1__ROLE__INIT;
    char *perms[] = {"users:read", "", "x:*"};
    char *inh[] = {"viewer"};
    r.name = "admin";
    r.permissions = perms;
    r.n_permissions = 3;
    r.inherits = inh;
    r.n_inherits = 1;
    r.builtin = 1;
    roundtrip(&r.base);

    User__V1__UpdateUserRequest up = USER__V1__UPDATE_USER_REQUEST__INIT;
    Google__Protobuf__FieldMask fm = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"display_name", "user.create_time"};
    fm.paths = paths;
    fm.n_paths = 2;
    up.update_mask = &fm;
    up.user = &u;
    roundtrip(&up.base);

    roundtrip(&make_status()->base);

    Permission__V1__BatchCheckResponse bc = PERMISSION__V1__BATCH_CHECK_RESPONSE__INIT;
    Permission__V1__CheckResult r1 = PERMISSION__V1__CHECK_RESULT__INIT, r2 = r1;
    r1.permission = "a:b";
    r1.allowed = 1;
    r2.permission = "c:d";
    Permission__V1__CheckResult *rs[] = {&r1, &r2};
    bc.results = rs;
    bc.n_results = 2;
    roundtrip(&bc.base);
}

/* Our protos have no map<> yet, so this builds by hand what protoc-c generates for
 * `message Bag { map<string, int32> counts = 1; }`: a nested BagCountsEntry {key=1, value=2}. */
typedef struct BagEntry {
    ProtobufCMessage base;
    char *key;
    int32_t value;
} BagEntry;
typedef struct Bag {
    ProtobufCMessage base;
    size_t n_counts;
    BagEntry **counts;
} Bag;
static const ProtobufCMessageDescriptor bag_entry_desc;
static const ProtobufCMessageDescriptor bag_desc;
static void bag_entry_init(ProtobufCMessage *m)
{
    static const BagEntry init = {PROTOBUF_C_MESSAGE_INIT(&bag_entry_desc), (char *)"", 0};
    *(BagEntry *)(void *)m = init;
}
static void bag_init(ProtobufCMessage *m)
{
    static const Bag init = {PROTOBUF_C_MESSAGE_INIT(&bag_desc), 0, NULL};
    *(Bag *)(void *)m = init;
}
static const ProtobufCFieldDescriptor bag_entry_fields[] = {
    {"key", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_STRING, 0, offsetof(BagEntry, key), NULL,
     &protobuf_c_empty_string, 0, 0, NULL, NULL},
    {"value", 2, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_INT32, 0, offsetof(BagEntry, value), NULL,
     NULL, 0, 0, NULL, NULL},
};
static const unsigned bag_entry_by_name[] = {0, 1};
static const ProtobufCIntRange bag_entry_ranges[] = {{1, 0}, {0, 2}};
static const ProtobufCMessageDescriptor bag_entry_desc = {PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
                                                          "t.Bag.CountsEntry",
                                                          "CountsEntry",
                                                          "BagEntry",
                                                          "t",
                                                          sizeof(BagEntry),
                                                          2,
                                                          bag_entry_fields,
                                                          bag_entry_by_name,
                                                          1,
                                                          bag_entry_ranges,
                                                          bag_entry_init,
                                                          NULL,
                                                          NULL,
                                                          NULL};
static const ProtobufCFieldDescriptor bag_fields[] = {
    {"counts", 1, PROTOBUF_C_LABEL_REPEATED, PROTOBUF_C_TYPE_MESSAGE, offsetof(Bag, n_counts),
     offsetof(Bag, counts), &bag_entry_desc, NULL, 0, 0, NULL, NULL},
};
static const unsigned bag_by_name[] = {0};
static const ProtobufCIntRange bag_ranges[] = {{1, 0}, {0, 1}};
static const ProtobufCMessageDescriptor bag_desc = {PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
                                                    "t.Bag",
                                                    "Bag",
                                                    "Bag",
                                                    "t",
                                                    sizeof(Bag),
                                                    1,
                                                    bag_fields,
                                                    bag_by_name,
                                                    1,
                                                    bag_ranges,
                                                    bag_init,
                                                    NULL,
                                                    NULL,
                                                    NULL};

static void test_map(void)
{
    setup();
    Bag b;
    bag_init(&b.base);
    CU_ASSERT_STRING_EQUAL(enc(&b), "{\"counts\":{}}");
    Bag *d = (void *)dec_ok(&bag_desc, "{\"counts\":{\"a\":1,\"b\\\"q\":\"-2\"}}");
    CU_ASSERT_FATAL(d != NULL);
    CU_ASSERT_EQUAL_FATAL(d->n_counts, 2);
    CU_ASSERT_STRING_EQUAL(d->counts[0]->key, "a");
    CU_ASSERT_EQUAL(d->counts[0]->value, 1);
    CU_ASSERT_STRING_EQUAL(d->counts[1]->key, "b\"q");
    CU_ASSERT_EQUAL(d->counts[1]->value, -2);
    CU_ASSERT_STRING_EQUAL(enc(d), "{\"counts\":{\"a\":1,\"b\\\"q\":-2}}");
    roundtrip(&d->base);
    err_info e;
    err_clear(&e);
    ProtobufCMessage *m;
    const char *badj = "{\"counts\":{\"a\":1.5}}";
    CU_ASSERT_EQUAL(pbjson_decode(&bag_desc, badj, strlen(badj), A, &m, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_STRING_EQUAL(e.violations[0].field, "counts.a");
    err_clear(&e);
    badj = "{\"counts\":[1]}";
    CU_ASSERT_EQUAL(pbjson_decode(&bag_desc, badj, strlen(badj), A, &m, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.violations[0].description, "map"));
}

static void test_merge(void)
{
    setup();
    User__V1__User *u =
        (void *)dec_ok(&user__v1__user__descriptor,
                       "{\"id\":\"a\",\"email\":\"e\",\"create_time\":\"2023-11-14T22:13:20Z\"}");
    err_info e;
    err_clear(&e);
    const char *patch = "{\"email\":\"f\",\"createTime\":\"1970-01-01T00:00:01Z\",\"id\":null}";
    CU_ASSERT_EQUAL(pbjson_merge(&u->base, patch, strlen(patch), A, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(u->id, "a"); /* null leaves it alone */
    CU_ASSERT_STRING_EQUAL(u->email, "f");
    CU_ASSERT_EQUAL(u->create_time->seconds, 1);
}

static void test_set_path(void)
{
    setup();
    err_info e;
    User__V1__ListUsersRequest l = USER__V1__LIST_USERS_REQUEST__INIT;
    err_clear(&e);
    CU_ASSERT_EQUAL(pbjson_set_path(&l.base, "page_size", "20", A, &e), ERR_OK);
    CU_ASSERT_EQUAL(l.page_size, 20);
    CU_ASSERT_EQUAL(pbjson_set_path(&l.base, "pageToken", "abc", A, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(l.page_token, "abc");
    CU_ASSERT_EQUAL(pbjson_set_path(&l.base, "show_deleted", "true", A, &e), ERR_OK);
    CU_ASSERT_TRUE(l.show_deleted);
    CU_ASSERT_EQUAL(pbjson_set_path(&l.base, "show_deleted", "false", A, &e), ERR_OK);
    CU_ASSERT_FALSE(l.show_deleted);
    CU_ASSERT_EQUAL(e.code, ERR_OK);

    static const struct {
        const char *path, *text, *why;
    } bad[] = {
        {"page_size", "x", "not an integer"}, {"page_size", "99999999999", "out of range"},
        {"page_size", "", "not an integer"},  {"show_deleted", "yes", "true or false"},
        {"nope", "1", "unknown field"},       {"page_size.x", "1", "unknown field"},
        {"filter", "\xff\xfe", "UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        CU_ASSERT_EQUAL(pbjson_set_path(&l.base, bad[i].path, bad[i].text, A, &e),
                        ERR_INVALID_ARGUMENT);
        bool ok = e.nviolations == 1 && strcmp(e.violations[0].field, bad[i].path) == 0 &&
                  strstr(e.violations[0].description, bad[i].why);
        if (!ok)
            fprintf(stderr, "\n  set_path %s=%s: %s\n", bad[i].path, bad[i].text,
                    e.nviolations ? e.violations[0].description : "-");
        CU_ASSERT_TRUE(ok);
    }
    err_clear(&e);
    CU_ASSERT_EQUAL(pbjson_set_path(&l.base, "", "1", A, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(l.page_size, 20); /* failed sets change nothing */

    User__V1__BatchGetUsersRequest b = USER__V1__BATCH_GET_USERS_REQUEST__INIT;
    err_clear(&e);
    CU_ASSERT_EQUAL(pbjson_set_path(&b.base, "ids", "a", A, &e), ERR_OK);
    CU_ASSERT_EQUAL(pbjson_set_path(&b.base, "ids", "b", A, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(b.n_ids, 2);
    CU_ASSERT_STRING_EQUAL(b.ids[0], "a");
    CU_ASSERT_STRING_EQUAL(b.ids[1], "b");

    User__V1__UpdateUserRequest up = USER__V1__UPDATE_USER_REQUEST__INIT;
    CU_ASSERT_EQUAL(pbjson_set_path(&up.base, "user.id", "u-1", A, &e), ERR_OK);
    CU_ASSERT_FATAL(up.user != NULL);
    CU_ASSERT_STRING_EQUAL(up.user->id, "u-1");
    CU_ASSERT_STRING_EQUAL(up.user->email, ""); /* created with protobuf_c_message_init */
    CU_ASSERT_EQUAL(pbjson_set_path(&up.base, "user.status", "USER_STATUS_DISABLED", A, &e),
                    ERR_OK);
    CU_ASSERT_EQUAL(up.user->status, USER__V1__USER_STATUS__USER_STATUS_DISABLED);
    CU_ASSERT_EQUAL(pbjson_set_path(&up.base, "user.status", "1", A, &e), ERR_OK);
    CU_ASSERT_EQUAL(up.user->status, USER__V1__USER_STATUS__USER_STATUS_ACTIVE);
    CU_ASSERT_EQUAL(pbjson_set_path(&up.base, "user.createTime", "2023-11-14T22:13:20Z", A, &e),
                    ERR_OK);
    CU_ASSERT_EQUAL(up.user->create_time->seconds, 1700000000);
    CU_ASSERT_EQUAL(pbjson_set_path(&up.base, "update_mask", "displayName,status", A, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(up.update_mask->n_paths, 2);
    CU_ASSERT_STRING_EQUAL(up.update_mask->paths[0], "display_name");
    CU_ASSERT_EQUAL(e.code, ERR_OK);
    err_clear(&e);
    CU_ASSERT_EQUAL(pbjson_set_path(&up.base, "user", "x", A, &e), ERR_INVALID_ARGUMENT);
    err_clear(&e);
    CU_ASSERT_EQUAL(pbjson_set_path(&up.base, "user.status", "NOPE", A, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_STRING_EQUAL(e.violations[0].field, "user.status");
    err_clear(&e);
    CU_ASSERT_EQUAL(pbjson_set_path(&up.base, "user.status", "USER_STATUS_ACTIVE.x", A, &e),
                    ERR_INVALID_ARGUMENT);
}

static void test_present_fields(void)
{
    setup();
    const char *body = "{\"status\":\"USER_STATUS_ACTIVE\",\"displayName\":\"x\",\"bogus\":1,"
                       "\"delete_time\":null}";
    const char **f = pbjson_present_fields(&user__v1__user__descriptor, body, strlen(body), A);
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_STRING_EQUAL(f[0], "display_name");
    CU_ASSERT_STRING_EQUAL(f[1], "status");
    CU_ASSERT_STRING_EQUAL(f[2], "delete_time");
    CU_ASSERT_PTR_NULL(f[3]);
    f = pbjson_present_fields(&user__v1__user__descriptor, "{}", 2, A);
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_PTR_NULL(f[0]);
    CU_ASSERT_PTR_NULL(pbjson_present_fields(&user__v1__user__descriptor, "[1]", 3, A));
    CU_ASSERT_PTR_NULL(pbjson_present_fields(&user__v1__user__descriptor, "{", 1, A));

    CU_ASSERT_STRING_EQUAL(pbjson_camel("display_name", A), "displayName");
    CU_ASSERT_STRING_EQUAL(pbjson_camel("id", A), "id");
    CU_ASSERT_STRING_EQUAL(pbjson_camel("refresh_expires_in", A), "refreshExpiresIn");
}

/* Mutations of valid documents plus random bytes: only OK or INVALID_ARGUMENT, never a crash
 * (ASan/UBSan in the sanitizer build), and anything accepted encodes again. */
static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static void test_fuzz(void)
{
    static const char *const seeds[] = {
        "{\"id\":\"x\",\"email\":\"a@b\",\"status\":\"USER_STATUS_ACTIVE\",\"create_time\":"
        "\"2023-11-14T22:13:20.5Z\",\"etag\":\"e\"}",
        "{\"user\":{\"id\":\"u\",\"status\":2},\"update_mask\":\"displayName,status\"}",
        "{\"code\":3,\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\","
        "\"field_violations\":[{\"field\":\"a\",\"description\":\"b\"}]},{\"@type\":"
        "\"type.googleapis.com/google.rpc.RetryInfo\",\"retry_delay\":\"1.5s\"}]}",
        "{\"name\":\"r\",\"permissions\":[\"a\",\"b\"],\"inherits\":[\"c\"],\"builtin\":true}",
        "{\"iat\":\"1\",\"exp\":2,\"sub\":\"\\u00e9\"}",
        "{\"page_size\":10,\"show_deleted\":false,\"filter\":\"x\"}",
    };
    const ProtobufCMessageDescriptor *descs[] = {&user__v1__user__descriptor,
                                                 &user__v1__update_user_request__descriptor,
                                                 &google__rpc__status__descriptor,
                                                 &permission__v1__role__descriptor,
                                                 &auth__v1__claims__descriptor,
                                                 &user__v1__list_users_request__descriptor,
                                                 &auth__v1__register_response__descriptor};
    static const char tokens[] = "{}[]\",:0123456789.-+eE\\ntrufalsenul \xff\xc3\x80@/";
    size_t nseeds = sizeof seeds / sizeof seeds[0], ndescs = sizeof descs / sizeof descs[0];
    char buf[600];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t accepted = 0, rejected = 0;
    for (int it = 0; it < 10000; it++) {
        size_t n;
        if (it % 10 == 9) { /* pure random bytes */
            n = rnd() % 64;
            for (size_t i = 0; i < n; i++)
                buf[i] = (char)rnd();
        } else {
            const char *s = seeds[rnd() % nseeds];
            n = strlen(s);
            memcpy(buf, s, n);
            int muts = 1 + (int)(rnd() % 4);
            for (int k = 0; k < muts && n > 0; k++) {
                size_t pos = rnd() % n;
                switch (rnd() % 4) {
                case 0: /* replace */
                    buf[pos] = tokens[rnd() % (sizeof tokens - 1)];
                    break;
                case 1: /* delete */
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    n--;
                    break;
                case 2: /* insert */
                    if (n + 1 < sizeof buf) {
                        memmove(buf + pos + 1, buf + pos, n - pos);
                        buf[pos] = tokens[rnd() % (sizeof tokens - 1)];
                        n++;
                    }
                    break;
                default: /* truncate */
                    n = pos;
                }
            }
        }
        arena *a = arena_new(0);
        err_info e;
        err_clear(&e);
        ProtobufCMessage *m = NULL;
        const ProtobufCMessageDescriptor *d = descs[rnd() % ndescs];
        err_code rc = pbjson_decode(d, buf, n, a, &m, &e);
        CU_ASSERT(rc == ERR_OK || rc == ERR_INVALID_ARGUMENT);
        if (rc == ERR_OK) {
            accepted++;
            CU_ASSERT_PTR_NOT_NULL(pbjson_encode(m, NULL, a, NULL));
            CU_ASSERT(protobuf_c_message_check(m));
        } else {
            rejected++;
            CU_ASSERT(e.nviolations >= 1);
        }
        /* The same bytes as a path/query parameter value. */
        buf[n < sizeof buf ? n : sizeof buf - 1] = '\0';
        User__V1__UpdateUserRequest up = USER__V1__UPDATE_USER_REQUEST__INIT;
        static const char *const params[] = {"user.id", "user.status", "user.create_time",
                                             "update_mask", "user.etag"};
        err_clear(&e);
        rc = pbjson_set_path(&up.base, params[rnd() % 5], buf, a, &e);
        CU_ASSERT(rc == ERR_OK || rc == ERR_INVALID_ARGUMENT);
        arena_free(a);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, " [fuzz: %zu accepted, %zu rejected, %.2fs] ", accepted, rejected, secs);
    CU_ASSERT(accepted > 50 && rejected > 500); /* the mutations exercise both paths */
    CU_ASSERT(secs < 2.0);
}

int main(void)
{
    static const ts_case cases[] = {{"encode User", test_encode_user},
                                    {"encode timestamps and durations", test_encode_timestamps},
                                    {"encode nested and well-known", test_encode_nested_and_wkt},
                                    {"encode Any", test_encode_any},
                                    {"decode", test_decode_user},
                                    {"decode Any", test_decode_any},
                                    {"decode errors", test_decode_errors},
                                    {"round trips", test_roundtrip},
                                    {"map fields", test_map},
                                    {"merge", test_merge},
                                    {"set_path", test_set_path},
                                    {"present fields", test_present_fields},
                                    {"fuzz", test_fuzz},
                                    {NULL, NULL}};
    int rc = ts_main("pbjson", cases);
    arena_free(A);
    return rc;
}
