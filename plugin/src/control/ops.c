/* ops — operator commands on the broker and its store: statistics, an
 * online backup (a RocksDB checkpoint under backup_dir), recovery of
 * writes after a store failure, and a compaction (retention applies at
 * compaction). The store calls that block run on the control worker
 * (control.c); the broker keeps serving meanwhile. */
#include "control_int.h"
#include "mqc_clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void add_health(cJSON *o, mqstore *s)
{
    mqstore_health h;
    mqstore_health_get(s, &h);
    cJSON_AddBoolToObject(o, "writable", h.writable);
    cJSON_AddStringToObject(o, "lastError", h.last_error ? mqstore_strerror(h.last_error) : "");
    cJSON_AddNumberToObject(o, "failedMs", (double)h.failed_ms);
    cJSON_AddNumberToObject(o, "failures", (double)h.failures);
    cJSON_AddNumberToObject(o, "resumes", (double)h.resumes);
    cJSON_AddNumberToObject(o, "resumeAttempts", (double)h.resume_attempts);
}

static int get_stats(ctl_cmd *cmd)
{
    struct mqc *m = cmd->m;
    dev *d = &m->dev;
    cJSON *data = ctl_data(cmd);
    cJSON_AddNumberToObject(data, "connectedDevices", (double)HASH_COUNT(d->conns));
    cJSON_AddNumberToObject(data, "connectedUsers", (double)HASH_COUNT(d->users));
    cJSON_AddNumberToObject(data, "pendingPublishes", (double)d->n_pending);
    cJSON_AddNumberToObject(data, "laneQueued", (double)d->lane_len);
    cJSON_AddNumberToObject(data, "lanePublishes", (double)d->lane_sent);
    cJSON *st = cJSON_AddObjectToObject(data, "store");
    mqstore_stats ss;
    mqstore_stats_get(m->store, &ss);
    cJSON_AddNumberToObject(st, "writes", (double)ss.writes);
    cJSON_AddNumberToObject(st, "keys", (double)ss.keys);
    cJSON_AddNumberToObject(st, "bytes", (double)ss.bytes);
    cJSON_AddNumberToObject(st, "lastTicket", (double)mqstore_last_ticket(m->store));
    cJSON_AddNumberToObject(st, "durableTicket", (double)mqstore_durable(m->store));
    add_health(st, m->store);
    cJSON *ref = cJSON_AddObjectToObject(data, "refused");
    for (int code = 1; code < MQC_REFUSAL_KINDS; code++)
        if (d->refused_total[code])
            cJSON_AddNumberToObject(ref, ctl_code_name((wire_code)code),
                                    (double)d->refused_total[code]);
    /* The counters the metrics show (docs/OPERATIONS.md, "Metrics"). */
    mqc_snapshot snap;
    metrics_fill(m, &snap);
    cJSON *msg = cJSON_AddObjectToObject(data, "messages");
    cJSON_AddNumberToObject(msg, "stored", (double)snap.messages_stored);
    cJSON_AddNumberToObject(msg, "duplicates", (double)snap.messages_duplicate);
    cJSON_AddNumberToObject(msg, "deliveredLive", (double)snap.delivered_live);
    cJSON_AddNumberToObject(msg, "deliveredBySync", (double)snap.delivered_sync);
    cJSON_AddNumberToObject(data, "rateLimited", (double)snap.rate_limited);
    cJSON *pr = cJSON_AddObjectToObject(data, "presence");
    cJSON_AddBoolToObject(pr, "on", snap.presence_on);
    cJSON_AddBoolToObject(pr, "redisUp", snap.presence_up);
    cJSON *pu = cJSON_AddObjectToObject(data, "push");
    cJSON_AddBoolToObject(pu, "on", snap.push_on);
    cJSON_AddBoolToObject(pu, "redisUp", snap.push_up);
    cJSON_AddNumberToObject(pu, "outbox", (double)snap.push_outbox);
    cJSON_AddNumberToObject(pu, "sent", (double)snap.push_sent);
    return CTL_DONE;
}

/* ---- backup ------------------------------------------------------------ */

typedef struct backup_job {
    char path[4096];
    int64_t started_ms, took_ms;
    mqstore_err err;
    char why[256];
} backup_job;

