/* fuzz_wire — libFuzzer target for everything a device controls before
 * the store sees it: the protobuf decoders and validators of wire.c
 * (wire_send, wire_request, wire_receipt, wire_typing) and, on the same
 * input read as a C string, the topic and subscription-filter rules of
 * topics.c and the conversation-id parsers of wire.c.
 *
 * Besides "no crash, no leak, no UB", it checks invariants and abort()s
 * when one breaks, so a logic bug is a finding too:
 *   - a decoder's error is a known code with a NUL-terminated message, and
 *     a returned-and-valid message really satisfies the documented rules;
 *   - a decoded message holds nothing that cannot be re-packed and read
 *     back (an unknown field numbered 0, see has_field0); validating is a
 *     function of the decoded message: re-packing it and decoding again
 *     gives the same error code;
 *   - a parsed topic rebuilds to the same string; a wildcard-free filter
 *     touches the prefix exactly when topic_parse says it is under it;
 *     an allowed filter touches the prefix;
 *   - a "d:" conversation id splits into two ordered user ids and rebuilds.
 *
 * Built for fuzzing by tests/fuzz/CMakeLists.txt (MQCHAT_FUZZ=ON, clang)
 * and, in every build, into fuzz_replay_wire (tests/fuzz/replay.cmake),
 * which replays the seed and regression corpus through this function. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topics.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wire: invariant broken at %s:%d: %s\n", __FILE__, __LINE__,      \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The error is either "none" (code 0, empty message) or a known code with
 * a non-empty, NUL-terminated message. */
static void check_err(const wire_err *e)
{
    CHECK(memchr(e->msg, '\0', sizeof(e->msg)) != NULL);
    if (e->code == 0) {
        CHECK(e->msg[0] == '\0');
    } else {
        CHECK(e->code >= EC(MALFORMED) && e->code <= EC(NOT_FOUND));
        CHECK(e->msg[0] != '\0');
    }
}

/* 1 if m, or a message inside it, kept an unknown field numbered 0.
 * protobuf-c accepts field 0 when its tag is encoded overlong (0x81 0x00:
 * field 0, wire type 1) but writes it back as 0x01, which no protobuf
 * parser (protobuf-c included) reads: a decoder that lets it through lets
 * a device make the server store or relay bytes nobody can decode. Field
 * 0 is not protobuf, so such a payload is MALFORMED. */
static int has_field0(const ProtobufCMessage *m, int depth)
{
    if (!m || depth > 32) return 0;
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
                if (has_field0(v[j], depth + 1)) return 1;
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        if (has_field0(*(ProtobufCMessage *const *)(base + f->offset), depth + 1)) return 1;
    }
    return 0;
}

/* Re-pack m; NULL if it would not fit the decoder's envelope limit (a
 * non-canonical varint can grow when re-encoded). */
