/* loop — see loop.h.
 *
 * INVARIANT: watchers[fd].cb != NULL exactly when fd is registered with the
 * epoll instance; timers[0..ntimers) are exactly the active timers. */
#include "loop.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_TIMERS 32
#define MAX_EVENTS 256

typedef struct watcher {
    pd_fd_cb cb;
    void *data;
    int events;
} watcher;

struct pd_loop {
    int epfd;
    watcher *watchers;
    int nwatchers; /* size of watchers[] (indexed by fd) */
    pd_timer *timers[MAX_TIMERS];
    int ntimers;
};

int64_t pd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t pd_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

pd_loop *pd_loop_new(void)
{
    pd_loop *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        free(l);
        return NULL;
    }
    return l;
}

void pd_loop_free(pd_loop *l)
{
    if (!l) return;
    close(l->epfd);
    free(l->watchers);
    free(l);
}

static uint32_t ep_events(int events)
{
    return (events & PD_READ ? EPOLLIN : 0) | (events & PD_WRITE ? EPOLLOUT : 0);
}

int pd_loop_watch(pd_loop *l, int fd, int events, pd_fd_cb cb, void *data)
{
    assert(fd >= 0 && cb);
    if (fd >= l->nwatchers) {
        int n = l->nwatchers ? l->nwatchers : 64;
        while (n <= fd)
            n *= 2;
        watcher *w = realloc(l->watchers, (size_t)n * sizeof *w);
        if (!w) return -1;
        memset(w + l->nwatchers, 0, (size_t)(n - l->nwatchers) * sizeof *w);
        l->watchers = w;
        l->nwatchers = n;
    }
    watcher *w = &l->watchers[fd];
    struct epoll_event ev = {.events = ep_events(events), .data.fd = fd};
    if (epoll_ctl(l->epfd, w->cb ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) return -1;
    w->cb = cb;
    w->data = data;
    w->events = events;
    return 0;
}

void pd_loop_unwatch(pd_loop *l, int fd)
{
    if (fd < 0 || fd >= l->nwatchers || !l->watchers[fd].cb) return;
    /* The fd may already be closed (curl tells us after closing): then the
     * kernel dropped it from the epoll set itself and this fails harmlessly. */
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    memset(&l->watchers[fd], 0, sizeof l->watchers[fd]);
}

void pd_timer_start(pd_loop *l, pd_timer *t, int64_t ms, pd_timer_cb cb, void *data)
{
    assert(cb);
    t->due_ms = pd_now_ms() + (ms > 0 ? ms : 0);
    t->cb = cb;
    t->data = data;
    if (t->active) return;
    assert(l->ntimers < MAX_TIMERS);
    l->timers[l->ntimers++] = t;
    t->active = 1;
}

void pd_timer_cancel(pd_loop *l, pd_timer *t)
{
    if (!t->active) return;
    for (int i = 0; i < l->ntimers; i++) {
        if (l->timers[i] == t) {
            l->timers[i] = l->timers[--l->ntimers];
            break;
        }
    }
    t->active = 0;
}

static void run_timers(pd_loop *l)
{
    int64_t now = pd_now_ms();
    /* A callback may arm or cancel timers: rescan after each one fired. */
    for (int fired = 1; fired;) {
        fired = 0;
        for (int i = 0; i < l->ntimers; i++) {
            pd_timer *t = l->timers[i];
            if (t->due_ms <= now) {
                pd_timer_cancel(l, t);
                t->cb(l, t->data);
                fired = 1;
                break;
            }
        }
    }
}

int pd_loop_run_once(pd_loop *l, int64_t max_wait_ms)
{
    int64_t now = pd_now_ms(), wait = max_wait_ms;
    for (int i = 0; i < l->ntimers; i++) {
        int64_t d = l->timers[i]->due_ms - now;
        if (d < wait) wait = d;
    }
    if (wait < 0) wait = 0;
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(l->epfd, evs, MAX_EVENTS, (int)wait);
    if (n < 0 && errno != EINTR) return -1;
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd >= l->nwatchers || !l->watchers[fd].cb) continue; /* removed meanwhile */
        watcher *w = &l->watchers[fd];
        int ev = 0;
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ev |= PD_READ;
        if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) ev |= PD_WRITE;
        ev &= w->events ? w->events : 0;
        if (ev) w->cb(l, fd, ev, w->data);
    }
    run_timers(l);
    return 0;
}
