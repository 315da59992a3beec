/* read — the reading rules: inbox sync, the cursor ack, history, member
 * and conversation lists. Every page is bounded by a count (a default, and
 * the operator's maximum); the device layer then cuts it to the reply's
 * byte budget (reply_max_bytes), and sync pages are read within it. */
#include "rules_int.h"

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
    mqstore_err e = mqstore_cursor_ack(c->store, who->user, who->device, inbox_seq, NULL);
    if (e == MQSTORE_ERR_INVAL)
        return chat_fail(st, EC(INVALID_ARGUMENT), "inbox_seq is above the inbox head");
    if (!e) e = mqstore_inbox_trim(c->store, who->user, NULL);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}

int chat_history(chat *c, const chat_caller *who, const Mqchat__V1__HistoryRequest *h,
                 mqstore_page *out, chat_status *st)
{
    mqstore_member self;
    memset(out, 0, sizeof(*out));
    if (chat_require_member(c, who, h->conversation_id, &self, st)) return -1;
    mqstore_err e =
        mqstore_history_read_bytes(c->store, h->conversation_id, h->before_seq,
                                   page_limit(h->limit, HISTORY_DEFAULT, c->cfg->history_page_max),
                                   c->cfg->reply_max_bytes - MQC_REPLY_SLACK, out);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}

int chat_members(chat *c, const chat_caller *who, const Mqchat__V1__ListMembers *lm,
                 mqstore_member_list *out, int *more, chat_status *st)
{
    mqstore_member self;
    memset(out, 0, sizeof(*out));
    *more = 0;
    if (chat_require_member(c, who, lm->conversation_id, &self, st)) return -1;
    mqstore_err e = mqstore_members_list(c->store, lm->conversation_id, out);
    if (e) return chat_store_fail(st, e, EC(INTERNAL));
    /* The store lists members by user id: skip to the page, keep `limit`. */
    size_t from = 0, limit = page_limit(lm->limit, MEMBERS_DEFAULT, MEMBERS_MAX);
    if (lm->after_user_id && lm->after_user_id[0])
        while (from < out->n && strcmp(out->items[from].user, lm->after_user_id) <= 0)
            from++;
    size_t n = out->n - from < limit ? out->n - from : limit;
    *more = from + n < out->n;
    memmove(out->items, out->items + from, n * sizeof(*out->items));
    out->n = n;
    return 0;
}

void chat_conv_list_free(chat_conv_list *l)
{
    mqstore_conv_list_free(&l->l);
    free(l->head);
    memset(l, 0, sizeof(*l));
}

int chat_conversations(chat *c, const chat_caller *who, const Mqchat__V1__ListConversations *lc,
                       chat_conv_list *out, chat_status *st)
{
    memset(out, 0, sizeof(*out));
    mqstore_err e = mqstore_user_convs(c->store, who->user, lc->after_conversation_id,
                                       page_limit(lc->limit, LIST_DEFAULT, LIST_MAX), &out->l);
    if (!e && !(out->head = calloc(out->l.n ? out->l.n : 1, sizeof(*out->head))))
        e = MQSTORE_ERR_NOMEM;
    for (size_t i = 0; !e && i < out->l.n; i++)
        e = mqstore_conv_head(c->store, out->l.conv[i], &out->head[i]);
    if (e) {
        chat_conv_list_free(out);
        return chat_store_fail(st, e, EC(INTERNAL));
    }
    return 0;
}
