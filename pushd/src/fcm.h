/* fcm — FCM HTTP v1: the request for one job and what an answer means.
 *
 * POST {fcm_endpoint}/v1/projects/{project_id}/messages:send with
 * authorization: Bearer <access token> (oauth.c) and
 *   {"message":{"token":T,"data":{"conv":..,"seq":..,"sender":..,"badge":..},
 *    "android":{"collapse_key":C,"priority":"HIGH"|"NORMAL","ttl":"Ns"}}}
 * data only (badge when known; collapse_key when the job has one); with a
 * preview, also "notification":{"body":preview} (cut like APNs). ttl is
 * what is left of message_ttl since the job's ts, so both providers drop
 * a notification at the same moment.
 *
 * Answers: 200 ok; 404 / UNREGISTERED and 400 INVALID_ARGUMENT about the
 * registration token -> invalid token; 401 (not THIRD_PARTY_AUTH_ERROR) ->
 * refresh the access token, retry once; 429, 5xx -> retry (Retry-After);
 * anything else -> dead letter. */
#ifndef PD_FCM_H
#define PD_FCM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>

#include "config.h"
#include "job.h"
#include "provider.h"

#define PD_FCM_MESSAGE_MAX 4096

/* The message JSON (malloc'd) for j at wall time now. */
char *pd_fcm_body(const pd_config *cfg, const pd_job *j, int64_t wall_ms, size_t *len);

/* url, headers, body for j; 0 or -1 with why. */
int pd_fcm_request(const pd_config *cfg, const char *project, const char *access_token,
                   const pd_job *j, int64_t wall_ms, char **url, struct curl_slist **headers,
                   char **body, size_t *len, char *why, size_t whylen);

void pd_fcm_classify(long status, const char *body, size_t len, const char *retry_after,
                     time_t now_s, pd_outcome *out);

#endif
