/* Unit tests for the store's operations (offline-queue/src/ops.c): online
 * checkpoints under concurrent writes, a REAL full disk (the store on a
 * small tmpfs whose rest a filler file takes) with recovery by
 * mqstore_resume() and by the store's own resumer thread, a user's devices
 * and token revocation.
 *
 * The full-disk tests mount a tmpfs (they run as root in CI); where mount
 * is refused they are skipped with the reason printed. Every loop is
 * bounded: appends by count, waits by a deadline. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_fx.h"

#define PAYLOAD 1000      /* bytes per message in the full-disk tests */
#define MAX_APPENDS 80000 /* more than the tmpfs holds */
#define TMPFS_SIZE "size=64m"

static uint64_t ms_since(uint64_t t0_ns)
{
    return (tu_now_ns() - t0_ns) / 1000000;
}

static void conv_make(mqstore *s, const char *conv, const char *a, const char *b)
{
    const char *const members[] = {a, b};
    mqstore_result r;
    memset(&r, 0, sizeof r);
    EXPECT_OK(mqstore_conv_create(s, conv, members, NULL, 2, NULL, &r));
    mqstore_result_clear(&r);
}

/* Append message i of `conv` from alice: client id "m<i>", payload "<i>:"
 * padded with 'x' to len bytes. */
static mqstore_err send_nth(mqstore *s, const char *conv, int i, size_t len, mqstore_result *r)
{
    char cmid[32], payload[PAYLOAD];
    snprintf(cmid, sizeof cmid, "m%d", i);
    assert_true(len <= sizeof payload);
    memset(payload, 'x', len);
    int n = snprintf(payload, len, "%d:", i);
    if (n > 0 && (size_t)n < len) payload[n] = 'x'; /* snprintf's NUL */
    mqstore_append a = {.conv = conv,
                        .sender_user = "alice",
                        .sender_device = "d1",
                        .client_msg_id = cmid,
                        .kind = MSG_KIND,
                        .payload = payload,
                        .payload_len = len};
    memset(r, 0, sizeof *r);
    return mqstore_append_msg(s, &a, r);
}

/* The i of a payload from send_nth, or -1. */
static int payload_index(const mqstore_msg *m)
{
    if (m->payload_len == 0) return -1;
    char buf[16];
    size_t n = m->payload_len < sizeof buf - 1 ? m->payload_len : sizeof buf - 1;
    memcpy(buf, m->payload, n);
    buf[n] = '\0';
    return strchr(buf, ':') ? atoi(buf) : -1;
}

/* fanout_seq without its cmocka assertion: the checkpoint's writer thread
 * calls it. */
static uint64_t writer_fanout_seq(const mqstore_result *r, const char *user)
{
    for (size_t i = 0; i < r->n_fanout; i++)
        if (strcmp(r->fanout_user[i], user) == 0) return r->fanout_inbox_seq[i];
    return 0;
}

/* The log of conv is seqs 1..head with no hole, and seq k holds message
 * index_of[k] (index_of has head + 1 entries). */
static void check_log(mqstore *s, const char *conv, uint64_t head, const int *index_of)
{
    uint64_t h = 0;
    EXPECT_OK(mqstore_conv_head(s, conv, &h));
    assert_int_equal(h, head);
    uint64_t expect = head, before = 0;
    for (int pages = 0; expect > 0 && pages < 1000; pages++) {
        mqstore_page p;
        memset(&p, 0, sizeof p);
        EXPECT_OK(mqstore_history_read(s, conv, before, 1000, &p));
        assert_true(p.n > 0);
        for (size_t i = 0; i < p.n; i++, expect--) {
            assert_int_equal(p.items[i].seq, expect);
            assert_int_equal(payload_index(&p.items[i]), index_of[expect]);
        }
        before = p.items[p.n - 1].seq;
        mqstore_page_free(&p);
    }
    assert_int_equal(expect, 0);
}

/* ---- checkpoint under concurrent writes ---------------------------------- */

#define CK_MAX 20000

typedef struct ck_writer {
    mqstore *s;
    _Atomic int stop;
    _Atomic int done;         /* appends that returned, in order */
    _Atomic uint64_t acked;   /* bob's phone cursor, after its ack returned */
    uint64_t seq[CK_MAX];     /* of append i */
    uint64_t a_inbox[CK_MAX]; /* alice's inbox_seq of append i */
    uint64_t b_inbox[CK_MAX]; /* bob's */
    int errors;
    mqstore_err first_err;
} ck_writer;

static void *ck_writer_main(void *arg)
{
    ck_writer *w = arg;
    for (int i = 0; i < CK_MAX && !atomic_load(&w->stop); i++) {
        mqstore_result r;
        mqstore_err e = send_nth(w->s, "c1", i, 64, &r);
        if (e == MQSTORE_OK) {
            w->seq[i] = r.seq;
            w->a_inbox[i] = r.inbox_seq;
            w->b_inbox[i] = writer_fanout_seq(&r, "bob");
        }
        mqstore_result_clear(&r);
        if (e == MQSTORE_OK && i % 10 == 9) {
            uint64_t stored = 0;
            e = mqstore_cursor_ack(w->s, "bob", "phone", w->b_inbox[i], &stored);
            if (e == MQSTORE_OK) atomic_store(&w->acked, stored);
        }
        if (e != MQSTORE_OK) {
            if (w->errors++ == 0) w->first_err = e;
            break;
        }
        atomic_store(&w->done, i + 1);
    }
    return NULL;
}

