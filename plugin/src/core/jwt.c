/*
 * jwt.c - JWT verification (HS256 / RS256 / ES256) for mqchat.
 * See jwt.h for the rules. OpenSSL 3 does the crypto and base64, cJSON the
 * JSON; this file only glues them together and applies policy.
 */
#include "jwt.h"

#include <cJSON.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NUMERIC_DATE_MAX 253402300799LL /* 9999-12-31T23:59:59Z */
#define MAX_JSON_MEMBERS 256            /* per object, header or payload */
#define MAX_AUD_ITEMS 256
#define MIN_RSA_BITS 2048
#define ES256_SIG_LEN 64
#define HS256_TAG_LEN 32
#define SECRET_FILE_MAX (64 * 1024)
#define SHOW_MAX 48 /* bytes of a token-supplied string shown in messages */

struct mqjwt_verifier {
    unsigned char *secret; /* NULL unless HS256 */
    size_t secret_len;
    EVP_PKEY *pkey; /* NULL unless RS256 / ES256 */
    EVP_MD *sha256;
    /* HS256: an HMAC context keyed once at creation; each verification
     * works on a copy (EVP_MAC_CTX_dup), so no per-token algorithm fetch
     * or key schedule (they were two thirds of a connect's JWT cost). */
    EVP_MAC *hmac;
    EVP_MAC_CTX *hmac_keyed;
    unsigned algs;
    char *issuer;
    char *audience;
    int64_t leeway_s;
    size_t max_token_len;
};

/* ------------------------------------------------------------------ */
/* messages                                                            */

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int code,
                                                      const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

__attribute__((format(printf, 2, 3))) static void set_errmsg(char **errmsg, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    if (!errmsg) return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    free(*errmsg);
    *errmsg = strdup(buf);
}

/* Copies an untrusted string for display: printable ASCII only, truncated. */
static const char *show(char dst[SHOW_MAX + 4], const char *src)
{
    size_t i = 0;
    if (!src) src = "(null)";
    for (; i < SHOW_MAX && src[i]; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    if (src[i]) {
        memcpy(dst + i, "...", 3);
        i += 3;
    }
    dst[i] = '\0';
    return dst;
}

static void openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown error");
}

const char *mqjwt_strerror(int code)
{
    switch (code) {
    case MQJWT_OK:
        return "ok";
    case MQJWT_ERR_INVALID_ARG:
        return "invalid argument";
    case MQJWT_ERR_MALFORMED:
        return "malformed token";
    case MQJWT_ERR_TOO_LONG:
        return "token too long";
    case MQJWT_ERR_UNSUPPORTED_ALG:
        return "unsupported algorithm";
    case MQJWT_ERR_BAD_SIGNATURE:
        return "bad signature";
    case MQJWT_ERR_EXPIRED:
        return "token expired";
    case MQJWT_ERR_NOT_YET_VALID:
        return "token not yet valid";
    case MQJWT_ERR_WRONG_ISSUER:
        return "wrong issuer";
    case MQJWT_ERR_WRONG_AUDIENCE:
        return "wrong audience";
    case MQJWT_ERR_MISSING_CLAIM:
        return "missing claim";
    case MQJWT_ERR_INVALID_CLAIM:
        return "invalid claim";
    case MQJWT_ERR_IDENTITY:
        return "identity mismatch";
    case MQJWT_ERR_NOMEM:
        return "out of memory";
    case MQJWT_ERR_CRYPTO:
        return "crypto library error";
    case MQJWT_ERR_IO:
        return "i/o error";
    default:
        return "unknown error";
    }
}

const char *mqjwt_alg_name(int alg)
{
    switch (alg) {
    case MQJWT_ALG_HS256:
        return "HS256";
    case MQJWT_ALG_RS256:
        return "RS256";
    case MQJWT_ALG_ES256:
        return "ES256";
    default:
        return "?";
    }
}

static void algs_list(unsigned algs, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s%s%s%s", (algs & MQJWT_ALG_HS256) ? "HS256" : "",
             ((algs & MQJWT_ALG_HS256) && (algs & ~(unsigned)MQJWT_ALG_HS256)) ? ", " : "",
             (algs & MQJWT_ALG_RS256) ? "RS256" : "",
             ((algs & MQJWT_ALG_RS256) && (algs & MQJWT_ALG_ES256)) ? ", " : "",
             (algs & MQJWT_ALG_ES256) ? "ES256" : "");
}

/* ------------------------------------------------------------------ */
/* ids                                                                 */

/* ------------------------------------------------------------------ */
/* base64url (RFC 7515 section 2 / appendix C)                         */

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Strict decode: alphabet [A-Za-z0-9_-], no padding, length % 4 != 1, and
 * the unused low bits of the last character must be zero (one encoding per
 * byte string). *out is malloc()ed with one spare byte, NUL-terminated.
 * Returns 0, -1 (invalid) or -2 (no memory). n is bounded by the token
 * length limit, so the int conversions below cannot overflow. */
