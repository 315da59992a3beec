/* store_int — what the store's source files share: the handle, the column
 * families, and small helpers around the RocksDB C API. Not installed. */
#ifndef MQSTORE_INT_H
#define MQSTORE_INT_H

#include "mqstore.h"
#include "keys.h"

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>

struct head_ent;
struct conv_ent;
struct members_ent;
struct keep_ent;

enum cf_index {
    CF_DEFAULT,
    CF_MSGS,
    CF_HEADS,
    CF_DEDUP,
    CF_INBOX,
    CF_MEMBERS,
    CF_CURSORS,
    CF_RECEIPTS,
    CF_OUTBOX,
    CF_POSITIONS,
    CF_TOKENS,
    CF_COUNT
};

struct mqstore {
    mqstore_options opt;
    rocksdb_t *db;
    rocksdb_options_t *dbopt;
    rocksdb_options_t *cfopt[CF_COUNT];
    rocksdb_column_family_handle_t *cf[CF_COUNT];
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    rocksdb_compactionfilter_t *dedup_filter;
    rocksdb_compactionfilter_t *msgs_filter; /* retention (retention.c) */
    rocksdb_writeoptions_t *wopt;
    rocksdb_readoptions_t *ropt;

    /* Writes are serialised: the store is the single writer of every seq,
     * inbox seq and outbox id, so read-modify-write of heads is safe. */
    pthread_mutex_t write_lock;
    uint64_t outbox_last;   /* guarded by write_lock */
    uint64_t restore_floor; /* set at open (restore.c), constant after */
    /* Set (store_fail) when RocksDB failed a write or an fsync: writes are
     * refused with READONLY until mqstore_resume() clears it under
     * write_lock. Atomic: the syncer and mqstore_health_get read it. */
    _Atomic int write_failed;

    /* Tickets. last_ticket is published only after its write returned, so
     * an fsync started after reading last_ticket = T covers tickets <= T. */
    _Atomic uint64_t last_ticket;
    _Atomic uint64_t durable;
    /* What the store wrote (mqstore_stats_get). */
    _Atomic uint64_t stat_writes, stat_keys, stat_bytes;

    /* In-memory heads and member lists (cache.c). */
    pthread_mutex_t cache_lock;
    struct head_ent *heads;
    struct conv_ent *convs;
    struct members_ent *members;
    size_t n_heads, n_convs, n_member_rows;

    /* Retention overrides by conversation (retention.c), for the msgs
     * compaction filter, which runs on RocksDB's threads and reads no DB.
     * keeps_loaded: 0 until the table was loaded at open (the filter keeps
     * everything until then). */
    pthread_mutex_t keep_lock;
    struct keep_ent *keeps;
    _Atomic int keeps_loaded;

    /* Syncer thread (SYNC mode with the THREAD or REQUEST driver). */
    pthread_mutex_t fsync_lock; /* serialises fsyncs and durable updates */
    pthread_mutex_t sync_lock;  /* with sync_cond: the syncer's sleep */
    pthread_cond_t sync_cond;
    _Atomic int syncer_waiting;
    pthread_t syncer;
    int syncer_running;
    int syncer_stop;    /* guarded by sync_lock */
    int sync_requested; /* guarded by sync_lock: MQSTORE_SYNC_REQUEST asked */

