/* Unit tests for jwt: ES256 round trip, the attack list (alg none, HS256 with the public key,
 * unknown kid, tampering), time and audience checks, hostile input, key rotation and JWKS. */
#include "common/jwt.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <jansson.h>

#include "test_support.h"

static char g_dir[256];  /* one key: k1 */
static char g_dir2[256]; /* rotation: k1 (old) + k2 (new) */
static const int64_t NOW = 1800000000;

static void mkdirs(void)
{
    if (g_dir[0])
        return;
    snprintf(g_dir, sizeof g_dir, "/tmp/test_jwt.%d.a", (int)getpid());
    snprintf(g_dir2, sizeof g_dir2, "/tmp/test_jwt.%d.b", (int)getpid());
    mkdir(g_dir, 0700);
    mkdir(g_dir2, 0700);
    char p[512];
    err_info e;
    err_clear(&e);
    snprintf(p, sizeof p, "%s/20260101T000000Z.pem", g_dir);
    CU_ASSERT_EQUAL_FATAL(jwt_key_generate(p, &e), ERR_OK);
    struct stat st;
    CU_ASSERT_EQUAL(stat(p, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    /* the same old key in dir2, plus a newer one */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp %s %s/", p, g_dir2);
    CU_ASSERT_EQUAL(system(cmd), 0);
    snprintf(p, sizeof p, "%s/20270101T000000Z.pem", g_dir2);
    CU_ASSERT_EQUAL_FATAL(jwt_key_generate(p, &e), ERR_OK);
}

static void cleanup_dirs(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", g_dir, g_dir2);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
}

static jwt_claims claims(void)
{
    jwt_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.iss, sizeof c.iss, "identity");
    snprintf(c.aud, sizeof c.aud, "identity-api");
    snprintf(c.sub, sizeof c.sub, "8a4e5c1e-7a59-4f4b-9a4b-8a1d2f1f0b11");
    snprintf(c.sid, sizeof c.sid, "3d3e2c55-1111-4c4c-8888-0123456789ab");
    snprintf(c.jti, sizeof c.jti, "f0e1d2c3-0000-4000-8000-00000000abcd");
    c.iat = NOW;
    c.exp = NOW + 900;
    return c;
}

static jwt_verify_opts vopts(void)
{
    jwt_verify_opts o = {.iss = "identity", .aud = "identity-api", .leeway_s = 30, .now = NOW};
    return o;
}

static jwt_keyset *load(const char *dir)
{
    err_info e;
    err_clear(&e);
    jwt_keyset *ks = jwt_keyset_load_dir(dir, &e);
    CU_ASSERT_PTR_NOT_NULL(ks);
    if (!ks)
        fprintf(stderr, "load: %s\n", e.msg);
    return ks;
}

/* ---- helpers to forge tokens the module itself would never make ---- */

static void b64u(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = a[(v >> 18) & 63];
        out[o++] = a[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = a[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = a[v & 63];
    }
    out[o] = '\0';
}

static char *first_key_path(const char *dir)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/20260101T000000Z.pem", dir);
    return p;
}

/* header.payload signed ES256 with the PEM key at path (raw r||s). Caller frees. */
static char *forge_es256(const char *hdr_json, const char *pl_json, const char *path)
{
    char *out = malloc(8192);
    char h[2048], p[4096];
    b64u((const unsigned char *)hdr_json, strlen(hdr_json), h);
    b64u((const unsigned char *)pl_json, strlen(pl_json), p);
    snprintf(out, 8192, "%s.%s", h, p);
    FILE *f = fopen(path, "r");
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[128];
    size_t dl = sizeof der;
    CU_ASSERT_FATAL(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1);
    CU_ASSERT_FATAL(EVP_DigestSign(md, der, &dl, (unsigned char *)out, strlen(out)) == 1);
    const unsigned char *dp = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &dp, (long)dl);
    unsigned char raw[64];
    BN_bn2binpad(ECDSA_SIG_get0_r(s), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(s), raw + 32, 32);
    ECDSA_SIG_free(s);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    size_t n = strlen(out);
    out[n++] = '.';
    b64u(raw, 64, out + n);
    return out;
}

