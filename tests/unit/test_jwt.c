/*
 * test_jwt.c - unit tests for plugin/src/jwt.[ch] (cmocka).
 *
 * RSA and EC keys are generated here with OpenSSL into a temporary
 * directory (removed by the group teardown); RS256/ES256 tokens are signed
 * here with OpenSSL directly, independently of the code under test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "jwt.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOW 1700000000LL
#define MAX_FILES 16

static const char SECRET[] = "test-secret-0123456789abcdef-0123456789abcdef";
#define SECRET_LEN (sizeof SECRET - 1)
static const char HDR_HS[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
static const char HDR_RS[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
static const char HDR_ES[] = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";

static char tmp_dir[200];
static char tmp_files[MAX_FILES][300];
static int tmp_nfiles;

static struct {
    EVP_PKEY *rsa, *rsa2, *ec, *ec2;
    const char *rsa_pub, *ec_pub, *rsa1024_pub, *ec384_pub, *ed25519_pub, *rsa_priv, *garbage;
    const char *sec_lf, *sec_crlf, *sec_empty, *sec_big;
    unsigned char *rsa_pem, *ec_pem;
    size_t rsa_pem_len, ec_pem_len;
} g;

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static const char *tmp_path(const char *name)
{
    assert_true(tmp_nfiles < MAX_FILES);
    snprintf(tmp_files[tmp_nfiles], sizeof tmp_files[0], "%s/%s", tmp_dir, name);
    return tmp_files[tmp_nfiles++];
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(65536);
    assert_non_null(f);
    assert_non_null(buf);
    *n = fread(buf, 1, 65536, f);
    assert_true(*n > 0 && *n < 65536);
    fclose(f);
    return buf;
}

static void write_pub(const char *path, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PUBKEY(f, k), 1);
    assert_int_equal(fclose(f), 0);
}

static char *xstrdup_printf(const char *fmt, ...)
{
    va_list ap;
    int n;
    char *s;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    s = malloc((size_t)n + 1);
    assert_non_null(s);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* base64url without padding, independent of the code under test's helpers */
static char *b64u(const void *data, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    int len, i;
    assert_non_null(out);
    len = EVP_EncodeBlock((unsigned char *)out, data, (int)n);
    assert_true(len >= 0);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

enum kind { K_HS256, K_RS256, K_ES256, K_ES256_DER, K_NONE, K_HS256_SHORT };

/* Builds "<b64 header>.<b64 payload>.<b64 sig>" signing with OpenSSL directly. */
static char *make_token_n(const char *hdr, size_t hlen, const char *pay, size_t plen, enum kind k,
                          EVP_PKEY *key, const void *secret, size_t seclen)
{
    char *h64 = b64u(hdr, hlen), *p64 = b64u(pay, plen), *s64, *tok;
    char *input = xstrdup_printf("%s.%s", h64, p64);
    unsigned char sig[1024];
    size_t siglen = 0;

    if (k == K_HS256 || k == K_HS256_SHORT) {
        assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, seclen,
                                  (unsigned char *)input, strlen(input), sig, sizeof sig, &siglen));
        assert_int_equal(siglen, 32);
        if (k == K_HS256_SHORT) siglen = 31;
    } else if (k == K_RS256 || k == K_ES256 || k == K_ES256_DER) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        assert_non_null(ctx);
        assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);
        siglen = sizeof sig;
        assert_int_equal(EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)input, strlen(input)),
                         1);
        EVP_MD_CTX_free(ctx);
        if (k == K_ES256) {
            const unsigned char *p = sig;
            const BIGNUM *r, *s;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
            assert_non_null(es);
            ECDSA_SIG_get0(es, &r, &s);
            assert_int_equal(BN_bn2binpad(r, sig, 32), 32);
            assert_int_equal(BN_bn2binpad(s, sig + 32, 32), 32);
            ECDSA_SIG_free(es);
            siglen = 64;
        }
    }
    s64 = b64u(sig, siglen);
    tok = xstrdup_printf("%s.%s", input, s64);
    free(h64);
    free(p64);
    free(s64);
    free(input);
    return tok;
}

static char *make_token(const char *hdr, const char *pay, enum kind k, EVP_PKEY *key)
{
    return make_token_n(hdr, strlen(hdr), pay, strlen(pay), k, key, SECRET, SECRET_LEN);
}

static char *hs(const char *pay)
{
    return make_token(HDR_HS, pay, K_HS256, NULL);
}

static char *std_payload(long long exp)
{
    return xstrdup_printf("{\"sub\":\"alice\",\"did\":\"phone-1\",\"iat\":%lld,\"exp\":%lld}",
                          NOW - 10, exp);
}

static mqjwt_verifier *mkv_full(const void *secret, size_t seclen, const char *pem, const char *iss,
                                const char *aud, int64_t leeway, size_t maxlen)
{
    mqjwt_config cfg = {secret, seclen, pem, iss, aud, leeway, maxlen};
    char *errmsg = (char *)"sentinel";
    mqjwt_verifier *v = mqjwt_verifier_new(&cfg, &errmsg);
    if (!v) print_error("verifier_new: %s\n", errmsg ? errmsg : "(null)");
    assert_non_null(v);
    assert_null(errmsg);
    return v;
}

static mqjwt_verifier *mkv(const void *secret, const char *pem)
{
    return mkv_full(secret, secret ? SECRET_LEN : 0, pem, NULL, NULL, 0, 0);
}

/* Verifies at NOW; checks the error contract; returns the code. */
static int verify_at(const mqjwt_verifier *v, const char *tok, int64_t now, mqjwt_claims *c)
{
    static const mqjwt_claims zero;
    char err[256];
    int rc;
    memset(err, 'x', sizeof err);
    memset(c, 0xa5, sizeof *c);
    rc = mqjwt_verify(v, tok, now, c, err, sizeof err);
    assert_non_null(memchr(err, '\0', sizeof err));
    if (rc == MQJWT_OK) {
        assert_string_equal(err, "");
    } else {
        assert_true(rc < 0);
        assert_true(err[0] != '\0');
        assert_memory_equal(c, &zero, sizeof zero);
    }
    return rc;
}

static int verify(const mqjwt_verifier *v, const char *tok)
{
    mqjwt_claims c;
    return verify_at(v, tok, NOW, &c);
}

/* Replaces one character in the middle of part `part` (0..2) of a token. */
static void poke(char *tok, int part, size_t off)
{
    char *p = tok;
    int i;
    for (i = 0; i < part; i++) {
        p = strchr(p, '.');
        assert_non_null(p);
        p++;
    }
    assert_true(strlen(p) > off + 1);
    p[off] = p[off] == 'A' ? 'B' : 'A';
}

static void expect_payload(const mqjwt_verifier *v, const char *pay, int want)
{
    char *tok = hs(pay);
    int rc = verify(v, tok);
    if (rc != want)
        print_error("payload %s: got %d (%s), want %d\n", pay, rc, mqjwt_strerror(rc), want);
    assert_int_equal(rc, want);
    free(tok);
}

static void expect_header(const mqjwt_verifier *v, const char *hdr, int want)
{
    char *pay = std_payload(NOW + 100);
    char *tok = make_token(hdr, pay, K_HS256, NULL);
    int rc = verify(v, tok);
    if (rc != want)
        print_error("header %s: got %d (%s), want %d\n", hdr, rc, mqjwt_strerror(rc), want);
    assert_int_equal(rc, want);
    free(tok);
    free(pay);
}

