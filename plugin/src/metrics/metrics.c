/* metrics — histograms, the Prometheus text and the $SYS topic list, as
 * pure functions of a snapshot; and the one mutex-guarded snapshot the
 * HTTP thread reads (see metrics.h for the idea). */
#include "metrics.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- histograms ----------------------------------------------------------- */

static const int64_t bounds_ns[MQC_HIST_BOUNDS] = {
    10000,     25000,     50000,     100000,     250000,     500000,
    1000000,   2500000,   5000000,   10000000,   25000000,   50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000,
};
static const char *const bound_labels[MQC_HIST_BOUNDS] = {
    "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
    "0.01",  "0.025",   "0.05",  "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",
};

double mqc_hist_bound(size_t i)
{
    assert(i < MQC_HIST_BOUNDS);
    return (double)bounds_ns[i] / 1e9;
}

const char *mqc_hist_label(size_t i)
{
    assert(i < MQC_HIST_BOUNDS);
    return bound_labels[i];
}

void mqc_hist_observe(mqc_hist *h, int64_t ns)
{
    if (ns < 0) ns = 0;
    /* Most observations are small: scan up from the lowest bound. */
    size_t i = 0;
    while (i < MQC_HIST_BOUNDS && ns > bounds_ns[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum_ns += (uint64_t)ns;
}

double mqc_hist_quantile(const mqc_hist *now, const mqc_hist *since, double q)
{
    uint64_t b[MQC_HIST_BOUNDS + 1], total = 0;
    for (size_t i = 0; i <= MQC_HIST_BOUNDS; i++) {
        b[i] = now->bucket[i] - (since ? since->bucket[i] : 0);
        total += b[i];
    }
    if (total == 0) return 0;
    if (q < 0) q = 0;
    if (q > 1) q = 1;
    double rank = q * (double)total, below = 0;
    for (size_t i = 0; i < MQC_HIST_BOUNDS; i++) {
        if (b[i] && below + (double)b[i] >= rank) {
            double lo = i ? mqc_hist_bound(i - 1) : 0, hi = mqc_hist_bound(i);
            return lo + (hi - lo) * (rank - below) / (double)b[i];
        }
        below += (double)b[i];
    }
    return mqc_hist_bound(MQC_HIST_BOUNDS - 1); /* in +Inf: the highest finite bound */
}

int64_t mqc_metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the Prometheus text ------------------------------------------------------ */

/* An snprintf-style writer: counts everything, stores what fits. */
typedef struct wbuf {
    char *p;
    size_t cap, len;
} wbuf;

static void put(wbuf *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(wbuf *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = w->len < w->cap ? w->cap - w->len : 0;
    int n = vsnprintf(room ? w->p + w->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) w->len += (size_t)n;
}

static void family(wbuf *w, const char *name, const char *type, const char *help)
{
    put(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(wbuf *w, const char *name, const char *type, const char *help, uint64_t v)
{
    family(w, name, type, help);
    put(w, "%s %llu\n", name, (unsigned long long)v);
}

static void hist(wbuf *w, const char *name, const char *help, const mqc_hist *h)
{
    family(w, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < MQC_HIST_BOUNDS; i++) {
        cum += h->bucket[i];
        put(w, "%s_bucket{le=\"%s\"} %llu\n", name, bound_labels[i], (unsigned long long)cum);
    }
    cum += h->bucket[MQC_HIST_BOUNDS];
    assert(cum == h->count); /* the buckets account for every observation */
    put(w, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    put(w, "%s_sum %.9f\n", name, (double)h->sum_ns / 1e9);
    put(w, "%s_count %llu\n", name, (unsigned long long)h->count);
}

/* A family with one sample per Redis connection that is configured. */
static void per_conn(wbuf *w, const mqc_snapshot *s, const char *name, const char *type,
                     const char *help, uint64_t presence, uint64_t push)
{
    family(w, name, type, help);
    if (s->presence_on)
        put(w, "%s{connection=\"presence\"} %llu\n", name, (unsigned long long)presence);
    if (s->push_on) put(w, "%s{connection=\"push\"} %llu\n", name, (unsigned long long)push);
}

size_t mqc_metrics_text(const mqc_snapshot *s, char *buf, size_t cap)
{
    wbuf w = {buf, cap, 0};
    if (cap) buf[0] = '\0';
    one(&w, "mqchat_devices_connected", "gauge", "Device connections authenticated by mqchat.",
        s->devices_connected);
    one(&w, "mqchat_messages_stored_total", "counter",
        "Sends written to the store (not counting duplicates).", s->messages_stored);
    one(&w, "mqchat_messages_duplicate_total", "counter",
        "Sends answered from their dedup record (a client's retry).", s->messages_duplicate);
    one(&w, "mqchat_messages_delivered_live_total", "counter",
        "Messages and conversation events published live to devices (large-group lane "
        "included).",
        s->delivered_live);
    one(&w, "mqchat_messages_delivered_sync_total", "counter",
        "Messages returned to devices in sync and pull pages.", s->delivered_sync);
    family(&w, "mqchat_refusals_total", "counter",
           "Sends, requests, receipts and typing notices refused, by reason (error code).");
    for (size_t k = 0; k < MQC_METRICS_REASONS; k++)
        if (s->reason[k][0])
            put(&w, "mqchat_refusals_total{reason=\"%s\"} %llu\n", s->reason[k],
                (unsigned long long)s->refused[k]);
    one(&w, "mqchat_rate_limited_total", "counter",
        "Refusals because a connection went over its rate limit.", s->rate_limited);
    hist(&w, "mqchat_store_write_seconds",
         "Time of the send path's store call (rules and the RocksDB write, no fsync).",
         &s->store_write);
    hist(&w, "mqchat_durable_ack_seconds",
         "Time from a send's store write to the publish of its SendAck (waits for the fsync in "
         "sync durability).",
         &s->durable_ack);
    one(&w, "mqchat_outq_waiting", "gauge",
        "Entries of the outgoing queue waiting for their store write to be durable.",
        s->outq_waiting);
    one(&w, "mqchat_lane_waiting", "gauge",
        "Large-group deliveries queued in the lane (fanout_per_pass per loop pass).",
        s->lane_waiting);
    one(&w, "mqchat_store_writable", "gauge", "1 while the store takes writes, 0 when it refuses.",
        (uint64_t)s->store_writable);
    one(&w, "mqchat_store_write_failures_total", "counter",
        "Store write failures (each stops writes until the store resumes).", s->store_failures);
    one(&w, "mqchat_store_resumes_total", "counter",
        "Times the store became writable again after a failure.", s->store_resumes);
    one(&w, "mqchat_store_writes_total", "counter", "Write batches the store committed.",
        s->store_writes);
    one(&w, "mqchat_store_keys_total", "counter", "Keys put or deleted in those batches.",
        s->store_keys);
    one(&w, "mqchat_store_bytes_total", "counter",
        "Bytes of those batches (keys, values, framing).", s->store_bytes);
    one(&w, "mqchat_store_undurable_writes", "gauge",
        "Store writes not yet durable (waiting for the fsync in sync durability).",
        s->store_undurable);
    if (s->presence_on || s->push_on) {
        per_conn(&w, s, "mqchat_redis_up", "gauge", "1 while the Redis connection works.",
                 (uint64_t)s->presence_up, (uint64_t)s->push_up);
        per_conn(&w, s, "mqchat_redis_connects_total", "counter",
                 "Successful connects to Redis (the first one and every reconnect).",
                 s->presence_connects, s->push_connects);
    }
    if (s->push_on) {
        one(&w, "mqchat_push_outbox_jobs", "gauge",
            "Push jobs in the store's outbox not yet handed to Redis.", s->push_outbox);
        one(&w, "mqchat_push_jobs_sent_total", "counter", "Device push jobs handed to Redis.",
            s->push_sent);
        one(&w, "mqchat_push_jobs_expanded_total", "counter",
            "Device push jobs made from large conversations' jobs.", s->push_expanded);
        one(&w, "mqchat_push_collapsed_total", "counter",
            "Large-conversation pushes skipped because one was still pending.", s->push_collapsed);
        one(&w, "mqchat_push_tokens_removed_total", "counter",
            "Push tokens removed after pushd reported them invalid.", s->push_removed);
        one(&w, "mqchat_push_jobs_invalid_total", "counter",
            "Outbox jobs that did not parse (dropped).", s->push_invalid);
    }
    return w.len;
}

/* ---- the shared snapshot ------------------------------------------------------- */

struct mqc_metrics {
    pthread_mutex_t lock;
    mqc_snapshot snap; /* under lock */
};

mqc_metrics *mqc_metrics_new(void)
{
    mqc_metrics *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    if (pthread_mutex_init(&m->lock, NULL)) {
        free(m);
        return NULL;
    }
    return m;
}

void mqc_metrics_free(mqc_metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void mqc_metrics_set(mqc_metrics *m, const mqc_snapshot *s)
{
    pthread_mutex_lock(&m->lock);
    m->snap = *s;
    pthread_mutex_unlock(&m->lock);
}

void mqc_metrics_get(mqc_metrics *m, mqc_snapshot *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->snap;
    pthread_mutex_unlock(&m->lock);
}

/* ---- $SYS ------------------------------------------------------------------------ */

typedef struct sys_walk {
    mqc_sys *st;
    mqc_sys_emit emit;
    void *data;
    size_t idx; /* the topic's place in the fixed order: its slot in st->last */
    int emitted;
} sys_walk;

static void sys_value(sys_walk *w, const char *path, const char *value)
{
    assert(w->idx < MQC_SYS_MAX); /* the list below is bounded */
    char *last = w->st->last[w->idx++];
    if (w->st->published && strcmp(last, value) == 0) return;
    snprintf(last, MQC_SYS_VALUE_LEN, "%s", value);
    char topic[128];
    snprintf(topic, sizeof(topic), MQC_SYS_PREFIX "%s", path);
    w->emit(w->data, topic, value);
    w->emitted++;
}

static void sys_u(sys_walk *w, const char *path, uint64_t v)
{
    char value[MQC_SYS_VALUE_LEN];
    snprintf(value, sizeof(value), "%llu", (unsigned long long)v);
    sys_value(w, path, value);
}

static void sys_latency(sys_walk *w, const char *name, const mqc_hist *now, const mqc_hist *before)
{
    static const struct {
        const char *leaf;
        double q;
    } qs[] = {{"p50", 0.5}, {"p99", 0.99}};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        char path[64], value[MQC_SYS_VALUE_LEN];
        snprintf(path, sizeof(path), "latency/%s/%s", name, qs[i].leaf);
        snprintf(value, sizeof(value), "%.6f", mqc_hist_quantile(now, before, qs[i].q));
        sys_value(w, path, value);
    }
}

int mqc_sys_publish(mqc_sys *st, const mqc_snapshot *s, mqc_sys_emit emit, void *data)
{
    sys_walk w = {st, emit, data, 0, 0};
    const mqc_hist *sw = st->published ? &st->store_write : NULL;
    const mqc_hist *da = st->published ? &st->durable_ack : NULL;
    sys_u(&w, "devices/connected", s->devices_connected);
    sys_u(&w, "messages/stored", s->messages_stored);
    sys_u(&w, "messages/duplicate", s->messages_duplicate);
    sys_u(&w, "messages/delivered/live", s->delivered_live);
    sys_u(&w, "messages/delivered/sync", s->delivered_sync);
    for (size_t k = 0; k < MQC_METRICS_REASONS; k++) {
        char path[64];
        /* An unnamed reason keeps its slot, so that the order stays fixed. */
        if (!s->reason[k][0]) {
            w.idx++;
            continue;
        }
        snprintf(path, sizeof(path), "refused/%s", s->reason[k]);
        sys_u(&w, path, s->refused[k]);
    }
    sys_latency(&w, "store_write", &s->store_write, sw);
    sys_latency(&w, "durable_ack", &s->durable_ack, da);
    sys_u(&w, "queue/outgoing", s->outq_waiting);
    sys_u(&w, "queue/lane", s->lane_waiting);
    sys_u(&w, "store/writable", (uint64_t)s->store_writable);
    sys_u(&w, "store/failures", s->store_failures);
    sys_u(&w, "store/resumes", s->store_resumes);
    sys_u(&w, "store/writes", s->store_writes);
    sys_u(&w, "store/keys", s->store_keys);
    sys_u(&w, "store/bytes", s->store_bytes);
    sys_u(&w, "store/undurable", s->store_undurable);
    if (s->presence_on) {
        sys_u(&w, "redis/presence/up", (uint64_t)s->presence_up);
        sys_u(&w, "redis/presence/connects", s->presence_connects);
    } else {
        w.idx += 2;
    }
    if (s->push_on) {
        sys_u(&w, "redis/push/up", (uint64_t)s->push_up);
        sys_u(&w, "redis/push/connects", s->push_connects);
        sys_u(&w, "push/outbox", s->push_outbox);
        sys_u(&w, "push/sent", s->push_sent);
        sys_u(&w, "push/expanded", s->push_expanded);
        sys_u(&w, "push/collapsed", s->push_collapsed);
        sys_u(&w, "push/removed", s->push_removed);
        sys_u(&w, "push/invalid", s->push_invalid);
    }
    st->store_write = s->store_write;
    st->durable_ack = s->durable_ack;
    st->published = 1;
    return w.emitted;
}