static int b64url_decode(const char *in, size_t n, unsigned char **out, size_t *outlen)
{
    size_t pad = (4 - n % 4) % 4, i;
    char *tmp;
    unsigned char *buf;
    int r;

    *out = NULL;
    *outlen = 0;
    if (n % 4 == 1) return -1;
    for (i = 0; i < n; i++)
        if (b64url_value(in[i]) < 0) return -1;
    if (n % 4 == 2 && (b64url_value(in[n - 1]) & 0x0f) != 0) return -1;
    if (n % 4 == 3 && (b64url_value(in[n - 1]) & 0x03) != 0) return -1;

    tmp = malloc(n + pad + 1);
    buf = malloc((n + pad) / 4 * 3 + 1);
    if (!tmp || !buf) {
        free(tmp);
        free(buf);
        return -2;
    }
    for (i = 0; i < n; i++)
        tmp[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
    for (i = 0; i < pad; i++)
        tmp[n + i] = '=';
    tmp[n + pad] = '\0';
    r = EVP_DecodeBlock(buf, (const unsigned char *)tmp, (int)(n + pad));
    free(tmp);
    /* EVP_DecodeBlock writes 3 bytes per quantum, padding included. */
    if (r < 0 || (size_t)r != (n + pad) / 4 * 3) {
        free(buf);
        return -1;
    }
    *outlen = (size_t)r - pad;
    buf[*outlen] = '\0';
    *out = buf;
    return 0;
}

static char *b64url_encode(const unsigned char *in, size_t n)
{
    size_t cap = 4 * ((n + 2) / 3) + 1, i, len;
    char *out;
    int r;

    if (n > (size_t)MQJWT_MAX_TOKEN_LEN_LIMIT) return NULL;
    out = malloc(cap);
    if (!out) return NULL;
    r = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    if (r < 0) {
        free(out);
        return NULL;
    }
    len = (size_t)r;
    while (len > 0 && out[len - 1] == '=') /* at most 2 iterations */
        len--;
    out[len] = '\0';
    for (i = 0; i < len; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    return out;
}

/* ------------------------------------------------------------------ */
/* JSON                                                                */

/* Parses decoded bytes (NUL-terminated at buf[n]) as one JSON object with
 * unique member names. what = "header" / "payload". */
static int parse_object(const unsigned char *buf, size_t n, const char *what, cJSON **out,
                        char *err, size_t errlen)
{
    const char *end = NULL;
    const cJSON *a, *b;
    cJSON *json;
    size_t i, count = 0;

    *out = NULL;
    if (memchr(buf, '\0', n))
        return fail(err, errlen, MQJWT_ERR_MALFORMED, "%s contains a NUL byte", what);
    /* cJSON turns "\u0000" into a string terminator, which would silently
     * truncate a claim. A backslash can only occur inside a JSON string, so
     * scanning escape pairs is exact. */
    for (i = 0; i + 1 < n; i++) {
        if (buf[i] != '\\') continue;
        if (buf[i + 1] == 'u' && i + 5 < n && memcmp(buf + i + 2, "0000", 4) == 0)
            return fail(err, errlen, MQJWT_ERR_MALFORMED, "%s contains a \\u0000 escape", what);
        i++; /* skip the escaped character */
    }
    json = cJSON_ParseWithOpts((const char *)buf, &end, 1);
    if (!json) return fail(err, errlen, MQJWT_ERR_MALFORMED, "%s is not valid JSON", what);
    if (!cJSON_IsObject(json)) {
        cJSON_Delete(json);
        return fail(err, errlen, MQJWT_ERR_MALFORMED, "%s is not a JSON object", what);
    }
    for (a = json->child; a; a = a->next) {
        if (++count > MAX_JSON_MEMBERS) {
            cJSON_Delete(json);
            return fail(err, errlen, MQJWT_ERR_MALFORMED, "%s has more than %d members", what,
                        MAX_JSON_MEMBERS);
        }
        for (b = json->child; b != a; b = b->next) {
            if (a->string && b->string && strcmp(a->string, b->string) == 0) {
                char s[SHOW_MAX + 4];
                fail(err, errlen, MQJWT_ERR_MALFORMED, "%s has duplicate member \"%s\"", what,
                     show(s, a->string));
                cJSON_Delete(json);
                return MQJWT_ERR_MALFORMED;
            }
        }
    }
    *out = json;
    return MQJWT_OK;
}

static int get_numeric_date(const cJSON *payload, const char *name, int required, int64_t *val,
                            int *present, char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(payload, name);
    double d;

    *val = 0;
    if (present) *present = 0;
    if (!it) {
        if (required)
            return fail(err, errlen, MQJWT_ERR_MISSING_CLAIM, "missing \"%s\" claim", name);
        return MQJWT_OK;
    }
    if (!cJSON_IsNumber(it))
        return fail(err, errlen, MQJWT_ERR_INVALID_CLAIM, "\"%s\" is not a number", name);
    d = it->valuedouble;
    if (!isfinite(d) || d < 0 || d > (double)NUMERIC_DATE_MAX)
        return fail(err, errlen, MQJWT_ERR_INVALID_CLAIM, "\"%s\" is out of range", name);
    *val = (int64_t)d; /* d >= 0: truncation is floor */
    if (present) *present = 1;
    return MQJWT_OK;
}

static int get_id_claim(const cJSON *payload, const char *name, char dst[MQJWT_ID_MAX + 1],
                        char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(payload, name);
    char s[SHOW_MAX + 4];

    if (!it) return fail(err, errlen, MQJWT_ERR_MISSING_CLAIM, "missing \"%s\" claim", name);
    if (!cJSON_IsString(it) || !it->valuestring)
        return fail(err, errlen, MQJWT_ERR_INVALID_CLAIM, "\"%s\" is not a string", name);
    if (!mqc_id_valid(MQC_ID_USER, it->valuestring))
        return fail(err, errlen, MQJWT_ERR_INVALID_CLAIM,
                    "\"%s\" \"%s\" is not 1..%d characters of [A-Za-z0-9._-]", name,
                    show(s, it->valuestring), MQJWT_ID_MAX);
    memcpy(dst, it->valuestring, strlen(it->valuestring) + 1);
    return MQJWT_OK;
}

static int check_issuer(const mqjwt_verifier *v, const cJSON *payload, char *err, size_t errlen)
{
    const cJSON *it;
    char s[SHOW_MAX + 4];

    if (!v->issuer) return MQJWT_OK;
    it = cJSON_GetObjectItemCaseSensitive(payload, "iss");
    if (!it) return fail(err, errlen, MQJWT_ERR_MISSING_CLAIM, "missing \"iss\" claim");
    if (!cJSON_IsString(it) || !it->valuestring)
        return fail(err, errlen, MQJWT_ERR_WRONG_ISSUER, "\"iss\" is not a string");
    if (strcmp(it->valuestring, v->issuer) != 0)
        return fail(err, errlen, MQJWT_ERR_WRONG_ISSUER, "issuer \"%s\" is not accepted",
                    show(s, it->valuestring));
    return MQJWT_OK;
}

static int check_audience(const mqjwt_verifier *v, const cJSON *payload, char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(payload, "aud");
    const cJSON *e;
    char s[SHOW_MAX + 4];
    int n = 0, found = 0;

    if (!v->audience) {
        if (it)
            return fail(err, errlen, MQJWT_ERR_WRONG_AUDIENCE,
                        "token has an \"aud\" claim but no audience is configured");
        return MQJWT_OK;
    }
    if (!it) return fail(err, errlen, MQJWT_ERR_MISSING_CLAIM, "missing \"aud\" claim");
    if (cJSON_IsString(it) && it->valuestring) {
        if (strcmp(it->valuestring, v->audience) == 0) return MQJWT_OK;
        return fail(err, errlen, MQJWT_ERR_WRONG_AUDIENCE, "audience \"%s\" is not accepted",
                    show(s, it->valuestring));
    }
    if (!cJSON_IsArray(it))
        return fail(err, errlen, MQJWT_ERR_WRONG_AUDIENCE,
                    "\"aud\" is neither a string nor an array");
    for (e = it->child; e; e = e->next) {
        if (++n > MAX_AUD_ITEMS)
            return fail(err, errlen, MQJWT_ERR_WRONG_AUDIENCE, "\"aud\" has too many entries");
        if (!cJSON_IsString(e) || !e->valuestring)
            return fail(err, errlen, MQJWT_ERR_WRONG_AUDIENCE,
                        "\"aud\" array has a non-string entry");
        if (strcmp(e->valuestring, v->audience) == 0) found = 1;
    }
    if (found) return MQJWT_OK;
    return fail(err, errlen, MQJWT_ERR_WRONG_AUDIENCE,
                "\"aud\" array does not contain the configured audience");
}

/* ------------------------------------------------------------------ */
/* signatures                                                          */

static int hmac_sha256(const void *key, size_t keylen, const unsigned char *data, size_t len,
                       unsigned char tag[HS256_TAG_LEN])
{
    size_t outlen = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, keylen, data, len, tag, HS256_TAG_LEN,
                   &outlen) ||
        outlen != HS256_TAG_LEN)
        return -1;
    return 0;
}

