/* jwt: ES256 compact JWS over OpenSSL 3 (keys parsed once), strict verification, JWKS in and out.
 * libjwt is deliberately not used: it re-parses PEM keys on every call and accepts alg confusion.
 */
#include "common/jwt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "common/mem.h"

/* Longest token we look at: real ones are ~500 bytes; bounds work on hostile input. */
#define JWT_MAX_TOKEN 8192
#define JWT_KID_MAX 64
#define JWT_COORD_B64 44 /* 32 bytes → 43 base64url chars + NUL */

typedef struct jwt_key {
    char kid[JWT_KID_MAX];
    EVP_PKEY *pkey;
    int has_private;
    char x[JWT_COORD_B64];
    char y[JWT_COORD_B64];
} jwt_key;

struct jwt_keyset {
    jwt_key *keys; /* sorted by kid (byte order) */
    size_t n, cap;
};

/* ---- base64url (RFC 4648 §5, no padding) ---- */

static const char b64u_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encodes n bytes into out (size >= 4*ceil(n/3)+1); returns the length written. */
static size_t b64u_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    while (i + 3 <= n) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64u_alphabet[(v >> 18) & 63];
        out[o++] = b64u_alphabet[(v >> 12) & 63];
        out[o++] = b64u_alphabet[(v >> 6) & 63];
        out[o++] = b64u_alphabet[v & 63];
        i += 3;
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = b64u_alphabet[(v >> 18) & 63];
        out[o++] = b64u_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = b64u_alphabet[(v >> 18) & 63];
        out[o++] = b64u_alphabet[(v >> 12) & 63];
        out[o++] = b64u_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

static int b64u_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Strict decode: no padding, no foreign characters, unused trailing bits must be zero (so one
 * encoded form per byte string: a flipped last character can never decode to the same bytes).
 * out needs len*3/4+1 bytes. Returns decoded length or -1. */
static long b64u_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64u_val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}

/* ---- keyset plumbing ---- */

static jwt_keyset *keyset_new(void)
{
    jwt_keyset *ks = xcalloc(1, sizeof *ks);
    return ks;
}

void jwt_keyset_free(jwt_keyset *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n; i++)
        EVP_PKEY_free(ks->keys[i].pkey);
    free(ks->keys);
    free(ks);
}

size_t jwt_keyset_count(const jwt_keyset *ks)
{
    return ks ? ks->n : 0;
}

static const jwt_key *keyset_find(const jwt_keyset *ks, const char *kid)
{
    if (!ks || !kid)
        return NULL;
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            return &ks->keys[i];
    return NULL;
}

bool jwt_keyset_has_kid(const jwt_keyset *ks, const char *kid)
{
    return keyset_find(ks, kid) != NULL;
}

static bool kid_ok(const char *kid)
{
    size_t n = strlen(kid);
    if (n == 0 || n >= JWT_KID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = kid[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

/* Takes ownership of pkey; replaces a key with the same kid; keeps the array sorted. */
static void keyset_put(jwt_keyset *ks, const char *kid, EVP_PKEY *pkey, int has_private,
                       const char *x, const char *y)
{
    for (size_t i = 0; i < ks->n; i++) {
        if (strcmp(ks->keys[i].kid, kid) == 0) {
            EVP_PKEY_free(ks->keys[i].pkey);
            ks->keys[i].pkey = pkey;
            ks->keys[i].has_private = has_private;
            snprintf(ks->keys[i].x, sizeof ks->keys[i].x, "%s", x);
            snprintf(ks->keys[i].y, sizeof ks->keys[i].y, "%s", y);
            return;
        }
    }
    if (ks->n == ks->cap) {
        ks->cap = ks->cap ? ks->cap * 2 : 4;
        ks->keys = xrealloc(ks->keys, ks->cap * sizeof *ks->keys);
    }
    size_t pos = ks->n;
    while (pos > 0 && strcmp(ks->keys[pos - 1].kid, kid) > 0) {
        ks->keys[pos] = ks->keys[pos - 1];
        pos--;
    }
    jwt_key *k = &ks->keys[pos];
    memset(k, 0, sizeof *k);
    snprintf(k->kid, sizeof k->kid, "%s", kid);
    k->pkey = pkey;
    k->has_private = has_private;
    snprintf(k->x, sizeof k->x, "%s", x);
    snprintf(k->y, sizeof k->y, "%s", y);
    ks->n++;
}

/* Checks pkey is EC on P-256 and writes its public coordinates as base64url. */
static bool p256_coords(EVP_PKEY *pkey, char x[JWT_COORD_B64], char y[JWT_COORD_B64])
{
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)
        return false;
    char group[64];
    size_t glen = 0;
    if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                        &glen))
        return false;
    if (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)
        return false;
    BIGNUM *bx = NULL, *by = NULL;
    bool ok = false;
    unsigned char bufx[32], bufy[32];
    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &bx) &&
        EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &by) &&
        BN_bn2binpad(bx, bufx, 32) == 32 && BN_bn2binpad(by, bufy, 32) == 32) {
        b64u_encode(bufx, 32, x);
        b64u_encode(bufy, 32, y);
        ok = true;
    }
    BN_free(bx);
    BN_free(by);
    return ok;
}

