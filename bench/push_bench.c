/* push_bench — how fast one pushd drains push jobs into the fake APNs / FCM
 * (tests/fakes/fake_push.js), and how long a job takes from XADD to the
 * fake accepting it. Run it through run-push-bench.sh, which starts Redis,
 * the fake and pushd, and passes their pids and ports.
 *
 *   push_bench drain --redis H:P --control PORT --pushd-pid P --fake-pid F
 *                    [--n 100000] [--platform apns|fcm|mixed]
 *     SIGSTOPs pushd, preloads n jobs (pipelined XADD), SIGCONTs it and
 *     times until the fake has answered n requests (GET /stats), then until
 *     every job is acknowledged. CPU (utime+stime from /proc) of pushd, the
 *     fake and redis-server over the drain, per push.
 *
 *   push_bench paced --redis H:P --control PORT [--rate 2000] [--seconds 5]
 *                    [--platform ...]
 *     XADDs at a steady rate and computes, per job, fake arrival time
 *     (its record's "time", ms) minus XADD time: p50 / p90 / p99 / max. The
 *     fake must keep records (no --record-max 0).
 *
 * The last line is "RESULT key=value ..." for the script. Figures only; it
 * asserts nothing about speed. "answers" can exceed n: a request whose
 * connection died after the fake answered is retried and answered again;
 * pushes/s counts jobs, up to the last acknowledgement. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>

static const char *redis_addr = "127.0.0.1:6379", *platform = "apns", *prefix = "mqchat:";
static int control_port, pushd_pid, fake_pid;
static long n_jobs = 100000, rate = 2000;
static double seconds = 5;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double cpu_s(int pid)
{
    if (pid <= 0) return 0;
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* fields after the command name */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- the fake's control API ---- */

typedef struct mem {
    char *p;
    size_t n;
} mem;

static size_t on_data(char *d, size_t s, size_t n, void *u)
{
    mem *m = u;
    char *p = realloc(m->p, m->n + s * n + 1);
    if (!p) return 0;
    memcpy(p + m->n, d, s * n);
    m->p = p;
    m->n += s * n;
    p[m->n] = '\0';
    return s * n;
}

static cJSON *control_get(const char *path)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", control_port, path);
    CURL *e = curl_easy_init();
    mem m = {0};
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &m);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
    CURLcode rc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    cJSON *j = rc == CURLE_OK && m.p ? cJSON_Parse(m.p) : NULL;
    free(m.p);
    if (!j) fprintf(stderr, "push_bench: GET %s failed\n", path);
    return j;
}

/* Requests the fake answered for the roles this run uses. */
static long fake_answered(void)
{
    cJSON *s = control_get("/stats");
    long total = 0;
    cJSON *req = cJSON_GetObjectItem(s, "requests");
    const char *roles[] = {"apns", "fcm"};
    for (int i = 0; i < 2; i++) {
        cJSON *t = cJSON_GetObjectItem(cJSON_GetObjectItem(req, roles[i]), "total");
        if (cJSON_IsNumber(t)) total += (long)t->valuedouble;
    }
    cJSON_Delete(s);
    return total;
}

static long fake_records_total(void)
{
    cJSON *s = control_get("/stats");
    cJSON *t = cJSON_GetObjectItem(s, "records_total");
    long v = cJSON_IsNumber(t) ? (long)t->valuedouble : 0;
    cJSON_Delete(s);
    return v;
}

/* ---- jobs ---- */

static redisContext *rc_connect(void)
{
    char host[256];
    snprintf(host, sizeof host, "%s", redis_addr);
    char *colon = strrchr(host, ':');
    if (!colon) return NULL;
    *colon = '\0';
    redisContext *c = redisConnect(host, atoi(colon + 1));
    if (!c || c->err) {
        fprintf(stderr, "push_bench: redis %s: %s\n", redis_addr, c ? c->errstr : "oom");
        return NULL;
    }
    return c;
}

static const char *plat_of(long i)
{
    if (strcmp(platform, "mixed") == 0) return i % 2 ? "fcm" : "apns";
    return platform;
}

/* Append one XADD for job i (not sent until replies are read). */
static void append_job(redisContext *c, const char *key, long i, long long ts_ms)
{
    const char *plat = plat_of(i);
    char job[48], token[200], device[32], seq[24], ts[24], user[32];
    snprintf(job, sizeof job, "bench:%ld", i);
    if (strcmp(plat, "fcm") == 0)
        snprintf(token, sizeof token,
                 "bench-fcm-token-%ld:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9", i % 1000);
    else
        snprintf(token, sizeof token, "%016lx%016lx%016lx%016lx", 0xbeef0000L + i % 1000, 0x1234L,
                 0x5678L, 0x9abcL);
    snprintf(device, sizeof device, "dev%ld", i);
    snprintf(user, sizeof user, "user%ld", i % 1000);
    snprintf(seq, sizeof seq, "%ld", i + 1);
    snprintf(ts, sizeof ts, "%lld", ts_ms);
    const char *argv[] = {
        "XADD",        key,     "*",           "v",   "1", "job",    job,   "platform",
        plat,          "token", token,         "app", "",  "user",   user,  "device",
        device,        "conv",  "d:alice:bob", "seq", seq, "sender", "bob", "collapse",
        "d:alice:bob", "badge", "1",           "ts",  ts,  "prio",   "high"};
    redisAppendCommandArgv(c, (int)(sizeof argv / sizeof argv[0]), argv, NULL);
}

