/* group_bench — large groups through a running broker.
 *
 * Against mosquitto + mqchat already running (run-large-bench.sh starts
 * it, and for --scenario interference plain mosquitto on --plain-port),
 * with libmosquitto clients driven by bench_util's epoll loop. Users and
 * groups are made through the protocol (docs/PROTOCOL.md): GroupCreate
 * with at most 1,000 member ids, then GroupAdd batches of 1,000; a group
 * of 256 members or more is large from its creation (the plugin's
 * large_group_members default), so its messages are stored once and go
 * live to the online members' devices through the plugin's lane, at most
 * fanout_per_pass publishes per loop pass.
 *
 * --scenario fanout (default)
 *   One owner device (user gf00000) creates a group of 1 + --online +
 *   --offline members; --online member devices (gf00001...) connect (at
 *   most --connect-parallel waiting for CONNACK/SUBACK at a time) and
 *   subscribe to their inbox topics; the --offline members never connect.
 *   Then the owner sends --warmup-msgs messages that are not counted and
 *   --messages messages one at a time: the next one leaves when the last
 *   online device got the previous one (or after --msg-timeout s). Per
 *   message: send -> first device, send -> last device, first -> last,
 *   and the longest silence between two consecutive deliveries of it.
 *   deliveries/s = deliveries of the counted messages / the wall time they
 *   took (without the --pause-ms pauses after each message, default 0: the
 *   next message then meets the broker still reading the last one's
 *   PUBACKs). Then a burst: --burst messages sent back to back, and the
 *   time until every device had all of them (the lane queues them; several
 *   loop passes per broadcast). Silences of 20 ms or more while a
 *   broadcast was incomplete are counted and the longest listed (a
 *   broadcast spanning several loop passes depends on socket activity to
 *   come back to the next pass; mosquitto's loop otherwise sleeps up to
 *   100 ms). Last, --typing Typing notices one at a time: the lane
 *   broadcasts them at QoS 0, so the devices send no PUBACKs and nothing
 *   but the broadcast itself wakes the loop for its next pass.
 *
 * --scenario catchup
 *   A poster device (cp) creates --convs large groups of the catch-up user
 *   (cu), the poster and --filler other users (never connected). cu's
 *   device connects once, syncs its inbox (the CREATED events), acks its
 *   cursor and goes away; the poster sends --conv-msgs messages to each
 *   group. Then cu reconnects and catches up as a device does: one
 *   SyncRequest{after its cursor, positions: true}, then for each
 *   position ConversationPull pages (--pull-limit, 0 = the server's
 *   default) and a PositionAck per page, one request at a time. Printed:
 *   wall time from the SyncRequest to the last answer, round trips,
 *   messages; then the same again (another --conv-msgs each) with every
 *   pull in flight at once (acks sent without waiting). Each run is
 *   checked: every message once, in seq order, and a final
 *   SyncRequest{positions: true} lists no conversation.
 *
 * --scenario interference
 *   --pairs 1:1 pairs at --pair-rate msgs/s in total (open loop, at most
 *   --window waiting per sender; mqchat: SendRequest -> ServerEvent,
 *   SendAck ends in-flight; plain: raw QoS-1 publish on bench/<i>,
 *   PUBACK ends in-flight), measured in three windows of --duration s
 *   (after --warmup s each), one after the other in this process:
 *     idle   mqchat, 1:1 only, while a --members group (owner gi00000)
 *            has --group-online member devices connected and silent;
 *     group  the same 1:1 load while the owner sends --group-rate msgs/s
 *            to the group (open loop): --group-online deliveries each;
 *     plain  the same 1:1 load against plain mosquitto (--plain-port).
 *   1:1 latency: from the time a message was due (stamped in its body) to
 *   its arrival, for messages due in the measured window.
 *   Group and pair clients run on two threads (two epoll loops), so the
 *   1:1 receivers do not wait behind the group deliveries in the bench.
 *
 * Every wait is bounded. Output: human-readable lines, then RESULT lines
 *   RESULT scenario=... key=value ...
 * for scripts. Exit status 0 when the run had no errors (no refused
 * connect or request, no unexpected disconnect, no missing, duplicate or
 * out-of-order delivery); it asserts nothing about speed.
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

#define MAX_TOPIC 192
#define RESP_MAX 1024 /* answers received and not yet taken, per control client */
#define RING 8192     /* group messages tracked; a run sends fewer */
#define NWIN 3
#define GAPS_KEPT 32
#define GROUP_WINDOW 64 /* group sends waiting for their SendAck */
#define MS 1000000ull
#define SEC 1000000000ull

enum scenario { SC_FANOUT, SC_CATCHUP, SC_INTERFERENCE };
enum kind { K_CTRL, K_MEMBER, K_PAIR_S, K_PAIR_R };

static struct {
    int scenario;
    const char *host;
    int port, plain_port;
    const char *prefix, *secret_file, *iss, *aud;
    int broker_pid, plain_pid;
    int body, keepalive, connect_parallel, verbose;
    double msg_timeout;
    /* fanout */
    int online, offline, messages, warmup_msgs, burst, typing, pause_ms;
    /* catchup */
    int convs, conv_msgs, filler, pull_limit;
    /* interference */
    int members, group_online, pairs, window;
    double group_rate, pair_rate, duration, warmup;
} opt = {
    .scenario = SC_FANOUT,
    .host = "127.0.0.1",
    .port = 1883,
    .prefix = "mqchat/v1",
    .body = 300,
    .keepalive = 60,
    .connect_parallel = 50,
    .msg_timeout = 10,
    .online = 1000,
    .messages = 200,
    .warmup_msgs = 5,
    .burst = 20,
    .typing = 20,
    .convs = 50,
    .conv_msgs = 100,
    .filler = 255,
    .members = 10000,
    .group_online = 2000,
    .pairs = 50,
    .window = 32,
    .group_rate = 10,
    .pair_rate = 500,
    .duration = 10,
    .warmup = 2,
};

struct side;

/* One MQTT client. */
struct cl {
    struct bench_conn conn;
    struct side *side;
    int kind;  /* enum kind */
    int plain; /* a client of plain mosquitto */
    int idx;   /* pair index */
    char user[24];
    char id[40];
    char send_topic[MAX_TOPIC], req_topic[MAX_TOPIC], sub_topic[MAX_TOPIC];
    char conv[64]; /* pairs: the 1:1 conversation */
    int connected, ready, failed, leaving;
    uint64_t last_seq; /* K_MEMBER: the group's last seq it got */
    Mqchat__V1__Response *resp[RESP_MAX];
    int nresp;
    int inflight; /* pair senders */
    uint64_t next_n, last_n;
    int got_any;
};

/* The clients one thread pumps. */
struct side {
    struct bench_loop loop;
    pthread_t th;
    int ready, failed; /* clients ready (CONNACK, and SUBACK if they subscribe) or refused */
    uint64_t disconnects, bad, other;
    char err[640];
};

static struct side gside, pside; /* group and control clients; 1:1 pairs */

#define note(s, ...) bench_note((s)->err, sizeof(s)->err, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Group deliveries (gside's thread)                                         */

struct gmsg {
    uint64_t n; /* message counter; UINT64_MAX: slot unused */
    uint64_t t_send, t_first, t_last, max_gap;
    uint32_t got, gap_at;
    int win;
};

struct biggap {
    uint64_t n, gap_ns;
    uint32_t at;
};

static struct {
    char conv[64];
    uint32_t expect; /* online member devices */
    struct gmsg ring[RING];
    uint64_t next_n, sent, acked, ack_err, complete, deliveries, late, ooo, gaps, wrong_conv;
    uint64_t outstanding; /* sent, not yet at every device */
    uint64_t last_event;  /* last send or delivery, for the silences */
    uint64_t sil20, sil50, sil90, sil_max;
    struct biggap big[GAPS_KEPT];
    int nbig;
    /* per window: counted messages */
    struct bench_samples last[NWIN], first[NWIN], spread[NWIN], gap[NWIN], ack[NWIN];
    uint64_t wdeliv[NWIN], wmsgs[NWIN];
} G;

/* Typing notices to the group (QoS 0: no PUBACKs), one at a time. */
static struct {
    int active;
    uint32_t got;
    uint64_t t_send, t_first, t_last, max_gap, dup;
    struct bench_samples last, first, gap;
    uint64_t timeouts, stray;
    int round;
    struct biggap pauses[GAPS_KEPT]; /* pauses >= 20 ms: round, ms, after delivery # */
    int npauses;
    uint64_t p20, p50, p90;
} T;

/* 1:1 pairs (pside's thread) */
static struct {
    struct bench_samples lat[NWIN], ack[NWIN];
    uint64_t sent[NWIN], recv[NWIN], meas_recv[NWIN];
    uint64_t ooo, ack_err, acks, pubacks, sent_all, recv_all;
    int rr;
} P;

static unsigned char *body_tmpl;
static uint32_t run_nonce;
static atomic_int shutting_down;
/* the window a sent message counts for, and when it is measured */
static _Atomic int cur_win = -1;
static _Atomic uint64_t meas_start = UINT64_MAX, meas_end = UINT64_MAX;

static int in_meas(uint64_t t)
{
    return t >= atomic_load(&meas_start) && t < atomic_load(&meas_end);
}

static void big_gap(uint64_t n, uint32_t at, uint64_t gap)
{
    int k = G.nbig < GAPS_KEPT ? G.nbig++ : -1;
    if (k < 0) {
        /* keep the largest: replace the smallest if smaller */
        k = 0;
        for (int i = 1; i < GAPS_KEPT; i++)
            if (G.big[i].gap_ns < G.big[k].gap_ns) k = i;
        if (G.big[k].gap_ns >= gap) return;
    }
    G.big[k] = (struct biggap){n, gap, at};
}

