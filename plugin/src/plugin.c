/* plugin — the mqchat plugin for Mosquitto 2.0 (plugin API v5).
 *
 * Loaded with `plugin /path/mqchat.so` and plugin_opt_* lines (config.c).
 * It registers five callbacks, all of which run on the broker's main
 * thread:
 *
 *   BASIC_AUTH  verify the JWT password, bind username and client id to the
 *               token's user and device, remember the connection (conn.c)
 *   ACL_CHECK   decide everything inside the chat namespace (topics.h);
 *               defer everything outside it to the broker's other
 *               mechanisms (password/ACL files, dynamic-security)
 *   MESSAGE     dispatch device publishes: send, req, receipt, typing
 *   TICK        send the ACKs and deliveries whose writes became durable
 *   DISCONNECT  forget the connection
 *
 * Waking the loop: mosquitto's loop sleeps in epoll_wait for up to 100 ms
 * and offers no way to wake it from another thread. When the store's
 * syncer finishes an fsync while publishes are waiting, it sends the main
 * thread a real-time signal with a no-op handler installed without
 * SA_RESTART: epoll_wait returns EINTR and the pass ends with TICK, which
 * drains the queue (MOSQUITTO-2.0-FACTS.md, "The main loop").
 */
#include "plugin.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static mqc plugin; /* one instance per broker */

static void wake_handler(int sig)
{
    (void)sig;
}

/* Syncer thread: only atomics and pthread_kill here. */
static void on_durable(void *data, uint64_t ticket)
{
    mqc *m = data;
    (void)ticket;
    if (atomic_load(&m->waiting)) pthread_kill(m->main_thread, m->wake_signal);
}

static int looks_like_jwt(const char *s)
{
    int dots = 0;
    for (; *s; s++) {
        if (*s == '.')
            dots++;
        else if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                   (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
            return 0;
    }
    return dots == 2;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_basic_auth *ev = event_data;
    const char *client_id = mosquitto_client_id(ev->client);
    const char *who = ev->username && mqc_id_valid(MQC_ID_USER, ev->username) ? ev->username : "(invalid)";
    int defer = m->cfg.foreign_users == FOREIGN_DEFER;
    if (!ev->username || !ev->password || !looks_like_jwt(ev->password)) {
        if (defer) return MOSQ_ERR_PLUGIN_DEFER;
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqchat: refused %s from %s: password is not a JWT",
                             who, mosquitto_client_address(ev->client));
        return MOSQ_ERR_AUTH;
    }
    mqjwt_claims claims;
    char err[256];
    int rc = mqjwt_verify(m->jwt, ev->password, (int64_t)time(NULL), &claims, err, sizeof(err));
    if (rc == MQJWT_OK)
        rc = mqjwt_check_identity(&claims, ev->username, client_id, err, sizeof(err));
    if (rc != MQJWT_OK) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqchat: refused %s from %s: %s", who,
                             mosquitto_client_address(ev->client), err);
        return MOSQ_ERR_AUTH;
    }
    if (!conn_add(m, ev->client, claims.sub, claims.did)) return MOSQ_ERR_NOMEM;
    /* From now on the device's cursor holds inbox trimming back. A store
     * error here only delays that; it is no reason to refuse the device. */
    mqstore_err e = mqstore_device_touch(m->store, claims.sub, claims.did);
    if (e)
        mosquitto_log_printf(MOSQ_LOG_WARNING, "mqchat: cannot record device %s:%s: %s", claims.sub,
                             claims.did, mqstore_strerror(e));
    return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_disconnect *ev = event_data;
    conn_remove(userdata, ev->client);
    return MOSQ_ERR_SUCCESS;
}

/* Inside the namespace only our own devices get anything, and only their
 * own topics: publish to their device topics, subscribe to their inbox and
 * device downstream filters, receive inbox and ack/resp. */
