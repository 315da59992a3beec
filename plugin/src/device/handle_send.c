/* handle_send — a device's publishes on send, receipt and typing: decode
 * (core/wire.c), apply the connection's limits, run the rule
 * (rules/send.c, rules/receipts.c), and queue the answer and the
 * deliveries behind the write's ticket. Main thread only. */
#include "device.h"

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The connection's rate limit: 0 if allowed, else -1 with *st set. */
static int rate_limited(dev *d, conn *c, const char *what, chat_status *st)
{
    int64_t wait = conn_rate_take(d, c);
    if (wait <= 0) return 0;
    st->code = EC(RATE_LIMITED);
    st->retry_ms = (uint32_t)wait;
    snprintf(st->msg, sizeof(st->msg), "too many %s; retry in %lld ms", what, (long long)wait);
    return -1;
}

/* A decode error from wire.c as a status. */
static chat_status wire_status(const wire_err *err)
{
    chat_status st = {.code = err->code};
    snprintf(st.msg, sizeof(st.msg), "%s", err->msg);
    return st;
}

int handle_send(dev *d, conn *c, const void *payload, size_t len)
{
    wire_err err;
    Mqchat__V1__SendRequest *req = wire_send(payload, len, d->cfg->max_body, &err);
    chat_status st = wire_status(&err);
    chat_caller who = {.user = c->user, .device = c->device};
    chat_written w;
    memset(&w, 0, sizeof(w));
    if (!st.code && d->n_pending >= MQC_MAX_PENDING) {
        /* The disk is not keeping up (fsyncs stalled): refuse rather than
         * grow the queue of undurable sends without bound. */
        st.code = EC(UNAVAILABLE);
        st.retry_ms = 1000;
        snprintf(st.msg, sizeof(st.msg), "the server is overloaded; retry later");
    }
    int64_t t0 = d->timed ? mqc_metrics_now_ns() : 0; /* metrics: the store call's time */
    if (st.code || rate_limited(d, c, "messages", &st) || chat_send(&d->chat, &who, req, &w, &st)) {
        reply_send_error(d, c, req, &st);
        if (req) mqchat__v1__send_request__free_unpacked(req, NULL);
        return MOSQ_ERR_ACL_DENIED;
    }

    pubs out = {0};
    if (d->timed) { /* the write's end: also where the SendAck's wait starts (outq.c) */
        out.ack_ns = mqc_metrics_now_ns();
        mqc_hist_observe(&d->store_write_time, out.ack_ns - t0);
    }
    if (w.r.duplicate)
        d->msgs_duplicate++;
    else
        d->msgs_stored++;
    Mqchat__V1__SendAck ack = MQCHAT__V1__SEND_ACK__INIT;
    ack.client_msg_id = req->client_msg_id;
    ack.conversation_id = req->conversation_id;
    ack.seq = w.r.seq;
    ack.inbox_seq = w.r.inbox_seq;
    ack.server_time_ms = w.r.server_time_ms;
    ack.duplicate = w.r.duplicate;
    char topic[512];
    int bad = topic_device(topic, sizeof(topic), d->cfg->topic_prefix, c->user, c->device, "ack") ||
              pubs_add(&out, c->client_id, topic, &ack.base, SEND_ACK_QOS);
    /* A retried send was delivered the first time: only the ACK again. The
     * sending device has the message in its SendAck, so it is skipped. A
     * large conversation's copies go through the lane (lane.c). */
    if (!bad && !w.r.duplicate) bad = lane_written(d, &out, &w, c);
    if (bad) mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: out of memory delivering a message");
    out_after(d, w.r.ticket, &out);
    chat_written_clear(&w);
    mqchat__v1__send_request__free_unpacked(req, NULL);
    return MOSQ_ERR_SUCCESS;
}

int handle_receipt(dev *d, conn *c, const void *payload, size_t len)
{
    wire_err err;
    Mqchat__V1__Receipt *rc = wire_receipt(payload, len, &err);
    chat_status st = wire_status(&err);
    if (!rc) {
        reply_error(d, c, NULL, &st);
        return MOSQ_ERR_ACL_DENIED;
    }
    chat_caller who = {.user = c->user, .device = c->device};
    chat_receipt_result res;
    memset(&res, 0, sizeof(res));
    int ret = MOSQ_ERR_ACL_DENIED;
    if (rate_limited(d, c, "messages", &st) || chat_receipt(&d->chat, &who, rc, &res, &st)) {
        reply_error(d, c, NULL, &st);
        goto out;
    }
    ret = MOSQ_ERR_SUCCESS;
    if (!res.changed) goto out;
    Mqchat__V1__ReceiptUpdate up = MQCHAT__V1__RECEIPT_UPDATE__INIT;
    up.conversation_id = rc->conversation_id;
    up.user_id = c->user;
    up.delivered_seq = res.delivered;
    up.read_seq = res.read;
    up.server_time_ms = (int64_t)time(NULL) * 1000;
    Mqchat__V1__ServerEvent ev = MQCHAT__V1__SERVER_EVENT__INIT;
    ev.body_case = MQCHAT__V1__SERVER_EVENT__BODY_RECEIPT;
    ev.receipt = &up;
    pubs out = {0};
    if (res.large) goto out; /* read state is asked for in large conversations */
    if (res.members.n == 0 || fanout_members(d, &out, &res.members, NULL, &ev, 1))
        mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: could not fan out a receipt");
    out_after(d, mqstore_last_ticket(d->store), &out);
out:
    mqstore_member_list_free(&res.members);
    mqchat__v1__receipt__free_unpacked(rc, NULL);
    return ret;
}

int handle_typing(dev *d, conn *c, const void *payload, size_t len)
{
    wire_err err;
    Mqchat__V1__Typing *t = wire_typing(payload, len, &err);
    chat_status st = wire_status(&err);
    if (!t) {
        reply_error(d, c, NULL, &st);
        return MOSQ_ERR_ACL_DENIED;
    }
    chat_caller who = {.user = c->user, .device = c->device};
    mqstore_member_list members;
    memset(&members, 0, sizeof(members));
    int ret = MOSQ_ERR_ACL_DENIED, large = 0;
    if (rate_limited(d, c, "messages", &st) ||
        chat_typing(&d->chat, &who, t, &members, &large, &st)) {
        reply_error(d, c, NULL, &st);
    } else {
        Mqchat__V1__Typing fwd = MQCHAT__V1__TYPING__INIT;
        fwd.conversation_id = t->conversation_id;
        fwd.typing = t->typing;
        fwd.user_id = c->user;
        Mqchat__V1__ServerEvent ev = MQCHAT__V1__SERVER_EVENT__INIT;
        ev.body_case = MQCHAT__V1__SERVER_EVENT__BODY_TYPING;
        ev.typing = &fwd;
        pubs out = {0};
        if (large ? lane_broadcast(d, t->conversation_id, 0, &ev.base, 0, c->user)
                  : fanout_members(d, &out, &members, c->user, &ev, 0))
            mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: could not fan out typing");
        /* Ephemeral and not stored: no durability to wait for. */
        out_after(d, 0, &out);
        ret = MOSQ_ERR_SUCCESS;
    }
    mqstore_member_list_free(&members);
    mqchat__v1__typing__free_unpacked(t, NULL);
    return ret;
}
