/* ops — operating a running store: online checkpoints (backups), health and
 * recovery after a failed write, a user's known devices, token revocation.
 *
 * Recovery. When RocksDB fails a write or an fsync (a full disk, an I/O
 * error), store_fail() records it and the store refuses writes with
 * READONLY; reads go on. Nothing of the failed batch was applied and it
 * took no ticket. mqstore_resume() asks RocksDB to take writes again
 * (DB::Resume, resume.cc), which flushes the memtables and switches to a
 * new WAL, and only then clears the flag. RocksDB (7.8) also recovers from
 * a full disk by itself once there is room for a memtable; a manual resume
 * meanwhile answers Busy, so mqstore_resume() waits a while for it.
 *
 * The resumer thread (one per store, started at open when
 * resume_interval_ms > 0, stopped and joined by mqstore_free) sleeps on
 * ops_cond until store_fail() signals it, then calls the resume every
 * resume_interval_ms while writes are refused.
 *
 * The one case a resume cannot mend: every memtable was empty when the
 * write failed (just after open, a resume or a checkpoint). RocksDB 7.8
 * then keeps the failed WAL, whose writer remembers its error, and the next
 * write to it would abort the process (resume.cc). The store compares the
 * WAL number before and after and keeps refusing writes (MQSTORE_ERR_IO);
 * closing and reopening the store recovers. To keep that case away, the
 * store writes a small anchor key (default CF, "wal_anchor") right after
 * each of its own flush-everything steps — open, a resume, a checkpoint —
 * so a memtable holds something when the next write fails. What is left:
 * a write that fails just after RocksDB flushed every column family for
 * the WAL size limit (max_total_wal_size), which is rare.
 *
 * Durability after a failure: the syncer makes nothing durable while
 * writes are refused (syncer.c); a resume flushes everything written
 * before the failure into fsynced SST files, and the syncer's next fsync,
 * of the new WAL, publishes every ticket. */
#include "store_int.h"
#include "codec.h"
#include "resume.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

/* RocksDB's own recovery retries every 5 s: a manual resume that finds it
 * under way waits that long and a little more for it to succeed. */
