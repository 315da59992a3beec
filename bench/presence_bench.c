/* presence_bench — presence churn: what connection churn costs a broker
 * (and its Redis) while 1:1 messages flow.
 *
 * Against a broker that is already running (run-presence-bench.sh starts
 * it, and the Redis the plugin writes presence to):
 *
 *   fleet     --devices idle devices (default 10 000), connected once with
 *             keepalive --keepalive (60 s) and then silent: one user per
 *             device, user "pu<i>", client id "pu<i>:d", on a minimal MQTT
 *             3.1.1 client of its own (one descriptor per device; see
 *             struct dev). The first --churn-devices of them (1 000) are
 *             the churners.
 *   messages  --pairs sender/receiver pairs (100) exchanging QoS-1
 *             messages with a 300-byte body at a fixed total --rate (2 000
 *             msgs/s, open loop: message k is due at start + k/rate and
 *             carries that due time, so a stall shows up as latency). mqchat
 *             mode: SendRequest on ".../send", ServerEvent on the
 *             receiver's inbox, at most --window sends waiting for their
 *             SendAck per sender; plain mode: raw body on "bench/<i>", at
 *             most --window waiting for the PUBACK.
 *   churn     in the churn window only: every 2/--churn-rate seconds the
 *             churner connected the longest disconnects (MQTT DISCONNECT,
 *             socket closed), and every churner that has been away
 *             --churn-off-ms (1 000 ms) reconnects (same client id, new
 *             socket, clean session). Connects and disconnects each count
 *             as one event: --churn-rate 1000 = 500 of each per second,
 *             about off_ms * rate / 2000 churners away at any time.
 *
 * Timeline: connect the fleet (at most --connect-parallel connects waiting
 * for their CONNACK, default 20: mosquitto's listen backlog is small, and
 * a full accept queue drops SYNs, which the kernel retries after 1 s) and
 * the pairs with libmosquitto, settle 1 s; then messages start: --warmup s
 * unmeasured, the "steady" window (--duration s: the
 * fleet connected and silent, no churn), churn starts, --warmup s
 * unmeasured, the "churn" window (--duration s), then drain and exit. The
 * message load is the same in both windows.
 *
 * Per window it samples, at its start and end: Redis `INFO commandstats`
 * (--redis host:port; the bench's own INFO calls are not counted),
 * utime+stime of the broker (--broker-pid) and of Redis (--redis-pid) from
 * /proc/<pid>/stat, its own CPU and the machine's.
 *   redis cmds/event   commands in the churn window / churn events
 *   idle cmds/dev/min  commands in the steady window / devices / minutes;
 *                      SET is the node's liveness key (the plugin's only
 *                      SET), shown apart
 *   broker us/event    (broker CPU in the churn window - in the steady
 *                      window) / churn events; also for its main thread
 *                      (the event loop) alone
 *   reconnect          a churner's connect() -> CONNACK
 *
 * Output: human-readable lines, then one line per phase
 *   RESULT mode=... window=connect|steady|churn key=value ...
 * for scripts. Exit status 0 when the run had no errors (no refused
 * connect, no unexpected disconnect, no duplicate or out-of-order delivery,
 * no SendAck error). Benchmarks print figures; nothing here asserts speed.
 */
#include "bench_util.h"
#include "mqchat.pb-c.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Bodies carry the due time (bench_body_stamp). */
#define NWIN 2      /* measured windows: steady, churn */
#define MAX_CMDS 96 /* distinct Redis commands tracked */

enum mode { MODE_PLAIN, MODE_MQCHAT };
enum kind { K_SENDER, K_RECEIVER };
/* A fleet device: no socket; TCP connect under way or CONNECT not all
 * written; waiting for CONNACK; connected. */
enum fstate { F_DOWN, F_TCP, F_CONNECTING, F_UP };
enum phase { PH_CONNECT, PH_RUN, PH_DRAIN, PH_DONE };

static const char *win_name[NWIN] = {"steady", "churn"};

static struct {
    int mode; /* enum mode */
    const char *host;
    int port;
    int devices;
    int churners;
    double churn_rate; /* events/s: connects + disconnects */
    int churn_off_ms;
    int pairs;
    double rate;
    int window;
    int body;
    double duration;
    double warmup;
    int keepalive;
    int connect_parallel;
    const char *prefix;
    const char *secret_file;
    const char *redis;
    int broker_pid;
    int redis_pid;
} opt = {
    .mode = MODE_PLAIN,
    .host = "127.0.0.1",
    .port = 1883,
    .devices = 10000,
    .churners = 1000,
    .churn_rate = 1000,
    .churn_off_ms = 1000,
    .pairs = 100,
    .rate = 2000,
    .window = 32,
    .body = 300,
    .duration = 20,
    .warmup = 2,
    .keepalive = 60,
    .connect_parallel = 20,
    .prefix = "mqchat/v1",
};

struct worker;

struct client {
    struct bench_conn conn;
    struct worker *w;
    enum kind kind;
    int idx;         /* pair index */
    int ready;       /* sender: CONNACK; receiver: SUBACK */
    int inflight;    /* sender */
    uint64_t next_n; /* sender: message counter */
    uint64_t last_n; /* receiver: last counter seen */
    int got_any;     /* receiver */
    char id[40];     /* client id */
    char user[24];   /* user id */
    char *topic;     /* pairs: publish topic (sender) or subscription (receiver) */
    char *conv;      /* sender (mqchat): conversation id */
};

/* An idle device of the fleet, on a raw MQTT 3.1.1 connection: CONNECT,
 * CONNACK, PINGREQ/PINGRESP, DISCONNECT is all it needs. (libmosquitto
 * opens a socketpair for every client: three descriptors per device, and
 * 10 000 devices would not fit under a 20 000 descriptor limit.) */
struct dev {
    int fd;
    int idx;
    enum fstate st;
    uint64_t conn_ns, down_ns, last_out_ns;
    unsigned char *pkt; /* its CONNECT packet */
    int pkt_len, pkt_sent;
    unsigned char rb[64];
    int rlen;
};

/* A ring of fleet indices (the churners' up and down queues). */
struct ring {
    int *v;
    int cap, head, n;
};

struct worker {
    pthread_t th;
    const char *name;
    struct client **c;
    int nc;
    struct bench_loop loop; /* messages: the clients; fleet: its epoll set only */
    /* messages */
    int rr;
    struct bench_pacer pacer;
    struct bench_samples lat[NWIN];
    uint64_t received_win[NWIN];
    /* fleet */
    int connecting; /* devices in F_TCP or F_CONNECTING */
    struct ring up, down;
    uint64_t churn_issued;                             /* disconnect slots of the churn schedule */
    struct bench_samples connlat_burst, connlat[NWIN]; /* connect -> CONNACK */
    char errbuf[512];
};

