/* groups — creating groups and changing their membership. Each change is
 * one store write that also logs a ConversationEvent with the next seq, so
 * every member (and every removed member) sees it in order with the
 * messages. Rules (docs/PROTOCOL.md, "Groups"): admins and the owner add
 * and remove members, only the owner removes admins or changes roles,
 * nobody removes the owner, and the owner leaves only as the last member. */
#include "rules_int.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Mqchat__V1__ConversationEvent__Type ev_type;
#define EVT(x) MQCHAT__V1__CONVERSATION_EVENT__TYPE__TYPE_##x

enum op { OP_CREATE, OP_ADD, OP_REMOVE, OP_ROLE, OP_SETTINGS, OP_DELETE };
#define MODE(x) MQCHAT__V1__CONVERSATION_MODE__CONVERSATION_MODE_##x
#define POSTING(x) MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_##x

/* The mode a group should have with `members` members, given its mode
 * now (docs/PROTOCOL.md, "Large conversations"): large from
 * large_group_members on, small again only below small_group_members. */
static mqstore_mode mode_for(const mqc_config *cfg, int large, uint64_t members)
{
    if (!large && members >= cfg->large_group_members) return MQSTORE_MODE_LARGE;
    if (large && members < cfg->small_group_members) return MQSTORE_MODE_SMALL;
    return MQSTORE_MODE_KEEP;
}

/* The event's stored form is a Message{kind EVENT, event}. */
static void event_init(chat_written *w, const chat_caller *who, const char *conv, ev_type type,
                       char **users, size_t n)
{
    snprintf(w->conv, sizeof(w->conv), "%s", conv);
    mqchat__v1__conversation_event__init(&w->ev);
    w->ev.type = type;
    w->ev.actor_user_id = (char *)who->user;
    w->ev.n_user_ids = n;
    w->ev.user_ids = users;
    mqchat__v1__message__init(&w->msg);
    w->msg.kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_EVENT;
    w->msg.event = &w->ev;
}

static int store_failed(chat_status *st, mqstore_err e)
{
    if (e == MQSTORE_ERR_EXISTS)
        return chat_fail(st, EC(INVALID_ARGUMENT), "a user is already a member");
    if (e == MQSTORE_ERR_NOTFOUND) return chat_fail(st, EC(NOT_FOUND), "a user is not a member");
    if (e == MQSTORE_ERR_INVAL)
        return chat_fail(st, EC(INVALID_ARGUMENT), "user ids must be valid and distinct");
    return chat_store_fail(st, e, EC(INTERNAL));
}

static int need_group(const char *conv, chat_status *st)
{
    return mqc_conv_is_group(conv)
               ? 0
               : chat_fail(st, EC(INVALID_ARGUMENT), "not a group conversation");
}

/* Pack the event and make the store write for `op`: the one path every
 * group change takes. On success the event gets its envelope. */
