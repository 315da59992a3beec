/* Unit tests for libmqchat_store, written against the contract in
 * offline-queue/include/mqstore.h. Every test that touches a store gets its
 * own temporary directory (mkdtemp under /tmp) through the fixture
 * (tests/support/store_fx.h), and the teardown closes the store and removes
 * the directory even when the test failed. The clock is injected
 * (options.clock_ms) so retention rules can be exercised without sleeping. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store_fx.h"

#include <rocksdb/c.h>

/* ---- store helpers -------------------------------------------------------- */

/* Create a conversation; with ev_text NULL no event is logged. Returns the
 * event's seq (0 without event). */
static uint64_t conv_make(fx *f, const char *conv, const char *const *members,
                          const mqstore_role *roles, size_t n, const char *ev_text)
{
    mqstore_result r;
    memset(&r, 0, sizeof r);
    mqstore_event ev;
    if (ev_text != NULL) ev = ev_make(members[0], ev_text, MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_conv_create(f->s, conv, members, roles, n, ev_text ? &ev : NULL, &r));
    uint64_t seq = ev_text ? r.seq : 0;
    mqstore_result_clear(&r);
    return seq;
}

static mqstore_err send_raw(fx *f, const char *conv, const char *user, const char *dev,
                            const char *cmid, const void *payload, size_t len,
                            const mqstore_blob *jobs, size_t n_jobs, mqstore_result *r)
{
    mqstore_append a = {
        .conv = conv,
        .sender_user = user,
        .sender_device = dev,
        .client_msg_id = cmid,
        .kind = MSG_KIND,
        .payload = payload,
        .payload_len = len,
        .jobs = jobs,
        .n_jobs = n_jobs,
    };
    memset(r, 0, sizeof *r);
    return mqstore_append_msg(f->s, &a, r);
}

/* Append a text message that must succeed and not be a duplicate. */
static uint64_t send_text(fx *f, const char *conv, const char *user, const char *dev,
                          const char *cmid, const char *text)
{
    mqstore_result r;
    EXPECT_OK(send_raw(f, conv, user, dev, cmid, text, strlen(text), NULL, 0, &r));
    assert_int_equal(r.duplicate, 0);
    uint64_t seq = r.seq;
    mqstore_result_clear(&r);
    return seq;
}

static size_t outbox_count(fx *f)
{
    mqstore_job_list l;
    memset(&l, 0, sizeof l);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 10000, &l));
    size_t n = l.n;
    mqstore_job_list_free(&l);
    return n;
}

static void check_msg(const mqstore_msg *m, const char *conv, uint64_t seq, const char *sender,
                      const char *dev, const char *cmid, uint32_t kind, const void *payload,
                      size_t len)
{
    assert_string_equal(m->conv, conv);
    assert_int_equal(m->seq, seq);
    assert_string_equal(m->sender_user, sender);
    assert_string_equal(m->sender_device, dev ? dev : "");
    assert_string_equal(m->client_msg_id, cmid ? cmid : "");
    assert_int_equal(m->kind, kind);
    assert_int_equal(m->payload_len, len);
    if (len > 0) {
        assert_non_null(m->payload);
        assert_memory_equal(m->payload, payload, len);
    }
}

static void check_text(const mqstore_msg *m, const char *conv, uint64_t seq, const char *sender,
                       const char *dev, const char *cmid, const char *text)
{
    check_msg(m, conv, seq, sender, dev, cmid, MSG_KIND, text, strlen(text));
}

static int member_in(fx *f, const char *conv, const char *user)
{
    mqstore_member m;
    memset(&m, 0, sizeof m);
    mqstore_err e = mqstore_member_get(f->s, conv, user, &m);
    if (e == MQSTORE_OK) return 1;
    EXPECT_ERR(e, MQSTORE_ERR_NOTFOUND);
    return 0;
}

/* ======================================================================== */
/* helpers without a store                                                  */
/* ======================================================================== */

static void test_strerror(void **state)
{
    (void)state;
    const mqstore_err codes[] = {
        MQSTORE_OK,         MQSTORE_ERR_INVAL,     MQSTORE_ERR_NOTFOUND,
        MQSTORE_ERR_EXISTS, MQSTORE_ERR_NOTMEMBER, MQSTORE_ERR_TOOBIG,
        MQSTORE_ERR_IO,     MQSTORE_ERR_NOSPC,     MQSTORE_ERR_CORRUPT,
        MQSTORE_ERR_NOMEM,  MQSTORE_ERR_READONLY,
    };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *s = mqstore_strerror(codes[i]);
        assert_non_null(s);
        assert_true(s[0] != '\0');
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, mqstore_strerror(codes[j]));
    }
    /* An unknown code still gets a string, not a crash. */
    assert_non_null(mqstore_strerror((mqstore_err)999));
}

static void test_options_defaults(void **state)
{
    (void)state;
    mqstore_options o;
    memset(&o, 0xA5, sizeof o);
    mqstore_options_init(&o);
    assert_int_equal(o.durability, MQSTORE_DURABILITY_SYNC);
    assert_int_equal(o.sync_driver, MQSTORE_SYNC_THREAD);
    assert_int_equal(o.max_payload, 65536);
    assert_int_equal(o.max_job, 4096);
    assert_int_equal(o.dedup_retention_ms, INT64_C(7) * 24 * 3600 * 1000);
    assert_int_equal(o.inbox_retention_ms, INT64_C(30) * 24 * 3600 * 1000);
    assert_int_equal(o.cache_bytes, 64u * 1024 * 1024);
    assert_null(o.on_durable);
    assert_null(o.on_durable_data);
    assert_null(o.clock_ms);
    assert_null(o.clock_data);
}

static void test_id_valid(void **state)
{
    (void)state;
    char max[129];
    memset(max, 'a', 128);
    max[128] = '\0';
    char over[130];
    memset(over, 'b', 129);
    over[129] = '\0';

    const char *good[] = {"a",          "Z", "0", "_", ".", ":", "-", "._:-", "user.name_1:dev-2",
                          "ABCxyz0189", max};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!mqc_id_valid(MQC_ID_KEY, good[i])) print_error("should be valid: \"%s\"\n", good[i]);
        assert_true(mqc_id_valid(MQC_ID_KEY, good[i]));
    }
    const char *bad[] = {"",    over, "a/b",  "a+b", "a#b",  "#",     "+",     "/",
                         "a b", " ",  "a\tb", "a\n", "\x01", "a\x7f", "a\xff", "caf\xc3\xa9",
                         "a*",  "a$", "a\\b", "a,b", "a\"b", "a'b",   "a@b",   "a%b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (mqc_id_valid(MQC_ID_KEY, bad[i])) print_error("should be invalid: bad[%zu]\n", i);
        assert_false(mqc_id_valid(MQC_ID_KEY, bad[i]));
    }
    assert_false(mqc_id_valid(MQC_ID_KEY, NULL));
}

/* ======================================================================== */
/* open / close / reopen                                                    */
/* ======================================================================== */

static void test_open_errors(void **state)
{
    fx *f = *state;
    mqstore *s = NULL;
    char *msg = NULL;

    /* max_payload is 1..16 MiB. */
    f->opt.max_payload = 16u * 1024 * 1024 + 1;
    EXPECT_ERR(mqstore_open(f->dir, &f->opt, &s, &msg), MQSTORE_ERR_INVAL);
    assert_non_null(msg);
    free(msg);
    msg = NULL;
    f->opt.max_payload = 0;
    EXPECT_ERR(mqstore_open(f->dir, &f->opt, &s, &msg), MQSTORE_ERR_INVAL);
    free(msg);
    msg = NULL;

    /* NULL path. */
    f->opt.max_payload = 65536;
    EXPECT_ERR(mqstore_open(NULL, &f->opt, &s, NULL), MQSTORE_ERR_INVAL);

    /* A path that is a regular file cannot hold a store. */
    char file[128];
    snprintf(file, sizeof file, "%s/plainfile", f->dir);
    int fd = open(file, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
    mqstore_err e = mqstore_open(file, &f->opt, &s, &msg);
    assert_int_not_equal(e, MQSTORE_OK);
    assert_non_null(msg);
    assert_true(msg[0] != '\0');
    free(msg);
    msg = NULL;

    /* 16 MiB exactly is inside the range. */
    f->opt.max_payload = 16u * 1024 * 1024;
    fx_open(f);
}

static void test_open_close_reopen(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"alice", "bob"};
    const mqstore_role roles[] = {MQSTORE_ROLE_OWNER, MQSTORE_ROLE_MEMBER};
    assert_int_equal(conv_make(f, "room", mem, roles, 2, "created"), 1);

    mqstore_blob job = {"job-a", 5};
    mqstore_result r;
    EXPECT_OK(send_raw(f, "room", "alice", "dev1", "m1", "hello", 5, &job, 1, &r));
    assert_int_equal(r.seq, 2);
    mqstore_result_clear(&r);
    assert_int_equal(send_text(f, "room", "bob", "dev2", "m2", "hi"), 3);
    EXPECT_OK(mqstore_cursor_ack(f->s, "alice", "dev1", 2, NULL));
    EXPECT_OK(mqstore_receipt_update(f->s, "room", "bob", 3, 2, NULL, NULL, NULL));

    mqstore_job_list jl;
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 100, &jl));
    assert_int_equal(jl.n, 1);
    uint64_t job_id = jl.items[0].id;
    mqstore_job_list_free(&jl);

    fx_reopen(f);
    fx_reopen(f); /* twice: a clean close/open cycle keeps everything */

    mqstore_err err = MQSTORE_OK;
    assert_int_equal(mqstore_conv_exists(f->s, "room", &err), 1);
    assert_int_equal(chead(f, "room"), 3);

    mqstore_member_list ml;
    memset(&ml, 0, sizeof ml);
    EXPECT_OK(mqstore_members_list(f->s, "room", &ml));
    assert_int_equal(ml.n, 2);
    assert_string_equal(ml.items[0].user, "alice");
    assert_int_equal(ml.items[0].role, MQSTORE_ROLE_OWNER);
    assert_int_equal(ml.items[0].joined_seq, 1);
    assert_string_equal(ml.items[1].user, "bob");
    assert_int_equal(ml.items[1].role, MQSTORE_ROLE_MEMBER);
    mqstore_member_list_free(&ml);

    assert_int_equal(ihead(f, "alice"), 3);
    assert_int_equal(ihead(f, "bob"), 3);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "alice", 0, 100, 1 << 20, &p));
    assert_int_equal(p.n, 3);
    check_msg(&p.items[0], "room", 1, "alice", EV_DEVICE, NULL, EV_KIND, "created", 7);
    check_text(&p.items[1], "room", 2, "alice", "dev1", "m1", "hello");
    check_text(&p.items[2], "room", 3, "bob", "dev2", "m2", "hi");
    mqstore_page_free(&p);

    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_history_read(f->s, "room", 0, 100, &p));
    assert_int_equal(p.n, 3);
    assert_int_equal(p.items[0].seq, 3);
    mqstore_page_free(&p);

    uint64_t c = 0, d = 0, rd = 0;
    EXPECT_OK(mqstore_cursor_get(f->s, "alice", "dev1", &c));
    assert_int_equal(c, 2);
    EXPECT_OK(mqstore_receipt_get(f->s, "room", "bob", &d, &rd));
    assert_int_equal(d, 3);
    assert_int_equal(rd, 2);

    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 100, &jl));
    assert_int_equal(jl.n, 1);
    assert_int_equal(jl.items[0].id, job_id);
    assert_int_equal(jl.items[0].len, 5);
    assert_memory_equal(jl.items[0].data, "job-a", 5);
    mqstore_job_list_free(&jl);

    mqstore_conv_list cl;
    memset(&cl, 0, sizeof cl);
    EXPECT_OK(mqstore_user_convs(f->s, "alice", NULL, 10, &cl));
    assert_int_equal(cl.n, 1);
    assert_string_equal(cl.conv[0], "room");
    assert_int_equal(cl.role[0], MQSTORE_ROLE_OWNER);
    mqstore_conv_list_free(&cl);

    /* Sequences continue after the reopen; job ids keep ascending. */
    mqstore_blob job2 = {"job-b", 5};
    EXPECT_OK(send_raw(f, "room", "bob", "dev2", "m3", "again", 5, &job2, 1, &r));
    assert_int_equal(r.seq, 4);
    assert_int_equal(fanout_seq(&r, "alice"), 4);
    assert_int_equal(r.inbox_seq, 4);
    mqstore_result_clear(&r);
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 100, &jl));
    assert_int_equal(jl.n, 2);
    assert_true(jl.items[1].id > job_id);
    assert_memory_equal(jl.items[1].data, "job-b", 5);
    mqstore_job_list_free(&jl);
}

/* ======================================================================== */
/* identifiers                                                              */
/* ======================================================================== */

static void test_max_length_ids(void **state)
{
    fx *f = *state;
    fx_open(f);
    char conv[129], user[129], dev[129], cmid[129];
    memset(conv, 'c', 128);
    memset(user, 'u', 128);
    memset(dev, 'd', 128);
    memset(cmid, 'm', 128);
    conv[128] = user[128] = dev[128] = cmid[128] = '\0';
    const char *const mem[] = {user, "other"};
    conv_make(f, conv, mem, NULL, 2, NULL);
    assert_int_equal(send_text(f, conv, user, dev, cmid, "x"), 1);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "other", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 1);
    check_text(&p.items[0], conv, 1, user, dev, cmid, "x");
    mqstore_page_free(&p);
    mqstore_member_list ml;
    memset(&ml, 0, sizeof ml);
    EXPECT_OK(mqstore_members_list(f->s, conv, &ml));
    assert_int_equal(ml.n, 2);
    assert_string_equal(ml.items[0].user, "other");
    assert_string_equal(ml.items[1].user, user);
    mqstore_member_list_free(&ml);
}

