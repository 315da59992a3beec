/* state.c — the SDK's SQLite state (see state.h for the tables).
 *
 * WAL mode with synchronous=NORMAL: a commit is in the WAL file when it
 * returns, so it survives the app's process dying at any moment (kill -9),
 * but only a durable transaction (mqc_state_begin_durable: synchronous=FULL
 * for its commit) or mqc_state_sync() fsyncs, which also makes every
 * earlier commit durable (the WAL is written in order). A power cut can
 * only lose a suffix of the commits since the last fsync, all of it
 * together. The SDK makes a send durable before mqchat_send() returns, and
 * syncs before it tells the server its cursor (deliver.c), so the server
 * never trims what a power cut could make the device need again. Statements are
 * prepared per call: the SDK writes a few rows per network packet, which
 * does not need a statement cache. */
#include "state.h"

#include "platform.h"

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dupcol(sqlite3_stmt *s, int i);

/* Makes room for one more element in *arr (n used, *cap allocated),
 * doubling; 0, or -1 when out of memory (*arr unchanged). */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) return 0;
    size_t nc = *cap ? 2 * *cap : 16;
    void *p = realloc(*arr, nc * size);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

struct mqc_state {
    sqlite3 *db;
    int in_tx;
    int durable; /* the open transaction commits with synchronous=FULL */
};

