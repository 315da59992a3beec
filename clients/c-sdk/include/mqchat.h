/* mqchat.h — libmqchat, the mqchat device SDK.
 *
 * One mqchat_client is one device of one user talking to an mqchat broker
 * over MQTT (paho.mqtt.c's asynchronous API). It keeps its state in one
 * SQLite file, <state_dir>/<user>.<device>.sqlite (WAL mode): the outbox of
 * unacknowledged sends, the inbox cursor, and per conversation the highest
 * seq handed to the app and the large-conversation position.
 *
 * What the SDK promises (clients/c-sdk/README.md has the details):
 *   - a send is durable on the device when mqchat_send() returns, and is
 *     retried with the same client message id after every (re)connect
 *     until the server acknowledges it (SENT) or refuses it (SEND_FAILED);
 *   - every message reaches the app once and in seq order per conversation
 *     across disconnects and broker restarts. Across a kill -9 of the app
 *     process: without a persist hook the app gets a message at least
 *     once — a message whose callback ran (or, in poll mode, whose event
 *     was taken but not yet freed) before the kill may be handed once more
 *     after the restart, because the SDK commits what it handed only after
 *     the callback returned (after mqchat_event_free() in poll mode). With
 *     a persist hook (mqchat_options.persist) it is exactly once for what
 *     the app writes in the hook: see mqchat_persist_fn.
 *
 * Threading: paho runs its own thread. In callback mode (poll_mode = 0)
 * every callback runs on paho's callback thread (or the SDK's timer thread
 * for CONNECTION events of reconnects): the app must not block there; it
 * may call any mqchat_* function from a callback except mqchat_free(). In
 * poll mode (poll_mode = 1) no app code runs on any SDK thread (except the
 * token provider): paho's thread only queues the packets it receives,
 * mqchat_fd() becomes readable, and mqchat_next_event() decodes and applies
 * them on the app's thread and returns the events. (Connects and lost
 * connections are still handled on the SDK's threads: resending the
 * outbox, starting the sync, queueing CONNECTION events.) No global state:
 * several clients may live in one process. All functions are thread-safe
 * for one client. */
#ifndef MQCHAT_H
#define MQCHAT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Identifiers (conversation, client message, request ids) are at most 128
 * bytes; a buffer of MQCHAT_ID_BUF holds one with its NUL. */
#define MQCHAT_ID_BUF 129

/* Return codes of the int functions (0 or a positive count is success). */
#define MQCHAT_OK 0
#define MQCHAT_ERR -1         /* bad argument or internal failure */
#define MQCHAT_ERR_OFFLINE -2 /* a request needs a connection; none right now */
#define MQCHAT_ERR_STATE -3   /* the SQLite state could not be read or written */

/* Error codes the server sends (mqchat.v1.ErrorCode, same numbers). */
enum {
    MQCHAT_E_MALFORMED = 1,
    MQCHAT_E_INVALID_ARGUMENT = 2,
    MQCHAT_E_BODY_TOO_LARGE = 3,
    MQCHAT_E_UNKNOWN_CONVERSATION = 4,
    MQCHAT_E_NOT_MEMBER = 5,
    MQCHAT_E_PERMISSION_DENIED = 6,
    MQCHAT_E_BAD_TOPIC = 7,
    MQCHAT_E_RATE_LIMITED = 8,
    MQCHAT_E_GROUP_FULL = 9,
    MQCHAT_E_UNAVAILABLE = 10,
    MQCHAT_E_INTERNAL = 11,
    MQCHAT_E_UNSUPPORTED = 12,
    MQCHAT_E_NOT_FOUND = 13,
};

/* The name of a return code (MQCHAT_OK, MQCHAT_ERR_*: 0 and below) or of a
 * server error code (MQCHAT_E_*: above 0), e.g. "ERR_OFFLINE",
 * "E_RATE_LIMITED"; "UNKNOWN" for other numbers. A static string. */
