/* client.c — libmqchat: the device side of docs/PROTOCOL.md.
 *
 * The idea: one engine, under one (recursive) mutex, fed by the paho
 * thread (connects, packets, lost connections) and by the SDK's timer
 * thread (reconnects with backoff, outbox retries). The engine never
 * writes durable progress directly: every step that moves the inbox
 * cursor, a conversation's handed seq or its large-conversation position
 * becomes a `progress` item in one FIFO. An item whose message still sits
 * with the app is not done; the others are. flush() commits the done
 * prefix of the FIFO in one SQLite transaction and only then sends
 * CursorAck / PositionAck. So the cursor on disk never passes a message
 * the app has not finished with (callback returned, or event freed in poll
 * mode), and the server never trims what the device has not stored.
 *
 * In memory the engine runs ahead of the disk: cursor_mem and each conv's
 * handed_mem say what was handed (or queued for the app), and they decide
 * duplicates, gaps and where a sync starts. After a restart they start
 * again from the committed values. */
#include "internal.h"
#include "mqchat.h"
#include "state.h"

#include "mqchat.pb-c.h"

#include <MQTTAsync.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

typedef struct progress {
    int done;
    int has_cursor;
    uint64_t cursor;
    char *conv; /* NULL: no conversation change */
    uint64_t handed;
    uint64_t position;
    struct progress *next;
} progress;

typedef struct ievent {
    mqchat_event ev; /* first: mqchat_event_free casts back */
    mqchat_client *c;
    progress *p; /* MESSAGE: done when the app is finished with it */
    struct ievent *next;
} ievent;

typedef struct conv_state {
    char *conv;
    uint64_t handed_mem; /* highest seq handed or queued to the app */
    uint64_t position_acked;
    int pulling;
    uint64_t pull_after; /* the pull's start: inbox messages above it wait for the pull */
    /* Inbox messages of this conversation that arrived while it is pulled
     * (a group that turned small again while the device was away): handed
     * in seq order among the pulled ones. Each holds its place in the
     * progress FIFO (not done), so the cursor never passes it. */
    struct deferred *dh, *dt;
} conv_state;

typedef struct deferred {
    uint8_t *buf; /* the packed Message */
    size_t len;
    uint64_t seq;
    struct progress *p;
    struct deferred *next;
} deferred;

/* A packet to publish. Paho holds its own lock while it runs our
 * callbacks, and those take c->mu: so nothing calls into paho while holding
 * c->mu from another thread. Publishes queue here under c->mu and go out
 * from drain_out(), after c->mu is released, in queue order. */
typedef struct outpkt {
    char *topic;
    uint8_t *buf;
    size_t len;
    int qos;
    struct outpkt *next;
} outpkt;

typedef struct pull_job {
    char *conv;
    uint64_t after;
} pull_job;

struct mqchat_client {
    /* options */
    char *host, *user, *device, *prefix, *ca_file, *path;
    int port, use_tls, mqtt_version, keepalive_s, backoff_min_ms, backoff_max_ms, poll_mode;
    mqchat_token_fn token;
    mqchat_event_fn on_event;
    void *data;
    char t_send[512], t_req[512], t_receipt[512], t_typing[512], t_ack[512], t_resp[512],
        t_inbox[512];

    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t timer;
    int timer_started, quit;
    MQTTAsync mq;
    mqc_state *st;
    int efd;

    /* connection */
    int want, connected, connecting, taken_over, attempt, refresh, quick_drops;
    int after_loss, session_is_reconnect; /* taken-over detection (lost_session) */
    int64_t connected_at, reconnect_at, retry_at;
    int64_t sync_retry_at, pull_retry_at; /* after a RATE_LIMITED / UNAVAILABLE answer */
    enum MQTTReasonCodes v5_reason;

    /* sync */
    uint64_t cursor_mem, cursor_committed, cursor_acked, max_seen_live;
    int inbox_syncing, catching_up;
    char sync_rid[MQCHAT_ID_BUF], pull_rid[MQCHAT_ID_BUF];
    int sync_positions; /* next page asks positions */
    char positions_after[MQCHAT_ID_BUF];
    pull_job *pulls;
    size_t n_pulls, cap_pulls;
    conv_state *convs;
    size_t n_convs, cap_convs;

