/* client_int.h — what the SDK's source files share: the client struct and
 * the engine's internal functions (client.c says which file does what).
 * Not public API, not for the tests (they use internal.h). All of it runs
 * with c->mu held unless its comment says otherwise. */
#ifndef MQCHAT_CLIENT_INT_H
#define MQCHAT_CLIENT_INT_H

#include "internal.h"
#include "mqchat.h"
#include "platform.h"
#include "state.h"

#include "mqchat.pb-c.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* paho's command queue bound (client.c); a publish it refuses is an ERROR
 * event and retried with the next connect (conn.c). */
#define MQCHAT_PAHO_MAX_BUFFERED 1000000

/* How long committed progress waits before the SDK syncs its state file to
 * disk and acks its cursor and positions to the server (deliver.c,
 * send_acks): one fsync and one CursorAck per burst, not per packet. */
#define MQCHAT_ACK_DELAY_MS 50

typedef struct progress {
    int done;
    int has_cursor;
    uint64_t cursor;
    char *conv; /* NULL: no conversation change */
    uint64_t handed;
    uint64_t position;
    struct progress *next;
} progress;

typedef struct ievent {
    mqchat_event ev; /* first: mqchat_event_free casts back */
    mqchat_client *c;
    progress *p; /* MESSAGE: done when the app is finished with it */
    struct ievent *next;
} ievent;

typedef struct conv_state {
    char *conv;
    uint64_t handed_mem;     /* highest seq handed or queued to the app */
    uint64_t position_acked; /* committed on the device: where a live gap's pull starts */
    uint64_t position_sent;  /* durable and told the server (PositionAck) */
    int pulling;
    uint64_t pull_after; /* the pull's start: inbox messages above it wait for the pull */
    /* Inbox messages of this conversation that arrived while it is pulled
     * (a group that turned small again while the device was away): handed
     * in seq order among the pulled ones. Each holds its place in the
     * progress FIFO (not done), so the cursor never passes it. */
    struct deferred *dh, *dt;
} conv_state;

typedef struct deferred {
    uint8_t *buf; /* the packed Message */
    size_t len;
    uint64_t seq;
    struct progress *p;
    struct deferred *next;
} deferred;

/* A packet to publish. Paho holds its own lock while it runs our
 * callbacks, and those take c->mu: so nothing calls into paho while holding
 * c->mu from another thread. Publishes queue here under c->mu and go out
 * from drain_out(), after c->mu is released, in queue order. */
typedef struct outpkt {
    char *topic;
    uint8_t *buf;
    size_t len;
    int qos;
    struct outpkt *next;
} outpkt;

typedef struct pull_job {
    char *conv;
    uint64_t after;
} pull_job;

struct mqchat_client {
    /* options */
    char *host, *user, *device, *prefix, *ca_file, *path;
    int port, use_tls, mqtt_version, keepalive_s, backoff_min_ms, backoff_max_ms, poll_mode;
    mqchat_token_fn token;
    mqchat_event_fn on_event;
    mqchat_persist_fn persist; /* NULL: commit after the app is done (at least once) */
    int persist_failed;        /* the hook refused: flush() rewinds (deliver.c) */
    void *data;
    char t_send[512], t_req[512], t_receipt[512], t_typing[512], t_ack[512], t_resp[512],
        t_inbox[512];

    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t timer;
    int timer_started, quit;
    MQTTAsync mq;
    mqc_state *st;
    int outbox_n;  /* entries in the outbox (outbox.c keeps it; -1: unknown) */
    mqc_wake wake; /* poll mode: readable while events or packets wait */

    /* connection */
    int want, connected, connecting, taken_over, attempt, refresh, quick_drops;
    int after_loss, session_is_reconnect; /* taken-over detection (lost_session) */
    mqchat_conn_state conn_state;         /* of the newest CONNECTION event (emit_conn) */
    int64_t connected_at, reconnect_at, retry_at;
    int64_t sync_retry_at, pull_retry_at; /* after a RATE_LIMITED / UNAVAILABLE answer */
    int64_t ack_at;                       /* send_acks() is due (0: nothing to ack) */
    enum MQTTReasonCodes v5_reason;

