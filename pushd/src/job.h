/* job — one push job: a stream entry of {prefix}push, parsed and checked
 * (docs/PUSH.md, "The job stream"), plus what pushd tracks while it owns it.
 *
 * pd_job_parse copies the entry into one allocation: the raw fields (for
 * the dead-letter stream) and the parsed views, which point into them. It
 * checks every field; a malformed entry still yields a job (with `bad` set
 * and a reason) so it can be dead-lettered with its fields, never a crash.
 *
 * Field rules: v = "1"; job 1..128 printable ASCII; platform apns |
 * apns-sandbox | fcm; token: APNs 64..200 hex digits, FCM 1..4096 of
 * [A-Za-z0-9_:.-]; app empty or 1..255 of [A-Za-z0-9._-]; user, device,
 * sender mqchat ids; conv a conversation id; seq 1..20 digits; collapse
 * 0..64 printable ASCII; badge empty or 0..2^31-1; preview valid UTF-8
 * without NUL (optional); ts 1..2^53 ms; prio high | normal. A field given
 * twice is an error; unknown fields are ignored (kept for the dead letter). */
#ifndef PD_JOB_H
#define PD_JOB_H

#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

typedef enum { PD_APNS, PD_APNS_SANDBOX, PD_FCM, PD_NPLATFORMS } pd_platform;

extern const char *const pd_platform_names[PD_NPLATFORMS];

typedef struct pd_field {
    const char *name, *value; /* NUL-terminated copies (values may not be text if bad) */
    size_t name_len, value_len;
} pd_field;

/* Where a job is; see pushd.c for who moves it. */
typedef enum {
    PD_J_SEEN,     /* waiting for the pushseen MGET */
    PD_J_QUEUED,   /* in its provider's send queue */
    PD_J_INFLIGHT, /* an HTTP request is out */
    PD_J_RETRY,    /* in the retry heap until due_ms */
    PD_J_FINAL,    /* needs its feedback / dead-letter XADD */
    PD_J_ACK,      /* needs (or awaits) its XACK */
} pd_job_state;

typedef struct pd_job {
    char entry[48]; /* stream entry id, "ms-seq" */
    /* parsed views (NULL where missing; all valid unless bad) */
    const char *jobid, *token, *app, *user, *device, *conv, *seq, *sender, *collapse, *preview;
    pd_platform platform;
    int high;   /* prio = high */
    long badge; /* -1: unknown */
    int64_t ts_ms;
    int bad;          /* malformed: dead-letter it */
    char reason[120]; /* why bad / why dead */
    size_t nfields;
    pd_field *fields;

    /* --- owned by pushd.c --- */
    pd_job_state state;
    int attempts;               /* HTTP requests made */
    int auth_retried;           /* the one retry after a provider auth refresh was used */
    int fast_retried;           /* the one quick retry after a dead connection was used */
    long last_status;           /* last HTTP status (0: none / transport error) */
    unsigned auth_gen;          /* provider credential generation used by the last request */
    int64_t due_ms;             /* PD_J_RETRY: when (monotonic) */
    size_t heap_idx;            /* PD_J_RETRY: index in the retry heap */
    int64_t touched_ms;         /* last time its idle time was reset in Redis (monotonic) */
    int64_t sent_ms;            /* when the last request started (monotonic) */
    int final_invalid;          /* PD_J_FINAL: feedback (1) or dead letter (0) */
    int64_t token_ts_ms;        /* APNs 410 timestamp, for the feedback entry */
    int busy;                   /* an HTTP request or a Redis command refers to it */
    void *list;                 /* the list it is on, or NULL */
    void *ctx;                  /* its owner (pushd.c's core) */
    struct pd_job *next, *prev; /* the list of its state */
    UT_hash_handle hh;          /* by entry, in pushd.c's table */
} pd_job;

/* Parse one entry. names/values are the field pairs as received (binary
 * safe). Returns the job (check ->bad), or NULL when out of memory or the
 * entry id is not "ms-seq". */
pd_job *pd_job_parse(const char *entry, size_t n, const char *const *names, const size_t *name_lens,
                     const char *const *values, const size_t *value_lens);
void pd_job_free(pd_job *j);

/* 1 if s[0..n) is valid UTF-8 (no overlongs, no surrogates). */
int pd_utf8_valid(const char *s, size_t n);
/* The longest prefix of s (valid UTF-8) of at most max bytes that ends on a
 * character boundary. */
size_t pd_utf8_cut(const char *s, size_t n, size_t max);

#endif
