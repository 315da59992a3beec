/* presence — the live presence state of the users connected to this broker
 * and of the users watched from it. See presence.h for the idea.
 *
 * One `puser` per user that has a connection here, is in its debounce, or
 * is watched by a device here; it is freed when none of those holds.
 * INVARIANTS (asserted): conns is the number of the user's admitted
 * connections here and equals the sum of its per-device counts; a user
 * with conns > 0 is online and not leaving; a leaving user has conns == 0
 * and is on the leaving list, which is in left_ms order (the debounce is
 * the same for everyone, so appending keeps it sorted). */
#include "presence.h"
#include "mqc_clock.h"

#include <assert.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#define ST(x) MQCHAT__V1__PRESENCE_STATE__PRESENCE_STATE_##x
#define VIS(x) MQCHAT__V1__PRESENCE_VISIBILITY__PRESENCE_VISIBILITY_##x

typedef struct watcher {
    conn *c;
    struct puser *target;
    struct watcher *prev, *next; /* in target->watchers */
} watcher;

typedef struct dev_cnt {
    char device[MQC_ID_BUF];
    int n;
    int64_t since_ms;
    char transport[16];
    UT_hash_handle hh;
} dev_cnt;

typedef struct puser {
    char user[MQC_ID_BUF];
    int conns;
    dev_cnt *devices;
    int online; /* as announced to watchers and Redis */
    int64_t since_ms;
    int leaving;
    int64_t left_ms;      /* wall time: the last seen shown */
    int64_t left_mono_ms; /* monotonic: the debounce deadline */
    int known_offline;    /* went offline here: last_seen_ms is right */
    int64_t last_seen_ms;
    struct puser *lv_prev, *lv_next;
    watcher *watchers;
    int prefs_loaded;
    chat_presence_prefs prefs;
    UT_hash_handle hh;
} puser;

/* A device's watch list (conn->presence). */
typedef struct watchset {
    size_t n;
    watcher **w;
} watchset;

/* A watch answer waiting for Redis. */
typedef struct pwait {
    presence *p;
    conn *c; /* NULL once the device left */
    char request_id[MQC_ID_BUF];
    size_t n;
    Mqchat__V1__PresenceUpdate *ups;
    char (*users)[MQC_ID_BUF];
    size_t *need; /* indices of ups that Redis answers */
    size_t n_need;
    struct pwait *prev, *next;
} pwait;

struct presence {
    dev *d;
    mqc_redis *r;
    puser *users;
    puser *leaving;
    pwait *pendings;
};

presence *presence_new(dev *d, mqc_redis *r)
{
    presence *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->d = d;
    p->r = r;
    return p;
}

static puser *find(presence *p, const char *user)
{
    puser *u;
    HASH_FIND_STR(p->users, user, u);
    return u;
}

static puser *get(presence *p, const char *user)
{
    puser *u = find(p, user);
    if (u) return u;
    if (!(u = calloc(1, sizeof(*u)))) return NULL;
    snprintf(u->user, sizeof(u->user), "%s", user);
    HASH_ADD_STR(p->users, user, u);
    return u;
}

/* Forget a user nothing holds any more. */
static void maybe_free(presence *p, puser *u)
{
    if (u->conns || u->leaving || u->watchers) return;
    assert(!u->devices);
    HASH_DEL(p->users, u);
    free(u);
}

/* ---- telling watchers ------------------------------------------------- */

/* What `watcher_user` may see of u in state/last_seen. */
static void visible(const puser *u, const char *watcher_user, Mqchat__V1__PresenceState state,
                    int64_t last_seen, Mqchat__V1__PresenceUpdate *out)
{
    mqchat__v1__presence_update__init(out);
    out->user_id = (char *)u->user;
    int self = strcmp(watcher_user, u->user) == 0;
    if (!self && u->prefs.visibility == VIS(NOBODY)) {
        out->state = ST(UNKNOWN);
        return;
    }
    out->state = state;
    if (state == ST(OFFLINE) && (self || !u->prefs.hide_last_seen)) out->last_seen_ms = last_seen;
}