static const char *KID1 = "20260101T000000Z";

static char *payload_json(const char *extra_or_null)
{
    static char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"iss\":\"identity\",\"aud\":\"identity-api\",\"sub\":\"u1\",\"sid\":\"s1\","
             "\"jti\":\"j1\",\"iat\":%lld,\"exp\":%lld%s}",
             (long long)NOW, (long long)NOW + 900, extra_or_null ? extra_or_null : "");
    return buf;
}

static err_code verify(const jwt_keyset *ks, const char *tok, jwt_claims *out, err_info *e)
{
    jwt_verify_opts o = vopts();
    err_clear(e);
    return jwt_verify(ks, tok, &o, out, e);
}

/* ---- cases ---- */

static void test_round_trip(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir);
    CU_ASSERT_EQUAL(jwt_keyset_count(ks), 1);
    CU_ASSERT_TRUE(jwt_keyset_has_kid(ks, KID1));
    CU_ASSERT_FALSE(jwt_keyset_has_kid(ks, "nope"));
    jwt_claims c = claims(), out;
    char *tok = NULL;
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL_FATAL(jwt_sign(ks, &c, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(verify(ks, tok, &out, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(out.iss, c.iss);
    CU_ASSERT_STRING_EQUAL(out.aud, c.aud);
    CU_ASSERT_STRING_EQUAL(out.sub, c.sub);
    CU_ASSERT_STRING_EQUAL(out.sid, c.sid);
    CU_ASSERT_STRING_EQUAL(out.jti, c.jti);
    CU_ASSERT_EQUAL(out.iat, c.iat);
    CU_ASSERT_EQUAL(out.exp, c.exp);
    CU_ASSERT_EQUAL(out.nbf, 0);
    /* header names the kid and ES256 */
    const char *dot = strchr(tok, '.');
    unsigned char hdr[256];
    size_t hl = (size_t)(dot - tok);
    char b64[256];
    memcpy(b64, tok, hl);
    b64[hl] = 0;
    /* decode with OpenSSL after converting to standard base64 with padding */
    for (size_t i = 0; i < hl; i++)
        b64[i] = b64[i] == '-' ? '+' : b64[i] == '_' ? '/' : b64[i];
    while (hl % 4)
        b64[hl++] = '=';
    b64[hl] = 0;
    int n = EVP_DecodeBlock(hdr, (unsigned char *)b64, (int)hl);
    CU_ASSERT(n > 0);
    hdr[n > 0 ? n : 0] = 0;
    CU_ASSERT_PTR_NOT_NULL(strstr((char *)hdr, "\"alg\":\"ES256\""));
    CU_ASSERT_PTR_NOT_NULL(strstr((char *)hdr, "\"kid\":\"20260101T000000Z\""));
    /* two signatures of the same claims differ (ECDSA is randomised) but both verify */
    char *tok2 = NULL;
    CU_ASSERT_EQUAL(jwt_sign(ks, &c, &tok2, &e), ERR_OK);
    CU_ASSERT_STRING_NOT_EQUAL(tok, tok2);
    CU_ASSERT_EQUAL(verify(ks, tok2, &out, &e), ERR_OK);
    /* nbf written when set */
    c.nbf = NOW - 5;
    free(tok2);
    CU_ASSERT_EQUAL(jwt_sign(ks, &c, &tok2, &e), ERR_OK);
    CU_ASSERT_EQUAL(verify(ks, tok2, &out, &e), ERR_OK);
    CU_ASSERT_EQUAL(out.nbf, NOW - 5);
    /* forged-by-us ES256 helper agrees with the module (sanity for the attack cases) */
    char *f = forge_es256("{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"20260101T000000Z\"}",
                          payload_json(NULL), first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, f, &out, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(out.sub, "u1");
    free(f);
    free(tok);
    free(tok2);
    jwt_keyset_free(ks);
}

static void test_alg_none(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir);
    err_info e;
    jwt_claims out;
    char h[256], p[1024], tok[2048];
    const char *hj = "{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"20260101T000000Z\"}";
    b64u((const unsigned char *)hj, strlen(hj), h);
    const char *pj = payload_json(NULL);
    b64u((const unsigned char *)pj, strlen(pj), p);
    snprintf(tok, sizeof tok, "%s.%s.", h, p);
    CU_ASSERT_EQUAL(verify(ks, tok, &out, &e), ERR_UNAUTHENTICATED);
    snprintf(tok, sizeof tok, "%s.%s", h, p);
    CU_ASSERT_EQUAL(verify(ks, tok, &out, &e), ERR_UNAUTHENTICATED);
    /* alg none with a (valid-looking) 64-byte ES256 signature appended */
    char *good = forge_es256(hj, pj, first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, good, &out, &e), ERR_UNAUTHENTICATED);
    free(good);
    /* other algorithms, even correctly ES256-signed, are refused: the alg is pinned */
    good =
        forge_es256("{\"alg\":\"ES384\",\"kid\":\"20260101T000000Z\"}", pj, first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, good, &out, &e), ERR_UNAUTHENTICATED);
    free(good);
    good =
        forge_es256("{\"alg\":\"es256\",\"kid\":\"20260101T000000Z\"}", pj, first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, good, &out, &e), ERR_UNAUTHENTICATED);
    free(good);
    /* unknown critical header */
    good = forge_es256("{\"alg\":\"ES256\",\"kid\":\"20260101T000000Z\",\"crit\":[\"x\"],\"x\":1}",
                       pj, first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, good, &out, &e), ERR_UNAUTHENTICATED);
    free(good);
    jwt_keyset_free(ks);
}

