/* oauth — see oauth.h. */
#include "oauth.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "jwt_sign.h"
#include "log.h"
#include "provider.h"

#define FAIL_BACKOFF_MIN_MS 1000
#define FAIL_BACKOFF_MAX_MS 60000
#define ASSERTION_LIFETIME_S 3600
#define EXPIRY_MARGIN_MS 30000 /* a token this close to its end is not used */

struct pd_oauth {
    const pd_config *cfg;
    pd_http *http;
    EVP_PKEY *key;
    char *email, *kid, *token_uri, *project;
    char *token;
    unsigned gen;
    int64_t refresh_ms, expires_ms; /* wall clock */
    int fetching;
    int64_t next_try_ms, backoff_ms;
    unsigned long fetches, failures;
};

static char *dup_item(cJSON *root, const char *name)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);
    return cJSON_IsString(it) && it->valuestring[0] ? strdup(it->valuestring) : NULL;
}

pd_oauth *pd_oauth_new(const pd_config *cfg, pd_http *http, char *err, size_t errlen)
{
    const char *path = cfg->fcm_service_account;
    assert(path);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "fcm_service_account: %s: cannot open", path);
        return NULL;
    }
    char *buf = malloc(65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    cJSON *root = cJSON_Parse(buf);
    OPENSSL_cleanse(buf, 65536);
    free(buf);
    pd_oauth *o = calloc(1, sizeof *o);
    if (!o) {
        cJSON_Delete(root);
        return NULL;
    }
    o->cfg = cfg;
    o->http = http;
    o->backoff_ms = FAIL_BACKOFF_MIN_MS;
    const char *missing = NULL;
    char why[300] = "";
    if (!root) {
        snprintf(why, sizeof why, "not JSON");
    } else {
        char *pem = dup_item(root, "private_key");
        o->email = dup_item(root, "client_email");
        o->kid = dup_item(root, "private_key_id");
        o->project = dup_item(root, "project_id");
        o->token_uri =
            cfg->fcm_token_uri ? strdup(cfg->fcm_token_uri) : dup_item(root, "token_uri");
        if (!pem)
            missing = "private_key";
        else if (!o->email)
            missing = "client_email";
        else if (!o->project)
            missing = "project_id";
        else if (!o->token_uri)
            missing = "token_uri";
        if (missing) {
            snprintf(why, sizeof why, "no \"%s\"", missing);
        } else {
            char kwhy[200];
            o->key = pd_key_load_pem(pem, strlen(pem), PD_RS256, kwhy, sizeof kwhy);
            if (!o->key) snprintf(why, sizeof why, "private_key: %s", kwhy);
        }
        if (pem) {
            OPENSSL_cleanse(pem, strlen(pem));
            free(pem);
        }
        if (!why[0] && strncmp(o->token_uri, "https://", 8) != 0 &&
            strncmp(o->token_uri, "http://", 7) != 0)
            snprintf(why, sizeof why, "token_uri is not an http(s) URL");
    }
    cJSON_Delete(root);
    if (why[0]) {
        snprintf(err, errlen, "fcm_service_account: %s: %s", path, why);
        pd_oauth_free(o);
        return NULL;
    }
    return o;
}

void pd_oauth_free(pd_oauth *o)
{
    if (!o) return;
    EVP_PKEY_free(o->key);
    free(o->email);
    free(o->kid);
    free(o->token_uri);
    free(o->project);
    free(o->token);
    free(o);
}

const char *pd_oauth_project(const pd_oauth *o)
{
    return o->project;
}

unsigned long pd_oauth_fetches(const pd_oauth *o)
{
    return o->fetches;
}

unsigned long pd_oauth_failures(const pd_oauth *o)
{
    return o->failures;
}

char *pd_oauth_assertion(EVP_PKEY *key, const char *kid, const char *email, const char *aud,
                         int64_t now_s)
{
    cJSON *h = cJSON_CreateObject(), *c = cJSON_CreateObject();
    char *hs = NULL, *cs = NULL, *tok = NULL;
    if (h && c && cJSON_AddStringToObject(h, "alg", "RS256") &&
        cJSON_AddStringToObject(h, "typ", "JWT") &&
        (!kid || cJSON_AddStringToObject(h, "kid", kid)) &&
        cJSON_AddStringToObject(c, "iss", email) &&
        cJSON_AddStringToObject(c, "scope", PD_FCM_SCOPE) &&
        cJSON_AddStringToObject(c, "aud", aud) &&
        cJSON_AddNumberToObject(c, "iat", (double)now_s) &&
        cJSON_AddNumberToObject(c, "exp", (double)(now_s + ASSERTION_LIFETIME_S)) &&
        (hs = cJSON_PrintUnformatted(h)) && (cs = cJSON_PrintUnformatted(c)))
        tok = pd_jwt_sign(key, PD_RS256, hs, cs);
    cJSON_Delete(h);
    cJSON_Delete(c);
    free(hs);
    free(cs);
    return tok;
}

