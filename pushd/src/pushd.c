/* pushd — the core. See pushd.h for the idea.
 *
 * INVARIANTS
 *   - Every job pushd holds is in `table` (by entry id), exactly once.
 *   - A job is on at most one list (j->list says which) or in the retry
 *     heap (state RETRY) or busy (an HTTP request or a Redis command holds
 *     it: INFLIGHT, SEEN with an MGET out, FINAL with its XADD out, ACK
 *     with its XACK out); never two of these.
 *   - prov[p].inflight counts the jobs of platform p in state INFLIGHT.
 *   - A job leaves the table only when its XACK was answered, or when it is
 *     let go: left pending in Redis for a later claim. */
#include "pushd.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcm.h"
#include "log.h"
#include "retry.h"
#include "stats.h"
#include "stream.h"

#define ACK_BATCH 1000
#define TOUCH_BATCH 1000
#define FINAL_PAUSE_MS 1000
#define FAST_RETRY_MS 100

typedef struct jlist {
    pd_job *head, *tail;
    size_t n;
} jlist;

typedef struct prov {
    int configured;
    jlist queue;
    size_t inflight;
} prov;

struct pd_core {
    pd_loop *loop;
    const pd_config *cfg;
    pd_http *http;
    pd_apns *apns;
    pd_oauth *oauth;
    pd_stream *stream;
    pd_job *table;
    size_t njobs;
    jlist seen_wait, final_wait, ack_wait;
    size_t seen_out; /* jobs in MGETs not answered yet */
    pd_heap retry;
    prov prov[PD_NPLATFORMS];
    pd_timer retry_timer;
    pd_rng rng;
    int stopping, freeing, forget_started, forget_done;
    int64_t deadline_ms, next_touch_ms, final_pause_until;
    int touching;
};

/* ---- lists ---- */

static void jl_push(jlist *l, pd_job *j)
{
    assert(!j->list && !j->busy);
    j->next = NULL;
    j->prev = l->tail;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
    l->n++;
    j->list = l;
}

static void jl_push_front(jlist *l, pd_job *j)
{
    assert(!j->list && !j->busy);
    j->prev = NULL;
    j->next = l->head;
    if (l->head)
        l->head->prev = j;
    else
        l->tail = j;
    l->head = j;
    l->n++;
    j->list = l;
}

static void jl_remove(jlist *l, pd_job *j)
{
    assert(j->list == l && l->n > 0);
    if (j->prev)
        j->prev->next = j->next;
    else
        l->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        l->tail = j->prev;
    j->next = j->prev = NULL;
    j->list = NULL;
    l->n--;
}

static pd_job *jl_pop(jlist *l)
{
    pd_job *j = l->head;
    if (j) jl_remove(l, j);
    return j;
}

/* ---- moving jobs ---- */

static const char *jid(const pd_job *j)
{
    return j->jobid ? j->jobid : "?";
}

static const char *pname(const pd_job *j)
{
    return j->bad && !j->token ? "none" : pd_platform_names[j->platform];
}

/* Take j out of wherever it is (not busy), forget it (it stays pending in
 * Redis unless it was acknowledged). */
static void drop(pd_core *c, pd_job *j)
{
    assert(!j->busy);
    if (j->list) jl_remove(j->list, j);
    if (j->state == PD_J_RETRY && j->heap_idx < c->retry.n && c->retry.a[j->heap_idx] == j)
        pd_heap_remove(&c->retry, j);
    HASH_DEL(c->table, j);
    c->njobs--;
    pd_job_free(j);
}

static void to_ack(pd_core *c, pd_job *j)
{
    j->state = PD_J_ACK;
    jl_push(&c->ack_wait, j);
}

static void to_final(pd_core *c, pd_job *j, int invalid, const char *reason)
{
    if (reason != j->reason) snprintf(j->reason, sizeof j->reason, "%s", reason);
    j->state = PD_J_FINAL;
    j->final_invalid = invalid;
    jl_push(&c->final_wait, j);
}

static void to_dead(pd_core *c, pd_job *j, const char *reason)
{
    to_final(c, j, 0, reason);
}

