/* auth — a connection's life as the plugin sees it. BASIC_AUTH verifies
 * the JWT in the password, binds username and client id to the token's
 * user and device, and registers the connection with the device layer;
 * DISCONNECT (which also fires for connects that failed, and again for an
 * offline persistent session) forgets it. */
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

int on_basic_auth(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_basic_auth *ev = event_data;
    const char *client_id = mosquitto_client_id(ev->client);
    const char *who =
        ev->username && mqc_id_valid(MQC_ID_USER, ev->username) ? ev->username : "(invalid)";
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
    if (!conn_add(&m->dev, ev->client, claims.sub, claims.did)) return MOSQ_ERR_NOMEM;
    /* From now on the device's cursor holds inbox trimming back. A store
     * error here only delays that; it is no reason to refuse the device. */
    mqstore_err e = mqstore_device_touch(m->store, claims.sub, claims.did);
    if (e)
        mosquitto_log_printf(MOSQ_LOG_WARNING, "mqchat: cannot record device %s:%s: %s", claims.sub,
                             claims.did, mqstore_strerror(e));
    return MOSQ_ERR_SUCCESS;
}

int on_disconnect(int event, void *event_data, void *userdata)
{
    mqc *m = userdata;
    struct mosquitto_evt_disconnect *ev = event_data;
    conn_remove(&m->dev, ev->client);
    return MOSQ_ERR_SUCCESS;
}
