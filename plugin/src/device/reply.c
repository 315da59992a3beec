/* reply — what a device is told: Responses to its requests, SendAcks,
 * refusals, and the messages and events fanned out to members' devices.
 * Every publish goes through the durability-ordered queue (outq.c).
 * Main thread only. */
#include "device.h"

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <stdio.h>
#include <string.h>

static void reply(dev *d, conn *c, const char *leaf, const ProtobufCMessage *msg, int qos)
{
    char topic[512];
    if (topic_device(topic, sizeof(topic), d->cfg->topic_prefix, c->user, c->device, leaf)) return;
    /* Replies wait for the newest write to be durable: a response never
     * shows a device data that a power loss could still take back, and
     * replies keep their order with the ACKs queued before them. */
    pubs p = {0};
    if (pubs_add(&p, c->client_id, topic, msg, qos) == 0)
        out_after(d, mqstore_last_ticket(d->store), &p);
    else
        pubs_free(&p);
}

void reply_response(dev *d, conn *c, Mqchat__V1__Response *resp)
{
    reply(d, c, "resp", &resp->base, 1);
}

void reply_error(dev *d, conn *c, const char *request_id, const chat_status *st)
{
    Mqchat__V1__Error err = MQCHAT__V1__ERROR__INIT;
    err.code = st->code;
    err.retry_after_ms = st->retry_ms;
    err.message = (char *)st->msg;
    err.request_id = (char *)(mqc_id_valid(MQC_ID_CLIENT, request_id) ? request_id : "");
    Mqchat__V1__Response resp = MQCHAT__V1__RESPONSE__INIT;
    resp.request_id = err.request_id;
    resp.body_case = MQCHAT__V1__RESPONSE__BODY_ERROR;
    resp.error = &err;
    char what[MQC_ID_BUF + 16];
    snprintf(what, sizeof(what), "%s%s", err.request_id[0] ? "request " : "a publish",
             err.request_id);
    refusal_note(d, c, st->code, what, st->msg);
    reply_response(d, c, &resp);
}

void reply_send_error(dev *d, conn *c, const Mqchat__V1__SendRequest *req, const chat_status *st)
{
    Mqchat__V1__Error err = MQCHAT__V1__ERROR__INIT;
    const char *cmid =
        req && mqc_id_valid(MQC_ID_CLIENT, req->client_msg_id) ? req->client_msg_id : "";
    err.code = st->code;
    err.retry_after_ms = st->retry_ms;
    err.message = (char *)st->msg;
    err.request_id = (char *)cmid;
    Mqchat__V1__SendAck ack = MQCHAT__V1__SEND_ACK__INIT;
    ack.client_msg_id = (char *)cmid;
    ack.conversation_id =
        (char *)(req && mqc_id_valid(MQC_ID_CONV, req->conversation_id) ? req->conversation_id
                                                                        : "");
    ack.error = &err;
    char what[MQC_ID_BUF + 16];
    snprintf(what, sizeof(what), "send%s%s", cmid[0] ? " " : "", cmid);
    refusal_note(d, c, st->code, what, st->msg);
    reply(d, c, "ack", &ack.base, SEND_ACK_QOS);
}

void reply_bad_topic(dev *d, conn *c)
{
    chat_status st = {.code = EC(BAD_TOPIC)};
    snprintf(st.msg, sizeof(st.msg), "unknown topic: publish to send, req, receipt or typing");
    reply_error(d, c, NULL, &st);
}

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
    /* Past the retention, or gone with its group: the store has the
     * envelope (or only the seq) left, never the content. */
    if (sm->expired) view->expired = 1;
    return 0;
}

int deliver_written(dev *d, chat_written *w)
{
    pubs out = {0};
    rooms_after_write(d, w);
    int rc = lane_written(d, &out, w, NULL);
    if (rc) mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: out of memory delivering an event");
    out_after(d, w->r.ticket, &out);
    return rc;
}

int fanout_written(dev *d, pubs *out, chat_written *w, const conn *skip)
{
    Mqchat__V1__ServerEvent ev = MQCHAT__V1__SERVER_EVENT__INIT;
    ev.body_case = MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE;
    ev.message = &w->msg;
    int rc = 0;
    size_t before = out->n;
    for (size_t i = 0; !rc && i < w->r.n_fanout; i++) {
        w->msg.inbox_seq = w->r.fanout_inbox_seq[i];
        rc = to_user(d, out, w->r.fanout_user[i], skip, &ev.base, 1);
    }
    w->msg.inbox_seq = 0;
    d->delivered_live += out->n - before; /* metrics */
    return rc;
}

int fanout_members(dev *d, pubs *out, const mqstore_member_list *members, const char *skip_user,
                   const Mqchat__V1__ServerEvent *ev, int qos)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < members->n; i++)
        if (!skip_user || strcmp(members->items[i].user, skip_user) != 0)
            rc = to_user(d, out, members->items[i].user, NULL, &ev->base, qos);
    return rc;
}
