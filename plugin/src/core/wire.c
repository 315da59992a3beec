/* wire — decode and validate device payloads. See wire.h. */
#include "wire.h"
#include "mqc_utf8.h"
#include "topics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void fail(wire_err *err, wire_code code, const char *fmt, ...)
{
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

/* protobuf-c keeps an overlong-encoded field number 0 as an unknown field
 * but writes it back as a tag nobody can parse: a stored message carrying
 * one would never decode again. Refuse such input, in every submessage. */
static int bad_unknown(const ProtobufCMessage *m, int depth)
{
    if (!m) return 0;
    if (depth > 16) return 1;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0) return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                if (bad_unknown(v[j], depth + 1)) return 1;
        } else if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
                   *(const uint32_t *)(base + f->quantifier_offset) == f->id) {
            if (bad_unknown(*(ProtobufCMessage *const *)(base + f->offset), depth + 1)) return 1;
        }
    }
    return 0;
}

/* Unpack with `unpack`, refusing what bad_unknown() refuses. */
static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *desc, const void *buf, size_t len)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, buf);
    if (m && bad_unknown(m, 0)) {
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return m;
}

static int check_conv(const char *conv, wire_err *err)
{
    if (!conv || !conv[0]) {
        fail(err, EC(INVALID_ARGUMENT), "conversation_id is required");
        return -1;
    }
    if (!mqc_id_valid(MQC_ID_CONV, conv)) {
        fail(err, EC(INVALID_ARGUMENT),
             "conversation_id must be d:<userA>:<userB> (userA <= userB) or g: and "
             "1..64 letters and digits");
        return -1;
    }
    return 0;
}

static int check_users(char **ids, size_t n, size_t max, wire_err *err)
{
    if (n == 0) {
        fail(err, EC(INVALID_ARGUMENT), "user_ids is empty");
        return -1;
    }
    if (n > max) {
        fail(err, max < WIRE_MAX_BATCH ? EC(GROUP_FULL) : EC(INVALID_ARGUMENT),
             "%zu users is more than %zu in one request", n, max);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (!mqc_id_valid(MQC_ID_USER, ids[i])) {
            fail(err, EC(INVALID_ARGUMENT), "user_ids[%zu] is not a valid user id", i);
            return -1;
        }
    return 0;
}

Mqchat__V1__SendRequest *wire_send(const void *buf, size_t len, size_t max_body, wire_err *err)
{
    memset(err, 0, sizeof(*err));
    if (len > max_body + WIRE_ENVELOPE_SLACK) {
        fail(err, EC(BODY_TOO_LARGE), "payload of %zu bytes is over the limit", len);
        return NULL;
    }
    Mqchat__V1__SendRequest *r =
        (Mqchat__V1__SendRequest *)decode(&mqchat__v1__send_request__descriptor, buf, len);
    if (!r) {
        fail(err, EC(MALFORMED), "payload is not a SendRequest");
        return NULL;
    }
    size_t body = r->body.len;
    for (size_t i = 0; i < r->n_media; i++)
        body += r->media[i]->thumbnail.len;
    if (!mqc_id_valid(MQC_ID_CLIENT, r->client_msg_id))
        fail(err, EC(INVALID_ARGUMENT), "client_msg_id must be 1..128 of [A-Za-z0-9._:-]");
    else if (check_conv(r->conversation_id, err))
        ;
    else if (body > max_body)
        fail(err, EC(BODY_TOO_LARGE), "body of %zu bytes is over the limit of %zu", body, max_body);
    else if (strlen(r->content_type) > WIRE_MAX_CONTENT_TYPE)
        fail(err, EC(INVALID_ARGUMENT), "content_type is longer than %d bytes",
             WIRE_MAX_CONTENT_TYPE);
    else if (r->n_media > WIRE_MAX_MEDIA)
        fail(err, EC(INVALID_ARGUMENT), "more than %d media references", WIRE_MAX_MEDIA);
    else if (r->edit_seq && r->delete_seq)
        fail(err, EC(INVALID_ARGUMENT), "edit_seq and delete_seq exclude each other");
    else if (r->delete_seq && (r->body.len || r->n_media || r->content_type[0] || r->reply_to_seq))
        fail(err, EC(INVALID_ARGUMENT), "a delete carries no body, media, content_type or reply");
    else if ((r->edit_seq || r->delete_seq) && r->reply_to_seq)
        fail(err, EC(INVALID_ARGUMENT), "an edit keeps the original's reply_to_seq");
    for (size_t i = 0; !err->code && i < r->n_media; i++) {
        Mqchat__V1__MediaRef *m = r->media[i];
        if (strlen(m->url) > 2048 || strlen(m->mime_type) > 128 ||
            (m->sha256.len != 0 && m->sha256.len != 32) || m->key.len > 64)
            fail(err, EC(INVALID_ARGUMENT), "media[%zu] has an oversize or malformed field", i);
    }
    /* Keep the decoded message when only the content was bad, so the ACK
     * can name the client_msg_id. */
    return r;
}

/* 1 if s is 1..max bytes of [A-Za-z0-9] and `extra`. */
static int charset_ok(const char *s, size_t min, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n < min || n > max) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr(extra, s[i])))
            return 0;
    return 1;
}

