/* device — the device-facing layer: what connected devices see.
 *
 * It holds the registry of authenticated connections (conn.c), decodes
 * what a device publishes and hands it to a chat rule (handle_send.c,
 * handle_req.c), turns the rule's result or refusal into replies and
 * deliveries (reply.c), and keeps the durability-ordered outgoing queue
 * (outq.c): an ACK, a reply and a delivery leave only once the store
 * write they report is durable, in the order they were made.
 *
 * It calls three broker functions — mosquitto_broker_publish,
 * mosquitto_malloc/free and mosquitto_log_printf — and nothing else of
 * the broker, so the unit tests link it with small stubs of those
 * (tests/unit/broker_stubs.c) instead of a broker.
 *
 * Threads: every function here runs on mosquitto's main thread, except
 * dev_waiting(), which any thread may call. */
#ifndef MQC_DEVICE_H
#define MQC_DEVICE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <uthash.h>

#include "config.h"
#include "metrics.h"
#include "mqc_id.h"
#include "mqchat.pb-c.h"
#include "mqstore.h"
#include "rules.h"
#include "topics.h"
#include "wire.h"

struct mosquitto;
struct room;
struct lane_job;

/* A connection's place in a room (rooms.c): the room and its index there. */
typedef struct room_ref {
    struct room *r;
    size_t idx;
} room_ref;

/* Error codes are small (proto: ErrorCode); refusals are counted per code. */
#define MQC_REFUSAL_KINDS 16

/* One authenticated device connection, keyed by its struct mosquitto
 * pointer, not by client id: the broker fires DISCONNECT again for an
 * offline persistent session (docs/MOSQUITTO.md, "Connect and disconnect"). */
typedef struct conn {
    struct mosquitto *client;
    char user[MQC_ID_BUF];
    char device[MQC_ID_BUF];
    char client_id[2 * MQC_ID_BUF]; /* "<user>:<device>" */
    double tokens;                  /* rate limit bucket */
    int64_t refill_ms;
    UT_hash_handle hh;
    struct conn *dev_prev, *dev_next; /* the user's other connections */
    /* Refusals (refusals.c): the first per reason is logged, the rest
     * counted and summed up every log_summary_interval_s. */
    uint32_t refusals_logged;               /* bit per wire_code */
    uint32_t suppressed[MQC_REFUSAL_KINDS]; /* since the last summary */
    int dirty;                              /* on the summary list */
    struct conn *sum_prev, *sum_next;
    int presence_counted;
    void *presence;
    room_ref *rooms; /* the large conversations this connection gets live */
    size_t n_rooms, cap_rooms;
} conn;

/* The connections of one user, for delivery to every device. */
typedef struct user_conns {
    char user[MQC_ID_BUF];
    conn *devices;
    UT_hash_handle hh;
} user_conns;

/* A publish prepared now and sent later; the payload is from
 * mosquitto_malloc (the broker frees what it publishes). */
typedef struct pub {
    char *client_id; /* NULL: to the topic's subscribers */
    char *topic;
    void *payload;
    size_t len;
    int qos;
} pub;

typedef struct pubs {
    size_t n, cap;
    pub *items;
    int64_t ack_ns; /* metrics: a send's store write ended then (its SendAck is here); 0: none */
} pubs;

/* Publishes waiting for a store ticket to become durable. */
typedef struct pending {
    uint64_t ticket;
    pubs out;
    struct pending *next;
} pending;

typedef struct dev {
    chat chat; /* the rules' context: store and limits */
    mqstore *store;
    const mqc_config *cfg;
    conn *conns;
    user_conns *users;
    /* The outgoing FIFO. INVARIANT: tickets never decrease from head to
     * tail, so entries leave in the order they were made (outq.c). */
    pending *head, *tail;
    size_t n_pending;
    uint64_t last_drained; /* mqstore_durable() at the last drain */
    _Atomic int waiting;   /* the FIFO is not empty: wake the loop on durability */
    /* Refusal counts (refusals.c), for the log summary and, later, metrics. */
    conn *dirty;                               /* conns with suppressed refusals */
    uint64_t refused_total[MQC_REFUSAL_KINDS]; /* since start, per code */
    int64_t next_summary_ms;
    struct presence *pres; /* NULL: presence is off (no Redis configured) */
    /* Large conversations (rooms.c, lane.c): the online devices of each,
     * and the second FIFO that delivers to them, fanout_per_pass
     * publishes per loop pass. INVARIANT: tickets never decrease along
     * the lane either. */
    struct room *rooms;
    struct lane_job *lane_head, *lane_tail;
    size_t lane_len;
    size_t lane_budget;            /* publishes left in this pass */
    uint64_t lane_sent;            /* publishes made by the lane since start */
    unsigned conn_refusals_logged; /* connection-less ones, this interval */
    unsigned long conn_refusals_suppressed;
    /* Metrics (metrics/metrics.h): plain counters, main thread only;
     * broker/tick.c copies them into the snapshot other threads read.
     * The histograms read the clock only while `timed` (metrics shown). */
    int timed;
    uint64_t msgs_stored, msgs_duplicate; /* sends written, sends answered from dedup */
    uint64_t delivered_live, delivered_sync;
    mqc_hist store_write_time, durable_ack_time;
} dev;

