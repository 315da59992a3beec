/* receipts — read/delivered watermarks and typing notices. A receipt
 * raises the caller's watermarks in the store (monotonic; reading implies
 * delivery, so read <= delivered <= head always holds there) and, when they
 * moved, names the members to tell. Typing is never stored. */
#include "rules_int.h"

#include <assert.h>
#include <string.h>

int chat_receipt(chat *c, const chat_caller *who, const Mqchat__V1__Receipt *rc,
                 chat_receipt_result *out, chat_status *st)
{
    mqstore_member self;
    memset(out, 0, sizeof(*out));
    if (chat_require_member(c, who, rc->conversation_id, &self, st)) return -1;
    int read = rc->type == MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ;
    mqstore_err e =
        mqstore_receipt_update(c->store, rc->conversation_id, who->user, read ? 0 : rc->seq,
                               read ? rc->seq : 0, &out->delivered, &out->read, &out->changed);
    if (e == MQSTORE_ERR_INVAL)
        return chat_fail(st, EC(INVALID_ARGUMENT), "seq is above the conversation's head");
    if (e) return chat_store_fail(st, e, EC(UNKNOWN_CONVERSATION));
    /* The store's watermark invariant, as the caller will report it. */
    assert(out->read <= out->delivered);
    /* The receipt is stored whatever happens next; a member list that
     * cannot be read leaves out->members empty (nobody hears of it). A
     * large conversation tells nobody: its read state is asked for
     * (ReadStateRequest), never pushed to every member. */
    int large = 0;
    if (out->changed && !mqstore_conv_large(c->store, rc->conversation_id, &large) && large)
        out->large = 1;
    else if (out->changed && mqstore_members_list(c->store, rc->conversation_id, &out->members))
        memset(&out->members, 0, sizeof(out->members));
    return 0;
}

int chat_typing(chat *c, const chat_caller *who, const Mqchat__V1__Typing *t,
                mqstore_member_list *members, int *large, chat_status *st)
{
    mqstore_member self;
    memset(members, 0, sizeof(*members));
    *large = 0;
    if (chat_require_member(c, who, t->conversation_id, &self, st)) return -1;
    mqstore_err e = mqstore_conv_large(c->store, t->conversation_id, large);
    if (!e && *large) return 0; /* to the online members only, not a list of them all */
    if (!e) e = mqstore_members_list(c->store, t->conversation_id, members);
    return e ? chat_store_fail(st, e, EC(INTERNAL)) : 0;
}
