/* redis — the plugin's Redis thread. See redis.h for the idea.
 *
 * Shared state, all under `lock`: `queue` (jobs the main thread flushed,
 * FIFO), `done` (read jobs answered, for the main thread), `stop`, and
 * `up_event` (the thread connected: call on_up). The main thread's own
 * `pass` list needs no lock. The thread wakes the main thread through one
 * mqc_async; its callback delivers `done` and `up_event`.
 *
 * INVARIANT: a job is owned by exactly one of pass, queue, the thread's
 * batch, done, or the callback running it; whoever holds it frees it. */
#include "redis.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mqc_clock.h"
#include "mqc_id.h"

#include <mosquitto.h>
#include <mosquitto_broker.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
/* Writes queued while the thread is behind; beyond it they are dropped
 * and the next reconnect's rebuild puts Redis right. */
#define QUEUE_MAX 200000
/* Queued writes are handed to the thread at most every FLUSH_MS, or once
 * FLUSH_JOBS are waiting (mqc_redis_flush). */
#define FLUSH_MS 5
#define FLUSH_JOBS 256

typedef enum { J_SESS, J_PRES, J_READ, J_REBUILD, J_BYE } job_kind;

typedef struct rb_sess {
    char user[MQC_ID_BUF];
    char device[MQC_ID_BUF];
    int64_t ms;
    char transport[16];
} rb_sess;

typedef struct job {
    job_kind kind;
    struct job *next;
    /* J_SESS (present = add/remove), J_PRES (present = online) */
    char user[MQC_ID_BUF];
    char device[MQC_ID_BUF];
    char transport[16];
    int present;
    int64_t ms;
    int64_t seen_ms; /* J_SESS: the pushseen value (docs/PUSH.md) */
    /* J_READ */
    char (*users)[MQC_ID_BUF];
    mqc_pres *res;
    size_t n;
    mqc_redis_read_cb cb;
    void *data;
    /* J_REBUILD: live sessions, and online users (in rb_sess, device "") */
    rb_sess *sess, *online;
    size_t n_sess, cap_sess, n_online, cap_online;
} job;

struct mqc_redis {
    mqc_redis_config cfg;
    char *host, *socket, *password, *prefix, *node;
    mqc_wake *wake;
    mqc_async *async;
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job *queue, *queue_tail;
    size_t queued;
    job *done, *done_tail;
    int stop;
    int up_event;
    int down_event;        /* down_reason changed: log it */
    char down_reason[160]; /* why Redis is unusable ("" while up) */
    _Atomic int up;
    /* Successful connects, for metrics. */
    _Atomic uint64_t connects;
    job *pass, *pass_tail; /* main thread only, with the next three */
    size_t n_pass;
    int urgent; /* a read, rebuild or goodbye waits in pass */
    int64_t last_flush_ms;
    job *rebuild;  /* main thread: being filled */
    unsigned seed; /* thread: jitter */
    /* Thread only: offline transitions that could not be written (Redis
     * was away), replayed by the next rebuild with their real last seen;
     * and this node's last liveness refresh before the current connection
     * (the last seen of sessions an earlier life of the node left). */
    job *missed, *missed_tail;
    size_t n_missed;
    int64_t prev_seen;
};

static void job_free(job *j)
{
    if (!j) return;
    free(j->users);
    free(j->res);
    free(j->sess);
    free(j->online);
    free(j);
}

static void list_free(job *j)
{
    while (j) {
        job *next = j->next;
        job_free(j);
        j = next;
    }
}

static void append(job **head, job **tail, job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

/* ---- the main thread's side ------------------------------------------- */

/* The async's callback: a reconnect to announce, read results to deliver. */
static void on_async(void *data)
{
    mqc_redis *r = data;
    pthread_mutex_lock(&r->lock);
    job *done = r->done;
    r->done = r->done_tail = NULL;
    int up = r->up_event;
    r->up_event = 0;
    char why[sizeof(r->down_reason)] = "";
    if (r->down_event) snprintf(why, sizeof(why), "%s", r->down_reason);
    r->down_event = 0;
    pthread_mutex_unlock(&r->lock);
    /* Broker logging happens here, on the main thread, once per change. */
    if (why[0])
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "mqchat: Redis unavailable (%s); presence reads UNKNOWN until it is "
                             "back, messages are not affected",
                             why);
    if (up && r->cfg.on_up) r->cfg.on_up(r->cfg.data);
    while (done) {
        job *next = done->next;
        done->cb(done->data, done->res, done->n);
        job_free(done);
        done = next;
    }
}