static int expired(const pd_core *c, const pd_job *j, int64_t wall_ms)
{
    return c->cfg->message_ttl_ms > 0 && wall_ms >= j->ts_ms + c->cfg->message_ttl_ms;
}

static void skip_expired(pd_core *c, pd_job *j)
{
    pd_stat.skipped_expired++;
    pd_info("job=%s entry=%s platform=%s: older than message_ttl, not sent", jid(j), j->entry,
            pname(j));
    to_ack(c, j);
}

static void to_seen(pd_core *c, pd_job *j)
{
    if (expired(c, j, pd_wall_ms())) {
        skip_expired(c, j);
        return;
    }
    j->state = PD_J_SEEN;
    jl_push(&c->seen_wait, j);
}

static void enqueue(pd_core *c, pd_job *j, int front)
{
    prov *p = &c->prov[j->platform];
    if (!p->configured) {
        pd_warn("job=%s entry=%s platform=%s: platform not configured -> dead letter", jid(j),
                j->entry, pname(j));
        pd_stats_failed(j->platform, "NotConfigured");
        to_dead(c, j, "NotConfigured");
        return;
    }
    j->state = PD_J_QUEUED;
    if (front)
        jl_push_front(&p->queue, j);
    else
        jl_push(&p->queue, j);
}

static void on_retry_timer(pd_loop *l, void *data);

static void arm_retry_timer(pd_core *c)
{
    pd_job *j = pd_heap_peek(&c->retry);
    if (!j) {
        pd_timer_cancel(c->loop, &c->retry_timer);
        return;
    }
    int64_t d = j->due_ms - pd_now_ms();
    pd_timer_start(c->loop, &c->retry_timer, d > 0 ? d : 0, on_retry_timer, c);
}

static void on_retry_timer(pd_loop *l, void *data)
{
    pd_core *c = data;
    int64_t now = pd_now_ms();
    pd_job *j;
    while ((j = pd_heap_peek(&c->retry)) && j->due_ms <= now) {
        pd_heap_pop(&c->retry);
        to_seen(c, j); /* the device may have synced meanwhile */
    }
    arm_retry_timer(c);
}

/* fast: the connection died under the request (the provider most likely
 * never saw it; curl already retried on fresh connections): the first
 * time, wait at most FAST_RETRY_MS instead of a full backoff step. */
static void schedule_retry(pd_core *c, pd_job *j, int64_t retry_after_ms, int fast)
{
    const pd_config *cfg = c->cfg;
    int64_t base = fast && !j->fast_retried && cfg->backoff_base_ms > FAST_RETRY_MS
                       ? FAST_RETRY_MS
                       : cfg->backoff_base_ms;
    if (fast) j->fast_retried = 1;
    int64_t d =
        pd_retry_delay_ms(base == FAST_RETRY_MS ? 1 : j->attempts, base, cfg->backoff_max_ms,
                          pd_rng_next(&c->rng), retry_after_ms, cfg->retry_after_max_ms);
    j->due_ms = pd_now_ms() + d;
    j->state = PD_J_RETRY;
    if (pd_heap_push(&c->retry, j) != 0) { /* out of memory: try at once instead */
        to_seen(c, j);
        return;
    }
    pd_stat.retries[j->platform]++;
    arm_retry_timer(c);
}

/* ---- jobs arrive ---- */

static size_t backlog(const pd_core *c)
{
    size_t n = c->seen_wait.n + c->seen_out;
    for (int p = 0; p < PD_NPLATFORMS; p++)
        n += c->prov[p].queue.n;
    return n;
}

static size_t want(void *data)
{
    pd_core *c = data;
    if (c->stopping || c->njobs >= (size_t)c->cfg->max_jobs) return 0;
    size_t room = (size_t)c->cfg->max_jobs - c->njobs;
    size_t cap = 2 * (size_t)c->cfg->batch_size + (size_t)c->cfg->concurrency, b = backlog(c);
    size_t w = cap > b ? cap - b : 0;
    return w < room ? w : room;
}