/* APNs device tokens are hex (32 bytes today; Apple says they may grow),
 * FCM registration tokens [A-Za-z0-9_:-] up to a few hundred bytes; both
 * bounded by WIRE_MAX_PUSH_TOKEN. An app id is a bundle id or FCM app. */
static void check_push_token(const Mqchat__V1__PushTokenRegister *p, wire_err *err)
{
    int apns = p->platform == MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_APNS ||
               p->platform == MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_APNS_SANDBOX;
    if (!apns && p->platform != MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_FCM)
        fail(err, EC(INVALID_ARGUMENT), "platform must be APNS, APNS_SANDBOX or FCM");
    else if (apns && (!charset_ok(p->token, 64, 200, "") ||
                      strspn(p->token, "0123456789abcdefABCDEF") != strlen(p->token) ||
                      strlen(p->token) % 2))
        fail(err, EC(INVALID_ARGUMENT), "an APNs token is 64..200 hex digits");
    else if (!apns && !charset_ok(p->token, 1, WIRE_MAX_PUSH_TOKEN, "_:-."))
        fail(err, EC(INVALID_ARGUMENT), "an FCM token is 1..%d of [A-Za-z0-9_:.-]",
             WIRE_MAX_PUSH_TOKEN);
    else if (p->app_id[0] && !charset_ok(p->app_id, 1, WIRE_MAX_APP_ID, "._-"))
        fail(err, EC(INVALID_ARGUMENT), "app_id is 0..%d of [A-Za-z0-9._-]", WIRE_MAX_APP_ID);
}

static const char *role_ok(Mqchat__V1__Role r)
{
    return (r == MQCHAT__V1__ROLE__ROLE_MEMBER || r == MQCHAT__V1__ROLE__ROLE_ADMIN) ? NULL
                                                                                     : "role";
}

