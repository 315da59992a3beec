/* stream — see stream.h.
 *
 * INVARIANT: at most one XREADGROUP is outstanding (reading) and at most
 * one XAUTOCLAIM (claiming); `pel_phase` reads this consumer's own pending
 * entries from `pel_cursor` on until a read returns none. */
#include "stream.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "rconn.h"

#define READ_RETRY_MS 1000

struct pd_stream {
    pd_loop *loop;
    const pd_config *cfg;
    pd_stream_cbs cbs;
    pd_rconn *reader, *writer;
    char *key, *feedback_key, *dead_key, *seen_prefix;
    char feedback_maxlen[24], dead_maxlen[24];
    int group_ready, group_creating, reading, claiming, stopped;
    int pel_phase;
    char pel_cursor[48];
    char claim_cursor[48];
    int64_t next_claim_ms;
    int claim_unsupported;
    pd_timer read_timer, claim_timer;
};

typedef struct wreq {
    pd_stream *s;
    pd_stream_cb cb;
    void *data;
    int parts; /* replies still expected (XACK + XDEL) */
    int ok;
} wreq;

static void maybe_read(pd_stream *s);
static void maybe_claim(pd_stream *s);

static char *cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static size_t want(pd_stream *s)
{
    return s->cbs.want(s->cbs.data);
}

static int is_err(redisReply *r, const char *prefix)
{
    return r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, prefix, strlen(prefix)) == 0;
}

/* ---- entries -> jobs ---- */

/* An entry [id, [f, v, ...]] (fields nil if deleted). */
static pd_job *entry_job(pd_stream *s, redisReply *e, int *deleted)
{
    *deleted = 0;
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return NULL;
    const char *id = e->element[0]->str;
    redisReply *f = e->element[1];
    if (f->type == REDIS_REPLY_NIL) {
        *deleted = 1;
        return NULL;
    }
    if (f->type != REDIS_REPLY_ARRAY) return NULL;
    size_t n = f->elements / 2;
    const char **names = malloc((n + 1) * sizeof *names), **vals = malloc((n + 1) * sizeof *vals);
    size_t *nl = malloc((n + 1) * sizeof *nl), *vl = malloc((n + 1) * sizeof *vl);
    pd_job *j = NULL;
    if (names && vals && nl && vl) {
        size_t k = 0;
        for (size_t i = 0; i + 1 < f->elements; i += 2) {
            redisReply *a = f->element[i], *b = f->element[i + 1];
            if (a->type != REDIS_REPLY_STRING || b->type != REDIS_REPLY_STRING) continue;
            names[k] = a->str;
            nl[k] = a->len;
            vals[k] = b->str;
            vl[k] = b->len;
            k++;
        }
        j = pd_job_parse(id, k, names, nl, vals, vl);
    }
    free(names);
    free(vals);
    free(nl);
    free(vl);
    if (!j) pd_err("stream: entry %.40s: cannot take it (out of memory or bad id)", id);
    return j;
}

static void on_deleted_ack(void *data, int ok, redisReply *r) {}

/* Hand the entries of an array to the owner; ack those that are gone. */
static void deliver(pd_stream *s, redisReply *entries, int claimed, char *last_id, size_t cap)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY || entries->elements == 0) return;
    pd_job **jobs = malloc(entries->elements * sizeof *jobs);
    if (!jobs) return; /* they stay pending, and are claimed later */
    size_t n = 0;
    for (size_t i = 0; i < entries->elements; i++) {
        redisReply *e = entries->element[i];
        int deleted;
        pd_job *j = entry_job(s, e, &deleted);
        if (last_id && e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
            e->element[0]->type == REDIS_REPLY_STRING)
            snprintf(last_id, cap, "%s", e->element[0]->str);
        if (j) {
            jobs[n++] = j;
        } else if (deleted) {
            const char *id = e->element[0]->str;
            pd_stream_ack(s, &id, 1, on_deleted_ack, NULL);
        }
    }
    if (n) s->cbs.on_jobs(s->cbs.data, jobs, n, claimed);
    free(jobs);
}

/* ---- the reader ---- */

static void read_later(pd_stream *s, int64_t ms);

static void read_again(pd_loop *l, void *data)
{
    maybe_read(data);
}

static void read_later(pd_stream *s, int64_t ms)
{
    pd_timer_start(s->loop, &s->read_timer, ms, read_again, s);
}