    progress *ph, *pt;
    ievent *qh, *qt;
    pthread_mutex_t out_mu; /* guards oh/ot/draining, never held with c->mu taken after it */
    outpkt *oh, *ot;
    outpkt *rh, *rt; /* poll mode: packets received, not decoded yet (under mu) */
    int draining;
    int depth; /* nesting of c->mu by its holder */
    uint64_t rid_counter;
    char nonce[9];
    int drop_nth, live_count;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

/* ---- events ------------------------------------------------------------- */

static void message_clear(mqchat_message *m)
{
    free(m->conv);
    free(m->sender_user);
    free(m->sender_device);
    free(m->cmid);
    free(m->content_type);
    free(m->body);
    free(m->actor);
    free(m->title);
    for (size_t i = 0; i < m->n_users; i++)
        free(m->users[i]);
    free(m->users);
}

static void event_clear(mqchat_event *ev)
{
    switch (ev->type) {
    case MQCHAT_EV_MESSAGE:
        message_clear(&ev->message);
        break;
    case MQCHAT_EV_SENT:
    case MQCHAT_EV_SEND_FAILED:
        free(ev->sent.error_message);
        break;
    case MQCHAT_EV_RECEIPT:
        free(ev->receipt.conv);
        free(ev->receipt.user);
        break;
    case MQCHAT_EV_TYPING:
        free(ev->typing.conv);
        free(ev->typing.user);
        break;
    case MQCHAT_EV_PRESENCE:
        free(ev->presence.user);
        break;
    case MQCHAT_EV_CONNECTION:
        free(ev->connection.reason);
        break;
    case MQCHAT_EV_RESPONSE:
        free(ev->response.error_message);
        free(ev->response.group_conv);
        for (size_t i = 0; i < ev->response.n_messages; i++)
            message_clear(&ev->response.messages[i]);
        free(ev->response.messages);
        for (size_t i = 0; i < ev->response.n_conversations; i++)
            free(ev->response.conversations[i].conv);
        free(ev->response.conversations);
        for (size_t i = 0; i < ev->response.n_presence; i++)
            free(ev->response.presence[i].user);
        free(ev->response.presence);
        break;
    case MQCHAT_EV_ERROR:
        free(ev->error.message);
        break;
    }
}

static ievent *ev_new(mqchat_client *c, mqchat_event_type t)
{
    ievent *ie = calloc(1, sizeof(*ie));
    if (!ie) return NULL;
    ie->ev.type = t;
    ie->c = c;
    return ie;
}

static void flush(mqchat_client *c);
static void hand_deferred_all(mqchat_client *c, const char *conv, uint64_t below);

/* Hands an event to the app: the callback now, or the poll queue. */
static void emit(mqchat_client *c, ievent *ie)
{
    if (!ie) return;
    if (c->poll_mode) {
        if (c->qt)
            c->qt->next = ie;
        else
            c->qh = ie;
        c->qt = ie;
        uint64_t one = 1;
        if (write(c->efd, &one, sizeof(one)) < 0) { /* counter full: still readable */
        }
        return;
    }
    if (c->on_event) c->on_event(c->data, &ie->ev);
    if (ie->p) ie->p->done = 1;
    event_clear(&ie->ev);
    free(ie);
}

static void emit_error(mqchat_client *c, const char *fmt, ...)
{
    ievent *ie = ev_new(c, MQCHAT_EV_ERROR);
    if (!ie) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ie->ev.error.message = strdup(buf);
    emit(c, ie);
}

static void emit_conn(mqchat_client *c, mqchat_conn_state s, const char *reason)
{
    ievent *ie = ev_new(c, MQCHAT_EV_CONNECTION);
    if (!ie) return;
    ie->ev.connection.state = s;
    ie->ev.connection.reason = xstrdup(reason);
    emit(c, ie);
}

static int copy_message(mqchat_message *d, const Mqchat__V1__Message *m)
{
    memset(d, 0, sizeof(*d));
    d->conv = xstrdup(m->conversation_id);
    d->seq = m->seq;
    d->sender_user = xstrdup(m->sender_user_id);
    d->sender_device = xstrdup(m->sender_device_id);
    d->time_ms = m->server_time_ms;
    d->cmid = xstrdup(m->client_msg_id);
    d->kind = (int)m->kind;
    d->content_type = xstrdup(m->content_type);
    d->body = malloc(m->body.len + 1);
    if (d->body && m->body.len) memcpy(d->body, m->body.data, m->body.len);
    if (d->body) d->body[m->body.len] = 0;
    d->body_len = m->body.len;
    d->reply_to_seq = m->reply_to_seq;
    d->edited = m->edited;
    d->deleted = m->deleted;
    d->expired = m->expired;
    d->inbox_seq = m->inbox_seq;
    const Mqchat__V1__ConversationEvent *e = m->event;
    d->actor = xstrdup(e ? e->actor_user_id : "");
    d->title = xstrdup(e ? e->title : "");
    if (e) {
        d->event_type = (int)e->type;
        d->target_seq = e->target_seq;
        d->mode = (int)e->mode;
        if (e->n_user_ids) {
            d->users = calloc(e->n_user_ids, sizeof(char *));
            if (d->users) {
                d->n_users = e->n_user_ids;
                for (size_t i = 0; i < e->n_user_ids; i++)
                    d->users[i] = xstrdup(e->user_ids[i]);
            }
        }
    }
    int ok = d->conv && d->sender_user && d->sender_device && d->cmid && d->content_type &&
             d->body && d->actor && d->title && (!e || !e->n_user_ids || d->users);
    for (size_t i = 0; ok && i < d->n_users; i++)
        ok = d->users[i] != NULL;
    return ok ? 0 : -1;
}

/* ---- per-conversation memory --------------------------------------------- */

static conv_state *conv_get(mqchat_client *c, const char *conv)
{
    for (size_t i = 0; i < c->n_convs; i++)
        if (strcmp(c->convs[i].conv, conv) == 0) return &c->convs[i];
    if (c->n_convs == c->cap_convs) {
        size_t n = c->cap_convs ? 2 * c->cap_convs : 16;
        conv_state *nc = realloc(c->convs, n * sizeof(*nc));
        if (!nc) return NULL;
        c->convs = nc;
        c->cap_convs = n;
    }
    conv_state *cs = &c->convs[c->n_convs];
    memset(cs, 0, sizeof(*cs));
    uint64_t handed = 0, position = 0;
    if (mqc_state_conv(c->st, conv, &handed, &position) != 0) return NULL;
    cs->conv = strdup(conv);
    if (!cs->conv) return NULL;
    cs->handed_mem = handed > position ? handed : position;
    cs->position_acked = position;
    c->n_convs++;
    return cs;
}

/* ---- progress FIFO ------------------------------------------------------- */

static progress *progress_add(mqchat_client *c, int done, int has_cursor, uint64_t cursor,
                              const char *conv, uint64_t handed, uint64_t position)
{
    progress *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->done = done;
    p->has_cursor = has_cursor;
    p->cursor = cursor;
    p->conv = conv ? strdup(conv) : NULL;
    p->handed = handed;
    p->position = position;
    if (c->pt)
        c->pt->next = p;
    else
        c->ph = p;
    c->pt = p;
    return p;
}

/* ---- publishing ---------------------------------------------------------- */

static int publish(mqchat_client *c, const char *topic, const ProtobufCMessage *m, int qos)
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

/* Sends what publish() queued. Called without c->mu held. One thread
 * drains at a time (so the order holds); the others leave it to that one. */
static void drain_out(mqchat_client *c)
{
    pthread_mutex_lock(&c->out_mu);
    if (c->draining) {
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
         * and sync, pulls and acks start again on the next connect. */
        MQTTAsync_sendMessage(c->mq, o->topic, &msg, &ro);
        free(o->buf);
        free(o->topic);
        free(o);
        pthread_mutex_lock(&c->out_mu);
    }
    c->draining = 0;
    pthread_mutex_unlock(&c->out_mu);
}

/* c->mu is recursive (the app may call the SDK from a callback); depth
 * counts the holder's nesting so that drain_out() runs only once the lock
 * is really released. */
static void lock(mqchat_client *c)
{
    pthread_mutex_lock(&c->mu);
    c->depth++;
}

static void unlock(mqchat_client *c)
{
    assert(c->depth > 0);
    int depth = --c->depth;
    pthread_mutex_unlock(&c->mu);
    if (depth == 0) drain_out(c);
}

static void new_rid(mqchat_client *c, char kind, char out[MQCHAT_ID_BUF])
{
    snprintf(out, MQCHAT_ID_BUF, "%c%s.%" PRIu64, kind, c->nonce, ++c->rid_counter);
}

/* Publishes a Request with a fresh id of the given kind ('a' app, 's' sync,
 * 'p' pull, 'i' internal acks). */
static int request(mqchat_client *c, char kind, Mqchat__V1__Request *r, char rid[MQCHAT_ID_BUF])
{
    char buf[MQCHAT_ID_BUF];
    new_rid(c, kind, buf);
    r->request_id = buf;
    int rc = publish(c, c->t_req, &r->base, 1);
    if (rc == MQCHAT_OK && rid) memcpy(rid, buf, MQCHAT_ID_BUF);
    return rc;
}

static void send_entry(mqchat_client *c, const char *cmid, const char *conv, const char *ct,
                       const void *body, size_t len)
{
    Mqchat__V1__SendRequest s = MQCHAT__V1__SEND_REQUEST__INIT;
    s.client_msg_id = (char *)cmid;
    s.conversation_id = (char *)conv;
    s.content_type = (char *)ct;
    s.body.data = (uint8_t *)body;
    s.body.len = len;
    publish(c, c->t_send, &s.base, 1);
}

static void resend_outbox(mqchat_client *c)
{
    mqc_outbox_entry *e;
    size_t n;
    if (mqc_state_outbox_list(c->st, &e, &n) != 0) {
        emit_error(c, "outbox: %s", mqc_state_errmsg(c->st));
        return;
    }
    for (size_t i = 0; i < n; i++)
        send_entry(c, e[i].cmid, e[i].conv, e[i].content_type, e[i].body, e[i].body_len);
    mqc_outbox_free(e, n);
}

/* ---- committing progress -------------------------------------------------- */

static void flush(mqchat_client *c)
{
    if (!c->ph || !c->ph->done) return;
    if (mqc_state_begin(c->st) != 0) {
        emit_error(c, "state: begin: %s", mqc_state_errmsg(c->st));
        return;
    }
    uint64_t cursor = c->cursor_committed;
    int cursor_moved = 0, rc = 0;
    progress *p;
    for (p = c->ph; p && p->done && rc == 0; p = p->next) {
        if (p->has_cursor) {
            cursor = p->cursor;
            cursor_moved = 1;
            rc = mqc_state_set_cursor(c->st, cursor);
        }
        if (rc == 0 && p->conv && p->handed) rc = mqc_state_set_handed(c->st, p->conv, p->handed);
        if (rc == 0 && p->conv && p->position)
            rc = mqc_state_set_position(c->st, p->conv, p->position);
    }
    if (rc != 0 || mqc_state_commit(c->st) != 0) {
        emit_error(c, "state: commit: %s", mqc_state_errmsg(c->st));
        mqc_state_rollback(c->st);
        return;
    }
    /* Committed: drop the items, then tell the server. */
    while (c->ph && c->ph->done) {
        p = c->ph;
        c->ph = p->next;
        if (!c->ph) c->pt = NULL;
        if (p->conv && p->position) {
            conv_state *cs = conv_get(c, p->conv);
            if (cs && p->position > cs->position_acked && c->connected) {
                Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
                Mqchat__V1__PositionAck pa = MQCHAT__V1__POSITION_ACK__INIT;
                pa.conversation_id = p->conv;
                pa.seq = p->position;
                r.body_case = MQCHAT__V1__REQUEST__BODY_POSITION_ACK;
                r.position_ack = &pa;
                if (request(c, 'i', &r, NULL) == MQCHAT_OK) cs->position_acked = p->position;
            }
        }
        free(p->conv);
        free(p);
    }
    if (cursor_moved) c->cursor_committed = cursor;
    if (c->connected && c->cursor_committed > c->cursor_acked) {
        Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
        Mqchat__V1__CursorAck ca = MQCHAT__V1__CURSOR_ACK__INIT;
        ca.inbox_seq = c->cursor_committed;
        r.body_case = MQCHAT__V1__REQUEST__BODY_CURSOR_ACK;
        r.cursor_ack = &ca;
        if (request(c, 'i', &r, NULL) == MQCHAT_OK) c->cursor_acked = c->cursor_committed;
    }
}

/* ---- sync and pulls ------------------------------------------------------- */

static void send_sync(mqchat_client *c)
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__SyncRequest s = MQCHAT__V1__SYNC_REQUEST__INIT;
    s.after_inbox_seq = c->cursor_mem;
    s.limit = 100;
    s.positions = c->sync_positions;
    s.positions_after = c->positions_after;
    r.body_case = MQCHAT__V1__REQUEST__BODY_SYNC;
    r.sync = &s;
    if (request(c, 's', &r, c->sync_rid) != MQCHAT_OK) {
        c->inbox_syncing = 0;
        c->sync_rid[0] = 0;
    }
}