static job *job_new(job_kind kind)
{
    job *j = calloc(1, sizeof(*j));
    if (j) j->kind = kind;
    return j;
}

static void queue_pass(mqc_redis *r, job *j)
{
    append(&r->pass, &r->pass_tail, j);
    r->n_pass++;
    if (j->kind != J_SESS && j->kind != J_PRES) r->urgent = 1;
}

void mqc_redis_session(mqc_redis *r, const char *user, const char *device, int present,
                       int64_t connect_ms, const char *transport)
{
    job *j = job_new(J_SESS);
    if (!j) return; /* the next rebuild puts it right */
    snprintf(j->user, sizeof(j->user), "%s", user);
    snprintf(j->device, sizeof(j->device), "%s", device);
    snprintf(j->transport, sizeof(j->transport), "%s", transport ? transport : "mqtt");
    j->present = present;
    j->ms = connect_ms;
    /* When the event happened, not when the thread writes it: pushd
     * compares it with message times. A device that left at ms D saw
     * what was stored before D (live); a message in D itself may have
     * come after it left, so a disconnect says D - 1. */
    j->seen_ms = mqc_wall_ms() - (present ? 0 : 1);
    queue_pass(r, j);
}

void mqc_redis_presence(mqc_redis *r, const char *user, int online, int64_t ms)
{
    job *j = job_new(J_PRES);
    if (!j) return;
    snprintf(j->user, sizeof(j->user), "%s", user);
    j->present = online;
    j->ms = ms;
    queue_pass(r, j);
}

int mqc_redis_read(mqc_redis *r, const char *const *users, size_t n, mqc_redis_read_cb cb,
                   void *data)
{
    if (!mqc_redis_up(r) || n == 0) return -1;
    job *j = job_new(J_READ);
    if (!j) return -1;
    j->users = calloc(n, sizeof(*j->users));
    j->res = calloc(n, sizeof(*j->res));
    if (!j->users || !j->res) {
        job_free(j);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        snprintf(j->users[i], sizeof(j->users[i]), "%s", users[i]);
    j->n = n;
    j->cb = cb;
    j->data = data;
    queue_pass(r, j);
    return 0;
}

void mqc_redis_rebuild_begin(mqc_redis *r)
{
    job_free(r->rebuild);
    r->rebuild = job_new(J_REBUILD);
}

static rb_sess *rb_push(rb_sess **v, size_t *n, size_t *cap)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        rb_sess *nv = realloc(*v, c * sizeof(*nv));
        if (!nv) return NULL;
        *v = nv;
        *cap = c;
    }
    rb_sess *s = &(*v)[(*n)++];
    memset(s, 0, sizeof(*s));
    return s;
}

void mqc_redis_rebuild_session(mqc_redis *r, const char *user, const char *device,
                               int64_t connect_ms, const char *transport)
{
    job *j = r->rebuild;
    rb_sess *s = j ? rb_push(&j->sess, &j->n_sess, &j->cap_sess) : NULL;
    if (!s) return;
    snprintf(s->user, sizeof(s->user), "%s", user);
    snprintf(s->device, sizeof(s->device), "%s", device);
    snprintf(s->transport, sizeof(s->transport), "%s", transport ? transport : "mqtt");
    s->ms = connect_ms;
}

void mqc_redis_rebuild_online(mqc_redis *r, const char *user, int64_t since_ms)
{
    job *j = r->rebuild;
    rb_sess *s = j ? rb_push(&j->online, &j->n_online, &j->cap_online) : NULL;
    if (!s) return;
    snprintf(s->user, sizeof(s->user), "%s", user);
    s->ms = since_ms;
}

