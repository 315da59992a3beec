/* Unit tests for the store's operations on stored messages, written against
 * the contract in offline-queue/include/mqstore.h: retention (by age, by
 * count, per-conversation overrides, what compaction removes and what it
 * leaves as stubs, the head that must survive), edits in the batch of their
 * event (mqstore_append.replace_seq), deleting a conversation for everyone
 * (mqstore_conv_delete) and erasing a user (mqstore_user_erase).
 *
 * Each test gets its own store in a temporary directory (the fixture,
 * tests/support/store_fx.h); the clock is injected (options.clock_ms) so
 * messages age without sleeping. What compaction left on disk is checked
 * with plain RocksDB on the closed store (tests/support/raw_db.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_fx.h"

#include <rocksdb/c.h>

#define HOUR_MS INT64_C(3600000)
#define DAY_MS (24 * HOUR_MS)

/* ---- store helpers ------------------------------------------------------- */

/* Create conv with members (the first is the actor); its event is seq 1. */
static void conv_make(fx *f, const char *conv, const char *const *members, size_t n,
                      mqstore_mode mode)
{
    mqstore_result r;
    mqstore_event ev = ev_make(members[0], "created", mode);
    EXPECT_OK(mqstore_conv_create(f->s, conv, members, NULL, n, &ev, &r));
    assert_int_equal(r.seq, 1);
    mqstore_result_clear(&r);
}

static mqstore_err send_raw(fx *f, const char *conv, const char *user, const char *cmid,
                            const char *text, mqstore_result *r)
{
    mqstore_append a = {
        .conv = conv,
        .sender_user = user,
        .sender_device = "d",
        .client_msg_id = cmid,
        .kind = MSG_KIND,
        .payload = text,
        .payload_len = strlen(text),
    };
    return mqstore_append_msg(f->s, &a, r);
}

static uint64_t send_text(fx *f, const char *conv, const char *user, const char *text)
{
    mqstore_result r;
    EXPECT_OK(send_raw(f, conv, user, NULL, text, &r));
    assert_int_equal(r.duplicate, 0);
    uint64_t seq = r.seq;
    mqstore_result_clear(&r);
    return seq;
}

/* An edit: the event `text` (cmid may be NULL) replacing seq's payload. */
static mqstore_err send_edit(fx *f, const char *conv, const char *user, const char *cmid,
                             const char *text, uint64_t seq, const char *repl, mqstore_result *r)
{
    mqstore_append a = {
        .conv = conv,
        .sender_user = user,
        .sender_device = "d",
        .client_msg_id = cmid,
        .kind = EV_KIND,
        .payload = text,
        .payload_len = strlen(text),
        .replace_seq = seq,
        .replace_payload = repl,
        .replace_len = repl ? strlen(repl) : 0,
    };
    return mqstore_append_msg(f->s, &a, r);
}

/* Fails unless m is message (conv, seq) with payload `text` (NULL: an
 * expired item without payload). */
static void check_item(const mqstore_msg *m, const char *conv, uint64_t seq, const char *text)
{
    assert_string_equal(m->conv, conv);
    assert_int_equal(m->seq, seq);
    if (text == NULL) {
        assert_int_equal(m->expired, 1);
        assert_int_equal(m->payload_len, 0);
        return;
    }
    assert_int_equal(m->expired, 0);
    assert_int_equal(m->payload_len, strlen(text));
    assert_memory_equal(m->payload, text, strlen(text));
}

/* Message (conv, seq) read alone must be `text` (NULL: expired). */
static void check_get(fx *f, const char *conv, uint64_t seq, const char *text)
{
    mqstore_page p;
    EXPECT_OK(mqstore_msg_get(f->s, conv, seq, &p));
    assert_int_equal(p.n, 1);
    check_item(&p.items[0], conv, seq, text);
    mqstore_page_free(&p);
}

/* The seqs history holds for conv, newest first, and how many expired. */
static size_t history_seqs(fx *f, const char *conv, uint64_t *seqs, size_t cap, size_t *expired)
{
    mqstore_page p;
    EXPECT_OK(mqstore_history_read(f->s, conv, 0, 10000, &p));
    assert_true(p.n <= cap);
    *expired = 0;
    for (size_t i = 0; i < p.n; i++) {
        seqs[i] = p.items[i].seq;
        if (p.items[i].expired) {
            assert_int_equal(p.items[i].payload_len, 0);
            (*expired)++;
        }
    }
    size_t n = p.n;
    mqstore_page_free(&p);
    return n;
}

/* ---- raw reads of the closed store ---------------------------------------- */

/* The stored value of message (conv, seq), malloc'ed (NULL: no key). The
 * store must be closed. */
static char *raw_msg(fx *f, const char *conv, uint64_t seq, size_t *len)
{
    raw_db r;
    raw_open_ok(&r, f->dir);
    char k[200];
    size_t n = strlen(conv);
    memcpy(k, conv, n + 1);
    for (int i = 0; i < 8; i++)
        k[n + 1 + i] = (char)(seq >> (56 - 8 * i));
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    char *err = NULL;
    char *v = rocksdb_get_cf(r.db, ro, r.cf[RAW_MSGS], k, n + 9, len, &err);
    assert_null(err);
    rocksdb_readoptions_destroy(ro);
    raw_close(&r);
    char *copy = NULL;
    if (v) {
        copy = malloc(*len + 1);
        assert_non_null(copy);
        memcpy(copy, v, *len);
        rocksdb_free(v);
    }
    return copy;
}

/* 1 if any value of column family cf contains `text` (the store must be
 * closed). */
static int raw_cf_contains(fx *f, int cf, const char *text)
{
    raw_db r;
    raw_open_ok(&r, f->dir);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r.db, ro, r.cf[cf]);
    int found = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t vlen;
        const char *v = rocksdb_iter_value(it, &vlen);
        if (memmem(v, vlen, text, strlen(text))) found = 1;
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    raw_close(&r);
    return found;
}

static int raw_msgs_contain(fx *f, const char *text)
{
    return raw_cf_contains(f, RAW_MSGS, text);
}

/* Message (conv, seq) on disk: 0 absent, 1 present without `text`, 2 with. */
static int raw_state(fx *f, const char *conv, uint64_t seq, const char *text)
{
    size_t len = 0;
    char *v = raw_msg(f, conv, seq, &len);
    if (!v) return 0;
    int with = memmem(v, len, text, strlen(text)) != NULL;
    free(v);
    return with ? 2 : 1;
}

/* ======================================================================== */
/* retention                                                                */
/* ======================================================================== */