static void on_group(pd_rconn *c, redisReply *r, void *data)
{
    pd_stream *s = data;
    s->group_creating = 0;
    if (!r) return; /* reconnects, and tries again */
    if (r->type == REDIS_REPLY_ERROR && !is_err(r, "BUSYGROUP")) {
        pd_err("stream: XGROUP CREATE %s %s: %s", s->key, s->cfg->group, r->str);
        read_later(s, READ_RETRY_MS);
        return;
    }
    if (r->type != REDIS_REPLY_ERROR)
        pd_info("stream: created consumer group %s on %s", s->cfg->group, s->key);
    s->group_ready = 1;
    maybe_read(s);
}

static void on_read(pd_rconn *c, redisReply *r, void *data)
{
    pd_stream *s = data;
    s->reading = 0;
    if (!r || s->stopped) return;
    if (r->type == REDIS_REPLY_ERROR) {
        if (is_err(r, "NOGROUP")) {
            pd_warn("stream: group %s on %s is gone (Redis restarted empty?); creating it",
                    s->cfg->group, s->key);
            s->group_ready = 0;
            maybe_read(s);
        } else {
            pd_err("stream: XREADGROUP: %s", r->str);
            read_later(s, READ_RETRY_MS);
        }
        return;
    }
    redisReply *entries = NULL;
    /* [[key, [entries]]], or nil on timeout */
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2)
        entries = r->element[0]->element[1];
    size_t got = entries && entries->type == REDIS_REPLY_ARRAY ? entries->elements : 0;
    if (s->pel_phase) {
        if (got == 0) {
            s->pel_phase = 0;
        } else {
            pd_info("stream: %zu entries pending on this consumer from before", got);
        }
        deliver(s, entries, 1, s->pel_cursor, sizeof s->pel_cursor);
    } else {
        deliver(s, entries, 0, NULL, 0);
    }
    maybe_read(s);
}

static void maybe_read(pd_stream *s)
{
    if (s->stopped || s->reading || !pd_rconn_up(s->reader)) return;
    if (!s->group_ready) {
        if (s->group_creating) return;
        const char *a[] = {"XGROUP", "CREATE", s->key, s->cfg->group, "0", "MKSTREAM"};
        if (pd_rconn_cmd(s->reader, 0, on_group, s, 6, a, NULL) == 0) s->group_creating = 1;
        return;
    }
    size_t w = want(s);
    if (w == 0) return;
    if (w > (size_t)s->cfg->batch_size) w = (size_t)s->cfg->batch_size;
    char count[24], block[24];
    snprintf(count, sizeof count, "%zu", w);
    snprintf(block, sizeof block, "%lld", (long long)s->cfg->block_ms);
    const char *a[] = {"XREADGROUP", "GROUP", s->cfg->group, s->cfg->consumer, "COUNT", count,
                       "BLOCK",      block,   "STREAMS",     s->key,           ">"};
    if (s->pel_phase) {
        /* Own pending entries: BLOCK does not apply; from the last one seen. */
        a[6] = "STREAMS";
        a[7] = s->key;
        a[8] = s->pel_cursor;
        if (pd_rconn_cmd(s->reader, 0, on_read, s, 9, a, NULL) == 0) s->reading = 1;
        return;
    }
    if (pd_rconn_cmd(s->reader, s->cfg->block_ms, on_read, s, 11, a, NULL) == 0) s->reading = 1;
}

static void on_reader_state(pd_rconn *c, int up, void *data)
{
    pd_stream *s = data;
    if (!up) {
        s->reading = 0;
        s->group_creating = 0;
        s->group_ready = 0; /* Redis may have restarted empty: make sure */
        return;
    }
    maybe_read(s);
}

/* ---- claiming ---- */

static void claim_tick(pd_loop *l, void *data)
{
    pd_stream *s = data;
    maybe_claim(s);
    if (!s->stopped) pd_timer_start(l, &s->claim_timer, 100, claim_tick, s);
}

