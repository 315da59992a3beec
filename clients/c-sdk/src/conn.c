/* conn.c — the paho MQTTAsync session: connecting, its callbacks, the
 * timer thread, and publishing.
 *
 * The timer thread (timer_main) connects when c->reconnect_at is due and
 * runs the retries (outbox resend, sync, pull) and the acks (send_acks)
 * whose time has come. A
 * failed connect or a lost session schedules the next attempt with full
 * jitter: a random delay in [0, min(backoff_max, backoff_min * 2^attempt)].
 * A refused connect (not authorized) fetches a fresh token once and retries
 * at once. A session that is taken over (MQTT 5 reason 0x8E, or under
 * 3.1.1 two quick drops in a row of re-established sessions, see
 * lost_session) is not reconnected until the app calls mqchat_connect.
 * Every (re)connect subscribes, resends the outbox and syncs the inbox.
 *
 * Paho holds its own lock while it runs our callbacks, and those take
 * c->mu: so nothing calls into paho while holding c->mu. publish() only
 * queues (under c->out_mu); drain_out() sends, in queue order, one thread
 * at a time, after c->mu is released (unlock). do_connect and the timer's
 * wait assert that the timer thread holds c->mu exactly once before they
 * release it. */
#include "client_int.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int publish(mqchat_client *c, const char *topic, const ProtobufCMessage *m, int qos)
{
    if (!c->connected) return MQCHAT_ERR_OFFLINE;
    size_t n = protobuf_c_message_get_packed_size(m);
    outpkt *o = calloc(1, sizeof(*o));
    if (!o) return MQCHAT_ERR;
    o->buf = malloc(n ? n : 1);
    o->topic = strdup(topic);
    if (!o->buf || !o->topic) {
        free(o->buf);
        free(o->topic);
        free(o);
        return MQCHAT_ERR;
    }
    protobuf_c_message_pack(m, o->buf);
    o->len = n;
    o->qos = qos;
    pthread_mutex_lock(&c->out_mu);
    if (c->ot)
        c->ot->next = o;
    else
        c->oh = o;
    c->ot = o;
    pthread_mutex_unlock(&c->out_mu);
    return MQCHAT_OK;
}

void outpkt_free_all(outpkt **head, outpkt **tail)
{
    while (*head) {
        outpkt *o = *head;
        *head = o->next;
        free(o->buf);
        free(o->topic);
        free(o);
    }
    *tail = NULL;
}

/* Sends what publish() queued. Called without c->mu held. One thread
 * drains at a time (so the order holds); the others leave it to that one. */
void drain_out(mqchat_client *c)
{
    pthread_mutex_lock(&c->out_mu);
    if (c->draining || c->swapping) {
        pthread_mutex_unlock(&c->out_mu);
        return;
    }
    c->draining = 1;
    while (c->oh) {
        outpkt *o = c->oh;
        c->oh = o->next;
        if (!c->oh) c->ot = NULL;
        pthread_mutex_unlock(&c->out_mu);
        MQTTAsync_message msg = MQTTAsync_message_initializer;
        msg.payload = o->buf;
        msg.payloadlen = (int)o->len;
        msg.qos = o->qos;
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        /* A failure (connection gone) is covered: sends are in the outbox,
         * and sync, pulls and acks start again on the next connect. A full
         * paho queue is not: say so (it should not happen below
         * MQCHAT_PAHO_MAX_BUFFERED). */
        int rc = MQTTAsync_sendMessage(c->mq, o->topic, &msg, &ro);
        if (rc == MQTTASYNC_MAX_BUFFERED_MESSAGES)
            fprintf(stderr, "mqchat: paho's queue is full: a publish to %s was dropped\n",
                    o->topic);
        free(o->buf);
        free(o->topic);
        free(o);
        pthread_mutex_lock(&c->out_mu);
    }
    c->draining = 0;
    pthread_mutex_unlock(&c->out_mu);
}

static void new_rid(mqchat_client *c, char kind, char out[MQCHAT_ID_BUF])
{
    snprintf(out, MQCHAT_ID_BUF, "%c%s.%" PRIu64, kind, c->nonce, ++c->rid_counter);
}

/* Publishes a Request with a fresh id of the given kind ('a' app, 's' sync,
 * 'p' pull, 'i' internal acks). */
int request(mqchat_client *c, char kind, Mqchat__V1__Request *r, char rid[MQCHAT_ID_BUF])
{
    char buf[MQCHAT_ID_BUF];
    new_rid(c, kind, buf);
    r->request_id = buf;
    int rc = publish(c, c->t_req, &r->base, 1);
    if (rc == MQCHAT_OK && rid) memcpy(rid, buf, MQCHAT_ID_BUF);
    return rc;
}

