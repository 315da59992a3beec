/* retry — when to try a failed push again, and the queue of jobs waiting
 * for that moment.
 *
 * Backoff is exponential with full jitter: before retry n (n = 1 after the
 * first failure) wait a uniformly random time in [0, min(max, base * 2^(n-1))],
 * so many jobs failing together (a dropped connection) spread out. A
 * provider's Retry-After (seconds, or an HTTP date) is a floor: the job
 * waits at least that long, capped by retry_after_max.
 *
 * The heap is a binary min-heap of jobs by due_ms; each job knows its index
 * (heap_idx) so it can be taken out from the middle. */
#ifndef PD_RETRY_H
#define PD_RETRY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "job.h"

/* Jitter source: a 48-bit LCG (erand48), seeded from the clock and pid. */
typedef struct pd_rng {
    unsigned short x[3];
} pd_rng;
void pd_rng_seed(pd_rng *r, uint64_t seed);
double pd_rng_next(pd_rng *r); /* [0, 1) */

/* Full-jitter delay before retry `retry` (>= 1); u in [0, 1). */
int64_t pd_backoff_ms(int retry, int64_t base_ms, int64_t max_ms, double u);
/* The delay: backoff, raised to retry_after_ms (if >= 0) capped by cap_ms. */
int64_t pd_retry_delay_ms(int retry, int64_t base_ms, int64_t max_ms, double u,
                          int64_t retry_after_ms, int64_t cap_ms);

/* A Retry-After header value -> ms from now (>= 0); -1 if absent/malformed.
 * Seconds ("120") or an HTTP date (parsed by curl_getdate), relative to
 * now_s (wall clock, seconds). */
int64_t pd_retry_after_ms(const char *value, time_t now_s);

typedef struct pd_heap {
    pd_job **a;
    size_t n, cap;
} pd_heap;

int pd_heap_push(pd_heap *h, pd_job *j); /* 0, or -1 (OOM) */
pd_job *pd_heap_peek(const pd_heap *h);  /* earliest, or NULL */
pd_job *pd_heap_pop(pd_heap *h);
void pd_heap_remove(pd_heap *h, pd_job *j);
void pd_heap_free(pd_heap *h);

#endif
