/* Integration tests of user.v1.UserService: spawns user-service against a fresh database and Redis
 * db 10, and checks every RPC, validation, races, pagination, etags, cache invalidation, audit,
 * the outbox relay, and Redis going away mid-test. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cache.h"
#include "common/db.h"
#include "common/rpc_client.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "test_support.h"
#include "user/v1/user.pb-c.h"

#define REDIS_DB 10
#define M(name) "/user.v1.UserService/" name

static int g_pid = -1;
static rpc_client *g_cli;
static db_pool *g_db;
static cache *g_redis;
static char g_log[512];
static unsigned g_seq;

/* ---- helpers ------------------------------------------------------------------------------- */

static const char *uniq(arena *a, const char *prefix)
{
    return arena_printf(a, "%s%u-%ld@example.com", prefix, __atomic_add_fetch(&g_seq, 1, 0),
                        (long)getpid());
}

static err_code call(const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *rd, const rpc_metadata *md, arena *a,
                     ProtobufCMessage **resp, err_info *e)
{
    err_clear(e);
    rpc_call_opts o = {.md = md};
    return rpc_client_call(g_cli, method, req, rd, &o, a, resp, e);
}

static err_code create_user(arena *a, const char *email, const char *name, User__V1__User **out,
                            err_info *e)
{
    User__V1__CreateUserRequest req = USER__V1__CREATE_USER_REQUEST__INIT;
    req.email = (char *)email;
    req.display_name = (char *)name;
    ProtobufCMessage *r = NULL;
    err_code rc = call(M("CreateUser"), &req.base, &user__v1__user__descriptor, NULL, a, &r, e);
    if (out)
        *out = rc ? NULL : (User__V1__User *)r;
    return rc;
}

static User__V1__User *must_create(arena *a, const char *email, const char *name)
{
    err_info e;
    User__V1__User *u = NULL;
    err_code rc = create_user(a, email, name, &u, &e);
    if (rc)
        fprintf(stderr, "CreateUser(%s): %s %s\n", email, err_str(rc), e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, ERR_OK);
    return u;
}

static err_code get_user(arena *a, const char *id, User__V1__User **out, err_info *e)
{
    User__V1__GetUserRequest req = USER__V1__GET_USER_REQUEST__INIT;
    req.id = (char *)id;
    ProtobufCMessage *r = NULL;
    err_code rc = call(M("GetUser"), &req.base, &user__v1__user__descriptor, NULL, a, &r, e);
    if (out)
        *out = rc ? NULL : (User__V1__User *)r;
    return rc;
}

static err_code update_user(arena *a, const char *id, const char *etag, const char *path,
                            const char *name, int status, const char *email, const rpc_metadata *md,
                            User__V1__User **out, err_info *e)
{
    User__V1__User u = USER__V1__USER__INIT;
    u.id = (char *)id;
    u.etag = (char *)(etag ? etag : "");
    u.display_name = (char *)(name ? name : "");
    u.email = (char *)(email ? email : "");
    u.status = (User__V1__UserStatus)status;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[1] = {(char *)path};
    if (path) {
        mask.n_paths = 1;
        mask.paths = paths;
    }
    User__V1__UpdateUserRequest req = USER__V1__UPDATE_USER_REQUEST__INIT;
    req.user = &u;
    req.update_mask = &mask;
    ProtobufCMessage *r = NULL;
    err_code rc = call(M("UpdateUser"), &req.base, &user__v1__user__descriptor, md, a, &r, e);
    if (out)
        *out = rc ? NULL : (User__V1__User *)r;
    return rc;
}

static err_code delete_user(arena *a, const char *id, const char *etag, const rpc_metadata *md,
                            err_info *e)
{
    User__V1__DeleteUserRequest req = USER__V1__DELETE_USER_REQUEST__INIT;
    req.id = (char *)id;
    req.etag = (char *)(etag ? etag : "");
    ProtobufCMessage *r = NULL;
    return call(M("DeleteUser"), &req.base, &google__protobuf__empty__descriptor, md, a, &r, e);
}

static err_code list_users(arena *a, int size, const char *token, const char *filter, bool deleted,
                           User__V1__ListUsersResponse **out, err_info *e)
{
    User__V1__ListUsersRequest req = USER__V1__LIST_USERS_REQUEST__INIT;
    req.page_size = size;
    req.page_token = (char *)(token ? token : "");
    req.filter = (char *)(filter ? filter : "");
    req.show_deleted = deleted;
    ProtobufCMessage *r = NULL;
    err_code rc =
        call(M("ListUsers"), &req.base, &user__v1__list_users_response__descriptor, NULL, a, &r, e);
    *out = rc ? NULL : (User__V1__ListUsersResponse *)r;
    return rc;
}

static bool has_violation(const err_info *e, const char *field)
{
    for (size_t i = 0; i < e->nviolations; i++)
        if (strcmp(e->violations[i].field, field) == 0)
            return true;
    return false;
}

