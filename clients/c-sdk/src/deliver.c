/* deliver.c — the delivery rules: the inbox cursor, gaps and sync,
 * large-conversation positions and pulls, duplicates, and the ordered
 * progress FIFO with its commits.
 *
 * The engine never writes durable progress directly: every step that
 * moves the inbox cursor, a conversation's handed seq or its
 * large-conversation position becomes a `progress` item in one FIFO. An
 * item whose message still sits with the app is not done; the others are.
 * flush() commits the done prefix of the FIFO in one SQLite transaction
 * (it survives a kill -9; not yet a power cut). At most MQCHAT_ACK_DELAY_MS
 * later send_acks() syncs the file to disk once for everything committed
 * meanwhile and only then sends CursorAck / PositionAck. So the cursor on
 * disk never passes a message the app has not finished with (callback
 * returned, or event freed in poll mode), and the server never trims what
 * the device has not stored durably.
 *
 * In memory the engine runs ahead of the disk: cursor_mem and each conv's
 * handed_mem say what was handed (or queued for the app), and they decide
 * duplicates, gaps and where a sync starts. After a restart they start
 * again from the committed values. A live inbox message is applied when it
 * is the next one (inbox_seq == cursor_mem + 1), dropped when at or below
 * cursor_mem, and a gap starts a sync. A large conversation's live message
 * is handed when it is the next seq, else a pull from its acked position
 * fills the gap; inbox messages of a conversation being pulled wait
 * (deferred) so each conversation is handed in seq order.
 *
 * Invariants (asserts): apply_inbox() only takes inbox_seq > cursor_mem;
 * pull_pop() only runs with a job queued. */
#include "client_int.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

conv_state *conv_get(mqchat_client *c, const char *conv)
{
    for (size_t i = 0; i < c->n_convs; i++)
        if (strcmp(c->convs[i].conv, conv) == 0) return &c->convs[i];
    if (c->n_convs == c->cap_convs) {
        size_t n = c->cap_convs ? 2 * c->cap_convs : 16;
        conv_state *nc = realloc(c->convs, n * sizeof(*nc));
        if (!nc) return NULL;
        c->convs = nc;
        c->cap_convs = n;
    }
    conv_state *cs = &c->convs[c->n_convs];
    memset(cs, 0, sizeof(*cs));
    uint64_t handed = 0, position = 0;
    if (mqc_state_conv(c->st, conv, &handed, &position) != 0) return NULL;
    cs->conv = strdup(conv);
    if (!cs->conv) return NULL;
    cs->handed_mem = handed > position ? handed : position;
    cs->position_acked = position;
    c->n_convs++;
    return cs;
}

progress *progress_add(mqchat_client *c, int done, int has_cursor, uint64_t cursor,
                       const char *conv, uint64_t handed, uint64_t position)
{
    progress *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->done = done;
    p->has_cursor = has_cursor;
    p->cursor = cursor;
    p->conv = conv ? strdup(conv) : NULL;
    p->handed = handed;
    p->position = position;
    if (c->pt)
        c->pt->next = p;
    else
        c->ph = p;
    c->pt = p;
    return p;
}

/* Writes the done prefix of the FIFO (inside the caller's transaction);
 * *cursor and *moved say where the cursor went. */
static int flush_writes(mqchat_client *c, uint64_t *cursor, int *moved)
{
    int rc = 0;
    *cursor = c->cursor_committed;
    *moved = 0;
    for (progress *p = c->ph; p && p->done && rc == 0; p = p->next) {
        if (p->has_cursor) {
            *cursor = p->cursor;
            *moved = 1;
            rc = mqc_state_set_cursor(c->st, *cursor);
        }
        if (rc == 0 && p->conv && p->handed) rc = mqc_state_set_handed(c->st, p->conv, p->handed);
        if (rc == 0 && p->conv && p->position)
            rc = mqc_state_set_position(c->st, p->conv, p->position);
    }
    return rc;
}

/* The done prefix is committed: drop its items; the server hears of it in
 * send_acks(), once it is durable. */
static void flush_committed(mqchat_client *c, uint64_t cursor, int moved)
{
    while (c->ph && c->ph->done) {
        progress *p = c->ph;
        c->ph = p->next;
        if (!c->ph) c->pt = NULL;
        if (p->conv && p->position) {
            conv_state *cs = conv_get(c, p->conv);
            if (cs && p->position > cs->position_acked) cs->position_acked = p->position;
        }
        free(p->conv);
        free(p);
    }
    if (moved) c->cursor_committed = cursor;
    assert(c->cursor_durable <= c->cursor_committed);
    schedule_acks(c);
}

