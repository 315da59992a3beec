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
#include "bench_util.h"
#include "mqchat.pb-c.h"

#include <inttypes.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Bodies carry the send time (bench_body_stamp). */
#define MAX_ID 64
#define MAX_TOPIC 256
#define TL_SLOTS 6000 /* 100 ms slots: 10 minutes */

enum mode { MODE_PLAIN, MODE_MQCHAT };
enum inflight { INFLIGHT_PUBACK, INFLIGHT_SENDACK };
enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

static struct {
    int mode;     /* enum mode */
    int inflight; /* enum inflight */
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
    struct bench_conn conn;
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
};

struct worker {
    pthread_t th;
    int wid;
    struct client **c;
    int nc;
    struct bench_loop loop; /* the clients' sockets */
    int rr;                 /* rate mode: round-robin position among senders */
    struct bench_pacer pacer;
    /* stats, written by this worker only */
    uint64_t sent, pubacks, sendacks, received, received_meas, received_dup_or_ooo;
    uint64_t ack_errors, bad_payloads, unexpected_disconnects, other_msgs;
    atomic_int drained; /* set by the worker in PH_DRAIN once nothing is in flight */
    /* --verbose timeline: per 100 ms since the first send, deliveries and
     * the worst latency */
    uint32_t tl_count[TL_SLOTS];
    uint32_t tl_max_us[TL_SLOTS];
    struct bench_samples lat;     /* end-to-end, messages received in the window */
    struct bench_samples ack_lat; /* send -> SendAck (mqchat) or PUBACK (plain) */
    char errbuf[640];
};

static struct worker *workers;
static struct client *clients; /* 2 * pairs: senders then receivers */
static _Atomic int phase = PH_CONNECT;
static _Atomic uint64_t send_start_ns, meas_start_ns, meas_end_ns;
static uint32_t run_nonce;
static unsigned char *body_tmpl;
static atomic_int setup_failures; /* refused CONNACK/SUBACK, early disconnects */

/* Keeps the first error of a worker (printed at the end). */
#define note(w, ...) bench_note((w)->errbuf, sizeof(w)->errbuf, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Sending                                                                  */

/* Publishes one message from sender c, stamped with ts (ns since t0). */
static int send_one(struct client *c, uint64_t ts)
{
    struct worker *w = c->w;
    unsigned char body[opt.body];
    memcpy(body, body_tmpl, (size_t)opt.body);
    bench_body_stamp(body, ts, (uint32_t)c->idx, c->next_n);

    int rc;
    if (opt.mode == MODE_PLAIN) {
        rc = mosquitto_publish(c->conn.m, NULL, c->topic, opt.body, body, 1, false);
    } else {
        /* client_msg_id: run nonce, per-sender counter, send time (so the
         * SendAck tells its own latency). */
        char cmid[80];
        snprintf(cmid, sizeof cmid, "%08" PRIx32 ".%" PRIx64 ".%" PRIx64, run_nonce, c->next_n, ts);
        rc = bench_publish_send(c->conn.m, c->topic, cmid, c->conv, body, opt.body);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        /* A dead connection is reported by on_disconnect. */
        return -1;
    }
    c->next_n++;
    c->inflight++;
    bench_conn_touch(&c->conn);
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
            if (send_one(c, bench_now_ns()) < 0) break;
        }
    }
}

/* Open loop (bench_pace): the next due message goes to the next sender,
 * round-robin, with room in its window; -1 when every window is full. */
