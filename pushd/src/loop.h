/* loop — the one event loop pushd runs on: epoll for file descriptors, a
 * handful of one-shot timers, the monotonic clock in ms.
 *
 * Everything in pushd happens on this thread: libcurl's sockets and timer
 * (http.c), both hiredis connections (rconn.c), the signal fd (main.c).
 * A watcher is looked up by fd when its event is dispatched, so removing a
 * watcher inside another's callback is safe: its pending events are
 * dropped. Timers are few (curl, retries, cron), so they sit in a small
 * array scanned linearly. */
#ifndef PD_LOOP_H
#define PD_LOOP_H

#include <stdint.h>

typedef struct pd_loop pd_loop;

enum { PD_READ = 1, PD_WRITE = 2 };

typedef void (*pd_fd_cb)(pd_loop *l, int fd, int events, void *data);
typedef void (*pd_timer_cb)(pd_loop *l, void *data);

typedef struct pd_timer {
    int64_t due_ms; /* monotonic */
    pd_timer_cb cb;
    void *data;
    int active; /* owned by loop.c */
} pd_timer;

pd_loop *pd_loop_new(void);
void pd_loop_free(pd_loop *l);

/* Watch fd for events (PD_READ | PD_WRITE; 0 keeps it registered but
 * silent). Calling it again for the same fd changes events/cb/data.
 * 0, or -1 with errno set. */
int pd_loop_watch(pd_loop *l, int fd, int events, pd_fd_cb cb, void *data);
/* Stop watching fd (no-op if not watched). */
void pd_loop_unwatch(pd_loop *l, int fd);

/* Arm t to fire once at now + ms (re-arming moves it); cancel disarms. */
void pd_timer_start(pd_loop *l, pd_timer *t, int64_t ms, pd_timer_cb cb, void *data);
void pd_timer_cancel(pd_loop *l, pd_timer *t);

/* Wait at most max_wait_ms (less if a timer is due) for events, dispatch
 * them and the due timers. 0, or -1 on an epoll error other than EINTR. */
int pd_loop_run_once(pd_loop *l, int64_t max_wait_ms);

int64_t pd_now_ms(void);  /* CLOCK_MONOTONIC */
int64_t pd_wall_ms(void); /* CLOCK_REALTIME, ms since the epoch */

#endif
