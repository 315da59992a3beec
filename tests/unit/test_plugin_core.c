/*
 * test_plugin_core.c - unit tests for the plugin's broker-independent core
 * (cmocka): plugin/src/topics.c (chat namespace, subscription filters),
 * plugin/src/wire.c (decoding and validating device payloads) and
 * plugin/src/config.c (plugin_opt_* parsing).
 *
 * Payloads are built with protobuf-c from the generated mqchat.pb-c.h and
 * packed with wire_pack, so the decoders see exactly what a device sends.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "config.h"
#include "jwt.h"
#include "topics.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#define P "mqchat/v1"

/* ------------------------------------------------------------------ */
/* helpers                                                             */

/* n copies of c, NUL-terminated, into buf (which holds at least n+1). */
static char *fill(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

static char *fmt(char *buf, size_t len, const char *f, const char *a)
{
    int n = snprintf(buf, len, f, a);
    assert_true(n > 0 && (size_t)n < len);
    return buf;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    uint8_t *buf = wire_pack(m, len, malloc);
    assert_non_null(buf);
    assert_int_equal(buf[*len], 0);
    return buf;
}

static void check_err(const wire_err *e)
{
    assert_non_null(memchr(e->msg, '\0', sizeof(e->msg)));
    if (e->code)
        assert_true(e->msg[0] != '\0');
    else
        assert_string_equal(e->msg, "");
}

/* ------------------------------------------------------------------ */
/* topics: topic_parse                                                 */

static void expect_topic(const char *prefix, const char *topic, topic_kind kind, topic_leaf leaf,
                         const char *user, const char *device)
{
    topic_info ti;
    memset(&ti, 0x5a, sizeof(ti));
    topic_parse(prefix, topic, &ti);
    if (ti.kind != kind) fail_msg("topic '%s': kind %d, expected %d", topic, ti.kind, kind);
    if (ti.leaf != leaf) fail_msg("topic '%s': leaf %d, expected %d", topic, ti.leaf, leaf);
    if (user) assert_string_equal(ti.user, user);
    if (device) assert_string_equal(ti.device, device);
}

static void test_topic_inbox(void **state)
{
    (void)state;
    expect_topic(P, P "/u/alice/inbox", TOPIC_INBOX, LEAF_NONE, "alice", "");
    expect_topic(P, P "/u/A.b_c-9/inbox", TOPIC_INBOX, LEAF_NONE, "A.b_c-9", "");
    /* Level names of the namespace are fine as ids. */
    expect_topic(P, P "/u/inbox/inbox", TOPIC_INBOX, LEAF_NONE, "inbox", "");
    expect_topic(P, P "/u/d/inbox", TOPIC_INBOX, LEAF_NONE, "d", "");
}

static void test_topic_device_leaves(void **state)
{
    (void)state;
    static const struct {
        const char *leaf;
        topic_leaf want;
    } leaves[] = {{"send", LEAF_SEND},     {"req", LEAF_REQ},       {"receipt", LEAF_RECEIPT},
                  {"typing", LEAF_TYPING}, {"ack", LEAF_ACK},       {"resp", LEAF_RESP},
                  {"inbox", LEAF_UNKNOWN}, {"SEND", LEAF_UNKNOWN},  {"sendx", LEAF_UNKNOWN},
                  {"sen", LEAF_UNKNOWN},   {"x", LEAF_UNKNOWN},     {"acks", LEAF_UNKNOWN},
                  {"$send", LEAF_UNKNOWN}, {"resp ", LEAF_UNKNOWN}, {"re:q", LEAF_UNKNOWN}};
    char t[256];
    for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
        fmt(t, sizeof(t), P "/u/alice/d/phone/%s", leaves[i].leaf);
        expect_topic(P, t, TOPIC_DEVICE, leaves[i].want, "alice", "phone");
    }
    expect_topic(P, P "/u/d/d/d/send", TOPIC_DEVICE, LEAF_SEND, "d", "d");
    expect_topic(P, P "/u/u/d/inbox/ack", TOPIC_DEVICE, LEAF_ACK, "u", "inbox");
}

static void test_topic_outside(void **state)
{
    (void)state;
    static const char *const outside[] = {"other/x",
                                          "other",
                                          "",
                                          "mqchat",
                                          "mqchat/",
                                          "mqchat/v",
                                          "mqchat/v1x",
                                          "mqchat/v1x/u/alice/inbox",
                                          "mqchat/v10/u/alice/inbox",
                                          "mqchat/v2/u/alice/inbox",
                                          "Mqchat/v1/u/alice/inbox",
                                          "/mqchat/v1/u/alice/inbox",
                                          "$SYS/broker/uptime",
                                          "$share/g/mqchat/v1/u/alice/inbox",
                                          "x/mqchat/v1/u/alice/inbox",
                                          "#",
                                          "+/v1/u/alice/inbox"};
    for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++)
        expect_topic(P, outside[i], TOPIC_OUTSIDE, LEAF_NONE, "", "");
}

