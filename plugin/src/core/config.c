/* config — parsing plugin_opt_* lines. One table, one parser per type. */
#include "config.h"
#include "jwt.h"
#include "wire.h"

#include <errno.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    T_STR,
    T_SIZE,
    T_INT,
    T_DOUBLE,
    T_DURABILITY,
    T_FOREIGN,
    T_OUTSIDE,
    T_SECRET_FILE,
    T_SECRET
} opt_type;

typedef struct opt_def {
    const char *name;
    opt_type type;
    size_t offset;
    double min, max; /* numeric bounds */
} opt_def;

#define OFF(f) offsetof(mqc_config, f)
static const opt_def opt_defs[] = {
    {"store_dir", T_STR, OFF(store_dir), 0, 0},
    {"durability", T_DURABILITY, OFF(durability), 0, 0},
    {"topic_prefix", T_STR, OFF(topic_prefix), 0, 0},
    {"jwt_hs256_secret", T_SECRET, OFF(hs256_secret), 0, 0},
    {"jwt_hs256_secret_file", T_SECRET_FILE, OFF(hs256_secret), 0, 0},
    {"jwt_public_key_file", T_STR, OFF(jwt_public_key_file), 0, 0},
    {"jwt_issuer", T_STR, OFF(jwt_issuer), 0, 0},
    {"jwt_audience", T_STR, OFF(jwt_audience), 0, 0},
    {"jwt_leeway_s", T_INT, OFF(jwt_leeway_s), 0, 3600},
    {"max_body", T_SIZE, OFF(max_body), 1, 8 << 20},
    {"group_max_members", T_SIZE, OFF(group_max_members), 2, 100000},
    {"large_group_members", T_SIZE, OFF(large_group_members), 2, 100000},
    {"small_group_members", T_SIZE, OFF(small_group_members), 1, 100000},
    {"fanout_per_pass", T_SIZE, OFF(fanout_per_pass), 100, 1000000},
    {"rate_msgs_per_s", T_DOUBLE, OFF(rate_msgs_per_s), 0.1, 1e6},
    {"rate_burst", T_DOUBLE, OFF(rate_burst), 1, 1e7},
    {"foreign_users", T_FOREIGN, OFF(foreign_users), 0, 0},
    {"outside_namespace", T_OUTSIDE, OFF(outside_namespace), 0, 0},
    {"reply_max_bytes", T_SIZE, OFF(reply_max_bytes), 16384, 64 << 20},
    {"log_summary_interval_s", T_INT, OFF(log_summary_s), 1, 86400},
    {"sys_interval_s", T_INT, OFF(sys_interval_s), 0, 86400},
    {"metrics_http_port", T_INT, OFF(metrics_http_port), 0, 65535},
    {"metrics_http_bind", T_STR, OFF(metrics_http_bind), 0, 0},
    {"redis", T_STR, OFF(redis), 0, 0},
    {"redis_password", T_STR, OFF(redis_password), 0, 0},
    {"redis_prefix", T_STR, OFF(redis_prefix), 0, 0},
    {"redis_timeout_ms", T_INT, OFF(redis_timeout_ms), 100, 60000},
    {"node_id", T_STR, OFF(node_id), 0, 0},
    {"node_ttl_s", T_INT, OFF(node_ttl_s), 3, 3600},
    {"presence_debounce_ms", T_INT, OFF(presence_debounce_ms), 0, 600000},
    {"presence_watch_max", T_SIZE, OFF(presence_watch_max), 1, 1000},
    {"sync_page_max", T_SIZE, OFF(sync_page_max), 1, 10000},
    {"history_page_max", T_SIZE, OFF(history_page_max), 1, 10000},
    {"dedup_retention_s", T_INT, OFF(dedup_retention_s), 60, 365 * 86400},
    {"inbox_retention_s", T_INT, OFF(inbox_retention_s), 3600, 3650LL * 86400},
    {"push", T_INT, OFF(push), 0, 1},
    {"push_preview", T_INT, OFF(push_preview), 0, 1},
    {"push_outbox_max", T_SIZE, OFF(push_outbox_max), 1000, 100000000},
    {"push_large_interval_ms", T_INT, OFF(push_large_interval_ms), 0, 3600000},
    {"admin_users", T_STR, OFF(admin_users), 0, 0},
    {"control_max_bytes", T_SIZE, OFF(control_max_bytes), 1024, 16 << 20},
    {"backup_dir", T_STR, OFF(backup_dir), 0, 0},
    {"edit_window_s", T_INT, OFF(edit_window_s), 0, 3650LL * 86400},
    {"delete_window_s", T_INT, OFF(delete_window_s), 0, 3650LL * 86400},
    {"store_min_free_mb", T_SIZE, OFF(store_min_free_mb), 0, 1 << 20},
    {"retention_s", T_INT, OFF(retention_s), 0, 3650LL * 86400},
    {"retention_count", T_SIZE, OFF(retention_count), 0, 1e12},
};

