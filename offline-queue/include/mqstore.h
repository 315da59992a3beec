/* mqstore — the durable store of mqchat, on RocksDB.
 *
 * The idea: every chat message lives once, in its conversation's log, under
 * a per-conversation sequence number `seq`. Every user additionally has an
 * inbox log with its own monotonic `inbox_seq`: one small entry per message
 * (or conversation event) the user should see, pointing at (conversation,
 * seq). A device keeps one cursor on its user's inbox, so catching up on
 * every conversation after being offline is one range scan. Entries every
 * device has acknowledged are trimmed.
 *
 * One append (a message or a membership change) is one RocksDB WriteBatch:
 * the message (whose seq becomes the conversation's head), the dedup key, one
 * inbox entry per member and the push-outbox jobs — all or nothing.
 *
 * This library knows nothing of MQTT. Callers pass opaque payload bytes
 * (mqchat's plugin stores the serialized wire message there) and opaque push
 * jobs; the store owns keys, ordering, dedup, cursors and durability.
 *
 * Small and large conversations. A small conversation fans out on write: an
 * inbox entry per member per message. A large one (the caller decides when,
 * mqstore_event.mode) stores each message once — message, dedup key, no
 * per-member write — and its members pull it: each user has a pull record
 * per large conversation (where the user's pulling starts and, once they
 * left, ends), each device a position in it (mqstore_positions(),
 * mqstore_conv_pull(), mqstore_position_ack()). A membership event of a
 * large conversation goes only into the added or removed users' inboxes; an
 * event that switches the mode goes into every member's. A message keeps
 * the mode it was written in (MsgRecord.pulled), so a conversation may
 * switch back and forth and a device that slept through it all still pulls
 * exactly the messages its inbox did not get.
 *
 * Retention and erasure. Messages may expire by age or by their distance
 * from the conversation's head (mqstore_options.retention_*, overridden per
 * conversation); compaction removes them or, where the record must stay,
 * leaves a stub without payload, and reads return such messages as
 * `expired` items so a device never sees a hole in the seqs. Edits rewrite
 * a message's payload in the batch of the event announcing them
 * (mqstore_append.replace_seq); mqstore_conv_delete() ends a conversation
 * (its seqs never repeat); mqstore_user_erase() removes a user's data.
 *
 * Durability. Every write goes to the RocksDB write-ahead log before the call
 * returns, so it survives a crash of the process. Each write gets a ticket
 * (1, 2, 3, ...). In MQSTORE_DURABILITY_OS mode a ticket is durable as soon
 * as its call returns (OS page cache; lost only if the machine loses power).
 * In MQSTORE_DURABILITY_SYNC mode a ticket is durable once an fsync of the
 * WAL that started after the write has returned: one fsync covers every
 * write made before it began (group commit), done either by the store's
 * syncer thread, whenever writes are undurable (MQSTORE_SYNC_THREAD) or when
 * the caller asks (MQSTORE_SYNC_REQUEST), or by the caller itself
 * (mqstore_sync(), MQSTORE_SYNC_MANUAL).
 * mqstore_durable() returns the highest durable ticket and may be called from
 * any thread.
 *
 * Threads. All functions may be called from any thread; writes are
 * serialised by an internal mutex (the store is the single writer of every
 * seq). The on_durable callback runs on the syncer thread.
 *
 * Errors. Every function returns an mqstore_err; nothing aborts. Pointers
 * returned through out-parameters are owned by the caller and freed with the
 * matching *_free function. After MQSTORE_ERR_IO or MQSTORE_ERR_NOSPC
 * nothing of the failed call was applied.
 *
 * Identifiers (users, devices, conversations, client message ids) are
 * 1..MQC_ID_MAX (128) bytes of [A-Za-z0-9._:-] (MQC_ID_KEY in mqc_id.h);
 * anything else is MQSTORE_ERR_INVAL.
 */
#ifndef MQSTORE_H
#define MQSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "mqc_id.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mqstore_err {
    MQSTORE_OK = 0,
    MQSTORE_ERR_INVAL = 1,     /* bad argument: id syntax, NULL, out of range */
    MQSTORE_ERR_NOTFOUND = 2,  /* no such conversation / member / record */
    MQSTORE_ERR_EXISTS = 3,    /* conversation or member already exists; a client
                                  message id already used for another conversation */
    MQSTORE_ERR_NOTMEMBER = 4, /* sender is not a member of the conversation */
    MQSTORE_ERR_TOOBIG = 5,    /* payload over max_payload, or job over max_job */
    MQSTORE_ERR_IO = 6,        /* RocksDB I/O error; nothing was applied */
    MQSTORE_ERR_NOSPC = 7,     /* disk full; nothing was applied */
    MQSTORE_ERR_CORRUPT = 8,   /* a stored value failed to decode */
    MQSTORE_ERR_NOMEM = 9,
    MQSTORE_ERR_READONLY = 10, /* a write failed earlier: writes are refused until the store
                                  resumes (mqstore_resume) */
    MQSTORE_ERR_DENIED = 11,   /* the conversation lets only admins post */
} mqstore_err;

/* A static, human-readable name for an error code. */
const char *mqstore_strerror(mqstore_err err);