static void test_checkpoint_concurrent(void **state)
{
    char base[64], dir[128], ck[128];
    assert_int_equal(tu_mkdtemp(base, sizeof base, NULL, "mqstore-ckpt-"), 0);
    snprintf(dir, sizeof dir, "%s/store", base);
    snprintf(ck, sizeof ck, "%s/ckpt", base);
    mqstore_options opt;
    mqstore_options_init(&opt); /* SYNC, syncer thread: the defaults */
    mqstore *s = store_open_ok(dir, &opt);
    conv_make(s, "c1", "alice", "bob");

    ck_writer *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->s = s;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, ck_writer_main, w), 0);
    uint64_t t0 = tu_now_ns();
    while (atomic_load(&w->done) < 500 && ms_since(t0) < 20000)
        tu_sleep_ms(5);
    /* Everything that returned before the checkpoint starts. */
    uint64_t acked0 = atomic_load(&w->acked);
    int n0 = atomic_load(&w->done);
    assert_true(n0 >= 500);
    char *msg = NULL;
    EXPECT_OK(mqstore_checkpoint(s, ck, &msg));
    assert_null(msg);
    /* Let the writer go on a little after it, then stop it. */
    int n1 = atomic_load(&w->done);
    t0 = tu_now_ns();
    while (atomic_load(&w->done) < n1 + 200 && atomic_load(&w->done) < CK_MAX &&
           ms_since(t0) < 20000)
        tu_sleep_ms(5);
    atomic_store(&w->stop, 1);
    pthread_join(th, NULL);
    if (w->errors) print_error("writer: %s\n", mqstore_strerror(w->first_err));
    assert_int_equal(w->errors, 0);
    int total = atomic_load(&w->done);
    for (int i = 0; i < total; i++)
        assert_int_equal(w->seq[i], (uint64_t)i + 1);

    /* A checkpoint never goes into an existing directory. */
    EXPECT_ERR(mqstore_checkpoint(s, ck, &msg), MQSTORE_ERR_EXISTS);
    assert_non_null(msg);
    free(msg);
    EXPECT_ERR(mqstore_checkpoint(s, base, NULL), MQSTORE_ERR_EXISTS);
    char nested[160];
    snprintf(nested, sizeof nested, "%s/no/such/parent", base);
    msg = NULL;
    mqstore_err e = mqstore_checkpoint(s, nested, &msg);
    assert_int_not_equal(e, MQSTORE_OK);
    assert_non_null(msg);
    free(msg);
    EXPECT_ERR(mqstore_checkpoint(s, NULL, NULL), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_checkpoint(s, "", NULL), MQSTORE_ERR_INVAL);
    mqstore_free(s);

    /* The checkpoint is a store: it holds every append that returned before
     * the call, with the same seq and inbox entries, and some prefix of the
     * rest; the cursor at least as far as acked before. */
    mqstore_options copt;
    mqstore_options_init(&copt);
    copt.durability = MQSTORE_DURABILITY_OS;
    char mark[160];
    snprintf(mark, sizeof mark, "%s/MQSTORE-RESTORE", ck);
    assert_int_equal(access(mark, F_OK), 0); /* the checkpoint is marked */
    mqstore *c = store_open_ok(ck, &copt);
    /* Opening it raised the inbox floor (restore.c) and took the mark away. */
    /* At least 2^40 above none, and at least the clock's ms x 1024. */
    const uint64_t floor = mqstore_restore_floor(c);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t now_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    assert_true(floor >= UINT64_C(1) << 40);
    assert_true(floor >= (now_ms - 60000) * 1024 && floor <= now_ms * 1024);
    assert_int_not_equal(access(mark, F_OK), 0);
    uint64_t ih = 0;
    EXPECT_OK(mqstore_inbox_head(c, "bob", &ih));
    assert_int_equal(ih, floor - 1);
    uint64_t head = 0;
    EXPECT_OK(mqstore_conv_head(c, "c1", &head));
    assert_true(head >= (uint64_t)n0 && head <= (uint64_t)total);
    int *index_of = calloc(head + 2, sizeof *index_of);
    assert_non_null(index_of);
    for (uint64_t k = 1; k <= head; k++)
        index_of[k] = (int)k - 1;
    check_log(c, "c1", head, index_of);
    const char *users[] = {"alice", "bob"};
    for (int u = 0; u < 2; u++) {
        const uint64_t *want = u == 0 ? w->a_inbox : w->b_inbox;
        /* In pages: a read returns at most 10000 entries, and the head
         * may be above that when the writer was quick. */
        uint64_t k = 0, after = 0;
        for (int page = 0; page < 10 && k < head; page++) {
            mqstore_page p;
            memset(&p, 0, sizeof p);
            EXPECT_OK(mqstore_inbox_read(c, users[u], after, 10000, 1 << 26, &p));
            assert_true(p.n > 0);
            for (size_t i = 0; i < p.n && k < head; i++, k++) {
                assert_int_equal(p.items[i].inbox_seq, want[k]);
                assert_int_equal(p.items[i].seq, k + 1);
                assert_string_equal(p.items[i].conv, "c1");
            }
            after = p.items[p.n - 1].inbox_seq;
            mqstore_page_free(&p);
        }
        assert_int_equal(k, head);
    }
    uint64_t cur = 0;
    EXPECT_OK(mqstore_cursor_get(c, "bob", "phone", &cur));
    assert_true(cur >= acked0 && cur <= atomic_load(&w->acked));
    /* Its dedup keys came along: a retry of the first send is a duplicate. */
    mqstore_result r;
    EXPECT_OK(send_nth(c, "c1", 0, 64, &r));
    assert_int_equal(r.duplicate, 1);
    assert_int_equal(r.seq, 1);
    mqstore_result_clear(&r);
    /* And it is writable: the next seq follows its head, the next inbox
     * seqs start at the floor, above any the old store handed out. */
    EXPECT_OK(send_nth(c, "c1", CK_MAX + 1, 64, &r));
    assert_int_equal(r.duplicate, 0);
    assert_int_equal(r.seq, head + 1);
    assert_int_equal(r.inbox_seq, floor);
    assert_int_equal(writer_fanout_seq(&r, "bob"), floor);
    mqstore_result_clear(&r);
    /* Acks below the floor are fine (the device's cursor is its own). */
    EXPECT_OK(mqstore_cursor_ack(c, "bob", "phone", floor - 1, NULL));
    mqstore_free(c);
    c = store_open_ok(ck, &copt); /* no mark now: the floor stays */
    uint64_t h2 = 0;
    EXPECT_OK(mqstore_conv_head(c, "c1", &h2));
    assert_int_equal(h2, head + 1);
    assert_int_equal(mqstore_restore_floor(c), floor);
    EXPECT_OK(mqstore_inbox_head(c, "bob", &ih));
    assert_int_equal(ih, floor);
    mqstore_free(c);
    /* The marker made by hand (a copy restored again, docs/OPERATIONS.md):
     * a floor above the last one, and above every seq it handed out. */
    FILE *mf = fopen(mark, "w");
    assert_non_null(mf);
    fclose(mf);
    c = store_open_ok(ck, &copt);
    const uint64_t floor2 = mqstore_restore_floor(c);
    assert_true(floor2 >= floor + (UINT64_C(1) << 40));
    EXPECT_OK(mqstore_inbox_head(c, "bob", &ih));
    assert_int_equal(ih, floor2 - 1);
    mqstore_free(c);

    /* The source store kept everything. */
    s = store_open_ok(dir, &opt);
    assert_int_equal(mqstore_restore_floor(s), 0); /* never restored */
    free(index_of);
    index_of = calloc((size_t)total + 2, sizeof *index_of);
    assert_non_null(index_of);
    for (int k = 1; k <= total; k++)
        index_of[k] = k - 1;
    check_log(s, "c1", (uint64_t)total, index_of);
    mqstore_free(s);
    free(index_of);
    free(w);
    tu_rm_rf(base);
}

