/* config — see config.h. One table drives parsing: key, type, where the
 * value goes, and its bounds; a key not in the table is an error, so a typo
 * never silently leaves a default in force. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

typedef enum { T_STR, T_INT, T_LL, T_DUR, T_BOOL, T_LEVEL, T_REDIS, T_URL } ktype;

typedef struct key {
    const char *name;
    ktype type;
    size_t off;
    long long min, max; /* T_INT / T_LL: value; T_DUR: ms */
} key;

#define O(f) offsetof(pd_config, f)
#define H (3600LL * 1000)
static const key keys[] = {
    {"redis", T_REDIS, O(redis), 0, 0},
    {"redis_user", T_STR, O(redis_user), 0, 0},
    {"redis_password", T_STR, O(redis_password), 0, 0},
    {"redis_db", T_INT, O(redis_db), 0, 10000},
    {"redis_timeout", T_DUR, O(redis_timeout_ms), 100, H},
    {"stream_prefix", T_STR, O(stream_prefix), 0, 0},
    {"group", T_STR, O(group), 0, 0},
    {"consumer", T_STR, O(consumer), 0, 0},
    {"block", T_DUR, O(block_ms), 10, 60000},
    {"claim_min_idle", T_DUR, O(claim_min_idle_ms), 100, 24 * H},
    {"claim_interval", T_DUR, O(claim_interval_ms), 100, H},
    {"batch_size", T_INT, O(batch_size), 1, 10000},
    {"max_jobs", T_INT, O(max_jobs), 1, 10000000},
    {"delete_acked", T_BOOL, O(delete_acked), 0, 1},
    {"feedback_maxlen", T_LL, O(feedback_maxlen), 0, LLONG_MAX},
    {"dead_maxlen", T_LL, O(dead_maxlen), 0, LLONG_MAX},
    {"apns_endpoint", T_URL, O(apns_endpoint), 0, 0},
    {"apns_sandbox_endpoint", T_URL, O(apns_sandbox_endpoint), 0, 0},
    {"apns_key_file", T_STR, O(apns_key_file), 0, 0},
    {"apns_key_id", T_STR, O(apns_key_id), 0, 0},
    {"apns_team_id", T_STR, O(apns_team_id), 0, 0},
    {"apns_topic", T_STR, O(apns_topic), 0, 0},
    {"apns_token_refresh", T_DUR, O(apns_token_refresh_ms), 20 * 60000, 59 * 60000},
    {"fcm_endpoint", T_URL, O(fcm_endpoint), 0, 0},
    {"fcm_service_account", T_STR, O(fcm_service_account), 0, 0},
    {"fcm_token_uri", T_URL, O(fcm_token_uri), 0, 0},
    {"ca_file", T_STR, O(ca_file), 0, 0},
    {"concurrency", T_INT, O(concurrency), 1, 10000},
    {"connections", T_INT, O(connections), 1, 16},
    {"request_timeout", T_DUR, O(request_timeout_ms), 100, 10 * 60000},
    {"connect_timeout", T_DUR, O(connect_timeout_ms), 100, 10 * 60000},
    {"retry_limit", T_INT, O(retry_limit), 0, 100},
    {"backoff_base", T_DUR, O(backoff_base_ms), 1, H},
    {"backoff_max", T_DUR, O(backoff_max_ms), 1, 24 * H},
    {"retry_after_max", T_DUR, O(retry_after_max_ms), 1, 24 * H},
    {"message_ttl", T_DUR, O(message_ttl_ms), 0, 28 * 24 * H},
    {"preview_max", T_INT, O(preview_max), 0, 3000},
    {"stats_file", T_STR, O(stats_file), 0, 0},
    {"stats_interval", T_DUR, O(stats_interval_ms), 100, H},
    {"log_level", T_LEVEL, O(log_level), 0, 0},
    {"log_file", T_STR, O(log_file), 0, 0},
    {"shutdown_timeout", T_DUR, O(shutdown_timeout_ms), 0, 10 * 60000},
};
#define NKEYS (sizeof keys / sizeof keys[0])

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static int set_str(char **dst, const char *v)
{
    char *s = strdup(v);
    if (!s) return -1;
    free(*dst);
    *dst = s;
    return 0;
}

