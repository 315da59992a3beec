/* apns — see apns.h. */
#include "apns.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jwt_sign.h"
#include "log.h"
#include "retry.h"

#define EXPIRED_REMAKE_MIN_MS 60000 /* at most one forced remake per minute */

struct pd_apns {
    const pd_config *cfg;
    EVP_PKEY *key;
    char *token;
    unsigned gen;
    int64_t made_ms; /* wall clock */
    unsigned long made;
};

void pd_reason_copy(char *dst, size_t cap, const char *src, const char *fallback)
{
    size_t n = 0;
    for (const char *p = src ? src : ""; *p && n + 1 < cap && n < 40; p++) {
        char ch = *p;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '_' || ch == '.')
            dst[n++] = ch;
    }
    dst[n] = '\0';
    if (!n) snprintf(dst, cap, "%s", fallback);
}

pd_apns *pd_apns_new(const pd_config *cfg, char *err, size_t errlen)
{
    assert(cfg->apns_key_file && cfg->apns_key_id && cfg->apns_team_id);
    pd_apns *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->cfg = cfg;
    char why[400];
    a->key = pd_key_load_file(cfg->apns_key_file, PD_ES256, why, sizeof why);
    if (!a->key) {
        snprintf(err, errlen, "apns_key_file: %s", why);
        free(a);
        return NULL;
    }
    return a;
}

void pd_apns_free(pd_apns *a)
{
    if (!a) return;
    EVP_PKEY_free(a->key);
    free(a->token);
    free(a);
}

static int remake(pd_apns *a, int64_t wall_ms)
{
    cJSON *h = cJSON_CreateObject(), *c = cJSON_CreateObject();
    char *hs = NULL, *cs = NULL, *tok = NULL;
    if (h && c && cJSON_AddStringToObject(h, "alg", "ES256") &&
        cJSON_AddStringToObject(h, "kid", a->cfg->apns_key_id) &&
        cJSON_AddStringToObject(c, "iss", a->cfg->apns_team_id) &&
        cJSON_AddNumberToObject(c, "iat", (double)(wall_ms / 1000)) &&
        (hs = cJSON_PrintUnformatted(h)) && (cs = cJSON_PrintUnformatted(c)))
        tok = pd_jwt_sign(a->key, PD_ES256, hs, cs);
    cJSON_Delete(h);
    cJSON_Delete(c);
    free(hs);
    free(cs);
    if (!tok) {
        pd_err("apns: cannot sign the provider token");
        return -1;
    }
    free(a->token);
    a->token = tok;
    a->gen++;
    a->made_ms = wall_ms;
    a->made++;
    pd_info("apns: new provider token (key %s, team %s)", a->cfg->apns_key_id,
            a->cfg->apns_team_id);
    return 0;
}

const char *pd_apns_token(pd_apns *a, int64_t wall_ms, unsigned *gen)
{
    /* Remake when due; also when the wall clock went backwards past it. */
    if (!a->token || wall_ms - a->made_ms >= a->cfg->apns_token_refresh_ms || wall_ms < a->made_ms)
        if (remake(a, wall_ms) != 0 && !a->token) return NULL;
    *gen = a->gen;
    return a->token;
}

void pd_apns_token_expired(pd_apns *a, unsigned gen, int64_t wall_ms)
{
    if (gen != a->gen || wall_ms - a->made_ms < EXPIRED_REMAKE_MIN_MS) return;
    pd_warn("apns: provider token refused as expired; making a new one");
    remake(a, wall_ms);
}

unsigned long pd_apns_tokens_made(const pd_apns *a)
{
    return a->made;
}

static char *payload_with(const pd_job *j, const char *preview, size_t plen, int cut)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *aps = cJSON_AddObjectToObject(root, "aps");
    cJSON *alert = cJSON_AddObjectToObject(aps, "alert");
    char *out = NULL;
    if (!alert) goto done;
    if (preview) {
        char *p = malloc(plen + 4);
        if (!p) goto done;
        memcpy(p, preview, plen);
        if (cut) memcpy(p + plen, "\xe2\x80\xa6", 3); /* … */
        p[plen + (cut ? 3 : 0)] = '\0';
        cJSON *b = cJSON_AddStringToObject(alert, "body", p);
        free(p);
        if (!b) goto done;
    } else if (!cJSON_AddStringToObject(alert, "loc-key", "NEW_MESSAGE")) {
        goto done;
    }
    if (j->badge >= 0 && !cJSON_AddNumberToObject(aps, "badge", (double)j->badge)) goto done;
    if (!cJSON_AddStringToObject(aps, "sound", "default") ||
        !cJSON_AddNumberToObject(aps, "mutable-content", 1) ||
        !cJSON_AddStringToObject(aps, "thread-id", j->conv) ||
        !cJSON_AddStringToObject(root, "conv", j->conv) ||
        !cJSON_AddStringToObject(root, "seq", j->seq))
        goto done;
    out = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    return out;
}

