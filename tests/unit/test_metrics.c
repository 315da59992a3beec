/* test_metrics — plugin/src/metrics/: histogram bucketing and quantiles,
 * the Prometheus text exposition (checked line by line against the
 * format's rules), the $SYS topic list and its change-only publishing,
 * the mutex-guarded snapshot under a concurrent reader, and the HTTP
 * endpoint over real sockets: 200 with the right body and content type,
 * 404 and 405, the connection bound, signals blocked in its thread, and a
 * clean stop that frees the port. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"
#include "metrics.h"

/* ---- histograms ---------------------------------------------------------------- */

static void test_hist_buckets(void **state)
{
    (void)state;
    mqc_hist h;
    memset(&h, 0, sizeof(h));
    /* `le` is inclusive: a value on a bound counts in that bound's bucket. */
    mqc_hist_observe(&h, 0);
    mqc_hist_observe(&h, -5); /* a clock step backwards counts as 0 */
    mqc_hist_observe(&h, 10000);
    mqc_hist_observe(&h, 10001);
    mqc_hist_observe(&h, 1000000);     /* 1 ms */
    mqc_hist_observe(&h, 5000000000);  /* 5 s: the last finite bucket */
    mqc_hist_observe(&h, 5000000001);  /* above: +Inf */
    mqc_hist_observe(&h, 60000000000); /* a minute: +Inf */
    assert_int_equal(h.count, 8);
    assert_int_equal(h.bucket[0], 3);
    assert_int_equal(h.bucket[1], 1);
    assert_int_equal(h.bucket[6], 1);
    assert_true(mqc_hist_bound(6) == 0.001);
    assert_int_equal(h.bucket[MQC_HIST_BOUNDS - 1], 1);
    assert_int_equal(h.bucket[MQC_HIST_BOUNDS], 2);
    assert_int_equal(h.sum_ns,
                     10000 + 10001 + 1000000 + 5000000000ull + 5000000001ull + 60000000000ull);
    uint64_t total = 0;
    for (size_t i = 0; i <= MQC_HIST_BOUNDS; i++)
        total += h.bucket[i];
    assert_int_equal(total, h.count);
    /* The bounds ascend from 10 us to 5 s, and the labels say the same. */
    assert_true(mqc_hist_bound(0) == 1e-5);
    assert_true(mqc_hist_bound(MQC_HIST_BOUNDS - 1) == 5.0);
    for (size_t i = 0; i < MQC_HIST_BOUNDS; i++) {
        if (i) assert_true(mqc_hist_bound(i) > mqc_hist_bound(i - 1));
        assert_true(strtod(mqc_hist_label(i), NULL) == mqc_hist_bound(i));
    }
}

static int near(double a, double b)
{
    return a - b < 1e-12 && b - a < 1e-12;
}

static void test_hist_quantile(void **state)
{
    (void)state;
    mqc_hist h;
    memset(&h, 0, sizeof(h));
    assert_true(mqc_hist_quantile(&h, NULL, 0.99) == 0); /* nothing counted */
    /* 100 in (1 ms, 2.5 ms]: linear within the bucket. */
    for (int i = 0; i < 100; i++)
        mqc_hist_observe(&h, 2000000);
    assert_true(near(mqc_hist_quantile(&h, NULL, 0.5), 0.001 + 0.0015 * 0.5));
    assert_true(near(mqc_hist_quantile(&h, NULL, 0.99), 0.001 + 0.0015 * 0.99));
    /* The first bucket starts at 0. */
    mqc_hist low;
    memset(&low, 0, sizeof(low));
    for (int i = 0; i < 4; i++)
        mqc_hist_observe(&low, 1);
    assert_true(near(mqc_hist_quantile(&low, NULL, 0.5), 1e-5 * 0.5));
    /* Since an earlier copy: only what came after counts. */
    mqc_hist before = h;
    for (int i = 0; i < 10; i++)
        mqc_hist_observe(&h, 300000000); /* 300 ms: (250 ms, 500 ms] */
    assert_true(near(mqc_hist_quantile(&h, &before, 0.5), 0.25 + 0.25 * 0.5));
    assert_true(mqc_hist_quantile(&h, &h, 0.5) == 0);
    /* 90 + 10: the p99 falls in the higher bucket, the p50 in the lower. */
    assert_true(mqc_hist_quantile(&h, NULL, 0.5) < 0.0025);
    assert_true(mqc_hist_quantile(&h, NULL, 0.99) > 0.25);
    /* In +Inf: the highest finite bound. */
    mqc_hist inf;
    memset(&inf, 0, sizeof(inf));
    mqc_hist_observe(&inf, 9000000000);
    assert_true(mqc_hist_quantile(&inf, NULL, 0.5) == 5.0);
}