void mqc_redis_rebuild_end(mqc_redis *r)
{
    if (!r->rebuild) return;
    queue_pass(r, r->rebuild);
    r->rebuild = NULL;
}

void mqc_redis_bye(mqc_redis *r)
{
    job *j = job_new(J_BYE);
    if (j) queue_pass(r, j);
}

void mqc_redis_flush(mqc_redis *r)
{
    if (!r->pass) return;
    /* Coalesce: under connection churn mosquitto runs a pass for nearly
     * every packet, and a hand-over per pass cost a thread wake-up and a
     * Redis round trip per event. Writes wait up to FLUSH_MS (or until
     * FLUSH_JOBS are queued); reads, rebuilds and a stop go at once. */
    int64_t now = mqc_mono_ms();
    if (!r->urgent && r->n_pass < FLUSH_JOBS && now - r->last_flush_ms < FLUSH_MS) return;
    r->last_flush_ms = now;
    r->urgent = 0;
    r->n_pass = 0;
    pthread_mutex_lock(&r->lock);
    for (job *j = r->pass, *next; j; j = next) {
        next = j->next;
        if (r->queued >= QUEUE_MAX && j->kind != J_READ && j->kind != J_REBUILD) {
            job_free(j); /* too far behind: the next rebuild repairs it */
            continue;
        }
        append(&r->queue, &r->queue_tail, j);
        r->queued++;
    }
    r->pass = r->pass_tail = NULL;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

int mqc_redis_up(const mqc_redis *r)
{
    return r && atomic_load(&r->up);
}

uint64_t mqc_redis_connects(const mqc_redis *r)
{
    return r ? atomic_load(&r->connects) : 0;
}

/* ---- the thread ------------------------------------------------------------ */

/* A command as an argv of strings. */
typedef struct cmd {
    int argc;
    const char *argv[8];
    char buf[8][320];
} cmd;

static void cmd_init(cmd *c)
{
    c->argc = 0;
}

static void cmd_arg(cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cmd_arg(cmd *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->buf[c->argc], sizeof(c->buf[0]), fmt, ap);
    va_end(ap);
    c->argv[c->argc] = c->buf[c->argc];
    c->argc++;
}

/* Append one command to the pipeline; -1 on a client-side failure. */
static int send_cmd(mqc_redis *r, redisContext *ctx, cmd *c)
{
    return redisAppendCommandArgv(ctx, c->argc, c->argv, NULL) == REDIS_OK ? 0 : -1;
}

/* Read n replies; keep them in out[] (may be NULL: discard). -1 when the
 * connection failed (then out[] is all NULL). */
static int replies(redisContext *ctx, size_t n, redisReply **out)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        void *rep = NULL;
        if (rc == 0 && redisGetReply(ctx, &rep) != REDIS_OK) rc = -1;
        if (out)
            out[i] = rep;
        else if (rep)
            freeReplyObject(rep);
    }
    if (rc && out)
        for (size_t i = 0; i < n; i++) {
            if (out[i]) freeReplyObject(out[i]);
            out[i] = NULL;
        }
    return rc;
}

static void key_sess(mqc_redis *r, cmd *c, const char *user)
{
    cmd_arg(c, "%ssess:%s", r->prefix, user);
}