/* ---- a real full disk ------------------------------------------------------ */

typedef struct disk {
    char mnt[64];
    char store[128];
    char filler[128];
    int mounted;
    int mount_errno;
    mqstore_options opt;
    mqstore *s;
    int *index_of; /* message index by seq */
    uint64_t head; /* last seq that returned OK */
    _Atomic uint64_t cb_max;
    _Atomic int cb_regress;
} disk;

static void disk_on_durable(void *data, uint64_t ticket)
{
    disk *d = data;
    if (ticket < atomic_load(&d->cb_max)) atomic_store(&d->cb_regress, 1);
    atomic_store(&d->cb_max, ticket);
}

static int disk_setup(void **state)
{
    disk *d = calloc(1, sizeof *d);
    if (!d) return -1;
    if (tu_mkdtemp(d->mnt, sizeof d->mnt, NULL, "mqstore-disk-") != 0) {
        free(d);
        return -1;
    }
    snprintf(d->store, sizeof d->store, "%s/store", d->mnt);
    snprintf(d->filler, sizeof d->filler, "%s/filler", d->mnt);
    if (mount("tmpfs", d->mnt, "tmpfs", 0, TMPFS_SIZE) == 0)
        d->mounted = 1;
    else
        d->mount_errno = errno;
    d->index_of = calloc(MAX_APPENDS + 2, sizeof *d->index_of);
    if (!d->index_of) return -1;
    mqstore_options_init(&d->opt);
    /* SYNC with the syncer thread fsyncing on request only: a failing
     * write never meets an fsync under way, which Debian's RocksDB (built
     * with assertions) turns into an abort (ops.c, "the free-space
     * reserve"; the reserve test below runs the fsync-whenever driver). */
    d->opt.sync_driver = MQSTORE_SYNC_REQUEST;
    d->opt.resume_interval_ms = 0;
    d->opt.on_durable = disk_on_durable;
    d->opt.on_durable_data = d;
    *state = d;
    return 0;
}

