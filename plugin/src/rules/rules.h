/* rules — the chat rules: who may do what, and what it writes.
 *
 * Each rule takes a caller (the authenticated user and device), a request
 * that plugin/src/core/wire.c has already decoded and validated, and the
 * store; it checks membership and permissions, makes at most one store
 * write, and returns 0 with a result, or -1 with a status: the error code,
 * a message for the device and, where it helps, a retry delay. A rule never
 * publishes, never logs and never calls the broker, so the device layer
 * (plugin/src/device/) turns its result into MQTT replies, an operator
 * command ($CONTROL, plugin/src/control/) can reuse it, and the unit tests
 * drive it with nothing but a store in a temp dir (tests/unit/test_chat.c).
 *
 * Per-connection limits (rate limits, the bound on undurable sends) are
 * the device layer's: they belong to a connection, not to the rule.
 *
 * Lifetimes: a result may borrow strings from the caller and from the
 * request; keep both alive until the result is cleared.
 *
 * Threads: main thread (the store is the single writer; see
 * docs/ARCHITECTURE.md). */
#ifndef MQC_RULES_H
#define MQC_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "mqchat.pb-c.h"
#include "mqc_id.h"
#include "mqstore.h"
#include "wire.h"

typedef struct chat {
    mqstore *store;
    const mqc_config *cfg;
    /* Push (rules/push.c): on when the plugin drains jobs to Redis. The
     * device layer says which devices are connected here (they get the
     * message live: no push) and whether the outbox is full. */
    int push_on;
    int (*online)(void *data, const char *user, const char *device);
    void *online_data;
    int (*push_blocked)(void *push_data);
    void *push_data;
    uint64_t push_failed; /* sends whose jobs could not be built (stored all the same) */
} chat;

typedef struct chat_caller {
    const char *user;
    const char *device; /* required for sends (the dedup key names it); may be
                           NULL for other rules (an operator acting as the user) */
    int op;             /* an operator ($CONTROL, plugin/src/control/): `user` is the
                           admin's name; it acts with an owner's rights in every
                           existing conversation without being a member */
} chat_caller;

/* Why a rule refused. code is never UNSPECIFIED after a refusal. */
typedef struct chat_status {
    wire_code code;
    uint32_t retry_ms; /* for UNAVAILABLE: the earliest sensible retry */
    char msg[160];
} chat_status;

/* A write the members must hear about: a message or a conversation event.
 * `msg` is the Message their devices receive (inbox_seq is set per user at
 * fan-out); r.fanout_* lists every user with an inbox entry for it.
 * r.duplicate: a retried send, nothing new was written (answer with the
 * same ACK, deliver nothing). Deliver nothing before r.ticket is durable. */
typedef struct chat_written {
    mqstore_result r;
    Mqchat__V1__Message msg;
    Mqchat__V1__ConversationEvent ev; /* msg.event for group changes */
    char conv[MQC_ID_BUF];
    char **users; /* owned array behind ev.user_ids (group create) */
    void *stored; /* the stored form, owned */
} chat_written;

void chat_written_clear(chat_written *w);

/* ---- sending -------------------------------------------------------- */

/* Store a message: the sender must be a member (a 1:1 conversation that
 * names the sender is created on its first message), deduplicated on
 * (sender, client_msg_id), one batch with every member's inbox entry. */
int chat_send(chat *c, const chat_caller *who, const Mqchat__V1__SendRequest *req,
              chat_written *out, chat_status *st);

/* An edit or a delete for everyone (req->edit_seq / delete_seq set; chat_send
 * calls it): one store append of the MESSAGE_EDITED / MESSAGE_DELETED event
 * that also replaces the target's stored content (rules/edit.c). */
int chat_edit(chat *c, const chat_caller *who, const Mqchat__V1__SendRequest *req,
              chat_written *out, chat_status *st);

/* ---- groups ----------------------------------------------------------- */

/* Create a group, add, remove, leave, change roles (the Request's body says
 * which). Rules: docs/PROTOCOL.md, "Groups". out->msg is the
 * ConversationEvent message every member (and every removed member) gets. */
int chat_group(chat *c, const chat_caller *who, const Mqchat__V1__Request *req, chat_written *out,
               chat_status *st);

/* Delete a group (operators only, who->op): a GROUP_DELETED event in every
 * member's inbox, every member removed, the history before it deleted
 * (mqstore_conv_delete); its seqs never repeat. */
int chat_group_delete(chat *c, const chat_caller *who, const char *conv, chat_written *out,
                      chat_status *st);

/* Remove `user` from conv whatever their role, 1:1 conversations included
 * (operators only: a user's erasure). A MEMBERS_REMOVED event names them. */
int chat_member_expel(chat *c, const chat_caller *who, const char *conv, const char *user,
                      chat_written *out, chat_status *st);

/* ---- reading ------------------------------------------------------------ */

/* A page of the caller's inbox after s->after_inbox_seq; *inbox_head is the
 * inbox's head. Free the page with mqstore_page_free. */
int chat_sync(chat *c, const chat_caller *who, const Mqchat__V1__SyncRequest *s, mqstore_page *out,
              uint64_t *inbox_head, chat_status *st);

/* The device's cursor moves up to inbox_seq (never down); the inbox is
 * trimmed behind the slowest device each time the cursor crosses a
 * multiple of CHAT_TRIM_EVERY (rules/read.c says why). */
#define CHAT_TRIM_EVERY 64
int chat_cursor_ack(chat *c, const chat_caller *who, uint64_t inbox_seq, chat_status *st);

/* A page of a conversation's log before h->before_seq (members only). */
int chat_history(chat *c, const chat_caller *who, const Mqchat__V1__HistoryRequest *h,
                 mqstore_page *out, chat_status *st);

