/* lane — the deliveries of large conversations, bounded per loop pass.
 *
 * A message to a large conversation goes live to every connection in its
 * room (rooms.c): thousands of publishes for one write. Made at once they
 * would hold the event loop for every other client, so they go into a
 * second FIFO beside outq.c's: each entry waits, like every publish, for
 * its write's ticket to be durable, and then the lane sends at most
 * fanout_per_pass publishes per loop pass (from TICK: dev_tick),
 * walking a broadcast's room from where the last pass stopped.
 *
 * Order. Entries leave in FIFO order and a broadcast finishes before the
 * next entry starts, so each device gets a conversation's messages in seq
 * order. Everything delivered for a conversation with a room goes through
 * the lane (rooms_route), also the per-user copies of a membership event
 * and, after a switch back to small, the inbox deliveries while older
 * entries are still queued (every entry for a routed conversation holds
 * its room, a switch event's copies too). The lane runs only from TICK
 * (dev_tick), after the FIFO was drained, and a lane entry's ticket is higher than that of any FIFO
 * entry made before it, so an event that switched a conversation to large
 * (delivered from the FIFO) leaves before the first broadcast after it.
 * Main thread only. */
#include "device.h"

#include <assert.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lane_job {
    uint64_t ticket;
    pubs p;            /* per-user copies: sent whole, first */
    struct room *room; /* NULL: nothing to broadcast */
    size_t next, limit;
    void *payload; /* the packed ServerEvent (malloc) */
    size_t len;
    int qos;
    int message; /* metrics: the broadcast is a message (counted in delivered_live) */
    int change;  /* a membership change (rooms.c): 1 user joins, -1 user leaves */
    char user[MQC_ID_BUF];
    char skip_client[2 * MQC_ID_BUF];
    char (*skip_users)[MQC_ID_BUF]; /* sorted */
    size_t n_skip;
    struct lane_job *next_job;
} lane_job;