static int disk_teardown(void **state)
{
    disk *d = *state;
    if (!d) return 0;
    if (d->s) mqstore_free(d->s);
    if (d->mounted && umount(d->mnt) != 0) umount2(d->mnt, MNT_DETACH);
    tu_rm_rf(d->mnt);
    free(d->index_of);
    free(d);
    *state = NULL;
    return 0;
}

/* Skip (with the reason) where a tmpfs cannot be mounted. */
static void need_tmpfs(disk *d)
{
    if (d->mounted) return;
    print_message("    skipped: cannot mount a tmpfs on %s (%s); the full-disk tests need root\n",
                  d->mnt, strerror(d->mount_errno));
    skip();
}

/* Fill the filesystem with a file at path: 1 MiB writes, then smaller ones,
 * until nothing more fits. Returns the bytes written. */
static long fill_disk(const char *path)
{
    static char buf[1 << 20];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    long total = 0;
    size_t chunk = sizeof buf;
    for (int i = 0; i < 100000; i++) {
        ssize_t n = write(fd, buf, chunk);
        if (n > 0) {
            total += n;
            continue;
        }
        if (chunk == 1) break;
        chunk = chunk > 4096 ? chunk / 16 : 1;
    }
    close(fd);
    return total;
}

/* Append messages (index = seq - 1 for the ones that go in) until one
 * fails; that one's error. The failed message's index is d->head. */
static mqstore_err append_until_failure(disk *d)
{
    for (int i = 0; i < MAX_APPENDS; i++) {
        mqstore_result r;
        mqstore_err e = send_nth(d->s, "c1", (int)d->head, PAYLOAD, &r);
        if (e == MQSTORE_OK) {
            assert_int_equal(r.duplicate, 0);
            assert_int_equal(r.seq, d->head + 1);
            d->head = r.seq;
            d->index_of[r.seq] = (int)r.seq - 1;
        }
        mqstore_result_clear(&r);
        if (e != MQSTORE_OK) return e;
    }
    fail_msg("%d appends fit on the small disk", MAX_APPENDS);
    return MQSTORE_OK;
}

/* Append n more that must succeed, with consecutive seqs. */
static void append_ok(disk *d, int n)
{
    for (int i = 0; i < n; i++) {
        mqstore_result r;
        EXPECT_OK(send_nth(d->s, "c1", (int)d->head, PAYLOAD, &r));
        assert_int_equal(r.duplicate, 0);
        assert_int_equal(r.seq, d->head + 1);
        d->head = r.seq;
        d->index_of[r.seq] = (int)r.seq - 1;
        mqstore_result_clear(&r);
    }
}

/* Open the store on the tmpfs, write a first batch, fill the disk, write
 * until an append fails, and check the failed state: the error, READONLY
 * for every later write, reads, health, no durability meanwhile. */
static void fail_store(disk *d)
{
    d->s = store_open_ok(d->store, &d->opt);
    conv_make(d->s, "c1", "alice", "bob");
    EXPECT_OK(mqstore_device_touch(d->s, "bob", "phone"));
    append_ok(d, 200);
    EXPECT_OK(mqstore_sync(d->s));
    long filled = fill_disk(d->filler);
    assert_true(filled > 0);
    mqstore_err e = append_until_failure(d);
    if (e != MQSTORE_ERR_NOSPC && e != MQSTORE_ERR_IO)
        fail_msg("append on a full disk: %s, want NOSPC or IO", mqstore_strerror(e));
    assert_true(d->head > 200);
    print_message("    full after %llu appends (%ld filler bytes): %s\n",
                  (unsigned long long)d->head, filled, mqstore_strerror(e));
    uint64_t last = mqstore_last_ticket(d->s);
    uint64_t durable = mqstore_durable(d->s);
    assert_true(durable <= last);

    /* Every write is refused now, none takes a ticket. */
    mqstore_result r;
    EXPECT_ERR(send_nth(d->s, "c1", (int)d->head, 10, &r), MQSTORE_ERR_READONLY);
    mqstore_result_clear(&r);
    EXPECT_ERR(mqstore_cursor_ack(d->s, "bob", "phone", 1, NULL), MQSTORE_ERR_READONLY);
    EXPECT_ERR(mqstore_device_touch(d->s, "bob", "tablet"), MQSTORE_ERR_READONLY);
    EXPECT_ERR(mqstore_user_revoke_set(d->s, "bob", 5), MQSTORE_ERR_READONLY);
    EXPECT_ERR(mqstore_checkpoint(d->s, "/tmp/never-made-ckpt", NULL), MQSTORE_ERR_READONLY);
    assert_int_equal(mqstore_last_ticket(d->s), last);

    /* Reads work. */
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_msg_get(d->s, "c1", 1, &p));
    assert_int_equal(payload_index(&p.items[0]), 0);
    mqstore_page_free(&p);
    EXPECT_OK(mqstore_inbox_read(d->s, "bob", 0, 10, 1 << 20, &p));
    assert_int_equal(p.n, 10);
    mqstore_page_free(&p);
    uint64_t h = 0;
    EXPECT_OK(mqstore_conv_head(d->s, "c1", &h));
    assert_int_equal(h, d->head);

    mqstore_health hl;
    mqstore_health_get(d->s, &hl);
    assert_int_equal(hl.writable, 0);
    assert_int_equal(hl.last_error, e);
    assert_true(hl.failed_ms > 0);
    assert_true(hl.failures >= 1);
    assert_int_equal(hl.resumes, 0);

    /* The syncer makes nothing durable while writes are refused (and does
     * not crash on the failed WAL; an fsync that began before the failure
     * may still publish what it covered); a manual fsync is refused. */
    EXPECT_ERR(mqstore_sync(d->s), MQSTORE_ERR_READONLY);
    tu_sleep_ms(200);
    durable = mqstore_durable(d->s);
    tu_sleep_ms(300);
    assert_int_equal(mqstore_durable(d->s), durable);
    assert_true(durable <= last);
}