static void test_clock(void **state)
{
    (void)state;
    int64_t a = mqc_metrics_now_ns();
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    int64_t b = mqc_metrics_now_ns();
    assert_true(b - a >= 2000000);
    assert_true(b - a < 2000000000);
}

/* ---- the text exposition ------------------------------------------------------- */

static void fill(mqc_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    s->devices_connected = 3;
    s->messages_stored = 7;
    s->messages_duplicate = 1;
    s->delivered_live = 11;
    s->delivered_sync = 5;
    snprintf(s->reason[1], sizeof(s->reason[1]), "malformed");
    snprintf(s->reason[8], sizeof(s->reason[8]), "rate_limited");
    s->refused[1] = 2;
    s->refused[8] = 4;
    s->refused[9] = 99; /* unnamed: not shown */
    s->rate_limited = 4;
    mqc_hist_observe(&s->store_write, 20000);
    mqc_hist_observe(&s->store_write, 40000);
    mqc_hist_observe(&s->durable_ack, 3000000);
    s->store_writable = 1;
    s->store_failures = 2;
    s->store_resumes = 1;
    s->store_writes = 9;
    s->store_keys = 30;
    s->store_bytes = 4096;
}

static char *render(const mqc_snapshot *s)
{
    size_t n = mqc_metrics_text(s, NULL, 0);
    char *buf = malloc(n + 1);
    assert_non_null(buf);
    assert_int_equal(mqc_metrics_text(s, buf, n + 1), n);
    assert_int_equal(strlen(buf), n);
    return buf;
}

static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return 1;
    return 0;
}

static int valid_name(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9')) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == ':'))
            return 0;
    return 1;
}

/* The text format's rules, line by line: HELP then TYPE once per family
 * before its samples; each sample "name{labels} value" of a family just
 * declared (histograms: _bucket, _sum, _count); counters end in _total;
 * buckets are cumulative and end with le="+Inf" equal to _count. Returns
 * the number of samples. */
static int check_format(const char *text)
{
    char family[128] = "", type[16] = "";
    int samples = 0, declared = 0;
    double last_bucket = -1;
    const char *p = text;
    assert_true(text[0] && text[strlen(text) - 1] == '\n');
    while (*p) {
        const char *end = strchr(p, '\n');
        assert_non_null(end);
        size_t len = (size_t)(end - p);
        char line[512];
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        p = end + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            char *name = line + 7, *sp = strchr(name, ' ');
            assert_non_null(sp);
            assert_true(valid_name(name, (size_t)(sp - name)));
            assert_true(strlen(sp + 1) > 0); /* some help text */
            *sp = '\0';
            assert_true(strcmp(name, family) != 0); /* each family once */
            snprintf(family, sizeof(family), "%.127s", name);
            type[0] = '\0';
            declared++;
            last_bucket = -1;
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], t[16];
            assert_int_equal(sscanf(line + 7, "%127s %15s", name, t), 2);
            assert_string_equal(name, family);
            assert_true(strcmp(t, "counter") == 0 || strcmp(t, "gauge") == 0 ||
                        strcmp(t, "histogram") == 0);
            if (strcmp(t, "counter") == 0) {
                size_t n = strlen(name);
                assert_true(n > 6 && strcmp(name + n - 6, "_total") == 0);
            }
            snprintf(type, sizeof(type), "%s", t);
            continue;
        }
        assert_true(line[0] != '#');
        assert_true(type[0]); /* a sample only after HELP and TYPE */
        char *val = strrchr(line, ' ');
        assert_non_null(val);
        *val++ = '\0';
        char *endv;
        double v = strtod(val, &endv);
        assert_true(*endv == '\0' && v >= 0);
        char *brace = strchr(line, '{');
        size_t nlen = brace ? (size_t)(brace - line) : strlen(line);
        assert_true(valid_name(line, nlen));
        if (brace) assert_true(line[strlen(line) - 1] == '}' && strstr(brace, "=\""));
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)nlen, line);
        if (strcmp(type, "histogram") == 0) {
            char want[160];
            snprintf(want, sizeof(want), "%s_bucket", family);
            if (strcmp(name, want) == 0) {
                assert_non_null(strstr(brace, "le=\""));
                assert_true(v >= last_bucket); /* cumulative */
                last_bucket = v;
            } else {
                snprintf(want, sizeof(want), "%s_count", family);
                if (strcmp(name, want) == 0) {
                    assert_true(v == last_bucket); /* +Inf == count */
                } else {
                    snprintf(want, sizeof(want), "%s_sum", family);
                    assert_string_equal(name, want);
                }
            }
        } else {
            assert_string_equal(name, family);
        }
        samples++;
    }
    assert_true(declared > 10);
    return samples;
}

