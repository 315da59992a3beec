/* users — operator commands on users and devices: list a user's devices
 * (cursor, last seen, connected here now, push token), disconnect one,
 * revoke the user's tokens issued before a time, and erase the user.
 *
 * Disconnecting uses mosquitto_kick_client_by_clientid on connections the
 * plugin knows are connected: on an offline persistent session that call
 * corrupts 2.0.11's memory (docs/MOSQUITTO.md, "Known bugs"), so a device
 * that is not connected here is an error, not a kick.
 *
 * Erasure (GDPR-style) in order: tokens issued until now are revoked and
 * the user's connections closed, so nothing new arrives; the user is
 * removed from every conversation (a MEMBERS_REMOVED event each, delivered
 * like any group change); then, on the control worker, the store replaces
 * the body of every message they sent with a tombstone and deletes their
 * inbox, cursors, positions, dedup keys, tokens and preferences
 * (mqstore_user_erase: one pass over every stored message). */
#include "control_int.h"
#include "job.h"
#include "mqc_clock.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The connection of user:device here, or NULL. */
static conn *connected(ctl_cmd *cmd, const char *user, const char *device)
{
    for (conn *c = conn_of_user(&cmd->m->dev, user); c; c = c->dev_next)
        if (!device || strcmp(c->device, device) == 0) return c;
    return NULL;
}

/* Close every connection of the user here (or one device's); returns how
 * many. Client ids first: a kick fires DISCONNECT at once, which unlinks
 * the connection we would be standing on. */
static size_t kick(ctl_cmd *cmd, const char *user, const char *device)
{
    size_t n = 0, cap = 0, kicked = 0;
    char(*ids)[2 * MQC_ID_BUF] = NULL;
    for (conn *c = conn_of_user(&cmd->m->dev, user); c; c = c->dev_next) {
        if (device && strcmp(c->device, device) != 0) continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 8;
            void *p = realloc(ids, ncap * sizeof(*ids));
            if (!p) break;
            ids = p;
            cap = ncap;
        }
        snprintf(ids[n++], sizeof(ids[0]), "%s", c->client_id);
    }
    for (size_t i = 0; i < n; i++)
        if (mosquitto_kick_client_by_clientid(ids[i], false) == MOSQ_ERR_SUCCESS) kicked++;
    free(ids);
    return kicked;
}

static int list_devices(ctl_cmd *cmd)
{
    const char *user, *after = "";
    uint64_t limit = 1000;
    if (ctl_arg_id(cmd, "user", MQC_ID_USER, 1, &user) ||
        ctl_arg_str(cmd, "after", MQC_ID_MAX, 0, &after) ||
        ctl_arg_u64(cmd, "limit", 10000, 0, &limit))
        return CTL_DONE;
    if (after[0] && !mqc_id_valid(MQC_ID_DEVICE, after))
        return ctl_error(cmd, "argument 'after' must be a device id");
    mqstore_device_list l;
    mqstore_err e = mqstore_user_devices(cmd->m->store, user, after, limit ? limit : 1, &l);
    if (e) return ctl_store_error(cmd, "cannot list devices", e);
    mqstore_push_token_list tl;
    if ((e = mqstore_push_tokens(cmd->m->store, user, &tl))) {
        mqstore_device_list_free(&l);
        return ctl_store_error(cmd, "cannot list push tokens", e);
    }
    int64_t revoked = 0;
    mqstore_user_revoke_get(cmd->m->store, user, &revoked);
    cJSON *d = ctl_data(cmd);
    cJSON_AddStringToObject(d, "user", user);
    cJSON_AddNumberToObject(d, "tokensRevokedBeforeMs", (double)revoked);
    cJSON *arr = cJSON_AddArrayToObject(d, "devices");
    for (size_t i = 0; i < l.n; i++) {
        const mqstore_device *dv = &l.items[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "device", dv->device);
        cJSON_AddNumberToObject(o, "cursor", (double)dv->cursor);
        cJSON_AddNumberToObject(o, "lastSeenMs", (double)dv->last_seen_ms);
        cJSON_AddBoolToObject(o, "connected", connected(cmd, user, dv->device) != NULL);
        for (size_t j = 0; j < tl.n; j++) {
            if (strcmp(tl.items[j].device, dv->device) != 0) continue;
            cJSON *p = cJSON_AddObjectToObject(o, "push");
            const char *pn = push_platform_name(tl.items[j].platform);
            cJSON_AddStringToObject(p, "platform", pn ? pn : "unknown");
            cJSON_AddStringToObject(p, "app", tl.items[j].app);
            cJSON_AddStringToObject(p, "token", tl.items[j].token);
            cJSON_AddNumberToObject(p, "updatedMs", (double)tl.items[j].updated_ms);
        }
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddBoolToObject(d, "more", l.more);
    mqstore_push_token_list_free(&tl);
    mqstore_device_list_free(&l);
    return CTL_DONE;
}

static int disconnect_device(ctl_cmd *cmd)
{
    const char *user, *device;
    if (ctl_arg_id(cmd, "user", MQC_ID_USER, 1, &user) ||
        ctl_arg_id(cmd, "device", MQC_ID_DEVICE, 1, &device))
        return CTL_DONE;
    if (!connected(cmd, user, device))
        return ctl_error(cmd, "device %s:%s is not connected to this broker", user, device);
    cJSON *d = ctl_data(cmd);
    cJSON_AddStringToObject(d, "user", user);
    cJSON_AddStringToObject(d, "device", device);
    cJSON_AddNumberToObject(d, "disconnected", (double)kick(cmd, user, device));
    return CTL_DONE;
}

static int revoke_tokens(ctl_cmd *cmd)
{
    const char *user;
    int64_t before = mqc_wall_ms();
    int disconnect = 1;
    if (ctl_arg_id(cmd, "user", MQC_ID_USER, 1, &user) ||
        ctl_arg_i64(cmd, "beforeMs", 0, 253402300799000LL, 0, &before) ||
        ctl_arg_bool(cmd, "disconnect", 0, &disconnect))
        return CTL_DONE;
    mqstore_err e = mqstore_user_revoke_set(cmd->m->store, user, before);
    if (e) return ctl_store_error(cmd, "cannot store the revocation", e);
    cJSON *d = ctl_data(cmd);
    cJSON_AddStringToObject(d, "user", user);
    cJSON_AddNumberToObject(d, "beforeMs", (double)before);
    cJSON_AddNumberToObject(d, "disconnected", disconnect ? (double)kick(cmd, user, NULL) : 0);
    return CTL_DONE;
}

/* ---- erasure ---------------------------------------------------------- */

typedef struct erase_job {
    char user[MQC_ID_BUF];
    uint64_t conversations, disconnected;
    size_t tomb_len;
    mqstore_err err;
    mqstore_erase_stats stats;
    uint8_t tomb[64]; /* the packed tombstone Message */
} erase_job;

static void erase_work(ctl_cmd *cmd)
{
    erase_job *j = cmd->job;
    j->err = mqstore_user_erase(cmd->m->store, j->user, j->tomb, j->tomb_len,
                                MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER, &j->stats);
}

static void erase_done(ctl_cmd *cmd)
{
    erase_job *j = cmd->job;
    if (j->err) {
        ctl_error(cmd,
                  "erasing %s: %s (the user was removed from %llu conversations; run "
                  "eraseUser again)",
                  j->user, mqstore_strerror(j->err), (unsigned long long)j->conversations);
    } else {
        cJSON *d = ctl_data(cmd);
        cJSON_AddStringToObject(d, "user", j->user);
        cJSON_AddNumberToObject(d, "conversationsLeft", (double)j->conversations);
        cJSON_AddNumberToObject(d, "disconnected", (double)j->disconnected);
        cJSON_AddNumberToObject(d, "messagesErased", (double)j->stats.messages);
        cJSON_AddNumberToObject(d, "inboxEntries", (double)j->stats.inbox);
        cJSON_AddNumberToObject(d, "devices", (double)j->stats.devices);
        cJSON_AddNumberToObject(d, "pushTokens", (double)j->stats.tokens);
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "mqchat: control: erased user %s (%llu messages) for %s", j->user,
                             (unsigned long long)j->stats.messages, cmd->admin);
    }
    free(j);
    cmd->job = NULL;
}

