/* drain — the plugin's push thread: outbox → Redis Stream, feedback → store.
 *
 * Push jobs are written into the store's outbox in the batch of the message
 * they announce (rules/push.c), so they survive a crash with it. This
 * thread moves them to Redis (docs/PUSH.md): it reads the outbox in id
 * order, sends one XADD per job to {prefix}push as one pipeline, and only
 * once Redis answered every XADD deletes the jobs from the outbox. If the
 * broker dies between the XADD and the delete, the jobs are sent again
 * after the restart: at least once, never lost. While Redis is down the
 * jobs wait in the outbox; past push_outbox_max of them the rules stop
 * writing new ones (mqc_push_blocked), and the count is kept.
 *
 * A large conversation's message writes one job for the conversation. It
 * is held here for push_large_interval_ms — later messages of the same
 * conversation replace it — and then expanded: every other member's
 * device with a token that is not connected (presence's session hash), has
 * not been here since the message (pushseen) and has no push for the
 * conversation it has not seen yet (pushpend) gets one job. So a member
 * device has at most one pending push per conversation, and the expansion
 * costs a member scan per conversation per interval, not per message.
 * Held jobs stay in the outbox until expanded (the delete is "up to").
 *
 * It also reads {prefix}push:feedback (a consumer group "mqchat") and
 * removes the tokens pushd found invalid, if the device still has them.
 *
 * The thread owns its Redis connection (hiredis, blocking, with a timeout)
 * and calls only thread-safe store functions. It never calls the broker:
 * log lines go to the main thread through the wake facility. */
#include "drain.h"
#include "job.h"

#include "mqc_clock.h"
#include "mqc_id.h"

#include <assert.h>
#include <hiredis/hiredis.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READ_BATCH 500
#define EXPAND_BATCH 200
#define PENDING_TTL_S 86400
/* Feedback is read this often: one command per interval is the thread's
 * whole idle cost (invalid tokens are not urgent). */
#define FEEDBACK_EVERY_MS 5000
/* Reconnects back off with full jitter from 100 ms up to this: a job that
 * waited through an outage reaches Redis at most this long after it is
 * back (an attempt is one TCP connect). */
#define BACKOFF_MAX_MS 5000

/* One field of a job (pointers into the job's bytes). */
typedef struct jfield {
    const char *name, *value;
} jfield;

#define JOB_FIELDS 24

/* A parsed outbox job. */
typedef struct pjob {
    uint64_t id, seq;
    int64_t ts;
    jfield f[JOB_FIELDS];
    int n;
} pjob;

/* A large conversation's job waiting for its expansion. */
typedef struct held {
    char conv[MQC_ID_BUF];
    uint64_t min_id, id, seq;
    int64_t ts, due_ms;
    char sender[MQC_ID_BUF];
    char collapse[72];
    char preview[160];
    struct held *next;
} held;

struct mqc_push {
    mqc_push_config cfg;
    char *host, *socket, *password, *prefix, *node;
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop, kicked; /* under lock */
    _Atomic int blocked, up;
    _Atomic uint64_t sent, expanded, collapsed, removed, invalid, deleted_upto, connects;
    uint64_t read_upto; /* thread only: highest outbox id read */
    held *held;         /* thread only */
    int64_t backoff_ms;
    int64_t next_feedback_ms; /* thread only */
    unsigned seed;            /* rand_r: the jitter */
    char down_reason[128];    /* thread only: the last reason logged */
    int down_logged;          /* thread only: "unreachable" said since the last connect */
};

/* ---- logging through the main thread ------------------------------------ */

typedef struct logmsg {
    int level;
    char text[300];
} logmsg;

static void log_main(void *data)
{
    logmsg *m = data;
    mosquitto_log_printf(m->level, "mqchat: push: %s", m->text);
    free(m);
}

