/* test_providers — what pushd sends and how it reads the answers:
 * APNs payload and headers, FCM message, both providers' answer
 * classification (docs/PUSH.md's rules, with the bodies Apple and Google
 * send), and the Prometheus stats file. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "apns.h"
#include "config.h"
#include "fcm.h"
#include "stats.h"

#define TOKEN "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* A job: fields as "name=value" strings, NULL-terminated. */
static pd_job *mkjob(const char *platform, const char *const *extra)
{
    const char *n[40], *v[40];
    size_t nl[40], vl[40], k = 0;
    const char *base[] = {
        "v=1",          "job=n1:7",         "token=" TOKEN, "app=",       "user=alice",
        "device=phone", "conv=d:alice:bob", "seq=42",       "sender=bob", "collapse=d:alice:bob",
        "badge=5",      "ts=1700000000000", "prio=high",    NULL};
    char plat[64];
    snprintf(plat, sizeof plat, "platform=%s", platform);
    const char *all[40];
    size_t m = 0;
    all[m++] = plat;
    for (size_t i = 0; base[i]; i++) {
        int over = 0;
        for (size_t e = 0; extra && extra[e]; e++) {
            size_t bl = (size_t)(strchr(base[i], '=') - base[i]);
            if (strncmp(extra[e], base[i], bl + 1) == 0) over = 1;
        }
        if (!over) all[m++] = base[i];
    }
    for (size_t e = 0; extra && extra[e]; e++)
        all[m++] = extra[e];
    for (size_t i = 0; i < m; i++) {
        const char *eq = strchr(all[i], '=');
        n[k] = all[i];
        nl[k] = (size_t)(eq - all[i]);
        v[k] = eq + 1;
        vl[k] = strlen(eq + 1);
        k++;
    }
    pd_job *j = pd_job_parse("1700000000000-0", k, n, nl, v, vl);
    assert_non_null(j);
    if (j->bad) fail_msg("job bad: %s", j->reason);
    return j;
}

static cJSON *obj(cJSON *o, const char *path)
{
    char buf[200];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *s = strtok(buf, "."); s && o; s = strtok(NULL, "."))
        o = cJSON_GetObjectItemCaseSensitive(o, s);
    return o;
}

static void apns_payload(void **state)
{
    pd_job *j = mkjob("apns", NULL);
    size_t len;
    char *p = pd_apns_payload(j, 1000, &len);
    assert_int_equal(strlen(p), len);
    cJSON *r = cJSON_Parse(p);
    assert_string_equal(obj(r, "aps.alert.loc-key")->valuestring, "NEW_MESSAGE");
    assert_null(obj(r, "aps.alert.body"));
    assert_int_equal(obj(r, "aps.badge")->valueint, 5);
    assert_string_equal(obj(r, "aps.sound")->valuestring, "default");
    assert_int_equal(obj(r, "aps.mutable-content")->valueint, 1);
    assert_string_equal(obj(r, "aps.thread-id")->valuestring, "d:alice:bob");
    assert_string_equal(obj(r, "conv")->valuestring, "d:alice:bob");
    assert_string_equal(obj(r, "seq")->valuestring, "42");
    cJSON_Delete(r);
    free(p);
    pd_job_free(j);

    const char *with[] = {"preview=Hi \"Bob\"\n", "badge=", NULL};
    j = mkjob("apns", with);
    p = pd_apns_payload(j, 1000, &len);
    r = cJSON_Parse(p);
    assert_string_equal(obj(r, "aps.alert.body")->valuestring, "Hi \"Bob\"\n");
    assert_null(obj(r, "aps.alert.loc-key"));
    assert_null(obj(r, "aps.badge"));
    cJSON_Delete(r);
    free(p);
    /* preview_max 0: previews are never sent. */
    p = pd_apns_payload(j, 0, &len);
    assert_null(strstr(p, "Bob"));
    free(p);
    pd_job_free(j);
}

/* A long preview of characters JSON escapes six-fold still fits in 4096
 * bytes, cut on a character boundary, with an ellipsis. */
static void apns_long_preview(void **state)
{
    char *pv = malloc(3200);
    strcpy(pv, "preview=");
    for (int i = 0; i < 3000; i++)
        pv[8 + i] = i % 2 ? '\x01' : 'x';
    pv[3008] = '\0';
    const char *with[] = {pv, NULL};
    pd_job *j = mkjob("apns", with);
    size_t len;
    char *p = pd_apns_payload(j, 3000, &len);
    assert_non_null(p);
    assert_true(len <= 4096);
    cJSON *r = cJSON_Parse(p);
    const char *body = obj(r, "aps.alert.body")->valuestring;
    assert_true(strlen(body) > 100);
    assert_non_null(strstr(body, "\xe2\x80\xa6"));
    cJSON_Delete(r);
    free(p);
    pd_job_free(j);
    free(pv);
}

