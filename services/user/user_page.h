/* user_page: opaque, tamper-evident ListUsers page tokens. A token carries the cursor (create_time
 * in epoch µs + id) and a digest of the normalised filter and show_deleted, signed with
 * HMAC-SHA256 under PAGE_TOKEN_SECRET, encoded base64url. */
#ifndef USER_PAGE_H
#define USER_PAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/mem.h"
#include "user_model.h"

#define USER_PAGE_KEY_BYTES 32

typedef struct user_page_key {
    uint8_t k[USER_PAGE_KEY_BYTES];
} user_page_key;

/* Derives the signing key from secret (SHA-256 of it); an empty or NULL secret gives a random key
 * (tokens then only work against this process: replicas must share PAGE_TOKEN_SECRET). */
void user_page_key_init(user_page_key *key, const char *secret);

/* The token for the page after cursor c, bound to (f, show_deleted). Allocated in a. */
char *user_page_token_encode(arena *a, const user_page_key *key, const user_cursor *c,
                             const user_filter *f, bool show_deleted);

/* Verifies token (signature first, then version, filter binding) and fills *c. False for anything
 * not made by encode with the same key, filter and show_deleted. */
bool user_page_token_decode(const user_page_key *key, const char *token, const user_filter *f,
                            bool show_deleted, user_cursor *c);

#endif