static void defaults(mqc_config *c)
{
    memset(c, 0, sizeof(*c));
    c->durability = MQSTORE_DURABILITY_SYNC;
    c->topic_prefix = strdup("mqchat/v1");
    c->jwt_leeway_s = 30;
    c->max_body = 65536;
    c->group_max_members = 100000;
    c->large_group_members = 256;
    c->small_group_members = 0; /* 3/4 of large_group_members, after parsing */
    c->fanout_per_pass = 500;
    c->rate_msgs_per_s = 50;
    c->rate_burst = 200;
    c->foreign_users = FOREIGN_DENY;
    c->outside_namespace = OUTSIDE_DEFER;
    c->reply_max_bytes = 0; /* from max_body, after parsing */
    c->log_summary_s = 60;
    c->sys_interval_s = 10; /* as mosquitto's sys_interval */
    c->metrics_http_port = 0;
    c->metrics_http_bind = strdup("127.0.0.1");
    c->redis_prefix = strdup("mqchat:");
    c->redis_timeout_ms = 2000;
    c->node_id = strdup("node1");
    c->node_ttl_s = 15;
    c->presence_debounce_ms = 5000;
    c->presence_watch_max = 64;
    c->sync_page_max = 500;
    c->history_page_max = 200;
    c->dedup_retention_s = 7 * 86400;
    c->inbox_retention_s = 30 * 86400;
    c->push = 1; /* with Redis */
    c->push_preview = 0;
    c->push_outbox_max = 1000000;
    c->push_large_interval_ms = 10000;
    c->control_max_bytes = 65536;
    c->store_min_free_mb = 64;
    c->edit_window_s = 900;
    c->delete_window_s = 2 * 86400;
}

/* admin_users "a,b,c" into cfg->admins: each a valid user id, no empty
 * items; the list may be empty (no $CONTROL access at all). */
static int parse_admins(mqc_config *c, char *err, size_t errlen)
{
    if (!c->admin_users) return 0;
    size_t n = 1;
    for (const char *p = c->admin_users; *p; p++)
        n += *p == ',';
    if (!(c->admins = calloc(n, sizeof(*c->admins)))) return -1;
    const char *p = c->admin_users;
    for (size_t i = 0; i < n; i++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *name = strndup(p, len);
        if (!name) return -1;
        c->admins[c->n_admins++] = name;
        if (!mqc_id_valid(MQC_ID_USER, name)) {
            snprintf(err, errlen,
                     "plugin_opt_admin_users: '%s' is not a valid username (1..128 of "
                     "[A-Za-z0-9._-], comma-separated, no spaces)",
                     name);
            return -1;
        }
        p = end ? end + 1 : p + len;
    }
    return 0;
}

int mqc_config_is_admin(const mqc_config *c, const char *username)
{
    if (!username) return 0;
    for (size_t i = 0; i < c->n_admins; i++)
        if (strcmp(c->admins[i], username) == 0) return 1;
    return 0;
}

/* A topic prefix is one or more plain topic levels: no wildcards, no
 * leading '$' (reserved for the broker), no empty levels. */
static int prefix_valid(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 64 || p[0] == '$' || p[0] == '/' || p[n - 1] == '/') return 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '+' || p[i] == '#' || (unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e)
            return 0;
        if (p[i] == '/' && p[i + 1] == '/') return 0;
    }
    return 1;
}

/* 1..max bytes, each alphanumeric or one of `extra`. */
static int plain_chars(const char *s, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr(extra, s[i])))
            return 0;
    return 1;
}

