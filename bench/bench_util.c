/* bench_util — see bench_util.h. */
#include "bench_util.h"

#include "mqchat.pb-c.h"
#if MQCHAT_BENCH_HAVE_JWT
#include "jwt.h"
#endif

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static const char *progname = "bench";
static uint64_t t0_ns; /* bench_now_ns() counts from here */
static atomic_int stop_flag;

/* ------------------------------------------------------------------------ */
/* Process                                                                  */

static void on_sig(int s)
{
    (void)s;
    atomic_store(&stop_flag, 1);
}

void bench_init(const char *name)
{
    progname = name;
    t0_ns = bench_cpu_ns(CLOCK_MONOTONIC);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", progname);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

int bench_stopping(void)
{
    return atomic_load(&stop_flag);
}

void bench_stop(void)
{
    atomic_store(&stop_flag, 1);
}

uint32_t bench_run_nonce(void)
{
    return (uint32_t)time(NULL) ^ (uint32_t)getpid() << 16;
}

void bench_note(char *buf, size_t size, const char *fmt, ...)
{
    if (buf[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Clock and CPU                                                            */

uint64_t bench_now_ns(void)
{
    return bench_cpu_ns(CLOCK_MONOTONIC) - t0_ns;
}

uint64_t bench_cpu_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t bench_proc_cpu_ns(int pid, int main_thread)
{
    if (pid <= 0) return 0;
    char path[64], buf[1024];
    if (main_thread)
        snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, pid);
    else
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    unsigned long long ut = 0, st = 0;
    /* fields after ")": state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (ut + st) * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
}

void bench_machine_cpu(uint64_t *busy, uint64_t *total)
{
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8) return;
    for (int i = 0; i < 8; i++)
        *total += v[i];
    *busy = *total - v[3] - v[4]; /* minus idle and iowait */
}

/* ------------------------------------------------------------------------ */
/* Latency samples                                                          */

void bench_samples_add(struct bench_samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        uint32_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) bench_die("out of memory");
        s->v = v;
        s->cap = cap;
    }
    uint64_t us = ns / 1000;
    s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void bench_samples_sort(struct bench_samples *s)
{
    if (s->n) qsort(s->v, s->n, sizeof *s->v, cmp_u32);
}

uint32_t bench_percentile(const struct bench_samples *s, double p)
{
    if (!s->n) return 0;
    size_t i = (size_t)(p / 100.0 * (double)s->n);
    if (i >= s->n) i = s->n - 1;
    return s->v[i];
}

uint32_t bench_samples_max(const struct bench_samples *s)
{
    return s->n ? s->v[s->n - 1] : 0;
}

/* ------------------------------------------------------------------------ */
/* Message body                                                             */

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

unsigned char *bench_body_template(int len)
{
    unsigned char *b = malloc((size_t)len);
    if (!b) bench_die("out of memory");
    for (int i = 0; i < len; i++)
        b[i] = (unsigned char)('a' + i % 26);
    return b;
}

void bench_body_stamp(unsigned char *body, uint64_t ts, uint32_t idx, uint64_t n)
{
    put_le(body, ts, 8);
    put_le(body + 8, idx, 4);
    put_le(body + 12, n, 8);
}

int bench_body_parse(const unsigned char *body, size_t len, uint64_t *ts, uint32_t *idx,
                     uint64_t *n)
{
    if (len < BENCH_BODY_HDR) return -1;
    *ts = get_le(body, 8);
    *idx = (uint32_t)get_le(body + 8, 4);
    *n = get_le(body + 12, 8);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* mqchat                                                                   */

void bench_mqchat_topic(char *buf, size_t size, const char *prefix, const char *user, int is_sender)
{
    if (is_sender)
        snprintf(buf, size, "%s/u/%s/d/d/send", prefix, user);
    else
        snprintf(buf, size, "%s/u/%s/inbox", prefix, user);
}

void bench_conv_id(char *buf, size_t size, const char *a, const char *b)
{
    if (strcmp(a, b) < 0)
        snprintf(buf, size, "d:%s:%s", a, b);
    else
        snprintf(buf, size, "d:%s:%s", b, a);
}

char *bench_token(const char *secret_file, const char *user, const char *device, long ttl_s,
                  const char *iss, const char *aud)
{
#if MQCHAT_BENCH_HAVE_JWT
    static unsigned char *secret;
    static size_t secret_len;
    if (!secret) {
        char *err = NULL;
        if (mqjwt_load_secret_file(secret_file, &secret, &secret_len, &err) != MQJWT_OK)
            bench_die("secret file %s: %s", secret_file, err ? err : "error");
    }
    char claims[1024];
    int n = snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"did\":\"%s\",\"exp\":%lld", user,
                     device, (long long)time(NULL) + ttl_s);
    if (iss) n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"iss\":\"%s\"", iss);
    if (aud) n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"aud\":\"%s\"", aud);
    snprintf(claims + n, sizeof claims - (size_t)n, "}");
    char *tok = NULL;
    int rc = mqjwt_sign_hs256(secret, secret_len, claims, &tok);
    if (rc != MQJWT_OK) bench_die("signing a token: %s", mqjwt_strerror(rc));
    return tok;
#else
    (void)secret_file;
    (void)user;
    (void)device;
    (void)ttl_s;
    (void)iss;
    (void)aud;
    bench_die("built without mqchat_jwt: mqchat mode unavailable");
#endif
}