/* Makes *mq, a paho client with our callbacks. */
int paho_new(mqchat_client *c, MQTTAsync *mq)
{
    char uri[600], cid[300];
    snprintf(uri, sizeof(uri), "%s://%s:%d", c->use_tls ? "ssl" : "tcp", c->host, c->port);
    snprintf(cid, sizeof(cid), "%s:%s", c->user, c->device);
    MQTTAsync_createOptions cro = MQTTAsync_createOptions_initializer;
    cro.MQTTVersion = c->mqtt_version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
    /* paho refuses publishes beyond maxBufferedMessages (default 100) queued
     * in its command queue: a reconnect with a big outbox, or a burst of
     * sends, would lose the rest (and the SyncRequest behind them). The
     * outbox bounds what we queue; paho's bound only has to be above it. */
    cro.maxBufferedMessages = MQCHAT_PAHO_MAX_BUFFERED;
    if (MQTTAsync_createWithOptions(mq, uri, cid, MQTTCLIENT_PERSISTENCE_NONE, NULL, &cro) !=
        MQTTASYNC_SUCCESS) {
        *mq = NULL;
        return -1;
    }
    if (MQTTAsync_setCallbacks(*mq, c, on_lost, on_arrived, NULL) != MQTTASYNC_SUCCESS ||
        (c->mqtt_version == 5 &&
         MQTTAsync_setDisconnected(*mq, c, on_disconnected5) != MQTTASYNC_SUCCESS)) {
        MQTTAsync_destroy(mq);
        *mq = NULL;
        return -1;
    }
    return 0;
}

/* After a lost session, the next connect gets a new paho client. paho
 * keeps the publishes it had queued when the connection died and sends
 * them first on its next connection, before the outbox resend that
 * connected() queues: a send made just before the loss was noticed would
 * overtake older sends, and the server numbers sends in arrival order.
 * A new client has nothing queued, so every session publishes the outbox
 * in outbox order. Timer thread, c->mu held once; released meanwhile (paho
 * runs callbacks under its own lock, and they take c->mu). Packets still
 * queued for the old session are dropped: sends are in the outbox, and
 * sync, pulls and acks start again with the next session. */
static int fresh_paho(mqchat_client *c)
{
    assert(c->depth == 1);
    unlock(c);
    /* The new client first: paho tears its threads and global state down
     * when its last client goes, and would start them again. */
    MQTTAsync fresh = NULL;
    int rc = paho_new(c, &fresh);
    pthread_mutex_lock(&c->out_mu);
    c->swapping = 1; /* drain_out and mqchat_disconnect leave c->mq alone from now */
    while (c->draining || c->mq_users) {
        pthread_mutex_unlock(&c->out_mu);
        usleep(1000);
        pthread_mutex_lock(&c->out_mu);
    }
    outpkt_free_all(&c->oh, &c->ot);
    pthread_mutex_unlock(&c->out_mu);
    if (rc == 0) {
        MQTTAsync_destroy(&c->mq); /* no callback of the old client runs after this */
        c->mq = fresh;
    }
    pthread_mutex_lock(&c->out_mu);
    c->swapping = 0;
    pthread_mutex_unlock(&c->out_mu);
    lock(c);
    if (rc == 0) c->mq_used = 0;
    return rc;
}