static void test_topic_invalid(void **state)
{
    /* Deeper than a leaf under one's own device: an unknown leaf of that
     * device (answered BAD_TOPIC), not an invalid or foreign topic. */
    expect_topic(P, P "/u/alice/d/phone/send/", TOPIC_DEVICE, LEAF_UNKNOWN, "alice", "phone");
    expect_topic(P, P "/u/alice/d/phone/send/x", TOPIC_DEVICE, LEAF_UNKNOWN, "alice", "phone");

    (void)state;
    static const char *const invalid[] = {
        P,
        P "/",
        P "/u",
        P "/u/",
        P "/u//inbox",
        P "/u/alice",
        P "/u/alice/",
        P "/u/alice/inbox/",
        P "/u/alice/inbox/x",
        P "/u/alice/inboxx",
        P "/u/alice/d",
        P "/u/alice/d/",
        P "/u/alice/d/phone",
        P "/u/alice/d/phone/",
        P "/u/alice/d//send",
        P "/u/alice/x/phone/send",
        P "/u/alice/D/phone/send",
        P "/x/alice/inbox",
        P "/U/alice/inbox",
        P "//u/alice/inbox",
        P "/inbox",
        P "/d/phone/send",
        /* wildcards anywhere under the prefix */
        P "/#",
        P "/+",
        P "/u/+/inbox",
        P "/u/#",
        P "/u/alice/d/+/send",
        P "/u/alice/d/phone/+",
        P "/u/alice/d/phone/#",
        P "/u/al+ce/inbox",
        P "/u/alice#/inbox",
        P "/u/alice/d/phone/se#nd",
        P "/u/alice/d/ph+ne/ack",
        /* bad id characters */
        P "/u/al:ice/inbox",
        P "/u/al ice/inbox",
        P "/u/al$ice/inbox",
        P "/u/al@ice/inbox",
        P "/u/\xc3\xa9t\xc3\xa9/inbox",
        P "/u/alice/d/ph:one/send",
        P "/u/alice/d/ph\tone/send",
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        expect_topic(P, invalid[i], TOPIC_INVALID, LEAF_NONE, NULL, NULL);
    /* A rejected device topic does not leave a device id behind. */
    topic_info ti;
    topic_parse(P, P "/u/alice/d/phone/", &ti);
    assert_string_equal(ti.device, "");
}

static void test_topic_id_lengths(void **state)
{
    (void)state;
    char id128[129], id129[130], t[400];
    fill(id128, 'a', 128);
    fill(id129, 'b', 129);

    fmt(t, sizeof(t), P "/u/%s/inbox", id128);
    expect_topic(P, t, TOPIC_INBOX, LEAF_NONE, id128, "");
    fmt(t, sizeof(t), P "/u/%s/inbox", id129);
    expect_topic(P, t, TOPIC_INVALID, LEAF_NONE, NULL, NULL);

    fmt(t, sizeof(t), P "/u/x/d/%s/send", id128);
    expect_topic(P, t, TOPIC_DEVICE, LEAF_SEND, "x", id128);
    fmt(t, sizeof(t), P "/u/x/d/%s/send", id129);
    expect_topic(P, t, TOPIC_INVALID, LEAF_NONE, NULL, NULL);

    fmt(t, sizeof(t), P "/u/%s/d/y/ack", id128);
    expect_topic(P, t, TOPIC_DEVICE, LEAF_ACK, id128, "y");
    fmt(t, sizeof(t), P "/u/%s/d/y/ack", id129);
    expect_topic(P, t, TOPIC_INVALID, LEAF_NONE, NULL, NULL);
}

static void test_topic_other_prefixes(void **state)
{
    (void)state;
    expect_topic("chat", "chat/u/alice/inbox", TOPIC_INBOX, LEAF_NONE, "alice", "");
    expect_topic("chat", "chat/u/alice/d/p/resp", TOPIC_DEVICE, LEAF_RESP, "alice", "p");
    expect_topic("chat", P "/u/alice/inbox", TOPIC_OUTSIDE, LEAF_NONE, "", "");
    expect_topic("chat", "chatter/u/alice/inbox", TOPIC_OUTSIDE, LEAF_NONE, "", "");
    expect_topic("chat", "chat", TOPIC_INVALID, LEAF_NONE, NULL, NULL);
    expect_topic("a/b/c", "a/b/c/u/x/d/y/typing", TOPIC_DEVICE, LEAF_TYPING, "x", "y");
    expect_topic("a/b/c", "a/b/u/x/inbox", TOPIC_OUTSIDE, LEAF_NONE, "", "");
    expect_topic("a/b/c", "a/b/c/d/u/x/inbox", TOPIC_INVALID, LEAF_NONE, NULL, NULL);
}

static void test_user_id_valid(void **state)
{
    (void)state;
    char buf[200];
    assert_true(mqc_id_valid(MQC_ID_USER, "a"));
    assert_true(mqc_id_valid(MQC_ID_USER, "Alice.B_c-0"));
    assert_true(mqc_id_valid(MQC_ID_USER, fill(buf, 'z', 128)));
    assert_false(mqc_id_valid(MQC_ID_USER, fill(buf, 'z', 129)));
    assert_false(mqc_id_valid(MQC_ID_USER, ""));
    assert_false(mqc_id_valid(MQC_ID_USER, "a:b"));
    assert_false(mqc_id_valid(MQC_ID_USER, "a/b"));
    assert_false(mqc_id_valid(MQC_ID_USER, "a+b"));
    assert_false(mqc_id_valid(MQC_ID_USER, "a#"));
    assert_false(mqc_id_valid(MQC_ID_USER, "a b"));
    assert_false(mqc_id_valid(MQC_ID_USER, "\xc3\xa9"));
    assert_false(mqc_id_valid(MQC_ID_USER, "$a"));
}

static void test_topic_build(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(topic_inbox(buf, sizeof(buf), P, "alice"), 0);
    assert_string_equal(buf, P "/u/alice/inbox");
    assert_int_equal(topic_device(buf, sizeof(buf), P, "alice", "phone", "ack"), 0);
    assert_string_equal(buf, P "/u/alice/d/phone/ack");
    /* Exactly fitting, and one byte short. */
    size_t n = strlen(P "/u/alice/inbox");
    assert_int_equal(topic_inbox(buf, n + 1, P, "alice"), 0);
    assert_int_equal(topic_inbox(buf, n, P, "alice"), -1);
    n = strlen(P "/u/alice/d/phone/resp");
    assert_int_equal(topic_device(buf, n + 1, P, "alice", "phone", "resp"), 0);
    assert_int_equal(topic_device(buf, n, P, "alice", "phone", "resp"), -1);
}

/* ------------------------------------------------------------------ */
/* topics: filters                                                     */

static void test_filter_touches_prefix(void **state)
{
    (void)state;
    static const struct {
        const char *filter;
        int want;
    } cases[] = {
        {"#", 1},
        {"+/v1/#", 1},
        {"mqchat/#", 1},
        {"mqchat/+/u/x/inbox", 1},
        {"$share/g/mqchat/v1/u/a/inbox", 1},
        {"$share/g/#", 1},
        {"$share/g/+/+", 1},
        {"mqchat/v1", 1},
        {"mqchat/v1/#", 1},
        {"mqchat/+", 1},
        {"+/+", 1},
        {"+/+/u", 1},
        {"+/#", 1},
        {"mqchat/v1/u/alice/inbox", 1},
        {"other/#", 0},
        {"mqchat", 0},
        {"+", 0},
        {"", 0},
        {"mqchat/", 0},
        {"mqchat/v", 0},
        {"mqchat/v1x/#", 0},
        {"mqchat/v2/#", 0},
        {"+/v2/#", 0},
        {"/mqchat/v1/#", 0},
        {"/#", 0},
        {"$SYS/#", 0},
        {"$share/g/other/#", 0},
        {"$share/g/mqchat", 0},
        {"$share/g", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (filter_touches_prefix(P, cases[i].filter) != cases[i].want)
            fail_msg("filter_touches_prefix('%s') != %d", cases[i].filter, cases[i].want);
    /* One-level and deeper prefixes. */
    assert_true(filter_touches_prefix("chat", "chat"));
    assert_true(filter_touches_prefix("chat", "+"));
    assert_true(filter_touches_prefix("chat", "chat/u/+/inbox"));
    assert_false(filter_touches_prefix("chat", "chats/#"));
    assert_true(filter_touches_prefix("a/b/c", "a/+/c/#"));
    assert_false(filter_touches_prefix("a/b/c", "a/b"));
    assert_false(filter_touches_prefix("a/b/c", "a/+/d/#"));
}

static void test_filter_allowed(void **state)
{
    (void)state;
    static const struct {
        const char *filter;
        int want;
    } cases[] = {
        {P "/u/alice/inbox", 1},
        {P "/u/alice/d/phone/ack", 1},
        {P "/u/alice/d/phone/resp", 1},
        {P "/u/alice/d/phone/+", 1},
        {P "/u/alice/d/phone/#", 1},
        /* others' topics */
        {P "/u/bob/inbox", 0},
        {P "/u/bob/d/phone/ack", 0},
        {P "/u/alice/d/tablet/ack", 0},
        {P "/u/alice/d/tablet/#", 0},
        {P "/u/alicex/inbox", 0},
        {P "/u/alic/inbox", 0},
        /* own upstream topics are not for subscribing */
        {P "/u/alice/d/phone/send", 0},
        {P "/u/alice/d/phone/req", 0},
        {P "/u/alice/d/phone/receipt", 0},
        {P "/u/alice/d/phone/typing", 0},
        /* wildcards that reach further than the device's own topics */
        {P "/u/+/inbox", 0},
        {P "/u/alice/#", 0},
        {P "/u/alice/+", 0},
        {P "/u/alice/d/+/ack", 0},
        {P "/u/alice/d/+/#", 0},
        {P "/u/alice/d/#", 0},
        {P "/#", 0},
        {P, 0},
        {"#", 0},
        {"+/v1/u/alice/inbox", 0},
        {"mqchat/+/u/alice/inbox", 0},
        /* shared subscriptions, even to the own inbox */
        {"$share/g/" P "/u/alice/inbox", 0},
        {"$share/g/" P "/u/alice/d/phone/#", 0},
        {"$share/alice/" P "/u/alice/inbox", 0},
        /* near misses */
        {P "/u/alice/inbox/", 0},
        {P "/u/alice/inbox/#", 0},
        {P "/u/alice/d/phone/ack/", 0},
        {"/" P "/u/alice/inbox", 0},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (filter_allowed(P, cases[i].filter, "alice", "phone") != cases[i].want)
            fail_msg("filter_allowed('%s') != %d", cases[i].filter, cases[i].want);
    /* The prefix is the configured one. */
    assert_true(filter_allowed("chat", "chat/u/alice/inbox", "alice", "phone"));
    assert_false(filter_allowed("chat", P "/u/alice/inbox", "alice", "phone"));
    /* Longest ids still fit. */
    char u[129], d[129], t[400];
    fill(u, 'u', 128);
    fill(d, 'd', 128);
    snprintf(t, sizeof(t), P "/u/%s/d/%s/#", u, d);
    assert_true(filter_allowed(P, t, u, d));
}

/* ------------------------------------------------------------------ */
/* wire: ids                                                           */

static const char *const bad_convs[] = {
    "d:bob:alice", /* not ordered */
    "d:alice",     "d:alice:",    "d::bob",      "d:",    "d",     "d:a:b:c", "d:al ice:bob",
    "d:alice:b/b", "d:alice:b+b", "D:alice:bob", "g:",    "g",     "g:bad!",  "g:a.b",
    "g:a-b",       "g:a_b",       "g:a:b",       "g: ab", "x:abc", "abc",     ":alice:bob",
};

static void test_conv_ids(void **state)
{
    (void)state;
    char buf[300], u124[129], u125[130], g[80];
    assert_true(mqc_id_valid(MQC_ID_CONV, "d:alice:bob"));
    assert_true(mqc_id_valid(MQC_ID_CONV, "d:A:a")); /* byte order: 'A' < 'a' */
    assert_true(mqc_id_valid(MQC_ID_CONV, "d:a.b:a_b"));
    assert_true(mqc_id_valid(MQC_ID_CONV, "g:abc123XYZ"));
    assert_true(mqc_id_valid(MQC_ID_CONV, "g:0"));
    assert_true(mqc_id_valid(MQC_ID_CONV, fmt(buf, sizeof(buf), "g:%s", fill(g, 'Z', 64))));
    assert_false(mqc_id_valid(MQC_ID_CONV, fmt(buf, sizeof(buf), "g:%s", fill(g, 'Z', 65))));
    for (size_t i = 0; i < sizeof(bad_convs) / sizeof(bad_convs[0]); i++)
        if (mqc_id_valid(MQC_ID_CONV, bad_convs[i])) fail_msg("'%s' accepted", bad_convs[i]);
    assert_false(mqc_id_valid(MQC_ID_CONV, ""));
    assert_false(mqc_id_valid(MQC_ID_CONV, NULL));

    /* A conversation id is at most 128 bytes: "d:a:" + 124 bytes fits,
     * 125 does not, even though each user id alone would be valid. */
    fill(u124, 'b', 124);
    fill(u125, 'b', 125);
    snprintf(buf, sizeof(buf), "d:a:%s", u124);
    assert_true(mqc_id_valid(MQC_ID_CONV, buf));
    snprintf(buf, sizeof(buf), "d:a:%s", u125);
    assert_false(mqc_id_valid(MQC_ID_CONV, buf));
    snprintf(buf, sizeof(buf), "d:%s:c", u124);
    assert_true(mqc_id_valid(MQC_ID_CONV, buf));
    snprintf(buf, sizeof(buf), "d:%s:c", u125);
    assert_false(mqc_id_valid(MQC_ID_CONV, buf));

    char a[129], b[129];
    assert_int_equal(mqc_conv_direct("d:alice:bob", a, b), 0);
    assert_string_equal(a, "alice");
    assert_string_equal(b, "bob");
    char a128[129];
    snprintf(buf, sizeof(buf), "d:%s:%s", fill(a128, 'a', 128), u124);
    assert_int_equal(mqc_conv_direct(buf, a, b), 0);
    assert_string_equal(a, a128);
    assert_string_equal(b, u124);
    assert_int_equal(mqc_conv_direct("d:bob:alice", a, b), -1);
    /* Notes to self: the same user twice is a 1:1 conversation of one. */
    assert_true(mqc_id_valid(MQC_ID_CONV, "d:alice:alice"));
    assert_int_equal(mqc_conv_direct("d:alice:alice", a, b), 0);
    assert_string_equal(a, "alice");
    assert_string_equal(b, "alice");
    assert_int_equal(mqc_conv_direct("d:alice", a, b), -1);
    assert_int_equal(mqc_conv_direct("g:abc", a, b), -1);
    assert_int_equal(mqc_conv_direct(NULL, a, b), -1);
}

static void test_id_valid(void **state)
{
    (void)state;
    char buf[200];
    assert_true(mqc_id_valid(MQC_ID_CLIENT, "m1"));
    assert_true(mqc_id_valid(MQC_ID_CLIENT, "a:b"));
    assert_true(mqc_id_valid(MQC_ID_CLIENT, "x.y_z-1:2"));
    assert_true(mqc_id_valid(MQC_ID_CLIENT, fill(buf, '7', 128)));
    assert_false(mqc_id_valid(MQC_ID_CLIENT, fill(buf, '7', 129)));
    assert_false(mqc_id_valid(MQC_ID_CLIENT, ""));
    assert_false(mqc_id_valid(MQC_ID_CLIENT, NULL));
    assert_false(mqc_id_valid(MQC_ID_CLIENT, "a b"));
    assert_false(mqc_id_valid(MQC_ID_CLIENT, "a/b"));
    assert_false(mqc_id_valid(MQC_ID_CLIENT, "a+b"));
    assert_false(mqc_id_valid(MQC_ID_CLIENT, "a#b"));
    assert_false(mqc_id_valid(MQC_ID_CLIENT, "a\nb"));
    assert_false(mqc_id_valid(MQC_ID_CLIENT, "\xc3\xa9"));
}

/* ------------------------------------------------------------------ */
/* wire: SendRequest                                                   */

static Mqchat__V1__SendRequest send_req(void)
{
    Mqchat__V1__SendRequest r = MQCHAT__V1__SEND_REQUEST__INIT;
    r.client_msg_id = "m-1";
    r.conversation_id = "d:alice:bob";
    r.body.data = (uint8_t *)"hello";
    r.body.len = 5;
    r.content_type = "text/plain";
    return r;
}

/* Packs, decodes with wire_send; the message must decode and name the
 * same client_msg_id. Returns the error code. */
static wire_code send_code(const Mqchat__V1__SendRequest *in, size_t max_body)
{
    size_t len;
    uint8_t *buf = pack(&in->base, &len);
    wire_err err;
    Mqchat__V1__SendRequest *out = wire_send(buf, len, max_body, &err);
    free(buf);
    check_err(&err);
    assert_non_null(out);
    assert_string_equal(out->client_msg_id, in->client_msg_id);
    assert_string_equal(out->conversation_id, in->conversation_id);
    mqchat__v1__send_request__free_unpacked(out, NULL);
    return err.code;
}

static void test_send_valid(void **state)
{
    (void)state;
    Mqchat__V1__SendRequest r = send_req();
    r.reply_to_seq = 9;
    size_t len;
    uint8_t *buf = pack(&r.base, &len);
    wire_err err;
    Mqchat__V1__SendRequest *out = wire_send(buf, len, 65536, &err);
    free(buf);
    assert_non_null(out);
    assert_int_equal(err.code, 0);
    check_err(&err);
    assert_string_equal(out->client_msg_id, "m-1");
    assert_string_equal(out->conversation_id, "d:alice:bob");
    assert_int_equal(out->body.len, 5);
    assert_memory_equal(out->body.data, "hello", 5);
    assert_string_equal(out->content_type, "text/plain");
    assert_int_equal(out->reply_to_seq, 9);
    mqchat__v1__send_request__free_unpacked(out, NULL);

    r.conversation_id = "g:team42";
    assert_int_equal(send_code(&r, 65536), 0);
    r.client_msg_id = "dev:1.2_3-4";
    assert_int_equal(send_code(&r, 65536), 0);
    /* Empty body and content type are fine (the body is opaque). */
    r.body.len = 0;
    r.body.data = NULL;
    r.content_type = "";
    assert_int_equal(send_code(&r, 65536), 0);
}

static void test_send_client_msg_id(void **state)
{
    (void)state;
    char id[200];
    Mqchat__V1__SendRequest r = send_req();
    r.client_msg_id = "";
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    r.client_msg_id = fill(id, 'm', 128);
    assert_int_equal(send_code(&r, 65536), 0);
    r.client_msg_id = fill(id, 'm', 129);
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    r.client_msg_id = "m 1";
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    r.client_msg_id = "m/1";
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    /* The id is checked before anything else. */
    r.client_msg_id = "";
    r.conversation_id = "d:bob:alice";
    assert_int_equal(send_code(&r, 1), EC(INVALID_ARGUMENT));
}

static void test_send_conversation(void **state)
{
    (void)state;
    char g[80], conv[100];
    Mqchat__V1__SendRequest r = send_req();
    r.conversation_id = "";
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    for (size_t i = 0; i < sizeof(bad_convs) / sizeof(bad_convs[0]); i++) {
        r.conversation_id = (char *)bad_convs[i];
        if (send_code(&r, 65536) != EC(INVALID_ARGUMENT))
            fail_msg("conversation '%s' not refused", bad_convs[i]);
    }
    r.conversation_id = fmt(conv, sizeof(conv), "g:%s", fill(g, '1', 64));
    assert_int_equal(send_code(&r, 65536), 0);
    r.conversation_id = fmt(conv, sizeof(conv), "g:%s", fill(g, '1', 65));
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
}

static void test_send_body_limit(void **state)
{
    (void)state;
    static uint8_t body[4096];
    Mqchat__V1__SendRequest r = send_req();
    r.body.data = body;
    r.body.len = 1000;
    assert_int_equal(send_code(&r, 1000), 0);
    assert_int_equal(send_code(&r, 999), EC(BODY_TOO_LARGE));
    r.body.len = 4096;
    assert_int_equal(send_code(&r, 4096), 0);
    assert_int_equal(send_code(&r, 4095), EC(BODY_TOO_LARGE));
}

static void test_send_thumbnails_count(void **state)
{
    (void)state;
    static uint8_t bytes[1000];
    Mqchat__V1__MediaRef m[2] = {MQCHAT__V1__MEDIA_REF__INIT, MQCHAT__V1__MEDIA_REF__INIT};
    Mqchat__V1__MediaRef *mp[2] = {&m[0], &m[1]};
    Mqchat__V1__SendRequest r = send_req();
    r.body.data = bytes;
    r.body.len = 500;
    r.media = mp;
    r.n_media = 1;
    m[0].thumbnail.data = bytes;
    m[0].thumbnail.len = 100;
    assert_int_equal(send_code(&r, 600), 0);
    assert_int_equal(send_code(&r, 599), EC(BODY_TOO_LARGE));
    /* Every thumbnail counts. */
    r.n_media = 2;
    m[1].thumbnail.data = bytes;
    m[1].thumbnail.len = 50;
    assert_int_equal(send_code(&r, 650), 0);
    assert_int_equal(send_code(&r, 649), EC(BODY_TOO_LARGE));
    /* Thumbnails alone can exceed the limit. */
    r.body.len = 0;
    m[0].thumbnail.len = 1000;
    m[1].thumbnail.len = 0;
    assert_int_equal(send_code(&r, 999), EC(BODY_TOO_LARGE));
}

static void test_send_content_type(void **state)
{
    (void)state;
    char ct[100];
    Mqchat__V1__SendRequest r = send_req();
    r.content_type = fill(ct, 't', 64);
    assert_int_equal(send_code(&r, 65536), 0);
    r.content_type = fill(ct, 't', 65);
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
}

static void test_send_media(void **state)
{
    (void)state;
    static uint8_t bytes[100];
    char big[2100];
    Mqchat__V1__MediaRef m[17];
    Mqchat__V1__MediaRef *mp[17];
    for (size_t i = 0; i < 17; i++) {
        Mqchat__V1__MediaRef init = MQCHAT__V1__MEDIA_REF__INIT;
        m[i] = init;
        m[i].url = "https://blobs.example/1";
        m[i].mime_type = "image/png";
        m[i].sha256.data = bytes;
        m[i].sha256.len = 32;
        mp[i] = &m[i];
    }
    Mqchat__V1__SendRequest r = send_req();
    r.media = mp;
    r.n_media = 16;
    assert_int_equal(send_code(&r, 65536), 0);
    r.n_media = 17;
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));

    r.n_media = 2;
    /* sha256: 32 bytes or absent */
    m[1].sha256.len = 0;
    assert_int_equal(send_code(&r, 65536), 0);
    m[1].sha256.len = 31;
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    m[1].sha256.len = 33;
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    m[1].sha256.len = 1;
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    m[1].sha256.len = 32;
    /* url up to 2048 bytes */
    m[1].url = fill(big, 'u', 2048);
    assert_int_equal(send_code(&r, 65536), 0);
    m[1].url = fill(big, 'u', 2049);
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    m[1].url = "x";
    /* mime_type up to 128 */
    m[1].mime_type = fill(big, 'm', 128);
    assert_int_equal(send_code(&r, 65536), 0);
    m[1].mime_type = fill(big, 'm', 129);
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
    m[1].mime_type = "";
    /* key up to 64 */
    m[1].key.data = bytes;
    m[1].key.len = 64;
    assert_int_equal(send_code(&r, 65536), 0);
    m[1].key.len = 65;
    assert_int_equal(send_code(&r, 65536), EC(INVALID_ARGUMENT));
}

static const uint8_t garbage[][6] = {
    {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, /* endless varint tag */
    {0x0a, 0x05, 'a', 'b', 0, 0},         /* field 1, length 5 past the end (len 4) */
    {0x08, 0x80, 0x80, 0, 0, 0},          /* truncated varint value (len 3) */
    {0x07, 0x00, 0, 0, 0, 0},             /* wire type 7 (len 2) */
    {0x00, 0x00, 0, 0, 0, 0},             /* field number 0 (len 2) */
};
static const size_t garbage_len[] = {6, 4, 3, 2, 2};

/* A decoder under test, its limits fixed by a wrapper below. */
typedef void *(*decoder)(const void *buf, size_t len, wire_err *err);

/* Every garbage payload is MALFORMED; a payload one byte over `limit` is
 * refused before decoding (BODY_TOO_LARGE); exactly `limit` bytes are
 * decoded, and zeros are not a protobuf (MALFORMED). */
static void check_garbage_and_limit(decoder dec, size_t limit)
{
    wire_err err;
    for (size_t i = 0; i < sizeof(garbage_len) / sizeof(garbage_len[0]); i++) {
        assert_null(dec(garbage[i], garbage_len[i], &err));
        if (err.code != EC(MALFORMED)) fail_msg("garbage %zu: code %d", i, err.code);
        check_err(&err);
    }
    uint8_t *big = calloc(1, limit + 1);
    assert_non_null(big);
    assert_null(dec(big, limit + 1, &err));
    assert_int_equal(err.code, EC(BODY_TOO_LARGE));
    check_err(&err);
    assert_null(dec(big, limit, &err));
    assert_int_equal(err.code, EC(MALFORMED));
    check_err(&err);
    free(big);
}

enum { TEST_MAX_BODY = 100 };

static void *dec_send(const void *buf, size_t len, wire_err *err)
{
    return wire_send(buf, len, TEST_MAX_BODY, err);
}

static void *dec_request(const void *buf, size_t len, wire_err *err)
{
    return wire_request(buf, len, TEST_MAX_BODY, 256, err);
}

static void *dec_receipt(const void *buf, size_t len, wire_err *err)
{
    return wire_receipt(buf, len, err);
}

static void *dec_typing(const void *buf, size_t len, wire_err *err)
{
    return wire_typing(buf, len, err);
}

static void test_send_garbage_and_size(void **state)
{
    (void)state;
    wire_err err;
    /* Empty payload: decodes, but has no client_msg_id. */
    Mqchat__V1__SendRequest *r = wire_send("", 0, 65536, &err);
    assert_non_null(r);
    assert_int_equal(err.code, EC(INVALID_ARGUMENT));
    mqchat__v1__send_request__free_unpacked(r, NULL);
    /* Over max_body + envelope slack: refused before decoding. */
    check_garbage_and_limit(dec_send, TEST_MAX_BODY + WIRE_ENVELOPE_SLACK);
}

/* ------------------------------------------------------------------ */
/* wire: Request                                                       */

static wire_code req_code(const Mqchat__V1__Request *in, size_t max_body, size_t max_members)
{
    size_t len;
    uint8_t *buf = pack(&in->base, &len);
    wire_err err;
    Mqchat__V1__Request *out = wire_request(buf, len, max_body, max_members, &err);
    free(buf);
    check_err(&err);
    assert_non_null(out);
    assert_string_equal(out->request_id, in->request_id);
    assert_int_equal(out->body_case, in->body_case);
    mqchat__v1__request__free_unpacked(out, NULL);
    return err.code;
}

static Mqchat__V1__Request request(void)
{
    Mqchat__V1__Request r = MQCHAT__V1__REQUEST__INIT;
    r.request_id = "r-1";
    return r;
}

static void test_request_id(void **state)
{
    (void)state;
    char id[200];
    Mqchat__V1__SyncRequest sync = MQCHAT__V1__SYNC_REQUEST__INIT;
    Mqchat__V1__Request r = request();
    r.body_case = MQCHAT__V1__REQUEST__BODY_SYNC;
    r.sync = &sync;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    r.request_id = "";
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    r.request_id = fill(id, 'r', 128);
    assert_int_equal(req_code(&r, 65536, 256), 0);
    r.request_id = fill(id, 'r', 129);
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    r.request_id = "r:1.x_y-Z";
    assert_int_equal(req_code(&r, 65536, 256), 0);
    r.request_id = "r/1";
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    r.request_id = "r 1";
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    /* Checked before the body: a bad id with an unknown body. */
    r.request_id = "";
    r.body_case = MQCHAT__V1__REQUEST__BODY__NOT_SET;
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
}

static void test_request_sync_cursor(void **state)
{
    (void)state;
    Mqchat__V1__SyncRequest sync = MQCHAT__V1__SYNC_REQUEST__INIT;
    Mqchat__V1__CursorAck ack = MQCHAT__V1__CURSOR_ACK__INIT;
    Mqchat__V1__Request r = request();
    r.body_case = MQCHAT__V1__REQUEST__BODY_SYNC;
    r.sync = &sync;
    sync.after_inbox_seq = 123456789012ULL;
    sync.limit = 100000;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    r.body_case = MQCHAT__V1__REQUEST__BODY_CURSOR_ACK;
    r.cursor_ack = &ack;
    ack.inbox_seq = 5;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    /* No body: nothing this server knows. */
    r.body_case = MQCHAT__V1__REQUEST__BODY__NOT_SET;
    assert_int_equal(req_code(&r, 65536, 256), EC(UNSUPPORTED));
}

/* Requests whose only checked field is a conversation id. */
static void test_request_conversation_only(void **state)
{
    (void)state;
    Mqchat__V1__HistoryRequest hist = MQCHAT__V1__HISTORY_REQUEST__INIT;
    Mqchat__V1__GroupLeave leave = MQCHAT__V1__GROUP_LEAVE__INIT;
    Mqchat__V1__ListMembers lm = MQCHAT__V1__LIST_MEMBERS__INIT;
    Mqchat__V1__Request r = request();
    struct {
        Mqchat__V1__Request__BodyCase body;
        char **conv;
    } kinds[] = {{MQCHAT__V1__REQUEST__BODY_HISTORY, &hist.conversation_id},
                 {MQCHAT__V1__REQUEST__BODY_GROUP_LEAVE, &leave.conversation_id},
                 {MQCHAT__V1__REQUEST__BODY_LIST_MEMBERS, &lm.conversation_id}};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        r.body_case = kinds[k].body;
        if (kinds[k].body == MQCHAT__V1__REQUEST__BODY_HISTORY) r.history = &hist;
        if (kinds[k].body == MQCHAT__V1__REQUEST__BODY_GROUP_LEAVE) r.group_leave = &leave;
        if (kinds[k].body == MQCHAT__V1__REQUEST__BODY_LIST_MEMBERS) r.list_members = &lm;
        *kinds[k].conv = "d:alice:bob";
        assert_int_equal(req_code(&r, 65536, 256), 0);
        *kinds[k].conv = "g:abc";
        assert_int_equal(req_code(&r, 65536, 256), 0);
        *kinds[k].conv = "";
        assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
        for (size_t i = 0; i < sizeof(bad_convs) / sizeof(bad_convs[0]); i++) {
            *kinds[k].conv = (char *)bad_convs[i];
            if (req_code(&r, 65536, 256) != EC(INVALID_ARGUMENT))
                fail_msg("request %d: conversation '%s' not refused", (int)kinds[k].body,
                         bad_convs[i]);
        }
    }
    hist.before_seq = 10;
    hist.limit = 100000;
    hist.conversation_id = "g:abc";
    r.body_case = MQCHAT__V1__REQUEST__BODY_HISTORY;
    r.history = &hist;
    assert_int_equal(req_code(&r, 65536, 256), 0);
}

static void test_request_group_create(void **state)
{
    (void)state;
    char title[200], id[200];
    char *members[6] = {"bob", "carol", "dave", "erin", "frank", "bob"};
    Mqchat__V1__GroupCreate gc = MQCHAT__V1__GROUP_CREATE__INIT;
    Mqchat__V1__Request r = request();
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
    r.group_create = &gc;
    /* Only the creator. */
    assert_int_equal(req_code(&r, 65536, 256), 0);
    gc.title = fill(title, 'T', 128);
    gc.member_ids = members;
    gc.n_member_ids = 5;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    gc.title = fill(title, 'T', 129);
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    /* UTF-8 only (the conversation list and JSON carry it): not a lone
     * continuation byte, an overlong, a surrogate. */
    static const char *const bad_titles[] = {"a\x80"
                                             "b",
                                             "\xc0\xaf", "\xed\xa0\x80", "\xff"};
    for (size_t i = 0; i < sizeof(bad_titles) / sizeof(bad_titles[0]); i++) {
        gc.title = (char *)bad_titles[i];
        assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    }
    gc.title = "\xc3\xa9quipe \xf0\x9f\x9a\x80"; /* "équipe 🚀" */
    assert_int_equal(req_code(&r, 65536, 256), 0);
    gc.title = "team";
    /* The member limit. */
    assert_int_equal(req_code(&r, 65536, 5), 0);
    assert_int_equal(req_code(&r, 65536, 4), EC(GROUP_FULL));
    /* Duplicates are the server's to merge, not refused here. */
    gc.n_member_ids = 6;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    /* Bad member ids. */
    static const char *const bad[] = {"", "a:b", "a b", "a/b", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        members[2] = (char *)bad[i];
        if (req_code(&r, 65536, 256) != EC(INVALID_ARGUMENT))
            fail_msg("member id '%s' not refused", bad[i]);
    }
    members[2] = fill(id, 'i', 128);
    assert_int_equal(req_code(&r, 65536, 256), 0);
    members[2] = fill(id, 'i', 129);
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
}

/* group_add, group_remove, group_set_role: a conversation and user ids. */
static void test_request_group_members(void **state)
{
    (void)state;
    char id[200];
    char *users[4] = {"bob", "carol", "dave", "erin"};
    Mqchat__V1__GroupAddMembers add = MQCHAT__V1__GROUP_ADD_MEMBERS__INIT;
    Mqchat__V1__GroupRemoveMembers rem = MQCHAT__V1__GROUP_REMOVE_MEMBERS__INIT;
    Mqchat__V1__GroupSetRole role = MQCHAT__V1__GROUP_SET_ROLE__INIT;
    role.role = MQCHAT__V1__ROLE__ROLE_ADMIN;
    struct {
        Mqchat__V1__Request__BodyCase body;
        char **conv;
        char ***ids;
        size_t *n;
    } kinds[] = {
        {MQCHAT__V1__REQUEST__BODY_GROUP_ADD, &add.conversation_id, &add.user_ids, &add.n_user_ids},
        {MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE, &rem.conversation_id, &rem.user_ids,
         &rem.n_user_ids},
        {MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE, &role.conversation_id, &role.user_ids,
         &role.n_user_ids},
    };
    Mqchat__V1__Request r = request();
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        r.body_case = kinds[k].body;
        if (kinds[k].body == MQCHAT__V1__REQUEST__BODY_GROUP_ADD) r.group_add = &add;
        if (kinds[k].body == MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE) r.group_remove = &rem;
        if (kinds[k].body == MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE) r.group_set_role = &role;
        *kinds[k].conv = "g:abc";
        *kinds[k].ids = users;
        *kinds[k].n = 4;
        assert_int_equal(req_code(&r, 65536, 256), 0);
        /* The wire layer does not know group from 1:1: rules/groups.c refuses. */
        *kinds[k].conv = "d:alice:bob";
        assert_int_equal(req_code(&r, 65536, 256), 0);
        /* conversation */
        *kinds[k].conv = "";
        assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
        *kinds[k].conv = "g:bad!";
        assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
        *kinds[k].conv = "d:bob:alice";
        assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
        *kinds[k].conv = "g:abc";
        /* user ids: present, within the limit, valid */
        *kinds[k].n = 0;
        assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
        *kinds[k].n = 4;
        assert_int_equal(req_code(&r, 65536, 4), 0);
        assert_int_equal(req_code(&r, 65536, 3), EC(GROUP_FULL));
        users[3] = "er:in";
        assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
        users[3] = "";
        assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
        users[3] = fill(id, 'e', 129);
        assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
        users[3] = fill(id, 'e', 128);
        assert_int_equal(req_code(&r, 65536, 256), 0);
        users[3] = "erin";
    }

    /* set_role: MEMBER or ADMIN only. */
    r.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE;
    r.group_set_role = &role;
    role.conversation_id = "g:abc";
    role.role = MQCHAT__V1__ROLE__ROLE_MEMBER;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    role.role = MQCHAT__V1__ROLE__ROLE_ADMIN;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    role.role = MQCHAT__V1__ROLE__ROLE_OWNER;
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    role.role = MQCHAT__V1__ROLE__ROLE_UNSPECIFIED;
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    role.role = (Mqchat__V1__Role)99;
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    role.role = (Mqchat__V1__Role)-1;
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
}

static void test_request_list_conversations(void **state)
{
    (void)state;
    Mqchat__V1__ListConversations lc = MQCHAT__V1__LIST_CONVERSATIONS__INIT;
    Mqchat__V1__Request r = request();
    r.body_case = MQCHAT__V1__REQUEST__BODY_LIST_CONVERSATIONS;
    r.list_conversations = &lc;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    lc.limit = 100000;
    lc.after_conversation_id = "d:alice:bob";
    assert_int_equal(req_code(&r, 65536, 256), 0);
    lc.after_conversation_id = "g:x";
    assert_int_equal(req_code(&r, 65536, 256), 0);
    for (size_t i = 0; i < sizeof(bad_convs) / sizeof(bad_convs[0]); i++) {
        lc.after_conversation_id = (char *)bad_convs[i];
        if (req_code(&r, 65536, 256) != EC(INVALID_ARGUMENT))
            fail_msg("after_conversation_id '%s' not refused", bad_convs[i]);
    }
}

static void test_request_unsupported(void **state)
{
    (void)state;
    char *ids[1] = {"bob"};
    Mqchat__V1__PresenceWatch pw = MQCHAT__V1__PRESENCE_WATCH__INIT;
    Mqchat__V1__PresenceSettings ps = MQCHAT__V1__PRESENCE_SETTINGS__INIT;
    Mqchat__V1__PushTokenRegister pr = MQCHAT__V1__PUSH_TOKEN_REGISTER__INIT;
    Mqchat__V1__PushTokenUnregister pu = MQCHAT__V1__PUSH_TOKEN_UNREGISTER__INIT;
    pw.user_ids = ids;
    pw.n_user_ids = 1;
    ps.hide_last_seen = 1;
    Mqchat__V1__Request r = request();
    /* Presence requests decode and validate (the presence layer, or its
     * absence, answers them). */
    r.body_case = MQCHAT__V1__REQUEST__BODY_PRESENCE_WATCH;
    r.presence_watch = &pw;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    char *bad[2] = {"bob", "no/slash"};
    pw.user_ids = bad;
    pw.n_user_ids = 2;
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    char *twice[2] = {"bob", "bob"};
    pw.user_ids = twice;
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    r.body_case = MQCHAT__V1__REQUEST__BODY_PRESENCE_SETTINGS;
    r.presence_settings = &ps;
    assert_int_equal(req_code(&r, 65536, 256), 0);
    ps.visibility = (Mqchat__V1__PresenceVisibility)9;
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    /* Push tokens: platform, and the token's syntax per platform. */
    r.body_case = MQCHAT__V1__REQUEST__BODY_PUSH_REGISTER;
    r.push_register = &pr;
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT)); /* no platform */
    pr.platform = MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_APNS;
    pr.token = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    assert_int_equal(req_code(&r, 65536, 256), 0);
    pr.token = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg";
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT)); /* not hex */
    pr.token = "0011";
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT)); /* too short */
    pr.platform = MQCHAT__V1__PUSH_PLATFORM__PUSH_PLATFORM_FCM;
    pr.token = "fcm:APA91b-x_y.z";
    pr.app_id = "com.example.app";
    assert_int_equal(req_code(&r, 65536, 256), 0);
    pr.token = "has space";
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    pr.token = "ok";
    pr.app_id = "bad/app";
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    pr.platform = (Mqchat__V1__PushPlatform)7;
    pr.app_id = "";
    assert_int_equal(req_code(&r, 65536, 256), EC(INVALID_ARGUMENT));
    r.body_case = MQCHAT__V1__REQUEST__BODY_PUSH_UNREGISTER;
    r.push_unregister = &pu;
    assert_int_equal(req_code(&r, 65536, 256), 0);

    /* A body field from a newer schema (tag 99) is skipped: no body. */
    static const uint8_t newer[] = {0x0a, 0x02, 'r', '1', 0x9a, 0x06, 0x00};
    wire_err err;
    Mqchat__V1__Request *out = wire_request(newer, sizeof(newer), 65536, 256, &err);
    assert_non_null(out);
    assert_string_equal(out->request_id, "r1");
    assert_int_equal(err.code, EC(UNSUPPORTED));
    mqchat__v1__request__free_unpacked(out, NULL);
}

