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
    rocksdb_writeoptions_t *wopt;
    rocksdb_readoptions_t *ropt;

    /* Writes are serialised: the store is the single writer of every seq,
     * inbox seq and outbox id, so read-modify-write of heads is safe. */
    pthread_mutex_t write_lock;
    uint64_t outbox_last; /* guarded by write_lock */
    int write_failed;     /* guarded by write_lock: a write hit an I/O error */

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

    /* Syncer thread (SYNC mode with the THREAD or REQUEST driver). */
    pthread_mutex_t fsync_lock; /* serialises fsyncs and durable updates */
    pthread_mutex_t sync_lock;  /* with sync_cond: the syncer's sleep */
    pthread_cond_t sync_cond;
    _Atomic int syncer_waiting;
    pthread_t syncer;
    int syncer_running;
    int syncer_stop;    /* guarded by sync_lock */
    int sync_requested; /* guarded by sync_lock: MQSTORE_SYNC_REQUEST asked */
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
    uint32_t flags;
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

/* The syncer (syncer.c). */
int syncer_start(mqstore *s);
void syncer_stop(mqstore *s);
void syncer_kick(mqstore *s); /* a write happened */
mqstore_err syncer_sync_now(mqstore *s, uint64_t *covered);

#endif
