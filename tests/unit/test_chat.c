/* test_chat — the chat rules (plugin/src/rules/) and the device layer
 * (plugin/src/device/) without a broker (cmocka).
 *
 * Every test gets a real store in a fresh directory under /tmp (removed at
 * teardown), an mqc_config parsed from plugin_opt-style options, and a dev
 * with fake connections: distinct addresses cast to struct mosquitto *,
 * which the layer only hashes and never dereferences. The broker's four
 * functions are the stubs of broker_stubs.c, which record every publish
 * and log line for the test to decode.
 *
 *   rules      chat_* called directly: results, refusals, store effects
 *   device     handle_* with payloads packed by protobuf-c, as a device
 *              sends them: what is published, where, at which QoS
 *   order      SYNC durability with the MANUAL driver: nothing leaves
 *              before mqstore_sync(), then everything in the order made
 *
 * No test waits on a thread or a clock: the syncer is MANUAL and the rate
 * limit is observed at a rate (0.1/s) no test run approaches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_stubs.h"
#include "config.h"
#include "device.h"
#include "mqc_clock.h"
#include "mqc_id.h"
#include "mqchat.pb-c.h"
#include "mqstore.h"
#include "presence.h"
#include "rules.h"

#define PREFIX "test/chat"
#define SECRET "0123456789abcdef0123456789abcdef-unit"
#define KIND_USER MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER
#define KIND_EVENT MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_EVENT
#define EVT(x) MQCHAT__V1__CONVERSATION_EVENT__TYPE__TYPE_##x
#define ROLE(x) MQCHAT__V1__ROLE__ROLE_##x

/* ------------------------------------------------------------------ */
/* fixture                                                             */

typedef struct fx {
    char dir[64];
    mqstore *store;
    mqc_config cfg;
    dev d;
    chat *c;
    conn *a_phone, *a_laptop, *b_phone;
} fx;

/* Fake broker clients: distinct addresses, never dereferenced. */
static char fake_clients[512];
#define CLIENT(i) ((struct mosquitto *)(void *)&fake_clients[i])

static const chat_caller ALICE = {.user = "alice", .device = "phone"};
static const chat_caller BOB = {.user = "bob", .device = "phone"};
static const chat_caller CAROL = {.user = "carol", .device = "phone"};

/* extra: NULL-terminated key, value, key, value, ... plugin options. */
static int fx_setup(void **state, mqstore_durability dur, const char *const *extra)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/mqchat-test-chat-XXXXXX");
    assert_non_null(mkdtemp(f->dir));

    struct mosquitto_opt opts[16];
    int n = 0;
    opts[n++] = (struct mosquitto_opt){"store_dir", f->dir};
    opts[n++] = (struct mosquitto_opt){"jwt_hs256_secret", SECRET};
    opts[n++] = (struct mosquitto_opt){"topic_prefix", PREFIX};
    opts[n++] = (struct mosquitto_opt){"durability", dur == MQSTORE_DURABILITY_OS ? "os" : "sync"};
    for (size_t i = 0; extra && extra[i]; i += 2) {
        assert_true(n < 16);
        opts[n++] = (struct mosquitto_opt){(char *)extra[i], (char *)extra[i + 1]};
    }
    char err[256] = "";
    if (mqc_config_parse(&f->cfg, opts, n, err, sizeof(err)) != 0) fail_msg("config: %s", err);

    mqstore_options so;
    mqstore_options_init(&so);
    so.durability = dur;
    so.sync_driver = MQSTORE_SYNC_MANUAL; /* the test calls mqstore_sync() itself */
    so.max_payload = f->cfg.max_body + WIRE_ENVELOPE_SLACK;
    char *msg = NULL;
    if (mqstore_open(f->dir, &so, &f->store, &msg) != MQSTORE_OK)
        fail_msg("mqstore_open: %s", msg ? msg : "?");

    dev_init(&f->d, f->store, &f->cfg);
    f->c = &f->d.chat;
    f->a_phone = conn_add(&f->d, CLIENT(0), "alice", "phone");
    f->a_laptop = conn_add(&f->d, CLIENT(1), "alice", "laptop");
    f->b_phone = conn_add(&f->d, CLIENT(2), "bob", "phone");
    assert_non_null(f->a_phone);
    assert_non_null(f->a_laptop);
    assert_non_null(f->b_phone);
    stub_reset();
    *state = f;
    return 0;
}

static int setup_os(void **state)
{
    return fx_setup(state, MQSTORE_DURABILITY_OS, NULL);
}

static int setup_sync(void **state)
{
    return fx_setup(state, MQSTORE_DURABILITY_SYNC, NULL);
}

static int setup_limits(void **state)
{
    static const char *const extra[] = {
        "group_max_members", "3", "sync_page_max", "3", "history_page_max", "2", NULL};
    return fx_setup(state, MQSTORE_DURABILITY_OS, extra);
}

/* Large groups from 4 members (small again below 3), 100 lane publishes
 * per pass. */
static int setup_large(void **state)
{
    static const char *const extra[] = {
        "large_group_members", "4", "small_group_members", "3", "fanout_per_pass", "100", NULL};
    return fx_setup(state, MQSTORE_DURABILITY_OS, extra);
}

/* The same with SYNC durability (nothing leaves before mqstore_sync()). */
static int setup_large_sync(void **state)
{
    static const char *const extra[] = {
        "large_group_members", "4", "small_group_members", "3", "fanout_per_pass", "100", NULL};
    return fx_setup(state, MQSTORE_DURABILITY_SYNC, extra);
}

