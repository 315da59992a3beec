/* Unit tests for the large conversations of libmqchat_store (commit
 * aedf7f9), written against the contract in offline-queue/include/mqstore.h:
 * the mode per conversation and per message, pull rows and device
 * positions, mqstore_conv_pull paging, the conversation record (member
 * count, flags, admins-only posting), read state from the receipt
 * watermarks, and the legacy 8-zero-byte conversation marker. Each test gets
 * its own store in a temporary directory (real RocksDB) through the
 * fixture; the teardown closes it and removes the directory even when the
 * test failed (tests/support/store_fx.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_fx.h"

#include <rocksdb/c.h>

#define MAXSEQ 64

/* ---- store helpers -------------------------------------------------------- */

static mqstore_event ev_flags(const char *actor, const char *text, uint32_t flags)
{
    mqstore_event ev = ev_make(actor, text, MQSTORE_MODE_KEEP);
    ev.set_flags = 1;
    ev.flags = flags;
    return ev;
}

static void check_res(const mqstore_result *r, uint64_t seq, int large, int pulled,
                      uint64_t members, size_t n_fanout)
{
    assert_int_equal(r->seq, seq);
    assert_int_equal(r->duplicate, 0);
    assert_int_equal(r->large, large);
    assert_int_equal(r->pulled, pulled);
    assert_int_equal(r->members, members);
    assert_int_equal(r->n_fanout, n_fanout);
    assert_true(r->ticket > 0);
}

static mqstore_err send_raw(fx *f, const char *conv, const char *user, const char *dev,
                            const char *cmid, const char *text, mqstore_result *r)
{
    mqstore_append a = {
        .conv = conv,
        .sender_user = user,
        .sender_device = dev,
        .client_msg_id = cmid,
        .kind = MSG_KIND,
        .payload = text,
        .payload_len = strlen(text),
    };
    memset(r, 0, sizeof *r);
    return mqstore_append_msg(f->s, &a, r);
}

/* Append a message that must succeed; checks the result of a large
 * conversation's append (no fan-out) or a small one's (n_small entries). */
static uint64_t send_chk(fx *f, const char *conv, const char *user, const char *text, int large,
                         uint64_t members)
{
    mqstore_result r;
    EXPECT_OK(send_raw(f, conv, user, "d", NULL, text, &r));
    assert_int_equal(r.large, large);
    assert_int_equal(r.pulled, large);
    assert_int_equal(r.members, members);
    assert_int_equal(r.duplicate, 0);
    if (large) {
        assert_int_equal(r.n_fanout, 0);
        assert_int_equal(r.inbox_seq, 0);
    } else {
        assert_int_equal(r.n_fanout, members);
        assert_true(r.inbox_seq > 0);
    }
    uint64_t seq = r.seq;
    mqstore_result_clear(&r);
    return seq;
}

static mqstore_conv_info info(fx *f, const char *conv)
{
    mqstore_conv_info ci;
    memset(&ci, 0xA5, sizeof ci);
    EXPECT_OK(mqstore_conv_info_get(f->s, conv, &ci));
    return ci;
}

static void check_info(fx *f, const char *conv, uint64_t head, uint64_t members, int large,
                       uint64_t pull_end, uint32_t flags)
{
    mqstore_conv_info ci = info(f, conv);
    assert_int_equal(ci.head, head);
    assert_int_equal(ci.members, members);
    assert_int_equal(ci.large, large);
    assert_int_equal(ci.pull_end, pull_end);
    assert_int_equal(ci.flags, flags);
    assert_int_equal(ci.last_time_ms, head ? T0 : 0);
}

/* The seqs of conv's entries in user's whole inbox, in inbox order (read
 * in small pages to exercise paging). */
static size_t inbox_conv_seqs(fx *f, const char *user, const char *conv, uint64_t *seqs, size_t cap)
{
    size_t n = 0;
    uint64_t after = 0;
    for (;;) {
        mqstore_page p;
        EXPECT_OK(mqstore_inbox_read(f->s, user, after, 3, SIZE_MAX, &p));
        for (size_t i = 0; i < p.n; i++) {
            assert_true(p.items[i].inbox_seq > after);
            after = p.items[i].inbox_seq;
            if (strcmp(p.items[i].conv, conv) != 0) continue;
            assert_true(n < cap);
            seqs[n++] = p.items[i].seq;
        }
        int more = p.more;
        mqstore_page_free(&p);
        if (!more) break;
    }
    return n;
}

/* Pull everything of conv for user after `after`, `limit` per page, checking
 * each page's order and `through`; *last gets the final through. */
static size_t pull_all(fx *f, const char *conv, const char *user, uint64_t after, size_t limit,
                       uint64_t *seqs, size_t cap, uint64_t *last)
{
    size_t n = 0;
    for (int pages = 0;; pages++) {
        assert_true(pages < 1000);
        mqstore_page p;
        uint64_t through = 0;
        EXPECT_OK(mqstore_conv_pull(f->s, conv, user, after, limit, SIZE_MAX, &p, &through));
        assert_true(p.n <= limit);
        assert_true(through >= after);
        uint64_t prev = after;
        for (size_t i = 0; i < p.n; i++) {
            assert_string_equal(p.items[i].conv, conv);
            assert_int_equal(p.items[i].inbox_seq, 0);
            assert_true(p.items[i].seq > prev);
            assert_true(p.items[i].seq <= through);
            prev = p.items[i].seq;
            assert_true(n < cap);
            seqs[n++] = p.items[i].seq;
        }
        int more = p.more;
        mqstore_page_free(&p);
        if (!more) {
            *last = through;
            break;
        }
        assert_true(through > after); /* every page makes progress */
        after = through;
    }
    return n;
}

/* Fails unless a and b are the same lists of seqs. */
static void check_seqs(const uint64_t *got, size_t n, const uint64_t *want, size_t n_want)
{
    if (n != n_want) {
        print_error("got %zu seqs, want %zu:", n, n_want);
        for (size_t i = 0; i < n; i++)
            print_error(" %llu", (unsigned long long)got[i]);
        print_error("\n");
    }
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(got[i], want[i]);
}

/* The pull page after `after` (limit, max_bytes) must hold exactly want[]. */
static void check_pull(fx *f, const char *conv, const char *user, uint64_t after, size_t limit,
                       size_t max_bytes, const uint64_t *want, size_t n_want, int more,
                       uint64_t through_want)
{
    mqstore_page p;
    uint64_t through = 777;
    EXPECT_OK(mqstore_conv_pull(f->s, conv, user, after, limit, max_bytes, &p, &through));
    assert_int_equal(p.n, n_want);
    for (size_t i = 0; i < n_want; i++)
        assert_int_equal(p.items[i].seq, want[i]);
    assert_int_equal(p.more, more);
    assert_int_equal(through, through_want);
    mqstore_page_free(&p);
}

/* The exactly-once property: the conv's entries of user's inbox and what
 * the device pulls (from its position) are together exactly seq lo..hi,
 * each once. */
static void check_exactly_once(fx *f, const char *conv, const char *user, const char *device,
                               uint64_t lo, uint64_t hi, const uint64_t *earlier, size_t n_earlier)
{
    unsigned count[MAXSEQ] = {0};
    assert_true(hi < MAXSEQ);
    uint64_t seqs[MAXSEQ];
    size_t n = inbox_conv_seqs(f, user, conv, seqs, MAXSEQ);
    for (size_t i = 0; i < n; i++) {
        assert_true(seqs[i] < MAXSEQ);
        count[seqs[i]]++;
    }
    for (size_t i = 0; i < n_earlier; i++)
        count[earlier[i]]++;
    mqstore_position_list pl;
    EXPECT_OK(mqstore_positions(f->s, user, device, NULL, 100, &pl));
    uint64_t pos = 0;
    for (size_t i = 0; i < pl.n; i++)
        if (strcmp(pl.items[i].conv, conv) == 0) pos = pl.items[i].position;
    mqstore_position_list_free(&pl);
    uint64_t through = 0;
    n = pull_all(f, conv, user, pos, 1, seqs, MAXSEQ, &through);
    for (size_t i = 0; i < n; i++) {
        assert_true(seqs[i] < MAXSEQ);
        count[seqs[i]]++;
    }
    for (uint64_t s = 0; s < MAXSEQ; s++) {
        unsigned want = s >= lo && s <= hi;
        if (count[s] != want)
            print_error("%s/%s in %s: seq %llu seen %u times, want %u\n", user, device, conv,
                        (unsigned long long)s, count[s], want);
        assert_int_equal(count[s], want);
    }
}

