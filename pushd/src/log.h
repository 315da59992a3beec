/* log — pushd's log: one line per event, "time pushd[pid]: level: text".
 *
 * Lines go to stderr, or to the file given by pd_log_open (appended; SIGHUP
 * makes main.c call pd_log_reopen so logrotate can move the file away).
 * A line below the configured level costs one comparison. Nothing logged
 * may contain a full device token or a preview: callers log a short token
 * prefix (PD_TOKEN_PREFIX bytes) only. */
#ifndef PD_LOG_H
#define PD_LOG_H

enum { PD_LOG_ERROR, PD_LOG_WARN, PD_LOG_INFO, PD_LOG_DEBUG };

/* Bytes of a device token a log line may show. */
#define PD_TOKEN_PREFIX 8

extern int pd_log_level;

/* "error", "warn", "info", "debug" -> level; -1 for anything else. */
int pd_log_parse_level(const char *s);
/* Log to path (NULL or "": stderr). 0, or -1 with errno set. */
int pd_log_open(const char *path);
/* Reopen the log file (after a rotation); stderr stays stderr. */
int pd_log_reopen(void);
void pd_log_close(void);

void pd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pd_err(...) pd_log(PD_LOG_ERROR, __VA_ARGS__)
#define pd_warn(...) pd_log(PD_LOG_WARN, __VA_ARGS__)
#define pd_info(...)                                                                               \
    do {                                                                                           \
        if (pd_log_level >= PD_LOG_INFO) pd_log(PD_LOG_INFO, __VA_ARGS__);                         \
    } while (0)
#define pd_debug(...)                                                                              \
    do {                                                                                           \
        if (pd_log_level >= PD_LOG_DEBUG) pd_log(PD_LOG_DEBUG, __VA_ARGS__);                       \
    } while (0)

#endif
