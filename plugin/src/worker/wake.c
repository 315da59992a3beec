/* wake — posting work to mosquitto's main thread and waking its loop.
 * See wake.h for the idea and for which thread may call what.
 *
 * State shared with other threads, and who writes it:
 *   kicked         set by the first send/post/kick after a run (any thread),
 *                  cleared by mqc_wake_run (main) before it looks at work,
 *                  so a send that lands after the clear signals again
 *   async.pending  set by mqc_async_send (any thread), cleared by the run
 *                  that calls the callback (main)
 *   posts          a FIFO under post_lock (any thread appends, main takes)
 * The async list itself changes only on the main thread.
 *
 * A signal that arrives while the main thread is not in epoll_wait (busy
 * in the pass) interrupts nothing, and the loop would then sleep up to
 * 100 ms with work waiting. So the first kick signals at once, and a
 * kicker thread repeats the signal — every 500 us for 20 ms, then backing
 * off to 10 ms — for as long as `kicked` is still set, i.e. until the
 * pass's TICK has run mqc_wake_run. The main thread may kick itself the same way
 * (mqc_wake_kick from TICK: "come back at once, more work waits"). */
#include "wake.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct mqc_async {
    mqc_wake *w;
    mqc_wake_fn fn;
    void *data;
    _Atomic int pending;
    mqc_async *next;
};

typedef struct post {
    mqc_wake_fn fn;
    void *data;
    struct post *next;
} post;

struct mqc_wake {
    pthread_t main_thread;
    int signo;
    _Atomic int kicked;
    _Atomic unsigned long signals, resends;
    mqc_async *asyncs; /* main thread only */
    /* The kicker thread; kick_lock/kick_cond wake it for a new kick. */
    pthread_t kicker;
    int kicker_running;
    pthread_mutex_t kick_lock;
    pthread_cond_t kick_cond;
    int stop; /* under kick_lock */
    pthread_mutex_t post_lock;
    post *post_head, *post_tail; /* under post_lock */
};

static void wake_handler(int sig)
{
    (void)sig; /* its only job is to interrupt epoll_wait */
}

/* Repeat the signal while a kick is not yet run (see the top). */
static void *kicker_main(void *arg)
{
    mqc_wake *w = arg;
    pthread_mutex_lock(&w->kick_lock);
    for (;;) {
        while (!w->stop && !atomic_load(&w->kicked))
            pthread_cond_wait(&w->kick_cond, &w->kick_lock);
        if (w->stop) break;
        /* Every 500 us for the first 20 ms (a pass that publishes a big
         * chunk takes a few ms, and a resend that lands inside it is
         * lost too), then backing off to 10 ms. */
        long delay_us = 500, waited_us = 0;
        while (!w->stop && atomic_load(&w->kicked)) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += delay_us * 1000;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&w->kick_cond, &w->kick_lock, &until);
            if (w->stop || !atomic_load(&w->kicked)) break;
            atomic_fetch_add(&w->resends, 1);
            pthread_kill(w->main_thread, w->signo);
            waited_us += delay_us;
            if (waited_us >= 20000 && delay_us < 10000) delay_us *= 2;
        }
    }
    pthread_mutex_unlock(&w->kick_lock);
    return NULL;
}