static void test_hs256_with_public_key(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir);
    /* the public key PEM, as an attacker fetching JWKS/PEM would have it */
    FILE *f = fopen(first_key_path(g_dir), "r");
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, k);
    char *pem = NULL;
    long pl = BIO_get_mem_data(bio, &pem);
    char h[256], p[1024], tok[2048];
    const char *hj = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"20260101T000000Z\"}";
    b64u((const unsigned char *)hj, strlen(hj), h);
    const char *pj = payload_json(NULL);
    b64u((const unsigned char *)pj, strlen(pj), p);
    int n = snprintf(tok, sizeof tok, "%s.%s", h, p);
    unsigned char mac[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), pem, (int)pl, (unsigned char *)tok, (size_t)n, mac, &ml);
    CU_ASSERT_EQUAL(ml, 32);
    tok[n++] = '.';
    b64u(mac, 32, tok + n);
    err_info e;
    jwt_claims out;
    CU_ASSERT_EQUAL(verify(ks, tok, &out, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "algorithm"));
    /* the same MAC padded to the ES256 signature length */
    unsigned char mac64[64];
    memcpy(mac64, mac, 32);
    memcpy(mac64 + 32, mac, 32);
    b64u(mac64, 64, tok + n);
    CU_ASSERT_EQUAL(verify(ks, tok, &out, &e), ERR_UNAUTHENTICATED);
    BIO_free(bio);
    EVP_PKEY_free(k);
    jwt_keyset_free(ks);
}

