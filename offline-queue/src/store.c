/* store — opening and closing the store, and the plumbing every other file
 * uses: options, error mapping, gets, batched writes with tickets, range
 * scans. The operations themselves live in log.c (writes that take a
 * seq), read.c (pages of messages and lists) and state.c (cursors, trimming,
 * receipts, outbox). */
#include "store_int.h"
#include "cache.h"
#include "codec.h"
#include "hint.h"
#include "resume.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *cf_names[CF_COUNT] = {"default", "msgs",      "heads",   "dedup",
                                         "inbox",   "members",   "cursors", "receipts",
                                         "outbox",  "positions", "tokens"};

void mqstore_stats_get(mqstore *s, mqstore_stats *out)
{
    out->writes = atomic_load(&s->stat_writes);
    out->keys = atomic_load(&s->stat_keys);
    out->bytes = atomic_load(&s->stat_bytes);
}

const char *mqstore_strerror(mqstore_err err)
{
    switch (err) {
    case MQSTORE_OK:
        return "ok";
    case MQSTORE_ERR_INVAL:
        return "invalid argument";
    case MQSTORE_ERR_NOTFOUND:
        return "not found";
    case MQSTORE_ERR_EXISTS:
        return "already exists";
    case MQSTORE_ERR_NOTMEMBER:
        return "not a member";
    case MQSTORE_ERR_TOOBIG:
        return "too big";
    case MQSTORE_ERR_IO:
        return "I/O error";
    case MQSTORE_ERR_NOSPC:
        return "no space left on device";
    case MQSTORE_ERR_CORRUPT:
        return "corrupt stored value";
    case MQSTORE_ERR_NOMEM:
        return "out of memory";
    case MQSTORE_ERR_READONLY:
        return "store is read-only after a write error";
    case MQSTORE_ERR_DENIED:
        return "only admins may post here";
    }
    return "unknown error";
}

void mqstore_options_init(mqstore_options *opt)
{
    memset(opt, 0, sizeof(*opt));
    opt->durability = MQSTORE_DURABILITY_SYNC;
    opt->sync_driver = MQSTORE_SYNC_THREAD;
    opt->max_payload = 65536;
    opt->max_job = 4096;
    opt->dedup_retention_ms = 7LL * 24 * 3600 * 1000;
    opt->inbox_retention_ms = 30LL * 24 * 3600 * 1000;
    opt->cache_bytes = 64u << 20;
    opt->resume_interval_ms = 5000;
}