/* The device's position list must be exactly one entry for conv. */
static void check_position(fx *f, const char *user, const char *device, const char *conv,
                           uint64_t position, uint64_t end, int member)
{
    mqstore_position_list pl;
    memset(&pl, 0xA5, sizeof pl);
    EXPECT_OK(mqstore_positions(f->s, user, device, NULL, 10, &pl));
    assert_int_equal(pl.n, 1);
    assert_int_equal(pl.more, 0);
    assert_string_equal(pl.items[0].conv, conv);
    assert_int_equal(pl.items[0].position, position);
    assert_int_equal(pl.items[0].end, end);
    assert_int_equal(pl.items[0].member, member);
    mqstore_position_list_free(&pl);
}

static void check_no_positions(fx *f, const char *user, const char *device)
{
    mqstore_position_list pl;
    EXPECT_OK(mqstore_positions(f->s, user, device, NULL, 10, &pl));
    assert_int_equal(pl.n, 0);
    assert_int_equal(pl.more, 0);
    mqstore_position_list_free(&pl);
}

/* user's inbox holds exactly one entry, at inbox_seq, for (conv, seq). */
static void check_inbox_entry(fx *f, const char *user, uint64_t inbox_seq, const char *conv,
                              uint64_t seq)
{
    mqstore_page p;
    EXPECT_OK(mqstore_inbox_read(f->s, user, inbox_seq - 1, 1, SIZE_MAX, &p));
    assert_int_equal(p.n, 1);
    assert_int_equal(p.items[0].inbox_seq, inbox_seq);
    assert_string_equal(p.items[0].conv, conv);
    assert_int_equal(p.items[0].seq, seq);
    mqstore_page_free(&p);
}

/* ======================================================================== */
/* 1. large from the start                                                  */
/* ======================================================================== */

static void test_create_large(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"u1", "u2", "u3", "u4", "u5"};
    mqstore_event ev = ev_make("u1", "created", MQSTORE_MODE_LARGE);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_create(f->s, "big", mem, NULL, 5, &ev, &r));
    check_res(&r, 1, 1, 0, 5, 5);
    assert_int_equal(r.inbox_seq, 1);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(fanout_seq(&r, mem[i]), 1);
    mqstore_result_clear(&r);
    /* The creation is in every member's inbox. */
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(ihead(f, mem[i]), 1);
        check_inbox_entry(f, mem[i], 1, "big", 1);
    }
    check_info(f, "big", 1, 5, 1, 1, 0);
    /* Nothing to pull yet: position 1 = end 1. */
    check_no_positions(f, "u3", "d1");

    /* Appends write no inbox entry. 10-byte payloads. */
    const char *texts[] = {"message-02", "message-03", "message-04", "message-05", "message-06"};
    for (int i = 0; i < 5; i++) {
        EXPECT_OK(send_raw(f, "big", "u2", "d", NULL, texts[i], &r));
        check_res(&r, (uint64_t)i + 2, 1, 1, 5, 0);
        assert_int_equal(r.inbox_seq, 0);
        mqstore_result_clear(&r);
    }
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(ihead(f, mem[i]), 1);
    check_info(f, "big", 6, 5, 1, 6, 0);
    /* The messages are stored once, in the log. */
    mqstore_page p;
    EXPECT_OK(mqstore_history_read(f->s, "big", 0, 100, &p));
    assert_int_equal(p.n, 6);
    assert_int_equal(p.items[0].seq, 6);
    assert_int_equal(p.items[5].seq, 1);
    mqstore_page_free(&p);

    check_position(f, "u3", "d1", "big", 1, 6, 1);

    /* Paging by limit. */
    const uint64_t all[] = {2, 3, 4, 5, 6};
    check_pull(f, "big", "u3", 0, 2, SIZE_MAX, all, 2, 1, 3);
    check_pull(f, "big", "u3", 3, 2, SIZE_MAX, all + 2, 2, 1, 5);
    check_pull(f, "big", "u3", 5, 2, SIZE_MAX, all + 4, 1, 0, 6);
    check_pull(f, "big", "u3", 6, 2, SIZE_MAX, NULL, 0, 0, 6);
    /* after below the window starts at from_seq 1; exactly the rest fits. */
    check_pull(f, "big", "u3", 0, 5, SIZE_MAX, all, 5, 0, 6);
    check_pull(f, "big", "u3", 1, 4, SIZE_MAX, all, 4, 1, 5);
    check_pull(f, "big", "u3", 2, 4, SIZE_MAX, all + 1, 4, 0, 6);
    check_pull(f, "big", "u3", 0, 4, SIZE_MAX, all, 4, 1, 5);
    /* Paging by bytes: a page stops once it holds max_bytes (at least one). */
    check_pull(f, "big", "u3", 0, 100, 15, all, 2, 1, 3);
    check_pull(f, "big", "u3", 0, 100, 20, all, 2, 1, 3);
    check_pull(f, "big", "u3", 0, 100, 21, all, 3, 1, 4);
    check_pull(f, "big", "u3", 0, 100, 1, all, 1, 1, 2);
    check_pull(f, "big", "u3", 0, 100, 0, all, 1, 1, 2);
    check_pull(f, "big", "u3", 4, 100, 0, all + 3, 1, 1, 5);
    check_pull(f, "big", "u3", 5, 100, 0, all + 4, 1, 0, 6);

    /* The pulled message is the stored one. */
    uint64_t through = 0;
    EXPECT_OK(mqstore_conv_pull(f->s, "big", "u5", 3, 1, SIZE_MAX, &p, &through));
    assert_int_equal(p.n, 1);
    assert_int_equal(p.items[0].seq, 4);
    assert_string_equal(p.items[0].sender_user, "u2");
    assert_string_equal(p.items[0].sender_device, "d");
    assert_int_equal(p.items[0].kind, MSG_KIND);
    assert_int_equal(p.items[0].server_time_ms, T0);
    assert_int_equal(p.items[0].payload_len, 10);
    assert_memory_equal(p.items[0].payload, "message-04", 10);
    mqstore_page_free(&p);

    /* Arguments. */
    EXPECT_ERR(mqstore_conv_pull(f->s, "big", "nobody", 0, 10, SIZE_MAX, &p, &through),
               MQSTORE_ERR_NOTMEMBER);
    EXPECT_ERR(mqstore_conv_pull(f->s, "big", "u3", 0, 0, SIZE_MAX, &p, &through),
               MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_conv_pull(f->s, "big", "u3", 0, 10001, SIZE_MAX, &p, &through),
               MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_conv_pull(f->s, "big", "u3", 0, 10, SIZE_MAX, &p, NULL), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_conv_pull(f->s, "nope", "u3", 0, 10, SIZE_MAX, &p, &through),
               MQSTORE_ERR_NOTMEMBER);

    /* position_ack: monotonic, bounded by the head, members only. */
    uint64_t stored = 0;
    EXPECT_OK(mqstore_position_ack(f->s, "u3", "d1", "big", 4, &stored));
    assert_int_equal(stored, 4);
    check_position(f, "u3", "d1", "big", 4, 6, 1);
    stored = 0;
    EXPECT_OK(mqstore_position_ack(f->s, "u3", "d1", "big", 2, &stored));
    assert_int_equal(stored, 4);
    check_position(f, "u3", "d1", "big", 4, 6, 1);
    EXPECT_ERR(mqstore_position_ack(f->s, "u3", "d1", "big", 7, &stored), MQSTORE_ERR_INVAL);
    check_position(f, "u3", "d1", "big", 4, 6, 1);
    EXPECT_ERR(mqstore_position_ack(f->s, "nobody", "d1", "big", 3, &stored),
               MQSTORE_ERR_NOTMEMBER);
    EXPECT_ERR(mqstore_position_ack(f->s, "u3", "d1", "nope", 1, &stored), MQSTORE_ERR_NOTMEMBER);
    EXPECT_ERR(mqstore_position_ack(f->s, "u3", "d/1", "big", 1, &stored), MQSTORE_ERR_INVAL);
    /* Another device of the same user keeps its own position. */
    check_position(f, "u3", "d2", "big", 1, 6, 1);
    EXPECT_OK(mqstore_position_ack(f->s, "u3", "d1", "big", 6, NULL));
    check_no_positions(f, "u3", "d1");
    check_position(f, "u3", "d2", "big", 1, 6, 1);

    /* A new message makes it listed again, from the acked position. */
    assert_int_equal(send_chk(f, "big", "u1", "seven", 1, 5), 7);
    check_position(f, "u3", "d1", "big", 6, 7, 1);
    const uint64_t seven[] = {7};
    check_pull(f, "big", "u3", 6, 10, SIZE_MAX, seven, 1, 0, 7);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(ihead(f, mem[i]), 1);
}