static void test_invalid_ids_rejected(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const ok2[] = {"u1", "u2"};
    conv_make(f, "c", ok2, NULL, 2, NULL);
    assert_int_equal(send_text(f, "c", "u1", "d1", NULL, "seed"), 1);

    char over[130];
    memset(over, 'x', 129);
    over[129] = '\0';
    const char *bad[] = {"", over, "a/b", "a+b", "#", "a b", "a\xff", "\x01\x02", NULL};
    const size_t nbad = sizeof bad / sizeof bad[0];
    mqstore_result r;
    mqstore_page p;
    uint64_t u64;
    mqstore_member m;
    mqstore_member_list ml;
    mqstore_conv_list cl;

    for (size_t i = 0; i < nbad; i++) {
        const char *b = bad[i];
        const char *const one_bad[] = {b};
        const char *const mixed[] = {"u1", b};
        const char *const u3[] = {"u3"};
        mqstore_event ev = ev_make("u1", "ev", MQSTORE_MODE_KEEP);
        mqstore_event bad_ev = ev_make(b, "ev", MQSTORE_MODE_KEEP);

        memset(&r, 0, sizeof r);
        EXPECT_ERR(mqstore_conv_create(f->s, b, ok2, NULL, 2, NULL, &r), MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);
        memset(&r, 0, sizeof r);
        EXPECT_ERR(mqstore_conv_create(f->s, "c-new", mixed, NULL, 2, NULL, &r), MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);

        EXPECT_ERR(send_raw(f, b, "u1", "d1", "x1", "p", 1, NULL, 0, &r), MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);
        EXPECT_ERR(send_raw(f, "c", b, "d1", "x1", "p", 1, NULL, 0, &r), MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);
        EXPECT_ERR(send_raw(f, "c", "u1", b, "x1", "p", 1, NULL, 0, &r), MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);
        if (b != NULL) { /* NULL client_msg_id is legal (no dedup) */
            EXPECT_ERR(send_raw(f, "c", "u1", "d1", b, "p", 1, NULL, 0, &r), MQSTORE_ERR_INVAL);
            mqstore_result_clear(&r);
        }

        memset(&p, 0, sizeof p);
        EXPECT_ERR(mqstore_inbox_read(f->s, b, 0, 10, 1000, &p), MQSTORE_ERR_INVAL);
        mqstore_page_free(&p);
        EXPECT_ERR(mqstore_inbox_head(f->s, b, &u64), MQSTORE_ERR_INVAL);
        memset(&p, 0, sizeof p);
        EXPECT_ERR(mqstore_history_read(f->s, b, 0, 10, &p), MQSTORE_ERR_INVAL);
        mqstore_page_free(&p);
        memset(&p, 0, sizeof p);
        EXPECT_ERR(mqstore_msg_get(f->s, b, 1, &p), MQSTORE_ERR_INVAL);
        mqstore_page_free(&p);

        EXPECT_ERR(mqstore_cursor_ack(f->s, b, "d1", 1, NULL), MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_cursor_ack(f->s, "u1", b, 1, NULL), MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_cursor_get(f->s, b, "d1", &u64), MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_cursor_get(f->s, "u1", b, &u64), MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_device_forget(f->s, b, "d1"), MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_device_forget(f->s, "u1", b), MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_inbox_trim(f->s, b, NULL), MQSTORE_ERR_INVAL);

        EXPECT_ERR(mqstore_receipt_update(f->s, b, "u1", 1, 0, NULL, NULL, NULL),
                   MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_receipt_update(f->s, "c", b, 1, 0, NULL, NULL, NULL), MQSTORE_ERR_INVAL);
        uint64_t d, rd;
        EXPECT_ERR(mqstore_receipt_get(f->s, b, "u1", &d, &rd), MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_receipt_get(f->s, "c", b, &d, &rd), MQSTORE_ERR_INVAL);

        memset(&r, 0, sizeof r);
        EXPECT_ERR(mqstore_members_add(f->s, "c", one_bad, NULL, 1, &ev, &r), MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);
        memset(&r, 0, sizeof r);
        EXPECT_ERR(mqstore_members_add(f->s, b, u3, NULL, 1, &ev, &r), MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);
        memset(&r, 0, sizeof r);
        EXPECT_ERR(mqstore_members_add(f->s, "c", u3, NULL, 1, &bad_ev, &r), MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);
        memset(&r, 0, sizeof r);
        EXPECT_ERR(mqstore_members_remove(f->s, "c", one_bad, 1, &ev, &r), MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);
        memset(&r, 0, sizeof r);
        EXPECT_ERR(mqstore_members_set_role(f->s, "c", one_bad, 1, MQSTORE_ROLE_ADMIN, &ev, &r),
                   MQSTORE_ERR_INVAL);
        mqstore_result_clear(&r);
        EXPECT_ERR(mqstore_member_get(f->s, "c", b, &m), MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_member_get(f->s, b, "u1", &m), MQSTORE_ERR_INVAL);
        memset(&ml, 0, sizeof ml);
        EXPECT_ERR(mqstore_members_list(f->s, b, &ml), MQSTORE_ERR_INVAL);
        mqstore_member_list_free(&ml);
        memset(&cl, 0, sizeof cl);
        EXPECT_ERR(mqstore_user_convs(f->s, b, NULL, 10, &cl), MQSTORE_ERR_INVAL);
        mqstore_conv_list_free(&cl);

        mqstore_err err = MQSTORE_OK;
        assert_int_equal(mqstore_conv_exists(f->s, b, &err), 0);
        EXPECT_ERR(err, MQSTORE_ERR_INVAL);
        EXPECT_ERR(mqstore_conv_head(f->s, b, &u64), MQSTORE_ERR_INVAL);
    }

    /* Nothing was written by any of the rejected calls. */
    assert_int_equal(chead(f, "c"), 1);
    assert_int_equal(ihead(f, "u1"), 1);
    assert_int_equal(ihead(f, "u3"), 0);
    assert_false(member_in(f, "c", "u3"));
    memset(&ml, 0, sizeof ml);
    EXPECT_OK(mqstore_members_list(f->s, "c", &ml));
    assert_int_equal(ml.n, 2);
    mqstore_member_list_free(&ml);
    memset(&cl, 0, sizeof cl);
    EXPECT_OK(mqstore_user_convs(f->s, "u1", NULL, 10, &cl));
    assert_int_equal(cl.n, 1);
    mqstore_conv_list_free(&cl);
    mqstore_err err = MQSTORE_OK;
    assert_int_equal(mqstore_conv_exists(f->s, "c-new", &err), 0);
    assert_int_equal(outbox_count(f), 0);
}

/* ======================================================================== */
/* conversations                                                            */
/* ======================================================================== */

static void test_conv_create_basic(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"carol", "alice", "bob"};
    const mqstore_role roles[] = {MQSTORE_ROLE_OWNER, MQSTORE_ROLE_MEMBER, MQSTORE_ROLE_ADMIN};
    mqstore_result r;
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_conv_create(f->s, "g1", mem, roles, 3, NULL, &r));
    mqstore_result_clear(&r);

    mqstore_err err = MQSTORE_OK;
    assert_int_equal(mqstore_conv_exists(f->s, "g1", &err), 1);
    EXPECT_OK(err);
    assert_int_equal(mqstore_conv_exists(f->s, "nope", &err), 0);
    EXPECT_OK(err);
    /* ev NULL: nothing logged, nobody gets an inbox entry. */
    assert_int_equal(chead(f, "g1"), 0);
    assert_int_equal(chead(f, "nope"), 0);
    assert_int_equal(ihead(f, "alice"), 0);
    assert_int_equal(ihead(f, "carol"), 0);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_history_read(f->s, "g1", 0, 10, &p));
    assert_int_equal(p.n, 0);
    assert_int_equal(p.more, 0);
    mqstore_page_free(&p);

    mqstore_member m;
    memset(&m, 0, sizeof m);
    EXPECT_OK(mqstore_member_get(f->s, "g1", "carol", &m));
    assert_string_equal(m.user, "carol");
    assert_int_equal(m.role, MQSTORE_ROLE_OWNER);
    EXPECT_OK(mqstore_member_get(f->s, "g1", "bob", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_ADMIN);
    EXPECT_OK(mqstore_member_get(f->s, "g1", "alice", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_MEMBER);
    EXPECT_ERR(mqstore_member_get(f->s, "g1", "dave", &m), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_member_get(f->s, "nope", "alice", &m), MQSTORE_ERR_NOTFOUND);

    /* Re-create: EXISTS, and nothing changes (with or without an event). */
    const char *const mem2[] = {"dave", "erin"};
    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_conv_create(f->s, "g1", mem2, NULL, 2, NULL, &r), MQSTORE_ERR_EXISTS);
    mqstore_result_clear(&r);
    mqstore_event ev = ev_make("dave", "again", MQSTORE_MODE_KEEP);
    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_conv_create(f->s, "g1", mem2, NULL, 2, &ev, &r), MQSTORE_ERR_EXISTS);
    mqstore_result_clear(&r);
    assert_false(member_in(f, "g1", "dave"));
    assert_int_equal(chead(f, "g1"), 0);
    assert_int_equal(ihead(f, "dave"), 0);
    mqstore_member_list ml;
    memset(&ml, 0, sizeof ml);
    EXPECT_OK(mqstore_members_list(f->s, "g1", &ml));
    assert_int_equal(ml.n, 3);
    mqstore_member_list_free(&ml);
    EXPECT_OK(mqstore_member_get(f->s, "g1", "carol", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_OWNER);

    /* roles NULL: everyone is MEMBER. */
    conv_make(f, "g2", mem, NULL, 3, NULL);
    for (size_t i = 0; i < 3; i++) {
        EXPECT_OK(mqstore_member_get(f->s, "g2", mem[i], &m));
        assert_int_equal(m.role, MQSTORE_ROLE_MEMBER);
    }

    /* The first message of an event-less conversation is seq 1. */
    assert_int_equal(send_text(f, "g1", "alice", "d", NULL, "first"), 1);
    assert_int_equal(chead(f, "g1"), 1);
}

static void test_conv_create_with_event(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    const mqstore_role roles[] = {MQSTORE_ROLE_OWNER, MQSTORE_ROLE_MEMBER, MQSTORE_ROLE_MEMBER};
    mqstore_event ev = ev_make("a", "made", MQSTORE_MODE_KEEP);
    mqstore_result r;
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_conv_create(f->s, "g", mem, roles, 3, &ev, &r));
    assert_int_equal(r.seq, 1);
    assert_int_equal(r.duplicate, 0);
    assert_int_equal(r.server_time_ms, T0);
    assert_int_equal(r.n_fanout, 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(fanout_seq(&r, mem[i]), 1);
    assert_int_equal(r.inbox_seq, fanout_seq(&r, "a"));
    assert_true(r.ticket > 0);
    mqstore_result_clear(&r);

    assert_int_equal(chead(f, "g"), 1);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(ihead(f, mem[i]), 1);
        mqstore_page p;
        memset(&p, 0, sizeof p);
        EXPECT_OK(mqstore_inbox_read(f->s, mem[i], 0, 10, 1 << 20, &p));
        assert_int_equal(p.n, 1);
        assert_int_equal(p.more, 0);
        assert_int_equal(p.items[0].inbox_seq, 1);
        assert_int_equal(p.items[0].server_time_ms, T0);
        check_msg(&p.items[0], "g", 1, "a", EV_DEVICE, NULL, EV_KIND, "made", 4);
        mqstore_page_free(&p);
    }
    mqstore_member m;
    memset(&m, 0, sizeof m);
    EXPECT_OK(mqstore_member_get(f->s, "g", "b", &m));
    assert_int_equal(m.joined_seq, 1);

    /* The next message is seq 2; an event with NULL actor_device reads back as "". */
    assert_int_equal(send_text(f, "g", "b", "db", NULL, "hi"), 2);
    const char *const mem2[] = {"x", "y"};
    mqstore_event ev2 = {.actor_user = "x", .actor_device = NULL, .kind = EV_KIND};
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_conv_create(f->s, "g2", mem2, NULL, 2, &ev2, &r));
    assert_int_equal(r.seq, 1);
    mqstore_result_clear(&r);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_msg_get(f->s, "g2", 1, &p));
    assert_int_equal(p.n, 1);
    check_msg(&p.items[0], "g2", 1, "x", NULL, NULL, EV_KIND, NULL, 0);
    mqstore_page_free(&p);
}

static void test_conv_create_invalid(void **state)
{
    fx *f = *state;
    f->opt.max_payload = 64;
    fx_open(f);
    mqstore_result r;
    mqstore_err err = MQSTORE_OK;
    const char *const two[] = {"a", "b"};

    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_conv_create(f->s, "z", two, NULL, 0, NULL, &r), MQSTORE_ERR_INVAL);
    mqstore_result_clear(&r);
    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_conv_create(f->s, "z", NULL, NULL, 2, NULL, &r), MQSTORE_ERR_INVAL);
    mqstore_result_clear(&r);
    const char *const dup[] = {"a", "b", "a"};
    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_conv_create(f->s, "z", dup, NULL, 3, NULL, &r), MQSTORE_ERR_INVAL);
    mqstore_result_clear(&r);
    const mqstore_role badrole[] = {MQSTORE_ROLE_MEMBER, (mqstore_role)99};
    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_conv_create(f->s, "z", two, badrole, 2, NULL, &r), MQSTORE_ERR_INVAL);
    mqstore_result_clear(&r);

    char big[65];
    memset(big, 'p', sizeof big);
    mqstore_event ev = {
        .actor_user = "a", .actor_device = "d", .kind = EV_KIND, .payload = big, .payload_len = 65};
    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_conv_create(f->s, "z", two, NULL, 2, &ev, &r), MQSTORE_ERR_TOOBIG);
    mqstore_result_clear(&r);

    assert_int_equal(mqstore_conv_exists(f->s, "z", &err), 0);
    EXPECT_OK(err);
    assert_int_equal(ihead(f, "a"), 0);
    assert_false(member_in(f, "z", "a"));
    mqstore_conv_list cl;
    memset(&cl, 0, sizeof cl);
    EXPECT_OK(mqstore_user_convs(f->s, "a", NULL, 10, &cl));
    assert_int_equal(cl.n, 0);
    mqstore_conv_list_free(&cl);

    /* Exactly max_payload is fine. */
    ev.payload_len = 64;
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_conv_create(f->s, "z", two, NULL, 2, &ev, &r));
    assert_int_equal(r.seq, 1);
    mqstore_result_clear(&r);
}

/* ======================================================================== */
/* append                                                                   */
/* ======================================================================== */

static void test_append_seq_order(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    const int N = 300; /* crosses 256: seq keys must sort numerically */
    char buf[32];
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "msg-%d", i);
        const char *who = (i % 3 == 0) ? "b" : "a";
        mqstore_result r;
        EXPECT_OK(send_raw(f, "c", who, "d", NULL, buf, strlen(buf), NULL, 0, &r));
        assert_int_equal(r.seq, (uint64_t)i + 1);
        assert_int_equal(r.inbox_seq, (uint64_t)i + 1);
        mqstore_result_clear(&r);
    }
    assert_int_equal(chead(f, "c"), (uint64_t)N);

    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_history_read(f->s, "c", 0, 10000, &p));
    assert_int_equal(p.n, (size_t)N);
    assert_int_equal(p.more, 0);
    for (int i = 0; i < N; i++) {
        int k = N - 1 - i; /* descending */
        snprintf(buf, sizeof buf, "msg-%d", k);
        check_text(&p.items[i], "c", (uint64_t)k + 1, (k % 3 == 0) ? "b" : "a", "d", NULL, buf);
    }
    mqstore_page_free(&p);

    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "b", 0, 10000, 1 << 20, &p));
    assert_int_equal(p.n, (size_t)N);
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "msg-%d", i);
        assert_int_equal(p.items[i].inbox_seq, (uint64_t)i + 1);
        check_text(&p.items[i], "c", (uint64_t)i + 1, (i % 3 == 0) ? "b" : "a", "d", NULL, buf);
    }
    mqstore_page_free(&p);
}

