/* handle_req — the Request envelope on .../req: decode, rate-limit, run
 * the rule (rules/read.c, rules/groups.c) and answer with exactly one
 * Response carrying the request_id, never larger than reply_max_bytes
 * (pages are cut to fit and say `more`). Main thread only. */
#include "device.h"
#include "presence.h"

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The reply budget: how many leading items of a page fit in one Response
 * of at most reply_max_bytes (MQC_REPLY_SLACK is kept for the envelope).
 * At least one: the options guarantee one stored message fits. A page cut
 * short sets `more`, so the device asks again after its last item. */
static size_t fit_after(dev *d, void *const *items, size_t n, size_t used)
{
    size_t budget = d->cfg->reply_max_bytes - MQC_REPLY_SLACK, k = 0;
    for (; k < n; k++) {
        /* a repeated field element: tag, length prefix, message */
        used += protobuf_c_message_get_packed_size(items[k]) + 1 + 5;
        if (used > budget && k > 0) break;
    }
    return k;
}

static size_t fit(dev *d, void *const *items, size_t n)
{
    return fit_after(d, items, n, 0);
}

static void fail(dev *d, conn *c, const char *rid, wire_code code, const char *msg)
{
    chat_status st = {.code = code};
    snprintf(st.msg, sizeof(st.msg), "%s", msg);
    reply_error(d, c, rid, &st);
}

/* Positions per sync answer at most (and half the reply budget). */
#define POSITIONS_MAX 1000

/* A history page as the Response. */
static void respond_page(dev *d, conn *c, Mqchat__V1__Response *resp, const mqstore_page *p,
                         const char *conv)
{
    Mqchat__V1__Message **ptrs = NULL, *views = NULL, **stored = NULL;
    if (page_views(p, &ptrs, &views, &stored)) {
        views_free(p->n, ptrs, views, stored);
        fail(d, c, resp->request_id, EC(INTERNAL), "a stored message does not decode");
        return;
    }
    Mqchat__V1__HistoryResponse hist = MQCHAT__V1__HISTORY_RESPONSE__INIT;
    size_t n = fit(d, (void *const *)ptrs, p->n);
    hist.conversation_id = (char *)conv;
    hist.n_messages = n;
    hist.messages = ptrs;
    hist.more = p->more || n < p->n;
    resp->body_case = MQCHAT__V1__RESPONSE__BODY_HISTORY;
    resp->history = &hist;
    reply_response(d, c, resp);
    views_free(p->n, ptrs, views, stored);
}

static void respond_ok(dev *d, conn *c, Mqchat__V1__Response *resp)
{
    Mqchat__V1__Ok ok = MQCHAT__V1__OK__INIT;
    resp->body_case = MQCHAT__V1__RESPONSE__BODY_OK;
    resp->ok = &ok;
    reply_response(d, c, resp);
}

static void respond_members(dev *d, conn *c, Mqchat__V1__Response *resp, const char *conv,
                            const mqstore_member_list *l, int more)
{
    Mqchat__V1__Member *members = calloc(l->n ? l->n : 1, sizeof(*members));
    Mqchat__V1__Member **ptrs = calloc(l->n ? l->n : 1, sizeof(*ptrs));
    if (members && ptrs) {
        for (size_t i = 0; i < l->n; i++) {
            mqchat__v1__member__init(&members[i]);
            members[i].user_id = (char *)l->items[i].user;
            members[i].role = (Mqchat__V1__Role)l->items[i].role;
            members[i].joined_seq = l->items[i].joined_seq;
            ptrs[i] = &members[i];
        }
        Mqchat__V1__ListMembersResponse lm = MQCHAT__V1__LIST_MEMBERS_RESPONSE__INIT;
        lm.conversation_id = (char *)conv;
        lm.n_members = fit(d, (void *const *)ptrs, l->n);
        lm.members = ptrs;
        lm.more = more || lm.n_members < l->n;
        resp->body_case = MQCHAT__V1__RESPONSE__BODY_MEMBERS;
        resp->members = &lm;
        reply_response(d, c, resp);
    } else {
        fail(d, c, resp->request_id, EC(INTERNAL), "out of memory");
    }
    free(members);
    free(ptrs);
}