static int has_header(struct curl_slist *h, const char *line)
{
    for (; h; h = h->next)
        if (strcmp(h->data, line) == 0) return 1;
    return 0;
}

static int header_named(struct curl_slist *h, const char *prefix)
{
    for (; h; h = h->next)
        if (strncmp(h->data, prefix, strlen(prefix)) == 0) return 1;
    return 0;
}

static void apns_request(void **state)
{
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char path[] = "/tmp/pushd-test-p8-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    PEM_write_PrivateKey(f, ec, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    pd_config c;
    assert_int_equal(pd_config_defaults(&c), 0);
    c.apns_key_file = strdup(path);
    c.apns_key_id = strdup("K");
    c.apns_team_id = strdup("T");
    c.apns_topic = strdup("com.example.app");
    c.message_ttl_ms = 3600 * 1000;
    char err[300], why[64], *url, *body;
    pd_apns *a = pd_apns_new(&c, err, sizeof err);
    assert_non_null(a);
    struct curl_slist *h;
    size_t len;
    unsigned gen;
    pd_job *j = mkjob("apns", NULL);
    assert_int_equal(pd_apns_request(a, j, 1700000000000LL, &url, &h, &body, &len, &gen, why, 64),
                     0);
    assert_string_equal(url, "https://api.push.apple.com/3/device/" TOKEN);
    assert_true(header_named(h, "authorization: bearer ey"));
    assert_true(has_header(h, "apns-topic: com.example.app"));
    assert_true(has_header(h, "apns-push-type: alert"));
    assert_true(has_header(h, "apns-priority: 10"));
    assert_true(has_header(h, "apns-expiration: 1700003600"));
    assert_true(has_header(h, "apns-collapse-id: d:alice:bob"));
    free(url);
    free(body);
    curl_slist_free_all(h);
    pd_job_free(j);

    const char *other[] = {"app=com.other.app", "prio=normal", "collapse=", NULL};
    j = mkjob("apns-sandbox", other);
    assert_int_equal(pd_apns_request(a, j, 1700000000000LL, &url, &h, &body, &len, &gen, why, 64),
                     0);
    assert_string_equal(url, "https://api.sandbox.push.apple.com/3/device/" TOKEN);
    assert_true(has_header(h, "apns-topic: com.other.app"));
    assert_true(has_header(h, "apns-priority: 5"));
    assert_false(header_named(h, "apns-collapse-id"));
    free(url);
    free(body);
    curl_slist_free_all(h);
    pd_job_free(j);

    free(c.apns_topic);
    c.apns_topic = NULL;
    j = mkjob("apns", NULL);
    assert_int_equal(pd_apns_request(a, j, 1700000000000LL, &url, &h, &body, &len, &gen, why, 64),
                     -1);
    assert_string_equal(why, "NoTopic");
    pd_job_free(j);
    pd_apns_free(a);
    pd_config_free(&c);
    unlink(path);
    EVP_PKEY_free(ec);
}

static pd_verdict apns(long status, const char *body, pd_outcome *o)
{
    pd_apns_classify(status, body, body ? strlen(body) : 0, NULL, 1700000000, o);
    return o->verdict;
}