static uint8_t *repack(const ProtobufCMessage *m, size_t limit, size_t *len)
{
    uint8_t *buf = wire_pack(m, len, malloc);
    CHECK(buf != NULL);
    CHECK(buf[*len] == 0);
    if (*len > limit) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void fuzz_send(const uint8_t *data, size_t size, size_t max_body)
{
    wire_err err, err2;
    Mqchat__V1__SendRequest *r = wire_send(data, size, max_body, &err);
    check_err(&err);
    if (!r) {
        CHECK(err.code == EC(MALFORMED) || err.code == EC(BODY_TOO_LARGE));
        return;
    }
    CHECK(r->client_msg_id && r->conversation_id && r->content_type);
    CHECK(!has_field0(&r->base, 0));
    if (err.code == 0) {
        size_t body = r->body.len;
        CHECK(mqc_id_valid(MQC_ID_CLIENT, r->client_msg_id));
        CHECK(mqc_id_valid(MQC_ID_CONV, r->conversation_id));
        CHECK(strlen(r->content_type) <= WIRE_MAX_CONTENT_TYPE);
        CHECK(r->n_media <= WIRE_MAX_MEDIA);
        for (size_t i = 0; i < r->n_media; i++) {
            CHECK(r->media[i]->sha256.len == 0 || r->media[i]->sha256.len == 32);
            body += r->media[i]->thumbnail.len;
        }
        CHECK(body <= max_body);
        /* Edits and deletes: one target at most; a delete carries nothing. */
        CHECK(!(r->edit_seq && r->delete_seq));
        CHECK(!r->delete_seq || (!r->body.len && !r->n_media && !r->content_type[0]));
        CHECK(!(r->edit_seq || r->delete_seq) || !r->reply_to_seq);
    }
    size_t len;
    uint8_t *buf = repack(&r->base, max_body + WIRE_ENVELOPE_SLACK, &len);
    if (buf) {
        Mqchat__V1__SendRequest *r2 = wire_send(buf, len, max_body, &err2);
        CHECK(r2 != NULL);
        CHECK(err2.code == err.code);
        CHECK(strcmp(r2->client_msg_id, r->client_msg_id) == 0);
        mqchat__v1__send_request__free_unpacked(r2, NULL);
        free(buf);
    }
    mqchat__v1__send_request__free_unpacked(r, NULL);
}

static void fuzz_request(const uint8_t *data, size_t size, size_t max_body, size_t max_members)
{
    wire_err err, err2;
    Mqchat__V1__Request *r = wire_request(data, size, max_body, max_members, &err);
    check_err(&err);
    if (!r) {
        CHECK(err.code == EC(MALFORMED) || err.code == EC(BODY_TOO_LARGE));
        return;
    }
    CHECK(r->request_id != NULL);
    CHECK(!has_field0(&r->base, 0));
    size_t batch = max_members < WIRE_MAX_BATCH ? max_members : WIRE_MAX_BATCH;
    if (err.code == 0) {
        CHECK(mqc_id_valid(MQC_ID_CLIENT, r->request_id));
        switch (r->body_case) {
        case MQCHAT__V1__REQUEST__BODY_SYNC:
        case MQCHAT__V1__REQUEST__BODY_CURSOR_ACK:
            break;
        case MQCHAT__V1__REQUEST__BODY_HISTORY:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->history->conversation_id));
            break;
        case MQCHAT__V1__REQUEST__BODY_GROUP_CREATE:
            CHECK(strlen(r->group_create->title) <= WIRE_MAX_TITLE);
            CHECK(r->group_create->n_member_ids <= batch);
            for (size_t i = 0; i < r->group_create->n_member_ids; i++)
                CHECK(mqc_id_valid(MQC_ID_USER, r->group_create->member_ids[i]));
            break;
        case MQCHAT__V1__REQUEST__BODY_GROUP_ADD:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->group_add->conversation_id));
            CHECK(r->group_add->n_user_ids >= 1 && r->group_add->n_user_ids <= batch);
            for (size_t i = 0; i < r->group_add->n_user_ids; i++)
                CHECK(mqc_id_valid(MQC_ID_USER, r->group_add->user_ids[i]));
            break;
        case MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->group_remove->conversation_id));
            CHECK(r->group_remove->n_user_ids >= 1 && r->group_remove->n_user_ids <= batch);
            for (size_t i = 0; i < r->group_remove->n_user_ids; i++)
                CHECK(mqc_id_valid(MQC_ID_USER, r->group_remove->user_ids[i]));
            break;
        case MQCHAT__V1__REQUEST__BODY_GROUP_LEAVE:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->group_leave->conversation_id));
            break;
        case MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->group_set_role->conversation_id));
            CHECK(r->group_set_role->role == MQCHAT__V1__ROLE__ROLE_MEMBER ||
                  r->group_set_role->role == MQCHAT__V1__ROLE__ROLE_ADMIN);
            CHECK(r->group_set_role->n_user_ids >= 1);
            for (size_t i = 0; i < r->group_set_role->n_user_ids; i++)
                CHECK(mqc_id_valid(MQC_ID_USER, r->group_set_role->user_ids[i]));
            break;
        case MQCHAT__V1__REQUEST__BODY_LIST_MEMBERS:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->list_members->conversation_id));
            break;
        case MQCHAT__V1__REQUEST__BODY_LIST_CONVERSATIONS:
            CHECK(r->list_conversations->after_conversation_id[0] == '\0' ||
                  mqc_id_valid(MQC_ID_CONV, r->list_conversations->after_conversation_id));
            break;
        case MQCHAT__V1__REQUEST__BODY_PRESENCE_WATCH:
            CHECK(r->presence_watch->n_user_ids <= WIRE_MAX_WATCH);
            for (size_t i = 0; i < r->presence_watch->n_user_ids; i++) {
                CHECK(mqc_id_valid(MQC_ID_USER, r->presence_watch->user_ids[i]));
                for (size_t j = 0; j < i; j++)
                    CHECK(strcmp(r->presence_watch->user_ids[i], r->presence_watch->user_ids[j]));
            }
            break;
        case MQCHAT__V1__REQUEST__BODY_PRESENCE_SETTINGS:
            CHECK(r->presence_settings->visibility >= 0 &&
                  r->presence_settings->visibility <=
                      MQCHAT__V1__PRESENCE_VISIBILITY__PRESENCE_VISIBILITY_NOBODY);
            break;
        case MQCHAT__V1__REQUEST__BODY_PULL:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->pull->conversation_id));
            break;
        case MQCHAT__V1__REQUEST__BODY_POSITION_ACK:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->position_ack->conversation_id));
            break;
        case MQCHAT__V1__REQUEST__BODY_READ_STATE:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->read_state->conversation_id));
            CHECK(r->read_state->seq >= 1);
            break;
        case MQCHAT__V1__REQUEST__BODY_GROUP_SETTINGS:
            CHECK(mqc_id_valid(MQC_ID_CONV, r->group_settings->conversation_id));
            CHECK(r->group_settings->posting >= 0 &&
                  r->group_settings->posting <= MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_ADMINS);
            break;
        case MQCHAT__V1__REQUEST__BODY_PUSH_REGISTER: {
            const Mqchat__V1__PushTokenRegister *p = r->push_register;
            size_t n = strlen(p->token);
            CHECK(p->platform >= MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_APNS &&
                  p->platform <= MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_FCM);
            CHECK(n >= 1 && n <= WIRE_MAX_PUSH_TOKEN && strlen(p->app_id) <= WIRE_MAX_APP_ID);
            if (p->platform != MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_FCM)
                CHECK(n >= 64 && n % 2 == 0 && strspn(p->token, "0123456789abcdefABCDEF") == n);
            break;
        }
        case MQCHAT__V1__REQUEST__BODY_PUSH_UNREGISTER:
            break;
        default:
            /* unknown or missing: never "valid" */
            CHECK(0);
        }
    }
    size_t len;
    uint8_t *buf = repack(&r->base, max_body + WIRE_ENVELOPE_SLACK, &len);
    if (buf) {
        Mqchat__V1__Request *r2 = wire_request(buf, len, max_body, max_members, &err2);
        CHECK(r2 != NULL);
        CHECK(err2.code == err.code);
        CHECK(r2->body_case == r->body_case);
        mqchat__v1__request__free_unpacked(r2, NULL);
        free(buf);
    }
    mqchat__v1__request__free_unpacked(r, NULL);
}