/* By age, the store's option: compaction removes the old messages below
 * the head; reads return expired items for them where something names
 * them, and history what exists. */
static void test_age_global(void **state)
{
    fx *f = *state;
    f->opt.retention_ms = DAY_MS;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, 2, MQSTORE_MODE_KEEP);
    assert_int_equal(send_text(f, "c", "a", "old-2"), 2);
    assert_int_equal(send_text(f, "c", "b", "old-3"), 3);
    fx_advance(f, 2 * DAY_MS);
    /* Expired, not compacted yet: reads still return them. */
    check_get(f, "c", 2, "old-2");
    assert_int_equal(send_text(f, "c", "a", "new-4"), 4);
    EXPECT_OK(mqstore_compact(f->s));

    uint64_t seqs[16];
    size_t expired;
    assert_int_equal(history_seqs(f, "c", seqs, 16, &expired), 1);
    assert_int_equal(seqs[0], 4);
    assert_int_equal(expired, 0);
    check_get(f, "c", 2, NULL);
    check_get(f, "c", 4, "new-4");
    mqstore_page p;
    EXPECT_ERR(mqstore_msg_get(f->s, "c", 5, &p), MQSTORE_ERR_NOTFOUND);

    /* b's inbox still names 1..4: the gone ones as expired items, with the
     * time of their inbox entry. */
    EXPECT_OK(mqstore_inbox_read(f->s, "b", 0, 100, SIZE_MAX, &p));
    assert_int_equal(p.n, 4);
    for (size_t i = 0; i < 3; i++) {
        check_item(&p.items[i], "c", i + 1, NULL);
        assert_int_equal(p.items[i].inbox_seq, i + 1);
        assert_int_equal(p.items[i].server_time_ms, T0);
    }
    check_item(&p.items[3], "c", 4, "new-4");
    assert_int_equal(p.items[3].inbox_seq, 4);
    mqstore_page_free(&p);
    /* max_bytes counts payloads: expired items have none. */
    EXPECT_OK(mqstore_inbox_read(f->s, "b", 0, 100, 1, &p));
    assert_int_equal(p.n, 4);
    mqstore_page_free(&p);

    mqstore_conv_info ci;
    EXPECT_OK(mqstore_conv_info_get(f->s, "c", &ci));
    assert_int_equal(ci.head, 4);
    assert_int_equal(ci.last_time_ms, T0 + 2 * DAY_MS);

    fx_close(f);
    assert_int_equal(raw_state(f, "c", 1, "created"), 0);
    assert_int_equal(raw_state(f, "c", 2, "old-2"), 0);
    assert_int_equal(raw_state(f, "c", 3, "old-3"), 0);
    assert_int_equal(raw_state(f, "c", 4, "new-4"), 2);
}

/* INVARIANT: the head is the log's last key. Expiring everything leaves
 * the head as a stub (payload gone, envelope kept), and after a reopen the
 * next append continues the seqs. A store that does not know a head (just
 * reopened) stubs expired messages instead of removing them. */
static void test_head_survives(void **state)
{
    fx *f = *state;
    f->opt.retention_ms = HOUR_MS;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, 2, MQSTORE_MODE_KEEP);
    conv_make(f, "u", mem, 2, MQSTORE_MODE_KEEP);
    for (int i = 0; i < 3; i++) {
        send_text(f, "c", "a", "body-c");
        send_text(f, "u", "b", "body-u");
    }
    /* Reopened: the store knows no head until it writes; then it knows c's. */
    fx_reopen(f);
    assert_int_equal(send_text(f, "c", "a", "body-c"), 5);
    fx_advance(f, 2 * HOUR_MS);
    EXPECT_OK(mqstore_compact(f->s));

    uint64_t seqs[16];
    size_t expired;
    assert_int_equal(history_seqs(f, "c", seqs, 16, &expired), 1);
    assert_int_equal(seqs[0], 5);
    assert_int_equal(expired, 1);
    /* u's head is not known: every key stays, as a stub. */
    assert_int_equal(history_seqs(f, "u", seqs, 16, &expired), 4);
    assert_int_equal(expired, 4);
    mqstore_page p;
    EXPECT_OK(mqstore_msg_get(f->s, "c", 5, &p));
    check_item(&p.items[0], "c", 5, NULL);
    assert_string_equal(p.items[0].sender_user, "a");
    assert_int_equal(p.items[0].kind, MSG_KIND);
    assert_int_equal(p.items[0].server_time_ms, T0);
    mqstore_page_free(&p);
    mqstore_conv_info ci;
    EXPECT_OK(mqstore_conv_info_get(f->s, "c", &ci));
    assert_int_equal(ci.head, 5);
    assert_int_equal(ci.last_time_ms, T0);
    /* A stub stays a stub at the next compaction. */
    EXPECT_OK(mqstore_compact(f->s));
    check_get(f, "c", 5, NULL);

    /* The seqs continue after a reopen. */
    fx_reopen(f);
    assert_int_equal(chead(f, "c"), 5);
    assert_int_equal(chead(f, "u"), 4);
    assert_int_equal(send_text(f, "c", "b", "after"), 6);
    fx_reopen(f);
    assert_int_equal(chead(f, "c"), 6);
    assert_int_equal(send_text(f, "u", "a", "after"), 5);
    fx_close(f);
    assert_int_equal(raw_state(f, "c", 4, "body-c"), 0);
    assert_int_equal(raw_state(f, "c", 5, "body-c"), 1);
    assert_int_equal(raw_state(f, "c", 6, "after"), 2);
    assert_int_equal(raw_state(f, "u", 2, "body-u"), 1);
    assert_false(raw_msgs_contain(f, "body-"));
}

/* A message goes only once the head above it is durable: in SYNC mode,
 * before an fsync covered the head's write, compaction only stubs. */
static void test_head_durable(void **state)
{
    fx *f = *state;
    f->opt.durability = MQSTORE_DURABILITY_SYNC;
    f->opt.sync_driver = MQSTORE_SYNC_MANUAL;
    f->opt.retention_ms = HOUR_MS;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, 2, MQSTORE_MODE_KEEP);
    send_text(f, "c", "a", "m2");
    send_text(f, "c", "a", "m3");
    assert_int_equal(mqstore_durable(f->s), 0);
    fx_advance(f, 2 * HOUR_MS);
    EXPECT_OK(mqstore_compact(f->s));
    uint64_t seqs[8];
    size_t expired;
    assert_int_equal(history_seqs(f, "c", seqs, 8, &expired), 3);
    assert_int_equal(expired, 3);
    EXPECT_OK(mqstore_sync(f->s));
    EXPECT_OK(mqstore_compact(f->s));
    assert_int_equal(history_seqs(f, "c", seqs, 8, &expired), 1);
    assert_true(seqs[0] == 3 && expired == 1);
}

