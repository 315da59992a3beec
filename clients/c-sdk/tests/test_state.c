/* test_state — the SDK's SQLite state layer (src/state.c): cursor and
 * per-conversation watermarks survive a reopen only when committed, the
 * outbox keeps order and ids, client message ids never repeat (also not
 * after the file is recreated), a rolled back transaction leaves nothing,
 * edits and deletes keep their target seqs, a file of another schema
 * version is refused, and only durable transactions and mqc_state_sync()
 * commit with synchronous=FULL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "state.h"

#include <sqlite3.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct fx {
    char dir[64];
    char path[128];
    mqc_state *st;
} fx;

static void rm_files(fx *f)
{
    char p[160];
    unlink(f->path);
    snprintf(p, sizeof(p), "%s-wal", f->path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", f->path);
    unlink(p);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/mqchat-sdk-state-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/u.d.sqlite", f->dir);
    char *err = NULL;
    assert_int_equal(mqc_state_open(f->path, &f->st, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    mqc_state_close(f->st);
    rm_files(f);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void reopen(fx *f)
{
    mqc_state_close(f->st);
    char *err = NULL;
    assert_int_equal(mqc_state_open(f->path, &f->st, &err), 0);
}

static void test_cursor_and_convs(void **state)
{
    fx *f = *state;
    uint64_t c = 99, h, p;
    assert_int_equal(mqc_state_cursor(f->st, &c), 0);
    assert_int_equal(c, 0);
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_set_cursor(f->st, 7), 0);
    assert_int_equal(mqc_state_set_handed(f->st, "d:a:b", 5), 0);
    assert_int_equal(mqc_state_set_handed(f->st, "d:a:b", 3), 0); /* never goes back */
    assert_int_equal(mqc_state_set_position(f->st, "g:1", 10), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    /* A rolled back batch leaves nothing. */
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_set_cursor(f->st, 9), 0);
    assert_int_equal(mqc_state_set_handed(f->st, "d:a:b", 8), 0);
    mqc_state_rollback(f->st);
    reopen(f);
    assert_int_equal(mqc_state_cursor(f->st, &c), 0);
    assert_int_equal(c, 7);
    assert_int_equal(mqc_state_conv(f->st, "d:a:b", &h, &p), 0);
    assert_int_equal(h, 5);
    assert_int_equal(p, 0);
    assert_int_equal(mqc_state_conv(f->st, "g:1", &h, &p), 0);
    assert_int_equal(h, 0);
    assert_int_equal(p, 10);
    assert_int_equal(mqc_state_conv(f->st, "g:unknown", &h, &p), 0);
    assert_int_equal(h + p, 0);
}

static void test_outbox(void **state)
{
    fx *f = *state;
    char ids[3][129];
    const char *convs[3] = {"d:a:b", "g:1", "d:a:b"};
    for (int i = 0; i < 3; i++) {
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        assert_int_equal(mqc_state_begin(f->st), 0);
        assert_int_equal(mqc_state_new_cmid(f->st, ids[i], sizeof(ids[i])), 0);
        assert_int_equal(mqc_state_outbox_add(f->st, ids[i], convs[i], "text/plain", body, 2), 0);
        assert_int_equal(mqc_state_commit(f->st), 0);
    }
    assert_string_not_equal(ids[0], ids[1]);
    assert_int_equal(mqc_state_outbox_count(f->st), 3);
    reopen(f);
    mqc_outbox_entry *e;
    size_t n;
    assert_int_equal(mqc_state_outbox_list(f->st, &e, &n), 0);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(e[i].cmid, ids[i]);
        assert_string_equal(e[i].conv, convs[i]);
        assert_int_equal(e[i].body_len, 2);
        assert_int_equal(e[i].body[1], '0' + i);
    }
    mqc_outbox_free(e, n);
    assert_int_equal(mqc_state_outbox_has(f->st, ids[1]), 1);
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_outbox_remove(f->st, ids[1]), 1);
    assert_int_equal(mqc_state_outbox_remove(f->st, ids[1]), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    assert_int_equal(mqc_state_outbox_has(f->st, ids[1]), 0);
    assert_int_equal(mqc_state_outbox_count(f->st), 2);
    /* An id made in a rolled back transaction is not reused either way,
     * but the counter does not move. */
    char a[129], b[129];
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_new_cmid(f->st, a, sizeof(a)), 0);
    mqc_state_rollback(f->st);
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_new_cmid(f->st, b, sizeof(b)), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    assert_string_equal(a, b); /* never published: safe */
    /* A recreated file gets a new nonce: ids never repeat. */
    mqc_state_close(f->st);
    rm_files(f);
    char *err = NULL;
    assert_int_equal(mqc_state_open(f->path, &f->st, &err), 0);
    char c1[129];
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_new_cmid(f->st, c1, sizeof(c1)), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    assert_string_not_equal(c1, ids[0]);
    assert_int_equal(mqc_state_outbox_count(f->st), 0);
}

static void test_empty_body(void **state)
{
    fx *f = *state;
    char id[129];
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_new_cmid(f->st, id, sizeof(id)), 0);
    assert_int_equal(mqc_state_outbox_add(f->st, id, "d:a:b", "", NULL, 0), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    mqc_outbox_entry *e;
    size_t n;
    assert_int_equal(mqc_state_outbox_list(f->st, &e, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].body_len, 0);
    mqc_outbox_free(e, n);
}

