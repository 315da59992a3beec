/* platform.c — see platform.h: one function per OS difference, each with
 * its Linux branch first and the portable branch after it. */
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__) && !defined(MQCHAT_PORTABLE)
#define MQC_EVENTFD 1
#include <sys/eventfd.h>
#if !defined(__ANDROID__)
#define MQC_GETRANDOM 1 /* bionic has getrandom only from API 28 */
#include <sys/random.h>
#endif
#endif
#if !defined(__APPLE__) && !defined(MQCHAT_PORTABLE)
#define MQC_COND_MONOTONIC 1
#endif

int mqc_random(void *buf, size_t n)
{
#ifdef MQC_GETRANDOM
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
#else
    arc4random_buf(buf, n); /* cannot fail */
    return 0;
#endif
}

int mqc_wake_open(mqc_wake *w)
{
    w->set = 0;
#ifdef MQC_EVENTFD
    w->rfd = w->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return w->rfd < 0 ? -1 : 0;
#else
    int p[2];
    w->rfd = w->wfd = -1;
    if (pipe(p) != 0) return -1;
    for (int i = 0; i < 2; i++)
        if (fcntl(p[i], F_SETFL, O_NONBLOCK) != 0 || fcntl(p[i], F_SETFD, FD_CLOEXEC) != 0) {
            close(p[0]);
            close(p[1]);
            return -1;
        }
    w->rfd = p[0];
    w->wfd = p[1];
    return 0;
#endif
}

void mqc_wake_close(mqc_wake *w)
{
    if (w->rfd >= 0) close(w->rfd);
    if (w->wfd >= 0 && w->wfd != w->rfd) close(w->wfd);
    w->rfd = w->wfd = -1;
}

void mqc_wake_set(mqc_wake *w)
{
    if (w->set || w->wfd < 0) return;
#ifdef MQC_EVENTFD
    uint64_t one = 1;
    ssize_t r = write(w->wfd, &one, sizeof(one));
#else
    char one = 1;
    ssize_t r = write(w->wfd, &one, 1);
#endif
    w->set = r > 0;
}

void mqc_wake_clear(mqc_wake *w)
{
    if (!w->set || w->rfd < 0) return;
    /* An eventfd reads its whole counter at once; a pipe holds one byte
     * (set writes only on a change), read until empty to be sure. */
    unsigned char buf[64];
    while (read(w->rfd, buf, sizeof(buf)) > 0) {
    }
    w->set = 0;
}

int mqc_cond_init(pthread_cond_t *cond)
{
#ifdef MQC_COND_MONOTONIC
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc == 0) rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(cond, &ca);
    pthread_condattr_destroy(&ca);
    return rc;
#else
    return pthread_cond_init(cond, NULL);
#endif
}

void mqc_cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t ms)
{
    if (ms < 1) ms = 1;
    struct timespec ts;
#if defined(__APPLE__) && !defined(MQCHAT_PORTABLE)
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;
    pthread_cond_timedwait_relative_np(cond, mu, &ts);
#else
#ifdef MQC_COND_MONOTONIC
    clock_gettime(CLOCK_MONOTONIC, &ts);
#else
    clock_gettime(CLOCK_REALTIME, &ts); /* a clock change makes this wait shorter or longer */
#endif
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(cond, mu, &ts);
#endif
}