static void g_complete(struct gmsg *g)
{
    G.outstanding--;
    G.complete++;
    if (g->win < 0) return;
    bench_samples_add(&G.last[g->win], g->t_last - g->t_send);
    bench_samples_add(&G.first[g->win], g->t_first - g->t_send);
    bench_samples_add(&G.spread[g->win], g->t_last - g->t_first);
    bench_samples_add(&G.gap[g->win], g->max_gap);
    G.wdeliv[g->win] += g->got;
    G.wmsgs[g->win]++;
}

static void group_delivery(struct cl *c, const Mqchat__V1__Message *m)
{
    uint64_t now = bench_now_ns();
    if (!m->conversation_id || strcmp(m->conversation_id, G.conv) != 0) {
        G.wrong_conv++;
        return;
    }
    uint64_t ts, n;
    uint32_t idx;
    if (bench_body_parse(m->body.data, m->body.len, &ts, &idx, &n) < 0) {
        c->side->bad++;
        return;
    }
    if (c->last_seq) {
        if (m->seq <= c->last_seq)
            G.ooo++;
        else if (m->seq != c->last_seq + 1)
            G.gaps += m->seq - c->last_seq - 1;
    }
    if (m->seq > c->last_seq) c->last_seq = m->seq;
    G.deliveries++;
    struct gmsg *g = &G.ring[n % RING];
    if (g->n != n || g->got >= G.expect) {
        G.late++;
        return;
    }
    if (G.outstanding > 0 && G.last_event) {
        uint64_t sil = now - G.last_event;
        if (sil >= 20 * MS) G.sil20++;
        if (sil >= 50 * MS) G.sil50++;
        if (sil >= 90 * MS) G.sil90++;
        if (sil > G.sil_max) G.sil_max = sil;
    }
    G.last_event = now;
    if (!g->got) {
        g->t_first = now;
    } else if (now - g->t_last > g->max_gap) {
        g->max_gap = now - g->t_last;
        g->gap_at = g->got;
    }
    g->t_last = now;
    if (++g->got == G.expect) {
        if (g->max_gap >= 20 * MS) big_gap(n, g->gap_at, g->max_gap);
        g_complete(g);
    }
}

static void typing_delivery(struct cl *c)
{
    uint64_t now = bench_now_ns();
    if (!T.active || T.got >= G.expect) {
        T.stray++;
        return;
    }
    if (!T.got) {
        T.t_first = now;
    } else {
        uint64_t gap = now - T.t_last;
        if (gap > T.max_gap) T.max_gap = gap;
        T.p20 += gap >= 20 * MS;
        T.p50 += gap >= 50 * MS;
        T.p90 += gap >= 90 * MS;
        if (gap >= 20 * MS && T.npauses < GAPS_KEPT)
            T.pauses[T.npauses++] = (struct biggap){(uint64_t)T.round, gap, T.got};
    }
    T.t_last = now;
    T.got++;
}

/* The owner sends group message n, stamped ts (its send or due time). */
static int group_send(struct cl *owner, uint64_t ts, int win)
{
    uint64_t n = G.next_n;
    struct gmsg *g = &G.ring[n % RING];
    if (g->n != UINT64_MAX && g->got < G.expect) return -1; /* the ring is full of stragglers */
    unsigned char body[opt.body];
    memcpy(body, body_tmpl, (size_t)opt.body);
    bench_body_stamp(body, ts, 0, n);
    char cmid[64];
    snprintf(cmid, sizeof cmid, "%08" PRIx32 ".g%" PRIu64, run_nonce, n);
    if (bench_publish_send(owner->conn.m, owner->send_topic, cmid, G.conv, body, opt.body) !=
        MOSQ_ERR_SUCCESS)
        return -1;
    bench_conn_touch(&owner->conn);
    *g = (struct gmsg){.n = n, .t_send = ts, .win = win};
    G.next_n++;
    G.sent++;
    if (!G.outstanding++) G.last_event = bench_now_ns();
    return 0;
}

/* ------------------------------------------------------------------------ */
/* libmosquitto callbacks                                                   */

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
    struct cl *c = ud;
    if (rc != 0) {
        note(c->side, "%s: CONNACK refused: %s", c->id, mosquitto_connack_string(rc));
        c->failed = 1;
        c->side->failed++;
        return;
    }
    c->connected = 1;
    if (c->kind == K_MEMBER || c->kind == K_PAIR_R) {
        if (mosquitto_subscribe(m, NULL, c->sub_topic, 1) != MOSQ_ERR_SUCCESS) {
            note(c->side, "%s: subscribe failed", c->id);
            c->failed = 1;
            c->side->failed++;
        }
        return;
    }
    c->ready = 1;
    c->side->ready++;
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int qos_count,
                         const int *granted_qos)
{
    struct cl *c = ud;
    if (!bench_suback_ok(qos_count, granted_qos)) {
        note(c->side, "%s: subscription to %s refused", c->id, c->sub_topic);
        c->failed = 1;
        c->side->failed++;
        return;
    }
    if (!c->ready) {
        c->ready = 1;
        c->side->ready++;
    }
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc)
{
    struct cl *c = ud;
    c->connected = 0;
    if (c->ready) c->side->ready--;
    c->ready = 0;
    if (c->leaving || atomic_load(&shutting_down)) return;
    c->side->disconnects++;
    note(c->side, "%s: disconnected (%s)", c->id, mosquitto_strerror(rc));
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
    struct cl *c = ud;
    if (c->kind == K_PAIR_S && c->plain) {
        c->inflight--;
        P.pubacks++;
    }
}

/* A 1:1 delivery to receiver c. */
static void pair_delivery(struct cl *c, const unsigned char *body, size_t len)
{
    uint64_t now = bench_now_ns(), ts, n;
    uint32_t from;
    if (bench_body_parse(body, len, &ts, &from, &n) < 0 || (int)from != c->idx) {
        c->side->bad++;
        return;
    }
    if (c->got_any && n <= c->last_n)
        P.ooo++;
    else
        c->last_n = n;
    c->got_any = 1;
    P.recv_all++;
    int w = atomic_load(&cur_win);
    if (w >= 0) {
        P.recv[w]++;
        if (in_meas(ts)) {
            P.meas_recv[w]++;
            bench_samples_add(&P.lat[w], now > ts ? now - ts : 0);
        }
    }
}

static void ctrl_ack(struct cl *c, const Mqchat__V1__SendAck *ack)
{
    /* client_msg_id: nonce.g<n> (group) */
    const char *p = ack->client_msg_id ? strstr(ack->client_msg_id, ".g") : NULL;
    G.acked++;
    if (ack->error || ack->seq == 0) {
        G.ack_err++;
        note(c->side, "%s: SendAck error %d: %s", c->id, ack->error ? (int)ack->error->code : 0,
             ack->error && ack->error->message ? ack->error->message : "(seq 0)");
        return;
    }
    if (!p) return;
    uint64_t n = strtoull(p + 2, NULL, 10), now = bench_now_ns();
    struct gmsg *g = &G.ring[n % RING];
    if (g->n == n && g->win >= 0) bench_samples_add(&G.ack[g->win], now - g->t_send);
}

