/* conversations — operator commands on conversations and groups: read
 * one, list a user's, list members, create, delete, change membership and
 * roles, set retention. Each goes through the same rule a device's request
 * does (rules/groups.c, rules/read.c) with an operator caller (who.op:
 * owner's rights, no membership needed), and the events it writes reach
 * the members' devices like any group change. */
#include "control_int.h"
#include "mqc_utf8.h"

#include <stdlib.h>
#include <string.h>

#define POSTING(x) MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_##x

static chat *rules(ctl_cmd *cmd)
{
    return &cmd->m->dev.chat;
}

static chat_caller op(ctl_cmd *cmd)
{
    return (chat_caller){.user = cmd->admin, .device = NULL, .op = 1};
}

/* The most user ids one command may name. */
static size_t batch_max(ctl_cmd *cmd)
{
    size_t max = cmd->m->cfg.group_max_members;
    return max < WIRE_MAX_BATCH ? max : WIRE_MAX_BATCH;
}

static void add_info(cJSON *o, const mqstore_conv_info *info)
{
    cJSON_AddNumberToObject(o, "head", (double)info->head);
    cJSON_AddNumberToObject(o, "members", (double)info->members);
    cJSON_AddStringToObject(o, "mode", info->large ? "large" : "small");
    cJSON_AddStringToObject(o, "posting",
                            info->flags & MQSTORE_CONV_ADMINS_POST ? "admins" : "everyone");
    cJSON_AddBoolToObject(o, "deleted", (info->flags & MQSTORE_CONV_DELETED) != 0);
    cJSON_AddNumberToObject(o, "lastActivityMs", (double)info->last_time_ms);
}

static int get_conversation(ctl_cmd *cmd)
{
    const char *conv;
    if (ctl_arg_id(cmd, "conversation", MQC_ID_CONV, 1, &conv)) return CTL_DONE;
    mqstore_conv_info info;
    mqstore_err e = mqstore_conv_info_get(cmd->m->store, conv, &info);
    if (e == MQSTORE_ERR_NOTFOUND) return ctl_error(cmd, "no such conversation: %s", conv);
    if (e) return ctl_store_error(cmd, "cannot read the conversation", e);
    int64_t age_ms;
    uint64_t count;
    if ((e = mqstore_conv_retention_get(cmd->m->store, conv, &age_ms, &count)))
        return ctl_store_error(cmd, "cannot read the retention", e);
    cJSON *d = ctl_data(cmd);
    cJSON_AddStringToObject(d, "conversation", conv);
    add_info(d, &info);
    cJSON *r = cJSON_AddObjectToObject(d, "retention");
    cJSON_AddNumberToObject(r, "maxAgeSeconds",
                            age_ms > 0 ? (double)(age_ms / 1000) : (double)age_ms);
    cJSON_AddNumberToObject(r, "maxCount", count == MQSTORE_KEEP_ALL ? -1 : (double)count);
    return CTL_DONE;
}