/* ------------------------------------------------------------------ */
/* fixtures                                                            */

static int group_setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    EVP_PKEY *k;
    char *big;
    FILE *f;

    snprintf(tmp_dir, sizeof tmp_dir, "%s/test_jwt.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmp_dir)) return -1;

    g.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g.rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    g.ec2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!g.rsa || !g.rsa2 || !g.ec || !g.ec2) return -1;

    g.rsa_pub = tmp_path("rsa.pub.pem");
    write_pub(g.rsa_pub, g.rsa);
    g.ec_pub = tmp_path("ec.pub.pem");
    write_pub(g.ec_pub, g.ec);
    g.rsa_pem = read_file(g.rsa_pub, &g.rsa_pem_len);
    g.ec_pem = read_file(g.ec_pub, &g.ec_pem_len);

    g.rsa1024_pub = tmp_path("rsa1024.pub.pem");
    k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    if (!k) return -1;
    write_pub(g.rsa1024_pub, k);
    EVP_PKEY_free(k);
    g.ec384_pub = tmp_path("ec384.pub.pem");
    k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    if (!k) return -1;
    write_pub(g.ec384_pub, k);
    EVP_PKEY_free(k);
    g.ed25519_pub = tmp_path("ed25519.pub.pem");
    k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!k) return -1;
    write_pub(g.ed25519_pub, k);
    EVP_PKEY_free(k);

    g.rsa_priv = tmp_path("rsa.key.pem");
    f = fopen(g.rsa_priv, "w");
    if (!f || PEM_write_PrivateKey(f, g.rsa, NULL, NULL, 0, NULL, NULL) != 1) return -1;
    fclose(f);
    g.garbage = tmp_path("garbage.pem");
    write_file(g.garbage, "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n",
               63);

    g.sec_lf = tmp_path("secret-lf");
    write_file(g.sec_lf, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 65);
    g.sec_crlf = tmp_path("secret-crlf");
    write_file(g.sec_crlf, "abc\r\n\r\n", 7);
    g.sec_empty = tmp_path("secret-empty");
    write_file(g.sec_empty, "\n", 1);
    g.sec_big = tmp_path("secret-big");
    big = malloc(70000);
    if (!big) return -1;
    memset(big, 'k', 70000);
    write_file(g.sec_big, big, 70000);
    free(big);
    return 0;
}

static int group_teardown(void **state)
{
    int i;
    for (i = 0; i < tmp_nfiles; i++)
        unlink(tmp_files[i]);
    if (tmp_dir[0]) rmdir(tmp_dir);
    EVP_PKEY_free(g.rsa);
    EVP_PKEY_free(g.rsa2);
    EVP_PKEY_free(g.ec);
    EVP_PKEY_free(g.ec2);
    free(g.rsa_pem);
    free(g.ec_pem);
    return 0;
}

/* ------------------------------------------------------------------ */
/* valid tokens                                                        */

static void test_hs256_valid(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, NULL);
    const char *pay = "{\"sub\":\"alice\",\"did\":\"phone-1\",\"iat\":1699999990,"
                      "\"nbf\":1699999995,\"exp\":1700000100,\"jti\":\"x\"}";
    char *tok = NULL, *tok2;
    mqjwt_claims c;

    assert_int_equal(mqjwt_verifier_algs(v), MQJWT_ALG_HS256);
    assert_int_equal(mqjwt_sign_hs256(SECRET, SECRET_LEN, pay, &tok), MQJWT_OK);
    assert_int_equal(verify_at(v, tok, NOW, &c), MQJWT_OK);
    assert_string_equal(c.sub, "alice");
    assert_string_equal(c.did, "phone-1");
    assert_int_equal(c.exp, 1700000100);
    assert_int_equal(c.has_nbf, 1);
    assert_int_equal(c.nbf, 1699999995);
    assert_int_equal(c.has_iat, 1);
    assert_int_equal(c.iat, 1699999990);
    assert_int_equal(c.alg, MQJWT_ALG_HS256);

    /* signed independently with OpenSSL: identical token */
    tok2 = hs(pay);
    assert_string_equal(tok, tok2);
    free(tok2);
    free(tok);

    /* no nbf / iat: reported absent */
    tok = hs("{\"sub\":\"a\",\"did\":\"b\",\"exp\":1700000001}");
    assert_int_equal(verify_at(v, tok, NOW, &c), MQJWT_OK);
    assert_int_equal(c.has_nbf, 0);
    assert_int_equal(c.has_iat, 0);
    assert_int_equal(c.nbf, 0);
    free(tok);

    /* err may be NULL */
    tok = hs("{\"sub\":\"a\",\"did\":\"b\",\"exp\":1700000001}");
    assert_int_equal(mqjwt_verify(v, tok, NOW, &c, NULL, 0), MQJWT_OK);
    assert_int_equal(mqjwt_verify(v, tok, NOW + 5, &c, NULL, 0), MQJWT_ERR_EXPIRED);
    free(tok);
    mqjwt_verifier_free(v);
}

static void test_rfc7515_a1(void **state)
{
    /* RFC 7515 appendix A.1: the HMAC and base64url interoperate. The token
     * verifies, then fails on mqchat's own claims (no sub). */
    static const unsigned char key[64] = {
        0x03, 0x23, 0x35, 0x4b, 0x2b, 0x0f, 0xa5, 0xbc, 0x83, 0x7e, 0x06, 0x65, 0x77,
        0x7b, 0xa6, 0x8f, 0x5a, 0xb3, 0x28, 0xe6, 0xf0, 0x54, 0xc9, 0x28, 0xa9, 0x0f,
        0x84, 0xb2, 0xd2, 0x50, 0x2e, 0xbf, 0xd3, 0xfb, 0x5a, 0x92, 0xd2, 0x06, 0x47,
        0xef, 0x96, 0x8a, 0xb4, 0xc3, 0x77, 0x62, 0x3d, 0x22, 0x3d, 0x2e, 0x21, 0x72,
        0x05, 0x2e, 0x4f, 0x08, 0xc0, 0xcd, 0x9a, 0xf5, 0x67, 0xd0, 0x80, 0xa3};
    char tok[] = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
                 "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9"
                 "pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    mqjwt_verifier *v = mkv_full(key, sizeof key, NULL, NULL, NULL, 0, 0);
    mqjwt_claims c;
    char err[200];

    assert_int_equal(mqjwt_verify(v, tok, 1300819370, &c, err, sizeof err),
                     MQJWT_ERR_MISSING_CLAIM);
    assert_non_null(strstr(err, "sub"));
    poke(tok, 2, 10);
    assert_int_equal(verify_at(v, tok, 1300819370, &c), MQJWT_ERR_BAD_SIGNATURE);
    mqjwt_verifier_free(v);
}