static void on_jobs(void *data, pd_job **jobs, size_t n, int claimed)
{
    pd_core *c = data;
    int64_t now = pd_now_ms();
    for (size_t i = 0; i < n; i++) {
        pd_job *j = jobs[i], *old;
        HASH_FIND_STR(c->table, j->entry, old);
        if (old) { /* already ours (a claim raced a touch): keep the one we have */
            old->touched_ms = now;
            pd_job_free(j);
            continue;
        }
        j->ctx = c;
        j->touched_ms = now;
        HASH_ADD_STR(c->table, entry, j);
        c->njobs++;
        if (claimed)
            pd_stat.claimed++;
        else
            pd_stat.read++;
        if (c->stopping) {
            drop(c, j);
        } else if (j->bad) {
            pd_stat.malformed++;
            pd_warn("job=%s entry=%s platform=none status=0 reason=\"%s\" -> dead letter", jid(j),
                    j->entry, j->reason);
            pd_stats_failed(PD_NPLATFORMS, "Malformed");
            to_dead(c, j, j->reason);
        } else {
            to_seen(c, j);
        }
    }
}

/* ---- Redis replies ---- */

typedef struct batch {
    pd_core *c;
    size_t n;
    pd_job *jobs[];
} batch;

static batch *batch_new(pd_core *c, size_t n)
{
    batch *b = malloc(sizeof *b + n * sizeof b->jobs[0]);
    if (b) {
        b->c = c;
        b->n = 0;
    }
    return b;
}

static int64_t parse_seen(redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 19) return 0;
    int64_t v = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->str[i] < '0' || r->str[i] > '9') return 0;
        v = v * 10 + (r->str[i] - '0');
    }
    return v;
}

static void on_seen(void *data, int ok, redisReply *r)
{
    batch *b = data;
    pd_core *c = b->c;
    assert(c->seen_out >= b->n);
    c->seen_out -= b->n;
    if (ok != 1) pd_stat.redis_errors++;
    if (ok == 0) pd_warn("redis: MGET pushseen: %s (sending anyway)", r ? r->str : "?");
    for (size_t i = 0; i < b->n; i++) {
        pd_job *j = b->jobs[i];
        j->busy = 0;
        if (c->freeing || c->stopping) {
            drop(c, j);
        } else if (ok == -1) {
            jl_push(&c->seen_wait, j); /* again once Redis is back */
        } else {
            int64_t seen = ok == 1 && r->type == REDIS_REPLY_ARRAY && i < r->elements
                               ? parse_seen(r->element[i])
                               : 0;
            if (seen && j->ts_ms <= seen) {
                pd_stat.skipped_seen++;
                pd_debug("job=%s entry=%s: device synced at %lld, not sent", jid(j), j->entry,
                         (long long)seen);
                to_ack(c, j);
            } else {
                enqueue(c, j, 0);
            }
        }
    }
    free(b);
}

static void on_final(void *data, int ok, redisReply *r)
{
    pd_job *j = data;
    pd_core *c = j->ctx;
    j->busy = 0;
    if (c->freeing) {
        drop(c, j);
        return;
    }
    if (ok == 1) {
        if (j->final_invalid)
            pd_stat.feedback_written++;
        else
            pd_stat.dead[j->bad && !j->token ? PD_NPLATFORMS : j->platform]++;
        to_ack(c, j);
        return;
    }
    pd_stat.redis_errors++;
    if (ok == 0) {
        pd_err("redis: XADD %s for entry %s refused: %s", j->final_invalid ? "feedback" : "dead",
               j->entry, r ? r->str : "?");
        c->final_pause_until = pd_now_ms() + FINAL_PAUSE_MS;
    }
    j->state = PD_J_FINAL;
    jl_push(&c->final_wait, j);
}

static void on_ack(void *data, int ok, redisReply *r)
{
    batch *b = data;
    pd_core *c = b->c;
    if (ok == 0) {
        pd_stat.redis_errors++;
        pd_warn("redis: XACK: %s", r ? r->str : "?");
    }
    for (size_t i = 0; i < b->n; i++) {
        pd_job *j = b->jobs[i];
        j->busy = 0;
        if (ok == -1 && !c->freeing) {
            jl_push(&c->ack_wait, j);
        } else {
            if (ok == 1) pd_stat.acked++;
            drop(c, j);
        }
    }
    if (ok == -1) pd_stat.redis_errors++;
    free(b);
}