static void fuzz_receipt(const uint8_t *data, size_t size)
{
    wire_err err, err2;
    Mqchat__V1__Receipt *r = wire_receipt(data, size, &err);
    check_err(&err);
    CHECK((r == NULL) == (err.code != 0));
    if (!r) return;
    CHECK(!has_field0(&r->base, 0));
    CHECK(mqc_id_valid(MQC_ID_CONV, r->conversation_id));
    CHECK(r->type == MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_DELIVERED ||
          r->type == MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ);
    CHECK(r->seq >= 1);
    size_t len;
    uint8_t *buf = repack(&r->base, WIRE_ENVELOPE_SLACK, &len);
    if (buf) {
        Mqchat__V1__Receipt *r2 = wire_receipt(buf, len, &err2);
        CHECK(r2 != NULL && r2->seq == r->seq && r2->type == r->type);
        mqchat__v1__receipt__free_unpacked(r2, NULL);
        free(buf);
    }
    mqchat__v1__receipt__free_unpacked(r, NULL);
}

static void fuzz_typing(const uint8_t *data, size_t size)
{
    wire_err err, err2;
    Mqchat__V1__Typing *t = wire_typing(data, size, &err);
    check_err(&err);
    CHECK((t == NULL) == (err.code != 0));
    if (!t) return;
    CHECK(!has_field0(&t->base, 0));
    CHECK(mqc_id_valid(MQC_ID_CONV, t->conversation_id));
    size_t len;
    uint8_t *buf = repack(&t->base, WIRE_TYPING_MAX, &len);
    if (buf) {
        Mqchat__V1__Typing *t2 = wire_typing(buf, len, &err2);
        CHECK(t2 != NULL && strcmp(t2->conversation_id, t->conversation_id) == 0);
        mqchat__v1__typing__free_unpacked(t2, NULL);
        free(buf);
    }
    mqchat__v1__typing__free_unpacked(t, NULL);
}

static int has_wildcard(const char *s)
{
    return strchr(s, '+') != NULL || strchr(s, '#') != NULL;
}

static const char *leaf_name(topic_leaf l)
{
    switch (l) {
    case LEAF_SEND:
        return "send";
    case LEAF_REQ:
        return "req";
    case LEAF_RECEIPT:
        return "receipt";
    case LEAF_TYPING:
        return "typing";
    case LEAF_ACK:
        return "ack";
    case LEAF_RESP:
        return "resp";
    default:
        return NULL;
    }
}