static void test_append_errors(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    assert_int_equal(send_text(f, "c", "a", "d", NULL, "one"), 1);
    mqstore_result r;
    EXPECT_ERR(send_raw(f, "nope", "a", "d", "k1", "x", 1, NULL, 0, &r), MQSTORE_ERR_NOTFOUND);
    mqstore_result_clear(&r);
    EXPECT_ERR(send_raw(f, "c", "mallory", "d", "k2", "x", 1, NULL, 0, &r), MQSTORE_ERR_NOTMEMBER);
    mqstore_result_clear(&r);
    EXPECT_ERR(send_raw(f, "c", "a", "d", "k3", NULL, 5, NULL, 0, &r), MQSTORE_ERR_INVAL);
    mqstore_result_clear(&r);
    EXPECT_ERR(send_raw(f, "c", "a", "d", "k4", "x", 1, NULL, 2, &r), MQSTORE_ERR_INVAL);
    mqstore_result_clear(&r);

    assert_int_equal(chead(f, "c"), 1);
    assert_int_equal(chead(f, "nope"), 0);
    assert_int_equal(ihead(f, "a"), 1);
    assert_int_equal(ihead(f, "b"), 1);
    assert_int_equal(ihead(f, "mallory"), 0);
    mqstore_err err = MQSTORE_OK;
    assert_int_equal(mqstore_conv_exists(f->s, "nope", &err), 0);

    /* The failed calls did not poison the dedup keys: they are usable now. */
    EXPECT_OK(send_raw(f, "c", "a", "d", "k3", "y", 1, NULL, 0, &r));
    assert_int_equal(r.duplicate, 0);
    assert_int_equal(r.seq, 2);
    mqstore_result_clear(&r);
}

static void test_append_payload_limits(void **state)
{
    fx *f = *state;
    f->opt.max_payload = 100;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    uint8_t buf[101];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 7); /* includes NUL bytes */
    mqstore_result r;

    EXPECT_OK(send_raw(f, "c", "a", "d", NULL, buf, 100, NULL, 0, &r));
    assert_int_equal(r.seq, 1);
    mqstore_result_clear(&r);
    EXPECT_ERR(send_raw(f, "c", "a", "d", NULL, buf, 101, NULL, 0, &r), MQSTORE_ERR_TOOBIG);
    mqstore_result_clear(&r);
    assert_int_equal(chead(f, "c"), 1);
    assert_int_equal(ihead(f, "b"), 1);

    EXPECT_OK(send_raw(f, "c", "a", "d", NULL, NULL, 0, NULL, 0, &r));
    assert_int_equal(r.seq, 2);
    mqstore_result_clear(&r);
    EXPECT_OK(send_raw(f, "c", "a", "d", NULL, buf, 0, NULL, 0, &r));
    assert_int_equal(r.seq, 3);
    mqstore_result_clear(&r);

    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_msg_get(f->s, "c", 1, &p));
    assert_int_equal(p.n, 1);
    check_msg(&p.items[0], "c", 1, "a", "d", NULL, MSG_KIND, buf, 100);
    mqstore_page_free(&p);
    for (uint64_t seq = 2; seq <= 3; seq++) {
        memset(&p, 0, sizeof p);
        EXPECT_OK(mqstore_msg_get(f->s, "c", seq, &p));
        assert_int_equal(p.n, 1);
        assert_int_equal(p.items[0].payload_len, 0);
        mqstore_page_free(&p);
    }
}

static void test_append_fanout(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const g1[] = {"a", "b", "c"};
    const char *const g2[] = {"a", "b"};
    conv_make(f, "g1", g1, NULL, 3, NULL);
    conv_make(f, "g2", g2, NULL, 2, NULL);
    mqstore_result r;

    EXPECT_OK(send_raw(f, "g2", "b", "d", NULL, "x", 1, NULL, 0, &r));
    assert_int_equal(r.n_fanout, 2);
    assert_int_equal(fanout_seq(&r, "a"), 1);
    assert_int_equal(fanout_seq(&r, "b"), 1);
    assert_int_equal(fanout_seq(&r, "c"), 0);
    assert_int_equal(r.inbox_seq, 1);
    mqstore_result_clear(&r);

    EXPECT_OK(send_raw(f, "g1", "a", "d", NULL, "y", 1, NULL, 0, &r));
    assert_int_equal(r.seq, 1);
    assert_int_equal(r.n_fanout, 3);
    assert_int_equal(fanout_seq(&r, "a"), 2);
    assert_int_equal(fanout_seq(&r, "b"), 2);
    assert_int_equal(fanout_seq(&r, "c"), 1);
    assert_int_equal(r.inbox_seq, 2); /* the sender's own entry */
    mqstore_result_clear(&r);

    EXPECT_OK(send_raw(f, "g1", "c", "d", NULL, "z", 1, NULL, 0, &r));
    assert_int_equal(r.seq, 2);
    assert_int_equal(r.n_fanout, 3);
    assert_int_equal(fanout_seq(&r, "a"), 3);
    assert_int_equal(fanout_seq(&r, "b"), 3);
    assert_int_equal(fanout_seq(&r, "c"), 2);
    assert_int_equal(r.inbox_seq, 2);
    mqstore_result_clear(&r);

    assert_int_equal(ihead(f, "a"), 3);
    assert_int_equal(ihead(f, "b"), 3);
    assert_int_equal(ihead(f, "c"), 2);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "c", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 2);
    assert_int_equal(p.items[0].inbox_seq, 1);
    check_text(&p.items[0], "g1", 1, "a", "d", NULL, "y");
    assert_int_equal(p.items[1].inbox_seq, 2);
    check_text(&p.items[1], "g1", 2, "c", "d", NULL, "z");
    mqstore_page_free(&p);
}

static void test_server_time_clock(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    atomic_store(&f->now, T0 + 12345);
    assert_int_equal(conv_make(f, "c", mem, NULL, 2, "ev"), 1);
    atomic_store(&f->now, T0 + 99999);
    mqstore_result r;
    EXPECT_OK(send_raw(f, "c", "a", "d", NULL, "x", 1, NULL, 0, &r));
    assert_int_equal(r.server_time_ms, T0 + 99999);
    mqstore_result_clear(&r);

    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "b", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 2);
    assert_int_equal(p.items[0].server_time_ms, T0 + 12345);
    assert_int_equal(p.items[1].server_time_ms, T0 + 99999);
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_msg_get(f->s, "c", 2, &p));
    assert_int_equal(p.items[0].server_time_ms, T0 + 99999);
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_history_read(f->s, "c", 0, 10, &p));
    assert_int_equal(p.n, 2);
    assert_int_equal(p.items[0].server_time_ms, T0 + 99999);
    assert_int_equal(p.items[1].server_time_ms, T0 + 12345);
    assert_int_equal(p.items[0].inbox_seq, 0);
    mqstore_page_free(&p);
}

/* ======================================================================== */
/* dedup                                                                    */
/* ======================================================================== */

static void test_dedup_basic(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    mqstore_blob job = {"J", 1};
    mqstore_result r1, r2;

    EXPECT_OK(send_raw(f, "c", "a", "d1", "cm-1", "first", 5, &job, 1, &r1));
    assert_int_equal(r1.duplicate, 0);
    assert_int_equal(r1.seq, 1);
    fx_advance(f, 10);
    EXPECT_OK(send_raw(f, "c", "a", "d1", "cm-1", "different", 9, &job, 1, &r2));
    assert_int_equal(r2.duplicate, 1);
    assert_int_equal(r2.seq, r1.seq);
    assert_int_equal(r2.inbox_seq, r1.inbox_seq);
    assert_int_equal(r2.server_time_ms, r1.server_time_ms);
    assert_int_equal(r2.n_fanout, 0);
    mqstore_result_clear(&r1);
    mqstore_result_clear(&r2);

    /* Nothing new was written. */
    assert_int_equal(chead(f, "c"), 1);
    assert_int_equal(ihead(f, "a"), 1);
    assert_int_equal(ihead(f, "b"), 1);
    assert_int_equal(outbox_count(f), 1);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_msg_get(f->s, "c", 1, &p));
    check_text(&p.items[0], "c", 1, "a", "d1", "cm-1", "first");
    mqstore_page_free(&p);

    /* Same client id from another device or another user: new messages. */
    assert_int_equal(send_text(f, "c", "a", "d2", "cm-1", "other device"), 2);
    assert_int_equal(send_text(f, "c", "b", "d1", "cm-1", "other user"), 3);
    /* NULL client id never dedups. */
    assert_int_equal(send_text(f, "c", "a", "d1", NULL, "same"), 4);
    assert_int_equal(send_text(f, "c", "a", "d1", NULL, "same"), 5);
    assert_int_equal(send_text(f, "c", "a", "d1", "cm-2", "next"), 6);

    /* Each key still dedups to its own first message. */
    EXPECT_OK(send_raw(f, "c", "a", "d2", "cm-1", "x", 1, NULL, 0, &r2));
    assert_int_equal(r2.duplicate, 1);
    assert_int_equal(r2.seq, 2);
    mqstore_result_clear(&r2);
    EXPECT_OK(send_raw(f, "c", "b", "d1", "cm-1", "x", 1, NULL, 0, &r2));
    assert_int_equal(r2.duplicate, 1);
    assert_int_equal(r2.seq, 3);
    assert_int_equal(r2.inbox_seq, 3);
    mqstore_result_clear(&r2);
    EXPECT_OK(send_raw(f, "c", "a", "d1", "cm-1", "x", 1, NULL, 0, &r2));
    assert_int_equal(r2.duplicate, 1);
    assert_int_equal(r2.seq, 1);
    mqstore_result_clear(&r2);
    assert_int_equal(chead(f, "c"), 6);
    assert_int_equal(outbox_count(f), 1);
}

static void test_dedup_expiry(void **state)
{
    fx *f = *state;
    f->opt.dedup_retention_ms = 1000;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    mqstore_result r;

    EXPECT_OK(send_raw(f, "c", "a", "d", "k", "one", 3, NULL, 0, &r));
    assert_int_equal(r.seq, 1);
    mqstore_result_clear(&r);
    fx_advance(f, 500);
    EXPECT_OK(send_raw(f, "c", "a", "d", "k", "one", 3, NULL, 0, &r));
    assert_int_equal(r.duplicate, 1);
    assert_int_equal(r.seq, 1);
    assert_int_equal(r.server_time_ms, T0);
    mqstore_result_clear(&r);

    fx_advance(f, 2000); /* T0 + 2500: past the retention */
    EXPECT_OK(send_raw(f, "c", "a", "d", "k", "one", 3, NULL, 0, &r));
    assert_int_equal(r.duplicate, 0);
    assert_int_equal(r.seq, 2);
    assert_int_equal(r.server_time_ms, T0 + 2500);
    assert_int_equal(r.n_fanout, 2);
    mqstore_result_clear(&r);
    assert_int_equal(chead(f, "c"), 2);

    /* The new message is now the one the key dedups to. */
    fx_advance(f, 100);
    EXPECT_OK(send_raw(f, "c", "a", "d", "k", "one", 3, NULL, 0, &r));
    assert_int_equal(r.duplicate, 1);
    assert_int_equal(r.seq, 2);
    assert_int_equal(r.server_time_ms, T0 + 2500);
    mqstore_result_clear(&r);
    assert_int_equal(chead(f, "c"), 2);
}

/* The same dedup key for another conversation is not a retry: EXISTS,
 * nothing written there; past the retention the key is free again. */
static void test_dedup_key_other_conversation(void **state)
{
    fx *f = *state;
    f->opt.dedup_retention_ms = 1000;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    conv_make(f, "c2", mem, NULL, 2, NULL);
    mqstore_result r;
    EXPECT_OK(send_raw(f, "c", "a", "d", "k", "one", 3, NULL, 0, &r));
    mqstore_result_clear(&r);
    assert_int_equal(send_raw(f, "c2", "a", "d", "k", "two", 3, NULL, 0, &r), MQSTORE_ERR_EXISTS);
    mqstore_result_clear(&r);
    assert_int_equal(chead(f, "c2"), 0);
    /* Another device of the same user has its own keys. */
    EXPECT_OK(send_raw(f, "c2", "a", "d2", "k", "two", 3, NULL, 0, &r));
    assert_int_equal(r.duplicate, 0);
    mqstore_result_clear(&r);
    fx_advance(f, 2000);
    EXPECT_OK(send_raw(f, "c2", "a", "d", "k", "three", 5, NULL, 0, &r));
    assert_int_equal(r.duplicate, 0);
    assert_int_equal(r.seq, 2);
    mqstore_result_clear(&r);
}

static void test_dedup_survives_reopen(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    send_text(f, "c", "b", "d", NULL, "pre");
    mqstore_result r1, r2;
    EXPECT_OK(send_raw(f, "c", "a", "d", "keep", "v", 1, NULL, 0, &r1));
    assert_int_equal(r1.seq, 2);
    fx_reopen(f);
    fx_advance(f, 1000);
    EXPECT_OK(send_raw(f, "c", "a", "d", "keep", "v", 1, NULL, 0, &r2));
    assert_int_equal(r2.duplicate, 1);
    assert_int_equal(r2.seq, r1.seq);
    assert_int_equal(r2.inbox_seq, r1.inbox_seq);
    assert_int_equal(r2.server_time_ms, r1.server_time_ms);
    mqstore_result_clear(&r1);
    mqstore_result_clear(&r2);
    assert_int_equal(chead(f, "c"), 2);
    assert_int_equal(ihead(f, "b"), 2);
}

/* ======================================================================== */
/* inbox                                                                    */
/* ======================================================================== */

static void test_inbox_paging(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    char buf[16], cm[16];
    for (int i = 1; i <= 7; i++) {
        snprintf(buf, sizeof buf, "p%d", i);
        snprintf(cm, sizeof cm, "cm%d", i);
        assert_int_equal(send_text(f, "c", "b", "phone", cm, buf), (uint64_t)i);
    }
    mqstore_page p;
    struct {
        uint64_t after;
        size_t limit;
        size_t n;
        uint64_t first;
        int more;
    } cases[] = {
        {0, 3, 3, 1, 1}, {3, 3, 3, 4, 1},   {6, 3, 1, 7, 0}, {4, 3, 3, 5, 0},
        {7, 3, 0, 0, 0}, {100, 3, 0, 0, 0}, {0, 7, 7, 1, 0}, {0, 10000, 7, 1, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memset(&p, 0, sizeof p);
        EXPECT_OK(mqstore_inbox_read(f->s, "a", cases[c].after, cases[c].limit, 1 << 20, &p));
        if (p.n != cases[c].n || p.more != cases[c].more)
            print_error("case %zu: after %llu limit %zu: n %zu more %d\n", c,
                        (unsigned long long)cases[c].after, cases[c].limit, p.n, p.more);
        assert_int_equal(p.n, cases[c].n);
        assert_int_equal(!!p.more, cases[c].more);
        for (size_t i = 0; i < p.n; i++) {
            uint64_t k = cases[c].first + i;
            snprintf(buf, sizeof buf, "p%llu", (unsigned long long)k);
            snprintf(cm, sizeof cm, "cm%llu", (unsigned long long)k);
            assert_int_equal(p.items[i].inbox_seq, k);
            assert_int_equal(p.items[i].server_time_ms, T0);
            check_text(&p.items[i], "c", k, "b", "phone", cm, buf);
        }
        mqstore_page_free(&p);
    }
    memset(&p, 0, sizeof p);
    EXPECT_ERR(mqstore_inbox_read(f->s, "a", 0, 0, 1 << 20, &p), MQSTORE_ERR_INVAL);
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_ERR(mqstore_inbox_read(f->s, "a", 0, 10001, 1 << 20, &p), MQSTORE_ERR_INVAL);
    mqstore_page_free(&p);
    /* A user with no inbox: empty page. */
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "nobody", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 0);
    assert_int_equal(p.more, 0);
    mqstore_page_free(&p);
    assert_int_equal(ihead(f, "nobody"), 0);
}