typedef struct touch {
    pd_core *c;
    size_t n;
    char (*ids)[48];
} touch;

static void on_touch(void *data, int ok, redisReply *r)
{
    touch *t = data;
    pd_core *c = t->c;
    c->touching = 0;
    if (ok == 1 && r->type == REDIS_REPLY_ARRAY && !c->freeing) {
        int64_t now = pd_now_ms();
        /* Both lists are in id order? Not guaranteed: mark the kept ones. */
        for (size_t i = 0; i < r->elements; i++) {
            pd_job *j;
            if (r->element[i]->type != REDIS_REPLY_STRING) continue;
            HASH_FIND_STR(c->table, r->element[i]->str, j);
            if (j) j->touched_ms = now;
        }
        for (size_t i = 0; i < t->n; i++) {
            pd_job *j;
            HASH_FIND_STR(c->table, t->ids[i], j);
            if (!j || j->touched_ms == now || j->busy) continue;
            if (j->state == PD_J_SEEN || j->state == PD_J_QUEUED || j->state == PD_J_RETRY) {
                pd_info("entry %s: taken over by another consumer; letting it go", j->entry);
                drop(c, j);
            }
        }
    } else if (ok != 1) {
        pd_stat.redis_errors++;
    }
    free(t->ids);
    free(t);
}

static void maybe_touch(pd_core *c, int64_t now)
{
    int64_t every = c->cfg->claim_min_idle_ms / 3;
    if (c->touching || now < c->next_touch_ms || !pd_stream_writer_up(c->stream)) return;
    c->next_touch_ms = now + every / 2;
    touch *t = calloc(1, sizeof *t);
    size_t cap = c->njobs < TOUCH_BATCH ? c->njobs : TOUCH_BATCH;
    if (!t || !cap || !(t->ids = malloc(cap * sizeof *t->ids))) {
        free(t);
        return;
    }
    t->c = c;
    pd_job *j, *tmp;
    HASH_ITER(hh, c->table, j, tmp)
    {
        if (t->n == cap) break;
        if (now - j->touched_ms >= every && j->state != PD_J_ACK) strcpy(t->ids[t->n++], j->entry);
    }
    const char **ids = t->n ? malloc(t->n * sizeof *ids) : NULL;
    if (!ids) {
        free(t->ids);
        free(t);
        return;
    }
    for (size_t i = 0; i < t->n; i++)
        ids[i] = t->ids[i];
    /* Only entries idle for half the period: not one another consumer just took. */
    if (pd_stream_touch(c->stream, ids, t->n, every / 2, on_touch, t) == 0) {
        c->touching = 1;
        if (t->n == cap) c->next_touch_ms = now; /* more to do */
    } else {
        free(t->ids);
        free(t);
    }
    free(ids);
}

static void on_writer_up(void *data)
{
    /* Everything waiting goes out on the next flush. */
}

/* ---- HTTP ---- */

static void log_failure(const pd_job *j, const pd_outcome *o, const char *detail,
                        const char *action, int64_t delay_ms)
{
    char what[64] = "";
    if (delay_ms >= 0) snprintf(what, sizeof what, " in %lld ms", (long long)delay_ms);
    pd_warn("job=%s entry=%s platform=%s status=%ld reason=%s%s%.120s%s attempt=%d token=%.*s... "
            "-> %s%s",
            jid(j), j->entry, pname(j), o->status, o->reason, detail ? " (" : "",
            detail ? detail : "", detail ? ")" : "", j->attempts, PD_TOKEN_PREFIX, j->token, action,
            what);
}

/* A short label for a transport failure; 1 if the connection died under
 * an established request (see schedule_retry). */
static int transport_reason(CURLcode code, char *out, size_t cap)
{
    int died = code == CURLE_SEND_ERROR || code == CURLE_RECV_ERROR || code == CURLE_HTTP2 ||
               code == CURLE_HTTP2_STREAM || code == CURLE_GOT_NOTHING;
    const char *r =
        died                                                                        ? "connection"
        : code == CURLE_OPERATION_TIMEDOUT                                          ? "timeout"
        : code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST       ? "connect"
        : code == CURLE_SSL_CONNECT_ERROR || code == CURLE_PEER_FAILED_VERIFICATION ? "tls"
                                                                                    : "transport";
    snprintf(out, cap, "%s", r);
    return died;
}

