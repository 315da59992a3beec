/* groups — creating groups and changing their membership. Each change is
 * one store write that also logs a ConversationEvent with the next seq, so
 * every member (and every removed member) sees it in order with the
 * messages. Rules (docs/PROTOCOL.md): admins and the owner add and remove
 * members, only the owner removes admins or changes roles, nobody removes
 * the owner, and the owner leaves only as the last member. */
#include "plugin.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int require_member(mqc *m, conn *c, const char *request_id, const char *conv, mqstore_member *self);

typedef Mqchat__V1__ConversationEvent__Type ev_type;
#define EVT(x) MQCHAT__V1__CONVERSATION_EVENT__TYPE__TYPE_##x

/* The event's stored form is a Message{kind EVENT, event}. After the write
 * is durable: the event to every fanned-out user, and GroupResult to the
 * caller. */
typedef struct change {
    Mqchat__V1__ConversationEvent ev;
    Mqchat__V1__Message content;
    void *stored;
    size_t stored_len;
} change;

static void change_init(change *ch, conn *c, ev_type type, char **users, size_t n)
{
    mqchat__v1__conversation_event__init(&ch->ev);
    ch->ev.type = type;
    ch->ev.actor_user_id = c->user;
    ch->ev.n_user_ids = n;
    ch->ev.user_ids = users;
    mqchat__v1__message__init(&ch->content);
    ch->content.kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_EVENT;
    ch->content.event = &ch->ev;
    ch->stored = NULL;
}

static int change_pack(change *ch)
{
    ch->stored = wire_pack(&ch->content.base, &ch->stored_len, malloc);
    return ch->stored ? 0 : -1;
}

static void change_event(const change *ch, conn *c, mqstore_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->actor_user = c->user;
    ev->actor_device = c->device;
    ev->kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_EVENT;
    ev->payload = ch->stored;
    ev->payload_len = ch->stored_len;
}

/* The write succeeded: queue the event for every member and the answer. */
static void change_done(mqc *m, conn *c, change *ch, const char *request_id, const char *conv,
                        mqstore_result *r)
{
    pubs out = {0};
    ch->content.conversation_id = (char *)conv;
    ch->content.seq = r->seq;
    ch->content.sender_user_id = c->user;
    ch->content.sender_device_id = c->device;
    ch->content.server_time_ms = r->server_time_ms;
    Mqchat__V1__GroupResult gr = MQCHAT__V1__GROUP_RESULT__INIT;
    gr.conversation_id = (char *)conv;
    gr.seq = r->seq;
    Mqchat__V1__Response resp = MQCHAT__V1__RESPONSE__INIT;
    resp.request_id = (char *)request_id;
    resp.body_case = MQCHAT__V1__RESPONSE__BODY_GROUP;
    resp.group = &gr;
    char topic[512];
    if (fanout_message(m, &out, &ch->content, r, NULL) ||
        topic_device(topic, sizeof(topic), m->cfg.topic_prefix, c->user, c->device, "resp") ||
        pubs_add(&out, c->client_id, topic, &resp.base, 1))
        mosquitto_log_printf(MOSQ_LOG_ERR, "mqchat: out of memory answering a group change");
    out_after(m, r->ticket, &out);
}

static void change_free(change *ch)
{
    free(ch->stored);
}

enum op { OP_CREATE, OP_ADD, OP_REMOVE, OP_ROLE };

static int store_failed(mqc *m, conn *c, const char *rid, mqstore_err e)
{
    if (e == MQSTORE_ERR_EXISTS)
        reply_error(m, c, rid, EC(INVALID_ARGUMENT), "a user is already a member");
    else if (e == MQSTORE_ERR_NOTFOUND)
        reply_error(m, c, rid, EC(NOT_FOUND), "a user is not a member");
    else if (e == MQSTORE_ERR_INVAL)
        reply_error(m, c, rid, EC(INVALID_ARGUMENT), "user ids must be valid and distinct");
    else
        reply_error(m, c, rid, store_code(e, EC(INTERNAL)), mqstore_strerror(e));
    return -1;
}

