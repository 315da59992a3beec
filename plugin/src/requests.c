/* requests — the Request envelope on .../req: sync, cursor ack, history
 * and the list requests here; group changes in groups.c. Every request is
 * answered with a Response carrying its request_id. */
#include "plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNC_DEFAULT 100
#define HISTORY_DEFAULT 50
#define LIST_DEFAULT 100
#define LIST_MAX 500
#define SYNC_MAX_BYTES (1u << 20)

int handle_group(mqc *m, conn *c, Mqchat__V1__Request *req);

static size_t page_limit(uint32_t asked, size_t dflt, size_t max)
{
    size_t n = asked ? asked : dflt;
    return n > max ? max : n;
}

/* Pack a store page into Message views; *stored keeps what to free. */
static int page_views(const mqstore_page *p, Mqchat__V1__Message ***ptrs,
                      Mqchat__V1__Message **views, Mqchat__V1__Message ***stored)
{
    size_t n = p->n ? p->n : 1;
    *ptrs = calloc(n, sizeof(**ptrs));
    *views = calloc(n, sizeof(**views));
    *stored = calloc(n, sizeof(**stored));
    if (!*ptrs || !*views || !*stored) return -1;
    for (size_t i = 0; i < p->n; i++) {
        if (message_view(&p->items[i], &(*stored)[i], &(*views)[i])) return -1;
        (*ptrs)[i] = &(*views)[i];
    }
    return 0;
}

static void views_free(size_t n, Mqchat__V1__Message **ptrs, Mqchat__V1__Message *views,
                       Mqchat__V1__Message **stored)
{
    for (size_t i = 0; stored && i < n; i++)
        if (stored[i]) mqchat__v1__message__free_unpacked(stored[i], NULL);
    free(stored);
    free(views);
    free(ptrs);
}

static void respond_page(mqc *m, conn *c, Mqchat__V1__Response *resp, const mqstore_page *p,
                         int is_sync, uint64_t inbox_head, const char *conv)
{
    Mqchat__V1__Message **ptrs = NULL, *views = NULL, **stored = NULL;
    if (page_views(p, &ptrs, &views, &stored)) {
        views_free(p->n, ptrs, views, stored);
        reply_error(m, c, resp->request_id, EC(INTERNAL), "a stored message does not decode");
        return;
    }
    Mqchat__V1__SyncResponse sync = MQCHAT__V1__SYNC_RESPONSE__INIT;
    Mqchat__V1__HistoryResponse hist = MQCHAT__V1__HISTORY_RESPONSE__INIT;
    if (is_sync) {
        sync.n_messages = p->n;
        sync.messages = ptrs;
        sync.more = p->more;
        sync.inbox_head = inbox_head;
        resp->body_case = MQCHAT__V1__RESPONSE__BODY_SYNC;
        resp->sync = &sync;
    } else {
        hist.conversation_id = (char *)conv;
        hist.n_messages = p->n;
        hist.messages = ptrs;
        hist.more = p->more;
        resp->body_case = MQCHAT__V1__RESPONSE__BODY_HISTORY;
        resp->history = &hist;
    }
    reply_response(m, c, resp);
    views_free(p->n, ptrs, views, stored);
}