static void on_http(const pd_http_res *res, void *data)
{
    pd_job *j = data;
    pd_core *c = j->ctx;
    prov *p = &c->prov[j->platform];
    assert(j->state == PD_J_INFLIGHT && p->inflight > 0);
    p->inflight--;
    j->busy = 0;
    if (res->aborted || c->freeing) {
        drop(c, j); /* stays pending */
        return;
    }
    int64_t wall = pd_wall_ms();
    pd_outcome o;
    const char *detail = NULL;
    int died = 0;
    if (res->code != CURLE_OK) {
        memset(&o, 0, sizeof o);
        o.verdict = PD_RETRY;
        o.retry_after_ms = -1;
        died = transport_reason(res->code, o.reason, sizeof o.reason);
        detail = res->error;
    } else {
        pd_stats_observe_send(j->platform, res->seconds);
        if (j->platform == PD_FCM)
            pd_fcm_classify(res->status, res->body, res->body_len, res->retry_after,
                            (time_t)(wall / 1000), &o);
        else
            pd_apns_classify(res->status, res->body, res->body_len, res->retry_after,
                             (time_t)(wall / 1000), &o);
    }
    j->last_status = o.status;
    if (o.verdict != PD_OK) pd_stats_failed(j->platform, o.reason);
    switch (o.verdict) {
    case PD_OK:
        pd_stat.sent[j->platform]++;
        pd_stats_observe_delay(j->platform, (double)(wall - j->ts_ms) / 1000.0);
        to_ack(c, j);
        break;
    case PD_INVALID_TOKEN:
        pd_stat.invalid_tokens[j->platform]++;
        log_failure(j, &o, detail, "feedback", -1);
        j->token_ts_ms = o.token_ts_ms ? o.token_ts_ms : wall;
        to_final(c, j, 1, o.reason);
        break;
    case PD_AUTH:
        if (!j->auth_retried && !c->stopping) {
            j->auth_retried = 1;
            pd_stat.auth_refreshes[j->platform]++;
            if (j->platform == PD_FCM)
                pd_oauth_refused(c->oauth, j->auth_gen, wall);
            else
                pd_apns_token_expired(c->apns, j->auth_gen, wall);
            log_failure(j, &o, detail, "new credential, retry", 0);
            enqueue(c, j, 1);
        } else if (c->stopping) {
            drop(c, j);
        } else {
            log_failure(j, &o, detail, "dead letter", -1);
            to_dead(c, j, o.reason);
        }
        break;
    case PD_RETRY:
        if (j->attempts > c->cfg->retry_limit) {
            char why[120];
            snprintf(why, sizeof why, "%s (retry limit)", o.reason);
            log_failure(j, &o, detail, "dead letter (retry limit)", -1);
            to_dead(c, j, why);
        } else if (c->stopping) {
            log_failure(j, &o, detail, "left pending (stopping)", -1);
            drop(c, j);
        } else {
            schedule_retry(c, j, o.retry_after_ms, died);
            log_failure(j, &o, detail, "retry", j->due_ms - pd_now_ms());
        }
        break;
    case PD_PERMANENT:
        log_failure(j, &o, detail, "dead letter", -1);
        to_dead(c, j, o.reason);
        break;
    }
}

static void send_job(pd_core *c, pd_job *j, const char *fcm_token, unsigned fcm_gen)
{
    prov *p = &c->prov[j->platform];
    int64_t wall = pd_wall_ms();
    if (expired(c, j, wall)) {
        skip_expired(c, j);
        return;
    }
    char *url = NULL, *body = NULL, why[64];
    struct curl_slist *h = NULL;
    size_t len = 0;
    unsigned gen = fcm_gen;
    int rc = j->platform == PD_FCM
                 ? pd_fcm_request(c->cfg, pd_oauth_project(c->oauth), fcm_token, j, wall, &url, &h,
                                  &body, &len, why, sizeof why)
                 : pd_apns_request(c->apns, j, wall, &url, &h, &body, &len, &gen, why, sizeof why);
    if (rc != 0) {
        pd_outcome o = {.verdict = PD_PERMANENT};
        snprintf(o.reason, sizeof o.reason, "%s", why);
        pd_stats_failed(j->platform, why);
        log_failure(j, &o, NULL, "dead letter", -1);
        to_dead(c, j, why);
        return;
    }
    j->attempts++;
    j->auth_gen = gen;
    j->sent_ms = pd_now_ms();
    j->state = PD_J_INFLIGHT;
    j->busy = 1;
    p->inflight++;
    if (pd_http_post(c->http, url, h, body, len, on_http, j) != 0) {
        p->inflight--;
        j->busy = 0;
        j->attempts--;
        pd_err("job=%s entry=%s: cannot start a request (out of memory?)", jid(j), j->entry);
        schedule_retry(c, j, -1, 0);
    }
    free(url);
}

