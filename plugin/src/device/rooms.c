/* rooms — who gets a large conversation live.
 *
 * A small conversation's message names, in the store's fan-out, every
 * member, and each member's connected devices get a copy. A large one
 * names nobody (docs/PROTOCOL.md, "Large conversations"), and walking
 * 100,000 members per message to find the few online would cost what the
 * store just saved. So each large conversation with a member online has a
 * room: the array of its members' connections. A connection joins the
 * rooms of its user's large conversations when it authenticates (one store
 * row per large conversation of the user), leaves them when it goes, and
 * rooms follow membership changes and mode switches.
 *
 * A broadcast (lane.c) walks a room by index from 0 to the room's size
 * when it was queued. While a broadcast is queued (r->jobs > 0) a leaving
 * connection leaves a hole (NULL) instead of moving the last one into its
 * place, which would make a walk skip it; holes are compacted when the
 * last broadcast is done. A connection that joins meanwhile is appended
 * past every queued walk's end: it gets what is written from then on, and
 * pulls the rest (it joined before it synced).
 *
 * Membership changes follow the log's order, not the moment they are
 * written: a member removed while broadcasts of earlier messages are still
 * queued must get them (they are in their window), so the removal waits in
 * the lane behind them (lane_member_change) and the user leaves the room
 * when the lane reaches it. A join is applied at once (queued walks end
 * before the new connection) unless a change of that room is still queued:
 * then it waits too, so that a removal and a re-add apply in order (the
 * re-added user gets what is written after the join is applied, and a gap
 * in the seqs makes their device pull the rest).
 * Main thread only. */
#include "device.h"

#include <assert.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

typedef struct room {
    char conv[MQC_ID_BUF];
    conn **v; /* connections; NULL: a hole (see above) */
    size_t n, cap, holes;
    unsigned jobs;    /* queued broadcasts that walk this room */
    unsigned changes; /* of them, queued membership changes (lane_member_change) */
    int open;         /* 0: the conversation is no longer large; freed when jobs == 0 */
    UT_hash_handle hh;
} room;

static room *room_find(dev *d, const char *conv)
{
    room *r;
    HASH_FIND_STR(d->rooms, conv, r);
    return r;
}

static room *room_get(dev *d, const char *conv)
{
    room *r = room_find(d, conv);
    if (r) {
        r->open = 1;
        return r;
    }
    if (!(r = calloc(1, sizeof(*r)))) return NULL;
    strcpy(r->conv, conv);
    r->open = 1;
    HASH_ADD_STR(d->rooms, conv, r);
    return r;
}

/* The connection's ref to room r, or NULL. */
static room_ref *ref_of(conn *c, const room *r)
{
    for (size_t i = 0; i < c->n_rooms; i++)
        if (c->rooms[i].r == r) return &c->rooms[i];
    return NULL;
}

static void room_add(room *r, conn *c)
{
    if (ref_of(c, r)) return;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        conn **v = realloc(r->v, cap * sizeof(*v));
        if (!v) return;
        r->v = v;
        r->cap = cap;
    }
    if (c->n_rooms == c->cap_rooms) {
        size_t cap = c->cap_rooms ? c->cap_rooms * 2 : 4;
        room_ref *refs = realloc(c->rooms, cap * sizeof(*refs));
        if (!refs) return;
        c->rooms = refs;
        c->cap_rooms = cap;
    }
    c->rooms[c->n_rooms++] = (room_ref){r, r->n};
    r->v[r->n++] = c;
}

/* Unlink every remaining connection and free the room. */
static void room_destroy(dev *d, room *r)
{
    assert(r->jobs == 0);
    for (size_t i = 0; i < r->n; i++) {
        conn *c = r->v[i];
        room_ref *ref = c ? ref_of(c, r) : NULL;
        if (ref) *ref = c->rooms[--c->n_rooms];
    }
    HASH_DEL(d->rooms, r);
    free(r->v);
    free(r);
}

/* Free a room nobody needs: no queued walk, and no one in it or closed. */
static void room_maybe_free(dev *d, room *r)
{
    if (r->jobs == 0 && (r->n == r->holes || !r->open)) room_destroy(d, r);
}

/* Close the holes (no walk is queued), keeping each ref's index true. */
static void room_compact(room *r)
{
    assert(r->jobs == 0);
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        conn *c = r->v[i];
        if (!c) continue;
        ref_of(c, r)->idx = k;
        r->v[k++] = c;
    }
    r->n = k;
    r->holes = 0;
}

static void room_del(dev *d, room *r, conn *c)
{
    room_ref *ref = ref_of(c, r);
    if (!ref) return;
    size_t idx = ref->idx;
    assert(idx < r->n && r->v[idx] == c);
    *ref = c->rooms[--c->n_rooms];
    if (r->jobs) {
        r->v[idx] = NULL; /* a queued walk may not have passed it yet */
        r->holes++;
    } else {
        conn *last = r->v[--r->n];
        if (last != c) {
            r->v[idx] = last;
            ref_of(last, r)->idx = idx;
        }
    }
    room_maybe_free(d, r);
}

void room_hold(struct room *r)
{
    r->jobs++;
}

