/* events.c — events for the app: decoding the packets that arrive,
 * converting protobuf into the public event structs, and handing events
 * over, by callback or through the poll queue.
 *
 * mqchat__handle_incoming() decodes one packet by topic and hands it to the
 * delivery rules (deliver.c), SendAck handling (outbox.c) or responses
 * (requests.c); receipts, typing and presence become events here. In
 * callback mode emit() calls on_event at once; in poll mode events queue
 * (and received packets wait, undecoded, so decoding runs on the app's
 * thread in mqchat_next_event) and the wake fd is readable while anything
 * waits. A
 * MESSAGE event holds its progress item: it is done when the callback
 * returns or the app frees the event, and only then can the cursor pass
 * it. */
#include "client_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void event_clear_message(mqchat_message *m)
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

void event_clear(mqchat_event *ev)
{
    switch (ev->type) {
    case MQCHAT_EV_MESSAGE:
        event_clear_message(&ev->message);
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
            event_clear_message(&ev->response.messages[i]);
        free(ev->response.messages);
        for (size_t i = 0; i < ev->response.n_conversations; i++) {
            free(ev->response.conversations[i].conv);
            free(ev->response.conversations[i].title);
            if (ev->response.conversations[i].last_message)
                event_clear_message(ev->response.conversations[i].last_message);
            free(ev->response.conversations[i].last_message);
        }
        free(ev->response.conversations);
        for (size_t i = 0; i < ev->response.n_presence; i++)
            free(ev->response.presence[i].user);
        free(ev->response.presence);
        for (size_t i = 0; i < ev->response.n_members; i++)
            free(ev->response.members[i].user);
        free(ev->response.members);
        if (ev->response.read_state) {
            mqchat_read_result *rs = ev->response.read_state;
            free(rs->conv);
            for (size_t i = 0; i < rs->n_readers; i++)
                free(rs->readers[i]);
            free(rs->readers);
            free(rs);
        }
        break;
    case MQCHAT_EV_ERROR:
        free(ev->error.message);
        break;
    }
}

ievent *ev_new(mqchat_client *c, mqchat_event_type t)
{
    ievent *ie = calloc(1, sizeof(*ie));
    if (!ie) return NULL;
    ie->ev.type = t;
    ie->c = c;
    return ie;
}

/* Hands an event to the app: the callback now, or the poll queue. */
void emit(mqchat_client *c, ievent *ie)
{
    if (!ie) return;
    if (c->poll_mode) {
        if (c->qt)
            c->qt->next = ie;
        else
            c->qh = ie;
        c->qt = ie;
        mqc_wake_set(&c->wake);
        return;
    }
    if (c->on_event) c->on_event(c->data, &ie->ev);
    if (ie->p) ie->p->done = 1;
    event_clear(&ie->ev);
    free(ie);
}

void emit_error(mqchat_client *c, const char *fmt, ...)
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

void emit_conn(mqchat_client *c, mqchat_conn_state s, const char *reason)
{
    c->conn_state = s;
    ievent *ie = ev_new(c, MQCHAT_EV_CONNECTION);
    if (!ie) return;
    ie->ev.connection.state = s;
    ie->ev.connection.reason = xstrdup(reason);
    emit(c, ie);
}

int copy_message(mqchat_message *d, const Mqchat__V1__Message *m)
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
        d->role = (int)e->role;
        d->posting = (int)e->posting;
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

mqchat_conn_state mqchat_connection_state(mqchat_client *c)
{
    if (!c) return MQCHAT_CONN_DISCONNECTED;
    lock(c);
    mqchat_conn_state s = c->conn_state ? c->conn_state : MQCHAT_CONN_DISCONNECTED;
    unlock(c);
    return s;
}

const char *mqchat_strerror(int code)
{
    static const char *const server[] = {
        [MQCHAT_E_MALFORMED] = "E_MALFORMED",
        [MQCHAT_E_INVALID_ARGUMENT] = "E_INVALID_ARGUMENT",
        [MQCHAT_E_BODY_TOO_LARGE] = "E_BODY_TOO_LARGE",
        [MQCHAT_E_UNKNOWN_CONVERSATION] = "E_UNKNOWN_CONVERSATION",
        [MQCHAT_E_NOT_MEMBER] = "E_NOT_MEMBER",
        [MQCHAT_E_PERMISSION_DENIED] = "E_PERMISSION_DENIED",
        [MQCHAT_E_BAD_TOPIC] = "E_BAD_TOPIC",
        [MQCHAT_E_RATE_LIMITED] = "E_RATE_LIMITED",
        [MQCHAT_E_GROUP_FULL] = "E_GROUP_FULL",
        [MQCHAT_E_UNAVAILABLE] = "E_UNAVAILABLE",
        [MQCHAT_E_INTERNAL] = "E_INTERNAL",
        [MQCHAT_E_UNSUPPORTED] = "E_UNSUPPORTED",
        [MQCHAT_E_NOT_FOUND] = "E_NOT_FOUND",
    };
    switch (code) {
    case MQCHAT_OK:
        return "OK";
    case MQCHAT_ERR:
        return "ERR";
    case MQCHAT_ERR_OFFLINE:
        return "ERR_OFFLINE";
    case MQCHAT_ERR_STATE:
        return "ERR_STATE";
    }
    if (code > 0 && (size_t)code < sizeof(server) / sizeof(server[0]) && server[code])
        return server[code];
    return "UNKNOWN";
}

int mqchat__handle_sync(mqchat_client *c, const void *payload, size_t len)
{
    Mqchat__V1__SyncResponse *s =
        mqchat__v1__sync_response__unpack(NULL, len, (const uint8_t *)payload);
    if (!s) return -1;
    lock(c);
    c->inbox_syncing = 1;
    on_sync(c, s);
    flush(c);
    unlock(c);
    mqchat__v1__sync_response__free_unpacked(s, NULL);
    return 0;
}

int mqchat_fd(mqchat_client *c)
{
    return c ? c->wake.rfd : -1;
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
    }
    if (!c->qh && !c->rh) mqc_wake_clear(&c->wake);
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
