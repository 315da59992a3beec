/* conn — the registry of device connections the plugin authenticated,
 * keyed by the broker's struct mosquitto pointer, with a token-bucket rate
 * limit per connection, and indexed by user so a message can be handed to
 * each connected device of a user. A connection enters at BASIC_AUTH and
 * leaves at DISCONNECT (which also fires for failed connects).
 * Main thread only. */
#include "device.h"
#include "mqc_clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

conn *conn_find(dev *d, const struct mosquitto *client)
{
    conn *c = NULL;
    HASH_FIND_PTR(d->conns, &client, c);
    return c;
}

conn *conn_add(dev *d, struct mosquitto *client, const char *user, const char *device)
{
    conn_remove(d, client); /* a re-authentication replaces the old entry */
    conn *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->client = client;
    snprintf(c->user, sizeof(c->user), "%s", user);
    snprintf(c->device, sizeof(c->device), "%s", device);
    snprintf(c->client_id, sizeof(c->client_id), "%s:%s", user, device);
    c->tokens = d->cfg->rate_burst;
    c->refill_ms = mqc_mono_ms();
    user_conns *u;
    HASH_FIND_STR(d->users, c->user, u);
    if (!u) {
        u = calloc(1, sizeof(*u));
        if (!u) {
            free(c);
            return NULL;
        }
        snprintf(u->user, sizeof(u->user), "%s", c->user);
        HASH_ADD_STR(d->users, user, u);
    }
    DL_APPEND2(u->devices, c, dev_prev, dev_next);
    HASH_ADD_PTR(d->conns, client, c);
    rooms_conn_added(d, c);
    return c;
}

static void conn_unlink(dev *d, conn *c)
{
    refusals_flush(d, c);
    rooms_conn_gone(d, c);
    HASH_DEL(d->conns, c);
    user_conns *u;
    HASH_FIND_STR(d->users, c->user, u);
    if (u) {
        DL_DELETE2(u->devices, c, dev_prev, dev_next);
        if (!u->devices) {
            HASH_DEL(d->users, u);
            free(u);
        }
    }
    free(c);
}

void conn_remove(dev *d, const struct mosquitto *client)
{
    conn *c = conn_find(d, client);
    if (c) conn_unlink(d, c);
}

/* The rules' question (rules.h): is this device connected here now? */
static int device_online(void *data, const char *user, const char *device)
{
    dev *d = data;
    user_conns *u;
    HASH_FIND_STR(d->users, user, u);
    conn *c;
    if (u) DL_FOREACH2(u->devices, c, dev_next)
        {
            if (strcmp(c->device, device) == 0) return 1;
        }
    return 0;
}

conn *conn_of_user(dev *d, const char *user)
{
    user_conns *u;
    HASH_FIND_STR(d->users, user, u);
    return u ? u->devices : NULL;
}

void dev_init(dev *d, mqstore *store, const mqc_config *cfg)
{
    memset(d, 0, sizeof(*d));
    d->chat.store = d->store = store;
    d->chat.cfg = d->cfg = cfg;
    d->lane_budget = cfg->fanout_per_pass;
    d->timed = cfg->sys_interval_s > 0 || cfg->metrics_http_port > 0;
    d->chat.online = device_online;
    d->chat.online_data = d;
}

void dev_free(dev *d)
{
    conn *c, *tmp;
    HASH_ITER(hh, d->conns, c, tmp)
    {
        conn_unlink(d, c);
    }
    out_free_all(d);
    lane_free_all(d); /* before the rooms its broadcasts hold */
    rooms_free_all(d);
}

int to_user(dev *d, pubs *out, const char *user, const conn *skip, const ProtobufCMessage *msg,
            int qos)
{
    user_conns *u;
    HASH_FIND_STR(d->users, user, u);
    if (!u) return 0; /* offline: the inbox keeps it for the next sync */
    char topic[512];
    if (topic_inbox(topic, sizeof(topic), d->cfg->topic_prefix, user)) return -1;
    conn *c;
    DL_FOREACH2(u->devices, c, dev_next)
    {
        if (c != skip && pubs_add(out, c->client_id, topic, msg, qos)) return -1;
    }
    return 0;
}

int64_t conn_rate_take(dev *d, conn *c)
{
    int64_t now = mqc_mono_ms();
    c->tokens += (double)(now - c->refill_ms) * d->cfg->rate_msgs_per_s / 1000.0;
    if (c->tokens > d->cfg->rate_burst) c->tokens = d->cfg->rate_burst;
    c->refill_ms = now;
    if (c->tokens >= 1.0) {
        c->tokens -= 1.0;
        return 0;
    }
    int64_t wait = (int64_t)((1.0 - c->tokens) * 1000.0 / d->cfg->rate_msgs_per_s) + 1;
    return wait;
}