/* The store's clock in ms since the epoch (options.clock_ms for tests). */
int64_t store_now(mqstore *s)
{
    if (s->opt.clock_ms) return s->opt.clock_ms(s->opt.clock_data);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RocksDB reports errors as strings ("IO error: No space left on device:
 * ..."); we keep the class and free the string. */
mqstore_err store_map_error(char *rocks_err)
{
    mqstore_err e = MQSTORE_ERR_IO;
    if (strstr(rocks_err, "No space left") || strstr(rocks_err, "NoSpace"))
        e = MQSTORE_ERR_NOSPC;
    else if (strstr(rocks_err, "Corruption"))
        e = MQSTORE_ERR_CORRUPT;
    rocksdb_free(rocks_err);
    return e;
}

/* Point get of k in cf (store_int.h). */
mqstore_err store_get(mqstore *s, int cf, const key *k, char **val, size_t *len)
{
    char *err = NULL;
    *val = rocksdb_get_cf(s->db, s->ropt, s->cf[cf], k->buf, k->len, len, &err);
    if (err) {
        *val = NULL;
        return store_map_error(err);
    }
    return MQSTORE_OK;
}

/* Point get of a be64 value (store_int.h). */
mqstore_err store_get_u64(mqstore *s, int cf, const key *k, uint64_t *v, int *found)
{
    char *val;
    size_t len;
    mqstore_err e = store_get(s, cf, k, &val, &len);
    if (e) return e;
    *v = 0;
    if (found) *found = val != NULL;
    if (!val) return MQSTORE_OK;
    if (len != 8)
        e = MQSTORE_ERR_CORRUPT;
    else
        *v = get_be64(val);
    rocksdb_free(val);
    return e;
}

/* Once RocksDB fails a write (WAL I/O error, disk full) it stops accepting
 * writes until it resumes (mqstore_resume, ops.c); we say so with READONLY
 * rather than repeating the I/O error, and take no ticket. Nothing of a
 * failed batch is applied: a WriteBatch reaches the memtable only after its
 * WAL record was written. wal_writes is odd while the write is in RocksDB,
 * and a failure is recorded before it turns even (the syncer's wait). */
mqstore_err store_write_wal(mqstore *s, rocksdb_writebatch_t *b)
{
    if (atomic_load(&s->write_failed)) return MQSTORE_ERR_READONLY;
    mqstore_err se = ops_space_check(s);
    if (se) return se;
    char *err = NULL;
    atomic_fetch_add(&s->wal_writes, 1);
    rocksdb_write(s->db, s->wopt, b, &err);
    mqstore_err e = MQSTORE_OK;
    if (err) {
        e = store_map_error(err);
        store_fail(s, e);
    }
    atomic_fetch_add(&s->wal_writes, 1);
    return e;
}

mqstore_err store_write(mqstore *s, rocksdb_writebatch_t *b, uint64_t *ticket)
{
    mqstore_err e = store_write_wal(s, b);
    if (e) return e;
    /* Tickets only grow: writers are serialised (the load and the store of
     * last_ticket below are not one atomic step). */
    assert(store_write_locked(s));
    uint64_t t = atomic_load(&s->last_ticket) + 1;
    /* durable <= last_ticket: nothing is durable before its write returned. */
    assert(atomic_load(&s->durable) < t);
    atomic_store(&s->last_ticket, t);
    size_t bytes;
    rocksdb_writebatch_data(b, &bytes);
    atomic_fetch_add(&s->stat_writes, 1);
    atomic_fetch_add(&s->stat_keys, (uint64_t)rocksdb_writebatch_count(b));
    atomic_fetch_add(&s->stat_bytes, (uint64_t)bytes);
    if (s->opt.durability == MQSTORE_DURABILITY_OS)
        atomic_store(&s->durable, t);
    else if (s->syncer_running)
        syncer_kick(s);
    *ticket = t;
    return MQSTORE_OK;
}

/* Visit [lo, hi) of a column family from `from`, forward or backward, calling
 * fn on every row until it stops or fails (store_int.h). The bounds are
 * copied: RocksDB keeps pointers to them for the iterator's lifetime. */
mqstore_err store_scan(mqstore *s, int cf, const key *lo, const key *hi, const key *from,
                       scan_dir dir, scan_fn fn, void *data)
{
    key blo = *lo, bhi = *hi;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_lower_bound(ro, blo.buf, blo.len);
    rocksdb_readoptions_set_iterate_upper_bound(ro, bhi.buf, bhi.len);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, s->cf[cf]);
    if (dir == SCAN_FORWARD)
        rocksdb_iter_seek(it, from->buf, from->len);
    else
        rocksdb_iter_seek_for_prev(it, from->buf, from->len);
    int rc = SCAN_NEXT;
    while (rocksdb_iter_valid(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        if ((rc = fn(data, k, klen, v, vlen)) != SCAN_NEXT) break;
        if (dir == SCAN_FORWARD)
            rocksdb_iter_next(it);
        else
            rocksdb_iter_prev(it);
    }
    /* The callback's error wins; else the iterator may have stopped on one. */
    mqstore_err e = rc == SCAN_STOP ? MQSTORE_OK : (mqstore_err)rc;
    char *err = NULL;
    if (!e) rocksdb_iter_get_error(it, &err);
    if (err) e = store_map_error(err);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    return e;
}

/* 1 if write_lock is held by some thread (for asserts in the writers' code:
 * a trylock that succeeds proves it was free, and is undone at once). */
int store_write_locked(mqstore *s)
{
    if (pthread_mutex_trylock(&s->write_lock) != 0) return 1;
    pthread_mutex_unlock(&s->write_lock);
    return 0;
}

/* ---- dedup retention: a compaction filter drops expired dedup keys, and
 * lookups ignore expired keys that compaction has not reached yet. */

static unsigned char dedup_filter(void *state, int level, const char *k, size_t klen,
                                  const char *val, size_t vlen, char **nv, size_t *nvlen,
                                  unsigned char *changed)
{
    mqstore *s = state;
    Mqstore__Rec__DedupRecord *d = codec_decode(REC_DEDUP, val, vlen);
    if (!d) return 0; /* keep what we cannot read */
    int expired = d->server_time_ms + s->opt.dedup_retention_ms < store_now(s);
    codec_free(d);
    return (unsigned char)expired;
}

/* The filter's state is the store itself, which owns it: nothing to free. */
static void dedup_filter_destroy(void *state) {}

static const char *dedup_filter_name(void *state)
{
    return "mqstore.dedup_retention";
}

/* MQSTORE_ERR_INVAL unless every option is in its documented range. */
static mqstore_err check_options(const mqstore_options *o)
{
    if (o->durability != MQSTORE_DURABILITY_SYNC && o->durability != MQSTORE_DURABILITY_OS)
        return MQSTORE_ERR_INVAL;
    if (o->sync_driver != MQSTORE_SYNC_THREAD && o->sync_driver != MQSTORE_SYNC_MANUAL &&
        o->sync_driver != MQSTORE_SYNC_REQUEST)
        return MQSTORE_ERR_INVAL;
    if (o->max_payload < 1 || o->max_payload > (16u << 20)) return MQSTORE_ERR_INVAL;
    if (o->max_job < 1 || o->max_job > (1u << 20)) return MQSTORE_ERR_INVAL;
    if (o->dedup_retention_ms <= 0 || o->inbox_retention_ms <= 0) return MQSTORE_ERR_INVAL;
    if (o->resume_interval_ms < 0) return MQSTORE_ERR_INVAL;
    if (o->retention_ms < 0) return MQSTORE_ERR_INVAL; /* 0: no limit */
    return MQSTORE_OK;
}

/* *errmsg = malloc'ed "what: detail" (if errmsg is not NULL). */
static void set_errmsg(char **errmsg, const char *what, const char *detail)
{
    if (!errmsg) return;
    size_t n = strlen(what) + (detail ? strlen(detail) : 0) + 3;
    *errmsg = malloc(n);
    if (*errmsg) snprintf(*errmsg, n, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
}

/* Close the database and free every RocksDB object the store made. */
static void close_handles(mqstore *s)
{
    for (int i = 0; i < CF_COUNT; i++)
        if (s->cf[i]) rocksdb_column_family_handle_destroy(s->cf[i]);
    if (s->db) rocksdb_close(s->db);
    for (int i = 0; i < CF_COUNT; i++)
        if (s->cfopt[i]) rocksdb_options_destroy(s->cfopt[i]);
    if (s->dedup_filter) rocksdb_compactionfilter_destroy(s->dedup_filter);
    retention_free(s); /* the msgs filter and its overrides */
    if (s->dbopt) rocksdb_options_destroy(s->dbopt);
    if (s->table) rocksdb_block_based_options_destroy(s->table);
    if (s->cache) rocksdb_cache_destroy(s->cache);
    if (s->wopt) rocksdb_writeoptions_destroy(s->wopt);
    if (s->ropt) rocksdb_readoptions_destroy(s->ropt);
}

mqstore_err mqstore_open(const char *path, const mqstore_options *opt, mqstore **out, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!path || !out) return MQSTORE_ERR_INVAL;
    mqstore_options defaults;
    if (!opt) {
        mqstore_options_init(&defaults);
        opt = &defaults;
    }
    if (check_options(opt)) {
        set_errmsg(errmsg, "invalid store options", NULL);
        return MQSTORE_ERR_INVAL;
    }
    mqstore *s = calloc(1, sizeof(*s));
    if (!s) return MQSTORE_ERR_NOMEM;
    s->opt = *opt;

    s->cache = rocksdb_cache_create_lru(opt->cache_bytes);
    s->table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(s->table, s->cache);
    /* Most dedup lookups miss: a Bloom filter answers them without reading
     * blocks (the table options own the policy). */
    rocksdb_block_based_options_set_filter_policy(s->table, rocksdb_filterpolicy_create_bloom(10));
    s->dbopt = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(s->dbopt, 1);
    rocksdb_options_set_create_missing_column_families(s->dbopt, 1);
    rocksdb_options_increase_parallelism(s->dbopt, 2);
    /* Keep the whole WAL bounded: column families with little traffic would
     * otherwise pin old WAL files. */
    rocksdb_options_set_max_total_wal_size(s->dbopt, 256u << 20);
    /* One writer (write_lock): the plain memtable insert path is cheaper
     * than the concurrent one (measured: 100-member groups +40 %). */
    rocksdb_options_set_allow_concurrent_memtable_write(s->dbopt, 0);
    for (int i = 0; i < CF_COUNT; i++) {
        s->cfopt[i] = rocksdb_options_create();
        rocksdb_options_set_block_based_table_factory(s->cfopt[i], s->table);
        rocksdb_options_set_compression(s->cfopt[i], rocksdb_lz4_compression);
        /* Small memtables keep skiplist inserts cache-friendly; the broker
         * bench ran 10-30 % faster than with the 64 MiB default (noisy). */
        rocksdb_options_set_write_buffer_size(s->cfopt[i], 8u << 20);
    }
    /* Insert hints per conversation, inbox and device (hint.cc). */
    static const struct {
        int cf;
        hint_kind kind;
    } hinted[] = {{CF_MSGS, HINT_LOG}, {CF_INBOX, HINT_LOG}, {CF_DEDUP, HINT_DEVICE}};
    for (size_t i = 0; i < sizeof(hinted) / sizeof(hinted[0]); i++) {
        char *herr = NULL;
        rocksdb_options_t *h = hint_options(s->cfopt[hinted[i].cf], hinted[i].kind, &herr);
        if (!h) {
            set_errmsg(errmsg, "cannot set the memtable insert hint", herr);
            rocksdb_free(herr);
            close_handles(s);
            free(s);
            return MQSTORE_ERR_INVAL;
        }
        rocksdb_options_destroy(s->cfopt[hinted[i].cf]);
        s->cfopt[hinted[i].cf] = h;
    }
    s->dedup_filter =
        rocksdb_compactionfilter_create(s, dedup_filter_destroy, dedup_filter, dedup_filter_name);
    rocksdb_options_set_compaction_filter(s->cfopt[CF_DEDUP], s->dedup_filter);
    /* Message retention (retention.c). */
    retention_setup(s, s->cfopt[CF_MSGS]);
    /* Every send looks its dedup key up and nearly every lookup misses: a
     * Bloom filter over the memtable's whole keys answers most misses
     * without searching the skiplist (store_bench 1:1: about +10 %). */
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(s->cfopt[CF_DEDUP], 0.1);
    rocksdb_options_set_memtable_whole_key_filtering(s->cfopt[CF_DEDUP], 1);
    /* The outbox and the inbox are queues: written once, read soon, deleted. */
    rocksdb_options_set_compression(s->cfopt[CF_OUTBOX], rocksdb_no_compression);

    /* RocksDB's own info logger aborts on a full disk (resume.cc); if ours
     * cannot be set up, RocksDB makes its own. */
    db_set_info_log(s->dbopt, path);
    char *err = NULL;
    s->db = rocksdb_open_column_families(s->dbopt, path, CF_COUNT, cf_names,
                                         (const rocksdb_options_t *const *)s->cfopt, s->cf, &err);
    if (err) {
        set_errmsg(errmsg, "cannot open store", err);
        mqstore_err e = store_map_error(err);
        s->db = NULL;
        memset(s->cf, 0, sizeof(s->cf));
        close_handles(s);
        free(s);
        return e;
    }
    s->path = strdup(path); /* NULL: the free-space check is off */
    s->wopt = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wopt, 0);
    s->ropt = rocksdb_readoptions_create();
    pthread_mutex_init(&s->write_lock, NULL);
    pthread_mutex_init(&s->sync_lock, NULL);
    pthread_mutex_init(&s->fsync_lock, NULL);
    ops_init(s);
    cache_init(s);
    pthread_cond_init(&s->sync_cond, NULL);

    key k;
    key_reset(&k);
    key_raw(&k, "outbox_last");
    mqstore_err e = store_get_u64(s, CF_DEFAULT, &k, &s->outbox_last, NULL);
    if (!e) e = retention_load(s);     /* after cache_init: the filter reads the cache */
    if (!e) e = restore_open(s, path); /* before any write: the floor decides inbox seqs */
    if (!e && opt->durability == MQSTORE_DURABILITY_SYNC &&
        opt->sync_driver != MQSTORE_SYNC_MANUAL && syncer_start(s) != 0)
        e = MQSTORE_ERR_NOMEM;
    if (!e && ops_start(s) != 0) e = MQSTORE_ERR_NOMEM;
    /* Opening may have flushed every memtable (ops.c, "Recovery"). A
     * failure here is a failed write like any other: the store is open,
     * refusing writes until it recovers. */
    if (!e) ops_wal_anchor(s);
    if (e) {
        set_errmsg(errmsg, "cannot open store", mqstore_strerror(e));
        mqstore_free(s);
        return e;
    }
    *out = s;
    return MQSTORE_OK;
}

void mqstore_free(mqstore *s)
{
    if (!s) return;
    ops_stop(s); /* the resumer first: it may call into RocksDB */
    if (s->syncer_running) syncer_stop(s);
    s->opt.on_durable = NULL; /* the caller is tearing down: no more callbacks */
    if (s->opt.durability == MQSTORE_DURABILITY_SYNC && s->db) syncer_sync_now(s, NULL);
    close_handles(s);
    pthread_mutex_destroy(&s->write_lock);
    pthread_mutex_destroy(&s->sync_lock);
    pthread_mutex_destroy(&s->fsync_lock);
    ops_free(s);
    free(s->path);
    cache_free(s);
    pthread_cond_destroy(&s->sync_cond);
    free(s);
}

uint64_t mqstore_durable(mqstore *s)
{
    return atomic_load(&s->durable);
}

uint64_t mqstore_last_ticket(mqstore *s)
{
    return atomic_load(&s->last_ticket);
}

mqstore_err mqstore_sync(mqstore *s)
{
    return syncer_sync_now(s, NULL);
}