char *pd_apns_payload(const pd_job *j, int preview_max, size_t *len)
{
    assert(!j->bad);
    const char *pv = preview_max > 0 ? j->preview : NULL;
    size_t full = pv ? strlen(pv) : 0, plen = pd_utf8_cut(pv ? pv : "", full, (size_t)preview_max);
    /* Shorten the preview until the payload fits (escaping can grow it). */
    for (int i = 0; i < 8; i++) {
        char *out = payload_with(j, pv, plen, plen < full);
        if (!out) return NULL;
        size_t n = strlen(out);
        if (n <= PD_APNS_PAYLOAD_MAX || !pv) {
            *len = n;
            return out;
        }
        free(out);
        size_t target = plen * PD_APNS_PAYLOAD_MAX / n;
        plen = pd_utf8_cut(pv, full, target > 64 ? target - 64 : 0);
        if (plen == 0) pv = NULL;
    }
    return NULL;
}

static int add_header(struct curl_slist **l, const char *fmt, const char *v)
{
    char buf[2600];
    int n = snprintf(buf, sizeof buf, fmt, v);
    if (n < 0 || (size_t)n >= sizeof buf) return -1;
    struct curl_slist *t = curl_slist_append(*l, buf);
    if (!t) return -1;
    *l = t;
    return 0;
}

int pd_apns_request(pd_apns *a, const pd_job *j, int64_t wall_ms, char **url,
                    struct curl_slist **headers, char **body, size_t *len, unsigned *gen, char *why,
                    size_t whylen)
{
    assert(!j->bad && (j->platform == PD_APNS || j->platform == PD_APNS_SANDBOX));
    const char *topic = j->app && *j->app ? j->app : a->cfg->apns_topic;
    if (!topic || !*topic) {
        snprintf(why, whylen, "NoTopic");
        return -1;
    }
    const char *tok = pd_apns_token(a, wall_ms, gen);
    if (!tok) {
        snprintf(why, whylen, "SigningFailed");
        return -1;
    }
    *body = pd_apns_payload(j, a->cfg->preview_max, len);
    if (!*body) {
        snprintf(why, whylen, "PayloadTooLarge");
        return -1;
    }
    const char *ep = j->platform == PD_APNS ? a->cfg->apns_endpoint : a->cfg->apns_sandbox_endpoint;
    size_t ul = strlen(ep) + strlen(j->token) + 16;
    *url = malloc(ul);
    char exp[24];
    int64_t ttl_s = a->cfg->message_ttl_ms / 1000;
    snprintf(exp, sizeof exp, "%lld", ttl_s ? (long long)(j->ts_ms / 1000 + ttl_s) : 0LL);
    struct curl_slist *h = NULL;
    if (!*url || add_header(&h, "authorization: bearer %s", tok) ||
        add_header(&h, "apns-topic: %s", topic) || add_header(&h, "apns-push-type: %s", "alert") ||
        add_header(&h, "apns-priority: %s", j->high ? "10" : "5") ||
        add_header(&h, "apns-expiration: %s", exp) ||
        (j->collapse[0] && add_header(&h, "apns-collapse-id: %s", j->collapse)) ||
        add_header(&h, "content-type: %s", "application/json")) {
        curl_slist_free_all(h);
        free(*url);
        free(*body);
        *url = *body = NULL;
        snprintf(why, whylen, "OutOfMemory");
        return -1;
    }
    snprintf(*url, ul, "%s/3/device/%s", ep, j->token);
    *headers = h;
    return 0;
}

void pd_apns_classify(long status, const char *body, size_t len, const char *retry_after,
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
    char fallback[16];
    snprintf(fallback, sizeof fallback, "http_%ld", status);
    cJSON *j = len ? cJSON_ParseWithLength(body, len) : NULL;
    cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "reason");
    cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "timestamp");
    pd_reason_copy(o->reason, sizeof o->reason, cJSON_IsString(r) ? r->valuestring : NULL,
                   fallback);
    if (cJSON_IsNumber(ts) && ts->valuedouble > 0) o->token_ts_ms = (int64_t)ts->valuedouble;
    cJSON_Delete(j);
    if (status == 410 || (status == 400 && strcmp(o->reason, "BadDeviceToken") == 0))
        o->verdict = PD_INVALID_TOKEN;
    else if (status == 403 && strcmp(o->reason, "ExpiredProviderToken") == 0)
        o->verdict = PD_AUTH;
    else if (status == 429 || status >= 500)
        o->verdict = PD_RETRY;
    else
        o->verdict = PD_PERMANENT;
}