static void test_request_garbage_and_size(void **state)
{
    (void)state;
    /* A request may carry a full batch of the longest user ids. */
    size_t batch = (size_t)WIRE_MAX_BATCH * (MQC_ID_MAX + 3);
    check_garbage_and_limit(dec_request,
                            (TEST_MAX_BODY > batch ? TEST_MAX_BODY : batch) + WIRE_ENVELOPE_SLACK);
}

/* ------------------------------------------------------------------ */
/* wire: Receipt, Typing                                               */

static wire_code receipt_code(const Mqchat__V1__Receipt *in)
{
    size_t len;
    uint8_t *buf = pack(&in->base, &len);
    wire_err err;
    Mqchat__V1__Receipt *out = wire_receipt(buf, len, &err);
    free(buf);
    check_err(&err);
    if (err.code) {
        assert_null(out);
        return err.code;
    }
    assert_non_null(out);
    assert_string_equal(out->conversation_id, in->conversation_id);
    assert_int_equal(out->type, in->type);
    assert_int_equal(out->seq, in->seq);
    mqchat__v1__receipt__free_unpacked(out, NULL);
    return 0;
}

static void test_receipt(void **state)
{
    (void)state;
    Mqchat__V1__Receipt r = MQCHAT__V1__RECEIPT__INIT;
    r.conversation_id = "d:alice:bob";
    r.type = MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ;
    r.seq = 1;
    assert_int_equal(receipt_code(&r), 0);
    r.type = MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_DELIVERED;
    r.seq = UINT64_MAX;
    r.conversation_id = "g:abc";
    assert_int_equal(receipt_code(&r), 0);
    r.seq = 0;
    assert_int_equal(receipt_code(&r), EC(INVALID_ARGUMENT));
    r.seq = 3;
    r.type = MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_UNSPECIFIED;
    assert_int_equal(receipt_code(&r), EC(INVALID_ARGUMENT));
    r.type = (Mqchat__V1__ReceiptType)3;
    assert_int_equal(receipt_code(&r), EC(INVALID_ARGUMENT));
    r.type = (Mqchat__V1__ReceiptType)-1;
    assert_int_equal(receipt_code(&r), EC(INVALID_ARGUMENT));
    r.type = MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ;
    r.conversation_id = "";
    assert_int_equal(receipt_code(&r), EC(INVALID_ARGUMENT));
    for (size_t i = 0; i < sizeof(bad_convs) / sizeof(bad_convs[0]); i++) {
        r.conversation_id = (char *)bad_convs[i];
        if (receipt_code(&r) != EC(INVALID_ARGUMENT))
            fail_msg("receipt conversation '%s' not refused", bad_convs[i]);
    }

    check_garbage_and_limit(dec_receipt, WIRE_ENVELOPE_SLACK);
}