/* Per-conversation overrides of the age: shorter, keep forever, back to
 * the store's; they survive membership changes and reopens, and the
 * filter knows them after a reopen. */
static void test_age_override(void **state)
{
    fx *f = *state;
    f->opt.retention_ms = DAY_MS;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "g", mem, 2, MQSTORE_MODE_KEEP);
    conv_make(f, "keep", mem, 2, MQSTORE_MODE_KEEP);
    conv_make(f, "short", mem, 2, MQSTORE_MODE_KEEP);
    int64_t age;
    uint64_t count;
    EXPECT_OK(mqstore_conv_retention_get(f->s, "g", &age, &count));
    assert_true(age == 0 && count == 0);
    EXPECT_OK(mqstore_conv_retention_set(f->s, "keep", MQSTORE_KEEP_FOREVER, 0));
    EXPECT_OK(mqstore_conv_retention_set(f->s, "short", HOUR_MS, 0));
    EXPECT_ERR(mqstore_conv_retention_set(f->s, "nope", HOUR_MS, 0), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_conv_retention_get(f->s, "nope", &age, &count), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_conv_retention_set(f->s, "bad id", HOUR_MS, 0), MQSTORE_ERR_INVAL);
    /* Any negative age is "forever". */
    EXPECT_OK(mqstore_conv_retention_set(f->s, "keep", -5, 0));
    EXPECT_OK(mqstore_conv_retention_get(f->s, "keep", &age, &count));
    assert_true(age == MQSTORE_KEEP_FOREVER && count == 0);
    /* A membership change rewrites the conversation's record: the override stays. */
    const char *const c1[] = {"c"};
    mqstore_event ev = ev_make("a", "added c", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(mqstore_members_add(f->s, "keep", c1, NULL, 1, &ev, &r)); /* seq 2 */
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_conv_retention_get(f->s, "keep", &age, &count));
    assert_int_equal(age, MQSTORE_KEEP_FOREVER);
    send_text(f, "g", "a", "g-2");
    send_text(f, "keep", "a", "keep-3");
    send_text(f, "short", "a", "short-2");

    fx_advance(f, 2 * HOUR_MS);
    send_text(f, "g", "a", "g-3");
    send_text(f, "keep", "a", "keep-4");
    send_text(f, "short", "a", "short-3");
    EXPECT_OK(mqstore_compact(f->s));
    check_get(f, "short", 2, NULL);
    check_get(f, "short", 3, "short-3");
    check_get(f, "g", 2, "g-2");
    check_get(f, "keep", 3, "keep-3");

    /* Reopened, the table of overrides is loaded before anything compacts. */
    fx_reopen(f);
    EXPECT_OK(mqstore_conv_retention_get(f->s, "short", &age, &count));
    assert_int_equal(age, HOUR_MS);
    fx_advance(f, 2 * DAY_MS);
    send_text(f, "g", "a", "g-4");
    send_text(f, "keep", "a", "keep-5");
    EXPECT_OK(mqstore_compact(f->s));
    check_get(f, "g", 2, NULL);
    check_get(f, "g", 3, NULL);
    check_get(f, "g", 4, "g-4");
    check_get(f, "keep", 1, "created");
    check_get(f, "keep", 3, "keep-3");
    check_get(f, "keep", 4, "keep-4");

    /* Back to the store's option: "keep" expires like the rest. */
    EXPECT_OK(mqstore_conv_retention_set(f->s, "keep", 0, 0));
    fx_reopen(f);
    send_text(f, "keep", "b", "keep-6");
    EXPECT_OK(mqstore_compact(f->s));
    check_get(f, "keep", 3, NULL);
    check_get(f, "keep", 6, "keep-6");
    fx_close(f);
    assert_int_equal(raw_state(f, "keep", 3, "keep-3"), 0);
    assert_int_equal(raw_state(f, "short", 2, "short-2"), 0);
}

/* By count: the newest retention_count seqs stay; overrides per
 * conversation; a head the store does not know (nothing written since
 * open) expires nothing by count. */
static void test_count(void **state)
{
    fx *f = *state;
    f->opt.retention_count = 3;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, 2, MQSTORE_MODE_KEEP);
    conv_make(f, "all", mem, 2, MQSTORE_MODE_KEEP);
    conv_make(f, "one", mem, 2, MQSTORE_MODE_KEEP);
    conv_make(f, "cold", mem, 2, MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_conv_retention_set(f->s, "all", 0, MQSTORE_KEEP_ALL));
    EXPECT_OK(mqstore_conv_retention_set(f->s, "one", 0, 1));
    char text[32];
    for (int i = 2; i <= 7; i++) {
        snprintf(text, sizeof text, "m%d", i);
        send_text(f, "c", "a", text);
        send_text(f, "all", "a", text);
        send_text(f, "one", "a", text);
        send_text(f, "cold", "a", text);
    }
    fx_reopen(f); /* "cold" is not written again: its head stays unknown */
    send_text(f, "c", "b", "m8");
    send_text(f, "all", "b", "m8");
    send_text(f, "one", "b", "m8");
    EXPECT_OK(mqstore_compact(f->s));
    uint64_t seqs[16];
    size_t expired;
    assert_int_equal(history_seqs(f, "c", seqs, 16, &expired), 3);
    assert_true(seqs[0] == 8 && seqs[1] == 7 && seqs[2] == 6 && expired == 0);
    check_get(f, "c", 5, NULL);
    assert_int_equal(history_seqs(f, "all", seqs, 16, &expired), 8);
    assert_int_equal(expired, 0);
    assert_int_equal(history_seqs(f, "one", seqs, 16, &expired), 1);
    assert_true(seqs[0] == 8 && expired == 0);
    assert_int_equal(history_seqs(f, "cold", seqs, 16, &expired), 7);
    assert_int_equal(expired, 0);
    /* b's inbox: every seq of "c" once, 1..5 expired. */
    mqstore_page p;
    EXPECT_OK(mqstore_inbox_read(f->s, "b", 0, 100, SIZE_MAX, &p));
    uint64_t want = 1;
    for (size_t i = 0; i < p.n; i++) {
        if (strcmp(p.items[i].conv, "c") != 0) continue;
        assert_int_equal(p.items[i].seq, want);
        assert_int_equal(p.items[i].expired, want <= 5);
        want++;
    }
    assert_int_equal(want, 9);
    mqstore_page_free(&p);
    fx_close(f);
    assert_int_equal(raw_state(f, "c", 5, "m5"), 0);
    assert_int_equal(raw_state(f, "c", 6, "m6"), 2);
    assert_int_equal(raw_state(f, "one", 7, "m7"), 0);
}