/* "host:port" or "unix:/path" into the parsed fields. */
static int redis_addr(mqc_config *c, char *err, size_t errlen)
{
    if (strncmp(c->redis, "unix:", 5) == 0) {
        if (c->redis[5] != '/' || strlen(c->redis + 5) > 100) {
            snprintf(err, errlen, "plugin_opt_redis: '%s': unix: needs an absolute socket path",
                     c->redis);
            return -1;
        }
        c->redis_socket = strdup(c->redis + 5);
        return c->redis_socket ? 0 : -1;
    }
    const char *colon = strrchr(c->redis, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == c->redis || !colon[1] || *end || port < 1 || port > 65535 ||
        (size_t)(colon - c->redis) > 253) {
        snprintf(err, errlen, "plugin_opt_redis: '%s' is not host:port or unix:/path", c->redis);
        return -1;
    }
    c->redis_host = strndup(c->redis, (size_t)(colon - c->redis));
    c->redis_port = (int)port;
    return c->redis_host ? 0 : -1;
}

static int parse_one(mqc_config *c, const opt_def *d, const char *v, char *err, size_t errlen)
{
    char *base = (char *)c + d->offset;
    char *end;
    switch (d->type) {
    case T_STR:
        free(*(char **)base);
        *(char **)base = strdup(v);
        return 0;
    case T_SECRET:
    case T_SECRET_FILE: {
        unsigned char *secret;
        size_t len;
        if (d->type == T_SECRET) {
            len = strlen(v);
            secret = (unsigned char *)strdup(v);
        } else {
            char *msg = NULL;
            if (mqjwt_load_secret_file(v, &secret, &len, &msg) != MQJWT_OK) {
                snprintf(err, errlen, "plugin_opt_%s: %s", d->name, msg ? msg : "cannot read");
                free(msg);
                return -1;
            }
        }
        if (len < MQJWT_HS256_MIN_SECRET_LEN) {
            snprintf(err, errlen, "plugin_opt_%s: the secret must be at least %d bytes", d->name,
                     MQJWT_HS256_MIN_SECRET_LEN);
            mqjwt_secret_free(secret, len);
            return -1;
        }
        if (c->hs256_secret) mqjwt_secret_free(c->hs256_secret, c->hs256_secret_len);
        c->hs256_secret = secret;
        c->hs256_secret_len = len;
        return 0;
    }
    case T_DURABILITY:
        if (strcmp(v, "sync") == 0)
            c->durability = MQSTORE_DURABILITY_SYNC;
        else if (strcmp(v, "os") == 0)
            c->durability = MQSTORE_DURABILITY_OS;
        else
            break;
        return 0;
    case T_FOREIGN:
        if (strcmp(v, "deny") == 0)
            c->foreign_users = FOREIGN_DENY;
        else if (strcmp(v, "defer") == 0)
            c->foreign_users = FOREIGN_DEFER;
        else
            break;
        return 0;
    case T_OUTSIDE:
        if (strcmp(v, "defer") == 0)
            c->outside_namespace = OUTSIDE_DEFER;
        else if (strcmp(v, "allow") == 0)
            c->outside_namespace = OUTSIDE_ALLOW;
        else if (strcmp(v, "deny") == 0)
            c->outside_namespace = OUTSIDE_DENY;
        else
            break;
        return 0;
    case T_SIZE:
    case T_INT:
    case T_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !(x >= d->min && x <= d->max)) break; /* NaN too */
        if (d->type != T_DOUBLE && x != (double)(long long)x) break;
        if (d->type == T_SIZE)
            *(size_t *)base = (size_t)x;
        else if (d->type == T_INT)
            *(int64_t *)base = (int64_t)x;
        else
            *(double *)base = x;
        return 0;
    }
    }
    if (d->type == T_SIZE || d->type == T_INT || d->type == T_DOUBLE)
        snprintf(err, errlen, "plugin_opt_%s: '%s' is not a number in %.0f..%.0f", d->name, v,
                 d->min, d->max);
    else
        snprintf(err, errlen, "plugin_opt_%s: invalid value '%s'", d->name, v);
    return -1;
}

