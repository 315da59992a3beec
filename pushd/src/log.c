/* log — see log.h. One fprintf per line on an unbuffered-by-line stream, so
 * lines of one process never interleave mid-line. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int pd_log_level = PD_LOG_INFO;

static FILE *log_fp; /* NULL: stderr */
static char *log_path;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int pd_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

int pd_log_open(const char *path)
{
    pd_log_close();
    if (!path || !*path) return 0;
    FILE *f = fopen(path, "a");
    if (!f) return -1;
    setvbuf(f, NULL, _IOLBF, 0);
    log_path = strdup(path);
    if (!log_path) {
        fclose(f);
        errno = ENOMEM;
        return -1;
    }
    log_fp = f;
    return 0;
}

int pd_log_reopen(void)
{
    if (!log_path) return 0;
    FILE *f = fopen(log_path, "a");
    if (!f) return -1;
    setvbuf(f, NULL, _IOLBF, 0);
    fclose(log_fp);
    log_fp = f;
    return 0;
}

void pd_log_close(void)
{
    if (log_fp) fclose(log_fp);
    log_fp = NULL;
    free(log_path);
    log_path = NULL;
}

void pd_log(int level, const char *fmt, ...)
{
    if (level > pd_log_level) return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ pushd[%d]: %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), (int)getpid(),
                     level_names[level < 0   ? 0
                                 : level > 3 ? 3
                                             : level]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One control-free line: a reason string from a server could hold CR/LF. */
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20) *p = ' ';
    fprintf(log_fp ? log_fp : stderr, "%s\n", line);
}
