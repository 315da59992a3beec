/* read — the reading rules: inbox sync, the cursor ack, history, member
 * and conversation lists. Every page is bounded by a count (a default, and
 * the operator's maximum); the device layer then cuts it to the reply's
 * byte budget (reply_max_bytes), and sync pages are read within it. */
#include "rules_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNC_DEFAULT 100
#define HISTORY_DEFAULT 50
#define LIST_DEFAULT 100
#define LIST_MAX 500
#define MEMBERS_DEFAULT 1000
#define MEMBERS_MAX 1000

static size_t page_limit(uint32_t asked, size_t dflt, size_t max)
{
    size_t n = asked ? asked : dflt;
    return n > max ? max : n;
}

int chat_sync(chat *c, const chat_caller *who, const Mqchat__V1__SyncRequest *s, mqstore_page *out,
              uint64_t *inbox_head, chat_status *st)
{
    memset(out, 0, sizeof(*out));
    mqstore_err e = mqstore_inbox_head(c->store, who->user, inbox_head);
    /* Nothing newer: an empty page (also for a cursor from the future). */
    if (!e && s->after_inbox_seq < *inbox_head)
        e = mqstore_inbox_read(c->store, who->user, s->after_inbox_seq,
                               page_limit(s->limit, SYNC_DEFAULT, c->cfg->sync_page_max),
                               c->cfg->reply_max_bytes - MQC_REPLY_SLACK, out);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}

int chat_cursor_ack(chat *c, const chat_caller *who, uint64_t inbox_seq, chat_status *st)
{
    uint64_t before = 0, after = 0;
    mqstore_err e = mqstore_cursor_get(c->store, who->user, who->device, &before);
    if (!e) e = mqstore_cursor_ack(c->store, who->user, who->device, inbox_seq, &after);
    if (e == MQSTORE_ERR_INVAL)
        return chat_fail(st, EC(INVALID_ARGUMENT), "inbox_seq is above the inbox head");
    /* A trim is a range deletion, and every range tombstone costs each
     * later read of the inbox until compaction removes it: a client acking
     * every message, with a trim per ack, took the broker to 5.7 ms of CPU
     * per message (docs/PERFORMANCE.md, "C SDK"). So trim when the
     * device's cursor crosses a multiple of CHAT_TRIM_EVERY: at most that
     * many acked entries wait (sync starts after the cursor anyway). */
    if (!e && after / CHAT_TRIM_EVERY != before / CHAT_TRIM_EVERY)
        e = mqstore_inbox_trim(c->store, who->user, NULL);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}

int chat_history(chat *c, const chat_caller *who, const Mqchat__V1__HistoryRequest *h,
                 mqstore_page *out, chat_status *st)
{
    mqstore_member self;
    memset(out, 0, sizeof(*out));
    if (chat_require_member(c, who, h->conversation_id, &self, st)) return -1;
    /* A member sees the log from the event that added them on. */
    if (h->before_seq && h->before_seq <= self.joined_seq) return 0;
    mqstore_err e =
        mqstore_history_read_bytes(c->store, h->conversation_id, h->before_seq,
                                   page_limit(h->limit, HISTORY_DEFAULT, c->cfg->history_page_max),
                                   c->cfg->reply_max_bytes - MQC_REPLY_SLACK, out);
    if (e) return chat_store_fail(st, e, EC(INTERNAL));
    size_t keep = 0; /* the page is newest first */
    while (keep < out->n && out->items[keep].seq >= self.joined_seq)
        keep++;
    if (keep < out->n || (keep && out->items[keep - 1].seq <= self.joined_seq)) out->more = 0;
    for (size_t i = keep; i < out->n; i++)
        free(out->items[i].payload);
    out->n = keep;
    return 0;
}