static int cmp_user(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void job_free(dev *d, lane_job *j)
{
    pubs_free(&j->p);
    if (j->room) room_release(d, j->room);
    free(j->payload);
    free(j->skip_users);
    free(j);
}

/* Link a job behind the tail, keeping tickets in order. */
static void push(dev *d, lane_job *j)
{
    if (d->lane_tail && j->ticket < d->lane_tail->ticket) j->ticket = d->lane_tail->ticket;
    if (d->lane_tail)
        d->lane_tail->next_job = j;
    else
        d->lane_head = j;
    d->lane_tail = j;
    d->lane_len++;
    atomic_store(&d->waiting, 1);
}

/* A broadcast of `ev` to conv's room, holding the room; NULL when the
 * room is empty or closed (nothing to do) or out of memory (*oom). */
static lane_job *broadcast_job(dev *d, const char *conv, const ProtobufCMessage *ev, int qos,
                               int *oom)
{
    *oom = 0;
    struct room *r = rooms_open(d, conv);
    size_t limit;
    const char *rc;
    if (!r || !room_walk(r, &limit, &rc)) return NULL;
    lane_job *j = calloc(1, sizeof(*j));
    if (j) j->payload = wire_pack(ev, &j->len, malloc);
    if (!j || !j->payload) {
        free(j);
        *oom = 1;
        return NULL;
    }
    j->room = r;
    room_hold(r);
    j->limit = limit;
    j->qos = qos;
    return j;
}

int lane_written(dev *d, pubs *out, chat_written *w, const conn *skip)
{
    if (!rooms_route(d, w->conv)) return fanout_written(d, out, w, skip);
    pubs p = {0};
    if (fanout_written(d, &p, w, skip)) {
        pubs_free(&p);
        return -1;
    }
    int oom = 0;
    lane_job *j = NULL;
    if (w->r.pulled) {
        Mqchat__V1__ServerEvent ev = MQCHAT__V1__SERVER_EVENT__INIT;
        ev.body_case = MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE;
        ev.message = &w->msg;
        w->msg.inbox_seq = 0; /* not in the inboxes: devices order by seq */
        j = broadcast_job(d, w->conv, &ev.base, 1, &oom);
        if (j) j->message = 1;
    }
    if (!j && !oom && p.n && (j = calloc(1, sizeof(*j)))) {
        /* Only per-user copies (e.g. the event that switched the group back
         * to small): hold the room all the same (limit 0: nothing to walk),
         * so the conversation stays routed through the lane until they are
         * sent. Else, once the older broadcasts were done, the next write
         * would go through the FIFO, which leaves first. */
        if ((j->room = rooms_routed(d, w->conv))) room_hold(j->room);
    }
    if (!j) {
        pubs_free(&p);
        return oom ? -1 : 0;
    }
    j->p = p;
    j->ticket = w->r.ticket;
    if (skip) strcpy(j->skip_client, skip->client_id);
    /* The fan-out users got their copy with their inbox_seq. */
    if (j->room && j->limit && w->r.n_fanout) {
        if (!(j->skip_users = malloc(w->r.n_fanout * sizeof(*j->skip_users)))) {
            job_free(d, j);
            return -1;
        }
        memcpy(j->skip_users, w->r.fanout_user, w->r.n_fanout * sizeof(*j->skip_users));
        j->n_skip = w->r.n_fanout;
        qsort(j->skip_users, j->n_skip, sizeof(*j->skip_users), cmp_user);
    }
    push(d, j); /* sent from this pass's TICK (dev_tick) */
    return 0;
}

int lane_broadcast(dev *d, const char *conv, uint64_t ticket, const ProtobufCMessage *ev, int qos,
                   const char *skip_user)
{
    int oom;
    lane_job *j = broadcast_job(d, conv, ev, qos, &oom);
    if (!j) return oom ? -1 : 0;
    j->ticket = ticket;
    if (skip_user) {
        if (!(j->skip_users = malloc(sizeof(*j->skip_users)))) {
            job_free(d, j);
            return -1;
        }
        strcpy(j->skip_users[0], skip_user);
        j->n_skip = 1;
    }
    push(d, j);
    return 0;
}

/* Send one copy of the job's payload to c. */
static void send_one(dev *d, lane_job *j, conn *c)
{
    char topic[512];
    if (topic_inbox(topic, sizeof(topic), d->cfg->topic_prefix, c->user)) return;
    void *copy = mosquitto_malloc(j->len ? j->len : 1);
    if (!copy) return;
    memcpy(copy, j->payload, j->len);
    if (mosquitto_broker_publish(c->client_id, topic, (int)j->len, copy, j->qos, false, NULL) !=
        MOSQ_ERR_SUCCESS) {
        mosquitto_log_printf(MOSQ_LOG_WARNING, "mqchat: could not publish to %s", topic);
        mosquitto_free(copy);
    }
    d->lane_sent++;
    if (j->message) d->delivered_live++;
}

int lane_member_change(dev *d, struct room *r, const char *user, int join, uint64_t ticket)
{
    lane_job *j = calloc(1, sizeof(*j));
    if (!j) return -1;
    j->room = r; /* limit 0: nothing to walk */
    room_hold(r);
    j->change = join ? 1 : -1;
    snprintf(j->user, sizeof(j->user), "%s", user);
    j->ticket = ticket;
    push(d, j);
    return 0;
}

void lane_run(dev *d)
{
    uint64_t durable = mqstore_durable(d->store);
    while (d->lane_head && d->lane_head->ticket <= durable && d->lane_budget > 0) {
        lane_job *j = d->lane_head;
        assert(!j->next_job || j->next_job->ticket >= j->ticket); /* tickets grow */
        if (j->p.n) {
            d->lane_budget = d->lane_budget > j->p.n ? d->lane_budget - j->p.n : 0;
            pubs_send(&j->p); /* frees and empties it */
        }
        while (j->room && j->next < j->limit && d->lane_budget > 0) {
            conn *c = room_at(j->room, j->next++);
            if (!c || strcmp(c->client_id, j->skip_client) == 0) continue;
            if (j->n_skip &&
                bsearch(c->user, j->skip_users, j->n_skip, sizeof(*j->skip_users), cmp_user))
                continue;
            send_one(d, j, c);
            d->lane_budget--;
        }
        if (j->room && j->next < j->limit) break; /* the budget ran out mid-walk */
        if (j->change) room_change_apply(d, j->room, j->user, j->change > 0);
        d->lane_head = j->next_job;
        if (!d->lane_head) d->lane_tail = NULL;
        d->lane_len--;
        job_free(d, j);
    }
}

int lane_more(dev *d)
{
    return d->lane_head && d->lane_head->ticket <= mqstore_durable(d->store);
}

void lane_free_all(dev *d)
{
    while (d->lane_head) {
        lane_job *j = d->lane_head;
        d->lane_head = j->next_job;
        job_free(d, j);
    }
    d->lane_tail = NULL;
    d->lane_len = 0;
}
