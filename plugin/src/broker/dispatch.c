/* dispatch — MESSAGE: a publish under the chat namespace from one of our
 * devices goes to the device layer's handler for its topic leaf. Publishes
 * outside the namespace pass through untouched. The handler's store write
 * happens here, inside the callback, so before mosquitto's PUBACK
 * (docs/MOSQUITTO.md, "The PUBLISH path"). */
#include "broker.h"

#include <string.h>

int on_message(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_message *ev = event_data;
    topic_info ti;
    topic_parse(m->cfg.topic_prefix, ev->topic, &ti);
    if (ti.kind == TOPIC_OUTSIDE) return MOSQ_ERR_SUCCESS;
    /* Upstream chat messages are consumed here, never retained. */
    ev->retain = false;
    conn *c = conn_find(&m->dev, ev->client);
    if (!c || ti.kind != TOPIC_DEVICE || strcmp(ti.user, c->user) != 0 ||
        strcmp(ti.device, c->device) != 0)
        return MOSQ_ERR_ACL_DENIED; /* the WRITE check already refused these */
    switch (ti.leaf) {
    case LEAF_SEND:
        return handle_send(&m->dev, c, ev->payload, ev->payloadlen);
    case LEAF_REQ:
        return handle_request(&m->dev, c, ev->payload, ev->payloadlen);
    case LEAF_RECEIPT:
        return handle_receipt(&m->dev, c, ev->payload, ev->payloadlen);
    case LEAF_TYPING:
        return handle_typing(&m->dev, c, ev->payload, ev->payloadlen);
    default:
        reply_bad_topic(&m->dev, c);
        return MOSQ_ERR_ACL_DENIED;
    }
}
