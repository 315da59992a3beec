/* requests.c — the thin requests (history, conversation lists, groups,
 * presence, typing, receipts, push tokens) and the responses to all
 * requests (members, roles, group settings, read state, presence settings
 * too).
 *
 * Each request goes out with a fresh id whose first letter says who asked:
 * 'a' the app, 's' a sync, 'p' a pull, 'i' the SDK's own acks. on_response
 * routes by that id: the current sync and pull go to deliver.c (a
 * RATE_LIMITED / UNAVAILABLE answer schedules a retry on the timer), ack
 * refusals are retried with the next commit, answers to an older session's
 * sync or pull are dropped, and the app's answers become RESPONSE events. */
#include "client_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void on_response(mqchat_client *c, const Mqchat__V1__Response *r)
{
    const char *rid = r->request_id;
    int retry_ms = -1; /* >= 0: a refusal to retry after that long */
    if (r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR &&
        (r->error->code == MQCHAT__V1__ERROR_CODE__ERROR_CODE_RATE_LIMITED ||
         r->error->code == MQCHAT__V1__ERROR_CODE__ERROR_CODE_UNAVAILABLE))
        retry_ms = r->error->retry_after_ms ? (int)r->error->retry_after_ms : 500;
    if (c->sync_rid[0] && strcmp(rid, c->sync_rid) == 0) {
        if (r->body_case == MQCHAT__V1__RESPONSE__BODY_SYNC) {
            on_sync(c, r->sync);
        } else if (retry_ms >= 0) {
            c->inbox_syncing = 0;
            c->sync_rid[0] = 0;
            c->sync_retry_at = now_ms() + retry_ms;
            pthread_cond_signal(&c->cond);
        } else {
            c->inbox_syncing = 0;
            c->sync_rid[0] = 0;
            emit_error(c, "sync refused: %s",
                       r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR ? r->error->message
                                                                        : "unexpected answer");
        }
        return;
    }
    if (c->pull_rid[0] && strcmp(rid, c->pull_rid) == 0) {
        if (r->body_case == MQCHAT__V1__RESPONSE__BODY_PULL) {
            on_pull(c, r->pull);
        } else if (retry_ms >= 0) {
            c->pull_rid[0] = 0; /* the job stays first in line */
            c->pull_retry_at = now_ms() + retry_ms;
            pthread_cond_signal(&c->cond);
        } else {
            c->pull_rid[0] = 0;
            emit_error(c, "pull of %s refused: %s", c->n_pulls ? c->pulls[0].conv : "?",
                       r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR ? r->error->message
                                                                        : "unexpected answer");
            if (c->n_pulls) {
                char *conv = strdup(c->pulls[0].conv);
                pull_pop(c);
                if (conv) hand_deferred_all(c, conv, 0);
                free(conv);
            }
            next_pull(c);
        }
        return;
    }
    if (rid[0] == 'i') {     /* CursorAck, PositionAck */
        if (retry_ms >= 0) { /* acked again (all of it: we do not know which it was) */
            c->cursor_acked = 0;
            for (size_t i = 0; i < c->n_convs; i++)
                c->convs[i].position_sent = 0;
            int64_t at = now_ms() + (retry_ms > 0 ? retry_ms : 1000);
            if (at > c->ack_at) c->ack_at = at;
            pthread_cond_signal(&c->cond);
        } else if (r->body_case == MQCHAT__V1__RESPONSE__BODY_ERROR)
            emit_error(c, "ack %s refused: %s", rid, r->error->message);
        return;
    }
    if (rid[0] == 's' || rid[0] == 'p') return; /* answer to a sync/pull of an older session */
    ievent *ie = ev_new(c, MQCHAT_EV_RESPONSE);
    if (!ie) return;
    snprintf(ie->ev.response.request_id, MQCHAT_ID_BUF, "%s", rid);
    int ok = 1;
    switch (r->body_case) {
    case MQCHAT__V1__RESPONSE__BODY_ERROR:
        ie->ev.response.code = (int)r->error->code;
        ie->ev.response.error_message = xstrdup(r->error->message);
        ok = 0;
        break;
    case MQCHAT__V1__RESPONSE__BODY_GROUP:
        ie->ev.response.group_conv = xstrdup(r->group->conversation_id);
        ie->ev.response.group_seq = r->group->seq;
        break;
    case MQCHAT__V1__RESPONSE__BODY_HISTORY: {
        const Mqchat__V1__HistoryResponse *h = r->history;
        ie->ev.response.more = h->more;
        if (h->n_messages) {
            ie->ev.response.messages = calloc(h->n_messages, sizeof(mqchat_message));
            if (ie->ev.response.messages) {
                for (size_t i = 0; i < h->n_messages; i++) {
                    ie->ev.response.n_messages++;
                    copy_message(&ie->ev.response.messages[i], h->messages[i]);
                }
            }
        }
        break;
    }
    case MQCHAT__V1__RESPONSE__BODY_CONVERSATIONS: {
        const Mqchat__V1__ListConversationsResponse *l = r->conversations;
        ie->ev.response.more = l->more;
        if (l->n_conversations) {
            ie->ev.response.conversations = calloc(l->n_conversations, sizeof(mqchat_conversation));
            if (ie->ev.response.conversations) {
                for (size_t i = 0; i < l->n_conversations; i++) {
                    const Mqchat__V1__ConversationSummary *s = l->conversations[i];
                    mqchat_conversation *d = &ie->ev.response.conversations[i];
                    d->conv = xstrdup(s->conversation_id);
                    d->head_seq = s->head_seq;
                    d->read_seq = s->read_seq;
                    d->unread = s->unread;
                    d->last_activity_ms = s->last_activity_ms;
                    d->mode = (int)s->mode;
                    d->member_count = s->member_count;
                    d->is_group = strncmp(s->conversation_id, "g:", 2) == 0;
                    d->title = xstrdup(s->title);
                    d->role = (int)s->role;
                    d->posting = (int)s->posting;
                    if (s->last_message) {
                        d->last_message = calloc(1, sizeof(*d->last_message));
                        if (d->last_message &&
                            copy_message(d->last_message, s->last_message) != 0) {
                            event_clear_message(d->last_message);
                            free(d->last_message);
                            d->last_message = NULL;
                        }
                    }
                    ie->ev.response.n_conversations++;
                }
            }
        }
        break;
    }
    case MQCHAT__V1__RESPONSE__BODY_PRESENCE: {
        const Mqchat__V1__PresenceWatchResponse *p = r->presence;
        if (p->n_users) {
            ie->ev.response.presence = calloc(p->n_users, sizeof(mqchat_presence));
            if (ie->ev.response.presence) {
                for (size_t i = 0; i < p->n_users; i++) {
                    ie->ev.response.presence[i].user = xstrdup(p->users[i]->user_id);
                    ie->ev.response.presence[i].state = (int)p->users[i]->state;
                    ie->ev.response.presence[i].last_seen_ms = p->users[i]->last_seen_ms;
                    ie->ev.response.n_presence++;
                }
            }
        }
        break;
    }
    case MQCHAT__V1__RESPONSE__BODY_MEMBERS: {
        const Mqchat__V1__ListMembersResponse *l = r->members;
        ie->ev.response.more = l->more;
        if (l->n_members) {
            ie->ev.response.members = calloc(l->n_members, sizeof(mqchat_member));
            if (ie->ev.response.members) {
                for (size_t i = 0; i < l->n_members; i++) {
                    mqchat_member *d = &ie->ev.response.members[i];
                    d->user = xstrdup(l->members[i]->user_id);
                    d->role = (int)l->members[i]->role;
                    d->joined_seq = l->members[i]->joined_seq;
                    ie->ev.response.n_members++;
                }
            }
        }
        break;
    }
    case MQCHAT__V1__RESPONSE__BODY_READ_STATE: {
        const Mqchat__V1__ReadStateResponse *s = r->read_state;
        mqchat_read_result *d = calloc(1, sizeof(*d));
        ie->ev.response.read_state = d;
        ie->ev.response.more = s->more;
        if (d) {
            d->conv = xstrdup(s->conversation_id);
            d->seq = s->seq;
            d->members = s->members;
            d->delivered = s->delivered;
            d->read = s->read;
            if (s->n_readers) d->readers = calloc(s->n_readers, sizeof(char *));
            for (size_t i = 0; d->readers && i < s->n_readers; i++) {
                d->readers[i] = xstrdup(s->readers[i]);
                d->n_readers++;
            }
        }
        break;
    }
    case MQCHAT__V1__RESPONSE__BODY__NOT_SET:
        event_clear(&ie->ev);
        free(ie);
        emit_error(c, "response %s has no body (unknown to this SDK)", rid);
        return;
    default:
        break; /* ok, sync/pull of an app: success, untyped */
    }
    ie->ev.response.ok = ok;
    emit(c, ie);
}