/* A large conversation's messages are pulled by scanning the log: expired
 * ones stay as stubs, and a pull returns them as expired items, so a
 * device still accounts for every seq. */
static void test_large_stubs(void **state)
{
    fx *f = *state;
    f->opt.retention_ms = HOUR_MS;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    conv_make(f, "L", mem, 3, MQSTORE_MODE_LARGE);
    for (int i = 0; i < 4; i++)
        send_text(f, "L", "a", "large-old");
    fx_advance(f, 2 * HOUR_MS);
    assert_int_equal(send_text(f, "L", "b", "large-new"), 6);
    EXPECT_OK(mqstore_compact(f->s));
    mqstore_page p;
    uint64_t through;
    EXPECT_OK(mqstore_conv_pull(f->s, "L", "c", 0, 100, SIZE_MAX, &p, &through));
    assert_int_equal(through, 6);
    assert_int_equal(p.n, 5);
    for (size_t i = 0; i < 4; i++) {
        check_item(&p.items[i], "L", i + 2, NULL);
        assert_string_equal(p.items[i].sender_user, "a");
    }
    check_item(&p.items[4], "L", 6, "large-new");
    mqstore_page_free(&p);
    /* The creation event (in the inboxes, not pulled) is gone: an expired
     * inbox item. */
    EXPECT_OK(mqstore_inbox_read(f->s, "c", 0, 100, SIZE_MAX, &p));
    assert_int_equal(p.n, 1);
    check_item(&p.items[0], "L", 1, NULL);
    mqstore_page_free(&p);
    fx_close(f);
    assert_int_equal(raw_state(f, "L", 1, "created"), 0);
    assert_int_equal(raw_state(f, "L", 3, "large-old"), 1);
    assert_false(raw_msgs_contain(f, "large-old"));
}

/* Appends on one thread while another compacts over and over: the filter
 * runs on RocksDB's threads beside the writer; every conversation's head
 * survives and its seqs continue after a reopen. */
typedef struct writer_arg {
    fx *f;
    int n;
} writer_arg;

static void *writer(void *data)
{
    writer_arg *w = data;
    static const char *const convs[] = {"w0", "w1", "w2", "w3"};
    for (int i = 0; i < w->n; i++) {
        mqstore_result r;
        if (send_raw(w->f, convs[i % 4], "a", NULL, "concurrent", &r) != MQSTORE_OK) return "send";
        mqstore_result_clear(&r);
        if (i % 50 == 0) fx_advance(w->f, HOUR_MS);
    }
    return NULL;
}

static void test_compact_concurrent(void **state)
{
    fx *f = *state;
    f->opt.retention_ms = HOUR_MS;
    f->opt.retention_count = 10;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    static const char *const convs[] = {"w0", "w1", "w2", "w3"};
    for (int c = 0; c < 4; c++)
        conv_make(f, convs[c], mem, 2, MQSTORE_MODE_KEEP);
    writer_arg w = {f, 2000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer, &w), 0);
    for (int i = 0; i < 5; i++)
        EXPECT_OK(mqstore_compact(f->s));
    void *rc;
    assert_int_equal(pthread_join(t, &rc), 0);
    assert_null(rc);
    EXPECT_OK(mqstore_compact(f->s));
    fx_reopen(f);
    for (int c = 0; c < 4; c++) {
        assert_int_equal(chead(f, convs[c]), 501);
        assert_int_equal(send_text(f, convs[c], "b", "next"), 502);
    }
}

/* ======================================================================== */
/* edits                                                                    */
/* ======================================================================== */

/* An edit rewrites the target's payload in the batch of its event; every
 * other field stays. A retry rewrites nothing; errors write nothing. */
