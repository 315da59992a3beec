/* wake — background work for a plugin whose host loop offers no wake-up.
 *
 * Mosquitto 2.0 runs every plugin callback on its one event-loop thread,
 * its broker functions are not thread-safe, and its loop sleeps up to
 * 100 ms in epoll_wait with no way for another thread to end that sleep
 * (docs/MOSQUITTO.md, "The main loop"). Every plugin thread — the store's
 * fsync syncer, a Redis thread, an outbox drainer, an HTTP metrics thread —
 * therefore hands its results to the main thread the same way:
 *
 *   1. it records the result in memory it shares with its main-thread
 *      half (its own queue, an atomic, ...) and calls mqc_async_send(), or
 *      posts a one-shot function with mqc_wake_post();
 *   2. the first such call since the last pass sends the main thread a
 *      real-time signal whose handler does nothing and was installed
 *      without SA_RESTART, so epoll_wait returns EINTR at once;
 *   3. the pass ends with TICK, which calls mqc_wake_run(): every async
 *      that was sent runs its callback once, then every posted function
 *      runs, in the order posted — on the main thread, where broker calls
 *      are allowed.
 *
 * Sends coalesce: many mqc_async_send() calls before the next
 * mqc_wake_run() cost one signal and one callback. Callers never block on
 * the main thread, and the main thread never blocks on them (the post
 * list's mutex is held only to link or unlink).
 *
 * Threads, function by function:
 *   mqc_wake_new, mqc_wake_free, mqc_async_new, mqc_async_free,
 *   mqc_wake_run, mqc_thread_start        main thread only
 *   mqc_async_send, mqc_wake_post,
 *   mqc_wake_kick                         any thread (not signal handlers)
 *
 * Threads started with mqc_thread_start() block every signal, so the wake
 * signal is only ever delivered to the main thread, and a worker is never
 * interrupted by it. */
#ifndef MQC_WAKE_H
#define MQC_WAKE_H

#include <pthread.h>
#include <stddef.h>

typedef struct mqc_wake mqc_wake;
typedef struct mqc_async mqc_async;
typedef void (*mqc_wake_fn)(void *data);

/* Install the wake signal (SIGRTMIN + offset) and remember the calling
 * thread as the main thread. NULL on failure, with a reason in err. */
mqc_wake *mqc_wake_new(int sigrt_offset, char *err, size_t errlen);

/* Free every async and every posted function not yet run (their data is
 * not touched). Every thread that sends or posts must be stopped first. */
void mqc_wake_free(mqc_wake *w);

/* A coalescing wake-up: after mqc_async_send(a), fn(data) runs once on the
 * main thread at the end of the current or next loop pass. */
mqc_async *mqc_async_new(mqc_wake *w, mqc_wake_fn fn, void *data);
/* Not from its own callback. */
void mqc_async_free(mqc_async *a);
void mqc_async_send(mqc_async *a);

/* Run fn(data) once on the main thread at the end of a pass. Returns 0, or
 * -1 when out of memory (then fn is not run). */
int mqc_wake_post(mqc_wake *w, mqc_wake_fn fn, void *data);

/* Wake the main loop without queueing anything (its TICK runs early). The
 * signal is repeated until the main thread runs mqc_wake_run, so a signal
 * that landed outside epoll_wait is not lost; the main thread itself may
 * call it from TICK when work is left for the next pass. */
void mqc_wake_kick(mqc_wake *w);

/* From TICK: run what was sent and posted since the last call. A callback
 * that sends or posts again runs at the next call, not in this one. */
void mqc_wake_run(mqc_wake *w);

/* Start a worker thread with every signal blocked. 0 or an errno value. */
int mqc_thread_start(pthread_t *t, void *(*fn)(void *), void *data);

/* The number of wake-ups (first signals) sent so far, and of signals the
 * kicker repeated because the main thread had not run yet (for
 * statistics and tests). */
unsigned long mqc_wake_signals(const mqc_wake *w);
unsigned long mqc_wake_resends(const mqc_wake *w);

#endif
