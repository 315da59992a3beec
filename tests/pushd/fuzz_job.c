/* fuzz_job — libFuzzer target for pushd's job parser (pushd/src/job.c) and
 * the payloads built from a valid job (apns.c, fcm.c).
 *
 * Input: lines; the first is the stream entry id, each next one a field
 * "name=value" (split at the first '='; a line without one is a name with
 * an empty value). Any bytes may appear, NULs included. Invariants (abort()
 * when broken): a parsed job keeps every field byte for byte; a job is bad
 * with a non-empty reason, or valid with all its views set and sane; a
 * valid job's APNs payload and FCM message are JSON objects within the
 * providers' limits, and hold no preview text unless the job has a
 * preview. Seeds: corpus/job/ (replayed in every ctest run). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "apns.h"
#include "config.h"
#include "fcm.h"
#include "job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_job: invariant broken at %s:%d: %s\n", __FILE__, __LINE__,       \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAXF 64

static void check_payloads(const pd_job *j)
{
    static pd_config cfg;
    static int ready;
    if (!ready) {
        pd_config_defaults(&cfg);
        ready = 1;
    }
    size_t len = 0;
    char *p = j->platform == PD_FCM ? pd_fcm_body(&cfg, j, 1700000000000LL, &len)
                                    : pd_apns_payload(j, cfg.preview_max, &len);
    if (!p) return; /* out of memory only */
    CHECK(strlen(p) == len);
    cJSON *root = cJSON_Parse(p);
    CHECK(cJSON_IsObject(root));
    if (j->platform == PD_FCM)
        CHECK(len <= PD_FCM_MESSAGE_MAX + strlen(j->token));
    else
        CHECK(len <= PD_APNS_PAYLOAD_MAX);
    if (!j->preview) {
        CHECK(!strstr(p, "\"body\""));
    }
    cJSON_Delete(root);
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *end = s + size;
    const char *nl = memchr(s, '\n', size);
    size_t idlen = nl ? (size_t)(nl - s) : size;
    char id[64];
    if (idlen >= sizeof id) return 0;
    memcpy(id, s, idlen);
    id[idlen] = '\0';
    const char *names[MAXF], *values[MAXF];
    size_t nlen[MAXF], vlen[MAXF], n = 0;
    for (const char *p = nl ? nl + 1 : end; p < end && n < MAXF;) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        if (!e) e = end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        names[n] = p;
        nlen[n] = (size_t)((eq ? eq : e) - p);
        values[n] = eq ? eq + 1 : e;
        vlen[n] = eq ? (size_t)(e - eq - 1) : 0;
        n++;
        p = e + 1;
    }
    pd_job *j = pd_job_parse(id, n, names, nlen, values, vlen);
    if (!j) return 0;
    CHECK(j->nfields == n);
    for (size_t i = 0; i < n; i++) {
        CHECK(j->fields[i].name_len == nlen[i] &&
              memcmp(j->fields[i].name, names[i], nlen[i]) == 0);
        CHECK(j->fields[i].value_len == vlen[i] &&
              memcmp(j->fields[i].value, values[i], vlen[i]) == 0);
    }
    if (j->bad) {
        CHECK(j->reason[0] != '\0');
    } else {
        CHECK(j->jobid && j->token && j->user && j->device && j->conv && j->seq && j->sender &&
              j->collapse && j->app);
        CHECK(j->platform >= 0 && j->platform < PD_NPLATFORMS);
        CHECK(strlen(j->collapse) <= 64 && j->ts_ms > 0 && j->badge >= -1);
        check_payloads(j);
    }
    pd_job_free(j);
    return 0;
}