static void on_claim(pd_rconn *c, redisReply *r, void *data)
{
    pd_stream *s = data;
    s->claiming = 0;
    int64_t now = pd_now_ms();
    if (!r || s->stopped) return;
    if (r->type == REDIS_REPLY_ERROR) {
        if (is_err(r, "ERR unknown command") && !s->claim_unsupported) {
            s->claim_unsupported = 1;
            pd_err("stream: XAUTOCLAIM unsupported (Redis >= 6.2 needed): jobs of crashed "
                   "consumers are not taken over");
        } else if (!is_err(r, "NOGROUP")) {
            pd_err("stream: XAUTOCLAIM: %s", r->str);
        }
        s->next_claim_ms = now + s->cfg->claim_interval_ms;
        return;
    }
    /* [next cursor, [entries], (7.0+: [deleted ids])] */
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        pd_err("stream: XAUTOCLAIM: unexpected reply");
        s->next_claim_ms = now + s->cfg->claim_interval_ms;
        return;
    }
    redisReply *entries = r->element[1];
    if (entries->type == REDIS_REPLY_ARRAY && entries->elements)
        pd_info("stream: claimed %zu entries idle for %lld ms or more", entries->elements,
                (long long)s->cfg->claim_min_idle_ms);
    deliver(s, entries, 1, NULL, 0);
    snprintf(s->claim_cursor, sizeof s->claim_cursor, "%s", r->element[0]->str);
    if (strcmp(s->claim_cursor, "0-0") == 0)
        s->next_claim_ms = now + s->cfg->claim_interval_ms;
    else
        s->next_claim_ms = now; /* more to scan: go on at once */
}

static void maybe_claim(pd_stream *s)
{
    int64_t now = pd_now_ms();
    if (s->stopped || s->claiming || s->claim_unsupported || !pd_rconn_up(s->writer) ||
        now < s->next_claim_ms)
        return;
    size_t w = want(s);
    if (w == 0) return;
    if (w > (size_t)s->cfg->batch_size) w = (size_t)s->cfg->batch_size;
    char idle[24], count[24];
    snprintf(idle, sizeof idle, "%lld", (long long)s->cfg->claim_min_idle_ms);
    snprintf(count, sizeof count, "%zu", w);
    const char *a[] = {"XAUTOCLAIM", s->key,          s->cfg->group, s->cfg->consumer,
                       idle,         s->claim_cursor, "COUNT",       count};
    if (pd_rconn_cmd(s->writer, 0, on_claim, s, 8, a, NULL) == 0) s->claiming = 1;
}

static void on_writer_state(pd_rconn *c, int up, void *data)
{
    pd_stream *s = data;
    if (!up) {
        s->claiming = 0;
        return;
    }
    s->cbs.on_writer_up(s->cbs.data);
    maybe_claim(s);
}

/* ---- the writer's commands ---- */

static void on_wreply(pd_rconn *c, redisReply *r, void *data)
{
    wreq *w = data;
    if (!r)
        w->ok = -1;
    else if (r->type == REDIS_REPLY_ERROR && w->ok == 1)
        w->ok = 0;
    if (--w->parts == 0) {
        if (w->cb) w->cb(w->data, w->ok, r);
        free(w);
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        pd_warn("stream: %s", r->str);
    }
}

static int wcmd(pd_stream *s, pd_stream_cb cb, void *data, int argc, const char **argv,
                const size_t *lens)
{
    wreq *w = calloc(1, sizeof *w);
    if (!w) return -1;
    *w = (wreq){s, cb, data, 1, 1};
    if (pd_rconn_cmd(s->writer, 0, on_wreply, w, argc, argv, lens) != 0) {
        free(w);
        return -1;
    }
    return 0;
}

int pd_stream_seen(pd_stream *s, pd_job *const *jobs, size_t n, pd_stream_cb cb, void *data)
{
    assert(n > 0);
    const char **a = malloc((n + 1) * sizeof *a);
    char **keys = calloc(n, sizeof *keys);
    int rc = -1;
    if (a && keys) {
        a[0] = "MGET";
        size_t i;
        for (i = 0; i < n; i++) {
            size_t len =
                strlen(s->seen_prefix) + strlen(jobs[i]->user) + strlen(jobs[i]->device) + 2;
            if (!(keys[i] = malloc(len))) break;
            snprintf(keys[i], len, "%s%s:%s", s->seen_prefix, jobs[i]->user, jobs[i]->device);
            a[i + 1] = keys[i];
        }
        if (i == n) rc = wcmd(s, cb, data, (int)n + 1, a, NULL);
    }
    if (keys)
        for (size_t i = 0; i < n; i++)
            free(keys[i]);
    free(keys);
    free(a);
    return rc;
}

