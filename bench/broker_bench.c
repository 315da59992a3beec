/* broker_bench — 1:1 durable messaging through a running broker.
 *
 * N sender devices and N receiver devices (one pair per 1:1 conversation)
 * connect to a broker that is already running (run-broker-bench.sh starts
 * it). Every sender publishes QoS-1 messages with a 300-byte body to its
 * receiver, keeping at most W messages in flight; the receivers count what
 * arrives and measure end-to-end latency from a send timestamp embedded in
 * the body.
 *
 * Modes
 *   plain   mosquitto without the plugin: sender i publishes the raw body to
 *           "bench/<i>", receiver i subscribes to it; anonymous clients.
 *   mqchat  mosquitto with the mqchat plugin: sender "bs<i>:d" publishes
 *           SendRequest{client_msg_id, conversation_id "d:<a>:<b>", body} on
 *           "<prefix>/u/bs<i>/d/d/send"; receiver "br<i>:d" subscribes to
 *           "<prefix>/u/br<i>/inbox" and gets ServerEvent{message} whose body
 *           is the sender's body. Passwords are HS256 JWTs signed here with
 *           the broker's secret (--secret-file).
 *
 * In flight
 *   plain: published and not yet PUBACKed.
 *   mqchat: --inflight sendack (default): published and not yet answered by
 *           the application SendAck (that is when the message is durable
 *           under the broker's durability mode); --inflight puback: not yet
 *           PUBACKed (the store write happened, the fsync may not have).
 *   The send -> SendAck latency is reported in both cases.
 *
 * Load
 *   Default: closed loop, every sender refills its window as soon as
 *   acknowledgements come back (the maximum rate).
 *   --rate R: open loop at R msgs/s in total; message k is due at
 *   start + k/R and is sent to the next sender with room in its window. The
 *   embedded timestamp is the time it was due, not the time it went out, so
 *   a stalled broker shows up in the latency (no coordinated omission).
 *
 * Timeline: connect and subscribe, then --warmup seconds of traffic that is
 * not counted, then --duration seconds of measurement, then up to 3 s of
 * draining (no new sends) and disconnect. Throughput = messages received
 * during the measurement window / its length; latencies are those of the
 * messages received in that window.
 *
 * Clients are driven by libmosquitto without its threads: each worker
 * thread (--threads, default 1; more does not help on 2 cores) owns a share
 * of the clients (both ends of a pair on the same thread) and runs
 * mosquitto_loop_read/_write/_misc from one epoll loop over their sockets.
 * libmosquitto costs about 3 read() calls per received packet and a write()
 * per sent one, so the generator needs roughly as much CPU as a plain
 * broker: its CPU use and the broker's are reported (--broker-pid).
 *
 * Output: human-readable lines (--verbose adds a 100 ms timeline of
 * deliveries and worst latency, to spot stalls), then one line
 *   RESULT mode=... delivered_per_s=... p50_us=... p99_us=... ...
 * for scripts. Exit status 0 when the run completed without errors (no
 * refused send, no disconnect, no duplicate or out-of-order delivery).
 */
#include "mqchat.pb-c.h"
#if MQCHAT_BENCH_HAVE_JWT
#include "jwt.h"
#endif

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define BODY_HDR 20 /* send time (8) + sender index (4) + per-sender counter (8) */
#define MAX_ID 64
#define MAX_TOPIC 256
#define TL_SLOTS 6000 /* 100 ms slots: 10 minutes */

enum mode { MODE_PLAIN, MODE_MQCHAT };
enum inflight { INFLIGHT_PUBACK, INFLIGHT_SENDACK };
enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

static struct {
    enum mode mode;
    enum inflight inflight;
    const char *host;
    int port;
    int pairs;
    int window;
    int body;
    double duration;
    double warmup;
    double rate; /* 0 = closed loop */
    int threads;
    int keepalive;
    const char *prefix;
    const char *secret_file;
    const char *iss;
    const char *aud;
    int broker_pid;
    int verbose;
} opt = {
    .mode = MODE_PLAIN,
    .inflight = INFLIGHT_SENDACK,
    .host = "127.0.0.1",
    .port = 1883,
    .pairs = 100,
    .window = 32,
    .body = 300,
    .duration = 10,
    .warmup = 3,
    .rate = 0,
    .threads = 1,
    .keepalive = 60,
    .prefix = "mqchat/v1",
};

struct worker;

struct client {
    struct mosquitto *m;
    struct worker *w;
    int is_sender;
    int idx; /* pair index */
    char id[MAX_ID];
    char user[24];
    char topic[MAX_TOPIC]; /* sender: publish topic; receiver: subscription */
    char conv[2 * MAX_ID];
    int connected;   /* CONNACK accepted */
    int ready;       /* receiver: SUBACK received; sender: connected */
    int inflight;    /* counted per opt.inflight (plain: PUBACK) */
    uint64_t next_n; /* per-sender message counter */
    uint64_t last_n; /* receiver: last counter seen (order check) */
    int got_any;
    int want_out; /* EPOLLOUT registered */
    int touched;  /* in w->touched */
};

