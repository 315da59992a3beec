/* platform.h — the few OS calls the SDK needs that differ between Linux,
 * Android and Darwin (iOS, macOS), behind one small interface.
 *
 *   random bytes   getrandom() on Linux; arc4random_buf() elsewhere (Darwin,
 *                  the BSDs, Android's bionic at every API level, glibc 2.36+)
 *   wake fd        an eventfd on Linux and Android; a pipe elsewhere. It is
 *                  level-triggered: readable from mqc_wake_set() until
 *                  mqc_wake_clear(), however many times it was set.
 *   timed waits    the condition variable waits on CLOCK_MONOTONIC where
 *                  pthread_condattr_setclock exists; on Darwin with
 *                  pthread_cond_timedwait_relative_np (also immune to clock
 *                  changes); in the portable build on CLOCK_REALTIME.
 *
 * Building with -DMQCHAT_PORTABLE (CMake: MQCHAT_SDK_PORTABLE=ON) takes the
 * non-Linux branch of each on Linux too: CI runs the whole test suite of
 * one build that way, so the code iOS compiles is the code that is tested. */
#ifndef MQC_PLATFORM_H
#define MQC_PLATFORM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Fills buf with n random bytes from the OS. Returns 0 or -1. */
int mqc_random(void *buf, size_t n);

typedef struct mqc_wake {
    int rfd, wfd; /* the same fd for an eventfd; -1: not open */
    int set;
} mqc_wake;

/* Opens w (non-blocking, close-on-exec). Returns 0 or -1. */
int mqc_wake_open(mqc_wake *w);
void mqc_wake_close(mqc_wake *w);
/* Makes w->rfd readable (a syscall only when it was not). */
void mqc_wake_set(mqc_wake *w);
/* Makes w->rfd unreadable again. */
void mqc_wake_clear(mqc_wake *w);

/* Initializes a condition variable for mqc_cond_wait_ms. Returns 0 or an errno. */
int mqc_cond_init(pthread_cond_t *cond);
/* Waits on cond (mu held) for at most ms milliseconds or a signal. */
void mqc_cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t ms);

#endif