/* The commands of one write job (J_SESS, J_PRES, J_BYE); returns how many. */
static int write_cmds(mqc_redis *r, redisContext *ctx, const job *j)
{
    cmd c;
    int n = 0;
    if (j->kind == J_BYE) {
        /* A clean stop: the node is gone now, not when its key expires. */
        cmd_init(&c);
        cmd_arg(&c, "SET");
        cmd_arg(&c, "%snodeseen:%s", r->prefix, r->node);
        cmd_arg(&c, "%lld", (long long)mqc_wall_ms());
        n += send_cmd(r, ctx, &c) == 0;
        cmd_init(&c);
        cmd_arg(&c, "DEL");
        cmd_arg(&c, "%snode:%s", r->prefix, r->node);
        n += send_cmd(r, ctx, &c) == 0;
        return n;
    }
    if (j->kind == J_SESS) {
        cmd_init(&c);
        cmd_arg(&c, j->present ? "HSET" : "HDEL");
        key_sess(r, &c, j->user);
        cmd_arg(&c, "%s", j->device);
        if (j->present) cmd_arg(&c, "%s %lld %s", r->node, (long long)j->ms, j->transport);
        n += send_cmd(r, ctx, &c) == 0;
        cmd_init(&c);
        cmd_arg(&c, j->present ? "SADD" : "SREM");
        cmd_arg(&c, "%snodesess:%s", r->prefix, r->node);
        cmd_arg(&c, "%s:%s", j->user, j->device);
        n += send_cmd(r, ctx, &c) == 0;
        if (r->cfg.pushseen) {
            /* When the device was last here (docs/PUSH.md): pushd skips
             * pushes about messages stored before it. */
            cmd_init(&c);
            cmd_arg(&c, "SET");
            cmd_arg(&c, "%spushseen:%s:%s", r->prefix, j->user, j->device);
            cmd_arg(&c, "%lld", (long long)j->seen_ms);
            cmd_arg(&c, "EX");
            cmd_arg(&c, "2592000");
            n += send_cmd(r, ctx, &c) == 0;
        }
    } else {
        cmd_init(&c);
        cmd_arg(&c, "HSET");
        cmd_arg(&c, "%spres:%s", r->prefix, j->user);
        cmd_arg(&c, "state");
        cmd_arg(&c, j->present ? "online" : "offline");
        cmd_arg(&c, "node");
        cmd_arg(&c, "%s", r->node);
        cmd_arg(&c, j->present ? "since" : "last_seen");
        cmd_arg(&c, "%lld", (long long)j->ms);
        n += send_cmd(r, ctx, &c) == 0;
    }
    return n;
}

/* Remember why Redis is unusable, for the main thread to log once. */
static void set_down(mqc_redis *r, const char *why)
{
    pthread_mutex_lock(&r->lock);
    if (strcmp(r->down_reason, why) != 0) {
        snprintf(r->down_reason, sizeof(r->down_reason), "%s", why);
        r->down_event = 1;
    }
    pthread_mutex_unlock(&r->lock);
    mqc_async_send(r->async);
}

static int liveness(mqc_redis *r, redisContext *ctx)
{
    cmd c;
    cmd_init(&c);
    cmd_arg(&c, "SET");
    cmd_arg(&c, "%snode:%s", r->prefix, r->node);
    cmd_arg(&c, "1");
    cmd_arg(&c, "EX");
    cmd_arg(&c, "%lld", (long long)r->cfg.node_ttl_s);
    int n = send_cmd(r, ctx, &c) == 0;
    cmd_init(&c);
    cmd_arg(&c, "SET");
    cmd_arg(&c, "%snodeseen:%s", r->prefix, r->node);
    cmd_arg(&c, "%lld", (long long)mqc_wall_ms());
    n += send_cmd(r, ctx, &c) == 0;
    redisReply *rep[2] = {NULL, NULL};
    if (replies(ctx, (size_t)n, rep)) return -1;
    /* An error reply (NOAUTH, READONLY, OOM, ...) is an unusable Redis:
     * treat it as down, say why once, and retry with backoff. */
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!rc && rep[i] && rep[i]->type == REDIS_REPLY_ERROR) {
            set_down(r, rep[i]->str);
            rc = -1;
        }
        if (rep[i]) freeReplyObject(rep[i]);
    }
    return rc;
}

/* This node's last liveness refresh as Redis has it (0: none). */
static int64_t last_refresh(mqc_redis *r, redisContext *ctx)
{
    cmd c;
    cmd_init(&c);
    cmd_arg(&c, "GET");
    cmd_arg(&c, "%snodeseen:%s", r->prefix, r->node);
    redisReply *rep = NULL;
    if (send_cmd(r, ctx, &c) || replies(ctx, 1, &rep)) return 0;
    int64_t v = rep && rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10) : 0;
    if (rep) freeReplyObject(rep);
    return v;
}