static void test_rs256_valid(void **state)
{
    mqjwt_verifier *v = mkv(NULL, g.rsa_pub);
    char *pay = std_payload(NOW + 60);
    char *tok = make_token(HDR_RS, pay, K_RS256, g.rsa);
    mqjwt_claims c;

    assert_int_equal(mqjwt_verifier_algs(v), MQJWT_ALG_RS256);
    assert_int_equal(verify_at(v, tok, NOW, &c), MQJWT_OK);
    assert_string_equal(c.sub, "alice");
    assert_string_equal(c.did, "phone-1");
    assert_int_equal(c.exp, NOW + 60);
    assert_int_equal(c.alg, MQJWT_ALG_RS256);
    free(tok);
    /* header without typ, with kid: fine */
    tok = make_token("{\"alg\":\"RS256\",\"kid\":\"k1\"}", pay, K_RS256, g.rsa);
    assert_int_equal(verify(v, tok), MQJWT_OK);
    free(tok);
    free(pay);
    mqjwt_verifier_free(v);
}

static void test_es256_valid(void **state)
{
    mqjwt_verifier *v = mkv(NULL, g.ec_pub);
    mqjwt_claims c;
    int i;

    assert_int_equal(mqjwt_verifier_algs(v), MQJWT_ALG_ES256);
    /* many signatures, so r or s with leading zero bytes get exercised too */
    for (i = 0; i < 64; i++) {
        char *pay = xstrdup_printf("{\"sub\":\"bob\",\"did\":\"d%d\",\"exp\":%lld}", i, NOW + 60);
        char *tok = make_token(HDR_ES, pay, K_ES256, g.ec);
        assert_int_equal(verify_at(v, tok, NOW, &c), MQJWT_OK);
        assert_string_equal(c.sub, "bob");
        assert_int_equal(c.alg, MQJWT_ALG_ES256);
        free(tok);
        free(pay);
    }
    mqjwt_verifier_free(v);
}

static void test_secret_and_key_together(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, g.rsa_pub);
    char *pay = std_payload(NOW + 60);
    char *t1 = hs(pay), *t2 = make_token(HDR_RS, pay, K_RS256, g.rsa);
    char *t3 = make_token(HDR_ES, pay, K_ES256, g.ec);

    assert_int_equal(mqjwt_verifier_algs(v), MQJWT_ALG_HS256 | MQJWT_ALG_RS256);
    assert_int_equal(verify(v, t1), MQJWT_OK);
    assert_int_equal(verify(v, t2), MQJWT_OK);
    assert_int_equal(verify(v, t3), MQJWT_ERR_UNSUPPORTED_ALG);
    free(t1);
    free(t2);
    free(t3);
    free(pay);
    mqjwt_verifier_free(v);
}

/* ------------------------------------------------------------------ */
/* time                                                                */

static void test_expired(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, NULL);
    char *p1 = std_payload(NOW - 1), *p2 = std_payload(NOW), *p3 = std_payload(NOW + 1);
    char *t1 = hs(p1), *t2 = hs(p2), *t3 = hs(p3);
    mqjwt_claims c;
    char err[200];

    assert_int_equal(verify(v, t1), MQJWT_ERR_EXPIRED);
    assert_int_equal(verify(v, t2), MQJWT_ERR_EXPIRED); /* exp is exclusive */
    assert_int_equal(verify(v, t3), MQJWT_OK);
    assert_int_equal(mqjwt_verify(v, t1, NOW, &c, err, sizeof err), MQJWT_ERR_EXPIRED);
    assert_non_null(strstr(err, "expired"));
    free(t1);
    free(t2);
    free(t3);
    free(p1);
    free(p2);
    free(p3);
    mqjwt_verifier_free(v);
}

static void test_nbf(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, NULL);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"nbf\":1700000060,\"exp\":1700000600}",
                   MQJWT_ERR_NOT_YET_VALID);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"nbf\":1700000001,\"exp\":1700000600}",
                   MQJWT_ERR_NOT_YET_VALID);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"nbf\":1700000000,\"exp\":1700000600}",
                   MQJWT_OK);
    mqjwt_verifier_free(v);
}

static void test_leeway(void **state)
{
    mqjwt_verifier *v = mkv_full(SECRET, SECRET_LEN, NULL, NULL, NULL, 30, 0);
    mqjwt_verifier *strict = mkv(SECRET, NULL);
    char *pay;

    pay = std_payload(NOW - 10);
    expect_payload(v, pay, MQJWT_OK);
    expect_payload(strict, pay, MQJWT_ERR_EXPIRED);
    free(pay);
    pay = std_payload(NOW - 29);
    expect_payload(v, pay, MQJWT_OK);
    free(pay);
    pay = std_payload(NOW - 30);
    expect_payload(v, pay, MQJWT_ERR_EXPIRED);
    free(pay);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"nbf\":1700000030,\"exp\":1700000600}",
                   MQJWT_OK);
    expect_payload(strict, "{\"sub\":\"a\",\"did\":\"b\",\"nbf\":1700000030,\"exp\":1700000600}",
                   MQJWT_ERR_NOT_YET_VALID);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"nbf\":1700000031,\"exp\":1700000600}",
                   MQJWT_ERR_NOT_YET_VALID);
    mqjwt_verifier_free(v);
    mqjwt_verifier_free(strict);
}

/* ------------------------------------------------------------------ */
/* signatures                                                          */