typedef enum mqstore_durability {
    MQSTORE_DURABILITY_SYNC = 0, /* fsync (group commit) before a ticket is durable */
    MQSTORE_DURABILITY_OS = 1,   /* durable once in the WAL (survives process crash) */
} mqstore_durability;

typedef enum mqstore_sync_driver {
    MQSTORE_SYNC_THREAD = 0,  /* a store thread fsyncs whenever there are undurable writes */
    MQSTORE_SYNC_MANUAL = 1,  /* the caller calls mqstore_sync(), e.g. once per event-loop pass */
    MQSTORE_SYNC_REQUEST = 2, /* the store thread fsyncs when the caller asks
                                 (mqstore_sync_request(), e.g. at the end of each
                                 event-loop pass): one fsync per pass, never blocking */
} mqstore_sync_driver;

typedef enum mqstore_role {
    MQSTORE_ROLE_MEMBER = 1,
    MQSTORE_ROLE_ADMIN = 2,
    MQSTORE_ROLE_OWNER = 3,
} mqstore_role;

typedef struct mqstore_options {
    mqstore_durability durability;   /* default SYNC */
    mqstore_sync_driver sync_driver; /* default THREAD; ignored in OS mode */
    size_t max_payload;              /* default 65536; 1..16 MiB */
    size_t max_job;                  /* max push-job bytes, default 4096 */
    int64_t dedup_retention_ms;      /* default 7 days; retried sends older than this are new */
    int64_t inbox_retention_ms;      /* default 30 days; older inbox entries are trimmed even if
                                        a device never acked them, and devices silent for longer
                                        no longer hold trimming back */
    size_t cache_bytes;              /* RocksDB block cache, default 64 MiB */
    int64_t resume_interval_ms;      /* default 5000: after a write failure a store thread tries
                                        to make the store writable again this often (0: only
                                        mqstore_resume()) */
    /* Writes stop (NOSPC) while the store's filesystem has less than this
     * free (0: no reserve, the default; RocksDB then fails writes itself
     * when the disk is full). Checked every few dozen writes; writes go on
     * once there is min_free_bytes + a quarter free again (the resumer
     * thread looks every resume_interval_ms). RocksDB never sees the full
     * disk then: nothing to resume, fsyncs of what was written go on. */
    uint64_t min_free_bytes;
    /* Message retention (see "retention and erasure" below): a message older
     * than retention_ms (0: no limit, the default), or one of the seqs
     * below the newest retention_count of its conversation (0: no limit,
     * the default), has expired; each conversation may override both. */
    int64_t retention_ms;
    uint64_t retention_count;
    /* Called on the syncer thread after each fsync with the new durable
     * ticket (SYNC mode, THREAD or REQUEST driver). Must be quick and
     * thread-safe. */
    void (*on_durable)(void *data, uint64_t ticket);
    void *on_durable_data;
    /* Clock, ms since the epoch; NULL = CLOCK_REALTIME. For tests. */
    int64_t (*clock_ms)(void *data);
    void *clock_data;
} mqstore_options;

/* Fill *opt with the defaults above. */
void mqstore_options_init(mqstore_options *opt);

typedef struct mqstore mqstore;

/* Open (creating if missing) the store in directory `path`. On failure
 * returns an error and, if errmsg is not NULL, a malloc'ed message the
 * caller frees. */
mqstore_err mqstore_open(const char *path, const mqstore_options *opt, mqstore **out,
                         char **errmsg);

/* Sync outstanding writes (in SYNC mode), stop the syncer thread, close. */
void mqstore_free(mqstore *s);

/* ---- durability ------------------------------------------------------- */

/* Highest durable ticket. Thread-safe, lock-free. */
uint64_t mqstore_durable(mqstore *s);

/* What the store has written since it was opened: write batches, keys put
 * or deleted in them, and their bytes (keys, values, batch framing). Any
 * thread. */
typedef struct mqstore_stats {
    uint64_t writes;
    uint64_t keys;
    uint64_t bytes;
} mqstore_stats;
void mqstore_stats_get(mqstore *s, mqstore_stats *out);

/* Highest ticket handed out so far. */
uint64_t mqstore_last_ticket(mqstore *s);

/* MQSTORE_SYNC_REQUEST: ask the syncer thread to fsync everything written
 * so far (no-op if all is durable; requests made while an fsync runs are
 * served by the next one). Never blocks. Other drivers: no-op. */
void mqstore_sync_request(mqstore *s);

/* fsync the WAL now, making every ticket written before the call durable.
 * Blocking (about one fsync). In OS mode it is still an fsync. Does not
 * call on_durable (only the syncer thread does). */
mqstore_err mqstore_sync(mqstore *s);

/* ---- conversations and membership --------------------------------------- */

typedef struct mqstore_member {
    char user[MQC_ID_BUF];
    mqstore_role role;
    uint64_t joined_seq; /* seq of the event that added the member */
} mqstore_member;

typedef struct mqstore_member_list {
    size_t n;
    mqstore_member *items;
} mqstore_member_list;

void mqstore_member_list_free(mqstore_member_list *l);

/* An event written into a conversation's log by a membership change: the
 * store gives it a seq like any message and an inbox entry for every member
 * (old and new, so removed users learn they were removed). */
