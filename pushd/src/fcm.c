/* fcm — see fcm.h. */
#include "fcm.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "retry.h"

static char *body_with(const pd_job *j, const char *collapse_ttl, const char *preview, size_t plen,
                       int cut)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(root, "message");
    cJSON *d = cJSON_AddObjectToObject(m, "data");
    cJSON *a = cJSON_AddObjectToObject(m, "android");
    char *out = NULL, badge[24];
    if (!d || !a || !cJSON_AddStringToObject(m, "token", j->token) ||
        !cJSON_AddStringToObject(d, "conv", j->conv) ||
        !cJSON_AddStringToObject(d, "seq", j->seq) ||
        !cJSON_AddStringToObject(d, "sender", j->sender))
        goto done;
    if (j->badge >= 0) {
        snprintf(badge, sizeof badge, "%ld", j->badge);
        if (!cJSON_AddStringToObject(d, "badge", badge)) goto done;
    }
    if ((j->collapse[0] && !cJSON_AddStringToObject(a, "collapse_key", j->collapse)) ||
        !cJSON_AddStringToObject(a, "priority", j->high ? "HIGH" : "NORMAL") ||
        !cJSON_AddStringToObject(a, "ttl", collapse_ttl))
        goto done;
    if (preview) {
        cJSON *n = cJSON_AddObjectToObject(m, "notification");
        char *p = malloc(plen + 4);
        if (!n || !p) {
            free(p);
            goto done;
        }
        memcpy(p, preview, plen);
        if (cut) memcpy(p + plen, "\xe2\x80\xa6", 3);
        p[plen + (cut ? 3 : 0)] = '\0';
        cJSON *b = cJSON_AddStringToObject(n, "body", p);
        free(p);
        if (!b) goto done;
    }
    out = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    return out;
}

char *pd_fcm_body(const pd_config *cfg, const pd_job *j, int64_t wall_ms, size_t *len)
{
    assert(!j->bad && j->platform == PD_FCM);
    char ttl[32];
    int64_t left = cfg->message_ttl_ms ? j->ts_ms + cfg->message_ttl_ms - wall_ms : 0;
    if (left < 0) left = 0;
    snprintf(ttl, sizeof ttl, "%llds", (long long)(left / 1000));
    const char *pv = cfg->preview_max > 0 ? j->preview : NULL;
    size_t full = pv ? strlen(pv) : 0,
           plen = pd_utf8_cut(pv ? pv : "", full, (size_t)cfg->preview_max);
    for (int i = 0; i < 8; i++) {
        char *out = body_with(j, ttl, pv, plen, plen < full);
        if (!out) return NULL;
        size_t n = strlen(out), limit = PD_FCM_MESSAGE_MAX + strlen(j->token);
        if (n <= limit || !pv) {
            *len = n;
            return out;
        }
        free(out);
        size_t target = plen * limit / n;
        plen = pd_utf8_cut(pv, full, target > 64 ? target - 64 : 0);
        if (plen == 0) pv = NULL;
    }
    return NULL;
}

int pd_fcm_request(const pd_config *cfg, const char *project, const char *access_token,
                   const pd_job *j, int64_t wall_ms, char **url, struct curl_slist **headers,
                   char **body, size_t *len, char *why, size_t whylen)
{
    *body = pd_fcm_body(cfg, j, wall_ms, len);
    size_t ul = strlen(cfg->fcm_endpoint) + strlen(project) + 40;
    *url = malloc(ul);
    size_t al = strlen(access_token) + 32;
    char *auth = malloc(al);
    struct curl_slist *h = NULL, *t;
    if (*body && *url && auth) {
        snprintf(*url, ul, "%s/v1/projects/%s/messages:send", cfg->fcm_endpoint, project);
        snprintf(auth, al, "authorization: Bearer %s", access_token);
        if ((t = curl_slist_append(h, auth))) h = t;
        if (t && (t = curl_slist_append(h, "content-type: application/json"))) h = t;
        if (t) {
            free(auth);
            *headers = h;
            return 0;
        }
    }
    free(auth);
    curl_slist_free_all(h);
    free(*url);
    free(*body);
    *url = *body = NULL;
    snprintf(why, whylen, "OutOfMemory");
    return -1;
}

void pd_fcm_classify(long status, const char *body, size_t len, const char *retry_after,
                     time_t now_s, pd_outcome *o)
{
    memset(o, 0, sizeof *o);
    o->status = status;
    o->retry_after_ms = pd_retry_after_ms(retry_after, now_s);
    if (status == 200) {
        o->verdict = PD_OK;
        snprintf(o->reason, sizeof o->reason, "ok");
        return;
    }
    /* {"error":{"code":N,"message":"...","status":"...","details":[{"@type":
     *  "...FcmError","errorCode":"..."},{"@type":"...BadRequest",
     *  "fieldViolations":[{"field":"message.token",...}]}]}} */
    cJSON *root = len ? cJSON_ParseWithLength(body, len) : NULL;
    cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    cJSON *st = cJSON_GetObjectItemCaseSensitive(err, "status");
    cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const char *code = NULL;
    int token_field = 0;
    cJSON *det, *details = cJSON_GetObjectItemCaseSensitive(err, "details");
    cJSON_ArrayForEach(det, details)
    {
        cJSON *ec = cJSON_GetObjectItemCaseSensitive(det, "errorCode");
        if (cJSON_IsString(ec)) code = ec->valuestring;
        cJSON *fv, *fvs = cJSON_GetObjectItemCaseSensitive(det, "fieldViolations");
        cJSON_ArrayForEach(fv, fvs)
        {
            cJSON *field = cJSON_GetObjectItemCaseSensitive(fv, "field");
            if (cJSON_IsString(field) && strcmp(field->valuestring, "message.token") == 0)
                token_field = 1;
        }
    }
    if (cJSON_IsString(msg) && strstr(msg->valuestring, "registration token")) token_field = 1;
    char fallback[16];
    snprintf(fallback, sizeof fallback, "http_%ld", status);
    pd_reason_copy(o->reason, sizeof o->reason,
                   code                 ? code
                   : cJSON_IsString(st) ? st->valuestring
                                        : NULL,
                   fallback);
    int unregistered = code && strcmp(code, "UNREGISTERED") == 0;
    int invalid_arg = (code && strcmp(code, "INVALID_ARGUMENT") == 0) ||
                      (cJSON_IsString(st) && strcmp(st->valuestring, "INVALID_ARGUMENT") == 0);
    int third_party = code && strcmp(code, "THIRD_PARTY_AUTH_ERROR") == 0;
    cJSON_Delete(root);
    if (unregistered)
        o->verdict = PD_INVALID_TOKEN;
    else if (status == 400 && invalid_arg && token_field)
        o->verdict = PD_INVALID_TOKEN;
    else if (status == 401 && !third_party)
        o->verdict = PD_AUTH;
    else if (status == 429 || status >= 500)
        o->verdict = PD_RETRY;
    else
        o->verdict = PD_PERMANENT;
}