static void test_unknown_kid(void)
{
    mkdirs();
    jwt_keyset *ks1 = load(g_dir);
    jwt_keyset *ks2 = load(g_dir2);
    jwt_claims c = claims(), out;
    char *tok = NULL;
    err_info e;
    err_clear(&e);
    /* signed by dir2's newest key, which dir1 does not know */
    CU_ASSERT_EQUAL_FATAL(jwt_sign(ks2, &c, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(verify(ks1, tok, &out, &e), ERR_NOT_FOUND);
    CU_ASSERT_PTR_NULL(strstr(e.msg, tok));
    /* no kid at all: unauthenticated (nothing to refresh) */
    char *f = forge_es256("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", payload_json(NULL),
                          first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks1, f, &out, &e), ERR_UNAUTHENTICATED);
    free(f);
    /* a known kid but the signature is by another key */
    char p[512];
    snprintf(p, sizeof p, "%s/20270101T000000Z.pem", g_dir2);
    f = forge_es256("{\"alg\":\"ES256\",\"kid\":\"20260101T000000Z\"}", payload_json(NULL), p);
    CU_ASSERT_EQUAL(verify(ks1, f, &out, &e), ERR_UNAUTHENTICATED);
    free(f);
    free(tok);
    jwt_keyset_free(ks1);
    jwt_keyset_free(ks2);
}

static void test_tampered(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir);
    jwt_claims c = claims(), out;
    char *tok = NULL;
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL_FATAL(jwt_sign(ks, &c, &tok, &e), ERR_OK);
    size_t n = strlen(tok);
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    /* payload: swap in another subject, keep header and signature */
    char other[1024], pb[2048];
    snprintf(other, sizeof other,
             "{\"iss\":\"identity\",\"aud\":\"identity-api\",\"sub\":\"admin\",\"sid\":\"%s\","
             "\"jti\":\"%s\",\"iat\":%lld,\"exp\":%lld}",
             c.sid, c.jti, (long long)c.iat, (long long)c.exp);
    b64u((const unsigned char *)other, strlen(other), pb);
    char forged[4096];
    snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(d1 - tok), tok, pb, d2);
    CU_ASSERT_EQUAL(verify(ks, forged, &out, &e), ERR_UNAUTHENTICATED);
    /* every single character of the token flipped → rejected */
    int accepted = 0;
    for (size_t i = 0; i < n; i++) {
        char *t = strdup(tok);
        if (t[i] == '.')
            t[i] = 'A';
        else
            t[i] = t[i] == 'A' ? 'B' : 'A';
        if (verify(ks, t, &out, &e) == ERR_OK)
            accepted++;
        free(t);
    }
    CU_ASSERT_EQUAL(accepted, 0);
    /* signature: last char changed (only unused bits would differ for some choices) */
    char *t = strdup(tok);
    char *last = t + n - 1;
    *last = *last == 'A' ? 'B' : 'A';
    CU_ASSERT_EQUAL(verify(ks, t, &out, &e), ERR_UNAUTHENTICATED);
    free(t);
    /* signature truncated / extended */
    t = strdup(tok);
    t[n - 2] = 0;
    CU_ASSERT_EQUAL(verify(ks, t, &out, &e), ERR_UNAUTHENTICATED);
    free(t);
    t = malloc(n + 8);
    snprintf(t, n + 8, "%sAAAA", tok);
    CU_ASSERT_EQUAL(verify(ks, t, &out, &e), ERR_UNAUTHENTICATED);
    free(t);
    /* the original still verifies */
    CU_ASSERT_EQUAL(verify(ks, tok, &out, &e), ERR_OK);
    free(tok);
    jwt_keyset_free(ks);
}

static void test_times(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir);
    jwt_claims c = claims(), out;
    char *tok = NULL;
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL_FATAL(jwt_sign(ks, &c, &tok, &e), ERR_OK);
    jwt_verify_opts o = vopts();
    /* within leeway after exp: ok; beyond: expired */
    o.now = c.exp + 29;
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_OK);
    o.now = c.exp + 30;
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "expired"));
    o.now = c.exp + 100000;
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_UNAUTHENTICATED);
    o.leeway_s = 0;
    o.now = c.exp;
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_UNAUTHENTICATED);
    /* iat in the future beyond leeway */
    o = vopts();
    o.now = c.iat - 31;
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_UNAUTHENTICATED);
    o.now = c.iat - 10;
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_OK);
    free(tok);
    /* nbf in the future */
    c.nbf = NOW + 120;
    CU_ASSERT_EQUAL_FATAL(jwt_sign(ks, &c, &tok, &e), ERR_OK);
    o = vopts();
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "not yet"));
    o.now = NOW + 100; /* within leeway of nbf */
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_OK);
    free(tok);
    /* now = 0 means the wall clock: a token for NOW (2027) is not yet valid today? it is issued
     * in the future relative to real time unless the clock is past 2027 */
    c = claims();
    c.iat = (int64_t)time(NULL);
    c.exp = c.iat + 60;
    CU_ASSERT_EQUAL_FATAL(jwt_sign(ks, &c, &tok, &e), ERR_OK);
    o = vopts();
    o.now = 0;
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_OK);
    free(tok);
    jwt_keyset_free(ks);
}