static int app_request(mqchat_client *c, Mqchat__V1__Request *r, char rid[MQCHAT_ID_BUF])
{
    if (!c) return MQCHAT_ERR;
    lock(c);
    int rc = request(c, 'a', r, rid);
    unlock(c);
    return rc;
}

/* Publishes a Receipt (c->mu held). */
static int publish_receipt(mqchat_client *c, const char *conv, uint64_t seq, int type)
{
    Mqchat__V1__Receipt r = MQCHAT__V1__RECEIPT__INIT;
    r.conversation_id = (char *)conv;
    r.seq = seq;
    r.type = type;
    return publish(c, c->t_receipt, &r.base, 1);
}

static int receipt(mqchat_client *c, const char *conv, uint64_t seq, int type)
{
    if (!c || !conv) return MQCHAT_ERR;
    lock(c);
    int rc = publish_receipt(c, conv, seq, type);
    unlock(c);
    return rc;
}

/* Offline, a read mark waits in the state file (the highest per
 * conversation) and goes out after the next connect (send_read_marks). */
int mqchat_mark_read(mqchat_client *c, const char *conv, uint64_t seq, char rid_out[MQCHAT_ID_BUF])
{
    if (rid_out) rid_out[0] = 0;
    if (!c || !conv || !*conv || strlen(conv) > 128) return MQCHAT_ERR;
    lock(c);
    int rc;
    if (c->connected) {
        rc = publish_receipt(c, conv, seq, MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ);
    } else if (mqc_state_begin(c->st) == 0 && mqc_state_read_mark_put(c->st, conv, seq) == 0 &&
               mqc_state_commit(c->st) == 0) {
        rc = MQCHAT_OK;
    } else {
        mqc_state_rollback(c->st);
        rc = MQCHAT_ERR_STATE;
    }
    unlock(c);
    return rc;
}