/* ======================================================================== */
/* 2 and 10. small -> large -> small -> large, exactly once                 */
/* ======================================================================== */

/* seqs: 1 create (small), 2-3 small, 4 add d + LARGE, 5-6 large,
 * 7 remove c + SMALL, 8-9 small, 10 add e + LARGE, 11-12 large. With
 * `reopen`, the store is closed and reopened between the writes. */
static void run_switching(fx *f, int reopen)
{
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    mqstore_event ev = ev_make("a", "created", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_create(f->s, "sw", mem, NULL, 3, &ev, &r));
    check_res(&r, 1, 0, 0, 3, 3);
    mqstore_result_clear(&r);
    check_info(f, "sw", 1, 3, 0, 0, 0);
    /* A small conversation: nobody has a window. */
    uint64_t through;
    mqstore_page p;
    EXPECT_ERR(mqstore_conv_pull(f->s, "sw", "a", 0, 10, SIZE_MAX, &p, &through),
               MQSTORE_ERR_NOTMEMBER);
    EXPECT_ERR(mqstore_position_ack(f->s, "a", "da", "sw", 1, NULL), MQSTORE_ERR_NOTMEMBER);
    if (reopen) fx_reopen(f);

    /* era 1: small */
    assert_int_equal(send_chk(f, "sw", "a", "s2", 0, 3), 2);
    if (reopen) fx_reopen(f);
    assert_int_equal(send_chk(f, "sw", "b", "s3", 0, 3), 3);
    check_info(f, "sw", 3, 3, 0, 0, 0);
    check_no_positions(f, "a", "da");

    /* -> large, adding d: the switch is in every member's inbox. */
    const char *const d[] = {"d"};
    ev = ev_make("a", "add d, large", MQSTORE_MODE_LARGE);
    EXPECT_OK(mqstore_members_add(f->s, "sw", d, NULL, 1, &ev, &r));
    check_res(&r, 4, 1, 0, 4, 4);
    assert_int_equal(fanout_seq(&r, "a"), 4);
    assert_int_equal(fanout_seq(&r, "b"), 4);
    assert_int_equal(fanout_seq(&r, "c"), 4);
    assert_int_equal(fanout_seq(&r, "d"), 1);
    assert_int_equal(r.inbox_seq, 4);
    mqstore_result_clear(&r);
    check_info(f, "sw", 4, 4, 1, 4, 0);
    if (reopen) {
        fx_reopen(f);
        check_info(f, "sw", 4, 4, 1, 4, 0);
    }

    /* era 2: large */
    assert_int_equal(send_chk(f, "sw", "b", "l5", 1, 4), 5);
    assert_int_equal(send_chk(f, "sw", "d", "l6", 1, 4), 6);
    check_info(f, "sw", 6, 4, 1, 6, 0);
    assert_int_equal(ihead(f, "a"), 4);
    assert_int_equal(ihead(f, "d"), 1);
    check_position(f, "a", "da", "sw", 4, 6, 1);
    check_position(f, "d", "dd", "sw", 4, 6, 1);
    if (reopen) {
        fx_reopen(f);
        check_position(f, "a", "da", "sw", 4, 6, 1);
    }

    /* -> small, removing c: every member before the change sees it. */
    const char *const c[] = {"c"};
    ev = ev_make("a", "remove c, small", MQSTORE_MODE_SMALL);
    EXPECT_OK(mqstore_members_remove(f->s, "sw", c, 1, &ev, &r));
    check_res(&r, 7, 0, 0, 3, 4);
    assert_int_equal(fanout_seq(&r, "a"), 5);
    assert_int_equal(fanout_seq(&r, "b"), 5);
    assert_int_equal(fanout_seq(&r, "c"), 5);
    assert_int_equal(fanout_seq(&r, "d"), 2);
    mqstore_result_clear(&r);
    check_info(f, "sw", 7, 3, 0, 6, 0);
    if (reopen) {
        fx_reopen(f);
        check_info(f, "sw", 7, 3, 0, 6, 0);
    }

    /* era 3: small; the pull end stays frozen at 6. */
    assert_int_equal(send_chk(f, "sw", "a", "s8", 0, 3), 8);
    check_info(f, "sw", 8, 3, 0, 6, 0);
    check_position(f, "a", "da", "sw", 4, 6, 1);
    check_position(f, "c", "dc", "sw", 4, 6, 0);

    /* b's device db pulls now, midway through era 3, and acks `through`;
     * db3 pulls too and acks the head (it processed its inbox as well). */
    uint64_t got_db[MAXSEQ], got_db3[MAXSEQ];
    size_t n_db = pull_all(f, "sw", "b", 4, 1, got_db, MAXSEQ, &through);
    const uint64_t era2[] = {5, 6};
    check_seqs(got_db, n_db, era2, 2);
    assert_int_equal(through, 6);
    uint64_t stored = 0;
    EXPECT_OK(mqstore_position_ack(f->s, "b", "db", "sw", through, &stored));
    assert_int_equal(stored, 6);
    size_t n_db3 = pull_all(f, "sw", "b", 0, 10, got_db3, MAXSEQ, &through);
    check_seqs(got_db3, n_db3, era2, 2);
    assert_int_equal(through, 6);
    EXPECT_OK(mqstore_position_ack(f->s, "b", "db3", "sw", 8, &stored));
    assert_int_equal(stored, 8);
    check_no_positions(f, "b", "db");
    check_no_positions(f, "b", "db3");
    if (reopen) fx_reopen(f);
    assert_int_equal(send_chk(f, "sw", "b", "s9", 0, 3), 9);
    check_info(f, "sw", 9, 3, 0, 6, 0);

    /* -> large, adding e. */
    const char *const e[] = {"e"};
    ev = ev_make("d", "add e, large", MQSTORE_MODE_LARGE);
    EXPECT_OK(mqstore_members_add(f->s, "sw", e, NULL, 1, &ev, &r));
    check_res(&r, 10, 1, 0, 4, 4);
    assert_int_equal(fanout_seq(&r, "a"), 8);
    assert_int_equal(fanout_seq(&r, "b"), 8);
    assert_int_equal(fanout_seq(&r, "d"), 5);
    assert_int_equal(fanout_seq(&r, "e"), 1);
    assert_int_equal(fanout_seq(&r, "c"), 0);
    assert_int_equal(r.inbox_seq, 5);
    mqstore_result_clear(&r);
    check_info(f, "sw", 10, 4, 1, 10, 0);
    if (reopen) {
        fx_reopen(f);
        check_info(f, "sw", 10, 4, 1, 10, 0);
    }

    /* era 4: large */
    assert_int_equal(send_chk(f, "sw", "e", "l11", 1, 4), 11);
    if (reopen) fx_reopen(f);
    assert_int_equal(send_chk(f, "sw", "a", "l12", 1, 4), 12);
    check_info(f, "sw", 12, 4, 1, 12, 0);
    assert_int_equal(ihead(f, "a"), 8);
    assert_int_equal(ihead(f, "b"), 8);
    assert_int_equal(ihead(f, "c"), 5);
    assert_int_equal(ihead(f, "d"), 5);
    assert_int_equal(ihead(f, "e"), 1);
    if (reopen) fx_reopen(f);

    /* The stored mode of each message decides who has it where. */
    uint64_t seqs[MAXSEQ];
    size_t n = inbox_conv_seqs(f, "a", "sw", seqs, MAXSEQ);
    const uint64_t a_inbox[] = {1, 2, 3, 4, 7, 8, 9, 10};
    check_seqs(seqs, n, a_inbox, 8);
    n = pull_all(f, "sw", "a", 0, 1, seqs, MAXSEQ, &through);
    const uint64_t a_pull[] = {5, 6, 11, 12};
    check_seqs(seqs, n, a_pull, 4);
    assert_int_equal(through, 12);
    /* A long page accounts for everything in one go. */
    check_pull(f, "sw", "a", 0, 100, SIZE_MAX, a_pull, 4, 0, 12);
    check_pull(f, "sw", "a", 6, 100, SIZE_MAX, a_pull + 2, 2, 0, 12);

    /* Devices that never acked: 1..12 exactly once. a kept its row from
     * era 2 (position 4); e's pulling starts at 10. */
    check_position(f, "a", "da", "sw", 4, 12, 1);
    check_exactly_once(f, "sw", "a", "da", 1, 12, NULL, 0);
    check_exactly_once(f, "sw", "b", "db2", 1, 12, NULL, 0);
    /* d joined at 4, e at 10: from their joining. */
    check_position(f, "d", "dd", "sw", 4, 12, 1);
    check_exactly_once(f, "sw", "d", "dd", 4, 12, NULL, 0);
    check_position(f, "e", "de", "sw", 10, 12, 1);
    check_exactly_once(f, "sw", "e", "de", 10, 12, NULL, 0);
    /* c left at 7: up to and including the removal event, never after. */
    check_position(f, "c", "dc", "sw", 4, 6, 0);
    check_exactly_once(f, "sw", "c", "dc", 1, 7, NULL, 0);
    /* b's devices that pulled and acked during era 3. */
    check_position(f, "b", "db", "sw", 6, 12, 1);
    check_exactly_once(f, "sw", "b", "db", 1, 12, got_db, n_db);
    check_position(f, "b", "db3", "sw", 8, 12, 1);
    check_exactly_once(f, "sw", "b", "db3", 1, 12, got_db3, n_db3);
    if (reopen) {
        /* Positions and pull rows survive another reopen. */
        fx_reopen(f);
        check_position(f, "b", "db", "sw", 6, 12, 1);
        check_position(f, "c", "dc", "sw", 4, 6, 0);
        check_exactly_once(f, "sw", "a", "da", 1, 12, NULL, 0);
        check_exactly_once(f, "sw", "b", "db", 1, 12, got_db, n_db);
        check_info(f, "sw", 12, 4, 1, 12, 0);
    }
}