static void test_inbox_max_bytes(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    uint8_t pl[100];
    mqstore_result r;
    for (int i = 0; i < 5; i++) {
        memset(pl, 'A' + i, sizeof pl);
        EXPECT_OK(send_raw(f, "c", "b", "d", NULL, pl, sizeof pl, NULL, 0, &r));
        mqstore_result_clear(&r);
    }
    mqstore_page p;
    /* About 250 bytes of 100-byte payloads: two or three entries. */
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "a", 0, 100, 250, &p));
    assert_in_range(p.n, 2, 3);
    assert_true(p.more);
    mqstore_page_free(&p);

    /* A budget smaller than one entry still returns exactly one. */
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "a", 0, 100, 10, &p));
    assert_int_equal(p.n, 1);
    assert_true(p.more);
    assert_int_equal(p.items[0].payload_len, 100);
    mqstore_page_free(&p);

    /* Paging with the byte budget visits every entry once, in order. */
    uint64_t after = 0;
    int pages = 0, seen = 0;
    for (;;) {
        assert_true(pages < 10);
        memset(&p, 0, sizeof p);
        EXPECT_OK(mqstore_inbox_read(f->s, "a", after, 100, 250, &p));
        pages++;
        assert_true(p.n >= 1);
        for (size_t i = 0; i < p.n; i++) {
            assert_int_equal(p.items[i].inbox_seq, after + 1);
            memset(pl, 'A' + seen, sizeof pl);
            assert_int_equal(p.items[i].payload_len, 100);
            assert_memory_equal(p.items[i].payload, pl, 100);
            after = p.items[i].inbox_seq;
            seen++;
        }
        int more = p.more;
        mqstore_page_free(&p);
        if (!more) break;
    }
    assert_int_equal(seen, 5);
    assert_in_range(pages, 2, 3);
}

static void test_inbox_interleave(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const x[] = {"u", "v"};
    const char *const y[] = {"u", "w"};
    conv_make(f, "X", x, NULL, 2, NULL);
    conv_make(f, "Y", y, NULL, 2, NULL);
    send_text(f, "X", "v", "d", NULL, "x1");
    send_text(f, "Y", "w", "d", NULL, "y1");
    send_text(f, "X", "v", "d", NULL, "x2");
    send_text(f, "Y", "u", "d", NULL, "y2");
    send_text(f, "Y", "w", "d", NULL, "y3");
    assert_int_equal(ihead(f, "u"), 5);
    assert_int_equal(ihead(f, "v"), 2);
    assert_int_equal(ihead(f, "w"), 3);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 0, 100, 1 << 20, &p));
    assert_int_equal(p.n, 5);
    const struct {
        const char *conv, *sender, *text;
        uint64_t seq;
    } want[] = {{"X", "v", "x1", 1},
                {"Y", "w", "y1", 1},
                {"X", "v", "x2", 2},
                {"Y", "u", "y2", 2},
                {"Y", "w", "y3", 3}};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(p.items[i].inbox_seq, i + 1);
        check_text(&p.items[i], want[i].conv, want[i].seq, want[i].sender, "d", NULL, want[i].text);
    }
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "w", 1, 100, 1 << 20, &p));
    assert_int_equal(p.n, 2);
    assert_int_equal(p.items[0].inbox_seq, 2);
    check_text(&p.items[0], "Y", 2, "u", "d", NULL, "y2");
    mqstore_page_free(&p);
}

/* ======================================================================== */
/* history and msg_get                                                      */
/* ======================================================================== */

static void test_history_read(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    char buf[16];
    for (int i = 1; i <= 10; i++) {
        snprintf(buf, sizeof buf, "h%d", i);
        send_text(f, "c", (i & 1) ? "a" : "b", "d", NULL, buf);
    }
    struct {
        uint64_t before;
        size_t limit;
        size_t n;
        uint64_t first;
        int more;
    } cases[] = {
        {0, 3, 3, 10, 1},   {8, 3, 3, 7, 1},       {2, 3, 1, 1, 0},
        {4, 3, 3, 3, 0},    {1, 3, 0, 0, 0},       {100, 2, 2, 10, 1},
        {0, 10, 10, 10, 0}, {0, 10000, 10, 10, 0}, {11, 1, 1, 10, 1},
    };
    mqstore_page p;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memset(&p, 0, sizeof p);
        EXPECT_OK(mqstore_history_read(f->s, "c", cases[c].before, cases[c].limit, &p));
        if (p.n != cases[c].n || !!p.more != cases[c].more)
            print_error("case %zu: before %llu limit %zu: n %zu more %d\n", c,
                        (unsigned long long)cases[c].before, cases[c].limit, p.n, p.more);
        assert_int_equal(p.n, cases[c].n);
        assert_int_equal(!!p.more, cases[c].more);
        for (size_t i = 0; i < p.n; i++) {
            uint64_t k = cases[c].first - i;
            snprintf(buf, sizeof buf, "h%llu", (unsigned long long)k);
            check_text(&p.items[i], "c", k, (k & 1) ? "a" : "b", "d", NULL, buf);
            assert_int_equal(p.items[i].inbox_seq, 0);
        }
        mqstore_page_free(&p);
    }
    memset(&p, 0, sizeof p);
    EXPECT_ERR(mqstore_history_read(f->s, "c", 0, 0, &p), MQSTORE_ERR_INVAL);
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_ERR(mqstore_history_read(f->s, "c", 0, 10001, &p), MQSTORE_ERR_INVAL);
    mqstore_page_free(&p);
}

static void test_msg_get(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    send_text(f, "c", "a", "d1", "k1", "one");
    send_text(f, "c", "b", "d2", "k2", "two");
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_msg_get(f->s, "c", 2, &p));
    assert_int_equal(p.n, 1);
    check_text(&p.items[0], "c", 2, "b", "d2", "k2", "two");
    assert_int_equal(p.items[0].server_time_ms, T0);
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_msg_get(f->s, "c", 1, &p));
    check_text(&p.items[0], "c", 1, "a", "d1", "k1", "one");
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_ERR(mqstore_msg_get(f->s, "c", 3, &p), MQSTORE_ERR_NOTFOUND);
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_ERR(mqstore_msg_get(f->s, "nope", 1, &p), MQSTORE_ERR_NOTFOUND);
    mqstore_page_free(&p);
}

/* ======================================================================== */
/* membership                                                               */
/* ======================================================================== */

static void test_members_add(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    const mqstore_role roles[] = {MQSTORE_ROLE_OWNER, MQSTORE_ROLE_MEMBER};
    conv_make(f, "c", mem, roles, 2, "created");
    send_text(f, "c", "b", "d", NULL, "before");

    const char *const add[] = {"c1", "d1"};
    const mqstore_role addr[] = {MQSTORE_ROLE_ADMIN, MQSTORE_ROLE_MEMBER};
    mqstore_event ev = ev_make("a", "added", MQSTORE_MODE_KEEP);
    mqstore_result r;
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_members_add(f->s, "c", add, addr, 2, &ev, &r));
    assert_int_equal(r.seq, 3);
    assert_int_equal(r.n_fanout, 4);
    assert_int_equal(fanout_seq(&r, "a"), 3);
    assert_int_equal(fanout_seq(&r, "b"), 3);
    assert_int_equal(fanout_seq(&r, "c1"), 1);
    assert_int_equal(fanout_seq(&r, "d1"), 1);
    assert_int_equal(r.inbox_seq, 3);
    mqstore_result_clear(&r);

    mqstore_member m;
    memset(&m, 0, sizeof m);
    EXPECT_OK(mqstore_member_get(f->s, "c", "c1", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_ADMIN);
    assert_int_equal(m.joined_seq, 3);
    EXPECT_OK(mqstore_member_get(f->s, "c", "d1", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_MEMBER);
    EXPECT_OK(mqstore_member_get(f->s, "c", "a", &m));
    assert_int_equal(m.joined_seq, 1);

    /* New members see only what happened from their joining on. */
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "c1", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 1);
    check_msg(&p.items[0], "c", 3, "a", EV_DEVICE, NULL, EV_KIND, "added", 5);
    mqstore_page_free(&p);
    mqstore_conv_list cl;
    memset(&cl, 0, sizeof cl);
    EXPECT_OK(mqstore_user_convs(f->s, "c1", NULL, 10, &cl));
    assert_int_equal(cl.n, 1);
    assert_string_equal(cl.conv[0], "c");
    assert_int_equal(cl.role[0], MQSTORE_ROLE_ADMIN);
    mqstore_conv_list_free(&cl);

    /* They can send, and everyone gets it. */
    EXPECT_OK(send_raw(f, "c", "d1", "dd", NULL, "hi", 2, NULL, 0, &r));
    assert_int_equal(r.seq, 4);
    assert_int_equal(r.n_fanout, 4);
    mqstore_result_clear(&r);

    /* EXISTS if any is already a member; nothing written. */
    const char *const again[] = {"e", "d1"};
    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_members_add(f->s, "c", again, NULL, 2, &ev, &r), MQSTORE_ERR_EXISTS);
    mqstore_result_clear(&r);
    assert_false(member_in(f, "c", "e"));
    assert_int_equal(chead(f, "c"), 4);
    assert_int_equal(ihead(f, "a"), 4);
    assert_int_equal(ihead(f, "e"), 0);
    EXPECT_OK(mqstore_member_get(f->s, "c", "d1", &m));
    assert_int_equal(m.joined_seq, 3);

    /* Unknown conversation. */
    const char *const one[] = {"e"};
    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_members_add(f->s, "nope", one, NULL, 1, &ev, &r), MQSTORE_ERR_NOTFOUND);
    mqstore_result_clear(&r);
    assert_int_equal(ihead(f, "e"), 0);
}

static void test_members_remove(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    conv_make(f, "g", mem, NULL, 3, NULL);
    assert_int_equal(send_text(f, "g", "a", "d", NULL, "m1"), 1);

    const char *const rm[] = {"c"};
    mqstore_event ev = ev_make("a", "removed c", MQSTORE_MODE_KEEP);
    mqstore_result r;
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_members_remove(f->s, "g", rm, 1, &ev, &r));
    assert_int_equal(r.seq, 2);
    assert_int_equal(r.n_fanout, 3);
    assert_int_equal(fanout_seq(&r, "a"), 2);
    assert_int_equal(fanout_seq(&r, "b"), 2);
    assert_int_equal(fanout_seq(&r, "c"), 2);
    mqstore_result_clear(&r);

    /* The removed user learns of it. */
    assert_int_equal(ihead(f, "c"), 2);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "c", 1, 10, 1 << 20, &p));
    assert_int_equal(p.n, 1);
    check_msg(&p.items[0], "g", 2, "a", EV_DEVICE, NULL, EV_KIND, "removed c", 9);
    mqstore_page_free(&p);
    assert_false(member_in(f, "g", "c"));

    /* ... and is out: cannot send, gets nothing new. */
    EXPECT_ERR(send_raw(f, "g", "c", "d", NULL, "x", 1, NULL, 0, &r), MQSTORE_ERR_NOTMEMBER);
    mqstore_result_clear(&r);
    EXPECT_OK(send_raw(f, "g", "a", "d", NULL, "m3", 2, NULL, 0, &r));
    assert_int_equal(r.seq, 3);
    assert_int_equal(r.n_fanout, 2);
    assert_int_equal(fanout_seq(&r, "c"), 0);
    mqstore_result_clear(&r);
    assert_int_equal(ihead(f, "c"), 2);
    mqstore_conv_list cl;
    memset(&cl, 0, sizeof cl);
    EXPECT_OK(mqstore_user_convs(f->s, "c", NULL, 10, &cl));
    assert_int_equal(cl.n, 0);
    mqstore_conv_list_free(&cl);
    mqstore_member_list ml;
    memset(&ml, 0, sizeof ml);
    EXPECT_OK(mqstore_members_list(f->s, "g", &ml));
    assert_int_equal(ml.n, 2);
    assert_string_equal(ml.items[0].user, "a");
    assert_string_equal(ml.items[1].user, "b");
    mqstore_member_list_free(&ml);

    /* NOTFOUND if any is not a member; nothing written. */
    const char *const rm2[] = {"b", "c"};
    memset(&r, 0, sizeof r);
    EXPECT_ERR(mqstore_members_remove(f->s, "g", rm2, 2, &ev, &r), MQSTORE_ERR_NOTFOUND);
    mqstore_result_clear(&r);
    assert_true(member_in(f, "g", "b"));
    assert_int_equal(chead(f, "g"), 3);
    assert_int_equal(ihead(f, "b"), 3);
    assert_int_equal(ihead(f, "c"), 2);

    /* A user can leave (actor == removed). */
    const char *const rm3[] = {"b"};
    mqstore_event leave = ev_make("b", "left", MQSTORE_MODE_KEEP);
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_members_remove(f->s, "g", rm3, 1, &leave, &r));
    assert_int_equal(r.seq, 4);
    assert_int_equal(r.inbox_seq, fanout_seq(&r, "b"));
    assert_int_equal(fanout_seq(&r, "b"), 4);
    mqstore_result_clear(&r);
    assert_false(member_in(f, "g", "b"));
}

static void test_members_set_role(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    const mqstore_role roles[] = {MQSTORE_ROLE_OWNER, MQSTORE_ROLE_MEMBER, MQSTORE_ROLE_MEMBER};
    conv_make(f, "g", mem, roles, 3, "created");
    const char *const who[] = {"b", "c"};
    mqstore_event ev = ev_make("a", "promoted", MQSTORE_MODE_KEEP);
    mqstore_result r;
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_members_set_role(f->s, "g", who, 2, MQSTORE_ROLE_ADMIN, &ev, &r));
    assert_int_equal(r.seq, 2);
    assert_int_equal(r.n_fanout, 3);
    assert_int_equal(fanout_seq(&r, "a"), 2);
    mqstore_result_clear(&r);
    mqstore_member m;
    memset(&m, 0, sizeof m);
    EXPECT_OK(mqstore_member_get(f->s, "g", "b", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_ADMIN);
    assert_int_equal(m.joined_seq, 1); /* a role change is not a re-join */
    EXPECT_OK(mqstore_member_get(f->s, "g", "c", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_ADMIN);
    EXPECT_OK(mqstore_member_get(f->s, "g", "a", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_OWNER);
    mqstore_conv_list cl;
    memset(&cl, 0, sizeof cl);
    EXPECT_OK(mqstore_user_convs(f->s, "b", NULL, 10, &cl));
    assert_int_equal(cl.n, 1);
    assert_int_equal(cl.role[0], MQSTORE_ROLE_ADMIN);
    mqstore_conv_list_free(&cl);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "c", 1, 10, 1 << 20, &p));
    assert_int_equal(p.n, 1);
    check_msg(&p.items[0], "g", 2, "a", EV_DEVICE, NULL, EV_KIND, "promoted", 8);
    mqstore_page_free(&p);

    /* Back to MEMBER. */
    const char *const one[] = {"c"};
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_members_set_role(f->s, "g", one, 1, MQSTORE_ROLE_MEMBER, &ev, &r));
    assert_int_equal(r.seq, 3);
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_member_get(f->s, "g", "c", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_MEMBER);
}