static int list_conversations(ctl_cmd *cmd)
{
    const char *user, *after = "", *order = "id";
    uint64_t limit = 100;
    if (ctl_arg_id(cmd, "user", MQC_ID_USER, 1, &user) ||
        ctl_arg_str(cmd, "after", MQC_ID_MAX, 0, &after) ||
        ctl_arg_u64(cmd, "limit", 1000, 0, &limit) || ctl_arg_str(cmd, "order", 16, 0, &order))
        return CTL_DONE;
    if (strcmp(order, "id") != 0 && strcmp(order, "activity") != 0)
        return ctl_error(cmd, "argument 'order' must be \"id\" or \"activity\"");
    if (after[0] && !mqc_id_valid(MQC_ID_CONV, after))
        return ctl_error(cmd, "argument 'after' must be a conversation id");
    Mqchat__V1__ListConversations lc = MQCHAT__V1__LIST_CONVERSATIONS__INIT;
    lc.after_conversation_id = (char *)after;
    lc.limit = (uint32_t)(limit ? limit : 1);
    lc.order = strcmp(order, "activity") == 0
                   ? MQCHAT__V1__CONVERSATION_ORDER__CONVERSATION_ORDER_ACTIVITY
                   : MQCHAT__V1__CONVERSATION_ORDER__CONVERSATION_ORDER_ID;
    /* As the user sees them: their role, read watermark, unread count. */
    chat_caller who = {.user = user};
    chat_conv_list l;
    chat_status st;
    if (chat_conversations(rules(cmd), &who, &lc, &l, &st)) return ctl_refused(cmd, &st);
    cJSON *d = ctl_data(cmd);
    cJSON_AddStringToObject(d, "user", user);
    cJSON *arr = cJSON_AddArrayToObject(d, "conversations");
    for (size_t i = 0; i < l.n; i++) {
        const chat_conv_summary *s = &l.items[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "conversation", s->conv);
        /* Titles are checked for UTF-8 when set (wire.c); older ones may not be. */
        if (s->title[0] && mqc_utf8_valid(s->title, strlen(s->title)))
            cJSON_AddStringToObject(o, "title", s->title);
        cJSON_AddStringToObject(o, "role", ctl_role_name(s->role));
        add_info(o, &s->info);
        cJSON_AddNumberToObject(o, "readSeq", (double)s->read);
        cJSON_AddNumberToObject(o, "unread", (double)s->unread);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddBoolToObject(d, "more", l.more);
    chat_conv_list_free(&l);
    return CTL_DONE;
}

static int list_members(ctl_cmd *cmd)
{
    const char *conv, *after = "";
    uint64_t limit = 1000;
    if (ctl_arg_id(cmd, "conversation", MQC_ID_CONV, 1, &conv) ||
        ctl_arg_str(cmd, "after", MQC_ID_MAX, 0, &after) ||
        ctl_arg_u64(cmd, "limit", 10000, 0, &limit))
        return CTL_DONE;
    Mqchat__V1__ListMembers lm = MQCHAT__V1__LIST_MEMBERS__INIT;
    lm.conversation_id = (char *)conv;
    lm.after_user_id = (char *)after;
    lm.limit = (uint32_t)(limit ? limit : 1);
    chat_caller who = op(cmd);
    mqstore_member_list l;
    int more;
    chat_status st;
    if (chat_members(rules(cmd), &who, &lm, &l, &more, &st)) return ctl_refused(cmd, &st);
    cJSON *d = ctl_data(cmd);
    cJSON_AddStringToObject(d, "conversation", conv);
    cJSON *arr = cJSON_AddArrayToObject(d, "members");
    for (size_t i = 0; i < l.n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "user", l.items[i].user);
        cJSON_AddStringToObject(o, "role", ctl_role_name(l.items[i].role));
        cJSON_AddNumberToObject(o, "joinedSeq", (double)l.items[i].joined_seq);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddBoolToObject(d, "more", more);
    mqstore_member_list_free(&l);
    return CTL_DONE;
}

/* A group change was written: deliver its event, answer {conversation, seq}. */
static int answer_written(ctl_cmd *cmd, chat_written *w)
{
    ctl_deliver(cmd, w);
    cJSON *d = ctl_data(cmd);
    cJSON_AddStringToObject(d, "conversation", w->conv);
    cJSON_AddNumberToObject(d, "seq", (double)w->r.seq);
    chat_written_clear(w);
    return CTL_DONE;
}

/* Run a group request as `who`, then as answer_written. */
static int group_request(ctl_cmd *cmd, const chat_caller *who, const Mqchat__V1__Request *req)
{
    chat_written w;
    chat_status st;
    if (chat_group(rules(cmd), who, req, &w, &st)) return ctl_refused(cmd, &st);
    return answer_written(cmd, &w);
}

static int create_group(ctl_cmd *cmd)
{
    const char *owner, *title = "", *posting = "everyone";
    char **members = NULL;
    size_t n = 0;
    if (ctl_arg_id(cmd, "owner", MQC_ID_USER, 1, &owner) ||
        ctl_arg_str(cmd, "title", WIRE_MAX_TITLE, 0, &title) ||
        ctl_arg_str(cmd, "posting", 16, 0, &posting))
        return CTL_DONE;
    if (strcmp(posting, "everyone") != 0 && strcmp(posting, "admins") != 0)
        return ctl_error(cmd, "argument 'posting' must be \"everyone\" or \"admins\"");
    if (cJSON_GetObjectItemCaseSensitive(cmd->in, "members") &&
        ctl_arg_ids(cmd, "members", MQC_ID_USER, batch_max(cmd), &members, &n))
        return CTL_DONE;
    Mqchat__V1__GroupCreate gc = MQCHAT__V1__GROUP_CREATE__INIT;
    gc.title = (char *)title;
    gc.n_member_ids = n;
    gc.member_ids = members;
    gc.posting = strcmp(posting, "admins") == 0 ? POSTING(ADMINS) : POSTING(EVERYONE);
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
    req.group_create = &gc;
    /* The owner creates it: the CREATED event names them as its actor. */
    chat_caller who = {.user = owner};
    int rc = group_request(cmd, &who, &req);
    free(members);
    return rc;
}

static int delete_group(ctl_cmd *cmd)
{
    const char *conv;
    if (ctl_arg_id(cmd, "conversation", MQC_ID_CONV, 1, &conv)) return CTL_DONE;
    chat_caller who = op(cmd);
    chat_written w;
    chat_status st;
    if (chat_group_delete(rules(cmd), &who, conv, &w, &st)) return ctl_refused(cmd, &st);
    return answer_written(cmd, &w);
}

/* add / remove / setRole: a conversation and its users. */
static int membership(ctl_cmd *cmd, Mqchat__V1__Request__BodyCase which)
{
    const char *conv, *role = NULL;
    char **users;
    size_t n;
    if (ctl_arg_id(cmd, "conversation", MQC_ID_CONV, 1, &conv) ||
        (which == MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE &&
         ctl_arg_str(cmd, "role", 16, 1, &role)) ||
        ctl_arg_ids(cmd, "users", MQC_ID_USER, batch_max(cmd), &users, &n))
        return CTL_DONE;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    Mqchat__V1__GroupAddMembers ga = MQCHAT__V1__GROUP_ADD_MEMBERS__INIT;
    Mqchat__V1__GroupRemoveMembers gr = MQCHAT__V1__GROUP_REMOVE_MEMBERS__INIT;
    Mqchat__V1__GroupSetRole gs = MQCHAT__V1__GROUP_SET_ROLE__INIT;
    req.body_case = which;
    if (which == MQCHAT__V1__REQUEST__BODY_GROUP_ADD) {
        ga.conversation_id = (char *)conv;
        ga.n_user_ids = n;
        ga.user_ids = users;
        req.group_add = &ga;
    } else if (which == MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE) {
        gr.conversation_id = (char *)conv;
        gr.n_user_ids = n;
        gr.user_ids = users;
        req.group_remove = &gr;
    } else {
        if (strcmp(role, "member") != 0 && strcmp(role, "admin") != 0) {
            free(users);
            return ctl_error(cmd, "argument 'role' must be \"member\" or \"admin\"");
        }
        gs.conversation_id = (char *)conv;
        gs.n_user_ids = n;
        gs.user_ids = users;
        gs.role = strcmp(role, "admin") == 0 ? MQCHAT__V1__ROLE__ROLE_ADMIN
                                             : MQCHAT__V1__ROLE__ROLE_MEMBER;
        req.group_set_role = &gs;
    }
    chat_caller who = op(cmd);
    int rc = group_request(cmd, &who, &req);
    free(users);
    return rc;
}

static int add_members(ctl_cmd *cmd)
{
    return membership(cmd, MQCHAT__V1__REQUEST__BODY_GROUP_ADD);
}
static int remove_members(ctl_cmd *cmd)
{
    return membership(cmd, MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE);
}
static int set_role(ctl_cmd *cmd)
{
    return membership(cmd, MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE);
}

/* Retention of one conversation: seconds / count, 0 for the server's
 * defaults (retention_s, retention_count), -1 to keep forever. */
static int set_retention(ctl_cmd *cmd)
{
    const char *conv;
    int64_t age_s = 0, count = 0;
    if (ctl_arg_id(cmd, "conversation", MQC_ID_CONV, 1, &conv) ||
        ctl_arg_i64(cmd, "maxAgeSeconds", -1, 3650LL * 86400, 0, &age_s) ||
        ctl_arg_i64(cmd, "maxCount", -1, 1000000000000LL, 0, &count))
        return CTL_DONE;
    int64_t age_ms = age_s < 0 ? MQSTORE_KEEP_FOREVER : age_s * 1000;
    uint64_t cnt = count < 0 ? MQSTORE_KEEP_ALL : (uint64_t)count;
    mqstore_err e = mqstore_conv_retention_set(cmd->m->store, conv, age_ms, cnt);
    if (e == MQSTORE_ERR_NOTFOUND) return ctl_error(cmd, "no such conversation: %s", conv);
    if (e) return ctl_store_error(cmd, "cannot set the retention", e);
    cJSON *d = ctl_data(cmd);
    cJSON_AddStringToObject(d, "conversation", conv);
    cJSON_AddNumberToObject(d, "maxAgeSeconds", (double)age_s);
    cJSON_AddNumberToObject(d, "maxCount", (double)count);
    return CTL_DONE;
}

const ctl_def ctl_conversation_cmds[] = {
    {"getConversation", get_conversation, "conversation"},
    {"listConversations", list_conversations, "user,after,limit,order"},
    {"listMembers", list_members, "conversation,after,limit"},
    {"createGroup", create_group, "owner,title,members,posting"},
    {"deleteGroup", delete_group, "conversation"},
    {"addGroupMembers", add_members, "conversation,users"},
    {"removeGroupMembers", remove_members, "conversation,users"},
    {"setGroupRole", set_role, "conversation,users,role"},
    {"setRetention", set_retention, "conversation,maxAgeSeconds,maxCount"},
    {NULL, NULL, NULL},
};