static void start_sync(mqchat_client *c)
{
    if (!c->connected || c->inbox_syncing) return;
    c->inbox_syncing = 1;
    c->catching_up = 1;
    c->sync_positions = 1;
    c->positions_after[0] = 0;
    send_sync(c);
}

static void next_pull(mqchat_client *c)
{
    while (c->n_pulls > 0) {
        pull_job *j = &c->pulls[0];
        Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
        Mqchat__V1__ConversationPull p = MQCHAT__V1__CONVERSATION_PULL__INIT;
        p.conversation_id = j->conv;
        p.after_seq = j->after;
        r.body_case = MQCHAT__V1__REQUEST__BODY_PULL;
        r.pull = &p;
        if (request(c, 'p', &r, c->pull_rid) == MQCHAT_OK) return;
        c->pull_rid[0] = 0;
        return; /* offline: the next connect syncs again */
    }
    c->pull_rid[0] = 0;
    if (!c->inbox_syncing) /* no pull left: nothing to wait for */
        for (size_t i = 0; i < c->n_convs; i++)
            if (c->convs[i].dh) hand_deferred_all(c, c->convs[i].conv, 0);
    if (c->catching_up && !c->inbox_syncing) {
        c->catching_up = 0;
        emit_conn(c, MQCHAT_CONN_UP_TO_DATE, "");
    }
}

static void pull_pop(mqchat_client *c)
{
    assert(c->n_pulls > 0);
    conv_state *cs = conv_get(c, c->pulls[0].conv);
    if (cs) cs->pulling = 0;
    free(c->pulls[0].conv);
    memmove(c->pulls, c->pulls + 1, (c->n_pulls - 1) * sizeof(*c->pulls));
    c->n_pulls--;
}

static void pull_add(mqchat_client *c, const char *conv, uint64_t after)
{
    conv_state *cs = conv_get(c, conv);
    if (!cs || cs->pulling) return;
    if (c->n_pulls == c->cap_pulls) {
        size_t n = c->cap_pulls ? 2 * c->cap_pulls : 8;
        pull_job *np = realloc(c->pulls, n * sizeof(*np));
        if (!np) return;
        c->pulls = np;
        c->cap_pulls = n;
    }
    c->pulls[c->n_pulls].conv = strdup(conv);
    if (!c->pulls[c->n_pulls].conv) return;
    c->pulls[c->n_pulls].after = after;
    c->n_pulls++;
    cs->pulling = 1;
    cs->pull_after = after;
    /* A pull outside a catch-up (a live gap) starts at once. */
    if (!c->inbox_syncing && !c->pull_rid[0]) {
        c->catching_up = 1;
        next_pull(c);
    }
}

/* ---- applying messages ---------------------------------------------------- */

static int own_message(mqchat_client *c, const Mqchat__V1__Message *m)
{
    return strcmp(m->sender_user_id, c->user) == 0 && strcmp(m->sender_device_id, c->device) == 0;
}

/* Our own send came back (sync, pull): if it is still in the outbox, its
 * SendAck was lost: the message is durable, so complete the send. */
