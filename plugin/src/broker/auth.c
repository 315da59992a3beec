/* auth — a connection's life as the plugin sees it. BASIC_AUTH verifies
 * the JWT in the password, binds username and client id to the token's
 * user and device, and registers the connection with the device layer;
 * DISCONNECT (which also fires for connects that failed, and again for an
 * offline persistent session) forgets it. A client id of the chat form
 * "<user>:<device>" is refused to every login but that device's JWT, so
 * no other account can take a device's session over. */
#include "broker.h"

#include <time.h>

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

/* "mqtt5", "mqtt311", "ws-mqtt5", ... for the session registry. */
static const char *transport(const struct mosquitto *client)
{
    int ws = mosquitto_client_protocol(client) == mp_websockets;
    switch (mosquitto_client_protocol_version(client)) {
    case 5:
        return ws ? "ws-mqtt5" : "mqtt5";
    case 4:
        return ws ? "ws-mqtt311" : "mqtt311";
    default:
        return ws ? "ws-mqtt31" : "mqtt31";
    }
}

/* Log a refused connection (bounded per interval: device/refusals.c). */
static int refuse(mqc *m, struct mosquitto *client, const char *who, const char *why)
{
    if (refusal_connect(&m->dev))
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqchat: refused %s from %s: %s", who,
                             mosquitto_client_address(client), why);
    return MOSQ_ERR_AUTH;
}

int on_basic_auth(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_basic_auth *ev = event_data;
    const char *client_id = mosquitto_client_id(ev->client);
    const char *who =
        ev->username && mqc_id_valid(MQC_ID_USER, ev->username) ? ev->username : "(invalid)";
    int defer = m->cfg.foreign_users == FOREIGN_DEFER;
    if (!ev->username || !ev->password || !looks_like_jwt(ev->password)) {
        /* A chat client id ("<user>:<device>") belongs to that device's JWT
         * login only: whatever else would accept this login (a password
         * file, dynamic-security), taking the id over would disconnect the
         * real device (mosquitto's session takeover). */
        if (mqc_client_id_is_chat(client_id))
            return refuse(m, ev->client, who,
                          "a client id of the form <user>:<device> needs that device's JWT");
        if (defer) return MOSQ_ERR_PLUGIN_DEFER;
        return refuse(m, ev->client, who, "password is not a JWT");
    }
    mqjwt_claims claims;
    char err[256];
    int rc = mqjwt_verify(m->jwt, ev->password, (int64_t)time(NULL), &claims, err, sizeof(err));
    if (rc == MQJWT_OK)
        rc = mqjwt_check_identity(&claims, ev->username, client_id, err, sizeof(err));
    if (rc != MQJWT_OK) return refuse(m, ev->client, who, err);
    /* An operator revoked the user's tokens issued before a time
     * (revokeTokens, eraseUser): a token without iat cannot show it is
     * newer. iat is in seconds: a token issued in the second of the
     * revocation is refused too (the revocation must hold; the client
     * gets a new token a second later). */
    int64_t revoked = 0;
    if (mqstore_user_revoke_get(m->store, claims.sub, &revoked) == MQSTORE_OK && revoked &&
        (!claims.has_iat || claims.iat <= revoked / 1000))
        return refuse(m, ev->client, who, "token revoked (issued before the user's revocation)");
    /* conn_add replaces an entry this connection already has; presence
     * must let go of it first (it holds watchers of that entry). */
    conn *old = conn_find(&m->dev, ev->client);
    if (old && m->pres) presence_disconnect(m->pres, old);
    conn *c = conn_add(&m->dev, ev->client, claims.sub, claims.did);
    if (!c) return MOSQ_ERR_NOMEM;
    if (m->pres) presence_connect(m->pres, c, transport(ev->client));
    /* From now on the device's cursor holds inbox trimming back. A store
     * error here only delays that; it is no reason to refuse the device. */
    mqstore_err e = mqstore_device_touch(m->store, claims.sub, claims.did);
    if (e)
        mosquitto_log_printf(MOSQ_LOG_WARNING, "mqchat: cannot record device %s:%s: %s", claims.sub,
                             claims.did, mqstore_strerror(e));
    return MOSQ_ERR_SUCCESS;
}

/* Extended (MQTT 5 AUTH) logins skip BASIC_AUTH, so they cannot prove a
 * chat identity: refuse them a chat client id, defer everything else. */
int on_ext_auth_start(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_extended_auth *ev = event_data;
    if (!mqc_client_id_is_chat(mosquitto_client_id(ev->client))) return MOSQ_ERR_PLUGIN_DEFER;
    return refuse(m, ev->client, "(extended auth)",
                  "a client id of the form <user>:<device> needs that device's JWT");
}

int on_disconnect(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_disconnect *ev = event_data;
    conn *c = conn_find(&m->dev, ev->client);
    if (c && m->pres) presence_disconnect(m->pres, c);
    conn_remove(&m->dev, ev->client);
    return MOSQ_ERR_SUCCESS;
}