int bench_publish_send(struct mosquitto *m, const char *topic, const char *client_msg_id,
                       const char *conv, const unsigned char *body, int len)
{
    Mqchat__V1__SendRequest req = MQCHAT__V1__SEND_REQUEST__INIT;
    req.client_msg_id = (char *)client_msg_id;
    req.conversation_id = (char *)conv;
    req.body.data = (uint8_t *)body;
    req.body.len = (size_t)len;
    unsigned char buf[512 + len];
    size_t plen = mqchat__v1__send_request__get_packed_size(&req);
    if (plen > sizeof buf) bench_die("SendRequest too large");
    mqchat__v1__send_request__pack(&req, buf);
    return mosquitto_publish(m, NULL, topic, (int)plen, buf, 1, false);
}

int bench_is_ack_topic(const char *topic)
{
    size_t tl = strlen(topic);
    return tl >= 4 && !strcmp(topic + tl - 4, "/ack");
}

/* ------------------------------------------------------------------------ */
/* Client loop                                                              */

void bench_loop_init(struct bench_loop *l, int max_conns)
{
    l->conns = calloc((size_t)max_conns + 1, sizeof *l->conns);
    l->touched = calloc((size_t)max_conns + 1, sizeof *l->touched);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!l->conns || !l->touched) bench_die("out of memory");
    if (l->ep < 0) bench_die("epoll_create1: %s", strerror(errno));
    l->last_misc = bench_now_ns();
}

void bench_conn_new(struct bench_conn *c, struct bench_loop *l, const char *id, void *ud,
                    const char *user, const char *password, const struct bench_callbacks *cb)
{
    c->loop = l;
    c->m = mosquitto_new(id, true, ud);
    if (!c->m) bench_die("mosquitto_new failed");
    mosquitto_int_option(c->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(c->m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_max_inflight_messages_set(c->m, 0); /* the bench's window is the limit */
    if (user && mosquitto_username_pw_set(c->m, user, password) != MOSQ_ERR_SUCCESS)
        bench_die("username_pw_set failed");
    mosquitto_connect_callback_set(c->m, cb->on_connect);
    mosquitto_disconnect_callback_set(c->m, cb->on_disconnect);
    mosquitto_subscribe_callback_set(c->m, cb->on_subscribe);
    mosquitto_publish_callback_set(c->m, cb->on_publish);
    mosquitto_message_callback_set(c->m, cb->on_message);
}

void bench_loop_add(struct bench_loop *l, struct bench_conn *c)
{
    l->conns[l->nconns++] = c;
}

int bench_conn_connect(struct bench_conn *c, const char *host, int port, int keepalive)
{
    int rc = mosquitto_connect(c->m, host, port, keepalive);
    if (rc != MOSQ_ERR_SUCCESS) return rc;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(c->loop->ep, EPOLL_CTL_ADD, mosquitto_socket(c->m), &ev) != 0)
        bench_die("epoll_ctl: %s", strerror(errno));
    c->want_out = 0;
    bench_conn_touch(c);
    return MOSQ_ERR_SUCCESS;
}

int bench_suback_ok(int qos_count, const int *granted_qos)
{
    return qos_count >= 1 && granted_qos[0] <= 2;
}

const char *bench_mosq_strerror(int rc)
{
    return rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc);
}

void bench_conn_touch(struct bench_conn *c)
{
    if (c->touched) return;
    c->touched = 1;
    c->loop->touched[c->loop->ntouched++] = c;
}

/* mosquitto_loop_read() reads at most "number of QoS>0 messages queued in
 * the client" packets (1 for a receiver), so call it until the socket is
 * drained, with the test mosquitto_loop_forever() itself uses: the read
 * that ran dry leaves errno at EAGAIN. */