static void test_edit_delete_and_version(void **state)
{
    fx *f = *state;
    char id[129];
    mqc_outbox_entry in = {.cmid = id,
                           .conv = "d:a:b",
                           .content_type = "text/plain",
                           .body = (unsigned char *)"new",
                           .body_len = 3,
                           .edit_seq = 4};
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_new_cmid(f->st, id, sizeof(id)), 0);
    assert_int_equal(mqc_state_outbox_put(f->st, &in), 0);
    in.edit_seq = 0;
    in.delete_seq = 5;
    in.body_len = 0;
    assert_int_equal(mqc_state_new_cmid(f->st, id, sizeof(id)), 0);
    assert_int_equal(mqc_state_outbox_put(f->st, &in), 0);
    in.delete_seq = 0;
    in.reply_to_seq = 2;
    assert_int_equal(mqc_state_new_cmid(f->st, id, sizeof(id)), 0);
    assert_int_equal(mqc_state_outbox_put(f->st, &in), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    reopen(f);
    mqc_outbox_entry *e;
    size_t n;
    assert_int_equal(mqc_state_outbox_list(f->st, &e, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(e[0].edit_seq, 4);
    assert_int_equal(e[0].delete_seq, 0);
    assert_int_equal(e[0].body_len, 3);
    assert_int_equal(e[1].delete_seq, 5);
    assert_int_equal(e[1].edit_seq, 0);
    assert_int_equal(e[2].reply_to_seq, 2);
    mqc_outbox_free(e, n);
    /* Another schema version: refused with a message that says so. */
    sqlite3 *db = mqc_state_db(f->st);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 7", NULL, NULL, NULL), SQLITE_OK);
    mqc_state_close(f->st);
    f->st = NULL;
    char *err = NULL;
    assert_int_equal(mqc_state_open(f->path, &f->st, &err), -1);
    assert_non_null(err);
    assert_non_null(strstr(err, "schema version 7"));
    free(err);
    /* A file of version 1 (no user_version, the old tables) too. */
    rm_files(f);
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE meta(k TEXT PRIMARY KEY, v)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    err = NULL;
    assert_int_equal(mqc_state_open(f->path, &f->st, &err), -1);
    assert_non_null(strstr(err, "schema version 1"));
    free(err);
    assert_null(f->st);
}

static int synchronous(fx *f)
{
    sqlite3_stmt *s;
    int v = -1;
    assert_int_equal(sqlite3_prepare_v2(mqc_state_db(f->st), "PRAGMA synchronous", -1, &s, NULL),
                     SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* 1 is NORMAL (commits survive the process, fsync at checkpoints), 2 FULL. */
static void test_durability_levels(void **state)
{
    fx *f = *state;
    uint64_t c = 0;
    assert_int_equal(synchronous(f), 1);
    assert_int_equal(mqc_state_begin_durable(f->st), 0);
    assert_int_equal(synchronous(f), 2);
    assert_int_equal(mqc_state_set_cursor(f->st, 5), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    assert_int_equal(synchronous(f), 1);
    assert_int_equal(mqc_state_begin_durable(f->st), 0);
    assert_int_equal(mqc_state_set_cursor(f->st, 6), 0);
    mqc_state_rollback(f->st);
    assert_int_equal(synchronous(f), 1);
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(synchronous(f), 1);
    assert_int_equal(mqc_state_set_cursor(f->st, 7), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    /* The sync must write a frame (SQLite syncs nothing for a transaction
     * that changed no page): the WAL grows. */
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", f->path);
    struct stat before, after;
    assert_int_equal(stat(wal, &before), 0);
    assert_int_equal(mqc_state_sync(f->st), 0);
    assert_int_equal(stat(wal, &after), 0);
    assert_true(after.st_size > before.st_size);
    assert_int_equal(synchronous(f), 1);
    reopen(f);
    assert_int_equal(mqc_state_cursor(f->st, &c), 0);
    assert_int_equal(c, 7);
}

/* Read marks made offline: the highest per conversation, taken once. */
static void test_read_marks(void **state)
{
    fx *f = *state;
    mqc_read_mark *m;
    size_t n;
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_read_mark_put(f->st, "d:a:b", 5), 0);
    assert_int_equal(mqc_state_read_mark_put(f->st, "d:a:b", 3), 0); /* lower: stays 5 */
    assert_int_equal(mqc_state_read_mark_put(f->st, "g:x", 9), 0);
    assert_int_equal(mqc_state_set_cursor(f->st, 4), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    reopen(f);
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_read_marks_take(f->st, &m, &n), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].conv, "d:a:b");
    assert_int_equal(m[0].seq, 5);
    assert_string_equal(m[1].conv, "g:x");
    assert_int_equal(m[1].seq, 9);
    mqc_read_marks_free(m, n);
    uint64_t c = 0;
    assert_int_equal(mqc_state_cursor(f->st, &c), 0);
    assert_int_equal(c, 4); /* the other meta rows stay */
    assert_int_equal(mqc_state_begin(f->st), 0);
    assert_int_equal(mqc_state_read_marks_take(f->st, &m, &n), 0);
    assert_int_equal(mqc_state_commit(f->st), 0);
    assert_int_equal(n, 0); /* taken once */
    mqc_read_marks_free(m, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cursor_and_convs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durability_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_marks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit_delete_and_version, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
