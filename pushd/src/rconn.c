/* rconn — see rconn.h.
 *
 * States: DOWN (reconnect timer armed), CONNECTING (hiredis context exists,
 * handshake sent, not answered yet), UP, CLOSED (pd_rconn_close; terminal).
 * INVARIANT: c->ac != NULL exactly in CONNECTING and UP; `pending` holds
 * the commands hiredis still owes a callback, oldest first. */
#include "rconn.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>

#include "log.h"
#include "retry.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define WATCHDOG_MS 200

enum { DOWN, CONNECTING, UP, CLOSED };

typedef struct pcmd {
    pd_rconn *c;
    pd_rconn_reply_cb cb; /* NULL: a handshake command */
    void *data;
    int64_t deadline_ms;
    struct pcmd *next;
} pcmd;

struct pd_rconn {
    pd_loop *loop;
    const pd_config *cfg;
    char name[32];
    pd_rconn_state_cb state_cb;
    void *data;
    int state;
    redisAsyncContext *ac;
    int fd, events;
    pcmd *head, *tail;
    size_t npending;
    int64_t connect_started_ms, backoff_ms;
    int failures; /* consecutive connect failures, for quieter logs */
    pd_timer reconnect, watchdog;
    pd_rng rng;
    char why[160];
};

static void start_connect(pd_loop *l, void *data);

int pd_rconn_up(const pd_rconn *c)
{
    return c->state == UP;
}

size_t pd_rconn_pending(const pd_rconn *c)
{
    return c->npending;
}

/* ---- the hiredis event adapter ---- */

static void on_fd(pd_loop *l, int fd, int events, void *data)
{
    pd_rconn *c = data;
    if (c->ac && (events & PD_READ)) redisAsyncHandleRead(c->ac);
    if (c->ac && (events & PD_WRITE)) redisAsyncHandleWrite(c->ac);
}

static void ev_update(pd_rconn *c)
{
    if (c->fd >= 0) pd_loop_watch(c->loop, c->fd, c->events, on_fd, c);
}
static void ev_add_read(void *p)
{
    pd_rconn *c = p;
    c->events |= PD_READ;
    ev_update(c);
}
static void ev_del_read(void *p)
{
    pd_rconn *c = p;
    c->events &= ~PD_READ;
    ev_update(c);
}
static void ev_add_write(void *p)
{
    pd_rconn *c = p;
    c->events |= PD_WRITE;
    ev_update(c);
}
static void ev_del_write(void *p)
{
    pd_rconn *c = p;
    c->events &= ~PD_WRITE;
    ev_update(c);
}

/* Arm the reconnect timer (backoff with jitter); log quietly. */
static void schedule(pd_rconn *c, int was_up)
{
    c->state = DOWN;
    if (was_up) {
        pd_warn("redis %s: connection lost (%s); reconnecting", c->name, c->why);
        c->backoff_ms = BACKOFF_MIN_MS;
    } else if (c->failures++ == 0 || c->failures % 20 == 0) {
        pd_warn("redis %s: cannot connect to %s (%s); retrying", c->name, c->cfg->redis, c->why);
    }
    int64_t d = c->backoff_ms / 2 + (int64_t)(pd_rng_next(&c->rng) * (double)(c->backoff_ms / 2));
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    pd_timer_start(c->loop, &c->reconnect, d, start_connect, c);
    if (was_up && c->state_cb) c->state_cb(c, 0, c->data);
}

/* The context is going away (hiredis frees it after this returns). */
static void lost(pd_rconn *c, const char *why)
{
    if (!c->ac) return;
    int was_up = c->state == UP;
    if (c->fd >= 0) pd_loop_unwatch(c->loop, c->fd);
    c->fd = -1;
    c->events = 0;
    c->ac = NULL;
    if (why && !c->why[0]) snprintf(c->why, sizeof c->why, "%s", why);
    if (!c->why[0]) snprintf(c->why, sizeof c->why, "closed");
    if (c->state == CLOSED) return;
    schedule(c, was_up);
}

static void ev_cleanup(void *p)
{
    lost(p, NULL);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    pd_rconn *c = ac->data;
    if (status != REDIS_OK) lost(c, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    pd_rconn *c = ac->data;
    lost(c, status == REDIS_OK ? NULL : ac->errstr[0] ? ac->errstr : "connection error");
}

/* ---- commands ---- */

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    pcmd *p = privdata;
    pd_rconn *c = p->c;
    assert(c->head == p);
    c->head = p->next;
    if (!c->head) c->tail = NULL;
    c->npending--;
    redisReply *r = reply;
    if (p->cb) {
        p->cb(c, r, p->data);
    } else if (r && c->state == CONNECTING) { /* handshake: AUTH, SELECT, then PING */
        if (r->type == REDIS_REPLY_ERROR) {
            if (!c->why[0]) {
                pd_err("redis %s: handshake refused: %s", c->name, r->str);
                snprintf(c->why, sizeof c->why, "handshake refused: %.100s", r->str);
            }
            if (c->ac) redisAsyncDisconnect(c->ac); /* after the replies still owed */
        } else if (p->data == (void *)c) {          /* the PING: last of the handshake */
            c->state = UP;
            c->failures = 0;
            c->backoff_ms = BACKOFF_MIN_MS;
            if (c->cfg->redis_host) redisEnableKeepAlive(&ac->c);
            pd_info("redis %s: connected to %s", c->name, c->cfg->redis);
            if (c->state_cb) c->state_cb(c, 1, c->data);
        }
    }
    free(p);
}