/* HMAC-SHA256 with the verifier's pre-keyed context. */
static int hmac_keyed(const mqjwt_verifier *v, const unsigned char *data, size_t len,
                      unsigned char tag[HS256_TAG_LEN])
{
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(v->hmac_keyed);
    size_t outlen = 0;
    int ok = ctx && EVP_MAC_update(ctx, data, len) &&
             EVP_MAC_final(ctx, tag, &outlen, HS256_TAG_LEN) && outlen == HS256_TAG_LEN;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -1;
}

static int digest_verify(const mqjwt_verifier *v, const unsigned char *sig, size_t siglen,
                         const unsigned char *data, size_t len, char *err, size_t errlen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int r;

    if (!ctx) return fail(err, errlen, MQJWT_ERR_NOMEM, "out of memory");
    if (EVP_DigestVerifyInit(ctx, NULL, v->sha256, NULL, v->pkey) != 1) {
        EVP_MD_CTX_free(ctx);
        return fail(err, errlen, MQJWT_ERR_CRYPTO, "EVP_DigestVerifyInit failed");
    }
    r = EVP_DigestVerify(ctx, sig, siglen, data, len);
    EVP_MD_CTX_free(ctx);
    if (r != 1) return fail(err, errlen, MQJWT_ERR_BAD_SIGNATURE, "signature does not verify");
    return MQJWT_OK;
}