/* SendAcks go out at QoS 0. A SendAck is idempotent (a re-sent
 * SendRequest gets the same one from the dedup record), and a client
 * already re-sends whatever it holds no SendAck for after a timeout or a
 * reconnect (docs/PROTOCOL.md, "Sending"), so a QoS-1 SendAck would only
 * add a PUBACK per message (about a tenth of the broker's throughput in
 * bench/run-broker-bench.sh) and a copy queued in a persistent session.
 * Responses to requests stay at QoS 1: not every request is idempotent. */
#define SEND_ACK_QOS 0

/* Sends refused with UNAVAILABLE while this many writes wait for an fsync. */
#define MQC_MAX_PENDING 100000

void dev_init(dev *d, mqstore *store, const mqc_config *cfg);
/* Drop every connection and every queued publish. */
void dev_free(dev *d);

/* ---- conn.c: the registry ---- */
conn *conn_find(dev *d, const struct mosquitto *client);
/* A re-authentication replaces the old entry. NULL when out of memory. */
conn *conn_add(dev *d, struct mosquitto *client, const char *user, const char *device);
void conn_remove(dev *d, const struct mosquitto *client);
/* The user's first connection here (the others follow on dev_next), or NULL. */
conn *conn_of_user(dev *d, const char *user);
/* Take one token; 0 if allowed, else the ms until one is available. */
int64_t conn_rate_take(dev *d, conn *c);
/* Queue msg to every connected device of `user` but `skip` (may be NULL),
 * by client id on {p}/u/{user}/inbox. -1 on out of memory. */
int to_user(dev *d, pubs *out, const char *user, const conn *skip, const ProtobufCMessage *msg,
            int qos);

/* ---- outq.c: the durability-ordered queue ---- */
/* Append a publish of message `msg` (packed now). -1 on out of memory. */
int pubs_add(pubs *p, const char *client_id, const char *topic, const ProtobufCMessage *msg,
             int qos);
/* The same for bytes that are not a protobuf (copied): the $CONTROL API's JSON. */
int pubs_add_raw(pubs *p, const char *client_id, const char *topic, const void *data, size_t len,
                 int qos);
void pubs_free(pubs *p);
/* Send `p` once `ticket` is durable (now, if it already is and nothing
 * is queued before it). Takes ownership of p's contents. */
void out_after(dev *d, uint64_t ticket, pubs *p);
/* Send everything of the FIFO whose ticket is durable (on each publish
 * queued, and the wake-up the syncer sends after an fsync). */
void out_drain(dev *d);
/* TICK: out_drain, then the lane with a fresh budget of fanout_per_pass. */
void dev_tick(dev *d);
/* Publish every entry of p now, and free p. */
void pubs_send(pubs *p);
/* 1 while publishes wait for durability. Any thread. */
int dev_waiting(dev *d);
void out_free_all(dev *d);

/* ---- rooms.c: who gets a large conversation live ---- */
/* A connection joins the rooms of its user's large conversations, or
 * leaves all of its rooms. */
void rooms_conn_added(dev *d, conn *c);
void rooms_conn_gone(dev *d, conn *c);
/* After a write to a group: rooms follow its mode and membership. */
void rooms_after_write(dev *d, const chat_written *w);
/* 1 if what is delivered for conv must go through the lane (the
 * conversation is large, or broadcasts of it are still queued). */
int rooms_route(dev *d, const char *conv);
void rooms_free_all(dev *d);
/* For lane.c: the open room of conv or NULL; a broadcast holds the room
 * while queued (room_hold / room_release) and walks room_at(0..limit),
 * limit being the room's size when it was queued (room_walk, 0 if there
 * is nobody to walk); NULL entries are holes. */
struct room *rooms_open(dev *d, const char *conv);
/* The room conv's deliveries are routed by (rooms_route), open or not, or
 * NULL: a lane entry without a broadcast holds it too, so that what is
 * written after it cannot leave through the FIFO before it. */