static void test_iss_aud(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir);
    jwt_claims c = claims(), out;
    char *tok = NULL;
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL_FATAL(jwt_sign(ks, &c, &tok, &e), ERR_OK);
    jwt_verify_opts o = vopts();
    o.iss = "someone-else";
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "issuer"));
    o = vopts();
    o.aud = "other-api";
    CU_ASSERT_EQUAL(jwt_verify(ks, tok, &o, &out, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "audience"));
    free(tok);
    /* aud as an array containing ours: accepted; array without: rejected */
    const char *hj = "{\"alg\":\"ES256\",\"kid\":\"20260101T000000Z\"}";
    char pj[1024];
    snprintf(pj, sizeof pj,
             "{\"iss\":\"identity\",\"aud\":[\"x\",\"identity-api\"],\"sub\":\"u\",\"sid\":\"s\","
             "\"jti\":\"j\",\"iat\":%lld,\"exp\":%lld}",
             (long long)NOW, (long long)NOW + 60);
    char *f = forge_es256(hj, pj, first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, f, &out, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(out.aud, "identity-api");
    free(f);
    snprintf(pj, sizeof pj,
             "{\"iss\":\"identity\",\"aud\":[\"x\",\"y\"],\"sub\":\"u\",\"sid\":\"s\","
             "\"jti\":\"j\",\"iat\":%lld,\"exp\":%lld}",
             (long long)NOW, (long long)NOW + 60);
    f = forge_es256(hj, pj, first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, f, &out, &e), ERR_UNAUTHENTICATED);
    free(f);
    jwt_keyset_free(ks);
}

static void test_missing_claims(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir);
    const char *hj = "{\"alg\":\"ES256\",\"kid\":\"20260101T000000Z\"}";
    const char *names[] = {"iss", "aud", "sub", "sid", "jti", "iat", "exp"};
    err_info e;
    jwt_claims out;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        json_t *o = json_loads(payload_json(NULL), 0, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(o);
        json_object_del(o, names[i]);
        char *pj = json_dumps(o, JSON_COMPACT);
        char *f = forge_es256(hj, pj, first_key_path(g_dir));
        CU_ASSERT_NOT_EQUAL(verify(ks, f, &out, &e), ERR_OK);
        free(f);
        /* wrong type */
        json_object_set_new(o, names[i], json_true());
        free(pj);
        pj = json_dumps(o, JSON_COMPACT);
        f = forge_es256(hj, pj, first_key_path(g_dir));
        CU_ASSERT_NOT_EQUAL(verify(ks, f, &out, &e), ERR_OK);
        free(f);
        free(pj);
        json_decref(o);
    }
    /* empty sub */
    jwt_claims c = claims();
    c.sub[0] = 0;
    char *tok = NULL;
    CU_ASSERT_EQUAL_FATAL(jwt_sign(ks, &c, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(verify(ks, tok, &out, &e), ERR_UNAUTHENTICATED);
    free(tok);
    /* payload not an object, duplicate keys */
    char *f = forge_es256(hj, "[1,2]", first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, f, &out, &e), ERR_UNAUTHENTICATED);
    free(f);
    char dup[1024];
    snprintf(dup, sizeof dup, "%.*s,\"sub\":\"admin\"}", (int)strlen(payload_json(NULL)) - 1,
             payload_json(NULL));
    f = forge_es256(hj, dup, first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, f, &out, &e), ERR_UNAUTHENTICATED);
    free(f);
    /* over-long sub does not overflow the claims struct */
    char big[2048], longsub[400];
    memset(longsub, 'a', sizeof longsub - 1);
    longsub[sizeof longsub - 1] = 0;
    snprintf(big, sizeof big,
             "{\"iss\":\"identity\",\"aud\":\"identity-api\",\"sub\":\"%s\",\"sid\":\"s\","
             "\"jti\":\"j\",\"iat\":%lld,\"exp\":%lld}",
             longsub, (long long)NOW, (long long)NOW + 60);
    f = forge_es256(hj, big, first_key_path(g_dir));
    CU_ASSERT_EQUAL(verify(ks, f, &out, &e), ERR_UNAUTHENTICATED);
    free(f);
    jwt_keyset_free(ks);
}