int pd_oauth_parse_answer(const char *body, size_t len, char **token, int64_t *expires_in,
                          char *err, size_t errlen)
{
    *token = NULL;
    cJSON *root = cJSON_ParseWithLength(body, len);
    cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "access_token");
    cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
    cJSON *er = cJSON_GetObjectItemCaseSensitive(root, "error");
    cJSON *ed = cJSON_GetObjectItemCaseSensitive(root, "error_description");
    int rc = -1;
    if (!root) {
        snprintf(err, errlen, "answer is not JSON");
    } else if (cJSON_IsString(er)) {
        char r[64], d[64];
        pd_reason_copy(r, sizeof r, er->valuestring, "error");
        snprintf(d, sizeof d, "%s", cJSON_IsString(ed) ? ed->valuestring : "");
        snprintf(err, errlen, "%s: %s", r, d);
    } else if (!cJSON_IsString(t) || !t->valuestring[0] || strpbrk(t->valuestring, "\r\n ")) {
        snprintf(err, errlen, "no access_token in the answer");
    } else if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > 86400 * 7) {
        snprintf(err, errlen, "no valid expires_in in the answer");
    } else if (!(*token = strdup(t->valuestring))) {
        snprintf(err, errlen, "out of memory");
    } else {
        *expires_in = (int64_t)e->valuedouble;
        rc = 0;
    }
    cJSON_Delete(root);
    return rc;
}

static void failed(pd_oauth *o, int64_t wall_ms)
{
    o->failures++;
    o->next_try_ms = wall_ms + o->backoff_ms;
    o->backoff_ms =
        o->backoff_ms * 2 > FAIL_BACKOFF_MAX_MS ? FAIL_BACKOFF_MAX_MS : o->backoff_ms * 2;
}

static void on_answer(const pd_http_res *res, void *data)
{
    pd_oauth *o = data;
    o->fetching = 0;
    int64_t now = pd_wall_ms();
    if (res->aborted) return;
    char why[200];
    char *tok = NULL;
    int64_t ttl = 0;
    if (res->code != CURLE_OK) {
        pd_err("oauth: token request to %s failed: %s", o->token_uri, res->error);
        failed(o, now);
        return;
    }
    if (pd_oauth_parse_answer(res->body, res->body_len, &tok, &ttl, why, sizeof why) != 0 ||
        res->status != 200) {
        if (tok) snprintf(why, sizeof why, "unexpected status");
        free(tok);
        pd_err("oauth: token request refused: status %ld, %s", res->status, why);
        failed(o, now);
        return;
    }
    free(o->token);
    o->token = tok;
    o->gen++;
    o->fetches++;
    o->backoff_ms = FAIL_BACKOFF_MIN_MS;
    /* Not used in its last moments (30 s, or a tenth of a short life). */
    o->expires_ms =
        now + ttl * 1000 - (ttl * 100 < EXPIRY_MARGIN_MS ? ttl * 100 : EXPIRY_MARGIN_MS);
    o->refresh_ms = now + ttl * 800; /* 80 % of its life */
    pd_info("oauth: new FCM access token, valid for %lld s", (long long)ttl);
}

void pd_oauth_tick(pd_oauth *o, int64_t wall_ms)
{
    if (o->fetching || wall_ms < o->next_try_ms) return;
    if (o->token && wall_ms < o->refresh_ms) return;
    char *as = pd_oauth_assertion(o->key, o->kid, o->email, o->token_uri, wall_ms / 1000);
    char *esc = NULL, *body = NULL;
    struct curl_slist *h = NULL;
    if (as) esc = curl_easy_escape(NULL, as, 0);
    static const char grant[] =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
    if (esc && (body = malloc(sizeof grant + strlen(esc)))) {
        memcpy(body, grant, sizeof grant - 1);
        strcpy(body + sizeof grant - 1, esc);
    }
    struct curl_slist *t =
        curl_slist_append(NULL, "content-type: application/x-www-form-urlencoded");
    if (t) h = t;
    free(as);
    curl_free(esc);
    if (!body || !h) {
        free(body);
        curl_slist_free_all(h);
        pd_err("oauth: cannot make the token request (signing failed?)");
        failed(o, wall_ms);
        return;
    }
    size_t len = strlen(body);
    if (pd_http_post(o->http, o->token_uri, h, body, len, on_answer, o) != 0) {
        failed(o, wall_ms);
        return;
    }
    o->fetching = 1;
}

const char *pd_oauth_token(pd_oauth *o, int64_t wall_ms, unsigned *gen)
{
    pd_oauth_tick(o, wall_ms);
    if (!o->token || wall_ms >= o->expires_ms) return NULL;
    *gen = o->gen;
    return o->token;
}

void pd_oauth_refused(pd_oauth *o, unsigned gen, int64_t wall_ms)
{
    if (gen != o->gen || !o->token) return; /* a newer token is there already */
    pd_warn("oauth: FCM refused the access token; fetching a new one");
    free(o->token);
    o->token = NULL;
    o->next_try_ms = 0;
    pd_oauth_tick(o, wall_ms);
}