/* One PresenceUpdate to one device, on its user's inbox topic by client id. */
static void send_update(presence *p, conn *c, Mqchat__V1__PresenceUpdate *up)
{
    Mqchat__V1__ServerEvent ev = MQCHAT__V1__SERVER_EVENT__INIT;
    ev.body_case = MQCHAT__V1__SERVER_EVENT__BODY_PRESENCE;
    ev.presence = up;
    char topic[512];
    pubs out = {0};
    if (topic_inbox(topic, sizeof(topic), p->d->cfg->topic_prefix, c->user) == 0 &&
        pubs_add(&out, c->client_id, topic, &ev.base, 1) == 0)
        out_after(p->d, 0, &out); /* nothing stored: no durability to wait for */
    else
        pubs_free(&out);
}

static void tell_watchers(presence *p, puser *u)
{
    for (watcher *w = u->watchers; w; w = w->next) {
        Mqchat__V1__PresenceUpdate up;
        visible(u, w->c->user, u->online ? ST(ONLINE) : ST(OFFLINE), u->last_seen_ms, &up);
        send_update(p, w->c, &up);
    }
}

/* ---- connections -------------------------------------------------------- */

static void go_offline(presence *p, puser *u)
{
    assert(u->conns == 0 && u->leaving);
    DL_DELETE2(p->leaving, u, lv_prev, lv_next);
    u->leaving = 0;
    u->online = 0;
    u->known_offline = 1;
    u->last_seen_ms = u->left_ms;
    if (p->r) mqc_redis_presence(p->r, u->user, 0, u->left_ms);
    tell_watchers(p, u);
    maybe_free(p, u);
}

void presence_connect(presence *p, conn *c, const char *transport)
{
    puser *u = get(p, c->user);
    dev_cnt *dc = NULL;
    if (u) HASH_FIND_STR(u->devices, c->device, dc);
    if (u && !dc && (dc = calloc(1, sizeof(*dc)))) {
        snprintf(dc->device, sizeof(dc->device), "%s", c->device);
        HASH_ADD_STR(u->devices, device, dc);
    }
    if (!u || !dc) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: out of memory tracking presence of %s",
                             c->client_id);
        if (u) maybe_free(p, u);
        return;
    }
    int64_t now = mqc_wall_ms();
    c->presence_counted = 1;
    if (dc->n++ == 0) {
        dc->since_ms = now;
        snprintf(dc->transport, sizeof(dc->transport), "%s", transport);
        if (p->r) mqc_redis_session(p->r, u->user, dc->device, 1, now, transport);
    }
    if (u->conns++ > 0) return;
    if (u->leaving) {
        /* Back within the debounce: watchers never saw the user leave. */
        DL_DELETE2(p->leaving, u, lv_prev, lv_next);
        u->leaving = 0;
        return;
    }
    u->online = 1;
    u->known_offline = 0;
    u->since_ms = now;
    if (p->r) mqc_redis_presence(p->r, u->user, 1, now);
    tell_watchers(p, u);
}

static void unwatch_all(presence *p, conn *c);

void presence_disconnect(presence *p, conn *c)
{
    unwatch_all(p, c);
    for (pwait *q = p->pendings; q; q = q->next)
        if (q->c == c) q->c = NULL; /* its answer is dropped */
    if (!c->presence_counted) return;
    c->presence_counted = 0;
    puser *u = find(p, c->user);
    dev_cnt *dc = NULL;
    if (u) HASH_FIND_STR(u->devices, c->device, dc);
    if (!u || !dc) return; /* counted, so both exist: only out of memory at connect */
    assert(u->conns > 0 && dc->n > 0);
    if (--dc->n == 0) {
        if (p->r) mqc_redis_session(p->r, u->user, dc->device, 0, 0, NULL);
        HASH_DEL(u->devices, dc);
        free(dc);
    }
    if (--u->conns > 0) return;
    u->leaving = 1;
    u->left_ms = mqc_wall_ms();
    u->left_mono_ms = mqc_mono_ms();
    DL_APPEND2(p->leaving, u, lv_prev, lv_next);
    if (p->d->cfg->presence_debounce_ms == 0) go_offline(p, u);
}

void presence_tick(presence *p, int64_t now)
{
    /* Monotonic, so the leaving list stays in deadline order whatever the
     * wall clock does. */
    while (p->leaving && p->leaving->left_mono_ms + p->d->cfg->presence_debounce_ms <= now)
        go_offline(p, p->leaving);
}