static void test_garbage(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir);
    err_info e;
    jwt_claims out;
    const char *bad[] = {
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "a.b",
        "abc",
        "....",
        "e30.e30.",
        "e30.e30.e30",
        "!!!.###.$$$",
        "eyJhbGciOiJFUzI1NiJ9..",
        "eyJhbGciOiJFUzI1NiJ9.e30."
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer x.y.z",
        "null.null.null",
        "\xff\xfe.\x01.\x02"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CU_ASSERT_NOT_EQUAL(verify(ks, bad[i], &out, &e), ERR_OK);
    CU_ASSERT_EQUAL(verify(ks, NULL, &out, &e), ERR_UNAUTHENTICATED);
    /* huge token */
    size_t n = 1 << 20;
    char *huge = malloc(n + 1);
    memset(huge, 'A', n);
    huge[100] = '.';
    huge[200] = '.';
    huge[n] = 0;
    CU_ASSERT_EQUAL(verify(ks, huge, &out, &e), ERR_UNAUTHENTICATED);
    free(huge);
    /* random bytes (deterministic seed) */
    srand(42);
    for (int i = 0; i < 2000; i++) {
        char t[300];
        size_t len = (size_t)(rand() % 299);
        for (size_t j = 0; j < len; j++) {
            int r = rand() % 70;
            t[j] = r < 64 ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[r]
                          : (r < 68 ? '.' : (char)(rand() % 255 + 1));
        }
        t[len] = 0;
        CU_ASSERT_NOT_EQUAL(verify(ks, t, &out, &e), ERR_OK);
    }
    /* NULL keyset / opts */
    jwt_verify_opts o = vopts();
    CU_ASSERT_NOT_EQUAL(jwt_verify(NULL, "a.b.c", &o, &out, &e), ERR_OK);
    CU_ASSERT_NOT_EQUAL(jwt_verify(ks, "a.b.c", NULL, &out, &e), ERR_OK);
    jwt_keyset_free(ks);
    jwt_keyset_free(NULL);
}

static void test_rotation(void)
{
    mkdirs();
    jwt_keyset *old = load(g_dir);
    jwt_keyset *both = load(g_dir2);
    CU_ASSERT_EQUAL(jwt_keyset_count(both), 2);
    jwt_claims c = claims(), out;
    char *t_old = NULL, *t_new = NULL;
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL_FATAL(jwt_sign(old, &c, &t_old, &e), ERR_OK);
    CU_ASSERT_EQUAL_FATAL(jwt_sign(both, &c, &t_new, &e), ERR_OK);
    /* newest signs: the kid in the header is the greater one */
    jwt_keyset *only_old_pub = NULL;
    (void)only_old_pub;
    CU_ASSERT_EQUAL(verify(old, t_new, &out, &e), ERR_NOT_FOUND);
    /* both verify */
    CU_ASSERT_EQUAL(verify(both, t_old, &out, &e), ERR_OK);
    CU_ASSERT_EQUAL(verify(both, t_new, &out, &e), ERR_OK);
    char *jwks = jwt_keyset_jwks(both);
    CU_ASSERT_PTR_NOT_NULL(strstr(jwks, "\"kid\":\"20270101T000000Z\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(jwks, "\"kid\":\"20260101T000000Z\""));
    free(jwks);
    free(t_old);
    free(t_new);
    jwt_keyset_free(old);
    jwt_keyset_free(both);
}