static void post_log(mqc_push *p, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void post_log(mqc_push *p, int level, const char *fmt, ...)
{
    logmsg *m = malloc(sizeof(*m));
    if (!m) return;
    m->level = level;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->text, sizeof(m->text), fmt, ap);
    va_end(ap);
    if (mqc_wake_post(p->cfg.wake, log_main, m)) free(m);
}

/* ---- jobs ------------------------------------------------------------------ */

static uint64_t be64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

/* Split a job into its fields and the seq/time the store appended. 0, or
 * -1 for a job that does not parse (it is dropped and counted). */
static int parse_job(const mqstore_job *j, pjob *out)
{
    memset(out, 0, sizeof(*out));
    out->id = j->id;
    if (j->len < MQSTORE_JOB_SUFFIX) return -1;
    size_t body = j->len - MQSTORE_JOB_SUFFIX;
    out->seq = be64(j->data + body);
    out->ts = (int64_t)be64(j->data + body + 8);
    const char *s = (const char *)j->data, *end = s + body;
    while (s < end) {
        const char *name = s;
        const char *nul = memchr(s, '\0', (size_t)(end - s));
        if (!nul) return -1;
        const char *value = nul + 1;
        const char *vnul = value < end ? memchr(value, '\0', (size_t)(end - value)) : NULL;
        if (!vnul || out->n == JOB_FIELDS) return -1;
        out->f[out->n++] = (jfield){name, value};
        s = vnul + 1;
    }
    return out->n ? 0 : -1;
}

static const char *get(const pjob *j, const char *name)
{
    for (int i = 0; i < j->n; i++)
        if (strcmp(j->f[i].name, name) == 0) return j->f[i].value;
    return NULL;
}

/* ---- Redis --------------------------------------------------------------- */

