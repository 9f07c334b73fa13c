/* user_valid: pure validation and normalisation of user input (email, display name, UUIDs, page
 * size, the ListUsers filter). No I/O; every function is thread-safe. */
#ifndef USER_VALID_H
#define USER_VALID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/mem.h"
#include "user_model.h"

#define USER_EMAIL_MAX 254 /* bytes, after trimming */
#define USER_NAME_MAX 100  /* characters (code points) */
#define USER_PAGE_DEFAULT 50
#define USER_PAGE_MAX 1000
#define USER_BATCH_MAX 1000

/* Trims ASCII whitespace, lower-cases ASCII letters and checks: at most 254 bytes, valid UTF-8, no
 * space or control character, exactly one '@' with a non-empty local part, and a domain holding a
 * '.' that neither starts nor ends it (nor doubles it). On success *out is the normalised copy (in
 * a); otherwise why gets a human reason and false is returned. */
bool user_valid_email(arena *a, const char *in, const char **out, char *why, size_t whylen);

/* Trims ASCII spaces at both ends and checks 1..100 characters of valid UTF-8 without control
 * characters (C0, DEL, C1). On success *out is the trimmed copy (in a). */
bool user_valid_display_name(arena *a, const char *in, const char **out, char *why, size_t whylen);

/* Canonical 8-4-4-4-12 hex UUID (either case); out (37 bytes) gets the lower-case form. */
bool user_valid_uuid(const char *in, char out[USER_ID_LEN + 1]);

/* page_size: 0 → 50, above 1000 → 1000; negative → -1 (invalid). */
int user_valid_page_size(int32_t requested);

/* Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF). *nchars gets the code
 * point count when not NULL. */
bool user_valid_utf8(const char *s, size_t len, size_t *nchars);

/* Parses a ListUsers filter: "" or terms `key=value` joined by AND (case-insensitive), keys
 * `status` (ACTIVE | DISABLED, optionally USER_STATUS_-prefixed, any case) and `email_prefix`
 * (lower-cased; value may be double-quoted). Each key at most once. */
bool user_filter_parse(arena *a, const char *in, user_filter *out, char *why, size_t whylen);

#endif