static wire_code typing_code(const Mqchat__V1__Typing *in)
{
    size_t len;
    uint8_t *buf = pack(&in->base, &len);
    wire_err err;
    Mqchat__V1__Typing *out = wire_typing(buf, len, &err);
    free(buf);
    check_err(&err);
    if (err.code) {
        assert_null(out);
        return err.code;
    }
    assert_non_null(out);
    assert_string_equal(out->conversation_id, in->conversation_id);
    assert_int_equal(out->typing, in->typing);
    mqchat__v1__typing__free_unpacked(out, NULL);
    return 0;
}

static void test_typing(void **state)
{
    (void)state;
    Mqchat__V1__Typing t = MQCHAT__V1__TYPING__INIT;
    t.conversation_id = "d:alice:bob";
    t.typing = 1;
    assert_int_equal(typing_code(&t), 0);
    t.typing = 0;
    t.conversation_id = "g:abc";
    assert_int_equal(typing_code(&t), 0);
    /* A device-supplied user_id is tolerated (the server overwrites it). */
    t.user_id = "mallory";
    assert_int_equal(typing_code(&t), 0);
    t.conversation_id = "";
    assert_int_equal(typing_code(&t), EC(INVALID_ARGUMENT));
    for (size_t i = 0; i < sizeof(bad_convs) / sizeof(bad_convs[0]); i++) {
        t.conversation_id = (char *)bad_convs[i];
        if (typing_code(&t) != EC(INVALID_ARGUMENT))
            fail_msg("typing conversation '%s' not refused", bad_convs[i]);
    }

    check_garbage_and_limit(dec_typing, WIRE_TYPING_MAX);
}

