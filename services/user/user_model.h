/* user_model: the user service's domain types (a user record, list filter, cursor) and their
 * mapping to and from the user.v1 protobuf messages. No I/O. */
#ifndef USER_MODEL_H
#define USER_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/mem.h"
#include "user/v1/user.pb-c.h"

/* Status values are the proto enum values (also what the `status` column stores). */
enum { USER_STATUS_ACTIVE = 1, USER_STATUS_DISABLED = 2 };

#define USER_ID_LEN 36 /* canonical UUID text */

/* One user as stored. Strings live in the arena of whoever filled the record. */
typedef struct user_rec {
    char id[USER_ID_LEN + 1];
    const char *email;
    const char *display_name;
    int status;
    int64_t create_us; /* epoch microseconds, exactly as in the database */
    int64_t update_us;
    int64_t delete_us; /* 0 = not deleted */
    int64_t version;   /* bumped by every write; the etag is its text form */
} user_rec;

/* Writes the etag of rec into buf ("<version>"); returns buf. */
char *user_rec_etag(const user_rec *rec, char *buf, size_t len);
/* Parses an etag back to a version; false when it is not one of ours. */
bool user_etag_parse(const char *etag, int64_t *version);

/* Builds a User message in arena a (strings are shared with rec, which must outlive it). */
User__V1__User *user_rec_to_pb(arena *a, const user_rec *rec);
/* Fills rec from a User message (strings copied into a). Returns false when the message does not
 * hold a well-formed stored user (bad id, no create_time...). */
bool user_rec_from_pb(arena *a, const User__V1__User *pb, user_rec *rec);

/* ListUsers filter after parsing. status 0 = any; email_prefix NULL = any. */
typedef struct user_filter {
    int status;
    const char *email_prefix; /* lower-cased */
} user_filter;

/* Position after the last row of a page: (create_time, id). */
typedef struct user_cursor {
    int64_t create_us;
    char id[USER_ID_LEN + 1];
} user_cursor;

#endif
