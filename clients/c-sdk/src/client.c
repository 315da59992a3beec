/* client.c — libmqchat, the device side of docs/PROTOCOL.md: options,
 * mqchat_new/free, connect/disconnect and the lock.
 *
 * The idea: one engine, under one (recursive) mutex c->mu, fed by the paho
 * thread (connects, packets, lost connections) and by the SDK's timer
 * thread (reconnects with backoff, outbox, sync and pull retries). The
 * app's calls take the same lock, queue work and return. The engine is cut
 * by job; client_int.h declares the struct the files share:
 *
 *   client.c    this file: options, new/free, connect/disconnect, lock
 *   conn.c      the paho session: callbacks, reconnects, the timer thread,
 *               publishing
 *   deliver.c   the delivery rules: inbox cursor, gaps and sync, large
 *               conversations and pulls, the progress FIFO and its commits
 *   outbox.c    sends: the SQLite outbox, (re)publishing, SendAck
 *   requests.c  the thin requests (history, lists, groups, presence,
 *               typing, receipts, push) and their responses
 *   events.c    events for the app: decoding packets, the callback or the
 *               poll queue (a wake fd)
 *   platform.c  the OS calls that differ on iOS and Android (platform.h)
 *
 * Invariant: c->depth counts the holder's nesting of c->mu (asserted in
 * unlock()), so the packets publish() queued go out (drain_out) only once
 * the lock is really released: nothing calls into paho holding c->mu. */
#include "client_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

/* c->mu is recursive (the app may call the SDK from a callback); depth
 * counts the holder's nesting so that drain_out() runs only once the lock
 * is really released. */
void lock(mqchat_client *c)
{
    pthread_mutex_lock(&c->mu);
    c->depth++;
}

void unlock(mqchat_client *c)
{
    assert(c->depth > 0);
    int depth = --c->depth;
    pthread_mutex_unlock(&c->mu);
    if (depth == 0) drain_out(c);
}

void mqchat_options_init(mqchat_options *o)
{
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->mqtt_version = 4;
    o->topic_prefix = "mqchat/v1";
    o->keepalive_s = 30;
    o->backoff_min_ms = 500;
    o->backoff_max_ms = 30000;
}

static void set_err(char **err, const char *msg)
{
    if (err) *err = strdup(msg);
}

static int valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 128) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static void client_destroy(mqchat_client *c)
{
    while (c->qh) {
        ievent *ie = c->qh;
        c->qh = ie->next;
        event_clear(&ie->ev);
        free(ie);
    }
    outpkt_free_all(&c->oh, &c->ot);
    outpkt_free_all(&c->rh, &c->rt);
    while (c->ph) {
        progress *p = c->ph;
        c->ph = p->next;
        free(p->conv);
        free(p);
    }
    while (c->n_pulls)
        pull_pop(c);
    free(c->pulls);
    for (size_t i = 0; i < c->n_convs; i++) {
        while (c->convs[i].dh) {
            deferred *d = c->convs[i].dh;
            c->convs[i].dh = d->next;
            free(d->buf);
            free(d);
        }
        free(c->convs[i].conv);
    }
    free(c->convs);
    if (c->mq) MQTTAsync_destroy(&c->mq);
    mqc_state_close(c->st);
    mqc_wake_close(&c->wake);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->out_mu);
    free(c->host);
    free(c->user);
    free(c->device);
    free(c->prefix);
    free(c->ca_file);
    free(c->path);
    free(c);
}

