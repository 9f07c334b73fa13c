/* permission_match: pure rules of the permission model: names, permission strings, wildcard
 * matching, and the compact effective-permission set Check matches against. No I/O, thread-safe. */
#ifndef PERMISSION_MATCH_H
#define PERMISSION_MATCH_H

#include <stdbool.h>
#include <stddef.h>

#define PERM_ROLE_NAME_MAX 63
#define PERM_SEGMENT_MAX 64
#define PERM_STRING_MAX (2 * PERM_SEGMENT_MAX + 1)
#define PERM_USER_ID_LEN 36

/* Role name: ^[a-z][a-z0-9_.-]{0,62}$ */
bool perm_role_name_valid(const char *s);

/* A UUID in canonical 8-4-4-4-12 hex form (either case). */
bool perm_user_id_valid(const char *s);
/* Lower-cases a valid UUID into out (PERM_USER_ID_LEN + 1 bytes), so "A..." and "a..." are one
 * user. */
void perm_user_id_normalize(const char *s, char *out);

/* A grant pattern: a bare `*`, or `resource:action` where each segment is `*` or
 * [a-z0-9][a-z0-9_.-]{0,63}. No other form of wildcard (`us*:read` is invalid). */
bool perm_pattern_valid(const char *s);
/* A concrete permission as Check takes it: `resource:action` without any `*`. */
bool perm_concrete_valid(const char *s);

/* Does the grant pattern grant the concrete permission? (Both assumed valid.) users:read is granted
 * by users:read, users:*, *:read, *:* and *. */
bool perm_grants(const char *pattern, const char *perm);

/* An immutable set of grant patterns in one allocation, matched without allocating. */
typedef struct perm_set perm_set;

/* Copies the patterns (invalid ones are skipped: the database only holds valid ones). */
perm_set *perm_set_new(const char *const *patterns, size_t n);
void perm_set_free(perm_set *s); /* NULL ok */
size_t perm_set_count(const perm_set *s);
/* Is the concrete (valid) permission granted by any pattern of the set? */
bool perm_set_allows(const perm_set *s, const char *perm);

#endif