Mqchat__V1__Request *wire_request(const void *buf, size_t len, size_t max_body, size_t max_members,
                                  wire_err *err)
{
    memset(err, 0, sizeof(*err));
    size_t batch_bytes = (size_t)WIRE_MAX_BATCH * (MQC_ID_MAX + 3);
    if (len > (max_body > batch_bytes ? max_body : batch_bytes) + WIRE_ENVELOPE_SLACK) {
        fail(err, EC(BODY_TOO_LARGE), "request of %zu bytes is over the limit", len);
        return NULL;
    }
    /* Per request; the group's own limit is checked against its size. */
    if (max_members > WIRE_MAX_BATCH) max_members = WIRE_MAX_BATCH;
    Mqchat__V1__Request *r =
        (Mqchat__V1__Request *)decode(&mqchat__v1__request__descriptor, buf, len);
    if (!r) {
        fail(err, EC(MALFORMED), "payload is not a Request");
        return NULL;
    }
    if (!mqc_id_valid(MQC_ID_CLIENT, r->request_id)) {
        fail(err, EC(INVALID_ARGUMENT), "request_id must be 1..128 of [A-Za-z0-9._:-]");
        return r;
    }
    switch (r->body_case) {
    case MQCHAT__V1__REQUEST__BODY_SYNC:
        if (r->sync->positions_after[0] && !mqc_id_valid(MQC_ID_CONV, r->sync->positions_after))
            fail(err, EC(INVALID_ARGUMENT), "positions_after is not a conversation id");
        break;
    case MQCHAT__V1__REQUEST__BODY_CURSOR_ACK:
        break;
    case MQCHAT__V1__REQUEST__BODY_PULL:
        check_conv(r->pull->conversation_id, err);
        break;
    case MQCHAT__V1__REQUEST__BODY_POSITION_ACK:
        check_conv(r->position_ack->conversation_id, err);
        break;
    case MQCHAT__V1__REQUEST__BODY_READ_STATE:
        if (check_conv(r->read_state->conversation_id, err))
            ;
        else if (r->read_state->seq == 0)
            fail(err, EC(INVALID_ARGUMENT), "seq must be at least 1");
        else if (r->read_state->after_user_id[0] &&
                 !mqc_id_valid(MQC_ID_USER, r->read_state->after_user_id))
            fail(err, EC(INVALID_ARGUMENT), "after_user_id is not a user id");
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_SETTINGS:
        if (!check_conv(r->group_settings->conversation_id, err) &&
            (r->group_settings->posting < 0 ||
             r->group_settings->posting > MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_ADMINS))
            fail(err, EC(INVALID_ARGUMENT), "posting must be EVERYONE or ADMINS");
        break;
    case MQCHAT__V1__REQUEST__BODY_HISTORY:
        check_conv(r->history->conversation_id, err);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_CREATE:
        if (strlen(r->group_create->title) > WIRE_MAX_TITLE)
            fail(err, EC(INVALID_ARGUMENT), "title is longer than %d bytes", WIRE_MAX_TITLE);
        else if (!mqc_utf8_valid(r->group_create->title, strlen(r->group_create->title)))
            fail(err, EC(INVALID_ARGUMENT), "title is not UTF-8");
        else if (r->group_create->n_member_ids > max_members)
            fail(err, max_members < WIRE_MAX_BATCH ? EC(GROUP_FULL) : EC(INVALID_ARGUMENT),
                 "more than %zu member_ids in one request", max_members);
        else if (r->group_create->posting < 0 ||
                 r->group_create->posting > MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_ADMINS)
            fail(err, EC(INVALID_ARGUMENT), "posting must be EVERYONE or ADMINS");
        for (size_t i = 0; !err->code && i < r->group_create->n_member_ids; i++)
            if (!mqc_id_valid(MQC_ID_USER, r->group_create->member_ids[i]))
                fail(err, EC(INVALID_ARGUMENT), "member_ids[%zu] is not a valid user id", i);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_ADD:
        if (!check_conv(r->group_add->conversation_id, err))
            check_users(r->group_add->user_ids, r->group_add->n_user_ids, max_members, err);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE:
        if (!check_conv(r->group_remove->conversation_id, err))
            check_users(r->group_remove->user_ids, r->group_remove->n_user_ids, max_members, err);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_LEAVE:
        check_conv(r->group_leave->conversation_id, err);
        break;
    case MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE:
        if (!check_conv(r->group_set_role->conversation_id, err) &&
            !check_users(r->group_set_role->user_ids, r->group_set_role->n_user_ids, max_members,
                         err) &&
            role_ok(r->group_set_role->role))
            fail(err, EC(INVALID_ARGUMENT), "role must be ROLE_MEMBER or ROLE_ADMIN");
        break;
    case MQCHAT__V1__REQUEST__BODY_LIST_MEMBERS:
        if (!check_conv(r->list_members->conversation_id, err) &&
            r->list_members->after_user_id[0] &&
            !mqc_id_valid(MQC_ID_USER, r->list_members->after_user_id))
            fail(err, EC(INVALID_ARGUMENT), "after_user_id is not a user id");
        break;
    case MQCHAT__V1__REQUEST__BODY_LIST_CONVERSATIONS:
        if (r->list_conversations->after_conversation_id[0] &&
            !mqc_id_valid(MQC_ID_CONV, r->list_conversations->after_conversation_id))
            fail(err, EC(INVALID_ARGUMENT), "after_conversation_id is not a conversation id");
        else if (r->list_conversations->order < 0 ||
                 r->list_conversations->order >
                     MQCHAT__V1__CONVERSATION_ORDER__CONVERSATION_ORDER_ACTIVITY)
            fail(err, EC(INVALID_ARGUMENT), "order must be ID or ACTIVITY");
        else if (r->list_conversations->after_activity_ms < 0)
            fail(err, EC(INVALID_ARGUMENT), "after_activity_ms must not be negative");
        break;
    case MQCHAT__V1__REQUEST__BODY_PRESENCE_WATCH:
        /* The per-device limit is the presence layer's (an option); this
         * bounds the work of checking the list at all. */
        if (r->presence_watch->n_user_ids > WIRE_MAX_WATCH)
            fail(err, EC(INVALID_ARGUMENT), "at most %d users may be watched", WIRE_MAX_WATCH);
        for (size_t i = 0; !err->code && i < r->presence_watch->n_user_ids; i++) {
            if (!mqc_id_valid(MQC_ID_USER, r->presence_watch->user_ids[i]))
                fail(err, EC(INVALID_ARGUMENT), "user_ids[%zu] is not a valid user id", i);
            for (size_t j = 0; !err->code && j < i; j++)
                if (strcmp(r->presence_watch->user_ids[i], r->presence_watch->user_ids[j]) == 0)
                    fail(err, EC(INVALID_ARGUMENT), "user_ids[%zu] is listed twice", i);
        }
        break;
    case MQCHAT__V1__REQUEST__BODY_PRESENCE_SETTINGS:
        if (r->presence_settings->visibility < 0 ||
            r->presence_settings->visibility >
                MQCHAT__V1__PRESENCE_VISIBILITY__PRESENCE_VISIBILITY_NOBODY)
            fail(err, EC(INVALID_ARGUMENT), "visibility must be EVERYONE, CONTACTS or NOBODY");
        break;
    case MQCHAT__V1__REQUEST__BODY_PUSH_REGISTER:
        check_push_token(r->push_register, err);
        break;
    case MQCHAT__V1__REQUEST__BODY_PUSH_UNREGISTER:
        break;
    default:
        fail(err, EC(UNSUPPORTED), "unknown or missing request type");
        break;
    }
    return r;
}

