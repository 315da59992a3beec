/* plugin — the mqchat plugin for Mosquitto 2.0 (plugin API v5): its three
 * exported entry points. Loaded with `plugin /path/mqchat.so` and
 * plugin_opt_* lines (core/config.c). mosquitto_plugin_init parses the
 * options, builds the JWT verifier, the wake facility and the store, and
 * registers the callbacks of broker.h; cleanup undoes it in reverse.
 *
 * mqchat.so exports these three symbols and nothing else (plugin/mqchat.map):
 * the broker loads plugins with RTLD_GLOBAL, so anything else we export
 * could collide with the broker or another plugin. */
#include "broker.h"
#include "control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mqc plugin; /* one instance per broker */

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
    /* The metrics thread reads only the snapshot: it can go first. */
    mqc_metrics_http_stop(m->http);
    m->http = NULL;
    mqc_metrics_free(m->metrics);
    m->metrics = NULL;
    /* Stop the threads first: they may still send wake-ups. The Redis
     * thread before presence (it answers presence's reads), after
     * presence told it the node is going. */
    if (m->pres) presence_shutdown(m->pres);
    /* The control worker may be in a store call: it goes first. */
    mqc_control_free(m->control);
    m->control = NULL;
    /* The push thread uses the store and the wake facility. */
    mqc_push_free(m->push);
    m->push = NULL;
    mqc_redis_free(m->redis);
    m->redis = NULL;
    presence_free(m->pres);
    m->pres = m->dev.pres = NULL;
    mqstore_free(m->store);
    m->store = NULL;
    dev_free(&m->dev);
    mqc_wake_free(m->wake); /* frees m->durable too */
    m->wake = NULL;
    m->durable = NULL;
    mqjwt_verifier_free(m->jwt);
    m->jwt = NULL;
    mqc_config_free(&m->cfg);
}

static const struct {
    int event;
    MOSQ_FUNC_generic_callback cb;
} callbacks[] = {
    {MOSQ_EVT_BASIC_AUTH, on_basic_auth},
    {MOSQ_EVT_EXT_AUTH_START, on_ext_auth_start},
    {MOSQ_EVT_ACL_CHECK, on_acl_check},
    {MOSQ_EVT_MESSAGE, on_message},
    {MOSQ_EVT_TICK, on_tick},
    {MOSQ_EVT_DISCONNECT, on_disconnect},
};

static int open_store(mqc *m, char *err, size_t errlen)
{
    mqstore_options so;
    mqstore_options_init(&so);
    so.durability = m->cfg.durability;
    so.sync_driver = MQSTORE_SYNC_REQUEST;
    /* The stored form adds the content type, media and framing to the body. */
    so.max_payload = m->cfg.max_body + WIRE_ENVELOPE_SLACK;
    so.max_job = 16384; /* a push job: metadata, a token of up to 4 KiB, a preview */
    so.dedup_retention_ms = m->cfg.dedup_retention_s * 1000;
    so.inbox_retention_ms = m->cfg.inbox_retention_s * 1000;
    so.retention_ms = m->cfg.retention_s * 1000;
    so.retention_count = m->cfg.retention_count;
    so.min_free_bytes = (uint64_t)m->cfg.store_min_free_mb << 20;
    so.on_durable = on_durable;
    so.on_durable_data = m;
    char *msg = NULL;
    if (mqstore_open(m->cfg.store_dir, &so, &m->store, &msg) == MQSTORE_OK) {
        uint64_t floor = mqstore_restore_floor(m->store);
        if (floor)
            mosquitto_log_printf(MOSQ_LOG_NOTICE,
                                 "mqchat: the store was restored from a checkpoint: new inbox "
                                 "seqs start at %llu (docs/OPERATIONS.md, \"Backups\")",
                                 (unsigned long long)floor);
        return 0;
    }
    snprintf(err, errlen, "store %s: %s", m->cfg.store_dir, msg ? msg : "cannot open");
    free(msg);
    return -1;
}