static int apply(chat *c, const chat_caller *who, chat_written *w, enum op op,
                 const mqstore_role *roles, mqstore_role role, mqstore_mode mode, chat_status *st)
{
    const char *const *u = (const char *const *)w->ev.user_ids;
    size_t n = w->ev.n_user_ids, len;
    /* The event says when it switched the mode (the store then puts it in
     * every member's inbox). */
    if (mode == MQSTORE_MODE_LARGE) w->ev.mode = MODE(LARGE);
    if (mode == MQSTORE_MODE_SMALL) w->ev.mode = MODE(SMALL);
    if (!(w->stored = wire_pack(&w->msg.base, &len, malloc)))
        return chat_fail(st, EC(INTERNAL), "out of memory");
    mqstore_event ev = {.actor_user = who->user,
                        .actor_device = who->device,
                        .kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_EVENT,
                        .payload = w->stored,
                        .payload_len = len,
                        .mode = mode};
    /* The title the conversation list shows (CREATED and TITLE_CHANGED). */
    if ((w->ev.type == EVT(CREATED) || w->ev.type == EVT(TITLE_CHANGED)) && w->ev.title)
        ev.title = w->ev.title;
    if (w->ev.posting != POSTING(UNSPECIFIED)) {
        ev.set_flags = 1;
        ev.flags = w->ev.posting == POSTING(ADMINS) ? MQSTORE_CONV_ADMINS_POST : 0;
    }
    mqstore_err e = MQSTORE_ERR_INVAL;
    switch (op) {
    case OP_CREATE:
        e = mqstore_conv_create(c->store, w->conv, u, roles, n, &ev, &w->r);
        break;
    case OP_ADD:
        e = mqstore_members_add(c->store, w->conv, u, roles, n, &ev, &w->r);
        break;
    case OP_REMOVE:
        e = mqstore_members_remove(c->store, w->conv, u, n, &ev, &w->r);
        break;
    case OP_ROLE:
        e = mqstore_members_set_role(c->store, w->conv, u, n, role, &ev, &w->r);
        break;
    case OP_SETTINGS:
        e = mqstore_conv_update(c->store, w->conv, &ev, &w->r);
        break;
    case OP_DELETE:
        e = mqstore_conv_delete(c->store, w->conv, &ev, &w->r);
        /* The event is in every member's inbox and nobody is a member
         * any more: no room, no pull (device/rooms.c closes the room). */
        w->r.large = w->r.pulled = 0;
        break;
    }
    if (e) return store_failed(st, e);
    w->msg.conversation_id = w->conv;
    w->msg.seq = w->r.seq;
    w->msg.sender_user_id = (char *)who->user;
    w->msg.sender_device_id = (char *)(who->device ? who->device : "");
    w->msg.server_time_ms = w->r.server_time_ms;
    return 0;
}

/* The conversation's member count and mode, without listing members. */
static mqstore_err conv_size(chat *c, const char *conv, uint64_t *members, int *large)
{
    mqstore_conv_info info;
    mqstore_err e = mqstore_conv_info_get(c->store, conv, &info);
    *members = info.members;
    *large = info.large;
    return e;
}

static int do_create(chat *c, const chat_caller *who, const Mqchat__V1__GroupCreate *g,
                     chat_written *w, chat_status *st)
{
    /* Members: the creator, then every listed user once. */
    size_t n = 0;
    mqstore_role *roles = calloc(g->n_member_ids + 1, sizeof(*roles));
    w->users = calloc(g->n_member_ids + 1, sizeof(*w->users));
    int rc = -1;
    if (!w->users || !roles) {
        chat_fail(st, EC(INTERNAL), "out of memory");
        goto out;
    }
    w->users[n] = (char *)who->user;
    roles[n++] = MQSTORE_ROLE_OWNER;
    for (size_t i = 0; i < g->n_member_ids; i++) {
        int dup = 0;
        for (size_t j = 0; j < n && !dup; j++)
            dup = strcmp(w->users[j], g->member_ids[i]) == 0;
        if (!dup) {
            w->users[n] = g->member_ids[i];
            roles[n++] = MQSTORE_ROLE_MEMBER;
        }
    }
    if (n > c->cfg->group_max_members) {
        chat_fail(st, EC(GROUP_FULL), "more members than the group limit");
        goto out;
    }
    unsigned char rnd[12];
    char conv[2 + 2 * sizeof(rnd) + 1] = "g:";
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        chat_fail(st, EC(INTERNAL), "no randomness for a group id");
        goto out;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(conv + 2 + 2 * i, 3, "%02x", rnd[i]);
    event_init(w, who, conv, EVT(CREATED), w->users, n);
    w->ev.title = g->title;
    w->ev.posting = g->posting;
    /* A group created with a large member list starts large. */
    rc = apply(c, who, w, OP_CREATE, roles, 0, mode_for(c->cfg, 0, n), st);
out:
    free(roles);
    return rc;
}