static void test_switching(void **state)
{
    run_switching(*state, 0);
}

/* 10: the same with the store closed and reopened between the writes: the
 * mode, pull end, pull rows and positions come back from RocksDB. */
static void test_switching_reopen(void **state)
{
    run_switching(*state, 1);
}

/* conv_update switches the mode without a membership change; while the
 * conversation stays large an update is in nobody's inbox. */
static void test_update_mode(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b"};
    mqstore_event ev = ev_make("a", "created", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_create(f->s, "u", mem, NULL, 2, &ev, &r));
    mqstore_result_clear(&r);
    ev = ev_make("a", "large now", MQSTORE_MODE_LARGE);
    EXPECT_OK(mqstore_conv_update(f->s, "u", &ev, &r));
    check_res(&r, 2, 1, 0, 2, 2);
    mqstore_result_clear(&r);
    check_info(f, "u", 2, 2, 1, 2, 0);
    ev = ev_make("a", "still large", MQSTORE_MODE_LARGE);
    EXPECT_OK(mqstore_conv_update(f->s, "u", &ev, &r));
    check_res(&r, 3, 1, 1, 2, 0);
    assert_int_equal(r.inbox_seq, 0);
    mqstore_result_clear(&r);
    ev = ev_make("a", "keep", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_conv_update(f->s, "u", &ev, &r));
    check_res(&r, 4, 1, 1, 2, 0);
    mqstore_result_clear(&r);
    assert_int_equal(ihead(f, "a"), 2);
    assert_int_equal(ihead(f, "b"), 2);
    const uint64_t pulled[] = {3, 4};
    check_pull(f, "u", "b", 0, 10, SIZE_MAX, pulled, 2, 0, 4);
    ev = ev_make("a", "small", MQSTORE_MODE_SMALL);
    EXPECT_OK(mqstore_conv_update(f->s, "u", &ev, &r));
    check_res(&r, 5, 0, 0, 2, 2);
    mqstore_result_clear(&r);
    check_info(f, "u", 5, 2, 0, 4, 0);
    check_exactly_once(f, "u", "a", "x", 1, 5, NULL, 0);
    /* A bad mode. */
    ev = ev_make("a", "bad", (mqstore_mode)3);
    EXPECT_ERR(mqstore_conv_update(f->s, "u", &ev, &r), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_conv_update(f->s, "nope", &ev, &r), MQSTORE_ERR_INVAL);
    ev = ev_make("a", "ok", MQSTORE_MODE_KEEP);
    EXPECT_ERR(mqstore_conv_update(f->s, "nope", &ev, &r), MQSTORE_ERR_NOTFOUND);
    assert_int_equal(chead(f, "u"), 5);
}

/* ======================================================================== */
/* 3. membership of a large conversation                                    */
/* ======================================================================== */

static void test_large_membership(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    mqstore_event ev = ev_make("a", "created", MQSTORE_MODE_LARGE);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_create(f->s, "g", mem, NULL, 3, &ev, &r));
    mqstore_result_clear(&r);
    assert_int_equal(send_chk(f, "g", "a", "m2", 1, 3), 2);
    assert_int_equal(send_chk(f, "g", "b", "m3", 1, 3), 3);

    /* Adding d: the event is in d's inbox only. */
    const char *const d[] = {"d"};
    ev = ev_make("a", "add d", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_members_add(f->s, "g", d, NULL, 1, &ev, &r));
    check_res(&r, 4, 1, 1, 4, 1);
    assert_int_equal(fanout_seq(&r, "d"), 1);
    assert_int_equal(r.inbox_seq, 0); /* the actor got no entry */
    mqstore_result_clear(&r);
    assert_int_equal(ihead(f, "a"), 1);
    assert_int_equal(ihead(f, "b"), 1);
    assert_int_equal(ihead(f, "c"), 1);
    assert_int_equal(ihead(f, "d"), 1);
    check_inbox_entry(f, "d", 1, "g", 4);
    mqstore_member m;
    EXPECT_OK(mqstore_member_get(f->s, "g", "d", &m));
    assert_int_equal(m.joined_seq, 4);
    mqstore_conv_list cl;
    EXPECT_OK(mqstore_user_convs(f->s, "d", NULL, 10, &cl));
    assert_int_equal(cl.n, 1);
    assert_string_equal(cl.conv[0], "g");
    assert_int_equal(cl.role[0], MQSTORE_ROLE_MEMBER);
    assert_int_equal(cl.joined_seq[0], 4);
    mqstore_conv_list_free(&cl);
    EXPECT_OK(mqstore_user_convs(f->s, "a", NULL, 10, &cl));
    assert_int_equal(cl.n, 1);
    assert_int_equal(cl.joined_seq[0], 1);
    mqstore_conv_list_free(&cl);
    /* d has nothing to pull yet; nothing before the add. */
    check_no_positions(f, "d", "dd");
    check_pull(f, "g", "d", 0, 10, SIZE_MAX, NULL, 0, 0, 4);

    assert_int_equal(send_chk(f, "g", "c", "m5", 1, 4), 5);
    assert_int_equal(send_chk(f, "g", "d", "m6", 1, 4), 6);
    const uint64_t d_pull[] = {5, 6};
    check_pull(f, "g", "d", 0, 10, SIZE_MAX, d_pull, 2, 0, 6);
    check_pull(f, "g", "d", 2, 10, SIZE_MAX, d_pull, 2, 0, 6);
    check_position(f, "d", "dd", "g", 4, 6, 1);
    /* The others pull the add event too. */
    const uint64_t a_pull[] = {2, 3, 4, 5, 6};
    check_pull(f, "g", "a", 0, 10, SIZE_MAX, a_pull, 5, 0, 6);

    /* Removing b: the event is in b's inbox only. */
    const char *const b[] = {"b"};
    ev = ev_make("a", "remove b", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_members_remove(f->s, "g", b, 1, &ev, &r));
    check_res(&r, 7, 1, 1, 3, 1);
    assert_int_equal(fanout_seq(&r, "b"), 2);
    mqstore_result_clear(&r);
    assert_int_equal(ihead(f, "a"), 1);
    assert_int_equal(ihead(f, "b"), 2);
    assert_int_equal(ihead(f, "c"), 1);
    assert_int_equal(ihead(f, "d"), 1);
    check_inbox_entry(f, "b", 2, "g", 7);
    assert_int_equal(send_chk(f, "g", "a", "m8", 1, 3), 8);
    EXPECT_ERR(send_raw(f, "g", "b", "d", NULL, "no", &r), MQSTORE_ERR_NOTMEMBER);
    assert_int_equal(chead(f, "g"), 8);

    /* b pulls up to before the removal, nothing after it. */
    check_position(f, "b", "db", "g", 1, 6, 0);
    const uint64_t b_pull[] = {2, 3, 4, 5, 6};
    check_pull(f, "g", "b", 0, 10, SIZE_MAX, b_pull, 5, 0, 6);
    check_pull(f, "g", "b", 0, 3, SIZE_MAX, b_pull, 3, 1, 4);
    check_pull(f, "g", "b", 4, 2, SIZE_MAX, b_pull + 3, 2, 0, 6);
    check_pull(f, "g", "b", 6, 10, SIZE_MAX, NULL, 0, 0, 6);
    check_pull(f, "g", "b", 7, 10, SIZE_MAX, NULL, 0, 0, 7);
    check_exactly_once(f, "g", "b", "db", 1, 7, NULL, 0);
    /* b may still ack its position (up to the head); then nothing is listed. */
    uint64_t stored = 0;
    EXPECT_OK(mqstore_position_ack(f->s, "b", "db", "g", 6, &stored));
    assert_int_equal(stored, 6);
    check_no_positions(f, "b", "db");
    /* The others pull the removal and what followed. */
    const uint64_t c_pull[] = {2, 3, 4, 5, 6, 7, 8};
    check_pull(f, "g", "c", 0, 100, SIZE_MAX, c_pull, 7, 0, 8);
    check_exactly_once(f, "g", "d", "dd", 4, 8, NULL, 0);

    /* set_role in a large conversation: no inbox entry at all. */
    const char *const cc[] = {"c"};
    ev = ev_make("a", "c is admin", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_members_set_role(f->s, "g", cc, 1, MQSTORE_ROLE_ADMIN, &ev, &r));
    check_res(&r, 9, 1, 1, 3, 0);
    assert_int_equal(r.inbox_seq, 0);
    mqstore_result_clear(&r);
    assert_int_equal(ihead(f, "a"), 1);
    assert_int_equal(ihead(f, "b"), 2);
    assert_int_equal(ihead(f, "c"), 1);
    assert_int_equal(ihead(f, "d"), 1);
    EXPECT_OK(mqstore_member_get(f->s, "g", "c", &m));
    assert_int_equal(m.role, MQSTORE_ROLE_ADMIN);
    assert_int_equal(m.joined_seq, 1);
    const uint64_t nine[] = {9};
    check_pull(f, "g", "c", 8, 100, SIZE_MAX, nine, 1, 0, 9);
    check_pull(f, "g", "b", 0, 100, SIZE_MAX, b_pull, 5, 0, 6);
    check_exactly_once(f, "g", "a", "da", 1, 9, NULL, 0);

    /* b comes back: a new window from the re-add on. */
    ev = ev_make("a", "b is back", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_members_add(f->s, "g", b, NULL, 1, &ev, &r));
    check_res(&r, 10, 1, 1, 4, 1);
    assert_int_equal(fanout_seq(&r, "b"), 3);
    mqstore_result_clear(&r);
    assert_int_equal(send_chk(f, "g", "b", "m11", 1, 4), 11);
    check_position(f, "b", "db", "g", 10, 11, 1);
    const uint64_t eleven[] = {11};
    check_pull(f, "g", "b", 0, 100, SIZE_MAX, eleven, 1, 0, 11);
}