static int is_group(mqc *m, conn *c, const char *rid, const char *conv)
{
    if (strncmp(conv, "g:", 2) == 0) return 1;
    reply_error(m, c, rid, EC(INVALID_ARGUMENT), "not a group conversation");
    return 0;
}

/* Pack the event, make the store write for `op`, and answer: the one path
 * every group change takes. Frees the change. */
static void apply(mqc *m, conn *c, const char *rid, const char *conv, change *ch, enum op op,
                  char **users, const mqstore_role *roles, size_t n, mqstore_role role)
{
    const char *const *u = (const char *const *)users;
    mqstore_event ev;
    mqstore_result r;
    mqstore_err e = MQSTORE_ERR_NOMEM;
    memset(&r, 0, sizeof(r));
    if (change_pack(ch) == 0) {
        change_event(ch, c, &ev);
        switch (op) {
        case OP_CREATE:
            e = mqstore_conv_create(m->store, conv, u, roles, n, &ev, &r);
            break;
        case OP_ADD:
            e = mqstore_members_add(m->store, conv, u, roles, n, &ev, &r);
            break;
        case OP_REMOVE:
            e = mqstore_members_remove(m->store, conv, u, n, &ev, &r);
            break;
        case OP_ROLE:
            e = mqstore_members_set_role(m->store, conv, u, n, role, &ev, &r);
            break;
        }
    }
    if (e)
        store_failed(m, c, rid, e);
    else
        change_done(m, c, ch, rid, conv, &r);
    mqstore_result_clear(&r);
    change_free(ch);
}

static void do_create(mqc *m, conn *c, Mqchat__V1__Request *req)
{
    Mqchat__V1__GroupCreate *g = req->group_create;
    /* Members: the creator, then every listed user once. */
    size_t n = 0;
    char **users = calloc(g->n_member_ids + 1, sizeof(*users));
    mqstore_role *roles = calloc(g->n_member_ids + 1, sizeof(*roles));
    if (!users || !roles) {
        reply_error(m, c, req->request_id, EC(INTERNAL), "out of memory");
        goto out;
    }
    users[n] = c->user;
    roles[n++] = MQSTORE_ROLE_OWNER;
    for (size_t i = 0; i < g->n_member_ids; i++) {
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++)
            dup = strcmp(users[j], g->member_ids[i]) == 0;
        if (!dup) {
            users[n] = g->member_ids[i];
            roles[n++] = MQSTORE_ROLE_MEMBER;
        }
    }
    if (n > m->cfg.group_max_members) {
        reply_error(m, c, req->request_id, EC(GROUP_FULL), "more members than the group limit");
        goto out;
    }
    unsigned char rnd[12];
    char conv[2 + 2 * sizeof(rnd) + 1] = "g:";
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        reply_error(m, c, req->request_id, EC(INTERNAL), "no randomness for a group id");
        goto out;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(conv + 2 + 2 * i, 3, "%02x", rnd[i]);
    change ch;
    change_init(&ch, c, EVT(CREATED), users, n);
    ch.ev.title = g->title;
    apply(m, c, req->request_id, conv, &ch, OP_CREATE, users, roles, n, 0);
out:
    free(users);
    free(roles);
}

static void do_add(mqc *m, conn *c, Mqchat__V1__Request *req)
{
    Mqchat__V1__GroupAddMembers *g = req->group_add;
    const char *rid = req->request_id;
    mqstore_member self;
    if (!is_group(m, c, rid, g->conversation_id) ||
        require_member(m, c, rid, g->conversation_id, &self))
        return;
    if (self.role < MQSTORE_ROLE_ADMIN) {
        reply_error(m, c, rid, EC(PERMISSION_DENIED), "only admins and the owner add members");
        return;
    }
    mqstore_member_list l;
    mqstore_err e = mqstore_members_list(m->store, g->conversation_id, &l);
    if (e) {
        store_failed(m, c, rid, e);
        return;
    }
    size_t have = l.n;
    mqstore_member_list_free(&l);
    if (have + g->n_user_ids > m->cfg.group_max_members) {
        reply_error(m, c, rid, EC(GROUP_FULL), "the group would exceed its member limit");
        return;
    }
    change ch;
    change_init(&ch, c, EVT(MEMBERS_ADDED), g->user_ids, g->n_user_ids);
    apply(m, c, rid, g->conversation_id, &ch, OP_ADD, g->user_ids, NULL, g->n_user_ids, 0);
}