static void complete_own(mqchat_client *c, const char *cmid, const char *conv, uint64_t seq,
                         uint64_t inbox_seq, int64_t t)
{
    if (mqc_state_begin(c->st) != 0) return;
    int removed = mqc_state_outbox_remove(c->st, cmid);
    if (removed < 0 || mqc_state_commit(c->st) != 0) {
        mqc_state_rollback(c->st);
        emit_error(c, "outbox: %s", mqc_state_errmsg(c->st));
        return;
    }
    if (removed == 0) return;
    ievent *ie = ev_new(c, MQCHAT_EV_SENT);
    if (!ie) return;
    snprintf(ie->ev.sent.cmid, MQCHAT_ID_BUF, "%s", cmid);
    snprintf(ie->ev.sent.conv, MQCHAT_ID_BUF, "%s", conv);
    ie->ev.sent.seq = seq;
    ie->ev.sent.inbox_seq = inbox_seq;
    ie->ev.sent.time_ms = t;
    emit(c, ie);
}

/* Hands m to the app unless its seq was handed already; the progress item
 * carries the cursor (inbox arrivals) and/or position (large conversations).
 * ph: the item reserved when m was deferred (else a new one is added). */
static void hand_in(mqchat_client *c, const Mqchat__V1__Message *m, int has_cursor,
                    uint64_t position, progress *ph)
{
    conv_state *cs = conv_get(c, m->conversation_id);
    if (!cs) {
        emit_error(c, "out of memory");
        return;
    }
    int known_kind = m->kind == MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER ||
                     m->kind == MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_EVENT;
    if (own_message(c, m)) {
        complete_own(c, m->client_msg_id, m->conversation_id, m->seq, m->inbox_seq,
                     m->server_time_ms);
    } else if (m->seq > cs->handed_mem && !known_kind) {
        emit_error(c, "message %s/%" PRIu64 " has unknown kind %d: skipped", m->conversation_id,
                   m->seq, (int)m->kind);
    } else if (m->seq > cs->handed_mem) {
        ievent *ie = ev_new(c, MQCHAT_EV_MESSAGE);
        if (!ie || copy_message(&ie->ev.message, m) != 0) {
            if (ie) {
                event_clear(&ie->ev);
                free(ie);
            }
            emit_error(c, "out of memory: message %s/%" PRIu64 " not handed", m->conversation_id,
                       m->seq);
            /* nothing recorded (a reserved item stays not done: the cursor
             * stops before it until a restart, which brings it again) */
            return;
        }
        cs->handed_mem = m->seq;
        if (ph) {
            ph->handed = m->seq;
            ph->position = position;
            ie->p = ph;
        } else {
            ie->p =
                progress_add(c, 0, has_cursor, m->inbox_seq, m->conversation_id, m->seq, position);
        }
        if (!ie->p) {
            event_clear(&ie->ev);
            free(ie);
            return;
        }
        emit(c, ie);
        return;
    }
    if (m->seq > cs->handed_mem) cs->handed_mem = m->seq;
    if (ph) {
        ph->handed = m->seq;
        ph->position = position;
        ph->done = 1;
    } else {
        progress_add(c, 1, has_cursor, m->inbox_seq, m->conversation_id, m->seq, position);
    }
}

static void hand(mqchat_client *c, const Mqchat__V1__Message *m, int has_cursor, uint64_t position)
{
    hand_in(c, m, has_cursor, position, NULL);
}

/* Hands the first deferred message of cs. */
static void hand_deferred(mqchat_client *c, conv_state *cs)
{
    deferred *d = cs->dh;
    cs->dh = d->next;
    if (!cs->dh) cs->dt = NULL;
    Mqchat__V1__Message *m = mqchat__v1__message__unpack(NULL, d->len, d->buf);
    if (m) {
        hand_in(c, m, 1, 0, d->p);
        mqchat__v1__message__free_unpacked(m, NULL);
    } else {
        d->p->done = 1; /* cannot happen: the SDK packed it */
    }
    free(d->buf);
    free(d);
}

static void hand_deferred_all(mqchat_client *c, const char *conv, uint64_t below)
{
    for (;;) {
        conv_state *cs = conv_get(c, conv);
        if (!cs || !cs->dh || (below && cs->dh->seq >= below)) return;
        hand_deferred(c, cs); /* may move c->convs: look it up again */
    }
}

static int defer_inbox(mqchat_client *c, conv_state *cs, const Mqchat__V1__Message *m)
{
    deferred *d = calloc(1, sizeof(*d));
    if (!d) return -1;
    d->len = mqchat__v1__message__get_packed_size(m);
    d->buf = malloc(d->len ? d->len : 1);
    d->p = progress_add(c, 0, 1, m->inbox_seq, m->conversation_id, 0, 0);
    if (!d->buf || !d->p) {
        if (d->p) { /* out of memory: the reserved item becomes a no-op */
            d->p->has_cursor = 0;
            d->p->done = 1;
        }
        free(d->buf);
        free(d);
        return -1;
    }
    mqchat__v1__message__pack(m, d->buf);
    d->seq = m->seq;
    if (cs->dt)
        cs->dt->next = d;
    else
        cs->dh = d;
    cs->dt = d;
    return 0;
}

/* An inbox arrival with inbox_seq > cursor_mem (from a sync page, or live
 * and exactly the next one). */
static void apply_inbox(mqchat_client *c, const Mqchat__V1__Message *m)
{
    assert(m->inbox_seq > c->cursor_mem);
    conv_state *cs = conv_get(c, m->conversation_id);
    if (cs && (cs->dh || (cs->pulling && m->seq > cs->pull_after))) {
        if (defer_inbox(c, cs, m) != 0) {
            emit_error(c, "out of memory: inbox %" PRIu64 " not applied", m->inbox_seq);
            return; /* cursor_mem stays: the next sync brings it again */
        }
        c->cursor_mem = m->inbox_seq;
        return;
    }
    c->cursor_mem = m->inbox_seq;
    hand(c, m, 1, 0);
}

static void on_live_message(mqchat_client *c, const Mqchat__V1__Message *m)
{
    if (m->inbox_seq > 0) {
        if (c->drop_nth && ++c->live_count == c->drop_nth) return; /* test hook */
        if (m->inbox_seq <= c->cursor_mem) return;                 /* duplicate */
        if (m->inbox_seq == c->cursor_mem + 1) {
            apply_inbox(c, m);
            return;
        }
        if (m->inbox_seq > c->max_seen_live) c->max_seen_live = m->inbox_seq;
        start_sync(c); /* a gap: the sync fills it (and brings this one) */
        return;
    }
    /* A large conversation, live: ordered by seq. */
    conv_state *cs = conv_get(c, m->conversation_id);
    if (!cs) return;
    if (m->seq <= cs->handed_mem) return;
    if (m->seq == cs->handed_mem + 1 && !cs->pulling && !cs->dh) {
        hand(c, m, 0, m->seq);
        return;
    }
    pull_add(c, m->conversation_id, cs->position_acked);
}