typedef enum mqstore_mode {
    MQSTORE_MODE_KEEP = 0, /* in mqstore_event: leave the mode as it is */
    MQSTORE_MODE_SMALL = 1,
    MQSTORE_MODE_LARGE = 2,
} mqstore_mode;

/* Conversation flags (mqstore_event.flags). */
#define MQSTORE_CONV_ADMINS_POST 1u /* only admins and the owner append messages */
#define MQSTORE_CONV_FLAGS_ALL 1u   /* the flags an event may set */
/* In mqstore_conv_info.flags only, set by mqstore_conv_delete(). */
#define MQSTORE_CONV_DELETED 0x100u

typedef struct mqstore_event {
    const char *actor_user;   /* who did it */
    const char *actor_device; /* may be NULL */
    uint32_t kind;            /* opaque to the store (mqchat: MESSAGE_KIND_EVENT) */
    const void *payload;      /* opaque bytes, at most max_payload */
    size_t payload_len;
    /* Applied in the same batch as the event. */
    mqstore_mode mode; /* KEEP, or the mode from this event on */
    int set_flags;     /* 1: the conversation's flags become `flags` */
    uint32_t flags;
    /* Not NULL: the conversation's title becomes this (opaque bytes up to
     * the NUL, at most MQSTORE_TITLE_MAX; "" removes it). mqstore_conv_title
     * reads it; mqstore_conv_delete removes it. */
    const char *title;
} mqstore_event;

#define MQSTORE_TITLE_MAX 256

/* What a write produced. `ticket` is durable once mqstore_durable() >= it. */
typedef struct mqstore_result {
    uint64_t seq;       /* the message's (or event's) seq in its conversation */
    uint64_t inbox_seq; /* its inbox_seq in the sender's/actor's inbox */
    int64_t server_time_ms;
    uint64_t ticket;
    int duplicate;    /* 1: an earlier append with this dedup key; nothing written */
    int large;        /* the conversation's mode after the write */
    int pulled;       /* the entry is not in every member's inbox: members pull it
                         (deliver it live to the online members besides the fan-out) */
    uint64_t members; /* member count after the write (0 for duplicates) */
    /* Inbox fan-out, for live delivery: every user that got an inbox entry,
     * with the entry's inbox_seq. Empty for duplicates. Owned by the result;
     * release with mqstore_result_clear(). */
    size_t n_fanout;
    char (*fanout_user)[MQC_ID_BUF];
    uint64_t *fanout_inbox_seq;
} mqstore_result;

void mqstore_result_clear(mqstore_result *r);

/* Create a conversation with `members` (roles in `roles`, or all MEMBER when
 * roles is NULL) and write `ev` as its first entry (seq 1) with an inbox
 * entry for every member; with ev NULL nothing is logged (head stays 0, as
 * for implicit 1:1 conversations). ev->mode LARGE creates it large (the
 * members' pulling starts after seq 1), ev->flags its flags.
 * n_members 1..100000, no duplicates.
 * MQSTORE_ERR_EXISTS if the conversation exists. */
mqstore_err mqstore_conv_create(mqstore *s, const char *conv, const char *const *members,
                                const mqstore_role *roles, size_t n_members,
                                const mqstore_event *ev, mqstore_result *out);

/* Write `ev` into the conversation's log without a membership change (a
 * settings change: ev->mode, ev->set_flags). Fan-out: every member when the
 * conversation is small or the event switches its mode; nobody (members
 * pull it) when it stays large. */
mqstore_err mqstore_conv_update(mqstore *s, const char *conv, const mqstore_event *ev,
                                mqstore_result *out);

typedef struct mqstore_conv_info {
    uint64_t head;        /* highest seq (0: empty) */
    uint64_t members;     /* member count */
    int large;            /* messages are stored once and pulled */
    uint64_t pull_end;    /* last seq members may have to pull (the head while large;
                             0: never large) */
    uint32_t flags;       /* MQSTORE_CONV_* */
    int64_t last_time_ms; /* server time of the head entry (0: empty) */
} mqstore_conv_info;

/* Whether the conversation is large (the send path's question; no read of
 * the head message). MQSTORE_ERR_NOTFOUND if it does not exist. */
mqstore_err mqstore_conv_large(mqstore *s, const char *conv, int *large);

/* The conversation's title (the last one an event set) into buf, NUL-
 * terminated ("" when none; buf of MQSTORE_TITLE_MAX + 1 holds any). */
mqstore_err mqstore_conv_title(mqstore *s, const char *conv, char *buf, size_t cap);

/* A conversation's state; MQSTORE_ERR_NOTFOUND if it does not exist. */
mqstore_err mqstore_conv_info_get(mqstore *s, const char *conv, mqstore_conv_info *out);

/* 1 if the conversation exists, 0 if not (or on error: *err set). */
int mqstore_conv_exists(mqstore *s, const char *conv, mqstore_err *err);

/* Highest seq of a conversation (0: empty or unknown). */
mqstore_err mqstore_conv_head(mqstore *s, const char *conv, uint64_t *head);

/* Add users (role each) and write `ev` — one batch. MQSTORE_ERR_EXISTS if any
 * is already a member (nothing written). Fan-out of the membership
 * functions: every member before or after the change while the
 * conversation is small or the event switches its mode (ev->mode); only the
 * added or removed users while it stays large. */