static int verify_signature(const mqjwt_verifier *v, int alg, const unsigned char *data, size_t len,
                            const unsigned char *sig, size_t siglen, char *err, size_t errlen)
{
    if (alg == MQJWT_ALG_HS256) {
        unsigned char tag[HS256_TAG_LEN];
        int ok;
        if (hmac_keyed(v, data, len, tag) != 0)
            return fail(err, errlen, MQJWT_ERR_CRYPTO, "HMAC-SHA256 failed");
        ok = siglen == HS256_TAG_LEN && CRYPTO_memcmp(tag, sig, HS256_TAG_LEN) == 0;
        OPENSSL_cleanse(tag, sizeof tag);
        if (!ok) return fail(err, errlen, MQJWT_ERR_BAD_SIGNATURE, "signature does not verify");
        return MQJWT_OK;
    }
    if (alg == MQJWT_ALG_RS256) {
        if (siglen != (size_t)EVP_PKEY_get_size(v->pkey))
            return fail(err, errlen, MQJWT_ERR_BAD_SIGNATURE,
                        "RS256 signature has %zu bytes, expected %d", siglen,
                        EVP_PKEY_get_size(v->pkey));
        return digest_verify(v, sig, siglen, data, len, err, errlen);
    }
    if (alg == MQJWT_ALG_ES256) {
        /* JWS carries r||s (32 bytes each); OpenSSL wants DER. */
        BIGNUM *r, *s;
        ECDSA_SIG *es;
        unsigned char *der = NULL;
        int derlen, rc;

        if (siglen != ES256_SIG_LEN)
            return fail(err, errlen, MQJWT_ERR_BAD_SIGNATURE,
                        "ES256 signature has %zu bytes, expected %d (raw r||s)", siglen,
                        ES256_SIG_LEN);
        es = ECDSA_SIG_new();
        r = BN_bin2bn(sig, ES256_SIG_LEN / 2, NULL);
        s = BN_bin2bn(sig + ES256_SIG_LEN / 2, ES256_SIG_LEN / 2, NULL);
        if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
            ECDSA_SIG_free(es);
            BN_free(r);
            BN_free(s);
            return fail(err, errlen, MQJWT_ERR_NOMEM, "out of memory");
        }
        derlen = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es); /* owns r and s */
        if (derlen <= 0) return fail(err, errlen, MQJWT_ERR_CRYPTO, "i2d_ECDSA_SIG failed");
        rc = digest_verify(v, der, (size_t)derlen, data, len, err, errlen);
        OPENSSL_free(der);
        return rc;
    }
    return fail(err, errlen, MQJWT_ERR_UNSUPPORTED_ALG, "unsupported alg");
}

/* ------------------------------------------------------------------ */
/* verification                                                        */