static int setup_rate(void **state)
{
    static const char *const extra[] = {"rate_burst", "2", "rate_msgs_per_s", "0.1", NULL};
    return fx_setup(state, MQSTORE_DURABILITY_OS, extra);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int fx_teardown(void **state)
{
    fx *f = *state;
    dev_free(&f->d);
    mqstore_free(f->store);
    mqc_config_free(&f->cfg);
    int rc = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    stub_reset();
    free(f);
    return rc;
}

/* ------------------------------------------------------------------ */
/* helpers: rules                                                      */

static void expect_refusal(int rc, const chat_status *st, wire_code code)
{
    assert_int_equal(rc, -1);
    if (st->code != code) fail_msg("code %d (%s), expected %d", st->code, st->msg, code);
    assert_true(st->msg[0] != '\0');
}

static int send_msg(fx *f, const chat_caller *who, const char *conv, const char *cmid,
                    const char *body, chat_written *w, chat_status *st)
{
    Mqchat__V1__SendRequest req = MQCHAT__V1__SEND_REQUEST__INIT;
    req.client_msg_id = (char *)cmid;
    req.conversation_id = (char *)conv;
    req.content_type = "text/plain";
    req.body.data = (uint8_t *)body;
    req.body.len = strlen(body);
    return chat_send(f->c, who, &req, w, st);
}

/* Send and return the seq. */
static uint64_t send_ok(fx *f, const chat_caller *who, const char *conv, const char *cmid)
{
    chat_written w;
    chat_status st;
    if (send_msg(f, who, conv, cmid, "hello", &w, &st)) fail_msg("send: %s", st.msg);
    uint64_t seq = w.r.seq;
    chat_written_clear(&w);
    return seq;
}

/* The inbox_seq the fan-out gave `user`, or 0. */
static uint64_t fanout_of(const chat_written *w, const char *user)
{
    for (size_t i = 0; i < w->r.n_fanout; i++)
        if (strcmp(w->r.fanout_user[i], user) == 0) return w->r.fanout_inbox_seq[i];
    return 0;
}

static int group(fx *f, const chat_caller *who, Mqchat__V1__Request *req, chat_written *w,
                 chat_status *st)
{
    req->request_id = "r1";
    return chat_group(f->c, who, req, w, st);
}

/* Create a group of `who` and `n` others; its id into conv. */
static void create_group(fx *f, const chat_caller *who, char **members, size_t n,
                         char conv[MQC_ID_BUF])
{
    Mqchat__V1__GroupCreate gc = MQCHAT__V1__GROUP_CREATE__INIT;
    gc.title = "team";
    gc.n_member_ids = n;
    gc.member_ids = members;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
    req.group_create = &gc;
    chat_written w;
    chat_status st;
    if (group(f, who, &req, &w, &st)) fail_msg("group create: %s", st.msg);
    snprintf(conv, MQC_ID_BUF, "%s", w.conv);
    chat_written_clear(&w);
}

static int add_members_w(fx *f, const chat_caller *who, const char *conv, char **users, size_t n,
                         chat_written *w, chat_status *st);

static int add_members(fx *f, const chat_caller *who, const char *conv, char **users, size_t n,
                       chat_status *st)
{
    chat_written w;
    int rc = add_members_w(f, who, conv, users, n, &w, st);
    chat_written_clear(&w);
    return rc;
}

static int remove_members(fx *f, const chat_caller *who, const char *conv, char **users, size_t n,
                          chat_written *w, chat_status *st)
{
    Mqchat__V1__GroupRemoveMembers gr = MQCHAT__V1__GROUP_REMOVE_MEMBERS__INIT;
    gr.conversation_id = (char *)conv;
    gr.n_user_ids = n;
    gr.user_ids = users;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE;
    req.group_remove = &gr;
    return group(f, who, &req, w, st);
}

static int leave(fx *f, const chat_caller *who, const char *conv, chat_written *w, chat_status *st)
{
    Mqchat__V1__GroupLeave gl = MQCHAT__V1__GROUP_LEAVE__INIT;
    gl.conversation_id = (char *)conv;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_LEAVE;
    req.group_leave = &gl;
    return group(f, who, &req, w, st);
}

static int set_role(fx *f, const chat_caller *who, const char *conv, char **users, size_t n,
                    Mqchat__V1__Role role, chat_status *st)
{
    Mqchat__V1__GroupSetRole sr = MQCHAT__V1__GROUP_SET_ROLE__INIT;
    sr.conversation_id = (char *)conv;
    sr.n_user_ids = n;
    sr.user_ids = users;
    sr.role = role;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_SET_ROLE;
    req.group_set_role = &sr;
    chat_written w;
    int rc = group(f, who, &req, &w, st);
    chat_written_clear(&w);
    return rc;
}

/* The user's role in conv, or 0 if not a member. */
static int role_of(fx *f, const char *conv, const char *user)
{
    mqstore_member m;
    mqstore_err e = mqstore_member_get(f->store, conv, user, &m);
    if (e == MQSTORE_ERR_NOTFOUND) return 0;
    assert_int_equal(e, MQSTORE_OK);
    return (int)m.role;
}

static int exists(fx *f, const char *conv)
{
    mqstore_err e = MQSTORE_OK;
    int x = mqstore_conv_exists(f->store, conv, &e);
    assert_int_equal(e, MQSTORE_OK);
    return x;
}

static uint64_t head_of(fx *f, const char *conv)
{
    uint64_t h = 99;
    assert_int_equal(mqstore_conv_head(f->store, conv, &h), MQSTORE_OK);
    return h;
}

static int receipt(fx *f, const chat_caller *who, const char *conv, Mqchat__V1__ReceiptType type,
                   uint64_t seq, chat_receipt_result *res, chat_status *st)
{
    Mqchat__V1__Receipt rc = MQCHAT__V1__RECEIPT__INIT;
    rc.conversation_id = (char *)conv;
    rc.type = type;
    rc.seq = seq;
    int r = chat_receipt(f->c, who, &rc, res, st);
    return r;
}

#define READ MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ
#define DELIVERED MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_DELIVERED

/* ------------------------------------------------------------------ */
/* helpers: device payloads and what was published                     */

static uint8_t *pack_send(const char *cmid, const char *conv, const char *body, size_t *len)
{
    Mqchat__V1__SendRequest req = MQCHAT__V1__SEND_REQUEST__INIT;
    req.client_msg_id = (char *)cmid;
    req.conversation_id = (char *)conv;
    req.content_type = "text/plain";
    req.body.data = (uint8_t *)body;
    req.body.len = strlen(body);
    *len = mqchat__v1__send_request__get_packed_size(&req);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(mqchat__v1__send_request__pack(&req, buf), *len);
    return buf;
}

static int dev_send(fx *f, conn *c, const char *cmid, const char *conv, const char *body)
{
    size_t len;
    uint8_t *buf = pack_send(cmid, conv, body, &len);
    int rc = handle_send(&f->d, c, buf, len);
    free(buf);
    return rc;
}

static int dev_request(fx *f, conn *c, const Mqchat__V1__Request *req)
{
    size_t len = mqchat__v1__request__get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    assert_int_equal(mqchat__v1__request__pack(req, buf), len);
    int rc = handle_request(&f->d, c, buf, len);
    free(buf);
    return rc;
}

static int dev_sync(fx *f, conn *c, const char *rid, uint64_t after, uint32_t limit)
{
    Mqchat__V1__SyncRequest s = MQCHAT__V1__SYNC_REQUEST__INIT;
    s.after_inbox_seq = after;
    s.limit = limit;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.request_id = (char *)rid;
    req.body_case = MQCHAT__V1__REQUEST__BODY_SYNC;
    req.sync = &s;
    return dev_request(f, c, &req);
}

static int dev_typing(fx *f, conn *c, const char *conv)
{
    Mqchat__V1__Typing t = MQCHAT__V1__TYPING__INIT;
    t.conversation_id = (char *)conv;
    t.typing = 1;
    size_t len = mqchat__v1__typing__get_packed_size(&t);
    uint8_t buf[256];
    assert_true(len <= sizeof(buf));
    assert_int_equal(mqchat__v1__typing__pack(&t, buf), len);
    return handle_typing(&f->d, c, buf, len);
}

static int dev_receipt(fx *f, conn *c, const char *conv, Mqchat__V1__ReceiptType type, uint64_t seq)
{
    Mqchat__V1__Receipt r = MQCHAT__V1__RECEIPT__INIT;
    r.conversation_id = (char *)conv;
    r.type = type;
    r.seq = seq;
    size_t len = mqchat__v1__receipt__get_packed_size(&r);
    uint8_t buf[256];
    assert_true(len <= sizeof(buf));
    assert_int_equal(mqchat__v1__receipt__pack(&r, buf), len);
    return handle_receipt(&f->d, c, buf, len);
}

static const stub_pub *pub_at(size_t i)
{
    const stub_pub *p = stub_pub_get(i);
    if (!p) fail_msg("publish #%zu of %zu", i, stub_pub_count());
    return p;
}

/* Publish i goes to client_id on topic (PREFIX + topic_tail) at qos, as
 * the plugin always publishes: by client id, no retain, no properties. */
static const stub_pub *expect_pub(size_t i, const char *client_id, const char *topic_tail, int qos)
{
    const stub_pub *p = pub_at(i);
    char topic[512];
    snprintf(topic, sizeof(topic), "%s%s", PREFIX, topic_tail);
    assert_non_null(p->client_id);
    assert_string_equal(p->client_id, client_id);
    assert_string_equal(p->topic, topic);
    assert_int_equal(p->qos, qos);
    assert_false(p->retain);
    assert_false(p->properties);
    return p;
}

/* The index of the publish to client_id, or -1 (asserting it is alone). */
static int pub_index(const char *client_id)
{
    int found = -1;
    for (size_t i = 0; i < stub_pub_count(); i++)
        if (pub_at(i)->client_id && strcmp(pub_at(i)->client_id, client_id) == 0) {
            if (found >= 0) fail_msg("two publishes to %s", client_id);
            found = (int)i;
        }
    return found;
}

static size_t pubs_on(const char *topic_tail)
{
    char topic[512];
    snprintf(topic, sizeof(topic), "%s%s", PREFIX, topic_tail);
    size_t n = 0;
    for (size_t i = 0; i < stub_pub_count(); i++)
        n += strcmp(pub_at(i)->topic, topic) == 0;
    return n;
}

static Mqchat__V1__SendAck *decode_ack(const stub_pub *p)
{
    Mqchat__V1__SendAck *a = mqchat__v1__send_ack__unpack(NULL, p->len, p->payload);
    assert_non_null(a);
    return a;
}

static Mqchat__V1__Response *decode_resp(const stub_pub *p)
{
    Mqchat__V1__Response *r = mqchat__v1__response__unpack(NULL, p->len, p->payload);
    assert_non_null(r);
    return r;
}

static Mqchat__V1__ServerEvent *decode_event(const stub_pub *p)
{
    Mqchat__V1__ServerEvent *e = mqchat__v1__server_event__unpack(NULL, p->len, p->payload);
    assert_non_null(e);
    return e;
}

/* Exactly one log line was written since the last reset, mentioning `what`. */
static void expect_one_log(const char *what)
{
    if (stub_log_count() != 1) fail_msg("%zu log lines, expected 1", stub_log_count());
    const char *line = stub_log_get(0)->line;
    if (!strstr(line, what)) fail_msg("log line '%s' lacks '%s'", line, what);
}

/* ================================================================== */
/* rules                                                               */

static void test_send_direct_creates(void **state)
{
    fx *f = *state;
    chat_written w;
    chat_status st;
    assert_int_equal(exists(f, "d:alice:bob"), 0);
    assert_int_equal(send_msg(f, &ALICE, "d:alice:bob", "m1", "hi", &w, &st), 0);
    assert_int_equal(w.r.seq, 1);
    assert_int_equal(w.r.duplicate, 0);
    assert_int_equal(w.r.inbox_seq, 1);
    assert_int_equal(w.r.n_fanout, 2);
    assert_int_equal(fanout_of(&w, "alice"), 1);
    assert_int_equal(fanout_of(&w, "bob"), 1);
    assert_true(w.r.ticket > 0);
    /* The message as members receive it. */
    assert_string_equal(w.msg.conversation_id, "d:alice:bob");
    assert_int_equal(w.msg.seq, 1);
    assert_string_equal(w.msg.sender_user_id, "alice");
    assert_string_equal(w.msg.sender_device_id, "phone");
    assert_string_equal(w.msg.client_msg_id, "m1");
    assert_int_equal(w.msg.kind, KIND_USER);
    assert_memory_equal(w.msg.body.data, "hi", 2);
    int64_t t1 = w.r.server_time_ms;
    chat_written_clear(&w);
    assert_int_equal(role_of(f, "d:alice:bob", "alice"), MQSTORE_ROLE_MEMBER);
    assert_int_equal(role_of(f, "d:alice:bob", "bob"), MQSTORE_ROLE_MEMBER);
    assert_int_equal(head_of(f, "d:alice:bob"), 1);

    /* The same client_msg_id again: the first result, nothing written. */
    assert_int_equal(send_msg(f, &ALICE, "d:alice:bob", "m1", "hi", &w, &st), 0);
    assert_int_equal(w.r.duplicate, 1);
    assert_int_equal(w.r.seq, 1);
    assert_int_equal(w.r.inbox_seq, 1);
    assert_int_equal(w.r.server_time_ms, t1);
    assert_int_equal(w.r.n_fanout, 0);
    chat_written_clear(&w);
    assert_int_equal(head_of(f, "d:alice:bob"), 1);

    /* A new id is a new message; bob answers in the same conversation. */
    assert_int_equal(send_ok(f, &ALICE, "d:alice:bob", "m2"), 2);
    assert_int_equal(send_msg(f, &BOB, "d:alice:bob", "m1", "yo", &w, &st), 0);
    assert_int_equal(w.r.duplicate, 0); /* dedup is per sender */
    assert_int_equal(w.r.seq, 3);
    assert_int_equal(fanout_of(&w, "alice"), 3);
    assert_int_equal(fanout_of(&w, "bob"), 3);
    chat_written_clear(&w);
}

static void test_send_not_naming_sender(void **state)
{
    fx *f = *state;
    chat_written w;
    chat_status st;
    expect_refusal(send_msg(f, &CAROL, "d:alice:bob", "m1", "hi", &w, &st), &st, EC(NOT_MEMBER));
    /* Nothing was created for a stranger. */
    assert_int_equal(exists(f, "d:alice:bob"), 0);
    assert_int_equal(mqstore_last_ticket(f->store), 0);
    chat_written_clear(&w);
}

static void test_send_unknown_group(void **state)
{
    fx *f = *state;
    chat_written w;
    chat_status st;
    expect_refusal(send_msg(f, &ALICE, "g:doesnotexist", "m1", "hi", &w, &st), &st,
                   EC(UNKNOWN_CONVERSATION));
    chat_written_clear(&w);
    assert_int_equal(exists(f, "g:doesnotexist"), 0);

    /* A group that exists but the sender is not in. */
    char conv[MQC_ID_BUF];
    create_group(f, &ALICE, (char *[]){"bob"}, 1, conv);
    expect_refusal(send_msg(f, &CAROL, conv, "m1", "hi", &w, &st), &st, EC(NOT_MEMBER));
    chat_written_clear(&w);
    assert_int_equal(head_of(f, conv), 1);
}

static void test_group_create(void **state)
{
    fx *f = *state;
    Mqchat__V1__GroupCreate gc = MQCHAT__V1__GROUP_CREATE__INIT;
    gc.title = "team";
    /* The creator and duplicates are listed once. */
    gc.member_ids = (char *[]){"bob", "alice", "bob"};
    gc.n_member_ids = 3;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
    req.group_create = &gc;
    chat_written w;
    chat_status st;
    assert_int_equal(group(f, &ALICE, &req, &w, &st), 0);
    assert_true(mqc_id_valid(MQC_ID_CONV, w.conv));
    assert_true(mqc_conv_is_group(w.conv));
    assert_int_equal(w.r.seq, 1);
    assert_int_equal(w.r.n_fanout, 2);
    assert_int_equal(fanout_of(&w, "alice"), 1);
    assert_int_equal(fanout_of(&w, "bob"), 1);
    assert_int_equal(w.msg.kind, KIND_EVENT);
    assert_ptr_equal(w.msg.event, &w.ev);
    assert_int_equal(w.ev.type, EVT(CREATED));
    assert_string_equal(w.ev.actor_user_id, "alice");
    assert_string_equal(w.ev.title, "team");
    assert_int_equal(w.ev.n_user_ids, 2);
    assert_string_equal(w.ev.user_ids[0], "alice");
    assert_string_equal(w.ev.user_ids[1], "bob");
    char conv[MQC_ID_BUF];
    snprintf(conv, sizeof(conv), "%s", w.conv);
    chat_written_clear(&w);
    assert_int_equal(role_of(f, conv, "alice"), MQSTORE_ROLE_OWNER);
    assert_int_equal(role_of(f, conv, "bob"), MQSTORE_ROLE_MEMBER);
    assert_int_equal(head_of(f, conv), 1);

    /* Two creates never share an id. */
    char conv2[MQC_ID_BUF];
    create_group(f, &ALICE, (char *[]){"bob"}, 1, conv2);
    assert_string_not_equal(conv, conv2);
}

static void test_group_member_cannot_add(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    chat_status st;
    create_group(f, &ALICE, (char *[]){"bob"}, 1, conv);
    expect_refusal(add_members(f, &BOB, conv, (char *[]){"carol"}, 1, &st), &st,
                   EC(PERMISSION_DENIED));
    assert_int_equal(role_of(f, conv, "carol"), 0);
    assert_int_equal(head_of(f, conv), 1);
    /* A stranger is told it is not a member, not that it lacks the role. */
    expect_refusal(add_members(f, &CAROL, conv, (char *[]){"dave"}, 1, &st), &st, EC(NOT_MEMBER));
    /* The owner may; an existing member again is INVALID_ARGUMENT. */
    assert_int_equal(add_members(f, &ALICE, conv, (char *[]){"carol"}, 1, &st), 0);
    assert_int_equal(role_of(f, conv, "carol"), MQSTORE_ROLE_MEMBER);
    expect_refusal(add_members(f, &ALICE, conv, (char *[]){"bob"}, 1, &st), &st,
                   EC(INVALID_ARGUMENT));
    /* Group operations on a 1:1 conversation. */
    expect_refusal(add_members(f, &ALICE, "d:alice:bob", (char *[]){"carol"}, 1, &st), &st,
                   EC(INVALID_ARGUMENT));
}

static void test_group_remove_owner(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    chat_status st;
    chat_written w;
    create_group(f, &ALICE, (char *[]){"bob", "carol"}, 2, conv);
    assert_int_equal(set_role(f, &ALICE, conv, (char *[]){"bob"}, 1, ROLE(ADMIN), &st), 0);
    assert_int_equal(role_of(f, conv, "bob"), MQSTORE_ROLE_ADMIN);

    /* Nobody removes the owner: not an admin, not the owner herself. */
    expect_refusal(remove_members(f, &BOB, conv, (char *[]){"alice"}, 1, &w, &st), &st,
                   EC(PERMISSION_DENIED));
    expect_refusal(remove_members(f, &ALICE, conv, (char *[]){"alice"}, 1, &w, &st), &st,
                   EC(PERMISSION_DENIED));
    assert_int_equal(role_of(f, conv, "alice"), MQSTORE_ROLE_OWNER);
    /* A member removes nobody; an admin removes members; not a member:
     * NOT_FOUND. */
    expect_refusal(remove_members(f, &CAROL, conv, (char *[]){"bob"}, 1, &w, &st), &st,
                   EC(PERMISSION_DENIED));
    expect_refusal(remove_members(f, &BOB, conv, (char *[]){"dave"}, 1, &w, &st), &st,
                   EC(NOT_FOUND));
    uint64_t head = head_of(f, conv);
    assert_int_equal(remove_members(f, &BOB, conv, (char *[]){"carol"}, 1, &w, &st), 0);
    assert_int_equal(w.ev.type, EVT(MEMBERS_REMOVED));
    assert_int_equal(w.r.seq, head + 1);
    /* The removed member hears of it too. */
    assert_true(fanout_of(&w, "carol") > 0);
    assert_int_equal(w.r.n_fanout, 3);
    chat_written_clear(&w);
    assert_int_equal(role_of(f, conv, "carol"), 0);
}

static void test_group_owner_leave(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    chat_status st;
    chat_written w;
    create_group(f, &ALICE, (char *[]){"bob"}, 1, conv);
    expect_refusal(leave(f, &ALICE, conv, &w, &st), &st, EC(PERMISSION_DENIED));
    assert_int_equal(role_of(f, conv, "alice"), MQSTORE_ROLE_OWNER);
    assert_int_equal(head_of(f, conv), 1);

    /* A member leaves; then the owner, as the last member, may. */
    assert_int_equal(leave(f, &BOB, conv, &w, &st), 0);
    assert_int_equal(w.ev.type, EVT(MEMBER_LEFT));
    assert_int_equal(w.ev.n_user_ids, 1);
    assert_string_equal(w.ev.user_ids[0], "bob");
    assert_string_equal(w.ev.actor_user_id, "bob");
    chat_written_clear(&w);
    assert_int_equal(role_of(f, conv, "bob"), 0);
    assert_int_equal(leave(f, &ALICE, conv, &w, &st), 0);
    chat_written_clear(&w);
    assert_int_equal(role_of(f, conv, "alice"), 0);
    /* Leaving again: no longer a member. */
    expect_refusal(leave(f, &ALICE, conv, &w, &st), &st, EC(NOT_MEMBER));
}

static void test_group_full(void **state)
{
    fx *f = *state; /* group_max_members 3 */
    char conv[MQC_ID_BUF];
    chat_status st;
    chat_written w;
    Mqchat__V1__GroupCreate gc = MQCHAT__V1__GROUP_CREATE__INIT;
    gc.member_ids = (char *[]){"bob", "carol", "dave"};
    gc.n_member_ids = 3; /* 4 with the creator */
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
    req.group_create = &gc;
    expect_refusal(group(f, &ALICE, &req, &w, &st), &st, EC(GROUP_FULL));
    assert_int_equal(mqstore_last_ticket(f->store), 0);
    /* Duplicates do not count against the limit. */
    gc.member_ids = (char *[]){"bob", "carol", "bob"};
    assert_int_equal(group(f, &ALICE, &req, &w, &st), 0);
    snprintf(conv, sizeof(conv), "%s", w.conv);
    chat_written_clear(&w);
    /* Full at 3: one more is refused. */
    expect_refusal(add_members(f, &ALICE, conv, (char *[]){"dave"}, 1, &st), &st, EC(GROUP_FULL));
    assert_int_equal(role_of(f, conv, "dave"), 0);
    assert_int_equal(leave(f, &CAROL, conv, &w, &st), 0);
    chat_written_clear(&w);
    assert_int_equal(add_members(f, &ALICE, conv, (char *[]){"dave"}, 1, &st), 0);
}

static void test_group_set_role(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    chat_status st;
    create_group(f, &ALICE, (char *[]){"bob", "carol"}, 2, conv);
    /* A member, then an admin, may not change roles. */
    expect_refusal(set_role(f, &BOB, conv, (char *[]){"carol"}, 1, ROLE(ADMIN), &st), &st,
                   EC(PERMISSION_DENIED));
    assert_int_equal(set_role(f, &ALICE, conv, (char *[]){"bob"}, 1, ROLE(ADMIN), &st), 0);
    expect_refusal(set_role(f, &BOB, conv, (char *[]){"carol"}, 1, ROLE(ADMIN), &st), &st,
                   EC(PERMISSION_DENIED));
    assert_int_equal(role_of(f, conv, "carol"), MQSTORE_ROLE_MEMBER);
    /* The owner's own role never changes. */
    expect_refusal(set_role(f, &ALICE, conv, (char *[]){"alice"}, 1, ROLE(MEMBER), &st), &st,
                   EC(PERMISSION_DENIED));
    assert_int_equal(role_of(f, conv, "alice"), MQSTORE_ROLE_OWNER);
    /* The owner demotes an admin. */
    assert_int_equal(set_role(f, &ALICE, conv, (char *[]){"bob"}, 1, ROLE(MEMBER), &st), 0);
    assert_int_equal(role_of(f, conv, "bob"), MQSTORE_ROLE_MEMBER);
}

static void test_receipts(void **state)
{
    fx *f = *state;
    chat_receipt_result res;
    chat_status st;
    for (int i = 0; i < 3; i++) {
        char cmid[16];
        snprintf(cmid, sizeof(cmid), "m%d", i);
        send_ok(f, &ALICE, "d:alice:bob", cmid);
    }
    /* read 2: read implies delivered. */
    assert_int_equal(receipt(f, &BOB, "d:alice:bob", READ, 2, &res, &st), 0);
    assert_int_equal(res.changed, 1);
    assert_int_equal(res.read, 2);
    assert_int_equal(res.delivered, 2);
    assert_true(res.delivered >= res.read);
    assert_int_equal(res.members.n, 2);
    mqstore_member_list_free(&res.members);
    /* A lower read: nothing moves, nobody is told. */
    assert_int_equal(receipt(f, &BOB, "d:alice:bob", READ, 1, &res, &st), 0);
    assert_int_equal(res.changed, 0);
    assert_int_equal(res.read, 2);
    assert_int_equal(res.members.n, 0);
    mqstore_member_list_free(&res.members);
    /* Above the head. */
    expect_refusal(receipt(f, &BOB, "d:alice:bob", READ, 4, &res, &st), &st, EC(INVALID_ARGUMENT));
    expect_refusal(receipt(f, &BOB, "d:alice:bob", DELIVERED, 4, &res, &st), &st,
                   EC(INVALID_ARGUMENT));
    /* delivered moves alone; read stays. */
    assert_int_equal(receipt(f, &BOB, "d:alice:bob", DELIVERED, 3, &res, &st), 0);
    assert_int_equal(res.changed, 1);
    assert_int_equal(res.delivered, 3);
    assert_int_equal(res.read, 2);
    mqstore_member_list_free(&res.members);
    uint64_t dl = 0, rd = 0;
    assert_int_equal(mqstore_receipt_get(f->store, "d:alice:bob", "bob", &dl, &rd), MQSTORE_OK);
    assert_int_equal(dl, 3);
    assert_int_equal(rd, 2);
    /* A stranger. */
    expect_refusal(receipt(f, &CAROL, "d:alice:bob", READ, 1, &res, &st), &st, EC(NOT_MEMBER));
    expect_refusal(receipt(f, &ALICE, "g:nosuchgroup", READ, 1, &res, &st), &st,
                   EC(UNKNOWN_CONVERSATION));
}

static void test_typing(void **state)
{
    fx *f = *state;
    mqstore_member_list l;
    int large = 0;
    chat_status st;
    char conv[MQC_ID_BUF];
    create_group(f, &ALICE, (char *[]){"bob"}, 1, conv);
    Mqchat__V1__Typing t = MQCHAT__V1__TYPING__INIT;
    t.conversation_id = conv;
    t.typing = 1;
    expect_refusal(chat_typing(f->c, &CAROL, &t, &l, &large, &st), &st, EC(NOT_MEMBER));
    assert_int_equal(l.n, 0);
    t.conversation_id = "d:alice:bob";
    expect_refusal(chat_typing(f->c, &CAROL, &t, &l, &large, &st), &st, EC(NOT_MEMBER));
    t.conversation_id = conv;
    uint64_t ticket = mqstore_last_ticket(f->store);
    assert_int_equal(chat_typing(f->c, &BOB, &t, &l, &large, &st), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].user, "alice");
    assert_string_equal(l.items[1].user, "bob");
    mqstore_member_list_free(&l);
    assert_int_equal(mqstore_last_ticket(f->store), ticket); /* never stored */
}

