/* presence — who is connected to this broker, who is online, who watches
 * whom (docs/PROTOCOL.md, "Presence"; docs/ARCHITECTURE.md, "Presence").
 *
 * The broker's connections are the truth for the users connected here:
 * BASIC_AUTH (presence_connect) and DISCONNECT (presence_disconnect) move
 * per-user counts in memory. A user's first connection makes them online
 * at once; when the last one leaves they become offline only after the
 * debounce, so a quick reconnect shows watchers nothing. Only those
 * transitions reach Redis (redis/redis.h), queued and sent once per pass:
 * keepalives never do.
 *
 * Watchers: a device's PresenceWatch names the users it has on screen; the
 * answer holds their state now (from memory for users connected here,
 * from Redis for the others), and every later transition of a watched
 * user connected here reaches the watching device at once.
 *
 * Threads: main thread only. */
#ifndef MQC_PRESENCE_H
#define MQC_PRESENCE_H

#include <stdint.h>

#include "device.h"
#include "redis.h"
#include "rules.h"

typedef struct presence presence;

/* r may be NULL (no Redis: users not connected here read UNKNOWN); it can
 * be attached later (the Redis thread's on_up needs the presence first). */
presence *presence_new(dev *d, mqc_redis *r);
void presence_attach_redis(presence *p, mqc_redis *r);
/* After mqc_redis_free (no read answer may arrive any more) and before
 * the connections are dropped. */
void presence_free(presence *p);

/* A connection of c->user was admitted / went away. transport: "mqtt311",
 * "mqtt5", "ws-mqtt5", ... */
void presence_connect(presence *p, conn *c, const char *transport);
void presence_disconnect(presence *p, conn *c);

/* The device's requests; each answers the device itself (a watch answer
 * may come a little later, once Redis answered). */
void presence_watch(presence *p, conn *c, const char *request_id,
                    const Mqchat__V1__PresenceWatch *w);
void presence_settings(presence *p, conn *c, const char *request_id,
                       const Mqchat__V1__PresenceSettings *ps);

/* TICK: debounced offline transitions whose time came (now: mqc_mono_ms()). */
void presence_tick(presence *p, int64_t now_ms);

/* The broker stops (cleanup): mark this node's users offline in Redis and
 * drop its liveness key; call before mqc_redis_free. */
void presence_shutdown(presence *p);

/* Redis is back: rewrite this node's state there. */
void presence_redis_up(void *p);

#endif