static int open_jwt(mqc *m, char *err, size_t errlen)
{
    mqjwt_config jc = {.hs256_secret = m->cfg.hs256_secret,
                       .hs256_secret_len = m->cfg.hs256_secret_len,
                       .pubkey_pem_path = m->cfg.jwt_public_key_file,
                       .issuer = m->cfg.jwt_issuer,
                       .audience = m->cfg.jwt_audience,
                       .leeway_s = m->cfg.jwt_leeway_s};
    char *msg = NULL;
    if ((m->jwt = mqjwt_verifier_new(&jc, &msg))) return 0;
    snprintf(err, errlen, "JWT configuration: %s", msg ? msg : "invalid");
    free(msg);
    return -1;
}

/* Say at start what the broker will do with logins and topics that are
 * not chat: the answer depends on mqchat's options *and* on what else is
 * configured, which the plugin cannot see. */
static void log_policies(const mqc *m)
{
    static const char *const outside[] = {
        [OUTSIDE_DEFER] = "defer: topics outside %s/ are decided by acl_file or a plugin "
                          "loaded after mqchat (dynamic-security); with neither, mosquitto "
                          "denies them to everyone",
        [OUTSIDE_ALLOW] = "allow: every authenticated client may publish and subscribe to any "
                          "topic outside %s/ (no other ACL is consulted)",
        [OUTSIDE_DENY] = "deny: no client may use any topic outside %s/",
    };
    char buf[400];
    snprintf(buf, sizeof(buf), outside[m->cfg.outside_namespace], m->cfg.topic_prefix);
    mosquitto_log_printf(MOSQ_LOG_INFO, "mqchat: outside_namespace %s", buf);
    mosquitto_log_printf(
        MOSQ_LOG_INFO, "mqchat: foreign_users %s",
        m->cfg.foreign_users == FOREIGN_DEFER
            ? "defer: logins without a JWT are left to password_file or another plugin "
              "(never with a client id of the form <user>:<device>)"
            : "deny: every login needs a JWT");
}