    /* Writes in RocksDB: odd while a writer is inside rocksdb_write. The
     * syncer waits for the write under way before it fsyncs, so that it
     * does not start an fsync of a WAL whose write is failing (syncer.c). */
    _Atomic uint64_t wal_writes;
    /* Failures and recovery (ops.c), for mqstore_health_get. */
    _Atomic int fail_error; /* mqstore_err of the last failure */
    /* write_failed was set by the free-space check (min_free_bytes), not by
     * RocksDB: RocksDB takes writes, fsyncs go on, no resume is needed. */
    _Atomic int soft_failed;
    unsigned space_check;      /* guarded by write_lock: writes until the next check */
    char *path;                /* the store's directory (statvfs) */
    _Atomic int64_t failed_ms; /* when writes stopped; 0 while writable */
    _Atomic uint64_t failures, resumes, resume_attempts;
    pthread_mutex_t resume_lock; /* one resume at a time */
    uint64_t fail_wal;           /* guarded by ops_lock: the WAL writes went to */
    int fail_wal_known;          /* when they failed, if RocksDB could tell */
    /* The resumer thread (resume_interval_ms > 0): sleeps on ops_cond
     * until a failure, then calls mqstore_resume every interval. */
    pthread_mutex_t ops_lock;
    pthread_cond_t ops_cond; /* CLOCK_MONOTONIC */
    pthread_t resumer;
    int resumer_running;
    int resumer_stop; /* guarded by ops_lock */
};

int64_t store_now(mqstore *s);
mqstore_err store_map_error(char *rocks_err);

/* Get a value; *val is malloc'ed by RocksDB (free with rocksdb_free), NULL
 * when absent. */
mqstore_err store_get(mqstore *s, int cf, const key *k, char **val, size_t *len);
/* Get a be64 value; 0 when absent, *found tells which (may be NULL). */
mqstore_err store_get_u64(mqstore *s, int cf, const key *k, uint64_t *v, int *found);

/* Write a batch (no sync: durability is by tickets). On success returns the
 * write's ticket in *ticket. Caller holds write_lock. */
mqstore_err store_write(mqstore *s, rocksdb_writebatch_t *b, uint64_t *ticket);

/* The RocksDB write itself (store_write without the ticket): READONLY
 * while the store refuses writes; a RocksDB error fails the store
 * (store_fail). Caller holds write_lock. */
mqstore_err store_write_wal(mqstore *s, rocksdb_writebatch_t *b);

/* Write a batch that needs no read under the lock (write_lock is taken
 * for the write alone), then destroy it. */
mqstore_err write_batch_alone(mqstore *s, rocksdb_writebatch_t *b);

/* Range scans. store_scan() visits the rows of a column family in [lo, hi),
 * forward from the first key >= from, or backward from the last key <= from,
 * and calls fn on each row. fn returns SCAN_NEXT to go on, SCAN_STOP to end
 * the scan (not an error), or an mqstore_err to end it with that error. */
enum { SCAN_NEXT = MQSTORE_OK, SCAN_STOP = -1 };
typedef enum scan_dir { SCAN_FORWARD, SCAN_BACKWARD } scan_dir;
typedef int (*scan_fn)(void *data, const char *k, size_t klen, const char *v, size_t vlen);
/* Returns fn's error, else the iterator's own, else MQSTORE_OK. */
mqstore_err store_scan(mqstore *s, int cf, const key *lo, const key *hi, const key *from,
                       scan_dir dir, scan_fn fn, void *data);

/* For asserts: 1 if write_lock is held (writers hold it; this cannot tell
 * which thread does). */
int store_write_locked(mqstore *s);

/* What the store knows of a conversation (log.c), cached (cache.c). */
typedef struct conv_state {
    int exists;
    int large;
    uint64_t head;
    uint64_t members;
    uint64_t pull_end; /* as stored: the last seq written while large (see conv_pull_end) */
    uint32_t flags;    /* MQSTORE_CONV_*, MQSTORE_CONV_DELETED included */
    int64_t keep_ms;   /* retention override (ConvRecord.retention_ms) */
    uint64_t keep_count;
    /* In the cache: the ticket of the write that made `head` the head (or
     * the last ticket when it was read from RocksDB), so retention removes
     * a message below the head only once the head is durable. */
    uint64_t ticket;
} conv_state;

/* The last seq members may have to pull: the head while large. */
static inline uint64_t conv_pull_end(const conv_state *c)
{
    return c->large ? c->head : c->pull_end;
}

/* A conversation's state (exists = 0 when it does not); writer = 1
 * (write_lock held) caches it. */