void send_read_marks(mqchat_client *c)
{
    mqc_read_mark *m;
    size_t n;
    if (mqc_state_begin(c->st) != 0) return;
    if (mqc_state_read_marks_take(c->st, &m, &n) != 0 || mqc_state_commit(c->st) != 0) {
        mqc_state_rollback(c->st);
        emit_error(c, "state: read marks: %s", mqc_state_errmsg(c->st));
        return;
    }
    for (size_t i = 0; i < n; i++)
        publish_receipt(c, m[i].conv, m[i].seq, MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ);
    mqc_read_marks_free(m, n);
}

int mqchat_mark_delivered(mqchat_client *c, const char *conv, uint64_t seq,
                          char rid_out[MQCHAT_ID_BUF])
{
    if (rid_out) rid_out[0] = 0;
    return receipt(c, conv, seq, MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_DELIVERED);
}

int mqchat_history(mqchat_client *c, const char *conv, uint64_t before_seq, unsigned limit,
                   char rid_out[MQCHAT_ID_BUF])
{
    if (!conv) return MQCHAT_ERR;
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__HistoryRequest h = MQCHAT__V1__HISTORY_REQUEST__INIT;
    h.conversation_id = (char *)conv;
    h.before_seq = before_seq;
    h.limit = limit;
    r.body_case = MQCHAT__V1__REQUEST__BODY_HISTORY;
    r.history = &h;
    return app_request(c, &r, rid_out);
}

int mqchat_list_conversations(mqchat_client *c, const char *after, unsigned limit,
                              char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__ListConversations l = MQCHAT__V1__LIST_CONVERSATIONS__INIT;
    l.after_conversation_id = (char *)(after ? after : "");
    l.limit = limit;
    r.body_case = MQCHAT__V1__REQUEST__BODY_LIST_CONVERSATIONS;
    r.list_conversations = &l;
    return app_request(c, &r, rid_out);
}