static void fuzz_topic(const char *prefix, const char *s)
{
    topic_info ti;
    /* Room for any topic the input can hold, so rebuilding never fails
     * for lack of space (an unknown leaf may be most of the input). */
    static char buf[1 << 17];
    topic_parse(prefix, s, &ti);
    CHECK(ti.kind >= TOPIC_OUTSIDE && ti.kind <= TOPIC_INVALID);
    CHECK(memchr(ti.user, '\0', sizeof(ti.user)) && memchr(ti.device, '\0', sizeof(ti.device)));
    int touches = filter_touches_prefix(prefix, s);
    int allowed = filter_allowed(prefix, s, "alice", "phone");
    CHECK(touches == 0 || touches == 1);
    CHECK(!allowed || touches);
    if (!has_wildcard(s) && strncmp(s, "$share/", 7) != 0)
        CHECK(touches == (ti.kind != TOPIC_OUTSIDE));

    if (strlen(s) >= sizeof(buf) / 2) return; /* too long to rebuild here */
    switch (ti.kind) {
    case TOPIC_OUTSIDE:
        CHECK(ti.leaf == LEAF_NONE && !ti.user[0] && !ti.device[0]);
        break;
    case TOPIC_INBOX:
        CHECK(ti.leaf == LEAF_NONE && mqc_id_valid(MQC_ID_USER, ti.user) && !ti.device[0]);
        CHECK(topic_inbox(buf, sizeof(buf), prefix, ti.user) == 0 && strcmp(buf, s) == 0);
        /* A user may subscribe to its own inbox. */
        CHECK(filter_allowed(prefix, s, ti.user, "phone"));
        break;
    case TOPIC_DEVICE: {
        CHECK(mqc_id_valid(MQC_ID_USER, ti.user) && mqc_id_valid(MQC_ID_USER, ti.device));
        CHECK(ti.leaf != LEAF_NONE);
        const char *leaf = leaf_name(ti.leaf);
        if (!leaf) {
            /* An unknown leaf is everything below the device level, which
             * may hold more levels, even empty ones (".../phone//ack"). */
            CHECK(ti.leaf == LEAF_UNKNOWN);
            CHECK(topic_device(buf, sizeof(buf), prefix, ti.user, ti.device, "") == 0);
            CHECK(strncmp(buf, s, strlen(buf)) == 0);
            leaf = s + strlen(buf);
        }
        CHECK(topic_device(buf, sizeof(buf), prefix, ti.user, ti.device, leaf) == 0);
        CHECK(strcmp(buf, s) == 0);
        /* Of its own device topics, a device may subscribe to ack and resp. */
        CHECK(filter_allowed(prefix, s, ti.user, ti.device) ==
              (ti.leaf == LEAF_ACK || ti.leaf == LEAF_RESP));
        break;
    }
    case TOPIC_INVALID:
        CHECK(ti.leaf == LEAF_NONE);
        break;
    }
}

static void fuzz_ids(const char *s)
{
    char a[MQC_ID_BUF], b[MQC_ID_BUF], buf[300];
    int conv = mqc_id_valid(MQC_ID_CONV, s);
    int id = mqc_id_valid(MQC_ID_CLIENT, s);
    int user = mqc_id_valid(MQC_ID_USER, s);
    size_t n = strlen(s);
    CHECK(!user || id);
    CHECK(!id || (n >= 1 && n <= 128));
    /* Every kind is a store key; users and devices share one syntax. */
    CHECK(!conv || mqc_id_valid(MQC_ID_KEY, s));
    CHECK(!id || mqc_id_valid(MQC_ID_KEY, s));
    CHECK(user == mqc_id_valid(MQC_ID_DEVICE, s));
    if (mqc_conv_direct(s, a, b) == 0) {
        /* A well-formed 1:1 id is a conversation id if it fits a store key
         * (two long user ids can make it longer than MQC_ID_MAX). */
        CHECK(conv == (n <= MQC_ID_MAX));
        CHECK(mqc_id_valid(MQC_ID_USER, a) && mqc_id_valid(MQC_ID_USER, b) && strcmp(a, b) <= 0);
        snprintf(buf, sizeof(buf), "d:%s:%s", a, b);
        CHECK(strcmp(buf, s) == 0);
    } else {
        CHECK(!conv || strncmp(s, "g:", 2) == 0);
    }
    if (conv && s[0] == 'g') CHECK(n >= 3 && n <= 66);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t bodies[] = {0, 64, 65536};
    static const struct {
        size_t max_body, max_members;
    } reqs[] = {{65536, 256}, {16, 2}, {8 << 20, 10000}};
    static const char *const prefixes[] = {"mqchat/v1", "mqchat", "a/b/c"};

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        fuzz_send(data, size, bodies[i]);
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
        fuzz_request(data, size, reqs[i].max_body, reqs[i].max_members);
    fuzz_receipt(data, size);
    fuzz_typing(data, size);

    /* The same bytes as a topic, filter or id (up to the first NUL). */
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        fuzz_topic(prefixes[i], s);
    fuzz_ids(s);
    free(s);
    return 0;
}