/* Fetched once: EVP_sha256() / SHA256() look the implementation up in the provider on every call,
 * which cost about a quarter of the gateway's per-request token hash. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

bool jwt_sha256(const void *in, size_t n, unsigned char out[32])
{
    pthread_once(&sha256_once, sha256_fetch);
    unsigned int len = 0;
    const EVP_MD *md = sha256_md ? sha256_md : EVP_sha256();
    return EVP_Digest(in, n, out, &len, md, NULL) == 1 && len == 32;
}

/* Raw r||s (64 bytes) signature check of msg by pkey. Thread-safe: the context is per call and the
 * key is only read. */
static bool es256_verify(EVP_PKEY *pkey, const unsigned char *msg, size_t n,
                         const unsigned char sig[64])
{
    unsigned char digest[32];
    if (!jwt_sha256(msg, n, digest))
        return false;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return false;
    }
    unsigned char *der = NULL;
    int dlen = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    if (dlen <= 0)
        return false;
    bool ok = false;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pkey, NULL);
    if (ctx && EVP_PKEY_verify_init(ctx) == 1 &&
        EVP_PKEY_verify(ctx, der, (size_t)dlen, digest, sizeof digest) == 1)
        ok = true;
    EVP_PKEY_CTX_free(ctx);
    OPENSSL_free(der);
    return ok;
}

static bool es256_sign(EVP_PKEY *pkey, const unsigned char *msg, size_t n, unsigned char sig[64])
{
    unsigned char digest[32];
    if (!jwt_sha256(msg, n, digest))
        return false;
    bool ok = false;
    unsigned char der[128];
    size_t dlen = sizeof der;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pkey, NULL);
    if (ctx && EVP_PKEY_sign_init(ctx) == 1 &&
        EVP_PKEY_sign(ctx, der, &dlen, digest, sizeof digest) == 1) {
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
        if (es) {
            const BIGNUM *r = NULL, *s = NULL;
            ECDSA_SIG_get0(es, &r, &s);
            ok = BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32;
            ECDSA_SIG_free(es);
        }
    }
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

/* One sign+verify at load: proves the key works and leaves no lazy state to be built under
 * concurrent use later. */
static bool key_selftest(EVP_PKEY *pkey)
{
    static const unsigned char msg[] = "jwt-selftest";
    unsigned char sig[64];
    return es256_sign(pkey, msg, sizeof msg - 1, sig) &&
           es256_verify(pkey, msg, sizeof msg - 1, sig);
}