static const char *field(const redisReply *rep, size_t i)
{
    if (!rep || rep->type != REDIS_REPLY_ARRAY || i >= rep->elements) return NULL;
    const redisReply *e = rep->element[i];
    return e && e->type == REDIS_REPLY_STRING ? e->str : NULL;
}

/* A read: HMGET each user's presence, then, for users online on another
 * node, whether that node still lives and when it was last seen. */
static int do_read(mqc_redis *r, redisContext *ctx, job *j)
{
    redisReply **rep = calloc(j->n, sizeof(*rep));
    if (!rep) return 0; /* answered unknown */
    cmd c;
    for (size_t i = 0; i < j->n; i++) {
        cmd_init(&c);
        cmd_arg(&c, "HMGET");
        cmd_arg(&c, "%spres:%s", r->prefix, j->users[i]);
        cmd_arg(&c, "state");
        cmd_arg(&c, "node");
        cmd_arg(&c, "last_seen");
        send_cmd(r, ctx, &c);
    }
    if (replies(ctx, j->n, rep)) {
        free(rep);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < j->n && rc == 0; i++) {
        const char *state = field(rep[i], 0), *node = field(rep[i], 1), *seen = field(rep[i], 2);
        mqc_pres *p = &j->res[i];
        p->state = MQC_PRES_OFFLINE; /* never seen: offline, no last seen */
        p->last_seen_ms = seen ? strtoll(seen, NULL, 10) : 0;
        if (!state || strcmp(state, "online") != 0 || !node) continue;
        /* Online on some node: only while that node's liveness key lives. */
        redisReply *live[2] = {NULL, NULL};
        cmd_init(&c);
        cmd_arg(&c, "EXISTS");
        cmd_arg(&c, "%snode:%s", r->prefix, node);
        send_cmd(r, ctx, &c);
        cmd_init(&c);
        cmd_arg(&c, "GET");
        cmd_arg(&c, "%snodeseen:%s", r->prefix, node);
        send_cmd(r, ctx, &c);
        if (replies(ctx, 2, live)) {
            rc = -1;
            break;
        }
        int alive = live[0] && live[0]->type == REDIS_REPLY_INTEGER && live[0]->integer == 1;
        if (alive && strcmp(node, r->node) != 0) {
            p->state = MQC_PRES_ONLINE;
            p->last_seen_ms = 0;
        } else {
            /* A dead node, or this node's own stale entry (the main thread
             * asks only about users not connected here). */
            p->last_seen_ms = live[1] && live[1]->type == REDIS_REPLY_STRING
                                  ? strtoll(live[1]->str, NULL, 10)
                                  : p->last_seen_ms;
        }
        for (int k = 0; k < 2; k++)
            if (live[k]) freeReplyObject(live[k]);
    }
    for (size_t i = 0; i < j->n; i++)
        if (rep[i]) freeReplyObject(rep[i]);
    free(rep);
    return rc;
}

/* The snapshot is sorted once (by user, then device) so that each member
 * of nodesess:N is found by binary search: a rebuild of 100k sessions is
 * O(n log n), not O(n^2). */
static int rb_cmp(const void *a, const void *b)
{
    const rb_sess *x = a, *y = b;
    int c = strcmp(x->user, y->user);
    return c ? c : strcmp(x->device, y->device);
}

static int live_has(const job *j, const char *member)
{
    const char *colon = strchr(member, ':');
    if (!colon || (size_t)(colon - member) > MQC_ID_MAX || strlen(colon + 1) > MQC_ID_MAX) return 0;
    rb_sess key;
    snprintf(key.user, sizeof(key.user), "%.*s", (int)(colon - member), member);
    snprintf(key.device, sizeof(key.device), "%s", colon + 1);
    return j->n_sess && bsearch(&key, j->sess, j->n_sess, sizeof(*j->sess), rb_cmp) != NULL;
}

static int online_has(const job *j, const char *user)
{
    rb_sess key;
    snprintf(key.user, sizeof(key.user), "%s", user);
    key.device[0] = '\0'; /* online entries have an empty device */
    return j->n_online && bsearch(&key, j->online, j->n_online, sizeof(*j->online), rb_cmp) != NULL;
}