static char *dupmsg(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 3;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s: %s", a, b);
    return s;
}

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS convs(conv TEXT PRIMARY KEY, handed INTEGER NOT NULL DEFAULT 0,"
    "  position INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  cmid TEXT NOT NULL UNIQUE, conv TEXT NOT NULL, content_type TEXT NOT NULL,"
    "  body BLOB NOT NULL, reply_to_seq INTEGER NOT NULL DEFAULT 0,"
    "  edit_seq INTEGER NOT NULL DEFAULT 0, delete_seq INTEGER NOT NULL DEFAULT 0);"
    "INSERT OR IGNORE INTO meta(k, v) VALUES('cursor', 0), ('counter', 0);";

/* Creates the schema in a new file, or checks the version of an existing
 * one (PRAGMA user_version; a file from before it was kept there has
 * user_version 0 and tables: version 1). In one transaction, so two
 * processes opening a new file do not both create it. */
static int schema(sqlite3 *db, const char *path, char **err)
{
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        if (err) *err = dupmsg(path, sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_stmt *s = NULL;
    int version = -1, tables = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE name = 'meta'", -1, &s,
                           NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        tables = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    int rc = version < 0 || tables < 0 ? -1 : 0;
    if (rc == 0 && version == 0 && tables == 0) { /* a new file */
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", MQC_STATE_SCHEMA);
        if (sqlite3_exec(db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
            rc = -1;
    } else if (rc == 0 && version != MQC_STATE_SCHEMA) {
        if (err) {
            char m[200];
            snprintf(m, sizeof(m),
                     "state file has schema version %d, this libmqchat needs %d (no migration: "
                     "delete the file to start the device again)",
                     version ? version : 1, MQC_STATE_SCHEMA);
            *err = dupmsg(path, m);
        }
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return 0;
    if (err) *err = dupmsg(path, sqlite3_errmsg(db));
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int mqc_state_open(const char *path, mqc_state **out, char **err)
{
    mqc_state *st = calloc(1, sizeof(*st));
    if (!st) {
        if (err) *err = strdup("out of memory");
        return -1;
    }
    int rc = sqlite3_open_v2(
        path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(st->db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(st->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                          NULL);
    if (rc != SQLITE_OK) {
        if (err) *err = dupmsg(path, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        sqlite3_close(st->db);
        free(st);
        return -1;
    }
    if (schema(st->db, path, err) != 0) {
        mqc_state_close(st);
        return -1;
    }
    /* The id nonce, once per file. */
    unsigned char r[8];
    char nonce[17];
    if (mqc_random(r, sizeof(r)) != 0) {
        if (err) *err = strdup("no random bytes from the OS");
        mqc_state_close(st);
        return -1;
    }
    for (int i = 0; i < 8; i++)
        snprintf(nonce + 2 * i, 3, "%02x", r[i]);
    sqlite3_stmt *s = NULL;
    rc = sqlite3_prepare_v2(st->db, "INSERT OR IGNORE INTO meta(k, v) VALUES('nonce', ?)", -1, &s,
                            NULL);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(s, 1, nonce, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK) rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    sqlite3_finalize(s);
    if (rc != SQLITE_OK) {
        if (err) *err = dupmsg(path, sqlite3_errmsg(st->db));
        mqc_state_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

void mqc_state_close(mqc_state *st)
{
    if (!st) return;
    sqlite3_close(st->db);
    free(st);
}

const char *mqc_state_errmsg(mqc_state *st)
{
    return sqlite3_errmsg(st->db);
}

void *mqc_state_db(mqc_state *st)
{
    return st->db;
}

/* SQLite refuses to change synchronous inside a transaction: a durable
 * transaction sets FULL before BEGIN and NORMAL again after its end. */
static void end_tx(mqc_state *st)
{
    st->in_tx = 0;
    if (st->durable) sqlite3_exec(st->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    st->durable = 0;
}

static int begin(mqc_state *st, int durable)
{
    assert(!st->in_tx);
    if (durable && sqlite3_exec(st->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK)
        return -1;
    st->durable = durable;
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        end_tx(st);
        return -1;
    }
    st->in_tx = 1;
    return 0;
}

int mqc_state_begin(mqc_state *st)
{
    return begin(st, 0);
}

int mqc_state_begin_durable(mqc_state *st)
{
    return begin(st, 1);
}

int mqc_state_commit(mqc_state *st)
{
    assert(st->in_tx);
    if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        mqc_state_rollback(st);
        return -1;
    }
    end_tx(st);
    return 0;
}

void mqc_state_rollback(mqc_state *st)
{
    if (!st->in_tx) return;
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    end_tx(st);
}

int mqc_state_sync(mqc_state *st)
{
    /* A durable commit of one changed row: its fsync covers the WAL
     * frames of every commit before it. (The row must change: SQLite
     * writes nothing, and so syncs nothing, for an UPDATE that leaves the
     * bytes as they were.) */
    if (mqc_state_begin_durable(st) != 0) return -1;
    if (sqlite3_exec(st->db,
                     "INSERT INTO meta(k, v) VALUES('syncs', 1) ON CONFLICT(k) DO UPDATE SET "
                     "v = v + 1",
                     NULL, NULL, NULL) != SQLITE_OK ||
        mqc_state_commit(st) != 0) {
        mqc_state_rollback(st);
        return -1;
    }
    return 0;
}

/* Runs sql with up to two text binds and one integer bind (?1 ?2 ?3 as
 * given); if out is not NULL the first column of the first row lands there. */
static int run(mqc_state *st, const char *sql, const char *t1, const char *t2, int64_t i3,
               int64_t *out)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) return -1;
    int n = sqlite3_bind_parameter_count(s), rc = SQLITE_OK;
    if (n >= 1 && t1) rc = sqlite3_bind_text(s, 1, t1, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && n >= 2 && t2) rc = sqlite3_bind_text(s, 2, t2, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && n >= 3) rc = sqlite3_bind_int64(s, 3, i3);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            if (out) *out = sqlite3_column_int64(s, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = out ? SQLITE_NOTFOUND : SQLITE_OK;
        }
    }
    sqlite3_finalize(s);
    if (rc == SQLITE_NOTFOUND) return 1;
    return rc == SQLITE_OK ? 0 : -1;
}

int mqc_state_cursor(mqc_state *st, uint64_t *cursor)
{
    int64_t v = 0;
    if (run(st, "SELECT v FROM meta WHERE k = 'cursor'", NULL, NULL, 0, &v) != 0) return -1;
    *cursor = (uint64_t)v;
    return 0;
}

int mqc_state_set_cursor(mqc_state *st, uint64_t cursor)
{
    assert(st->in_tx);
    return run(st, "UPDATE meta SET v = ?3 WHERE k = 'cursor'", NULL, NULL, (int64_t)cursor, NULL);
}

int mqc_state_conv(mqc_state *st, const char *conv, uint64_t *handed, uint64_t *position)
{
    sqlite3_stmt *s;
    *handed = *position = 0;
    if (sqlite3_prepare_v2(st->db, "SELECT handed, position FROM convs WHERE conv = ?", -1, &s,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(s, 1, conv, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *handed = (uint64_t)sqlite3_column_int64(s, 0);
        *position = (uint64_t)sqlite3_column_int64(s, 1);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

int mqc_state_set_handed(mqc_state *st, const char *conv, uint64_t handed)
{
    assert(st->in_tx);
    return run(st,
               "INSERT INTO convs(conv, handed) VALUES(?1, ?3) ON CONFLICT(conv) DO UPDATE SET "
               "handed = max(handed, excluded.handed)",
               conv, NULL, (int64_t)handed, NULL);
}

int mqc_state_set_position(mqc_state *st, const char *conv, uint64_t position)
{
    assert(st->in_tx);
    return run(st,
               "INSERT INTO convs(conv, position) VALUES(?1, ?3) ON CONFLICT(conv) DO UPDATE SET "
               "position = max(position, excluded.position)",
               conv, NULL, (int64_t)position, NULL);
}

int mqc_state_reset_inbox_handed(mqc_state *st)
{
    assert(st->in_tx);
    return run(st, "UPDATE convs SET handed = 0 WHERE position = 0", NULL, NULL, 0, NULL);
}

int mqc_state_read_mark_put(mqc_state *st, const char *conv, uint64_t seq)
{
    assert(st->in_tx);
    return run(st,
               "INSERT INTO meta(k, v) VALUES('read:' || ?1, ?3) ON CONFLICT(k) DO UPDATE SET "
               "v = max(v, excluded.v)",
               conv, NULL, (int64_t)seq, NULL);
}

int mqc_state_read_marks_take(mqc_state *st, mqc_read_mark **out, size_t *n)
{
    assert(st->in_tx);
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT substr(k, 6), v FROM meta WHERE k >= 'read:' AND k < 'read;' "
                           "ORDER BY k",
                           -1, &s, NULL) != SQLITE_OK)
        return -1;
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (grow((void **)out, &cap, *n, sizeof(**out)) != 0) break;
        mqc_read_mark *m = &(*out)[*n];
        m->conv = dupcol(s, 0);
        m->seq = (uint64_t)sqlite3_column_int64(s, 1);
        (*n)++;
        if (!m->conv) break;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE ||
        run(st, "DELETE FROM meta WHERE k >= 'read:' AND k < 'read;'", NULL, NULL, 0, NULL) != 0) {
        mqc_read_marks_free(*out, *n);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

void mqc_read_marks_free(mqc_read_mark *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].conv);
    free(m);
}

int mqc_state_restore_floor(mqc_state *st, uint64_t *floor)
{
    int64_t v = 0;
    int rc = run(st, "SELECT v FROM meta WHERE k = 'restore_floor'", NULL, NULL, 0, &v);
    if (rc < 0) return -1;
    *floor = rc == 0 ? (uint64_t)v : 0;
    return 0;
}

int mqc_state_set_restore_floor(mqc_state *st, uint64_t floor)
{
    assert(st->in_tx);
    return run(st, "INSERT OR REPLACE INTO meta(k, v) VALUES('restore_floor', ?3)", NULL, NULL,
               (int64_t)floor, NULL);
}

int mqc_state_new_cmid(mqc_state *st, char *buf, size_t cap)
{
    assert(st->in_tx);
    int64_t n = 0;
    if (run(st, "UPDATE meta SET v = v + 1 WHERE k = 'counter' RETURNING v", NULL, NULL, 0, &n) !=
        0)
        return -1;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "SELECT v FROM meta WHERE k = 'nonce'", -1, &s, NULL) !=
        SQLITE_OK)
        return -1;
    int rc = sqlite3_step(s), w = -1;
    if (rc == SQLITE_ROW)
        w = snprintf(buf, cap, "%s.%" PRId64, (const char *)sqlite3_column_text(s, 0), n);
    sqlite3_finalize(s);
    return w > 0 && (size_t)w < cap ? 0 : -1;
}

int mqc_state_outbox_put(mqc_state *st, const mqc_outbox_entry *e)
{
    assert(st->in_tx);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO outbox(cmid, conv, content_type, body, reply_to_seq, "
                           "edit_seq, delete_seq) VALUES(?,?,?,?,?,?,?)",
                           -1, &s, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(s, 1, e->cmid, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, e->conv, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, e->content_type ? e->content_type : "", -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 4, e->body_len ? (const void *)e->body : "", (int)e->body_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (int64_t)e->reply_to_seq);
    sqlite3_bind_int64(s, 6, (int64_t)e->edit_seq);
    sqlite3_bind_int64(s, 7, (int64_t)e->delete_seq);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : -1;
}

int mqc_state_outbox_add(mqc_state *st, const char *cmid, const char *conv,
                         const char *content_type, const void *body, size_t len)
{
    mqc_outbox_entry e = {.cmid = (char *)cmid,
                          .conv = (char *)conv,
                          .content_type = (char *)content_type,
                          .body = (unsigned char *)body,
                          .body_len = len};
    return mqc_state_outbox_put(st, &e);
}

int mqc_state_outbox_remove(mqc_state *st, const char *cmid)
{
    assert(st->in_tx);
    if (run(st, "DELETE FROM outbox WHERE cmid = ?1", cmid, NULL, 0, NULL) != 0) return -1;
    return sqlite3_changes(st->db) > 0;
}

int mqc_state_outbox_has(mqc_state *st, const char *cmid)
{
    int64_t v;
    int rc = run(st, "SELECT 1 FROM outbox WHERE cmid = ?1", cmid, NULL, 0, &v);
    return rc < 0 ? -1 : rc == 0;
}

int mqc_state_outbox_count(mqc_state *st)
{
    int64_t v = 0;
    if (run(st, "SELECT count(*) FROM outbox", NULL, NULL, 0, &v) != 0) return -1;
    return (int)v;
}

static char *dupcol(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    return strdup(t ? t : "");
}

int mqc_state_outbox_list(mqc_state *st, mqc_outbox_entry **out, size_t *n)
{
    sqlite3_stmt *s;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(
            st->db,
            "SELECT cmid, conv, content_type, body, reply_to_seq, edit_seq, delete_seq "
            "FROM outbox ORDER BY id",
            -1, &s, NULL) != SQLITE_OK)
        return -1;
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (grow((void **)out, &cap, *n, sizeof(**out)) != 0) break;
        mqc_outbox_entry *e = &(*out)[*n];
        e->cmid = dupcol(s, 0);
        e->conv = dupcol(s, 1);
        e->content_type = dupcol(s, 2);
        e->body_len = (size_t)sqlite3_column_bytes(s, 3);
        e->body = malloc(e->body_len + 1);
        e->reply_to_seq = (uint64_t)sqlite3_column_int64(s, 4);
        e->edit_seq = (uint64_t)sqlite3_column_int64(s, 5);
        e->delete_seq = (uint64_t)sqlite3_column_int64(s, 6);
        (*n)++;
        if (!e->cmid || !e->conv || !e->content_type || !e->body) break;
        if (e->body_len) memcpy(e->body, sqlite3_column_blob(s, 3), e->body_len);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        mqc_outbox_free(*out, *n);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

void mqc_outbox_free(mqc_outbox_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].cmid);
        free(e[i].conv);
        free(e[i].content_type);
        free(e[i].body);
    }
    free(e);
}