static void on_sync(mqchat_client *c, const Mqchat__V1__SyncResponse *s)
{
    if (s->inbox_head < c->cursor_mem) {
        /* The server's store was restored from a backup. */
        c->cursor_mem = s->inbox_head;
        c->cursor_acked = s->inbox_head;
        progress_add(c, 1, 1, s->inbox_head, NULL, 0, 0);
    }
    /* Positions first: inbox messages of a conversation about to be pulled
     * wait for the pull (apply_inbox), so each conversation stays in seq order. */
    for (size_t i = 0; i < s->n_positions; i++) {
        const Mqchat__V1__ConversationPosition *p = s->positions[i];
        if (p->end_seq > p->position) pull_add(c, p->conversation_id, p->position);
    }
    for (size_t i = 0; i < s->n_messages; i++) {
        const Mqchat__V1__Message *m = s->messages[i];
        if (m->inbox_seq <= c->cursor_mem) continue;
        apply_inbox(c, m);
    }
    if (s->more || s->positions_more) {
        c->sync_positions = s->positions_more;
        if (s->positions_more && s->n_positions)
            snprintf(c->positions_after, sizeof(c->positions_after), "%s",
                     s->positions[s->n_positions - 1]->conversation_id);
        if (!s->more && !s->n_messages && !s->n_positions) { /* no progress: stop */
            c->inbox_syncing = 0;
        } else {
            send_sync(c);
            return;
        }
    }
    c->inbox_syncing = 0;
    c->sync_rid[0] = 0;
    if (c->max_seen_live > c->cursor_mem) { /* a live one arrived past this sync */
        start_sync(c);
        return;
    }
    if (!c->pull_rid[0]) next_pull(c);
}

static void on_pull(mqchat_client *c, const Mqchat__V1__ConversationPullResponse *p)
{
    c->pull_rid[0] = 0;
    if (c->n_pulls == 0) return;
    pull_job *j = &c->pulls[0];
    uint64_t last = j->after;
    for (size_t i = 0; i < p->n_messages; i++) {
        const Mqchat__V1__Message *m = p->messages[i];
        if (strcmp(m->conversation_id, j->conv) != 0 || m->seq <= last) {
            emit_error(c, "pull of %s: message %s/%" PRIu64 " out of order", j->conv,
                       m->conversation_id, m->seq);
            continue;
        }
        last = m->seq;
        hand_deferred_all(c, j->conv, m->seq);
        j = &c->pulls[0];
        hand(c, m, 0, 0);
    }
    if (p->through_seq > j->after) {
        conv_state *cs = conv_get(c, j->conv);
        if (cs && p->through_seq > cs->handed_mem) cs->handed_mem = p->through_seq;
        progress_add(c, 1, 0, 0, j->conv, p->through_seq, p->through_seq);
    }
    if (p->more && p->through_seq > j->after) {
        j->after = p->through_seq;
    } else {
        char *conv = strdup(j->conv);
        pull_pop(c);
        if (conv) hand_deferred_all(c, conv, 0);
        free(conv);
    }
    next_pull(c);
}

/* ---- SendAck --------------------------------------------------------------- */

static void on_send_ack(mqchat_client *c, const Mqchat__V1__SendAck *a)
{
    if (a->error) {
        int code = (int)a->error->code;
        int retry = code == MQCHAT_E_UNAVAILABLE || code == MQCHAT_E_RATE_LIMITED;
        int had = mqc_state_outbox_has(c->st, a->client_msg_id);
        if (had <= 0) return; /* not ours any more (answered already) */
        if (!retry) {
            if (mqc_state_begin(c->st) != 0) return;
            if (mqc_state_outbox_remove(c->st, a->client_msg_id) < 0 ||
                mqc_state_commit(c->st) != 0) {
                mqc_state_rollback(c->st);
                emit_error(c, "outbox: %s", mqc_state_errmsg(c->st));
                return;
            }
        } else {
            uint32_t after = a->error->retry_after_ms ? a->error->retry_after_ms : 1000;
            int64_t at = now_ms() + after;
            if (!c->retry_at || at < c->retry_at) c->retry_at = at;
            pthread_cond_signal(&c->cond);
        }
        ievent *ie = ev_new(c, MQCHAT_EV_SEND_FAILED);
        if (!ie) return;
        snprintf(ie->ev.sent.cmid, MQCHAT_ID_BUF, "%s", a->client_msg_id);
        snprintf(ie->ev.sent.conv, MQCHAT_ID_BUF, "%s", a->conversation_id);
        ie->ev.sent.code = code;
        ie->ev.sent.error_message = xstrdup(a->error->message);
        ie->ev.sent.will_retry = retry;
        emit(c, ie);
        return;
    }
    complete_own(c, a->client_msg_id, a->conversation_id, a->seq, a->inbox_seq, a->server_time_ms);
    conv_state *cs = conv_get(c, a->conversation_id);
    if (!cs) return;
    int held = cs->pulling || cs->dh; /* the conv's order waits for a pull */
    if (a->inbox_seq > 0) {
        if (a->inbox_seq == c->cursor_mem + 1) {
            c->cursor_mem = a->inbox_seq;
            if (!held && a->seq > cs->handed_mem) cs->handed_mem = a->seq;
            progress_add(c, 1, 1, a->inbox_seq, held ? NULL : a->conversation_id, a->seq, 0);
        } else if (a->inbox_seq > c->cursor_mem + 1) {
            if (a->inbox_seq > c->max_seen_live) c->max_seen_live = a->inbox_seq;
            start_sync(c);
        }
    } else if (a->seq == cs->handed_mem + 1 && !held) {
        cs->handed_mem = a->seq;
        progress_add(c, 1, 0, 0, a->conversation_id, a->seq, a->seq);
    }
}

/* ---- Responses ------------------------------------------------------------- */