static int check_header(const mqjwt_verifier *v, const cJSON *hdr, int *alg, char *err,
                        size_t errlen)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    const cJSON *typ = cJSON_GetObjectItemCaseSensitive(hdr, "typ");
    char s[SHOW_MAX + 4], list[32];
    int want = 0;

    *alg = 0;
    if (!a) return fail(err, errlen, MQJWT_ERR_MALFORMED, "header has no \"alg\"");
    if (!cJSON_IsString(a) || !a->valuestring)
        return fail(err, errlen, MQJWT_ERR_MALFORMED, "header \"alg\" is not a string");
    if (strcmp(a->valuestring, "HS256") == 0)
        want = MQJWT_ALG_HS256;
    else if (strcmp(a->valuestring, "RS256") == 0)
        want = MQJWT_ALG_RS256;
    else if (strcmp(a->valuestring, "ES256") == 0)
        want = MQJWT_ALG_ES256;
    if (!want || !(v->algs & (unsigned)want)) {
        algs_list(v->algs, list, sizeof list);
        return fail(err, errlen, MQJWT_ERR_UNSUPPORTED_ALG,
                    "alg \"%s\" is not accepted (configured: %s)", show(s, a->valuestring), list);
    }
    if (typ && (!cJSON_IsString(typ) || !typ->valuestring || strlen(typ->valuestring) != 3 ||
                (typ->valuestring[0] | 0x20) != 'j' || (typ->valuestring[1] | 0x20) != 'w' ||
                (typ->valuestring[2] | 0x20) != 't'))
        return fail(err, errlen, MQJWT_ERR_MALFORMED, "header \"typ\" is not \"JWT\"");
    if (cJSON_GetObjectItemCaseSensitive(hdr, "crit"))
        return fail(err, errlen, MQJWT_ERR_MALFORMED,
                    "header has \"crit\" (no extensions are supported)");
    *alg = want;
    return MQJWT_OK;
}

static int check_payload(const mqjwt_verifier *v, const cJSON *p, int64_t now_s, mqjwt_claims *c,
                         char *err, size_t errlen)
{
    int rc;

    if ((rc = get_numeric_date(p, "exp", 1, &c->exp, NULL, err, errlen)) != MQJWT_OK) return rc;
    if ((rc = get_numeric_date(p, "nbf", 0, &c->nbf, &c->has_nbf, err, errlen)) != MQJWT_OK)
        return rc;
    if ((rc = get_numeric_date(p, "iat", 0, &c->iat, &c->has_iat, err, errlen)) != MQJWT_OK)
        return rc;
    if ((rc = get_id_claim(p, "sub", c->sub, err, errlen)) != MQJWT_OK) return rc;
    if ((rc = get_id_claim(p, "did", c->did, err, errlen)) != MQJWT_OK) return rc;
    if ((rc = check_issuer(v, p, err, errlen)) != MQJWT_OK) return rc;
    if ((rc = check_audience(v, p, err, errlen)) != MQJWT_OK) return rc;
    /* exp, nbf and leeway are all within [0, 253402300799 + 86400]. */
    if (now_s >= c->exp + v->leeway_s)
        return fail(err, errlen, MQJWT_ERR_EXPIRED,
                    "token expired at %lld (now %lld, leeway %llds)", (long long)c->exp,
                    (long long)now_s, (long long)v->leeway_s);
    if (c->has_nbf && now_s < c->nbf - v->leeway_s)
        return fail(err, errlen, MQJWT_ERR_NOT_YET_VALID,
                    "token not valid before %lld (now %lld, leeway %llds)", (long long)c->nbf,
                    (long long)now_s, (long long)v->leeway_s);
    return MQJWT_OK;
}