static void respond_convs(dev *d, conn *c, Mqchat__V1__Response *resp, const chat_conv_list *l)
{
    size_t n = l->n, k = 0;
    Mqchat__V1__ConversationSummary *sums = calloc(n ? n : 1, sizeof(*sums));
    Mqchat__V1__ConversationSummary **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    Mqchat__V1__Message *views = calloc(n ? n : 1, sizeof(*views));
    Mqchat__V1__Message **stored = calloc(n ? n : 1, sizeof(*stored));
    if (sums && ptrs && views && stored) {
        for (; k < n; k++) {
            const chat_conv_summary *sm = &l->items[k];
            Mqchat__V1__ConversationSummary *o = &sums[k];
            mqchat__v1__conversation_summary__init(o);
            o->conversation_id = (char *)sm->conv;
            o->role = (Mqchat__V1__Role)sm->role;
            o->head_seq = sm->info.head;
            o->read_seq = sm->read;
            o->unread = sm->unread;
            o->last_activity_ms = sm->info.last_time_ms;
            o->mode = sm->info.large ? MQCHAT__V1__CONVERSATION_MODE__CONVERSATION_MODE_LARGE
                                     : MQCHAT__V1__CONVERSATION_MODE__CONVERSATION_MODE_SMALL;
            o->member_count = (uint32_t)sm->info.members;
            o->title = (char *)sm->title;
            o->posting = (sm->info.flags & MQSTORE_CONV_ADMINS_POST)
                             ? MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_ADMINS
                             : MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_EVERYONE;
            /* A last entry that does not decode is left out (logged). */
            if (sm->last.n && !message_view(&sm->last.items[0], &stored[k], &views[k]))
                o->last_message = &views[k];
            ptrs[k] = o;
        }
        Mqchat__V1__ListConversationsResponse r = MQCHAT__V1__LIST_CONVERSATIONS_RESPONSE__INIT;
        r.n_conversations = fit(d, (void *const *)ptrs, n);
        r.conversations = ptrs;
        r.more = l->more || r.n_conversations < n;
        resp->body_case = MQCHAT__V1__RESPONSE__BODY_CONVERSATIONS;
        resp->conversations = &r;
        reply_response(d, c, resp);
    } else {
        fail(d, c, resp->request_id, EC(INTERNAL), "out of memory");
    }
    for (size_t i = 0; stored && i < k; i++)
        if (stored[i]) mqchat__v1__message__free_unpacked(stored[i], NULL);
    free(stored);
    free(views);
    free(sums);
    free(ptrs);
}

/* A sync page, with the device's positions in large conversations when it
 * asked: positions first (they are small), then messages within what is
 * left of the budget. */
static void respond_sync(dev *d, conn *c, Mqchat__V1__Response *resp, const mqstore_page *p,
                         uint64_t inbox_head, const mqstore_position_list *pl)
{
    Mqchat__V1__Message **ptrs = NULL, *views = NULL, **stored = NULL;
    size_t np = pl ? pl->n : 0;
    Mqchat__V1__ConversationPosition *pos = calloc(np ? np : 1, sizeof(*pos));
    Mqchat__V1__ConversationPosition **pptrs = calloc(np ? np : 1, sizeof(*pptrs));
    if (!pos || !pptrs || page_views(p, &ptrs, &views, &stored)) {
        views_free(p->n, ptrs, views, stored);
        free(pos);
        free(pptrs);
        fail(d, c, resp->request_id, EC(INTERNAL), "a stored message does not decode");
        return;
    }
    for (size_t i = 0; i < np; i++) {
        mqchat__v1__conversation_position__init(&pos[i]);
        pos[i].conversation_id = (char *)pl->items[i].conv;
        pos[i].position = pl->items[i].position;
        pos[i].end_seq = pl->items[i].end;
        pos[i].member = pl->items[i].member;
        pptrs[i] = &pos[i];
    }
    Mqchat__V1__SyncResponse sync = MQCHAT__V1__SYNC_RESPONSE__INIT;
    /* Positions take at most half the budget; one message always fits. */
    size_t half = (d->cfg->reply_max_bytes - MQC_REPLY_SLACK) / 2, used = 0, k = 0;
    for (; k < np; k++) {
        used += protobuf_c_message_get_packed_size(&pos[k].base) + 6;
        if (used > half) break;
    }
    sync.n_positions = k;
    sync.positions = pptrs;
    sync.positions_more = (pl && pl->more) || k < np;
    size_t n = fit_after(d, (void *const *)ptrs, p->n, k ? used : 0);
    sync.n_messages = n;
    sync.messages = ptrs;
    sync.more = p->more || n < p->n;
    sync.inbox_head = inbox_head;
    sync.restore_floor = mqstore_restore_floor(d->store); /* docs/PROTOCOL.md */
    resp->body_case = MQCHAT__V1__RESPONSE__BODY_SYNC;
    resp->sync = &sync;
    reply_response(d, c, resp);
    d->delivered_sync += n; /* metrics */
    views_free(p->n, ptrs, views, stored);
    free(pos);
    free(pptrs);
}