/* After recovery: everything durable again, more writes, then a reopen
 * shows every append that returned OK once, with consecutive seqs, and
 * nothing of the failed one. */
static void check_recovered(disk *d, int failed_index)
{
    mqstore_health hl;
    mqstore_health_get(d->s, &hl);
    assert_int_equal(hl.writable, 1);
    assert_int_equal(hl.failed_ms, 0);
    assert_int_equal(hl.resumes, 1);
    assert_true(hl.resume_attempts >= 1);
    assert_true(hl.last_error == MQSTORE_ERR_NOSPC || hl.last_error == MQSTORE_ERR_IO);
    /* The syncer covers the tickets written before the failure. */
    uint64_t t0 = tu_now_ns();
    while ((mqstore_durable(d->s) < mqstore_last_ticket(d->s) ||
            atomic_load(&d->cb_max) < mqstore_last_ticket(d->s)) &&
           ms_since(t0) < 10000)
        tu_sleep_ms(10);
    assert_int_equal(mqstore_durable(d->s), mqstore_last_ticket(d->s));
    assert_int_equal(atomic_load(&d->cb_max), mqstore_last_ticket(d->s));
    assert_int_equal(atomic_load(&d->cb_regress), 0);

    /* The failed append's client id is unknown: nothing of it went in. Its
     * retry is a new message with the next seq. */
    assert_int_equal(failed_index, (int)d->head);
    append_ok(d, 100);
    EXPECT_OK(mqstore_cursor_ack(d->s, "bob", "phone", 3, NULL));
    EXPECT_OK(mqstore_sync(d->s));
    mqstore_free(d->s);
    d->s = store_open_ok(d->store, &d->opt);
    check_log(d->s, "c1", d->head, d->index_of);
    uint64_t ih = 0;
    EXPECT_OK(mqstore_inbox_head(d->s, "bob", &ih));
    assert_int_equal(ih, d->head);
    uint64_t cur = 0;
    EXPECT_OK(mqstore_cursor_get(d->s, "bob", "phone", &cur));
    assert_int_equal(cur, 3);
    /* Dedup survived: a retry of message 0 is a duplicate of seq 1. */
    mqstore_result r;
    EXPECT_OK(send_nth(d->s, "c1", 0, PAYLOAD, &r));
    assert_int_equal(r.duplicate, 1);
    assert_int_equal(r.seq, 1);
    mqstore_result_clear(&r);
}

/* (a) mqstore_resume(): refused while the disk is full, OK once there is
 * room. */
static void test_full_disk_resume(void **state)
{
    disk *d = *state;
    need_tmpfs(d);
    fail_store(d);
    int failed_index = (int)d->head;
    mqstore_err e = mqstore_resume(d->s);
    if (e == MQSTORE_OK) fail_msg("resume succeeded on a full disk");
    mqstore_health hl;
    mqstore_health_get(d->s, &hl);
    assert_int_equal(hl.writable, 0);
    assert_true(hl.resume_attempts >= 1);
    mqstore_result r;
    EXPECT_ERR(send_nth(d->s, "c1", (int)d->head, 10, &r), MQSTORE_ERR_READONLY);
    mqstore_result_clear(&r);

    assert_int_equal(unlink(d->filler), 0);
    /* RocksDB's own recovery runs every 5 s; each call waits ~6 s for it. */
    e = MQSTORE_ERR_IO;
    uint64_t t0 = tu_now_ns();
    for (int i = 0; i < 4 && e != MQSTORE_OK; i++)
        e = mqstore_resume(d->s);
    EXPECT_OK(e);
    print_message("    resumed %llu ms after the filler went\n", (unsigned long long)ms_since(t0));
    EXPECT_OK(mqstore_resume(d->s)); /* writable already */
    check_recovered(d, failed_index);
}