static void on_response(mqchat_client *c, const Mqchat__V1__Response *r)
{
    const char *rid = r->request_id;
    int retry_ms = -1; /* >= 0: a refusal to retry after that long */
    if (r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR &&
        (r->error->code == MQCHAT__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED ||
         r->error->code == MQCHAT__V1__ERROR_CODE__ERROR_CODE_UNAVAILABLE))
        retry_ms = r->error->retry_after_ms ? (int)r->error->retry_after_ms : 500;
    if (c->sync_rid[0] && strcmp(rid, c->sync_rid) == 0) {
        if (r->body_case == MQCHAT__V1__RESPONSE__BODY_SYNC) {
            on_sync(c, r->sync);
        } else if (retry_ms >= 0) {
            c->inbox_syncing = 0;
            c->sync_rid[0] = 0;
            c->sync_retry_at = now_ms() + retry_ms;
            pthread_cond_signal(&c->cond);
        } else {
            c->inbox_syncing = 0;
            c->sync_rid[0] = 0;
            emit_error(c, "sync refused: %s",
                       r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR ? r->error->message
                                                                        : "unexpected answer");
        }
        return;
    }
    if (c->pull_rid[0] && strcmp(rid, c->pull_rid) == 0) {
        if (r->body_case == MQCHAT__V1__RESPONSE__BODY_PULL) {
            on_pull(c, r->pull);
        } else if (retry_ms >= 0) {
            c->pull_rid[0] = 0; /* the job stays first in line */
            c->pull_retry_at = now_ms() + retry_ms;
            pthread_cond_signal(&c->cond);
        } else {
            c->pull_rid[0] = 0;
            emit_error(c, "pull of %s refused: %s", c->n_pulls ? c->pulls[0].conv : "?",
                       r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR ? r->error->message
                                                                        : "unexpected answer");
            if (c->n_pulls) {
                char *conv = strdup(c->pulls[0].conv);
                pull_pop(c);
                if (conv) hand_deferred_all(c, conv, 0);
                free(conv);
            }
            next_pull(c);
        }
        return;
    }
    if (rid[0] == 'i') { /* CursorAck, PositionAck */
        if (retry_ms >= 0)
            c->cursor_acked = 0; /* acked again with the next commit */
        else if (r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR)
            emit_error(c, "ack %s refused: %s", rid, r->error->message);
        return;
    }
    if (rid[0] == 's' || rid[0] == 'p') return; /* answer to a sync/pull of an older session */
    ievent *ie = ev_new(c, MQCHAT_EV_RESPONSE);
    if (!ie) return;
    snprintf(ie->ev.response.request_id, MQCHAT_ID_BUF, "%s", rid);
    int ok = 1;
    switch (r->body_case) {
    case MQCHAT__V1__RESPONSE__BODY_ERROR:
        ie->ev.response.code = (int)r->error->code;
        ie->ev.response.error_message = xstrdup(r->error->message);
        ok = 0;
        break;
    case MQCHAT__V1__RESPONSE__BODY_GROUP:
        ie->ev.response.group_conv = xstrdup(r->group->conversation_id);
        ie->ev.response.group_seq = r->group->seq;
        break;
    case MQCHAT__V1__RESPONSE__BODY_HISTORY: {
        const Mqchat__V1__HistoryResponse *h = r->history;
        ie->ev.response.more = h->more;
        if (h->n_messages) {
            ie->ev.response.messages = calloc(h->n_messages, sizeof(mqchat_message));
            if (ie->ev.response.messages) {
                for (size_t i = 0; i < h->n_messages; i++) {
                    ie->ev.response.n_messages++;
                    copy_message(&ie->ev.response.messages[i], h->messages[i]);
                }
            }
        }
        break;
    }
    case MQCHAT__V1__RESPONSE__BODY_CONVERSATIONS: {
        const Mqchat__V1__ListConversationsResponse *l = r->conversations;
        ie->ev.response.more = l->more;
        if (l->n_conversations) {
            ie->ev.response.conversations = calloc(l->n_conversations, sizeof(mqchat_conversation));
            if (ie->ev.response.conversations) {
                for (size_t i = 0; i < l->n_conversations; i++) {
                    const Mqchat__V1__ConversationSummary *s = l->conversations[i];
                    mqchat_conversation *d = &ie->ev.response.conversations[i];
                    d->conv = xstrdup(s->conversation_id);
                    d->head_seq = s->head_seq;
                    d->read_seq = s->read_seq;
                    d->unread = s->unread;
                    d->last_activity_ms = s->last_activity_ms;
                    d->mode = (int)s->mode;
                    d->member_count = s->member_count;
                    ie->ev.response.n_conversations++;
                }
            }
        }
        break;
    }
    case MQCHAT__V1__RESPONSE__BODY_PRESENCE: {
        const Mqchat__V1__PresenceWatchResponse *p = r->presence;
        if (p->n_users) {
            ie->ev.response.presence = calloc(p->n_users, sizeof(mqchat_presence));
            if (ie->ev.response.presence) {
                for (size_t i = 0; i < p->n_users; i++) {
                    ie->ev.response.presence[i].user = xstrdup(p->users[i]->user_id);
                    ie->ev.response.presence[i].state = (int)p->users[i]->state;
                    ie->ev.response.presence[i].last_seen_ms = p->users[i]->last_seen_ms;
                    ie->ev.response.n_presence++;
                }
            }
        }
        break;
    }
    case MQCHAT__V1__RESPONSE__BODY__NOT_SET:
        event_clear(&ie->ev);
        free(ie);
        emit_error(c, "response %s has no body (unknown to this SDK)", rid);
        return;
    default:
        break; /* ok, members, read_state, sync/pull of an app: success, untyped */
    }
    ie->ev.response.ok = ok;
    emit(c, ie);
}

/* ---- incoming packets -------------------------------------------------------- */

int mqchat__handle_incoming(mqchat_client *c, const char *topic, const void *payload, size_t len)
{
    int rc = 0;
    lock(c);
    if (strcmp(topic, c->t_inbox) == 0) {
        Mqchat__V1__ServerEvent *e =
            mqchat__v1__server_event__unpack(NULL, len, (const uint8_t *)payload);
        if (!e) {
            emit_error(c, "malformed ServerEvent on %s (%zu bytes)", topic, len);
            rc = -1;
        } else {
            switch (e->body_case) {
            case MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE:
                on_live_message(c, e->message);
                break;
            case MQCHAT__V1__SERVER_EVENT__BODY_RECEIPT: {
                ievent *ie = ev_new(c, MQCHAT_EV_RECEIPT);
                if (ie) {
                    ie->ev.receipt.conv = xstrdup(e->receipt->conversation_id);
                    ie->ev.receipt.user = xstrdup(e->receipt->user_id);
                    ie->ev.receipt.delivered_seq = e->receipt->delivered_seq;
                    ie->ev.receipt.read_seq = e->receipt->read_seq;
                    ie->ev.receipt.time_ms = e->receipt->server_time_ms;
                    emit(c, ie);
                }
                break;
            }
            case MQCHAT__V1__SERVER_EVENT__BODY_TYPING: {
                ievent *ie = ev_new(c, MQCHAT_EV_TYPING);
                if (ie) {
                    ie->ev.typing.conv = xstrdup(e->typing->conversation_id);
                    ie->ev.typing.user = xstrdup(e->typing->user_id);
                    ie->ev.typing.on = e->typing->typing;
                    emit(c, ie);
                }
                break;
            }
            case MQCHAT__V1__SERVER_EVENT__BODY_PRESENCE: {
                ievent *ie = ev_new(c, MQCHAT_EV_PRESENCE);
                if (ie) {
                    ie->ev.presence.user = xstrdup(e->presence->user_id);
                    ie->ev.presence.state = (int)e->presence->state;
                    ie->ev.presence.last_seen_ms = e->presence->last_seen_ms;
                    emit(c, ie);
                }
                break;
            }
            default:
                emit_error(c, "ServerEvent without a known body");
                rc = -1;
                break;
            }
            mqchat__v1__server_event__free_unpacked(e, NULL);
        }
    } else if (strcmp(topic, c->t_ack) == 0) {
        Mqchat__V1__SendAck *a = mqchat__v1__send_ack__unpack(NULL, len, (const uint8_t *)payload);
        if (!a) {
            emit_error(c, "malformed SendAck (%zu bytes)", len);
            rc = -1;
        } else {
            on_send_ack(c, a);
            mqchat__v1__send_ack__free_unpacked(a, NULL);
        }
    } else if (strcmp(topic, c->t_resp) == 0) {
        Mqchat__V1__Response *r = mqchat__v1__response__unpack(NULL, len, (const uint8_t *)payload);
        if (!r) {
            emit_error(c, "malformed Response (%zu bytes)", len);
            rc = -1;
        } else {
            on_response(c, r);
            mqchat__v1__response__free_unpacked(r, NULL);
        }
    } else {
        emit_error(c, "packet on unexpected topic %s", topic);
        rc = -1;
    }
    flush(c);
    unlock(c);
    return rc;
}

