/* Unit tests for gateway/authn: local ES256 verification from a JWKS, the verified-token cache,
 * and the revocation decision. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "authn.h"
#include "test_support.h"

static jwt_keyset *signer;
static char dir[64];

static char *token(int64_t iat, int64_t exp, const char *iss)
{
    jwt_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.iss, sizeof c.iss, "%s", iss);
    snprintf(c.aud, sizeof c.aud, "identity-api");
    snprintf(c.sub, sizeof c.sub, "11111111-2222-4333-8444-555555555555");
    snprintf(c.sid, sizeof c.sid, "sid-1");
    snprintf(c.jti, sizeof c.jti, "jti-1");
    c.iat = iat;
    c.exp = exp;
    char *t = NULL;
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL_FATAL(jwt_sign(signer, &c, &t, &e), ERR_OK);
    return t;
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/gwauthn.XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/20260101T000000Z.pem", dir);
    err_info e;
    err_clear(&e);
    CU_ASSERT_EQUAL_FATAL(jwt_key_generate(path, &e), ERR_OK);
    signer = jwt_keyset_load_dir(dir, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(signer);
    unlink(path);
    rmdir(dir);
}

static void test_verify(void)
{
    setup();
    authn_opts o = {"identity", "identity-api", 30, NULL, 16};
    authn *a = authn_new(&o);
    jwt_claims c;
    err_info e;
    err_clear(&e);
    int64_t now = (int64_t)time(NULL);
    char *t = token(now, now + 600, "identity");
    CU_ASSERT_EQUAL(authn_verify(a, t, &c, &e), ERR_UNAVAILABLE); /* no keys yet */
    CU_ASSERT_FALSE(authn_has_keys(a));
    char *jwks = jwt_keyset_jwks(signer);
    CU_ASSERT_EQUAL_FATAL(authn_set_jwks(a, jwks, strlen(jwks), &e), ERR_OK);
    CU_ASSERT_TRUE(authn_has_keys(a));
    CU_ASSERT_EQUAL(authn_verify(a, t, &c, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(c.sid, "sid-1");
    /* cached path gives the same claims */
    memset(&c, 0, sizeof c);
    CU_ASSERT_EQUAL(authn_verify(a, t, &c, &e), ERR_OK);
    CU_ASSERT_STRING_EQUAL(c.jti, "jti-1");
    /* tampered, wrong issuer, expired, garbage */
    char *bad = strdup(t);
    bad[strlen(bad) - 3] = bad[strlen(bad) - 3] == 'A' ? 'B' : 'A';
    CU_ASSERT_EQUAL(authn_verify(a, bad, &c, &e), ERR_UNAUTHENTICATED);
    char *t2 = token(now, now + 600, "other");
    CU_ASSERT_EQUAL(authn_verify(a, t2, &c, &e), ERR_UNAUTHENTICATED);
    char *t3 = token(now - 7200, now - 3600, "identity");
    CU_ASSERT_EQUAL(authn_verify(a, t3, &c, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(authn_verify(a, "a.b.c", &c, &e), ERR_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(authn_verify(a, "", &c, &e), ERR_UNAUTHENTICATED);
    /* no Redis: revocation fails closed */
    err_clear(&e);
    CU_ASSERT_EQUAL(authn_check_revoked(a, &c, &e), ERR_UNAVAILABLE);
    free(bad);
    free(t);
    free(t2);
    free(t3);
    free(jwks);
    authn_free(a);
    jwt_keyset_free(signer);
}

static void test_revocation_decision(void)
{
    jwt_claims c;
    memset(&c, 0, sizeof c);
    c.iat = 1000;
    CU_ASSERT_FALSE(authn_is_revoked(&c, NULL, NULL, NULL));
    CU_ASSERT_TRUE(authn_is_revoked(&c, "1", NULL, NULL));
    CU_ASSERT_TRUE(authn_is_revoked(&c, NULL, "1", NULL));
    CU_ASSERT_TRUE(authn_is_revoked(&c, NULL, NULL, "1001"));
    CU_ASSERT_FALSE(authn_is_revoked(&c, NULL, NULL, "1000")); /* strictly less */
    CU_ASSERT_FALSE(authn_is_revoked(&c, NULL, NULL, "999"));
    CU_ASSERT_TRUE(authn_is_revoked(&c, NULL, NULL, "garbage"));
}

int main(void)
{
    static const ts_case cases[] = {
        {"verify", test_verify}, {"revocation decision", test_revocation_decision}, {NULL, NULL}};
    return ts_main("gateway_authn", cases);
}