static void test_sync_paging(void **state)
{
    fx *f = *state;
    for (int i = 0; i < 5; i++) {
        char cmid[16];
        snprintf(cmid, sizeof(cmid), "m%d", i);
        send_ok(f, &ALICE, "d:alice:bob", cmid);
    }
    Mqchat__V1__SyncRequest s = MQCHAT__V1__SYNC_REQUEST__INIT;
    mqstore_page p;
    uint64_t head = 0;
    chat_status st;
    uint64_t after = 0, seen = 0;
    int pages = 0, more = 1;
    s.limit = 2;
    while (more && pages < 10) { /* bounded */
        s.after_inbox_seq = after;
        assert_int_equal(chat_sync(f->c, &BOB, &s, &p, &head, &st), 0);
        assert_int_equal(head, 5);
        assert_true(p.n >= 1 && p.n <= 2);
        for (size_t i = 0; i < p.n; i++) {
            assert_int_equal(p.items[i].inbox_seq, after + 1 + i);
            assert_int_equal(p.items[i].seq, after + 1 + i);
            assert_string_equal(p.items[i].conv, "d:alice:bob");
            assert_string_equal(p.items[i].sender_user, "alice");
        }
        seen += p.n;
        after = p.items[p.n - 1].inbox_seq;
        more = p.more;
        mqstore_page_free(&p);
        pages++;
        assert_int_equal(more, after < 5);
    }
    assert_int_equal(pages, 3);
    assert_int_equal(seen, 5);
    /* Nothing newer (also a cursor from the future): empty, not more. */
    s.after_inbox_seq = 5;
    assert_int_equal(chat_sync(f->c, &BOB, &s, &p, &head, &st), 0);
    assert_int_equal(p.n, 0);
    assert_int_equal(p.more, 0);
    assert_int_equal(head, 5);
    mqstore_page_free(&p);
    s.after_inbox_seq = 99;
    assert_int_equal(chat_sync(f->c, &BOB, &s, &p, &head, &st), 0);
    assert_int_equal(p.n, 0);
    mqstore_page_free(&p);
    /* limit 0: the default (100) covers all five. A user with nothing. */
    s.after_inbox_seq = 0;
    s.limit = 0;
    assert_int_equal(chat_sync(f->c, &BOB, &s, &p, &head, &st), 0);
    assert_int_equal(p.n, 5);
    assert_int_equal(p.more, 0);
    mqstore_page_free(&p);
    assert_int_equal(chat_sync(f->c, &CAROL, &s, &p, &head, &st), 0);
    assert_int_equal(p.n, 0);
    assert_int_equal(head, 0);
    mqstore_page_free(&p);
}

static void test_sync_page_max(void **state)
{
    fx *f = *state; /* sync_page_max 3, history_page_max 2 */
    for (int i = 0; i < 5; i++) {
        char cmid[16];
        snprintf(cmid, sizeof(cmid), "m%d", i);
        send_ok(f, &ALICE, "d:alice:bob", cmid);
    }
    Mqchat__V1__SyncRequest s = MQCHAT__V1__SYNC_REQUEST__INIT;
    s.limit = 400;
    mqstore_page p;
    uint64_t head;
    chat_status st;
    assert_int_equal(chat_sync(f->c, &BOB, &s, &p, &head, &st), 0);
    assert_int_equal(p.n, 3);
    assert_int_equal(p.more, 1);
    mqstore_page_free(&p);
    Mqchat__V1__HistoryRequest h = MQCHAT__V1__HISTORY_REQUEST__INIT;
    h.conversation_id = "d:alice:bob";
    assert_int_equal(chat_history(f->c, &BOB, &h, &p, &st), 0);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.more, 1);
    assert_int_equal(p.items[0].seq, 5);
    assert_int_equal(p.items[1].seq, 4);
    mqstore_page_free(&p);
}