/* Remove `users` (a leave when it is just the caller). */
static void do_remove(mqc *m, conn *c, const char *rid, const char *conv, char **users, size_t n,
                      int leave)
{
    mqstore_member self;
    if (!is_group(m, c, rid, conv) || require_member(m, c, rid, conv, &self)) return;
    mqstore_member_list l;
    mqstore_err e = mqstore_members_list(m->store, conv, &l);
    if (e) {
        store_failed(m, c, rid, e);
        return;
    }
    size_t members = l.n;
    mqstore_member_list_free(&l);
    if (leave) {
        if (self.role == MQSTORE_ROLE_OWNER && members > 1) {
            reply_error(m, c, rid, EC(PERMISSION_DENIED),
                        "the owner can leave only as the last member");
            return;
        }
    } else {
        if (self.role < MQSTORE_ROLE_ADMIN) {
            reply_error(m, c, rid, EC(PERMISSION_DENIED),
                        "only admins and the owner remove members");
            return;
        }
        for (size_t i = 0; i < n; i++) {
            mqstore_member t;
            e = mqstore_member_get(m->store, conv, users[i], &t);
            if (e) {
                store_failed(m, c, rid, e);
                return;
            }
            if (t.role == MQSTORE_ROLE_OWNER ||
                (t.role == MQSTORE_ROLE_ADMIN && self.role != MQSTORE_ROLE_OWNER)) {
                reply_error(m, c, rid, EC(PERMISSION_DENIED),
                            t.role == MQSTORE_ROLE_OWNER ? "nobody removes the owner"
                                                         : "only the owner removes admins");
                return;
            }
        }
    }
    change ch;
    change_init(&ch, c, leave ? EVT(MEMBER_LEFT) : EVT(MEMBERS_REMOVED), users, n);
    apply(m, c, rid, conv, &ch, OP_REMOVE, users, NULL, n, 0);
}

static void do_set_role(mqc *m, conn *c, Mqchat__V1__Request *req)
{
    Mqchat__V1__GroupSetRole *g = req->group_set_role;
    const char *rid = req->request_id;
    mqstore_member self;
    if (!is_group(m, c, rid, g->conversation_id) ||
        require_member(m, c, rid, g->conversation_id, &self))
        return;
    if (self.role != MQSTORE_ROLE_OWNER) {
        reply_error(m, c, rid, EC(PERMISSION_DENIED), "only the owner changes roles");
        return;
    }
    for (size_t i = 0; i < g->n_user_ids; i++)
        if (strcmp(g->user_ids[i], c->user) == 0) {
            reply_error(m, c, rid, EC(PERMISSION_DENIED), "the owner's role cannot change");
            return;
        }
    change ch;
    change_init(&ch, c, EVT(ROLE_CHANGED), g->user_ids, g->n_user_ids);
    ch.ev.role = g->role;
    apply(m, c, rid, g->conversation_id, &ch, OP_ROLE, g->user_ids, NULL, g->n_user_ids,
          (mqstore_role)g->role);
}

int handle_group(mqc *m, conn *c, Mqchat__V1__Request *req)
{
    char *self[1] = {c->user};
    switch (req->body_case) {
    case MQCHAT__V1__REQUEST__BODY_GROUP_CREATE:
        do_create(m, c, req);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_ADD:
        do_add(m, c, req);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE:
        do_remove(m, c, req->request_id, req->group_remove->conversation_id,
                  req->group_remove->user_ids, req->group_remove->n_user_ids, 0);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_LEAVE:
        do_remove(m, c, req->request_id, req->group_leave->conversation_id, self, 1, 1);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE:
        do_set_role(m, c, req);
        break;
    default:
        reply_error(m, c, req->request_id, EC(UNSUPPORTED), "unknown request type");
        break;
    }
    return 0;
}
