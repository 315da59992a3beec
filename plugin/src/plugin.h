/* plugin — what the mqchat plugin's files share: the plugin context, the
 * connection registry, and deferred publishing.
 *
 * Threads: every function here runs on mosquitto's main thread (the broker
 * API is not thread-safe). The only other threads are the store's syncer,
 * which touches nothing here but an atomic flag and pthread_kill() to wake
 * the main loop (see plugin.c). */
#ifndef MQC_PLUGIN_H
#define MQC_PLUGIN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <uthash.h>

#include "config.h"
#include "jwt.h"
#include "mqchat.pb-c.h"
#include "mqstore.h"
#include "topics.h"
#include "wire.h"

/* One authenticated device connection, keyed by its struct mosquitto
 * (not by client id: see MOSQUITTO-2.0-FACTS, DISCONNECT). */
typedef struct conn {
    struct mosquitto *client;
    char user[MQC_ID_BUF];
    char device[MQC_ID_BUF];
    char client_id[260]; /* "<user>:<device>" */
    double tokens;       /* rate limit bucket */
    int64_t refill_ms;
    UT_hash_handle hh;
    struct conn *dev_prev, *dev_next; /* the user's other connections */
} conn;

/* The connections of one user, for delivery to every device. */
typedef struct user_conns {
    char user[MQC_ID_BUF];
    conn *devices;
    UT_hash_handle hh;
} user_conns;

/* A publish prepared now and sent later: payload from mosquitto_malloc. */
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
} pubs;

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

/* Publishes waiting for a store ticket to become durable (FIFO; tickets
 * only grow along the list). */
typedef struct pending {
    uint64_t ticket;
    pubs out;
    struct pending *next;
} pending;

typedef struct mqc {
    mqc_config cfg;
    mosquitto_plugin_id_t *id;
    mqstore *store;
    mqjwt_verifier *jwt;
    conn *conns;
    user_conns *users;
    pending *head, *tail;
    size_t n_pending;
    pthread_t main_thread;
    int wake_signal;
    _Atomic int waiting; /* main thread has pending publishes: wake it on durability */
} mqc;

/* ---- conn.c ---- */
conn *conn_find(mqc *m, const struct mosquitto *client);
conn *conn_add(mqc *m, struct mosquitto *client, const char *user, const char *device);
void conn_remove(mqc *m, const struct mosquitto *client);
void conn_free_all(mqc *m);
/* Take one token; 0 if allowed, else the ms until one is available. */
int64_t conn_rate_take(mqc *m, conn *c);
/* Queue msg to every connected device of `user` but `skip` (may be NULL),
 * by client id on {p}/u/{user}/inbox. -1 on out of memory. */
int to_user(mqc *m, pubs *out, const char *user, const conn *skip, const ProtobufCMessage *msg,
            int qos);
int64_t now_ms(void);

/* ---- out.c ---- */
/* Append a publish of message `msg` (packed now). Returns -1 on OOM. */
int pubs_add(pubs *p, const char *client_id, const char *topic, const ProtobufCMessage *msg,
             int qos);
void pubs_free(pubs *p);
/* Send `p` once `ticket` is durable (now, if it already is). Takes
 * ownership of p's contents. */
void out_after(mqc *m, uint64_t ticket, pubs *p);
/* Send everything whose ticket is durable. Called from TICK. */
void out_drain(mqc *m);
void out_free_all(mqc *m);

/* Immediate replies to the device of `c`. */
void reply_response(mqc *m, conn *c, Mqchat__V1__Response *resp);
void reply_error(mqc *m, conn *c, const char *request_id, wire_code code, const char *msg);
/* retry_ms: for RATE_LIMITED and UNAVAILABLE, the earliest sensible retry. */
void reply_error_retry(mqc *m, conn *c, const char *request_id, wire_code code, const char *msg,
                       uint32_t retry_ms);
void reply_send_error(mqc *m, conn *c, const Mqchat__V1__SendRequest *req, wire_code code,
                      const char *msg, uint32_t retry_ms);

/* Map a store error to a device-facing code and message. */
wire_code store_code(mqstore_err e, wire_code notfound);

/* ---- send.c / requests.c / receipts.c: return MOSQ_ERR_SUCCESS or
 * MOSQ_ERR_ACL_DENIED (refused: PUBACK 0x87, message dropped) ---- */
int handle_send(mqc *m, conn *c, const void *payload, size_t len);
int handle_request(mqc *m, conn *c, const void *payload, size_t len);
int handle_receipt(mqc *m, conn *c, const void *payload, size_t len);
int handle_typing(mqc *m, conn *c, const void *payload, size_t len);

/* Create the implicit 1:1 conversation conv = d:<ua>:<ub> if it does not
 * exist yet (no event; both users members). */
mqstore_err ensure_direct(mqc *m, const char *conv, const char *ua, const char *ub);

/* The caller's membership of conv (requests.c): 0 with *self set, or -1
 * after replying with the refusal (request_id may be NULL). */
int require_member(mqc *m, conn *c, const char *request_id, const char *conv, mqstore_member *self);

/* Build the Message a device receives from a stored log entry: *stored is
 * the unpacked content (free with mqchat__v1__message__free_unpacked after
 * packing), *view a copy with the envelope filled from `sm`. -1 if the
 * stored payload does not decode (logged). */
int message_view(const mqstore_msg *sm, Mqchat__V1__Message **stored, Mqchat__V1__Message *view);

/* Queue, for every user of a store result's fan-out, the message `msg`
 * with that user's inbox_seq to each of the user's connected devices but
 * `skip` (the sending device, which has the SendAck; may be NULL). */
int fanout_message(mqc *m, pubs *out, Mqchat__V1__Message *msg, const mqstore_result *r,
                   const conn *skip);

#endif
