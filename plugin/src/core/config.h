/* config — the plugin's options (plugin_opt_* lines in mosquitto.conf).
 *
 * Every option is parsed and validated once, at plugin start; an unknown
 * option or a bad value stops the broker with a message naming it. The
 * table in config.c is the single list of options (docs/OPERATIONS.md
 * mirrors it). */
#ifndef MQC_CONFIG_H
#define MQC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "mqstore.h"

typedef enum { FOREIGN_DENY = 0, FOREIGN_DEFER = 1 } mqc_foreign;

/* ACL checks on topics outside the chat namespace (docs/OPERATIONS.md,
 * "Topics outside the chat namespace"). */
typedef enum { OUTSIDE_DEFER = 0, OUTSIDE_ALLOW = 1, OUTSIDE_DENY = 2 } mqc_outside;

typedef struct mqc_config {
    char *store_dir;
    mqstore_durability durability;
    char *topic_prefix;          /* no trailing '/' */
    unsigned char *hs256_secret; /* NULL = HS256 off */
    size_t hs256_secret_len;
    char *jwt_public_key_file; /* NULL = RS256/ES256 off */
    char *jwt_issuer;          /* NULL = not checked */
    char *jwt_audience;        /* NULL = tokens must not carry aud */
    int64_t jwt_leeway_s;
    size_t max_body;
    size_t group_max_members;
    /* Large conversations (docs/OPERATIONS.md, "Large groups"): a group
     * with at least large_group_members members stores each message once;
     * it turns small again below small_group_members. */
    size_t large_group_members;
    size_t small_group_members;
    size_t fanout_per_pass; /* live deliveries to large groups per loop pass */
    double rate_msgs_per_s;
    double rate_burst;
    mqc_foreign foreign_users;
    mqc_outside outside_namespace;
    size_t sync_page_max; /* cap on SyncRequest.limit */
    size_t history_page_max;
    int64_t dedup_retention_s;
    int64_t inbox_retention_s;
    /* Largest Response payload (sync, history, lists): pages are cut to fit.
     * At least max_body + WIRE_ENVELOPE_SLACK + MQC_REPLY_SLACK, so one
     * message always fits. */
    size_t reply_max_bytes;
    int64_t log_summary_s; /* suppressed refusals are summed up this often */
    /* Metrics (docs/OPERATIONS.md, "Metrics"). */
    int64_t sys_interval_s;    /* $SYS/broker/mqchat/... this often; 0: off */
    int64_t metrics_http_port; /* GET /metrics; 0: off */
    char *metrics_http_bind;   /* the address it listens on */
    /* Presence (docs/OPERATIONS.md, "Presence and Redis"). redis NULL: off. */
    char *redis;      /* "host:port" or "unix:/path" */
    char *redis_host; /* parsed from redis: host, or NULL for a socket */
    int redis_port;
    char *redis_socket; /* the path after "unix:" */
    char *redis_password;
    char *redis_prefix;
    int64_t redis_timeout_ms;
    char *node_id;
    int64_t node_ttl_s;
    int64_t presence_debounce_ms;
    size_t presence_watch_max;
    /* Push (docs/PUSH.md): on when Redis is configured and push is 1. */
    int64_t push;
    int64_t push_preview;      /* text previews of plain-text messages in pushes */
    size_t push_outbox_max;    /* jobs waiting for Redis before new ones are dropped */
    int64_t push_large_interval_ms; /* a large group's pushes go out at most this often */
    /* Operators (docs/OPERATIONS.md, "The $CONTROL API"). */
    char *admin_users;    /* as configured: comma-separated usernames */
    char **admins;        /* parsed from admin_users */
    size_t n_admins;
    size_t control_max_bytes; /* largest $CONTROL command payload */
    char *backup_dir;         /* where the backup command puts checkpoints */
    /* Edits and deletes (docs/PROTOCOL.md, "Edits and deletes"). */
    int64_t edit_window_s;   /* a sender may edit a message this long after sending it */
    int64_t delete_window_s; /* ... and delete it for everyone (admins: any time) */
    size_t store_min_free_mb; /* writes stop below this much free disk (0: off) */
    /* Message retention (docs/OPERATIONS.md, "Retention"); 0: keep forever. */
    int64_t retention_s;
    size_t retention_count;
} mqc_config;

/* Room in a reply for everything but its messages (envelope, ids). */
#define MQC_REPLY_SLACK 4096
#define MQC_REPLY_MAX_DEFAULT (256u << 10)

struct mosquitto_opt;

/* Parse options into *cfg (defaults for what is absent). On error returns
 * -1 and writes a message naming the option into err. */
int mqc_config_parse(mqc_config *cfg, struct mosquitto_opt *opts, int n, char *err, size_t errlen);
void mqc_config_free(mqc_config *cfg);

/* 1 if username is one of admin_users. */
int mqc_config_is_admin(const mqc_config *cfg, const char *username);

#endif
