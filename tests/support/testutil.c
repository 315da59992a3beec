/* testutil — temporary directories, a monotonic clock and a sleep for the
 * store's tests and benchmark. See testutil.h. */
#include "testutil.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

/* Fill in the template "<parent>/<prefix>XXXXXX" and create the directory. */
int tu_mkdtemp(char *buf, size_t cap, const char *parent, const char *prefix)
{
    int n = snprintf(buf, cap, "%s/%sXXXXXX", parent ? parent : "/tmp", prefix);
    if (n < 0 || (size_t)n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return mkdtemp(buf) ? 0 : -1;
}

/* nftw callback: remove one entry (children come first: FTW_DEPTH); keep
 * going past what cannot be removed. */
static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Remove a directory tree, depth first, without following links. */
void tu_rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The monotonic clock in nanoseconds. */
uint64_t tu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * TU_SEC_NS + (uint64_t)ts.tv_nsec;
}

void tu_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