static void pair_ack(struct cl *c, const Mqchat__V1__SendAck *ack)
{
    c->inflight--;
    P.acks++;
    if (ack->error || ack->seq == 0) {
        P.ack_err++;
        note(c->side, "%s: SendAck error %d: %s", c->id, ack->error ? (int)ack->error->code : 0,
             ack->error && ack->error->message ? ack->error->message : "(seq 0)");
        return;
    }
    /* client_msg_id: nonce.n.ts (hex) */
    const char *p = ack->client_msg_id ? strrchr(ack->client_msg_id, '.') : NULL;
    int w = atomic_load(&cur_win);
    if (p && w >= 0) {
        uint64_t ts = strtoull(p + 1, NULL, 16), now = bench_now_ns();
        if (in_meas(ts)) bench_samples_add(&P.ack[w], now > ts ? now - ts : 0);
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg)
{
    struct cl *c = ud;
    struct side *s = c->side;
    if (c->plain) {
        if (c->kind == K_PAIR_R)
            pair_delivery(c, msg->payload, (size_t)msg->payloadlen);
        else
            s->other++;
        return;
    }
    if (bench_is_ack_topic(msg->topic)) {
        Mqchat__V1__SendAck *ack =
            mqchat__v1__send_ack__unpack(NULL, (size_t)msg->payloadlen, msg->payload);
        if (!ack) {
            s->bad++;
            return;
        }
        if (c->kind == K_CTRL)
            ctrl_ack(c, ack);
        else if (c->kind == K_PAIR_S)
            pair_ack(c, ack);
        else
            s->other++;
        mqchat__v1__send_ack__free_unpacked(ack, NULL);
        return;
    }
    if (ends_with(msg->topic, "/resp")) {
        Mqchat__V1__Response *r =
            mqchat__v1__response__unpack(NULL, (size_t)msg->payloadlen, msg->payload);
        if (!r) {
            s->bad++;
            return;
        }
        if (c->nresp == RESP_MAX) {
            note(s, "%s: more than %d answers not taken", c->id, RESP_MAX);
            mqchat__v1__response__free_unpacked(r, NULL);
            return;
        }
        c->resp[c->nresp++] = r;
        return;
    }
    Mqchat__V1__ServerEvent *ev =
        mqchat__v1__server_event__unpack(NULL, (size_t)msg->payloadlen, msg->payload);
    if (!ev) {
        s->bad++;
        return;
    }
    if (ev->body_case == MQCHAT__V1__SERVER_EVENT__BODY_TYPING && c->kind == K_MEMBER) {
        typing_delivery(c);
    } else if (ev->body_case != MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE || !ev->message) {
        s->other++;
    } else if (c->kind == K_MEMBER) {
        if (ev->message->kind == MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER)
            group_delivery(c, ev->message);
        else
            s->other++;
    } else if (c->kind == K_PAIR_R) {
        pair_delivery(c, ev->message->body.data, ev->message->body.len);
    } else {
        s->other++; /* e.g. the owner's copy of a membership event */
    }
    mqchat__v1__server_event__free_unpacked(ev, NULL);
}

/* ------------------------------------------------------------------------ */
/* Clients                                                                  */

static const struct bench_callbacks callbacks = {on_connect, on_disconnect, on_subscribe,
                                                 on_publish, on_message};

/* An mqchat client of user (device "d"), or with plain a plain one. */
static void cl_init(struct cl *c, struct side *s, int kind, int plain, int idx, const char *user)
{
    c->side = s;
    c->kind = kind;
    c->plain = plain;
    c->idx = idx;
    snprintf(c->user, sizeof c->user, "%s", user);
    if (plain) {
        snprintf(c->id, sizeof c->id, "%s", user);
        snprintf(c->send_topic, sizeof c->send_topic, "bench/%d", idx);
        snprintf(c->sub_topic, sizeof c->sub_topic, "bench/%d", idx);
        bench_conn_new(&c->conn, &s->loop, c->id, c, NULL, NULL, &callbacks);
    } else {
        snprintf(c->id, sizeof c->id, "%s:d", user);
        bench_mqchat_topic(c->send_topic, sizeof c->send_topic, opt.prefix, user, 1);
        bench_mqchat_topic(c->sub_topic, sizeof c->sub_topic, opt.prefix, user, 0);
        snprintf(c->req_topic, sizeof c->req_topic, "%s/u/%s/d/d/req", opt.prefix, user);
        char *tok = bench_token(opt.secret_file, user, "d", 6 * 3600, opt.iss, opt.aud);
        bench_conn_new(&c->conn, &s->loop, c->id, c, user, tok, &callbacks);
        free(tok);
    }
    bench_loop_add(&s->loop, &c->conn);
}

static struct cl *cl_new(struct side *s, int kind, int plain, int idx, const char *user)
{
    struct cl *c = calloc(1, sizeof *c);
    if (!c) bench_die("out of memory");
    cl_init(c, s, kind, plain, idx, user);
    return c;
}

static void pump(struct side *s, uint64_t timeout_ns)
{
    bench_loop_pump(&s->loop, timeout_ns);
    bench_loop_misc(&s->loop, bench_now_ns());
}

static int cl_connect(struct cl *c, int port)
{
    c->failed = c->leaving = 0;
    int rc = bench_conn_connect(&c->conn, opt.host, port, opt.keepalive);
    if (rc != MOSQ_ERR_SUCCESS) {
        note(c->side, "%s: connect to %s:%d: %s", c->id, opt.host, port, bench_mosq_strerror(rc));
        c->failed = 1;
        c->side->failed++;
        return -1;
    }
    return 0;
}

/* Connects n clients of one side, at most connect_parallel waiting at a
 * time; 0 when all are ready, -1 on a refusal or after the time limit. */
static int connect_all(struct side *s, struct cl **v, int n, int port, const char *what)
{
    uint64_t t0 = bench_now_ns(), limit = t0 + (uint64_t)(30 + n / 100) * SEC;
    int ready0 = s->ready, failed0 = s->failed, next = 0;
    while (s->ready - ready0 < n) {
        int done = s->ready - ready0 + s->failed - failed0;
        while (next < n && next - done < opt.connect_parallel)
            cl_connect(v[next++], port);
        if (s->failed > failed0) {
            fprintf(stderr, "group_bench: %s: %d refused: %s\n", what, s->failed - failed0, s->err);
            return -1;
        }
        if (bench_now_ns() > limit || bench_stopping()) {
            fprintf(stderr, "group_bench: %s: %d of %d ready after %.0f s\n", what,
                    s->ready - ready0, n, (double)(bench_now_ns() - t0) / 1e9);
            return -1;
        }
        pump(s, 5 * MS);
    }
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    printf("  %s: %d connected and subscribed in %.2f s (%.0f/s)\n", what, n, secs,
           secs > 0 ? n / secs : 0);
    fflush(stdout);
    return 0;
}

/* Pumps s for secs seconds. */
static void settle(struct side *s, double secs)
{
    uint64_t end = bench_now_ns() + (uint64_t)(secs * 1e9);
    while (bench_now_ns() < end && !bench_stopping())
        pump(s, 10 * MS);
}

/* A clean disconnect of c (it may connect again). */
static void cl_leave(struct cl *c)
{
    c->leaving = 1;
    if (mosquitto_socket(c->conn.m) >= 0) mosquitto_disconnect(c->conn.m);
    uint64_t end = bench_now_ns() + 2 * SEC;
    while (mosquitto_socket(c->conn.m) >= 0 && bench_now_ns() < end) {
        bench_conn_touch(&c->conn);
        pump(c->side, 5 * MS);
    }
}

/* Disconnects every client of the side and flushes (at most 0.5 s). */
static void side_close(struct side *s)
{
    atomic_store(&shutting_down, 1);
    for (int i = 0; i < s->loop.nconns; i++) {
        struct mosquitto *m = s->loop.conns[i]->m;
        if (mosquitto_socket(m) >= 0) mosquitto_disconnect(m);
    }
    uint64_t end = bench_now_ns() + 500 * MS;
    for (;;) {
        int pending = 0;
        for (int i = 0; i < s->loop.nconns; i++) {
            struct mosquitto *m = s->loop.conns[i]->m;
            if (mosquitto_socket(m) >= 0 && mosquitto_want_write(m)) pending = 1;
        }
        if (!pending || bench_now_ns() > end) break;
        bench_loop_pump(&s->loop, 10 * MS);
    }
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */

static uint32_t rid_seq;

/* Publishes req from c with a fresh request id (copied into rid). */
static int rpc_send(struct cl *c, Mqchat__V1__Request *req, char *rid, size_t cap)
{
    snprintf(rid, cap, "r%" PRIu32, ++rid_seq);
    req->request_id = rid;
    size_t len = mqchat__v1__request__get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) bench_die("out of memory");
    mqchat__v1__request__pack(req, buf);
    int rc = mosquitto_publish(c->conn.m, NULL, c->req_topic, (int)len, buf, 1, false);
    free(buf);
    bench_conn_touch(&c->conn);
    if (rc != MOSQ_ERR_SUCCESS) note(c->side, "%s: request: %s", c->id, bench_mosq_strerror(rc));
    return rc == MOSQ_ERR_SUCCESS ? 0 : -1;
}

/* The answer to rid if it came (the caller frees it), else NULL. */
static Mqchat__V1__Response *rpc_take(struct cl *c, const char *rid)
{
    for (int i = 0; i < c->nresp; i++) {
        Mqchat__V1__Response *r = c->resp[i];
        if (r->request_id && strcmp(r->request_id, rid) == 0) {
            c->resp[i] = c->resp[--c->nresp];
            return r;
        }
    }
    return NULL;
}

/* The next answer of any id; NULL after timeout_s. */
static Mqchat__V1__Response *rpc_next(struct cl *c, double timeout_s)
{
    uint64_t end = bench_now_ns() + (uint64_t)(timeout_s * 1e9);
    while (!c->nresp) {
        if (bench_now_ns() > end || bench_stopping() || !c->connected) return NULL;
        pump(c->side, 2 * MS);
    }
    Mqchat__V1__Response *r = c->resp[0];
    memmove(c->resp, c->resp + 1, (size_t)--c->nresp * sizeof *c->resp);
    return r;
}

static Mqchat__V1__Response *rpc_wait(struct cl *c, const char *rid, double timeout_s)
{
    uint64_t end = bench_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        Mqchat__V1__Response *r = rpc_take(c, rid);
        if (r) return r;
        if (bench_now_ns() > end || bench_stopping() || !c->connected) {
            note(c->side, "%s: no answer to %s in %.0f s", c->id, rid, timeout_s);
            return NULL;
        }
        pump(c->side, 2 * MS);
    }
}

/* Sends req and waits for its answer: NULL (noted) on a timeout or an
 * error answer. */
static Mqchat__V1__Response *rpc(struct cl *c, Mqchat__V1__Request *req, double timeout_s)
{
    char rid[32];
    if (rpc_send(c, req, rid, sizeof rid)) return NULL;
    Mqchat__V1__Response *r = rpc_wait(c, rid, timeout_s);
    if (r && r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR) {
        note(c->side, "%s: request %d refused: %d %s", c->id, (int)req->body_case,
             r->error ? (int)r->error->code : 0,
             r->error && r->error->message ? r->error->message : "");
        mqchat__v1__response__free_unpacked(r, NULL);
        return NULL;
    }
    return r;
}

/* Creates a group of owner and users pfx<first>..pfx<first+n-1> (5-digit
 * numbers): GroupCreate with the first 1,000, GroupAdd per further 1,000.
 * The id goes into conv. 0, or -1 (printed). */
static int make_group(struct cl *owner, const char *pfx, int first, int n, char *conv, size_t cap)
{
    uint64_t t0 = bench_now_ns();
    char(*names)[24] = calloc((size_t)n + 1, sizeof *names);
    char **ids = calloc((size_t)n + 1, sizeof *ids);
    if (!names || !ids) bench_die("out of memory");
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "%s%05d", pfx, first + i);
        ids[i] = names[i];
    }
    int rc = -1, requests = 0;
    for (int done = 0; done < n || requests == 0;) {
        int k = n - done < 1000 ? n - done : 1000;
        Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
        Mqchat__V1__GroupCreate gc = MQCHAT__V1__GROUP_CREATE__INIT;
        Mqchat__V1__GroupAddMembers ga = MQCHAT__V1__GROUP_ADD_MEMBERS__INIT;
        if (requests == 0) {
            gc.title = "bench";
            gc.n_member_ids = (size_t)k;
            gc.member_ids = ids;
            req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
            req.group_create = &gc;
        } else {
            ga.conversation_id = conv;
            ga.n_user_ids = (size_t)k;
            ga.user_ids = ids + done;
            req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_ADD;
            req.group_add = &ga;
        }
        Mqchat__V1__Response *r = rpc(owner, &req, 60);
        requests++;
        if (!r || r->body_case != MQCHAT__V1__RESPONSE__BODY_GROUP || !r->group) {
            fprintf(stderr, "group_bench: group %s failed: %s\n", requests == 1 ? "create" : "add",
                    owner->side->err);
            if (r) mqchat__v1__response__free_unpacked(r, NULL);
            goto out;
        }
        if (requests == 1) snprintf(conv, cap, "%s", r->group->conversation_id);
        mqchat__v1__response__free_unpacked(r, NULL);
        done += k;
    }
    rc = 0;
    if (opt.verbose || n >= 1000)
        printf("  group %s: %d members (owner + %d) in %d requests, %.2f s\n", conv, n + 1, n,
               requests, (double)(bench_now_ns() - t0) / 1e9);