static int read_replies(redisContext *c, long n)
{
    for (long k = 0; k < n; k++) {
        redisReply *r;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) return -1;
        int bad = r->type == REDIS_REPLY_ERROR;
        if (bad) fprintf(stderr, "push_bench: %s\n", r->str);
        freeReplyObject(r);
        if (bad) return -1;
    }
    return 0;
}

static long long llcmd(redisContext *c, const char *fmt, const char *key)
{
    redisReply *r = redisCommand(c, fmt, key);
    long long v = -1;
    if (r && r->type == REDIS_REPLY_INTEGER) v = r->integer;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        r->element[0]->type == REDIS_REPLY_INTEGER)
        v = r->element[0]->integer;
    if (r) freeReplyObject(r);
    return v;
}

static int redis_pid(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO server");
    int pid = 0;
    if (r && r->type == REDIS_REPLY_STRING) {
        char *p = strstr(r->str, "process_id:");
        if (p) pid = atoi(p + 11);
    }
    if (r) freeReplyObject(r);
    return pid;
}

static int drain(void)
{
    redisContext *c = rc_connect();
    if (!c) return 1;
    char key[256], pend[300];
    snprintf(key, sizeof key, "%spush", prefix);
    snprintf(pend, sizeof pend, "XPENDING %s pushd", key);
    int rpid = redis_pid(c);
    long base = fake_answered();
    if (pushd_pid > 0 && kill(pushd_pid, SIGSTOP) != 0) {
        perror("push_bench: SIGSTOP pushd");
        return 1;
    }
    double t = now_s();
    long long ts = (long long)wall_ms();
    for (long i = 0; i < n_jobs; i += 1000) {
        long k = n_jobs - i < 1000 ? n_jobs - i : 1000;
        for (long m = 0; m < k; m++)
            append_job(c, key, i + m, ts);
        if (read_replies(c, k) != 0) return 1;
    }
    double preload = now_s() - t;
    printf("preloaded %ld %s jobs in %.2f s (%.0f XADD/s)\n", n_jobs, platform, preload,
           (double)n_jobs / preload);
    double cp0 = cpu_s(pushd_pid), cf0 = cpu_s(fake_pid), cr0 = cpu_s(rpid);
    double t0 = now_s();
    if (pushd_pid > 0) kill(pushd_pid, SIGCONT);
    long got = 0;
    while ((got = fake_answered() - base) < n_jobs && now_s() - t0 < 300)
        usleep(10000);
    double t1 = now_s();
    double cp1 = cpu_s(pushd_pid), cf1 = cpu_s(fake_pid), cr1 = cpu_s(rpid);
    while ((llcmd(c, "XLEN %s", key) > 0 || llcmd(c, pend, NULL) > 0) && now_s() - t0 < 300)
        usleep(10000);
    double t2 = now_s();
    double secs = t1 - t0;
    double per = (double)n_jobs;
    printf("drained: %ld answers in %.3f s -> %.0f answers/s; all %ld jobs acknowledged after "
           "%.3f s -> %.0f pushes/s\n",
           got, secs, (double)got / secs, n_jobs, t2 - t0, (double)n_jobs / (t2 - t0));
    printf("cpu per push: pushd %.1f us, fake %.1f us, redis %.1f us  (cores busy: pushd %.2f, "
           "fake %.2f, redis %.2f)\n",
           (cp1 - cp0) / per * 1e6, (cf1 - cf0) / per * 1e6, (cr1 - cr0) / per * 1e6,
           (cp1 - cp0) / secs, (cf1 - cf0) / secs, (cr1 - cr0) / secs);
    printf("RESULT mode=drain platform=%s n=%ld answers=%ld answered_s=%.3f acked_s=%.3f "
           "pushes_per_s=%.0f pushd_us=%.1f fake_us=%.1f redis_us=%.1f pushd_cores=%.2f "
           "fake_cores=%.2f\n",
           platform, n_jobs, got, secs, t2 - t0, (double)n_jobs / (t2 - t0),
           (cp1 - cp0) / per * 1e6, (cf1 - cf0) / per * 1e6, (cr1 - cr0) / per * 1e6,
           (cp1 - cp0) / secs, (cf1 - cf0) / secs);
    redisFree(c);
    return got >= n_jobs ? 0 : 1;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int paced(void)
{
    redisContext *c = rc_connect();
    if (!c) return 1;
    char key[256];
    snprintf(key, sizeof key, "%spush", prefix);
    long total = (long)((double)rate * seconds);
    double *sent_ms = calloc((size_t)total + 1, sizeof *sent_ms);
    long rec_base = fake_records_total(), base = fake_answered();
    double t0 = now_s();
    long sent = 0;
    while (sent < total) {
        long due = (long)((now_s() - t0) * (double)rate);
        if (due > total) due = total;
        long k = due - sent;
        if (k > 0) {
            double w = wall_ms();
            for (long m = 0; m < k; m++) {
                append_job(c, key, sent + m, (long long)w);
                sent_ms[sent + m] = w;
            }
            if (read_replies(c, k) != 0) return 1;
            sent += k;
        }
        usleep(1000);
    }
    double t_sent = now_s();
    while (fake_answered() - base < total && now_s() - t_sent < 60)
        usleep(20000);
    char path[128];
    int nroles = strcmp(platform, "mixed") == 0 ? 2 : 1;
    double *lat = malloc((size_t)total * sizeof *lat);
    long nl = 0;
    for (int ri = 0; ri < nroles; ri++) {
        const char *role = nroles == 2 ? (ri ? "fcm" : "apns") : platform;
        snprintf(path, sizeof path, "/requests?role=%s&since=%ld", role, rec_base);
        cJSON *recs = control_get(path), *r;
        cJSON_ArrayForEach(r, recs)
        {
            cJSON *body = cJSON_GetObjectItem(r, "body"), *seq;
            if (strcmp(role, "fcm") == 0)
                seq = cJSON_GetObjectItem(
                    cJSON_GetObjectItem(cJSON_GetObjectItem(body, "message"), "data"), "seq");
            else
                seq = cJSON_GetObjectItem(body, "seq");
            cJSON *tm = cJSON_GetObjectItem(r, "time");
            if (!cJSON_IsString(seq) || !cJSON_IsNumber(tm)) continue;
            long i = atol(seq->valuestring) - 1;
            if (i < 0 || i >= total || sent_ms[i] == 0) continue;
            /* The fake's clock is whole ms: compare whole ms. */
            lat[nl++] = tm->valuedouble - (double)(long long)sent_ms[i];
            sent_ms[i] = 0; /* count a job once */
        }
        cJSON_Delete(recs);
    }
    qsort(lat, (size_t)nl, sizeof *lat, cmp_d);
#define PCT(p) (nl ? lat[(long)((double)(nl - 1) * (p))] : 0)
    printf("paced: %ld jobs at %ld/s over %.1f s; %ld seen by the fake\n", total, rate, seconds,
           nl);
    printf(
        "XADD -> fake accepted (ms, fake clock has ms resolution): p50 %.1f  p90 %.1f  p99 %.1f  "
        "max %.1f\n",
        PCT(0.5), PCT(0.9), PCT(0.99), nl ? lat[nl - 1] : 0);
    printf("RESULT mode=paced platform=%s rate=%ld n=%ld seen=%ld p50_ms=%.1f p90_ms=%.1f "
           "p99_ms=%.1f max_ms=%.1f\n",
           platform, rate, total, nl, PCT(0.5), PCT(0.9), PCT(0.99), nl ? lat[nl - 1] : 0);
    free(lat);
    free(sent_ms);
    redisFree(c);
    return nl == total ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "drain") != 0 && strcmp(argv[1], "paced") != 0)) {
        fprintf(stderr, "usage: push_bench drain|paced --redis H:P --control PORT [--pushd-pid P] "
                        "[--fake-pid F] [--n N] [--rate R] [--seconds S] [--platform "
                        "apns|fcm|mixed] [--prefix P]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--redis"))
            redis_addr = v;
        else if (!strcmp(k, "--control"))
            control_port = atoi(v);
        else if (!strcmp(k, "--pushd-pid"))
            pushd_pid = atoi(v);
        else if (!strcmp(k, "--fake-pid"))
            fake_pid = atoi(v);
        else if (!strcmp(k, "--n"))
            n_jobs = atol(v);
        else if (!strcmp(k, "--rate"))
            rate = atol(v);
        else if (!strcmp(k, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(k, "--platform"))
            platform = v;
        else if (!strcmp(k, "--prefix"))
            prefix = v;
        else {
            fprintf(stderr, "push_bench: unknown option %s\n", k);
            return 2;
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = strcmp(argv[1], "drain") == 0 ? drain() : paced();
    curl_global_cleanup();
    return rc;
}