Mqchat__V1__Receipt *wire_receipt(const void *buf, size_t len, wire_err *err)
{
    memset(err, 0, sizeof(*err));
    if (len > WIRE_ENVELOPE_SLACK) {
        fail(err, EC(BODY_TOO_LARGE), "receipt of %zu bytes is over the limit", len);
        return NULL;
    }
    Mqchat__V1__Receipt *r =
        (Mqchat__V1__Receipt *)decode(&mqchat__v1__receipt__descriptor, buf, len);
    if (!r) {
        fail(err, EC(MALFORMED), "payload is not a Receipt");
        return NULL;
    }
    if (!check_conv(r->conversation_id, err)) {
        if (r->type != MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_DELIVERED &&
            r->type != MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ)
            fail(err, EC(INVALID_ARGUMENT), "type must be DELIVERED or READ");
        else if (r->seq == 0)
            fail(err, EC(INVALID_ARGUMENT), "seq must be at least 1");
    }
    if (err->code) {
        mqchat__v1__receipt__free_unpacked(r, NULL);
        return NULL;
    }
    return r;
}

Mqchat__V1__Typing *wire_typing(const void *buf, size_t len, wire_err *err)
{
    memset(err, 0, sizeof(*err));
    if (len > WIRE_TYPING_MAX) {
        fail(err, EC(BODY_TOO_LARGE), "typing of %zu bytes is over the limit", len);
        return NULL;
    }
    Mqchat__V1__Typing *t = (Mqchat__V1__Typing *)decode(&mqchat__v1__typing__descriptor, buf, len);
    if (!t) {
        fail(err, EC(MALFORMED), "payload is not a Typing");
        return NULL;
    }
    if (check_conv(t->conversation_id, err)) {
        mqchat__v1__typing__free_unpacked(t, NULL);
        return NULL;
    }
    return t;
}

void *wire_pack(const ProtobufCMessage *m, size_t *len, void *(*alloc)(size_t))
{
    size_t n = protobuf_c_message_get_packed_size(m);
    /* +1: the broker treats payloads as possibly NUL-terminated strings. */
    unsigned char *buf = alloc(n + 1);
    if (!buf) return NULL;
    *len = protobuf_c_message_pack(m, buf);
    buf[*len] = 0;
    return buf;
}
