/* jwt_sign — see jwt_sign.h. */
#include "jwt_sign.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/pem.h>

size_t pd_b64url(const unsigned char *in, size_t n, char *out)
{
    int len = n ? EVP_EncodeBlock((unsigned char *)out, in, (int)n) : 0;
    size_t m = (size_t)(len > 0 ? len : 0);
    while (m && out[m - 1] == '=')
        m--;
    for (size_t i = 0; i < m; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[m] = '\0';
    return m;
}

EVP_PKEY *pd_key_load_pem(const char *pem, size_t len, pd_jwt_alg alg, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!k) {
        snprintf(err, errlen, "not a PEM private key");
        return NULL;
    }
    if (alg == PD_ES256) {
        char group[64] = "";
        size_t gl = 0;
        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
            !EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof group, &gl) ||
            strcmp(group, "prime256v1") != 0) {
            snprintf(err, errlen, "not an EC P-256 private key");
            EVP_PKEY_free(k);
            return NULL;
        }
    } else if (EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA || EVP_PKEY_get_bits(k) < 2048) {
        snprintf(err, errlen, "not an RSA private key of at least 2048 bits");
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

EVP_PKEY *pd_key_load_file(const char *path, pd_jwt_alg alg, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[16384];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n == sizeof buf) {
        snprintf(err, errlen, "%s: larger than %zu bytes", path, sizeof buf - 1);
        return NULL;
    }
    char why[200];
    EVP_PKEY *k = pd_key_load_pem(buf, n, alg, why, sizeof why);
    OPENSSL_cleanse(buf, sizeof buf);
    if (!k) snprintf(err, errlen, "%s: %s", path, why);
    return k;
}

/* ECDSA's DER signature -> the 64-byte r||s JWS uses. */
static int der_to_raw(const unsigned char *der, size_t len, unsigned char raw[64])
{
    const unsigned char *p = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)len);
    if (!s) return -1;
    const BIGNUM *r, *sv;
    ECDSA_SIG_get0(s, &r, &sv);
    int ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(sv, raw + 32, 32) == 32;
    ECDSA_SIG_free(s);
    return ok ? 0 : -1;
}

char *pd_jwt_sign(EVP_PKEY *key, pd_jwt_alg alg, const char *header_json, const char *claims_json)
{
    size_t hl = strlen(header_json), cl = strlen(claims_json);
    size_t cap = (hl + cl) / 3 * 4 + 8 + 8 + 800; /* signature: <= 512 bytes -> 684 chars */
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t n = pd_b64url((const unsigned char *)header_json, hl, out);
    out[n++] = '.';
    n += pd_b64url((const unsigned char *)claims_json, cl, out + n);
    unsigned char sig[1024], raw[64];
    size_t siglen = sizeof sig;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)out, n) == 1;
    EVP_MD_CTX_free(ctx);
    const unsigned char *s = sig;
    if (ok && alg == PD_ES256) {
        ok = der_to_raw(sig, siglen, raw) == 0;
        s = raw;
        siglen = 64;
    }
    if (!ok || siglen > 512) {
        ERR_clear_error();
        free(out);
        return NULL;
    }
    out[n++] = '.';
    n += pd_b64url(s, siglen, out + n);
    return out;
}