static void test_members_list_order(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"zed", "alice", "Bob", "mike", "0x", "al"};
    const mqstore_role roles[] = {MQSTORE_ROLE_MEMBER, MQSTORE_ROLE_OWNER,  MQSTORE_ROLE_ADMIN,
                                  MQSTORE_ROLE_MEMBER, MQSTORE_ROLE_MEMBER, MQSTORE_ROLE_ADMIN};
    const size_t n = sizeof mem / sizeof mem[0];
    conv_make(f, "g", mem, roles, n, "created");
    mqstore_member_list ml;
    memset(&ml, 0, sizeof ml);
    EXPECT_OK(mqstore_members_list(f->s, "g", &ml));
    assert_int_equal(ml.n, n);
    for (size_t i = 0; i < ml.n; i++) {
        if (i > 0) assert_true(strcmp(ml.items[i - 1].user, ml.items[i].user) < 0);
        size_t j;
        for (j = 0; j < n; j++)
            if (strcmp(mem[j], ml.items[i].user) == 0) break;
        assert_true(j < n);
        assert_int_equal(ml.items[i].role, roles[j]);
        assert_int_equal(ml.items[i].joined_seq, 1);
    }
    mqstore_member_list_free(&ml);
    /* Unknown conversation: the header does not say NOTFOUND, but it must not
     * list anyone. */
    memset(&ml, 0, sizeof ml);
    mqstore_err e = mqstore_members_list(f->s, "nope", &ml);
    if (e != MQSTORE_ERR_NOTFOUND) {
        EXPECT_OK(e);
        assert_int_equal(ml.n, 0);
    }
    mqstore_member_list_free(&ml);
}

static void test_user_convs_paging(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *order[] = {"c03", "c01", "c05", "c02", "c04"};
    const mqstore_role urole[] = {MQSTORE_ROLE_ADMIN, MQSTORE_ROLE_OWNER, MQSTORE_ROLE_MEMBER,
                                  MQSTORE_ROLE_MEMBER, MQSTORE_ROLE_OWNER};
    for (size_t i = 0; i < 5; i++) {
        const char *const mem[] = {"other", "u"};
        const mqstore_role roles[] = {MQSTORE_ROLE_MEMBER, urole[i]};
        conv_make(f, order[i], mem, roles, 2, NULL);
    }
    const char *const notu[] = {"other", "x"};
    conv_make(f, "c00", notu, NULL, 2, NULL);

    struct {
        const char *after;
        size_t limit;
        size_t n;
        int first;
        int more;
    } cases[] = {
        {NULL, 2, 2, 1, 1},  {"c02", 2, 2, 3, 1},   {"c04", 2, 1, 5, 0},  {"", 5, 5, 1, 0},
        {"c05", 2, 0, 0, 0}, {"c025", 10, 3, 3, 0}, {"b", 1000, 5, 1, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mqstore_conv_list cl;
        memset(&cl, 0, sizeof cl);
        EXPECT_OK(mqstore_user_convs(f->s, "u", cases[c].after, cases[c].limit, &cl));
        if (cl.n != cases[c].n || !!cl.more != cases[c].more)
            print_error("case %zu: n %zu more %d\n", c, cl.n, cl.more);
        assert_int_equal(cl.n, cases[c].n);
        assert_int_equal(!!cl.more, cases[c].more);
        for (size_t i = 0; i < cl.n; i++) {
            char want[8];
            snprintf(want, sizeof want, "c%02d", cases[c].first + (int)i);
            assert_string_equal(cl.conv[i], want);
            size_t k;
            for (k = 0; k < 5; k++)
                if (strcmp(order[k], want) == 0) break;
            assert_int_equal(cl.role[i], urole[k]);
        }
        mqstore_conv_list_free(&cl);
    }
    mqstore_conv_list cl;
    memset(&cl, 0, sizeof cl);
    EXPECT_ERR(mqstore_user_convs(f->s, "u", NULL, 0, &cl), MQSTORE_ERR_INVAL);
    mqstore_conv_list_free(&cl);
    memset(&cl, 0, sizeof cl);
    EXPECT_ERR(mqstore_user_convs(f->s, "u", NULL, 1001, &cl), MQSTORE_ERR_INVAL);
    mqstore_conv_list_free(&cl);
    memset(&cl, 0, sizeof cl);
    EXPECT_OK(mqstore_user_convs(f->s, "nobody", NULL, 10, &cl));
    assert_int_equal(cl.n, 0);
    assert_int_equal(cl.more, 0);
    mqstore_conv_list_free(&cl);
    memset(&cl, 0, sizeof cl);
    EXPECT_OK(mqstore_user_convs(f->s, "other", NULL, 1000, &cl));
    assert_int_equal(cl.n, 6);
    assert_string_equal(cl.conv[0], "c00");
    mqstore_conv_list_free(&cl);
}

/* Events and messages share one seq sequence; every write gets a larger ticket. */
static void test_events_interleave_seq(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    mqstore_event ev = ev_make("a", "e", MQSTORE_MODE_KEEP);
    mqstore_result r;
    uint64_t last_ticket = 0;
    uint64_t seq = 0;

#define STEP(call, want_seq, want_kind)                                                            \
    do {                                                                                           \
        memset(&r, 0, sizeof r);                                                                   \
        EXPECT_OK(call);                                                                           \
        assert_int_equal(r.seq, (want_seq));                                                       \
        assert_true(r.ticket > last_ticket);                                                       \
        assert_true(r.ticket <= mqstore_last_ticket(f->s));                                        \
        last_ticket = r.ticket;                                                                    \
        kinds[++seq] = (want_kind);                                                                \
        mqstore_result_clear(&r);                                                                  \
    } while (0)

    uint32_t kinds[16] = {0};
    const char *const add[] = {"c"};
    STEP(mqstore_conv_create(f->s, "g", mem, NULL, 2, &ev, &r), 1, EV_KIND);
    STEP(send_raw(f, "g", "a", "d", NULL, "m", 1, NULL, 0, &r), 2, MSG_KIND);
    STEP(mqstore_members_add(f->s, "g", add, NULL, 1, &ev, &r), 3, EV_KIND);
    STEP(send_raw(f, "g", "c", "d", NULL, "m", 1, NULL, 0, &r), 4, MSG_KIND);
    STEP(mqstore_members_set_role(f->s, "g", add, 1, MQSTORE_ROLE_ADMIN, &ev, &r), 5, EV_KIND);
    STEP(mqstore_members_remove(f->s, "g", add, 1, &ev, &r), 6, EV_KIND);
    STEP(send_raw(f, "g", "b", "d", NULL, "m", 1, NULL, 0, &r), 7, MSG_KIND);
#undef STEP

    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_history_read(f->s, "g", 0, 100, &p));
    assert_int_equal(p.n, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(p.items[i].seq, 7 - i);
        assert_int_equal(p.items[i].kind, kinds[7 - i]);
    }
    mqstore_page_free(&p);
    /* c saw 3..6 (joined at 3, removed at 6), nothing after. */
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "c", 0, 100, 1 << 20, &p));
    assert_int_equal(p.n, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(p.items[i].seq, 3 + i);
        assert_int_equal(p.items[i].inbox_seq, 1 + i);
    }
    mqstore_page_free(&p);
    assert_int_equal(ihead(f, "a"), 7);
}

/* ======================================================================== */
/* cursors and trimming                                                     */
/* ======================================================================== */

static void fill_inbox(fx *f, const char *conv, const char *sender, int n)
{
    for (int i = 0; i < n; i++)
        send_text(f, conv, sender, "sd", NULL, "fill");
}

static void test_cursor_ack(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    fill_inbox(f, "c", "v", 5);
    uint64_t st = 999, c = 999;

    EXPECT_OK(mqstore_cursor_get(f->s, "u", "d1", &c));
    assert_int_equal(c, 0);
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d1", 3, &st));
    assert_int_equal(st, 3);
    st = 999;
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d1", 2, &st)); /* lower: ignored */
    assert_int_equal(st, 3);
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "d1", &c));
    assert_int_equal(c, 3);
    EXPECT_ERR(mqstore_cursor_ack(f->s, "u", "d1", 6, &st), MQSTORE_ERR_INVAL); /* > head */
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "d1", &c));
    assert_int_equal(c, 3);
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d1", 5, NULL));
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "d1", &c));
    assert_int_equal(c, 5);
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "d2", &c));
    assert_int_equal(c, 0);
    EXPECT_OK(mqstore_cursor_get(f->s, "v", "d1", &c));
    assert_int_equal(c, 0);
    /* A user with an empty inbox cannot ack anything above 0. */
    EXPECT_ERR(mqstore_cursor_ack(f->s, "nobody", "d", 1, &st), MQSTORE_ERR_INVAL);
    fx_reopen(f);
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "d1", &c));
    assert_int_equal(c, 5);
}

static void test_device_forget(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    fill_inbox(f, "c", "v", 4);
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d1", 4, NULL));
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d2", 1, NULL));
    uint64_t t = 999, c = 999;
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 1);
    EXPECT_OK(mqstore_device_forget(f->s, "u", "d2"));
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "d2", &c));
    assert_int_equal(c, 0);
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "d1", &c));
    assert_int_equal(c, 4);
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 4);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 0);
    mqstore_page_free(&p);
}

/* Trims interleaved with appends in one memtable, for several users: the
 * inbox trim's range deletion must never reuse a memtable insert hint of the
 * log keys (INVARIANT in offline-queue/src/hint.cc; RocksDB's own assertions,
 * compiled into Debian's librocksdb, caught the first version). Every
 * message stays readable exactly while it is above the trim point. */
static void test_trim_interleaved_with_appends(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const users[] = {"u0", "u1", "u2", "u3"};
    const char *const m01[] = {"u0", "u1"}, *const m23[] = {"u2", "u3"};
    conv_make(f, "c01", m01, NULL, 2, NULL);
    conv_make(f, "c23", m23, NULL, 2, NULL);
    for (int round = 1; round <= 300; round++) {
        send_text(f, "c01", "u0", "d", NULL, "x");
        send_text(f, "c23", "u3", "d", NULL, "y");
        for (int u = 0; u < 4; u++) {
            uint64_t head = ihead(f, users[u]), t = 0;
            EXPECT_OK(mqstore_cursor_ack(f->s, users[u], "d", head - 1, NULL));
            EXPECT_OK(mqstore_inbox_trim(f->s, users[u], &t));
            assert_int_equal(t, head - 1);
        }
    }
    for (int u = 0; u < 4; u++) {
        mqstore_page p;
        memset(&p, 0, sizeof p);
        EXPECT_OK(mqstore_inbox_read(f->s, users[u], 0, 10, 1 << 20, &p));
        assert_int_equal(p.n, 1);
        assert_int_equal(p.items[0].inbox_seq, 300);
        mqstore_page_free(&p);
    }
    assert_int_equal(chead(f, "c01"), 300);
    fx_reopen(f);
    assert_int_equal(ihead(f, "u2"), 300);
}

static void test_trim_min_cursor(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    fill_inbox(f, "c", "v", 6);
    uint64_t t = 999;

    /* No device yet, everything recent: nothing trimmed. */
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 0);

    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d1", 5, NULL));
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d2", 3, NULL));
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 3);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 3);
    assert_int_equal(p.items[0].inbox_seq, 4);
    assert_int_equal(p.items[0].seq, 4);
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 1, 10, 1 << 20, &p));
    assert_int_equal(p.n, 3);
    assert_int_equal(p.items[0].inbox_seq, 4);
    mqstore_page_free(&p);
    /* v's inbox is untouched (trim is per user). */
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "v", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 6);
    mqstore_page_free(&p);

    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d2", 6, NULL));
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 5);
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d1", 6, NULL));
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", NULL));
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 0);
    assert_int_equal(p.more, 0);
    mqstore_page_free(&p);
    assert_int_equal(ihead(f, "u"), 6);

    /* The messages are still in the conversation log. */
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_history_read(f->s, "c", 0, 100, &p));
    assert_int_equal(p.n, 6);
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_msg_get(f->s, "c", 1, &p));
    assert_int_equal(p.n, 1);
    mqstore_page_free(&p);

    /* New entries continue after the head, and after a reopen too. */
    assert_int_equal(send_text(f, "c", "v", "sd", NULL, "new"), 7);
    fx_reopen(f);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 1);
    assert_int_equal(p.items[0].inbox_seq, 7);
    check_text(&p.items[0], "c", 7, "v", "sd", NULL, "new");
    mqstore_page_free(&p);
}

static void test_trim_retention_age(void **state)
{
    fx *f = *state;
    f->opt.inbox_retention_ms = 10000;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    fill_inbox(f, "c", "v", 3); /* inbox 1..3 at T0 */
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d", 1, NULL));
    fx_advance(f, 6000);
    fill_inbox(f, "c", "v", 2); /* inbox 4..5 at T0+6000 */
    uint64_t t = 999;
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 1);

    fx_advance(f, 5000); /* T0+11000: 1..3 are past the retention, 4..5 are not */
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d", 1, NULL)); /* d is alive, cursor still 1 */
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 3);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 2);
    assert_int_equal(p.items[0].inbox_seq, 4);
    assert_int_equal(p.items[1].inbox_seq, 5);
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_history_read(f->s, "c", 0, 100, &p));
    assert_int_equal(p.n, 5);
    mqstore_page_free(&p);
}

static void test_trim_stale_device(void **state)
{
    fx *f = *state;
    f->opt.inbox_retention_ms = 10000;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    fill_inbox(f, "c", "v", 2); /* 1..2 at T0 */
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "old", 1, NULL));
    fx_advance(f, 5000);
    fill_inbox(f, "c", "v", 3); /* 3..5 at T0+5000 */
    fx_advance(f, 7000);        /* T0+12000: "old" unseen for 12 s > 10 s */
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "new", 4, NULL));
    uint64_t t = 999;
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    /* Only "new" counts: up to 4. Had "old" counted, only the aged 1..2 would go. */
    assert_int_equal(t, 4);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 1);
    assert_int_equal(p.items[0].inbox_seq, 5);
    mqstore_page_free(&p);
    /* The stale device no longer counts for trimming, but it did ack 1:
     * cursor_get is "0 if it never acked". */
    uint64_t c = 999;
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "old", &c));
    if (c != 1) print_error("stale device's cursor reads %llu after trim\n", (unsigned long long)c);
    assert_int_equal(c, 1);
}

/* A device the store was told about (device_touch: it connected) holds
 * trimming back at cursor 0 before it ever acks; a touch also makes a stale
 * device count again. */
static void test_device_touch(void **state)
{
    fx *f = *state;
    f->opt.inbox_retention_ms = 100000;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    EXPECT_OK(mqstore_device_touch(f->s, "u", "tablet"));
    fill_inbox(f, "c", "v", 4);
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "phone", 4, NULL));
    uint64_t t = 999, c = 999;
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 0); /* the tablet has acked nothing */
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "tablet", &c));
    assert_int_equal(c, 0);
    /* Touching again keeps the cursor. */
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "tablet", 2, NULL));
    EXPECT_OK(mqstore_device_touch(f->s, "u", "tablet"));
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "tablet", &c));
    assert_int_equal(c, 2);
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 2);
    /* Stale, then touched: it counts again. Entries 5..7 are young; the
     * phone acks them all. Had the stale tablet not been touched, trim
     * would reach 7; touched, it holds at its cursor (2) — only the aged
     * entries 3..4 go, by retention. */
    fx_advance(f, 150000);
    fill_inbox(f, "c", "v", 3);
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "phone", 7, NULL));
    EXPECT_OK(mqstore_device_touch(f->s, "u", "tablet"));
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 4);
    assert_int_equal(mqstore_device_touch(f->s, "u", "bad/id"), MQSTORE_ERR_INVAL);
}