/* (b) The resumer thread makes the store writable by itself. */
static void test_full_disk_auto_resume(void **state)
{
    disk *d = *state;
    need_tmpfs(d);
    d->opt.resume_interval_ms = 50;
    fail_store(d);
    int failed_index = (int)d->head;
    /* Still full: the resumer tries, in vain. */
    tu_sleep_ms(500);
    mqstore_health hl;
    mqstore_health_get(d->s, &hl);
    assert_int_equal(hl.writable, 0);
    assert_true(hl.resume_attempts >= 2);
    assert_int_equal(unlink(d->filler), 0);
    uint64_t t0 = tu_now_ns();
    do {
        tu_sleep_ms(20);
        mqstore_health_get(d->s, &hl);
    } while (!hl.writable && ms_since(t0) < 30000);
    assert_int_equal(hl.writable, 1);
    print_message("    resumed by itself %llu ms after the filler went (%llu attempts)\n",
                  (unsigned long long)ms_since(t0), (unsigned long long)hl.resume_attempts);
    check_recovered(d, failed_index);
}

/* (c) With a free-space reserve the store stops writes before RocksDB
 * meets the full disk: NOSPC, then READONLY; fsyncs go on (the syncer
 * fsyncing whenever anything is undurable, concurrently with the writes,
 * as a broker's would); once the filler goes the resumer takes writes
 * again by itself, no RocksDB resume involved. */
static void test_full_disk_reserve(void **state)
{
    disk *d = *state;
    need_tmpfs(d);
    d->opt.sync_driver = MQSTORE_SYNC_THREAD;
    d->opt.min_free_bytes = 8u << 20;
    d->opt.resume_interval_ms = 50;
    d->s = store_open_ok(d->store, &d->opt);
    conv_make(d->s, "c1", "alice", "bob");
    append_ok(d, 100);
    long filled = fill_disk(d->filler);
    assert_true(filled > 0);
    /* Free what the reserve and a little more need, so writes go on a
     * while before the reserve stops them. */
    assert_int_equal(truncate(d->filler, filled - (10 << 20)), 0);
    mqstore_err e = append_until_failure(d);
    EXPECT_ERR(e, MQSTORE_ERR_NOSPC);
    int failed_index = (int)d->head;
    mqstore_result r;
    EXPECT_ERR(send_nth(d->s, "c1", (int)d->head, 10, &r), MQSTORE_ERR_READONLY);
    mqstore_result_clear(&r);
    mqstore_health hl;
    mqstore_health_get(d->s, &hl);
    assert_int_equal(hl.writable, 0);
    assert_int_equal(hl.last_error, MQSTORE_ERR_NOSPC);
    /* RocksDB never failed: what was written becomes durable. */
    uint64_t t0 = tu_now_ns();
    while (mqstore_durable(d->s) < mqstore_last_ticket(d->s) && ms_since(t0) < 10000)
        tu_sleep_ms(10);
    assert_int_equal(mqstore_durable(d->s), mqstore_last_ticket(d->s));
    EXPECT_ERR(mqstore_resume(d->s), MQSTORE_ERR_NOSPC); /* still too little room */
    assert_int_equal(unlink(d->filler), 0);
    t0 = tu_now_ns();
    do {
        tu_sleep_ms(20);
        mqstore_health_get(d->s, &hl);
    } while (!hl.writable && ms_since(t0) < 10000);
    assert_int_equal(hl.writable, 1);
    assert_int_equal(hl.resumes, 1);
    assert_int_equal(failed_index, (int)d->head);
    append_ok(d, 100);
    EXPECT_OK(mqstore_sync(d->s));
    mqstore_free(d->s);
    d->s = store_open_ok(d->store, &d->opt);
    check_log(d->s, "c1", d->head, d->index_of);
}

/* The case RocksDB 7.8 cannot resume from is a write that fails while
 * every memtable is empty (RocksDB then keeps the failed WAL). A reopen
 * flushes every memtable; the store's anchor write after it (ops.c,
 * "Recovery") keeps the first failing write after a reopen on a nearly
 * full disk resumable: resume works once there is room, no reopen. */
static void test_full_disk_after_reopen(void **state)
{
    disk *d = *state;
    need_tmpfs(d);
    d->s = store_open_ok(d->store, &d->opt);
    conv_make(d->s, "c1", "alice", "bob");
    append_ok(d, 100);
    mqstore_free(d->s);
    d->s = NULL;
    /* Reopen with little room: RocksDB replays the WAL and flushes it
     * (every memtable is empty afterwards); the anchor fits. Then take
     * the rest. */
    char filler2[160];
    snprintf(filler2, sizeof filler2, "%s/filler2", d->mnt);
    long filled = fill_disk(d->filler);
    assert_true(filled > (1 << 20));
    assert_int_equal(truncate(d->filler, filled - (1 << 20)), 0);
    d->s = store_open_ok(d->store, &d->opt);
    fill_disk(filler2);
    mqstore_result r;
    mqstore_err e = MQSTORE_OK;
    for (int i = 0; i < MAX_APPENDS - 200 && e == MQSTORE_OK; i++) {
        e = send_nth(d->s, "c1", (int)d->head, PAYLOAD, &r);
        if (e == MQSTORE_OK) {
            assert_int_equal(r.seq, d->head + 1);
            d->head = r.seq;
            d->index_of[r.seq] = (int)r.seq - 1;
        }
        mqstore_result_clear(&r);
    }
    assert_true(e == MQSTORE_ERR_NOSPC || e == MQSTORE_ERR_IO);
    EXPECT_ERR(send_nth(d->s, "c1", (int)d->head, PAYLOAD, &r), MQSTORE_ERR_READONLY);
    mqstore_result_clear(&r);
    mqstore_page p;
    memset(&p, 0, sizeof p);
    EXPECT_OK(mqstore_msg_get(d->s, "c1", d->head, &p));
    mqstore_page_free(&p);
    assert_int_equal(unlink(d->filler), 0);
    assert_int_equal(unlink(filler2), 0);
    /* Room again: a resume, no reopen. */
    uint64_t t0 = tu_now_ns();
    do {
        e = mqstore_resume(d->s);
    } while (e != MQSTORE_OK && ms_since(t0) < 30000);
    EXPECT_OK(e);
    append_ok(d, 10);
    mqstore_free(d->s);
    d->s = store_open_ok(d->store, &d->opt);
    check_log(d->s, "c1", d->head, d->index_of);
}