static int send_next(void *arg, uint64_t due)
{
    struct worker *w = arg;
    for (int k = 0; k < w->nc; k++) {
        struct client *c = w->c[(w->rr + k) % w->nc];
        if (c->is_sender && c->connected && c->inflight < opt.window) {
            w->rr = (w->rr + k + 1) % w->nc;
            return send_one(c, due);
        }
    }
    return -1;
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
    if (!bench_suback_ok(qos_count, granted_qos)) {
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
    uint64_t ts, n;
    uint32_t from;
    if (bench_body_parse(body, len, &ts, &from, &n) < 0) {
        w->bad_payloads++;
        return;
    }
    uint64_t now = bench_now_ns();
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
        bench_samples_add(&w->lat, now > ts ? now - ts : 0);
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
    if (c->is_sender) {
        if (!bench_is_ack_topic(msg->topic)) {
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
            uint64_t now = bench_now_ns();
            if (in_window(now)) bench_samples_add(&w->ack_lat, now > ts ? now - ts : 0);
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
    int counted_ready = 0;
    int ph;
    while ((ph = atomic_load(&phase)) != PH_DONE && !bench_stopping()) {
        uint64_t now = bench_now_ns();
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
                uint64_t next = bench_pace(&w->pacer, atomic_load(&send_start_ns),
                                           opt.rate / opt.threads, now, send_next, w);
                if (next < timeout) timeout = next;
            } else {
                fill_windows(w);
            }
        }
        bench_loop_pump(&w->loop, timeout);
        bench_loop_misc(&w->loop, now);
    }
    /* Disconnect cleanly and flush. */
    for (int i = 0; i < w->nc; i++)
        if (mosquitto_socket(w->c[i]->conn.m) >= 0) mosquitto_disconnect(w->c[i]->conn.m);
    uint64_t end = bench_now_ns() + 500000000u;
    for (;;) {
        int pending = 0;
        for (int i = 0; i < w->nc; i++) {
            struct mosquitto *m = w->c[i]->conn.m;
            if (mosquitto_socket(m) >= 0 && mosquitto_want_write(m)) pending = 1;
        }
        if (!pending || bench_now_ns() > end) break;
        bench_loop_pump(&w->loop, 10000000);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                    */

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
        bench_conv_id(c->conv, sizeof c->conv, su, ru);
        bench_mqchat_topic(c->topic, sizeof c->topic, opt.prefix, c->user, is_sender);
        token = bench_token(opt.secret_file, c->user, "d", 3600, opt.iss, opt.aud);
        username = c->user;
    }
    static const struct bench_callbacks cb = {on_connect, on_disconnect, on_subscribe, on_publish,
                                              on_message};
    bench_conn_new(&c->conn, &w->loop, c->id, c, username, token, &cb);
    free(token);
    int rc = bench_conn_connect(&c->conn, opt.host, opt.port, opt.keepalive);
    if (rc != MOSQ_ERR_SUCCESS)
        bench_die("%s: connect to %s:%d: %s", c->id, opt.host, opt.port, bench_mosq_strerror(rc));
    bench_loop_add(&w->loop, &c->conn);
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
            BENCH_BODY_HDR);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct bench_opt opts[] = {
        {"mode", BENCH_OPT_CHOICE, &opt.mode, "plain|mqchat"},
        {"host", BENCH_OPT_STR, &opt.host, NULL},
        {"port", BENCH_OPT_INT, &opt.port, NULL},
        {"pairs", BENCH_OPT_INT, &opt.pairs, NULL},
        {"window", BENCH_OPT_INT, &opt.window, NULL},
        {"inflight", BENCH_OPT_CHOICE, &opt.inflight, "puback|sendack"},
        {"body", BENCH_OPT_INT, &opt.body, NULL},
        {"duration", BENCH_OPT_DOUBLE, &opt.duration, NULL},
        {"warmup", BENCH_OPT_DOUBLE, &opt.warmup, NULL},
        {"rate", BENCH_OPT_DOUBLE, &opt.rate, NULL},
        {"threads", BENCH_OPT_INT, &opt.threads, NULL},
        {"prefix", BENCH_OPT_STR, &opt.prefix, NULL},
        {"secret-file", BENCH_OPT_STR, &opt.secret_file, NULL},
        {"iss", BENCH_OPT_STR, &opt.iss, NULL},
        {"aud", BENCH_OPT_STR, &opt.aud, NULL},
        {"broker-pid", BENCH_OPT_INT, &opt.broker_pid, NULL},
        {"verbose", BENCH_OPT_FLAG, &opt.verbose, NULL},
        {NULL, 0, NULL, NULL}};
    if (bench_parse_opts(argc, argv, opts) < 0) usage();
    if (opt.pairs < 1 || opt.pairs > 9000 || opt.window < 1 || opt.body < BENCH_BODY_HDR ||
        opt.body > 1 << 20 || opt.duration <= 0 || opt.warmup < 0 || opt.rate < 0 ||
        opt.threads < 1 || opt.threads > opt.pairs || opt.port <= 0)
        usage();
    if (opt.mode == MODE_MQCHAT && !opt.secret_file) bench_die("--mode mqchat needs --secret-file");
}