/* 1 if a large conversation's committed position is ahead of what the
 * server was told. */
static int positions_due(const mqchat_client *c)
{
    for (size_t i = 0; i < c->n_convs; i++)
        if (c->convs[i].position_acked > c->convs[i].position_sent) return 1;
    return 0;
}

/* Asks the timer thread for send_acks() in MQCHAT_ACK_DELAY_MS, if there
 * is something to tell the server. */
void schedule_acks(mqchat_client *c)
{
    if (!c->connected || c->ack_at) return;
    if (c->cursor_committed <= c->cursor_acked && !positions_due(c)) return;
    c->ack_at = now_ms() + MQCHAT_ACK_DELAY_MS;
    pthread_cond_signal(&c->cond);
}

/* Makes the committed progress durable (one fsync for everything since
 * the last), then sends the CursorAck and PositionAcks that cover it.
 * Invariant: the server is never told a cursor or position the device
 * could lose in a power cut, so it never trims what the device may need to
 * sync again. Runs on the timer thread. */
void send_acks(mqchat_client *c)
{
    c->ack_at = 0;
    if (!c->connected) return;
    int positions = positions_due(c);
    if (c->cursor_committed > c->cursor_durable || positions) {
        if (mqc_state_sync(c->st) != 0) {
            emit_error(c, "state: sync: %s", mqc_state_errmsg(c->st));
            c->ack_at = now_ms() + 1000; /* try again */
            return;
        }
        c->cursor_durable = c->cursor_committed;
    }
    for (size_t i = 0; positions && i < c->n_convs; i++) {
        conv_state *cs = &c->convs[i];
        if (cs->position_acked <= cs->position_sent) continue;
        Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
        Mqchat__V1__PositionAck pa = MQCHAT__V1__POSITION_ACK__INIT;
        pa.conversation_id = cs->conv;
        pa.seq = cs->position_acked;
        r.body_case = MQCHAT__V1__REQUEST__BODY_POSITION_ACK;
        r.position_ack = &pa;
        if (request(c, 'i', &r, NULL) == MQCHAT_OK) cs->position_sent = cs->position_acked;
    }
    if (c->cursor_durable > c->cursor_acked) {
        assert(c->cursor_durable <= c->cursor_committed);
        Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
        Mqchat__V1__CursorAck ca = MQCHAT__V1__CURSOR_ACK__INIT;
        ca.inbox_seq = c->cursor_durable;
        r.body_case = MQCHAT__V1__REQUEST__BODY_CURSOR_ACK;
        r.cursor_ack = &ca;
        if (request(c, 'i', &r, NULL) == MQCHAT_OK) c->cursor_acked = c->cursor_durable;
    }
}

/* The app's persist hook refused a message (or its transaction did not
 * commit): forget everything not committed and start delivery again from
 * the committed state, so that message (and all after it) is offered
 * again, in order, by a sync from the committed cursor (and pulls from
 * the server's positions). Runs from flush(), at the end of a unit of
 * work, never in the middle of a sync or pull page. With persist set no
 * event points at a progress item (they are done before the event is
 * made), so the FIFO can go. */
static void rewind_delivery(mqchat_client *c)
{
    assert(c->persist);
    c->persist_failed = 0;
    for (size_t i = 0; i < c->n_convs; i++) {
        while (c->convs[i].dh) {
            deferred *d = c->convs[i].dh;
            c->convs[i].dh = d->next;
            free(d->buf);
            free(d);
        }
        c->convs[i].dt = NULL;
    }
    while (c->ph) {
        progress *p = c->ph;
        c->ph = p->next;
        free(p->conv);
        free(p);
    }
    c->pt = NULL;
    while (c->n_pulls)
        pull_pop(c);
    c->inbox_syncing = 0;
    c->catching_up = 0;
    c->sync_rid[0] = 0; /* answers to the old sync / pull are dropped */
    c->pull_rid[0] = 0;
    c->cursor_mem = c->cursor_committed;
    c->max_seen_live = 0;
    for (size_t i = 0; i < c->n_convs; i++) {
        uint64_t h = 0, p = 0;
        if (mqc_state_conv(c->st, c->convs[i].conv, &h, &p) != 0) continue;
        c->convs[i].handed_mem = h > p ? h : p;
        c->convs[i].position_acked = p;
    }
    if (c->connected) { /* else the next connect syncs */
        c->sync_retry_at = now_ms() + 1000;
        pthread_cond_signal(&c->cond);
    }
}