/* ======================================================================== */
/* 4. member counts                                                         */
/* ======================================================================== */

static void test_member_counts(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    for (int large = 0; large <= 1; large++) {
        const char *conv = large ? "big" : "small";
        mqstore_event ev = ev_make("a", "created", large ? MQSTORE_MODE_LARGE : MQSTORE_MODE_KEEP);
        mqstore_result r;
        EXPECT_OK(mqstore_conv_create(f->s, conv, mem, NULL, 3, &ev, &r));
        check_res(&r, 1, large, 0, 3, 3);
        mqstore_result_clear(&r);
        check_info(f, conv, 1, 3, large, large ? 1 : 0, 0);

        const char *const add[] = {"d", "e"};
        ev = ev_make("a", "add", MQSTORE_MODE_KEEP);
        EXPECT_OK(mqstore_members_add(f->s, conv, add, NULL, 2, &ev, &r));
        check_res(&r, 2, large, large, 5, large ? 2 : 5);
        mqstore_result_clear(&r);
        assert_int_equal(info(f, conv).members, 5);

        /* Failures change nothing. */
        const char *const dup[] = {"b", "f"};
        EXPECT_ERR(mqstore_members_add(f->s, conv, dup, NULL, 2, &ev, &r), MQSTORE_ERR_EXISTS);
        const char *const ghost[] = {"a", "x", "y", "z", "w", "v"};
        EXPECT_ERR(mqstore_members_remove(f->s, conv, ghost, 6, &ev, &r), MQSTORE_ERR_NOTFOUND);
        assert_int_equal(info(f, conv).members, 5);
        assert_int_equal(chead(f, conv), 2);

        const char *const rm[] = {"b"};
        EXPECT_OK(mqstore_members_remove(f->s, conv, rm, 1, &ev, &r));
        check_res(&r, 3, large, large, 4, large ? 1 : 5);
        mqstore_result_clear(&r);
        EXPECT_OK(mqstore_members_set_role(f->s, conv, mem, 1, MQSTORE_ROLE_OWNER, &ev, &r));
        check_res(&r, 4, large, large, 4, large ? 0 : 4);
        mqstore_result_clear(&r);
        EXPECT_OK(send_raw(f, conv, "c", "d", NULL, "hi", &r));
        check_res(&r, 5, large, large, 4, large ? 0 : 4);
        mqstore_result_clear(&r);
        check_info(f, conv, 5, 4, large, large ? 5 : 0, 0);
        mqstore_member_list ml;
        EXPECT_OK(mqstore_members_list(f->s, conv, &ml));
        assert_int_equal(ml.n, 4);
        mqstore_member_list_free(&ml);
    }
    fx_reopen(f);
    check_info(f, "small", 5, 4, 0, 0, 0);
    check_info(f, "big", 5, 4, 1, 5, 0);

    /* A conversation of one: removing more names than members. */
    const char *const solo[] = {"s"};
    mqstore_event ev = ev_make("s", "created", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_create(f->s, "solo", solo, NULL, 1, &ev, &r));
    mqstore_result_clear(&r);
    const char *const two[] = {"s", "ghost"};
    EXPECT_ERR(mqstore_members_remove(f->s, "solo", two, 2, &ev, &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_members_remove(f->s, "nope", two, 2, &ev, &r), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_members_set_role(f->s, "nope", two, 1, MQSTORE_ROLE_ADMIN, &ev, &r),
               MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_members_add(f->s, "nope", two, NULL, 1, &ev, &r), MQSTORE_ERR_NOTFOUND);
    check_info(f, "solo", 1, 1, 0, 0, 0);

    /* Everyone leaves: the conversation still exists, with 0 members. */
    EXPECT_OK(mqstore_members_remove(f->s, "solo", solo, 1, &ev, &r));
    check_res(&r, 2, 0, 0, 0, 1);
    mqstore_result_clear(&r);
    check_info(f, "solo", 2, 0, 0, 0, 0);
    fx_reopen(f);
    check_info(f, "solo", 2, 0, 0, 0, 0);
    mqstore_err e = MQSTORE_ERR_IO;
    assert_int_equal(mqstore_conv_exists(f->s, "solo", &e), 1);
    EXPECT_OK(e);
    EXPECT_OK(mqstore_members_add(f->s, "solo", solo, NULL, 1, &ev, &r));
    check_res(&r, 3, 0, 0, 1, 1);
    mqstore_result_clear(&r);

    mqstore_conv_info ci;
    EXPECT_ERR(mqstore_conv_info_get(f->s, "nope", &ci), MQSTORE_ERR_NOTFOUND);
    EXPECT_ERR(mqstore_conv_info_get(f->s, "no/pe", &ci), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_conv_info_get(f->s, "solo", NULL), MQSTORE_ERR_INVAL);
}

/* ======================================================================== */
/* 5. admins-only posting                                                   */
/* ======================================================================== */

static void test_admins_post(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"own", "adm", "mem"};
    const mqstore_role roles[] = {MQSTORE_ROLE_OWNER, MQSTORE_ROLE_ADMIN, MQSTORE_ROLE_MEMBER};
    mqstore_event ev = ev_make("own", "created", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_create(f->s, "ch", mem, roles, 3, &ev, &r));
    mqstore_result_clear(&r);
    assert_int_equal(send_chk(f, "ch", "mem", "m2", 0, 3), 2);

    ev = ev_flags("own", "admins only", MQSTORE_CONV_ADMINS_POST);
    EXPECT_OK(mqstore_conv_update(f->s, "ch", &ev, &r));
    check_res(&r, 3, 0, 0, 3, 3); /* small: everyone sees the change */
    mqstore_result_clear(&r);
    check_info(f, "ch", 3, 3, 0, 0, MQSTORE_CONV_ADMINS_POST);

    uint64_t heads[3];
    for (int i = 0; i < 3; i++)
        heads[i] = ihead(f, mem[i]);
    EXPECT_ERR(send_raw(f, "ch", "mem", "d", "k1", "nope", &r), MQSTORE_ERR_DENIED);
    assert_int_equal(r.n_fanout, 0);
    assert_int_equal(r.seq, 0);
    assert_int_equal(chead(f, "ch"), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ihead(f, mem[i]), heads[i]);
    assert_int_equal(send_chk(f, "ch", "adm", "a4", 0, 3), 4);
    assert_int_equal(send_chk(f, "ch", "own", "o5", 0, 3), 5);
    /* An update without set_flags keeps them. */
    ev = ev_make("own", "rename", MQSTORE_MODE_KEEP);
    ev.flags = 0;
    EXPECT_OK(mqstore_conv_update(f->s, "ch", &ev, &r));
    mqstore_result_clear(&r);
    check_info(f, "ch", 6, 3, 0, 0, MQSTORE_CONV_ADMINS_POST);
    fx_reopen(f);
    check_info(f, "ch", 6, 3, 0, 0, MQSTORE_CONV_ADMINS_POST);
    EXPECT_ERR(send_raw(f, "ch", "mem", "d", "k1", "nope", &r), MQSTORE_ERR_DENIED);
    assert_int_equal(chead(f, "ch"), 6);
    /* Promoted, mem may post. */
    const char *const m1[] = {"mem"};
    EXPECT_OK(mqstore_members_set_role(f->s, "ch", m1, 1, MQSTORE_ROLE_ADMIN, &ev, &r));
    mqstore_result_clear(&r);
    assert_int_equal(send_chk(f, "ch", "mem", "m8", 0, 3), 8);
    EXPECT_OK(mqstore_members_set_role(f->s, "ch", m1, 1, MQSTORE_ROLE_MEMBER, &ev, &r));
    mqstore_result_clear(&r);
    EXPECT_ERR(send_raw(f, "ch", "mem", "d", "k1", "nope", &r), MQSTORE_ERR_DENIED);

    /* Unknown flag bits are refused. */
    ev = ev_flags("own", "bad", 2);
    EXPECT_ERR(mqstore_conv_update(f->s, "ch", &ev, &r), MQSTORE_ERR_INVAL);
    assert_int_equal(chead(f, "ch"), 9);

    /* Cleared: members post again; k1 was never written, so it is new. */
    ev = ev_flags("own", "everyone", 0);
    EXPECT_OK(mqstore_conv_update(f->s, "ch", &ev, &r));
    check_res(&r, 10, 0, 0, 3, 3);
    mqstore_result_clear(&r);
    check_info(f, "ch", 10, 3, 0, 0, 0);
    EXPECT_OK(send_raw(f, "ch", "mem", "d", "k1", "yes", &r));
    check_res(&r, 11, 0, 0, 3, 3);
    mqstore_result_clear(&r);

    /* A large conversation created admins-only. */
    ev = ev_make("own", "announcements", MQSTORE_MODE_LARGE);
    ev.set_flags = 1;
    ev.flags = MQSTORE_CONV_ADMINS_POST;
    EXPECT_OK(mqstore_conv_create(f->s, "ann", mem, roles, 3, &ev, &r));
    check_res(&r, 1, 1, 0, 3, 3);
    mqstore_result_clear(&r);
    check_info(f, "ann", 1, 3, 1, 1, MQSTORE_CONV_ADMINS_POST);
    EXPECT_ERR(send_raw(f, "ann", "mem", "d", NULL, "nope", &r), MQSTORE_ERR_DENIED);
    assert_int_equal(chead(f, "ann"), 1);
    assert_int_equal(send_chk(f, "ann", "adm", "a2", 1, 3), 2);
    /* A flags change of a large conversation is pulled, like a message. */
    ev = ev_flags("own", "open", 0);
    EXPECT_OK(mqstore_conv_update(f->s, "ann", &ev, &r));
    check_res(&r, 3, 1, 1, 3, 0);
    mqstore_result_clear(&r);
    check_info(f, "ann", 3, 3, 1, 3, 0);
    assert_int_equal(send_chk(f, "ann", "mem", "m4", 1, 3), 4);
}