struct samples {
    uint32_t *v; /* microseconds */
    size_t n, cap;
};

struct worker {
    pthread_t th;
    int wid;
    struct client **c;
    int nc;
    int ep;                  /* epoll fd over the clients' sockets */
    struct client **touched; /* clients whose EPOLLOUT need may have changed */
    int ntouched;
    int rr; /* rate mode: round-robin position among senders */
    uint64_t issued;
    /* stats, written by this worker only */
    uint64_t sent, pubacks, sendacks, received, received_meas, received_dup_or_ooo;
    uint64_t ack_errors, bad_payloads, unexpected_disconnects, other_msgs;
    uint64_t backlog_max;
    atomic_int drained; /* set by the worker in PH_DRAIN once nothing is in flight */
    /* --verbose timeline: per 100 ms since the first send, deliveries and
     * the worst latency */
    uint32_t tl_count[TL_SLOTS];
    uint32_t tl_max_us[TL_SLOTS];
    struct samples lat;     /* end-to-end, messages received in the window */
    struct samples ack_lat; /* send -> SendAck (mqchat) or PUBACK (plain) */
    char errbuf[640];
};

static void touch(struct client *c);

static struct worker *workers;
static struct client *clients; /* 2 * pairs: senders then receivers */
static uint64_t t0_ns;         /* process start, timestamps are relative to it */
static _Atomic int phase = PH_CONNECT;
static _Atomic uint64_t send_start_ns, meas_start_ns, meas_end_ns;
static uint32_t run_nonce;
static unsigned char *body_tmpl;
static atomic_int stop_flag;
static atomic_int setup_failures; /* refused CONNACK/SUBACK, early disconnects */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec - t0_ns;
}

static uint64_t cpu_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "broker_bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void samples_add(struct samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        uint32_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) die("out of memory");
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