    /* sync */
    /* cursor_mem >= cursor_committed >= cursor_durable >= cursor_acked
     * (except right after a restored server lowered them all) */
    uint64_t cursor_mem, cursor_committed, cursor_durable, cursor_acked, max_seen_live;
    uint64_t restore_floor; /* the server's, as of the last sync (deliver.c, on_sync) */
    int inbox_syncing, catching_up;
    char sync_rid[MQCHAT_ID_BUF], pull_rid[MQCHAT_ID_BUF];
    int sync_positions; /* next page asks positions */
    char positions_after[MQCHAT_ID_BUF];
    pull_job *pulls;
    size_t n_pulls, cap_pulls;
    conv_state *convs;
    size_t n_convs, cap_convs;

    progress *ph, *pt;
    ievent *qh, *qt;
    pthread_mutex_t out_mu; /* guards oh/ot/draining, never held with c->mu taken after it */
    outpkt *oh, *ot;
    outpkt *rh, *rt; /* poll mode: packets received, not decoded yet (under mu) */
    int draining;
    int swapping; /* under out_mu: the timer replaces c->mq (conn.c, fresh_paho) */
    int mq_users; /* under out_mu: mqchat_disconnect is using c->mq */
    int mq_used;  /* c->mq carried a session that was lost (conn.c, fresh_paho) */
    int depth;    /* nesting of c->mu by its holder */
    uint64_t rid_counter;
    char nonce[9];
    int drop_nth, live_count;
};

/* Internal to libmqchat.so: not exported. */
#pragma GCC visibility push(hidden)

/* client.c: small helpers and the lock. */
int64_t now_ms(void);
char *xstrdup(const char *s);
void lock(mqchat_client *c);
void unlock(mqchat_client *c);

/* conn.c: the paho session and publishing. */
int paho_new(mqchat_client *c, MQTTAsync *mq);
int publish(mqchat_client *c, const char *topic, const ProtobufCMessage *m, int qos);
void outpkt_free_all(outpkt **head, outpkt **tail);
void drain_out(mqchat_client *c);
int request(mqchat_client *c, char kind, Mqchat__V1__Request *r, char rid[MQCHAT_ID_BUF]);
int on_arrived(void *ctx, char *topic, int tlen, MQTTAsync_message *m);
void lost_session(mqchat_client *c, const char *why);
void on_lost(void *ctx, char *cause);
void on_disconnected5(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc);
void *timer_main(void *arg);

/* deliver.c: the delivery rules and the progress FIFO. */
conv_state *conv_get(mqchat_client *c, const char *conv);
progress *progress_add(mqchat_client *c, int done, int has_cursor, uint64_t cursor,
                       const char *conv, uint64_t handed, uint64_t position);
void flush(mqchat_client *c);
void schedule_acks(mqchat_client *c);
void send_acks(mqchat_client *c);
void start_sync(mqchat_client *c);
void next_pull(mqchat_client *c);
void pull_pop(mqchat_client *c);
void hand_deferred_all(mqchat_client *c, const char *conv, uint64_t below);
void on_live_message(mqchat_client *c, const Mqchat__V1__Message *m);
void on_sync(mqchat_client *c, const Mqchat__V1__SyncResponse *s);
void on_pull(mqchat_client *c, const Mqchat__V1__ConversationPullResponse *p);

/* outbox.c: sends. */
void resend_outbox(mqchat_client *c);
void complete_own(mqchat_client *c, const char *cmid, const char *conv, uint64_t seq,
                  uint64_t inbox_seq, int64_t t);
void on_send_ack(mqchat_client *c, const Mqchat__V1__SendAck *a);

/* requests.c: responses, and the read marks made offline. */
void on_response(mqchat_client *c, const Mqchat__V1__Response *r);
void send_read_marks(mqchat_client *c);

/* events.c: events for the app. */
void event_clear(mqchat_event *ev);
void event_clear_message(mqchat_message *m);
ievent *ev_new(mqchat_client *c, mqchat_event_type t);
void emit(mqchat_client *c, ievent *ie);
void emit_error(mqchat_client *c, const char *fmt, ...);
void emit_conn(mqchat_client *c, mqchat_conn_state s, const char *reason);
int copy_message(mqchat_message *d, const Mqchat__V1__Message *m);
/* (mqchat__handle_incoming is in internal.h: the tests call it.) */
#pragma GCC visibility pop

#endif