/* ---- paho callbacks ------------------------------------------------------------ */

static int on_arrived(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
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
                uint64_t one = 1;
                if (write(c->efd, &one, sizeof(one)) < 0) { /* counter full: still readable */
                }
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
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) r = (uint32_t)now_ms();
    c->attempt++;
    c->reconnect_at = now_ms() + (cap > 0 ? (int64_t)(r % (uint32_t)(cap + 1)) : 0);
    if (c->reconnect_at == 0) c->reconnect_at = 1;
    pthread_cond_signal(&c->cond);
}

static void lost_session(mqchat_client *c, const char *why)
{
    c->connected = 0;
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

static void on_lost(void *ctx, char *cause)
{
    mqchat_client *c = ctx;
    lock(c);
    if (c->connected) lost_session(c, cause ? cause : "connection lost");
    flush(c);
    unlock(c);
}

static void on_disconnected5(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
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
    c->cursor_acked = 0; /* ack again once per session */
    for (size_t i = 0; i < c->n_convs; i++)
        c->convs[i].position_acked = 0;
    emit_conn(c, MQCHAT_CONN_CONNECTED, "");
    char *topics[3] = {c->t_inbox, c->t_ack, c->t_resp};
    int qos[3] = {1, 1, 1};
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    MQTTAsync_subscribeMany(c->mq, 3, topics, qos, &ro);
    resend_outbox(c);
    start_sync(c);
    /* Reload committed positions into memory (acked zeroed above). */
    for (size_t i = 0; i < c->n_convs; i++) {
        uint64_t h, p;
        if (mqc_state_conv(c->st, c->convs[i].conv, &h, &p) == 0) c->convs[i].position_acked = p;
    }
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

static void *timer_main(void *arg)
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
        int64_t *due[3] = {&c->retry_at, &c->sync_retry_at, &c->pull_retry_at};
        int fired = -1;
        for (int i = 0; i < 3 && fired < 0; i++)
            if (*due[i] && now >= *due[i]) {
                *due[i] = 0;
                fired = i;
            }
        if (fired >= 0) {
            if (fired == 0) resend_outbox(c);
            if (fired == 1) start_sync(c);
            if (fired == 2 && c->connected && !c->pull_rid[0] && !c->inbox_syncing) next_pull(c);
            flush(c);
            unlock(c); /* sends what was queued */
            lock(c);
            continue;
        }
        int64_t next = now + 1000;
        if (c->reconnect_at && c->reconnect_at < next) next = c->reconnect_at;
        for (int i = 0; i < 3; i++)
            if (*due[i] && *due[i] < next) next = *due[i];
        /* cond uses CLOCK_MONOTONIC (see mqchat_new). */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait = next > now ? next - now : 1;
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        assert(c->depth == 1);
        c->depth = 0;
        pthread_cond_timedwait(&c->cond, &c->mu, &ts);
        c->depth = 1;
    }
    unlock(c);
    return NULL;
}

/* ---- public API ----------------------------------------------------------------- */

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
    while (c->oh) {
        outpkt *o = c->oh;
        c->oh = o->next;
        free(o->buf);
        free(o->topic);
        free(o);
    }
    while (c->rh) {
        outpkt *r = c->rh;
        c->rh = r->next;
        free(r->buf);
        free(r->topic);
        free(r);
    }
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
    if (c->efd >= 0) close(c->efd);
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
    c->efd = -1;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&c->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_mutex_init(&c->out_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
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
    unsigned char r[4];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) memset(r, 0, sizeof(r));
    snprintf(c->nonce, sizeof(c->nonce), "%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
    if (c->poll_mode) {
        c->efd = eventfd(0, EFD_NONBLOCK | EFD_SEMAPHORE | EFD_CLOEXEC);
        if (c->efd < 0) {
            set_err(err, "eventfd failed");
            client_destroy(c);
            return NULL;
        }
    }
    char uri[600], cid[300];
    snprintf(uri, sizeof(uri), "%s://%s:%d", c->use_tls ? "ssl" : "tcp", c->host, c->port);
    snprintf(cid, sizeof(cid), "%s:%s", c->user, c->device);
    MQTTAsync_createOptions cro = MQTTAsync_createOptions_initializer;
    cro.MQTTVersion = c->mqtt_version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
    if (MQTTAsync_createWithOptions(&c->mq, uri, cid, MQTTCLIENT_PERSISTENCE_NONE, NULL, &cro) !=
            MQTTASYNC_SUCCESS ||
        MQTTAsync_setCallbacks(c->mq, c, on_lost, on_arrived, NULL) != MQTTASYNC_SUCCESS ||
        (c->mqtt_version == 5 &&
         MQTTAsync_setDisconnected(c->mq, c, on_disconnected5) != MQTTASYNC_SUCCESS)) {
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
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        d.timeout = 1000;
        MQTTAsync_disconnect(c->mq, &d);
    }
    return MQCHAT_OK;
}

int mqchat_send(mqchat_client *c, const char *conv, const char *content_type, const void *body,
                size_t len, char cmid_out[MQCHAT_ID_BUF])
{
    if (!c || !conv || !*conv || strlen(conv) > 128 || (len && !body)) return MQCHAT_ERR;
    if (!content_type) content_type = "";
    char cmid[MQCHAT_ID_BUF];
    lock(c);
    int rc = MQCHAT_ERR_STATE;
    if (mqc_state_begin(c->st) == 0) {
        if (mqc_state_new_cmid(c->st, cmid, sizeof(cmid)) == 0 &&
            mqc_state_outbox_add(c->st, cmid, conv, content_type, body, len) == 0 &&
            mqc_state_commit(c->st) == 0)
            rc = MQCHAT_OK;
        else
            mqc_state_rollback(c->st);
    }
    if (rc == MQCHAT_OK) {
        if (cmid_out) memcpy(cmid_out, cmid, MQCHAT_ID_BUF);
        send_entry(c, cmid, conv, content_type, body, len);
    }
    unlock(c);
    return rc;
}