mqstore_err mqstore_members_add(mqstore *s, const char *conv, const char *const *users,
                                const mqstore_role *roles, size_t n, const mqstore_event *ev,
                                mqstore_result *out);

/* Remove users and write `ev` — one batch; the removed users get the event in
 * their inbox too. MQSTORE_ERR_NOTFOUND if any is not a member. */
mqstore_err mqstore_members_remove(mqstore *s, const char *conv, const char *const *users, size_t n,
                                   const mqstore_event *ev, mqstore_result *out);

/* Delete the conversation for everyone — one batch: write `ev` (its seq
 * becomes the head) with an inbox entry for every member whatever the
 * mode (out->fanout lists them; out->large and out->pulled are 0), remove
 * every member (their pull rows close at ev's seq, as for a removal, so the
 * devices of a large group still account for the log up to it), delete
 * every message before ev's seq and the conversation's receipts. The
 * conversation's record stays, flagged MQSTORE_CONV_DELETED with no
 * members, so its seqs never repeat: afterwards mqstore_conv_exists() is
 * still 1 and mqstore_conv_create() EXISTS, history returns the event
 * alone, pulls return nothing up to it, and append, members_add,
 * members_remove, members_set_role, conv_update and receipt_update answer
 * MQSTORE_ERR_NOTFOUND. ev->mode and ev->set_flags are ignored. Devices'
 * positions in it stay (harmless: nothing is left to pull) until
 * mqstore_device_forget(). MQSTORE_ERR_NOTFOUND if the conversation does
 * not exist or was deleted. */
mqstore_err mqstore_conv_delete(mqstore *s, const char *conv, const mqstore_event *ev,
                                mqstore_result *out);

/* Change users' roles and write `ev` — one batch. */
mqstore_err mqstore_members_set_role(mqstore *s, const char *conv, const char *const *users,
                                     size_t n, mqstore_role role, const mqstore_event *ev,
                                     mqstore_result *out);

/* A member's role; MQSTORE_ERR_NOTFOUND if not a member. */
mqstore_err mqstore_member_get(mqstore *s, const char *conv, const char *user, mqstore_member *out);

/* All members of a conversation, ordered by user id. */
mqstore_err mqstore_members_list(mqstore *s, const char *conv, mqstore_member_list *out);

/* A page of them: after `after` ("" or NULL: from the first), at most
 * `limit` (1..10000); *more says whether members follow. One range scan,
 * whatever the group's size. */
mqstore_err mqstore_members_page(mqstore *s, const char *conv, const char *after, size_t limit,
                                 mqstore_member_list *out, int *more);

typedef struct mqstore_conv_list {
    size_t n;
    int more; /* further conversations after the last one */
    char (*conv)[MQC_ID_BUF];
    mqstore_role *role;   /* the user's role in each */
    uint64_t *joined_seq; /* the seq of the event that added the user */
} mqstore_conv_list;

void mqstore_conv_list_free(mqstore_conv_list *l);

/* The user's conversations ordered by id, starting after `after` ("" or NULL
 * for the first page), at most `limit` (1..1000). */
mqstore_err mqstore_user_convs(mqstore *s, const char *user, const char *after, size_t limit,
                               mqstore_conv_list *out);

/* ---- the send path ------------------------------------------------------ */

typedef struct mqstore_blob {
    const void *data;
    size_t len;
} mqstore_blob;

typedef struct mqstore_append {
    const char *conv;
    const char *sender_user;
    const char *sender_device;
    const char *client_msg_id; /* dedup key with sender; NULL = no dedup */
    uint32_t kind;             /* opaque to the store */
    const void *payload;       /* opaque bytes, 0..max_payload */
    size_t payload_len;
    /* Push-outbox jobs written in the same batch (opaque, each <= max_job,
     * at most 100000 of them). */
    const mqstore_blob *jobs;
    size_t n_jobs;
    /* 1: the store appends be64(seq) and be64(server_time_ms) of the
     * message to each job (the caller cannot know them before the write),
     * MQSTORE_JOB_SUFFIX bytes. */
    int jobs_name_message;
    /* Edits and "delete for everyone": replace_seq != 0 makes the batch
     * that appends this entry (the edit or delete event, with its own seq)
     * also rewrite message replace_seq of the same conversation: its
     * payload becomes replace_payload (0..max_payload bytes), every other
     * field — sender, time, kind, pulled, client_msg_id — stays. The
     * caller decides who may; the store only makes it atomic. */
    uint64_t replace_seq;
    const void *replace_payload;
    size_t replace_len;
} mqstore_append;
#define MQSTORE_JOB_SUFFIX 16

/* Append a message: check the sender is a member, dedup on (sender_user,
 * sender_device, client_msg_id), assign the next seq, write the message, the
 * dedup key, an inbox entry for every member (sender included, so the
 * sender's other devices see it; none in a large conversation) and the
 * jobs — one batch. DENIED: the conversation lets only admins post. A retried
 * append with the same dedup key returns the first result with
 * duplicate = 1 and writes nothing; the same dedup key for another
 * conversation (within the retention) is MQSTORE_ERR_EXISTS. With
 * replace_seq set: NOTFOUND if that message does not exist (never did, or
 * retention removed it), INVAL if replace_seq is above the head or the
 * message expired (a stub, or past the retention); a retry (dedup hit)
 * rewrites nothing. Errors: INVAL, NOTFOUND (no such conversation, or
 * deleted), NOTMEMBER, TOOBIG, IO, NOSPC, READONLY, CORRUPT, NOMEM. */
