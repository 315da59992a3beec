/* outbox.c — sends: the SQLite outbox, (re)publishing it, SendAck.
 *
 * mqchat_send() (and _send_ex, _edit, _delete: an edit or delete is a
 * send with edit_seq / delete_seq) writes the message to the outbox (with
 * a fresh client message id) in one transaction, then publishes it. The whole outbox is
 * published again on every connect and when a refused send's retry time
 * comes (the server deduplicates by client message id). An entry leaves
 * the outbox when its SendAck says it is stored, when a non-retryable error
 * refuses it, or when the message itself comes back in a sync or pull
 * (complete_own: its SendAck was lost). A stored send also moves the inbox
 * cursor or the conversation's handed seq when it is the next one. */
#include "client_int.h"

#include <stdio.h>
#include <string.h>

static void send_entry(mqchat_client *c, const mqc_outbox_entry *e)
{
    Mqchat__V1__SendRequest s = MQCHAT__V1__SEND_REQUEST__INIT;
    s.client_msg_id = e->cmid;
    s.conversation_id = e->conv;
    s.content_type = e->content_type;
    s.body.data = e->body;
    s.body.len = e->body_len;
    s.reply_to_seq = e->reply_to_seq;
    s.edit_seq = e->edit_seq;
    s.delete_seq = e->delete_seq;
    publish(c, c->t_send, &s.base, 1);
}

void resend_outbox(mqchat_client *c)
{
    mqc_outbox_entry *e;
    size_t n;
    if (mqc_state_outbox_list(c->st, &e, &n) != 0) {
        emit_error(c, "outbox: %s", mqc_state_errmsg(c->st));
        return;
    }
    for (size_t i = 0; i < n; i++)
        send_entry(c, &e[i]);
    mqc_outbox_free(e, n);
}

/* Our own send came back (sync, pull): if it is still in the outbox, its
 * SendAck was lost: the message is durable, so complete the send. */
/* Removes cmid from the outbox in a transaction of its own and keeps
 * c->outbox_n: 1 removed, 0 it was not there, -1 failed (an ERROR event
 * says so). */
static int outbox_take(mqchat_client *c, const char *cmid)
{
    int removed = -1;
    if (mqc_state_begin(c->st) == 0) removed = mqc_state_outbox_remove(c->st, cmid);
    if (removed < 0 || mqc_state_commit(c->st) != 0) {
        mqc_state_rollback(c->st);
        emit_error(c, "outbox: %s", mqc_state_errmsg(c->st));
        return -1;
    }
    if (removed && c->outbox_n > 0) c->outbox_n--;
    return removed;
}

void complete_own(mqchat_client *c, const char *cmid, const char *conv, uint64_t seq,
                  uint64_t inbox_seq, int64_t t)
{
    if (outbox_take(c, cmid) != 1) return;
    ievent *ie = ev_new(c, MQCHAT_EV_SENT);
    if (!ie) return;
    snprintf(ie->ev.sent.cmid, MQCHAT_ID_BUF, "%s", cmid);
    snprintf(ie->ev.sent.conv, MQCHAT_ID_BUF, "%s", conv);
    ie->ev.sent.seq = seq;
    ie->ev.sent.inbox_seq = inbox_seq;
    ie->ev.sent.time_ms = t;
    ie->ev.sent.outbox_left = c->outbox_n;
    emit(c, ie);
}

void on_send_ack(mqchat_client *c, const Mqchat__V1__SendAck *a)
{
    if (a->error) {
        int code = (int)a->error->code;
        int retry = code == MQCHAT_E_UNAVAILABLE || code == MQCHAT_E_RATE_LIMITED;
        int had = mqc_state_outbox_has(c->st, a->client_msg_id);
        if (had <= 0) return; /* not ours any more (answered already) */
        if (!retry) {
            if (outbox_take(c, a->client_msg_id) < 0) return;
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
        ie->ev.sent.outbox_left = c->outbox_n;
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

/* Commits e (with a new cmid) to the outbox, then publishes it. */
static int queue_send(mqchat_client *c, mqc_outbox_entry *e, char cmid_out[MQCHAT_ID_BUF])
{
    if (!c || !e->conv || !*e->conv || strlen(e->conv) > 128 || (e->body_len && !e->body))
        return MQCHAT_ERR;
    if (!e->content_type) e->content_type = "";
    char cmid[MQCHAT_ID_BUF];
    e->cmid = cmid;
    lock(c);
    int rc = MQCHAT_ERR_STATE;
    /* Durable: mqchat_send() promises the send survives a power cut. */
    if (mqc_state_begin_durable(c->st) == 0) {
        if (mqc_state_new_cmid(c->st, cmid, sizeof(cmid)) == 0 &&
            mqc_state_outbox_put(c->st, e) == 0 && mqc_state_commit(c->st) == 0)
            rc = MQCHAT_OK;
        else
            mqc_state_rollback(c->st);
    }
    if (rc == MQCHAT_OK) {
        if (c->outbox_n >= 0) c->outbox_n++;
        if (cmid_out) memcpy(cmid_out, cmid, MQCHAT_ID_BUF);
        send_entry(c, e);
    }
    unlock(c);
    return rc;
}

int mqchat_send_ex(mqchat_client *c, const char *conv, const mqchat_send_options *o,
                   const void *body, size_t len, char cmid_out[MQCHAT_ID_BUF])
{
    mqc_outbox_entry e = {.conv = (char *)conv,
                          .content_type = (char *)(o ? o->content_type : NULL),
                          .body = (unsigned char *)body,
                          .body_len = len,
                          .reply_to_seq = o ? o->reply_to_seq : 0};
    return queue_send(c, &e, cmid_out);
}

int mqchat_send(mqchat_client *c, const char *conv, const char *content_type, const void *body,
                size_t len, char cmid_out[MQCHAT_ID_BUF])
{
    mqchat_send_options o = {.content_type = content_type};
    return mqchat_send_ex(c, conv, &o, body, len, cmid_out);
}

int mqchat_edit(mqchat_client *c, const char *conv, uint64_t seq, const char *content_type,
                const void *body, size_t len, char cmid_out[MQCHAT_ID_BUF])
{
    if (!seq) return MQCHAT_ERR;
    mqc_outbox_entry e = {.conv = (char *)conv,
                          .content_type = (char *)content_type,
                          .body = (unsigned char *)body,
                          .body_len = len,
                          .edit_seq = seq};
    return queue_send(c, &e, cmid_out);
}

int mqchat_delete(mqchat_client *c, const char *conv, uint64_t seq, char cmid_out[MQCHAT_ID_BUF])
{
    if (!seq) return MQCHAT_ERR;
    mqc_outbox_entry e = {.conv = (char *)conv, .delete_seq = seq};
    return queue_send(c, &e, cmid_out);
}

int mqchat_outbox_count(mqchat_client *c)
{
    lock(c);
    int n = mqc_state_outbox_count(c->st);
    unlock(c);
    return n < 0 ? MQCHAT_ERR_STATE : n;
}
