/* stats — pushd's counters, written as a Prometheus text file.
 *
 * One process-wide set of counters (pushd is one thread), bumped where
 * things happen, and written every stats_interval to stats_file the way
 * node_exporter's textfile collector wants it: # HELP / # TYPE lines, then
 * samples; the file is written to a temporary name beside it and renamed,
 * so a reader never sees half of it. Failure reasons are label values from
 * providers, so they are cut to [A-Za-z0-9_.] (provider.h) and at most
 * PD_STATS_REASONS distinct ones are kept; later ones count as "other". */
#ifndef PD_STATS_H
#define PD_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"

#define PD_STATS_REASONS 64
#define PD_STATS_BUCKETS 12

typedef struct pd_hist {
    uint64_t buckets[PD_STATS_BUCKETS]; /* cumulative at write time; here per bucket */
    uint64_t count;
    double sum;
} pd_hist;

typedef struct pd_stats {
    uint64_t read, claimed, malformed, acked;
    uint64_t sent[PD_NPLATFORMS], retries[PD_NPLATFORMS], dead[PD_NPLATFORMS + 1];
    uint64_t invalid_tokens[PD_NPLATFORMS], feedback_written;
    uint64_t skipped_seen, skipped_expired;
    uint64_t auth_refreshes[PD_NPLATFORMS];
    uint64_t redis_errors;
    struct {
        int platform;
        char reason[48];
        uint64_t n;
    } failed[PD_STATS_REASONS];
    int nfailed;
    uint64_t failed_other;
    pd_hist send[PD_NPLATFORMS], delay[PD_NPLATFORMS];
    /* gauges, set just before a write */
    uint64_t inflight[PD_NPLATFORMS], queued[PD_NPLATFORMS];
    uint64_t jobs, retry_waiting, redis_up;
    uint64_t oauth_fetches, oauth_failures, apns_tokens;
    int64_t started_wall_ms;
} pd_stats;

extern pd_stats pd_stat;

void pd_stats_failed(int platform, const char *reason);
void pd_stats_observe_send(int platform, double seconds);
void pd_stats_observe_delay(int platform, double seconds);

/* The text (malloc'd, NUL-terminated). */
char *pd_stats_render(const pd_stats *s);
/* Render and write atomically to path. 0, or -1 with errno. */
int pd_stats_write(const pd_stats *s, const char *path);

#endif