int mqchat_group_create(mqchat_client *c, const char *title, const char *const *members, size_t n,
                        char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupCreate g = MQCHAT__V1__GROUP_CREATE__INIT;
    g.title = (char *)(title ? title : "");
    g.member_ids = (char **)members;
    g.n_member_ids = n;
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
    r.group_create = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_group_add(mqchat_client *c, const char *conv, const char *const *users, size_t n,
                     char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupAddMembers g = MQCHAT__V1__GROUP_ADD_MEMBERS__INIT;
    g.conversation_id = (char *)(conv ? conv : "");
    g.user_ids = (char **)users;
    g.n_user_ids = n;
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_ADD;
    r.group_add = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_group_remove(mqchat_client *c, const char *conv, const char *const *users, size_t n,
                        char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupRemoveMembers g = MQCHAT__V1__GROUP_REMOVE_MEMBERS__INIT;
    g.conversation_id = (char *)(conv ? conv : "");
    g.user_ids = (char **)users;
    g.n_user_ids = n;
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE;
    r.group_remove = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_group_leave(mqchat_client *c, const char *conv, char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupLeave g = MQCHAT__V1__GROUP_LEAVE__INIT;
    g.conversation_id = (char *)(conv ? conv : "");
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_LEAVE;
    r.group_leave = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_typing(mqchat_client *c, const char *conv, int on)
{
    if (!c || !conv) return MQCHAT_ERR;
    Mqchat__V1__Typing t = MQCHAT__V1__TYPING__INIT;
    t.conversation_id = (char *)conv;
    t.typing = on != 0;
    lock(c);
    int rc = publish(c, c->t_typing, &t.base, 0);
    unlock(c);
    return rc;
}

int mqchat_presence_watch(mqchat_client *c, const char *const *users, size_t n,
                          char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__PresenceWatch w = MQCHAT__V1__PRESENCE_WATCH__INIT;
    w.user_ids = (char **)users;
    w.n_user_ids = n;
    r.body_case = MQCHAT__V1__REQUEST__BODY_PRESENCE_WATCH;
    r.presence_watch = &w;
    return app_request(c, &r, rid_out);
}

int mqchat_push_register(mqchat_client *c, const char *platform, const char *token, const char *app,
                         char rid_out[MQCHAT_ID_BUF])
{
    if (!platform || !token) return MQCHAT_ERR;
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__PushTokenRegister p = MQCHAT__V1__PUSH_TOKEN_REGISTER__INIT;
    if (strcmp(platform, "apns") == 0)
        p.platform = MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_APNS;
    else if (strcmp(platform, "apns-sandbox") == 0)
        p.platform = MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_APNS_SANDBOX;
    else if (strcmp(platform, "fcm") == 0)
        p.platform = MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_FCM;
    else
        return MQCHAT_ERR;
    p.token = (char *)token;
    p.app_id = (char *)(app ? app : "");
    r.body_case = MQCHAT__V1__REQUEST__BODY_PUSH_REGISTER;
    r.push_register = &p;
    return app_request(c, &r, rid_out);
}

int mqchat_push_unregister(mqchat_client *c, char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__PushTokenUnregister p = MQCHAT__V1__PUSH_TOKEN_UNREGISTER__INIT;
    r.body_case = MQCHAT__V1__REQUEST__BODY_PUSH_UNREGISTER;
    r.push_unregister = &p;
    return app_request(c, &r, rid_out);
}

int mqchat_list_members(mqchat_client *c, const char *conv, const char *after, unsigned limit,
                        char rid_out[MQCHAT_ID_BUF])
{
    if (!conv) return MQCHAT_ERR;
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__ListMembers l = MQCHAT__V1__LIST_MEMBERS__INIT;
    l.conversation_id = (char *)conv;
    l.after_user_id = (char *)(after ? after : "");
    l.limit = limit;
    r.body_case = MQCHAT__V1__REQUEST__BODY_LIST_MEMBERS;
    r.list_members = &l;
    return app_request(c, &r, rid_out);
}

int mqchat_group_set_role(mqchat_client *c, const char *conv, const char *const *users, size_t n,
                          int role, char rid_out[MQCHAT_ID_BUF])
{
    if (!conv) return MQCHAT_ERR;
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupSetRole g = MQCHAT__V1__GROUP_SET_ROLE__INIT;
    g.conversation_id = (char *)conv;
    g.user_ids = (char **)users;
    g.n_user_ids = n;
    g.role = (Mqchat__V1__Role)role;
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE;
    r.group_set_role = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_group_settings(mqchat_client *c, const char *conv, int posting,
                          char rid_out[MQCHAT_ID_BUF])
{
    if (!conv) return MQCHAT_ERR;
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupSettings g = MQCHAT__V1__GROUP_SETTINGS__INIT;
    g.conversation_id = (char *)conv;
    g.posting = (Mqchat__V1__PostingPolicy)posting;
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_SETTINGS;
    r.group_settings = &g;
    return app_request(c, &r, rid_out);
}

int mqchat_read_state(mqchat_client *c, const char *conv, uint64_t seq, const char *after,
                      unsigned limit, char rid_out[MQCHAT_ID_BUF])
{
    if (!conv) return MQCHAT_ERR;
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__ReadStateRequest q = MQCHAT__V1__READ_STATE_REQUEST__INIT;
    q.conversation_id = (char *)conv;
    q.seq = seq;
    q.after_user_id = (char *)(after ? after : "");
    q.limit = limit;
    r.body_case = MQCHAT__V1__REQUEST__BODY_READ_STATE;
    r.read_state = &q;
    return app_request(c, &r, rid_out);
}

int mqchat_presence_settings(mqchat_client *c, int hide_last_seen, int visibility,
                             char rid_out[MQCHAT_ID_BUF])
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__PresenceSettings p = MQCHAT__V1__PRESENCE_SETTINGS__INIT;
    p.hide_last_seen = hide_last_seen != 0;
    p.visibility = (Mqchat__V1__PresenceVisibility)visibility;
    r.body_case = MQCHAT__V1__REQUEST__BODY_PRESENCE_SETTINGS;
    r.presence_settings = &p;
    return app_request(c, &r, rid_out);
}