/* ---- health, options, the resumer's lifetime ------------------------------- */

static void test_health_and_options(void **state)
{
    char base[64];
    assert_int_equal(tu_mkdtemp(base, sizeof base, NULL, "mqstore-health-"), 0);
    mqstore_options opt;
    mqstore_options_init(&opt);
    assert_int_equal(opt.resume_interval_ms, 5000);
    opt.resume_interval_ms = -1;
    mqstore *s = NULL;
    EXPECT_ERR(mqstore_open(base, &opt, &s, NULL), MQSTORE_ERR_INVAL);
    assert_null(s);
    opt.resume_interval_ms = 5000;
    /* The resumer sleeps on a condition variable: closing joins it at once. */
    for (int i = 0; i < 3; i++) {
        s = store_open_ok(base, &opt);
        mqstore_health h;
        memset(&h, 0xff, sizeof h);
        mqstore_health_get(s, &h);
        assert_int_equal(h.writable, 1);
        assert_int_equal(h.last_error, MQSTORE_OK);
        assert_int_equal(h.failed_ms, 0);
        assert_int_equal(h.failures, 0);
        assert_int_equal(h.resumes, 0);
        assert_int_equal(h.resume_attempts, 0);
        EXPECT_OK(mqstore_resume(s)); /* writable: nothing to do */
        mqstore_health_get(s, &h);
        assert_int_equal(h.resume_attempts, 0);
        uint64_t t0 = tu_now_ns();
        mqstore_free(s);
        assert_true(ms_since(t0) < 1000);
    }
    opt.resume_interval_ms = 0; /* no thread */
    s = store_open_ok(base, &opt);
    EXPECT_OK(mqstore_resume(s));
    mqstore_free(s);
    EXPECT_ERR(mqstore_resume(NULL), MQSTORE_ERR_INVAL);
    tu_rm_rf(base);
}

/* ---- devices and revocation ------------------------------------------------ */

static _Atomic int64_t fake_now = T0;

static int64_t fake_clock(void *data)
{
    (void)data;
    return atomic_load(&fake_now);
}

static void expect_devices(mqstore *s, const char *user, const char *after, size_t limit,
                           const char *const *want, size_t n_want, int more)
{
    mqstore_device_list l;
    EXPECT_OK(mqstore_user_devices(s, user, after, limit, &l));
    assert_int_equal(l.n, n_want);
    assert_int_equal(l.more, more);
    for (size_t i = 0; i < n_want; i++)
        assert_string_equal(l.items[i].device, want[i]);
    mqstore_device_list_free(&l);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
}