static int erase_user(ctl_cmd *cmd)
{
    const char *user;
    if (ctl_arg_id(cmd, "user", MQC_ID_USER, 1, &user)) return CTL_DONE;
    erase_job *j = calloc(1, sizeof(*j));
    if (!j) return ctl_error(cmd, "out of memory");
    snprintf(j->user, sizeof(j->user), "%s", user);
    Mqchat__V1__Message tomb = MQCHAT__V1__MESSAGE__INIT;
    tomb.kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER;
    tomb.deleted = 1;
    j->tomb_len = protobuf_c_message_get_packed_size(&tomb.base);
    assert(j->tomb_len <= sizeof(j->tomb));
    protobuf_c_message_pack(&tomb.base, j->tomb);

    /* 1. Nothing new: old tokens refused from now on, connections closed. */
    mqstore_err e = mqstore_user_revoke_set(cmd->m->store, user, mqc_wall_ms());
    if (e) {
        free(j);
        return ctl_store_error(cmd, "cannot revoke the user's tokens", e);
    }
    j->disconnected = kick(cmd, user, NULL);
    /* 2. Out of every conversation, each with its event. The first page
     * again each time: the list shrinks as we go. */
    chat_caller who = {.user = cmd->admin, .op = 1};
    for (int round = 0; round < 100000; round++) {
        mqstore_conv_list l;
        if ((e = mqstore_user_convs(cmd->m->store, user, NULL, 100, &l))) {
            free(j);
            return ctl_store_error(cmd, "cannot list the user's conversations", e);
        }
        size_t n = l.n;
        for (size_t i = 0; i < l.n; i++) {
            chat_written w;
            chat_status st;
            if (chat_member_expel(&cmd->m->dev.chat, &who, l.conv[i], user, &w, &st)) {
                mqstore_conv_list_free(&l);
                free(j);
                return ctl_error(cmd, "removing %s from %s: %s: %s", user, l.conv[i],
                                 ctl_code_name(st.code), st.msg);
            }
            ctl_deliver(cmd, &w);
            chat_written_clear(&w);
            j->conversations++;
        }
        mqstore_conv_list_free(&l);
        if (n == 0) break;
    }
    /* 3. The rest on the worker: a pass over every stored message. */
    cmd->job = j;
    cmd->work = erase_work;
    cmd->done = erase_done;
    return ctl_queue(cmd);
}

const ctl_def ctl_user_cmds[] = {
    {"listDevices", list_devices, "user,after,limit"},
    {"disconnectDevice", disconnect_device, "user,device"},
    {"revokeTokens", revoke_tokens, "user,beforeMs,disconnect"},
    {"eraseUser", erase_user, "user"},
    {NULL, NULL, NULL},
};