mqstore_err mqstore_append_msg(mqstore *s, const mqstore_append *a, mqstore_result *out);

/* Was an append with a's dedup key (sender_user, sender_device,
 * client_msg_id) already written within the dedup retention? *hit = 1 and
 * *out its first result (duplicate = 1, as mqstore_append_msg would
 * answer), or *hit = 0; MQSTORE_ERR_EXISTS when the key was used for
 * another conversation. For callers that check something before an append
 * (an edit's target, which the first attempt already changed) and must
 * answer a retry exactly like the first attempt. Reads only. */
mqstore_err mqstore_dedup_check(mqstore *s, const mqstore_append *a, mqstore_result *out, int *hit);

/* ---- reading: messages, inbox, history ----------------------------------- */

typedef struct mqstore_msg {
    char conv[MQC_ID_BUF];
    uint64_t seq;
    uint64_t inbox_seq; /* set by inbox reads; 0 in history reads */
    char sender_user[MQC_ID_BUF];
    char sender_device[MQC_ID_BUF];
    char client_msg_id[MQC_ID_BUF];
    int64_t server_time_ms;
    uint32_t kind;
    uint8_t *payload; /* owned by the page */
    size_t payload_len;
    int expired; /* the message expired (retention) or is gone: no payload */
} mqstore_msg;

/* Expired items. Retention (below) removes a message, or leaves a stub of
 * it without payload; mqstore_conv_delete() removes them all. A read never
 * skips such a seq silently (devices track seqs: a hole would look like a
 * lost message), and never calls it corrupt: an inbox entry or a pulled
 * seq whose message is gone or a stub is an item with expired = 1 and no
 * payload — conv, seq, inbox_seq and (from the inbox entry, where there
 * is one) server_time_ms set; of a stub also its sender, kind and time.
 * History returns what the log holds: stubs as expired items, nothing for
 * removed seqs. */

typedef struct mqstore_page {
    size_t n;
    int more; /* another page is waiting */
    mqstore_msg *items;
} mqstore_page;

void mqstore_page_free(mqstore_page *p);

/* One message by (conv, seq); MQSTORE_ERR_NOTFOUND if the seq is above the
 * head or the conversation does not exist; an expired item if the message
 * expired or is gone. The result is a one-item page. */
mqstore_err mqstore_msg_get(mqstore *s, const char *conv, uint64_t seq, mqstore_page *out);

/* Inbox entries of `user` with inbox_seq > after, ascending, with their
 * messages: at most `limit` (1..10000) entries and about `max_bytes` of
 * payload (always at least one entry). */
mqstore_err mqstore_inbox_read(mqstore *s, const char *user, uint64_t after, size_t limit,
                               size_t max_bytes, mqstore_page *out);

/* Highest inbox_seq ever given to `user` (0 if none). */
mqstore_err mqstore_inbox_head(mqstore *s, const char *user, uint64_t *head);

/* Messages of `conv` with seq < before (0 = from the newest), descending, at
 * most `limit` (1..10000). */
mqstore_err mqstore_history_read(mqstore *s, const char *conv, uint64_t before, size_t limit,
                                 mqstore_page *out);

/* The same, stopping once about `max_bytes` of payload are read (always at
 * least one message; `more` set when it stopped early). */
mqstore_err mqstore_history_read_bytes(mqstore *s, const char *conv, uint64_t before, size_t limit,
                                       size_t max_bytes, mqstore_page *out);

/* ---- large conversations: pulling ------------------------------------------ */

typedef struct mqstore_position {
    char conv[MQC_ID_BUF];
    uint64_t position; /* the device's position: every message up to it is accounted
                          for (acked, or where the user's pulling starts) */
    uint64_t end;      /* messages up to here wait to be pulled */
    int member;        /* 0: the user left; end is where their window closed */
} mqstore_position;

typedef struct mqstore_position_list {
    size_t n;
    int more; /* further conversations (by id) after the last one */
    mqstore_position *items;
} mqstore_position_list;

void mqstore_position_list_free(mqstore_position_list *l);

/* The large conversations (and formerly large ones) in which `device` of
 * `user` has messages to pull — end > position — ordered by conversation id,
 * after `after` ("" or NULL: from the first), at most `limit` (1..10000).
 * Costs one row per large conversation of the user, whatever their sizes. */
mqstore_err mqstore_positions(mqstore *s, const char *user, const char *device, const char *after,
                              size_t limit, mqstore_position_list *out);

/* The large conversations `user` is a member of now (pull rows of current
 * members whose conversation is large), by id after `after`, at most
 * limit (1..10000): where live deliveries go (the plugin's rooms). */
mqstore_err mqstore_user_large_convs(mqstore *s, const char *user, const char *after, size_t limit,
                                     mqstore_conv_list *out);