static void pump(pd_core *c)
{
    for (int pi = 0; pi < PD_NPLATFORMS; pi++) {
        prov *p = &c->prov[pi];
        const char *tok = NULL;
        unsigned gen = 0;
        if (pi == PD_FCM && p->queue.n && c->oauth) {
            tok = pd_oauth_token(c->oauth, pd_wall_ms(), &gen);
            if (!tok) continue; /* waits for an access token */
        }
        while (p->queue.n && p->inflight < (size_t)c->cfg->concurrency)
            send_job(c, jl_pop(&p->queue), tok, gen);
    }
}

/* ---- flush ---- */

static void flush_seen(pd_core *c)
{
    while (c->seen_wait.n && pd_stream_writer_up(c->stream)) {
        size_t n = c->seen_wait.n < (size_t)c->cfg->batch_size ? c->seen_wait.n
                                                               : (size_t)c->cfg->batch_size;
        batch *b = batch_new(c, n);
        if (!b) return;
        for (pd_job *j = c->seen_wait.head; b->n < n; j = j->next)
            b->jobs[b->n++] = j;
        if (pd_stream_seen(c->stream, b->jobs, b->n, on_seen, b) != 0) {
            free(b);
            return;
        }
        for (size_t i = 0; i < b->n; i++) {
            jl_remove(&c->seen_wait, b->jobs[i]);
            b->jobs[i]->busy = 1;
        }
        c->seen_out += b->n;
    }
}

static void flush_final(pd_core *c)
{
    if (pd_now_ms() < c->final_pause_until) return;
    while (c->final_wait.n && pd_stream_writer_up(c->stream)) {
        pd_job *j = c->final_wait.head;
        int rc = j->final_invalid
                     ? pd_stream_feedback(c->stream, j, j->reason, j->token_ts_ms, on_final, j)
                     : pd_stream_dead(c->stream, j, j->reason, on_final, j);
        if (rc != 0) return;
        jl_remove(&c->final_wait, j);
        j->busy = 1;
    }
}

static void flush_acks(pd_core *c)
{
    while (c->ack_wait.n && pd_stream_writer_up(c->stream)) {
        size_t n = c->ack_wait.n < ACK_BATCH ? c->ack_wait.n : ACK_BATCH;
        batch *b = batch_new(c, n);
        const char **ids = malloc(n * sizeof *ids);
        if (!b || !ids) {
            free(b);
            free(ids);
            return;
        }
        for (pd_job *j = c->ack_wait.head; b->n < n; j = j->next) {
            ids[b->n] = j->entry;
            b->jobs[b->n++] = j;
        }
        int rc = pd_stream_ack(c->stream, ids, n, on_ack, b);
        free(ids);
        if (rc != 0) {
            free(b);
            return;
        }
        for (size_t i = 0; i < b->n; i++) {
            jl_remove(&c->ack_wait, b->jobs[i]);
            b->jobs[i]->busy = 1;
        }
    }
}

static void on_forgot(void *data, int ok, redisReply *r)
{
    pd_core *c = data;
    c->forget_done = 1;
    if (ok == 1)
        pd_info("consumer %s removed from group %s (nothing pending on it)", c->cfg->consumer,
                c->cfg->group);
}

