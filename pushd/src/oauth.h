/* oauth — the FCM access token, from Google's OAuth2 service-account grant.
 *
 * The service-account JSON gives client_email, private_key (RSA, PEM),
 * private_key_id, token_uri and project_id (fcm_token_uri overrides
 * token_uri). An assertion is an RS256 JWT: header {"alg":"RS256","typ":
 * "JWT","kid":private_key_id}, claims {"iss":client_email,"scope":
 * "https://www.googleapis.com/auth/firebase.messaging","aud":token_uri,
 * "iat":now,"exp":now+3600}; it is POSTed form-encoded to token_uri
 * (grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer). The answer's
 * access_token is used until 80 % of its expires_in has passed, then a new
 * one is fetched while the old one still works; a token FCM refuses (401)
 * is dropped and a new one fetched at once. Fetch failures back off from
 * 1 s to 60 s. One fetch at a time. */
#ifndef PD_OAUTH_H
#define PD_OAUTH_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "config.h"
#include "http.h"

#define PD_FCM_SCOPE "https://www.googleapis.com/auth/firebase.messaging"

typedef struct pd_oauth pd_oauth;

/* Reads the service account; NULL with a message (naming the key) in err. */
pd_oauth *pd_oauth_new(const pd_config *cfg, pd_http *http, char *err, size_t errlen);
void pd_oauth_free(pd_oauth *o);

const char *pd_oauth_project(const pd_oauth *o);
/* A valid access token and its generation, or NULL (a fetch is under way
 * or will be). */
const char *pd_oauth_token(pd_oauth *o, int64_t wall_ms, unsigned *gen);
/* Start a fetch if one is due. */
void pd_oauth_tick(pd_oauth *o, int64_t wall_ms);
/* FCM refused the token of generation gen (401). */
void pd_oauth_refused(pd_oauth *o, unsigned gen, int64_t wall_ms);
unsigned long pd_oauth_fetches(const pd_oauth *o);
unsigned long pd_oauth_failures(const pd_oauth *o);

/* The pieces, for tests. */
char *pd_oauth_assertion(EVP_PKEY *key, const char *kid, const char *email, const char *aud,
                         int64_t now_s);
/* {"access_token":..., "expires_in":N} -> token (malloc'd), seconds. 0 or -1. */
int pd_oauth_parse_answer(const char *body, size_t len, char **token, int64_t *expires_in,
                          char *err, size_t errlen);

#endif
