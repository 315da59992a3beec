/* test_jwt_sign — the provider tokens pushd signs (pushd/src/jwt_sign.c,
 * apns.c's provider token, oauth.c's assertion): each is decoded here and
 * its signature verified with OpenSSL directly (ES256 from raw r||s back
 * to DER), and the key checks refuse the wrong kinds of keys. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "apns.h"
#include "config.h"
#include "jwt_sign.h"
#include "oauth.h"

static char *pem_of(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = strndup(p, (size_t)n);
    BIO_free(b);
    return out;
}

/* base64url -> bytes (malloc'd), *len. */
static unsigned char *unb64(const char *s, size_t n, size_t *len)
{
    char *t = calloc(1, n + 4);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        t[m++] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    while (m % 4)
        t[m++] = '=';
    unsigned char *out = malloc(m);
    int r = EVP_DecodeBlock(out, (unsigned char *)t, (int)m);
    assert_true(r >= 0);
    size_t pad = 0;
    while (pad < 2 && m > pad && t[m - 1 - pad] == '=')
        pad++;
    *len = (size_t)r - pad;
    free(t);
    return out;
}

typedef struct parts {
    cJSON *header, *claims;
} parts;

/* Split, decode, verify; fail the test if the signature is wrong. */
static parts verify(const char *tok, EVP_PKEY *pub, int es256)
{
    const char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));
    assert_null(strchr(tok, '='));
    size_t hl, cl, sl;
    unsigned char *h = unb64(tok, (size_t)(d1 - tok), &hl);
    unsigned char *c = unb64(d1 + 1, (size_t)(d2 - d1 - 1), &cl);
    unsigned char *sig = unb64(d2 + 1, strlen(d2 + 1), &sl);
    unsigned char *der = NULL;
    int derlen = (int)sl;
    if (es256) {
        assert_int_equal(sl, 64);
        ECDSA_SIG *es = ECDSA_SIG_new();
        ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
        derlen = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub), 1);
    int ok = EVP_DigestVerify(ctx, es256 ? der : sig, (size_t)derlen, (const unsigned char *)tok,
                              (size_t)(d2 - tok));
    EVP_MD_CTX_free(ctx);
    assert_int_equal(ok, 1);
    parts p = {cJSON_ParseWithLength((char *)h, hl), cJSON_ParseWithLength((char *)c, cl)};
    assert_non_null(p.header);
    assert_non_null(p.claims);
    OPENSSL_free(der);
    free(h);
    free(c);
    free(sig);
    return p;
}