int pd_stream_ack(pd_stream *s, const char *const *ids, size_t n, pd_stream_cb cb, void *data)
{
    assert(n > 0);
    if (!pd_rconn_up(s->writer)) return -1;
    const char **a = malloc((n + 3) * sizeof *a);
    wreq *w = calloc(1, sizeof *w);
    if (!a || !w) {
        free(a);
        free(w);
        return -1;
    }
    *w = (wreq){s, cb, data, 0, 1};
    a[0] = "XACK";
    a[1] = s->key;
    a[2] = s->cfg->group;
    memcpy(a + 3, ids, n * sizeof *a);
    int rc = pd_rconn_cmd(s->writer, 0, on_wreply, w, (int)n + 3, a, NULL);
    if (rc == 0) {
        w->parts = 1;
        if (s->cfg->delete_acked) {
            a[1] = "XDEL";
            a[2] = s->key;
            /* XDEL takes the ids right after the key. */
            if (pd_rconn_cmd(s->writer, 0, on_wreply, w, (int)n + 2, a + 1, NULL) == 0) w->parts++;
        }
    } else {
        free(w);
    }
    free(a);
    return rc;
}

static int xadd(pd_stream *s, const char *key, const char *maxlen, const char **names,
                const size_t *nl, const char **vals, const size_t *vl, size_t n, pd_stream_cb cb,
                void *data)
{
    size_t argc = 0, cap = 6 + 2 * n;
    const char **a = malloc(cap * sizeof *a);
    size_t *l = malloc(cap * sizeof *l);
    int rc = -1;
    if (a && l) {
#define ARG(s_, n_) (a[argc] = (s_), l[argc] = (n_), argc++)
        ARG("XADD", 4);
        ARG(key, strlen(key));
        if (strcmp(maxlen, "0") != 0) {
            ARG("MAXLEN", 6);
            ARG("~", 1);
            ARG(maxlen, strlen(maxlen));
        }
        ARG("*", 1);
        for (size_t i = 0; i < n; i++) {
            ARG(names[i], nl ? nl[i] : strlen(names[i]));
            ARG(vals[i], vl ? vl[i] : strlen(vals[i]));
        }
#undef ARG
        assert(argc <= cap);
        rc = wcmd(s, cb, data, (int)argc, a, l);
    }
    free(a);
    free(l);
    return rc;
}

int pd_stream_feedback(pd_stream *s, const pd_job *j, const char *reason, int64_t ts_ms,
                       pd_stream_cb cb, void *data)
{
    assert(!j->bad);
    char ts[24];
    snprintf(ts, sizeof ts, "%lld", (long long)ts_ms);
    const char *names[] = {"platform", "token", "user", "device", "reason", "ts"};
    const char *vals[] = {pd_platform_names[j->platform], j->token, j->user, j->device, reason, ts};
    return xadd(s, s->feedback_key, s->feedback_maxlen, names, NULL, vals, NULL, 6, cb, data);
}

int pd_stream_dead(pd_stream *s, const pd_job *j, const char *reason, pd_stream_cb cb, void *data)
{
    size_t n = j->nfields + 4;
    const char **names = malloc(n * sizeof *names), **vals = malloc(n * sizeof *vals);
    size_t *nl = malloc(n * sizeof *nl), *vl = malloc(n * sizeof *vl);
    int rc = -1;
    if (names && vals && nl && vl) {
        size_t k = 0;
        for (size_t i = 0; i < j->nfields; i++, k++) {
            names[k] = j->fields[i].name;
            nl[k] = j->fields[i].name_len;
            vals[k] = j->fields[i].value;
            vl[k] = j->fields[i].value_len;
        }
        char attempts[16], status[16];
        snprintf(attempts, sizeof attempts, "%d", j->attempts);
        snprintf(status, sizeof status, "%ld", j->last_status);
        const char *xn[] = {"reason", "attempts", "status", "entry"};
        const char *xv[] = {reason, attempts, status, j->entry};
        for (int i = 0; i < 4; i++, k++) {
            names[k] = xn[i];
            nl[k] = strlen(xn[i]);
            vals[k] = xv[i];
            vl[k] = strlen(xv[i]);
        }
        rc = xadd(s, s->dead_key, s->dead_maxlen, names, nl, vals, vl, k, cb, data);
    }
    free(names);
    free(vals);
    free(nl);
    free(vl);
    return rc;
}