struct room *rooms_routed(dev *d, const char *conv);
void room_hold(struct room *r);
void room_release(dev *d, struct room *r);
int room_walk(struct room *r, size_t *limit, const char **conv);
conn *room_at(struct room *r, size_t i);
/* A membership change queued in the lane (lane_member_change) reached
 * the head: `user` joins (join = 1) or leaves the room now. */
void room_change_apply(dev *d, struct room *r, const char *user, int join);

/* ---- lane.c: the deliveries of large conversations ---- */
/* Queue w's deliveries behind its ticket: the fan-out users' copies (with
 * their inbox_seq) and, for a pulled entry, one broadcast to the room's
 * connections but `skip` and the fan-out users. Conversations that do not
 * route through the lane go to *out (the FIFO) instead. -1: out of memory. */
int lane_written(dev *d, pubs *out, chat_written *w, const conn *skip);
/* Queue `ev` to the room of conv (if it has one), all but skip_user's
 * devices, after `ticket`. */
int lane_broadcast(dev *d, const char *conv, uint64_t ticket, const ProtobufCMessage *ev, int qos,
                   const char *skip_user);
/* Queue `user` joining (join = 1) or leaving room r of a group change
 * written with `ticket`, behind the broadcasts already queued (rooms.c says
 * when). -1: out of memory (the caller applies it at once instead). */
int lane_member_change(dev *d, struct room *r, const char *user, int join, uint64_t ticket);
/* Inside out_drain: run what is durable, within the budget. */
void lane_run(dev *d);
/* 1 if durable lane work waits for the next pass's budget. */
int lane_more(dev *d);
void lane_free_all(dev *d);

/* ---- refusals.c: logging refusals without flooding the log ---- */
/* Count a refusal of something `c` sent; log it if it is the first of its
 * kind on this connection, else only count it for the next summary. */
void refusal_note(dev *d, conn *c, wire_code code, const char *what, const char *detail);
/* A refused connection (no conn yet): at most MQC_CONNECT_LOG_BURST lines
 * per summary interval, then counted. Returns 1 if the caller should log. */
int refusal_connect(dev *d);
#define MQC_CONNECT_LOG_BURST 20
/* TICK: every log_summary_interval_s, one line per connection whose
 * refusals were suppressed, and one for suppressed connection refusals. */
void refusals_tick(dev *d, int64_t now);
/* DISCONNECT: the connection's summary now, before it is forgotten. */
void refusals_flush(dev *d, conn *c);

/* ---- reply.c: results and refusals become replies ---- */
void reply_response(dev *d, conn *c, Mqchat__V1__Response *resp);
/* An Error Response; request_id may be NULL or invalid (then ""). */
void reply_error(dev *d, conn *c, const char *request_id, const chat_status *st);
/* A SendAck carrying an error, for a send that was refused. */
void reply_send_error(dev *d, conn *c, const Mqchat__V1__SendRequest *req, const chat_status *st);
/* The refusal of a publish on an unknown leaf of the device's topics. */
void reply_bad_topic(dev *d, conn *c);
/* Build the Message a device receives from a stored log entry: *stored is
 * the unpacked content (free with mqchat__v1__message__free_unpacked after
 * packing), *view a shallow copy with the envelope filled from `sm`. -1 if
 * the stored payload does not decode (logged). */
int message_view(const mqstore_msg *sm, Mqchat__V1__Message **stored, Mqchat__V1__Message *view);
/* Queue a written message or event, with each user's inbox_seq, to every
 * connected device of every user in w->r's fan-out but `skip`. */
int fanout_written(dev *d, pubs *out, chat_written *w, const conn *skip);
/* Deliver a write nobody's device made (an operator's): rooms follow it,
 * then the event to every fanned-out user's devices and the room, after
 * w->r.ticket is durable. -1 when out of memory (logged). */
int deliver_written(dev *d, chat_written *w);
/* Queue `ev` to the connected devices of every member but the user
 * `skip_user` (may be NULL). */
int fanout_members(dev *d, pubs *out, const mqstore_member_list *members, const char *skip_user,
                   const Mqchat__V1__ServerEvent *ev, int qos);

/* ---- handle_*.c: a device's publish on one of its upstream topics.
 * Return MOSQ_ERR_SUCCESS, or MOSQ_ERR_ACL_DENIED for a refusal (PUBACK
 * 0x87, message dropped; the reply says why). ---- */
int handle_send(dev *d, conn *c, const void *payload, size_t len);
int handle_request(dev *d, conn *c, const void *payload, size_t len);
int handle_receipt(dev *d, conn *c, const void *payload, size_t len);
int handle_typing(dev *d, conn *c, const void *payload, size_t len);

#endif