/* ======================================================================== */
/* 6. read state                                                            */
/* ======================================================================== */

static void check_rs(fx *f, const char *conv, uint64_t seq, const char *exclude, const char *after,
                     size_t limit, uint64_t members, uint64_t delivered, uint64_t read,
                     const char *const *readers, size_t n, int more)
{
    mqstore_read_state rs;
    memset(&rs, 0xA5, sizeof rs);
    EXPECT_OK(mqstore_read_state_get(f->s, conv, seq, exclude, after, limit, &rs));
    assert_int_equal(rs.members, members);
    assert_int_equal(rs.delivered, delivered);
    assert_int_equal(rs.read, read);
    assert_int_equal(rs.n, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(rs.readers[i], readers[i]);
    assert_int_equal(rs.more, more);
    mqstore_read_state_free(&rs);
}

static void test_read_state(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c", "d"};
    mqstore_event ev = ev_make("a", "created", MQSTORE_MODE_LARGE);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_create(f->s, "g", mem, NULL, 4, &ev, &r));
    mqstore_result_clear(&r);
    assert_int_equal(send_chk(f, "g", "a", "m2", 1, 4), 2);
    assert_int_equal(send_chk(f, "g", "b", "m3", 1, 4), 3);
    assert_int_equal(send_chk(f, "g", "a", "m4", 1, 4), 4);
    const char *const e[] = {"e"};
    ev = ev_make("a", "add e", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_members_add(f->s, "g", e, NULL, 1, &ev, &r));
    mqstore_result_clear(&r);
    assert_int_equal(send_chk(f, "g", "a", "m6", 1, 5), 6);

    EXPECT_OK(mqstore_receipt_update(f->s, "g", "a", 6, 6, NULL, NULL, NULL));
    EXPECT_OK(mqstore_receipt_update(f->s, "g", "b", 4, 4, NULL, NULL, NULL));
    EXPECT_OK(mqstore_receipt_update(f->s, "g", "c", 3, 2, NULL, NULL, NULL));
    EXPECT_OK(mqstore_receipt_update(f->s, "g", "d", 2, 0, NULL, NULL, NULL));
    EXPECT_OK(mqstore_receipt_update(f->s, "g", "e", 6, 6, NULL, NULL, NULL));

    /* seq 2 by a: b, c, d can have it (e joined at 5). */
    const char *const bc[] = {"b", "c"};
    check_rs(f, "g", 2, "a", NULL, 10, 3, 3, 2, bc, 2, 0);
    check_rs(f, "g", 2, "a", "", 10, 3, 3, 2, bc, 2, 0);
    const char *const bo[] = {"b"};
    const char *const ao[] = {"a"};
    check_rs(f, "g", 3, "b", NULL, 10, 3, 2, 1, ao, 1, 0); /* a, c, d: a and c delivered */
    check_rs(f, "g", 3, "a", NULL, 10, 3, 2, 1, bo, 1, 0);
    check_rs(f, "g", 4, "a", NULL, 10, 3, 1, 1, bo, 1, 0);
    /* seq 6: e counts now. */
    const char *const eo[] = {"e"};
    check_rs(f, "g", 6, "a", NULL, 10, 4, 1, 1, eo, 1, 0);
    check_rs(f, "g", 5, "a", NULL, 10, 4, 1, 1, eo, 1, 0);
    /* Nobody excluded. */
    const char *const abc[] = {"a", "b", "c"};
    check_rs(f, "g", 2, NULL, NULL, 10, 4, 4, 3, abc, 3, 0);
    check_rs(f, "g", 2, "zz", NULL, 10, 4, 4, 3, abc, 3, 0);
    /* Paging the readers; the counts stay whole. */
    check_rs(f, "g", 2, NULL, NULL, 2, 4, 4, 3, abc, 2, 1);
    check_rs(f, "g", 2, NULL, "b", 2, 4, 4, 3, abc + 2, 1, 0);
    check_rs(f, "g", 2, NULL, "a", 2, 4, 4, 3, abc + 1, 2, 0);
    check_rs(f, "g", 2, NULL, "a", 1, 4, 4, 3, abc + 1, 1, 1);
    check_rs(f, "g", 2, NULL, "c", 2, 4, 4, 3, NULL, 0, 0);
    check_rs(f, "g", 2, NULL, NULL, 0, 4, 4, 3, NULL, 0, 1);
    check_rs(f, "g", 6, NULL, NULL, 1, 5, 2, 2, abc, 1, 1);
    const char *const ae[] = {"a", "e"};
    check_rs(f, "g", 6, NULL, NULL, 2, 5, 2, 2, ae, 2, 0);

    /* c leaves: its receipt no longer counts. */
    const char *const c[] = {"c"};
    ev = ev_make("a", "remove c", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_members_remove(f->s, "g", c, 1, &ev, &r));
    mqstore_result_clear(&r);
    check_rs(f, "g", 2, "a", NULL, 10, 2, 2, 1, bo, 1, 0);
    const char *const ab[] = {"a", "b"};
    check_rs(f, "g", 2, NULL, NULL, 10, 3, 3, 2, ab, 2, 0);
    /* Re-added at 8: it counts from there on only. */
    ev = ev_make("a", "c again", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_members_add(f->s, "g", c, NULL, 1, &ev, &r));
    mqstore_result_clear(&r);
    check_rs(f, "g", 2, "a", NULL, 10, 2, 2, 1, bo, 1, 0);
    check_rs(f, "g", 8, "a", NULL, 10, 4, 0, 0, NULL, 0, 0);
    EXPECT_OK(mqstore_receipt_update(f->s, "g", "c", 8, 8, NULL, NULL, NULL));
    const char *const co[] = {"c"};
    check_rs(f, "g", 8, "a", NULL, 10, 4, 1, 1, co, 1, 0);
    check_rs(f, "g", 2, "d", NULL, 10, 2, 2, 2, ab, 2, 0);
    check_rs(f, "g", 7, "d", NULL, 10, 3, 0, 0, NULL, 0, 0);

    /* Arguments. */
    mqstore_read_state rs;
    EXPECT_ERR(mqstore_read_state_get(f->s, "g", 0, NULL, NULL, 10, &rs), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_read_state_get(f->s, "g", 9, NULL, NULL, 10, &rs), MQSTORE_ERR_INVAL);
    assert_int_equal(rs.n, 0);
    assert_null(rs.readers);
    EXPECT_ERR(mqstore_read_state_get(f->s, "g", 1, NULL, NULL, 10001, &rs), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_read_state_get(f->s, "g", 1, "a/b", NULL, 10, &rs), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_read_state_get(f->s, "nope", 1, NULL, NULL, 10, &rs), MQSTORE_ERR_NOTFOUND);
}

