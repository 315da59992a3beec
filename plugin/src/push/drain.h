/* drain — the plugin's push thread: moves push jobs from the store's
 * outbox to the Redis Stream pushd reads, expands large conversations'
 * jobs (collapsed per member device), and removes the tokens pushd reports
 * invalid. See drain.c for the idea and docs/PUSH.md for the streams.
 *
 * Threads: mqc_push_new/free on the main thread; mqc_push_kick,
 * mqc_push_blocked and mqc_push_stats_get from any thread. */
#ifndef MQC_PUSH_DRAIN_H
#define MQC_PUSH_DRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "mqstore.h"
#include "wake.h"

typedef struct mqc_push mqc_push;

typedef struct mqc_push_config {
    mqstore *store;
    mqc_wake *wake;   /* for log lines, which only the main thread may write */
    const char *host; /* TCP, or NULL with socket set */
    int port;
    const char *socket;
    const char *password; /* NULL: no AUTH */
    const char *prefix;   /* of every key and stream, e.g. "mqchat:" */
    const char *node;     /* this broker's node id: job ids, feedback consumer */
    int64_t timeout_ms;
    uint64_t outbox_max;       /* jobs waiting before mqc_push_blocked says 1 */
    int64_t large_interval_ms; /* a held large-conversation job is expanded after this */
} mqc_push_config;

typedef struct mqc_push_stats {
    int up;             /* connected to Redis */
    uint64_t sent;      /* device jobs handed to Redis */
    uint64_t expanded;  /* device jobs made from large conversations' jobs */
    uint64_t collapsed; /* large-conversation pushes skipped: one still pending */
    uint64_t removed;   /* tokens removed after pushd's feedback */
    uint64_t invalid;   /* outbox jobs that did not parse (dropped) */
    uint64_t waiting;   /* jobs in the outbox now */
    uint64_t connects;  /* successful connects to Redis (the first and every reconnect) */
} mqc_push_stats;

mqc_push *mqc_push_new(const mqc_push_config *cfg, char *err, size_t errlen);
/* Stop the thread (after one last drain if Redis is there) and free. */
void mqc_push_free(mqc_push *p);
/* Jobs were written: drain now rather than at the next poll. */
void mqc_push_kick(mqc_push *p);
/* 1 while the outbox holds push_outbox_max jobs or more (a `chat`
 * push_blocked callback: data is the mqc_push). */
int mqc_push_blocked(void *data);
void mqc_push_stats_get(mqc_push *p, mqc_push_stats *out);

#endif