/* Presence: the live state, then the Redis thread that mirrors it. */
static int open_presence(mqc *m, char *err, size_t errlen)
{
    if (!(m->pres = presence_new(&m->dev, NULL))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    mqc_redis_config rc = {.host = m->cfg.redis_host,
                           .port = m->cfg.redis_port,
                           .socket = m->cfg.redis_socket,
                           .password = m->cfg.redis_password,
                           .prefix = m->cfg.redis_prefix,
                           .node = m->cfg.node_id,
                           .timeout_ms = m->cfg.redis_timeout_ms,
                           .node_ttl_s = m->cfg.node_ttl_s,
                           .pushseen = m->cfg.push != 0,
                           .on_up = presence_redis_up,
                           .data = m->pres};
    if (!(m->redis = mqc_redis_new(&rc, m->wake, err, errlen))) return -1;
    presence_attach_redis(m->pres, m->redis);
    m->dev.pres = m->pres;
    mosquitto_log_printf(MOSQ_LOG_INFO,
                         "mqchat: presence on: Redis %s, node %s, keys under %s, liveness every "
                         "%llds (ttl %llds), debounce %lld ms",
                         m->cfg.redis, m->cfg.node_id, m->cfg.redis_prefix,
                         (long long)m->cfg.node_ttl_s / 3, (long long)m->cfg.node_ttl_s,
                         (long long)m->cfg.presence_debounce_ms);
    return 0;
}

/* Push: the thread that drains the outbox to Redis for pushd. */
static int open_push(mqc *m, char *err, size_t errlen)
{
    mqc_push_config pc = {.store = m->store,
                          .wake = m->wake,
                          .host = m->cfg.redis_host,
                          .port = m->cfg.redis_port,
                          .socket = m->cfg.redis_socket,
                          .password = m->cfg.redis_password,
                          .prefix = m->cfg.redis_prefix,
                          .node = m->cfg.node_id,
                          .timeout_ms = m->cfg.redis_timeout_ms,
                          .outbox_max = m->cfg.push_outbox_max,
                          .large_interval_ms = m->cfg.push_large_interval_ms};
    if (!(m->push = mqc_push_new(&pc, err, errlen))) return -1;
    m->dev.chat.push_on = 1;
    m->dev.chat.push_blocked = mqc_push_blocked;
    m->dev.chat.push_data = m->push;
    mosquitto_log_printf(MOSQ_LOG_INFO,
                         "mqchat: push on: jobs to %spush (previews %s, outbox max %zu, large "
                         "groups every %lld ms)",
                         m->cfg.redis_prefix, m->cfg.push_preview ? "on" : "off",
                         m->cfg.push_outbox_max, (long long)m->cfg.push_large_interval_ms);
    return 0;
}

/* Metrics over HTTP: the snapshot the thread reads (filled once now, so
 * that a first scrape shows real values), then the thread. */
static int open_metrics(mqc *m, char *err, size_t errlen)
{
    if (!(m->metrics = mqc_metrics_new())) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    mqc_snapshot s;
    metrics_fill(m, &s);
    mqc_metrics_set(m->metrics, &s);
    char msg[256];
    if (!(m->http = mqc_metrics_http_start(m->metrics, m->cfg.metrics_http_bind,
                                           (int)m->cfg.metrics_http_port, msg, sizeof(msg)))) {
        snprintf(err, errlen, "plugin_opt_metrics_http_port / _bind: %s", msg);
        return -1;
    }
    return 0;
}

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
    /* The wake facility before the store: the syncer may call on_durable
     * as soon as the store is open. */
    if (!(m->wake = mqc_wake_new(MQC_WAKE_SIGNAL_OFFSET, err, sizeof(err))) ||
        !(m->durable = mqc_async_new(m->wake, on_durable_main, m))) {
        if (m->wake) snprintf(err, sizeof(err), "out of memory");
        teardown(m);
        return fail(err);
    }
    dev_init(&m->dev, NULL, &m->cfg);
    if (open_jwt(m, err, sizeof(err)) || open_store(m, err, sizeof(err))) {
        teardown(m);
        return fail(err);
    }
    m->dev.store = m->dev.chat.store = m->store;
    if (m->cfg.redis &&
        (open_presence(m, err, sizeof(err)) || (m->cfg.push && open_push(m, err, sizeof(err))))) {
        teardown(m);
        return fail(err);
    }
    if (!(m->control = mqc_control_new(m, err, sizeof(err)))) {
        teardown(m);
        return fail(err);
    }
    if (m->cfg.metrics_http_port && open_metrics(m, err, sizeof(err))) {
        teardown(m);
        return fail(err);
    }
    for (size_t i = 0; i < sizeof(callbacks) / sizeof(callbacks[0]); i++)
        if (mosquitto_callback_register(identifier, callbacks[i].event, callbacks[i].cb, NULL, m) !=
            MOSQ_ERR_SUCCESS) {
            teardown(m);
            return fail("cannot register callbacks");
        }
    /* The operator API: one topic, exact match (docs/MOSQUITTO.md, "$CONTROL"). */
    if (mosquitto_callback_register(identifier, MOSQ_EVT_CONTROL, mqc_control_on_event,
                                    MQC_CONTROL_TOPIC, m) != MOSQ_ERR_SUCCESS) {
        teardown(m);
        return fail("cannot register " MQC_CONTROL_TOPIC " (another plugin owns it?)");
    }
    *userdata = m;
    log_policies(m);
    if (m->http)
        mosquitto_log_printf(MOSQ_LOG_INFO, "mqchat: metrics: GET /metrics on %s port %d",
                             m->cfg.metrics_http_bind, mqc_metrics_http_port(m->http));
    if (m->cfg.sys_interval_s)
        mosquitto_log_printf(MOSQ_LOG_INFO, "mqchat: metrics: " MQC_SYS_PREFIX "# every %lld s",
                             (long long)m->cfg.sys_interval_s);
    if (m->cfg.n_admins)
        mosquitto_log_printf(MOSQ_LOG_INFO, "mqchat: %s for admin_users %s, backups in %s",
                             MQC_CONTROL_TOPIC, m->cfg.admin_users, m->cfg.backup_dir);
    else
        mosquitto_log_printf(MOSQ_LOG_INFO, "mqchat: %s closed (no admin_users)",
                             MQC_CONTROL_TOPIC);
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
    mosquitto_callback_unregister(m->id, MOSQ_EVT_CONTROL, mqc_control_on_event, MQC_CONTROL_TOPIC);
    teardown(m);
    return MOSQ_ERR_SUCCESS;
}