int mqchat_outbox_count(mqchat_client *c)
{
    lock(c);
    int n = mqc_state_outbox_count(c->st);
    unlock(c);
    return n < 0 ? MQCHAT_ERR_STATE : n;
}

static int app_request(mqchat_client *c, Mqchat__V1__Request *r, char rid[MQCHAT_ID_BUF])
{
    if (!c) return MQCHAT_ERR;
    lock(c);
    int rc = request(c, 'a', r, rid);
    unlock(c);
    return rc;
}

static int receipt(mqchat_client *c, const char *conv, uint64_t seq, int type)
{
    if (!c || !conv) return MQCHAT_ERR;
    Mqchat__V1__Receipt r = MQCHAT__V1__RECEIPT__INIT;
    r.conversation_id = (char *)conv;
    r.seq = seq;
    r.type = type;
    lock(c);
    int rc = publish(c, c->t_receipt, &r.base, 1);
    unlock(c);
    return rc;
}

int mqchat_mark_read(mqchat_client *c, const char *conv, uint64_t seq, char rid_out[MQCHAT_ID_BUF])
{
    if (rid_out) rid_out[0] = 0;
    return receipt(c, conv, seq, MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ);
}

int mqchat_mark_delivered(mqchat_client *c, const char *conv, uint64_t seq,
                          char rid_out[MQCHAT_ID_BUF])
{
    if (rid_out) rid_out[0] = 0;
    return receipt(c, conv, seq, MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_DELIVERED);
}

int mqchat_history(mqchat_client *c, const char *conv, uint64_t before_seq, unsigned limit,
                   char rid_out[MQCHAT_ID_BUF])
{
    if (!conv) return MQCHAT_ERR;
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__HistoryRequest h = MQCHAT__V1__HISTORY_REQUEST__INIT;
    h.conversation_id = (char *)conv;
    h.before_seq = before_seq;
    h.limit = limit;
    r.body_case = MQCHAT__V1__REQUEST__BODY_HISTORY;
    r.history = &h;
    return app_request(c, &r, rid_out);
}

int mqchat_list_conversations(mqchat_client *c, const char *after, unsigned limit,
                              char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__ListConversations l = MQCHAT__V1__LIST_CONVERSATIONS__INIT;
    l.after_conversation_id = (char *)(after ? after : "");
    l.limit = limit;
    r.body_case = MQCHAT__V1__REQUEST__BODY_LIST_CONVERSATIONS;
    r.list_conversations = &l;
    return app_request(c, &r, rid_out);
}

int mqchat_group_create(mqchat_client *c, const char *title, const char *const *members, size_t n,
                        char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupCreate g = MQCHAT__V1__GROUP_CREATE__INIT;
    g.title = (char *)(title ? title : "");
    g.member_ids = (char **)members;
    g.n_member_ids = n;
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
    r.group_create = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_group_add(mqchat_client *c, const char *conv, const char *const *users, size_t n,
                     char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupAddMembers g = MQCHAT__V1__GROUP_ADD_MEMBERS__INIT;
    g.conversation_id = (char *)(conv ? conv : "");
    g.user_ids = (char **)users;
    g.n_user_ids = n;
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_ADD;
    r.group_add = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_group_remove(mqchat_client *c, const char *conv, const char *const *users, size_t n,
                        char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupRemoveMembers g = MQCHAT__V1__GROUP_REMOVE_MEMBERS__INIT;
    g.conversation_id = (char *)(conv ? conv : "");
    g.user_ids = (char **)users;
    g.n_user_ids = n;
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE;
    r.group_remove = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_group_leave(mqchat_client *c, const char *conv, char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupLeave g = MQCHAT__V1__GROUP_LEAVE__INIT;
    g.conversation_id = (char *)(conv ? conv : "");
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_LEAVE;
    r.group_leave = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_typing(mqchat_client *c, const char *conv, int on)
{
    if (!c || !conv) return MQCHAT_ERR;
    Mqchat__V1__Typing t = MQCHAT__V1__TYPING__INIT;
    t.conversation_id = (char *)conv;
    t.typing = on != 0;
    lock(c);
    int rc = publish(c, c->t_typing, &t.base, 0);
    unlock(c);
    return rc;
}

int mqchat_presence_watch(mqchat_client *c, const char *const *users, size_t n,
                          char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__PresenceWatch w = MQCHAT__V1__PRESENCE_WATCH__INIT;
    w.user_ids = (char **)users;
    w.n_user_ids = n;
    r.body_case = MQCHAT__V1__REQUEST__BODY_PRESENCE_WATCH;
    r.presence_watch = &w;
    return app_request(c, &r, rid_out);
}

int mqchat_push_register(mqchat_client *c, const char *platform, const char *token, const char *app,
                         char rid_out[MQCHAT_ID_BUF])
{
    if (!platform || !token) return MQCHAT_ERR;
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__PushTokenRegister p = MQCHAT__V1__PUSH_TOKEN_REGISTER__INIT;
    if (strcmp(platform, "apns") == 0)
        p.platform = MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_APNS;
    else if (strcmp(platform, "apns-sandbox") == 0)
        p.platform = MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_APNS_SANDBOX;
    else if (strcmp(platform, "fcm") == 0)
        p.platform = MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_FCM;
    else
        return MQCHAT_ERR;
    p.token = (char *)token;
    p.app_id = (char *)(app ? app : "");
    r.body_case = MQCHAT__V1__REQUEST__BODY_PUSH_REGISTER;
    r.push_register = &p;
    return app_request(c, &r, rid_out);
}

int mqchat_fd(mqchat_client *c)
{
    return c ? c->efd : -1;
}

mqchat_event *mqchat_next_event(mqchat_client *c)
{
    if (!c || !c->poll_mode) return NULL;
    lock(c);
    /* Decode queued packets until one yields an event. */
    while (!c->qh && c->rh) {
        outpkt *r = c->rh;
        c->rh = r->next;
        if (!c->rh) c->rt = NULL;
        uint64_t v;
        if (read(c->efd, &v, sizeof(v)) < 0) { /* already drained */
        }
        mqchat__handle_incoming(c, r->topic, r->buf, r->len);
        free(r->topic);
        free(r->buf);
        free(r);
    }
    ievent *ie = c->qh;
    if (ie) {
        c->qh = ie->next;
        if (!c->qh) c->qt = NULL;
        ie->next = NULL;
        uint64_t v;
        if (read(c->efd, &v, sizeof(v)) < 0) { /* already drained */
        }
    }
    unlock(c);
    return ie ? &ie->ev : NULL;
}

void mqchat_event_free(mqchat_event *ev)
{
    if (!ev) return;
    ievent *ie = (ievent *)ev;
    if (ie->p) {
        mqchat_client *c = ie->c;
        lock(c);
        ie->p->done = 1;
        flush(c);
        unlock(c);
    }
    event_clear(&ie->ev);
    free(ie);
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