out:
    free(names);
    free(ids);
    return rc;
}

static void side_init(struct side *s, int max_conns)
{
    bench_loop_init(&s->loop, max_conns);
}

static double us(uint64_t ns)
{
    return (double)ns / 1e3;
}

static double ms(uint32_t usv)
{
    return usv / 1000.0;
}

/* "p50/p99/max" in ms of sorted samples. */
static void print_lat(const char *label, struct bench_samples *s)
{
    bench_samples_sort(s);
    printf("  %-28s p50 %8.2f  p90 %8.2f  p99 %8.2f  max %8.2f ms  (%zu)\n", label,
           ms(bench_percentile(s, 50)), ms(bench_percentile(s, 90)), ms(bench_percentile(s, 99)),
           ms(bench_samples_max(s)), s->n);
}

static void print_silences(void)
{
    printf("  silences while a broadcast was incomplete: >=20 ms %" PRIu64 ", >=50 ms %" PRIu64
           ", >=90 ms %" PRIu64 "; longest %.1f ms\n",
           G.sil20, G.sil50, G.sil90, (double)G.sil_max / 1e6);
    if (!G.nbig) return;
    /* by size */
    for (int i = 0; i < G.nbig; i++)
        for (int j = i + 1; j < G.nbig; j++)
            if (G.big[j].gap_ns > G.big[i].gap_ns) {
                struct biggap t = G.big[i];
                G.big[i] = G.big[j];
                G.big[j] = t;
            }
    printf("  longest pauses inside one broadcast (message: ms after delivery #):");
    for (int i = 0; i < G.nbig && i < 12; i++)
        printf(" %" PRIu64 ":%.1f@%u", G.big[i].n, (double)G.big[i].gap_ns / 1e6, G.big[i].at);
    printf("\n");
}

/* Deliveries that never came: messages sent and not at every device. */
static uint64_t missing(uint64_t *incomplete)
{
    uint64_t miss = 0;
    *incomplete = 0;
    for (int i = 0; i < RING; i++) {
        struct gmsg *g = &G.ring[i];
        if (g->n == UINT64_MAX || g->got >= G.expect) continue;
        miss += G.expect - g->got;
        (*incomplete)++;
    }
    return miss;
}

/* Pumps gside until message n reached every device or timeout_s. */
static int wait_complete(uint64_t n, double timeout_s)
{
    uint64_t end = bench_now_ns() + (uint64_t)(timeout_s * 1e9);
    struct gmsg *g = &G.ring[n % RING];
    while (g->got < G.expect) {
        if (bench_now_ns() > end || bench_stopping()) return -1;
        pump(&gside, 2 * MS);
    }
    return 0;
}

static void ring_reset(void)
{
    for (int i = 0; i < RING; i++)
        G.ring[i].n = UINT64_MAX;
}

/* ------------------------------------------------------------------------ */
/* Scenario fanout                                                          */

static int run_fanout(void)
{
    int n = opt.online;
    side_init(&gside, n + 4);
    printf("fanout: a large group of %d members (owner gf00000 + %d online devices + %d offline "
           "members), body %d B, QoS 1\n",
           1 + n + opt.offline, n, opt.offline, opt.body);
    struct cl *owner = cl_new(&gside, K_CTRL, 0, 0, "gf00000");
    if (connect_all(&gside, &owner, 1, opt.port, "owner")) return 1;
    if (make_group(owner, "gf", 1, n + opt.offline, G.conv, sizeof G.conv)) return 1;
    struct cl **mem = calloc((size_t)n, sizeof *mem);
    if (!mem) bench_die("out of memory");
    for (int i = 0; i < n; i++) {
        char u[24];
        snprintf(u, sizeof u, "gf%05d", i + 1);
        mem[i] = cl_new(&gside, K_MEMBER, 0, i + 1, u);
    }
    if (connect_all(&gside, mem, n, opt.port, "member devices")) return 1;
    settle(&gside, 1);
    G.expect = (uint32_t)n;
    ring_reset();

    int timeouts = 0;
    /* Warm-up, then the counted messages, one at a time. */
    for (int k = 0; k < opt.warmup_msgs && timeouts < 3; k++) {
        uint64_t id = G.next_n;
        if (group_send(owner, bench_now_ns(), -1) || wait_complete(id, opt.msg_timeout)) timeouts++;
    }
    uint64_t cpu0 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID),
             bcpu0 = bench_proc_cpu_ns(opt.broker_pid, 0);
    uint64_t t0 = bench_now_ns(), paused = 0;
    for (int k = 0; k < opt.messages && timeouts < 3 && !bench_stopping(); k++) {
        uint64_t id = G.next_n;
        if (group_send(owner, bench_now_ns(), 0)) {
            timeouts++;
            continue;
        }
        if (wait_complete(id, opt.msg_timeout)) {
            timeouts++;
            fprintf(stderr, "group_bench: message %" PRIu64 ": %u of %u devices after %.0f s\n", id,
                    G.ring[id % RING].got, G.expect, opt.msg_timeout);
        }
        if (opt.pause_ms) {
            uint64_t p0 = bench_now_ns();
            settle(&gside, opt.pause_ms / 1000.0);
            paused += bench_now_ns() - p0;
        }
    }
    uint64_t t1 = bench_now_ns();
    uint64_t cpu1 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID),
             bcpu1 = bench_proc_cpu_ns(opt.broker_pid, 0);
    double secs = (double)(t1 - t0 - paused) / 1e9;
    double dps = secs > 0 ? (double)G.wdeliv[0] / secs : 0;

    /* The burst. */
    uint64_t b0 = bench_now_ns(), first = G.next_n, bcpu2 = bench_proc_cpu_ns(opt.broker_pid, 0);
    int bsent = 0;
    for (int k = 0; k < opt.burst && timeouts < 3; k++)
        if (group_send(owner, bench_now_ns(), 1) == 0) bsent++;
    uint64_t bend = b0 + (uint64_t)(opt.msg_timeout * 1e9) * (uint64_t)(1 + opt.burst / 4);
    while (G.wmsgs[1] < (uint64_t)bsent && bench_now_ns() < bend && !bench_stopping())
        pump(&gside, 2 * MS);
    uint64_t b1 = 0;
    for (uint64_t id = first; id < first + (uint64_t)bsent; id++)
        if (G.ring[id % RING].t_last > b1) b1 = G.ring[id % RING].t_last;
    uint64_t bcpu3 = bench_proc_cpu_ns(opt.broker_pid, 0);
    double bsecs = b1 > b0 ? (double)(b1 - b0) / 1e9 : 0;
    double bdps = bsecs > 0 ? (double)G.wdeliv[1] / bsecs : 0;
    settle(&gside, 0.5); /* late deliveries show up */

    /* Typing notices, one at a time: QoS-0 broadcasts through the lane. */
    char ttopic[MAX_TOPIC];
    snprintf(ttopic, sizeof ttopic, "%s/u/%s/d/d/typing", opt.prefix, owner->user);
    for (int k = 0; k < opt.typing && !bench_stopping(); k++) {
        Mqchat__V1__Typing ty = MQCHAT__V1__TYPING__INIT;
        ty.conversation_id = G.conv;
        ty.typing = k % 2 == 0;
        uint8_t tb[256];
        size_t tl = mqchat__v1__typing__pack(&ty, tb);
        T.active = 1;
        T.round = k;
        T.got = 0;
        T.max_gap = 0;
        T.t_send = bench_now_ns();
        if (mosquitto_publish(owner->conn.m, NULL, ttopic, (int)tl, tb, 1, false) !=
            MOSQ_ERR_SUCCESS)
            break;
        bench_conn_touch(&owner->conn);
        uint64_t end = T.t_send + (uint64_t)(opt.msg_timeout * 1e9);
        while (T.got < G.expect && bench_now_ns() < end && !bench_stopping())
            pump(&gside, 2 * MS);
        if (T.got < G.expect) {
            T.timeouts++;
            settle(&gside, 0.2);
        } else {
            bench_samples_add(&T.last, T.t_last - T.t_send);
            bench_samples_add(&T.first, T.t_first - T.t_send);
            bench_samples_add(&T.gap, T.max_gap);
        }
        T.active = 0;
        settle(&gside, 0.05); /* a stray copy would show up here */
    }

    uint64_t incomplete, miss = missing(&incomplete);
    printf("one at a time: %" PRIu64 " messages x %u devices in %.2f s: %.0f deliveries/s\n",
           G.wmsgs[0], G.expect, secs, dps);
    print_lat("send -> last device", &G.last[0]);
    print_lat("send -> first device", &G.first[0]);
    print_lat("first -> last device", &G.spread[0]);
    print_lat("longest pause in a broadcast", &G.gap[0]);
    print_lat("send -> SendAck", &G.ack[0]);
    double bus = G.wdeliv[0] ? (double)(bcpu1 - bcpu0) / 1e3 / (double)G.wdeliv[0] : 0;
    printf("  cpu: broker %.0f%%, bench %.0f%% of one core; broker %.2f us per delivery\n",
           secs > 0 ? (double)(bcpu1 - bcpu0) / 1e9 / secs * 100 : 0,
           secs > 0 ? (double)(cpu1 - cpu0) / 1e9 / secs * 100 : 0, bus);
    printf("burst: %d messages sent back to back: all %" PRIu64 " x %u deliveries in %.2f s: %.0f "
           "deliveries/s, broker cpu %.0f%%\n",
           bsent, G.wmsgs[1], G.expect, bsecs, bdps,
           bsecs > 0 ? (double)(bcpu3 - bcpu2) / 1e9 / bsecs * 100 : 0);
    print_lat("burst: send -> last device", &G.last[1]);
    print_lat("burst: longest pause", &G.gap[1]);
    print_silences();
    if (opt.typing) {
        printf("typing: %d notices (QoS 0) one at a time, %" PRIu64
               " not at every device within %.0f "
               "s, %" PRIu64 " stray copies\n",
               opt.typing, T.timeouts, opt.msg_timeout, T.stray);
        print_lat("typing: send -> last device", &T.last);
        print_lat("typing: send -> first device", &T.first);
        print_lat("typing: longest pause", &T.gap);
        printf("  typing: pauses between two deliveries >= 20 ms %" PRIu64 ", >= 50 ms %" PRIu64
               ", >= 90 ms %" PRIu64 "\n",
               T.p20, T.p50, T.p90);
        if (T.npauses) {
            printf("  typing pauses (notice: ms after delivery #):");
            for (int i = 0; i < T.npauses && i < 24; i++)
                printf(" %" PRIu64 ":%.1f@%u", T.pauses[i].n, (double)T.pauses[i].gap_ns / 1e6,
                       T.pauses[i].at);
            printf("\n");
        }
    }
    printf("  checks: missing %" PRIu64 " (in %" PRIu64 " messages), out of order/dup %" PRIu64
           ", seq gaps %" PRIu64 ", late %" PRIu64 ", wrong conv %" PRIu64
           ", SendAck errors %" PRIu64 ", disconnects %" PRIu64 ", bad %" PRIu64 ", other %" PRIu64
           "\n",
           miss, incomplete, G.ooo, G.gaps, G.late, G.wrong_conv, G.ack_err, gside.disconnects,
           gside.bad, gside.other);
    if (gside.err[0]) printf("  first error: %s\n", gside.err);
    printf("RESULT scenario=fanout online=%u members=%d msgs=%" PRIu64 " p50_us=%u p99_us=%u "
           "max_us=%u first_p50_us=%u spread_p50_us=%u gap_p50_us=%u gap_max_us=%u "
           "ack_p50_us=%u deliveries_per_s=%.0f broker_us_per_delivery=%.2f burst_msgs=%" PRIu64
           " burst_p50_us=%u burst_max_us=%u burst_deliveries_per_s=%.0f sil50=%" PRIu64
           " sil90=%" PRIu64 " sil_max_us=%.0f typing_p50_us=%u typing_p99_us=%u typing_max_us=%u"
           " typing_gap_max_us=%u typing_timeouts=%" PRIu64 " typing_pauses90=%" PRIu64
           " missing=%" PRIu64 " ooo=%" PRIu64 " disconnects=%" PRIu64 "\n",
           G.expect, 1 + n + opt.offline, G.wmsgs[0], bench_percentile(&G.last[0], 50),
           bench_percentile(&G.last[0], 99), bench_samples_max(&G.last[0]),
           bench_percentile(&G.first[0], 50), bench_percentile(&G.spread[0], 50),
           bench_percentile(&G.gap[0], 50), bench_samples_max(&G.gap[0]),
           bench_percentile(&G.ack[0], 50), dps, bus, G.wmsgs[1], bench_percentile(&G.last[1], 50),
           bench_samples_max(&G.last[1]), bdps, G.sil50, G.sil90, us(G.sil_max),
           bench_percentile(&T.last, 50), bench_percentile(&T.last, 99), bench_samples_max(&T.last),
           bench_samples_max(&T.gap), T.timeouts, T.p90, miss, G.ooo, gside.disconnects);
    side_close(&gside);
    return miss || G.ooo || G.gaps || G.ack_err || gside.disconnects || gside.bad || timeouts;
}

