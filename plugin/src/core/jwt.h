/*
 * jwt.h - JWT (JWS compact serialisation) verification for mqchat.
 *
 * The mqchat plugin authenticates MQTT CONNECTs with:
 *   username  = user id
 *   password  = a JWT
 *   client id = "<user>:<device>"
 * This module verifies the JWT and checks that identity; it knows nothing
 * of mosquitto. Crypto is OpenSSL 3, JSON is cJSON.
 *
 * Accepted tokens
 *   - Three base64url parts (no padding, strict alphabet, canonical trailing
 *     bits), at most cfg->max_token_len bytes in total.
 *   - Header: a JSON object with "alg" one of the algorithms the verifier was
 *     configured for (HS256 needs a shared secret; RS256 needs an RSA public
 *     key of >= 2048 bits; ES256 needs an EC P-256 public key). "none" and
 *     every other alg are refused. "typ", if present, must be "JWT" (ASCII
 *     case-insensitive). "crit" present -> refused. Other header members
 *     (kid, ...) are ignored; keys are never fetched from the token.
 *   - Payload: a JSON object with
 *       "sub"  string, user id   (required)
 *       "did"  string, device id (required; mqchat's custom claim)
 *       "exp"  NumericDate       (required; valid while now < exp + leeway)
 *       "nbf"  NumericDate       (optional; valid once now >= nbf - leeway)
 *       "iat"  NumericDate       (optional; reported, not checked)
 *       "iss"  string            (checked if the verifier has an issuer)
 *       "aud"  string or array of strings (see mqjwt_config.audience)
 *     NumericDates are JSON numbers in [0, 253402300799]; fractions are
 *     truncated.
 *   - Duplicate member names in header or payload, NUL bytes or "\u0000"
 *     escapes in the JSON -> refused (MQJWT_ERR_MALFORMED).
 *   - User and device ids: 1..MQJWT_ID_MAX bytes of [A-Za-z0-9._-].
 *
 * Algorithm confusion cannot happen: the HMAC key is only ever the
 * configured shared secret, and an asymmetric key serves exactly one alg
 * (RSA -> RS256, EC P-256 -> ES256). ES256 signatures are raw r||s
 * (64 bytes, RFC 7518 3.4). HMAC tags are compared in constant time.
 *
 * Threads: a verifier is immutable after mqjwt_verifier_new(); any number of
 * threads may call mqjwt_verify() on it concurrently. Every function clears
 * the calling thread's OpenSSL error queue before returning, so failures
 * here do not leak into mosquitto's TLS error reporting.
 *
 * Memory: strings returned through char ** (errmsg, token_out) are
 * allocated with malloc() and owned by the caller, who frees them with
 * free(). Secrets from mqjwt_load_secret_file() are freed with
 * mqjwt_secret_free(), which wipes them first.
 */
#ifndef MQCHAT_JWT_H
#define MQCHAT_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "mqc_id.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: 0 on success, a negative value otherwise. */
enum mqjwt_error {
    MQJWT_OK = 0,
    MQJWT_ERR_INVALID_ARG = -1,     /* NULL pointer or bad parameter from the caller */
    MQJWT_ERR_MALFORMED = -2,       /* not a well-formed JWS/JWT (base64url, JSON, typ, crit...) */
    MQJWT_ERR_TOO_LONG = -3,        /* token longer than max_token_len */
    MQJWT_ERR_UNSUPPORTED_ALG = -4, /* alg missing from config, "none", or unknown */
    MQJWT_ERR_BAD_SIGNATURE = -5,   /* signature does not verify */
    MQJWT_ERR_EXPIRED = -6,         /* now >= exp + leeway */
    MQJWT_ERR_NOT_YET_VALID = -7,   /* now < nbf - leeway */
    MQJWT_ERR_WRONG_ISSUER = -8,    /* iss present but not the configured issuer */
    MQJWT_ERR_WRONG_AUDIENCE = -9,  /* aud does not name the configured audience */
    MQJWT_ERR_MISSING_CLAIM = -10,  /* sub, did, exp (or a required iss/aud) absent */
    MQJWT_ERR_INVALID_CLAIM = -11,  /* claim of wrong type, out of range, bad id syntax */
    MQJWT_ERR_IDENTITY = -12,       /* username / client id do not match the token */
    MQJWT_ERR_NOMEM = -13,          /* allocation failed */
    MQJWT_ERR_CRYPTO = -14,         /* OpenSSL failed internally (not a bad token) */
    MQJWT_ERR_IO = -15,             /* file could not be read */
};

/* Algorithms, as bits (mqjwt_verifier_algs) and as single values (claims.alg). */
enum mqjwt_alg {
    MQJWT_ALG_HS256 = 1,
    MQJWT_ALG_RS256 = 2,
    MQJWT_ALG_ES256 = 4,
};

#define MQJWT_ID_MAX MQC_ID_MAX       /* max bytes of a user or device id (mqc_id.h) */
#define MQJWT_HS256_MIN_SECRET_LEN 32 /* RFC 7518 3.2: key >= hash size */
#define MQJWT_DEFAULT_MAX_TOKEN_LEN 8192
#define MQJWT_MAX_TOKEN_LEN_LIMIT (1024 * 1024)
#define MQJWT_MAX_LEEWAY_S 86400