int mqjwt_verify(const mqjwt_verifier *v, const char *token, int64_t now_s, mqjwt_claims *out,
                 char *err, size_t errlen)
{
    const char *d1, *d2;
    size_t len, hlen, plen, slen;
    unsigned char *hbuf = NULL, *pbuf = NULL, *sbuf = NULL;
    size_t hn = 0, pn = 0, sn = 0;
    cJSON *hdr = NULL, *payload = NULL;
    int rc, alg = 0;

    if (err && errlen > 0) err[0] = '\0';
    if (out) memset(out, 0, sizeof *out);
    if (!v || !token || !out)
        return fail(err, errlen, MQJWT_ERR_INVALID_ARG, "invalid argument to mqjwt_verify");

    len = strnlen(token, v->max_token_len + 1);
    if (len > v->max_token_len)
        return fail(err, errlen, MQJWT_ERR_TOO_LONG, "token is longer than %zu bytes",
                    v->max_token_len);
    if (len == 0) return fail(err, errlen, MQJWT_ERR_MALFORMED, "empty token");
    d1 = memchr(token, '.', len);
    d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
        return fail(err, errlen, MQJWT_ERR_MALFORMED,
                    "token is not three dot-separated base64url parts");
    hlen = (size_t)(d1 - token);
    plen = (size_t)(d2 - d1 - 1);
    slen = len - (size_t)(d2 + 1 - token);
    if (hlen == 0 || plen == 0)
        return fail(err, errlen, MQJWT_ERR_MALFORMED, "token has an empty header or payload");

    rc = b64url_decode(token, hlen, &hbuf, &hn);
    if (rc != 0) {
        rc = rc == -2 ? fail(err, errlen, MQJWT_ERR_NOMEM, "out of memory")
                      : fail(err, errlen, MQJWT_ERR_MALFORMED, "header is not valid base64url");
        goto done;
    }
    if ((rc = parse_object(hbuf, hn, "header", &hdr, err, errlen)) != MQJWT_OK) goto done;
    if ((rc = check_header(v, hdr, &alg, err, errlen)) != MQJWT_OK) goto done;

    rc = b64url_decode(d1 + 1, plen, &pbuf, &pn);
    if (rc != 0) {
        rc = rc == -2 ? fail(err, errlen, MQJWT_ERR_NOMEM, "out of memory")
                      : fail(err, errlen, MQJWT_ERR_MALFORMED, "payload is not valid base64url");
        goto done;
    }
    rc = b64url_decode(d2 + 1, slen, &sbuf, &sn);
    if (rc != 0) {
        rc = rc == -2 ? fail(err, errlen, MQJWT_ERR_NOMEM, "out of memory")
                      : fail(err, errlen, MQJWT_ERR_MALFORMED, "signature is not valid base64url");
        goto done;
    }
    if (sn == 0) {
        rc = fail(err, errlen, MQJWT_ERR_BAD_SIGNATURE, "token has no signature");
        goto done;
    }
    /* The signing input is the ASCII text "<header>.<payload>". The payload
     * JSON is parsed only once the signature holds. */
    rc = verify_signature(v, alg, (const unsigned char *)token, (size_t)(d2 - token), sbuf, sn, err,
                          errlen);
    if (rc != MQJWT_OK) goto done;

    if ((rc = parse_object(pbuf, pn, "payload", &payload, err, errlen)) != MQJWT_OK) goto done;
    if ((rc = check_payload(v, payload, now_s, out, err, errlen)) != MQJWT_OK) goto done;
    out->alg = alg;

done:
    cJSON_Delete(hdr);
    cJSON_Delete(payload);
    free(hbuf);
    free(pbuf);
    free(sbuf);
    ERR_clear_error();
    if (rc != MQJWT_OK)
        memset(out, 0, sizeof *out);
    else if (err && errlen > 0)
        err[0] = '\0';
    return rc;
}

int mqjwt_check_identity(const mqjwt_claims *claims, const char *username, const char *client_id,
                         char *err, size_t errlen)
{
    char s[SHOW_MAX + 4];
    size_t sl;

    if (err && errlen > 0) err[0] = '\0';
    if (!claims) return fail(err, errlen, MQJWT_ERR_INVALID_ARG, "no claims");
    if (!username) return fail(err, errlen, MQJWT_ERR_IDENTITY, "no username");
    if (strcmp(username, claims->sub) != 0)
        return fail(err, errlen, MQJWT_ERR_IDENTITY,
                    "username \"%s\" does not match the token's user", show(s, username));
    if (!client_id) return fail(err, errlen, MQJWT_ERR_IDENTITY, "no client id");
    sl = strlen(claims->sub);
    if (strncmp(client_id, claims->sub, sl) != 0 || client_id[sl] != ':' ||
        strcmp(client_id + sl + 1, claims->did) != 0)
        return fail(err, errlen, MQJWT_ERR_IDENTITY,
                    "client id \"%s\" is not \"<user>:<device>\" of the token", show(s, client_id));
    return MQJWT_OK;
}

/* ------------------------------------------------------------------ */
/* verifier                                                            */

static EVP_PKEY *load_pubkey(const char *path, unsigned *algs, char **errmsg)
{
    FILE *f = fopen(path, "r");
    BIO *bio;
    EVP_PKEY *pkey;
    char why[256];

    if (!f) {
        set_errmsg(errmsg, "cannot open public key %s: %s", path, strerror(errno));
        return NULL;
    }
    bio = BIO_new_fp(f, BIO_CLOSE);
    if (!bio) {
        fclose(f);
        set_errmsg(errmsg, "out of memory");
        return NULL;
    }
    pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!pkey) {
        openssl_reason(why, sizeof why);
        set_errmsg(errmsg,
                   "%s has no PEM public key (\"-----BEGIN PUBLIC KEY-----\"; "
                   "derive one with `openssl pkey -pubout`): %s",
                   path, why);
        return NULL;
    }
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < MIN_RSA_BITS) {
            set_errmsg(errmsg, "RSA key in %s has %d bits; at least %d are required", path, bits,
                       MIN_RSA_BITS);
            EVP_PKEY_free(pkey);
            return NULL;
        }
        *algs |= MQJWT_ALG_RS256;
        return pkey;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64] = "";
        size_t glen = 0;
        int nid = NID_undef;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof group, &glen) == 1) {
            nid = OBJ_txt2nid(group);
            if (nid == NID_undef) nid = EC_curve_nist2nid(group);
        }
        if (nid != NID_X9_62_prime256v1) {
            set_errmsg(errmsg, "EC key in %s is on curve \"%s\"; ES256 needs P-256 (prime256v1)",
                       path, group[0] ? group : "?");
            EVP_PKEY_free(pkey);
            return NULL;
        }
        *algs |= MQJWT_ALG_ES256;
        return pkey;
    }
    set_errmsg(errmsg, "key in %s is of type %s; need RSA (RS256) or EC P-256 (ES256)", path,
               EVP_PKEY_get0_type_name(pkey) ? EVP_PKEY_get0_type_name(pkey) : "?");
    EVP_PKEY_free(pkey);
    return NULL;
}

