/* apns — Apple's provider API: the provider token (ES256 JWT), the request
 * for one job, and what an answer means.
 *
 * Token: header {"alg":"ES256","kid":key id}, claims {"iss":team id,
 * "iat":now}, signed with the .p8 key; reused for every request and made
 * anew when apns_token_refresh old (default 50 min: Apple refuses a token
 * older than an hour and a refresh more often than every 20 min). A 403
 * ExpiredProviderToken remakes it at once (once per minute at most) and
 * the job is retried once.
 *
 * Request: POST {endpoint}/3/device/{token} with authorization: bearer,
 * apns-topic (the job's app, else apns_topic), apns-push-type: alert,
 * apns-priority (10 high, 5 normal), apns-expiration (ts/1000 + TTL; 0 if
 * message_ttl is 0), apns-collapse-id (the job's collapse, if any), and
 *   {"aps":{"alert":{"loc-key":"NEW_MESSAGE"},"badge":N,"sound":"default",
 *    "mutable-content":1,"thread-id":conv},"conv":conv,"seq":"seq"}
 * where alert is {"body":preview} instead when the job has a preview, cut
 * to preview_max bytes and so that the payload stays within 4096 bytes;
 * badge only when known. No message text otherwise. */
#ifndef PD_APNS_H
#define PD_APNS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>

#include "config.h"
#include "job.h"
#include "provider.h"

#define PD_APNS_PAYLOAD_MAX 4096

typedef struct pd_apns pd_apns;

/* Loads the key; NULL with a message (naming the key) in err. */
pd_apns *pd_apns_new(const pd_config *cfg, char *err, size_t errlen);
void pd_apns_free(pd_apns *a);

/* The current provider token (made or remade as needed) and its
 * generation; NULL if signing failed. */
const char *pd_apns_token(pd_apns *a, int64_t wall_ms, unsigned *gen);
/* APNs called the token of generation gen expired. */
void pd_apns_token_expired(pd_apns *a, unsigned gen, int64_t wall_ms);
/* Times a token was made. */
unsigned long pd_apns_tokens_made(const pd_apns *a);

/* The request for j: url, headers, body (all malloc'd, the caller owns
 * them). 0, or -1 with a reason in why (the job cannot be sent: dead). */
int pd_apns_request(pd_apns *a, const pd_job *j, int64_t wall_ms, char **url,
                    struct curl_slist **headers, char **body, size_t *len, unsigned *gen, char *why,
                    size_t whylen);
/* Just the JSON payload (for tests). */
char *pd_apns_payload(const pd_job *j, int preview_max, size_t *len);

void pd_apns_classify(long status, const char *body, size_t len, const char *retry_after,
                      time_t now_s, pd_outcome *out);

#endif
