/* testutil — what the store's tests and its benchmark share: a fresh
 * temporary directory, removing a directory tree, a monotonic clock and a
 * sleep. Used by the store's unit tests (through store_fx.h),
 * tests/crash/crash_store.c and bench/store_bench.c (target
 * mqchat_testutil). */
#ifndef MQCHAT_TESTUTIL_H
#define MQCHAT_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Nanoseconds in a second, for tu_now_ns() arithmetic. */
#define TU_SEC_NS UINT64_C(1000000000)

/* Create a fresh directory "<parent>/<prefix>XXXXXX" (parent NULL: /tmp)
 * and put its path in buf. Returns 0, or -1 with errno set (ENAMETOOLONG
 * when the path does not fit in cap bytes); buf then holds the template. */
int tu_mkdtemp(char *buf, size_t cap, const char *parent, const char *prefix);

/* Remove dir and everything below it, as much as can be removed; symbolic
 * links are removed, never followed. */
void tu_rm_rf(const char *dir);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t tu_now_ns(void);

/* Sleep ms milliseconds (a signal may cut it short). */
void tu_sleep_ms(long ms);

#endif