mqjwt_verifier *mqjwt_verifier_new(const mqjwt_config *cfg, char **errmsg)
{
    mqjwt_verifier *v;

    if (errmsg) *errmsg = NULL;
    if (!cfg) {
        set_errmsg(errmsg, "no configuration");
        return NULL;
    }
    if (!cfg->hs256_secret && !cfg->pubkey_pem_path) {
        set_errmsg(errmsg, "no verification key: set an HS256 secret and/or a public key file");
        return NULL;
    }
    if (cfg->hs256_secret && cfg->hs256_secret_len < MQJWT_HS256_MIN_SECRET_LEN) {
        set_errmsg(errmsg, "HS256 secret has %zu bytes; at least %d are required",
                   cfg->hs256_secret_len, MQJWT_HS256_MIN_SECRET_LEN);
        return NULL;
    }
    if (cfg->leeway_s < 0 || cfg->leeway_s > MQJWT_MAX_LEEWAY_S) {
        set_errmsg(errmsg, "leeway %lld s is outside 0..%d", (long long)cfg->leeway_s,
                   MQJWT_MAX_LEEWAY_S);
        return NULL;
    }
    if (cfg->max_token_len > MQJWT_MAX_TOKEN_LEN_LIMIT) {
        set_errmsg(errmsg, "max token length %zu is above %d", cfg->max_token_len,
                   MQJWT_MAX_TOKEN_LEN_LIMIT);
        return NULL;
    }
    if ((cfg->issuer && !cfg->issuer[0]) || (cfg->audience && !cfg->audience[0])) {
        set_errmsg(errmsg, "issuer and audience must be non-empty when set");
        return NULL;
    }

    v = calloc(1, sizeof *v);
    if (!v) {
        set_errmsg(errmsg, "out of memory");
        return NULL;
    }
    v->leeway_s = cfg->leeway_s;
    v->max_token_len = cfg->max_token_len ? cfg->max_token_len : MQJWT_DEFAULT_MAX_TOKEN_LEN;
    if (cfg->hs256_secret) {
        v->secret = malloc(cfg->hs256_secret_len);
        if (!v->secret) goto nomem;
        memcpy(v->secret, cfg->hs256_secret, cfg->hs256_secret_len);
        v->secret_len = cfg->hs256_secret_len;
        v->algs |= MQJWT_ALG_HS256;
        OSSL_PARAM params[2] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_end()};
        if (!(v->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL)) ||
            !(v->hmac_keyed = EVP_MAC_CTX_new(v->hmac)) ||
            !EVP_MAC_init(v->hmac_keyed, v->secret, v->secret_len, params)) {
            char why[256];
            openssl_reason(why, sizeof why);
            set_errmsg(errmsg, "cannot set up HMAC-SHA256: %s", why);
            goto fail;
        }
    }
    if (cfg->pubkey_pem_path) {
        v->pkey = load_pubkey(cfg->pubkey_pem_path, &v->algs, errmsg);
        if (!v->pkey) goto fail;
    }
    if (cfg->issuer && !(v->issuer = strdup(cfg->issuer))) goto nomem;
    if (cfg->audience && !(v->audience = strdup(cfg->audience))) goto nomem;
    v->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!v->sha256) {
        char why[256];
        openssl_reason(why, sizeof why);
        set_errmsg(errmsg, "cannot fetch SHA256: %s", why);
        goto fail;
    }
    ERR_clear_error();
    return v;

nomem:
    set_errmsg(errmsg, "out of memory");
fail:
    mqjwt_verifier_free(v);
    ERR_clear_error();
    return NULL;
}

void mqjwt_verifier_free(mqjwt_verifier *v)
{
    if (!v) return;
    if (v->secret) {
        OPENSSL_cleanse(v->secret, v->secret_len);
        free(v->secret);
    }
    EVP_PKEY_free(v->pkey);
    EVP_MD_free(v->sha256);
    EVP_MAC_CTX_free(v->hmac_keyed); /* cleanses its copy of the key */
    EVP_MAC_free(v->hmac);
    free(v->issuer);
    free(v->audience);
    free(v);
}