static void test_devices_and_revocation(void **state)
{
    char base[64];
    assert_int_equal(tu_mkdtemp(base, sizeof base, NULL, "mqstore-devices-"), 0);
    mqstore_options opt;
    mqstore_options_init(&opt);
    opt.durability = MQSTORE_DURABILITY_OS;
    opt.clock_ms = fake_clock;
    atomic_store(&fake_now, T0);
    mqstore *s = store_open_ok(base, &opt);
    conv_make(s, "c1", "alice", "bob");
    for (int i = 0; i < 5; i++) {
        mqstore_result r;
        EXPECT_OK(send_nth(s, "c1", i, 16, &r));
        mqstore_result_clear(&r);
    }
    EXPECT_OK(mqstore_device_touch(s, "alice", "d2"));
    EXPECT_OK(mqstore_device_touch(s, "alice", "d1"));
    EXPECT_OK(mqstore_device_touch(s, "alice", "d3"));
    EXPECT_OK(mqstore_device_touch(s, "alice2", "z")); /* a longer user id */
    EXPECT_OK(mqstore_device_touch(s, "bob", "a"));
    atomic_store(&fake_now, T0 + 1000);
    EXPECT_OK(mqstore_cursor_ack(s, "alice", "d1", 4, NULL));

    mqstore_device_list l;
    EXPECT_OK(mqstore_user_devices(s, "alice", NULL, 10, &l));
    assert_int_equal(l.n, 3);
    assert_int_equal(l.more, 0);
    assert_string_equal(l.items[0].device, "d1");
    assert_int_equal(l.items[0].cursor, 4);
    assert_int_equal(l.items[0].last_seen_ms, T0 + 1000);
    assert_string_equal(l.items[1].device, "d2");
    assert_int_equal(l.items[1].cursor, 0);
    assert_int_equal(l.items[1].last_seen_ms, T0);
    assert_string_equal(l.items[2].device, "d3");
    mqstore_device_list_free(&l);
    mqstore_device_list_free(&l); /* twice is fine */
    mqstore_device_list_free(NULL);

    const char *all[] = {"d1", "d2", "d3"};
    expect_devices(s, "alice", "", 3, all, 3, 0);
    expect_devices(s, "alice", NULL, 2, all, 2, 1);
    expect_devices(s, "alice", "d2", 2, all + 2, 1, 0);
    expect_devices(s, "alice", "d1", 1, all + 1, 1, 1);
    expect_devices(s, "alice", "d3", 5, NULL, 0, 0);
    expect_devices(s, "alice", "a", 5, all, 3, 0);
    expect_devices(s, "alice", "d1x", 5, all + 1, 2, 0); /* between d1 and d2 */
    const char *z[] = {"z"};
    expect_devices(s, "alice2", NULL, 5, z, 1, 0);
    expect_devices(s, "carol", NULL, 5, NULL, 0, 0);
    /* A forgotten device is gone from the list. */
    EXPECT_OK(mqstore_device_forget(s, "alice", "d2"));
    const char *left[] = {"d1", "d3"};
    expect_devices(s, "alice", NULL, 5, left, 2, 0);

    /* Bad arguments: INVAL, and the list is left empty. */
    EXPECT_ERR(mqstore_user_devices(s, "alice", NULL, 10, NULL), MQSTORE_ERR_INVAL);
    memset(&l, 0x5a, sizeof l);
    EXPECT_ERR(mqstore_user_devices(s, "", NULL, 10, &l), MQSTORE_ERR_INVAL);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
    EXPECT_ERR(mqstore_user_devices(s, NULL, NULL, 10, &l), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_devices(s, "bad user", NULL, 10, &l), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_devices(s, "alice", "bad/id", 10, &l), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_devices(s, "alice", NULL, 0, &l), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_devices(s, "alice", NULL, 10001, &l), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_devices(NULL, "alice", NULL, 10, &l), MQSTORE_ERR_INVAL);
    EXPECT_OK(mqstore_user_devices(s, "alice", NULL, 10000, &l));
    assert_int_equal(l.n, 2);
    mqstore_device_list_free(&l);

    /* Revocation: 0 when none, set, replace, clear, per user, kept. */
    int64_t before = -1;
    EXPECT_OK(mqstore_user_revoke_get(s, "alice", &before));
    assert_int_equal(before, 0);
    EXPECT_OK(mqstore_user_revoke_set(s, "alice", T0 + 5));
    EXPECT_OK(mqstore_user_revoke_get(s, "alice", &before));
    assert_int_equal(before, T0 + 5);
    EXPECT_OK(mqstore_user_revoke_set(s, "alice", T0 + 9));
    EXPECT_OK(mqstore_user_revoke_get(s, "alice", &before));
    assert_int_equal(before, T0 + 9);
    EXPECT_OK(mqstore_user_revoke_get(s, "alice2", &before));
    assert_int_equal(before, 0);
    EXPECT_OK(mqstore_user_revoke_set(s, "alice", 0));
    EXPECT_OK(mqstore_user_revoke_get(s, "alice", &before));
    assert_int_equal(before, 0);
    EXPECT_OK(mqstore_user_revoke_set(s, "alice", 0)); /* clearing nothing is fine */
    EXPECT_OK(mqstore_user_revoke_set(s, "bob", INT64_MAX));
    EXPECT_ERR(mqstore_user_revoke_set(s, "alice", -1), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_revoke_set(s, "", 1), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_revoke_set(s, NULL, 1), MQSTORE_ERR_INVAL);
    EXPECT_ERR(mqstore_user_revoke_set(NULL, "alice", 1), MQSTORE_ERR_INVAL);
    before = 7;
    EXPECT_ERR(mqstore_user_revoke_get(s, "bad user", &before), MQSTORE_ERR_INVAL);
    assert_int_equal(before, 0);
    EXPECT_ERR(mqstore_user_revoke_get(s, "alice", NULL), MQSTORE_ERR_INVAL);
    mqstore_free(s);
    s = store_open_ok(base, &opt);
    EXPECT_OK(mqstore_user_revoke_get(s, "bob", &before));
    assert_int_equal(before, INT64_MAX);
    EXPECT_OK(mqstore_user_revoke_get(s, "alice", &before));
    assert_int_equal(before, 0);
    expect_devices(s, "alice", NULL, 5, left, 2, 0);
    mqstore_free(s);
    tu_rm_rf(base);
}

int main(void)
{
#define DISK(fn) cmocka_unit_test_setup_teardown(fn, disk_setup, disk_teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_and_options),
        cmocka_unit_test(test_devices_and_revocation),
        cmocka_unit_test(test_checkpoint_concurrent),
        DISK(test_full_disk_resume),
        DISK(test_full_disk_auto_resume),
        DISK(test_full_disk_after_reopen),
        DISK(test_full_disk_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