const char *mqchat_strerror(int code);

typedef struct mqchat_client mqchat_client;
typedef struct mqchat_event mqchat_event;

/* The token provider: writes the JWT for this user and device into buf
 * (at most cap bytes with the NUL) and returns 0, or returns -1 (the SDK
 * then retries the connect later). refresh is 1 when the broker refused the
 * previous token (CONNACK not authorized): fetch a new one. Called on the
 * SDK's timer thread, also in poll mode: keep it quick. */
typedef int (*mqchat_token_fn)(void *data, char *buf, size_t cap, int refresh);

/* Callback mode: one callback for every event; ev is valid during the call
 * only (copy what you keep). Runs on an SDK thread (see above). */
typedef void (*mqchat_event_fn)(void *data, const mqchat_event *ev);

/* The persist hook, for exactly once across a kill -9 of the app. For
 * every MESSAGE event (live, sync and pull deliveries; not history) the
 * SDK opens a transaction on its state file, records the message's seq as
 * handed (and moves the inbox cursor / positions over what is finished),
 * calls persist(data, db, ev) inside that transaction, and commits — all
 * before the event reaches on_event or the poll queue. db is the SDK's
 * connection to the state file: cast it to `sqlite3 *` and write the
 * app's own tables of the same file with it (create them with it too, or
 * with another connection to <state_dir>/<user>.<device>.sqlite; do not
 * use PRAGMA user_version, the SDK's schema version). The app's writes
 * and the SDK's record of the message commit together or not at all:
 *   - a message whose transaction committed is never offered to the hook
 *     again (not after a kill -9, a crash, a power cut or a restart);
 *   - a message whose transaction did not commit (the process died first,
 *     persist returned non-zero, or the commit failed) is offered again,
 *     in seq order, so what the app stores there it stores exactly once.
 * Non-zero return: the transaction is rolled back, an ERROR event says
 * so, and the SDK forgets everything it had not committed and delivers
 * again from the committed state: that message and all after it are
 * offered again through a sync from the committed cursor, about 1 s later
 * if connected, else after the next connect (returning non-zero for good
 * stops delivery in a retry loop: fix the cause). In the hook: do not
 * BEGIN / COMMIT / ROLLBACK on db (SAVEPOINT ... RELEASE is fine), do not
 * keep db, do not call mqchat_* functions of this client; it runs where
 * events are decoded (paho's thread in callback mode, the app's thread in
 * mqchat_next_event in poll mode), with the client's lock held: keep it
 * quick. ev is valid during the call only. With persist set the MESSAGE
 * event that follows is information only: freeing it (poll mode) commits
 * nothing, and an event still queued at a kill is not offered again. */
typedef int (*mqchat_persist_fn)(void *data, void *db, const mqchat_event *ev);

typedef struct mqchat_options {
    const char *host; /* default "127.0.0.1" */
    int port;         /* default 1883 (8883 with use_tls) */
    int use_tls;      /* 1: TLS (ssl://), server verified against ca_file */
    const char *ca_file;
    int mqtt_version; /* 4 (MQTT 3.1.1, default) or 5 */
    const char *user; /* required; MQTT username, client id "<user>:<device>" */
    const char *device;
    mqchat_token_fn token;     /* required: the MQTT password */
    const char *state_dir;     /* required: the SQLite file lives there */
    const char *topic_prefix;  /* default "mqchat/v1" */
    int keepalive_s;           /* default 30 */
    int backoff_min_ms;        /* reconnect delay: full jitter in [0, min(max, min*2^n)] */
    int backoff_max_ms;        /* defaults 500 and 30000 */
    mqchat_event_fn on_event;  /* callback mode: every event */
    void *data;                /* passed to token, on_event and persist */
    int poll_mode;             /* 1: events queue for mqchat_next_event() */
    mqchat_persist_fn persist; /* optional: exactly once (see mqchat_persist_fn) */
} mqchat_options;