int pd_stream_touch(pd_stream *s, const char *const *ids, size_t n, int64_t min_idle_ms,
                    pd_stream_cb cb, void *data)
{
    assert(n > 0);
    const char **a = malloc((n + 6) * sizeof *a);
    if (!a) return -1;
    char idle[24];
    snprintf(idle, sizeof idle, "%lld", (long long)min_idle_ms);
    a[0] = "XCLAIM";
    a[1] = s->key;
    a[2] = s->cfg->group;
    a[3] = s->cfg->consumer;
    a[4] = idle;
    memcpy(a + 5, ids, n * sizeof *a);
    a[5 + n] = "JUSTID";
    int rc = wcmd(s, cb, data, (int)n + 6, a, NULL);
    free(a);
    return rc;
}

typedef struct forget {
    pd_stream *s;
    pd_stream_cb cb;
    void *data;
} forget;

static void on_forget_pending(void *data, int ok, redisReply *r)
{
    forget *f = data;
    pd_stream *s = f->s;
    if (ok == 1 && r->type == REDIS_REPLY_ARRAY && r->elements == 0) {
        const char *a[] = {"XGROUP", "DELCONSUMER", s->key, s->cfg->group, s->cfg->consumer};
        if (wcmd(s, f->cb, f->data, 5, a, NULL) == 0) {
            free(f);
            return;
        }
    }
    f->cb(f->data, ok == 1 ? 0 : ok, r);
    free(f);
}

int pd_stream_forget_consumer(pd_stream *s, pd_stream_cb cb, void *data)
{
    forget *f = malloc(sizeof *f);
    if (!f) return -1;
    *f = (forget){s, cb, data};
    const char *a[] = {"XPENDING", s->key, s->cfg->group, "-", "+", "1", s->cfg->consumer};
    if (wcmd(s, on_forget_pending, f, 7, a, NULL) != 0) {
        free(f);
        return -1;
    }
    return 0;
}

/* ---- life ---- */

pd_stream *pd_stream_new(pd_loop *l, const pd_config *cfg, const pd_stream_cbs *cbs)
{
    pd_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->loop = l;
    s->cfg = cfg;
    s->cbs = *cbs;
    s->pel_phase = 1;
    strcpy(s->pel_cursor, "0");
    strcpy(s->claim_cursor, "0-0");
    snprintf(s->feedback_maxlen, sizeof s->feedback_maxlen, "%lld", cfg->feedback_maxlen);
    snprintf(s->dead_maxlen, sizeof s->dead_maxlen, "%lld", cfg->dead_maxlen);
    s->key = cat(cfg->stream_prefix, "push");
    s->feedback_key = cat(cfg->stream_prefix, "push:feedback");
    s->dead_key = cat(cfg->stream_prefix, "push:dead");
    s->seen_prefix = cat(cfg->stream_prefix, "pushseen:");
    if (!s->key || !s->feedback_key || !s->dead_key || !s->seen_prefix) {
        pd_stream_free(s);
        return NULL;
    }
    s->reader = pd_rconn_new(l, cfg, "reader", on_reader_state, s);
    s->writer = pd_rconn_new(l, cfg, "writer", on_writer_state, s);
    if (!s->reader || !s->writer) {
        pd_stream_free(s);
        return NULL;
    }
    s->next_claim_ms = pd_now_ms() + cfg->claim_interval_ms / 4; /* let own reads go first */
    pd_timer_start(l, &s->claim_timer, 100, claim_tick, s);
    return s;
}

void pd_stream_poke(pd_stream *s)
{
    maybe_read(s);
    maybe_claim(s);
}

void pd_stream_stop_reading(pd_stream *s)
{
    if (s->stopped) return;
    s->stopped = 1;
    pd_timer_cancel(s->loop, &s->read_timer);
    pd_timer_cancel(s->loop, &s->claim_timer);
    pd_rconn_close(s->reader); /* a blocked XREADGROUP is simply abandoned */
}

int pd_stream_writer_up(const pd_stream *s)
{
    return pd_rconn_up(s->writer);
}

size_t pd_stream_writer_pending(const pd_stream *s)
{
    return pd_rconn_pending(s->writer);
}

void pd_stream_free(pd_stream *s)
{
    if (!s) return;
    s->stopped = 1;
    if (s->loop) {
        pd_timer_cancel(s->loop, &s->read_timer);
        pd_timer_cancel(s->loop, &s->claim_timer);
    }
    pd_rconn_free(s->reader);
    pd_rconn_free(s->writer);
    free(s->key);
    free(s->feedback_key);
    free(s->dead_key);
    free(s->seen_prefix);
    free(s);
}
