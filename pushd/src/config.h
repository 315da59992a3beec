/* config — pushd's configuration: defaults, the key = value file, checks.
 *
 * The file is lines of "key = value"; blank lines and lines whose first
 * non-blank character is '#' are ignored; the value is the rest of the line
 * with surrounding blanks removed (a '#' inside a value is part of it).
 * Every key is in the table in config.c with its type and bounds, and is
 * documented in pushd.conf.example and README.md. A bad line yields one
 * error naming the file, line and key; main.c prints it and exits 2.
 *
 * Durations are an integer with an optional unit (ms, s, m, h); a bare
 * number is seconds. Sizes are plain integers. Booleans: yes/no, true/false,
 * on/off, 1/0. */
#ifndef PD_CONFIG_H
#define PD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct pd_config {
    /* Redis */
    char *redis;      /* as written: host:port or unix:/path */
    char *redis_host; /* NULL for a unix socket */
    int redis_port;
    char *redis_unix; /* NULL for TCP */
    char *redis_user, *redis_password;
    int redis_db;
    int64_t redis_timeout_ms;
    char *stream_prefix, *group, *consumer;
    int64_t block_ms, claim_min_idle_ms, claim_interval_ms;
    int batch_size, max_jobs;
    int delete_acked;
    long long feedback_maxlen, dead_maxlen;
    /* APNs */
    char *apns_endpoint, *apns_sandbox_endpoint;
    char *apns_key_file, *apns_key_id, *apns_team_id, *apns_topic;
    int64_t apns_token_refresh_ms;
    /* FCM */
    char *fcm_endpoint, *fcm_service_account, *fcm_token_uri;
    /* HTTP */
    char *ca_file;
    int concurrency, connections;
    int64_t request_timeout_ms, connect_timeout_ms;
    /* retries */
    int retry_limit;
    int64_t backoff_base_ms, backoff_max_ms, retry_after_max_ms;
    /* notifications */
    int64_t message_ttl_ms;
    int preview_max;
    /* operations */
    char *stats_file;
    int64_t stats_interval_ms;
    int log_level;
    char *log_file;
    int64_t shutdown_timeout_ms;
} pd_config;

/* Fill c with the defaults (consumer: "<hostname>-<pid>"). 0, or -1 (OOM). */
int pd_config_defaults(pd_config *c);
/* Apply the file's text (name is for messages) on top of c, then check the
 * keys together (pd_config_check). 0, or -1 with one line in err. */
int pd_config_parse(pd_config *c, const char *text, const char *name, char *err, size_t errlen);
/* Read path and pd_config_parse it. */
int pd_config_load(pd_config *c, const char *path, char *err, size_t errlen);
/* The checks across keys (at least one provider, complete APNs keys, ...). */
int pd_config_check(const pd_config *c, char *err, size_t errlen);
void pd_config_free(pd_config *c);

/* "250ms", "2s", "5m", "1h", "30" (seconds) -> ms; -1 if malformed. */
int64_t pd_parse_duration_ms(const char *s);

#endif