static void do_sync(mqc *m, conn *c, Mqchat__V1__Request *req, Mqchat__V1__Response *resp)
{
    Mqchat__V1__SyncRequest *s = req->sync;
    uint64_t head;
    mqstore_page p;
    mqstore_err e = mqstore_inbox_head(m->store, c->user, &head);
    if (!e && s->after_inbox_seq >= head) {
        /* Nothing newer (also covers a cursor from the future). */
        memset(&p, 0, sizeof(p));
    } else if (!e) {
        e = mqstore_inbox_read(m->store, c->user, s->after_inbox_seq,
                               page_limit(s->limit, SYNC_DEFAULT, m->cfg.sync_page_max),
                               SYNC_MAX_BYTES, &p);
    }
    if (e) {
        reply_error(m, c, req->request_id, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
        return;
    }
    respond_page(m, c, resp, &p, 1, head, NULL);
    mqstore_page_free(&p);
}

static void do_cursor_ack(mqc *m, conn *c, Mqchat__V1__Request *req, Mqchat__V1__Response *resp)
{
    mqstore_err e =
        mqstore_cursor_ack(m->store, c->user, c->device, req->cursor_ack->inbox_seq, NULL);
    if (e == MQSTORE_ERR_INVAL) {
        reply_error(m, c, req->request_id, EC(INVALID_ARGUMENT),
                    "inbox_seq is above the inbox head");
        return;
    }
    if (!e) e = mqstore_inbox_trim(m->store, c->user, NULL);
    if (e) {
        reply_error(m, c, req->request_id, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
        return;
    }
    Mqchat__V1__Ok ok = MQCHAT__V1__OK__INIT;
    resp->body_case = MQCHAT__V1__RESPONSE__BODY_OK;
    resp->ok = &ok;
    reply_response(m, c, resp);
}

/* The caller's membership of conv: 0 with *self set, or -1 after
 * answering with the refusal. A 1:1 id that does not name the caller is
 * NOT_MEMBER whether or not the pair ever talked (anything else would tell
 * a stranger that they did); one that names the caller exists implicitly,
 * so it is created here on first use. */
int require_member(mqc *m, conn *c, const char *request_id, const char *conv, mqstore_member *self)
{
    char ua[MQC_ID_BUF], ub[MQC_ID_BUF];
    mqstore_err e;
    if (mqc_conv_direct(conv, ua, ub) == 0) {
        if (strcmp(c->user, ua) != 0 && strcmp(c->user, ub) != 0) {
            reply_error(m, c, request_id, EC(NOT_MEMBER), "not a member of this conversation");
            return -1;
        }
        if ((e = ensure_direct(m, conv, ua, ub))) {
            reply_error(m, c, request_id, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
            return -1;
        }
    } else if (!mqstore_conv_exists(m->store, conv, &e)) {
        if (e)
            reply_error(m, c, request_id, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
        else
            reply_error(m, c, request_id, EC(UNKNOWN_CONVERSATION), "no such conversation");
        return -1;
    }
    e = mqstore_member_get(m->store, conv, c->user, self);
    if (e == MQSTORE_ERR_NOTFOUND) {
        reply_error(m, c, request_id, EC(NOT_MEMBER), "not a member of this conversation");
        return -1;
    }
    if (e) {
        reply_error(m, c, request_id, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
        return -1;
    }
    return 0;
}

static void do_history(mqc *m, conn *c, Mqchat__V1__Request *req, Mqchat__V1__Response *resp)
{
    Mqchat__V1__HistoryRequest *h = req->history;
    mqstore_member self;
    if (require_member(m, c, req->request_id, h->conversation_id, &self)) return;
    mqstore_page p;
    mqstore_err e =
        mqstore_history_read(m->store, h->conversation_id, h->before_seq,
                             page_limit(h->limit, HISTORY_DEFAULT, m->cfg.history_page_max), &p);
    if (e) {
        reply_error(m, c, req->request_id, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
        return;
    }
    respond_page(m, c, resp, &p, 0, 0, h->conversation_id);
    mqstore_page_free(&p);
}

static void do_list_members(mqc *m, conn *c, Mqchat__V1__Request *req, Mqchat__V1__Response *resp)
{
    const char *conv = req->list_members->conversation_id;
    mqstore_member self;
    if (require_member(m, c, req->request_id, conv, &self)) return;
    mqstore_member_list l;
    mqstore_err e = mqstore_members_list(m->store, conv, &l);
    if (e) {
        reply_error(m, c, req->request_id, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
        return;
    }
    Mqchat__V1__Member *members = calloc(l.n ? l.n : 1, sizeof(*members));
    Mqchat__V1__Member **ptrs = calloc(l.n ? l.n : 1, sizeof(*ptrs));
    if (members && ptrs) {
        for (size_t i = 0; i < l.n; i++) {
            mqchat__v1__member__init(&members[i]);
            members[i].user_id = l.items[i].user;
            members[i].role = (Mqchat__V1__Role)l.items[i].role;
            members[i].joined_seq = l.items[i].joined_seq;
            ptrs[i] = &members[i];
        }
        Mqchat__V1__ListMembersResponse lm = MQCHAT__V1__LIST_MEMBERS_RESPONSE__INIT;
        lm.conversation_id = (char *)conv;
        lm.n_members = l.n;
        lm.members = ptrs;
        resp->body_case = MQCHAT__V1__RESPONSE__BODY_MEMBERS;
        resp->members = &lm;
        reply_response(m, c, resp);
    } else {
        reply_error(m, c, req->request_id, EC(INTERNAL), "out of memory");
    }
    free(members);
    free(ptrs);
    mqstore_member_list_free(&l);
}

static void do_list_convs(mqc *m, conn *c, Mqchat__V1__Request *req, Mqchat__V1__Response *resp)
{
    Mqchat__V1__ListConversations *lc = req->list_conversations;
    mqstore_conv_list l;
    mqstore_err e = mqstore_user_convs(m->store, c->user, lc->after_conversation_id,
                                       page_limit(lc->limit, LIST_DEFAULT, LIST_MAX), &l);
    if (e) {
        reply_error(m, c, req->request_id, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
        return;
    }
    Mqchat__V1__ConversationSummary *sums = calloc(l.n ? l.n : 1, sizeof(*sums));
    Mqchat__V1__ConversationSummary **ptrs = calloc(l.n ? l.n : 1, sizeof(*ptrs));
    for (size_t i = 0; !e && sums && ptrs && i < l.n; i++) {
        mqchat__v1__conversation_summary__init(&sums[i]);
        sums[i].conversation_id = l.conv[i];
        sums[i].role = (Mqchat__V1__Role)l.role[i];
        e = mqstore_conv_head(m->store, l.conv[i], &sums[i].head_seq);
        ptrs[i] = &sums[i];
    }
    if (!sums || !ptrs) e = MQSTORE_ERR_NOMEM;
    if (e) {
        reply_error(m, c, req->request_id, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
    } else {
        Mqchat__V1__ListConversationsResponse r = MQCHAT__V1__LIST_CONVERSATIONS_RESPONSE__INIT;
        r.n_conversations = l.n;
        r.conversations = ptrs;
        r.more = l.more;
        resp->body_case = MQCHAT__V1__RESPONSE__BODY_CONVERSATIONS;
        resp->conversations = &r;
        reply_response(m, c, resp);
    }
    free(sums);
    free(ptrs);
    mqstore_conv_list_free(&l);
}

int handle_request(mqc *m, conn *c, const void *payload, size_t len)
{
    wire_err err;
    Mqchat__V1__Request *req =
        wire_request(payload, len, m->cfg.max_body, m->cfg.group_max_members, &err);
    int64_t wait = 0;
    if (!err.code && (wait = conn_rate_take(m, c)) > 0) {
        err.code = EC(RATE_LIMITED);
        snprintf(err.msg, sizeof(err.msg), "too many requests; retry in %lld ms", (long long)wait);
    }
    if (err.code) {
        reply_error_retry(m, c, req ? req->request_id : NULL, err.code, err.msg, (uint32_t)wait);
        if (req) mqchat__v1__request__free_unpacked(req, NULL);
        return MOSQ_ERR_ACL_DENIED;
    }
    Mqchat__V1__Response resp = MQCHAT__V1__RESPONSE__INIT;
    resp.request_id = req->request_id;
    switch (req->body_case) {
    case MQCHAT__V1__REQUEST__BODY_SYNC:
        do_sync(m, c, req, &resp);
        break;
    case MQCHAT__V1__REQUEST__BODY_CURSOR_ACK:
        do_cursor_ack(m, c, req, &resp);
        break;
    case MQCHAT__V1__REQUEST__BODY_HISTORY:
        do_history(m, c, req, &resp);
        break;
    case MQCHAT__V1__REQUEST__BODY_LIST_MEMBERS:
        do_list_members(m, c, req, &resp);
        break;
    case MQCHAT__V1__REQUEST__BODY_LIST_CONVERSATIONS:
        do_list_convs(m, c, req, &resp);
        break;
    default:
        handle_group(m, c, req);
        break;
    }
    mqchat__v1__request__free_unpacked(req, NULL);
    return MOSQ_ERR_SUCCESS;
}
