/* metrics — what the plugin counts, and the two ways it is shown: the
 * Prometheus text exposition (GET /metrics, httpd.c) and mosquitto-style
 * retained $SYS topics (published from TICK by broker/tick.c).
 *
 * The idea. Every counter lives where it is counted, as a plain integer
 * the main thread increments (the device layer's fields in device.h, the
 * store's and the push thread's own statistics). Nothing here is atomic
 * and nothing on the send path takes a lock. A few times a second TICK
 * gathers every value into one mqc_snapshot (a plain struct) and copies it
 * into the mutex-guarded mqc_metrics; the HTTP thread copies it out under
 * the same mutex and renders the text on its own time. The main thread
 * therefore pays a struct copy per refresh, never a formatting or a wait
 * on a scrape, and a scrape shows values at most MQC_METRICS_REFRESH_MS
 * old.
 *
 * Histograms have fixed buckets (MQC_HIST_BOUNDS upper bounds from 10 us
 * to 5 s, then +Inf) and count nanoseconds read from the monotonic clock
 * (mqc_metrics_now_ns: one read per measured end).
 *
 * Everything but mqc_metrics_set/get is a pure function of its arguments
 * (unit-tested in tests/unit/test_metrics.c without a broker).
 *
 * Threads: mqc_hist_*, mqc_metrics_text and mqc_sys_publish on any thread,
 * on data the caller owns; mqc_metrics_new/free/set on the main thread,
 * mqc_metrics_get from any thread. */
#ifndef MQC_METRICS_H
#define MQC_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* ---- histograms ----------------------------------------------------------- */

/* Finite bucket upper bounds: 10 us, 25 us, 50 us, 100 us, ... 2.5 s, 5 s. */
#define MQC_HIST_BOUNDS 18

typedef struct mqc_hist {
    uint64_t bucket[MQC_HIST_BOUNDS + 1]; /* per bucket, not cumulative; the last is +Inf */
    uint64_t count;
    uint64_t sum_ns;
} mqc_hist;

/* The upper bound of bucket i (0 <= i < MQC_HIST_BOUNDS), in seconds, and
 * as the `le` label Prometheus shows ("0.0001"). */
double mqc_hist_bound(size_t i);
const char *mqc_hist_label(size_t i);

/* Count one observation of ns nanoseconds (negative counts as 0). */
void mqc_hist_observe(mqc_hist *h, int64_t ns);

/* The q-quantile (0..1) in seconds of what `now` counted since `since`
 * (NULL: since the start), estimated as Prometheus' histogram_quantile
 * does: linear within the bucket the rank falls in, the highest finite
 * bound when it falls in +Inf. 0 when nothing was counted. */
double mqc_hist_quantile(const mqc_hist *now, const mqc_hist *since, double q);

/* CLOCK_MONOTONIC (the clock of mqc_mono_ms) in nanoseconds: the
 * histograms need finer than milliseconds. */
int64_t mqc_metrics_now_ns(void);

/* ---- the snapshot ----------------------------------------------------------- */

/* Refusal reasons: error codes 0..MQC_METRICS_REASONS-1 (the device layer
 * counts per code, device.h MQC_REFUSAL_KINDS). */
#define MQC_METRICS_REASONS 16
#define MQC_METRICS_REASON_LEN 32

/* How often TICK copies a fresh snapshot for the HTTP thread. */
#define MQC_METRICS_REFRESH_MS 250

/* Every value shown, as the main thread saw it at one TICK. */
typedef struct mqc_snapshot {
    /* device layer */
    uint64_t devices_connected;  /* authenticated device connections */
    uint64_t messages_stored;    /* sends written (not duplicates) */
    uint64_t messages_duplicate; /* sends answered from their dedup record */
    uint64_t delivered_live;     /* messages and events published to devices */
    uint64_t delivered_sync;     /* messages returned in sync and pull pages */
    uint64_t refused[MQC_METRICS_REASONS];
    /* Lower-case label of each reason ("rate_limited"); "" = not shown. */
    char reason[MQC_METRICS_REASONS][MQC_METRICS_REASON_LEN];
    uint64_t rate_limited; /* refused[] of the rate-limit code */
    uint64_t outq_waiting; /* outgoing-queue entries waiting for durability */
    uint64_t lane_waiting; /* large-group deliveries queued */
    mqc_hist store_write;  /* the send's store call */
    mqc_hist durable_ack;  /* store write end -> SendAck published */
    /* store */
    int store_writable;      /* 1/0 */
    uint64_t store_failures; /* write failures that stopped writes */
    uint64_t store_resumes;  /* times it became writable again */
    uint64_t store_writes, store_keys, store_bytes;
    uint64_t store_undurable; /* tickets handed out, not yet durable */
    /* Redis: the presence connection and the push connection, each shown
     * only when configured (on). */
    int presence_on, presence_up;
    uint64_t presence_connects;
    int push_on, push_up;
    uint64_t push_connects;
    uint64_t push_outbox; /* jobs not yet handed to Redis */
    uint64_t push_sent, push_expanded, push_collapsed, push_removed, push_invalid;
} mqc_snapshot;

/* The Prometheus text exposition format (version 0.0.4) of s, with HELP
 * and TYPE lines, into buf (at most cap bytes, NUL-terminated when cap >
 * 0). Returns the length of the whole text, as snprintf does: call with
 * cap 0 to size the buffer. */
size_t mqc_metrics_text(const mqc_snapshot *s, char *buf, size_t cap);

/* ---- the snapshot other threads read ------------------------------------ */

typedef struct mqc_metrics mqc_metrics;

/* NULL when out of memory. Starts with an all-zero snapshot. */
mqc_metrics *mqc_metrics_new(void);
void mqc_metrics_free(mqc_metrics *m);
/* Replace the snapshot (main thread: a copy under the mutex). */
void mqc_metrics_set(mqc_metrics *m, const mqc_snapshot *s);
/* Copy the snapshot out (any thread). */
void mqc_metrics_get(mqc_metrics *m, mqc_snapshot *out);

/* ---- $SYS topics ------------------------------------------------------------ */

#define MQC_SYS_PREFIX "$SYS/broker/mqchat/"
#define MQC_SYS_MAX 64 /* topics at most */
#define MQC_SYS_VALUE_LEN 32

/* What was published last, so that only changed values go out again (as
 * mosquitto does with its own $SYS tree), and the histograms at the last
 * publish, so that latency quantiles cover one interval. Zero it before
 * the first use. */
typedef struct mqc_sys {
    int published; /* mqc_sys_publish ran before */
    mqc_hist store_write, durable_ack;
    char last[MQC_SYS_MAX][MQC_SYS_VALUE_LEN];
} mqc_sys;

/* The topic (MQC_SYS_PREFIX + a path) and its value as text. */
typedef void (*mqc_sys_emit)(void *data, const char *topic, const char *value);

/* Call emit for every $SYS topic of s whose value differs from the last
 * call's (all of them the first time), in a fixed order. Latency topics
 * (latency/<name>/p50, p99) are the quantiles of the interval since the
 * last call, 0 when it measured nothing. Returns the number emitted. */
int mqc_sys_publish(mqc_sys *st, const mqc_snapshot *s, mqc_sys_emit emit, void *data);

#endif