static redisContext *connect_redis(mqc_push *p)
{
    struct timeval tv = {p->cfg.timeout_ms / 1000, (p->cfg.timeout_ms % 1000) * 1000};
    redisContext *c = p->socket ? redisConnectUnixWithTimeout(p->socket, tv)
                                : redisConnectWithTimeout(p->host, p->cfg.port, tv);
    if (!c || c->err) {
        snprintf(p->down_reason, sizeof(p->down_reason), "%s", c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (p->password) {
        redisReply *r = redisCommand(c, "AUTH %s", p->password);
        int ok = r && r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (!ok) {
            snprintf(p->down_reason, sizeof(p->down_reason), "AUTH refused");
            redisFree(c);
            return NULL;
        }
    }
    /* The feedback stream's consumer group (BUSYGROUP: it exists). */
    redisReply *r = redisCommand(c, "XGROUP CREATE %spush:feedback mqchat $ MKSTREAM", p->prefix);
    int ok = r && (r->type != REDIS_REPLY_ERROR || strstr(r->str, "BUSYGROUP"));
    freeReplyObject(r);
    if (!ok) {
        snprintf(p->down_reason, sizeof(p->down_reason), "cannot create the feedback group");
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Read n replies; 0 if every one came and none is an error. */
static int replies_ok(redisContext *c, size_t n, redisReply **keep)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        void *rep = NULL;
        if (redisGetReply(c, &rep) != REDIS_OK) return -1; /* the connection is gone */
        redisReply *r = rep;
        if (r->type == REDIS_REPLY_ERROR) rc = -1;
        if (keep)
            keep[i] = r;
        else
            freeReplyObject(r);
    }
    return rc;
}

/* An argv under construction: fields point into jobs or into buf. */
typedef struct argv_t {
    const char *v[2 * JOB_FIELDS + 16];
    size_t len[2 * JOB_FIELDS + 16];
    int n;
    char buf[4][64];
} argv_t;

static void arg(argv_t *a, const char *s)
{
    a->v[a->n] = s;
    a->len[a->n++] = strlen(s);
}

/* XADD {prefix}push * <the job's fields> job <id> seq <seq> ts <ts>. */
static void append_xadd(redisContext *c, const pjob *j, const char *job_id, const char *stream)
{
    argv_t a = {.n = 0};
    arg(&a, "XADD");
    arg(&a, stream);
    arg(&a, "*");
    for (int i = 0; i < j->n; i++) {
        if (strcmp(j->f[i].name, "kind") == 0) continue; /* ours, not the stream's */
        arg(&a, j->f[i].name);
        arg(&a, j->f[i].value);
    }
    snprintf(a.buf[0], sizeof(a.buf[0]), "%llu", (unsigned long long)j->seq);
    snprintf(a.buf[1], sizeof(a.buf[1]), "%lld", (long long)j->ts);
    arg(&a, "job");
    arg(&a, job_id);
    arg(&a, "seq");
    arg(&a, a.buf[0]);
    arg(&a, "ts");
    arg(&a, a.buf[1]);
    redisAppendCommandArgv(c, a.n, a.v, a.len);
}

/* ---- the outbox ---------------------------------------------------------- */

static held *held_find(mqc_push *p, const char *conv)
{
    for (held *h = p->held; h; h = h->next)
        if (strcmp(h->conv, conv) == 0) return h;
    return NULL;
}

/* Hold a large conversation's job (the newest replaces an older one). */
static void hold(mqc_push *p, const pjob *j)
{
    const char *conv = get(j, "conv"), *sender = get(j, "sender");
    if (!conv || !sender || !mqc_id_valid(MQC_ID_CONV, conv)) {
        atomic_fetch_add(&p->invalid, 1);
        return;
    }
    held *h = held_find(p, conv);
    if (!h) {
        if (!(h = calloc(1, sizeof(*h)))) return; /* re-read after a restart */
        snprintf(h->conv, sizeof(h->conv), "%s", conv);
        h->min_id = j->id;
        h->due_ms = mqc_mono_ms() + p->cfg.large_interval_ms;
        h->next = p->held;
        p->held = h;
    }
    h->id = j->id;
    h->seq = j->seq;
    h->ts = j->ts;
    snprintf(h->sender, sizeof(h->sender), "%s", sender);
    const char *v = get(j, "collapse");
    snprintf(h->collapse, sizeof(h->collapse), "%s", v ? v : conv);
    v = get(j, "preview");
    snprintf(h->preview, sizeof(h->preview), "%s", v ? v : "");
}

/* Delete every job up to the oldest still held (or up to what was read). */
static void delete_done(mqc_push *p)
{
    uint64_t upto = p->read_upto;
    for (held *h = p->held; h; h = h->next)
        if (h->min_id - 1 < upto) upto = h->min_id - 1;
    if (upto > atomic_load(&p->deleted_upto) &&
        mqstore_outbox_delete_upto(p->cfg.store, upto) == MQSTORE_OK)
        atomic_store(&p->deleted_upto, upto);
}

/* One pass over new outbox jobs: XADD the device jobs, hold the large
 * ones. Returns the number read, or -1 when Redis failed (nothing moves:
 * the same jobs are read again on the next connection). */
static int drain_outbox(mqc_push *p, redisContext *c)
{
    mqstore_job_list l;
    if (mqstore_outbox_read(p->cfg.store, p->read_upto, READ_BATCH, &l) != MQSTORE_OK) return 0;
    size_t n_xadd = 0;
    char stream[160], job_id[MQC_ID_BUF + 32];
    snprintf(stream, sizeof(stream), "%spush", p->prefix);
    pjob *pj = calloc(l.n ? l.n : 1, sizeof(*pj));
    if (!pj) {
        mqstore_job_list_free(&l);
        return 0;
    }
    for (size_t i = 0; i < l.n; i++) {
        if (parse_job(&l.items[i], &pj[i])) {
            atomic_fetch_add(&p->invalid, 1);
            continue;
        }
        const char *kind = get(&pj[i], "kind");
        if (kind && strcmp(kind, "device") == 0) {
            snprintf(job_id, sizeof(job_id), "%s:%llu", p->node, (unsigned long long)pj[i].id);
            append_xadd(c, &pj[i], job_id, stream);
            n_xadd++;
        }
    }
    int rc = replies_ok(c, n_xadd, NULL);
    if (rc == 0) {
        for (size_t i = 0; i < l.n; i++) {
            const char *kind = pj[i].n ? get(&pj[i], "kind") : NULL;
            if (kind && strcmp(kind, "large") == 0) hold(p, &pj[i]);
        }
        if (l.n) p->read_upto = l.items[l.n - 1].id;
        atomic_fetch_add(&p->sent, n_xadd);
        delete_done(p);
    }
    size_t n = l.n;
    free(pj);
    mqstore_job_list_free(&l);
    return rc ? -1 : (int)n;
}

/* ---- large conversations ----------------------------------------------- */

typedef struct cand {
    char user[MQC_ID_BUF];
    mqstore_push_token t; /* t.token owned by the list it came from: copied */
    char *token;
} cand;

/* Check a batch of candidates against Redis and XADD the ones due. */
static int expand_batch(mqc_push *p, redisContext *c, const held *h, cand *cs, size_t n,
                        uint64_t *serial)
{
    for (size_t i = 0; i < n; i++) {
        redisAppendCommand(c, "HGET %ssess:%s %s", p->prefix, cs[i].user, cs[i].t.device);
        redisAppendCommand(c, "GET %spushseen:%s:%s", p->prefix, cs[i].user, cs[i].t.device);
        redisAppendCommand(c, "GET %spushpend:%s:%s:%s", p->prefix, h->conv, cs[i].user,
                           cs[i].t.device);
    }
    redisReply **r = calloc(3 * n + 1, sizeof(*r));
    if (!r) return -1;
    int rc = replies_ok(c, 3 * n, r);
    size_t n_cmd = 0;
    char stream[160], job_id[MQC_ID_BUF + 48], ts[32];
    snprintf(stream, sizeof(stream), "%spush", p->prefix);
    snprintf(ts, sizeof(ts), "%lld", (long long)h->ts);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        redisReply *sess = r[3 * i], *seen = r[3 * i + 1], *pend = r[3 * i + 2];
        int64_t seen_ms = seen->type == REDIS_REPLY_STRING ? atoll(seen->str) : 0;
        int64_t pend_ms = pend->type == REDIS_REPLY_STRING ? atoll(pend->str) : 0;
        if (sess->type == REDIS_REPLY_STRING) continue; /* connected: it has it live */
        if (seen_ms >= h->ts) continue;                 /* here since the message */
        if (pend_ms && pend_ms > seen_ms) {             /* a push it has not seen yet */
            atomic_fetch_add(&p->collapsed, 1);
            continue;
        }
        const char *platform = push_platform_name(cs[i].t.platform);
        if (!platform) continue;
        snprintf(job_id, sizeof(job_id), "%s:%llu:%llu", p->node, (unsigned long long)h->id,
                 (unsigned long long)++*serial);
        /* The device job rules/push.c would have written, for this device. */
        pjob dj = {.id = h->id, .seq = h->seq, .ts = h->ts};
        jfield f[] = {{"v", "1"},           {"platform", platform}, {"token", cs[i].token},
                      {"app", cs[i].t.app}, {"user", cs[i].user},   {"device", cs[i].t.device},
                      {"conv", h->conv},    {"sender", h->sender},  {"collapse", h->collapse},
                      {"badge", ""},        {"prio", "high"},       {"preview", h->preview}};
        for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++)
            if (f[k].value[0] || strcmp(f[k].name, "preview") != 0) dj.f[dj.n++] = f[k];
        append_xadd(c, &dj, job_id, stream);
        redisAppendCommand(c, "SET %spushpend:%s:%s:%s %s EX %d", p->prefix, h->conv, cs[i].user,
                           cs[i].t.device, ts, PENDING_TTL_S);
        n_cmd += 2;
        atomic_fetch_add(&p->expanded, 1);
    }
    for (size_t i = 0; i < 3 * n; i++)
        freeReplyObject(r[i]);
    free(r);
    if (rc == 0) rc = replies_ok(c, n_cmd, NULL);
    return rc;
}