/* A page of what `user` has to pull from `conv` after seq `after`: the
 * messages written while the conversation was large, within the user's
 * window (after they joined; before they left), ascending, at most `limit`
 * (1..10000) and about max_bytes of payload. *through gets the seq up to
 * which the page accounts for the log (the device may set its position
 * there); out->more is set while messages up to the window's end remain.
 * MQSTORE_ERR_NOTMEMBER if the user never had a window in conv. */
mqstore_err mqstore_conv_pull(mqstore *s, const char *conv, const char *user, uint64_t after,
                              size_t limit, size_t max_bytes, mqstore_page *out, uint64_t *through);

/* Move the device's position in conv up to seq (never down; a lower value
 * is ignored). INVAL above the conversation's head, NOTMEMBER if the user
 * has no window in conv. *stored (may be NULL) gets the stored position. */
mqstore_err mqstore_position_ack(mqstore *s, const char *user, const char *device, const char *conv,
                                 uint64_t seq, uint64_t *stored);

/* ---- group read state ------------------------------------------------------ */

typedef struct mqstore_read_state {
    uint64_t members;   /* current members who joined at or before seq, not `exclude` */
    uint64_t delivered; /* of them, how many have delivered >= seq */
    uint64_t read;      /* of them, how many have read >= seq */
    size_t n;           /* readers (read >= seq) after `after`, by user id */
    int more;           /* more readers after the last one */
    char (*readers)[MQC_ID_BUF];
} mqstore_read_state;

void mqstore_read_state_free(mqstore_read_state *r);

/* How far the members of conv got with seq, from their receipt watermarks
 * (no row per member per message: one scan of the members and the
 * receipts). `exclude` (may be NULL): a user not to count, e.g. the sender.
 * At most `limit` (0..10000) reader ids. */
mqstore_err mqstore_read_state_get(mqstore *s, const char *conv, uint64_t seq, const char *exclude,
                                   const char *after, size_t limit, mqstore_read_state *out);

/* ---- cursors and trimming ------------------------------------------------ */

/* Record that `device` of `user` has processed the inbox up to inbox_seq.
 * Monotonic: a lower value than stored is ignored (MQSTORE_OK). A value above
 * the inbox head is MQSTORE_ERR_INVAL. Also refreshes the device's
 * last-seen time used by the retention rule. *stored (may be NULL) gets the
 * cursor as stored afterwards. */
mqstore_err mqstore_cursor_ack(mqstore *s, const char *user, const char *device, uint64_t inbox_seq,
                               uint64_t *stored);

/* The device's cursor (0 if it never acked). */
mqstore_err mqstore_cursor_get(mqstore *s, const char *user, const char *device, uint64_t *cursor);

/* Record that `device` of `user` exists and was seen now (e.g. when it
 * connects): a device the store knows holds trimming back from its first
 * appearance, before it ever acks (its cursor starts at 0). Writes only when
 * the device is new or was last seen more than min(1 hour, a quarter of
 * inbox_retention_ms) ago. */
mqstore_err mqstore_device_touch(mqstore *s, const char *user, const char *device);

/* Forget a device (its cursor no longer holds trimming back; its
 * positions in large conversations and its push token are deleted). */
mqstore_err mqstore_device_forget(mqstore *s, const char *user, const char *device);

/* Delete the user's inbox entries that every known device has acked, and
 * entries older than inbox_retention_ms; devices not seen within the
 * retention do not count (their cursors are kept). A user with no device
 * keeps everything within retention. *trimmed_upto (may be NULL) gets the
 * highest inbox_seq this call deleted, or 0 if it deleted nothing (the
 * store remembers how far it trimmed, so repeated calls write nothing).
 * Messages themselves stay in the conversation log. */
mqstore_err mqstore_inbox_trim(mqstore *s, const char *user, uint64_t *trimmed_upto);

/* ---- retention and erasure ------------------------------------------------- */

/* Message retention. A message has expired when it is older than its
 * conversation's age limit, or when its seq is not among the newest
 * `count` of the conversation (seq <= head - count). The limits are the
 * store's options (retention_ms, retention_count) unless the conversation
 * overrides them. Expired messages go at compaction — RocksDB's own, in
 * the background, or mqstore_compact() — so until then reads still return
 * them. A conversation's head is the last key of its log, so compaction
 * never removes the newest message of a conversation: an expired message
 * is removed only when the store knows (from its in-memory heads, filled
 * by writes since it was opened) that a newer, durable message follows;
 * otherwise it is rewritten to a stub without payload. Pulled messages
 * (large conversations) are always kept as stubs: pulls find them by
 * scanning the log. Expiry by count needs the head: while the store does
 * not know a conversation's head (nothing was written to it since open)
 * its messages do not expire by count. */

/* In mqstore_conv_retention_set/get: 0 means the store's option. */
#define MQSTORE_KEEP_FOREVER INT64_C(-1) /* max_age_ms: never expire by age */
#define MQSTORE_KEEP_ALL UINT64_MAX      /* max_count: never expire by count */

/* Override the conversation's retention: max_age_ms 0 (the store's
 * retention_ms), > 0 ms, or negative (MQSTORE_KEEP_FOREVER); max_count 0
 * (the store's retention_count), a count, or MQSTORE_KEEP_ALL. Takes
 * effect at the next compaction. MQSTORE_ERR_NOTFOUND for an unknown
 * conversation. */