static void test_text(void **state)
{
    (void)state;
    mqc_snapshot s;
    fill(&s);
    char *t = render(&s);
    check_format(t);
    assert_true(has_line(t, "# TYPE mqchat_devices_connected gauge"));
    assert_true(has_line(t, "mqchat_devices_connected 3"));
    assert_true(has_line(t, "# TYPE mqchat_messages_stored_total counter"));
    assert_true(has_line(t, "mqchat_messages_stored_total 7"));
    assert_true(has_line(t, "mqchat_messages_duplicate_total 1"));
    assert_true(has_line(t, "mqchat_messages_delivered_live_total 11"));
    assert_true(has_line(t, "mqchat_messages_delivered_sync_total 5"));
    assert_true(has_line(t, "mqchat_refusals_total{reason=\"malformed\"} 2"));
    assert_true(has_line(t, "mqchat_refusals_total{reason=\"rate_limited\"} 4"));
    assert_null(strstr(t, " 99\n")); /* the unnamed reason */
    assert_true(has_line(t, "mqchat_rate_limited_total 4"));
    /* 20 us and 40 us: both in (25 us, 50 us] and (10 us, 25 us]. */
    assert_true(has_line(t, "# TYPE mqchat_store_write_seconds histogram"));
    assert_true(has_line(t, "mqchat_store_write_seconds_bucket{le=\"1e-05\"} 0"));
    assert_true(has_line(t, "mqchat_store_write_seconds_bucket{le=\"2.5e-05\"} 1"));
    assert_true(has_line(t, "mqchat_store_write_seconds_bucket{le=\"5e-05\"} 2"));
    assert_true(has_line(t, "mqchat_store_write_seconds_bucket{le=\"5\"} 2"));
    assert_true(has_line(t, "mqchat_store_write_seconds_bucket{le=\"+Inf\"} 2"));
    assert_true(has_line(t, "mqchat_store_write_seconds_sum 0.000060000"));
    assert_true(has_line(t, "mqchat_store_write_seconds_count 2"));
    assert_true(has_line(t, "mqchat_durable_ack_seconds_bucket{le=\"0.0025\"} 0"));
    assert_true(has_line(t, "mqchat_durable_ack_seconds_bucket{le=\"0.005\"} 1"));
    assert_true(has_line(t, "mqchat_store_writable 1"));
    assert_true(has_line(t, "mqchat_store_write_failures_total 2"));
    assert_true(has_line(t, "mqchat_store_resumes_total 1"));
    assert_true(has_line(t, "mqchat_store_bytes_total 4096"));
    /* Redis and push: not configured, not shown. */
    assert_null(strstr(t, "mqchat_redis_"));
    assert_null(strstr(t, "mqchat_push_"));
    free(t);

    s.push_on = 1;
    s.push_up = 1;
    s.push_connects = 2;
    s.push_outbox = 42;
    t = render(&s);
    check_format(t);
    assert_true(has_line(t, "mqchat_redis_up{connection=\"push\"} 1"));
    assert_null(strstr(t, "connection=\"presence\""));
    assert_true(has_line(t, "mqchat_redis_connects_total{connection=\"push\"} 2"));
    assert_true(has_line(t, "# TYPE mqchat_push_outbox_jobs gauge"));
    assert_true(has_line(t, "mqchat_push_outbox_jobs 42"));
    free(t);
    s.presence_on = 1;
    t = render(&s);
    check_format(t);
    assert_true(has_line(t, "mqchat_redis_up{connection=\"presence\"} 0"));
    free(t);
}