void pd_core_flush(pd_core *c)
{
    int64_t now = pd_now_ms();
    if (c->oauth && !c->stopping) pd_oauth_tick(c->oauth, pd_wall_ms());
    if (!c->stopping) pump(c);
    flush_seen(c);
    flush_final(c);
    flush_acks(c);
    if (!c->stopping) {
        maybe_touch(c, now);
        pd_stream_poke(c->stream);
    }
}

/* ---- life ---- */

pd_core *pd_core_new(pd_loop *l, const pd_config *cfg, pd_http *http, pd_apns *apns,
                     pd_oauth *oauth)
{
    pd_core *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = l;
    c->cfg = cfg;
    c->http = http;
    c->apns = apns;
    c->oauth = oauth;
    c->prov[PD_APNS].configured = c->prov[PD_APNS_SANDBOX].configured = apns != NULL;
    c->prov[PD_FCM].configured = oauth != NULL;
    pd_rng_seed(&c->rng, (uint64_t)pd_wall_ms() * 2654435761u ^ (uint64_t)(uintptr_t)c);
    c->next_touch_ms = pd_now_ms() + cfg->claim_min_idle_ms / 6;
    pd_stream_cbs cbs = {on_jobs, on_writer_up, want, c};
    c->stream = pd_stream_new(l, cfg, &cbs);
    if (!c->stream) {
        free(c);
        return NULL;
    }
    return c;
}

void pd_core_stop(pd_core *c, int64_t deadline_ms)
{
    if (c->stopping) {
        if (deadline_ms < c->deadline_ms) c->deadline_ms = deadline_ms;
        return;
    }
    c->stopping = 1;
    c->deadline_ms = deadline_ms;
    pd_stream_stop_reading(c->stream);
    /* What has not started stays pending in Redis, for a later claim. */
    size_t left = c->seen_wait.n + c->retry.n;
    pd_job *j;
    while ((j = jl_pop(&c->seen_wait)))
        drop(c, j);
    for (int p = 0; p < PD_NPLATFORMS; p++) {
        left += c->prov[p].queue.n;
        while ((j = jl_pop(&c->prov[p].queue)))
            drop(c, j);
    }
    while ((j = pd_heap_pop(&c->retry)))
        drop(c, j);
    pd_timer_cancel(c->loop, &c->retry_timer);
    pd_info("stopping: %zu requests in flight (waiting up to %lld ms), %zu jobs left pending",
            pd_http_inflight(c->http), (long long)(deadline_ms - pd_now_ms()), left);
}

int pd_core_finished(pd_core *c)
{
    if (!c->stopping) return 0;
    if (pd_now_ms() >= c->deadline_ms) {
        if (c->njobs)
            pd_warn("stopping: deadline passed with %zu jobs unfinished (left pending)", c->njobs);
        return 1;
    }
    if (c->njobs) return 0;
    if (!c->forget_started) {
        c->forget_started = 1;
        if (pd_stream_forget_consumer(c->stream, on_forgot, c) != 0) return 1;
        return 0;
    }
    return c->forget_done || !pd_stream_writer_up(c->stream);
}

void pd_core_gauges(pd_core *c)
{
    for (int p = 0; p < PD_NPLATFORMS; p++) {
        pd_stat.inflight[p] = c->prov[p].inflight;
        pd_stat.queued[p] = c->prov[p].queue.n;
    }
    pd_stat.jobs = c->njobs;
    pd_stat.retry_waiting = c->retry.n;
    pd_stat.redis_up = pd_stream_writer_up(c->stream) ? 1 : 0;
    if (c->apns) pd_stat.apns_tokens = pd_apns_tokens_made(c->apns);
    if (c->oauth) {
        pd_stat.oauth_fetches = pd_oauth_fetches(c->oauth);
        pd_stat.oauth_failures = pd_oauth_failures(c->oauth);
    }
}

void pd_core_free(pd_core *c)
{
    if (!c) return;
    c->freeing = 1;
    pd_timer_cancel(c->loop, &c->retry_timer);
    pd_stream_free(c->stream); /* lost replies come back here with ok = -1 and are dropped */
    pd_job *j, *tmp;
    HASH_ITER(hh, c->table, j, tmp)
    {
        assert(!j->busy);
        drop(c, j);
    }
    assert(c->njobs == 0);
    pd_heap_free(&c->retry);
    free(c);
}
