/* broker — the mosquitto-facing layer: the plugin's entry points and its
 * callbacks, nothing else. Each callback turns a broker event into a call
 * on the layers below and returns the broker's answer:
 *
 *   plugin.c    mosquitto_plugin_version/init/cleanup: options, the JWT
 *               verifier, the store, the wake facility, registration
 *   auth.c      BASIC_AUTH (verify the JWT, bind the client id, remember
 *               the connection), EXT_AUTH_START (no chat client ids for
 *               extended auth) and DISCONNECT (forget the connection)
 *   acl.c       ACL_CHECK inside the chat namespace; defer outside it
 *   dispatch.c  MESSAGE: a device's publish to the device layer
 *   tick.c      TICK and the syncer's wake-up: send what became durable,
 *               ask for the pass's fsync, run what worker threads posted;
 *               the metrics snapshot and the $SYS topics
 *
 * Threads: every callback runs on mosquitto's main thread; the only
 * function here called from another thread is tick.c's on_durable (the
 * store's syncer), which only reads an atomic and sends a wake-up. */
#ifndef MQC_BROKER_H
#define MQC_BROKER_H

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "config.h"
#include "device.h"
#include "jwt.h"
#include "mqstore.h"
#include "drain.h"
#include "httpd.h"
#include "metrics.h"
#include "presence.h"
#include "redis.h"
#include "wake.h"

/* The real-time signal the wake facility uses: SIGRTMIN + this. */
#define MQC_WAKE_SIGNAL_OFFSET 4

typedef struct mqc {
    mqc_config cfg;
    mosquitto_plugin_id_t *id;
    mqstore *store;
    mqjwt_verifier *jwt;
    mqc_wake *wake;
    mqc_async *durable; /* sent by the syncer after an fsync */
    dev dev;
    presence *pres;   /* NULL: presence off (no plugin_opt_redis) */
    mqc_redis *redis; /* the Redis thread, with pres */
    mqc_push *push;   /* NULL: push off (no Redis, or push 0) */
    uint64_t push_seen; /* the outbox's last job id at the last TICK */
    /* Metrics (tick.c): the snapshot GET /metrics reads and its thread
     * (NULL: metrics_http_port 0), and what $SYS last showed. */
    mqc_metrics *metrics;
    mqc_metrics_http *http;
    mqc_sys sys;
    int64_t next_snapshot_ms, next_sys_ms;
    struct mqc_control *control; /* the $CONTROL API (control/control.h) */
} mqc;

int on_basic_auth(int event, void *event_data, void *userdata);
int on_ext_auth_start(int event, void *event_data, void *userdata);
int on_disconnect(int event, void *event_data, void *userdata);
int on_acl_check(int event, void *event_data, void *userdata);
int on_message(int event, void *event_data, void *userdata);
int on_tick(int event, void *event_data, void *userdata);
/* The store's on_durable hook (syncer thread). */
void on_durable(void *data, uint64_t ticket);
/* The durable async's callback (main thread). */
void on_durable_main(void *data);
/* Gather every metric into *s (main thread; tick.c). */
void metrics_fill(mqc *m, mqc_snapshot *s);

#endif