static struct client *clients; /* senders, then receivers */
static struct dev *devs;       /* the fleet */
static struct sockaddr_in broker_addr;
static struct worker wmsg = {.name = "messages"}, wfleet = {.name = "fleet"};
static _Atomic int phase = PH_CONNECT;
/* The timeline, in ns since t0; set before PH_RUN. */
static uint64_t send_start_ns, win_start_ns[NWIN], win_end_ns[NWIN], churn_start_ns, churn_end_ns;
static uint32_t run_nonce;
static unsigned char *body_tmpl;

/* Counters read by the main thread at window edges. */
static _Atomic uint64_t n_sent, n_acked, n_received, n_dup, n_ack_errors, n_bad, n_other;
static _Atomic uint64_t n_refused, n_unexpected_disc, n_fleet_up, n_pairs_ready;
static _Atomic uint64_t n_connects, n_disconnects, n_connacks, n_churn_skipped, n_connect_fail;

/* Keeps the first error of a worker (printed at the end). */
#define note(w, ...) bench_note((w)->errbuf, sizeof(w)->errbuf, __VA_ARGS__)

static void ring_init(struct ring *r, int cap)
{
    r->cap = cap > 0 ? cap : 1;
    r->v = calloc((size_t)r->cap, sizeof *r->v);
    if (!r->v) bench_die("out of memory");
}

static void ring_push(struct ring *r, int x)
{
    if (r->n == r->cap) bench_die("ring overflow");
    r->v[(r->head + r->n) % r->cap] = x;
    r->n++;
}

static int ring_front(const struct ring *r)
{
    return r->n ? r->v[r->head] : -1;
}

static void ring_pop(struct ring *r)
{
    r->head = (r->head + 1) % r->cap;
    r->n--;
}

/* ------------------------------------------------------------------------ */
/* Redis INFO commandstats, over a plain socket (RESP bulk reply)          */

struct rstats {
    int ok;
    int n;
    char name[MAX_CMDS][40];
    uint64_t calls[MAX_CMDS];
    uint64_t reads; /* total_reads_processed: about one per pipeline a client sent */
};

static void rstats_parse(struct rstats *s, const char *text)
{
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, "total_reads_processed:", 22)) s->reads = strtoull(p + 22, NULL, 10);
        if (strncmp(p, "cmdstat_", 8) != 0) continue;
        const char *colon = strchr(p, ':');
        const char *calls = strstr(p, "calls=");
        if (!colon || !calls || s->n == MAX_CMDS) continue;
        size_t len = (size_t)(colon - (p + 8));
        if (len >= sizeof s->name[0]) continue;
        memcpy(s->name[s->n], p + 8, len);
        s->name[s->n][len] = 0;
        s->calls[s->n] = strtoull(calls + 6, NULL, 10);
        s->n++;
    }
}

static void redis_sample(struct rstats *s)
{
    memset(s, 0, sizeof *s);
    if (!opt.redis) return;
    char host[64];
    const char *colon = strrchr(opt.redis, ':');
    if (!colon || (size_t)(colon - opt.redis) >= sizeof host) return;
    snprintf(host, sizeof host, "%.*s", (int)(colon - opt.redis), opt.redis);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    static const char req[] = "INFO stats commandstats\r\n";
    char *buf = NULL;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
        goto out;
    size_t cap = 65536, len = 0;
    long want = -1; /* total bytes of the reply once the header is read */
    if (!(buf = malloc(cap))) goto out;
    for (;;) {
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) goto out;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0) goto out;
        len += (size_t)r;
        buf[len] = 0;
        if (want < 0) {
            char *crlf = strstr(buf, "\r\n");
            if (!crlf) continue;
            if (buf[0] != '$') goto out;
            want = (long)(crlf - buf) + 2 + strtol(buf + 1, NULL, 10) + 2;
        }
        if ((long)len >= want) break;
    }
    rstats_parse(s, strstr(buf, "\r\n") + 2);
    s->ok = 1;
out:
    free(buf);
    close(fd);
}

static uint64_t rstats_get(const struct rstats *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->name[i], name)) return s->calls[i];
    return 0;
}

/* b - a, per command (without our own INFO): total, the liveness SETs,
 * and "cmd:n,cmd:n" into by (or "-"). */
static uint64_t rstats_delta(const struct rstats *a, const struct rstats *b, uint64_t *set,
                             char *by, size_t bylen)
{
    uint64_t total = 0;
    size_t off = 0;
    by[0] = 0;
    *set = 0;
    for (int i = 0; i < b->n; i++) {
        if (!strcmp(b->name[i], "info")) continue;
        uint64_t d = b->calls[i] - rstats_get(a, b->name[i]);
        if (!d) continue;
        total += d;
        if (!strcmp(b->name[i], "set")) *set += d;
        if (off < bylen) {
            int k = snprintf(by + off, bylen - off, "%s%s:%" PRIu64, off ? "," : "", b->name[i], d);
            if (k > 0) off += (size_t)k;
        }
    }
    if (!by[0]) snprintf(by, bylen, "-");
    return total;
}

/* Everything sampled at a window edge. */
struct snap {
    uint64_t t, broker, broker_main, redis, self, mbusy, mtotal;
    uint64_t connects, disconnects, connacks, skipped, received;
    struct rstats rs;
};

static void take_snap(struct snap *s)
{
    s->t = bench_now_ns();
    s->broker = bench_proc_cpu_ns(opt.broker_pid, 0);
    s->broker_main = bench_proc_cpu_ns(opt.broker_pid, 1);
    s->redis = bench_proc_cpu_ns(opt.redis_pid, 0);
    s->self = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
    bench_machine_cpu(&s->mbusy, &s->mtotal);
    s->connects = atomic_load(&n_connects);
    s->disconnects = atomic_load(&n_disconnects);
    s->connacks = atomic_load(&n_connacks);
    s->skipped = atomic_load(&n_churn_skipped);
    s->received = atomic_load(&n_received);
    redis_sample(&s->rs);
}

/* ------------------------------------------------------------------------ */
/* Messages                                                                 */

static int win_of(uint64_t t)
{
    for (int k = 0; k < NWIN; k++)
        if (t >= win_start_ns[k] && t < win_end_ns[k]) return k;
    return -1;
}