static void read_all(struct mosquitto *m)
{
    for (int i = 0; i < 1024; i++) {
        errno = 0;
        int rc = mosquitto_loop_read(m, 1);
        if (rc != MOSQ_ERR_SUCCESS || errno == EAGAIN || errno == EWOULDBLOCK) break;
    }
}

void bench_loop_pump(struct bench_loop *l, uint64_t timeout_ns)
{
    for (int i = 0; i < l->ntouched; i++) {
        struct bench_conn *c = l->touched[i];
        c->touched = 0;
        int fd = mosquitto_socket(c->m);
        if (fd < 0) continue;
        int want = mosquitto_want_write(c->m) ? 1 : 0;
        if (want != c->want_out) {
            struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.ptr = c};
            if (epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev) == 0) c->want_out = want;
        }
    }
    l->ntouched = 0;
    struct epoll_event evs[256];
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    int n = epoll_pwait2(l->ep, evs, 256, &ts, NULL);
    if (n < 0) {
        if (errno == EINTR) return;
        bench_die("epoll_pwait2: %s", strerror(errno));
    }
    for (int k = 0; k < n; k++) {
        struct bench_conn *c = evs[k].data.ptr;
        if (mosquitto_socket(c->m) < 0) continue; /* closed by an earlier event */
        if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) read_all(c->m);
        if ((evs[k].events & EPOLLOUT) && mosquitto_socket(c->m) >= 0)
            mosquitto_loop_write(c->m, 1);
        bench_conn_touch(c);
    }
}

void bench_loop_misc(struct bench_loop *l, uint64_t now)
{
    if (now - l->last_misc <= 1000000000u) return;
    for (int i = 0; i < l->nconns; i++)
        if (mosquitto_socket(l->conns[i]->m) >= 0) mosquitto_loop_misc(l->conns[i]->m);
    l->last_misc = now;
}

/* ------------------------------------------------------------------------ */
/* Open-loop pacing                                                         */

uint64_t bench_pace(struct bench_pacer *p, uint64_t start_ns, double rate, uint64_t now,
                    bench_send_fn send, void *ctx)
{
    uint64_t due_total = (uint64_t)((double)(now - start_ns) * rate / 1e9) + 1;
    while (p->issued < due_total) {
        uint64_t due = start_ns + (uint64_t)((double)p->issued * 1e9 / rate);
        if (send(ctx, due) < 0) break; /* every window full: the backlog waits */
        p->issued++;
    }
    uint64_t backlog = due_total > p->issued ? due_total - p->issued : 0;
    if (backlog > p->backlog_max) p->backlog_max = backlog;
    if (backlog) return UINT64_MAX;
    uint64_t next = start_ns + (uint64_t)((double)p->issued * 1e9 / rate);
    return next > now ? next - now : 0;
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */

/* Index of word among the "|"-separated choices, or -1. */
static int choice_index(const char *choices, const char *word)
{
    size_t wl = strlen(word);
    for (int i = 0;; i++) {
        const char *bar = strchr(choices, '|');
        size_t len = bar ? (size_t)(bar - choices) : strlen(choices);
        if (len == wl && !strncmp(choices, word, len)) return i;
        if (!bar) return -1;
        choices = bar + 1;
    }
}

int bench_parse_opts(int argc, char **argv, const struct bench_opt *opts)
{
    int n = 0;
    while (opts[n].name)
        n++;
    struct option *lo = calloc((size_t)n + 2, sizeof *lo);
    if (!lo) bench_die("out of memory");
    for (int i = 0; i < n; i++) {
        lo[i].name = opts[i].name;
        lo[i].has_arg = opts[i].kind == BENCH_OPT_FLAG ? no_argument : required_argument;
        lo[i].val = 256 + i;
    }
    lo[n] = (struct option){"help", no_argument, NULL, '?'};
    int ch, rc = 0;
    while (rc == 0 && (ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (ch < 256 || ch >= 256 + n) {
            rc = -1;
            break;
        }
        const struct bench_opt *o = &opts[ch - 256];
        switch (o->kind) {
        case BENCH_OPT_INT:
            *(int *)o->dst = atoi(optarg);
            break;
        case BENCH_OPT_DOUBLE:
            *(double *)o->dst = atof(optarg);
            break;
        case BENCH_OPT_STR:
            *(const char **)o->dst = optarg;
            break;
        case BENCH_OPT_FLAG:
            *(int *)o->dst = 1;
            break;
        case BENCH_OPT_CHOICE: {
            int k = choice_index(o->choices, optarg);
            if (k < 0)
                rc = -1;
            else
                *(int *)o->dst = k;
            break;
        }
        }
    }
    free(lo);
    if (rc == 0 && optind != argc) rc = -1;
    return rc;
}
