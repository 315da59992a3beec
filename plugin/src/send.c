/* send — the send path (DESIGN.md, "The send path"): a device's
 * SendRequest is validated, rate-limited, appended to the store in one
 * batch (dedup, seq, inbox entries for every member) before this callback
 * returns — so before mosquitto's PUBACK — and its ACK and deliveries are
 * queued to leave once the write is durable. */
#include "plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int message_view(const mqstore_msg *sm, Mqchat__V1__Message **stored, Mqchat__V1__Message *view)
{
    *stored = mqchat__v1__message__unpack(NULL, sm->payload_len, sm->payload);
    if (!*stored) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: stored message %s/%llu does not decode",
                             sm->conv, (unsigned long long)sm->seq);
        return -1;
    }
    /* A shallow copy: the view borrows the stored message's content and
     * the store page's strings; pack it before freeing either. */
    *view = **stored;
    view->conversation_id = (char *)sm->conv;
    view->seq = sm->seq;
    view->sender_user_id = (char *)sm->sender_user;
    view->sender_device_id = (char *)sm->sender_device;
    view->server_time_ms = sm->server_time_ms;
    view->client_msg_id = (char *)sm->client_msg_id;
    view->inbox_seq = sm->inbox_seq;
    return 0;
}

int fanout_message(mqc *m, pubs *out, Mqchat__V1__Message *msg, const mqstore_result *r,
                   const conn *skip)
{
    Mqchat__V1__ServerEvent ev = MQCHAT__V1__SERVER_EVENT__INIT;
    ev.body_case = MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE;
    ev.message = msg;
    for (size_t i = 0; i < r->n_fanout; i++) {
        msg->inbox_seq = r->fanout_inbox_seq[i];
        if (to_user(m, out, r->fanout_user[i], skip, &ev.base, 1)) return -1;
    }
    msg->inbox_seq = 0;
    return 0;
}

mqstore_err ensure_direct(mqc *m, const char *conv, const char *ua, const char *ub)
{
    mqstore_err e;
    if (mqstore_conv_exists(m->store, conv, &e) || e) return e;
    const char *members[2] = {ua, ub};
    mqstore_result cr;
    e = mqstore_conv_create(m->store, conv, members, NULL, 2, NULL, &cr);
    mqstore_result_clear(&cr);
    return e == MQSTORE_ERR_EXISTS ? MQSTORE_OK : e;
}

/* Append, creating an implicit 1:1 conversation on its first message. */
static mqstore_err append(mqc *m, const mqstore_append *a, mqstore_result *r)
{
    mqstore_err e = mqstore_append_msg(m->store, a, r);
    char ua[MQC_ID_BUF], ub[MQC_ID_BUF];
    if (e != MQSTORE_ERR_NOTFOUND || mqc_conv_direct(a->conv, ua, ub) != 0) return e;
    if ((e = ensure_direct(m, a->conv, ua, ub))) return e;
    return mqstore_append_msg(m->store, a, r);
}

int handle_send(mqc *m, conn *c, const void *payload, size_t len)
{
    wire_err err;
    Mqchat__V1__SendRequest *req = wire_send(payload, len, m->cfg.max_body, &err);
    int64_t wait = 0;
    char ua[MQC_ID_BUF], ub[MQC_ID_BUF], msg[160];
    if (!err.code && m->n_pending >= MQC_MAX_PENDING) {
        /* The disk is not keeping up (fsyncs stalled): refuse rather than
         * grow the queue of undurable sends without bound. */
        err.code = EC(UNAVAILABLE);
        wait = 1000;
        snprintf(err.msg, sizeof(err.msg), "the server is overloaded; retry later");
    }
    if (!err.code && (wait = conn_rate_take(m, c)) > 0) {
        err.code = EC(RATE_LIMITED);
        snprintf(err.msg, sizeof(err.msg), "too many messages; retry in %lld ms", (long long)wait);
    }
    if (!err.code && mqc_conv_direct(req->conversation_id, ua, ub) == 0 &&
        strcmp(c->user, ua) != 0 && strcmp(c->user, ub) != 0) {
        err.code = EC(NOT_MEMBER);
        snprintf(err.msg, sizeof(err.msg), "a 1:1 conversation must name the sender");
    }
    if (err.code) {
        reply_send_error(m, c, req, err.code, err.msg, (uint32_t)wait);
        if (req) mqchat__v1__send_request__free_unpacked(req, NULL);
        return MOSQ_ERR_ACL_DENIED;
    }

    /* What we store: the message content; the envelope (ids, seq, time)
     * comes from the store record when it is read back. */
    Mqchat__V1__Message content = MQCHAT__V1__MESSAGE__INIT;
    content.kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER;
    content.content_type = req->content_type;
    content.body = req->body;
    content.n_media = req->n_media;
    content.media = req->media;
    content.reply_to_seq = req->reply_to_seq;
    size_t stored_len;
    void *stored = wire_pack(&content.base, &stored_len, malloc);
    if (!stored) {
        reply_send_error(m, c, req, EC(INTERNAL), "out of memory", 0);
        mqchat__v1__send_request__free_unpacked(req, NULL);
        return MOSQ_ERR_ACL_DENIED;
    }
    mqstore_append a = {.conv = req->conversation_id,
                        .sender_user = c->user,
                        .sender_device = c->device,
                        .client_msg_id = req->client_msg_id,
                        .kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER,
                        .payload = stored,
                        .payload_len = stored_len};
    mqstore_result r;
    mqstore_err e = append(m, &a, &r);
    if (e) {
        snprintf(msg, sizeof(msg), "%s: %s",
                 e == MQSTORE_ERR_NOTFOUND ? "unknown conversation" : "not stored",
                 mqstore_strerror(e));
        wire_code code = store_code(e, EC(UNKNOWN_CONVERSATION));
        reply_send_error(m, c, req, code, msg, code == EC(UNAVAILABLE) ? 1000 : 0);
        free(stored);
        mqchat__v1__send_request__free_unpacked(req, NULL);
        return MOSQ_ERR_ACL_DENIED;
    }

    pubs out = {0};
    Mqchat__V1__SendAck ack = MQCHAT__V1__SEND_ACK__INIT;
    ack.client_msg_id = req->client_msg_id;
    ack.conversation_id = req->conversation_id;
    ack.seq = r.seq;
    ack.inbox_seq = r.inbox_seq;
    ack.server_time_ms = r.server_time_ms;
    ack.duplicate = r.duplicate;
    char topic[512];
    int bad = topic_device(topic, sizeof(topic), m->cfg.topic_prefix, c->user, c->device, "ack") ||
              pubs_add(&out, c->client_id, topic, &ack.base, SEND_ACK_QOS);
    if (!bad && !r.duplicate) {
        /* A retried send was delivered the first time: only the ACK again. */
        content.conversation_id = req->conversation_id;
        content.seq = r.seq;
        content.sender_user_id = c->user;
        content.sender_device_id = c->device;
        content.server_time_ms = r.server_time_ms;
        content.client_msg_id = req->client_msg_id;
        bad = fanout_message(m, &out, &content, &r, c);
    }
    if (bad) mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: out of memory delivering a message");
    out_after(m, r.ticket, &out);
    mqstore_result_clear(&r);
    free(stored);
    mqchat__v1__send_request__free_unpacked(req, NULL);
    return MOSQ_ERR_SUCCESS;
}