static int send_one(struct client *c, uint64_t due)
{
    unsigned char body[opt.body];
    memcpy(body, body_tmpl, (size_t)opt.body);
    bench_body_stamp(body, due, (uint32_t)c->idx, c->next_n);
    int rc;
    if (opt.mode == MODE_PLAIN) {
        rc = mosquitto_publish(c->conn.m, NULL, c->topic, opt.body, body, 1, false);
    } else {
        char cmid[64];
        snprintf(cmid, sizeof cmid, "%08" PRIx32 ".%" PRIx64, run_nonce, c->next_n);
        rc = bench_publish_send(c->conn.m, c->topic, cmid, c->conv, body, opt.body);
    }
    if (rc != MOSQ_ERR_SUCCESS) return -1; /* on_disconnect reports it */
    c->next_n++;
    c->inflight++;
    bench_conn_touch(&c->conn);
    atomic_fetch_add_explicit(&n_sent, 1, memory_order_relaxed);
    return 0;
}

/* Open loop (bench_pace): the next due message goes to the next sender,
 * round-robin, with room in its window; -1 when every window is full. */
static int send_next(void *arg, uint64_t due)
{
    struct worker *w = arg;
    for (int k = 0; k < w->nc; k++) {
        struct client *c = w->c[(w->rr + k) % w->nc];
        if (c->kind == K_SENDER && c->ready && c->inflight < opt.window) {
            w->rr = (w->rr + k + 1) % w->nc;
            return send_one(c, due);
        }
    }
    return -1;
}

static void got_delivery(struct client *c, const unsigned char *body, size_t len)
{
    struct worker *w = c->w;
    uint64_t due, n;
    uint32_t from;
    if (bench_body_parse(body, len, &due, &from, &n) < 0 || (int)from != c->idx) {
        atomic_fetch_add(&n_bad, 1);
        return;
    }
    uint64_t now = bench_now_ns();
    if (c->got_any && n <= c->last_n)
        atomic_fetch_add(&n_dup, 1);
    else
        c->last_n = n;
    c->got_any = 1;
    atomic_fetch_add_explicit(&n_received, 1, memory_order_relaxed);
    int k = win_of(now);
    if (k >= 0) {
        w->received_win[k]++;
        bench_samples_add(&w->lat[k], now > due ? now - due : 0);
    }
}

/* ------------------------------------------------------------------------ */
/* libmosquitto callbacks                                                   */

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
    struct client *c = ud;
    if (rc != 0) {
        note(c->w, "%s: CONNACK refused: %s", c->id, mosquitto_connack_string(rc));
        atomic_fetch_add(&n_refused, 1);
        return;
    }
    if (c->kind == K_SENDER) {
        c->ready = 1;
        atomic_fetch_add(&n_pairs_ready, 1);
    } else if (mosquitto_subscribe(m, NULL, c->topic, 1) != MOSQ_ERR_SUCCESS) {
        note(c->w, "%s: subscribe failed", c->id);
    }
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int qos_count,
                         const int *granted_qos)
{
    struct client *c = ud;
    if (!bench_suback_ok(qos_count, granted_qos)) {
        note(c->w, "%s: subscription to %s refused", c->id, c->topic);
        atomic_fetch_add(&n_refused, 1);
        return;
    }
    c->ready = 1;
    atomic_fetch_add(&n_pairs_ready, 1);
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc)
{
    struct client *c = ud;
    c->ready = 0;
    if (atomic_load(&phase) < PH_DONE) {
        atomic_fetch_add(&n_unexpected_disc, 1);
        note(c->w, "%s: disconnected (%s)", c->id, mosquitto_strerror(rc));
    }
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
    struct client *c = ud;
    if (opt.mode == MODE_PLAIN) {
        c->inflight--;
        atomic_fetch_add_explicit(&n_acked, 1, memory_order_relaxed);
    }
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
    struct client *c = ud;
    if (opt.mode == MODE_PLAIN) {
        if (c->kind == K_RECEIVER)
            got_delivery(c, msg->payload, (size_t)msg->payloadlen);
        else
            atomic_fetch_add(&n_other, 1);
        return;
    }
    if (c->kind == K_SENDER) {
        Mqchat__V1__SendAck *ack =
            bench_is_ack_topic(msg->topic)
                ? mqchat__v1__send_ack__unpack(NULL, (size_t)msg->payloadlen, msg->payload)
                : NULL;
        if (!ack) {
            atomic_fetch_add(&n_other, 1);
            return;
        }
        if (ack->error || ack->seq == 0) {
            atomic_fetch_add(&n_ack_errors, 1);
            note(c->w, "%s: SendAck error %d: %s", c->id, ack->error ? (int)ack->error->code : 0,
                 ack->error && ack->error->message ? ack->error->message : "(seq 0)");
        }
        c->inflight--;
        atomic_fetch_add_explicit(&n_acked, 1, memory_order_relaxed);
        mqchat__v1__send_ack__free_unpacked(ack, NULL);
        return;
    }
    Mqchat__V1__ServerEvent *ev =
        mqchat__v1__server_event__unpack(NULL, (size_t)msg->payloadlen, msg->payload);
    if (ev && ev->body_case == MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE && ev->message)
        got_delivery(c, ev->message->body.data, ev->message->body.len);
    else
        atomic_fetch_add(&n_other, 1); /* e.g. a presence update: nobody watches here */
    if (ev) mqchat__v1__server_event__free_unpacked(ev, NULL);
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                    */

/* The JWT of user's device "d", valid for 3 hours. */
static char *device_token(const char *user)
{
    return bench_token(opt.secret_file, user, "d", 3 * 3600, NULL, NULL);
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) bench_die("out of memory");
    return d;
}

/* Creates c's libmosquitto client (not connected yet). */
static void make_client(struct client *c, struct worker *w, enum kind kind, int idx)
{
    c->w = w;
    c->kind = kind;
    c->idx = idx;
    char topic[256];
    snprintf(c->user, sizeof c->user, "%s%05d", kind == K_SENDER ? "ps" : "pr", idx);
    snprintf(c->id, sizeof c->id, "%s:d", c->user);
    if (opt.mode == MODE_PLAIN)
        snprintf(topic, sizeof topic, "bench/%d", idx);
    else
        bench_mqchat_topic(topic, sizeof topic, opt.prefix, c->user, kind == K_SENDER);
    c->topic = xstrdup(topic);
    if (kind == K_SENDER) {
        char conv[80], peer[24];
        snprintf(peer, sizeof peer, "pr%05d", idx);
        bench_conv_id(conv, sizeof conv, c->user, peer);
        c->conv = xstrdup(conv);
    }
    char *token = opt.mode == MODE_MQCHAT ? device_token(c->user) : NULL;
    static const struct bench_callbacks cb = {on_connect, on_disconnect, on_subscribe, on_publish,
                                              on_message};
    bench_conn_new(&c->conn, &w->loop, c->id, c, token ? c->user : NULL, token, &cb);
    free(token);
}