static void test_edit(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, 2, MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(send_raw(f, "c", "a", "m1", "original", &r));
    assert_int_equal(r.seq, 2);
    mqstore_result_clear(&r);
    fx_advance(f, 1000);

    mqstore_stats before, after;
    mqstore_stats_get(f->s, &before);
    EXPECT_OK(send_edit(f, "c", "a", "e1", "edited 2", 2, "changed", &r));
    mqstore_stats_get(f->s, &after);
    assert_int_equal(after.writes, before.writes + 1); /* one batch */
    assert_int_equal(r.seq, 3);
    assert_int_equal(r.duplicate, 0);
    assert_int_equal(r.n_fanout, 2);
    mqstore_result_clear(&r);
    mqstore_page p;
    EXPECT_OK(mqstore_msg_get(f->s, "c", 2, &p));
    check_item(&p.items[0], "c", 2, "changed");
    assert_string_equal(p.items[0].sender_user, "a");
    assert_string_equal(p.items[0].sender_device, "d");
    assert_string_equal(p.items[0].client_msg_id, "m1");
    assert_int_equal(p.items[0].kind, MSG_KIND);
    assert_int_equal(p.items[0].server_time_ms, T0);
    mqstore_page_free(&p);
    /* b's inbox reads the edited message and then the event. */
    EXPECT_OK(mqstore_inbox_read(f->s, "b", 1, 100, SIZE_MAX, &p));
    assert_int_equal(p.n, 2);
    check_item(&p.items[0], "c", 2, "changed");
    check_item(&p.items[1], "c", 3, "edited 2");
    mqstore_page_free(&p);

    /* A retry (same dedup key): the first result, nothing rewritten. */
    mqstore_stats_get(f->s, &before);
    EXPECT_OK(send_edit(f, "c", "a", "e1", "edited 2", 2, "other", &r));
    assert_int_equal(r.duplicate, 1);
    assert_int_equal(r.seq, 3);
    mqstore_result_clear(&r);
    mqstore_stats_get(f->s, &after);
    assert_int_equal(after.writes, before.writes);
    check_get(f, "c", 2, "changed");

    /* Delete for everyone: an empty payload. */
    EXPECT_OK(send_edit(f, "c", "b", NULL, "deleted 2", 2, NULL, &r));
    assert_int_equal(r.seq, 4);
    mqstore_result_clear(&r);
    check_get(f, "c", 2, "");

    /* Errors write nothing. */
    mqstore_stats_get(f->s, &before);
    EXPECT_ERR(send_edit(f, "c", "a", NULL, "x", 5, "y", &r), MQSTORE_ERR_INVAL); /* > head */
    EXPECT_ERR(send_edit(f, "nope", "a", NULL, "x", 1, "y", &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(send_edit(f, "c", "z", NULL, "x", 2, "y", &r), MQSTORE_ERR_NOTMEMBER);
    mqstore_append big = {.conv = "c",
                          .sender_user = "a",
                          .sender_device = "d",
                          .payload = "x",
                          .payload_len = 1,
                          .replace_seq = 2,
                          .replace_payload = "y",
                          .replace_len = f->opt.max_payload + 1};
    EXPECT_ERR(mqstore_append_msg(f->s, &big, &r), MQSTORE_ERR_TOOBIG);
    big.replace_len = 1;
    big.replace_payload = NULL;
    EXPECT_ERR(mqstore_append_msg(f->s, &big, &r), MQSTORE_ERR_INVAL);
    mqstore_stats_get(f->s, &after);
    assert_int_equal(after.writes, before.writes);
    assert_int_equal(chead(f, "c"), 4);
    /* Survives a reopen. */
    fx_reopen(f);
    check_get(f, "c", 2, "");
    check_get(f, "c", 3, "edited 2");
}

/* Targets retention made go or expire: NOTFOUND for a removed message,
 * INVAL for a stub and for one past its retention not yet compacted. */
static void test_edit_expired(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, 2, MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_conv_retention_set(f->s, "c", HOUR_MS, 0));
    send_text(f, "c", "a", "m2");
    send_text(f, "c", "a", "m3");
    fx_advance(f, 2 * HOUR_MS);
    mqstore_result r;
    /* Past its retention, not compacted: too late to edit. */
    EXPECT_ERR(send_edit(f, "c", "a", NULL, "x", 2, "y", &r), MQSTORE_ERR_INVAL);
    EXPECT_OK(mqstore_compact(f->s)); /* 1, 2 removed; 3 (the head) a stub */
    EXPECT_ERR(send_edit(f, "c", "a", NULL, "x", 2, "y", &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(send_edit(f, "c", "a", NULL, "x", 3, "y", &r), MQSTORE_ERR_INVAL);
    assert_int_equal(chead(f, "c"), 3);
    check_get(f, "c", 3, NULL);
}

/* In a large conversation the rewritten message keeps `pulled`: members
 * pull it with its new payload. */
static void test_edit_large(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    conv_make(f, "L", mem, 3, MQSTORE_MODE_LARGE);
    assert_int_equal(send_text(f, "L", "a", "first"), 2);
    mqstore_result r;
    EXPECT_OK(send_edit(f, "L", "a", "e", "edit", 2, "second", &r));
    assert_int_equal(r.seq, 3);
    assert_int_equal(r.pulled, 1);
    assert_int_equal(r.n_fanout, 0);
    mqstore_result_clear(&r);
    mqstore_page p;
    uint64_t through;
    EXPECT_OK(mqstore_conv_pull(f->s, "L", "b", 0, 100, SIZE_MAX, &p, &through));
    assert_int_equal(through, 3);
    assert_int_equal(p.n, 2);
    check_item(&p.items[0], "L", 2, "second");
    check_item(&p.items[1], "L", 3, "edit");
    mqstore_page_free(&p);
}

/* ======================================================================== */
/* deleting a conversation                                                  */
/* ======================================================================== */

static int listed(const mqstore_result *r, const char *user)
{
    for (size_t i = 0; i < r->n_fanout; i++)
        if (strcmp(r->fanout_user[i], user) == 0) return 1;
    return 0;
}

/* The title an event sets: with the creation, changed by an update,
 * removed by "", too long refused, gone with the conversation. */
static void test_conv_title(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    char t[MQSTORE_TITLE_MAX + 1];
    mqstore_result r;
    mqstore_event ev = ev_make("a", "created", MQSTORE_MODE_KEEP);
    ev.title = "Team";
    EXPECT_OK(mqstore_conv_create(f->s, "g", mem, NULL, 2, &ev, &r));
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_conv_title(f->s, "g", t, sizeof t));
    assert_string_equal(t, "Team");
    EXPECT_OK(mqstore_conv_title(f->s, "nope", t, sizeof t));
    assert_string_equal(t, "");
    char small[3];
    EXPECT_OK(mqstore_conv_title(f->s, "g", small, sizeof small));
    assert_string_equal(small, "Te"); /* cut to the buffer */
    ev = ev_make("a", "renamed", MQSTORE_MODE_KEEP);
    ev.title = "Team 2";
    EXPECT_OK(mqstore_conv_update(f->s, "g", &ev, &r));
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_conv_title(f->s, "g", t, sizeof t));
    assert_string_equal(t, "Team 2");
    ev = ev_make("a", "settings", MQSTORE_MODE_KEEP); /* title NULL: unchanged */
    EXPECT_OK(mqstore_conv_update(f->s, "g", &ev, &r));
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_conv_title(f->s, "g", t, sizeof t));
    assert_string_equal(t, "Team 2");
    char longer[MQSTORE_TITLE_MAX + 2];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    ev.title = longer;
    EXPECT_ERR(mqstore_conv_update(f->s, "g", &ev, &r), MQSTORE_ERR_TOOBIG);
    mqstore_result_clear(&r);
    ev.title = "";
    EXPECT_OK(mqstore_conv_update(f->s, "g", &ev, &r));
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_conv_title(f->s, "g", t, sizeof t));
    assert_string_equal(t, "");
    ev = ev_make("a", "created", MQSTORE_MODE_KEEP);
    ev.title = "Other";
    EXPECT_OK(mqstore_conv_create(f->s, "h", mem, NULL, 2, &ev, &r));
    mqstore_result_clear(&r);
    ev = ev_make("a", "deleted", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_conv_delete(f->s, "h", &ev, &r));
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_conv_title(f->s, "h", t, sizeof t));
    assert_string_equal(t, "");
}