/* ---- watching ------------------------------------------------------------ */

static void unwatch_all(presence *p, conn *c)
{
    watchset *ws = c->presence;
    if (!ws) return;
    for (size_t i = 0; i < ws->n; i++) {
        watcher *w = ws->w[i];
        DL_DELETE(w->target->watchers, w);
        maybe_free(p, w->target);
        free(w);
    }
    free(ws->w);
    free(ws);
    c->presence = NULL;
}

/* Drop the targets of a refused watch that nothing else holds; a user
 * listed twice (the wire layer refuses that, other callers might not) is
 * released once. */
static void free_targets(presence *p, puser **t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++)
            seen = t[k] == t[i];
        if (t[i] && !seen) maybe_free(p, t[i]);
    }
    free(t);
}

static void refuse(presence *p, conn *c, const char *rid, wire_code code, const char *fmt,
                   const char *arg)
{
    chat_status st = {.code = code};
    snprintf(st.msg, sizeof(st.msg), fmt, arg);
    reply_error(p->d, c, rid, &st);
}

static void respond(presence *p, conn *c, const char *rid, Mqchat__V1__PresenceUpdate *ups,
                    size_t n)
{
    Mqchat__V1__PresenceUpdate **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (!ptrs) {
        refuse(p, c, rid, EC(INTERNAL), "%s", "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &ups[i];
    Mqchat__V1__PresenceWatchResponse pw = MQCHAT__V1__PRESENCE_WATCH_RESPONSE__INIT;
    pw.n_users = n;
    pw.users = ptrs;
    Mqchat__V1__Response resp = MQCHAT__V1__RESPONSE__INIT;
    resp.request_id = (char *)rid;
    resp.body_case = MQCHAT__V1__RESPONSE__BODY_PRESENCE;
    resp.presence = &pw;
    reply_response(p->d, c, &resp);
    free(ptrs);
}

static void pending_free(pwait *q)
{
    free(q->ups);
    free(q->users);
    free(q->need);
    free(q);
}

/* Redis answered the users a watch could not answer from memory. */
static void on_read(void *data, const mqc_pres *res, size_t n)
{
    pwait *q = data;
    presence *p = q->p;
    DL_DELETE(p->pendings, q);
    for (size_t k = 0; q->c && k < n && k < q->n_need; k++) {
        size_t i = q->need[k];
        puser *u = find(p, q->users[i]);
        Mqchat__V1__PresenceState st = res[k].state == MQC_PRES_ONLINE    ? ST(ONLINE)
                                       : res[k].state == MQC_PRES_OFFLINE ? ST(OFFLINE)
                                                                          : ST(UNKNOWN);
        chat_status cst;
        if (u && !u->prefs_loaded &&
            chat_presence_prefs_get(&p->d->chat, u->user, &u->prefs, &cst) == 0)
            u->prefs_loaded = 1;
        if (u && u->prefs_loaded) /* the privacy of the target applies */
            visible(u, q->c->user, st, res[k].last_seen_ms, &q->ups[i]);
        else { /* cannot tell what may be shown: nothing */
            q->ups[i].state = ST(UNKNOWN);
            q->ups[i].last_seen_ms = 0;
        }
        q->ups[i].user_id = q->users[i];
    }
    if (q->c) respond(p, q->c, q->request_id, q->ups, q->n);
    pending_free(q);
}

void presence_watch(presence *p, conn *c, const char *rid, const Mqchat__V1__PresenceWatch *w)
{
    const mqc_config *cfg = p->d->cfg;
    if (w->n_user_ids > cfg->presence_watch_max) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", cfg->presence_watch_max);
        refuse(p, c, rid, EC(INVALID_ARGUMENT), "at most %s users may be watched at once", n);
        return;
    }
    /* Check every target before changing anything. */
    size_t n = w->n_user_ids;
    puser **t = calloc(n ? n : 1, sizeof(*t));
    if (!t) {
        refuse(p, c, rid, EC(INTERNAL), "%s", "out of memory");
        return;
    }
    chat_status st;
    int ok = 1;
    for (size_t i = 0; ok && i < n; i++) {
        if (!(t[i] = get(p, w->user_ids[i]))) {
            refuse(p, c, rid, EC(INTERNAL), "%s", "out of memory");
            ok = 0;
            break;
        }
        if (!t[i]->prefs_loaded) {
            if (chat_presence_prefs_get(&p->d->chat, t[i]->user, &t[i]->prefs, &st)) {
                reply_error(p->d, c, rid, &st);
                ok = 0;
                break;
            }
            t[i]->prefs_loaded = 1;
        }
        int allowed;
        if (chat_presence_may_watch(&p->d->chat, c->user, t[i]->user, &t[i]->prefs, &allowed,
                                    &st)) {
            reply_error(p->d, c, rid, &st);
            ok = 0;
        } else if (!allowed) {
            refuse(p, c, rid, EC(PERMISSION_DENIED),
                   "%.64s shows presence to contacts only: you share no conversation", t[i]->user);
            ok = 0;
        }
    }
    if (!ok) {
        free_targets(p, t, n);
        return;
    }
    /* Replace the device's watch list. */
    watchset *ws = calloc(1, sizeof(*ws));
    pwait *q = calloc(1, sizeof(*q));
    if (ws) ws->w = calloc(n ? n : 1, sizeof(*ws->w));
    if (q) {
        q->ups = calloc(n ? n : 1, sizeof(*q->ups));
        q->users = calloc(n ? n : 1, sizeof(*q->users));
        q->need = calloc(n ? n : 1, sizeof(*q->need));
    }
    /* Every watcher entry first, so that attaching cannot fail halfway. */
    int short_of_memory = !ws || !ws->w;
    for (size_t i = 0; !short_of_memory && i < n; i++)
        if (!(ws->w[i] = calloc(1, sizeof(*ws->w[i])))) short_of_memory = 1;
    if (short_of_memory || !q || !q->ups || !q->users || !q->need) {
        for (size_t i = 0; ws && ws->w && i < n; i++)
            free(ws->w[i]);
        if (ws) free(ws->w);
        free(ws);
        if (q) pending_free(q);
        free_targets(p, t, n);
        refuse(p, c, rid, EC(INTERNAL), "%s", "out of memory");
        return;
    }
    /* Attach the new list before dropping the old one, so that targets on
     * both lists are not freed in between. */
    for (size_t i = 0; i < n; i++) {
        watcher *x = ws->w[i];
        x->c = c;
        x->target = t[i];
        DL_APPEND(t[i]->watchers, x);
    }
    ws->n = n;
    unwatch_all(p, c);
    c->presence = ws;
    /* The answer: from memory where this broker knows, else from Redis. */
    q->p = p;
    q->c = c;
    snprintf(q->request_id, sizeof(q->request_id), "%s", rid);
    q->n = n;
    for (size_t i = 0; i < n; i++) {
        puser *u = t[i];
        snprintf(q->users[i], sizeof(q->users[i]), "%s", u->user);
        if (u->conns || u->leaving)
            visible(u, c->user, ST(ONLINE), 0, &q->ups[i]);
        else if (u->known_offline)
            visible(u, c->user, ST(OFFLINE), u->last_seen_ms, &q->ups[i]);
        else {
            /* Not known here; Redis tells, unless the user hides anyway. */
            visible(u, c->user, ST(UNKNOWN), 0, &q->ups[i]);
            if (u->prefs.visibility != VIS(NOBODY)) q->need[q->n_need++] = i;
        }
        q->ups[i].user_id = q->users[i];
    }
    free(t);
    const char **ask = calloc(q->n_need ? q->n_need : 1, sizeof(*ask));
    int asked = 0;
    if (ask && q->n_need && p->r) {
        for (size_t k = 0; k < q->n_need; k++)
            ask[k] = q->users[q->need[k]];
        asked = mqc_redis_read(p->r, ask, q->n_need, on_read, q) == 0;
    }
    free(ask);
    if (asked) {
        DL_APPEND(p->pendings, q);
        return;
    }
    /* No Redis, or it is down: what this broker does not know is UNKNOWN. */
    respond(p, c, rid, q->ups, q->n);
    pending_free(q);
}

void presence_settings(presence *p, conn *c, const char *rid,
                       const Mqchat__V1__PresenceSettings *ps)
{
    chat_caller who = {.user = c->user, .device = c->device};
    chat_presence_prefs prefs;
    chat_status st;
    if (chat_presence_settings(&p->d->chat, &who, ps, &prefs, &st)) {
        reply_error(p->d, c, rid, &st);
        return;
    }
    Mqchat__V1__Ok ok = MQCHAT__V1__OK__INIT;
    Mqchat__V1__Response resp = MQCHAT__V1__RESPONSE__INIT;
    resp.request_id = (char *)rid;
    resp.body_case = MQCHAT__V1__RESPONSE__BODY_OK;
    resp.ok = &ok;
    reply_response(p->d, c, &resp);
    puser *u = find(p, c->user);
    if (!u) return;
    u->prefs = prefs;
    u->prefs_loaded = 1;
    /* Current watchers see the change at once; one who may no longer
     * watch gets UNKNOWN and is dropped. */
    for (watcher *w = u->watchers, *next; w; w = next) {
        next = w->next;
        int allowed = 1;
        if (chat_presence_may_watch(&p->d->chat, w->c->user, u->user, &prefs, &allowed, &st))
            allowed = 1; /* cannot tell now: keep the watch */
        Mqchat__V1__PresenceUpdate up;
        if (allowed) {
            visible(u, w->c->user, u->online ? ST(ONLINE) : ST(OFFLINE), u->last_seen_ms, &up);
        } else {
            mqchat__v1__presence_update__init(&up);
            up.user_id = u->user;
            up.state = ST(UNKNOWN);
        }
        send_update(p, w->c, &up);
        if (!allowed) {
            /* Out of the watcher's set; the slot stays, pointing nowhere. */
            watchset *ws = w->c->presence;
            for (size_t i = 0; ws && i < ws->n; i++)
                if (ws->w[i] == w) ws->w[i] = ws->w[--ws->n];
            DL_DELETE(u->watchers, w);
            free(w);
        }
    }
}

void presence_redis_up(void *data)
{
    presence *p = data;
    if (!p->r) return;
    mqc_redis_rebuild_begin(p->r);
    for (puser *u = p->users; u; u = u->hh.next) {
        for (dev_cnt *dc = u->devices; dc; dc = dc->hh.next)
            mqc_redis_rebuild_session(p->r, u->user, dc->device, dc->since_ms, dc->transport);
        if (u->online) mqc_redis_rebuild_online(p->r, u->user, u->since_ms);
    }
    mqc_redis_rebuild_end(p->r);
    mqc_redis_flush(p->r);
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "mqchat: Redis connected; presence of %u users written",
                         HASH_COUNT(p->users));
}