/* Expand one held conversation: its members' devices with tokens. */
static int expand(mqc_push *p, redisContext *c, const held *h)
{
    char after[MQC_ID_BUF] = "";
    cand *cs = calloc(EXPAND_BATCH + 1000, sizeof(*cs));
    if (!cs) return -1;
    size_t n = 0;
    uint64_t serial = 0;
    int rc = 0, more = 1;
    while (rc == 0 && more) {
        mqstore_member_list ml;
        if (mqstore_members_page(p->cfg.store, h->conv, after, 1000, &ml, &more)) break;
        for (size_t i = 0; rc == 0 && i < ml.n; i++) {
            if (strcmp(ml.items[i].user, h->sender) == 0) continue;
            mqstore_push_token_list tl;
            if (mqstore_push_tokens(p->cfg.store, ml.items[i].user, &tl)) continue;
            for (size_t k = 0; k < tl.n && n < EXPAND_BATCH + 999; k++) {
                snprintf(cs[n].user, sizeof(cs[n].user), "%s", ml.items[i].user);
                cs[n].t = tl.items[k];
                cs[n].token = tl.items[k].token;
                tl.items[k].token = NULL; /* now the candidate's */
                n++;
            }
            mqstore_push_token_list_free(&tl);
            if (n >= EXPAND_BATCH) {
                rc = expand_batch(p, c, h, cs, n, &serial);
                for (size_t k = 0; k < n; k++)
                    free(cs[k].token);
                n = 0;
            }
        }
        if (ml.n) snprintf(after, sizeof(after), "%s", ml.items[ml.n - 1].user);
        mqstore_member_list_free(&ml);
    }
    if (rc == 0 && n) rc = expand_batch(p, c, h, cs, n, &serial);
    for (size_t k = 0; k < n; k++)
        free(cs[k].token);
    free(cs);
    return rc;
}