static void test_conv_delete(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    conv_make(f, "g", mem, 3, MQSTORE_MODE_KEEP);
    send_text(f, "g", "a", "m2");
    send_text(f, "g", "b", "m3");
    EXPECT_OK(mqstore_receipt_update(f->s, "g", "b", 3, 3, NULL, NULL, NULL));
    mqstore_event ev = ev_make("a", "deleted", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_delete(f->s, "g", &ev, &r));
    assert_int_equal(r.seq, 4);
    assert_int_equal(r.n_fanout, 3);
    assert_true(listed(&r, "a") && listed(&r, "b") && listed(&r, "c"));
    assert_int_equal(r.large, 0);
    assert_int_equal(r.pulled, 0);
    assert_int_equal(r.members, 0);
    mqstore_result_clear(&r);

    mqstore_conv_info ci;
    EXPECT_OK(mqstore_conv_info_get(f->s, "g", &ci));
    assert_int_equal(ci.head, 4);
    assert_int_equal(ci.members, 0);
    assert_true(ci.flags & MQSTORE_CONV_DELETED);
    assert_int_equal(mqstore_conv_exists(f->s, "g", NULL), 1);
    mqstore_member_list ml;
    EXPECT_OK(mqstore_members_list(f->s, "g", &ml));
    assert_int_equal(ml.n, 0);
    mqstore_member_list_free(&ml);
    mqstore_conv_list cl;
    EXPECT_OK(mqstore_user_convs(f->s, "b", NULL, 10, &cl));
    assert_int_equal(cl.n, 0);
    mqstore_conv_list_free(&cl);
    uint64_t seqs[16];
    size_t expired;
    assert_int_equal(history_seqs(f, "g", seqs, 16, &expired), 1);
    assert_true(seqs[0] == 4 && expired == 0);
    uint64_t d = 9, rd = 9;
    EXPECT_OK(mqstore_receipt_get(f->s, "g", "b", &d, &rd));
    assert_true(d == 0 && rd == 0);
    /* c's inbox: the old entries as expired items, then the event. */
    mqstore_page p;
    EXPECT_OK(mqstore_inbox_read(f->s, "c", 0, 100, SIZE_MAX, &p));
    assert_int_equal(p.n, 4);
    for (size_t i = 0; i < 3; i++)
        check_item(&p.items[i], "g", i + 1, NULL);
    check_item(&p.items[3], "g", 4, "deleted");
    mqstore_page_free(&p);

    /* Nothing writes to it any more. */
    const char *const one[] = {"b"};
    const char *const newbie[] = {"z"};
    EXPECT_ERR(send_raw(f, "g", "a", NULL, "x", &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_members_add(f->s, "g", newbie, NULL, 1, &ev, &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_members_remove(f->s, "g", one, 1, &ev, &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_members_set_role(f->s, "g", one, 1, MQSTORE_ROLE_ADMIN, &ev, &r),
               MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_conv_update(f->s, "g", &ev, &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_receipt_update(f->s, "g", "b", 4, 4, NULL, NULL, NULL),
               MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_conv_delete(f->s, "g", &ev, &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_conv_delete(f->s, "nope", &ev, &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_conv_create(f->s, "g", mem, NULL, 3, &ev, &r), MQSTORE_ERR_EXISTS);
    EXPECT_ERR(mqstore_conv_delete(f->s, "g", NULL, &r), MQSTORE_ERR_INVAL);

    /* The seqs never repeat: the head stays after a reopen and a compaction. */
    fx_reopen(f);
    EXPECT_OK(mqstore_compact(f->s));
    fx_reopen(f);
    EXPECT_OK(mqstore_conv_info_get(f->s, "g", &ci));
    assert_int_equal(ci.head, 4);
    assert_true(ci.flags & MQSTORE_CONV_DELETED);
    assert_int_equal(ci.last_time_ms, T0);
    EXPECT_ERR(send_raw(f, "g", "a", NULL, "x", &r), MQSTORE_ERR_NOTFOUND);
    fx_close(f);
    assert_int_equal(raw_state(f, "g", 2, "m2"), 0);
    assert_int_equal(raw_state(f, "g", 4, "deleted"), 2);
}

/* A large group: every member gets the event in their inbox, and a device
 * that had not pulled everything still accounts for the log up to it. */
static void test_conv_delete_large(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c", "d", "e"};
    conv_make(f, "L", mem, 5, MQSTORE_MODE_LARGE);
    for (int i = 0; i < 5; i++)
        send_text(f, "L", "a", "large"); /* 2..6 */
    EXPECT_OK(mqstore_position_ack(f->s, "b", "db", "L", 3, NULL));
    mqstore_event ev = ev_make("a", "deleted", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_delete(f->s, "L", &ev, &r));
    assert_int_equal(r.seq, 7);
    assert_int_equal(r.n_fanout, 5);
    assert_int_equal(r.pulled, 0);
    mqstore_result_clear(&r);
    int large = 1;
    EXPECT_OK(mqstore_conv_large(f->s, "L", &large));
    assert_int_equal(large, 0);

    mqstore_position_list pl;
    EXPECT_OK(mqstore_positions(f->s, "b", "db", NULL, 10, &pl));
    assert_int_equal(pl.n, 1);
    assert_string_equal(pl.items[0].conv, "L");
    assert_int_equal(pl.items[0].position, 3);
    assert_int_equal(pl.items[0].end, 6);
    assert_int_equal(pl.items[0].member, 0);
    mqstore_position_list_free(&pl);
    mqstore_conv_list cl;
    EXPECT_OK(mqstore_user_large_convs(f->s, "b", NULL, 10, &cl));
    assert_int_equal(cl.n, 0);
    mqstore_conv_list_free(&cl);
    mqstore_page p;
    uint64_t through = 0;
    EXPECT_OK(mqstore_conv_pull(f->s, "L", "b", 3, 100, SIZE_MAX, &p, &through));
    assert_int_equal(p.n, 0);
    assert_int_equal(p.more, 0);
    assert_int_equal(through, 6);
    mqstore_page_free(&p);
    EXPECT_OK(mqstore_position_ack(f->s, "b", "db", "L", through, NULL));
    EXPECT_OK(mqstore_positions(f->s, "b", "db", NULL, 10, &pl));
    assert_int_equal(pl.n, 0);
    mqstore_position_list_free(&pl);
    /* e's inbox: the creation and the deletion events. */
    EXPECT_OK(mqstore_inbox_read(f->s, "e", 0, 100, SIZE_MAX, &p));
    assert_int_equal(p.n, 2);
    check_item(&p.items[0], "L", 1, NULL);
    check_item(&p.items[1], "L", 7, "deleted");
    mqstore_page_free(&p);
    fx_reopen(f);
    assert_int_equal(chead(f, "L"), 7);
}

/* ======================================================================== */
/* erasing a user                                                           */
/* ======================================================================== */

static void remove_member(fx *f, const char *conv, const char *user, const char *actor)
{
    const char *const u[] = {user};
    mqstore_event ev = ev_make(actor, "removed", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(mqstore_members_remove(f->s, conv, u, 1, &ev, &r));
    mqstore_result_clear(&r);
}

static void test_user_erase(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const small[] = {"b", "a"};
    const char *const big[] = {"b", "a", "c"};
    conv_make(f, "s", small, 2, MQSTORE_MODE_KEEP);
    conv_make(f, "L", big, 3, MQSTORE_MODE_LARGE);
    mqstore_result r;
    EXPECT_OK(send_raw(f, "s", "a", "k1", "secret-a1", &r)); /* s/2 */
    mqstore_result_clear(&r);
    send_text(f, "s", "b", "hello-b");   /* s/3 */
    send_text(f, "s", "a", "secret-a2"); /* s/4 */
    send_text(f, "L", "a", "secret-a3"); /* L/2 */
    send_text(f, "L", "c", "hello-c");   /* L/3 */
    EXPECT_OK(mqstore_device_touch(f->s, "a", "pa"));
    EXPECT_OK(mqstore_device_touch(f->s, "a", "pb"));
    EXPECT_OK(mqstore_cursor_ack(f->s, "a", "pa", 2, NULL));
    EXPECT_OK(mqstore_cursor_ack(f->s, "a", "pb", 2, NULL));
    EXPECT_OK(mqstore_device_touch(f->s, "b", "pb"));
    EXPECT_OK(mqstore_push_token_put(f->s, "a", "pa", 1, "tok-a", "app"));
    EXPECT_OK(mqstore_push_token_put(f->s, "b", "pb", 1, "tok-b", "app"));
    EXPECT_OK(mqstore_user_prefs_put(f->s, "a", "prefs", 5));
    EXPECT_OK(mqstore_receipt_update(f->s, "s", "a", 3, 3, NULL, NULL, NULL));
    EXPECT_OK(mqstore_receipt_update(f->s, "s", "b", 4, 4, NULL, NULL, NULL));
    EXPECT_OK(mqstore_position_ack(f->s, "a", "pa", "L", 2, NULL));
    EXPECT_OK(mqstore_inbox_trim(f->s, "a", NULL));

    /* Still a member: nothing is done. */
    mqstore_erase_stats st;
    EXPECT_ERR(mqstore_user_erase(f->s, "a", "TOMB", 4, 0, &st), MQSTORE_ERR_EXISTS);
    check_get(f, "s", 2, "secret-a1");
    remove_member(f, "s", "a", "b");
    EXPECT_ERR(mqstore_user_erase(f->s, "a", "TOMB", 4, 0, &st), MQSTORE_ERR_EXISTS);
    remove_member(f, "L", "a", "b"); /* L/4 */
    uint64_t ihead_a;
    EXPECT_OK(mqstore_inbox_head(f->s, "a", &ihead_a));
    assert_int_equal(ihead_a, 7); /* s: 1..5 (the removal), L: 1 and 4 */

    EXPECT_ERR(mqstore_user_erase(f->s, "a", NULL, 4, 0, &st), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_erase(f->s, "a", "T", f->opt.max_payload + 1, 0, &st),
               MQSTORE_ERR_TOOBIG);
    EXPECT_OK(mqstore_user_erase(f->s, "a", "TOMB", 4, 0, &st));
    assert_int_equal(st.messages, 3);
    assert_int_equal(st.inbox, 5); /* 1 and 2 were trimmed */
    assert_int_equal(st.devices, 2);
    assert_int_equal(st.tokens, 1);

    /* The bodies: a's replaced, envelope kept; the others' intact. */
    mqstore_page p;
    EXPECT_OK(mqstore_msg_get(f->s, "s", 2, &p));
    check_item(&p.items[0], "s", 2, "TOMB");
    assert_string_equal(p.items[0].sender_user, "a");
    assert_string_equal(p.items[0].client_msg_id, "k1");
    mqstore_page_free(&p);
    check_get(f, "s", 3, "hello-b");
    check_get(f, "s", 4, "TOMB");
    uint64_t through;
    EXPECT_OK(mqstore_conv_pull(f->s, "L", "c", 0, 100, SIZE_MAX, &p, &through));
    assert_int_equal(p.n, 3);
    check_item(&p.items[0], "L", 2, "TOMB");
    check_item(&p.items[1], "L", 3, "hello-c");
    mqstore_page_free(&p);
    EXPECT_OK(mqstore_inbox_read(f->s, "b", 0, 100, SIZE_MAX, &p));
    assert_int_equal(p.n, 6); /* s: 1..5, L: 1 */
    check_item(&p.items[2], "s", 2, "TOMB");
    check_item(&p.items[3], "s", 3, "hello-b");
    mqstore_page_free(&p);

    /* a's records are gone. */
    EXPECT_OK(mqstore_inbox_read(f->s, "a", 0, 100, SIZE_MAX, &p));
    assert_int_equal(p.n, 0);
    mqstore_page_free(&p);
    EXPECT_OK(mqstore_inbox_head(f->s, "a", &ihead_a));
    assert_int_equal(ihead_a, 0);
    uint64_t cur = 9;
    EXPECT_OK(mqstore_cursor_get(f->s, "a", "pa", &cur));
    assert_int_equal(cur, 0);
    mqstore_push_token_list tl;
    EXPECT_OK(mqstore_push_tokens(f->s, "a", &tl));
    assert_int_equal(tl.n, 0);
    mqstore_push_token_list_free(&tl);
    void *data;
    size_t len;
    EXPECT_ERR(mqstore_user_prefs_get(f->s, "a", &data, &len), MQSTORE_ERR_NOTFOUND);
    uint64_t d = 9, rd = 9;
    EXPECT_OK(mqstore_receipt_get(f->s, "s", "a", &d, &rd));
    assert_true(d == 0 && rd == 0);
    mqstore_position_list pl;
    EXPECT_OK(mqstore_positions(f->s, "a", "pa", NULL, 10, &pl));
    assert_int_equal(pl.n, 0);
    mqstore_position_list_free(&pl);
    EXPECT_ERR(mqstore_conv_pull(f->s, "L", "a", 0, 10, SIZE_MAX, &p, &through),
               MQSTORE_ERR_NOTMEMBER);
    /* The dedup key is gone: the retry is not a duplicate any more. */
    EXPECT_ERR(send_raw(f, "s", "a", "k1", "again", &r), MQSTORE_ERR_NOTMEMBER);

    /* b's records stay. */
    EXPECT_OK(mqstore_push_tokens(f->s, "b", &tl));
    assert_int_equal(tl.n, 1);
    mqstore_push_token_list_free(&tl);
    EXPECT_OK(mqstore_receipt_get(f->s, "s", "b", &d, &rd));
    assert_true(d == 4 && rd == 4);

    /* Again: nothing left to rewrite. */
    EXPECT_OK(mqstore_user_erase(f->s, "a", "TOMB", 4, 0, &st));
    assert_int_equal(st.messages, 0);
    assert_int_equal(st.inbox, 0);
    /* The user may come back: a fresh inbox. */
    const char *const back[] = {"a"};
    mqstore_event ev = ev_make("b", "added", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_members_add(f->s, "s", back, NULL, 1, &ev, &r));
    assert_int_equal(r.seq, 6);
    assert_true(listed(&r, "a"));
    for (size_t i = 0; i < r.n_fanout; i++)
        if (strcmp(r.fanout_user[i], "a") == 0) assert_int_equal(r.fanout_inbox_seq[i], 1);
    mqstore_result_clear(&r);

    EXPECT_OK(mqstore_compact(f->s));
    fx_close(f);
    assert_false(raw_msgs_contain(f, "secret-a"));
    assert_true(raw_msgs_contain(f, "hello-b"));
    assert_false(raw_cf_contains(f, RAW_TOKENS, "tok-a"));
    assert_true(raw_cf_contains(f, RAW_TOKENS, "tok-b"));
}

/* A conversation big enough for several rewrite batches. */
static void test_user_erase_batches(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, 2, MQSTORE_MODE_KEEP);
    for (int i = 0; i < 2500; i++)
        send_text(f, "c", i % 5 ? "a" : "b", i % 5 ? "from-a" : "from-b");
    remove_member(f, "c", "a", "b");
    mqstore_erase_stats st;
    EXPECT_OK(mqstore_user_erase(f->s, "a", "", 0, 0, &st));
    assert_int_equal(st.messages, 2001); /* 2000 sends and the creation */
    mqstore_page p;
    EXPECT_OK(mqstore_history_read(f->s, "c", 0, 10000, &p));
    assert_int_equal(p.n, 2502);
    for (size_t i = 0; i < p.n; i++) {
        const mqstore_msg *m = &p.items[i];
        if (strcmp(m->sender_user, "a") == 0)
            assert_int_equal(m->payload_len, 0);
        else
            assert_true(m->payload_len > 0);
    }
    mqstore_page_free(&p);
}

/* With a kind, only the user's messages of that kind become the tombstone:
 * the events they acted in (creating the group) keep their payload. */
static void test_user_erase_kind(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, 2, MQSTORE_MODE_KEEP);
    send_text(f, "c", "a", "from-a");
    send_text(f, "c", "b", "from-b");
    remove_member(f, "c", "a", "b");
    mqstore_erase_stats st;
    EXPECT_OK(mqstore_user_erase(f->s, "a", "TOMB", 4, MSG_KIND, &st));
    assert_int_equal(st.messages, 1);
    check_get(f, "c", 1, "created");
    check_get(f, "c", 2, "TOMB");
    check_get(f, "c", 3, "from-b");
    /* kind 0 then takes the event too. */
    EXPECT_OK(mqstore_user_erase(f->s, "a", "TOMB", 4, 0, &st));
    assert_int_equal(st.messages, 1);
    check_get(f, "c", 1, "TOMB");
}

/* mqstore_dedup_check answers as a retried append would, writing nothing. */
static void test_dedup_check(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, 2, MQSTORE_MODE_KEEP);
    conv_make(f, "e", mem, 2, MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(send_raw(f, "c", "a", "k1", "hello", &r));
    uint64_t seq = r.seq, ticket = mqstore_last_ticket(f->s);
    mqstore_result_clear(&r);
    mqstore_append a = {
        .conv = "c", .sender_user = "a", .sender_device = "d", .client_msg_id = "k1"};
    int hit = 0;
    EXPECT_OK(mqstore_dedup_check(f->s, &a, &r, &hit));
    assert_int_equal(hit, 1);
    assert_int_equal(r.duplicate, 1);
    assert_int_equal(r.seq, seq);
    a.client_msg_id = "k2";
    EXPECT_OK(mqstore_dedup_check(f->s, &a, &r, &hit));
    assert_int_equal(hit, 0);
    a.client_msg_id = NULL;
    EXPECT_OK(mqstore_dedup_check(f->s, &a, &r, &hit));
    assert_int_equal(hit, 0);
    a.client_msg_id = "k1";
    a.conv = "e";
    EXPECT_ERR(mqstore_dedup_check(f->s, &a, &r, &hit), MQSTORE_ERR_EXISTS);
    a.sender_user = "bad id";
    EXPECT_ERR(mqstore_dedup_check(f->s, &a, &r, &hit), MQSTORE_ERR_INVAL);
    assert_int_equal(mqstore_last_ticket(f->s), ticket); /* nothing written */
    /* Past the retention it is no retry any more. */
    a.sender_user = "a";
    a.conv = "c";
    fx_advance(f, f->opt.dedup_retention_ms + 1);
    EXPECT_OK(mqstore_dedup_check(f->s, &a, &r, &hit));
    assert_int_equal(hit, 0);
}

/* Invalid arguments and options. */
static void test_invalid(void **state)
{
    fx *f = *state;
    f->opt.retention_ms = -1;
    mqstore *s = NULL;
    assert_int_equal(mqstore_open(f->dir, &f->opt, &s, NULL), MQSTORE_ERR_INVAL);
    assert_null(s);
    f->opt.retention_ms = 0;
    fx_open(f);
    mqstore_erase_stats st;
    EXPECT_ERR(mqstore_user_erase(f->s, "bad id", "", 0, 0, &st), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_erase(NULL, "a", "", 0, 0, &st), MQSTORE_ERR_INVAL);
    EXPECT_OK(mqstore_user_erase(f->s, "nobody", "", 0, 0, NULL));
    mqstore_event ev = ev_make("a", "x", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_ERR(mqstore_conv_delete(f->s, "bad id", &ev, &r), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_conv_delete(f->s, "c", &ev, NULL), MQSTORE_ERR_INVAL);
    int64_t age;
    uint64_t count;
    EXPECT_ERR(mqstore_conv_retention_get(f->s, "c", NULL, &count), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_conv_retention_get(f->s, "c", &age, NULL), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_compact(NULL), MQSTORE_ERR_INVAL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_prestate_setup_teardown(fn, fx_setup, fx_teardown, "mqstore-ops-")
    const struct CMUnitTest tests[] = {
        T(test_age_global),         T(test_head_survives), T(test_head_durable),
        T(test_age_override),       T(test_count),         T(test_large_stubs),
        T(test_compact_concurrent), T(test_edit),          T(test_edit_expired),
        T(test_edit_large),         T(test_conv_title),    T(test_conv_delete),
        T(test_conv_delete_large),  T(test_user_erase),    T(test_user_erase_batches),
        T(test_user_erase_kind),    T(test_dedup_check),   T(test_invalid),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