/* Replace what Redis holds for this node with the main thread's snapshot. */
static int do_rebuild(mqc_redis *r, redisContext *ctx, job *j)
{
    cmd c;
    if (j->n_sess) qsort(j->sess, j->n_sess, sizeof(*j->sess), rb_cmp);
    if (j->n_online) qsort(j->online, j->n_online, sizeof(*j->online), rb_cmp);
    redisReply *members = NULL;
    cmd_init(&c);
    cmd_arg(&c, "SMEMBERS");
    cmd_arg(&c, "%snodesess:%s", r->prefix, r->node);
    send_cmd(r, ctx, &c);
    if (replies(ctx, 1, &members)) return -1;
    int64_t now = mqc_wall_ms();
    size_t n = 0;
    for (size_t i = 0; members && members->type == REDIS_REPLY_ARRAY && i < members->elements;
         i++) {
        const char *m = members->element[i]->str;
        const char *colon = m ? strchr(m, ':') : NULL;
        if (!colon || live_has(j, m)) continue;
        /* A session of an earlier life of this node (or one that ended
         * while Redis was away): gone, and its user offline unless online
         * now. */
        char user[MQC_ID_BUF];
        snprintf(user, sizeof(user), "%.*s", (int)(colon - m), m);
        cmd_init(&c);
        cmd_arg(&c, "HDEL");
        key_sess(r, &c, user);
        cmd_arg(&c, "%s", colon + 1);
        n += send_cmd(r, ctx, &c) == 0;
        if (!online_has(j, user)) {
            job off = {.kind = J_PRES, .present = 0, .ms = r->prev_seen ? r->prev_seen : now};
            snprintf(off.user, sizeof(off.user), "%s", user);
            n += (size_t)write_cmds(r, ctx, &off);
        }
    }
    if (members) freeReplyObject(members);
    /* Offline transitions Redis missed, with the time the user really left
     * (after the guesses above, so they win). */
    for (job *m = r->missed, *next; m; m = next) {
        next = m->next;
        if (!online_has(j, m->user)) n += (size_t)write_cmds(r, ctx, m);
        job_free(m);
    }
    r->missed = r->missed_tail = NULL;
    r->n_missed = 0;
    cmd_init(&c);
    cmd_arg(&c, "DEL");
    cmd_arg(&c, "%snodesess:%s", r->prefix, r->node);
    n += send_cmd(r, ctx, &c) == 0;
    for (size_t i = 0; i < j->n_sess; i++) {
        /* A live session's pushseen is when it connected. */
        job s = {.kind = J_SESS, .present = 1, .ms = j->sess[i].ms, .seen_ms = j->sess[i].ms};
        memcpy(s.user, j->sess[i].user, sizeof(s.user));
        memcpy(s.device, j->sess[i].device, sizeof(s.device));
        memcpy(s.transport, j->sess[i].transport, sizeof(s.transport));
        n += (size_t)write_cmds(r, ctx, &s);
    }
    for (size_t i = 0; i < j->n_online; i++) {
        job p = {.kind = J_PRES, .present = 1, .ms = j->online[i].ms};
        memcpy(p.user, j->online[i].user, sizeof(p.user));
        n += (size_t)write_cmds(r, ctx, &p);
    }
    return replies(ctx, n, NULL);
}

/* A write that did not reach Redis: an offline transition is kept for the
 * next rebuild (nothing else knows when the user left); the rest is
 * rebuilt from the live state anyway. */
static void keep_or_free(mqc_redis *r, job *j)
{
    if (j->kind == J_PRES && !j->present && r->n_missed < QUEUE_MAX) {
        append(&r->missed, &r->missed_tail, j);
        r->n_missed++;
        return;
    }
    job_free(j);
}

/* Hand an answered (or failed: all unknown) read back to the main thread. */
static void deliver(mqc_redis *r, job *j, int failed)
{
    if (failed)
        for (size_t i = 0; i < j->n; i++)
            j->res[i] = (mqc_pres){MQC_PRES_UNKNOWN, 0};
    pthread_mutex_lock(&r->lock);
    append(&r->done, &r->done_tail, j);
    pthread_mutex_unlock(&r->lock);
    mqc_async_send(r->async);
}