static int do_add(chat *c, const chat_caller *who, const Mqchat__V1__GroupAddMembers *g,
                  chat_written *w, chat_status *st)
{
    mqstore_member self;
    mqstore_err e;
    if (need_group(g->conversation_id, st) ||
        chat_require_member(c, who, g->conversation_id, &self, st))
        return -1;
    if (self.role < MQSTORE_ROLE_ADMIN)
        return chat_fail(st, EC(PERMISSION_DENIED), "only admins and the owner add members");
    uint64_t have;
    int large;
    if ((e = conv_size(c, g->conversation_id, &have, &large))) return store_failed(st, e);
    if (have + g->n_user_ids > c->cfg->group_max_members)
        return chat_fail(st, EC(GROUP_FULL), "the group would exceed its member limit");
    event_init(w, who, g->conversation_id, EVT(MEMBERS_ADDED), g->user_ids, g->n_user_ids);
    return apply(c, who, w, OP_ADD, NULL, 0, mode_for(c->cfg, large, have + g->n_user_ids), st);
}

/* Remove `users` (a leave when it is just the caller). */
static int do_remove(chat *c, const chat_caller *who, const char *conv, char **users, size_t n,
                     int leave, chat_written *w, chat_status *st)
{
    mqstore_member self;
    mqstore_err e;
    if (need_group(conv, st) || chat_require_member(c, who, conv, &self, st)) return -1;
    uint64_t members;
    int large;
    if ((e = conv_size(c, conv, &members, &large))) return store_failed(st, e);
    if (leave) {
        if (self.role == MQSTORE_ROLE_OWNER && members > 1)
            return chat_fail(st, EC(PERMISSION_DENIED),
                             "the owner can leave only as the last member");
    } else {
        if (self.role < MQSTORE_ROLE_ADMIN)
            return chat_fail(st, EC(PERMISSION_DENIED), "only admins and the owner remove members");
        for (size_t i = 0; i < n; i++) {
            mqstore_member t;
            if ((e = mqstore_member_get(c->store, conv, users[i], &t))) return store_failed(st, e);
            if (t.role == MQSTORE_ROLE_OWNER)
                return chat_fail(st, EC(PERMISSION_DENIED), "nobody removes the owner");
            if (t.role == MQSTORE_ROLE_ADMIN && self.role != MQSTORE_ROLE_OWNER)
                return chat_fail(st, EC(PERMISSION_DENIED), "only the owner removes admins");
        }
    }
    event_init(w, who, conv, leave ? EVT(MEMBER_LEFT) : EVT(MEMBERS_REMOVED), users, n);
    /* The store checks each is a member; if one is not, nothing is written. */
    uint64_t after = members >= n ? members - n : 0;
    return apply(c, who, w, OP_REMOVE, NULL, 0, mode_for(c->cfg, large, after), st);
}

static int do_set_role(chat *c, const chat_caller *who, const Mqchat__V1__GroupSetRole *g,
                       chat_written *w, chat_status *st)
{
    mqstore_member self;
    if (need_group(g->conversation_id, st) ||
        chat_require_member(c, who, g->conversation_id, &self, st))
        return -1;
    if (self.role != MQSTORE_ROLE_OWNER)
        return chat_fail(st, EC(PERMISSION_DENIED), "only the owner changes roles");
    for (size_t i = 0; i < g->n_user_ids; i++)
        if (strcmp(g->user_ids[i], who->user) == 0)
            return chat_fail(st, EC(PERMISSION_DENIED), "the owner's role cannot change");
    event_init(w, who, g->conversation_id, EVT(ROLE_CHANGED), g->user_ids, g->n_user_ids);
    w->ev.role = g->role;
    return apply(c, who, w, OP_ROLE, NULL, (mqstore_role)g->role, MQSTORE_MODE_KEEP, st);
}

