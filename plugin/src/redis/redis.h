/* redis — the plugin's one Redis connection, on its own thread.
 *
 * The main thread never talks to Redis. It queues writes (a session came
 * or went, a user went online or offline) and reads (the presence of some
 * users) here; at the end of an event-loop pass mqc_redis_flush() hands
 * what was queued to the thread at once — writes coalesced over passes for
 * up to 5 ms, so that a connection storm costs a pipeline per few ms, not
 * a round trip per event — and the thread sends it as one pipeline. Read results come back to the
 * main thread through the wake facility (worker/wake.h). The thread also refreshes this node's
 * liveness key every node_ttl_s / 3 — the only steady-state Redis traffic, whatever the number of
 * connected devices.
 *
 * When Redis is unreachable the thread reconnects with exponential backoff
 * and full jitter (100 ms doubling to 30 s), drops queued writes, and
 * answers reads with "unknown". Once connected again it calls on_up on the
 * main thread, which answers with mqc_redis_rebuild(): the node's sessions
 * and online users as they are now, which replace what Redis holds for
 * this node (and users that left meanwhile are marked offline).
 *
 * Keys: docs/OPERATIONS.md, "Presence and Redis".
 *
 * Threads: mqc_redis_up() and mqc_redis_connects() from any thread; everything else on the main
 * thread; callbacks (on_up, read results) run on the main thread. */
#ifndef MQC_REDIS_H
#define MQC_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "wake.h"

typedef struct mqc_redis mqc_redis;

typedef struct mqc_redis_config {
    const char *host; /* TCP, or NULL with socket set */
    int port;
    const char *socket;
    const char *password; /* NULL: no AUTH */
    const char *prefix;   /* of every key, e.g. "mqchat:" */
    const char *node;     /* this broker's node id */
    int64_t timeout_ms;
    int64_t node_ttl_s;
    int pushseen; /* also write {prefix}pushseen:USER:DEVICE at each session change */
    void (*on_up)(void *data); /* main thread, after each (re)connect */
    void *data;
} mqc_redis_config;

/* One user's presence as Redis has it. */
typedef enum { MQC_PRES_UNKNOWN = 0, MQC_PRES_ONLINE, MQC_PRES_OFFLINE } mqc_pres_state;
typedef struct mqc_pres {
    mqc_pres_state state;
    int64_t last_seen_ms; /* OFFLINE: when the user left (0 if not known) */
} mqc_pres;

/* Results of mqc_redis_read, one per user asked, in order. */
typedef void (*mqc_redis_read_cb)(void *data, const mqc_pres *res, size_t n);

mqc_redis *mqc_redis_new(const mqc_redis_config *cfg, mqc_wake *wake, char *err, size_t errlen);
/* Stop the thread: what was flushed before is still sent if Redis is
 * there (within about one timeout); then free everything left; read
 * callbacks not yet run are dropped. */
void mqc_redis_free(mqc_redis *r);

/* 1 while the thread holds a working connection. Any thread. */
int mqc_redis_up(const mqc_redis *r);
/* Successful connects so far (the first and every reconnect). Any thread. */
uint64_t mqc_redis_connects(const mqc_redis *r);

/* Queue writes; they leave at the next mqc_redis_flush. */
void mqc_redis_session(mqc_redis *r, const char *user, const char *device, int present,
                       int64_t connect_ms, const char *transport);
void mqc_redis_presence(mqc_redis *r, const char *user, int online, int64_t ms);

/* Read the presence of n users (copied). cb runs later on the main thread,
 * once, with n results; the reads of users online on a node whose
 * liveness key expired say OFFLINE with that node's last refresh. Returns
 * -1 when Redis is down or memory is short (cb is not called). */
int mqc_redis_read(mqc_redis *r, const char *const *users, size_t n, mqc_redis_read_cb cb,
                   void *data);

/* The node's state now, for on_up: call rebuild_begin, then
 * rebuild_session for every live session and rebuild_online for every
 * online user, then rebuild_end. */
void mqc_redis_rebuild_begin(mqc_redis *r);
void mqc_redis_rebuild_session(mqc_redis *r, const char *user, const char *device,
                               int64_t connect_ms, const char *transport);
void mqc_redis_rebuild_online(mqc_redis *r, const char *user, int64_t since_ms);
void mqc_redis_rebuild_end(mqc_redis *r);

/* A clean stop: the node's liveness key goes now (queue it after the
 * node's last offline transitions, then flush and free). */
void mqc_redis_bye(mqc_redis *r);

/* TICK: hand the queued work to the thread — writes at most every few
 * milliseconds (coalesced over passes), reads and rebuilds at once. */
void mqc_redis_flush(mqc_redis *r);

#endif
