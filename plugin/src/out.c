/* out — everything the plugin publishes goes through here.
 *
 * The rule (DESIGN.md, send path step 3): an ACK, and the deliveries of
 * the message it acknowledges, leave only once the store says the write is
 * durable. The store hands out a ticket per write; we keep publishes in a
 * FIFO tagged with the ticket they wait for and send every entry whose
 * ticket is <= mqstore_durable() — at once when that is already true (os
 * mode), otherwise at the end of the event-loop pass in which the syncer's
 * fsync completed (TICK; the syncer wakes the loop, see plugin.c). Tickets
 * only grow along the FIFO, so publishes leave in the order they were made.
 */
#include "plugin.h"

#include <stdlib.h>
#include <string.h>

static void *broker_alloc(size_t n)
{
    return mosquitto_malloc(n);
}

int pubs_add(pubs *p, const char *client_id, const char *topic, const ProtobufCMessage *msg,
             int qos)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        pub *items = realloc(p->items, cap * sizeof(*items));
        if (!items) return -1;
        p->items = items;
        p->cap = cap;
    }
    pub *x = &p->items[p->n];
    memset(x, 0, sizeof(*x));
    x->client_id = client_id ? strdup(client_id) : NULL;
    x->topic = strdup(topic);
    x->payload = wire_pack(msg, &x->len, broker_alloc);
    x->qos = qos;
    if ((client_id && !x->client_id) || !x->topic || !x->payload) {
        free(x->client_id);
        free(x->topic);
        mosquitto_free(x->payload);
        return -1;
    }
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
static void pubs_send(pubs *p)
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

void out_after(mqc *m, uint64_t ticket, pubs *p)
{
    if (p->n == 0) {
        pubs_free(p);
        return;
    }
    if (!m->head && ticket <= mqstore_durable(m->store)) {
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
    e->ticket = ticket;
    e->out = *p;
    memset(p, 0, sizeof(*p));
    if (m->tail)
        m->tail->next = e;
    else
        m->head = e;
    m->tail = e;
    m->n_pending++;
    atomic_store(&m->waiting, 1);
    out_drain(m);
}

void out_drain(mqc *m)
{
    uint64_t durable = mqstore_durable(m->store);
    while (m->head && m->head->ticket <= durable) {
        pending *e = m->head;
        m->head = e->next;
        if (!m->head) m->tail = NULL;
        m->n_pending--;
        pubs_send(&e->out);
        free(e);
    }
    if (!m->head) atomic_store(&m->waiting, 0);
}

void out_free_all(mqc *m)
{
    while (m->head) {
        pending *e = m->head;
        m->head = e->next;
        pubs_free(&e->out);
        free(e);
    }
    m->tail = NULL;
    m->n_pending = 0;
}

static void reply(mqc *m, conn *c, const char *leaf, const ProtobufCMessage *msg, int qos)
{
    char topic[512];
    if (topic_device(topic, sizeof(topic), m->cfg.topic_prefix, c->user, c->device, leaf)) return;
    /* Replies wait for the newest write to be durable: a response never
     * shows a device data that a power loss could still take back, and
     * replies keep their order with the ACKs queued before them. */
    pubs p = {0};
    if (pubs_add(&p, c->client_id, topic, msg, qos) == 0)
        out_after(m, mqstore_last_ticket(m->store), &p);
    else
        pubs_free(&p);
}

void reply_response(mqc *m, conn *c, Mqchat__V1__Response *resp)
{
    reply(m, c, "resp", &resp->base, 1);
}

void reply_error(mqc *m, conn *c, const char *request_id, wire_code code, const char *msg)
{
    reply_error_retry(m, c, request_id, code, msg, 0);
}

void reply_error_retry(mqc *m, conn *c, const char *request_id, wire_code code, const char *msg,
                       uint32_t retry_ms)
{
    Mqchat__V1__Error err = MQCHAT__V1__ERROR__INIT;
    err.code = code;
    err.retry_after_ms = retry_ms;
    err.message = (char *)msg;
    err.request_id = (char *)(request_id && mqc_id_valid(MQC_ID_CLIENT, request_id) ? request_id : "");
    Mqchat__V1__Response resp = MQCHAT__V1__RESPONSE__INIT;
    resp.request_id = err.request_id;
    resp.body_case = MQCHAT__V1__RESPONSE__BODY_ERROR;
    resp.error = &err;
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqchat: refused %s%sfrom %s: %s", err.request_id,
                         err.request_id[0] ? " " : "", c->client_id, msg);
    reply_response(m, c, &resp);
}

void reply_send_error(mqc *m, conn *c, const Mqchat__V1__SendRequest *req, wire_code code,
                      const char *msg, uint32_t retry_ms)
{
    Mqchat__V1__Error err = MQCHAT__V1__ERROR__INIT;
    const char *cmid = req && mqc_id_valid(MQC_ID_CLIENT, req->client_msg_id) ? req->client_msg_id : "";
    err.code = code;
    err.retry_after_ms = retry_ms;
    err.message = (char *)msg;
    err.request_id = (char *)cmid;
    Mqchat__V1__SendAck ack = MQCHAT__V1__SEND_ACK__INIT;
    ack.client_msg_id = (char *)cmid;
    ack.conversation_id =
        (char *)(req && mqc_id_valid(MQC_ID_CONV, req->conversation_id) ? req->conversation_id : "");
    ack.error = &err;
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqchat: refused send %s%sfrom %s: %s", cmid,
                         cmid[0] ? " " : "", c->client_id, msg);
    reply(m, c, "ack", &ack.base, SEND_ACK_QOS);
}

wire_code store_code(mqstore_err e, wire_code notfound)
{
    switch (e) {
    case MQSTORE_OK:
        return EC(UNSPECIFIED);
    case MQSTORE_ERR_INVAL:
        return EC(INVALID_ARGUMENT);
    case MQSTORE_ERR_NOTFOUND:
        return notfound;
    case MQSTORE_ERR_EXISTS:
        return EC(INVALID_ARGUMENT);
    case MQSTORE_ERR_NOTMEMBER:
        return EC(NOT_MEMBER);
    case MQSTORE_ERR_TOOBIG:
        return EC(BODY_TOO_LARGE);
    case MQSTORE_ERR_IO:
    case MQSTORE_ERR_NOSPC:
    case MQSTORE_ERR_READONLY:
        return EC(UNAVAILABLE);
    case MQSTORE_ERR_CORRUPT:
    case MQSTORE_ERR_NOMEM:
        return EC(INTERNAL);
    }
    return EC(INTERNAL);
}