mqc_wake *mqc_wake_new(int sigrt_offset, char *err, size_t errlen)
{
    int signo = SIGRTMIN + sigrt_offset;
    if (sigrt_offset < 0 || signo > SIGRTMAX) {
        snprintf(err, errlen, "wake signal SIGRTMIN+%d does not exist", sigrt_offset);
        return NULL;
    }
    mqc_wake *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->main_thread = pthread_self();
    w->signo = signo;
    pthread_mutex_init(&w->post_lock, NULL);
    pthread_mutex_init(&w->kick_lock, NULL);
    pthread_cond_init(&w->kick_cond, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = wake_handler; /* no SA_RESTART: epoll_wait must see EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0) {
        snprintf(err, errlen, "cannot install the wake signal handler: %s", strerror(errno));
        pthread_mutex_destroy(&w->post_lock);
        pthread_mutex_destroy(&w->kick_lock);
        pthread_cond_destroy(&w->kick_cond);
        free(w);
        return NULL;
    }
    /* Without the kicker a wake-up is one signal, as good as it lands. */
    w->kicker_running = mqc_thread_start(&w->kicker, kicker_main, w) == 0;
    return w;
}

void mqc_wake_free(mqc_wake *w)
{
    if (!w) return;
    if (w->kicker_running) {
        pthread_mutex_lock(&w->kick_lock);
        w->stop = 1;
        pthread_cond_signal(&w->kick_cond);
        pthread_mutex_unlock(&w->kick_lock);
        pthread_join(w->kicker, NULL);
    }
    pthread_mutex_destroy(&w->kick_lock);
    pthread_cond_destroy(&w->kick_cond);
    while (w->asyncs)
        mqc_async_free(w->asyncs);
    for (post *p = w->post_head, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    pthread_mutex_destroy(&w->post_lock);
    /* The handler stays installed: a signal still in flight must not take
     * the default action (which ends the process). */
    free(w);
}

void mqc_wake_kick(mqc_wake *w)
{
    if (atomic_exchange(&w->kicked, 1)) return; /* a signal is on its way */
    atomic_fetch_add(&w->signals, 1);
    pthread_kill(w->main_thread, w->signo);
    /* The kicker repeats it until the main thread has run. */
    pthread_mutex_lock(&w->kick_lock);
    pthread_cond_signal(&w->kick_cond);
    pthread_mutex_unlock(&w->kick_lock);
}

mqc_async *mqc_async_new(mqc_wake *w, mqc_wake_fn fn, void *data)
{
    assert(pthread_equal(pthread_self(), w->main_thread)); /* the list is main-thread only */
    mqc_async *a = calloc(1, sizeof(*a));
    if (!a) return NULL;
    a->w = w;
    a->fn = fn;
    a->data = data;
    a->next = w->asyncs;
    w->asyncs = a;
    return a;
}

void mqc_async_free(mqc_async *a)
{
    if (!a) return;
    mqc_wake *w = a->w;
    assert(pthread_equal(pthread_self(), w->main_thread));
    for (mqc_async **pp = &w->asyncs; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    free(a);
}

void mqc_async_send(mqc_async *a)
{
    if (atomic_exchange(&a->pending, 1)) return; /* already due to run */
    mqc_wake_kick(a->w);
}

int mqc_wake_post(mqc_wake *w, mqc_wake_fn fn, void *data)
{
    post *p = malloc(sizeof(*p));
    if (!p) return -1;
    p->fn = fn;
    p->data = data;
    p->next = NULL;
    pthread_mutex_lock(&w->post_lock);
    if (w->post_tail)
        w->post_tail->next = p;
    else
        w->post_head = p;
    w->post_tail = p;
    pthread_mutex_unlock(&w->post_lock);
    mqc_wake_kick(w);
    return 0;
}

void mqc_wake_run(mqc_wake *w)
{
    assert(pthread_equal(pthread_self(), w->main_thread)); /* broker calls happen here */
    /* Clear first: whatever is sent from now on signals again. */
    atomic_store(&w->kicked, 0);
    for (mqc_async *a = w->asyncs; a; a = a->next)
        if (atomic_exchange(&a->pending, 0)) a->fn(a->data);
    pthread_mutex_lock(&w->post_lock);
    post *p = w->post_head;
    w->post_head = w->post_tail = NULL;
    pthread_mutex_unlock(&w->post_lock);
    while (p) {
        post *next = p->next;
        p->fn(p->data);
        free(p);
        p = next;
    }
}

int mqc_thread_start(pthread_t *t, void *(*fn)(void *), void *data)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, data);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

unsigned long mqc_wake_signals(const mqc_wake *w)
{
    return atomic_load(&w->signals);
}

unsigned long mqc_wake_resends(const mqc_wake *w)
{
    return atomic_load(&w->resends);
}