int pd_config_defaults(pd_config *c)
{
    memset(c, 0, sizeof *c);
    char host[256] = "pushd", consumer[300];
    if (gethostname(host, sizeof host) != 0) strcpy(host, "pushd");
    host[sizeof host - 1] = '\0';
    snprintf(consumer, sizeof consumer, "%s-%d", host, (int)getpid());
    c->redis_port = 6379;
    c->redis_timeout_ms = 5000;
    c->block_ms = 1000;
    c->claim_min_idle_ms = 60000;
    c->claim_interval_ms = 10000;
    c->batch_size = 200;
    c->max_jobs = 20000;
    c->delete_acked = 1;
    c->feedback_maxlen = 100000;
    c->dead_maxlen = 100000;
    c->apns_token_refresh_ms = 50 * 60000;
    c->concurrency = 500;
    c->connections = 1;
    c->request_timeout_ms = 15000;
    c->connect_timeout_ms = 10000;
    c->retry_limit = 8;
    c->backoff_base_ms = 1000;
    c->backoff_max_ms = 60000;
    c->retry_after_max_ms = 3600 * 1000;
    c->message_ttl_ms = 7LL * 24 * H;
    c->preview_max = 1000;
    c->stats_interval_ms = 15000;
    c->log_level = PD_LOG_INFO;
    c->shutdown_timeout_ms = 10000;
    if (set_str(&c->redis, "127.0.0.1:6379") || set_str(&c->redis_host, "127.0.0.1") ||
        set_str(&c->stream_prefix, "mqchat:") || set_str(&c->group, "pushd") ||
        set_str(&c->consumer, consumer) ||
        set_str(&c->apns_endpoint, "https://api.push.apple.com") ||
        set_str(&c->apns_sandbox_endpoint, "https://api.sandbox.push.apple.com") ||
        set_str(&c->fcm_endpoint, "https://fcm.googleapis.com")) {
        pd_config_free(c);
        return -1;
    }
    return 0;
}

void pd_config_free(pd_config *c)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].type == T_STR || keys[i].type == T_URL || keys[i].type == T_REDIS) {
            char **p = (char **)((char *)c + keys[i].off);
            free(*p);
            *p = NULL;
        }
    }
    free(c->redis_host);
    free(c->redis_unix);
    c->redis_host = c->redis_unix = NULL;
}

int64_t pd_parse_duration_ms(const char *s)
{
    if (!*s || *s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || v < 0) return -1;
    long long mul;
    if (!*end || strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -1;
    if (v > LLONG_MAX / mul) return -1;
    return v * mul;
}

static int parse_ll(const char *s, long long *out)
{
    if (!*s) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s)
{
    static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
                                                                                "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, yes[i]) == 0) return 1;
        if (strcmp(s, no[i]) == 0) return 0;
    }
    return -1;
}

/* host:port, [v6]:port, or unix:/path. */
static int parse_redis(pd_config *c, const char *v)
{
    char *host = NULL, *path = NULL;
    long long port = 0;
    if (strncmp(v, "unix:", 5) == 0) {
        if (v[5] != '/') return -1;
        path = strdup(v + 5);
        if (!path) return -1;
    } else {
        const char *colon = strrchr(v, ':');
        if (!colon || colon == v || parse_ll(colon + 1, &port) || port < 1 || port > 65535)
            return -1;
        const char *h = v;
        size_t hl = (size_t)(colon - v);
        if (h[0] == '[') {
            if (hl < 3 || h[hl - 1] != ']') return -1;
            h++;
            hl -= 2;
        }
        host = strndup(h, hl);
        if (!host) return -1;
    }
    free(c->redis_host);
    free(c->redis_unix);
    c->redis_host = host;
    c->redis_unix = path;
    c->redis_port = (int)port;
    return set_str(&c->redis, v);
}

static int valid_url(const char *v)
{
    size_t n = strlen(v);
    if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= ' ' || v[i] == 0x7f) return 0;
    return n > 8;
}