static int str_cmp_qsort(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

jwt_keyset *jwt_keyset_load_dir(const char *dir, err_info *e)
{
    if (!dir || !*dir) {
        err_set(e, ERR_INVALID_ARGUMENT, "jwt: no key directory");
        return NULL;
    }
    DIR *d = opendir(dir);
    if (!d) {
        err_set(e, ERR_NOT_FOUND, "jwt: cannot open key directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len <= 4 || strcmp(de->d_name + len - 4, ".pem") != 0 || de->d_name[0] == '.')
            continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 8;
            names = xrealloc(names, cap * sizeof *names);
        }
        names[nn++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (nn > 1)
        qsort(names, nn, sizeof *names, str_cmp_qsort);

    jwt_keyset *ks = keyset_new();
    for (size_t i = 0; i < nn; i++) {
        char kid[JWT_KID_MAX];
        size_t len = strlen(names[i]) - 4;
        if (len >= sizeof kid) {
            err_set(e, ERR_INVALID_ARGUMENT, "jwt: key file name too long: %s", names[i]);
            goto fail;
        }
        memcpy(kid, names[i], len);
        kid[len] = '\0';
        if (!kid_ok(kid)) {
            err_set(e, ERR_INVALID_ARGUMENT, "jwt: bad kid (file name) %s", names[i]);
            goto fail;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "r");
        if (!f) {
            err_set(e, ERR_INVALID_ARGUMENT, "jwt: cannot read %s: %s", path, strerror(errno));
            goto fail;
        }
        EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, (void *)"");
        fclose(f);
        char x[JWT_COORD_B64], y[JWT_COORD_B64];
        if (!pkey || !p256_coords(pkey, x, y) || !key_selftest(pkey)) {
            EVP_PKEY_free(pkey);
            err_set(e, ERR_INVALID_ARGUMENT, "jwt: %s is not an EC P-256 private key", path);
            goto fail;
        }
        keyset_put(ks, kid, pkey, 1, x, y);
    }
    if (ks->n == 0) {
        err_set(e, ERR_NOT_FOUND, "jwt: no *.pem key in %s", dir);
        goto fail;
    }
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    return ks;
fail:
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    jwt_keyset_free(ks);
    return NULL;
}

/* Builds a public P-256 EVP_PKEY from raw coordinates (the point must be on the curve). */
static EVP_PKEY *p256_from_coords(const unsigned char x[32], const unsigned char y[32])
{
    unsigned char pt[65];
    pt[0] = 0x04;
    memcpy(pt + 1, x, 32);
    memcpy(pt + 33, y, 32);
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    if (!bld ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt))
        goto done;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        pkey = NULL;
        goto done;
    }
    /* fromdata decodes the point; check it fully anyway (on curve, not infinity). */
    EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new(pkey, NULL);
    if (!chk || EVP_PKEY_public_check(chk) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(chk);
done:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

err_code jwt_keyset_add_public(jwt_keyset *ks, const char *kid, const char *x_b64url,
                               const char *y_b64url, err_info *e)
{
    if (!ks || !kid || !x_b64url || !y_b64url || !kid_ok(kid))
        return err_set(e, ERR_INVALID_ARGUMENT, "jwt: bad kid");
    size_t xl = strlen(x_b64url), yl = strlen(y_b64url);
    unsigned char x[48], y[48];
    if (xl != 43 || yl != 43 || b64u_decode(x_b64url, xl, x) != 32 ||
        b64u_decode(y_b64url, yl, y) != 32)
        return err_set(e, ERR_INVALID_ARGUMENT, "jwt: key %s: bad coordinates", kid);
    EVP_PKEY *pkey = p256_from_coords(x, y);
    if (!pkey)
        return err_set(e, ERR_INVALID_ARGUMENT, "jwt: key %s: not a P-256 point", kid);
    keyset_put(ks, kid, pkey, 0, x_b64url, y_b64url);
    return ERR_OK;
}

static const char *json_str(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

jwt_keyset *jwt_keyset_from_jwks(const char *json, size_t len, err_info *e)
{
    if (!json) {
        err_set(e, ERR_INVALID_ARGUMENT, "jwks: empty");
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    json_t *keys = root ? json_object_get(root, "keys") : NULL;
    if (!json_is_array(keys)) {
        json_decref(root);
        err_set(e, ERR_INVALID_ARGUMENT, "jwks: not a {\"keys\": [...]} document");
        return NULL;
    }
    jwt_keyset *ks = keyset_new();
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *kty = json_str(k, "kty"), *crv = json_str(k, "crv"), *kid = json_str(k, "kid");
        const char *x = json_str(k, "x"), *y = json_str(k, "y"), *alg = json_str(k, "alg");
        const char *use = json_str(k, "use");
        /* Keys for other algorithms or uses are skipped, not errors (RFC 7517 §5). */
        if (!kty || strcmp(kty, "EC") != 0 || !crv || strcmp(crv, "P-256") != 0 || !kid || !x ||
            !y || (alg && strcmp(alg, "ES256") != 0) || (use && strcmp(use, "sig") != 0))
            continue;
        if (jwt_keyset_add_public(ks, kid, x, y, e) != ERR_OK) {
            json_decref(root);
            jwt_keyset_free(ks);
            return NULL;
        }
    }
    json_decref(root);
    if (ks->n == 0) {
        jwt_keyset_free(ks);
        err_set(e, ERR_NOT_FOUND, "jwks: no ES256 P-256 key");
        return NULL;
    }
    return ks;
}

/* ---- sign ---- */

static const jwt_key *keyset_signer(const jwt_keyset *ks)
{
    if (!ks)
        return NULL;
    for (size_t i = ks->n; i > 0; i--)
        if (ks->keys[i - 1].has_private)
            return &ks->keys[i - 1];
    return NULL;
}

/* Appends base64url(json text of o) to buf at *pos. */
static bool append_b64_json(json_t *o, char *buf, size_t cap, size_t *pos)
{
    char *txt = json_dumps(o, JSON_COMPACT);
    if (!txt)
        return false;
    size_t n = strlen(txt);
    bool ok = *pos + (n + 2) / 3 * 4 + 1 <= cap;
    if (ok)
        *pos += b64u_encode((const unsigned char *)txt, n, buf + *pos);
    free(txt);
    return ok;
}

err_code jwt_sign(const jwt_keyset *ks, const jwt_claims *c, char **token, err_info *e)
{
    const jwt_key *k = keyset_signer(ks);
    if (!k)
        return err_set(e, ERR_FAILED_PRECONDITION, "jwt: no private key to sign with");
    if (!c || !token)
        return err_set(e, ERR_INVALID_ARGUMENT, "jwt: no claims");
    json_t *hdr = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "typ", "JWT", "kid", k->kid);
    json_t *pl = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "iss", c->iss, "aud", c->aud,
                           "sub", c->sub, "sid", c->sid, "jti", c->jti, "iat", (json_int_t)c->iat,
                           "exp", (json_int_t)c->exp);
    if (pl && c->nbf)
        json_object_set_new(pl, "nbf", json_integer((json_int_t)c->nbf));
    size_t cap = 2048, pos = 0;
    char *buf = xmalloc(cap);
    err_code rc = ERR_OK;
    if (!hdr || !pl || !append_b64_json(hdr, buf, cap, &pos)) {
        rc = err_set(e, ERR_INTERNAL, "jwt: cannot encode header");
        goto done;
    }
    buf[pos++] = '.';
    if (!append_b64_json(pl, buf, cap, &pos)) {
        rc = err_set(e, ERR_INVALID_ARGUMENT, "jwt: claims too large");
        goto done;
    }
    unsigned char sig[64];
    if (!es256_sign(k->pkey, (const unsigned char *)buf, pos, sig)) {
        rc = err_set(e, ERR_INTERNAL, "jwt: signing failed");
        goto done;
    }
    if (pos + 1 + 87 > cap) {
        rc = err_set(e, ERR_INVALID_ARGUMENT, "jwt: claims too large");
        goto done;
    }
    buf[pos++] = '.';
    pos += b64u_encode(sig, sizeof sig, buf + pos);
done:
    json_decref(hdr);
    json_decref(pl);
    if (rc != ERR_OK) {
        free(buf);
        return rc;
    }
    *token = buf;
    return ERR_OK;
}

/* ---- verify ---- */

/* Decodes one base64url JSON segment into an object. */
static json_t *segment_json(const char *s, size_t n)
{
    unsigned char *raw = xmalloc(n * 3 / 4 + 2);
    long len = b64u_decode(s, n, raw);
    json_t *o = NULL;
    if (len > 0) {
        json_error_t je;
        o = json_loadb((const char *)raw, (size_t)len, JSON_REJECT_DUPLICATES, &je);
        if (o && !json_is_object(o)) {
            json_decref(o);
            o = NULL;
        }
    }
    free(raw);
    return o;
}

static bool copy_claim(json_t *pl, const char *name, char *dst, size_t cap)
{
    const char *v = json_str(pl, name);
    if (!v || !*v || strlen(v) >= cap)
        return false;
    memcpy(dst, v, strlen(v) + 1);
    return true;
}

static bool int_claim(json_t *pl, const char *name, int64_t *out)
{
    json_t *v = json_object_get(pl, name);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

err_code jwt_verify(const jwt_keyset *ks, const char *token, const jwt_verify_opts *o,
                    jwt_claims *out, err_info *e)
{
    if (!ks || !o)
        return err_set(e, ERR_INVALID_ARGUMENT, "jwt: no keyset");
    if (!token || !*token)
        return err_set(e, ERR_UNAUTHENTICATED, "token missing");
    size_t tlen = strnlen(token, JWT_MAX_TOKEN + 1);
    if (tlen > JWT_MAX_TOKEN)
        return err_set(e, ERR_UNAUTHENTICATED, "token too long");
    const char *d1 = memchr(token, '.', tlen);
    const char *d2 = d1 ? memchr(d1 + 1, '.', tlen - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', tlen - (size_t)(d2 + 1 - token)))
        return err_set(e, ERR_UNAUTHENTICATED, "token malformed");
    size_t hlen = (size_t)(d1 - token), plen = (size_t)(d2 - d1 - 1),
           slen = tlen - (size_t)(d2 + 1 - token);
    if (hlen == 0 || plen == 0)
        return err_set(e, ERR_UNAUTHENTICATED, "token malformed");

    json_t *hdr = segment_json(token, hlen);
    if (!hdr)
        return err_set(e, ERR_UNAUTHENTICATED, "token header malformed");
    const char *alg = json_str(hdr, "alg");
    const char *typ = json_str(hdr, "typ");
    if (!alg || strcmp(alg, "ES256") != 0) {
        json_decref(hdr);
        return err_set(e, ERR_UNAUTHENTICATED, "token algorithm not allowed");
    }
    /* We understand no critical extensions (RFC 7515 §4.1.11). */
    if (json_object_get(hdr, "crit") || (typ && strcmp(typ, "JWT") != 0)) {
        json_decref(hdr);
        return err_set(e, ERR_UNAUTHENTICATED, "token header not accepted");
    }
    const char *kid = json_str(hdr, "kid");
    const jwt_key *k = keyset_find(ks, kid);
    json_decref(hdr);
    if (!kid)
        return err_set(e, ERR_UNAUTHENTICATED, "token has no kid");
    if (!k)
        return err_set(e, ERR_NOT_FOUND, "token signed by an unknown key");

    unsigned char sig[66];
    if (slen != 86 || b64u_decode(d2 + 1, slen, sig) != 64)
        return err_set(e, ERR_UNAUTHENTICATED, "token signature malformed");
    if (!es256_verify(k->pkey, (const unsigned char *)token, (size_t)(d2 - token), sig))
        return err_set(e, ERR_UNAUTHENTICATED, "token signature invalid");

    json_t *pl = segment_json(d1 + 1, plen);
    if (!pl)
        return err_set(e, ERR_UNAUTHENTICATED, "token payload malformed");
    jwt_claims c;
    memset(&c, 0, sizeof c);
    err_code rc = ERR_OK;
    int64_t now = o->now ? o->now : (int64_t)time(NULL);
    int64_t leeway = o->leeway_s > 0 ? o->leeway_s : 0;
    if (!copy_claim(pl, "iss", c.iss, sizeof c.iss) ||
        !copy_claim(pl, "sub", c.sub, sizeof c.sub) ||
        !copy_claim(pl, "sid", c.sid, sizeof c.sid) ||
        !copy_claim(pl, "jti", c.jti, sizeof c.jti) || !int_claim(pl, "exp", &c.exp) ||
        !int_claim(pl, "iat", &c.iat)) {
        rc = err_set(e, ERR_UNAUTHENTICATED, "token claims missing or malformed");
        goto done;
    }
    json_t *nbf = json_object_get(pl, "nbf");
    if (nbf && !int_claim(pl, "nbf", &c.nbf)) {
        rc = err_set(e, ERR_UNAUTHENTICATED, "token nbf malformed");
        goto done;
    }
    /* aud: a string, or an array holding the expected value (RFC 7519 §4.1.3). */
    json_t *aud = json_object_get(pl, "aud");
    bool aud_ok = false;
    if (json_is_string(aud)) {
        aud_ok = !o->aud || strcmp(json_string_value(aud), o->aud) == 0;
        if (aud_ok)
            snprintf(c.aud, sizeof c.aud, "%s", json_string_value(aud));
    } else if (json_is_array(aud)) {
        size_t i;
        json_t *a;
        json_array_foreach(aud, i, a)
        {
            if (json_is_string(a) && (!o->aud || strcmp(json_string_value(a), o->aud) == 0)) {
                aud_ok = true;
                snprintf(c.aud, sizeof c.aud, "%s", json_string_value(a));
                break;
            }
        }
    }
    if (!aud_ok) {
        rc = err_set(e, ERR_UNAUTHENTICATED, "token audience not accepted");
        goto done;
    }
    if (o->iss && strcmp(c.iss, o->iss) != 0) {
        rc = err_set(e, ERR_UNAUTHENTICATED, "token issuer not accepted");
        goto done;
    }
    if (now >= c.exp + leeway) {
        rc = err_set(e, ERR_UNAUTHENTICATED, "token expired");
        goto done;
    }
    if (c.nbf && now + leeway < c.nbf) {
        rc = err_set(e, ERR_UNAUTHENTICATED, "token not yet valid");
        goto done;
    }
    if (now + leeway < c.iat) {
        rc = err_set(e, ERR_UNAUTHENTICATED, "token issued in the future");
        goto done;
    }
done:
    json_decref(pl);
    if (rc == ERR_OK && out)
        *out = c;
    return rc;
}

/* ---- JWKS out ---- */

void jwt_keyset_each(const jwt_keyset *ks,
                     void (*fn)(void *arg, const char *kid, const char *x, const char *y),
                     void *arg)
{
    if (!ks || !fn)
        return;
    for (size_t i = 0; i < ks->n; i++)
        fn(arg, ks->keys[i].kid, ks->keys[i].x, ks->keys[i].y);
}

char *jwt_keyset_jwks(const jwt_keyset *ks)
{
    json_t *keys = json_array();
    for (size_t i = 0; ks && i < ks->n; i++) {
        const jwt_key *k = &ks->keys[i];
        json_array_append_new(keys, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC",
                                              "crv", "P-256", "x", k->x, "y", k->y, "kid", k->kid,
                                              "use", "sig", "alg", "ES256"));
    }
    json_t *root = json_pack("{s:o}", "keys", keys);
    char *txt = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!txt)
        abort(); /* jansson fails only on allocation failure: same policy as xmalloc */
    char *out = xstrdup(txt);
    free(txt);
    return out;
}

/* ---- key generation ---- */

err_code jwt_key_generate(const char *path, err_info *e)
{
    if (!path)
        return err_set(e, ERR_INVALID_ARGUMENT, "jwt: no key path");
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    if (!pkey)
        return err_set(e, ERR_INTERNAL, "jwt: key generation failed");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        EVP_PKEY_free(pkey);
        return err_set(e, ERR_UNAVAILABLE, "jwt: cannot create %s: %s", path, strerror(errno));
    }
    (void)fchmod(fd, 0600);
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        EVP_PKEY_free(pkey);
        return err_set(e, ERR_UNAVAILABLE, "jwt: cannot write %s", path);
    }
    int ok = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
    ok = (fclose(f) == 0) && ok;
    EVP_PKEY_free(pkey);
    if (!ok) {
        unlink(path);
        return err_set(e, ERR_UNAVAILABLE, "jwt: cannot write %s", path);
    }
    return ERR_OK;
}