static int on_acl_check(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_acl_check *ev = event_data;
    const char *prefix = m->cfg.topic_prefix;
    if (ev->access == MOSQ_ACL_SUBSCRIBE || ev->access == MOSQ_ACL_UNSUBSCRIBE) {
        if (!filter_touches_prefix(prefix, ev->topic)) return MOSQ_ERR_PLUGIN_DEFER;
        conn *c = conn_find(m, ev->client);
        if (ev->access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_SUCCESS;
        if (c && filter_allowed(prefix, ev->topic, c->user, c->device)) return MOSQ_ERR_SUCCESS;
        /* A filter that reaches above the namespace ("#", "+/v1/#", ...) is
         * not ours to refuse: other mechanisms decide it, and READ below
         * keeps chat traffic out of it. */
        topic_info ti;
        topic_parse(prefix, ev->topic, &ti);
        if (ti.kind == TOPIC_OUTSIDE && strncmp(ev->topic, "$share/", 7) != 0 &&
            strncmp(ev->topic, prefix, strlen(prefix)) != 0)
            return MOSQ_ERR_PLUGIN_DEFER;
        return MOSQ_ERR_ACL_DENIED;
    }
    topic_info ti;
    topic_parse(prefix, ev->topic, &ti);
    if (ti.kind == TOPIC_OUTSIDE) return MOSQ_ERR_PLUGIN_DEFER;
    conn *c = conn_find(m, ev->client);
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

static int on_message(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_message *ev = event_data;
    topic_info ti;
    topic_parse(m->cfg.topic_prefix, ev->topic, &ti);
    if (ti.kind == TOPIC_OUTSIDE) return MOSQ_ERR_SUCCESS;
    /* Upstream chat messages are consumed here, never retained. */
    ev->retain = false;
    conn *c = conn_find(m, ev->client);
    if (!c || ti.kind != TOPIC_DEVICE || strcmp(ti.user, c->user) != 0 ||
        strcmp(ti.device, c->device) != 0)
        return MOSQ_ERR_ACL_DENIED; /* the WRITE check already refused these */
    switch (ti.leaf) {
    case LEAF_SEND:
        return handle_send(m, c, ev->payload, ev->payloadlen);
    case LEAF_REQ:
        return handle_request(m, c, ev->payload, ev->payloadlen);
    case LEAF_RECEIPT:
        return handle_receipt(m, c, ev->payload, ev->payloadlen);
    case LEAF_TYPING:
        return handle_typing(m, c, ev->payload, ev->payloadlen);
    default:
        reply_error(m, c, NULL, EC(BAD_TOPIC),
                    "unknown topic: publish to send, req, receipt or typing");
        return MOSQ_ERR_ACL_DENIED;
    }
}

/* End of an event-loop pass: send what became durable, and have the
 * syncer fsync everything this pass wrote (sync mode) — one fsync per pass
 * at most, however many messages the pass handled. */
static int on_tick(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    out_drain(m);
    mqstore_sync_request(m->store);
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == 5) return 5;
    return -1;
}

static int fail(const char *msg)
{
    mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: %s", msg);
    fprintf(stderr, "mqchat: %s\n", msg);
    return MOSQ_ERR_INVAL;
}

static void teardown(mqc *m)
{
    /* Stop the syncer first: it may signal the main thread. */
    mqstore_free(m->store);
    m->store = NULL;
    out_free_all(m);
    conn_free_all(m);
    mqjwt_verifier_free(m->jwt);
    m->jwt = NULL;
    mqc_config_free(&m->cfg);
}

static const struct {
    int event;
    MOSQ_FUNC_generic_callback cb;
} callbacks[] = {
    {MOSQ_EVT_BASIC_AUTH, on_basic_auth}, {MOSQ_EVT_ACL_CHECK, on_acl_check},
    {MOSQ_EVT_MESSAGE, on_message},       {MOSQ_EVT_TICK, on_tick},
    {MOSQ_EVT_DISCONNECT, on_disconnect},
};

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *opts, int opt_count)
{
    mqc *m = &plugin;
    memset(m, 0, sizeof(*m));
    char err[512];
    if (mqc_config_parse(&m->cfg, opts, opt_count, err, sizeof(err))) {
        mqc_config_free(&m->cfg);
        return fail(err);
    }
    m->id = identifier;
    m->main_thread = pthread_self();
    m->wake_signal = SIGRTMIN + 4;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = wake_handler; /* no SA_RESTART: epoll_wait must see EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(m->wake_signal, &sa, NULL);

    mqjwt_config jc = {.hs256_secret = m->cfg.hs256_secret,
                       .hs256_secret_len = m->cfg.hs256_secret_len,
                       .pubkey_pem_path = m->cfg.jwt_public_key_file,
                       .issuer = m->cfg.jwt_issuer,
                       .audience = m->cfg.jwt_audience,
                       .leeway_s = m->cfg.jwt_leeway_s};
    char *msg = NULL;
    m->jwt = mqjwt_verifier_new(&jc, &msg);
    if (!m->jwt) {
        snprintf(err, sizeof(err), "JWT configuration: %s", msg ? msg : "invalid");
        free(msg);
        teardown(m);
        return fail(err);
    }

    mqstore_options so;
    mqstore_options_init(&so);
    so.durability = m->cfg.durability;
    so.sync_driver = MQSTORE_SYNC_REQUEST;
    /* The stored form adds the content type, media and framing to the body. */
    so.max_payload = m->cfg.max_body + WIRE_ENVELOPE_SLACK;
    so.dedup_retention_ms = m->cfg.dedup_retention_s * 1000;
    so.inbox_retention_ms = m->cfg.inbox_retention_s * 1000;
    so.on_durable = on_durable;
    so.on_durable_data = m;
    if (mqstore_open(m->cfg.store_dir, &so, &m->store, &msg) != MQSTORE_OK) {
        snprintf(err, sizeof(err), "store %s: %s", m->cfg.store_dir, msg ? msg : "cannot open");
        free(msg);
        teardown(m);
        return fail(err);
    }
    for (size_t i = 0; i < sizeof(callbacks) / sizeof(callbacks[0]); i++)
        if (mosquitto_callback_register(identifier, callbacks[i].event, callbacks[i].cb, NULL, m) !=
            MOSQ_ERR_SUCCESS) {
            teardown(m);
            return fail("cannot register callbacks");
        }
    *userdata = m;
    mosquitto_log_printf(
        MOSQ_LOG_INFO, "mqchat: store %s (%s durability), topics under %s/, JWT %s%s",
        m->cfg.store_dir, m->cfg.durability == MQSTORE_DURABILITY_SYNC ? "sync" : "os",
        m->cfg.topic_prefix, m->cfg.hs256_secret ? "HS256 " : "",
        m->cfg.jwt_public_key_file ? "public-key" : "");
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
    mqc *m = userdata;
    if (!m) return MOSQ_ERR_SUCCESS;
    for (size_t i = 0; i < sizeof(callbacks) / sizeof(callbacks[0]); i++)
        mosquitto_callback_unregister(m->id, callbacks[i].event, callbacks[i].cb, NULL);
    teardown(m);
    return MOSQ_ERR_SUCCESS;
}
