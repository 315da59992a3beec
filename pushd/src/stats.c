/* stats — see stats.h. */
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

pd_stats pd_stat;

static const double send_bounds[PD_STATS_BUCKETS - 1] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                         0.5,   1,    2.5,   5,    10};
static const double delay_bounds[PD_STATS_BUCKETS - 1] = {0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                                          2.5,  5,    10,  30,   300};

void pd_stats_failed(int platform, const char *reason)
{
    for (int i = 0; i < pd_stat.nfailed; i++) {
        if (pd_stat.failed[i].platform == platform &&
            strcmp(pd_stat.failed[i].reason, reason) == 0) {
            pd_stat.failed[i].n++;
            return;
        }
    }
    if (pd_stat.nfailed == PD_STATS_REASONS) {
        pd_stat.failed_other++;
        return;
    }
    int i = pd_stat.nfailed++;
    pd_stat.failed[i].platform = platform;
    snprintf(pd_stat.failed[i].reason, sizeof pd_stat.failed[i].reason, "%s", reason);
    pd_stat.failed[i].n = 1;
}

static void observe(pd_hist *h, const double *bounds, double v)
{
    int b = 0;
    while (b < PD_STATS_BUCKETS - 1 && v > bounds[b])
        b++;
    h->buckets[b]++;
    h->count++;
    h->sum += v;
}

void pd_stats_observe_send(int platform, double seconds)
{
    observe(&pd_stat.send[platform], send_bounds, seconds);
}

void pd_stats_observe_delay(int platform, double seconds)
{
    observe(&pd_stat.delay[platform], delay_bounds, seconds < 0 ? 0 : seconds);
}