void flush(mqchat_client *c)
{
    if (c->persist_failed) rewind_delivery(c);
    if (!c->ph || !c->ph->done) return;
    if (mqc_state_begin(c->st) != 0) {
        emit_error(c, "state: begin: %s", mqc_state_errmsg(c->st));
        return;
    }
    uint64_t cursor;
    int moved;
    if (flush_writes(c, &cursor, &moved) != 0 || mqc_state_commit(c->st) != 0) {
        emit_error(c, "state: commit: %s", mqc_state_errmsg(c->st));
        mqc_state_rollback(c->st);
        return;
    }
    flush_committed(c, cursor, moved);
}

/* With a persist hook: one transaction records the handed seq of ev's
 * message, runs the hook (the app's own writes), marks p done and commits
 * the done prefix of the FIFO with it. Returns 0 when all of it committed;
 * else nothing of it did (p stays not done). */
static int persist_message(mqchat_client *c, const mqchat_event *ev, progress *p)
{
    assert(c->persist && !p->done);
    if (mqc_state_begin(c->st) != 0) return -1;
    uint64_t cursor;
    int moved;
    int rc = mqc_state_set_handed(c->st, ev->message.conv, ev->message.seq);
    if (rc == 0) rc = c->persist(c->data, mqc_state_db(c->st), ev) != 0 ? 1 : 0;
    if (rc == 0) {
        p->done = 1;
        rc = flush_writes(c, &cursor, &moved);
    }
    if (rc == 0) rc = mqc_state_commit(c->st);
    if (rc != 0) {
        mqc_state_rollback(c->st);
        p->done = 0;
        return -1;
    }
    flush_committed(c, cursor, moved);
    return 0;
}

static void send_sync(mqchat_client *c)
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__SyncRequest s = MQCHAT__V1__SYNC_REQUEST__INIT;
    s.after_inbox_seq = c->cursor_mem;
    s.limit = 100;
    s.positions = c->sync_positions;
    s.positions_after = c->positions_after;
    r.body_case = MQCHAT__V1__REQUEST__BODY_SYNC;
    r.sync = &s;
    if (request(c, 's', &r, c->sync_rid) != MQCHAT_OK) {
        c->inbox_syncing = 0;
        c->sync_rid[0] = 0;
    }
}

void start_sync(mqchat_client *c)
{
    if (!c->connected || c->inbox_syncing) return;
    c->inbox_syncing = 1;
    c->catching_up = 1;
    c->sync_positions = 1;
    c->positions_after[0] = 0;
    send_sync(c);
}

void next_pull(mqchat_client *c)
{
    while (c->n_pulls > 0) {
        pull_job *j = &c->pulls[0];
        Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
        Mqchat__V1__ConversationPull p = MQCHAT__V1__CONVERSATION_PULL__INIT;
        p.conversation_id = j->conv;
        p.after_seq = j->after;
        r.body_case = MQCHAT__V1__REQUEST__BODY_PULL;
        r.pull = &p;
        if (request(c, 'p', &r, c->pull_rid) == MQCHAT_OK) return;
        c->pull_rid[0] = 0;
        return; /* offline: the next connect syncs again */
    }
    c->pull_rid[0] = 0;
    if (!c->inbox_syncing) /* no pull left: nothing to wait for */
        for (size_t i = 0; i < c->n_convs; i++)
            if (c->convs[i].dh) hand_deferred_all(c, c->convs[i].conv, 0);
    if (c->catching_up && !c->inbox_syncing) {
        c->catching_up = 0;
        emit_conn(c, MQCHAT_CONN_UP_TO_DATE, "");
    }
}

void pull_pop(mqchat_client *c)
{
    assert(c->n_pulls > 0);
    conv_state *cs = conv_get(c, c->pulls[0].conv);
    if (cs) cs->pulling = 0;
    free(c->pulls[0].conv);
    memmove(c->pulls, c->pulls + 1, (c->n_pulls - 1) * sizeof(*c->pulls));
    c->n_pulls--;
}