static int alloc_calls;
static void *counting_alloc(size_t n)
{
    alloc_calls++;
    return malloc(n);
}
static void *failing_alloc(size_t n)
{
    (void)n;
    return NULL;
}

static void test_wire_pack(void **state)
{
    (void)state;
    Mqchat__V1__SendAck ack = MQCHAT__V1__SEND_ACK__INIT;
    ack.client_msg_id = "m-1";
    ack.seq = 7;
    size_t len = 0;
    alloc_calls = 0;
    uint8_t *buf = wire_pack(&ack.base, &len, counting_alloc);
    assert_non_null(buf);
    assert_int_equal(alloc_calls, 1);
    assert_int_equal(len, protobuf_c_message_get_packed_size(&ack.base));
    assert_int_equal(buf[len], 0);
    Mqchat__V1__SendAck *back = mqchat__v1__send_ack__unpack(NULL, len, buf);
    assert_non_null(back);
    assert_string_equal(back->client_msg_id, "m-1");
    assert_int_equal(back->seq, 7);
    mqchat__v1__send_ack__free_unpacked(back, NULL);
    free(buf);
    /* An empty message packs to zero bytes (plus the NUL). */
    Mqchat__V1__Ok ok = MQCHAT__V1__OK__INIT;
    buf = wire_pack(&ok.base, &len, malloc);
    assert_non_null(buf);
    assert_int_equal(len, 0);
    assert_int_equal(buf[0], 0);
    free(buf);
    assert_null(wire_pack(&ack.base, &len, failing_alloc));
}

