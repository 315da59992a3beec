/* mqc_clock — the two clocks mqchat reads, in milliseconds.
 *
 * Deadlines, intervals and rate limits use the monotonic clock, which no
 * wall-clock step moves; times shown to users or written for other nodes
 * (last seen, a node's last refresh) use the wall clock. */
#ifndef MQC_CLOCK_H
#define MQC_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC, ms: for deadlines and intervals only. */
int64_t mqc_mono_ms(void);
/* CLOCK_REALTIME, ms since the epoch: for times others read. */
int64_t mqc_wall_ms(void);

#endif