unsigned mqjwt_verifier_algs(const mqjwt_verifier *v)
{
    return v ? v->algs : 0;
}

/* ------------------------------------------------------------------ */
/* signing and secrets                                                 */

int mqjwt_sign_hs256(const void *secret, size_t len, const char *claims_json, char **token_out)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char *h64 = NULL, *p64 = NULL, *s64 = NULL, *tok = NULL;
    unsigned char tag[HS256_TAG_LEN];
    const char *end = NULL;
    cJSON *json;
    size_t hl, pl, sl, cl;
    int rc = MQJWT_ERR_NOMEM;

    if (token_out) *token_out = NULL;
    if (!secret || len < MQJWT_HS256_MIN_SECRET_LEN || !claims_json || !token_out)
        return MQJWT_ERR_INVALID_ARG;
    cl = strnlen(claims_json, MQJWT_MAX_TOKEN_LEN_LIMIT + 1);
    if (cl > MQJWT_MAX_TOKEN_LEN_LIMIT) return MQJWT_ERR_INVALID_ARG;
    json = cJSON_ParseWithOpts(claims_json, &end, 1);
    if (!json || !cJSON_IsObject(json)) {
        cJSON_Delete(json);
        return MQJWT_ERR_INVALID_ARG;
    }
    cJSON_Delete(json);

    h64 = b64url_encode((const unsigned char *)header, sizeof header - 1);
    p64 = b64url_encode((const unsigned char *)claims_json, cl);
    if (!h64 || !p64) goto done;
    hl = strlen(h64);
    pl = strlen(p64);
    tok = malloc(hl + 1 + pl + 1 + 4 * ((HS256_TAG_LEN + 2) / 3) + 1);
    if (!tok) goto done;
    memcpy(tok, h64, hl);
    tok[hl] = '.';
    memcpy(tok + hl + 1, p64, pl);
    if (hmac_sha256(secret, len, (const unsigned char *)tok, hl + 1 + pl, tag) != 0) {
        rc = MQJWT_ERR_CRYPTO;
        goto done;
    }
    s64 = b64url_encode(tag, sizeof tag);
    if (!s64) goto done;
    sl = strlen(s64);
    tok[hl + 1 + pl] = '.';
    memcpy(tok + hl + 1 + pl + 1, s64, sl + 1);
    *token_out = tok;
    tok = NULL;
    rc = MQJWT_OK;
done:
    OPENSSL_cleanse(tag, sizeof tag);
    free(h64);
    free(p64);
    free(s64);
    free(tok);
    ERR_clear_error();
    return rc;
}

int mqjwt_load_secret_file(const char *path, unsigned char **secret_out, size_t *len_out,
                           char **errmsg)
{
    unsigned char *buf;
    size_t n = 0, r;
    FILE *f;

    if (errmsg) *errmsg = NULL;
    if (secret_out) *secret_out = NULL;
    if (len_out) *len_out = 0;
    if (!path || !secret_out || !len_out) {
        set_errmsg(errmsg, "invalid argument");
        return MQJWT_ERR_INVALID_ARG;
    }
    f = fopen(path, "rb");
    if (!f) {
        set_errmsg(errmsg, "cannot open secret file %s: %s", path, strerror(errno));
        return MQJWT_ERR_IO;
    }
    buf = malloc(SECRET_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        set_errmsg(errmsg, "out of memory");
        return MQJWT_ERR_NOMEM;
    }
    /* Read at most SECRET_FILE_MAX + 1 bytes; fread loops are bounded by that. */
    while (n < SECRET_FILE_MAX + 1 && (r = fread(buf + n, 1, SECRET_FILE_MAX + 1 - n, f)) > 0)
        n += r;
    if (ferror(f)) {
        set_errmsg(errmsg, "cannot read secret file %s: %s", path, strerror(errno));
        fclose(f);
        mqjwt_secret_free(buf, SECRET_FILE_MAX + 1);
        return MQJWT_ERR_IO;
    }
    fclose(f);
    if (n > SECRET_FILE_MAX) {
        set_errmsg(errmsg, "secret file %s is larger than %d bytes", path, SECRET_FILE_MAX);
        mqjwt_secret_free(buf, SECRET_FILE_MAX + 1);
        return MQJWT_ERR_INVALID_ARG;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0) {
        set_errmsg(errmsg, "secret file %s is empty", path);
        mqjwt_secret_free(buf, SECRET_FILE_MAX + 1);
        return MQJWT_ERR_INVALID_ARG;
    }
    *secret_out = buf;
    *len_out = n;
    return MQJWT_OK;
}

void mqjwt_secret_free(unsigned char *secret, size_t len)
{
    if (!secret) return;
    OPENSSL_cleanse(secret, len);
    free(secret);
}
