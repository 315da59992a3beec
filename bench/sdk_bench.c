/* sdk_bench — what libmqchat (clients/c-sdk) costs a device, measured
 * against raw paho doing the same traffic, in one run.
 *
 * N pairs of devices (sender "<run>s<i>", receiver "<run>r<i>", one 1:1
 * conversation each) talk through a running mosquitto + mqchat broker
 * (run-sdk-bench.sh starts it). Two modes, one after the other in the same
 * process and against the same broker:
 *
 *   sdk  every device is an mqchat_client (callback mode): mqchat_send()
 *        commits the send to the SQLite outbox, SENT is the durable ACK,
 *        MESSAGE is the delivery to the app; the SDK commits its cursor per
 *        packet and acks it at most every MQCHAT_ACK_DELAY_MS (50 ms), after
 *        one fsync, as it always does.
 *   raw  every device is a bare MQTTAsync client (paho, the library the SDK
 *        uses) that subscribes to the same topics (inbox, ack, resp),
 *        publishes SendRequest itself (protobuf-c, as the SDK), parses the
 *        SendAck / ServerEvent packets and sends a CursorAck for an inbox
 *        message when its last one is 50 ms old (as often as the SDK acks),
 *        but keeps no state: no SQLite, no queues, no copies.
 *
 * The wire traffic of the two modes is the same, so the difference in the
 * bench process's CPU time per message (CLOCK_PROCESS_CPUTIME_ID over the
 * measured window, both ends of every pair are in this process) is the
 * SDK's own cost. Latencies: send -> SENT (SendAck) at the sender and
 * send -> MESSAGE handed to the app at the receiver, from the time in the
 * body (bench_body_stamp) and, for the ack, the time kept per client
 * message id (the SDK's ids are "<nonce>.<counter>", README; the counter
 * of a fresh state file is predictable, which is checked).
 *
 * Load: closed loop, W sends in flight (not yet SENT) per sender, one
 * sender thread per pair; or --rate R msgs/s in total, open loop, message k
 * of a pair due at start + k / (R / N), stamped with the due time (a stall
 * shows as latency). Keep W well under 100: paho refuses more than 100
 * queued commands per client (MQTTAsync_createOptions.maxBufferedMessages),
 * and the SDK does not raise that limit.
 *
 * Timeline per mode: connect all (SDK: until UP_TO_DATE), --warmup s,
 * --duration s measured, up to 5 s of draining, disconnect. Output: lines
 * for people, then per mode one line
 *   RESULT mode=... delivered_per_s=... p50_us=... ack_p50_us=... us_per_msg=...
 * Exit status 0 when every mode ran without errors (every send acked once,
 * every message delivered once and in order, nothing refused). */
#include "bench_util.h"
#include "mqchat.h"
#include "mqchat.pb-c.h"

#include <MQTTAsync.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RING 4096 /* send times by counter; > any window */
#define MAX_PAIRS 1000