static void pull_add(mqchat_client *c, const char *conv, uint64_t after)
{
    conv_state *cs = conv_get(c, conv);
    if (!cs || cs->pulling) return;
    if (c->n_pulls == c->cap_pulls) {
        size_t n = c->cap_pulls ? 2 * c->cap_pulls : 8;
        pull_job *np = realloc(c->pulls, n * sizeof(*np));
        if (!np) return;
        c->pulls = np;
        c->cap_pulls = n;
    }
    c->pulls[c->n_pulls].conv = strdup(conv);
    if (!c->pulls[c->n_pulls].conv) return;
    c->pulls[c->n_pulls].after = after;
    c->n_pulls++;
    cs->pulling = 1;
    cs->pull_after = after;
    /* A pull outside a catch-up (a live gap) starts at once. */
    if (!c->inbox_syncing && !c->pull_rid[0]) {
        c->catching_up = 1;
        next_pull(c);
    }
}

static int own_message(mqchat_client *c, const Mqchat__V1__Message *m)
{
    return strcmp(m->sender_user_id, c->user) == 0 && strcmp(m->sender_device_id, c->device) == 0;
}

/* Hands m to the app unless its seq was handed already; the progress item
 * carries the cursor (inbox arrivals) and/or position (large conversations).
 * ph: the item reserved when m was deferred (else a new one is added). */
static void hand_in(mqchat_client *c, const Mqchat__V1__Message *m, int has_cursor,
                    uint64_t position, progress *ph)
{
    if (c->persist_failed) return; /* everything comes again after the rewind */
    conv_state *cs = conv_get(c, m->conversation_id);
    if (!cs) {
        emit_error(c, "out of memory");
        return;
    }
    int known_kind = m->kind == MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER ||
                     m->kind == MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_EVENT;
    if (own_message(c, m)) {
        complete_own(c, m->client_msg_id, m->conversation_id, m->seq, m->inbox_seq,
                     m->server_time_ms);
    } else if (m->seq > cs->handed_mem && !known_kind) {
        emit_error(c, "message %s/%" PRIu64 " has unknown kind %d: skipped", m->conversation_id,
                   m->seq, (int)m->kind);
    } else if (m->seq > cs->handed_mem) {
        ievent *ie = ev_new(c, MQCHAT_EV_MESSAGE);
        if (!ie || copy_message(&ie->ev.message, m) != 0) {
            if (ie) {
                event_clear(&ie->ev);
                free(ie);
            }
            emit_error(c, "out of memory: message %s/%" PRIu64 " not handed", m->conversation_id,
                       m->seq);
            /* nothing recorded (a reserved item stays not done: the cursor
             * stops before it until a restart, which brings it again) */
            return;
        }
        if (ph) {
            ph->handed = m->seq;
            ph->position = position;
            ie->p = ph;
        } else {
            ie->p =
                progress_add(c, 0, has_cursor, m->inbox_seq, m->conversation_id, m->seq, position);
        }
        if (!ie->p) {
            event_clear(&ie->ev);
            free(ie);
            return;
        }
        if (c->persist) {
            if (persist_message(c, &ie->ev, ie->p) != 0) {
                emit_error(c,
                           "persist of message %s/%" PRIu64 " failed (%s): offered again after "
                           "a sync from the committed state",
                           m->conversation_id, m->seq, mqc_state_errmsg(c->st));
                event_clear(&ie->ev);
                free(ie);
                c->persist_failed = 1; /* flush() rewinds */
                return;
            }
            ie->p = NULL; /* committed: the event is the app's alone */
        }
        cs = conv_get(c, m->conversation_id); /* persist_message may have moved c->convs */
        if (cs) cs->handed_mem = m->seq;
        emit(c, ie);
        return;
    }
    if (m->seq > cs->handed_mem) cs->handed_mem = m->seq;
    if (ph) {
        ph->handed = m->seq;
        ph->position = position;
        ph->done = 1;
    } else {
        progress_add(c, 1, has_cursor, m->inbox_seq, m->conversation_id, m->seq, position);
    }
}

static void hand(mqchat_client *c, const Mqchat__V1__Message *m, int has_cursor, uint64_t position)
{
    hand_in(c, m, has_cursor, position, NULL);
}