/* Expand what is due; -1 when Redis failed (kept for the next try). */
static int expand_due(mqc_push *p, redisContext *c, int all)
{
    int64_t now = mqc_mono_ms();
    for (held **hp = &p->held; *hp;) {
        held *h = *hp;
        if (!all && h->due_ms > now) {
            hp = &h->next;
            continue;
        }
        if (expand(p, c, h)) return -1;
        *hp = h->next;
        free(h);
    }
    delete_done(p);
    return 0;
}

/* ---- feedback ------------------------------------------------------------- */

/* Remove the tokens pushd reported invalid (if the device still has them). */
static int feedback(mqc_push *p, redisContext *c)
{
    redisReply *r = redisCommand(
        c, "XREADGROUP GROUP mqchat %s COUNT 100 STREAMS %spush:feedback >", p->node, p->prefix);
    if (!r) return -1;
    int rc = r->type == REDIS_REPLY_ERROR ? -1 : 0;
    /* [[stream, [[id, [f, v, ...]], ...]]] */
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
        redisReply *entries = r->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; i++) {
            redisReply *e = entries->element[i];
            if (e->elements != 2 || e->element[1]->type != REDIS_REPLY_ARRAY) continue;
            const char *user = NULL, *device = NULL, *token = NULL;
            redisReply *f = e->element[1];
            for (size_t k = 0; k + 1 < f->elements; k += 2) {
                const char *name = f->element[k]->str, *value = f->element[k + 1]->str;
                if (!name || !value) continue;
                if (strcmp(name, "user") == 0) user = value;
                if (strcmp(name, "device") == 0) device = value;
                if (strcmp(name, "token") == 0) token = value;
            }
            int deleted = 0;
            if (user && device && token && mqc_id_valid(MQC_ID_USER, user) &&
                mqc_id_valid(MQC_ID_DEVICE, device) &&
                mqstore_push_token_delete(p->cfg.store, user, device, token, &deleted) ==
                    MQSTORE_OK &&
                deleted)
                atomic_fetch_add(&p->removed, 1);
            redisReply *ack =
                redisCommand(c, "XACK %spush:feedback mqchat %s", p->prefix, e->element[0]->str);
            if (!ack) rc = -1;
            freeReplyObject(ack);
        }
    }
    freeReplyObject(r);
    return rc;
}