static void respond_pull(dev *d, conn *c, Mqchat__V1__Response *resp, const char *conv,
                         const mqstore_page *p, uint64_t through)
{
    Mqchat__V1__Message **ptrs = NULL, *views = NULL, **stored = NULL;
    if (page_views(p, &ptrs, &views, &stored)) {
        views_free(p->n, ptrs, views, stored);
        fail(d, c, resp->request_id, EC(INTERNAL), "a stored message does not decode");
        return;
    }
    Mqchat__V1__ConversationPullResponse pr = MQCHAT__V1__CONVERSATION_PULL_RESPONSE__INIT;
    size_t n = fit(d, (void *const *)ptrs, p->n);
    pr.conversation_id = (char *)conv;
    pr.n_messages = n;
    pr.messages = ptrs;
    /* Cut short: the page accounts only for what it carries. */
    pr.through_seq = n < p->n ? p->items[n - 1].seq : through;
    pr.more = p->more || n < p->n;
    resp->body_case = MQCHAT__V1__RESPONSE__BODY_PULL;
    resp->pull = &pr;
    reply_response(d, c, resp);
    d->delivered_sync += n; /* metrics */
    views_free(p->n, ptrs, views, stored);
}

static void respond_read_state(dev *d, conn *c, Mqchat__V1__Response *resp,
                               const Mqchat__V1__ReadStateRequest *req,
                               const mqstore_read_state *rs)
{
    char **ids = calloc(rs->n ? rs->n : 1, sizeof(*ids));
    if (!ids) {
        fail(d, c, resp->request_id, EC(INTERNAL), "out of memory");
        return;
    }
    for (size_t i = 0; i < rs->n; i++)
        ids[i] = (char *)rs->readers[i];
    Mqchat__V1__ReadStateResponse r = MQCHAT__V1__READ_STATE_RESPONSE__INIT;
    r.conversation_id = req->conversation_id;
    r.seq = req->seq;
    r.members = (uint32_t)rs->members;
    r.delivered = (uint32_t)rs->delivered;
    r.read = (uint32_t)rs->read;
    r.n_readers = rs->n; /* at most MEMBERS_MAX ids of <= 128 bytes: fits a reply */
    r.readers = ids;
    r.more = rs->more;
    resp->body_case = MQCHAT__V1__RESPONSE__BODY_READ_STATE;
    resp->read_state = &r;
    reply_response(d, c, resp);
    free(ids);
}

/* A group change was written: the event to every fanned-out user's
 * devices and the GroupResult to the caller, both after the write's
 * ticket is durable. */
static void respond_group(dev *d, conn *c, Mqchat__V1__Response *resp, chat_written *w)
{
    pubs out = {0};
    Mqchat__V1__GroupResult gr = MQCHAT__V1__GROUP_RESULT__INIT;
    gr.conversation_id = w->conv;
    gr.seq = w->r.seq;
    resp->body_case = MQCHAT__V1__RESPONSE__BODY_GROUP;
    resp->group = &gr;
    char topic[512];
    /* Rooms follow the change first: a member added to a large group is
     * in its room for the next message. */
    rooms_after_write(d, w);
    if (lane_written(d, &out, w, NULL) ||
        topic_device(topic, sizeof(topic), d->cfg->topic_prefix, c->user, c->device, "resp") ||
        pubs_add(&out, c->client_id, topic, &resp->base, 1))
        mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: out of memory answering a group change");
    out_after(d, w->r.ticket, &out);
}