static void apns_answers(void **state)
{
    pd_outcome o;
    assert_int_equal(apns(200, "", &o), PD_OK);
    assert_int_equal(apns(410, "{\"reason\":\"Unregistered\",\"timestamp\":1699999999000}", &o),
                     PD_INVALID_TOKEN);
    assert_string_equal(o.reason, "Unregistered");
    assert_int_equal(o.token_ts_ms, 1699999999000LL);
    assert_int_equal(apns(400, "{\"reason\":\"BadDeviceToken\"}", &o), PD_INVALID_TOKEN);
    assert_int_equal(apns(400, "{\"reason\":\"BadTopic\"}", &o), PD_PERMANENT);
    assert_string_equal(o.reason, "BadTopic");
    assert_int_equal(apns(403, "{\"reason\":\"ExpiredProviderToken\"}", &o), PD_AUTH);
    assert_int_equal(apns(403, "{\"reason\":\"InvalidProviderToken\"}", &o), PD_PERMANENT);
    assert_int_equal(apns(413, "{\"reason\":\"PayloadTooLarge\"}", &o), PD_PERMANENT);
    assert_int_equal(apns(429, "{\"reason\":\"TooManyRequests\"}", &o), PD_RETRY);
    assert_int_equal(apns(500, "{\"reason\":\"InternalServerError\"}", &o), PD_RETRY);
    assert_int_equal(apns(503, "{\"reason\":\"ServiceUnavailable\"}", &o), PD_RETRY);
    assert_int_equal(apns(502, "<html>bad gateway</html>", &o), PD_RETRY);
    assert_string_equal(o.reason, "http_502");
    /* A hostile reason is cut to a safe label. */
    assert_int_equal(apns(400, "{\"reason\":\"a\\\"b c\\n}{x=1\"}", &o), PD_PERMANENT);
    assert_string_equal(o.reason, "abcx1");
    pd_apns_classify(429, "", 0, "7", 1700000000, &o);
    assert_int_equal(o.retry_after_ms, 7000);
}

static void fcm_message(void **state)
{
    pd_config c;
    assert_int_equal(pd_config_defaults(&c), 0);
    c.message_ttl_ms = 3600 * 1000;
    const char *fcm[] = {"token=abc:APA91b-_x", NULL};
    pd_job *j = mkjob("fcm", fcm);
    size_t len;
    char *b = pd_fcm_body(&c, j, 1700000000000LL + 600 * 1000, &len);
    cJSON *r = cJSON_Parse(b);
    assert_string_equal(obj(r, "message.token")->valuestring, "abc:APA91b-_x");
    assert_string_equal(obj(r, "message.data.conv")->valuestring, "d:alice:bob");
    assert_string_equal(obj(r, "message.data.seq")->valuestring, "42");
    assert_string_equal(obj(r, "message.data.sender")->valuestring, "bob");
    assert_string_equal(obj(r, "message.data.badge")->valuestring, "5");
    assert_string_equal(obj(r, "message.android.collapse_key")->valuestring, "d:alice:bob");
    assert_string_equal(obj(r, "message.android.priority")->valuestring, "HIGH");
    assert_string_equal(obj(r, "message.android.ttl")->valuestring, "3000s");
    assert_null(obj(r, "message.notification"));
    cJSON_Delete(r);
    free(b);
    pd_job_free(j);
    const char *pv[] = {"token=abc", "preview=Hello", "badge=", "prio=normal", NULL};
    j = mkjob("fcm", pv);
    b = pd_fcm_body(&c, j, 1700000000000LL + 7200 * 1000, &len);
    r = cJSON_Parse(b);
    assert_string_equal(obj(r, "message.notification.body")->valuestring, "Hello");
    assert_null(obj(r, "message.data.badge"));
    assert_string_equal(obj(r, "message.android.priority")->valuestring, "NORMAL");
    assert_string_equal(obj(r, "message.android.ttl")->valuestring, "0s");
    cJSON_Delete(r);
    free(b);
    pd_job_free(j);
    pd_config_free(&c);
}

static pd_verdict fcm(long status, const char *body, pd_outcome *o)
{
    pd_fcm_classify(status, body, strlen(body), NULL, 1700000000, o);
    return o->verdict;
}

#define FCMERR(code, st, msg, det)                                                                 \
    "{\"error\":{\"code\":" #code ",\"message\":\"" msg "\",\"status\":\"" st                      \
    "\",\"details\":[" det "]}}"
#define FCMCODE(c)                                                                                 \
    "{\"@type\":\"type.googleapis.com/google.firebase.fcm.v1.FcmError\",\"errorCode\":\"" c "\"}"