/* ---- the thread ------------------------------------------------------------ */

static void update_blocked(mqc_push *p)
{
    uint64_t depth = mqstore_outbox_last(p->cfg.store) - atomic_load(&p->deleted_upto);
    int blocked = depth >= p->cfg.outbox_max;
    if (blocked != atomic_exchange(&p->blocked, blocked))
        post_log(p, blocked ? MOSQ_LOG_WARNING : MOSQ_LOG_NOTICE,
                 blocked ? "%llu jobs wait in the outbox (push_outbox_max): new pushes are dropped "
                           "until Redis takes them"
                         : "outbox below push_outbox_max (%llu jobs): pushes are written again",
                 (unsigned long long)depth);
}

/* Sleep until kicked, stopped or ms passed; returns stop. */
static int wait_kick(mqc_push *p, int64_t ms)
{
    pthread_mutex_lock(&p->lock);
    if (!p->stop && !p->kicked) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cond, &p->lock, &until);
    }
    p->kicked = 0;
    int stop = p->stop;
    pthread_mutex_unlock(&p->lock);
    return stop;
}

/* Sleep ms (or until stopped), whatever is kicked meanwhile: while Redis
 * is down a new job is no reason to try again sooner (and each try would
 * double the backoff). Returns stop. */
static int wait_stop(mqc_push *p, int64_t ms)
{
    int64_t end = mqc_mono_ms() + ms;
    int stop;
    while (!(stop = wait_kick(p, end - mqc_mono_ms())) && mqc_mono_ms() < end) {
    }
    return stop;
}

static void *drain_main(void *arg)
{
    mqc_push *p = arg;
    redisContext *c = NULL;
    p->backoff_ms = 100;
    for (;;) {
        if (!c) {
            if ((c = connect_redis(p))) {
                atomic_store(&p->up, 1);
                atomic_fetch_add(&p->connects, 1);
                p->down_logged = 0;
                post_log(p, MOSQ_LOG_NOTICE, "connected to Redis; draining the outbox");
            } else {
                atomic_store(&p->up, 0);
                if (!p->down_logged)
                    post_log(p, MOSQ_LOG_WARNING, "Redis unreachable (%s): jobs wait in the outbox",
                             p->down_reason);
                p->down_logged = 1;
                update_blocked(p);
                /* Full jitter: a random wait up to the backoff. */
                int64_t wait = 1 + rand_r(&p->seed) % p->backoff_ms;
                p->backoff_ms =
                    p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2;
                if (wait_stop(p, wait)) break;
                continue;
            }
        }
        int n = 0, failed = 0;
        while (!failed && (n = drain_outbox(p, c)) == READ_BATCH)
            ;
        failed = n < 0 || expand_due(p, c, 0);
        if (!failed && mqc_mono_ms() >= p->next_feedback_ms) {
            failed = feedback(p, c);
            p->next_feedback_ms = mqc_mono_ms() + FEEDBACK_EVERY_MS;
        }
        update_blocked(p);
        if (failed) {
            atomic_store(&p->up, 0);
            redisFree(c);
            c = NULL;
            post_log(p, MOSQ_LOG_WARNING, "lost Redis; jobs wait in the outbox");
            /* Back off here too: Redis may take connections and refuse our
             * commands (a key of the wrong type, no permission), and an
             * immediate reconnect would fail the same way, in a tight loop.
             * The backoff starts again only after a pass that worked. */
            int64_t wait = 1 + rand_r(&p->seed) % p->backoff_ms;
            p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2;
            if (wait_stop(p, wait)) break;
            continue;
        }
        p->backoff_ms = 100;
        /* Come back for the next job, the next due expansion, or feedback. */
        int64_t wait = p->next_feedback_ms - mqc_mono_ms();
        if (wait < 1) wait = 1;
        for (held *h = p->held; h; h = h->next) {
            int64_t d = h->due_ms - mqc_mono_ms();
            if (d < wait) wait = d < 1 ? 1 : d;
        }
        if (wait_kick(p, wait)) break;
    }
    /* A clean stop: what was written is sent if Redis is there. */
    if (c) {
        if (drain_outbox(p, c) >= 0) expand_due(p, c, 1);
        redisFree(c);
    }
    for (held *h = p->held, *next; h; h = next) {
        next = h->next;
        free(h); /* still in the outbox: expanded after the restart */
    }
    p->held = NULL;
    return NULL;
}

