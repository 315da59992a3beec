/* state.h — the SDK's durable state in one SQLite file (WAL mode).
 *
 * The schema version is the file's PRAGMA user_version
 * (MQC_STATE_SCHEMA): a file of another version is refused at open (no
 * migrations: delete the file to start again).
 *
 * Tables: meta (the inbox cursor, the id nonce and counter), convs (per conversation: the highest
 * seq handed to the app and the large-conversation position), outbox (sends not yet acknowledged,
 * in the order they were made: messages, edits (edit_seq) and deletes (delete_seq)). Every write is
 * in a transaction the caller opens with mqc_state_begin() and ends with mqc_state_commit() (or
 * mqc_state_rollback()), so a batch of handed seqs and the cursor that
 * covers them land together or not at all.
 *
 * Durability (state.c): every commit survives the process dying (kill -9);
 * only a transaction opened with mqc_state_begin_durable(), or
 * mqc_state_sync(), survives a power cut, and with it every commit before
 * it. No MQTT, no protobuf here. */
#ifndef MQC_STATE_H
#define MQC_STATE_H

#include <stddef.h>
#include <stdint.h>

typedef struct mqc_state mqc_state;

#define MQC_STATE_SCHEMA 2

/* One outbox entry; strings and body owned by the state layer's caller
 * after mqc_state_outbox_list (freed with mqc_outbox_entry_clear). */
typedef struct mqc_outbox_entry {
    char *cmid, *conv, *content_type;
    unsigned char *body;
    size_t body_len;
    uint64_t reply_to_seq, edit_seq, delete_seq; /* 0: not set */
} mqc_outbox_entry;

/* Opens or creates the file at path. Returns 0, or -1 with *err set (free()). */
int mqc_state_open(const char *path, mqc_state **out, char **err);
void mqc_state_close(mqc_state *st);
const char *mqc_state_errmsg(mqc_state *st);
/* The sqlite3 * handle (for the app's persist hook, inside a transaction). */
void *mqc_state_db(mqc_state *st);

int mqc_state_begin(mqc_state *st);
/* The same, but its commit returns only once it is on disk (fsync). */
int mqc_state_begin_durable(mqc_state *st);
int mqc_state_commit(mqc_state *st);
void mqc_state_rollback(mqc_state *st);
/* Makes every commit so far durable (one fsync). Not inside a transaction. */
int mqc_state_sync(mqc_state *st);

int mqc_state_cursor(mqc_state *st, uint64_t *cursor);
int mqc_state_set_cursor(mqc_state *st, uint64_t cursor);

/* Per conversation; an unknown conversation reads 0 / 0. */
int mqc_state_conv(mqc_state *st, const char *conv, uint64_t *handed, uint64_t *position);
int mqc_state_set_handed(mqc_state *st, const char *conv, uint64_t handed);
int mqc_state_set_position(mqc_state *st, const char *conv, uint64_t position);
/* Sets handed to 0 in every conversation without a large-conversation
 * position (a restored server reuses their seqs). */
int mqc_state_reset_inbox_handed(mqc_state *st);

/* Read marks made while offline, one per conversation (the highest seq):
 * kept in meta as 'read:<conv>'. _take lists them, by conversation id, in
 * a malloc'd array (*out, *n; free with mqc_read_marks_free) and deletes
 * them, in the caller's transaction. */
typedef struct mqc_read_mark {
    char *conv;
    uint64_t seq;
} mqc_read_mark;
int mqc_state_read_mark_put(mqc_state *st, const char *conv, uint64_t seq);
int mqc_state_read_marks_take(mqc_state *st, mqc_read_mark **out, size_t *n);
void mqc_read_marks_free(mqc_read_mark *m, size_t n);

/* The server's restore floor this device last synced with (0: none). */
int mqc_state_restore_floor(mqc_state *st, uint64_t *floor);
int mqc_state_set_restore_floor(mqc_state *st, uint64_t floor);

/* A new client message id: "<nonce>.<n>", the nonce random per state file
 * (so a recreated file never reuses an id), n a persisted counter. Runs
 * inside the caller's transaction. */
int mqc_state_new_cmid(mqc_state *st, char *buf, size_t cap);

int mqc_state_outbox_add(mqc_state *st, const char *cmid, const char *conv,
                         const char *content_type, const void *body, size_t len);
/* The same with every field of e (its strings and body are not taken). */
int mqc_state_outbox_put(mqc_state *st, const mqc_outbox_entry *e);
/* Returns 1 if removed, 0 if there was no such entry, -1 on error. */
int mqc_state_outbox_remove(mqc_state *st, const char *cmid);
int mqc_state_outbox_has(mqc_state *st, const char *cmid);
int mqc_state_outbox_count(mqc_state *st);
/* All entries, oldest first, in a malloc'd array (*out, *n); free with
 * mqc_outbox_free. */
int mqc_state_outbox_list(mqc_state *st, mqc_outbox_entry **out, size_t *n);
void mqc_outbox_free(mqc_outbox_entry *e, size_t n);

#endif