static void test_text_truncated(void **state)
{
    (void)state;
    mqc_snapshot s;
    fill(&s);
    char *full = render(&s);
    size_t n = strlen(full);
    char small[100];
    memset(small, 'x', sizeof(small));
    assert_int_equal(mqc_metrics_text(&s, small, sizeof(small)), n);
    assert_int_equal(strlen(small), sizeof(small) - 1); /* cut, NUL-terminated */
    assert_memory_equal(small, full, sizeof(small) - 1);
    char one = 'x';
    assert_int_equal(mqc_metrics_text(&s, &one, 1), n);
    assert_int_equal(one, '\0');
    free(full);
}

/* ---- $SYS ------------------------------------------------------------------------- */

typedef struct sys_seen {
    int n;
    char topic[MQC_SYS_MAX][128];
    char value[MQC_SYS_MAX][MQC_SYS_VALUE_LEN];
} sys_seen;

static void on_sys(void *data, const char *topic, const char *value)
{
    sys_seen *s = data;
    assert_true(s->n < MQC_SYS_MAX);
    snprintf(s->topic[s->n], sizeof(s->topic[0]), "%s", topic);
    snprintf(s->value[s->n], sizeof(s->value[0]), "%s", value);
    s->n++;
}

static const char *sys_get(const sys_seen *s, const char *path)
{
    char topic[128];
    snprintf(topic, sizeof(topic), MQC_SYS_PREFIX "%s", path);
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->topic[i], topic) == 0) return s->value[i];
    return NULL;
}

