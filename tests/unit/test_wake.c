/* test_wake — the wake facility (plugin/src/worker/wake.h) with real
 * threads and a real signal: a worker's send or post interrupts a blocking
 * poll() on the main thread (the way it interrupts mosquitto's epoll_wait),
 * sends coalesce, posts run once each and in order, and worker threads
 * never receive the wake signal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wake.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Block in poll() on a pipe nobody writes, like the broker's loop in
 * epoll_wait; returns the ms spent and whether it was interrupted. */
static int64_t sleep_in_poll(int timeout_ms, int *interrupted)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    int64_t t0 = mono_ms();
    int rc = poll(&p, 1, timeout_ms);
    *interrupted = rc < 0 && errno == EINTR;
    close(fds[0]);
    close(fds[1]);
    return mono_ms() - t0;
}

typedef struct counter {
    int calls;
    int order[16];
    int n;
} counter;

static void count(void *data)
{
    ((counter *)data)->calls++;
}

typedef struct post_arg {
    counter *c;
    int value;
} post_arg;

static void record(void *data)
{
    post_arg *a = data;
    a->c->order[a->c->n++] = a->value;
}

typedef struct worker {
    mqc_wake *w;
    mqc_async *a;
    int delay_ms;
    int sends;
    _Atomic int got_signal;
} worker;

static void *worker_main(void *arg)
{
    worker *wk = arg;
    sigset_t blocked;
    pthread_sigmask(SIG_SETMASK, NULL, &blocked);
    /* mqc_thread_start blocked the wake signal in this thread. */
    atomic_store(&wk->got_signal, !sigismember(&blocked, SIGRTMIN + 4));
    struct timespec ts = {0, (long)wk->delay_ms * 1000000L};
    nanosleep(&ts, NULL);
    for (int i = 0; i < wk->sends; i++)
        mqc_async_send(wk->a);
    return NULL;
}

static void test_send_interrupts_poll_and_coalesces(void **state)
{
    (void)state;
    char err[128];
    mqc_wake *w = mqc_wake_new(4, err, sizeof(err));
    assert_non_null(w);
    counter c = {0};
    mqc_async *a = mqc_async_new(w, count, &c);
    assert_non_null(a);
    worker wk = {.w = w, .a = a, .delay_ms = 50, .sends = 100};
    pthread_t t;
    assert_int_equal(mqc_thread_start(&t, worker_main, &wk), 0);
    int interrupted = 0;
    /* Without the wake-up this poll would sleep 5 s. */
    int64_t spent = sleep_in_poll(5000, &interrupted);
    pthread_join(t, NULL);
    assert_true(interrupted);
    assert_true(spent < 4000);
    assert_int_equal(atomic_load(&wk.got_signal), 0);
    /* 100 sends before the run: one signal, one callback. */
    assert_int_equal(mqc_wake_signals(w), 1);
    assert_int_equal(c.calls, 0); /* nothing runs before mqc_wake_run */
    mqc_wake_run(w);
    assert_int_equal(c.calls, 1);
    mqc_wake_run(w);
    assert_int_equal(c.calls, 1); /* not sent again: not run again */
    /* After a run, the next send signals again. */
    mqc_async_send(a);
    mqc_wake_run(w);
    assert_int_equal(c.calls, 2);
    assert_int_equal(mqc_wake_signals(w), 2);
    mqc_wake_free(w);
}

typedef struct poster {
    mqc_wake *w;
    post_arg args[8];
} poster;

static void *poster_main(void *arg)
{
    poster *p = arg;
    for (int i = 0; i < 8; i++)
        if (mqc_wake_post(p->w, record, &p->args[i])) return (void *)1;
    return NULL;
}

static void test_posts_run_once_in_order(void **state)
{
    (void)state;
    char err[128];
    mqc_wake *w = mqc_wake_new(4, err, sizeof(err));
    assert_non_null(w);
    counter c = {0};
    poster p = {.w = w};
    for (int i = 0; i < 8; i++)
        p.args[i] = (post_arg){&c, i + 1};
    pthread_t t;
    assert_int_equal(mqc_thread_start(&t, poster_main, &p), 0);
    void *rc;
    pthread_join(t, &rc);
    assert_null(rc);
    mqc_wake_run(w);
    assert_int_equal(c.n, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(c.order[i], i + 1);
    mqc_wake_run(w);
    assert_int_equal(c.n, 8);
    /* A post never run is freed by mqc_wake_free (ASan checks the leak). */
    assert_int_equal(mqc_wake_post(w, record, &p.args[0]), 0);
    mqc_wake_free(w);
    assert_int_equal(c.n, 8);
}

static void resend(void *data)
{
    worker *wk = data;
    wk->sends++;
    mqc_async_send(wk->a); /* runs at the next mqc_wake_run, not this one */
}

static void test_send_from_callback_runs_next_pass(void **state)
{
    (void)state;
    char err[128];
    mqc_wake *w = mqc_wake_new(4, err, sizeof(err));
    worker wk = {.w = w};
    wk.a = mqc_async_new(w, resend, &wk);
    mqc_async_send(wk.a);
    mqc_wake_run(w);
    assert_int_equal(wk.sends, 1);
    mqc_wake_run(w);
    assert_int_equal(wk.sends, 2);
    mqc_async_free(wk.a);
    mqc_wake_run(w);
    assert_int_equal(wk.sends, 2);
    mqc_wake_free(w);
}

static void test_bad_signal(void **state)
{
    (void)state;
    char err[128] = "";
    assert_null(mqc_wake_new(-1, err, sizeof(err)));
    assert_non_null(strstr(err, "does not exist"));
    assert_null(mqc_wake_new(SIGRTMAX - SIGRTMIN + 1, err, sizeof(err)));
}

/* A kick whose signal lands while the main thread is busy (not in a
 * poll: the signal interrupts nothing) is repeated, so the poll the main
 * thread enters next still ends at once rather than at its timeout; after
 * mqc_wake_run the repeats stop. The main thread kicking itself (TICK:
 * "more work for the next pass") works the same way. */
static void test_kick_repeats_until_run(void **state)
{
    (void)state;
    char err[128];
    mqc_wake *w = mqc_wake_new(4, err, sizeof(err));
    assert_non_null(w);
    mqc_wake_kick(w); /* from the main thread itself: lands outside any poll */
    int64_t t0 = mono_ms();
    while (mono_ms() - t0 < 20) {
        /* busy: a pass still running */
    }
    int interrupted = 0;
    int64_t spent = sleep_in_poll(5000, &interrupted);
    assert_true(interrupted);
    assert_true(spent < 1000);
    assert_true(mqc_wake_resends(w) >= 1);
    assert_int_equal(mqc_wake_signals(w), 1);
    mqc_wake_run(w);
    /* Run: the kicker goes quiet; a poll now sleeps its whole timeout. */
    unsigned long resends = mqc_wake_resends(w);
    spent = sleep_in_poll(100, &interrupted);
    assert_false(interrupted);
    assert_true(spent >= 90);
    assert_true(mqc_wake_resends(w) <= resends + 1); /* at most one in flight at the run */
    mqc_wake_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_send_interrupts_poll_and_coalesces),
        cmocka_unit_test(test_posts_run_once_in_order),
        cmocka_unit_test(test_send_from_callback_runs_next_pass),
        cmocka_unit_test(test_bad_signal),
        cmocka_unit_test(test_kick_repeats_until_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