static int send_cmd(pd_rconn *c, int64_t allowance_ms, pd_rconn_reply_cb cb, void *data, int argc,
                    const char **argv, const size_t *lens)
{
    pcmd *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->c = c;
    p->cb = cb;
    p->data = data;
    p->deadline_ms = pd_now_ms() + allowance_ms;
    size_t tmp[64], *heap = NULL;
    if (!lens) {
        size_t *l = argc <= 64 ? tmp : (heap = malloc((size_t)argc * sizeof *heap));
        if (!l) {
            free(p);
            return -1;
        }
        for (int i = 0; i < argc; i++)
            l[i] = strlen(argv[i]);
        lens = l;
    }
    int rc = redisAsyncCommandArgv(c->ac, on_reply, p, argc, argv, lens);
    free(heap);
    if (rc != REDIS_OK) {
        free(p);
        return -1;
    }
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->npending++;
    return 0;
}

int pd_rconn_cmd(pd_rconn *c, int64_t extra_ms, pd_rconn_reply_cb cb, void *data, int argc,
                 const char **argv, const size_t *lens)
{
    assert(cb && argc > 0);
    if (c->state != UP || !c->ac) return -1;
    return send_cmd(c, c->cfg->redis_timeout_ms + extra_ms, cb, data, argc, argv, lens);
}

static void start_connect(pd_loop *l, void *data)
{
    pd_rconn *c = data;
    if (c->state == CLOSED) return;
    assert(!c->ac);
    redisAsyncContext *ac = c->cfg->redis_unix
                                ? redisAsyncConnectUnix(c->cfg->redis_unix)
                                : redisAsyncConnect(c->cfg->redis_host, c->cfg->redis_port);
    c->why[0] = '\0';
    if (!ac || ac->err) {
        snprintf(c->why, sizeof c->why, "%s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule(c, 0);
        return;
    }
    c->ac = ac;
    c->fd = ac->c.fd;
    c->events = 0;
    c->state = CONNECTING;
    c->connect_started_ms = pd_now_ms();
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    int64_t t = c->cfg->redis_timeout_ms;
    int rc = 0;
    if (c->cfg->redis_password) {
        const char *a[3] = {"AUTH", c->cfg->redis_user ? c->cfg->redis_user : NULL, NULL};
        if (c->cfg->redis_user) {
            a[2] = c->cfg->redis_password;
            rc |= send_cmd(c, t, NULL, NULL, 3, a, NULL);
        } else {
            a[1] = c->cfg->redis_password;
            rc |= send_cmd(c, t, NULL, NULL, 2, a, NULL);
        }
    }
    if (c->cfg->redis_db) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->cfg->redis_db);
        const char *a[2] = {"SELECT", db};
        rc |= send_cmd(c, t, NULL, NULL, 2, a, NULL);
    }
    const char *ping[1] = {"PING"};
    rc |= send_cmd(c, t, NULL, c, 1, ping, NULL);
    if (rc) {
        snprintf(c->why, sizeof c->why, "cannot queue the handshake");
        redisAsyncFree(ac); /* runs lost() through the cleanup hook */
    }
}

static void watchdog(pd_loop *l, void *data)
{
    pd_rconn *c = data;
    if (c->state == CLOSED) return;
    int64_t now = pd_now_ms();
    if (c->ac && c->state == CONNECTING && now - c->connect_started_ms > c->cfg->redis_timeout_ms) {
        snprintf(c->why, sizeof c->why, "connect timed out");
        redisAsyncFree(c->ac);
    } else if (c->ac && c->head && now > c->head->deadline_ms) {
        snprintf(c->why, sizeof c->why, "reply timed out");
        redisAsyncFree(c->ac);
    }
    pd_timer_start(c->loop, &c->watchdog, WATCHDOG_MS, watchdog, c);
}

pd_rconn *pd_rconn_new(pd_loop *l, const pd_config *cfg, const char *name, pd_rconn_state_cb cb,
                       void *data)
{
    pd_rconn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = l;
    c->cfg = cfg;
    snprintf(c->name, sizeof c->name, "%s", name);
    c->state_cb = cb;
    c->data = data;
    c->fd = -1;
    c->backoff_ms = BACKOFF_MIN_MS;
    pd_rng_seed(&c->rng, (uint64_t)pd_now_ms() ^ (uint64_t)(uintptr_t)c);
    c->state = DOWN;
    start_connect(l, c);
    pd_timer_start(l, &c->watchdog, WATCHDOG_MS, watchdog, c);
    return c;
}

void pd_rconn_close(pd_rconn *c)
{
    if (!c || c->state == CLOSED) return;
    c->state = CLOSED;
    pd_timer_cancel(c->loop, &c->reconnect);
    pd_timer_cancel(c->loop, &c->watchdog);
    if (c->ac) redisAsyncFree(c->ac);
    assert(!c->ac && c->npending == 0);
}

void pd_rconn_free(pd_rconn *c)
{
    if (!c) return;
    pd_rconn_close(c);
    free(c);
}