static const char *str(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static double num(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void b64url(void **state)
{
    char out[16];
    assert_int_equal(pd_b64url((const unsigned char *)"", 0, out), 0);
    assert_int_equal(pd_b64url((const unsigned char *)"\xfb\xff", 2, out), 3);
    assert_string_equal(out, "-_8");
    assert_int_equal(pd_b64url((const unsigned char *)"abcd", 4, out), 6);
    assert_string_equal(out, "YWJjZA");
}

static void es256_and_rs256(void **state)
{
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    char *ecpem = pem_of(ec), *rsapem = pem_of(rsa), err[200];
    EVP_PKEY *k1 = pd_key_load_pem(ecpem, strlen(ecpem), PD_ES256, err, sizeof err);
    EVP_PKEY *k2 = pd_key_load_pem(rsapem, strlen(rsapem), PD_RS256, err, sizeof err);
    assert_non_null(k1);
    assert_non_null(k2);
    for (int i = 0; i < 20; i++) { /* r or s with leading zero bytes must still be 32 bytes */
        char *t = pd_jwt_sign(k1, PD_ES256, "{\"alg\":\"ES256\"}", "{\"i\":1}");
        parts p = verify(t, ec, 1);
        assert_string_equal(str(p.header, "alg"), "ES256");
        cJSON_Delete(p.header);
        cJSON_Delete(p.claims);
        free(t);
    }
    char *t = pd_jwt_sign(k2, PD_RS256, "{\"alg\":\"RS256\"}", "{\"x\":\"y\"}");
    parts p = verify(t, rsa, 0);
    assert_string_equal(str(p.claims, "x"), "y");
    cJSON_Delete(p.header);
    cJSON_Delete(p.claims);
    free(t);
    /* Wrong kinds of keys. */
    assert_null(pd_key_load_pem(rsapem, strlen(rsapem), PD_ES256, err, sizeof err));
    assert_non_null(strstr(err, "P-256"));
    assert_null(pd_key_load_pem(ecpem, strlen(ecpem), PD_RS256, err, sizeof err));
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    char *p384pem = pem_of(p384);
    assert_null(pd_key_load_pem(p384pem, strlen(p384pem), PD_ES256, err, sizeof err));
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    char *smallpem = pem_of(small);
    assert_null(pd_key_load_pem(smallpem, strlen(smallpem), PD_RS256, err, sizeof err));
    assert_null(pd_key_load_pem("garbage", 7, PD_ES256, err, sizeof err));
    assert_non_null(strstr(err, "PEM"));
    EVP_PKEY_free(p384);
    EVP_PKEY_free(small);
    free(p384pem);
    free(smallpem);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
    free(ecpem);
    free(rsapem);
}

static void apns_provider_token(void **state)
{
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *pem = pem_of(ec);
    char path[] = "/tmp/pushd-test-p8-XXXXXX";
    int fd = mkstemp(path);
    assert_int_equal(write(fd, pem, strlen(pem)), (int)strlen(pem));
    close(fd);
    pd_config c;
    assert_int_equal(pd_config_defaults(&c), 0);
    c.apns_key_file = strdup(path);
    c.apns_key_id = strdup("KEYID12345");
    c.apns_team_id = strdup("TEAMID1234");
    char err[300];
    pd_apns *a = pd_apns_new(&c, err, sizeof err);
    assert_non_null(a);
    int64_t t0 = 1700000000000LL;
    unsigned g1, g2, g3;
    char *tok1 = strdup(pd_apns_token(a, t0, &g1));
    parts p = verify(tok1, ec, 1);
    assert_string_equal(str(p.header, "alg"), "ES256");
    assert_string_equal(str(p.header, "kid"), "KEYID12345");
    assert_string_equal(str(p.claims, "iss"), "TEAMID1234");
    assert_true(num(p.claims, "iat") == 1700000000);
    cJSON_Delete(p.header);
    cJSON_Delete(p.claims);
    /* Reused until the refresh age; an "expired" answer within a minute does not remake it. */
    assert_string_equal(pd_apns_token(a, t0 + 49 * 60000, &g2), tok1);
    assert_int_equal(g1, g2);
    pd_apns_token_expired(a, g1, t0 + 30000);
    assert_string_equal(pd_apns_token(a, t0 + 31000, &g2), tok1);
    const char *tok2 = pd_apns_token(a, t0 + 50 * 60000, &g3);
    assert_true(g3 != g1);
    assert_string_not_equal(tok2, tok1);
    /* Expired, reported for the current generation after a minute: remade. */
    pd_apns_token_expired(a, g3, t0 + 52 * 60000);
    unsigned g4;
    pd_apns_token(a, t0 + 52 * 60000, &g4);
    assert_true(g4 != g3);
    assert_int_equal(pd_apns_tokens_made(a), 3);
    /* A stale generation changes nothing. */
    pd_apns_token_expired(a, g1, t0 + 55 * 60000);
    unsigned g5;
    pd_apns_token(a, t0 + 55 * 60000, &g5);
    assert_int_equal(g5, g4);
    free(tok1);
    pd_apns_free(a);
    /* A missing key file: the error names the key. */
    unlink(path);
    assert_null(pd_apns_new(&c, err, sizeof err));
    assert_non_null(strstr(err, "apns_key_file:"));
    pd_config_free(&c);
    EVP_PKEY_free(ec);
    free(pem);
}

static void oauth_assertion(void **state)
{
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    char *t = pd_oauth_assertion(rsa, "kid1", "sa@p.iam.gserviceaccount.com",
                                 "https://oauth2.googleapis.com/token", 1700000000);
    parts p = verify(t, rsa, 0);
    assert_string_equal(str(p.header, "alg"), "RS256");
    assert_string_equal(str(p.header, "typ"), "JWT");
    assert_string_equal(str(p.header, "kid"), "kid1");
    assert_string_equal(str(p.claims, "iss"), "sa@p.iam.gserviceaccount.com");
    assert_string_equal(str(p.claims, "scope"), PD_FCM_SCOPE);
    assert_string_equal(str(p.claims, "aud"), "https://oauth2.googleapis.com/token");
    assert_true(num(p.claims, "iat") == 1700000000);
    assert_true(num(p.claims, "exp") - num(p.claims, "iat") == 3600);
    cJSON_Delete(p.header);
    cJSON_Delete(p.claims);
    free(t);
    EVP_PKEY_free(rsa);

    char *tok, err[200];
    int64_t ttl;
    const char ok[] =
        "{\"access_token\":\"ya29.abc\",\"expires_in\":3599,\"token_type\":\"Bearer\"}";
    assert_int_equal(pd_oauth_parse_answer(ok, sizeof ok - 1, &tok, &ttl, err, sizeof err), 0);
    assert_string_equal(tok, "ya29.abc");
    assert_int_equal(ttl, 3599);
    free(tok);
    const char bad[] =
        "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT Signature.\"}";
    assert_int_equal(pd_oauth_parse_answer(bad, sizeof bad - 1, &tok, &ttl, err, sizeof err), -1);
    assert_string_equal(err, "invalid_grant: Invalid JWT Signature.");
    assert_int_equal(pd_oauth_parse_answer("{}", 2, &tok, &ttl, err, sizeof err), -1);
    assert_int_equal(pd_oauth_parse_answer("<html>", 6, &tok, &ttl, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(b64url),
        cmocka_unit_test(es256_and_rs256),
        cmocka_unit_test(apns_provider_token),
        cmocka_unit_test(oauth_assertion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
