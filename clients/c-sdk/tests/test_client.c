/* test_client — the SDK's delivery rules without a network: packets are
 * fed with mqchat__handle_incoming() to a poll-mode client that never
 * connects, and the test checks what the app is handed and what the SQLite
 * state says after the client is freed and made again on the same file:
 * live inbox messages in order and once, duplicates dropped, a message
 * committed only once its event is freed (so an app that never finished
 * with it gets it again), own sends coming back completing the outbox,
 * bad input an ERROR event; with a persist hook, exactly once across a
 * kill -9 at random points (the app's table in the same transaction as the
 * SDK's record), and a refused persist offered again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "internal.h"
#include "mqchat.h"
#include "mqchat.pb-c.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[64];

static int token(void *data, char *buf, size_t cap, int refresh)
{
    return -1;
}

/* The app's persist hook: one row per message in its own table. refuse:
 * the seq it refuses once (0: none). */
static uint64_t refuse;
static int persist(void *data, void *db, const mqchat_event *ev)
{
    if (refuse && ev->message.seq == refuse) {
        refuse = 0;
        return -1;
    }
    sqlite3 *d = db;
    sqlite3_stmt *s;
    if (sqlite3_exec(d, "CREATE TABLE IF NOT EXISTS app(conv TEXT, seq INTEGER, body TEXT)", NULL,
                     NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(d, "INSERT INTO app VALUES(?, ?, ?)", -1, &s, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(s, 1, ev->message.conv, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (int64_t)ev->message.seq);
    sqlite3_bind_text(s, 3, (const char *)ev->message.body, (int)ev->message.body_len,
                      SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

static mqchat_client *make_with(mqchat_persist_fn p)
{
    mqchat_options o;
    mqchat_options_init(&o);
    o.user = "me";
    o.device = "phone";
    o.state_dir = dir;
    o.token = token;
    o.poll_mode = 1;
    o.persist = p;
    char *err = NULL;
    mqchat_client *c = mqchat_new(&o, &err);
    assert_non_null(c);
    return c;
}

static mqchat_client *make(void)
{
    return make_with(NULL);
}

static void feed_msg(mqchat_client *c, const char *conv, uint64_t seq, uint64_t inbox_seq,
                     const char *from, const char *device, const char *cmid, const char *body)
{
    Mqchat__V1__ServerEvent e = MQCHAT__V1__SERVER_EVENT__INIT;
    Mqchat__V1__Message m = MQCHAT__V1__MESSAGE__INIT;
    m.conversation_id = (char *)conv;
    m.seq = seq;
    m.inbox_seq = inbox_seq;
    m.sender_user_id = (char *)from;
    m.sender_device_id = (char *)device;
    m.client_msg_id = (char *)cmid;
    m.kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER;
    m.body.data = (uint8_t *)body;
    m.body.len = strlen(body);
    e.body_case = MQCHAT__V1__SERVER_EVENT__BODY_MESSAGE;
    e.message = &m;
    uint8_t buf[1024];
    size_t n = mqchat__v1__server_event__pack(&e, buf);
    assert_int_equal(mqchat__handle_incoming(c, mqchat__topic(c, "inbox"), buf, n), 0);
}

/* Takes every queued event; returns how many MESSAGE events, their bodies
 * joined by ',' in out. Frees them unless keep is set (then *kept holds the
 * first MESSAGE event, not freed). */
static int take(mqchat_client *c, char *out, size_t cap, int *errors, mqchat_event **kept)
{
    int n = 0;
    out[0] = 0;
    if (errors) *errors = 0;
    mqchat_event *ev;
    while ((ev = mqchat_next_event(c))) {
        if (ev->type == MQCHAT_EV_ERROR && errors) (*errors)++;
        if (ev->type == MQCHAT_EV_MESSAGE) {
            n++;
            size_t l = strlen(out);
            snprintf(out + l, cap - l, "%s%.*s", l ? "," : "", (int)ev->message.body_len,
                     (const char *)ev->message.body);
            if (kept && !*kept) {
                *kept = ev;
                continue;
            }
        }
        mqchat_event_free(ev);
    }
    return n;
}

static int setup(void **state)
{
    strcpy(dir, "/tmp/mqchat-sdk-client-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    char p[128];
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/me.phone.sqlite%s", dir, sfx[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

static void test_order_dups_and_commit(void **state)
{
    char got[256];
    /* The first life runs in a child that ends with _exit(), as a kill -9
     * would end it: "three" was taken by the app and never freed. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        mqchat_client *c = make();
        feed_msg(c, "d:a:me", 1, 1, "a", "p", "x1", "one");
        feed_msg(c, "d:a:me", 2, 2, "a", "p", "x2", "two");
        feed_msg(c, "d:a:me", 2, 2, "a", "p", "x2", "two");  /* duplicate */
        feed_msg(c, "d:a:me", 1, 1, "a", "p", "x1", "one");  /* old */
        feed_msg(c, "d:a:me", 4, 4, "a", "p", "x4", "four"); /* gap: waits for the sync */
        int ok = take(c, got, sizeof(got), NULL, NULL) == 2 && strcmp(got, "one,two") == 0;
        feed_msg(c, "d:a:me", 3, 3, "a", "p", "x3", "three");
        mqchat_event *kept = NULL;
        ok = ok && take(c, got, sizeof(got), NULL, &kept) == 1 && kept;
        _exit(ok ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    mqchat_client *c = make();
    feed_msg(c, "d:a:me", 2, 2, "a", "p", "x2", "two"); /* committed: dropped */
    feed_msg(c, "d:a:me", 3, 3, "a", "p", "x3", "three");
    assert_int_equal(take(c, got, sizeof(got), NULL, NULL), 1);
    assert_string_equal(got, "three"); /* again, once */
    mqchat_free(c);
    c = make();
    feed_msg(c, "d:a:me", 3, 3, "a", "p", "x3", "three");
    feed_msg(c, "d:a:me", 4, 4, "a", "p", "x4", "four");
    assert_int_equal(take(c, got, sizeof(got), NULL, NULL), 1);
    assert_string_equal(got, "four");
    mqchat_free(c);
}

static void test_own_send_and_large(void **state)
{
    char got[256], cmid[MQCHAT_ID_BUF];
    mqchat_client *c = make();
    assert_int_equal(mqchat_send(c, "d:a:me", "text/plain", "hey", 3, cmid), MQCHAT_OK);
    assert_int_equal(mqchat_outbox_count(c), 1);
    /* Our own message comes back by sync / inbox: completes the send, not handed. */
    feed_msg(c, "d:a:me", 1, 1, "me", "phone", cmid, "hey");
    int sent = 0;
    mqchat_event *ev;
    while ((ev = mqchat_next_event(c))) {
        assert_int_not_equal(ev->type, MQCHAT_EV_MESSAGE);
        if (ev->type == MQCHAT_EV_SENT) {
            sent++;
            assert_string_equal(ev->sent.cmid, cmid);
            assert_int_equal(ev->sent.seq, 1);
            assert_int_equal(ev->sent.outbox_left, 0);
        }
        mqchat_event_free(ev);
    }
    assert_int_equal(sent, 1);
    assert_int_equal(mqchat_outbox_count(c), 0);
    /* Another device of mine: handed. */
    feed_msg(c, "d:a:me", 2, 2, "me", "tablet", "t1", "from tablet");
    assert_int_equal(take(c, got, sizeof(got), NULL, NULL), 1);
    /* Large conversation, live (inbox_seq 0): by seq; a gap waits for a pull. */
    feed_msg(c, "g:big", 1, 0, "b", "p", "b1", "L1");
    feed_msg(c, "g:big", 2, 0, "b", "p", "b2", "L2");
    feed_msg(c, "g:big", 2, 0, "b", "p", "b2", "L2");
    feed_msg(c, "g:big", 5, 0, "b", "p", "b5", "L5");
    assert_int_equal(take(c, got, sizeof(got), NULL, NULL), 2);
    assert_string_equal(got, "L1,L2");
    mqchat_free(c);
    c = make();
    feed_msg(c, "g:big", 2, 0, "b", "p", "b2", "L2");
    feed_msg(c, "g:big", 3, 0, "b", "p", "b3", "L3");
    assert_int_equal(take(c, got, sizeof(got), NULL, NULL), 1);
    assert_string_equal(got, "L3");
    mqchat_free(c);
}

/* The small API: names of codes, the connection state, the conversation
 * list's fields (a Response fed on the response topic). */
static void test_names_state_and_list(void **state)
{
    assert_string_equal(mqchat_strerror(MQCHAT_OK), "OK");
    assert_string_equal(mqchat_strerror(MQCHAT_ERR_OFFLINE), "ERR_OFFLINE");
    assert_string_equal(mqchat_strerror(MQCHAT_E_RATE_LIMITED), "E_RATE_LIMITED");
    assert_string_equal(mqchat_strerror(MQCHAT_E_NOT_FOUND), "E_NOT_FOUND");
    assert_string_equal(mqchat_strerror(14), "UNKNOWN");
    assert_string_equal(mqchat_strerror(-9), "UNKNOWN");
    mqchat_client *c = make();
    assert_int_equal(mqchat_connection_state(c), MQCHAT_CONN_DISCONNECTED);
    Mqchat__V1__Message last = MQCHAT__V1__MESSAGE__INIT;
    last.conversation_id = "g:team";
    last.seq = 7;
    last.sender_user_id = "a";
    last.body.data = (uint8_t *)"hi";
    last.body.len = 2;
    Mqchat__V1__ConversationSummary g = MQCHAT__V1__CONVERSATION_SUMMARY__INIT, d = g;
    g.conversation_id = "g:team";
    g.title = "Team";
    g.head_seq = 7;
    g.role = MQCHAT__V1__ROLE__ROLE_ADMIN;
    g.posting = MQCHAT__V1__POSTING_POLICY__POSTING_POLICY_ADMINS;
    g.last_message = &last;
    d.conversation_id = "d:a:me";
    Mqchat__V1__ConversationSummary *cs[2] = {&g, &d};
    Mqchat__V1__ListConversationsResponse l = MQCHAT__V1__LIST_CONVERSATIONS_RESPONSE__INIT;
    l.n_conversations = 2;
    l.conversations = cs;
    Mqchat__V1__Response r = MQCHAT__V1__RESPONSE__INIT;
    r.request_id = "a1";
    r.body_case = MQCHAT__V1__RESPONSE__BODY_CONVERSATIONS;
    r.conversations = &l;
    uint8_t buf[512];
    size_t n = mqchat__v1__response__pack(&r, buf);
    assert_int_equal(mqchat__handle_incoming(c, mqchat__topic(c, "resp"), buf, n), 0);
    mqchat_event *ev = mqchat_next_event(c);
    assert_non_null(ev);
    assert_int_equal(ev->type, MQCHAT_EV_RESPONSE);
    assert_int_equal(ev->response.n_conversations, 2);
    const mqchat_conversation *a = &ev->response.conversations[0], *b = a + 1;
    assert_int_equal(a->is_group, 1);
    assert_string_equal(a->title, "Team");
    assert_string_equal(b->title, "");
    assert_int_equal(a->role, MQCHAT_ROLE_ADMIN);
    assert_int_equal(a->posting, MQCHAT_POSTING_ADMINS);
    assert_non_null(a->last_message);
    assert_int_equal(a->last_message->seq, 7);
    assert_memory_equal(a->last_message->body, "hi", 2);
    assert_int_equal(b->is_group, 0);
    assert_null(b->last_message);
    mqchat_event_free(ev);
    mqchat_free(c);
}

/* A restored server (a new restore floor) while the app still holds
 * messages of the old numbering: the new messages, reusing their seqs, are
 * handed, and freeing the old events writes no old handed seq back, so a
 * restart hands nothing twice and drops nothing. */
static void feed_sync(mqchat_client *c, uint64_t floor, uint64_t head, Mqchat__V1__Message **ms,
                      size_t n)
{
    Mqchat__V1__SyncResponse sr = MQCHAT__V1__SYNC_RESPONSE__INIT;
    sr.restore_floor = floor;
    sr.inbox_head = head;
    sr.messages = ms;
    sr.n_messages = n;
    uint8_t buf[2048];
    assert_true(mqchat__v1__sync_response__get_packed_size(&sr) <= sizeof(buf));
    size_t len = mqchat__v1__sync_response__pack(&sr, buf);
    assert_int_equal(mqchat__handle_sync(c, buf, len), 0);
}

static void test_restored_server_with_events_held(void **state)
{
    char got[256];
    mqchat_client *c = make();
    for (int i = 1; i <= 8; i++) {
        char b[8];
        snprintf(b, sizeof(b), "o%d", i);
        feed_msg(c, "d:a:me", (uint64_t)i, (uint64_t)i, "a", "p", b, b);
    }
    mqchat_event *held[8];
    int n = 0;
    for (mqchat_event *ev; (ev = mqchat_next_event(c));)
        if (ev->type == MQCHAT_EV_MESSAGE && n < 8)
            held[n++] = ev;
        else
            mqchat_event_free(ev);
    assert_int_equal(n, 8);
    for (int i = 0; i < 3; i++)
        mqchat_event_free(held[i]); /* 4 to 8 stay with the app */
    /* The restored store: it had seqs 1..3; new 4 and 5 at inbox seqs 1000.. */
    Mqchat__V1__Message m[2], *mp[2];
    const char *bodies[2] = {"n4", "n5"};
    for (int i = 0; i < 2; i++) {
        mqchat__v1__message__init(&m[i]);
        m[i].conversation_id = "d:a:me";
        m[i].seq = 4 + (uint64_t)i;
        m[i].inbox_seq = 1000 + (uint64_t)i;
        m[i].sender_user_id = "a";
        m[i].sender_device_id = "p";
        m[i].client_msg_id = (char *)bodies[i];
        m[i].kind = MQCHAT__V1__MESSAGE_KIND__MESSAGE_KIND_USER;
        m[i].body.data = (uint8_t *)bodies[i];
        m[i].body.len = 2;
        mp[i] = &m[i];
    }
    feed_sync(c, 1000, 1001, mp, 2);
    for (int i = 3; i < 8; i++)
        mqchat_event_free(held[i]); /* their old seqs must not come back as handed */
    assert_int_equal(take(c, got, sizeof(got), NULL, NULL), 2);
    assert_string_equal(got, "n4,n5");
    mqchat_free(c);
    /* After a restart: the same sync again hands nothing (handed 5, cursor
     * 1001 on disk), the next message of the new numbering, 6, is handed
     * (not taken for the old 6). */
    c = make();
    feed_sync(c, 1000, 1001, mp, 2);
    assert_int_equal(take(c, got, sizeof(got), NULL, NULL), 0);
    feed_msg(c, "d:a:me", 6, 1002, "a", "p", "n6", "n6");
    assert_int_equal(take(c, got, sizeof(got), NULL, NULL), 1);
    assert_string_equal(got, "n6");
    mqchat_free(c);
}

static void test_bad_input(void **state)
{
    char got[64];
    int errors;
    mqchat_client *c = make();
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(mqchat__handle_incoming(c, mqchat__topic(c, "inbox"), junk, sizeof(junk)), -1);
    assert_int_equal(mqchat__handle_incoming(c, mqchat__topic(c, "ack"), junk, sizeof(junk)), -1);
    assert_int_equal(mqchat__handle_incoming(c, mqchat__topic(c, "resp"), junk, sizeof(junk)), -1);
    assert_int_equal(mqchat__handle_incoming(c, mqchat__topic(c, "inbox"), "", 0),
                     -1); /* no body */
    assert_int_equal(take(c, got, sizeof(got), &errors, NULL), 0);
    assert_int_equal(errors, 4);
    assert_int_equal(mqchat_fd(c) >= 0, 1);
    mqchat_free(c);
}

/* Counts rows of the app table: n, distinct seqs, max seq (-1: no table). */
static int app_rows(int64_t *distinct, int64_t *max)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/me.phone.sqlite", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    sqlite3_stmt *s;
    int n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*), count(DISTINCT seq), max(seq) FROM app", -1, &s,
                           NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW) {
            n = sqlite3_column_int(s, 0);
            *distinct = sqlite3_column_int64(s, 1);
            *max = sqlite3_column_int64(s, 2);
        }
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    return n;
}

static void test_persist_exactly_once_across_kill(void **state)
{
    enum { N = 3000, ROUNDS = 12 }; /* N: a life takes longer than the kill delay */
    unsigned seed = 0;
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) seed = (unsigned)time(NULL);
    srand(seed);
    int finished = 0, killed = 0;
    for (int round = 0; round < ROUNDS && !finished; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            /* Each life feeds the whole stream again, as a sync from the
             * committed cursor would: what was stored is not offered again. */
            mqchat_client *c = make_with(persist);
            char body[32], got[64];
            for (int i = 1; i <= N; i++) {
                snprintf(body, sizeof(body), "m%d", i);
                feed_msg(c, "d:a:me", (uint64_t)i, (uint64_t)i, "a", "p", body, body);
                take(c, got, sizeof(got), NULL, NULL);
            }
            mqchat_free(c);
            _exit(0);
        }
        if (round < ROUNDS - 1) {
            usleep((useconds_t)(rand() % 40000));
            kill(pid, SIGKILL);
        }
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (WIFSIGNALED(st)) killed++; /* died mid-stream */
        if (WIFEXITED(st)) {
            assert_int_equal(WEXITSTATUS(st), 0);
            finished = 1;
        }
    }
    assert_true(finished);
    assert_true(killed > 0); /* else nothing was tested */
    int64_t distinct = 0, max = 0;
    int n = app_rows(&distinct, &max);
    if (n != N || distinct != N || max != N)
        fail_msg("seed %u, %d kills: app table has %d rows, %lld distinct, max %lld", seed, killed,
                 n, (long long)distinct, (long long)max);
}

static void test_persist_refused_offered_again(void **state)
{
    char got[256];
    int errors = 0;
    mqchat_client *c = make_with(persist);
    refuse = 3;
    feed_msg(c, "d:a:me", 1, 1, "a", "p", "x1", "one");
    feed_msg(c, "d:a:me", 2, 2, "a", "p", "x2", "two");
    feed_msg(c, "d:a:me", 3, 3, "a", "p", "x3", "three"); /* refused: rewinds to 2 */
    feed_msg(c, "d:a:me", 4, 4, "a", "p", "x4", "four");  /* a gap now: waits for a sync */
    assert_int_equal(take(c, got, sizeof(got), &errors, NULL), 2);
    assert_string_equal(got, "one,two");
    assert_int_equal(errors, 1);
    /* The sync from the committed cursor brings 3 and 4 again. */
    feed_msg(c, "d:a:me", 3, 3, "a", "p", "x3", "three");
    feed_msg(c, "d:a:me", 4, 4, "a", "p", "x4", "four");
    assert_int_equal(take(c, got, sizeof(got), &errors, NULL), 2);
    assert_string_equal(got, "three,four");
    mqchat_free(c);
    int64_t distinct = 0, max = 0;
    assert_int_equal(app_rows(&distinct, &max), 4);
    assert_int_equal(distinct, 4);
    /* Restart: nothing is offered again. */
    c = make_with(persist);
    feed_msg(c, "d:a:me", 4, 4, "a", "p", "x4", "four");
    assert_int_equal(take(c, got, sizeof(got), NULL, NULL), 0);
    mqchat_free(c);
    assert_int_equal(app_rows(&distinct, &max), 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_order_dups_and_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_send_and_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_state_and_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restored_server_with_events_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persist_exactly_once_across_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persist_refused_offered_again, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