static int do_settings(chat *c, const chat_caller *who, const Mqchat__V1__GroupSettings *g,
                       chat_written *w, chat_status *st)
{
    mqstore_member self;
    if (need_group(g->conversation_id, st) ||
        chat_require_member(c, who, g->conversation_id, &self, st))
        return -1;
    if (self.role < MQSTORE_ROLE_ADMIN)
        return chat_fail(st, EC(PERMISSION_DENIED), "only admins and the owner change settings");
    if (g->posting == POSTING(UNSPECIFIED))
        return chat_fail(st, EC(INVALID_ARGUMENT), "nothing to change");
    event_init(w, who, g->conversation_id, EVT(SETTINGS_CHANGED), NULL, 0);
    w->ev.posting = g->posting;
    return apply(c, who, w, OP_SETTINGS, NULL, 0, MQSTORE_MODE_KEEP, st);
}

int chat_member_expel(chat *c, const chat_caller *who, const char *conv, const char *user,
                      chat_written *out, chat_status *st)
{
    memset(out, 0, sizeof(*out));
    mqstore_member self;
    mqstore_err e;
    if (!who->op) return chat_fail(st, EC(PERMISSION_DENIED), "only operators expel users");
    if (chat_require_member(c, who, conv, &self, st)) return -1;
    uint64_t members;
    int large;
    if ((e = conv_size(c, conv, &members, &large))) return store_failed(st, e);
    if (!(out->users = calloc(1, sizeof(*out->users))))
        return chat_fail(st, EC(INTERNAL), "out of memory");
    out->users[0] = (char *)user;
    event_init(out, who, conv, EVT(MEMBERS_REMOVED), out->users, 1);
    int rc = apply(c, who, out, OP_REMOVE, NULL, 0,
                   mqc_conv_is_group(conv) ? mode_for(c->cfg, large, members ? members - 1 : 0)
                                           : MQSTORE_MODE_KEEP,
                   st);
    if (rc) chat_written_clear(out);
    return rc;
}

int chat_group_delete(chat *c, const chat_caller *who, const char *conv, chat_written *out,
                      chat_status *st)
{
    memset(out, 0, sizeof(*out));
    mqstore_member self;
    if (!who->op) return chat_fail(st, EC(PERMISSION_DENIED), "only operators delete groups");
    if (need_group(conv, st) || chat_require_member(c, who, conv, &self, st)) return -1;
    event_init(out, who, conv, EVT(GROUP_DELETED), NULL, 0);
    int rc = apply(c, who, out, OP_DELETE, NULL, 0, MQSTORE_MODE_KEEP, st);
    if (rc) chat_written_clear(out);
    return rc;
}

int chat_group(chat *c, const chat_caller *who, const Mqchat__V1__Request *req, chat_written *out,
               chat_status *st)
{
    memset(out, 0, sizeof(*out));
    int rc;
    switch (req->body_case) {
    case MQCHAT__V1__REQUEST__BODY_GROUP_CREATE:
        rc = do_create(c, who, req->group_create, out, st);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_ADD:
        rc = do_add(c, who, req->group_add, out, st);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE:
        rc = do_remove(c, who, req->group_remove->conversation_id, req->group_remove->user_ids,
                       req->group_remove->n_user_ids, 0, out, st);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_LEAVE: {
        /* The event names the caller: keep the one-element list in *out. */
        if (!(out->users = calloc(1, sizeof(*out->users))))
            return chat_fail(st, EC(INTERNAL), "out of memory");
        out->users[0] = (char *)who->user;
        rc = do_remove(c, who, req->group_leave->conversation_id, out->users, 1, 1, out, st);
        break;
    }
    case MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE:
        rc = do_set_role(c, who, req->group_set_role, out, st);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_SETTINGS:
        rc = do_settings(c, who, req->group_settings, out, st);
        break;
    default:
        rc = chat_fail(st, EC(UNSUPPORTED), "unknown request type");
        break;
    }
    if (rc) chat_written_clear(out);
    return rc;
}