static void test_history(void **state)
{
    fx *f = *state;
    for (int i = 0; i < 4; i++) {
        char cmid[16];
        snprintf(cmid, sizeof(cmid), "m%d", i);
        send_ok(f, &ALICE, "d:alice:bob", cmid);
    }
    Mqchat__V1__HistoryRequest h = MQCHAT__V1__HISTORY_REQUEST__INIT;
    h.conversation_id = "d:alice:bob";
    mqstore_page p;
    chat_status st;
    expect_refusal(chat_history(f->c, &CAROL, &h, &p, &st), &st, EC(NOT_MEMBER));
    assert_int_equal(p.n, 0);
    mqstore_page_free(&p);
    char conv[MQC_ID_BUF];
    create_group(f, &ALICE, (char *[]){"bob"}, 1, conv);
    h.conversation_id = conv;
    expect_refusal(chat_history(f->c, &CAROL, &h, &p, &st), &st, EC(NOT_MEMBER));
    mqstore_page_free(&p);
    h.conversation_id = "g:nosuchgroup";
    expect_refusal(chat_history(f->c, &ALICE, &h, &p, &st), &st, EC(UNKNOWN_CONVERSATION));
    mqstore_page_free(&p);
    /* A member: descending, before_seq exclusive. */
    h.conversation_id = "d:alice:bob";
    h.before_seq = 4;
    h.limit = 2;
    assert_int_equal(chat_history(f->c, &BOB, &h, &p, &st), 0);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.items[0].seq, 3);
    assert_int_equal(p.items[1].seq, 2);
    assert_int_equal(p.more, 1);
    assert_int_equal(p.items[0].inbox_seq, 0);
    mqstore_page_free(&p);
}

static void test_cursor_ack(void **state)
{
    fx *f = *state;
    chat_status st;
    for (int i = 0; i < 3; i++) {
        char cmid[16];
        snprintf(cmid, sizeof(cmid), "m%d", i);
        send_ok(f, &ALICE, "d:alice:bob", cmid);
    }
    expect_refusal(chat_cursor_ack(f->c, &BOB, 4, &st), &st, EC(INVALID_ARGUMENT));
    uint64_t cur = 99;
    assert_int_equal(mqstore_cursor_get(f->store, "bob", "phone", &cur), MQSTORE_OK);
    assert_int_equal(cur, 0);
    assert_int_equal(chat_cursor_ack(f->c, &BOB, 2, &st), 0);
    assert_int_equal(mqstore_cursor_get(f->store, "bob", "phone", &cur), MQSTORE_OK);
    assert_int_equal(cur, 2);
    /* Never down. */
    assert_int_equal(chat_cursor_ack(f->c, &BOB, 1, &st), 0);
    assert_int_equal(mqstore_cursor_get(f->store, "bob", "phone", &cur), MQSTORE_OK);
    assert_int_equal(cur, 2);
    /* bob's only known device acked 2, below the trim step: nothing is
     * trimmed yet (each trim is a range deletion every read pays for). */
    Mqchat__V1__SyncRequest s = MQCHAT__V1__SYNC_REQUEST__INIT;
    mqstore_page p;
    uint64_t head;
    assert_int_equal(chat_sync(f->c, &BOB, &s, &p, &head, &st), 0);
    assert_int_equal(head, 3);
    assert_int_equal(p.n, 3);
    mqstore_page_free(&p);
    /* Crossing a multiple of CHAT_TRIM_EVERY trims behind the cursor. */
    for (int i = 3; i < CHAT_TRIM_EVERY + 2; i++) {
        char cmid[16];
        snprintf(cmid, sizeof(cmid), "m%d", i);
        send_ok(f, &ALICE, "d:alice:bob", cmid);
    }
    assert_int_equal(chat_cursor_ack(f->c, &BOB, CHAT_TRIM_EVERY - 1, &st), 0);
    assert_int_equal(chat_sync(f->c, &BOB, &s, &p, &head, &st), 0);
    assert_int_equal(p.n, CHAT_TRIM_EVERY + 2); /* still nothing trimmed */
    mqstore_page_free(&p);
    assert_int_equal(chat_cursor_ack(f->c, &BOB, CHAT_TRIM_EVERY, &st), 0);
    assert_int_equal(chat_sync(f->c, &BOB, &s, &p, &head, &st), 0);
    assert_int_equal(head, CHAT_TRIM_EVERY + 2);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.items[0].inbox_seq, CHAT_TRIM_EVERY + 1);
    mqstore_page_free(&p);
}

static void test_conversations(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    send_ok(f, &ALICE, "d:alice:bob", "m1");
    send_ok(f, &ALICE, "d:alice:bob", "m2");
    send_ok(f, &BOB, "d:alice:bob", "m3");
    send_ok(f, &ALICE, "d:alice:carol", "m4");
    create_group(f, &ALICE, (char *[]){"bob"}, 1, conv);
    Mqchat__V1__ListConversations lc = MQCHAT__V1__LIST_CONVERSATIONS__INIT;
    chat_conv_list l;
    chat_status st;
    assert_int_equal(chat_conversations(f->c, &ALICE, &lc, &l, &st), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.more, 0);
    /* Ordered by id: d:... < g:... */
    assert_string_equal(l.items[0].conv, "d:alice:bob");
    assert_int_equal(l.items[0].info.head, 3);
    assert_int_equal(l.items[0].role, MQSTORE_ROLE_MEMBER);
    assert_string_equal(l.items[1].conv, "d:alice:carol");
    assert_int_equal(l.items[1].info.head, 1);
    assert_string_equal(l.items[2].conv, conv);
    assert_int_equal(l.items[2].info.head, 1);
    assert_int_equal(l.items[2].role, MQSTORE_ROLE_OWNER);
    chat_conv_list_free(&l);
    /* Paging. */
    lc.limit = 1;
    lc.after_conversation_id = "d:alice:bob";
    assert_int_equal(chat_conversations(f->c, &ALICE, &lc, &l, &st), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.more, 1);
    assert_string_equal(l.items[0].conv, "d:alice:carol");
    chat_conv_list_free(&l);
    /* carol sees only hers; dave nothing. */
    lc.limit = 0;
    lc.after_conversation_id = "";
    assert_int_equal(chat_conversations(f->c, &CAROL, &lc, &l, &st), 0);
    assert_int_equal(l.n, 1);
    chat_conv_list_free(&l);
    chat_caller dave = {.user = "dave", .device = "phone"};
    assert_int_equal(chat_conversations(f->c, &dave, &lc, &l, &st), 0);
    assert_int_equal(l.n, 0);
    chat_conv_list_free(&l);
}

/* Dedup is keyed on (user, device, client_msg_id); reusing an id in
 * another conversation within the retention is not a retry: it is refused
 * (INVALID_ARGUMENT), nothing is stored, and a real retry still works. */
static void test_dedup_id_reused_for_another_conversation(void **state)
{
    fx *f = *state;
    chat_written w;
    chat_status st;
    send_ok(f, &ALICE, "d:alice:bob", "m1");
    send_ok(f, &ALICE, "d:alice:bob", "m2");
    expect_refusal(send_msg(f, &ALICE, "d:alice:carol", "m1", "x", &w, &st), &st,
                   EC(INVALID_ARGUMENT));
    assert_non_null(strstr(st.msg, "another conversation"));
    chat_written_clear(&w);
    uint64_t h = 0;
    assert_int_equal(mqstore_conv_head(f->store, "d:alice:carol", &h), MQSTORE_OK);
    assert_int_equal(h, 0); /* not stored */
    assert_int_equal(send_msg(f, &ALICE, "d:alice:bob", "m1", "x", &w, &st), 0);
    assert_int_equal(w.r.duplicate, 1);
    assert_int_equal(w.r.seq, 1);
    chat_written_clear(&w);
}

/* The rules' contract (rules.h): a send needs the sending device, because
 * the dedup key names it; a caller without one is refused up front with a
 * clear message and nothing is written. Group changes accept a caller
 * without a device (an operator acting as the user). */
static void test_send_needs_a_device(void **state)
{
    fx *f = *state;
    chat_caller op = {.user = "alice", .device = NULL};
    chat_written w;
    chat_status st;
    expect_refusal(send_msg(f, &op, "d:alice:bob", "op1", "x", &w, &st), &st, EC(INVALID_ARGUMENT));
    assert_non_null(strstr(st.msg, "sending device"));
    chat_written_clear(&w);
    uint64_t head = 1;
    assert_int_equal(mqstore_conv_head(f->store, "d:alice:bob", &head), MQSTORE_OK);
    assert_int_equal(head, 0);
    char conv[MQC_ID_BUF];
    create_group(f, &op, (char *[]){"bob"}, 1, conv); /* fine */
    assert_int_equal(role_of(f, conv, "alice"), MQSTORE_ROLE_OWNER);
}

/* ================================================================== */
/* device layer                                                        */

static void test_conn_registry(void **state)
{
    fx *f = *state;
    assert_ptr_equal(conn_find(&f->d, CLIENT(0)), f->a_phone);
    assert_string_equal(f->a_phone->client_id, "alice:phone");
    assert_null(conn_find(&f->d, CLIENT(5)));
    /* A re-authentication on the same connection replaces the entry. */
    conn *c = conn_add(&f->d, CLIENT(2), "bob", "tablet");
    assert_non_null(c);
    assert_ptr_equal(conn_find(&f->d, CLIENT(2)), c);
    assert_string_equal(c->client_id, "bob:tablet");
    f->b_phone = c;
    /* Delivery follows the registry: bob's tablet, not a stale phone. */
    send_ok(f, &ALICE, "d:alice:bob", "warmup");
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 3);
    assert_true(pub_index("bob:tablet") >= 0);
    assert_int_equal(pub_index("bob:phone"), -1);
    /* Disconnected: nothing for bob, the inbox keeps it. */
    conn_remove(&f->d, CLIENT(2));
    assert_null(conn_find(&f->d, CLIENT(2)));
    conn_remove(&f->d, CLIENT(2)); /* DISCONNECT fires twice: harmless */
    stub_reset();
    assert_int_equal(dev_send(f, f->a_phone, "m2", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 2); /* the ACK and alice's laptop */
    assert_int_equal(pubs_on("/u/bob/inbox"), 0);
}

static void test_handle_send(void **state)
{
    fx *f = *state;
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 3);
    assert_int_equal(stub_log_count(), 0);
    assert_int_equal(dev_waiting(&f->d), 0);

    /* First the ACK, to the sending device only, at QoS 0. */
    Mqchat__V1__SendAck *a = decode_ack(expect_pub(0, "alice:phone", "/u/alice/d/phone/ack", 0));
    assert_string_equal(a->client_msg_id, "m1");
    assert_string_equal(a->conversation_id, "d:alice:bob");
    assert_int_equal(a->seq, 1);
    assert_int_equal(a->inbox_seq, 1);
    assert_true(a->server_time_ms > 0);
    assert_false(a->duplicate);
    assert_null(a->error);
    int64_t t = a->server_time_ms;
    mqchat__v1__send_ack__free_unpacked(a, NULL);

    /* Then the deliveries, on each user's inbox topic at QoS 1. */
    int b = pub_index("bob:phone"), l = pub_index("alice:laptop");
    assert_true(b > 0 && l > 0);
    const char *to[2][2] = {{"bob:phone", "/u/bob/inbox"}, {"alice:laptop", "/u/alice/inbox"}};
    int idx[2] = {b, l};
    for (int i = 0; i < 2; i++) {
        Mqchat__V1__ServerEvent *ev = decode_event(expect_pub(idx[i], to[i][0], to[i][1], 1));
        assert_int_equal(ev->body_case, MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE);
        Mqchat__V1__Message *m = ev->message;
        assert_string_equal(m->conversation_id, "d:alice:bob");
        assert_int_equal(m->seq, 1);
        assert_int_equal(m->inbox_seq, 1);
        assert_string_equal(m->sender_user_id, "alice");
        assert_string_equal(m->sender_device_id, "phone");
        assert_string_equal(m->client_msg_id, "m1");
        assert_int_equal(m->kind, KIND_USER);
        assert_string_equal(m->content_type, "text/plain");
        assert_int_equal(m->body.len, 2);
        assert_memory_equal(m->body.data, "hi", 2);
        assert_int_equal(m->server_time_ms, t);
        mqchat__v1__server_event__free_unpacked(ev, NULL);
    }
    /* Nothing echoed to the sender's own inbox delivery. */
    assert_int_equal(pub_index("alice:phone"), 0);
    assert_int_equal(pubs_on("/u/alice/inbox"), 1);

    /* The retry: the same ACK, marked duplicate, and no delivery. */
    stub_reset();
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 1);
    a = decode_ack(expect_pub(0, "alice:phone", "/u/alice/d/phone/ack", 0));
    assert_true(a->duplicate);
    assert_int_equal(a->seq, 1);
    assert_int_equal(a->inbox_seq, 1);
    assert_int_equal(a->server_time_ms, t);
    mqchat__v1__send_ack__free_unpacked(a, NULL);

    /* bob answers: alice's both devices get it with her next inbox_seq. */
    stub_reset();
    assert_int_equal(dev_send(f, f->b_phone, "b1", "d:alice:bob", "yo"), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 3);
    expect_pub(0, "bob:phone", "/u/bob/d/phone/ack", 0);
    assert_int_equal(pubs_on("/u/alice/inbox"), 2);
    assert_int_equal(pubs_on("/u/bob/inbox"), 0);
}

