/* jwt_sign — compact JWS signing for the two provider tokens pushd makes:
 * ES256 (APNs provider token, signature raw r||s as RFC 7518 wants) and
 * RS256 (the Google service-account assertion). OpenSSL does the crypto
 * and the base64; this file only assembles header.claims.signature. */
#ifndef PD_JWT_SIGN_H
#define PD_JWT_SIGN_H

#include <stddef.h>

#include <openssl/evp.h>

typedef enum { PD_ES256, PD_RS256 } pd_jwt_alg;

/* base64url without padding of in[0..n) into out (needs 4*ceil(n/3)+1
 * bytes); returns the length written (NUL-terminated). */
size_t pd_b64url(const unsigned char *in, size_t n, char *out);

/* Load a PEM private key (PKCS#8 or traditional). ES256 needs EC P-256,
 * RS256 RSA >= 2048 bits. NULL with a message in err otherwise. */
EVP_PKEY *pd_key_load_pem(const char *pem, size_t len, pd_jwt_alg alg, char *err, size_t errlen);
EVP_PKEY *pd_key_load_file(const char *path, pd_jwt_alg alg, char *err, size_t errlen);

/* Sign: returns "b64(header).b64(claims).b64(sig)" (malloc'd), or NULL. */
char *pd_jwt_sign(EVP_PKEY *key, pd_jwt_alg alg, const char *header_json, const char *claims_json);

#endif