static void count_cb(void *arg, const char *kid, const char *x, const char *y)
{
    int *n = arg;
    (*n)++;
    CU_ASSERT(strlen(kid) > 0);
    CU_ASSERT_EQUAL(strlen(x), 43);
    CU_ASSERT_EQUAL(strlen(y), 43);
}

static void test_jwks(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir2);
    char *doc = jwt_keyset_jwks(ks);
    json_error_t je;
    json_t *root = json_loads(doc, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    json_t *keys = json_object_get(root, "keys");
    CU_ASSERT_TRUE(json_is_array(keys));
    CU_ASSERT_EQUAL(json_array_size(keys), 2);
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        CU_ASSERT_EQUAL(json_object_size(k), 7);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(k, "kty")), "EC");
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(k, "crv")), "P-256");
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(k, "use")), "sig");
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(k, "alg")), "ES256");
        CU_ASSERT_EQUAL(strlen(json_string_value(json_object_get(k, "x"))), 43);
        CU_ASSERT_EQUAL(strlen(json_string_value(json_object_get(k, "y"))), 43);
        CU_ASSERT_PTR_NULL(json_object_get(k, "d")); /* never the private part */
    }
    json_decref(root);
    int n = 0;
    jwt_keyset_each(ks, count_cb, &n);
    CU_ASSERT_EQUAL(n, 2);

    /* round trip: a verify-only keyset from the JWKS verifies tokens of both keys */
    err_info e;
    err_clear(&e);
    jwt_keyset *pub = jwt_keyset_from_jwks(doc, strlen(doc), &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pub);
    CU_ASSERT_EQUAL(jwt_keyset_count(pub), 2);
    jwt_claims c = claims(), out;
    char *tok = NULL;
    CU_ASSERT_EQUAL(jwt_sign(ks, &c, &tok, &e), ERR_OK);
    CU_ASSERT_EQUAL(verify(pub, tok, &out, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(out.sid, c.sid);
    char *f = forge_es256("{\"alg\":\"ES256\",\"kid\":\"20260101T000000Z\"}", payload_json(NULL),
                          first_key_path(g_dir2));
    CU_ASSERT_EQUAL(verify(pub, f, &out, &e), ERR_OK);
    free(f);
    /* it cannot sign */
    char *t2 = NULL;
    CU_ASSERT_EQUAL(jwt_sign(pub, &c, &t2, &e), ERR_FAILED_PRECONDITION);
    CU_ASSERT_PTR_NULL(t2);
    /* its own JWKS is the same document */
    char *doc2 = jwt_keyset_jwks(pub);
    CU_ASSERT_STRING_EQUAL(doc, doc2);
    free(doc2);
    free(tok);

    /* add_public: bad coordinates / point off the curve rejected; replacing a kid works */
    CU_ASSERT_EQUAL(jwt_keyset_add_public(pub, "x", "abc", "def", &e), ERR_INVALID_ARGUMENT);
    const char *zero43 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const char *one43 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE";
    CU_ASSERT_EQUAL(jwt_keyset_add_public(pub, "x", zero43, one43, &e), ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(jwt_keyset_count(pub), 2);

    /* other key types are skipped; garbage is an error; no usable key → NOT_FOUND */
    const char *rsa = "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"x\",\"e\":\"AQAB\",\"kid\":\"r\"}]}";
    jwt_keyset *none = jwt_keyset_from_jwks(rsa, strlen(rsa), &e);
    CU_ASSERT_PTR_NULL(none);
    CU_ASSERT_EQUAL(e.code, ERR_NOT_FOUND);
    CU_ASSERT_PTR_NULL(jwt_keyset_from_jwks("{", 1, &e));
    CU_ASSERT_PTR_NULL(jwt_keyset_from_jwks("{\"keys\":5}", 10, &e));
    CU_ASSERT_PTR_NULL(jwt_keyset_from_jwks(NULL, 0, &e));

    jwt_keyset_free(pub);
    free(doc);
    jwt_keyset_free(ks);
}

static void test_load_errors(void)
{
    mkdirs();
    err_info e;
    err_clear(&e);
    char d[300], p[400];
    snprintf(d, sizeof d, "/tmp/test_jwt.%d.c", (int)getpid());
    mkdir(d, 0700);
    CU_ASSERT_PTR_NULL(jwt_keyset_load_dir(d, &e));
    CU_ASSERT_EQUAL(e.code, ERR_NOT_FOUND);
    CU_ASSERT_PTR_NULL(jwt_keyset_load_dir("/nonexistent/dir", &e));
    snprintf(p, sizeof p, "%s/bad.pem", d);
    FILE *f = fopen(p, "w");
    fputs("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    err_clear(&e);
    CU_ASSERT_PTR_NULL(jwt_keyset_load_dir(d, &e));
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "bad.pem"));
    /* SEC1 ("EC PRIVATE KEY") is accepted too; an RSA key is not */
    unlink(p);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl ecparam -name prime256v1 -genkey -noout -out %s/sec1.pem 2>/dev/null", d);
    CU_ASSERT_EQUAL(system(cmd), 0);
    jwt_keyset *ks = jwt_keyset_load_dir(d, &e);
    CU_ASSERT_PTR_NOT_NULL(ks);
    CU_ASSERT_TRUE(jwt_keyset_has_kid(ks, "sec1"));
    jwt_keyset_free(ks);
    snprintf(
        cmd, sizeof cmd,
        "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out %s/rsa.pem 2>/dev/null",
        d);
    CU_ASSERT_EQUAL(system(cmd), 0);
    CU_ASSERT_PTR_NULL(jwt_keyset_load_dir(d, &e));
    CU_ASSERT_EQUAL(e.code, ERR_INVALID_ARGUMENT);
    snprintf(cmd, sizeof cmd, "rm -rf %s", d);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

typedef struct thr_arg {
    const jwt_keyset *ks;
    const char *tok;
    int ok;
} thr_arg;

static void *verify_thread(void *p)
{
    thr_arg *a = p;
    for (int i = 0; i < 200; i++) {
        err_info e;
        jwt_claims out;
        jwt_verify_opts o = vopts();
        if (jwt_verify(a->ks, a->tok, &o, &out, &e) == ERR_OK)
            a->ok++;
    }
    return NULL;
}

static void test_threads(void)
{
    mkdirs();
    jwt_keyset *ks = load(g_dir2);
    jwt_claims c = claims();
    char *tok = NULL;
    err_info e;
    CU_ASSERT_EQUAL_FATAL(jwt_sign(ks, &c, &tok, &e), ERR_OK);
    pthread_t t[4];
    thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (thr_arg){.ks = ks, .tok = tok, .ok = 0};
        pthread_create(&t[i], NULL, verify_thread, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(a[i].ok, 200);
    }
    free(tok);
    jwt_keyset_free(ks);
    cleanup_dirs();
}

int main(void)
{
    static const ts_case cases[] = {
        {"round_trip", test_round_trip},
        {"alg_none", test_alg_none},
        {"hs256_with_public_key", test_hs256_with_public_key},
        {"unknown_kid", test_unknown_kid},
        {"tampered", test_tampered},
        {"times", test_times},
        {"iss_aud", test_iss_aud},
        {"missing_claims", test_missing_claims},
        {"garbage", test_garbage},
        {"rotation", test_rotation},
        {"jwks", test_jwks},
        {"load_errors", test_load_errors},
        {"threads", test_threads},
        {NULL, NULL},
    };
    return ts_main("jwt", cases);
}