static int set_key(pd_config *c, const key *k, const char *v, char *why, size_t whylen)
{
    void *p = (char *)c + k->off;
    long long ll;
    int64_t ms;
    int b;
    switch (k->type) {
    case T_STR:
        if (!*v && k->off != O(redis_password) && k->off != O(redis_user) &&
            k->off != O(stream_prefix) && k->off != O(stats_file) && k->off != O(log_file) &&
            k->off != O(ca_file) && k->off != O(apns_topic))
            return snprintf(why, whylen, "must not be empty"), -1;
        for (const char *q = v; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f)
                return snprintf(why, whylen, "control character in value"), -1;
        if (set_str((char **)p, v)) return snprintf(why, whylen, "out of memory"), -1;
        if (!*v) { /* empty: unset */
            free(*(char **)p);
            *(char **)p = NULL;
            if (k->off == O(stream_prefix) && set_str((char **)p, ""))
                return snprintf(why, whylen, "out of memory"), -1;
        }
        return 0;
    case T_URL:
        if (!valid_url(v))
            return snprintf(why, whylen, "must be an http(s):// URL without spaces (got \"%s\")",
                            v),
                   -1;
        if (set_str((char **)p, v)) return snprintf(why, whylen, "out of memory"), -1;
        {
            char *s = *(char **)p; /* no trailing slash: paths are appended */
            size_t n = strlen(s);
            while (n > 8 && s[n - 1] == '/')
                s[--n] = '\0';
        }
        return 0;
    case T_INT:
    case T_LL:
        if (parse_ll(v, &ll) || ll < k->min || ll > k->max)
            return snprintf(why, whylen, "must be an integer from %lld to %lld (got \"%s\")",
                            k->min, k->max, v),
                   -1;
        if (k->type == T_INT)
            *(int *)p = (int)ll;
        else
            *(long long *)p = ll;
        return 0;
    case T_DUR:
        ms = pd_parse_duration_ms(v);
        if (ms < 0 || ms < k->min || ms > k->max)
            return snprintf(why, whylen,
                            "must be a duration from %lldms to %llds, like 500ms, 30s, 5m, 1h "
                            "(got \"%s\")",
                            k->min, k->max / 1000, v),
                   -1;
        *(int64_t *)p = ms;
        return 0;
    case T_BOOL:
        b = parse_bool(v);
        if (b < 0) return snprintf(why, whylen, "must be yes or no (got \"%s\")", v), -1;
        *(int *)p = b;
        return 0;
    case T_LEVEL:
        b = pd_log_parse_level(v);
        if (b < 0)
            return snprintf(why, whylen, "must be error, warn, info or debug (got \"%s\")", v), -1;
        *(int *)p = b;
        return 0;
    case T_REDIS:
        if (parse_redis(c, v))
            return snprintf(why, whylen, "must be host:port or unix:/path (got \"%s\")", v), -1;
        return 0;
    }
    return -1;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

int pd_config_parse(pd_config *c, const char *text, const char *name, char *err, size_t errlen)
{
    char *copy = strdup(text);
    if (!copy) return fail(err, errlen, "%s: out of memory", name);
    unsigned seen[NKEYS] = {0};
    int lineno = 0, rc = 0;
    /* strtok_r would skip empty lines and so misnumber them: split by hand. */
    for (char *line = copy, *next; line && rc == 0; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = fail(err, errlen, "%s:%d: expected \"key = value\", got \"%.60s\"", name, lineno,
                      s);
            break;
        }
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        size_t i;
        for (i = 0; i < NKEYS; i++)
            if (strcmp(keys[i].name, k) == 0) break;
        if (i == NKEYS) {
            rc = fail(err, errlen, "%s:%d: %.60s: unknown key", name, lineno, k);
            break;
        }
        if (seen[i]) {
            rc = fail(err, errlen, "%s:%d: %s: given twice (first on line %u)", name, lineno, k,
                      seen[i]);
            break;
        }
        seen[i] = (unsigned)lineno;
        char why[300];
        if (set_key(c, &keys[i], v, why, sizeof why)) {
            rc = fail(err, errlen, "%s:%d: %s: %s", name, lineno, k, why);
            break;
        }
    }
    free(copy);
    if (rc == 0) {
        char why[400];
        if (pd_config_check(c, why, sizeof why)) rc = fail(err, errlen, "%s: %s", name, why);
    }
    return rc;
}

int pd_config_check(const pd_config *c, char *err, size_t errlen)
{
    int apns = c->apns_key_file || c->apns_key_id || c->apns_team_id;
    if (apns && !c->apns_key_file)
        return fail(err, errlen, "apns_key_file: required when APNs is configured");
    if (apns && !c->apns_key_id)
        return fail(err, errlen, "apns_key_id: required when APNs is configured");
    if (apns && !c->apns_team_id)
        return fail(err, errlen, "apns_team_id: required when APNs is configured");
    if (!apns && !c->fcm_service_account)
        return fail(
            err, errlen,
            "apns_key_file, fcm_service_account: no provider configured (set at least one)");
    if (c->backoff_base_ms > c->backoff_max_ms)
        return fail(err, errlen, "backoff_base: larger than backoff_max");
    if (c->claim_min_idle_ms < 2 * c->block_ms)
        return fail(err, errlen, "claim_min_idle: must be at least twice block");
    if (strlen(c->group) > 200 || strlen(c->consumer) > 200 || strlen(c->stream_prefix) > 200)
        return fail(err, errlen, "group, consumer, stream_prefix: at most 200 bytes each");
    return 0;
}

int pd_config_load(pd_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) return fail(err, errlen, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return fail(err, errlen, "%s: out of memory", path);
            }
            buf = nb;
        }
        memcpy(buf + len, chunk, n);
        len += n;
        if (len > (1u << 20)) {
            free(buf);
            fclose(f);
            return fail(err, errlen, "%s: larger than 1 MB", path);
        }
    }
    int rd_err = ferror(f);
    fclose(f);
    if (rd_err) {
        free(buf);
        return fail(err, errlen, "%s: read error", path);
    }
    if (!buf) buf = calloc(1, 1);
    if (!buf) return fail(err, errlen, "%s: out of memory", path);
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        free(buf);
        return fail(err, errlen, "%s: contains a NUL byte", path);
    }
    int rc = pd_config_parse(c, buf, path, err, errlen);
    free(buf);
    return rc;
}