mqc_push *mqc_push_new(const mqc_push_config *cfg, char *err, size_t errlen)
{
    mqc_push *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = *cfg;
    p->seed = (unsigned)mqc_wall_ms();
    p->host = cfg->host ? strdup(cfg->host) : NULL;
    p->socket = cfg->socket ? strdup(cfg->socket) : NULL;
    p->password = cfg->password ? strdup(cfg->password) : NULL;
    p->prefix = strdup(cfg->prefix);
    p->node = strdup(cfg->node);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if ((cfg->host && !p->host) || (cfg->socket && !p->socket) || (cfg->password && !p->password) ||
        !p->prefix || !p->node) {
        snprintf(err, errlen, "out of memory");
        mqc_push_free(p);
        return NULL;
    }
    /* What an earlier run already deleted is not waiting: the outbox ids
     * go on across restarts (mqstore_outbox_last), so start counting from
     * the oldest job still there, or from the last one if none is. */
    mqstore_job_list first;
    if (mqstore_outbox_read(cfg->store, 0, 1, &first) == MQSTORE_OK) {
        uint64_t upto = first.n ? first.items[0].id - 1 : mqstore_outbox_last(cfg->store);
        atomic_store(&p->deleted_upto, upto);
        p->read_upto = upto;
        mqstore_job_list_free(&first);
    }
    int rc = mqc_thread_start(&p->thread, drain_main, p);
    if (rc) {
        snprintf(err, errlen, "cannot start the push thread: %s", strerror(rc));
        mqc_push_free(p);
        return NULL;
    }
    p->running = 1;
    return p;
}

void mqc_push_free(mqc_push *p)
{
    if (!p) return;
    if (p->running) {
        pthread_mutex_lock(&p->lock);
        p->stop = 1;
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p->host);
    free(p->socket);
    free(p->password);
    free(p->prefix);
    free(p->node);
    free(p);
}

void mqc_push_kick(mqc_push *p)
{
    pthread_mutex_lock(&p->lock);
    p->kicked = 1;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

int mqc_push_blocked(void *data)
{
    mqc_push *p = data;
    return atomic_load(&p->blocked);
}

void mqc_push_stats_get(mqc_push *p, mqc_push_stats *out)
{
    out->up = atomic_load(&p->up);
    out->sent = atomic_load(&p->sent);
    out->expanded = atomic_load(&p->expanded);
    out->collapsed = atomic_load(&p->collapsed);
    out->removed = atomic_load(&p->removed);
    out->invalid = atomic_load(&p->invalid);
    out->connects = atomic_load(&p->connects);
    out->waiting = mqstore_outbox_last(p->cfg.store) - atomic_load(&p->deleted_upto);
}