/* ------------------------------------------------------------------------ */
/* Scenario catchup                                                         */

struct cu_conv {
    char conv[64];
    uint64_t position, end, last, got;
    int done, pages, bad;
    char rid[32];
};

static struct cu_conv *cuv;
static int ncu;

static struct cu_conv *cu_find(const char *conv)
{
    for (int i = 0; i < ncu; i++)
        if (strcmp(cuv[i].conv, conv) == 0) return &cuv[i];
    return NULL;
}

/* Posts conv_msgs messages to every group, at most 100 waiting for their
 * SendAck. */
static int post_all(struct cl *poster)
{
    uint64_t t0 = bench_now_ns(), total = (uint64_t)ncu * (uint64_t)opt.conv_msgs;
    uint64_t sent = 0, acked0 = G.acked, limit = t0 + 120 * SEC;
    while (G.acked - acked0 < total) {
        while (sent < total && sent - (G.acked - acked0) < 100) {
            struct cu_conv *v = &cuv[sent % (uint64_t)ncu];
            unsigned char body[opt.body];
            memcpy(body, body_tmpl, (size_t)opt.body);
            bench_body_stamp(body, bench_now_ns(), 0, sent);
            char cmid[64];
            snprintf(cmid, sizeof cmid, "%08" PRIx32 ".p%" PRIu64 ".%" PRIu64, run_nonce, G.next_n,
                     sent);
            if (bench_publish_send(poster->conn.m, poster->send_topic, cmid, v->conv, body,
                                   opt.body) != MOSQ_ERR_SUCCESS)
                break;
            bench_conn_touch(&poster->conn);
            sent++;
        }
        if (bench_now_ns() > limit || bench_stopping() || G.ack_err) {
            fprintf(stderr, "group_bench: posting: %" PRIu64 " of %" PRIu64 " acked; %s\n",
                    G.acked - acked0, total, gside.err);
            return -1;
        }
        pump(&gside, 2 * MS);
    }
    G.next_n++;
    printf("  posted %" PRIu64 " messages (%d to each of %d groups) in %.2f s\n", total,
           opt.conv_msgs, ncu, (double)(bench_now_ns() - t0) / 1e9);
    return 0;
}

/* Checks and counts a pull page of v. */
static void cu_page(struct cu_conv *v, const Mqchat__V1__ConversationPullResponse *pr)
{
    for (size_t i = 0; i < pr->n_messages; i++) {
        uint64_t seq = pr->messages[i]->seq;
        if (seq != v->last + 1) v->bad++;
        v->last = seq;
        v->got++;
    }
    v->pages++;
}

struct catchup_res {
    double wall_ms, sync_ms;
    int round_trips, requests, waves;
    uint64_t msgs, expected, bad, leftover;
};

static Mqchat__V1__Response *cu_sync(struct cl *cu, uint64_t after, const char *pos_after)
{
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__SyncRequest sr = MQCHAT__V1__SYNC_REQUEST__INIT;
    sr.after_inbox_seq = after;
    sr.positions = 1;
    sr.positions_after = (char *)(pos_after ? pos_after : "");
    req.body_case = MQCHAT__V1__REQUEST__BODY_SYNC;
    req.sync = &sr;
    return rpc(cu, &req, 30);
}

/* Positions from sync answers into cuv; round trips counted. -1 on error. */
static int cu_positions(struct cl *cu, uint64_t cursor, struct catchup_res *r)
{
    ncu = 0;
    char after[64] = "";
    for (;;) {
        Mqchat__V1__Response *resp = cu_sync(cu, cursor, after);
        r->round_trips++;
        r->requests++;
        if (!resp || resp->body_case != MQCHAT__V1__RESPONSE__BODY_SYNC) {
            if (resp) mqchat__v1__response__free_unpacked(resp, NULL);
            return -1;
        }
        Mqchat__V1__SyncResponse *s = resp->sync;
        for (size_t i = 0; i < s->n_positions; i++) {
            struct cu_conv *v = cu_find(s->positions[i]->conversation_id);
            if (!v) {
                if (ncu == opt.convs) {
                    r->bad++;
                    continue;
                }
                v = &cuv[ncu++];
                memset(v, 0, sizeof *v);
                snprintf(v->conv, sizeof v->conv, "%s", s->positions[i]->conversation_id);
            }
            v->position = v->last = s->positions[i]->position;
            v->end = s->positions[i]->end_seq;
            v->got = 0;
            v->done = v->pages = v->bad = 0;
            snprintf(after, sizeof after, "%s", v->conv);
        }
        int more = s->positions_more;
        mqchat__v1__response__free_unpacked(resp, NULL);
        if (!more) return 0;
    }
}

static int send_pull(struct cl *cu, struct cu_conv *v, char *rid, size_t cap)
{
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__ConversationPull cp = MQCHAT__V1__CONVERSATION_PULL__INIT;
    cp.conversation_id = v->conv;
    cp.after_seq = v->last;
    cp.limit = (uint32_t)opt.pull_limit;
    req.body_case = MQCHAT__V1__REQUEST__BODY_PULL;
    req.pull = &cp;
    return rpc_send(cu, &req, rid, cap);
}

static int send_position_ack(struct cl *cu, struct cu_conv *v, uint64_t seq, char *rid, size_t cap)
{
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__PositionAck pa = MQCHAT__V1__POSITION_ACK__INIT;
    pa.conversation_id = v->conv;
    pa.seq = seq;
    req.body_case = MQCHAT__V1__REQUEST__BODY_POSITION_ACK;
    req.position_ack = &pa;
    return rpc_send(cu, &req, rid, cap);
}

/* One catch-up of cu after cursor: sequential (one request at a time) or
 * with every pull in flight at once. */