static uint32_t pct(const struct samples *s, double p)
{
    if (!s->n) return 0;
    size_t i = (size_t)(p / 100.0 * (double)s->n);
    if (i >= s->n) i = s->n - 1;
    return s->v[i];
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Sending                                                                  */

/* Publishes one message from sender c, stamped with ts (ns since t0). */
static int send_one(struct client *c, uint64_t ts)
{
    struct worker *w = c->w;
    unsigned char body[opt.body];
    memcpy(body, body_tmpl, (size_t)opt.body);
    put_u64(body, ts);
    put_u32(body + 8, (uint32_t)c->idx);
    put_u64(body + 12, c->next_n);

    int rc;
    if (opt.mode == MODE_PLAIN) {
        rc = mosquitto_publish(c->m, NULL, c->topic, opt.body, body, 1, false);
    } else {
        /* client_msg_id: run nonce, per-sender counter, send time (so the
         * SendAck tells its own latency). */
        char cmid[80];
        snprintf(cmid, sizeof cmid, "%08" PRIx32 ".%" PRIx64 ".%" PRIx64, run_nonce, c->next_n, ts);
        Mqchat__V1__SendRequest req = MQCHAT__V1__SEND_REQUEST__INIT;
        req.client_msg_id = cmid;
        req.conversation_id = c->conv;
        req.body.data = body;
        req.body.len = (size_t)opt.body;
        unsigned char buf[512 + opt.body];
        size_t len = mqchat__v1__send_request__get_packed_size(&req);
        if (len > sizeof buf) die("SendRequest too large");
        mqchat__v1__send_request__pack(&req, buf);
        rc = mosquitto_publish(c->m, NULL, c->topic, (int)len, buf, 1, false);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        /* A dead connection is reported by on_disconnect. */
        return -1;
    }
    c->next_n++;
    c->inflight++;
    touch(c);
    w->sent++;
    return 0;
}

/* Closed loop: fill every sender's window. */
static void fill_windows(struct worker *w)
{
    for (int i = 0; i < w->nc; i++) {
        struct client *c = w->c[i];
        if (!c->is_sender || !c->connected) continue;
        while (c->inflight < opt.window) {
            if (send_one(c, now_ns()) < 0) break;
        }
    }
}

/* Open loop: send every message that is due, round-robin over the senders
 * that have room. Returns ns until the next message is due, or UINT64_MAX
 * when every window is full (an acknowledgement wakes the loop). */
static uint64_t send_due(struct worker *w, uint64_t now)
{
    double wrate = opt.rate / opt.threads;
    uint64_t start = atomic_load(&send_start_ns);
    uint64_t due_total = (uint64_t)((double)(now - start) * wrate / 1e9) + 1;
    while (w->issued < due_total) {
        struct client *c = NULL;
        for (int k = 0; k < w->nc; k++) {
            struct client *cand = w->c[(w->rr + k) % w->nc];
            if (cand->is_sender && cand->connected && cand->inflight < opt.window) {
                c = cand;
                w->rr = (w->rr + k + 1) % w->nc;
                break;
            }
        }
        if (!c) break; /* every window full: the backlog waits */
        uint64_t due = start + (uint64_t)((double)w->issued * 1e9 / wrate);
        if (send_one(c, due) < 0) break;
        w->issued++;
    }
    uint64_t backlog = due_total > w->issued ? due_total - w->issued : 0;
    if (backlog > w->backlog_max) w->backlog_max = backlog;
    if (backlog) return UINT64_MAX;
    uint64_t next = start + (uint64_t)((double)w->issued * 1e9 / wrate);
    return next > now ? next - now : 0;
}

/* Keeps the first error of a worker (printed at the end). */
__attribute__((format(printf, 2, 3))) static void note(struct worker *w, const char *fmt, ...)
{
    if (w->errbuf[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->errbuf, sizeof w->errbuf, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* libmosquitto callbacks (run inside mosquitto_loop_read on the worker)    */

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
    struct client *c = ud;
    if (rc != 0) {
        note(c->w, "%s: CONNACK refused: %s", c->id, mosquitto_connack_string(rc));
        c->w->unexpected_disconnects++;
        atomic_fetch_add(&setup_failures, 1);
        return;
    }
    c->connected = 1;
    if (c->is_sender) {
        c->ready = 1;
    } else {
        int mid;
        if (mosquitto_subscribe(m, &mid, c->topic, 1) != MOSQ_ERR_SUCCESS)
            note(c->w, "%s: subscribe failed", c->id);
    }
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int qos_count,
                         const int *granted_qos)
{
    struct client *c = ud;
    if (qos_count < 1 || granted_qos[0] > 2) {
        note(c->w, "%s: subscription to %s refused", c->id, c->topic);
        c->w->unexpected_disconnects++;
        atomic_fetch_add(&setup_failures, 1);
        return;
    }
    c->ready = 1;
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc)
{
    struct client *c = ud;
    c->connected = 0;
    if (atomic_load(&phase) < PH_DONE) {
        c->w->unexpected_disconnects++;
        atomic_fetch_add(&setup_failures, 1);
        note(c->w, "%s: disconnected (%s)", c->id, mosquitto_strerror(rc));
    }
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
    struct client *c = ud;
    c->w->pubacks++;
    if (opt.mode == MODE_PLAIN || opt.inflight == INFLIGHT_PUBACK) c->inflight--;
}

static int in_window(uint64_t t)
{
    return t >= atomic_load(&meas_start_ns) && t < atomic_load(&meas_end_ns);
}

static void got_delivery(struct client *c, const unsigned char *body, size_t len)
{
    struct worker *w = c->w;
    if (len < BODY_HDR) {
        w->bad_payloads++;
        return;
    }
    uint64_t now = now_ns();
    uint64_t ts = get_u64(body);
    uint32_t from = get_u32(body + 8);
    uint64_t n = get_u64(body + 12);
    if ((int)from != c->idx) {
        w->bad_payloads++;
        return;
    }
    if (c->got_any && n <= c->last_n)
        w->received_dup_or_ooo++;
    else
        c->last_n = n;
    c->got_any = 1;
    w->received++;
    uint64_t start = atomic_load(&send_start_ns);
    if (now > start && (now - start) / 100000000u < TL_SLOTS) {
        size_t slot = (size_t)((now - start) / 100000000u);
        uint64_t us = now > ts ? (now - ts) / 1000 : 0;
        w->tl_count[slot]++;
        if (us > w->tl_max_us[slot])
            w->tl_max_us[slot] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    }
    if (in_window(now)) {
        w->received_meas++;
        samples_add(&w->lat, now > ts ? now - ts : 0);
    }
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
    struct client *c = ud;
    struct worker *w = c->w;
    if (opt.mode == MODE_PLAIN) {
        if (c->is_sender) {
            w->other_msgs++;
            return;
        }
        got_delivery(c, msg->payload, (size_t)msg->payloadlen);
        return;
    }
    size_t tlen = strlen(msg->topic);
    if (c->is_sender) {
        if (tlen < 4 || strcmp(msg->topic + tlen - 4, "/ack") != 0) {
            w->other_msgs++;
            note(w, "%s: unexpected message on %s", c->id, msg->topic);
            return;
        }
        Mqchat__V1__SendAck *ack =
            mqchat__v1__send_ack__unpack(NULL, (size_t)msg->payloadlen, msg->payload);
        if (!ack) {
            w->bad_payloads++;
            return;
        }
        w->sendacks++;
        if (ack->error || ack->seq == 0) {
            w->ack_errors++;
            note(w, "%s: SendAck error %d: %s", c->id, ack->error ? (int)ack->error->code : 0,
                 ack->error && ack->error->message ? ack->error->message : "(seq 0)");
        }
        /* client_msg_id = nonce.counter.sendtime */
        const char *p = ack->client_msg_id ? strrchr(ack->client_msg_id, '.') : NULL;
        if (p) {
            uint64_t ts = strtoull(p + 1, NULL, 16);
            uint64_t now = now_ns();
            if (in_window(now)) samples_add(&w->ack_lat, now > ts ? now - ts : 0);
        }
        if (opt.inflight == INFLIGHT_SENDACK) c->inflight--;
        mqchat__v1__send_ack__free_unpacked(ack, NULL);
        return;
    }
    Mqchat__V1__ServerEvent *ev =
        mqchat__v1__server_event__unpack(NULL, (size_t)msg->payloadlen, msg->payload);
    if (!ev) {
        w->bad_payloads++;
        return;
    }
    if (ev->body_case == MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE && ev->message)
        got_delivery(c, ev->message->body.data, ev->message->body.len);
    else
        w->other_msgs++;
    mqchat__v1__server_event__free_unpacked(ev, NULL);
}

/* ------------------------------------------------------------------------ */
/* Worker loop                                                              */

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

/* Marks c for the EPOLLOUT check at the top of the next pump(). */
static void touch(struct client *c)
{
    if (c->touched) return;
    c->touched = 1;
    c->w->touched[c->w->ntouched++] = c;
}

/* One pass: (un)register EPOLLOUT for the clients touched since the last
 * pass (libmosquitto writes at once and only keeps what the socket did not
 * take), wait up to timeout_ns, handle the ready sockets. */
static void pump(struct worker *w, uint64_t timeout_ns)
{
    for (int i = 0; i < w->ntouched; i++) {
        struct client *c = w->touched[i];
        c->touched = 0;
        int fd = mosquitto_socket(c->m);
        if (fd < 0) continue;
        int want = mosquitto_want_write(c->m) ? 1 : 0;
        if (want != c->want_out) {
            struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.ptr = c};
            if (epoll_ctl(w->ep, EPOLL_CTL_MOD, fd, &ev) == 0) c->want_out = want;
        }
    }
    w->ntouched = 0;
    struct epoll_event evs[256];
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    int n = epoll_pwait2(w->ep, evs, 256, &ts, NULL);
    if (n < 0) {
        if (errno == EINTR) return;
        die("epoll_pwait2: %s", strerror(errno));
    }
    for (int k = 0; k < n; k++) {
        struct client *c = evs[k].data.ptr;
        if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) read_all(c->m);
        if ((evs[k].events & EPOLLOUT) && mosquitto_socket(c->m) >= 0)
            mosquitto_loop_write(c->m, 1);
        touch(c);
    }
}

static void misc(struct worker *w)
{
    for (int i = 0; i < w->nc; i++)
        if (mosquitto_socket(w->c[i]->m) >= 0) mosquitto_loop_misc(w->c[i]->m);
}

static int all_ready(struct worker *w)
{
    for (int i = 0; i < w->nc; i++)
        if (!w->c[i]->ready) return 0;
    return 1;
}

static atomic_int workers_ready;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t last_misc = now_ns();
    int counted_ready = 0;
    int ph;
    while ((ph = atomic_load(&phase)) != PH_DONE && !atomic_load(&stop_flag)) {
        uint64_t now = now_ns();
        uint64_t timeout = 10 * 1000 * 1000;
        if (ph == PH_CONNECT) {
            if (!counted_ready && all_ready(w)) {
                counted_ready = 1;
                atomic_fetch_add(&workers_ready, 1);
            }
        } else if (ph == PH_DRAIN) {
            uint64_t acked = opt.mode == MODE_MQCHAT && opt.inflight == INFLIGHT_SENDACK
                                 ? w->sendacks
                                 : w->pubacks;
            if (w->received >= w->sent && acked >= w->sent) atomic_store(&w->drained, 1);
        } else if (ph == PH_WARMUP || ph == PH_MEASURE) {
            if (opt.rate > 0) {
                uint64_t next = send_due(w, now);
                if (next < timeout) timeout = next;
            } else {
                fill_windows(w);
            }
        }
        pump(w, timeout);
        if (now - last_misc > 1000000000u) {
            misc(w);
            last_misc = now;
        }
    }
    /* Disconnect cleanly and flush. */
    for (int i = 0; i < w->nc; i++)
        if (mosquitto_socket(w->c[i]->m) >= 0) mosquitto_disconnect(w->c[i]->m);
    uint64_t end = now_ns() + 500000000u;
    for (;;) {
        int pending = 0;
        for (int i = 0; i < w->nc; i++)
            if (mosquitto_socket(w->c[i]->m) >= 0 && mosquitto_want_write(w->c[i]->m)) pending = 1;
        if (!pending || now_ns() > end) break;
        pump(w, 10000000);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                    */

static char *token_for(const char *user, const char *device)
{
#if MQCHAT_BENCH_HAVE_JWT
    static unsigned char *secret;
    static size_t secret_len;
    if (!secret) {
        char *err = NULL;
        if (mqjwt_load_secret_file(opt.secret_file, &secret, &secret_len, &err) != MQJWT_OK)
            die("secret file %s: %s", opt.secret_file, err ? err : "error");
    }
    char claims[1024];
    int n = snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"did\":\"%s\",\"exp\":%lld", user,
                     device, (long long)time(NULL) + 3600);
    if (opt.iss) n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"iss\":\"%s\"", opt.iss);
    if (opt.aud) n += snprintf(claims + n, sizeof claims - (size_t)n, ",\"aud\":\"%s\"", opt.aud);
    snprintf(claims + n, sizeof claims - (size_t)n, "}");
    char *tok = NULL;
    int rc = mqjwt_sign_hs256(secret, secret_len, claims, &tok);
    if (rc != MQJWT_OK) die("signing a token: %s", mqjwt_strerror(rc));
    return tok;
#else
    (void)user;
    (void)device;
    die("built without mqchat_jwt: mqchat mode unavailable");
    return NULL;
#endif
}