mqstore_err mqstore_conv_retention_set(mqstore *s, const char *conv, int64_t max_age_ms,
                                       uint64_t max_count);

/* The conversation's override as set (0: the store's option). */
mqstore_err mqstore_conv_retention_get(mqstore *s, const char *conv, int64_t *max_age_ms,
                                       uint64_t *max_count);

/* Compact the message log now, applying retention to every message.
 * Blocking (it rewrites the log's files); any thread. For operators and
 * tests: RocksDB compacts in the background anyway. */
mqstore_err mqstore_compact(mqstore *s);

typedef struct mqstore_erase_stats {
    uint64_t messages; /* messages whose payload became the tombstone */
    uint64_t inbox;    /* inbox entries deleted */
    uint64_t devices;  /* device cursors deleted */
    uint64_t tokens;   /* push tokens deleted */
} mqstore_erase_stats;

/* Erase a user (GDPR): the payload of every message of `kind` the user
 * sent (kind 0: every message, and every event they acted in) becomes `tomb` (0..max_payload bytes;
 * sender ids, time, kind and the rest of the envelope stay, so seqs and history keep their shape),
 * and the user's inbox, inbox trim mark, cursors, positions, dedup keys, push tokens, preferences,
 * pull rows and receipts are deleted. A revocation record of the user is kept. The user must no
 * longer be a member of any conversation (remove them first, with events):
 * else MQSTORE_ERR_EXISTS and nothing is done; nor be added back while it
 * runs. Costs one pass over every message of the store (there is no index
 * by sender) and one over the receipts; the rewrites are written in
 * batches of 1000, and other writers run between batches. Blocking; call
 * it on a worker thread. A repeated call rewrites nothing new. Old values
 * linger in RocksDB's files until compaction reaches them: the call
 * compacts the user's own key ranges; mqstore_compact() afterwards does
 * the message log. *out (may be NULL) gets what was done. */
mqstore_err mqstore_user_erase(mqstore *s, const char *user, const void *tomb, size_t tomb_len,
                               uint32_t kind, mqstore_erase_stats *out);

/* ---- receipts ------------------------------------------------------------ */

/* Raise the (conv, user) receipt watermarks. Reading implies delivery, so
 * delivered is raised to at least read: read <= delivered <= head always.
 * Lower values than stored are ignored; values above the conversation head
 * are MQSTORE_ERR_INVAL; the user must be a member (MQSTORE_ERR_NOTMEMBER).
 * Pass 0 to leave one unchanged. *delivered_out / *read_out (may be NULL)
 * get the stored watermarks; *changed (may be NULL) whether anything moved. */
mqstore_err mqstore_receipt_update(mqstore *s, const char *conv, const char *user,
                                   uint64_t delivered, uint64_t read, uint64_t *delivered_out,
                                   uint64_t *read_out, int *changed);

mqstore_err mqstore_receipt_get(mqstore *s, const char *conv, const char *user, uint64_t *delivered,
                                uint64_t *read);

/* ---- per-user preferences ------------------------------------------------ */

/* One opaque record per user (the plugin keeps the user's presence privacy
 * in it), at most MQSTORE_PREFS_MAX bytes, replaced whole by each put. */
#define MQSTORE_PREFS_MAX 4096
mqstore_err mqstore_user_prefs_put(mqstore *s, const char *user, const void *data, size_t len);

/* The user's record: *data is malloc'ed (free() it) and *len its size;
 * MQSTORE_ERR_NOTFOUND (and *data NULL) when the user has none. */
mqstore_err mqstore_user_prefs_get(mqstore *s, const char *user, void **data, size_t *len);

/* ---- push tokens ----------------------------------------------------------- */

/* One push token per device, replaced whole by each put. The store checks
 * sizes only (1..MQSTORE_TOKEN_MAX bytes of token, at most MQSTORE_APP_MAX of
 * app, no NUL); the plugin checks the token's syntax per platform. */
#define MQSTORE_TOKEN_MAX 4096
#define MQSTORE_APP_MAX 255

typedef struct mqstore_push_token {
    char device[MQC_ID_BUF];
    uint32_t platform; /* opaque to the store (mqchat: PushPlatform) */
    char *token;       /* owned by the list */
    char app[MQSTORE_APP_MAX + 1];
    int64_t updated_ms;
} mqstore_push_token;

typedef struct mqstore_push_token_list {
    size_t n;
    mqstore_push_token *items;
} mqstore_push_token_list;

void mqstore_push_token_list_free(mqstore_push_token_list *l);

mqstore_err mqstore_push_token_put(mqstore *s, const char *user, const char *device,
                                   uint32_t platform, const char *token, const char *app);

/* Delete the device's token; with only_if_token set, only if it is still
 * that token (a stale invalid-token report must not remove a newer one).
 * *deleted (may be NULL) says whether one was. */
mqstore_err mqstore_push_token_delete(mqstore *s, const char *user, const char *device,
                                      const char *only_if_token, int *deleted);

/* The user's devices with tokens, by device id (at most 1000). */
mqstore_err mqstore_push_tokens(mqstore *s, const char *user, mqstore_push_token_list *out);

/* ---- operations: backup, recovery, devices ---------------------------------- */