/* Fills o with the defaults above (everything else zero / NULL). */
void mqchat_options_init(mqchat_options *o);

/* Opens (creates) the state file and makes a client; does not connect. On
 * failure returns NULL and, if err is not NULL, sets *err to a message the
 * caller frees with free(). The strings in o are copied. */
mqchat_client *mqchat_new(const mqchat_options *o, char **err);

/* Disconnects, stops the SDK's threads and frees everything, queued events
 * included. Events taken with mqchat_next_event() must be freed before.
 * Not from a callback. NULL is a no-op. */
void mqchat_free(mqchat_client *c);

/* Starts connecting and returns at once; from then on the client reconnects
 * by itself (exponential backoff, full jitter) until mqchat_disconnect(),
 * or until another connection took the session over (CONNECTION
 * taken_over). Returns MQCHAT_OK or MQCHAT_ERR. */
int mqchat_connect(mqchat_client *c);

/* Disconnects cleanly and stops reconnecting. The outbox stays: sends go
 * out after the next mqchat_connect(). */
int mqchat_disconnect(mqchat_client *c);

/* Queues a message: the send is committed in the SQLite outbox before this
 * returns, with a new client message id written to cmid_out (may be NULL).
 * It is published now if connected, and after every (re)connect until its
 * SendAck arrives: event SENT (with its seq), or SEND_FAILED (removed from
 * the outbox, except for UNAVAILABLE and RATE_LIMITED, which are retried
 * after the server's retry_after_ms). Works offline. */
int mqchat_send(mqchat_client *c, const char *conv, const char *content_type, const void *body,
                size_t len, char cmid_out[MQCHAT_ID_BUF]);

/* mqchat_send() with more: content_type (NULL: ""), reply_to_seq (0: not
 * a reply; the seq of the message this replies to in conv). o may be NULL. */
typedef struct mqchat_send_options {
    const char *content_type;
    uint64_t reply_to_seq;
} mqchat_send_options;
int mqchat_send_ex(mqchat_client *c, const char *conv, const mqchat_send_options *o,
                   const void *body, size_t len, char cmid_out[MQCHAT_ID_BUF]);

/* Edits (replaces the body and content type of) message seq of conv, or
 * deletes it for everyone (docs/PROTOCOL.md, "Edits and deletes"). Both are
 * sends, with everything said for mqchat_send(): committed to the outbox
 * before they return, with a new client message id, retried with that id
 * until SENT (the edit's or delete's own seq) or SEND_FAILED (e.g.
 * PERMISSION_DENIED outside the edit window). Every member's devices get a
 * MESSAGE of kind EVENT, event_type MQCHAT_CE_MESSAGE_EDITED (the new
 * content in body / content_type) or _DELETED, target_seq = seq; history
 * and syncs return the target replaced (edited = 1, or deleted = 1 with no
 * body). */
int mqchat_edit(mqchat_client *c, const char *conv, uint64_t seq, const char *content_type,
                const void *body, size_t len, char cmid_out[MQCHAT_ID_BUF]);
int mqchat_delete(mqchat_client *c, const char *conv, uint64_t seq, char cmid_out[MQCHAT_ID_BUF]);

/* Number of sends in the outbox (not yet acknowledged), or < 0 on error.
 * (SENT and SEND_FAILED events carry the count left after them.) */
int mqchat_outbox_count(mqchat_client *c);

/* Requests. Each needs a connection (else MQCHAT_ERR_OFFLINE), writes its
 * request id to rid_out (may be NULL) and returns MQCHAT_OK; the answer is
 * a RESPONSE event with that request id. Receipts and typing are not
 * answered on success (a refusal comes as a RESPONSE with an error).
 * The exception: mqchat_mark_read() works offline too. Without a
 * connection it keeps the mark in the state file (the highest seq per
 * conversation) and sends it after the next connect; rid_out is "". */