void presence_shutdown(presence *p)
{
    if (!p->r) return;
    /* The broker stops: mosquitto fires no DISCONNECT now, so everyone
     * connected here goes offline (and everyone in the debounce, at the
     * time they left), and the node says goodbye. */
    int64_t now = mqc_wall_ms();
    for (puser *u = p->users; u; u = u->hh.next) {
        for (dev_cnt *dc = u->devices; dc; dc = dc->hh.next)
            mqc_redis_session(p->r, u->user, dc->device, 0, 0, NULL);
        if (u->online) mqc_redis_presence(p->r, u->user, 0, u->leaving ? u->left_ms : now);
    }
    mqc_redis_bye(p->r);
    mqc_redis_flush(p->r);
}

void presence_attach_redis(presence *p, mqc_redis *r)
{
    p->r = r;
}

void presence_free(presence *p)
{
    if (!p) return;
    for (conn *c = p->d->conns; c; c = c->hh.next)
        if (c->presence) {
            watchset *ws = c->presence;
            free(ws->w);
            free(ws);
            c->presence = NULL;
        }
    for (pwait *q = p->pendings, *next; q; q = next) {
        next = q->next;
        pending_free(q);
    }
    puser *u, *tmp;
    HASH_ITER(hh, p->users, u, tmp)
    {
        dev_cnt *dc, *dt;
        HASH_ITER(hh, u->devices, dc, dt)
        {
            HASH_DEL(u->devices, dc);
            free(dc);
        }
        for (watcher *w = u->watchers, *next; w; w = next) {
            next = w->next;
            free(w);
        }
        HASH_DEL(p->users, u);
        free(u);
    }
    free(p);
}