/* ------------------------------------------------------------------ */
/* wire: field number 0                                                */

/* A valid message with `extra` appended (a concatenation of two protobuf
 * encodings is their merge). */
static uint8_t *with_suffix(const ProtobufCMessage *m, const uint8_t *extra, size_t n, size_t *len)
{
    uint8_t *buf = pack(m, len);
    uint8_t *out = malloc(*len + n);
    assert_non_null(out);
    memcpy(out, buf, *len);
    memcpy(out + *len, extra, n);
    *len += n;
    free(buf);
    return out;
}

/* Field number 0 is not protobuf. protobuf-c refuses it as a one-byte tag
 * but decodes it as an unknown field from an overlong tag (0x85 0x00 =
 * field 0, fixed32) -- and packs it back as 0x05, which no parser reads.
 * The decoders must refuse it as MALFORMED; otherwise a media reference
 * carrying it makes rules/send.c store a Message nobody can decode (found by
 * fuzz_wire; corpus regress-field0*.pb). */
static void test_field0_is_malformed(void **state)
{
    (void)state;
    static const uint8_t top[] = {0x85, 0x00, 0, 0, 0, 0};
    static const uint8_t in_media[] = {0x2a, 0x06, 0x85, 0x00, 0, 0, 0, 0};
    wire_err err;
    size_t len;
    uint8_t *buf;

    Mqchat__V1__SendRequest sr = send_req();
    buf = with_suffix(&sr.base, in_media, sizeof(in_media), &len);
    Mqchat__V1__SendRequest *s = wire_send(buf, len, 65536, &err);
    free(buf);
    if (s) {
        mqchat__v1__send_request__free_unpacked(s, NULL);
        fail_msg("SendRequest with field 0 in a MediaRef: decoded (code %d)", err.code);
    }
    assert_int_equal(err.code, EC(MALFORMED));

    buf = with_suffix(&sr.base, top, sizeof(top), &len);
    s = wire_send(buf, len, 65536, &err);
    free(buf);
    if (s) {
        mqchat__v1__send_request__free_unpacked(s, NULL);
        fail_msg("SendRequest with field 0: decoded (code %d)", err.code);
    }
    assert_int_equal(err.code, EC(MALFORMED));

    Mqchat__V1__SyncRequest sync = MQCHAT__V1__SYNC_REQUEST__INIT;
    Mqchat__V1__Request rq = request();
    rq.body_case = MQCHAT__V1__REQUEST__BODY_SYNC;
    rq.sync = &sync;
    buf = with_suffix(&rq.base, top, sizeof(top), &len);
    Mqchat__V1__Request *r = wire_request(buf, len, 65536, 256, &err);
    free(buf);
    if (r) {
        mqchat__v1__request__free_unpacked(r, NULL);
        fail_msg("Request with field 0: decoded (code %d)", err.code);
    }
    assert_int_equal(err.code, EC(MALFORMED));

    Mqchat__V1__Receipt rc = MQCHAT__V1__RECEIPT__INIT;
    rc.conversation_id = "d:alice:bob";
    rc.type = MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ;
    rc.seq = 1;
    buf = with_suffix(&rc.base, top, sizeof(top), &len);
    Mqchat__V1__Receipt *c = wire_receipt(buf, len, &err);
    free(buf);
    if (c) {
        mqchat__v1__receipt__free_unpacked(c, NULL);
        fail_msg("Receipt with field 0: decoded");
    }
    assert_int_equal(err.code, EC(MALFORMED));

    Mqchat__V1__Typing ty = MQCHAT__V1__TYPING__INIT;
    ty.conversation_id = "d:alice:bob";
    buf = with_suffix(&ty.base, top, sizeof(top), &len);
    Mqchat__V1__Typing *t = wire_typing(buf, len, &err);
    free(buf);
    if (t) {
        mqchat__v1__typing__free_unpacked(t, NULL);
        fail_msg("Typing with field 0: decoded");
    }
    assert_int_equal(err.code, EC(MALFORMED));
}

/* ------------------------------------------------------------------ */
/* config                                                              */

#define SECRET32 "0123456789abcdef0123456789abcdef"
#define ERRLEN 512