static void test_handle_send_refused(void **state)
{
    fx *f = *state;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(handle_send(&f->d, f->a_phone, junk, sizeof(junk)), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_pub_count(), 1);
    Mqchat__V1__SendAck *a = decode_ack(expect_pub(0, "alice:phone", "/u/alice/d/phone/ack", 0));
    assert_non_null(a->error);
    assert_int_equal(a->error->code, EC(MALFORMED));
    assert_true(a->error->message[0] != '\0');
    assert_string_equal(a->client_msg_id, "");
    assert_int_equal(a->seq, 0);
    mqchat__v1__send_ack__free_unpacked(a, NULL);
    expect_one_log("refused");

    /* Decodes but is invalid: answered under its client_msg_id. */
    stub_reset();
    assert_int_equal(dev_send(f, f->a_phone, "m1", "x:bad", "hi"), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_pub_count(), 1);
    a = decode_ack(pub_at(0));
    assert_int_equal(a->error->code, EC(INVALID_ARGUMENT));
    assert_string_equal(a->client_msg_id, "m1");
    assert_string_equal(a->error->request_id, "m1");
    assert_string_equal(a->conversation_id, "");
    mqchat__v1__send_ack__free_unpacked(a, NULL);
    expect_one_log("m1");

    /* Refused by the rule: NOT_MEMBER, nothing stored, nothing delivered. */
    stub_reset();
    assert_int_equal(dev_send(f, f->a_phone, "m2", "d:bob:carol", "hi"), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_pub_count(), 1);
    a = decode_ack(pub_at(0));
    assert_int_equal(a->error->code, EC(NOT_MEMBER));
    assert_string_equal(a->conversation_id, "d:bob:carol");
    mqchat__v1__send_ack__free_unpacked(a, NULL);
    expect_one_log("refused");
    assert_int_equal(mqstore_last_ticket(f->store), 0);
}

static void test_handle_request_sync(void **state)
{
    fx *f = *state;
    send_ok(f, &ALICE, "d:alice:bob", "m1");
    send_ok(f, &ALICE, "d:alice:bob", "m2");
    stub_reset();
    assert_int_equal(dev_sync(f, f->b_phone, "req-1", 0, 0), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 1);
    assert_int_equal(stub_log_count(), 0);
    Mqchat__V1__Response *r = decode_resp(expect_pub(0, "bob:phone", "/u/bob/d/phone/resp", 1));
    assert_string_equal(r->request_id, "req-1");
    assert_int_equal(r->body_case, MQCHAT__V1__RESPONSE__BODY_SYNC);
    assert_int_equal(r->sync->n_messages, 2);
    assert_int_equal(r->sync->inbox_head, 2);
    assert_false(r->sync->more);
    for (size_t i = 0; i < 2; i++) {
        Mqchat__V1__Message *m = r->sync->messages[i];
        assert_int_equal(m->inbox_seq, i + 1);
        assert_int_equal(m->seq, i + 1);
        assert_string_equal(m->sender_user_id, "alice");
        assert_string_equal(m->sender_device_id, "phone");
        assert_string_equal(m->client_msg_id, i ? "m2" : "m1");
        assert_int_equal(m->kind, KIND_USER);
        assert_memory_equal(m->body.data, "hello", 5);
    }
    mqchat__v1__response__free_unpacked(r, NULL);

    /* Paged. */
    stub_reset();
    assert_int_equal(dev_sync(f, f->b_phone, "req-2", 0, 1), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 1);
    r = decode_resp(pub_at(0));
    assert_int_equal(r->sync->n_messages, 1);
    assert_true(r->sync->more);
    mqchat__v1__response__free_unpacked(r, NULL);
}

static void test_handle_request_bad_id(void **state)
{
    fx *f = *state;
    assert_int_equal(dev_sync(f, f->b_phone, "bad id!", 0, 0), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_pub_count(), 1);
    Mqchat__V1__Response *r = decode_resp(expect_pub(0, "bob:phone", "/u/bob/d/phone/resp", 1));
    assert_string_equal(r->request_id, "");
    assert_int_equal(r->body_case, MQCHAT__V1__RESPONSE__BODY_ERROR);
    assert_int_equal(r->error->code, EC(INVALID_ARGUMENT));
    assert_string_equal(r->error->request_id, "");
    mqchat__v1__response__free_unpacked(r, NULL);
    expect_one_log("refused");

    /* Not a Request at all. */
    stub_reset();
    static const uint8_t junk[] = {0x0a, 0x7f, 'x'};
    assert_int_equal(handle_request(&f->d, f->b_phone, junk, sizeof(junk)), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_pub_count(), 1);
    r = decode_resp(pub_at(0));
    assert_int_equal(r->error->code, EC(MALFORMED));
    assert_string_equal(r->request_id, "");
    mqchat__v1__response__free_unpacked(r, NULL);
    expect_one_log("refused");

    /* A rule's refusal keeps the request_id. */
    stub_reset();
    Mqchat__V1__HistoryRequest h = MQCHAT__V1__HISTORY_REQUEST__INIT;
    h.conversation_id = "d:alice:carol";
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.request_id = "h1";
    req.body_case = MQCHAT__V1__REQUEST__BODY_HISTORY;
    req.history = &h;
    assert_int_equal(dev_request(f, f->b_phone, &req), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 1);
    r = decode_resp(pub_at(0));
    assert_string_equal(r->request_id, "h1");
    assert_int_equal(r->error->code, EC(NOT_MEMBER));
    assert_string_equal(r->error->request_id, "h1");
    mqchat__v1__response__free_unpacked(r, NULL);
    expect_one_log("h1");
}

static void test_handle_group_create(void **state)
{
    fx *f = *state;
    Mqchat__V1__GroupCreate gc = MQCHAT__V1__GROUP_CREATE__INIT;
    gc.title = "team";
    gc.member_ids = (char *[]){"bob"};
    gc.n_member_ids = 1;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.request_id = "g1";
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
    req.group_create = &gc;
    assert_int_equal(dev_request(f, f->a_phone, &req), MOSQ_ERR_SUCCESS);
    /* The CREATED event to every member's devices (the creator's too),
     * then the GroupResult. */
    assert_int_equal(stub_pub_count(), 4);
    assert_int_equal(pubs_on("/u/alice/inbox"), 2);
    assert_int_equal(pubs_on("/u/bob/inbox"), 1);
    Mqchat__V1__Response *r = decode_resp(expect_pub(3, "alice:phone", "/u/alice/d/phone/resp", 1));
    assert_string_equal(r->request_id, "g1");
    assert_int_equal(r->body_case, MQCHAT__V1__RESPONSE__BODY_GROUP);
    assert_int_equal(r->group->seq, 1);
    assert_true(mqc_conv_is_group(r->group->conversation_id));
    Mqchat__V1__ServerEvent *ev = decode_event(pub_at((size_t)pub_index("bob:phone")));
    assert_int_equal(ev->message->kind, KIND_EVENT);
    assert_non_null(ev->message->event);
    assert_int_equal(ev->message->event->type, EVT(CREATED));
    assert_string_equal(ev->message->conversation_id, r->group->conversation_id);
    assert_int_equal(ev->message->inbox_seq, 1);
    mqchat__v1__server_event__free_unpacked(ev, NULL);
    mqchat__v1__response__free_unpacked(r, NULL);
}

static void test_handle_typing_receipt(void **state)
{
    fx *f = *state;
    send_ok(f, &ALICE, "d:alice:bob", "m1");
    stub_reset();
    /* Typing: to the other members' devices, QoS 0, user_id filled in. */
    assert_int_equal(dev_typing(f, f->b_phone, "d:alice:bob"), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 2);
    assert_int_equal(pubs_on("/u/alice/inbox"), 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(pub_at(i)->qos, 0);
        Mqchat__V1__ServerEvent *ev = decode_event(pub_at(i));
        assert_int_equal(ev->body_case, MQCHAT__V1__SERVER_EVENT__BODY_TYPING);
        assert_string_equal(ev->typing->user_id, "bob");
        assert_true(ev->typing->typing);
        mqchat__v1__server_event__free_unpacked(ev, NULL);
    }
    stub_reset();
    conn *carol = conn_add(&f->d, CLIENT(3), "carol", "phone");
    assert_non_null(carol);
    assert_int_equal(dev_typing(f, carol, "d:alice:bob"), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_pub_count(), 1);
    Mqchat__V1__Response *r = decode_resp(expect_pub(0, "carol:phone", "/u/carol/d/phone/resp", 1));
    assert_int_equal(r->error->code, EC(NOT_MEMBER));
    mqchat__v1__response__free_unpacked(r, NULL);
    expect_one_log("refused");

    /* A receipt that moves: every member's devices hear of it (QoS 1). */
    stub_reset();
    assert_int_equal(dev_receipt(f, f->b_phone, "d:alice:bob", READ, 1), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 3);
    assert_int_equal(pubs_on("/u/alice/inbox"), 2);
    assert_int_equal(pubs_on("/u/bob/inbox"), 1);
    Mqchat__V1__ServerEvent *ev = decode_event(pub_at(0));
    assert_int_equal(ev->body_case, MQCHAT__V1__SERVER_EVENT__BODY_RECEIPT);
    assert_string_equal(ev->receipt->user_id, "bob");
    assert_int_equal(ev->receipt->read_seq, 1);
    assert_int_equal(ev->receipt->delivered_seq, 1);
    mqchat__v1__server_event__free_unpacked(ev, NULL);
    /* The same again: nothing moved, nobody is told, no answer. */
    stub_reset();
    assert_int_equal(dev_receipt(f, f->b_phone, "d:alice:bob", READ, 1), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 0);
    /* Above the head: refused on resp. */
    assert_int_equal(dev_receipt(f, f->b_phone, "d:alice:bob", READ, 9), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_pub_count(), 1);
    r = decode_resp(expect_pub(0, "bob:phone", "/u/bob/d/phone/resp", 1));
    assert_int_equal(r->error->code, EC(INVALID_ARGUMENT));
    mqchat__v1__response__free_unpacked(r, NULL);
}