int mqc_config_parse(mqc_config *c, struct mosquitto_opt *opts, int n, char *err, size_t errlen)
{
    defaults(c);
    for (int i = 0; i < n; i++) {
        const opt_def *d = NULL;
        for (size_t j = 0; j < sizeof(opt_defs) / sizeof(opt_defs[0]); j++)
            if (strcmp(opts[i].key, opt_defs[j].name) == 0) d = &opt_defs[j];
        if (!d) {
            snprintf(err, errlen, "unknown option plugin_opt_%s", opts[i].key);
            return -1;
        }
        if (!opts[i].value || !opts[i].value[0]) {
            snprintf(err, errlen, "plugin_opt_%s needs a value", opts[i].key);
            return -1;
        }
        if (parse_one(c, d, opts[i].value, err, errlen)) return -1;
    }
    if (!c->store_dir) {
        snprintf(err, errlen, "plugin_opt_store_dir is required");
        return -1;
    }
    if (!prefix_valid(c->topic_prefix)) {
        snprintf(err, errlen,
                 "plugin_opt_topic_prefix: '%s' must be plain topic levels "
                 "(no wildcards, no leading '$' or '/', at most 64 bytes)",
                 c->topic_prefix);
        return -1;
    }
    if (!c->hs256_secret && !c->jwt_public_key_file) {
        snprintf(err, errlen,
                 "set plugin_opt_jwt_hs256_secret_file (or _secret) and/or "
                 "plugin_opt_jwt_public_key_file: no way to verify tokens");
        return -1;
    }
    if (c->rate_burst < 1) c->rate_burst = 1;
    if (c->redis && redis_addr(c, err, errlen)) return -1;
    if (parse_admins(c, err, errlen)) return -1;
    if (!c->backup_dir) {
        size_t len = strlen(c->store_dir) + sizeof("-backups");
        if (!(c->backup_dir = malloc(len))) return -1;
        snprintf(c->backup_dir, len, "%s-backups", c->store_dir);
    }
    if (!plain_chars(c->redis_prefix, 64, ":._-")) {
        snprintf(err, errlen, "plugin_opt_redis_prefix: '%s' must be 1..64 of [A-Za-z0-9:._-]",
                 c->redis_prefix);
        return -1;
    }
    if (!plain_chars(c->node_id, 64, "._-")) {
        snprintf(err, errlen, "plugin_opt_node_id: '%s' must be 1..64 of [A-Za-z0-9._-]",
                 c->node_id);
        return -1;
    }
    /* Hysteresis: a group turns large at large_group_members and small
     * again only below small_group_members, so one join and one leave
     * near the line do not switch it twice. */
    if (!c->small_group_members) c->small_group_members = c->large_group_members * 3 / 4;
    if (c->small_group_members >= c->large_group_members) {
        snprintf(err, errlen,
                 "plugin_opt_small_group_members: %zu must be below large_group_members (%zu)",
                 c->small_group_members, c->large_group_members);
        return -1;
    }
    /* One stored message (body, media, envelope) must fit in a reply. */
    size_t need = c->max_body + WIRE_ENVELOPE_SLACK + MQC_REPLY_SLACK;
    if (!c->reply_max_bytes) {
        c->reply_max_bytes = need > MQC_REPLY_MAX_DEFAULT ? need : MQC_REPLY_MAX_DEFAULT;
    } else if (c->reply_max_bytes < need) {
        snprintf(err, errlen,
                 "plugin_opt_reply_max_bytes: %zu is below max_body + %d: one message must fit "
                 "in a reply (set it to at least %zu)",
                 c->reply_max_bytes, WIRE_ENVELOPE_SLACK + MQC_REPLY_SLACK, need);
        return -1;
    }
    return 0;
}

void mqc_config_free(mqc_config *c)
{
    free(c->store_dir);
    free(c->topic_prefix);
    if (c->hs256_secret) mqjwt_secret_free(c->hs256_secret, c->hs256_secret_len);
    free(c->jwt_public_key_file);
    free(c->jwt_issuer);
    free(c->jwt_audience);
    free(c->redis);
    free(c->redis_host);
    free(c->redis_socket);
    free(c->metrics_http_bind);
    free(c->redis_password);
    free(c->redis_prefix);
    free(c->node_id);
    free(c->admin_users);
    for (size_t i = 0; i < c->n_admins; i++)
        free(c->admins[i]);
    free(c->admins);
    free(c->backup_dir);
    memset(c, 0, sizeof(*c));
}