/* Take an online checkpoint of the store into `dir`, which must not exist
 * (its parent must): a consistent copy holding every write that returned
 * before the call (SST files hard-linked when on the same filesystem, the
 * WAL copied), and perhaps some writes made during it — a prefix of the
 * store's writes, never a part of one. The memtables are flushed first, so
 * the WAL part is short. The copy is on disk (fsynced) when the call
 * returns, whatever the durability mode. Open it with mqstore_open() to
 * restore; it is a store like any other (writable), whose inbox seqs
 * continue above a new floor (mqstore_restore_floor). Blocking, any thread;
 * writers continue meanwhile. EXISTS if dir exists, READONLY while the
 * store refuses writes after a failure, IO / NOSPC if RocksDB fails;
 * *errmsg (may be NULL) like mqstore_open. */
mqstore_err mqstore_checkpoint(mqstore *s, const char *dir, char **errmsg);

/* The store's inbox floor: 0, or the first inbox seq written since it was
 * last restored from a checkpoint. A checkpoint carries a marker file
 * (MQSTORE-RESTORE); the store that opens it raises the floor by 2^40, and
 * to at least its clock's ms x 1024, and removes the marker, so every
 * user's inbox head reads at least floor - 1
 * and new entries never take a seq the old store may have handed out
 * (restore.c). */
uint64_t mqstore_restore_floor(mqstore *s);

/* Writes after a failure. When RocksDB fails a write or an fsync (disk
 * full, I/O error) the call returns IO or NOSPC, nothing of it is applied,
 * it takes no ticket, and from then on every write is refused with
 * READONLY while reads keep working; in SYNC mode no ticket becomes
 * durable meanwhile. mqstore_resume() — or the store's own thread every
 * resume_interval_ms — makes the store writable again once the cause is
 * gone. */
typedef struct mqstore_health {
    int writable;           /* 0: writes are refused with READONLY since failed_ms */
    mqstore_err last_error; /* the write error that stopped writes (OK if none yet) */
    int64_t failed_ms;      /* when writes stopped (0: writable) */
    uint64_t failures;      /* write failures since open */
    uint64_t resumes;       /* recoveries since open */
    uint64_t resume_attempts;
} mqstore_health;

/* Any thread, lock-free. */
void mqstore_health_get(mqstore *s, mqstore_health *out);

/* Make the store writable again after a write failure: RocksDB's
 * DB::Resume() (which flushes and switches to a new WAL). MQSTORE_OK when
 * writable (already, or now); otherwise the error that persists (e.g.
 * NOSPC while the disk is still full) and the store stays READONLY.
 * Nothing written before the failure is lost and nothing of the failed
 * batch appears. RocksDB also recovers from a full disk by itself, once
 * the disk has room for a memtable (8 MiB), trying every 5 s; while it
 * waits this call waits too, up to about 6 s. IO, for good, in the one
 * case RocksDB 7.8 cannot mend without a reopen (every memtable was empty
 * when the write failed: right after open, a resume or a checkpoint):
 * close and reopen the store. Blocking; any thread. The store's own
 * thread calls it every resume_interval_ms while writes are refused. */
mqstore_err mqstore_resume(mqstore *s);

/* A user's known devices (cursors CF rows: device, acked inbox cursor,
 * last seen — written at connect, throttled as mqstore_device_touch says,
 * and by mqstore_cursor_ack), by device id after `after` ("" / NULL:
 * first), at most limit (1..10000); `more` says whether devices follow. */
typedef struct mqstore_device {
    char device[MQC_ID_BUF];
    uint64_t cursor;
    int64_t last_seen_ms;
} mqstore_device;

typedef struct mqstore_device_list {
    size_t n;
    int more;
    mqstore_device *items;
} mqstore_device_list;

void mqstore_device_list_free(mqstore_device_list *l);

mqstore_err mqstore_user_devices(mqstore *s, const char *user, const char *after, size_t limit,
                                 mqstore_device_list *out);

/* Tokens (JWTs) of `user` issued before before_ms are refused from now on
 * (the plugin checks at authentication); 0 clears, negative is INVAL.
 * Stored (heads CF, 'r' user -> be64), so it survives restarts. */
mqstore_err mqstore_user_revoke_set(mqstore *s, const char *user, int64_t before_ms);

/* *before_ms = 0 when none is set. */
mqstore_err mqstore_user_revoke_get(mqstore *s, const char *user, int64_t *before_ms);

/* ---- push outbox --------------------------------------------------------- */

typedef struct mqstore_job {
    uint64_t id;   /* ascending in write order */
    uint8_t *data; /* owned by the list */
    size_t len;
} mqstore_job;

typedef struct mqstore_job_list {
    size_t n;
    int more;
    mqstore_job *items;
} mqstore_job_list;

void mqstore_job_list_free(mqstore_job_list *l);

/* The id of the newest job ever written (0: none). Any thread. */
uint64_t mqstore_outbox_last(mqstore *s);

/* Jobs with id > after, ascending, at most limit (1..10000). */
mqstore_err mqstore_outbox_read(mqstore *s, uint64_t after, size_t limit, mqstore_job_list *out);

/* Delete every job with id <= upto (after they were handed to Redis). */
mqstore_err mqstore_outbox_delete_upto(mqstore *s, uint64_t upto);

#ifdef __cplusplus
}
#endif

#endif