/* ======================================================================== */
/* 7. device_forget and positions paging                                    */
/* ======================================================================== */

static void test_device_forget(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"u", "v"};
    const char *convs[] = {"L1", "L2", "L3"};
    for (int i = 0; i < 3; i++) {
        mqstore_event ev = ev_make("u", "created", MQSTORE_MODE_LARGE);
        mqstore_result r;
        EXPECT_OK(mqstore_conv_create(f->s, convs[i], mem, NULL, 2, &ev, &r));
        mqstore_result_clear(&r);
        for (int j = 0; j < 4; j++)
            send_chk(f, convs[i], "v", "m", 1, 2); /* seqs 2..5 */
    }
    /* Paging the position list by conversation id. */
    mqstore_position_list pl;
    EXPECT_OK(mqstore_positions(f->s, "u", "d1", NULL, 2, &pl));
    assert_int_equal(pl.n, 2);
    assert_int_equal(pl.more, 1);
    assert_string_equal(pl.items[0].conv, "L1");
    assert_string_equal(pl.items[1].conv, "L2");
    mqstore_position_list_free(&pl);
    EXPECT_OK(mqstore_positions(f->s, "u", "d1", "L2", 2, &pl));
    assert_int_equal(pl.n, 1);
    assert_int_equal(pl.more, 0);
    assert_string_equal(pl.items[0].conv, "L3");
    assert_int_equal(pl.items[0].position, 1);
    assert_int_equal(pl.items[0].end, 5);
    mqstore_position_list_free(&pl);
    EXPECT_OK(mqstore_positions(f->s, "u", "d1", "L", 3, &pl));
    assert_int_equal(pl.n, 3);
    assert_int_equal(pl.more, 0);
    mqstore_position_list_free(&pl);
    EXPECT_OK(mqstore_positions(f->s, "u", "d1", "L3", 3, &pl));
    assert_int_equal(pl.n, 0);
    mqstore_position_list_free(&pl);
    EXPECT_ERR(mqstore_positions(f->s, "u", "d1", NULL, 0, &pl), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_positions(f->s, "u", "d1", NULL, 10001, &pl), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_positions(f->s, "u", "d1", "a/b", 10, &pl), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_positions(f->s, "u", "d/1", NULL, 10, &pl), MQSTORE_ERR_INVAL);

    /* An acked conversation is skipped, and `more` only counts listed ones. */
    EXPECT_OK(mqstore_position_ack(f->s, "u", "d1", "L1", 5, NULL));
    EXPECT_OK(mqstore_positions(f->s, "u", "d1", NULL, 2, &pl));
    assert_int_equal(pl.n, 2);
    assert_int_equal(pl.more, 0);
    assert_string_equal(pl.items[0].conv, "L2");
    assert_string_equal(pl.items[1].conv, "L3");
    mqstore_position_list_free(&pl);

    EXPECT_OK(mqstore_position_ack(f->s, "u", "d1", "L2", 3, NULL));
    EXPECT_OK(mqstore_position_ack(f->s, "u", "d1", "L3", 4, NULL));
    EXPECT_OK(mqstore_position_ack(f->s, "u", "d2", "L1", 2, NULL));
    EXPECT_OK(mqstore_position_ack(f->s, "u", "d1x", "L1", 3, NULL));
    EXPECT_OK(mqstore_position_ack(f->s, "v", "d1", "L1", 4, NULL));
    EXPECT_OK(mqstore_cursor_ack(f->s, "u", "d1", 1, NULL));

    EXPECT_OK(mqstore_device_forget(f->s, "u", "d1"));
    /* Back at where u's pulling starts, in every conversation. */
    EXPECT_OK(mqstore_positions(f->s, "u", "d1", NULL, 10, &pl));
    assert_int_equal(pl.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(pl.items[i].conv, convs[i]);
        assert_int_equal(pl.items[i].position, 1);
        assert_int_equal(pl.items[i].end, 5);
        assert_int_equal(pl.items[i].member, 1);
    }
    mqstore_position_list_free(&pl);
    uint64_t cur = 9;
    EXPECT_OK(mqstore_cursor_get(f->s, "u", "d1", &cur));
    assert_int_equal(cur, 0);
    /* Other devices keep theirs: u's d2 and d1x, v's d1. */
    EXPECT_OK(mqstore_positions(f->s, "u", "d2", NULL, 10, &pl));
    assert_int_equal(pl.n, 3);
    assert_int_equal(pl.items[0].position, 2);
    assert_int_equal(pl.items[1].position, 1);
    mqstore_position_list_free(&pl);
    EXPECT_OK(mqstore_positions(f->s, "u", "d1x", NULL, 10, &pl));
    assert_int_equal(pl.n, 3);
    assert_int_equal(pl.items[0].position, 3);
    mqstore_position_list_free(&pl);
    EXPECT_OK(mqstore_positions(f->s, "v", "d1", NULL, 10, &pl));
    assert_int_equal(pl.n, 3);
    assert_int_equal(pl.items[0].position, 4);
    mqstore_position_list_free(&pl);
    uint64_t stored = 0;
    EXPECT_OK(mqstore_position_ack(f->s, "u", "d2", "L1", 1, &stored));
    assert_int_equal(stored, 2);
    /* After a reopen too (the range delete is durable). */
    fx_reopen(f);
    EXPECT_OK(mqstore_positions(f->s, "u", "d1", NULL, 10, &pl));
    assert_int_equal(pl.n, 3);
    assert_int_equal(pl.items[0].position, 1);
    mqstore_position_list_free(&pl);
    EXPECT_OK(mqstore_positions(f->s, "u", "d1x", NULL, 10, &pl));
    assert_int_equal(pl.items[0].position, 3);
    mqstore_position_list_free(&pl);
    /* Acking after forgetting starts again from nothing. */
    EXPECT_OK(mqstore_position_ack(f->s, "u", "d1", "L1", 2, &stored));
    assert_int_equal(stored, 2);
}