int chat_members(chat *c, const chat_caller *who, const Mqchat__V1__ListMembers *lm,
                 mqstore_member_list *out, int *more, chat_status *st)
{
    mqstore_member self;
    memset(out, 0, sizeof(*out));
    *more = 0;
    if (chat_require_member(c, who, lm->conversation_id, &self, st)) return -1;
    /* One range scan per page, whatever the group's size. */
    mqstore_err e =
        mqstore_members_page(c->store, lm->conversation_id, lm->after_user_id,
                             page_limit(lm->limit, MEMBERS_DEFAULT, MEMBERS_MAX), out, more);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}

void chat_conv_list_free(chat_conv_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        mqstore_page_free(&l->items[i].last);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* Activity order: newest first, then by id. */
static int cmp_activity(const void *a, const void *b)
{
    const chat_conv_summary *x = a, *y = b;
    if (x->info.last_time_ms != y->info.last_time_ms)
        return x->info.last_time_ms > y->info.last_time_ms ? -1 : 1;
    return strcmp(x->conv, y->conv);
}

/* Every conversation of the user (up to CHAT_CONVS_SORT_MAX) with its
 * state, or one page by id after `after`. */
static mqstore_err load_convs(chat *c, const char *user, const char *after, size_t limit, int all,
                              chat_conv_list *out)
{
    size_t cap = 0;
    char last[MQC_ID_BUF];
    snprintf(last, sizeof(last), "%s", after ? after : "");
    for (;;) {
        mqstore_conv_list l;
        size_t want = all ? 1000 : limit;
        mqstore_err e = mqstore_user_convs(c->store, user, last, want, &l);
        if (e) return e;
        if (out->n + l.n > cap) {
            size_t ncap = out->n + l.n;
            chat_conv_summary *items = realloc(out->items, (ncap ? ncap : 1) * sizeof(*items));
            if (!items) {
                mqstore_conv_list_free(&l);
                return MQSTORE_ERR_NOMEM;
            }
            out->items = items;
            cap = ncap;
        }
        for (size_t i = 0; !e && i < l.n; i++) {
            chat_conv_summary *sm = &out->items[out->n];
            memset(sm, 0, sizeof(*sm));
            snprintf(sm->conv, sizeof(sm->conv), "%s", l.conv[i]);
            sm->role = l.role[i];
            sm->joined_seq = l.joined_seq[i];
            if (!(e = mqstore_conv_info_get(c->store, sm->conv, &sm->info))) out->n++;
        }
        int more = l.more;
        if (l.n) snprintf(last, sizeof(last), "%s", l.conv[l.n - 1]);
        mqstore_conv_list_free(&l);
        if (e) return e;
        if (!all) {
            out->more = more;
            return MQSTORE_OK;
        }
        if (!more) return MQSTORE_OK;
        if (out->n >= CHAT_CONVS_SORT_MAX) {
            out->more = 1; /* the rest are not sorted in */
            return MQSTORE_OK;
        }
    }
}

int chat_conversations(chat *c, const chat_caller *who, const Mqchat__V1__ListConversations *lc,
                       chat_conv_list *out, chat_status *st)
{
    memset(out, 0, sizeof(*out));
    size_t limit = page_limit(lc->limit, LIST_DEFAULT, LIST_MAX);
    int by_activity = lc->order == MQCHAT__V1__CONVERSATION_ORDER__CONVERSATION_ORDER_ACTIVITY;
    mqstore_err e = load_convs(c, who->user, by_activity ? NULL : lc->after_conversation_id, limit,
                               by_activity, out);
    if (!e && by_activity) {
        qsort(out->items, out->n, sizeof(*out->items), cmp_activity);
        /* Skip to the entry after the previous page's last one. */
        size_t from = 0;
        if (lc->after_conversation_id[0]) {
            chat_conv_summary probe = {.info.last_time_ms = lc->after_activity_ms};
            snprintf(probe.conv, sizeof(probe.conv), "%s", lc->after_conversation_id);
            while (from < out->n && cmp_activity(&out->items[from], &probe) <= 0)
                from++;
        }
        size_t n = out->n - from < limit ? out->n - from : limit;
        out->more = from + n < out->n || (out->more && from + n == out->n);
        memmove(out->items, out->items + from, n * sizeof(*out->items));
        out->n = n;
    }
    for (size_t i = 0; !e && i < out->n; i++) {
        chat_conv_summary *sm = &out->items[i];
        uint64_t delivered;
        e = mqstore_receipt_get(c->store, sm->conv, who->user, &delivered, &sm->read);
        uint64_t base = sm->read > sm->joined_seq ? sm->read : sm->joined_seq;
        sm->unread = sm->info.head > base ? sm->info.head - base : 0;
        if (!e && sm->info.head) e = mqstore_msg_get(c->store, sm->conv, sm->info.head, &sm->last);
        if (!e) e = mqstore_conv_title(c->store, sm->conv, sm->title, sizeof(sm->title));
    }
    if (e) {
        chat_conv_list_free(out);
        return chat_store_fail(st, e, EC(INTERNAL));
    }
    return 0;
}

int chat_positions(chat *c, const chat_caller *who, const char *after, size_t limit,
                   mqstore_position_list *out, chat_status *st)
{
    if (!who->device) {
        memset(out, 0, sizeof(*out));
        return chat_fail(st, EC(INVALID_ARGUMENT), "positions belong to a device");
    }
    mqstore_err e = mqstore_positions(c->store, who->user, who->device, after, limit, out);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}

/* Pull and position refusals: an unknown conversation, or no window in it. */
static int pull_fail(chat *c, const char *conv, mqstore_err e, chat_status *st)
{
    mqstore_err ee;
    if (e == MQSTORE_ERR_NOTMEMBER && !mqstore_conv_exists(c->store, conv, &ee) && !ee)
        return chat_fail(st, EC(UNKNOWN_CONVERSATION), "no such conversation");
    if (e == MQSTORE_ERR_NOTMEMBER)
        return chat_fail(st, EC(NOT_MEMBER),
                         "nothing to pull: not a member of a large conversation");
    return chat_store_fail(st, e, EC(INTERNAL));
}

int chat_pull(chat *c, const chat_caller *who, const Mqchat__V1__ConversationPull *p,
              mqstore_page *out, uint64_t *through, chat_status *st)
{
    mqstore_err e = mqstore_conv_pull(c->store, p->conversation_id, who->user, p->after_seq,
                                      page_limit(p->limit, SYNC_DEFAULT, c->cfg->sync_page_max),
                                      c->cfg->reply_max_bytes - MQC_REPLY_SLACK, out, through);
    return e ? pull_fail(c, p->conversation_id, e, st) : 0;
}

int chat_position_ack(chat *c, const chat_caller *who, const Mqchat__V1__PositionAck *pa,
                      chat_status *st)
{
    if (!who->device) return chat_fail(st, EC(INVALID_ARGUMENT), "positions belong to a device");
    mqstore_err e =
        mqstore_position_ack(c->store, who->user, who->device, pa->conversation_id, pa->seq, NULL);
    if (e == MQSTORE_ERR_INVAL)
        return chat_fail(st, EC(INVALID_ARGUMENT), "seq is above the conversation's head");
    return e ? pull_fail(c, pa->conversation_id, e, st) : 0;
}

int chat_read_state(chat *c, const chat_caller *who, const Mqchat__V1__ReadStateRequest *rs,
                    mqstore_read_state *out, chat_status *st)
{
    mqstore_member self;
    memset(out, 0, sizeof(*out));
    if (chat_require_member(c, who, rs->conversation_id, &self, st)) return -1;
    mqstore_page m;
    mqstore_err e = mqstore_msg_get(c->store, rs->conversation_id, rs->seq, &m);
    if (e == MQSTORE_ERR_NOTFOUND || e == MQSTORE_ERR_INVAL)
        return chat_fail(st, EC(NOT_FOUND), "no message with that seq");
    if (e) return chat_store_fail(st, e, EC(INTERNAL));
    e = mqstore_read_state_get(c->store, rs->conversation_id, rs->seq, m.items[0].sender_user,
                               rs->after_user_id,
                               page_limit(rs->limit, MEMBERS_DEFAULT, MEMBERS_MAX), out);
    mqstore_page_free(&m);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}