static void test_trim_no_device(void **state)
{
    fx *f = *state;
    f->opt.inbox_retention_ms = 10000;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    fill_inbox(f, "c", "v", 3);
    uint64_t t = 999;
    fx_advance(f, 9000);
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 0);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 3);
    mqstore_page_free(&p);

    fx_advance(f, 2000); /* T0+11000 */
    fill_inbox(f, "c", "v", 1);
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 3);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "u", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 1);
    assert_int_equal(p.items[0].inbox_seq, 4);
    mqstore_page_free(&p);
    /* A user that has no inbox at all trims nothing. */
    EXPECT_OK(mqstore_inbox_trim(f->s, "nobody", &t));
    assert_int_equal(t, 0);
}

/* ======================================================================== */
/* receipts                                                                 */
/* ======================================================================== */

static void receipt_expect(fx *f, const char *conv, const char *user, uint64_t d, uint64_t r)
{
    uint64_t gd = 999, gr = 999;
    EXPECT_OK(mqstore_receipt_get(f->s, conv, user, &gd, &gr));
    assert_int_equal(gd, d);
    assert_int_equal(gr, r);
}

/* History pages stop at about max_bytes of payload: at least one
 * message, `more` when cut, and paging by seq reaches everything. */
static void test_history_bytes(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    static char body[1000];
    mqstore_result r;
    for (int i = 0; i < 10; i++) {
        EXPECT_OK(send_raw(f, "c", "a", "d", NULL, body, sizeof(body), NULL, 0, &r));
        mqstore_result_clear(&r);
    }
    mqstore_page p;
    EXPECT_OK(mqstore_history_read_bytes(f->s, "c", 0, 100, 2500, &p));
    assert_int_equal(p.n, 3); /* 1000 + 1000 < 2500, the third crosses it */
    assert_true(p.more);
    assert_int_equal(p.items[0].seq, 10);
    mqstore_page_free(&p);
    EXPECT_OK(mqstore_history_read_bytes(f->s, "c", 0, 100, 1, &p));
    assert_int_equal(p.n, 1); /* always one */
    assert_true(p.more);
    mqstore_page_free(&p);
    uint64_t before = 0;
    size_t total = 0;
    for (int pages = 0; pages < 20; pages++) {
        EXPECT_OK(mqstore_history_read_bytes(f->s, "c", before, 100, 2500, &p));
        total += p.n;
        int more = p.more;
        if (p.n) before = p.items[p.n - 1].seq;
        mqstore_page_free(&p);
        if (!more) break;
    }
    assert_int_equal(total, 10);
}

/* Per-user preferences: opaque bytes, replaced whole, kept across a
 * reopen, bounded, and independent of the user's other records. */
static void test_user_prefs(void **state)
{
    fx *f = *state;
    fx_open(f);
    void *data = (void *)1;
    size_t len = 0;
    assert_int_equal(mqstore_user_prefs_get(f->s, "alice", &data, &len), MQSTORE_ERR_NOTFOUND);
    assert_null(data);
    EXPECT_OK(mqstore_user_prefs_put(f->s, "alice", "\x00\x01two", 5));
    EXPECT_OK(mqstore_user_prefs_put(f->s, "bob", "b", 1));
    EXPECT_OK(mqstore_user_prefs_get(f->s, "alice", &data, &len));
    assert_int_equal(len, 5);
    assert_memory_equal(data, "\x00\x01two", 5);
    free(data);
    EXPECT_OK(mqstore_user_prefs_put(f->s, "alice", "new", 3));
    fx_reopen(f);
    EXPECT_OK(mqstore_user_prefs_get(f->s, "alice", &data, &len));
    assert_int_equal(len, 3);
    assert_memory_equal(data, "new", 3);
    free(data);
    EXPECT_OK(mqstore_user_prefs_get(f->s, "bob", &data, &len));
    assert_int_equal(len, 1);
    free(data);
    /* Empty is a value, not an absence. */
    EXPECT_OK(mqstore_user_prefs_put(f->s, "bob", NULL, 0));
    EXPECT_OK(mqstore_user_prefs_get(f->s, "bob", &data, &len));
    assert_int_equal(len, 0);
    free(data);
    static char big[MQSTORE_PREFS_MAX + 1];
    assert_int_equal(mqstore_user_prefs_put(f->s, "alice", big, sizeof(big)), MQSTORE_ERR_INVAL);
    EXPECT_OK(mqstore_user_prefs_put(f->s, "alice", big, MQSTORE_PREFS_MAX));
    assert_int_equal(mqstore_user_prefs_put(f->s, "no/slash", "x", 1), MQSTORE_ERR_INVAL);
    assert_int_equal(mqstore_user_prefs_get(f->s, "", &data, &len), MQSTORE_ERR_INVAL);
    /* A user's prefs are not a conversation nor an inbox mark. */
    mqstore_err e;
    assert_false(mqstore_conv_exists(f->s, "alice", &e));
    assert_int_equal(e, MQSTORE_OK);
}

/* One token per device, replaced by a put, listed per user by device id;
 * a conditional delete leaves a newer token alone; forgetting the device
 * deletes it; sizes are checked. */
static void test_push_tokens(void **state)
{
    fx *f = *state;
    fx_open(f);
    mqstore_push_token_list l;
    EXPECT_OK(mqstore_push_tokens(f->s, "alice", &l));
    assert_int_equal(l.n, 0);
    EXPECT_OK(mqstore_push_token_put(f->s, "alice", "phone", 1, "aa11", "com.example.app"));
    EXPECT_OK(mqstore_push_token_put(f->s, "alice", "tablet", 3, "fcm-token-1", ""));
    EXPECT_OK(mqstore_push_token_put(f->s, "alicex", "phone", 1, "ff00", NULL));
    EXPECT_OK(mqstore_push_token_put(f->s, "alice", "phone", 2, "bb22", "com.example.dev"));
    fx_reopen(f);
    EXPECT_OK(mqstore_push_tokens(f->s, "alice", &l));
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].device, "phone");
    assert_int_equal(l.items[0].platform, 2);
    assert_string_equal(l.items[0].token, "bb22");
    assert_string_equal(l.items[0].app, "com.example.dev");
    assert_true(l.items[0].updated_ms > 0);
    assert_string_equal(l.items[1].device, "tablet");
    assert_string_equal(l.items[1].token, "fcm-token-1");
    mqstore_push_token_list_free(&l);
    /* An old token's report does not remove the new one. */
    int deleted = 1;
    EXPECT_OK(mqstore_push_token_delete(f->s, "alice", "phone", "aa11", &deleted));
    assert_int_equal(deleted, 0);
    EXPECT_OK(mqstore_push_token_delete(f->s, "alice", "phone", "bb22", &deleted));
    assert_int_equal(deleted, 1);
    EXPECT_OK(mqstore_push_token_delete(f->s, "alice", "phone", NULL, &deleted));
    assert_int_equal(deleted, 0);
    EXPECT_OK(mqstore_device_forget(f->s, "alice", "tablet"));
    EXPECT_OK(mqstore_push_tokens(f->s, "alice", &l));
    assert_int_equal(l.n, 0);
    mqstore_push_token_list_free(&l);
    EXPECT_OK(mqstore_push_tokens(f->s, "alicex", &l));
    assert_int_equal(l.n, 1);
    mqstore_push_token_list_free(&l);
    static char big[MQSTORE_TOKEN_MAX + 2];
    memset(big, 'a', MQSTORE_TOKEN_MAX + 1);
    EXPECT_ERR(mqstore_push_token_put(f->s, "alice", "phone", 1, big, ""), MQSTORE_ERR_INVAL);
    big[MQSTORE_TOKEN_MAX] = '\0';
    EXPECT_OK(mqstore_push_token_put(f->s, "alice", "phone", 1, big, ""));
    EXPECT_ERR(mqstore_push_token_put(f->s, "alice", "phone", 1, "", ""), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_push_token_put(f->s, "alice", "bad/dev", 1, "t", ""), MQSTORE_ERR_INVAL);
}

/* jobs_name_message: each job carries the message's seq and time. */
static void test_jobs_name_message(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    send_text(f, "c", "a", "d", "m1", "first");
    mqstore_blob jobs[2] = {{"job-b", 5}, {"", 0}};
    mqstore_append ap = {.conv = "c",
                         .sender_user = "a",
                         .sender_device = "d",
                         .client_msg_id = "m2",
                         .kind = MSG_KIND,
                         .payload = "x",
                         .payload_len = 1,
                         .jobs = jobs,
                         .n_jobs = 2,
                         .jobs_name_message = 1};
    mqstore_result r;
    EXPECT_OK(mqstore_append_msg(f->s, &ap, &r));
    assert_int_equal(r.seq, 2);
    mqstore_job_list l;
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 10, &l));
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[0].len, 5 + MQSTORE_JOB_SUFFIX);
    assert_memory_equal(l.items[0].data, "job-b", 5);
    uint64_t seq = 0, t = 0;
    for (int i = 0; i < 8; i++) {
        seq = seq << 8 | l.items[0].data[5 + i];
        t = t << 8 | l.items[0].data[13 + i];
    }
    assert_int_equal(seq, 2);
    assert_int_equal((int64_t)t, r.server_time_ms);
    assert_int_equal(l.items[1].len, MQSTORE_JOB_SUFFIX);
    mqstore_job_list_free(&l);
    mqstore_result_clear(&r);
}

static void test_receipts(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    fill_inbox(f, "c", "a", 3);
    uint64_t d = 999, rd = 999;
    int changed = 7;

    receipt_expect(f, "c", "b", 0, 0);
    EXPECT_OK(mqstore_receipt_update(f->s, "c", "b", 2, 0, &d, &rd, &changed));
    assert_int_equal(d, 2);
    assert_int_equal(rd, 0);
    assert_true(changed);
    receipt_expect(f, "c", "b", 2, 0);

    changed = 7;
    EXPECT_OK(mqstore_receipt_update(f->s, "c", "b", 1, 0, &d, &rd, &changed)); /* lower */
    assert_int_equal(d, 2);
    assert_int_equal(rd, 0);
    assert_false(changed);

    /* read=1 is below delivered=2: read moves, delivered stays. */
    EXPECT_OK(mqstore_receipt_update(f->s, "c", "b", 0, 1, &d, &rd, &changed));
    assert_int_equal(d, 2);
    assert_int_equal(rd, 1);
    assert_true(changed);

    /* read=3 raises delivered to 3. */
    EXPECT_OK(mqstore_receipt_update(f->s, "c", "b", 0, 3, &d, &rd, &changed));
    assert_int_equal(d, 3);
    assert_int_equal(rd, 3);
    assert_true(changed);
    receipt_expect(f, "c", "b", 3, 3);

    changed = 7;
    EXPECT_OK(mqstore_receipt_update(f->s, "c", "b", 0, 0, &d, &rd, &changed));
    assert_false(changed);
    EXPECT_OK(mqstore_receipt_update(f->s, "c", "b", 3, 2, &d, &rd, &changed));
    assert_false(changed);
    assert_int_equal(d, 3);
    assert_int_equal(rd, 3);

    /* Above head. */
    EXPECT_ERR(mqstore_receipt_update(f->s, "c", "b", 4, 0, &d, &rd, &changed), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_receipt_update(f->s, "c", "b", 0, 4, &d, &rd, &changed), MQSTORE_ERR_INVAL);
    receipt_expect(f, "c", "b", 3, 3);

    /* Non-member. */
    EXPECT_ERR(mqstore_receipt_update(f->s, "c", "mallory", 1, 0, NULL, NULL, NULL),
               MQSTORE_ERR_NOTMEMBER);

    /* Independent per user; NULL outs are fine. */
    receipt_expect(f, "c", "a", 0, 0);
    EXPECT_OK(mqstore_receipt_update(f->s, "c", "a", 0, 2, NULL, NULL, NULL));
    receipt_expect(f, "c", "a", 2, 2);
    receipt_expect(f, "c", "b", 3, 3);

    /* After more messages, the watermarks can go higher. */
    fill_inbox(f, "c", "a", 2);
    EXPECT_OK(mqstore_receipt_update(f->s, "c", "b", 5, 4, &d, &rd, &changed));
    assert_int_equal(d, 5);
    assert_int_equal(rd, 4);
    assert_true(changed);
    fx_reopen(f);
    receipt_expect(f, "c", "b", 5, 4);
    receipt_expect(f, "c", "a", 2, 2);
}

/* ======================================================================== */
/* push outbox                                                              */
/* ======================================================================== */

static void test_outbox(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    mqstore_job_list jl;
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 10, &jl));
    assert_int_equal(jl.n, 0);
    assert_int_equal(jl.more, 0);
    mqstore_job_list_free(&jl);

    mqstore_blob two[] = {{"job-0", 5}, {"job-1\0x", 7}};
    mqstore_result r;
    EXPECT_OK(send_raw(f, "c", "a", "d", NULL, "m", 1, two, 2, &r));
    mqstore_result_clear(&r);
    char buf[16];
    for (int i = 2; i < 5; i++) {
        snprintf(buf, sizeof buf, "job-%d", i);
        mqstore_blob j = {buf, strlen(buf)};
        EXPECT_OK(send_raw(f, "c", "b", "d", NULL, "m", 1, &j, 1, &r));
        mqstore_result_clear(&r);
    }
    /* Failed appends write no job. */
    mqstore_blob jx = {"job-x", 5};
    EXPECT_ERR(send_raw(f, "c", "mallory", "d", NULL, "m", 1, &jx, 1, &r), MQSTORE_ERR_NOTMEMBER);
    mqstore_result_clear(&r);
    EXPECT_ERR(send_raw(f, "nope", "a", "d", NULL, "m", 1, &jx, 1, &r), MQSTORE_ERR_NOTFOUND);
    mqstore_result_clear(&r);

    uint64_t ids[5];
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 10000, &jl));
    assert_int_equal(jl.n, 5);
    assert_int_equal(jl.more, 0);
    for (size_t i = 0; i < 5; i++) {
        ids[i] = jl.items[i].id;
        if (i > 0) assert_true(ids[i] > ids[i - 1]);
        assert_true(ids[i] > 0);
        if (i == 1) {
            assert_int_equal(jl.items[i].len, 7);
            assert_memory_equal(jl.items[i].data, "job-1\0x", 7);
        } else {
            snprintf(buf, sizeof buf, "job-%zu", i);
            assert_int_equal(jl.items[i].len, strlen(buf));
            assert_memory_equal(jl.items[i].data, buf, strlen(buf));
        }
    }
    mqstore_job_list_free(&jl);

    /* Paging. */
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 2, &jl));
    assert_int_equal(jl.n, 2);
    assert_true(jl.more);
    assert_int_equal(jl.items[0].id, ids[0]);
    assert_int_equal(jl.items[1].id, ids[1]);
    mqstore_job_list_free(&jl);
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, ids[1], 2, &jl));
    assert_int_equal(jl.n, 2);
    assert_true(jl.more);
    assert_int_equal(jl.items[0].id, ids[2]);
    mqstore_job_list_free(&jl);
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, ids[2], 2, &jl));
    assert_int_equal(jl.n, 2);
    assert_false(jl.more);
    assert_int_equal(jl.items[1].id, ids[4]);
    mqstore_job_list_free(&jl);
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, ids[4], 2, &jl));
    assert_int_equal(jl.n, 0);
    assert_false(jl.more);
    mqstore_job_list_free(&jl);
    memset(&jl, 0, sizeof jl);
    EXPECT_ERR(mqstore_outbox_read(f->s, 0, 0, &jl), MQSTORE_ERR_INVAL);
    mqstore_job_list_free(&jl);
    memset(&jl, 0, sizeof jl);
    EXPECT_ERR(mqstore_outbox_read(f->s, 0, 10001, &jl), MQSTORE_ERR_INVAL);
    mqstore_job_list_free(&jl);

    /* Delete up to the third. */
    EXPECT_OK(mqstore_outbox_delete_upto(f->s, ids[2]));
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 100, &jl));
    assert_int_equal(jl.n, 2);
    assert_int_equal(jl.items[0].id, ids[3]);
    assert_int_equal(jl.items[1].id, ids[4]);
    mqstore_job_list_free(&jl);

    /* New jobs come after the old ones even after deletion. */
    EXPECT_OK(send_raw(f, "c", "a", "d", NULL, "m", 1, &jx, 1, &r));
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_outbox_delete_upto(f->s, ids[4]));
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 100, &jl));
    assert_int_equal(jl.n, 1);
    assert_true(jl.items[0].id > ids[4]);
    assert_memory_equal(jl.items[0].data, "job-x", 5);
    mqstore_job_list_free(&jl);
}