static struct mosquitto_opt opt(const char *k, const char *v)
{
    struct mosquitto_opt o;
    o.key = (char *)k;
    o.value = (char *)v;
    return o;
}

/* Parse {store_dir, secret, key=value}; on success the config is left in
 * *c for the caller to inspect and free; on failure it is freed. */
static int parse3(mqc_config *c, const char *key, const char *value, char *err)
{
    struct mosquitto_opt o[3] = {opt("store_dir", "/tmp/mqchat-store"),
                                 opt("jwt_hs256_secret", SECRET32), opt(key, value)};
    memset(err, 0, ERRLEN);
    int rc = mqc_config_parse(c, o, 3, err, ERRLEN);
    if (rc) mqc_config_free(c);
    return rc;
}

/* 0 if key=value is accepted; -1 if refused with a message naming key. */
static int try_opt(const char *key, const char *value)
{
    mqc_config c;
    char err[ERRLEN];
    int rc = parse3(&c, key, value, err);
    if (rc == 0) {
        mqc_config_free(&c);
        return 0;
    }
    assert_int_equal(rc, -1);
    if (!strstr(err, key)) fail_msg("message for %s='%s' does not name it: %s", key, value, err);
    return -1;
}

static void test_config_defaults(void **state)
{
    (void)state;
    mqc_config c;
    char err[ERRLEN];
    struct mosquitto_opt o[2] = {opt("store_dir", "/var/lib/mqchat"),
                                 opt("jwt_hs256_secret", SECRET32)};
    assert_int_equal(mqc_config_parse(&c, o, 2, err, sizeof(err)), 0);
    assert_string_equal(c.store_dir, "/var/lib/mqchat");
    assert_int_equal(c.durability, MQSTORE_DURABILITY_SYNC);
    assert_string_equal(c.topic_prefix, "mqchat/v1");
    assert_non_null(c.hs256_secret);
    assert_int_equal(c.hs256_secret_len, 32);
    assert_memory_equal(c.hs256_secret, SECRET32, 32);
    assert_null(c.jwt_public_key_file);
    assert_null(c.jwt_issuer);
    assert_null(c.jwt_audience);
    assert_int_equal(c.jwt_leeway_s, 30);
    assert_int_equal(c.max_body, 65536);
    assert_int_equal(c.group_max_members, 100000);
    assert_int_equal(c.large_group_members, 256);
    assert_int_equal(c.small_group_members, 192); /* 3/4 of large_group_members */
    assert_int_equal(c.fanout_per_pass, 500);
    assert_true(c.rate_msgs_per_s == 50.0);
    assert_true(c.rate_burst == 200.0);
    assert_int_equal(c.foreign_users, FOREIGN_DENY);
    assert_int_equal(c.sync_page_max, 500);
    assert_int_equal(c.history_page_max, 200);
    assert_int_equal(c.dedup_retention_s, 7 * 86400);
    assert_int_equal(c.inbox_retention_s, 30 * 86400);
    mqc_config_free(&c);
    assert_null(c.store_dir);
    assert_null(c.topic_prefix);
    assert_null(c.hs256_secret);
    /* Freeing twice is harmless (free zeroes). */
    mqc_config_free(&c);
}

static void test_config_all_options(void **state)
{
    (void)state;
    mqc_config c;
    char err[ERRLEN];
    struct mosquitto_opt o[] = {
        opt("store_dir", "/data/mq"),
        opt("durability", "os"),
        opt("topic_prefix", "chat/v9"),
        opt("jwt_hs256_secret", SECRET32 "-longer"),
        opt("jwt_public_key_file", "/etc/mqchat/jwt.pem"),
        opt("jwt_issuer", "https://auth.example"),
        opt("jwt_audience", "mqchat"),
        opt("jwt_leeway_s", "5"),
        opt("max_body", "1000"),
        opt("group_max_members", "10"),
        opt("rate_msgs_per_s", "2.5"),
        opt("rate_burst", "7"),
        opt("foreign_users", "defer"),
        opt("sync_page_max", "11"),
        opt("history_page_max", "12"),
        opt("dedup_retention_s", "120"),
        opt("inbox_retention_s", "7200"),
    };
    int rc = mqc_config_parse(&c, o, (int)(sizeof(o) / sizeof(o[0])), err, sizeof(err));
    if (rc) fail_msg("refused: %s", err);
    assert_string_equal(c.store_dir, "/data/mq");
    assert_int_equal(c.durability, MQSTORE_DURABILITY_OS);
    assert_string_equal(c.topic_prefix, "chat/v9");
    assert_int_equal(c.hs256_secret_len, 39);
    assert_memory_equal(c.hs256_secret, SECRET32 "-longer", 39);
    assert_string_equal(c.jwt_public_key_file, "/etc/mqchat/jwt.pem");
    assert_string_equal(c.jwt_issuer, "https://auth.example");
    assert_string_equal(c.jwt_audience, "mqchat");
    assert_int_equal(c.jwt_leeway_s, 5);
    assert_int_equal(c.max_body, 1000);
    assert_int_equal(c.group_max_members, 10);
    assert_true(c.rate_msgs_per_s == 2.5);
    assert_true(c.rate_burst == 7.0);
    assert_int_equal(c.foreign_users, FOREIGN_DEFER);
    assert_int_equal(c.sync_page_max, 11);
    assert_int_equal(c.history_page_max, 12);
    assert_int_equal(c.dedup_retention_s, 120);
    assert_int_equal(c.inbox_retention_s, 7200);
    mqc_config_free(&c);

    /* The other enum values, and repeated options (the last one wins). */
    struct mosquitto_opt o2[] = {
        opt("store_dir", "/a"),
        opt("store_dir", "/b"),
        opt("durability", "os"),
        opt("durability", "sync"),
        opt("foreign_users", "defer"),
        opt("foreign_users", "deny"),
        opt("jwt_hs256_secret", SECRET32 "AAAA"),
        opt("jwt_hs256_secret", SECRET32),
        opt("topic_prefix", "x"),
        opt("topic_prefix", "mqchat/v2"),
    };
    rc = mqc_config_parse(&c, o2, (int)(sizeof(o2) / sizeof(o2[0])), err, sizeof(err));
    if (rc) fail_msg("refused: %s", err);
    assert_string_equal(c.store_dir, "/b");
    assert_int_equal(c.durability, MQSTORE_DURABILITY_SYNC);
    assert_int_equal(c.foreign_users, FOREIGN_DENY);
    assert_int_equal(c.hs256_secret_len, 32);
    assert_string_equal(c.topic_prefix, "mqchat/v2");
    mqc_config_free(&c);

    /* A public key alone is a way to verify tokens. */
    struct mosquitto_opt o3[] = {opt("store_dir", "/a"), opt("jwt_public_key_file", "/k.pem")};
    rc = mqc_config_parse(&c, o3, 2, err, sizeof(err));
    if (rc) fail_msg("refused: %s", err);
    assert_null(c.hs256_secret);
    assert_string_equal(c.jwt_public_key_file, "/k.pem");
    mqc_config_free(&c);
}

static void test_config_secret_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_plugin_core_secretXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char content[] = SECRET32 "zz\r\n";
    assert_int_equal(write(fd, content, sizeof(content) - 1), (ssize_t)(sizeof(content) - 1));
    close(fd);

    mqc_config c;
    char err[ERRLEN];
    struct mosquitto_opt o[2] = {opt("store_dir", "/a"), opt("jwt_hs256_secret_file", path)};
    int rc = mqc_config_parse(&c, o, 2, err, sizeof(err));
    if (rc) fail_msg("refused: %s", err);
    assert_int_equal(c.hs256_secret_len, 34);
    assert_memory_equal(c.hs256_secret, SECRET32 "zz", 34);
    mqc_config_free(&c);

    /* A 31-byte secret file. */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, SECRET32, 31), 31);
    close(fd);
    assert_int_equal(try_opt("jwt_hs256_secret_file", path), -1);
    unlink(path);
    /* A missing file. */
    assert_int_equal(try_opt("jwt_hs256_secret_file", path), -1);
}

static void test_config_bad_options(void **state)
{
    (void)state;
    mqc_config c;
    char err[ERRLEN];
    /* Unknown option. */
    assert_int_equal(parse3(&c, "bogus_option", "1", err), -1);
    assert_non_null(strstr(err, "bogus_option"));
    assert_int_equal(parse3(&c, "MAX_BODY", "1", err), -1);
    assert_int_equal(parse3(&c, "max_body ", "1", err), -1);
    /* Empty or missing values. */
    assert_int_equal(try_opt("store_dir", ""), -1);
    assert_int_equal(try_opt("max_body", ""), -1);
    assert_int_equal(try_opt("jwt_issuer", NULL), -1);
    /* Enums. */
    assert_int_equal(try_opt("durability", "fsync"), -1);
    assert_int_equal(try_opt("durability", "SYNC"), -1);
    assert_int_equal(try_opt("foreign_users", "allow"), -1);
    assert_int_equal(try_opt("foreign_users", "Defer"), -1);
    /* Secrets: at least 32 bytes. */
    assert_int_equal(try_opt("jwt_hs256_secret", SECRET32), 0);
    char s31[40];
    assert_int_equal(try_opt("jwt_hs256_secret", fill(s31, 's', 31)), -1);
}

/* The options added for hardening and presence: each refused value names
 * its option; the parsed forms are right. */