static void test_sys(void **state)
{
    (void)state;
    mqc_snapshot s;
    fill(&s);
    mqc_sys st;
    memset(&st, 0, sizeof(st));
    sys_seen seen = {0};
    /* The first time: every topic. */
    int n = mqc_sys_publish(&st, &s, on_sys, &seen);
    assert_int_equal(n, seen.n);
    for (int i = 0; i < n; i++) {
        assert_true(strncmp(seen.topic[i], "$SYS/broker/mqchat/", 19) == 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(seen.topic[i], seen.topic[j]);
    }
    assert_string_equal(sys_get(&seen, "devices/connected"), "3");
    assert_string_equal(sys_get(&seen, "messages/stored"), "7");
    assert_string_equal(sys_get(&seen, "messages/delivered/live"), "11");
    assert_string_equal(sys_get(&seen, "messages/delivered/sync"), "5");
    assert_string_equal(sys_get(&seen, "refused/rate_limited"), "4");
    assert_string_equal(sys_get(&seen, "refused/malformed"), "2");
    assert_string_equal(sys_get(&seen, "store/writable"), "1");
    assert_string_equal(sys_get(&seen, "store/failures"), "2");
    assert_non_null(sys_get(&seen, "latency/durable_ack/p99"));
    assert_true(strtod(sys_get(&seen, "latency/durable_ack/p99"), NULL) > 0.0025);
    assert_null(sys_get(&seen, "push/outbox")); /* push off */
    assert_null(sys_get(&seen, "redis/presence/up"));

    /* Nothing changed: nothing goes out (the latency of an empty interval
     * is 0, which did change once). */
    memset(&seen, 0, sizeof(seen));
    mqc_sys_publish(&st, &s, on_sys, &seen);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(mqc_sys_publish(&st, &s, on_sys, &seen), 0);

    /* One counter moves: one topic. */
    s.messages_stored++;
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(mqc_sys_publish(&st, &s, on_sys, &seen), 1);
    assert_string_equal(sys_get(&seen, "messages/stored"), "8");

    /* New latencies: the interval's quantiles, not the whole life's. */
    for (int i = 0; i < 10; i++)
        mqc_hist_observe(&s.durable_ack, 400000000);
    memset(&seen, 0, sizeof(seen));
    mqc_sys_publish(&st, &s, on_sys, &seen);
    double p50 = strtod(sys_get(&seen, "latency/durable_ack/p50"), NULL);
    assert_true(p50 > 0.25 && p50 <= 0.5);

    /* Push on: its topics appear. */
    s.push_on = 1;
    s.push_outbox = 5;
    memset(&seen, 0, sizeof(seen));
    mqc_sys_publish(&st, &s, on_sys, &seen);
    assert_string_equal(sys_get(&seen, "push/outbox"), "5");
    assert_non_null(sys_get(&seen, "redis/push/up"));
}

/* Every topic there can be fits in MQC_SYS_MAX. */
static void test_sys_bound(void **state)
{
    (void)state;
    mqc_snapshot s;
    memset(&s, 0, sizeof(s));
    for (int k = 0; k < MQC_METRICS_REASONS; k++)
        snprintf(s.reason[k], sizeof(s.reason[k]), "reason_%d", k);
    s.presence_on = s.push_on = 1;
    mqc_sys st;
    memset(&st, 0, sizeof(st));
    sys_seen seen = {0};
    int n = mqc_sys_publish(&st, &s, on_sys, &seen);
    assert_true(n > MQC_METRICS_REASONS + 20 && n <= MQC_SYS_MAX);
}

/* ---- the shared snapshot ------------------------------------------------------------ */

typedef struct reader {
    mqc_metrics *m;
    atomic_int stop, reads;
    int torn;
} reader;

static void *read_loop(void *arg)
{
    reader *r = arg;
    mqc_snapshot s;
    while (!atomic_load(&r->stop)) {
        mqc_metrics_get(r->m, &s);
        /* The writer sets every field to one generation: a mix is a tear. */
        if (s.messages_stored != s.delivered_live || s.messages_stored != s.store_bytes ||
            s.messages_stored != s.durable_ack.count)
            r->torn++;
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

static void test_snapshot_shared(void **state)
{
    (void)state;
    mqc_metrics *m = mqc_metrics_new();
    assert_non_null(m);
    mqc_snapshot s;
    mqc_metrics_get(m, &s);
    assert_int_equal(s.messages_stored, 0);
    reader r = {.m = m};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_loop, &r), 0);
    memset(&s, 0, sizeof(s));
    /* Write while the reader reads (at least 20000 sets and 2000 reads,
     * for at most 10 s). */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t g = 0;
    do {
        g++;
        s.messages_stored = s.delivered_live = s.store_bytes = s.durable_ack.count = g;
        mqc_metrics_set(m, &s);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((g < 20000 || atomic_load(&r.reads) < 2000) && now.tv_sec - t0.tv_sec < 10);
    atomic_store(&r.stop, 1);
    pthread_join(t, NULL);
    assert_int_equal(r.torn, 0);
    assert_true(atomic_load(&r.reads) >= 2000);
    mqc_metrics_get(m, &s);
    assert_int_equal(s.messages_stored, g);
    mqc_metrics_free(m);
}

/* ---- HTTP ---------------------------------------------------------------------------- */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One request on a new connection; the whole response (the server
 * closes), malloc'ed, or NULL when the connection failed or was closed
 * without an answer. */
static char *http(int port, const char *method, const char *path)
{
    int fd = dial(port);
    if (fd < 0) return NULL;
    char req[256];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     method, path);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    if (len == 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int status_of(const char *resp)
{
    int code = 0;
    if (!resp || sscanf(resp, "HTTP/1.%*d %d", &code) != 1) return 0;
    return code;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Thread ids now, and whether each has every signal blocked. */
static int tasks(pid_t *ids, int *all_blocked, int max)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] == '.') continue;
        ids[n] = (pid_t)atoi(e->d_name);
        char path[300], line[256];
        snprintf(path, sizeof(path), "/proc/self/task/%.255s/status", e->d_name);
        FILE *f = fopen(path, "r");
        all_blocked[n] = 0;
        while (f && fgets(line, sizeof(line), f)) {
            if (strncmp(line, "SigBlk:", 7) != 0) continue;
            unsigned long long mask = strtoull(line + 7, NULL, 16);
            /* Signals 1..31 but SIGKILL and SIGSTOP, which cannot be
             * blocked (glibc keeps its own 32 and 33 unblocked). */
            unsigned long long want =
                0x7fffffffull & ~((1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1)));
            want |= 1ull << (SIGRTMIN + 4 - 1); /* the wake facility's */
            all_blocked[n] = (mask & want) == want;
        }
        if (f) fclose(f);
        n++;
    }
    closedir(d);
    return n;
}