/* Run a batch in order: runs of writes as one pipeline, reads and
 * rebuilds as they come. Returns -1 when the connection failed; the rest
 * of the batch is then dropped (reads answered unknown). */
/* Read the replies of the writes sent so far; the offline transitions
 * among them are kept when the connection failed (they may be lost). */
static int settle(mqc_redis *r, redisContext *ctx, size_t *pending, job **sent)
{
    int failed = *pending && replies(ctx, *pending, NULL) != 0;
    *pending = 0;
    for (job *j = *sent, *next; j; j = next) {
        next = j->next;
        if (failed)
            keep_or_free(r, j);
        else
            job_free(j);
    }
    *sent = NULL;
    return failed;
}

static int run_batch(mqc_redis *r, redisContext *ctx, job *batch)
{
    int failed = 0;
    size_t pending = 0;
    job *sent = NULL, *sent_tail = NULL;
    for (job *j = batch, *next; j; j = next) {
        next = j->next;
        if (j->kind == J_SESS || j->kind == J_PRES || j->kind == J_BYE) {
            if (failed) {
                keep_or_free(r, j);
                continue;
            }
            pending += (size_t)write_cmds(r, ctx, j);
            append(&sent, &sent_tail, j);
            continue;
        }
        if (!failed) failed = settle(r, ctx, &pending, &sent);
        sent_tail = NULL;
        if (j->kind == J_READ) {
            failed = failed || do_read(r, ctx, j) != 0;
            deliver(r, j, failed);
        } else {
            if (!failed) failed = do_rebuild(r, ctx, j) != 0;
            job_free(j);
        }
    }
    if (!failed) failed = settle(r, ctx, &pending, &sent);
    return failed ? -1 : 0;
}

static redisContext *connect_redis(mqc_redis *r)
{
    struct timeval tv = {r->cfg.timeout_ms / 1000, (r->cfg.timeout_ms % 1000) * 1000};
    redisContext *ctx = r->socket ? redisConnectUnixWithTimeout(r->socket, tv)
                                  : redisConnectWithTimeout(r->host, r->cfg.port, tv);
    if (!ctx || ctx->err || redisSetTimeout(ctx, tv) != REDIS_OK) {
        set_down(r, ctx && ctx->err ? ctx->errstr : "cannot connect");
        if (ctx) redisFree(ctx);
        return NULL;
    }
    if (r->password) {
        const char *argv[2] = {"AUTH", r->password};
        redisReply *rep = redisCommandArgv(ctx, 2, argv, NULL);
        int ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (!ok) set_down(r, rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "AUTH failed");
        if (rep) freeReplyObject(rep);
        if (!ok) {
            redisFree(ctx);
            return NULL;
        }
    }
    return ctx;
}

/* Sleep up to ms, until stopped, or (with for_work) until work is queued.
 * Called with lock held. */
static void nap(mqc_redis *r, int64_t ms, int for_work)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the condition variable's clock */
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    while (!r->stop && !(for_work && r->queue))
        if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) == ETIMEDOUT) break;
}

/* Take everything queued (lock held). */
static job *take(mqc_redis *r)
{
    job *b = r->queue;
    r->queue = r->queue_tail = NULL;
    r->queued = 0;
    return b;
}

/* Disconnected: writes are dropped (the rebuild repairs them), reads get
 * "unknown". */
static void drop(mqc_redis *r, job *batch)
{
    for (job *j = batch, *next; j; j = next) {
        next = j->next;
        if (j->kind == J_READ)
            deliver(r, j, 1);
        else
            keep_or_free(r, j);
    }
}