static void test_outbox_job_limits(void **state)
{
    fx *f = *state;
    f->opt.max_job = 16;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    char big[17];
    memset(big, 'j', sizeof big);
    mqstore_blob jobs[2] = {{"ok", 2}, {big, 17}};
    mqstore_result r;
    EXPECT_ERR(send_raw(f, "c", "a", "d", "k1", "m", 1, jobs, 2, &r), MQSTORE_ERR_TOOBIG);
    mqstore_result_clear(&r);
    assert_int_equal(chead(f, "c"), 0);
    assert_int_equal(ihead(f, "b"), 0);
    assert_int_equal(outbox_count(f), 0);

    jobs[1].len = 16;
    EXPECT_OK(send_raw(f, "c", "a", "d", "k1", "m", 1, jobs, 2, &r));
    assert_int_equal(r.seq, 1);
    assert_int_equal(r.duplicate, 0);
    mqstore_result_clear(&r);
    assert_int_equal(outbox_count(f), 2);
}

/* ======================================================================== */
/* damaged values                                                           */
/* ======================================================================== */

/* Every reader reports a stored value that does not decode, breaks its
 * record's rules or sits under a malformed key as MQSTORE_ERR_CORRUPT, with
 * an empty result, while undamaged records around it still read. */
static void test_damaged_values(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c1", mem, NULL, 2, NULL);
    conv_make(f, "c2", mem, NULL, 2, NULL);
    send_text(f, "c1", "a", "d", "m1", "hi");
    EXPECT_OK(mqstore_cursor_ack(f->s, "a", "d", 1, NULL));
    EXPECT_OK(mqstore_receipt_update(f->s, "c1", "a", 1, 1, NULL, NULL, NULL));
    mqstore_free(f->s);
    f->s = NULL;

    raw_db r;
    raw_open_ok(&r, f->dir);
    RAW_PUT(&r, RAW_MSGS, "c1\0\0\0\0\0\0\0\0\1", GARBAGE); /* message c1/1 */
    RAW_PUT(&r, RAW_MSGS, "c2\0\xff\xff\xff", "");          /* a log key 5 bytes short */
    RAW_PUT(&r, RAW_INBOX, "a\0\0\0\0\0\0\0\0\1", GARBAGE); /* a's inbox entry 1 */
    RAW_PUT(&r, RAW_INBOX, "b\0\0\0\0\0\0\0\0\0", GARBAGE); /* below b's entry 1 */
    RAW_PUT(&r, RAW_MEMBERS, "mc1\0b", "\x08\x07");         /* role 7 */
    RAW_PUT(&r, RAW_MEMBERS, "ub\0c1", GARBAGE);
    RAW_PUT(&r, RAW_CURSORS, "a\0d", GARBAGE);
    RAW_PUT(&r, RAW_RECEIPTS, "c1\0a", "\x08\x01\x10\x02"); /* read 2 > delivered 1 */
    RAW_PUT(&r, RAW_DEDUP, "a\0d\0m1", GARBAGE);
    RAW_PUT(&r, RAW_OUTBOX, "\0\0\0\0\0\0\0\7x", "job"); /* a 9-byte job id */
    raw_close(&r);
    fx_open(f);

    mqstore_page p;
    EXPECT_ERR(mqstore_msg_get(f->s, "c1", 1, &p), MQSTORE_ERR_CORRUPT);
    assert_int_equal(p.n, 0);
    EXPECT_ERR(mqstore_history_read(f->s, "c1", 0, 10, &p), MQSTORE_ERR_CORRUPT);
    assert_int_equal(p.n, 0);
    EXPECT_ERR(mqstore_inbox_read(f->s, "a", 0, 10, 1 << 20, &p), MQSTORE_ERR_CORRUPT);
    assert_int_equal(p.n, 0);
    /* b's entry 1 is sound but points at the damaged message. */
    EXPECT_ERR(mqstore_inbox_read(f->s, "b", 0, 10, 1 << 20, &p), MQSTORE_ERR_CORRUPT);
    assert_int_equal(p.n, 0);

    uint64_t h = 7;
    EXPECT_ERR(mqstore_conv_head(f->s, "c2", &h), MQSTORE_ERR_CORRUPT);
    mqstore_err e = MQSTORE_OK;
    assert_int_equal(mqstore_conv_exists(f->s, "c2", &e), 0);
    EXPECT_ERR(e, MQSTORE_ERR_CORRUPT);
    assert_int_equal(chead(f, "c1"), 1);

    mqstore_member_list ml;
    EXPECT_ERR(mqstore_members_list(f->s, "c1", &ml), MQSTORE_ERR_CORRUPT);
    assert_int_equal(ml.n, 0);
    assert_null(ml.items);
    mqstore_member m;
    EXPECT_ERR(mqstore_member_get(f->s, "c1", "b", &m), MQSTORE_ERR_CORRUPT);
    EXPECT_OK(mqstore_member_get(f->s, "c1", "a", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_MEMBER);

    mqstore_conv_list cl;
    EXPECT_ERR(mqstore_user_convs(f->s, "b", NULL, 10, &cl), MQSTORE_ERR_CORRUPT);
    assert_int_equal(cl.n, 0);
    EXPECT_OK(mqstore_user_convs(f->s, "a", NULL, 10, &cl));
    assert_int_equal(cl.n, 2);
    mqstore_conv_list_free(&cl);

    uint64_t c = 7, d = 7, rd = 7;
    EXPECT_ERR(mqstore_cursor_get(f->s, "a", "d", &c), MQSTORE_ERR_CORRUPT);
    EXPECT_ERR(mqstore_inbox_trim(f->s, "a", NULL), MQSTORE_ERR_CORRUPT); /* the cursor */
    EXPECT_ERR(mqstore_inbox_trim(f->s, "b", NULL), MQSTORE_ERR_CORRUPT); /* entry 0 */
    EXPECT_ERR(mqstore_receipt_get(f->s, "c1", "a", &d, &rd), MQSTORE_ERR_CORRUPT);
    EXPECT_OK(mqstore_receipt_get(f->s, "c1", "b", &d, &rd));
    assert_int_equal(d, 0);
    assert_int_equal(rd, 0);

    mqstore_result res;
    EXPECT_ERR(send_raw(f, "c1", "a", "d", "m1", "hi", 2, NULL, 0, &res), MQSTORE_ERR_CORRUPT);
    assert_int_equal(res.n_fanout, 0);
    mqstore_job_list jl;
    EXPECT_ERR(mqstore_outbox_read(f->s, 0, 10, &jl), MQSTORE_ERR_CORRUPT);
    assert_int_equal(jl.n, 0);
    assert_null(jl.items);
}

/* ======================================================================== */
/* durability                                                               */
/* ======================================================================== */

static void test_durability_os(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    uint64_t prev = 0;
    for (int i = 0; i < 5; i++) {
        mqstore_result r;
        EXPECT_OK(send_raw(f, "c", "a", "d", NULL, "m", 1, NULL, 0, &r));
        assert_true(r.ticket > prev);
        assert_true(mqstore_durable(f->s) >= r.ticket);
        assert_true(mqstore_last_ticket(f->s) >= r.ticket);
        prev = r.ticket;
        mqstore_result_clear(&r);
    }
    assert_int_equal(mqstore_last_ticket(f->s), prev);
    EXPECT_OK(mqstore_sync(f->s));
    assert_true(mqstore_durable(f->s) >= prev);
}

static void test_durability_sync_manual(void **state)
{
    fx *f = *state;
    f->opt.durability = MQSTORE_DURABILITY_SYNC;
    f->opt.sync_driver = MQSTORE_SYNC_MANUAL;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    EXPECT_OK(mqstore_sync(f->s));

    mqstore_result r1, r2, r3, dup;
    EXPECT_OK(send_raw(f, "c", "a", "d", "k1", "m", 1, NULL, 0, &r1));
    assert_true(r1.ticket > 0);
    assert_true(mqstore_durable(f->s) < r1.ticket);
    assert_int_equal(mqstore_last_ticket(f->s), r1.ticket);
    EXPECT_OK(send_raw(f, "c", "b", "d", "k2", "m", 1, NULL, 0, &r2));
    assert_true(r2.ticket > r1.ticket);
    assert_true(mqstore_durable(f->s) < r1.ticket);

    EXPECT_OK(mqstore_sync(f->s));
    assert_true(mqstore_durable(f->s) >= r2.ticket);
    assert_true(mqstore_durable(f->s) <= mqstore_last_ticket(f->s));

    EXPECT_OK(send_raw(f, "c", "a", "d", "k3", "m", 1, NULL, 0, &r3));
    assert_true(r3.ticket > r2.ticket);
    assert_true(mqstore_durable(f->s) >= r2.ticket);
    assert_true(mqstore_durable(f->s) < r3.ticket);

    /* A retry of a not-yet-durable message must not look durable before it is. */
    EXPECT_OK(send_raw(f, "c", "a", "d", "k3", "m", 1, NULL, 0, &dup));
    assert_int_equal(dup.duplicate, 1);
    assert_int_equal(dup.seq, r3.seq);
    if (!(mqstore_durable(f->s) < dup.ticket))
        print_error("duplicate ticket %llu already durable (durable %llu) while the original "
                    "ticket %llu is not\n",
                    (unsigned long long)dup.ticket, (unsigned long long)mqstore_durable(f->s),
                    (unsigned long long)r3.ticket);
    assert_true(mqstore_durable(f->s) < dup.ticket);
    assert_true(dup.ticket <= mqstore_last_ticket(f->s));

    EXPECT_OK(mqstore_sync(f->s));
    assert_true(mqstore_durable(f->s) >= r3.ticket);
    assert_true(mqstore_durable(f->s) >= dup.ticket);
    mqstore_result_clear(&r1);
    mqstore_result_clear(&r2);
    mqstore_result_clear(&r3);
    mqstore_result_clear(&dup);
}

static void test_durability_sync_thread(void **state)
{
    fx *f = *state;
    f->opt.durability = MQSTORE_DURABILITY_SYNC;
    f->opt.sync_driver = MQSTORE_SYNC_THREAD;
    f->opt.on_durable = fx_on_durable;
    f->opt.on_durable_data = f;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    uint64_t prev = 0;
    for (int i = 0; i < 20; i++) {
        mqstore_result r;
        EXPECT_OK(send_raw(f, "c", "a", "d", NULL, "m", 1, NULL, 0, &r));
        assert_true(r.ticket > prev);
        prev = r.ticket;
        mqstore_result_clear(&r);
    }
    uint64_t t0 = tu_now_ns();
    while ((mqstore_durable(f->s) < prev || atomic_load(&f->cb_max) < prev) &&
           tu_now_ns() - t0 < 5 * TU_SEC_NS)
        tu_sleep_ms(2);
    if (mqstore_durable(f->s) < prev || atomic_load(&f->cb_max) < prev)
        print_error("after 5 s: durable %llu, callback max %llu, last ticket %llu\n",
                    (unsigned long long)mqstore_durable(f->s),
                    (unsigned long long)atomic_load(&f->cb_max), (unsigned long long)prev);
    assert_true(mqstore_durable(f->s) >= prev);
    assert_true(atomic_load(&f->cb_max) >= prev);
    assert_true(atomic_load(&f->cb_calls) >= 1);
    assert_false(atomic_load(&f->cb_regress));
    assert_true(atomic_load(&f->cb_max) <= mqstore_last_ticket(f->s));

    /* A second burst is caught up as well. */
    mqstore_result r;
    EXPECT_OK(send_raw(f, "c", "b", "d", NULL, "m", 1, NULL, 0, &r));
    assert_true(r.ticket > prev);
    prev = r.ticket;
    mqstore_result_clear(&r);
    t0 = tu_now_ns();
    while ((mqstore_durable(f->s) < prev || atomic_load(&f->cb_max) < prev) &&
           tu_now_ns() - t0 < 5 * TU_SEC_NS)
        tu_sleep_ms(2);
    assert_true(mqstore_durable(f->s) >= prev);
    assert_true(atomic_load(&f->cb_max) >= prev);
}

/* ======================================================================== */
/* concurrency                                                              */
/* ======================================================================== */

#define WORKERS 4
#define PER_WORKER 100

typedef struct worker {
    fx *f;
    const char *user;
    uint64_t seqs[PER_WORKER];
    int errors;
    mqstore_err first_err;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < PER_WORKER; i++) {
        char cm[32];
        snprintf(cm, sizeof cm, "%s-%d", w->user, i);
        mqstore_append a = {.conv = "c",
                            .sender_user = w->user,
                            .sender_device = "d",
                            .client_msg_id = cm,
                            .kind = MSG_KIND,
                            .payload = cm,
                            .payload_len = strlen(cm)};
        mqstore_result r;
        memset(&r, 0, sizeof r);
        mqstore_err e = mqstore_append_msg(w->f->s, &a, &r);
        if (e != MQSTORE_OK || r.duplicate) {
            if (w->errors++ == 0) w->first_err = e;
        } else {
            w->seqs[i] = r.seq;
        }
        mqstore_result_clear(&r);
    }
    return NULL;
}

static void test_concurrent_appends(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const users[WORKERS] = {"w0", "w1", "w2", "w3"};
    conv_make(f, "c", users, NULL, WORKERS, NULL);
    worker w[WORKERS];
    pthread_t th[WORKERS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < WORKERS; i++) {
        w[i].f = f;
        w[i].user = users[i];
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(th[i], NULL);

    const uint64_t total = WORKERS * PER_WORKER;
    unsigned char seen[WORKERS * PER_WORKER + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < WORKERS; i++) {
        if (w[i].errors)
            print_error("worker %d: %d errors, first %s\n", i, w[i].errors,
                        mqstore_strerror(w[i].first_err));
        assert_int_equal(w[i].errors, 0);
        for (int k = 0; k < PER_WORKER; k++) {
            uint64_t s = w[i].seqs[k];
            assert_in_range(s, 1, total);
            assert_int_equal(seen[s], 0);
            seen[s] = 1;
            if (k > 0) assert_true(s > w[i].seqs[k - 1]);
        }
    }
    assert_int_equal(chead(f, "c"), total);
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(ihead(f, users[i]), total);
    /* Inbox order is seq order (single writer). */
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "w2", 0, 10000, 1 << 24, &p));
    assert_int_equal(p.n, total);
    for (size_t i = 0; i < p.n; i++) {
        assert_int_equal(p.items[i].inbox_seq, i + 1);
        assert_int_equal(p.items[i].seq, i + 1);
    }
    mqstore_page_free(&p);
}