static void test_http(void **state)
{
    (void)state;
    mqc_metrics *m = mqc_metrics_new();
    assert_non_null(m);
    mqc_snapshot s;
    fill(&s);
    mqc_metrics_set(m, &s);
    int fds_before = count_fds();
    pid_t before[64], after[64];
    int blk_before[64], blk_after[64];
    int nb = tasks(before, blk_before, 64);

    char err[256] = "";
    mqc_metrics_http *h = mqc_metrics_http_start(m, "127.0.0.1", 0, err, sizeof(err));
    assert_non_null(h);
    int port = mqc_metrics_http_port(h);
    assert_true(port > 0);

    /* The server's threads block every signal (the main thread does not). */
    int na = tasks(after, blk_after, 64), new_threads = 0;
    for (int i = 0; i < na; i++) {
        int old = 0;
        for (int j = 0; j < nb; j++)
            old |= after[i] == before[j];
        if (old) continue;
        new_threads++;
        assert_true(blk_after[i]);
    }
    assert_true(new_threads >= 1);

    char *r = http(port, "GET", "/metrics");
    assert_int_equal(status_of(r), 200);
    assert_non_null(strstr(r, "Content-Type: text/plain; version=0.0.4"));
    char *body = strstr(r, "\r\n\r\n");
    assert_non_null(body);
    body += 4;
    char *want = render(&s);
    assert_string_equal(body, want);
    free(want);
    free(r);

    /* A new snapshot shows in the next scrape. */
    s.messages_stored = 1234;
    mqc_metrics_set(m, &s);
    r = http(port, "GET", "/metrics");
    assert_int_equal(status_of(r), 200);
    assert_true(has_line(r, "mqchat_messages_stored_total 1234"));
    free(r);

    r = http(port, "HEAD", "/metrics");
    assert_int_equal(status_of(r), 200);
    assert_null(strstr(r, "mqchat_"));
    free(r);
    r = http(port, "GET", "/");
    assert_int_equal(status_of(r), 404);
    free(r);
    r = http(port, "GET", "/metrics/x");
    assert_int_equal(status_of(r), 404);
    free(r);
    r = http(port, "POST", "/metrics");
    assert_int_equal(status_of(r), 405);
    free(r);

    /* The connection bound: with every slot held by an idle client, one
     * more gets no answer; once they go, scrapes work again. */
    int idle[MQC_HTTP_CONNECTIONS];
    for (int i = 0; i < MQC_HTTP_CONNECTIONS; i++)
        assert_true((idle[i] = dial(port)) >= 0);
    struct timespec ts = {0, 300000000};
    nanosleep(&ts, NULL); /* the server accepts them */
    r = http(port, "GET", "/metrics");
    assert_int_equal(status_of(r), 0);
    free(r);
    for (int i = 0; i < MQC_HTTP_CONNECTIONS; i++)
        close(idle[i]);
    int code = 0;
    for (int i = 0; i < 50 && code != 200; i++) {
        nanosleep(&(struct timespec){0, 20000000}, NULL);
        r = http(port, "GET", "/metrics");
        code = status_of(r);
        free(r);
    }
    assert_int_equal(code, 200);

    /* Stopped: the port is closed and nothing is left open. */
    mqc_metrics_http_stop(h);
    int fd = dial(port);
    assert_int_equal(fd, -1);
    assert_int_equal(count_fds(), fds_before);
    mqc_metrics_http_stop(NULL);
    mqc_metrics_free(m);
}

static void test_http_errors(void **state)
{
    (void)state;
    mqc_metrics *m = mqc_metrics_new();
    assert_non_null(m);
    char err[256] = "";
    assert_null(mqc_metrics_http_start(m, "localhost", 0, err, sizeof(err)));
    assert_non_null(strstr(err, "not an IPv4 or IPv6 address"));
    assert_null(mqc_metrics_http_start(m, "127.0.0.1", 70000, err, sizeof(err)));
    /* A port in use: the reason names it. */
    mqc_metrics_http *h = mqc_metrics_http_start(m, "127.0.0.1", 0, err, sizeof(err));
    assert_non_null(h);
    int port = mqc_metrics_http_port(h);
    err[0] = '\0';
    assert_null(mqc_metrics_http_start(m, "127.0.0.1", port, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot listen"));
    assert_non_null(strstr(err, strerror(EADDRINUSE)));
    mqc_metrics_http_stop(h);
    /* IPv6 loopback, when the machine has it. */
    h = mqc_metrics_http_start(m, "::1", 0, err, sizeof(err));
    if (h) {
        assert_true(mqc_metrics_http_port(h) > 0);
        mqc_metrics_http_stop(h);
    }
    mqc_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_buckets),   cmocka_unit_test(test_hist_quantile),
        cmocka_unit_test(test_clock),          cmocka_unit_test(test_text),
        cmocka_unit_test(test_text_truncated), cmocka_unit_test(test_sys),
        cmocka_unit_test(test_sys_bound),      cmocka_unit_test(test_snapshot_shared),
        cmocka_unit_test(test_http),           cmocka_unit_test(test_http_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
