/* user_model: user record ↔ user.v1.User protobuf, and the etag's text form. */
#include "user_model.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "user_valid.h"

char *user_rec_etag(const user_rec *rec, char *buf, size_t len)
{
    snprintf(buf, len, "%" PRId64, rec->version);
    return buf;
}

bool user_etag_parse(const char *etag, int64_t *version)
{
    if (!etag || !*etag || strlen(etag) > 19)
        return false;
    for (const char *p = etag; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    errno = 0;
    char *end;
    long long v = strtoll(etag, &end, 10);
    if (errno || *end || v <= 0)
        return false;
    *version = v;
    return true;
}

static Google__Protobuf__Timestamp *ts_from_us(arena *a, int64_t us)
{
    Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof *t);
    google__protobuf__timestamp__init(t);
    /* Floor division so times before 1970 still give nanos in [0, 1e9). */
    int64_t s = us / 1000000, r = us % 1000000;
    if (r < 0) {
        r += 1000000;
        s -= 1;
    }
    t->seconds = s;
    t->nanos = (int32_t)(r * 1000);
    return t;
}

static int64_t ts_to_us(const Google__Protobuf__Timestamp *t)
{
    return t->seconds * 1000000 + t->nanos / 1000;
}

User__V1__User *user_rec_to_pb(arena *a, const user_rec *rec)
{
    User__V1__User *u = arena_alloc(a, sizeof *u);
    user__v1__user__init(u);
    u->id = arena_strdup(a, rec->id);
    u->email = (char *)rec->email;
    u->display_name = (char *)rec->display_name;
    u->status = (User__V1__UserStatus)rec->status;
    u->create_time = ts_from_us(a, rec->create_us);
    u->update_time = ts_from_us(a, rec->update_us);
    if (rec->delete_us)
        u->delete_time = ts_from_us(a, rec->delete_us);
    char buf[24];
    u->etag = arena_strdup(a, user_rec_etag(rec, buf, sizeof buf));
    return u;
}

bool user_rec_from_pb(arena *a, const User__V1__User *pb, user_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    if (!user_valid_uuid(pb->id, rec->id) || !pb->create_time || !pb->update_time)
        return false;
    if (!user_etag_parse(pb->etag, &rec->version))
        return false;
    rec->email = arena_strdup(a, pb->email);
    rec->display_name = arena_strdup(a, pb->display_name);
    rec->status = (int)pb->status;
    rec->create_us = ts_to_us(pb->create_time);
    rec->update_us = ts_to_us(pb->update_time);
    rec->delete_us = pb->delete_time ? ts_to_us(pb->delete_time) : 0;
    return true;
}
