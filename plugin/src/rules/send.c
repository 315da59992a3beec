/* send — the send rule (docs/ARCHITECTURE.md, "The send path"): a
 * validated SendRequest becomes one store append — membership, dedup, the
 * next seq and an inbox entry for every member in one batch — before the
 * MESSAGE callback that called us returns, so before mosquitto's PUBACK.
 * What the device layer then sends (the ACK, the deliveries) waits for the
 * write's ticket to be durable. */
#include "rules_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chat_written_clear(chat_written *w)
{
    mqstore_result_clear(&w->r);
    free(w->users);
    free(w->stored);
    memset(w, 0, sizeof(*w));
}

/* Append, creating an implicit 1:1 conversation on its first message. */
static mqstore_err append(chat *c, const mqstore_append *a, mqstore_result *r)
{
    mqstore_err e = mqstore_append_msg(c->store, a, r);
    char ua[MQC_ID_BUF], ub[MQC_ID_BUF];
    if (e != MQSTORE_ERR_NOTFOUND || mqc_conv_direct(a->conv, ua, ub) != 0) return e;
    if ((e = chat_ensure_direct(c, a->conv, ua, ub))) return e;
    return mqstore_append_msg(c->store, a, r);
}

int chat_send(chat *c, const chat_caller *who, const Mqchat__V1__SendRequest *req,
              chat_written *out, chat_status *st)
{
    char ua[MQC_ID_BUF], ub[MQC_ID_BUF];
    memset(out, 0, sizeof(*out));
    if (!who->device) return chat_fail(st, EC(INVALID_ARGUMENT), "a send needs the sending device");
    if (mqc_conv_direct(req->conversation_id, ua, ub) == 0 && strcmp(who->user, ua) != 0 &&
        strcmp(who->user, ub) != 0)
        return chat_fail(st, EC(NOT_MEMBER), "a 1:1 conversation must name the sender");
    if (req->edit_seq || req->delete_seq) return chat_edit(c, who, req, out, st);

    /* What we store: the message content; the envelope (ids, seq, time)
     * comes from the store record when it is read back. */
    Mqchat__V1__Message *m = &out->msg;
    mqchat__v1__message__init(m);
    m->kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER;
    m->content_type = req->content_type;
    m->body = req->body;
    m->n_media = req->n_media;
    m->media = req->media;
    m->reply_to_seq = req->reply_to_seq;
    size_t stored_len;
    out->stored = wire_pack(&m->base, &stored_len, malloc);
    if (!out->stored) return chat_fail(st, EC(INTERNAL), "out of memory");
    /* The pushes go into the message's batch: none is lost with the broker. */
    chat_push push;
    if (chat_push_jobs(c, who, req, &push)) c->push_failed++;
    mqstore_append a = {.conv = req->conversation_id,
                        .sender_user = who->user,
                        .sender_device = who->device,
                        .client_msg_id = req->client_msg_id,
                        .kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER,
                        .payload = out->stored,
                        .payload_len = stored_len,
                        .jobs = push.jobs,
                        .n_jobs = push.n,
                        .jobs_name_message = 1};
    mqstore_err e = append(c, &a, &out->r);
    chat_push_free(&push);
    if (e) {
        free(out->stored);
        out->stored = NULL;
        if (e == MQSTORE_ERR_EXISTS)
            return chat_fail(st, EC(INVALID_ARGUMENT),
                             "client_msg_id was already used for another conversation");
        if (e == MQSTORE_ERR_DENIED)
            return chat_fail(st, EC(PERMISSION_DENIED),
                             "only admins and the owner may post in this conversation");
        chat_fail(st, chat_store_code(e, EC(UNKNOWN_CONVERSATION)), "%s: %s",
                  e == MQSTORE_ERR_NOTFOUND ? "unknown conversation" : "not stored",
                  mqstore_strerror(e));
        if (st->code == EC(UNAVAILABLE)) st->retry_ms = 1000;
        return -1;
    }
    /* The envelope, as members receive the message. */
    snprintf(out->conv, sizeof(out->conv), "%s", req->conversation_id);
    m->conversation_id = out->conv;
    m->seq = out->r.seq;
    m->sender_user_id = (char *)who->user;
    m->sender_device_id = (char *)who->device;
    m->server_time_ms = out->r.server_time_ms;
    m->client_msg_id = req->client_msg_id;
    return 0;
}