/* One value from SQL (as user_svc in t_user); "" when no row. Copied into a. */
static const char *sql1(arena *a, const char *sql, int n, const char *const *p)
{
    db_conn *c = NULL;
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL_FATAL(db_acquire(g_db, 0, &c, &e), ERR_OK);
    db_result *r = NULL;
    err_code rc = db_exec(c, sql, n, p, &r, &e);
    if (rc)
        fprintf(stderr, "sql failed: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, ERR_OK);
    const char *v = arena_strdup(a, db_result_rows(r) ? db_result_get(r, 0, 0) : "");
    db_result_free(r);
    db_release(g_db, c);
    return v;
}

static long long redis_int(const char *cmd, const char *arg)
{
    const char *argv[] = {cmd, arg};
    size_t lens[] = {strlen(cmd), strlen(arg)};
    cache_reply *r = NULL;
    err_info e;
    err_clear(&e);
    if (cache_command(g_redis, 2, argv, lens, &r, &e) != ERR_OK)
        return -1;
    long long v = cache_reply_kind(r) == CACHE_REPLY_INTEGER ? cache_reply_int(r) : -2;
    cache_reply_free(r);
    return v;
}

/* Events in events.user for user_id of the given type, counted from XRANGE. -1 on Redis error. */
static int count_events(const char *user_id, const char *type)
{
    const char *argv[] = {"XRANGE", "events.user", "-", "+"};
    size_t lens[4];
    for (int i = 0; i < 4; i++)
        lens[i] = strlen(argv[i]);
    cache_reply *r = NULL;
    err_info e;
    err_clear(&e);
    if (cache_command(g_redis, 4, argv, lens, &r, &e) != ERR_OK)
        return -1;
    int n = 0;
    for (size_t i = 0; cache_reply_kind(r) == CACHE_REPLY_ARRAY && i < cache_reply_len(r); i++) {
        const cache_reply *fields = cache_reply_at(cache_reply_at(r, i), 1);
        const char *t = NULL, *u = NULL, *ev = NULL, *at = NULL;
        for (size_t j = 0; j + 1 < cache_reply_len(fields); j += 2) {
            size_t l;
            const char *k = cache_reply_str(cache_reply_at(fields, j), &l);
            const char *v = cache_reply_str(cache_reply_at(fields, j + 1), &l);
            if (strcmp(k, "type") == 0)
                t = v;
            else if (strcmp(k, "user_id") == 0)
                u = v;
            else if (strcmp(k, "event_id") == 0)
                ev = v;
            else if (strcmp(k, "occurred_at") == 0)
                at = v;
        }
        if (t && u && strcmp(u, user_id) == 0 && strcmp(t, type) == 0) {
            CU_ASSERT_TRUE(ev && strlen(ev) == 36);
            CU_ASSERT_TRUE(at && strlen(at) >= 20 && at[strlen(at) - 1] == 'Z' && at[10] == 'T');
            n++;
        }
    }
    cache_reply_free(r);
    return n;
}

static long unsent_for(arena *a, const char *user_id)
{
    const char *p[] = {user_id};
    return strtol(
        sql1(a, "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND user_id = $1::uuid", 1, p),
        NULL, 10);
}

static void wait_outbox_drained(arena *a, int timeout_ms)
{
    for (int w = 0; w < timeout_ms; w += 100) {
        if (strcmp(sql1(a, "SELECT count(*) FROM outbox WHERE sent_at IS NULL", 0, NULL), "0") == 0)
            return;
        usleep(100000);
    }
    CU_FAIL("outbox not drained in time");
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_create_get_happy(void)
{
    arena *a = arena_new(0);
    const char *email = uniq(a, "Happy");
    User__V1__User *u = must_create(a, arena_printf(a, "  %s ", email), "Happy Person");
    char *lower = arena_strdup(a, email);
    for (char *p = lower; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    CU_ASSERT_STRING_EQUAL(u->email, lower);
    CU_ASSERT_STRING_EQUAL(u->display_name, "Happy Person");
    CU_ASSERT_EQUAL(u->status, USER__V1__USER_STATUS__USER_STATUS_ACTIVE);
    CU_ASSERT_EQUAL(strlen(u->id), 36);
    CU_ASSERT_TRUE(u->etag[0] != '\0');
    CU_ASSERT_PTR_NOT_NULL(u->create_time);
    CU_ASSERT_PTR_NOT_NULL(u->update_time);
    CU_ASSERT_PTR_NULL(u->delete_time);
    CU_ASSERT_TRUE(u->create_time && u->create_time->seconds > 1600000000);

    err_info e;
    User__V1__User *g = NULL;
    CU_ASSERT_EQUAL(get_user(a, u->id, &g, &e), ERR_OK); /* miss → fill */
    CU_ASSERT_TRUE(g && strcmp(g->email, lower) == 0 && strcmp(g->etag, u->etag) == 0);
    CU_ASSERT_EQUAL(redis_int("EXISTS", arena_printf(a, "user:%s", u->id)), 1);
    CU_ASSERT_TRUE(redis_int("TTL", arena_printf(a, "user:%s", u->id)) > 0);
    g = NULL;
    CU_ASSERT_EQUAL(get_user(a, u->id, &g, &e), ERR_OK); /* hit */
    CU_ASSERT_TRUE(g && strcmp(g->display_name, "Happy Person") == 0 &&
                   g->create_time->seconds == u->create_time->seconds &&
                   g->create_time->nanos == u->create_time->nanos);

    User__V1__GetUserByEmailRequest br = USER__V1__GET_USER_BY_EMAIL_REQUEST__INIT;
    br.email = arena_printf(a, " %s", email); /* mixed case, spaces: normalised the same way */
    ProtobufCMessage *r = NULL;
    CU_ASSERT_EQUAL(
        call(M("GetUserByEmail"), &br.base, &user__v1__user__descriptor, NULL, a, &r, &e), ERR_OK);
    CU_ASSERT_TRUE(r && strcmp(((User__V1__User *)r)->id, u->id) == 0);

    CU_ASSERT_EQUAL(get_user(a, "00000000-0000-4000-8000-000000000000", NULL, &e), ERR_NOT_FOUND);
    br.email = "nobody-here@example.com";
    CU_ASSERT_EQUAL(
        call(M("GetUserByEmail"), &br.base, &user__v1__user__descriptor, NULL, a, &r, &e),
        ERR_NOT_FOUND);
    /* Duplicate email (other case) → ALREADY_EXISTS. */
    CU_ASSERT_EQUAL(create_user(a, lower, "Twin", NULL, &e), ERR_ALREADY_EXISTS);
    arena_free(a);
}

static void test_validation(void)
{
    arena *a = arena_new(0);
    err_info e;
    ProtobufCMessage *r = NULL;
    CU_ASSERT_EQUAL(create_user(a, "not-an-email", "", NULL, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "email"));
    CU_ASSERT_TRUE(has_violation(&e, "display_name"));
    CU_ASSERT_EQUAL(create_user(a, "ok@example.com", "bad\x01name", NULL, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "display_name") && !has_violation(&e, "email"));
    CU_ASSERT_EQUAL(create_user(a, "a b@example.com", "x", NULL, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "email"));

    CU_ASSERT_EQUAL(get_user(a, "42", NULL, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "id"));
    CU_ASSERT_EQUAL(delete_user(a, "x'; DROP TABLE users; --", NULL, NULL, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "id"));

    User__V1__ListUsersResponse *lr;
    CU_ASSERT_EQUAL(list_users(a, -1, NULL, NULL, false, &lr, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "page_size"));
    CU_ASSERT_EQUAL(list_users(a, 10, NULL, "role=admin", false, &lr, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "filter"));
    CU_ASSERT_EQUAL(list_users(a, 10, "garbage-token", NULL, false, &lr, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "page_token"));

    User__V1__User *u = must_create(a, uniq(a, "valid"), "V");
    CU_ASSERT_EQUAL(update_user(a, u->id, NULL, NULL, "x", 0, NULL, NULL, NULL, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "update_mask"));
    CU_ASSERT_EQUAL(update_user(a, u->id, NULL, "id", "x", 0, NULL, NULL, NULL, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "update_mask"));
    CU_ASSERT_EQUAL(update_user(a, u->id, NULL, "status", NULL, 0, NULL, NULL, NULL, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "user.status"));
    CU_ASSERT_EQUAL(update_user(a, u->id, NULL, "email", NULL, 0, "nope", NULL, NULL, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "user.email"));
    CU_ASSERT_EQUAL(update_user(a, "bad", NULL, "displayName", "ok", 0, NULL, NULL, NULL, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "user.id"));

    User__V1__BatchGetUsersRequest bq = USER__V1__BATCH_GET_USERS_REQUEST__INIT;
    char *ids[4] = {u->id, "nope", u->id, "also-bad"};
    bq.ids = ids;
    bq.n_ids = 4;
    CU_ASSERT_EQUAL(call(M("BatchGetUsers"), &bq.base,
                         &user__v1__batch_get_users_response__descriptor, NULL, a, &r, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "ids[1]") && has_violation(&e, "ids[3]") &&
                   !has_violation(&e, "ids[0]"));
    arena_free(a);
}

static void test_batch_get(void)
{
    arena *a = arena_new(0);
    err_info e;
    User__V1__User *u1 = must_create(a, uniq(a, "batch"), "B1");
    User__V1__User *u2 = must_create(a, uniq(a, "batch"), "B2");
    User__V1__User *u3 = must_create(a, uniq(a, "batch"), "B3");
    CU_ASSERT_EQUAL(delete_user(a, u2->id, NULL, NULL, &e), ERR_OK);
    User__V1__BatchGetUsersRequest bq = USER__V1__BATCH_GET_USERS_REQUEST__INIT;
    char *ids[] = {u3->id, "00000000-0000-4000-8000-000000000001", u1->id, u2->id, u3->id};
    bq.ids = ids;
    bq.n_ids = 5;
    ProtobufCMessage *r = NULL;
    CU_ASSERT_EQUAL_FATAL(call(M("BatchGetUsers"), &bq.base,
                               &user__v1__batch_get_users_response__descriptor, NULL, a, &r, &e),
                          ERR_OK);
    User__V1__BatchGetUsersResponse *br = (User__V1__BatchGetUsersResponse *)r;
    CU_ASSERT_EQUAL_FATAL(br->n_users, 2); /* missing and deleted left out, duplicates once */
    CU_ASSERT_STRING_EQUAL(br->users[0]->id, u3->id); /* request order */
    CU_ASSERT_STRING_EQUAL(br->users[1]->id, u1->id);
    CU_ASSERT_STRING_EQUAL(br->users[1]->display_name, "B1");

    /* 1000 ids are fine, 1001 are refused. */
    char **many = arena_alloc(a, sizeof *many * 1001);
    for (int i = 0; i < 1001; i++)
        many[i] = arena_printf(a, "00000000-0000-4000-8000-%012d", i);
    many[500] = u1->id;
    bq.ids = many;
    bq.n_ids = 1000;
    CU_ASSERT_EQUAL(call(M("BatchGetUsers"), &bq.base,
                         &user__v1__batch_get_users_response__descriptor, NULL, a, &r, &e),
                    ERR_OK);
    CU_ASSERT_TRUE(r && ((User__V1__BatchGetUsersResponse *)r)->n_users == 1);
    bq.n_ids = 1001;
    CU_ASSERT_EQUAL(call(M("BatchGetUsers"), &bq.base,
                         &user__v1__batch_get_users_response__descriptor, NULL, a, &r, &e),
                    ERR_INVALID_ARGUMENT);
    CU_ASSERT_TRUE(has_violation(&e, "ids"));
    bq.n_ids = 0;
    CU_ASSERT_EQUAL(call(M("BatchGetUsers"), &bq.base,
                         &user__v1__batch_get_users_response__descriptor, NULL, a, &r, &e),
                    ERR_OK);
    CU_ASSERT_TRUE(r && ((User__V1__BatchGetUsersResponse *)r)->n_users == 0);
    arena_free(a);
}

/* Email race: two CreateUser calls with one email at the same moment, many rounds. */
typedef struct race_arg {
    pthread_barrier_t *bar;
    const char *email;
    err_code rc;
} race_arg;

static void *race_thread(void *p)
{
    race_arg *ra = p;
    arena *a = arena_new(0);
    err_info e;
    pthread_barrier_wait(ra->bar);
    ra->rc = create_user(a, ra->email, "Racer", NULL, &e);
    arena_free(a);
    return NULL;
}

static void test_email_race(void)
{
    arena *a = arena_new(0);
    int rounds = 25, bad = 0;
    for (int i = 0; i < rounds; i++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        const char *email = uniq(a, "race");
        race_arg r1 = {&bar, email, -1}, r2 = {&bar, email, -1};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, race_thread, &r1);
        pthread_create(&t2, NULL, race_thread, &r2);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        pthread_barrier_destroy(&bar);
        bool ok = (r1.rc == ERR_OK && r2.rc == ERR_ALREADY_EXISTS) ||
                  (r2.rc == ERR_OK && r1.rc == ERR_ALREADY_EXISTS);
        if (!ok) {
            fprintf(stderr, "race round %d: %s / %s\n", i, err_str(r1.rc), err_str(r2.rc));
            bad++;
        }
        const char *p[] = {email};
        CU_ASSERT_STRING_EQUAL(
            sql1(a, "SELECT count(*) FROM users WHERE email = $1 AND delete_time IS NULL", 1, p),
            "1");
    }
    CU_ASSERT_EQUAL(bad, 0);
    arena_free(a);
}

/* Pagination while another thread inserts rows that match the same filter. */
static volatile int g_insert_stop;
static void *inserter(void *p)
{
    (void)p;
    arena *a = arena_new(0);
    err_info e;
    while (!__atomic_load_n(&g_insert_stop, __ATOMIC_ACQUIRE)) {
        create_user(a, uniq(a, "pgc-"), "Concurrent", NULL, &e);
        arena_reset(a);
    }
    arena_free(a);
    return NULL;
}

static void test_pagination_concurrent(void)
{
    arena *a = arena_new(0);
    enum { SEED = 90 };
    char *seed[SEED];
    for (int i = 0; i < SEED; i++)
        seed[i] = must_create(a, uniq(a, "pgc-"), "Seed")->id;
    g_insert_stop = 0;
    pthread_t t;
    pthread_create(&t, NULL, inserter, NULL);
    const char *token = "";
    size_t cap = 4096, n = 0;
    char **seen = arena_alloc(a, sizeof *seen * cap);
    int pages = 0;
    err_info e;
    do {
        User__V1__ListUsersResponse *lr = NULL;
        err_code rc = list_users(a, 7, token, "email_prefix=pgc-", false, &lr, &e);
        CU_ASSERT_EQUAL_FATAL(rc, ERR_OK);
        CU_ASSERT_TRUE(lr->n_users <= 7);
        for (size_t i = 0; i < lr->n_users && n < cap; i++) {
            CU_ASSERT_EQUAL(strncmp(lr->users[i]->email, "pgc-", 4), 0);
            seen[n++] = lr->users[i]->id;
        }
        token = lr->next_page_token;
        pages++;
        usleep(2000);
    } while (*token && pages < 500);
    __atomic_store_n(&g_insert_stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CU_ASSERT_TRUE(pages > SEED / 7);
    int dups = 0, missing = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(seen[i], seen[j]) == 0)
                dups++;
    for (int s = 0; s < SEED; s++) {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(seen[i], seed[s]) == 0;
        missing += !found;
    }
    CU_ASSERT_EQUAL(dups, 0);
    CU_ASSERT_EQUAL(missing, 0);
    /* The same listing with page_size 0 (default 50) and 5000 (capped at 1000). */
    User__V1__ListUsersResponse *lr = NULL;
    CU_ASSERT_EQUAL(list_users(a, 0, NULL, "email_prefix=pgc-", false, &lr, &e), ERR_OK);
    CU_ASSERT_TRUE(lr && lr->n_users == 50 && lr->next_page_token[0]);
    CU_ASSERT_EQUAL(list_users(a, 5000, NULL, "email_prefix=pgc-", false, &lr, &e), ERR_OK);
    CU_ASSERT_TRUE(lr && lr->n_users >= SEED && lr->n_users <= 1000);
    arena_free(a);
}

static void test_filters_with_cursor(void)
{
    arena *a = arena_new(0);
    err_info e;
    enum { N = 9 };
    char *disabled[N];
    int nd = 0;
    for (int i = 0; i < N; i++) {
        User__V1__User *u = must_create(a, uniq(a, "flt-"), "F");
        if (i % 3 != 0) {
            User__V1__User *d = NULL;
            CU_ASSERT_EQUAL(update_user(a, u->id, u->etag, "status", NULL,
                                        USER__V1__USER_STATUS__USER_STATUS_DISABLED, NULL, NULL, &d,
                                        &e),
                            ERR_OK);
            disabled[nd++] = u->id;
        }
    }
    must_create(a, uniq(a, "other-"), "O");
    const char *filter = "status=DISABLED AND email_prefix=FLT-";
    const char *token = "";
    int got = 0, pages = 0;
    do {
        User__V1__ListUsersResponse *lr = NULL;
        CU_ASSERT_EQUAL_FATAL(list_users(a, 2, token, filter, false, &lr, &e), ERR_OK);
        for (size_t i = 0; i < lr->n_users; i++) {
            CU_ASSERT_EQUAL(lr->users[i]->status, USER__V1__USER_STATUS__USER_STATUS_DISABLED);
            CU_ASSERT_EQUAL(strncmp(lr->users[i]->email, "flt-", 4), 0);
            CU_ASSERT_TRUE(got < nd && strcmp(lr->users[i]->id, disabled[got]) == 0);
            got++;
        }
        if (pages == 0 && lr->next_page_token[0]) {
            /* The token is bound to its filter: another filter or show_deleted → refused. */
            User__V1__ListUsersResponse *x = NULL;
            CU_ASSERT_EQUAL(list_users(a, 2, lr->next_page_token, "status=ACTIVE", false, &x, &e),
                            ERR_INVALID_ARGUMENT);
            CU_ASSERT_TRUE(has_violation(&e, "page_token"));
            CU_ASSERT_EQUAL(list_users(a, 2, lr->next_page_token, filter, true, &x, &e),
                            ERR_INVALID_ARGUMENT);
            /* Tampered token → INVALID_ARGUMENT, never INTERNAL. */
            char *t = arena_strdup(a, lr->next_page_token);
            t[5] = t[5] == 'A' ? 'B' : 'A';
            CU_ASSERT_EQUAL(list_users(a, 2, t, filter, false, &x, &e), ERR_INVALID_ARGUMENT);
            CU_ASSERT_TRUE(has_violation(&e, "page_token"));
        }
        token = lr->next_page_token;
        pages++;
    } while (*token && pages < 20);
    CU_ASSERT_EQUAL(got, nd);
    CU_ASSERT_EQUAL(pages, (nd + 1) / 2);
    arena_free(a);
}

static void test_stale_etag(void)
{
    arena *a = arena_new(0);
    err_info e;
    User__V1__User *u = must_create(a, uniq(a, "etag"), "Before");
    User__V1__User *u2 = NULL;
    CU_ASSERT_EQUAL_FATAL(
        update_user(a, u->id, u->etag, "display_name", "After", 0, NULL, NULL, &u2, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(u2->display_name, "After");
    CU_ASSERT_STRING_NOT_EQUAL(u2->etag, u->etag);
    CU_ASSERT_STRING_EQUAL(u2->email, u->email); /* not in the mask: unchanged */
    CU_ASSERT_EQUAL(
        update_user(a, u->id, u->etag, "display_name", "Again", 0, NULL, NULL, NULL, &e),
        ERR_ABORTED);
    CU_ASSERT_EQUAL(
        update_user(a, u->id, "garbage", "display_name", "Again", 0, NULL, NULL, NULL, &e),
        ERR_ABORTED);
    CU_ASSERT_EQUAL(delete_user(a, u->id, u->etag, NULL, &e), ERR_ABORTED);
    User__V1__User *u3 = NULL;
    CU_ASSERT_EQUAL(update_user(a, u->id, "", "display_name", "NoCheck", 0, NULL, NULL, &u3, &e),
                    ERR_OK);
    CU_ASSERT_TRUE(u3 && strcmp(u3->display_name, "NoCheck") == 0);
    /* Email change: to a taken email → ALREADY_EXISTS; to a free one → OK. */
    User__V1__User *other = must_create(a, uniq(a, "etag"), "Other");
    CU_ASSERT_EQUAL(update_user(a, u->id, NULL, "email", NULL, 0, other->email, NULL, NULL, &e),
                    ERR_ALREADY_EXISTS);
    const char *fresh = uniq(a, "etag-new");
    CU_ASSERT_EQUAL(update_user(a, u->id, u3->etag, "email", NULL, 0, fresh, NULL, &u2, &e),
                    ERR_OK);
    CU_ASSERT_TRUE(u2 && strcmp(u2->email, fresh) == 0);
    CU_ASSERT_EQUAL(update_user(a, "00000000-0000-4000-8000-000000000009", NULL, "display_name",
                                "x", 0, NULL, NULL, NULL, &e),
                    ERR_NOT_FOUND);
    arena_free(a);
}

static void test_cache_invalidation(void)
{
    arena *a = arena_new(0);
    err_info e;
    User__V1__User *u = must_create(a, uniq(a, "cache"), "Name0");
    const char *key = arena_printf(a, "user:%s", u->id);
    for (int i = 1; i <= 15; i++) {
        User__V1__User *g = NULL;
        CU_ASSERT_EQUAL(get_user(a, u->id, &g, &e), ERR_OK);
        CU_ASSERT_EQUAL(redis_int("EXISTS", key), 1);
        const char *name = arena_printf(a, "Name%d", i);
        CU_ASSERT_EQUAL(
            update_user(a, u->id, g ? g->etag : "", "display_name", name, 0, NULL, NULL, NULL, &e),
            ERR_OK);
        CU_ASSERT_EQUAL(redis_int("EXISTS", key), 0); /* deleted, not rewritten */
        CU_ASSERT_EQUAL(get_user(a, u->id, &g, &e), ERR_OK);
        CU_ASSERT_TRUE(g && strcmp(g->display_name, name) == 0);
    }
    /* A status change is visible at once too. */
    User__V1__User *g = NULL;
    CU_ASSERT_EQUAL(update_user(a, u->id, NULL, "status", NULL,
                                USER__V1__USER_STATUS__USER_STATUS_DISABLED, NULL, NULL, NULL, &e),
                    ERR_OK);
    CU_ASSERT_EQUAL(get_user(a, u->id, &g, &e), ERR_OK);
    CU_ASSERT_TRUE(g && g->status == USER__V1__USER_STATUS__USER_STATUS_DISABLED);
    /* A corrupt cache entry is ignored (treated as a miss), never served or fatal. */
    const char *argv[] = {"SET", key, "\xff\xfe garbage"};
    size_t lens[] = {3, strlen(key), 10};
    cache_reply *r = NULL;
    CU_ASSERT_EQUAL(cache_command(g_redis, 3, argv, lens, &r, &e), ERR_OK);
    cache_reply_free(r);
    CU_ASSERT_EQUAL(get_user(a, u->id, &g, &e), ERR_OK);
    CU_ASSERT_TRUE(g && strcmp(g->display_name, "Name15") == 0);
    arena_free(a);
}

static void test_delete_and_reuse(void)
{
    arena *a = arena_new(0);
    err_info e;
    const char *email = uniq(a, "del");
    User__V1__User *u = must_create(a, email, "Doomed");
    CU_ASSERT_EQUAL(get_user(a, u->id, NULL, &e), ERR_OK); /* cached now */
    CU_ASSERT_EQUAL(delete_user(a, u->id, u->etag, NULL, &e), ERR_OK);
    CU_ASSERT_EQUAL(redis_int("EXISTS", arena_printf(a, "user:%s", u->id)), 0);
    CU_ASSERT_EQUAL(get_user(a, u->id, NULL, &e), ERR_NOT_FOUND);
    User__V1__GetUserByEmailRequest br = USER__V1__GET_USER_BY_EMAIL_REQUEST__INIT;
    br.email = (char *)email;
    ProtobufCMessage *r = NULL;
    CU_ASSERT_EQUAL(
        call(M("GetUserByEmail"), &br.base, &user__v1__user__descriptor, NULL, a, &r, &e),
        ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(delete_user(a, u->id, NULL, NULL, &e), ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(update_user(a, u->id, NULL, "display_name", "Zombie", 0, NULL, NULL, NULL, &e),
                    ERR_NOT_FOUND);
    /* The email is free again. */
    User__V1__User *u2 = must_create(a, email, "Reborn");
    CU_ASSERT_STRING_NOT_EQUAL(u2->id, u->id);
    /* Lists: the deleted one only with show_deleted, with its delete_time. */
    const char *filter = arena_printf(a, "email_prefix=\"%s\"", email);
    User__V1__ListUsersResponse *lr = NULL;
    CU_ASSERT_EQUAL_FATAL(list_users(a, 10, NULL, filter, false, &lr, &e), ERR_OK);
    CU_ASSERT_EQUAL(lr->n_users, 1);
    CU_ASSERT_TRUE(lr->n_users == 1 && strcmp(lr->users[0]->id, u2->id) == 0);
    CU_ASSERT_EQUAL_FATAL(list_users(a, 10, NULL, filter, true, &lr, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(lr->n_users, 2);
    CU_ASSERT_STRING_EQUAL(lr->users[0]->id, u->id);
    CU_ASSERT_PTR_NOT_NULL(lr->users[0]->delete_time);
    CU_ASSERT_PTR_NULL(lr->users[1]->delete_time);
    arena_free(a);
}

static void test_audit_rows(void)
{
    arena *a = arena_new(0);
    err_info e;
    User__V1__User *u = must_create(a, uniq(a, "audit"), "Audited"); /* no actor → system */
    rpc_metadata md = {.request_id = "req-user-audit-1",
                       .traceparent = "",
                       .authorization = "",
                       .user_agent = "",
                       .client_ip = "",
                       .actor_id = "actor-42"};
    CU_ASSERT_EQUAL(update_user(a, u->id, NULL, "display_name", "Renamed", 0, NULL, &md, NULL, &e),
                    ERR_OK);
    md.request_id = "req-user-audit-2";
    CU_ASSERT_EQUAL(delete_user(a, u->id, NULL, &md, &e), ERR_OK);
    const char *p[] = {u->id};
    CU_ASSERT_STRING_EQUAL(sql1(a, "SELECT count(*) FROM audit_log WHERE target = $1", 1, p), "3");
    CU_ASSERT_STRING_EQUAL(
        sql1(a, "SELECT actor FROM audit_log WHERE target = $1 AND action = 'user.create'", 1, p),
        "system");
    CU_ASSERT_STRING_EQUAL(
        sql1(a,
             "SELECT actor || '|' || request_id || '|' || array_to_string(changed_fields, ',') "
             "FROM audit_log WHERE target = $1 AND action = 'user.update'",
             1, p),
        "actor-42|req-user-audit-1|display_name");
    CU_ASSERT_STRING_EQUAL(
        sql1(a,
             "SELECT actor || '|' || request_id FROM audit_log WHERE target = $1 AND action = "
             "'user.delete'",
             1, p),
        "actor-42|req-user-audit-2");
    /* Audit and outbox rows come from the same transaction as the change: one of each per write. */
    CU_ASSERT_STRING_EQUAL(
        sql1(a, "SELECT string_agg(type, ',' ORDER BY id) FROM outbox WHERE user_id = $1::uuid", 1,
             p),
        "user.created,user.updated,user.deleted");
    /* A failed write leaves no audit row: a stale etag changes nothing. */
    User__V1__User *v = must_create(a, uniq(a, "audit"), "Kept");
    CU_ASSERT_EQUAL(update_user(a, v->id, "999", "display_name", "No", 0, NULL, NULL, NULL, &e),
                    ERR_ABORTED);
    const char *pv[] = {v->id};
    CU_ASSERT_STRING_EQUAL(sql1(a, "SELECT count(*) FROM audit_log WHERE target = $1", 1, pv), "1");
    /* The service logs one JSON line per RPC with its request id. */
    usleep(200000);
    FILE *f = fopen(g_log, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char line[4096];
    int hits = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "req-user-audit-1") && strstr(line, "UpdateUser"))
            hits++;
    fclose(f);
    CU_ASSERT_TRUE(hits >= 1);
    arena_free(a);
}

static void test_outbox_relay(void)
{
    arena *a = arena_new(0);
    err_info e;
    User__V1__User *u = must_create(a, uniq(a, "evt"), "Evented");
    CU_ASSERT_EQUAL(update_user(a, u->id, NULL, "display_name", "E2", 0, NULL, NULL, NULL, &e),
                    ERR_OK);
    CU_ASSERT_EQUAL(delete_user(a, u->id, NULL, NULL, &e), ERR_OK);
    wait_outbox_drained(a, 10000);
    CU_ASSERT_EQUAL(count_events(u->id, "user.created"), 1);
    CU_ASSERT_EQUAL(count_events(u->id, "user.updated"), 1);
    CU_ASSERT_EQUAL(count_events(u->id, "user.deleted"), 1);
    /* Each outbox row is published once: stream length equals sent rows. */
    long long xlen = redis_int("XLEN", "events.user");
    const char *sent = sql1(a, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL", 0, NULL);
    CU_ASSERT_EQUAL(xlen, strtoll(sent, NULL, 10));
    arena_free(a);
}

static int harness(const char *verb)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "\"%s/tests/support/harness\" %s >/dev/null 2>&1",
             ts_need_env("IDENTITY_SOURCE_DIR"), verb);
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

static void test_redis_down(void)
{
    arena *a = arena_new(0);
    err_info e;
    User__V1__User *before = must_create(a, uniq(a, "down"), "Before");
    CU_ASSERT_EQUAL(get_user(a, before->id, NULL, &e), ERR_OK);
    wait_outbox_drained(a, 10000);
    CU_ASSERT_EQUAL_FATAL(harness("redis-stop"), 0);
    cache_disconnect_thread(g_redis);
    /* Reads still work (from the database). */
    User__V1__User *g = NULL;
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(get_user(a, before->id, &g, &e), ERR_OK);
        CU_ASSERT_TRUE(g && strcmp(g->id, before->id) == 0);
    }
    /* Writes still work; their events wait in the outbox. */
    User__V1__User *during = NULL;
    err_code rc = create_user(a, uniq(a, "down"), "During", &during, &e);
    CU_ASSERT_EQUAL(rc, ERR_OK);
    CU_ASSERT_EQUAL(
        update_user(a, before->id, NULL, "display_name", "Changed", 0, NULL, NULL, NULL, &e),
        ERR_OK);
    CU_ASSERT_EQUAL(get_user(a, before->id, &g, &e), ERR_OK);
    CU_ASSERT_TRUE(g && strcmp(g->display_name, "Changed") == 0);
    usleep(800000);
    if (during)
        CU_ASSERT_EQUAL(unsent_for(a, during->id), 1);
    CU_ASSERT_EQUAL(unsent_for(a, before->id), 1);
    CU_ASSERT_EQUAL_FATAL(harness("redis-start"), 0);
    cache_disconnect_thread(g_redis);
    wait_outbox_drained(a, 20000);
    if (during)
        CU_ASSERT_EQUAL(count_events(during->id, "user.created"), 1);
    CU_ASSERT_EQUAL(count_events(before->id, "user.updated"), 1);
    /* Caching resumes: the updated user is served fresh and cached again. */
    CU_ASSERT_EQUAL(get_user(a, before->id, &g, &e), ERR_OK);
    CU_ASSERT_TRUE(g && strcmp(g->display_name, "Changed") == 0);
    CU_ASSERT_EQUAL(redis_int("EXISTS", arena_printf(a, "user:%s", before->id)), 1);
    arena_free(a);
}

/* ---- setup ----------------------------------------------------------------------------------- */

static void start_service(void)
{
    const char *conninfo = ts_fresh_db("t_user", "user_svc");
    ts_redis_flush(REDIS_DB);
    int port = ts_free_port(), mport = ts_free_port();
    snprintf(g_log, sizeof g_log, "%s/integration_user.log", ts_need_env("IDENTITY_BUILD_DIR"));
    unlink(g_log);
    static char env[10][512];
    snprintf(env[0], sizeof env[0], "LISTEN_ADDR=127.0.0.1:%d", port);
    snprintf(env[1], sizeof env[1], "METRICS_ADDR=127.0.0.1:%d", mport);
    snprintf(env[2], sizeof env[2], "DATABASE_URL=%s", conninfo);
    snprintf(env[3], sizeof env[3], "REDIS_URL=%s", ts_redis_url_db(REDIS_DB));
    snprintf(env[4], sizeof env[4], "PAGE_TOKEN_SECRET=integration-secret");
    snprintf(env[5], sizeof env[5], "OUTBOX_POLL_MS=100");
    snprintf(env[6], sizeof env[6], "REDIS_TIMEOUT_MS=300");
    snprintf(env[7], sizeof env[7], "LOG_LEVEL=info");
    snprintf(env[8], sizeof env[8], "DB_POOL_SIZE=8");
    char *envp[] = {env[0], env[1], env[2], env[3], env[4], env[5], env[6], env[7], env[8], NULL};
    char *argv[] = {(char *)ts_bin("user-service"), NULL};
    g_pid = ts_spawn(argv, envp, g_log);
    if (ts_wait_port(port, 20000) != 0) {
        fprintf(stderr, "user-service did not listen on %d (see %s)\n", port, g_log);
        ts_stop(g_pid, 15, 2000);
        exit(1);
    }
    err_info e;
    err_clear(&e);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_client_opts co = {.target = target, .name = "user", .default_timeout_ms = 10000};
    g_cli = rpc_client_new(&co, &e);
    db_pool_opts po = {.conninfo = conninfo,
                       .schema = "users",
                       .size = 2,
                       .acquire_timeout_ms = 5000,
                       .statement_timeout_ms = 10000};
    g_db = db_pool_new(&po, &e);
    cache_opts ro = {.url = ts_redis_url_db(REDIS_DB), .timeout_ms = 1000, .backoff_max_ms = 100};
    g_redis = cache_new(&ro, &e);
    if (!g_cli || !g_db || !g_redis) {
        fprintf(stderr, "setup failed: %s\n", e.msg);
        ts_stop(g_pid, 15, 2000);
        exit(1);
    }
}

int main(void)
{
    log_init("test_user", LOG_WARN);
    start_service();
    static const ts_case cases[] = {
        {"create_get_happy", test_create_get_happy},
        {"validation_violations", test_validation},
        {"batch_get", test_batch_get},
        {"email_race", test_email_race},
        {"pagination_concurrent_inserts", test_pagination_concurrent},
        {"filters_with_cursor", test_filters_with_cursor},
        {"stale_etag", test_stale_etag},
        {"cache_invalidation", test_cache_invalidation},
        {"delete_and_email_reuse", test_delete_and_reuse},
        {"audit_rows", test_audit_rows},
        {"outbox_relay", test_outbox_relay},
        {"redis_down_mid_test", test_redis_down},
        {NULL, NULL},
    };
    int rc = ts_main("user_integration", cases);
    int st = ts_stop(g_pid, 15, 15000);
    if (st != 0) {
        fprintf(stderr, "user-service exit status %d (see %s)\n", st, g_log);
        rc = rc ? rc : 1;
    }
    rpc_client_free(g_cli);
    db_pool_free(g_db);
    cache_free(g_redis);
    return rc;
}
