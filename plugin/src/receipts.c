/* receipts — read/delivered watermarks and typing indicators.
 * A receipt raises the sender's watermarks in the store (monotonic) and,
 * when they moved, tells every member's devices. Typing is never stored:
 * it goes to the other members at QoS 0. */
#include "plugin.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int require_member(mqc *m, conn *c, const char *request_id, const char *conv, mqstore_member *self);

/* Queue `ev` to the connected devices of every member of conv except the
 * user `skip` (may be NULL). */
static int to_members(mqc *m, pubs *out, const char *conv, const char *skip,
                      const Mqchat__V1__ServerEvent *ev, int qos)
{
    mqstore_member_list l;
    if (mqstore_members_list(m->store, conv, &l)) return -1;
    int rc = 0;
    for (size_t i = 0; !rc && i < l.n; i++) {
        if (skip && strcmp(l.items[i].user, skip) == 0) continue;
        rc = to_user(m, out, l.items[i].user, NULL, &ev->base, qos);
    }
    mqstore_member_list_free(&l);
    return rc;
}

static int limited(mqc *m, conn *c)
{
    int64_t wait = conn_rate_take(m, c);
    if (wait <= 0) return 0;
    char msg[96];
    snprintf(msg, sizeof(msg), "too many messages; retry in %lld ms", (long long)wait);
    reply_error_retry(m, c, NULL, EC(RATE_LIMITED), msg, (uint32_t)wait);
    return 1;
}

int handle_receipt(mqc *m, conn *c, const void *payload, size_t len)
{
    wire_err err;
    Mqchat__V1__Receipt *rc = wire_receipt(payload, len, &err);
    if (!rc) {
        reply_error(m, c, NULL, err.code, err.msg);
        return MOSQ_ERR_ACL_DENIED;
    }
    mqstore_member self;
    int ret = MOSQ_ERR_ACL_DENIED;
    if (limited(m, c) || require_member(m, c, NULL, rc->conversation_id, &self)) goto out;
    int read = rc->type == MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ;
    uint64_t d, r;
    int changed;
    mqstore_err e =
        mqstore_receipt_update(m->store, rc->conversation_id, c->user, read ? 0 : rc->seq,
                               read ? rc->seq : 0, &d, &r, &changed);
    if (e == MQSTORE_ERR_INVAL) {
        reply_error(m, c, NULL, EC(INVALID_ARGUMENT), "seq is above the conversation's head");
        goto out;
    }
    if (e) {
        reply_error(m, c, NULL, store_code(e, EC(UNKNOWN_CONVERSATION)), mqstore_strerror(e));
        goto out;
    }
    ret = MOSQ_ERR_SUCCESS;
    if (!changed) goto out;
    Mqchat__V1__ReceiptUpdate up = MQCHAT__V1__RECEIPT_UPDATE__INIT;
    up.conversation_id = rc->conversation_id;
    up.user_id = c->user;
    up.delivered_seq = d;
    up.read_seq = r;
    up.server_time_ms = (int64_t)time(NULL) * 1000;
    Mqchat__V1__ServerEvent ev = MQCHAT__V1__SERVER_EVENT__INIT;
    ev.body_case = MQCHAT__V1__SERVER_EVENT__BODY_RECEIPT;
    ev.receipt = &up;
    pubs out = {0};
    if (to_members(m, &out, rc->conversation_id, NULL, &ev, 1))
        mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: could not fan out a receipt");
    out_after(m, mqstore_last_ticket(m->store), &out);
out:
    mqchat__v1__receipt__free_unpacked(rc, NULL);
    return ret;
}

int handle_typing(mqc *m, conn *c, const void *payload, size_t len)
{
    wire_err err;
    Mqchat__V1__Typing *t = wire_typing(payload, len, &err);
    if (!t) {
        reply_error(m, c, NULL, err.code, err.msg);
        return MOSQ_ERR_ACL_DENIED;
    }
    mqstore_member self;
    int ret = MOSQ_ERR_ACL_DENIED;
    if (!limited(m, c) && !require_member(m, c, NULL, t->conversation_id, &self)) {
        Mqchat__V1__Typing fwd = MQCHAT__V1__TYPING__INIT;
        fwd.conversation_id = t->conversation_id;
        fwd.typing = t->typing;
        fwd.user_id = c->user;
        Mqchat__V1__ServerEvent ev = MQCHAT__V1__SERVER_EVENT__INIT;
        ev.body_case = MQCHAT__V1__SERVER_EVENT__BODY_TYPING;
        ev.typing = &fwd;
        pubs out = {0};
        if (to_members(m, &out, t->conversation_id, c->user, &ev, 0))
            mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: could not fan out typing");
        /* Ephemeral and not stored: no durability to wait for. */
        out_after(m, 0, &out);
        ret = MOSQ_ERR_SUCCESS;
    }
    mqchat__v1__typing__free_unpacked(t, NULL);
    return ret;
}