static int catch_up(struct cl *cu, uint64_t cursor, int pipelined, struct catchup_res *r)
{
    memset(r, 0, sizeof *r);
    uint64_t t0 = bench_now_ns();
    if (cu_positions(cu, cursor, r)) return -1;
    r->sync_ms = (double)(bench_now_ns() - t0) / 1e6;
    for (int i = 0; i < ncu; i++)
        r->expected += cuv[i].end - cuv[i].position;
    if (!pipelined) {
        for (int i = 0; i < ncu; i++) {
            struct cu_conv *v = &cuv[i];
            for (;;) {
                char rid[32];
                if (send_pull(cu, v, rid, sizeof rid)) return -1;
                Mqchat__V1__Response *resp = rpc_wait(cu, rid, 30);
                r->round_trips++;
                r->requests++;
                if (!resp || resp->body_case != MQCHAT__V1__RESPONSE__BODY_PULL) {
                    if (resp) {
                        note(cu->side, "pull %s: answer %d", v->conv, (int)resp->body_case);
                        mqchat__v1__response__free_unpacked(resp, NULL);
                    }
                    return -1;
                }
                cu_page(v, resp->pull);
                uint64_t through = resp->pull->through_seq;
                int more = resp->pull->more;
                mqchat__v1__response__free_unpacked(resp, NULL);
                if (send_position_ack(cu, v, through, rid, sizeof rid)) return -1;
                resp = rpc_wait(cu, rid, 30);
                r->round_trips++;
                r->requests++;
                if (!resp || resp->body_case != MQCHAT__V1__RESPONSE__BODY_OK) {
                    if (resp) mqchat__v1__response__free_unpacked(resp, NULL);
                    return -1;
                }
                mqchat__v1__response__free_unpacked(resp, NULL);
                v->last = through;
                if (!more) break;
            }
        }
    } else {
        /* Every pull at once; each answer: its ack, and the next page's pull. */
        int open = 0, acks_open = 0;
        for (int i = 0; i < ncu; i++) {
            if (send_pull(cu, &cuv[i], cuv[i].rid, sizeof cuv[i].rid)) return -1;
            r->requests++;
            open++;
        }
        r->waves = 1;
        while (open || acks_open) {
            Mqchat__V1__Response *resp = rpc_next(cu, 30);
            if (!resp) {
                note(cu->side, "catch-up: %d pulls and %d acks unanswered", open, acks_open);
                return -1;
            }
            if (resp->body_case == MQCHAT__V1__RESPONSE__BODY_OK) {
                acks_open--;
            } else if (resp->body_case == MQCHAT__V1__RESPONSE__BODY_PULL) {
                struct cu_conv *v = cu_find(resp->pull->conversation_id);
                if (!v) {
                    mqchat__v1__response__free_unpacked(resp, NULL);
                    return -1;
                }
                open--;
                cu_page(v, resp->pull);
                uint64_t through = resp->pull->through_seq;
                char rid[32];
                if (send_position_ack(cu, v, through, rid, sizeof rid)) return -1;
                r->requests++;
                acks_open++;
                v->last = through;
                if (resp->pull->more) {
                    if (send_pull(cu, v, v->rid, sizeof v->rid)) return -1;
                    r->requests++;
                    open++;
                    if (v->pages + 1 > r->waves) r->waves = v->pages + 1;
                }
            } else {
                note(cu->side, "catch-up: answer %d", (int)resp->body_case);
                mqchat__v1__response__free_unpacked(resp, NULL);
                return -1;
            }
            mqchat__v1__response__free_unpacked(resp, NULL);
        }
        r->round_trips = 1 + 2 * r->waves; /* sync, then pull and ack waves */
    }
    r->wall_ms = (double)(bench_now_ns() - t0) / 1e6;
    for (int i = 0; i < ncu; i++) {
        r->msgs += cuv[i].got;
        r->bad += (uint64_t)cuv[i].bad;
        if (cuv[i].last != cuv[i].end) r->bad++;
    }
    /* Nothing left to pull? */
    Mqchat__V1__Response *resp = cu_sync(cu, cursor, NULL);
    if (!resp || resp->body_case != MQCHAT__V1__RESPONSE__BODY_SYNC) {
        if (resp) mqchat__v1__response__free_unpacked(resp, NULL);
        return -1;
    }
    r->leftover = resp->sync->n_positions;
    mqchat__v1__response__free_unpacked(resp, NULL);
    return 0;
}

static int run_catchup(void)
{
    side_init(&gside, 8);
    printf("catchup: a device in %d large groups (each: poster + catch-up user + %d others = %d "
           "members), %d new messages in each, body %d B\n",
           opt.convs, opt.filler, opt.filler + 2, opt.conv_msgs, opt.body);
    cuv = calloc((size_t)opt.convs, sizeof *cuv);
    if (!cuv) bench_die("out of memory");
    struct cl *poster = cl_new(&gside, K_CTRL, 0, 0, "cp00000");
    struct cl *cu = cl_new(&gside, K_CTRL, 0, 0, "cu00000");
    if (connect_all(&gside, &poster, 1, opt.port, "poster")) return 1;
    /* The groups: cu00000 and the fillers cf00001..; the poster owns them. */
    uint64_t t0 = bench_now_ns();
    char(*names)[24] = calloc((size_t)opt.filler + 1, sizeof *names);
    char **ids = calloc((size_t)opt.filler + 1, sizeof *ids);
    if (!names || !ids) bench_die("out of memory");
    snprintf(names[0], sizeof names[0], "cu00000");
    for (int i = 0; i < opt.filler; i++)
        snprintf(names[i + 1], sizeof names[i + 1], "cf%05d", i + 1);
    for (int i = 0; i <= opt.filler; i++)
        ids[i] = names[i];
    for (ncu = 0; ncu < opt.convs; ncu++) {
        Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
        Mqchat__V1__GroupCreate gc = MQCHAT__V1__GROUP_CREATE__INIT;
        gc.title = "catchup";
        gc.n_member_ids = (size_t)opt.filler + 1;
        gc.member_ids = ids;
        req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
        req.group_create = &gc;
        Mqchat__V1__Response *r = rpc(poster, &req, 30);
        if (!r || r->body_case != MQCHAT__V1__RESPONSE__BODY_GROUP) {
            fprintf(stderr, "group_bench: group create: %s\n", gside.err);
            return 1;
        }
        snprintf(cuv[ncu].conv, sizeof cuv[ncu].conv, "%s", r->group->conversation_id);
        mqchat__v1__response__free_unpacked(r, NULL);
    }
    free(names);
    free(ids);
    printf("  %d groups created in %.2f s\n", ncu, (double)(bench_now_ns() - t0) / 1e9);

    /* cu's device: online once, inbox synced and acked, then away. */
    if (connect_all(&gside, &cu, 1, opt.port, "catch-up device (first time)")) return 1;
    uint64_t cursor = 0;
    for (int pages = 0; pages < 100; pages++) {
        Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
        Mqchat__V1__SyncRequest sr = MQCHAT__V1__SYNC_REQUEST__INIT;
        sr.after_inbox_seq = cursor;
        sr.limit = 500;
        req.body_case = MQCHAT__V1__REQUEST__BODY_SYNC;
        req.sync = &sr;
        Mqchat__V1__Response *r = rpc(cu, &req, 30);
        if (!r || r->body_case != MQCHAT__V1__RESPONSE__BODY_SYNC) return 1;
        for (size_t i = 0; i < r->sync->n_messages; i++)
            if (r->sync->messages[i]->inbox_seq > cursor) cursor = r->sync->messages[i]->inbox_seq;
        int more = r->sync->more;
        mqchat__v1__response__free_unpacked(r, NULL);
        if (!more) break;
    }
    {
        Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
        Mqchat__V1__CursorAck ca = MQCHAT__V1__CURSOR_ACK__INIT;
        ca.inbox_seq = cursor;
        req.body_case = MQCHAT__V1__REQUEST__BODY_CURSOR_ACK;
        req.cursor_ack = &ca;
        Mqchat__V1__Response *r = cursor ? rpc(cu, &req, 30) : NULL;
        if (r) mqchat__v1__response__free_unpacked(r, NULL);
    }
    struct catchup_res r0;
    memset(&r0, 0, sizeof r0);
    int ncreated = ncu;
    if (cu_positions(cu, cursor, &r0)) return 1;
    printf("  catch-up device: inbox cursor %" PRIu64 " (the CREATED events), %d positions with "
           "news before the posts\n",
           cursor, ncu);
    cl_leave(cu);

    struct catchup_res res[2];
    const char *names2[2] = {"sequential", "pipelined"};
    int rc = 0;
    for (int variant = 0; variant < 2; variant++) {
        ncu = ncreated; /* cuv still holds every group */
        if (post_all(poster)) return 1;
        uint64_t c0 = bench_now_ns();
        if (connect_all(&gside, &cu, 1, opt.port, "catch-up device")) return 1;
        double conn_ms = (double)(bench_now_ns() - c0) / 1e6;
        if (catch_up(cu, cursor, variant, &res[variant])) {
            fprintf(stderr, "group_bench: catch-up (%s) failed: %s\n", names2[variant], gside.err);
            return 1;
        }
        struct catchup_res *r = &res[variant];
        printf("%s catch-up: %" PRIu64 " messages from %d conversations in %.1f ms "
               "(connect %.1f ms before): %d round trips, %d requests; sync with positions "
               "%.1f ms\n",
               names2[variant], r->msgs, ncu, r->wall_ms, conn_ms, r->round_trips, r->requests,
               r->sync_ms);
        printf("  checks: expected %" PRIu64 ", seq errors %" PRIu64
               ", conversations still listed after: %" PRIu64 "\n",
               r->expected, r->bad, r->leftover);
        printf("RESULT scenario=catchup variant=%s convs=%d msgs=%" PRIu64 " wall_ms=%.1f "
               "sync_ms=%.1f round_trips=%d requests=%d connect_ms=%.1f bad=%" PRIu64
               " leftover=%" PRIu64 "\n",
               names2[variant], ncu, r->msgs, r->wall_ms, r->sync_ms, r->round_trips, r->requests,
               conn_ms, r->bad, r->leftover);
        fflush(stdout);
        if (r->bad || r->leftover || r->msgs != r->expected ||
            r->expected != (uint64_t)ncreated * (uint64_t)opt.conv_msgs)
            rc = 1;
        cl_leave(cu);
    }
    if (gside.err[0]) printf("  first error: %s\n", gside.err);
    side_close(&gside);
    return rc || gside.disconnects || gside.bad || G.ack_err;
}

/* ------------------------------------------------------------------------ */
/* Scenario interference                                                    */