void room_release(dev *d, struct room *r)
{
    assert(r->jobs > 0);
    if (--r->jobs) return;
    if (r->holes) room_compact(r);
    room_maybe_free(d, r);
}

int room_walk(struct room *r, size_t *limit, const char **conv)
{
    *limit = r->n;
    *conv = r->conv;
    return r->open && r->n > r->holes;
}

conn *room_at(struct room *r, size_t i)
{
    return i < r->n ? r->v[i] : NULL;
}

struct room *rooms_open(dev *d, const char *conv)
{
    room *r = room_find(d, conv);
    return r && r->open ? r : NULL;
}

/* Every connection of `user` joins (or leaves) conv's room. */
static void join_user(dev *d, const char *conv, const char *user)
{
    user_conns *u;
    HASH_FIND_STR(d->users, user, u);
    if (!u) return;
    room *r = room_get(d, conv);
    if (!r) return;
    conn *c;
    DL_FOREACH2(u->devices, c, dev_next)
    {
        room_add(r, c);
    }
}

static void leave_user(dev *d, const char *conv, const char *user)
{
    user_conns *u;
    HASH_FIND_STR(d->users, user, u);
    room *r = room_find(d, conv);
    if (!u || !r) return;
    conn *c;
    DL_FOREACH2(u->devices, c, dev_next)
    {
        room_del(d, r, c); /* may free r once the last one leaves */
        if (!(r = room_find(d, conv))) return;
    }
}

void rooms_conn_added(dev *d, conn *c)
{
    char after[MQC_ID_BUF] = "";
    for (int pages = 0; pages < 100; pages++) {
        mqstore_conv_list l;
        mqstore_err e = mqstore_user_large_convs(d->store, c->user, after, 1000, &l);
        if (e) {
            mosquitto_log_printf(MOSQ_LOG_WARNING,
                                 "mqchat: %s gets no live messages of large groups: %s",
                                 c->client_id, mqstore_strerror(e));
            return;
        }
        for (size_t i = 0; i < l.n; i++) {
            room *r = room_get(d, l.conv[i]);
            if (r) room_add(r, c);
        }
        int more = l.more;
        if (l.n) strcpy(after, l.conv[l.n - 1]);
        mqstore_conv_list_free(&l);
        if (!more) return;
    }
}

void rooms_conn_gone(dev *d, conn *c)
{
    while (c->n_rooms)
        room_del(d, c->rooms[c->n_rooms - 1].r, c);
    free(c->rooms);
    c->rooms = NULL;
    c->cap_rooms = 0;
}

#define EVT(x) MQCHAT__V1__CONVERSATION_EVENT__TYPE__TYPE_##x

void rooms_after_write(dev *d, const chat_written *w)
{
    room *r = room_find(d, w->conv);
    if (!w->r.large) {
        /* Small (again): deliveries name their users; the room goes once
         * its queued broadcasts are done. */
        if (r) {
            r->open = 0;
            room_maybe_free(d, r);
        }
        return;
    }
    const Mqchat__V1__ConversationEvent *ev = w->msg.event;
    if (!ev) return;
    int fresh = ev->type == EVT(CREATED) ||
                ev->mode == MQCHAT__V1__CONVERSATION_MODE__CONVERSATION_MODE_LARGE;
    if (fresh) {
        /* Large from now on: every online member joins. */
        mqstore_member_list l;
        if (mqstore_members_list(d->store, w->conv, &l)) {
            mosquitto_log_printf(MOSQ_LOG_WARNING, "mqchat: no room for %s: members unreadable",
                                 w->conv);
            return;
        }
        for (size_t i = 0; i < l.n; i++)
            join_user(d, w->conv, l.items[i].user);
        mqstore_member_list_free(&l);
        return;
    }
    for (size_t i = 0; i < ev->n_user_ids; i++) {
        int join = ev->type == EVT(MEMBERS_ADDED);
        if (!join && ev->type != EVT(MEMBERS_REMOVED) && ev->type != EVT(MEMBER_LEFT)) continue;
        /* Behind the queued broadcasts (see the top of the file). */
        r = room_find(d, w->conv);
        if (r && r->jobs && (!join || r->changes) &&
            lane_member_change(d, r, ev->user_ids[i], join, w->r.ticket) == 0) {
            r->changes++;
            continue;
        }
        if (join)
            join_user(d, w->conv, ev->user_ids[i]);
        else
            leave_user(d, w->conv, ev->user_ids[i]);
    }
}

void room_change_apply(dev *d, struct room *r, const char *user, int join)
{
    assert(r->changes > 0 && r->jobs > 0); /* the change's job holds r */
    r->changes--;
    if (join) {
        if (r->open) join_user(d, r->conv, user);
    } else {
        leave_user(d, r->conv, user);
    }
}

struct room *rooms_routed(dev *d, const char *conv)
{
    room *r = room_find(d, conv);
    return r && (r->open || r->jobs) ? r : NULL;
}

int rooms_route(dev *d, const char *conv)
{
    return rooms_routed(d, conv) != NULL;
}

void rooms_free_all(dev *d)
{
    room *r, *t;
    HASH_ITER(hh, d->rooms, r, t)
    {
        r->jobs = 0; /* the lane is gone */
        room_destroy(d, r);
    }
}