typedef struct mqjwt_config {
    /* HS256 shared secret; NULL = HS256 not accepted. Copied by
     * mqjwt_verifier_new(); must be >= MQJWT_HS256_MIN_SECRET_LEN bytes. */
    const void *hs256_secret;
    size_t hs256_secret_len;
    /* Path of a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) file; NULL = none.
     * An RSA key (>= 2048 bits) enables RS256, an EC P-256 key enables
     * ES256; other key types are a configuration error. */
    const char *pubkey_pem_path;
    /* Required "iss"; NULL = iss not checked. Copied. */
    const char *issuer;
    /* Required "aud" (token's aud is a string equal to it, or an array
     * containing it). NULL = tokens must NOT carry an aud claim
     * (RFC 7519 4.1.3: a recipient that does not identify itself with a
     * value in aud must reject). Copied. */
    const char *audience;
    /* Clock skew tolerated on exp and nbf, 0..MQJWT_MAX_LEEWAY_S seconds. */
    int64_t leeway_s;
    /* Longest token accepted, in bytes; 0 = MQJWT_DEFAULT_MAX_TOKEN_LEN.
     * At most MQJWT_MAX_TOKEN_LEN_LIMIT. */
    size_t max_token_len;
} mqjwt_config;

/* Claims of a verified token. Fixed-size: nothing to free. */
typedef struct mqjwt_claims {
    char sub[MQJWT_ID_MAX + 1]; /* user id, NUL-terminated, valid syntax */
    char did[MQJWT_ID_MAX + 1]; /* device id, NUL-terminated, valid syntax */
    int64_t exp;
    int64_t nbf; /* 0 unless has_nbf */
    int64_t iat; /* 0 unless has_iat */
    int has_nbf;
    int has_iat;
    int alg; /* the MQJWT_ALG_* that verified the token */
} mqjwt_claims;

typedef struct mqjwt_verifier mqjwt_verifier;

/* Creates a verifier. At least one of hs256_secret / pubkey_pem_path must be
 * set. Returns NULL on error; then, if errmsg is not NULL, *errmsg is a
 * malloc()ed message (caller frees; may be NULL if even that allocation
 * failed). On success *errmsg is set to NULL. */
mqjwt_verifier *mqjwt_verifier_new(const mqjwt_config *cfg, char **errmsg);

/* Frees a verifier and wipes its secret. NULL is a no-op. */
void mqjwt_verifier_free(mqjwt_verifier *v);

/* Bitmask of MQJWT_ALG_* the verifier accepts (0 for NULL). */
unsigned mqjwt_verifier_algs(const mqjwt_verifier *v);

/* Verifies a NUL-terminated token at time now_s (Unix seconds).
 * Returns MQJWT_OK and fills *out, or a negative mqjwt_error; then *out is
 * zeroed. If err is not NULL and errlen > 0, a one-line reason (no secrets;
 * token-supplied strings are truncated and made printable) is written to
 * err, always NUL-terminated; on success err is set to "". */
int mqjwt_verify(const mqjwt_verifier *v, const char *token, int64_t now_s, mqjwt_claims *out,
                 char *err, size_t errlen);

/* Checks the MQTT identity against verified claims: username must equal
 * claims->sub and client_id must equal "<sub>:<did>".
 * Returns MQJWT_OK, MQJWT_ERR_IDENTITY or MQJWT_ERR_INVALID_ARG; err as in
 * mqjwt_verify(). */
int mqjwt_check_identity(const mqjwt_claims *claims, const char *username, const char *client_id,
                         char *err, size_t errlen);

/* Signs claims_json (a JSON object, used verbatim as the payload) with
 * header {"alg":"HS256","typ":"JWT"}. secret must be
 * >= MQJWT_HS256_MIN_SECRET_LEN bytes. On MQJWT_OK *token_out is a
 * malloc()ed NUL-terminated token (caller frees); otherwise *token_out is
 * NULL. Errors: MQJWT_ERR_INVALID_ARG (incl. claims not a JSON object),
 * MQJWT_ERR_NOMEM, MQJWT_ERR_CRYPTO. */
int mqjwt_sign_hs256(const void *secret, size_t len, const char *claims_json, char **token_out);

/* Reads a shared-secret file: the whole file (at most 64 KiB), minus any
 * trailing '\n' / '\r' bytes (so `openssl rand -hex 32 > FILE` works; the
 * secret is then the 64 hex characters). An empty result is an error.
 * On MQJWT_OK *secret_out (free with mqjwt_secret_free) and *len_out are
 * set; otherwise *secret_out is NULL and, if errmsg is not NULL, *errmsg is
 * a malloc()ed message. Errors: MQJWT_ERR_IO, MQJWT_ERR_INVALID_ARG,
 * MQJWT_ERR_NOMEM. */
int mqjwt_load_secret_file(const char *path, unsigned char **secret_out, size_t *len_out,
                           char **errmsg);

/* Wipes and frees a secret from mqjwt_load_secret_file(). NULL is a no-op. */
void mqjwt_secret_free(unsigned char *secret, size_t len);

/* Static English name of an error code ("expired", ...). */
const char *mqjwt_strerror(int code);

/* "HS256", "RS256", "ES256", or "?" for anything else. */
const char *mqjwt_alg_name(int alg);

#ifdef __cplusplus
}
#endif

#endif /* MQCHAT_JWT_H */