static void setup_client(struct client *c, struct worker *w, int is_sender, int idx)
{
    c->w = w;
    c->is_sender = is_sender;
    c->idx = idx;
    char *token = NULL;
    const char *username = NULL;
    if (opt.mode == MODE_PLAIN) {
        snprintf(c->id, sizeof c->id, "b%c%d", is_sender ? 's' : 'r', idx);
        snprintf(c->topic, sizeof c->topic, "bench/%d", idx);
    } else {
        char su[16], ru[16];
        snprintf(su, sizeof su, "bs%05d", idx);
        snprintf(ru, sizeof ru, "br%05d", idx);
        snprintf(c->user, sizeof c->user, "%s", is_sender ? su : ru);
        snprintf(c->id, sizeof c->id, "%s:d", c->user);
        /* 1:1 conversation id: the two users in byte order */
        const char *a = strcmp(su, ru) < 0 ? su : ru;
        const char *b = strcmp(su, ru) < 0 ? ru : su;
        snprintf(c->conv, sizeof c->conv, "d:%s:%s", a, b);
        if (is_sender)
            snprintf(c->topic, sizeof c->topic, "%s/u/%s/d/d/send", opt.prefix, c->user);
        else
            snprintf(c->topic, sizeof c->topic, "%s/u/%s/inbox", opt.prefix, c->user);
        token = token_for(c->user, "d");
        username = c->user;
    }
    c->m = mosquitto_new(c->id, true, c);
    if (!c->m) die("mosquitto_new failed");
    mosquitto_int_option(c->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(c->m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_max_inflight_messages_set(c->m, 0); /* our window is the limit */
    if (username && mosquitto_username_pw_set(c->m, username, token) != MOSQ_ERR_SUCCESS)
        die("username_pw_set failed");
    free(token);
    mosquitto_connect_callback_set(c->m, on_connect);
    mosquitto_disconnect_callback_set(c->m, on_disconnect);
    mosquitto_subscribe_callback_set(c->m, on_subscribe);
    mosquitto_publish_callback_set(c->m, on_publish);
    mosquitto_message_callback_set(c->m, on_message);
    int rc = mosquitto_connect(c->m, opt.host, opt.port, opt.keepalive);
    if (rc != MOSQ_ERR_SUCCESS)
        die("%s: connect to %s:%d: %s", c->id, opt.host, opt.port,
            rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, mosquitto_socket(c->m), &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
    touch(c);
}

static uint64_t proc_cpu_ns(int pid)
{
    if (pid <= 0) return 0;
    char path[64], buf[1024];
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

/* Busy and total jiffies of the whole machine (/proc/stat "cpu" line). */
static void machine_cpu(uint64_t *busy, uint64_t *total)
{
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    unsigned long long v[10] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8) return;
    for (int i = 0; i < 8; i++)
        *total += v[i];
    *busy = *total - v[3] - v[4]; /* minus idle and iowait */
}

static void on_sig(int s)
{
    (void)s;
    atomic_store(&stop_flag, 1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: broker_bench [options]\n"
            "  --mode plain|mqchat      (default plain)\n"
            "  --host H --port P        broker (default 127.0.0.1:1883)\n"
            "  --pairs N                sender/receiver pairs (default 100)\n"
            "  --window W               max messages in flight per sender (default 32)\n"
            "  --inflight sendack|puback  mqchat: what ends 'in flight' (default sendack)\n"
            "  --body B                 body bytes (default 300, min %d)\n"
            "  --duration S             measured seconds (default 10)\n"
            "  --warmup S               unmeasured seconds before (default 3)\n"
            "  --rate R                 offered load, msgs/s in total (default: max)\n"
            "  --threads T              client threads (default 1)\n"
            "  --prefix P               mqchat topic prefix (default mqchat/v1)\n"
            "  --secret-file F          HS256 secret of the broker (mqchat mode)\n"
            "  --iss X --aud Y          claims for the tokens\n"
            "  --broker-pid PID         report the broker's CPU use\n"
            "  --verbose\n",
            BODY_HDR);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option lo[] = {{"mode", 1, 0, 'm'},
                                       {"host", 1, 0, 'h'},
                                       {"port", 1, 0, 'p'},
                                       {"pairs", 1, 0, 'n'},
                                       {"window", 1, 0, 'w'},
                                       {"inflight", 1, 0, 'i'},
                                       {"body", 1, 0, 'b'},
                                       {"duration", 1, 0, 'd'},
                                       {"warmup", 1, 0, 'W'},
                                       {"rate", 1, 0, 'r'},
                                       {"threads", 1, 0, 't'},
                                       {"prefix", 1, 0, 'P'},
                                       {"secret-file", 1, 0, 's'},
                                       {"iss", 1, 0, 'I'},
                                       {"aud", 1, 0, 'A'},
                                       {"broker-pid", 1, 0, 'B'},
                                       {"verbose", 0, 0, 'v'},
                                       {"help", 0, 0, '?'},
                                       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'm':
            if (!strcmp(optarg, "plain"))
                opt.mode = MODE_PLAIN;
            else if (!strcmp(optarg, "mqchat"))
                opt.mode = MODE_MQCHAT;
            else
                usage();
            break;
        case 'h':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 'n':
            opt.pairs = atoi(optarg);
            break;
        case 'w':
            opt.window = atoi(optarg);
            break;
        case 'i':
            if (!strcmp(optarg, "sendack"))
                opt.inflight = INFLIGHT_SENDACK;
            else if (!strcmp(optarg, "puback"))
                opt.inflight = INFLIGHT_PUBACK;
            else
                usage();
            break;
        case 'b':
            opt.body = atoi(optarg);
            break;
        case 'd':
            opt.duration = atof(optarg);
            break;
        case 'W':
            opt.warmup = atof(optarg);
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 't':
            opt.threads = atoi(optarg);
            break;
        case 'P':
            opt.prefix = optarg;
            break;
        case 's':
            opt.secret_file = optarg;
            break;
        case 'I':
            opt.iss = optarg;
            break;
        case 'A':
            opt.aud = optarg;
            break;
        case 'B':
            opt.broker_pid = atoi(optarg);
            break;
        case 'v':
            opt.verbose = 1;
            break;
        default:
            usage();
        }
    }
    if (optind != argc || opt.pairs < 1 || opt.pairs > 9000 || opt.window < 1 ||
        opt.body < BODY_HDR || opt.body > 1 << 20 || opt.duration <= 0 || opt.warmup < 0 ||
        opt.rate < 0 || opt.threads < 1 || opt.threads > opt.pairs || opt.port <= 0)
        usage();
    if (opt.mode == MODE_MQCHAT && !opt.secret_file) die("--mode mqchat needs --secret-file");
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t0_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    run_nonce = (uint32_t)time(NULL) ^ (uint32_t)getpid() << 16;
    atomic_store(&meas_start_ns, UINT64_MAX);
    atomic_store(&meas_end_ns, UINT64_MAX);

    body_tmpl = malloc((size_t)opt.body);
    if (!body_tmpl) die("out of memory");
    for (int i = 0; i < opt.body; i++)
        body_tmpl[i] = (unsigned char)('a' + i % 26);

    mosquitto_lib_init();
    workers = calloc((size_t)opt.threads, sizeof *workers);
    clients = calloc((size_t)opt.pairs * 2, sizeof *clients);
    if (!workers || !clients) die("out of memory");
    for (int t = 0; t < opt.threads; t++) {
        struct worker *w = &workers[t];
        w->wid = t;
        int maxc = 2 * (opt.pairs / opt.threads + 1);
        w->c = calloc((size_t)maxc, sizeof *w->c);
        w->touched = calloc((size_t)maxc, sizeof *w->touched);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (!w->c || !w->touched) die("out of memory");
        if (w->ep < 0) die("epoll_create1: %s", strerror(errno));
    }
    /* Pair i lives on worker i % threads, both ends: a message's send and
     * receive timestamps come from the same thread's view of the clock. */
    uint64_t t_conn = now_ns();
    for (int i = 0; i < opt.pairs; i++) {
        struct worker *w = &workers[i % opt.threads];
        struct client *r = &clients[opt.pairs + i], *s = &clients[i];
        setup_client(r, w, 0, i);
        w->c[w->nc++] = r;
        setup_client(s, w, 1, i);
        w->c[w->nc++] = s;
    }
    for (int t = 0; t < opt.threads; t++)
        if (pthread_create(&workers[t].th, NULL, worker_main, &workers[t]) != 0)
            die("pthread_create failed");

    /* Wait until every client is connected and subscribed (at most 30 s). */
    while (atomic_load(&workers_ready) < opt.threads) {
        int failed = atomic_load(&setup_failures) > 0;
        if (failed || now_ns() - t_conn > 30000000000ull || atomic_load(&stop_flag)) {
            atomic_store(&phase, PH_DONE);
            for (int t = 0; t < opt.threads; t++)
                pthread_join(workers[t].th, NULL);
            for (int t = 0; t < opt.threads; t++)
                if (workers[t].errbuf[0]) fprintf(stderr, "  %s\n", workers[t].errbuf);
            die(failed ? "clients refused by the broker" : "clients not ready after 30 s");
        }
        usleep(10000);
    }
    double conn_s = (double)(now_ns() - t_conn) / 1e9;
    fprintf(stderr, "broker_bench: %d clients connected in %.2f s\n", 2 * opt.pairs, conn_s);

    uint64_t t = now_ns();
    atomic_store(&send_start_ns, t);
    atomic_store(&meas_start_ns, t + (uint64_t)(opt.warmup * 1e9));
    atomic_store(&meas_end_ns, t + (uint64_t)((opt.warmup + opt.duration) * 1e9));
    atomic_store(&phase, PH_WARMUP);
    uint64_t self_cpu0 = 0, broker_cpu0 = 0, mstart = atomic_load(&meas_start_ns);
    while (now_ns() < mstart && !atomic_load(&stop_flag))
        usleep(1000);
    atomic_store(&phase, PH_MEASURE);
    self_cpu0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
    broker_cpu0 = proc_cpu_ns(opt.broker_pid);
    uint64_t mbusy0, mtotal0, mbusy1, mtotal1;
    machine_cpu(&mbusy0, &mtotal0);
    uint64_t mend = atomic_load(&meas_end_ns);
    while (now_ns() < mend && !atomic_load(&stop_flag))
        usleep(1000);
    uint64_t self_cpu1 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
    uint64_t broker_cpu1 = proc_cpu_ns(opt.broker_pid);
    machine_cpu(&mbusy1, &mtotal1);
    double machine_busy =
        mtotal1 > mtotal0 ? 100.0 * (double)(mbusy1 - mbusy0) / (double)(mtotal1 - mtotal0) : 0;
    atomic_store(&phase, PH_DRAIN);

    /* Drain: no new sends; wait for the in-flight ones (at most 3 s). */
    uint64_t dend = now_ns() + 3000000000ull;
    while (now_ns() < dend && !atomic_load(&stop_flag)) {
        int drained = 0;
        for (int i = 0; i < opt.threads; i++)
            drained += atomic_load(&workers[i].drained);
        if (drained == opt.threads) break;
        usleep(10000);
    }
    atomic_store(&phase, PH_DONE);
    for (int i = 0; i < opt.threads; i++)
        pthread_join(workers[i].th, NULL);

    /* Merge. */
    struct worker tot = {0};
    for (int i = 0; i < opt.threads; i++) {
        struct worker *w = &workers[i];
        tot.sent += w->sent;
        tot.pubacks += w->pubacks;
        tot.sendacks += w->sendacks;
        tot.received += w->received;
        tot.received_meas += w->received_meas;
        tot.received_dup_or_ooo += w->received_dup_or_ooo;
        tot.ack_errors += w->ack_errors;
        tot.bad_payloads += w->bad_payloads;
        tot.unexpected_disconnects += w->unexpected_disconnects;
        tot.other_msgs += w->other_msgs;
        tot.backlog_max += w->backlog_max;
        for (size_t k = 0; k < w->lat.n; k++)
            samples_add(&tot.lat, (uint64_t)w->lat.v[k] * 1000);
        for (size_t k = 0; k < w->ack_lat.n; k++)
            samples_add(&tot.ack_lat, (uint64_t)w->ack_lat.v[k] * 1000);
        if (w->errbuf[0]) fprintf(stderr, "broker_bench: worker %d: %s\n", i, w->errbuf);
    }
    if (opt.verbose) {
        /* Timeline: deliveries per second and the worst latency of each
         * 100 ms slot, from the first send to the end of the window. */
        size_t slots = (size_t)((opt.warmup + opt.duration) * 10);
        if (slots > TL_SLOTS) slots = TL_SLOTS;
        printf("timeline (per 100 ms since the first send: msgs/s, max latency ms)\n");
        for (size_t k = 0; k < slots; k++) {
            uint64_t cnt = 0;
            uint32_t mx = 0;
            for (int i = 0; i < opt.threads; i++) {
                cnt += workers[i].tl_count[k];
                if (workers[i].tl_max_us[k] > mx) mx = workers[i].tl_max_us[k];
            }
            printf("  %5.1f s %8" PRIu64 " %9.2f%s", (double)k / 10, cnt * 10, mx / 1000.0,
                   k % 2 == 1 ? "\n" : "   ");
        }
        printf("\n");
    }
    qsort(tot.lat.v, tot.lat.n, sizeof *tot.lat.v, cmp_u32);
    qsort(tot.ack_lat.v, tot.ack_lat.n, sizeof *tot.ack_lat.v, cmp_u32);
    double secs = opt.duration;
    double rate = (double)tot.received_meas / secs;
    double self_cpu = (double)(self_cpu1 - self_cpu0) / 1e9 / secs * 100;
    double broker_cpu = (double)(broker_cpu1 - broker_cpu0) / 1e9 / secs * 100;
    const char *mode = opt.mode == MODE_PLAIN ? "plain" : "mqchat";
    const char *infl = opt.mode == MODE_PLAIN             ? "puback"
                       : opt.inflight == INFLIGHT_SENDACK ? "sendack"
                                                          : "puback";
    uint64_t lost = tot.sent > tot.received ? tot.sent - tot.received : 0;

    printf("mode %s, %d pairs, window %d (until %s), body %d B, %s, %.1f s measured\n", mode,
           opt.pairs, opt.window, infl, opt.body, opt.rate > 0 ? "fixed rate" : "max rate", secs);
    if (opt.rate > 0) printf("  offered        %.0f msgs/s\n", opt.rate);
    printf("  delivered      %.0f msgs/s\n", rate);
    printf("  latency  us    p50 %u  p90 %u  p99 %u  p99.9 %u  max %u  (%zu samples)\n",
           pct(&tot.lat, 50), pct(&tot.lat, 90), pct(&tot.lat, 99), pct(&tot.lat, 99.9),
           tot.lat.n ? tot.lat.v[tot.lat.n - 1] : 0, tot.lat.n);
    if (opt.mode == MODE_MQCHAT)
        printf("  send->SendAck  p50 %u  p99 %u us\n", pct(&tot.ack_lat, 50),
               pct(&tot.ack_lat, 99));
    printf("  totals         sent %" PRIu64 " puback %" PRIu64 " sendack %" PRIu64
           " received %" PRIu64 " not-received %" PRIu64 "\n",
           tot.sent, tot.pubacks, tot.sendacks, tot.received, lost);
    printf("  errors         ack %" PRIu64 " dup/out-of-order %" PRIu64 " bad %" PRIu64
           " other-msgs %" PRIu64 " disconnects %" PRIu64 "\n",
           tot.ack_errors, tot.received_dup_or_ooo, tot.bad_payloads, tot.other_msgs,
           tot.unexpected_disconnects);
    printf("  cpu            bench %.0f%%", self_cpu);
    if (opt.broker_pid) printf("  broker %.0f%%", broker_cpu);
    printf(" (of one core); machine %.0f%% busy (all %ld cores)\n", machine_busy,
           sysconf(_SC_NPROCESSORS_ONLN));
    /* CPU per delivered message: less sensitive to other load on the
     * machine than msgs/s. */
    double per = tot.received_meas ? 1.0 / (double)tot.received_meas : 0;
    double bench_us = (double)(self_cpu1 - self_cpu0) / 1e3 * per;
    double broker_us = (double)(broker_cpu1 - broker_cpu0) / 1e3 * per;
    printf("  cpu per msg    bench %.1f us", bench_us);
    if (opt.broker_pid) printf("  broker %.1f us", broker_us);
    printf("\n");
    if (opt.rate > 0) printf("  backlog max    %" PRIu64 " messages\n", tot.backlog_max);
    printf("RESULT mode=%s inflight=%s pairs=%d window=%d rate=%.0f delivered_per_s=%.0f "
           "p50_us=%u p90_us=%u p99_us=%u p999_us=%u max_us=%u ack_p50_us=%u ack_p99_us=%u "
           "sent=%" PRIu64 " received=%" PRIu64 " ack_errors=%" PRIu64 " dup=%" PRIu64
           " disconnects=%" PRIu64
           " bench_cpu_pct=%.0f broker_cpu_pct=%.0f machine_busy_pct=%.0f bench_us_per_msg=%.1f"
           " broker_us_per_msg=%.1f\n",
           mode, infl, opt.pairs, opt.window, opt.rate, rate, pct(&tot.lat, 50), pct(&tot.lat, 90),
           pct(&tot.lat, 99), pct(&tot.lat, 99.9), tot.lat.n ? tot.lat.v[tot.lat.n - 1] : 0,
           pct(&tot.ack_lat, 50), pct(&tot.ack_lat, 99), tot.sent, tot.received, tot.ack_errors,
           tot.received_dup_or_ooo, tot.unexpected_disconnects, self_cpu, broker_cpu, machine_busy,
           bench_us, broker_us);
    fflush(stdout);

    for (int i = 0; i < 2 * opt.pairs; i++)
        mosquitto_destroy(clients[i].m);
    mosquitto_lib_cleanup();
    int bad = tot.ack_errors || tot.unexpected_disconnects || tot.bad_payloads ||
              tot.received_dup_or_ooo || tot.received_meas == 0;
    return bad ? 1 : 0;
}