int mqchat_mark_read(mqchat_client *c, const char *conv, uint64_t seq, char rid_out[MQCHAT_ID_BUF]);
int mqchat_mark_delivered(mqchat_client *c, const char *conv, uint64_t seq,
                          char rid_out[MQCHAT_ID_BUF]);
/* Messages with seq < before_seq (0: newest), newest first. */
int mqchat_history(mqchat_client *c, const char *conv, uint64_t before_seq, unsigned limit,
                   char rid_out[MQCHAT_ID_BUF]);
/* The user's conversations after conversation id `after` ("" or NULL: first). */
int mqchat_list_conversations(mqchat_client *c, const char *after, unsigned limit,
                              char rid_out[MQCHAT_ID_BUF]);
int mqchat_group_create(mqchat_client *c, const char *title, const char *const *members, size_t n,
                        char rid_out[MQCHAT_ID_BUF]);
int mqchat_group_add(mqchat_client *c, const char *conv, const char *const *users, size_t n,
                     char rid_out[MQCHAT_ID_BUF]);
int mqchat_group_remove(mqchat_client *c, const char *conv, const char *const *users, size_t n,
                        char rid_out[MQCHAT_ID_BUF]);
int mqchat_group_leave(mqchat_client *c, const char *conv, char rid_out[MQCHAT_ID_BUF]);
int mqchat_typing(mqchat_client *c, const char *conv, int on);
int mqchat_presence_watch(mqchat_client *c, const char *const *users, size_t n,
                          char rid_out[MQCHAT_ID_BUF]);
/* platform: "apns", "apns-sandbox" or "fcm"; app may be NULL. */
int mqchat_push_register(mqchat_client *c, const char *platform, const char *token, const char *app,
                         char rid_out[MQCHAT_ID_BUF]);
/* Removes this device's push token. */
int mqchat_push_unregister(mqchat_client *c, char rid_out[MQCHAT_ID_BUF]);

/* Roles and posting policies (mqchat.v1.Role / PostingPolicy numbers). */
enum { MQCHAT_ROLE_MEMBER = 1, MQCHAT_ROLE_ADMIN = 2, MQCHAT_ROLE_OWNER = 3 };
enum { MQCHAT_POSTING_EVERYONE = 1, MQCHAT_POSTING_ADMINS = 2 };
/* Presence visibility (mqchat.v1.PresenceVisibility numbers); 0: unchanged. */
enum {
    MQCHAT_VISIBLE_EVERYONE = 1,
    MQCHAT_VISIBLE_CONTACTS = 2,
    MQCHAT_VISIBLE_NOBODY = 3,
};

/* The members of conv after user id `after` ("" or NULL: first), by user
 * id; the RESPONSE carries .members / .n_members and .more. */
int mqchat_list_members(mqchat_client *c, const char *conv, const char *after, unsigned limit,
                        char rid_out[MQCHAT_ID_BUF]);
/* Sets users' role (MQCHAT_ROLE_MEMBER or _ADMIN; the owner only). The
 * RESPONSE carries group_conv / group_seq (the ROLE_CHANGED event). */
int mqchat_group_set_role(mqchat_client *c, const char *conv, const char *const *users, size_t n,
                          int role, char rid_out[MQCHAT_ID_BUF]);
/* Who may post in the group: MQCHAT_POSTING_EVERYONE or _ADMINS (admins
 * and the owner). The RESPONSE carries group_conv / group_seq. */
int mqchat_group_settings(mqchat_client *c, const char *conv, int posting,
                          char rid_out[MQCHAT_ID_BUF]);
/* Who has message seq of conv: the RESPONSE carries .read_state (counts,
 * and the readers after user id `after`, at most limit; .more: another
 * page of readers). */
int mqchat_read_state(mqchat_client *c, const char *conv, uint64_t seq, const char *after,
                      unsigned limit, char rid_out[MQCHAT_ID_BUF]);