enum { MODE_SDK, MODE_RAW, MODE_BOTH, MODE_BOTH_RAW_FIRST };
enum { PH_SETUP, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

static struct {
    const char *host;
    int port;
    const char *secret_file;
    const char *prefix;
    const char *state_parent;
    int mode;
    int pairs, window, body;
    double rate, duration, warmup;
    int broker_pid;
    int no_cursor_ack; /* raw: skip the CursorAcks (to see what they cost) */
} opt = {
    .host = "127.0.0.1",
    .port = 1883,
    .prefix = "mqchat/v1",
    .mode = MODE_BOTH,
    .pairs = 10,
    .window = 16,
    .body = 300,
    .duration = 10,
    .warmup = 3,
};

static atomic_int phase;
static uint64_t meas_start, meas_end; /* bench clock, set before PH_WARMUP */

/* One device of a pair. */
struct dev {
    struct pair *p;
    int is_sender;
    char user[64], token[2048];
    mqchat_client *c; /* sdk */
    MQTTAsync m;      /* raw */
    char t_send[256], t_req[256], t_ack[256], t_resp[256], t_inbox[256];
    atomic_int ready; /* up_to_date / subscribed */
    atomic_int failed;
    uint64_t req_counter;
    uint64_t last_ack_ns; /* raw: when the last CursorAck went out */
};

struct pair {
    int idx;
    char conv[160];
    char nonce[24];
    struct dev s, r;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t issued, acked; /* under mu */
    uint64_t ts[RING];      /* send (or due) time of counter n at ts[n % RING] */
    /* sender callbacks only: */
    struct bench_samples ack_lat;
    uint64_t acks_meas, ack_errors, cmid_mismatch;
    /* receiver callbacks only: */
    struct bench_samples lat;
    uint64_t delivered, delivered_meas, last_n, dup_or_ooo, bad;
    unsigned char *body;
};

static struct pair *pairs;

/* ---- shared: stamping, accounting ------------------------------------- */

static void on_acked(struct pair *p, uint64_t n, int error)
{
    if (error) {
        p->ack_errors++;
    } else {
        uint64_t now = bench_now_ns();
        if (atomic_load(&phase) == PH_MEASURE && now >= meas_start && now < meas_end) {
            bench_samples_add(&p->ack_lat, now - p->ts[n % RING]);
            p->acks_meas++;
        }
    }
    pthread_mutex_lock(&p->mu);
    p->acked++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void on_delivered(struct pair *p, const unsigned char *body, size_t len)
{
    uint64_t ts, n, now = bench_now_ns();
    uint32_t idx;
    if (bench_body_parse(body, len, &ts, &idx, &n) != 0 || idx != (uint32_t)p->idx) {
        p->bad++;
        return;
    }
    if (n != p->last_n + 1) p->dup_or_ooo++;
    if (n > p->last_n) p->last_n = n;
    p->delivered++;
    if (atomic_load(&phase) == PH_MEASURE && now >= meas_start && now < meas_end) {
        bench_samples_add(&p->lat, now - ts);
        p->delivered_meas++;
    }
}

/* ---- sdk mode ------------------------------------------------------------ */

static int sdk_token(void *data, char *buf, size_t cap, int refresh)
{
    struct dev *d = data;
    return snprintf(buf, cap, "%s", d->token) < (int)cap ? 0 : -1;
}

static uint64_t cmid_counter(const char *cmid)
{
    const char *dot = strrchr(cmid, '.');
    return dot ? strtoull(dot + 1, NULL, 10) : 0;
}

static void sdk_event(void *data, const mqchat_event *ev)
{
    struct dev *d = data;
    struct pair *p = d->p;
    switch (ev->type) {
    case MQCHAT_EV_CONNECTION:
        if (ev->connection.state == MQCHAT_CONN_UP_TO_DATE) atomic_store(&d->ready, 1);
        if (ev->connection.state == MQCHAT_CONN_DISCONNECTED && atomic_load(&d->ready))
            atomic_fetch_add(&d->failed, 1);
        break;
    case MQCHAT_EV_SENT:
        if (d->is_sender) on_acked(p, cmid_counter(ev->sent.cmid), 0);
        break;
    case MQCHAT_EV_SEND_FAILED:
        if (d->is_sender) on_acked(p, cmid_counter(ev->sent.cmid), 1);
        break;
    case MQCHAT_EV_MESSAGE:
        if (!d->is_sender) on_delivered(p, ev->message.body, ev->message.body_len);
        break;
    case MQCHAT_EV_ERROR:
        fprintf(stderr, "sdk_bench: %s: ERROR %s\n", d->user, ev->error.message);
        atomic_fetch_add(&d->failed, 1);
        break;
    default:
        break;
    }
}

static int sdk_open(struct dev *d, const char *state_dir)
{
    mqchat_options o;
    mqchat_options_init(&o);
    o.host = opt.host;
    o.port = opt.port;
    o.user = d->user;
    o.device = "d";
    o.token = sdk_token;
    o.state_dir = state_dir;
    o.topic_prefix = opt.prefix;
    o.on_event = sdk_event;
    o.data = d;
    o.backoff_min_ms = 100;
    o.backoff_max_ms = 1000;
    char *err = NULL;
    d->c = mqchat_new(&o, &err);
    if (!d->c) {
        fprintf(stderr, "sdk_bench: mqchat_new(%s): %s\n", d->user, err ? err : "?");
        free(err);
        return -1;
    }
    return mqchat_connect(d->c) == MQCHAT_OK ? 0 : -1;
}

static int sdk_send(struct pair *p, const unsigned char *body, uint64_t n)
{
    char cmid[MQCHAT_ID_BUF];
    if (mqchat_send(p->s.c, p->conv, "application/octet-stream", body, (size_t)opt.body, cmid) !=
        MQCHAT_OK)
        return -1;
    if (cmid_counter(cmid) != n) p->cmid_mismatch++; /* the ack times would be wrong */
    return 0;
}

/* ---- raw mode ------------------------------------------------------------ */

#define RAW_ACK_EVERY_NS 50000000ull /* MQCHAT_ACK_DELAY_MS of the SDK */

static void raw_cursor_ack(struct dev *d, uint64_t inbox_seq)
{
    char rid[64];
    snprintf(rid, sizeof(rid), "i%" PRIu64, ++d->req_counter);
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__CursorAck ca = MQCHAT__V1__CURSOR_ACK__INIT;
    ca.inbox_seq = inbox_seq;
    r.request_id = rid;
    r.body_case = MQCHAT__V1__REQUEST__BODY_CURSOR_ACK;
    r.cursor_ack = &ca;
    uint8_t buf[128];
    size_t n = mqchat__v1__request__pack(&r, buf);
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = buf;
    msg.payloadlen = (int)n;
    msg.qos = 1;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    if (MQTTAsync_sendMessage(d->m, d->t_req, &msg, &ro) != MQTTASYNC_SUCCESS)
        atomic_fetch_add(&d->failed, 1);
}

static int raw_arrived(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
    struct dev *d = ctx;
    struct pair *p = d->p;
    const uint8_t *data = m->payload;
    size_t len = (size_t)m->payloadlen;
    if (strcmp(topic, d->t_inbox) == 0) {
        Mqchat__V1__ServerEvent *e = mqchat__v1__server_event__unpack(NULL, len, data);
        if (!e) {
            p->bad++;
        } else {
            if (e->body_case == MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE) {
                const Mqchat__V1__Message *msg = e->message;
                if (!d->is_sender) on_delivered(p, msg->body.data, msg->body.len);
                uint64_t now = bench_now_ns();
                if (msg->inbox_seq && !opt.no_cursor_ack &&
                    now - d->last_ack_ns >= RAW_ACK_EVERY_NS) {
                    d->last_ack_ns = now;
                    raw_cursor_ack(d, msg->inbox_seq);
                }
            }
            mqchat__v1__server_event__free_unpacked(e, NULL);
        }
    } else if (strcmp(topic, d->t_ack) == 0) {
        Mqchat__V1__SendAck *a = mqchat__v1__send_ack__unpack(NULL, len, data);
        if (!a) {
            p->bad++;
        } else {
            if (d->is_sender) on_acked(p, cmid_counter(a->client_msg_id), a->error != NULL);
            mqchat__v1__send_ack__free_unpacked(a, NULL);
        }
    } else if (strcmp(topic, d->t_resp) == 0) {
        Mqchat__V1__Response *r = mqchat__v1__response__unpack(NULL, len, data);
        if (!r || r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR) atomic_fetch_add(&d->failed, 1);
        if (r) mqchat__v1__response__free_unpacked(r, NULL);
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void raw_lost(void *ctx, char *cause)
{
    struct dev *d = ctx;
    fprintf(stderr, "sdk_bench: %s: connection lost: %s\n", d->user, cause ? cause : "");
    atomic_fetch_add(&d->failed, 1);
}

static void raw_subscribed(void *ctx, MQTTAsync_successData *r)
{
    atomic_store(&((struct dev *)ctx)->ready, 1);
}

static void raw_failed(void *ctx, MQTTAsync_failureData *r)
{
    struct dev *d = ctx;
    fprintf(stderr, "sdk_bench: %s: connect/subscribe failed (%d) %s\n", d->user, r ? r->code : 0,
            r && r->message ? r->message : "");
    atomic_fetch_add(&d->failed, 1);
}

static void raw_connected(void *ctx, MQTTAsync_successData *r)
{
    struct dev *d = ctx;
    char *topics[3] = {d->t_inbox, d->t_ack, d->t_resp};
    int qos[3] = {1, 1, 1};
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = raw_subscribed;
    ro.onFailure = raw_failed;
    ro.context = d;
    if (MQTTAsync_subscribeMany(d->m, 3, topics, qos, &ro) != MQTTASYNC_SUCCESS)
        atomic_fetch_add(&d->failed, 1);
}

static int raw_open(struct dev *d)
{
    char uri[300], cid[128];
    snprintf(uri, sizeof(uri), "tcp://%s:%d", opt.host, opt.port);
    snprintf(cid, sizeof(cid), "%s:d", d->user);
    MQTTAsync_createOptions cro = MQTTAsync_createOptions_initializer; /* as the SDK */
    cro.MQTTVersion = MQTTVERSION_3_1_1;
    if (MQTTAsync_createWithOptions(&d->m, uri, cid, MQTTCLIENT_PERSISTENCE_NONE, NULL, &cro) !=
            MQTTASYNC_SUCCESS ||
        MQTTAsync_setCallbacks(d->m, d, raw_lost, raw_arrived, NULL) != MQTTASYNC_SUCCESS)
        return -1;
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = 30;
    co.cleansession = 1;
    co.MQTTVersion = MQTTVERSION_3_1_1;
    co.username = d->user;
    co.password = d->token;
    co.connectTimeout = 10;
    co.onSuccess = raw_connected;
    co.onFailure = raw_failed;
    co.context = d;
    return MQTTAsync_connect(d->m, &co) == MQTTASYNC_SUCCESS ? 0 : -1;
}

static int raw_send(struct pair *p, const unsigned char *body, uint64_t n)
{
    char cmid[64];
    snprintf(cmid, sizeof(cmid), "%s.%" PRIu64, p->nonce, n);
    Mqchat__V1__SendRequest s = MQCHAT__V1__SEND_REQUEST__INIT;
    s.client_msg_id = cmid;
    s.conversation_id = p->conv;
    s.content_type = "application/octet-stream";
    s.body.data = (uint8_t *)body;
    s.body.len = (size_t)opt.body;
    uint8_t buf[4096];
    size_t len = protobuf_c_message_get_packed_size(&s.base);
    if (len > sizeof(buf)) return -1;
    protobuf_c_message_pack(&s.base, buf);
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = buf;
    msg.payloadlen = (int)len;
    msg.qos = 1;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    return MQTTAsync_sendMessage(p->s.m, p->s.t_send, &msg, &ro) == MQTTASYNC_SUCCESS ? 0 : -1;
}

/* ---- sender threads ------------------------------------------------------ */

static int cur_mode; /* MODE_SDK or MODE_RAW while a run is on */
static uint64_t send_start;

static void *sender_main(void *arg)
{
    struct pair *p = arg;
    double per_pair = opt.rate > 0 ? opt.rate / opt.pairs : 0;
    unsigned char *body = malloc((size_t)opt.body);
    if (!body) return NULL;
    memcpy(body, p->body, (size_t)opt.body);
    uint64_t n = 0;
    for (;;) {
        int ph = atomic_load(&phase);
        if (ph != PH_WARMUP && ph != PH_MEASURE) break;
        uint64_t due = bench_now_ns();
        if (per_pair > 0) {
            due = send_start + (uint64_t)((double)n * 1e9 / per_pair);
            uint64_t now = bench_now_ns();
            if (due > now) {
                uint64_t w = due - now;
                usleep((useconds_t)(w / 1000 > 100000 ? 100000 : w / 1000));
                if (due > bench_now_ns()) continue;
            }
        }
        pthread_mutex_lock(&p->mu);
        while (p->issued - p->acked >= (uint64_t)opt.window && atomic_load(&phase) < PH_DRAIN) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        int go = atomic_load(&phase) < PH_DRAIN;
        if (go) p->issued++;
        pthread_mutex_unlock(&p->mu);
        if (!go) break;
        n++;
        if (per_pair == 0) due = bench_now_ns();
        p->ts[n % RING] = due; /* before the send: its ack may come first */
        bench_body_stamp(body, due, (uint32_t)p->idx, n);
        int rc = cur_mode == MODE_SDK ? sdk_send(p, body, n) : raw_send(p, body, n);
        if (rc != 0) {
            atomic_fetch_add(&p->s.failed, 1);
            pthread_mutex_lock(&p->mu);
            p->issued--;
            pthread_mutex_unlock(&p->mu);
            n--;
            usleep(10000);
        }
    }
    free(body);
    return NULL;
}

/* ---- one run --------------------------------------------------------------- */

static int rm_state(const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd);
}

static int run(int mode)
{
    const char *name = mode == MODE_SDK ? "sdk" : "raw";
    cur_mode = mode;
    atomic_store(&phase, PH_SETUP);
    char state_dir[1024] = "";
    if (mode == MODE_SDK) {
        snprintf(state_dir, sizeof(state_dir), "%s/sdk_bench.XXXXXX",
                 opt.state_parent ? opt.state_parent
                                  : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"));
        if (!mkdtemp(state_dir)) bench_die("mkdtemp %s failed", state_dir);
    }
    uint32_t nonce = bench_run_nonce();
    pairs = calloc((size_t)opt.pairs, sizeof(*pairs));
    if (!pairs) bench_die("out of memory");
    unsigned char *tmpl = bench_body_template(opt.body);
    int setup_failed = 0;
    for (int i = 0; i < opt.pairs; i++) {
        struct pair *p = &pairs[i];
        p->idx = i;
        p->body = tmpl;
        pthread_mutex_init(&p->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_cond_init(&p->cv, &ca);
        pthread_condattr_destroy(&ca);
        snprintf(p->nonce, sizeof(p->nonce), "%08x%c%d", nonce, name[0], i);
        struct dev *ds[2] = {&p->s, &p->r};
        for (int k = 0; k < 2; k++) {
            struct dev *d = ds[k];
            d->p = p;
            d->is_sender = k == 0;
            snprintf(d->user, sizeof(d->user), "b%08x%c%c%d", nonce, name[0], k ? 'r' : 's', i);
            char *t = bench_token(opt.secret_file, d->user, "d", 3600, NULL, NULL);
            snprintf(d->token, sizeof(d->token), "%s", t);
            free(t);
            const char *pre = opt.prefix, *u = d->user;
            snprintf(d->t_send, sizeof(d->t_send), "%s/u/%s/d/d/send", pre, u);
            snprintf(d->t_req, sizeof(d->t_req), "%s/u/%s/d/d/req", pre, u);
            snprintf(d->t_ack, sizeof(d->t_ack), "%s/u/%s/d/d/ack", pre, u);
            snprintf(d->t_resp, sizeof(d->t_resp), "%s/u/%s/d/d/resp", pre, u);
            snprintf(d->t_inbox, sizeof(d->t_inbox), "%s/u/%s/inbox", pre, u);
        }
        bench_conv_id(p->conv, sizeof(p->conv), p->s.user, p->r.user);
        for (int k = 0; k < 2 && !setup_failed; k++)
            if ((mode == MODE_SDK ? sdk_open(ds[k], state_dir) : raw_open(ds[k])) != 0)
                setup_failed = 1;
    }
    uint64_t t_conn = bench_now_ns();
    for (int ok = 0; !ok && !setup_failed && !bench_stopping();) {
        ok = 1;
        for (int i = 0; i < opt.pairs; i++)
            ok &= atomic_load(&pairs[i].s.ready) && atomic_load(&pairs[i].r.ready);
        if (bench_now_ns() - t_conn > 30000000000ull) {
            fprintf(stderr, "sdk_bench: %s: not every client connected within 30 s\n", name);
            setup_failed = 1;
        }
        usleep(10000);
    }
    fprintf(stderr, "sdk_bench: %s: %d clients connected in %.2f s\n", name, 2 * opt.pairs,
            (double)(bench_now_ns() - t_conn) / 1e9);

    uint64_t cpu0 = 0, cpu1 = 0, bcpu0 = 0, bcpu1 = 0, mb0 = 0, mt0 = 0, mb1 = 0, mt1 = 0;
    if (!setup_failed) {
        send_start = bench_now_ns();
        meas_start = send_start + (uint64_t)(opt.warmup * 1e9);
        meas_end = meas_start + (uint64_t)(opt.duration * 1e9);
        atomic_store(&phase, PH_WARMUP);
        for (int i = 0; i < opt.pairs; i++)
            if (pthread_create(&pairs[i].th, NULL, sender_main, &pairs[i]) != 0)
                bench_die("pthread_create failed");
        while (bench_now_ns() < meas_start && !bench_stopping())
            usleep(1000);
        atomic_store(&phase, PH_MEASURE);
        cpu0 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
        bcpu0 = bench_proc_cpu_ns(opt.broker_pid, 0);
        bench_machine_cpu(&mb0, &mt0);
        while (bench_now_ns() < meas_end && !bench_stopping())
            usleep(1000);
        cpu1 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
        bcpu1 = bench_proc_cpu_ns(opt.broker_pid, 0);
        bench_machine_cpu(&mb1, &mt1);
        atomic_store(&phase, PH_DRAIN);
        for (int i = 0; i < opt.pairs; i++)
            pthread_join(pairs[i].th, NULL);
        /* Drain: every send acked and delivered, at most 5 s. */
        uint64_t dend = bench_now_ns() + 5000000000ull;
        for (int done = 0; !done && bench_now_ns() < dend;) {
            done = 1;
            for (int i = 0; i < opt.pairs; i++) {
                struct pair *p = &pairs[i];
                pthread_mutex_lock(&p->mu);
                done &= p->acked == p->issued;
                pthread_mutex_unlock(&p->mu);
                done &= p->last_n >= p->issued; /* racy read, rechecked after the close */
            }
            usleep(10000);
        }
    }
    atomic_store(&phase, PH_DONE);
    /* Close: after this no callback runs, the counters are stable. */
    int outbox_left = 0;
    for (int i = 0; i < opt.pairs; i++) {
        struct dev *ds[2] = {&pairs[i].s, &pairs[i].r};
        for (int k = 0; k < 2; k++) {
            if (mode == MODE_SDK && ds[k]->c) {
                int n = mqchat_outbox_count(ds[k]->c);
                if (n > 0) outbox_left += n;
                mqchat_free(ds[k]->c);
            } else if (mode == MODE_RAW && ds[k]->m) {
                MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
                dopt.timeout = 1000;
                MQTTAsync_disconnect(ds[k]->m, &dopt);
                for (int w = 0; w < 100 && MQTTAsync_isConnected(ds[k]->m); w++)
                    usleep(10000);
                MQTTAsync_destroy(&ds[k]->m);
            }
        }
    }
    if (mode == MODE_SDK) rm_state(state_dir);

    struct bench_samples lat = {0}, ack = {0};
    uint64_t issued = 0, acked = 0, delivered = 0, dmeas = 0, ameas = 0, dup = 0, bad = 0,
             ackerr = 0, mism = 0, lost = 0, failed = 0;
    for (int i = 0; i < opt.pairs; i++) {
        struct pair *p = &pairs[i];
        issued += p->issued;
        acked += p->acked;
        delivered += p->delivered;
        dmeas += p->delivered_meas;
        ameas += p->acks_meas;
        dup += p->dup_or_ooo;
        bad += p->bad;
        ackerr += p->ack_errors;
        mism += p->cmid_mismatch;
        lost += p->issued > p->last_n ? p->issued - p->last_n : 0;
        failed += (uint64_t)atomic_load(&p->s.failed) + (uint64_t)atomic_load(&p->r.failed);
        for (size_t k = 0; k < p->lat.n; k++)
            bench_samples_add(&lat, (uint64_t)p->lat.v[k] * 1000);
        for (size_t k = 0; k < p->ack_lat.n; k++)
            bench_samples_add(&ack, (uint64_t)p->ack_lat.v[k] * 1000);
        free(p->lat.v);
        free(p->ack_lat.v);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
    free(pairs);
    free(tmpl);
    bench_samples_sort(&lat);
    bench_samples_sort(&ack);
    double secs = opt.duration;
    double rate = (double)dmeas / secs;
    double us_per_msg = dmeas ? (double)(cpu1 - cpu0) / 1e3 / (double)dmeas : 0;
    double broker_us = dmeas ? (double)(bcpu1 - bcpu0) / 1e3 / (double)dmeas : 0;
    double cpu_pct = (double)(cpu1 - cpu0) / 1e9 / secs * 100;
    double machine = mt1 > mt0 ? 100.0 * (double)(mb1 - mb0) / (double)(mt1 - mt0) : 0;

    printf("mode %s: %d pairs, %s, window %d, body %d B, %.1f s measured\n", name, opt.pairs,
           opt.rate > 0 ? "fixed rate" : "closed loop", opt.window, opt.body, secs);
    if (opt.rate > 0) printf("  offered          %.0f msgs/s\n", opt.rate);
    printf("  delivered        %.0f msgs/s\n", rate);
    printf("  send->delivered  p50 %u  p99 %u  p99.9 %u  max %u us (%zu samples)\n",
           bench_percentile(&lat, 50), bench_percentile(&lat, 99), bench_percentile(&lat, 99.9),
           bench_samples_max(&lat), lat.n);
    printf("  send->SENT       p50 %u  p99 %u  p99.9 %u  max %u us (%zu samples)\n",
           bench_percentile(&ack, 50), bench_percentile(&ack, 99), bench_percentile(&ack, 99.9),
           bench_samples_max(&ack), ack.n);
    printf("  cpu              bench %.0f%% of a core, %.1f us per delivered message (both ends)"
           "; broker %.1f us/msg; machine %.0f%% busy\n",
           cpu_pct, us_per_msg, broker_us, machine);
    printf("  totals           sent %" PRIu64 " acked %" PRIu64 " delivered %" PRIu64
           " lost %" PRIu64 "; errors: ack %" PRIu64 " dup/out-of-order %" PRIu64 " bad %" PRIu64
           " client %" PRIu64 " cmid %" PRIu64 " outbox-left %d\n",
           issued, acked, delivered, lost, ackerr, dup, bad, failed, mism, outbox_left);
    printf("RESULT mode=%s pairs=%d window=%d rate=%.0f delivered_per_s=%.0f p50_us=%u "
           "p99_us=%u p999_us=%u max_us=%u ack_p50_us=%u ack_p99_us=%u ack_p999_us=%u "
           "us_per_msg=%.1f broker_us_per_msg=%.1f bench_cpu_pct=%.0f machine_busy_pct=%.0f "
           "sent=%" PRIu64 " acked=%" PRIu64 " delivered=%" PRIu64 " errors=%" PRIu64 "\n",
           name, opt.pairs, opt.window, opt.rate, rate, bench_percentile(&lat, 50),
           bench_percentile(&lat, 99), bench_percentile(&lat, 99.9), bench_samples_max(&lat),
           bench_percentile(&ack, 50), bench_percentile(&ack, 99), bench_percentile(&ack, 99.9),
           us_per_msg, broker_us, cpu_pct, machine, issued, acked, delivered,
           ackerr + dup + bad + failed + mism + lost + (uint64_t)outbox_left);
    fflush(stdout);
    (void)ameas;
    free(lat.v);
    free(ack.v);
    int errors = setup_failed || ackerr || dup || bad || failed || mism || lost || outbox_left ||
                 acked != issued || dmeas == 0;
    return errors ? 1 : 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: sdk_bench --secret-file F [--port N] [--host H] [--prefix P]\n"
                    "         [--mode sdk|raw|both|both-raw-first] [--pairs N] [--window W]\n"
                    "         [--rate R] [--duration S] [--warmup S] [--body B] [--state-dir D]\n"
                    "         [--broker-pid PID] [--raw-no-cursor-ack]\n");
}

int main(int argc, char **argv)
{
    bench_init("sdk_bench");
    const struct bench_opt opts[] = {
        {"host", BENCH_OPT_STR, &opt.host, NULL},
        {"port", BENCH_OPT_INT, &opt.port, NULL},
        {"prefix", BENCH_OPT_STR, &opt.prefix, NULL},
        {"secret-file", BENCH_OPT_STR, &opt.secret_file, NULL},
        {"mode", BENCH_OPT_CHOICE, &opt.mode, "sdk|raw|both|both-raw-first"},
        {"pairs", BENCH_OPT_INT, &opt.pairs, NULL},
        {"window", BENCH_OPT_INT, &opt.window, NULL},
        {"body", BENCH_OPT_INT, &opt.body, NULL},
        {"rate", BENCH_OPT_DOUBLE, &opt.rate, NULL},
        {"duration", BENCH_OPT_DOUBLE, &opt.duration, NULL},
        {"warmup", BENCH_OPT_DOUBLE, &opt.warmup, NULL},
        {"state-dir", BENCH_OPT_STR, &opt.state_parent, NULL},
        {"broker-pid", BENCH_OPT_INT, &opt.broker_pid, NULL},
        {"raw-no-cursor-ack", BENCH_OPT_FLAG, &opt.no_cursor_ack, NULL},
        {NULL, 0, NULL, NULL},
    };
    if (bench_parse_opts(argc, argv, opts) != 0 || !opt.secret_file || opt.pairs < 1 ||
        opt.pairs > MAX_PAIRS || opt.window < 1 || opt.window >= RING / 2 ||
        opt.body < BENCH_BODY_HDR || opt.body > 3000 || opt.duration <= 0 || opt.warmup < 0) {
        usage();
        return 2;
    }
    if (opt.window > 90)
        fprintf(stderr,
                "sdk_bench: warning: window %d: paho queues at most 100 commands per "
                "client, the rest are refused\n",
                opt.window);
    int rc = 0;
    switch (opt.mode) {
    case MODE_SDK:
        rc = run(MODE_SDK);
        break;
    case MODE_RAW:
        rc = run(MODE_RAW);
        break;
    case MODE_BOTH:
        rc = run(MODE_SDK);
        if (!bench_stopping()) rc |= run(MODE_RAW);
        break;
    default:
        rc = run(MODE_RAW);
        if (!bench_stopping()) rc |= run(MODE_SDK);
        break;
    }
    return rc;
}
