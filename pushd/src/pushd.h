/* pushd — the core: every job's way from the stream to a final answer.
 *
 *   stream ──▶ SEEN ──MGET pushseen──▶ QUEUED ──▶ INFLIGHT ──answer──┐
 *                ▲        │ (synced: skip)        (per provider,     │
 *                │        ▼                        concurrency)      │
 *              RETRY ◀── ... ◀──── 429 / 5xx / no answer ◀───────────┤
 *              (backoff)          invalid token ──▶ FINAL (feedback) ┤
 *                                 refused / too many ──▶ FINAL (dead)┤
 *                                 accepted ─────────────────▶ ACK ◀──┘
 *
 * A job is acknowledged (XACK) only after the provider accepted it, or
 * after its feedback or dead-letter entry is written. Until then it stays
 * pending in the group, so nothing is lost when pushd or Redis dies: a
 * Redis error puts the work back on its list until the connection is up.
 * Jobs held long (retries, queues) have their idle time reset in Redis
 * (XCLAIM JUSTID) every claim_min_idle/3, so no other pushd claims them;
 * one that another consumer took meanwhile is let go.
 *
 * All Redis writes are issued from pd_core_flush, after each loop turn, so
 * everything a turn produced goes out as one pipeline: one MGET per batch,
 * one XACK for all acknowledgements. */
#ifndef PD_PUSHD_H
#define PD_PUSHD_H

#include <stdint.h>

#include "apns.h"
#include "config.h"
#include "http.h"
#include "loop.h"
#include "oauth.h"

typedef struct pd_core pd_core;

/* apns / oauth may be NULL (that provider is not configured). */
pd_core *pd_core_new(pd_loop *l, const pd_config *cfg, pd_http *http, pd_apns *apns,
                     pd_oauth *oauth);
/* Abandons what is left (pending jobs stay pending in Redis). Call after
 * pd_http_free, whose aborted callbacks still reach the core. */
void pd_core_free(pd_core *c);

/* After each loop turn: send what waits (Redis writes, HTTP requests). */
void pd_core_flush(pd_core *c);

/* Stop taking jobs; finish requests in flight until deadline_ms
 * (monotonic); leave the rest pending. */
void pd_core_stop(pd_core *c, int64_t deadline_ms);
/* 1 once stopped and done (or past the deadline). */
int pd_core_finished(pd_core *c);

/* Copy the gauges into pd_stat (before writing the stats file). */
void pd_core_gauges(pd_core *c);

#endif