static void backup_work(ctl_cmd *cmd)
{
    backup_job *j = cmd->job;
    char *msg = NULL;
    int64_t t0 = mqc_mono_ms();
    j->err = mqstore_checkpoint(cmd->m->store, j->path, &msg);
    j->took_ms = mqc_mono_ms() - t0;
    if (msg) snprintf(j->why, sizeof(j->why), "%s", msg);
    free(msg);
}

static void backup_done(ctl_cmd *cmd)
{
    backup_job *j = cmd->job;
    if (j->err) {
        ctl_error(cmd, "backup to %s failed: %s", j->path,
                  j->why[0] ? j->why : mqstore_strerror(j->err));
    } else {
        cJSON *d = ctl_data(cmd);
        cJSON_AddStringToObject(d, "path", j->path);
        cJSON_AddNumberToObject(d, "startedMs", (double)j->started_ms);
        cJSON_AddNumberToObject(d, "durationMs", (double)j->took_ms);
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqchat: control: backup %s taken for %s (%lld ms)",
                             j->path, cmd->admin, (long long)j->took_ms);
    }
    free(j);
    cmd->job = NULL;
}

/* A backup name: 1..100 of [A-Za-z0-9._-], not starting with '.', so it
 * stays one path component inside backup_dir. */
static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 100 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("._-", s[i])))
            return 0;
    return 1;
}

static int backup(ctl_cmd *cmd)
{
    char def[64];
    const char *name = def;
    int64_t now = mqc_wall_ms();
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(def, sizeof(def), "mqchat-%Y%m%dT%H%M%SZ", &tm);
    if (ctl_arg_str(cmd, "name", 100, 0, &name)) return CTL_DONE;
    if (!name_ok(name))
        return ctl_error(cmd, "argument 'name' must be 1..100 of [A-Za-z0-9._-], not starting "
                              "with '.'");
    const char *dir = cmd->m->cfg.backup_dir;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ctl_error(cmd, "cannot create backup_dir %s: %s", dir, strerror(errno));
    backup_job *j = calloc(1, sizeof(*j));
    if (!j) return ctl_error(cmd, "out of memory");
    if ((size_t)snprintf(j->path, sizeof(j->path), "%s/%s", dir, name) >= sizeof(j->path)) {
        free(j);
        return ctl_error(cmd, "backup path too long");
    }
    struct stat sb;
    if (stat(j->path, &sb) == 0) {
        ctl_error(cmd, "a backup named %s exists already in %s", name, dir);
        free(j);
        return CTL_DONE;
    }
    j->started_ms = now;
    cmd->job = j;
    cmd->work = backup_work;
    cmd->done = backup_done;
    return ctl_queue(cmd);
}

/* ---- recovery and compaction --------------------------------------------- */

typedef struct store_job {
    mqstore_err err;
    int64_t took_ms;
} store_job;

static void resume_work(ctl_cmd *cmd)
{
    store_job *j = cmd->job;
    int64_t t0 = mqc_mono_ms();
    j->err = mqstore_resume(cmd->m->store);
    j->took_ms = mqc_mono_ms() - t0;
}

static void compact_work(ctl_cmd *cmd)
{
    store_job *j = cmd->job;
    int64_t t0 = mqc_mono_ms();
    j->err = mqstore_compact(cmd->m->store);
    j->took_ms = mqc_mono_ms() - t0;
}

static void store_done(ctl_cmd *cmd)
{
    store_job *j = cmd->job;
    if (j->err) {
        ctl_error(cmd, "%s", mqstore_strerror(j->err));
    } else {
        cJSON *d = ctl_data(cmd);
        cJSON_AddNumberToObject(d, "durationMs", (double)j->took_ms);
        add_health(d, cmd->m->store);
    }
    free(j);
    cmd->job = NULL;
}

static int queue_store_job(ctl_cmd *cmd, void (*work)(ctl_cmd *))
{
    store_job *j = calloc(1, sizeof(*j));
    if (!j) return ctl_error(cmd, "out of memory");
    cmd->job = j;
    cmd->work = work;
    cmd->done = store_done;
    return ctl_queue(cmd);
}

static int resume_store(ctl_cmd *cmd)
{
    return queue_store_job(cmd, resume_work);
}

static int compact_store(ctl_cmd *cmd)
{
    return queue_store_job(cmd, compact_work);
}

const ctl_def ctl_ops_cmds[] = {
    {"getStats", get_stats, ""},
    {"backup", backup, "name"},
    {"resumeStore", resume_store, ""},
    {"compactStore", compact_store, ""},
    {NULL, NULL, NULL},
};
