/* outq — everything the plugin publishes goes through here.
 *
 * The rule (docs/ARCHITECTURE.md, "The send path", step 3): an ACK, and the deliveries of
 * the message it acknowledges, leave only once the store says the write is
 * durable. The store hands out a ticket per write; we keep publishes in a
 * FIFO tagged with the ticket they wait for and send every entry whose
 * ticket is <= mqstore_durable() — at once when that is already true (os
 * mode), otherwise at the end of the event-loop pass in which the syncer's
 * fsync completed (TICK; the syncer wakes the loop through
 * plugin/src/worker/wake.h, see plugin/src/broker/tick.c).
 *
 * INVARIANT: tickets never decrease along the FIFO (kept in out_after,
 * asserted in out_drain), so publishes leave in the order they were made: a reply
 * queued after an ACK never overtakes it.
 * Main thread only, but for dev_waiting(). */
#include "device.h"

#include <assert.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>

#include <stdlib.h>
#include <string.h>

static void *broker_alloc(size_t n)
{
    return mosquitto_malloc(n);
}

/* The next free slot of p, zeroed, with its client id and topic copied;
 * NULL when out of memory. The caller fills payload/len and counts it. */
static pub *pubs_slot(pubs *p, const char *client_id, const char *topic, int qos)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        pub *items = realloc(p->items, cap * sizeof(*items));
        if (!items) return NULL;
        p->items = items;
        p->cap = cap;
    }
    pub *x = &p->items[p->n];
    memset(x, 0, sizeof(*x));
    x->client_id = client_id ? strdup(client_id) : NULL;
    x->topic = strdup(topic);
    x->qos = qos;
    if ((client_id && !x->client_id) || !x->topic) {
        free(x->client_id);
        free(x->topic);
        return NULL;
    }
    return x;
}

int pubs_add(pubs *p, const char *client_id, const char *topic, const ProtobufCMessage *msg,
             int qos)
{
    pub *x = pubs_slot(p, client_id, topic, qos);
    if (!x) return -1;
    if (!(x->payload = wire_pack(msg, &x->len, broker_alloc))) {
        free(x->client_id);
        free(x->topic);
        return -1;
    }
    p->n++;
    return 0;
}

int pubs_add_raw(pubs *p, const char *client_id, const char *topic, const void *data, size_t len,
                 int qos)
{
    pub *x = pubs_slot(p, client_id, topic, qos);
    if (!x) return -1;
    if (!(x->payload = broker_alloc(len ? len : 1))) {
        free(x->client_id);
        free(x->topic);
        return -1;
    }
    memcpy(x->payload, data, len);
    x->len = len;
    p->n++;
    return 0;
}

void pubs_free(pubs *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->items[i].client_id);
        free(p->items[i].topic);
        mosquitto_free(p->items[i].payload);
    }
    free(p->items);
    memset(p, 0, sizeof(*p));
}

/* mosquitto_broker_publish takes ownership of the payload on success. */
void pubs_send(pubs *p)
{
    for (size_t i = 0; i < p->n; i++) {
        pub *x = &p->items[i];
        if (mosquitto_broker_publish(x->client_id, x->topic, (int)x->len, x->payload, x->qos, false,
                                     NULL) == MOSQ_ERR_SUCCESS)
            x->payload = NULL;
        else
            mosquitto_log_printf(MOSQ_LOG_WARNING, "mqchat: could not publish to %s", x->topic);
    }
    pubs_free(p);
}

/* Metrics: the SendAck in p leaves now (durable_ack_time); *now is read
 * at most once per drain. */
static void ack_leaves(dev *d, const pubs *p, int64_t *now)
{
    if (!p->ack_ns) return;
    if (!*now) *now = mqc_metrics_now_ns();
    mqc_hist_observe(&d->durable_ack_time, *now - p->ack_ns);
}

void out_after(dev *d, uint64_t ticket, pubs *p)
{
    if (p->n == 0) {
        pubs_free(p);
        return;
    }
    if (!d->head && ticket <= mqstore_durable(d->store)) {
        int64_t now = 0;
        ack_leaves(d, p, &now);
        pubs_send(p);
        return;
    }
    /* Queue it, raise `waiting`, then drain: the syncer publishes `durable`
     * before it reads `waiting`, we raise `waiting` before we read
     * `durable`, so either it wakes us or this drain sees the new value. */
    pending *e = calloc(1, sizeof(*e));
    if (!e) {
        /* Out of memory: the client will retry and get a duplicate ACK. */
        mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: out of memory queueing publishes");
        pubs_free(p);
        return;
    }
    /* An entry leaves after its predecessor whatever its own ticket (a
     * typing notice has none): wait for the larger one, which keeps the
     * FIFO's tickets in order. */
    if (d->tail && ticket < d->tail->ticket) ticket = d->tail->ticket;
    e->ticket = ticket;
    e->out = *p;
    memset(p, 0, sizeof(*p));
    if (d->tail)
        d->tail->next = e;
    else
        d->head = e;
    d->tail = e;
    d->n_pending++;
    atomic_store(&d->waiting, 1);
    out_drain(d);
}

void out_drain(dev *d)
{
    uint64_t durable = mqstore_durable(d->store);
    /* Durability only grows, so whatever left before stays sent. */
    assert(durable >= d->last_drained);
    d->last_drained = durable;
    int64_t now = 0;
    while (d->head && d->head->ticket <= durable) {
        pending *e = d->head;
        assert(!e->next || e->next->ticket >= e->ticket); /* tickets grow along the FIFO */
        d->head = e->next;
        if (!d->head) d->tail = NULL;
        d->n_pending--;
        ack_leaves(d, &e->out, &now);
        pubs_send(&e->out);
        free(e);
    }
    if (!d->head && !d->lane_head) atomic_store(&d->waiting, 0);
}

void dev_tick(dev *d)
{
    /* The lane runs here only, once per pass, after the FIFO (lane.c,
     * "Order"): one budget per pass, never a handler's leftover plus a
     * fresh one. */
    out_drain(d);
    d->lane_budget = d->cfg->fanout_per_pass;
    lane_run(d);
    if (!d->head && !d->lane_head) atomic_store(&d->waiting, 0);
}

void out_free_all(dev *d)
{
    while (d->head) {
        pending *e = d->head;
        d->head = e->next;
        pubs_free(&e->out);
        free(e);
    }
    d->tail = NULL;
    d->n_pending = 0;
}

int dev_waiting(dev *d)
{
    return atomic_load(&d->waiting);
}
