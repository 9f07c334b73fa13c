/* user_page: page token = base64url(version | create_us | uuid | filter digest | HMAC-SHA256). */
#include "user_page.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define TOKEN_VERSION 1
#define DIGEST_BYTES 16
#define PAYLOAD_BYTES (1 + 8 + 16 + DIGEST_BYTES)
#define TOKEN_BYTES (PAYLOAD_BYTES + crypto_auth_hmacsha256_BYTES)

void user_page_key_init(user_page_key *key, const char *secret)
{
    if (sodium_init() < 0)
        abort();
    if (!secret || !*secret)
        randombytes_buf(key->k, sizeof key->k);
    else
        crypto_hash_sha256(key->k, (const unsigned char *)secret, strlen(secret));
}

/* Digest of the filter in its normalised form, so equivalent spellings share tokens. */
static void filter_digest(const user_filter *f, bool show_deleted, uint8_t out[DIGEST_BYTES])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, DIGEST_BYTES);
    uint8_t head[2] = {(uint8_t)f->status, show_deleted ? 1 : 0};
    crypto_generichash_update(&st, head, sizeof head);
    if (f->email_prefix) {
        crypto_generichash_update(&st, (const uint8_t *)"p", 1);
        crypto_generichash_update(&st, (const uint8_t *)f->email_prefix, strlen(f->email_prefix));
    }
    crypto_generichash_final(&st, out, DIGEST_BYTES);
}

static bool uuid_to_bin(const char *id, uint8_t out[16])
{
    size_t n = 0;
    return sodium_hex2bin(out, 16, id, strlen(id), "-", &n, NULL) == 0 && n == 16;
}

static void uuid_from_bin(const uint8_t b[16], char out[USER_ID_LEN + 1])
{
    static const char hx[] = "0123456789abcdef";
    size_t j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hx[b[i] >> 4];
        out[j++] = hx[b[i] & 15];
    }
    out[j] = '\0';
}

char *user_page_token_encode(arena *a, const user_page_key *key, const user_cursor *c,
                             const user_filter *f, bool show_deleted)
{
    uint8_t buf[TOKEN_BYTES];
    buf[0] = TOKEN_VERSION;
    uint64_t us = (uint64_t)c->create_us;
    for (int i = 0; i < 8; i++)
        buf[1 + i] = (uint8_t)(us >> (56 - 8 * i));
    if (!uuid_to_bin(c->id, buf + 9))
        memset(buf + 9, 0, 16);
    filter_digest(f, show_deleted, buf + 25);
    crypto_auth_hmacsha256(buf + PAYLOAD_BYTES, buf, PAYLOAD_BYTES, key->k);
    size_t outlen =
        sodium_base64_ENCODED_LEN(TOKEN_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = arena_alloc(a, outlen);
    sodium_bin2base64(out, outlen, buf, TOKEN_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

bool user_page_token_decode(const user_page_key *key, const char *token, const user_filter *f,
                            bool show_deleted, user_cursor *c)
{
    uint8_t buf[TOKEN_BYTES + 1];
    size_t n = 0;
    const char *end = NULL;
    if (!token || strlen(token) > 2 * TOKEN_BYTES)
        return false;
    if (sodium_base642bin(buf, sizeof buf, token, strlen(token), NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n != TOKEN_BYTES || *end)
        return false;
    if (crypto_auth_hmacsha256_verify(buf + PAYLOAD_BYTES, buf, PAYLOAD_BYTES, key->k) != 0)
        return false;
    if (buf[0] != TOKEN_VERSION)
        return false;
    uint8_t want[DIGEST_BYTES];
    filter_digest(f, show_deleted, want);
    if (sodium_memcmp(want, buf + 25, DIGEST_BYTES) != 0)
        return false;
    uint64_t us = 0;
    for (int i = 0; i < 8; i++)
        us = (us << 8) | buf[1 + i];
    c->create_us = (int64_t)us;
    uuid_from_bin(buf + 9, c->id);
    return true;
}