typedef struct buf {
    char *p;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->n) {
            b->n += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void head(buf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void per_platform(buf *b, const char *name, const char *type, const char *help,
                         const uint64_t *v)
{
    head(b, name, type, help);
    for (int p = 0; p < PD_NPLATFORMS; p++)
        put(b, "%s{platform=\"%s\"} %llu\n", name, pd_platform_names[p], (unsigned long long)v[p]);
}

static void one(buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    head(b, name, type, help);
    put(b, "%s %llu\n", name, (unsigned long long)v);
}

static void hist(buf *b, const char *name, const char *help, const pd_hist *h, const double *bounds)
{
    head(b, name, "histogram", help);
    for (int p = 0; p < PD_NPLATFORMS; p++) {
        uint64_t cum = 0;
        for (int i = 0; i < PD_STATS_BUCKETS; i++) {
            cum += h[p].buckets[i];
            if (i < PD_STATS_BUCKETS - 1)
                put(b, "%s_bucket{platform=\"%s\",le=\"%g\"} %llu\n", name, pd_platform_names[p],
                    bounds[i], (unsigned long long)cum);
            else
                put(b, "%s_bucket{platform=\"%s\",le=\"+Inf\"} %llu\n", name, pd_platform_names[p],
                    (unsigned long long)cum);
        }
        put(b, "%s_sum{platform=\"%s\"} %.6f\n%s_count{platform=\"%s\"} %llu\n", name,
            pd_platform_names[p], h[p].sum, name, pd_platform_names[p],
            (unsigned long long)h[p].count);
    }
}

char *pd_stats_render(const pd_stats *s)
{
    buf b = {0};
    put(&b, "%s", "");
    per_platform(&b, "pushd_sent_total", "counter", "Notifications the provider accepted.",
                 s->sent);
    head(&b, "pushd_failed_total", "counter",
         "Failed attempts by platform and reason (provider reason, or transport error).");
    for (int i = 0; i < s->nfailed; i++)
        put(&b, "pushd_failed_total{platform=\"%s\",reason=\"%s\"} %llu\n",
            s->failed[i].platform < PD_NPLATFORMS ? pd_platform_names[s->failed[i].platform]
                                                  : "none",
            s->failed[i].reason, (unsigned long long)s->failed[i].n);
    if (s->failed_other)
        put(&b, "pushd_failed_total{platform=\"any\",reason=\"other\"} %llu\n",
            (unsigned long long)s->failed_other);
    per_platform(&b, "pushd_retries_total", "counter", "Attempts scheduled again after a failure.",
                 s->retries);
    head(&b, "pushd_dead_total", "counter",
         "Jobs written to the dead-letter stream (platform none: malformed).");
    for (int p = 0; p <= PD_NPLATFORMS; p++)
        put(&b, "pushd_dead_total{platform=\"%s\"} %llu\n",
            p < PD_NPLATFORMS ? pd_platform_names[p] : "none", (unsigned long long)s->dead[p]);
    head(
        &b, "pushd_skipped_total", "counter",
        "Jobs acknowledged without sending: the device synced (seen) or the TTL passed (expired).");
    put(&b,
        "pushd_skipped_total{reason=\"seen\"} %llu\npushd_skipped_total{reason=\"expired\"} %llu\n",
        (unsigned long long)s->skipped_seen, (unsigned long long)s->skipped_expired);
    per_platform(&b, "pushd_invalid_tokens_total", "counter",
                 "Tokens the provider called invalid (written to the feedback stream).",
                 s->invalid_tokens);
    per_platform(&b, "pushd_auth_refreshes_total", "counter",
                 "Provider credentials remade after the provider refused them.", s->auth_refreshes);
    one(&b, "pushd_read_total", "counter", "Jobs read from the stream (new ones).", s->read);
    one(&b, "pushd_claimed_total", "counter",
        "Jobs taken over from idle consumers (XAUTOCLAIM) or own earlier pending ones.",
        s->claimed);
    one(&b, "pushd_malformed_total", "counter", "Entries that were not valid jobs.", s->malformed);
    one(&b, "pushd_acked_total", "counter", "Jobs acknowledged (XACK).", s->acked);
    one(&b, "pushd_redis_errors_total", "counter", "Redis error replies and lost commands.",
        s->redis_errors);
    one(&b, "pushd_oauth_fetches_total", "counter", "FCM access tokens fetched.", s->oauth_fetches);
    one(&b, "pushd_oauth_failures_total", "counter", "Failed FCM access token fetches.",
        s->oauth_failures);
    one(&b, "pushd_apns_tokens_total", "counter", "APNs provider tokens signed.", s->apns_tokens);
    per_platform(&b, "pushd_inflight", "gauge", "Requests in flight.", s->inflight);
    per_platform(&b, "pushd_queued", "gauge", "Jobs waiting for a free request slot.", s->queued);
    one(&b, "pushd_jobs", "gauge", "Jobs this pushd holds (pending on it).", s->jobs);
    one(&b, "pushd_retry_waiting", "gauge", "Jobs waiting to be retried.", s->retry_waiting);
    one(&b, "pushd_redis_up", "gauge", "1 when the Redis writer connection is up.", s->redis_up);
    hist(&b, "pushd_send_seconds", "Time from request start to the provider's answer.", s->send,
         send_bounds);
    hist(&b, "pushd_delay_seconds", "Time from the message (job ts) to the provider's acceptance.",
         s->delay, delay_bounds);
    head(&b, "pushd_start_time_seconds", "gauge", "When this pushd started (unix time).");
    put(&b, "pushd_start_time_seconds %lld\n", (long long)(s->started_wall_ms / 1000));
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

int pd_stats_write(const pd_stats *s, const char *path)
{
    char *text = pd_stats_render(s);
    if (!text) {
        errno = ENOMEM;
        return -1;
    }
    size_t len = strlen(text), pl = strlen(path);
    char *tmp = malloc(pl + 32);
    if (!tmp) {
        free(text);
        errno = ENOMEM;
        return -1;
    }
    snprintf(tmp, pl + 32, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = -1, saved = 0;
    if (fd >= 0) {
        size_t off = 0;
        while (off < len) {
            ssize_t w = write(fd, text + off, len - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;
            off += (size_t)w;
        }
        if (off == len && close(fd) == 0) {
            fd = -1;
            if (rename(tmp, path) == 0) rc = 0;
        }
        saved = errno;
        if (fd >= 0) close(fd);
        if (rc != 0) unlink(tmp);
    } else {
        saved = errno;
    }
    free(tmp);
    free(text);
    errno = saved;
    return rc;
}
