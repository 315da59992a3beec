/* provider — what a provider's answer means for a job, in one type shared
 * by apns.c and fcm.c (which classify their answers) and pushd.c (which
 * acts on them). The rules are docs/PUSH.md's and README.md's "Answers". */
#ifndef PD_PROVIDER_H
#define PD_PROVIDER_H

#include <stdint.h>

typedef enum {
    PD_OK,            /* accepted: acknowledge */
    PD_RETRY,         /* 429, 5xx, no answer: back off and retry */
    PD_INVALID_TOKEN, /* the token is dead: feedback entry, then acknowledge */
    PD_AUTH,          /* our credential was refused: refresh it, retry once */
    PD_PERMANENT,     /* refused for good: dead letter */
} pd_verdict;

typedef struct pd_outcome {
    pd_verdict verdict;
    long status;
    char reason[64];        /* provider's reason / error code, [A-Za-z0-9_] only */
    int64_t retry_after_ms; /* -1: none given */
    int64_t token_ts_ms;    /* APNs 410 "timestamp"; 0: none */
} pd_outcome;

/* Copy a reason from a server, keeping [A-Za-z0-9_.] and at most 40 bytes
 * ("" -> fallback), so it is safe in a log line and a metric label. */
void pd_reason_copy(char *dst, size_t cap, const char *src, const char *fallback);

#endif
