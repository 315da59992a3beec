/* acl — ACL_CHECK. Inside the chat namespace (core/topics.h) only our own
 * devices get anything, and only their own topics: they publish to their
 * device topics, subscribe to their inbox and device downstream filters,
 * and receive inbox and ack/resp. Outside the namespace the operator's
 * `outside_namespace` option answers: defer to the broker's other
 * mechanisms (acl_file, dynamic-security — with neither, mosquitto 2.0
 * denies a topic every plugin deferred), allow, or deny
 * (docs/OPERATIONS.md, "Topics outside the chat namespace"). */
#include "broker.h"
#include "control.h"

#include <string.h>

/* The answer for a topic or filter outside the namespace. */
static int outside(const mqc *m)
{
    switch (m->cfg.outside_namespace) {
    case OUTSIDE_ALLOW:
        return MOSQ_ERR_SUCCESS;
    case OUTSIDE_DENY:
        return MOSQ_ERR_ACL_DENIED;
    case OUTSIDE_DEFER:
        break;
    }
    return MOSQ_ERR_PLUGIN_DEFER;
}

static int check_subscribe(mqc *m, struct mosquitto_evt_acl_check *ev)
{
    const char *prefix = m->cfg.topic_prefix;
    if (!filter_touches_prefix(prefix, ev->topic)) return outside(m);
    if (ev->access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_SUCCESS;
    conn *c = conn_find(&m->dev, ev->client);
    if (c && filter_allowed(prefix, ev->topic, c->user, c->device)) return MOSQ_ERR_SUCCESS;
    /* A filter that reaches above the namespace ("#", "+/v1/#", ...) is
     * not ours to refuse: other mechanisms decide it, and READ below
     * keeps chat traffic out of it. */
    topic_info ti;
    topic_parse(prefix, ev->topic, &ti);
    if (ti.kind == TOPIC_OUTSIDE && strncmp(ev->topic, "$share/", 7) != 0 &&
        strncmp(ev->topic, prefix, strlen(prefix)) != 0)
        return outside(m);
    return MOSQ_ERR_ACL_DENIED;
}

/* The operator API's two topics: commands (publish) and their answers
 * (subscribe; the answers themselves go to the admin's client id). Only
 * admin_users; everybody else is refused here, whatever acl_file says. */
static int control_topic(const mqc *m, const struct mosquitto_evt_acl_check *ev, int *rc)
{
    int cmd = strcmp(ev->topic, MQC_CONTROL_TOPIC) == 0;
    int resp = strcmp(ev->topic, MQC_CONTROL_RESPONSE_TOPIC) == 0;
    if (!cmd && !resp) return 0;
    int admin = mqc_config_is_admin(&m->cfg, mosquitto_client_username(ev->client));
    int ok =
        ev->access == MOSQ_ACL_UNSUBSCRIBE ||
        (admin && ((cmd && ev->access == MOSQ_ACL_WRITE) ||
                   (resp && (ev->access == MOSQ_ACL_SUBSCRIBE || ev->access == MOSQ_ACL_READ))));
    *rc = ok ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
    return 1;
}

int on_acl_check(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_acl_check *ev = event_data;
    int rc;
    if (control_topic(m, ev, &rc)) return rc;
    if (ev->access == MOSQ_ACL_SUBSCRIBE || ev->access == MOSQ_ACL_UNSUBSCRIBE)
        return check_subscribe(m, ev);
    topic_info ti;
    topic_parse(m->cfg.topic_prefix, ev->topic, &ti);
    if (ti.kind == TOPIC_OUTSIDE) return outside(m);
    conn *c = conn_find(&m->dev, ev->client);
    if (!c || strcmp(ti.user, c->user) != 0) return MOSQ_ERR_ACL_DENIED;
    if (ev->access == MOSQ_ACL_WRITE)
        return ti.kind == TOPIC_DEVICE && strcmp(ti.device, c->device) == 0 ? MOSQ_ERR_SUCCESS
                                                                            : MOSQ_ERR_ACL_DENIED;
    if (ti.kind == TOPIC_INBOX) return MOSQ_ERR_SUCCESS;
    if (ti.kind == TOPIC_DEVICE && strcmp(ti.device, c->device) == 0 &&
        (ti.leaf == LEAF_ACK || ti.leaf == LEAF_RESP))
        return MOSQ_ERR_SUCCESS;
    return MOSQ_ERR_ACL_DENIED;
}