mqchat_client *mqchat_new(const mqchat_options *o, char **err)
{
    if (err) *err = NULL;
    if (!o || !valid_id(o->user) || !valid_id(o->device) || !o->state_dir || !o->token) {
        set_err(err, "options: user and device ([A-Za-z0-9._-], 1-128 bytes), state_dir and "
                     "token are required");
        return NULL;
    }
    if (o->mqtt_version != 4 && o->mqtt_version != 5) {
        set_err(err, "options: mqtt_version must be 4 or 5");
        return NULL;
    }
    if (!o->poll_mode && !o->on_event) {
        set_err(err, "options: on_event is required unless poll_mode is set");
        return NULL;
    }
    mqchat_client *c = calloc(1, sizeof(*c));
    if (!c) {
        set_err(err, "out of memory");
        return NULL;
    }
    c->wake.rfd = c->wake.wfd = -1;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&c->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_mutex_init(&c->out_mu, NULL);
    mqc_cond_init(&c->cond);
    c->host = xstrdup(o->host ? o->host : "127.0.0.1");
    c->user = xstrdup(o->user);
    c->device = xstrdup(o->device);
    c->prefix = xstrdup(o->topic_prefix ? o->topic_prefix : "mqchat/v1");
    c->ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
    c->use_tls = o->use_tls;
    c->port = o->port > 0 ? o->port : (o->use_tls ? 8883 : 1883);
    c->mqtt_version = o->mqtt_version;
    c->keepalive_s = o->keepalive_s > 0 ? o->keepalive_s : 30;
    c->backoff_min_ms = o->backoff_min_ms > 0 ? o->backoff_min_ms : 500;
    c->backoff_max_ms = o->backoff_max_ms >= c->backoff_min_ms ? o->backoff_max_ms : 30000;
    if (c->backoff_max_ms < c->backoff_min_ms) c->backoff_max_ms = c->backoff_min_ms;
    c->poll_mode = o->poll_mode;
    c->token = o->token;
    c->on_event = o->on_event;
    c->persist = o->persist;
    c->data = o->data;
    size_t pn = strlen(o->state_dir) + strlen(c->user) + strlen(c->device) + 16;
    c->path = malloc(pn);
    if (!c->host || !c->user || !c->device || !c->prefix || !c->path) {
        set_err(err, "out of memory");
        client_destroy(c);
        return NULL;
    }
    snprintf(c->path, pn, "%s/%s.%s.sqlite", o->state_dir, c->user, c->device);
    const char *p = c->prefix, *u = c->user, *d = c->device;
    snprintf(c->t_send, sizeof(c->t_send), "%s/u/%s/d/%s/send", p, u, d);
    snprintf(c->t_req, sizeof(c->t_req), "%s/u/%s/d/%s/req", p, u, d);
    snprintf(c->t_receipt, sizeof(c->t_receipt), "%s/u/%s/d/%s/receipt", p, u, d);
    snprintf(c->t_typing, sizeof(c->t_typing), "%s/u/%s/d/%s/typing", p, u, d);
    snprintf(c->t_ack, sizeof(c->t_ack), "%s/u/%s/d/%s/ack", p, u, d);
    snprintf(c->t_resp, sizeof(c->t_resp), "%s/u/%s/d/%s/resp", p, u, d);
    snprintf(c->t_inbox, sizeof(c->t_inbox), "%s/u/%s/inbox", p, u);
    if (strlen(p) > 300) {
        set_err(err, "options: topic_prefix too long");
        client_destroy(c);
        return NULL;
    }
    char *serr = NULL;
    if (mqc_state_open(c->path, &c->st, &serr) != 0) {
        set_err(err, serr ? serr : "state: open failed");
        free(serr);
        client_destroy(c);
        return NULL;
    }
    if (mqc_state_cursor(c->st, &c->cursor_committed) != 0) {
        set_err(err, "state: cannot read the cursor");
        client_destroy(c);
        return NULL;
    }
    c->cursor_mem = c->cursor_committed;
    c->outbox_n = mqc_state_outbox_count(c->st); /* -1: SENT says unknown */
    if (mqc_state_restore_floor(c->st, &c->restore_floor) != 0) {
        set_err(err, "state: cannot read the restore floor");
        client_destroy(c);
        return NULL;
    }
    unsigned char r[4];
    if (mqc_random(r, sizeof(r)) != 0) memset(r, 0, sizeof(r));
    snprintf(c->nonce, sizeof(c->nonce), "%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
    if (c->poll_mode) {
        if (mqc_wake_open(&c->wake) != 0) {
            set_err(err, "cannot make the poll-mode wake fd");
            client_destroy(c);
            return NULL;
        }
    }
    if (paho_new(c, &c->mq) != 0) {
        set_err(err, "MQTTAsync_create failed");
        client_destroy(c);
        return NULL;
    }
    if (pthread_create(&c->timer, NULL, timer_main, c) != 0) {
        set_err(err, "cannot start the timer thread");
        client_destroy(c);
        return NULL;
    }
    c->timer_started = 1;
    return c;
}

void mqchat_free(mqchat_client *c)
{
    if (!c) return;
    lock(c);
    c->quit = 1;
    c->want = 0;
    int was = c->connected || c->connecting;
    pthread_cond_signal(&c->cond);
    unlock(c);
    if (c->timer_started) pthread_join(c->timer, NULL);
    if (was) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        d.timeout = 1000;
        MQTTAsync_disconnect(c->mq, &d);
        for (int i = 0; i < 100 && MQTTAsync_isConnected(c->mq); i++)
            usleep(10000);
    }
    MQTTAsync_destroy(&c->mq); /* no paho callback runs after this */
    c->mq = NULL;
    c->connected = 0;
    lock(c);
    flush(c); /* what the app finished with is committed (nothing is sent) */
    c->depth--;
    pthread_mutex_unlock(&c->mu);
    client_destroy(c);
}

int mqchat_connect(mqchat_client *c)
{
    if (!c) return MQCHAT_ERR;
    lock(c);
    c->want = 1;
    c->taken_over = 0;
    c->quick_drops = 0;
    c->after_loss = 0;
    if (!c->connected && !c->connecting) c->reconnect_at = now_ms();
    pthread_cond_signal(&c->cond);
    unlock(c);
    return MQCHAT_OK;
}

int mqchat_disconnect(mqchat_client *c)
{
    if (!c) return MQCHAT_ERR;
    lock(c);
    c->want = 0;
    c->reconnect_at = 0;
    int was = c->connected || c->connecting;
    if (was) {
        c->connecting = 0;
        c->connected_at = 0; /* a requested disconnect is no quick drop */
        if (c->connected) lost_session(c, "disconnect requested");
        c->connected = 0;
    }
    unlock(c);
    if (was) {
        /* Not while the timer replaces the handle (conn.c, fresh_paho):
         * that one is being destroyed, the new one not connected. */
        pthread_mutex_lock(&c->out_mu);
        int use = !c->swapping;
        if (use) c->mq_users++;
        pthread_mutex_unlock(&c->out_mu);
        if (use) {
            MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
            d.timeout = 1000;
            MQTTAsync_disconnect(c->mq, &d);
            pthread_mutex_lock(&c->out_mu);
            c->mq_users--;
            pthread_mutex_unlock(&c->out_mu);
        }
    }
    return MQCHAT_OK;
}

void mqchat__test_drop_live(mqchat_client *c, int n)
{
    lock(c);
    c->drop_nth = n;
    c->live_count = 0;
    unlock(c);
}

const char *mqchat__topic(mqchat_client *c, const char *which)
{
    if (strcmp(which, "inbox") == 0) return c->t_inbox;
    if (strcmp(which, "ack") == 0) return c->t_ack;
    if (strcmp(which, "resp") == 0) return c->t_resp;
    return "";
}