static void test_config_presence_and_policies(void **state)
{
    (void)state;
    mqc_config c;
    char err[ERRLEN];
    assert_int_equal(parse3(&c, "store_dir", "/tmp/x", err), 0);
    assert_null(c.redis); /* presence off by default */
    assert_int_equal(c.outside_namespace, OUTSIDE_DEFER);
    assert_true(c.reply_max_bytes >= c.max_body + WIRE_ENVELOPE_SLACK + MQC_REPLY_SLACK);
    assert_string_equal(c.node_id, "node1");
    mqc_config_free(&c);
    assert_int_equal(parse3(&c, "redis", "127.0.0.1:6380", err), 0);
    assert_string_equal(c.redis_host, "127.0.0.1");
    assert_int_equal(c.redis_port, 6380);
    assert_null(c.redis_socket);
    mqc_config_free(&c);
    assert_int_equal(parse3(&c, "redis", "unix:/run/redis.sock", err), 0);
    assert_string_equal(c.redis_socket, "/run/redis.sock");
    assert_null(c.redis_host);
    mqc_config_free(&c);
    assert_int_equal(parse3(&c, "outside_namespace", "allow", err), 0);
    assert_int_equal(c.outside_namespace, OUTSIDE_ALLOW);
    mqc_config_free(&c);
    const char *bad[][2] = {{"redis", "localhost"},
                            {"redis", "host:0"},
                            {"redis", "host:65536"},
                            {"redis", ":6379"},
                            {"redis", "unix:relative"},
                            {"redis", "host:12x"},
                            {"redis_prefix", "a b"},
                            {"redis_prefix", "{x}"},
                            {"node_id", "n/1"},
                            {"node_id", "a:b"},
                            {"node_ttl_s", "2"},
                            {"presence_debounce_ms", "-1"},
                            {"presence_watch_max", "0"},
                            {"redis_timeout_ms", "99"},
                            {"outside_namespace", "open"},
                            {"reply_max_bytes", "50000"},
                            {"log_summary_interval_s", "0"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (try_opt(bad[i][0], bad[i][1]) != -1) fail_msg("%s=%s accepted", bad[i][0], bad[i][1]);
    assert_int_equal(try_opt("redis_prefix", "chat:v1:"), 0);
    assert_int_equal(try_opt("node_id", "eu-1.b"), 0);
}

static void test_config_numbers(void **state)
{
    (void)state;
    static const struct {
        const char *key, *value;
        int ok;
    } cases[] = {
        {"max_body", "1", 1},
        {"max_body", "8388608", 1},
        {"max_body", "0", 0},
        {"max_body", "8388609", 0},
        {"max_body", "1.5", 0},
        {"max_body", "-1", 0},
        {"max_body", "abc", 0},
        {"max_body", "10x", 0},
        {"max_body", "1e400", 0},
        {"max_body", "inf", 0},
        {"max_body", "nan", 0},
        {"group_max_members", "2", 1},
        {"group_max_members", "100000", 1},
        {"group_max_members", "1", 0},
        {"group_max_members", "100001", 0},
        {"large_group_members", "2", 1},
        {"large_group_members", "1", 0},
        {"large_group_members", "100001", 0},
        {"small_group_members", "100", 1},
        {"small_group_members", "256", 0}, /* not below large_group_members */
        {"small_group_members", "0", 0},
        {"fanout_per_pass", "100", 1},
        {"fanout_per_pass", "99", 0},
        {"fanout_per_pass", "1000001", 0},
        {"rate_msgs_per_s", "0.1", 1},
        {"rate_msgs_per_s", "1000000", 1},
        {"rate_msgs_per_s", "0.09", 0},
        {"rate_msgs_per_s", "1000001", 0},
        {"rate_msgs_per_s", "x", 0},
        {"rate_msgs_per_s", "inf", 0},
        {"rate_msgs_per_s", "nan", 0},
        {"rate_burst", "1", 1},
        {"rate_burst", "2.5", 1},
        {"rate_burst", "10000000", 1},
        {"rate_burst", "0.5", 0},
        {"rate_burst", "10000001", 0},
        {"rate_burst", "nan", 0},
        {"jwt_leeway_s", "0", 1},
        {"jwt_leeway_s", "3600", 1},
        {"jwt_leeway_s", "-1", 0},
        {"jwt_leeway_s", "3601", 0},
        {"jwt_leeway_s", "1.5", 0},
        {"sync_page_max", "1", 1},
        {"sync_page_max", "10000", 1},
        {"sync_page_max", "0", 0},
        {"sync_page_max", "10001", 0},
        {"history_page_max", "1", 1},
        {"history_page_max", "10000", 1},
        {"history_page_max", "0", 0},
        {"history_page_max", "10001", 0},
        {"dedup_retention_s", "60", 1},
        {"dedup_retention_s", "31536000", 1},
        {"dedup_retention_s", "59", 0},
        {"dedup_retention_s", "31536001", 0},
        {"inbox_retention_s", "3600", 1},
        {"inbox_retention_s", "315360000", 1},
        {"inbox_retention_s", "3599", 0},
        {"inbox_retention_s", "315360001", 0},
    };
    int wrong = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = try_opt(cases[i].key, cases[i].value);
        if ((rc == 0) != cases[i].ok) {
            print_error("%s='%s' was %s\n", cases[i].key, cases[i].value,
                        rc == 0 ? "accepted" : "refused");
            wrong++;
        }
    }
    assert_int_equal(wrong, 0);
    /* Values land in the right field and type. */
    mqc_config c;
    char err[ERRLEN];
    assert_int_equal(parse3(&c, "inbox_retention_s", "315360000", err), 0);
    assert_int_equal(c.inbox_retention_s, 315360000LL);
    mqc_config_free(&c);
    assert_int_equal(parse3(&c, "max_body", "8388608", err), 0);
    assert_int_equal(c.max_body, 8388608);
    mqc_config_free(&c);
}

static void test_config_required(void **state)
{
    (void)state;
    mqc_config c;
    char err[ERRLEN];
    /* No options at all. */
    assert_int_equal(mqc_config_parse(&c, NULL, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "store_dir"));
    mqc_config_free(&c);
    /* No store_dir. */
    struct mosquitto_opt o1[] = {opt("jwt_hs256_secret", SECRET32)};
    assert_int_equal(mqc_config_parse(&c, o1, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "store_dir"));
    mqc_config_free(&c);
    /* No way to verify tokens. */
    struct mosquitto_opt o2[] = {opt("store_dir", "/a"), opt("jwt_issuer", "x")};
    assert_int_equal(mqc_config_parse(&c, o2, 2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "secret"));
    mqc_config_free(&c);
}

static void test_config_topic_prefix(void **state)
{
    (void)state;
    char p64[70], p65[70];
    static const char *const good[] = {"chat", "a/b/c", "mqchat/v2", "x-y_z.0", "a$b"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (try_opt("topic_prefix", good[i])) fail_msg("prefix '%s' refused", good[i]);
    assert_int_equal(try_opt("topic_prefix", fill(p64, 'p', 64)), 0);
    static const char *const bad[] = {"$SYS/x",  "$mqchat", "/mqchat",  "mqchat/", "mq//chat",
                                      "/",       "mq+chat", "mq/+",     "mq#",     "mq/#",
                                      "mq chat", "a\tb",    "\xc3\xa9", "mq\x7f",  "//"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (try_opt("topic_prefix", bad[i]) == 0) fail_msg("prefix '%s' accepted", bad[i]);
    assert_int_equal(try_opt("topic_prefix", fill(p65, 'p', 65)), -1);
    assert_int_equal(try_opt("topic_prefix", ""), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_inbox),
        cmocka_unit_test(test_topic_device_leaves),
        cmocka_unit_test(test_topic_outside),
        cmocka_unit_test(test_topic_invalid),
        cmocka_unit_test(test_topic_id_lengths),
        cmocka_unit_test(test_topic_other_prefixes),
        cmocka_unit_test(test_user_id_valid),
        cmocka_unit_test(test_topic_build),
        cmocka_unit_test(test_filter_touches_prefix),
        cmocka_unit_test(test_filter_allowed),
        cmocka_unit_test(test_conv_ids),
        cmocka_unit_test(test_id_valid),
        cmocka_unit_test(test_send_valid),
        cmocka_unit_test(test_send_client_msg_id),
        cmocka_unit_test(test_send_conversation),
        cmocka_unit_test(test_send_body_limit),
        cmocka_unit_test(test_send_thumbnails_count),
        cmocka_unit_test(test_send_content_type),
        cmocka_unit_test(test_send_media),
        cmocka_unit_test(test_send_garbage_and_size),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_request_sync_cursor),
        cmocka_unit_test(test_request_conversation_only),
        cmocka_unit_test(test_request_group_create),
        cmocka_unit_test(test_request_group_members),
        cmocka_unit_test(test_request_list_conversations),
        cmocka_unit_test(test_request_unsupported),
        cmocka_unit_test(test_request_garbage_and_size),
        cmocka_unit_test(test_receipt),
        cmocka_unit_test(test_typing),
        cmocka_unit_test(test_wire_pack),
        cmocka_unit_test(test_field0_is_malformed),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_all_options),
        cmocka_unit_test(test_config_secret_file),
        cmocka_unit_test(test_config_bad_options),
        cmocka_unit_test(test_config_numbers),
        cmocka_unit_test(test_config_required),
        cmocka_unit_test(test_config_topic_prefix),
        cmocka_unit_test(test_config_presence_and_policies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
