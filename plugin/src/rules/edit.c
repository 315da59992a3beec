/* edit — edits and "delete for everyone" (docs/PROTOCOL.md, "Edits and
 * deletes").
 *
 * Both are sends: a SendRequest with edit_seq or delete_seq set becomes a
 * conversation event (MESSAGE_EDITED / MESSAGE_DELETED naming target_seq)
 * with its own seq, so every member's devices see it in order with the
 * messages, live and by sync, exactly like a message (dedup on the
 * client_msg_id, the durable ACK, the fan-out or the pull). In the same
 * store batch the target's stored content is replaced
 * (mqstore_append.replace_seq): an edit's new body, or a tombstone without
 * body and media. A device that syncs later therefore reads the event and
 * the replaced target; nobody can read the old body from the server again.
 *
 * Who may: the target's sender edits within edit_window_s and deletes
 * within delete_window_s; in a group, admins and the owner delete any
 * message at any time (moderation); an operator ($CONTROL) too. Only user
 * messages are edited or deleted; events are history. */
#include "rules_int.h"
#include "mqc_clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVT(x) MQCHAT__V1__CONVERSATION_EVENT__TYPE__TYPE_##x

/* May the caller change message `m` (decoded `orig`)? 0, or -1 with *st. */
static int may_change(chat *c, const chat_caller *who, const mqstore_member *self,
                      const mqstore_msg *m, int del, chat_status *st)
{
    int own = strcmp(m->sender_user, who->user) == 0;
    int64_t age_ms = mqc_wall_ms() - m->server_time_ms;
    if (!del) {
        if (!own) return chat_fail(st, EC(PERMISSION_DENIED), "only its sender edits a message");
        if (age_ms > c->cfg->edit_window_s * 1000)
            return chat_fail(st, EC(PERMISSION_DENIED),
                             "the edit window of %lld s after sending has passed",
                             (long long)c->cfg->edit_window_s);
        return 0;
    }
    if (who->op || (mqc_conv_is_group(m->conv) && self->role >= MQSTORE_ROLE_ADMIN)) return 0;
    if (!own)
        return chat_fail(st, EC(PERMISSION_DENIED),
                         "only its sender or a group admin deletes a message");
    if (age_ms > c->cfg->delete_window_s * 1000)
        return chat_fail(st, EC(PERMISSION_DENIED),
                         "the delete window of %lld s after sending has passed",
                         (long long)c->cfg->delete_window_s);
    return 0;
}

int chat_edit(chat *c, const chat_caller *who, const Mqchat__V1__SendRequest *req,
              chat_written *out, chat_status *st)
{
    int del = req->delete_seq != 0;
    uint64_t target = del ? req->delete_seq : req->edit_seq;
    const char *conv = req->conversation_id;
    mqstore_member self;
    if (chat_require_member(c, who, conv, &self, st)) return -1;
    /* A retry is answered as the first attempt was, before any check
     * that attempt's own write (or the time since) would now fail. */
    mqstore_append probe = {.conv = conv,
                            .sender_user = who->user,
                            .sender_device = who->device,
                            .client_msg_id = req->client_msg_id};
    int hit;
    mqstore_err de = mqstore_dedup_check(c->store, &probe, &out->r, &hit);
    if (de == MQSTORE_ERR_EXISTS)
        return chat_fail(st, EC(INVALID_ARGUMENT),
                         "client_msg_id was already used for another conversation");
    if (de) return chat_store_fail(st, de, EC(NOT_FOUND));
    if (hit) {
        snprintf(out->conv, sizeof(out->conv), "%s", conv);
        return 0;
    }

    mqstore_page pg = {0};
    mqstore_err e = mqstore_msg_get(c->store, conv, target, &pg);
    if (e == MQSTORE_ERR_NOTFOUND || (!e && pg.items[0].expired)) {
        mqstore_page_free(&pg);
        return chat_fail(st, EC(NOT_FOUND), "no message %llu in this conversation",
                         (unsigned long long)target);
    }
    if (e) return chat_store_fail(st, e, EC(NOT_FOUND));
    const mqstore_msg *m = &pg.items[0];
    Mqchat__V1__Message *orig = NULL;
    int rc = -1;
    if (m->kind != MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER) {
        chat_fail(st, EC(INVALID_ARGUMENT), "only messages users sent are edited or deleted");
        goto out;
    }
    if (!(orig = mqchat__v1__message__unpack(NULL, m->payload_len, m->payload))) {
        chat_fail(st, EC(INTERNAL), "the stored message does not decode");
        goto out;
    }
    /* A deleted message stays deleted: an edit would bring a body back, a
     * second delete would only add an event. (A retried delete was
     * answered from its dedup record above.) */
    if (orig->deleted) {
        chat_fail(st, EC(INVALID_ARGUMENT), "message %llu was deleted", (unsigned long long)target);
        goto out;
    }
    if (may_change(c, who, &self, m, del, st)) goto out;

    /* The target's new stored form. */
    Mqchat__V1__Message repl = MQCHAT__V1__MESSAGE__INIT;
    repl.kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER;
    if (del) {
        repl.deleted = 1;
    } else {
        repl.content_type = req->content_type;
        repl.body = req->body;
        repl.n_media = req->n_media;
        repl.media = req->media;
        repl.reply_to_seq = orig->reply_to_seq;
        repl.edited = 1;
    }
    size_t repl_len, stored_len;
    void *repl_buf = wire_pack(&repl.base, &repl_len, malloc);

    /* The event, as stored and as members receive it. */
    Mqchat__V1__Message *ev = &out->msg;
    mqchat__v1__message__init(ev);
    mqchat__v1__conversation_event__init(&out->ev);
    out->ev.type = del ? EVT(MESSAGE_DELETED) : EVT(MESSAGE_EDITED);
    out->ev.actor_user_id = (char *)who->user;
    out->ev.target_seq = target;
    ev->kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_EVENT;
    ev->event = &out->ev;
    if (!del) {
        ev->content_type = req->content_type;
        ev->body = req->body;
        ev->n_media = req->n_media;
        ev->media = req->media;
    }
    out->stored = wire_pack(&ev->base, &stored_len, malloc);
    if (!repl_buf || !out->stored) {
        free(repl_buf);
        chat_fail(st, EC(INTERNAL), "out of memory");
        goto out;
    }
    mqstore_append a = {.conv = conv,
                        .sender_user = who->user,
                        .sender_device = who->device,
                        .client_msg_id = req->client_msg_id,
                        .kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_EVENT,
                        .payload = out->stored,
                        .payload_len = stored_len,
                        .replace_seq = target,
                        .replace_payload = repl_buf,
                        .replace_len = repl_len};
    e = mqstore_append_msg(c->store, &a, &out->r);
    free(repl_buf);
    if (e) {
        if (e == MQSTORE_ERR_EXISTS)
            chat_fail(st, EC(INVALID_ARGUMENT),
                      "client_msg_id was already used for another conversation");
        else
            chat_store_fail(st, e, EC(NOT_FOUND));
        goto out;
    }
    snprintf(out->conv, sizeof(out->conv), "%s", conv);
    ev->conversation_id = out->conv;
    ev->seq = out->r.seq;
    ev->sender_user_id = (char *)who->user;
    ev->sender_device_id = (char *)(who->device ? who->device : "");
    ev->server_time_ms = out->r.server_time_ms;
    ev->client_msg_id = req->client_msg_id;
    rc = 0;
out:
    if (rc) {
        free(out->stored);
        out->stored = NULL;
    }
    if (orig) mqchat__v1__message__free_unpacked(orig, NULL);
    mqstore_page_free(&pg);
    return rc;
}