int main(int argc, char **argv)
{
    bench_init("broker_bench");
    parse_args(argc, argv);
    run_nonce = bench_run_nonce();
    atomic_store(&meas_start_ns, UINT64_MAX);
    atomic_store(&meas_end_ns, UINT64_MAX);
    body_tmpl = bench_body_template(opt.body);

    mosquitto_lib_init();
    workers = calloc((size_t)opt.threads, sizeof *workers);
    clients = calloc((size_t)opt.pairs * 2, sizeof *clients);
    if (!workers || !clients) bench_die("out of memory");
    for (int t = 0; t < opt.threads; t++) {
        struct worker *w = &workers[t];
        w->wid = t;
        int maxc = 2 * (opt.pairs / opt.threads + 1);
        w->c = calloc((size_t)maxc, sizeof *w->c);
        if (!w->c) bench_die("out of memory");
        bench_loop_init(&w->loop, maxc);
    }
    /* Pair i lives on worker i % threads, both ends: a message's send and
     * receive timestamps come from the same thread's view of the clock. */
    uint64_t t_conn = bench_now_ns();
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
            bench_die("pthread_create failed");

    /* Wait until every client is connected and subscribed (at most 30 s). */
    while (atomic_load(&workers_ready) < opt.threads) {
        int failed = atomic_load(&setup_failures) > 0;
        if (failed || bench_now_ns() - t_conn > 30000000000ull || bench_stopping()) {
            atomic_store(&phase, PH_DONE);
            for (int t = 0; t < opt.threads; t++)
                pthread_join(workers[t].th, NULL);
            for (int t = 0; t < opt.threads; t++)
                if (workers[t].errbuf[0]) fprintf(stderr, "  %s\n", workers[t].errbuf);
            bench_die(failed ? "clients refused by the broker" : "clients not ready after 30 s");
        }
        usleep(10000);
    }
    double conn_s = (double)(bench_now_ns() - t_conn) / 1e9;
    fprintf(stderr, "broker_bench: %d clients connected in %.2f s\n", 2 * opt.pairs, conn_s);

    uint64_t t = bench_now_ns();
    atomic_store(&send_start_ns, t);
    atomic_store(&meas_start_ns, t + (uint64_t)(opt.warmup * 1e9));
    atomic_store(&meas_end_ns, t + (uint64_t)((opt.warmup + opt.duration) * 1e9));
    atomic_store(&phase, PH_WARMUP);
    uint64_t self_cpu0 = 0, broker_cpu0 = 0, mstart = atomic_load(&meas_start_ns);
    while (bench_now_ns() < mstart && !bench_stopping())
        usleep(1000);
    atomic_store(&phase, PH_MEASURE);
    self_cpu0 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
    broker_cpu0 = bench_proc_cpu_ns(opt.broker_pid, 0);
    uint64_t mbusy0, mtotal0, mbusy1, mtotal1;
    bench_machine_cpu(&mbusy0, &mtotal0);
    uint64_t mend = atomic_load(&meas_end_ns);
    while (bench_now_ns() < mend && !bench_stopping())
        usleep(1000);
    uint64_t self_cpu1 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
    uint64_t broker_cpu1 = bench_proc_cpu_ns(opt.broker_pid, 0);
    bench_machine_cpu(&mbusy1, &mtotal1);
    double machine_busy =
        mtotal1 > mtotal0 ? 100.0 * (double)(mbusy1 - mbusy0) / (double)(mtotal1 - mtotal0) : 0;
    atomic_store(&phase, PH_DRAIN);

    /* Drain: no new sends; wait for the in-flight ones (at most 3 s). */
    uint64_t dend = bench_now_ns() + 3000000000ull;
    while (bench_now_ns() < dend && !bench_stopping()) {
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
        tot.pacer.backlog_max += w->pacer.backlog_max;
        for (size_t k = 0; k < w->lat.n; k++)
            bench_samples_add(&tot.lat, (uint64_t)w->lat.v[k] * 1000);
        for (size_t k = 0; k < w->ack_lat.n; k++)
            bench_samples_add(&tot.ack_lat, (uint64_t)w->ack_lat.v[k] * 1000);
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
    bench_samples_sort(&tot.lat);
    bench_samples_sort(&tot.ack_lat);
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
           bench_percentile(&tot.lat, 50), bench_percentile(&tot.lat, 90),
           bench_percentile(&tot.lat, 99), bench_percentile(&tot.lat, 99.9),
           bench_samples_max(&tot.lat), tot.lat.n);
    if (opt.mode == MODE_MQCHAT)
        printf("  send->SendAck  p50 %u  p99 %u us\n", bench_percentile(&tot.ack_lat, 50),
               bench_percentile(&tot.ack_lat, 99));
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
    if (opt.rate > 0) printf("  backlog max    %" PRIu64 " messages\n", tot.pacer.backlog_max);
    printf("RESULT mode=%s inflight=%s pairs=%d window=%d rate=%.0f delivered_per_s=%.0f "
           "p50_us=%u p90_us=%u p99_us=%u p999_us=%u max_us=%u ack_p50_us=%u ack_p99_us=%u "
           "sent=%" PRIu64 " received=%" PRIu64 " ack_errors=%" PRIu64 " dup=%" PRIu64
           " disconnects=%" PRIu64
           " bench_cpu_pct=%.0f broker_cpu_pct=%.0f machine_busy_pct=%.0f bench_us_per_msg=%.1f"
           " broker_us_per_msg=%.1f\n",
           mode, infl, opt.pairs, opt.window, opt.rate, rate, bench_percentile(&tot.lat, 50),
           bench_percentile(&tot.lat, 90), bench_percentile(&tot.lat, 99),
           bench_percentile(&tot.lat, 99.9), bench_samples_max(&tot.lat),
           bench_percentile(&tot.ack_lat, 50), bench_percentile(&tot.ack_lat, 99), tot.sent,
           tot.received, tot.ack_errors, tot.received_dup_or_ooo, tot.unexpected_disconnects,
           self_cpu, broker_cpu, machine_busy, bench_us, broker_us);
    fflush(stdout);

    for (int i = 0; i < 2 * opt.pairs; i++)
        mosquitto_destroy(clients[i].conn.m);
    mosquitto_lib_cleanup();
    int bad = tot.ack_errors || tot.unexpected_disconnects || tot.bad_payloads ||
              tot.received_dup_or_ooo || tot.received_meas == 0;
    return bad ? 1 : 0;
}