mqstore_err conv_state_get(mqstore *s, const char *conv, conv_state *cs, int writer);

/* One member's record, from the cached list or a point read, without
 * copying the member list; MQSTORE_ERR_NOTFOUND if not a member. */
mqstore_err member_lookup(mqstore *s, const char *conv, const char *user, mqstore_member *out);

/* The user's pull row of a large conversation (pull.c): from_seq,
 * left_seq (0: still a member), *found = 0 when there is none. */
mqstore_err pull_row_get(mqstore *s, const char *user, const char *conv, uint64_t *from,
                         uint64_t *left, int *found);
/* Add the pull row to a batch. INVARIANT: left == 0 || left > from. */
void pull_row_put(mqstore *s, rocksdb_writebatch_t *b, const char *user, const char *conv,
                  uint64_t from, uint64_t left);

/* A user's inbox head (log.c); writer = 1 (write_lock held) caches it. */
mqstore_err inbox_head_get(mqstore *s, const char *user, uint64_t *head, int writer);

/* Room for `limit` conversations in an empty list (read.c); on failure the
 * list is freed. */
mqstore_err conv_list_alloc(mqstore_conv_list *out, size_t limit);

/* Pages (read.c): make room for one more item; append message (conv,
 * seq) from its decoded record (the page has room). */
struct Mqstore__Rec__MsgRecord;
mqstore_err page_grow(mqstore_page *p, size_t *cap);
mqstore_err page_put(mqstore_page *p, const char *conv, uint64_t seq, uint64_t inbox_seq,
                     const struct Mqstore__Rec__MsgRecord *r);

/* A conversation's record (everything of cs but the head and ticket) into
 * a batch (log.c). */
void batch_conv(mqstore *s, rocksdb_writebatch_t *b, const char *conv, const conv_state *cs);

/* Retention (retention.c). retention_setup (before RocksDB is opened)
 * makes the msgs compaction filter and sets it on opt; retention_load
 * (after the cache is ready) loads the overrides and lets the filter
 * work; retention_free (after RocksDB is closed) frees both. */
void retention_setup(mqstore *s, rocksdb_options_t *opt);
mqstore_err retention_load(mqstore *s);
void retention_free(mqstore *s);
/* 1 if message (conv, seq) written at time_ms has expired by the rules of
 * its conversation (cs: its state, or NULL when unknown: no count rule). */
int retention_expired(mqstore *s, const char *conv, uint64_t seq, int64_t time_ms,
                      const conv_state *cs);

/* Failures and recovery (ops.c). store_fail records a failed RocksDB
 * write or fsync (error e) and stops writes until a resume. ops_init
 * makes the locks (with the store's others), ops_start starts the
 * resumer thread if resume_interval_ms > 0 (once RocksDB is open, 0 or an
 * errno), ops_stop stops it (before RocksDB is closed), ops_free frees
 * the locks (last). */
void store_fail(mqstore *s, mqstore_err e);
/* Free bytes on the store's filesystem; UINT64_MAX when unknown. */
uint64_t ops_free_bytes(mqstore *s);
/* The free-space check before a write (write_lock held): MQSTORE_ERR_NOSPC
 * and writes stopped when below min_free_bytes. */
mqstore_err ops_space_check(mqstore *s);
void ops_init(mqstore *s);
int ops_start(mqstore *s);
void ops_stop(mqstore *s);
void ops_free(mqstore *s);

/* A tiny write so some memtable is not empty (ops.c, "Recovery"); after
 * the store's own flushes of every memtable. */
mqstore_err ops_wal_anchor(mqstore *s);

/* The syncer (syncer.c). */
int syncer_start(mqstore *s);
void syncer_stop(mqstore *s);
void syncer_kick(mqstore *s); /* a write happened */
mqstore_err syncer_sync_now(mqstore *s, uint64_t *covered);

/* restore.c: the inbox floor of a restored store. */
int restore_mark(const char *dir);
mqstore_err restore_open(mqstore *s, const char *path);

#endif