static void *redis_main(void *arg)
{
    mqc_redis *r = arg;
    redisContext *ctx = NULL;
    int64_t backoff = BACKOFF_MIN_MS, next_live = 0;
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        if (!ctx) {
            pthread_mutex_unlock(&r->lock);
            ctx = connect_redis(r);
            if (ctx) r->prev_seen = last_refresh(r, ctx);
            if (ctx && liveness(r, ctx)) {
                redisFree(ctx);
                ctx = NULL;
            }
            pthread_mutex_lock(&r->lock);
            if (!ctx) {
                job *b = take(r);
                pthread_mutex_unlock(&r->lock);
                drop(r, b);
                pthread_mutex_lock(&r->lock);
                /* Full jitter: anywhere in [0, backoff]. */
                nap(r, (int64_t)(rand_r(&r->seed) % (unsigned)(backoff + 1)), 0);
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            backoff = BACKOFF_MIN_MS;
            next_live = mqc_mono_ms() + r->cfg.node_ttl_s * 1000 / 3;
            atomic_store(&r->up, 1);
            atomic_fetch_add(&r->connects, 1);
            r->up_event = 1;
            r->down_reason[0] = '\0'; /* the next failure is news again */
            mqc_async_send(r->async);
        }
        /* Deadlines on the monotonic clock: a wall-clock step must not
         * delay the liveness refresh (the node would read as dead). */
        int64_t now = mqc_mono_ms();
        if (!r->queue && now < next_live) {
            nap(r, next_live - now, 1);
            if (!r->queue && !r->stop && mqc_mono_ms() < next_live) continue;
        }
        job *batch = take(r);
        pthread_mutex_unlock(&r->lock);
        int bad = 0;
        if (mqc_mono_ms() >= next_live) {
            bad = liveness(r, ctx);
            next_live = mqc_mono_ms() + r->cfg.node_ttl_s * 1000 / 3;
        }
        if (bad)
            drop(r, batch);
        else
            bad = run_batch(r, ctx, batch);
        pthread_mutex_lock(&r->lock);
        if (bad) {
            /* Unlocked below: set_down takes the lock itself. */
            pthread_mutex_unlock(&r->lock);
            if (ctx->err) set_down(r, ctx->errstr);
            pthread_mutex_lock(&r->lock);
            redisFree(ctx);
            ctx = NULL;
            atomic_store(&r->up, 0);
        }
    }
    /* Stopping: what the main thread queued last (a clean stop's offline
     * transitions and goodbye) is sent if Redis is there, within the
     * command timeout; otherwise dropped. */
    job *b = take(r);
    pthread_mutex_unlock(&r->lock);
    if (ctx && b)
        run_batch(r, ctx, b);
    else
        list_free(b);
    list_free(r->missed);
    r->missed = r->missed_tail = NULL;
    if (ctx) redisFree(ctx);
    atomic_store(&r->up, 0);
    return NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

mqc_redis *mqc_redis_new(const mqc_redis_config *cfg, mqc_wake *wake, char *err, size_t errlen)
{
    mqc_redis *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->cfg = *cfg;
    r->host = dup_or_null(cfg->host);
    r->socket = dup_or_null(cfg->socket);
    r->password = dup_or_null(cfg->password);
    r->prefix = dup_or_null(cfg->prefix);
    r->node = dup_or_null(cfg->node);
    r->wake = wake;
    r->seed = (unsigned)mqc_wall_ms() ^ (unsigned)(uintptr_t)r;
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    r->async = mqc_async_new(wake, on_async, r);
    int rc =
        r->async && r->prefix && r->node ? mqc_thread_start(&r->thread, redis_main, r) : ENOMEM;
    if (rc) {
        snprintf(err, errlen, "cannot start the Redis thread: %s", strerror(rc));
        mqc_redis_free(r);
        return NULL;
    }
    r->running = 1;
    return r;
}

void mqc_redis_free(mqc_redis *r)
{
    if (!r) return;
    if (r->running) {
        pthread_mutex_lock(&r->lock);
        r->stop = 1;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
    }
    /* The thread is gone: nothing can send the async any more. */
    mqc_async_free(r->async);
    list_free(r->queue);
    list_free(r->done);
    list_free(r->pass);
    job_free(r->rebuild);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r->host);
    free(r->socket);
    free(r->password);
    free(r->prefix);
    free(r->node);
    free(r);
}