/* ======================================================================== */
/* 8. a 10,000-member group                                                 */
/* ======================================================================== */

#define HUGE_N 10000

static void test_huge_group(void **state)
{
    fx *f = *state;
    fx_open(f);
    char(*names)[16] = calloc(HUGE_N, sizeof *names);
    const char **mem = calloc(HUGE_N, sizeof *mem);
    assert_non_null(names);
    assert_non_null(mem);
    for (int i = 0; i < HUGE_N; i++) {
        snprintf(names[i], sizeof names[i], "u%05d", i);
        mem[i] = names[i];
    }
    mqstore_event ev = ev_make("u00000", "created", MQSTORE_MODE_LARGE);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_create(f->s, "huge", mem, NULL, HUGE_N, &ev, &r));
    check_res(&r, 1, 1, 0, HUGE_N, HUGE_N);
    assert_int_equal(fanout_seq(&r, "u09999"), 1);
    mqstore_result_clear(&r);
    check_info(f, "huge", 1, HUGE_N, 1, 1, 0);

    EXPECT_OK(send_raw(f, "huge", "u00042", "d", "c1", "hello, everyone", &r));
    check_res(&r, 2, 1, 1, HUGE_N, 0);
    assert_int_equal(r.inbox_seq, 0);
    mqstore_result_clear(&r);
    const char *probe[] = {"u00000", "u00042", "u05000", "u09999"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(ihead(f, probe[i]), 1);
    check_info(f, "huge", 2, HUGE_N, 1, 2, 0);
    check_position(f, "u04242", "d", "huge", 1, 2, 1);
    mqstore_page p;
    uint64_t through = 0;
    EXPECT_OK(mqstore_conv_pull(f->s, "huge", "u09999", 0, 10, SIZE_MAX, &p, &through));
    assert_int_equal(p.n, 1);
    assert_int_equal(p.items[0].seq, 2);
    assert_memory_equal(p.items[0].payload, "hello, everyone", 15);
    assert_int_equal(p.more, 0);
    assert_int_equal(through, 2);
    mqstore_page_free(&p);
    /* A retry is a duplicate, still without fan-out. */
    EXPECT_OK(send_raw(f, "huge", "u00042", "d", "c1", "hello, everyone", &r));
    assert_int_equal(r.duplicate, 1);
    assert_int_equal(r.seq, 2);
    assert_int_equal(r.n_fanout, 0);
    mqstore_result_clear(&r);
    assert_int_equal(chead(f, "huge"), 2);
    free(mem);
    free(names);
}

/* ======================================================================== */
/* 9. the legacy conversation marker and damaged records                     */
/* ======================================================================== */

static void test_legacy_marker(void **state)
{
    fx *f = *state;
    fx_open(f);
    const char *const mem[] = {"a", "b", "c"};
    mqstore_event ev = ev_make("a", "created", MQSTORE_MODE_KEEP);
    mqstore_result r;
    EXPECT_OK(mqstore_conv_create(f->s, "old", mem, NULL, 3, &ev, &r));
    mqstore_result_clear(&r);
    assert_int_equal(send_chk(f, "old", "b", "m2", 0, 3), 2);
    ev = ev_make("a", "created", MQSTORE_MODE_LARGE);
    EXPECT_OK(mqstore_conv_create(f->s, "bad", mem, NULL, 3, &ev, &r));
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_conv_create(f->s, "flg", mem, NULL, 3, &ev, &r));
    mqstore_result_clear(&r);
    EXPECT_OK(mqstore_conv_create(f->s, "pr", mem, NULL, 3, &ev, &r));
    mqstore_result_clear(&r);
    fx_close(f);

    raw_db raw;
    raw_open_ok(&raw, f->dir);
    RAW_PUT(&raw, RAW_HEADS, "cold", "\0\0\0\0\0\0\0\0");
    RAW_PUT(&raw, RAW_HEADS, "cbad", GARBAGE);
    RAW_PUT(&raw, RAW_HEADS, "cflg", "\x08\x01\x20\x02"); /* large, flags 2 (unknown) */
    RAW_PUT(&raw, RAW_MEMBERS, "lc\0pr", GARBAGE);        /* c's pull row of pr */
    raw_close(&raw);
    fx_open(f);

    /* The legacy conversation: small, members counted from the rows. */
    check_info(f, "old", 2, 3, 0, 0, 0);
    assert_int_equal(send_chk(f, "old", "c", "m3", 0, 3), 3);
    check_info(f, "old", 3, 3, 0, 0, 0);
    const char *const d[] = {"d"};
    ev = ev_make("a", "add d", MQSTORE_MODE_KEEP);
    EXPECT_OK(mqstore_members_add(f->s, "old", d, NULL, 1, &ev, &r));
    check_res(&r, 4, 0, 0, 4, 4);
    mqstore_result_clear(&r);
    fx_reopen(f);
    check_info(f, "old", 4, 4, 0, 0, 0);
    /* It can become large like any other. */
    ev = ev_make("a", "large", MQSTORE_MODE_LARGE);
    EXPECT_OK(mqstore_conv_update(f->s, "old", &ev, &r));
    check_res(&r, 5, 1, 0, 4, 4);
    mqstore_result_clear(&r);
    assert_int_equal(send_chk(f, "old", "d", "m6", 1, 4), 6);
    uint64_t seqs[MAXSEQ], through;
    size_t n = inbox_conv_seqs(f, "a", "old", seqs, MAXSEQ);
    const uint64_t old_inbox[] = {1, 2, 3, 4, 5}, old_pull[] = {6};
    check_seqs(seqs, n, old_inbox, 5);
    n = pull_all(f, "old", "a", 0, 1, seqs, MAXSEQ, &through);
    check_seqs(seqs, n, old_pull, 1);
    assert_int_equal(through, 6);

    /* A record that does not decode, or breaks its rules. */
    mqstore_conv_info ci;
    EXPECT_ERR(mqstore_conv_info_get(f->s, "bad", &ci), MQSTORE_ERR_CORRUPT);
    EXPECT_ERR(mqstore_conv_info_get(f->s, "flg", &ci), MQSTORE_ERR_CORRUPT);
    EXPECT_ERR(send_raw(f, "bad", "a", "d", NULL, "x", &r), MQSTORE_ERR_CORRUPT);
    assert_int_equal(r.n_fanout, 0);
    ev = ev_make("a", "x", MQSTORE_MODE_KEEP);
    EXPECT_ERR(mqstore_conv_update(f->s, "bad", &ev, &r), MQSTORE_ERR_CORRUPT);
    uint64_t h = 7;
    EXPECT_ERR(mqstore_conv_head(f->s, "bad", &h), MQSTORE_ERR_CORRUPT);
    /* a's positions visit bad: the whole list is corrupt. */
    mqstore_position_list pl;
    EXPECT_ERR(mqstore_positions(f->s, "a", "da", NULL, 10, &pl), MQSTORE_ERR_CORRUPT);
    assert_int_equal(pl.n, 0);
    assert_null(pl.items);
    mqstore_page p;
    EXPECT_ERR(mqstore_conv_pull(f->s, "bad", "a", 0, 10, SIZE_MAX, &p, &through),
               MQSTORE_ERR_CORRUPT);
    assert_int_equal(p.n, 0);
    /* A damaged pull row. */
    EXPECT_ERR(mqstore_conv_pull(f->s, "pr", "c", 0, 10, SIZE_MAX, &p, &through),
               MQSTORE_ERR_CORRUPT);
    EXPECT_ERR(mqstore_position_ack(f->s, "c", "dc", "pr", 1, NULL), MQSTORE_ERR_CORRUPT);
    EXPECT_OK(mqstore_conv_pull(f->s, "pr", "b", 0, 10, SIZE_MAX, &p, &through));
    assert_int_equal(p.n, 0);
    assert_int_equal(through, 1);
    mqstore_page_free(&p);
}

int main(void)
{
#define T(fn) cmocka_unit_test_prestate_setup_teardown(fn, fx_setup, fx_teardown, "mqstore-large-")
    const struct CMUnitTest tests[] = {
        T(test_create_large), T(test_switching),        T(test_switching_reopen),
        T(test_update_mode),  T(test_large_membership), T(test_member_counts),
        T(test_admins_post),  T(test_read_state),       T(test_device_forget),
        T(test_huge_group),   T(test_legacy_marker),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