static const char *win_name[NWIN] = {"idle", "group", "plain"};
static _Atomic int win_group_on, win_pairs; /* pairs: 0 none, 1 mqchat, 2 plain */
static _Atomic int sending, threads_quit;
static _Atomic uint64_t win_start;
static _Atomic uint64_t g_busy, p_busy;
static struct cl *g_owner;
static struct cl **pairs_mq, **pairs_plain; /* senders then receivers, per array */

static int g_send_next(void *ctx, uint64_t due)
{
    if (G.sent - G.acked >= GROUP_WINDOW) return -1;
    /* Messages due in the measured window count for it. */
    return group_send(g_owner, due, in_meas(due) ? atomic_load(&cur_win) : -1);
}

static void *group_thread(void *arg)
{
    struct bench_pacer pacer = {0};
    int local = -2;
    while (!atomic_load(&threads_quit) && !bench_stopping()) {
        uint64_t now = bench_now_ns(), timeout = 10 * MS;
        int w = atomic_load(&cur_win);
        if (w != local) {
            memset(&pacer, 0, sizeof pacer);
            local = w;
        }
        if (atomic_load(&sending) && atomic_load(&win_group_on)) {
            uint64_t next =
                bench_pace(&pacer, atomic_load(&win_start), opt.group_rate, now, g_send_next, NULL);
            if (next < timeout) timeout = next;
        }
        pump(&gside, timeout);
        atomic_store(&g_busy, G.outstanding + (G.sent - G.acked));
    }
    return NULL;
}

static int p_send_next(void *ctx, uint64_t due)
{
    struct cl **v = ctx;
    for (int k = 0; k < opt.pairs; k++) {
        struct cl *c = v[(P.rr + k) % opt.pairs];
        if (!c->connected || c->inflight >= opt.window) continue;
        P.rr = (P.rr + k + 1) % opt.pairs;
        unsigned char body[opt.body];
        memcpy(body, body_tmpl, (size_t)opt.body);
        bench_body_stamp(body, due, (uint32_t)c->idx, c->next_n);
        int rc;
        if (c->plain) {
            rc = mosquitto_publish(c->conn.m, NULL, c->send_topic, opt.body, body, 1, false);
        } else {
            char cmid[80];
            snprintf(cmid, sizeof cmid, "%08" PRIx32 ".%" PRIx64 ".%" PRIx64, run_nonce, c->next_n,
                     due);
            rc = bench_publish_send(c->conn.m, c->send_topic, cmid, c->conv, body, opt.body);
        }
        if (rc != MOSQ_ERR_SUCCESS) return -1;
        c->next_n++;
        c->inflight++;
        bench_conn_touch(&c->conn);
        int w = atomic_load(&cur_win);
        if (w >= 0) P.sent[w]++;
        P.sent_all++;
        return 0;
    }
    return -1;
}

static void *pair_thread(void *arg)
{
    struct bench_pacer pacer = {0};
    int local = -2;
    while (!atomic_load(&threads_quit) && !bench_stopping()) {
        uint64_t now = bench_now_ns(), timeout = 10 * MS;
        int w = atomic_load(&cur_win);
        if (w != local) {
            memset(&pacer, 0, sizeof pacer);
            local = w;
        }
        int mode = atomic_load(&win_pairs);
        if (atomic_load(&sending) && mode) {
            uint64_t next = bench_pace(&pacer, atomic_load(&win_start), opt.pair_rate, now,
                                       p_send_next, mode == 1 ? pairs_mq : pairs_plain);
            if (next < timeout) timeout = next;
        }
        pump(&pside, timeout);
        int infl = 0;
        for (int i = 0; i < opt.pairs; i++)
            infl += pairs_mq[i]->inflight + pairs_plain[i]->inflight;
        atomic_store(&p_busy, (uint64_t)infl + (P.sent_all - P.recv_all));
    }
    return NULL;
}

static struct cl **make_pairs(int plain)
{
    struct cl **v = calloc(2 * (size_t)opt.pairs, sizeof *v);
    if (!v) bench_die("out of memory");
    for (int i = 0; i < opt.pairs; i++) {
        char su[24], ru[24];
        snprintf(su, sizeof su, plain ? "pps%03d" : "ps%03d", i);
        snprintf(ru, sizeof ru, plain ? "ppr%03d" : "pr%03d", i);
        v[i] = cl_new(&pside, K_PAIR_S, plain, i, su);
        v[opt.pairs + i] = cl_new(&pside, K_PAIR_R, plain, i, ru);
        if (!plain) {
            bench_conv_id(v[i]->conv, sizeof v[i]->conv, su, ru);
            snprintf(v[opt.pairs + i]->conv, sizeof v[opt.pairs + i]->conv, "%s", v[i]->conv);
        }
    }
    return v;
}

static uint64_t thread_cpu(pthread_t th)
{
    clockid_t cid;
    return pthread_getcpuclockid(th, &cid) == 0 ? bench_cpu_ns(cid) : 0;
}

struct wcpu {
    double broker, plain, gthr, pthr, machine;
};

static void sleep_until(uint64_t t)
{
    while (bench_now_ns() < t && !bench_stopping())
        usleep(1000);
}

static int run_interference(void)
{
    int on = opt.group_online;
    side_init(&gside, on + 4);
    side_init(&pside, 4 * opt.pairs + 4);
    printf("interference: %d 1:1 pairs at %.0f msgs/s in total (window %d, body %d B) against "
           "a large group of %d members with %d devices online; group stream %.1f msgs/s "
           "(%.0f deliveries/s) in window 'group'\n",
           opt.pairs, opt.pair_rate, opt.window, opt.body, opt.members, on, opt.group_rate,
           opt.group_rate * on);
    g_owner = cl_new(&gside, K_CTRL, 0, 0, "gi00000");
    if (connect_all(&gside, &g_owner, 1, opt.port, "group owner")) return 1;
    if (make_group(g_owner, "gi", 1, opt.members - 1, G.conv, sizeof G.conv)) return 1;
    struct cl **mem = calloc((size_t)on, sizeof *mem);
    if (!mem) bench_die("out of memory");
    for (int i = 0; i < on; i++) {
        char u[24];
        snprintf(u, sizeof u, "gi%05d", i + 1);
        mem[i] = cl_new(&gside, K_MEMBER, 0, i + 1, u);
    }
    if (connect_all(&gside, mem, on, opt.port, "group member devices")) return 1;
    pairs_mq = make_pairs(0);
    pairs_plain = make_pairs(1);
    if (connect_all(&pside, pairs_mq, 2 * opt.pairs, opt.port, "mqchat 1:1 clients")) return 1;
    if (connect_all(&pside, pairs_plain, 2 * opt.pairs, opt.plain_port, "plain 1:1 clients"))
        return 1;
    G.expect = (uint32_t)on;
    ring_reset();
    settle(&gside, 0.5);
    settle(&pside, 0.5);
    if (pthread_create(&gside.th, NULL, group_thread, NULL) ||
        pthread_create(&pside.th, NULL, pair_thread, NULL))
        bench_die("pthread_create failed");

    struct wcpu cpu[NWIN];
    uint64_t drain_ms[NWIN];
    for (int w = 0; w < NWIN && !bench_stopping(); w++) {
        atomic_store(&win_group_on, w == 1);
        atomic_store(&win_pairs, w == 2 ? 2 : 1);
        uint64_t t = bench_now_ns();
        atomic_store(&meas_start, t + (uint64_t)(opt.warmup * 1e9));
        atomic_store(&meas_end, t + (uint64_t)((opt.warmup + opt.duration) * 1e9));
        atomic_store(&win_start, t);
        atomic_store(&cur_win, w);
        atomic_store(&sending, 1);
        sleep_until(atomic_load(&meas_start));
        uint64_t b0 = bench_proc_cpu_ns(opt.broker_pid, 0),
                 pl0 = bench_proc_cpu_ns(opt.plain_pid, 0);
        uint64_t g0 = thread_cpu(gside.th), p0 = thread_cpu(pside.th), mb0, mt0, mb1, mt1;
        bench_machine_cpu(&mb0, &mt0);
        sleep_until(atomic_load(&meas_end));
        uint64_t b1 = bench_proc_cpu_ns(opt.broker_pid, 0),
                 pl1 = bench_proc_cpu_ns(opt.plain_pid, 0);
        uint64_t g1 = thread_cpu(gside.th), p1 = thread_cpu(pside.th);
        bench_machine_cpu(&mb1, &mt1);
        atomic_store(&sending, 0);
        double secs = opt.duration;
        cpu[w] = (struct wcpu){
            (double)(b1 - b0) / 1e9 / secs * 100, (double)(pl1 - pl0) / 1e9 / secs * 100,
            (double)(g1 - g0) / 1e9 / secs * 100, (double)(p1 - p0) / 1e9 / secs * 100,
            mt1 > mt0 ? 100.0 * (double)(mb1 - mb0) / (double)(mt1 - mt0) : 0};
        /* Drain before the next window (bounded). */
        uint64_t d0 = bench_now_ns(), dend = d0 + (uint64_t)(opt.msg_timeout * 1e9);
        while ((atomic_load(&g_busy) || atomic_load(&p_busy)) && bench_now_ns() < dend &&
               !bench_stopping())
            usleep(2000);
        drain_ms[w] = (bench_now_ns() - d0) / MS;
        atomic_store(&cur_win, -1);
        usleep(500000);
    }
    atomic_store(&threads_quit, 1);
    pthread_join(gside.th, NULL);
    pthread_join(pside.th, NULL);

    uint64_t incomplete, miss = missing(&incomplete);
    printf("%-6s %9s %9s %8s %8s %8s %8s %9s | %7s %9s %8s %8s | %7s %7s %7s %7s %7s %6s\n",
           "window", "offered", "1:1 /s", "p50 ms", "p99 ms", "p99.9", "max ms", "ack p99",
           "grp msg", "grp dlv/s", "last p50", "last p99", "broker", "plain", "b-grp", "b-1:1",
           "machine", "drain");
    for (int w = 0; w < NWIN; w++) {
        bench_samples_sort(&P.lat[w]);
        bench_samples_sort(&P.ack[w]);
        bench_samples_sort(&G.last[w]);
        double gdps = (double)G.wdeliv[w] / opt.duration;
        char ack[16] = "-";
        if (w != 2) snprintf(ack, sizeof ack, "%.2f", ms(bench_percentile(&P.ack[w], 99)));
        printf("%-6s %9.0f %9.0f %8.2f %8.2f %8.2f %8.2f %9s | %7" PRIu64
               " %9.0f %8.2f %8.2f | %6.0f%% %6.0f%% %6.0f%% %6.0f%% %6.0f%% %4" PRIu64 "ms\n",
               win_name[w], opt.pair_rate, (double)P.meas_recv[w] / opt.duration,
               ms(bench_percentile(&P.lat[w], 50)), ms(bench_percentile(&P.lat[w], 99)),
               ms(bench_percentile(&P.lat[w], 99.9)), ms(bench_samples_max(&P.lat[w])), ack,
               G.wmsgs[w], gdps, ms(bench_percentile(&G.last[w], 50)),
               ms(bench_percentile(&G.last[w], 99)), cpu[w].broker, cpu[w].plain, cpu[w].gthr,
               cpu[w].pthr, cpu[w].machine, drain_ms[w]);
    }
    if (G.wmsgs[1]) {
        print_lat("group: send -> last device", &G.last[1]);
        print_lat("group: send -> first device", &G.first[1]);
        print_lat("group: longest pause", &G.gap[1]);
        print_silences();
    }
    printf("  checks: 1:1 sent %" PRIu64 " received %" PRIu64 " out of order/dup %" PRIu64
           " SendAck errors %" PRIu64 "; group sent %" PRIu64 " missing %" PRIu64 " (in %" PRIu64
           " messages) out of order %" PRIu64 " seq gaps %" PRIu64 " late %" PRIu64
           "; disconnects %" PRIu64 "+%" PRIu64 ", bad %" PRIu64 "+%" PRIu64 "\n",
           P.sent_all, P.recv_all, P.ooo, P.ack_err, G.sent, miss, incomplete, G.ooo, G.gaps,
           G.late, gside.disconnects, pside.disconnects, gside.bad, pside.bad);
    if (gside.err[0]) printf("  first error (group side): %s\n", gside.err);
    if (pside.err[0]) printf("  first error (1:1 side): %s\n", pside.err);
    for (int w = 0; w < NWIN; w++)
        printf("RESULT scenario=interference window=%s pairs=%d rate=%.0f delivered_per_s=%.0f "
               "p50_us=%u p99_us=%u p999_us=%u max_us=%u ack_p99_us=%u group_msgs=%" PRIu64
               " group_deliveries_per_s=%.0f group_p50_us=%u group_p99_us=%u broker_cpu_pct=%.0f "
               "plain_cpu_pct=%.0f machine_busy_pct=%.0f\n",
               win_name[w], opt.pairs, opt.pair_rate, (double)P.meas_recv[w] / opt.duration,
               bench_percentile(&P.lat[w], 50), bench_percentile(&P.lat[w], 99),
               bench_percentile(&P.lat[w], 99.9), bench_samples_max(&P.lat[w]),
               bench_percentile(&P.ack[w], 99), G.wmsgs[w], (double)G.wdeliv[w] / opt.duration,
               bench_percentile(&G.last[w], 50), bench_percentile(&G.last[w], 99), cpu[w].broker,
               cpu[w].plain, cpu[w].machine);
    side_close(&gside);
    side_close(&pside);
    return miss || G.ooo || G.gaps || G.ack_err || P.ooo || P.ack_err || gside.disconnects ||
           pside.disconnects || gside.bad || pside.bad || P.recv_all < P.sent_all;
}