static void fcm_answers(void **state)
{
    pd_outcome o;
    assert_int_equal(fcm(200, "{\"name\":\"projects/p/messages/0:1\"}", &o), PD_OK);
    assert_int_equal(
        fcm(404,
            FCMERR(404, "NOT_FOUND", "Requested entity was not found.", FCMCODE("UNREGISTERED")),
            &o),
        PD_INVALID_TOKEN);
    assert_string_equal(o.reason, "UNREGISTERED");
    assert_int_equal(
        fcm(400,
            FCMERR(
                400, "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                FCMCODE(
                    "INVALID_ARGUMENT") ",{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\","
                                        "\"fieldViolations\":[{\"field\":\"message.token\"}]}"),
            &o),
        PD_INVALID_TOKEN);
    /* INVALID_ARGUMENT about something else: our bug, dead letter. */
    assert_int_equal(fcm(400,
                         FCMERR(400, "INVALID_ARGUMENT", "Invalid value at 'message.data[0].value'",
                                "{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\","
                                "\"fieldViolations\":[{\"field\":\"message.data[0].value\"}]}"),
                         &o),
                     PD_PERMANENT);
    assert_int_equal(
        fcm(401,
            FCMERR(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", ""),
            &o),
        PD_AUTH);
    assert_int_equal(fcm(401,
                         FCMERR(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
                                FCMCODE("THIRD_PARTY_AUTH_ERROR")),
                         &o),
                     PD_PERMANENT);
    assert_int_equal(
        fcm(403,
            FCMERR(403, "PERMISSION_DENIED", "SenderId mismatch", FCMCODE("SENDER_ID_MISMATCH")),
            &o),
        PD_PERMANENT);
    assert_int_equal(
        fcm(429, FCMERR(429, "RESOURCE_EXHAUSTED", "Quota exceeded", FCMCODE("QUOTA_EXCEEDED")),
            &o),
        PD_RETRY);
    assert_string_equal(o.reason, "QUOTA_EXCEEDED");
    assert_int_equal(fcm(503,
                         FCMERR(503, "UNAVAILABLE", "The service is currently unavailable.",
                                FCMCODE("UNAVAILABLE")),
                         &o),
                     PD_RETRY);
    assert_int_equal(fcm(500, "not json", &o), PD_RETRY);
    /* A 404 without UNREGISTERED (a wrong URL) never calls a token invalid. */
    assert_int_equal(fcm(404, "Not Found", &o), PD_PERMANENT);
}

static void stats_file(void **state)
{
    memset(&pd_stat, 0, sizeof pd_stat);
    pd_stat.sent[PD_APNS] = 3;
    pd_stats_failed(PD_FCM, "UNREGISTERED");
    pd_stats_failed(PD_FCM, "UNREGISTERED");
    pd_stats_observe_send(PD_APNS, 0.003);
    pd_stats_observe_send(PD_APNS, 0.2);
    pd_stats_observe_send(PD_APNS, 20);
    for (int i = 0; i < PD_STATS_REASONS + 5; i++) {
        char r[16];
        snprintf(r, sizeof r, "r%d", i);
        pd_stats_failed(PD_APNS, r);
    }
    char *t = pd_stats_render(&pd_stat);
    assert_non_null(strstr(t, "# HELP pushd_sent_total "));
    assert_non_null(strstr(t, "# TYPE pushd_sent_total counter\n"));
    assert_non_null(strstr(t, "pushd_sent_total{platform=\"apns\"} 3\n"));
    assert_non_null(strstr(t, "pushd_failed_total{platform=\"fcm\",reason=\"UNREGISTERED\"} 2\n"));
    assert_non_null(strstr(t, "pushd_failed_total{platform=\"any\",reason=\"other\"} 6\n"));
    assert_non_null(strstr(t, "# TYPE pushd_send_seconds histogram\n"));
    assert_non_null(strstr(t, "pushd_send_seconds_bucket{platform=\"apns\",le=\"0.005\"} 1\n"));
    assert_non_null(strstr(t, "pushd_send_seconds_bucket{platform=\"apns\",le=\"0.25\"} 2\n"));
    assert_non_null(strstr(t, "pushd_send_seconds_bucket{platform=\"apns\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(t, "pushd_send_seconds_count{platform=\"apns\"} 3\n"));
    assert_non_null(strstr(t, "# TYPE pushd_inflight gauge\n"));
    free(t);
    char dir[] = "/tmp/pushd-test-stats-XXXXXX", path[300];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/pushd.prom", dir);
    assert_int_equal(pd_stats_write(&pd_stat, path), 0);
    assert_int_equal(pd_stats_write(&pd_stat, path), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    fclose(f);
    unlink(path);
    assert_int_equal(rmdir(dir), 0); /* no temporary file left behind */
    snprintf(path, sizeof path, "%s/missing/pushd.prom", dir);
    assert_int_equal(pd_stats_write(&pd_stat, path), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(apns_payload), cmocka_unit_test(apns_long_preview),
        cmocka_unit_test(apns_request), cmocka_unit_test(apns_answers),
        cmocka_unit_test(fcm_message),  cmocka_unit_test(fcm_answers),
        cmocka_unit_test(stats_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