#define RESUME_BUSY_WAIT_MS 6000
#define RESUME_BUSY_POLL_MS 100
#define DEVICES_MAX 10000

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* *errmsg = malloc'ed "what: detail" (if errmsg is not NULL). */
static void ops_errmsg(char **errmsg, const char *what, const char *detail)
{
    if (!errmsg) return;
    size_t n = strlen(what) + (detail ? strlen(detail) : 0) + 3;
    *errmsg = malloc(n);
    if (*errmsg) snprintf(*errmsg, n, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
}

/* ---- failures and recovery -------------------------------------------- */

void ops_init(mqstore *s)
{
    pthread_mutex_init(&s->resume_lock, NULL);
    pthread_mutex_init(&s->ops_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->ops_cond, &ca);
    pthread_condattr_destroy(&ca);
}

void ops_free(mqstore *s)
{
    /* ops_stop ran: nobody waits on these. */
    assert(!s->resumer_running);
    pthread_mutex_destroy(&s->resume_lock);
    pthread_mutex_destroy(&s->ops_lock);
    pthread_cond_destroy(&s->ops_cond);
}

/* A writer (write_lock held) or the syncer (fsync_lock held) saw RocksDB
 * fail: stop writes, note when and on which WAL, wake the resumer. */
void store_fail(mqstore *s, mqstore_err e)
{
    uint64_t wal = 0;
    int known = db_current_wal(s->db, &wal) == 0;
    int64_t now = store_now(s);
    pthread_mutex_lock(&s->ops_lock);
    atomic_fetch_add(&s->failures, 1);
    atomic_store(&s->fail_error, (int)e);
    /* RocksDB's own error: a resume is needed, from this WAL on (also
     * when the reserve had stopped writes before: the syncer's fsync). */
    int was_soft = atomic_exchange(&s->soft_failed, 0);
    if (!atomic_load(&s->write_failed) || was_soft) {
        s->fail_wal = wal;
        s->fail_wal_known = known;
        atomic_store(&s->failed_ms, now > 0 ? now : 1);
        atomic_store(&s->write_failed, 1);
    }
    pthread_cond_signal(&s->ops_cond);
    pthread_mutex_unlock(&s->ops_lock);
}

/* ---- the free-space reserve (min_free_bytes) -------------------------------
 *
 * RocksDB failing a write on a full disk is the hard way: its WAL writer
 * keeps the error, a resume must flush and switch WALs, and Debian's
 * RocksDB, built with assertions, aborts the process if an fsync of the
 * syncer meets a write failing at that moment (syncer.c). With a reserve
 * the store stops writes itself first, while RocksDB still has room:
 * writes are refused with NOSPC (then READONLY), reads and fsyncs go on,
 * and once free space is back above the reserve and a quarter the store
 * takes writes again — no RocksDB error, nothing to resume. The check is a
 * statvfs every SPACE_CHECK_EVERY writes (and at the first write), so the
 * reserve must hold what that many writes add: documented as "a few dozen
 * maximum-size messages" for the operator. */
#define SPACE_CHECK_EVERY 32

uint64_t ops_free_bytes(mqstore *s)
{
    struct statvfs v;
    if (!s->path || statvfs(s->path, &v) != 0) return UINT64_MAX;
    return (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
}

mqstore_err ops_space_check(mqstore *s)
{
    assert(store_write_locked(s));
    if (!s->opt.min_free_bytes || s->space_check-- > 0) return MQSTORE_OK;
    s->space_check = SPACE_CHECK_EVERY - 1;
    if (ops_free_bytes(s) >= s->opt.min_free_bytes) return MQSTORE_OK;
    int64_t now = store_now(s);
    pthread_mutex_lock(&s->ops_lock);
    atomic_fetch_add(&s->failures, 1);
    atomic_store(&s->fail_error, (int)MQSTORE_ERR_NOSPC);
    atomic_store(&s->soft_failed, 1);
    atomic_store(&s->failed_ms, now > 0 ? now : 1);
    atomic_store(&s->write_failed, 1);
    pthread_cond_signal(&s->ops_cond);
    pthread_mutex_unlock(&s->ops_lock);
    return MQSTORE_ERR_NOSPC;
}

/* Stopped by the reserve: writable again once there is room. */
static mqstore_err resume_soft(mqstore *s)
{
    uint64_t need = s->opt.min_free_bytes + s->opt.min_free_bytes / 4;
    if (ops_free_bytes(s) < need) return MQSTORE_ERR_NOSPC;
    pthread_mutex_lock(&s->write_lock);
    atomic_store(&s->soft_failed, 0);
    atomic_store(&s->failed_ms, 0);
    atomic_store(&s->write_failed, 0);
    s->space_check = 0; /* look again at the next write */
    pthread_mutex_unlock(&s->write_lock);
    atomic_fetch_add(&s->resumes, 1);
    return MQSTORE_OK;
}

/* After a resume: ask the syncer (if any) to fsync, so that tickets written
 * before the failure become durable without waiting for the next request. */
static void wake_syncer(mqstore *s)
{
    if (!s->syncer_running) return;
    pthread_mutex_lock(&s->sync_lock);
    s->sync_requested = 1;
    pthread_cond_signal(&s->sync_cond);
    pthread_mutex_unlock(&s->sync_lock);
}

/* One recovery attempt (resume_lock held, writes refused). wait_busy: while
 * RocksDB's own recovery is under way, wait for it (mqstore_resume) rather
 * than return at once (the resumer, which comes back anyway). */
static mqstore_err try_resume(mqstore *s, int wait_busy)
{
    /* Only a resume clears the flag, and resumes hold resume_lock. */
    assert(atomic_load(&s->write_failed));
    atomic_fetch_add(&s->resume_attempts, 1);
    if (atomic_load(&s->soft_failed)) return resume_soft(s);
    int busy = 0;
    char *err = db_resume(s->db, &busy);
    for (int64_t waited = 0; err && busy && wait_busy && waited < RESUME_BUSY_WAIT_MS;
         waited += RESUME_BUSY_POLL_MS) {
        rocksdb_free(err);
        sleep_ms(RESUME_BUSY_POLL_MS);
        err = db_resume(s->db, &busy);
    }
    if (err && busy) {
        /* Still waiting for room: the failure persists. */
        rocksdb_free(err);
        return (mqstore_err)atomic_load(&s->fail_error);
    }
    if (err) return store_map_error(err);
    /* RocksDB takes writes again; they must not go to the WAL that failed
     * (its writer keeps the error: the next write would abort). */
    pthread_mutex_lock(&s->ops_lock);
    uint64_t failed_wal = s->fail_wal;
    int known = s->fail_wal_known;
    pthread_mutex_unlock(&s->ops_lock);
    uint64_t wal;
    if (!known || db_current_wal(s->db, &wal) != 0 || wal == failed_wal) return MQSTORE_ERR_IO;
    pthread_mutex_lock(&s->write_lock);
    atomic_store(&s->failed_ms, 0);
    atomic_store(&s->write_failed, 0);
    pthread_mutex_unlock(&s->write_lock);
    atomic_fetch_add(&s->resumes, 1);
    wake_syncer(s);
    /* The resume flushed every memtable (see the top comment). */
    ops_wal_anchor(s);
    return MQSTORE_OK;
}

/* mqstore_resume, and the resumer's call (wait_busy 0). */
static mqstore_err resume_once(mqstore *s, int wait_busy)
{
    if (!atomic_load(&s->write_failed)) return MQSTORE_OK;
    pthread_mutex_lock(&s->resume_lock);
    mqstore_err e = atomic_load(&s->write_failed) ? try_resume(s, wait_busy) : MQSTORE_OK;
    pthread_mutex_unlock(&s->resume_lock);
    return e;
}

mqstore_err mqstore_resume(mqstore *s)
{
    if (!s) return MQSTORE_ERR_INVAL;
    return resume_once(s, 1);
}

void mqstore_health_get(mqstore *s, mqstore_health *out)
{
    memset(out, 0, sizeof(*out));
    out->writable = !atomic_load(&s->write_failed);
    out->last_error = (mqstore_err)atomic_load(&s->fail_error);
    out->failed_ms = out->writable ? 0 : atomic_load(&s->failed_ms);
    out->failures = atomic_load(&s->failures);
    out->resumes = atomic_load(&s->resumes);
    out->resume_attempts = atomic_load(&s->resume_attempts);
}

/* The resumer thread: sleep until writes fail, then try a resume every
 * resume_interval_ms until they are back; until stopped. */
static void *resumer_main(void *arg)
{
    mqstore *s = arg;
    pthread_mutex_lock(&s->ops_lock);
    while (!s->resumer_stop) {
        if (!atomic_load(&s->write_failed)) {
            pthread_cond_wait(&s->ops_cond, &s->ops_lock);
            continue;
        }
        struct timespec at;
        clock_gettime(CLOCK_MONOTONIC, &at);
        int64_t ns = (int64_t)at.tv_nsec + (s->opt.resume_interval_ms % 1000) * 1000000;
        at.tv_sec += (time_t)(s->opt.resume_interval_ms / 1000 + ns / 1000000000);
        at.tv_nsec = (long)(ns % 1000000000);
        int rc = 0;
        while (!s->resumer_stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&s->ops_cond, &s->ops_lock, &at);
        if (s->resumer_stop) break;
        pthread_mutex_unlock(&s->ops_lock);
        resume_once(s, 0);
        pthread_mutex_lock(&s->ops_lock);
    }
    pthread_mutex_unlock(&s->ops_lock);
    return NULL;
}

int ops_start(mqstore *s)
{
    if (s->opt.resume_interval_ms <= 0) return 0;
    /* Like the syncer: never take the caller's signals. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->resumer, NULL, resumer_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) s->resumer_running = 1;
    return rc;
}

void ops_stop(mqstore *s)
{
    if (!s->resumer_running) return;
    pthread_mutex_lock(&s->ops_lock);
    s->resumer_stop = 1;
    pthread_cond_signal(&s->ops_cond);
    pthread_mutex_unlock(&s->ops_lock);
    pthread_join(s->resumer, NULL);
    s->resumer_running = 0;
}

mqstore_err ops_wal_anchor(mqstore *s)
{
    key k;
    key_reset(&k);
    key_raw(&k, "wal_anchor");
    char v[8];
    put_be64(v, (uint64_t)store_now(s));
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(b, s->cf[CF_DEFAULT], k.buf, k.len, v, sizeof(v));
    /* Not a write of the caller's: no ticket (tickets number the callers'
     * writes), but failed like any write when RocksDB fails it. */
    pthread_mutex_lock(&s->write_lock);
    mqstore_err e = store_write_wal(s, b);
    pthread_mutex_unlock(&s->write_lock);
    rocksdb_writebatch_destroy(b);
    return e;
}

/* ---- checkpoint ----------------------------------------------------------- */

mqstore_err mqstore_checkpoint(mqstore *s, const char *dir, char **errmsg)
{
    if (errmsg) *errmsg = NULL;
    if (!s || !dir || !dir[0]) return MQSTORE_ERR_INVAL;
    /* A checkpoint flushes the memtables, which RocksDB refuses after a
     * failed write (and must not try on the failed WAL). */
    if (atomic_load(&s->write_failed)) {
        ops_errmsg(errmsg, "cannot checkpoint", "the store refuses writes after a failure");
        return MQSTORE_ERR_READONLY;
    }
    struct stat st;
    if (stat(dir, &st) == 0) {
        ops_errmsg(errmsg, "cannot checkpoint", "the directory exists");
        return MQSTORE_ERR_EXISTS;
    }
    if (errno != ENOENT) {
        ops_errmsg(errmsg, "cannot checkpoint", strerror(errno));
        return MQSTORE_ERR_IO;
    }
    char *err = NULL;
    rocksdb_checkpoint_t *c = rocksdb_checkpoint_object_create(s->db, &err);
    /* log_size_for_flush 0: flush the memtables first, so the checkpoint is
     * SST files (hard links) and a short WAL. */
    if (!err) rocksdb_checkpoint_create(c, dir, 0, &err);
    if (c) rocksdb_checkpoint_object_destroy(c);
    if (err) {
        ops_errmsg(errmsg, "cannot checkpoint", err);
        return store_map_error(err);
    }
    /* The checkpoint flushed every memtable (see the top comment). */
    ops_wal_anchor(s);
    /* Opening the copy raises its inbox floor (restore.c). */
    if (restore_mark(dir) != 0) {
        ops_errmsg(errmsg, "cannot mark the checkpoint", strerror(errno));
        return MQSTORE_ERR_IO;
    }
    return MQSTORE_OK;
}

/* ---- devices -------------------------------------------------------------- */

void mqstore_device_list_free(mqstore_device_list *l)
{
    if (!l) return;
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* mqstore_user_devices' scan: the list, its room, the limit, the length of
 * the "user\0" prefix. */
typedef struct device_scan {
    mqstore_device_list *out;
    size_t cap, limit, plen;
} device_scan;

/* Copy one cursor row (user \0 device -> CursorRecord) into the list, or
 * stop at the limit (a store_scan callback). */
static int device_row(void *data, const char *k, size_t klen, const char *v, size_t vlen)
{
    device_scan *ds = data;
    mqstore_device_list *out = ds->out;
    if (out->n >= ds->limit) {
        out->more = 1;
        return SCAN_STOP;
    }
    size_t dlen = klen - ds->plen;
    if (klen <= ds->plen || dlen > MQC_ID_MAX || memchr(k + ds->plen, '\0', dlen))
        return MQSTORE_ERR_CORRUPT;
    Mqstore__Rec__CursorRecord *c = codec_decode(REC_CURSOR, v, vlen);
    if (!c) return MQSTORE_ERR_CORRUPT;
    if (out->n == ds->cap) {
        size_t cap = ds->cap ? ds->cap * 2 : 8;
        if (cap > ds->limit) cap = ds->limit;
        mqstore_device *items = realloc(out->items, cap * sizeof(*items));
        if (!items) {
            codec_free(c);
            return MQSTORE_ERR_NOMEM;
        }
        out->items = items;
        ds->cap = cap;
    }
    /* The list never outgrows the limit it was asked for. */
    assert(out->n < ds->cap && ds->cap <= ds->limit);
    mqstore_device *d = &out->items[out->n++];
    memcpy(d->device, k + ds->plen, dlen);
    d->device[dlen] = '\0';
    d->cursor = c->acked;
    d->last_seen_ms = c->last_seen_ms;
    codec_free(c);
    return SCAN_NEXT;
}

mqstore_err mqstore_user_devices(mqstore *s, const char *user, const char *after, size_t limit,
                                 mqstore_device_list *out)
{
    if (!out) return MQSTORE_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || limit < 1 || limit > DEVICES_MAX ||
        (after && after[0] && !mqc_id_valid(MQC_ID_KEY, after)))
        return MQSTORE_ERR_INVAL;
    /* [user\0, user\1); a page after `after` starts at user\0 after\0, right
     * after the key user\0 after and before any longer device id. */
    key lo, hi, from;
    key_reset(&lo);
    key_id(&lo, user);
    key_prefix_end(&lo, &hi);
    from = lo;
    if (after && after[0]) key_id(&from, after);
    device_scan ds = {out, 0, limit, lo.len};
    mqstore_err e = store_scan(s, CF_CURSORS, &lo, &hi, &from, SCAN_FORWARD, device_row, &ds);
    if (e) mqstore_device_list_free(out);
    return e;
}

/* ---- token revocation ----------------------------------------------------- */

/* heads 'r' user -> be64 before_ms. */
static void revoke_key(key *k, const char *user)
{
    key_reset(k);
    key_tag(k, 'r');
    key_raw(k, user);
}

mqstore_err mqstore_user_revoke_set(mqstore *s, const char *user, int64_t before_ms)
{
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || before_ms < 0) return MQSTORE_ERR_INVAL;
    key k;
    revoke_key(&k, user);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    if (before_ms) {
        char v[8];
        put_be64(v, (uint64_t)before_ms);
        rocksdb_writebatch_put_cf(b, s->cf[CF_HEADS], k.buf, k.len, v, sizeof(v));
    } else {
        rocksdb_writebatch_delete_cf(b, s->cf[CF_HEADS], k.buf, k.len);
    }
    return write_batch_alone(s, b);
}

mqstore_err mqstore_user_revoke_get(mqstore *s, const char *user, int64_t *before_ms)
{
    if (before_ms) *before_ms = 0;
    if (!s || !mqc_id_valid(MQC_ID_KEY, user) || !before_ms) return MQSTORE_ERR_INVAL;
    key k;
    revoke_key(&k, user);
    uint64_t v;
    mqstore_err e = store_get_u64(s, CF_HEADS, &k, &v, NULL);
    if (e) return e;
    if (v > INT64_MAX) return MQSTORE_ERR_CORRUPT;
    *before_ms = (int64_t)v;
    return MQSTORE_OK;
}