/* The user's own presence privacy: hide_last_seen (0/1) and visibility
 * (MQCHAT_VISIBLE_*, 0: unchanged). Stored by the server; answered ok. */
int mqchat_presence_settings(mqchat_client *c, int hide_last_seen, int visibility,
                             char rid_out[MQCHAT_ID_BUF]);

/* Poll mode: a file descriptor (an eventfd, or a pipe's read end where
 * there is none) that is readable while events are queued or received
 * packets wait to be decoded; call mqchat_next_event() until NULL. */
int mqchat_fd(mqchat_client *c);

/* Poll mode: decodes what has arrived and returns the oldest event, or
 * NULL when there is none (when mqchat_fd() is readable, call it until
 * NULL). The caller owns the event and frees it with mqchat_event_free();
 * freeing a MESSAGE event is what lets the SDK commit it as handed (so free
 * it once the app has stored the message). */
mqchat_event *mqchat_next_event(mqchat_client *c);
void mqchat_event_free(mqchat_event *ev);

/* ---- Events ---------------------------------------------------------- */

typedef enum mqchat_event_type {
    MQCHAT_EV_MESSAGE = 1, /* .message: a message or conversation event */
    MQCHAT_EV_SENT,        /* .sent: a send of ours is durable on the server */
    MQCHAT_EV_SEND_FAILED, /* .sent + .error: the server refused a send */
    MQCHAT_EV_RECEIPT,     /* .receipt: a member's watermarks moved */
    MQCHAT_EV_TYPING,      /* .typing */
    MQCHAT_EV_PRESENCE,    /* .presence: a watched user changed */
    MQCHAT_EV_CONNECTION,  /* .connection */
    MQCHAT_EV_RESPONSE,    /* .response: the answer to a request */
    MQCHAT_EV_ERROR,       /* .error: bad input from the server, or an SDK failure */
} mqchat_event_type;

typedef enum mqchat_conn_state {
    MQCHAT_CONN_CONNECTING = 1,
    MQCHAT_CONN_CONNECTED,    /* session up; sync starts */
    MQCHAT_CONN_UP_TO_DATE,   /* a sync (inbox, then large-conversation pulls) finished */
    MQCHAT_CONN_DISCONNECTED, /* .reason says why; reconnects unless asked to stop */
    MQCHAT_CONN_TAKEN_OVER,   /* another connection took the session: no more reconnects */
} mqchat_conn_state;

/* The engine's connection state now: the state of the newest CONNECTION
 * event it made (in poll mode that event may still be queued), or
 * MQCHAT_CONN_DISCONNECTED before the first connect. */
mqchat_conn_state mqchat_connection_state(mqchat_client *c);

enum { MQCHAT_KIND_USER = 1, MQCHAT_KIND_EVENT = 2 };

/* Conversation event types (mqchat.v1.ConversationEvent.Type numbers). */
enum {
    MQCHAT_CE_CREATED = 1,
    MQCHAT_CE_MEMBERS_ADDED,
    MQCHAT_CE_MEMBERS_REMOVED,
    MQCHAT_CE_MEMBER_LEFT,
    MQCHAT_CE_ROLE_CHANGED,
    MQCHAT_CE_TITLE_CHANGED,
    MQCHAT_CE_SETTINGS_CHANGED,
    MQCHAT_CE_MESSAGE_EDITED,
    MQCHAT_CE_MESSAGE_DELETED,
    MQCHAT_CE_GROUP_DELETED,
};