static void test_wrong_signature(void **state)
{
    mqjwt_verifier *vh = mkv(SECRET, NULL), *vr = mkv(NULL, g.rsa_pub), *ve = mkv(NULL, g.ec_pub);
    char *pay = std_payload(NOW + 60);
    char *th = hs(pay), *tr = make_token(HDR_RS, pay, K_RS256, g.rsa);
    char *te = make_token(HDR_ES, pay, K_ES256, g.ec);
    static const char other[] = "another-secret-0123456789abcdef-0123456789abcdef";
    char *t;

    /* flip bits in the middle of each signature */
    poke(th, 2, 10);
    poke(tr, 2, 100);
    poke(te, 2, 40);
    assert_int_equal(verify(vh, th), MQJWT_ERR_BAD_SIGNATURE);
    assert_int_equal(verify(vr, tr), MQJWT_ERR_BAD_SIGNATURE);
    assert_int_equal(verify(ve, te), MQJWT_ERR_BAD_SIGNATURE);

    /* signed with another key / secret */
    t = make_token_n(HDR_HS, strlen(HDR_HS), pay, strlen(pay), K_HS256, NULL, other,
                     sizeof other - 1);
    assert_int_equal(verify(vh, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);
    t = make_token(HDR_RS, pay, K_RS256, g.rsa2);
    assert_int_equal(verify(vr, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);
    t = make_token(HDR_ES, pay, K_ES256, g.ec2);
    assert_int_equal(verify(ve, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);

    /* wrong lengths: truncated HMAC, DER-encoded ECDSA, empty signature */
    t = make_token(HDR_HS, pay, K_HS256_SHORT, NULL);
    assert_int_equal(verify(vh, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);
    t = make_token(HDR_ES, pay, K_ES256_DER, g.ec);
    assert_int_equal(verify(ve, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);
    t = make_token(HDR_HS, pay, K_NONE, NULL);
    assert_int_equal(verify(vh, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);
    /* all-zero ES256 signature (r = s = 0) */
    {
        static const unsigned char zero[64];
        char *h64 = b64u(HDR_ES, strlen(HDR_ES)), *p64 = b64u(pay, strlen(pay));
        char *s64 = b64u(zero, sizeof zero);
        t = xstrdup_printf("%s.%s.%s", h64, p64, s64);
        assert_int_equal(verify(ve, t), MQJWT_ERR_BAD_SIGNATURE);
        free(t);
        free(h64);
        free(p64);
        free(s64);
    }

    free(th);
    free(tr);
    free(te);
    free(pay);
    mqjwt_verifier_free(vh);
    mqjwt_verifier_free(vr);
    mqjwt_verifier_free(ve);
}

/* Replaces the payload of a signed token with another one. */
static char *swap_payload(const char *tok, const char *pay)
{
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    char *p64 = b64u(pay, strlen(pay));
    char *t = xstrdup_printf("%.*s.%s%s", (int)(d1 - tok), tok, p64, d2);
    free(p64);
    return t;
}

static void test_tampered(void **state)
{
    mqjwt_verifier *vh = mkv(SECRET, NULL), *vr = mkv(NULL, g.rsa_pub), *ve = mkv(NULL, g.ec_pub);
    char *pay = std_payload(NOW + 60);
    const char *evil = "{\"sub\":\"mallory\",\"did\":\"phone-1\",\"exp\":1800000000}";
    char *toks[3], *t;
    mqjwt_verifier *vs[3];
    int i;

    toks[0] = hs(pay);
    toks[1] = make_token(HDR_RS, pay, K_RS256, g.rsa);
    toks[2] = make_token(HDR_ES, pay, K_ES256, g.ec);
    vs[0] = vh;
    vs[1] = vr;
    vs[2] = ve;
    for (i = 0; i < 3; i++) {
        assert_int_equal(verify(vs[i], toks[i]), MQJWT_OK);
        t = swap_payload(toks[i], evil);
        assert_int_equal(verify(vs[i], t), MQJWT_ERR_BAD_SIGNATURE);
        free(t);
        t = strdup(toks[i]);
        poke(t, 1, 5); /* one character of the payload */
        assert_int_equal(verify(vs[i], t), MQJWT_ERR_BAD_SIGNATURE);
        free(t);
        free(toks[i]);
    }
    /* tampered header (same alg, extra member) */
    {
        char *good = hs(pay);
        const char *dot = strchr(good, '.');
        const char *h2 = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"x\"}";
        char *h64 = b64u(h2, strlen(h2));
        t = xstrdup_printf("%s%s", h64, dot);
        assert_int_equal(verify(vh, t), MQJWT_ERR_BAD_SIGNATURE);
        free(t);
        free(h64);
        free(good);
    }
    free(pay);
    mqjwt_verifier_free(vh);
    mqjwt_verifier_free(vr);
    mqjwt_verifier_free(ve);
}

static void test_alg_none_and_unknown(void **state)
{
    mqjwt_verifier *vs[3];
    char *pay = std_payload(NOW + 60);
    static const char *const hdrs[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}",
                                       "{\"alg\":\"None\"}",
                                       "{\"alg\":\"NONE\"}",
                                       "{\"alg\":\"nOnE\"}",
                                       "{\"alg\":\"HS512\"}",
                                       "{\"alg\":\"HS384\"}",
                                       "{\"alg\":\"RS512\"}",
                                       "{\"alg\":\"PS256\"}",
                                       "{\"alg\":\"ES384\"}",
                                       "{\"alg\":\"EdDSA\"}",
                                       "{\"alg\":\"hs256\"}",
                                       "{\"alg\":\"\"}",
                                       "{\"alg\":\"HS256 \"}"};
    size_t i;
    int j;

    vs[0] = mkv(SECRET, NULL);
    vs[1] = mkv(NULL, g.rsa_pub);
    vs[2] = mkv(NULL, g.ec_pub);
    for (j = 0; j < 3; j++) {
        for (i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
            char *t = make_token(hdrs[i], pay, K_NONE, NULL);
            char *t2 = make_token(hdrs[i], pay, K_HS256, NULL);
            assert_int_equal(verify(vs[j], t), MQJWT_ERR_UNSUPPORTED_ALG);
            assert_int_equal(verify(vs[j], t2), MQJWT_ERR_UNSUPPORTED_ALG);
            free(t);
            free(t2);
        }
        /* missing or non-string alg */
        expect_header(vs[j], "{\"typ\":\"JWT\"}", MQJWT_ERR_MALFORMED);
        expect_header(vs[j], "{\"alg\":null}", MQJWT_ERR_MALFORMED);
        expect_header(vs[j], "{\"alg\":[\"HS256\"]}", MQJWT_ERR_MALFORMED);
    }
    /* the "none" message names the alg */
    {
        char *t = make_token("{\"alg\":\"none\"}", pay, K_NONE, NULL);
        mqjwt_claims c;
        char err[200];
        assert_int_equal(mqjwt_verify(vs[0], t, NOW, &c, err, sizeof err),
                         MQJWT_ERR_UNSUPPORTED_ALG);
        assert_non_null(strstr(err, "none"));
        free(t);
    }
    for (j = 0; j < 3; j++)
        mqjwt_verifier_free(vs[j]);
    free(pay);
}

static void test_alg_confusion(void **state)
{
    char *pay = std_payload(NOW + 60);
    mqjwt_verifier *vr = mkv(NULL, g.rsa_pub), *ve = mkv(NULL, g.ec_pub);
    mqjwt_verifier *vhr = mkv(SECRET, g.rsa_pub);
    char *t;

    /* HS256 signed with the public key's PEM bytes as the HMAC secret */
    t = make_token_n(HDR_HS, strlen(HDR_HS), pay, strlen(pay), K_HS256, NULL, g.rsa_pem,
                     g.rsa_pem_len);
    assert_int_equal(verify(vr, t), MQJWT_ERR_UNSUPPORTED_ALG);
    /* even with HS256 enabled the public key is never the HMAC key */
    assert_int_equal(verify(vhr, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);
    /* same without the trailing newline of the PEM */
    t = make_token_n(HDR_HS, strlen(HDR_HS), pay, strlen(pay), K_HS256, NULL, g.rsa_pem,
                     g.rsa_pem_len - 1);
    assert_int_equal(verify(vr, t), MQJWT_ERR_UNSUPPORTED_ALG);
    assert_int_equal(verify(vhr, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);
    t = make_token_n(HDR_HS, strlen(HDR_HS), pay, strlen(pay), K_HS256, NULL, g.ec_pem,
                     g.ec_pem_len);
    assert_int_equal(verify(ve, t), MQJWT_ERR_UNSUPPORTED_ALG);
    free(t);

    /* RS256 token to an ES256 verifier and vice versa */
    t = make_token(HDR_RS, pay, K_RS256, g.rsa);
    assert_int_equal(verify(ve, t), MQJWT_ERR_UNSUPPORTED_ALG);
    free(t);
    t = make_token(HDR_ES, pay, K_ES256, g.ec);
    assert_int_equal(verify(vr, t), MQJWT_ERR_UNSUPPORTED_ALG);
    free(t);
    /* signature of one kind under the other's alg name */
    t = make_token(HDR_ES, pay, K_RS256, g.rsa);
    assert_int_equal(verify(ve, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);
    t = make_token(HDR_RS, pay, K_ES256, g.ec);
    assert_int_equal(verify(vr, t), MQJWT_ERR_BAD_SIGNATURE);
    free(t);
    /* HS256 token to a verifier without a secret */
    t = hs(pay);
    assert_int_equal(verify(vr, t), MQJWT_ERR_UNSUPPORTED_ALG);
    assert_int_equal(verify(ve, t), MQJWT_ERR_UNSUPPORTED_ALG);
    free(t);

    free(pay);
    mqjwt_verifier_free(vr);
    mqjwt_verifier_free(ve);
    mqjwt_verifier_free(vhr);
}

/* ------------------------------------------------------------------ */
/* claims                                                              */

static void test_issuer(void **state)
{
    mqjwt_verifier *v = mkv_full(SECRET, SECRET_LEN, NULL, "https://auth.example", NULL, 0, 0);
    mqjwt_verifier *any = mkv(SECRET, NULL);
    const char *ok = "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000,"
                     "\"iss\":\"https://auth.example\"}";
    const char *bad = "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000,"
                      "\"iss\":\"https://evil.example\"}";

    expect_payload(v, ok, MQJWT_OK);
    expect_payload(v, bad, MQJWT_ERR_WRONG_ISSUER);
    expect_payload(v,
                   "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000,"
                   "\"iss\":\"https://auth.example/\"}",
                   MQJWT_ERR_WRONG_ISSUER);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000,\"iss\":1}",
                   MQJWT_ERR_WRONG_ISSUER);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000}", MQJWT_ERR_MISSING_CLAIM);
    /* issuer not configured: not checked */
    expect_payload(any, bad, MQJWT_OK);
    mqjwt_verifier_free(v);
    mqjwt_verifier_free(any);
}

static void test_audience(void **state)
{
    mqjwt_verifier *v = mkv_full(SECRET, SECRET_LEN, NULL, NULL, "mqchat", 0, 0);
    mqjwt_verifier *none = mkv(SECRET, NULL);
#define AUD(x) "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000,\"aud\":" x "}"
    expect_payload(v, AUD("\"mqchat\""), MQJWT_OK);
    expect_payload(v, AUD("\"other\""), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(v, AUD("\"mqchat2\""), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(v, AUD("\"MQCHAT\""), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(v, AUD("[\"mqchat\"]"), MQJWT_OK);
    expect_payload(v, AUD("[\"x\",\"mqchat\"]"), MQJWT_OK);
    expect_payload(v, AUD("[\"x\",\"y\"]"), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(v, AUD("[]"), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(v, AUD("[\"mqchat\",1]"), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(v, AUD("[[\"mqchat\"]]"), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(v, AUD("7"), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(v, AUD("{\"mqchat\":1}"), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000}", MQJWT_ERR_MISSING_CLAIM);
    /* no audience configured: a token that names one is refused (RFC 7519 4.1.3) */
    expect_payload(none, AUD("\"mqchat\""), MQJWT_ERR_WRONG_AUDIENCE);
    expect_payload(none, AUD("[\"mqchat\"]"), MQJWT_ERR_WRONG_AUDIENCE);
#undef AUD
    mqjwt_verifier_free(v);
    mqjwt_verifier_free(none);
}

static void test_missing_claims(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, NULL);
    expect_payload(v, "{\"did\":\"b\",\"exp\":1800000000}", MQJWT_ERR_MISSING_CLAIM);
    expect_payload(v, "{\"sub\":\"a\",\"exp\":1800000000}", MQJWT_ERR_MISSING_CLAIM);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\"}", MQJWT_ERR_MISSING_CLAIM);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"nbf\":1}", MQJWT_ERR_MISSING_CLAIM);
    expect_payload(v, "{}", MQJWT_ERR_MISSING_CLAIM);
    /* claim names are case-sensitive */
    expect_payload(v, "{\"Sub\":\"a\",\"did\":\"b\",\"exp\":1800000000}", MQJWT_ERR_MISSING_CLAIM);
    expect_payload(v, "{\"sub\":\"a\",\"DID\":\"b\",\"exp\":1800000000}", MQJWT_ERR_MISSING_CLAIM);
    mqjwt_verifier_free(v);
}

static void test_invalid_claims(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, NULL);
    char id128[129], id129[130], *pay;
    mqjwt_claims c;
    char *tok;

#define SUB(x) "{\"sub\":" x ",\"did\":\"b\",\"exp\":1800000000}"
#define DID(x) "{\"sub\":\"a\",\"did\":" x ",\"exp\":1800000000}"
    expect_payload(v, SUB("\"al:ice\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("\"\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("\"al ice\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("\"al/ice\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("\"al+ice\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("\"alice#\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("\"\\u00e5lice\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("\"al\\nice\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("42"), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("null"), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("[\"alice\"]"), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, SUB("\"A.z_0-9\""), MQJWT_OK);
    expect_payload(v, DID("\"x:y\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, DID("\"\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, DID("true"), MQJWT_ERR_INVALID_CLAIM);
    /* "\u0000" would truncate "alice\u0000:x" to "alice" in a C string */
    expect_payload(v, SUB("\"alice\\u0000:x\""), MQJWT_ERR_MALFORMED);
    /* an escaped backslash followed by u0000 is not a NUL escape */
    expect_payload(v, SUB("\"a\\\\u0000\""), MQJWT_ERR_INVALID_CLAIM);

    memset(id128, 'a', 128);
    id128[128] = '\0';
    memset(id129, 'b', 129);
    id129[129] = '\0';
    pay = xstrdup_printf("{\"sub\":\"%s\",\"did\":\"%s\",\"exp\":1800000000}", id128, id128);
    tok = hs(pay);
    assert_int_equal(verify_at(v, tok, NOW, &c), MQJWT_OK);
    assert_string_equal(c.sub, id128);
    assert_string_equal(c.did, id128);
    free(tok);
    free(pay);
    pay = xstrdup_printf("{\"sub\":\"%s\",\"did\":\"d\",\"exp\":1800000000}", id129);
    expect_payload(v, pay, MQJWT_ERR_INVALID_CLAIM);
    free(pay);
    pay = xstrdup_printf("{\"sub\":\"s\",\"did\":\"%s\",\"exp\":1800000000}", id129);
    expect_payload(v, pay, MQJWT_ERR_INVALID_CLAIM);
    free(pay);

#define EXP(x) "{\"sub\":\"a\",\"did\":\"b\",\"exp\":" x "}"
    expect_payload(v, EXP("\"1800000000\""), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, EXP("-1"), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, EXP("1e300"), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, EXP("253402300800"), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, EXP("null"), MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, EXP("253402300799"), MQJWT_OK);
    /* fractional NumericDate: truncated */
    tok = hs(EXP("1700000100.75"));
    assert_int_equal(verify_at(v, tok, NOW, &c), MQJWT_OK);
    assert_int_equal(c.exp, 1700000100);
    free(tok);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000,\"nbf\":\"0\"}",
                   MQJWT_ERR_INVALID_CLAIM);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000,\"iat\":true}",
                   MQJWT_ERR_INVALID_CLAIM);
#undef SUB
#undef DID
#undef EXP
    mqjwt_verifier_free(v);
}

static void test_duplicate_members(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, NULL);
    expect_payload(v, "{\"sub\":\"alice\",\"did\":\"b\",\"exp\":1800000000,\"sub\":\"bob\"}",
                   MQJWT_ERR_MALFORMED);
    expect_payload(v, "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1,\"exp\":1800000000}",
                   MQJWT_ERR_MALFORMED);
    expect_header(v, "{\"alg\":\"HS256\",\"alg\":\"none\"}", MQJWT_ERR_MALFORMED);
    {
        char *tok = hs("{\"sub\":\"a\",\"did\":\"b\",\"did\":\"c\",\"exp\":1800000000}");
        mqjwt_claims c;
        char err[200];
        assert_int_equal(mqjwt_verify(v, tok, NOW, &c, err, sizeof err), MQJWT_ERR_MALFORMED);
        assert_non_null(strstr(err, "duplicate member \"did\""));
        free(tok);
    }
    mqjwt_verifier_free(v);
}

static void test_header_rules(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, NULL);
    expect_header(v, "{\"alg\":\"HS256\"}", MQJWT_OK);
    expect_header(v, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", MQJWT_OK);
    expect_header(v, "{\"typ\":\"jwt\",\"alg\":\"HS256\"}", MQJWT_OK);
    expect_header(v, "{\"alg\":\"HS256\",\"kid\":\"k1\",\"x5u\":\"http://x\"}", MQJWT_OK);
    expect_header(v, "{\"alg\":\"HS256\",\"typ\":\"JOSE\"}", MQJWT_ERR_MALFORMED);
    expect_header(v, "{\"alg\":\"HS256\",\"typ\":\"JWTX\"}", MQJWT_ERR_MALFORMED);
    expect_header(v, "{\"alg\":\"HS256\",\"typ\":\"\"}", MQJWT_ERR_MALFORMED);
    expect_header(v, "{\"alg\":\"HS256\",\"typ\":1}", MQJWT_ERR_MALFORMED);
    expect_header(v, "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", MQJWT_ERR_MALFORMED);
    expect_header(v, "{\"alg\":\"HS256\",\"crit\":[]}", MQJWT_ERR_MALFORMED);
    expect_header(v, "[\"HS256\"]", MQJWT_ERR_MALFORMED);
    expect_header(v, "\"HS256\"", MQJWT_ERR_MALFORMED);
    expect_header(v, "{\"alg\":\"HS256\"", MQJWT_ERR_MALFORMED);
    expect_header(v, "{\"alg\":\"HS256\"} x", MQJWT_ERR_MALFORMED);
    mqjwt_verifier_free(v);
}

/* ------------------------------------------------------------------ */
/* garbage                                                             */

static void test_garbage(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, NULL);
    char *pay = std_payload(NOW + 60), *good = hs(pay), *t, *big;
    mqjwt_claims c;
    char err[200];
    size_t i;
    static const char *const bad[] = {
        "",
        ".",
        "..",
        "...",
        "abc",
        "abc.def",
        "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9..sig",
        ".eyJzdWIiOiJhIn0.sig",
        "e$J.abc.def",
        "eyJhbGciOiJIUzI1NiJ9.eyJ@.abc",
        "eyJhbGciOiJIUzI1NiJ9==.e30.abc",
        "eyJhbGciOiJIUzI1NiJ9 .e30.abc",
        "eyJhbGciOiJIUzI1NiJ9\n.e30.abc",
        "eyJhbGciOiJIUzI1NiJ9+.e30.abc",
        "eyJhbGciOiJIUzI1NiJ9/.e30.abc",
        "a.e30.abc", /* length % 4 == 1 */
    };

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = verify(v, bad[i]);
        if (rc != MQJWT_ERR_MALFORMED) print_error("token \"%s\": got %d\n", bad[i], rc);
        assert_int_equal(rc, MQJWT_ERR_MALFORMED);
    }

    /* four parts made of a valid token */
    t = xstrdup_printf("%s.%s", good, "e30");
    assert_int_equal(verify(v, t), MQJWT_ERR_MALFORMED);
    free(t);
    /* padding on the signature */
    t = xstrdup_printf("%s=", good);
    assert_int_equal(verify(v, t), MQJWT_ERR_MALFORMED);
    free(t);
    /* non-canonical base64url: same bytes, non-zero unused bits (43 chars, 2 spare bits) */
    t = strdup(good);
    {
        char *last = t + strlen(t) - 1;
        static const char alpha[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *pos = strchr(alpha, *last);
        assert_non_null(pos);
        assert_int_equal((pos - alpha) & 3, 0);
        *last = alpha[(pos - alpha) | 1];
    }
    assert_int_equal(verify(v, t), MQJWT_ERR_MALFORMED);
    free(t);
    /* a valid token with a space or newline appended */
    t = xstrdup_printf("%s ", good);
    assert_int_equal(verify(v, t), MQJWT_ERR_MALFORMED);
    free(t);
    t = xstrdup_printf("%s\n", good);
    assert_int_equal(verify(v, t), MQJWT_ERR_MALFORMED);
    free(t);

    /* huge token: over the limit, refused before anything else */
    big = malloc(MQJWT_DEFAULT_MAX_TOKEN_LEN + 2);
    assert_non_null(big);
    memset(big, 'a', MQJWT_DEFAULT_MAX_TOKEN_LEN + 1);
    big[MQJWT_DEFAULT_MAX_TOKEN_LEN + 1] = '\0';
    assert_int_equal(verify(v, big), MQJWT_ERR_TOO_LONG);
    big[MQJWT_DEFAULT_MAX_TOKEN_LEN] = '\0'; /* exactly at the limit: parsed (and malformed) */
    assert_int_equal(verify(v, big), MQJWT_ERR_MALFORMED);
    free(big);
    /* a valid but long token under a small limit */
    {
        mqjwt_verifier *small = mkv_full(SECRET, SECRET_LEN, NULL, NULL, NULL, 0, 64);
        assert_int_equal(verify(small, good), MQJWT_ERR_TOO_LONG);
        mqjwt_verifier_free(small);
    }

    /* correctly signed, but the payload is not a JSON object */
    {
        static const char *const pays[] = {"[1,2]",          "42",  "\"str\"",  "null", "true",
                                           "{sub:1}",        "{}x", "{\"a\":1", "",     " ",
                                           "{\"a\":\"\\x\"}"};
        for (i = 0; i < sizeof pays / sizeof pays[0]; i++) {
            t = make_token_n(HDR_HS, strlen(HDR_HS), pays[i], strlen(pays[i]), K_HS256, NULL,
                             SECRET, SECRET_LEN);
            assert_int_equal(verify(v, t), MQJWT_ERR_MALFORMED);
            free(t);
        }
        /* NUL byte inside the JSON */
        t = make_token_n(HDR_HS, strlen(HDR_HS), "{\"sub\":\"a\"}\0{}", 14, K_HS256, NULL, SECRET,
                         SECRET_LEN);
        assert_int_equal(verify(v, t), MQJWT_ERR_MALFORMED);
        free(t);
        t = make_token_n("{\"alg\":\"HS256\"}\0", 16, pay, strlen(pay), K_HS256, NULL, SECRET,
                         SECRET_LEN);
        assert_int_equal(verify(v, t), MQJWT_ERR_MALFORMED);
        free(t);
        /* deeply nested JSON */
        big = malloc(4002);
        assert_non_null(big);
        memset(big, '[', 2000);
        memset(big + 2000, ']', 2000);
        big[4000] = '\0';
        t = make_token_n(HDR_HS, strlen(HDR_HS), big, 4000, K_HS256, NULL, SECRET, SECRET_LEN);
        assert_int_equal(verify(v, t), MQJWT_ERR_MALFORMED);
        free(t);
        free(big);
        /* too many members */
        {
            char buf[4000];
            size_t n = 0;
            int k;
            n += (size_t)snprintf(buf + n, sizeof buf - n,
                                  "{\"sub\":\"a\",\"did\":\"b\",\"exp\":1800000000");
            for (k = 0; k < 300; k++)
                n += (size_t)snprintf(buf + n, sizeof buf - n, ",\"k%d\":0", k);
            n += (size_t)snprintf(buf + n, sizeof buf - n, "}");
            assert_true(n < sizeof buf);
            expect_payload(v, buf, MQJWT_ERR_MALFORMED);
        }
    }

    /* bad arguments */
    assert_int_equal(mqjwt_verify(v, NULL, NOW, &c, err, sizeof err), MQJWT_ERR_INVALID_ARG);
    assert_int_equal(mqjwt_verify(NULL, good, NOW, &c, err, sizeof err), MQJWT_ERR_INVALID_ARG);
    assert_int_equal(mqjwt_verify(v, good, NOW, NULL, err, sizeof err), MQJWT_ERR_INVALID_ARG);
    /* a one-byte err buffer still gets a terminator */
    assert_int_equal(mqjwt_verify(v, "x", NOW, &c, err, 1), MQJWT_ERR_MALFORMED);
    assert_int_equal(err[0], '\0');

    /* and the good token still verifies */
    assert_int_equal(verify(v, good), MQJWT_OK);
    free(good);
    free(pay);
    mqjwt_verifier_free(v);
}

/* ------------------------------------------------------------------ */
/* configuration                                                       */

static void expect_config_error(const mqjwt_config *cfg, const char *needle)
{
    char *errmsg = NULL;
    mqjwt_verifier *v = mqjwt_verifier_new(cfg, &errmsg);
    assert_null(v);
    assert_non_null(errmsg);
    if (!strstr(errmsg, needle)) print_error("errmsg \"%s\" lacks \"%s\"\n", errmsg, needle);
    assert_non_null(strstr(errmsg, needle));
    free(errmsg);
}

static void test_config_errors(void **state)
{
    mqjwt_config cfg;
    char *errmsg = NULL;

    assert_null(mqjwt_verifier_new(NULL, &errmsg));
    assert_non_null(errmsg);
    free(errmsg);
    assert_null(mqjwt_verifier_new(NULL, NULL));

    memset(&cfg, 0, sizeof cfg);
    expect_config_error(&cfg, "no verification key");
    cfg.hs256_secret = SECRET;
    cfg.hs256_secret_len = 31;
    expect_config_error(&cfg, "at least 32");
    cfg.hs256_secret_len = SECRET_LEN;
    cfg.leeway_s = -1;
    expect_config_error(&cfg, "leeway");
    cfg.leeway_s = MQJWT_MAX_LEEWAY_S + 1;
    expect_config_error(&cfg, "leeway");
    cfg.leeway_s = 0;
    cfg.max_token_len = MQJWT_MAX_TOKEN_LEN_LIMIT + 1;
    expect_config_error(&cfg, "max token length");
    cfg.max_token_len = 0;
    cfg.issuer = "";
    expect_config_error(&cfg, "non-empty");
    cfg.issuer = NULL;
    cfg.audience = "";
    expect_config_error(&cfg, "non-empty");

    memset(&cfg, 0, sizeof cfg);
    cfg.pubkey_pem_path = "/nonexistent/key.pem";
    expect_config_error(&cfg, "cannot open");
    cfg.pubkey_pem_path = g.garbage;
    expect_config_error(&cfg, "PEM public key");
    cfg.pubkey_pem_path = g.rsa_priv;
    expect_config_error(&cfg, "PEM public key");
    cfg.pubkey_pem_path = g.sec_lf;
    expect_config_error(&cfg, "PEM public key");
    cfg.pubkey_pem_path = g.rsa1024_pub;
    expect_config_error(&cfg, "2048");
    cfg.pubkey_pem_path = g.ec384_pub;
    expect_config_error(&cfg, "P-256");
    cfg.pubkey_pem_path = g.ed25519_pub;
    expect_config_error(&cfg, "RSA");
    /* a bad key is an error even when a secret is also configured */
    cfg.hs256_secret = SECRET;
    cfg.hs256_secret_len = SECRET_LEN;
    expect_config_error(&cfg, "RSA");

    /* errmsg may be NULL; free(NULL) is fine */
    cfg.pubkey_pem_path = g.rsa1024_pub;
    assert_null(mqjwt_verifier_new(&cfg, NULL));
    mqjwt_verifier_free(NULL);
    assert_int_equal(mqjwt_verifier_algs(NULL), 0);
}

static void test_secret_file(void **state)
{
    unsigned char *s = NULL;
    size_t n = 0;
    char *errmsg = NULL;

    assert_int_equal(mqjwt_load_secret_file(g.sec_lf, &s, &n, &errmsg), MQJWT_OK);
    assert_null(errmsg);
    assert_int_equal(n, 64);
    assert_memory_equal(s, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", 64);
    {
        /* a verifier built from it accepts tokens minted with the same bytes */
        mqjwt_verifier *v = mkv_full(s, n, NULL, NULL, NULL, 0, 0);
        char *pay = std_payload(NOW + 60), *tok = NULL;
        assert_int_equal(mqjwt_sign_hs256(s, n, pay, &tok), MQJWT_OK);
        assert_int_equal(verify(v, tok), MQJWT_OK);
        free(tok);
        free(pay);
        mqjwt_verifier_free(v);
    }
    mqjwt_secret_free(s, n);

    assert_int_equal(mqjwt_load_secret_file(g.sec_crlf, &s, &n, &errmsg), MQJWT_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "abc", 3);
    mqjwt_secret_free(s, n);

    assert_int_equal(mqjwt_load_secret_file(g.sec_empty, &s, &n, &errmsg), MQJWT_ERR_INVALID_ARG);
    assert_null(s);
    assert_non_null(strstr(errmsg, "empty"));
    free(errmsg);
    assert_int_equal(mqjwt_load_secret_file(g.sec_big, &s, &n, &errmsg), MQJWT_ERR_INVALID_ARG);
    assert_null(s);
    assert_non_null(strstr(errmsg, "larger"));
    free(errmsg);
    assert_int_equal(mqjwt_load_secret_file("/nonexistent/secret", &s, &n, &errmsg), MQJWT_ERR_IO);
    assert_null(s);
    assert_non_null(errmsg);
    free(errmsg);
    assert_int_equal(mqjwt_load_secret_file(NULL, &s, &n, NULL), MQJWT_ERR_INVALID_ARG);
    mqjwt_secret_free(NULL, 0);
}

/* ------------------------------------------------------------------ */
/* identity, ids, minting                                              */

static void test_identity(void **state)
{
    mqjwt_verifier *v = mkv(SECRET, NULL);
    char *pay = std_payload(NOW + 60), *tok = hs(pay);
    mqjwt_claims c;
    char err[200];

    assert_int_equal(verify_at(v, tok, NOW, &c), MQJWT_OK);
    assert_int_equal(mqjwt_check_identity(&c, "alice", "alice:phone-1", err, sizeof err), MQJWT_OK);
    assert_string_equal(err, "");
    assert_int_equal(mqjwt_check_identity(&c, "bob", "alice:phone-1", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_non_null(strstr(err, "username"));
    assert_int_equal(mqjwt_check_identity(&c, "alic", "alic:phone-1", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(&c, "alice2", "alice2:phone-1", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(&c, "alice", "alice:phone-2", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_non_null(strstr(err, "client id"));
    assert_int_equal(mqjwt_check_identity(&c, "alice", "alice:phone-1:x", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(&c, "alice", "alice:phone-", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(&c, "alice", "alice", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(&c, "alice", "alice;phone-1", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(&c, "alice", "phone-1", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(&c, "alice", "", err, sizeof err), MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(&c, NULL, "alice:phone-1", err, sizeof err),
                     MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(&c, "alice", NULL, err, sizeof err), MQJWT_ERR_IDENTITY);
    assert_int_equal(mqjwt_check_identity(NULL, "alice", "alice:phone-1", NULL, 0),
                     MQJWT_ERR_INVALID_ARG);
    free(tok);
    free(pay);
    mqjwt_verifier_free(v);
}

static void test_valid_id(void **state)
{
    char s[200];
    assert_true(mqc_id_valid(MQC_ID_USER, "a"));
    assert_true(mqc_id_valid(MQC_ID_USER, "Alice.Smith_01-x"));
    assert_false(mqc_id_valid(MQC_ID_USER, ""));
    assert_false(mqc_id_valid(MQC_ID_USER, NULL));
    assert_false(mqc_id_valid(MQC_ID_USER, "a:b"));
    assert_false(mqc_id_valid(MQC_ID_USER, "a b"));
    assert_false(mqc_id_valid(MQC_ID_USER, "a/b"));
    assert_false(mqc_id_valid(MQC_ID_USER, "a+"));
    assert_false(mqc_id_valid(MQC_ID_USER, "a#"));
    assert_false(mqc_id_valid(MQC_ID_USER, "\xc3\xa5"));
    memset(s, 'x', sizeof s);
    s[128] = '\0';
    assert_true(mqc_id_valid(MQC_ID_USER, s));
    s[128] = 'x';
    s[129] = '\0';
    assert_false(mqc_id_valid(MQC_ID_USER, s));
}

static void test_mint(void **state)
{
    /* the claims mqchat-token produces, signed by mqjwt_sign_hs256 */
    mqjwt_verifier *v = mkv_full(SECRET, SECRET_LEN, NULL, "mqchat-dev", "mqchat", 0, 0);
    char *pay = xstrdup_printf("{\"sub\":\"alice\",\"did\":\"phone-1\",\"iss\":\"mqchat-dev\","
                               "\"aud\":\"mqchat\",\"iat\":%lld,\"exp\":%lld}",
                               NOW, NOW + 86400);
    char *tok = (char *)"sentinel";
    mqjwt_claims c;

    assert_int_equal(mqjwt_sign_hs256(SECRET, SECRET_LEN, pay, &tok), MQJWT_OK);
    assert_non_null(tok);
    /* header is {"alg":"HS256","typ":"JWT"} */
    assert_true(strncmp(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37) == 0);
    assert_null(strchr(tok, '='));
    assert_int_equal(verify_at(v, tok, NOW, &c), MQJWT_OK);
    assert_string_equal(c.sub, "alice");
    assert_string_equal(c.did, "phone-1");
    assert_int_equal(c.iat, NOW);
    assert_int_equal(c.exp, NOW + 86400);
    assert_int_equal(mqjwt_check_identity(&c, "alice", "alice:phone-1", NULL, 0), MQJWT_OK);
    assert_int_equal(verify_at(v, tok, NOW + 86400, &c), MQJWT_ERR_EXPIRED);
    free(tok);

    /* errors */
    tok = (char *)"sentinel";
    assert_int_equal(mqjwt_sign_hs256(SECRET, 31, pay, &tok), MQJWT_ERR_INVALID_ARG);
    assert_null(tok);
    assert_int_equal(mqjwt_sign_hs256(NULL, SECRET_LEN, pay, &tok), MQJWT_ERR_INVALID_ARG);
    assert_int_equal(mqjwt_sign_hs256(SECRET, SECRET_LEN, "[1]", &tok), MQJWT_ERR_INVALID_ARG);
    assert_int_equal(mqjwt_sign_hs256(SECRET, SECRET_LEN, "{", &tok), MQJWT_ERR_INVALID_ARG);
    assert_int_equal(mqjwt_sign_hs256(SECRET, SECRET_LEN, "{} {}", &tok), MQJWT_ERR_INVALID_ARG);
    assert_int_equal(mqjwt_sign_hs256(SECRET, SECRET_LEN, NULL, &tok), MQJWT_ERR_INVALID_ARG);
    assert_int_equal(mqjwt_sign_hs256(SECRET, SECRET_LEN, pay, NULL), MQJWT_ERR_INVALID_ARG);
    assert_null(tok);
    free(pay);
    mqjwt_verifier_free(v);
}

static void test_strings(void **state)
{
    int codes[] = {MQJWT_OK,
                   MQJWT_ERR_INVALID_ARG,
                   MQJWT_ERR_MALFORMED,
                   MQJWT_ERR_TOO_LONG,
                   MQJWT_ERR_UNSUPPORTED_ALG,
                   MQJWT_ERR_BAD_SIGNATURE,
                   MQJWT_ERR_EXPIRED,
                   MQJWT_ERR_NOT_YET_VALID,
                   MQJWT_ERR_WRONG_ISSUER,
                   MQJWT_ERR_WRONG_AUDIENCE,
                   MQJWT_ERR_MISSING_CLAIM,
                   MQJWT_ERR_INVALID_CLAIM,
                   MQJWT_ERR_IDENTITY,
                   MQJWT_ERR_NOMEM,
                   MQJWT_ERR_CRYPTO,
                   MQJWT_ERR_IO};
    size_t i, j;
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        assert_string_not_equal(mqjwt_strerror(codes[i]), "unknown error");
        for (j = 0; j < i; j++)
            assert_string_not_equal(mqjwt_strerror(codes[i]), mqjwt_strerror(codes[j]));
    }
    assert_string_equal(mqjwt_strerror(12345), "unknown error");
    assert_string_equal(mqjwt_alg_name(MQJWT_ALG_HS256), "HS256");
    assert_string_equal(mqjwt_alg_name(MQJWT_ALG_RS256), "RS256");
    assert_string_equal(mqjwt_alg_name(MQJWT_ALG_ES256), "ES256");
    assert_string_equal(mqjwt_alg_name(0), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256_valid),
        cmocka_unit_test(test_rfc7515_a1),
        cmocka_unit_test(test_rs256_valid),
        cmocka_unit_test(test_es256_valid),
        cmocka_unit_test(test_secret_and_key_together),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_nbf),
        cmocka_unit_test(test_leeway),
        cmocka_unit_test(test_wrong_signature),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_alg_none_and_unknown),
        cmocka_unit_test(test_alg_confusion),
        cmocka_unit_test(test_issuer),
        cmocka_unit_test(test_audience),
        cmocka_unit_test(test_missing_claims),
        cmocka_unit_test(test_invalid_claims),
        cmocka_unit_test(test_duplicate_members),
        cmocka_unit_test(test_header_rules),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_secret_file),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_valid_id),
        cmocka_unit_test(test_mint),
        cmocka_unit_test(test_strings),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