/* A thread calling mqstore_sync() over and over while another appends. */
typedef struct syncer_arg {
    fx *f;
    _Atomic int stop;
    int errors;
} syncer_arg;

static void *sync_loop(void *arg)
{
    syncer_arg *a = arg;
    while (!atomic_load(&a->stop))
        if (mqstore_sync(a->f->s) != MQSTORE_OK) a->errors++;
    return NULL;
}

/* In OS mode writers publish durable themselves while mqstore_sync() on
 * another thread publishes what its fsync covered: durable never goes back
 * and never passes the last ticket, as seen by a third thread (this one). */
static void test_durable_monotonic_os(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    syncer_arg sa = {.f = f};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sync_loop, &sa), 0);
    uint64_t prev = 0;
    for (int i = 0; i < 2000; i++) {
        mqstore_result r;
        EXPECT_OK(send_raw(f, "c", "a", "d", NULL, "m", 1, NULL, 0, &r));
        uint64_t ticket = r.ticket;
        mqstore_result_clear(&r);
        uint64_t d = mqstore_durable(f->s);
        assert_true(d >= prev);
        assert_true(d >= ticket); /* OS mode: durable when the call returns */
        assert_true(d <= mqstore_last_ticket(f->s));
        prev = d;
    }
    atomic_store(&sa.stop, 1);
    pthread_join(th, NULL);
    assert_int_equal(sa.errors, 0);
    assert_true(mqstore_durable(f->s) >= prev);
}

/* trimmed_upto is "the highest inbox_seq deleted (or 0)": a call that deletes
 * nothing reports 0. */
static void test_trim_reports_this_call(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    fill_inbox(f, "c", "v", 4);
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d1", 3, NULL));
    uint64_t t = 999;
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 3);
    t = 999;
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    if (t != 0)
        print_error("second trim deleted nothing but reported trimmed_upto %llu\n",
                    (unsigned long long)t);
    assert_int_equal(t, 0);
}

/* Keys must not bleed between ids that are prefixes of each other. */
static void test_prefix_isolation(void **state)
{
    fx *f = *state;
    f->opt.inbox_retention_ms = 10000;
    fx_open(f);
    const char *const c_mem[] = {"a", "x"};
    const char *const cd_mem[] = {"ab", "x", "a:b"};
    conv_make(f, "c", c_mem, NULL, 2, NULL);
    conv_make(f, "cd", cd_mem, NULL, 3, NULL);
    send_text(f, "cd", "ab", "d", NULL, "cd1");
    send_text(f, "cd", "ab", "d", NULL, "cd2");
    send_text(f, "c", "a", "d", NULL, "c1");

    assert_int_equal(chead(f, "c"), 1);
    assert_int_equal(chead(f, "cd"), 2);
    assert_int_equal(ihead(f, "a"), 1);
    assert_int_equal(ihead(f, "ab"), 2);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "a", 0, 100, 1 << 20, &p));
    assert_int_equal(p.n, 1);
    check_text(&p.items[0], "c", 1, "a", "d", NULL, "c1");
    mqstore_page_free(&p);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_history_read(f->s, "c", 0, 100, &p));
    assert_int_equal(p.n, 1);
    mqstore_page_free(&p);
    mqstore_member_list ml;
    memset(&ml, 0, sizeof ml);
    EXPECT_OK(mqstore_members_list(f->s, "c", &ml));
    assert_int_equal(ml.n, 2);
    mqstore_member_list_free(&ml);
    mqstore_conv_list cl;
    memset(&cl, 0, sizeof cl);
    EXPECT_OK(mqstore_user_convs(f->s, "a", NULL, 100, &cl));
    assert_int_equal(cl.n, 1);
    assert_string_equal(cl.conv[0], "c");
    mqstore_conv_list_free(&cl);
    assert_false(member_in(f, "c", "ab"));
    assert_false(member_in(f, "cd", "a"));

    /* Cursors: (a, b:c) and (a:b, c) are different devices. */
    uint64_t c = 999;
    EXPECT_OK(mqstore_cursor_ack(f->s, "a:b", "c", 2, NULL));
    EXPECT_OK(mqstore_cursor_get(f->s, "a", "b:c", &c));
    assert_int_equal(c, 0);
    EXPECT_OK(mqstore_cursor_get(f->s, "ab", "c", &c));
    assert_int_equal(c, 0);
    /* Trimming "a" does not touch "ab". */
    EXPECT_OK(mqstore_cursor_ack(f->s, "a", "d", 1, NULL));
    EXPECT_OK(mqstore_inbox_trim(f->s, "a", NULL));
    assert_int_equal(ihead(f, "ab"), 2);
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_inbox_read(f->s, "ab", 0, 100, 1 << 20, &p));
    assert_int_equal(p.n, 2);
    mqstore_page_free(&p);

    /* Dedup keys: (ab, c, k) vs (a, bc, k) vs (a:b, c, k) are three keys. */
    const char *const d_mem[] = {"a", "ab", "a:b"};
    conv_make(f, "dd", d_mem, NULL, 3, NULL);
    assert_int_equal(send_text(f, "dd", "ab", "c", "k", "1"), 1);
    assert_int_equal(send_text(f, "dd", "a", "bc", "k", "2"), 2);
    assert_int_equal(send_text(f, "dd", "a:b", "c", "k", "3"), 3);
    assert_int_equal(send_text(f, "dd", "a", "b", "ck", "4"), 4);

    /* Receipts: (c, a) vs (cd, ...) */
    EXPECT_OK(mqstore_receipt_update(f->s, "cd", "x", 2, 2, NULL, NULL, NULL));
    uint64_t d = 9, r = 9;
    EXPECT_OK(mqstore_receipt_get(f->s, "c", "x", &d, &r));
    assert_int_equal(d, 0);
    assert_int_equal(r, 0);
}

/* The header sets no limit on the number of jobs of one append (a group of
 * up to 100000 members may need one per offline recipient). */
static void test_many_jobs(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    enum { NJOBS = 2000 };
    static mqstore_blob jobs[NJOBS];
    static char data[NJOBS][8];
    for (int i = 0; i < NJOBS; i++) {
        snprintf(data[i], sizeof data[i], "%07d", i);
        jobs[i].data = data[i];
        jobs[i].len = 7;
    }
    mqstore_result r;
    EXPECT_OK(send_raw(f, "c", "a", "d", NULL, "m", 1, jobs, NJOBS, &r));
    mqstore_result_clear(&r);
    mqstore_job_list jl;
    memset(&jl, 0, sizeof jl);
    EXPECT_OK(mqstore_outbox_read(f->s, 0, 10000, &jl));
    assert_int_equal(jl.n, NJOBS);
    for (size_t i = 0; i < jl.n; i++) {
        assert_int_equal(jl.items[i].len, 7);
        assert_memory_equal(jl.items[i].data, data[i], 7);
        if (i > 0) assert_true(jl.items[i].id > jl.items[i - 1].id);
    }
    mqstore_job_list_free(&jl);
}

/* "The on_durable callback runs on the syncer thread": never on a thread
 * that calls mqstore_sync(). */
static pthread_t main_thread;
static _Atomic int cb_on_main;

static void on_durable_where(void *data, uint64_t ticket)
{
    if (pthread_equal(pthread_self(), main_thread)) atomic_store(&cb_on_main, 1);
    fx_on_durable(data, ticket);
}

static void test_on_durable_thread(void **state)
{
    fx *f = *state;
    main_thread = pthread_self();
    atomic_store(&cb_on_main, 0);
    f->opt.durability = MQSTORE_DURABILITY_SYNC;
    f->opt.sync_driver = MQSTORE_SYNC_THREAD;
    f->opt.on_durable = on_durable_where;
    f->opt.on_durable_data = f;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    for (int i = 0; i < 5; i++) {
        send_text(f, "c", "a", "d", NULL, "m");
        EXPECT_OK(mqstore_sync(f->s));
        assert_true(mqstore_durable(f->s) >= mqstore_last_ticket(f->s));
    }
    /* The manual syncs above may each have beaten the syncer to its fsync
     * (then it had nothing to do and called nobody): one more write that
     * only the syncer makes durable, so on_durable must run for it. */
    send_text(f, "c", "a", "d", NULL, "m");
    uint64_t last = mqstore_last_ticket(f->s);
    uint64_t t0 = tu_now_ns();
    while (atomic_load(&f->cb_max) < last && tu_now_ns() - t0 < 5 * TU_SEC_NS)
        tu_sleep_ms(2);
    assert_true(atomic_load(&f->cb_max) >= last);
    if (atomic_load(&cb_on_main)) print_error("on_durable was called on the caller's thread\n");
    assert_false(atomic_load(&cb_on_main));
}

/* MQSTORE_SYNC_REQUEST: nothing becomes durable until the caller asks; one
 * request makes everything written before it durable (on the syncer
 * thread, with on_durable), and requests with nothing to sync are no-ops. */
static void test_sync_request_driver(void **state)
{
    fx *f = *state;
    main_thread = pthread_self();
    atomic_store(&cb_on_main, 0);
    f->opt.durability = MQSTORE_DURABILITY_SYNC;
    f->opt.sync_driver = MQSTORE_SYNC_REQUEST;
    f->opt.on_durable = on_durable_where;
    f->opt.on_durable_data = f;
    fx_open(f);
    mqstore_sync_request(f->s); /* nothing written yet: no-op */
    const char *const mem[] = {"a", "b"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    for (int i = 0; i < 10; i++)
        send_text(f, "c", "a", "d", NULL, "m");
    uint64_t last = mqstore_last_ticket(f->s);
    tu_sleep_ms(50);
    assert_true(mqstore_durable(f->s) < last); /* not asked: not synced */
    mqstore_sync_request(f->s);
    uint64_t t0 = tu_now_ns();
    while (mqstore_durable(f->s) < last && tu_now_ns() - t0 < 5 * TU_SEC_NS)
        tu_sleep_ms(1);
    assert_true(mqstore_durable(f->s) >= last);
    while (atomic_load(&f->cb_max) < last && tu_now_ns() - t0 < 5 * TU_SEC_NS)
        tu_sleep_ms(1);
    assert_true(atomic_load(&f->cb_max) >= last);
    assert_false(atomic_load(&cb_on_main));
}

/* Heads are derived from the logs: an inbox trimmed empty must not restart
 * its inbox_seq after a reopen (the trim mark keeps it), and the
 * conversation head continues from the last message. */
static void test_heads_after_trim_and_reopen(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    conv_make(f, "c", mem, NULL, 2, NULL);
    for (int i = 0; i < 5; i++)
        send_text(f, "c", "v", "d", NULL, "m");
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d", 5, NULL));
    uint64_t t = 0, h = 0;
    EXPECT_OK(mqstore_inbox_trim(f->s, "u", &t));
    assert_int_equal(t, 5);
    fx_reopen(f);
    EXPECT_OK(mqstore_inbox_head(f->s, "u", &h));
    assert_int_equal(h, 5);
    EXPECT_OK(mqstore_conv_head(f->s, "c", &h));
    assert_int_equal(h, 5);
    mqstore_append a = {.conv = "c", .sender_user = "v", .sender_device = "d", .kind = 1};
    mqstore_result r;
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_append_msg(f->s, &a, &r));
    assert_int_equal(r.seq, 6);
    for (size_t i = 0; i < r.n_fanout; i++)
        if (strcmp(r.fanout_user[i], "u") == 0) assert_int_equal(r.fanout_inbox_seq[i], 6);
    mqstore_result_clear(&r);
}

/* A removed member can be added back; receipts need membership. */
static void test_member_rejoin(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    conv_make(f, "g", mem, NULL, 2, NULL);
    send_text(f, "g", "a", "d", NULL, "m1");
    const char *const b[] = {"b"};
    mqstore_event ev = ev_make("a", "e", MQSTORE_MODE_KEEP);
    mqstore_result r;
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_members_remove(f->s, "g", b, 1, &ev, &r));
    assert_int_equal(r.seq, 2);
    mqstore_result_clear(&r);
    EXPECT_ERR(mqstore_receipt_update(f->s, "g", "b", 1, 1, NULL, NULL, NULL),
               MQSTORE_ERR_NOTMEMBER);
    send_text(f, "g", "a", "d", NULL, "m3");
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_members_add(f->s, "g", b, NULL, 1, &ev, &r));
    assert_int_equal(r.seq, 4);
    assert_int_equal(fanout_seq(&r, "b"), 3); /* b's inbox: 1, 2 (removal), 3 (re-add) */
    mqstore_result_clear(&r);
    mqstore_member m;
    memset(&m, 0, sizeof m);
    EXPECT_OK(mqstore_member_get(f->s, "g", "b", &m));
    assert_int_equal(m.joined_seq, 4);
    assert_int_equal(m.role, MQSTORE_ROLE_MEMBER);
    EXPECT_OK(mqstore_receipt_update(f->s, "g", "b", 4, 4, NULL, NULL, NULL));
    assert_int_equal(send_text(f, "g", "b", "d", NULL, "back"), 5);
    assert_int_equal(ihead(f, "b"), 4);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_options_defaults),
        cmocka_unit_test(test_id_valid),
        T(test_open_errors),
        T(test_open_close_reopen),
        T(test_max_length_ids),
        T(test_invalid_ids_rejected),
        T(test_conv_create_basic),
        T(test_conv_create_with_event),
        T(test_conv_create_invalid),
        T(test_append_seq_order),
        T(test_append_errors),
        T(test_append_payload_limits),
        T(test_append_fanout),
        T(test_server_time_clock),
        T(test_dedup_basic),
        T(test_dedup_expiry),
        T(test_dedup_survives_reopen),
        T(test_dedup_key_other_conversation),
        T(test_inbox_paging),
        T(test_inbox_max_bytes),
        T(test_inbox_interleave),
        T(test_history_read),
        T(test_msg_get),
        T(test_members_add),
        T(test_members_remove),
        T(test_members_set_role),
        T(test_members_list_order),
        T(test_user_convs_paging),
        T(test_events_interleave_seq),
        T(test_cursor_ack),
        T(test_device_forget),
        T(test_trim_interleaved_with_appends),
        T(test_trim_min_cursor),
        T(test_trim_retention_age),
        T(test_device_touch),
        T(test_trim_stale_device),
        T(test_trim_no_device),
        T(test_receipts),
        T(test_user_prefs),
        T(test_push_tokens),
        T(test_jobs_name_message),
        T(test_history_bytes),
        T(test_outbox),
        T(test_outbox_job_limits),
        T(test_durability_os),
        T(test_durability_sync_manual),
        T(test_durability_sync_thread),
        T(test_concurrent_appends),
        T(test_durable_monotonic_os),
        T(test_trim_reports_this_call),
        T(test_prefix_isolation),
        T(test_many_jobs),
        T(test_on_durable_thread),
        T(test_sync_request_driver),
        T(test_heads_after_trim_and_reopen),
        T(test_member_rejoin),
        T(test_damaged_values),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