/* ------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: group_bench --scenario fanout|catchup|interference --secret-file F [options]\n"
            "  --host H --port P        mosquitto + mqchat (default 127.0.0.1:1883)\n"
            "  --plain-port P           plain mosquitto (interference)\n"
            "  --broker-pid PID --plain-pid PID   report their CPU use\n"
            "  --prefix P --iss X --aud Y --body B (default 300) --keepalive S\n"
            "  --connect-parallel N     connects waiting for their CONNACK (default 50)\n"
            "  --msg-timeout S          longest wait for one broadcast, and drains (default 10)\n"
            " fanout:  --online N (1000) --offline N (0) --messages M (200) --warmup-msgs W (5)\n"
            "          --pause-ms P (0) --burst B (20) --typing T (20)\n"
            " catchup: --convs C (50) --conv-msgs K (100) --filler F (255) --pull-limit L (0)\n"
            " interference: --members N (10000) --group-online N (2000) --group-rate R (10)\n"
            "          --pairs N (50) --pair-rate R (500) --window W (32) --duration S (10)\n"
            "          --warmup S (2)\n"
            "  --verbose\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct bench_opt opts[] = {
        {"scenario", BENCH_OPT_CHOICE, &opt.scenario, "fanout|catchup|interference"},
        {"host", BENCH_OPT_STR, &opt.host, NULL},
        {"port", BENCH_OPT_INT, &opt.port, NULL},
        {"plain-port", BENCH_OPT_INT, &opt.plain_port, NULL},
        {"prefix", BENCH_OPT_STR, &opt.prefix, NULL},
        {"secret-file", BENCH_OPT_STR, &opt.secret_file, NULL},
        {"iss", BENCH_OPT_STR, &opt.iss, NULL},
        {"aud", BENCH_OPT_STR, &opt.aud, NULL},
        {"broker-pid", BENCH_OPT_INT, &opt.broker_pid, NULL},
        {"plain-pid", BENCH_OPT_INT, &opt.plain_pid, NULL},
        {"body", BENCH_OPT_INT, &opt.body, NULL},
        {"keepalive", BENCH_OPT_INT, &opt.keepalive, NULL},
        {"connect-parallel", BENCH_OPT_INT, &opt.connect_parallel, NULL},
        {"msg-timeout", BENCH_OPT_DOUBLE, &opt.msg_timeout, NULL},
        {"online", BENCH_OPT_INT, &opt.online, NULL},
        {"offline", BENCH_OPT_INT, &opt.offline, NULL},
        {"messages", BENCH_OPT_INT, &opt.messages, NULL},
        {"warmup-msgs", BENCH_OPT_INT, &opt.warmup_msgs, NULL},
        {"burst", BENCH_OPT_INT, &opt.burst, NULL},
        {"typing", BENCH_OPT_INT, &opt.typing, NULL},
        {"pause-ms", BENCH_OPT_INT, &opt.pause_ms, NULL},
        {"convs", BENCH_OPT_INT, &opt.convs, NULL},
        {"conv-msgs", BENCH_OPT_INT, &opt.conv_msgs, NULL},
        {"filler", BENCH_OPT_INT, &opt.filler, NULL},
        {"pull-limit", BENCH_OPT_INT, &opt.pull_limit, NULL},
        {"members", BENCH_OPT_INT, &opt.members, NULL},
        {"group-online", BENCH_OPT_INT, &opt.group_online, NULL},
        {"group-rate", BENCH_OPT_DOUBLE, &opt.group_rate, NULL},
        {"pairs", BENCH_OPT_INT, &opt.pairs, NULL},
        {"pair-rate", BENCH_OPT_DOUBLE, &opt.pair_rate, NULL},
        {"window", BENCH_OPT_INT, &opt.window, NULL},
        {"duration", BENCH_OPT_DOUBLE, &opt.duration, NULL},
        {"warmup", BENCH_OPT_DOUBLE, &opt.warmup, NULL},
        {"verbose", BENCH_OPT_FLAG, &opt.verbose, NULL},
        {NULL, 0, NULL, NULL}};
    if (bench_parse_opts(argc, argv, opts) < 0) usage();
    if (opt.port <= 0 || opt.body < BENCH_BODY_HDR || opt.body > 60000 ||
        opt.connect_parallel < 1 || opt.msg_timeout <= 0 || opt.keepalive < 5)
        usage();
    if (!opt.secret_file) bench_die("--secret-file is needed (the broker's HS256 secret)");
    switch (opt.scenario) {
    case SC_FANOUT:
        if (opt.online < 1 || opt.online > 19000 || opt.offline < 0 ||
            opt.online + opt.offline > 99999 || opt.messages < 1 || opt.warmup_msgs < 0 ||
            opt.burst < 0 || opt.typing < 0 || opt.pause_ms < 0 ||
            opt.warmup_msgs + opt.messages + opt.burst >= RING)
            usage();
        break;
    case SC_CATCHUP:
        if (opt.convs < 1 || opt.convs > 1000 || opt.conv_msgs < 1 || opt.filler < 0 ||
            opt.filler > 999 || opt.pull_limit < 0)
            usage();
        break;
    case SC_INTERFERENCE:
        if (opt.plain_port <= 0 || opt.members < 2 || opt.members > 100000 ||
            opt.group_online < 1 || opt.group_online >= opt.members || opt.group_online > 19000 ||
            opt.group_rate <= 0 || opt.pairs < 1 || opt.pairs > 1000 || opt.pair_rate <= 0 ||
            opt.window < 1 || opt.duration <= 0 || opt.warmup < 0 ||
            opt.group_rate * (opt.warmup + opt.duration) * NWIN >= RING)
            usage();
        break;
    }
}

int main(int argc, char **argv)
{
    bench_init("group_bench");
    parse_args(argc, argv);
    run_nonce = bench_run_nonce();
    body_tmpl = bench_body_template(opt.body);
    mosquitto_lib_init();
    int rc;
    switch (opt.scenario) {
    case SC_FANOUT:
        rc = run_fanout();
        break;
    case SC_CATCHUP:
        rc = run_catchup();
        break;
    default:
        rc = run_interference();
        break;
    }
    fflush(stdout);
    /* The clients are left to the process exit: it ends here. */
    mosquitto_lib_cleanup();
    return rc ? 1 : 0;
}