/* A message as the SDK hands it; strings are never NULL. */
typedef struct mqchat_message {
    char *conv;
    uint64_t seq;
    char *sender_user, *sender_device;
    int64_t time_ms;
    char *cmid; /* the sender's client message id */
    int kind;   /* MQCHAT_KIND_USER or MQCHAT_KIND_EVENT (0 if the server sent neither) */
    char *content_type;
    unsigned char *body;
    size_t body_len;
    uint64_t reply_to_seq;
    int edited, deleted, expired;
    /* kind == EVENT: */
    int event_type; /* MQCHAT_CE_*; other numbers: a newer server */
    char *actor;
    char **users;
    size_t n_users;
    uint64_t target_seq; /* MESSAGE_EDITED / _DELETED */
    int mode;            /* 1 small, 2 large: the event switched the mode */
    char *title;
    uint64_t inbox_seq; /* 0 for large conversations and history */
    int role;           /* ROLE_CHANGED: MQCHAT_ROLE_* */
    int posting;        /* CREATED / SETTINGS_CHANGED: MQCHAT_POSTING_* (0: not set) */
} mqchat_message;

typedef struct mqchat_conversation {
    char *conv;
    uint64_t head_seq, read_seq, unread;
    int64_t last_activity_ms;
    int mode; /* 1 small, 2 large */
    uint32_t member_count;
    int is_group; /* 1: a group ("g:..."), 0: a 1:1 conversation ("d:...") */
    int role;     /* the user's: MQCHAT_ROLE_* */
    int posting;  /* MQCHAT_POSTING_* */
    char *title;  /* a group's title ("" for 1:1 conversations and untitled groups) */
    /* The newest entry, NULL when the conversation is empty. */
    mqchat_message *last_message;
} mqchat_conversation;

typedef struct mqchat_member {
    char *user;
    int role; /* MQCHAT_ROLE_* */
    uint64_t joined_seq;
} mqchat_member;

typedef struct mqchat_read_result {
    char *conv;
    uint64_t seq;
    uint32_t members;   /* members who joined at or before seq, its sender excluded */
    uint32_t delivered; /* of them, delivered up to seq */
    uint32_t read;      /* of them, read up to seq */
    char **readers;     /* who read it (this page) */
    size_t n_readers;
} mqchat_read_result;

typedef struct mqchat_presence {
    char *user;
    int state; /* 1 online, 2 offline, 3 unknown */
    int64_t last_seen_ms;
} mqchat_presence;

struct mqchat_event {
    mqchat_event_type type;
    union {
        mqchat_message message;
        struct {
            char cmid[MQCHAT_ID_BUF];
            char conv[MQCHAT_ID_BUF];
            uint64_t seq, inbox_seq;
            int64_t time_ms;
            int code; /* SEND_FAILED: MQCHAT_E_*, with error_message */
            char *error_message;
            int will_retry;  /* SEND_FAILED: kept in the outbox, retried later */
            int outbox_left; /* sends still in the outbox after this one (0: all
                                acknowledged; -1: unknown) */
        } sent;
        struct {
            char *conv, *user;
            uint64_t delivered_seq, read_seq;
            int64_t time_ms;
        } receipt;
        struct {
            char *conv, *user;
            int on;
        } typing;
        mqchat_presence presence;
        struct {
            mqchat_conn_state state;
            char *reason; /* DISCONNECTED / TAKEN_OVER: why ("" otherwise) */
        } connection;
        struct {
            char request_id[MQCHAT_ID_BUF];
            int ok;   /* 1: success; 0: code + error_message */
            int code; /* MQCHAT_E_* */
            char *error_message;
            /* typed results (else zero): */
            char *group_conv; /* group operations: the group, and the event's seq */
            uint64_t group_seq;
            mqchat_message *messages; /* history: newest first */
            size_t n_messages;
            mqchat_conversation *conversations; /* list_conversations */
            size_t n_conversations;
            mqchat_presence *presence; /* presence_watch */
            size_t n_presence;
            int more; /* history / list_conversations / members / readers: another page */
            mqchat_member *members; /* list_members, by user id */
            size_t n_members;
            mqchat_read_result *read_state; /* read_state (else NULL) */
        } response;
        struct {
            char *message; /* what was wrong */
        } error;
    };
};

#ifdef __cplusplus
}
#endif
#endif