/* Run the request's rule and answer. Each branch answers exactly once. */
static void run(dev *d, conn *c, const Mqchat__V1__Request *req, Mqchat__V1__Response *resp)
{
    chat_caller who = {.user = c->user, .device = c->device};
    chat_status st;
    mqstore_page page;
    uint64_t head = 0;
    switch (req->body_case) {
    case MQCHAT__V1__REQUEST__BODY_SYNC: {
        mqstore_position_list pl = {0};
        if (req->sync->positions &&
            chat_positions(&d->chat, &who, req->sync->positions_after, POSITIONS_MAX, &pl, &st))
            break;
        if (chat_sync(&d->chat, &who, req->sync, &page, &head, &st)) {
            mqstore_position_list_free(&pl);
            break;
        }
        respond_sync(d, c, resp, &page, head, req->sync->positions ? &pl : NULL);
        mqstore_page_free(&page);
        mqstore_position_list_free(&pl);
        return;
    }
    case MQCHAT__V1__REQUEST__BODY_PULL: {
        uint64_t through;
        if (chat_pull(&d->chat, &who, req->pull, &page, &through, &st)) break;
        respond_pull(d, c, resp, req->pull->conversation_id, &page, through);
        mqstore_page_free(&page);
        return;
    }
    case MQCHAT__V1__REQUEST__BODY_POSITION_ACK:
        if (chat_position_ack(&d->chat, &who, req->position_ack, &st)) break;
        respond_ok(d, c, resp);
        return;
    case MQCHAT__V1__REQUEST__BODY_READ_STATE: {
        mqstore_read_state rs;
        if (chat_read_state(&d->chat, &who, req->read_state, &rs, &st)) break;
        respond_read_state(d, c, resp, req->read_state, &rs);
        mqstore_read_state_free(&rs);
        return;
    }
    case MQCHAT__V1__REQUEST__BODY_CURSOR_ACK:
        if (chat_cursor_ack(&d->chat, &who, req->cursor_ack->inbox_seq, &st)) break;
        respond_ok(d, c, resp);
        return;
    case MQCHAT__V1__REQUEST__BODY_HISTORY:
        if (chat_history(&d->chat, &who, req->history, &page, &st)) break;
        respond_page(d, c, resp, &page, req->history->conversation_id);
        mqstore_page_free(&page);
        return;
    case MQCHAT__V1__REQUEST__BODY_LIST_MEMBERS: {
        mqstore_member_list l;
        int more;
        if (chat_members(&d->chat, &who, req->list_members, &l, &more, &st)) break;
        respond_members(d, c, resp, req->list_members->conversation_id, &l, more);
        mqstore_member_list_free(&l);
        return;
    }
    case MQCHAT__V1__REQUEST__BODY_LIST_CONVERSATIONS: {
        chat_conv_list l;
        if (chat_conversations(&d->chat, &who, req->list_conversations, &l, &st)) break;
        respond_convs(d, c, resp, &l);
        chat_conv_list_free(&l);
        return;
    }
    case MQCHAT__V1__REQUEST__BODY_PUSH_REGISTER:
    case MQCHAT__V1__REQUEST__BODY_PUSH_UNREGISTER:
        if (!d->chat.push_on) {
            chat_status off = {.code = EC(UNSUPPORTED)};
            snprintf(off.msg, sizeof(off.msg), "push is off on this server (no Redis)");
            reply_error(d, c, req->request_id, &off);
            return;
        }
        if (req->body_case == MQCHAT__V1__REQUEST__BODY_PUSH_REGISTER
                ? chat_push_register(&d->chat, &who, req->push_register, &st)
                : chat_push_unregister(&d->chat, &who, &st))
            break;
        respond_ok(d, c, resp);
        return;
    case MQCHAT__V1__REQUEST__BODY_PRESENCE_WATCH:
    case MQCHAT__V1__REQUEST__BODY_PRESENCE_SETTINGS:
        if (!d->pres) {
            chat_status off = {.code = EC(UNSUPPORTED)};
            snprintf(off.msg, sizeof(off.msg), "presence is off on this server (no Redis)");
            reply_error(d, c, req->request_id, &off);
        } else if (req->body_case == MQCHAT__V1__REQUEST__BODY_PRESENCE_WATCH) {
            presence_watch(d->pres, c, req->request_id, req->presence_watch);
        } else {
            presence_settings(d->pres, c, req->request_id, req->presence_settings);
        }
        return;
    default: {
        /* The group requests; anything else is UNSUPPORTED from the rule. */
        chat_written w;
        if (chat_group(&d->chat, &who, req, &w, &st)) break;
        respond_group(d, c, resp, &w);
        chat_written_clear(&w);
        return;
    }
    }
    reply_error(d, c, req->request_id, &st);
}

int handle_request(dev *d, conn *c, const void *payload, size_t len)
{
    wire_err err;
    Mqchat__V1__Request *req =
        wire_request(payload, len, d->cfg->max_body, d->cfg->group_max_members, &err);
    int64_t wait = 0;
    chat_status st = {.code = err.code};
    snprintf(st.msg, sizeof(st.msg), "%s", err.msg);
    if (!st.code && (wait = conn_rate_take(d, c)) > 0) {
        st.code = EC(RATE_LIMITED);
        st.retry_ms = (uint32_t)wait;
        snprintf(st.msg, sizeof(st.msg), "too many requests; retry in %lld ms", (long long)wait);
    }
    if (st.code) {
        reply_error(d, c, req ? req->request_id : NULL, &st);
        if (req) mqchat__v1__request__free_unpacked(req, NULL);
        return MOSQ_ERR_ACL_DENIED;
    }
    Mqchat__V1__Response resp = MQCHAT__V1__RESPONSE__INIT;
    resp.request_id = req->request_id;
    run(d, c, req, &resp);
    mqchat__v1__request__free_unpacked(req, NULL);
    return MOSQ_ERR_SUCCESS;
}
