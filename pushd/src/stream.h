/* stream — the Redis side of pushd (docs/PUSH.md): the consumer group on
 * {prefix}push, reading and claiming jobs, the pushseen lookups, and the
 * writes that end a job (XACK, feedback, dead letter).
 *
 * Two connections (rconn.c): the reader only runs XGROUP CREATE and the
 * blocking XREADGROUP, so a BLOCK never delays anything else; the writer
 * runs everything else, pipelined. Reading starts with this consumer's own
 * pending entries (id 0, for a restart under the same consumer name), then
 * new ones (">"). Every claim_interval, XAUTOCLAIM takes entries idle for
 * claim_min_idle from any consumer (a crashed pushd), cursor by cursor.
 * The owner says how many more jobs it can take (pd_stream_want); reading
 * and claiming stop at zero. Entries that no longer exist (XDEL'd while
 * pending) are acknowledged here; all others become jobs for on_jobs. */
#ifndef PD_STREAM_H
#define PD_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "job.h"
#include "loop.h"

typedef struct pd_stream pd_stream;

typedef struct pd_stream_cbs {
    /* New jobs (ownership passes); claimed = from XAUTOCLAIM. */
    void (*on_jobs)(void *data, pd_job **jobs, size_t n, int claimed);
    /* The writer connection is up again: resend what waited. */
    void (*on_writer_up)(void *data);
    /* How many more jobs the owner takes now. */
    size_t (*want)(void *data);
    void *data;
} pd_stream_cbs;

/* A writer command's result: ok = 1 (done), 0 (Redis refused it: reply
 * holds the error), -1 (connection lost: unknown, try again). */
typedef void (*pd_stream_cb)(void *data, int ok, redisReply *reply);

pd_stream *pd_stream_new(pd_loop *l, const pd_config *cfg, const pd_stream_cbs *cbs);
void pd_stream_free(pd_stream *s);

/* Read or claim now if there is room (call when want() grew). */
void pd_stream_poke(pd_stream *s);
/* Stop reading and claiming for good (shutdown); the writer stays. */
void pd_stream_stop_reading(pd_stream *s);

int pd_stream_writer_up(const pd_stream *s);
size_t pd_stream_writer_pending(const pd_stream *s);

/* All return 0, or -1 when the writer is down (cb will not run). */
/* MGET {prefix}pushseen:{user}:{device} for each job; reply: an array. */
int pd_stream_seen(pd_stream *s, pd_job *const *jobs, size_t n, pd_stream_cb cb, void *data);
/* XACK (and XDEL when delete_acked) of the entries. */
int pd_stream_ack(pd_stream *s, const char *const *ids, size_t n, pd_stream_cb cb, void *data);
/* XADD {prefix}push:feedback: platform, token, user, device, reason, ts. */
int pd_stream_feedback(pd_stream *s, const pd_job *j, const char *reason, int64_t ts_ms,
                       pd_stream_cb cb, void *data);
/* XADD {prefix}push:dead: the job's fields + reason, attempts, status, entry. */
int pd_stream_dead(pd_stream *s, const pd_job *j, const char *reason, pd_stream_cb cb, void *data);
/* XCLAIM ... JUSTID to this consumer: resets the entries' idle time so no
 * other pushd claims jobs this one still works on. Only entries idle at
 * least min_idle_ms are taken (not one another consumer just claimed);
 * reply: the array of ids kept. */
int pd_stream_touch(pd_stream *s, const char *const *ids, size_t n, int64_t min_idle_ms,
                    pd_stream_cb cb, void *data);
/* At exit: delete this consumer from the group if nothing is pending on it. */
int pd_stream_forget_consumer(pd_stream *s, pd_stream_cb cb, void *data);

#endif