int on_arrived(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
    mqchat_client *c = ctx;
    char t[512];
    size_t n = tlen > 0 ? (size_t)tlen : strlen(topic);
    if (n < sizeof(t)) {
        memcpy(t, topic, n);
        t[n] = 0;
        if (!c->poll_mode) {
            mqchat__handle_incoming(c, t, m->payload, (size_t)m->payloadlen);
        } else {
            /* Poll mode: only queue; mqchat_next_event() decodes on the app's thread. */
            outpkt *r = calloc(1, sizeof(*r));
            if (r) {
                r->topic = strdup(t);
                r->len = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
                r->buf = malloc(r->len ? r->len : 1);
            }
            if (r && r->topic && r->buf) {
                if (r->len) memcpy(r->buf, m->payload, r->len);
                lock(c);
                if (c->rt)
                    c->rt->next = r;
                else
                    c->rh = r;
                c->rt = r;
                mqc_wake_set(&c->wake);
                unlock(c);
            } else if (r) {
                free(r->topic);
                free(r->buf);
                free(r);
            }
        }
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void schedule_reconnect(mqchat_client *c)
{
    if (!c->want || c->taken_over || c->quit) return;
    int64_t cap = c->backoff_min_ms;
    for (int i = 0; i < c->attempt && cap < c->backoff_max_ms; i++)
        cap *= 2;
    if (cap > c->backoff_max_ms) cap = c->backoff_max_ms;
    uint32_t r = 0;
    if (mqc_random(&r, sizeof(r)) != 0) r = (uint32_t)now_ms();
    c->attempt++;
    c->reconnect_at = now_ms() + (cap > 0 ? (int64_t)(r % (uint32_t)(cap + 1)) : 0);
    if (c->reconnect_at == 0) c->reconnect_at = 1;
    pthread_cond_signal(&c->cond);
}

void lost_session(mqchat_client *c, const char *why)
{
    c->connected = 0;
    c->mq_used = 1; /* the next connect takes a new paho client (fresh_paho) */
    c->inbox_syncing = 0;
    c->sync_rid[0] = 0;
    c->pull_rid[0] = 0;
    c->catching_up = 0;
    c->sync_retry_at = c->pull_retry_at = 0;
    while (c->n_pulls)
        pull_pop(c);
    /* MQTT 3.1.1 says nothing when another connection with our client id
     * takes the session (and an MQTT 5 DISCONNECT 0x8E may not reach us
     * before the socket closes). The sign: a session we re-established
     * after losing one is itself dropped within 3 s, twice in a row — we
     * are kicking the new connection out and it kicks back. The app's own
     * first session never counts, so the newer device is the one that
     * stays. */
    int quick = c->session_is_reconnect && now_ms() - c->connected_at < 3000;
    c->quick_drops = quick ? c->quick_drops + 1 : 0;
    c->after_loss = 1;
    if (c->v5_reason == MQTTREASONCODE_SESSION_TAKEN_OVER || c->quick_drops >= 2) {
        c->taken_over = 1;
        emit_conn(c, MQCHAT_CONN_TAKEN_OVER,
                  c->v5_reason == MQTTREASONCODE_SESSION_TAKEN_OVER
                      ? "session taken over (0x8E)"
                      : "repeated disconnects right after connecting: another connection");
        return;
    }
    emit_conn(c, MQCHAT_CONN_DISCONNECTED, why);
    schedule_reconnect(c);
}

void on_lost(void *ctx, char *cause)
{
    mqchat_client *c = ctx;
    lock(c);
    if (c->connected) lost_session(c, cause ? cause : "connection lost");
    flush(c);
    unlock(c);
}

void on_disconnected5(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
{
    mqchat_client *c = ctx;
    lock(c);
    c->v5_reason = rc;
    if (c->connected) {
        lost_session(c, MQTTReasonCode_toString(rc));
    } else if (rc == MQTTREASONCODE_SESSION_TAKEN_OVER && !c->taken_over) {
        /* paho reported the lost connection first */
        c->taken_over = 1;
        c->reconnect_at = 0;
        emit_conn(c, MQCHAT_CONN_TAKEN_OVER, "session taken over (0x8E)");
    }
    unlock(c);
}

static void connected(mqchat_client *c)
{
    c->connecting = 0;
    c->connected = 1;
    c->attempt = 0;
    c->refresh = 0;
    c->v5_reason = MQTTREASONCODE_SUCCESS;
    c->connected_at = now_ms();
    c->session_is_reconnect = c->after_loss;
    c->cursor_acked = 0;                      /* ack again once per session: what was queued in */
    for (size_t i = 0; i < c->n_convs; i++) { /* the old one died with it */
        c->convs[i].position_acked = 0;
        c->convs[i].position_sent = 0;
    }
    emit_conn(c, MQCHAT_CONN_CONNECTED, "");
    char *topics[3] = {c->t_inbox, c->t_ack, c->t_resp};
    int qos[3] = {1, 1, 1};
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    MQTTAsync_subscribeMany(c->mq, 3, topics, qos, &ro);
    resend_outbox(c);
    send_read_marks(c);
    start_sync(c);
    /* Reload committed positions into memory (acked zeroed above). */
    for (size_t i = 0; i < c->n_convs; i++) {
        uint64_t h, p;
        if (mqc_state_conv(c->st, c->convs[i].conv, &h, &p) == 0) c->convs[i].position_acked = p;
    }
    schedule_acks(c); /* the cursor, once per session */
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *d)
{
    mqchat_client *c = ctx;
    lock(c);
    connected(c);
    flush(c);
    unlock(c);
}

static void on_connect_ok5(void *ctx, MQTTAsync_successData5 *d)
{
    on_connect_ok(ctx, NULL);
}

static void connect_failed(mqchat_client *c, int not_authorized, const char *why)
{
    c->connecting = 0;
    if (not_authorized && !c->refresh) {
        c->refresh = 1; /* fetch a new token, retry at once */
        c->reconnect_at = now_ms();
        pthread_cond_signal(&c->cond);
        emit_conn(c, MQCHAT_CONN_DISCONNECTED, "not authorized: refreshing the token");
        return;
    }
    emit_conn(c, MQCHAT_CONN_DISCONNECTED, why);
    schedule_reconnect(c);
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData *d)
{
    mqchat_client *c = ctx;
    char why[256];
    snprintf(why, sizeof(why), "connect failed (%d): %s", d ? d->code : 0,
             d && d->message ? d->message : "");
    lock(c);
    connect_failed(c, d && (d->code == 4 || d->code == 5), why);
    unlock(c);
}

static void on_connect_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
    mqchat_client *c = ctx;
    char why[256];
    snprintf(why, sizeof(why), "connect failed (%d): %s", d ? (int)d->reasonCode : 0,
             d && d->message ? d->message : "");
    lock(c);
    connect_failed(c,
                   d && (d->reasonCode == MQTTREASONCODE_NOT_AUTHORIZED ||
                         d->reasonCode == MQTTREASONCODE_BAD_USER_NAME_OR_PASSWORD),
                   why);
    unlock(c);
}

/* Called with the lock held, on the timer thread. */
static void do_connect(mqchat_client *c)
{
    char token[8192];
    if (!c->token || c->token(c->data, token, sizeof(token), c->refresh) != 0) {
        emit_conn(c, MQCHAT_CONN_DISCONNECTED, "no token");
        schedule_reconnect(c);
        return;
    }
    token[sizeof(token) - 1] = 0;
    if (c->mq_used) {
        int rc = fresh_paho(c);
        if (rc != 0 || !c->want || c->quit || c->connected || c->connecting || c->taken_over) {
            if (rc != 0) {
                emit_conn(c, MQCHAT_CONN_DISCONNECTED, "cannot make a new paho client");
                schedule_reconnect(c);
            }
            return;
        }
    }
    emit_conn(c, MQCHAT_CONN_CONNECTING, "");
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    MQTTAsync_connectOptions co5 = MQTTAsync_connectOptions_initializer5;
    MQTTAsync_connectOptions *o = c->mqtt_version == 5 ? &co5 : &co;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    o->keepAliveInterval = c->keepalive_s;
    o->username = c->user;
    o->password = token;
    o->context = c;
    o->connectTimeout = 10;
    if (c->mqtt_version == 5) {
        o->cleanstart = 1;
        o->onSuccess5 = on_connect_ok5;
        o->onFailure5 = on_connect_fail5;
    } else {
        o->cleansession = 1;
        o->MQTTVersion = MQTTVERSION_3_1_1;
        o->onSuccess = on_connect_ok;
        o->onFailure = on_connect_fail;
    }
    if (c->use_tls) {
        ssl.trustStore = c->ca_file;
        ssl.enableServerCertAuth = 1;
        ssl.verify = 1;
        o->ssl = &ssl;
    }
    c->connecting = 1;
    /* Timer thread, lock held once: release it around the call into paho. */
    assert(c->depth == 1);
    unlock(c);
    int rc = MQTTAsync_connect(c->mq, o);
    lock(c);
    if (rc != MQTTASYNC_SUCCESS && c->connecting) {
        c->connecting = 0;
        emit_conn(c, MQCHAT_CONN_DISCONNECTED, "connect could not start");
        schedule_reconnect(c);
    }
}

void *timer_main(void *arg)
{
    mqchat_client *c = arg;
    lock(c);
    while (!c->quit) {
        int64_t now = now_ms();
        if (c->want && !c->connected && !c->connecting && !c->taken_over && c->reconnect_at &&
            now >= c->reconnect_at) {
            c->reconnect_at = 0;
            do_connect(c);
            continue;
        }
        int64_t *due[4] = {&c->retry_at, &c->sync_retry_at, &c->pull_retry_at, &c->ack_at};
        int fired = -1;
        for (int i = 0; i < 4 && fired < 0; i++)
            if (*due[i] && now >= *due[i]) {
                *due[i] = 0;
                fired = i;
            }
        if (fired >= 0) {
            if (fired == 0) resend_outbox(c);
            if (fired == 1) start_sync(c);
            if (fired == 2 && c->connected && !c->pull_rid[0] && !c->inbox_syncing) next_pull(c);
            if (fired == 3) send_acks(c);
            flush(c);
            unlock(c); /* sends what was queued */
            lock(c);
            continue;
        }
        int64_t next = now + 1000;
        if (c->reconnect_at && c->reconnect_at < next) next = c->reconnect_at;
        for (int i = 0; i < 4; i++)
            if (*due[i] && *due[i] < next) next = *due[i];
        int64_t wait = next > now ? next - now : 1;
        assert(c->depth == 1);
        c->depth = 0;
        mqc_cond_wait_ms(&c->cond, &c->mu, wait);
        c->depth = 1;
    }
    unlock(c);
    return NULL;
}