/* Hands the first deferred message of cs. */
static void hand_deferred(mqchat_client *c, conv_state *cs)
{
    deferred *d = cs->dh;
    cs->dh = d->next;
    if (!cs->dh) cs->dt = NULL;
    Mqchat__V1__Message *m = mqchat__v1__message__unpack(NULL, d->len, d->buf);
    if (m) {
        hand_in(c, m, 1, 0, d->p);
        mqchat__v1__message__free_unpacked(m, NULL);
    } else {
        d->p->done = 1; /* cannot happen: the SDK packed it */
    }
    free(d->buf);
    free(d);
}

void hand_deferred_all(mqchat_client *c, const char *conv, uint64_t below)
{
    for (;;) {
        conv_state *cs = conv_get(c, conv);
        if (!cs || !cs->dh || (below && cs->dh->seq >= below)) return;
        hand_deferred(c, cs); /* may move c->convs: look it up again */
    }
}

static int defer_inbox(mqchat_client *c, conv_state *cs, const Mqchat__V1__Message *m)
{
    deferred *d = calloc(1, sizeof(*d));
    if (!d) return -1;
    d->len = mqchat__v1__message__get_packed_size(m);
    d->buf = malloc(d->len ? d->len : 1);
    d->p = progress_add(c, 0, 1, m->inbox_seq, m->conversation_id, 0, 0);
    if (!d->buf || !d->p) {
        if (d->p) { /* out of memory: the reserved item becomes a no-op */
            d->p->has_cursor = 0;
            d->p->done = 1;
        }
        free(d->buf);
        free(d);
        return -1;
    }
    mqchat__v1__message__pack(m, d->buf);
    d->seq = m->seq;
    if (cs->dt)
        cs->dt->next = d;
    else
        cs->dh = d;
    cs->dt = d;
    return 0;
}

/* An inbox arrival with inbox_seq > cursor_mem (from a sync page, or live
 * and exactly the next one). */
static void apply_inbox(mqchat_client *c, const Mqchat__V1__Message *m)
{
    assert(m->inbox_seq > c->cursor_mem);
    conv_state *cs = conv_get(c, m->conversation_id);
    if (cs && (cs->dh || (cs->pulling && m->seq > cs->pull_after))) {
        if (defer_inbox(c, cs, m) != 0) {
            emit_error(c, "out of memory: inbox %" PRIu64 " not applied", m->inbox_seq);
            return; /* cursor_mem stays: the next sync brings it again */
        }
        c->cursor_mem = m->inbox_seq;
        return;
    }
    c->cursor_mem = m->inbox_seq;
    hand(c, m, 1, 0);
}

void on_live_message(mqchat_client *c, const Mqchat__V1__Message *m)
{
    if (m->inbox_seq > 0) {
        if (c->drop_nth && ++c->live_count == c->drop_nth) return; /* test hook */
        if (m->inbox_seq <= c->cursor_mem) return;                 /* duplicate */
        if (m->inbox_seq == c->cursor_mem + 1) {
            apply_inbox(c, m);
            return;
        }
        if (m->inbox_seq > c->max_seen_live) c->max_seen_live = m->inbox_seq;
        start_sync(c); /* a gap: the sync fills it (and brings this one) */
        return;
    }
    /* A large conversation, live: ordered by seq. */
    conv_state *cs = conv_get(c, m->conversation_id);
    if (!cs) return;
    if (m->seq <= cs->handed_mem) return;
    if (m->seq == cs->handed_mem + 1 && !cs->pulling && !cs->dh) {
        hand(c, m, 0, m->seq);
        return;
    }
    pull_add(c, m->conversation_id, cs->position_acked);
}

/* The server's store was restored from a backup (docs/PROTOCOL.md, "A
 * restored server"): its restore floor changed, or (a copy restored
 * without the floor) its inbox head is below the cursor. Its conversations
 * number new messages from their restored heads, which may be below the
 * seqs this device was handed: in the conversations that come by the inbox
 * (no large position), inbox_seq alone decides what is new, so their
 * handed seqs go back to 0: on disk at once (a conversation loaded later
 * reads 0), in memory, and in the progress items still queued (flush
 * would write their old seqs back). Below the head, the cursor goes down
 * to it the same way, everywhere, so no ack or commit passes the head. */