/* Connects c; 0 on success. */
static int start_connect(struct client *c)
{
    int rc = bench_conn_connect(&c->conn, opt.host, opt.port, opt.keepalive);
    if (rc != MOSQ_ERR_SUCCESS) {
        atomic_fetch_add(&n_connect_fail, 1);
        note(c->w, "%s: connect to %s:%d: %s", c->id, opt.host, opt.port, bench_mosq_strerror(rc));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                  */

static void *msg_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->nc; i++)
        if (start_connect(w->c[i])) bench_die("%s", w->errbuf);
    int ph;
    while ((ph = atomic_load(&phase)) != PH_DONE && !bench_stopping()) {
        uint64_t now = bench_now_ns(), timeout = 10000000;
        if (ph == PH_RUN) {
            uint64_t next = bench_pace(&w->pacer, send_start_ns, opt.rate, now, send_next, w);
            if (next < timeout) timeout = next;
        }
        bench_loop_pump(&w->loop, timeout);
        bench_loop_misc(&w->loop, now);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The fleet: raw MQTT 3.1.1                                                */

static void put_str(unsigned char **p, const char *str)
{
    size_t n = strlen(str);
    *(*p)++ = (unsigned char)(n >> 8);
    *(*p)++ = (unsigned char)n;
    memcpy(*p, str, n);
    *p += n;
}

/* Builds device i's CONNECT: clean session, keepalive, client id
 * "pu<i>:d", and in mqchat mode username "pu<i>" + its JWT. */
static void dev_init(struct dev *d, int idx)
{
    char user[24], id[40];
    snprintf(user, sizeof user, "pu%05d", idx);
    snprintf(id, sizeof id, "%s:d", user);
    char *tok = opt.mode == MODE_MQCHAT ? device_token(user) : NULL;
    size_t rem = 10 + 2 + strlen(id) + (tok ? 4 + strlen(user) + strlen(tok) : 0);
    if (rem > 16383) bench_die("CONNECT too large");
    d->fd = -1;
    d->idx = idx;
    d->pkt = malloc(rem + 3);
    if (!d->pkt) bench_die("out of memory");
    unsigned char *p = d->pkt;
    *p++ = 0x10; /* CONNECT */
    if (rem < 128) {
        *p++ = (unsigned char)rem;
    } else {
        *p++ = (unsigned char)(0x80 | (rem & 0x7f));
        *p++ = (unsigned char)(rem >> 7);
    }
    memcpy(p, "\0\4MQTT\4", 7); /* protocol name, level 4 */
    p += 7;
    *p++ = (unsigned char)(0x02 | (tok ? 0xc0 : 0)); /* clean session (+ username, password) */
    *p++ = (unsigned char)(opt.keepalive >> 8);
    *p++ = (unsigned char)opt.keepalive;
    put_str(&p, id);
    if (tok) {
        put_str(&p, user);
        put_str(&p, tok);
        free(tok);
    }
    d->pkt_len = (int)(p - d->pkt);
}

/* Closes d's socket: a disconnect we asked for (the churners), or one we
 * did not (counted as an error while the run lasts). */
static void dev_close(struct worker *w, struct dev *d, int asked, const char *why)
{
    if (d->st == F_UP) atomic_fetch_sub(&n_fleet_up, 1);
    if (d->st == F_TCP || d->st == F_CONNECTING) w->connecting--;
    if (d->fd >= 0) close(d->fd); /* also takes it out of the epoll set */
    d->fd = -1;
    d->st = F_DOWN;
    d->down_ns = bench_now_ns();
    if (asked) {
        ring_push(&w->down, d->idx);
    } else if (atomic_load(&phase) < PH_DONE) {
        atomic_fetch_add(&n_unexpected_disc, 1);
        note(w, "pu%05d:d: disconnected (%s)", d->idx, why);
    }
}

static int dev_write(struct dev *d, const void *buf, size_t len)
{
    ssize_t n = write(d->fd, buf, len);
    if (n == (ssize_t)len) d->last_out_ns = bench_now_ns();
    return n == (ssize_t)len ? 0 : -1;
}

/* Starts d's TCP connect (non-blocking); the CONNECT follows once the
 * socket is writable. */
static int dev_connect(struct worker *w, struct dev *d)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        atomic_fetch_add(&n_connect_fail, 1);
        note(w, "pu%05d:d: socket: %s", d->idx, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    d->conn_ns = bench_now_ns();
    if (connect(fd, (struct sockaddr *)&broker_addr, sizeof broker_addr) != 0 &&
        errno != EINPROGRESS) {
        atomic_fetch_add(&n_connect_fail, 1);
        note(w, "pu%05d:d: connect: %s", d->idx, strerror(errno));
        close(fd);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = d};
    if (epoll_ctl(w->loop.ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        bench_die("epoll_ctl: %s", strerror(errno));
    d->fd = fd;
    d->st = F_TCP;
    d->pkt_sent = 0;
    d->rlen = 0;
    w->connecting++;
    return 0;
}

static void dev_writable(struct worker *w, struct dev *d)
{
    if (d->st != F_TCP) return;
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
        atomic_fetch_add(&n_connect_fail, 1);
        note(w, "pu%05d:d: connect: %s", d->idx, strerror(err ? err : errno));
        dev_close(w, d, 0, "connect failed");
        return;
    }
    ssize_t n = write(d->fd, d->pkt + d->pkt_sent, (size_t)(d->pkt_len - d->pkt_sent));
    if (n < 0 && errno != EAGAIN) {
        dev_close(w, d, 0, strerror(errno));
        return;
    }
    if (n > 0) d->pkt_sent += (int)n;
    if (d->pkt_sent < d->pkt_len) return;
    d->st = F_CONNECTING;
    d->last_out_ns = bench_now_ns();
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = d};
    epoll_ctl(w->loop.ep, EPOLL_CTL_MOD, d->fd, &ev);
}

static void dev_readable(struct worker *w, struct dev *d)
{
    for (;;) {
        ssize_t n = read(d->fd, d->rb + d->rlen, sizeof d->rb - (size_t)d->rlen);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            dev_close(w, d, 0, n == 0 ? "closed by the broker" : strerror(errno));
            return;
        }
        if (n < 0) return;
        d->rlen += (int)n;
        /* Whole packets: only CONNACK and PINGRESP are expected. */
        while (d->rlen >= 2) {
            int type = d->rb[0] >> 4, len = d->rb[1];
            if (len > 127 || 2 + len > (int)sizeof d->rb) {
                dev_close(w, d, 0, "unexpected large packet");
                return;
            }
            if (d->rlen < 2 + len) break;
            if (type == 2) { /* CONNACK */
                if (len != 2 || d->rb[3] != 0 || d->st != F_CONNECTING) {
                    atomic_fetch_add(&n_refused, 1);
                    note(w, "pu%05d:d: CONNACK refused: %s", d->idx,
                         len == 2 ? mosquitto_connack_string(d->rb[3]) : "malformed");
                    dev_close(w, d, 0, "refused");
                    return;
                }
                uint64_t now = bench_now_ns();
                int k = win_of(now);
                if (atomic_load(&phase) == PH_CONNECT)
                    bench_samples_add(&w->connlat_burst, now - d->conn_ns);
                else if (k >= 0)
                    bench_samples_add(&w->connlat[k], now - d->conn_ns);
                d->st = F_UP;
                w->connecting--;
                atomic_fetch_add(&n_connacks, 1);
                atomic_fetch_add(&n_fleet_up, 1);
                if (d->idx < opt.churners) ring_push(&w->up, d->idx);
            } else if (type != 13) { /* not a PINGRESP */
                atomic_fetch_add(&n_other, 1);
            }
            d->rlen -= 2 + len;
            memmove(d->rb, d->rb + 2 + len, (size_t)d->rlen);
        }
    }
}

/* PINGREQ from every connected device silent for a keepalive. */
static void dev_keepalive(struct worker *w, uint64_t now)
{
    static const unsigned char ping[2] = {0xc0, 0};
    uint64_t ka = (uint64_t)opt.keepalive * 1000000000u;
    for (int i = 0; i < opt.devices; i++) {
        struct dev *d = &devs[i];
        if (d->st == F_UP && now - d->last_out_ns >= ka && dev_write(d, ping, 2))
            dev_close(w, d, 0, "PINGREQ write failed");
    }
}

/* One churn step: disconnect slots due by the schedule take the churner
 * connected the longest; churners away for churn_off_ms reconnect. */
static uint64_t churn(struct worker *w, uint64_t now)
{
    static const unsigned char disconnect[2] = {0xe0, 0};
    uint64_t timeout = UINT64_MAX;
    if (now >= churn_start_ns && now < churn_end_ns) {
        double slot_ns = 2e9 / opt.churn_rate;
        uint64_t due = (uint64_t)((double)(now - churn_start_ns) / slot_ns) + 1;
        while (w->churn_issued < due) {
            w->churn_issued++;
            int i = ring_front(&w->up);
            if (i < 0) {
                atomic_fetch_add(&n_churn_skipped, 1); /* every churner is away */
                continue;
            }
            ring_pop(&w->up);
            struct dev *d = &devs[i];
            if (d->st != F_UP) continue; /* went away on its own */
            /* DISCONNECT, then close: a clean MQTT disconnect. */
            dev_write(d, disconnect, 2);
            atomic_fetch_add_explicit(&n_disconnects, 1, memory_order_relaxed);
            dev_close(w, d, 1, NULL);
        }
        uint64_t next = churn_start_ns + (uint64_t)((double)w->churn_issued * slot_ns);
        timeout = next > now ? next - now : 0;
    }
    uint64_t off = (uint64_t)opt.churn_off_ms * 1000000u;
    for (int i; (i = ring_front(&w->down)) >= 0;) {
        struct dev *d = &devs[i];
        if (d->st != F_DOWN) {
            ring_pop(&w->down);
            continue;
        }
        if (d->down_ns + off > now) {
            uint64_t t = d->down_ns + off - now;
            if (t < timeout) timeout = t;
            break;
        }
        ring_pop(&w->down);
        atomic_fetch_add_explicit(&n_connects, 1, memory_order_relaxed);
        dev_connect(w, d);
    }
    return timeout;
}

static void *fleet_main(void *arg)
{
    struct worker *w = arg;
    uint64_t last_misc = bench_now_ns();
    int ph, next_connect = 0;
    while ((ph = atomic_load(&phase)) != PH_DONE && !bench_stopping()) {
        uint64_t now = bench_now_ns(), timeout = 10000000;
        while (next_connect < opt.devices && w->connecting < opt.connect_parallel)
            if (dev_connect(w, &devs[next_connect++])) bench_stop();
        if (ph == PH_RUN && opt.churners > 0 && opt.churn_rate > 0) {
            uint64_t t = churn(w, now);
            if (t < timeout) timeout = t;
        }
        struct epoll_event evs[256];
        struct timespec ts = {(time_t)(timeout / 1000000000u), (long)(timeout % 1000000000u)};
        int n = epoll_pwait2(w->loop.ep, evs, 256, &ts, NULL);
        if (n < 0 && errno != EINTR) bench_die("epoll_pwait2: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            struct dev *d = evs[k].data.ptr;
            if (d->fd < 0) continue;
            if (evs[k].events & EPOLLOUT) dev_writable(w, d);
            if (d->fd >= 0 && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && d->st != F_TCP)
                dev_readable(w, d);
            else if (d->fd >= 0 && (evs[k].events & (EPOLLERR | EPOLLHUP)))
                dev_writable(w, d); /* the connect failed: SO_ERROR says why */
        }
        if (now - last_misc > 1000000000u) {
            dev_keepalive(w, now);
            last_misc = now;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */

static void sleep_until(uint64_t t)
{
    while (bench_now_ns() < t && !bench_stopping()) {
        uint64_t left = t - bench_now_ns();
        usleep(left > 5000000 ? 5000 : (useconds_t)(left / 1000 + 1));
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: presence_bench [options]\n"
            "  --mode plain|mqchat       (default plain)\n"
            "  --host H --port P         broker (default 127.0.0.1:1883)\n"
            "  --secret-file F           HS256 secret of the broker (mqchat)\n"
            "  --devices N               idle devices (default 10000)\n"
            "  --churn-devices N         how many of them reconnect in the churn window (1000)\n"
            "  --churn-rate R            connect + disconnect events/s (default 1000; 0: no "
            "churn window)\n"
            "  --churn-off-ms MS         a churner stays away this long (default 1000)\n"
            "  --pairs N                 1:1 pairs (default 100)\n"
            "  --rate R                  messages/s in total (default 2000)\n"
            "  --window W                sends waiting for an ack per sender (default 32)\n"
            "  --body B                  body bytes (default 300, min %d)\n"
            "  --duration S              each measured window (default 20)\n"
            "  --warmup S                unmeasured seconds before each window (default 2)\n"
            "  --keepalive S             (default 60)\n"
            "  --connect-parallel N      CONNECTs waiting for CONNACK at the start (20)\n"
            "  --prefix P                mqchat topic prefix (default mqchat/v1)\n"
            "  --redis HOST:PORT         Redis to read INFO commandstats from\n"
            "  --broker-pid PID --redis-pid PID   CPU of the broker and of Redis\n",
            BENCH_BODY_HDR);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct bench_opt opts[] = {
        {"mode", BENCH_OPT_CHOICE, &opt.mode, "plain|mqchat"},
        {"host", BENCH_OPT_STR, &opt.host, NULL},
        {"port", BENCH_OPT_INT, &opt.port, NULL},
        {"secret-file", BENCH_OPT_STR, &opt.secret_file, NULL},
        {"devices", BENCH_OPT_INT, &opt.devices, NULL},
        {"churn-devices", BENCH_OPT_INT, &opt.churners, NULL},
        {"churn-rate", BENCH_OPT_DOUBLE, &opt.churn_rate, NULL},
        {"churn-off-ms", BENCH_OPT_INT, &opt.churn_off_ms, NULL},
        {"pairs", BENCH_OPT_INT, &opt.pairs, NULL},
        {"rate", BENCH_OPT_DOUBLE, &opt.rate, NULL},
        {"window", BENCH_OPT_INT, &opt.window, NULL},
        {"body", BENCH_OPT_INT, &opt.body, NULL},
        {"duration", BENCH_OPT_DOUBLE, &opt.duration, NULL},
        {"warmup", BENCH_OPT_DOUBLE, &opt.warmup, NULL},
        {"keepalive", BENCH_OPT_INT, &opt.keepalive, NULL},
        {"connect-parallel", BENCH_OPT_INT, &opt.connect_parallel, NULL},
        {"prefix", BENCH_OPT_STR, &opt.prefix, NULL},
        {"redis", BENCH_OPT_STR, &opt.redis, NULL},
        {"broker-pid", BENCH_OPT_INT, &opt.broker_pid, NULL},
        {"redis-pid", BENCH_OPT_INT, &opt.redis_pid, NULL},
        {NULL, 0, NULL, NULL}};
    if (bench_parse_opts(argc, argv, opts) < 0) usage();
    if (opt.devices < 0 || opt.devices > 99999 || opt.churners < 0 || opt.churners > opt.devices ||
        opt.churn_rate < 0 || opt.churn_off_ms < 0 || opt.pairs < 1 || opt.pairs > 9999 ||
        opt.rate <= 0 || opt.window < 1 || opt.body < BENCH_BODY_HDR || opt.body > 65536 ||
        opt.duration <= 0 || opt.warmup < 0 || opt.keepalive < 5 || opt.connect_parallel < 1 ||
        opt.port <= 0)
        usage();
    if (opt.mode == MODE_MQCHAT && !opt.secret_file) bench_die("--mode mqchat needs --secret-file");
}

static void worker_init(struct worker *w, int maxc)
{
    w->c = calloc((size_t)maxc + 1, sizeof *w->c);
    if (!w->c) bench_die("out of memory");
    bench_loop_init(&w->loop, maxc);
}

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

int main(int argc, char **argv)
{
    bench_init("presence_bench");
    parse_args(argc, argv);
    run_nonce = bench_run_nonce();
    for (int k = 0; k < NWIN; k++)
        win_start_ns[k] = win_end_ns[k] = UINT64_MAX;
    churn_start_ns = churn_end_ns = UINT64_MAX;
    body_tmpl = bench_body_template(opt.body);
    int do_churn = opt.churners > 0 && opt.churn_rate > 0;
    int nwin = do_churn ? 2 : 1;

    mosquitto_lib_init();
    int ntot = 2 * opt.pairs + opt.devices;
    broker_addr.sin_family = AF_INET;
    broker_addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &broker_addr.sin_addr) != 1)
        bench_die("--host %s: an IPv4 address, please", opt.host);
    clients = calloc((size_t)opt.pairs * 2, sizeof *clients);
    devs = calloc((size_t)opt.devices + 1, sizeof *devs);
    if (!clients || !devs) bench_die("out of memory");
    worker_init(&wmsg, 2 * opt.pairs);
    worker_init(&wfleet, 0);
    ring_init(&wfleet.up, opt.churners);
    ring_init(&wfleet.down, opt.churners);
    uint64_t t_tok = bench_now_ns();
    for (int i = 0; i < opt.pairs; i++) {
        make_client(&clients[i], &wmsg, K_SENDER, i);
        make_client(&clients[opt.pairs + i], &wmsg, K_RECEIVER, i);
    }
    for (int i = 0; i < opt.pairs; i++) {
        wmsg.c[wmsg.nc++] = &clients[opt.pairs + i];
        wmsg.c[wmsg.nc++] = &clients[i];
    }
    for (int i = 0; i < wmsg.nc; i++)
        bench_loop_add(&wmsg.loop, &wmsg.c[i]->conn);
    for (int i = 0; i < opt.devices; i++)
        dev_init(&devs[i], i);
    fprintf(stderr, "presence_bench: %d clients set up in %.2f s\n", ntot,
            secs(bench_now_ns() - t_tok));

    /* Connect: the pairs, the fleet. */
    struct snap s_c0, s_c1;
    take_snap(&s_c0);
    if (pthread_create(&wmsg.th, NULL, msg_main, &wmsg) ||
        pthread_create(&wfleet.th, NULL, fleet_main, &wfleet))
        bench_die("pthread_create failed");
    uint64_t t_conn_done = 0;
    for (;;) {
        uint64_t up = atomic_load(&n_fleet_up), ready = atomic_load(&n_pairs_ready);
        if (up == (uint64_t)opt.devices && ready == 2 * (uint64_t)opt.pairs) break;
        if (atomic_load(&n_refused) || atomic_load(&n_unexpected_disc) ||
            atomic_load(&n_connect_fail) || bench_stopping() ||
            bench_now_ns() - s_c0.t > 120000000000ull) {
            atomic_store(&phase, PH_DONE);
            pthread_join(wmsg.th, NULL);
            pthread_join(wfleet.th, NULL);
            if (wmsg.errbuf[0]) fprintf(stderr, "  %s\n", wmsg.errbuf);
            if (wfleet.errbuf[0]) fprintf(stderr, "  %s\n", wfleet.errbuf);
            bench_die("connect failed: %" PRIu64 "/%d devices and %" PRIu64
                      "/%d pair clients ready",
                      up, opt.devices, ready, 2 * opt.pairs);
        }
        usleep(2000);
    }
    t_conn_done = bench_now_ns();
    /* Let the broker's last Redis pipeline of the connect burst go out. */
    sleep_until(t_conn_done + 1000000000u);
    take_snap(&s_c1);
    double conn_s = secs(t_conn_done - s_c0.t);
    uint64_t set_c;
    char by_c[1024];
    uint64_t cmds_c = rstats_delta(&s_c0.rs, &s_c1.rs, &set_c, by_c, sizeof by_c);
    int nconn = opt.devices + 2 * opt.pairs;
    printf("mode %s: %d devices + %d pair clients connected in %.2f s (%.0f/s)\n",
           opt.mode == MODE_PLAIN ? "plain" : "mqchat", opt.devices, 2 * opt.pairs, conn_s,
           (double)nconn / conn_s);
    if (opt.redis)
        printf("  connect burst  redis %" PRIu64 " commands (%.2f per connect: %s)\n", cmds_c,
               (double)cmds_c / nconn, by_c);
    struct bench_samples *cb = &wfleet.connlat_burst;
    bench_samples_sort(cb);
    printf("  connect burst  broker %.1f us per connect (event-loop thread %.1f); device connect "
           "-> CONNACK us p50 %u  p99 "
           "%u  max %u (%d in parallel)\n",
           (double)(s_c1.broker - s_c0.broker) / 1e3 / nconn,
           (double)(s_c1.broker_main - s_c0.broker_main) / 1e3 / nconn, bench_percentile(cb, 50),
           bench_percentile(cb, 99), bench_samples_max(cb), opt.connect_parallel);
    printf("RESULT mode=%s window=connect devices=%d clients=%d seconds=%.2f per_s=%.0f "
           "redis_ok=%d redis_cmds=%" PRIu64 " redis_cmds_per_connect=%.3f redis_by_cmd=%s "
           "broker_us_per_connect=%.1f connack_p50_us=%u connack_p99_us=%u\n",
           opt.mode == MODE_PLAIN ? "plain" : "mqchat", opt.devices, nconn, conn_s,
           (double)nconn / conn_s, s_c1.rs.ok, cmds_c, (double)cmds_c / nconn, by_c,
           (double)(s_c1.broker - s_c0.broker) / 1e3 / nconn, bench_percentile(cb, 50),
           bench_percentile(cb, 99));
    fflush(stdout);

    /* The timeline. */
    uint64_t t = bench_now_ns(), d = (uint64_t)(opt.duration * 1e9),
             wu = (uint64_t)(opt.warmup * 1e9);
    send_start_ns = t;
    win_start_ns[0] = t + wu;
    win_end_ns[0] = win_start_ns[0] + d;
    if (do_churn) {
        churn_start_ns = win_end_ns[0];
        win_start_ns[1] = churn_start_ns + wu;
        win_end_ns[1] = win_start_ns[1] + d;
        churn_end_ns = win_end_ns[1];
    }
    atomic_store(&phase, PH_RUN);
    struct snap s0[NWIN], s1[NWIN];
    for (int k = 0; k < nwin; k++) {
        sleep_until(win_start_ns[k]);
        take_snap(&s0[k]);
        sleep_until(win_end_ns[k]);
        take_snap(&s1[k]);
    }
    atomic_store(&phase, PH_DRAIN);
    /* Drain: wait for the messages in flight (at most 3 s). */
    uint64_t dend = bench_now_ns() + 3000000000ull;
    while (bench_now_ns() < dend && !bench_stopping()) {
        uint64_t sent = atomic_load(&n_sent);
        if (atomic_load(&n_received) >= sent && atomic_load(&n_acked) >= sent) break;
        usleep(10000);
    }
    atomic_store(&phase, PH_DONE);
    pthread_join(wmsg.th, NULL);
    pthread_join(wfleet.th, NULL);
    if (wmsg.errbuf[0]) fprintf(stderr, "presence_bench: messages: %s\n", wmsg.errbuf);
    if (wfleet.errbuf[0]) fprintf(stderr, "presence_bench: fleet: %s\n", wfleet.errbuf);

    /* Report. */
    const char *mode = opt.mode == MODE_PLAIN ? "plain" : "mqchat";
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double steady_broker_ns = 0, steady_redis_ns = 0, steady_main_ns = 0;
    for (int k = 0; k < nwin; k++) {
        struct snap *a = &s0[k], *b = &s1[k];
        double sec = secs(b->t - a->t);
        struct bench_samples *lat = &wmsg.lat[k], *cl = &wfleet.connlat[k];
        bench_samples_sort(lat);
        bench_samples_sort(cl);
        uint64_t events = (b->connects - a->connects) + (b->disconnects - a->disconnects);
        uint64_t skipped = b->skipped - a->skipped;
        uint64_t set;
        char by[1024];
        uint64_t cmds = rstats_delta(&a->rs, &b->rs, &set, by, sizeof by);
        double broker_ns = (double)(b->broker - a->broker);
        double redis_ns = (double)(b->redis - a->redis);
        double main_ns = (double)(b->broker_main - a->broker_main);
        if (k == 0) {
            steady_main_ns = main_ns;
            steady_broker_ns = broker_ns;
            steady_redis_ns = redis_ns;
        }
        double broker_pct = broker_ns / 1e9 / sec * 100;
        double redis_pct = (double)(b->redis - a->redis) / 1e9 / sec * 100;
        double self_pct = (double)(b->self - a->self) / 1e9 / sec * 100;
        double machine = b->mtotal > a->mtotal ? 100.0 * (double)(b->mbusy - a->mbusy) /
                                                     (double)(b->mtotal - a->mtotal)
                                               : 0;
        double per_dev_min = opt.devices ? (double)cmds / opt.devices / (sec / 60) : 0;
        double nonlive_per_dev_min =
            opt.devices ? (double)(cmds - set) / opt.devices / (sec / 60) : 0;
        double cmds_per_event = events ? (double)cmds / (double)events : 0;
        double nonlive_per_event = events ? (double)(cmds - set) / (double)events : 0;
        double us_per_event =
            events && k > 0 ? (broker_ns - steady_broker_ns) / 1e3 / (double)events : 0;
        double main_us_per_event =
            events && k > 0 ? (main_ns - steady_main_ns) / 1e3 / (double)events : 0;
        double redis_us_per_event =
            events && k > 0 ? (redis_ns - steady_redis_ns) / 1e3 / (double)events : 0;
        double delivered = (double)wmsg.received_win[k] / sec;
        /* Redis reads of client input, minus the one of our closing INFO */
        uint64_t reads = b->rs.reads > a->rs.reads ? b->rs.reads - a->rs.reads - 1 : 0;
        printf("window %s (%.1f s): %s\n", win_name[k], sec,
               k == 0 ? "devices connected and silent, no churn"
                      : "churn: devices disconnecting and reconnecting");
        printf("  messages       offered %.0f/s  delivered %.0f/s  latency us p50 %u  p99 %u  "
               "p99.9 %u  max %u  (%zu samples)\n",
               opt.rate, delivered, bench_percentile(lat, 50), bench_percentile(lat, 99),
               bench_percentile(lat, 99.9), bench_samples_max(lat), lat->n);
        if (k > 0)
            printf("  churn          %" PRIu64 " events (%.0f/s: %" PRIu64 " connects, %" PRIu64
                   " disconnects; %" PRIu64 " CONNACKs), %" PRIu64 " slots skipped\n",
                   events, (double)events / sec, b->connects - a->connects,
                   b->disconnects - a->disconnects, b->connacks - a->connacks, skipped);
        if (k > 0)
            printf("  reconnect      connect -> CONNACK us p50 %u  p99 %u  max %u\n",
                   bench_percentile(cl, 50), bench_percentile(cl, 99), bench_samples_max(cl));
        if (opt.redis) {
            printf("  redis          %" PRIu64 " commands (%s)", cmds, by);
            if (k == 0)
                printf("; per idle device per minute %.5f, without the liveness SETs %.5f\n",
                       per_dev_min, nonlive_per_dev_min);
            else
                printf("; per event %.3f, without the liveness SETs %.3f\n", cmds_per_event,
                       nonlive_per_event);
            printf("  redis reads    %" PRIu64 " (about one per pipeline the plugin sent)", reads);
            if (events) printf(", %.2f per event", (double)reads / (double)events);
            printf("\n");
        }
        printf("  cpu            broker %.1f%%  redis %.1f%%  bench %.1f%% (of one core); machine "
               "%.0f%% busy (all %ld cores)\n",
               broker_pct, redis_pct, self_pct, machine, ncpu);
        if (k > 0)
            printf(
                "  cpu per event  broker %.1f us (over the steady window; event-loop thread %.1f, "
                "other threads %.1f), redis %.1f us\n",
                us_per_event, main_us_per_event, us_per_event - main_us_per_event,
                redis_us_per_event);
        printf("RESULT mode=%s window=%s seconds=%.2f devices=%d offered=%.0f "
               "delivered_per_s=%.0f p50_us=%u p99_us=%u p999_us=%u max_us=%u samples=%zu "
               "events=%" PRIu64 " events_per_s=%.0f skipped=%" PRIu64 " redis_ok=%d "
               "redis_cmds=%" PRIu64 " redis_set=%" PRIu64 " redis_reads=%" PRIu64
               " redis_by_cmd=%s "
               "redis_cmds_per_event=%.3f redis_nonlive_per_event=%.3f "
               "idle_cmds_per_dev_min=%.5f idle_nonlive_per_dev_min=%.5f broker_cpu_pct=%.1f "
               "broker_us_per_event=%.1f broker_main_us_per_event=%.1f redis_cpu_pct=%.1f "
               "redis_us_per_event=%.1f "
               "bench_cpu_pct=%.1f machine_busy_pct=%.0f connack_p50_us=%u connack_p99_us=%u\n",
               mode, win_name[k], sec, opt.devices, opt.rate, delivered, bench_percentile(lat, 50),
               bench_percentile(lat, 99), bench_percentile(lat, 99.9), bench_samples_max(lat),
               lat->n, events, (double)events / sec, skipped, a->rs.ok && b->rs.ok, cmds, set,
               reads, by, cmds_per_event, nonlive_per_event, per_dev_min, nonlive_per_dev_min,
               broker_pct, us_per_event, main_us_per_event, redis_pct, redis_us_per_event, self_pct,
               machine, bench_percentile(cl, 50), bench_percentile(cl, 99));
    }
    uint64_t sent = atomic_load(&n_sent), received = atomic_load(&n_received);
    printf("totals: sent %" PRIu64 " acked %" PRIu64 " received %" PRIu64 " backlog max %" PRIu64
           "; errors: refused %" PRIu64 " unexpected disconnects %" PRIu64 " connect failures "
           "%" PRIu64 " ack %" PRIu64 " dup/out-of-order %" PRIu64 " bad %" PRIu64
           " other msgs %" PRIu64 "\n",
           sent, atomic_load(&n_acked), received, wmsg.pacer.backlog_max, atomic_load(&n_refused),
           atomic_load(&n_unexpected_disc), atomic_load(&n_connect_fail),
           atomic_load(&n_ack_errors), atomic_load(&n_dup), atomic_load(&n_bad),
           atomic_load(&n_other));
    printf("RESULT mode=%s window=totals sent=%" PRIu64 " received=%" PRIu64 " refused=%" PRIu64
           " disconnects=%" PRIu64 " connect_failures=%" PRIu64 " ack_errors=%" PRIu64
           " dup=%" PRIu64 " bad=%" PRIu64 " backlog_max=%" PRIu64 "\n",
           mode, sent, received, atomic_load(&n_refused), atomic_load(&n_unexpected_disc),
           atomic_load(&n_connect_fail), atomic_load(&n_ack_errors), atomic_load(&n_dup),
           atomic_load(&n_bad), wmsg.pacer.backlog_max);
    fflush(stdout);
    /* The process exit closes the sockets; the broker sees them go. */
    int bad = atomic_load(&n_refused) || atomic_load(&n_unexpected_disc) ||
              atomic_load(&n_connect_fail) || atomic_load(&n_ack_errors) || atomic_load(&n_dup) ||
              atomic_load(&n_bad) || wmsg.received_win[0] == 0;
    _exit(bad ? 1 : 0);
}