/* A page of a conversation's members (members only), ordered by user id,
 * after lm->after_user_id; *more says whether members follow it. */
int chat_members(chat *c, const chat_caller *who, const Mqchat__V1__ListMembers *lm,
                 mqstore_member_list *out, int *more, chat_status *st);

/* One conversation of the caller's list. */
typedef struct chat_conv_summary {
    char conv[MQC_ID_BUF];
    mqstore_role role;
    uint64_t joined_seq;
    mqstore_conv_info info;            /* head, mode, members, flags, last activity */
    uint64_t read;                     /* the caller's read watermark */
    uint64_t unread;                   /* head - max(read, joined_seq) */
    mqstore_page last;                 /* the newest entry (n = 0 when empty) */
    char title[MQSTORE_TITLE_MAX + 1]; /* "" when none (1:1 conversations) */
} chat_conv_summary;

typedef struct chat_conv_list {
    size_t n;
    int more;
    chat_conv_summary *items;
} chat_conv_list;

void chat_conv_list_free(chat_conv_list *l);

/* A page of the caller's conversations, by id or by recent activity (then
 * computed from every conversation's head at request time, up to
 * CHAT_CONVS_SORT_MAX conversations: no per-member write per message). */
#define CHAT_CONVS_SORT_MAX 10000
int chat_conversations(chat *c, const chat_caller *who, const Mqchat__V1__ListConversations *lc,
                       chat_conv_list *out, chat_status *st);

/* ---- large conversations ----------------------------------------------- */

/* The caller device's positions with news (for a SyncRequest that asks). */
int chat_positions(chat *c, const chat_caller *who, const char *after, size_t limit,
                   mqstore_position_list *out, chat_status *st);

/* A page of what the caller has to pull from a large conversation;
 * *through: the seq the page accounts for. */
int chat_pull(chat *c, const chat_caller *who, const Mqchat__V1__ConversationPull *p,
              mqstore_page *out, uint64_t *through, chat_status *st);

/* The caller device's position moves up to seq (never down). */
int chat_position_ack(chat *c, const chat_caller *who, const Mqchat__V1__PositionAck *pa,
                      chat_status *st);

/* Group read state of one message (members only), the sender not counted. */
int chat_read_state(chat *c, const chat_caller *who, const Mqchat__V1__ReadStateRequest *rs,
                    mqstore_read_state *out, chat_status *st);

/* ---- receipts and typing --------------------------------------------- */

typedef struct chat_receipt_result {
    int changed; /* 0: the watermarks were already there; tell nobody */
    int large;   /* a large conversation: tell nobody (members ask for read state) */
    uint64_t delivered, read;
    mqstore_member_list members; /* whom to tell, when changed; empty if the
                                    list could not be read (the receipt is
                                    stored all the same) */
} chat_receipt_result;

/* Raise the caller's delivered or read watermark (monotonic; reading
 * implies delivery). Free out->members with mqstore_member_list_free. */
int chat_receipt(chat *c, const chat_caller *who, const Mqchat__V1__Receipt *rc,
                 chat_receipt_result *out, chat_status *st);

/* A typing notice is never stored: check membership and return the
 * members to forward it to (the caller's own user included; skip it), or,
 * in a large conversation, *large = 1 and no list (forward it to the
 * conversation's online devices). */
int chat_typing(chat *c, const chat_caller *who, const Mqchat__V1__Typing *t,
                mqstore_member_list *members, int *large, chat_status *st);

/* ---- push -------------------------------------------------------------- */

/* The caller device's token: registered (replacing an older one), or removed. */
int chat_push_register(chat *c, const chat_caller *who, const Mqchat__V1__PushTokenRegister *p,
                       chat_status *st);
int chat_push_unregister(chat *c, const chat_caller *who, chat_status *st);

/* The push jobs for a message about to be stored (docs/PUSH.md): each a
 * malloc'ed blob; free with chat_push_free. -1 on a store error or out of
 * memory (the message is then stored without jobs). */
typedef struct chat_push {
    size_t n;
    mqstore_blob *jobs;
} chat_push;
int chat_push_jobs(chat *c, const chat_caller *who, const Mqchat__V1__SendRequest *req,
                   chat_push *out);
void chat_push_free(chat_push *p);

/* ---- presence privacy ------------------------------------------------- */

/* A user's presence privacy (stored with mqstore_user_prefs_*). */
typedef struct chat_presence_prefs {
    Mqchat__V1__PresenceVisibility visibility; /* never UNSPECIFIED */
    int hide_last_seen;
} chat_presence_prefs;

/* The user's settings; the defaults (CONTACTS, last seen shown) when none
 * are stored. */
int chat_presence_prefs_get(chat *c, const char *user, chat_presence_prefs *out, chat_status *st);

/* Store the caller's new settings (visibility UNSPECIFIED keeps the old
 * one); *out gets the settings now in force. */
int chat_presence_settings(chat *c, const chat_caller *who, const Mqchat__V1__PresenceSettings *ps,
                           chat_presence_prefs *out, chat_status *st);

/* May `watcher` watch `target`, whose settings are *p? 0 with *allowed set
 * (1: yes; 0: PERMISSION_DENIED for the watcher), or -1 on a store error.
 * Yourself always; EVERYONE and NOBODY always (NOBODY shows UNKNOWN);
 * CONTACTS only for users sharing a conversation with the target. */
int chat_presence_may_watch(chat *c, const char *watcher, const char *target,
                            const chat_presence_prefs *p, int *allowed, chat_status *st);

/* 1 if a and b share a conversation (a 1:1 holding at least one message,
 * or a group), 0 if not, -1 on a store error. Costs one lookup per
 * conversation of a. */
int chat_contacts(chat *c, const char *a, const char *b);

#endif