static void test_rate_limit(void **state)
{
    fx *f = *state; /* rate_burst 2, rate_msgs_per_s 0.1 */
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(dev_send(f, f->a_phone, "m2", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    stub_reset();
    assert_int_equal(dev_send(f, f->a_phone, "m3", "d:alice:bob", "hi"), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_pub_count(), 1);
    Mqchat__V1__SendAck *a = decode_ack(expect_pub(0, "alice:phone", "/u/alice/d/phone/ack", 0));
    assert_non_null(a->error);
    assert_int_equal(a->error->code, EC(RATE_LIMITED));
    assert_true(a->error->retry_after_ms > 0);
    assert_true(a->error->retry_after_ms <= 10001); /* one token at 0.1/s */
    assert_string_equal(a->client_msg_id, "m3");
    assert_int_equal(a->seq, 0);
    mqchat__v1__send_ack__free_unpacked(a, NULL);
    expect_one_log("refused");
    assert_int_equal(head_of(f, "d:alice:bob"), 2); /* m3 not stored */
    /* Requests share the connection's bucket; other connections do not. */
    stub_reset();
    assert_int_equal(dev_sync(f, f->a_phone, "s1", 0, 0), MOSQ_ERR_ACL_DENIED);
    Mqchat__V1__Response *r = decode_resp(pub_at(0));
    assert_int_equal(r->error->code, EC(RATE_LIMITED));
    assert_string_equal(r->request_id, "s1");
    assert_true(r->error->retry_after_ms > 0);
    mqchat__v1__response__free_unpacked(r, NULL);
    stub_reset();
    assert_int_equal(dev_send(f, f->a_laptop, "m3", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
}

/* Refusals are logged once per kind and connection (device/refusals.c);
 * repeats are counted and summed up when the connection goes. */
static void test_refusal_log_once(void **state)
{
    fx *f = *state;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(handle_send(&f->d, f->a_phone, junk, sizeof(junk)), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(handle_send(&f->d, f->a_phone, junk, sizeof(junk)), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_pub_count(), 2); /* each refusal is answered */
    expect_one_log("MALFORMED");
    /* Another kind, or another connection: logged. */
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:bob:carol", "hi"), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(handle_send(&f->d, f->a_laptop, junk, sizeof(junk)), MOSQ_ERR_ACL_DENIED);
    assert_int_equal(stub_log_count(), 3);
    assert_non_null(strstr(stub_log_get(1)->line, "alice:phone"));
    assert_non_null(strstr(stub_log_get(2)->line, "alice:laptop"));
    /* The suppressed one is summed up at disconnect. */
    conn_remove(&f->d, CLIENT(0));
    f->a_phone = NULL;
    assert_int_equal(stub_log_count(), 4);
    assert_non_null(strstr(stub_log_get(3)->line, "alice:phone"));
    assert_non_null(strstr(stub_log_get(3)->line, "MALFORMED 1"));
}

/* The broker refusing a publish: logged once per publish, and the payload
 * the broker did not take is freed by the layer (the sanitizer build
 * would report a leak). */
static void test_publish_failure(void **state)
{
    fx *f = *state;
    stub_publish_rc = MOSQ_ERR_NOMEM;
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 3);
    assert_int_equal(stub_log_count(), 3);
    for (size_t i = 0; i < 3; i++)
        assert_non_null(strstr(stub_log_get(i)->line, "could not publish"));
    assert_int_equal(dev_waiting(&f->d), 0);
}

/* ================================================================== */
/* the durability order                                                */

static void test_order_sync_mode(void **state)
{
    fx *f = *state; /* SYNC, MANUAL driver */
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    /* Written, not durable: nothing may leave. */
    assert_true(mqstore_durable(f->store) < mqstore_last_ticket(f->store));
    assert_int_equal(stub_pub_count(), 0);
    assert_int_equal(dev_waiting(&f->d), 1);
    /* A retry before the fsync, a request, and a typing notice (no ticket
     * of its own): all queue behind the first ACK. */
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(dev_sync(f, f->a_phone, "r1", 0, 0), MOSQ_ERR_SUCCESS);
    assert_int_equal(dev_typing(f, f->b_phone, "d:alice:bob"), MOSQ_ERR_SUCCESS);
    out_drain(&f->d); /* a TICK with no fsync in between */
    assert_int_equal(stub_pub_count(), 0);
    assert_int_equal(dev_waiting(&f->d), 1);

    assert_int_equal(mqstore_sync(f->store), MQSTORE_OK);
    assert_int_equal(mqstore_durable(f->store), mqstore_last_ticket(f->store));
    out_drain(&f->d);
    assert_int_equal(dev_waiting(&f->d), 0);
    /* ACK, its deliveries, the duplicate ACK, the Response, typing x2. */
    assert_int_equal(stub_pub_count(), 7);
    Mqchat__V1__SendAck *a = decode_ack(expect_pub(0, "alice:phone", "/u/alice/d/phone/ack", 0));
    assert_false(a->duplicate);
    assert_int_equal(a->seq, 1);
    mqchat__v1__send_ack__free_unpacked(a, NULL);
    for (size_t i = 1; i < 3; i++) {
        const stub_pub *p = pub_at(i);
        assert_int_equal(p->qos, 1);
        if (strcmp(p->client_id, "bob:phone") == 0)
            assert_string_equal(p->topic, PREFIX "/u/bob/inbox");
        else
            expect_pub(i, "alice:laptop", "/u/alice/inbox", 1);
    }
    assert_string_not_equal(pub_at(1)->client_id, pub_at(2)->client_id);
    a = decode_ack(expect_pub(3, "alice:phone", "/u/alice/d/phone/ack", 0));
    assert_true(a->duplicate);
    assert_int_equal(a->seq, 1);
    mqchat__v1__send_ack__free_unpacked(a, NULL);
    Mqchat__V1__Response *r = decode_resp(expect_pub(4, "alice:phone", "/u/alice/d/phone/resp", 1));
    assert_string_equal(r->request_id, "r1");
    assert_int_equal(r->sync->n_messages, 1);
    mqchat__v1__response__free_unpacked(r, NULL);
    for (size_t i = 5; i < 7; i++) {
        assert_string_equal(pub_at(i)->topic, PREFIX "/u/alice/inbox");
        assert_int_equal(pub_at(i)->qos, 0);
    }
    assert_int_equal(stub_log_count(), 0);

    /* Once all is durable and nothing waits, a reply leaves at once. */
    stub_reset();
    assert_int_equal(dev_sync(f, f->b_phone, "r2", 0, 0), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 1);
    assert_int_equal(dev_waiting(&f->d), 0);
}

/* Teardown with publishes still queued: dropped, nothing leaks. */
static void test_order_sync_dropped(void **state)
{
    fx *f = *state;
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(dev_send(f, f->b_phone, "m2", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(dev_waiting(&f->d), 1);
    assert_int_equal(f->d.n_pending, 2);
    assert_int_equal(stub_pub_count(), 0);
}

static void test_order_os_mode(void **state)
{
    fx *f = *state; /* OS: durable when the write returns */
    assert_int_equal(dev_send(f, f->a_phone, "m1", "d:alice:bob", "hi"), MOSQ_ERR_SUCCESS);
    assert_int_equal(mqstore_durable(f->store), mqstore_last_ticket(f->store));
    assert_int_equal(stub_pub_count(), 3);
    assert_int_equal(dev_waiting(&f->d), 0);
    assert_int_equal(dev_sync(f, f->a_phone, "r1", 0, 0), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 4);
    expect_pub(3, "alice:phone", "/u/alice/d/phone/resp", 1);
}

/* ================================================================== */
/* presence: privacy rules and the live state (without Redis)          */

#define VIS(x) MQCHAT__V1__PRESENCE_VISIBILITY__PRESENCE_VISIBILITY_##x
#define PST(x) MQCHAT__V1__PRESENCE_STATE__PRESENCE_STATE_##x

static void set_visibility(fx *f, const chat_caller *who, Mqchat__V1__PresenceVisibility v,
                           int hide)
{
    Mqchat__V1__PresenceSettings ps = MQCHAT__V1__PRESENCE_SETTINGS__INIT;
    ps.visibility = v;
    ps.hide_last_seen = hide;
    chat_presence_prefs out;
    chat_status st;
    assert_int_equal(chat_presence_settings(f->c, who, &ps, &out, &st), 0);
}

static int may_watch(fx *f, const char *watcher, const char *target)
{
    chat_presence_prefs p;
    chat_status st;
    int allowed = -1;
    assert_int_equal(chat_presence_prefs_get(f->c, target, &p, &st), 0);
    assert_int_equal(chat_presence_may_watch(f->c, watcher, target, &p, &allowed, &st), 0);
    return allowed;
}

static void test_presence_contacts(void **state)
{
    fx *f = *state;
    assert_int_equal(chat_contacts(f->c, "alice", "alice"), 1);
    /* An implicit 1:1 conversation is not contact: it needs a message. */
    assert_int_equal(chat_contacts(f->c, "alice", "bob"), 0);
    Mqchat__V1__Typing t = MQCHAT__V1__TYPING__INIT;
    t.conversation_id = "d:alice:bob";
    mqstore_member_list ml;
    int large = 0;
    chat_status st;
    assert_int_equal(chat_typing(f->c, &BOB, &t, &ml, &large, &st), 0); /* creates it, head 0 */
    mqstore_member_list_free(&ml);
    assert_int_equal(chat_contacts(f->c, "alice", "bob"), 0);
    send_ok(f, &BOB, "d:alice:bob", "hi");
    assert_int_equal(chat_contacts(f->c, "alice", "bob"), 1);
    assert_int_equal(chat_contacts(f->c, "bob", "alice"), 1);
    /* A shared group, seen from either side. */
    assert_int_equal(chat_contacts(f->c, "carol", "alice"), 0);
    char conv[MQC_ID_BUF];
    create_group(f, &CAROL, (char *[]){"dave", "alice"}, 2, conv);
    assert_int_equal(chat_contacts(f->c, "carol", "alice"), 1);
    assert_int_equal(chat_contacts(f->c, "alice", "carol"), 1);
    assert_int_equal(chat_contacts(f->c, "alice", "dave"), 1);
    assert_int_equal(chat_contacts(f->c, "bob", "dave"), 0);
}

static void test_presence_privacy(void **state)
{
    fx *f = *state;
    chat_presence_prefs p;
    chat_status st;
    assert_int_equal(chat_presence_prefs_get(f->c, "alice", &p, &st), 0);
    assert_int_equal(p.visibility, VIS(CONTACTS)); /* the default */
    assert_false(p.hide_last_seen);
    assert_int_equal(may_watch(f, "carol", "alice"), 0); /* no shared conversation */
    assert_int_equal(may_watch(f, "alice", "alice"), 1);
    set_visibility(f, &ALICE, VIS(EVERYONE), 0);
    assert_int_equal(may_watch(f, "carol", "alice"), 1);
    set_visibility(f, &ALICE, VIS(NOBODY), 1);
    assert_int_equal(may_watch(f, "carol", "alice"), 1); /* may ask; sees UNKNOWN */
    /* UNSPECIFIED keeps the visibility; hide_last_seen is always set. */
    set_visibility(f, &ALICE, VIS(UNSPECIFIED), 0);
    assert_int_equal(chat_presence_prefs_get(f->c, "alice", &p, &st), 0);
    assert_int_equal(p.visibility, VIS(NOBODY));
    assert_false(p.hide_last_seen);
    /* Stored: another store handle (a reopen) sees it too. */
    mqstore_free(f->store);
    mqstore_options so;
    mqstore_options_init(&so);
    so.sync_driver = MQSTORE_SYNC_MANUAL;
    char *msg = NULL;
    assert_int_equal(mqstore_open(f->dir, &so, &f->store, &msg), MQSTORE_OK);
    f->d.store = f->d.chat.store = f->store;
    assert_int_equal(chat_presence_prefs_get(f->c, "alice", &p, &st), 0);
    assert_int_equal(p.visibility, VIS(NOBODY));
}

/* The PresenceUpdate events published to client_id, in order. */
static size_t updates_to(const char *client_id, Mqchat__V1__PresenceState *states, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < stub_pub_count(); i++) {
        const stub_pub *p = pub_at(i);
        if (!p->client_id || strcmp(p->client_id, client_id) != 0) continue;
        Mqchat__V1__ServerEvent *ev = decode_event(p);
        if (ev->body_case == MQCHAT__V1__SERVER_EVENT__BODY_PRESENCE && n < max)
            states[n++] = ev->presence->state;
        mqchat__v1__server_event__free_unpacked(ev, NULL);
    }
    return n;
}

static void watch(presence *pr, conn *c, char **users, size_t n)
{
    Mqchat__V1__PresenceWatch w = MQCHAT__V1__PRESENCE_WATCH__INIT;
    w.user_ids = users;
    w.n_user_ids = n;
    presence_watch(pr, c, "w1", &w);
}

/* The live state: online at the first connection, offline when the last
 * one leaves (debounce 0 here), watchers told, a second device changes
 * nothing, and a watch answer without Redis says UNKNOWN for users this
 * broker does not know. */
static void test_presence_live(void **state)
{
    fx *f = *state;
    send_ok(f, &BOB, "d:alice:bob", "hi"); /* contacts */
    presence *pr = presence_new(&f->d, NULL);
    assert_non_null(pr);
    f->d.pres = pr;
    presence_connect(pr, f->b_phone, "mqtt311");
    stub_reset();
    watch(pr, f->b_phone, (char *[]){"alice"}, 1);
    Mqchat__V1__Response *r = decode_resp(expect_pub(0, "bob:phone", "/u/bob/d/phone/resp", 1));
    assert_int_equal(r->body_case, MQCHAT__V1__RESPONSE__BODY_PRESENCE);
    assert_int_equal(r->presence->n_users, 1);
    assert_int_equal(r->presence->users[0]->state, PST(UNKNOWN)); /* not here, no Redis */
    mqchat__v1__response__free_unpacked(r, NULL);

    stub_reset();
    presence_connect(pr, f->a_phone, "mqtt5");
    presence_connect(pr, f->a_laptop, "mqtt5");
    Mqchat__V1__PresenceState st[8];
    assert_int_equal(updates_to("bob:phone", st, 8), 1);
    assert_int_equal(st[0], PST(ONLINE));
    stub_reset();
    presence_disconnect(pr, f->a_laptop);
    presence_tick(pr, mqc_mono_ms());
    assert_int_equal(updates_to("bob:phone", st, 8), 0); /* the phone is still there */
    presence_disconnect(pr, f->a_phone);
    presence_tick(pr, mqc_mono_ms());
    assert_int_equal(updates_to("bob:phone", st, 8), 1);
    assert_int_equal(st[0], PST(OFFLINE));
    /* A watch now answers from memory: OFFLINE with a last seen. */
    stub_reset();
    watch(pr, f->b_phone, (char *[]){"alice"}, 1);
    r = decode_resp(pub_at(0));
    assert_int_equal(r->presence->users[0]->state, PST(OFFLINE));
    assert_true(r->presence->users[0]->last_seen_ms > 0);
    mqchat__v1__response__free_unpacked(r, NULL);
    /* A stranger is refused, and nothing changes for bob's watch. */
    stub_reset();
    presence_connect(pr, f->a_phone, "mqtt5");
    conn *carol = conn_add(&f->d, CLIENT(3), "carol", "phone");
    watch(pr, carol, (char *[]){"alice"}, 1);
    r = decode_resp(pub_index("carol:phone") >= 0 ? pub_at((size_t)pub_index("carol:phone"))
                                                  : pub_at(0));
    assert_int_equal(r->body_case, MQCHAT__V1__RESPONSE__BODY_ERROR);
    assert_int_equal(r->error->code, EC(PERMISSION_DENIED));
    mqchat__v1__response__free_unpacked(r, NULL);
    assert_int_equal(updates_to("bob:phone", st, 8), 1);
    assert_int_equal(st[0], PST(ONLINE));
    /* Hiding: bob sees UNKNOWN at once. */
    stub_reset();
    Mqchat__V1__PresenceSettings ps = MQCHAT__V1__PRESENCE_SETTINGS__INIT;
    ps.visibility = VIS(NOBODY);
    presence_settings(pr, f->a_phone, "s1", &ps);
    assert_int_equal(updates_to("bob:phone", st, 8), 1);
    assert_int_equal(st[0], PST(UNKNOWN));
    presence_disconnect(pr, carol);
    conn_remove(&f->d, CLIENT(3));
    presence_disconnect(pr, f->a_phone);
    presence_disconnect(pr, f->b_phone);
    presence_tick(pr, mqc_mono_ms());
    presence_free(pr);
    f->d.pres = NULL;
}

static int setup_presence(void **state)
{
    static const char *const extra[] = {"presence_debounce_ms", "0", NULL};
    return fx_setup(state, MQSTORE_DURABILITY_OS, extra);
}

#define T(fn, setup) cmocka_unit_test_setup_teardown(fn, setup, fx_teardown)

/* ------------------------------------------------------------------ */
/* large groups: mode, rooms and the lane                              */

/* Create a group of `n` users u000.. plus bob through the device layer (as
 * a device would: the rooms follow the write); its id in conv. */
static void dev_create_group(fx *f, size_t n, char *conv)
{
    char names[300][8];
    char *ids[301];
    assert_true(n <= 300);
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "u%03zu", i);
        ids[i] = names[i];
    }
    ids[n] = "bob";
    Mqchat__V1__GroupCreate gc = MQCHAT__V1__GROUP_CREATE__INIT;
    gc.member_ids = ids;
    gc.n_member_ids = n + 1;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.request_id = "g1";
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_CREATE;
    req.group_create = &gc;
    stub_reset();
    assert_int_equal(dev_request(f, f->a_phone, &req), MOSQ_ERR_SUCCESS);
    assert_int_equal(mqstore_sync(f->store), MQSTORE_OK); /* SYNC mode: let it leave */
    dev_tick(&f->d);
    /* The GroupResult to alice's phone is the last publish of the pass. */
    Mqchat__V1__Response *r = NULL;
    for (size_t i = 0; i < stub_pub_count() && !r; i++)
        if (strcmp(pub_at(i)->client_id, "alice:phone") == 0 && strstr(pub_at(i)->topic, "/resp"))
            r = decode_resp(pub_at(i));
    assert_non_null(r);
    assert_non_null(r->group);
    snprintf(conv, MQC_ID_BUF, "%s", r->group->conversation_id);
    mqchat__v1__response__free_unpacked(r, NULL);
}

/* Deliveries of `conv` published so far: per client id, the seqs in the
 * order they left; returns the number of deliveries. */
static size_t count_deliveries(const char *conv, int check_order)
{
    size_t n = 0;
    for (size_t i = 0; i < stub_pub_count(); i++) {
        const stub_pub *p = pub_at(i);
        if (!strstr(p->topic, "/inbox")) continue;
        Mqchat__V1__ServerEvent *ev = decode_event(p);
        if (ev->message && strcmp(ev->message->conversation_id, conv) == 0) {
            n++;
            if (check_order) {
                /* Every earlier delivery to the same device has a lower seq. */
                for (size_t j = 0; j < i; j++) {
                    const stub_pub *q = pub_at(j);
                    if (!strstr(q->topic, "/inbox") || strcmp(q->client_id, p->client_id)) continue;
                    Mqchat__V1__ServerEvent *e2 = decode_event(q);
                    if (e2->message && strcmp(e2->message->conversation_id, conv) == 0)
                        assert_true(e2->message->seq < ev->message->seq);
                    mqchat__v1__server_event__free_unpacked(e2, NULL);
                }
            }
        }
        mqchat__v1__server_event__free_unpacked(ev, NULL);
    }
    return n;
}

/* add_members, keeping what was written (clear *w after). */
static int add_members_w(fx *f, const chat_caller *who, const char *conv, char **users, size_t n,
                         chat_written *w, chat_status *st)
{
    Mqchat__V1__GroupAddMembers ga = MQCHAT__V1__GROUP_ADD_MEMBERS__INIT;
    ga.conversation_id = (char *)conv;
    ga.n_user_ids = n;
    ga.user_ids = users;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_ADD;
    req.group_add = &ga;
    return group(f, who, &req, w, st);
}

/* A group created with a large member list starts large; adding and
 * removing members switches it with hysteresis, and the switching event
 * says so. */
static void test_large_mode_switch(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    chat_written w;
    chat_status st;
    create_group(f, &ALICE, (char *[]){"bob"}, 1, conv); /* 2 members: small */
    assert_int_equal(add_members_w(f, &ALICE, conv, (char *[]){"carol"}, 1, &w, &st), 0);
    assert_int_equal(w.r.large, 0);
    assert_int_equal(w.ev.mode, 0);
    chat_written_clear(&w);
    /* 4 members: large; the event says so and is in every inbox. */
    assert_int_equal(add_members_w(f, &ALICE, conv, (char *[]){"dave"}, 1, &w, &st), 0);
    assert_int_equal(w.r.large, 1);
    assert_int_equal(w.ev.mode, MQCHAT__V1__CONVERSATION_MODE__CONVERSATION_MODE_LARGE);
    assert_int_equal(w.r.n_fanout, 4);
    assert_int_equal(w.r.pulled, 0);
    chat_written_clear(&w);
    /* 3 members: still large (hysteresis: small again below 3). */
    assert_int_equal(remove_members(f, &ALICE, conv, (char *[]){"dave"}, 1, &w, &st), 0);
    assert_int_equal(w.r.large, 1);
    assert_int_equal(w.ev.mode, 0);
    assert_int_equal(w.r.n_fanout, 1); /* only the removed user's inbox */
    assert_int_equal(w.r.pulled, 1);
    chat_written_clear(&w);
    /* A message of a large group: no inbox entry, inbox_seq 0. */
    uint64_t seq = send_ok(f, &BOB, conv, "m-large");
    assert_int_equal(seq, 5); /* created, 2 adds, a removal, then this */
    uint64_t ih;
    assert_int_equal(mqstore_inbox_head(f->store, "alice", &ih), MQSTORE_OK);
    mqstore_page pg;
    assert_int_equal(mqstore_inbox_read(f->store, "alice", 0, 100, 1 << 20, &pg), MQSTORE_OK);
    for (size_t i = 0; i < pg.n; i++)
        assert_true(strcmp(pg.items[i].conv, conv) != 0 || pg.items[i].seq != seq);
    mqstore_page_free(&pg);
    /* 2 members: small again. */
    assert_int_equal(remove_members(f, &ALICE, conv, (char *[]){"carol"}, 1, &w, &st), 0);
    assert_int_equal(w.r.large, 0);
    assert_int_equal(w.ev.mode, MQCHAT__V1__CONVERSATION_MODE__CONVERSATION_MODE_SMALL);
    assert_int_equal(w.r.n_fanout, 3);
    chat_written_clear(&w);
    /* Created with 4: large from the start. */
    char big[MQC_ID_BUF];
    create_group(f, &ALICE, (char *[]){"bob", "carol", "dave"}, 3, big);
    mqstore_conv_info info;
    assert_int_equal(mqstore_conv_info_get(f->store, big, &info), MQSTORE_OK);
    assert_int_equal(info.large, 1);
    assert_int_equal(info.members, 4);
}

/* One message to a room of 252 other devices leaves 100 publishes per
 * pass, each device gets each message once and in seq order, a 1:1
 * message is not held behind the walk, and a device that leaves mid-walk
 * or joins mid-walk breaks nothing. */
/* Membership changes of a large group apply in the lane's order: a member
 * removed while a broadcast of an earlier message is still queued gets it
 * (it is in their window), not what is written after the removal; a re-add
 * right after applies after the removal (rooms.c): what was written before
 * it applied reaches them by pull (the next live message shows the gap),
 * what follows live. */
static void test_large_remove_while_queued(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    char name[8];
    for (size_t i = 0; i < 250; i++) {
        snprintf(name, sizeof(name), "u%03zu", i);
        assert_non_null(conn_add(&f->d, CLIENT(10 + i), name, "phone"));
    }
    dev_create_group(f, 299, conv);
    for (int i = 0; i < 10 && f->d.lane_head; i++)
        dev_tick(&f->d);
    assert_null(f->d.lane_head);
    dev_tick(&f->d);
    stub_reset();
    assert_int_equal(dev_send(f, f->a_phone, "m1", conv, "before"), MOSQ_ERR_SUCCESS);
    Mqchat__V1__GroupRemoveMembers gr = MQCHAT__V1__GROUP_REMOVE_MEMBERS__INIT;
    gr.conversation_id = conv;
    gr.user_ids = (char *[]){"u200"};
    gr.n_user_ids = 1;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.request_id = "r1";
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE;
    req.group_remove = &gr;
    assert_int_equal(dev_request(f, f->a_phone, &req), MOSQ_ERR_SUCCESS);
    assert_int_equal(dev_send(f, f->a_phone, "m2", conv, "while out"), MOSQ_ERR_SUCCESS);
    Mqchat__V1__GroupAddMembers ga = MQCHAT__V1__GROUP_ADD_MEMBERS__INIT;
    ga.conversation_id = conv;
    ga.user_ids = (char *[]){"u200"};
    ga.n_user_ids = 1;
    req.request_id = "r2";
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_ADD;
    req.group_add = &ga;
    assert_int_equal(dev_request(f, f->a_phone, &req), MOSQ_ERR_SUCCESS);
    assert_int_equal(dev_send(f, f->a_phone, "m3", conv, "back"), MOSQ_ERR_SUCCESS);
    assert_int_equal(mqstore_sync(f->store), MQSTORE_OK);
    for (int i = 0; i < 40 && f->d.lane_head; i++)
        dev_tick(&f->d);
    assert_null(f->d.lane_head);
    int before = 0, out = 0, back = 0, other_out = 0;
    for (size_t i = 0; i < stub_pub_count(); i++) {
        const stub_pub *p = pub_at(i);
        if (!strstr(p->topic, "/inbox")) continue;
        Mqchat__V1__ServerEvent *ev = decode_event(p);
        if (ev->message && ev->message->kind == MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER &&
            strcmp(ev->message->conversation_id, conv) == 0) {
            const char *b = (const char *)ev->message->body.data;
            size_t n = ev->message->body.len;
            int is_u200 = strcmp(p->client_id, "u200:phone") == 0;
            if (is_u200 && n == 6 && memcmp(b, "before", 6) == 0) before++;
            if (is_u200 && n == 9 && memcmp(b, "while out", 9) == 0) out++;
            if (is_u200 && n == 4 && memcmp(b, "back", 4) == 0) back++;
            if (!is_u200 && n == 9 && memcmp(b, "while out", 9) == 0) other_out++;
        }
        mqchat__v1__server_event__free_unpacked(ev, NULL);
    }
    assert_int_equal(before, 1); /* queued before the removal: in the window */
    assert_int_equal(out, 0);    /* written while removed */
    assert_true(back <= 1);      /* written before the re-add applied: live or pulled */
    assert_true(other_out > 200);
    /* Once the lane applied the re-add, u200 is in the room again. */
    stub_reset();
    dev_tick(&f->d);
    assert_int_equal(dev_send(f, f->a_phone, "m4", conv, "later"), MOSQ_ERR_SUCCESS);
    assert_int_equal(mqstore_sync(f->store), MQSTORE_OK);
    for (int i = 0; i < 40 && f->d.lane_head; i++)
        dev_tick(&f->d);
    assert_true(pub_index("u200:phone") >= 0);
}

static void test_large_lane(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    conn *u[300];
    char name[8];
    for (size_t i = 0; i < 250; i++) {
        snprintf(name, sizeof(name), "u%03zu", i);
        u[i] = conn_add(&f->d, CLIENT(10 + i), name, "phone");
        assert_non_null(u[i]);
    }
    dev_create_group(f, 299, conv);
    mqstore_conv_info info;
    assert_int_equal(mqstore_conv_info_get(f->store, conv, &info), MQSTORE_OK);
    assert_int_equal(info.large, 1);
    /* Drain what the creation queued (its event is in every inbox). */
    for (int i = 0; i < 10 && f->d.lane_head; i++)
        dev_tick(&f->d);
    assert_null(f->d.lane_head);

    dev_tick(&f->d); /* a fresh pass: 100 publishes */
    stub_reset();
    assert_int_equal(dev_send(f, f->a_phone, "m1", conv, "hello all"), MOSQ_ERR_SUCCESS);
    assert_int_equal(dev_send(f, f->a_phone, "m2", conv, "again"), MOSQ_ERR_SUCCESS);
    /* The two ACKs at once; the broadcasts wait for the pass's TICK. */
    assert_int_equal(stub_pub_count(), 2);
    assert_int_equal(count_deliveries(conv, 0), 0);
    dev_tick(&f->d); /* 100 deliveries of m1: the pass's budget */
    assert_int_equal(stub_pub_count(), 102);
    assert_int_equal(count_deliveries(conv, 0), 100);
    /* A 1:1 message passes the queued walk at once. */
    assert_int_equal(dev_send(f, f->b_phone, "d1", "d:alice:bob", "psst"), MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 102 + 3); /* ACK + alice's two devices */
    /* A device leaves before the walk reaches it; one joins meanwhile. */
    conn_remove(&f->d, CLIENT(10 + 249));
    conn *late = conn_add(&f->d, CLIENT(10 + 250), "u250", "phone");
    assert_non_null(late);
    for (int i = 0; i < 20 && f->d.lane_head; i++)
        dev_tick(&f->d);
    assert_null(f->d.lane_head);
    /* 252 devices in the room at send time (253 minus the sender's),
     * minus the one that left: 251 per message, each once, in order. */
    assert_int_equal(count_deliveries(conv, 1), 2 * 251);
    for (size_t i = 0; i < stub_pub_count(); i++) {
        const stub_pub *p = pub_at(i);
        assert_string_not_equal(p->client_id, "u249:phone");
        assert_string_not_equal(p->client_id, "u250:phone");
        if (strstr(p->topic, "/inbox") && strcmp(p->client_id, "alice:phone") != 0) {
            Mqchat__V1__ServerEvent *ev = decode_event(p);
            if (ev->message && strcmp(ev->message->conversation_id, conv) == 0) {
                assert_int_equal(ev->message->inbox_seq, 0); /* no inbox entry */
                assert_int_equal(p->qos, 1);
            }
            mqchat__v1__server_event__free_unpacked(ev, NULL);
        }
    }
    /* The late device gets what follows. */
    stub_reset();
    dev_tick(&f->d);
    assert_int_equal(dev_send(f, f->b_phone, "m3", conv, "later"), MOSQ_ERR_SUCCESS);
    for (int i = 0; i < 20 && f->d.lane_head; i++)
        dev_tick(&f->d);
    assert_true(pub_index("u250:phone") >= 0);
    /* Typing reaches the room at QoS 0, not the typist's own devices;
     * a receipt in a large group is stored and sent to nobody. */
    stub_reset();
    dev_tick(&f->d);
    assert_int_equal(dev_typing(f, f->b_phone, conv), MOSQ_ERR_SUCCESS);
    for (int i = 0; i < 20 && f->d.lane_head; i++)
        dev_tick(&f->d);
    assert_int_equal(stub_pub_count(), 252); /* 253 in the room, bob's phone not */
    for (size_t i = 0; i < stub_pub_count(); i++) {
        assert_int_equal(pub_at(i)->qos, 0);
        assert_string_not_equal(pub_at(i)->client_id, "bob:phone");
    }
    stub_reset();
    assert_int_equal(
        dev_receipt(f, f->b_phone, conv, MQCHAT__V1__RECEIPT_TYPE__RECEIPT_TYPE_READ, 2),
        MOSQ_ERR_SUCCESS);
    assert_int_equal(stub_pub_count(), 0);
    uint64_t dl, rd;
    assert_int_equal(mqstore_receipt_get(f->store, conv, "bob", &dl, &rd), MQSTORE_OK);
    assert_int_equal(rd, 2);
    assert_int_equal(stub_log_count(), 0);
}

/* The seqs of `conv` delivered to client_id, in the order they left. */
static size_t seqs_to(const char *client_id, const char *conv, uint64_t *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < stub_pub_count() && n < max; i++) {
        const stub_pub *p = pub_at(i);
        if (strcmp(p->client_id, client_id) != 0 || !strstr(p->topic, "/inbox")) continue;
        Mqchat__V1__ServerEvent *ev = decode_event(p);
        if (ev->message && strcmp(ev->message->conversation_id, conv) == 0)
            out[n++] = ev->message->seq;
        mqchat__v1__server_event__free_unpacked(ev, NULL);
    }
    return n;
}

/* A switch back to small while an older broadcast is still queued: the
 * switch event's copies wait in the lane; the broadcast finishes first;
 * the next message must still not overtake the event through the FIFO
 * (the room stays routed while the copies are queued). */
static void test_large_switch_back_order(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    dev_create_group(f, 3, conv); /* alice, u000..u002, bob: 5, large */
    assert_int_equal(mqstore_sync(f->store), MQSTORE_OK);
    for (int i = 0; i < 10 && (f->d.head || f->d.lane_head); i++)
        dev_tick(&f->d);
    stub_reset();
    assert_int_equal(dev_send(f, f->b_phone, "m1", conv, "large"), MOSQ_ERR_SUCCESS);
    assert_int_equal(mqstore_sync(f->store), MQSTORE_OK); /* m1 durable, not yet sent */
    Mqchat__V1__GroupRemoveMembers gr = MQCHAT__V1__GROUP_REMOVE_MEMBERS__INIT;
    gr.conversation_id = conv;
    gr.user_ids = (char *[]){"u000", "u001", "u002"};
    gr.n_user_ids = 3;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.request_id = "rm";
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_REMOVE;
    req.group_remove = &gr;
    /* Queues the SMALL event behind m1's broadcast, which leaves now. */
    assert_int_equal(dev_request(f, f->a_phone, &req), MOSQ_ERR_SUCCESS);
    mqstore_conv_info info;
    assert_int_equal(mqstore_conv_info_get(f->store, conv, &info), MQSTORE_OK);
    assert_int_equal(info.large, 0);
    assert_int_equal(dev_send(f, f->b_phone, "m2", conv, "small"), MOSQ_ERR_SUCCESS);
    assert_int_equal(mqstore_sync(f->store), MQSTORE_OK);
    for (int i = 0; i < 10 && (f->d.head || f->d.lane_head); i++)
        dev_tick(&f->d);
    assert_null(f->d.lane_head);
    uint64_t seqs[8];
    const char *devices[] = {"alice:phone", "alice:laptop"};
    for (size_t d = 0; d < 2; d++) {
        size_t n = seqs_to(devices[d], conv, seqs, 8);
        assert_int_equal(n, 3); /* m1, the event, m2 */
        assert_int_equal(seqs[1], seqs[0] + 1);
        assert_int_equal(seqs[2], seqs[1] + 1);
    }
}

/* Admins-only posting: a member's send is refused, an admin's is not. */
static void test_large_admins_post(void **state)
{
    fx *f = *state;
    char conv[MQC_ID_BUF];
    create_group(f, &ALICE, (char *[]){"bob"}, 1, conv);
    Mqchat__V1__GroupSettings gs = MQCHAT__V1__GROUP_SETTINGS__INIT;
    gs.conversation_id = conv;
    gs.posting = MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_ADMINS;
    Mqchat__V1__Request req = MQCHAT__V1__REQUEST__INIT;
    req.request_id = "s1";
    req.body_case = MQCHAT__V1__REQUEST__BODY_GROUP_SETTINGS;
    req.group_settings = &gs;
    chat_written w;
    chat_status st;
    expect_refusal(group(f, &BOB, &req, &w, &st), &st, EC(PERMISSION_DENIED));
    assert_int_equal(group(f, &ALICE, &req, &w, &st), 0);
    assert_int_equal(w.ev.type, EVT(SETTINGS_CHANGED));
    assert_int_equal(w.ev.posting, MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_ADMINS);
    chat_written_clear(&w);
    uint64_t head = head_of(f, conv);
    Mqchat__V1__SendRequest sr = MQCHAT__V1__SEND_REQUEST__INIT;
    sr.client_msg_id = "b1";
    sr.conversation_id = conv;
    expect_refusal(chat_send(f->c, &BOB, &sr, &w, &st), &st, EC(PERMISSION_DENIED));
    assert_int_equal(head_of(f, conv), head);
    send_ok(f, &ALICE, conv, "announcement");
    assert_int_equal(head_of(f, conv), head + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* rules */
        T(test_send_direct_creates, setup_os),
        T(test_send_direct_creates, setup_sync),
        T(test_large_mode_switch, setup_large),
        T(test_large_lane, setup_large),
        T(test_large_remove_while_queued, setup_large),
        T(test_large_admins_post, setup_large),
        T(test_large_switch_back_order, setup_large_sync),
        T(test_send_not_naming_sender, setup_os),
        T(test_send_unknown_group, setup_os),
        T(test_group_create, setup_os),
        T(test_group_member_cannot_add, setup_os),
        T(test_group_remove_owner, setup_os),
        T(test_group_owner_leave, setup_os),
        T(test_group_full, setup_limits),
        T(test_group_set_role, setup_os),
        T(test_receipts, setup_os),
        T(test_typing, setup_os),
        T(test_sync_paging, setup_os),
        T(test_sync_paging, setup_sync),
        T(test_sync_page_max, setup_limits),
        T(test_history, setup_os),
        T(test_cursor_ack, setup_os),
        T(test_conversations, setup_os),
        T(test_dedup_id_reused_for_another_conversation, setup_os),
        T(test_send_needs_a_device, setup_os),
        /* device layer */
        T(test_conn_registry, setup_os),
        T(test_handle_send, setup_os),
        T(test_handle_send_refused, setup_os),
        T(test_handle_request_sync, setup_os),
        T(test_handle_request_bad_id, setup_os),
        T(test_handle_group_create, setup_os),
        T(test_handle_typing_receipt, setup_os),
        T(test_rate_limit, setup_rate),
        T(test_refusal_log_once, setup_os),
        T(test_publish_failure, setup_os),
        T(test_presence_contacts, setup_os),
        T(test_presence_privacy, setup_os),
        T(test_presence_live, setup_presence),
        /* durability order */
        T(test_order_sync_mode, setup_sync),
        T(test_order_sync_dropped, setup_sync),
        T(test_order_os_mode, setup_os),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