static void restored_server(mqchat_client *c, const Mqchat__V1__SyncResponse *s)
{
    int floor_changed = s->restore_floor != c->restore_floor;
    int below = s->inbox_head < c->cursor_mem;
    if (!floor_changed && !below) return;
    uint64_t head = s->inbox_head;
    if (mqc_state_begin(c->st) != 0 || mqc_state_reset_inbox_handed(c->st) != 0 ||
        (floor_changed && mqc_state_set_restore_floor(c->st, s->restore_floor) != 0) ||
        (below && head < c->cursor_committed && mqc_state_set_cursor(c->st, head) != 0) ||
        mqc_state_commit(c->st) != 0) {
        mqc_state_rollback(c->st);
        emit_error(c, "state: restored server: %s", mqc_state_errmsg(c->st));
        return;
    }
    if (floor_changed) c->restore_floor = s->restore_floor;
    for (size_t i = 0; i < c->n_convs; i++) /* the rule on disk: no position */
        if (!c->convs[i].position_acked) c->convs[i].handed_mem = 0;
    for (progress *p = c->ph; p; p = p->next) {
        if (p->conv && !p->position) {
            conv_state *cs = conv_get(c, p->conv);
            if (cs && !cs->position_acked) p->handed = 0;
        }
        if (below && p->has_cursor && p->cursor > head) p->has_cursor = 0;
    }
    if (below) {
        c->cursor_mem = head;
        if (c->cursor_committed > head) c->cursor_committed = head;
        if (c->cursor_durable > head) c->cursor_durable = head;
        c->cursor_acked = head;
    }
}

void on_sync(mqchat_client *c, const Mqchat__V1__SyncResponse *s)
{
    restored_server(c, s);
    /* Positions first: inbox messages of a conversation about to be pulled
     * wait for the pull (apply_inbox), so each conversation stays in seq order. */
    for (size_t i = 0; i < s->n_positions; i++) {
        const Mqchat__V1__ConversationPosition *p = s->positions[i];
        if (p->end_seq > p->position) pull_add(c, p->conversation_id, p->position);
    }
    for (size_t i = 0; i < s->n_messages; i++) {
        const Mqchat__V1__Message *m = s->messages[i];
        if (m->inbox_seq <= c->cursor_mem) continue;
        apply_inbox(c, m);
    }
    if (s->more || s->positions_more) {
        c->sync_positions = s->positions_more;
        if (s->positions_more && s->n_positions)
            snprintf(c->positions_after, sizeof(c->positions_after), "%s",
                     s->positions[s->n_positions - 1]->conversation_id);
        if (!s->more && !s->n_messages && !s->n_positions) { /* no progress: stop */
            c->inbox_syncing = 0;
        } else {
            send_sync(c);
            return;
        }
    }
    c->inbox_syncing = 0;
    c->sync_rid[0] = 0;
    if (c->max_seen_live > c->cursor_mem) { /* a live one arrived past this sync */
        start_sync(c);
        return;
    }
    if (!c->pull_rid[0]) next_pull(c);
}

void on_pull(mqchat_client *c, const Mqchat__V1__ConversationPullResponse *p)
{
    c->pull_rid[0] = 0;
    if (c->n_pulls == 0) return;
    pull_job *j = &c->pulls[0];
    uint64_t last = j->after;
    for (size_t i = 0; i < p->n_messages; i++) {
        const Mqchat__V1__Message *m = p->messages[i];
        if (strcmp(m->conversation_id, j->conv) != 0 || m->seq <= last) {
            emit_error(c, "pull of %s: message %s/%" PRIu64 " out of order", j->conv,
                       m->conversation_id, m->seq);
            continue;
        }
        last = m->seq;
        hand_deferred_all(c, j->conv, m->seq);
        j = &c->pulls[0];
        hand(c, m, 0, 0);
    }
    if (p->through_seq > j->after) {
        conv_state *cs = conv_get(c, j->conv);
        if (cs && p->through_seq > cs->handed_mem) cs->handed_mem = p->through_seq;
        progress_add(c, 1, 0, 0, j->conv, p->through_seq, p->through_seq);
    }
    if (p->more && p->through_seq > j->after) {
        j->after = p->through_seq;
    } else {
        char *conv = strdup(j->conv);
        pull_pop(c);
        if (conv) hand_deferred_all(c, conv, 0);
        free(conv);
    }
    next_pull(c);
}
